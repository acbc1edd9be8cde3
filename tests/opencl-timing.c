/* opencl-timing - the speed of the OpenCL backend's matrix products and CEMA (the tables of
 * docs/opencl.md): make tests/opencl-timing && tests/opencl-timing [all|matmul|cema]
 *
 * matmul: GFLOP/s of y = x W^T at the golden-sized and a larger model's shapes, on each of
 * the backend's product kernels (tiled, direct, CLBlast) and on the CPU backend (OpenBLAS,
 * one thread), best of 3 after an upload and warm-up call. cema: ms per call of the chunked
 * scan and the FFT on OpenCL, and of the CPU backend's scan and FFT for scale. Wall-clock
 * times: run it on a quiet machine. */
#include "config.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend-opencl.h"
#include "backend.h"
#include "error.h"
#include "model.h"
#include "test.h"

static mg_backend *cpu, *ocl;

/* n uniform values in [-scale, scale) */
static float *rnd(size_t n, float scale)
{
    static uint32_t seed = 12345;
    float *x = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) x[i] = test_frand(&seed) * scale;
    return x;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static double time_matmul(mg_backend *be, int M, int K, int N)
{
    float *x = rnd((size_t)M * K, 1), *W = rnd((size_t)N * K, 0.1f), *y = rnd((size_t)M * N, 1);
    const mg_weight Wt = mg_weight_of_f32(W, N, K);
    be->matmul(be, x, M, K, &Wt, N, NULL, y); /* upload + warm-up */
    double best = 1e30;
    for (int r = 0; r < 3; r++) {
        double t0 = now_s();
        be->matmul(be, x, M, K, &Wt, N, NULL, y);
        double t = now_s() - t0;
        if (t < best) best = t;
    }
    free(x); free(W); free(y);
    mg_opencl_forget_weights(be);
    return best;
}

/* ms per CEMA call of L rows (best of 3 after a first call, which is returned in *first:
 * it uploads the coefficients and, for the FFT, makes the kernel's transform), continuing
 * a carried state. */
static double time_cema(mg_backend *be, mg_cema_algo algo, const mg_cema_coeffs *cf, int L,
                        double *first)
{
    const size_t n = (size_t)L * cf->D, hn = (size_t)cf->D * cf->N * 2;
    float *x = rnd(n, 1), *y = rnd(n, 1), *h = rnd(hn, 0.5f);
    double best = 1e30;
    for (int r = 0; r < 4; r++) {
        double t0 = now_s();
        if (be->cema(be, algo, x, L, cf, h, y) != MG_OK) {
            printf("(%s)", mg_last_error());
            best = NAN;
            break;
        }
        double t = now_s() - t0;
        if (r == 0) *first = t * 1e3;
        else if (t < best) best = t;
    }
    free(x); free(y); free(h);
    return best * 1e3;
}

/* The CEMA table of docs/opencl.md: the chunked scan and the FFT on OpenCL, and the CPU
 * backend (best ISA, 2 threads) for scale, at D = 1024, N = 16, for coefficients from the
 * official parametrization (alpha, delta uniform in [-2, 2]: |q| up to ~0.986, a decay of
 * ~2000 steps) and with a fast decay (alpha, delta shifted by +4: |q| <= ~0.22). */
static void bench_cema(void)
{
    const int D = 1024, N = 16, Ls[] = {256, 512, 1024, 2048, 4096, 8192};
    mg_backend *cb = NULL;
    if (mg_backend_cpu_new(2, NULL, &cb)) printf("cpu: %s\n", mg_last_error());
    for (int set = 0; set < 2; set++) {
        float *alpha = rnd((size_t)D * N, 2), *delta = rnd((size_t)D * N, 2);
        for (int i = 0; i < D * N; i++) {
            alpha[i] += set ? 4.0f : 0.0f;
            delta[i] += set ? 4.0f : 0.0f;
        }
        float *theta = rnd(D, 2), *gamma = rnd((size_t)D * N * 2, 1), *omega = rnd(D, 1);
        mg_cema_coeffs cf;
        if (mg_cema_coeffs_init(&cf, D, N, alpha, delta, theta, gamma, omega)) return;
        double qm = 0;
        for (int i = 0; i < D * N; i++)
            qm = fmax(qm, hypot(cf.q[2 * i], cf.q[2 * i + 1]));
        printf("\nCEMA ms per call, D=%d N=%d, max |q| %.4f (decay %d steps); OpenCL FFT: "
               "first call (makes the kernel transform) in parentheses\n", D, N, qm,
               (int)ceil(-40.0 * log(2.0) / log(qm)));
        printf("| L | OpenCL scan | OpenCL FFT | FFT / scan | CPU %s scan | CPU fft |\n",
               cb ? cb->name : "-");
        printf("|---:|---:|---:|---:|---:|---:|\n");
        for (size_t i = 0; i < sizeof Ls / sizeof Ls[0]; i++) {
            const int L = Ls[i];
            double f0, f1, f2;
            double ts = time_cema(ocl, MG_CEMA_SCAN, &cf, L, &f0);
            double tf = time_cema(ocl, MG_CEMA_FFT, &cf, L, &f1);
            printf("| %d | %.1f | %.1f (%.0f) | %.2f |", L, ts, tf, f1, tf / ts);
            fflush(stdout);
            if (cb)
                printf(" %.1f | %.1f |\n", time_cema(cb, MG_CEMA_SCAN, &cf, L, &f2),
                       time_cema(cb, MG_CEMA_FFT, &cf, L, &f2));
            else
                printf(" - | - |\n");
        }
        mg_cema_coeffs_free(&cf);
        mg_opencl_forget_weights(ocl);
        free(alpha); free(delta); free(theta); free(gamma); free(omega);
    }
    if (cb) cb->free(cb);
}

/* what: "all", "matmul" or "cema" */
static int bench(const char *what)
{
    if (strcmp(what, "cema") == 0) {
        bench_cema();
        return 0;
    }
    const char *gemms[] = {"tiled", "direct", "clblast"};
    mg_backend *be[3] = {NULL, NULL, NULL};
    for (int i = 0; i < 3; i++) {
        setenv("MEGALODON_OPENCL_GEMM", gemms[i], 1);
        if (mg_backend_opencl_new(-1, &be[i])) printf("%s: %s\n", gemms[i], mg_last_error());
    }
    unsetenv("MEGALODON_OPENCL_GEMM");
    printf("GFLOP/s of y = x W^T (M=1: tiled = mg_gemv, direct = mg_gemv_direct, CLBlast = sgemv)\n");
    printf("| M | K | N | tiled | direct | CLBlast | CPU OpenBLAS 1 thread |\n");
    printf("|---:|---:|---:|---:|---:|---:|---:|\n");
    const int shapes[][3] = {{1, 1024, 1024}, {1, 1024, 4096}, {64, 1024, 1024},
                             {256, 1024, 1024}, {256, 1024, 4096}, {512, 2048, 2048}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int M = shapes[s][0], K = shapes[s][1], N = shapes[s][2];
        double fl = 2.0 * M * K * N;
        printf("| %d | %d | %d |", M, K, N);
        for (int i = 0; i < 3; i++) {
            if (!be[i]) {
                printf(" - |");
                continue;
            }
            printf(" %.2f |", fl / time_matmul(be[i], M, K, N) / 1e9);
            fflush(stdout);
        }
        printf(" %.2f |\n", fl / time_matmul(cpu, M, K, N) / 1e9);
    }
    for (int i = 0; i < 3; i++)
        if (be[i]) be[i]->free(be[i]);
    if (strcmp(what, "matmul") != 0) bench_cema();
    return 0;
}

int main(int argc, char **argv)
{
    const char *what = argc > 1 ? argv[1] : "all";
    if (strcmp(what, "all") && strcmp(what, "matmul") && strcmp(what, "cema")) {
        fprintf(stderr, "usage: %s [all|matmul|cema]\n", argv[0]);
        return 2;
    }
    if (mg_backend_cpu_new(1, NULL, &cpu) != MG_OK || mg_backend_opencl_new(-1, &ocl) != MG_OK) {
        fprintf(stderr, "opencl-timing: %s\n", mg_last_error());
        return 1;
    }
    const int rc = bench(what);
    ocl->free(ocl);
    cpu->free(cpu);
    return rc;
}

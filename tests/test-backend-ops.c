/* test-backend-ops - every inference op of the OpenCL backend against the CPU backend with the
 * scalar kernel table (the reference), in the manner of ggml's test-backend-ops: random
 * inputs of odd sizes, the error measured as the normalized mean squared error
 *     nmse(ref, got) = mse(ref, got) / mse(ref, 0) = sum (ref - got)^2 / sum ref^2
 * against a threshold per op (the table `thresholds` below). Then the backend's own
 * promises: weights uploaded once, the program binary cached on disk, fp16 weight storage,
 * CLBlast, and the bad cases (a device that does not exist, a kernel that does not build,
 * out of device memory, no such backend) give clear errors.
 *
 * Skips (77) when the build has no OpenCL or there is no OpenCL platform, unless
 * MG_REQUIRE_OPENCL=1 (CI, which installs PoCL), where that is a failure.
 * `test-backend-ops --bench` times the matrix products of the golden-sized and a larger
 * model's shapes on our kernel and on CLBlast (docs/opencl.md). */
#include "config.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backend-opencl.h"
#include "backend.h"
#include "model.h"
#include "test.h"

/* Under --enable-sanitizers: PoCL (CI's CPU OpenCL platform), the ICD loader and CLBlast keep
 * a few KB of their own at exit; LeakSanitizer reads this hook (opencl/lsan-pocl.supp holds
 * the same list for the programs run by tests/test-opencl.sh). */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
    return "leak:libpocl.so\nleak:libOpenCL.so\nleak:libclblast.so\n";
}

/* ---------------------------------------------------------------- thresholds (nmse) */

static const struct {
    const char *op;
    double max_nmse;
} thresholds[] = {
    /* elementwise: the same float operations; only exp and fma contraction may differ */
    {"silu", 1e-12}, {"mul", 1e-14}, {"add", 1e-14}, {"scale", 1e-14}, {"affine_rows", 1e-13},
    /* cos/sin of the device vs libm */
    {"rope", 1e-11},
    /* norms: the same moments in double, a different summation order */
    {"rms_norm", 1e-12}, {"layer_norm", 1e-12}, {"timestep_norm", 1e-11},
    {"timestep_norm.stats", 1e-11},
    /* fp32 products, another summation order (fma, tiles) */
    {"matmul", 1e-11},
    /* fp16 weight storage: each weight rounded to 11 bits (relative 2^-12 on average) */
    {"matmul.f16", 1e-6},
    {"matmul.clblast", 1e-11}, {"matmul.tiled", 1e-11}, {"matmul.direct", 1e-11},
    /* online softmax in tiles vs the exact one */
    {"attention", 1e-11}, {"attention.query", 1e-11},
    /* chunked scan (blocks joined through q^B) vs the sequential recurrence */
    {"cema", 1e-10}, {"cema.state", 1e-10},
    /* norms with float accumulation (devices without fp64; MEGALODON_OPENCL_FP64=0) */
    {"rms_norm.f32", 1e-12}, {"layer_norm.f32", 1e-12}, {"timestep_norm.f32", 1e-10},
    {"timestep_norm.stats.f32", 1e-10},
};

static double threshold(const char *op)
{
    for (size_t i = 0; i < sizeof thresholds / sizeof thresholds[0]; i++)
        if (strcmp(thresholds[i].op, op) == 0) return thresholds[i].max_nmse;
    fprintf(stderr, "no threshold for op %s\n", op);
    exit(1);
}

/* worst nmse per op, for the summary */
#define MAX_OPS 32
static struct {
    char op[48];
    double worst;
    int n;
} worst[MAX_OPS];
static int n_worst;

static double nmse(const float *ref, const float *got, size_t n)
{
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)ref[i] - (double)got[i];
        if (!isfinite(got[i]) && isfinite(ref[i])) return INFINITY;
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    return den > 0 ? num / den : num;
}

static const char *op_suffix = ""; /* ".f32" while testing float accumulation */

static void check_op(const char *op_, const char *shape, const float *ref, const float *got,
                     size_t n)
{
    char op[48];
    snprintf(op, sizeof op, "%s%s", op_, op_suffix);
    double e = nmse(ref, got, n), t = threshold(op);
    int i;
    for (i = 0; i < n_worst && strcmp(worst[i].op, op) != 0; i++) {}
    if (i == n_worst && n_worst < MAX_OPS) {
        snprintf(worst[n_worst].op, sizeof worst[0].op, "%s", op);
        worst[n_worst++].worst = 0;
    }
    if (i < MAX_OPS) {
        if (e > worst[i].worst || isnan(e)) worst[i].worst = isnan(e) ? INFINITY : e;
        worst[i].n++;
    }
    CHECK(e <= t, "%s %s: nmse %.3g > %.3g", op, shape, e, t);
    if (getenv("MG_VERBOSE")) printf("  %-20s %-34s nmse %.3g\n", op, shape, e);
}

/* ---------------------------------------------------------------- random data */

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float frand(void) /* uniform in [-1, 1) */
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(rng >> 40) / (double)(1ull << 24) * 2.0 - 1.0);
}
static float *rnd(size_t n, float scale)
{
    float *x = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) x[i] = frand() * scale;
    return x;
}
static float *dup_f(const float *x, size_t n)
{
    float *y = malloc(sizeof(float) * (n ? n : 1));
    memcpy(y, x, sizeof(float) * n);
    return y;
}

static mg_backend *cpu, *ocl;

#define OK(call, what)                                                                     \
    do {                                                                                   \
        int rc_ = (call);                                                                  \
        CHECK(rc_ == MG_OK, "%s: %s", what, mg_last_error());                            \
    } while (0)

/* ---------------------------------------------------------------- the ops */

static void test_elementwise(void)
{
    const size_t sizes[] = {1, 7, 4099};
    for (size_t s = 0; s < 3; s++) {
        size_t n = sizes[s];
        char shape[64];
        snprintf(shape, sizeof shape, "n=%zu", n);
        float *a = rnd(n, 4.0f), *b = rnd(n, 2.0f), *r = rnd(n, 1), *g = rnd(n, 1);
        OK(cpu->silu(cpu, a, r, n), "cpu silu");
        OK(ocl->silu(ocl, a, g, n), "ocl silu");
        check_op("silu", shape, r, g, n);
        OK(cpu->mul(cpu, a, b, r, n), "cpu mul");
        OK(ocl->mul(ocl, a, b, g, n), "ocl mul");
        check_op("mul", shape, r, g, n);
        OK(cpu->add(cpu, a, b, r, n), "cpu add");
        OK(ocl->add(ocl, a, b, g, n), "ocl add");
        check_op("add", shape, r, g, n);
        OK(cpu->scale(cpu, a, 1.7f, r, n), "cpu scale");
        OK(ocl->scale(ocl, a, 1.7f, g, n), "ocl scale");
        check_op("scale", shape, r, g, n);
        /* in place, as the model calls it */
        float *ip = dup_f(a, n);
        OK(ocl->silu(ocl, ip, ip, n), "ocl silu in place");
        OK(cpu->silu(cpu, a, r, n), "cpu silu");
        check_op("silu", "in place", r, ip, n);
        free(ip);
        free(a); free(b); free(r); free(g);
    }
    const int rows[] = {1, 13}, ms[] = {37, 5};
    for (int i = 0; i < 2; i++)
        for (int with_t = 0; with_t < 2; with_t++) {
            size_t n = (size_t)rows[i] * ms[i];
            float *x = rnd(n, 3), *sc = rnd(ms[i], 1), *t = with_t ? rnd(ms[i], 1) : NULL;
            float *r = rnd(n, 1), *g = rnd(n, 1);
            char shape[64];
            snprintf(shape, sizeof shape, "rows=%d m=%d t=%d", rows[i], ms[i], with_t);
            OK(cpu->affine_rows(cpu, x, rows[i], ms[i], sc, t, r), "cpu affine");
            OK(ocl->affine_rows(ocl, x, rows[i], ms[i], sc, t, g), "ocl affine");
            check_op("affine_rows", shape, r, g, n);
            free(x); free(sc); free(t); free(r); free(g);
            mg_opencl_forget_weights(ocl); /* the next case may get the same addresses */
        }
}

static void test_rope(void)
{
    const int cases[][4] = {{1, 1, 2, 0}, {9, 3, 10, 5}, {33, 2, 64, 100}}; /* L H dh pos0 */
    for (int c = 0; c < 3; c++) {
        int L = cases[c][0], H = cases[c][1], dh = cases[c][2], pos0 = cases[c][3];
        size_t n = (size_t)L * H * dh;
        float *fr = malloc(sizeof(float) * dh / 2);
        for (int i = 0; i < dh / 2; i++) fr[i] = powf(10000.0f, -2.0f * i / dh);
        float *x = rnd(n, 2), *r = dup_f(x, n), *g = dup_f(x, n);
        OK(cpu->rope(cpu, r, L, H, dh, pos0, fr), "cpu rope");
        OK(ocl->rope(ocl, g, L, H, dh, pos0, fr), "ocl rope");
        char shape[64];
        snprintf(shape, sizeof shape, "L=%d H=%d dh=%d pos0=%d", L, H, dh, pos0);
        check_op("rope", shape, r, g, n);
        free(fr); free(x); free(r); free(g);
        mg_opencl_forget_weights(ocl);
    }
}

static void test_norms(void)
{
    const int cases[][2] = {{1, 1}, {5, 67}, {3, 1031}, {40, 16}}; /* rows n */
    for (int c = 0; c < 4; c++)
        for (int aff = 0; aff < 2; aff++) {
            int rows = cases[c][0], n = cases[c][1];
            size_t N = (size_t)rows * n;
            float *x = rnd(N, 3), *w = aff ? rnd(n, 0.5f) : NULL, *b = aff ? rnd(n, 0.5f) : NULL;
            for (size_t i = 0; i < N; i++) x[i] += 0.5f; /* a mean that matters */
            float *r = rnd(N, 1), *g = rnd(N, 1);
            char shape[64];
            snprintf(shape, sizeof shape, "rows=%d n=%d affine=%d", rows, n, aff);
            OK(cpu->rms_norm(cpu, x, rows, n, w, 1e-5f, r), "cpu rms");
            OK(ocl->rms_norm(ocl, x, rows, n, w, 1e-5f, g), "ocl rms");
            check_op("rms_norm", shape, r, g, N);
            OK(cpu->layer_norm(cpu, x, rows, n, w, b, 1e-5f, r), "cpu ln");
            OK(ocl->layer_norm(ocl, x, rows, n, w, b, 1e-5f, g), "ocl ln");
            check_op("layer_norm", shape, r, g, N);
            free(x); free(w); free(b); free(r); free(g);
            mg_opencl_forget_weights(ocl);
        }
}

/* Timestep norm over several calls (a stream): y, and the statistics after each call. */
static void test_timestep_norm(void)
{
    const int cases[][4] = {{48, 4, 0, 1}, {48, 4, 5, 7}, {30, 1, 2, 300}, {64, 8, 0, 1000}};
    for (int c = 0; c < 4; c++)
        for (int aff = 0; aff < 2; aff++) {
            const int D = cases[c][0], G = cases[c][1], L = cases[c][3];
            int64_t cnt_r = cases[c][2], cnt_g = cases[c][2];
            float *w = aff ? rnd(D, 0.5f) : NULL, *b = aff ? rnd(D, 0.5f) : NULL;
            float mr[8], vr[8], mg[8], vg[8];
            for (int g = 0; g < G; g++) {
                mr[g] = mg[g] = frand();
                vr[g] = vg[g] = 1.0f + frand() * 0.5f;
            }
            /* three calls of L, 1 and L/2+1 rows */
            const int lens[3] = {L, 1, L / 2 + 1};
            for (int call = 0; call < 3; call++) {
                const int Lc = lens[call];
                size_t n = (size_t)Lc * D;
                float *x = rnd(n, 2), *r = rnd(n, 1), *g = rnd(n, 1);
                for (int t = 0; t < Lc; t++) /* drifting statistics */
                    for (int k = 0; k < D; k++) x[(size_t)t * D + k] += 0.01f * t + (k % 3);
                OK(cpu->timestep_norm(cpu, x, Lc, D, G, w, b, 1e-5f, &cnt_r, mr, vr, r), "cpu tn");
                OK(ocl->timestep_norm(ocl, x, Lc, D, G, w, b, 1e-5f, &cnt_g, mg, vg, g), "ocl tn");
                char shape[80];
                snprintf(shape, sizeof shape, "D=%d G=%d L=%d call %d aff=%d", D, G, Lc, call, aff);
                check_op("timestep_norm", shape, r, g, n);
                check_op("timestep_norm.stats", shape, mr, mg, (size_t)G);
                check_op("timestep_norm.stats", shape, vr, vg, (size_t)G);
                CHECK(cnt_r == cnt_g, "timestep_norm %s: count %lld vs %lld", shape,
                      (long long)cnt_r, (long long)cnt_g);
                free(x); free(r); free(g);
            }
            free(w); free(b);
            mg_opencl_forget_weights(ocl);
        }
}

/* NaN into every scratch buffer of the backend before an op: CLBlast once read its
 * output with beta = 0 and let such a NaN through (a flaky failure under load). */
static void poison(void)
{
    OK(mg_opencl_test_poison(ocl, (size_t)1 << 20), "filling the scratch buffers with NaN");
}

static void run_matmuls(const char *op, double *worst_out)
{
    const int cases[][3] = {{1, 67, 33}, {1, 512, 1000}, {5, 67, 33}, {37, 129, 65},
                            {64, 256, 96}, {130, 33, 257}, {2, 1, 3}}; /* M K N */
    (void)worst_out;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int bias = 0; bias < 2; bias++) {
            int M = cases[c][0], K = cases[c][1], N = cases[c][2];
            float *x = rnd((size_t)M * K, 1), *W = rnd((size_t)N * K, 0.2f);
            float *bb = bias ? rnd(N, 1) : NULL;
            float *r = rnd((size_t)M * N, 1), *g = rnd((size_t)M * N, 1);
            OK(cpu->matmul(cpu, x, M, K, W, N, bb, r), "cpu matmul");
            poison(); /* a kernel must not read the output it is about to write */
            OK(ocl->matmul(ocl, x, M, K, W, N, bb, g), "ocl matmul");
            char shape[64];
            snprintf(shape, sizeof shape, "M=%d K=%d N=%d bias=%d", M, K, N, bias);
            check_op(op, shape, r, g, (size_t)M * N);
            free(x); free(W); free(bb); free(r); free(g);
            mg_opencl_forget_weights(ocl);
        }
}

static void test_attention(void)
{
    const int cases[][5] = {{1, 1, 2, 8, 6},     {1, 70, 2, 16, 8},    {17, 17, 3, 8, 12},
                            {9, 40, 2, 16, 16},  {130, 130, 2, 10, 6}, {3, 200, 1, 32, 32},
                            {2, 2, 1, 4, 4},     {100, 237, 2, 24, 40}, {65, 65, 1, 128, 96}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int L = cases[c][0], Lk = cases[c][1], H = cases[c][2], dk = cases[c][3], dv = cases[c][4];
        float *q = rnd((size_t)L * H * dk, 1.5f), *k = rnd((size_t)Lk * H * dk, 1.5f);
        float *v = rnd((size_t)Lk * H * dv, 1);
        size_t n = (size_t)L * H * dv;
        float *r = rnd(n, 1), *g = rnd(n, 1);
        OK(cpu->attention(cpu, q, k, v, L, Lk, H, dk, dv, r), "cpu attention");
        poison();
        OK(ocl->attention(ocl, q, k, v, L, Lk, H, dk, dv, g), "ocl attention");
        char shape[64];
        snprintf(shape, sizeof shape, "L=%d Lk=%d H=%d dk=%d dv=%d", L, Lk, H, dk, dv);
        check_op("attention", shape, r, g, n);
        free(q); free(k); free(v); free(r); free(g);
    }
}

/* CEMA with random coefficients from the official parametrization, continuing a nonzero
 * state over several calls, both algorithms on OpenCL against the CPU recurrence. */
static void test_cema(void)
{
    const int cases[][2] = {{19, 5}, {8, 16}}; /* D N */
    const int lens[] = {1, 7, 64, 65, 300, 1};
    for (int c = 0; c < 2; c++)
        for (int algo = 0; algo < 2; algo++) {
            const int D = cases[c][0], N = cases[c][1];
            float *alpha = rnd((size_t)D * N, 2), *delta = rnd((size_t)D * N, 2);
            float *theta = rnd(D, 2), *gamma = rnd((size_t)D * N * 2, 1), *omega = rnd(D, 1);
            mg_cema_coeffs cf;
            OK(mg_cema_coeffs_init(&cf, D, N, alpha, delta, theta, gamma, omega), "coeffs");
            float *hr = rnd((size_t)D * N * 2, 0.5f), *hg = dup_f(hr, (size_t)D * N * 2);
            for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
                int L = lens[li];
                size_t n = (size_t)L * D;
                float *x = rnd(n, 1), *r = rnd(n, 1), *g = rnd(n, 1);
                OK(cpu->cema(cpu, MG_CEMA_SCAN, x, L, &cf, hr, r), "cpu cema");
                OK(ocl->cema(ocl, algo ? MG_CEMA_FFT : MG_CEMA_SCAN, x, L, &cf, hg, g), "ocl cema");
                char shape[64];
                snprintf(shape, sizeof shape, "D=%d N=%d L=%d %s", D, N, L, algo ? "fft" : "scan");
                check_op("cema", shape, r, g, n);
                check_op("cema.state", shape, hr, hg, (size_t)D * N * 2);
                free(x); free(r); free(g);
            }
            free(hr); free(hg);
            mg_cema_coeffs_free(&cf);
            free(alpha); free(delta); free(theta); free(gamma); free(omega);
            mg_opencl_forget_weights(ocl);
        }
}

/* ---------------------------------------------------------------- the backend's promises */

static void test_weights_once(void)
{
    mg_opencl_forget_weights(ocl);
    mg_opencl_stats s0, s1, s2;
    mg_opencl_get_stats(ocl, &s0);
    float *x = rnd(3 * 40, 1), *W = rnd(50 * 40, 1), *b = rnd(50, 1), *y = rnd(3 * 50, 1);
    OK(ocl->matmul(ocl, x, 3, 40, W, 50, b, y), "matmul 1");
    mg_opencl_get_stats(ocl, &s1);
    for (int i = 0; i < 5; i++) OK(ocl->matmul(ocl, x, 3, 40, W, 50, b, y), "matmul again");
    mg_opencl_get_stats(ocl, &s2);
    CHECK(s1.weight_uploads - s0.weight_uploads == 2, "first matmul uploaded %ld weights, not 2",
          s1.weight_uploads - s0.weight_uploads);
    CHECK(s2.weight_uploads == s1.weight_uploads, "repeated matmuls uploaded %ld more weights",
          s2.weight_uploads - s1.weight_uploads);
    CHECK(s2.weight_hits - s1.weight_hits == 10, "%ld weight cache hits, not 10",
          s2.weight_hits - s1.weight_hits);
    free(x); free(W); free(b); free(y);
    mg_opencl_forget_weights(ocl);
}

static char cache[1024]; /* the tests' program cache, removed at exit */

static void remove_cache(void)
{
    char cmd[1100];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", cache);
    if (cache[0] && system(cmd) != 0) fprintf(stderr, "could not remove %s\n", cache);
}

static void test_program_cache(const char *dir)
{
    /* a fresh directory: the first backend builds and saves, the second loads the binary */
    setenv("MEGALODON_OPENCL_CACHE", dir, 1);
    mg_backend *a = NULL, *b = NULL;
    OK(mg_backend_opencl_new(-1, &a), "backend with a fresh cache");
    OK(mg_backend_opencl_new(-1, &b), "backend with the cache filled");
    mg_opencl_stats sa, sb;
    mg_opencl_get_stats(a, &sa);
    mg_opencl_get_stats(b, &sb);
    CHECK(a && !sa.program_from_cache, "the first backend claims a cached binary in an empty dir");
    CHECK(b && sb.program_from_cache, "the second backend did not load the cached binary");
    /* the binary still works: one op */
    if (b) {
        float x[5] = {1, -2, 3, -4, 5}, y[5], r[5];
        OK(b->silu(b, x, y, 5), "silu from the cached program");
        OK(cpu->silu(cpu, x, r, 5), "cpu silu");
        check_op("silu", "cached program", r, y, 5);
    }
    if (a) a->free(a);
    if (b) b->free(b);
    setenv("MEGALODON_OPENCL_CACHE", cache, 1); /* never the user's cache */
}

static void test_bad_cases(void)
{
    mg_backend *be = (mg_backend *)1;
    int rc = mg_backend_opencl_new(999, &be);
    CHECK(rc == MG_ERR_INVALID_ARG && be == NULL, "device 999: rc %d", rc);
    CHECK(strstr(mg_last_error(), "does not exist") != NULL, "device 999: message '%s'",
          mg_last_error());
    printf("  device 999: %s\n", mg_last_error());

    setenv("MEGALODON_OPENCL_DEVICE", "first", 1);
    rc = mg_backend_opencl_new(-1, &be);
    CHECK(rc == MG_ERR_INVALID_ARG && strstr(mg_last_error(), "MEGALODON_OPENCL_DEVICE"),
          "MEGALODON_OPENCL_DEVICE=first: rc %d, '%s'", rc, mg_last_error());
    unsetenv("MEGALODON_OPENCL_DEVICE");

    rc = mg_opencl_test_build(ocl, "__kernel void broken(__global float *x) { x[0] = nope; }");
    CHECK(rc == MG_ERR_BACKEND && strstr(mg_last_error(), "build log"),
          "a kernel that does not build: rc %d, '%s'", rc, mg_last_error());
    CHECK(strstr(mg_last_error(), "nope") != NULL, "the build log does not name the error: '%s'",
          mg_last_error());
    printf("  broken kernel: %.160s...\n", mg_last_error());

    rc = mg_opencl_test_alloc(ocl, (size_t)1 << 62);
    CHECK(rc == MG_ERR_NOMEM, "a 4 EiB buffer: rc %d, '%s'", rc, mg_last_error());
    printf("  4 EiB buffer: %s\n", mg_last_error());
    rc = mg_opencl_test_alloc(ocl, 1 << 20);
    CHECK(rc == MG_OK, "a 1 MiB buffer: %s", mg_last_error());

    /* an op too large for the device: an error, not a crash, and the backend still works */
    float small[4] = {0};
    rc = ocl->silu(ocl, small, small, (size_t)1 << 61);
    CHECK(rc == MG_ERR_NOMEM, "silu of 2^61 floats: rc %d, '%s'", rc, mg_last_error());
    float x[3] = {1, 2, 3}, y[3], r[3];
    OK(ocl->silu(ocl, x, y, 3), "silu after a failure");
    OK(cpu->silu(cpu, x, r, 3), "cpu silu");
    check_op("silu", "after a failure", r, y, 3);

    /* the training ops are not there (the trainer checks for NULL) */
    CHECK(ocl->matmul_backward == NULL && ocl->cema_backward == NULL &&
          ocl->cross_entropy == NULL, "the OpenCL backend claims training ops");
}

/* Model loading through the public parameters: opencl, a missing device, an unknown name. */
static void test_model_params(void)
{
    const char *dir = getenv("MG_GOLDEN_DIR");
    if (!dir) {
        printf("  (MG_GOLDEN_DIR not set: the model-level checks are skipped)\n");
        return;
    }
    char path[1024];
    snprintf(path, sizeof path, "%s/base.gguf", dir);
    mg_model_params mp = mg_model_default_params();
    CHECK(mp.backend == NULL && mp.device == -1, "default params: backend %s device %d",
          mp.backend ? mp.backend : "NULL", mp.device);
    mp.backend = "opencl";
    mg_model *m = NULL;
    int rc = mg_model_load(path, &mp, &m);
    CHECK(rc == MG_OK, "load on opencl: %s", mg_last_error());
    if (m) {
        CHECK(strncmp(mg_model_backend_name(m), "opencl/", 7) == 0, "backend name %s",
              mg_model_backend_name(m));
        mg_model_free(m);
    }
    mp.device = 4242;
    m = (mg_model *)1;
    rc = mg_model_load(path, &mp, &m);
    CHECK(rc == MG_ERR_INVALID_ARG && m == NULL, "device 4242: rc %d", rc);
    CHECK(strstr(mg_last_error(), "4242") != NULL, "device 4242: '%s'", mg_last_error());
    mp.backend = "cuda";
    mp.device = -1;
    rc = mg_model_load(path, &mp, &m);
    CHECK(rc == MG_ERR_INVALID_ARG && strstr(mg_last_error(), "cuda"), "backend cuda: rc %d '%s'",
          rc, mg_last_error());
    char buf[4096];
    int n = mg_backend_devices(buf, sizeof buf);
    CHECK(n >= 1 && strncmp(buf, "0: ", 3) == 0, "mg_backend_devices: %d, '%s'", n, buf);
}

/* ---------------------------------------------------------------- --bench */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static double time_matmul(mg_backend *be, int M, int K, int N)
{
    float *x = rnd((size_t)M * K, 1), *W = rnd((size_t)N * K, 0.1f), *y = rnd((size_t)M * N, 1);
    be->matmul(be, x, M, K, W, N, NULL, y); /* upload + warm-up */
    double best = 1e30;
    for (int r = 0; r < 3; r++) {
        double t0 = now_s();
        be->matmul(be, x, M, K, W, N, NULL, y);
        double t = now_s() - t0;
        if (t < best) best = t;
    }
    free(x); free(W); free(y);
    mg_opencl_forget_weights(be);
    return best;
}

static int bench(void)
{
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
    return 0;
}

/* ---------------------------------------------------------------- main */

int main(int argc, char **argv)
{
    int require = getenv("MG_REQUIRE_OPENCL") && strcmp(getenv("MG_REQUIRE_OPENCL"), "1") == 0;
    /* the program cache of the tests lives in the build tree, not the user's cache */
    char cache2[1100];
    snprintf(cache, sizeof cache, "%s/test-opencl-cache.%ld",
             getenv("MG_TOP_BUILDDIR") ? getenv("MG_TOP_BUILDDIR") : ".", (long)getpid());
    snprintf(cache2, sizeof cache2, "%s/fresh", cache);
    setenv("MEGALODON_OPENCL_CACHE", cache, 1);
    atexit(remove_cache);

    if (mg_backend_cpu_new(1, "scalar", &cpu) != MG_OK) {
        fprintf(stderr, "CPU backend: %s\n", mg_last_error());
        return 1;
    }
    int rc = mg_backend_opencl_new(-1, &ocl);
    if (rc == MG_ERR_UNSUPPORTED) {
        if (require) {
            fprintf(stderr, "FAIL: MG_REQUIRE_OPENCL=1 but: %s\n", mg_last_error());
            return 1;
        }
        cpu->free(cpu);
        TEST_SKIP("%s", mg_last_error());
    }
    if (rc != MG_OK) {
        fprintf(stderr, "FAIL: the OpenCL backend: %s\n", mg_last_error());
        return 1;
    }
    if (argc > 1 && strcmp(argv[1], "--bench") == 0) return bench();
    mg_opencl_stats st;
    mg_opencl_get_stats(ocl, &st);
    printf("device: %s (accumulation in %s, weights %s)\nmatrix products: %s, decode %s (%s)\n",
           ocl->name, st.fp64 ? "double" : "float", st.fp16_weights ? "fp16" : "fp32", st.gemm,
           st.gemv, st.gemm_why);

    test_elementwise();
    test_rope();
    test_norms();
    test_timestep_norm();
    run_matmuls("matmul", NULL);
    test_attention();
    test_cema();
    test_weights_once();
    test_program_cache(cache2);
    test_bad_cases();
    test_model_params();

    /* fp16 weight storage (vload_half is core OpenCL, so any device can run it) */
    setenv("MEGALODON_OPENCL_F16", "1", 1);
    mg_backend *keep = ocl;
    if (mg_backend_opencl_new(-1, &ocl) == MG_OK) {
        mg_opencl_get_stats(ocl, &st);
        CHECK(st.fp16_weights, "MEGALODON_OPENCL_F16=1 did not store fp16 weights");
        run_matmuls("matmul.f16", NULL);
        ocl->free(ocl);
    } else {
        CHECK(0, "backend with MEGALODON_OPENCL_F16=1: %s", mg_last_error());
    }
    unsetenv("MEGALODON_OPENCL_F16");
    /* the per-query attention kernel (the default for L > 1 is the block kernel) */
    setenv("MEGALODON_OPENCL_ATTN", "query", 1);
    if (mg_backend_opencl_new(-1, &ocl) == MG_OK) {
        mg_opencl_get_stats(ocl, &st);
        CHECK(strcmp(st.attn, "query") == 0, "MEGALODON_OPENCL_ATTN=query gave %s", st.attn);
        op_suffix = ".query";
        test_attention();
        op_suffix = "";
        ocl->free(ocl);
    } else {
        CHECK(0, "backend with MEGALODON_OPENCL_ATTN=query: %s", mg_last_error());
    }
    setenv("MEGALODON_OPENCL_ATTN", "tiles", 1);
    rc = mg_backend_opencl_new(-1, &ocl);
    CHECK(rc == MG_ERR_INVALID_ARG && strstr(mg_last_error(), "MEGALODON_OPENCL_ATTN"),
          "MEGALODON_OPENCL_ATTN=tiles: rc %d", rc);
    unsetenv("MEGALODON_OPENCL_ATTN");

    /* float accumulation of the norms (what a device without fp64 runs) */
    setenv("MEGALODON_OPENCL_FP64", "0", 1);
    if (mg_backend_opencl_new(-1, &ocl) == MG_OK) {
        mg_opencl_get_stats(ocl, &st);
        CHECK(!st.fp64, "MEGALODON_OPENCL_FP64=0 still accumulates in double");
        op_suffix = ".f32";
        test_norms();
        test_timestep_norm();
        op_suffix = "";
        ocl->free(ocl);
    } else {
        CHECK(0, "backend with MEGALODON_OPENCL_FP64=0: %s", mg_last_error());
    }
    unsetenv("MEGALODON_OPENCL_FP64");

    /* every matrix product kernel, whichever the measurement chose */
    const char *gemms[] = {"tiled", "direct", "clblast"};
    for (int i = 0; i < 3; i++) {
#ifndef MG_HAVE_CLBLAST
        if (i == 2) {
            setenv("MEGALODON_OPENCL_GEMM", "clblast", 1);
            rc = mg_backend_opencl_new(-1, &ocl);
            CHECK(rc == MG_ERR_UNSUPPORTED, "MEGALODON_OPENCL_GEMM=clblast without CLBlast: %d", rc);
            continue;
        }
#endif
        char op[32];
        snprintf(op, sizeof op, "matmul.%s", gemms[i]);
        setenv("MEGALODON_OPENCL_GEMM", gemms[i], 1);
        if (mg_backend_opencl_new(-1, &ocl) == MG_OK) {
            mg_opencl_get_stats(ocl, &st);
            CHECK(strcmp(st.gemm, gemms[i]) == 0, "MEGALODON_OPENCL_GEMM=%s gave %s", gemms[i],
                  st.gemm);
            run_matmuls(op, NULL);
            ocl->free(ocl);
        } else {
            CHECK(0, "backend with MEGALODON_OPENCL_GEMM=%s: %s", gemms[i], mg_last_error());
        }
    }
    setenv("MEGALODON_OPENCL_GEMM", "fastest", 1);
    rc = mg_backend_opencl_new(-1, &ocl);
    CHECK(rc == MG_ERR_INVALID_ARG && strstr(mg_last_error(), "MEGALODON_OPENCL_GEMM"),
          "MEGALODON_OPENCL_GEMM=fastest: rc %d", rc);
    unsetenv("MEGALODON_OPENCL_GEMM");
    ocl = keep;

    printf("worst nmse per op (threshold):\n");
    for (int i = 0; i < n_worst; i++)
        printf("  %-20s %.3g (%.0e) over %d cases\n", worst[i].op, worst[i].worst,
               threshold(worst[i].op), worst[i].n);
    ocl->free(ocl);
    cpu->free(cpu);
    return test_finish("test-backend-ops"); /* remove_cache runs at exit */
}

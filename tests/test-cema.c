/* test-cema - the two CEMA algorithms of the CPU backend (FFT convolution and the
 * recurrence) against a double-precision recurrence and against each other, for many
 * lengths, with and without a carried hidden state; and the same result with 1 and 2
 * threads, bit for bit. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cema_ref.h"
#include "test.h"

static uint32_t seed = 777;
static float frand(void) { return test_frand(&seed); }

int main(void)
{
    const int D = 7, N = 5;
    /* |q| up to 0.999 (every third): slow decay, the hard case for long kernels */
    mg_cema_coeffs c = cema_random_coeffs(D, N, 1, 0.45f, frand);

    mg_backend *be1, *be2;
    if (mg_backend_cpu_new(1, NULL, &be1) || mg_backend_cpu_new(2, NULL, &be2)) {
        fprintf(stderr, "backend: %s\n", mg_last_error());
        return 1;
    }
    const int Ls[] = {1, 2, 3, 7, 8, 31, 32, 33, 64, 100, 257, 1000, 4099};
    double worst_fft = 0, worst_scan = 0;
    for (size_t li = 0; li < sizeof Ls / sizeof Ls[0]; li++) {
        const int L = Ls[li];
        for (int carried = 0; carried < 2; carried++) {
            float *x = malloc(sizeof(float) * L * D), *h0 = malloc(sizeof(float) * D * N * 2);
            for (int i = 0; i < L * D; i++) x[i] = 2.0f * frand();
            for (int i = 0; i < D * N * 2; i++) h0[i] = carried ? 3.0f * frand() : 0.0f;
            float *ye = malloc(sizeof(float) * L * D), *he = malloc(sizeof(float) * D * N * 2);
            cema_reference(x, L, &c, h0, ye, he);
            /* tolerance: fp32 rounding grows with the effective kernel length */
            double tol = 2e-5 * (1.0 + sqrt((double)(L < 1000 ? L : 1000)));
            const mg_cema_algo algos[] = {MG_CEMA_FFT, MG_CEMA_SCAN};
            float *y[2][2], *h[2][2];
            for (int a = 0; a < 2; a++)
                for (int th = 0; th < 2; th++) {
                    mg_backend *be = th ? be2 : be1;
                    y[a][th] = malloc(sizeof(float) * L * D);
                    h[a][th] = malloc(sizeof(float) * D * N * 2);
                    memcpy(h[a][th], h0, sizeof(float) * D * N * 2);
                    int rc = be->cema(be, algos[a], x, L, &c, h[a][th], y[a][th]);
                    CHECK(rc == MG_OK, "cema: %s", mg_last_error());
                    char what[96];
                    snprintf(what, sizeof what, "%s L=%d carried=%d threads=%d y",
                             a ? "scan" : "fft", L, carried, th + 1);
                    double w = CHECK_CLOSE(what, y[a][th], ye, (size_t)L * D, tol);
                    if (a == 0 && w > worst_fft) worst_fft = w;
                    if (a == 1 && w > worst_scan) worst_scan = w;
                    snprintf(what, sizeof what, "%s L=%d carried=%d threads=%d h",
                             a ? "scan" : "fft", L, carried, th + 1);
                    CHECK_CLOSE(what, h[a][th], he, (size_t)D * N * 2, tol);
                }
            for (int a = 0; a < 2; a++) {
                CHECK(memcmp(y[a][0], y[a][1], sizeof(float) * L * D) == 0 &&
                          memcmp(h[a][0], h[a][1], sizeof(float) * D * N * 2) == 0,
                      "%s L=%d: 1 and 2 threads differ", a ? "scan" : "fft", L);
                for (int th = 0; th < 2; th++) {
                    free(y[a][th]);
                    free(h[a][th]);
                }
            }
            free(x); free(h0); free(ye); free(he);
        }
    }
    printf("max abs error vs double recurrence: fft %.3g, scan %.3g\n", worst_fft, worst_scan);
    be1->free(be1);
    be2->free(be2);
    cema_free_coeffs(&c);
    return test_finish("test-cema");
}

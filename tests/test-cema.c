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
#include "test.h"

static uint32_t seed = 777;
static float frand(void)
{
    seed ^= seed << 13;
    seed ^= seed >> 17;
    seed ^= seed << 5;
    return (float)((seed >> 8) / 8388608.0 - 1.0);
}

/* h_t = q h_{t-1} + p x_t ; y_t = Re(sum_n eta_n h_t,n) + omega x_t, in double */
static void reference(const float *x, int L, const mg_cema_coeffs *c, const float *h_in,
                      float *y, float *h_out)
{
    const int D = c->D, N = c->N;
    for (int d = 0; d < D; d++)
        for (int n = 0; n < N; n++) {
            int i = d * N + n;
            double hr = h_in[2 * i], hi = h_in[2 * i + 1];
            double qr = c->q[2 * i], qi = c->q[2 * i + 1];
            for (int t = 0; t < L; t++) {
                double nr = qr * hr - qi * hi + c->p[i] * (double)x[(size_t)t * D + d];
                hi = qr * hi + qi * hr;
                hr = nr;
                double contrib = c->eta[2 * i] * hr - c->eta[2 * i + 1] * hi;
                if (n == 0) y[(size_t)t * D + d] = (float)(c->omega[d] * (double)x[(size_t)t * D + d]);
                y[(size_t)t * D + d] += (float)contrib;
            }
            h_out[2 * i] = (float)hr;
            h_out[2 * i + 1] = (float)hi;
        }
}

int main(void)
{
    const int D = 7, N = 5;
    mg_cema_coeffs c = {D, N, malloc(sizeof(float) * D * N), malloc(sizeof(float) * D * N * 2),
                        malloc(sizeof(float) * D * N * 2), malloc(sizeof(float) * D)};
    for (int i = 0; i < D * N; i++) {
        c.p[i] = 0.5f + 0.45f * frand();
        /* |q| up to 0.999: slow decay, the hard case for long kernels */
        float r = i % 3 == 0 ? 0.999f : 0.5f + 0.45f * frand(), ph = 3.1f * frand();
        c.q[2 * i] = r * cosf(ph);
        c.q[2 * i + 1] = r * sinf(ph);
        c.eta[2 * i] = frand();
        c.eta[2 * i + 1] = frand();
    }
    for (int d = 0; d < D; d++) c.omega[d] = frand();

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
            reference(x, L, &c, h0, ye, he);
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
    free(c.p); free(c.q); free(c.eta); free(c.omega);
    return test_finish("test-cema");
}

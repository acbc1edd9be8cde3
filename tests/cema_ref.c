/* cema_ref.c - the double-precision CEMA reference of the tests (cema_ref.h). */
#include "config.h"

#include "cema_ref.h"

#include <math.h>
#include <stdlib.h>

void cema_reference(const float *x, int L, const mg_cema_coeffs *c, const float *h_in, float *y,
                    float *h_out)
{
    const int D = c->D, N = c->N;
    double *acc = calloc((size_t)L, sizeof(double));
    for (int d = 0; d < D; d++) {
        for (int t = 0; t < L; t++) acc[t] = c->omega[d] * (double)x[(size_t)t * D + d];
        for (int n = 0; n < N; n++) {
            int i = d * N + n;
            double hr = h_in[2 * i], hi = h_in[2 * i + 1];
            double qr = c->q[2 * i], qi = c->q[2 * i + 1];
            for (int t = 0; t < L; t++) {
                double nr = qr * hr - qi * hi + c->p[i] * (double)x[(size_t)t * D + d];
                hi = qr * hi + qi * hr;
                hr = nr;
                acc[t] += c->eta[2 * i] * hr - c->eta[2 * i + 1] * hi;
            }
            h_out[2 * i] = (float)hr;
            h_out[2 * i + 1] = (float)hi;
        }
        for (int t = 0; t < L; t++) y[(size_t)t * D + d] = (float)acc[t];
    }
    free(acc);
}

mg_cema_coeffs cema_random_coeffs(int D, int N, int slow, float spread, float (*rnd)(void))
{
    mg_cema_coeffs c = {D, N, malloc(sizeof(float) * D * N), malloc(sizeof(float) * D * N * 2),
                        malloc(sizeof(float) * D * N * 2), malloc(sizeof(float) * D)};
    for (int i = 0; i < D * N; i++) {
        c.p[i] = 0.5f + 0.45f * rnd();
        float r = slow && i % 3 == 0 ? 0.999f : 0.5f + spread * rnd(), ph = 3.1f * rnd();
        c.q[2 * i] = r * cosf(ph);
        c.q[2 * i + 1] = r * sinf(ph);
        c.eta[2 * i] = rnd();
        c.eta[2 * i + 1] = rnd();
    }
    for (int d = 0; d < D; d++) c.omega[d] = rnd();
    return c;
}

void cema_free_coeffs(mg_cema_coeffs *c)
{
    free(c->p);
    free(c->q);
    free(c->eta);
    free(c->omega);
}

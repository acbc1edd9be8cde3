/* cema_ref.h - the CEMA recurrence in double precision and random coefficients for it: the
 * reference of the CEMA tests (test-cema, test-planner). */
#ifndef MG_CEMA_REF_H
#define MG_CEMA_REF_H

#include "backend.h"

/* h_t = q h_{t-1} + p x_t ; y_t = Re(sum_n eta_n h_t,n) + omega x_t, in double, rounded to
 * float once per output. x and y are L rows of D; h_in and h_out D*N complex values. */
void cema_reference(const float *x, int L, const mg_cema_coeffs *c, const float *h_in, float *y,
                    float *h_out);

/* D x N random coefficients, each value drawn from rnd (uniform in [-1, 1)) in this order:
 * per (d, n) p in [0.05, 0.95], |q| (0.999 for every third when slow: long memory, the hard
 * case; else 0.5 +- spread), the phase of q in [-3.1, 3.1), eta; then omega per d. */
mg_cema_coeffs cema_random_coeffs(int D, int N, int slow, float spread, float (*rnd)(void));
void cema_free_coeffs(mg_cema_coeffs *c);

#endif

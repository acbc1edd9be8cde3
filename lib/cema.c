/* cema.c - complex exponential moving average (CEMA) coefficients.
 *
 * The layer itself (h_t = q h_{t-1} + p x_t, y_t = Re(sum_n eta_n h_{t,n}) + omega x_t) is a
 * backend op (backend.h: cema) with two algorithms; here its coefficients are derived from
 * the official parameters, once per model, in double precision:
 *
 *   p[d,n]   = sigmoid(alpha[d,n])
 *   phi[d,n] = n * sigmoid(theta[d]) * 2 pi / N,              n = 1..N
 *   q[d,n]   = (1 - sigmoid(alpha[d,n]) sigmoid(delta[d,n])) exp(i phi[d,n])
 *   eta[d,n] = (gamma[d,n,0] + i gamma[d,n,1]) sqrt(1/N)
 */
#include "config.h"

#include <math.h>
#include <stdlib.h>

#include "error.h"
#include "model.h"

static double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

int mg_cema_coeffs_init(mg_cema_coeffs *c, int D, int N, const float *alpha,
                        const float *delta, const float *theta, const float *gamma,
                        const float *omega)
{
    c->D = D;
    c->N = N;
    c->p = malloc(sizeof(float) * (size_t)D * N);
    c->q = malloc(sizeof(float) * (size_t)D * N * 2);
    c->eta = malloc(sizeof(float) * (size_t)D * N * 2);
    c->omega = malloc(sizeof(float) * (size_t)D);
    if (!c->p || !c->q || !c->eta || !c->omega) {
        mg_cema_coeffs_free(c);
        return mg_seterr(MG_ERR_NOMEM, "out of memory for the CEMA coefficients p, q, eta, "
                         "omega (D=%d, N=%d)", D, N);
    }
    mg_cema_coeffs_compute(c, alpha, delta, theta, gamma, omega);
    return MG_OK;
}

void mg_cema_coeffs_compute(mg_cema_coeffs *c, const float *alpha, const float *delta,
                            const float *theta, const float *gamma, const float *omega)
{
    const int D = c->D, N = c->N;
    const double two_pi = 2.0 * 3.14159265358979323846;
    const double rsqrt_n = sqrt(1.0 / N);
    for (int d = 0; d < D; d++) {
        double base = sigmoid(theta[d]) * two_pi / N;
        for (int n = 0; n < N; n++) {
            size_t i = (size_t)d * N + n;
            double pa = sigmoid(alpha[i]);
            double mag = 1.0 - pa * sigmoid(delta[i]);
            double phi = (n + 1) * base;
            c->p[i] = (float)pa;
            c->q[2 * i] = (float)(mag * cos(phi));
            c->q[2 * i + 1] = (float)(mag * sin(phi));
            c->eta[2 * i] = (float)(gamma[2 * i] * rsqrt_n);
            c->eta[2 * i + 1] = (float)(gamma[2 * i + 1] * rsqrt_n);
        }
        c->omega[d] = omega[d];
    }
}

/* Backward of the coefficients (docs/model.md §18.5, done by autograd officially): from
 * the gradients of p, q, eta (complex, grad = dL/dRe + i dL/dIm) and omega to those of the
 * official parameters, added to dalpha, ddelta, dtheta, dgamma, domega_param.
 *   q = m e^{i phi}, m = 1 - s_a s_d:  dL/dm = Re(dq e^{-i phi}),
 *                                      dL/dphi = m (Im(dq) cos phi - Re(dq) sin phi)
 *   dalpha = (dp - s_d dL/dm) s_a (1 - s_a) ;  ddelta = -s_a dL/dm s_d (1 - s_d)
 *   dtheta = sum_n dL/dphi_n (n+1) 2pi/N s_t (1 - s_t) ;  dgamma = deta / sqrt(N) */
void mg_cema_coeffs_backward(const mg_cema_coeffs *c, const float *alpha, const float *delta,
                             const float *theta, const float *dp, const float *dq,
                             const float *deta, const float *domega, float *dalpha,
                             float *ddelta, float *dtheta, float *dgamma, float *domega_param)
{
    const int D = c->D, N = c->N;
    const double two_pi = 2.0 * 3.14159265358979323846;
    const double rsqrt_n = sqrt(1.0 / N);
    for (int d = 0; d < D; d++) {
        double st = sigmoid(theta[d]);
        double base = st * two_pi / N, dth = 0;
        for (int n = 0; n < N; n++) {
            size_t i = (size_t)d * N + n;
            double sa = sigmoid(alpha[i]), sd = sigmoid(delta[i]);
            double mag = 1.0 - sa * sd, phi = (n + 1) * base;
            double cs = cos(phi), sn = sin(phi);
            double gr = dq[2 * i], gi = dq[2 * i + 1];
            double dm = gr * cs + gi * sn;
            double dphi = mag * (gi * cs - gr * sn);
            dalpha[i] += (float)((dp[i] - sd * dm) * sa * (1.0 - sa));
            ddelta[i] += (float)(-sa * dm * sd * (1.0 - sd));
            dth += dphi * (n + 1);
            dgamma[2 * i] += (float)(deta[2 * i] * rsqrt_n);
            dgamma[2 * i + 1] += (float)(deta[2 * i + 1] * rsqrt_n);
        }
        dtheta[d] += (float)(dth * two_pi / N * st * (1.0 - st));
        domega_param[d] += domega[d];
    }
}

void mg_cema_coeffs_free(mg_cema_coeffs *c)
{
    free(c->p);
    free(c->q);
    free(c->eta);
    free(c->omega);
    c->p = c->q = c->eta = c->omega = NULL;
}

/* scalar.c - the reference kernel table: plain C, the specification of every kernel.
 * Accumulations that decide accuracy (norm moments) are done in double. */
#include "config.h"

#include "kernels.h"
#include "quant-half.h"

#include <math.h>
#include <string.h>

/* y = x * rsqrt(mean(x^2) + eps) * (1 + w) */
static void rms_norm(const float *x, const float *w, float eps, int n, float *y)
{
    double ss = 0.0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float r = (float)(1.0 / sqrt(ss / n + eps));
    for (int i = 0; i < n; i++) y[i] = x[i] * r * (w ? 1.0f + w[i] : 1.0f);
}

/* sum x[i] and sum (x[i] - c)^2, in double */
static double sum_d(const float *x, int n)
{
    double s = 0.0;
    for (int i = 0; i < n; i++) s += x[i];
    return s;
}

static double sumdev_d(const float *x, int n, double c)
{
    double v = 0.0;
    for (int i = 0; i < n; i++) v += ((double)x[i] - c) * ((double)x[i] - c);
    return v;
}

/* y = (x - m) * r * (1 + w) + b (w == NULL: * 1, b == NULL: + 0) */
static void norm_out(const float *x, float m, float r, const float *w, const float *b, int n,
                     float *y)
{
    for (int i = 0; i < n; i++)
        y[i] = (x[i] - m) * r * (w ? 1.0f + w[i] : 1.0f) + (b ? b[i] : 0.0f);
}

/* layer_norm: y = (x - mean) * rsqrt(var + eps) * (1 + w) + b;
 * timestep_norm: the Welford combine of the running (count, mean, var) with one token's
 * group moments, then y as layer_norm's with the running statistics */
#include "welford.h"

/* h_t = q h_{t-1} + p x_t ;  y_t = Re(sum_n eta_n h_{t,n}) + omega x_t */
static void cema_scan(const float *x, int L, int D, int N, int d0, int d1, const float *p,
                      const float *q, const float *eta, const float *omega, float *h, float *y)
{
    for (int d = d0; d < d1; d++) {
        const float *pd = p + (size_t)d * N;
        const float *qd = q + (size_t)d * N * 2;
        const float *ed = eta + (size_t)d * N * 2;
        float *hd = h + (size_t)d * N * 2;
        for (int t = 0; t < L; t++) {
            float xt = x[(size_t)t * D + d];
            float acc = omega[d] * xt;
            for (int n = 0; n < N; n++) {
                float hr = hd[2 * n], hi = hd[2 * n + 1];
                float qr = qd[2 * n], qi = qd[2 * n + 1];
                float nr = qr * hr - qi * hi + pd[n] * xt;
                float ni = qr * hi + qi * hr;
                hd[2 * n] = nr;
                hd[2 * n + 1] = ni;
                acc += ed[2 * n] * nr - ed[2 * n + 1] * ni; /* Re(eta h) */
            }
            y[(size_t)t * D + d] = acc;
        }
    }
}

static void complex_mul(const float *a, const float *b, float *y, int n)
{
    for (int i = 0; i < n; i++) {
        float ar = a[2 * i], ai = a[2 * i + 1], br = b[2 * i], bi = b[2 * i + 1];
        y[2 * i] = ar * br - ai * bi;
        y[2 * i + 1] = ar * bi + ai * br;
    }
}

/* (x[2i] + i x[2i+1]) * exp(i pos freqs[i]); the angle is formed in fp32 as the official
 * code does (t * freqs[i]). */
static void rope(float *x, int dh, int pos, const float *freqs)
{
    for (int i = 0; i < dh / 2; i++) {
        float th = (float)pos * freqs[i];
        float c = cosf(th), s = sinf(th);
        float a = x[2 * i], b = x[2 * i + 1];
        x[2 * i] = a * c - b * s;
        x[2 * i + 1] = a * s + b * c;
    }
}

/* x = exp(x - max x) in place with libm's expf; the sum in double, and the max in *max */
double mg_softmax_exp(float *x, int n, float *max)
{
    float m = x[0];
    for (int i = 1; i < n; i++) m = x[i] > m ? x[i] : m;
    double s = 0.0;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - m);
        s += x[i];
    }
    *max = m;
    return s;
}

static void softmax(float *x, int n)
{
    float m;
    float r = (float)(1.0 / mg_softmax_exp(x, n, &m));
    for (int i = 0; i < n; i++) x[i] *= r;
}

static void silu(const float *x, float *y, size_t n)
{
    for (size_t i = 0; i < n; i++) y[i] = x[i] / (1.0f + expf(-x[i]));
}

static void mul(const float *a, const float *b, float *y, size_t n)
{
    for (size_t i = 0; i < n; i++) y[i] = a[i] * b[i];
}

static void add(const float *a, const float *b, float *y, size_t n)
{
    for (size_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

static void affine_rows(const float *x, size_t rows, int m, const float *s, const float *t,
                        float *y)
{
    for (size_t r = 0; r < rows; r++)
        for (int i = 0; i < m; i++) {
            size_t j = r * (size_t)m + i;
            y[j] = x[j] * s[i] + (t ? t[i] : 0.0f);
        }
}

static void scale(const float *x, float a, float *y, size_t n)
{
    for (size_t i = 0; i < n; i++) y[i] = a * x[i];
}

static void f16_to_f32(const uint16_t *x, float *y, size_t n)
{
    for (size_t i = 0; i < n; i++) y[i] = mg_half_to_f32(x[i]);
}

static void bf16_to_f32(const uint16_t *x, float *y, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t bits = (uint32_t)x[i] << 16;
        memcpy(&y[i], &bits, 4);
    }
}

/* ------------------------------------------------------------------ training */

/* silu'(x) = s (1 + x (1 - s)), s = sigmoid(x) */
static void silu_backward(const float *x, const float *dy, float *dx, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const float s = 1.0f / (1.0f + expf(-x[i]));
        dx[i] = dy[i] * s * (1.0f + x[i] * (1.0f - s));
    }
}

/* logsumexp and the softmax in double, from the row's maximum */
static double cross_entropy_row(const float *l, int n, int t, float scale, float *dl)
{
    float mx = l[0];
    for (int j = 1; j < n; j++) mx = l[j] > mx ? l[j] : mx;
    double sum = 0;
    for (int j = 0; j < n; j++) sum += exp((double)l[j] - mx);
    const double lse = mx + log(sum), loss = lse - l[t];
    if (dl) {
        for (int j = 0; j < n; j++) dl[j] = (float)(exp((double)l[j] - lse) * scale);
        dl[t] -= scale;
    }
    return loss;
}

/* in double, rounded once to fp32 per stored value */
static void adamw(float *p, const float *g, float *m, float *v, size_t n, double lr, double wd,
                  double b1, double b2, double eps, double gs, double step_size, double sbc2)
{
    for (size_t j = 0; j < n; j++) {
        const double gj = g[j] * gs;
        double pj = p[j] * (1.0 - lr * wd);
        const double mj = b1 * m[j] + (1.0 - b1) * gj;
        const double vj = b2 * v[j] + (1.0 - b2) * gj * gj;
        pj -= step_size * mj / (sqrt(vj) / sbc2 + eps);
        m[j] = (float)mj;
        v[j] = (float)vj;
        p[j] = (float)pj;
    }
}

static void tsnorm_bwd_sums(const float *x, const float *dy, const float *w, int n, double u,
                            double r, double *aw, double *ab, double s[3])
{
    double ux = 0, ds = 0, dsb = 0;
    for (int k = 0; k < n; k++) {
        const double wk = w ? 1.0 + w[k] : 1.0;
        ux += x[k];
        ds += dy[k] * (x[k] - u) * wk;
        dsb += dy[k] * wk;
        aw[k] += dy[k] * (x[k] - u) * r;
        ab[k] += dy[k];
    }
    s[0] = ux;
    s[1] = ds;
    s[2] = dsb;
}

static void tsnorm_bwd_dx(const float *x, const float *dy, const float *w, int n, double r,
                          double a, double c, double ux, float *dx)
{
    for (int k = 0; k < n; k++) {
        const double wk = w ? 1.0 + w[k] : 1.0;
        dx[k] = (float)(dy[k] * r * wk + a + c * (x[k] - ux));
    }
}

static float rms_norm_backward_row(const float *x, const float *dy, const float *w, int n,
                                   float eps, float *dx)
{
    double ss = 0, gx = 0;
    for (int k = 0; k < n; k++) ss += (double)x[k] * x[k];
    const double r = 1.0 / sqrt(ss / n + eps);
    for (int k = 0; k < n; k++) gx += dy[k] * (w ? 1.0 + w[k] : 1.0) * x[k];
    const double c = r * r * r * gx / n;
    for (int k = 0; k < n; k++) dx[k] = (float)(r * dy[k] * (w ? 1.0 + w[k] : 1.0) - x[k] * c);
    return (float)r;
}

static void layer_norm_backward_row(const float *x, const float *dy, const float *w, int n,
                                    float eps, float *dx, float *mu_out, float *r_out)
{
    double mu = 0, v = 0;
    for (int k = 0; k < n; k++) mu += x[k];
    mu /= n;
    for (int k = 0; k < n; k++) v += (x[k] - mu) * (x[k] - mu);
    const double r = 1.0 / sqrt(v / n + eps);
    double mg = 0, mgx = 0;
    for (int k = 0; k < n; k++) {
        const double g = dy[k] * (w ? 1.0 + w[k] : 1.0), xh = (x[k] - mu) * r;
        mg += g;
        mgx += g * xh;
    }
    mg /= n;
    mgx /= n;
    for (int k = 0; k < n; k++) {
        const double g = dy[k] * (w ? 1.0 + w[k] : 1.0), xh = (x[k] - mu) * r;
        dx[k] = (float)(r * (g - mg - xh * mgx));
    }
    *mu_out = (float)mu;
    *r_out = (float)r;
}

#define MG_TABLE mg_kernels_scalar
#define MG_TABLE_NAME "scalar"
#define MG_QUANT(f) mg_scalar_##f
#include "table-impl.h"

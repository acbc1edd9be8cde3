/* norm-backward-impl.h - the backward kernels of the timestep norm, RMS norm and layer norm
 * of a SIMD kernel table, written once for every ISA (scalar.c, the reference, has its own
 * plain C; kernels.h states the math).
 *
 * They work in double, VD features per vector, with the reference's operations in its
 * order, so every per-feature value is bit-identical to it; the sums over features are
 * accumulated lane by lane and differ from it by roundings of double. Remainders are scalar.
 *
 * An ISA file includes this after norms-impl.h (for sum_d and sumdev_d) and after defining,
 * with its own intrinsics:
 *   VD                          lanes of a double vector
 *   typedef ... vd;             a vector of VD doubles
 *   vd vd_set1(double a);       every lane a
 *   vd vd_add(vd a, vd b), vd_sub(vd a, vd b), vd_mul(vd a, vd b)
 *   vd vd_loadf(const float *p);          VD floats, widened
 *   vd vd_load(const double *p);  void vd_store(double *p, vd v);
 *   void vd_storef(float *p, vd v);       VD doubles, rounded to float
 *   double vd_hsum(vd v);                 the sum of the lanes */
#ifndef MG_NORM_BACKWARD_IMPL_H
#define MG_NORM_BACKWARD_IMPL_H

#include <math.h>

/* 1 + w[k..k+VD), or 1 without weights */
static inline vd one_plus_w(const float *w, int k)
{
    const vd one = vd_set1(1.0);
    return w ? vd_add(one, vd_loadf(w + k)) : one;
}

/* Per group of one token (kernels.h: tsnorm_bwd_sums): s = (sum x, sum dy (x-u)(1+w),
 * sum dy (1+w)); aw += dy (x-u) r, ab += dy. */
static void tsnorm_bwd_sums(const float *x, const float *dy, const float *w, int n, double u,
                            double r, double *aw, double *ab, double s[3])
{
    const vd vu = vd_set1(u), vr = vd_set1(r);
    vd sx = vd_set1(0.0), sd = sx, sb = sx;
    int k = 0;
    for (; k + VD <= n; k += VD) {
        const vd xv = vd_loadf(x + k), dv = vd_loadf(dy + k), wk = one_plus_w(w, k);
        const vd dxu = vd_mul(dv, vd_sub(xv, vu));
        sx = vd_add(sx, xv);
        sd = vd_add(sd, vd_mul(dxu, wk));
        sb = vd_add(sb, vd_mul(dv, wk));
        vd_store(aw + k, vd_add(vd_load(aw + k), vd_mul(dxu, vr)));
        vd_store(ab + k, vd_add(vd_load(ab + k), dv));
    }
    double ux = vd_hsum(sx), ds = vd_hsum(sd), dsb = vd_hsum(sb);
    for (; k < n; k++) {
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

/* dx = dy r (1+w) + a + c (x - ux) */
static void tsnorm_bwd_dx(const float *x, const float *dy, const float *w, int n, double r,
                          double a, double c, double ux, float *dx)
{
    const vd vr = vd_set1(r), va = vd_set1(a), vc = vd_set1(c), vux = vd_set1(ux);
    int k = 0;
    for (; k + VD <= n; k += VD) {
        vd t = vd_add(vd_mul(vd_mul(vd_loadf(dy + k), vr), one_plus_w(w, k)), va);
        t = vd_add(t, vd_mul(vc, vd_sub(vd_loadf(x + k), vux)));
        vd_storef(dx + k, t);
    }
    for (; k < n; k++) {
        const double wk = w ? 1.0 + w[k] : 1.0;
        dx[k] = (float)(dy[k] * r * wk + a + c * (x[k] - ux));
    }
}

/* y = x r (1+w), r = 1/sqrt(mean(x^2) + eps):
 * dx = r dy (1+w) - x c, c = r^3 sum(dy (1+w) x) / n; returns r */
static float rms_norm_backward_row(const float *x, const float *dy, const float *w, int n,
                                   float eps, float *dx)
{
    vd s0 = vd_set1(0.0), s1 = s0;
    int k = 0;
    for (; k + VD <= n; k += VD) {
        const vd xv = vd_loadf(x + k);
        s0 = vd_add(s0, vd_mul(xv, xv));
        s1 = vd_add(s1, vd_mul(vd_mul(vd_loadf(dy + k), one_plus_w(w, k)), xv));
    }
    double ss = vd_hsum(s0), gx = vd_hsum(s1);
    for (int j = k; j < n; j++) {
        ss += (double)x[j] * x[j];
        gx += dy[j] * (w ? 1.0 + w[j] : 1.0) * x[j];
    }
    const double r = 1.0 / sqrt(ss / n + eps), c = r * r * r * gx / n;
    const vd vr = vd_set1(r), vc = vd_set1(c);
    for (k = 0; k + VD <= n; k += VD) {
        const vd t = vd_sub(vd_mul(vd_mul(vr, vd_loadf(dy + k)), one_plus_w(w, k)),
                            vd_mul(vd_loadf(x + k), vc));
        vd_storef(dx + k, t);
    }
    for (; k < n; k++) dx[k] = (float)(r * dy[k] * (w ? 1.0 + w[k] : 1.0) - x[k] * c);
    return (float)r;
}

/* y = xh (1+w) + b, xh = (x - mu) r: with g = dy (1+w),
 * dx = r (g - mean(g) - xh mean(g xh)); returns mu and r */
static void layer_norm_backward_row(const float *x, const float *dy, const float *w, int n,
                                    float eps, float *dx, float *mu_out, float *r_out)
{
    const double mu = sum_d(x, n) / n;
    const double r = 1.0 / sqrt(sumdev_d(x, n, mu) / n + eps);
    const vd vmu = vd_set1(mu), vr = vd_set1(r);
    vd s0 = vd_set1(0.0), s1 = s0;
    int k = 0;
    for (; k + VD <= n; k += VD) {
        const vd g = vd_mul(vd_loadf(dy + k), one_plus_w(w, k));
        const vd xh = vd_mul(vd_sub(vd_loadf(x + k), vmu), vr);
        s0 = vd_add(s0, g);
        s1 = vd_add(s1, vd_mul(g, xh));
    }
    double mg = vd_hsum(s0), mgx = vd_hsum(s1);
    for (int j = k; j < n; j++) {
        const double g = dy[j] * (w ? 1.0 + w[j] : 1.0), xh = (x[j] - mu) * r;
        mg += g;
        mgx += g * xh;
    }
    mg /= n;
    mgx /= n;
    const vd vmg = vd_set1(mg), vmgx = vd_set1(mgx);
    for (k = 0; k + VD <= n; k += VD) {
        const vd g = vd_mul(vd_loadf(dy + k), one_plus_w(w, k));
        const vd xh = vd_mul(vd_sub(vd_loadf(x + k), vmu), vr);
        vd_storef(dx + k, vd_mul(vr, vd_sub(vd_sub(g, vmg), vd_mul(xh, vmgx))));
    }
    for (; k < n; k++) {
        const double g = dy[k] * (w ? 1.0 + w[k] : 1.0), xh = (x[k] - mu) * r;
        dx[k] = (float)(r * (g - mg - xh * mgx));
    }
    *mu_out = (float)mu;
    *r_out = (float)r;
}

#endif

/* norm-backward-impl.h - the backward kernels of the timestep norm, RMS norm and layer norm
 * of a SIMD kernel table, written once for every ISA (scalar.c, the reference, has its own
 * plain C; kernels.h states the math).
 *
 * They work in double, VD features per vector, with the reference's operations in its
 * order, so every per-feature value is bit-identical to it; the sums over features are
 * accumulated lane by lane and differ from it by roundings of double. The remainder of a row
 * is a partial vector (its missing lanes load as 0 and add 0 to the sums).
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
 *   double vd_hsum(vd v);                 the sum of the lanes
 *   and the partial forms of the loads and stores, lanes 0 .. k-1 (0 < k < VD), the other
 *   lanes loading as 0: vd_loadf_part(p, k), vd_load_part(p, k), vd_store_part(p, v, k),
 *   vd_storef_part(p, v, k) */
#ifndef MG_NORM_BACKWARD_IMPL_H
#define MG_NORM_BACKWARD_IMPL_H

#include <math.h>

/* m lanes from p, m == VD or a partial vector of m < VD */
static inline vd ldf(const float *p, int m) { return m == VD ? vd_loadf(p) : vd_loadf_part(p, m); }
static inline vd ldd(const double *p, int m) { return m == VD ? vd_load(p) : vd_load_part(p, m); }
static inline void std_(double *p, vd v, int m)
{
    if (m == VD) vd_store(p, v);
    else vd_store_part(p, v, m);
}
static inline void stf(float *p, vd v, int m)
{
    if (m == VD) vd_storef(p, v);
    else vd_storef_part(p, v, m);
}

/* lanes in the vector at k of a row of n */
static inline int lanes(int k, int n) { return n - k < VD ? n - k : VD; }

/* 1 + w[k..k+m), or 1 without weights */
static inline vd one_plus_w(const float *w, int k, int m)
{
    const vd one = vd_set1(1.0);
    return w ? vd_add(one, ldf(w + k, m)) : one;
}

/* Per group of one token (kernels.h: tsnorm_bwd_sums): s = (sum x, sum dy (x-u)(1+w),
 * sum dy (1+w)); aw += dy (x-u) r, ab += dy. */
static void tsnorm_bwd_sums(const float *x, const float *dy, const float *w, int n, double u,
                            double r, double *aw, double *ab, double s[3])
{
    const vd vu = vd_set1(u), vr = vd_set1(r);
    vd sx = vd_set1(0.0), sd = sx, sb = sx;
    for (int k = 0; k < n; k += VD) {
        const int m = lanes(k, n);
        const vd xv = ldf(x + k, m), dv = ldf(dy + k, m), wk = one_plus_w(w, k, m);
        const vd dxu = vd_mul(dv, vd_sub(xv, vu));
        sx = vd_add(sx, xv);
        sd = vd_add(sd, vd_mul(dxu, wk));
        sb = vd_add(sb, vd_mul(dv, wk));
        std_(aw + k, vd_add(ldd(aw + k, m), vd_mul(dxu, vr)), m);
        std_(ab + k, vd_add(ldd(ab + k, m), dv), m);
    }
    s[0] = vd_hsum(sx);
    s[1] = vd_hsum(sd);
    s[2] = vd_hsum(sb);
}

/* dx = dy r (1+w) + a + c (x - ux) */
static void tsnorm_bwd_dx(const float *x, const float *dy, const float *w, int n, double r,
                          double a, double c, double ux, float *dx)
{
    const vd vr = vd_set1(r), va = vd_set1(a), vc = vd_set1(c), vux = vd_set1(ux);
    for (int k = 0; k < n; k += VD) {
        const int m = lanes(k, n);
        vd t = vd_add(vd_mul(vd_mul(ldf(dy + k, m), vr), one_plus_w(w, k, m)), va);
        t = vd_add(t, vd_mul(vc, vd_sub(ldf(x + k, m), vux)));
        stf(dx + k, t, m);
    }
}

/* y = x r (1+w), r = 1/sqrt(mean(x^2) + eps):
 * dx = r dy (1+w) - x c, c = r^3 sum(dy (1+w) x) / n; returns r */
static float rms_norm_backward_row(const float *x, const float *dy, const float *w, int n,
                                   float eps, float *dx)
{
    vd s0 = vd_set1(0.0), s1 = s0;
    for (int k = 0; k < n; k += VD) {
        const int m = lanes(k, n);
        const vd xv = ldf(x + k, m);
        s0 = vd_add(s0, vd_mul(xv, xv));
        s1 = vd_add(s1, vd_mul(vd_mul(ldf(dy + k, m), one_plus_w(w, k, m)), xv));
    }
    const double r = 1.0 / sqrt(vd_hsum(s0) / n + eps), c = r * r * r * vd_hsum(s1) / n;
    const vd vr = vd_set1(r), vc = vd_set1(c);
    for (int k = 0; k < n; k += VD) {
        const int m = lanes(k, n);
        const vd t = vd_sub(vd_mul(vd_mul(vr, ldf(dy + k, m)), one_plus_w(w, k, m)),
                            vd_mul(ldf(x + k, m), vc));
        stf(dx + k, t, m);
    }
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
    for (int k = 0; k < n; k += VD) {
        const int m = lanes(k, n);
        const vd g = vd_mul(ldf(dy + k, m), one_plus_w(w, k, m));
        const vd xh = vd_mul(vd_sub(ldf(x + k, m), vmu), vr);
        s0 = vd_add(s0, g);
        s1 = vd_add(s1, vd_mul(g, xh));
    }
    const double mg = vd_hsum(s0) / n, mgx = vd_hsum(s1) / n;
    const vd vmg = vd_set1(mg), vmgx = vd_set1(mgx);
    for (int k = 0; k < n; k += VD) {
        const int m = lanes(k, n);
        const vd g = vd_mul(ldf(dy + k, m), one_plus_w(w, k, m));
        const vd xh = vd_mul(vd_sub(ldf(x + k, m), vmu), vr);
        stf(dx + k, vd_mul(vr, vd_sub(vd_sub(g, vmg), vd_mul(xh, vmgx))), m);
    }
    *mu_out = (float)mu;
    *r_out = (float)r;
}

#endif

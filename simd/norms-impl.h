/* norms-impl.h - RMS norm, layer norm and the grouped timestep norm of a SIMD kernel table,
 * written once for every ISA (scalar.c, the reference, has its own plain C).
 *
 * The math is that of kernels.h; the statistics are formed in double as in scalar.c, the
 * output with the reference's fp32 operations in its order (the tail a partial vector).
 * An ISA file includes this after defining the vocabulary of train-impl.h (VF, vf, vf_set1,
 * vf_add, vf_sub, vf_mul, vf_load, vf_store, vf_load_part, vf_store_part) and, with its own
 * intrinsics:
 *   static double sum_d(const float *x, int n);                 sum of x, in double
 *   static double sumdev_d(const float *x, int n, double c);    sum of (x - c)^2, in double */
#ifndef MG_NORMS_IMPL_H
#define MG_NORMS_IMPL_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "welford.h"

/* y = (x - m) r (1 + w) + b (w == NULL multiplies by 1, b == NULL adds nothing) */
static inline vf norm_out_v(vf x, vf vm, vf vr, vf w1, vf b, int has_w, int has_b)
{
    vf v = vf_mul(vf_sub(x, vm), vr);
    if (has_w) v = vf_mul(v, w1);
    if (has_b) v = vf_add(v, b);
    return v;
}

static void norm_out(const float *x, float m, float r, const float *w, const float *b, int n,
                     float *y)
{
    const vf vm = vf_set1(m), vr = vf_set1(r), one = vf_set1(1.0f), zero = vf_set1(0.0f);
    int i = 0;
    for (; i + VF <= n; i += VF) {
        const vf w1 = w ? vf_add(one, vf_load(w + i)) : one, bv = b ? vf_load(b + i) : zero;
        vf_store(y + i, norm_out_v(vf_load(x + i), vm, vr, w1, bv, w != NULL, b != NULL));
    }
    if (i < n) {
        const int k = n - i;
        const vf w1 = w ? vf_add(one, vf_load_part(w + i, k)) : one;
        const vf bv = b ? vf_load_part(b + i, k) : zero;
        vf_store_part(y + i, norm_out_v(vf_load_part(x + i, k), vm, vr, w1, bv, w != NULL, b != NULL), k);
    }
}

/* y = x rsqrt(mean(x^2) + eps) (1 + w) */
static void rms_norm(const float *x, const float *w, float eps, int n, float *y)
{
    double ss = sumdev_d(x, n, 0.0); /* x - 0 == x exactly */
    float r = (float)(1.0 / sqrt(ss / n + eps));
    norm_out(x, 0.0f, r, w, NULL, n, y);
}

/* y = (x - mean) rsqrt(var + eps) (1 + w) + b */
static void layer_norm(const float *x, const float *w, const float *b, float eps, int n,
                       float *y)
{
    double mean = sum_d(x, n) / n;
    double v = sumdev_d(x, n, mean);
    float r = (float)(1.0 / sqrt(v / n + eps));
    norm_out(x, (float)mean, r, w, b, n, y);
}

/* Welford combine of the running (count, mean, var) with each token's group moments, then
 * the token normalized with the statistics that include it (kernels.h). */
static void timestep_norm(const float *x, int L, int D, int G, const float *w, const float *b,
                          float eps, int64_t *count, float *mean, float *var, float *y)
{
    const int Dg = D / G;
    for (int t = 0; t < L; t++) {
        const float *xt = x + (size_t)t * D;
        float *yt = y + (size_t)t * D;
        for (int g = 0; g < G; g++) {
            const float *xg = xt + g * Dg;
            const double gm = sum_d(xg, Dg) / Dg, gv = sumdev_d(xg, Dg, gm) / Dg;
            const float r = welford_update(*count, gm, gv, eps, &mean[g], &var[g]);
            norm_out(xg, mean[g], r, w ? w + g * Dg : NULL, b ? b + g * Dg : NULL, Dg,
                     yt + g * Dg);
        }
        *count += 1;
    }
}

#endif

/* norms-impl.h - RMS norm, layer norm and the grouped timestep norm of a SIMD kernel table,
 * written once for every ISA (scalar.c, the reference, has its own plain rms_norm and
 * norm_out; layer_norm and timestep_norm are welford.h's for every table).
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

/* layer_norm and timestep_norm over sum_d, sumdev_d and norm_out, as the scalar table's */
#include "welford.h"

#endif

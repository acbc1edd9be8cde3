/* norms-impl.h - RMS norm, layer norm and the grouped timestep norm of a SIMD kernel table,
 * written once for every ISA (scalar.c, the reference, has its own plain C).
 *
 * An ISA file includes this after defining, with its own intrinsics:
 *   static double sum_d(const float *x, int n);                 sum of x, in double
 *   static double sumdev_d(const float *x, int n, double c);    sum of (x - c)^2, in double
 *   static void norm_out(const float *x, float m, float r, const float *w, const float *b,
 *                        int n, float *y);                      y = (x - m) r (1 + w) + b
 *     (w == NULL multiplies by 1, b == NULL adds nothing), in the reference's fp32 order.
 * The math is that of kernels.h; the statistics are formed in double as in scalar.c. */
#ifndef MG_NORMS_IMPL_H
#define MG_NORMS_IMPL_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

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
        int64_t n = *count;
        double c1 = (double)n / (double)(n + 1), c2 = 1.0 / (double)(n + 1);
        for (int g = 0; g < G; g++) {
            const float *xg = xt + g * Dg;
            double gm = sum_d(xg, Dg) / Dg;
            double gv = sumdev_d(xg, Dg, gm) / Dg;
            double d = gm - mean[g];
            double mu = c1 * mean[g] + c2 * gm;
            double va = c1 * var[g] + c2 * gv + (c1 * d) * (c2 * d);
            mean[g] = (float)mu;
            var[g] = (float)va;
            float r = (float)(1.0 / sqrt(va + eps));
            norm_out(xg, (float)mu, r, w ? w + g * Dg : NULL, b ? b + g * Dg : NULL, Dg,
                     yt + g * Dg);
        }
        *count = n + 1;
    }
}

#endif

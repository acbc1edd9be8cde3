/* welford.h - layer_norm and the grouped timestep norm with its running statistics
 * (kernels.h), plain C written once for the scalar reference (scalar.c) and the SIMD tables
 * (norms-impl.h).
 *
 * The file that includes this defines first, each in its own way (scalar.c: plain loops;
 * the SIMD tables: vectors):
 *   static double sum_d(const float *x, int n);                 sum of x, in double
 *   static double sumdev_d(const float *x, int n, double c);    sum of (x - c)^2, in double
 *   static void norm_out(const float *x, float m, float r, const float *w, const float *b,
 *                        int n, float *y);    y = (x - m) r (1 + w) + b in fp32 (w, b may
 *                                             be NULL) */
#ifndef MG_WELFORD_H
#define MG_WELFORD_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

/* Combines the running mean and var of n tokens with one token's group moments gm, gv:
 *   c1 = n / (n+1), c2 = 1 / (n+1), d = gm - mean
 *   mean' = c1 mean + c2 gm ;  var' = c1 var + c2 gv + (c1 d)(c2 d)
 * in double; stores mean' and var' (fp32) and returns rsqrt(var' + eps) (fp32). */
static inline float welford_update(int64_t n, double gm, double gv, float eps, float *mean,
                                   float *var)
{
    const double c1 = (double)n / (double)(n + 1), c2 = 1.0 / (double)(n + 1);
    const double d = gm - *mean;
    const double mu = c1 * *mean + c2 * gm;
    const double va = c1 * *var + c2 * gv + (c1 * d) * (c2 * d);
    *mean = (float)mu;
    *var = (float)va;
    return (float)(1.0 / sqrt(va + eps));
}

/* y = (x - mean) rsqrt(var + eps) (1 + w) + b, the row's own mean and biased var in double */
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

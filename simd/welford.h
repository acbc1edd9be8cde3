/* welford.h - the running statistics of the timestep norm (kernels.h: timestep_norm), plain C
 * shared by the scalar reference (scalar.c) and the SIMD tables (norms-impl.h). */
#ifndef MG_WELFORD_H
#define MG_WELFORD_H

#include <math.h>
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

#endif

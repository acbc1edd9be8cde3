/* elementwise-impl.h - softmax, SiLU, mul, add, affine_rows and scale of a SIMD kernel table,
 * the row maximum and exp-sum that softmax and cross_entropy_row share, and map2, the loop
 * of the binary elementwise kernels (mul, add, complex_mul, silu_backward), written once for
 * every ISA (scalar.c, the reference, has its own plain C; kernels.h states the math).
 *
 * Every element goes through the same vector code wherever it sits: the tail of a row is a
 * partial vector (lanes past the end load as 0 and are not stored), so that an element's
 * result does not depend on n or on how a range is split among threads. mul, add, scale and
 * affine_rows do the reference's fp32 operations and give its bits; softmax and silu use the
 * table's vectorized exp (vecmath.h, neon.c state its error), softmax sums it in double.
 *
 * An ISA file includes this after defining the vocabulary of train-impl.h (VF, vf, vf_set1,
 * vf_add, vf_sub, vf_mul, vf_div, vf_exp, vf_load, vf_store, vf_load_part, vf_store_part)
 * and, with its own intrinsics:
 *   vf vf_max(vf a, vf b);      lane by lane a > b ? a : b
 *   float vf_hmax(vf v);        the largest lane
 *   vf vf_part(vf v, int k);    lanes 0 .. k-1 of v, the others 0
 *   typedef ... vfd;            VF doubles, an accumulator of VF floats
 *   vfd vfd_zero(void);  vfd vfd_addf(vfd s, vf v);    s + v lane by lane, in double
 *   double vfd_sum(vfd s);      the sum of the lanes */
#ifndef MG_ELEMENTWISE_IMPL_H
#define MG_ELEMENTWISE_IMPL_H

#include <stddef.h>

/* max_i x[i] in fp32 (exact in any order) */
static float max_row(const float *x, int n)
{
    float m = x[0];
    int i = 0;
    if (n >= VF) {
        vf vm = vf_load(x);
        for (i = VF; i + VF <= n; i += VF) vm = vf_max(vf_load(x + i), vm);
        m = vf_hmax(vm);
    }
    for (; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}

/* e[i] = exp(x[i] - m), stored to y (y may be x; NULL: not stored); returns sum e in double */
static double exp_sum(const float *x, int n, float m, float *y)
{
    const vf vm = vf_set1(m);
    vfd s = vfd_zero();
    int i = 0;
    for (; i + VF <= n; i += VF) {
        const vf e = vf_exp(vf_sub(vf_load(x + i), vm));
        if (y) vf_store(y + i, e);
        s = vfd_addf(s, e);
    }
    if (i < n) {
        const int k = n - i;
        const vf e = vf_part(vf_exp(vf_sub(vf_load_part(x + i, k), vm)), k);
        if (y) vf_store_part(y + i, e, k);
        s = vfd_addf(s, e);
    }
    return vfd_sum(s);
}

/* y = a x */
static void scale(const float *x, float a, float *y, size_t n)
{
    const vf va = vf_set1(a);
    size_t i = 0;
    for (; i + VF <= n; i += VF) vf_store(y + i, vf_mul(va, vf_load(x + i)));
    if (i < n) {
        const int k = (int)(n - i);
        vf_store_part(y + i, vf_mul(va, vf_load_part(x + i, k)), k);
    }
}

/* x = exp(x - max) / sum, the sum in double and its inverse rounded to fp32 */
static void softmax(float *x, int n)
{
    const double s = exp_sum(x, n, max_row(x, n), x);
    scale(x, (float)(1.0 / s), x, (size_t)n);
}

/* x / (1 + exp(-x)) */
static inline vf silu_v(vf x)
{
    return vf_div(x, vf_add(vf_set1(1.0f), vf_exp(vf_sub(vf_set1(0.0f), x))));
}

static void silu(const float *x, float *y, size_t n)
{
    size_t i = 0;
    for (; i + VF <= n; i += VF) vf_store(y + i, silu_v(vf_load(x + i)));
    if (i < n) {
        const int k = (int)(n - i);
        vf_store_part(y + i, silu_v(vf_load_part(x + i, k)), k);
    }
}

/* y = f(a, b) lane by lane over n floats, the tail a partial vector; f is a vf function
 * (vf_mul, silu_bwd_v, ...), inlined where this is */
static inline void map2(vf (*f)(vf, vf), const float *a, const float *b, float *y, size_t n)
{
    size_t i = 0;
    for (; i + VF <= n; i += VF) vf_store(y + i, f(vf_load(a + i), vf_load(b + i)));
    if (i < n) {
        const int k = (int)(n - i);
        vf_store_part(y + i, f(vf_load_part(a + i, k), vf_load_part(b + i, k)), k);
    }
}

static void mul(const float *a, const float *b, float *y, size_t n) { map2(vf_mul, a, b, y, n); }

static void add(const float *a, const float *b, float *y, size_t n) { map2(vf_add, a, b, y, n); }

/* y = x s + t per column of rows of m, two roundings as the reference (t == NULL adds +0) */
static void affine_rows(const float *x, size_t rows, int m, const float *s, const float *t,
                        float *y)
{
    const vf zero = vf_set1(0.0f);
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * (size_t)m;
        float *yr = y + r * (size_t)m;
        int i = 0;
        for (; i + VF <= m; i += VF)
            vf_store(yr + i, vf_add(vf_mul(vf_load(xr + i), vf_load(s + i)),
                                    t ? vf_load(t + i) : zero));
        if (i < m) {
            const int k = m - i;
            vf_store_part(yr + i, vf_add(vf_mul(vf_load_part(xr + i, k), vf_load_part(s + i, k)),
                                         t ? vf_load_part(t + i, k) : zero), k);
        }
    }
}

#endif

/* kernels.h - one table of compute kernels per instruction set.
 *
 * The scalar table (scalar.c) is the reference: it defines what every kernel computes.
 * Other tables (AVX2, AVX-512, NEON) must agree with it within the tolerance stated by the
 * kernel tests. Kernels are single-threaded and work on plain fp32 arrays; the backend
 * splits work across threads and calls them on disjoint ranges. Complex numbers are stored
 * as interleaved (re, im) float pairs. */
#ifndef MG_KERNELS_H
#define MG_KERNELS_H

#include <stddef.h>
#include <stdint.h>

typedef struct mg_kernels {
    const char *name; /* "scalar", "avx2", ... */

    /* y = x * rsqrt(mean(x^2) + eps) * (1 + w)      (w == NULL: no affine), one row of n */
    void (*rms_norm)(const float *x, const float *w, float eps, int n, float *y);

    /* y = (x - mean) * rsqrt(var + eps) * (1 + w) + b   (biased var; w, b may be NULL) */
    void (*layer_norm)(const float *x, const float *w, const float *b, float eps, int n,
                       float *y);

    /* Grouped timestep norm of L consecutive rows x[t*D .. t*D+D) with running statistics.
     * For each t and group g (features g*D/G .. (g+1)*D/G):
     *   gm = mean_k x[t,k], gv = mean_k (x[t,k]-gm)^2
     *   n' = n+1, c1 = n/n', c2 = 1/n', d = gm - mu
     *   mu' = c1 mu + c2 gm ;  var' = c1 var + c2 gv + (c1 d)(c2 d)
     *   y[t,k] = (x[t,k] - mu') * rsqrt(var' + eps) * (1 + w[k]) + b[k]
     * count is shared by all groups and incremented once per row. */
    void (*timestep_norm)(const float *x, int L, int D, int G, const float *w, const float *b,
                          float eps, int64_t *count, float *mean, float *var, float *y);

    /* CEMA recurrence for channels d0 .. d1-1 of x (L rows of D):
     *   h_t = q h_{t-1} + p x_t         (h, q, eta complex; p real; N components)
     *   y_t = Re(sum_n eta_n h_{t,n}) + omega x_t
     * h (D*N complex) holds h_{-1} on entry and h_{L-1} on return. p: D*N; q, eta: D*N
     * complex; omega: D. */
    void (*cema_scan)(const float *x, int L, int D, int N, int d0, int d1, const float *p,
                      const float *q, const float *eta, const float *omega, float *h,
                      float *y);

    /* y[i] = a[i] * b[i] for n complex numbers (y may alias a). */
    void (*complex_mul)(const float *a, const float *b, float *y, int n);

    /* In-place interleaved rotary embedding of one head vector x[dh] at position pos:
     *   (x[2i], x[2i+1]) *= exp(i * pos * freqs[i]),  i < dh/2 */
    void (*rope)(float *x, int dh, int pos, const float *freqs);

    /* In-place softmax over n values (n >= 1), computed stably (max subtracted). */
    void (*softmax)(float *x, int n);

    /* Elementwise: y = x * sigmoid(x); y = a * b; y = a + b; y = x * s[i % m] + t[i % m]
     * (per-column affine over rows of m; t may be NULL); y = a * x. */
    void (*silu)(const float *x, float *y, size_t n);
    void (*mul)(const float *a, const float *b, float *y, size_t n);
    void (*add)(const float *a, const float *b, float *y, size_t n);
    void (*affine_rows)(const float *x, size_t rows, int m, const float *s, const float *t,
                        float *y);
    void (*scale)(const float *x, float a, float *y, size_t n);

    /* fp16 / bf16 to fp32. */
    void (*f16_to_f32)(const uint16_t *x, float *y, size_t n);
    void (*bf16_to_f32)(const uint16_t *x, float *y, size_t n);
} mg_kernels;

/* The reference table, always present; the others exist when configure built them
 * (MG_HAVE_AVX2, MG_HAVE_AVX512, MG_HAVE_NEON), each in its own file with its own flags. */
extern const mg_kernels mg_kernels_scalar;
extern const mg_kernels mg_kernels_avx2, mg_kernels_avx512, mg_kernels_neon;

/* The table for this CPU: the best one compiled in and supported by the CPU and OS, unless
 * MEGALODON_ISA (scalar|avx2|avx512|neon) names another; NULL when MEGALODON_ISA names a
 * table that is not compiled in or not supported here. */
const mg_kernels *mg_kernels_best(void);

/* The names of the tables compiled in and supported here, best first ("avx2 scalar"). */
const char *mg_kernels_available(void);

/* The table with this name if compiled in and usable here, else NULL. */
const mg_kernels *mg_kernels_by_name(const char *name);

#endif

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

    /* ---- training (the backward ops of lib/backend-cpu-*.c, the AdamW step of lib/trainer.c).
     * Elementwise kernels give an element the same bits wherever it sits in the range (no
     * remainder with its own rounding), so that splitting a range among threads does not
     * change results.
     * Accuracy of the SIMD tables (measured / tested by tests/test-kernels.c):
     *  - silu_backward: the fp32 formula with the table's vector exp. With dy = 1 its
     *    absolute error against double over [-80, 80] is 9.75e-7 in every table, the scalar
     *    one with libm's expf included (1 - s near s = 1 is off by up to half an ulp of 1,
     *    times x, up to x ~ 17 where s rounds to 1); tested < 1.2e-6. SIMD vs scalar:
     *    |dx - scalar| <= 1.2e-6 max(1, |scalar|) (measured 6e-7 for dy up to 4);
     *  - cross_entropy_row: fp32 vector exp (relative error < 1.2e-7) of l - max, summed in
     *    double; dl = e (scale / sum). Against long double: loss 2.2e-8, dl 4e-8 scale
     *    (measured; tested < 4e-7); SIMD vs scalar: loss and dl / scale within 4e-7;
     *  - adamw: fp32 with the constants rounded to fp32 and no fused multiply-add (the three
     *    SIMD tables give the same bits; scalar keeps double): each of p, m, v within 5e-7
     *    of scalar relative to the size of the terms it is made of (|p (1 - lr wd)| +
     *    |update|, |b1 m| + |(1 - b1) gj|, v) (measured 2.6e-7);
     *  - tsnorm_bwd_*, *_norm_backward_row: double, four (AVX2), eight (AVX-512) or two
     *    (NEON) features per vector with the reference's operations per feature (aw, ab
     *    bit-identical), the sums in another order (relative 2e-16): dx within 2.5e-7
     *    (mixed absolute / relative; measured: identical). */

    /* dx = (dy s) (1 + x (1 - s)),  s = 1 / (1 + exp(-x)): the SiLU's backward over n. */
    void (*silu_backward)(const float *x, const float *dy, float *dx, size_t n);

    /* One row of n logits l and its target t (0 <= t < n): returns the loss
     * logsumexp(l) - l[t] (double), and when dl != NULL writes
     * dl = (softmax(l) - onehot(t)) * scale (dl may alias l). */
    double (*cross_entropy_row)(const float *l, int n, int t, float scale, float *dl);

    /* AdamW over n parameters p with gradients g and moments m, v (updated in place):
     *   gj = g gs ;  pj = p (1 - lr wd) ;  m = b1 m + (1 - b1) gj ;  v = b2 v + (1 - b2) gj^2
     *   p = pj - step_size m / (sqrt(v) / sbc2 + eps)
     * (lib/trainer.c: step_size = lr / (1 - b1^t), sbc2 = sqrt(1 - b2^t)). */
    void (*adamw)(float *p, const float *g, float *m, float *v, size_t n, double lr, double wd,
                  double b1, double b2, double eps, double gs, double step_size, double sbc2);

    /* The timestep norm backward (lib/backend-cpu-norms.c) on one group of one row, n
     * features, wk = 1 + w[k] (w == NULL: 1), u and r the row's mean and 1/sqrt(var + eps):
     *   sums: s[0] = sum x,  s[1] = sum dy (x - u) wk,  s[2] = sum dy wk   (double), and
     *         aw[k] += dy (x - u) r,  ab[k] += dy   (double accumulators, per feature);
     *   dx:   dx[k] = dy r wk + a + c (x - ux)   (double, rounded once to fp32). */
    void (*tsnorm_bwd_sums)(const float *x, const float *dy, const float *w, int n, double u,
                            double r, double *aw, double *ab, double s[3]);
    void (*tsnorm_bwd_dx)(const float *x, const float *dy, const float *w, int n, double r,
                          double a, double c, double ux, float *dx);

    /* The backward of rms_norm / layer_norm on one row of n (g = dy wk, wk as above; the
     * statistics recomputed in double):
     *   rms:   r = 1/sqrt(mean(x^2) + eps);  dx = r g - x r^3 mean(g x);  returns r (fp32);
     *   layer: xh = (x - mu) r;  dx = r (g - mean(g) - xh mean(g xh));  *mu, *r (fp32). */
    float (*rms_norm_backward_row)(const float *x, const float *dy, const float *w, int n,
                                   float eps, float *dx);
    void (*layer_norm_backward_row)(const float *x, const float *dy, const float *w, int n,
                                    float eps, float *dx, float *mu, float *r);

    /* ---- quantized weights (blocks.h: the GGUF block layouts; quant-scalar.c the definition,
     * quant-impl.h the SIMD tables). Block arrays are bytes at any address. Decode multiplies
     * a weight row by an activation row rounded once per token to q8_0 (for q8_0 and q4_0
     * weights) or q8_K (for q4_K and q6_K):
     *   quantize_q8_0: per 32 values d = max|x| / 127, id = d ? 1 / d : 0 (fp32), d stored as
     *     half, q = rint(x id) (ties to even; ggml's quantize_row_q8_0_ref rounds ties away
     *     from zero, its SIMD paths to even). n a multiple of 32;
     *   quantize_q8_K: per 256 values, max the first value of largest |x|, iscale = -127 / max,
     *     q = min(127, rint(iscale x)), d = 1 / iscale (fp32), bsums[i] = sum of q[16i ..
     *     16i + 15] (ggml's quantize_row_q8_K_ref); an all-zero block is all zeros. n a
     *     multiple of 256. Every q is in [-127, 127], which the SIMD dot products need;
     *   dot_f16, dot_bf16: sum_i w[i] x[i] (any n), fp32 accumulation;
     *   dot2_f16, dot2_bf16: out[r] = the dot_f16 / dot_bf16 of row w_r (r = 0, 1) with x,
     *     the same bits as two calls (one pass over x for both rows: decode reads rows in
     *     pairs);
     *   dot_q8_0 (q8_0 activations): sum_b (dw_b dx_b) sum_j qw[j] qx[j];
     *   dot_q4_0 (q8_0 activations): sum_b (dw_b dx_b) sum_j (q[j] - 8) qx[j];
     *   dot_q4_K (q8_K activations): sum_b (dx d) sum_s sc[s] sum_{j in s} q[j] qx[j]
     *                                    - (dx dmin) sum_s m[s] (bsums[2s] + bsums[2s + 1]);
     *   dot_q6_K (q8_K activations): sum_b (dx d) sum_s scales[s] sum_{j in s} (q[j] - 32) qx[j]
     *     (n a multiple of the block size: 32, 256). The integer sums of a block are exact in
     *     int32, then scaled in fp32 and the blocks summed in fp32;
     *   dequant_*: whole blocks to fp32 with ggml's dequantize_row_* operations (n a multiple
     *     of the block size): q8_0 d q; q4_0 d (q - 8); q4_K (d sc) q - (dmin m); q6_K
     *     (d scales[s]) (q - 32).
     * Accuracy of the SIMD tables (tests/test-quant-kernels.c): the activation quantizers and
     * the dequantizers give the scalar table's bits; the dot products differ from it only in
     * the order of the fp32 additions (integer parts exact): within 2e-6 of the scalar result
     * relative to the sum of the absolute values of the terms, at the row sizes of real
     * models. The scalar integer dot products equal the fp32 dot product of the dequantized
     * weights with the dequantized activations to within the same bound. */
    void (*quantize_q8_0)(const float *x, void *y, int n);
    void (*quantize_q8_K)(const float *x, void *y, int n);
    float (*dot_f16)(const uint16_t *w, const float *x, int n);
    float (*dot_bf16)(const uint16_t *w, const float *x, int n);
    void (*dot2_f16)(const uint16_t *w0, const uint16_t *w1, const float *x, int n, float out[2]);
    void (*dot2_bf16)(const uint16_t *w0, const uint16_t *w1, const float *x, int n, float out[2]);
    float (*dot_q8_0)(const void *w, const void *xq, int n);
    float (*dot_q4_0)(const void *w, const void *xq, int n);
    float (*dot_q4_K)(const void *w, const void *xq, int n);
    float (*dot_q6_K)(const void *w, const void *xq, int n);
    void (*dequant_q8_0)(const void *w, float *y, int64_t n);
    void (*dequant_q4_0)(const void *w, float *y, int64_t n);
    void (*dequant_q4_K)(const void *w, float *y, int64_t n);
    void (*dequant_q6_K)(const void *w, float *y, int64_t n);
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

/* The scalar table's softmax before its division (scalar.c): x[i] = expf(x[i] - max) in
 * place over n >= 1 values; returns their sum in double and stores the max in *max. (The
 * attention decode keeps each block of keys unnormalized, lib/backend-cpu-attention.c.) */
double mg_softmax_exp(float *x, int n, float *max);

#endif

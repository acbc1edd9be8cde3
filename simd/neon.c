/* neon.c - the AArch64 Advanced SIMD (NEON) kernel table.
 *
 * Every kernel computes what its scalar.c counterpart computes (see kernels.h), four floats
 * per vector. This file holds the vocabulary the *-impl.h headers are written in (each header
 * lists what it uses), the vector exp, the CEMA scan and the conversions. Most kernels agree
 * with the scalar table bit for bit:
 *   - the elementwise kernels, complex_mul, rope and cema_scan do the same IEEE operations
 *     in the same order (separate multiplies and adds, no fused multiply-add, which the
 *     scalar file does not get either under -std=c11: vf_muladdsub rounds twice), only four
 *     lanes at a time; cema_scan runs four consecutive channels per vector, and rope takes
 *     its angles from libm's sinf/cosf exactly as the scalar table does, so it agrees for
 *     every position;
 *   - the norm moments are accumulated in double (float64x2) like the scalar reference, only
 *     in another order (differences of the order of 1e-16 relative in the moments);
 *   - f16_to_f32 (FCVTL, with the NaN bit pattern of the scalar code restored for signalling
 *     NaNs, which FCVTL would quieten) and bf16_to_f32 (a widening shift) are bit-exact for all
 *     65536 inputs;
 *   - silu, softmax, silu_backward and cross_entropy_row use v_exp below instead of libm's
 *     expf (cross_entropy_row's scalar code uses double exp): within 1.02 ulp of exp (see its
 *     comment; tests/cross/test-neon-exp.c checks 2 ulp);
 *   - adamw computes in fp32 (scalar.c in double) with the x86 tables' operations: the same
 *     bits as theirs; the norm backward kernels use float64x2 with the scalar operations per
 *     feature (kernels.h states the tolerances).
 * Built only on AArch64, where Advanced SIMD is part of the base architecture (no run-time
 * check is needed; cpu.c registers the table unconditionally under MG_HAVE_NEON). */
#include "config.h"

#include "kernels.h"
#include "quant-half.h"

#if !defined(__aarch64__)
#error "simd/neon.c is the AArch64 NEON table: build it for AArch64 only"
#endif

#include <arm_neon.h>
#include <math.h>
#include <string.h>

/* ------------------------------------------------------------------ vector exp */

/* exp(x) for four floats.
 *   x is first clamped to [-104, 89]: exp(-104) < 2^-150 rounds to +0 and exp(89) > FLT_MAX
 *   overflows to +inf, so the clamp changes no result; NaN stays NaN (FMIN/FMAX propagate it).
 *   n = rint(x / ln 2), r = x - n ln2_hi - n ln2_lo (two fused steps), |r| <= ln2/2 + tiny.
 *   exp(r) = 1 + r + r^2 q(r), q of degree 4, a minimax fit of (exp(r) - 1 - r) / r^2 for
 *   relative error of exp on [-ln2/2, ln2/2]: 3.8e-9 (0.03 ulp) with the float coefficients.
 *   2^n is applied as two exact power-of-two products 2^(n>>1) * 2^(n - (n>>1)), both normal
 *   for n in [-150, 128], so that results in the subnormal range (x < -87.3) and overflow to
 *   +inf (x > 88.72) come out as expf's do.
 * Maximum error, measured against double exp() on every one of the 2.24e9 floats in
 * [-104, 89] (under qemu): 1.014 ulp for normal results (at x = 37.7786407), i.e. a relative
 * error below 1.21e-7; 0.75 ulp of 2^-149 for subnormal results; overflow to +inf exactly
 * where expf overflows. tests/cross/test-neon-exp.c checks a bound of 2 ulp (one subnormal
 * ulp below FLT_MIN) on a sample of 2 million points and every float near the thresholds. */
static inline float32x4_t v_exp(float32x4_t x)
{
    const float32x4_t log2e = vdupq_n_f32(0x1.715476p+0f);
    const float32x4_t ln2_hi = vdupq_n_f32(0x1.62e430p-1f);
    const float32x4_t ln2_lo = vdupq_n_f32(-0x1.05c610p-29f);
    x = vminq_f32(vmaxq_f32(x, vdupq_n_f32(-104.0f)), vdupq_n_f32(89.0f));
    float32x4_t z = vrndnq_f32(vmulq_f32(x, log2e)); /* integral, in [-150, 128] */
    int32x4_t n = vcvtq_s32_f32(z);
    float32x4_t r = vfmsq_f32(x, z, ln2_hi);
    r = vfmsq_f32(r, z, ln2_lo);
    float32x4_t q = vfmaq_f32(vdupq_n_f32(0x1.1239d4p-7f), vdupq_n_f32(0x1.6a244cp-10f), r);
    q = vfmaq_f32(vdupq_n_f32(0x1.5558f2p-5f), q, r);
    q = vfmaq_f32(vdupq_n_f32(0x1.555492p-3f), q, r);
    q = vfmaq_f32(vdupq_n_f32(0x1.fffffcp-2f), q, r);
    float32x4_t p = vaddq_f32(vdupq_n_f32(1.0f), vfmaq_f32(r, vmulq_f32(r, r), q));
    int32x4_t n1 = vshrq_n_s32(n, 1), n2 = vsubq_s32(n, n1);
    const int32x4_t bias = vdupq_n_s32(127);
    float32x4_t s1 = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(n1, bias), 23));
    float32x4_t s2 = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(n2, bias), 23));
    return vmulq_f32(vmulq_f32(p, s1), s2);
}

/* ------------------------------------------------------------------ vocabulary */

/* four floats per vector (train-impl.h, elementwise-impl.h, complex-impl.h, norms-impl.h);
 * the partial vectors through a zero-padded copy */
#define VF 4
typedef float32x4_t vf;
#include "vf-arith.h" /* vf_add, vf_sub, vf_mul, vf_div */
static inline vf vf_set1(float a) { return vdupq_n_f32(a); }
static inline vf vf_sqrt(vf a) { return vsqrtq_f32(a); }
static inline vf vf_exp(vf x) { return v_exp(x); }
static inline vf vf_load(const float *p) { return vld1q_f32(p); }
static inline void vf_store(float *p, vf v) { vst1q_f32(p, v); }
static inline vf vf_load_part(const float *p, int k)
{
    float t[4] = {0, 0, 0, 0};
    memcpy(t, p, sizeof(float) * (size_t)k);
    return vld1q_f32(t);
}
static inline void vf_store_part(float *p, vf v, int k)
{
    float t[4];
    vst1q_f32(t, v);
    memcpy(p, t, sizeof(float) * (size_t)k);
}
static inline vf vf_max(vf a, vf b) { return vbslq_f32(vcgtq_f32(a, b), a, b); }
static inline float vf_hmax(vf v) { return vmaxvq_f32(v); }
static inline vf vf_part(vf v, int k)
{
    static const uint32_t ones[8] = {~0u, ~0u, ~0u, ~0u, 0, 0, 0, 0};
    return vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(v), vld1q_u32(ones + 4 - k)));
}
static inline vf vf_dup_even(vf v) { return vtrn1q_f32(v, v); }
static inline vf vf_dup_odd(vf v) { return vtrn2q_f32(v, v); }
static inline vf vf_swap_pairs(vf v) { return vrev64q_f32(v); }
/* a b -+ c with the product and the sum rounded separately, as the scalar code */
static inline vf vf_muladdsub(vf a, vf b, vf c)
{
    const uint32x4_t neg_even = {0x80000000u, 0, 0x80000000u, 0};
    return vaddq_f32(vmulq_f32(a, b), vreinterpretq_f32_u32(veorq_u32(vreinterpretq_u32_f32(c), neg_even)));
}
static inline void vf_dup_pairs(vf v, vf *lo, vf *hi)
{
    *lo = vzip1q_f32(v, v);
    *hi = vzip2q_f32(v, v);
}
/* libm's sinf and cosf, the scalar table's values for every angle */
static inline void vf_sincos(vf th, vf *s, vf *c)
{
    float t[4], sv[4], cv[4];
    vst1q_f32(t, th);
    for (int i = 0; i < 4; i++) {
        sv[i] = sinf(t[i]);
        cv[i] = cosf(t[i]);
    }
    *s = vld1q_f32(sv);
    *c = vld1q_f32(cv);
}

/* four doubles per "vector" (norm-backward-impl.h): two float64x2 registers, summed
 * pairwise at the end */
#define VD 4
typedef struct {
    float64x2_t lo, hi;
} vd;
static inline vd vd_set1(double a) { return (vd){vdupq_n_f64(a), vdupq_n_f64(a)}; }
static inline vd vd_add(vd a, vd b) { return (vd){vaddq_f64(a.lo, b.lo), vaddq_f64(a.hi, b.hi)}; }
static inline vd vd_sub(vd a, vd b) { return (vd){vsubq_f64(a.lo, b.lo), vsubq_f64(a.hi, b.hi)}; }
static inline vd vd_mul(vd a, vd b) { return (vd){vmulq_f64(a.lo, b.lo), vmulq_f64(a.hi, b.hi)}; }
/* four floats widened to double (exact), and four doubles rounded to float */
static inline vd vd_widen(vf v) { return (vd){vcvt_f64_f32(vget_low_f32(v)), vcvt_high_f64_f32(v)}; }
static inline vf vd_narrow(vd v) { return vcvt_high_f32_f64(vcvt_f32_f64(v.lo), v.hi); }
static inline vd vd_loadf(const float *p) { return vd_widen(vld1q_f32(p)); }
static inline vd vd_load(const double *p) { return (vd){vld1q_f64(p), vld1q_f64(p + 2)}; }
static inline void vd_store(double *p, vd v)
{
    vst1q_f64(p, v.lo);
    vst1q_f64(p + 2, v.hi);
}
static inline void vd_storef(float *p, vd v) { vst1q_f32(p, vd_narrow(v)); }
static inline double vd_hsum(vd v) { return vaddvq_f64(vaddq_f64(v.lo, v.hi)); }
/* the partial forms, 0 < k < 4: the floats through vf's zero-padded copy, the doubles lane
 * by lane (the first register whole or its low lane, the second's low lane for k = 3) */
static inline vd vd_loadf_part(const float *p, int k) { return vd_widen(vf_load_part(p, k)); }
static inline void vd_storef_part(float *p, vd v, int k) { vf_store_part(p, vd_narrow(v), k); }
static inline vd vd_load_part(const double *p, int k)
{
    const float64x2_t zero = vdupq_n_f64(0.0);
    const float64x2_t lo = k == 1 ? vld1q_lane_f64(p, zero, 0) : vld1q_f64(p);
    return (vd){lo, k == 3 ? vld1q_lane_f64(p + 2, zero, 0) : zero};
}
static inline void vd_store_part(double *p, vd v, int k)
{
    if (k == 1) vst1q_lane_f64(p, v.lo, 0);
    else vst1q_f64(p, v.lo);
    if (k == 3) vst1q_lane_f64(p + 2, v.hi, 0);
}

/* four floats summed lane by lane in double (elementwise-impl.h): a vd */
typedef vd vfd;
static inline vfd vfd_zero(void) { return vd_set1(0.0); }
static inline vfd vfd_addf(vfd s, vf v) { return vd_add(s, vd_widen(v)); }
static inline double vfd_sum(vfd s) { return vd_hsum(s); }

/* sum of x[0..n) in double (norms-impl.h) */
static double sum_d(const float *x, int n)
{
    float64x2_t a0 = vdupq_n_f64(0.0), a1 = a0, a2 = a0, a3 = a0;
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        float32x4_t v0 = vld1q_f32(x + i), v1 = vld1q_f32(x + i + 4);
        a0 = vaddq_f64(a0, vcvt_f64_f32(vget_low_f32(v0)));
        a1 = vaddq_f64(a1, vcvt_high_f64_f32(v0));
        a2 = vaddq_f64(a2, vcvt_f64_f32(vget_low_f32(v1)));
        a3 = vaddq_f64(a3, vcvt_high_f64_f32(v1));
    }
    for (; i + 4 <= n; i += 4) {
        float32x4_t v = vld1q_f32(x + i);
        a0 = vaddq_f64(a0, vcvt_f64_f32(vget_low_f32(v)));
        a1 = vaddq_f64(a1, vcvt_high_f64_f32(v));
    }
    double s = vaddvq_f64(vaddq_f64(vaddq_f64(a0, a1), vaddq_f64(a2, a3)));
    for (; i < n; i++) s += x[i];
    return s;
}

/* sum of (x[i] - c)^2 in double (c = 0: sum of squares; the products are exact in double) */
static double sumdev_d(const float *x, int n, double c)
{
    const float64x2_t cv = vdupq_n_f64(c);
    float64x2_t a0 = vdupq_n_f64(0.0), a1 = a0, a2 = a0, a3 = a0;
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        float32x4_t v0 = vld1q_f32(x + i), v1 = vld1q_f32(x + i + 4);
        float64x2_t d0 = vsubq_f64(vcvt_f64_f32(vget_low_f32(v0)), cv);
        float64x2_t d1 = vsubq_f64(vcvt_high_f64_f32(v0), cv);
        float64x2_t d2 = vsubq_f64(vcvt_f64_f32(vget_low_f32(v1)), cv);
        float64x2_t d3 = vsubq_f64(vcvt_high_f64_f32(v1), cv);
        a0 = vfmaq_f64(a0, d0, d0);
        a1 = vfmaq_f64(a1, d1, d1);
        a2 = vfmaq_f64(a2, d2, d2);
        a3 = vfmaq_f64(a3, d3, d3);
    }
    for (; i + 4 <= n; i += 4) {
        float32x4_t v = vld1q_f32(x + i);
        float64x2_t d0 = vsubq_f64(vcvt_f64_f32(vget_low_f32(v)), cv);
        float64x2_t d1 = vsubq_f64(vcvt_high_f64_f32(v), cv);
        a0 = vfmaq_f64(a0, d0, d0);
        a1 = vfmaq_f64(a1, d1, d1);
    }
    double s = vaddvq_f64(vaddq_f64(vaddq_f64(a0, a1), vaddq_f64(a2, a3)));
    for (; i < n; i++) s += ((double)x[i] - c) * ((double)x[i] - c);
    return s;
}

/* ------------------------------------------------------------------ kernels written once */

#include "norms-impl.h"
#include "elementwise-impl.h"
#include "complex-impl.h"
#include "train-impl.h"
#include "norm-backward-impl.h"

/* ------------------------------------------------------------------ CEMA */

/* Components per channel that the four-channel path keeps in its local transposed arrays
 * (7 x 16 bytes each); larger N falls back to the scalar table. Megalodon uses N = 16. */
#define CEMA_MAXN 64

/* Four channels d .. d+3 at once, lane c = channel d + c. The parameters and state are first
 * transposed to one vector per component; each step then does, per lane, the scalar code's
 * operations in its order, so the results equal the scalar table's bit for bit. */
static void cema_quad(const float *x, int L, int D, int N, int d, const float *p,
                      const float *q, const float *eta, const float *omega, float *h, float *y)
{
    float32x4_t P[CEMA_MAXN], QR[CEMA_MAXN], QI[CEMA_MAXN], ER[CEMA_MAXN], EI[CEMA_MAXN];
    float32x4_t HR[CEMA_MAXN], HI[CEMA_MAXN];
    for (int n = 0; n < N; n++) {
        float tp[4], tqr[4], tqi[4], ter[4], tei[4], thr[4], thi[4];
        for (int c = 0; c < 4; c++) {
            size_t i = (size_t)(d + c) * N + n;
            tp[c] = p[i];
            tqr[c] = q[2 * i];
            tqi[c] = q[2 * i + 1];
            ter[c] = eta[2 * i];
            tei[c] = eta[2 * i + 1];
            thr[c] = h[2 * i];
            thi[c] = h[2 * i + 1];
        }
        P[n] = vld1q_f32(tp);
        QR[n] = vld1q_f32(tqr);
        QI[n] = vld1q_f32(tqi);
        ER[n] = vld1q_f32(ter);
        EI[n] = vld1q_f32(tei);
        HR[n] = vld1q_f32(thr);
        HI[n] = vld1q_f32(thi);
    }
    const float32x4_t om = vld1q_f32(omega + d);
    for (int t = 0; t < L; t++) {
        float32x4_t xv = vld1q_f32(x + (size_t)t * D + d);
        float32x4_t acc = vmulq_f32(om, xv);
        for (int n = 0; n < N; n++) {
            float32x4_t hr = HR[n], hi = HI[n];
            float32x4_t nr = vaddq_f32(vsubq_f32(vmulq_f32(QR[n], hr), vmulq_f32(QI[n], hi)),
                                       vmulq_f32(P[n], xv));
            float32x4_t ni = vaddq_f32(vmulq_f32(QR[n], hi), vmulq_f32(QI[n], hr));
            HR[n] = nr;
            HI[n] = ni;
            acc = vaddq_f32(acc, vsubq_f32(vmulq_f32(ER[n], nr), vmulq_f32(EI[n], ni)));
        }
        vst1q_f32(y + (size_t)t * D + d, acc);
    }
    for (int n = 0; n < N; n++) {
        float thr[4], thi[4];
        vst1q_f32(thr, HR[n]);
        vst1q_f32(thi, HI[n]);
        for (int c = 0; c < 4; c++) {
            size_t i = (size_t)(d + c) * N + n;
            h[2 * i] = thr[c];
            h[2 * i + 1] = thi[c];
        }
    }
}

static void cema_scan(const float *x, int L, int D, int N, int d0, int d1, const float *p,
                      const float *q, const float *eta, const float *omega, float *h, float *y)
{
    int d = d0;
    if (N <= CEMA_MAXN)
        for (; d + 4 <= d1; d += 4) cema_quad(x, L, D, N, d, p, q, eta, omega, h, y);
    /* the last channels (fewer than four), or all of them for a large N: one channel at a
     * time is exactly the scalar code */
    if (d < d1) mg_kernels_scalar.cema_scan(x, L, D, N, d, d1, p, q, eta, omega, h, y);
}

/* ------------------------------------------------------------------ conversions */

/* The bit pattern scalar.c gives a half with exponent 31: sign, all-ones exponent, the
 * payload shifted up unchanged (FCVTL sets the quiet bit of a signalling NaN instead). */
static inline float32x4_t half_special(uint16x4_t h)
{
    uint32x4_t w = vmovl_u16(h);
    uint32x4_t bits = vorrq_u32(vshlq_n_u32(vandq_u32(w, vdupq_n_u32(0x8000)), 16),
                                vshlq_n_u32(vandq_u32(w, vdupq_n_u32(0x7fff)), 13));
    return vreinterpretq_f32_u32(vorrq_u32(bits, vdupq_n_u32(0x70000000)));
}

static void f16_to_f32(const uint16_t *x, float *y, size_t n)
{
    const uint16x8_t absmask = vdupq_n_u16(0x7fff), inf = vdupq_n_u16(0x7c00);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint16x8_t h = vld1q_u16(x + i);
        float32x4_t lo = vcvt_f32_f16(vreinterpret_f16_u16(vget_low_u16(h)));
        float32x4_t hi = vcvt_high_f32_f16(vreinterpretq_f16_u16(h));
        uint16x8_t nan = vcgtq_u16(vandq_u16(h, absmask), inf);
        if (vmaxvq_u16(nan)) { /* rare: put back the scalar NaN bits */
            uint32x4_t mlo = vmovl_u16(vget_low_u16(nan)), mhi = vmovl_high_u16(nan);
            mlo = vorrq_u32(mlo, vshlq_n_u32(mlo, 16));
            mhi = vorrq_u32(mhi, vshlq_n_u32(mhi, 16));
            lo = vbslq_f32(mlo, half_special(vget_low_u16(h)), lo);
            hi = vbslq_f32(mhi, half_special(vget_high_u16(h)), hi);
        }
        vst1q_f32(y + i, lo);
        vst1q_f32(y + i + 4, hi);
    }
    for (; i < n; i++) y[i] = mg_half_to_f32(x[i]);
}

static void bf16_to_f32(const uint16_t *x, float *y, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint16x8_t h = vld1q_u16(x + i);
        vst1q_f32(y + i, vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(h), 16)));
        vst1q_f32(y + i + 4, vreinterpretq_f32_u32(vshll_high_n_u16(h, 16)));
    }
    for (; i < n; i++) {
        uint32_t bits = (uint32_t)x[i] << 16;
        memcpy(&y[i], &bits, 4);
    }
}

/* ------------------------------------------------------------------ quantized kernels
 * (quant-impl.h): 32 bytes as two 128-bit registers and this file's 4-float vf. The int8 dot
 * products use SDOT (vdotq_s32) where the compiler targets the dot-product extension (e.g.
 * -march=armv8.2-a+dotprod), else widening multiplies (vmull_s8) and pairwise accumulation
 * (vpadalq_s16). */

#define MG_QUANT(f) mg_neon_##f
#include "quant-kernels.h"

typedef struct {
    int8x16_t lo, hi; /* values 0-15, 16-31 */
} vq;
typedef int32x4_t vi;
typedef float32x4_t vs;

static inline vq vq_load(const uint8_t *p)
{
    return (vq){vld1q_s8((const int8_t *)p), vld1q_s8((const int8_t *)p + 16)};
}
static inline void vq_store(int8_t *p, vq a)
{
    vst1q_s8(p, a.lo);
    vst1q_s8(p + 16, a.hi);
}
static inline vq vq_load_q4_0(const uint8_t *p)
{
    const uint8x16_t b = vld1q_u8(p);
    return (vq){vreinterpretq_s8_u8(vandq_u8(b, vdupq_n_u8(15))), vreinterpretq_s8_u8(vshrq_n_u8(b, 4))};
}
static inline vq vq_and(vq a, int m)
{
    const int8x16_t v = vdupq_n_s8((int8_t)m);
    return (vq){vandq_s8(a.lo, v), vandq_s8(a.hi, v)};
}
static inline vq vq_or(vq a, vq b) { return (vq){vorrq_s8(a.lo, b.lo), vorrq_s8(a.hi, b.hi)}; }
static inline vq vq_sub(vq a, int c)
{
    const int8x16_t v = vdupq_n_s8((int8_t)c);
    return (vq){vsubq_s8(a.lo, v), vsubq_s8(a.hi, v)};
}
/* logical shifts of unsigned bytes (USHL by a negative count shifts right) */
static inline int8x16_t ushl(int8x16_t a, int k)
{
    return vreinterpretq_s8_u8(vshlq_u8(vreinterpretq_u8_s8(a), vdupq_n_s8((int8_t)k)));
}
static inline vq vq_srl(vq a, int k) { return (vq){ushl(a.lo, -k), ushl(a.hi, -k)}; }
static inline vq vq_sll(vq a, int k) { return (vq){ushl(a.lo, k), ushl(a.hi, k)}; }

static inline vi vi_zero(void) { return vdupq_n_s32(0); }
static inline vi vi_first(int32_t c) { return vsetq_lane_s32(c, vdupq_n_s32(0), 0); }
/* acc + four lanes whose sum is sum_j a[j] b[j] over 16 values */
static inline vi dot16(vi acc, int8x16_t a, int8x16_t b)
{
#if defined(__ARM_FEATURE_DOTPROD)
    return vdotq_s32(acc, a, b);
#else
    acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(a), vget_low_s8(b)));
    return vpadalq_s16(acc, vmull_high_s8(a, b));
#endif
}
static inline vi vi_dot(vi acc, vq a, vq b) { return dot16(dot16(acc, a.lo, b.lo), a.hi, b.hi); }
/* a (at most 63) is the same as a signed byte */
static inline vi vi_dot_u_sc(vi acc, vq a, vq b, int s0, int s1)
{
    acc = vmlaq_n_s32(acc, dot16(vi_zero(), a.lo, b.lo), s0);
    return vmlaq_n_s32(acc, dot16(vi_zero(), a.hi, b.hi), s1);
}

static inline vs vs_zero(void) { return vdupq_n_f32(0.0f); }
static inline vs vs_fmadd_vi(vs acc, vi p, float d) { return vfmaq_n_f32(acc, vcvtq_f32_s32(p), d); }
static inline float vs_hsum(vs a) { return vaddvq_f32(a); }
static inline float half_to_f32(uint16_t h)
{
    return vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(h))), 0);
}

static inline vf vf_zero(void) { return vdupq_n_f32(0.0f); }
static inline vf vf_abs(vf a) { return vabsq_f32(a); }
static inline vf vf_fmadd(vf a, vf b, vf c) { return vfmaq_f32(c, a, b); }
static inline float vf_hsum(vf a) { return vaddvq_f32(a); }
static inline vf vf_load_f16(const uint16_t *p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }
static inline vf vf_load_bf16(const uint16_t *p)
{
    return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p), 16));
}
static inline vf vf_load_i8(const int8_t *p)
{
    int32_t bits;
    memcpy(&bits, p, 4);
    const int16x8_t h = vmovl_s8(vreinterpret_s8_s32(vdup_n_s32(bits)));
    return vcvtq_f32_s32(vmovl_s16(vget_low_s16(h)));
}
/* FCVTNS rounds to nearest even; the narrowing moves saturate */
static inline void vf_store_i8(int8_t *p, vf a)
{
    const int16x4_t h = vqmovn_s32(vcvtnq_s32_f32(a));
    const int8x8_t b = vqmovn_s16(vcombine_s16(h, h));
    const int32_t bits = vget_lane_s32(vreinterpret_s32_s8(b), 0);
    memcpy(p, &bits, 4);
}

#include "quant-impl.h"

#define MG_TABLE mg_kernels_neon
#define MG_TABLE_NAME "neon"
#include "table-impl.h"

/* quant-neon.c - the quantized kernels of the NEON table (quant-impl.h): 32 bytes as two
 * 128-bit registers, 4-float vectors. The int8 dot products use SDOT (vdotq_s32) where the
 * compiler targets the dot-product extension (e.g. -march=armv8.2-a+dotprod), else widening
 * multiplies (vmull_s8) and pairwise accumulation (vpadalq_s16). */
#include "config.h"

#include "kernels.h"
#include "quant-half.h"
#include "quant-kernels.h"

#if !defined(__aarch64__)
#error "simd/quant-neon.c is part of the AArch64 NEON table: build it for AArch64 only"
#endif

#include <arm_neon.h>

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
static inline vi vi_dot_sc(vi acc, vq a, vq b, int s0, int s1)
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

#define VF 4
typedef float32x4_t vf;
static inline vf vf_zero(void) { return vdupq_n_f32(0.0f); }
static inline vf vf_set1(float a) { return vdupq_n_f32(a); }
static inline vf vf_load(const float *p) { return vld1q_f32(p); }
static inline void vf_store(float *p, vf a) { vst1q_f32(p, a); }
static inline vf vf_add(vf a, vf b) { return vaddq_f32(a, b); }
static inline vf vf_sub(vf a, vf b) { return vsubq_f32(a, b); }
static inline vf vf_mul(vf a, vf b) { return vmulq_f32(a, b); }
static inline vf vf_max(vf a, vf b) { return vmaxq_f32(a, b); }
static inline vf vf_abs(vf a) { return vabsq_f32(a); }
static inline vf vf_fmadd(vf a, vf b, vf c) { return vfmaq_f32(c, a, b); }
static inline float vf_hsum(vf a) { return vaddvq_f32(a); }
static inline float vf_hmax(vf a) { return vmaxvq_f32(a); }
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

void mg_neon_quantize_q8_0(const float *x, void *y, int n) { quantize_q8_0(x, y, n); }
void mg_neon_quantize_q8_K(const float *x, void *y, int n) { quantize_q8_K(x, y, n); }
float mg_neon_dot_f16(const uint16_t *w, const float *x, int n) { return dot_f16(w, x, n); }
float mg_neon_dot_bf16(const uint16_t *w, const float *x, int n) { return dot_bf16(w, x, n); }
float mg_neon_dot_q8_0(const void *w, const void *xq, int n) { return dot_q8_0(w, xq, n); }
float mg_neon_dot_q4_0(const void *w, const void *xq, int n) { return dot_q4_0(w, xq, n); }
float mg_neon_dot_q4_K(const void *w, const void *xq, int n) { return dot_q4_K(w, xq, n); }
float mg_neon_dot_q6_K(const void *w, const void *xq, int n) { return dot_q6_K(w, xq, n); }
void mg_neon_dequant_q8_0(const void *w, float *y, int64_t n) { dequant_q8_0(w, y, n); }
void mg_neon_dequant_q4_0(const void *w, float *y, int64_t n) { dequant_q4_0(w, y, n); }
void mg_neon_dequant_q4_K(const void *w, float *y, int64_t n) { dequant_q4_K(w, y, n); }
void mg_neon_dequant_q6_K(const void *w, float *y, int64_t n) { dequant_q6_K(w, y, n); }

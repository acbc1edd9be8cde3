/* quant-avx2.c - the quantized kernels of the AVX2 table (quant-impl.h, on quant-x86.h's
 * 32-byte integer vocabulary and 8-float vectors). Compiled with the flags of avx2.c. */
#include "config.h"

#include "kernels.h"
#include "quant-half.h"
#include "quant-kernels.h"
#include "quant-x86.h"

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

#define VF 8
typedef __m256 vf;
static inline vf vf_zero(void) { return _mm256_setzero_ps(); }
static inline vf vf_set1(float a) { return _mm256_set1_ps(a); }
static inline vf vf_load(const float *p) { return _mm256_loadu_ps(p); }
static inline void vf_store(float *p, vf a) { _mm256_storeu_ps(p, a); }
static inline vf vf_add(vf a, vf b) { return _mm256_add_ps(a, b); }
static inline vf vf_sub(vf a, vf b) { return _mm256_sub_ps(a, b); }
static inline vf vf_mul(vf a, vf b) { return _mm256_mul_ps(a, b); }
static inline vf vf_max(vf a, vf b) { return _mm256_max_ps(a, b); }
static inline vf vf_abs(vf a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
static inline vf vf_fmadd(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
static inline float vf_hsum(vf a) { return vs_hsum(a); }
static inline float vf_hmax(vf a)
{
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}
static inline vf vf_load_f16(const uint16_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }
static inline vf vf_load_bf16(const uint16_t *p)
{
    const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}
static inline vf vf_load_i8(const int8_t *p)
{
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}
/* vcvtps2dq rounds to nearest even (MXCSR's default), the packs saturate */
static inline void vf_store_i8(int8_t *p, vf a)
{
    const __m256i i = _mm256_cvtps_epi32(a);
    const __m128i h = _mm_packs_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
    _mm_storel_epi64((__m128i *)p, _mm_packs_epi16(h, h));
}

#include "quant-impl.h"

void mg_avx2_quantize_q8_0(const float *x, void *y, int n) { quantize_q8_0(x, y, n); }
void mg_avx2_quantize_q8_K(const float *x, void *y, int n) { quantize_q8_K(x, y, n); }
float mg_avx2_dot_f16(const uint16_t *w, const float *x, int n) { return dot_f16(w, x, n); }
float mg_avx2_dot_bf16(const uint16_t *w, const float *x, int n) { return dot_bf16(w, x, n); }
float mg_avx2_dot_q8_0(const void *w, const void *xq, int n) { return dot_q8_0(w, xq, n); }
float mg_avx2_dot_q4_0(const void *w, const void *xq, int n) { return dot_q4_0(w, xq, n); }
float mg_avx2_dot_q4_K(const void *w, const void *xq, int n) { return dot_q4_K(w, xq, n); }
float mg_avx2_dot_q6_K(const void *w, const void *xq, int n) { return dot_q6_K(w, xq, n); }
void mg_avx2_dequant_q8_0(const void *w, float *y, int64_t n) { dequant_q8_0(w, y, n); }
void mg_avx2_dequant_q4_0(const void *w, float *y, int64_t n) { dequant_q4_0(w, y, n); }
void mg_avx2_dequant_q4_K(const void *w, float *y, int64_t n) { dequant_q4_K(w, y, n); }
void mg_avx2_dequant_q6_K(const void *w, float *y, int64_t n) { dequant_q6_K(w, y, n); }

/* quant-avx512.c - the quantized kernels of the AVX-512 table (quant-impl.h). Compiled with
 * the flags of avx512.c. The integer dot products use quant-x86.h's 32-byte vocabulary, as
 * the AVX2 table does (a dot product of a weight row is bound by memory bandwidth, which the
 * 256-bit loop already exceeds; vpdpbusd where compiled with AVX512-VNNI); the fp16 / bf16
 * dot products, the activation rounding and the dequantization use 16-float vectors. */
#include "config.h"

#include "kernels.h"
#include "quant-half.h"
#include "quant-kernels.h"
#include "quant-x86.h"

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

#define VF 16
typedef __m512 vf;
static inline vf vf_zero(void) { return _mm512_setzero_ps(); }
static inline vf vf_set1(float a) { return _mm512_set1_ps(a); }
static inline vf vf_load(const float *p) { return _mm512_loadu_ps(p); }
static inline void vf_store(float *p, vf a) { _mm512_storeu_ps(p, a); }
static inline vf vf_add(vf a, vf b) { return _mm512_add_ps(a, b); }
static inline vf vf_sub(vf a, vf b) { return _mm512_sub_ps(a, b); }
static inline vf vf_mul(vf a, vf b) { return _mm512_mul_ps(a, b); }
static inline vf vf_max(vf a, vf b) { return _mm512_max_ps(a, b); }
static inline vf vf_abs(vf a) { return _mm512_abs_ps(a); }
static inline vf vf_fmadd(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
static inline float vf_hsum(vf a) { return _mm512_reduce_add_ps(a); }
static inline float vf_hmax(vf a) { return _mm512_reduce_max_ps(a); }
static inline vf vf_load_f16(const uint16_t *p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p)); }
static inline vf vf_load_bf16(const uint16_t *p)
{
    const __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}
static inline vf vf_load_i8(const int8_t *p)
{
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
}
/* vcvtps2dq rounds to nearest even (MXCSR's default), vpmovsdb saturates */
static inline void vf_store_i8(int8_t *p, vf a)
{
    _mm_storeu_si128((__m128i *)p, _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(a)));
}

#include "quant-impl.h"

void mg_avx512_quantize_q8_0(const float *x, void *y, int n) { quantize_q8_0(x, y, n); }
void mg_avx512_quantize_q8_K(const float *x, void *y, int n) { quantize_q8_K(x, y, n); }
float mg_avx512_dot_f16(const uint16_t *w, const float *x, int n) { return dot_f16(w, x, n); }
float mg_avx512_dot_bf16(const uint16_t *w, const float *x, int n) { return dot_bf16(w, x, n); }
float mg_avx512_dot_q8_0(const void *w, const void *xq, int n) { return dot_q8_0(w, xq, n); }
float mg_avx512_dot_q4_0(const void *w, const void *xq, int n) { return dot_q4_0(w, xq, n); }
float mg_avx512_dot_q4_K(const void *w, const void *xq, int n) { return dot_q4_K(w, xq, n); }
float mg_avx512_dot_q6_K(const void *w, const void *xq, int n) { return dot_q6_K(w, xq, n); }
void mg_avx512_dequant_q8_0(const void *w, float *y, int64_t n) { dequant_q8_0(w, y, n); }
void mg_avx512_dequant_q4_0(const void *w, float *y, int64_t n) { dequant_q4_0(w, y, n); }
void mg_avx512_dequant_q4_K(const void *w, float *y, int64_t n) { dequant_q4_K(w, y, n); }
void mg_avx512_dequant_q6_K(const void *w, float *y, int64_t n) { dequant_q6_K(w, y, n); }

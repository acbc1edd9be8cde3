/* quant-x86.h - the integer vocabulary of quant-impl.h on x86 (32 bytes in one 256-bit
 * register), shared by avx2.c and avx512.c (which include it with their flags).
 *
 * vi_dot: _mm256_maddubs_epi16 multiplies unsigned by signed bytes, so a's sign moves onto b
 * (|a| unsigned, b sign(a)); pairs of products (|.| <= 2 * 128 * 127, no saturation) are
 * then summed into int32 by _mm256_madd_epi16 with ones, or with the sub-block scales for
 * vi_dot_u_sc (whose a is unsigned already). With AVX512-VNNI (compiled with -mavx512vnni,
 * e.g. CFLAGS=-march=native on such a CPU) vpdpbusd does the products and the sums in one
 * instruction. */
#ifndef MG_QUANT_X86_H
#define MG_QUANT_X86_H

#include <immintrin.h>
#include <stdint.h>

typedef __m256i vq;
typedef __m256i vi;
typedef __m256 vs;

static inline vq vq_load(const uint8_t *p) { return _mm256_loadu_si256((const __m256i *)p); }
static inline void vq_store(int8_t *p, vq a) { _mm256_storeu_si256((__m256i *)p, a); }
static inline vq vq_load_q4_0(const uint8_t *p)
{
    const __m128i b = _mm_loadu_si128((const __m128i *)p), m = _mm_set1_epi8(15);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(b, 4), m), _mm_and_si128(b, m));
}
static inline vq vq_and(vq a, int m) { return _mm256_and_si256(a, _mm256_set1_epi8((char)m)); }
static inline vq vq_or(vq a, vq b) { return _mm256_or_si256(a, b); }
static inline vq vq_sub(vq a, int c) { return _mm256_sub_epi8(a, _mm256_set1_epi8((char)c)); }
/* a 16-bit shift, then the bits that crossed from the neighbouring byte cleared */
static inline vq vq_srl(vq a, int k)
{
    return vq_and(_mm256_srl_epi16(a, _mm_cvtsi32_si128(k)), 0xff >> k);
}
/* a[j] < 2^(8-k): no bit crosses into the next byte */
static inline vq vq_sll(vq a, int k) { return _mm256_sll_epi16(a, _mm_cvtsi32_si128(k)); }

static inline vi vi_zero(void) { return _mm256_setzero_si256(); }
static inline vi vi_first(int32_t c) { return _mm256_setr_epi32(c, 0, 0, 0, 0, 0, 0, 0); }

#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
static inline vi vi_dot(vi acc, vq a, vq b)
{
    return _mm256_dpbusd_epi32(acc, _mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a));
}
/* lanes 0-3 hold values 0-15, lanes 4-7 values 16-31 */
static inline vi vi_dot_u_sc(vi acc, vq a, vq b, int s0, int s1)
{
    const vi p = _mm256_dpbusd_epi32(vi_zero(), a, b);
    return _mm256_add_epi32(acc, _mm256_mullo_epi32(p, _mm256_setr_epi32(s0, s0, s0, s0, s1, s1, s1, s1)));
}
#else
static inline vi vi_dot(vi acc, vq a, vq b)
{
    const __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_set1_epi16(1)));
}
/* a is unsigned for vpmaddubsw as it is (pairs at most 2 * 63 * 127, no saturation);
 * int16 lanes 0-7 hold the pairs of values 0-15, lanes 8-15 those of values 16-31 */
static inline vi vi_dot_u_sc(vi acc, vq a, vq b, int s0, int s1)
{
    const __m256i p = _mm256_maddubs_epi16(a, b);
    const __m256i sc = _mm256_set_m128i(_mm_set1_epi16((short)s1), _mm_set1_epi16((short)s0));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(p, sc));
}
#endif

static inline vs vs_zero(void) { return _mm256_setzero_ps(); }
static inline vs vs_fmadd_vi(vs acc, vi p, float d)
{
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(d), acc);
}
static inline float vs_hsum(vs a)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
static inline float half_to_f32(uint16_t h) { return _cvtsh_ss(h); }

#endif

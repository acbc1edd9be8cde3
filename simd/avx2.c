/* avx2.c - the AVX2 + FMA + F16C kernel table (8 floats per vector).
 *
 * Compiled on its own with -mavx2 -mfma -mf16c (and only this file is), so it must only be
 * reached through simd/cpu.c after the CPU and OS checks. Every kernel computes what the
 * scalar reference (scalar.c) defines; see kernels.h. This file holds the vocabulary the
 * *-impl.h headers are written in (each header lists what it uses), the vector exp and
 * sin/cos, the CEMA scan and the conversions. Notes on accuracy:
 *  - norm moments are accumulated in double like the reference, and the output uses the
 *    reference's fp32 operations in its order: the norms agree with it to an ulp (identical
 *    in all the tests);
 *  - mul, add, scale, affine_rows and the conversions are bit-identical to the reference;
 *  - exp (softmax, silu) and sin/cos (rope) are the approximations documented in vecmath.h;
 *  - complex_mul, rope's rotation and cema_scan use FMA. cema_scan gives the same bits
 *    whatever L and however the channels are split among threads; every remainder is a
 *    masked vector, so an element's result does not depend on its position either. */
#include "config.h"

#include "kernels.h"
#include "vecmath.h"

#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* No contraction of a*b + c into FMA where this file does not write one: the remainders and
 * affine_rows round like the reference. (GCC does not contract in ISO C mode, -std=c11.) */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif


/* ------------------------------------------------------------------ helpers */

/* lanes 0 .. k-1 set (0 <= k <= 8) */
static const int32_t mask_table[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
static inline __m256i tail_mask(int k) { return _mm256_loadu_si256((const __m256i *)(mask_table + 8 - k)); }

static inline double hsum_pd(__m256d v)
{
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

static inline float hmax_ps(__m256 v)
{
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

/* exp of 8 floats; see vecmath.h for the method and its error bound. */
static inline __m256 exp8(__m256 x)
{
    x = _mm256_min_ps(_mm256_set1_ps(MG_EXP_XMAX), x); /* operand order keeps NaN */
    x = _mm256_max_ps(_mm256_set1_ps(MG_EXP_XMIN), x);
    __m256 fn = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(MG_LOG2E)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(fn, _mm256_set1_ps(MG_EXP_C1), x);
    r = _mm256_fnmadd_ps(fn, _mm256_set1_ps(MG_EXP_C2), r);
    __m256 r2 = _mm256_mul_ps(r, r);
    __m256 p = _mm256_set1_ps(MG_EXP_P0);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(MG_EXP_P1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(MG_EXP_P2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(MG_EXP_P3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(MG_EXP_P4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(MG_EXP_P5));
    p = _mm256_fmadd_ps(p, r2, r);
    p = _mm256_add_ps(p, _mm256_set1_ps(1.0f));
    /* 2^n as 2^n1 * 2^n2 (n in [-150, 128], each half in [-75, 64]: normal), so that the
     * product rounds once, to a subnormal or to infinity where the true result does */
    __m256i n = _mm256_cvtps_epi32(fn);
    __m256i n1 = _mm256_srai_epi32(n, 1), n2 = _mm256_sub_epi32(n, n1);
    __m256i bias = _mm256_set1_epi32(127);
    __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
    __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
    return _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
}

/* sin and cos of 8 angles with |th| <= MG_TRIG_XMAX; see vecmath.h. */
static inline void sincos8(__m256 th, __m256 *s, __m256 *c)
{
    __m256 fk = _mm256_round_ps(_mm256_mul_ps(th, _mm256_set1_ps(MG_2_PI)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(fk, _mm256_set1_ps(MG_PIO2_1), th);
    r = _mm256_fnmadd_ps(fk, _mm256_set1_ps(MG_PIO2_2), r);
    r = _mm256_fnmadd_ps(fk, _mm256_set1_ps(MG_PIO2_3), r);
    __m256 z = _mm256_mul_ps(r, r);
    __m256 ps = _mm256_set1_ps(MG_SIN_S0);
    ps = _mm256_fmadd_ps(ps, z, _mm256_set1_ps(MG_SIN_S1));
    ps = _mm256_fmadd_ps(ps, z, _mm256_set1_ps(MG_SIN_S2));
    ps = _mm256_fmadd_ps(_mm256_mul_ps(ps, z), r, r);
    __m256 pc = _mm256_set1_ps(MG_COS_K0);
    pc = _mm256_fmadd_ps(pc, z, _mm256_set1_ps(MG_COS_K1));
    pc = _mm256_fmadd_ps(pc, z, _mm256_set1_ps(MG_COS_K2));
    pc = _mm256_fmadd_ps(_mm256_mul_ps(pc, z), z, _mm256_fnmadd_ps(_mm256_set1_ps(0.5f), z, _mm256_set1_ps(1.0f)));
    __m256i k = _mm256_cvtps_epi32(fk);
    __m256 swap = _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(k, _mm256_set1_epi32(1)), _mm256_set1_epi32(1)));
    __m256 sv = _mm256_blendv_ps(ps, pc, swap), cv = _mm256_blendv_ps(pc, ps, swap);
    __m256 ssign = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_and_si256(k, _mm256_set1_epi32(2)), 30));
    __m256 csign = _mm256_castsi256_ps(_mm256_slli_epi32(
        _mm256_and_si256(_mm256_add_epi32(k, _mm256_set1_epi32(1)), _mm256_set1_epi32(2)), 30));
    *s = _mm256_xor_ps(sv, ssign);
    *c = _mm256_xor_ps(cv, csign);
}

/* ------------------------------------------------------------------ vocabulary */

/* eight floats per vector (train-impl.h, elementwise-impl.h, complex-impl.h, norms-impl.h,
 * cema-impl.h) */
#define VF 8
typedef __m256 vf;
#include "vf-arith.h" /* vf_add, vf_sub, vf_mul, vf_div */
static inline vf vf_set1(float a) { return _mm256_set1_ps(a); }
static inline vf vf_sqrt(vf a) { return _mm256_sqrt_ps(a); }
static inline vf vf_exp(vf x) { return exp8(x); }
static inline vf vf_load(const float *p) { return _mm256_loadu_ps(p); }
static inline void vf_store(float *p, vf v) { _mm256_storeu_ps(p, v); }
static inline vf vf_load_part(const float *p, int k) { return _mm256_maskload_ps(p, tail_mask(k)); }
static inline void vf_store_part(float *p, vf v, int k) { _mm256_maskstore_ps(p, tail_mask(k), v); }
static inline vf vf_max(vf a, vf b) { return _mm256_max_ps(a, b); } /* a > b ? a : b */
static inline float vf_hmax(vf v) { return hmax_ps(v); }
static inline vf vf_part(vf v, int k) { return _mm256_and_ps(v, _mm256_castsi256_ps(tail_mask(k))); }
static inline vf vf_dup_even(vf v) { return _mm256_moveldup_ps(v); }
static inline vf vf_dup_odd(vf v) { return _mm256_movehdup_ps(v); }
static inline vf vf_swap_pairs(vf v) { return _mm256_permute_ps(v, 0xB1); }
static inline vf vf_muladdsub(vf a, vf b, vf c) { return _mm256_fmaddsub_ps(a, b, c); }
static inline vf vf_fmadd(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
static inline vf vf_fnmadd(vf a, vf b, vf c) { return _mm256_fnmadd_ps(a, b, c); }
static inline vf vf_load_pairs(const float *p, int k)
{
    const __m128i v = k == VF / 2 ? _mm_loadu_si128((const __m128i *)p)
                                  : _mm_castps_si128(_mm_maskload_ps(p, _mm256_castsi256_si128(tail_mask(k))));
    return _mm256_castsi256_ps(_mm256_cvtepu32_epi64(v));
}
static inline vf vf_neg_even(vf v)
{
    return _mm256_xor_ps(v, _mm256_castsi256_ps(_mm256_setr_epi32(INT32_MIN, 0, INT32_MIN, 0, INT32_MIN, 0, INT32_MIN, 0)));
}
static inline vf vf_odd_negzero(vf v)
{
    return _mm256_or_ps(v, _mm256_castsi256_ps(_mm256_setr_epi32(0, INT32_MIN, 0, INT32_MIN, 0, INT32_MIN, 0, INT32_MIN)));
}
static inline void vf_dup_pairs(vf v, vf *lo, vf *hi)
{
    const __m256 l = _mm256_unpacklo_ps(v, v), h = _mm256_unpackhi_ps(v, v);
    *lo = _mm256_permute2f128_ps(l, h, 0x20);
    *hi = _mm256_permute2f128_ps(l, h, 0x31);
}
/* sincos8 where every |angle| <= MG_TRIG_XMAX, else (a huge angle or NaN) libm's */
static inline void vf_sincos(vf th, vf *s, vf *c)
{
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 big = _mm256_cmp_ps(_mm256_and_ps(th, absmask), _mm256_set1_ps(MG_TRIG_XMAX), _CMP_NLE_UQ);
    if (_mm256_testz_ps(big, big)) {
        sincos8(th, s, c);
        return;
    }
    float t[VF], sv[VF], cv[VF];
    _mm256_storeu_ps(t, th);
    for (int i = 0; i < VF; i++) {
        sv[i] = sinf(t[i]);
        cv[i] = cosf(t[i]);
    }
    *s = _mm256_loadu_ps(sv);
    *c = _mm256_loadu_ps(cv);
}

/* eight floats summed lane by lane in double (elementwise-impl.h) */
typedef struct {
    __m256d lo, hi;
} vfd;
static inline vfd vfd_zero(void) { return (vfd){_mm256_setzero_pd(), _mm256_setzero_pd()}; }
static inline vfd vfd_addf(vfd s, vf v)
{
    s.lo = _mm256_add_pd(s.lo, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
    s.hi = _mm256_add_pd(s.hi, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
    return s;
}
static inline double vfd_sum(vfd s) { return hsum_pd(_mm256_add_pd(s.lo, s.hi)); }

/* four doubles per vector (norm-backward-impl.h) */
#define VD 4
typedef __m256d vd;
static inline __m128i mask4(int k) { return _mm256_castsi256_si128(tail_mask(k)); }
static inline vd vd_set1(double a) { return _mm256_set1_pd(a); }
static inline vd vd_add(vd a, vd b) { return _mm256_add_pd(a, b); }
static inline vd vd_sub(vd a, vd b) { return _mm256_sub_pd(a, b); }
static inline vd vd_mul(vd a, vd b) { return _mm256_mul_pd(a, b); }
static inline vd vd_loadf(const float *p) { return _mm256_cvtps_pd(_mm_loadu_ps(p)); }
static inline vd vd_load(const double *p) { return _mm256_loadu_pd(p); }
static inline void vd_store(double *p, vd v) { _mm256_storeu_pd(p, v); }
static inline void vd_storef(float *p, vd v) { _mm_storeu_ps(p, _mm256_cvtpd_ps(v)); }
static inline double vd_hsum(vd v) { return hsum_pd(v); }
static inline vd vd_loadf_part(const float *p, int k) { return _mm256_cvtps_pd(_mm_maskload_ps(p, mask4(k))); }
static inline vd vd_load_part(const double *p, int k) { return _mm256_maskload_pd(p, _mm256_cvtepi32_epi64(mask4(k))); }
static inline void vd_store_part(double *p, vd v, int k) { _mm256_maskstore_pd(p, _mm256_cvtepi32_epi64(mask4(k)), v); }
static inline void vd_storef_part(float *p, vd v, int k) { _mm_maskstore_ps(p, mask4(k), _mm256_cvtpd_ps(v)); }

/* sum x and sum (x - mean)^2 of n floats, in double (norms-impl.h) */
static double sum_d(const float *x, int n)
{
    __m256d a0 = _mm256_setzero_pd(), a1 = a0, a2 = a0, a3 = a0;
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        a0 = _mm256_add_pd(a0, _mm256_cvtps_pd(_mm_loadu_ps(x + i)));
        a1 = _mm256_add_pd(a1, _mm256_cvtps_pd(_mm_loadu_ps(x + i + 4)));
        a2 = _mm256_add_pd(a2, _mm256_cvtps_pd(_mm_loadu_ps(x + i + 8)));
        a3 = _mm256_add_pd(a3, _mm256_cvtps_pd(_mm_loadu_ps(x + i + 12)));
    }
    for (; i + 4 <= n; i += 4) a0 = _mm256_add_pd(a0, _mm256_cvtps_pd(_mm_loadu_ps(x + i)));
    double s = hsum_pd(_mm256_add_pd(_mm256_add_pd(a0, a1), _mm256_add_pd(a2, a3)));
    for (; i < n; i++) s += x[i];
    return s;
}

static double sumdev_d(const float *x, int n, double mean)
{
    __m256d a0 = _mm256_setzero_pd(), a1 = a0, a2 = a0, a3 = a0, m = _mm256_set1_pd(mean);
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256d v0 = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + i)), m);
        __m256d v1 = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + i + 4)), m);
        __m256d v2 = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + i + 8)), m);
        __m256d v3 = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + i + 12)), m);
        a0 = _mm256_fmadd_pd(v0, v0, a0);
        a1 = _mm256_fmadd_pd(v1, v1, a1);
        a2 = _mm256_fmadd_pd(v2, v2, a2);
        a3 = _mm256_fmadd_pd(v3, v3, a3);
    }
    for (; i + 4 <= n; i += 4) {
        __m256d v = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + i)), m);
        a0 = _mm256_fmadd_pd(v, v, a0);
    }
    double s = hsum_pd(_mm256_add_pd(_mm256_add_pd(a0, a1), _mm256_add_pd(a2, a3)));
    for (; i < n; i++) s += ((double)x[i] - mean) * ((double)x[i] - mean);
    return s;
}

/* ------------------------------------------------------------------ kernels written once */

#include "norms-impl.h"
#include "elementwise-impl.h"
#include "complex-impl.h"
#include "train-impl.h"
#include "norm-backward-impl.h"
#include "cema-impl.h"

/* ------------------------------------------------------------------ conversions */

/* vcvtph2ps converts every half exactly (subnormals included, MXCSR.DAZ not consulted) but
 * quiets signalling NaNs; those lanes are rebuilt from the bits so the payload is kept as the
 * reference keeps it. */
static inline __m256 half8(__m128i hv)
{
    __m256 f = _mm256_cvtph_ps(hv);
    __m256 nan = _mm256_cmp_ps(f, f, _CMP_UNORD_Q);
    if (_mm256_testz_ps(nan, nan)) return f;
    __m256i h = _mm256_cvtepu16_epi32(hv);
    __m256i bits = _mm256_or_si256(
        _mm256_or_si256(_mm256_slli_epi32(_mm256_and_si256(h, _mm256_set1_epi32(0x7fff)), 13),
                        _mm256_set1_epi32(0x70000000)),
        _mm256_slli_epi32(_mm256_and_si256(h, _mm256_set1_epi32(0x8000)), 16));
    return _mm256_blendv_ps(f, _mm256_castsi256_ps(bits), nan);
}

static void f16_to_f32(const uint16_t *x, float *y, size_t n)
{
    size_t i = 0;
    for (; i + VF <= n; i += VF) _mm256_storeu_ps(y + i, half8(_mm_loadu_si128((const __m128i *)(x + i))));
    if (i < n) {
        uint16_t hb[VF] = {0};
        float fb[VF];
        memcpy(hb, x + i, sizeof(uint16_t) * (n - i));
        _mm256_storeu_ps(fb, half8(_mm_loadu_si128((const __m128i *)hb)));
        memcpy(y + i, fb, sizeof(float) * (n - i));
    }
}

static void bf16_to_f32(const uint16_t *x, float *y, size_t n)
{
    size_t i = 0;
    for (; i + VF <= n; i += VF) {
        __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(x + i)));
        _mm256_storeu_si256((__m256i *)(y + i), _mm256_slli_epi32(v, 16));
    }
    for (; i < n; i++) {
        uint32_t bits = (uint32_t)x[i] << 16;
        memcpy(&y[i], &bits, 4);
    }
}

/* ------------------------------------------------------------------ test hooks */

/* The vectorized exp and silu over n floats, for tests/test-kernels.c (call only where the
 * avx2 table is usable). */
void mg_avx2_exp(const float *x, float *y, size_t n);
void mg_avx2_exp(const float *x, float *y, size_t n)
{
    size_t i = 0;
    for (; i + VF <= n; i += VF) _mm256_storeu_ps(y + i, exp8(_mm256_loadu_ps(x + i)));
    if (i < n) {
        const __m256i msk = tail_mask((int)(n - i));
        _mm256_maskstore_ps(y + i, msk, exp8(_mm256_maskload_ps(x + i, msk)));
    }
}

/* ------------------------------------------------------------------ quantized kernels
 * (quant-impl.h, over quant-x86.h's 32-byte integer vocabulary and this file's vf) */

#include "quant-half.h"
#define MG_QUANT(f) mg_avx2_##f
#define MG_QUANT_FEW_REGS /* 16 ymm registers */
#include "quant-kernels.h"
#include "quant-x86.h"

static inline vf vf_zero(void) { return _mm256_setzero_ps(); }
static inline vf vf_abs(vf a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
static inline float vf_hsum(vf a) { return vs_hsum(a); }
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

#define MG_TABLE mg_kernels_avx2
#define MG_TABLE_NAME "avx2"
#include "table-impl.h"

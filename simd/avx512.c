/* avx512.c - the AVX-512 (F, BW, DQ, VL) + FMA + F16C kernel table (16 floats per vector).
 *
 * Compiled on its own with -mavx512f -mavx512bw -mavx512dq -mavx512vl -mfma -mf16c (and only
 * this file is), so it must only be reached through simd/cpu.c after the CPU and OS checks.
 * The algorithms of avx2.c, twice as wide: this file holds the vocabulary the *-impl.h
 * headers are written in (each header lists what it uses), the vector exp and sin/cos, the
 * CEMA scan and the conversions. exp, silu and rope's sin/cos give the same bits as the AVX2
 * table (exp scales with vscalefps, which rounds once like avx2.c's two-step scaling); norms,
 * softmax and cema_scan sum in another order, so they differ from it by roundings. */
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

/* lanes 0 .. k-1 (0 <= k <= 16) */
static inline __mmask16 tail_mask(int k) { return (__mmask16)((1u << k) - 1u); }

/* exp of 16 floats; see vecmath.h for the method and its error bound. */
static inline __m512 exp16(__m512 x)
{
    x = _mm512_min_ps(_mm512_set1_ps(MG_EXP_XMAX), x); /* operand order keeps NaN */
    x = _mm512_max_ps(_mm512_set1_ps(MG_EXP_XMIN), x);
    __m512 fn = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(MG_LOG2E)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(fn, _mm512_set1_ps(MG_EXP_C1), x);
    r = _mm512_fnmadd_ps(fn, _mm512_set1_ps(MG_EXP_C2), r);
    __m512 r2 = _mm512_mul_ps(r, r);
    __m512 p = _mm512_set1_ps(MG_EXP_P0);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(MG_EXP_P1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(MG_EXP_P2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(MG_EXP_P3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(MG_EXP_P4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(MG_EXP_P5));
    p = _mm512_fmadd_ps(p, r2, r);
    p = _mm512_add_ps(p, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, fn); /* p * 2^fn, rounded once (subnormal, inf) */
}

/* sin and cos of 16 angles with |th| <= MG_TRIG_XMAX; see vecmath.h. */
static inline void sincos16(__m512 th, __m512 *s, __m512 *c)
{
    __m512 fk = _mm512_roundscale_ps(_mm512_mul_ps(th, _mm512_set1_ps(MG_2_PI)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(fk, _mm512_set1_ps(MG_PIO2_1), th);
    r = _mm512_fnmadd_ps(fk, _mm512_set1_ps(MG_PIO2_2), r);
    r = _mm512_fnmadd_ps(fk, _mm512_set1_ps(MG_PIO2_3), r);
    __m512 z = _mm512_mul_ps(r, r);
    __m512 ps = _mm512_set1_ps(MG_SIN_S0);
    ps = _mm512_fmadd_ps(ps, z, _mm512_set1_ps(MG_SIN_S1));
    ps = _mm512_fmadd_ps(ps, z, _mm512_set1_ps(MG_SIN_S2));
    ps = _mm512_fmadd_ps(_mm512_mul_ps(ps, z), r, r);
    __m512 pc = _mm512_set1_ps(MG_COS_K0);
    pc = _mm512_fmadd_ps(pc, z, _mm512_set1_ps(MG_COS_K1));
    pc = _mm512_fmadd_ps(pc, z, _mm512_set1_ps(MG_COS_K2));
    pc = _mm512_fmadd_ps(_mm512_mul_ps(pc, z), z, _mm512_fnmadd_ps(_mm512_set1_ps(0.5f), z, _mm512_set1_ps(1.0f)));
    __m512i k = _mm512_cvtps_epi32(fk);
    __mmask16 swap = _mm512_test_epi32_mask(k, _mm512_set1_epi32(1));
    __m512 sv = _mm512_mask_blend_ps(swap, ps, pc), cv = _mm512_mask_blend_ps(swap, pc, ps);
    __m512i ssign = _mm512_slli_epi32(_mm512_and_si512(k, _mm512_set1_epi32(2)), 30);
    __m512i csign = _mm512_slli_epi32(_mm512_and_si512(_mm512_add_epi32(k, _mm512_set1_epi32(1)), _mm512_set1_epi32(2)), 30);
    *s = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(sv), ssign));
    *c = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(cv), csign));
}

/* 16 floats to two vectors of 8 doubles */
static inline __m512d lo_pd(__m512 v) { return _mm512_cvtps_pd(_mm512_castps512_ps256(v)); }
static inline __m512d hi_pd(__m512 v) { return _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1)); }


/* ------------------------------------------------------------------ vocabulary */

/* sixteen floats per vector (train-impl.h, elementwise-impl.h, complex-impl.h, norms-impl.h,
 * cema-impl.h) */
#define VF 16
typedef __m512 vf;
#include "vf-arith.h" /* vf_add, vf_sub, vf_mul, vf_div */
static inline vf vf_set1(float a) { return _mm512_set1_ps(a); }
static inline vf vf_sqrt(vf a) { return _mm512_sqrt_ps(a); }
static inline vf vf_exp(vf x) { return exp16(x); }
static inline vf vf_load(const float *p) { return _mm512_loadu_ps(p); }
static inline void vf_store(float *p, vf v) { _mm512_storeu_ps(p, v); }
static inline vf vf_load_part(const float *p, int k) { return _mm512_maskz_loadu_ps(tail_mask(k), p); }
static inline void vf_store_part(float *p, vf v, int k) { _mm512_mask_storeu_ps(p, tail_mask(k), v); }
static inline vf vf_max(vf a, vf b) { return _mm512_max_ps(a, b); } /* a > b ? a : b */
static inline float vf_hmax(vf v) { return _mm512_reduce_max_ps(v); }
static inline vf vf_part(vf v, int k) { return _mm512_maskz_mov_ps(tail_mask(k), v); }
static inline vf vf_dup_even(vf v) { return _mm512_moveldup_ps(v); }
static inline vf vf_dup_odd(vf v) { return _mm512_movehdup_ps(v); }
static inline vf vf_swap_pairs(vf v) { return _mm512_permute_ps(v, 0xB1); }
static inline vf vf_muladdsub(vf a, vf b, vf c) { return _mm512_fmaddsub_ps(a, b, c); }
static inline vf vf_fmadd(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
static inline vf vf_fnmadd(vf a, vf b, vf c) { return _mm512_fnmadd_ps(a, b, c); }
static inline vf vf_load_pairs(const float *p, int k)
{
    const __m256i v = k == VF / 2 ? _mm256_loadu_si256((const __m256i *)p)
                                  : _mm256_maskz_loadu_epi32((__mmask8)tail_mask(k), p);
    return _mm512_castsi512_ps(_mm512_cvtepu32_epi64(v));
}
static inline vf vf_neg_even(vf v) { return _mm512_xor_ps(v, _mm512_castsi512_ps(_mm512_set1_epi64(0x80000000))); }
static inline vf vf_odd_negzero(vf v)
{
    return _mm512_or_ps(v, _mm512_castsi512_ps(_mm512_set1_epi64((int64_t)0x8000000000000000ull)));
}
static inline void vf_dup_pairs(vf v, vf *lo, vf *hi)
{
    const __m512i dup_lo = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    const __m512i dup_hi = _mm512_setr_epi32(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
    *lo = _mm512_permutexvar_ps(dup_lo, v);
    *hi = _mm512_permutexvar_ps(dup_hi, v);
}
/* sincos16 where every |angle| <= MG_TRIG_XMAX, else (a huge angle or NaN) libm's */
static inline void vf_sincos(vf th, vf *s, vf *c)
{
    if (!_mm512_cmp_ps_mask(_mm512_abs_ps(th), _mm512_set1_ps(MG_TRIG_XMAX), _CMP_NLE_UQ)) {
        sincos16(th, s, c);
        return;
    }
    float t[VF], sv[VF], cv[VF];
    _mm512_storeu_ps(t, th);
    for (int i = 0; i < VF; i++) {
        sv[i] = sinf(t[i]);
        cv[i] = cosf(t[i]);
    }
    *s = _mm512_loadu_ps(sv);
    *c = _mm512_loadu_ps(cv);
}

/* sixteen floats summed lane by lane in double (elementwise-impl.h) */
typedef struct {
    __m512d lo, hi;
} vfd;
static inline vfd vfd_zero(void) { return (vfd){_mm512_setzero_pd(), _mm512_setzero_pd()}; }
static inline vfd vfd_addf(vfd s, vf v) { return (vfd){_mm512_add_pd(s.lo, lo_pd(v)), _mm512_add_pd(s.hi, hi_pd(v))}; }
static inline double vfd_sum(vfd s) { return _mm512_reduce_add_pd(_mm512_add_pd(s.lo, s.hi)); }

/* eight doubles per vector (norm-backward-impl.h) */
#define VD 8
typedef __m512d vd;
static inline vd vd_set1(double a) { return _mm512_set1_pd(a); }
static inline vd vd_add(vd a, vd b) { return _mm512_add_pd(a, b); }
static inline vd vd_sub(vd a, vd b) { return _mm512_sub_pd(a, b); }
static inline vd vd_mul(vd a, vd b) { return _mm512_mul_pd(a, b); }
static inline vd vd_loadf(const float *p) { return _mm512_cvtps_pd(_mm256_loadu_ps(p)); }
static inline vd vd_load(const double *p) { return _mm512_loadu_pd(p); }
static inline void vd_store(double *p, vd v) { _mm512_storeu_pd(p, v); }
static inline void vd_storef(float *p, vd v) { _mm256_storeu_ps(p, _mm512_cvtpd_ps(v)); }
static inline double vd_hsum(vd v) { return _mm512_reduce_add_pd(v); }
static inline vd vd_loadf_part(const float *p, int k) { return _mm512_cvtps_pd(_mm256_maskz_loadu_ps((__mmask8)tail_mask(k), p)); }
static inline vd vd_load_part(const double *p, int k) { return _mm512_maskz_loadu_pd((__mmask8)tail_mask(k), p); }
static inline void vd_store_part(double *p, vd v, int k) { _mm512_mask_storeu_pd(p, (__mmask8)tail_mask(k), v); }
static inline void vd_storef_part(float *p, vd v, int k) { _mm256_mask_storeu_ps(p, (__mmask8)tail_mask(k), _mm512_cvtpd_ps(v)); }

/* sum x and sum (x - mean)^2 of n floats, in double; masked lanes load as 0 (norms-impl.h) */
static double sum_d(const float *x, int n)
{
    __m512d a0 = _mm512_setzero_pd(), a1 = a0;
    for (int i = 0; i < n; i += VF) {
        __m512 v = _mm512_maskz_loadu_ps(tail_mask(n - i < VF ? n - i : VF), x + i);
        a0 = _mm512_add_pd(a0, lo_pd(v));
        a1 = _mm512_add_pd(a1, hi_pd(v));
    }
    return _mm512_reduce_add_pd(_mm512_add_pd(a0, a1));
}

static double sumdev_d(const float *x, int n, double mean)
{
    __m512d a0 = _mm512_setzero_pd(), a1 = a0, m = _mm512_set1_pd(mean);
    for (int i = 0; i < n; i += VF) {
        __mmask16 k = tail_mask(n - i < VF ? n - i : VF);
        __m512 v = _mm512_maskz_loadu_ps(k, x + i);
        __m512d l = _mm512_maskz_sub_pd((__mmask8)k, lo_pd(v), m);
        __m512d h = _mm512_maskz_sub_pd((__mmask8)(k >> 8), hi_pd(v), m);
        a0 = _mm512_fmadd_pd(l, l, a0);
        a1 = _mm512_fmadd_pd(h, h, a1);
    }
    return _mm512_reduce_add_pd(_mm512_add_pd(a0, a1));
}

/* ------------------------------------------------------------------ kernels written once */

#include "norms-impl.h"
#include "elementwise-impl.h"
#include "complex-impl.h"
#include "train-impl.h"
#include "norm-backward-impl.h"
#include "cema-impl.h"

/* ------------------------------------------------------------------ conversions */

/* vcvtph2ps converts every half exactly but quiets signalling NaNs; those lanes are rebuilt
 * from the bits so the payload is kept as the reference keeps it. */
static inline __m512 half16(__m256i hv)
{
    __m512 f = _mm512_cvtph_ps(hv);
    __mmask16 nan = _mm512_cmp_ps_mask(f, f, _CMP_UNORD_Q);
    if (!nan) return f;
    __m512i h = _mm512_cvtepu16_epi32(hv);
    __m512i bits = _mm512_or_si512(
        _mm512_or_si512(_mm512_slli_epi32(_mm512_and_si512(h, _mm512_set1_epi32(0x7fff)), 13),
                        _mm512_set1_epi32(0x70000000)),
        _mm512_slli_epi32(_mm512_and_si512(h, _mm512_set1_epi32(0x8000)), 16));
    return _mm512_mask_blend_ps(nan, f, _mm512_castsi512_ps(bits));
}

static void f16_to_f32(const uint16_t *x, float *y, size_t n)
{
    size_t i = 0;
    for (; i + VF <= n; i += VF) _mm512_storeu_ps(y + i, half16(_mm256_loadu_si256((const __m256i *)(x + i))));
    if (i < n) {
        const __mmask16 k = tail_mask((int)(n - i));
        _mm512_mask_storeu_ps(y + i, k, half16(_mm256_maskz_loadu_epi16(k, x + i)));
    }
}

static void bf16_to_f32(const uint16_t *x, float *y, size_t n)
{
    size_t i = 0;
    for (; i + VF <= n; i += VF) {
        __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(x + i)));
        _mm512_storeu_si512(y + i, _mm512_slli_epi32(v, 16));
    }
    if (i < n) {
        const __mmask16 k = tail_mask((int)(n - i));
        __m512i v = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(k, x + i));
        _mm512_mask_storeu_epi32(y + i, k, _mm512_slli_epi32(v, 16));
    }
}

/* ------------------------------------------------------------------ test hooks */

/* The vectorized exp over n floats, for tests/test-kernels.c (call only where the avx512
 * table is usable). */
void mg_avx512_exp(const float *x, float *y, size_t n);
void mg_avx512_exp(const float *x, float *y, size_t n)
{
    for (size_t i = 0; i < n; i += VF) {
        const __mmask16 k = tail_mask(n - i < VF ? (int)(n - i) : VF);
        _mm512_mask_storeu_ps(y + i, k, exp16(_mm512_maskz_loadu_ps(k, x + i)));
    }
}

/* ------------------------------------------------------------------ quantized kernels
 * (quant-impl.h). The integer dot products use quant-x86.h's 32-byte vocabulary, as the AVX2
 * table does (a dot product of a weight row is bound by memory bandwidth, which the 256-bit
 * loop already exceeds; vpdpbusd where compiled with AVX512-VNNI); the fp16 / bf16 dot
 * products, the activation rounding and the dequantization use this file's 16-float vf. */

#include "quant-half.h"
#define MG_QUANT(f) mg_avx512_##f
#include "quant-kernels.h"
#include "quant-x86.h"

static inline vf vf_zero(void) { return _mm512_setzero_ps(); }
static inline vf vf_abs(vf a) { return _mm512_abs_ps(a); }
static inline float vf_hsum(vf a) { return _mm512_reduce_add_ps(a); }
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

#define MG_TABLE mg_kernels_avx512
#define MG_TABLE_NAME "avx512"
#include "table-impl.h"

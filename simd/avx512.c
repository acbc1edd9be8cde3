/* avx512.c - the AVX-512 (F, BW, DQ, VL) + FMA + F16C kernel table (16 floats per vector).
 *
 * Compiled on its own with -mavx512f -mavx512bw -mavx512dq -mavx512vl -mfma -mf16c (and only
 * this file is), so it must only be reached through simd/cpu.c after the CPU and OS checks.
 * The algorithms of avx2.c, twice as wide, with masked loads and stores for every remainder
 * instead of scalar tails. exp, silu and rope's sin/cos give the same bits as the AVX2 table
 * (exp scales with vscalefps, which rounds once like avx2.c's two-step scaling); norms,
 * softmax and cema_scan sum in another order, so they differ from it by roundings. */
#include "config.h"

#include "kernels.h"
#include "quant-kernels.h"
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

#define W 16

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

static inline __m512 silu16(__m512 x)
{
    __m512 e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), x));
    return _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
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

/* sum x, sum (x - mean)^2 of n floats, in double; masked lanes load as 0 */
static double sum_d(const float *x, int n)
{
    __m512d a0 = _mm512_setzero_pd(), a1 = a0;
    for (int i = 0; i < n; i += W) {
        __m512 v = _mm512_maskz_loadu_ps(tail_mask(n - i < W ? n - i : W), x + i);
        a0 = _mm512_add_pd(a0, lo_pd(v));
        a1 = _mm512_add_pd(a1, hi_pd(v));
    }
    return _mm512_reduce_add_pd(_mm512_add_pd(a0, a1));
}

static double sumdev_d(const float *x, int n, double mean)
{
    __m512d a0 = _mm512_setzero_pd(), a1 = a0, m = _mm512_set1_pd(mean);
    for (int i = 0; i < n; i += W) {
        __mmask16 k = tail_mask(n - i < W ? n - i : W);
        __m512 v = _mm512_maskz_loadu_ps(k, x + i);
        __m512d l = _mm512_maskz_sub_pd((__mmask8)k, lo_pd(v), m);
        __m512d h = _mm512_maskz_sub_pd((__mmask8)(k >> 8), hi_pd(v), m);
        a0 = _mm512_fmadd_pd(l, l, a0);
        a1 = _mm512_fmadd_pd(h, h, a1);
    }
    return _mm512_reduce_add_pd(_mm512_add_pd(a0, a1));
}

/* y = (x - m) * r * (1 + w) + b in the reference's fp32 operation order (w, b may be NULL) */
static void norm_out(const float *x, float m, float r, const float *w, const float *b, int n,
                     float *y)
{
    const __m512 vm = _mm512_set1_ps(m), vr = _mm512_set1_ps(r), one = _mm512_set1_ps(1.0f);
    for (int i = 0; i < n; i += W) {
        __mmask16 k = tail_mask(n - i < W ? n - i : W);
        __m512 v = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), vm), vr);
        if (w) v = _mm512_mul_ps(v, _mm512_add_ps(one, _mm512_maskz_loadu_ps(k, w + i)));
        if (b) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(k, b + i));
        _mm512_mask_storeu_ps(y + i, k, v);
    }
}

/* ------------------------------------------------------------------ norms */

#include "norms-impl.h"

/* ------------------------------------------------------------------ CEMA */

/* As avx2.c, with CB = 8 components per vector and 16 channels per vector; both ways compute
 * exactly the same floats (so the result depends neither on L nor on the channel range):
 *   h_n <- fma(qr, hr, fma(-qi, hi, p x)) + i fma(qr, hi, qi hr)     (p x and qi hr rounded)
 *   a[2m] += er_n nr_n,  a[2m+1] += ei_n ni_n   (fma) for n = j CB + m, j = 0, 1, ...
 *   d_m = a[2m] - a[2m+1];  y = omega x + (((d0 + d4) + (d2 + d6)) + ((d1 + d5) + (d3 + d7)))
 * (the AVX2 table sums in another order, so the two tables differ by roundings). */
#define CB (W / 2)
#define CEMA_NMAX 64    /* largest N done across channels */
#define CEMA_LMIN 16    /* shortest L done across channels */
#define CEMA_PREFETCH 8 /* rows ahead: x and y rows are D floats apart, each its own page */

#define SIGN_EVEN _mm512_castsi512_ps(_mm512_set1_epi64(0x80000000))
#define SIGN_ODD _mm512_castsi512_ps(_mm512_set1_epi64((int64_t)0x8000000000000000ull))

/* one step of CB interleaved components: q, h complex; p as (p, 0) pairs; x broadcast */
static inline __m512 cema_step(__m512 qv, __m512 hv, __m512 pv, __m512 xv)
{
    /* (p x, -0): the odd lanes' fma then rounds qi hr exactly like a product */
    __m512 px = _mm512_or_ps(_mm512_mul_ps(pv, xv), SIGN_ODD);
    __m512 a = _mm512_fmadd_ps(_mm512_xor_ps(_mm512_movehdup_ps(qv), SIGN_EVEN),
                               _mm512_permute_ps(hv, 0xB1), px);
    return _mm512_fmadd_ps(_mm512_moveldup_ps(qv), hv, a);
}

static void cema_channel(const float *x, int L, int D, int N, int d, const float *p,
                         const float *q, const float *eta, const float *omega, float *h, float *y)
{
    const float *pd = p + (size_t)d * N, *qd = q + (size_t)d * N * 2, *ed = eta + (size_t)d * N * 2;
    float *hd = h + (size_t)d * N * 2;
    const float om = omega[d];
    const int rem = N % CB, nfull = N - rem;
    const __mmask16 m2 = tail_mask(2 * rem);
    const __mmask8 m1 = (__mmask8)tail_mask(rem);
    for (int t = 0; t < L; t++) {
        const float xt = x[(size_t)t * D + d];
        const __m512 xv = _mm512_set1_ps(xt);
        __m512 acc = _mm512_setzero_ps();
        for (int n = 0; n < nfull; n += CB) {
            __m512 pv = _mm512_castsi512_ps(_mm512_cvtepu32_epi64(_mm256_loadu_si256((const __m256i *)(pd + n))));
            __m512 hv = cema_step(_mm512_loadu_ps(qd + 2 * n), _mm512_loadu_ps(hd + 2 * n), pv, xv);
            _mm512_storeu_ps(hd + 2 * n, hv);
            acc = _mm512_fmadd_ps(_mm512_loadu_ps(ed + 2 * n), hv, acc);
        }
        if (rem) {
            __m512 pv = _mm512_castsi512_ps(_mm512_cvtepu32_epi64(_mm256_maskz_loadu_epi32(m1, pd + nfull)));
            __m512 hv = cema_step(_mm512_maskz_loadu_ps(m2, qd + 2 * nfull),
                                  _mm512_maskz_loadu_ps(m2, hd + 2 * nfull), pv, xv);
            _mm512_mask_storeu_ps(hd + 2 * nfull, m2, hv);
            acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m2, ed + 2 * nfull), hv, acc);
        }
        __m512 dm = _mm512_sub_ps(acc, _mm512_permute_ps(acc, 0xB1)); /* lane 2m: d_m */
        __m256 e = _mm256_add_ps(_mm512_castps512_ps256(dm), _mm512_extractf32x8_ps(dm, 1));
        __m128 f = _mm_add_ps(_mm256_castps256_ps128(e), _mm256_extractf128_ps(e, 1));
        y[(size_t)t * D + d] = om * xt + _mm_cvtss_f32(_mm_add_ss(f, _mm_movehl_ps(f, f)));
    }
}

static void cema_block(const float *x, int L, int D, int N, int d, int nd, const float *p,
                       const float *q, const float *eta, const float *omega, float *h, float *y)
{
    _Alignas(64) float P[CEMA_NMAX][W], QR[CEMA_NMAX][W], QI[CEMA_NMAX][W], ER[CEMA_NMAX][W],
        EI[CEMA_NMAX][W], HR[CEMA_NMAX][W], HI[CEMA_NMAX][W];
    if (nd < W) {
        size_t sz = sizeof(float) * W * N;
        memset(P, 0, sz); memset(QR, 0, sz); memset(QI, 0, sz); memset(ER, 0, sz);
        memset(EI, 0, sz); memset(HR, 0, sz); memset(HI, 0, sz);
    }
    for (int j = 0; j < nd; j++) {
        const size_t c = (size_t)(d + j) * N;
        for (int n = 0; n < N; n++) {
            P[n][j] = p[c + n];
            QR[n][j] = q[2 * (c + n)];
            QI[n][j] = q[2 * (c + n) + 1];
            ER[n][j] = eta[2 * (c + n)];
            EI[n][j] = eta[2 * (c + n) + 1];
            HR[n][j] = h[2 * (c + n)];
            HI[n][j] = h[2 * (c + n) + 1];
        }
    }
    const __mmask16 msk = tail_mask(nd);
    const __m512 om = _mm512_maskz_loadu_ps(msk, omega + d);
    const int rem = N % CB, nfull = N - rem;
    for (int t = 0; t < L; t++) {
        if (t + CEMA_PREFETCH < L) {
            _mm_prefetch((const char *)(x + (size_t)(t + CEMA_PREFETCH) * D + d), _MM_HINT_T0);
            _mm_prefetch((const char *)(y + (size_t)(t + CEMA_PREFETCH) * D + d), _MM_HINT_T0);
        }
        const __m512 xv = _mm512_maskz_loadu_ps(msk, x + (size_t)t * D + d);
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0,
               a7 = a0, a8 = a0, a9 = a0, a10 = a0, a11 = a0, a12 = a0, a13 = a0, a14 = a0, a15 = a0;
#define CEMA_COMPONENT(k, ar, ai)                                                                \
    do {                                                                                         \
        __m512 hr = _mm512_load_ps(HR[k]), hi = _mm512_load_ps(HI[k]);                         \
        __m512 qr = _mm512_load_ps(QR[k]), qi = _mm512_load_ps(QI[k]);                         \
        __m512 px = _mm512_mul_ps(_mm512_load_ps(P[k]), xv);                                   \
        __m512 nr = _mm512_fmadd_ps(qr, hr, _mm512_fnmadd_ps(qi, hi, px));                     \
        __m512 ni = _mm512_fmadd_ps(qr, hi, _mm512_mul_ps(qi, hr));                             \
        _mm512_store_ps(HR[k], nr);                                                              \
        _mm512_store_ps(HI[k], ni);                                                              \
        ar = _mm512_fmadd_ps(_mm512_load_ps(ER[k]), nr, ar);                                    \
        ai = _mm512_fmadd_ps(_mm512_load_ps(EI[k]), ni, ai);                                    \
    } while (0)
        for (int n = 0; n < nfull; n += CB) {
            CEMA_COMPONENT(n, a0, a1);
            CEMA_COMPONENT(n + 1, a2, a3);
            CEMA_COMPONENT(n + 2, a4, a5);
            CEMA_COMPONENT(n + 3, a6, a7);
            CEMA_COMPONENT(n + 4, a8, a9);
            CEMA_COMPONENT(n + 5, a10, a11);
            CEMA_COMPONENT(n + 6, a12, a13);
            CEMA_COMPONENT(n + 7, a14, a15);
        }
        if (rem > 0) CEMA_COMPONENT(nfull, a0, a1);
        if (rem > 1) CEMA_COMPONENT(nfull + 1, a2, a3);
        if (rem > 2) CEMA_COMPONENT(nfull + 2, a4, a5);
        if (rem > 3) CEMA_COMPONENT(nfull + 3, a6, a7);
        if (rem > 4) CEMA_COMPONENT(nfull + 4, a8, a9);
        if (rem > 5) CEMA_COMPONENT(nfull + 5, a10, a11);
        if (rem > 6) CEMA_COMPONENT(nfull + 6, a12, a13);
#undef CEMA_COMPONENT
        /* d_m = a[2m] - a[2m+1]; ((d0 + d4) + (d2 + d6)) + ((d1 + d5) + (d3 + d7)) */
        __m512 e0 = _mm512_add_ps(_mm512_sub_ps(a0, a1), _mm512_sub_ps(a8, a9));
        __m512 e1 = _mm512_add_ps(_mm512_sub_ps(a2, a3), _mm512_sub_ps(a10, a11));
        __m512 e2 = _mm512_add_ps(_mm512_sub_ps(a4, a5), _mm512_sub_ps(a12, a13));
        __m512 e3 = _mm512_add_ps(_mm512_sub_ps(a6, a7), _mm512_sub_ps(a14, a15));
        __m512 s = _mm512_add_ps(_mm512_add_ps(e0, e2), _mm512_add_ps(e1, e3));
        _mm512_mask_storeu_ps(y + (size_t)t * D + d, msk, _mm512_add_ps(_mm512_mul_ps(om, xv), s));
    }
    for (int j = 0; j < nd; j++) {
        const size_t c = (size_t)(d + j) * N;
        for (int n = 0; n < N; n++) {
            h[2 * (c + n)] = HR[n][j];
            h[2 * (c + n) + 1] = HI[n][j];
        }
    }
}

static void cema_scan(const float *x, int L, int D, int N, int d0, int d1, const float *p,
                      const float *q, const float *eta, const float *omega, float *h, float *y)
{
    if (L >= CEMA_LMIN && N <= CEMA_NMAX)
        for (int d = d0; d < d1; d += W)
            cema_block(x, L, D, N, d, d1 - d < W ? d1 - d : W, p, q, eta, omega, h, y);
    else
        for (int d = d0; d < d1; d++) cema_channel(x, L, D, N, d, p, q, eta, omega, h, y);
}

/* ------------------------------------------------------------------ complex, rope */

/* (ar + i ai)(br + i bi): even lanes ar br - ai bi, odd lanes ai br + ar bi, one FMA each */
static void complex_mul(const float *a, const float *b, float *y, int n)
{
    for (int i = 0; i < n; i += W / 2) {
        __mmask16 k = tail_mask(n - i < W / 2 ? 2 * (n - i) : W);
        __m512 va = _mm512_maskz_loadu_ps(k, a + 2 * i), vb = _mm512_maskz_loadu_ps(k, b + 2 * i);
        __m512 br = _mm512_moveldup_ps(vb), bi = _mm512_movehdup_ps(vb);
        __m512 sw = _mm512_permute_ps(va, 0xB1); /* (ai, ar) */
        _mm512_mask_storeu_ps(y + 2 * i, k, _mm512_fmaddsub_ps(va, br, _mm512_mul_ps(sw, bi)));
    }
}

/* pairs i0 .. i1-1 as the reference does them */
static void rope_scalar(float *x, int i0, int i1, int pos, const float *freqs)
{
    for (int i = i0; i < i1; i++) {
        float th = (float)pos * freqs[i];
        float c = cosf(th), s = sinf(th);
        float a = x[2 * i], b = x[2 * i + 1];
        x[2 * i] = a * c - b * s;
        x[2 * i + 1] = a * s + b * c;
    }
}

/* Angles pos * freqs[i] in fp32 like the reference, sin/cos by sincos16 (|angle| <= 2^20; a
 * block of 16 pairs with a larger angle is done by libm). */
static void rope(float *x, int dh, int pos, const float *freqs)
{
    const int half = dh / 2;
    const __m512 vpos = _mm512_set1_ps((float)pos), lim = _mm512_set1_ps(MG_TRIG_XMAX);
    const __m512i dup_lo = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    const __m512i dup_hi = _mm512_setr_epi32(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
    int i = 0;
    for (; i < half; i += W) {
        const int np = half - i < W ? half - i : W; /* pairs in this block */
        __m512 th = _mm512_mul_ps(vpos, _mm512_maskz_loadu_ps(tail_mask(np), freqs + i));
        if (_mm512_cmp_ps_mask(_mm512_abs_ps(th), lim, _CMP_NLE_UQ)) {
            rope_scalar(x, i, i + np, pos, freqs); /* a huge angle (or NaN): libm */
            continue;
        }
        __m512 s, c;
        sincos16(th, &s, &c);
        const __mmask16 k0 = tail_mask(np >= 8 ? 16 : 2 * np), k1 = tail_mask(np > 8 ? 2 * (np - 8) : 0);
        __m512 x0 = _mm512_maskz_loadu_ps(k0, x + 2 * i), x1 = _mm512_maskz_loadu_ps(k1, x + 2 * i + 16);
        __m512 c0 = _mm512_permutexvar_ps(dup_lo, c), c1 = _mm512_permutexvar_ps(dup_hi, c);
        __m512 s0 = _mm512_permutexvar_ps(dup_lo, s), s1 = _mm512_permutexvar_ps(dup_hi, s);
        /* even: a c - b s; odd: b c + a s */
        x0 = _mm512_fmaddsub_ps(x0, c0, _mm512_mul_ps(_mm512_permute_ps(x0, 0xB1), s0));
        x1 = _mm512_fmaddsub_ps(x1, c1, _mm512_mul_ps(_mm512_permute_ps(x1, 0xB1), s1));
        _mm512_mask_storeu_ps(x + 2 * i, k0, x0);
        _mm512_mask_storeu_ps(x + 2 * i + 16, k1, x1);
    }
}

/* ------------------------------------------------------------------ softmax, elementwise */

static void softmax(float *x, int n)
{
    __m512 vm = _mm512_set1_ps(x[0]);
    for (int i = 0; i < n; i += W) /* masked lanes repeat x[0] */
        vm = _mm512_max_ps(vm, _mm512_mask_loadu_ps(_mm512_set1_ps(x[0]), tail_mask(n - i < W ? n - i : W), x + i));
    const float m = _mm512_reduce_max_ps(vm);
    vm = _mm512_set1_ps(m);
    __m512d s0 = _mm512_setzero_pd(), s1 = s0;
    for (int i = 0; i < n; i += W) {
        const __mmask16 k = tail_mask(n - i < W ? n - i : W);
        __m512 e = _mm512_maskz_mov_ps(k, exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), vm)));
        _mm512_mask_storeu_ps(x + i, k, e);
        s0 = _mm512_add_pd(s0, lo_pd(e));
        s1 = _mm512_add_pd(s1, hi_pd(e));
    }
    const __m512 vr = _mm512_set1_ps((float)(1.0 / _mm512_reduce_add_pd(_mm512_add_pd(s0, s1))));
    for (int i = 0; i < n; i += W) {
        const __mmask16 k = tail_mask(n - i < W ? n - i : W);
        _mm512_mask_storeu_ps(x + i, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, x + i), vr));
    }
}

static void silu(const float *x, float *y, size_t n)
{
    size_t i = 0;
    for (; i + W <= n; i += W) _mm512_storeu_ps(y + i, silu16(_mm512_loadu_ps(x + i)));
    if (i < n) {
        const __mmask16 k = tail_mask((int)(n - i));
        _mm512_mask_storeu_ps(y + i, k, silu16(_mm512_maskz_loadu_ps(k, x + i)));
    }
}

static void mul(const float *a, const float *b, float *y, size_t n)
{
    size_t i = 0;
    for (; i + W <= n; i += W)
        _mm512_storeu_ps(y + i, _mm512_mul_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i)));
    if (i < n) {
        const __mmask16 k = tail_mask((int)(n - i));
        _mm512_mask_storeu_ps(y + i, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, a + i), _mm512_maskz_loadu_ps(k, b + i)));
    }
}

static void add(const float *a, const float *b, float *y, size_t n)
{
    size_t i = 0;
    for (; i + W <= n; i += W)
        _mm512_storeu_ps(y + i, _mm512_add_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i)));
    if (i < n) {
        const __mmask16 k = tail_mask((int)(n - i));
        _mm512_mask_storeu_ps(y + i, k, _mm512_add_ps(_mm512_maskz_loadu_ps(k, a + i), _mm512_maskz_loadu_ps(k, b + i)));
    }
}

/* x s + t without FMA: bit-identical to the reference */
static void affine_rows(const float *x, size_t rows, int m, const float *s, const float *t,
                        float *y)
{
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * (size_t)m;
        float *yr = y + r * (size_t)m;
        for (int i = 0; i < m; i += W) {
            const __mmask16 k = tail_mask(m - i < W ? m - i : W);
            __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, xr + i), _mm512_maskz_loadu_ps(k, s + i));
            if (t) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(k, t + i));
            _mm512_mask_storeu_ps(yr + i, k, v);
        }
    }
}

static void scale(const float *x, float a, float *y, size_t n)
{
    const __m512 va = _mm512_set1_ps(a);
    size_t i = 0;
    for (; i + W <= n; i += W) _mm512_storeu_ps(y + i, _mm512_mul_ps(va, _mm512_loadu_ps(x + i)));
    if (i < n) {
        const __mmask16 k = tail_mask((int)(n - i));
        _mm512_mask_storeu_ps(y + i, k, _mm512_mul_ps(va, _mm512_maskz_loadu_ps(k, x + i)));
    }
}

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
    for (; i + W <= n; i += W) _mm512_storeu_ps(y + i, half16(_mm256_loadu_si256((const __m256i *)(x + i))));
    if (i < n) {
        const __mmask16 k = tail_mask((int)(n - i));
        _mm512_mask_storeu_ps(y + i, k, half16(_mm256_maskz_loadu_epi16(k, x + i)));
    }
}

static void bf16_to_f32(const uint16_t *x, float *y, size_t n)
{
    size_t i = 0;
    for (; i + W <= n; i += W) {
        __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(x + i)));
        _mm512_storeu_si512(y + i, _mm512_slli_epi32(v, 16));
    }
    if (i < n) {
        const __mmask16 k = tail_mask((int)(n - i));
        __m512i v = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(k, x + i));
        _mm512_mask_storeu_epi32(y + i, k, _mm512_slli_epi32(v, 16));
    }
}

/* ------------------------------------------------------------------ training */

/* The elementwise training kernels (train-impl.h) on sixteen floats per vector */
#define VF 16
typedef __m512 vf;
static inline vf vf_set1(float a) { return _mm512_set1_ps(a); }
static inline vf vf_add(vf a, vf b) { return _mm512_add_ps(a, b); }
static inline vf vf_sub(vf a, vf b) { return _mm512_sub_ps(a, b); }
static inline vf vf_mul(vf a, vf b) { return _mm512_mul_ps(a, b); }
static inline vf vf_div(vf a, vf b) { return _mm512_div_ps(a, b); }
static inline vf vf_sqrt(vf a) { return _mm512_sqrt_ps(a); }
static inline vf vf_exp(vf x) { return exp16(x); }
static inline vf vf_load(const float *p) { return _mm512_loadu_ps(p); }
static inline void vf_store(float *p, vf v) { _mm512_storeu_ps(p, v); }
static inline vf vf_load_part(const float *p, int k) { return _mm512_maskz_loadu_ps(tail_mask(k), p); }
static inline void vf_store_part(float *p, vf v, int k) { _mm512_mask_storeu_ps(p, tail_mask(k), v); }

#include "train-impl.h"

/* max in fp32; e = exp16(l - max) summed in double (and kept in dl); dl = e (scale / sum) */
static double cross_entropy_row(const float *l, int n, int t, float scale, float *dl)
{
    const float lt = l[t];
    __m512 vm = _mm512_set1_ps(l[0]);
    for (int i = 0; i < n; i += W) /* masked lanes repeat l[0] */
        vm = _mm512_max_ps(vm, _mm512_mask_loadu_ps(_mm512_set1_ps(l[0]), tail_mask(n - i < W ? n - i : W), l + i));
    const float mx = _mm512_reduce_max_ps(vm);
    vm = _mm512_set1_ps(mx);
    __m512d s0 = _mm512_setzero_pd(), s1 = s0;
    for (int i = 0; i < n; i += W) {
        const __mmask16 k = tail_mask(n - i < W ? n - i : W);
        __m512 e = _mm512_maskz_mov_ps(k, exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, l + i), vm)));
        if (dl) _mm512_mask_storeu_ps(dl + i, k, e);
        s0 = _mm512_add_pd(s0, lo_pd(e));
        s1 = _mm512_add_pd(s1, hi_pd(e));
    }
    const double sum = _mm512_reduce_add_pd(_mm512_add_pd(s0, s1)), lse = mx + log(sum);
    if (dl) {
        const __m512 vf = _mm512_set1_ps((float)(scale / sum));
        for (int i = 0; i < n; i += W) {
            const __mmask16 k = tail_mask(n - i < W ? n - i : W);
            _mm512_mask_storeu_ps(dl + i, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, dl + i), vf));
        }
        dl[t] -= scale;
    }
    return lse - lt;
}

/* The norm backward kernels (norm-backward-impl.h) on eight doubles per vector */
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

#include "norm-backward-impl.h"

/* ------------------------------------------------------------------ test hooks */

/* The vectorized exp over n floats, for tests/test-kernels.c (call only where the avx512
 * table is usable). */
void mg_avx512_exp(const float *x, float *y, size_t n);
void mg_avx512_exp(const float *x, float *y, size_t n)
{
    for (size_t i = 0; i < n; i += W) {
        const __mmask16 k = tail_mask(n - i < W ? (int)(n - i) : W);
        _mm512_mask_storeu_ps(y + i, k, exp16(_mm512_maskz_loadu_ps(k, x + i)));
    }
}

const mg_kernels mg_kernels_avx512 = {
    .name = "avx512",
    .rms_norm = rms_norm,
    .layer_norm = layer_norm,
    .timestep_norm = timestep_norm,
    .cema_scan = cema_scan,
    .complex_mul = complex_mul,
    .rope = rope,
    .softmax = softmax,
    .silu = silu,
    .mul = mul,
    .add = add,
    .affine_rows = affine_rows,
    .scale = scale,
    .f16_to_f32 = f16_to_f32,
    .bf16_to_f32 = bf16_to_f32,
    .silu_backward = silu_backward,
    .cross_entropy_row = cross_entropy_row,
    .adamw = adamw,
    .tsnorm_bwd_sums = tsnorm_bwd_sums,
    .tsnorm_bwd_dx = tsnorm_bwd_dx,
    .rms_norm_backward_row = rms_norm_backward_row,
    .layer_norm_backward_row = layer_norm_backward_row,
    .quantize_q8_0 = mg_avx512_quantize_q8_0,
    .quantize_q8_K = mg_avx512_quantize_q8_K,
    .dot_f16 = mg_avx512_dot_f16,
    .dot_bf16 = mg_avx512_dot_bf16,
    .dot_q8_0 = mg_avx512_dot_q8_0,
    .dot_q4_0 = mg_avx512_dot_q4_0,
    .dot_q4_K = mg_avx512_dot_q4_K,
    .dot_q6_K = mg_avx512_dot_q6_K,
    .dequant_q8_0 = mg_avx512_dequant_q8_0,
    .dequant_q4_0 = mg_avx512_dequant_q4_0,
    .dequant_q4_K = mg_avx512_dequant_q4_K,
    .dequant_q6_K = mg_avx512_dequant_q6_K,
};

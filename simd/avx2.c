/* avx2.c - the AVX2 + FMA + F16C kernel table (8 floats per vector).
 *
 * Compiled on its own with -mavx2 -mfma -mf16c (and only this file is), so it must only be
 * reached through simd/cpu.c after the CPU and OS checks. Every kernel computes what the
 * scalar reference (scalar.c) defines; see kernels.h. Notes on accuracy:
 *  - norm moments are accumulated in double like the reference, and the output uses the
 *    reference's fp32 operations in its order: the norms agree with it to an ulp (identical
 *    in all the tests);
 *  - mul, add, scale, affine_rows and the conversions are bit-identical to the reference;
 *  - exp (softmax, silu) and sin/cos (rope) are the approximations documented in vecmath.h;
 *  - complex_mul and cema_scan use FMA. cema_scan gives the same bits whatever L and however
 *    the channels are split among threads; the remainders of the exp-based kernels use masked
 *    loads, so an element's result does not depend on its position either. */
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

#define W 8

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

static inline __m256 silu8(__m256 x)
{
    __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), x));
    return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
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

/* sum x, sum x^2, sum (x - mean)^2 of n floats, in double */
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

/* y = (x - m) * r * (1 + w) + b in the reference's fp32 operation order (w, b may be NULL) */
static void norm_out(const float *x, float m, float r, const float *w, const float *b, int n,
                     float *y)
{
    const __m256 vm = _mm256_set1_ps(m), vr = _mm256_set1_ps(r), one = _mm256_set1_ps(1.0f);
    int i = 0;
    for (; i + W <= n; i += W) {
        __m256 v = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm), vr);
        if (w) v = _mm256_mul_ps(v, _mm256_add_ps(one, _mm256_loadu_ps(w + i)));
        if (b) v = _mm256_add_ps(v, _mm256_loadu_ps(b + i));
        _mm256_storeu_ps(y + i, v);
    }
    for (; i < n; i++) {
        float v = (x[i] - m) * r;
        if (w) v *= 1.0f + w[i];
        if (b) v += b[i];
        y[i] = v;
    }
}

/* ------------------------------------------------------------------ norms */

#include "norms-impl.h"

/* ------------------------------------------------------------------ CEMA */

/* Two ways of vectorizing, which compute exactly the same floats, so that a channel's result
 * depends neither on L nor on the channel range a thread is given (tests/test-cema.c compares
 * 1 and 2 threads bit for bit):
 *   h_n <- fma(qr, hr, fma(-qi, hi, p x)) + i fma(qr, hi, qi hr)     (p x and qi hr rounded)
 *   the products eta_n h_n go into 2 CB running sums (fma), CB = 4 components per vector:
 *     a[2m] += er_n nr_n,  a[2m+1] += ei_n ni_n   for n = j CB + m, j = 0, 1, ...
 *   d_m = a[2m] - a[2m+1];   y = omega x + ((d0 + d2) + (d1 + d3))
 * cema_channel does one channel with CB components per vector (the state, q and eta of a
 * channel are contiguous): for short L (decoding) and large N. cema_block does 8 channels per
 * vector (x and y rows are contiguous in d, the last block masked), the block's parameters
 * transposed into stack buffers: for longer L. */
#define CB (W / 2)
#define CEMA_NMAX 64 /* largest N done across channels */
#define CEMA_LMIN 16 /* shortest L done across channels */
#define CEMA_PREFETCH 8 /* rows ahead: x and y rows are D floats apart, each its own page */

#define SIGN_EVEN _mm256_castsi256_ps(_mm256_setr_epi32(INT32_MIN, 0, INT32_MIN, 0, INT32_MIN, 0, INT32_MIN, 0))
#define SIGN_ODD _mm256_castsi256_ps(_mm256_setr_epi32(0, INT32_MIN, 0, INT32_MIN, 0, INT32_MIN, 0, INT32_MIN))

/* one step of CB interleaved components: q, h complex; p as (p, 0) pairs; x broadcast */
static inline __m256 cema_step(__m256 qv, __m256 hv, __m256 pv, __m256 xv)
{
    /* (p x, -0): the odd lanes' fma then rounds qi hr exactly like a product */
    __m256 px = _mm256_or_ps(_mm256_mul_ps(pv, xv), SIGN_ODD);
    __m256 a = _mm256_fmadd_ps(_mm256_xor_ps(_mm256_movehdup_ps(qv), SIGN_EVEN),
                               _mm256_permute_ps(hv, 0xB1), px);
    return _mm256_fmadd_ps(_mm256_moveldup_ps(qv), hv, a);
}

static void cema_channel(const float *x, int L, int D, int N, int d, const float *p,
                         const float *q, const float *eta, const float *omega, float *h, float *y)
{
    const float *pd = p + (size_t)d * N, *qd = q + (size_t)d * N * 2, *ed = eta + (size_t)d * N * 2;
    float *hd = h + (size_t)d * N * 2;
    const float om = omega[d];
    const int rem = N % CB, nfull = N - rem;
    const __m256i m2 = tail_mask(2 * rem);
    const __m128i m1 = _mm256_castsi256_si128(tail_mask(rem));
    for (int t = 0; t < L; t++) {
        const float xt = x[(size_t)t * D + d];
        const __m256 xv = _mm256_set1_ps(xt);
        __m256 acc = _mm256_setzero_ps();
        for (int n = 0; n < nfull; n += CB) {
            __m256 pv = _mm256_castsi256_ps(_mm256_cvtepu32_epi64(_mm_loadu_si128((const __m128i *)(pd + n))));
            __m256 hv = cema_step(_mm256_loadu_ps(qd + 2 * n), _mm256_loadu_ps(hd + 2 * n), pv, xv);
            _mm256_storeu_ps(hd + 2 * n, hv);
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(ed + 2 * n), hv, acc);
        }
        if (rem) {
            __m256 pv = _mm256_castsi256_ps(_mm256_cvtepu32_epi64(_mm_castps_si128(_mm_maskload_ps(pd + nfull, m1))));
            __m256 hv = cema_step(_mm256_maskload_ps(qd + 2 * nfull, m2), _mm256_maskload_ps(hd + 2 * nfull, m2), pv, xv);
            _mm256_maskstore_ps(hd + 2 * nfull, m2, hv);
            acc = _mm256_fmadd_ps(_mm256_maskload_ps(ed + 2 * nfull, m2), hv, acc);
        }
        __m256 dm = _mm256_sub_ps(acc, _mm256_permute_ps(acc, 0xB1)); /* lane 2m: d_m */
        __m128 u = _mm_add_ps(_mm256_castps256_ps128(dm), _mm256_extractf128_ps(dm, 1));
        y[(size_t)t * D + d] = om * xt + _mm_cvtss_f32(_mm_add_ss(u, _mm_movehl_ps(u, u)));
    }
}

static void cema_block(const float *x, int L, int D, int N, int d, int nd, const float *p,
                       const float *q, const float *eta, const float *omega, float *h, float *y)
{
    _Alignas(32) float P[CEMA_NMAX][W], QR[CEMA_NMAX][W], QI[CEMA_NMAX][W], ER[CEMA_NMAX][W],
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
    const __m256i msk = tail_mask(nd);
    const __m256 om = _mm256_maskload_ps(omega + d, msk);
    const int rem = N % CB, nfull = N - rem;
    for (int t = 0; t < L; t++) {
        if (t + CEMA_PREFETCH < L) {
            _mm_prefetch((const char *)(x + (size_t)(t + CEMA_PREFETCH) * D + d), _MM_HINT_T0);
            _mm_prefetch((const char *)(y + (size_t)(t + CEMA_PREFETCH) * D + d), _MM_HINT_T0);
        }
        const __m256 xv = _mm256_maskload_ps(x + (size_t)t * D + d, msk);
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
#define CEMA_COMPONENT(k, ar, ai)                                                                \
    do {                                                                                         \
        __m256 hr = _mm256_load_ps(HR[k]), hi = _mm256_load_ps(HI[k]);                         \
        __m256 qr = _mm256_load_ps(QR[k]), qi = _mm256_load_ps(QI[k]);                         \
        __m256 px = _mm256_mul_ps(_mm256_load_ps(P[k]), xv);                                   \
        __m256 nr = _mm256_fmadd_ps(qr, hr, _mm256_fnmadd_ps(qi, hi, px));                     \
        __m256 ni = _mm256_fmadd_ps(qr, hi, _mm256_mul_ps(qi, hr));                             \
        _mm256_store_ps(HR[k], nr);                                                              \
        _mm256_store_ps(HI[k], ni);                                                              \
        ar = _mm256_fmadd_ps(_mm256_load_ps(ER[k]), nr, ar);                                    \
        ai = _mm256_fmadd_ps(_mm256_load_ps(EI[k]), ni, ai);                                    \
    } while (0)
        for (int n = 0; n < nfull; n += CB) {
            CEMA_COMPONENT(n, a0, a1);
            CEMA_COMPONENT(n + 1, a2, a3);
            CEMA_COMPONENT(n + 2, a4, a5);
            CEMA_COMPONENT(n + 3, a6, a7);
        }
        if (rem > 0) CEMA_COMPONENT(nfull, a0, a1);
        if (rem > 1) CEMA_COMPONENT(nfull + 1, a2, a3);
        if (rem > 2) CEMA_COMPONENT(nfull + 2, a4, a5);
#undef CEMA_COMPONENT
        __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_sub_ps(a0, a1), _mm256_sub_ps(a4, a5)),
                                 _mm256_add_ps(_mm256_sub_ps(a2, a3), _mm256_sub_ps(a6, a7)));
        _mm256_maskstore_ps(y + (size_t)t * D + d, msk, _mm256_add_ps(_mm256_mul_ps(om, xv), s));
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

/* (ar + i ai)(br + i bi): even lanes ar br - ai bi, odd lanes ai br + ar bi, one FMA each;
 * the scalar remainder rounds identically. */
static void complex_mul(const float *a, const float *b, float *y, int n)
{
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        __m256 va = _mm256_loadu_ps(a + 2 * i), vb = _mm256_loadu_ps(b + 2 * i);
        __m256 br = _mm256_moveldup_ps(vb), bi = _mm256_movehdup_ps(vb);
        __m256 sw = _mm256_permute_ps(va, 0xB1); /* (ai, ar) */
        _mm256_storeu_ps(y + 2 * i, _mm256_fmaddsub_ps(va, br, _mm256_mul_ps(sw, bi)));
    }
    for (; i < n; i++) {
        float ar = a[2 * i], ai = a[2 * i + 1], br = b[2 * i], bi = b[2 * i + 1];
        y[2 * i] = fmaf(ar, br, -(ai * bi));
        y[2 * i + 1] = fmaf(ai, br, ar * bi);
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

/* Angles pos * freqs[i] in fp32 like the reference, sin/cos by sincos8 (|angle| <= 2^20; a
 * block of 8 pairs with a larger angle is done by libm). */
static void rope(float *x, int dh, int pos, const float *freqs)
{
    const int half = dh / 2;
    const __m256 vpos = _mm256_set1_ps((float)pos), lim = _mm256_set1_ps(MG_TRIG_XMAX);
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    int i = 0;
    for (; i + W <= half; i += W) {
        __m256 th = _mm256_mul_ps(vpos, _mm256_loadu_ps(freqs + i)); /* fp32, as the reference */
        if (!_mm256_testz_ps(_mm256_cmp_ps(_mm256_and_ps(th, absmask), lim, _CMP_NLE_UQ),
                             _mm256_castsi256_ps(_mm256_set1_epi32(-1)))) {
            rope_scalar(x, i, i + W, pos, freqs); /* a huge angle (or NaN): libm */
            continue;
        }
        __m256 s, c;
        sincos8(th, &s, &c);
        /* duplicate each angle's cos/sin over its (re, im) pair */
        __m256 clo = _mm256_unpacklo_ps(c, c), chi = _mm256_unpackhi_ps(c, c);
        __m256 slo = _mm256_unpacklo_ps(s, s), shi = _mm256_unpackhi_ps(s, s);
        __m256 c0 = _mm256_permute2f128_ps(clo, chi, 0x20), c1 = _mm256_permute2f128_ps(clo, chi, 0x31);
        __m256 s0 = _mm256_permute2f128_ps(slo, shi, 0x20), s1 = _mm256_permute2f128_ps(slo, shi, 0x31);
        __m256 x0 = _mm256_loadu_ps(x + 2 * i), x1 = _mm256_loadu_ps(x + 2 * i + 8);
        /* even: a c - b s; odd: b c + a s */
        x0 = _mm256_fmaddsub_ps(x0, c0, _mm256_mul_ps(_mm256_permute_ps(x0, 0xB1), s0));
        x1 = _mm256_fmaddsub_ps(x1, c1, _mm256_mul_ps(_mm256_permute_ps(x1, 0xB1), s1));
        _mm256_storeu_ps(x + 2 * i, x0);
        _mm256_storeu_ps(x + 2 * i + 8, x1);
    }
    rope_scalar(x, i, half, pos, freqs);
}

/* ------------------------------------------------------------------ softmax, elementwise */

static void softmax(float *x, int n)
{
    int i = 0;
    float m = x[0];
    if (n >= W) {
        __m256 vm = _mm256_loadu_ps(x);
        for (i = W; i + W <= n; i += W) vm = _mm256_max_ps(vm, _mm256_loadu_ps(x + i));
        m = hmax_ps(vm);
    }
    for (; i < n; i++) m = x[i] > m ? x[i] : m;
    const __m256 vm = _mm256_set1_ps(m);
    __m256d s0 = _mm256_setzero_pd(), s1 = s0;
    for (i = 0; i < n; i += W) {
        const int k = n - i < W ? n - i : W;
        const __m256i msk = tail_mask(k);
        __m256 e = exp8(_mm256_sub_ps(_mm256_maskload_ps(x + i, msk), vm));
        e = _mm256_and_ps(e, _mm256_castsi256_ps(msk));
        _mm256_maskstore_ps(x + i, msk, e);
        s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
    const float r = (float)(1.0 / hsum_pd(_mm256_add_pd(s0, s1)));
    const __m256 vr = _mm256_set1_ps(r);
    for (i = 0; i + W <= n; i += W) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), vr));
    for (; i < n; i++) x[i] *= r;
}

static void silu(const float *x, float *y, size_t n)
{
    size_t i = 0;
    for (; i + W <= n; i += W) _mm256_storeu_ps(y + i, silu8(_mm256_loadu_ps(x + i)));
    if (i < n) {
        const __m256i msk = tail_mask((int)(n - i));
        _mm256_maskstore_ps(y + i, msk, silu8(_mm256_maskload_ps(x + i, msk)));
    }
}

static void mul(const float *a, const float *b, float *y, size_t n)
{
    size_t i = 0;
    for (; i + W <= n; i += W)
        _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
    for (; i < n; i++) y[i] = a[i] * b[i];
}

static void add(const float *a, const float *b, float *y, size_t n)
{
    size_t i = 0;
    for (; i + W <= n; i += W)
        _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
    for (; i < n; i++) y[i] = a[i] + b[i];
}

/* x s + t without FMA: bit-identical to the reference */
static void affine_rows(const float *x, size_t rows, int m, const float *s, const float *t,
                        float *y)
{
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * (size_t)m;
        float *yr = y + r * (size_t)m;
        int i = 0;
        for (; i + W <= m; i += W) {
            __m256 v = _mm256_mul_ps(_mm256_loadu_ps(xr + i), _mm256_loadu_ps(s + i));
            if (t) v = _mm256_add_ps(v, _mm256_loadu_ps(t + i));
            _mm256_storeu_ps(yr + i, v);
        }
        for (; i < m; i++) yr[i] = xr[i] * s[i] + (t ? t[i] : 0.0f);
    }
}

static void scale(const float *x, float a, float *y, size_t n)
{
    const __m256 va = _mm256_set1_ps(a);
    size_t i = 0;
    for (; i + W <= n; i += W) _mm256_storeu_ps(y + i, _mm256_mul_ps(va, _mm256_loadu_ps(x + i)));
    for (; i < n; i++) y[i] = a * x[i];
}

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
    for (; i + W <= n; i += W) _mm256_storeu_ps(y + i, half8(_mm_loadu_si128((const __m128i *)(x + i))));
    if (i < n) {
        uint16_t hb[W] = {0};
        float fb[W];
        memcpy(hb, x + i, sizeof(uint16_t) * (n - i));
        _mm256_storeu_ps(fb, half8(_mm_loadu_si128((const __m128i *)hb)));
        memcpy(y + i, fb, sizeof(float) * (n - i));
    }
}

static void bf16_to_f32(const uint16_t *x, float *y, size_t n)
{
    size_t i = 0;
    for (; i + W <= n; i += W) {
        __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(x + i)));
        _mm256_storeu_si256((__m256i *)(y + i), _mm256_slli_epi32(v, 16));
    }
    for (; i < n; i++) {
        uint32_t bits = (uint32_t)x[i] << 16;
        memcpy(&y[i], &bits, 4);
    }
}

/* ------------------------------------------------------------------ training */

/* The elementwise training kernels (train-impl.h) on eight floats per vector */
#define VF 8
typedef __m256 vf;
static inline vf vf_set1(float a) { return _mm256_set1_ps(a); }
static inline vf vf_add(vf a, vf b) { return _mm256_add_ps(a, b); }
static inline vf vf_sub(vf a, vf b) { return _mm256_sub_ps(a, b); }
static inline vf vf_mul(vf a, vf b) { return _mm256_mul_ps(a, b); }
static inline vf vf_div(vf a, vf b) { return _mm256_div_ps(a, b); }
static inline vf vf_sqrt(vf a) { return _mm256_sqrt_ps(a); }
static inline vf vf_exp(vf x) { return exp8(x); }
static inline vf vf_load(const float *p) { return _mm256_loadu_ps(p); }
static inline void vf_store(float *p, vf v) { _mm256_storeu_ps(p, v); }
static inline vf vf_load_part(const float *p, int k) { return _mm256_maskload_ps(p, tail_mask(k)); }
static inline void vf_store_part(float *p, vf v, int k) { _mm256_maskstore_ps(p, tail_mask(k), v); }

#include "train-impl.h"

/* max in fp32; e = exp8(l - max) summed in double (and kept in dl); dl = e (scale / sum) */
static double cross_entropy_row(const float *l, int n, int t, float scale, float *dl)
{
    const float lt = l[t];
    int i = 0;
    float mx = l[0];
    if (n >= W) {
        __m256 vm = _mm256_loadu_ps(l);
        for (i = W; i + W <= n; i += W) vm = _mm256_max_ps(vm, _mm256_loadu_ps(l + i));
        mx = hmax_ps(vm);
    }
    for (; i < n; i++) mx = l[i] > mx ? l[i] : mx;
    const __m256 vm = _mm256_set1_ps(mx);
    __m256d s0 = _mm256_setzero_pd(), s1 = s0;
    for (i = 0; i < n; i += W) {
        const int k = n - i < W ? n - i : W;
        const __m256i msk = tail_mask(k);
        __m256 e = exp8(_mm256_sub_ps(_mm256_maskload_ps(l + i, msk), vm));
        e = _mm256_and_ps(e, _mm256_castsi256_ps(msk));
        if (dl) _mm256_maskstore_ps(dl + i, msk, e);
        s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
    const double sum = hsum_pd(_mm256_add_pd(s0, s1)), lse = mx + log(sum);
    if (dl) {
        const float f = (float)(scale / sum);
        const __m256 vf = _mm256_set1_ps(f);
        for (i = 0; i + W <= n; i += W) _mm256_storeu_ps(dl + i, _mm256_mul_ps(_mm256_loadu_ps(dl + i), vf));
        for (; i < n; i++) dl[i] *= f;
        dl[t] -= scale;
    }
    return lse - lt;
}

/* The norm backward kernels (norm-backward-impl.h) on four doubles per vector */
#define VD 4
typedef __m256d vd;
static inline vd vd_set1(double a) { return _mm256_set1_pd(a); }
static inline vd vd_add(vd a, vd b) { return _mm256_add_pd(a, b); }
static inline vd vd_sub(vd a, vd b) { return _mm256_sub_pd(a, b); }
static inline vd vd_mul(vd a, vd b) { return _mm256_mul_pd(a, b); }
static inline vd vd_loadf(const float *p) { return _mm256_cvtps_pd(_mm_loadu_ps(p)); }
static inline vd vd_load(const double *p) { return _mm256_loadu_pd(p); }
static inline void vd_store(double *p, vd v) { _mm256_storeu_pd(p, v); }
static inline void vd_storef(float *p, vd v) { _mm_storeu_ps(p, _mm256_cvtpd_ps(v)); }
static inline double vd_hsum(vd v) { return hsum_pd(v); }

#include "norm-backward-impl.h"

/* ------------------------------------------------------------------ test hooks */

/* The vectorized exp and silu over n floats, for tests/test-kernels.c (call only where the
 * avx2 table is usable). */
void mg_avx2_exp(const float *x, float *y, size_t n);
void mg_avx2_exp(const float *x, float *y, size_t n)
{
    size_t i = 0;
    for (; i + W <= n; i += W) _mm256_storeu_ps(y + i, exp8(_mm256_loadu_ps(x + i)));
    if (i < n) {
        const __m256i msk = tail_mask((int)(n - i));
        _mm256_maskstore_ps(y + i, msk, exp8(_mm256_maskload_ps(x + i, msk)));
    }
}

const mg_kernels mg_kernels_avx2 = {
    .name = "avx2",
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
    .quantize_q8_0 = mg_avx2_quantize_q8_0,
    .quantize_q8_K = mg_avx2_quantize_q8_K,
    .dot_f16 = mg_avx2_dot_f16,
    .dot_bf16 = mg_avx2_dot_bf16,
    .dot_q8_0 = mg_avx2_dot_q8_0,
    .dot_q4_0 = mg_avx2_dot_q4_0,
    .dot_q4_K = mg_avx2_dot_q4_K,
    .dot_q6_K = mg_avx2_dot_q6_K,
    .dequant_q8_0 = mg_avx2_dequant_q8_0,
    .dequant_q4_0 = mg_avx2_dequant_q4_0,
    .dequant_q4_K = mg_avx2_dequant_q4_K,
    .dequant_q6_K = mg_avx2_dequant_q6_K,
};

/* cema-impl.h - the CEMA scan of the x86 kernel tables (AVX2, AVX-512), written once (the
 * NEON table keeps the reference's unfused order, neon.c; kernels.h states the math).
 *
 * Two ways of vectorizing, which compute exactly the same floats, so that a channel's result
 * depends neither on L nor on the channel range a thread is given (tests/test-cema.c compares
 * 1 and 2 threads bit for bit), CB = VF / 2 components per vector:
 *   h_n <- fma(qr, hr, fma(-qi, hi, p x)) + i fma(qr, hi, qi hr)     (p x and qi hr rounded)
 *   the products eta_n h_n go into 2 CB running sums (fma):
 *     a[2m] += er_n nr_n,  a[2m+1] += ei_n ni_n   for n = j CB + m, j = 0, 1, ...
 *   d_m = a[2m] - a[2m+1], summed as a halving tree: d_m += d_{m+w} for w = CB/2, .., 1;
 *   y = omega x + d_0     (AVX2: (d0 + d2) + (d1 + d3); the two tables differ by roundings)
 * cema_channel does one channel with CB interleaved components per vector (the state, q and
 * eta of a channel are contiguous): for short L (decoding) and large N. cema_block does VF
 * channels per vector (x and y rows are contiguous in d, the last block partial), the block's
 * parameters transposed into stack buffers: for longer L.
 *
 * An ISA file includes this after complex-impl.h's vocabulary (VF, vf, vf_set1, vf_mul,
 * vf_sub, vf_load, vf_store, vf_load_part, vf_store_part, vf_dup_even, vf_dup_odd,
 * vf_swap_pairs) and, with its own intrinsics:
 *   vf vf_fmadd(vf a, vf b, vf c);    a b + c, rounded once
 *   vf vf_fnmadd(vf a, vf b, vf c);   c - a b, rounded once
 *   vf vf_load_pairs(const float *p, int k);   (p0, 0, p1, 0, ...) from k <= VF/2 floats
 *   vf vf_neg_even(vf v);             the even lanes negated
 *   vf vf_odd_negzero(vf v);          the odd lanes' sign set (where they hold 0: -0) */
#ifndef MG_CEMA_IMPL_H
#define MG_CEMA_IMPL_H

#include <stddef.h>
#include <string.h>

#define CB (VF / 2)
#define CEMA_NMAX 64    /* largest N done across channels */
#define CEMA_LMIN 16    /* shortest L done across channels */
#define CEMA_PREFETCH 8 /* rows ahead: x and y rows are D floats apart, each its own page */

/* one step of CB interleaved components: q, h complex; p as (p, 0) pairs; x broadcast */
static inline vf cema_step(vf qv, vf hv, vf pv, vf xv)
{
    /* (p x, -0): the odd lanes' fma then rounds qi hr exactly like a product */
    const vf px = vf_odd_negzero(vf_mul(pv, xv));
    const vf a = vf_fmadd(vf_neg_even(vf_dup_odd(qv)), vf_swap_pairs(hv), px);
    return vf_fmadd(vf_dup_even(qv), hv, a);
}

static void cema_channel(const float *x, int L, int D, int N, int d, const float *p,
                         const float *q, const float *eta, const float *omega, float *h,
                         float *y)
{
    const float *pd = p + (size_t)d * N, *qd = q + (size_t)d * N * 2;
    const float *ed = eta + (size_t)d * N * 2;
    float *hd = h + (size_t)d * N * 2;
    const float om = omega[d];
    const int rem = N % CB, nfull = N - rem;
    for (int t = 0; t < L; t++) {
        const float xt = x[(size_t)t * D + d];
        const vf xv = vf_set1(xt);
        vf acc = vf_set1(0.0f);
        for (int n = 0; n < nfull; n += CB) {
            const vf hv = cema_step(vf_load(qd + 2 * n), vf_load(hd + 2 * n),
                                    vf_load_pairs(pd + n, CB), xv);
            vf_store(hd + 2 * n, hv);
            acc = vf_fmadd(vf_load(ed + 2 * n), hv, acc);
        }
        if (rem) {
            const int k = 2 * rem, n = nfull;
            const vf hv = cema_step(vf_load_part(qd + 2 * n, k), vf_load_part(hd + 2 * n, k),
                                    vf_load_pairs(pd + n, rem), xv);
            vf_store_part(hd + 2 * n, hv, k);
            acc = vf_fmadd(vf_load_part(ed + 2 * n, k), hv, acc);
        }
        float s[VF]; /* s[2m] = d_m */
        vf_store(s, vf_sub(acc, vf_swap_pairs(acc)));
        for (int w = CB / 2; w >= 1; w /= 2)
            for (int m = 0; m < w; m++) s[2 * m] += s[2 * (m + w)];
        y[(size_t)t * D + d] = om * xt + s[0];
    }
}

/* The block's state, parameters and running sums: one vector of VF channels per component */
typedef struct {
    _Alignas(4 * VF) float P[CEMA_NMAX][VF], QR[CEMA_NMAX][VF], QI[CEMA_NMAX][VF];
    _Alignas(4 * VF) float ER[CEMA_NMAX][VF], EI[CEMA_NMAX][VF], HR[CEMA_NMAX][VF];
    _Alignas(4 * VF) float HI[CEMA_NMAX][VF];
} cema_block_state;

/* component n of every channel of the block at one step; ar, ai its two running sums */
static inline void cema_component(cema_block_state *B, int n, vf xv, vf *ar, vf *ai)
{
    const vf hr = vf_load(B->HR[n]), hi = vf_load(B->HI[n]);
    const vf qr = vf_load(B->QR[n]), qi = vf_load(B->QI[n]);
    const vf px = vf_mul(vf_load(B->P[n]), xv);
    const vf nr = vf_fmadd(qr, hr, vf_fnmadd(qi, hi, px));
    const vf ni = vf_fmadd(qr, hi, vf_mul(qi, hr));
    vf_store(B->HR[n], nr);
    vf_store(B->HI[n], ni);
    *ar = vf_fmadd(vf_load(B->ER[n]), nr, *ar);
    *ai = vf_fmadd(vf_load(B->EI[n]), ni, *ai);
}

/* channels d .. d+nd-1 (nd <= VF), N <= CEMA_NMAX */
static void cema_block(const float *x, int L, int D, int N, int d, int nd, const float *p,
                       const float *q, const float *eta, const float *omega, float *h,
                       float *y)
{
    cema_block_state B;
    if (nd < VF) { /* the missing channels' lanes: 0 */
        const size_t sz = sizeof(float) * VF * N;
        memset(B.P, 0, sz); memset(B.QR, 0, sz); memset(B.QI, 0, sz); memset(B.ER, 0, sz);
        memset(B.EI, 0, sz); memset(B.HR, 0, sz); memset(B.HI, 0, sz);
    }
    for (int j = 0; j < nd; j++) {
        const size_t c = (size_t)(d + j) * N;
        for (int n = 0; n < N; n++) {
            B.P[n][j] = p[c + n];
            B.QR[n][j] = q[2 * (c + n)];
            B.QI[n][j] = q[2 * (c + n) + 1];
            B.ER[n][j] = eta[2 * (c + n)];
            B.EI[n][j] = eta[2 * (c + n) + 1];
            B.HR[n][j] = h[2 * (c + n)];
            B.HI[n][j] = h[2 * (c + n) + 1];
        }
    }
    const vf om = vf_load_part(omega + d, nd);
    for (int t = 0; t < L; t++) {
        if (t + CEMA_PREFETCH < L) {
            __builtin_prefetch(x + (size_t)(t + CEMA_PREFETCH) * D + d);
            __builtin_prefetch(y + (size_t)(t + CEMA_PREFETCH) * D + d);
        }
        const vf xv = vf_load_part(x + (size_t)t * D + d, nd);
        /* the loops over m unrolled, so that a and s live in registers */
        vf a[2 * CB], s[CB];
#pragma GCC unroll 16
        for (int m = 0; m < 2 * CB; m++) a[m] = vf_set1(0.0f);
        int n = 0;
        for (; n + CB <= N; n += CB) {
#pragma GCC unroll 8
            for (int m = 0; m < CB; m++) cema_component(&B, n + m, xv, &a[2 * m], &a[2 * m + 1]);
        }
#pragma GCC unroll 8
        for (int m = 0; m < CB; m++)
            if (n + m < N) cema_component(&B, n + m, xv, &a[2 * m], &a[2 * m + 1]);
#pragma GCC unroll 8
        for (int m = 0; m < CB; m++) s[m] = vf_sub(a[2 * m], a[2 * m + 1]); /* d_m */
#pragma GCC unroll 8
        for (int w = CB / 2; w >= 1; w /= 2) /* the halving tree */
#pragma GCC unroll 8
            for (int m = 0; m < w; m++) s[m] = vf_add(s[m], s[m + w]);
        vf_store_part(y + (size_t)t * D + d, vf_add(vf_mul(om, xv), s[0]), nd);
    }
    for (int j = 0; j < nd; j++) {
        const size_t c = (size_t)(d + j) * N;
        for (int n = 0; n < N; n++) {
            h[2 * (c + n)] = B.HR[n][j];
            h[2 * (c + n) + 1] = B.HI[n][j];
        }
    }
}

static void cema_scan(const float *x, int L, int D, int N, int d0, int d1, const float *p,
                      const float *q, const float *eta, const float *omega, float *h, float *y)
{
    if (L >= CEMA_LMIN && N <= CEMA_NMAX)
        for (int d = d0; d < d1; d += VF)
            cema_block(x, L, D, N, d, d1 - d < VF ? d1 - d : VF, p, q, eta, omega, h, y);
    else
        for (int d = d0; d < d1; d++) cema_channel(x, L, D, N, d, p, q, eta, omega, h, y);
}

#endif

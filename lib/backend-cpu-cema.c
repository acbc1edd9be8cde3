/* backend-cpu-cema.c - the CEMA op of the CPU backend, forward and backward, and its planner
 * glue (cema-plan.h, docs/cema.md).
 *
 * Three implementations of   y_t = Re(sum_n eta_n h_t,n) + omega x_t,  h_t = q h_t-1 + p x_t
 * over L rows of D channels, continuing from the hidden state h:
 *   scan          the simd/ kernel over groups of 16 channels, groups split across threads;
 *   scan-chunked  time split into blocks of cema_chunk_len(L) rows (a function of L only):
 *                 every block runs the kernel from the zero state (the first from h); then
 *                 (after the only barrier) each block's true start state is folded in
 *                 double (h_in' = q^B h_in + h_local) and its first rows get the carried-
 *                 state term Re(sum_n eta q^(t+1) h_in) by a zero-input run of the kernel;
 *   fft           the causal convolution with the CEMA kernel (backend-cpu-cema-fft.c).
 * Two of the training backward (from the zero state, S sequences of L rows):
 *   scan          the adjoint recurrence in double (below);
 *   fft           FFT correlations (backend-cpu-cema-fft.c).
 * For a given implementation the result does not depend on the thread count, bit for bit:
 * channels are computed the same whichever thread gets them (the kernel's property), the
 * chunked scan's blocks depend on L only, and the backward sums sequences in order.
 *
 * The planner glue: MEGALODON_CEMA, then the algorithm asked for, then under MG_CEMA_AUTO the
 * cost model (cema_estimate, cema_estimate_backward) or, in measure mode, the candidates
 * timed once per shape on the call's own input and remembered in the wisdom file (backend tag
 * "cpu" for the forward, "cpu-bwd/sK" for the backward). */
#include "config.h"

#include <fftw3.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend-cpu-cema.h"
#include "error.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#define SCAN_TILE 512       /* rows per kernel call of the plain scan ... */
#define SCAN_TILE_MIN_D 256 /* ... when rows are at least 1 KiB */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ------------------------------------------------------------------ setup */

/* The settings (MEGALODON_CEMA*), read once for the forward and the backward; in measure mode
 * the forward's wisdom (the backward's is made per S bucket on first use). */
int cpu_cema_init(cpu_ctx *c)
{
    struct cema_cpu *cs = calloc(1, sizeof *cs);
    if (!cs) return mg_seterr(MG_ERR_NOMEM, "out of memory for the CPU backend's CEMA state");
    int rc = cema_settings_read(&cs->set);
    if (rc) {
        cema_settings_free(&cs->set);
        free(cs);
        return rc;
    }
    if (cs->set.mode == CEMA_PLAN_MEASURE) {
        char build[160];
        snprintf(build, sizeof build, "megalodon-%s+%s", PACKAGE_VERSION, fftwf_version);
        cs->wis = cema_wisdom_new(cs->set.wisdom_path, cs->set.wisdom_default, build,
                                  c->k->name, "cpu");
        if (!cs->wis) {
            cema_settings_free(&cs->set);
            free(cs);
            return mg_seterr(MG_ERR_NOMEM, "out of memory for the CPU backend's CEMA wisdom");
        }
    }
    pthread_mutex_init(&cs->lock, NULL);
    pthread_mutex_init(&cs->measure_lock, NULL);
    pthread_mutex_init(&cs->bwd_measure_lock, NULL);
    c->cema = cs;
    return MG_OK;
}

void cpu_cema_free(cpu_ctx *c)
{
    struct cema_cpu *cs = c->cema;
    if (!cs) return;
    cema_fft_free(cs);
    cema_wisdom_free(cs->wis);
    for (int i = 0; i < BWD_BUCKETS; i++) cema_wisdom_free(cs->bwd_wis[i]);
    cema_settings_free(&cs->set);
    pthread_mutex_destroy(&cs->lock);
    pthread_mutex_destroy(&cs->measure_lock);
    pthread_mutex_destroy(&cs->bwd_measure_lock);
    free(cs);
    c->cema = NULL;
}

/* Synthetic input for measuring a query's shape (no real input): n floats in [-1, 1) from a
 * fixed linear congruential sequence; NULL with the error set when out of memory. */
static float *synthetic_input(size_t n)
{
    float *xs = malloc(sizeof(float) * n);
    if (!xs) {
        mg_seterr(MG_ERR_NOMEM, "out of memory for the synthetic input of a CEMA measurement "
                                "(%zu floats)", n);
        return NULL;
    }
    uint32_t s = 12345;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        xs[i] = (float)((int32_t)s >> 8) * 0x1p-23f;
    }
    return xs;
}

/* ------------------------------------------------------------------ scan */

/* The kernel over channels [d0, d1) in tiles of SCAN_TILE rows when rows are long: each row
 * of x and y is then its own page, and a tile's pages stay in the TLB while all the range's
 * channel blocks pass over it (untiled, every block walks all L pages again: measured 4.1 vs
 * 3.8 ns per token-channel at D = 1024, L = 4096). The kernel computes the same floats
 * whatever L, so tiling changes no bit. */
static void scan_range(const mg_kernels *K, const float *x, int L, const mg_cema_coeffs *c,
                       int d0, int d1, float *h, float *y)
{
    const int D = c->D, N = c->N;
    const int tile = D >= SCAN_TILE_MIN_D && L > 2 * SCAN_TILE ? SCAN_TILE : L;
    for (int t0 = 0; t0 < L; t0 += tile)
        K->cema_scan(x + (size_t)t0 * D, imin(tile, L - t0), D, N, d0, d1, c->p, c->q, c->eta,
                     c->omega, h, y + (size_t)t0 * D);
}

static void run_scan(mg_backend *be, const float *x, int L, const mg_cema_coeffs *c, float *h,
                     float *y)
{
    const mg_kernels *K = ctx_of(be)->k;
    const int D = c->D;
    const groups gr = groups_of(x, D);
    /* one token of a small model is microseconds of work: no parallel region for it */
#pragma omp parallel num_threads(be->n_threads) if (D >= 64 && (size_t)L * D * c->N >= 65536)
    {
        int t = 0, T = 1;
#ifdef _OPENMP
        t = omp_get_thread_num();
        T = omp_get_num_threads();
#endif
        /* a contiguous range of groups per thread; the narrow first group on its own so
         * that the kernel's vector blocks start at the aligned ones */
        int g0 = (int)((int64_t)gr.n * t / T), g1 = (int)((int64_t)gr.n * (t + 1) / T);
        int d0, d1, nd;
        if (g0 < g1) {
            group_at(&gr, g0, &d0, &nd);
            if (gr.s && g0 == 0) {
                scan_range(K, x, L, c, 0, nd, h, y);
                d0 = nd;
            }
            group_at(&gr, g1 - 1, &d1, &nd);
            d1 += nd;
            if (d0 < d1) scan_range(K, x, L, c, d0, d1, h, y);
        }
    }
}

/* ------------------------------------------------------------------ chunked scan */

static int run_scan_chunked(mg_backend *be, const float *x, int L, const mg_cema_coeffs *c,
                            float *h, float *y)
{
    const mg_kernels *K = ctx_of(be)->k;
    const int D = c->D, N = c->N;
    const groups gr = groups_of(x, D);
    const int ng = gr.n, decay = cema_decay_steps(qmax_of(c, 0, D));
    const int B = cema_chunk_len(L), nb = (L + B - 1) / B;
    if (nb < 2) {
        run_scan(be, x, L, c, h, y);
        return MG_OK;
    }
    const int T = be->n_threads > 0 ? be->n_threads : 1;
    const size_t DN2 = (size_t)D * N * 2;
    const size_t per_thread = (size_t)B * G + (size_t)TILE * G + 2 * G + (size_t)G * N * 2;
    float *hl = malloc(sizeof(float) * DN2 * nb);
    float *tb = calloc((size_t)T * per_thread, sizeof(float));
    if (!hl || !tb) {
        free(hl);
        free(tb);
        return mg_seterr(MG_ERR_NOMEM,
                         "out of memory for the CEMA chunked scan's buffers (L=%d, D=%d)", L, D);
    }

#pragma omp parallel num_threads(T)
    {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        float *corr = tb + (size_t)tid * per_thread, *zeros = corr + (size_t)B * G;
        float *zom = zeros + (size_t)TILE * G, *hb = zom + 2 * G;

        /* 1: every block from the zero state (block 0 from h) */
#pragma omp for schedule(static)
        for (int u = 0; u < ng * nb; u++) {
            const int g = u / nb, k = u % nb, t0 = k * B, len = imin(B, L - t0);
            int d, nd;
            group_at(&gr, g, &d, &nd);
            float *hk = hl + DN2 * k + (size_t)d * N * 2;
            if (k == 0) memcpy(hk, h + (size_t)d * N * 2, sizeof(float) * nd * N * 2);
            else memset(hk, 0, sizeof(float) * nd * N * 2);
            K->cema_scan(x + (size_t)t0 * D + d, len, D, N, 0, nd, c->p + (size_t)d * N,
                         c->q + (size_t)d * N * 2, c->eta + (size_t)d * N * 2, c->omega + d, hk,
                         y + (size_t)t0 * D + d);
        }

        /* 2: blocks 1.. get Re(sum_n eta q^(t+1) h_in) on their first min(B, decay) rows,
         * h_in (the true state at the block's start) propagated in double from the end of
         * block 0 over the local end states: h_in(k+1) = q^B h_in(k) + h_local(k). Every
         * unit folds its own h_in (O(nb) per component, in the same order whichever thread
         * runs it), so that one barrier suffices; the last block's unit writes the new h. */
        unsigned fm = ftz_enter();
#pragma omp for schedule(static)
        for (int u = 0; u < ng * (nb - 1); u++) {
            const int g = u / (nb - 1), k = 1 + u % (nb - 1), t0 = k * B;
            const int len = imin(imin(B, L - t0), decay), last = L - (nb - 1) * B;
            int d, nd;
            group_at(&gr, g, &d, &nd);
            for (int i = 0; i < nd * N; i++) {
                const size_t j = ((size_t)d * N + i) * 2;
                double qbr, qbi;
                cpow_d(c->q[j], c->q[j + 1], B, &qbr, &qbi);
                double hr = hl[j], hi = hl[j + 1]; /* end of block 0: h_in(1) */
                for (int kk = 1; kk < k; kk++) {
                    const float *e = hl + DN2 * kk + j;
                    double t = qbr * hr - qbi * hi + e[0];
                    hi = qbr * hi + qbi * hr + e[1];
                    hr = t;
                }
                hb[2 * i] = (float)hr;
                hb[2 * i + 1] = (float)hi;
                if (k == nb - 1) { /* h_L = q^last h_in(nb-1) + h_local(nb-1) */
                    double qlr, qli;
                    const float *e = hl + DN2 * k + j;
                    cpow_d(c->q[j], c->q[j + 1], last, &qlr, &qli);
                    h[j] = (float)(qlr * hr - qli * hi + e[0]);
                    h[j + 1] = (float)(qlr * hi + qli * hr + e[1]);
                }
            }
            if (state_is_zero(hb, (size_t)nd * N * 2)) continue;
            zero_input_scan(K, len, nd, N, c->p + (size_t)d * N, c->q + (size_t)d * N * 2,
                            c->eta + (size_t)d * N * 2, hb, corr, zeros, zom);
            for (int t = 0; t < len; t++) {
                float *yr = y + (size_t)(t0 + t) * D + d;
                const float *cr = corr + (size_t)t * G;
                for (int ch = 0; ch < nd; ch++) yr[ch] += cr[ch];
            }
        }
        ftz_leave(fm);
    }
    free(hl);
    free(tb);
    return MG_OK;
}

/* ------------------------------------------------------------------ adjoint scan */

/* Adjoint of the recurrence, per channel (h_{-1} = 0):
 *   h_t = q h_{t-1} + p x_t ,  y_t = Re(sum_n eta_n h_t,n) + omega x_t
 *   G_t = dy_t conj(eta) + conj(q) G_{t+1}           (G = dL/dRe h + i dL/dIm h)
 *   dx_t = omega dy_t + sum_n p Re(G_t,n) ;  dp += sum_t x_t Re(G_t)
 *   dq += sum_t G_t conj(h_{t-1}) ;  deta += sum_t dy_t conj(h_t) ;  domega += sum_t dy_t x_t
 * The forward states are recomputed per channel (L x N complex of scratch). Channels are
 * independent, so threads split them; sequences are summed in order. */
static int cema_backward_scan(mg_backend *be, const float *x, int S, int L,
                              const mg_cema_coeffs *c, const float *dy, float *dx, float *dp,
                              float *dq, float *deta, float *domega)
{
    const int D = c->D, N = c->N;
    int fail = 0;
#pragma omp parallel num_threads(be->n_threads) if (D > 1)
    {
        double *hs = malloc(sizeof(double) * 2 * (size_t)N * (L + 1));
        double *acc = malloc(sizeof(double) * 7 * (size_t)N);
        if (!hs || !acc) {
#pragma omp atomic write
            fail = 1;
        }
#pragma omp for schedule(static)
        for (int d = 0; d < D; d++) {
            if (!hs || !acc) continue;
            const float *p = c->p + (size_t)d * N, *q = c->q + (size_t)d * 2 * N,
                        *eta = c->eta + (size_t)d * 2 * N;
            const double om = c->omega[d];
            double *ap = acc, *aqr = acc + N, *aqi = acc + 2 * N, *aer = acc + 3 * N,
                   *aei = acc + 4 * N, *gr = acc + 5 * N, *gi = acc + 6 * N;
            memset(acc, 0, sizeof(double) * 5 * N);
            double aom = 0;
            for (int s = 0; s < S; s++) {
                const float *xs = x + (size_t)s * L * D + d, *dys = dy + (size_t)s * L * D + d;
                float *dxs = dx + (size_t)s * L * D + d;
                /* forward: hs[t+1] = h_t, hs[0] = h_{-1} = 0 */
                memset(hs, 0, sizeof(double) * 2 * N);
                for (int t = 0; t < L; t++) {
                    const double xt = xs[(size_t)t * D];
                    const double *hp = hs + (size_t)t * 2 * N;
                    double *hc = hs + (size_t)(t + 1) * 2 * N;
                    for (int n = 0; n < N; n++) {
                        const double qr = q[2 * n], qi = q[2 * n + 1];
                        hc[2 * n] = qr * hp[2 * n] - qi * hp[2 * n + 1] + p[n] * xt;
                        hc[2 * n + 1] = qr * hp[2 * n + 1] + qi * hp[2 * n];
                    }
                }
                memset(gr, 0, sizeof(double) * 2 * N); /* gr, gi contiguous */
                for (int t = L - 1; t >= 0; t--) {
                    const double g = dys[(size_t)t * D], xt = xs[(size_t)t * D];
                    const double *hc = hs + (size_t)(t + 1) * 2 * N, *hp = hs + (size_t)t * 2 * N;
                    double dxt = om * g;
                    aom += g * xt;
                    for (int n = 0; n < N; n++) {
                        const double qr = q[2 * n], qi = q[2 * n + 1];
                        /* G_t = g conj(eta) + conj(q) G_{t+1} */
                        const double nr = g * eta[2 * n] + qr * gr[n] + qi * gi[n];
                        const double ni = -g * eta[2 * n + 1] + qr * gi[n] - qi * gr[n];
                        gr[n] = nr;
                        gi[n] = ni;
                        dxt += p[n] * nr;
                        ap[n] += xt * nr;
                        /* G conj(h_{t-1}) */
                        aqr[n] += nr * hp[2 * n] + ni * hp[2 * n + 1];
                        aqi[n] += ni * hp[2 * n] - nr * hp[2 * n + 1];
                        /* g conj(h_t) */
                        aer[n] += g * hc[2 * n];
                        aei[n] -= g * hc[2 * n + 1];
                    }
                    dxs[(size_t)t * D] = (float)dxt;
                }
            }
            for (int n = 0; n < N; n++) {
                const size_t i = (size_t)d * N + n;
                dp[i] += (float)ap[n];
                dq[2 * i] += (float)aqr[n];
                dq[2 * i + 1] += (float)aqi[n];
                deta[2 * i] += (float)aer[n];
                deta[2 * i + 1] += (float)aei[n];
            }
            domega[d] += (float)aom;
        }
        free(hs);
        free(acc);
    }
    if (fail)
        return mg_seterr(MG_ERR_NOMEM,
                         "out of memory for the CEMA backward scan's states (L=%d, N=%d)", L, N);
    return MG_OK;
}

/* ------------------------------------------------------------------ forward planner */

static int run_algo(mg_backend *be, cema_run r, const float *x, int L, const mg_cema_coeffs *c,
                    float *h, float *y)
{
    switch (r) {
    case CEMA_RUN_FFT: return cema_fft_forward(be, x, L, c, h, y);
    case CEMA_RUN_SCAN_CHUNKED: return run_scan_chunked(be, x, L, c, h, y);
    default: run_scan(be, x, L, c, h, y); return MG_OK;
    }
}

static int chunked_possible(int L, int T) { return T > 1 && cema_chunk_len(L) < L; }

static cema_run plan_estimate(mg_backend *be, int L, const mg_cema_coeffs *c,
                              double ns[CEMA_N_RUNS])
{
    struct cema_cpu *cs = ctx_of(be)->cema;
    note_seen(cs, c);
    pthread_mutex_lock(&cs->lock);
    const size_t layers = cs->n_seen > 0 ? (size_t)cs->n_seen : 1, budget = cs->set.cache_bytes;
    pthread_mutex_unlock(&cs->lock);
    const int decay = cema_decay_steps(qmax_of(c, 0, c->D));
    int nfft, rows;
    cema_fft_blocks(L, decay, &nfft, &rows);
    const size_t bytes = sizeof(fftwf_complex) * cstride(nfft > 0 ? nfft : 2) * (size_t)c->D;
    cema_problem pb = {L, c->D, c->N, be->n_threads > 0 ? be->n_threads : 1, decay,
                       1, /* streaming: the state is carried but for the first call */
                       nfft > 0 && bytes <= budget / layers};
    return cema_estimate(ctx_of(be)->k->name, &pb, ns);
}

/* Time the candidates on this input (h NULL: a synthetic state) and remember the fastest. */
static int plan_measure(mg_backend *be, int L, const mg_cema_coeffs *c, const float *x,
                        const float *h, cema_run *out)
{
    struct cema_cpu *cs = ctx_of(be)->cema;
    const int D = c->D, N = c->N, T = be->n_threads > 0 ? be->n_threads : 1;
    const int Lb = cema_len_bucket(L);
    if (cema_wisdom_get(cs->wis, Lb, D, N, T, out)) return MG_OK;
    pthread_mutex_lock(&cs->measure_lock);
    if (cema_wisdom_get(cs->wis, Lb, D, N, T, out)) {
        pthread_mutex_unlock(&cs->measure_lock);
        return MG_OK;
    }
    const size_t DN2 = (size_t)D * N * 2;
    float *y2 = malloc(sizeof(float) * (size_t)L * D), *h2 = malloc(sizeof(float) * DN2);
    float *h0 = malloc(sizeof(float) * DN2);
    int rc = MG_OK;
    if (!y2 || !h2 || !h0) {
        double ns[CEMA_N_RUNS];
        *out = plan_estimate(be, L, c, ns); /* no memory to measure: do not remember */
    } else {
        if (h && !state_is_zero(h, DN2)) memcpy(h0, h, sizeof(float) * DN2);
        else /* measure the streaming case: a carried state */
            for (size_t i = 0; i < DN2; i++) h0[i] = 0.01f * (float)((int)(i * 7919 % 13) - 6);
        double ns[CEMA_N_RUNS] = {-1.0, -1.0, -1.0};
        cema_run best = CEMA_RUN_SCAN;
        for (int r = 0; r < CEMA_N_RUNS && rc == MG_OK; r++) {
            if (r == CEMA_RUN_SCAN_CHUNKED && !chunked_possible(L, T)) continue;
            double tmin = INFINITY;
            for (int rep = 0; rep < 2 && rc == MG_OK; rep++) { /* the first also warms up */
                memcpy(h2, h0, sizeof(float) * DN2);
                double t0 = now_s();
                rc = run_algo(be, (cema_run)r, x, L, c, h2, y2);
                double t = now_s() - t0;
                if (t < tmin) tmin = t;
            }
            ns[r] = tmin * 1e9 / ((double)L * D);
            if (ns[r] < ns[best]) best = (cema_run)r;
        }
        if (rc == MG_OK) {
            cema_wisdom_put(cs->wis, Lb, D, N, T, best, ns);
            cema_plan_count_measurement();
            *out = best;
        }
    }
    pthread_mutex_unlock(&cs->measure_lock);
    free(y2);
    free(h2);
    free(h0);
    return rc;
}

/* What to run for algo (after MEGALODON_CEMA). x may be NULL (a query): measuring then uses
 * synthetic input. */
static int resolve(mg_backend *be, mg_cema_algo algo, int L, const mg_cema_coeffs *c,
                   const float *x, const float *h, cema_run *out)
{
    struct cema_cpu *cs = ctx_of(be)->cema;
    const cema_algo a = cs->set.override >= 0 ? (cema_algo)cs->set.override : (cema_algo)algo;
    *out = CEMA_RUN_SCAN;
    if (L <= 1) return MG_OK; /* decode: always the recurrence */
    switch (a) {
    case CEMA_ALGO_SCAN: return MG_OK;
    case CEMA_ALGO_FFT: *out = CEMA_RUN_FFT; return MG_OK;
    case CEMA_ALGO_CHUNKED: *out = CEMA_RUN_SCAN_CHUNKED; return MG_OK;
    case CEMA_ALGO_AUTO: break;
    default: return mg_seterr(MG_ERR_INVALID_ARG, "unknown CEMA algorithm %d", (int)a);
    }
    if (cs->set.mode != CEMA_PLAN_MEASURE) {
        double ns[CEMA_N_RUNS];
        *out = plan_estimate(be, L, c, ns);
        return MG_OK;
    }
    if (x) return plan_measure(be, L, c, x, h, out);
    float *xs = synthetic_input((size_t)L * c->D);
    if (!xs) return MG_ERR_NOMEM;
    int rc = plan_measure(be, L, c, xs, NULL, out);
    free(xs);
    return rc;
}

int cpu_cema(mg_backend *be, mg_cema_algo algo, const float *x, int L, const mg_cema_coeffs *c,
             float *h, float *y)
{
    if (L <= 0) return MG_OK;
    cema_run r;
    TRY(resolve(be, algo, L, c, x, h, &r));
    return run_algo(be, r, x, L, c, h, y);
}

/* ------------------------------------------------------------------ backward planner */

static int s_bucket_index(int S)
{
    int i = 0, b = 1;
    while (b < S && i < BWD_BUCKETS - 1) b *= 2, i++;
    return i;
}

/* The wisdom of this S bucket (created on first use, under bwd_measure_lock). */
static cema_wisdom *bwd_wisdom(mg_backend *be, struct cema_cpu *cs, int S)
{
    const int i = s_bucket_index(S);
    if (!cs->bwd_wis[i]) {
        char build[160], tag[32];
        snprintf(build, sizeof build, "megalodon-%s+%s", PACKAGE_VERSION, fftwf_version);
        snprintf(tag, sizeof tag, "cpu-bwd/s%d", 1 << i);
        cs->bwd_wis[i] = cema_wisdom_new(cs->set.wisdom_path, cs->set.wisdom_default, build,
                                         ctx_of(be)->k->name, tag);
    }
    return cs->bwd_wis[i];
}

static int bwd_run(mg_backend *be, cema_run r, const float *x, int S, int L,
                   const mg_cema_coeffs *c, const float *dy, float *dx, float *dp, float *dq,
                   float *deta, float *domega)
{
    if (r == CEMA_RUN_FFT) return cema_fft_backward(be, x, S, L, c, dy, dx, dp, dq, deta, domega);
    return cema_backward_scan(be, x, S, L, c, dy, dx, dp, dq, deta, domega);
}

static cema_run bwd_estimate(mg_backend *be, int S, int L, const mg_cema_coeffs *c,
                             double ns[CEMA_N_RUNS])
{
    double qmax = 0;
    for (size_t i = 0; i < (size_t)c->D * c->N; i++) {
        const double a = hypot(c->q[2 * i], c->q[2 * i + 1]);
        if (a > qmax) qmax = a;
    }
    cema_bwd_problem pb = {S, L, c->D, c->N, be->n_threads > 0 ? be->n_threads : 1,
                           cema_bwd_kernel_steps(qmax, L)};
    return cema_estimate_backward(&pb, ns);
}

/* Measure mode: the remembered choice of this shape, or time both candidates on (x, dy)
 * into scratch gradients (twice each, the first also warming up; the faster second run
 * wins) and remember the faster. The caller's gradients are not touched here. */
static int bwd_measure(mg_backend *be, struct cema_cpu *cs, const float *x, int S, int L,
                       const mg_cema_coeffs *c, const float *dy, cema_run *out)
{
    const int D = c->D, N = c->N, T = be->n_threads > 0 ? be->n_threads : 1;
    const int Lb = cema_len_bucket(L);
    pthread_mutex_lock(&cs->bwd_measure_lock);
    cema_wisdom *w = bwd_wisdom(be, cs, S);
    if (w && cema_wisdom_get(w, Lb, D, N, T, out)) {
        pthread_mutex_unlock(&cs->bwd_measure_lock);
        return MG_OK;
    }
    const size_t DN = (size_t)D * N;
    float *sdx = malloc(sizeof(float) * (size_t)S * L * D);
    float *sg = malloc(sizeof(float) * (5 * DN + D));
    int rc = MG_OK;
    if (!w || !sdx || !sg) {
        double ns[CEMA_N_RUNS];
        *out = bwd_estimate(be, S, L, c, ns); /* no memory to measure: do not remember */
    } else {
        double ns[CEMA_N_RUNS] = {-1.0, -1.0, -1.0};
        const cema_run cand[2] = {CEMA_RUN_SCAN, CEMA_RUN_FFT};
        cema_run best = CEMA_RUN_SCAN;
        for (int k = 0; k < 2 && rc == MG_OK; k++) {
            double tmin = INFINITY;
            for (int rep = 0; rep < 2 && rc == MG_OK; rep++) {
                memset(sg, 0, sizeof(float) * (5 * DN + D));
                const double t0 = now_s();
                rc = bwd_run(be, cand[k], x, S, L, c, dy, sdx, sg, sg + DN, sg + 3 * DN,
                             sg + 5 * DN);
                const double t = now_s() - t0;
                if (t < tmin) tmin = t;
            }
            ns[cand[k]] = tmin * 1e9 / ((double)S * L * D);
            if (ns[cand[k]] < ns[best]) best = cand[k];
        }
        if (rc == MG_OK) {
            cema_wisdom_put(w, Lb, D, N, T, best, ns);
            cema_plan_count_measurement();
            *out = best;
        }
    }
    pthread_mutex_unlock(&cs->bwd_measure_lock);
    free(sdx);
    free(sg);
    return rc;
}

/* What to run for algo. x, dy NULL: a query (measuring then uses synthetic input). */
static int bwd_resolve(mg_backend *be, mg_cema_algo algo, const float *x, int S, int L,
                       const mg_cema_coeffs *c, const float *dy, cema_run *out)
{
    struct cema_cpu *cs = ctx_of(be)->cema;
    const cema_algo a = cs->set.override >= 0 ? (cema_algo)cs->set.override : (cema_algo)algo;
    *out = CEMA_RUN_SCAN;
    switch (a) {
    case CEMA_ALGO_SCAN: return MG_OK;
    case CEMA_ALGO_CHUNKED: return MG_OK; /* no chunked backward: the scan */
    case CEMA_ALGO_FFT: *out = CEMA_RUN_FFT; return MG_OK;
    case CEMA_ALGO_AUTO: break;
    default: return mg_seterr(MG_ERR_INVALID_ARG, "unknown CEMA algorithm %d", (int)a);
    }
    if (L <= 1 || S < 1) return MG_OK;
    if (cs->set.mode != CEMA_PLAN_MEASURE) {
        double ns[CEMA_N_RUNS];
        *out = bwd_estimate(be, S, L, c, ns);
        return MG_OK;
    }
    if (x && dy) return bwd_measure(be, cs, x, S, L, c, dy, out);
    const size_t n = (size_t)S * L * c->D;
    float *xs = synthetic_input(2 * n); /* x, then dy */
    if (!xs) return MG_ERR_NOMEM;
    int rc = bwd_measure(be, cs, xs, S, L, c, xs + n, out);
    free(xs);
    return rc;
}

int cpu_cema_backward(mg_backend *be, mg_cema_algo algo, const float *x, int S, int L,
                      const mg_cema_coeffs *c, const float *dy, float *dx, float *dp, float *dq,
                      float *deta, float *domega)
{
    if (S <= 0 || L <= 0) return MG_OK;
    cema_run r;
    TRY(bwd_resolve(be, algo, x, S, L, c, dy, &r));
    return bwd_run(be, r, x, S, L, c, dy, dx, dp, dq, deta, domega);
}

/* ------------------------------------------------------------------ queries */

const char *cpu_cema_choice(mg_backend *be, mg_cema_algo algo, int L, const mg_cema_coeffs *c)
{
    if (!be || be->cema != cpu_cema || !c) return NULL;
    cema_run r;
    if (resolve(be, algo, L, c, NULL, NULL, &r)) return NULL;
    return cema_run_name(r);
}

const char *cpu_cema_explain(mg_backend *be, int L, const mg_cema_coeffs *c, char *buf,
                             size_t size)
{
    if (!buf || !size) return buf;
    if (!be || be->cema != cpu_cema || !c || L < 1) {
        snprintf(buf, size, "not a CPU backend");
        return buf;
    }
    double ns[CEMA_N_RUNS];
    plan_estimate(be, L, c, ns);
    const char *choice = cpu_cema_choice(be, MG_CEMA_AUTO, L, c);
    const double tc = (double)L * c->D;
    char ch[24];
    if (isinf(ns[CEMA_RUN_SCAN_CHUNKED])) snprintf(ch, sizeof ch, "-");
    else snprintf(ch, sizeof ch, "%.2f", ns[CEMA_RUN_SCAN_CHUNKED] / tc);
    snprintf(buf, size,
             "L=%d D=%d N=%d threads=%d %s: auto -> %s (%s); estimated ns per token-channel: "
             "scan %.2f, scan-chunked %s, fft %.2f",
             L, c->D, c->N, be->n_threads, be->name, choice ? choice : "?",
             ctx_of(be)->cema->set.mode == CEMA_PLAN_MEASURE ? "measure" : "estimate",
             ns[CEMA_RUN_SCAN] / tc, ch, ns[CEMA_RUN_FFT] / tc);
    return buf;
}

const char *cpu_cema_backward_choice(mg_backend *be, mg_cema_algo algo, int S, int L,
                                     const mg_cema_coeffs *c)
{
    if (!be || be->cema_backward != cpu_cema_backward || !c) return NULL;
    cema_run r;
    if (bwd_resolve(be, algo, NULL, S, L, c, NULL, &r)) return NULL;
    return cema_run_name(r);
}
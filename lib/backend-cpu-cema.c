/* backend-cpu-cema.c - the CEMA op of the CPU backend and its planner glue.
 *
 * Three implementations of   y_t = Re(sum_n eta_n h_t,n) + omega x_t,  h_t = q h_t-1 + p x_t
 * over L rows of D channels, continuing from the hidden state h (cema-plan.h, docs/cema.md):
 *   scan          the simd/ kernel over groups of 16 channels, groups split across threads;
 *   scan-chunked  time split into blocks of cema_chunk_len(L) rows (a function of L only):
 *                 every block runs the kernel from the zero state (the first from h); then
 *                 (after the only barrier) each block's true start state is folded in
 *                 double (h_in' = q^B h_in + h_local) and its first rows get the carried-
 *                 state term Re(sum_n eta q^(t+1) h_in) by a zero-input run of the kernel;
 *   fft           per channel: x, zero-padded, times the cached transform of the kernel
 *                 k_j = Re(sum_n p eta q^j), back by a c2r transform (one transform, or
 *                 overlap-save blocks for long inputs and short kernels: cema_fft_blocks);
 *                 the carried-state term and the new state h_L = q^L h + p sum_j q^(L-1-j) x_j
 *                 by the kernel over the rows where q^t still matters (cema_decay_steps).
 * For a given implementation the result does not depend on the thread count, bit for bit:
 * channels are computed the same whichever thread gets them (the kernel's property), and the
 * chunked scan's blocks depend on L only. */
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

#include "backend-cpu.h"
#include "cema-plan.h"
#include "error.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__SSE__)
#include <xmmintrin.h>
/* Flush-to-zero and denormals-are-zero for the zero-input runs of the kernel, whose decaying
 * states would otherwise crawl through the subnormal range (microcode assists, ~100x slower
 * per operation); those values are below 2^-126 and change nothing that fp32 can show. */
static unsigned ftz_enter(void)
{
    unsigned m = _mm_getcsr();
    _mm_setcsr(m | 0x8040);
    return m;
}
static void ftz_leave(unsigned m) { _mm_setcsr(m); }
#else
static unsigned ftz_enter(void) { return 0; }
static void ftz_leave(unsigned m) { (void)m; }
#endif

#define G 16          /* channels per group: a multiple of every kernel table's vector width */
#define TILE 1024     /* rows per zero-input kernel call (the size of the zero buffer) */
#define MAX_PLANS 32  /* FFT sizes kept */
#define SB_BYTES (1 << 20) /* FFT work unit's buffers */
#define SCAN_TILE 512      /* rows per kernel call of the plain scan ... */
#define SCAN_TILE_MIN_D 256 /* ... when rows are at least 1 KiB */
#define PREFETCH 16   /* rows ahead in the strided gathers and scatters (each row its own page) */
#define MAX_SEEN 256  /* coefficient sets remembered for the cache-fit guess of the estimate */

typedef struct {
    int n, refs;
    uint64_t used;
    fftwf_plan r2c, c2r;
} fft_plan;

/* One cached kernel transform: D rows of cstride complex, row d = rfft(k_d, nfft). */
typedef struct kentry {
    struct kentry *next;
    const mg_cema_coeffs *coeffs;
    uint64_t hash;
    int D, N, nfft;
    fftwf_complex *kf;
    size_t bytes;
    int refs, cached;
    uint64_t used;
} kentry;

struct cema_cpu {
    cema_settings set;
    pthread_mutex_t lock; /* plans, kernel cache, seen */
    fft_plan *plans[MAX_PLANS];
    int n_plans;
    kentry *kc;
    size_t kc_bytes;
    uint64_t tick;
    long hits, misses, evictions;
    const mg_cema_coeffs *seen[MAX_SEEN];
    int n_seen;
    pthread_mutex_t measure_lock; /* one measurement at a time */
    cema_wisdom *wis;             /* measure mode: measured choices */
};

/* FFTW's planner is not thread-safe, and other backends may plan too */
pthread_mutex_t mg_fftw_planner_lock = PTHREAD_MUTEX_INITIALIZER;

/* Row strides of the per-channel transform buffers: whole cache lines (FFTW's new-array
 * execution wants the planning arrays' alignment), plus one line so that the G rows of a
 * group, written and read across at the same t, do not all map to the same cache set. */
static inline int rstride(int nfft) { return ((nfft + 15) & ~15) + 16; }      /* floats */
static inline int cstride(int nfft) { return (nfft / 2 + 1 + 7) & ~7; }       /* complex */
static inline int imin(int a, int b) { return a < b ? a : b; }

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ------------------------------------------------------------------ setup */

int cpu_cema_init(cpu_ctx *c)
{
    struct cema_cpu *cs = calloc(1, sizeof *cs);
    if (!cs) return mg_seterr(MG_ERR_NOMEM, "out of memory creating the CPU backend");
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
            return mg_seterr(MG_ERR_NOMEM, "out of memory creating the CPU backend");
        }
    }
    pthread_mutex_init(&cs->lock, NULL);
    pthread_mutex_init(&cs->measure_lock, NULL);
    c->cema = cs;
    return MG_OK;
}

static void kentry_free(kentry *e)
{
    fftwf_free(e->kf);
    free(e);
}

static void plan_destroy(fft_plan *p)
{
    pthread_mutex_lock(&mg_fftw_planner_lock);
    fftwf_destroy_plan(p->r2c);
    fftwf_destroy_plan(p->c2r);
    pthread_mutex_unlock(&mg_fftw_planner_lock);
    free(p);
}

void cpu_cema_free(cpu_ctx *c)
{
    struct cema_cpu *cs = c->cema;
    if (!cs) return;
    for (int i = 0; i < cs->n_plans; i++) plan_destroy(cs->plans[i]);
    for (kentry *e = cs->kc, *n; e; e = n) {
        n = e->next;
        kentry_free(e);
    }
    cema_wisdom_free(cs->wis);
    cema_settings_free(&cs->set);
    pthread_mutex_destroy(&cs->lock);
    pthread_mutex_destroy(&cs->measure_lock);
    free(cs);
    c->cema = NULL;
}

/* ------------------------------------------------------------------ FFT plans */

/* The plans of size n, held (refs) until put_plan; at most MAX_PLANS sizes are kept, the
 * least recently used one not in use being destroyed for a new size. */
static int get_plan(struct cema_cpu *cs, int n, fft_plan **out)
{
    pthread_mutex_lock(&cs->lock);
    for (int i = 0; i < cs->n_plans; i++)
        if (cs->plans[i]->n == n) {
            *out = cs->plans[i];
            (*out)->refs++;
            (*out)->used = ++cs->tick;
            pthread_mutex_unlock(&cs->lock);
            return MG_OK;
        }
    if (cs->n_plans == MAX_PLANS) {
        int lru = -1;
        for (int i = 0; i < cs->n_plans; i++)
            if (cs->plans[i]->refs == 0 && (lru < 0 || cs->plans[i]->used < cs->plans[lru]->used))
                lru = i;
        if (lru < 0) {
            pthread_mutex_unlock(&cs->lock);
            return mg_seterr(MG_ERR_NOMEM, "FFTW: too many transform sizes in use at once");
        }
        plan_destroy(cs->plans[lru]);
        cs->plans[lru] = cs->plans[--cs->n_plans];
    }
    float *r = fftwf_malloc(sizeof(float) * rstride(n));
    fftwf_complex *f = fftwf_malloc(sizeof(fftwf_complex) * cstride(n));
    fft_plan *p = calloc(1, sizeof *p);
    if (r && f && p) {
        pthread_mutex_lock(&mg_fftw_planner_lock);
        p->r2c = fftwf_plan_dft_r2c_1d(n, r, f, FFTW_ESTIMATE);
        p->c2r = fftwf_plan_dft_c2r_1d(n, f, r, FFTW_ESTIMATE);
        pthread_mutex_unlock(&mg_fftw_planner_lock);
    }
    fftwf_free(r);
    fftwf_free(f);
    if (!p || !p->r2c || !p->c2r) {
        if (p && (p->r2c || p->c2r)) {
            pthread_mutex_lock(&mg_fftw_planner_lock);
            if (p->r2c) fftwf_destroy_plan(p->r2c);
            if (p->c2r) fftwf_destroy_plan(p->c2r);
            pthread_mutex_unlock(&mg_fftw_planner_lock);
        }
        free(p);
        pthread_mutex_unlock(&cs->lock);
        return mg_seterr(MG_ERR_NOMEM, "FFTW: cannot plan a transform of size %d (out of memory)", n);
    }
    p->n = n;
    p->refs = 1;
    p->used = ++cs->tick;
    cs->plans[cs->n_plans++] = p;
    *out = p;
    pthread_mutex_unlock(&cs->lock);
    return MG_OK;
}

static void put_plan(struct cema_cpu *cs, fft_plan *p)
{
    pthread_mutex_lock(&cs->lock);
    p->refs--;
    pthread_mutex_unlock(&cs->lock);
}

/* ------------------------------------------------------------------ helpers */

/* q^m in double by binary powering (relative error ~ log2(m) 1e-16 per step) */
static void cpow_d(double qr, double qi, int64_t m, double *rr, double *ri)
{
    double ar = 1.0, ai = 0.0, br = qr, bi = qi;
    while (m > 0) {
        if (m & 1) {
            double t = ar * br - ai * bi;
            ai = ar * bi + ai * br;
            ar = t;
        }
        m >>= 1;
        if (m) {
            double t = br * br - bi * bi;
            bi = 2.0 * br * bi;
            br = t;
        }
    }
    *rr = ar;
    *ri = ai;
}

/* the largest |q| over channels d .. d+nd-1 */
static double qmax_of(const mg_cema_coeffs *c, int d, int nd)
{
    double m2 = 0.0;
    const float *q = c->q + (size_t)d * c->N * 2;
    for (size_t i = 0; i < (size_t)nd * c->N; i++) {
        double a = (double)q[2 * i] * q[2 * i] + (double)q[2 * i + 1] * q[2 * i + 1];
        if (a > m2) m2 = a;
    }
    return sqrt(m2);
}

static int state_is_zero(const float *h, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (h[i] != 0.0f) return 0;
    return 1;
}

/* Zero-input run of the kernel for nd (<= G) channels whose parameters start at p, q, eta,
 * from the state h (nd*N complex, updated): out[t*G + c] = Re(sum_n eta q^(t+1) h) for
 * t < n. zeros: TILE*G zeros; zom: G zeros (omega). */
static void zero_input_scan(const mg_kernels *K, int n, int nd, int N, const float *p,
                            const float *q, const float *eta, float *h, float *out,
                            const float *zeros, const float *zom)
{
    for (int t0 = 0; t0 < n; t0 += TILE)
        K->cema_scan(zeros, imin(n - t0, TILE), G, N, 0, nd, p, q, eta, zom, h,
                     out + (size_t)t0 * G);
}

/* Channel groups: G channels each, the first one narrower when that puts the others at a
 * 64-byte boundary of the x rows (rows of a multiple of G floats from a buffer that is
 * 4-byte but not 64-byte aligned, as large malloc blocks are): a group's 16 floats then
 * fill one cache line instead of straddling two, which the strided access of the kernel
 * pays for (about 1.5x at D = 1024). A channel's result does not depend on its group. */
typedef struct {
    int D, s, n; /* s: width of the leading partial group, 0 if none; n: groups */
} groups;

static groups groups_of(const float *x, int D)
{
    groups gr = {D, 0, 0};
    uintptr_t a = (uintptr_t)x;
    if (D % G == 0 && D > G && (a & 3) == 0) gr.s = (int)((G - ((a >> 2) & (G - 1))) & (G - 1));
    gr.n = (gr.s ? 1 : 0) + (D - gr.s + G - 1) / G;
    return gr;
}

static inline void group_at(const groups *gr, int g, int *d, int *nd)
{
    *d = gr->s ? (g == 0 ? 0 : gr->s + (g - 1) * G) : g * G;
    *nd = gr->s && g == 0 ? gr->s : imin(G, gr->D - *d);
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
        return mg_seterr(MG_ERR_NOMEM, "CEMA chunked scan: out of memory for length %d", L);
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

/* ------------------------------------------------------------------ FFT kernel cache */

static uint64_t hash_bytes(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (; n >= 8; n -= 8, b += 8) {
        uint64_t w;
        memcpy(&w, b, 8);
        h = (h ^ w) * 0x100000001b3ull;
        h ^= h >> 29;
    }
    for (; n; n--, b++) h = (h ^ *b) * 0x100000001b3ull;
    return h;
}

static uint64_t coeffs_hash(const mg_cema_coeffs *c)
{
    const size_t dn = (size_t)c->D * c->N;
    uint64_t h = 0xcbf29ce484222325ull;
    h = hash_bytes(h, c->p, sizeof(float) * dn);
    h = hash_bytes(h, c->q, sizeof(float) * dn * 2);
    return hash_bytes(h, c->eta, sizeof(float) * dn * 2);
}

static int kentry_is(const kentry *e, const mg_cema_coeffs *c, uint64_t hash, int nfft)
{
    return e->coeffs == c && e->hash == hash && e->D == c->D && e->N == c->N && e->nfft == nfft;
}

/* evict least recently used entries until the cache fits in `budget` bytes; an entry in
 * use is unlinked and freed by its last user */
static void kc_evict_locked(struct cema_cpu *cs, size_t budget)
{
    while (cs->kc_bytes > budget && cs->kc) {
        kentry **lru = NULL;
        for (kentry **pe = &cs->kc; *pe; pe = &(*pe)->next)
            if (!lru || (*pe)->used < (*lru)->used) lru = pe;
        kentry *e = *lru;
        *lru = e->next;
        cs->kc_bytes -= e->bytes;
        cs->evictions++;
        e->cached = 0;
        if (e->refs == 0) kentry_free(e);
    }
}

static kentry *kc_acquire(struct cema_cpu *cs, const mg_cema_coeffs *c, uint64_t hash, int nfft)
{
    pthread_mutex_lock(&cs->lock);
    for (kentry *e = cs->kc; e; e = e->next)
        if (kentry_is(e, c, hash, nfft)) {
            e->refs++;
            e->used = ++cs->tick;
            cs->hits++;
            pthread_mutex_unlock(&cs->lock);
            return e;
        }
    cs->misses++;
    pthread_mutex_unlock(&cs->lock);
    return NULL;
}

/* insert a new entry (refs 1 for the caller) unless the same kernel arrived meanwhile */
static kentry *kc_insert(struct cema_cpu *cs, kentry *ne)
{
    pthread_mutex_lock(&cs->lock);
    for (kentry *e = cs->kc; e; e = e->next)
        if (kentry_is(e, ne->coeffs, ne->hash, ne->nfft)) {
            e->refs++;
            e->used = ++cs->tick;
            pthread_mutex_unlock(&cs->lock);
            kentry_free(ne);
            return e;
        }
    ne->refs = 1;
    ne->used = ++cs->tick;
    if (ne->bytes <= cs->set.cache_bytes) {
        ne->cached = 1;
        ne->next = cs->kc;
        cs->kc = ne;
        cs->kc_bytes += ne->bytes;
        kc_evict_locked(cs, cs->set.cache_bytes);
    }
    pthread_mutex_unlock(&cs->lock);
    return ne;
}

static void kc_release(struct cema_cpu *cs, kentry *e)
{
    pthread_mutex_lock(&cs->lock);
    if (--e->refs == 0 && !e->cached) kentry_free(e);
    pthread_mutex_unlock(&cs->lock);
}

static void note_seen(struct cema_cpu *cs, const mg_cema_coeffs *c)
{
    pthread_mutex_lock(&cs->lock);
    int i = 0;
    while (i < cs->n_seen && cs->seen[i] != c) i++;
    if (i == cs->n_seen && cs->n_seen < MAX_SEEN) cs->seen[cs->n_seen++] = c;
    pthread_mutex_unlock(&cs->lock);
}

/* ------------------------------------------------------------------ FFT */

/* The kernel's transform for nfft: k_j for j < min(nfft/2, decay), zero beyond, as the
 * response of the recurrence to a unit impulse (the same simd/ kernel from the zero state,
 * omega 0), then one r2c transform per channel. NULL with the error set on failure. */
static kentry *make_kernel(mg_backend *be, const fft_plan *pl, const mg_cema_coeffs *c,
                           uint64_t hash)
{
    const mg_kernels *K = ctx_of(be)->k;
    const int D = c->D, N = c->N, nfft = pl->n, ng = (D + G - 1) / G;
    const int rs = rstride(nfft), cst = cstride(nfft);
    const int T = be->n_threads > 0 ? be->n_threads : 1;
    const int kl = imin(nfft / 2, cema_decay_steps(qmax_of(c, 0, D)));
    /* per thread: kr[G][rs], zeros[TILE][G], out[TILE][G], zom[G], ones[G], hz[G*N*2] */
    const size_t per_thread = (size_t)rs * G + 2 * (size_t)TILE * G + 2 * G + (size_t)G * N * 2;
    kentry *e = calloc(1, sizeof *e);
    float *tb = fftwf_malloc(sizeof(float) * per_thread * T);
    if (e) e->kf = fftwf_malloc(sizeof(fftwf_complex) * cst * (size_t)D);
    if (!e || !e->kf || !tb) {
        if (e) fftwf_free(e->kf);
        free(e);
        fftwf_free(tb);
        mg_seterr(MG_ERR_NOMEM, "CEMA FFT: out of memory for a kernel of size %d", nfft);
        return NULL;
    }
    memset(tb, 0, sizeof(float) * per_thread * T);
    e->coeffs = c;
    e->hash = hash;
    e->D = D;
    e->N = N;
    e->nfft = nfft;
    e->bytes = sizeof(fftwf_complex) * cst * (size_t)D + sizeof *e;

#pragma omp parallel num_threads(T) if (D >= 2 * G)
    {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        float *kr = tb + per_thread * tid, *zeros = kr + (size_t)rs * G;
        float *out = zeros + (size_t)TILE * G, *zom = out + (size_t)TILE * G, *ones = zom + G;
        float *hz = ones + G;
        for (int i = 0; i < G; i++) ones[i] = 1.0f;
        unsigned fm = ftz_enter();
#pragma omp for schedule(static)
        for (int g = 0; g < ng; g++) {
            const int d = g * G, nd = imin(G, D - d);
            const float *p = c->p + (size_t)d * N, *q = c->q + (size_t)d * N * 2;
            const float *eta = c->eta + (size_t)d * N * 2;
            memset(hz, 0, sizeof(float) * nd * N * 2);
            K->cema_scan(ones, 1, G, N, 0, nd, p, q, eta, zom, hz, out); /* k_0 */
            for (int ch = 0; ch < nd; ch++) kr[(size_t)ch * rs] = out[ch];
            for (int t0 = 1; t0 < kl; t0 += TILE) {
                const int m = imin(kl - t0, TILE);
                K->cema_scan(zeros, m, G, N, 0, nd, p, q, eta, zom, hz, out);
                for (int t = 0; t < m; t++)
                    for (int ch = 0; ch < nd; ch++)
                        kr[(size_t)ch * rs + t0 + t] = out[(size_t)t * G + ch];
            }
            for (int ch = 0; ch < nd; ch++) {
                float *row = kr + (size_t)ch * rs;
                memset(row + kl, 0, sizeof(float) * (nfft - kl));
                fftwf_execute_dft_r2c(pl->r2c, row, e->kf + (size_t)(d + ch) * cst);
            }
        }
        ftz_leave(fm);
    }
    fftwf_free(tb);
    return e;
}

static int run_fft(mg_backend *be, const float *x, int L, const mg_cema_coeffs *c, float *h,
                   float *y)
{
    cpu_ctx *cx = ctx_of(be);
    struct cema_cpu *cs = cx->cema;
    const mg_kernels *K = cx->k;
    const int D = c->D, N = c->N, kg = cema_decay_steps(qmax_of(c, 0, D)), kl = imin(L, kg);
    int nfft, M;
    cema_fft_blocks(L, kg, &nfft, &M);
    if (nfft < 0) return mg_seterr(MG_ERR_UNSUPPORTED, "CEMA FFT: length %d is too long", L);
    const int rs = rstride(nfft), cst = cstride(nfft);
    const groups gr = groups_of(x, D);
    const int T = be->n_threads > 0 ? be->n_threads : 1;
    fft_plan *plp = NULL;
    int rc = get_plan(cs, nfft, &plp);
    if (rc) return rc;
    /* only the immutable fields: refs and used change under the lock in other threads */
    fft_plan pl;
    memset(&pl, 0, sizeof pl);
    pl.n = plp->n;
    pl.r2c = plp->r2c;
    pl.c2r = plp->c2r;
    note_seen(cs, c);
    const uint64_t hash = coeffs_hash(c);
    kentry *ke = kc_acquire(cs, c, hash, nfft);
    if (!ke) {
        kentry *ne = make_kernel(be, &pl, c, hash);
        if (!ne) {
            put_plan(cs, plp);
            return MG_ERR_NOMEM;
        }
        ke = kc_insert(cs, ne);
    }
    /* Work unit: `sb` consecutive groups, gathered from and scattered to x and y together
     * (rows 4 KiB apart at D = 1024 are each a page: reading sb*64 bytes per row instead of
     * 64 divides the page walks), as many as keep the unit's buffers in about 1 MiB. */
    const size_t ch_bytes = sizeof(float) * ((size_t)rs + kl);
    int sb = (int)(((size_t)SB_BYTES) / (ch_bytes * G));
    sb = sb < 1 ? 1 : sb > 8 ? 8 : sb;
    const int nu = (gr.n + sb - 1) / sb;
    /* per thread: xr[sb*G][rs], xf[cst] complex, bias[sb][kl][G], zeros[TILE][G], zom[G],
     * hb[G*N*2] */
    const size_t per_thread = (size_t)rs * G * sb + 2 * (size_t)cst + (size_t)kl * G * sb +
                              (size_t)TILE * G + G + (size_t)G * N * 2;
    float *tb = fftwf_malloc(sizeof(float) * per_thread * T);
    if (!tb) {
        kc_release(cs, ke);
        put_plan(cs, plp);
        return mg_seterr(MG_ERR_NOMEM, "CEMA FFT: out of memory for length %d", L);
    }
    memset(tb, 0, sizeof(float) * per_thread * T);
    const float inv = 1.0f / (float)nfft;

#pragma omp parallel num_threads(T) if (D >= 2 * G)
    {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        float *xr = tb + per_thread * tid;
        fftwf_complex *xf = (fftwf_complex *)(xr + (size_t)rs * G * sb);
        float *bias = xr + (size_t)rs * G * sb + 2 * (size_t)cst;
        float *zeros = bias + (size_t)kl * G * sb;
        float *zom = zeros + (size_t)TILE * G, *hb = zom + G;
        int kb[8];
#pragma omp for schedule(static)
        for (int u = 0; u < nu; u++) {
            const int g0 = u * sb, g1 = imin(gr.n, g0 + sb);
            int d0, d1, nd;
            group_at(&gr, g0, &d0, &nd);
            group_at(&gr, g1 - 1, &d1, &nd);
            d1 += nd;
            const int nch = d1 - d0;

            for (int g = g0; g < g1; g++) {
                int d;
                group_at(&gr, g, &d, &nd);
                const float *p = c->p + (size_t)d * N, *q = c->q + (size_t)d * N * 2;
                const float *eta = c->eta + (size_t)d * N * 2;
                float *hd = h + (size_t)d * N * 2, *bg = bias + (size_t)(g - g0) * kl * G;

                /* carried-state term Re(sum_n eta q^(t+1) h) on the rows where it matters */
                kb[g - g0] = state_is_zero(hd, (size_t)nd * N * 2) ? 0 : kl;
                if (kb[g - g0]) {
                    memcpy(hb, hd, sizeof(float) * nd * N * 2);
                    unsigned fm = ftz_enter();
                    zero_input_scan(K, kl, nd, N, p, q, eta, hb, bg, zeros, zom);
                    ftz_leave(fm);
                }

                /* new state: h <- q^(L-kl) h, then the recurrence over the last kl rows (its
                 * outputs land in y and are overwritten below) */
                if (kl < L)
                    for (int i = 0; i < nd * N; i++) {
                        double mr, mi, hr = hd[2 * i], hi = hd[2 * i + 1];
                        cpow_d(q[2 * i], q[2 * i + 1], L - kl, &mr, &mi);
                        hd[2 * i] = (float)(mr * hr - mi * hi);
                        hd[2 * i + 1] = (float)(mr * hi + mi * hr);
                    }
                K->cema_scan(x + (size_t)(L - kl) * D + d, kl, D, N, 0, nd, p, q, eta,
                             c->omega + d, hd, y + (size_t)(L - kl) * D + d);
            }

            /* causal convolution, block by block: rows t0 - kl + 1 .. t0 + m - 1 of x (zero
             * before the first) at 0 .. kl + m - 2, zero-padded, times the kernel's
             * transform; outputs t0 .. t0 + m - 1 at kl - 1 .. kl + m - 2 */
            const float *om = c->omega + d0;
            for (int t0 = 0; t0 < L; t0 += M) {
                const int m = imin(M, L - t0), s0 = t0 - (kl - 1), len = kl - 1 + m;
                for (int j = 0; j < len; j++) {
                    const int t = s0 + j;
                    if (t < 0) {
                        for (int ch = 0; ch < nch; ch++) xr[(size_t)ch * rs + j] = 0.0f;
                        continue;
                    }
                    const float *xrow = x + (size_t)t * D + d0;
                    if (t + PREFETCH < L) __builtin_prefetch(xrow + (size_t)PREFETCH * D);
                    for (int ch = 0; ch < nch; ch++) xr[(size_t)ch * rs + j] = xrow[ch];
                }
                for (int ch = 0; ch < nch; ch++) {
                    float *row = xr + (size_t)ch * rs;
                    memset(row + len, 0, sizeof(float) * (nfft - len));
                    fftwf_execute_dft_r2c(pl.r2c, row, xf);
                    K->complex_mul((const float *)xf,
                                   (const float *)(ke->kf + (size_t)(d0 + ch) * cst),
                                   (float *)xf, nfft / 2 + 1);
                    fftwf_execute_dft_c2r(pl.c2r, xf, row); /* nfft * (x conv k) */
                }
                /* y = conv / nfft + omega x */
                const float *src = xr + (kl - 1);
                for (int i = 0; i < m; i++) {
                    const float *xrow = x + (size_t)(t0 + i) * D + d0;
                    float *yrow = y + (size_t)(t0 + i) * D + d0;
                    if (t0 + i + PREFETCH < L) {
                        __builtin_prefetch(xrow + (size_t)PREFETCH * D);
                        __builtin_prefetch(yrow + (size_t)PREFETCH * D, 1);
                    }
                    for (int ch = 0; ch < nch; ch++)
                        yrow[ch] = src[(size_t)ch * rs + i] * inv + om[ch] * xrow[ch];
                }
            }
            /* + the carried-state term */
            for (int g = g0; g < g1; g++) {
                int d;
                group_at(&gr, g, &d, &nd);
                const float *bg = bias + (size_t)(g - g0) * kl * G;
                for (int t = 0; t < kb[g - g0]; t++) {
                    float *yrow = y + (size_t)t * D + d;
                    for (int ch = 0; ch < nd; ch++) yrow[ch] += bg[(size_t)t * G + ch];
                }
            }
        }
    }
    fftwf_free(tb);
    kc_release(cs, ke);
    put_plan(cs, plp);
    return MG_OK;
}

/* ------------------------------------------------------------------ planner */

static int run_algo(mg_backend *be, cema_run r, const float *x, int L, const mg_cema_coeffs *c,
                    float *h, float *y)
{
    switch (r) {
    case CEMA_RUN_FFT: return run_fft(be, x, L, c, h, y);
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
    mg_cema_algo a = cs->set.override >= 0 ? (mg_cema_algo)cs->set.override : algo;
    *out = CEMA_RUN_SCAN;
    if (L <= 1) return MG_OK; /* decode: always the recurrence */
    switch ((int)a) {
    case MG_CEMA_SCAN: return MG_OK;
    case MG_CEMA_FFT: *out = CEMA_RUN_FFT; return MG_OK;
    case (int)CEMA_ALGO_CHUNKED: *out = CEMA_RUN_SCAN_CHUNKED; return MG_OK;
    case MG_CEMA_AUTO: break;
    default: return mg_seterr(MG_ERR_INVALID_ARG, "unknown CEMA algorithm %d", (int)a);
    }
    if (cs->set.mode != CEMA_PLAN_MEASURE) {
        double ns[CEMA_N_RUNS];
        *out = plan_estimate(be, L, c, ns);
        return MG_OK;
    }
    if (x) return plan_measure(be, L, c, x, h, out);
    float *xs = malloc(sizeof(float) * (size_t)L * c->D);
    if (!xs) return mg_seterr(MG_ERR_NOMEM, "out of memory");
    uint32_t s = 12345;
    for (size_t i = 0; i < (size_t)L * c->D; i++) {
        s = s * 1664525u + 1013904223u;
        xs[i] = (float)((int32_t)s >> 8) * 0x1p-23f;
    }
    int rc = plan_measure(be, L, c, xs, NULL, out);
    free(xs);
    return rc;
}

int cpu_cema(mg_backend *be, mg_cema_algo algo, const float *x, int L, const mg_cema_coeffs *c,
             float *h, float *y)
{
    if (L <= 0) return MG_OK;
    cema_run r;
    int rc = resolve(be, algo, L, c, x, h, &r);
    if (rc) return rc;
    return run_algo(be, r, x, L, c, h, y);
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

void cpu_cema_cache_budget(mg_backend *be, size_t bytes)
{
    if (!be || be->cema != cpu_cema) return;
    struct cema_cpu *cs = ctx_of(be)->cema;
    pthread_mutex_lock(&cs->lock);
    cs->set.cache_bytes = bytes;
    kc_evict_locked(cs, bytes);
    pthread_mutex_unlock(&cs->lock);
}

void cpu_cema_cache_stats(mg_backend *be, cema_cache_stats *st)
{
    memset(st, 0, sizeof *st);
    if (!be || be->cema != cpu_cema) return;
    struct cema_cpu *cs = ctx_of(be)->cema;
    pthread_mutex_lock(&cs->lock);
    st->hits = cs->hits;
    st->misses = cs->misses;
    st->evictions = cs->evictions;
    st->bytes = cs->kc_bytes;
    for (kentry *e = cs->kc; e; e = e->next) st->entries++;
    pthread_mutex_unlock(&cs->lock);
}

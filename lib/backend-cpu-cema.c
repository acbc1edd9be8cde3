/* backend-cpu-cema.c - the CEMA op of the CPU backend and its planner glue.
 *
 * Three implementations of   y_t = Re(sum_n eta_n h_t,n) + omega x_t,  h_t = q h_t-1 + p x_t
 * over L rows of D channels, continuing from the hidden state h (cema-plan.h, docs/cema.md):
 *   scan          the simd/ kernel over groups of 16 channels, groups split across threads;
 *   scan-chunked  time split into blocks of cema_chunk_len(L) rows (a function of L only):
 *                 every block runs the kernel from the zero state (the first from h), the
 *                 true state is propagated block to block in double (h_in' = q^B h_in +
 *                 h_local), then each block's first rows get the carried-state term
 *                 Re(sum_n eta q^(t+1) h_in) by a zero-input run of the kernel;
 *   fft           per channel: x zero-padded to nfft (the power of two >= 2L) times the cached
 *                 transform of the kernel k_j = Re(sum_n p eta q^j), back by a c2r transform;
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

#if defined(__x86_64__) || defined(__i386__)
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
#define MAX_SEEN 256  /* coefficient sets remembered for the cache-fit guess of the estimate */

typedef struct {
    int n;
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
    fft_plan plans[MAX_PLANS];
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
static pthread_mutex_t fftw_planner_lock = PTHREAD_MUTEX_INITIALIZER;

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

void cpu_cema_free(cpu_ctx *c)
{
    struct cema_cpu *cs = c->cema;
    if (!cs) return;
    for (int i = 0; i < cs->n_plans; i++) {
        fftwf_destroy_plan(cs->plans[i].r2c);
        fftwf_destroy_plan(cs->plans[i].c2r);
    }
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

static int get_plan(struct cema_cpu *cs, int n, fft_plan *out)
{
    pthread_mutex_lock(&cs->lock);
    for (int i = 0; i < cs->n_plans; i++)
        if (cs->plans[i].n == n) {
            *out = cs->plans[i];
            pthread_mutex_unlock(&cs->lock);
            return MG_OK;
        }
    if (cs->n_plans == MAX_PLANS) { /* forget the oldest size (no call is using it: plans
                                       are looked up and used under the op's own call, and
                                       MAX_PLANS sizes cover every L up to 2^31) */
        fftwf_destroy_plan(cs->plans[0].r2c);
        fftwf_destroy_plan(cs->plans[0].c2r);
        memmove(cs->plans, cs->plans + 1, sizeof(fft_plan) * (MAX_PLANS - 1));
        cs->n_plans--;
    }
    float *r = fftwf_malloc(sizeof(float) * rstride(n));
    fftwf_complex *f = fftwf_malloc(sizeof(fftwf_complex) * cstride(n));
    fft_plan p = {n, NULL, NULL};
    if (r && f) {
        pthread_mutex_lock(&fftw_planner_lock);
        p.r2c = fftwf_plan_dft_r2c_1d(n, r, f, FFTW_ESTIMATE);
        p.c2r = fftwf_plan_dft_c2r_1d(n, f, r, FFTW_ESTIMATE);
        pthread_mutex_unlock(&fftw_planner_lock);
    }
    fftwf_free(r);
    fftwf_free(f);
    if (!p.r2c || !p.c2r) {
        if (p.r2c) fftwf_destroy_plan(p.r2c);
        if (p.c2r) fftwf_destroy_plan(p.c2r);
        pthread_mutex_unlock(&cs->lock);
        return mg_seterr(MG_ERR_NOMEM, "FFTW: cannot plan a transform of size %d", n);
    }
    cs->plans[cs->n_plans++] = p;
    *out = p;
    pthread_mutex_unlock(&cs->lock);
    return MG_OK;
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

/* ------------------------------------------------------------------ scan */

static void run_scan(mg_backend *be, const float *x, int L, const mg_cema_coeffs *c, float *h,
                     float *y)
{
    const mg_kernels *K = ctx_of(be)->k;
    const int D = c->D, N = c->N, ng = (D + G - 1) / G;
#pragma omp parallel num_threads(be->n_threads) if (D >= 64)
    {
        int t = 0, T = 1;
#ifdef _OPENMP
        t = omp_get_thread_num();
        T = omp_get_num_threads();
#endif
        int d0 = G * (int)((int64_t)ng * t / T), d1 = G * (int)((int64_t)ng * (t + 1) / T);
        if (d1 > D) d1 = D;
        if (d0 < d1) K->cema_scan(x, L, D, N, d0, d1, c->p, c->q, c->eta, c->omega, h, y);
    }
}

/* ------------------------------------------------------------------ chunked scan */

static int run_scan_chunked(mg_backend *be, const float *x, int L, const mg_cema_coeffs *c,
                            float *h, float *y)
{
    const mg_kernels *K = ctx_of(be)->k;
    const int D = c->D, N = c->N, ng = (D + G - 1) / G;
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
    int *decay = malloc(sizeof(int) * ng);
    if (!hl || !tb || !decay) {
        free(hl);
        free(tb);
        free(decay);
        return mg_seterr(MG_ERR_NOMEM, "CEMA chunked scan: out of memory for length %d", L);
    }
    for (int g = 0; g < ng; g++) decay[g] = cema_decay_steps(qmax_of(c, g * G, imin(G, D - g * G)));

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
            const int g = u / nb, k = u % nb, d = g * G, nd = imin(G, D - d);
            const int t0 = k * B, len = imin(B, L - t0);
            float *hk = hl + DN2 * k + (size_t)d * N * 2;
            if (k == 0) memcpy(hk, h + (size_t)d * N * 2, sizeof(float) * nd * N * 2);
            else memset(hk, 0, sizeof(float) * nd * N * 2);
            K->cema_scan(x + (size_t)t0 * D + d, len, D, N, 0, nd, c->p + (size_t)d * N,
                         c->q + (size_t)d * N * 2, c->eta + (size_t)d * N * 2, c->omega + d, hk,
                         y + (size_t)t0 * D + d);
        }

        /* 2: the true state at every block start, in double; hl[k] becomes block k's start
         * state, h the final state */
#pragma omp for schedule(static)
        for (int g = 0; g < ng; g++) {
            const int d = g * G, nd = imin(G, D - d), last = L - (nb - 1) * B;
            for (int i = 0; i < nd * N; i++) {
                const size_t j = ((size_t)d * N + i) * 2;
                double qbr, qbi, qlr, qli;
                cpow_d(c->q[j], c->q[j + 1], B, &qbr, &qbi);
                cpow_d(c->q[j], c->q[j + 1], last, &qlr, &qli);
                double hr = hl[j], hi = hl[j + 1]; /* end of block 0 */
                for (int k = 1; k < nb; k++) {
                    float *s = hl + DN2 * k + j;
                    double lr = s[0], li = s[1];
                    s[0] = (float)hr;
                    s[1] = (float)hi;
                    double mr = k == nb - 1 ? qlr : qbr, mi = k == nb - 1 ? qli : qbi;
                    double t = mr * hr - mi * hi + lr;
                    hi = mr * hi + mi * hr + li;
                    hr = t;
                }
                h[j] = (float)hr;
                h[j + 1] = (float)hi;
            }
        }

        /* 3: blocks 1.. get Re(sum_n eta q^(t+1) h_in) on their first min(B, decay) rows */
        unsigned fm = ftz_enter();
#pragma omp for schedule(static)
        for (int u = 0; u < ng * (nb - 1); u++) {
            const int g = u / (nb - 1), k = 1 + u % (nb - 1), d = g * G, nd = imin(G, D - d);
            const int t0 = k * B, len = imin(imin(B, L - t0), decay[g]);
            if (state_is_zero(hl + DN2 * k + (size_t)d * N * 2, (size_t)nd * N * 2)) continue;
            memcpy(hb, hl + DN2 * k + (size_t)d * N * 2, sizeof(float) * nd * N * 2);
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
    free(decay);
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
            const int kl = imin(nfft / 2, cema_decay_steps(qmax_of(c, d, nd)));
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
    const int D = c->D, N = c->N, ng = (D + G - 1) / G, nfft = cema_nfft(L);
    const int rs = rstride(nfft), cst = cstride(nfft);
    const int T = be->n_threads > 0 ? be->n_threads : 1;
    fft_plan pl;
    int rc = get_plan(cs, nfft, &pl);
    if (rc) return rc;
    note_seen(cs, c);
    const uint64_t hash = coeffs_hash(c);
    kentry *ke = kc_acquire(cs, c, hash, nfft);
    if (!ke) {
        kentry *ne = make_kernel(be, &pl, c, hash);
        if (!ne) return MG_ERR_NOMEM;
        ke = kc_insert(cs, ne);
    }
    const int kb_max = imin(L, cema_decay_steps(qmax_of(c, 0, D)));
    /* per thread: xr[G][rs], xf[cst] complex, bias[kb_max][G], zeros[TILE][G], zom[G],
     * hb[G*N*2] */
    const size_t per_thread = (size_t)rs * G + 2 * (size_t)cst + (size_t)kb_max * G +
                              (size_t)TILE * G + G + (size_t)G * N * 2;
    float *tb = fftwf_malloc(sizeof(float) * per_thread * T);
    if (!tb) {
        kc_release(cs, ke);
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
        fftwf_complex *xf = (fftwf_complex *)(xr + (size_t)rs * G);
        float *bias = xr + (size_t)rs * G + 2 * (size_t)cst, *zeros = bias + (size_t)kb_max * G;
        float *zom = zeros + (size_t)TILE * G, *hb = zom + G;
#pragma omp for schedule(static)
        for (int g = 0; g < ng; g++) {
            const int d = g * G, nd = imin(G, D - d);
            const int kg = cema_decay_steps(qmax_of(c, d, nd));
            const float *p = c->p + (size_t)d * N, *q = c->q + (size_t)d * N * 2;
            const float *eta = c->eta + (size_t)d * N * 2, *om = c->omega + d;
            float *hd = h + (size_t)d * N * 2;

            /* causal convolution: x (zero-padded) times the kernel's transform */
            for (int t = 0; t < L; t++) {
                const float *xrow = x + (size_t)t * D + d;
                for (int ch = 0; ch < nd; ch++) xr[(size_t)ch * rs + t] = xrow[ch];
            }
            for (int ch = 0; ch < nd; ch++) {
                float *row = xr + (size_t)ch * rs;
                memset(row + L, 0, sizeof(float) * (nfft - L));
                fftwf_execute_dft_r2c(pl.r2c, row, xf);
                K->complex_mul((const float *)xf, (const float *)(ke->kf + (size_t)(d + ch) * cst),
                               (float *)xf, nfft / 2 + 1);
                fftwf_execute_dft_c2r(pl.c2r, xf, row); /* nfft * (x conv k) */
            }

            /* carried-state term Re(sum_n eta q^(t+1) h) on the rows where it matters */
            const int kb = state_is_zero(hd, (size_t)nd * N * 2) ? 0 : imin(L, kg);
            if (kb) {
                memcpy(hb, hd, sizeof(float) * nd * N * 2);
                unsigned fm = ftz_enter();
                zero_input_scan(K, kb, nd, N, p, q, eta, hb, bias, zeros, zom);
                ftz_leave(fm);
            }

            /* new state: h <- q^(L-ks) h, then the recurrence over the last ks rows (its
             * outputs land in y and are overwritten below) */
            const int ks = imin(L, kg);
            if (ks < L)
                for (int i = 0; i < nd * N; i++) {
                    double mr, mi, hr = hd[2 * i], hi = hd[2 * i + 1];
                    cpow_d(q[2 * i], q[2 * i + 1], L - ks, &mr, &mi);
                    hd[2 * i] = (float)(mr * hr - mi * hi);
                    hd[2 * i + 1] = (float)(mr * hi + mi * hr);
                }
            K->cema_scan(x + (size_t)(L - ks) * D + d, ks, D, N, 0, nd, p, q, eta, om, hd,
                         y + (size_t)(L - ks) * D + d);

            for (int t = 0; t < L; t++) {
                const float *xrow = x + (size_t)t * D + d;
                float *yrow = y + (size_t)t * D + d;
                for (int ch = 0; ch < nd; ch++) {
                    float v = xr[(size_t)ch * rs + t] * inv + om[ch] * xrow[ch];
                    if (t < kb) v += bias[(size_t)t * G + ch];
                    yrow[ch] = v;
                }
            }
        }
    }
    fftwf_free(tb);
    kc_release(cs, ke);
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
    const size_t bytes = sizeof(fftwf_complex) * cstride(cema_nfft(L)) * (size_t)c->D;
    cema_problem pb = {L, c->D, c->N, be->n_threads > 0 ? be->n_threads : 1,
                       cema_decay_steps(qmax_of(c, 0, c->D)),
                       1, /* streaming: the state is carried but for the first call */
                       bytes <= budget / layers};
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
    case (int)MG_CEMA_SCAN_CHUNKED: *out = CEMA_RUN_SCAN_CHUNKED; return MG_OK;
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

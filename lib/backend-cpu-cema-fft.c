/* backend-cpu-cema-fft.c - CEMA by FFT in the CPU backend, forward and backward (FFTW,
 * single precision). With the kernel k_j = Re(sum_n p eta q^j) the op of one channel is
 * y = causal_conv(x, k) + omega x (+ the carried-state term), so:
 *
 *   forward   per channel: x, zero-padded, times the cached transform of the kernel, back by a
 *             c2r transform (one transform, or overlap-save blocks for long inputs and short
 *             kernels: cema_fft_blocks); the carried-state term Re(sum_n eta q^(t+1) h) and
 *             the new state h_L = q^L h + p sum_j q^(L-1-j) x_j by the kernel over the rows
 *             where q^t still matters (cema_decay_steps). The plans (per FFT size) and the
 *             kernel transforms (per coefficient set and size, within MEGALODON_CEMA_CACHE_MB)
 *             are cached in the backend's CEMA state.
 *   backward  per channel (docs/model.md §18.3, §18.4):
 *               dx_t = omega dy_t + sum_{s>=t} dy_s k_{s-t}     = irfft(DY conj(K))[t]
 *               dk_j = sum_seq sum_t dy_t x_{t-j}                = irfft(sum_seq DY conj(X))[j]
 *               domega += sum dy_t x_t
 *               S2 = sum_j dk_j q^j ,  S1 = sum_j dk_j j q^(j-1)          (Horner, in double)
 *               dp += Re(S2 eta) ;  dq += conj(S1 p eta) ;  deta += conj(S2 p)
 *             with transforms of size nfft, the least power of two >= 2L, so that the circular
 *             correlations equal the linear ones on 0..L-1 (the wrapped terms meet the zero
 *             padding). Its kernel is built in double by repeated multiplication, each
 *             component stopped once |q|^j is below 1e-30 (far under what fp32 can show, and
 *             before double's subnormals).
 *
 * Threads split the channels (groups of G in the forward), whose results are independent;
 * the backward sums sequences in order. So the results are the same bit for bit for any
 * thread count. The scans and the planner are in backend-cpu-cema.c. */
#include "config.h"

#include <fftw3.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend-cpu-cema.h"
#include "error.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#define SB_BYTES (1 << 20) /* FFT work unit's buffers */
#define PREFETCH 16   /* rows ahead in the strided gathers and scatters (each row its own page) */

pthread_mutex_t mg_fftw_planner_lock = PTHREAD_MUTEX_INITIALIZER;

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
        return mg_seterr(MG_ERR_NOMEM,
                         "FFTW: cannot plan a transform of size %d (out of memory for the plan)",
                         n);
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

/* Destroy the cached plans and kernel transforms. */
void cema_fft_free(struct cema_cpu *cs)
{
    for (int i = 0; i < cs->n_plans; i++) plan_destroy(cs->plans[i]);
    for (kentry *e = cs->kc, *n; e; e = n) {
        n = e->next;
        kentry_free(e);
    }
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

/* ------------------------------------------------------------------ forward */

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
        mg_seterr(MG_ERR_NOMEM, "out of memory for the CEMA FFT kernel transform (nfft=%d, D=%d)",
                  nfft, D);
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

int cema_fft_forward(mg_backend *be, const float *x, int L, const mg_cema_coeffs *c, float *h,
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
    TRY(get_plan(cs, nfft, &plp));
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
        return mg_seterr(MG_ERR_NOMEM, "out of memory for the CEMA FFT buffers (L=%d, D=%d)", L, D);
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

/* ------------------------------------------------------------------ backward */

#define BWD_MAX_L (1 << 28) /* nfft = 2^30 at most */
#define TAIL 1e-30          /* |q|^j below this ends a component of the kernel */

/* The backward's buffer strides: whole cache lines, so that every buffer of the block has the
 * alignment of fftwf_malloc (the planning arrays), as FFTW's new-array execution requires. */
static inline size_t bwd_rstride(int nfft) { return ((size_t)nfft + 15) & ~(size_t)15; }
static inline size_t bwd_cstride(int nfft) { return ((size_t)nfft / 2 + 1 + 7) & ~(size_t)7; }

/* Steps after which component (q) of the kernel is negligible, at most L. */
static int tail_steps(double qr, double qi, int L)
{
    const double a = sqrt(qr * qr + qi * qi);
    if (!(a < 1.0)) return L;
    if (a <= TAIL) return 1;
    const double j = ceil(log(TAIL) / log(a)) + 1;
    return j < (double)L ? (int)j : L;
}

int cema_fft_backward(mg_backend *be, const float *x, int S, int L, const mg_cema_coeffs *c,
                      const float *dy, float *dx, float *dp, float *dq, float *deta,
                      float *domega)
{
    const int D = c->D, N = c->N;
    if (S <= 0 || L <= 0 || D <= 0) return MG_OK;
    if (L > BWD_MAX_L) return mg_seterr(MG_ERR_INVALID_ARG, "CEMA backward: length %d too long", L);
    int nfft = 2;
    while (nfft < 2 * L) nfft *= 2;
    const size_t rs = bwd_rstride(nfft), cs = bwd_cstride(nfft);
    const int T = be->n_threads > 0 ? be->n_threads : 1;

    /* per thread: rin, rout [rs floats]; kf, f1, f2 [cs complex]; and apart (plain malloc)
     * acc [cs complex double], kd [L double] */
    const size_t per_thread = 2 * rs + 3 * 2 * cs;
    float *tb = fftwf_malloc(sizeof(float) * per_thread * T);
    double *db = malloc(sizeof(double) * (2 * cs + (size_t)L) * T);
    if (!tb || !db) {
        fftwf_free(tb);
        free(db);
        return mg_seterr(MG_ERR_NOMEM,
                         "out of memory for the CEMA backward FFT buffers (L=%d, D=%d)", L, D);
    }
    fftwf_plan r2c, c2r;
    pthread_mutex_lock(&mg_fftw_planner_lock);
    r2c = fftwf_plan_dft_r2c_1d(nfft, tb, (fftwf_complex *)(tb + 2 * rs), FFTW_ESTIMATE);
    c2r = fftwf_plan_dft_c2r_1d(nfft, (fftwf_complex *)(tb + 2 * rs), tb + rs, FFTW_ESTIMATE);
    pthread_mutex_unlock(&mg_fftw_planner_lock);
    if (!r2c || !c2r) {
        pthread_mutex_lock(&mg_fftw_planner_lock);
        if (r2c) fftwf_destroy_plan(r2c);
        if (c2r) fftwf_destroy_plan(c2r);
        pthread_mutex_unlock(&mg_fftw_planner_lock);
        fftwf_free(tb);
        free(db);
        return mg_seterr(MG_ERR_NOMEM, "FFTW: cannot plan a transform of size %d (CEMA backward)",
                         nfft);
    }
    const double inv = 1.0 / (double)nfft;
    const size_t ld = (size_t)D;

#pragma omp parallel num_threads(T) if (D > 1)
    {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        float *rin = tb + per_thread * tid, *rout = rin + rs;
        fftwf_complex *kf = (fftwf_complex *)(rout + rs), *f1 = kf + cs, *f2 = f1 + cs;
        double *acc = db + (2 * cs + (size_t)L) * tid, *kd = acc + 2 * cs;

#pragma omp for schedule(static)
        for (int d = 0; d < D; d++) {
            const float *p = c->p + (size_t)d * N, *q = c->q + (size_t)d * 2 * N,
                        *eta = c->eta + (size_t)d * 2 * N;
            const double om = c->omega[d];

            /* kernel k_j = Re(sum_n p eta q^j), its transform K */
            memset(kd, 0, sizeof(double) * L);
            for (int n = 0; n < N; n++) {
                const double qr = q[2 * n], qi = q[2 * n + 1];
                double zr = p[n] * (double)eta[2 * n], zi = p[n] * (double)eta[2 * n + 1];
                const int m = tail_steps(qr, qi, L);
                for (int j = 0; j < m; j++) {
                    kd[j] += zr;
                    const double t = zr * qr - zi * qi;
                    zi = zr * qi + zi * qr;
                    zr = t;
                }
            }
            for (int j = 0; j < L; j++) rin[j] = (float)kd[j];
            memset(rin + L, 0, sizeof(float) * (nfft - L));
            fftwf_execute_dft_r2c(r2c, rin, kf);

            memset(acc, 0, sizeof(double) * 2 * cs);
            double aom = 0;
            for (int s = 0; s < S; s++) {
                const float *xs = x + (size_t)s * L * ld + d, *dys = dy + (size_t)s * L * ld + d;
                float *dxs = dx + (size_t)s * L * ld + d;
                /* X = rfft(x_s), DY = rfft(dy_s) */
                for (int t = 0; t < L; t++) rin[t] = xs[(size_t)t * ld];
                fftwf_execute_dft_r2c(r2c, rin, f1);
                for (int t = 0; t < L; t++) rin[t] = dys[(size_t)t * ld];
                fftwf_execute_dft_r2c(r2c, rin, f2);
                for (int t = 0; t < L; t++) aom += (double)rin[t] * xs[(size_t)t * ld];
                /* acc += DY conj(X) ;  f2 = DY conj(K) */
                for (size_t i = 0; i < (size_t)nfft / 2 + 1; i++) {
                    const double yr = f2[i][0], yi = f2[i][1];
                    const double xr = f1[i][0], xi = f1[i][1];
                    const double kr = kf[i][0], ki = kf[i][1];
                    acc[2 * i] += yr * xr + yi * xi;
                    acc[2 * i + 1] += yi * xr - yr * xi;
                    f2[i][0] = (float)(yr * kr + yi * ki);
                    f2[i][1] = (float)(yi * kr - yr * ki);
                }
                fftwf_execute_dft_c2r(c2r, f2, rout);
                for (int t = 0; t < L; t++)
                    dxs[(size_t)t * ld] = (float)(om * dys[(size_t)t * ld] + rout[t] * inv);
            }
            domega[d] += (float)aom;

            /* dk = irfft(acc)[0..L-1] */
            for (size_t i = 0; i < (size_t)nfft / 2 + 1; i++) {
                f1[i][0] = (float)acc[2 * i];
                f1[i][1] = (float)acc[2 * i + 1];
            }
            fftwf_execute_dft_c2r(c2r, f1, rout);
            for (int j = 0; j < L; j++) kd[j] = rout[j] * inv;

            for (int n = 0; n < N; n++) {
                const double qr = q[2 * n], qi = q[2 * n + 1];
                const double pn = p[n], er = eta[2 * n], ei = eta[2 * n + 1];
                /* Horner: b = sum_j dk_j q^j (S2), a = its derivative in q (S1) */
                double br = kd[L - 1], bi = 0, ar = 0, ai = 0;
                for (int j = L - 2; j >= 0; j--) {
                    const double nar = ar * qr - ai * qi + br, nai = ar * qi + ai * qr + bi;
                    const double nbr = br * qr - bi * qi + kd[j], nbi = br * qi + bi * qr;
                    ar = nar;
                    ai = nai;
                    br = nbr;
                    bi = nbi;
                }
                const size_t i = (size_t)d * N + n;
                /* dp += Re(S2 eta) ; dq += conj(S1 p eta) ; deta += conj(S2 p) */
                dp[i] += (float)(br * er - bi * ei);
                dq[2 * i] += (float)(pn * (ar * er - ai * ei));
                dq[2 * i + 1] += (float)(-pn * (ar * ei + ai * er));
                deta[2 * i] += (float)(br * pn);
                deta[2 * i + 1] += (float)(-bi * pn);
            }
        }
    }

    pthread_mutex_lock(&mg_fftw_planner_lock);
    fftwf_destroy_plan(r2c);
    fftwf_destroy_plan(c2r);
    pthread_mutex_unlock(&mg_fftw_planner_lock);
    fftwf_free(tb);
    free(db);
    return MG_OK;
}

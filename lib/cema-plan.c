/* cema-plan.c - the CEMA planner: environment settings, the cost model (`estimate`) and the
 * wisdom file that remembers measured choices (`measure`). The implementations themselves
 * and the measuring are in backend-cpu-cema.c (the FFT ones in backend-cpu-cema-fft.c);
 * docs/cema.md describes it all. */
#include "config.h"

#include "cema-plan.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "error.h"

static const char *const run_names[CEMA_N_RUNS] = {"scan", "scan-chunked", "fft"};

const char *cema_run_name(cema_run r)
{
    return (unsigned)r < CEMA_N_RUNS ? run_names[r] : "?";
}

/* ------------------------------------------------------------------ environment */

/* $name as one of names[0 .. n-1] (case-insensitive): *out its index; unchanged when the
 * variable is unset or empty, an error listing the names when it is none of them. */
static int env_choice(const char *name, const char *const *names, int n, int *out)
{
    const char *v = getenv(name);
    if (!v || !*v) return MG_OK;
    for (int i = 0; i < n; i++)
        if (!strcasecmp(v, names[i])) {
            *out = i;
            return MG_OK;
        }
    char list[128] = "";
    for (int i = 0; i < n; i++) {
        size_t l = strlen(list);
        snprintf(list + l, sizeof list - l, "%s%s", i == 0 ? "" : i == n - 1 ? " or " : ", ",
                 names[i]);
    }
    return mg_seterr(MG_ERR_INVALID_ARG, "%s='%s': must be %s", name, v, list);
}

int cema_settings_read(cema_settings *s)
{
    memset(s, 0, sizeof *s);
    s->override = -1;
    s->mode = CEMA_PLAN_ESTIMATE;
    s->cache_bytes = (size_t)256 << 20;

    static const char *const algos[] = {[CEMA_ALGO_AUTO] = "auto", [CEMA_ALGO_FFT] = "fft",
                                        [CEMA_ALGO_SCAN] = "scan",
                                        [CEMA_ALGO_CHUNKED] = "scan-chunked"};
    static const char *const modes[] = {[CEMA_PLAN_ESTIMATE] = "estimate",
                                        [CEMA_PLAN_MEASURE] = "measure"};
    int mode = s->mode;
    int rc = env_choice("MEGALODON_CEMA", algos, 4, &s->override);
    if (!rc) rc = env_choice("MEGALODON_CEMA_PLANNER", modes, 2, &mode);
    if (rc) return rc;
    s->mode = (cema_plan_mode)mode;
    const char *v = getenv("MEGALODON_CEMA_CACHE_MB");
    if (v && *v) {
        char *end;
        errno = 0;
        long mb = strtol(v, &end, 10);
        if (errno || *end || end == v || mb < 0 || mb > (1L << 22))
            return mg_seterr(MG_ERR_INVALID_ARG,
                             "MEGALODON_CEMA_CACHE_MB='%s': must be a number of MiB (0 .. %ld)",
                             v, 1L << 22);
        s->cache_bytes = (size_t)mb << 20;
    }
    v = getenv("MEGALODON_CEMA_WISDOM");
    const char *base = NULL, *tail = NULL;
    if (v && *v) {
        if (strcmp(v, "none") != 0 && !(s->wisdom_path = strdup(v)))
            return mg_seterr(MG_ERR_NOMEM, "out of memory for the CEMA wisdom file's name");
        return MG_OK;
    }
    if ((base = getenv("XDG_CACHE_HOME")) && base[0] == '/') tail = "/megalodon/cema-wisdom";
    else if ((base = getenv("HOME")) && base[0] == '/') tail = "/.cache/megalodon/cema-wisdom";
    if (tail) {
        size_t n = strlen(base) + strlen(tail) + 1;
        if (!(s->wisdom_path = malloc(n)))
            return mg_seterr(MG_ERR_NOMEM, "out of memory for the CEMA wisdom file's name");
        snprintf(s->wisdom_path, n, "%s%s", base, tail);
        s->wisdom_default = 1;
    }
    return MG_OK;
}

void cema_settings_free(cema_settings *s)
{
    free(s->wisdom_path);
    s->wisdom_path = NULL;
}

/* ------------------------------------------------------------------ cost model */

int cema_decay_steps(double qmax)
{
    if (!(qmax < 1.0)) return INT_MAX;
    if (qmax <= 0x1p-40) return 1;
    double k = ceil(-40.0 * M_LN2 / log(qmax));
    return k >= (double)INT_MAX ? INT_MAX : (int)k;
}

int cema_chunk_len(int L)
{
    /* about L/512 blocks, at most 16, of a multiple of 16 rows: few enough that the
     * corrections (one per block) stay cheap, enough to keep 2..16 threads busy */
    int nb = L / 512;
    if (nb < 2) return L > 0 ? L : 1;
    if (nb > 16) nb = 16;
    int64_t B = ((int64_t)L + nb - 1) / nb;
    B = (B + 15) / 16 * 16;
    return (int)B;
}

int cema_nfft(int L, int decay)
{
    /* the kernel is used up to lag min(L, decay) - 1: a circular convolution of size
     * >= L + that - 1 equals the linear one on the first L outputs (decay >= L: >= 2L, so
     * that the cached kernel, min(decay, n/2) long, serves every L up to n/2) */
    int64_t need = decay >= L ? 2 * (int64_t)L : (int64_t)L + decay - 1;
    if (need < 2) need = 2;
    for (int64_t p = 1; p <= (1 << 30); p *= 2) /* 2^a, 5 2^(a-2), 3 2^(a-1) */
        for (int k = 0; k < 3; k++) {
            int64_t n = k == 0 ? p : k == 1 ? 5 * p / 4 : 3 * p / 2;
            if ((k == 0 || p >= 4) && n >= need && n % 2 == 0) return (int)n;
        }
    return -1;
}

void cema_fft_blocks(int L, int decay, int *nfft, int *rows)
{
    const int kl = L < decay ? L : decay;
    *nfft = cema_nfft(L, decay);
    *rows = L;
    if (kl < L && (int64_t)CEMA_FFT_BLOCK + kl < L) {
        int target = CEMA_FFT_BLOCK > 3 * kl ? CEMA_FFT_BLOCK : 3 * kl;
        int n = cema_nfft(target, kl);
        if (n > 0 && n < *nfft) {
            *nfft = n;
            *rows = n - kl + 1;
        }
    }
}

int cema_len_bucket(int L)
{
    int n = 1;
    while (n < L) n *= 2;
    return n;
}

/* Constants of the cost model, in ns, measured on the development machine (a 2-core KVM
 * guest of an Intel Xeon "Sapphire Rapids", family 6 model 207; fftw 3.3.10, gcc -O2, the
 * library as built by configure) with tests/cema-timing --clock cpu (process CPU time, one
 * thread, median of 5..9 calls, each continuing from a carried state; the machine was shared,
 * so they are rounded and only their ratios matter):
 *   step      ns per token-channel of the recurrence (the simd/ kernel) at D = 1024:
 *             max(floor, fixed + per_n N). avx512 measured N = 4, 8, 16, 32, 64:
 *             2.2, 2.3, 2.9, 5.8, 10.2 (below N ~ 12 the strided x and y rows, one page
 *             each, bound it: the floor); avx2 at N = 16: 1.25x avx512; scalar at N = 16:
 *             45 (a dependency chain over the components: ~linear in N from the start);
 *             neon: not measured, a guess between them. Above N = 64 (nmax) the SIMD
 *             kernels go channel by channel: avx512 N = 128 measured 88 (wide_per_n).
 *   fft_a,b   ns per channel of one transform pair (r2c + c2r, FFTW_ESTIMATE) of n points
 *             with everything around it (gather, zero padding, complex product, scaling,
 *             scatter): fft_a n log2 n + fft_b n, fitted to the FFT path at N = 4 (where
 *             the recurrence passes are negligible) for L = 1024 (n = 1280) and L = 4096
 *             (n = 5120) and checked at L = 16384 (overlap-save, 4 blocks of n = 5120).
 *   zero_rel  cost of a zero-input step of the kernel (carried-state terms, the FFT kernel,
 *             chunk corrections) relative to a recurrence step: the same kernel, so 1.
 *   par_eff   the second thread's efficiency for work split across threads (memory
 *             bandwidth and L3 are shared): 0.85, from 2-thread runs in quiet moments.
 *   fork_ns   one OpenMP parallel region or barrier: 2-5 us when the threads spin on free
 *             cores, 40-90 us and worse on this shared machine; 10 us.
 *   chunk_ns  one extra kernel call (the kernel transposes a block's parameters first). */
typedef struct {
    const char *isa;
    double floor, fixed, per_n; /* step = max(floor, fixed + per_n N) for N <= nmax */
    int nmax;
    double wide_per_n;          /* step = wide_per_n N above nmax */
    double fft_a, fft_b;
} cema_costs;

static const cema_costs cost_table[] = {
    /* isa      step: floor  fixed  per_n  nmax  wide    fft_a fft_b */
    {"avx512", 2.1, 0.25, 0.165, 64, 0.69, 0.50, 1.84},
    {"avx2", 2.4, 0.30, 0.210, 64, 0.80, 0.50, 1.84},
    {"neon", 2.5, 0.30, 0.300, 64, 1.00, 0.60, 2.20},
    {"scalar", 0.0, 0.00, 2.800, 1 << 30, 2.80, 0.50, 2.00},
};
static const double zero_rel = 1.0;
static const double par_eff = 0.85;
static const double fork_ns = 10000.0;
static const double chunk_fix_ns = 1500.0;

static const cema_costs *costs_of(const char *isa)
{
    for (size_t i = 0; i < sizeof cost_table / sizeof cost_table[0]; i++)
        if (isa && !strcmp(isa, cost_table[i].isa)) return &cost_table[i];
    return &cost_table[sizeof cost_table / sizeof cost_table[0] - 1]; /* unknown: scalar */
}

/* thread time of `units` equal pieces of work spread over T threads */
static double spread(double units, int T)
{
    if (T <= 1) return units;
    double per = ceil(units / T);
    return per / par_eff;
}

cema_run cema_estimate(const char *isa, const cema_problem *pb, double ns[CEMA_N_RUNS])
{
    const cema_costs *k = costs_of(isa);
    const int L = pb->L, D = pb->D, N = pb->N, T = pb->threads > 0 ? pb->threads : 1;
    const double step = N > k->nmax ? k->wide_per_n * N /* ns per token-channel */
                                    : fmax(k->floor, k->fixed + k->per_n * N);
    const int groups = (D + 15) / 16;
    const double gw = D < 16 ? D : 16; /* channels of a group */
    const int par = D >= 64 ? T : 1;   /* the plain scan runs threaded only from D = 64 */

    /* scan: groups of 16 channels, split across threads */
    ns[CEMA_RUN_SCAN] = spread(groups, par) * gw * L * step + (par > 1 ? fork_ns : 0);

    /* scan-chunked: blocks x groups, then a correction of the first min(B, decay) rows of
     * every block but the first */
    const int B = cema_chunk_len(L), nb = (L + B - 1) / B;
    if (T > 1 && nb > 1) {
        double unit = gw * B * step + chunk_fix_ns;
        double corr = gw * (double)(pb->decay < B ? pb->decay : B) * step * zero_rel + chunk_fix_ns;
        ns[CEMA_RUN_SCAN_CHUNKED] = spread((double)groups * nb, T) * unit +
                                    spread((double)groups * (nb - 1), T) * corr + 3 * fork_ns;
    } else {
        ns[CEMA_RUN_SCAN_CHUNKED] = INFINITY;
    }

    /* fft: per channel two transforms, the state pass over min(L, decay) rows, the
     * carried-state pass likewise when the state is not zero, and the kernel when it is
     * not cached (the recurrence over min(nfft/2, decay) rows and one transform) */
    int nfft, rows;
    cema_fft_blocks(L, pb->decay, &nfft, &rows);
    if (nfft > 0) {
        const double tr1 = k->fft_a * nfft * log2((double)nfft) + k->fft_b * nfft;
        const double tr = tr1 * ((L + rows - 1) / rows);
        const double tail = (double)(pb->decay < L ? pb->decay : L) * step;
        double per_ch = tr + tail * (1 + (pb->carried ? zero_rel : 0));
        if (!pb->kernel_cached) {
            int kl = nfft / 2 < pb->decay ? nfft / 2 : pb->decay;
            per_ch += kl * step * zero_rel + 0.5 * tr1;
        }
        ns[CEMA_RUN_FFT] = spread(groups, T) * gw * per_ch + (T > 1 ? 2 * fork_ns : 0);
    } else {
        ns[CEMA_RUN_FFT] = INFINITY;
    }

    cema_run best = CEMA_RUN_SCAN;
    for (int r = 1; r < CEMA_N_RUNS; r++)
        if (ns[r] < ns[best]) best = (cema_run)r;
    return best;
}

/* ------------------------------------------------------------------ backward cost model */

/* Constants of the backward's cost model, ns, measured on the same machine as the forward's
 * (a shared 2-core KVM guest of a Sapphire Rapids Xeon; fftw 3.3.10, gcc -O2) with
 *   for run in 1 2 3; do for N in 4 16 64; do for S in 1 4; do
 *     tests/cema-timing --backward $S --D 64 --N $N --L 64,256,1024,4096 --threads 1 \
 *         --reps 9 --clock cpu; done; done; done
 * (process CPU time, the minimum over the 3 x 9 calls; the machine was busy, so the values
 * are rounded and only their ratios matter; docs/cema.md has the table). Neither
 * implementation uses the kernel table (plain C in double, and FFTW), so they hold for every
 * ISA.
 *   bscan_fixed, bscan_per_n   the scan, ns per token-channel and sequence: fixed + per_n N
 *                              (the forward recurrence recomputed and its adjoint, in double,
 *                              dependency chains over the components): N = 4, 16, 64 measured
 *                              25, 91-106, 355 at L <= 1024;
 *   bscan_mem                  its factor once a channel's working set, the L+1 states
 *                              (16 N bytes each) and the three strided lines of x, dy, dx per
 *                              row, passes 1 MiB (L2 is 2 MiB): 1.2-1.4 measured at L = 4096;
 *   bfft_a                     one transform (r2c or c2r, FFTW_ESTIMATE) of n = 2^k >= 2L
 *                              points with its share of the gathers, products and scatters:
 *                              a n log2 n (fitted on S = 1 against S = 4: 0.29, 0.33, 0.59,
 *                              0.57 ns per n log2 n at n = 128 .. 8192; the larger is taken);
 *   bfft_kern, bfft_horner     one step of the kernel build (per component, min(L, tail)
 *                              steps) and of the Horner sums (per component, L steps): their
 *                              sum was measured 6.0 at L = 64, 256, and 3.5-3.8 per lag beyond
 *                              the tail. */
static const double bscan_fixed = 3.0, bscan_per_n = 5.5, bscan_mem = 1.2;
static const double bfft_a = 0.6;
static const double bfft_kern = 3.0, bfft_horner = 3.0;

int cema_bwd_kernel_steps(double qmax, int L)
{
    if (!(qmax < 1.0)) return L;
    if (qmax <= 1e-30) return 1;
    const double j = ceil(log(1e-30) / log(qmax)) + 1;
    return j < (double)L ? (int)j : L;
}

cema_run cema_estimate_backward(const cema_bwd_problem *pb, double ns[CEMA_N_RUNS])
{
    const int S = pb->S > 0 ? pb->S : 1, L = pb->L, D = pb->D, N = pb->N;
    const int T = pb->threads > 0 ? pb->threads : 1, par = D > 1 ? T : 1;
    const double fork = par > 1 ? fork_ns : 0.0;
    /* both split the channels across threads (the same way) */
    const double chans = spread(D, par);

    const double wset = (double)(L + 1) * 16 * N + (double)L * 3 * 64;
    const double sstep = (bscan_fixed + bscan_per_n * N) * (wset >= 1048576 ? bscan_mem : 1.0);
    ns[CEMA_RUN_SCAN] = chans * (double)S * L * sstep + fork;
    ns[CEMA_RUN_SCAN_CHUNKED] = INFINITY;

    /* fft, per channel: the kernel (min(L, tail) steps per component) and its transform,
     * per sequence three transforms (x, dy forward, dx back), one more for dk, and the
     * Horner sums over L lags per component */
    double n = 2;
    while (n < 2.0 * L) n *= 2;
    const double tr = bfft_a * n * log2(n);
    const int tail = pb->tail > 0 && pb->tail < L ? pb->tail : L;
    const double per_ch = (3.0 * S + 2.0) * tr + (double)N * tail * bfft_kern +
                          (double)N * L * bfft_horner;
    ns[CEMA_RUN_FFT] = chans * per_ch + fork;
    return ns[CEMA_RUN_FFT] < ns[CEMA_RUN_SCAN] ? CEMA_RUN_FFT : CEMA_RUN_SCAN;
}

/* ------------------------------------------------------------------ wisdom */

#define WISDOM_HEADER "megalodon-cema-wisdom 1"
#define KEYLEN 96

typedef struct {
    char build[KEYLEN], isa[KEYLEN], backend[KEYLEN];
    int L, D, N, T;
    cema_run choice;
    double ns[CEMA_N_RUNS];
} wentry;

struct cema_wisdom {
    char *path;
    int create_dir;
    char build[KEYLEN], isa[KEYLEN], backend[KEYLEN];
    pthread_mutex_t lock;
    int loaded;
    wentry *e;
    size_t n, cap;
};

static atomic_long n_measured;
static atomic_int warned_read, warned_write;

long cema_plan_n_measured(void) { return atomic_load(&n_measured); }
void cema_plan_count_measurement(void) { atomic_fetch_add(&n_measured, 1); }

static void warn_once(atomic_int *flag, const char *what, const char *path, const char *why)
{
    if (atomic_exchange(flag, 1) == 0)
        fprintf(stderr, "megalodon: %s CEMA wisdom file '%s': %s\n", what, path, why);
}

static void key_copy(char *dst, const char *src)
{
    size_t i = 0;
    for (; src && src[i] && i < KEYLEN - 1; i++) {
        unsigned char ch = (unsigned char)src[i];
        dst[i] = ch <= ' ' || ch >= 127 ? '_' : (char)ch;
    }
    dst[i] = 0;
    if (!i) snprintf(dst, KEYLEN, "-");
}

cema_wisdom *cema_wisdom_new(const char *path, int create_dir, const char *build,
                             const char *isa, const char *backend)
{
    cema_wisdom *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    if (path && !(w->path = strdup(path))) {
        free(w);
        return NULL;
    }
    w->create_dir = create_dir;
    key_copy(w->build, build);
    key_copy(w->isa, isa);
    key_copy(w->backend, backend);
    pthread_mutex_init(&w->lock, NULL);
    return w;
}

void cema_wisdom_free(cema_wisdom *w)
{
    if (!w) return;
    pthread_mutex_destroy(&w->lock);
    free(w->e);
    free(w->path);
    free(w);
}

static int same_key(const wentry *a, const wentry *b)
{
    return a->L == b->L && a->D == b->D && a->N == b->N && a->T == b->T &&
           !strcmp(a->build, b->build) && !strcmp(a->isa, b->isa) &&
           !strcmp(a->backend, b->backend);
}

/* add or replace */
static int list_put(wentry **e, size_t *n, size_t *cap, const wentry *x)
{
    for (size_t i = 0; i < *n; i++)
        if (same_key(&(*e)[i], x)) {
            (*e)[i] = *x;
            return 0;
        }
    if (*n == *cap) {
        size_t nc = *cap ? 2 * *cap : 16;
        wentry *ne = realloc(*e, nc * sizeof *ne);
        if (!ne) return -1;
        *e = ne;
        *cap = nc;
    }
    (*e)[(*n)++] = *x;
    return 0;
}

static int parse_ns(const char *s, double *v)
{
    if (!strcmp(s, "-")) {
        *v = -1.0;
        return 0;
    }
    char *end;
    errno = 0;
    *v = strtod(s, &end);
    return errno || *end || end == s || !(*v >= 0.0) || isinf(*v) ? -1 : 0;
}

/* Entries of the file at path into (e, n, cap). 0: read (or absent); -1: unreadable or
 * corrupt, *why says why (and nothing is added). */
static int read_file(const char *path, wentry **e, size_t *n, size_t *cap, const char **why)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        if (errno == ENOENT) return 0;
        *why = strerror(errno);
        return -1;
    }
    char line[1024];
    int lineno = 0, bad = 0;
    wentry *te = NULL;
    size_t tn = 0, tc = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        size_t len = strlen(line);
        if (len == sizeof line - 1 && line[len - 1] != '\n') { bad = 1; break; }
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        if (lineno == 1) {
            if (strcmp(line, WISDOM_HEADER) != 0) { bad = 1; break; }
            continue;
        }
        const char *s = line;
        while (*s == ' ' || *s == '\t') s++;
        if (!*s || *s == '#') continue;
        wentry x;
        char choice[32], ns[CEMA_N_RUNS][32], extra[2];
        int got = sscanf(s, "%95s %95s %95s %d %d %d %d %31s %31s %31s %31s %1s", x.build, x.isa,
                         x.backend, &x.L, &x.D, &x.N, &x.T, choice, ns[0], ns[1], ns[2], extra);
        if (got != 11 || x.L < 1 || x.D < 1 || x.N < 1 || x.T < 1) { bad = 1; break; }
        int r = 0;
        while (r < CEMA_N_RUNS && strcmp(choice, run_names[r])) r++;
        if (r == CEMA_N_RUNS) { bad = 1; break; }
        x.choice = (cema_run)r;
        for (int i = 0; i < CEMA_N_RUNS && !bad; i++)
            if (parse_ns(ns[i], &x.ns[i])) bad = 1;
        if (bad || list_put(&te, &tn, &tc, &x)) { bad = 1; break; }
    }
    if (!bad && ferror(f)) bad = 2;
    fclose(f);
    if (!bad && lineno == 0) bad = 1; /* empty: no header */
    if (bad) {
        free(te);
        *why = bad == 2 ? "read error" : "not a CEMA wisdom file or corrupt; ignored";
        return -1;
    }
    for (size_t i = 0; i < tn; i++)
        if (list_put(e, n, cap, &te[i])) break;
    free(te);
    return 0;
}

static void load_locked(cema_wisdom *w)
{
    if (w->loaded || !w->path) {
        w->loaded = 1;
        return;
    }
    w->loaded = 1;
    const char *why = NULL;
    if (read_file(w->path, &w->e, &w->n, &w->cap, &why))
        warn_once(&warned_read, "ignoring the", w->path, why);
}

static void mkdirs_for(const char *path)
{
    char *dir = strdup(path);
    if (!dir) return;
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = 0;
        for (char *s = dir + 1; *s; s++)
            if (*s == '/') {
                *s = 0;
                mkdir(dir, 0755);
                *s = '/';
            }
        mkdir(dir, 0755);
    }
    free(dir);
}

static void write_locked(cema_wisdom *w)
{
    if (!w->path) return;
    /* merge what other processes wrote meanwhile (ours win) */
    wentry *all = NULL;
    size_t n = 0, cap = 0;
    const char *why = NULL;
    if (read_file(w->path, &all, &n, &cap, &why)) {
        warn_once(&warned_read, "ignoring the", w->path, why);
        n = 0;
    }
    for (size_t i = 0; i < w->n; i++) list_put(&all, &n, &cap, &w->e[i]);

    if (w->create_dir) mkdirs_for(w->path);
    static const char suffix[] = ".tmp.XXXXXX";
    size_t plen = strlen(w->path);
    char *tmp = malloc(plen + sizeof suffix);
    const char *step = "out of memory for the temporary file's name";
    int fd = -1;
    if (tmp) {
        memcpy(tmp, w->path, plen);
        memcpy(tmp + plen, suffix, sizeof suffix);
        fd = mkstemp(tmp);
        step = "cannot create a temporary file";
    }
    if (fd >= 0) {
        FILE *f = fdopen(fd, "w");
        if (!f) {
            close(fd);
            step = "fdopen failed";
        } else {
            fchmod(fd, 0644);
            fprintf(f, "%s\n", WISDOM_HEADER);
            fprintf(f, "# build isa backend L-bucket D N threads choice ns-scan ns-scan-chunked "
                       "ns-fft\n");
            for (size_t i = 0; i < n; i++) {
                const wentry *x = &all[i];
                fprintf(f, "%s %s %s %d %d %d %d %s", x->build, x->isa, x->backend, x->L, x->D,
                        x->N, x->T, run_names[x->choice]);
                for (int r = 0; r < CEMA_N_RUNS; r++)
                    if (x->ns[r] >= 0) fprintf(f, " %.6g", x->ns[r]);
                    else fprintf(f, " -");
                fputc('\n', f);
            }
            int ok = fflush(f) == 0 && !ferror(f) && fsync(fileno(f)) == 0;
            ok = (fclose(f) == 0) && ok;
            if (!ok) step = "write failed";
            else if (rename(tmp, w->path) != 0) step = "rename failed";
            else step = NULL;
        }
        if (step) unlink(tmp);
    }
    if (step) {
        char why2[256];
        snprintf(why2, sizeof why2, "%s: %s", step, strerror(errno));
        warn_once(&warned_write, "cannot write the", w->path, why2);
    }
    free(tmp);
    free(all);
}

int cema_wisdom_get(cema_wisdom *w, int Lb, int D, int N, int threads, cema_run *out)
{
    if (!w) return 0;
    wentry k;
    memcpy(k.build, w->build, KEYLEN);
    memcpy(k.isa, w->isa, KEYLEN);
    memcpy(k.backend, w->backend, KEYLEN);
    k.L = Lb, k.D = D, k.N = N, k.T = threads;
    int found = 0;
    pthread_mutex_lock(&w->lock);
    load_locked(w);
    for (size_t i = 0; i < w->n && !found; i++)
        if (same_key(&w->e[i], &k)) {
            *out = w->e[i].choice;
            found = 1;
        }
    pthread_mutex_unlock(&w->lock);
    return found;
}

void cema_wisdom_put(cema_wisdom *w, int Lb, int D, int N, int threads, cema_run choice,
                     const double ns[CEMA_N_RUNS])
{
    if (!w) return;
    wentry x;
    memcpy(x.build, w->build, KEYLEN);
    memcpy(x.isa, w->isa, KEYLEN);
    memcpy(x.backend, w->backend, KEYLEN);
    x.L = Lb, x.D = D, x.N = N, x.T = threads;
    x.choice = choice;
    for (int r = 0; r < CEMA_N_RUNS; r++) x.ns[r] = ns[r];
    pthread_mutex_lock(&w->lock);
    load_locked(w);
    list_put(&w->e, &w->n, &w->cap, &x);
    write_locked(w);
    pthread_mutex_unlock(&w->lock);
}

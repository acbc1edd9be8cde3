/* test-planner - the CEMA implementations of the CPU backend and their planner:
 *   - fft, scan and scan-chunked against a double-precision recurrence for short and long
 *     lengths (1 .. 20000), with and without a carried state, and the same bits with 1, 2
 *     and 3 threads for each;
 *   - the FFT kernel cache: the same bits as without a cache, through evictions, with the
 *     coefficients changed in place, and from two threads at once;
 *   - the planner: estimate picks the recurrence for L = 1, answers the same every time and
 *     AUTO computes exactly what the algorithm it names computes; measure writes a wisdom
 *     file that a second backend reads back without measuring again; a corrupt or unreadable
 *     wisdom file is ignored with one warning; MEGALODON_CEMA overrides the caller and an
 *     invalid value (or planner or cache setting) fails the backend's creation;
 *   - the backward's planner (cema_backward under MG_CEMA_AUTO): the estimate's choices per
 *     (S, L, N, decay), AUTO computing exactly (gradients added once) what the named
 *     algorithm computes, measure mode writing "cpu-bwd/sK" entries beside the forward's in
 *     the same wisdom file, reading them back without measuring, the measured call's
 *     gradients equal bit for bit to the chosen algorithm's, a corrupt file ignored, and
 *     MEGALODON_CEMA overriding the backward too. */
#include "config.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend.h"
#include "cema-plan.h"
#include "cema_ref.h"
#include "test.h"

static uint32_t seed = 4242;
static float frand(void) { return test_frand(&seed); }

/* slow: a third at |q| = 0.999 (long memory, the hard case); else |q| <= 0.9 */
static mg_cema_coeffs make_coeffs(int D, int N, int slow)
{
    return cema_random_coeffs(D, N, slow, 0.4f, frand);
}

static mg_backend *backend(int threads)
{
    mg_backend *be = NULL;
    if (mg_backend_cpu_new(threads, NULL, &be)) {
        fprintf(stderr, "backend: %s\n", mg_last_error());
        exit(1);
    }
    return be;
}

/* the chunked scan is no public mg_cema_algo: the ops read its value as a cema_algo */
#define ALGO_CHUNKED ((mg_cema_algo)CEMA_ALGO_CHUNKED)
static const mg_cema_algo algos[3] = {MG_CEMA_SCAN, ALGO_CHUNKED, MG_CEMA_FFT};
static const char *const algo_names[3] = {"scan", "scan-chunked", "fft"};

/* ------------------------------------------------------------------ accuracy, threads */

static void test_algorithms(int D, int N, int slow, int misalign, const int *Ls, int nL)
{
    mg_cema_coeffs c = make_coeffs(D, N, slow);
    mg_backend *be[3] = {backend(1), backend(2), backend(3)};
    const size_t DN2 = (size_t)D * N * 2;
    double worst[3] = {0, 0, 0};
    for (int li = 0; li < nL; li++) {
        const int L = Ls[li];
        float *xbuf = malloc(sizeof(float) * ((size_t)L * D + 16)), *x = xbuf + misalign;
        float *h0 = malloc(sizeof(float) * DN2);
        float *ye = malloc(sizeof(float) * (size_t)L * D), *he = malloc(sizeof(float) * DN2);
        float *y[3], *h[3];
        for (int th = 0; th < 3; th++) {
            y[th] = malloc(sizeof(float) * ((size_t)L * D + 16));
            h[th] = malloc(sizeof(float) * DN2);
        }
        for (size_t i = 0; i < (size_t)L * D; i++) x[i] = 2.0f * frand();
        for (int carried = 0; carried < 2; carried++) {
            for (size_t i = 0; i < DN2; i++) h0[i] = carried ? 3.0f * frand() : 0.0f;
            cema_reference(x, L, &c, h0, ye, he);
            /* fp32 rounding grows with the effective kernel length (1/(1-|q|) at most) */
            const double tol = 2e-5 * (1.0 + sqrt((double)(L < 1000 ? L : 1000)));
            for (int a = 0; a < 3; a++) {
                for (int th = 0; th < 3; th++) {
                    float *yo = y[th] + misalign;
                    memcpy(h[th], h0, sizeof(float) * DN2);
                    int rc = be[th]->cema(be[th], algos[a], x, L, &c, h[th], yo);
                    CHECK(rc == MG_OK, "cema: %s", mg_last_error());
                    char what[128];
                    snprintf(what, sizeof what, "%s D=%d N=%d L=%d carried=%d slow=%d threads=%d y",
                             algo_names[a], D, N, L, carried, slow, th + 1);
                    double w = CHECK_CLOSE(what, yo, ye, (size_t)L * D, tol);
                    if (w > worst[a]) worst[a] = w;
                    what[strlen(what) - 1] = 'h';
                    CHECK_CLOSE(what, h[th], he, DN2, tol);
                }
                for (int th = 1; th < 3; th++)
                    CHECK(memcmp(y[0] + misalign, y[th] + misalign, sizeof(float) * L * D) == 0 &&
                              memcmp(h[0], h[th], sizeof(float) * DN2) == 0,
                          "%s D=%d L=%d carried=%d: 1 and %d threads differ", algo_names[a], D, L,
                          carried, th + 1);
            }
        }
        for (int th = 0; th < 3; th++) {
            free(y[th]);
            free(h[th]);
        }
        free(xbuf); free(h0); free(ye); free(he);
    }
    printf("D=%d N=%d slow=%d misalign=%d: max abs error vs double: scan %.3g, scan-chunked "
           "%.3g, fft %.3g\n", D, N, slow, misalign, worst[0], worst[1], worst[2]);
    for (int th = 0; th < 3; th++) be[th]->free(be[th]);
    cema_free_coeffs(&c);
}

/* ------------------------------------------------------------------ FFT kernel cache */

typedef struct {
    mg_backend *be;
    const mg_cema_coeffs *c[2];
    const float *x, *h0, *want[2];
    int L, iters, bad;
} cache_job;

static void *cache_worker(void *arg)
{
    cache_job *j = arg;
    const size_t DN2 = (size_t)j->c[0]->D * j->c[0]->N * 2, n = (size_t)j->L * j->c[0]->D;
    float *y = malloc(sizeof(float) * n), *h = malloc(sizeof(float) * DN2);
    for (int it = 0; it < j->iters; it++) {
        int k = it & 1;
        memcpy(h, j->h0, sizeof(float) * DN2);
        if (j->be->cema(j->be, MG_CEMA_FFT, j->x, j->L, j->c[k], h, y) ||
            memcmp(y, j->want[k], sizeof(float) * n) != 0)
            j->bad++;
    }
    free(y);
    free(h);
    return NULL;
}

static void test_cache(void)
{
    const int D = 40, N = 6, L = 700;
    const size_t DN2 = (size_t)D * N * 2, n = (size_t)L * D;
    mg_cema_coeffs c1 = make_coeffs(D, N, 1), c2 = make_coeffs(D, N, 0);
    float *x = malloc(sizeof(float) * n), *h0 = malloc(sizeof(float) * DN2);
    for (size_t i = 0; i < n; i++) x[i] = frand();
    for (size_t i = 0; i < DN2; i++) h0[i] = frand();
    float *y1 = malloc(sizeof(float) * n), *y2 = malloc(sizeof(float) * n);
    float *y = malloc(sizeof(float) * n), *h = malloc(sizeof(float) * DN2);
    float *hw = malloc(sizeof(float) * DN2);

    /* no cache: the reference bits */
    mg_backend *nocache = backend(2);
    cpu_cema_cache_budget(nocache, 0);
    memcpy(h, h0, sizeof(float) * DN2);
    CHECK(nocache->cema(nocache, MG_CEMA_FFT, x, L, &c1, h, y1) == MG_OK, "%s", mg_last_error());
    memcpy(hw, h, sizeof(float) * DN2);
    memcpy(h, h0, sizeof(float) * DN2);
    CHECK(nocache->cema(nocache, MG_CEMA_FFT, x, L, &c2, h, y2) == MG_OK, "%s", mg_last_error());
    cema_cache_stats st;
    cpu_cema_cache_stats(nocache, &st);
    CHECK(st.entries == 0 && st.bytes == 0 && st.hits == 0, "budget 0 must cache nothing");

    /* cached: miss then hits, same bits */
    mg_backend *be = backend(2);
    for (int rep = 0; rep < 3; rep++) {
        memcpy(h, h0, sizeof(float) * DN2);
        CHECK(be->cema(be, MG_CEMA_FFT, x, L, &c1, h, y) == MG_OK, "%s", mg_last_error());
        CHECK(memcmp(y, y1, sizeof(float) * n) == 0 && memcmp(h, hw, sizeof(float) * DN2) == 0,
              "cached kernel (rep %d) gives other bits than no cache", rep);
    }
    cpu_cema_cache_stats(be, &st);
    CHECK(st.misses == 1 && st.hits == 2 && st.entries == 1, "cache: %ld misses %ld hits %ld entries",
          st.misses, st.hits, st.entries);
    const size_t one = st.bytes;

    /* room for one kernel: every switch evicts the other, the bits stay */
    cpu_cema_cache_budget(be, one + one / 2);
    for (int it = 0; it < 6; it++) {
        const mg_cema_coeffs *c = it & 1 ? &c2 : &c1;
        memcpy(h, h0, sizeof(float) * DN2);
        CHECK(be->cema(be, MG_CEMA_FFT, x, L, c, h, y) == MG_OK, "%s", mg_last_error());
        CHECK(memcmp(y, it & 1 ? y2 : y1, sizeof(float) * n) == 0, "after eviction (%d): other bits", it);
    }
    cpu_cema_cache_stats(be, &st);
    CHECK(st.evictions >= 5 && st.entries == 1 && st.bytes <= one + one / 2,
          "eviction: %ld evictions, %ld entries, %zu bytes", st.evictions, st.entries, st.bytes);

    /* two threads at once on one backend, evicting each other's kernels */
    cache_job jobs[2];
    pthread_t tid[2];
    for (int k = 0; k < 2; k++) {
        jobs[k] = (cache_job){be, {k ? &c2 : &c1, k ? &c1 : &c2}, x, h0, {k ? y2 : y1, k ? y1 : y2}, L, 8, 0};
        pthread_create(&tid[k], NULL, cache_worker, &jobs[k]);
    }
    for (int k = 0; k < 2; k++) pthread_join(tid[k], NULL);
    CHECK(jobs[0].bad == 0 && jobs[1].bad == 0, "concurrent FFT calls: %d + %d wrong results",
          jobs[0].bad, jobs[1].bad);

    /* the coefficients changed in place: a new kernel, not the cached one */
    cpu_cema_cache_budget(be, (size_t)64 << 20);
    memcpy(h, h0, sizeof(float) * DN2);
    be->cema(be, MG_CEMA_FFT, x, L, &c1, h, y);
    for (int i = 0; i < D * N * 2; i++) c1.eta[i] *= -0.5f;
    float *ye = malloc(sizeof(float) * n), *he = malloc(sizeof(float) * DN2);
    cema_reference(x, L, &c1, h0, ye, he);
    memcpy(h, h0, sizeof(float) * DN2);
    CHECK(be->cema(be, MG_CEMA_FFT, x, L, &c1, h, y) == MG_OK, "%s", mg_last_error());
    CHECK_CLOSE("fft after changing the coefficients in place", y, ye, n, 1e-3);

    be->free(be);
    nocache->free(nocache);
    cema_free_coeffs(&c1);
    cema_free_coeffs(&c2);
    free(x); free(h0); free(y1); free(y2); free(y); free(h); free(hw); free(ye); free(he);
}

/* ------------------------------------------------------------------ planner */

static int algo_of(const char *name)
{
    for (int a = 0; a < 3; a++)
        if (name && !strcmp(name, algo_names[a])) return a;
    return -1;
}

/* be->cema(AUTO) computes exactly what the algorithm the planner names computes */
static void check_auto_matches(mg_backend *be, const mg_cema_coeffs *c, int L, const char *what)
{
    const size_t DN2 = (size_t)c->D * c->N * 2, n = (size_t)L * c->D;
    float *x = malloc(sizeof(float) * n), *h0 = malloc(sizeof(float) * DN2);
    float *ya = malloc(sizeof(float) * n), *yb = malloc(sizeof(float) * n);
    float *ha = malloc(sizeof(float) * DN2), *hb = malloc(sizeof(float) * DN2);
    for (size_t i = 0; i < n; i++) x[i] = frand();
    for (size_t i = 0; i < DN2; i++) h0[i] = frand();
    memcpy(ha, h0, sizeof(float) * DN2);
    CHECK(be->cema(be, MG_CEMA_AUTO, x, L, c, ha, ya) == MG_OK, "%s", mg_last_error());
    int a = algo_of(cpu_cema_choice(be, MG_CEMA_AUTO, L, c));
    CHECK(a >= 0, "%s: no choice for L=%d", what, L);
    if (a >= 0) {
        memcpy(hb, h0, sizeof(float) * DN2);
        CHECK(be->cema(be, algos[a], x, L, c, hb, yb) == MG_OK, "%s", mg_last_error());
        CHECK(memcmp(ya, yb, sizeof(float) * n) == 0 && memcmp(ha, hb, sizeof(float) * DN2) == 0,
              "%s L=%d: auto differs from %s", what, L, algo_names[a]);
    }
    free(x); free(h0); free(ya); free(yb); free(ha); free(hb);
}

static void test_estimate(void)
{
    mg_cema_coeffs c = make_coeffs(64, 16, 0);
    for (int threads = 1; threads <= 2; threads++) {
        mg_backend *be = backend(threads);
        const char *c1 = cpu_cema_choice(be, MG_CEMA_AUTO, 1, &c);
        CHECK(c1 && !strcmp(c1, "scan"), "estimate for L=1: %s", c1 ? c1 : "NULL");
        const int Ls[] = {2, 16, 100, 1000, 5000, 20000};
        for (size_t i = 0; i < sizeof Ls / sizeof Ls[0]; i++) {
            const char *a = cpu_cema_choice(be, MG_CEMA_AUTO, Ls[i], &c);
            const char *b = cpu_cema_choice(be, MG_CEMA_AUTO, Ls[i], &c);
            CHECK(a && b && !strcmp(a, b), "estimate not consistent for L=%d", Ls[i]);
            char buf[256];
            if (i == 3) printf("%s\n", cpu_cema_explain(be, Ls[i], &c, buf, sizeof buf));
        }
        check_auto_matches(be, &c, 1, "estimate");
        check_auto_matches(be, &c, 3000, "estimate");
        /* an explicit request is obeyed */
        CHECK(!strcmp(cpu_cema_choice(be, MG_CEMA_FFT, 100, &c), "fft") &&
                  !strcmp(cpu_cema_choice(be, MG_CEMA_SCAN, 100, &c), "scan") &&
                  !strcmp(cpu_cema_choice(be, MG_CEMA_FFT, 1, &c), "scan"),
              "explicit algorithms (and decode) are not obeyed");
        be->free(be);
    }
    cema_free_coeffs(&c);

    /* the cost model's corners: wide N with a short memory and a cached kernel favours the
     * FFT; one group of channels on many threads with a long input favours the chunked scan;
     * L = 1 the recurrence */
    double ns[CEMA_N_RUNS];
    cema_problem wide = {4096, 1024, 512, 1, 60, 1, 1};
    CHECK(cema_estimate("avx512", &wide, ns) == CEMA_RUN_FFT, "N=512: fft expected (%g %g %g)",
          ns[0], ns[1], ns[2]);
    cema_problem narrow = {65536, 16, 16, 8, 60, 1, 1};
    CHECK(cema_estimate("avx512", &narrow, ns) == CEMA_RUN_SCAN_CHUNKED,
          "D=16, 8 threads: scan-chunked expected (%g %g %g)", ns[0], ns[1], ns[2]);
    cema_problem single = {65536, 16, 16, 1, 60, 1, 1};
    CHECK(cema_estimate("avx512", &single, ns) != CEMA_RUN_SCAN_CHUNKED,
          "scan-chunked chosen with one thread");
    cema_problem one = {1, 1024, 16, 2, 60, 1, 1};
    CHECK(cema_estimate("avx512", &one, ns) == CEMA_RUN_SCAN, "L=1: scan expected");
}

/* Replace the file at path with the n bytes b. */
static void write_file(const char *path, const void *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    int ok = f && fwrite(b, 1, n, f) == n;
    if (f && fclose(f) != 0) ok = 0;
    CHECK(ok, "writing %s", path);
}

/* Replace the wisdom file with text (a corrupt one); returns the measurements so far. */
static long corrupt_wisdom(const char *path, const char *text)
{
    write_file(path, text, strlen(text));
    return cema_plan_n_measured();
}

static int count_in_file(const char *path, const char *needle)
{
    long size = 0;
    char *s = (char *)test_read_file(path, &size);
    int n = 0;
    if (!s) return -1;
    char *buf = malloc((size_t)size + 1);
    memcpy(buf, s, (size_t)size);
    buf[size] = 0;
    for (char *p = buf; (p = strstr(p, needle)); p += strlen(needle)) n++;
    free(buf);
    free(s);
    return n;
}

static void test_measure(const char *dir)
{
    char wisdom[512], errpath[512];
    snprintf(wisdom, sizeof wisdom, "%s/sub/dir/cema-wisdom", dir);
    snprintf(errpath, sizeof errpath, "%s/stderr.txt", dir);
    setenv("MEGALODON_CEMA_PLANNER", "measure", 1);
    setenv("MEGALODON_CEMA_WISDOM", wisdom, 1);
    mg_cema_coeffs c = make_coeffs(48, 8, 0);

    /* the explicit path's directory is not created: the write fails with one warning, the
     * choice is still made and remembered in memory */
    long m0 = cema_plan_n_measured();
    mg_backend *a = backend(2);
    fflush(stderr);
    int saved = dup(2);
    CHECK(freopen(errpath, "w", stderr) != NULL, "cannot redirect stderr");
    const char *ca = cpu_cema_choice(a, MG_CEMA_AUTO, 300, &c);
    fflush(stderr);
    CHECK(ca != NULL && cema_plan_n_measured() == m0 + 1, "measure: %ld measurements",
          cema_plan_n_measured() - m0);
    CHECK(access(wisdom, F_OK) != 0, "wisdom written into a missing directory?");
    a->free(a);

    /* now with the directory: measured once, written, read back by a second backend */
    snprintf(wisdom, sizeof wisdom, "%s/cema-wisdom", dir);
    setenv("MEGALODON_CEMA_WISDOM", wisdom, 1);
    m0 = cema_plan_n_measured();
    a = backend(2);
    check_auto_matches(a, &c, 300, "measure");
    ca = cpu_cema_choice(a, MG_CEMA_AUTO, 300, &c);
    CHECK(ca != NULL && cema_plan_n_measured() == m0 + 1, "measure: %ld measurements, want 1",
          cema_plan_n_measured() - m0);
    CHECK(count_in_file(wisdom, "megalodon-cema-wisdom 1\n") == 1, "wisdom file header");
    CHECK(count_in_file(wisdom, " 512 48 8 2 ") == 1, "wisdom file entry (L bucket 512)");
    cpu_cema_choice(a, MG_CEMA_AUTO, 400, &c); /* same bucket: no new measurement */
    CHECK(cema_plan_n_measured() == m0 + 1, "L=400 measured again");
    mg_backend *b = backend(2);
    const char *cb = cpu_cema_choice(b, MG_CEMA_AUTO, 300, &c);
    CHECK(cb && ca && !strcmp(ca, cb) && cema_plan_n_measured() == m0 + 1,
          "second backend: %s vs %s, %ld measurements", cb ? cb : "NULL", ca ? ca : "NULL",
          cema_plan_n_measured() - m0);
    check_auto_matches(b, &c, 300, "wisdom");
    /* another thread count is another key */
    mg_backend *b1 = backend(1);
    cpu_cema_choice(b1, MG_CEMA_AUTO, 300, &c);
    CHECK(cema_plan_n_measured() == m0 + 2, "threads=1 not measured separately");
    CHECK(count_in_file(wisdom, " 512 48 8 ") == 2, "both entries kept in the file");
    b1->free(b1);
    b->free(b);
    a->free(a);

    /* a corrupt file: ignored with one warning, measured again, rewritten */
    m0 = corrupt_wisdom(wisdom, "megalodon-cema-wisdom 1\nthis is not a wisdom line\n");
    for (int k = 0; k < 2; k++) {
        mg_backend *cbe = backend(2);
        const char *cc = cpu_cema_choice(cbe, MG_CEMA_AUTO, 300, &c);
        CHECK(cc != NULL, "corrupt wisdom: no choice");
        cbe->free(cbe);
    }
    CHECK(cema_plan_n_measured() == m0 + 1, "corrupt wisdom: %ld measurements, want 1",
          cema_plan_n_measured() - m0);
    CHECK(count_in_file(wisdom, "megalodon-cema-wisdom 1\n") == 1 &&
              count_in_file(wisdom, "not a wisdom") == 0,
          "corrupt wisdom file not replaced");
    /* binary garbage and an unreadable path (a directory) are not fatal either */
    write_file(wisdom, "\x00\xff\x13garbage", 10);
    mg_backend *g = backend(2);
    CHECK(cpu_cema_choice(g, MG_CEMA_AUTO, 300, &c) != NULL, "garbage wisdom: no choice");
    g->free(g);
    setenv("MEGALODON_CEMA_WISDOM", dir, 1);
    g = backend(2);
    check_auto_matches(g, &c, 200, "wisdom path is a directory");
    g->free(g);
    /* none: memory only */
    setenv("MEGALODON_CEMA_WISDOM", "none", 1);
    m0 = cema_plan_n_measured();
    g = backend(2);
    CHECK(cpu_cema_choice(g, MG_CEMA_AUTO, 300, &c) != NULL && cema_plan_n_measured() == m0 + 1,
          "wisdom none: measure in memory");
    g->free(g);

    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    clearerr(stderr);
    /* warnings: one for reading (corrupt/unreadable), one for writing, never more */
    CHECK(count_in_file(errpath, "ignoring the CEMA wisdom file") == 1,
          "read warnings: %d", count_in_file(errpath, "ignoring the CEMA wisdom file"));
    CHECK(count_in_file(errpath, "cannot write the CEMA wisdom file") == 1,
          "write warnings: %d", count_in_file(errpath, "cannot write the CEMA wisdom file"));
    CHECK(count_in_file(errpath, "\n") == 2, "stderr has %d lines", count_in_file(errpath, "\n"));
    remove(errpath);
    remove(wisdom);
    unsetenv("MEGALODON_CEMA_PLANNER");
    unsetenv("MEGALODON_CEMA_WISDOM");
    cema_free_coeffs(&c);
}

/* ------------------------------------------------------------------ backward planner */

typedef struct {
    int S, L, D, N;
    size_t nx, ng;
    float *x, *dy, *g0; /* g0: the gradients' values before the call (non-zero) */
} bwd_case;

static bwd_case bwd_case_new(int S, int L, const mg_cema_coeffs *c)
{
    bwd_case k = {S, L, c->D, c->N, (size_t)S * L * c->D, (size_t)c->D * c->N * 5 + c->D,
                  NULL, NULL, NULL};
    k.x = malloc(sizeof(float) * k.nx);
    k.dy = malloc(sizeof(float) * k.nx);
    k.g0 = malloc(sizeof(float) * k.ng);
    for (size_t i = 0; i < k.nx; i++) k.x[i] = frand(), k.dy[i] = 0.1f * frand();
    for (size_t i = 0; i < k.ng; i++) k.g0[i] = frand();
    return k;
}

static void bwd_case_free(bwd_case *k)
{
    free(k->x);
    free(k->dy);
    free(k->g0);
}

/* cema_backward(algo) from the gradients g0: dx and the gradients into dx, g */
static int bwd_call(mg_backend *be, mg_cema_algo algo, const bwd_case *k,
                    const mg_cema_coeffs *c, float *dx, float *g)
{
    const size_t DN = (size_t)k->D * k->N;
    memcpy(g, k->g0, sizeof(float) * k->ng);
    return be->cema_backward(be, algo, k->x, k->S, k->L, c, k->dy, dx, g, g + DN, g + 3 * DN,
                             g + 5 * DN);
}

/* cema_backward(AUTO) computes exactly what the algorithm the planner names computes (the
 * gradients added once); returns the choice's index in algos[] (-1: none) */
static int check_bwd_auto_matches(mg_backend *be, const mg_cema_coeffs *c, const bwd_case *k,
                                  const char *what)
{
    float *dxa = malloc(sizeof(float) * k->nx), *dxb = malloc(sizeof(float) * k->nx);
    float *ga = malloc(sizeof(float) * k->ng), *gb = malloc(sizeof(float) * k->ng);
    CHECK(bwd_call(be, MG_CEMA_AUTO, k, c, dxa, ga) == MG_OK, "%s", mg_last_error());
    int a = algo_of(cpu_cema_backward_choice(be, MG_CEMA_AUTO, k->S, k->L, c));
    CHECK(a == 0 || a == 2, "%s: backward choice for S=%d L=%d", what, k->S, k->L);
    if (a >= 0) {
        CHECK(bwd_call(be, algos[a], k, c, dxb, gb) == MG_OK, "%s", mg_last_error());
        CHECK(memcmp(dxa, dxb, sizeof(float) * k->nx) == 0 &&
                  memcmp(ga, gb, sizeof(float) * k->ng) == 0,
              "%s S=%d L=%d: backward auto differs from %s", what, k->S, k->L, algo_names[a]);
        /* and the two algorithms do differ (else the comparison shows nothing) */
        CHECK(bwd_call(be, algos[2 - a], k, c, dxb, gb) == MG_OK, "%s", mg_last_error());
        CHECK(memcmp(ga, gb, sizeof(float) * k->ng) != 0, "%s: scan and fft equal bit for bit?",
              what);
    }
    free(dxa); free(dxb); free(ga); free(gb);
    return a;
}

static void test_estimate_backward(void)
{
    /* the cost model: the scan costs S L N, the FFT (3 S + 2) transforms of 2L per channel
     * plus N L Horner steps; so the FFT wins with several sequences or many components,
     * the scan with one sequence and few components, and a slow decay (the kernel built over
     * all L lags) moves the choice back to the scan */
    double ns[CEMA_N_RUNS];
    struct { cema_bwd_problem pb; cema_run want; } cases[] = {
        {{1, 32, 64, 16, 1, 656}, CEMA_RUN_SCAN},    /* short, one sequence */
        {{4, 32, 64, 16, 1, 656}, CEMA_RUN_FFT},     /* short, four */
        {{4, 4096, 64, 16, 2, 656}, CEMA_RUN_FFT},   /* long */
        {{1, 4096, 64, 4, 1, 656}, CEMA_RUN_SCAN},   /* N = 4: scan, */
        {{1, 4096, 64, 64, 1, 656}, CEMA_RUN_FFT},   /* N = 64: fft */
        {{1, 1024, 64, 16, 1, 656}, CEMA_RUN_SCAN},  /* S = 1: scan, */
        {{8, 1024, 64, 16, 1, 656}, CEMA_RUN_FFT},   /* S = 8: fft */
        {{1, 1024, 64, 64, 1, 656}, CEMA_RUN_FFT},   /* a short decay: fft, */
        {{1, 1024, 64, 64, 1, 1024}, CEMA_RUN_SCAN}, /* a slow one: scan */
        {{4, 4096, 1024, 8, 2, 656}, CEMA_RUN_SCAN}, /* N = 8, 4 sequences, long: scan */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const cema_bwd_problem *pb = &cases[i].pb;
        cema_run r = cema_estimate_backward(pb, ns);
        CHECK(r == cases[i].want && isinf(ns[CEMA_RUN_SCAN_CHUNKED]),
              "backward estimate S=%d L=%d D=%d N=%d tail=%d: %s, want %s (scan %g fft %g)",
              pb->S, pb->L, pb->D, pb->N, pb->tail, cema_run_name(r),
              cema_run_name(cases[i].want), ns[0], ns[2]);
        /* the choice does not depend on D or the thread count */
        cema_bwd_problem wide = *pb;
        wide.D = 3 * pb->D;
        wide.threads = 3;
        CHECK(cema_estimate_backward(&wide, ns) == r, "backward estimate depends on D, T");
    }
    CHECK(cema_bwd_kernel_steps(0.9, 100000) == 657 && cema_bwd_kernel_steps(0.999, 500) == 500 &&
              cema_bwd_kernel_steps(1.0, 70) == 70,
          "cema_bwd_kernel_steps: %d %d %d", cema_bwd_kernel_steps(0.9, 100000),
          cema_bwd_kernel_steps(0.999, 500), cema_bwd_kernel_steps(1.0, 70));

    /* through the backend: consistent, AUTO equals the named algorithm (gradients added
     * once), explicit requests obeyed, scan-chunked means the scan */
    mg_cema_coeffs c = make_coeffs(24, 16, 0);
    for (int threads = 1; threads <= 2; threads++) {
        mg_backend *be = backend(threads);
        const char *s1 = cpu_cema_backward_choice(be, MG_CEMA_AUTO, 1, 40, &c);
        const char *s4 = cpu_cema_backward_choice(be, MG_CEMA_AUTO, 4, 40, &c);
        CHECK(s1 && s4 && !strcmp(s1, "scan") && !strcmp(s4, "fft"),
              "backward estimate S=1, 4, L=40, N=16: %s %s", s1 ? s1 : "NULL", s4 ? s4 : "NULL");
        CHECK(!strcmp(cpu_cema_backward_choice(be, MG_CEMA_FFT, 1, 40, &c), "fft") &&
                  !strcmp(cpu_cema_backward_choice(be, MG_CEMA_SCAN, 4, 40, &c), "scan") &&
                  !strcmp(cpu_cema_backward_choice(be, ALGO_CHUNKED, 4, 40, &c), "scan"),
              "backward: explicit algorithms not obeyed");
        for (int S = 1; S <= 4; S += 3) {
            bwd_case k = bwd_case_new(S, 40, &c);
            check_bwd_auto_matches(be, &c, &k, "backward estimate");
            bwd_case_free(&k);
        }
        be->free(be);
    }
    cema_free_coeffs(&c);
}

static void test_measure_backward(const char *dir)
{
    char wisdom[512];
    snprintf(wisdom, sizeof wisdom, "%s/cema-wisdom-bwd", dir);
    setenv("MEGALODON_CEMA_PLANNER", "measure", 1);
    setenv("MEGALODON_CEMA_WISDOM", wisdom, 1);
    mg_cema_coeffs c = make_coeffs(48, 8, 0);
    bwd_case k = bwd_case_new(4, 300, &c);
    float *dxa = malloc(sizeof(float) * k.nx), *dxb = malloc(sizeof(float) * k.nx);
    float *ga = malloc(sizeof(float) * k.ng), *gb = malloc(sizeof(float) * k.ng);

    /* a forward entry first: the backward's go beside it in the same file */
    mg_backend *a = backend(2);
    long m0 = cema_plan_n_measured();
    CHECK(cpu_cema_choice(a, MG_CEMA_AUTO, 300, &c) != NULL && cema_plan_n_measured() == m0 + 1,
          "forward measure");
    /* the first backward call of the shape measures (on its own input), once */
    m0 = cema_plan_n_measured();
    CHECK(bwd_call(a, MG_CEMA_AUTO, &k, &c, dxa, ga) == MG_OK, "%s", mg_last_error());
    CHECK(cema_plan_n_measured() == m0 + 1, "backward measure: %ld measurements, want 1",
          cema_plan_n_measured() - m0);
    const char *ca = cpu_cema_backward_choice(a, MG_CEMA_AUTO, 4, 300, &c);
    int ia = algo_of(ca);
    CHECK(ia == 0 || ia == 2, "backward measure: choice %s", ca ? ca : "NULL");
    /* the measured call's results are the chosen algorithm's, gradients added once */
    if (ia >= 0) {
        CHECK(bwd_call(a, algos[ia], &k, &c, dxb, gb) == MG_OK, "%s", mg_last_error());
        CHECK(memcmp(dxa, dxb, sizeof(float) * k.nx) == 0 &&
                  memcmp(ga, gb, sizeof(float) * k.ng) == 0,
              "backward measure: the measured call differs from %s run directly", ca);
    }
    CHECK(count_in_file(wisdom, "megalodon-cema-wisdom 1\n") == 1, "wisdom file header");
    CHECK(count_in_file(wisdom, " cpu 512 48 8 2 ") == 1, "forward entry kept");
    CHECK(count_in_file(wisdom, " cpu-bwd/s4 512 48 8 2 ") == 1, "backward wisdom entry");
    /* reused: same bucket, same S bucket, a second call */
    check_bwd_auto_matches(a, &c, &k, "backward measure");
    bwd_case k3 = bwd_case_new(3, 400, &c); /* S = 3: the bucket of 4 */
    check_bwd_auto_matches(a, &c, &k3, "backward measure S=3");
    bwd_case_free(&k3);
    CHECK(cema_plan_n_measured() == m0 + 1, "backward measured again: %ld",
          cema_plan_n_measured() - m0);
    /* a second backend reads it back */
    mg_backend *b = backend(2);
    const char *cb = cpu_cema_backward_choice(b, MG_CEMA_AUTO, 4, 300, &c);
    CHECK(cb && ca && !strcmp(ca, cb) && cema_plan_n_measured() == m0 + 1,
          "backward, second backend: %s vs %s, %ld measurements", cb ? cb : "NULL",
          ca ? ca : "NULL", cema_plan_n_measured() - m0);
    check_bwd_auto_matches(b, &c, &k, "backward wisdom");
    /* another sequence count bucket and another thread count are other keys */
    bwd_case k1 = bwd_case_new(1, 300, &c);
    check_bwd_auto_matches(b, &c, &k1, "backward measure S=1");
    CHECK(cema_plan_n_measured() == m0 + 2, "S=1 not measured separately");
    mg_backend *b1 = backend(1);
    check_bwd_auto_matches(b1, &c, &k, "backward measure 1 thread");
    CHECK(cema_plan_n_measured() == m0 + 3, "threads=1 not measured separately");
    CHECK(count_in_file(wisdom, " cpu-bwd/s1 512 48 8 2 ") == 1 &&
              count_in_file(wisdom, " cpu-bwd/s4 512 48 8 1 ") == 1 &&
              count_in_file(wisdom, " cpu 512 48 8 2 ") == 1,
          "backward entries and the forward's kept in the file");
    b1->free(b1);
    b->free(b);
    a->free(a);

    /* a corrupt file: ignored (the warning was given by test_measure, once per process),
     * measured again, the call's gradients still added once, the file rewritten */
    m0 = corrupt_wisdom(wisdom, "megalodon-cema-wisdom 1\ncpu-bwd/s4 is not a wisdom line\n");
    a = backend(2);
    CHECK(bwd_call(a, MG_CEMA_AUTO, &k, &c, dxa, ga) == MG_OK, "%s", mg_last_error());
    CHECK(cema_plan_n_measured() == m0 + 1, "corrupt wisdom: %ld backward measurements",
          cema_plan_n_measured() - m0);
    ia = algo_of(cpu_cema_backward_choice(a, MG_CEMA_AUTO, 4, 300, &c));
    if (ia >= 0) {
        CHECK(bwd_call(a, algos[ia], &k, &c, dxb, gb) == MG_OK, "%s", mg_last_error());
        CHECK(memcmp(dxa, dxb, sizeof(float) * k.nx) == 0 &&
                  memcmp(ga, gb, sizeof(float) * k.ng) == 0,
              "corrupt wisdom: the measured call differs from %s", algo_names[ia]);
    }
    CHECK(count_in_file(wisdom, "not a wisdom") == 0 &&
              count_in_file(wisdom, " cpu-bwd/s4 512 48 8 2 ") == 1,
          "corrupt wisdom file not replaced");
    a->free(a);
    /* none: memory only, per backend */
    setenv("MEGALODON_CEMA_WISDOM", "none", 1);
    m0 = cema_plan_n_measured();
    a = backend(2);
    check_bwd_auto_matches(a, &c, &k, "backward wisdom none");
    check_bwd_auto_matches(a, &c, &k, "backward wisdom none");
    CHECK(cema_plan_n_measured() == m0 + 1, "wisdom none: %ld backward measurements",
          cema_plan_n_measured() - m0);
    a->free(a);

    remove(wisdom);
    unsetenv("MEGALODON_CEMA_PLANNER");
    setenv("MEGALODON_CEMA_WISDOM", "none", 1);
    bwd_case_free(&k);
    bwd_case_free(&k1);
    free(dxa); free(dxb); free(ga); free(gb);
    cema_free_coeffs(&c);
}

static void test_env(void)
{
    static const char *const bad[][2] = {{"MEGALODON_CEMA", "bogus"},
                                         {"MEGALODON_CEMA_PLANNER", "guess"},
                                         {"MEGALODON_CEMA_CACHE_MB", "12abc"},
                                         {"MEGALODON_CEMA_CACHE_MB", "-1"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        setenv(bad[i][0], bad[i][1], 1);
        mg_backend *be = NULL;
        int rc = mg_backend_cpu_new(1, NULL, &be);
        CHECK(rc == MG_ERR_INVALID_ARG && be == NULL && strstr(mg_last_error(), bad[i][0]),
              "%s=%s: rc %d, '%s'", bad[i][0], bad[i][1], rc, mg_last_error());
        if (be) be->free(be);
        unsetenv(bad[i][0]);
    }

    /* MEGALODON_CEMA overrides what the caller asks (but not decode) */
    mg_cema_coeffs c = make_coeffs(20, 4, 0);
    const int L = 50, D = 20;
    const size_t DN2 = (size_t)D * 4 * 2;
    float x[50 * 20], h0[160], h[160], y1[50 * 20], y2[50 * 20];
    for (int i = 0; i < L * D; i++) x[i] = frand();
    for (size_t i = 0; i < DN2; i++) h0[i] = frand();
    mg_backend *plain = backend(2);
    memcpy(h, h0, sizeof h);
    plain->cema(plain, MG_CEMA_FFT, x, L, &c, h, y1);
    setenv("MEGALODON_CEMA", "fft", 1);
    mg_backend *over = backend(2);
    unsetenv("MEGALODON_CEMA"); /* read once, when the backend was created */
    memcpy(h, h0, sizeof h);
    over->cema(over, MG_CEMA_SCAN, x, L, &c, h, y2);
    CHECK(memcmp(y1, y2, sizeof y1) == 0, "MEGALODON_CEMA=fft did not override scan");
    CHECK(!strcmp(cpu_cema_choice(over, MG_CEMA_AUTO, L, &c), "fft") &&
              !strcmp(cpu_cema_choice(over, MG_CEMA_SCAN, 1, &c), "scan"),
          "MEGALODON_CEMA=fft: choice");
    /* the backward too: fft forced, and AUTO equal to it bit for bit */
    CHECK(!strcmp(cpu_cema_backward_choice(over, MG_CEMA_SCAN, 1, L, &c), "fft") &&
              !strcmp(cpu_cema_backward_choice(over, MG_CEMA_AUTO, 1, L, &c), "fft"),
          "MEGALODON_CEMA=fft: backward choice");
    {
        bwd_case k = bwd_case_new(2, L, &c);
        float *dxa = malloc(sizeof(float) * k.nx), *dxb = malloc(sizeof(float) * k.nx);
        float *ga = malloc(sizeof(float) * k.ng), *gb = malloc(sizeof(float) * k.ng);
        bwd_call(over, MG_CEMA_SCAN, &k, &c, dxa, ga);
        bwd_call(plain, MG_CEMA_FFT, &k, &c, dxb, gb);
        CHECK(memcmp(dxa, dxb, sizeof(float) * k.nx) == 0 &&
                  memcmp(ga, gb, sizeof(float) * k.ng) == 0,
              "MEGALODON_CEMA=fft did not override the backward's scan");
        free(dxa); free(dxb); free(ga); free(gb);
        bwd_case_free(&k);
    }
    over->free(over);
    setenv("MEGALODON_CEMA", "scan-chunked", 1);
    over = backend(2);
    unsetenv("MEGALODON_CEMA");
    CHECK(!strcmp(cpu_cema_choice(over, MG_CEMA_FFT, 5000, &c), "scan-chunked"),
          "MEGALODON_CEMA=scan-chunked: choice");
    CHECK(!strcmp(cpu_cema_backward_choice(over, MG_CEMA_FFT, 4, 5000, &c), "scan") &&
              !strcmp(cpu_cema_backward_choice(over, MG_CEMA_AUTO, 4, 5000, &c), "scan"),
          "MEGALODON_CEMA=scan-chunked: the backward runs the scan");
    over->free(over);
    plain->free(plain);
    cema_free_coeffs(&c);
}

int main(void)
{
    static const char *const vars[] = {"MEGALODON_CEMA", "MEGALODON_CEMA_PLANNER",
                                       "MEGALODON_CEMA_WISDOM", "MEGALODON_CEMA_CACHE_MB"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) unsetenv(vars[i]);
    setenv("MEGALODON_CEMA_WISDOM", "none", 1); /* nothing below writes ~/.cache */

    const int Ls[] = {1, 2, 7, 100, 1030, 4099, 20000};
    test_algorithms(37, 5, 1, 0, Ls, (int)(sizeof Ls / sizeof Ls[0]));
    const int Ls2[] = {3, 600, 2048, 5000};
    test_algorithms(64, 16, 0, 1, Ls2, 4); /* x and y 4 bytes past an aligned block */
    test_algorithms(16, 3, 1, 0, Ls2, 4);
    const int Ls3[] = {1100, 1600};
    test_algorithms(272, 4, 1, 3, Ls3, 2); /* the plain scan in tiles of rows */
    const int Ls4[] = {4097, 9000, 20000};
    test_algorithms(24, 4, 0, 0, Ls4, 3); /* short kernels: the FFT in overlap-save blocks */
    test_cache();
    test_estimate();

    char dir[] = "/tmp/mg-test-planner-XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    test_measure(dir);
    test_estimate_backward();
    test_measure_backward(dir);
    rmdir(dir);
    test_env();
    unsetenv("MEGALODON_CEMA_WISDOM");
    return test_finish("test-planner");
}

/* test-stress-threads - one loaded model used by many states at once, from many threads
 * (megalodon.h: "a loaded mg_model is read-only and may be shared by any number of mg_state
 * objects; one mg_state must be used by one thread at a time").
 *
 * Two models are loaded once each: the golden `base` model (D=16, C=8, one head) and a
 * bigger random one written with tiny_model_write (D=64, 4 heads, C=32, SwiGLU), whose
 * OpenMP paths really split work when the model has more than one thread. A set of
 * "scripts" is run first on the main thread alone (the reference), then by T pthreads at
 * once (default 8), each with its own mg_state, each script many times; every thread's
 * output must equal the single-threaded one bit for bit. A script is a fixed sequence of
 * API calls on one state and the concatenation of every logit it produced:
 *
 *   plain     feed a token stream in calls of a pattern (one call, whole chunks, decode,
 *             irregular sizes) with a CEMA algorithm (scan, fft, auto) and an n_batch;
 *   reset     feed half the stream, mg_state_reset, feed the whole stream;
 *   saveload  feed a third, mg_state_save to the thread's own file, feed the rest,
 *             mg_state_load, feed the rest again;
 *   fresh     feed half, save, free the state, a new state, load, feed the rest;
 *   switch    feed half with one CEMA algorithm, mg_state_set_cema, feed the rest;
 *   window    feed the stream, mg_state_window_norm_stats over its last 2 chunks (a
 *             temporary state inside the library), feed another stream;
 *   last      MG_LOGITS_LAST on every call (only the last row of each call);
 *   own-model load a private copy of the model, run on it, free it: backends created and
 *             destroyed (FFTW plans too) while the other threads compute; its logits must
 *             equal those of the shared model.
 * Threads 2k and 2k+1 run the same script at the same time (the same FFT plans and kernel
 * cache entries), the other pairs other scripts (other FFT sizes: plans made while others
 * execute, two models); each script twice in a row, on a new state and then on the same
 * state after mg_state_reset, so that a reset state is checked to behave as a new one.
 *
 * Phase 1 runs with the models at 1 compute thread (what the ThreadSanitizer build runs:
 * libgomp and OpenBLAS are not instrumented, tools/check-tsan.sh). Phase 2 (skipped under
 * TSan) sets 2 compute threads, so every state thread also runs OpenMP teams and threaded
 * OpenBLAS calls concurrently with the others; its references are again the single-threaded
 * (one application thread) runs at that setting, and they must equal phase 1's too.
 *
 * Environment: MG_STRESS_THREADS (default 8), MG_STRESS_ITERS (repetitions per thread in
 * phase 1, default 24: all 12 scripts twice; phase 2 half of them, at least 2),
 * MG_STRESS_PHASES ("1", "2" or "12"; default "12", under TSan "1"), MG_GOLDEN_DIR, TMPDIR
 * (the model and state files; default /tmp). */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "golden.h"
#include "megalodon.h"
#include "test.h"
#include "tiny_model.h"

#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#endif
#ifndef UNDER_TSAN
#define UNDER_TSAN 0
#endif

/* A new empty file $TMPDIR/mg-stress-<stem>-XXXXXX (default /tmp); 0 on success. */
static int make_temp(char *buf, size_t size, const char *stem)
{
    const char *dir = getenv("TMPDIR");
    if (!dir || !*dir) dir = "/tmp";
    if ((size_t)snprintf(buf, size, "%s/mg-stress-%s-XXXXXX", dir, stem) >= size) return -1;
    int fd = mkstemp(buf);
    if (fd < 0) return -1;
    close(fd);
    return 0;
}

/* ---------------------------------------------------------------- scripts */

typedef enum {
    S_PLAIN, S_RESET, S_SAVELOAD, S_FRESH, S_SWITCH, S_WINDOW, S_LAST, S_OWNMODEL
} script_kind;
static const char *const kind_names[] = {"plain",  "reset", "saveload", "fresh",
                                         "switch", "window", "last",    "own-model"};

typedef struct {
    int model;          /* index into models[] */
    script_kind kind;
    mg_cema_algo algo;  /* S_SWITCH: the first half */
    mg_cema_algo algo2; /* S_SWITCH: the second half */
    int n_batch;        /* 0: default (2 chunks); a number or -k: k chunks */
    const int *pattern; /* call sizes, cycled, 0-terminated; NULL: the whole stream at once;
                           a negative size -k means k chunks */
    int stream, stream2;
} script;

typedef struct {
    const char *name;
    const char *path; /* the model file (kept to the end) */
    mg_model *m;
    int C, V;
    int32_t *streams[2];
    int L[2];
} model_entry;

static model_entry models[2];
static int n_models;
static int compute_threads_now = 1; /* of the phase: for models loaded by S_OWNMODEL */

static const int pat_chunks[] = {-1, 0};
static const int pat_decode[] = {1, 0};
static const int pat_mixed[] = {3, 5, 2, 7, 1, 0};
static const int pat_mixed2[] = {11, -1, 1, 29, 4, 0};

/* The scripts of the test (script_of: which thread runs which). */
static const script scripts[] = {
    {1, S_PLAIN, MG_CEMA_FFT, 0, 0, NULL, 0, 0},
    {1, S_PLAIN, MG_CEMA_SCAN, 0, 3, pat_mixed, 1, 0},
    {1, S_SAVELOAD, MG_CEMA_AUTO, 0, -4, pat_mixed2, 0, 0},
    {1, S_RESET, MG_CEMA_FFT, 0, 0, pat_chunks, 1, 0},
    {0, S_PLAIN, MG_CEMA_FFT, 0, 0, pat_mixed, 0, 0},
    {1, S_SWITCH, MG_CEMA_SCAN, MG_CEMA_FFT, 5, pat_mixed2, 0, 0},
    {1, S_FRESH, MG_CEMA_FFT, 0, -2, pat_decode, 1, 0},
    {1, S_WINDOW, MG_CEMA_AUTO, 0, 0, pat_mixed, 0, 1},
    {0, S_SAVELOAD, MG_CEMA_SCAN, 0, 1, pat_mixed2, 0, 0},
    {1, S_LAST, MG_CEMA_SCAN, 0, -1, pat_mixed, 1, 0},
    {0, S_RESET, MG_CEMA_AUTO, 0, 0, pat_decode, 0, 0},
    {1, S_OWNMODEL, MG_CEMA_FFT, 0, 0, pat_mixed2, 1, 0},
};
#define N_SCRIPTS ((int)(sizeof scripts / sizeof scripts[0]))

typedef struct {
    float *buf;
    size_t n, cap; /* floats */
    char err[512];
} output;

static int fail(output *o, const char *fmt, const char *what, int rc)
{
    snprintf(o->err, sizeof o->err, fmt, what, rc, mg_last_error());
    return rc ? rc : -100;
}

/* Feed tokens[from, to) in calls of the pattern; logits appended to o (all rows, or the last
 * row of each call with MG_LOGITS_LAST). */
static int feed(mg_state *st, const model_entry *me, const int32_t *tokens, int from, int to,
                const int *pattern, mg_logits_mode mode, output *o)
{
    int k = 0;
    while (from < to) {
        int n = to - from;
        if (pattern) {
            if (pattern[k] == 0) k = 0;
            n = pattern[k++];
            if (n < 0) n = -n * me->C;
            if (n > to - from) n = to - from;
        }
        size_t need = (size_t)(mode == MG_LOGITS_ALL ? n : 1) * me->V;
        if (o->n + need > o->cap) {
            snprintf(o->err, sizeof o->err, "output buffer too small");
            return -100;
        }
        int rc = mg_eval(st, tokens + from, (size_t)n, o->buf + o->n, mode);
        if (rc) {
            snprintf(o->err, sizeof o->err, "mg_eval of %d tokens at %d: %d %s", n, from, rc,
                     mg_last_error());
            return rc;
        }
        o->n += need;
        from += n;
    }
    return MG_OK;
}

static mg_state_params params_of(const script *s, const model_entry *me)
{
    mg_state_params sp = mg_state_default_params();
    sp.cema = s->algo;
    sp.n_batch = s->n_batch < 0 ? -s->n_batch * me->C : s->n_batch;
    return sp;
}

/* The call boundary of `pattern` nearest above `at` (so that a split does not change the
 * sizes of the calls, and the result can be compared with an unsplit run). */
static int boundary(const model_entry *me, const int *pattern, int L, int at)
{
    if (!pattern) return at;
    int pos = 0, k = 0;
    while (pos < at && pos < L) {
        if (pattern[k] == 0) k = 0;
        int n = pattern[k++];
        pos += n < 0 ? -n * me->C : n;
    }
    return pos < L ? pos : L;
}

/* Run script s on *stp (a fresh or reset state; it may be replaced by S_FRESH) and append
 * everything to o. tmp: this thread's state file. */
static int run_script(const script *s, mg_state **stp, const char *tmp, output *o)
{
    const model_entry *me = &models[s->model];
    const int32_t *tok = me->streams[s->stream];
    const int L = me->L[s->stream];
    mg_state *st = *stp;
    int rc;
    o->n = 0;
    o->err[0] = 0;
    /* a reused state may have been switched to another algorithm by the last run */
    if ((rc = mg_state_set_cema(st, s->algo))) return fail(o, "%s: %d %s", "set_cema", rc);
    if (mg_state_n_past(st) != 0) return fail(o, "%s: %d %s", "n_past not 0 at start", 0);

    switch (s->kind) {
    case S_PLAIN:
        return feed(st, me, tok, 0, L, s->pattern, MG_LOGITS_ALL, o);
    case S_LAST:
        return feed(st, me, tok, 0, L, s->pattern, MG_LOGITS_LAST, o);
    case S_RESET: {
        int h = boundary(me, s->pattern, L, L / 2);
        if ((rc = feed(st, me, tok, 0, h, s->pattern, MG_LOGITS_ALL, o))) return rc;
        mg_state_reset(st);
        if (mg_state_n_past(st) != 0) return fail(o, "%s: %d %s", "n_past after reset", 0);
        return feed(st, me, tok, 0, L, s->pattern, MG_LOGITS_ALL, o);
    }
    case S_SAVELOAD: {
        int h = boundary(me, s->pattern, L, L / 3);
        if ((rc = feed(st, me, tok, 0, h, s->pattern, MG_LOGITS_ALL, o))) return rc;
        if ((rc = mg_state_save(st, tmp))) return fail(o, "%s: %d %s", "save", rc);
        if ((rc = feed(st, me, tok, h, L, s->pattern, MG_LOGITS_ALL, o))) return rc;
        if ((rc = mg_state_load(st, tmp))) return fail(o, "%s: %d %s", "load", rc);
        if (mg_state_n_past(st) != (uint64_t)h)
            return fail(o, "%s: %d %s", "n_past after load", 0);
        return feed(st, me, tok, h, L, s->pattern, MG_LOGITS_ALL, o);
    }
    case S_FRESH: {
        int h = boundary(me, s->pattern, L, L / 2);
        if ((rc = feed(st, me, tok, 0, h, s->pattern, MG_LOGITS_ALL, o))) return rc;
        if ((rc = mg_state_save(st, tmp))) return fail(o, "%s: %d %s", "save", rc);
        mg_state_free(st);
        *stp = NULL;
        mg_state_params sp = params_of(s, me);
        if ((rc = mg_state_new(me->m, &sp, stp))) return fail(o, "%s: %d %s", "state_new", rc);
        st = *stp;
        if ((rc = mg_state_load(st, tmp))) return fail(o, "%s: %d %s", "load", rc);
        return feed(st, me, tok, h, L, s->pattern, MG_LOGITS_ALL, o);
    }
    case S_SWITCH: {
        int h = boundary(me, s->pattern, L, L / 2);
        if ((rc = feed(st, me, tok, 0, h, s->pattern, MG_LOGITS_ALL, o))) return rc;
        if ((rc = mg_state_set_cema(st, s->algo2))) return fail(o, "%s: %d %s", "set_cema", rc);
        return feed(st, me, tok, h, L, s->pattern, MG_LOGITS_ALL, o);
    }
    case S_OWNMODEL: {
        /* a model of its own, loaded and freed while the other threads compute (the
         * backends share FFTW's planner lock); its results equal the shared model's */
        mg_model_params mp = mg_model_default_params();
        mp.n_threads = compute_threads_now;
        mg_model *own = NULL;
        if ((rc = mg_model_load(me->path, &mp, &own))) return fail(o, "%s: %d %s", "load", rc);
        model_entry me2 = *me;
        me2.m = own;
        mg_state_params sp = params_of(s, me);
        mg_state *st2 = NULL;
        if ((rc = mg_state_new(own, &sp, &st2))) {
            mg_model_free(own);
            return fail(o, "%s: %d %s", "state_new", rc);
        }
        rc = feed(st2, &me2, tok, 0, L, s->pattern, MG_LOGITS_ALL, o);
        mg_state_free(st2);
        mg_model_free(own);
        return rc;
    }
    case S_WINDOW: {
        if ((rc = feed(st, me, tok, 0, L, s->pattern, MG_LOGITS_ALL, o))) return rc;
        int w = 2 * me->C < L ? 2 * me->C : L;
        if ((rc = mg_state_window_norm_stats(st, tok + (L - w), (size_t)w)))
            return fail(o, "%s: %d %s", "window_norm_stats", rc);
        const int32_t *t2 = me->streams[s->stream2];
        int L2 = me->L[s->stream2] < 40 ? me->L[s->stream2] : 40;
        return feed(st, me, t2, 0, L2, s->pattern, MG_LOGITS_ALL, o);
    }
    }
    return fail(o, "%s: %d %s", "unknown script", 0);
}

/* The most floats a script produces. */
static size_t script_cap(const script *s)
{
    const model_entry *me = &models[s->model];
    return (size_t)3 * (me->L[0] > me->L[1] ? me->L[0] : me->L[1]) * me->V + 64;
}

static void script_name(const script *s, char *buf, size_t size)
{
    static const char *const an[] = {"auto", "fft", "scan"};
    snprintf(buf, size, "%s/%s/%s%s%s/n_batch=%d/%s/stream%d", models[s->model].name,
             kind_names[s->kind], an[s->algo], s->kind == S_SWITCH ? "->" : "",
             s->kind == S_SWITCH ? an[s->algo2] : "", s->n_batch,
             !s->pattern ? "one-call" : s->pattern == pat_chunks ? "chunks"
             : s->pattern == pat_decode ? "decode" : s->pattern == pat_mixed ? "mixed"
                                        : "mixed2",
             s->stream);
}

/* ---------------------------------------------------------------- threads */

typedef struct {
    int id, iters, n_threads;
    const output *refs; /* one per script */
    char tmp[1024];
    pthread_barrier_t *start;
    /* results */
    int runs, mismatches, errors;
    char msg[640];
} job;

/* The script of repetition `it` of thread t: threads 2k and 2k+1 run the same script at the
 * same time; each script twice in a row (a new state, then the same state reset); then all
 * pairs move on by the same stride (at least the number of pairs, prime to the number of
 * scripts), so that a round's pairs run different scripts and each pair runs all of them. */
static int gcd(int a, int b) { return b ? gcd(b, a % b) : a; }

static int script_of(int t, int it, int n_threads)
{
    int stride = (n_threads + 1) / 2; /* pairs: the pairs of a round run different scripts */
    while (gcd(stride, N_SCRIPTS) != 1) stride++; /* ... and every pair gets to all of them */
    return (int)((t / 2 + (int64_t)(it / 2) * stride) % N_SCRIPTS);
}

static void *worker(void *arg)
{
    job *j = arg;
    size_t cap = 0;
    for (int i = 0; i < N_SCRIPTS; i++)
        if (script_cap(&scripts[i]) > cap) cap = script_cap(&scripts[i]);
    output o = {NULL, 0, cap, ""};
    o.buf = malloc(sizeof(float) * o.cap);
    mg_state *st = NULL;
    const script *prev = NULL;
    pthread_barrier_wait(j->start);
    if (!o.buf) {
        j->errors++;
        snprintf(j->msg, sizeof j->msg, "out of memory");
        return NULL;
    }
    for (int it = 0; it < j->iters; it++) {
        const int si = script_of(j->id, it, j->n_threads);
        const script *s = &scripts[si];
        const output *ref = &j->refs[si];
        const model_entry *me = &models[s->model];
        /* the first run of a script: a new state; the second: the previous state, reset */
        const int reuse = st && prev && s == prev;
        if (!reuse) {
            mg_state_free(st);
            st = NULL;
            mg_state_params sp = params_of(s, me);
            int rc = mg_state_new(me->m, &sp, &st);
            if (rc) {
                j->errors++;
                snprintf(j->msg, sizeof j->msg, "mg_state_new: %s", mg_last_error());
                break;
            }
        } else {
            mg_state_reset(st);
        }
        prev = s;
        char name[160];
        script_name(s, name, sizeof name);
        int rc = run_script(s, &st, j->tmp, &o);
        j->runs++;
        if (rc) {
            j->errors++;
            snprintf(j->msg, sizeof j->msg, "%s, repetition %d: %.400s", name, it, o.err);
            if (!st) break;
            continue;
        }
        if (o.n != ref->n || memcmp(o.buf, ref->buf, sizeof(float) * o.n) != 0) {
            size_t first = 0, bad = 0, n = o.n < ref->n ? o.n : ref->n;
            for (size_t i = 0; i < n; i++)
                if (memcmp(&o.buf[i], &ref->buf[i], sizeof(float)) != 0 && bad++ == 0)
                    first = i;
            if (j->mismatches++ == 0)
                snprintf(j->msg, sizeof j->msg,
                         "%s, repetition %d (%s state): %zu floats (reference %zu), %zu differ, "
                         "first at float %zu (row %zu): %.9g vs %.9g",
                         name, it, reuse ? "reset" : "new", o.n, ref->n, bad, first,
                         first / (size_t)me->V, bad ? (double)o.buf[first] : 0.0,
                         bad ? (double)ref->buf[first] : 0.0);
        }
    }
    mg_state_free(st);
    free(o.buf);
    return NULL;
}

static int env_int(const char *name, int dflt, int lo, int hi)
{
    const char *v = getenv(name);
    if (!v || !*v) return dflt;
    char *end;
    long x = strtol(v, &end, 10);
    if (*end || x < lo || x > hi) {
        fprintf(stderr, "%s='%s' must be an integer in [%d, %d]\n", name, v, lo, hi);
        exit(2);
    }
    return (int)x;
}

/* One phase: references on this thread, then n_threads threads. refs_prev: the previous
 * phase's references (must be equal: results do not depend on the compute thread count),
 * or NULL. The references are returned in refs. */
static void phase(int compute_threads, int n_threads, int iters, const output *refs_prev,
                  output *refs)
{
    for (int i = 0; i < n_models; i++)
        CHECK(mg_model_set_n_threads(models[i].m, compute_threads) == MG_OK, "set_n_threads");
    compute_threads_now = compute_threads;
    const int failures0 = test_failures;
    char tmp_ref[1024];
    if (make_temp(tmp_ref, sizeof tmp_ref, "ref")) {
        CHECK(0, "cannot create a temporary file %s: %s", tmp_ref, strerror(errno));
        return;
    }
    for (int i = 0; i < N_SCRIPTS; i++) {
        const script *s = &scripts[i];
        char name[160];
        script_name(s, name, sizeof name);
        refs[i].cap = script_cap(s);
        refs[i].buf = malloc(sizeof(float) * refs[i].cap);
        mg_state_params sp = params_of(s, &models[s->model]);
        mg_state *st = NULL;
        int rc = refs[i].buf ? mg_state_new(models[s->model].m, &sp, &st) : MG_ERR_NOMEM;
        CHECK(rc == MG_OK, "%s: state: %s", name, mg_last_error());
        if (rc == MG_OK) {
            rc = run_script(s, &st, tmp_ref, &refs[i]);
            CHECK(rc == MG_OK, "%s: reference run: %s", name, refs[i].err);
        }
        if (rc) refs[i].n = 0;
        mg_state_free(st);
        int finite = 1;
        for (size_t k = 0; k < refs[i].n; k++) finite &= isfinite(refs[i].buf[k]) != 0;
        CHECK(finite, "%s: non-finite logits in the reference", name);
        if (refs_prev && refs_prev[i].n)
            CHECK(refs[i].n == refs_prev[i].n &&
                      memcmp(refs[i].buf, refs_prev[i].buf, sizeof(float) * refs[i].n) == 0,
                  "%s: the single-threaded run with %d compute threads differs from phase 1",
                  name, compute_threads);
    }
    unlink(tmp_ref);

    job *jobs = calloc((size_t)n_threads, sizeof *jobs);
    pthread_t *tid = calloc((size_t)n_threads, sizeof *tid);
    pthread_barrier_t start;
    CHECK(jobs && tid, "out of memory");
    if (!jobs || !tid) {
        free(jobs);
        free(tid);
        return;
    }
    pthread_barrier_init(&start, NULL, (unsigned)n_threads);
    int started = 0;
    for (int t = 0; t < n_threads; t++) {
        job *j = &jobs[t];
        j->id = t;
        j->iters = iters;
        j->n_threads = n_threads;
        j->refs = refs;
        j->start = &start;
        char stem[32];
        snprintf(stem, sizeof stem, "%d", t);
        CHECK(make_temp(j->tmp, sizeof j->tmp, stem) == 0, "cannot create a temporary file %s: %s",
              j->tmp, strerror(errno));
    }
    for (int t = 0; t < n_threads; t++) {
        int rc = pthread_create(&tid[t], NULL, worker, &jobs[t]);
        CHECK(rc == 0, "pthread_create: %s", strerror(rc));
        if (rc) {
            /* the barrier would wait forever: give up (the CHECK fails the test) */
            fprintf(stderr, "cannot start thread %d\n", t);
            exit(1);
        }
        started++;
    }
    for (int t = 0; t < started; t++) pthread_join(tid[t], NULL);
    pthread_barrier_destroy(&start);

    int total_runs = 0, covered = 0;
    for (int i = 0; i < N_SCRIPTS; i++) {
        int used = 0;
        for (int t = 0; t < n_threads; t++)
            for (int it = 0; it < iters; it++) used |= script_of(t, it, n_threads) == i;
        covered += used;
    }
    for (int t = 0; t < n_threads; t++) {
        job *j = &jobs[t];
        CHECK(j->errors == 0 && j->mismatches == 0 && j->runs == iters,
              "thread %d: %d runs, %d errors, %d differ from the single-threaded run: %s", t,
              j->runs, j->errors, j->mismatches, j->msg);
        total_runs += j->runs;
        unlink(j->tmp);
    }
    printf("  phase: %d compute thread(s) per state, %d application threads, %d script runs "
           "(%d of the %d scripts): %s\n",
           compute_threads, n_threads, total_runs, covered, N_SCRIPTS,
           test_failures > failures0 ? "FAILURES"
                                     : "all equal to the single-threaded runs bit for bit");
    free(jobs);
    free(tid);
}

/* ---------------------------------------------------------------- main */

static void make_stream(int32_t *t, int L, int V, uint32_t seed)
{
    for (int i = 0; i < L; i++) {
        seed = seed * 1664525u + 1013904223u;
        t[i] = (int32_t)((seed >> 8) % (uint32_t)V);
    }
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0); /* whole lines in the log even if TSan ends the run */
    const int n_threads = env_int("MG_STRESS_THREADS", 8, 1, 256);
    /* phase 2 costs more (OpenMP teams spin-wait on 2 cores): half the repetitions */
    const int iters = env_int("MG_STRESS_ITERS", 24, 1, 1000000);
    const int iters2 = iters / 2 > 2 ? iters / 2 : 2;
    /* under TSan, phase 2 would report libgomp's (uninstrumented) synchronization as races */
    const char *ph = getenv("MG_STRESS_PHASES");
    if (!ph || !*ph) ph = UNDER_TSAN ? "1" : "12";
    const int phase2 = strchr(ph, '2') != NULL;

    /* the golden base model, with its own tokens (29 = 3C+5) and a longer random stream */
    golden_case gc;
    if (golden_open("base", &gc) != MG_OK) {
        CHECK(0, "cannot open golden case base: %s", mg_last_error());
        return test_finish("test-stress-threads");
    }
    mg_model_params mp = mg_model_default_params();
    mp.n_threads = 1;
    model_entry *b = &models[n_models];
    b->name = "base";
    static char base_path[sizeof gc.model_path];
    memcpy(base_path, gc.model_path, sizeof base_path);
    b->path = base_path;
    int rc = mg_model_load(gc.model_path, &mp, &b->m);
    CHECK(rc == MG_OK, "load %s: %s", gc.model_path, mg_last_error());
    if (rc) return test_finish("test-stress-threads");
    n_models++;
    b->C = mg_model_hparams(b->m)->chunk_size;
    b->V = mg_model_n_vocab(b->m);
    b->L[0] = gc.L;
    b->streams[0] = malloc(sizeof(int32_t) * gc.L);
    memcpy(b->streams[0], gc.tokens, sizeof(int32_t) * gc.L);
    b->L[1] = 7 * b->C + 3;
    b->streams[1] = malloc(sizeof(int32_t) * b->L[1]);
    make_stream(b->streams[1], b->L[1], b->V, 7u);
    golden_close(&gc);

    /* the random model */
    static char path[1024];
    const int fd = make_temp(path, sizeof path, "model") == 0 ? 0 : -1;
    CHECK(fd == 0, "cannot create a temporary file %s: %s", path, strerror(errno));
    tiny_opts o = tiny_heads4_opts();
    o.chunk_size = 32;
    o.seed = 4242;
    rc = fd == 0 ? tiny_model_write(path, &o) : MG_ERR_IO;
    CHECK(rc == MG_OK, "write %s: %s", path, mg_last_error());
    model_entry *r = &models[n_models];
    r->name = "random";
    if (rc == MG_OK) {
        rc = mg_model_load(path, &mp, &r->m);
        CHECK(rc == MG_OK, "load %s: %s", path, mg_last_error());
    }
    if (rc) {
        unlink(path);
        return test_finish("test-stress-threads");
    }
    n_models++;
    r->path = path;
    r->C = o.chunk_size;
    r->V = o.n_vocab;
    r->L[0] = 3 * r->C + 5;
    r->L[1] = 5 * r->C + 17;
    for (int i = 0; i < 2; i++) {
        r->streams[i] = malloc(sizeof(int32_t) * r->L[i]);
        make_stream(r->streams[i], r->L[i], r->V, 1000u + (uint32_t)i);
    }

    printf("test-stress-threads: %d threads x %d repetitions (phase 2: %d), %d scripts, "
           "backend %s%s\n",
           n_threads, iters, iters2, N_SCRIPTS, mg_model_backend_name(r->m),
           UNDER_TSAN ? " (ThreadSanitizer build)" : "");
    output refs1[N_SCRIPTS], refs2[N_SCRIPTS];
    memset(refs1, 0, sizeof refs1);
    memset(refs2, 0, sizeof refs2);
    if (strchr(ph, '1')) phase(1, n_threads, iters, NULL, refs1);
    if (phase2) phase(2, n_threads, iters2, strchr(ph, '1') ? refs1 : NULL, refs2);

    for (int i = 0; i < N_SCRIPTS; i++) {
        free(refs1[i].buf);
        free(refs2[i].buf);
    }
    unlink(path);
    for (int i = 0; i < n_models; i++) {
        mg_model_free(models[i].m);
        free(models[i].streams[0]);
        free(models[i].streams[1]);
    }
    return test_finish("test-stress-threads");
}

/* megalodon-bench - prefill (pp) and decode (tg) speed, in the manner of llama-bench, with
 * the machine's own yardsticks measured in the same run: OpenBLAS sgemm on the model's
 * matrix shapes and a STREAM-style triad for memory bandwidth. Speeds are reported as
 * tokens/s and as fractions of those yardsticks, so that runs on noisy shared machines can
 * still be compared. */
#include "config.h"

#include <math.h>
#include <megalodon.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "bench-blas.h"

#define MAX_LIST 16

typedef struct {
    int n;
    char *v[MAX_LIST];
} strlist;

typedef struct {
    const char *model;
    strlist prompts, gens, depths, threads, isas, cemas, backends;
    int device;
    int reps;
    int json;
} options;

static void usage(FILE *f, const char *prog)
{
    fprintf(f,
            "usage: %s -m MODEL.gguf [options]\n"
            "\n"
            "Measures prefill (pp) and decode (tg) speed. Lists are comma-separated; every\n"
            "combination is run.\n"
            "\n"
            "  -m, --model FILE     model file (required)\n"
            "  -p, --n-prompt LIST  prompt lengths for pp tests (default 512; 0 = none)\n"
            "  -n, --n-gen LIST     tokens generated for tg tests (default 128; 0 = none)\n"
            "  -d, --n-depth LIST   tokens already in the state before the measured work\n"
            "                       (default 0)\n"
            "  -t, --threads LIST   thread counts (default: all CPUs)\n"
            "  -r, --repetitions N  repetitions of each test (default 3)\n"
            "      --isa LIST       kernel tables: auto, scalar, avx2, avx512, neon (default auto)\n"
            "      --cema LIST      CEMA algorithm: auto, fft, scan (default auto)\n"
            "      --backend LIST   compute backends: cpu, opencl (default cpu)\n"
            "      --device N       OpenCL device (default: $MEGALODON_OPENCL_DEVICE, else 0)\n"
            "      --list-devices   list the OpenCL devices and exit\n"
            "  -o, --output FMT     md (default) or json\n"
            "  -h, --help           this text\n"
            "      --version        the library version\n",
            prog);
}

static int split(const char *arg, strlist *l)
{
    l->n = 0;
    char *s = strdup(arg), *save = NULL;
    for (char *tok = strtok_r(s, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (l->n == MAX_LIST) return -1;
        l->v[l->n++] = strdup(tok);
    }
    free(s);
    return l->n > 0 ? 0 : -1;
}

static int parse_int(const char *s, long lo, long hi, long *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static uint64_t peak_rss(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (uint64_t)ru.ru_maxrss * 1024;
}

/* ---------------------------------------------------------------- yardsticks */

/* STREAM triad a = b + s c over arrays much larger than the caches; best of 5, bytes/s. */
static double triad_bandwidth(void)
{
    const size_t n = (size_t)1 << 25; /* 3 x 128 MiB */
    float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b), *c = malloc(n * sizeof *c);
    if (!a || !b || !c) {
        free(a); free(b); free(c);
        return 0.0;
    }
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) { a[i] = 0.0f; b[i] = 1.0f; c[i] = 2.0f; }
    double best = 1e30;
    for (int r = 0; r < 5; r++) {
        double t0 = now();
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) a[i] = b[i] + 3.0f * c[i];
        double t = now() - t0;
        if (t < best) best = t;
    }
    volatile float sink = a[n / 2];
    (void)sink;
    free(a); free(b); free(c);
    return 3.0 * n * sizeof(float) / best;
}

/* OpenBLAS sgemm y[M,N] = x[M,K] W[N,K]^T for the model's projection shapes with M = the
 * prompt length (at most 4096: the library multiplies at most a chunk of rows at a time,
 * and the rate is flat beyond), run by OpenBLAS's own threading with the bench's thread
 * count; returns the flop rate (best of 3 per shape, total flops / total time). The CPU
 * backend keeps OpenBLAS single-threaded (lib/backend-cpu.c), so the count is set for the
 * measurement and put back to 1 after it. */
static double sgemm_rate_measure(const mg_hparams *hp, int M, int threads)
{
    if (M > 4096) M = 4096;
    bench_blas_set_threads(threads);
    const int shapes[][2] = {{hp->z_dim, hp->n_embd}, {hp->value_dim, hp->n_embd},
                             {hp->n_embd, hp->n_embd}, {hp->n_embd, hp->value_dim},
                             {hp->n_ff, hp->n_embd},   {hp->n_embd, hp->n_ff}};
    double flops = 0, secs = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int N = shapes[s][0], K = shapes[s][1];
        float *x = calloc((size_t)M * K, sizeof(float)), *w = calloc((size_t)N * K, sizeof(float));
        float *y = calloc((size_t)M * N, sizeof(float));
        if (!x || !w || !y) {
            free(x); free(w); free(y);
            continue;
        }
        for (size_t i = 0; i < (size_t)M * K; i++) x[i] = (float)(i % 7) * 0.1f;
        for (size_t i = 0; i < (size_t)N * K; i++) w[i] = (float)(i % 5) * 0.1f;
        double best = 1e30;
        for (int r = 0; r < 3; r++) {
            double t0 = now();
            bench_sgemm(M, N, K, x, w, y);
            double t = now() - t0;
            if (t < best) best = t;
        }
        flops += 2.0 * M * N * K;
        secs += best;
        free(x); free(w); free(y);
    }
    bench_blas_set_threads(1);
    return secs > 0 ? flops / secs : 0.0;
}

/* Which BLAS kernel runs, and a warning when it is older than the CPU (megalodon.h) */
static void blas_note(FILE *f)
{
    fprintf(f, "BLAS: %s\n", mg_blas_info());
    if (mg_blas_warning()) fprintf(f, "warning: %s\n", mg_blas_warning());
    fprintf(f, "\n");
}

/* sgemm_rate_measure, remembered per (M, threads) within the run */
static double sgemm_rate(const mg_hparams *hp, int M, int threads)
{
    static struct seen_rate { int M, threads; double rate; } seen[64];
    static int n_seen;
    if (M > 4096) M = 4096;
    for (int i = 0; i < n_seen; i++)
        if (seen[i].M == M && seen[i].threads == threads) return seen[i].rate;
    double r = sgemm_rate_measure(hp, M, threads);
    if (n_seen < 64) seen[n_seen++] = (struct seen_rate){M, threads, r};
    return r;
}

/* Matrix flops per token of the model (projections, FFN, head; attention averaged over a
 * chunk: each token sees (C+1)/2 keys). */
static double flops_per_token(const mg_hparams *hp)
{
    double D = hp->n_embd, Z = hp->z_dim, E = hp->value_dim, F = hp->n_ff;
    double blk = 2 * (D * Z + 2 * D * E + D * D + E * D + (hp->swiglu ? 3 : 2) * D * F) +
                 2 * (Z + E) * (hp->chunk_size + 1) / 2.0;
    return blk * hp->n_layer + 2 * D * hp->n_output;
}

/* ---------------------------------------------------------------- tests */

typedef struct {
    const char *test;
    int n_prompt, n_gen, n_depth, threads;
    char isa[32], cema[8], backend[32];
    double avg_ts, stddev_ts;
    uint64_t rss;
    double frac; /* pp: fraction of sgemm rate; tg: fraction of memory bandwidth */
} record;

static mg_cema_algo cema_of(const char *s)
{
    return strcmp(s, "fft") == 0 ? MG_CEMA_FFT : strcmp(s, "scan") == 0 ? MG_CEMA_SCAN : MG_CEMA_AUTO;
}

static void random_tokens(int32_t *t, int n, int32_t V, uint32_t *seed)
{
    for (int i = 0; i < n; i++) {
        *seed = *seed * 1664525u + 1013904223u;
        t[i] = (int32_t)((*seed >> 8) % (uint32_t)V);
    }
}

/* Run one test `reps` times; returns 0 and fills avg/stddev tokens per second. */
static int run_test(mg_model *m, const char *cema, int n_prompt, int n_gen, int depth, int reps,
                    double *avg, double *sd)
{
    const int32_t V = mg_model_n_vocab(m);
    int n = n_prompt > n_gen ? n_prompt : n_gen;
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)(n > depth ? n : depth) + 4);
    float *logits = malloc(sizeof(float) * V);
    double sum = 0, sum2 = 0;
    uint32_t seed = 42;
    int rc = 0;
    mg_state_params sp = mg_state_default_params();
    sp.cema = cema_of(cema);
    for (int r = 0; r < reps && !rc; r++) {
        mg_state *st;
        if ((rc = mg_state_new(m, &sp, &st))) break;
        if (depth > 0) {
            random_tokens(tok, depth, V, &seed);
            rc = mg_eval(st, tok, (size_t)depth, NULL, MG_LOGITS_NONE);
        }
        double t0 = now();
        if (!rc && n_prompt > 0) {
            random_tokens(tok, n_prompt, V, &seed);
            rc = mg_eval(st, tok, (size_t)n_prompt, logits, MG_LOGITS_LAST);
        }
        for (int i = 0; !rc && i < n_gen; i++) {
            random_tokens(tok, 1, V, &seed);
            rc = mg_eval(st, tok, 1, logits, MG_LOGITS_LAST);
        }
        double ts = (n_prompt > 0 ? n_prompt : n_gen) / (now() - t0);
        sum += ts;
        sum2 += ts * ts;
        mg_state_free(st);
    }
    free(tok);
    free(logits);
    if (rc) return rc;
    *avg = sum / reps;
    *sd = reps > 1 ? sqrt(fmax(0.0, (sum2 - sum * sum / reps) / (reps - 1))) : 0.0;
    return 0;
}

/* The command line into o; -1 to go on, else the exit status (0 after --help, --version or
 * --list-devices). */
static int parse_args(int argc, char **argv, options *o)
{
    memset(o, 0, sizeof *o);
    o->reps = 3;
    char nproc[16];
    snprintf(nproc, sizeof nproc, "%ld", sysconf(_SC_NPROCESSORS_ONLN));
    split("512", &o->prompts);
    split("128", &o->gens);
    split("0", &o->depths);
    split(nproc, &o->threads);
    split("auto", &o->isas);
    split("auto", &o->cemas);
    split("cpu", &o->backends);
    o->device = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define WANT()                                                                             \
    do {                                                                                   \
        if (!v) {                                                                          \
            fprintf(stderr, "%s: option %s needs a value\n", argv[0], a);                  \
            return 2;                                                                      \
        }                                                                                  \
        i++;                                                                               \
    } while (0)
        int bad = 0;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout, argv[0]); return 0; }
        else if (!strcmp(a, "--version")) { printf("megalodon-bench %s\n", mg_version()); return 0; }
        else if (!strcmp(a, "-m") || !strcmp(a, "--model")) { WANT(); o->model = v; }
        else if (!strcmp(a, "-p") || !strcmp(a, "--n-prompt")) { WANT(); bad = split(v, &o->prompts); }
        else if (!strcmp(a, "-n") || !strcmp(a, "--n-gen")) { WANT(); bad = split(v, &o->gens); }
        else if (!strcmp(a, "-d") || !strcmp(a, "--n-depth")) { WANT(); bad = split(v, &o->depths); }
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) { WANT(); bad = split(v, &o->threads); }
        else if (!strcmp(a, "--isa")) { WANT(); bad = split(v, &o->isas); }
        else if (!strcmp(a, "--cema")) { WANT(); bad = split(v, &o->cemas); }
        else if (!strcmp(a, "--backend")) {
            WANT();
            bad = split(v, &o->backends);
            for (int b = 0; !bad && b < o->backends.n; b++)
                if (strcmp(o->backends.v[b], "cpu") && strcmp(o->backends.v[b], "opencl")) {
                    fprintf(stderr, "%s: unknown backend '%s' (expected cpu or opencl)\n", argv[0],
                            o->backends.v[b]);
                    return 2;
                }
        } else if (!strcmp(a, "--device")) {
            long d;
            WANT();
            if (parse_int(v, -1, 4095, &d)) bad = 1; else o->device = (int)d;
        } else if (!strcmp(a, "--list-devices")) {
            char buf[8192];
            int n = mg_backend_devices(buf, sizeof buf);
            if (n < 0) {
                fprintf(stderr, "%s: %s\n", argv[0], mg_last_error());
                return 1;
            }
            printf("%s", buf);
            return 0;
        } else if (!strcmp(a, "-r") || !strcmp(a, "--repetitions")) {
            long r;
            WANT();
            if (parse_int(v, 1, 1000, &r)) bad = 1; else o->reps = (int)r;
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            WANT();
            if (!strcmp(v, "json")) o->json = 1; else if (!strcmp(v, "md")) o->json = 0; else bad = 1;
        } else {
            fprintf(stderr, "%s: unknown option '%s' (see --help)\n", argv[0], a);
            return 2;
        }
        if (bad) {
            fprintf(stderr, "%s: bad value '%s' for %s (see --help)\n", argv[0], v, a);
            return 2;
        }
#undef WANT
    }
    return -1;
}

/* A model, and the values of the lists: -1 when usable, else the exit status. */
static int check_args(const char *prog, const options *o)
{
    if (!o->model) {
        fprintf(stderr, "%s: no model given (-m MODEL.gguf); see --help\n", prog);
        return 2;
    }
    long tmp;
    const strlist *numeric[] = {&o->prompts, &o->gens, &o->depths, &o->threads};
    const char *nname[] = {"-p", "-n", "-d", "-t"};
    for (int l = 0; l < 4; l++)
        for (int i = 0; i < numeric[l]->n; i++)
            if (parse_int(numeric[l]->v[i], l == 3 ? 1 : 0, 1 << 30, &tmp)) {
                fprintf(stderr, "%s: bad value '%s' in %s\n", prog, numeric[l]->v[i], nname[l]);
                return 2;
            }
    for (int i = 0; i < o->cemas.n; i++)
        if (strcmp(o->cemas.v[i], "auto") && strcmp(o->cemas.v[i], "fft") && strcmp(o->cemas.v[i], "scan")) {
            fprintf(stderr, "%s: --cema must be auto, fft or scan, not '%s'\n", prog, o->cemas.v[i]);
            return 2;
        }
    return -1;
}

/* The measurements of the run, and the yardsticks they are compared with. */
typedef struct {
    record recs[1024];
    int n_rec;
    double bw;       /* triad bytes/s */
    mg_hparams hp;   /* a copy: the model is freed between ISAs */
    uint64_t n_params;
} results;

/* Run the test of r (its fields set but the speeds) on m: 0, or 1 after printing the error. */
static int measure(const char *prog, const options *o, mg_model *m, results *res, record *r)
{
    const int len = r->n_prompt ? r->n_prompt : r->n_gen;
    fprintf(stderr, "running %s%d depth %d, %d threads, isa %s, cema %s ...\n",
            r->test, len, r->n_depth, r->threads, r->isa, r->cema);
    if (run_test(m, r->cema, r->n_prompt, r->n_gen, r->n_depth, o->reps,
                 &r->avg_ts, &r->stddev_ts)) {
        fprintf(stderr, "%s: %s\n", prog, mg_last_error());
        return 1;
    }
    r->rss = peak_rss();
    if (r->test[0] == 'p') {
        double gemm = sgemm_rate(&res->hp, len, r->threads);
        r->frac = gemm > 0 ? r->avg_ts * flops_per_token(&res->hp) / gemm : 0;
    } else {
        r->frac = res->bw > 0 ? r->avg_ts * 4.0 * (double)res->n_params / res->bw : 0;
    }
    return 0;
}

/* Every test of the lists with one backend and kernel table: 0, or 1 after printing the
 * error. */
static int bench_backend(const char *prog, const options *o, int bi, int ii, results *res)
{
    mg_model_params mp = mg_model_default_params();
    mp.isa = o->isas.v[ii];
    mp.backend = o->backends.v[bi];
    mp.device = o->device;
    mg_model *m;
    if (mg_model_load(o->model, &mp, &m) != MG_OK) {
        fprintf(stderr, "%s: %s\n", prog, mg_last_error());
        return 1;
    }
    res->hp = *mg_model_hparams(m);
    res->n_params = mg_model_n_params(m);
    const char *backend = mg_model_backend_name(m);
    const char *isa = strchr(backend, '/') ? strchr(backend, '/') + 1 : backend;
    for (int ti = 0; ti < o->threads.n; ti++) {
        int threads = atoi(o->threads.v[ti]);
        mg_model_set_n_threads(m, threads);
        for (int ci = 0; ci < o->cemas.n; ci++)
            for (int di = 0; di < o->depths.n; di++)
                for (int kind = 0; kind < 2; kind++) {
                    const strlist *l = kind == 0 ? &o->prompts : &o->gens;
                    for (int li = 0; li < l->n; li++) {
                        int len = atoi(l->v[li]);
                        if (len == 0 || res->n_rec == 1024) continue;
                        record *r = &res->recs[res->n_rec];
                        memset(r, 0, sizeof *r);
                        r->test = kind == 0 ? "pp" : "tg";
                        r->n_prompt = kind == 0 ? len : 0;
                        r->n_gen = kind == 1 ? len : 0;
                        r->n_depth = atoi(o->depths.v[di]);
                        r->threads = threads;
                        snprintf(r->isa, sizeof r->isa, "%s", isa);
                        snprintf(r->cema, sizeof r->cema, "%s", o->cemas.v[ci]);
                        snprintf(r->backend, sizeof r->backend, "%s", o->backends.v[bi]);
                        if (measure(prog, o, m, res, r)) return 1;
                        res->n_rec++;
                    }
                }
    }
    mg_model_free(m);
    return 0;
}

/* Where the planner's crossover lies on this machine. */
static void print_planner(const options *o)
{
    mg_model_params mp = mg_model_default_params();
    mp.isa = o->isas.v[0];
    mp.backend = o->backends.v[0];
    mp.device = o->device;
    mg_model *m;
    if (mg_model_load(o->model, &mp, &m) != MG_OK) return;
    mg_model_set_n_threads(m, atoi(o->threads.v[o->threads.n - 1]));
    printf("CEMA planner choice for a call of L tokens (threads %s):", o->threads.v[o->threads.n - 1]);
    const int Ls[] = {1, 64, 256, 1024, 4096, 16384, 65536};
    for (size_t i = 0; i < sizeof Ls / sizeof Ls[0]; i++) {
        const char *c = mg_cema_choice(m, MG_CEMA_AUTO, Ls[i]);
        printf(" L=%d: %s;", Ls[i], c ? c : "?");
    }
    printf("\n\n");
    mg_model_free(m);
}

static void print_json(const results *res)
{
    printf("[\n");
    for (int i = 0; i < res->n_rec; i++) {
        const record *r = &res->recs[i];
        printf("  {\"test\": \"%s\", \"n_prompt\": %d, \"n_gen\": %d, \"n_depth\": %d, "
               "\"threads\": %d, \"isa\": \"%s\", \"cema\": \"%s\", \"backend\": \"%s\", "
               "\"avg_ts\": %.6g, \"stddev_ts\": %.6g, \"peak_rss_bytes\": %llu, "
               "\"%s\": %.6g}%s\n",
               r->test, r->n_prompt, r->n_gen, r->n_depth, r->threads, r->isa, r->cema,
               r->backend, r->avg_ts, r->stddev_ts, (unsigned long long)r->rss,
               r->test[0] == 'p' ? "fraction_of_sgemm" : "fraction_of_bandwidth", r->frac,
               i + 1 < res->n_rec ? "," : "");
    }
    printf("]\n");
}

static void print_table(const options *o, const results *res)
{
    const mg_hparams *hp = &res->hp;
    printf("model: %s, %llu parameters, D=%d, layers=%d, chunk=%d; memory bandwidth "
           "(triad) %.1f GB/s\n",
           o->model, (unsigned long long)res->n_params, hp->n_embd, hp->n_layer, hp->chunk_size,
           res->bw / 1e9);
    blas_note(stdout);
    printf("| backend | isa | threads | cema | test | depth | t/s | vs yardstick | peak RSS |\n");
    printf("|---|---|---:|---|---|---:|---:|---:|---:|\n");
    for (int i = 0; i < res->n_rec; i++) {
        const record *r = &res->recs[i];
        printf("| %s | %s | %d | %s | %s%d | %d | %.2f ± %.2f | %.3f of %s | %.1f MiB |\n",
               r->backend, r->isa, r->threads, r->cema, r->test,
               r->test[0] == 'p' ? r->n_prompt : r->n_gen, r->n_depth, r->avg_ts,
               r->stddev_ts, r->frac, r->test[0] == 'p' ? "sgemm" : "bandwidth",
               r->rss / 1048576.0);
    }
}

int main(int argc, char **argv)
{
    options o;
    int rc = parse_args(argc, argv, &o);
    if (rc >= 0) return rc;
    if ((rc = check_args(argv[0], &o)) >= 0) return rc;

    static results res; /* 1024 records: not on the stack */
    res.bw = triad_bandwidth();
    for (int bi = 0; bi < o.backends.n; bi++)
        for (int ii = 0; ii < o.isas.n; ii++) {
            /* the kernel table is a CPU setting: the OpenCL backend runs once */
            if (strcmp(o.backends.v[bi], "cpu") != 0 && ii > 0) continue;
            if (bench_backend(argv[0], &o, bi, ii, &res)) return 1;
        }

    if (!o.json && o.cemas.n > 0) print_planner(&o);
    if (o.json)
        print_json(&res);
    else
        print_table(&o, &res);
    return 0;
}

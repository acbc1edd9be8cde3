/* test-threads - results do not depend on the number of threads (docs/architecture.md §5, Threads).
 *
 * The whole model (every golden model, and a bigger random model whose parallel paths
 * really split the work: D=128, C=64, 4 heads, 300 tokens) gives bit-identical logits with
 * 1, 2 and 3 threads, for a full forward, chunked prefill, decode, irregular calls and a
 * multi-chunk step, with both CEMA algorithms. The attention op is also checked directly
 * against a naive double-precision attention for odd L / Lk (bottom-right causal), and
 * across thread counts bit for bit. */
#include "config.h"

#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "golden.h"
#include "megalodon.h"
#include "test.h"
#include "tiny_model.h"

static const int thread_counts[] = {1, 2, 3};
#define N_THREADS ((int)(sizeof thread_counts / sizeof thread_counts[0]))

static uint32_t rng = 12345u;
static float frand(void) /* uniform in [-1, 1) */
{
    rng = rng * 1664525u + 1013904223u;
    return (float)((rng >> 8) / 8388608.0 - 1.0);
}

/* ---------------------------------------------------------------- whole model */

typedef struct {
    const char *name;
    const int *pattern; /* call sizes, cycled, 0-terminated */
    int n_batch;
} feed_mode;

/* Feed `tokens` in calls of the sizes in `pattern`, all logits into `logits` (L x V). */
static int feed(mg_state *st, const int32_t *tokens, int L, const int *pattern, float *logits,
                size_t V)
{
    int done = 0, k = 0;
    while (done < L) {
        if (pattern[k] == 0) k = 0;
        int n = pattern[k++];
        if (n > L - done) n = L - done;
        int rc = mg_eval(st, tokens + done, (size_t)n, logits + (size_t)done * V, MG_LOGITS_ALL);
        if (rc) return rc;
        done += n;
    }
    return MG_OK;
}

/* Run the model over `tokens` with every thread count and mode; logits must be identical
 * to those of the first thread count. Returns the number of runs that differ. */
static int check_model(const char *label, mg_model *m, const int32_t *tokens, int L)
{
    const mg_hparams *hp = mg_model_hparams(m);
    const size_t V = (size_t)mg_model_n_vocab(m);
    const int C = hp->chunk_size;
    int one_call[] = {L, 0}, chunks[] = {C, 0}, decode[] = {1, 0}, mixed[] = {3, 5, 2, 7, 1, 0};
    const feed_mode modes[] = {
        {"full", one_call, 0},        {"chunked-prefill", chunks, 0}, {"decode", decode, 0},
        {"mixed-calls", mixed, 0},    {"multi-chunk-step", one_call, 8 * C},
    };
    const mg_cema_algo algos[] = {MG_CEMA_FFT, MG_CEMA_SCAN};
    const char *algo_names[] = {"fft", "scan"};
    float *ref = malloc(sizeof(float) * L * V), *got = malloc(sizeof(float) * L * V);
    int n_differ = 0;
    if (!ref || !got) {
        CHECK(0, "out of memory");
        free(ref);
        free(got);
        return 1;
    }
    for (size_t mi = 0; mi < sizeof modes / sizeof modes[0]; mi++)
        for (int a = 0; a < 2; a++) {
            for (int ti = 0; ti < N_THREADS; ti++) {
                char what[256];
                snprintf(what, sizeof what, "%s/%s/%s/%d threads", label, algo_names[a],
                         modes[mi].name, thread_counts[ti]);
                CHECK(mg_model_set_n_threads(m, thread_counts[ti]) == MG_OK, "%s: set threads",
                      what);
                mg_state_params sp = mg_state_default_params();
                sp.n_batch = modes[mi].n_batch;
                mg_state *st = NULL;
                int rc = mg_state_new(m, &sp, &st);
                CHECK(rc == MG_OK, "%s: state: %s", what, mg_last_error());
                if (rc) continue;
                /* set through the API, as an application would */
                CHECK(mg_state_set_cema(st, algos[a]) == MG_OK, "%s: set cema", what);
                float *out = ti == 0 ? ref : got;
                rc = feed(st, tokens, L, modes[mi].pattern, out, V);
                CHECK(rc == MG_OK, "%s: eval: %s", what, mg_last_error());
                mg_state_free(st);
                if (rc || ti == 0) continue;
                size_t bad = 0, first = 0;
                for (size_t i = 0; i < (size_t)L * V; i++)
                    if (memcmp(&ref[i], &got[i], sizeof(float)) != 0 && bad++ == 0) first = i;
                n_differ += bad != 0;
                CHECK(bad == 0,
                      "%s: %zu of %zu logits differ from %d thread(s); first at token %zu "
                      "(%.9g vs %.9g)",
                      what, bad, (size_t)L * V, thread_counts[0], first / V, (double)got[first],
                      (double)ref[first]);
            }
        }
    free(ref);
    free(got);
    return n_differ;
}

static void golden_models(void)
{
    for (int i = 0; i < golden_n_cases; i++) {
        golden_case gc;
        if (golden_open(golden_cases[i], &gc) != MG_OK) {
            CHECK(0, "cannot open golden case %s: %s", golden_cases[i], mg_last_error());
            continue;
        }
        mg_model *m = NULL;
        int rc = mg_model_load(gc.model_path, NULL, &m);
        CHECK(rc == MG_OK, "load %s: %s", gc.model_path, mg_last_error());
        if (rc == MG_OK) {
            int nd = check_model(golden_cases[i], m, gc.tokens, gc.L);
            printf("  %-18s L=%-3d %s\n", golden_cases[i], gc.L,
                   nd ? "logits DIFFER across thread counts" : "same logits with 1, 2 and 3 threads");
        }
        mg_model_free(m);
        golden_close(&gc);
    }
}

static void random_model(void)
{
    char path[1024];
    const char *tmpdir = getenv("TMPDIR");
    snprintf(path, sizeof path, "%s/mg-test-threads-XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
    int fd = mkstemp(path);
    CHECK(fd >= 0, "mkstemp");
    if (fd < 0) return;
    close(fd);
    tiny_opts o = tiny_default_opts();
    o.n_layer = 2;
    o.n_embd = 128;
    o.z_dim = 64; /* 4 heads of 16 */
    o.value_dim = 256;
    o.n_head = 4;
    o.n_ff = 256;
    o.cema_ndim = 8;
    o.chunk_size = 64;
    o.norm_groups = 8;
    o.n_vocab = 256;
    o.swiglu = 1;
    o.seed = 99;
    int rc = tiny_model_write(path, &o);
    CHECK(rc == MG_OK, "write %s: %s", path, mg_last_error());
    mg_model *m = NULL;
    if (rc == MG_OK) {
        rc = mg_model_load(path, NULL, &m);
        CHECK(rc == MG_OK, "load %s: %s", path, mg_last_error());
    }
    unlink(path);
    if (rc) return;
    enum { L = 300 };
    int32_t tokens[L];
    for (int i = 0; i < L; i++) tokens[i] = (int32_t)((uint32_t)(i * 2654435761u) >> 24);
    int nd = check_model("random D=128 C=64 H=4", m, tokens, L);
    printf("  random D=128 C=64 H=4 L=%d %s\n", L,
           nd ? "logits DIFFER across thread counts" : "same logits with 1, 2 and 3 threads");
    mg_model_free(m);
}

/* ---------------------------------------------------------------- the attention op */

/* Naive attention in double: out_h = softmax(q_h k_h^T) v_h, query i sees keys 0..Lk-L+i. */
static void naive_attention(const float *q, const float *k, const float *v, int L, int Lk, int H,
                            int dk, int dv, double *out)
{
    double *s = malloc(sizeof(double) * Lk);
    for (int hh = 0; hh < H; hh++)
        for (int i = 0; i < L; i++) {
            int n = Lk - L + i + 1;
            double mx = -INFINITY, sum = 0.0;
            for (int j = 0; j < n; j++) {
                double d = 0.0;
                for (int c = 0; c < dk; c++)
                    d += (double)q[((size_t)i * H + hh) * dk + c] * k[((size_t)j * H + hh) * dk + c];
                s[j] = d;
                if (d > mx) mx = d;
            }
            for (int j = 0; j < n; j++) sum += s[j] = exp(s[j] - mx);
            for (int c = 0; c < dv; c++) {
                double a = 0.0;
                for (int j = 0; j < n; j++) a += s[j] * v[((size_t)j * H + hh) * dv + c];
                out[((size_t)i * H + hh) * dv + c] = a / sum;
            }
        }
    free(s);
}

static void attention_op(void)
{
    static const struct { int L, Lk, H, dk, dv; } cases[] = {
        {1, 1, 1, 8, 8},      {1, 7, 2, 16, 12},    {1, 256, 1, 16, 24},  {1, 257, 3, 8, 20},
        {1, 700, 2, 32, 40},  {2, 2, 1, 8, 8},      {3, 17, 2, 16, 12},   {5, 5, 3, 16, 20},
        {17, 17, 1, 8, 8},    {63, 100, 2, 16, 36}, {64, 64, 1, 32, 32},  {65, 65, 2, 16, 24},
        {100, 229, 3, 16, 20}, {129, 130, 1, 8, 40}, {200, 333, 2, 32, 16}, {301, 301, 4, 16, 16},
    };
    mg_backend *be[N_THREADS] = {NULL};
    const int failures0 = test_failures;
    for (int ti = 0; ti < N_THREADS; ti++) {
        int rc = mg_backend_cpu_new(thread_counts[ti], NULL, &be[ti]);
        CHECK(rc == MG_OK, "backend with %d threads: %s", thread_counts[ti], mg_last_error());
        if (rc) goto done;
    }
    double worst = 0.0;
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const int L = cases[ci].L, Lk = cases[ci].Lk, H = cases[ci].H, dk = cases[ci].dk,
                  dv = cases[ci].dv;
        const size_t nq = (size_t)L * H * dk, nk = (size_t)Lk * H * dk, nv = (size_t)Lk * H * dv,
                     no = (size_t)L * H * dv;
        float *q = malloc(sizeof(float) * nq), *k = malloc(sizeof(float) * nk);
        float *v = malloc(sizeof(float) * nv), *o1 = malloc(sizeof(float) * no);
        float *o2 = malloc(sizeof(float) * no);
        double *e = malloc(sizeof(double) * no);
        /* scores of a few units: softmax neither flat nor one-hot */
        for (size_t i = 0; i < nq; i++) q[i] = 1.5f * frand();
        for (size_t i = 0; i < nk; i++) k[i] = frand();
        for (size_t i = 0; i < nv; i++) v[i] = frand();
        naive_attention(q, k, v, L, Lk, H, dk, dv, e);
        char what[128];
        snprintf(what, sizeof what, "attention L=%d Lk=%d H=%d dk=%d dv=%d", L, Lk, H, dk, dv);
        for (int ti = 0; ti < N_THREADS; ti++) {
            float *o = ti == 0 ? o1 : o2;
            for (size_t i = 0; i < no; i++) o[i] = NAN; /* every output must be written */
            int rc = be[ti]->attention(be[ti], q, k, v, L, Lk, H, dk, dv, o);
            CHECK(rc == MG_OK, "%s, %d threads: %s", what, thread_counts[ti], mg_last_error());
            /* OpenBLAS stays single-threaded whatever the backend's thread count (the library
             * threads the products itself, in blocks fixed by the shapes) */
            CHECK(openblas_get_num_threads() == 1,
                  "%s: OpenBLAS at %d threads, backend has %d; expected 1", what,
                  openblas_get_num_threads(), thread_counts[ti]);
            if (ti == 0) {
                double w = 0.0;
                size_t wi = 0;
                for (size_t i = 0; i < no; i++) {
                    double d = fabs(o[i] - e[i]);
                    if (!(d <= w)) { w = d; wi = i; }
                }
                CHECK(w <= 2e-6, "%s: max abs error %.3g vs double at [%zu] (%.9g vs %.9g)",
                      what, w, wi, (double)o[wi], e[wi]);
                if (w > worst) worst = w;
            } else {
                CHECK(memcmp(o1, o2, sizeof(float) * no) == 0,
                      "%s: %d threads differ from %d", what, thread_counts[ti], thread_counts[0]);
            }
        }
        free(q); free(k); free(v); free(o1); free(o2); free(e);
    }
    printf("  attention op: %zu shapes, worst error vs double %.3g%s\n",
           sizeof cases / sizeof cases[0], worst,
           test_failures == failures0 ? ", same bits with 1, 2 and 3 threads" : ": FAILED");
done:
    for (int ti = 0; ti < N_THREADS; ti++)
        if (be[ti]) be[ti]->free(be[ti]);
}

int main(void)
{
    attention_op();
    golden_models();
    random_model();
    return test_finish("test-threads");
}

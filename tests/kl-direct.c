/* kl-direct - the KL statistics of two models on a token file, computed directly from both
 * models' full logits in double (no base file), for tests/test-kl.sh to check
 * `megalodon-run perplexity --kl-base` against.
 *
 *     kl-direct BASE.gguf MODEL.gguf TOKENS
 *
 * Both models are fed t_0 .. t_{N-2} in calls of one chunk on one thread (as megalodon-run
 * perplexity does by default); for i = 1 .. N-1, with p and q the softmax of the base's and
 * the model's logits after t_{i-1}:
 *     KL_i = sum_v p_v (log p_v - log q_v)
 * It prints one line: n, the mean, maximum and 99th percentile (the ceil(0.99 n)-th smallest)
 * of KL_i, the top-1 agreement, and both perplexities. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "megalodon.h"

/* All the logits of a model over t_0 .. t_{n-2}: (n - 1) x V floats. */
static float *all_logits(const char *path, const int32_t *t, size_t n, int32_t *V)
{
    mg_model_params mp = mg_model_default_params();
    mp.n_threads = 1;
    mg_model *m = NULL;
    mg_state *s = NULL;
    if (mg_model_load(path, &mp, &m) != MG_OK) return NULL;
    const size_t C = (size_t)mg_model_hparams(m)->chunk_size;
    mg_state_params sp = mg_state_default_params();
    sp.n_batch = (int)C;
    *V = mg_model_n_vocab(m);
    float *l = malloc((n - 1) * (size_t)*V * sizeof *l);
    if (!l || mg_state_new(m, &sp, &s) != MG_OK) goto fail;
    for (size_t i = 0; i < n - 1; i += C) {
        size_t len = n - 1 - i < C ? n - 1 - i : C;
        if (mg_eval(s, t + i, len, l + i * (size_t)*V, MG_LOGITS_ALL) != MG_OK) goto fail;
    }
    mg_state_free(s);
    mg_model_free(m);
    return l;
fail:
    fprintf(stderr, "kl-direct: %s: %s\n", path, mg_last_error());
    free(l);
    mg_state_free(s);
    mg_model_free(m);
    return NULL;
}

/* log-softmax of row l (V) into lp; returns the index of the first maximum */
static int32_t log_softmax(const float *l, int32_t V, double *lp)
{
    int32_t top = 0;
    for (int32_t v = 1; v < V; v++) top = l[v] > l[top] ? v : top;
    double sum = 0.0;
    for (int32_t v = 0; v < V; v++) sum += exp((double)l[v] - l[top]);
    const double lse = l[top] + log(sum);
    for (int32_t v = 0; v < V; v++) lp[v] = (double)l[v] - lse;
    return top;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: kl-direct BASE.gguf MODEL.gguf TOKENS\n");
        return 2;
    }
    FILE *f = fopen(argv[3], "r");
    int32_t *t = NULL;
    size_t n = 0, cap = 0;
    long x;
    while (f && fscanf(f, "%ld", &x) == 1) {
        if (n == cap && !(t = realloc(t, (cap = cap ? 2 * cap : 1024) * sizeof *t))) return 1;
        t[n++] = (int32_t)x;
    }
    if (f) fclose(f);
    if (n < 2) {
        fprintf(stderr, "kl-direct: %s: fewer than 2 ids\n", argv[3]);
        return 1;
    }
    int32_t Vb, Vm;
    float *lb = all_logits(argv[1], t, n, &Vb), *lm = all_logits(argv[2], t, n, &Vm);
    if (!lb || !lm || Vb != Vm) return 1;
    const int32_t V = Vb;
    double *pb = malloc((size_t)V * sizeof *pb), *pm = malloc((size_t)V * sizeof *pm);
    double *kl = malloc((n - 1) * sizeof *kl);
    if (!pb || !pm || !kl) return 1;
    double sum = 0.0, max = 0.0, nll_b = 0.0, nll_m = 0.0;
    size_t agree = 0;
    for (size_t i = 0; i < n - 1; i++) {
        int32_t tb = log_softmax(lb + i * (size_t)V, V, pb);
        int32_t tm = log_softmax(lm + i * (size_t)V, V, pm);
        double k = 0.0;
        for (int32_t v = 0; v < V; v++) k += exp(pb[v]) * (pb[v] - pm[v]);
        kl[i] = k;
        sum += k;
        max = i == 0 || k > max ? k : max;
        agree += tb == tm;
        nll_b -= pb[t[i + 1]];
        nll_m -= pm[t[i + 1]];
    }
    const size_t ns = n - 1;
    qsort(kl, ns, sizeof *kl, cmp_double);
    size_t k99 = (size_t)ceil(0.99 * (double)ns);
    printf("n %zu mean %.10g max %.10g p99 %.10g agree %.10g base_ppl %.10g ppl %.10g\n", ns,
           sum / (double)ns, max, kl[k99 - 1], (double)agree / (double)ns, exp(nll_b / (double)ns),
           exp(nll_m / (double)ns));
    free(t);
    free(lb);
    free(lm);
    free(pb);
    free(pm);
    free(kl);
    return 0;
}

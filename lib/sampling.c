/* sampling.c - choosing the next token from logits (llama.cpp semantics).
 *
 * One call of mg_sampler_sample runs, in this order:
 *   1. repetition penalty: every distinct token among the last repeat_last_n accepted tokens
 *      has its logit divided by the penalty if it is positive, multiplied otherwise;
 *   2. temp <= 0: greedy, the largest logit (ties: the lowest id); nothing else runs;
 *   3. top-k: the k largest logits (ties: lower ids first);
 *   4. top-p: the smallest prefix of the candidates, sorted by logit, whose probability mass
 *      (softmax of the logits, temperature 1) reaches top_p; at least one token;
 *   5. min-p: the candidates with probability >= min_p * (largest probability);
 *   6. softmax of logit / temp over what is left and one draw from a private xoshiro256**
 *      generator seeded from the seed by splitmix64.
 * The probabilities are computed in double from the float logits, the candidates are
 * totally ordered (logit, then id), and the generator is the sampler's own: the same seed
 * and the same logits give the same token on every machine and whatever the thread count.
 * NaN logits count as -infinity. */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

typedef struct {
    float logit;
    int32_t id;
} mg_cand;

struct mg_sampler {
    mg_sampler_params p;
    int32_t n_vocab;
    uint64_t rng[4];     /* xoshiro256** state */
    int32_t *hist;       /* ring buffer of the last repeat_last_n accepted tokens */
    int32_t n_hist;      /* tokens in hist (<= repeat_last_n) */
    int32_t hist_pos;    /* next slot to write */
    float *work;         /* n_vocab: the logits after the penalty */
    mg_cand *cand;       /* n_vocab candidates */
    unsigned char *seen; /* n_vocab marks: token already penalized in this call */
};

/* ------------------------------------------------------------------ random numbers */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t xoshiro_next(uint64_t s[4])
{
    const uint64_t result = rotl(s[1] * 5, 7) * 9;
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* uniform in [0, 1) with 53 random bits */
static double uniform01(uint64_t s[4]) { return (double)(xoshiro_next(s) >> 11) * 0x1.0p-53; }

/* ------------------------------------------------------------------ parameters */

mg_sampler_params mg_sampler_default_params(void)
{
    mg_sampler_params p;
    memset(&p, 0, sizeof p);
    p.seed = 0x5eed;
    p.temp = 0.8f;
    p.top_k = 40;
    p.top_p = 0.95f;
    p.min_p = 0.05f;
    p.repeat_penalty = 1.0f;
    p.repeat_last_n = 64;
    return p;
}

static int check_params(const mg_sampler_params *p)
{
    if (isnan(p->temp) || isinf(p->temp))
        return mg_seterr(MG_ERR_INVALID_ARG, "sampler: temperature must be a finite number, got %g",
                         (double)p->temp);
    if (!(p->top_p >= 0.0f) || isinf(p->top_p))
        return mg_seterr(MG_ERR_INVALID_ARG, "sampler: top_p must be a finite number >= 0, got %g",
                         (double)p->top_p);
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return mg_seterr(MG_ERR_INVALID_ARG, "sampler: min_p must be in [0, 1], got %g",
                         (double)p->min_p);
    if (!(p->repeat_penalty > 0.0f) || isinf(p->repeat_penalty))
        return mg_seterr(MG_ERR_INVALID_ARG,
                         "sampler: repeat_penalty must be a finite number > 0, got %g",
                         (double)p->repeat_penalty);
    if (p->repeat_last_n < 0)
        return mg_seterr(MG_ERR_INVALID_ARG, "sampler: repeat_last_n must be >= 0, got %d",
                         (int)p->repeat_last_n);
    return MG_OK;
}

int mg_sampler_new(const mg_sampler_params *params, int32_t n_vocab, mg_sampler **out)
{
    if (!out) return mg_seterr(MG_ERR_INVALID_ARG, "mg_sampler_new: out is NULL");
    *out = NULL;
    mg_sampler_params p = params ? *params : mg_sampler_default_params();
    if (n_vocab <= 0)
        return mg_seterr(MG_ERR_INVALID_ARG, "mg_sampler_new: n_vocab must be > 0, got %d",
                         (int)n_vocab);
    TRY(check_params(&p));

    mg_sampler *s = calloc(1, sizeof *s);
    if (!s) return mg_seterr(MG_ERR_NOMEM, "out of memory for the sampler");
    s->p = p;
    s->n_vocab = n_vocab;
    s->work = malloc(sizeof(float) * (size_t)n_vocab);
    s->cand = malloc(sizeof(mg_cand) * (size_t)n_vocab);
    s->seen = calloc((size_t)n_vocab, 1);
    s->hist = p.repeat_last_n > 0 ? malloc(sizeof(int32_t) * (size_t)p.repeat_last_n) : NULL;
    if (!s->work || !s->cand || !s->seen || (p.repeat_last_n > 0 && !s->hist)) {
        mg_sampler_free(s);
        return mg_seterr(MG_ERR_NOMEM, "out of memory for the sampler's work buffers (%d "
                         "tokens, a history of %d)", (int)n_vocab, (int)p.repeat_last_n);
    }
    uint64_t x = p.seed;
    for (int i = 0; i < 4; i++) s->rng[i] = splitmix64(&x);
    *out = s;
    return MG_OK;
}

void mg_sampler_free(mg_sampler *s)
{
    if (!s) return;
    free(s->work);
    free(s->cand);
    free(s->seen);
    free(s->hist);
    free(s);
}

void mg_sampler_accept(mg_sampler *s, int32_t token)
{
    if (!s || s->p.repeat_last_n <= 0) return;
    s->hist[s->hist_pos] = token;
    s->hist_pos = (s->hist_pos + 1) % s->p.repeat_last_n;
    if (s->n_hist < s->p.repeat_last_n) s->n_hist++;
}

/* ------------------------------------------------------------------ the steps */

/* a before b: larger logit, then lower id (a total order: results never depend on qsort) */
static int better(const mg_cand *a, const mg_cand *b)
{
    return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

static int cmp_cand(const void *pa, const void *pb)
{
    const mg_cand *a = pa, *b = pb;
    if (better(a, b)) return -1;
    if (better(b, a)) return 1;
    return 0;
}

static void apply_penalty(mg_sampler *s)
{
    const float pen = s->p.repeat_penalty;
    for (int32_t i = 0; i < s->n_hist; i++) {
        int32_t t = s->hist[i];
        if (t < 0 || t >= s->n_vocab || s->seen[t]) continue;
        s->seen[t] = 1; /* once per distinct token, as llama.cpp */
        float *l = &s->work[t];
        *l = *l > 0.0f ? *l / pen : *l * pen;
    }
    for (int32_t i = 0; i < s->n_hist; i++) {
        int32_t t = s->hist[i];
        if (t >= 0 && t < s->n_vocab) s->seen[t] = 0;
    }
}

/* min-heap (root = the worst kept candidate) of the k best: O(n log k) */
static void sift_down(mg_cand *h, int32_t n, int32_t i)
{
    for (;;) {
        int32_t l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && better(&h[w], &h[l])) w = l;
        if (r < n && better(&h[w], &h[r])) w = r;
        if (w == i) return;
        mg_cand t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

static int32_t select_top_k(mg_sampler *s, int32_t k)
{
    mg_cand *h = s->cand;
    for (int32_t i = 0; i < k; i++) h[i] = (mg_cand){s->work[i], i};
    for (int32_t i = k / 2 - 1; i >= 0; i--) sift_down(h, k, i);
    for (int32_t i = k; i < s->n_vocab; i++) {
        mg_cand c = {s->work[i], i};
        if (better(&c, &h[0])) {
            h[0] = c;
            sift_down(h, k, 0);
        }
    }
    qsort(h, (size_t)k, sizeof *h, cmp_cand);
    return k;
}

/* top-p over candidates sorted best first: keep the smallest prefix with mass >= top_p */
static int32_t apply_top_p(const mg_cand *c, int32_t n, double top_p)
{
    const double lmax = c[0].logit;
    double sum = 0.0;
    for (int32_t i = 0; i < n; i++) sum += exp((double)c[i].logit - lmax);
    double cum = 0.0;
    for (int32_t i = 0; i < n; i++) {
        cum += exp((double)c[i].logit - lmax) / sum;
        if (cum >= top_p) return i + 1;
    }
    return n;
}

/* min-p over sorted candidates: keep p_i >= min_p * p_max, i.e. exp(l_i - l_max) >= min_p */
static int32_t apply_min_p(const mg_cand *c, int32_t n, double min_p)
{
    const double lmax = c[0].logit;
    int32_t keep = 1;
    while (keep < n && exp((double)c[keep].logit - lmax) >= min_p) keep++;
    return keep;
}

int32_t mg_sampler_sample(mg_sampler *s, const float *logits)
{
    if (!s || !logits) {
        mg_seterr(MG_ERR_INVALID_ARG, "mg_sampler_sample: NULL sampler or logits");
        return -1;
    }
    const int32_t V = s->n_vocab;
    for (int32_t i = 0; i < V; i++) s->work[i] = isnan(logits[i]) ? -INFINITY : logits[i];
    if (s->p.repeat_penalty != 1.0f && s->n_hist > 0) apply_penalty(s);

    if (s->p.temp <= 0.0f) { /* greedy */
        int32_t best = 0;
        for (int32_t i = 1; i < V; i++)
            if (s->work[i] > s->work[best]) best = i;
        return best;
    }

    int32_t n;
    if (s->p.top_k > 0 && s->p.top_k < V) {
        n = select_top_k(s, s->p.top_k);
    } else {
        for (int32_t i = 0; i < V; i++) s->cand[i] = (mg_cand){s->work[i], i};
        qsort(s->cand, (size_t)V, sizeof *s->cand, cmp_cand);
        n = V;
    }
    const mg_cand *c = s->cand;
    if (isinf(c[0].logit)) return c[0].id; /* -inf: nothing has mass; +inf: it has it all */
    if (s->p.top_p < 1.0f) n = apply_top_p(c, n, s->p.top_p);
    if (s->p.min_p > 0.0f) n = apply_min_p(c, n, s->p.min_p);

    /* softmax(logit / temp) over the n survivors, then one draw */
    const double inv_t = 1.0 / (double)s->p.temp, lmax = c[0].logit;
    double sum = 0.0;
    for (int32_t i = 0; i < n; i++) sum += exp(((double)c[i].logit - lmax) * inv_t);
    const double u = uniform01(s->rng) * sum;
    double cum = 0.0;
    for (int32_t i = 0; i < n; i++) {
        cum += exp(((double)c[i].logit - lmax) * inv_t);
        if (u < cum) return c[i].id;
    }
    /* rounding: u landed on the very end; the last candidate with any mass */
    for (int32_t i = n - 1; i > 0; i--)
        if (exp(((double)c[i].logit - lmax) * inv_t) > 0.0) return c[i].id;
    return c[0].id;
}

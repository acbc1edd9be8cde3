/* test-soak - numerical soak: a long token stream through small models in fp32, against a
 * float64 twin of the same forward pass (tests/soak_f64.c).
 *
 * Two models: the golden `base` model (D=16, C=8) and a random one with chunk 64 (D=64,
 * 4 heads, SwiGLU, rescaled FFN). Each streams the same tokens through three states at once:
 * the library with the CEMA recurrence (MG_CEMA_SCAN), the library with the FFT convolution
 * (MG_CEMA_FFT), and the float64 twin, one token at a time. The library is fed in calls of
 * one chunk, the first call being 5 tokens so that every later call crosses a chunk boundary
 * and keys/values are cached at every check. The tokens come from a window of the vocabulary
 * that moves every 1000 tokens, so that the running statistics keep moving too.
 *
 * After every call, for both library states: all logits finite; every timestep-norm count
 * equal to the tokens seen, every mean finite and bounded, every variance finite and
 * positive (and bounded); the CEMA state finite and bounded; the cached keys and values
 * finite. At every checkpoint (every 10,000 tokens, or n/10 in short runs) and at the end,
 * the drift against the twin: the largest |logit difference| over all tokens since the last
 * checkpoint, the largest mean difference in units of the twin's standard deviation, the
 * largest relative variance difference, the largest CEMA-state difference relative to the
 * largest |h| of its layer, the largest key/value difference; each must stay within its
 * bound after n tokens, B0 + B1 n / 1e6 (below; docs/hardening.md has the measured drift
 * over 1M tokens). The twin itself is first checked against the PyTorch reference (the
 * golden base case's logits, to 1e-6).
 *
 * usage: test-soak [N_TOKENS]     (default: $MG_SOAK_TOKENS, else 50000; the documented run
 *                                  is 1000000). MG_SOAK_CHECK: tokens between checkpoints;
 *                                  MG_SOAK_MODELS: "base", "random" or both (default);
 *                                  MG_SOAK_VERBOSE=1: the drift of every layer too. */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "golden.h"
#include "megalodon.h"
#include "model.h"
#include "test.h"
#include "tiny_model.h"

/* soak_f64.c */
typedef struct f64_model f64_model;
typedef struct f64_state f64_state;
f64_model *f64_model_new(const mg_model *m);
void f64_model_free(f64_model *fm);
f64_state *f64_state_new(const f64_model *fm);
void f64_state_free(f64_state *s);
void f64_eval_token(f64_state *s, int32_t token, double *logits);
int64_t f64_tnorm_count(const f64_state *s, int layer);
const double *f64_tnorm_mean(const f64_state *s, int layer);
const double *f64_tnorm_var(const f64_state *s, int layer);
const double *f64_cema_h(const f64_state *s, int layer);
const double *f64_keys(const f64_state *s, int layer);
const double *f64_values(const f64_state *s, int layer);
int f64_n_kv(const f64_state *s);

/* ---------------------------------------------------------------- bounds */

/* fp32 vs float64 after n tokens: B0 + B1 * n / 1e6, checked at every checkpoint over the
 * window since the previous one. The running statistics are rounded to fp32 at every token,
 * and the rounding errors of a slowly moving statistic are correlated, so the drift grows
 * about linearly with n (measured over 1M tokens: docs/hardening.md). B1 is about twice the
 * steepest growth measured (every checkpoint of that run is within 0.46 of the bound), so
 * that a loss of precision in the statistics (e.g. their update computed in fp32: 3-4x the
 * drift) fails the documented run; B0 covers the first few thousand tokens. */
typedef struct {
    const char *what;
    double b0, b1;
} bound;
static const bound B_LOGIT = {"max |logit difference|", 1e-4, 1e-2};
static const bound B_MEAN = {"max |mean difference| / sd", 2e-5, 2e-3};
static const bound B_VAR = {"max |variance difference| / variance", 2e-5, 2e-3};
static const bound B_H = {"max |CEMA state difference| / max |h|", 2e-5, 3e-3};
static const bound B_KV = {"max |key or value difference|", 2e-5, 2e-3};

static double bound_at(const bound *b, uint64_t n) { return b->b0 + b->b1 * (double)n / 1e6; }

/* sanity of the library's state: far beyond anything a sane stream produces, far below
 * overflow */
#define SANE_MEAN 1e3
#define SANE_VAR 1e6
#define SANE_H 1e6

static const mg_cema_algo lib_algos[] = {MG_CEMA_SCAN, MG_CEMA_FFT};
static const char *const lib_names[] = {"scan", "fft"};
#define N_LIB 2

typedef struct {
    double logit, logit_scale, mean, var, h, kv;
} drift;

static void drift_max(drift *a, const drift *b)
{
    if (b->logit > a->logit) a->logit = b->logit;
    if (b->logit_scale > a->logit_scale) a->logit_scale = b->logit_scale;
    if (b->mean > a->mean) a->mean = b->mean;
    if (b->var > a->var) a->var = b->var;
    if (b->h > a->h) a->h = b->h;
    if (b->kv > a->kv) a->kv = b->kv;
}

/* ---------------------------------------------------------------- state checks */

static int n_insane; /* reported in detail only the first few times */

static void insane(const char *label, const char *fmt, ...) MG_PRINTF(2, 3);
static void insane(const char *label, const char *fmt, ...)
{
    test_checks++;
    test_failures++;
    if (n_insane++ >= 10) return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "FAIL %s: ", label);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* The length of a layer's CEMA state h: D x N complex values. */
static size_t cema_h_len(const mg_hparams *hp) { return (size_t)hp->n_embd * hp->cema_ndim * 2; }

/* The model's sizes, once the state's values are back on the host (a backend may keep them
 * on the device). */
static const mg_hparams *synced_hparams(const mg_state *st)
{
    mg_state_sync((mg_state *)st);
    return &st->model->hp;
}

static int check_tnorm(const char *label, const char *which, const mg_tnorm_state *t, int G,
                       int64_t expect_count)
{
    int bad = 0;
    if (t->count != expect_count) {
        insane(label, "%s count %lld, expected %lld", which, (long long)t->count,
               (long long)expect_count);
        bad = 1;
    }
    for (int g = 0; g < G; g++) {
        if (!isfinite(t->mean[g]) || fabsf(t->mean[g]) > SANE_MEAN) {
            insane(label, "%s mean[%d] = %g", which, g, (double)t->mean[g]);
            bad = 1;
        }
        if (!(t->var[g] > 0.0f) || !isfinite(t->var[g]) || t->var[g] > SANE_VAR) {
            insane(label, "%s var[%d] = %g", which, g, (double)t->var[g]);
            bad = 1;
        }
    }
    return bad;
}

/* Every value of the library state is finite and in range; returns 1 if not. */
static int check_state(const char *label, const mg_state *st)
{
    const mg_hparams *hp = synced_hparams(st);
    const int G = hp->norm_groups;
    const size_t DN2 = cema_h_len(hp);
    int bad = 0;
    char which[64];
    for (int il = 0; il < hp->n_layer; il++) {
        const mg_layer_state *ls = &st->layers[il];
        snprintf(which, sizeof which, "blk.%d.tnorm", il);
        bad |= check_tnorm(label, which, &ls->tnorm,
                           G, st->model->layers[il].tnorm.prior_count + (int64_t)st->n_past);
        for (size_t i = 0; i < DN2; i++)
            if (!isfinite(ls->h[i]) || fabsf(ls->h[i]) > SANE_H) {
                insane(label, "blk.%d.cema.h[%zu] = %g", il, i, (double)ls->h[i]);
                bad = 1;
                break;
            }
        for (size_t i = 0; i < (size_t)st->n_kv * hp->z_dim; i++)
            if (!isfinite(ls->k[i])) {
                insane(label, "blk.%d.k[%zu] = %g", il, i, (double)ls->k[i]);
                bad = 1;
                break;
            }
        for (size_t i = 0; i < (size_t)st->n_kv * hp->value_dim; i++)
            if (!isfinite(ls->v[i])) {
                insane(label, "blk.%d.v[%zu] = %g", il, i, (double)ls->v[i]);
                bad = 1;
                break;
            }
    }
    bad |= check_tnorm(label, "output_norm", &st->out_norm, G,
                       st->model->out_norm.prior_count + (int64_t)st->n_past);
    return bad;
}

/* State drift of the library state against the twin (logit fields left 0). */
static drift state_drift(const mg_state *st, const f64_state *tw)
{
    const mg_hparams *hp = synced_hparams(st);
    const int G = hp->norm_groups;
    const size_t DN2 = cema_h_len(hp);
    drift d = {0};
    for (int il = 0; il <= hp->n_layer; il++) {
        const mg_tnorm_state *t = il < hp->n_layer ? &st->layers[il].tnorm : &st->out_norm;
        const double *m64 = f64_tnorm_mean(tw, il), *v64 = f64_tnorm_var(tw, il);
        for (int g = 0; g < G; g++) {
            double dm = fabs(t->mean[g] - m64[g]) / sqrt(v64[g]);
            double dv = fabs(t->var[g] - v64[g]) / v64[g];
            if (!(dm <= d.mean)) d.mean = dm; /* NaN propagates */
            if (!(dv <= d.var)) d.var = dv;
        }
        if (il == hp->n_layer) break;
        const float *h = st->layers[il].h;
        const double *h64 = f64_cema_h(tw, il);
        double hmax = 0.0, dh = 0.0;
        for (size_t i = 0; i < DN2; i++) {
            if (fabs(h64[i]) > hmax) hmax = fabs(h64[i]);
            double e = fabs(h[i] - h64[i]);
            if (!(e <= dh)) dh = e;
        }
        dh = hmax > 0.0 ? dh / hmax : dh;
        if (!(dh <= d.h)) d.h = dh;
        const double *k64 = f64_keys(tw, il), *v64v = f64_values(tw, il);
        for (size_t i = 0; i < (size_t)st->n_kv * hp->z_dim; i++) {
            double e = fabs(st->layers[il].k[i] - k64[i]);
            if (!(e <= d.kv)) d.kv = e;
        }
        for (size_t i = 0; i < (size_t)st->n_kv * hp->value_dim; i++) {
            double e = fabs(st->layers[il].v[i] - v64v[i]);
            if (!(e <= d.kv)) d.kv = e;
        }
    }
    return d;
}

/* Per-layer drift (MG_SOAK_VERBOSE): where the drift is. */
static void print_layers(const mg_state *st, const f64_state *tw)
{
    const mg_hparams *hp = &st->model->hp;
    const int G = hp->norm_groups;
    const size_t DN2 = cema_h_len(hp);
    for (int il = 0; il <= hp->n_layer; il++) {
        const mg_tnorm_state *t = il < hp->n_layer ? &st->layers[il].tnorm : &st->out_norm;
        const double *m64 = f64_tnorm_mean(tw, il), *v64 = f64_tnorm_var(tw, il);
        double dm = 0.0, dv = 0.0, dh = 0.0, hmax = 0.0;
        for (int g = 0; g < G; g++) {
            dm = fmax(dm, fabs(t->mean[g] - m64[g]) / sqrt(v64[g]));
            dv = fmax(dv, fabs(t->var[g] - v64[g]) / v64[g]);
        }
        if (il < hp->n_layer) {
            const double *h64 = f64_cema_h(tw, il);
            for (size_t i = 0; i < DN2; i++) {
                hmax = fmax(hmax, fabs(h64[i]));
                dh = fmax(dh, fabs(st->layers[il].h[i] - h64[i]));
            }
            printf("      layer %d: |dmean|/sd %.3g, |dvar|/var %.3g, |dh|/|h| %.3g\n", il, dm,
                   dv, hmax > 0 ? dh / hmax : dh);
        } else {
            printf("      final norm: |dmean|/sd %.3g, |dvar|/var %.3g\n", dm, dv);
        }
    }
}

/* ---------------------------------------------------------------- the soak */

static uint32_t lcg(uint32_t *s)
{
    *s = *s * 1664525u + 1013904223u;
    return *s >> 8;
}

/* token i of the stream: uniform over a quarter of the vocabulary that moves every 1000 */
static int32_t next_token(uint32_t *s, uint64_t i, int V)
{
    const int w = V / 4 > 1 ? V / 4 : 1;
    const uint64_t base = (i / 1000) * 37u;
    return (int32_t)((base + lcg(s) % (uint32_t)w) % (uint32_t)V);
}

typedef struct {
    double worst_logit, worst_mean, worst_var, worst_h, worst_kv;
    double max_mean64, min_var64, max_var64, max_h64;
} soak_result;

static int verbose;

static void soak(const char *label, mg_model *m, uint64_t n_tokens, uint64_t every)
{
    const mg_hparams *hp = mg_model_hparams(m);
    const int C = hp->chunk_size, V = mg_model_n_vocab(m), G = hp->norm_groups;
    const size_t DN2 = cema_h_len(hp);
    f64_model *fm = f64_model_new(m);
    CHECK(fm != NULL, "%s: f64 twin: %s", label, mg_last_error());
    if (!fm) return;
    f64_state *tw = f64_state_new(fm);
    mg_state *st[N_LIB] = {NULL};
    float *lg = malloc(sizeof(float) * (size_t)C * V);
    double *rows64 = malloc(sizeof(double) * (size_t)C * V); /* the twin's logits, one call */
    int32_t *tok = malloc(sizeof(int32_t) * C);
    CHECK(tw && lg && rows64 && tok, "out of memory");
    for (int a = 0; a < N_LIB && tw && lg && rows64 && tok; a++) {
        mg_state_params sp = mg_state_default_params();
        sp.cema = lib_algos[a];
        int rc = mg_state_new(m, &sp, &st[a]);
        CHECK(rc == MG_OK, "%s: state: %s", label, mg_last_error());
    }
    if (!tw || !lg || !rows64 || !tok || !st[0] || !st[1]) goto done;

    printf("\n%s: %llu tokens (D=%d, C=%d, V=%d), fp32 library vs float64 twin\n", label,
           (unsigned long long)n_tokens, hp->n_embd, C, V);
    printf("  %9s %-5s %10s %10s %10s %10s %10s | twin: %8s %8s %8s %8s %8s\n", "tokens",
           "cema", "|dlogit|", "|dmean|/sd", "|dvar|/var", "|dh|/|h|", "|dk,dv|", "max|lgt|",
           "max|mu|", "min var", "max var", "max|h|");
    drift win[N_LIB], all[N_LIB];
    double worst_ratio[N_LIB] = {0.0};
    memset(win, 0, sizeof win);
    memset(all, 0, sizeof all);
    soak_result res = {0};
    res.min_var64 = INFINITY;
    uint32_t seed = 20240601u;
    uint64_t done = 0, next_check = every;
    int broken = 0;
    const clock_t t0 = clock();
    double t_twin = 0.0;
    while (done < n_tokens && !broken) {
        int n = done == 0 ? (C > 5 ? 5 : 1) : C;
        if ((uint64_t)n > n_tokens - done) n = (int)(n_tokens - done);
        for (int i = 0; i < n; i++) tok[i] = next_token(&seed, done + i, V);
        const clock_t c0 = clock();
        for (int i = 0; i < n; i++) f64_eval_token(tw, tok[i], rows64 + (size_t)i * V);
        t_twin += (double)(clock() - c0) / CLOCKS_PER_SEC;
        for (int i = 0; i < n; i++)
            for (int v = 0; v < V; v++)
                if (fabs(rows64[(size_t)i * V + v]) > win[0].logit_scale)
                    win[0].logit_scale = fabs(rows64[(size_t)i * V + v]);
        for (int a = 0; a < N_LIB && !broken; a++) {
            char what[96];
            snprintf(what, sizeof what, "%s/%s at token %llu", label, lib_names[a],
                     (unsigned long long)(done + n));
            int rc = mg_eval(st[a], tok, (size_t)n, lg, MG_LOGITS_ALL);
            if (rc) {
                CHECK(0, "%s: mg_eval: %s", what, mg_last_error());
                broken = 1;
                break;
            }
            if (check_state(what, st[a])) broken = 1;
            for (size_t i = 0; i < (size_t)n * V; i++) {
                if (!isfinite(lg[i])) {
                    insane(what, "logit [%zu][%zu] = %g", i / V, i % V, (double)lg[i]);
                    broken = 1;
                }
                double e = fabs(lg[i] - rows64[i]);
                if (!(e <= win[a].logit)) win[a].logit = e;
            }
        }
        done += (uint64_t)n;
        if (done >= next_check || done == n_tokens || broken) {
            for (int a = 0; a < N_LIB; a++) {
                drift sd = state_drift(st[a], tw);
                win[a].mean = sd.mean;
                win[a].var = sd.var;
                win[a].h = sd.h;
                win[a].kv = sd.kv;
            }
            /* the twin's own statistics: bounded, positive */
            double mxm = 0.0, mnv = INFINITY, mxv = 0.0, mxh = 0.0;
            for (int il = 0; il <= hp->n_layer; il++) {
                const double *m64 = f64_tnorm_mean(tw, il), *v64 = f64_tnorm_var(tw, il);
                for (int g = 0; g < G; g++) {
                    if (fabs(m64[g]) > mxm) mxm = fabs(m64[g]);
                    if (v64[g] < mnv) mnv = v64[g];
                    if (v64[g] > mxv) mxv = v64[g];
                }
                if (il < hp->n_layer) {
                    const double *h64 = f64_cema_h(tw, il);
                    for (size_t i = 0; i < DN2; i++)
                        if (fabs(h64[i]) > mxh) mxh = fabs(h64[i]);
                }
            }
            if (mxm > res.max_mean64) res.max_mean64 = mxm;
            if (mnv < res.min_var64) res.min_var64 = mnv;
            if (mxv > res.max_var64) res.max_var64 = mxv;
            if (mxh > res.max_h64) res.max_h64 = mxh;
            for (int a = 0; a < N_LIB; a++) {
                if (a == 0)
                    printf("  %9llu %-5s %10.3g %10.3g %10.3g %10.3g %10.3g | %14.4g %8.4g %8.4g "
                           "%8.4g %8.4g\n",
                           (unsigned long long)done, lib_names[a], win[a].logit, win[a].mean,
                           win[a].var, win[a].h, win[a].kv, win[0].logit_scale, mxm, mnv, mxv,
                           mxh);
                else
                    printf("  %9s %-5s %10.3g %10.3g %10.3g %10.3g %10.3g |\n", "", lib_names[a],
                           win[a].logit, win[a].mean, win[a].var, win[a].h, win[a].kv);
                if (a > 0) win[a].logit_scale = win[0].logit_scale;
                const struct { const bound *b; double v; } chk[] = {
                    {&B_LOGIT, win[a].logit}, {&B_MEAN, win[a].mean}, {&B_VAR, win[a].var},
                    {&B_H, win[a].h},         {&B_KV, win[a].kv}};
                for (size_t k = 0; k < sizeof chk / sizeof chk[0]; k++) {
                    const double lim = bound_at(chk[k].b, done), r = chk[k].v / lim;
                    test_checks++;
                    if (!(chk[k].v <= lim)) {
                        test_failures++;
                        fprintf(stderr, "FAIL %s/%s after %llu tokens: %s %.3g > bound %.3g\n",
                                label, lib_names[a], (unsigned long long)done, chk[k].b->what,
                                chk[k].v, lim);
                    }
                    if (!(r <= worst_ratio[a])) worst_ratio[a] = r;
                }
                drift_max(&all[a], &win[a]);
                if (verbose) print_layers(st[a], tw);
                memset(&win[a], 0, sizeof win[a]);
            }
            fflush(stdout);
            while (next_check <= done) next_check += every;
        }
    }
    CHECK(f64_n_kv(tw) == st[0]->n_kv, "%s: n_kv %d vs twin %d", label, st[0]->n_kv,
          f64_n_kv(tw));
    for (int a = 0; a < N_LIB; a++) {
        printf("  worst     %-5s %10.3g %10.3g %10.3g %10.3g %10.3g (at most %.2f of the bound)\n",
               lib_names[a], all[a].logit, all[a].mean, all[a].var, all[a].h, all[a].kv,
               worst_ratio[a]);
    }
    printf("  twin statistics over the run: max |mean| %.4g, variances in [%.4g, %.4g], "
           "max |h| %.4g; cpu %.1f s (twin %.1f s)\n",
           res.max_mean64, res.min_var64, res.max_var64, res.max_h64,
           (double)(clock() - t0) / CLOCKS_PER_SEC, t_twin);
done:
    for (int a = 0; a < N_LIB; a++) mg_state_free(st[a]);
    f64_state_free(tw);
    f64_model_free(fm);
    free(lg);
    free(rows64);
    free(tok);
}

/* The twin against the PyTorch reference (float64, rounded to fp32): the golden case's
 * logits over its 29 tokens. It checks the twin itself, so that its drift numbers mean what
 * they say. */
static void twin_vs_golden(mg_model *m, const golden_case *gc)
{
    f64_model *fm = f64_model_new(m);
    CHECK(fm != NULL, "f64 twin of base: %s", mg_last_error());
    if (!fm) return;
    f64_state *tw = f64_state_new(fm);
    const int V = mg_model_n_vocab(m);
    double *lg = malloc(sizeof(double) * V), worst = 0.0;
    CHECK(tw && lg, "out of memory");
    for (int t = 0; tw && lg && t < gc->L; t++) {
        f64_eval_token(tw, gc->tokens[t], lg);
        for (int v = 0; v < V; v++) {
            double e = fabs(lg[v] - gc->logits[(size_t)t * V + v]);
            if (!(e <= worst)) worst = e;
        }
    }
    /* the expected values are float64 rounded to fp32: half an ulp of O(1) numbers */
    CHECK(worst <= 1e-6, "f64 twin vs the PyTorch reference (golden base): max |logit "
                         "difference| %.3g > 1e-6", worst);
    printf("float64 twin vs the PyTorch reference, golden base (%d tokens): max |logit "
           "difference| %.3g\n", gc->L, worst);
    free(lg);
    f64_state_free(tw);
    f64_model_free(fm);
}

static uint64_t parse_count(const char *what, const char *v)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || *end || end == v || x == 0 || x > (1ull << 40)) {
        fprintf(stderr, "test-soak: %s '%s' is not a positive token count\n", what, v);
        exit(2);
    }
    return (uint64_t)x;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    uint64_t n_tokens = 50000;
    const char *env = getenv("MG_SOAK_TOKENS");
    if (argc > 1) n_tokens = parse_count("argument", argv[1]);
    else if (env && *env) n_tokens = parse_count("MG_SOAK_TOKENS", env);
    uint64_t every = n_tokens >= 100000 ? 10000 : (n_tokens + 9) / 10;
    env = getenv("MG_SOAK_CHECK");
    if (env && *env) every = parse_count("MG_SOAK_CHECK", env);
    verbose = getenv("MG_SOAK_VERBOSE") && *getenv("MG_SOAK_VERBOSE");
    const char *which = getenv("MG_SOAK_MODELS");
    if (!which || !*which) which = "base,random";

    mg_model_params mp = mg_model_default_params();
    mp.n_threads = 1; /* the soak is about arithmetic; one thread keeps `make check` light */

    if (strstr(which, "base")) {
        golden_case gc;
        if (golden_open("base", &gc) != MG_OK) {
            CHECK(0, "cannot open golden case base: %s", mg_last_error());
        } else {
            mg_model *m = NULL;
            int rc = mg_model_load(gc.model_path, &mp, &m);
            CHECK(rc == MG_OK, "load %s: %s", gc.model_path, mg_last_error());
            if (rc == MG_OK) {
                twin_vs_golden(m, &gc);
                soak("golden base", m, n_tokens, every);
            }
            mg_model_free(m);
            golden_close(&gc);
        }
    }
    if (strstr(which, "random")) {
        const char *dir = getenv("TMPDIR");
        char path[1024];
        snprintf(path, sizeof path, "%s/mg-soak-model-XXXXXX", dir && *dir ? dir : "/tmp");
        int fd = mkstemp(path);
        CHECK(fd >= 0, "mkstemp: %s", strerror(errno));
        if (fd >= 0) {
            close(fd);
            tiny_opts o = tiny_heads4_opts();
            o.rescale_nffn = 1;
            o.seed = 777;
            mg_model *m = NULL;
            int rc = tiny_model_write(path, &o);
            CHECK(rc == MG_OK, "write %s: %s", path, mg_last_error());
            if (rc == MG_OK) {
                rc = mg_model_load(path, &mp, &m);
                CHECK(rc == MG_OK, "load %s: %s", path, mg_last_error());
            }
            unlink(path);
            if (rc == MG_OK) soak("random D=64 H=4 C=64", m, n_tokens, every);
            mg_model_free(m);
        }
    }
    return test_finish("test-soak");
}

/* test-grad - the trainer's loss, gradients and AdamW steps against the float64 PyTorch
 * reference (tests/golden/grad-*.gguf, made by tests/reference/make_grad_golden.py; see
 * tests/golden/README.md).
 *
 * For every case: a trainer from the golden model, one mg_trainer_accumulate of the golden
 * rows, then
 *   - the loss within LOSS_TOL (relative);
 *   - every gradient tensor: max|c - r| / max|r| <= GRAD_TOL, per tensor;
 *   - the trainer's trainable tensors are exactly the golden's grad.* tensors;
 * for both CEMA algorithms, with the scalar kernel table and the best one, and with 1 and 2
 * threads; the 2-thread loss and gradients must equal the 1-thread ones bit for bit.
 * Also: two accumulate calls sum the gradients, and their update reports the norm of the
 * averaged gradient. For the cases with an AdamW trajectory: mg_train_lr against the
 * golden schedule, then 10 mg_trainer_step calls (one golden batch each) against the
 * per-step loss and gradient norm (before clipping), and the final weights within
 * ADAMW_TOL * lr (absolute). Also: mg_train_lr at hand-computed points of every schedule,
 * and (two cases) the trainer's own finite differences through mg_trainer_weights /
 * mg_trainer_weights_changed / mg_trainer_eval against the golden gradients. Mutation
 * self-checks make sure the comparison can fail. Arguments: case names to run (default
 * all); MG_TEST_VERBOSE=1 prints the error of every tensor. */
#include "config.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "megalodon.h"
#include "test.h"
#include "train.h"

#define LOSS_TOL 1e-5   /* relative */
#define GRAD_TOL 1e-4   /* per tensor, relative to the tensor's largest golden element */
#define NORM_TOL 1e-5   /* gradient norm, relative */
#define ADAMW_TOL 1e-2  /* AdamW: final weights, absolute, in units of the peak lr */

static const char *const cases[] = {"base",  "base_short", "heads2_swiglu", "share_scale",
                                    "rescale_noaffine", "f16", "bf16", "base_long"};
#define N_CASES ((int)(sizeof cases / sizeof cases[0]))

static const char *golden_dir(void)
{
    const char *d = getenv("MG_GOLDEN_DIR");
    return d && *d ? d : "tests/golden";
}

/* The golden tensor `name` as F32 (n elements expected; 0: any). */
static const float *gtensor(const gguf_file *f, const char *name, size_t n, size_t *n_out)
{
    int64_t i = gguf_find_tensor(f, name);
    if (i < 0) return NULL;
    const gguf_tensor_info *t = gguf_tensor(f, i);
    if (t->type != GGML_TYPE_F32 || (n && t->n_elements != n)) return NULL;
    if (n_out) *n_out = (size_t)t->n_elements;
    return t->data;
}

static const int32_t *gids(const gguf_file *f, const char *name, size_t n)
{
    int64_t i = gguf_find_tensor(f, name);
    if (i < 0) return NULL;
    const gguf_tensor_info *t = gguf_tensor(f, i);
    if (t->type != GGML_TYPE_I32 || t->n_elements != n) return NULL;
    return t->data;
}

/* max|c - r| / max(max|r|, 1e-30), NaN-safe */
static double rel_err(const float *c, const float *r, size_t n, size_t *where)
{
    double m = 0, e = 0;
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        if (fabs(r[i]) > m) m = fabs(r[i]);
        double d = fabs((double)c[i] - r[i]);
        if (!(d <= e)) e = isnan(d) ? INFINITY : d, w = i;
    }
    if (where) *where = w;
    return e / (m > 1e-30 ? m : 1e-30);
}

/* summary */
static double worst_loss = 0, worst_grad = 0, worst_adamw = 0, worst_adamw_loss = 0,
              worst_norm = 0;
static char worst_grad_at[160] = "-", worst_adamw_at[160] = "-";

typedef struct {
    const char *isa; /* NULL: best */
    mg_cema_algo cema;
    int threads;
} config;

static const config configs[] = {
    {"scalar", MG_CEMA_SCAN, 1}, {"scalar", MG_CEMA_FFT, 1}, {NULL, MG_CEMA_SCAN, 1},
    {NULL, MG_CEMA_SCAN, 2},     {NULL, MG_CEMA_FFT, 1},     {NULL, MG_CEMA_FFT, 2},
};
#define N_CONFIGS ((int)(sizeof configs / sizeof configs[0]))

static void set_isa(const char *isa)
{
    if (isa)
        setenv("MEGALODON_ISA", isa, 1);
    else
        unsetenv("MEGALODON_ISA");
}

static int new_trainer(const mg_model *m, const config *c, const mg_train_params *base,
                       mg_trainer **tr, char *label, size_t label_size)
{
    mg_train_params tp = base ? *base : mg_train_default_params();
    tp.cema = c->cema;
    tp.n_threads = c->threads;
    set_isa(c->isa);
    int rc = mg_trainer_new(m, &tp, tr);
    set_isa(NULL);
    CHECK(rc == MG_OK, "mg_trainer_new: %s", mg_last_error());
    if (rc) return rc;
    snprintf(label, label_size, "%s %s %dt",
             mg_model_backend_name(mg_trainer_model(*tr)),
             c->cema == MG_CEMA_FFT ? "fft" : "scan", c->threads);
    return MG_OK;
}

/* Compare every trainable tensor's gradient with the golden; returns the worst error. */
static double compare_grads(const mg_trainer *tr, const gguf_file *f, const char *label,
                            double scale, int verbose)
{
    double worst = 0;
    const char *worst_name = "-";
    int n_t = mg_trainer_n_tensors(tr);
    CHECK(n_t > 0, "%s: no trainable tensors", label);
    for (int i = 0; i < n_t; i++) {
        size_t n = 0, ng = 0;
        const char *name = mg_trainer_tensor_name(tr, i, &n);
        char gname[160];
        snprintf(gname, sizeof gname, "grad.%s", name ? name : "?");
        const float *r = gtensor(f, gname, 0, &ng), *c = NULL;
        CHECK(r != NULL, "%s: trainable tensor %s has no golden gradient", label, name);
        if (!r) continue;
        CHECK(ng == n, "%s: %s: %zu elements, golden %zu", label, name, n, ng);
        size_t nc = 0;
        int rc = mg_trainer_grad(tr, name, &c, &nc);
        CHECK(rc == MG_OK && c && nc == n, "%s: mg_trainer_grad(%s)", label, name);
        if (rc || !c || nc != n || ng != n) continue;
        float *cs = malloc(sizeof(float) * n);
        for (size_t j = 0; j < n; j++) cs[j] = (float)(c[j] / scale);
        size_t at;
        double e = rel_err(cs, r, n, &at);
        CHECK(e <= GRAD_TOL, "%s: grad %s: relative error %.3g > %.0e at [%zu] (%.9g vs %.9g)",
              label, name, e, GRAD_TOL, at, cs[at], r[at]);
        if (verbose) printf("    %-28s %.2e\n", name, e);
        if (i == 0) { /* mutation: the largest element off by 3 tolerances must fail */
            size_t am = 0;
            for (size_t j = 0; j < n; j++) am = fabs(r[j]) > fabs(r[am]) ? j : am;
            cs[am] += (float)(3 * GRAD_TOL * fabs(r[am]));
            CHECK(rel_err(cs, r, n, NULL) > GRAD_TOL, "%s: mutated %s passes", label, name);
        }
        if (e > worst || isnan(e)) worst = e, worst_name = name;
        free(cs);
    }
    /* and every golden gradient belongs to a trainable tensor */
    for (int64_t i = 0; i < gguf_n_tensors(f); i++) {
        const char *gname = gguf_tensor(f, i)->name;
        if (strncmp(gname, "grad.", 5) != 0) continue;
        const float *c;
        size_t nc;
        CHECK(mg_trainer_grad(tr, gname + 5, &c, &nc) == MG_OK,
              "%s: golden gradient %s: not a trainable tensor of the trainer", label, gname);
    }
    if (worst > worst_grad) {
        worst_grad = worst;
        snprintf(worst_grad_at, sizeof worst_grad_at, "%s: %s", label, worst_name);
    }
    return worst;
}

/* A copy of all gradients (for the thread-count comparison). */
static float *copy_grads(const mg_trainer *tr, size_t *total)
{
    size_t n_all = 0;
    for (int i = 0; i < mg_trainer_n_tensors(tr); i++) {
        size_t n;
        mg_trainer_tensor_name(tr, i, &n);
        n_all += n;
    }
    float *buf = malloc(sizeof(float) * (n_all ? n_all : 1)), *p = buf;
    for (int i = 0; i < mg_trainer_n_tensors(tr); i++) {
        const float *g;
        size_t n;
        if (mg_trainer_grad(tr, mg_trainer_tensor_name(tr, i, NULL), &g, &n) == MG_OK) {
            memcpy(p, g, sizeof(float) * n);
            p += n;
        }
    }
    *total = (size_t)(p - buf);
    return buf;
}

static mg_lr_schedule schedule_of(const gguf_file *f)
{
    const char *s;
    uint64_t len;
    if (gguf_get_str(f, "adamw.schedule", &s, &len)) return (mg_lr_schedule)-1;
    if (len == 6 && !memcmp(s, "linear", 6)) return MG_LR_LINEAR;
    if (len == 6 && !memcmp(s, "cosine", 6)) return MG_LR_COSINE;
    if (len == 8 && !memcmp(s, "constant", 8)) return MG_LR_CONSTANT;
    return (mg_lr_schedule)-1;
}

static void test_adamw(const mg_model *m, const gguf_file *f, const char *cname)
{
    uint32_t n_steps, B, L, warmup, total;
    mg_train_params tp = mg_train_default_params();
    int rc = gguf_get_u32(f, "adamw.n_steps", &n_steps) || gguf_get_u32(f, "adamw.batch", &B) ||
             gguf_get_u32(f, "adamw.seq_len", &L) || gguf_get_u32(f, "adamw.warmup", &warmup) ||
             gguf_get_u32(f, "adamw.total_steps", &total) ||
             gguf_get_f32(f, "adamw.lr", &tp.lr) || gguf_get_f32(f, "adamw.beta1", &tp.beta1) ||
             gguf_get_f32(f, "adamw.beta2", &tp.beta2) || gguf_get_f32(f, "adamw.eps", &tp.eps) ||
             gguf_get_f32(f, "adamw.weight_decay", &tp.weight_decay) ||
             gguf_get_f32(f, "adamw.clip", &tp.clip) ||
             gguf_get_f32(f, "adamw.lr_init_ratio", &tp.lr_init_ratio) ||
             gguf_get_f32(f, "adamw.lr_end_ratio", &tp.lr_end_ratio);
    CHECK(rc == 0, "%s: AdamW keys: %s", cname, mg_last_error());
    if (rc) return;
    tp.warmup = warmup;
    tp.total_steps = total;
    tp.schedule = schedule_of(f);
    CHECK((int)tp.schedule >= 0, "%s: adamw.schedule", cname);
    const size_t row = (size_t)L + 1;
    const int32_t *ids = gids(f, "adamw.ids", row * B * n_steps);
    const float *gl = gtensor(f, "adamw.loss", n_steps, NULL);
    const float *gn = gtensor(f, "adamw.grad_norm", n_steps, NULL);
    const float *glr = gtensor(f, "adamw.lr_sched", n_steps, NULL);
    CHECK(ids && gl && gn && glr, "%s: AdamW tensors missing or of the wrong size", cname);
    if (!ids || !gl || !gn || !glr) return;

    for (uint32_t s = 0; s < n_steps; s++) {
        double lr = mg_train_lr(&tp, s);
        CHECK(fabs(lr - glr[s]) <= 1e-6 * glr[s], "%s: mg_train_lr(step %u) = %.9g, golden %.9g",
              cname, s, lr, glr[s]);
    }
    int n_clipped = 0;
    for (uint32_t s = 0; s < n_steps; s++) n_clipped += gn[s] > tp.clip;
    CHECK(n_clipped > 0 && n_clipped < (int)n_steps, "%s: the golden should clip some steps", cname);

    for (int k = 0; k < 2; k++) { /* the best ISA, 1 thread (2 threads: bitwise, above) */
        const config *c = &configs[k ? 4 : 2];
        mg_trainer *tr = NULL;
        char label[128];
        if (new_trainer(m, c, &tp, &tr, label, sizeof label)) continue;
        double wl = 0, wn = 0;
        int ok = 1;
        for (uint32_t s = 0; s < n_steps && ok; s++) {
            mg_train_stats st;
            memset(&st, 0, sizeof st);
            rc = mg_trainer_step(tr, ids + (size_t)s * B * row, (int)B, (int)L, &st);
            CHECK(rc == MG_OK, "%s %s: step %u: %s", cname, label, s, mg_last_error());
            if (rc) {
                ok = 0;
                break;
            }
            double el = fabs(st.loss - gl[s]) / fabs(gl[s]);
            double en = fabs(st.grad_norm - gn[s]) / fabs(gn[s]);
            CHECK(el <= LOSS_TOL, "%s %s: step %u: loss %.9g, golden %.9g", cname, label, s,
                  st.loss, gl[s]);
            CHECK(en <= NORM_TOL, "%s %s: step %u: grad norm %.9g, golden %.9g", cname, label, s,
                  st.grad_norm, gn[s]);
            CHECK(fabs(st.lr - glr[s]) <= 1e-6 * glr[s], "%s %s: step %u: lr %.9g, golden %.9g",
                  cname, label, s, st.lr, glr[s]);
            CHECK(st.step == (int64_t)s + 1 && st.n_tokens == (int64_t)B * L,
                  "%s %s: step %u: stats step %lld, tokens %lld", cname, label, s,
                  (long long)st.step, (long long)st.n_tokens);
            wl = fmax(wl, el);
            wn = fmax(wn, en);
        }
        CHECK(mg_trainer_step_count(tr) == (int64_t)n_steps, "%s %s: step count %lld", cname,
              label, (long long)mg_trainer_step_count(tr));
        double ww = 0;
        const char *wname = "-";
        for (int i = 0; ok && i < mg_trainer_n_tensors(tr); i++) {
            size_t n, ng = 0;
            const char *name = mg_trainer_tensor_name(tr, i, &n);
            char gname[160];
            snprintf(gname, sizeof gname, "adamw.final.%s", name);
            const float *r = gtensor(f, gname, n, &ng);
            float *w;
            size_t nw;
            CHECK(r != NULL, "%s: no golden final weights for %s", cname, name);
            if (!r || mg_trainer_weights(tr, name, &w, &nw) != MG_OK || nw != n) continue;
            double e = 0;
            size_t at = 0;
            for (size_t j = 0; j < n; j++) {
                double d = fabs((double)w[j] - r[j]);
                if (!(d <= e)) e = isnan(d) ? INFINITY : d, at = j;
            }
            e /= tp.lr;
            CHECK(e <= ADAMW_TOL, "%s %s: final %s[%zu] %.9g, golden %.9g (%.3g lr)", cname,
                  label, name, at, w[at], r[at], e);
            if (e > ww || isnan(e)) ww = e, wname = name;
        }
        printf("  %-17s %-24s adamw %u steps: loss %.1e, grad norm %.1e (rel), weights %.1e lr "
               "(%s)\n", cname, label, n_steps, wl, wn, ww, wname);
        worst_adamw_loss = fmax(worst_adamw_loss, wl);
        worst_norm = fmax(worst_norm, wn);
        if (ww > worst_adamw) {
            worst_adamw = ww;
            snprintf(worst_adamw_at, sizeof worst_adamw_at, "%s %s: %s", cname, label, wname);
        }
        mg_trainer_free(tr);
    }
}

/* The trainer's own finite differences (mg_trainer_weights + mg_trainer_weights_changed +
 * mg_trainer_eval, fp32 forward) at the largest golden gradient element of some tensors,
 * including the CEMA parameters that reach the model only through derived coefficients:
 * |fd - golden| <= FD_REL |golden| + FD_ABS (fp32 loss noise ~1e-7 over a step of 2h). */
#define FD_H 5e-3
#define FD_REL 3e-2
#define FD_ABS 2e-4
static void test_fd(const mg_model *m, const gguf_file *f, const int32_t *ids, int B, int L,
                    double gloss, const char *cname)
{
    static const char *const names[] = {
        "blk.0.cema.alpha", "blk.0.cema.delta", "blk.1.cema.theta", "blk.1.cema.gamma",
        "blk.0.cema.omega", "blk.0.tnorm.weight", "blk.1.attn_qk.gamma", "blk.0.attn_z.bias",
        "blk.1.ffn_down.weight", "output_norm.bias", "token_embd.weight"};
    mg_trainer *tr = NULL;
    char label[128];
    if (new_trainer(m, &configs[2], NULL, &tr, label, sizeof label)) return;
    double l0 = 0, worst = 0;
    int rc = mg_trainer_eval(tr, ids, B, L, &l0);
    CHECK(rc == MG_OK && fabs(l0 - gloss) <= LOSS_TOL * gloss, "%s: mg_trainer_eval loss %.9g, "
          "golden %.9g", cname, l0, gloss);
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        char gname[160];
        snprintf(gname, sizeof gname, "grad.%s", names[k]);
        size_t n = 0, nw = 0;
        const float *r = gtensor(f, gname, 0, &n);
        float *w = NULL;
        CHECK(r && mg_trainer_weights(tr, names[k], &w, &nw) == MG_OK && nw == n,
              "%s: tensor %s", cname, names[k]);
        if (!r || !w || nw != n) continue;
        size_t j = 0;
        for (size_t i = 0; i < n; i++) j = fabs(r[i]) > fabs(r[j]) ? i : j;
        const float w0 = w[j], wp = (float)(w0 + FD_H), wm = (float)(w0 - FD_H);
        double lp = 0, lm = 0;
        w[j] = wp;
        rc = mg_trainer_weights_changed(tr) || mg_trainer_eval(tr, ids, B, L, &lp);
        w[j] = wm;
        rc = rc || mg_trainer_weights_changed(tr) || mg_trainer_eval(tr, ids, B, L, &lm);
        w[j] = w0;
        rc = rc || mg_trainer_weights_changed(tr);
        CHECK(rc == 0, "%s: finite differences of %s: %s", cname, names[k], mg_last_error());
        double fd = (lp - lm) / ((double)wp - (double)wm), e = fabs(fd - r[j]);
        CHECK(e <= FD_REL * fabs(r[j]) + FD_ABS, "%s: %s[%zu]: finite difference %.6g, golden "
              "gradient %.6g", cname, names[k], j, fd, r[j]);
        worst = fmax(worst, e / fabs(r[j]));
    }
    double l1 = 0;
    rc = mg_trainer_eval(tr, ids, B, L, &l1);
    CHECK(rc == MG_OK && l1 == l0, "%s: loss %.17g after restoring the weights, before %.17g",
          cname, l1, l0);
    printf("  %-17s %-24s trainer finite differences vs golden: worst %.1e (relative)\n", cname,
           label, worst);
    mg_trainer_free(tr);
}

static void run_case(const char *cname, int verbose)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/grad-%s.gguf", golden_dir(), cname);
    gguf_file *f = NULL;
    int rc = gguf_open(path, &f);
    CHECK(rc == MG_OK, "cannot open %s: %s", path, mg_last_error());
    if (rc) return;
    const char *model_name;
    uint64_t len;
    uint32_t B, L;
    float gloss;
    rc = gguf_get_str(f, "grad.model", &model_name, &len) || gguf_get_u32(f, "train.batch", &B) ||
         gguf_get_u32(f, "train.seq_len", &L) || gguf_get_f32(f, "train.loss", &gloss);
    CHECK(rc == 0, "%s: keys: %s", path, mg_last_error());
    const int32_t *ids = rc ? NULL : gids(f, "ids", (size_t)B * (L + 1));
    CHECK(ids != NULL, "%s: bad or missing 'ids'", path);
    if (!ids) {
        gguf_close(f);
        return;
    }
    char mpath[1400];
    snprintf(mpath, sizeof mpath, "%s/%.*s", golden_dir(), (int)len, model_name);
    mg_model *m = NULL;
    rc = mg_model_load(mpath, NULL, &m);
    CHECK(rc == MG_OK, "cannot load %s: %s", mpath, mg_last_error());
    if (rc) {
        gguf_close(f);
        return;
    }

    float *g1 = NULL;
    size_t n1 = 0;
    double loss1 = 0;
    for (int ci = 0; ci < N_CONFIGS; ci++) {
        const config *c = &configs[ci];
        mg_trainer *tr = NULL;
        char label[128];
        if (new_trainer(m, c, NULL, &tr, label, sizeof label)) continue;
        double loss = 0;
        rc = mg_trainer_accumulate(tr, ids, (int)B, (int)L, &loss);
        CHECK(rc == MG_OK, "%s %s: mg_trainer_accumulate: %s", cname, label, mg_last_error());
        if (rc) {
            mg_trainer_free(tr);
            continue;
        }
        double el = fabs(loss - gloss) / fabs(gloss);
        CHECK(el <= LOSS_TOL, "%s %s: loss %.9g, golden %.9g", cname, label, loss, gloss);
        worst_loss = fmax(worst_loss, el);
        double eg = compare_grads(tr, f, label, 1.0, verbose && ci == 0);
        printf("  %-17s %-24s loss %.1e  grads %.1e\n", cname, label, el, eg);
        /* 2 threads after the same configuration with 1: bit for bit */
        if (c->threads == 1) {
            free(g1);
            g1 = copy_grads(tr, &n1);
            loss1 = loss;
        } else if (g1) {
            size_t n2;
            float *g2 = copy_grads(tr, &n2);
            CHECK(n2 == n1 && !memcmp(g1, g2, sizeof(float) * n1) && loss == loss1,
                  "%s %s: gradients or loss differ from 1 thread", cname, label);
            free(g2);
        }
        /* once per case: two accumulate calls sum; the update averages them */
        if (ci == 2) {
            rc = mg_trainer_accumulate(tr, ids, (int)B, (int)L, &loss);
            CHECK(rc == MG_OK, "%s: second accumulate", cname);
            char l2[160];
            snprintf(l2, sizeof l2, "%s (2 accumulates / 2)", label);
            compare_grads(tr, f, l2, 2.0, 0);
            double ss = 0;
            for (int64_t i = 0; i < gguf_n_tensors(f); i++) {
                const gguf_tensor_info *t = gguf_tensor(f, i);
                if (strncmp(t->name, "grad.", 5) != 0) continue;
                const float *r = t->data;
                for (uint64_t j = 0; j < t->n_elements; j++) ss += (double)r[j] * r[j];
            }
            mg_train_stats st;
            rc = mg_trainer_update(tr, &st);
            CHECK(rc == MG_OK, "%s: update: %s", cname, mg_last_error());
            CHECK(fabs(st.grad_norm - sqrt(ss)) <= NORM_TOL * sqrt(ss),
                  "%s: update after 2 accumulates: grad norm %.9g, golden %.9g", cname,
                  st.grad_norm, sqrt(ss));
            CHECK(fabs(st.loss - gloss) <= LOSS_TOL * gloss && st.n_tokens == 2 * (int64_t)B * L,
                  "%s: update after 2 accumulates: loss %.9g (golden %.9g), tokens %lld", cname,
                  st.loss, gloss, (long long)st.n_tokens);
            /* the accumulator is cleared by the update */
            const float *g;
            size_t n;
            double s0 = 0;
            for (int i = 0; i < mg_trainer_n_tensors(tr); i++)
                if (mg_trainer_grad(tr, mg_trainer_tensor_name(tr, i, NULL), &g, &n) == MG_OK)
                    for (size_t j = 0; j < n; j++) s0 += fabs(g[j]);
            CHECK(s0 == 0, "%s: gradients not cleared by mg_trainer_update", cname);
            /* an update with nothing accumulated is refused, and the step count stays */
            const int64_t steps = mg_trainer_step_count(tr);
            rc = mg_trainer_update(tr, &st);
            CHECK(rc == MG_ERR_INVALID_ARG && strstr(mg_last_error(), "no gradient accumulated") &&
                      mg_trainer_step_count(tr) == steps,
                  "%s: update with nothing accumulated: %d %s", cname, rc, mg_last_error());
        }
        mg_trainer_free(tr);
    }
    free(g1);
    if (!strcmp(cname, "base_short") || !strcmp(cname, "share_scale"))
        test_fd(m, f, ids, (int)B, (int)L, gloss, cname);
    if (gguf_find_key(f, "adamw.n_steps") >= 0) test_adamw(m, f, cname);
    mg_model_free(m);
    gguf_close(f);
}

/* mg_train_lr at hand-computed points of the three schedules: lr 1e-3, warmup 4 from ratio
 * 0.1, total 14, end ratio 0.01 (values relative to the float parameters, 1e-6). */
static void test_lr(void)
{
    mg_train_params p = mg_train_default_params();
    p.lr = 1e-3f;
    p.warmup = 4;
    p.total_steps = 14;
    p.lr_init_ratio = 0.1f;
    p.lr_end_ratio = 0.01f;
    static const struct { mg_lr_schedule sched; int64_t s; double lr; } pts[] = {
        {MG_LR_LINEAR, 0, 1e-4},    {MG_LR_LINEAR, 2, 5.5e-4},   {MG_LR_LINEAR, 4, 1e-3},
        {MG_LR_LINEAR, 9, 5.05e-4}, {MG_LR_LINEAR, 14, 1e-5},    {MG_LR_LINEAR, 100, 1e-5},
        {MG_LR_COSINE, 1, 3.25e-4}, {MG_LR_COSINE, 4, 1e-3},     {MG_LR_COSINE, 9, 5.05e-4},
        {MG_LR_COSINE, 14, 1e-5},   {MG_LR_COSINE, 50, 1e-5},    {MG_LR_CONSTANT, 0, 1e-4},
        {MG_LR_CONSTANT, 3, 7.75e-4}, {MG_LR_CONSTANT, 4, 1e-3}, {MG_LR_CONSTANT, 99, 1e-3},
    };
    for (size_t i = 0; i < sizeof pts / sizeof pts[0]; i++) {
        p.schedule = pts[i].sched;
        double lr = mg_train_lr(&p, pts[i].s);
        CHECK(fabs(lr - pts[i].lr) <= 1e-6 * pts[i].lr, "mg_train_lr(schedule %d, step %lld) = "
              "%.9g, expected %.9g", (int)pts[i].sched, (long long)pts[i].s, lr, pts[i].lr);
    }
    /* no warmup: the schedule starts at the peak */
    p.warmup = 0;
    p.schedule = MG_LR_LINEAR;
    CHECK(fabs(mg_train_lr(&p, 0) - 1e-3) <= 1e-9 && fabs(mg_train_lr(&p, 7) - 5.05e-4) <= 1e-9,
          "mg_train_lr without warmup: %.9g %.9g", mg_train_lr(&p, 0), mg_train_lr(&p, 7));
}

/* The comparison must be able to fail: one golden element moved by 3 tolerances. */
static void self_check(void)
{
    float r[6] = {0.1f, -0.3f, 0.2f, 0, 0.05f, -0.01f}, c[6];
    memcpy(c, r, sizeof c);
    CHECK(rel_err(c, r, 6, NULL) == 0, "rel_err of equal arrays");
    c[4] += (float)(3 * GRAD_TOL * 0.3);
    CHECK(rel_err(c, r, 6, NULL) > GRAD_TOL, "a perturbed gradient passes the comparison");
    c[4] = NAN;
    CHECK(!(rel_err(c, r, 6, NULL) <= GRAD_TOL), "a NaN gradient passes the comparison");
}

/* mg_trainer_new_random: the vocabulary file's checks */
static void test_new_random_vocab(void)
{
    mg_hparams hp;
    memset(&hp, 0, sizeof hp);
    hp.n_layer = 1, hp.n_embd = 8, hp.z_dim = 4, hp.value_dim = 8, hp.n_head = 1, hp.n_ff = 8;
    hp.cema_ndim = 2, hp.chunk_size = 4, hp.norm_groups = 2, hp.norm_affine = 1;
    char path[1024];
    mg_trainer *tr = NULL;
    snprintf(path, sizeof path, "%s/ppl-byte.gguf", golden_dir()); /* 258 tokens */
    hp.n_vocab = 100;
    int rc = mg_trainer_new_random(&hp, 1, path, NULL, &tr);
    CHECK(rc == MG_ERR_INVALID_ARG && !tr &&
              strstr(mg_last_error(), "vocab_size 100 is smaller than the 258 tokens"),
          "n_vocab below the vocabulary: %d %s", rc, mg_last_error());
    hp.n_vocab = 0; /* taken from the file */
    rc = mg_trainer_new_random(&hp, 1, path, NULL, &tr);
    CHECK(rc == MG_OK && tr && mg_model_n_vocab(mg_trainer_model(tr)) == 258,
          "n_vocab from the vocabulary file: %d %s", rc, mg_last_error());
    mg_trainer_free(tr);
    tr = NULL;
    snprintf(path, sizeof path, "%s/base.gguf", golden_dir()); /* no tokenizer */
    rc = mg_trainer_new_random(&hp, 1, path, NULL, &tr);
    CHECK(rc == MG_ERR_MODEL && !tr && strstr(mg_last_error(), "no tokenizer vocabulary"),
          "a vocabulary file without a tokenizer: %d %s", rc, mg_last_error());
}

int main(int argc, char **argv)
{
    int verbose = getenv("MG_TEST_VERBOSE") != NULL;
    self_check();
    test_lr();
    test_new_random_vocab();
    for (int i = 0; i < N_CASES; i++) {
        if (argc > 1) {
            int want = 0;
            for (int a = 1; a < argc; a++) want |= !strcmp(argv[a], cases[i]);
            if (!want) continue;
        }
        run_case(cases[i], verbose);
    }
    printf("test-grad: worst loss %.1e (tol %.0e), gradient %.1e (tol %.0e; %s), AdamW loss %.1e, "
           "grad norm %.1e (tol %.0e), final weights %.1e lr (tol %.0e; %s)\n",
           worst_loss, LOSS_TOL, worst_grad, GRAD_TOL, worst_grad_at, worst_adamw_loss,
           worst_norm, NORM_TOL, worst_adamw, ADAMW_TOL, worst_adamw_at);
    return test_finish("test-grad");
}

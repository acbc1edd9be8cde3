/* trainer.c - the training API of megalodon.h: parameters, gradients and AdamW moments in
 * flat buffers, the optimizer step, schedules, model files and checkpoints.
 *
 * The trainer's weights live in a GGUF image in memory (all floating tensors f32) from
 * which the model is loaded without copying, so the mg_model that the forward reads and the
 * file that a save writes are the same bytes. Gradients and moments are float arrays indexed
 * like the image's data section. After every update the derived quantities (CEMA
 * coefficients, q/k scales) are recomputed.
 *
 * Checkpoint = the model file's keys and tensors + `adam.m.NAME`, `adam.v.NAME` (f32) for
 * every trainable tensor + `train.*` keys (step, optimizer and schedule settings, the
 * caller's string) + `train.checksum`, a hash of all tensor data and the train.* values that
 * detects corruption. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "gguf.h"
#include "kernels.h"
#include "quant.h"
#include "train.h"

#define CKPT_VERSION 1
#define MG_PI 3.14159265358979323846

typedef struct {
    const char *name;  /* owned by the model's gguf_file */
    size_t off, n;     /* in floats from the start of the data section */
} ttensor;

struct mg_trainer {
    mg_train_params p;
    void *img;
    size_t img_size;
    mg_model *model;
    float *base;     /* start of the image's data section */
    size_t n_floats; /* floats from base to the end of the image */
    float *grad, *m, *v;
    ttensor *t;
    int n_t;
    mg_layer_tensors *wt, *gr;
    mg_train_head_grads hg;
    mg_train_act *act;
    int64_t step;
    int n_accum;
    double loss_accum;
    int64_t tok_accum;
    char *user_meta;
};

/* ---------------------------------------------------------------- params, schedule */

mg_train_params mg_train_default_params(void)
{
    mg_train_params p;
    memset(&p, 0, sizeof p);
    p.lr = 1e-3f;
    p.beta1 = 0.9f;
    p.beta2 = 0.98f;
    p.eps = 1e-8f;
    p.weight_decay = 0.1f;
    p.clip = 1.0f;
    p.warmup = 0;
    p.total_steps = 1000;
    p.schedule = MG_LR_LINEAR;
    p.lr_init_ratio = 1e-4f;
    p.lr_end_ratio = 0.01f;
    p.cema = MG_CEMA_AUTO;
    p.n_threads = 0;
    return p;
}

static int check_params(const mg_train_params *p)
{
    if (!(p->lr > 0) || !isfinite(p->lr))
        return mg_seterr(MG_ERR_INVALID_ARG, "learning rate %g must be > 0", p->lr);
    if (!(p->beta1 >= 0 && p->beta1 < 1) || !(p->beta2 >= 0 && p->beta2 < 1))
        return mg_seterr(MG_ERR_INVALID_ARG, "AdamW betas (%g, %g) must be in [0, 1)", p->beta1,
                         p->beta2);
    if (!(p->eps > 0)) return mg_seterr(MG_ERR_INVALID_ARG, "AdamW eps %g must be > 0", p->eps);
    if (!(p->weight_decay >= 0) || !isfinite(p->weight_decay))
        return mg_seterr(MG_ERR_INVALID_ARG, "weight decay %g must be >= 0", p->weight_decay);
    if (!isfinite(p->clip) || isnan(p->clip))
        return mg_seterr(MG_ERR_INVALID_ARG, "gradient clip %g is not a number", p->clip);
    if (p->warmup < 0 || p->total_steps < 1)
        return mg_seterr(MG_ERR_INVALID_ARG, "warmup %lld must be >= 0 and total steps %lld >= 1",
                         (long long)p->warmup, (long long)p->total_steps);
    if (p->schedule != MG_LR_LINEAR && p->schedule != MG_LR_COSINE &&
        p->schedule != MG_LR_CONSTANT)
        return mg_seterr(MG_ERR_INVALID_ARG, "unknown learning-rate schedule %d", (int)p->schedule);
    if (!(p->lr_init_ratio >= 0 && p->lr_init_ratio <= 1) ||
        !(p->lr_end_ratio >= 0 && p->lr_end_ratio <= 1))
        return mg_seterr(MG_ERR_INVALID_ARG, "lr ratios (init %g, end %g) must be in [0, 1]",
                         p->lr_init_ratio, p->lr_end_ratio);
    if (p->cema != MG_CEMA_AUTO && p->cema != MG_CEMA_FFT && p->cema != MG_CEMA_SCAN)
        return mg_seterr(MG_ERR_INVALID_ARG, "unknown CEMA algorithm %d", (int)p->cema);
    return MG_OK;
}

/* r(s) = init + (1-init) s/warmup during warmup; then, with progress p in [0,1]:
 * linear 1 - (1-end) p ; cosine end + (1-end)(1 + cos(pi p))/2 ; constant 1. */
double mg_train_lr(const mg_train_params *p, int64_t s)
{
    if (!p) return 0;
    double r;
    if (s < p->warmup) {
        r = p->lr_init_ratio + (1.0 - p->lr_init_ratio) * (double)s / (double)p->warmup;
    } else {
        const int64_t span = p->total_steps - p->warmup;
        double pr = span > 0 ? (double)(s - p->warmup) / (double)span : 1.0;
        if (pr > 1) pr = 1;
        if (pr < 0) pr = 0;
        if (p->schedule == MG_LR_LINEAR)
            r = 1.0 - (1.0 - p->lr_end_ratio) * pr;
        else if (p->schedule == MG_LR_COSINE)
            r = p->lr_end_ratio + (1.0 - p->lr_end_ratio) * 0.5 * (1.0 + cos(MG_PI * pr));
        else
            r = 1.0;
    }
    return p->lr * r;
}

/* ---------------------------------------------------------------- random init */

typedef struct {
    uint64_t s;
} rng;

static uint64_t rng_u64(rng *r) /* splitmix64 */
{
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double rng_unif(rng *r) { return ((rng_u64(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0); }
static double rng_normal(rng *r)
{
    return sqrt(-2.0 * log(rng_unif(r))) * cos(2.0 * MG_PI * rng_unif(r));
}
/* normal(0, std) truncated to [-cut, cut] by redrawing */
static double rng_trunc(rng *r, double std, double cut)
{
    for (;;) {
        double x = std * rng_normal(r);
        if (fabs(x) <= cut) return x;
    }
}

enum init_kind { I_ZERO, I_HE, I_EMB, I_NORMAL, I_OMEGA, I_GAMMA, I_THETA, I_CONST };

static int add_init(gguf_writer *w, rng *r, const char *name, enum init_kind kind, double a,
                    int nd, uint64_t n0, uint64_t n1, uint64_t n2)
{
    const uint64_t ne[3] = {n0, n1, n2};
    const size_t n = (size_t)(n0 * n1 * n2);
    float *d = calloc(n ? n : 1, sizeof(float));
    if (!d)
        return mg_seterr(MG_ERR_NOMEM, "out of memory for the initial values of '%s' (%zu "
                         "floats)", name, n);
    switch (kind) {
    case I_ZERO: break;
    case I_CONST:
        for (size_t i = 0; i < n; i++) d[i] = (float)a;
        break;
    case I_HE: /* kaiming_normal_(a=sqrt(5)): N(0, 1/(3 fan_in)), fan_in = ne[0] */
        for (size_t i = 0; i < n; i++) d[i] = (float)(rng_normal(r) / sqrt(3.0 * (double)n0));
        break;
    case I_EMB: /* trunc-normal std a, cut at 3 std */
        for (size_t i = 0; i < n; i++) d[i] = (float)rng_trunc(r, a, 3 * a);
        break;
    case I_NORMAL:
        for (size_t i = 0; i < n; i++) d[i] = (float)(a * rng_normal(r));
        break;
    case I_OMEGA: /* trunc-normal std 0.25 in [-1, 1] */
        for (size_t i = 0; i < n; i++) d[i] = (float)rng_trunc(r, 0.25, 1.0);
        break;
    case I_GAMMA: /* (D, N, 2): real N(0,1), imaginary 0 */
        for (size_t i = 0; i < n; i += 2) d[i] = (float)rng_normal(r);
        break;
    case I_THETA: { /* logit(f_k), f_k = exp(-k ln D / D), k = 1..D, randomly permuted */
        const size_t D = n;
        for (size_t k = 0; k < D; k++) {
            double f = exp(-(double)(k + 1) * log((double)D) / (double)D);
            d[k] = (float)log(f / (1.0 - f));
        }
        for (size_t k = D; k > 1; k--) { /* Fisher-Yates */
            size_t j = (size_t)(rng_u64(r) % k);
            float t = d[k - 1];
            d[k - 1] = d[j];
            d[j] = t;
        }
        break;
    }
    }
    int rc = gguf_add_tensor(w, name, GGML_TYPE_F32, (uint32_t)nd, ne, d);
    free(d);
    return rc;
}

static int add_tnorm_init(gguf_writer *w, rng *r, const char *prefix, uint64_t D, uint64_t G)
{
    char n[96];
    const uint64_t one = 1;
    const int64_t zero = 0;
    snprintf(n, sizeof n, "%s.weight", prefix);
    TRY(add_init(w, r, n, I_ZERO, 0, 1, D, 1, 1));
    snprintf(n, sizeof n, "%s.bias", prefix);
    TRY(add_init(w, r, n, I_ZERO, 0, 1, D, 1, 1));
    snprintf(n, sizeof n, "%s.prior_count", prefix);
    TRY(gguf_add_tensor(w, n, GGML_TYPE_I64, 1, &one, &zero));
    snprintf(n, sizeof n, "%s.prior_mean", prefix);
    TRY(add_init(w, r, n, I_ZERO, 0, 1, G, 1, 1));
    snprintf(n, sizeof n, "%s.prior_logv", prefix);
    return add_init(w, r, n, I_ZERO, 0, 1, G, 1, 1);
}

static int write_hparams(gguf_writer *w, const mg_hparams *hp)
{
    TRY(gguf_set_str(w, "general.architecture", "megalodon"));
    TRY(gguf_set_u32(w, "megalodon.block_count", (uint32_t)hp->n_layer));
    TRY(gguf_set_u32(w, "megalodon.embedding_length", (uint32_t)hp->n_embd));
    TRY(gguf_set_u32(w, "megalodon.z_dim", (uint32_t)hp->z_dim));
    TRY(gguf_set_u32(w, "megalodon.value_dim", (uint32_t)hp->value_dim));
    TRY(gguf_set_u32(w, "megalodon.head_count", (uint32_t)hp->n_head));
    TRY(gguf_set_u32(w, "megalodon.feed_forward_length", (uint32_t)hp->n_ff));
    TRY(gguf_set_u32(w, "megalodon.cema_ndim", (uint32_t)hp->cema_ndim));
    TRY(gguf_set_u32(w, "megalodon.chunk_size", (uint32_t)hp->chunk_size));
    TRY(gguf_set_u32(w, "megalodon.norm_groups", (uint32_t)hp->norm_groups));
    TRY(gguf_set_u32(w, "megalodon.vocab_size", (uint32_t)hp->n_vocab));
    TRY(gguf_set_u32(w, "megalodon.output_size", (uint32_t)hp->n_output));
    TRY(gguf_set_f32(w, "megalodon.norm_epsilon", hp->norm_eps));
    TRY(gguf_set_f32(w, "megalodon.rope_freq_base", hp->rope_base));
    TRY(gguf_set_bool(w, "megalodon.swiglu", hp->swiglu));
    TRY(gguf_set_bool(w, "megalodon.scale_emb", hp->scale_emb));
    TRY(gguf_set_bool(w, "megalodon.share_emb", hp->share_emb));
    TRY(gguf_set_bool(w, "megalodon.rescale_nffn", hp->rescale_nffn));
    return gguf_set_bool(w, "megalodon.norm_affine", hp->norm_affine);
}

/* Tensors of a new model with the official initialization (docs/model.md §12). */
static int write_random_tensors(gguf_writer *w, const mg_hparams *hp, uint64_t seed)
{
    rng r = {seed * 0x2545F4914F6CDD1Dull + 12345};
    const uint64_t D = hp->n_embd, Z = hp->z_dim, E = hp->value_dim, F = hp->n_ff,
                   N = hp->cema_ndim, V = hp->n_vocab, G = hp->norm_groups;
    const double es = 1.0 / sqrt((double)D);
    TRY(add_init(w, &r, "token_embd.weight", I_EMB, es, 2, D, V, 1));
    const uint64_t half = Z / hp->n_head / 2;
    float *fr = malloc(sizeof(float) * half);
    if (!fr)
        return mg_seterr(MG_ERR_NOMEM, "out of memory for the RoPE frequencies (%llu)",
                         (unsigned long long)half);
    for (uint64_t i = 0; i < half; i++)
        fr[i] = (float)(1.0 / pow((double)hp->rope_base, 2.0 * (double)i / (double)(2 * half)));
    int rc = gguf_add_tensor(w, "rope.freqs", GGML_TYPE_F32, 1, &half, fr);
    free(fr);
    TRY(rc);
    char n[96];
#define T(kind, a, nd, n0, n1, n2, ...)                                                    \
    do {                                                                                   \
        snprintf(n, sizeof n, __VA_ARGS__);                                                \
        TRY(add_init(w, &r, n, kind, a, nd, n0, n1, n2));                                  \
    } while (0)
    for (int il = 0; il < hp->n_layer; il++) {
        snprintf(n, sizeof n, "blk.%d.tnorm", il);
        TRY(add_tnorm_init(w, &r, n, D, G));
        T(I_NORMAL, 0.2, 3, 1, N, D, "blk.%d.cema.alpha", il);
        T(I_NORMAL, 0.2, 3, 1, N, D, "blk.%d.cema.delta", il);
        T(I_THETA, 0, 3, 1, 1, D, "blk.%d.cema.theta", il);
        T(I_GAMMA, 0, 3, 2, N, D, "blk.%d.cema.gamma", il);
        T(I_OMEGA, 0, 2, 1, D, 1, "blk.%d.cema.omega", il);
        if (hp->norm_affine) T(I_ZERO, 0, 1, D, 1, 1, "blk.%d.attn_norm.weight", il);
        T(I_HE, 0, 2, D, Z, 1, "blk.%d.attn_z.weight", il);
        T(I_ZERO, 0, 1, Z, 1, 1, "blk.%d.attn_z.bias", il);
        T(I_HE, 0, 2, D, E, 1, "blk.%d.attn_v.weight", il);
        T(I_ZERO, 0, 1, E, 1, 1, "blk.%d.attn_v.bias", il);
        T(I_HE, 0, 2, D, E, 1, "blk.%d.attn_r.weight", il);
        T(I_ZERO, 0, 1, E, 1, 1, "blk.%d.attn_r.bias", il);
        T(I_HE, 0, 2, D, D, 1, "blk.%d.attn_h1.weight", il);
        T(I_ZERO, 0, 1, D, 1, 1, "blk.%d.attn_h1.bias", il);
        T(I_HE, 0, 2, E, D, 1, "blk.%d.attn_h2.weight", il);
        T(I_ZERO, 0, 2, Z, 2, 1, "blk.%d.attn_qk.gamma", il);
        T(I_ZERO, 0, 2, Z, 2, 1, "blk.%d.attn_qk.beta", il);
        if (hp->norm_affine) {
            T(I_ZERO, 0, 1, D, 1, 1, "blk.%d.ffn_norm.weight", il);
            T(I_ZERO, 0, 1, D, 1, 1, "blk.%d.ffn_norm.bias", il);
        }
        T(I_HE, 0, 2, D, F, 1, "blk.%d.ffn_up.weight", il);
        if (hp->swiglu) T(I_HE, 0, 2, D, F, 1, "blk.%d.ffn_gate.weight", il);
        T(I_HE, 0, 2, F, D, 1, "blk.%d.ffn_down.weight", il);
        if (hp->rescale_nffn) T(I_CONST, 0.1 * pow(0.5, il), 1, D, 1, 1, "blk.%d.ffn_alpha", il);
    }
#undef T
    TRY(add_tnorm_init(w, &r, "output_norm", D, G));
    if (!hp->share_emb)
        TRY(add_init(w, &r, "output.weight", I_EMB, es, 2, D, (uint64_t)hp->n_output, 1));
    return MG_OK;
}

/* ---------------------------------------------------------------- image, trainer */

static int is_buffer(const char *name)
{
    return strcmp(name, "rope.freqs") == 0 || strstr(name, ".prior_mean") ||
           strstr(name, ".prior_logv");
}

/* Copy a tensor into the writer, floating types converted to f32. */
static int copy_tensor_f32(gguf_writer *w, const gguf_tensor_info *t)
{
    if (mg_type_is_quantized(t->type))
        return mg_seterr(MG_ERR_UNSUPPORTED, "tensor '%s' is quantized (%s): training needs "
                         "f32, f16 or bf16 weights (train the f32 model and quantize it "
                         "afterwards with megalodon-quantize)", t->name, gguf_type_name(t->type));
    if (t->type != GGML_TYPE_F16 && t->type != GGML_TYPE_BF16)
        return gguf_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data);
    float *d = malloc(sizeof(float) * (size_t)(t->n_elements ? t->n_elements : 1));
    if (!d)
        return mg_seterr(MG_ERR_NOMEM, "out of memory for the f32 copy of '%s' (%llu floats)",
                         t->name, (unsigned long long)t->n_elements);
    if (t->type == GGML_TYPE_BF16)
        mg_kernels_scalar.bf16_to_f32(t->data, d, (size_t)t->n_elements);
    else
        mg_kernels_scalar.f16_to_f32(t->data, d, (size_t)t->n_elements);
    int rc = gguf_add_tensor(w, t->name, GGML_TYPE_F32, t->n_dims, t->ne, d);
    free(d);
    return rc;
}

/* The trainer's model file image from a source file: every key except `train.*`, every
 * tensor except `adam.*`, floats as f32. */
static int writer_from_file(const gguf_file *f, gguf_writer *w)
{
    for (int64_t i = 0; i < gguf_n_kv(f); i++) {
        if (strncmp(gguf_key_name(f, i), "train.", 6) == 0) continue;
        TRY(gguf_copy_kv(w, f, i));
    }
    for (int64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor_info *t = gguf_tensor(f, i);
        if (strncmp(t->name, "adam.", 5) == 0) continue;
        TRY(copy_tensor_f32(w, t));
    }
    return MG_OK;
}

void mg_trainer_free(mg_trainer *tr)
{
    if (!tr) return;
    mg_train_act_free(tr->act);
    mg_model_free(tr->model);
    free(tr->img);
    free(tr->grad);
    free(tr->m);
    free(tr->v);
    free(tr->t);
    free(tr->wt);
    free(tr->gr);
    free(tr->user_meta);
    free(tr);
}

/* buf + the offset of the tensor `name` (NULL when absent) */
static float *at_name(mg_trainer *tr, float *buf, const char *name)
{
    for (int i = 0; i < tr->n_t; i++)
        if (strcmp(tr->t[i].name, name) == 0) return buf + tr->t[i].off;
    return NULL;
}

static float *at(mg_trainer *tr, float *buf, const char *fmt, int il)
{
    char name[96];
    snprintf(name, sizeof name, fmt, il);
    return at_name(tr, buf, name);
}

static void layer_ptrs(mg_trainer *tr, float *buf, int il, mg_layer_tensors *l)
{
    l->tnorm_w = at(tr, buf, "blk.%d.tnorm.weight", il);
    l->tnorm_b = at(tr, buf, "blk.%d.tnorm.bias", il);
    l->alpha = at(tr, buf, "blk.%d.cema.alpha", il);
    l->delta = at(tr, buf, "blk.%d.cema.delta", il);
    l->theta = at(tr, buf, "blk.%d.cema.theta", il);
    l->gamma = at(tr, buf, "blk.%d.cema.gamma", il);
    l->omega = at(tr, buf, "blk.%d.cema.omega", il);
    l->attn_norm_w = at(tr, buf, "blk.%d.attn_norm.weight", il);
    l->wz = at(tr, buf, "blk.%d.attn_z.weight", il);
    l->bz = at(tr, buf, "blk.%d.attn_z.bias", il);
    l->wv = at(tr, buf, "blk.%d.attn_v.weight", il);
    l->bv = at(tr, buf, "blk.%d.attn_v.bias", il);
    l->wr = at(tr, buf, "blk.%d.attn_r.weight", il);
    l->br = at(tr, buf, "blk.%d.attn_r.bias", il);
    l->wh1 = at(tr, buf, "blk.%d.attn_h1.weight", il);
    l->bh1 = at(tr, buf, "blk.%d.attn_h1.bias", il);
    l->wh2 = at(tr, buf, "blk.%d.attn_h2.weight", il);
    l->qk_gamma = at(tr, buf, "blk.%d.attn_qk.gamma", il);
    l->qk_beta = at(tr, buf, "blk.%d.attn_qk.beta", il);
    l->ffn_norm_w = at(tr, buf, "blk.%d.ffn_norm.weight", il);
    l->ffn_norm_b = at(tr, buf, "blk.%d.ffn_norm.bias", il);
    l->ffn_up = at(tr, buf, "blk.%d.ffn_up.weight", il);
    l->ffn_gate = at(tr, buf, "blk.%d.ffn_gate.weight", il);
    l->ffn_down = at(tr, buf, "blk.%d.ffn_down.weight", il);
    l->ffn_alpha = at(tr, buf, "blk.%d.ffn_alpha", il);
}

/* A trainer from a writer holding a complete model file (consumed). */
static int trainer_from_writer(gguf_writer *w, const mg_train_params *params, mg_trainer **out)
{
    *out = NULL;
    mg_train_params p = params ? *params : mg_train_default_params();
    mg_trainer *tr = NULL;
    int rc;
    TRY_GOTO(check_params(&p), fail);
    if (!(tr = calloc(1, sizeof *tr))) {
        rc = mg_seterr(MG_ERR_NOMEM, "out of memory for the trainer structure");
        goto fail;
    }
    tr->p = p;
    rc = gguf_write_memory(w, &tr->img, &tr->img_size);
    gguf_writer_free(w);
    w = NULL;
    TRY_GOTO(rc, fail);
    mg_model_params mp = mg_model_default_params();
    mp.use_mmap = 1;
    mp.n_threads = p.n_threads;
    TRY_GOTO(mg_model_load_memory(tr->img, tr->img_size, &mp, &tr->model), fail);
    const mg_model *m = tr->model;
    const gguf_file *f = m->file;
    mg_backend *be = m->be;
    if (!be->supports_op(be, MG_OP_TRAIN)) {
        rc = mg_seterr(MG_ERR_UNSUPPORTED, "the %s backend cannot train", be->name);
        goto fail;
    }
    /* the data section: from the lowest tensor address to the end of the image */
    const uint8_t *lo = (const uint8_t *)tr->img + tr->img_size;
    for (int64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor_info *t = gguf_tensor(f, i);
        if ((const uint8_t *)t->data < lo) lo = t->data;
    }
    tr->base = (float *)(uintptr_t)lo;
    tr->n_floats = (size_t)((const uint8_t *)tr->img + tr->img_size - lo) / sizeof(float);
    tr->t = calloc((size_t)gguf_n_tensors(f) + 1, sizeof *tr->t);
    tr->grad = calloc(tr->n_floats + 1, sizeof(float));
    tr->m = calloc(tr->n_floats + 1, sizeof(float));
    tr->v = calloc(tr->n_floats + 1, sizeof(float));
    tr->wt = calloc((size_t)m->hp.n_layer + 1, sizeof *tr->wt);
    tr->gr = calloc((size_t)m->hp.n_layer + 1, sizeof *tr->gr);
    tr->user_meta = calloc(1, 1);
    if (!tr->t || !tr->grad || !tr->m || !tr->v || !tr->wt || !tr->gr || !tr->user_meta) {
        rc = mg_seterr(MG_ERR_NOMEM, "out of memory for the gradients and optimizer moments "
                       "(3 x %zu floats) and the tensor tables", tr->n_floats);
        goto fail;
    }
    for (int64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor_info *t = gguf_tensor(f, i);
        if (t->type != GGML_TYPE_F32 || is_buffer(t->name)) continue;
        if (((uintptr_t)t->data - (uintptr_t)lo) % sizeof(float)) {
            rc = mg_seterr(MG_ERR_MODEL, "tensor '%s' is not aligned in the image", t->name);
            goto fail;
        }
        tr->t[tr->n_t].name = t->name;
        tr->t[tr->n_t].off = (size_t)((const uint8_t *)t->data - lo) / sizeof(float);
        tr->t[tr->n_t].n = (size_t)t->n_elements;
        tr->n_t++;
    }
    for (int il = 0; il < m->hp.n_layer; il++) {
        layer_ptrs(tr, tr->base, il, &tr->wt[il]);
        layer_ptrs(tr, tr->grad, il, &tr->gr[il]);
    }
    tr->hg.tok_embd = at_name(tr, tr->grad, "token_embd.weight");
    tr->hg.output = m->hp.share_emb ? tr->hg.tok_embd : at_name(tr, tr->grad, "output.weight");
    tr->hg.out_norm_w = at_name(tr, tr->grad, "output_norm.weight");
    tr->hg.out_norm_b = at_name(tr, tr->grad, "output_norm.bias");
    if (!tr->hg.tok_embd || !tr->hg.output || !tr->hg.out_norm_w || !tr->hg.out_norm_b) {
        rc = mg_seterr(MG_ERR_MODEL, "the model lacks a trainable embedding, head or final "
                       "norm");
        goto fail;
    }
    *out = tr;
    return MG_OK;
fail:
    gguf_writer_free(w);
    mg_trainer_free(tr);
    return rc;
}

int mg_trainer_new(const mg_model *init, const mg_train_params *params, mg_trainer **out)
{
    if (!out) return mg_seterr(MG_ERR_INVALID_ARG, "mg_trainer_new: out is NULL");
    *out = NULL;
    if (!init) return mg_seterr(MG_ERR_INVALID_ARG, "mg_trainer_new: NULL model");
    gguf_writer *w = gguf_writer_new();
    if (!w) return MG_ERR_NOMEM; /* gguf_writer_new set the message */
    int rc = writer_from_file(init->file, w);
    if (rc) {
        gguf_writer_free(w);
        return rc;
    }
    return trainer_from_writer(w, params, out);
}

int mg_vocab_file_size(const char *path, int32_t *n_vocab)
{
    if (!path || !n_vocab) return mg_seterr(MG_ERR_INVALID_ARG, "mg_vocab_file_size: NULL");
    gguf_file *f = NULL;
    TRY(gguf_open(path, &f)); /* its messages name the file */
    int rc = MG_OK;
    int64_t i = gguf_find_key(f, "tokenizer.ggml.tokens");
    if (i < 0 || gguf_kv_type(f, i) != GGUF_TYPE_ARRAY || gguf_arr_n(f, i) < 1 ||
        gguf_arr_n(f, i) > INT32_MAX)
        rc = mg_seterr(MG_ERR_MODEL, "%s: no tokenizer vocabulary (tokenizer.ggml.tokens)", path);
    else
        *n_vocab = (int32_t)gguf_arr_n(f, i);
    gguf_close(f);
    return rc;
}

int mg_trainer_new_random(const mg_hparams *hp_in, uint64_t seed, const char *vocab_path,
                          const mg_train_params *params, mg_trainer **out)
{
    if (!out) return mg_seterr(MG_ERR_INVALID_ARG, "mg_trainer_new_random: out is NULL");
    *out = NULL;
    if (!hp_in) return mg_seterr(MG_ERR_INVALID_ARG, "mg_trainer_new_random: NULL hparams");
    mg_hparams hp = *hp_in;
    if (hp.norm_eps == 0) hp.norm_eps = 1e-5f;
    if (hp.rope_base == 0) hp.rope_base = 10000.0f;
    gguf_file *vf = NULL;
    if (vocab_path) {
        int32_t nv = 0;
        TRY(mg_vocab_file_size(vocab_path, &nv));
        if (hp.n_vocab == 0) hp.n_vocab = nv;
        if (hp.n_vocab < nv)
            return mg_seterr(MG_ERR_INVALID_ARG, "vocab_size %d is smaller than the %d tokens of "
                             "%s", hp.n_vocab, nv, vocab_path);
        TRY(gguf_open(vocab_path, &vf));
    }
    if (hp.n_output == 0) hp.n_output = hp.n_vocab;
    gguf_writer *w = NULL;
    int rc;
    TRY_GOTO(mg_hparams_validate(&hp), fail);
    if (!(w = gguf_writer_new())) {
        rc = MG_ERR_NOMEM; /* gguf_writer_new set the message */
        goto fail;
    }
    TRY_GOTO(write_hparams(w, &hp), fail);
    TRY_GOTO(gguf_set_str(w, "general.name", "megalodon"), fail);
    for (int64_t i = 0; vf && i < gguf_n_kv(vf); i++)
        if (strncmp(gguf_key_name(vf, i), "tokenizer.", 10) == 0)
            TRY_GOTO(gguf_copy_kv(w, vf, i), fail);
    gguf_close(vf);
    vf = NULL;
    TRY_GOTO(write_random_tensors(w, &hp, seed), fail);
    return trainer_from_writer(w, params, out);
fail:
    gguf_close(vf);
    gguf_writer_free(w);
    return rc;
}

/* ---------------------------------------------------------------- steps */

const mg_model *mg_trainer_model(const mg_trainer *tr) { return tr ? tr->model : NULL; }
int64_t mg_trainer_step_count(const mg_trainer *tr) { return tr ? tr->step : 0; }
const mg_train_params *mg_trainer_params(const mg_trainer *tr) { return tr ? &tr->p : NULL; }
const char *mg_trainer_user_meta(const mg_trainer *tr) { return tr ? tr->user_meta : ""; }

int mg_trainer_set_params(mg_trainer *tr, const mg_train_params *params)
{
    if (!tr || !params) return mg_seterr(MG_ERR_INVALID_ARG, "mg_trainer_set_params: NULL");
    TRY(check_params(params));
    tr->p = *params;
    return mg_model_set_n_threads(tr->model, params->n_threads);
}

static int ensure_act(mg_trainer *tr, int B, int L)
{
    if (tr->act && tr->act->B == B && tr->act->L == L) return MG_OK;
    mg_train_act_free(tr->act);
    tr->act = NULL;
    return mg_train_act_new(&tr->model->hp, B, L, &tr->act);
}

static int pass(mg_trainer *tr, const int32_t *ids, int B, int L, int backward, double *loss)
{
    if (!tr || !ids || !loss) return mg_seterr(MG_ERR_INVALID_ARG, "trainer: NULL argument");
    TRY(ensure_act(tr, B, L));
    return mg_train_pass(tr->model, tr->p.cema, tr->act, ids, tr->wt, backward ? tr->gr : NULL,
                         &tr->hg, loss);
}

int mg_trainer_accumulate(mg_trainer *tr, const int32_t *ids, int B, int L, double *loss)
{
    double l = 0;
    TRY(pass(tr, ids, B, L, 1, &l));
    tr->n_accum++;
    tr->loss_accum += l;
    tr->tok_accum += (int64_t)B * L;
    *loss = l;
    return MG_OK;
}

int mg_trainer_eval(mg_trainer *tr, const int32_t *ids, int B, int L, double *loss)
{
    return pass(tr, ids, B, L, 0, loss);
}

static void clear_accum(mg_trainer *tr)
{
    memset(tr->grad, 0, sizeof(float) * tr->n_floats);
    tr->n_accum = 0;
    tr->loss_accum = 0;
    tr->tok_accum = 0;
}

/* g = accumulated / n_accum, clipped to norm <= clip (torch's clip_grad_norm_: scale by
 * clip / (norm + 1e-6) when norm > clip); then AdamW (torch.optim.AdamW):
 *   p -= lr wd p ;  m = b1 m + (1-b1) g ;  v = b2 v + (1-b2) g^2
 *   p -= lr (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)          t = step + 1 */
int mg_trainer_update(mg_trainer *tr, mg_train_stats *stats)
{
    if (!tr) return mg_seterr(MG_ERR_INVALID_ARG, "mg_trainer_update: NULL trainer");
    if (tr->n_accum == 0)
        return mg_seterr(MG_ERR_INVALID_ARG, "mg_trainer_update: no gradient accumulated");
    const double inv = 1.0 / tr->n_accum;
    double ss = 0;
    for (int i = 0; i < tr->n_t; i++) {
        const float *g = tr->grad + tr->t[i].off;
        for (size_t j = 0; j < tr->t[i].n; j++) ss += (double)g[j] * g[j];
    }
    const double norm = sqrt(ss) * inv, loss = tr->loss_accum * inv;
    if (!isfinite(norm) || !isfinite(loss)) {
        clear_accum(tr);
        return mg_seterr(MG_ERR_NUMERIC, "step %lld: %s is not finite (loss %g, gradient norm %g); "
                         "the weights are unchanged", (long long)tr->step + 1,
                         isfinite(loss) ? "the gradient" : "the loss", loss, norm);
    }
    double gs = inv;
    if (tr->p.clip > 0 && norm > tr->p.clip) gs *= tr->p.clip / (norm + 1e-6);
    const double lr = mg_train_lr(&tr->p, tr->step), wd = tr->p.weight_decay;
    const double b1 = tr->p.beta1, b2 = tr->p.beta2, eps = tr->p.eps;
    const double t = (double)(tr->step + 1);
    const double bc1 = 1.0 - pow(b1, t), bc2 = 1.0 - pow(b2, t);
    const double step_size = lr / bc1, sbc2 = sqrt(bc2);
    mg_backend *be = tr->model->be;
    if (!be->adamw) return mg_seterr(MG_ERR_UNSUPPORTED, "backend %s has no AdamW step", be->name);
    for (int i = 0; i < tr->n_t; i++) { /* elementwise: the same for any thread count */
        const size_t off = tr->t[i].off;
        TRY(be->adamw(be, tr->base + off, tr->grad + off, tr->m + off, tr->v + off, tr->t[i].n,
                      lr, wd, b1, b2, eps, gs, step_size, sbc2));
    }
    if (stats) {
        stats->step = tr->step + 1;
        stats->loss = loss;
        stats->grad_norm = norm;
        stats->lr = lr;
        stats->n_tokens = tr->tok_accum;
    }
    tr->step++;
    clear_accum(tr);
    return mg_model_refresh_derived(tr->model);
}

int mg_trainer_step(mg_trainer *tr, const int32_t *ids, int B, int L, mg_train_stats *stats)
{
    double loss;
    TRY(mg_trainer_accumulate(tr, ids, B, L, &loss));
    return mg_trainer_update(tr, stats);
}

/* ---------------------------------------------------------------- files */

/* 64-bit FNV-1a over all tensor bytes in file order: detects corrupted checkpoints. */
static uint64_t hash_bytes(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001B3ull;
    }
    return h;
}

/* The train.* values into the checksum too (a changed step or learning rate is corruption). */
static uint64_t hash_train_keys(uint64_t h, int64_t step, const mg_train_params *p,
                                const char *meta, size_t mlen)
{
    const uint32_t sched = (uint32_t)p->schedule, cema = (uint32_t)p->cema;
    h = hash_bytes(h, &step, sizeof step);
    h = hash_bytes(h, &p->lr, sizeof p->lr);
    h = hash_bytes(h, &p->beta1, sizeof p->beta1);
    h = hash_bytes(h, &p->beta2, sizeof p->beta2);
    h = hash_bytes(h, &p->eps, sizeof p->eps);
    h = hash_bytes(h, &p->weight_decay, sizeof p->weight_decay);
    h = hash_bytes(h, &p->clip, sizeof p->clip);
    h = hash_bytes(h, &p->warmup, sizeof p->warmup);
    h = hash_bytes(h, &p->total_steps, sizeof p->total_steps);
    h = hash_bytes(h, &sched, sizeof sched);
    h = hash_bytes(h, &p->lr_init_ratio, sizeof p->lr_init_ratio);
    h = hash_bytes(h, &p->lr_end_ratio, sizeof p->lr_end_ratio);
    h = hash_bytes(h, &cema, sizeof cema);
    return hash_bytes(h, meta, mlen);
}

static int image_writer(const mg_trainer *tr, int with_moments, uint64_t *hash,
                        gguf_writer **out)
{
    gguf_writer *w = gguf_writer_new();
    if (!w) return MG_ERR_NOMEM; /* gguf_writer_new set the message */
    const gguf_file *f = tr->model->file;
    int rc;
    uint64_t h = 0xCBF29CE484222325ull;
    for (int64_t i = 0; i < gguf_n_kv(f); i++) TRY_GOTO(gguf_copy_kv(w, f, i), fail);
    for (int64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor_info *t = gguf_tensor(f, i);
        TRY_GOTO(gguf_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data), fail);
        h = hash_bytes(h, t->data, (size_t)t->n_bytes);
    }
    char name[160];
    for (int i = 0; with_moments && i < tr->n_t; i++) {
        const uint64_t ne = tr->t[i].n;
        snprintf(name, sizeof name, "adam.m.%s", tr->t[i].name);
        TRY_GOTO(gguf_add_tensor(w, name, GGML_TYPE_F32, 1, &ne, tr->m + tr->t[i].off), fail);
        h = hash_bytes(h, tr->m + tr->t[i].off, sizeof(float) * tr->t[i].n);
        snprintf(name, sizeof name, "adam.v.%s", tr->t[i].name);
        TRY_GOTO(gguf_add_tensor(w, name, GGML_TYPE_F32, 1, &ne, tr->v + tr->t[i].off), fail);
        h = hash_bytes(h, tr->v + tr->t[i].off, sizeof(float) * tr->t[i].n);
    }
    *hash = h;
    *out = w;
    return MG_OK;
fail:
    gguf_writer_free(w);
    return rc;
}

int mg_trainer_save_model(const mg_trainer *tr, const char *path)
{
    if (!tr || !path) return mg_seterr(MG_ERR_INVALID_ARG, "mg_trainer_save_model: NULL");
    gguf_writer *w;
    uint64_t h;
    TRY(image_writer(tr, 0, &h, &w));
    int rc = gguf_write_file(w, path);
    gguf_writer_free(w);
    return rc;
}

int mg_trainer_save_checkpoint(const mg_trainer *tr, const char *path, const char *user_meta)
{
    if (!tr || !path) return mg_seterr(MG_ERR_INVALID_ARG, "mg_trainer_save_checkpoint: NULL");
    gguf_writer *w;
    uint64_t h;
    TRY(image_writer(tr, 1, &h, &w));
    const mg_train_params *p = &tr->p;
    const char *meta = user_meta ? user_meta : "";
    int rc;
    TRY_GOTO(gguf_set_u32(w, "train.version", CKPT_VERSION), done);
    TRY_GOTO(gguf_set_i64(w, "train.step", tr->step), done);
    TRY_GOTO(gguf_set_f32(w, "train.lr", p->lr), done);
    TRY_GOTO(gguf_set_f32(w, "train.beta1", p->beta1), done);
    TRY_GOTO(gguf_set_f32(w, "train.beta2", p->beta2), done);
    TRY_GOTO(gguf_set_f32(w, "train.eps", p->eps), done);
    TRY_GOTO(gguf_set_f32(w, "train.weight_decay", p->weight_decay), done);
    TRY_GOTO(gguf_set_f32(w, "train.clip", p->clip), done);
    TRY_GOTO(gguf_set_i64(w, "train.warmup", p->warmup), done);
    TRY_GOTO(gguf_set_i64(w, "train.total_steps", p->total_steps), done);
    TRY_GOTO(gguf_set_u32(w, "train.schedule", (uint32_t)p->schedule), done);
    TRY_GOTO(gguf_set_f32(w, "train.lr_init_ratio", p->lr_init_ratio), done);
    TRY_GOTO(gguf_set_f32(w, "train.lr_end_ratio", p->lr_end_ratio), done);
    TRY_GOTO(gguf_set_u32(w, "train.cema", (uint32_t)p->cema), done);
    TRY_GOTO(gguf_set_str(w, "train.user_meta", meta), done);
    h = hash_train_keys(h, tr->step, p, meta, strlen(meta));
    TRY_GOTO(gguf_set_i64(w, "train.checksum", (int64_t)h), done);
    rc = gguf_write_file(w, path);
done:
    gguf_writer_free(w);
    return rc;
}

static int get_i64(const gguf_file *f, const char *key, int64_t *v)
{
    int rc = gguf_get_i64(f, key, v);
    return rc ? mg_seterr(MG_ERR_STATE, "not a checkpoint: key '%s' is missing or not int64", key)
              : MG_OK;
}
static int get_f32(const gguf_file *f, const char *key, float *v)
{
    int rc = gguf_get_f32(f, key, v);
    return rc ? mg_seterr(MG_ERR_STATE, "not a checkpoint: key '%s' is missing or not a float", key)
              : MG_OK;
}
static int get_u32(const gguf_file *f, const char *key, uint32_t *v)
{
    int rc = gguf_get_u32(f, key, v);
    return rc ? mg_seterr(MG_ERR_STATE, "not a checkpoint: key '%s' is missing or not uint32", key)
              : MG_OK;
}

/* The train.* keys of a checkpoint (all required). */
static int read_train_keys(const gguf_file *f, int64_t *step, mg_train_params *sp,
                           const char **meta, uint64_t *mlen)
{
    uint32_t ver, sched, cema;
    *sp = mg_train_default_params();
    TRY(get_u32(f, "train.version", &ver));
    if (ver != CKPT_VERSION)
        return mg_seterr(MG_ERR_STATE, "checkpoint version %u is not supported (this library "
                         "reads version %d)", ver, CKPT_VERSION);
    TRY(get_i64(f, "train.step", step));
    TRY(get_f32(f, "train.lr", &sp->lr));
    TRY(get_f32(f, "train.beta1", &sp->beta1));
    TRY(get_f32(f, "train.beta2", &sp->beta2));
    TRY(get_f32(f, "train.eps", &sp->eps));
    TRY(get_f32(f, "train.weight_decay", &sp->weight_decay));
    TRY(get_f32(f, "train.clip", &sp->clip));
    TRY(get_i64(f, "train.warmup", &sp->warmup));
    TRY(get_i64(f, "train.total_steps", &sp->total_steps));
    TRY(get_u32(f, "train.schedule", &sched));
    TRY(get_f32(f, "train.lr_init_ratio", &sp->lr_init_ratio));
    TRY(get_f32(f, "train.lr_end_ratio", &sp->lr_end_ratio));
    TRY(get_u32(f, "train.cema", &cema));
    sp->schedule = (mg_lr_schedule)sched;
    sp->cema = (mg_cema_algo)cema;
    if (*step < 0) return mg_seterr(MG_ERR_STATE, "checkpoint step %lld is negative", (long long)*step);
    if (gguf_get_str(f, "train.user_meta", meta, mlen))
        return mg_seterr(MG_ERR_STATE, "not a checkpoint: key 'train.user_meta' is missing");
    return MG_OK;
}

int mg_checkpoint_checksum(const gguf_file *f, uint64_t *out)
{
    int64_t step;
    mg_train_params sp;
    const char *meta;
    uint64_t mlen;
    TRY(read_train_keys(f, &step, &sp, &meta, &mlen));
    /* all tensors in file order, then the train.* values */
    uint64_t h = 0xCBF29CE484222325ull;
    for (int64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor_info *t = gguf_tensor(f, i);
        h = hash_bytes(h, t->data, (size_t)t->n_bytes);
    }
    *out = hash_train_keys(h, step, &sp, meta, (size_t)mlen);
    return MG_OK;
}

static int load_checkpoint(gguf_file *f, const mg_train_params *params, mg_trainer **out)
{
    mg_train_params sp;
    int64_t step;
    const char *meta;
    uint64_t mlen, h;
    TRY(read_train_keys(f, &step, &sp, &meta, &mlen));
    int64_t ki = gguf_find_key(f, "train.checksum"), want = 0;
    if (ki < 0 || gguf_kv_type(f, ki) != GGUF_TYPE_INT64 || gguf_get_i64(f, "train.checksum", &want))
        return mg_seterr(MG_ERR_STATE, "not a checkpoint: key 'train.checksum' is missing");
    TRY(mg_checkpoint_checksum(f, &h));
    if (h != (uint64_t)want)
        return mg_seterr(MG_ERR_STATE, "checkpoint is corrupt: the checksum of its tensor data "
                         "and train.* keys does not match (%016llx, expected %016llx)",
                         (unsigned long long)h, (unsigned long long)(uint64_t)want);
    if (params) {
        sp = *params;
    } else {
        sp.n_threads = 0;
    }
    gguf_writer *w = gguf_writer_new();
    if (!w) return MG_ERR_NOMEM; /* gguf_writer_new set the message */
    int rc = writer_from_file(f, w);
    if (rc) {
        gguf_writer_free(w);
        return rc;
    }
    mg_trainer *tr;
    TRY(trainer_from_writer(w, &sp, &tr));
    char name[160];
    for (int i = 0; i < tr->n_t; i++) {
        for (int k = 0; k < 2; k++) {
            snprintf(name, sizeof name, "adam.%c.%s", k ? 'v' : 'm', tr->t[i].name);
            int64_t ti = gguf_find_tensor(f, name);
            const gguf_tensor_info *t = ti >= 0 ? gguf_tensor(f, ti) : NULL;
            if (!t || t->type != GGML_TYPE_F32 || t->n_elements != tr->t[i].n) {
                mg_trainer_free(tr);
                return mg_seterr(MG_ERR_STATE, "checkpoint: tensor '%s' is %s", name,
                                 t ? "of the wrong type or size" : "missing");
            }
            memcpy((k ? tr->v : tr->m) + tr->t[i].off, t->data, sizeof(float) * tr->t[i].n);
        }
    }
    tr->step = step;
    free(tr->user_meta);
    tr->user_meta = malloc((size_t)mlen + 1);
    if (!tr->user_meta) {
        mg_trainer_free(tr);
        return mg_seterr(MG_ERR_NOMEM, "out of memory for the checkpoint's user metadata (%llu "
                         "bytes)", (unsigned long long)mlen);
    }
    memcpy(tr->user_meta, meta, (size_t)mlen);
    tr->user_meta[mlen] = 0;
    *out = tr;
    return MG_OK;
}

int mg_trainer_load_checkpoint(const char *path, const mg_train_params *params, mg_trainer **out)
{
    if (!out) return mg_seterr(MG_ERR_INVALID_ARG, "mg_trainer_load_checkpoint: out is NULL");
    *out = NULL;
    if (!path) return mg_seterr(MG_ERR_INVALID_ARG, "mg_trainer_load_checkpoint: NULL path");
    gguf_file *f = NULL;
    TRY(gguf_open(path, &f)); /* its messages name the file */
    int rc = load_checkpoint(f, params, out);
    gguf_close(f);
    return rc ? mg_adderr_context(rc, "%s", path) : MG_OK;
}

/* ---------------------------------------------------------------- test accessors */

int mg_trainer_n_tensors(const mg_trainer *tr) { return tr ? tr->n_t : 0; }

const char *mg_trainer_tensor_name(const mg_trainer *tr, int i, size_t *n)
{
    if (!tr || i < 0 || i >= tr->n_t) return NULL;
    if (n) *n = tr->t[i].n;
    return tr->t[i].name;
}

static int find(const mg_trainer *tr, const char *name)
{
    for (int i = 0; tr && name && i < tr->n_t; i++)
        if (strcmp(tr->t[i].name, name) == 0) return i;
    return -1;
}

int mg_trainer_grad(const mg_trainer *tr, const char *name, const float **g, size_t *n)
{
    int i = find(tr, name);
    if (i < 0) return mg_seterr(MG_ERR_INVALID_ARG, "'%s' is not a trainable tensor", name ? name : "(null)");
    *g = tr->grad + tr->t[i].off;
    *n = tr->t[i].n;
    return MG_OK;
}

int mg_trainer_weights(mg_trainer *tr, const char *name, float **w, size_t *n)
{
    int i = find(tr, name);
    if (i < 0) return mg_seterr(MG_ERR_INVALID_ARG, "'%s' is not a trainable tensor", name ? name : "(null)");
    *w = tr->base + tr->t[i].off;
    *n = tr->t[i].n;
    return MG_OK;
}

int mg_trainer_weights_changed(mg_trainer *tr)
{
    if (!tr) return mg_seterr(MG_ERR_INVALID_ARG, "NULL trainer");
    return mg_model_refresh_derived(tr->model);
}

int mg_trainer_moments(const mg_trainer *tr, const char *name, const float **m, const float **v,
                       size_t *n)
{
    int i = find(tr, name);
    if (i < 0) return mg_seterr(MG_ERR_INVALID_ARG, "'%s' is not a trainable tensor", name ? name : "(null)");
    *m = tr->m + tr->t[i].off;
    *v = tr->v + tr->t[i].off;
    *n = tr->t[i].n;
    return MG_OK;
}

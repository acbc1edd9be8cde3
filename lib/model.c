/* model.c - load a Megalodon model from a GGUF file (docs/model-format.md) and check that
 * it is complete and consistent before anything computes with it. */
#include "config.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "kernels.h"
#include "model.h"
#include "quant.h"
#include "../opencl/backend-opencl.h"

#define MAX_DIM (1 << 24)   /* any single size above this is rejected as implausible */
#define MAX_LAYERS 4096

const char *mg_version(void) { return PACKAGE_VERSION; }

mg_model_params mg_model_default_params(void)
{
    mg_model_params p;
    memset(&p, 0, sizeof p);
    p.n_threads = 0;
    p.use_mmap = 1;
    p.backend = NULL; /* $MEGALODON_BACKEND, else "cpu" */
    p.device = -1;    /* $MEGALODON_OPENCL_DEVICE, else 0 */
    return p;
}

static int own(mg_model *m, void *ptr)
{
    if (m->n_owned == m->cap_owned) {
        size_t cap = m->cap_owned ? 2 * m->cap_owned : 64;
        void **o = realloc(m->owned, cap * sizeof *o);
        if (!o) {
            free(ptr);
            return mg_seterr(MG_ERR_NOMEM, "out of memory for the list of the model's own "
                             "buffers (%zu)", cap);
        }
        m->owned = o;
        m->cap_owned = cap;
    }
    m->owned[m->n_owned++] = ptr;
    return MG_OK;
}

/* ---------------------------------------------------------------- hyper-parameters */

/* A key that gguf.c could not read (it set the message, naming the key) makes the model
 * invalid: the status becomes MG_ERR_MODEL, the message stays. */
static int as_model_error(int rc)
{
    return rc ? mg_seterr(MG_ERR_MODEL, "%s", mg_last_error()) : MG_OK;
}

static int read_u32_key(const gguf_file *f, const char *key, int32_t *out)
{
    uint32_t v;
    TRY(as_model_error(gguf_get_u32(f, key, &v)));
    if (v == 0 || v > MAX_DIM)
        return mg_seterr(MG_ERR_MODEL, "hyper-parameter %s = %u is out of range [1, %d]", key,
                         v, MAX_DIM);
    *out = (int32_t)v;
    return MG_OK;
}

static int read_bool_key(const gguf_file *f, const char *key, int32_t *out, int dflt)
{
    int v = dflt;
    TRY(as_model_error(gguf_get_bool_opt(f, key, &v)));
    *out = v ? 1 : 0;
    return MG_OK;
}

static int read_hparams(const gguf_file *f, mg_hparams *hp)
{
    const char *arch;
    uint64_t len;
    TRY(as_model_error(gguf_get_str(f, "general.architecture", &arch, &len)));
    if (len != 9 || memcmp(arch, "megalodon", 9) != 0)
        return mg_seterr(MG_ERR_MODEL,
                         "wrong architecture '%.*s': this library runs 'megalodon' models",
                         (int)(len > 64 ? 64 : len), arch);
    memset(hp, 0, sizeof *hp);
    struct { const char *key; int32_t *dst; } req[] = {
        {"megalodon.block_count", &hp->n_layer},
        {"megalodon.embedding_length", &hp->n_embd},
        {"megalodon.z_dim", &hp->z_dim},
        {"megalodon.value_dim", &hp->value_dim},
        {"megalodon.head_count", &hp->n_head},
        {"megalodon.feed_forward_length", &hp->n_ff},
        {"megalodon.cema_ndim", &hp->cema_ndim},
        {"megalodon.chunk_size", &hp->chunk_size},
        {"megalodon.norm_groups", &hp->norm_groups},
        {"megalodon.vocab_size", &hp->n_vocab},
    };
    for (size_t i = 0; i < sizeof req / sizeof req[0]; i++)
        TRY(read_u32_key(f, req[i].key, req[i].dst));
    hp->n_output = hp->n_vocab;
    if (gguf_find_key(f, "megalodon.output_size") >= 0)
        TRY(read_u32_key(f, "megalodon.output_size", &hp->n_output));
    TRY(as_model_error(gguf_get_f32(f, "megalodon.norm_epsilon", &hp->norm_eps)));
    hp->rope_base = 10000.0f;
    TRY(as_model_error(gguf_get_f32_opt(f, "megalodon.rope_freq_base", &hp->rope_base)));
    TRY(read_bool_key(f, "megalodon.swiglu", &hp->swiglu, 0));
    TRY(read_bool_key(f, "megalodon.scale_emb", &hp->scale_emb, 0));
    TRY(read_bool_key(f, "megalodon.share_emb", &hp->share_emb, 0));
    TRY(read_bool_key(f, "megalodon.rescale_nffn", &hp->rescale_nffn, 0));
    TRY(read_bool_key(f, "megalodon.norm_affine", &hp->norm_affine, 1));

    return mg_hparams_validate(hp);
}

int mg_hparams_validate(const mg_hparams *hp)
{
    const struct { const char *name; int32_t v; } dims[] = {
        {"block_count", hp->n_layer},     {"embedding_length", hp->n_embd},
        {"z_dim", hp->z_dim},             {"value_dim", hp->value_dim},
        {"head_count", hp->n_head},       {"feed_forward_length", hp->n_ff},
        {"cema_ndim", hp->cema_ndim},     {"chunk_size", hp->chunk_size},
        {"norm_groups", hp->norm_groups}, {"vocab_size", hp->n_vocab},
        {"output_size", hp->n_output}};
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
        if (dims[i].v < 1 || dims[i].v > MAX_DIM)
            return mg_seterr(MG_ERR_MODEL, "hyper-parameter %s = %d is out of range [1, %d]",
                             dims[i].name, dims[i].v, MAX_DIM);
    if (hp->n_layer > MAX_LAYERS)
        return mg_seterr(MG_ERR_MODEL, "block_count %d exceeds %d", hp->n_layer, MAX_LAYERS);
    if (hp->z_dim % hp->n_head)
        return mg_seterr(MG_ERR_MODEL, "z_dim %d is not divisible by head_count %d", hp->z_dim,
                         hp->n_head);
    if ((hp->z_dim / hp->n_head) % 2)
        return mg_seterr(MG_ERR_MODEL, "per-head z dimension %d is odd (RoPE needs pairs)",
                         hp->z_dim / hp->n_head);
    if (hp->value_dim % hp->n_head)
        return mg_seterr(MG_ERR_MODEL, "value_dim %d is not divisible by head_count %d",
                         hp->value_dim, hp->n_head);
    if (hp->n_embd % hp->norm_groups)
        return mg_seterr(MG_ERR_MODEL, "embedding_length %d is not divisible by norm_groups %d",
                         hp->n_embd, hp->norm_groups);
    if (!(hp->norm_eps > 0.0f) || !isfinite(hp->norm_eps))
        return mg_seterr(MG_ERR_MODEL, "norm_epsilon %g must be positive and finite",
                         (double)hp->norm_eps);
    if (hp->share_emb && hp->n_output != hp->n_vocab)
        return mg_seterr(MG_ERR_MODEL, "share_emb needs output_size (%d) == vocab_size (%d)",
                         hp->n_output, hp->n_vocab);
    return MG_OK;
}

/* Parameters implied by the hyper-parameters (buffers excluded, a tied head counted once),
 * term by term as the tensors of docs/model-format.md. */
uint64_t mg_hparams_n_params(const mg_hparams *hp)
{
    const uint64_t D = hp->n_embd, Z = hp->z_dim, E = hp->value_dim, F = hp->n_ff,
                   N = hp->cema_ndim, V = hp->n_vocab, Vo = hp->n_output;
    uint64_t blk = 2 * D                          /* tnorm weight, bias */
                   + 4 * D * N + 2 * D            /* cema alpha, delta, gamma (2), theta, omega */
                   + (hp->norm_affine ? D : 0)    /* rmsnorm */
                   + Z * D + Z + 2 * (E * D + E)  /* wz, wv, wr */
                   + D * D + D + D * E            /* wh1, wh2 */
                   + 4 * Z                        /* gamma, beta (2, Z) */
                   + (hp->norm_affine ? 2 * D : 0) /* nffn norm */
                   + (hp->swiglu ? 3 : 2) * F * D /* fc1, fc2 [, fc3] */
                   + (hp->rescale_nffn ? D : 0);  /* nffn alpha */
    return blk * (uint64_t)hp->n_layer + 2 * D /* final norm */ + V * D +
           (hp->share_emb ? 0 : Vo * D);
}

/* ---------------------------------------------------------------- tensors */

static int n_dims_stripped(const uint64_t *ne, int nd)
{
    while (nd > 1 && ne[nd - 1] == 1) nd--;
    return nd;
}

/* Find tensor `name` and check that its GGUF dims are ne[0..nd). Missing and !required:
 * *out = NULL and MG_OK. */
static int find_tensor(const mg_model *m, int required, int nd, const uint64_t *ne,
                       const char *name, const gguf_tensor_info **out)
{
    *out = NULL;
    int64_t i = gguf_find_tensor(m->file, name);
    if (i < 0) {
        if (!required) return MG_OK;
        return mg_seterr(MG_ERR_MODEL, "missing tensor '%s'", name);
    }
    const gguf_tensor_info *t = gguf_tensor(m->file, i);
    int a = n_dims_stripped(t->ne, (int)t->n_dims), b = n_dims_stripped(ne, nd);
    int same = a == b;
    for (int d = 0; same && d < a; d++) same = t->ne[d] == ne[d];
    if (!same) {
        char got[96] = "", want[96] = "";
        for (int d = 0; d < (int)t->n_dims; d++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%llu", d ? ", " : "",
                     (unsigned long long)t->ne[d]);
        for (int d = 0; d < nd; d++)
            snprintf(want + strlen(want), sizeof want - strlen(want), "%s%llu", d ? ", " : "",
                     (unsigned long long)ne[d]);
        return mg_seterr(MG_ERR_MODEL, "tensor '%s' has shape [%s], expected [%s]", name, got,
                         want);
    }
    *out = t;
    return MG_OK;
}

/* Fetch a vector tensor (norm weights, biases, CEMA parameters, ...) as fp32 with GGUF dims
 * ne[0..nd), converting f16/bf16. Missing and !required: *out = NULL. */
static int get_f32(mg_model *m, const mg_model_params *mp, int required, const float **out,
                   int nd, const uint64_t *ne, const char *name)
{
    const gguf_tensor_info *t;
    *out = NULL;
    TRY(find_tensor(m, required, nd, ne, name, &t));
    if (!t) return MG_OK;
    size_t n = (size_t)t->n_elements;
    if (t->type == GGML_TYPE_F32 && mp->use_mmap && ((uintptr_t)t->data % sizeof(float)) == 0) {
        *out = t->data;
        return MG_OK;
    }
    if (t->type != GGML_TYPE_F32 && t->type != GGML_TYPE_F16 && t->type != GGML_TYPE_BF16)
        return mg_seterr(MG_ERR_MODEL, "tensor '%s' has type %s; expected f32, f16 or bf16 "
                         "(only the weight matrices may be quantized)", name,
                         gguf_type_name(t->type));
    float *buf = malloc(sizeof(float) * n);
    if (!buf)
        return mg_seterr(MG_ERR_NOMEM, "out of memory for the f32 copy of tensor '%s' (%zu "
                         "floats)", name, n);
    switch (t->type) {
    case GGML_TYPE_F32: memcpy(buf, t->data, sizeof(float) * n); break;
    case GGML_TYPE_F16: mg_kernels_scalar.f16_to_f32(t->data, buf, n); break;
    default: mg_kernels_scalar.bf16_to_f32(t->data, buf, n); break;
    }
    TRY(own(m, buf));
    *out = buf;
    return MG_OK;
}

/* Fetch a weight matrix of `rows` rows of `cols` (GGUF dims [cols, rows]) in its file type,
 * without conversion: pointing into the mapping when the file is mapped and the data is
 * aligned for its type, else a copy of its bytes. Missing and !required: w->data = NULL. */
static int get_weight(mg_model *m, const mg_model_params *mp, int required, mg_weight *w,
                      uint64_t cols, uint64_t rows, const char *name)
{
    const gguf_tensor_info *t;
    const uint64_t ne[2] = {cols, rows};
    memset(w, 0, sizeof *w);
    TRY(find_tensor(m, required, 2, ne, name, &t));
    if (!t) return MG_OK;
    switch (t->type) {
    case GGML_TYPE_F32: case GGML_TYPE_F16: case GGML_TYPE_BF16: case GGML_TYPE_Q8_0:
    case GGML_TYPE_Q4_0: case GGML_TYPE_Q4_K: case GGML_TYPE_Q6_K: break;
    default:
        return mg_seterr(MG_ERR_MODEL, "tensor '%s' has type %s; weight matrices may be f32, "
                         "f16, bf16, q8_0, q4_0, q4_k or q6_k", name, gguf_type_name(t->type));
    }
    const size_t row_bytes = mg_row_size(t->type, cols);
    if (row_bytes == 0 || row_bytes * rows != t->n_bytes)
        return mg_seterr(MG_ERR_MODEL, "tensor '%s': %llu rows of %llu values of type %s do not "
                         "make its %llu bytes", name, (unsigned long long)rows,
                         (unsigned long long)cols, gguf_type_name(t->type),
                         (unsigned long long)t->n_bytes);
    const size_t align = t->type == GGML_TYPE_F32 ? 4 : 2; /* blocks begin with a half */
    const void *data = t->data;
    if (!mp->use_mmap || (uintptr_t)data % align) {
        void *buf = malloc((size_t)t->n_bytes);
        if (!buf)
            return mg_seterr(MG_ERR_NOMEM, "out of memory for the copy of tensor '%s' (%llu "
                             "bytes)", name, (unsigned long long)t->n_bytes);
        memcpy(buf, t->data, (size_t)t->n_bytes);
        TRY(own(m, buf));
        data = buf;
    }
    w->data = data;
    w->type = t->type;
    w->rows = (int)rows;
    w->cols = (int)cols;
    w->row_bytes = row_bytes;
    return MG_OK;
}

void mg_weight_row(const mg_weight *w, int row, float *y)
{
    const char *src = (const char *)w->data + (size_t)row * w->row_bytes;
    if (w->type == GGML_TYPE_F32)
        memcpy(y, src, sizeof(float) * (size_t)w->cols);
    else
        mg_dequantize_row(w->type, src, y, (size_t)w->cols);
}

/* Shorthand: GGUF dims given as arguments, name as printf format. */
static int tensor(mg_model *m, const mg_model_params *mp, int required, const float **out,
                  int nd, uint64_t n0, uint64_t n1, uint64_t n2, const char *fmt, ...)
    MG_PRINTF(9, 10);
static int tensor(mg_model *m, const mg_model_params *mp, int required, const float **out,
                  int nd, uint64_t n0, uint64_t n1, uint64_t n2, const char *fmt, ...)
{
    char name[96];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    const uint64_t ne[3] = {n0, n1, n2};
    return get_f32(m, mp, required, out, nd, ne, name);
}

/* Shorthand for a weight matrix of `rows` x `cols`, name as printf format. */
static int weight(mg_model *m, const mg_model_params *mp, int required, mg_weight *w,
                  uint64_t cols, uint64_t rows, const char *fmt, ...) MG_PRINTF(7, 8);
static int weight(mg_model *m, const mg_model_params *mp, int required, mg_weight *w,
                  uint64_t cols, uint64_t rows, const char *fmt, ...)
{
    char name[96];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    return get_weight(m, mp, required, w, cols, rows, name);
}

static int load_tnorm(mg_model *m, const mg_model_params *mp, const char *prefix,
                      mg_tnorm_params *tn)
{
    const uint64_t D = m->hp.n_embd, G = m->hp.norm_groups;
    TRY(tensor(m, mp, 1, &tn->w, 1, D, 1, 1, "%s.weight", prefix));
    TRY(tensor(m, mp, 1, &tn->b, 1, D, 1, 1, "%s.bias", prefix));
    TRY(tensor(m, mp, 1, &tn->prior_mean, 1, G, 1, 1, "%s.prior_mean", prefix));
    TRY(tensor(m, mp, 1, &tn->prior_logv, 1, G, 1, 1, "%s.prior_logv", prefix));
    char name[96];
    snprintf(name, sizeof name, "%s.prior_count", prefix);
    int64_t i = gguf_find_tensor(m->file, name);
    if (i < 0) return mg_seterr(MG_ERR_MODEL, "missing tensor '%s'", name);
    const gguf_tensor_info *t = gguf_tensor(m->file, i);
    if (t->n_elements != 1 || (t->type != GGML_TYPE_I32 && t->type != GGML_TYPE_I64))
        return mg_seterr(MG_ERR_MODEL, "tensor '%s' must be one i32 or i64 value", name);
    int64_t c;
    if (t->type == GGML_TYPE_I32) {
        int32_t c32;
        memcpy(&c32, t->data, 4);
        c = c32;
    } else {
        memcpy(&c, t->data, 8);
    }
    if (c < 0) return mg_seterr(MG_ERR_MODEL, "tensor '%s' is negative (%lld)", name, (long long)c);
    tn->prior_count = c;
    return MG_OK;
}

static int load_layer(mg_model *m, const mg_model_params *mp, int il)
{
    const mg_hparams *hp = &m->hp;
    mg_layer *w = &m->layers[il];
    const uint64_t D = hp->n_embd, Z = hp->z_dim, E = hp->value_dim, F = hp->n_ff,
                   N = hp->cema_ndim;
    const int aff = hp->norm_affine;
    char prefix[32];
    snprintf(prefix, sizeof prefix, "blk.%d.tnorm", il);
    TRY(load_tnorm(m, mp, prefix, &w->tnorm));

    const float *alpha, *delta, *theta, *gamma, *omega, *qk_gamma;
    TRY(tensor(m, mp, 1, &alpha, 3, 1, N, D, "blk.%d.cema.alpha", il));
    TRY(tensor(m, mp, 1, &delta, 3, 1, N, D, "blk.%d.cema.delta", il));
    TRY(tensor(m, mp, 1, &theta, 3, 1, 1, D, "blk.%d.cema.theta", il));
    TRY(tensor(m, mp, 1, &gamma, 3, 2, N, D, "blk.%d.cema.gamma", il));
    TRY(tensor(m, mp, 1, &omega, 2, 1, D, 1, "blk.%d.cema.omega", il));
    TRY(tensor(m, mp, aff, &w->attn_norm_w, 1, D, 1, 1, "blk.%d.attn_norm.weight", il));
    TRY(weight(m, mp, 1, &w->wz, D, Z, "blk.%d.attn_z.weight", il));
    TRY(tensor(m, mp, 1, &w->bz, 1, Z, 1, 1, "blk.%d.attn_z.bias", il));
    TRY(weight(m, mp, 1, &w->wv, D, E, "blk.%d.attn_v.weight", il));
    TRY(tensor(m, mp, 1, &w->bv, 1, E, 1, 1, "blk.%d.attn_v.bias", il));
    TRY(weight(m, mp, 1, &w->wr, D, E, "blk.%d.attn_r.weight", il));
    TRY(tensor(m, mp, 1, &w->br, 1, E, 1, 1, "blk.%d.attn_r.bias", il));
    TRY(weight(m, mp, 1, &w->wh1, D, D, "blk.%d.attn_h1.weight", il));
    TRY(tensor(m, mp, 1, &w->bh1, 1, D, 1, 1, "blk.%d.attn_h1.bias", il));
    TRY(weight(m, mp, 1, &w->wh2, E, D, "blk.%d.attn_h2.weight", il));
    TRY(tensor(m, mp, 1, &qk_gamma, 2, Z, 2, 1, "blk.%d.attn_qk.gamma", il));
    TRY(tensor(m, mp, 1, &w->qk_shift, 2, Z, 2, 1, "blk.%d.attn_qk.beta", il));
    TRY(tensor(m, mp, aff, &w->ffn_norm_w, 1, D, 1, 1, "blk.%d.ffn_norm.weight", il));
    TRY(tensor(m, mp, aff, &w->ffn_norm_b, 1, D, 1, 1, "blk.%d.ffn_norm.bias", il));
    TRY(weight(m, mp, 1, &w->ffn_up, D, F, "blk.%d.ffn_up.weight", il));
    TRY(weight(m, mp, hp->swiglu, &w->ffn_gate, D, F, "blk.%d.ffn_gate.weight", il));
    TRY(weight(m, mp, 1, &w->ffn_down, F, D, "blk.%d.ffn_down.weight", il));
    TRY(tensor(m, mp, hp->rescale_nffn, &w->ffn_alpha, 1, D, 1, 1, "blk.%d.ffn_alpha", il));
    /* options that are off: their tensors, if present, are ignored */
    if (!aff) w->attn_norm_w = w->ffn_norm_w = w->ffn_norm_b = NULL;
    if (!hp->swiglu) memset(&w->ffn_gate, 0, sizeof w->ffn_gate);
    if (!hp->rescale_nffn) w->ffn_alpha = NULL;

    TRY(mg_cema_coeffs_init(&w->cema, (int)D, (int)N, alpha, delta, theta, gamma, omega));

    /* q = z (1 + gamma_0)/sqrt(dz) + beta_0 ; k = z (1 + gamma_1)/sqrt(dz) + beta_1 */
    w->qk_scale = malloc(sizeof(float) * 2 * Z);
    if (!w->qk_scale)
        return mg_seterr(MG_ERR_NOMEM, "out of memory for the q/k scales of layer %d (2 x %llu)",
                         il, (unsigned long long)Z);
    const float rs = 1.0f / sqrtf((float)(Z / hp->n_head));
    for (uint64_t j = 0; j < 2 * Z; j++) w->qk_scale[j] = (1.0f + qk_gamma[j]) * rs;
    return MG_OK;
}

/* The f32 data of tensor `name` in the model's file (training images are all f32). */
static const float *f32_of(const mg_model *m, const char *fmt, int il)
{
    char name[96];
    snprintf(name, sizeof name, fmt, il);
    int64_t i = gguf_find_tensor(m->file, name);
    if (i < 0) return NULL;
    const gguf_tensor_info *t = gguf_tensor(m->file, i);
    return t->type == GGML_TYPE_F32 ? (const float *)t->data : NULL;
}

int mg_model_refresh_derived(mg_model *m)
{
    const mg_hparams *hp = &m->hp;
    const int Z = hp->z_dim;
    const float rs = 1.0f / sqrtf((float)(Z / hp->n_head));
    for (int il = 0; il < hp->n_layer; il++) {
        mg_layer *w = &m->layers[il];
        const float *alpha = f32_of(m, "blk.%d.cema.alpha", il),
                    *delta = f32_of(m, "blk.%d.cema.delta", il),
                    *theta = f32_of(m, "blk.%d.cema.theta", il),
                    *gamma = f32_of(m, "blk.%d.cema.gamma", il),
                    *omega = f32_of(m, "blk.%d.cema.omega", il),
                    *qk_gamma = f32_of(m, "blk.%d.attn_qk.gamma", il);
        if (!alpha || !delta || !theta || !gamma || !omega || !qk_gamma)
            return mg_seterr(MG_ERR_MODEL, "layer %d: CEMA or q/k parameters are not f32 in "
                             "the model image", il);
        mg_cema_coeffs_compute(&w->cema, alpha, delta, theta, gamma, omega);
        for (int j = 0; j < 2 * Z; j++) w->qk_scale[j] = (1.0f + qk_gamma[j]) * rs;
    }
    return MG_OK;
}

static void count_params(mg_model *m)
{
    uint64_t n = 0;
    for (int64_t i = 0; i < gguf_n_tensors(m->file); i++) {
        const gguf_tensor_info *t = gguf_tensor(m->file, i);
        const char *s = t->name;
        if (strstr(s, ".prior_") || strcmp(s, "rope.freqs") == 0) continue; /* buffers */
        if (m->hp.share_emb && strcmp(s, "output.weight") == 0) continue;
        n += t->n_elements;
    }
    m->n_params = n;
}

void mg_model_free(mg_model *m)
{
    if (!m) return;
    if (m->layers) {
        for (int il = 0; il < m->hp.n_layer; il++) {
            mg_cema_coeffs_free(&m->layers[il].cema);
            free(m->layers[il].qk_scale);
        }
        free(m->layers);
    }
    for (size_t i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    if (m->be) m->be->free(m->be);
    mg_tokenizer_free(m->tok);
    gguf_close(m->file);
    free(m);
}

/* The backend named by mp->backend (NULL: $MEGALODON_BACKEND, else "cpu"). */
static int new_backend(const mg_model_params *mp, mg_backend **be)
{
    const char *name = mp->backend;
    const char *env = getenv("MEGALODON_BACKEND");
    if (!name || !*name) name = env && *env ? env : "cpu";
    if (strcmp(name, "cpu") == 0) return mg_backend_cpu_new(mp->n_threads, mp->isa, be);
    if (strcmp(name, "opencl") == 0) return mg_backend_opencl_new(mp->device, be);
    return mg_seterr(MG_ERR_INVALID_ARG, "unknown backend '%s'%s (expected cpu or opencl)", name,
                     mp->backend && *mp->backend ? "" : " in MEGALODON_BACKEND");
}

int mg_backend_devices(char *buf, size_t size) { return mg_opencl_list_devices(buf, size); }

static int load(mg_model *m, const mg_model_params *mp)
{
    mg_hparams *hp = &m->hp;
    TRY(read_hparams(m->file, hp));
    const uint64_t D = hp->n_embd, V = hp->n_vocab;
    TRY(weight(m, mp, 1, &m->tok_embd, D, V, "token_embd.weight"));
    TRY(tensor(m, mp, 1, &m->rope_freqs, 1, (uint64_t)hp->z_dim / hp->n_head / 2, 1, 1,
               "rope.freqs"));
    m->layers = calloc((size_t)hp->n_layer, sizeof *m->layers);
    if (!m->layers)
        return mg_seterr(MG_ERR_NOMEM, "out of memory for the weight tables of %d layers",
                         hp->n_layer);
    for (int il = 0; il < hp->n_layer; il++) TRY(load_layer(m, mp, il));
    TRY(load_tnorm(m, mp, "output_norm", &m->out_norm));
    if (hp->share_emb)
        m->output = m->tok_embd;
    else
        TRY(weight(m, mp, 1, &m->output, D, (uint64_t)hp->n_output, "output.weight"));
    count_params(m);
    TRY(mg_tokenizer_load(m->file, hp->n_vocab, &m->tok));
    return new_backend(mp, &m->be);
}

/* The two loaders: from the file at `path`, or (path NULL) from the image buf[0..size). */
static int load_from(const char *path, const void *buf, size_t size,
                     const mg_model_params *params, mg_model **out)
{
    mg_model_params mp = params ? *params : mg_model_default_params();
    mg_model *m = calloc(1, sizeof *m);
    if (!m)
        return path ? mg_seterr(MG_ERR_NOMEM, "%s: out of memory for the model", path)
                    : mg_seterr(MG_ERR_NOMEM, "out of memory for the model");
    int rc = path ? gguf_open(path, &m->file) : gguf_open_memory(buf, size, &m->file);
    if (!rc) rc = load(m, &mp);
    if (rc) {
        mg_model_free(m);
        return path ? mg_adderr_context(rc, "%s", path)
                    : mg_adderr_context(rc, "in-memory model of %zu bytes", size);
    }
    *out = m;
    return MG_OK;
}

int mg_model_load(const char *path, const mg_model_params *params, mg_model **out)
{
    if (!out) return mg_seterr(MG_ERR_INVALID_ARG, "mg_model_load: out is NULL");
    *out = NULL;
    if (!path) return mg_seterr(MG_ERR_INVALID_ARG, "mg_model_load: path is NULL");
    return load_from(path, NULL, 0, params, out);
}

int mg_model_load_memory(const void *buf, size_t size, const mg_model_params *params,
                         mg_model **out)
{
    if (!out) return mg_seterr(MG_ERR_INVALID_ARG, "mg_model_load_memory: out is NULL");
    *out = NULL;
    if (!buf && size)
        return mg_seterr(MG_ERR_INVALID_ARG, "mg_model_load_memory: NULL buffer of %zu bytes",
                         size);
    return load_from(NULL, buf, size, params, out);
}

const mg_hparams *mg_model_hparams(const mg_model *m) { return m ? &m->hp : NULL; }
int32_t mg_model_n_vocab(const mg_model *m) { return m ? m->hp.n_output : 0; }
uint64_t mg_model_n_params(const mg_model *m) { return m ? m->n_params : 0; }
int64_t mg_model_n_tensors(const mg_model *m) { return m ? gguf_n_tensors(m->file) : 0; }

int mg_model_tensor_info(const mg_model *m, int64_t i, mg_tensor_info *out)
{
    if (!m || !out || i < 0 || i >= gguf_n_tensors(m->file))
        return mg_seterr(MG_ERR_INVALID_ARG, "mg_model_tensor_info: no tensor #%lld", (long long)i);
    const gguf_tensor_info *t = gguf_tensor(m->file, i);
    memset(out, 0, sizeof *out);
    out->name = t->name;
    out->type_name = gguf_type_name(t->type);
    out->n_dims = (int)t->n_dims;
    for (int d = 0; d < 4; d++) out->ne[d] = d < (int)t->n_dims ? (int64_t)t->ne[d] : 1;
    out->n_bytes = t->n_bytes;
    return MG_OK;
}

const char *mg_model_meta_str(const mg_model *m, const char *key)
{
    const char *v;
    uint64_t len;
    if (!m || !key || gguf_find_key(m->file, key) < 0) return NULL;
    return gguf_get_str(m->file, key, &v, &len) == MG_OK ? v : NULL; /* stored NUL-terminated */
}

const char *mg_model_backend_name(const mg_model *m) { return m ? m->be->name : ""; }
const char *mg_isa_available(void) { return mg_kernels_available(); }

int mg_model_set_n_threads(mg_model *m, int n_threads)
{
    if (!m) return mg_seterr(MG_ERR_INVALID_ARG, "mg_model_set_n_threads: NULL model");
    mg_backend_set_threads(m->be, n_threads);
    return MG_OK;
}

const char *mg_cema_choice(const mg_model *m, mg_cema_algo algo, int n_tokens)
{
    if (!m || n_tokens < 1 || m->hp.n_layer < 1) {
        mg_seterr(MG_ERR_INVALID_ARG, "mg_cema_choice: NULL model or n_tokens < 1");
        return NULL;
    }
    return m->be->cema_choice(m->be, algo, n_tokens, &m->layers[0].cema);
}

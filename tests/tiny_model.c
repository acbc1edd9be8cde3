/* tiny_model.c - random models: small ones for the example and the bad-input tests, and
 * the official configurations (up to mega7.3B) in f32 or in a quantization recipe's types.
 *
 * Every random value comes from one xorshift32 stream, tensor after tensor in file order and
 * row after row, so that the values do not depend on the types the file stores. A tensor is
 * made when the GGUF writer asks for its bytes (a lazy tensor): its rows are generated and
 * converted in parallel, each row starting from the stream's state at that row, which a
 * jump-ahead gives without stepping through the values before it. */
#include "config.h"

#include "tiny_model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "gguf.h"
#include "megalodon.h"
#include "quant.h"

#ifdef _OPENMP
#include <omp.h>
#endif

static void set_sizes(tiny_opts *o, const tiny_sizes *s)
{
    o->n_layer = s->n_layer;
    o->n_embd = s->n_embd;
    o->z_dim = s->z_dim;
    o->value_dim = s->value_dim;
    o->n_head = s->n_head;
    o->n_ff = s->n_ff;
    o->cema_ndim = s->cema_ndim;
    o->chunk_size = s->chunk_size;
    o->norm_groups = s->norm_groups;
    o->n_vocab = s->n_vocab;
}

tiny_opts tiny_sized_opts(tiny_sizes s)
{
    tiny_opts o;
    memset(&o, 0, sizeof o);
    set_sizes(&o, &s);
    o.norm_affine = 1;
    o.seed = 1234;
    o.arch = "megalodon";
    return o;
}

tiny_opts tiny_default_opts(void)
{
    return tiny_sized_opts((tiny_sizes){.n_layer = 2, .n_embd = 32, .z_dim = 16, .value_dim = 32,
                                        .n_head = 2, .n_ff = 64, .cema_ndim = 4,
                                        .chunk_size = 16, .norm_groups = 4, .n_vocab = 64});
}

tiny_opts tiny_heads4_opts(void)
{
    /* z_dim 64: 4 heads of 16 */
    tiny_opts o = tiny_sized_opts((tiny_sizes){.n_layer = 2, .n_embd = 64, .z_dim = 64,
                                               .value_dim = 128, .n_head = 4, .n_ff = 128,
                                               .cema_ndim = 8, .chunk_size = 64,
                                               .norm_groups = 8, .n_vocab = 160});
    o.swiglu = 1;
    return o;
}

/* The official configurations of `megalodon-train --preset` (the table is in
 * bin/train-config.c; test-make-tiny-model.sh checks that the two agree), with the 32000-token
 * vocabulary of the official models. */
static const struct {
    const char *name;
    tiny_sizes sizes;
    int swiglu, scale_emb, share_emb;
} presets[] = {
    {"mega200M", {12, 1024, 256, 2048, 1, 2560, 16, 2048, 32, 32000}, 0, 0, 0},
    {"mega1.3B", {24, 2048, 512, 4096, 2, 4864, 16, 2048, 64, 32000}, 0, 0, 0},
    {"mega1.3B_pg19", {24, 2048, 512, 4096, 2, 3584, 16, 2048, 64, 32000}, 1, 1, 1},
    {"mega7.1B", {32, 4096, 1024, 8192, 4, 11264, 16, 2048, 64, 32000}, 0, 0, 0},
    {"mega7.3B", {32, 4096, 1024, 8192, 4, 8192, 16, 2048, 64, 32000}, 1, 0, 0},
};

int tiny_preset(const char *name, tiny_opts *o)
{
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++) {
        if (strcmp(presets[i].name, name) != 0) continue;
        set_sizes(o, &presets[i].sizes);
        o->swiglu = presets[i].swiglu;
        o->scale_emb = presets[i].scale_emb;
        o->share_emb = presets[i].share_emb;
        o->rescale_nffn = 0;
        o->norm_affine = 1;
        return MG_OK;
    }
    return MG_ERR_INVALID_ARG;
}

const char *tiny_preset_names(void) { return "mega200M, mega1.3B, mega1.3B_pg19, mega7.1B, mega7.3B"; }

/* ---------------------------------------------------------------- the random stream */

static uint32_t rng_next(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

/* uniform in [-a, a] */
static float rnd(uint32_t *s, float a) { return a * (2.0f * (rng_next(s) >> 8) / 16777216.0f - 1.0f); }

/* A step of xorshift32 is linear over GF(2): s -> M s for a 32 x 32 bit matrix M, so that n
 * steps are M^n s, and M^n takes about log2(n) products of such matrices. A matrix is held
 * as its columns: col[j] = M e_j, the image of bit j. */
typedef struct {
    uint32_t col[32];
} bitmat;

static uint32_t bm_apply(const bitmat *m, uint32_t s)
{
    uint32_t r = 0;
    for (int j = 0; j < 32; j++)
        if (s >> j & 1) r ^= m->col[j];
    return r;
}

/* M^n */
static bitmat bm_power(uint64_t n)
{
    bitmat p, r; /* p = M^(2^k), r = the product so far */
    for (int j = 0; j < 32; j++) {
        uint32_t s = 1u << j;
        p.col[j] = rng_next(&s);
        r.col[j] = 1u << j;
    }
    for (; n; n >>= 1) {
        bitmat q;
        if (n & 1) {
            for (int j = 0; j < 32; j++) q.col[j] = bm_apply(&p, r.col[j]);
            r = q;
        }
        for (int j = 0; j < 32; j++) q.col[j] = bm_apply(&p, p.col[j]);
        p = q;
    }
    return r;
}

/* ---------------------------------------------------------------- lazy tensors */

/* One random tensor: values offset + uniform(-scale, scale), rows of ne[0] values in the
 * stream from state `rng` on, stored as `type`. */
typedef struct {
    uint32_t type;
    uint64_t ne[3];
    float scale, offset;
    uint32_t rng;
} tspec;

/* The model being built: the stream's state after the tensors so far, and the tensors. */
typedef struct {
    const tiny_opts *o;
    int tied; /* no output.weight: the embedding is the output head */
    uint32_t rng;
    tspec *t;
    size_t n, cap;
} model_ctx;

/* The writer's fill function: every row generated from its own starting state (the state
 * of the row before it, ne[0] steps on), then converted to the tensor's type. */
static int fill(void *user, const char *name, void *buf, size_t n_bytes)
{
    const tspec *t = user;
    const size_t ne0 = (size_t)t->ne[0], rows = (size_t)(t->ne[1] * t->ne[2]);
    const size_t row_bytes = mg_row_size(t->type, ne0);
    const int plain = t->type == GGML_TYPE_F32;
    int nt = 1;
#ifdef _OPENMP
    nt = omp_get_max_threads();
#endif
    uint32_t *start = malloc(sizeof *start * (rows ? rows : 1));
    float *scratch = plain ? NULL : malloc(sizeof(float) * ne0 * (size_t)nt);
    (void)n_bytes; /* rows * row_bytes */
    if (!start || (!plain && !scratch)) {
        free(start);
        free(scratch);
        return mg_seterr(MG_ERR_NOMEM, "out of memory for making tensor '%s'", name);
    }
    bitmat jump = bm_power(ne0);
    uint32_t s = t->rng;
    for (size_t r = 0; r < rows; r++, s = bm_apply(&jump, s)) start[r] = s;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (size_t r = 0; r < rows; r++) {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        float *x = plain ? (float *)buf + r * ne0 : scratch + (size_t)tid * ne0;
        uint32_t rs = start[r];
        for (size_t j = 0; j < ne0; j++) x[j] = t->offset + rnd(&rs, t->scale);
        if (!plain && mg_quantize_row(t->type, x, (uint8_t *)buf + r * row_bytes, ne0))
            memset((uint8_t *)buf + r * row_bytes, 0, row_bytes); /* an integer type: zeros */
    }
    free(scratch);
    free(start);
    return MG_OK;
}

/* A random tensor: f32, or the type the recipe gives it. Its values are the next
 * ne0 * ne1 * ne2 of the stream. */
static int add(gguf_writer *w, model_ctx *m, const char *name, float scale, float offset,
               int nd, uint64_t n0, uint64_t n1, uint64_t n2)
{
    const tiny_opts *o = m->o;
    if (o->skip_tensor && strcmp(o->skip_tensor, name) == 0) return MG_OK;
    if (m->n == m->cap) return mg_seterr(MG_ERR_INVALID_ARG, "tiny model: too many tensors");
    tspec *t = &m->t[m->n++];
    *t = (tspec){GGML_TYPE_F32, {n0, n1, n2}, scale, offset, m->rng};
    if (o->misshape_tensor && strcmp(o->misshape_tensor, name) == 0) t->ne[0]++;
    if (o->ftype) mg_recipe_tensor_type((mg_ftype)o->ftype, name, (uint32_t)nd, t->ne, m->tied,
                                        &t->type, NULL);
    if (o->retype_tensor && strcmp(o->retype_tensor, name) == 0) t->type = o->retype;
    uint64_t n = t->ne[0] * t->ne[1] * t->ne[2];
    bitmat skip = bm_power(n);
    m->rng = bm_apply(&skip, m->rng);
    return gguf_add_tensor_lazy(w, name, t->type, (uint32_t)nd, t->ne, fill, t);
}

static int add_tnorm(gguf_writer *w, model_ctx *m, const char *p)
{
    const tiny_opts *o = m->o;
    char n[64];
    int rc;
    uint64_t one = 1;
    int32_t zero = 0;
    snprintf(n, sizeof n, "%s.weight", p);
    if ((rc = add(w, m, n, 0.1f, 0, 1, o->n_embd, 1, 1))) return rc;
    snprintf(n, sizeof n, "%s.bias", p);
    if ((rc = add(w, m, n, 0.1f, 0, 1, o->n_embd, 1, 1))) return rc;
    snprintf(n, sizeof n, "%s.prior_mean", p);
    if ((rc = add(w, m, n, 0.0f, 0, 1, o->norm_groups, 1, 1))) return rc;
    snprintf(n, sizeof n, "%s.prior_logv", p);
    if ((rc = add(w, m, n, 0.0f, 0, 1, o->norm_groups, 1, 1))) return rc;
    snprintf(n, sizeof n, "%s.prior_count", p);
    if (o->skip_tensor && strcmp(o->skip_tensor, n) == 0) return MG_OK;
    return gguf_add_tensor(w, n, GGML_TYPE_I32, 1, &one, &zero);
}

static int set_u32(gguf_writer *w, const tiny_opts *o, const char *key, uint32_t v)
{
    if (o->skip_key && strcmp(o->skip_key, key) == 0) return MG_OK;
    return gguf_set_u32(w, key, v);
}

static int build(gguf_writer *w, model_ctx *m)
{
    const tiny_opts *o = m->o;
    const uint64_t D = o->n_embd, Z = o->z_dim, E = o->value_dim, F = o->n_ff, N = o->cema_ndim,
                   V = o->n_vocab;
    int rc = gguf_set_str(w, "general.architecture", o->arch);
    if (!rc) rc = gguf_set_str(w, "general.name", "tiny-random");
    if (!rc) rc = set_u32(w, o, "megalodon.block_count", o->n_layer);
    if (!rc) rc = set_u32(w, o, "megalodon.embedding_length", o->n_embd);
    if (!rc) rc = set_u32(w, o, "megalodon.z_dim", o->z_dim);
    if (!rc) rc = set_u32(w, o, "megalodon.value_dim", o->value_dim);
    if (!rc) rc = set_u32(w, o, "megalodon.head_count", o->n_head);
    if (!rc) rc = set_u32(w, o, "megalodon.feed_forward_length", o->n_ff);
    if (!rc) rc = set_u32(w, o, "megalodon.cema_ndim", o->cema_ndim);
    if (!rc) rc = set_u32(w, o, "megalodon.chunk_size", o->chunk_size);
    if (!rc) rc = set_u32(w, o, "megalodon.norm_groups", o->norm_groups);
    if (!rc) rc = set_u32(w, o, "megalodon.vocab_size", o->n_vocab);
    if (!rc) rc = gguf_set_f32(w, "megalodon.norm_epsilon", 1e-5f);
    if (!rc) rc = gguf_set_f32(w, "megalodon.rope_freq_base", 10000.0f);
    if (!rc) rc = gguf_set_bool(w, "megalodon.swiglu", o->swiglu);
    if (!rc) rc = gguf_set_bool(w, "megalodon.scale_emb", o->scale_emb);
    if (!rc) rc = gguf_set_bool(w, "megalodon.share_emb", o->share_emb);
    if (!rc) rc = gguf_set_bool(w, "megalodon.rescale_nffn", o->rescale_nffn);
    if (!rc) rc = gguf_set_bool(w, "megalodon.norm_affine", o->norm_affine);
    /* the keys megalodon-quantize adds, last as it adds them */
    if (!rc && o->ftype) rc = gguf_set_u32(w, "general.file_type", (uint32_t)o->ftype);
    if (!rc && o->ftype) rc = gguf_set_u32(w, "general.quantization_version", 2);
    if (rc) return rc;

    const float he = 1.0f; /* uniform [-a, a] with a = sqrt(3 var): var = 1/(3 fan_in) */
    if ((rc = add(w, m, "token_embd.weight", 1.7f / sqrtf((float)D), 0, 2, D, V, 1))) return rc;
    uint64_t half = o->n_head > 0 && o->z_dim % o->n_head == 0 ? Z / o->n_head / 2 : 1;
    if (half == 0) half = 1;
    if (!(o->skip_tensor && strcmp(o->skip_tensor, "rope.freqs") == 0)) {
        float *fr = malloc(sizeof(float) * half);
        if (!fr) return MG_ERR_NOMEM;
        for (uint64_t i = 0; i < half; i++) fr[i] = (float)pow(10000.0, -2.0 * i / (2.0 * half));
        rc = gguf_add_tensor(w, "rope.freqs", GGML_TYPE_F32, 1, &half, fr);
        free(fr);
        if (rc) return rc;
    }
    char n[64];
#define T(scale, off, nd, a, b, c, ...)                                                    \
    do {                                                                                   \
        snprintf(n, sizeof n, __VA_ARGS__);                                                \
        if ((rc = add(w, m, n, scale, off, nd, a, b, c))) return rc;                             \
    } while (0)
    for (int il = 0; il < o->n_layer; il++) {
        snprintf(n, sizeof n, "blk.%d.tnorm", il);
        if ((rc = add_tnorm(w, m, n))) return rc;
        T(0.35f, 0, 3, 1, N, D, "blk.%d.cema.alpha", il);
        T(0.35f, 0, 3, 1, N, D, "blk.%d.cema.delta", il);
        T(2.0f, 0, 3, 1, 1, D, "blk.%d.cema.theta", il);
        T(1.7f, 0, 3, 2, N, D, "blk.%d.cema.gamma", il);
        T(0.4f, 0, 2, 1, D, 1, "blk.%d.cema.omega", il);
        if (o->norm_affine) T(0.1f, 0, 1, D, 1, 1, "blk.%d.attn_norm.weight", il);
        T(he / sqrtf((float)D), 0, 2, D, Z, 1, "blk.%d.attn_z.weight", il);
        T(0.1f, 0, 1, Z, 1, 1, "blk.%d.attn_z.bias", il);
        T(he / sqrtf((float)D), 0, 2, D, E, 1, "blk.%d.attn_v.weight", il);
        T(0.1f, 0, 1, E, 1, 1, "blk.%d.attn_v.bias", il);
        T(he / sqrtf((float)D), 0, 2, D, E, 1, "blk.%d.attn_r.weight", il);
        T(0.1f, 0, 1, E, 1, 1, "blk.%d.attn_r.bias", il);
        T(he / sqrtf((float)D), 0, 2, D, D, 1, "blk.%d.attn_h1.weight", il);
        T(0.1f, 0, 1, D, 1, 1, "blk.%d.attn_h1.bias", il);
        T(he / sqrtf((float)E), 0, 2, E, D, 1, "blk.%d.attn_h2.weight", il);
        T(0.1f, 0, 2, Z, 2, 1, "blk.%d.attn_qk.gamma", il);
        T(0.1f, 0, 2, Z, 2, 1, "blk.%d.attn_qk.beta", il);
        if (o->norm_affine) {
            T(0.1f, 0, 1, D, 1, 1, "blk.%d.ffn_norm.weight", il);
            T(0.1f, 0, 1, D, 1, 1, "blk.%d.ffn_norm.bias", il);
        }
        T(he / sqrtf((float)D), 0, 2, D, F, 1, "blk.%d.ffn_up.weight", il);
        if (o->swiglu) T(he / sqrtf((float)D), 0, 2, D, F, 1, "blk.%d.ffn_gate.weight", il);
        T(he / sqrtf((float)F), 0, 2, F, D, 1, "blk.%d.ffn_down.weight", il);
        if (o->rescale_nffn) T(0.02f, 0.1f * powf(0.5f, (float)il), 1, D, 1, 1, "blk.%d.ffn_alpha", il);
    }
#undef T
    if ((rc = add_tnorm(w, m, "output_norm"))) return rc;
    if (!o->share_emb && (rc = add(w, m, "output.weight", 1.7f / sqrtf((float)D), 0, 2, D, V, 1)))
        return rc;
    return MG_OK;
}

/* The random tensors of a model: at most 32 a layer and 8 others. */
static int ctx_init(model_ctx *m, const tiny_opts *o)
{
    *m = (model_ctx){.o = o, .rng = o->seed ? o->seed : 1};
    m->tied = o->share_emb || (o->skip_tensor && !strcmp(o->skip_tensor, "output.weight"));
    m->cap = 32 * (size_t)(o->n_layer > 0 ? o->n_layer : 0) + 8;
    m->t = malloc(sizeof *m->t * m->cap);
    return m->t ? MG_OK : mg_seterr(MG_ERR_NOMEM, "out of memory for a model's tensor list");
}

uint64_t tiny_model_n_params(const tiny_opts *o)
{
    model_ctx m;
    gguf_writer *w = gguf_writer_new();
    uint64_t n = 0;
    if (w && ctx_init(&m, o) == MG_OK && build(w, &m) == MG_OK) {
        for (size_t i = 0; i < m.n; i++) n += m.t[i].ne[0] * m.t[i].ne[1] * m.t[i].ne[2];
    }
    if (w) free(m.t);
    gguf_writer_free(w);
    return n;
}

int tiny_model_write(const char *path, const tiny_opts *o)
{
    model_ctx m;
    gguf_writer *w = gguf_writer_new();
    if (!w) return MG_ERR_NOMEM;
    int rc = ctx_init(&m, o);
    if (!rc) rc = build(w, &m);
    if (!rc) rc = gguf_write_file(w, path);
    gguf_writer_free(w);
    free(m.t);
    return rc;
}

/* tiny_model.c - small random models for the example and the bad-input tests. */
#include "config.h"

#include "tiny_model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "megalodon.h"
#include "quant.h"

tiny_opts tiny_default_opts(void)
{
    tiny_opts o;
    memset(&o, 0, sizeof o);
    o.n_layer = 2;
    o.n_embd = 32;
    o.z_dim = 16;
    o.value_dim = 32;
    o.n_head = 2;
    o.n_ff = 64;
    o.cema_ndim = 4;
    o.chunk_size = 16;
    o.norm_groups = 4;
    o.n_vocab = 64;
    o.norm_affine = 1;
    o.seed = 1234;
    o.arch = "megalodon";
    return o;
}

tiny_opts tiny_heads4_opts(void)
{
    tiny_opts o = tiny_default_opts();
    o.n_layer = 2;
    o.n_embd = 64;
    o.z_dim = 64; /* 4 heads of 16 */
    o.value_dim = 128;
    o.n_head = 4;
    o.n_ff = 128;
    o.cema_ndim = 8;
    o.chunk_size = 64;
    o.norm_groups = 8;
    o.n_vocab = 160;
    o.swiglu = 1;
    return o;
}

static uint32_t rng_next(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

/* uniform in [-a, a] */
static float rnd(uint32_t *s, float a) { return a * (2.0f * (rng_next(s) >> 8) / 16777216.0f - 1.0f); }

/* The values d (rows of ne[0]) stored as `type`: converted when it is a float or block type,
 * zero bytes otherwise (the integer types); a row that does not fit the type's blocks is left
 * to the writer to refuse. */
static int add_retyped(gguf_writer *w, uint32_t type, const char *name, int nd,
                       const uint64_t *ne, const float *d)
{
    const mg_type_info *ti = mg_type_info_of(type);
    size_t row = mg_row_size(type, ne[0]), rows = (size_t)(ne[1] * ne[2]);
    if (!ti || !row) return gguf_add_tensor(w, name, type, (uint32_t)nd, ne, d);
    char *buf = calloc(rows, row);
    if (!buf) return MG_ERR_NOMEM;
    for (size_t r = 0; ti->is_float && r < rows; r++)
        mg_quantize_row(type, d + r * ne[0], buf + r * row, (size_t)ne[0]);
    int rc = gguf_add_tensor(w, name, type, (uint32_t)nd, ne, buf);
    free(buf);
    return rc;
}

static int add(gguf_writer *w, const tiny_opts *o, uint32_t *s, const char *name, float scale,
               float offset, int nd, uint64_t n0, uint64_t n1, uint64_t n2)
{
    if (o->skip_tensor && strcmp(o->skip_tensor, name) == 0) return MG_OK;
    uint64_t ne[3] = {n0, n1, n2};
    if (o->misshape_tensor && strcmp(o->misshape_tensor, name) == 0) ne[0]++;
    size_t n = (size_t)(ne[0] * ne[1] * ne[2]);
    float *d = malloc(sizeof(float) * n);
    if (!d) return MG_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) d[i] = offset + rnd(s, scale);
    int rc = o->retype_tensor && strcmp(o->retype_tensor, name) == 0
                 ? add_retyped(w, o->retype, name, nd, ne, d)
                 : gguf_add_tensor(w, name, GGML_TYPE_F32, (uint32_t)nd, ne, d);
    free(d);
    return rc;
}

static int add_tnorm(gguf_writer *w, const tiny_opts *o, uint32_t *s, const char *p)
{
    char n[64];
    int rc;
    uint64_t one = 1;
    int32_t zero = 0;
    snprintf(n, sizeof n, "%s.weight", p);
    if ((rc = add(w, o, s, n, 0.1f, 0, 1, o->n_embd, 1, 1))) return rc;
    snprintf(n, sizeof n, "%s.bias", p);
    if ((rc = add(w, o, s, n, 0.1f, 0, 1, o->n_embd, 1, 1))) return rc;
    snprintf(n, sizeof n, "%s.prior_mean", p);
    if ((rc = add(w, o, s, n, 0.0f, 0, 1, o->norm_groups, 1, 1))) return rc;
    snprintf(n, sizeof n, "%s.prior_logv", p);
    if ((rc = add(w, o, s, n, 0.0f, 0, 1, o->norm_groups, 1, 1))) return rc;
    snprintf(n, sizeof n, "%s.prior_count", p);
    if (o->skip_tensor && strcmp(o->skip_tensor, n) == 0) return MG_OK;
    return gguf_add_tensor(w, n, GGML_TYPE_I32, 1, &one, &zero);
}

static int set_u32(gguf_writer *w, const tiny_opts *o, const char *key, uint32_t v)
{
    if (o->skip_key && strcmp(o->skip_key, key) == 0) return MG_OK;
    return gguf_set_u32(w, key, v);
}

static int build(gguf_writer *w, const tiny_opts *o)
{
    uint32_t s = o->seed ? o->seed : 1;
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
    if (rc) return rc;

    const float he = 1.0f; /* uniform [-a, a] with a = sqrt(3 var): var = 1/(3 fan_in) */
    if ((rc = add(w, o, &s, "token_embd.weight", 1.7f / sqrtf((float)D), 0, 2, D, V, 1))) return rc;
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
        if ((rc = add(w, o, &s, n, scale, off, nd, a, b, c))) return rc;                   \
    } while (0)
    for (int il = 0; il < o->n_layer; il++) {
        snprintf(n, sizeof n, "blk.%d.tnorm", il);
        if ((rc = add_tnorm(w, o, &s, n))) return rc;
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
    if ((rc = add_tnorm(w, o, &s, "output_norm"))) return rc;
    if (!o->share_emb && (rc = add(w, o, &s, "output.weight", 1.7f / sqrtf((float)D), 0, 2, D, V, 1)))
        return rc;
    return MG_OK;
}

int tiny_model_write(const char *path, const tiny_opts *o)
{
    gguf_writer *w = gguf_writer_new();
    if (!w) return MG_ERR_NOMEM;
    int rc = build(w, o);
    if (!rc) rc = gguf_write_file(w, path);
    gguf_writer_free(w);
    return rc;
}

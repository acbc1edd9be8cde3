/* state.c - the per-sequence streaming state: creation, reset, save and load.
 *
 * Carried between calls, per layer: the timestep-norm (count, mean, var), the CEMA hidden
 * state (D x N complex) and the keys/values of the current, unfinished chunk (fewer than C
 * tokens); plus the final norm's statistics. The size is fixed by the config. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "model.h"

mg_state_params mg_state_default_params(void)
{
    mg_state_params p;
    memset(&p, 0, sizeof p);
    p.cema = MG_CEMA_AUTO;
    p.n_batch = 0;
    return p;
}

void mg_tnorm_state_reset(mg_tnorm_state *st, const mg_tnorm_params *p, int G)
{
    /* fresh statistics = the prior: (prior_count, prior_mean, exp(prior_logv)) */
    st->count = p->prior_count;
    for (int g = 0; g < G; g++) {
        st->mean[g] = p->prior_mean[g];
        st->var[g] = expf(p->prior_logv[g]);
    }
}

/* ---------------------------------------------------------------- the device copy
 * The backend may keep the state's buffers on the device (backend.h: state_register ...);
 * these helpers tell it about the host's reads and writes. On the CPU backend the hooks
 * are NULL and they do nothing. */

typedef int (*region_fn)(mg_backend *be, void *host, size_t bytes);

static int region(mg_backend *be, region_fn fn, void *p, size_t n_floats)
{
    return p ? fn(be, p, sizeof(float) * n_floats) : MG_OK;
}

/* fn over every buffer of the state that a backend may keep (NULL ones skipped); stops at
 * the first error. */
static int each_region(mg_state *st, region_fn fn)
{
    const mg_hparams *hp = &st->model->hp;
    mg_backend *be = st->model->be;
    const size_t G = hp->norm_groups, DN2 = (size_t)hp->n_embd * hp->cema_ndim * 2;
    const size_t C = hp->chunk_size;
    for (int il = 0; st->layers && il < hp->n_layer; il++) {
        mg_layer_state *ls = &st->layers[il];
        TRY(region(be, fn, ls->tnorm.mean, G));
        TRY(region(be, fn, ls->tnorm.var, G));
        TRY(region(be, fn, ls->h, DN2));
        TRY(region(be, fn, ls->k, C * hp->z_dim));
        TRY(region(be, fn, ls->v, C * hp->value_dim));
    }
    TRY(region(be, fn, st->out_norm.mean, G));
    return region(be, fn, st->out_norm.var, G);
}

static int region_register(mg_backend *be, void *host, size_t bytes)
{
    return be->state_register(be, host, bytes);
}
static int region_release(mg_backend *be, void *host, size_t bytes)
{
    (void)bytes;
    be->state_release(be, host);
    return MG_OK;
}
static int region_sync(mg_backend *be, void *host, size_t bytes)
{
    (void)bytes;
    return be->state_sync(be, host);
}
static int region_changed(mg_backend *be, void *host, size_t bytes)
{
    be->state_changed(be, host, 0, bytes);
    return MG_OK;
}

int mg_state_sync(mg_state *st)
{
    if (!st || !st->model->be->state_sync) return MG_OK;
    int rc = each_region(st, region_sync);
    if (rc) return mg_adderr_context(rc, "reading the streaming state back from the device");
    return MG_OK;
}

void mg_state_changed(mg_state *st)
{
    if (st && st->model->be->state_changed) each_region(st, region_changed);
}

void mg_state_reset(mg_state *st)
{
    if (!st) return;
    const mg_model *m = st->model;
    const mg_hparams *hp = &m->hp;
    for (int il = 0; il < hp->n_layer; il++) {
        mg_layer_state *ls = &st->layers[il];
        mg_tnorm_state_reset(&ls->tnorm, &m->layers[il].tnorm, hp->norm_groups);
        memset(ls->h, 0, sizeof(float) * (size_t)hp->n_embd * hp->cema_ndim * 2);
    }
    mg_tnorm_state_reset(&st->out_norm, &m->out_norm, hp->norm_groups);
    st->n_kv = 0;
    st->n_past = 0;
    mg_state_changed(st);
}

static void scratch_free(mg_scratch *s)
{
    float **bufs[] = {&s->x,      &s->y,      &s->xt, &s->mx, &s->z,    &s->q_step, &s->k_step,
                      &s->v_step, &s->r,      &s->a,  &s->proj, &s->u,    &s->u3};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        free(*bufs[i]);
        *bufs[i] = NULL;
    }
}

static int scratch_alloc(mg_scratch *s, const mg_hparams *hp, int cap)
{
    const size_t D = hp->n_embd, Z = hp->z_dim, E = hp->value_dim, F = hp->n_ff, n = cap;
    /* the buffers and their floats per token (and u3, the SwiGLU gate, only with swiglu) */
    const struct { float **p; size_t width; } bufs[] = {
        {&s->x, D},      {&s->y, D}, {&s->xt, D}, {&s->mx, D}, {&s->proj, D},
        {&s->z, Z},      {&s->q_step, Z}, {&s->k_step, Z},
        {&s->v_step, E}, {&s->r, E}, {&s->a, E},
        {&s->u, F}};
    s->cap = cap;
    int ok = 1;
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        *bufs[i].p = malloc(sizeof(float) * n * bufs[i].width);
        if (!*bufs[i].p) ok = 0;
    }
    s->u3 = hp->swiglu ? malloc(sizeof(float) * n * F) : NULL;
    if (!ok || (hp->swiglu && !s->u3)) {
        scratch_free(s);
        return mg_seterr(MG_ERR_NOMEM, "out of memory for the work buffers of a step of %d "
                         "tokens (D=%zu, Z=%zu, E=%zu, F=%zu; a smaller n_batch needs less)",
                         cap, D, Z, E, F);
    }
    return MG_OK;
}

static void tnorm_free(mg_tnorm_state *t)
{
    free(t->mean);
    free(t->var);
}

/* The statistics of one timestep norm (`what` names it in the message). */
static int tnorm_alloc(mg_tnorm_state *t, int G, const char *what)
{
    t->mean = malloc(sizeof(float) * G);
    t->var = malloc(sizeof(float) * G);
    if (!t->mean || !t->var)
        return mg_seterr(MG_ERR_NOMEM, "out of memory for the statistics of %s (G=%d)", what, G);
    return MG_OK;
}

/* The carried buffers of block il (mg_layer_state); what is allocated is freed with the
 * state. */
static int layer_state_alloc(mg_layer_state *ls, const mg_hparams *hp, int il)
{
    const int D = hp->n_embd, N = hp->cema_ndim, C = hp->chunk_size, Z = hp->z_dim,
              E = hp->value_dim;
    char what[48];
    snprintf(what, sizeof what, "the timestep norm of layer %d", il);
    TRY(tnorm_alloc(&ls->tnorm, hp->norm_groups, what));
    if (!(ls->h = malloc(sizeof(float) * (size_t)D * N * 2)))
        return mg_seterr(MG_ERR_NOMEM, "out of memory for the CEMA state of layer %d (D=%d, "
                         "N=%d)", il, D, N);
    if (!(ls->k = malloc(sizeof(float) * (size_t)C * Z)))
        return mg_seterr(MG_ERR_NOMEM, "out of memory for the key cache of layer %d (C=%d, "
                         "Z=%d)", il, C, Z);
    if (!(ls->v = malloc(sizeof(float) * (size_t)C * E)))
        return mg_seterr(MG_ERR_NOMEM, "out of memory for the value cache of layer %d (C=%d, "
                         "E=%d)", il, C, E);
    return MG_OK;
}

void mg_state_free(mg_state *st)
{
    if (!st) return;
    /* before the buffers go: their addresses may come back for anything */
    if (st->model->be->state_release) each_region(st, region_release);
    if (st->layers) {
        for (int il = 0; il < st->model->hp.n_layer; il++) {
            mg_layer_state *ls = &st->layers[il];
            tnorm_free(&ls->tnorm);
            free(ls->h);
            free(ls->k);
            free(ls->v);
        }
        free(st->layers);
    }
    tnorm_free(&st->out_norm);
    scratch_free(&st->s);
    free(st->backup);
    free(st);
}

int mg_state_new(const mg_model *m, const mg_state_params *params, mg_state **out)
{
    if (!out) return mg_seterr(MG_ERR_INVALID_ARG, "mg_state_new: out is NULL");
    *out = NULL;
    if (!m) return mg_seterr(MG_ERR_INVALID_ARG, "mg_state_new: model is NULL");
    mg_state_params p = params ? *params : mg_state_default_params();
    if (p.cema != MG_CEMA_AUTO && p.cema != MG_CEMA_FFT && p.cema != MG_CEMA_SCAN)
        return mg_seterr(MG_ERR_INVALID_ARG, "unknown CEMA algorithm %d", (int)p.cema);
    if (p.n_batch < 0)
        return mg_seterr(MG_ERR_INVALID_ARG, "n_batch must be >= 0, got %d", p.n_batch);
    const mg_hparams *hp = &m->hp;
    const int C = hp->chunk_size;
    int cap = p.n_batch ? p.n_batch : 2 * C;
    if (cap > C) cap -= cap % C; /* whole chunks */

    mg_state *st = calloc(1, sizeof *st);
    if (!st) return mg_seterr(MG_ERR_NOMEM, "out of memory for the mg_state structure");
    st->model = m;
    st->params = p;
    const int G = hp->norm_groups;
    int rc = MG_OK;
    st->layers = calloc(hp->n_layer, sizeof *st->layers);
    if (!st->layers) {
        rc = mg_seterr(MG_ERR_NOMEM, "out of memory for the state's table of %d layers",
                       hp->n_layer);
        goto fail;
    }
    for (int il = 0; il < hp->n_layer; il++)
        TRY_GOTO(layer_state_alloc(&st->layers[il], hp, il), fail);
    TRY_GOTO(tnorm_alloc(&st->out_norm, G, "the final norm"), fail);
    if (!(st->backup = malloc(mg_state_backup_size(hp)))) {
        rc = mg_seterr(MG_ERR_NOMEM, "out of memory for the state's backup for failed calls "
                       "(%zu bytes)", mg_state_backup_size(hp));
        goto fail;
    }
    if (m->be->state_register) TRY_GOTO(each_region(st, region_register), fail);
    TRY_GOTO(scratch_alloc(&st->s, hp, cap), fail);
    mg_state_reset(st);
    *out = st;
    return MG_OK;
fail:
    mg_state_free(st);
    return rc;
}

uint64_t mg_state_n_past(const mg_state *st) { return st ? st->n_past : 0; }

size_t mg_state_size(const mg_state *st)
{
    if (!st) return 0;
    const mg_hparams *hp = &st->model->hp;
    size_t tn = sizeof(int64_t) + 2 * sizeof(float) * hp->norm_groups;
    size_t layer = tn + sizeof(float) * (size_t)hp->n_embd * hp->cema_ndim * 2 +
                   sizeof(float) * (size_t)hp->chunk_size * (hp->z_dim + hp->value_dim);
    return layer * hp->n_layer + tn + sizeof st->n_kv + sizeof st->n_past;
}

int mg_state_set_cema(mg_state *st, mg_cema_algo algo)
{
    if (!st) return mg_seterr(MG_ERR_INVALID_ARG, "mg_state_set_cema: NULL state");
    if (algo != MG_CEMA_AUTO && algo != MG_CEMA_FFT && algo != MG_CEMA_SCAN)
        return mg_seterr(MG_ERR_INVALID_ARG, "unknown CEMA algorithm %d", (int)algo);
    st->params.cema = algo;
    return MG_OK;
}

/* ---------------------------------------------------------------- save / load */

static const char *const shape_keys[] = {
    "megalodon.block_count", "megalodon.embedding_length", "megalodon.z_dim",
    "megalodon.value_dim",   "megalodon.cema_ndim",        "megalodon.chunk_size",
    "megalodon.norm_groups"};

static void shape_values(const mg_hparams *hp, uint32_t v[7])
{
    v[0] = hp->n_layer;
    v[1] = hp->n_embd;
    v[2] = hp->z_dim;
    v[3] = hp->value_dim;
    v[4] = hp->cema_ndim;
    v[5] = hp->chunk_size;
    v[6] = hp->norm_groups;
}

static int add_tnorm(gguf_writer *w, const char *prefix, const mg_tnorm_state *t, int G)
{
    char name[64];
    uint64_t one = 1, g = (uint64_t)G;
    snprintf(name, sizeof name, "%s.count", prefix);
    TRY(gguf_add_tensor(w, name, GGML_TYPE_I64, 1, &one, &t->count));
    snprintf(name, sizeof name, "%s.mean", prefix);
    TRY(gguf_add_tensor(w, name, GGML_TYPE_F32, 1, &g, t->mean));
    snprintf(name, sizeof name, "%s.var", prefix);
    return gguf_add_tensor(w, name, GGML_TYPE_F32, 1, &g, t->var);
}

int mg_state_save(const mg_state *st, const char *path)
{
    if (!st || !path) return mg_seterr(MG_ERR_INVALID_ARG, "mg_state_save: NULL argument");
    const mg_hparams *hp = &st->model->hp;
    /* the host copy made current (it is the caller's state: only its cache changes) */
    int rc = mg_state_sync((mg_state *)st);
    if (rc) return mg_adderr_context(rc, "saving state to '%s'", path);
    gguf_writer *w = gguf_writer_new();
    if (!w) return MG_ERR_NOMEM; /* gguf_writer_new set the message */
    uint32_t sv[7];
    shape_values(hp, sv);
    TRY_GOTO(gguf_set_str(w, "general.architecture", "megalodon-state"), done);
    for (int i = 0; i < 7; i++) TRY_GOTO(gguf_set_u32(w, shape_keys[i], sv[i]), done);
    TRY_GOTO(gguf_set_u64(w, "megalodon_state.n_past", st->n_past), done);
    TRY_GOTO(gguf_set_u32(w, "megalodon_state.n_kv", (uint32_t)st->n_kv), done);
    char name[64];
    for (int il = 0; il < hp->n_layer; il++) {
        const mg_layer_state *ls = &st->layers[il];
        snprintf(name, sizeof name, "blk.%d.tnorm", il);
        TRY_GOTO(add_tnorm(w, name, &ls->tnorm, hp->norm_groups), done);
        uint64_t ne_h[3] = {2, (uint64_t)hp->cema_ndim, (uint64_t)hp->n_embd};
        snprintf(name, sizeof name, "blk.%d.cema.h", il);
        TRY_GOTO(gguf_add_tensor(w, name, GGML_TYPE_F32, 3, ne_h, ls->h), done);
        if (st->n_kv > 0) {
            uint64_t ne_k[2] = {(uint64_t)hp->z_dim, (uint64_t)st->n_kv};
            uint64_t ne_v[2] = {(uint64_t)hp->value_dim, (uint64_t)st->n_kv};
            snprintf(name, sizeof name, "blk.%d.k", il);
            TRY_GOTO(gguf_add_tensor(w, name, GGML_TYPE_F32, 2, ne_k, ls->k), done);
            snprintf(name, sizeof name, "blk.%d.v", il);
            TRY_GOTO(gguf_add_tensor(w, name, GGML_TYPE_F32, 2, ne_v, ls->v), done);
        }
    }
    TRY_GOTO(add_tnorm(w, "output_norm", &st->out_norm, hp->norm_groups), done);
    rc = gguf_write_file(w, path);
done:
    gguf_writer_free(w);
    if (rc) return mg_adderr_context(rc, "saving state to '%s'", path);
    return MG_OK;
}

/* Check that tensor `name` has exactly n elements of `type`; copy it into dst unless NULL. */
static int read_exact(const gguf_file *f, const char *name, uint32_t type, uint64_t n, void *dst)
{
    int64_t i = gguf_find_tensor(f, name);
    if (i < 0) return mg_seterr(MG_ERR_STATE, "missing tensor '%s'", name);
    const gguf_tensor_info *t = gguf_tensor(f, i);
    if (t->type != type || t->n_elements != n)
        return mg_seterr(MG_ERR_STATE, "tensor '%s' is %s with %llu elements, expected %s with %llu",
                         name, gguf_type_name(t->type), (unsigned long long)t->n_elements,
                         gguf_type_name(type), (unsigned long long)n);
    if (dst) memcpy(dst, t->data, t->n_bytes);
    return MG_OK;
}

static int read_tnorm(const gguf_file *f, const char *prefix, mg_tnorm_state *t, int G, int apply)
{
    char name[64];
    int64_t count;
    snprintf(name, sizeof name, "%s.count", prefix);
    TRY(read_exact(f, name, GGML_TYPE_I64, 1, &count));
    if (count < 0) return mg_seterr(MG_ERR_STATE, "tensor '%s' is negative", name);
    if (apply) t->count = count;
    snprintf(name, sizeof name, "%s.mean", prefix);
    TRY(read_exact(f, name, GGML_TYPE_F32, G, apply ? t->mean : NULL));
    snprintf(name, sizeof name, "%s.var", prefix);
    return read_exact(f, name, GGML_TYPE_F32, G, apply ? t->var : NULL);
}

/* A key that gguf.c could not read (it set the message, naming the key) makes the file an
 * invalid state: the status becomes MG_ERR_STATE, the message stays. */
static int as_state_error(int rc)
{
    return rc ? mg_seterr(MG_ERR_STATE, "%s", mg_last_error()) : MG_OK;
}

/* Validate the file against the model; with apply, also copy it into the state. */
static int load_into(mg_state *st, const gguf_file *f, int apply)
{
    const mg_hparams *hp = &st->model->hp;
    const char *arch;
    uint64_t len;
    if (gguf_get_str(f, "general.architecture", &arch, &len))
        return mg_adderr_context(MG_ERR_STATE, "not a state file");
    if (len != strlen("megalodon-state") || memcmp(arch, "megalodon-state", len) != 0)
        return mg_seterr(MG_ERR_STATE, "not a state file (general.architecture is '%.*s')",
                         (int)(len > 64 ? 64 : len), arch);
    uint32_t sv[7], v;
    shape_values(hp, sv);
    for (int i = 0; i < 7; i++) {
        TRY(as_state_error(gguf_get_u32(f, shape_keys[i], &v)));
        if (v != sv[i])
            return mg_seterr(MG_ERR_STATE, "state was made for another model: %s is %u, the model has %u",
                             shape_keys[i], v, sv[i]);
    }
    uint32_t n_kv;
    int64_t n_past;
    TRY(as_state_error(gguf_get_u32(f, "megalodon_state.n_kv", &n_kv)));
    TRY(as_state_error(gguf_get_i64(f, "megalodon_state.n_past", &n_past)));
    if (n_kv >= (uint32_t)hp->chunk_size || n_past < 0 || (uint64_t)n_past % hp->chunk_size != n_kv)
        return mg_seterr(MG_ERR_STATE, "inconsistent state: n_kv %u, n_past %lld, chunk size %d",
                         n_kv, (long long)n_past, hp->chunk_size);
    char name[64];
    const uint64_t DN2 = (uint64_t)hp->n_embd * hp->cema_ndim * 2;
    for (int il = 0; il < hp->n_layer; il++) {
        mg_layer_state *ls = &st->layers[il];
        snprintf(name, sizeof name, "blk.%d.tnorm", il);
        TRY(read_tnorm(f, name, &ls->tnorm, hp->norm_groups, apply));
        snprintf(name, sizeof name, "blk.%d.cema.h", il);
        TRY(read_exact(f, name, GGML_TYPE_F32, DN2, apply ? ls->h : NULL));
        if (n_kv > 0) {
            snprintf(name, sizeof name, "blk.%d.k", il);
            TRY(read_exact(f, name, GGML_TYPE_F32, (uint64_t)n_kv * hp->z_dim,
                           apply ? ls->k : NULL));
            snprintf(name, sizeof name, "blk.%d.v", il);
            TRY(read_exact(f, name, GGML_TYPE_F32, (uint64_t)n_kv * hp->value_dim,
                           apply ? ls->v : NULL));
        }
    }
    TRY(read_tnorm(f, "output_norm", &st->out_norm, hp->norm_groups, apply));
    if (apply) {
        st->n_kv = (int)n_kv;
        st->n_past = (uint64_t)n_past;
    }
    return MG_OK;
}

int mg_state_load(mg_state *st, const char *path)
{
    if (!st || !path) return mg_seterr(MG_ERR_INVALID_ARG, "mg_state_load: NULL argument");
    gguf_file *f;
    int rc = gguf_open(path, &f);
    if (rc) return mg_adderr_context(rc, "loading state '%s'", path);
    /* validate everything first, so that a bad file leaves the state as it was */
    rc = load_into(st, f, 0);
    if (!rc) {
        rc = load_into(st, f, 1);
        mg_state_changed(st); /* the host copy is the new one */
    }
    gguf_close(f);
    if (rc) return mg_adderr_context(rc, "loading state '%s'", path);
    return MG_OK;
}

/* ---------------------------------------------------------------- statistics window */

static void copy_tnorm(mg_tnorm_state *dst, const mg_tnorm_state *src, int G)
{
    dst->count = src->count;
    memcpy(dst->mean, src->mean, sizeof(float) * G);
    memcpy(dst->var, src->var, sizeof(float) * G);
}

/* Official eval/generation policy (inference.py, utils.py init_cache(truncate=True)): the
 * norm statistics become those of a fresh forward (prior statistics, zero CEMA state, no
 * keys/values) over the given tokens; everything else in the state is kept. */
int mg_state_window_norm_stats(mg_state *st, const int32_t *tokens, size_t n_tokens)
{
    if (!st) return mg_seterr(MG_ERR_INVALID_ARG, "mg_state_window_norm_stats: NULL state");
    mg_state_params p = st->params;
    p.cb_eval = NULL;
    mg_state *fresh;
    TRY(mg_state_new(st->model, &p, &fresh));
    int rc = mg_eval(fresh, tokens, n_tokens, NULL, MG_LOGITS_NONE);
    if (!rc) rc = mg_state_sync(fresh);
    if (!rc) {
        const int G = st->model->hp.norm_groups;
        for (int il = 0; il < st->model->hp.n_layer; il++)
            copy_tnorm(&st->layers[il].tnorm, &fresh->layers[il].tnorm, G);
        copy_tnorm(&st->out_norm, &fresh->out_norm, G);
        /* only the statistics were written (h may be newer on the device) */
        mg_backend *be = st->model->be;
        for (int il = 0; be->state_changed && il <= st->model->hp.n_layer; il++) {
            mg_tnorm_state *t = il < st->model->hp.n_layer ? &st->layers[il].tnorm : &st->out_norm;
            be->state_changed(be, t->mean, 0, sizeof(float) * G);
            be->state_changed(be, t->var, 0, sizeof(float) * G);
        }
    }
    mg_state_free(fresh);
    return rc;
}

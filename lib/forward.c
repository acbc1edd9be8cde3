/* forward.c - the whole model, streaming: mg_eval.
 *
 *   x      = embed[tokens] (* sqrt(D) with scale_emb)
 *   x      = Block_i(x)                 i = 0 .. n_layer-1
 *            Block(x) = x + FFN(LayerNorm(y)),  y = MEGA(x)     (two-hop residual)
 *   x      = TimestepNorm_final(x)      its own running statistics
 *   logits = x W_out^T                  W_out = embed when share_emb
 *
 * A call takes any number of tokens; they are processed in steps of at most n_batch tokens
 * (whole chunks when n_batch exceeds the chunk size), each step carrying the state. */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "model.h"

static void emit(const mg_state *st, const char *name, int layer, const float *data, int rows,
                 int cols)
{
    if (st->params.cb_eval)
        st->params.cb_eval(st->params.cb_user, name, layer, data, (size_t)rows, (size_t)cols);
}

/* One step of L tokens (L <= scratch capacity). logits: NULL, or L rows (all) / 1 row (last). */
static int eval_step(mg_state *st, const int32_t *tokens, int L, float *logits,
                     mg_logits_mode mode)
{
    const mg_model *m = st->model;
    const mg_hparams *hp = &m->hp;
    mg_backend *be = m->be;
    mg_scratch *s = &st->s;
    const int D = hp->n_embd;

    for (int t = 0; t < L; t++)
        mg_weight_row(&m->tok_embd, tokens[t], s->x + (size_t)t * D);
    if (hp->scale_emb) TRY(be->scale(be, s->x, sqrtf((float)D), s->x, (size_t)L * D));
    emit(st, "embd", -1, s->x, L, D);

    for (int il = 0; il < hp->n_layer; il++) {
        TRY(mg_mega_forward(m, il, st->params.cema, &st->layers[il], st->n_kv, s, NULL, 1, L,
                            s->x, s->y));
        emit(st, "blk.attn_out", il, s->y, L, D);
        TRY(mg_ffn_forward(m, il, s, NULL, L, s->x, s->y, s->x));
        emit(st, "blk.out", il, s->x, L, D);
    }

    TRY(be->timestep_norm(be, s->x, L, D, hp->norm_groups, m->out_norm.w, m->out_norm.b,
                          hp->norm_eps, &st->out_norm.count, st->out_norm.mean,
                          st->out_norm.var, s->y));
    emit(st, "output_norm", -1, s->y, L, D);

    if (mode == MG_LOGITS_ALL)
        TRY(be->matmul(be, s->y, L, D, &m->output, hp->n_output, NULL, logits));
    else if (mode == MG_LOGITS_LAST && logits)
        TRY(be->matmul(be, s->y + (size_t)(L - 1) * D, 1, D, &m->output, hp->n_output, NULL,
                       logits));

    st->n_kv = (int)((st->n_kv + L) % hp->chunk_size);
    st->n_past += (uint64_t)L;
    return MG_OK;
}

/* ---------------------------------------------------------------- atomic calls
 * A call that fails half-way (out of memory in an op) must leave the state as it was
 * (megalodon.h). What a call can change: every norm's statistics, the CEMA states, n_past,
 * n_kv, and - only when it runs past the end of the current chunk - the cached keys/values
 * of that chunk's first n_kv tokens (later rows are beyond the restored n_kv). The copy costs
 * 2DN + 2G floats per layer, small beside the call's work. A backend that keeps h and the
 * statistics on the device (backend.h: state_snapshot) backs those up there instead, so
 * that a call does not read them back; it says which ones it took. */
typedef struct {
    void *kv_buf;    /* malloc'd for a call that crosses a chunk boundary, else NULL */
    int64_t *counts; /* n_layer + 1 */
    float *f;        /* per layer mean, var (G each), h (2DN); then the final norm's mean, var */
    float *kv;       /* NULL, or per layer k then v of rows [0, n_kv) */
    uint64_t n_past;
    int n_kv;
} snapshot;

size_t mg_state_backup_size(const mg_hparams *hp)
{
    const size_t G = hp->norm_groups, DN2 = (size_t)hp->n_embd * hp->cema_ndim * 2,
                 nl = hp->n_layer;
    return sizeof(int64_t) * (nl + 1) + sizeof(float) * (nl * (2 * G + DN2) + 2 * G);
}

/* One region of h or norm statistics into the backup: on the device when the backend keeps
 * it there (backend.h: state_snapshot), else a copy of the host's. MG_OK or an error. */
static int backup_region(mg_backend *be, float *dst, const float *src, size_t n)
{
    int rc = be->state_snapshot ? be->state_snapshot(be, src, 0) : 0;
    if (rc == 0) memcpy(dst, src, sizeof(float) * n);
    return rc < 0 ? rc : MG_OK;
}

/* Back from the device's backup when it took one, else from the host's copy (then the
 * device's copy is stale); the first error goes to *bad. */
static void restore_region(mg_backend *be, float *dst, const float *src, size_t n, int *bad)
{
    int rc = be->state_snapshot ? be->state_snapshot(be, dst, 1) : 0;
    if (rc == 0) {
        memcpy(dst, src, sizeof(float) * n);
        if (be->state_changed) be->state_changed(be, dst, 0, sizeof(float) * n);
    } else if (rc < 0 && !*bad) {
        *bad = rc;
    }
}

/* Into st->backup (allocated with the state: no allocation per call), plus the chunk's keys
 * and values into a buffer of their own when the call crosses a chunk boundary. */
static int snapshot_take(const mg_state *st, size_t n_tokens, snapshot *sn)
{
    const mg_hparams *hp = &st->model->hp;
    const size_t G = hp->norm_groups, DN2 = (size_t)hp->n_embd * hp->cema_ndim * 2,
                 ZE = (size_t)hp->z_dim + hp->value_dim, nl = hp->n_layer;
    const int crossing = st->n_kv > 0 && (size_t)st->n_kv + n_tokens > (size_t)hp->chunk_size;
    sn->kv_buf = NULL;
    if (crossing && !(sn->kv_buf = malloc(sizeof(float) * nl * st->n_kv * ZE)))
        return mg_seterr(MG_ERR_NOMEM, "out of memory for the backup of the chunk's keys and "
                         "values (an eval call across a chunk boundary: %d layers x %d tokens x "
                         "(Z + E = %zu))", (int)nl, st->n_kv, ZE);
    sn->counts = st->backup;
    sn->f = (float *)(sn->counts + nl + 1);
    sn->kv = sn->kv_buf;
    sn->n_past = st->n_past;
    sn->n_kv = st->n_kv;
    float *f = sn->f, *kv = sn->kv;
    mg_backend *be = st->model->be;
    int rc = MG_OK;
    for (size_t il = 0; il < nl && !rc; il++) {
        const mg_layer_state *ls = &st->layers[il];
        sn->counts[il] = ls->tnorm.count;
        rc = backup_region(be, f, ls->tnorm.mean, G);
        if (!rc) rc = backup_region(be, f + G, ls->tnorm.var, G);
        if (!rc) rc = backup_region(be, f + 2 * G, ls->h, DN2);
        f += 2 * G + DN2;
        if (kv) {
            memcpy(kv, ls->k, sizeof(float) * st->n_kv * hp->z_dim);
            kv += (size_t)st->n_kv * hp->z_dim;
            memcpy(kv, ls->v, sizeof(float) * st->n_kv * hp->value_dim);
            kv += (size_t)st->n_kv * hp->value_dim;
        }
    }
    sn->counts[nl] = st->out_norm.count;
    if (!rc) rc = backup_region(be, f, st->out_norm.mean, G);
    if (!rc) rc = backup_region(be, f + G, st->out_norm.var, G);
    if (rc) {
        free(sn->kv_buf);
        sn->kv_buf = NULL;
        return mg_adderr_context(rc, "backing up the state before mg_eval");
    }
    return MG_OK;
}

/* MG_OK, or an error when the backend could not put its device backup back (then the state
 * is not the one before the call). */
static int snapshot_restore(mg_state *st, const snapshot *sn)
{
    const mg_hparams *hp = &st->model->hp;
    const size_t G = hp->norm_groups, DN2 = (size_t)hp->n_embd * hp->cema_ndim * 2,
                 nl = hp->n_layer;
    const float *f = sn->f, *kv = sn->kv;
    mg_backend *be = st->model->be;
    int bad = MG_OK;
    for (size_t il = 0; il < nl; il++) {
        mg_layer_state *ls = &st->layers[il];
        ls->tnorm.count = sn->counts[il];
        restore_region(be, ls->tnorm.mean, f, G, &bad);
        restore_region(be, ls->tnorm.var, f + G, G, &bad);
        restore_region(be, ls->h, f + 2 * G, DN2, &bad);
        f += 2 * G + DN2;
        if (kv) {
            memcpy(ls->k, kv, sizeof(float) * sn->n_kv * hp->z_dim);
            if (be->state_changed)
                be->state_changed(be, ls->k, 0, sizeof(float) * sn->n_kv * hp->z_dim);
            kv += (size_t)sn->n_kv * hp->z_dim;
            memcpy(ls->v, kv, sizeof(float) * sn->n_kv * hp->value_dim);
            if (be->state_changed)
                be->state_changed(be, ls->v, 0, sizeof(float) * sn->n_kv * hp->value_dim);
            kv += (size_t)sn->n_kv * hp->value_dim;
        }
    }
    st->out_norm.count = sn->counts[nl];
    restore_region(be, st->out_norm.mean, f, G, &bad);
    restore_region(be, st->out_norm.var, f + G, G, &bad);
    st->n_past = sn->n_past;
    st->n_kv = sn->n_kv;
    return bad;
}

int mg_eval(mg_state *st, const int32_t *tokens, size_t n_tokens, float *logits,
            mg_logits_mode mode)
{
    if (!st || (n_tokens && !tokens))
        return mg_seterr(MG_ERR_INVALID_ARG, "mg_eval: NULL state or tokens");
    if (mode != MG_LOGITS_NONE && mode != MG_LOGITS_LAST && mode != MG_LOGITS_ALL)
        return mg_seterr(MG_ERR_INVALID_ARG, "mg_eval: unknown logits mode %d", (int)mode);
    if (mode != MG_LOGITS_NONE && !logits)
        return mg_seterr(MG_ERR_INVALID_ARG, "mg_eval: logits requested but buffer is NULL");
    const mg_hparams *hp = &st->model->hp;
    for (size_t i = 0; i < n_tokens; i++)
        if (tokens[i] < 0 || tokens[i] >= hp->n_vocab)
            return mg_seterr(MG_ERR_INVALID_ARG,
                             "token id %ld at position %zu is out of range [0, %d)",
                             (long)tokens[i], i, hp->n_vocab);
    if (n_tokens == 0) return MG_OK;

    const int C = hp->chunk_size, cap = st->s.cap;
    snapshot sn = {0};
    TRY(snapshot_take(st, n_tokens, &sn));
    size_t done = 0;
    while (done < n_tokens) {
        size_t left = n_tokens - done;
        /* Realign to a chunk boundary first when steps are whole chunks. */
        int L = cap;
        if (cap >= C && st->n_kv > 0) L = C - st->n_kv;
        if ((size_t)L > left) L = (int)left;
        int last = done + (size_t)L == n_tokens;
        float *lg = NULL;
        mg_logits_mode md = MG_LOGITS_NONE;
        if (mode == MG_LOGITS_ALL) {
            lg = logits + done * (size_t)hp->n_output;
            md = MG_LOGITS_ALL;
        } else if (mode == MG_LOGITS_LAST && last) {
            lg = logits;
            md = MG_LOGITS_LAST;
        }
        int rc = eval_step(st, tokens + done, L, lg, md);
        if (rc) {
            const unsigned long long at = st->n_past;
            int rrc = snapshot_restore(st, &sn);
            free(sn.kv_buf);
            if (rrc)
                return mg_adderr_context(rrc, "mg_eval failed at token %llu, then restoring "
                                         "the state failed (the state is lost: reset or load "
                                         "it)", at);
            return mg_adderr_context(rc, "mg_eval at token %llu (the state is as before the call)",
                                     at);
        }
        done += (size_t)L;
    }
    free(sn.kv_buf);
    return MG_OK;
}

/* train.c - the whole model's training forward and backward (llm.c style: every layer keeps
 * its activations, the backward runs layer by layer in reverse).
 *
 *   x_0    = embed[ids] (* sqrt(D) with scale_emb)         B rows of L tokens, fresh states
 *   x_i+1  = Block_i(x_i)                                   attention.c, ffn.c
 *   yn     = TimestepNorm_final(x_n)
 *   loss   = mean_t CE(yn_t W_out^T, target_t)
 *
 * Gradients are added to the buffers of mg_train_grads; the head is processed a block of
 * rows at a time, so the logits of all T tokens are never held at once. */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "train.h"

#define HEAD_ROWS 256 /* rows of logits computed at once */

int mg_tnorm_var0(const mg_tnorm_params *p, int G, float **var0)
{
    float *v = malloc(sizeof(float) * (size_t)G);
    if (!v)
        return mg_seterr(MG_ERR_NOMEM, "out of memory for the prior variances of a timestep "
                         "norm (G=%d)", G);
    for (int g = 0; g < G; g++) v[g] = expf(p->prior_logv[g]);
    *var0 = v;
    return MG_OK;
}

/* ---------------------------------------------------------------- activations */

static float *take(mg_train_act *a, size_t n, int *fail)
{
    if (*fail || n == 0) return NULL;
    float *p = malloc(sizeof(float) * n);
    void **b = p ? realloc(a->bufs, sizeof(void *) * (a->n_bufs + 1)) : NULL;
    if (!b) {
        free(p);
        *fail = 1;
        return NULL;
    }
    a->bufs = b;
    a->bufs[a->n_bufs++] = p;
    return p;
}

void mg_train_act_free(mg_train_act *a)
{
    if (!a) return;
    for (size_t i = 0; i < a->n_bufs; i++) free(a->bufs[i]);
    free(a->bufs);
    free(a->layers);
    free(a);
}

int mg_train_act_new(const mg_hparams *hp, int B, int L, mg_train_act **out)
{
    *out = NULL;
    const int C = hp->chunk_size;
    if (B < 1 || L < 1) return mg_seterr(MG_ERR_INVALID_ARG, "batch %d x length %d: both must be >= 1", B, L);
    if (L > C && L % C != 0)
        return mg_seterr(MG_ERR_INVALID_ARG, "sequence length %d must be below the chunk size %d "
                         "or a multiple of it", L, C);
    if ((int64_t)B * L > (1 << 26))
        return mg_seterr(MG_ERR_INVALID_ARG, "batch %d x length %d is too many tokens for one pass",
                         B, L);
    mg_train_act *a = calloc(1, sizeof *a);
    if (!a) return mg_seterr(MG_ERR_NOMEM, "out of memory for the training activations' table");
    const size_t T = (size_t)B * L, D = hp->n_embd, Z = hp->z_dim, E = hp->value_dim,
                 F = hp->n_ff, G = hp->norm_groups, H = hp->n_head, N = hp->cema_ndim;
    a->B = B;
    a->L = L;
    a->T = (int)T;
    a->Lc = L < C ? L : C;
    a->n_chunks = (int)(T / a->Lc);
    int fail = 0;
    a->layers = calloc((size_t)hp->n_layer, sizeof *a->layers);
    if (!a->layers) fail = 1;
    for (int il = 0; !fail && il < hp->n_layer; il++) {
        mg_layer_act *l = &a->layers[il];
        l->x = take(a, T * D, &fail);
        l->xt = take(a, T * D, &fail);
        l->tmean = take(a, T * G, &fail);
        l->trstd = take(a, T * G, &fail);
        l->c = take(a, T * D, &fail);
        l->mx = take(a, T * D, &fail);
        l->zpre = take(a, T * Z, &fail);
        l->zn = take(a, T * Z, &fail);
        l->q = take(a, T * Z, &fail);
        l->k = take(a, T * Z, &fail);
        l->vpre = take(a, T * E, &fail);
        l->v = take(a, T * E, &fail);
        l->rpre = take(a, T * E, &fail);
        l->r = take(a, T * E, &fail);
        l->P = take(a, (size_t)a->n_chunks * H * a->Lc * a->Lc, &fail);
        l->a = take(a, T * E, &fail);
        l->ar = take(a, T * E, &fail);
        l->y = take(a, T * D, &fail);
        l->xn = take(a, T * D, &fail);
        l->u1 = take(a, T * F, &fail);
        l->u3 = hp->swiglu ? take(a, T * F, &fail) : NULL;
        l->u = take(a, T * F, &fail);
        l->o = hp->rescale_nffn ? take(a, T * D, &fail) : NULL;
    }
    a->x_final = take(a, T * D, &fail);
    a->yn = take(a, T * D, &fail);
    a->fmean = take(a, T * G, &fail);
    a->frstd = take(a, T * G, &fail);
    mg_train_scratch *g = &a->g;
    g->d1 = take(a, T * D, &fail);
    g->d2 = take(a, T * D, &fail);
    g->d3 = take(a, T * D, &fail);
    g->dmx = take(a, T * D, &fail);
    g->dxt = take(a, T * D, &fail);
    g->dz = take(a, T * Z, &fail);
    g->dz2 = take(a, T * Z, &fail);
    g->dq = take(a, T * Z, &fail);
    g->dk = take(a, T * Z, &fail);
    g->dr = take(a, T * E, &fail);
    g->da = take(a, T * E, &fail);
    g->dar = take(a, T * E, &fail);
    g->du = take(a, T * F, &fail);
    g->du1 = take(a, T * F, &fail);
    g->du3 = take(a, T * F, &fail);
    g->dp = take(a, D * N, &fail);
    g->dqc = take(a, 2 * D * N, &fail);
    g->deta = take(a, 2 * D * N, &fail);
    g->domega = take(a, D, &fail);
    a->logits = take(a, (size_t)HEAD_ROWS * hp->n_output, &fail);
    a->dx = take(a, T * D, &fail);
    a->dy = take(a, T * D, &fail);
    a->dx2 = take(a, T * D, &fail);
    if (fail) {
        mg_train_act_free(a);
        return mg_seterr(MG_ERR_NOMEM, "out of memory for the training activations of %d x %d "
                         "tokens (reduce --batch or --seq-len)", B, L);
    }
    *out = a;
    return MG_OK;
}

/* ---------------------------------------------------------------- the pass */

/* The CEMA algorithm of the backward is the one asked for, passed to the backend's
 * cema_backward as it is: MG_CEMA_AUTO is resolved there by the backward's planner
 * (lib/cema-plan.c: cema_estimate_backward, or measured once per shape in measure mode), and
 * MEGALODON_CEMA overrides it there (docs/cema.md: "The planner"). */

int mg_train_pass(const mg_model *m, mg_cema_algo algo, mg_train_act *a, const int32_t *ids,
                  const mg_layer_tensors *wt, const mg_layer_tensors *gr,
                  const mg_train_head_grads *hg, double *loss)
{
    const mg_hparams *hp = &m->hp;
    mg_backend *be = m->be;
    const int B = a->B, L = a->L, T = a->T;
    const int D = hp->n_embd, G = hp->norm_groups, V = hp->n_output;
    const size_t TD = (size_t)T * D;
    const int backward = gr != NULL;

    for (int b = 0; b < B; b++)
        for (int t = 0; t < L; t++) {
            const int32_t id = ids[(size_t)b * (L + 1) + t], tg = ids[(size_t)b * (L + 1) + t + 1];
            if (id < 0 || id >= hp->n_vocab || tg < 0 || tg >= V)
                return mg_seterr(MG_ERR_INVALID_ARG, "token id %ld at row %d position %d is out "
                                 "of range [0, %d)", (long)(id < 0 || id >= hp->n_vocab ? id : tg),
                                 b, id < 0 || id >= hp->n_vocab ? t : t + 1, hp->n_vocab);
        }

    /* ---- forward */
    float *x0 = hp->n_layer > 0 ? a->layers[0].x : a->x_final;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < L; t++)
            memcpy(x0 + ((size_t)b * L + t) * D,
                   mg_weight_f32(&m->tok_embd) + (size_t)ids[(size_t)b * (L + 1) + t] * D, sizeof(float) * D);
    if (hp->scale_emb) TRY(be->scale(be, x0, sqrtf((float)D), x0, TD));
    for (int il = 0; il < hp->n_layer; il++) {
        mg_layer_act *l = &a->layers[il];
        TRY(mg_mega_forward(m, il, algo, NULL, 0, NULL, l, B, L, l->x, l->y));
        float *out = il + 1 < hp->n_layer ? a->layers[il + 1].x : a->x_final;
        TRY(mg_ffn_forward(m, il, NULL, l, T, l->x, l->y, out));
    }
    float *var0 = NULL;
    TRY(mg_tnorm_var0(&m->out_norm, G, &var0));
    int rc = be->timestep_norm_train(be, a->x_final, B, L, D, G, m->out_norm.w, m->out_norm.b,
                                     hp->norm_eps, m->out_norm.prior_count, m->out_norm.prior_mean,
                                     var0, a->yn, a->fmean, a->frstd);
    free(var0);
    TRY(rc);

    /* ---- head and loss, HEAD_ROWS rows at a time; dL/dyn into a->dy */
    double lsum = 0;
    const float scale = 1.0f / (float)T;
    int32_t *tg = malloc(sizeof(int32_t) * HEAD_ROWS);
    if (!tg)
        return mg_seterr(MG_ERR_NOMEM, "out of memory for the targets of a block of %d rows",
                         HEAD_ROWS);
    for (int r0 = 0; r0 < T; r0 += HEAD_ROWS) {
        const int n = T - r0 < HEAD_ROWS ? T - r0 : HEAD_ROWS;
        for (int i = 0; i < n; i++) {
            const int row = r0 + i, b = row / L, t = row % L;
            tg[i] = ids[(size_t)b * (L + 1) + t + 1];
        }
        const float *yr = a->yn + (size_t)r0 * D;
        TRY_GOTO(be->matmul(be, yr, n, D, &m->output, V, NULL, a->logits), head_done);
        TRY_GOTO(be->cross_entropy(be, a->logits, tg, n, V, scale, &lsum,
                                   backward ? a->logits : NULL), head_done);
        if (backward)
            TRY_GOTO(be->matmul_backward(be, yr, n, D, mg_weight_f32(&m->output), V, a->logits,
                                         a->dy + (size_t)r0 * D, 0, hg->output, NULL),
                     head_done);
    }
head_done:
    free(tg);
    TRY(rc);
    *loss = lsum / T;
    if (!backward) return MG_OK;

    /* ---- backward: final norm, blocks in reverse, embedding */
    TRY(be->timestep_norm_backward(be, a->x_final, B, L, D, G, m->out_norm.w,
                                   m->out_norm.prior_count, m->out_norm.prior_mean, a->fmean,
                                   a->frstd, a->dy, a->dx, hg->out_norm_w, hg->out_norm_b));
    for (int il = hp->n_layer - 1; il >= 0; il--) {
        mg_layer_act *l = &a->layers[il];
        /* out = x + FFN(y): dy from the FFN ; y = MEGA(x): dx2 = dy + tnorm path */
        TRY(mg_ffn_backward(m, il, &gr[il], l, &a->g, T, a->dx, a->dy));
        TRY(mg_mega_backward(m, il, algo, &wt[il], &gr[il], l, &a->g, B, L, a->dy, a->dx2));
        TRY(be->add(be, a->dx, a->dx2, a->dx, TD)); /* + the two-hop residual */
    }
    const float es = hp->scale_emb ? sqrtf((float)D) : 1.0f;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < L; t++) {
            float *ge = hg->tok_embd + (size_t)ids[(size_t)b * (L + 1) + t] * D;
            const float *gx = a->dx + ((size_t)b * L + t) * D;
            for (int j = 0; j < D; j++) ge[j] += gx[j] * es;
        }
    return MG_OK;
}

/* attention.c - the MEGA sub-layer (moving-average gated attention), forward and backward.
 *
 *   xt = TimestepNorm(x)                      running statistics carried in the state
 *   c  = CEMA(xt)                             hidden state carried in the state
 *   mx = RMSNorm(c) (1 + w)
 *   z  = RMSNorm_head(mx Wz^T + bz)           per head over dz, no affine
 *   q  = z (1 + gamma_0)/sqrt(dz) + beta_0 ;  k = z (1 + gamma_1)/sqrt(dz) + beta_1
 *   v  = silu(xt Wv^T + bv)                   from the timestep-norm output, not mx
 *   r  = silu(mx Wr^T + br)
 *   a  = ChunkAttention(RoPE(q), RoPE(k), v)  causal inside chunks, no 1/sqrt(d) scale
 *   y  = x + mx Wh1^T + bh1 + (a * r) Wh2^T
 *
 * One forward serves both callers (model.h: mg_mega_forward). Streaming: the L tokens start
 * at position n_kv inside the current chunk. They are cut into segments at chunk
 * boundaries; RoPE positions restart at 0 in every chunk. A segment that starts inside a
 * chunk attends over the cached keys/values of that chunk too; a segment that leaves its
 * chunk unfinished leaves its keys/values in the cache. Training: B rows of L tokens, each
 * from fresh states, in chunks of Lc = min(L, C) tokens; everything the backward reads is
 * kept (model.h: mg_layer_act). */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "model.h"
#include "train.h"

/* Where the forward writes what it computes: the training activations, or the streaming
 * scratch, where a value the backward would need shares its buffer with what it becomes
 * (c with mx, zpre with zn, vpre with v, rpre with r, a with ar: those ops run in place). */
typedef struct {
    float *xt, *c, *mx, *zpre, *zn, *q, *k, *vpre, *v, *rpre, *r, *a, *ar;
    float *o; /* (a r) Wh2^T, until it is added into y */
} mega_bufs;

static mega_bufs mega_bufs_of(mg_scratch *s, mg_layer_act *act)
{
    if (act)
        return (mega_bufs){.xt = act->xt, .c = act->c, .mx = act->mx, .zpre = act->zpre,
                           .zn = act->zn, .q = act->q, .k = act->k, .vpre = act->vpre,
                           .v = act->v, .rpre = act->rpre, .r = act->r, .a = act->a,
                           .ar = act->ar, .o = act->xn /* free until the FFN */};
    return (mega_bufs){.xt = s->xt, .c = s->mx, .mx = s->mx, .zpre = s->z, .zn = s->z,
                       .q = s->q_step, .k = s->k_step, .vpre = s->v_step, .v = s->v_step,
                       .rpre = s->r, .r = s->r, .a = s->a, .ar = s->a, .o = s->proj};
}

/* xt = TimestepNorm(x). Streaming (ls): over the state's running statistics. Training (act):
 * every row from the prior, the statistics after every token kept. */
static int tnorm_forward(const mg_model *m, int il, mg_layer_state *ls, mg_layer_act *act,
                         int B, int L, const float *x, float *xt)
{
    const mg_hparams *hp = &m->hp;
    const mg_tnorm_params *p = &m->layers[il].tnorm;
    mg_backend *be = m->be;
    const int D = hp->n_embd, G = hp->norm_groups;
    if (!act)
        return be->timestep_norm(be, x, L, D, G, p->w, p->b, hp->norm_eps, &ls->tnorm.count,
                                 ls->tnorm.mean, ls->tnorm.var, xt);
    float *var0 = NULL;
    TRY(mg_tnorm_var0(p, G, &var0));
    int rc = be->timestep_norm_train(be, x, B, L, D, G, p->w, p->b, hp->norm_eps,
                                     p->prior_count, p->prior_mean, var0, xt, act->tmean,
                                     act->trstd);
    free(var0);
    return rc;
}

/* c = CEMA(xt) per row of L tokens: from the state's h, which it carries on (streaming, one
 * row), or from a zero state (training). */
static int cema_forward(const mg_model *m, int il, mg_cema_algo algo, mg_layer_state *ls,
                        int B, int L, const float *xt, float *c)
{
    const mg_hparams *hp = &m->hp;
    const mg_cema_coeffs *cf = &m->layers[il].cema;
    mg_backend *be = m->be;
    const size_t LD = (size_t)L * hp->n_embd, DN2 = (size_t)hp->n_embd * hp->cema_ndim * 2;
    if (ls) return be->cema(be, algo, xt, L, cf, ls->h, c);
    float *h = malloc(sizeof(float) * DN2);
    if (!h)
        return mg_seterr(MG_ERR_NOMEM, "out of memory for the zero CEMA state of a training row "
                         "(D=%d, N=%d)", hp->n_embd, hp->cema_ndim);
    int rc = MG_OK;
    for (int b = 0; b < B && !rc; b++) {
        memset(h, 0, sizeof(float) * DN2);
        rc = be->cema(be, algo, xt + b * LD, L, cf, h, c + b * LD);
    }
    free(h);
    return rc;
}

/* Streaming attention of the step's L tokens, one chunk segment at a time (the file's
 * comment); q and k are rotated here, and the keys/values of an unfinished chunk join the
 * state's cache. */
static int attend_stream(const mg_model *m, mg_layer_state *ls, int n_kv, const mega_bufs *b,
                         int L)
{
    const mg_hparams *hp = &m->hp;
    mg_backend *be = m->be;
    const int Z = hp->z_dim, E = hp->value_dim, H = hp->n_head, C = hp->chunk_size;
    const int dz = Z / H, dv = E / H;
    int t0 = 0, pos = n_kv;
    while (t0 < L) {
        int len = C - pos < L - t0 ? C - pos : L - t0;
        float *qs = b->q + (size_t)t0 * Z, *ks = b->k + (size_t)t0 * Z;
        float *vs = b->v + (size_t)t0 * E, *as = b->a + (size_t)t0 * E;
        TRY(be->rope(be, qs, len, H, dz, pos, m->rope_freqs));
        TRY(be->rope(be, ks, len, H, dz, pos, m->rope_freqs));
        int unfinished = pos + len < C;
        if (pos > 0 || unfinished) { /* the segment's keys join the chunk cache */
            memcpy(ls->k + (size_t)pos * Z, ks, sizeof(float) * (size_t)len * Z);
            memcpy(ls->v + (size_t)pos * E, vs, sizeof(float) * (size_t)len * E);
            if (be->state_changed) { /* a device copy of the cache: these rows are new */
                be->state_changed(be, ls->k, sizeof(float) * (size_t)pos * Z,
                                  sizeof(float) * (size_t)len * Z);
                be->state_changed(be, ls->v, sizeof(float) * (size_t)pos * E,
                                  sizeof(float) * (size_t)len * E);
            }
        }
        /* over the cache when the segment joined it (the same keys; a backend that keeps the
         * cache on the device then sends only the new rows) */
        if (pos > 0 || unfinished)
            TRY(be->attention(be, qs, ls->k, ls->v, len, pos + len, H, dz, dv, as));
        else
            TRY(be->attention(be, qs, ks, vs, len, len, H, dz, dv, as));
        t0 += len;
        pos = (pos + len) % C;
    }
    return MG_OK;
}

/* RoPE of every chunk of Lc tokens (positions 0 .. Lc-1); inverse with freqs negated. */
static int rope_chunks(mg_backend *be, float *x, int T, int Lc, int H, int dh,
                       const float *freqs)
{
    for (int t0 = 0; t0 < T; t0 += Lc)
        TRY(be->rope(be, x + (size_t)t0 * H * dh, Lc, H, dh, 0, freqs));
    return MG_OK;
}

/* Training attention inside each chunk of Lc tokens of the T = B*L, its probabilities kept in
 * act->P for the backward. */
static int attend_chunks(const mg_model *m, mg_layer_act *act, int T, int Lc)
{
    const mg_hparams *hp = &m->hp;
    mg_backend *be = m->be;
    const int H = hp->n_head, dz = hp->z_dim / H, dv = hp->value_dim / H;
    TRY(rope_chunks(be, act->q, T, Lc, H, dz, m->rope_freqs));
    TRY(rope_chunks(be, act->k, T, Lc, H, dz, m->rope_freqs));
    return be->attention_train(be, act->q, act->k, act->v, T / Lc, Lc, H, dz, dv, act->a,
                               act->P);
}

int mg_mega_forward(const mg_model *m, int il, mg_cema_algo algo, mg_layer_state *ls, int n_kv,
                    mg_scratch *s, mg_layer_act *act, int B, int L, const float *x, float *y)
{
    const mg_hparams *hp = &m->hp;
    const mg_layer *w = &m->layers[il];
    mg_backend *be = m->be;
    const int D = hp->n_embd, Z = hp->z_dim, E = hp->value_dim, H = hp->n_head;
    const int C = hp->chunk_size, dz = Z / H, T = B * L;
    const size_t TD = (size_t)T * D, TE = (size_t)T * E;
    const mega_bufs b = mega_bufs_of(s, act);

    /* xt = TimestepNorm(x) ; mx = RMSNorm(CEMA(xt)) (1 + w) */
    TRY(tnorm_forward(m, il, ls, act, B, L, x, b.xt));
    TRY(cema_forward(m, il, algo, ls, B, L, b.xt, b.c));
    TRY(be->rms_norm(be, b.c, T, D, w->attn_norm_w, hp->norm_eps, b.mx));

    /* q, k from the normalized shared projection zn = RMSNorm_head(mx Wz^T + bz) */
    TRY(be->matmul(be, b.mx, T, D, &w->wz, Z, w->bz, b.zpre));
    TRY(be->rms_norm(be, b.zpre, (size_t)T * H, dz, NULL, hp->norm_eps, b.zn));
    TRY(be->affine_rows(be, b.zn, T, Z, w->qk_scale, w->qk_shift, b.q));
    TRY(be->affine_rows(be, b.zn, T, Z, w->qk_scale + Z, w->qk_shift + Z, b.k));

    /* v = silu(xt Wv^T + bv) ; r = silu(mx Wr^T + br) */
    TRY(be->matmul(be, b.xt, T, D, &w->wv, E, w->bv, b.vpre));
    TRY(be->silu(be, b.vpre, b.v, TE));
    TRY(be->matmul(be, b.mx, T, D, &w->wr, E, w->br, b.rpre));
    TRY(be->silu(be, b.rpre, b.r, TE));

    /* a = ChunkAttention(RoPE(q), RoPE(k), v) */
    if (act)
        TRY(attend_chunks(m, act, T, L < C ? L : C));
    else
        TRY(attend_stream(m, ls, n_kv, &b, L));

    /* y = x + mx Wh1^T + bh1 + (a r) Wh2^T */
    TRY(be->mul(be, b.a, b.r, b.ar, TE));
    TRY(be->matmul(be, b.mx, T, D, &w->wh1, D, w->bh1, y));
    TRY(be->matmul(be, b.ar, T, E, &w->wh2, D, NULL, b.o));
    TRY(be->add(be, y, b.o, y, TD));
    TRY(be->add(be, y, x, y, TD));
    return MG_OK;
}

/* out[j] += sum_rows x[r,j] (* y[r,j] when y) * s, columns split across threads */
static void colsum(mg_backend *be, const float *x, const float *y, int rows, int n, float s,
                   float *out)
{
#pragma omp parallel for num_threads(be->n_threads) schedule(static) if (n >= 64)
    for (int j = 0; j < n; j++) {
        double acc = 0;
        for (int r = 0; r < rows; r++)
            acc += (double)x[(size_t)r * n + j] * (y ? y[(size_t)r * n + j] : 1.0f);
        out[j] += (float)(acc * s);
    }
}

/* Backward, in reverse order of the forward (g: scratch; gr: gradient buffers):
 *   y = x + mx Wh1^T + bh1 + ar Wh2^T      -> dmx, dar ; dx = dy
 *   ar = a r, r = silu(rpre)               -> da, drpre
 *   a = attention(q, k, v)                 -> dq, dk, dv ; v = silu(vpre) -> dvpre
 *   vpre = xt Wv^T + bv, rpre = mx Wr^T+br -> dxt, dmx
 *   q = rope(zn s_q + b_q), k likewise     -> dzn, dgamma = sum dq zn/sqrt(dz), dbeta
 *   zn = rmsnorm(zpre), zpre = mx Wz^T+bz  -> dmx
 *   mx = rmsnorm(c)(1+w), c = CEMA(xt)     -> dc, dxt, CEMA parameter gradients
 *   xt = TimestepNorm(x)                   -> dx += */
int mg_mega_backward(const mg_model *m, int il, mg_cema_algo algo, const mg_layer_tensors *wt,
                     const mg_layer_tensors *gr, mg_layer_act *act, mg_train_scratch *g, int B,
                     int L, const float *dy, float *dx)
{
    const mg_hparams *hp = &m->hp;
    const mg_layer *w = &m->layers[il];
    mg_backend *be = m->be;
    const int D = hp->n_embd, Z = hp->z_dim, E = hp->value_dim, H = hp->n_head;
    const int N = hp->cema_ndim, G = hp->norm_groups, dz = Z / H, dv = E / H, T = B * L;
    const int Lc = L < hp->chunk_size ? L : hp->chunk_size;
    const size_t TD = (size_t)T * D, TE = (size_t)T * E, TZ = (size_t)T * Z;

    /* output projections */
    TRY(be->matmul_backward(be, act->mx, T, D, mg_weight_f32(&w->wh1), D, dy, g->dmx, 0, gr->wh1, gr->bh1));
    TRY(be->matmul_backward(be, act->ar, T, E, mg_weight_f32(&w->wh2), D, dy, g->dar, 0, gr->wh2, NULL));
    /* gate: da = dar r ; dr = dar a ; drpre = dr silu'(rpre) */
    TRY(be->mul(be, g->dar, act->r, g->da, TE));
    TRY(be->mul(be, g->dar, act->a, g->dr, TE));
    TRY(be->silu_backward(be, act->rpre, g->dr, g->dr, TE));
    /* attention (dar is free: it takes dv) */
    TRY(be->attention_backward(be, act->q, act->k, act->v, act->P, g->da, T / Lc, Lc, H, dz, dv,
                               g->dq, g->dk, g->dar));
    TRY(be->silu_backward(be, act->vpre, g->dar, g->dar, TE));
    TRY(be->matmul_backward(be, act->xt, T, D, mg_weight_f32(&w->wv), E, g->dar, g->dxt, 0, gr->wv, gr->bv));
    TRY(be->matmul_backward(be, act->mx, T, D, mg_weight_f32(&w->wr), E, g->dr, g->dmx, 1, gr->wr, gr->br));

    /* un-rotate dq, dk (the rotation is orthogonal: its transpose turns by -angle) */
    const int half = dz / 2;
    float *nf = malloc(sizeof(float) * (size_t)half);
    if (!nf)
        return mg_seterr(MG_ERR_NOMEM, "out of memory for the negated RoPE frequencies (%d)",
                         half);
    for (int i = 0; i < half; i++) nf[i] = -m->rope_freqs[i];
    int rc = rope_chunks(be, g->dq, T, Lc, H, dz, nf);
    if (!rc) rc = rope_chunks(be, g->dk, T, Lc, H, dz, nf);
    free(nf);
    TRY(rc);
    /* q = zn s_q + beta_q, s = (1 + gamma)/sqrt(dz) */
    const float rs = 1.0f / sqrtf((float)dz);
    colsum(be, g->dq, act->zn, T, Z, rs, gr->qk_gamma);
    colsum(be, g->dk, act->zn, T, Z, rs, gr->qk_gamma + Z);
    colsum(be, g->dq, NULL, T, Z, 1.0f, gr->qk_beta);
    colsum(be, g->dk, NULL, T, Z, 1.0f, gr->qk_beta + Z);
    TRY(be->affine_rows(be, g->dq, T, Z, w->qk_scale, NULL, g->dz));
    TRY(be->affine_rows(be, g->dk, T, Z, w->qk_scale + Z, NULL, g->dz2));
    TRY(be->add(be, g->dz, g->dz2, g->dz, TZ));
    TRY(be->rms_norm_backward(be, act->zpre, (size_t)T * H, dz, NULL, hp->norm_eps, g->dz,
                              g->dz2, NULL));
    TRY(be->matmul_backward(be, act->mx, T, D, mg_weight_f32(&w->wz), Z, g->dz2, g->dmx, 1, gr->wz, gr->bz));

    /* mx = RMSNorm(c) ; c = CEMA(xt) */
    TRY(be->rms_norm_backward(be, act->c, T, D, w->attn_norm_w, hp->norm_eps, g->dmx, g->d1,
                              gr->attn_norm_w));
    memset(g->dp, 0, sizeof(float) * (size_t)D * N);
    memset(g->dqc, 0, sizeof(float) * (size_t)D * N * 2);
    memset(g->deta, 0, sizeof(float) * (size_t)D * N * 2);
    memset(g->domega, 0, sizeof(float) * (size_t)D);
    TRY(be->cema_backward(be, algo, act->xt, B, L, &w->cema, g->d1, g->d2, g->dp, g->dqc,
                          g->deta, g->domega));
    mg_cema_coeffs_backward(&w->cema, wt->alpha, wt->delta, wt->theta, g->dp, g->dqc, g->deta,
                            g->domega, gr->alpha, gr->delta, gr->theta, gr->gamma, gr->omega);
    TRY(be->add(be, g->dxt, g->d2, g->dxt, TD));

    /* xt = TimestepNorm(x): dx = dy (residual) + its backward */
    TRY(be->timestep_norm_backward(be, act->x, B, L, D, G, w->tnorm.w, w->tnorm.prior_count,
                                   w->tnorm.prior_mean, act->tmean, act->trstd, g->dxt, g->d1,
                                   gr->tnorm_w, gr->tnorm_b));
    TRY(be->add(be, dy, g->d1, dx, TD));
    return MG_OK;
}

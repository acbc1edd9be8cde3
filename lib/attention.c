/* attention.c - the MEGA sub-layer (moving-average gated attention), forward.
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
 * The L tokens start at position n_kv inside the current chunk. They are cut into segments
 * at chunk boundaries; RoPE positions restart at 0 in every chunk. A segment that starts
 * inside a chunk attends over the cached keys/values of that chunk too; a segment that
 * leaves its chunk unfinished leaves its keys/values in the cache. */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "model.h"
#include "train.h"

int mg_mega_forward(const mg_model *m, int il, mg_layer_state *ls, int n_kv, mg_cema_algo algo,
                    mg_scratch *s, int L, const float *x, float *y)
{
    const mg_hparams *hp = &m->hp;
    const mg_layer *w = &m->layers[il];
    mg_backend *be = m->be;
    const int D = hp->n_embd, Z = hp->z_dim, E = hp->value_dim, H = hp->n_head;
    const int C = hp->chunk_size, dz = Z / H, dv = E / H;
    const size_t LD = (size_t)L * D;

    /* xt = TimestepNorm(x) */
    TRY(be->timestep_norm(be, x, L, D, hp->norm_groups, w->tnorm.w, w->tnorm.b, hp->norm_eps,
                          &ls->tnorm.count, ls->tnorm.mean, ls->tnorm.var, s->xt));
    /* mx = RMSNorm(CEMA(xt)) */
    TRY(be->cema(be, algo, s->xt, L, &w->cema, ls->h, s->mx));
    TRY(be->rms_norm(be, s->mx, L, D, w->attn_norm_w, hp->norm_eps, s->mx));

    /* q, k from the normalized shared projection z */
    TRY(be->matmul(be, s->mx, L, D, w->wz, Z, w->bz, s->z));
    TRY(be->rms_norm(be, s->z, (size_t)L * H, dz, NULL, hp->norm_eps, s->z));
    TRY(be->affine_rows(be, s->z, L, Z, w->qk_scale, w->qk_shift, s->q));
    TRY(be->affine_rows(be, s->z, L, Z, w->qk_scale + Z, w->qk_shift + Z, s->k));

    /* v from xt, r from mx */
    TRY(be->matmul(be, s->xt, L, D, w->wv, E, w->bv, s->v));
    TRY(be->silu(be, s->v, s->v, (size_t)L * E));
    TRY(be->matmul(be, s->mx, L, D, w->wr, E, w->br, s->r));
    TRY(be->silu(be, s->r, s->r, (size_t)L * E));

    /* attention, one chunk segment at a time */
    int t0 = 0, pos = n_kv;
    while (t0 < L) {
        int len = C - pos < L - t0 ? C - pos : L - t0;
        float *qs = s->q + (size_t)t0 * Z, *ks = s->k + (size_t)t0 * Z;
        float *vs = s->v + (size_t)t0 * E, *as = s->a + (size_t)t0 * E;
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

    /* y = x + mx Wh1^T + bh1 + (a * r) Wh2^T */
    TRY(be->mul(be, s->a, s->r, s->a, (size_t)L * E));
    TRY(be->matmul(be, s->mx, L, D, w->wh1, D, w->bh1, s->h));
    TRY(be->matmul(be, s->a, L, E, w->wh2, D, NULL, y));
    TRY(be->add(be, y, s->h, y, LD));
    TRY(be->add(be, y, x, y, LD));
    return MG_OK;
}

/* ------------------------------------------------------------------ training
 * B rows of L tokens from fresh states, all activations kept (train.h: mg_layer_act); the
 * chunks are Lc = min(L, C) tokens, RoPE positions restart at 0 in each. */

/* RoPE of every chunk (positions 0 .. Lc-1); inverse with freqs negated. */
static int rope_chunks(mg_backend *be, float *x, int T, int Lc, int H, int dh,
                       const float *freqs)
{
    for (int t0 = 0; t0 < T; t0 += Lc) TRY(be->rope(be, x + (size_t)t0 * H * dh, Lc, H, dh, 0, freqs));
    return MG_OK;
}

int mg_mega_train_forward(const mg_model *m, int il, mg_cema_algo algo, mg_layer_act *a,
                          int B, int L, int Lc)
{
    const mg_hparams *hp = &m->hp;
    const mg_layer *w = &m->layers[il];
    mg_backend *be = m->be;
    const int D = hp->n_embd, Z = hp->z_dim, E = hp->value_dim, H = hp->n_head;
    const int N = hp->cema_ndim, G = hp->norm_groups, dz = Z / H, dv = E / H, T = B * L;

    /* xt = TimestepNorm(x), statistics kept */
    float *var0 = NULL;
    TRY(mg_tnorm_var0(&w->tnorm, G, &var0));
    int rc = be->timestep_norm_train(be, a->x, B, L, D, G, w->tnorm.w, w->tnorm.b, hp->norm_eps,
                                     w->tnorm.prior_count, w->tnorm.prior_mean, var0, a->xt,
                                     a->tmean, a->trstd);
    free(var0);
    TRY(rc);
    /* c = CEMA(xt) per row from a zero state ; mx = RMSNorm(c) */
    float *h = calloc((size_t)D * N * 2, sizeof(float));
    if (!h) return mg_seterr(MG_ERR_NOMEM, "out of memory for a CEMA state");
    for (int b = 0; b < B && !rc; b++) {
        memset(h, 0, sizeof(float) * (size_t)D * N * 2);
        rc = be->cema(be, algo, a->xt + (size_t)b * L * D, L, &w->cema, h,
                      a->c + (size_t)b * L * D);
    }
    free(h);
    TRY(rc);
    TRY(be->rms_norm(be, a->c, T, D, w->attn_norm_w, hp->norm_eps, a->mx));

    /* zn = RMSNorm_head(mx Wz^T + bz) ; q, k = affine(zn), then RoPE per chunk */
    TRY(be->matmul(be, a->mx, T, D, w->wz, Z, w->bz, a->zpre));
    TRY(be->rms_norm(be, a->zpre, (size_t)T * H, dz, NULL, hp->norm_eps, a->zn));
    TRY(be->affine_rows(be, a->zn, T, Z, w->qk_scale, w->qk_shift, a->q));
    TRY(be->affine_rows(be, a->zn, T, Z, w->qk_scale + Z, w->qk_shift + Z, a->k));
    TRY(rope_chunks(be, a->q, T, Lc, H, dz, m->rope_freqs));
    TRY(rope_chunks(be, a->k, T, Lc, H, dz, m->rope_freqs));

    /* v = silu(xt Wv^T + bv) ; r = silu(mx Wr^T + br) */
    TRY(be->matmul(be, a->xt, T, D, w->wv, E, w->bv, a->vpre));
    TRY(be->silu(be, a->vpre, a->v, (size_t)T * E));
    TRY(be->matmul(be, a->mx, T, D, w->wr, E, w->br, a->rpre));
    TRY(be->silu(be, a->rpre, a->r, (size_t)T * E));

    /* a = attention inside each chunk ; y = x + mx Wh1^T + bh1 + (a r) Wh2^T */
    TRY(be->attention_train(be, a->q, a->k, a->v, T / Lc, Lc, H, dz, dv, a->a, a->P));
    TRY(be->mul(be, a->a, a->r, a->ar, (size_t)T * E));
    TRY(be->matmul(be, a->mx, T, D, w->wh1, D, w->bh1, a->y));
    TRY(be->matmul(be, a->ar, T, E, w->wh2, D, NULL, a->xn)); /* xn: free until the FFN */
    TRY(be->add(be, a->y, a->xn, a->y, (size_t)T * D));
    TRY(be->add(be, a->y, a->x, a->y, (size_t)T * D));
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
int mg_mega_train_backward(const mg_model *m, int il, mg_cema_algo algo,
                           const mg_layer_tensors *wt, const mg_layer_tensors *gr,
                           mg_layer_act *a, mg_train_scratch *g, int B, int L, int Lc,
                           const float *dy, float *dx)
{
    const mg_hparams *hp = &m->hp;
    const mg_layer *w = &m->layers[il];
    mg_backend *be = m->be;
    const int D = hp->n_embd, Z = hp->z_dim, E = hp->value_dim, H = hp->n_head;
    const int N = hp->cema_ndim, G = hp->norm_groups, dz = Z / H, dv = E / H, T = B * L;
    const size_t TD = (size_t)T * D, TE = (size_t)T * E, TZ = (size_t)T * Z;

    /* output projections */
    TRY(be->matmul_backward(be, a->mx, T, D, w->wh1, D, dy, g->dmx, 0, gr->wh1, gr->bh1));
    TRY(be->matmul_backward(be, a->ar, T, E, w->wh2, D, dy, g->dar, 0, gr->wh2, NULL));
    /* gate: da = dar r ; dr = dar a ; drpre = dr silu'(rpre) */
    TRY(be->mul(be, g->dar, a->r, g->da, TE));
    TRY(be->mul(be, g->dar, a->a, g->dr, TE));
    TRY(be->silu_backward(be, a->rpre, g->dr, g->dr, TE));
    /* attention (dar is free: it takes dv) */
    TRY(be->attention_backward(be, a->q, a->k, a->v, a->P, g->da, T / Lc, Lc, H, dz, dv, g->dq,
                               g->dk, g->dar));
    TRY(be->silu_backward(be, a->vpre, g->dar, g->dar, TE));
    TRY(be->matmul_backward(be, a->xt, T, D, w->wv, E, g->dar, g->dxt, 0, gr->wv, gr->bv));
    TRY(be->matmul_backward(be, a->mx, T, D, w->wr, E, g->dr, g->dmx, 1, gr->wr, gr->br));

    /* un-rotate dq, dk (the rotation is orthogonal: its transpose turns by -angle) */
    const int half = dz / 2;
    float *nf = malloc(sizeof(float) * (size_t)half);
    if (!nf) return mg_seterr(MG_ERR_NOMEM, "out of memory");
    for (int i = 0; i < half; i++) nf[i] = -m->rope_freqs[i];
    int rc = rope_chunks(be, g->dq, T, Lc, H, dz, nf);
    if (!rc) rc = rope_chunks(be, g->dk, T, Lc, H, dz, nf);
    free(nf);
    TRY(rc);
    /* q = zn s_q + beta_q, s = (1 + gamma)/sqrt(dz) */
    const float rs = 1.0f / sqrtf((float)dz);
    colsum(be, g->dq, a->zn, T, Z, rs, gr->qk_gamma);
    colsum(be, g->dk, a->zn, T, Z, rs, gr->qk_gamma + Z);
    colsum(be, g->dq, NULL, T, Z, 1.0f, gr->qk_beta);
    colsum(be, g->dk, NULL, T, Z, 1.0f, gr->qk_beta + Z);
    TRY(be->affine_rows(be, g->dq, T, Z, w->qk_scale, NULL, g->dz));
    TRY(be->affine_rows(be, g->dk, T, Z, w->qk_scale + Z, NULL, g->dz2));
    TRY(be->add(be, g->dz, g->dz2, g->dz, TZ));
    TRY(be->rms_norm_backward(be, a->zpre, (size_t)T * H, dz, NULL, hp->norm_eps, g->dz, g->dz2,
                              NULL));
    TRY(be->matmul_backward(be, a->mx, T, D, w->wz, Z, g->dz2, g->dmx, 1, gr->wz, gr->bz));

    /* mx = RMSNorm(c) ; c = CEMA(xt) */
    TRY(be->rms_norm_backward(be, a->c, T, D, w->attn_norm_w, hp->norm_eps, g->dmx, g->d1,
                              gr->attn_norm_w));
    memset(g->dp, 0, sizeof(float) * (size_t)D * N);
    memset(g->dqc, 0, sizeof(float) * (size_t)D * N * 2);
    memset(g->deta, 0, sizeof(float) * (size_t)D * N * 2);
    memset(g->domega, 0, sizeof(float) * (size_t)D);
    TRY(be->cema_backward(be, algo, a->xt, B, L, &w->cema, g->d1, g->d2, g->dp, g->dqc, g->deta,
                          g->domega));
    mg_cema_coeffs_backward(&w->cema, wt->alpha, wt->delta, wt->theta, g->dp, g->dqc, g->deta,
                            g->domega, gr->alpha, gr->delta, gr->theta, gr->gamma, gr->omega);
    TRY(be->add(be, g->dxt, g->d2, g->dxt, TD));

    /* xt = TimestepNorm(x): dx = dy (residual) + its backward */
    TRY(be->timestep_norm_backward(be, a->x, B, L, D, G, w->tnorm.w, w->tnorm.prior_count,
                                   w->tnorm.prior_mean, a->tmean, a->trstd, g->dxt, g->d1,
                                   gr->tnorm_w, gr->tnorm_b));
    TRY(be->add(be, dy, g->d1, dx, TD));
    return MG_OK;
}

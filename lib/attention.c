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
#include <string.h>

#include "error.h"
#include "model.h"

#define TRY(x)                                                                             \
    do {                                                                                   \
        int rc_ = (x);                                                                     \
        if (rc_) return rc_;                                                               \
    } while (0)

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
        }
        if (pos > 0)
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

/* ffn.c - the normalized feed-forward network with the two-hop residual, forward.
 *
 *   xn  = LayerNorm(y) (1 + w) + b          y = the MEGA sub-layer output
 *   u   = silu(xn W1^T)      [* (xn W3^T) with SwiGLU]      (no biases)
 *   o   = u W2^T             [* alpha with rescale_nffn]
 *   out = x + o                               x = the block input, not y
 */
#include "config.h"

#include "error.h"
#include "model.h"

#define TRY(x)                                                                             \
    do {                                                                                   \
        int rc_ = (x);                                                                     \
        if (rc_) return rc_;                                                               \
    } while (0)

int mg_ffn_forward(const mg_model *m, int il, mg_scratch *s, int L, const float *x,
                   const float *y, float *out)
{
    const mg_hparams *hp = &m->hp;
    const mg_layer *w = &m->layers[il];
    mg_backend *be = m->be;
    const int D = hp->n_embd, F = hp->n_ff;

    float *xn = s->xt; /* free once the MEGA sub-layer is done */
    TRY(be->layer_norm(be, y, L, D, w->ffn_norm_w, w->ffn_norm_b, hp->norm_eps, xn));
    TRY(be->matmul(be, xn, L, D, w->ffn_up, F, NULL, s->u));
    TRY(be->silu(be, s->u, s->u, (size_t)L * F));
    if (w->ffn_gate) {
        TRY(be->matmul(be, xn, L, D, w->ffn_gate, F, NULL, s->u3));
        TRY(be->mul(be, s->u, s->u3, s->u, (size_t)L * F));
    }
    float *o = s->h;
    TRY(be->matmul(be, s->u, L, F, w->ffn_down, D, NULL, o));
    if (w->ffn_alpha) TRY(be->affine_rows(be, o, L, D, w->ffn_alpha, NULL, o));
    TRY(be->add(be, x, o, out, (size_t)L * D));
    return MG_OK;
}

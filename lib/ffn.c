/* ffn.c - the normalized feed-forward network with the two-hop residual, forward and backward.
 *
 *   xn  = LayerNorm(y) (1 + w) + b          y = the MEGA sub-layer output
 *   u   = silu(xn W1^T)      [* (xn W3^T) with SwiGLU]      (no biases)
 *   o   = u W2^T             [* alpha with rescale_nffn]
 *   out = x + o                               x = the block input, not y
 *
 * One forward serves streaming and training (model.h: mg_ffn_forward); training keeps xn,
 * u1 = xn W1^T, u3 = xn W3^T, the hidden u and, with the rescale, o before it.
 */
#include "config.h"

#include "error.h"
#include "model.h"
#include "train.h"

int mg_ffn_forward(const mg_model *m, int il, mg_scratch *s, mg_layer_act *act, int T,
                   const float *x, const float *y, float *out)
{
    const mg_hparams *hp = &m->hp;
    const mg_layer *w = &m->layers[il];
    mg_backend *be = m->be;
    const int D = hp->n_embd, F = hp->n_ff;
    const size_t TF = (size_t)T * F;

    /* Training keeps each value in its own buffer (o only with the rescale: without it the
     * fc2 output goes straight to out, which there is not x). Streaming computes in place in
     * the scratch: xn in xt (free once the MEGA sub-layer is done), u1 and u in u, o in proj
     * (out may alias x). */
    float *xn = act ? act->xn : s->xt;
    float *u1 = act ? act->u1 : s->u, *u = act ? act->u : s->u, *u3 = act ? act->u3 : s->u3;
    float *o = act ? (w->ffn_alpha ? act->o : out) : s->proj; /* u W2^T */
    float *o_res = act && w->ffn_alpha ? out : o;              /* after the rescale */

    TRY(be->layer_norm(be, y, T, D, w->ffn_norm_w, w->ffn_norm_b, hp->norm_eps, xn));
    TRY(be->matmul(be, xn, T, D, &w->ffn_up, F, NULL, u1));
    TRY(be->silu(be, u1, u, TF));
    if (w->ffn_gate.data) {
        TRY(be->matmul(be, xn, T, D, &w->ffn_gate, F, NULL, u3));
        TRY(be->mul(be, u, u3, u, TF));
    }
    TRY(be->matmul(be, u, T, F, &w->ffn_down, D, NULL, o));
    if (w->ffn_alpha) TRY(be->affine_rows(be, o, T, D, w->ffn_alpha, NULL, o_res));
    TRY(be->add(be, x, o_res, out, (size_t)T * D));
    return MG_OK;
}

/* Backward: dout is the gradient of the block output. Writes dy, the gradient reaching the
 * MEGA output y through the FFN (the residual part, dout itself, goes to the block input
 * and is added by the caller).
 *   o' = o alpha            -> dalpha += sum dout o ; do = dout alpha
 *   o = u W2^T              -> du, dW2
 *   u = silu(u1) [* u3]     -> du1 = du [u3] silu'(u1) ; du3 = du silu(u1)
 *   u1 = xn W1^T, u3 = xn W3^T -> dxn, dW1, dW3
 *   xn = LayerNorm(y)       -> dy, dw, db */
int mg_ffn_backward(const mg_model *m, int il, const mg_layer_tensors *gr, mg_layer_act *act,
                    mg_train_scratch *g, int T, const float *dout, float *dy)
{
    const mg_hparams *hp = &m->hp;
    const mg_layer *w = &m->layers[il];
    mg_backend *be = m->be;
    const int D = hp->n_embd, F = hp->n_ff;
    const size_t TF = (size_t)T * F;

    const float *dO = dout;
    if (w->ffn_alpha) {
#pragma omp parallel for num_threads(be->n_threads) schedule(static) if (D >= 64)
        for (int j = 0; j < D; j++) {
            double s = 0;
            for (int r = 0; r < T; r++)
                s += (double)dout[(size_t)r * D + j] * act->o[(size_t)r * D + j];
            gr->ffn_alpha[j] += (float)s;
        }
        TRY(be->affine_rows(be, dout, T, D, w->ffn_alpha, NULL, g->d3));
        dO = g->d3;
    }
    TRY(be->matmul_backward(be, act->u, T, F, mg_weight_f32(&w->ffn_down), D, dO, g->du, 0, gr->ffn_down, NULL));
    if (w->ffn_gate.data) {
        /* du3 = du silu(u1) ; du1 = du u3 silu'(u1) */
        TRY(be->silu(be, act->u1, g->du3, TF));
        TRY(be->mul(be, g->du, g->du3, g->du3, TF));
        TRY(be->mul(be, g->du, act->u3, g->du1, TF));
        TRY(be->silu_backward(be, act->u1, g->du1, g->du1, TF));
        TRY(be->matmul_backward(be, act->xn, T, D, mg_weight_f32(&w->ffn_up), F, g->du1, g->d2, 0, gr->ffn_up,
                                NULL));
        TRY(be->matmul_backward(be, act->xn, T, D, mg_weight_f32(&w->ffn_gate), F, g->du3, g->d2, 1, gr->ffn_gate,
                                NULL));
    } else {
        TRY(be->silu_backward(be, act->u1, g->du, g->du1, TF));
        TRY(be->matmul_backward(be, act->xn, T, D, mg_weight_f32(&w->ffn_up), F, g->du1, g->d2, 0, gr->ffn_up,
                                NULL));
    }
    TRY(be->layer_norm_backward(be, act->y, T, D, w->ffn_norm_w, hp->norm_eps, g->d2, dy,
                                gr->ffn_norm_w, gr->ffn_norm_b));
    return MG_OK;
}

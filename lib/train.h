/* train.h - the trainer's internals that the tests use (not installed). */
#ifndef MG_TRAIN_H
#define MG_TRAIN_H

#include <stddef.h>

#include "megalodon.h"
#include "model.h"

/* Parameters the trainer updates: every floating tensor of the model file except the
 * buffers rope.freqs and *.prior_mean / *.prior_logv (prior_count is an integer). */
int mg_trainer_n_tensors(const mg_trainer *tr);
/* Name and size of trainable tensor i (0 <= i < mg_trainer_n_tensors). */
const char *mg_trainer_tensor_name(const mg_trainer *tr, int i, size_t *n);

/* The accumulated gradient of the tensor `name` (the sum over accumulate calls since the last
 * update of the gradient of each call's mean loss); MG_ERR_INVALID_ARG if not trainable. */
int mg_trainer_grad(const mg_trainer *tr, const char *name, const float **g, size_t *n);
/* The tensor's weights, writable (finite-difference tests); call mg_trainer_weights_changed
 * after writing so that the derived coefficients (CEMA, q/k scales) follow. */
int mg_trainer_weights(mg_trainer *tr, const char *name, float **w, size_t *n);
int mg_trainer_weights_changed(mg_trainer *tr);
/* AdamW first and second moments of the tensor. */
int mg_trainer_moments(const mg_trainer *tr, const char *name, const float **m,
                       const float **v, size_t *n);

/* The train.checksum a checkpoint file should hold (its tensors and train.* values), for
 * the loader and the checkpoint fuzzer; MG_ERR_STATE when a train.* key is missing. */
int mg_checkpoint_checksum(const gguf_file *f, uint64_t *out);

/* ------------------------------------------------------------------ training internals */

/* Pointers to one layer's tensors in a flat buffer: the weights themselves (raw official
 * parameters, not the derived coefficients) or their gradients. NULL when absent. */
typedef struct {
    float *tnorm_w, *tnorm_b;
    float *alpha, *delta, *theta, *gamma, *omega;
    float *attn_norm_w, *wz, *bz, *wv, *bv, *wr, *br, *wh1, *bh1, *wh2, *qk_gamma, *qk_beta;
    float *ffn_norm_w, *ffn_norm_b, *ffn_up, *ffn_gate, *ffn_down, *ffn_alpha;
} mg_layer_tensors;

/* Prior statistics of a timestep norm as a fresh state: var0[g] = exp(prior_logv[g]). */
int mg_tnorm_var0(const mg_tnorm_params *p, int G, float **var0);

/* Backward scratch shared by all layers (T-sized buffers) and CEMA coefficient gradients. */
typedef struct {
    float *d1, *d2, *d3, *dmx, *dxt;  /* (T, D) */
    float *dz, *dz2, *dq, *dk;        /* (T, Z) */
    float *dr, *da, *dar;             /* (T, E) */
    float *du, *du1, *du3;            /* (T, F) */
    float *dp, *dqc, *deta, *domega;  /* D*N, 2*D*N, 2*D*N, D */
} mg_train_scratch;

/* A training pass over B rows of L tokens: activations for T = B*L tokens. */
typedef struct {
    int B, L, T, Lc, n_chunks;
    mg_layer_act *layers;
    float *x_final;              /* last block output (T, D) */
    float *yn, *fmean, *frstd;   /* final norm output and statistics */
    mg_train_scratch g;
    float *logits;               /* (rows of a head block, V') */
    float *dx, *dy, *dx2;        /* (T, D): gradients of block outputs / MEGA outputs */
    void **bufs;                 /* everything allocated, for freeing */
    size_t n_bufs;
} mg_train_act;

/* Gradients of the tensors outside the blocks (tok_embd and output may be one buffer). */
typedef struct {
    float *tok_embd, *output, *out_norm_w, *out_norm_b;
} mg_train_head_grads;

/* train.c: activations for B rows of L tokens (L < C or a multiple of C). */
int mg_train_act_new(const mg_hparams *hp, int B, int L, mg_train_act **out);
void mg_train_act_free(mg_train_act *a);
/* Forward (and, when gr != NULL, backward) of B rows of L+1 ids; *loss = mean token CE.
 * wt: the layers' raw weights (CEMA parameters are read from it); gr, hg: gradient buffers,
 * added to. */
int mg_train_pass(const mg_model *m, mg_cema_algo algo, mg_train_act *a, const int32_t *ids,
                  const mg_layer_tensors *wt, const mg_layer_tensors *gr,
                  const mg_train_head_grads *hg, double *loss);

/* attention.c, ffn.c: the layers' backward, beside their forward (model.h: mg_mega_forward,
 * mg_ffn_forward, run with act). Each takes the gradient of its output and the activations
 * its forward kept. MEGA leaves the gradient of its input in dx (dx = dy + the path through
 * the timestep norm); the FFN leaves in dy the gradient reaching y through it (the residual
 * part of dout goes to the block input, added by the caller). */
int mg_mega_backward(const mg_model *m, int il, mg_cema_algo algo, const mg_layer_tensors *wt,
                     const mg_layer_tensors *gr, mg_layer_act *act, mg_train_scratch *g, int B,
                     int L, const float *dy, float *dx);
int mg_ffn_backward(const mg_model *m, int il, const mg_layer_tensors *gr, mg_layer_act *act,
                    mg_train_scratch *g, int T, const float *dout, float *dy);

#endif

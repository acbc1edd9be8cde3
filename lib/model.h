/* model.h - the loaded model, the streaming state and the layer entry points (internal). */
#ifndef MG_MODEL_H
#define MG_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "gguf.h"
#include "megalodon.h"
#include "tokenizer.h"

/* Parameters of one TimestepNorm (the block's and the final one). */
typedef struct {
    const float *w, *b;                   /* (D) offsets: the norm multiplies by 1 + w */
    const float *prior_mean, *prior_logv; /* (G) */
    int64_t prior_count;
} mg_tnorm_params;

/* Weights of one Megalodon block. The matrices (mg_weight, backend.h) are row-major (out,
 * in) in their file type (f32, f16, bf16 or a quantized type); the vectors are fp32. */
typedef struct {
    mg_tnorm_params tnorm;
    mg_cema_coeffs cema;            /* derived at load from alpha, delta, theta, gamma, omega */
    const float *attn_norm_w;       /* (D) or NULL when norm_affine is off */
    mg_weight wz;                   /* (Z, D) */
    const float *bz;                /* (Z) */
    mg_weight wv;                   /* (E, D) */
    const float *bv;                /* (E) */
    mg_weight wr;                   /* (E, D) */
    const float *br;                /* (E) */
    mg_weight wh1;                  /* (D, D) */
    const float *bh1;               /* (D) */
    mg_weight wh2;                  /* (D, E) */
    float *qk_scale;                /* (2, Z): (1 + gamma) / sqrt(dz), row 0 q, row 1 k */
    const float *qk_shift;          /* (2, Z): beta */
    const float *ffn_norm_w, *ffn_norm_b; /* (D) or NULL */
    mg_weight ffn_up;               /* fc1 (F, D) */
    mg_weight ffn_gate;             /* fc3 (F, D); data NULL without SwiGLU */
    mg_weight ffn_down;             /* fc2 (D, F) */
    const float *ffn_alpha;         /* (D) or NULL */
} mg_layer;

struct mg_model {
    mg_hparams hp;
    gguf_file *file;
    mg_layer *layers;
    mg_weight tok_embd;      /* (V, D) */
    mg_weight output;        /* (V', D); tok_embd when share_emb */
    const float *rope_freqs; /* (dz/2) */
    mg_tnorm_params out_norm;
    mg_tokenizer *tok; /* NULL: the file has no tokenizer */
    mg_backend *be;
    void **owned; /* buffers allocated at load (copied or converted tensors, coefficients) */
    size_t n_owned, cap_owned;
    uint64_t n_params;
};

/* Streaming statistics of one TimestepNorm. */
typedef struct {
    int64_t count;
    float *mean, *var; /* (G) */
} mg_tnorm_state;

/* What one block carries from call to call (state.c allocates it, forward.c backs it up). */
typedef struct {
    mg_tnorm_state tnorm; /* the timestep norm's count and (G) mean, var */
    float *h;             /* (D, N, 2) the CEMA hidden state: D x N complex, (re, im) pairs */
    float *k;             /* (C, Z) keys after RoPE of the current chunk's first n_kv tokens */
    float *v;             /* (C, E) values after SiLU of the same tokens */
} mg_layer_state;

/* Work buffers of one mg_eval step of L <= cap tokens (state.c allocates them with the
 * state; nothing in them outlives the step). Rows are tokens. */
typedef struct {
    int cap;
    float *x;      /* (cap, D) the residual stream: a block's input, then its output */
    float *y;      /* (cap, D) the MEGA sub-layer output; after the blocks, the final norm's */
    float *xt;     /* (cap, D) the timestep-norm output; then the FFN's LayerNorm output */
    float *mx;     /* (cap, D) the CEMA output, RMS-normalized in place */
    float *z;      /* (cap, Z) mx Wz^T + bz, normalized per head in place */
    float *q_step; /* (cap, Z) the step's queries (RoPE applied in place) */
    float *k_step; /* (cap, Z) the step's keys (RoPE in place); copied into the state's k while
                      their chunk is unfinished */
    float *v_step; /* (cap, E) the step's values silu(xt Wv^T + bv); copied likewise to v */
    float *r;      /* (cap, E) the gate silu(mx Wr^T + br) */
    float *a;      /* (cap, E) the attention output, then times r */
    float *proj;   /* (cap, D) a projection before it joins the residual: (a r) Wh2^T, then
                      the FFN's u W2^T (times alpha) */
    float *u;      /* (cap, F) the FFN's xn W1^T, then its hidden silu(.) [* u3] */
    float *u3;     /* (cap, F) the SwiGLU gate xn W3^T; NULL without swiglu */
} mg_scratch;

/* What one layer keeps from its training forward for its backward (T = B*L tokens; train.c
 * allocates it for every layer). */
typedef struct {
    float *x;             /* block input (T, D) */
    float *xt;            /* timestep-norm output (T, D) */
    float *tmean, *trstd; /* its statistics after every token (T, G) */
    float *c, *mx;        /* CEMA output, RMSNorm of it (T, D) */
    float *zpre, *zn;     /* z before and after the per-head RMSNorm (T, Z) */
    float *q, *k;         /* after RoPE (T, Z) */
    float *vpre, *v, *rpre, *r; /* before and after SiLU (T, E) */
    float *P;             /* attention probabilities (chunks, H, Lc, Lc) */
    float *a, *ar;        /* attention output, times r (T, E) */
    float *y;             /* MEGA sub-layer output (T, D) */
    float *xn;            /* FFN LayerNorm output (T, D) */
    float *u1, *u3, *u;   /* fc1 output, fc3 output (SwiGLU), hidden (T, F) */
    float *o;             /* fc2 output before the alpha rescale (T, D), rescale_nffn only */
} mg_layer_act;

struct mg_state {
    const mg_model *model;
    mg_state_params params;
    uint64_t n_past;
    int n_kv; /* tokens of the current, unfinished chunk (0 .. C-1) */
    mg_layer_state *layers;
    mg_tnorm_state out_norm;
    mg_scratch s;
    void *backup; /* forward.c: what a call can change, restored when it fails (its size:
                     mg_state_backup_size) */
};

/* forward.c: bytes of mg_state.backup for a model (norm statistics, CEMA states, counts). */
size_t mg_state_backup_size(const mg_hparams *hp);

/* cema.c: coefficients from the official parameters (D,N,1 alpha/delta, D theta, D,N,2
 * gamma, D omega). */
int mg_cema_coeffs_init(mg_cema_coeffs *c, int D, int N, const float *alpha,
                        const float *delta, const float *theta, const float *gamma,
                        const float *omega);
void mg_cema_coeffs_free(mg_cema_coeffs *c);
/* Recompute the coefficients of an initialized c from new parameter values (training). */
void mg_cema_coeffs_compute(mg_cema_coeffs *c, const float *alpha, const float *delta,
                            const float *theta, const float *gamma, const float *omega);
/* Gradients of p, q, eta, omega (added) -> gradients of alpha, delta, theta, gamma, omega. */
void mg_cema_coeffs_backward(const mg_cema_coeffs *c, const float *alpha, const float *delta,
                             const float *theta, const float *dp, const float *dq,
                             const float *deta, const float *domega, float *dalpha,
                             float *ddelta, float *dtheta, float *dgamma, float *domega_param);

/* model.c: recompute what is derived from the weights at load (CEMA coefficients, q/k
 * scales) after the weights in the model's image changed (training). */
int mg_model_refresh_derived(mg_model *m);

/* The forward of each sub-layer of block il, for the streaming and the training path alike
 * (their backwards, train.h, sit beside them).
 * Streaming, act NULL: one row (B = 1) of L tokens that continues the state ls at chunk
 * position n_kv; the intermediates live in the scratch s.
 * Training, act not NULL: B rows of L tokens (L below the chunk size or a multiple of it),
 * each from fresh states (ls and s NULL, n_kv 0); what the backward needs is kept in act.
 *
 * attention.c: the MEGA sub-layer, y = x + h(x). */
int mg_mega_forward(const mg_model *m, int il, mg_cema_algo algo, mg_layer_state *ls, int n_kv,
                    mg_scratch *s, mg_layer_act *act, int B, int L, const float *x, float *y);

/* ffn.c: out = x + FFN(LayerNorm(y)) (two-hop residual: x is the block input) over T tokens.
 * out may alias x when streaming, not when training. */
int mg_ffn_forward(const mg_model *m, int il, mg_scratch *s, mg_layer_act *act, int T,
                   const float *x, const float *y, float *out);

/* model.c: row `row` of a weight (an embedding) as fp32: y[0 .. cols). */
void mg_weight_row(const mg_weight *w, int row, float *y);

/* model.c: check hyper-parameters for consistency (sizes in range, Z and E divisible by H,
 * Z/H even, D divisible by G, eps > 0, share_emb needs output_size == vocab_size). */
int mg_hparams_validate(const mg_hparams *hp);
/* Parameter count implied by the hyper-parameters (buffers excluded, tied head once). */
uint64_t mg_hparams_n_params(const mg_hparams *hp);

/* model.c: mg_model_load from an in-memory GGUF image (no copy: with use_mmap, f32 tensors
 * point into buf, which must outlive the model). Validation is that of mg_model_load; used
 * by the fuzzers (fuzz/). */
int mg_model_load_memory(const void *buf, size_t size, const mg_model_params *params,
                         mg_model **out);

/* state.c */
void mg_tnorm_state_reset(mg_tnorm_state *st, const mg_tnorm_params *p, int G);
/* The backend may keep the state on the device (backend.h, state_register ...): make the
 * host copy of every part of the state current before reading it directly (the tests do;
 * mg_state_save and the library's own readers call it). Nothing to do on the CPU backend. */
int mg_state_sync(mg_state *st);
/* The host wrote the whole state (h, statistics, keys and values): the device copy is
 * stale. */
void mg_state_changed(mg_state *st);

#endif

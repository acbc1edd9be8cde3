/* backend.h - the op table through which the model computes (internal).
 *
 * The Megalodon math lives once in lib/ (attention.c, ffn.c, forward.c, ...) as calls of
 * these ops; a backend (lib/backend-cpu.c, opencl/backend-opencl.c) fills the table.
 * Activations are fp32, row-major: a tensor of L tokens and n features is L rows of n
 * floats. Every op returns MG_OK or a negative mg_status with the error message set. */
#ifndef MG_BACKEND_H
#define MG_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "megalodon.h"

typedef struct mg_backend mg_backend;

/* CEMA coefficients of one layer, derived from the parameters once at load (cema.c).
 * p: D*N real; q, eta: D*N complex (interleaved); omega: D. */
typedef struct {
    int D, N;
    float *p, *q, *eta, *omega;
} mg_cema_coeffs;

/* A weight matrix as the model file stores it: `rows` rows (the outputs) of `cols` values
 * (the inputs), row-major, rows `row_bytes` apart, in one of the weight types of lib/quant.h
 * (f32, f16, bf16, q8_0, q4_0, q4_K, q6_K; docs/quantization.md). The model keeps every
 * large matrix in its type, mapped from the file (no fp32 copy); matmul reads it as it is.
 * Training works on f32 weights only (mg_weight_f32). */
typedef struct {
    const void *data;
    uint32_t type; /* GGML_TYPE_* (gguf.h) */
    int rows, cols;
    size_t row_bytes;
} mg_weight;

/* An f32 weight over an fp32 array (row-major rows x cols). */
static inline mg_weight mg_weight_of_f32(const float *w, int rows, int cols)
{
    mg_weight r = {w, 0 /* GGML_TYPE_F32 */, rows, cols, sizeof(float) * (size_t)cols};
    return r;
}

/* The fp32 array of an f32 weight; NULL for any other type (and for NULL). */
static inline const float *mg_weight_f32(const mg_weight *w)
{
    return w && w->data && w->type == 0 /* GGML_TYPE_F32 */ ? (const float *)w->data : NULL;
}

/* What a caller may ask a backend before relying on it (supports_op). */
typedef enum {
    MG_OP_TRAIN, /* the training ops (matmul_backward ... adamw), all of them */
} mg_op;

struct mg_backend {
    const char *name; /* e.g. "cpu/scalar" */
    void *ctx;        /* backend private data */
    int n_threads;

    void (*free)(mg_backend *be);

    /* 1 if the backend does op, else 0. */
    int (*supports_op)(mg_backend *be, mg_op op);

    /* y[M,N] = x[M,K] W[N,K]^T (+ bias[N] if bias != NULL). W (N rows of K) in any weight
     * type: f32 exactly as before; the other types as the product of x with the dequantized
     * W, where decode (few rows of x) rounds each row of x once to 8-bit blocks for the q8_0,
     * q4_0, q4_K and q6_K dot products (simd/kernels.h states their accuracy). A backend
     * without a type answers MG_ERR_UNSUPPORTED naming it. */
    int (*matmul)(mg_backend *be, const float *x, int M, int K, const mg_weight *W, int N,
                  const float *bias, float *y);

    /* Row-wise norms over `rows` rows of n (see simd/kernels.h for the math). */
    int (*rms_norm)(mg_backend *be, const float *x, size_t rows, int n, const float *w,
                    float eps, float *y);
    int (*layer_norm)(mg_backend *be, const float *x, size_t rows, int n, const float *w,
                      const float *b, float eps, float *y);

    /* Grouped timestep norm of L rows of D continuing from (count, mean[G], var[G]),
     * which are updated. */
    int (*timestep_norm)(mg_backend *be, const float *x, int L, int D, int G, const float *w,
                         const float *b, float eps, int64_t *count, float *mean, float *var,
                         float *y);

    /* CEMA over L rows of D channels, continuing from the hidden state h (D*N complex),
     * which is updated to h_{L-1}:
     *   y_t = Re(sum_n eta_n h_{t,n}) + omega x_t,   h_t = q h_{t-1} + p x_t
     * algo MG_CEMA_FFT computes y as the causal convolution with the kernel
     * k_j = Re(sum_n p eta q^j) plus the carried-state term Re(sum_n eta q^(j+1) h_{-1});
     * MG_CEMA_SCAN runs the recurrence. Both give the same result to fp32 rounding. */
    int (*cema)(mg_backend *be, mg_cema_algo algo, const float *x, int L,
                const mg_cema_coeffs *c, float *h, float *y);
    /* The implementation cema runs for a call of L rows with coefficients c asked for algo,
     * resolved as cema resolves it for that call (MEGALODON_CEMA overriding algo, decode
     * always the recurrence, MG_CEMA_AUTO by the backend's own rule or planner, which may
     * measure now as cema would): a name such as "scan", "scan-chunked" or "fft"
     * (mg_cema_choice reports it). NULL on error, or when c is NULL and the backend needs
     * the coefficients to decide. */
    const char *(*cema_choice)(mg_backend *be, mg_cema_algo algo, int L,
                               const mg_cema_coeffs *c);

    /* Interleaved RoPE in place on L rows of H heads of dh (row stride H*dh); row t uses
     * position pos0 + t. */
    int (*rope)(mg_backend *be, float *x, int L, int H, int dh, int pos0, const float *freqs);

    /* Causal attention of L queries over Lk >= L keys, bottom-right aligned: query i sees
     * keys 0 .. Lk-L+i. Per head h: out_h = softmax(q_h k_h^T) v_h (no 1/sqrt(d) scale).
     * q: L x (H*dk), k: Lk x (H*dk), v: Lk x (H*dv), out: L x (H*dv). */
    int (*attention)(mg_backend *be, const float *q, const float *k, const float *v, int L,
                     int Lk, int H, int dk, int dv, float *out);

    /* Elementwise over n floats. */
    int (*silu)(mg_backend *be, const float *x, float *y, size_t n);
    int (*mul)(mg_backend *be, const float *a, const float *b, float *y, size_t n);
    int (*add)(mg_backend *be, const float *a, const float *b, float *y, size_t n);
    int (*scale)(mg_backend *be, const float *x, float a, float *y, size_t n);
    /* y[r,i] = x[r,i] * s[i] + t[i] over rows of m (t may be NULL). */
    int (*affine_rows)(mg_backend *be, const float *x, size_t rows, int m, const float *s,
                       const float *t, float *y);

    /* ---- the streaming state kept on the device (optional: all NULL on the CPU backend,
     * where the host memory is the only copy; lib/state.c calls them through the
     * mg_state_* helpers of model.h, which do nothing when they are NULL).
     *
     * A region is a host buffer of the streaming state (a CEMA h, a norm's mean or var, a
     * chunk's keys or values) that lib/state.c registers when it allocates the state. An op
     * given a registered region's base address as its state argument (cema's h,
     * timestep_norm's mean/var, attention's k/v) may keep the region on the device: h and
     * the statistics are then updated on the device only (the host copy goes stale until
     * state_sync), and keys/values are uploaded only past the prefix the device already
     * holds. A pointer that is not registered is used as before (uploaded and read back).
     *
     * state_register: declare the region [host, host + bytes) (no device memory yet).
     * state_release: forget it (the host buffer is about to be freed; its address may be
     *   reused for anything): the device copy is dropped.
     * state_sync: make the host copy current (download when the device copy is newer).
     * state_changed: the host wrote [host + off, host + off + bytes): the device copy of those
     *   bytes (and, for keys/values, of everything after them) is stale. A write into a
     *   region whose device copy is newer must be of the whole region (or follow a sync).
     * state_snapshot: restore 0 keeps a backup of the region on the device (when the device
     *   holds all of it) and returns 1, or returns 0 when the caller must back up the host
     *   copy itself; restore 1 puts a device backup taken by the last restore-0 call back and
     *   returns 1, or returns 0 when there is none (the caller restores the host copy and
     *   calls state_changed). Negative: an error. */
    int (*state_register)(mg_backend *be, void *host, size_t bytes);
    void (*state_release)(mg_backend *be, const void *host);
    int (*state_sync)(mg_backend *be, void *host);
    void (*state_changed)(mg_backend *be, const void *host, size_t off, size_t bytes);
    int (*state_snapshot)(mg_backend *be, const void *host, int restore);

    /* ---- training: the forward variants that keep what the backward needs, and the
     * backward of every op. Gradients of parameters are ADDED to their buffers (dW, db,
     * dw, ...); gradients of inputs are written (or added where the op says so). A backend
     * without training support leaves these NULL. */

    /* Given y = x W^T + b (x: M x K, W: N x K) and dy (M x N):
     *   dx = dy W (added to dx when dx_add, written otherwise; dx may be NULL),
     *   dW += dy^T x,  db += sum_rows dy (db may be NULL). */
    int (*matmul_backward)(mg_backend *be, const float *x, int M, int K, const float *W, int N,
                           const float *dy, float *dx, int dx_add, float *dW, float *db);

    /* Timestep norm of S sequences of L rows of D (x: S*L rows), each from the same fresh
     * state (count0, mean0[G], var0[G]), keeping the statistics after every step: cmean,
     * crstd (S*L x G; crstd = 1/sqrt(var_t + eps)). */
    int (*timestep_norm_train)(mg_backend *be, const float *x, int S, int L, int D, int G,
                               const float *w, const float *b, float eps, int64_t count0,
                               const float *mean0, const float *var0, float *y, float *cmean,
                               float *crstd);
    /* Its backward (docs/model.md §18.1) with no gradient arriving on the final statistics:
     * dx (written), dw, db (added). */
    int (*timestep_norm_backward)(mg_backend *be, const float *x, int S, int L, int D, int G,
                                  const float *w, int64_t count0, const float *mean0,
                                  const float *cmean, const float *crstd, const float *dy,
                                  float *dx, float *dw, float *db);

    /* Backward of rms_norm / layer_norm over rows of n: dx (written), dw, db (added; NULL
     * when the norm has no weight / bias). */
    int (*rms_norm_backward)(mg_backend *be, const float *x, size_t rows, int n, const float *w,
                             float eps, const float *dy, float *dx, float *dw);
    int (*layer_norm_backward)(mg_backend *be, const float *x, size_t rows, int n,
                               const float *w, float eps, const float *dy, float *dx, float *dw,
                               float *db);

    /* Backward of CEMA over S sequences of L rows of D (x: S*L rows), each from a zero
     * hidden state: dx (written) and the coefficient gradients dp (D*N), dq, deta (D*N
     * complex, PyTorch's convention grad = dL/dRe + i dL/dIm) and domega (D), added. */
    int (*cema_backward)(mg_backend *be, mg_cema_algo algo, const float *x, int S, int L,
                         const mg_cema_coeffs *c, const float *dy, float *dx, float *dp,
                         float *dq, float *deta, float *domega);

    /* Causal attention inside each of S independent chunks of L tokens (query i sees keys
     * 0..i of its chunk); q: S*L rows of H*dk, v: S*L rows of H*dv. Keeps the probabilities
     * P (S x H x L x L, zeros above the diagonal). */
    int (*attention_train)(mg_backend *be, const float *q, const float *k, const float *v,
                           int S, int L, int H, int dk, int dv, float *out, float *P);
    /* Its backward: dq, dk, dv written (same layouts as q, k, v). */
    int (*attention_backward)(mg_backend *be, const float *q, const float *k, const float *v,
                              const float *P, const float *dout, int S, int L, int H, int dk,
                              int dv, float *dq, float *dk_, float *dv_);

    /* dx = dy * silu'(x) over n (x: the input of the SiLU). */
    int (*silu_backward)(mg_backend *be, const float *x, const float *dy, float *dx, size_t n);

    /* Cross-entropy of rows of n logits against targets: loss_sum += sum_r -log softmax(l_r)
     * [t_r] (accumulated in double); dlogits = (softmax - onehot) * scale (may alias logits). */
    int (*cross_entropy)(mg_backend *be, const float *logits, const int32_t *targets,
                         size_t rows, int n, float scale, double *loss_sum, float *dlogits);

    /* AdamW over n parameters p (host memory) with gradients g and moments m, v, updated in
     * place (lib/trainer.c gives the constants; simd/kernels.h: adamw):
     *   gj = g gs ;  p = p (1 - lr wd) - step_size m' / (sqrt(v') / sbc2 + eps)
     *   m' = b1 m + (1 - b1) gj ;  v' = b2 v + (1 - b2) gj^2 */
    int (*adamw)(mg_backend *be, float *p, const float *g, float *m, float *v, size_t n,
                 double lr, double wd, double b1, double b2, double eps, double gs,
                 double step_size, double sbc2);
};

/* The CPU backend: OpenBLAS, FFTW, OpenMP and a simd/ kernel table: `isa` names one
 * ("scalar", "avx2", ...), or NULL/"auto" takes the best for this CPU (or the one
 * MEGALODON_ISA names). n_threads <= 0 means all online CPUs. */
int mg_backend_cpu_new(int n_threads, const char *isa, mg_backend **out);
/* Set the thread count of a backend (OpenMP regions and OpenBLAS). */
void mg_backend_set_threads(mg_backend *be, int n_threads);

#endif

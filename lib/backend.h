/* backend.h - the op table through which the model computes (internal).
 *
 * The Megalodon math lives once in lib/ (attention.c, ffn.c, forward.c, ...) as calls of
 * these ops; a backend (backend-cpu.c today, OpenCL later) fills the table. Activations are
 * fp32, row-major: a tensor of L tokens and n features is L rows of n floats. Every op
 * returns MG_OK or a negative mg_status with the error message set. */
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

struct mg_backend {
    const char *name; /* e.g. "cpu/scalar" */
    void *ctx;        /* backend private data */
    int n_threads;

    void (*free)(mg_backend *be);

    /* y[M,N] = x[M,K] W[N,K]^T (+ bias[N] if bias != NULL). W is row-major (out, in). */
    int (*matmul)(mg_backend *be, const float *x, int M, int K, const float *W, int N,
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
};

/* The CPU backend: OpenBLAS, FFTW, OpenMP and a simd/ kernel table: `isa` names one
 * ("scalar", "avx2", ...), or NULL/"auto" takes the best for this CPU (or the one
 * MEGALODON_ISA names). n_threads <= 0 means all online CPUs. */
int mg_backend_cpu_new(int n_threads, const char *isa, mg_backend **out);
/* Set the thread count of a backend (OpenMP regions and OpenBLAS). */
void mg_backend_set_threads(mg_backend *be, int n_threads);

#endif

/* backend-cpu.h - what the CPU backend's files share (internal): the context, and the ops
 * each file defines, forward and backward side by side (backend.h states the contract of
 * each op). backend-cpu.c fills the op table with them. */
#ifndef MG_BACKEND_CPU_H
#define MG_BACKEND_CPU_H

#include <pthread.h>

#include "backend.h"
#include "kernels.h"

struct cema_cpu; /* backend-cpu-cema.h: planner settings, FFT plans and kernel cache, wisdom */

typedef struct {
    const mg_kernels *k;
    pthread_mutex_t lock;
    struct cema_cpu *cema;
    char name[32];
} cpu_ctx;

static inline cpu_ctx *ctx_of(mg_backend *be) { return (cpu_ctx *)be->ctx; }

/* backend-cpu-matmul.c */
int cpu_matmul(mg_backend *be, const float *x, int M, int K, const mg_weight *W, int N,
               const float *bias, float *y);
int cpu_matmul_backward(mg_backend *be, const float *x, int M, int K, const float *W, int N,
                        const float *dy, float *dx, int dx_add, float *dW, float *db);

/* backend-cpu-norms.c */
int cpu_rms_norm(mg_backend *be, const float *x, size_t rows, int n, const float *w, float eps,
                 float *y);
int cpu_rms_norm_backward(mg_backend *be, const float *x, size_t rows, int n, const float *w,
                          float eps, const float *dy, float *dx, float *dw);
int cpu_layer_norm(mg_backend *be, const float *x, size_t rows, int n, const float *w,
                   const float *b, float eps, float *y);
int cpu_layer_norm_backward(mg_backend *be, const float *x, size_t rows, int n, const float *w,
                            float eps, const float *dy, float *dx, float *dw, float *db);
int cpu_timestep_norm(mg_backend *be, const float *x, int L, int D, int G, const float *w,
                      const float *b, float eps, int64_t *count, float *mean, float *var,
                      float *y);
int cpu_timestep_norm_train(mg_backend *be, const float *x, int S, int L, int D, int G,
                            const float *w, const float *b, float eps, int64_t count0,
                            const float *mean0, const float *var0, float *y, float *cmean,
                            float *crstd);
int cpu_timestep_norm_backward(mg_backend *be, const float *x, int S, int L, int D, int G,
                               const float *w, int64_t count0, const float *mean0,
                               const float *cmean, const float *crstd, const float *dy,
                               float *dx, float *dw, float *db);

/* backend-cpu-cema.c (the FFT implementations in backend-cpu-cema-fft.c) */
int cpu_cema(mg_backend *be, mg_cema_algo algo, const float *x, int L, const mg_cema_coeffs *c,
             float *h, float *y);
int cpu_cema_backward(mg_backend *be, mg_cema_algo algo, const float *x, int S, int L,
                      const mg_cema_coeffs *c, const float *dy, float *dx, float *dp, float *dq,
                      float *deta, float *domega);
/* Read the MEGALODON_CEMA* environment (an invalid value is MG_ERR_INVALID_ARG naming the
 * variable) and set up the CEMA planner and caches; cpu_cema_free releases them. */
int cpu_cema_init(cpu_ctx *c);
void cpu_cema_free(cpu_ctx *c);

/* backend-cpu-attention.c */
int cpu_attention(mg_backend *be, const float *q, const float *k, const float *v, int L, int Lk,
                  int H, int dk, int dv, float *out);
int cpu_attention_train(mg_backend *be, const float *q, const float *k, const float *v, int S,
                        int L, int H, int dk, int dv, float *out, float *P);
int cpu_attention_backward(mg_backend *be, const float *q, const float *k, const float *v,
                           const float *P, const float *dout, int S, int L, int H, int dk,
                           int dv, float *dq, float *dk_, float *dv_);

/* backend-cpu-elementwise.c */
int cpu_silu(mg_backend *be, const float *x, float *y, size_t n);
int cpu_silu_backward(mg_backend *be, const float *x, const float *dy, float *dx, size_t n);
int cpu_mul(mg_backend *be, const float *a, const float *b, float *y, size_t n);
int cpu_add(mg_backend *be, const float *a, const float *b, float *y, size_t n);
int cpu_scale(mg_backend *be, const float *x, float a, float *y, size_t n);
int cpu_affine_rows(mg_backend *be, const float *x, size_t rows, int m, const float *s,
                    const float *t, float *y);
int cpu_rope(mg_backend *be, float *x, int L, int H, int dh, int pos0, const float *freqs);

/* backend-cpu-loss.c */
int cpu_cross_entropy(mg_backend *be, const float *logits, const int32_t *targets, size_t rows,
                      int n, float scale, double *loss_sum, float *dlogits);
int cpu_adamw(mg_backend *be, float *p, const float *g, float *m, float *v, size_t n, double lr,
              double wd, double b1, double b2, double eps, double gs, double step_size,
              double sbc2);

#endif

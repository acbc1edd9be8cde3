/* backend-cpu.h - what the CPU backend's files share (internal). */
#ifndef MG_BACKEND_CPU_H
#define MG_BACKEND_CPU_H

#include <pthread.h>

#include "backend.h"
#include "kernels.h"

struct cema_cpu; /* backend-cpu-cema.c: FFT plans, kernel cache, planner settings */
struct cema_bwd; /* backend-cpu-train.c: the CEMA backward's planner settings and wisdom */

typedef struct {
    const mg_kernels *k;
    pthread_mutex_t lock;
    struct cema_cpu *cema;
    struct cema_bwd *cema_bwd;
    char name[32];
} cpu_ctx;

static inline cpu_ctx *ctx_of(mg_backend *be) { return (cpu_ctx *)be->ctx; }

/* backend-cpu-cema.c */
int cpu_cema(mg_backend *be, mg_cema_algo algo, const float *x, int L, const mg_cema_coeffs *c,
             float *h, float *y);
/* Read the MEGALODON_CEMA* environment (an invalid value is MG_ERR_INVALID_ARG naming the
 * variable) and set up the CEMA planner and caches; cpu_cema_free releases them. */
int cpu_cema_init(cpu_ctx *c);
void cpu_cema_free(cpu_ctx *c);

/* backend-cpu-cema.c: FFTW's planner is not thread-safe; every plan is made under this lock. */
extern pthread_mutex_t mg_fftw_planner_lock;

/* backend-cpu-train.c: fill the training ops of the table and set up the CEMA backward's
 * planner (MG_OK or an error: out of memory); cpu_train_free releases what it set up. */
int cpu_fill_train_ops(mg_backend *be);
void cpu_train_free(cpu_ctx *c);
/* backend-cpu-cema-grad.c: the CEMA backward by FFT correlations (backend.h: cema_backward). */
int cpu_cema_backward_fft(mg_backend *be, const float *x, int S, int L, const mg_cema_coeffs *c,
                          const float *dy, float *dx, float *dp, float *dq, float *deta,
                          float *domega);

/* backend-cpu-attention.c */
int cpu_rope(mg_backend *be, float *x, int L, int H, int dh, int pos0, const float *freqs);
int cpu_attention(mg_backend *be, const float *q, const float *k, const float *v, int L, int Lk,
                  int H, int dk, int dv, float *out);

#endif

/* backend-cpu.h - what the CPU backend's files share (internal). */
#ifndef MG_BACKEND_CPU_H
#define MG_BACKEND_CPU_H

#include <fftw3.h>
#include <pthread.h>

#include "backend.h"
#include "kernels.h"

/* FFTW plans are created once per transform size and reused (plan creation is not
 * thread-safe, execution with the new-array interface is). */
#define MAX_PLANS 32
typedef struct {
    int n;
    fftwf_plan r2c, c2r;
} fft_plan;

typedef struct {
    const mg_kernels *k;
    pthread_mutex_t lock;
    fft_plan plans[MAX_PLANS];
    int n_plans;
    char name[32];
} cpu_ctx;

static inline cpu_ctx *ctx_of(mg_backend *be) { return (cpu_ctx *)be->ctx; }

/* backend-cpu-cema.c */
int cpu_cema(mg_backend *be, mg_cema_algo algo, const float *x, int L, const mg_cema_coeffs *c,
             float *h, float *y);
void cpu_cema_free_plans(cpu_ctx *c);

/* backend-cpu-attention.c */
int cpu_rope(mg_backend *be, float *x, int L, int H, int dh, int pos0, const float *freqs);
int cpu_attention(mg_backend *be, const float *q, const float *k, const float *v, int L, int Lk,
                  int H, int dk, int dv, float *out);

#endif

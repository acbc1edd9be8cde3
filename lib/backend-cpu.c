/* backend-cpu.c - the CPU backend: its context, the op table filled in, the thread count,
 * and the BLAS in use. The ops are in files by op, each with its backward:
 *   backend-cpu-matmul.c       matrix products (OpenBLAS)
 *   backend-cpu-norms.c        RMSNorm, LayerNorm, timestep norm
 *   backend-cpu-cema.c         CEMA: scan, chunked scan, adjoint scan, the planner glue
 *   backend-cpu-cema-fft.c     CEMA by FFT (FFTW, single precision), forward and backward
 *   backend-cpu-attention.c    chunk attention (OpenBLAS)
 *   backend-cpu-elementwise.c  SiLU, product, sum, scale, per-row affine map, RoPE
 *   backend-cpu-loss.c         cross-entropy, AdamW
 * OpenMP splits rows/channels/heads; the simd/ kernel table does the row and elementwise
 * work. */
#include "config.h"

#include <cblas.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "backend-cpu.h"
#include "cema-plan.h"
#include "error.h"

/* ---------------------------------------------------------------- the BLAS in use
 * (megalodon.h: mg_blas_info, mg_blas_warning). An OpenBLAS older than the CPU does not know
 * its model and falls back to a generic SSE kernel (Debian's 0.3.21 picks Prescott on
 * recent Xeons): sgemm 3-5x slower than with OPENBLAS_CORETYPE=Haswell or SkylakeX
 * (docs/performance.md). */

static char blas_info[256], blas_warning[320];
static pthread_once_t blas_once = PTHREAD_ONCE_INIT;

static void blas_describe(void)
{
    const char *core = openblas_get_corename(), *cfg = openblas_get_config();
    snprintf(blas_info, sizeof blas_info, "%s, kernel %s", cfg ? cfg : "OpenBLAS",
             core ? core : "unknown");
    static const char *const old[] = {"Prescott", "Core2", "Penryn", "Dunnington", "Nehalem",
                                      "Atom", "Katmai", "Coppermine", "Northwood", "Banias"};
    const int avx2 = strstr(mg_kernels_available(), "avx2") != NULL;
    for (size_t i = 0; core && avx2 && i < sizeof old / sizeof old[0]; i++)
        if (strcasecmp(core, old[i]) == 0)
            snprintf(blas_warning, sizeof blas_warning,
                     "this CPU has AVX2 but OpenBLAS runs its %s kernel (it does not know the "
                     "CPU model): matrix products are 3-5x slower than they can be; set "
                     "OPENBLAS_CORETYPE=Haswell, or SkylakeX on AVX-512 CPUs", core);
}

const char *mg_blas_info(void)
{
    pthread_once(&blas_once, blas_describe);
    return blas_info;
}

const char *mg_blas_warning(void)
{
    pthread_once(&blas_once, blas_describe);
    return blas_warning[0] ? blas_warning : NULL;
}

/* ---------------------------------------------------------------- the backend */

static int cpu_supports_op(mg_backend *be, mg_op op)
{
    (void)be;
    return op == MG_OP_TRAIN; /* cpu_fill_train_ops fills them all */
}

static void cpu_free(mg_backend *be)
{
    if (!be) return;
    cpu_ctx *c = ctx_of(be);
    if (c) {
        cpu_cema_free(c);
        pthread_mutex_destroy(&c->lock);
        free(c);
    }
    free(be);
}

void mg_backend_set_threads(mg_backend *be, int n_threads)
{
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)n : 1;
    }
    be->n_threads = n_threads;
    openblas_set_num_threads(1); /* always: see cpu_matmul */
}

int mg_backend_cpu_new(int n_threads, const char *isa, mg_backend **out)
{
    *out = NULL;
    const mg_kernels *k;
    if (isa && *isa && strcmp(isa, "auto") != 0) {
        if (!(k = mg_kernels_by_name(isa)))
            return mg_seterr(MG_ERR_UNSUPPORTED,
                             "kernel table '%s' is not built in or not supported by this CPU "
                             "(available: %s)", isa, mg_kernels_available());
    } else if (!(k = mg_kernels_best())) {
        return mg_seterr(MG_ERR_UNSUPPORTED,
                         "MEGALODON_ISA=%s: that kernel table is not built in or not "
                         "supported by this CPU (available: %s)",
                         getenv("MEGALODON_ISA"), mg_kernels_available());
    }
    mg_backend *be = calloc(1, sizeof *be);
    cpu_ctx *c = calloc(1, sizeof *c);
    if (!be || !c) {
        free(be);
        free(c);
        return mg_seterr(MG_ERR_NOMEM, "out of memory for the CPU backend's context");
    }
    pthread_mutex_init(&c->lock, NULL);
    c->k = k;
    int rc = cpu_cema_init(c);
    if (rc) {
        pthread_mutex_destroy(&c->lock);
        free(be);
        free(c);
        return rc;
    }
    snprintf(c->name, sizeof c->name, "cpu/%s", k->name);
    be->name = c->name;
    be->ctx = c;
    be->n_threads = n_threads;
    be->free = cpu_free;
    be->supports_op = cpu_supports_op;
    be->matmul = cpu_matmul;
    be->rms_norm = cpu_rms_norm;
    be->layer_norm = cpu_layer_norm;
    be->timestep_norm = cpu_timestep_norm;
    be->cema = cpu_cema;
    be->cema_choice = cpu_cema_choice; /* the planner of backend-cpu-cema.c */
    be->rope = cpu_rope;
    be->attention = cpu_attention;
    be->silu = cpu_silu;
    be->mul = cpu_mul;
    be->add = cpu_add;
    be->scale = cpu_scale;
    be->affine_rows = cpu_affine_rows;
    /* training */
    be->matmul_backward = cpu_matmul_backward;
    be->timestep_norm_train = cpu_timestep_norm_train;
    be->timestep_norm_backward = cpu_timestep_norm_backward;
    be->rms_norm_backward = cpu_rms_norm_backward;
    be->layer_norm_backward = cpu_layer_norm_backward;
    be->cema_backward = cpu_cema_backward;
    be->attention_train = cpu_attention_train;
    be->attention_backward = cpu_attention_backward;
    be->silu_backward = cpu_silu_backward;
    be->cross_entropy = cpu_cross_entropy;
    be->adamw = cpu_adamw;
    mg_backend_set_threads(be, n_threads);
    *out = be;
    return MG_OK;
}

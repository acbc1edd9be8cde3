/* backend-cpu.c - the CPU backend: OpenBLAS for matrix products, FFTW (single precision)
 * for the CEMA convolution (backend-cpu-cema.c), chunk attention (backend-cpu-attention.c),
 * OpenMP across rows/channels/heads, and the simd/ kernel table for everything else. */
#include "config.h"

#include <cblas.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "backend-cpu.h"
#include "error.h"

/* ---------------------------------------------------------------- matmul */

/* y = x W^T + bias.
 *
 * Threads (docs/architecture.md §5): OpenBLAS always runs single-threaded (its thread count is global to
 * the process and its threaded sgemm splits rows at places that depend on that count, which
 * changes the last bits of results); the library splits the product itself over its OpenMP
 * threads into blocks whose bounds depend only on the shapes, so the result is the same for
 * any thread count and any number of concurrent states. */
#define MM_ROWS 256 /* rows of x per sgemm tile (prefill) */
#define MM_TILES 8  /* at least this many tiles when M allows it: N is cut too when M is small */
#define MV_ROWS 64  /* rows of W per sgemv block (decode, M == 1) */

/* Columns per tile for an M x N product: all N when the row blocks alone give MM_TILES
 * tiles, else N cut into pieces of a multiple of 64 columns (at least 128), so that narrow
 * and short products still spread over the threads. Depends on the shape only. */
static int mm_cols(int M, int N)
{
    const int nrb = (M + MM_ROWS - 1) / MM_ROWS;
    if (nrb >= MM_TILES || N <= 256) return N;
    const int want = (MM_TILES + nrb - 1) / nrb; /* column pieces wanted */
    int nc = (N + want - 1) / want;
    nc = (nc + 63) / 64 * 64;
    return nc < 128 ? 128 : nc;
}

static int cpu_matmul(mg_backend *be, const float *x, int M, int K, const float *W, int N,
                      const float *bias, float *y)
{
    if (M <= 0 || N <= 0) return MG_OK;
    if (M == 1) { /* decode: sgemv is an order of magnitude faster than sgemm here. Blocks of
                   * 64 rows of W balance 2-16 threads on the model's 192-2048-row weights
                   * (256-row blocks gave a 768-row weight 3 blocks: 12.7-13.3 GFLOP/s on 2
                   * threads against 15-17.5 for 64-row blocks, docs/performance.md). */
        const int nb = (N + MV_ROWS - 1) / MV_ROWS;
#pragma omp parallel for num_threads(be->n_threads) schedule(static) if (nb > 1 && (size_t)N * K >= 65536)
        for (int b = 0; b < nb; b++) {
            const int n0 = b * MV_ROWS, n = N - n0 < MV_ROWS ? N - n0 : MV_ROWS;
            if (bias) memcpy(y + n0, bias + n0, sizeof(float) * n);
            cblas_sgemv(CblasRowMajor, CblasNoTrans, n, K, 1.0f, W + (size_t)n0 * K, K, x, 1,
                        bias ? 1.0f : 0.0f, y + n0, 1);
        }
        return MG_OK;
    }
    /* prefill: tiles of MM_ROWS rows of x by mm_cols() rows of W, handed out dynamically
     * (each tile is one single-threaded sgemm whose result does not depend on which thread
     * runs it). 256-row tiles repack W a quarter as often as 64-row ones: on the 100M model's
     * shapes 190-232 GFLOP/s against 143-177 on 2 threads (docs/performance.md). */
    const int nc = mm_cols(M, N);
    const int nrb = (M + MM_ROWS - 1) / MM_ROWS, ncb = (N + nc - 1) / nc, nt = nrb * ncb;
#pragma omp parallel for num_threads(be->n_threads) schedule(dynamic, 1) if (nt > 1)
    for (int t = 0; t < nt; t++) {
        const int m0 = (t / ncb) * MM_ROWS, n0 = (t % ncb) * nc;
        const int m = M - m0 < MM_ROWS ? M - m0 : MM_ROWS, n = N - n0 < nc ? N - n0 : nc;
        float *yb = y + (size_t)m0 * N + n0;
        if (bias)
            for (int i = 0; i < m; i++) memcpy(yb + (size_t)i * N, bias + n0, sizeof(float) * n);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, K, 1.0f, x + (size_t)m0 * K,
                    K, W + (size_t)n0 * K, K, bias ? 1.0f : 0.0f, yb, N);
    }
    return MG_OK;
}

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

/* ---------------------------------------------------------------- norms */

static int cpu_rms_norm(mg_backend *be, const float *x, size_t rows, int n, const float *w,
                        float eps, float *y)
{
    const mg_kernels *k = ctx_of(be)->k;
#pragma omp parallel for num_threads(be->n_threads) schedule(static) if (rows > 16)
    for (size_t r = 0; r < rows; r++) k->rms_norm(x + r * n, w, eps, n, y + r * n);
    return MG_OK;
}

static int cpu_layer_norm(mg_backend *be, const float *x, size_t rows, int n, const float *w,
                          const float *b, float eps, float *y)
{
    const mg_kernels *k = ctx_of(be)->k;
#pragma omp parallel for num_threads(be->n_threads) schedule(static) if (rows > 16)
    for (size_t r = 0; r < rows; r++) k->layer_norm(x + r * n, w, b, eps, n, y + r * n);
    return MG_OK;
}

static int cpu_timestep_norm(mg_backend *be, const float *x, int L, int D, int G,
                             const float *w, const float *b, float eps, int64_t *count,
                             float *mean, float *var, float *y)
{
    /* Sequential in time by definition; the prefix-sum formulation comes with the SIMD work. */
    ctx_of(be)->k->timestep_norm(x, L, D, G, w, b, eps, count, mean, var, y);
    return MG_OK;
}

/* ---------------------------------------------------------------- elementwise */

static int cpu_silu(mg_backend *be, const float *x, float *y, size_t n)
{
    ctx_of(be)->k->silu(x, y, n);
    return MG_OK;
}

static int cpu_mul(mg_backend *be, const float *a, const float *b, float *y, size_t n)
{
    ctx_of(be)->k->mul(a, b, y, n);
    return MG_OK;
}

static int cpu_add(mg_backend *be, const float *a, const float *b, float *y, size_t n)
{
    ctx_of(be)->k->add(a, b, y, n);
    return MG_OK;
}

static int cpu_scale(mg_backend *be, const float *x, float a, float *y, size_t n)
{
    ctx_of(be)->k->scale(x, a, y, n);
    return MG_OK;
}

static int cpu_affine_rows(mg_backend *be, const float *x, size_t rows, int m, const float *s,
                           const float *t, float *y)
{
    ctx_of(be)->k->affine_rows(x, rows, m, s, t, y);
    return MG_OK;
}

/* ---------------------------------------------------------------- setup */

static void cpu_free(mg_backend *be)
{
    if (!be) return;
    cpu_ctx *c = ctx_of(be);
    if (c) {
        cpu_train_free(c);
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
        return mg_seterr(MG_ERR_NOMEM, "out of memory creating the CPU backend");
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
    be->matmul = cpu_matmul;
    be->rms_norm = cpu_rms_norm;
    be->layer_norm = cpu_layer_norm;
    be->timestep_norm = cpu_timestep_norm;
    be->cema = cpu_cema;
    be->rope = cpu_rope;
    be->attention = cpu_attention;
    be->silu = cpu_silu;
    be->mul = cpu_mul;
    be->add = cpu_add;
    be->scale = cpu_scale;
    be->affine_rows = cpu_affine_rows;
    if ((rc = cpu_fill_train_ops(be))) {
        cpu_free(be);
        return rc;
    }
    mg_backend_set_threads(be, n_threads);
    *out = be;
    return MG_OK;
}

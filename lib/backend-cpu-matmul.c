/* backend-cpu-matmul.c - matrix products of the CPU backend (OpenBLAS): y = x W^T + bias and
 * its backward.
 *
 * Threads (docs/architecture.md §5): OpenBLAS always runs single-threaded (its thread count is global to
 * the process and its threaded sgemm splits rows at places that depend on that count, which
 * changes the last bits of results); the library splits each product itself over its OpenMP
 * threads into blocks whose bounds depend only on the shapes, so the result is the same for
 * any thread count and any number of concurrent states. */
#include "config.h"

#include <cblas.h>
#include <string.h>

#include "backend-cpu.h"

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

int cpu_matmul(mg_backend *be, const float *x, int M, int K, const float *W, int N,
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

/* ---------------------------------------------------------------- backward */

#define BLK 64 /* rows (or columns) per block of a split matrix product */

static inline int imin(int a, int b) { return a < b ? a : b; }

/* y = x W^T + b:  dx = dy W ;  dW += dy^T x ;  db += sum_rows dy */
int cpu_matmul_backward(mg_backend *be, const float *x, int M, int K, const float *W,
                        int N, const float *dy, float *dx, int dx_add, float *dW,
                        float *db)
{
    if (M <= 0 || N <= 0 || K <= 0) return MG_OK;
    if (dx) {
        const int nb = (M + BLK - 1) / BLK;
#pragma omp parallel for num_threads(be->n_threads) schedule(static) if (nb > 1)
        for (int b = 0; b < nb; b++) {
            const int m0 = b * BLK, m = imin(BLK, M - m0);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, K, N, 1.0f,
                        dy + (size_t)m0 * N, N, W, K, dx_add ? 1.0f : 0.0f,
                        dx + (size_t)m0 * K, K);
        }
    }
    if (dW) {
        const int nb = (N + BLK - 1) / BLK;
#pragma omp parallel for num_threads(be->n_threads) schedule(static) if (nb > 1)
        for (int b = 0; b < nb; b++) {
            const int n0 = b * BLK, n = imin(BLK, N - n0);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, K, M, 1.0f, dy + n0, N, x,
                        K, 1.0f, dW + (size_t)n0 * K, K);
        }
    }
    if (db) { /* column blocks across threads, rows in order inside (cache-friendly) */
        const int nb = (N + 255) / 256;
#pragma omp parallel for num_threads(be->n_threads) schedule(static) if (nb > 1)
        for (int b = 0; b < nb; b++) {
            const int j0 = b * 256, n = imin(256, N - j0);
            double acc[256] = {0};
            for (int i = 0; i < M; i++) {
                const float *r = dy + (size_t)i * N + j0;
                for (int j = 0; j < n; j++) acc[j] += r[j];
            }
            for (int j = 0; j < n; j++) db[j0 + j] += (float)acc[j];
        }
    }
    return MG_OK;
}

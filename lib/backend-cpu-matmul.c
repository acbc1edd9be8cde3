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
#include <stdlib.h>
#include <string.h>

#include "backend-cpu.h"
#include "blocks.h"
#include "error.h"
#include "gguf.h"
#include "quant.h"

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

static int matmul_f32(mg_backend *be, const float *x, int M, int K, const float *W, int N,
                      const float *bias, float *y)
{
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

/* ---------------------------------------------------------------- weights in their type
 * (docs/quantization.md). Few rows of x (decode, short prompts): each row of x is rounded
 * once to the activation blocks that the type's dot product takes (q8_0 for q8_0 and q4_0
 * weights, q8_K for q4_K and q6_K; f16 and bf16 take x as it is), then every row of W is one
 * dot product on its blocks, in blocks of MV_ROWS rows of W over the threads, each row of W
 * read once for all rows of x. More rows (prefill): tiles of QT_ROWS rows of x by QT_COLS rows
 * of W, where each tile expands its rows of W to fp32 and multiplies with OpenBLAS. Expanding
 * costs one pass over QT_COLS x K weights per tile against 2 QT_ROWS QT_COLS K flops of the
 * product (1/2048 of the work), and keeps prefill at the fp32 sgemm speed for every type
 * (docs/performance.md has the measurements behind the choice: on a 2-core Zen 1 at load
 * 15, pp512 of the 139M model ran at 1.32, 1.33, 1.04 and 1.14 of the bench's sgemm
 * yardstick in f32, f16, q8_0 and q4_k_m, so expanded tiles stay until an integer product
 * beats OpenBLAS's sgemm). Both paths split the work by the shape only, so the result does
 * not depend on the thread count. */
#define QV_MAX_ROWS 8 /* rows of x up to which products run as dot products */
#define QT_ROWS 1024  /* rows of x per tile of an expanded product */
#define QT_COLS 128   /* rows of W expanded per tile */

/* Bytes of the activation blocks of one row of K values for weights of `type` (0: the row of
 * x is used as it is). */
static size_t act_row_bytes(uint32_t type, int K)
{
    switch (type) {
    case GGML_TYPE_Q8_0:
    case GGML_TYPE_Q4_0: return (size_t)K / MG_QK8_0 * sizeof(mg_block_q8_0);
    case GGML_TYPE_Q4_K:
    case GGML_TYPE_Q6_K: return (size_t)K / MG_QK_K * sizeof(mg_block_q8_K);
    default: return 0;
    }
}

static void act_quantize(const mg_kernels *k, uint32_t type, const float *x, int K, void *xa)
{
    if (type == GGML_TYPE_Q8_0 || type == GGML_TYPE_Q4_0)
        k->quantize_q8_0(x, xa, K);
    else
        k->quantize_q8_K(x, xa, K);
}

/* w . a for one row of W in its type, a in the activation form act_row_bytes gives. */
static float row_dot(const mg_kernels *k, uint32_t type, const void *w, const void *a, int K)
{
    switch (type) {
    case GGML_TYPE_F16: return k->dot_f16(w, a, K);
    case GGML_TYPE_BF16: return k->dot_bf16(w, a, K);
    case GGML_TYPE_Q8_0: return k->dot_q8_0(w, a, K);
    case GGML_TYPE_Q4_0: return k->dot_q4_0(w, a, K);
    case GGML_TYPE_Q4_K: return k->dot_q4_K(w, a, K);
    default: return k->dot_q6_K(w, a, K);
    }
}

/* y[0..1] = rows n and n + 1 of an fp16 / bf16 W dotted with x: the bits of row_dot's */
static void rows_dot2(const mg_kernels *k, const mg_weight *W, int n, const float *x, int K,
                      float *y)
{
    const uint16_t *w0 = (const uint16_t *)((const char *)W->data + (size_t)n * W->row_bytes);
    const uint16_t *w1 = (const uint16_t *)((const char *)w0 + W->row_bytes);
    if (W->type == GGML_TYPE_F16) k->dot2_f16(w0, w1, x, K, y);
    else k->dot2_bf16(w0, w1, x, K, y);
}

/* Rows n0 .. n0+n of W expanded to fp32 (n x K). */
static void expand_rows(const mg_kernels *k, const mg_weight *W, int n0, int n, float *out)
{
    const char *src = (const char *)W->data + (size_t)n0 * W->row_bytes;
    const int64_t cnt = (int64_t)n * W->cols;
    switch (W->type) {
    case GGML_TYPE_F16: k->f16_to_f32((const uint16_t *)src, out, (size_t)cnt); break;
    case GGML_TYPE_BF16: k->bf16_to_f32((const uint16_t *)src, out, (size_t)cnt); break;
    case GGML_TYPE_Q8_0: k->dequant_q8_0(src, out, cnt); break;
    case GGML_TYPE_Q4_0: k->dequant_q4_0(src, out, cnt); break;
    case GGML_TYPE_Q4_K: k->dequant_q4_K(src, out, cnt); break;
    default: k->dequant_q6_K(src, out, cnt); break;
    }
}

/* Rows of W fetched ahead of the dot products (software prefetch of the row QV_AHEAD rows
 * further on, into all cache levels): with one row after the other, the hardware prefetcher
 * restarts at every 4 KiB page and the dots read memory slower than sgemv does. */
#define QV_AHEAD 4

static inline void prefetch_row(const mg_weight *W, int n, int N)
{
    if (n >= N) return;
    const char *p = (const char *)W->data + (size_t)n * W->row_bytes;
    for (size_t o = 0; o < W->row_bytes; o += 64) __builtin_prefetch(p + o, 0, 3);
}

static int matmul_dots(mg_backend *be, const float *x, int M, int K, const mg_weight *W, int N,
                       const float *bias, float *y)
{
    const mg_kernels *k = ctx_of(be)->k;
    const size_t ab = act_row_bytes(W->type, K);
    void *act = NULL;
    if (ab) {
        if (!(act = malloc(ab * (size_t)M)))
            return mg_seterr(MG_ERR_NOMEM, "out of memory for the 8-bit activation rows of a "
                             "%s product (%d x %d)", gguf_type_name(W->type), M, K);
        for (int m = 0; m < M; m++)
            act_quantize(k, W->type, x + (size_t)m * K, K, (char *)act + ab * (size_t)m);
    }
    const int nb = (N + MV_ROWS - 1) / MV_ROWS;
#pragma omp parallel for num_threads(be->n_threads) schedule(static) if (nb > 1 && (size_t)N * K >= 65536)
    for (int b = 0; b < nb; b++) {
        const int n1 = b * MV_ROWS + MV_ROWS < N ? b * MV_ROWS + MV_ROWS : N;
        int n = b * MV_ROWS;
        if (M == 1 && !ab) /* fp16 / bf16 decode: rows in pairs, one pass over x each */
            for (; n + 2 <= n1; n += 2) {
                prefetch_row(W, n + QV_AHEAD, N);
                prefetch_row(W, n + 1 + QV_AHEAD, N);
                rows_dot2(k, W, n, x, K, y + n);
                for (int r = 0; r < 2; r++) y[n + r] += bias ? bias[n + r] : 0.0f;
            }
        for (; n < n1; n++) {
            const void *w = (const char *)W->data + (size_t)n * W->row_bytes;
            prefetch_row(W, n + QV_AHEAD, N);
            for (int m = 0; m < M; m++) {
                const void *a = ab ? (const char *)act + ab * (size_t)m
                                   : (const void *)(x + (size_t)m * K);
                y[(size_t)m * N + n] = row_dot(k, W->type, w, a, K) + (bias ? bias[n] : 0.0f);
            }
        }
    }
    free(act);
    return MG_OK;
}

static int matmul_expanded(mg_backend *be, const float *x, int M, int K, const mg_weight *W,
                           int N, const float *bias, float *y)
{
    const mg_kernels *k = ctx_of(be)->k;
    const int nrb = (M + QT_ROWS - 1) / QT_ROWS, ncb = (N + QT_COLS - 1) / QT_COLS;
    const int nt = nrb * ncb;
    int failed = 0;
#pragma omp parallel num_threads(be->n_threads) if (nt > 1)
    {
        float *wt = malloc(sizeof(float) * QT_COLS * (size_t)K);
        if (!wt) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int t = 0; t < nt; t++) {
            if (!wt) continue;
            /* column-major order of tiles: consecutive tiles of a thread share W rows */
            const int n0 = (t / nrb) * QT_COLS, m0 = (t % nrb) * QT_ROWS;
            const int n = N - n0 < QT_COLS ? N - n0 : QT_COLS;
            const int m = M - m0 < QT_ROWS ? M - m0 : QT_ROWS;
            expand_rows(k, W, n0, n, wt);
            float *yb = y + (size_t)m0 * N + n0;
            if (bias)
                for (int i = 0; i < m; i++) memcpy(yb + (size_t)i * N, bias + n0, sizeof(float) * n);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, K, 1.0f,
                        x + (size_t)m0 * K, K, wt, K, bias ? 1.0f : 0.0f, yb, N);
        }
        free(wt);
    }
    if (failed)
        return mg_seterr(MG_ERR_NOMEM, "out of memory for the fp32 tiles of a %s product "
                         "(%d x %d floats per thread)", gguf_type_name(W->type), QT_COLS, K);
    return MG_OK;
}

int cpu_matmul(mg_backend *be, const float *x, int M, int K, const mg_weight *W, int N,
               const float *bias, float *y)
{
    if (M <= 0 || N <= 0) return MG_OK;
    if (W->cols != K || W->rows < N)
        return mg_seterr(MG_ERR_INVALID_ARG, "matmul: a %d x %d weight for a product of %d "
                         "rows of %d into %d", W->rows, W->cols, M, K, N);
    switch (W->type) {
    case GGML_TYPE_F32: return matmul_f32(be, x, M, K, W->data, N, bias, y);
    case GGML_TYPE_F16:
    case GGML_TYPE_BF16:
    case GGML_TYPE_Q8_0:
    case GGML_TYPE_Q4_0:
    case GGML_TYPE_Q4_K:
    case GGML_TYPE_Q6_K:
        return M <= QV_MAX_ROWS ? matmul_dots(be, x, M, K, W, N, bias, y)
                                : matmul_expanded(be, x, M, K, W, N, bias, y);
    default:
        return mg_seterr(MG_ERR_UNSUPPORTED, "matmul: weights of type %s are not supported",
                         gguf_type_name(W->type));
    }
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

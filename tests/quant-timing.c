/* quant-timing - the decode speed of each table's dot products (kernels.h) over a weight
 * matrix bigger than the caches, against cblas_sgemv on the same matrix in fp32, on one
 * thread: make tests/quant-timing && OPENBLAS_NUM_THREADS=1 tests/quant-timing [cols]
 *
 * For each type: the rows needed for at least 64 MiB of weights at `cols` (default 4096)
 * columns, timed over repeated passes (the activation rounding included, once per pass).
 * Prints GB/s of weight bytes read and the speed in weights per second relative to sgemv. */
#include "config.h"

#include <cblas.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "blocks.h"
#include "kernels.h"
#include "quant-half.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

#define MIN_BYTES (64.0 * 1024 * 1024)

/* weights per second of sgemv over rows x cols in fp32 */
static double time_sgemv(int cols)
{
    const int rows = (int)(MIN_BYTES / (4.0 * cols)) + 1;
    float *w = malloc(sizeof(float) * rows * cols), *x = malloc(sizeof(float) * cols), *y = malloc(sizeof(float) * rows);
    for (size_t i = 0; i < (size_t)rows * cols; i++) w[i] = (float)(i % 7) - 3.0f;
    for (int i = 0; i < cols; i++) x[i] = 0.01f * (i % 13);
    double best = 1e30;
    for (int r = 0; r < 5; r++) {
        const double t0 = now();
        cblas_sgemv(CblasRowMajor, CblasNoTrans, rows, cols, 1.0f, w, cols, x, 1, 0.0f, y, 1);
        const double t = now() - t0;
        if (t < best) best = t;
    }
    printf("  %-8s %-5s %6.2f GB/s  %6.2f Gweights/s  1.00x\n", "openblas", "f32",
           4.0 * rows * cols / best * 1e-9, (double)rows * cols / best * 1e-9);
    free(w); free(x); free(y);
    return (double)rows * cols / best;
}

/* one type: bytes per row, rows to fill MIN_BYTES, best of 5 passes */
static void time_type(const mg_kernels *K, int type, int cols, double ref)
{
    static const char *const names[] = {"f16", "bf16", "q8_0", "q4_0", "q4_K", "q6_K"};
    const size_t row_bytes = type < 2 ? 2 * (size_t)cols
                           : type == 2 ? cols / 32 * MG_Q8_0_SIZE
                           : type == 3 ? cols / 32 * MG_Q4_0_SIZE
                           : type == 4 ? cols / 256 * MG_Q4_K_SIZE : cols / 256 * MG_Q6_K_SIZE;
    const int rows = (int)(MIN_BYTES / row_bytes) + 1;
    uint8_t *w = malloc(row_bytes * rows), *xq = malloc(cols / 32 * MG_Q8_K_SIZE);
    float *x = malloc(sizeof(float) * cols), *y = malloc(sizeof(float) * rows);
    for (size_t i = 0; i < row_bytes * rows; i++) w[i] = (uint8_t)(i * 2654435761u >> 13);
    if (type < 2) /* finite halves / bf16 */
        for (size_t i = 0; i < row_bytes * rows; i += 2) w[i + 1] = 0x3c;
    for (int i = 0; i < cols; i++) x[i] = 0.01f * (i % 13) - 0.05f;
    double best = 1e30;
    for (int r = 0; r < 5; r++) {
        const double t0 = now();
        if (type == 2 || type == 3) K->quantize_q8_0(x, xq, cols);
        if (type >= 4) K->quantize_q8_K(x, xq, cols);
        for (int i = 0; i < rows; i++) {
            const uint8_t *wr = w + row_bytes * i;
            switch (type) {
            case 0: y[i] = K->dot_f16((const uint16_t *)wr, x, cols); break;
            case 1: y[i] = K->dot_bf16((const uint16_t *)wr, x, cols); break;
            case 2: y[i] = K->dot_q8_0(wr, xq, cols); break;
            case 3: y[i] = K->dot_q4_0(wr, xq, cols); break;
            case 4: y[i] = K->dot_q4_K(wr, xq, cols); break;
            default: y[i] = K->dot_q6_K(wr, xq, cols); break;
            }
        }
        const double t = now() - t0;
        if (t < best) best = t;
    }
    const double wps = (double)rows * cols / best;
    printf("  %-8s %-5s %6.2f GB/s  %6.2f Gweights/s  %.2fx\n", K->name, names[type],
           (double)row_bytes * rows / best * 1e-9, wps * 1e-9, wps / ref);
    free(w); free(xq); free(x); free(y);
}

int main(int argc, char **argv)
{
    const int cols = argc > 1 ? atoi(argv[1]) : 4096;
    if (cols <= 0 || cols % 256) {
        fprintf(stderr, "quant-timing: cols must be a positive multiple of 256\n");
        return 2;
    }
    const char *env = getenv("OPENBLAS_NUM_THREADS");
    if (!env || strcmp(env, "1") != 0) printf("  (set OPENBLAS_NUM_THREADS=1 for a one-thread sgemv)\n");
    printf("  %d columns, >= 64 MiB of weights per type, best of 5 passes, one thread\n", cols);
    const double ref = time_sgemv(cols);
    const char *names[] = {"avx512", "avx2", "neon", "scalar"};
    for (int i = 0; i < 4; i++) {
        const mg_kernels *K = mg_kernels_by_name(names[i]);
        if (!K || (i == 3 && getenv("QUANT_TIMING_SKIP_SCALAR"))) continue;
        for (int type = 0; type < 6; type++) time_type(K, type, cols, ref);
    }
    return 0;
}

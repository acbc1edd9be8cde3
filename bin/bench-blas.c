/* bench-blas.c - megalodon-bench's BLAS yardstick (bench-blas.h): OpenBLAS called directly. */
#include "config.h"

#include <cblas.h>

#include "bench-blas.h"

void bench_blas_set_threads(int n) { openblas_set_num_threads(n); }

void bench_sgemm(int M, int N, int K, const float *x, const float *w, float *y)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, x, K, w, K, 0.0f, y, N);
}

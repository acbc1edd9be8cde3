/* bench-blas.h - megalodon-bench's BLAS yardstick: the only calls of the program that go to
 * OpenBLAS itself rather than through libmegalodon (megalodon.h). */
#ifndef MG_BENCH_BLAS_H
#define MG_BENCH_BLAS_H

/* OpenBLAS's own thread count (the library keeps it at 1 while it runs). */
void bench_blas_set_threads(int n);

/* y[M,N] = x[M,K] w[N,K]^T (row-major), the shape of the library's projections. */
void bench_sgemm(int M, int N, int K, const float *x, const float *w, float *y);

#endif

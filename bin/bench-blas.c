/* bench-blas.c - megalodon-bench's BLAS yardstick (bench-blas.h): OpenBLAS called directly. */
#include "config.h"

#include <cblas.h>

#include "bench-blas.h"

#include <string.h>

void bench_blas_set_threads(int n) { openblas_set_num_threads(n); }

/* OpenBLAS 0.3.21 (Debian 12) does not know some recent x86 CPUs (e.g. a virtual machine's
 * Xeon of model 207) and runs its SSE3 "Prescott" kernels there: measured on such a machine
 * with AVX-512, pp4096 of the 139M model ran at 260 tok/s against 923 with
 * OPENBLAS_CORETYPE=SkylakeX (docs/performance.md). */
const char *bench_blas_warning(void)
{
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    const char *core = openblas_get_corename();
    if (core && (!strcmp(core, "Prescott") || !strcmp(core, "Core2") || !strcmp(core, "Nehalem"))
        && __builtin_cpu_supports("avx2"))
        return __builtin_cpu_supports("avx512f")
                   ? "OpenBLAS runs its pre-AVX kernels on this AVX-512 CPU (it did not recognize "
                     "it): prefill and f32 decode are several times slower than they can be; "
                     "set OPENBLAS_CORETYPE=SkylakeX (docs/performance.md)"
                   : "OpenBLAS runs its pre-AVX kernels on this AVX2 CPU (it did not recognize "
                     "it): prefill and f32 decode are several times slower than they can be; "
                     "set OPENBLAS_CORETYPE=Haswell (docs/performance.md)";
#endif
    return NULL;
}

void bench_sgemm(int M, int N, int K, const float *x, const float *w, float *y)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, x, K, w, K, 0.0f, y, N);
}

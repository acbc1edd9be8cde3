/* backend-cpu-loss.c - the loss and the optimizer step of the CPU backend: cross-entropy
 * with its gradient, and AdamW, through the backend's kernel table (simd/kernels.h). Rows
 * (cross-entropy) and blocks of parameters (AdamW) are independent; the row losses are
 * summed in order, so the loss is the same bit for bit for any thread count. */
#include "config.h"

#include <stdlib.h>

#include "backend-cpu.h"
#include "error.h"

#define EW_BLK 16384 /* parameters per block of the AdamW step split among threads */

/* loss_r = logsumexp(l_r) - l_r[t_r] ;  dl_r = (softmax(l_r) - onehot(t_r)) * scale */
int cpu_cross_entropy(mg_backend *be, const float *logits, const int32_t *targets,
                      size_t rows, int n, float scale, double *loss_sum, float *dlogits)
{
    double *lr = malloc(sizeof(double) * (rows ? rows : 1));
    if (!lr)
        return mg_seterr(MG_ERR_NOMEM, "out of memory for the cross-entropy row losses (%zu rows)",
                         rows);
    const mg_kernels *K = ctx_of(be)->k;
#pragma omp parallel for num_threads(be->n_threads) schedule(static) if (rows > 4)
    for (size_t i = 0; i < rows; i++)
        lr[i] = K->cross_entropy_row(logits + i * n, n, targets[i], scale,
                                     dlogits ? dlogits + i * n : NULL);
    double s = 0;
    for (size_t i = 0; i < rows; i++) s += lr[i];
    *loss_sum += s;
    free(lr);
    return MG_OK;
}

/* AdamW over n parameters (backend.h: adamw) */
int cpu_adamw(mg_backend *be, float *p, const float *g, float *m, float *v, size_t n,
              double lr, double wd, double b1, double b2, double eps, double gs,
              double step_size, double sbc2)
{
    const mg_kernels *K = ctx_of(be)->k;
    const long nb = (long)((n + EW_BLK - 1) / EW_BLK);
#pragma omp parallel for num_threads(be->n_threads) schedule(static) if (nb > 4)
    for (long b = 0; b < nb; b++) {
        const size_t i0 = (size_t)b * EW_BLK, k = n - i0 < EW_BLK ? n - i0 : EW_BLK;
        K->adamw(p + i0, g + i0, m + i0, v + i0, k, lr, wd, b1, b2, eps, gs, step_size, sbc2);
    }
    return MG_OK;
}

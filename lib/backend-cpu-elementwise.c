/* backend-cpu-elementwise.c - the elementwise ops of the CPU backend, forward and backward:
 * SiLU, product, sum, scale, per-row affine map and RoPE, through the backend's kernel table
 * (simd/kernels.h). Each element's result depends on its inputs only, so splitting the work
 * among threads changes no bit. */
#include "config.h"

#include "backend-cpu.h"

#define EW_BLK 16384 /* elements per block of an elementwise op split among threads */

int cpu_silu(mg_backend *be, const float *x, float *y, size_t n)
{
    ctx_of(be)->k->silu(x, y, n);
    return MG_OK;
}

/* silu(x) = x s(x):  silu'(x) = s (1 + x (1 - s)) */
int cpu_silu_backward(mg_backend *be, const float *x, const float *dy, float *dx,
                      size_t n)
{
    const mg_kernels *K = ctx_of(be)->k;
    const long nb = (long)((n + EW_BLK - 1) / EW_BLK);
#pragma omp parallel for num_threads(be->n_threads) schedule(static) if (nb > 4)
    for (long b = 0; b < nb; b++) {
        const size_t i0 = (size_t)b * EW_BLK, m = n - i0 < EW_BLK ? n - i0 : EW_BLK;
        K->silu_backward(x + i0, dy + i0, dx + i0, m);
    }
    return MG_OK;
}

int cpu_mul(mg_backend *be, const float *a, const float *b, float *y, size_t n)
{
    ctx_of(be)->k->mul(a, b, y, n);
    return MG_OK;
}

int cpu_add(mg_backend *be, const float *a, const float *b, float *y, size_t n)
{
    ctx_of(be)->k->add(a, b, y, n);
    return MG_OK;
}

int cpu_scale(mg_backend *be, const float *x, float a, float *y, size_t n)
{
    ctx_of(be)->k->scale(x, a, y, n);
    return MG_OK;
}

int cpu_affine_rows(mg_backend *be, const float *x, size_t rows, int m, const float *s,
                    const float *t, float *y)
{
    ctx_of(be)->k->affine_rows(x, rows, m, s, t, y);
    return MG_OK;
}

/* x (L rows of H heads of dh) rotated in place by the angles (pos0 + t) freqs */
/* RoPE in place on L rows of H heads of dh: row t rotated by the angles (pos0 + t) freqs
 * (its backward is this op with the angles negated, lib/attention.c). */
int cpu_rope(mg_backend *be, float *x, int L, int H, int dh, int pos0, const float *freqs)
{
    const mg_kernels *k = ctx_of(be)->k;
    for (int t = 0; t < L; t++)
        for (int hh = 0; hh < H; hh++) k->rope(x + ((size_t)t * H + hh) * dh, dh, pos0 + t, freqs);
    return MG_OK;
}

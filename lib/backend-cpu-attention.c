/* backend-cpu-attention.c - RoPE and chunk attention of the CPU backend (OpenBLAS). */
#include "config.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "backend-cpu.h"
#include "error.h"

int cpu_rope(mg_backend *be, float *x, int L, int H, int dh, int pos0,
                    const float *freqs)
{
    const mg_kernels *k = ctx_of(be)->k;
    for (int t = 0; t < L; t++)
        for (int hh = 0; hh < H; hh++) k->rope(x + ((size_t)t * H + hh) * dh, dh, pos0 + t, freqs);
    return MG_OK;
}

/* Per head: S = q k^T (L x Lk), causal mask bottom-right aligned, softmax rows, out = S v. */
int cpu_attention(mg_backend *be, const float *q, const float *k, const float *v, int L,
                         int Lk, int H, int dk, int dv, float *out)
{
    const mg_kernels *K = ctx_of(be)->k;
    float *S = malloc(sizeof(float) * (size_t)L * Lk);
    if (!S) return mg_seterr(MG_ERR_NOMEM, "attention: out of memory (%d x %d scores)", L, Lk);
    const int off = Lk - L;
    for (int hh = 0; hh < H; hh++) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, L, Lk, dk, 1.0f, q + hh * dk,
                    H * dk, k + hh * dk, H * dk, 0.0f, S, Lk);
        for (int i = 0; i < L; i++) {
            float *row = S + (size_t)i * Lk;
            int n = off + i + 1; /* keys visible to query i */
            K->softmax(row, n);
            memset(row + n, 0, sizeof(float) * (Lk - n));
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, L, dv, Lk, 1.0f, S, Lk,
                    v + hh * dv, H * dv, 0.0f, out + hh * dv, H * dv);
    }
    free(S);
    return MG_OK;
}


/* backend-cpu-attention.c - chunk attention of the CPU backend (OpenBLAS): the streaming
 * forward, and for training the forward that keeps the probabilities and its backward.
 *
 * Streaming attention of L queries over Lk keys, causal and bottom-right aligned (query i sees keys
 * 0 .. off+i, off = Lk - L), per head out = softmax(q k^T) v, computed in blocks:
 *
 *   prefill (L > 1): the queries are cut into row blocks of QB rows. Block [i0, i1) sees
 *     the keys [0, off+i0) in full (a rectangle: one sgemm for the scores, one for P V) and
 *     the keys [off+i0, off+i1) causally (a triangle), which is done in sub-blocks of SB
 *     rows, each multiplying only the keys its last row sees. Nothing above the diagonal is
 *     computed beyond the SB-row steps of the triangle, and the scores of one block
 *     (QB x (off+i1) floats) are all the memory a thread needs, never L x Lk.
 *   decode (L == 1): the keys are cut into blocks of KB; each block gives its partial
 *     softmax (local max, sum of exponentials, weighted sum of values: sgemv), and the
 *     blocks of a head are merged in a fixed order (as flash decoding does), so that one
 *     head's keys can be read by several threads.
 *
 * Threads (docs/architecture.md §5): the (head, block) tasks are spread over the backend's
 * OpenMP threads and every matrix product inside is a single-threaded OpenBLAS call
 * (the backend keeps OpenBLAS at one thread, see cpu_matmul), even when the op runs on one
 * thread. The blocks are fixed by L, Lk and H only and each task's
 * arithmetic does not depend on the thread that runs it, so the result is bit-identical for
 * any thread count. (Keeping OpenBLAS at one thread here is also what makes that true:
 * OpenBLAS 0.3.21's threaded sgemm splits the work at places that depend on its thread
 * count, and with some of its kernels, e.g. Prescott and Haswell, edge tiles round
 * differently.) */
#include "config.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "backend-cpu.h"
#include "error.h"

#define QB 64  /* query rows per block (prefill) */
#define SB 16  /* rows per sub-block of the causal triangle */
#define KB 256 /* keys per block (decode) */

/* One head hh, query rows [i0, i1): S has room for (i1-i0) x (off+i1) scores. */
static void attn_block(const mg_kernels *K, const float *q, const float *k, const float *v,
                       int L, int Lk, int H, int dk, int dv, int hh, int i0, int i1, float *S,
                       float *out)
{
    const int off = Lk - L, r = off + i0, nv = off + i1, m = i1 - i0;
    const int qs = H * dk, vs = H * dv;
    const float *qb = q + (size_t)i0 * qs + (size_t)hh * dk, *kh = k + (size_t)hh * dk;
    const float *vh = v + (size_t)hh * dv;
    float *ob = out + (size_t)i0 * vs + (size_t)hh * dv;

    /* scores: the rectangle of keys every row sees, then the triangle in sub-blocks */
    if (r > 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, r, dk, 1.0f, qb, qs, kh, qs,
                    0.0f, S, nv);
    for (int s0 = 0; s0 < m; s0 += SB) {
        const int s1 = s0 + SB < m ? s0 + SB : m;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s1 - s0, s1, dk, 1.0f,
                    qb + (size_t)s0 * qs, qs, kh + (size_t)r * qs, qs, 0.0f,
                    S + (size_t)s0 * nv + r, nv);
        for (int li = s0; li < s1; li++) {
            float *row = S + (size_t)li * nv;
            const int n = r + li + 1; /* keys visible to query i0 + li */
            K->softmax(row, n);
            /* zero the computed scores above the diagonal of this sub-block */
            memset(row + n, 0, sizeof(float) * (size_t)(r + s1 - n));
        }
    }
    /* out = P V over the same pieces */
    if (r > 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, dv, r, 1.0f, S, nv, vh, vs,
                    0.0f, ob, vs);
    for (int s0 = 0; s0 < m; s0 += SB) {
        const int s1 = s0 + SB < m ? s0 + SB : m;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s1 - s0, dv, s1, 1.0f,
                    S + (size_t)s0 * nv + r, nv, vh + (size_t)r * vs, vs, r > 0 ? 1.0f : 0.0f,
                    ob + (size_t)s0 * vs, vs);
    }
}

static int attn_prefill(mg_backend *be, const float *q, const float *k, const float *v, int L,
                        int Lk, int H, int dk, int dv, float *out)
{
    const mg_kernels *K = ctx_of(be)->k;
    const int nb = (L + QB - 1) / QB, tasks = nb * H;
    int nt = be->n_threads < tasks ? be->n_threads : tasks;
    if (nt < 1) nt = 1;
    const size_t per = (size_t)(L < QB ? L : QB) * Lk; /* scores of one block, at most */
    float *S = malloc(sizeof(float) * per * nt);
    if (!S)
        return mg_seterr(MG_ERR_NOMEM,
                         "out of memory for the attention scores (%d threads x %zu floats)", nt,
                         per);
    /* Largest blocks (the last rows see the most keys) first. */
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1) if (nt > 1)
    for (int t = 0; t < tasks; t++) {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        const int b = nb - 1 - t / H, hh = t % H;
        const int i0 = b * QB, i1 = i0 + QB < L ? i0 + QB : L;
        attn_block(K, q, k, v, L, Lk, H, dk, dv, hh, i0, i1, S + per * tid, out);
    }
    free(S);
    return MG_OK;
}

/* One query (L == 1) over Lk keys: partial softmax per (head, key block), then a merge. */
static int attn_decode(mg_backend *be, const float *q, const float *k, const float *v, int Lk,
                       int H, int dk, int dv, float *out)
{
    const int nkb = (Lk + KB - 1) / KB, tasks = nkb * H;
    const int qs = H * dk, vs = H * dv;
    float *sc = malloc(sizeof(float) * ((size_t)H * Lk + (size_t)tasks * dv));
    double *ml = malloc(sizeof(double) * 2 * (size_t)tasks);
    if (!sc || !ml) {
        free(sc);
        free(ml);
        return mg_seterr(MG_ERR_NOMEM,
                         "out of memory for the attention decode's scores (%d keys, %d heads)",
                         Lk, H);
    }
    float *part = sc + (size_t)H * Lk;
    int nt = be->n_threads < tasks ? be->n_threads : tasks;
    if (nt < 1) nt = 1;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int t = 0; t < tasks; t++) {
        const int hh = t / nkb, b = t % nkb, j0 = b * KB;
        const int n = Lk - j0 < KB ? Lk - j0 : KB;
        float *s = sc + (size_t)hh * Lk + j0;
        cblas_sgemv(CblasRowMajor, CblasNoTrans, n, dk, 1.0f, k + (size_t)j0 * qs + (size_t)hh * dk,
                    qs, q + (size_t)hh * dk, 1, 0.0f, s, 1);
        float mx;
        const double sum = mg_softmax_exp(s, n, &mx); /* s = exp(s - mx), unnormalized */
        cblas_sgemv(CblasRowMajor, CblasTrans, n, dv, 1.0f, v + (size_t)j0 * vs + (size_t)hh * dv,
                    vs, s, 1, 0.0f, part + (size_t)t * dv, 1);
        ml[2 * t] = mx;
        ml[2 * t + 1] = sum;
    }
    /* merge: out = sum_b e^(m_b - M) o_b / sum_b e^(m_b - M) l_b, blocks in order */
    for (int hh = 0; hh < H; hh++) {
        const double *mh = ml + 2 * (size_t)hh * nkb;
        double M = mh[0], den = 0.0;
        for (int b = 1; b < nkb; b++) M = mh[2 * b] > M ? mh[2 * b] : M;
        for (int b = 0; b < nkb; b++) den += exp(mh[2 * b] - M) * mh[2 * b + 1];
        float *o = out + (size_t)hh * dv;
        const float *p = part + (size_t)hh * nkb * dv;
        float w = (float)(exp(mh[0] - M) / den);
        for (int c = 0; c < dv; c++) o[c] = w * p[c];
        for (int b = 1; b < nkb; b++) {
            w = (float)(exp(mh[2 * b] - M) / den);
            p += dv;
            for (int c = 0; c < dv; c++) o[c] += w * p[c];
        }
    }
    free(sc);
    free(ml);
    return MG_OK;
}

int cpu_attention(mg_backend *be, const float *q, const float *k, const float *v, int L, int Lk,
                  int H, int dk, int dv, float *out)
{
    if (L <= 0 || H <= 0) return MG_OK;
    if (Lk < L)
        return mg_seterr(MG_ERR_INVALID_ARG, "attention: %d queries over only %d keys", L, Lk);
    /* OpenBLAS is single-threaded throughout the backend (backend-cpu.c, cpu_matmul). */
    return L == 1 ? attn_decode(be, q, k, v, Lk, H, dk, dv, out)
                  : attn_prefill(be, q, k, v, L, Lk, H, dk, dv, out);
}

/* ---------------------------------------------------------------- training */

/* Per chunk and head: S = q k^T (causal), P = softmax(S), out = P v, in blocks of AB query
 * rows: block [i0, i1) multiplies only the keys 0 .. i1-1 it can see, so the products skip
 * everything above the diagonal but for the block's own triangle (about half the flops of
 * the full L x L block). P is kept whole (L x L, zero above the diagonal) for the backward.
 * The blocks depend on L only: the same result for any thread count. */
#define AB 64

int cpu_attention_train(mg_backend *be, const float *q, const float *k, const float *v,
                        int S, int L, int H, int dk, int dv, float *out, float *P)
{
    const int work = S * H, qs = H * dk, vs = H * dv;
    const mg_kernels *K = ctx_of(be)->k;
#pragma omp parallel for num_threads(be->n_threads) schedule(static) if (work > 1)
    for (int sh = 0; sh < work; sh++) {
        const int s = sh / H, h = sh % H;
        const size_t r0 = (size_t)s * L;
        const float *qh = q + r0 * qs + (size_t)h * dk, *kh = k + r0 * qs + (size_t)h * dk;
        float *Ph = P + (size_t)sh * L * L;
        for (int i0 = 0; i0 < L; i0 += AB) {
            const int i1 = i0 + AB < L ? i0 + AB : L, m = i1 - i0;
            float *Pb = Ph + (size_t)i0 * L;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, i1, dk, 1.0f,
                        qh + (size_t)i0 * qs, qs, kh, qs, 0.0f, Pb, L);
            for (int i = i0; i < i1; i++) { /* causal: keys 0 .. i */
                float *row = Ph + (size_t)i * L;
                K->softmax(row, i + 1);
                memset(row + i + 1, 0, sizeof(float) * (size_t)(L - i - 1));
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, dv, i1, 1.0f, Pb, L,
                        v + r0 * vs + (size_t)h * dv, vs, 0.0f,
                        out + (r0 + i0) * vs + (size_t)h * dv, vs);
        }
    }
    return MG_OK;
}

/* dV = P^T dO ;  dP = dO V^T ;  dS = P (dP - rowsum(P dP)) ;  dQ = dS K ;  dK = dS^T Q,
 * in the blocks of the forward: query block [i0, i1) reads keys 0 .. i1-1 (dP, dS, dQ),
 * key block [j0, j1) is read by queries j0 .. L-1 (dV, dK). */
int cpu_attention_backward(mg_backend *be, const float *q, const float *k,
                           const float *v, const float *P, const float *dout, int S,
                           int L, int H, int dk, int dv, float *dq, float *dk_,
                           float *dv_)
{
    const int work = S * H, qs = H * dk, vs = H * dv;
    int fail = 0;
#pragma omp parallel num_threads(be->n_threads) if (work > 1)
    {
        float *dS = malloc(sizeof(float) * (size_t)L * L);
        if (!dS) {
#pragma omp atomic write
            fail = 1;
        }
#pragma omp for schedule(static)
        for (int sh = 0; sh < work; sh++) {
            if (!dS) continue;
            const int s = sh / H, h = sh % H;
            const size_t r0 = (size_t)s * L;
            const float *Ph = P + (size_t)sh * L * L;
            const float *qh = q + r0 * qs + (size_t)h * dk, *kh = k + r0 * qs + (size_t)h * dk;
            const float *vh = v + r0 * vs + (size_t)h * dv, *doh = dout + r0 * vs + (size_t)h * dv;
            float *dqh = dq + r0 * qs + (size_t)h * dk, *dkh = dk_ + r0 * qs + (size_t)h * dk;
            float *dvh = dv_ + r0 * vs + (size_t)h * dv;
            for (int i0 = 0; i0 < L; i0 += AB) {
                const int i1 = i0 + AB < L ? i0 + AB : L, m = i1 - i0;
                float *dSb = dS + (size_t)i0 * L;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, i1, dv, 1.0f,
                            doh + (size_t)i0 * vs, vs, vh, vs, 0.0f, dSb, L);
                for (int i = i0; i < i1; i++) {
                    const float *pr = Ph + (size_t)i * L;
                    float *dr = dS + (size_t)i * L;
                    double rs = 0;
                    for (int j = 0; j <= i; j++) rs += (double)pr[j] * dr[j];
                    for (int j = 0; j <= i; j++) dr[j] = pr[j] * (float)(dr[j] - rs);
                    memset(dr + i + 1, 0, sizeof(float) * (size_t)(L - i - 1));
                }
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, dk, i1, 1.0f, dSb, L,
                            kh, qs, 0.0f, dqh + (size_t)i0 * qs, qs);
            }
            for (int j0 = 0; j0 < L; j0 += AB) {
                const int j1 = j0 + AB < L ? j0 + AB : L, n = j1 - j0, rows = L - j0;
                const size_t off = (size_t)j0 * L + j0; /* rows j0 .. L-1, columns j0 .. j1-1 */
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, dv, rows, 1.0f,
                            Ph + off, L, doh + (size_t)j0 * vs, vs, 0.0f,
                            dvh + (size_t)j0 * vs, vs);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, dk, rows, 1.0f,
                            dS + off, L, qh + (size_t)j0 * qs, qs, 0.0f,
                            dkh + (size_t)j0 * qs, qs);
            }
        }
        free(dS);
    }
    if (fail)
        return mg_seterr(MG_ERR_NOMEM,
                         "out of memory for the attention backward's score gradients (L=%d)", L);
    return MG_OK;
}

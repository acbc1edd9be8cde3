/* matmul.cl - y[M,N] = x[M,K] W[N,K]^T (+ bias[N]); W row-major (out, in), fp32 or fp16.
 *
 * mg_matmul: a work-group of 8 x 8 work-items computes a 32 x 32 tile of y, each work-item
 * a 4 x 4 block (rows ty + 8a, columns tx + 8b); x and W are staged through local memory in
 * K-slices of 16 (mm_tile, which mg_matmul_typed of matmul-typed.cl shares). mg_gemv
 * (M == 1, decode): one work-group per output, a tree reduction over K. docs/opencl.md gives
 * the measurements against CLBlast. */
#define MM_T 32
#define MM_K 16

/* The ggml type ids of W that w_at reads (matmul-typed.cl: the layouts and the reader). */
#define WT_F32 0
#define WT_F16 1
#define WT_Q4_0 2
#define WT_Q8_0 8
static float w_at(__global const uchar *W, int wt, int row_bytes, int n, int k);

/* The tile of y of this work-group (columns from group 0, rows from group 1), W[n, k] read
 * with w_at; xs and ws: the kernel's local tiles of x and W. */
static void mm_tile(__global const float *x, int M, int K, __global const uchar *W, int wt,
                    int row_bytes, int N, __global const float *bias, int has_bias,
                    __global float *y, __local float xs[MM_T][MM_K + 1],
                    __local float ws[MM_T][MM_K + 1])
{
    const int tx = get_local_id(0), ty = get_local_id(1), tid = ty * 8 + tx;
    const int n0 = get_group_id(0) * MM_T, m0 = get_group_id(1) * MM_T;
    float acc[4][4];
    for (int a = 0; a < 4; a++)
        for (int b = 0; b < 4; b++) acc[a][b] = 0.0f;
    for (int k0 = 0; k0 < K; k0 += MM_K) {
        for (int e = tid; e < MM_T * MM_K; e += 64) {
            const int r = e / MM_K, c = e % MM_K, gc = k0 + c;
            const int gm = m0 + r, gn = n0 + r;
            xs[r][c] = (gm < M && gc < K) ? x[(size_t)gm * K + gc] : 0.0f;
            ws[r][c] = (gn < N && gc < K) ? w_at(W, wt, row_bytes, gn, gc) : 0.0f;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int kk = 0; kk < MM_K; kk++) {
            float xa[4], wb[4];
            for (int a = 0; a < 4; a++) xa[a] = xs[ty + 8 * a][kk];
            for (int b = 0; b < 4; b++) wb[b] = ws[tx + 8 * b][kk];
            for (int a = 0; a < 4; a++)
                for (int b = 0; b < 4; b++) acc[a][b] = fma(xa[a], wb[b], acc[a][b]);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    for (int a = 0; a < 4; a++) {
        const int m = m0 + ty + 8 * a;
        if (m >= M) continue;
        for (int b = 0; b < 4; b++) {
            const int n = n0 + tx + 8 * b;
            if (n < N) y[(size_t)m * N + n] = acc[a][b] + (has_bias ? bias[n] : 0.0f);
        }
    }
}

/* W of wtype: rows of K fp32 or fp16 values. */
__kernel __attribute__((reqd_work_group_size(8, 8, 1)))
void mg_matmul(__global const float *x, int M, int K, __global const wtype *W, int N,
               __global const float *bias, int has_bias, __global float *y)
{
    __local float xs[MM_T][MM_K + 1];
    __local float ws[MM_T][MM_K + 1];
    mm_tile(x, M, K, (__global const uchar *)W, MG_W_HALF ? WT_F16 : WT_F32,
            K * (int)sizeof(wtype), N, bias, has_bias, y, xs, ws);
}

/* y[m0 + a, n0 + b] = s[a][b] (+ bias) for the elements of the 4 x 4 block at (m0, n0) that
 * lie inside y (the direct kernels clamp their rows past the end instead of testing them). */
static void store_block(__global float *y, int M, int N, int m0, int n0, float s[4][4],
                        __global const float *bias, int has_bias)
{
    for (int a = 0; a < 4 && m0 + a < M; a++)
        for (int b = 0; b < 4 && n0 + b < N; b++)
            y[(size_t)(m0 + a) * N + n0 + b] = s[a][b] + (has_bias ? bias[n0 + b] : 0.0f);
}

__kernel void mg_gemv(__global const float *x, int K, __global const wtype *W, int N,
                      __global const float *bias, int has_bias, __global float *y,
                      __local float *tmp)
{
    const int n = get_group_id(0), lid = get_local_id(0), ls = get_local_size(0);
    __global const wtype *wr = W + (size_t)n * K;
    float s = 0.0f;
    for (int k = lid; k < K; k += ls) s = fma(x[k], LOADW(wr, k), s);
    tmp[lid] = s;
    REDUCE_SUM(tmp, lid, ls);
    if (lid == 0) y[n] = tmp[0] + (has_bias ? bias[n] : 0.0f);
}

/* mg_matmul_direct: no local memory and no barriers; each work-item computes a 4 x 4 block
 * of y from 4 rows of x and 4 rows of W read along K as float4 (rows past the end are
 * clamped and not stored). Devices whose work-items are SIMD lanes of CPU cores (PoCL) run
 * this much faster than the tiled kernel, whose barriers split every work-item's loop. */
#if MG_W_HALF
#define LOADW4(p, i) vload_half4(0, (p) + (i))
#else
#define LOADW4(p, i) vload4(0, (p) + (i))
#endif
__kernel void mg_matmul_direct(__global const float *x, int M, int K, __global const wtype *W,
                               int N, __global const float *bias, int has_bias,
                               __global float *y)
{
    const int n0 = get_global_id(0) * 4, m0 = get_global_id(1) * 4;
    if (n0 >= N || m0 >= M) return;
    size_t xr[4], wr[4];
    for (int a = 0; a < 4; a++) xr[a] = (size_t)min(m0 + a, M - 1) * K;
    for (int b = 0; b < 4; b++) wr[b] = (size_t)min(n0 + b, N - 1) * K;
    float4 acc[4][4];
    for (int a = 0; a < 4; a++)
        for (int b = 0; b < 4; b++) acc[a][b] = (float4)(0.0f);
    const int K4 = K & ~3;
    for (int k = 0; k < K4; k += 4) {
        float4 xv[4], wv[4];
        for (int a = 0; a < 4; a++) xv[a] = vload4(0, x + xr[a] + k);
        for (int b = 0; b < 4; b++) wv[b] = LOADW4(W, wr[b] + k);
        for (int a = 0; a < 4; a++)
            for (int b = 0; b < 4; b++) acc[a][b] = fma(xv[a], wv[b], acc[a][b]);
    }
    float s[4][4];
    for (int a = 0; a < 4; a++)
        for (int b = 0; b < 4; b++) {
            s[a][b] = (acc[a][b].x + acc[a][b].y) + (acc[a][b].z + acc[a][b].w);
            for (int k = K4; k < K; k++)
                s[a][b] = fma(x[xr[a] + k], LOADW(W, wr[b] + k), s[a][b]);
        }
    store_block(y, M, N, m0, n0, s, bias, has_bias);
}

/* mg_gemv_direct (M == 1): each work-item computes 4 outputs from 4 rows of W read along K as
 * float4, without local memory or barriers (the decode product for CPU-like devices). */
__kernel void mg_gemv_direct(__global const float *x, int K, __global const wtype *W, int N,
                             __global const float *bias, int has_bias, __global float *y)
{
    const int n0 = get_global_id(0) * 4;
    if (n0 >= N) return;
    size_t wr[4];
    for (int b = 0; b < 4; b++) wr[b] = (size_t)min(n0 + b, N - 1) * K;
    float4 acc[4];
    for (int b = 0; b < 4; b++) acc[b] = (float4)(0.0f);
    const int K4 = K & ~3;
    for (int k = 0; k < K4; k += 4) {
        const float4 xv = vload4(0, x + k);
        for (int b = 0; b < 4; b++) acc[b] = fma(xv, LOADW4(W, wr[b] + k), acc[b]);
    }
    for (int b = 0; b < 4; b++) {
        const int n = n0 + b;
        if (n >= N) break;
        float s = (acc[b].x + acc[b].y) + (acc[b].z + acc[b].w);
        for (int k = K4; k < K; k++) s = fma(x[k], LOADW(W, wr[b] + k), s);
        y[n] = s + (has_bias ? bias[n] : 0.0f);
    }
}

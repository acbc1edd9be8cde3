/* matmul-typed.cl - y[M,N] = x[M,K] W[N,K]^T (+ bias[N]) with W in its file type, read in its
 * own bytes and dequantized in registers (mg_gemv_typed, mg_matmul_typed_direct) or into a
 * local-memory tile of fp32 (mg_matmul_typed). The product is x times the dequantized W,
 * accumulated in fp32; x is not rounded. `wt` is the ggml type id, the layouts those of
 * simd/blocks.h (docs/quantization.md), rows row_bytes apart:
 *   f16  (1): w[k] = half h[k]
 *   q8_0 (8): blocks of 32 values in 34 bytes, half d then int8 q[32]: w[j] = d q[j]
 *   q4_0 (2): blocks of 32 values in 18 bytes, half d then uchar b[16]:
 *             w[j] = d ((b[j] & 15) - 8), w[j + 16] = d ((b[j] >> 4) - 8), j < 16
 * A block's half is only 2-byte aligned: it is read with vload_half (core OpenCL 1.2, no
 * cl_khr_fp16 needed), the quants as bytes. For q8_0 and q4_0, K is a multiple of 32 (the
 * host checks); f16 rows may have any K (the tail past the last 32 is read value by value).
 * The dequantized values equal lib/quant.c's bit for bit: d q and d (q - 8) are one rounding
 * of exact operands. The type ids (WT_...) are matmul.cl's. */

/* W[n, k], one value (WT_F32 too: the fp32 weights of mg_matmul's tiles). */
static float w_at(__global const uchar *W, int wt, int row_bytes, int n, int k)
{
    __global const uchar *row = W + (size_t)n * row_bytes;
    if (wt == WT_F32) return ((__global const float *)row)[k];
    if (wt == WT_F16) return vload_half(k, (__global const half *)row);
    __global const uchar *b = row + (size_t)(k / 32) * (wt == WT_Q8_0 ? 34 : 18);
    const float d = vload_half(0, (__global const half *)b);
    const int j = k % 32;
    if (wt == WT_Q8_0) return d * (float)((__global const char *)(b + 2))[j];
    const int q = b[2 + (j & 15)];
    return d * (float)((j < 16 ? q & 15 : q >> 4) - 8);
}

/* Values 32 i .. 32 i + 31 of a row of W: the first 16 into *lo, the next 16 into *hi. */
static void w_block(__global const uchar *row, int wt, int i, float16 *lo, float16 *hi)
{
    if (wt == WT_F16) {
        __global const half *h = (__global const half *)row + (size_t)32 * i;
        *lo = vload_half16(0, h);
        *hi = vload_half16(1, h);
    } else if (wt == WT_Q8_0) {
        __global const uchar *b = row + (size_t)34 * i;
        const float d = vload_half(0, (__global const half *)b);
        __global const char *q = (__global const char *)(b + 2);
        *lo = d * convert_float16(vload16(0, q));
        *hi = d * convert_float16(vload16(1, q));
    } else {
        __global const uchar *b = row + (size_t)18 * i;
        const float d = vload_half(0, (__global const half *)b);
        const uchar16 q = vload16(0, b + 2);
        *lo = d * (convert_float16(q & (uchar)15) - 8.0f);
        *hi = d * (convert_float16(q >> (uchar)4) - 8.0f);
    }
}

static float sum16(float16 v)
{
    const float8 a = v.lo + v.hi;
    const float4 b = a.lo + a.hi;
    return (b.x + b.y) + (b.z + b.w);
}

/* mg_gemv_typed (M small: decode): each work-item computes 4 outputs n0 .. n0 + 3 of row m
 * (global range (N/4, M)), a block of 32 of x against the 4 rows' blocks at a time (rows past
 * N are clamped and not stored). */
__kernel void mg_gemv_typed(__global const float *x, int M, int K, __global const uchar *W,
                            int wt, int row_bytes, int N, __global const float *bias,
                            int has_bias, __global float *y)
{
    const int n0 = get_global_id(0) * 4, m = get_global_id(1);
    if (n0 >= N || m >= M) return;
    __global const float *xr = x + (size_t)m * K;
    __global const uchar *wr[4];
    for (int b = 0; b < 4; b++) wr[b] = W + (size_t)min(n0 + b, N - 1) * row_bytes;
    float16 acc[4];
    for (int b = 0; b < 4; b++) acc[b] = (float16)(0.0f);
    const int nb = K / 32;
    for (int i = 0; i < nb; i++) {
        const float16 xl = vload16(0, xr + 32 * i), xh = vload16(1, xr + 32 * i);
        for (int b = 0; b < 4; b++) {
            float16 wl, wh;
            w_block(wr[b], wt, i, &wl, &wh);
            acc[b] = fma(xl, wl, fma(xh, wh, acc[b]));
        }
    }
    for (int b = 0; b < 4; b++) {
        const int n = n0 + b;
        if (n >= N) break;
        float s = sum16(acc[b]);
        for (int k = 32 * nb; k < K; k++) s = fma(xr[k], w_at(W, wt, row_bytes, n, k), s);
        y[(size_t)m * N + n] = s + (has_bias ? bias[n] : 0.0f);
    }
}

/* mg_matmul_typed_direct (prefill on CPU-like devices): each work-item computes a 4 x 4 block
 * of y, dequantizing each block of 32 of its 4 rows of W once for its 4 rows of x; no local
 * memory, no barriers (as mg_matmul_direct). */
__kernel void mg_matmul_typed_direct(__global const float *x, int M, int K,
                                     __global const uchar *W, int wt, int row_bytes, int N,
                                     __global const float *bias, int has_bias,
                                     __global float *y)
{
    const int n0 = get_global_id(0) * 4, m0 = get_global_id(1) * 4;
    if (n0 >= N || m0 >= M) return;
    __global const float *xr[4];
    __global const uchar *wr[4];
    for (int a = 0; a < 4; a++) xr[a] = x + (size_t)min(m0 + a, M - 1) * K;
    for (int b = 0; b < 4; b++) wr[b] = W + (size_t)min(n0 + b, N - 1) * row_bytes;
    float acc[4][4];
    for (int a = 0; a < 4; a++)
        for (int b = 0; b < 4; b++) acc[a][b] = 0.0f;
    const int nb = K / 32;
    for (int i = 0; i < nb; i++) {
        float16 xl[4], xh[4];
        for (int a = 0; a < 4; a++) {
            xl[a] = vload16(0, xr[a] + 32 * i);
            xh[a] = vload16(1, xr[a] + 32 * i);
        }
        for (int b = 0; b < 4; b++) {
            float16 wl, wh;
            w_block(wr[b], wt, i, &wl, &wh);
            for (int a = 0; a < 4; a++) acc[a][b] += sum16(fma(xl[a], wl, xh[a] * wh));
        }
    }
    for (int a = 0; a < 4; a++)
        for (int b = 0; b < 4; b++)
            for (int k = 32 * nb; k < K; k++)
                acc[a][b] = fma(xr[a][k], w_at(W, wt, row_bytes, min(n0 + b, N - 1), k),
                                acc[a][b]);
    store_block(y, M, N, m0, n0, acc, bias, has_bias);
}

/* mg_matmul_typed (prefill on GPUs): matmul.cl's tiles of y, the K-slice of W expanded to
 * fp32 in local memory as it is staged. */
__kernel __attribute__((reqd_work_group_size(8, 8, 1)))
void mg_matmul_typed(__global const float *x, int M, int K, __global const uchar *W, int wt,
                     int row_bytes, int N, __global const float *bias, int has_bias,
                     __global float *y)
{
    __local float xs[MM_T][MM_K + 1];
    __local float ws[MM_T][MM_K + 1];
    mm_tile(x, M, K, W, wt, row_bytes, N, bias, has_bias, y, xs, ws);
}

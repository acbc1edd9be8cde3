/* cema.cl - CEMA as a chunked parallel scan (lib/backend.h: cema).
 *
 *   h_t = q h_{t-1} + p x_t   (complex, per channel d and component n)
 *   y_t = Re(sum_n eta_n h_{t,n}) + omega x_t
 *
 * Time is cut into blocks of B steps. Pass A (mg_cema_block_end, one work-item per block,
 * channel and component) runs each block from a zero state and keeps its end state E_b
 * (blocks from row t_first: 0 here, the last rows of a call for the FFT path of fft.cl).
 * Pass B (mg_cema_carry, one work-item per channel and component) walks the blocks in order:
 * S_0 = h_{-1}, S_{b+1} = q^B S_b + E_b. Pass C (mg_cema_block_out, one work-item per block
 * and channel) reruns each block from S_b, summing Re(eta h) over the components in the
 * order of the reference, and the last block writes the new state. With one block only
 * pass C runs (decode). */

static float2 cmul(float2 a, float2 b) { return (float2)(a.x * b.x - a.y * b.y, a.x * b.y + a.y * b.x); }

/* Work-item g = b D + d of a pass over blocks of B rows (of L) and channels: its channel d,
 * block b and the block's rows [t0, t1); 0 when g is past the last block. */
static int row_block(size_t g, int L, int D, int B, int *d, int *b, int *t0, int *t1)
{
    if (g >= (size_t)((L + B - 1) / B) * D) return 0;
    *d = (int)(g % D);
    *b = (int)(g / D);
    *t0 = *b * B;
    *t1 = min(L, *t0 + B);
    return 1;
}

__kernel void mg_cema_block_end(__global const float *x, int L, int D, int N, int B,
                                int t_first, __global const float *p,
                                __global const float2 *q, __global float2 *E)
{
    /* blocks of B rows from t_first (0 for the scan; fft.cl needs only the last rows) */
    const size_t g = get_global_id(0); /* (b * D + d) * N + n */
    const int nb = (L - t_first + B - 1) / B;
    if (g >= (size_t)nb * D * N) return;
    const int n = (int)(g % N), d = (int)((g / N) % D), b = (int)(g / ((size_t)N * D));
    const int t0 = t_first + b * B, t1 = min(L, t0 + B);
    const float2 qq = q[(size_t)d * N + n];
    const float pp = p[(size_t)d * N + n];
    float2 h = (float2)(0.0f, 0.0f);
    for (int t = t0; t < t1; t++) {
        float xt = x[(size_t)t * D + d];
        h = (float2)(qq.x * h.x - qq.y * h.y + pp * xt, qq.x * h.y + qq.y * h.x);
    }
    E[g] = h;
}

__kernel void mg_cema_carry(int L, int D, int N, int B, __global const float2 *q,
                            __global const float2 *h0, __global const float2 *E,
                            __global float2 *S)
{
    const size_t g = get_global_id(0); /* d * N + n */
    if (g >= (size_t)D * N) return;
    const int nb = (L + B - 1) / B;
    const float2 qq = q[g];
    float2 qB = (float2)(1.0f, 0.0f), base = qq; /* q^B by repeated squaring */
    for (int e = B; e > 0; e >>= 1) {
        if (e & 1) qB = cmul(qB, base);
        base = cmul(base, base);
    }
    float2 s = h0[g];
    for (int b = 0; b < nb; b++) {
        S[(size_t)b * D * N + g] = s;
        if (b + 1 < nb) s = cmul(qB, s) + E[(size_t)b * D * N + g];
    }
}

/* S: the state entering each block (nb x D x N complex); h_out: the state after step L-1. */
__kernel void mg_cema_block_out(__global const float *x, int L, int D, int N, int B,
                                __global const float *p, __global const float2 *q,
                                __global const float2 *eta, __global const float *omega,
                                __global const float2 *S, __global float *y,
                                __global float2 *h_out)
{
    int d, b, t0, t1;
    if (!row_block(get_global_id(0), L, D, B, &d, &b, &t0, &t1)) return;
    const float om = omega[d];
    for (int t = t0; t < t1; t++) y[(size_t)t * D + d] = om * x[(size_t)t * D + d];
    for (int n = 0; n < N; n++) {
        const size_t dn = (size_t)d * N + n;
        const float2 qq = q[dn], ee = eta[dn];
        const float pp = p[dn];
        float2 h = S[(size_t)b * D * N + dn];
        for (int t = t0; t < t1; t++) {
            float xt = x[(size_t)t * D + d];
            h = (float2)(qq.x * h.x - qq.y * h.y + pp * xt, qq.x * h.y + qq.y * h.x);
            y[(size_t)t * D + d] += ee.x * h.x - ee.y * h.y;
        }
        if (t1 == L) h_out[dn] = h; /* the last block */
    }
}

/* quant-scalar.c - the quantized kernels of the scalar table: plain C, the definition of what
 * every table's quantized kernels compute (kernels.h states the math, blocks.h the layouts).
 *
 * Dot products of quantized rows: the integer products of a block are summed exactly in
 * int32, scaled by the block's scales in float, and the blocks accumulated in float in order.
 * Activations are rounded to nearest, ties to even (rintf in the default rounding mode). */
#include "config.h"

#include "kernels.h"
#include "quant-half.h"
#define MG_QUANT(f) mg_scalar_##f
#include "quant-kernels.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

/* rint(v) as an int8, at most 127 (v is never below -127.5 here) */
static int8_t round_i8(float v)
{
    const float r = rintf(v);
    if (r != r) return 0; /* NaN (an activation gone non-finite): converting it is undefined */
    return (int8_t)(r > 127.0f ? 127 : r < -128.0f ? -128 : (int)r);
}

/* q8_0: d = max|x| / 127, q = rint(x / d) computed as rint(x * (1 / d)) */
void mg_scalar_quantize_q8_0(const float *x, void *vy, int n)
{
    uint8_t *y = vy;
    for (int b = 0; b < n / MG_QK8_0; b++, x += MG_QK8_0, y += MG_Q8_0_SIZE) {
        float amax = 0.0f;
        for (int j = 0; j < MG_QK8_0; j++) amax = fmaxf(amax, fabsf(x[j]));
        const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        const uint16_t dh = mg_f32_to_half(d);
        memcpy(y, &dh, 2);
        int8_t *qs = (int8_t *)(y + offsetof(mg_block_q8_0, qs));
        for (int j = 0; j < MG_QK8_0; j++) qs[j] = round_i8(x[j] * id);
    }
}

/* q8_K: max = the first value of largest magnitude, iscale = -127 / max, q = rint(iscale x)
 * (at most 127), d = 1 / iscale, bsums the sums of 16 q; an all-zero block gives zeros. */
void mg_scalar_quantize_q8_K(const float *x, void *vy, int n)
{
    uint8_t *y = vy;
    for (int b = 0; b < n / MG_QK_K; b++, x += MG_QK_K, y += MG_Q8_K_SIZE) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < MG_QK_K; j++)
            if (fabsf(x[j]) > amax) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        int8_t *qs = (int8_t *)(y + offsetof(mg_block_q8_K, qs));
        float d = 0.0f;
        if (amax == 0.0f) {
            memset(qs, 0, MG_QK_K);
        } else {
            const float iscale = -127.0f / max;
            for (int j = 0; j < MG_QK_K; j++) qs[j] = round_i8(iscale * x[j]);
            d = 1.0f / iscale;
        }
        mg_q8_K_finish(y, d);
    }
}

/* sum_i w[i] x[i], w fp16 / bf16, accumulated in float in order */
float mg_scalar_dot_f16(const uint16_t *w, const float *x, int n)
{
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += mg_half_to_f32(w[i]) * x[i];
    return s;
}

float mg_scalar_dot_bf16(const uint16_t *w, const float *x, int n)
{
    float s = 0.0f;
    for (int i = 0; i < n; i++) {
        const uint32_t bits = (uint32_t)w[i] << 16;
        float wf;
        memcpy(&wf, &bits, 4);
        s += wf * x[i];
    }
    return s;
}

/* two rows: two dot products */
void mg_scalar_dot2_f16(const uint16_t *w0, const uint16_t *w1, const float *x, int n, float out[2])
{
    out[0] = mg_scalar_dot_f16(w0, x, n);
    out[1] = mg_scalar_dot_f16(w1, x, n);
}

void mg_scalar_dot2_bf16(const uint16_t *w0, const uint16_t *w1, const float *x, int n, float out[2])
{
    out[0] = mg_scalar_dot_bf16(w0, x, n);
    out[1] = mg_scalar_dot_bf16(w1, x, n);
}

/* The exact integer sum of one 32-value block's products: sum_j qw[j] qx[j] for q8_0 weights,
 * sum_j (q[j] - 8) qx[j] for q4_0 weights (low nibbles are values 0-15, high 16-31). */
static int32_t isum_q8_0(const uint8_t *qw, const int8_t *qx)
{
    int32_t isum = 0;
    for (int j = 0; j < MG_QK8_0; j++) isum += (int8_t)qw[j] * qx[j];
    return isum;
}

static int32_t isum_q4_0(const uint8_t *qw, const int8_t *qx)
{
    int32_t isum = 0;
    for (int j = 0; j < MG_QK4_0 / 2; j++)
        isum += ((qw[j] & 15) - 8) * qx[j] + ((qw[j] >> 4) - 8) * qx[j + 16];
    return isum;
}

/* sum over blocks of (dw dx) isum(block), for weight blocks of `wsize` bytes (a half scale,
 * then the values) against q8_0 activation blocks */
static float dot_32(const uint8_t *w, size_t wsize, const uint8_t *x, int n,
                    int32_t (*isum)(const uint8_t *qw, const int8_t *qx))
{
    float s = 0.0f;
    for (int b = 0; b < n / MG_QK8_0; b++, w += wsize, x += MG_Q8_0_SIZE)
        s += (mg_ld_half(w) * mg_ld_half(x)) * (float)isum(w + 2, (const int8_t *)(x + 2));
    return s;
}

float mg_scalar_dot_q8_0(const void *w, const void *x, int n)
{
    return dot_32(w, MG_Q8_0_SIZE, x, n, isum_q8_0);
}

float mg_scalar_dot_q4_0(const void *w, const void *x, int n)
{
    return dot_32(w, MG_Q4_0_SIZE, x, n, isum_q4_0);
}

/* Per super-block: (dx d) sum_s sc[s] sum_{j in s} q[j] qx[j]
 *                - (dx dmin) sum_s m[s] (bsums[2s] + bsums[2s + 1]) */
float mg_scalar_dot_q4_K(const void *vw, const void *vx, int n)
{
    const uint8_t *w = vw, *x = vx;
    float s = 0.0f;
    for (int b = 0; b < n / MG_QK_K; b++, w += MG_Q4_K_SIZE, x += MG_Q8_K_SIZE) {
        const uint8_t *scales = w + offsetof(mg_block_q4_K, scales);
        const uint8_t *qw = w + offsetof(mg_block_q4_K, qs);
        const int8_t *qx = (const int8_t *)(x + offsetof(mg_block_q8_K, qs));
        int16_t bsums[MG_QK_K / 16];
        float dx;
        memcpy(&dx, x, 4);
        memcpy(bsums, x + offsetof(mg_block_q8_K, bsums), sizeof bsums);
        int32_t isum = 0, msum = 0;
        for (int s2 = 0; s2 < 8; s2 += 2, qw += 32, qx += 64) {
            int sc0, m0, sc1, m1, lo = 0, hi = 0;
            mg_q4_K_scale_min(scales, s2, &sc0, &m0);
            mg_q4_K_scale_min(scales, s2 + 1, &sc1, &m1);
            for (int j = 0; j < 32; j++) {
                lo += (qw[j] & 15) * qx[j];
                hi += (qw[j] >> 4) * qx[j + 32];
            }
            isum += sc0 * lo + sc1 * hi;
            msum += m0 * (bsums[2 * s2] + bsums[2 * s2 + 1]) +
                    m1 * (bsums[2 * s2 + 2] + bsums[2 * s2 + 3]);
        }
        s += (dx * mg_ld_half(w)) * (float)isum - (dx * mg_ld_half(w + 2)) * (float)msum;
    }
    return s;
}

/* the 6-bit value j (0..255) of a q6_K block, minus 32 */
static int q6_value(const uint8_t *ql, const uint8_t *qh, int j)
{
    const int h = j / 128, l = j % 32, g = (j % 128) / 32; /* half, lane, group of 32 */
    const uint8_t lo = ql[64 * h + l + 32 * (g & 1)];
    const int low4 = g < 2 ? lo & 15 : lo >> 4;
    return (low4 | (((qh[32 * h + l] >> (2 * g)) & 3) << 4)) - 32;
}

/* Per super-block: (dx d) sum_s scales[s] sum_{j in s} (q[j] - 32) qx[j], s of 16 values */
float mg_scalar_dot_q6_K(const void *vw, const void *vx, int n)
{
    const uint8_t *w = vw, *x = vx;
    float s = 0.0f;
    for (int b = 0; b < n / MG_QK_K; b++, w += MG_Q6_K_SIZE, x += MG_Q8_K_SIZE) {
        const uint8_t *ql = w + offsetof(mg_block_q6_K, ql), *qh = w + offsetof(mg_block_q6_K, qh);
        const int8_t *sc = (const int8_t *)(w + offsetof(mg_block_q6_K, scales));
        const int8_t *qx = (const int8_t *)(x + offsetof(mg_block_q8_K, qs));
        float dx;
        memcpy(&dx, x, 4);
        int32_t isum = 0;
        for (int sb = 0; sb < 16; sb++) {
            int32_t p = 0;
            for (int j = 16 * sb; j < 16 * sb + 16; j++) p += q6_value(ql, qh, j) * qx[j];
            isum += sc[sb] * p;
        }
        s += (dx * mg_ld_half(w + offsetof(mg_block_q6_K, d))) * (float)isum;
    }
    return s;
}

/* ---- whole blocks to fp32 (n a multiple of the block size) */

/* y = d q */
void mg_scalar_dequant_q8_0(const void *vw, float *y, int64_t n)
{
    const uint8_t *w = vw;
    for (int64_t b = 0; b < n / MG_QK8_0; b++, w += MG_Q8_0_SIZE, y += MG_QK8_0) {
        const float d = mg_ld_half(w);
        for (int j = 0; j < MG_QK8_0; j++) y[j] = d * (float)(int8_t)w[2 + j];
    }
}

/* y[j] = d ((q[j] & 15) - 8), y[j + 16] = d ((q[j] >> 4) - 8) */
void mg_scalar_dequant_q4_0(const void *vw, float *y, int64_t n)
{
    const uint8_t *w = vw;
    for (int64_t b = 0; b < n / MG_QK4_0; b++, w += MG_Q4_0_SIZE, y += MG_QK4_0) {
        const float d = mg_ld_half(w);
        for (int j = 0; j < 16; j++) {
            y[j] = d * (float)((w[2 + j] & 15) - 8);
            y[j + 16] = d * (float)((w[2 + j] >> 4) - 8);
        }
    }
}

/* y = (d sc) q - (dmin m), both products in float (ggml's dequantize_row_q4_K) */
void mg_scalar_dequant_q4_K(const void *vw, float *y, int64_t n)
{
    const uint8_t *w = vw;
    for (int64_t b = 0; b < n / MG_QK_K; b++, w += MG_Q4_K_SIZE) {
        const float d = mg_ld_half(w), dmin = mg_ld_half(w + 2);
        const uint8_t *scales = w + offsetof(mg_block_q4_K, scales);
        const uint8_t *q = w + offsetof(mg_block_q4_K, qs);
        for (int s2 = 0; s2 < 8; s2 += 2, q += 32) {
            int sc0, m0, sc1, m1;
            mg_q4_K_scale_min(scales, s2, &sc0, &m0);
            mg_q4_K_scale_min(scales, s2 + 1, &sc1, &m1);
            const float d0 = d * (float)sc0, n0 = dmin * (float)m0;
            const float d1 = d * (float)sc1, n1 = dmin * (float)m1;
            for (int j = 0; j < 32; j++) y[j] = d0 * (float)(q[j] & 15) - n0;
            for (int j = 0; j < 32; j++) y[32 + j] = d1 * (float)(q[j] >> 4) - n1;
            y += 64;
        }
    }
}

/* y = (d scales[s]) (q - 32) */
void mg_scalar_dequant_q6_K(const void *vw, float *y, int64_t n)
{
    const uint8_t *w = vw;
    for (int64_t b = 0; b < n / MG_QK_K; b++, w += MG_Q6_K_SIZE, y += MG_QK_K) {
        const uint8_t *ql = w + offsetof(mg_block_q6_K, ql), *qh = w + offsetof(mg_block_q6_K, qh);
        const int8_t *sc = (const int8_t *)(w + offsetof(mg_block_q6_K, scales));
        const float d = mg_ld_half(w + offsetof(mg_block_q6_K, d));
        for (int j = 0; j < MG_QK_K; j++) y[j] = (d * (float)sc[j / 16]) * (float)q6_value(ql, qh, j);
    }
}

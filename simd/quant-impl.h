/* quant-impl.h - the quantized kernels of the SIMD tables (activation rounding, dot products
 * of a weight row with an activation row, dequantization), written once for every ISA.
 * quant-scalar.c is the definition and kernels.h states the math; blocks.h the layouts.
 *
 * The integer dot products work on 32 values at a time (one q8_0 / q4_0 block, one q4_K
 * sub-block, two q6_K sub-blocks): the products of a block are summed exactly in int32 lanes
 * (with the sub-block scales of the k-quants applied in int32 too), converted to float and
 * multiplied by the block's scale into a float accumulator. They differ from the scalar
 * reference only in the order of the float additions. Activation rounding and dequantization
 * do the reference's float operations (no fused multiply-add) and give its bits.
 *
 * An ISA file defines MG_QUANT(f), the names of its table's kernels (quant-kernels.h, e.g.
 * mg_avx2_##f), which this file defines at its end, and includes quant-half.h and this after
 * defining, with its own intrinsics:
 * 32 values at a time:
 *   typedef ... vq;                         32 bytes (signed or unsigned as the op says)
 *   vq vq_load(const uint8_t *p);           32 bytes from any address
 *   void vq_store(int8_t *p, vq a);
 *   vq vq_load_q4_0(const uint8_t *p);      16 bytes: low nibbles, then high nibbles (0..15)
 *   vq vq_and(vq a, int m); vq vq_or(vq a, vq b); vq vq_sub(vq a, int c)   per byte
 *   vq vq_srl(vq a, int k)                  per byte, logical shift right (0 < k < 8)
 *   vq vq_sll(vq a, int k)                  per byte, shift left, for a[j] < 2^(8-k) only
 *   typedef ... vi;  vi vi_zero(void);      int32 lanes of partial sums
 *   vi vi_first(int32_t c)                  c in the first lane, zeros in the others
 *   vi vi_dot(vi acc, vq a, vq b)           acc + lanes whose sum is sum_j a[j] b[j]
 *     (a, b signed; b[j] != -128, which the activation quantizers guarantee)
 *   vi vi_dot_u_sc(vi acc, vq a, vq b, int s0, int s1)
 *                                           acc + lanes whose sum is s0 sum_{j<16} a[j] b[j]
 *                                           + s1 sum_{j>=16} a[j] b[j]
 *     (a unsigned, at most 63; b signed, |b[j]| <= 127; s0, s1 in [-128, 127])
 *   typedef ... vs;  vs vs_zero(void);      floats, one per lane of vi
 *   vs vs_fmadd_vi(vs acc, vi p, float d)   acc + float(p) d per lane
 *   float vs_hsum(vs a)
 *   float half_to_f32(uint16_t h)           one half (the hardware conversion, exact)
 *   MG_QUANT_FEW_REGS (optional)            defined where the ISA has only 16 vector registers
 * VF floats at a time:
 *   VF; typedef ... vf;  vf vf_zero(void), vf_set1(float a)
 *   vf vf_load(const float *p); void vf_store(float *p, vf a)
 *   vf vf_add(vf a, vf b), vf_mul, vf_sub, vf_max; vf vf_abs(vf a)
 *   vf vf_fmadd(vf a, vf b, vf c)           a b + c
 *   float vf_hsum(vf a), vf_hmax(vf a)
 *   vf vf_load_f16(const uint16_t *p), vf_load_bf16(const uint16_t *p)
 *   vf vf_load_i8(const int8_t *p)          VF int8 to float
 *   void vf_store_i8(int8_t *p, vf a)       rint (ties to even), saturated to [-128, 127] */
#ifndef MG_QUANT_IMPL_H
#define MG_QUANT_IMPL_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* one half read from any address */
static inline float ld_h(const uint8_t *p)
{
    uint16_t h;
    memcpy(&h, p, 2);
    return half_to_f32(h);
}

/* ------------------------------------------------------------------ activation rounding */

static float absmax(const float *x, int n)
{
    vf m = vf_zero();
    for (int i = 0; i < n; i += VF) m = vf_max(m, vf_abs(vf_load(x + i)));
    return vf_hmax(m);
}

/* q8_0: d = max|x| / 127, q = rint(x (1 / d)) (quant-scalar.c) */
static void quantize_q8_0(const float *x, void *vy, int n)
{
    uint8_t *y = vy;
    for (int b = 0; b < n / MG_QK8_0; b++, x += MG_QK8_0, y += MG_Q8_0_SIZE) {
        const float d = absmax(x, MG_QK8_0) / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        const uint16_t dh = mg_f32_to_half(d);
        memcpy(y, &dh, 2);
        const vf vid = vf_set1(id);
        int8_t *qs = (int8_t *)(y + offsetof(mg_block_q8_0, qs));
        for (int j = 0; j < MG_QK8_0; j += VF) vf_store_i8(qs + j, vf_mul(vf_load(x + j), vid));
    }
}

/* q8_K: iscale = -127 / (the first value of largest magnitude), q = rint(iscale x),
 * d = 1 / iscale, bsums (quant-scalar.c) */
static void quantize_q8_K(const float *x, void *vy, int n)
{
    uint8_t *y = vy;
    for (int b = 0; b < n / MG_QK_K; b++, x += MG_QK_K, y += MG_Q8_K_SIZE) {
        const float amax = absmax(x, MG_QK_K);
        int8_t *qs = (int8_t *)(y + offsetof(mg_block_q8_K, qs));
        float d = 0.0f;
        if (amax == 0.0f) {
            memset(qs, 0, MG_QK_K);
        } else {
            int j = 0; /* bounded: with a NaN in x, amax may be NaN and match nothing */
            while (j < MG_QK_K - 1 && fabsf(x[j]) != amax) j++;
            const float iscale = -127.0f / x[j];
            const vf vis = vf_set1(iscale);
            for (int i = 0; i < MG_QK_K; i += VF) vf_store_i8(qs + i, vf_mul(vis, vf_load(x + i)));
            d = 1.0f / iscale;
        }
        mg_q8_K_finish(y, d);
    }
}

/* ------------------------------------------------------------------ dot products */

/* VF weights, fp16 (bf == 0) or bf16 (bf == 1), as floats */
static inline vf load_16(const uint16_t *w, int bf) { return bf ? vf_load_bf16(w) : vf_load_f16(w); }

/* the sum of eight accumulators of a dot product, then its tail from i on */
static inline float finish_16(vf a[8], const uint16_t *w, const float *x, int i, int n, int bf)
{
    for (int j = 0; j < 4; j++) a[j] = vf_add(a[j], a[j + 4]);
    float s = vf_hsum(vf_add(vf_add(a[0], a[1]), vf_add(a[2], a[3])));
    for (; i < n; i++) {
        const uint32_t bits = (uint32_t)w[i] << 16;
        float wf;
        memcpy(&wf, &bits, 4);
        s += (bf ? wf : half_to_f32(w[i])) * x[i];
    }
    return s;
}

/* sum_i w[i] x[i] with fp16 / bf16 weights: eight accumulators of VF lanes (enough
 * independent multiply-adds to hide their latency behind the conversions), then the tail */
static inline float dot_16(const uint16_t *w, const float *x, int n, int bf)
{
    vf a[8];
    for (int j = 0; j < 8; j++) a[j] = vf_zero();
    int i = 0;
    for (; i + 8 * VF <= n; i += 8 * VF)
        for (int j = 0; j < 8; j++) a[j] = vf_fmadd(load_16(w + i + j * VF, bf), vf_load(x + i + j * VF), a[j]);
    for (; i + VF <= n; i += VF) a[0] = vf_fmadd(load_16(w + i, bf), vf_load(x + i), a[0]);
    return finish_16(a, w, x, i, n, bf);
}

/* dot_16 of two rows in one pass over x: each row's accumulators take the same products in
 * the same order as dot_16's, so each result has its bits. An ISA with 16 vector registers
 * (MG_QUANT_FEW_REGS: AVX2) cannot hold the sixteen accumulators and spills them, which was
 * slower than two passes (f16 decode 42.5-43.9 against 43.8-45.7 t/s): it takes two passes. */
static inline void dot2_16(const uint16_t *w0, const uint16_t *w1, const float *x, int n, int bf,
                           float out[2])
{
#if defined(MG_QUANT_FEW_REGS)
    out[0] = dot_16(w0, x, n, bf);
    out[1] = dot_16(w1, x, n, bf);
#else
    vf a[8], b[8];
    for (int j = 0; j < 8; j++) a[j] = b[j] = vf_zero();
    int i = 0;
    for (; i + 8 * VF <= n; i += 8 * VF)
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC unroll 8 /* the accumulators stay in registers only if the loop is unrolled */
#endif
        for (int j = 0; j < 8; j++) {
            const vf xv = vf_load(x + i + j * VF);
            a[j] = vf_fmadd(load_16(w0 + i + j * VF, bf), xv, a[j]);
            b[j] = vf_fmadd(load_16(w1 + i + j * VF, bf), xv, b[j]);
        }
    for (; i + VF <= n; i += VF) {
        const vf xv = vf_load(x + i);
        a[0] = vf_fmadd(load_16(w0 + i, bf), xv, a[0]);
        b[0] = vf_fmadd(load_16(w1 + i, bf), xv, b[0]);
    }
    out[0] = finish_16(a, w0, x, i, n, bf);
    out[1] = finish_16(b, w1, x, i, n, bf);
#endif
}

static float dot_f16(const uint16_t *w, const float *x, int n) { return dot_16(w, x, n, 0); }
static float dot_bf16(const uint16_t *w, const float *x, int n) { return dot_16(w, x, n, 1); }

/* sum over blocks of (dw dx) sum_j qw[j] qx[j]; two blocks per step, two accumulators */
static float dot_q8_0(const void *vw, const void *vx, int n)
{
    const uint8_t *w = vw, *x = vx;
    const int nb = n / MG_QK8_0, sz = MG_Q8_0_SIZE;
    vs acc0 = vs_zero(), acc1 = vs_zero();
    int b = 0;
    for (; b + 2 <= nb; b += 2, w += 2 * sz, x += 2 * sz) {
        const vi p0 = vi_dot(vi_zero(), vq_load(w + 2), vq_load(x + 2));
        const vi p1 = vi_dot(vi_zero(), vq_load(w + sz + 2), vq_load(x + sz + 2));
        acc0 = vs_fmadd_vi(acc0, p0, ld_h(w) * ld_h(x));
        acc1 = vs_fmadd_vi(acc1, p1, ld_h(w + sz) * ld_h(x + sz));
    }
    if (b < nb) {
        const vi p0 = vi_dot(vi_zero(), vq_load(w + 2), vq_load(x + 2));
        acc0 = vs_fmadd_vi(acc0, p0, ld_h(w) * ld_h(x));
    }
    return vs_hsum(acc0) + vs_hsum(acc1);
}

/* sum over blocks of (dw dx) sum_j (q[j] - 8) qx[j] */
static float dot_q4_0(const void *vw, const void *vx, int n)
{
    const uint8_t *w = vw, *x = vx;
    const int nb = n / MG_QK4_0, sw = MG_Q4_0_SIZE, sx = MG_Q8_0_SIZE;
    vs acc0 = vs_zero(), acc1 = vs_zero();
    int b = 0;
    for (; b + 2 <= nb; b += 2, w += 2 * sw, x += 2 * sx) {
        const vi p0 = vi_dot(vi_zero(), vq_sub(vq_load_q4_0(w + 2), 8), vq_load(x + 2));
        const vi p1 = vi_dot(vi_zero(), vq_sub(vq_load_q4_0(w + sw + 2), 8), vq_load(x + sx + 2));
        acc0 = vs_fmadd_vi(acc0, p0, ld_h(w) * ld_h(x));
        acc1 = vs_fmadd_vi(acc1, p1, ld_h(w + sw) * ld_h(x + sx));
    }
    if (b < nb) {
        const vi p0 = vi_dot(vi_zero(), vq_sub(vq_load_q4_0(w + 2), 8), vq_load(x + 2));
        acc0 = vs_fmadd_vi(acc0, p0, ld_h(w) * ld_h(x));
    }
    return vs_hsum(acc0) + vs_hsum(acc1);
}

/* Per super-block: (dx d) sum_s sc[s] sum_{j in s} q[j] qx[j] (int32 lanes, one float
 * multiply-add) - (dx dmin) sum_s m[s] (bsums[2s] + bsums[2s + 1]) (scalar int32). The
 * nibbles are unsigned, so they multiply the activations as they are. */
static float dot_q4_K(const void *vw, const void *vx, int n)
{
    const uint8_t *w = vw, *x = vx;
    vs acc = vs_zero();
    float mins = 0.0f;
    for (int b = 0; b < n / MG_QK_K; b++, w += MG_Q4_K_SIZE, x += MG_Q8_K_SIZE) {
        const uint8_t *scales = w + offsetof(mg_block_q4_K, scales);
        const uint8_t *qw = w + offsetof(mg_block_q4_K, qs);
        const uint8_t *qx = x + offsetof(mg_block_q8_K, qs);
        int16_t bsums[MG_QK_K / 16];
        int sc[8], m[8];
        float dx;
        memcpy(&dx, x, 4);
        memcpy(bsums, x + offsetof(mg_block_q8_K, bsums), sizeof bsums);
        int32_t msum = 0;
        for (int s = 0; s < 8; s++) {
            mg_q4_K_scale_min(scales, s, &sc[s], &m[s]);
            msum += m[s] * (bsums[2 * s] + bsums[2 * s + 1]);
        }
        vi isum = vi_zero();
        for (int s = 0; s < 8; s += 2, qw += 32, qx += 64) {
            const vq q = vq_load(qw);
            isum = vi_dot_u_sc(isum, vq_and(q, 15), vq_load(qx), sc[s], sc[s]);
            isum = vi_dot_u_sc(isum, vq_srl(q, 4), vq_load(qx + 32), sc[s + 1], sc[s + 1]);
        }
        acc = vs_fmadd_vi(acc, isum, dx * ld_h(w));
        mins += (dx * ld_h(w + 2)) * (float)msum;
    }
    return vs_hsum(acc) - mins;
}

/* The values of one half (128 values) of a q6_K block, unsigned (0..63, the stored values
 * before the offset 32 is taken off), as four groups of 32: value l of group g has its low 4
 * bits in ql[l + 32 (g & 1)] (low nibble for g < 2, high for g >= 2) and its high 2 bits in
 * bits 2g, 2g + 1 of qh[l], which move to bits 4 and 5. */
static inline void q6_unpack(const uint8_t *ql, const uint8_t *qh, vq q[4])
{
    const vq l0 = vq_load(ql), l1 = vq_load(ql + 32), h = vq_load(qh);
    q[0] = vq_or(vq_and(l0, 15), vq_sll(vq_and(h, 3), 4));
    q[1] = vq_or(vq_and(l1, 15), vq_sll(vq_and(h, 12), 2));
    q[2] = vq_or(vq_srl(l0, 4), vq_and(h, 48));
    q[3] = vq_or(vq_srl(l1, 4), vq_and(vq_srl(h, 2), 48));
}

/* Per super-block: (dx d) sum_s scales[s] sum_{j in s} (q[j] - 32) qx[j], s of 16 values,
 * summed as sum_s scales[s] (sum_{j in s} q[j] qx[j] - 32 bsums[s]): the bsums of q8_K are
 * the sums over the same 16 values, so the unsigned q multiply the activations directly. */
static float dot_q6_K(const void *vw, const void *vx, int n)
{
    const uint8_t *w = vw, *x = vx;
    vs acc = vs_zero();
    for (int b = 0; b < n / MG_QK_K; b++, w += MG_Q6_K_SIZE, x += MG_Q8_K_SIZE) {
        const int8_t *sc = (const int8_t *)(w + offsetof(mg_block_q6_K, scales));
        const uint8_t *qx = x + offsetof(mg_block_q8_K, qs);
        int16_t bsums[MG_QK_K / 16];
        float dx;
        memcpy(&dx, x, 4);
        memcpy(bsums, x + offsetof(mg_block_q8_K, bsums), sizeof bsums);
        int32_t off = 0;
        for (int s = 0; s < MG_QK_K / 16; s++) off += sc[s] * bsums[s];
        vi isum = vi_first(-32 * off);
        for (int h = 0; h < 2; h++) {
            vq q[4];
            q6_unpack(w + offsetof(mg_block_q6_K, ql) + 64 * h, w + offsetof(mg_block_q6_K, qh) + 32 * h, q);
            for (int g = 0; g < 4; g++)
                isum = vi_dot_u_sc(isum, q[g], vq_load(qx + 128 * h + 32 * g), sc[8 * h + 2 * g],
                                   sc[8 * h + 2 * g + 1]);
        }
        acc = vs_fmadd_vi(acc, isum, dx * ld_h(w + offsetof(mg_block_q6_K, d)));
    }
    return vs_hsum(acc);
}

/* ------------------------------------------------------------------ dequantization */

/* y[j] = d q[j] - m for 32 int8 values (q4_K) */
static inline void dequant32(const int8_t *q, float d, float m, float *y)
{
    const vf vd = vf_set1(d), vm = vf_set1(m);
    for (int j = 0; j < 32; j += VF) vf_store(y + j, vf_sub(vf_mul(vd, vf_load_i8(q + j)), vm));
}

/* y[j] = d q[j] for cnt (16 or 32) int8 values (q8_0, q4_0, q6_K) */
static inline void scale_i8(const int8_t *q, float d, float *y, int cnt)
{
    const vf vd = vf_set1(d);
    for (int j = 0; j < cnt; j += VF) vf_store(y + j, vf_mul(vd, vf_load_i8(q + j)));
}

static void dequant_q8_0(const void *vw, float *y, int64_t n)
{
    const uint8_t *w = vw;
    for (int64_t b = 0; b < n / MG_QK8_0; b++, w += MG_Q8_0_SIZE, y += MG_QK8_0)
        scale_i8((const int8_t *)(w + 2), ld_h(w), y, 32);
}

static void dequant_q4_0(const void *vw, float *y, int64_t n)
{
    const uint8_t *w = vw;
    int8_t q[32];
    for (int64_t b = 0; b < n / MG_QK4_0; b++, w += MG_Q4_0_SIZE, y += MG_QK4_0) {
        vq_store(q, vq_sub(vq_load_q4_0(w + 2), 8));
        scale_i8(q, ld_h(w), y, 32);
    }
}

static void dequant_q4_K(const void *vw, float *y, int64_t n)
{
    const uint8_t *w = vw;
    int8_t q[32];
    for (int64_t b = 0; b < n / MG_QK_K; b++, w += MG_Q4_K_SIZE) {
        const float d = ld_h(w), dmin = ld_h(w + 2);
        const uint8_t *scales = w + offsetof(mg_block_q4_K, scales);
        const uint8_t *qw = w + offsetof(mg_block_q4_K, qs);
        for (int s = 0; s < 8; s += 2, qw += 32, y += 64) {
            int sc0, m0, sc1, m1;
            mg_q4_K_scale_min(scales, s, &sc0, &m0);
            mg_q4_K_scale_min(scales, s + 1, &sc1, &m1);
            const vq v = vq_load(qw);
            vq_store(q, vq_and(v, 15));
            dequant32(q, d * (float)sc0, dmin * (float)m0, y);
            vq_store(q, vq_srl(v, 4));
            dequant32(q, d * (float)sc1, dmin * (float)m1, y + 32);
        }
    }
}

static void dequant_q6_K(const void *vw, float *y, int64_t n)
{
    const uint8_t *w = vw;
    int8_t q[32];
    for (int64_t b = 0; b < n / MG_QK_K; b++, w += MG_Q6_K_SIZE) {
        const int8_t *sc = (const int8_t *)(w + offsetof(mg_block_q6_K, scales));
        const float d = ld_h(w + offsetof(mg_block_q6_K, d));
        for (int h = 0; h < 2; h++) {
            vq v[4];
            q6_unpack(w + offsetof(mg_block_q6_K, ql) + 64 * h, w + offsetof(mg_block_q6_K, qh) + 32 * h, v);
            for (int g = 0; g < 4; g++, y += 32) {
                vq_store(q, vq_sub(v[g], 32));
                scale_i8(q, d * (float)sc[8 * h + 2 * g], y, 16);
                scale_i8(q + 16, d * (float)sc[8 * h + 2 * g + 1], y + 16, 16);
            }
        }
    }
}

/* ------------------------------------------------------------------ the table's kernels
 * (quant-kernels.h: MG_QUANT(f) is the including file's name for kernel f) */

void MG_QUANT(quantize_q8_0)(const float *x, void *y, int n) { quantize_q8_0(x, y, n); }
void MG_QUANT(quantize_q8_K)(const float *x, void *y, int n) { quantize_q8_K(x, y, n); }
float MG_QUANT(dot_f16)(const uint16_t *w, const float *x, int n) { return dot_f16(w, x, n); }
float MG_QUANT(dot_bf16)(const uint16_t *w, const float *x, int n) { return dot_bf16(w, x, n); }
void MG_QUANT(dot2_f16)(const uint16_t *w0, const uint16_t *w1, const float *x, int n, float out[2])
{
    dot2_16(w0, w1, x, n, 0, out);
}
void MG_QUANT(dot2_bf16)(const uint16_t *w0, const uint16_t *w1, const float *x, int n, float out[2])
{
    dot2_16(w0, w1, x, n, 1, out);
}
float MG_QUANT(dot_q8_0)(const void *w, const void *xq, int n) { return dot_q8_0(w, xq, n); }
float MG_QUANT(dot_q4_0)(const void *w, const void *xq, int n) { return dot_q4_0(w, xq, n); }
float MG_QUANT(dot_q4_K)(const void *w, const void *xq, int n) { return dot_q4_K(w, xq, n); }
float MG_QUANT(dot_q6_K)(const void *w, const void *xq, int n) { return dot_q6_K(w, xq, n); }
void MG_QUANT(dequant_q8_0)(const void *w, float *y, int64_t n) { dequant_q8_0(w, y, n); }
void MG_QUANT(dequant_q4_0)(const void *w, float *y, int64_t n) { dequant_q4_0(w, y, n); }
void MG_QUANT(dequant_q4_K)(const void *w, float *y, int64_t n) { dequant_q4_K(w, y, n); }
void MG_QUANT(dequant_q6_K)(const void *w, float *y, int64_t n) { dequant_q6_K(w, y, n); }

#endif

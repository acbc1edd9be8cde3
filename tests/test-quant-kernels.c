/* test-quant-kernels - the quantized kernels of every kernel table (kernels.h) against the
 * scalar table, which is checked itself against the fp32 formulas of blocks.h:
 *  - fp16 rounding of the scales (quant-half.h) against the definition, for every half;
 *  - activation quantizers (q8_0, q8_K) and dequantizers: bit-identical to the scalar table;
 *  - dot products on random blocks (random bytes for the quants, random finite fp16 scales)
 *    with odd numbers of blocks and the row sizes of real models, at unaligned addresses:
 *    within TOL of the scalar table relative to the sum of |terms|, and the scalar table
 *    within TOL of the double dot product of the dequantized weights and activations. */
#include "config.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blocks.h"
#include "kernels.h"
#include "quant-half.h"
#include "test.h"

#define TOL 2e-6 /* measured at most 3e-7 (see main's report) */

static uint32_t seed = 2024;
static uint32_t rnd(void)
{
    seed ^= seed << 13;
    seed ^= seed >> 17;
    seed ^= seed << 5;
    return seed;
}
static float frand(void) { return (float)((rnd() >> 8) / 8388608.0 - 1.0); } /* [-1, 1) */

/* a random finite half of magnitude in [lo, hi) and random sign when sgn */
static uint16_t rand_half(float lo, float hi, int sgn)
{
    float v = lo + (hi - lo) * 0.5f * (frand() + 1.0f);
    return mg_f32_to_half(sgn && (rnd() & 1) ? -v : v);
}

static double worst_dot = 0.0, worst_ref = 0.0; /* measured, relative to sum |terms| */

/* every half's float rounds back to it; midpoints round to even; neighbours of midpoints
 * round to the nearer one */
static void test_half(void)
{
    int bad = 0;
    for (uint32_t h = 0; h < 0x10000; h++) {
        const float f = mg_half_to_f32((uint16_t)h);
        if (isnan(f)) { bad += !isnan(mg_half_to_f32(mg_f32_to_half(f))); continue; }
        bad += mg_f32_to_half(f) != h;
        if ((h & 0x7fff) >= 0x7bff) continue; /* the largest finite and inf: no next half */
        const float g = mg_half_to_f32((uint16_t)(h + 1)), m = (float)(((double)f + g) / 2);
        const uint16_t even = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
        bad += mg_f32_to_half(m) != even;
        bad += mg_f32_to_half(nextafterf(m, f)) != h;
        bad += mg_f32_to_half(nextafterf(m, g)) != h + 1;
    }
    CHECK(mg_f32_to_half(65520.0f) == 0x7c00 && mg_f32_to_half(65519.0f) == 0x7bff,
          "half overflow threshold");
    CHECK(bad == 0, "mg_f32_to_half: %d wrong roundings", bad);
}

/* random weight blocks of each type */
static void rand_blocks(uint8_t *w, int nb, size_t size, int type)
{
    for (size_t i = 0; i < nb * size; i++) w[i] = (uint8_t)rnd();
    for (int b = 0; b < nb; b++, w += size) {
        uint16_t d = rand_half(1e-3f, 0.1f, 1), dmin = rand_half(1e-4f, 0.02f, 0);
        if (type == 3) memcpy(w + offsetof(mg_block_q6_K, d), &d, 2);
        else memcpy(w, &d, 2);
        if (type == 2) memcpy(w + 2, &dmin, 2);
    }
}

/* random activations: mostly N(0,1)-like, a few outliers, one all-zero stretch */
static void rand_x(float *x, int n)
{
    for (int i = 0; i < n; i++) x[i] = frand() * (rnd() % 16 == 0 ? 8.0f : 1.0f);
    if (n >= 512)
        for (int i = 256; i < 512; i++) x[i] = 0.0f;
}

/* the dequantized q8_K activation */
static void deq_q8_K(const uint8_t *x, float *y, int n)
{
    for (int b = 0; b < n / MG_QK_K; b++, x += MG_Q8_K_SIZE, y += MG_QK_K) {
        float d;
        memcpy(&d, x, 4);
        for (int j = 0; j < MG_QK_K; j++) y[j] = d * (float)(int8_t)x[offsetof(mg_block_q8_K, qs) + j];
    }
}

static const char *const type_names[] = {"q8_0", "q4_0", "q4_K", "q6_K"};

/* One type, one row size, one alignment offset: quantizers, dequantizer and dot product of K
 * against S (and S against the double reference). */
static void test_type(const mg_kernels *K, const mg_kernels *S, int type, int n, int off)
{
    const int kq = type >= 2; /* k-quants: q8_K activations */
    const int qk = kq ? MG_QK_K : MG_QK8_0, nb = n / qk;
    const size_t wsz = type == 0 ? MG_Q8_0_SIZE : type == 1 ? MG_Q4_0_SIZE : type == 2 ? MG_Q4_K_SIZE : MG_Q6_K_SIZE;
    const size_t xsz = kq ? MG_Q8_K_SIZE : MG_Q8_0_SIZE;
    uint8_t *wb = malloc(nb * wsz + 4), *xb = malloc(nb * xsz + 4), *xb2 = malloc(nb * xsz + 4);
    float *xf = malloc(sizeof(float) * (n + 4)), *wd = malloc(sizeof(float) * (n + 4));
    float *wd2 = malloc(sizeof(float) * (n + 4)), *xd = malloc(sizeof(float) * n);
    uint8_t *w = wb + off, *xq = xb + (3 - off), *xq2 = xb2 + off;
    float *x = xf + off, *y = wd + (3 - off), *y2 = wd2 + off;
    char what[128];
    snprintf(what, sizeof what, "%s %s n=%d offset %d", K->name, type_names[type], n, off);

    rand_blocks(w, nb, wsz, type);
    rand_x(x, n);
    void (*quant_s)(const float *, void *, int) = kq ? S->quantize_q8_K : S->quantize_q8_0;
    void (*quant_k)(const float *, void *, int) = kq ? K->quantize_q8_K : K->quantize_q8_0;
    quant_s(x, xq, n);
    quant_k(x, xq2, n);
    CHECK(memcmp(xq, xq2, nb * xsz) == 0, "%s: activation quantizer differs from scalar", what);

    void (*const deq_s[])(const void *, float *, int64_t) = {S->dequant_q8_0, S->dequant_q4_0, S->dequant_q4_K, S->dequant_q6_K};
    void (*const deq_k[])(const void *, float *, int64_t) = {K->dequant_q8_0, K->dequant_q4_0, K->dequant_q4_K, K->dequant_q6_K};
    deq_s[type](w, y, n);
    deq_k[type](w, y2, n);
    CHECK(memcmp(y, y2, sizeof(float) * n) == 0, "%s: dequantizer differs from scalar", what);

    if (kq) deq_q8_K(xq, xd, n);
    else S->dequant_q8_0(xq, xd, n);
    double ref = 0.0, mag = 0.0;
    for (int i = 0; i < n; i++) {
        ref += (double)y[i] * xd[i];
        mag += fabs((double)y[i] * xd[i]);
    }
    float (*const dot_s[])(const void *, const void *, int) = {S->dot_q8_0, S->dot_q4_0, S->dot_q4_K, S->dot_q6_K};
    float (*const dot_k[])(const void *, const void *, int) = {K->dot_q8_0, K->dot_q4_0, K->dot_q4_K, K->dot_q6_K};
    const double ds = dot_s[type](w, xq, n), dk = dot_k[type](w, xq, n);
    const double es = fabs(ds - ref) / mag, ek = fabs(dk - ds) / mag;
    if (es > worst_ref) worst_ref = es;
    if (ek > worst_dot) worst_dot = ek;
    CHECK(es <= TOL, "%s: scalar dot %.9g vs dequantized %.9g (sum|terms| %.6g)", what, ds, ref, mag);
    CHECK(ek <= TOL, "%s: dot %.9g vs scalar %.9g (sum|terms| %.6g)", what, dk, ds, mag);
    free(wb); free(xb); free(xb2); free(xf); free(wd); free(wd2); free(xd);
}

/* fp16 / bf16 rows: any n, element offsets */
static void test_f16(const mg_kernels *K, const mg_kernels *S, int n, int off)
{
    uint16_t *hb = malloc(2 * (n + 4)), *bb = malloc(2 * (n + 4));
    float *xb = malloc(sizeof(float) * (n + 4)), *wf = malloc(sizeof(float) * n);
    uint16_t *h = hb + off, *bf = bb + (3 - off);
    float *x = xb + (3 - off);
    for (int i = 0; i < n; i++) {
        h[i] = rand_half(1e-4f, 2.0f, 1);
        bf[i] = (uint16_t)(rnd() & 0x3fff) | (uint16_t)((rnd() & 1) << 15) | 0x3000; /* finite */
        x[i] = frand();
    }
    for (int k = 0; k < 2; k++) {
        double ref = 0.0, mag = 0.0;
        if (k == 0) S->f16_to_f32(h, wf, n);
        else S->bf16_to_f32(bf, wf, n);
        for (int i = 0; i < n; i++) {
            ref += (double)wf[i] * x[i];
            mag += fabs((double)wf[i] * x[i]);
        }
        const double ds = k ? S->dot_bf16(bf, x, n) : S->dot_f16(h, x, n);
        const double dk = k ? K->dot_bf16(bf, x, n) : K->dot_f16(h, x, n);
        const double es = fabs(ds - ref) / mag, ek = fabs(dk - ds) / mag;
        if (es > worst_ref) worst_ref = es;
        if (ek > worst_dot) worst_dot = ek;
        CHECK(es <= TOL, "%s dot_%s n=%d: scalar %.9g vs double %.9g", K->name, k ? "bf16" : "f16", n, ds, ref);
        CHECK(ek <= TOL, "%s dot_%s n=%d: %.9g vs scalar %.9g", K->name, k ? "bf16" : "f16", n, dk, ds);
        /* two rows in one pass: the bits of two single dot products (the second row is the
         * other buffer's bits, finite in both types) */
        const uint16_t *w0 = k ? bf : h, *w1 = k ? h : bf;
        float two[2];
        if (k) K->dot2_bf16(w0, w1, x, n, two);
        else K->dot2_f16(w0, w1, x, n, two);
        const float one0 = k ? K->dot_bf16(w0, x, n) : K->dot_f16(w0, x, n);
        const float one1 = k ? K->dot_bf16(w1, x, n) : K->dot_f16(w1, x, n);
        CHECK(memcmp(&two[0], &one0, 4) == 0 && memcmp(&two[1], &one1, 4) == 0,
              "%s dot2_%s n=%d: %.9g %.9g vs single rows %.9g %.9g", K->name,
              k ? "bf16" : "f16", n, two[0], two[1], one0, one1);
    }
    free(hb); free(bb); free(xb); free(wf);
}

/* the quantizers' definitions on their own: q8_0 within d/2 of x, q8_K's q in [-127, 127]
 * and its bsums; ties of largest magnitude take the first; zero blocks */
static void test_quantizer_defs(const mg_kernels *K)
{
    float x[512];
    mg_block_q8_0 q0[16];
    mg_block_q8_K qk[2];
    rand_x(x, 512);
    /* q8_K block 0: -3 and 3 the largest, -3 first: iscale = 127 / 3, q[5] = -127, q[9] = 127 */
    for (int i = 0; i < 256; i++) x[i] = x[i] > 2.9f ? 2.9f : x[i] < -2.9f ? -2.9f : x[i];
    x[5] = -3.0f;
    x[9] = 3.0f;
    K->quantize_q8_0(x, q0, 512);
    int bad = 0;
    for (int b = 0; b < 16; b++) {
        /* q = rint(x / d) with the fp32 d, stored with d rounded to half */
        const float dh = mg_half_to_f32(q0[b].d);
        float amax = 0.0f;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[32 * b + j]));
        const float d = amax / 127, bound = 0.5f * d * 1.0001f + 127 * fabsf(d - dh) + 1e-7f;
        for (int j = 0; j < 32; j++) bad += fabsf(x[32 * b + j] - dh * q0[b].qs[j]) > bound;
    }
    CHECK(bad == 0, "%s quantize_q8_0: %d values further than d/2", K->name, bad);
    K->quantize_q8_K(x, qk, 512);
    CHECK(qk[0].qs[5] == -127 && qk[0].qs[9] == 127 && fabsf(qk[0].d - 3.0f / 127) < 1e-7f,
          "%s quantize_q8_K: the first value of largest magnitude sets the scale", K->name);
    bad = 0;
    for (int b = 0; b < 2; b++)
        for (int i = 0; i < 16; i++) {
            int s = 0;
            for (int j = 0; j < 16; j++) s += qk[b].qs[16 * i + j];
            bad += s != qk[b].bsums[i];
        }
    CHECK(bad == 0 && qk[1].d == 0.0f && qk[1].qs[100] == 0, "%s quantize_q8_K: bsums / zero block", K->name);
}

int main(void)
{
    const char *names[] = {"avx512", "avx2", "neon", "scalar"};
    const mg_kernels *S = &mg_kernels_scalar;
    const int blocks[] = {1, 3, 7, 33};
    const int rows[] = {768, 1536, 2048, 4096, 11008};
    test_half();
    for (int i = 0; i < 4; i++) {
        const mg_kernels *K = mg_kernels_by_name(names[i]);
        if (!K) {
            printf("  %s: not compiled in or not available here: not tested\n", names[i]);
            continue;
        }
        test_quantizer_defs(K);
        for (int type = 0; type < 4; type++) {
            const int qk = type >= 2 ? MG_QK_K : MG_QK8_0;
            for (int b = 0; b < 4; b++) test_type(K, S, type, blocks[b] * qk, b % 4);
            for (int r = 0; r < 5; r++) test_type(K, S, type, rows[r], (r + 1) % 4);
        }
        const int fn[] = {1, 7, 31, 33, 100, 768, 1536, 2048, 4096, 11008};
        for (int k = 0; k < 10; k++) test_f16(K, S, fn[k], k % 4);
        printf("  %s: tested\n", K->name);
    }
    printf("  worst |dot - scalar| / sum|terms| %.3g; worst |scalar - double| / sum|terms| %.3g\n",
           worst_dot, worst_ref);
    printf("%d checks, %d failures\n", test_checks, test_failures);
    return test_failures ? 1 : 0;
}

/* test-quant - the weight types of lib/quant.c:
 *   * the type table, row sizes and the fallback rule;
 *   * fp16 and bf16 rounding (every half, every midpoint between halves, specials);
 *   * hand-built blocks of each type decode to the values of the block definition, decoded
 *     here independently of quant.c, and quantized random rows decode the same way;
 *   * quantizer results on small known inputs; round-trip error bounds on random data;
 *     zeros, constant rows, huge and tiny values, NaN;
 *   * the GGUF writer's lazy tensors (same bytes as copied ones; a failing fill aborts the
 *     write and leaves the old file).
 * With --write FILE it writes the comparison file of tests/test-quant-gguf.sh instead: a
 * random fp32 matrix "src" and, for each type, its quantized bytes "q.TYPE" and their
 * dequantization "dq.TYPE" (the gguf Python package must give the same bytes and floats). */
#include "config.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "gguf.h"
#include "quant.h"
#include "test.h"

static uint32_t rng = 12345u;
static float frand(void) /* uniform in [-1, 1) */
{
    rng = rng * 1664525u + 1013904223u;
    return (float)((rng >> 8) / 8388608.0 - 1.0);
}
static float grand(void) { return frand() + frand() + frand(); } /* roughly normal */

static float bits_f(uint32_t b)
{
    float f;
    memcpy(&f, &b, 4);
    return f;
}

static const uint32_t all_types[] = {GGML_TYPE_F16, GGML_TYPE_BF16, GGML_TYPE_Q8_0,
                                     GGML_TYPE_Q4_0, GGML_TYPE_Q4_K, GGML_TYPE_Q6_K};
#define N_TYPES 6

/* ------------------------------------------------------------------ table */

static void test_table(void)
{
    CHECK(mg_row_size(GGML_TYPE_Q8_0, 64) == 68 && mg_row_size(GGML_TYPE_Q4_0, 64) == 36 &&
          mg_row_size(GGML_TYPE_Q4_K, 512) == 288 && mg_row_size(GGML_TYPE_Q6_K, 256) == 210 &&
          mg_row_size(GGML_TYPE_Q8_K, 256) == 292 && mg_row_size(GGML_TYPE_F16, 7) == 14 &&
          mg_row_size(GGML_TYPE_BF16, 3) == 6 && mg_row_size(GGML_TYPE_F32, 5) == 20,
          "row sizes");
    CHECK(mg_row_size(GGML_TYPE_Q8_0, 48) == 0 && mg_row_size(GGML_TYPE_Q4_K, 128) == 0 &&
          mg_row_size(3, 32) == 0, "partial blocks and unknown types have no row size");
    CHECK(mg_type_by_name("Q4_K") == GGML_TYPE_Q4_K && mg_type_by_name("q6_k") == GGML_TYPE_Q6_K &&
          mg_type_by_name("q4_1") == -1, "names");
    CHECK(mg_type_is_quantized(GGML_TYPE_Q4_0) && !mg_type_is_quantized(GGML_TYPE_F16),
          "quantized");
    CHECK(mg_type_fallback(GGML_TYPE_Q4_K, 512) == GGML_TYPE_Q4_K &&
          mg_type_fallback(GGML_TYPE_Q4_K, 96) == GGML_TYPE_Q4_0 &&
          mg_type_fallback(GGML_TYPE_Q4_K, 48) == GGML_TYPE_F16 &&
          mg_type_fallback(GGML_TYPE_Q6_K, 64) == GGML_TYPE_Q8_0 &&
          mg_type_fallback(GGML_TYPE_Q6_K, 40) == GGML_TYPE_F16 &&
          mg_type_fallback(GGML_TYPE_Q4_0, 33) == GGML_TYPE_F16 &&
          mg_type_fallback(GGML_TYPE_Q8_0, 32) == GGML_TYPE_Q8_0 &&
          mg_type_fallback(GGML_TYPE_BF16, 3) == GGML_TYPE_BF16, "fallback rule");
    char buf[64];
    float x[40] = {0};
    CHECK(mg_quantize_row(GGML_TYPE_Q8_0, x, buf, 40) == MG_ERR_INVALID_ARG &&
          strstr(mg_last_error(), "not a multiple of the q8_0 block (32)"), "partial block");
    CHECK(mg_dequantize_row(GGML_TYPE_I32, buf, x, 4) == MG_ERR_INVALID_ARG, "integer type");
}

/* ------------------------------------------------------------------ fp16 / bf16 */

static void test_fp16(void)
{
    int bad = 0;
    /* every finite half converts back to itself; the midpoint between two neighbours goes
     * to the even one, a hair off it to the nearer one */
    for (uint32_t h = 0; h < 0x7c00; h++) {
        float f = mg_fp16_to_fp32((uint16_t)h);
        if (mg_fp32_to_fp16(f) != h || mg_fp32_to_fp16(-f) != (h | 0x8000)) bad++;
        if (h == 0x7bff) continue;
        float g = mg_fp16_to_fp32((uint16_t)(h + 1)), mid = (f + g) / 2;
        uint16_t even = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
        if (mg_fp32_to_fp16(mid) != even) bad++;
        if (mg_fp32_to_fp16(nextafterf(mid, 0)) != h) bad++;
        if (mg_fp32_to_fp16(nextafterf(mid, INFINITY)) != h + 1) bad++;
    }
    CHECK(bad == 0, "%d halves or midpoints rounded wrongly", bad);
    CHECK(mg_fp32_to_fp16(1.0f) == 0x3c00 && mg_fp32_to_fp16(-2.0f) == 0xc000 &&
          mg_fp32_to_fp16(65504.0f) == 0x7bff && mg_fp32_to_fp16(65519.99f) == 0x7bff &&
          mg_fp32_to_fp16(65520.0f) == 0x7c00 && mg_fp32_to_fp16(1e10f) == 0x7c00 &&
          mg_fp32_to_fp16(INFINITY) == 0x7c00 && mg_fp32_to_fp16(-INFINITY) == 0xfc00,
          "normal values, overflow and inf");
    CHECK(mg_fp32_to_fp16(ldexpf(1, -24)) == 1 && mg_fp32_to_fp16(ldexpf(1, -25)) == 0 &&
          mg_fp32_to_fp16(ldexpf(1.5f, -25)) == 1 && mg_fp32_to_fp16(ldexpf(3, -25)) == 2 &&
          mg_fp32_to_fp16(ldexpf(1, -14)) == 0x400 && mg_fp32_to_fp16(1e-30f) == 0 &&
          mg_fp32_to_fp16(-0.0f) == 0x8000 && mg_fp32_to_fp16(bits_f(1)) == 0,
          "subnormals and underflow");
    uint16_t n1 = mg_fp32_to_fp16(NAN), n2 = mg_fp32_to_fp16(bits_f(0x7f800001u));
    CHECK(n1 == 0x7e00 && (n2 & 0x7e00) == 0x7e00 && isnan(mg_fp16_to_fp32(n2)),
          "NaN stays a quiet NaN: %04x %04x", n1, n2);
}

static void test_bf16(void)
{
    CHECK(mg_fp32_to_bf16(1.0f) == 0x3f80 && mg_fp32_to_bf16(bits_f(0x3f808000u)) == 0x3f80 &&
          mg_fp32_to_bf16(bits_f(0x3f818000u)) == 0x3f82 &&
          mg_fp32_to_bf16(bits_f(0x3f808001u)) == 0x3f81 &&
          mg_fp32_to_bf16(bits_f(0x3f807fffu)) == 0x3f80, "round to nearest even");
    CHECK(mg_fp32_to_bf16(INFINITY) == 0x7f80 && mg_fp32_to_bf16(-INFINITY) == 0xff80 &&
          mg_fp32_to_bf16(bits_f(0x7f7fffffu)) == 0x7f80 && mg_fp32_to_bf16(bits_f(1)) == 0,
          "inf, overflow, subnormals rounded");
    CHECK(mg_fp32_to_bf16(bits_f(0x7f800001u)) == 0x7fc0 &&
          mg_fp32_to_bf16(bits_f(0xffa00000u)) == 0xffe0 && mg_fp32_to_bf16(NAN) == 0x7fc0,
          "NaN made quiet");
    CHECK(mg_bf16_to_fp32(0x3f80) == 1.0f && mg_bf16_to_fp32(0xc040) == -3.0f, "decode");
}

/* ------------------------------------------------------------------ block definitions */

/* Each block decoded straight from the definition (the layout comments of simd/blocks.h),
 * independently of quant.c's dequantizers. */
static void decode_q8_0(const mg_block_q8_0 *b, float *y)
{
    for (int j = 0; j < 32; j++) y[j] = b->qs[j] * mg_fp16_to_fp32(b->d);
}

static void decode_q4_0(const mg_block_q4_0 *b, float *y)
{
    for (int j = 0; j < 32; j++) {
        int q = j < 16 ? b->qs[j] & 15 : b->qs[j - 16] >> 4;
        y[j] = (q - 8) * mg_fp16_to_fp32(b->d);
    }
}

static void decode_q4_K(const mg_block_q4_K *b, float *y)
{
    for (int j = 0; j < 8; j++) {
        int sc, m;
        if (j < 4) {
            sc = b->scales[j] & 63;
            m = b->scales[j + 4] & 63;
        } else {
            sc = (b->scales[j + 4] & 15) | ((b->scales[j - 4] >> 6) << 4);
            m = (b->scales[j + 4] >> 4) | ((b->scales[j] >> 6) << 4);
        }
        float d = mg_fp16_to_fp32(b->d) * sc, dm = mg_fp16_to_fp32(b->dmin) * m;
        for (int l = 0; l < 32; l++) {
            int i = 32 * j + l; /* group i / 64, low nibbles for its first 32 values */
            uint8_t byte = b->qs[32 * (i / 64) + i % 32];
            int q = (i % 64) < 32 ? byte & 15 : byte >> 4;
            y[i] = d * q - dm;
        }
    }
}

static void decode_q6_K(const mg_block_q6_K *b, float *y)
{
    for (int i = 0; i < 256; i++) {
        int h = i / 128, r = i % 128, l = r % 32, quarter = r / 32;
        uint8_t lo = b->ql[64 * h + l + 32 * (quarter & 1)];
        int low = quarter < 2 ? lo & 15 : lo >> 4;
        int high = (b->qh[32 * h + l] >> (2 * quarter)) & 3;
        y[i] = mg_fp16_to_fp32(b->d) * b->scales[i / 16] * ((low | (high << 4)) - 32);
    }
}

static void decode(uint32_t type, const void *blocks, float *y, size_t n)
{
    const mg_type_info *t = mg_type_info_of(type);
    for (size_t b = 0; b < n / t->blck; b++) {
        const uint8_t *p = (const uint8_t *)blocks + b * t->bytes;
        float *yb = y + b * t->blck;
        switch (type) {
        case GGML_TYPE_F16: yb[0] = mg_fp16_to_fp32((uint16_t)(p[0] | p[1] << 8)); break;
        case GGML_TYPE_BF16: yb[0] = mg_bf16_to_fp32((uint16_t)(p[0] | p[1] << 8)); break;
        case GGML_TYPE_Q8_0: decode_q8_0((const mg_block_q8_0 *)p, yb); break;
        case GGML_TYPE_Q4_0: decode_q4_0((const mg_block_q4_0 *)p, yb); break;
        case GGML_TYPE_Q4_K: decode_q4_K((const mg_block_q4_K *)p, yb); break;
        case GGML_TYPE_Q6_K: decode_q6_K((const mg_block_q6_K *)p, yb); break;
        }
    }
}

static int same_floats(const float *a, const float *b, size_t n)
{
    return memcmp(a, b, n * sizeof(float)) == 0;
}

/* Hand-built blocks with every field exercised: the dequantizers give the definition. */
static void test_hand_blocks(void)
{
    float want[256], got[256];
    mg_block_q4_K k4;
    k4.d = 0x3c00;    /* 1.0 */
    k4.dmin = 0x3800; /* 0.5 */
    int sc[8] = {1, 63, 5, 17, 33, 48, 2, 60}, m[8] = {0, 7, 63, 31, 32, 1, 47, 16};
    for (int j = 0; j < 4; j++) {
        k4.scales[j] = (uint8_t)(sc[j] | ((sc[j + 4] >> 4) << 6));
        k4.scales[j + 4] = (uint8_t)(m[j] | ((m[j + 4] >> 4) << 6));
        k4.scales[j + 8] = (uint8_t)((sc[j + 4] & 15) | ((m[j + 4] & 15) << 4));
    }
    for (int i = 0; i < 128; i++) k4.qs[i] = (uint8_t)(i * 37 + 11);
    for (int i = 0; i < 256; i++) { /* value i: sub-block i / 32, nibble of group i / 64 */
        uint8_t byte = k4.qs[32 * (i / 64) + i % 32];
        int q = (i % 64) < 32 ? byte & 15 : byte >> 4;
        want[i] = 1.0f * sc[i / 32] * q - 0.5f * m[i / 32];
    }
    mg_dequantize_row_q4_K(&k4, got, 256);
    CHECK(same_floats(want, got, 256), "q4_K hand block");
    decode_q4_K(&k4, got);
    CHECK(same_floats(want, got, 256), "q4_K test decoder");

    mg_block_q6_K k6;
    k6.d = 0x3400; /* 0.25 */
    for (int j = 0; j < 16; j++) k6.scales[j] = (int8_t)(j * 17 - 128);
    uint8_t q6[256];
    for (int i = 0; i < 256; i++) q6[i] = (uint8_t)((i * 29 + 5) & 63);
    memset(k6.ql, 0, sizeof k6.ql);
    memset(k6.qh, 0, sizeof k6.qh);
    for (int i = 0; i < 256; i++) { /* place value i by the layout of simd/blocks.h */
        int h = i / 128, r = i % 128, l = r % 32, quarter = r / 32;
        k6.ql[64 * h + l + 32 * (quarter & 1)] |= (uint8_t)((q6[i] & 15) << (quarter < 2 ? 0 : 4));
        k6.qh[32 * h + l] |= (uint8_t)((q6[i] >> 4) << (2 * quarter));
        want[i] = 0.25f * k6.scales[i / 16] * (q6[i] - 32);
    }
    mg_dequantize_row_q6_K(&k6, got, 256);
    CHECK(same_floats(want, got, 256), "q6_K hand block");

    mg_block_q4_0 b4 = {.d = 0xbc00}; /* -1.0 */
    for (int j = 0; j < 16; j++) b4.qs[j] = (uint8_t)(j | ((15 - j) << 4));
    for (int j = 0; j < 16; j++) {
        want[j] = -1.0f * (j - 8);
        want[j + 16] = -1.0f * (7 - j);
    }
    mg_dequantize_row_q4_0(&b4, got, 32);
    CHECK(same_floats(want, got, 32), "q4_0 hand block");

    mg_block_q8_0 b8 = {.d = 0x3800}; /* 0.5 */
    for (int j = 0; j < 32; j++) {
        b8.qs[j] = (int8_t)(j * 8 - 128);
        want[j] = 0.5f * (j * 8 - 128);
    }
    mg_dequantize_row_q8_0(&b8, got, 32);
    CHECK(same_floats(want, got, 32), "q8_0 hand block");
}

/* Quantizers on inputs whose result is known by hand. */
static void test_known_quantization(void)
{
    float x[32] = {127, -127, 2.5f, -2.5f, 0.49f, 0.5f, -0.5f, 100.2f};
    mg_block_q8_0 b8;
    mg_quantize_row_q8_0(x, &b8, 32); /* amax 127: d = 1, q = round half away from zero */
    int8_t want8[8] = {127, -127, 3, -3, 0, 1, -1, 100};
    CHECK(b8.d == 0x3c00 && memcmp(b8.qs, want8, 8) == 0 && b8.qs[31] == 0, "q8_0 d = 1");

    float y[32] = {-8, 7, 7.4f, 0, 0.49f, 0.5f, -0.5f, -7.6f};
    for (int j = 8; j < 32; j++) y[j] = (float)(j % 16) - 8;
    mg_block_q4_0 b4;
    mg_quantize_row_q4_0(y, &b4, 32); /* max -8: d = 1, q = min(15, trunc(x + 8.5)) */
    int want4[8] = {0, 15, 15, 8, 8, 9, 8, 0};
    int ok = b4.d == 0x3c00;
    for (int j = 0; j < 8; j++) ok &= (b4.qs[j] & 15) == want4[j];
    for (int j = 16; j < 32; j++) ok &= (b4.qs[j - 16] >> 4) == (int)y[j] + 8;
    CHECK(ok, "q4_0 d = 1 and nibble order");
    y[0] = 8; /* max +8: d = -1, 8 -> q = 0 */
    mg_quantize_row_q4_0(y, &b4, 32);
    CHECK(b4.d == 0xbc00 && (b4.qs[0] & 15) == 0, "q4_0 positive maximum");

    /* zeros: every type gives zeros back, and all-zero bytes but for q4_0's q = 8 and
     * d = 0 / -8 = -0 (0x8000), as in ggml */
    float z[256] = {0}, out[256];
    uint8_t buf[512];
    for (int t = 0; t < N_TYPES; t++) {
        memset(buf, 0xa5, sizeof buf);
        mg_quantize_row(all_types[t], z, buf, 256);
        size_t rs = mg_row_size(all_types[t], 256);
        int zero = 1;
        for (size_t i = 0; i < rs; i++)
            zero &= buf[i] == (all_types[t] != GGML_TYPE_Q4_0 ? 0 : i % 18 >= 2 ? 0x88
                                                                 : i % 18 == 1 ? 0x80 : 0);
        mg_dequantize_row(all_types[t], buf, out, 256);
        for (int i = 0; i < 256; i++) zero &= out[i] == 0.0f; /* (q6_K gives -0) */
        CHECK(zero, "zeros as %s", mg_type_info_of(all_types[t])->name);
    }
    mg_block_q8_K k8;
    for (int j = 0; j < 256; j++) z[j] = (float)(j % 7) - 3;
    mg_quantize_row_q8_K(z, &k8, 256);
    int sums = 1;
    for (int i = 0; i < 16; i++) {
        int s = 0;
        for (int j = 0; j < 16; j++) s += k8.qs[16 * i + j];
        sums &= s == k8.bsums[i];
    }
    mg_dequantize_row_q8_K(&k8, out, 256);
    CHECK(sums && k8.qs[0] == -127 && fabsf(out[1] + 2) < 0.02f, "q8_K bsums and scale");
}

/* ------------------------------------------------------------------ round trips */

/* Quantize n values, check the bytes decode (test decoder) to what the dequantizer gives,
 * and return the largest error relative to the row's largest magnitude. */
static double round_trip(uint32_t type, const float *x, size_t n, float *y)
{
    uint8_t *q = malloc(mg_row_size(type, n));
    float *ref = malloc(n * sizeof(float));
    mg_quantize_row(type, x, q, n);
    mg_dequantize_row(type, q, y, n);
    decode(type, q, ref, n);
    CHECK(same_floats(ref, y, n), "%s: dequantized = block definition",
          mg_type_info_of(type)->name);
    double amax = 0, err = 0;
    for (size_t i = 0; i < n; i++) {
        amax = fmax(amax, fabs(x[i]));
        err = fmax(err, fabs((double)x[i] - y[i]));
    }
    free(q);
    free(ref);
    return amax > 0 ? err / amax : err;
}

static void test_round_trips(void)
{
    enum { N = 256 * 16 };
    /* the largest error relative to the largest magnitude, per type (the grids: q8_0 half
     * of 1/127; q4_0 one step of 1/8 at the clipped end; q4_K and q6_K their fitted grids) */
    const double bound[N_TYPES] = {4.9e-4, 3.9e-3, 4.5e-3, 0.126, 0.1, 0.02};
    float *x = malloc(N * sizeof(float)), *y = malloc(N * sizeof(float));
    for (int trial = 0; trial < 3; trial++) {
        for (int i = 0; i < N; i++)
            x[i] = trial == 0 ? frand() : trial == 1 ? grand() * 0.02f : grand() * (i % 97 == 0 ? 30 : 1);
        for (int t = 0; t < N_TYPES; t++) {
            double worst = 0;
            for (int r = 0; r < N / 256; r++) /* per row of 256: the bound is per row */
                worst = fmax(worst, round_trip(all_types[t], x + 256 * r, 256, y + 256 * r));
            CHECK(worst <= bound[t], "%s trial %d: relative error %.3g > %.3g",
                  mg_type_info_of(all_types[t])->name, trial, worst, bound[t]);
        }
    }
    /* a constant row, huge and tiny values */
    for (int i = 0; i < 256; i++) x[i] = 0.3f;
    for (int t = 0; t < N_TYPES; t++)
        CHECK(round_trip(all_types[t], x, 256, y) <= 0.01, "constant row as %s",
              mg_type_info_of(all_types[t])->name);
    /* (the fp16 scales bound the magnitudes: q4_0 to 8 * 65504; f16 itself to 65504) */
    for (int i = 0; i < 256; i++) x[i] = frand() * 4e5f;
    for (int t = 1; t < N_TYPES; t++)
        CHECK(round_trip(all_types[t], x, 256, y) <= bound[t], "huge values as %s",
              mg_type_info_of(all_types[t])->name);
    for (int i = 0; i < 256; i++) x[i] = frand() * 1e-9f;
    for (int t = 0; t < N_TYPES; t++) { /* the fp16 scales underflow: zeros or close */
        round_trip(all_types[t], x, 256, y);
        double e = 0;
        for (int i = 0; i < 256; i++) e = fmax(e, fabs(x[i] - y[i]));
        CHECK(e <= 2e-9, "tiny values as %s: error %.3g", mg_type_info_of(all_types[t])->name, e);
    }
    /* NaN: kept by f16 and bf16; the block types give finite values (no undefined
     * conversion) for the rest of the row */
    for (int i = 0; i < 256; i++) x[i] = frand();
    x[5] = NAN;
    for (int t = 0; t < N_TYPES; t++) {
        uint8_t q[512];
        mg_quantize_row(all_types[t], x, q, 256);
        mg_dequantize_row(all_types[t], q, y, 256);
        if (t < 2) CHECK(isnan(y[5]) && y[6] == y[6], "NaN as %s", mg_type_info_of(all_types[t])->name);
    }
    free(x);
    free(y);
}

/* ------------------------------------------------------------------ lazy tensors */

static int fill_ramp(void *user, const char *name, void *buf, size_t n)
{
    (void)name;
    if (user) return mg_seterr(MG_ERR_MODEL, "fill failed on purpose");
    for (size_t i = 0; i < n; i++) ((uint8_t *)buf)[i] = (uint8_t)(i * 7);
    return MG_OK;
}

static void test_lazy_writer(void)
{
    uint8_t data[68];
    for (size_t i = 0; i < sizeof data; i++) data[i] = (uint8_t)(i * 7);
    uint64_t ne[2] = {64, 1};
    gguf_writer *a = gguf_writer_new(), *b = gguf_writer_new();
    CHECK(gguf_add_tensor(a, "t", GGML_TYPE_Q8_0, 2, ne, data) == MG_OK, "copied tensor");
    CHECK(gguf_add_tensor_lazy(b, "t", GGML_TYPE_Q8_0, 2, ne, fill_ramp, NULL) == MG_OK,
          "lazy tensor");
    void *ia, *ib;
    size_t na, nb;
    CHECK(gguf_write_memory(a, &ia, &na) == MG_OK && gguf_write_memory(b, &ib, &nb) == MG_OK &&
          na == nb && memcmp(ia, ib, na) == 0, "lazy and copied tensors give the same file");
    char path[256];
    const char *dir = getenv("TMPDIR");
    snprintf(path, sizeof path, "%s/test-quant-%d.gguf", dir && *dir ? dir : "/tmp", (int)getpid());
    CHECK(gguf_write_file(b, path) == MG_OK, "lazy file: %s", mg_last_error());
    long size = 0;
    unsigned char *f = test_read_file(path, &size);
    CHECK(f && (size_t)size == na && memcmp(f, ia, na) == 0, "lazy file bytes");
    free(f);
    gguf_writer *c = gguf_writer_new();
    int dummy;
    CHECK(gguf_add_tensor_lazy(c, "bad", GGML_TYPE_F32, 1, ne, fill_ramp, &dummy) == MG_OK, "add");
    CHECK(gguf_write_file(c, path) == MG_ERR_MODEL &&
          strstr(mg_last_error(), "fill failed on purpose"), "a failing fill aborts the write");
    f = test_read_file(path, &size);
    CHECK(f && (size_t)size == na && memcmp(f, ia, na) == 0, "the old file is untouched");
    free(f);
    void *ic = NULL;
    CHECK(gguf_write_memory(c, &ic, &nb) == MG_ERR_MODEL && !ic, "failing fill in memory");
    CHECK(gguf_add_tensor_lazy(c, "q", GGML_TYPE_Q4_K, 2, ne, fill_ramp, NULL) ==
              MG_ERR_INVALID_ARG && strstr(mg_last_error(), "'q'") &&
              strstr(mg_last_error(), "ne[0] = 64"), "a partial block is refused");
    unlink(path);
    free(ia);
    free(ib);
    gguf_writer_free(a);
    gguf_writer_free(b);
    gguf_writer_free(c);
}

/* ------------------------------------------------------------------ comparison file */

static int write_comparison(const char *path)
{
    enum { COLS = 512, ROWS = 6 };
    static float x[ROWS * COLS], y[ROWS * COLS];
    static uint8_t q[ROWS * COLS * 2];
    for (int i = 0; i < ROWS * COLS; i++) {
        int r = i / COLS;
        x[i] = r == 0 ? frand() : r == 1 ? grand() * 0.01f : r == 2 ? grand() * 1000 : 0;
        if (r == 3) x[i] = 0.75f;                               /* constant */
        if (r == 4) x[i] = (i % 64 == 5) ? 40.0f : frand() * 0.1f; /* outliers */
        if (r == 5) x[i] = (float)((i % 33) - 16) * 0.125f;         /* ties on the grids */
    }
    uint64_t ne[2] = {COLS, ROWS};
    gguf_writer *w = gguf_writer_new();
    int rc = w ? gguf_add_tensor(w, "src", GGML_TYPE_F32, 2, ne, x) : MG_ERR_NOMEM;
    for (int t = 0; rc == MG_OK && t < N_TYPES; t++) {
        char name[32];
        mg_quantize_row(all_types[t], x, q, ROWS * COLS);
        mg_dequantize_row(all_types[t], q, y, ROWS * COLS);
        snprintf(name, sizeof name, "q.%s", mg_type_info_of(all_types[t])->name);
        rc = gguf_add_tensor(w, name, all_types[t], 2, ne, q);
        snprintf(name, sizeof name, "dq.%s", mg_type_info_of(all_types[t])->name);
        if (rc == MG_OK) rc = gguf_add_tensor(w, name, GGML_TYPE_F32, 2, ne, y);
    }
    if (rc == MG_OK) rc = gguf_write_file(w, path);
    gguf_writer_free(w);
    if (rc) fprintf(stderr, "test-quant: %s\n", mg_last_error());
    return rc ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "--write")) return write_comparison(argv[2]);
    test_table();
    test_fp16();
    test_bf16();
    test_hand_blocks();
    test_known_quantization();
    test_round_trips();
    test_lazy_writer();
    return test_finish("test-quant");
}

/* quant.c - the type table, fp16/bf16 rounding, and the reference quantizers and
 * dequantizers of q8_0, q4_0, q4_K, q6_K (and q8_K, the activation blocks of the k-quant dot
 * products). Their results are those of ggml's reference code, bit for bit: every float
 * operation below is done in the same order in float, so that files written here and by
 * llama.cpp's tools hold the same bytes. docs/quantization.md explains each type. */
#include "quant.h"

#include <math.h>
#include <string.h>
#include <strings.h>

#include "error.h"
#include "gguf.h"
#include "kernels.h"

/* ------------------------------------------------------------------ type table */

static const mg_type_info type_table[] = {
    {GGML_TYPE_F32, "f32", 1, 4, 1},
    {GGML_TYPE_F16, "f16", 1, 2, 1},
    {GGML_TYPE_Q4_0, "q4_0", MG_QK4_0, sizeof(mg_block_q4_0), 1},
    {GGML_TYPE_Q8_0, "q8_0", MG_QK8_0, sizeof(mg_block_q8_0), 1},
    {GGML_TYPE_Q4_K, "q4_K", MG_QK_K, sizeof(mg_block_q4_K), 1},
    {GGML_TYPE_Q6_K, "q6_K", MG_QK_K, sizeof(mg_block_q6_K), 1},
    {GGML_TYPE_Q8_K, "q8_K", MG_QK_K, sizeof(mg_block_q8_K), 1},
    {GGML_TYPE_I8, "i8", 1, 1, 0},
    {GGML_TYPE_I16, "i16", 1, 2, 0},
    {GGML_TYPE_I32, "i32", 1, 4, 0},
    {GGML_TYPE_I64, "i64", 1, 8, 0},
    {GGML_TYPE_F64, "f64", 1, 8, 0},
    {GGML_TYPE_BF16, "bf16", 1, 2, 1},
};
#define N_TYPES (sizeof type_table / sizeof type_table[0])

const mg_type_info *mg_type_info_of(uint32_t type)
{
    for (size_t i = 0; i < N_TYPES; i++)
        if (type_table[i].type == type) return &type_table[i];
    return NULL;
}

int mg_type_by_name(const char *name)
{
    for (size_t i = 0; name && i < N_TYPES; i++)
        if (strcasecmp(type_table[i].name, name) == 0) return (int)type_table[i].type;
    return -1;
}

int mg_type_is_quantized(uint32_t type)
{
    const mg_type_info *t = mg_type_info_of(type);
    return t && t->blck > 1;
}

size_t mg_row_size(uint32_t type, uint64_t n)
{
    const mg_type_info *t = mg_type_info_of(type);
    if (!t || n % t->blck != 0) return 0;
    return (size_t)(n / t->blck * t->bytes);
}

uint32_t mg_type_fallback(uint32_t type, uint64_t n)
{
    while (mg_row_size(type, n) == 0 || n == 0) {
        switch (type) {
        case GGML_TYPE_Q4_K: type = GGML_TYPE_Q4_0; break;
        case GGML_TYPE_Q4_0: type = GGML_TYPE_Q8_0; break;
        case GGML_TYPE_Q6_K: type = GGML_TYPE_Q8_0; break;
        default: return GGML_TYPE_F16; /* q8_0, q8_K and anything else */
        }
    }
    return type;
}

/* ------------------------------------------------------------------ fp16 and bf16 */

/* binary32: sign, 8 exponent bits (bias 127), 23 mantissa bits. binary16: sign, 5 exponent
 * bits (bias 15), 10 mantissa bits; exponent 0 holds the subnormals m * 2^-24. */
uint16_t mg_fp32_to_fp16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t a = x & 0x7fffffffu;
    if (a > 0x7f800000u) return sign | 0x7e00u | ((a >> 13) & 0x3ffu); /* NaN, made quiet */
    if (a >= 0x477ff000u) return sign | 0x7c00u; /* >= 65520 (and inf) round to inf */
    uint32_t e = a >> 23;
    if (e < 113) {
        /* below 2^-14: the half is the subnormal round(|f| * 2^24). With the implicit bit,
         * |f| = m * 2^(e - 150), so |f| * 2^24 = m >> (126 - e) plus a remainder. */
        uint32_t shift = 126 - e;
        if (e == 0 || shift > 24) return sign; /* under 2^-25 (or a tie at it): zero */
        uint32_t m = (a & 0x7fffffu) | 0x800000u;
        uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1))) q++;
        return sign | (uint16_t)q; /* q = 0x400 is the smallest normal, correctly encoded */
    }
    /* normal: rebias the exponent, keep the top 10 mantissa bits, round the 13 dropped
     * ones to nearest even (a carry into the exponent is the correct result) */
    uint32_t h = ((e - 112) << 10) | ((a >> 13) & 0x3ffu);
    uint32_t rem = a & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) h++;
    return sign | (uint16_t)h;
}

float mg_fp16_to_fp32(uint16_t h)
{
    float f;
    mg_kernels_scalar.f16_to_f32(&h, &f, 1);
    return f;
}

/* bf16 is the top half of binary32: add 0x7fff plus the lowest kept bit, then truncate
 * (round to nearest, ties to even); a NaN keeps its top bits and gets the quiet bit. */
uint16_t mg_fp32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 64);
    return (uint16_t)((x + (0x7fffu + ((x >> 16) & 1))) >> 16);
}

float mg_bf16_to_fp32(uint16_t h)
{
    float f;
    mg_kernels_scalar.bf16_to_f32(&h, &f, 1);
    return f;
}

/* The integer nearest to v, ties to even, for |v| < 2^22: adding 1.5 * 2^23 puts the
 * rounded integer in the low mantissa bits of the sum (ggml's nearest_int). */
static int nearest_int(float v)
{
    float s = v + 12582912.f;
    int32_t i;
    memcpy(&i, &s, 4);
    return (i & 0x007fffff) - 0x00400000;
}

static int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* v truncated to an integer in -128..127 (v is in range for finite input); a NaN (from a NaN
 * or infinite input, which the quantized types cannot represent) gives 0 instead of the
 * undefined conversion. */
static int8_t to_i8(float v) { return v == v ? (int8_t)v : 0; }

/* The value of largest magnitude in x[0 .. n-1], the first one, sign kept; 0 when all are 0
 * (NaNs never compare larger). */
static float max_by_magnitude(const float *x, int n)
{
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < n; j++)
        if (fabsf(x[j]) > amax) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    return max;
}

/* ------------------------------------------------------------------ q8_0 */

/* q8_0, per block of 32: d = max|x| / 127, q[j] = round(x[j] / d) (half away from zero; 0 when
 * d = 0), stored d as fp16. Dequantized: x[j] = d * q[j]. */
void mg_quantize_row_q8_0(const float *x, mg_block_q8_0 *y, size_t n)
{
    for (size_t b = 0; b < n / MG_QK8_0; b++, x += MG_QK8_0) {
        float amax = 0.0f;
        for (int j = 0; j < MG_QK8_0; j++) amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = mg_fp32_to_fp16(d);
        for (int j = 0; j < MG_QK8_0; j++) y[b].qs[j] = to_i8(roundf(x[j] * id));
    }
}

void mg_dequantize_row_q8_0(const mg_block_q8_0 *x, float *y, size_t n)
{
    for (size_t b = 0; b < n / MG_QK8_0; b++, y += MG_QK8_0) {
        float d = mg_fp16_to_fp32(x[b].d);
        for (int j = 0; j < MG_QK8_0; j++) y[j] = x[b].qs[j] * d;
    }
}

/* ------------------------------------------------------------------ q4_0 */

/* q4_0, per block of 32: m = the value of largest magnitude (the first one, sign kept),
 * d = m / -8, q[j] = min(15, trunc(x[j] / d + 8.5)) in 0..15 (so m itself maps to 0 and
 * the grid is d * (q - 8), -8..7 steps); stored d as fp16, q[j] in the low nibble of byte j
 * and q[j + 16] in its high nibble (j < 16). Dequantized: x[j] = d * (q[j] - 8). */
void mg_quantize_row_q4_0(const float *x, mg_block_q4_0 *y, size_t n)
{
    for (size_t b = 0; b < n / MG_QK4_0; b++, x += MG_QK4_0) {
        float d = max_by_magnitude(x, MG_QK4_0) / -8.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = mg_fp32_to_fp16(d);
        for (int j = 0; j < MG_QK4_0 / 2; j++) {
            /* x * id + 8.5 is in [0.5, 16.5]; the conversion truncates */
            int q0 = to_i8(x[j] * id + 8.5f), q1 = to_i8(x[j + 16] * id + 8.5f);
            q0 = q0 > 15 ? 15 : q0;
            q1 = q1 > 15 ? 15 : q1;
            y[b].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

void mg_dequantize_row_q4_0(const mg_block_q4_0 *x, float *y, size_t n)
{
    for (size_t b = 0; b < n / MG_QK4_0; b++, y += MG_QK4_0) {
        float d = mg_fp16_to_fp32(x[b].d);
        for (int j = 0; j < MG_QK4_0 / 2; j++) {
            y[j] = ((x[b].qs[j] & 15) - 8) * d;
            y[j + 16] = ((x[b].qs[j] >> 4) - 8) * d;
        }
    }
}

/* ------------------------------------------------------------------ q4_K */

/* Fit x[i] ~ scale * L[i] - mn with L[i] in 0..nmax by weighted least squares (ggml's
 * make_qkx2_quants with its q4_K arguments): start from the range [min(0, min x), max x]
 * with L = round((x - min) * nmax / (max - min)), then for each of nstep + 1 trial grids
 * iscale = (rmin + rdelta * is + nmax) / (max - min) round again and solve the 2x2 normal
 * equations of sum w (scale L + min - x)^2 for (scale, min) (min forced <= 0); keep the
 * trial with the smallest weighted squared error. Returns scale, *mn = -min >= 0. */
static float fit_scale_min(int n, int nmax, const float *x, const float *w, uint8_t *L,
                           float *mn, uint8_t *Laux, float rmin, float rdelta, int nstep)
{
    float min = x[0], max = x[0];
    float sum_w = w[0], sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        for (int i = 0; i < n; i++) L[i] = 0;
        *mn = -min;
        return 0.0f;
    }
    float iscale = nmax / (max - min);
    float scale = 1 / iscale;
    float best_error = 0;
    for (int i = 0; i < n; i++) {
        L[i] = (uint8_t)clampi(nearest_int(iscale * (x[i] - min)), 0, nmax);
        float diff = scale * L[i] + min - x[i];
        best_error += w[i] * (diff * diff);
    }
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * is + nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            int l = clampi(nearest_int(iscale * (x[i] - min)), 0, nmax);
            Laux[i] = (uint8_t)l;
            sum_l += w[i] * l;
            sum_l2 += w[i] * l * l;
            sum_xl += w[i] * l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D <= 0) continue;
        float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
        float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
        if (this_min > 0) {
            this_min = 0;
            this_scale = sum_xl / sum_l2;
        }
        float err = 0;
        for (int i = 0; i < n; i++) {
            float diff = this_scale * Laux[i] + this_min - x[i];
            err += w[i] * (diff * diff);
        }
        if (err < best_error) {
            memcpy(L, Laux, (size_t)n);
            best_error = err;
            scale = this_scale;
            min = this_min;
        }
    }
    *mn = -min;
    return scale;
}

/* The 6-bit scale and min of sub-block j (0..7) of q4_K's scales[12]: bytes 0..3 hold the
 * scales of 0..3 (low 6 bits), bytes 4..7 their mins; sub-blocks 4..7 keep their low 4 bits
 * in bytes 8..11 (scale low nibble, min high nibble) and their top 2 bits in the top 2 bits
 * of bytes 0..3 (scale) and 4..7 (min). */
static void q4k_scale_min(int j, const uint8_t *s, uint8_t *sc, uint8_t *m)
{
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (uint8_t)((s[j + 4] & 15) | ((s[j - 4] >> 6) << 4));
        *m = (uint8_t)((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
    }
}

/* q4_K, per super-block of 256 = 8 sub-blocks of 32: each sub-block j is fitted as
 * x ~ s_j q - m_j (q in 0..15, weights w = rms(sub-block) + |x|, fit_scale_min with
 * rmin = -1, rdelta = 0.1, 20 steps); then d = max s_j / 63, dmin = max m_j / 63 (fp16) and
 * sc_j = round(s_j / d), mn_j = round(m_j / dmin) (6 bits); finally every value is
 * re-quantized against the stored scales: q = clamp(round((x + dmin mn_j) / (d sc_j)), 0, 15).
 * Dequantized: x = d * sc_j * q - dmin * mn_j. qs holds 64-value groups of 32 bytes: the
 * low nibbles are the group's first 32 values, the high nibbles its next 32. */
void mg_quantize_row_q4_K(const float *x, mg_block_q4_K *y, size_t n)
{
    uint8_t L[MG_QK_K], Laux[32];
    float w[32], mins[MG_QK_K / 32], scales[MG_QK_K / 32];
    for (size_t b = 0; b < n / MG_QK_K; b++, x += MG_QK_K) {
        float max_scale = 0, max_min = 0;
        for (int j = 0; j < MG_QK_K / 32; j++) {
            const float *xj = x + 32 * j;
            float sum_x2 = 0;
            for (int l = 0; l < 32; l++) sum_x2 += xj[l] * xj[l];
            float av_x = sqrtf(sum_x2 / 32);
            for (int l = 0; l < 32; l++) w[l] = av_x + fabsf(xj[l]);
            scales[j] = fit_scale_min(32, 15, xj, w, L + 32 * j, &mins[j], Laux, -1.f, 0.1f, 20);
            if (scales[j] > max_scale) max_scale = scales[j];
            if (mins[j] > max_min) max_min = mins[j];
        }
        float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
        float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
        uint8_t *s = y[b].scales;
        for (int j = 0; j < MG_QK_K / 32; j++) {
            uint8_t ls = (uint8_t)nearest_int(inv_scale * scales[j]);
            uint8_t lm = (uint8_t)nearest_int(inv_min * mins[j]);
            ls = ls > 63 ? 63 : ls;
            lm = lm > 63 ? 63 : lm;
            if (j < 4) {
                s[j] = ls;
                s[j + 4] = lm;
            } else {
                s[j + 4] = (uint8_t)((ls & 15) | ((lm & 15) << 4));
                s[j - 4] |= (uint8_t)((ls >> 4) << 6);
                s[j] |= (uint8_t)((lm >> 4) << 6);
            }
        }
        y[b].d = mg_fp32_to_fp16(max_scale / 63.f);
        y[b].dmin = mg_fp32_to_fp16(max_min / 63.f);
        for (int j = 0; j < MG_QK_K / 32; j++) {
            uint8_t sc, m;
            q4k_scale_min(j, s, &sc, &m);
            float d = mg_fp16_to_fp32(y[b].d) * sc;
            if (d == 0.0f) continue; /* keeps the fit's L (they dequantize to -dmin m) */
            float dm = mg_fp16_to_fp32(y[b].dmin) * m;
            for (int l = 0; l < 32; l++)
                L[32 * j + l] = (uint8_t)clampi(nearest_int((x[32 * j + l] + dm) / d), 0, 15);
        }
        for (int g = 0; g < MG_QK_K / 64; g++)
            for (int l = 0; l < 32; l++)
                y[b].qs[32 * g + l] = (uint8_t)(L[64 * g + l] | (L[64 * g + 32 + l] << 4));
    }
}

void mg_dequantize_row_q4_K(const mg_block_q4_K *x, float *y, size_t n)
{
    for (size_t b = 0; b < n / MG_QK_K; b++) {
        float d = mg_fp16_to_fp32(x[b].d), dmin = mg_fp16_to_fp32(x[b].dmin);
        for (int g = 0; g < MG_QK_K / 64; g++) {
            uint8_t sc0, m0, sc1, m1;
            q4k_scale_min(2 * g, x[b].scales, &sc0, &m0);
            q4k_scale_min(2 * g + 1, x[b].scales, &sc1, &m1);
            float d0 = d * sc0, dm0 = dmin * m0, d1 = d * sc1, dm1 = dmin * m1;
            const uint8_t *q = x[b].qs + 32 * g;
            for (int l = 0; l < 32; l++) *y++ = d0 * (q[l] & 15) - dm0;
            for (int l = 0; l < 32; l++) *y++ = d1 * (q[l] >> 4) - dm1;
        }
    }
}

/* ------------------------------------------------------------------ q6_K */

/* Fit x[i] ~ scale * L[i], L[i] in -nmax..nmax-1, weights x^2 (ggml's make_qx_quants with
 * rmse_type 1): start from iscale = -nmax / m (m the value of largest magnitude, so m maps
 * to -nmax), take the least-squares scale sum w x L / sum w L^2, then try the 18 grids
 * iscale = -(nmax + 0.1 is) / m, is = -9..9 (not 0), and keep the one that maximizes
 * (sum w x L)^2 / sum w L^2 (the smallest squared error). L is stored + nmax. */
static float fit_scale_sym(int n, int nmax, const float *x, int8_t *L)
{
    const float max = max_by_magnitude(x, n);
    if (fabsf(max) < 1e-15f) {
        for (int i = 0; i < n; i++) L[i] = 0;
        return 0.f;
    }
    float iscale = -nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1);
        L[i] = (int8_t)(l + nmax);
        float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0) continue;
        iscale = -(nmax + 0.1f * is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; i++) {
            int l = clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1);
            float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++)
                L[i] = (int8_t)(nmax + clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1));
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* q6_K, per super-block of 256 = 16 sub-blocks of 16: each sub-block is fitted as
 * x ~ s_j (q - 32), q in 0..63 (fit_scale_sym with nmax 32); with S the s_j of largest
 * magnitude (sign kept), iscale = -128 / S, d = 1 / iscale (fp16) and the 8-bit scales
 * sc_j = min(127, round(iscale * s_j)); then every value is re-quantized against the stored
 * scales: q = clamp(round(x / (d sc_j)), -32, 31) + 32. A super-block whose scales are all
 * below 1e-15 in magnitude is stored as zeros. Dequantized: x = d * sc_j * (q - 32).
 * Layout, per half of 128 values (ql advances 64 bytes, qh 32): for l < 32, ql[l] holds the
 * low 4 bits of values l (low nibble) and l + 64 (high nibble), ql[l + 32] those of l + 32
 * and l + 96, and qh[l] the top 2 bits of l, l + 32, l + 64, l + 96 (bits 0-1, 2-3, 4-5,
 * 6-7). */
void mg_quantize_row_q6_K(const float *x, mg_block_q6_K *y, size_t n)
{
    int8_t L[MG_QK_K];
    float scales[MG_QK_K / 16];
    for (size_t b = 0; b < n / MG_QK_K; b++, x += MG_QK_K) {
        float max_scale = 0, max_abs_scale = 0;
        for (int j = 0; j < MG_QK_K / 16; j++) {
            scales[j] = fit_scale_sym(16, 32, x + 16 * j, L + 16 * j);
            if (fabsf(scales[j]) > max_abs_scale) {
                max_abs_scale = fabsf(scales[j]);
                max_scale = scales[j];
            }
        }
        if (max_abs_scale < 1e-15f) {
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        float iscale = -128.f / max_scale;
        y[b].d = mg_fp32_to_fp16(1 / iscale);
        for (int j = 0; j < MG_QK_K / 16; j++) {
            int v = nearest_int(iscale * scales[j]);
            y[b].scales[j] = (int8_t)(v > 127 ? 127 : v);
        }
        for (int j = 0; j < MG_QK_K / 16; j++) {
            float d = mg_fp16_to_fp32(y[b].d) * y[b].scales[j];
            if (d == 0.0f) continue; /* keeps the fit's L (they dequantize to 0) */
            for (int l = 0; l < 16; l++)
                L[16 * j + l] = (int8_t)(clampi(nearest_int(x[16 * j + l] / d), -32, 31) + 32);
        }
        for (int h = 0; h < 2; h++) {
            const int8_t *Lh = L + 128 * h;
            uint8_t *ql = y[b].ql + 64 * h, *qh = y[b].qh + 32 * h;
            for (int l = 0; l < 32; l++) {
                ql[l] = (uint8_t)((Lh[l] & 15) | ((Lh[l + 64] & 15) << 4));
                ql[l + 32] = (uint8_t)((Lh[l + 32] & 15) | ((Lh[l + 96] & 15) << 4));
                qh[l] = (uint8_t)((Lh[l] >> 4) | ((Lh[l + 32] >> 4) << 2) |
                                  ((Lh[l + 64] >> 4) << 4) | ((Lh[l + 96] >> 4) << 6));
            }
        }
    }
}

void mg_dequantize_row_q6_K(const mg_block_q6_K *x, float *y, size_t n)
{
    for (size_t b = 0; b < n / MG_QK_K; b++) {
        float d = mg_fp16_to_fp32(x[b].d);
        for (int h = 0; h < 2; h++, y += 128) {
            const uint8_t *ql = x[b].ql + 64 * h, *qh = x[b].qh + 32 * h;
            const int8_t *sc = x[b].scales + 8 * h;
            for (int l = 0; l < 32; l++) {
                int is = l / 16;
                int q1 = ((ql[l] & 15) | ((qh[l] & 3) << 4)) - 32;
                int q2 = ((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) - 32;
                int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l] = d * sc[is] * q1;
                y[l + 32] = d * sc[is + 2] * q2;
                y[l + 64] = d * sc[is + 4] * q3;
                y[l + 96] = d * sc[is + 6] * q4;
            }
        }
    }
}

/* ------------------------------------------------------------------ q8_K */

/* q8_K, per block of 256 (activations; d stays fp32): m = the value of largest magnitude,
 * iscale = -127 / m, q[j] = min(127, round(iscale x[j])) (so m maps to -127), d = 1 / iscale,
 * bsums[i] = sum of q[16 i .. 16 i + 15]; all zero when m = 0. Dequantized: x = d * q. */
void mg_quantize_row_q8_K(const float *x, mg_block_q8_K *y, size_t n)
{
    for (size_t b = 0; b < n / MG_QK_K; b++, x += MG_QK_K) {
        const float max = max_by_magnitude(x, MG_QK_K);
        memset(&y[b], 0, sizeof y[b]);
        if (max == 0.0f) continue;
        float iscale = -127.f / max;
        for (int j = 0; j < MG_QK_K; j++) {
            int v = nearest_int(iscale * x[j]);
            y[b].qs[j] = (int8_t)(v > 127 ? 127 : v);
        }
        for (int i = 0; i < MG_QK_K / 16; i++) {
            int sum = 0;
            for (int j = 0; j < 16; j++) sum += y[b].qs[16 * i + j];
            y[b].bsums[i] = (int16_t)sum;
        }
        y[b].d = 1 / iscale;
    }
}

void mg_dequantize_row_q8_K(const mg_block_q8_K *x, float *y, size_t n)
{
    for (size_t b = 0; b < n / MG_QK_K; b++, y += MG_QK_K)
        for (int j = 0; j < MG_QK_K; j++) y[j] = x[b].d * x[b].qs[j];
}

/* ------------------------------------------------------------------ by type */

static int check_row(uint32_t type, size_t n, const char *what)
{
    const mg_type_info *t = mg_type_info_of(type);
    if (!t || !t->is_float)
        return mg_seterr(MG_ERR_INVALID_ARG, "%s: type %u is not a float or quantized type",
                         what, type);
    if (n % t->blck != 0)
        return mg_seterr(MG_ERR_INVALID_ARG, "%s: %zu values are not a multiple of the %s"
                         " block (%u)", what, n, t->name, t->blck);
    return MG_OK;
}

int mg_quantize_row(uint32_t type, const float *x, void *y, size_t n)
{
    int rc = check_row(type, n, "mg_quantize_row");
    if (rc) return rc;
    uint16_t *h = y;
    switch (type) {
    case GGML_TYPE_F32: memcpy(y, x, n * sizeof(float)); break;
    case GGML_TYPE_F16: for (size_t i = 0; i < n; i++) h[i] = mg_fp32_to_fp16(x[i]); break;
    case GGML_TYPE_BF16: for (size_t i = 0; i < n; i++) h[i] = mg_fp32_to_bf16(x[i]); break;
    case GGML_TYPE_Q8_0: mg_quantize_row_q8_0(x, y, n); break;
    case GGML_TYPE_Q4_0: mg_quantize_row_q4_0(x, y, n); break;
    case GGML_TYPE_Q4_K: mg_quantize_row_q4_K(x, y, n); break;
    case GGML_TYPE_Q6_K: mg_quantize_row_q6_K(x, y, n); break;
    case GGML_TYPE_Q8_K: mg_quantize_row_q8_K(x, y, n); break;
    }
    return MG_OK;
}

int mg_dequantize_row(uint32_t type, const void *x, float *y, size_t n)
{
    int rc = check_row(type, n, "mg_dequantize_row");
    if (rc) return rc;
    switch (type) {
    case GGML_TYPE_F32: memcpy(y, x, n * sizeof(float)); break;
    case GGML_TYPE_F16: mg_kernels_scalar.f16_to_f32(x, y, n); break;
    case GGML_TYPE_BF16: mg_kernels_scalar.bf16_to_f32(x, y, n); break;
    case GGML_TYPE_Q8_0: mg_dequantize_row_q8_0(x, y, n); break;
    case GGML_TYPE_Q4_0: mg_dequantize_row_q4_0(x, y, n); break;
    case GGML_TYPE_Q4_K: mg_dequantize_row_q4_K(x, y, n); break;
    case GGML_TYPE_Q6_K: mg_dequantize_row_q6_K(x, y, n); break;
    case GGML_TYPE_Q8_K: mg_dequantize_row_q8_K(x, y, n); break;
    }
    return MG_OK;
}

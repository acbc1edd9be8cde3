/* quant-half.h - IEEE binary16 <-> binary32 in plain C, and the byte offsets of the block
 * fields, for the quantized kernels of every table (quant-*.c).
 *
 * The kernels take block arrays as bytes (const void *): blocks are read field by field with
 * memcpy at their offsets, so a block array may start at any address. */
#ifndef MG_QUANT_HALF_H
#define MG_QUANT_HALF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "blocks.h"

/* half -> float, exact for every input (subnormals, infinities; NaN payloads kept) */
static inline float mg_half_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31, e = (h >> 10) & 0x1f, m = h & 0x3ff, bits;
    if (e == 0) {
        if (m == 0) {
            bits = sign;
        } else { /* subnormal: normalize */
            e = 127 - 15 + 1;
            while (!(m & 0x400)) { m <<= 1; e--; }
            bits = sign | (e << 23) | ((m & 0x3ff) << 13);
        }
    } else if (e == 31) {
        bits = sign | 0x7f800000u | (m << 13);
    } else {
        bits = sign | ((e - 15 + 127) << 23) | (m << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* float -> half, rounded to nearest even (what F16C's vcvtps2ph and AArch64's fcvt give):
 * overflow to infinity, subnormal results rounded once, NaN stays NaN. */
static inline uint16_t mg_f32_to_half(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    const uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu)); /* NaN */
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* rounds to >= 2^16: inf */
    if (ax < 0x38800000u) { /* below 2^-14: a subnormal half (or zero) */
        if (ax < 0x33000000u) return (uint16_t)sign; /* below 2^-25: rounds to zero */
        const uint32_t e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u;
        const uint32_t shift = 126 - e; /* value = m 2^(e-150); half ulp 2^-24 */
        uint32_t q = m >> shift, rest = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rest > half || (rest == half && (q & 1))) q++;
        return (uint16_t)(sign | q);
    }
    uint32_t q = ((ax - 0x38000000u) >> 13), rest = ax & 0x1fffu; /* rebias 127 -> 15 */
    if (rest > 0x1000u || (rest == 0x1000u && (q & 1))) q++;
    return (uint16_t)(sign | q);
}

/* one half or float read from any address */
static inline float mg_ld_half(const uint8_t *p)
{
    uint16_t h;
    memcpy(&h, p, 2);
    return mg_half_to_f32(h);
}

/* block sizes and field offsets (blocks.h) */
#define MG_Q8_0_SIZE sizeof(mg_block_q8_0)
#define MG_Q4_0_SIZE sizeof(mg_block_q4_0)
#define MG_Q4_K_SIZE sizeof(mg_block_q4_K)
#define MG_Q6_K_SIZE sizeof(mg_block_q6_K)
#define MG_Q8_K_SIZE sizeof(mg_block_q8_K)

/* the 6-bit scale and min of sub-block j (0..7) of a q4_K block (ggml's get_scale_min_k4) */
static inline void mg_q4_K_scale_min(const uint8_t *scales, int j, int *sc, int *m)
{
    if (j < 4) {
        *sc = scales[j] & 63;
        *m = scales[j + 4] & 63;
    } else {
        *sc = (scales[j + 4] & 0xF) | ((scales[j - 4] >> 6) << 4);
        *m = (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4);
    }
}

#endif

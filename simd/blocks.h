/* blocks.h - the block layouts of the quantized weight types (the GGUF/ggml layouts, bit
 * for bit, so that other GGUF readers dequantize our files) and of the 8-bit activation
 * blocks that their dot products use. docs/quantization.md states each type's math;
 * lib/quant.c holds the reference quantizers and dequantizers, simd/ the dot products.
 *
 * Every scale stored as "half" is an IEEE binary16 value in a uint16_t. */
#ifndef MG_BLOCKS_H
#define MG_BLOCKS_H

#include <stdint.h>

#define MG_QK8_0 32 /* values per q8_0 / q4_0 block */
#define MG_QK4_0 32
#define MG_QK_K 256 /* values per super-block of the k-quants (q4_K, q6_K, q8_K) */

/* q8_0: x[j] = d * qs[j]. 34 bytes per 32 values. */
typedef struct {
    uint16_t d; /* half */
    int8_t qs[MG_QK8_0];
} mg_block_q8_0;

/* q4_0: x[j] = d * ((qs[j] & 15) - 8), x[j + 16] = d * ((qs[j] >> 4) - 8), j < 16.
 * 18 bytes per 32 values. */
typedef struct {
    uint16_t d; /* half */
    uint8_t qs[MG_QK4_0 / 2];
} mg_block_q4_0;

/* q4_K: 8 sub-blocks of 32 values, each with a 6-bit scale sc and a 6-bit min m packed in
 * scales[12]; x = d * sc * q - dmin * m, q a 4-bit value (qs: 64-value groups, low nibbles
 * the first 32, high nibbles the next 32). 144 bytes per 256 values. */
typedef struct {
    uint16_t d;    /* half: super-block scale of the scales */
    uint16_t dmin; /* half: super-block scale of the mins */
    uint8_t scales[12];
    uint8_t qs[MG_QK_K / 2];
} mg_block_q4_K;

/* q6_K: 16 sub-blocks of 16 values with 8-bit signed scales; x = d * scales[s] * (q - 32),
 * q a 6-bit value (low 4 bits in ql, high 2 bits in qh). 210 bytes per 256 values. */
typedef struct {
    uint8_t ql[MG_QK_K / 2];
    uint8_t qh[MG_QK_K / 4];
    int8_t scales[MG_QK_K / 16];
    uint16_t d; /* half */
} mg_block_q6_K;

/* q8_K: the activation blocks of the k-quant dot products (not a weight type in files):
 * x[j] = d * qs[j], bsums[i] = sum of qs[16 i .. 16 i + 15]. */
typedef struct {
    float d;
    int8_t qs[MG_QK_K];
    int16_t bsums[MG_QK_K / 16];
} mg_block_q8_K;

_Static_assert(sizeof(mg_block_q8_0) == 34, "q8_0 block layout");
_Static_assert(sizeof(mg_block_q4_0) == 18, "q4_0 block layout");
_Static_assert(sizeof(mg_block_q4_K) == 144, "q4_K block layout");
_Static_assert(sizeof(mg_block_q6_K) == 210, "q6_K block layout");

#endif

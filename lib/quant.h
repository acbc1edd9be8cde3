/* quant.h - the tensor element types of GGUF files (the ggml numbering and block layouts,
 * bit for bit) and their reference conversions from and to fp32.
 *
 * A type stores its values in blocks: `blck` consecutive values of a row take `bytes` bytes
 * (plain types such as f32 have blck = 1). A row of n values therefore takes
 * n / blck * bytes bytes, and n must be a multiple of blck. The block structs are in
 * simd/blocks.h; docs/quantization.md states each type's math, as the comments in quant.c do.
 *
 * The quantizers here are the definitions: they give the same bytes as ggml's reference
 * quantizers (quantize_row_*_ref), and the dequantizers the same floats as ggml's. */
#ifndef MG_QUANT_H
#define MG_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "blocks.h"
#include "megalodon.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    uint32_t type;    /* enum ggml_type */
    const char *name; /* ggml's name: "f32", "q8_0", "q4_K", ... */
    uint32_t blck;    /* values per block (1 for plain types) */
    uint32_t bytes;   /* bytes per block */
    int is_float;     /* converts from and to fp32 (mg_quantize_row / mg_dequantize_row) */
} mg_type_info;

/* The row of the type table for a ggml type id, NULL if the type is not supported. */
const mg_type_info *mg_type_info_of(uint32_t type);
/* The ggml type id of a name ("q4_K", case-insensitive), or -1. */
int mg_type_by_name(const char *name);
/* Is the type a block-quantized one (blck > 1)? 0 for unsupported types. */
int mg_type_is_quantized(uint32_t type);
/* Bytes of a row of n values, 0 if the type is unsupported or n is not a multiple of its
 * block. */
size_t mg_row_size(uint32_t type, uint64_t n);

/* The type a matrix with rows of n values takes when `type` is wanted: `type` itself if n
 * is a multiple of its block, else the first that fits along q4_K -> q4_0 -> q8_0 -> f16 and
 * q6_K -> q8_0 -> f16 (f16, bf16 and f32 always fit). */
uint32_t mg_type_fallback(uint32_t type, uint64_t n);

/* The rule of the recipes of mg_model_quantize (docs/quantization.md) for one tensor of a
 * Megalodon model: 1 if the tensor is one of the large matrices that the recipe converts
 * (the 2-D token_embd.weight, output.weight and blk.N.{attn_z,attn_v,attn_r,attn_h1,attn_h2,
 * ffn_up,ffn_gate,ffn_down}.weight), with *wanted the recipe's type for it (q4_k_m: q6_K for
 * the output head, attn_v and ffn_down, q4_K for the others) and *type the type it is stored
 * in (mg_type_fallback of *wanted for rows of ne[0] values); 0, with *type and *wanted
 * unchanged, for any other tensor (the recipe leaves it as it is). `tied`: the model has no
 * output.weight, so that token_embd.weight is the output head. type, wanted may be NULL. */
int mg_recipe_tensor_type(mg_ftype ftype, const char *name, uint32_t n_dims,
                          const uint64_t *ne, int tied, uint32_t *type, uint32_t *wanted);

/* fp32 -> fp16, round to nearest even (as the F16C instruction): overflow gives inf,
 * subnormal results are rounded exactly, NaN stays NaN (quiet, top payload bits kept). */
uint16_t mg_fp32_to_fp16(float f);
float mg_fp16_to_fp32(uint16_t h);
/* fp32 -> bf16, round to nearest even; a NaN is made quiet (ggml's conversion). */
uint16_t mg_fp32_to_bf16(float f);
float mg_bf16_to_fp32(uint16_t h);

/* Reference quantizers: n values of x (n a multiple of the block) into n / blck blocks. */
void mg_quantize_row_q8_0(const float *x, mg_block_q8_0 *y, size_t n);
void mg_quantize_row_q4_0(const float *x, mg_block_q4_0 *y, size_t n);
void mg_quantize_row_q4_K(const float *x, mg_block_q4_K *y, size_t n);
void mg_quantize_row_q6_K(const float *x, mg_block_q6_K *y, size_t n);
void mg_quantize_row_q8_K(const float *x, mg_block_q8_K *y, size_t n);

void mg_dequantize_row_q8_0(const mg_block_q8_0 *x, float *y, size_t n);
void mg_dequantize_row_q4_0(const mg_block_q4_0 *x, float *y, size_t n);
void mg_dequantize_row_q4_K(const mg_block_q4_K *x, float *y, size_t n);
void mg_dequantize_row_q6_K(const mg_block_q6_K *x, float *y, size_t n);
void mg_dequantize_row_q8_K(const mg_block_q8_K *x, float *y, size_t n);

/* Any float type (f32, f16, bf16 and the block types): n values of x into the type's bytes
 * at y / from the bytes at x into n floats. MG_OK, or MG_ERR_INVALID_ARG (message set) for a
 * type that is not a float type or an n that is not a multiple of its block. */
int mg_quantize_row(uint32_t type, const float *x, void *y, size_t n);
int mg_dequantize_row(uint32_t type, const void *x, float *y, size_t n);

#ifdef __cplusplus
}
#endif
#endif

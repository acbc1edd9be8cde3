/* table-impl.h - the kernel table of one instruction set, written once for every table: a
 * file that defines each kernel of struct mg_kernels (kernels.h) under the field's own name,
 * as a static function, includes this after them with
 *   MG_TABLE       the table's name, e.g. mg_kernels_avx2
 *   MG_TABLE_NAME  its .name, e.g. "avx2"
 *   MG_QUANT(f)    the name of its quantized-weight kernel f (quant-kernels.h), e.g.
 *                  mg_avx2_##f: those are written once in quant-impl.h and exported from
 *                  each ISA's quant-*.c */
#ifndef MG_TABLE_IMPL_H
#define MG_TABLE_IMPL_H

#include "quant-kernels.h"

const mg_kernels MG_TABLE = {
    .name = MG_TABLE_NAME,
    .rms_norm = rms_norm,
    .layer_norm = layer_norm,
    .timestep_norm = timestep_norm,
    .cema_scan = cema_scan,
    .complex_mul = complex_mul,
    .rope = rope,
    .softmax = softmax,
    .silu = silu,
    .mul = mul,
    .add = add,
    .affine_rows = affine_rows,
    .scale = scale,
    .f16_to_f32 = f16_to_f32,
    .bf16_to_f32 = bf16_to_f32,
    .silu_backward = silu_backward,
    .cross_entropy_row = cross_entropy_row,
    .adamw = adamw,
    .tsnorm_bwd_sums = tsnorm_bwd_sums,
    .tsnorm_bwd_dx = tsnorm_bwd_dx,
    .rms_norm_backward_row = rms_norm_backward_row,
    .layer_norm_backward_row = layer_norm_backward_row,
    .quantize_q8_0 = MG_QUANT(quantize_q8_0),
    .quantize_q8_K = MG_QUANT(quantize_q8_K),
    .dot_f16 = MG_QUANT(dot_f16),
    .dot_bf16 = MG_QUANT(dot_bf16),
    .dot2_f16 = MG_QUANT(dot2_f16),
    .dot2_bf16 = MG_QUANT(dot2_bf16),
    .dot_q8_0 = MG_QUANT(dot_q8_0),
    .dot_q4_0 = MG_QUANT(dot_q4_0),
    .dot_q4_K = MG_QUANT(dot_q4_K),
    .dot_q6_K = MG_QUANT(dot_q6_K),
    .dequant_q8_0 = MG_QUANT(dequant_q8_0),
    .dequant_q4_0 = MG_QUANT(dequant_q4_0),
    .dequant_q4_K = MG_QUANT(dequant_q4_K),
    .dequant_q6_K = MG_QUANT(dequant_q6_K),
};

#endif

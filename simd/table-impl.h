/* table-impl.h - the kernel table of one instruction set, written once for every table: a
 * file that defines each kernel of struct mg_kernels (kernels.h) under the field's own name,
 * as a static function, includes this after them with
 *   MG_TABLE       the table's name, e.g. mg_kernels_avx2
 *   MG_TABLE_NAME  its .name, e.g. "avx2" */
#ifndef MG_TABLE_IMPL_H
#define MG_TABLE_IMPL_H

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
};

#endif

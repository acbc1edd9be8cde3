/* quant-kernels.h - the quantized kernels of each table (kernels.h states their math), one
 * file per instruction set (quant-<isa>.c, the SIMD ones written once in quant-impl.h), for
 * the tables' initializers in scalar.c, avx2.c, avx512.c and neon.c. */
#ifndef MG_QUANT_KERNELS_H
#define MG_QUANT_KERNELS_H

#include <stdint.h>

/* scalar (quant-scalar.c) */
void mg_scalar_quantize_q8_0(const float *x, void *y, int n);
void mg_scalar_quantize_q8_K(const float *x, void *y, int n);
float mg_scalar_dot_f16(const uint16_t *w, const float *x, int n);
float mg_scalar_dot_bf16(const uint16_t *w, const float *x, int n);
float mg_scalar_dot_q8_0(const void *w, const void *xq, int n);
float mg_scalar_dot_q4_0(const void *w, const void *xq, int n);
float mg_scalar_dot_q4_K(const void *w, const void *xq, int n);
float mg_scalar_dot_q6_K(const void *w, const void *xq, int n);
void mg_scalar_dequant_q8_0(const void *w, float *y, int64_t n);
void mg_scalar_dequant_q4_0(const void *w, float *y, int64_t n);
void mg_scalar_dequant_q4_K(const void *w, float *y, int64_t n);
void mg_scalar_dequant_q6_K(const void *w, float *y, int64_t n);

/* avx2 (quant-avx2.c) */
void mg_avx2_quantize_q8_0(const float *x, void *y, int n);
void mg_avx2_quantize_q8_K(const float *x, void *y, int n);
float mg_avx2_dot_f16(const uint16_t *w, const float *x, int n);
float mg_avx2_dot_bf16(const uint16_t *w, const float *x, int n);
float mg_avx2_dot_q8_0(const void *w, const void *xq, int n);
float mg_avx2_dot_q4_0(const void *w, const void *xq, int n);
float mg_avx2_dot_q4_K(const void *w, const void *xq, int n);
float mg_avx2_dot_q6_K(const void *w, const void *xq, int n);
void mg_avx2_dequant_q8_0(const void *w, float *y, int64_t n);
void mg_avx2_dequant_q4_0(const void *w, float *y, int64_t n);
void mg_avx2_dequant_q4_K(const void *w, float *y, int64_t n);
void mg_avx2_dequant_q6_K(const void *w, float *y, int64_t n);

/* avx512 (quant-avx512.c) */
void mg_avx512_quantize_q8_0(const float *x, void *y, int n);
void mg_avx512_quantize_q8_K(const float *x, void *y, int n);
float mg_avx512_dot_f16(const uint16_t *w, const float *x, int n);
float mg_avx512_dot_bf16(const uint16_t *w, const float *x, int n);
float mg_avx512_dot_q8_0(const void *w, const void *xq, int n);
float mg_avx512_dot_q4_0(const void *w, const void *xq, int n);
float mg_avx512_dot_q4_K(const void *w, const void *xq, int n);
float mg_avx512_dot_q6_K(const void *w, const void *xq, int n);
void mg_avx512_dequant_q8_0(const void *w, float *y, int64_t n);
void mg_avx512_dequant_q4_0(const void *w, float *y, int64_t n);
void mg_avx512_dequant_q4_K(const void *w, float *y, int64_t n);
void mg_avx512_dequant_q6_K(const void *w, float *y, int64_t n);

/* neon (quant-neon.c) */
void mg_neon_quantize_q8_0(const float *x, void *y, int n);
void mg_neon_quantize_q8_K(const float *x, void *y, int n);
float mg_neon_dot_f16(const uint16_t *w, const float *x, int n);
float mg_neon_dot_bf16(const uint16_t *w, const float *x, int n);
float mg_neon_dot_q8_0(const void *w, const void *xq, int n);
float mg_neon_dot_q4_0(const void *w, const void *xq, int n);
float mg_neon_dot_q4_K(const void *w, const void *xq, int n);
float mg_neon_dot_q6_K(const void *w, const void *xq, int n);
void mg_neon_dequant_q8_0(const void *w, float *y, int64_t n);
void mg_neon_dequant_q4_0(const void *w, float *y, int64_t n);
void mg_neon_dequant_q4_K(const void *w, float *y, int64_t n);
void mg_neon_dequant_q6_K(const void *w, float *y, int64_t n);

#endif

/* quant-kernels.h - the quantized kernels of one table (kernels.h states their math), under
 * the names MG_QUANT(f) that the including file defines first (e.g. mg_avx2_##f). One file
 * per instruction set holds them (quant-scalar.c the definition; the SIMD ones are written once
 * in quant-impl.h, which ends with these functions and which avx2.c, avx512.c and neon.c
 * include); table-impl.h includes this
 * for the tables' initializers in scalar.c, avx2.c, avx512.c and neon.c. No include guard:
 * a file includes it once, for its own table. */
#include <stdint.h>

void MG_QUANT(quantize_q8_0)(const float *x, void *y, int n);
void MG_QUANT(quantize_q8_K)(const float *x, void *y, int n);
float MG_QUANT(dot_f16)(const uint16_t *w, const float *x, int n);
float MG_QUANT(dot_bf16)(const uint16_t *w, const float *x, int n);
void MG_QUANT(dot2_f16)(const uint16_t *w0, const uint16_t *w1, const float *x, int n, float out[2]);
void MG_QUANT(dot2_bf16)(const uint16_t *w0, const uint16_t *w1, const float *x, int n, float out[2]);
float MG_QUANT(dot_q8_0)(const void *w, const void *xq, int n);
float MG_QUANT(dot_q4_0)(const void *w, const void *xq, int n);
float MG_QUANT(dot_q4_K)(const void *w, const void *xq, int n);
float MG_QUANT(dot_q6_K)(const void *w, const void *xq, int n);
void MG_QUANT(dequant_q8_0)(const void *w, float *y, int64_t n);
void MG_QUANT(dequant_q4_0)(const void *w, float *y, int64_t n);
void MG_QUANT(dequant_q4_K)(const void *w, float *y, int64_t n);
void MG_QUANT(dequant_q6_K)(const void *w, float *y, int64_t n);

/* vf-arith.h - the lane-by-lane fp32 arithmetic of the vector vocabulary (train-impl.h),
 * written once for every ISA: vf is a vector type of the compiler in every table (__m256,
 * __m512, float32x4_t), and GCC and Clang define +, -, * and / on those lane by lane as the
 * IEEE operations, which is how their headers write _mm256_add_ps, _mm512_mul_ps, vaddq_f32,
 * vdivq_f32 and the others. Each operation stays a function of its own, so that no a b + c
 * of an impl header can be contracted into a fused multiply-add where a table does not
 * write one.
 *
 * An ISA file includes this after its typedef of vf. */
#ifndef MG_VF_ARITH_H
#define MG_VF_ARITH_H

static inline vf vf_add(vf a, vf b) { return a + b; }
static inline vf vf_sub(vf a, vf b) { return a - b; }
static inline vf vf_mul(vf a, vf b) { return a * b; }
static inline vf vf_div(vf a, vf b) { return a / b; }

#endif

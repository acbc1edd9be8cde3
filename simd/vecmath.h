/* vecmath.h - constants of the vectorized exp and sin/cos shared by the x86 kernel tables
 * (avx2.c, avx512.c). No intrinsics here: each table includes this and writes the algorithm
 * with its own vector width, and the two compute bit-identical exp and sin/cos.
 *
 * exp(x), fp32:
 *   x is clamped to [MG_EXP_XMIN, MG_EXP_XMAX] (NaN passes through);
 *   n = round(x log2 e);  r = x - n MG_EXP_C1 - n MG_EXP_C2     (two FMAs; |r| <~ ln2/2)
 *   e^r ~ 1 + r + r^2 (((((P0 r + P1) r + P2) r + P3) r + P4) r + P5)      (Cephes expf)
 *   exp(x) = e^r 2^n with a single rounding of the scaling (AVX2: (e^r 2^(n>>1)) 2^(n-(n>>1));
 *   AVX-512: vscalefps), so results overflow to +inf from ~88.72 on and underflow gradually
 *   (subnormals) below ~-87.34, to 0 below ~-103.97; exp(NaN) = NaN, exp(-inf) = 0.
 *   Maximum relative error against exp in double over EVERY fp32 in [-87, 88] (2.2e9 values,
 *   measured): 8.46e-8, under one ulp. Subnormal results are within 2^-149 of the truth.
 *   tests/test-kernels.c checks < 1e-7 on a dense sweep, and the special values.
 *
 * silu(x) = x / (1 + exp(-x)), that exp and an IEEE division: maximum relative error 1.75e-7
 *   over every fp32 in [-80, 80] with |silu(x)| > 1e-37 (the scalar table with glibc's expf
 *   measures the same 1.75e-7: the error is the rounding of 1 + exp(-x)); tested < 2e-7.
 *
 * silu'(x) = s (1 + x (1 - s)), s = 1 / (1 + exp(-x)) (silu_backward), that exp, an IEEE division
 *   and the reference's fp32 operations: absolute error 9.75e-7 over [-80, 80] (at x = 16.6),
 *   the same as the scalar table with glibc's expf (the rounding of 1 - s); tested < 1.2e-6.
 *
 * sin, cos (rope), fp32 angle th with |th| <= MG_TRIG_XMAX (a larger one goes to libm):
 *   k = round(th 2/pi);  r = th - k PIO2_1 - k PIO2_2 - k PIO2_3   (three FMAs, pi/2 split in
 *   three floats: r is exact to ~1 ulp of |r| <~ pi/4 for |k| < 2^22)
 *   sin r ~ r + r^3 ((S0 z + S1) z + S2),  cos r ~ 1 - z/2 + z^2 ((K0 z + K1) z + K2), z = r^2
 *   (Cephes sinf/cosf), then the quadrant k mod 4 swaps and negates them.
 *   Maximum absolute error against sin/cos in double over EVERY fp32 in [1e-30, 2^20]
 *   (1.0e9 values, measured): 1.23e-7 (glibc sinf/cosf: 3.3e-8); tested < 2e-7. */
#ifndef MG_VECMATH_H
#define MG_VECMATH_H

#define MG_EXP_XMAX 89.0f     /* e^89 > FLT_MAX: +inf from here on */
#define MG_EXP_XMIN (-104.0f) /* e^-104 < 2^-150: 0 from here on */
#define MG_LOG2E 1.44269504088896341f
#define MG_EXP_C1 0.693359375f     /* ln 2 = C1 + C2; C1 has 9 significant bits */
#define MG_EXP_C2 (-2.12194440e-4f)
#define MG_EXP_P0 1.9875691500e-4f
#define MG_EXP_P1 1.3981999507e-3f
#define MG_EXP_P2 8.3334519073e-3f
#define MG_EXP_P3 4.1665795894e-2f
#define MG_EXP_P4 1.6666665459e-1f
#define MG_EXP_P5 5.0000001201e-1f

#define MG_TRIG_XMAX 1048576.0f /* 2^20 */
#define MG_2_PI 0.636619772367581343f
#define MG_PIO2_1 1.5707963705062866f        /* 0x3fc90fdb */
#define MG_PIO2_2 (-4.3711388286737929e-08f) /* 0xb33bbd2e */
#define MG_PIO2_3 (-1.7151245100058819e-15f) /* 0xa6f72ced */
#define MG_SIN_S0 (-1.9515295891e-4f)
#define MG_SIN_S1 8.3321608736e-3f
#define MG_SIN_S2 (-1.6666654611e-1f)
#define MG_COS_K0 2.443315711809948e-5f
#define MG_COS_K1 (-1.388731625493765e-3f)
#define MG_COS_K2 4.166664568298827e-2f

#endif

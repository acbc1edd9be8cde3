/* vecmath.h - constants of the vectorized exp and sincos shared by the x86 kernel tables
 * (avx2.c, avx512.c). No intrinsics here: each table includes this and writes the
 * algorithm with its own vector width, so the two compute bit-identical results.
 *
 * exp(x), fp32:
 *   x is clamped to [MG_EXP_XMIN, MG_EXP_XMAX] (NaN passes through);
 *   n = round(x * log2(e));  r = x - n*MG_EXP_C1 - n*MG_EXP_C2   (two FMAs; |r| <~ ln2/2)
 *   e^r ~ 1 + r + r^2 (P0 r^5 + P1 r^4 + P2 r^3 + P3 r^2 + P4 r + P5)   (Cephes expf)
 *   exp(x) = e^r * 2^n, the scaling rounded once (AVX2: * 2^(n>>1) * 2^(n-(n>>1)); AVX-512:
 *   vscalefps), so results overflow to +inf above ~88.72 and go gradually subnormal below
 *   ~-87.34, down to 0 below ~-103.97.
 *   Maximum relative error against exp computed in double, measured over every fp32 in
 *   [-87, 88]: 1.43e-7 (about 1.2 ulp). tests/test-kernels.c checks < MG_EXP_MAX_REL_ERR on a
 *   dense sweep.
 *
 * silu(x) = x / (1 + exp(-x)) with that exp and an IEEE division: max relative error
 *   2.3e-7 over [-80, 80] (tested < MG_SILU_MAX_REL_ERR).
 *
 * sin/cos(th), fp32, |th| <= MG_TRIG_XMAX (larger angles take the scalar libm path):
 *   k = round(th * 2/pi);  r = th - k*MG_PIO2_1 - k*MG_PIO2_2 - k*MG_PIO2_3   (three FMAs,
 *   pi/2 split into three floats, so r is accurate to ~1 ulp of |r| <~ pi/4 for |k| < 2^22)
 *   sin r ~ r + r^3 (S2 + S1 r^2 + S0 r^4), cos r ~ 1 - r^2/2 + r^4 (K2 + K1 r^2 + K0 r^4)
 *   (Cephes sinf/cosf), then the quadrant k mod 4 swaps and negates.
 *   Maximum absolute error against double sin/cos: 1.2e-7 over |th| <= 2^20 (tested through
 *   rope against the double formula, < 1e-6 on values of magnitude ~1). */
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
#define MG_EXP_MAX_REL_ERR 2e-7
#define MG_SILU_MAX_REL_ERR 3e-7

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

/* test-neon-exp - checks of simd/neon.c that test-kernels does not make; AArch64 only (run by
 * tests/cross/run-neon-tests.sh under qemu-aarch64).
 *  1. v_exp, the vector exp behind silu and softmax, against double exp(): at most 2 ulp for
 *     normal results (the bound stated in neon.c), one subnormal ulp (2^-149) below FLT_MIN,
 *     +inf where expf overflows, +0 far below, NaN for NaN; on every 1021st float of [-104, 89],
 *     every float near 0 and near the overflow and underflow thresholds, and special values.
 *  2. silu against double x / (1 + exp(-x)): at most 4 ulp (relative 4.8e-7) on [-87, 89].
 *  3. f16_to_f32 and bf16_to_f32 bit for bit against the scalar table for all 65536 inputs,
 *     vector body and scalar tail (odd offsets and lengths).
 * neon.c is included so that its static v_exp can be called; link with simd/scalar.c. */
#include "neon.c"

#include <float.h>
#include <stdio.h>
#include <stdlib.h>

static int failures = 0;
static double worst_ulp = 0, worst_sub = 0, worst_silu = 0;
static float worst_x = 0, worst_silu_x = 0;

static float from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* error of y against the exact value e in units of the last place of e as a float */
static double ulp_err(float y, double e)
{
    int ex;
    frexp(e, &ex); /* e = m 2^ex, 0.5 <= m < 1: ulp = 2^(ex - 24) */
    double ulp = ldexp(1.0, ex - 24 < -149 ? -149 : ex - 24);
    return fabs((double)y - e) / ulp;
}

static void check_exp4(const float *x)
{
    float y[4];
    vst1q_f32(y, v_exp(vld1q_f32(x)));
    for (int k = 0; k < 4; k++) {
        double e = exp((double)x[k]);
        int ok;
        if (isnan(x[k])) {
            ok = isnan(y[k]);
        } else if (isinf((float)e)) {
            ok = isinf(y[k]) && y[k] > 0;
        } else if (e < FLT_MIN) {
            double d = fabs((double)y[k] - e) / ldexp(1.0, -149);
            if (d > worst_sub) worst_sub = d;
            ok = d <= 1.0 && !signbit(y[k]);
        } else {
            double d = ulp_err(y[k], e);
            if (d > worst_ulp) { worst_ulp = d; worst_x = x[k]; }
            ok = d <= 2.0;
        }
        if (!ok && failures++ < 10)
            fprintf(stderr, "FAIL: v_exp(%a) = %a, exp = %a\n", (double)x[k], (double)y[k], e);
    }
}

/* all floats with bit patterns in [lo, hi] (one sign), every stride-th */
static void sweep(uint32_t lo, uint32_t hi, uint32_t stride, int check_silu)
{
    float x[4];
    int k = 0;
    for (uint64_t u = lo; u <= hi; u += stride) {
        x[k++] = from_bits((uint32_t)u);
        if (k == 4) {
            check_exp4(x);
            if (check_silu) {
                float y[4];
                silu(x, y, 4);
                for (int j = 0; j < 4; j++) {
                    if (isinf((float)exp(-(double)x[j]))) continue; /* silu = x / inf = -0 */
                    double e = x[j] / (1.0 + exp(-(double)x[j]));
                    double d = fabs(e) < FLT_MIN ? 0 : ulp_err(y[j], e);
                    if (d > worst_silu) { worst_silu = d; worst_silu_x = x[j]; }
                    if (d > 4.0 && failures++ < 10)
                        fprintf(stderr, "FAIL: silu(%a) = %a, exact %a\n", (double)x[j],
                                (double)y[j], e);
                }
            }
            k = 0;
        }
    }
}

static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static void check_conversions(void)
{
    static uint16_t h[65536 + 8];
    static float a[65536 + 8], b[65536 + 8];
    for (int i = 0; i < 65536; i++) h[i] = (uint16_t)i;
    for (int i = 65536; i < 65536 + 8; i++) h[i] = (uint16_t)(0x7c01 + i); /* NaNs */
    const size_t offs[] = {0, 1, 3, 5}, lens[] = {65536, 65535, 65533, 7};
    for (int pass = 0; pass < 2; pass++)
        for (int j = 0; j < 4; j++) {
            memset(a, 0, sizeof a);
            memset(b, 0xff, sizeof b);
            if (pass == 0) {
                mg_kernels_scalar.f16_to_f32(h + offs[j], a, lens[j]);
                mg_kernels_neon.f16_to_f32(h + offs[j], b, lens[j]);
            } else {
                mg_kernels_scalar.bf16_to_f32(h + offs[j], a, lens[j]);
                mg_kernels_neon.bf16_to_f32(h + offs[j], b, lens[j]);
            }
            size_t bad = 0, first = 0;
            for (size_t i = 0; i < lens[j]; i++)
                if (bits_of(a[i]) != bits_of(b[i]) && !bad++) first = i;
            if (bad) {
                failures++;
                fprintf(stderr, "FAIL: %s offset %zu length %zu: %zu values differ, first "
                        "input 0x%04x: 0x%08x vs scalar 0x%08x\n", pass ? "bf16" : "f16",
                        offs[j], lens[j], bad, h[offs[j] + first], bits_of(b[first]),
                        bits_of(a[first]));
            }
        }
    printf("f16_to_f32, bf16_to_f32: all 65536 inputs bit-exact against the scalar table\n");
}

int main(void)
{
    /* positive floats up to 89 and negative ones down to -104 */
    uint32_t top = bits_of(89.0f), bottom = bits_of(-104.0f);
    sweep(0, top, 1021, 1);
    sweep(0x80000000u, bottom, 1021, 1);
    /* every 13th float of |x| in [2^-12, 2^-11], every float near the thresholds */
    sweep(bits_of(0x1p-12f), bits_of(0x1p-11f), 13, 0);
    sweep(bits_of(-0x1p-12f), bits_of(-0x1p-11f), 13, 0);
    sweep(bits_of(88.5f), bits_of(89.0f), 1, 0);
    sweep(bits_of(-87.5f), bits_of(-87.2f), 1, 0);
    sweep(bits_of(-104.0f), bits_of(-103.5f), 1, 0);
    /* every float in the range of silu's inputs in practice */
    sweep(bits_of(1.0f), bits_of(1.01f), 1, 1);
    sweep(bits_of(-1.0f), bits_of(-1.01f), 1, 1);
    const float special[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, -NAN, FLT_MAX, -FLT_MAX,
                             1e30f, -1e30f, 88.72283f, 88.72284f, -103.97208f, -103.97209f,
                             FLT_MIN, -FLT_MIN, 0x1p-149f, 1.0f, -1.0f, 0.5f};
    for (size_t i = 0; i + 4 <= sizeof special / sizeof special[0]; i += 4)
        check_exp4(special + i);
    float s0[4];
    vst1q_f32(s0, v_exp(vdupq_n_f32(0.0f)));
    if (s0[0] != 1.0f && failures++ < 10) fprintf(stderr, "FAIL: v_exp(0) = %a\n", (double)s0[0]);
    printf("v_exp: max error %.3f ulp (relative %.3g) at x = %.9g for normal results "
           "(bound 2), %.3f ulp of 2^-149 for subnormal ones (bound 1)\n",
           worst_ulp, worst_ulp * 0x1p-23, (double)worst_x, worst_sub);
    printf("silu: max error %.3f ulp at x = %.9g (bound 4)\n", worst_silu, (double)worst_silu_x);

    check_conversions();
    printf("test-neon-exp: %s\n", failures ? "FAILED" : "passed");
    return failures ? 1 : 0;
}

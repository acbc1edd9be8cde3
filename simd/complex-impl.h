/* complex-impl.h - complex_mul and the rotary embedding (rope) of a SIMD kernel table, written
 * once for every ISA (scalar.c, the reference, has its own plain C; kernels.h states the
 * math). Both work on interleaved (re, im) pairs, VF / 2 pairs per vector.
 *
 * A product a b + c is formed by vf_muladdsub, which fuses it where the table does (x86:
 * one rounding) and rounds the product and the sum separately where it does not (NEON: then
 * every lane is the reference's fp32 expression, bit for bit). The tail is a partial vector.
 *
 * An ISA file includes this after elementwise-impl.h (map2) and the vocabulary of
 * train-impl.h (VF, vf, vf_set1, vf_mul, vf_load, vf_store, vf_load_part, vf_store_part)
 * and, with its own intrinsics:
 *   vf vf_dup_even(vf v);       (v0, v0, v2, v2, ...): the real part over each pair
 *   vf vf_dup_odd(vf v);        (v1, v1, v3, v3, ...): the imaginary part over each pair
 *   vf vf_swap_pairs(vf v);     (v1, v0, v3, v2, ...)
 *   vf vf_muladdsub(vf a, vf b, vf c);   even lanes a b - c, odd lanes a b + c
 *   void vf_dup_pairs(vf v, vf *lo, vf *hi);   lo = (v0, v0, v1, v1, ...), hi: the lanes
 *                               from VF / 2 on, each twice
 *   void vf_sincos(vf th, vf *s, vf *c);       sin and cos of every lane (x86: vecmath.h,
 *                               libm's sinf/cosf where an angle is too large; NEON: libm) */
#ifndef MG_COMPLEX_IMPL_H
#define MG_COMPLEX_IMPL_H

/* (ar + i ai)(br + i bi) = (ar br - ai bi) + i (ai br + ar bi) on VF / 2 pairs */
static inline vf cmul_v(vf a, vf b)
{
    return vf_muladdsub(a, vf_dup_even(b), vf_mul(vf_swap_pairs(a), vf_dup_odd(b)));
}

/* y[i] = a[i] b[i], n complex numbers (y may alias a) */
static void complex_mul(const float *a, const float *b, float *y, int n)
{
    map2(cmul_v, a, b, y, 2 * (size_t)n); /* 2n floats: a vector holds whole pairs */
}

/* (a + i b)(c + i s) = (a c - b s) + i (b c + a s) on VF / 2 pairs */
static inline vf rot_v(vf x, vf c, vf s)
{
    return vf_muladdsub(x, c, vf_mul(vf_swap_pairs(x), s));
}

/* (x[2i] + i x[2i+1]) exp(i th), th = pos freqs[i] formed in fp32 as the reference does:
 * VF angles at a time, over two vectors of pairs */
static void rope(float *x, int dh, int pos, const float *freqs)
{
    const int half = dh / 2;
    const vf vpos = vf_set1((float)pos);
    for (int i = 0; i < half; i += VF) {
        const int np = half - i < VF ? half - i : VF; /* pairs in this block */
        const int k0 = 2 * np < VF ? 2 * np : VF, k1 = 2 * np - k0; /* floats of each half */
        vf s, c, s0, s1, c0, c1;
        const vf f = np == VF ? vf_load(freqs + i) : vf_load_part(freqs + i, np);
        vf_sincos(vf_mul(vpos, f), &s, &c);
        vf_dup_pairs(c, &c0, &c1);
        vf_dup_pairs(s, &s0, &s1);
        float *xa = x + 2 * i, *xb = xa + VF;
        if (np == VF) {
            vf_store(xa, rot_v(vf_load(xa), c0, s0));
            vf_store(xb, rot_v(vf_load(xb), c1, s1));
        } else {
            vf_store_part(xa, rot_v(vf_load_part(xa, k0), c0, s0), k0);
            if (k1) vf_store_part(xb, rot_v(vf_load_part(xb, k1), c1, s1), k1);
        }
    }
}

#endif

/* train-impl.h - the elementwise training kernels of a SIMD kernel table (SiLU backward, the
 * cross-entropy row and the AdamW update), written once for every ISA (scalar.c, the
 * reference, has its own plain C; kernels.h states the math).
 *
 * SiLU backward and AdamW run the reference's operations in its order on VF floats at a time,
 * without fused multiply-adds, so every table gives the same bits for AdamW (its exp
 * approximation aside, SiLU backward too); the tail goes through the same vector code.
 *
 * An ISA file includes this after elementwise-impl.h (max_row, exp_sum, scale, map2) and after
 * defining, with its own intrinsics:
 *   VF                          lanes of a float vector
 *   typedef ... vf;             a vector of VF floats
 *   vf vf_set1(float a);        every lane a
 *   vf vf_add(vf a, vf b), vf_sub, vf_mul, vf_div (the ISA file includes vf-arith.h for these)
 *   vf vf_sqrt(vf a)
 *   vf vf_exp(vf x);            the table's vectorized expf (vecmath.h states its error)
 *   vf vf_load(const float *p);  void vf_store(float *p, vf v);
 *   vf vf_load_part(const float *p, int k);     lanes 0 .. k-1 from p, the others 0
 *   void vf_store_part(float *p, vf v, int k);  lanes 0 .. k-1 to p */
#ifndef MG_TRAIN_IMPL_H
#define MG_TRAIN_IMPL_H

#include <math.h>
#include <stddef.h>

/* (dy s)(1 + x (1 - s)), s = 1 / (1 + exp(-x)) */
static inline vf silu_bwd_v(vf x, vf dy)
{
    const vf one = vf_set1(1.0f);
    vf s = vf_div(one, vf_add(one, vf_exp(vf_sub(vf_set1(0.0f), x))));
    return vf_mul(vf_mul(dy, s), vf_add(one, vf_mul(x, vf_sub(one, s))));
}

static void silu_backward(const float *x, const float *dy, float *dx, size_t n)
{
    map2(silu_bwd_v, x, dy, dx, n);
}

/* max in fp32; e = exp(l - max) summed in double (and kept in dl); dl = e (sc / sum) */
static double cross_entropy_row(const float *l, int n, int t, float sc, float *dl)
{
    const float lt = l[t], mx = max_row(l, n);
    const double sum = exp_sum(l, n, mx, dl), lse = mx + log(sum);
    if (dl) {
        scale(dl, (float)(sc / sum), dl, (size_t)n);
        dl[t] -= sc;
    }
    return lse - lt;
}

/* AdamW in fp32 with the constants rounded to fp32 (scalar.c computes in double):
 *   g' = g gs, p' = p (1 - lr wd), m = b1 m + (1 - b1) g', v = b2 v + (1 - b2) g' g',
 *   p = p' - step m / (sqrt(v) / sbc2 + eps) */
typedef struct {
    vf gs, decay, b1, c1, b2, c2, sbc2, eps, step;
} adamw_consts;

static inline void adamw_v(const adamw_consts *c, vf p, vf g, vf m, vf v, vf *po, vf *mo,
                           vf *vo)
{
    vf gj = vf_mul(g, c->gs);
    vf pj = vf_mul(p, c->decay);
    m = vf_add(vf_mul(c->b1, m), vf_mul(c->c1, gj));
    v = vf_add(vf_mul(c->b2, v), vf_mul(vf_mul(c->c2, gj), gj));
    vf den = vf_add(vf_div(vf_sqrt(v), c->sbc2), c->eps);
    *po = vf_sub(pj, vf_div(vf_mul(c->step, m), den));
    *mo = m;
    *vo = v;
}

static void adamw(float *p, const float *g, float *m, float *v, size_t n, double lr, double wd,
                  double b1, double b2, double eps, double gs, double step_size, double sbc2)
{
    const adamw_consts c = {vf_set1((float)gs),        vf_set1((float)(1.0 - lr * wd)),
                            vf_set1((float)b1),        vf_set1((float)(1.0 - b1)),
                            vf_set1((float)b2),        vf_set1((float)(1.0 - b2)),
                            vf_set1((float)sbc2),      vf_set1((float)eps),
                            vf_set1((float)step_size)};
    vf po, mo, vo;
    size_t i = 0;
    for (; i + VF <= n; i += VF) {
        adamw_v(&c, vf_load(p + i), vf_load(g + i), vf_load(m + i), vf_load(v + i), &po, &mo,
                &vo);
        vf_store(p + i, po);
        vf_store(m + i, mo);
        vf_store(v + i, vo);
    }
    if (i < n) {
        const int k = (int)(n - i);
        adamw_v(&c, vf_load_part(p + i, k), vf_load_part(g + i, k), vf_load_part(m + i, k),
                vf_load_part(v + i, k), &po, &mo, &vo);
        vf_store_part(p + i, po, k);
        vf_store_part(m + i, mo, k);
        vf_store_part(v + i, vo, k);
    }
}

#endif

/* test-kernels - every kernel table against independent double-precision formulas, on random
 * data with odd sizes and unaligned pointers. The scalar table must match them; every other
 * table compiled in and supported here must match the scalar table. */
#include "config.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "test.h"


/* The x86 tables' vectorized exp over n floats (simd/avx2.c, simd/avx512.c), tested here for
 * accuracy; only called where the table is usable. */
#if defined(MG_HAVE_AVX2)
void mg_avx2_exp(const float *x, float *y, size_t n);
#endif
#if defined(MG_HAVE_AVX512)
void mg_avx512_exp(const float *x, float *y, size_t n);
#endif

static uint32_t seed = 12345;
static float frand(void) { return test_frand(&seed); }

/* a buffer of n floats starting one float past an aligned address: unaligned on purpose */
static float *ubuf(size_t n, float scale)
{
    float *b = malloc(sizeof(float) * (n + 1)) ;
    for (size_t i = 0; i <= n; i++) b[i] = scale * frand();
    return b + 1;
}
static void ufree(float *p) { free(p - 1); }

static const int sizes[] = {1, 2, 3, 7, 8, 15, 16, 17, 31, 33, 64, 100, 257};
#define NSIZES (int)(sizeof sizes / sizeof sizes[0])

static void test_norms(const mg_kernels *K)
{
    char what[96];
    for (int si = 0; si < NSIZES; si++) {
        int n = sizes[si];
        float *x = ubuf(n, 3.0f), *w = ubuf(n, 0.5f), *b = ubuf(n, 0.5f), *y = ubuf(n, 0), *e = ubuf(n, 0);
        double ss = 0, s = 0, v = 0;
        for (int i = 0; i < n; i++) { ss += (double)x[i] * x[i]; s += x[i]; }
        double mean = s / n;
        for (int i = 0; i < n; i++) v += (x[i] - mean) * (x[i] - mean);
        /* y = x rsqrt(mean(x^2) + eps) (1 + w) */
        for (int i = 0; i < n; i++) e[i] = (float)(x[i] / sqrt(ss / n + 1e-5) * (1.0 + w[i]));
        K->rms_norm(x, w, 1e-5f, n, y);
        snprintf(what, sizeof what, "%s rms_norm n=%d", K->name, n);
        CHECK_CLOSE(what, y, e, n, 1e-5 * 8);
        /* y = (x - mean) rsqrt(var + eps) (1 + w) + b */
        for (int i = 0; i < n; i++) e[i] = (float)((x[i] - mean) / sqrt(v / n + 1e-5) * (1.0 + w[i]) + b[i]);
        K->layer_norm(x, w, b, 1e-5f, n, y);
        snprintf(what, sizeof what, "%s layer_norm n=%d", K->name, n);
        CHECK_CLOSE(what, y, e, n, 1e-5 * 8);
        ufree(x); ufree(w); ufree(b); ufree(y); ufree(e);
    }
}

/* Timestep norm against the closed form: after t+1 tokens, mean and var of group g are the
 * mean and biased variance of all Dg (t+1) values seen. */
static void test_timestep_norm(const mg_kernels *K)
{
    const int Ls[] = {1, 5, 37}, Ds[] = {4, 12, 30}, Gs[] = {1, 3, 5};
    for (int a = 0; a < 3; a++) {
        int L = Ls[a], D = Ds[a], G = Gs[a], Dg = D / G;
        float *x = ubuf((size_t)L * D, 2.0f), *w = ubuf(D, 0.3f), *b = ubuf(D, 0.3f);
        float *y = ubuf((size_t)L * D, 0), *e = ubuf((size_t)L * D, 0);
        float mean[8] = {0}, var[8] = {1, 1, 1, 1, 1, 1, 1, 1};
        int64_t count = 0;
        for (int g = 0; g < G; g++) {
            double s = 0, s2 = 0;
            for (int t = 0; t < L; t++) {
                for (int k = 0; k < Dg; k++) {
                    double v = x[(size_t)t * D + g * Dg + k];
                    s += v;
                    s2 += v * v;
                }
                double cnt = (double)Dg * (t + 1), mu = s / cnt, va = s2 / cnt - mu * mu;
                for (int k = 0; k < Dg; k++) {
                    int j = g * Dg + k;
                    e[(size_t)t * D + j] = (float)((x[(size_t)t * D + j] - mu) / sqrt(va + 1e-5) * (1 + w[j]) + b[j]);
                }
            }
        }
        K->timestep_norm(x, L, D, G, w, b, 1e-5f, &count, mean, var, y);
        char what[96];
        snprintf(what, sizeof what, "%s timestep_norm L=%d D=%d G=%d", K->name, L, D, G);
        CHECK_CLOSE(what, y, e, (size_t)L * D, 1e-4);
        CHECK(count == L, "%s: count %lld", what, (long long)count);
        /* continuing from the carried statistics equals one pass */
        float m2[8] = {0}, v2[8] = {1, 1, 1, 1, 1, 1, 1, 1};
        int64_t c2 = 0;
        int half = L / 2;
        float *y2 = ubuf((size_t)L * D, 0);
        K->timestep_norm(x, half, D, G, w, b, 1e-5f, &c2, m2, v2, y2);
        K->timestep_norm(x + (size_t)half * D, L - half, D, G, w, b, 1e-5f, &c2, m2, v2, y2 + (size_t)half * D);
        CHECK(memcmp(y, y2, sizeof(float) * L * D) == 0, "%s: split run differs", what);
        CHECK(memcmp(mean, m2, sizeof(float) * G) == 0 && memcmp(var, v2, sizeof(float) * G) == 0,
              "%s: split statistics differ", what);
        ufree(x); ufree(w); ufree(b); ufree(y); ufree(e); ufree(y2);
    }
}

static void test_cema_scan(const mg_kernels *K)
{
    const int L = 29, D = 5, N = 3;
    float *x = ubuf((size_t)L * D, 1.0f), *p = ubuf(D * N, 0), *q = ubuf(D * N * 2, 0);
    float *eta = ubuf(D * N * 2, 1.0f), *om = ubuf(D, 1.0f), *h = ubuf(D * N * 2, 0.5f);
    float *y = ubuf((size_t)L * D, 0), *e = ubuf((size_t)L * D, 0), *h0 = ubuf(D * N * 2, 0);
    for (int i = 0; i < D * N; i++) {
        p[i] = 0.5f + 0.4f * frand();
        float r = 0.6f + 0.35f * frand(), ph = 3.0f * frand();
        q[2 * i] = r * cosf(ph);
        q[2 * i + 1] = r * sinf(ph);
    }
    memcpy(h0, h, sizeof(float) * D * N * 2);
    double hr[64], hi[64];
    for (int i = 0; i < D * N; i++) { hr[i] = h[2 * i]; hi[i] = h[2 * i + 1]; }
    for (int t = 0; t < L; t++)
        for (int d = 0; d < D; d++) {
            double xt = x[t * D + d], acc = (double)om[d] * xt;
            for (int n = 0; n < N; n++) {
                int i = d * N + n;
                double nr = q[2 * i] * hr[i] - q[2 * i + 1] * hi[i] + p[i] * xt;
                double ni = q[2 * i] * hi[i] + q[2 * i + 1] * hr[i];
                hr[i] = nr; hi[i] = ni;
                acc += eta[2 * i] * nr - eta[2 * i + 1] * ni;
            }
            e[t * D + d] = (float)acc;
        }
    /* two channel ranges, as the backend's threads call it */
    K->cema_scan(x, L, D, N, 0, 2, p, q, eta, om, h, y);
    K->cema_scan(x, L, D, N, 2, D, p, q, eta, om, h, y);
    char what[64];
    snprintf(what, sizeof what, "%s cema_scan", K->name);
    CHECK_CLOSE(what, y, e, (size_t)L * D, 1e-5);
    float he[64];
    for (int i = 0; i < D * N; i++) { he[2 * i] = (float)hr[i]; he[2 * i + 1] = (float)hi[i]; }
    snprintf(what, sizeof what, "%s cema_scan final h", K->name);
    CHECK_CLOSE(what, h, he, (size_t)D * N * 2, 1e-5);
    ufree(x); ufree(p); ufree(q); ufree(eta); ufree(om); ufree(h); ufree(y); ufree(e); ufree(h0);
}

static void test_elementwise(const mg_kernels *K)
{
    char what[96];
    for (int si = 0; si < NSIZES; si++) {
        int n = sizes[si];
        float *a = ubuf(2 * n, 4.0f), *b = ubuf(2 * n, 4.0f), *y = ubuf(2 * n, 0), *e = ubuf(2 * n, 0);
        for (int i = 0; i < n; i++) e[i] = (float)(a[i] / (1.0 + exp(-(double)a[i])));
        K->silu(a, y, n);
        snprintf(what, sizeof what, "%s silu n=%d", K->name, n);
        CHECK_CLOSE(what, y, e, n, 1e-5);
        for (int i = 0; i < n; i++) e[i] = a[i] * b[i];
        K->mul(a, b, y, n);
        snprintf(what, sizeof what, "%s mul n=%d", K->name, n);
        CHECK_CLOSE(what, y, e, n, 0);
        for (int i = 0; i < n; i++) e[i] = a[i] + b[i];
        K->add(a, b, y, n);
        snprintf(what, sizeof what, "%s add n=%d", K->name, n);
        CHECK_CLOSE(what, y, e, n, 0);
        for (int i = 0; i < n; i++) e[i] = 0.37f * a[i];
        K->scale(a, 0.37f, y, n);
        snprintf(what, sizeof what, "%s scale n=%d", K->name, n);
        CHECK_CLOSE(what, y, e, n, 0);
        for (int i = 0; i < n; i++) {
            double ar = a[2 * i], ai = a[2 * i + 1], br = b[2 * i], bi = b[2 * i + 1];
            e[2 * i] = (float)(ar * br - ai * bi);
            e[2 * i + 1] = (float)(ar * bi + ai * br);
        }
        K->complex_mul(a, b, y, n);
        snprintf(what, sizeof what, "%s complex_mul n=%d", K->name, n);
        CHECK_CLOSE(what, y, e, 2 * n, 1e-5);
        /* y[r, i] = x[r, i] s[i] + t[i], rows of m = 3 */
        if (n % 3 == 0 || n == 1) {
            int m = n == 1 ? 1 : 3, rows = n / m;
            for (int r = 0; r < rows; r++)
                for (int i = 0; i < m; i++) e[r * m + i] = a[r * m + i] * b[i] + b[m + i];
            K->affine_rows(a, rows, m, b, b + m, y);
            snprintf(what, sizeof what, "%s affine_rows n=%d", K->name, n);
            CHECK_CLOSE(what, y, e, n, 1e-6);
        }
        /* softmax */
        double mx = a[0], s = 0;
        for (int i = 1; i < n; i++) mx = a[i] > mx ? a[i] : mx;
        for (int i = 0; i < n; i++) s += exp(a[i] - mx);
        for (int i = 0; i < n; i++) e[i] = (float)(exp(a[i] - mx) / s);
        memcpy(y, a, sizeof(float) * n);
        K->softmax(y, n);
        snprintf(what, sizeof what, "%s softmax n=%d", K->name, n);
        CHECK_CLOSE(what, y, e, n, 1e-6);
        /* rope: (x[2i] + i x[2i+1]) exp(i pos f_i), on an even prefix */
        int dh = n & ~1;
        if (dh) {
            float *fr = ubuf(dh / 2, 0);
            for (int i = 0; i < dh / 2; i++) fr[i] = (float)pow(10000.0, -2.0 * i / dh);
            int pos = 2 * n + 3;
            for (int i = 0; i < dh / 2; i++) {
                double th = (float)pos * fr[i];
                e[2 * i] = (float)(a[2 * i] * cos(th) - a[2 * i + 1] * sin(th));
                e[2 * i + 1] = (float)(a[2 * i] * sin(th) + a[2 * i + 1] * cos(th));
            }
            memcpy(y, a, sizeof(float) * dh);
            K->rope(y, dh, pos, fr);
            snprintf(what, sizeof what, "%s rope dh=%d", K->name, dh);
            CHECK_CLOSE(what, y, e, dh, 1e-5);
            ufree(fr);
        }
        ufree(a); ufree(b); ufree(y); ufree(e);
    }
}

/* All 65536 half and bfloat16 values against formulas built on ldexp. */
/* How many of y[i], the conversion of the bit pattern i = 0 .. 65535 of a 16-bit float (sign,
 * ebits exponent bits with bias 2^(ebits-1) - 1, mbits mantissa bits), are wrong: subnormals
 * man * 2^(1 - bias - mbits), normals (2^mbits + man) * 2^(ex - bias - mbits), inf and NaN. */
static int half_wrong(const float *y, int ebits, int mbits)
{
    const int emax = (1 << ebits) - 1, bias = emax / 2;
    int bad = 0;
    for (int i = 0; i < 65536; i++) {
        int sgn = i >> 15, ex = (i >> mbits) & emax, man = i & ((1 << mbits) - 1);
        double v;
        if (ex == 0) v = ldexp(man, 1 - bias - mbits);
        else if (ex == emax) v = man ? NAN : INFINITY;
        else v = ldexp((1 << mbits) + man, ex - bias - mbits);
        if (sgn) v = -v;
        if (isnan(v) ? !isnan(y[i]) : (y[i] != (float)v || !!signbit(y[i]) != sgn)) bad++;
    }
    return bad;
}

static void test_conversions(const mg_kernels *K)
{
    uint16_t *h = malloc(sizeof(uint16_t) * 65536);
    float *y = malloc(sizeof(float) * 65536);
    for (int i = 0; i < 65536; i++) h[i] = (uint16_t)i;
    K->f16_to_f32(h, y, 65536);
    int bad = half_wrong(y, 5, 10);
    CHECK(bad == 0, "%s f16_to_f32: %d of 65536 values wrong", K->name, bad);
    K->bf16_to_f32(h, y, 65536);
    bad = half_wrong(y, 8, 7);
    CHECK(bad == 0, "%s bf16_to_f32: %d of 65536 values wrong", K->name, bad);
    free(h);
    free(y);
}

/* ------------------------------------------------------------------ each table against scalar */

static int irand(int n) /* uniform in [0, n) */
{
    frand();
    return (int)(seed % (uint32_t)n);
}

/* n floats at a random offset of 0..7 floats past an unaligned start; free with pfree */
static float *pbuf(size_t n, float scale, float **base)
{
    int off = irand(8);
    *base = ubuf(n + 8, scale);
    return *base + off;
}
#define pfree(base) ufree(base)

/* max over i of |a - b| / max(1, |b|): the absolute error for values up to 1, the relative
 * error above; a NaN on one side only counts as infinite */
static double mixed_err(const float *a, const float *b, size_t n)
{
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(a[i]) || isnan(b[i])) {
            if (isnan(a[i]) != isnan(b[i])) return INFINITY;
            continue;
        }
        double d = fabs((double)a[i] - (double)b[i]) / fmax(1.0, fabs((double)b[i]));
        if (d > worst || isnan(d)) worst = isnan(d) ? INFINITY : d;
    }
    return worst;
}

enum { K_RMS, K_LN, K_TS, K_CEMA, K_CMUL, K_ROPE, K_SOFTMAX, K_SILU, K_MUL, K_ADD, K_AFFINE,
       K_SCALE, K_F16, K_BF16, K_SILUB, K_CE, K_ADAMW, K_TSB, K_RMSB, K_LNB, K_COUNT };
static const char *const kname[K_COUNT] = {
    "rms_norm", "layer_norm", "timestep_norm", "cema_scan", "complex_mul", "rope", "softmax",
    "silu", "mul", "add", "affine_rows", "scale", "f16_to_f32", "bf16_to_f32",
    "silu_backward", "cross_entropy_row", "adamw", "tsnorm_bwd", "rms_norm_backward_row",
    "layer_norm_backward_row"};
/* Tolerated difference from the scalar table (mixed_err; norms on values ~3). mul, add, scale
 * and the conversions must be exact everywhere; affine_rows too for the x86 tables, which
 * do not use FMA there (another table may: 2e-6, about 2 ulp). The training kernels, with
 * the measures of vs_scalar_train (kernels.h states the bounds):
 *   silu_backward: |dx - scalar| / max(1, |scalar|), dy in [-4, 4), x up to +-16: 1.2e-6
 *     (one ulp of s near 1 changes 1 - s by 6e-8, times |x| up to ~17 where s rounds to 1);
 *   cross_entropy_row: max(|loss - scalar|, |dl - scalar| / scale): 4e-7;
 *   adamw: the fp32 tables against scalar's double, each of p, m, v relative to the size
 *     of the terms it is formed from: 5e-7 (about 4 roundings of fp32);
 *   tsnorm_bwd: sums relative to the sum of the terms' sizes (double, another order), 1e-13,
 *     and dx (mixed), 2.5e-7; the per-feature accumulators aw, ab must be bit-identical;
 *   rms/layer_norm_backward_row: dx (mixed), r and mu (relative): 2.5e-7. */
static const double ktol[K_COUNT] = {8e-5, 8e-5, 1e-4, 1e-5, 1e-5, 1e-5, 1e-6,
                                     1e-6, 0,    0,    2e-6, 0,    0,    0,
                                     1.2e-6, 4e-7, 5e-7, 2.5e-7, 2.5e-7, 2.5e-7};
static double kerr[K_COUNT];

static int is_x86_table(const mg_kernels *K) { return strncmp(K->name, "avx", 3) == 0; }

static void note(const mg_kernels *K, int k, const char *detail, double err)
{
    double tol = ktol[k];
    if (k == K_AFFINE && is_x86_table(K)) tol = 0;
    if (err > kerr[k] || isnan(err)) kerr[k] = isnan(err) ? INFINITY : err;
    CHECK(err <= tol, "%s %s vs scalar, %s: error %.3g > %.3g", K->name, kname[k], detail, err, tol);
}

static void vs_scalar_norms(const mg_kernels *K, const mg_kernels *S)
{
    char what[64];
    for (int n = 1; n <= 300; n++) {
        float *bx, *bw, *bb, *by, *be;
        float *x = pbuf(n, 3.0f, &bx), *w = pbuf(n, 0.5f, &bw), *b = pbuf(n, 0.5f, &bb);
        float *y = pbuf(n, 0, &by), *e = pbuf(n, 0, &be);
        const float *wn = n % 3 == 0 ? NULL : w, *bn = n % 5 == 0 ? NULL : b;
        snprintf(what, sizeof what, "n=%d w%s b%s", n, wn ? "" : "=NULL", bn ? "" : "=NULL");
        S->rms_norm(x, wn, 1e-5f, n, e);
        K->rms_norm(x, wn, 1e-5f, n, y);
        note(K, K_RMS, what, mixed_err(y, e, n));
        S->layer_norm(x, wn, bn, 1e-5f, n, e);
        K->layer_norm(x, wn, bn, 1e-5f, n, y);
        note(K, K_LN, what, mixed_err(y, e, n));
        pfree(bx); pfree(bw); pfree(bb); pfree(by); pfree(be);
    }
    const int Gs[] = {1, 2, 3, 4, 5, 8};
    for (int trial = 0; trial < 60; trial++) {
        int G = Gs[irand(6)], Dg = 1 + irand(70), D = G * Dg, L = 1 + irand(9);
        float *bx, *bw, *bb, *by, *be;
        float *x = pbuf((size_t)L * D, 2.0f, &bx), *w = pbuf(D, 0.3f, &bw), *b = pbuf(D, 0.3f, &bb);
        float *y = pbuf((size_t)L * D, 0, &by), *e = pbuf((size_t)L * D, 0, &be);
        const float *wn = trial % 4 == 1 ? NULL : w, *bn = trial % 4 == 2 ? NULL : b;
        float m1[8], v1[8], m2[8], v2[8];
        const int64_t counts[] = {0, 1, 7, 1000};
        int64_t c1 = counts[trial % 4], c2 = c1;
        for (int g = 0; g < G; g++) {
            m1[g] = m2[g] = c1 ? 0.3f * frand() : 0.0f;
            v1[g] = v2[g] = c1 ? 1.0f + 0.5f * frand() : 1.0f;
        }
        S->timestep_norm(x, L, D, G, wn, bn, 1e-5f, &c1, m1, v1, e);
        K->timestep_norm(x, L, D, G, wn, bn, 1e-5f, &c2, m2, v2, y);
        snprintf(what, sizeof what, "L=%d D=%d G=%d", L, D, G);
        note(K, K_TS, what, fmax(mixed_err(y, e, (size_t)L * D), fmax(mixed_err(m2, m1, G), mixed_err(v2, v1, G))));
        CHECK(c1 == c2, "%s timestep_norm %s: count %lld, scalar %lld", K->name, what, (long long)c2, (long long)c1);
        pfree(bx); pfree(bw); pfree(bb); pfree(by); pfree(be);
    }
}

static void vs_scalar_cema(const mg_kernels *K, const mg_kernels *S)
{
    const int Ns[] = {0, 1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 65, 70};
    char what[80];
    for (int trial = 0; trial < 100; trial++) {
        int D = 1 + irand(40), N = Ns[trial % 17], L = 1 + irand(24), DN = D * N;
        float *bx, *bp, *bq, *be, *bo, *bh, *bh1, *bh2, *by1, *by2, *by3, *bh3;
        float *x = pbuf((size_t)L * D, 1.0f, &bx), *p = pbuf(DN, 0, &bp), *q = pbuf(2 * DN, 0, &bq);
        float *eta = pbuf(2 * DN, 1.0f / sqrtf(N + 1.0f), &be), *om = pbuf(D, 1.0f, &bo);
        float *h = pbuf(2 * DN, 0.5f, &bh), *hs = pbuf(2 * DN, 0, &bh1), *hk = pbuf(2 * DN, 0, &bh2);
        float *hk2 = pbuf(2 * DN, 0, &bh3);
        float *ys = pbuf((size_t)L * D, 0, &by1), *yk = pbuf((size_t)L * D, 0, &by2), *yk2 = pbuf((size_t)L * D, 0, &by3);
        for (int i = 0; i < DN; i++) {
            p[i] = 0.5f + 0.4f * frand();
            float r = 0.6f + 0.35f * frand(), ph = 3.0f * frand();
            q[2 * i] = r * cosf(ph);
            q[2 * i + 1] = r * sinf(ph);
        }
        /* a channel range, as one of the backend's threads gets it */
        int d0 = irand(D), d1 = d0 + 1 + irand(D - d0);
        memcpy(hs, h, sizeof(float) * 2 * DN);
        memcpy(hk, h, sizeof(float) * 2 * DN);
        memcpy(yk, ys, sizeof(float) * L * D);
        S->cema_scan(x, L, D, N, d0, d1, p, q, eta, om, hs, ys);
        K->cema_scan(x, L, D, N, d0, d1, p, q, eta, om, hk, yk);
        snprintf(what, sizeof what, "L=%d D=%d N=%d d=%d..%d", L, D, N, d0, d1);
        note(K, K_CEMA, what, fmax(mixed_err(yk, ys, (size_t)L * D), mixed_err(hk, hs, 2 * DN)));
        /* The same bits however the channels are split among threads (tests/test-cema.c
         * compares 1 and 2 threads bit for bit), so no remainder with its own rounding. */
        int a = d0 + irand(d1 - d0 + 1);
        memcpy(hk2, h, sizeof(float) * 2 * DN);
        memcpy(yk2, ys, sizeof(float) * L * D);
        K->cema_scan(x, L, D, N, d0, a, p, q, eta, om, hk2, yk2);
        K->cema_scan(x, L, D, N, a, d1, p, q, eta, om, hk2, yk2);
        int same = memcmp(hk, hk2, sizeof(float) * 2 * DN) == 0;
        for (int t = 0; t < L; t++)
            same &= memcmp(yk + (size_t)t * D + d0, yk2 + (size_t)t * D + d0, sizeof(float) * (d1 - d0)) == 0;
        CHECK(same, "%s cema_scan %s: split at channel %d changes the result", K->name, what, a);
        if (is_x86_table(K)) {
            /* the x86 tables also give the same bits whatever L (one row at a time is done
             * per channel, longer runs across channels) */
            memcpy(hk2, h, sizeof(float) * 2 * DN);
            for (int t = 0; t < L; t++)
                K->cema_scan(x + (size_t)t * D, 1, D, N, d0, d1, p, q, eta, om, hk2, yk2 + (size_t)t * D);
            same = memcmp(hk, hk2, sizeof(float) * 2 * DN) == 0;
            for (int t = 0; t < L; t++)
                same &= memcmp(yk + (size_t)t * D + d0, yk2 + (size_t)t * D + d0, sizeof(float) * (d1 - d0)) == 0;
            CHECK(same, "%s cema_scan %s: one row at a time differs", K->name, what);
        }
        pfree(bx); pfree(bp); pfree(bq); pfree(be); pfree(bo); pfree(bh); pfree(bh1); pfree(bh2);
        pfree(bh3); pfree(by1); pfree(by2); pfree(by3);
    }
}

static void vs_scalar_elementwise(const mg_kernels *K, const mg_kernels *S)
{
    char what[64];
    for (int n = 0; n <= 300; n++) {
        float *ba, *bb, *by, *be;
        float *a = pbuf(2 * n, 4.0f, &ba), *b = pbuf(2 * n, 4.0f, &bb);
        float *y = pbuf(2 * n, 0, &by), *e = pbuf(2 * n, 0, &be);
        snprintf(what, sizeof what, "n=%d", n);
        S->complex_mul(a, b, e, n);
        K->complex_mul(a, b, y, n);
        note(K, K_CMUL, what, mixed_err(y, e, 2 * n));
        memcpy(y, a, sizeof(float) * 2 * n); /* in place: y aliases a */
        K->complex_mul(y, b, y, n);
        note(K, K_CMUL, what, mixed_err(y, e, 2 * n));
        if (n >= 1) {
            float sc = n % 3 == 0 ? 1.0f : n % 3 == 1 ? 10.0f : 30.0f;
            for (int i = 0; i < n; i++) e[i] = y[i] = sc * a[i] / 4.0f;
            S->softmax(e, n);
            K->softmax(y, n);
            note(K, K_SOFTMAX, what, mixed_err(y, e, n));
        }
        float sc = 2.0f * (1 + n % 8); /* silu on [-2, 2) .. [-16, 16) */
        for (int i = 0; i < n; i++) b[n + i] = sc * a[i] / 4.0f;
        S->silu(b + n, e, n);
        K->silu(b + n, y, n);
        note(K, K_SILU, what, mixed_err(y, e, n));
        S->mul(a, b, e, n);
        K->mul(a, b, y, n);
        note(K, K_MUL, what, memcmp(y, e, sizeof(float) * n) ? INFINITY : 0);
        S->add(a, b, e, n);
        K->add(a, b, y, n);
        note(K, K_ADD, what, memcmp(y, e, sizeof(float) * n) ? INFINITY : 0);
        S->scale(a, -0.37f, e, n);
        K->scale(a, -0.37f, y, n);
        note(K, K_SCALE, what, memcmp(y, e, sizeof(float) * n) ? INFINITY : 0);
        if (n >= 1) { /* rows of m = 1 .. 70 */
            int m = 1 + irand(n < 70 ? n : 70), rows = 2 * n / m;
            const float *t = n % 4 == 3 ? NULL : b + m;
            snprintf(what, sizeof what, "rows=%d m=%d%s", rows, m, t ? "" : " t=NULL");
            S->affine_rows(a, rows, m, b, t, e);
            K->affine_rows(a, rows, m, b, t, y);
            note(K, K_AFFINE, what, mixed_err(y, e, (size_t)rows * m));
        }
        /* conversions of random bit patterns: equal bits, except that a table other than
         * the x86 ones may give any NaN for a NaN */
        uint16_t *hx = malloc(sizeof(uint16_t) * (n + 8) + 1), *h16 = hx + irand(8);
        for (int i = 0; i < n; i++) h16[i] = (uint16_t)(irand(65536));
        for (int c = 0; c < 2; c++) {
            if (c == 0) { S->f16_to_f32(h16, e, n); K->f16_to_f32(h16, y, n); }
            else { S->bf16_to_f32(h16, e, n); K->bf16_to_f32(h16, y, n); }
            int bad = 0;
            for (int i = 0; i < n; i++)
                if (memcmp(&y[i], &e[i], 4) != 0 && (is_x86_table(K) || !isnan(y[i]) || !isnan(e[i]))) bad++;
            snprintf(what, sizeof what, "n=%d", n);
            note(K, c ? K_BF16 : K_F16, what, bad ? INFINITY : 0);
        }
        free(hx);
        pfree(ba); pfree(bb); pfree(by); pfree(be);
    }
    /* rope at many positions and head sizes; beyond MG_TRIG_XMAX the x86 tables fall back to
     * libm for the whole rest of the head */
    const int dhs[] = {2, 4, 6, 14, 16, 18, 30, 32, 34, 62, 64, 66, 126, 128, 130, 256, 258};
    const int poss[] = {0, 1, 5, 100, 1023, 2048, 4095, 4096, 65543, 1048575, 1048577,
                        3000001, 123456789};
    for (size_t di = 0; di < sizeof dhs / sizeof dhs[0]; di++)
        for (size_t pi = 0; pi < sizeof poss / sizeof poss[0]; pi++) {
            int dh = dhs[di], pos = poss[pi];
            float *bx, *bf, *by, *be;
            float *x = pbuf(dh, 1.0f, &bx), *fr = pbuf(dh / 2, 1.0f, &bf);
            float *y = pbuf(dh, 0, &by), *e = pbuf(dh, 0, &be);
            for (int i = 0; i < dh / 2; i++) fr[i] = (float)pow(10000.0, -2.0 * i / dh);
            memcpy(y, x, sizeof(float) * dh);
            memcpy(e, x, sizeof(float) * dh);
            S->rope(e, dh, pos, fr);
            K->rope(y, dh, pos, fr);
            snprintf(what, sizeof what, "dh=%d pos=%d", dh, pos);
            note(K, K_ROPE, what, mixed_err(y, e, dh));
            if (pos <= 4096) { /* and against the double formula on the fp32 angle */
                double worst = 0;
                for (int i = 0; i < dh / 2; i++) {
                    double th = (float)pos * fr[i];
                    double re = x[2 * i] * cos(th) - x[2 * i + 1] * sin(th);
                    double im = x[2 * i] * sin(th) + x[2 * i + 1] * cos(th);
                    worst = fmax(worst, fmax(fabs(y[2 * i] - re), fabs(y[2 * i + 1] - im)));
                }
                CHECK(worst <= 1e-5, "%s rope %s: error %.3g against double", K->name, what, worst);
            }
            pfree(bx); pfree(bf); pfree(by); pfree(be);
        }
}

/* The training kernels against scalar: odd lengths 0 .. 300 at unaligned offsets, w NULL
 * and not, cross_entropy_row in place, and the elementwise ones split in two at a random
 * point (as threads split them) giving the same bits. */
static void vs_scalar_train(const mg_kernels *K, const mg_kernels *S)
{
    char what[96];
    for (int n = 0; n <= 300; n++) {
        float *b1_, *b2_, *b3_, *b4_, *b5_, *b6_, *b7_, *b8_, *b9_;
        float *x = pbuf(n, 1.0f, &b1_), *dy = pbuf(n, 4.0f, &b2_), *w = pbuf(n, 0.3f, &b3_);
        float *y = pbuf(n, 0, &b4_), *e = pbuf(n, 0, &b5_), *y2 = pbuf(n, 0, &b6_);
        float *p = pbuf(n, 1.0f, &b7_), *m = pbuf(n, 0.1f, &b8_), *v = pbuf(n, 0.1f, &b9_);
        const float *wn = n % 3 == 0 ? NULL : w;
        snprintf(what, sizeof what, "n=%d%s", n, wn ? "" : " w=NULL");

        /* silu_backward, x in [-2, 2) .. [-16, 16) */
        const float sc = 2.0f * (1 + n % 8);
        for (int i = 0; i < n; i++) x[i] = sc * frand();
        S->silu_backward(x, dy, e, n);
        K->silu_backward(x, dy, y, n);
        note(K, K_SILUB, what, mixed_err(y, e, n));
        int a = irand(n + 1);
        for (int i = 0; i < n; i++) y2[i] = NAN;
        K->silu_backward(x, dy, y2, a);
        K->silu_backward(x + a, dy + a, y2 + a, n - a);
        CHECK(memcmp(y, y2, sizeof(float) * n) == 0, "%s silu_backward %s: split at %d differs", K->name, what, a);

        /* cross_entropy_row: logits of scale 1, 10, 30; dl apart, in place, and NULL */
        if (n >= 1) {
            const float ls = n % 3 == 0 ? 1.0f : n % 3 == 1 ? 10.0f : 30.0f, scale = 1.0f / (1 + n % 7);
            for (int i = 0; i < n; i++) x[i] = ls * frand();
            const int t = irand(n);
            double le = S->cross_entropy_row(x, n, t, scale, e);
            double lk = K->cross_entropy_row(x, n, t, scale, y);
            snprintf(what, sizeof what, "n=%d t=%d logits*%g scale %g", n, t, ls, scale);
            note(K, K_CE, what, fmax(fabs(lk - le), mixed_err(y, e, n) / scale));
            memcpy(y2, x, sizeof(float) * n);
            double li = K->cross_entropy_row(y2, n, t, scale, y2);
            CHECK(li == lk && memcmp(y, y2, sizeof(float) * n) == 0,
                  "%s cross_entropy_row %s: in place differs", K->name, what);
            double l0 = K->cross_entropy_row(x, n, t, scale, NULL);
            CHECK(l0 == lk, "%s cross_entropy_row %s: dl == NULL gives loss %.17g, not %.17g", K->name, what, l0, lk);
        }

        /* adamw at step t (bias corrections), gradient scale 0.5 */
        {
            const double lr = 1e-3 * (1 + n % 5), wd = n % 4 == 0 ? 0.0 : 0.1, b1 = 0.9, b2 = 0.999;
            const double eps = 1e-8, gs = 0.5, st = 1 + irand(1000);
            const double step = lr / (1 - pow(b1, st)), sbc2 = sqrt(1 - pow(b2, st));
            for (int i = 0; i < n; i++) v[i] = fabsf(v[i]) * (i % 5 == 0 ? 1e-4f : 0.1f);
            float *ps = malloc(sizeof(float) * 3 * (n + 1)), *ms = ps + n + 1, *vs = ms + n + 1;
            float *pk = malloc(sizeof(float) * 6 * (n + 1)), *mk = pk + n + 1, *vk = mk + n + 1;
            float *pk2 = vk + n + 1, *mk2 = pk2 + n + 1, *vk2 = mk2 + n + 1;
            memcpy(ps, p, sizeof(float) * n); memcpy(pk, p, sizeof(float) * n); memcpy(pk2, p, sizeof(float) * n);
            memcpy(ms, m, sizeof(float) * n); memcpy(mk, m, sizeof(float) * n); memcpy(mk2, m, sizeof(float) * n);
            memcpy(vs, v, sizeof(float) * n); memcpy(vk, v, sizeof(float) * n); memcpy(vk2, v, sizeof(float) * n);
            S->adamw(ps, dy, ms, vs, n, lr, wd, b1, b2, eps, gs, step, sbc2);
            K->adamw(pk, dy, mk, vk, n, lr, wd, b1, b2, eps, gs, step, sbc2);
            double err = 0;
            for (int i = 0; i < n; i++) {
                const double gj = dy[i] * gs, mt = fabs(b1 * m[i]) + fabs((1 - b1) * gj);
                const double vt = b2 * v[i] + (1 - b2) * gj * gj;
                const double pt = fabs(p[i] * (1 - lr * wd)) + step * mt / (sqrt(vt) / sbc2 + eps);
                err = fmax(err, fabs((double)mk[i] - ms[i]) / fmax(mt, 1e-30));
                err = fmax(err, fabs((double)vk[i] - vs[i]) / fmax(vt, 1e-30));
                err = fmax(err, fabs((double)pk[i] - ps[i]) / fmax(pt, 1e-30));
                if (isnan(pk[i]) || isnan(mk[i]) || isnan(vk[i])) err = INFINITY;
            }
            snprintf(what, sizeof what, "n=%d step %g lr %g wd %g", n, st, lr, wd);
            note(K, K_ADAMW, what, err);
            a = irand(n + 1);
            K->adamw(pk2, dy, mk2, vk2, a, lr, wd, b1, b2, eps, gs, step, sbc2);
            K->adamw(pk2 + a, dy + a, mk2 + a, vk2 + a, n - a, lr, wd, b1, b2, eps, gs, step, sbc2);
            CHECK(memcmp(pk, pk2, sizeof(float) * n) == 0 && memcmp(mk, mk2, sizeof(float) * n) == 0 &&
                      memcmp(vk, vk2, sizeof(float) * n) == 0,
                  "%s adamw %s: split at %d differs", K->name, what, a);
            free(ps);
            free(pk);
        }

        /* timestep norm backward of one group (n features) */
        if (n >= 1) {
            for (int i = 0; i < n; i++) x[i] = 2.0f * frand();
            const double u = 0.1 * frand(), r = 1.0 + 0.5 * frand();
            double *acc = malloc(sizeof(double) * 4 * n), ss[3], sk[3];
            for (int i = 0; i < 2 * n; i++) acc[i] = acc[2 * n + i] = frand();
            S->tsnorm_bwd_sums(x, dy, wn, n, u, r, acc, acc + n, ss);
            K->tsnorm_bwd_sums(x, dy, wn, n, u, r, acc + 2 * n, acc + 3 * n, sk);
            double t0 = 0, t1 = 0, t2 = 0;
            for (int i = 0; i < n; i++) {
                const double wk = wn ? 1.0 + wn[i] : 1.0;
                t0 += fabs(x[i]);
                t1 += fabs(dy[i] * (x[i] - u) * wk);
                t2 += fabs(dy[i] * wk);
            }
            double err = fmax(fabs(sk[0] - ss[0]) / fmax(t0, 1e-300),
                              fmax(fabs(sk[1] - ss[1]) / fmax(t1, 1e-300), fabs(sk[2] - ss[2]) / fmax(t2, 1e-300)));
            if (memcmp(acc, acc + 2 * n, sizeof(double) * 2 * n) != 0) err = INFINITY;
            const double ux = ss[0] / n, aa = 0.2 * frand(), cc = 0.5 * frand();
            S->tsnorm_bwd_dx(x, dy, wn, n, r, aa, cc, ux, e);
            K->tsnorm_bwd_dx(x, dy, wn, n, r, aa, cc, ux, y);
            snprintf(what, sizeof what, "n=%d%s", n, wn ? "" : " w=NULL");
            CHECK(err <= 1e-13, "%s tsnorm_bwd_sums vs scalar, %s: error %.3g > 1e-13", K->name, what, err);
            note(K, K_TSB, what, fmax(err, mixed_err(y, e, n)));
            free(acc);

            /* rms / layer norm backward rows, x ~ 3 */
            for (int i = 0; i < n; i++) x[i] = 3.0f * frand();
            float rs = S->rms_norm_backward_row(x, dy, wn, n, 1e-5f, e);
            float rk = K->rms_norm_backward_row(x, dy, wn, n, 1e-5f, y);
            note(K, K_RMSB, what, fmax(mixed_err(y, e, n), fabs((double)rk - rs) / rs));
            float mus, mk_, rls, rlk;
            S->layer_norm_backward_row(x, dy, wn, n, 1e-5f, e, &mus, &rls);
            K->layer_norm_backward_row(x, dy, wn, n, 1e-5f, y, &mk_, &rlk);
            note(K, K_LNB, what, fmax(mixed_err(y, e, n), fmax(fabs((double)mk_ - mus), fabs((double)rlk - rls) / rls)));
        }
        pfree(b1_); pfree(b2_); pfree(b3_); pfree(b4_); pfree(b5_); pfree(b6_); pfree(b7_);
        pfree(b8_); pfree(b9_);
    }
}

static void test_against_scalar(const mg_kernels *K)
{
    const mg_kernels *S = &mg_kernels_scalar;
    memset(kerr, 0, sizeof kerr);
    vs_scalar_norms(K, S);
    vs_scalar_cema(K, S);
    vs_scalar_elementwise(K, S);
    vs_scalar_train(K, S);
    printf("  %s against scalar, max difference (absolute; relative above 1):\n   ", K->name);
    for (int k = 0; k < K_COUNT; k++) printf(" %s %.2g%s", kname[k], kerr[k], k % 7 == 6 ? "\n   " : "");
    printf("\n");
}

/* ------------------------------------------------------------------ approximation accuracy */

/* Bounds of the approximations (simd/vecmath.h documents the x86 ones):
 *  - exp: relative error < 1e-7 over [-87, 88] (measured over every fp32 there: 8.5e-8 for
 *    the x86 vector exp); gradual underflow within 1 unit of 2^-149; inf, 0 and NaN right;
 *  - silu: relative error < 2e-7 over [-80, 80] where |silu| > 1e-37 (measured over every
 *    fp32 there: 1.75e-7, both for the scalar table with libm expf and the x86 tables);
 *  - sin, cos (rope with x = (1, 0)): absolute error < 2e-7 for angles up to 2^20. */
#define EXP_REL_BOUND 1e-7
#define SILU_REL_BOUND 2e-7
#define TRIG_ABS_BOUND 2e-7

#if defined(MG_HAVE_AVX2) || defined(MG_HAVE_AVX512)
static void test_exp(const char *name, void (*vexp)(const float *, float *, size_t))
{
    enum { NP = 1 << 22 };
    float *x = malloc(sizeof(float) * NP), *y = malloc(sizeof(float) * NP);
    /* a dense sweep of [-87, 88] plus the 64 floats after each of 4096 points of it */
    for (int i = 0; i < NP / 2; i++) x[i] = -87.0f + 175.0f * (float)i / (NP / 2 - 1);
    for (int i = 0; i < NP / 2; i++) {
        float b = -87.0f + 175.0f * (float)(i / 64) / (NP / 128);
        for (int k = 0; k < i % 64; k++) b = nextafterf(b, INFINITY);
        x[NP / 2 + i] = b;
    }
    vexp(x, y, NP);
    double worst = 0, wx = 0;
    for (int i = 0; i < NP; i++) {
        if (x[i] > 88.0f) continue;
        double e = exp((double)x[i]), r = fabs((y[i] - e) / e);
        if (r > worst) { worst = r; wx = x[i]; }
    }
    CHECK(worst < EXP_REL_BOUND, "%s exp: relative error %.3g at %.9g", name, worst, wx);
    /* gradual underflow */
    int nsub = 0;
    for (int i = 0; i < 100000; i++) x[i] = -103.9f + 16.5f * i / 100000.0f;
    vexp(x, y, 100000);
    for (int i = 0; i < 100000; i++) {
        double e = exp((double)x[i]);
        nsub += fabs(y[i] - e) > ldexp(1.0, -149) + EXP_REL_BOUND * e;
    }
    CHECK(nsub == 0, "%s exp: %d results in [-103.9, -87.4] off by more than 2^-149", name, nsub);
    const float sx[] = {0.0f, -0.0f, 88.72f, 88.73f, 89.0f, 1000.0f, INFINITY, -103.98f,
                        -104.0f, -1000.0f, -INFINITY, NAN};
    const int ns = (int)(sizeof sx / sizeof sx[0]);
    vexp(sx, y, ns);
    CHECK(y[0] == 1.0f && y[1] == 1.0f, "%s exp(0) = %.9g", name, y[0]);
    CHECK(isfinite(y[2]) && fabs(y[2] / exp((double)sx[2]) - 1) < EXP_REL_BOUND, "%s exp(88.72) = %g", name, y[2]);
    for (int i = 3; i <= 6; i++) CHECK(isinf(y[i]) && y[i] > 0, "%s exp(%g) = %g", name, sx[i], y[i]);
    for (int i = 7; i <= 10; i++) CHECK(y[i] == 0.0f, "%s exp(%g) = %g", name, sx[i], y[i]);
    CHECK(isnan(y[11]), "%s exp(NaN) = %g", name, y[11]);
    /* tail lengths 0 .. 40 write exactly n results */
    for (int n = 0; n <= 40; n++) {
        for (int i = 0; i < 48; i++) { x[i] = 0.1f * i; y[i] = -1.0f; }
        vexp(x, y, n);
        int ok = 1;
        for (int i = 0; i < 48; i++) ok &= i < n ? fabs(y[i] / exp(0.1 * i) - 1) < 1e-6 : y[i] == -1.0f;
        CHECK(ok, "%s exp: n=%d writes wrong elements", name, n);
    }
    printf("  %s exp: max relative error %.3g over a dense sweep of [-87, 88]\n", name, worst);
    free(x);
    free(y);
}
#endif

static void test_accuracy(const mg_kernels *K)
{
    enum { NP = 1 << 22 };
    float *x = malloc(sizeof(float) * NP), *y = malloc(sizeof(float) * NP);
    for (int i = 0; i < NP; i++) x[i] = -80.0f + 160.0f * (float)i / (NP - 1);
    K->silu(x, y, NP);
    double worst = 0, wx = 0;
    for (int i = 0; i < NP; i++) {
        double e = x[i] / (1.0 + exp(-(double)x[i]));
        if (fabs(e) < 1e-37) continue;
        double r = fabs((y[i] - e) / e);
        if (r > worst) { worst = r; wx = x[i]; }
    }
    CHECK(worst < SILU_REL_BOUND, "%s silu: relative error %.3g at %.9g", K->name, worst, wx);
    const float sx[] = {100.0f, 1e30f, INFINITY, NAN};
    K->silu(sx, y, 4);
    CHECK(y[0] == 100.0f && y[1] == 1e30f && isinf(y[2]) && isnan(y[3]),
          "%s silu(100, 1e30, inf, NaN) = %g %g %g %g", K->name, y[0], y[1], y[2], y[3]);
    /* sin and cos through rope: x = (1, 0) gives (cos th, sin th) */
    enum { NPAIR = 4096 };
    float *fr = malloc(sizeof(float) * NPAIR);
    double tw = 0;
    const int poss[] = {1, 7, 100, 4096, 65536, 1 << 20};
    for (size_t pi = 0; pi < sizeof poss / sizeof poss[0]; pi++) {
        for (int i = 0; i < NPAIR; i++) {
            fr[i] = (float)i / NPAIR + 0.5f * (frand() + 1.0f) / NPAIR;
            x[2 * i] = 1.0f;
            x[2 * i + 1] = 0.0f;
        }
        K->rope(x, 2 * NPAIR, poss[pi], fr);
        for (int i = 0; i < NPAIR; i++) {
            double th = (float)poss[pi] * fr[i];
            tw = fmax(tw, fmax(fabs(x[2 * i] - cos(th)), fabs(x[2 * i + 1] - sin(th))));
        }
    }
    CHECK(tw < TRIG_ABS_BOUND, "%s rope: sin/cos absolute error %.3g", K->name, tw);
    printf("  %s: silu max relative error %.3g, rope sin/cos max absolute error %.3g\n", K->name,
           worst, tw);
    free(fr);
    free(x);
    free(y);
}

/* The training kernels' approximations against double formulas (kernels.h states them):
 *  - silu_backward with dy = 1, i.e. silu'(x) = s (1 + x (1 - s)), in [-0.1, 1.1]: absolute
 *    error < SILUB_ABS_BOUND on a dense sweep of [-80, 80], and silu'(+-100) right. The fp32
 *    formula itself limits it (the scalar table with libm's expf measures the same 9.75e-7,
 *    at x = 16.6): 1 - s loses to cancellation up to 6e-8 (half an ulp of 1), times x;
 *  - cross_entropy_row: loss (absolute) and dl (absolute, in units of scale) within
 *    CE_BOUND of long double formulas, on rows of 1 .. 4099 logits of scale 1 .. 30. */
#define SILUB_ABS_BOUND 1.2e-6
#define CE_BOUND 4e-7

static void test_train_accuracy(const mg_kernels *K)
{
    enum { NP = 1 << 22 };
    float *x = malloc(sizeof(float) * NP), *dy = malloc(sizeof(float) * NP), *y = malloc(sizeof(float) * NP);
    for (int i = 0; i < NP; i++) {
        x[i] = -80.0f + 160.0f * (float)i / (NP - 1);
        dy[i] = 1.0f;
    }
    K->silu_backward(x, dy, y, NP);
    double worst = 0, wx = 0;
    for (int i = 0; i < NP; i++) {
        const double s = 1.0 / (1.0 + exp(-(double)x[i])), d = fabs(y[i] - s * (1.0 + x[i] * (1.0 - s)));
        if (d > worst || isnan(d)) { worst = isnan(d) ? INFINITY : d; wx = x[i]; }
    }
    CHECK(worst < SILUB_ABS_BOUND, "%s silu_backward: absolute error %.3g at %.9g", K->name, worst, wx);
    const float sx[] = {100.0f, -100.0f, 0.0f}, sd[] = {3.0f, 3.0f, 3.0f};
    K->silu_backward(sx, sd, y, 3);
    CHECK(y[0] == 3.0f && y[1] == 0.0f && y[2] == 1.5f, "%s silu_backward(100, -100, 0) * 3 = %g %g %g",
          K->name, y[0], y[1], y[2]);
    /* cross-entropy rows */
    double wl = 0, wd = 0;
    const int ns[] = {1, 2, 5, 17, 255, 1000, 4099};
    for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++)
        for (int rep = 0; rep < 3; rep++) {
            const int n = ns[ni], t = irand(n);
            const float ls = rep == 0 ? 1.0f : rep == 1 ? 10.0f : 30.0f, scale = 0.25f;
            for (int i = 0; i < n; i++) x[i] = ls * frand();
            const double loss = K->cross_entropy_row(x, n, t, scale, y);
            long double mx = x[0], sum = 0;
            for (int i = 1; i < n; i++) mx = x[i] > mx ? x[i] : mx;
            for (int i = 0; i < n; i++) sum += expl(x[i] - mx);
            const long double lse = mx + logl(sum);
            wl = fmax(wl, fabs((double)(lse - x[t]) - loss));
            for (int i = 0; i < n; i++) {
                long double d = expl(x[i] - lse) - (i == t);
                wd = fmax(wd, fabs((double)(d - y[i] / (long double)scale)));
            }
        }
    CHECK(wl < CE_BOUND && wd < CE_BOUND, "%s cross_entropy_row: loss error %.3g, dl error %.3g scale",
          K->name, wl, wd);
    printf("  %s: silu_backward max absolute error %.3g; cross_entropy_row loss error %.3g, "
           "dl error %.3g scale\n", K->name, worst, wl, wd);
    free(x);
    free(dy);
    free(y);
}

/* The x86 tables compute adamw and silu_backward with the same operations (and the same
 * exp): the same bits (kernels.h). */
static void test_x86_same_bits(const mg_kernels *A, const mg_kernels *B)
{
    enum { N = 1001 };
    float *b0, *b1, *b2, *b3, *b4, *b5, *b6;
    float *x = pbuf(N, 16.0f, &b0), *g = pbuf(N, 1.0f, &b1), *p1 = pbuf(N, 1.0f, &b2);
    float *m1 = pbuf(N, 0.1f, &b3), *v1 = pbuf(N, 0.1f, &b4), *y1 = pbuf(N, 0, &b5), *y2 = pbuf(N, 0, &b6);
    float p2[N], m2[N], v2[N];
    for (int i = 0; i < N; i++) v1[i] = fabsf(v1[i]);
    memcpy(p2, p1, sizeof p2);
    memcpy(m2, m1, sizeof m2);
    memcpy(v2, v1, sizeof v2);
    A->adamw(p1, g, m1, v1, N, 3e-3, 0.1, 0.9, 0.95, 1e-8, 0.7, 0.03, 0.2);
    B->adamw(p2, g, m2, v2, N, 3e-3, 0.1, 0.9, 0.95, 1e-8, 0.7, 0.03, 0.2);
    CHECK(memcmp(p1, p2, sizeof p2) == 0 && memcmp(m1, m2, sizeof m2) == 0 && memcmp(v1, v2, sizeof v2) == 0,
          "adamw: %s and %s differ", A->name, B->name);
    A->silu_backward(x, g, y1, N);
    B->silu_backward(x, g, y2, N);
    CHECK(memcmp(y1, y2, sizeof(float) * N) == 0, "silu_backward: %s and %s differ", A->name, B->name);
    pfree(b0); pfree(b1); pfree(b2); pfree(b3); pfree(b4); pfree(b5); pfree(b6);
}

/* ------------------------------------------------------------------ selection */

static int compiled_in(const char *name)
{
    if (strcmp(name, "scalar") == 0) return 1;
#if defined(MG_HAVE_AVX2)
    if (strcmp(name, "avx2") == 0) return 1;
#endif
#if defined(MG_HAVE_AVX512)
    if (strcmp(name, "avx512") == 0) return 1;
#endif
#if defined(MG_HAVE_NEON)
    if (strcmp(name, "neon") == 0) return 1;
#endif
    return 0;
}

int main(void)
{
    const char *names[] = {"avx512", "avx2", "neon", "scalar"}; /* best first */
    char usable[64] = "";
    int ran = 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const mg_kernels *K = mg_kernels_by_name(names[i]);
        if (!K) {
            if (compiled_in(names[i]))
                printf("  %s: compiled in, but not available on this CPU (or OS): not tested here\n", names[i]);
            else
                printf("  %s: not compiled in: not tested here\n", names[i]);
            continue;
        }
        CHECK(strcmp(K->name, names[i]) == 0, "mg_kernels_by_name(%s) gives %s", names[i], K->name);
        snprintf(usable + strlen(usable), sizeof usable - strlen(usable), "%s%s", *usable ? " " : "", names[i]);
        test_norms(K);
        test_timestep_norm(K);
        test_cema_scan(K);
        test_elementwise(K);
        test_conversions(K);
        test_accuracy(K);
        test_train_accuracy(K);
        if (K != &mg_kernels_scalar) test_against_scalar(K);
        printf("  %s: tested\n", K->name);
        ran++;
    }
#if defined(MG_HAVE_AVX2)
    if (mg_kernels_by_name("avx2")) test_exp("avx2", mg_avx2_exp);
#endif
#if defined(MG_HAVE_AVX512)
    if (mg_kernels_by_name("avx512")) test_exp("avx512", mg_avx512_exp);
#endif
    if (mg_kernels_by_name("avx2") && mg_kernels_by_name("avx512"))
        test_x86_same_bits(mg_kernels_by_name("avx2"), mg_kernels_by_name("avx512"));
    CHECK(ran >= 1 && mg_kernels_by_name("scalar") == &mg_kernels_scalar,
          "the scalar table must always be available");
    CHECK(mg_kernels_by_name("sse9") == NULL, "an unknown name gives a table");
    const char *avail = mg_kernels_available();
    printf("  available: %s\n", avail);
    CHECK(strcmp(avail, usable) == 0, "mg_kernels_available() = \"%s\", expected \"%s\"", avail, usable);
    /* MEGALODON_ISA names a table (NULL if unusable here); unset, the best usable one */
    const char *env = getenv("MEGALODON_ISA");
    const mg_kernels *best = mg_kernels_best();
    if (env && *env) {
        CHECK(best == mg_kernels_by_name(env), "MEGALODON_ISA=%s: mg_kernels_best() gives %s", env,
              best ? best->name : "NULL");
        printf("  MEGALODON_ISA=%s selects %s\n", env, best ? best->name : "nothing (NULL)");
    } else {
        CHECK(best && strncmp(avail, best->name, strlen(best->name)) == 0 &&
                  (avail[strlen(best->name)] == ' ' || avail[strlen(best->name)] == 0),
              "mg_kernels_best() gives %s, not the first of \"%s\"", best ? best->name : "NULL", avail);
        printf("  selected: %s\n", best ? best->name : "NULL");
    }
    return test_finish("test-kernels");
}

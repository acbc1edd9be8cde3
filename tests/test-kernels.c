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

static uint32_t seed = 12345;
static float frand(void) /* uniform in [-1, 1) */
{
    seed ^= seed << 13;
    seed ^= seed >> 17;
    seed ^= seed << 5;
    return (float)((seed >> 8) / 8388608.0 - 1.0);
}

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
static void test_conversions(const mg_kernels *K)
{
    uint16_t *h = malloc(sizeof(uint16_t) * 65536);
    float *y = malloc(sizeof(float) * 65536);
    for (int i = 0; i < 65536; i++) h[i] = (uint16_t)i;
    K->f16_to_f32(h, y, 65536);
    int bad = 0;
    for (int i = 0; i < 65536; i++) {
        int sgn = i >> 15, ex = (i >> 10) & 31, man = i & 1023;
        double v;
        if (ex == 0) v = ldexp(man, -24);
        else if (ex == 31) v = man ? NAN : INFINITY;
        else v = ldexp(1024 + man, ex - 25);
        if (sgn) v = -v;
        if (isnan(v) ? !isnan(y[i]) : (y[i] != (float)v || !!signbit(y[i]) != sgn)) bad++;
    }
    CHECK(bad == 0, "%s f16_to_f32: %d of 65536 values wrong", K->name, bad);
    K->bf16_to_f32(h, y, 65536);
    bad = 0;
    for (int i = 0; i < 65536; i++) {
        int sgn = i >> 15, ex = (i >> 7) & 255, man = i & 127;
        double v;
        if (ex == 0) v = ldexp(man, -133);
        else if (ex == 255) v = man ? NAN : INFINITY;
        else v = ldexp(128 + man, ex - 134);
        if (sgn) v = -v;
        if (isnan(v) ? !isnan(y[i]) : (y[i] != (float)v || !!signbit(y[i]) != sgn)) bad++;
    }
    CHECK(bad == 0, "%s bf16_to_f32: %d of 65536 values wrong", K->name, bad);
    free(h);
    free(y);
}

int main(void)
{
    const char *names[] = {"scalar", "avx2", "avx512", "neon"};
    int ran = 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const mg_kernels *K = mg_kernels_by_name(names[i]);
        if (!K) {
            printf("  %s: not built in or not supported by this CPU, not tested here\n", names[i]);
            continue;
        }
        test_norms(K);
        test_timestep_norm(K);
        test_cema_scan(K);
        test_elementwise(K);
        test_conversions(K);
        printf("  %s: tested\n", K->name);
        ran++;
    }
    CHECK(ran >= 1, "the scalar table must always be available");
    CHECK(mg_kernels_best() != NULL, "no kernel table chosen");
    return test_finish("test-kernels");
}

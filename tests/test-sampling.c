/* test-sampling - the sampler (lib/sampling.c) through the public API: greedy and its ties,
 * top-k = 1 is greedy, the temperature limits, top-p and min-p candidate sets worked out by
 * hand, the repetition penalty and its window, determinism (including a fixed expected
 * sequence, so that a change of the generator or of the arithmetic shows), sampling
 * frequencies against the softmax probabilities (chi-square bound, fixed seed), and bad
 * parameters. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "megalodon.h"
#include "test.h"

/* the plain distribution: no top-k, top-p or min-p */
static mg_sampler_params plain(uint64_t seed, float temp)
{
    mg_sampler_params p = mg_sampler_default_params();
    p.seed = seed;
    p.temp = temp;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    return p;
}

static mg_sampler *make(const mg_sampler_params *p, int32_t V)
{
    mg_sampler *s = NULL;
    int rc = mg_sampler_new(p, V, &s);
    CHECK(rc == MG_OK && s, "mg_sampler_new: %d %s", rc, mg_last_error());
    if (!s) exit(1);
    return s;
}

/* counts[V] of n draws */
static void draw(mg_sampler *s, const float *logits, int32_t V, int n, long *counts)
{
    memset(counts, 0, sizeof(long) * V);
    int bad = 0;
    for (int i = 0; i < n; i++) {
        int32_t t = mg_sampler_sample(s, logits);
        if (t >= 0 && t < V)
            counts[t]++;
        else
            bad++;
    }
    CHECK(bad == 0, "%d of %d draws out of range", bad, n);
}

/* Pearson chi-square of counts against expected probabilities (cells with p = 0 must be 0) */
static double chi2(const long *counts, const double *p, int32_t V, int n, int *dof)
{
    double x = 0.0;
    *dof = -1;
    for (int32_t i = 0; i < V; i++) {
        if (p[i] == 0.0) {
            CHECK(counts[i] == 0, "token %d has probability 0 but was drawn %ld times", i, counts[i]);
            continue;
        }
        double e = p[i] * n;
        x += (counts[i] - e) * (counts[i] - e) / e;
        (*dof)++;
    }
    return x;
}

static void softmax(const float *l, int32_t V, double temp, double *p)
{
    double m = -INFINITY, sum = 0.0;
    for (int32_t i = 0; i < V; i++) m = fmax(m, l[i]);
    for (int32_t i = 0; i < V; i++) sum += (p[i] = exp((l[i] - m) / temp));
    for (int32_t i = 0; i < V; i++) p[i] /= sum;
}

static void test_defaults(void)
{
    mg_sampler_params p = mg_sampler_default_params();
    CHECK(p.seed == 0x5eed, "seed %llu", (unsigned long long)p.seed);
    CHECK(p.temp == 0.8f && p.top_k == 40 && p.top_p == 0.95f && p.min_p == 0.05f,
          "temp %g top_k %d top_p %g min_p %g", p.temp, p.top_k, p.top_p, p.min_p);
    CHECK(p.repeat_penalty == 1.0f && p.repeat_last_n == 64, "penalty %g last_n %d",
          p.repeat_penalty, p.repeat_last_n);
    mg_sampler *s = NULL;
    CHECK(mg_sampler_new(NULL, 10, &s) == MG_OK && s, "NULL params = defaults: %s", mg_last_error());
    mg_sampler_free(s);
    mg_sampler_free(NULL);
    mg_sampler_accept(NULL, 3);
}

static void test_greedy(void)
{
    const float l[6] = {0.5f, 3.0f, -1.0f, 3.0f, NAN, 2.9f};
    for (int k = 0; k < 3; k++) {
        mg_sampler_params p = mg_sampler_default_params();
        p.temp = k == 0 ? 0.0f : k == 1 ? -1.0f : -0.0f;
        mg_sampler *s = make(&p, 6);
        for (int i = 0; i < 20; i++) {
            int32_t t = mg_sampler_sample(s, l);
            CHECK(t == 1, "greedy with temp %g: %d, expected 1 (tie: lowest id)", p.temp, t);
        }
        mg_sampler_free(s);
    }
    /* the array is not modified */
    float l2[6];
    memcpy(l2, l, sizeof l);
    mg_sampler_params p = mg_sampler_default_params();
    p.repeat_penalty = 2.0f;
    mg_sampler *s = make(&p, 6);
    mg_sampler_accept(s, 1);
    mg_sampler_sample(s, l2);
    CHECK(memcmp(l, l2, sizeof l) == 0, "logits were modified");
    mg_sampler_free(s);
    /* NaN and -inf never win; all -inf still gives a valid id */
    const float l3[4] = {NAN, -INFINITY, -5.0f, NAN};
    const float l4[3] = {-INFINITY, -INFINITY, -INFINITY};
    for (int g = 0; g < 2; g++) {
        mg_sampler_params q = plain(1, g ? 0.0f : 1.0f);
        s = make(&q, 4);
        for (int i = 0; i < 50; i++) {
            int32_t t = mg_sampler_sample(s, l3);
            CHECK(t == 2, "only token 2 is finite, got %d", t);
        }
        mg_sampler_free(s);
        s = make(&q, 3);
        int32_t t = mg_sampler_sample(s, l4);
        CHECK(t >= 0 && t < 3, "all -inf: %d", t);
        mg_sampler_free(s);
    }
}

static void test_top_k_one(void)
{
    enum { V = 50 };
    float l[V];
    srand(1);
    for (int round = 0; round < 200; round++) {
        for (int i = 0; i < V; i++) l[i] = (float)(rand() % 1000) / 100.0f - 5.0f;
        int32_t best = 0;
        for (int i = 1; i < V; i++)
            if (l[i] > l[best]) best = i;
        mg_sampler_params p = mg_sampler_default_params();
        p.seed = (uint64_t)round;
        p.top_k = 1;
        p.temp = 5.0f;
        p.top_p = 1.0f;
        p.min_p = 0.0f;
        mg_sampler *s = make(&p, V);
        int32_t t = mg_sampler_sample(s, l);
        CHECK(t == best, "round %d: top_k=1 gave %d, greedy %d", round, t, best);
        mg_sampler_free(s);
    }
}

static void test_temperature_limits(void)
{
    const float l[5] = {1.0f, 3.0f, 2.0f, 0.0f, 2.5f};
    long c[5];
    /* very low temperature: the argmax */
    mg_sampler_params p = plain(7, 1e-3f);
    mg_sampler *s = make(&p, 5);
    draw(s, l, 5, 2000, c);
    CHECK(c[1] == 2000, "temp 1e-3: argmax drawn %ld/2000 times", c[1]);
    mg_sampler_free(s);
    /* very high temperature: uniform */
    p = plain(7, 1e4f);
    s = make(&p, 5);
    const int n = 50000;
    draw(s, l, 5, n, c);
    double u[5] = {0.2, 0.2, 0.2, 0.2, 0.2};
    int dof;
    double x = chi2(c, u, 5, n, &dof);
    CHECK(x < 25.0, "temp 1e4: chi2 %.2f (dof %d) against uniform", x, dof);
    mg_sampler_free(s);
}

/* which tokens can be drawn (n draws with a seed) */
static unsigned drawn_set(const mg_sampler_params *p, const float *l, int32_t V, int n)
{
    long c[32];
    mg_sampler *s = make(p, V);
    draw(s, l, V, n, c);
    mg_sampler_free(s);
    unsigned set = 0;
    for (int32_t i = 0; i < V; i++)
        if (c[i]) set |= 1u << i;
    return set;
}

static void test_top_p_min_p(void)
{
    /* probabilities at temperature 1, listed by id:
     * id:   0     1     2     3     4
     * p:   0.10  0.50  0.05  0.20  0.15      sorted: 1, 3, 4, 0, 2 */
    const double pr[5] = {0.10, 0.50, 0.05, 0.20, 0.15};
    float l[5];
    for (int i = 0; i < 5; i++) l[i] = (float)log(pr[i]);
    struct {
        float top_p, min_p;
        unsigned set;
    } cases[] = {
        /* top-p: cumulative 0.50, 0.70, 0.85, 0.95, 1.00 */
        {0.40f, 0.0f, 1u << 1},
        {0.60f, 0.0f, 1u << 1 | 1u << 3},
        {0.75f, 0.0f, 1u << 1 | 1u << 3 | 1u << 4},
        {0.90f, 0.0f, 1u << 1 | 1u << 3 | 1u << 4 | 1u << 0},
        {0.0f, 0.0f, 1u << 1},           /* at least one token */
        {1.0f, 0.0f, 0x1f},              /* off */
        /* min-p: keep p >= min_p * 0.5 */
        {1.0f, 0.25f, 1u << 1 | 1u << 3 | 1u << 4},   /* >= 0.125 */
        {1.0f, 0.35f, 1u << 1 | 1u << 3},             /* >= 0.175 */
        {1.0f, 0.15f, 1u << 1 | 1u << 3 | 1u << 4 | 1u << 0}, /* >= 0.075 */
        {1.0f, 0.9f, 1u << 1},                        /* >= 0.45 */
        {1.0f, 1.0f, 1u << 1},
        /* both: top-p leaves {1, 3, 4, 0}, then min-p 0.35 leaves {1, 3} */
        {0.90f, 0.35f, 1u << 1 | 1u << 3},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        /* at temperature 1 and 2 (the sets do not depend on it: llama.cpp applies the
         * temperature after top-p and min-p) */
        for (int t = 1; t <= 2; t++) {
            mg_sampler_params p = plain(100 + k, (float)t);
            p.top_p = cases[k].top_p;
            p.min_p = cases[k].min_p;
            unsigned got = drawn_set(&p, l, 5, 4000);
            CHECK(got == cases[k].set, "top_p %g min_p %g temp %d: drawn set 0x%x, expected 0x%x",
                  cases[k].top_p, cases[k].min_p, t, got, cases[k].set);
        }
    }
    /* top-k = 2 of the same: {1, 3} */
    mg_sampler_params p = plain(5, 1.0f);
    p.top_k = 2;
    CHECK(drawn_set(&p, l, 5, 4000) == (1u << 1 | 1u << 3), "top_k 2");
    /* and the renormalized frequencies of the top-p 0.75 set: 0.5, 0.2, 0.15 over 0.85 */
    p = plain(11, 1.0f);
    p.top_p = 0.75f;
    mg_sampler *s = make(&p, 5);
    const int n = 60000;
    long c[5];
    draw(s, l, 5, n, c);
    double e[5] = {0.0, 0.50 / 0.85, 0.0, 0.20 / 0.85, 0.15 / 0.85};
    int dof;
    double x = chi2(c, e, 5, n, &dof);
    CHECK(x < 20.0, "top_p 0.75 frequencies: chi2 %.2f (dof %d)", x, dof);
    mg_sampler_free(s);
}

static void test_top_k_ties(void)
{
    /* many ties: top-k keeps the k best, ties broken by lower id */
    enum { V = 1000 };
    static float l[V];
    for (int i = 0; i < V; i++) l[i] = (float)((i * 7919) % 13);
    /* value 12 occurs for ids with i*7919 % 13 == 12; the 5 lowest such ids are the set */
    unsigned char want[V] = {0};
    int need = 5;
    for (int i = 0; i < V && need; i++)
        if (l[i] == 12.0f) {
            want[i] = 1;
            need--;
        }
    mg_sampler_params p = plain(3, 100.0f);
    p.top_k = 5;
    mg_sampler *s = make(&p, V);
    int hits = 0;
    for (int i = 0; i < 3000; i++) {
        int32_t t = mg_sampler_sample(s, l);
        if (t >= 0 && t < V && want[t]) hits++;
    }
    CHECK(hits == 3000, "top_k 5 with ties: %d/3000 draws in the expected set", hits);
    mg_sampler_free(s);
}

static void test_repeat_penalty(void)
{
    mg_sampler_params p = mg_sampler_default_params();
    p.temp = 0.0f;
    p.repeat_penalty = 1.5f;
    p.repeat_last_n = 2;
    /* positive logit divided: 2.0 / 1.5 = 1.33 < 1.9 */
    const float a[4] = {2.0f, 1.9f, -1.0f, -0.9f};
    mg_sampler *s = make(&p, 4);
    CHECK(mg_sampler_sample(s, a) == 0, "no history: argmax 0");
    mg_sampler_accept(s, 0);
    CHECK(mg_sampler_sample(s, a) == 1, "penalized 0 -> 1");
    /* the window: two more tokens push token 0 out */
    mg_sampler_accept(s, 2);
    mg_sampler_accept(s, 3);
    CHECK(mg_sampler_sample(s, a) == 0, "token 0 left the window of 2");
    mg_sampler_free(s);

    /* negative logit multiplied: -1.0 * 1.5 = -1.5 < -1.2 */
    const float b[3] = {-1.0f, -1.2f, -3.0f};
    s = make(&p, 3);
    mg_sampler_accept(s, 0);
    CHECK(mg_sampler_sample(s, b) == 1, "negative logit: penalized 0 -> 1");
    mg_sampler_free(s);

    /* once per distinct token: 4 / 2 = 2 > 1.9 (twice would be 1 < 1.9) */
    const float c[3] = {4.0f, 1.9f, 0.0f};
    p.repeat_penalty = 2.0f;
    p.repeat_last_n = 8;
    s = make(&p, 3);
    mg_sampler_accept(s, 0);
    mg_sampler_accept(s, 0);
    mg_sampler_accept(s, 0);
    CHECK(mg_sampler_sample(s, c) == 0, "penalty applied once per distinct token");
    mg_sampler_accept(s, 57); /* out of range: ignored */
    CHECK(mg_sampler_sample(s, c) == 0, "out-of-range history ignored");
    mg_sampler_free(s);

    /* repeat_last_n = 0: off */
    p.repeat_last_n = 0;
    s = make(&p, 4);
    mg_sampler_accept(s, 0);
    CHECK(mg_sampler_sample(s, a) == 0, "repeat_last_n 0 disables the penalty");
    mg_sampler_free(s);

    /* penalty < 1 rewards repetition */
    p.repeat_last_n = 4;
    p.repeat_penalty = 0.5f;
    s = make(&p, 4);
    mg_sampler_accept(s, 1);
    CHECK(mg_sampler_sample(s, a) == 1, "penalty 0.5 favours token 1 (1.9 / 0.5 = 3.8)");
    mg_sampler_free(s);
}

static void test_determinism(void)
{
    enum { V = 20, N = 500 };
    float l[V];
    for (int i = 0; i < V; i++) l[i] = (float)sin(i * 1.3) * 2.0f;
    mg_sampler_params p = mg_sampler_default_params(); /* temp 0.8, top-k 40, top-p, min-p */
    p.seed = 1234;
    p.repeat_penalty = 1.1f;
    int32_t a[N], b[N];
    for (int r = 0; r < 2; r++) {
        mg_sampler *s = make(&p, V);
        for (int i = 0; i < N; i++) {
            int32_t t = mg_sampler_sample(s, l);
            int32_t *dst = r ? b : a;
            dst[i] = t;
            mg_sampler_accept(s, t);
        }
        mg_sampler_free(s);
    }
    CHECK(memcmp(a, b, sizeof a) == 0, "same seed, same logits: same tokens");
    p.seed = 1235;
    mg_sampler *s = make(&p, V);
    int same = 0;
    for (int i = 0; i < N; i++) {
        int32_t t = mg_sampler_sample(s, l);
        same += t == a[i];
        mg_sampler_accept(s, t);
    }
    mg_sampler_free(s);
    CHECK(same < N, "another seed gives another sequence");

    /* a fixed expected sequence: the generator (splitmix64-seeded xoshiro256**) and the
     * arithmetic are part of the contract "same seed, same token on every machine" */
    const float q[8] = {0.0f, 1.0f, 2.0f, 0.5f, -1.0f, 1.5f, 0.25f, 1.75f};
    mg_sampler_params pp = plain(42, 1.0f);
    s = make(&pp, 8);
    char got[64] = "", *w = got;
    for (int i = 0; i < 16; i++) w += sprintf(w, "%d", mg_sampler_sample(s, q));
    mg_sampler_free(s);
    const char *expect = "2756411315521753"; /* also computed by an independent Python model */
    CHECK(strcmp(got, expect) == 0, "seed 42 sequence %s, expected %s", got, expect);
}

static void test_frequencies(void)
{
    enum { V = 8 };
    const float l[V] = {0.3f, -0.5f, 1.2f, 0.0f, 0.8f, -1.5f, 0.6f, 1.0f};
    const double temps[3] = {1.0, 0.5, 2.0};
    const int n = 100000;
    for (int k = 0; k < 3; k++) {
        mg_sampler_params p = plain(99 + k, (float)temps[k]);
        mg_sampler *s = make(&p, V);
        long c[V];
        double e[V];
        draw(s, l, V, n, c);
        softmax(l, V, temps[k], e);
        int dof;
        double x = chi2(c, e, V, n, &dof);
        /* dof 7: P(chi2 > 29) ~ 1.4e-4; the seed is fixed, so this is deterministic */
        CHECK(x < 29.0, "temp %g: chi2 %.2f (dof %d)", temps[k], x, dof);
        mg_sampler_free(s);
    }
}

static void expect_bad(mg_sampler_params p, int32_t V, const char *word)
{
    mg_sampler *s = (mg_sampler *)&p; /* must be reset to NULL */
    int rc = mg_sampler_new(&p, V, &s);
    CHECK(rc == MG_ERR_INVALID_ARG && s == NULL, "bad %s accepted (rc %d)", word, rc);
    CHECK(strstr(mg_last_error(), word) != NULL, "message '%s' does not name %s", mg_last_error(),
          word);
}

static void test_bad_params(void)
{
    mg_sampler_params d = mg_sampler_default_params(), p;
    p = d; p.temp = NAN;            expect_bad(p, 10, "temperature");
    p = d; p.temp = INFINITY;       expect_bad(p, 10, "temperature");
    p = d; p.top_p = -0.1f;         expect_bad(p, 10, "top_p");
    p = d; p.top_p = NAN;           expect_bad(p, 10, "top_p");
    p = d; p.min_p = -0.1f;         expect_bad(p, 10, "min_p");
    p = d; p.min_p = 1.5f;          expect_bad(p, 10, "min_p");
    p = d; p.min_p = NAN;           expect_bad(p, 10, "min_p");
    p = d; p.repeat_penalty = 0.0f; expect_bad(p, 10, "repeat_penalty");
    p = d; p.repeat_penalty = -1.f; expect_bad(p, 10, "repeat_penalty");
    p = d; p.repeat_penalty = NAN;  expect_bad(p, 10, "repeat_penalty");
    p = d; p.repeat_last_n = -1;    expect_bad(p, 10, "repeat_last_n");
    expect_bad(d, 0, "n_vocab");
    CHECK(mg_sampler_new(&d, 10, NULL) == MG_ERR_INVALID_ARG, "NULL out");
    CHECK(mg_sampler_sample(NULL, NULL) == -1, "NULL sampler");
    /* the edges that are allowed */
    p = d; p.top_p = 0.0f; p.min_p = 1.0f; p.top_k = -3; p.temp = -2.0f; p.repeat_last_n = 0;
    mg_sampler *s = NULL;
    CHECK(mg_sampler_new(&p, 1, &s) == MG_OK, "edge values: %s", mg_last_error());
    const float one = 0.0f;
    CHECK(mg_sampler_sample(s, &one) == 0, "one-token vocabulary");
    mg_sampler_free(s);
}

int main(void)
{
    test_defaults();
    test_greedy();
    test_top_k_one();
    test_temperature_limits();
    test_top_p_min_p();
    test_top_k_ties();
    test_repeat_penalty();
    test_determinism();
    test_frequencies();
    test_bad_params();
    return test_finish("test-sampling");
}

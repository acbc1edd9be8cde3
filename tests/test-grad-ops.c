/* test-grad-ops - every backward op of the CPU backend (lib/backend.h, "training") against
 * finite differences of its forward op, on random inputs of odd sizes, for every kernel
 * table of this CPU (1 thread) and the best one with 2 threads.
 *
 * Method: each forward op has a double-precision twin written here from the formula in
 * backend.h / docs/model.md. The test first checks the backend's fp32 forward op against its twin
 * (relative TOL_FWD of the output's largest element), then compares the backward op with the
 * central finite differences, in double, of loss = sum(r * y(inputs)) for a random r
 * (step 1e-5 * max(1, |v|): truncation and rounding errors ~1e-9, far below the tolerances).
 * A gradient is compared per tensor as max|c - fd| / max|fd| <= TOL (TOL_CEMA for CEMA,
 * whose fp32 recurrence and FFT accumulate more rounding).
 *
 * Also checked: parameter gradients (dW, db, dw, dp, dq, ...) are ADDED to their buffers
 * (the buffers are pre-filled with random values), inputs' gradients are written (the
 * buffers hold garbage before), matmul_backward's dx_add adds, dx == NULL / db == NULL are
 * accepted, the norms without weights, timestep_norm with a nonzero prior (count, mean,
 * var), CEMA with both algorithms (x, p, q, eta, omega), attention's kept probabilities,
 * cross_entropy's accumulated loss and in-place (aliased) dlogits. */
#include "config.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "kernels.h"
#include "test.h"

#define TOL 1e-5      /* backward op vs finite differences, relative to max|fd| */
#define TOL_CEMA 2e-5 /* CEMA (long fp32 recurrences / FFT convolutions) */
#define TOL_FWD 2e-6  /* fp32 forward op vs its double twin */

/* ------------------------------------------------------------------ random numbers */
static uint64_t rng = 0x2545F4914F6CDD1Dull;
static double urand(void) /* [0, 1) */
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return (double)((rng * 0x2545F4914F6CDD1Dull) >> 11) * 0x1.0p-53;
}
static void fill(float *a, size_t n, double lo, double hi)
{
    for (size_t i = 0; i < n; i++) a[i] = (float)(lo + (hi - lo) * urand());
}
static float *fnew(size_t n, double lo, double hi)
{
    float *a = malloc(sizeof(float) * (n ? n : 1));
    fill(a, n, lo, hi);
    return a;
}
static float *fdup(const float *a, size_t n)
{
    float *b = malloc(sizeof(float) * (n ? n : 1));
    memcpy(b, a, sizeof(float) * n);
    return b;
}

/* ------------------------------------------------------------------ worst errors per op */
#define MAX_OPS 32
static struct { const char *op; double err; char where[96]; } worst[MAX_OPS];
static int n_worst = 0;
static const char *cur_be = "";

static void note(const char *op, const char *what, double e)
{
    int i = 0;
    while (i < n_worst && strcmp(worst[i].op, op) != 0) i++;
    if (i == n_worst) {
        if (n_worst == MAX_OPS) return;
        worst[n_worst].op = op;
        worst[n_worst].err = -1;
        n_worst++;
    }
    if (e > worst[i].err || isnan(e)) {
        worst[i].err = isnan(e) ? INFINITY : e;
        snprintf(worst[i].where, sizeof worst[i].where, "%s %s", cur_be, what);
    }
}

/* max|c - r| / max(max|r|, 1e-30); NaN-safe (NaN gives INFINITY) */
static double rel_err(const float *c, const double *r, size_t n)
{
    double m = 0, e = 0;
    for (size_t i = 0; i < n; i++) {
        if (fabs(r[i]) > m) m = fabs(r[i]);
        double d = fabs((double)c[i] - r[i]);
        if (!(d <= e)) e = isnan(d) ? INFINITY : d;
    }
    return e / (m > 1e-30 ? m : 1e-30);
}

static void cmp(const char *op, const char *what, const float *c, const double *r, size_t n,
                double tol)
{
    double e = rel_err(c, r, n);
    note(op, what, e);
    CHECK(e <= tol, "%s: %s %s: relative error %.3g > %.3g", cur_be, op, what, e, tol);
}

/* c - base (what an op added to a pre-filled buffer) */
static float *added(const float *c, const float *base, size_t n)
{
    float *d = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) d[i] = c[i] - base[i];
    return d;
}

static void cmp_added(const char *op, const char *what, const float *c, const float *base,
                      const double *r, size_t n, double tol)
{
    float *d = added(c, base, n);
    cmp(op, what, d, r, n, tol);
    free(d);
}

/* ------------------------------------------------------------------ finite differences */
#define MAXV 6
typedef void (*twin_fn)(const void *ctx, double *const *v, double *y);
typedef struct {
    twin_fn f;
    const void *ctx;
    int nv;
    const float *in[MAXV]; /* the op's float inputs */
    size_t n[MAXV];
    size_t ny;
    const float *r; /* loss = sum r * y */
} problem;

static double loss_of(const problem *pb, double *const *v, double *y)
{
    pb->f(pb->ctx, v, y);
    double s = 0;
    for (size_t i = 0; i < pb->ny; i++) s += (double)pb->r[i] * y[i];
    return s;
}

/* The twin's output y (ny) and the finite-difference gradient of every input (g[i], n[i]). */
static void fd(const problem *pb, double *y_out, double **g)
{
    double *v[MAXV];
    for (int i = 0; i < pb->nv; i++) {
        v[i] = malloc(sizeof(double) * (pb->n[i] ? pb->n[i] : 1));
        for (size_t j = 0; j < pb->n[i]; j++) v[i][j] = pb->in[i][j];
    }
    double *y = malloc(sizeof(double) * pb->ny);
    pb->f(pb->ctx, v, y_out);
    for (int i = 0; i < pb->nv; i++)
        for (size_t j = 0; j < pb->n[i]; j++) {
            double x0 = v[i][j], h = 1e-5 * (fabs(x0) > 1 ? fabs(x0) : 1);
            v[i][j] = x0 + h;
            double lp = loss_of(pb, v, y);
            v[i][j] = x0 - h;
            double lm = loss_of(pb, v, y);
            v[i][j] = x0;
            g[i][j] = (lp - lm) / (2 * h);
        }
    for (int i = 0; i < pb->nv; i++) free(v[i]);
    free(y);
}

static double **galloc(const problem *pb)
{
    double **g = calloc(MAXV, sizeof *g);
    for (int i = 0; i < pb->nv; i++) g[i] = malloc(sizeof(double) * (pb->n[i] ? pb->n[i] : 1));
    return g;
}
static void gfree(const problem *pb, double **g)
{
    for (int i = 0; i < pb->nv; i++) free(g[i]);
    free(g);
}

static int have(const void *fn, const char *op)
{
    CHECK(fn != NULL, "%s: the CPU backend has no %s", cur_be, op);
    return fn != NULL;
}

/* ------------------------------------------------------------------ matmul */
typedef struct { int M, K, N, bias; } mm_ctx;
static void mm_twin(const void *c_, double *const *v, double *y)
{
    const mm_ctx *c = c_;
    for (int m = 0; m < c->M; m++)
        for (int n = 0; n < c->N; n++) {
            double s = c->bias ? v[2][n] : 0;
            for (int k = 0; k < c->K; k++) s += v[0][(size_t)m * c->K + k] * v[1][(size_t)n * c->K + k];
            y[(size_t)m * c->N + n] = s;
        }
}

static void test_matmul(mg_backend *be, int M, int K, int N, int bias)
{
    if (!have((void *)be->matmul_backward, "matmul_backward")) return;
    char what[64];
    snprintf(what, sizeof what, "M=%d K=%d N=%d%s", M, K, N, bias ? " bias" : "");
    float *x = fnew((size_t)M * K, -1, 1), *W = fnew((size_t)N * K, -1, 1), *b = fnew(N, -1, 1);
    float *r = fnew((size_t)M * N, -1, 1), *y = fnew((size_t)M * N, 0, 0);
    mm_ctx c = {M, K, N, bias};
    problem pb = {mm_twin, &c, bias ? 3 : 2, {x, W, b}, {(size_t)M * K, (size_t)N * K, N},
                  (size_t)M * N, r};
    double *yt = malloc(sizeof(double) * pb.ny), **g = galloc(&pb);
    fd(&pb, yt, g);
    const mg_weight Wt = mg_weight_of_f32(W, N, K);
    CHECK(be->matmul(be, x, M, K, &Wt, N, bias ? b : NULL, y) == MG_OK, "matmul");
    cmp("matmul", what, y, yt, pb.ny, TOL_FWD);

    for (int dx_add = 0; dx_add <= 1; dx_add++) {
        float *dx0 = fnew((size_t)M * K, -1, 1), *dW0 = fnew((size_t)N * K, -1, 1),
              *db0 = fnew(N, -1, 1);
        float *dx = fdup(dx0, (size_t)M * K), *dW = fdup(dW0, (size_t)N * K), *db = fdup(db0, N);
        CHECK(be->matmul_backward(be, x, M, K, W, N, r, dx, dx_add, dW, bias ? db : NULL) ==
                  MG_OK, "matmul_backward");
        char w2[96];
        snprintf(w2, sizeof w2, "%s dx (dx_add=%d)", what, dx_add);
        if (dx_add)
            cmp_added("matmul_backward", w2, dx, dx0, g[0], (size_t)M * K, TOL);
        else
            cmp("matmul_backward", w2, dx, g[0], (size_t)M * K, TOL);
        snprintf(w2, sizeof w2, "%s dW (added)", what);
        cmp_added("matmul_backward", w2, dW, dW0, g[1], (size_t)N * K, TOL);
        if (bias) {
            snprintf(w2, sizeof w2, "%s db (added)", what);
            cmp_added("matmul_backward", w2, db, db0, g[2], N, TOL);
        }
        free(dx0), free(dW0), free(db0), free(dx), free(dW), free(db);
    }
    /* dx == NULL (and db == NULL): only dW */
    float *dW0 = fnew((size_t)N * K, -1, 1), *dW = fdup(dW0, (size_t)N * K);
    CHECK(be->matmul_backward(be, x, M, K, W, N, r, NULL, 0, dW, NULL) == MG_OK,
          "matmul_backward dx NULL");
    cmp_added("matmul_backward", "dx=NULL dW", dW, dW0, g[1], (size_t)N * K, TOL);
    free(dW0), free(dW);
    free(x), free(W), free(b), free(r), free(y), free(yt);
    gfree(&pb, g);
}

/* ------------------------------------------------------------------ rms / layer norm */
typedef struct { int rows, n, affine, bias, layer; double eps; } norm_ctx;
static void norm_twin(const void *c_, double *const *v, double *y)
{
    const norm_ctx *c = c_;
    for (int r = 0; r < c->rows; r++) {
        const double *x = v[0] + (size_t)r * c->n;
        double mu = 0, ss = 0;
        if (c->layer) {
            for (int i = 0; i < c->n; i++) mu += x[i];
            mu /= c->n;
        }
        for (int i = 0; i < c->n; i++) ss += (x[i] - mu) * (x[i] - mu);
        double rs = 1.0 / sqrt(ss / c->n + c->eps);
        for (int i = 0; i < c->n; i++) {
            double t = (x[i] - mu) * rs;
            if (c->affine) t *= 1.0 + v[1][i];
            if (c->bias) t += v[2][i];
            y[(size_t)r * c->n + i] = t;
        }
    }
}

static void test_norm(mg_backend *be, int layer, int rows, int n, int affine)
{
    const char *op = layer ? "layer_norm_backward" : "rms_norm_backward";
    if (!have(layer ? (void *)be->layer_norm_backward : (void *)be->rms_norm_backward, op)) return;
    char what[64];
    snprintf(what, sizeof what, "rows=%d n=%d%s", rows, n, affine ? "" : " no-affine");
    const float eps = 1e-5f;
    size_t N = (size_t)rows * n;
    float *x = fnew(N, -1.5, 2), *w = fnew(n, -0.5, 0.5), *b = fnew(n, -0.5, 0.5);
    float *r = fnew(N, -1, 1), *y = fnew(N, 0, 0);
    norm_ctx c = {rows, n, affine, layer && affine, layer, eps};
    problem pb = {norm_twin, &c, 1 + affine + (layer && affine), {x, w, b}, {N, n, n}, N, r};
    double *yt = malloc(sizeof(double) * N), **g = galloc(&pb);
    fd(&pb, yt, g);
    if (layer)
        be->layer_norm(be, x, rows, n, affine ? w : NULL, affine ? b : NULL, eps, y);
    else
        be->rms_norm(be, x, rows, n, affine ? w : NULL, eps, y);
    cmp(layer ? "layer_norm" : "rms_norm", what, y, yt, N, TOL_FWD);

    float *dx = fnew(N, 5, 6); /* garbage: dx is written */
    float *dw0 = fnew(n, -1, 1), *db0 = fnew(n, -1, 1), *dw = fdup(dw0, n), *db = fdup(db0, n);
    int rc = layer ? be->layer_norm_backward(be, x, rows, n, affine ? w : NULL, eps, r, dx,
                                             affine ? dw : NULL, affine ? db : NULL)
                   : be->rms_norm_backward(be, x, rows, n, affine ? w : NULL, eps, r, dx,
                                           affine ? dw : NULL);
    CHECK(rc == MG_OK, "%s", op);
    char w2[96];
    snprintf(w2, sizeof w2, "%s dx", what);
    cmp(op, w2, dx, g[0], N, TOL);
    if (affine) {
        snprintf(w2, sizeof w2, "%s dw (added)", what);
        cmp_added(op, w2, dw, dw0, g[1], n, TOL);
        if (layer) {
            snprintf(w2, sizeof w2, "%s db (added)", what);
            cmp_added(op, w2, db, db0, g[2], n, TOL);
        }
    }
    free(x), free(w), free(b), free(r), free(y), free(yt), free(dx), free(dw0), free(db0);
    free(dw), free(db);
    gfree(&pb, g);
}

/* ------------------------------------------------------------------ timestep norm */
typedef struct {
    int S, L, D, G; /* S sequences of L rows, each from (count0, mean0, var0) */
    double eps;
    int64_t count0;
    const float *mean0, *var0;
    double *cmean, *crstd; /* L x G, filled by the twin when not NULL */
} tn_ctx;
static void tn_twin(const void *c_, double *const *v, double *y)
{
    const tn_ctx *c = c_;
    const int Dg = c->D / c->G;
    for (int sq = 0; sq < c->S; sq++)
    for (int g = 0; g < c->G; g++) {
        double n = (double)c->count0, mu = c->mean0[g], var = c->var0[g];
        for (int t = sq * c->L; t < (sq + 1) * c->L; t++) {
            const double *x = v[0] + (size_t)t * c->D + g * Dg;
            double gm = 0, gv = 0;
            for (int k = 0; k < Dg; k++) gm += x[k];
            gm /= Dg;
            for (int k = 0; k < Dg; k++) gv += (x[k] - gm) * (x[k] - gm);
            gv /= Dg;
            double n1 = n + 1, c1 = n / n1, c2 = 1 / n1, d = gm - mu;
            mu = c1 * mu + c2 * gm;
            var = c1 * var + c2 * gv + (c1 * d) * (c2 * d);
            n = n1;
            double rs = 1 / sqrt(var + c->eps);
            if (c->cmean) {
                c->cmean[(size_t)t * c->G + g] = mu;
                c->crstd[(size_t)t * c->G + g] = rs;
            }
            for (int k = 0; k < Dg; k++) {
                int i = g * Dg + k;
                y[(size_t)t * c->D + i] = (x[k] - mu) * rs * (1 + v[1][i]) + v[2][i];
            }
        }
    }
}

static void test_timestep_norm(mg_backend *be, int S, int L, int D, int G, int64_t count0)
{
    if (!have((void *)be->timestep_norm_train, "timestep_norm_train") ||
        !have((void *)be->timestep_norm_backward, "timestep_norm_backward"))
        return;
    char what[80];
    snprintf(what, sizeof what, "S=%d L=%d D=%d G=%d count0=%lld", S, L, D, G, (long long)count0);
    const float eps = 1e-5f;
    const size_t N = (size_t)S * L * D, NG = (size_t)S * L * G;
    float *x = fnew(N, -1, 1.6), *w = fnew(D, -0.5, 0.5), *b = fnew(D, -0.5, 0.5);
    float *mean0 = fnew(G, -0.5, 0.5), *var0 = fnew(G, 0.3, 1.5);
    if (count0 == 0) /* the fresh state of the model: prior values get weight 0 */
        for (int g = 0; g < G; g++) mean0[g] = 0, var0[g] = 1;
    for (int t = 0; t < S * L; t++) /* a drifting scale, so that the statistics matter */
        for (int i = 0; i < D; i++) x[(size_t)t * D + i] *= 1.0f + 0.1f * (t % L);
    float *r = fnew(N, -1, 1), *y = fnew(N, 0, 0), *y2 = fnew(N, 0, 0);
    double *cm = malloc(sizeof(double) * NG), *cr = malloc(sizeof(double) * NG);
    tn_ctx c = {S, L, D, G, eps, count0, mean0, var0, NULL, NULL};
    problem pb = {tn_twin, &c, 3, {x, w, b}, {N, D, D}, N, r};
    double *yt = malloc(sizeof(double) * N), **g = galloc(&pb);
    fd(&pb, yt, g);
    c.cmean = cm, c.crstd = cr; /* the twin once more, keeping its statistics */
    {
        double *v0 = malloc(sizeof(double) * N), *v1 = malloc(sizeof(double) * D),
               *v2 = malloc(sizeof(double) * D);
        for (size_t i = 0; i < N; i++) v0[i] = x[i];
        for (int i = 0; i < D; i++) v1[i] = w[i], v2[i] = b[i];
        tn_twin(&c, (double *const[]){v0, v1, v2}, yt);
        free(v0), free(v1), free(v2);
    }
    /* the inference op from the same state, sequence by sequence */
    float *mean = fdup(mean0, G), *var = fdup(var0, G);
    for (int sq = 0; sq < S; sq++) {
        int64_t cnt = count0;
        memcpy(mean, mean0, sizeof(float) * G);
        memcpy(var, var0, sizeof(float) * G);
        be->timestep_norm(be, x + (size_t)sq * L * D, L, D, G, w, b, eps, &cnt, mean, var,
                          y + (size_t)sq * L * D);
        CHECK(cnt == count0 + L, "timestep_norm count %lld", (long long)cnt);
    }
    cmp("timestep_norm", what, y, yt, N, TOL_FWD);
    /* the training forward: same y, and the statistics after every step */
    float *fcm = fnew(NG, 0, 0), *fcr = fnew(NG, 0, 0);
    CHECK(be->timestep_norm_train(be, x, S, L, D, G, w, b, eps, count0, mean0, var0, y2, fcm,
                                  fcr) == MG_OK, "timestep_norm_train");
    cmp("timestep_norm_train", what, y2, yt, N, TOL_FWD);
    char w2[112];
    snprintf(w2, sizeof w2, "%s cmean", what);
    cmp("timestep_norm_train", w2, fcm, cm, NG, TOL_FWD);
    snprintf(w2, sizeof w2, "%s crstd", what);
    cmp("timestep_norm_train", w2, fcr, cr, NG, TOL_FWD);

    float *dx = fnew(N, 5, 6), *dw0 = fnew(D, -1, 1), *db0 = fnew(D, -1, 1);
    float *dw = fdup(dw0, D), *db = fdup(db0, D);
    CHECK(be->timestep_norm_backward(be, x, S, L, D, G, w, count0, mean0, fcm, fcr, r, dx, dw,
                                     db) == MG_OK, "timestep_norm_backward");
    snprintf(w2, sizeof w2, "%s dx", what);
    cmp("timestep_norm_backward", w2, dx, g[0], N, TOL);
    snprintf(w2, sizeof w2, "%s dw (added)", what);
    cmp_added("timestep_norm_backward", w2, dw, dw0, g[1], D, TOL);
    snprintf(w2, sizeof w2, "%s db (added)", what);
    cmp_added("timestep_norm_backward", w2, db, db0, g[2], D, TOL);
    free(x), free(w), free(b), free(mean0), free(var0), free(r), free(y), free(y2), free(cm);
    free(cr), free(yt), free(mean), free(var), free(fcm), free(fcr), free(dx), free(dw0);
    free(db0), free(dw), free(db);
    gfree(&pb, g);
}

/* ------------------------------------------------------------------ CEMA */
typedef struct { int S, L, D, N; } cema_ctx;
/* v: x (S*L x D), p (D*N), q (D*N complex), eta (D*N complex), omega (D); every sequence
 * from a zero state */
static void cema_twin(const void *c_, double *const *v, double *y0)
{
    const cema_ctx *c = c_;
    const int L = c->L, D = c->D, N = c->N;
    const double *p = v[1], *q = v[2], *eta = v[3], *om = v[4];
    for (int sq = 0; sq < c->S; sq++)
    for (int d = 0; d < D; d++) {
        const double *x = v[0] + (size_t)sq * L * D;
        double *y = y0 + (size_t)sq * L * D;
        for (int t = 0; t < L; t++) y[(size_t)t * D + d] = om[d] * x[(size_t)t * D + d];
        for (int n = 0; n < N; n++) {
            int i = d * N + n;
            double hr = 0, hi = 0;
            for (int t = 0; t < L; t++) {
                double xt = x[(size_t)t * D + d];
                double nr = q[2 * i] * hr - q[2 * i + 1] * hi + p[i] * xt;
                hi = q[2 * i] * hi + q[2 * i + 1] * hr;
                hr = nr;
                y[(size_t)t * D + d] += eta[2 * i] * hr - eta[2 * i + 1] * hi;
            }
        }
    }
}

static void test_cema(mg_backend *be, mg_cema_algo algo, int S, int L, int D, int N)
{
    if (!have((void *)be->cema_backward, "cema_backward")) return;
    char what[64];
    snprintf(what, sizeof what, "%s S=%d L=%d D=%d N=%d", algo == MG_CEMA_FFT ? "fft" : "scan",
             S, L, D, N);
    size_t nx = (size_t)S * L * D, dn = (size_t)D * N;
    float *x = fnew(nx, -1, 1), *p = fnew(dn, 0.1, 0.9), *q = malloc(sizeof(float) * 2 * dn);
    float *eta = fnew(2 * dn, -1, 1), *om = fnew(D, -1, 1);
    for (size_t i = 0; i < dn; i++) {
        double mag = 0.5 + 0.45 * urand(), ph = 6.2831853 * urand();
        q[2 * i] = (float)(mag * cos(ph));
        q[2 * i + 1] = (float)(mag * sin(ph));
    }
    float *r = fnew(nx, -1, 1), *y = fnew(nx, 0, 0), *h = fnew(2 * dn, 0, 0);
    cema_ctx c = {S, L, D, N};
    problem pb = {cema_twin, &c, 5, {x, p, q, eta, om}, {nx, dn, 2 * dn, 2 * dn, (size_t)D}, nx, r};
    double *yt = malloc(sizeof(double) * nx), **g = galloc(&pb);
    fd(&pb, yt, g);
    mg_cema_coeffs cc = {D, N, p, q, eta, om};
    for (int sq = 0; sq < S; sq++) {
        memset(h, 0, sizeof(float) * 2 * dn);
        CHECK(be->cema(be, algo, x + (size_t)sq * L * D, L, &cc, h, y + (size_t)sq * L * D) ==
                  MG_OK, "cema");
    }
    cmp("cema", what, y, yt, nx, TOL_FWD);

    float *dx = fnew(nx, 5, 6), *dp0 = fnew(dn, -1, 1), *dq0 = fnew(2 * dn, -1, 1);
    float *de0 = fnew(2 * dn, -1, 1), *do0 = fnew(D, -1, 1);
    float *dp = fdup(dp0, dn), *dq = fdup(dq0, 2 * dn), *de = fdup(de0, 2 * dn), *dom = fdup(do0, D);
    CHECK(be->cema_backward(be, algo, x, S, L, &cc, r, dx, dp, dq, de, dom) == MG_OK,
          "cema_backward");
    char w2[96];
    snprintf(w2, sizeof w2, "%s dx", what);
    cmp("cema_backward", w2, dx, g[0], nx, TOL_CEMA);
    snprintf(w2, sizeof w2, "%s dp (added)", what);
    cmp_added("cema_backward", w2, dp, dp0, g[1], dn, TOL_CEMA);
    snprintf(w2, sizeof w2, "%s dq (added)", what);
    cmp_added("cema_backward", w2, dq, dq0, g[2], 2 * dn, TOL_CEMA);
    snprintf(w2, sizeof w2, "%s deta (added)", what);
    cmp_added("cema_backward", w2, de, de0, g[3], 2 * dn, TOL_CEMA);
    snprintf(w2, sizeof w2, "%s domega (added)", what);
    cmp_added("cema_backward", w2, dom, do0, g[4], D, TOL_CEMA);
    free(x), free(p), free(q), free(eta), free(om), free(r), free(y), free(h), free(yt);
    free(dx), free(dp0), free(dq0), free(de0), free(do0), free(dp), free(dq), free(de), free(dom);
    gfree(&pb, g);
}

/* ------------------------------------------------------------------ attention */
typedef struct { int S, L, H, dk, dv; double *P; } att_ctx;
static void att_twin(const void *c_, double *const *v, double *y0)
{
    const att_ctx *c = c_;
    const int L = c->L, H = c->H, dk = c->dk, dv = c->dv;
    double *s = malloc(sizeof(double) * L);
    for (int sq = 0; sq < c->S; sq++)
    for (int hh = 0; hh < H; hh++)
        for (int i = 0; i < L; i++) {
            const double *q = v[0] + (size_t)sq * L * H * dk, *k = v[1] + (size_t)sq * L * H * dk;
            const double *vv = v[2] + (size_t)sq * L * H * dv;
            double *y = y0 + (size_t)sq * L * H * dv;
            double m = -INFINITY, z = 0;
            for (int j = 0; j <= i; j++) {
                double t = 0;
                for (int d = 0; d < dk; d++)
                    t += q[(size_t)i * H * dk + hh * dk + d] * k[(size_t)j * H * dk + hh * dk + d];
                s[j] = t;
                if (t > m) m = t;
            }
            for (int j = 0; j <= i; j++) z += s[j] = exp(s[j] - m);
            for (int d = 0; d < dv; d++) {
                double o = 0;
                for (int j = 0; j <= i; j++) o += s[j] / z * vv[(size_t)j * H * dv + hh * dv + d];
                y[(size_t)i * H * dv + hh * dv + d] = o;
            }
            if (c->P)
                for (int j = 0; j < L; j++)
                    c->P[(((size_t)sq * H + hh) * L + i) * L + j] = j <= i ? s[j] / z : 0;
        }
    free(s);
}

static void test_attention(mg_backend *be, int S, int L, int H, int dk, int dv)
{
    if (!have((void *)be->attention_train, "attention_train") ||
        !have((void *)be->attention_backward, "attention_backward"))
        return;
    char what[64];
    snprintf(what, sizeof what, "S=%d L=%d H=%d dk=%d dv=%d", S, L, H, dk, dv);
    size_t nq = (size_t)S * L * H * dk, nv = (size_t)S * L * H * dv, nP = (size_t)S * H * L * L;
    float *q = fnew(nq, -1.2, 1.2), *k = fnew(nq, -1.2, 1.2), *v = fnew(nv, -1, 1);
    float *r = fnew(nv, -1, 1), *out = fnew(nv, 0, 0), *out2 = fnew(nv, 0, 0), *P = fnew(nP, 7, 8);
    att_ctx c = {S, L, H, dk, dv, NULL};
    problem pb = {att_twin, &c, 3, {q, k, v}, {nq, nq, nv}, nv, r};
    double *yt = malloc(sizeof(double) * nv), **g = galloc(&pb);
    fd(&pb, yt, g);
    double *Pt = malloc(sizeof(double) * nP);
    {
        double *v0 = malloc(sizeof(double) * nq), *v1 = malloc(sizeof(double) * nq),
               *v2 = malloc(sizeof(double) * nv), *yy = malloc(sizeof(double) * nv);
        for (size_t i = 0; i < nq; i++) v0[i] = q[i], v1[i] = k[i];
        for (size_t i = 0; i < nv; i++) v2[i] = v[i];
        c.P = Pt;
        att_twin(&c, (double *const[]){v0, v1, v2}, yy);
        free(v0), free(v1), free(v2), free(yy);
    }
    for (int sq = 0; sq < S; sq++) {
        size_t oq = (size_t)sq * L * H * dk, ov = (size_t)sq * L * H * dv;
        CHECK(be->attention(be, q + oq, k + oq, v + ov, L, L, H, dk, dv, out + ov) == MG_OK,
              "attention");
    }
    cmp("attention", what, out, yt, nv, TOL_FWD);
    CHECK(be->attention_train(be, q, k, v, S, L, H, dk, dv, out2, P) == MG_OK, "attention_train");
    cmp("attention_train", what, out2, yt, nv, TOL_FWD);
    char w2[96];
    snprintf(w2, sizeof w2, "%s P", what);
    cmp("attention_train", w2, P, Pt, nP, TOL_FWD);
    int upper_zero = 1;
    for (int sh = 0; sh < S * H; sh++)
        for (int i = 0; i < L; i++)
            for (int j = i + 1; j < L; j++) upper_zero &= P[((size_t)sh * L + i) * L + j] == 0.0f;
    CHECK(upper_zero, "%s: attention_train: P not zero above the diagonal", cur_be);

    float *dq = fnew(nq, 5, 6), *dk_ = fnew(nq, 5, 6), *dv_ = fnew(nv, 5, 6);
    CHECK(be->attention_backward(be, q, k, v, P, r, S, L, H, dk, dv, dq, dk_, dv_) == MG_OK,
          "attention_backward");
    snprintf(w2, sizeof w2, "%s dq", what);
    cmp("attention_backward", w2, dq, g[0], nq, TOL);
    snprintf(w2, sizeof w2, "%s dk", what);
    cmp("attention_backward", w2, dk_, g[1], nq, TOL);
    snprintf(w2, sizeof w2, "%s dv", what);
    cmp("attention_backward", w2, dv_, g[2], nv, TOL);
    free(q), free(k), free(v), free(r), free(out), free(out2), free(P), free(yt), free(Pt);
    free(dq), free(dk_), free(dv_);
    gfree(&pb, g);
}

/* ------------------------------------------------------------------ silu */
static void silu_twin(const void *c_, double *const *v, double *y)
{
    size_t n = *(const size_t *)c_;
    for (size_t i = 0; i < n; i++) y[i] = v[0][i] / (1 + exp(-v[0][i]));
}

static void test_silu(mg_backend *be, size_t n)
{
    if (!have((void *)be->silu_backward, "silu_backward")) return;
    float *x = fnew(n, -6, 6), *r = fnew(n, -1, 1), *y = fnew(n, 0, 0), *dx = fnew(n, 5, 6);
    problem pb = {silu_twin, &n, 1, {x}, {n}, n, r};
    double *yt = malloc(sizeof(double) * n), **g = galloc(&pb);
    fd(&pb, yt, g);
    be->silu(be, x, y, n);
    char what[32];
    snprintf(what, sizeof what, "n=%zu", n);
    cmp("silu", what, y, yt, n, TOL_FWD);
    CHECK(be->silu_backward(be, x, r, dx, n) == MG_OK, "silu_backward");
    cmp("silu_backward", what, dx, g[0], n, TOL);
    free(x), free(r), free(y), free(dx), free(yt);
    gfree(&pb, g);
}

/* ------------------------------------------------------------------ cross-entropy */
typedef struct { size_t rows; int n; const int32_t *t; } ce_ctx;
static void ce_twin(const void *c_, double *const *v, double *y)
{
    const ce_ctx *c = c_;
    double s = 0;
    for (size_t r = 0; r < c->rows; r++) {
        const double *l = v[0] + r * c->n;
        double m = l[0], z = 0;
        for (int i = 1; i < c->n; i++) m = l[i] > m ? l[i] : m;
        for (int i = 0; i < c->n; i++) z += exp(l[i] - m);
        s += m + log(z) - l[c->t[r]];
    }
    y[0] = s;
}

static void test_cross_entropy(mg_backend *be, size_t rows, int n)
{
    if (!have((void *)be->cross_entropy, "cross_entropy")) return;
    char what[48];
    snprintf(what, sizeof what, "rows=%zu n=%d", rows, n);
    size_t N = rows * n;
    float *l = fnew(N, -3, 3), *dl = fnew(N, 5, 6);
    int32_t *t = malloc(sizeof(int32_t) * rows);
    for (size_t r = 0; r < rows; r++) t[r] = (int32_t)(urand() * n);
    float scale = 0.37f;
    ce_ctx c = {rows, n, t};
    problem pb = {ce_twin, &c, 1, {l}, {N}, 1, &scale}; /* loss = scale * sum of -log p */
    double yt, **g = galloc(&pb);
    fd(&pb, &yt, g);
    double loss = 1.25; /* accumulated into */
    CHECK(be->cross_entropy(be, l, t, rows, n, scale, &loss, dl) == MG_OK, "cross_entropy");
    double e = fabs((loss - 1.25) - yt) / fabs(yt);
    note("cross_entropy", "loss_sum (accumulated)", e);
    CHECK(e <= TOL_FWD, "%s: cross_entropy loss_sum %.9g, expected 1.25 + %.9g", cur_be, loss, yt);
    cmp("cross_entropy", what, dl, g[0], N, TOL);
    /* in place: dlogits aliasing logits gives the same result */
    float *al = fdup(l, N);
    double loss2 = 0;
    CHECK(be->cross_entropy(be, al, t, rows, n, scale, &loss2, al) == MG_OK, "cross_entropy alias");
    CHECK(fabs(loss2 - (loss - 1.25)) <= 1e-12 * fabs(loss2) + 1e-12,
          "%s: cross_entropy in place: loss %.17g vs %.17g", cur_be, loss2, loss - 1.25);
    char w2[80];
    snprintf(w2, sizeof w2, "%s in place", what);
    cmp("cross_entropy", w2, al, g[0], N, TOL);
    free(l), free(dl), free(t), free(al);
    gfree(&pb, g);
}

/* ------------------------------------------------------------------ self-check */
/* The comparison must be able to fail: a gradient off by 3*TOL of its scale is rejected. */
static void self_check(void)
{
    double r[5] = {1, -2, 0.5, 0, 3};
    float c[5] = {1, -2, 0.5f, 0, 3};
    CHECK(rel_err(c, r, 5) == 0, "rel_err of equal arrays");
    c[2] += (float)(3 * TOL * 3);
    CHECK(rel_err(c, r, 5) > TOL, "a perturbed gradient passes the comparison");
    c[2] = NAN;
    CHECK(!(rel_err(c, r, 5) <= TOL), "a NaN gradient passes the comparison");
}

static void run_all(mg_backend *be, const char *label)
{
    cur_be = label;
    rng = 0x2545F4914F6CDD1Dull; /* the same inputs for every backend */
    test_matmul(be, 7, 12, 5, 1);
    test_matmul(be, 7, 12, 5, 0);
    test_matmul(be, 70, 9, 3, 1); /* more than one row block (backend-cpu-matmul.c: 64 rows) */
    test_norm(be, 0, 7, 12, 1);
    test_norm(be, 0, 5, 8, 0);
    test_norm(be, 1, 7, 12, 1);
    test_norm(be, 1, 5, 16, 0);
    test_timestep_norm(be, 1, 7, 12, 3, 0);
    test_timestep_norm(be, 2, 7, 12, 3, 3);
    test_timestep_norm(be, 1, 20, 16, 4, 0);
    test_timestep_norm(be, 3, 9, 15, 5, 11);
    for (int a = 0; a < 2; a++) {
        mg_cema_algo algo = a ? MG_CEMA_FFT : MG_CEMA_SCAN;
        test_cema(be, algo, 1, 7, 12, 3);
        test_cema(be, algo, 2, 7, 12, 3);
        test_cema(be, algo, 1, 1, 5, 2);
        test_cema(be, algo, 2, 40, 5, 3);
        test_cema(be, algo, 1, 33, 3, 4);
    }
    test_attention(be, 1, 7, 2, 4, 3);
    test_attention(be, 2, 7, 2, 4, 3);
    test_attention(be, 1, 13, 1, 6, 5);
    test_attention(be, 3, 1, 3, 2, 2);
    /* past the backend's blocks of 64 query rows (the causal skipping): a block boundary
     * one row in, and a partial third block */
    test_attention(be, 1, 65, 2, 3, 2);
    test_attention(be, 1, 150, 1, 3, 2);
    test_silu(be, 37);
    test_cross_entropy(be, 5, 11);
    test_cross_entropy(be, 1, 37);
}

int main(void)
{
    self_check();
    /* every kernel table of this CPU with 1 thread, the best one with 2 */
    char avail[128];
    snprintf(avail, sizeof avail, "%s", mg_kernels_available());
    int n_be = 0;
    for (char *tok = strtok(avail, " "); tok; tok = strtok(NULL, " ")) {
        mg_backend *be = NULL;
        int rc = mg_backend_cpu_new(1, tok, &be);
        CHECK(rc == MG_OK, "mg_backend_cpu_new(1, %s): %s", tok, mg_last_error());
        if (rc) continue;
        run_all(be, be->name);
        be->free(be);
        n_be++;
    }
    mg_backend *be2 = NULL;
    CHECK(mg_backend_cpu_new(2, NULL, &be2) == MG_OK, "mg_backend_cpu_new(2)");
    if (be2) {
        static char name2[64];
        snprintf(name2, sizeof name2, "%s/2threads", be2->name);
        run_all(be2, name2);
        be2->free(be2);
        n_be++;
    }
    printf("test-grad-ops: %d backends; worst relative errors (tolerance %.0e, CEMA %.0e, "
           "forward %.0e):\n", n_be, TOL, TOL_CEMA, TOL_FWD);
    for (int i = 0; i < n_worst; i++)
        printf("  %-24s %.2e  (%s)\n", worst[i].op, worst[i].err, worst[i].where);
    return test_finish("test-grad-ops");
}

/* backend-cpu-train.c - the CPU backend's training ops: forward variants that keep what the
 * backward needs, and the backward of every op (backend.h states the contract of each).
 *
 * Double accumulators; matrix products through OpenBLAS (single-threaded, as in
 * backend-cpu.c); the row and elementwise loops (norm backwards, softmax, SiLU backward,
 * cross-entropy, AdamW) through the backend's kernel table (simd/kernels.h). Threads split
 * the work only along dimensions whose results are independent (rows, columns, channels,
 * groups, chunk x head, elements), and every sum over rows runs in a fixed order, so
 * gradients are the same bit for bit for any thread count. */
#include "config.h"

#include <cblas.h>
#include <fftw3.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend-cpu.h"
#include "cema-plan.h"
#include "error.h"

#define BLK 64  /* rows (or columns) per block of a split matrix product */
#define COLS 64 /* columns per block of a column sum over rows (norm weight gradients) */

static inline int imin(int a, int b) { return a < b ? a : b; }

/* ---------------------------------------------------------------- matmul */

/* y = x W^T + b:  dx = dy W ;  dW += dy^T x ;  db += sum_rows dy */
static int cpu_matmul_backward(mg_backend *be, const float *x, int M, int K, const float *W,
                               int N, const float *dy, float *dx, int dx_add, float *dW,
                               float *db)
{
    if (M <= 0 || N <= 0 || K <= 0) return MG_OK;
    if (dx) {
        const int nb = (M + BLK - 1) / BLK;
#pragma omp parallel for num_threads(be->n_threads) schedule(static) if (nb > 1)
        for (int b = 0; b < nb; b++) {
            const int m0 = b * BLK, m = imin(BLK, M - m0);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, K, N, 1.0f,
                        dy + (size_t)m0 * N, N, W, K, dx_add ? 1.0f : 0.0f,
                        dx + (size_t)m0 * K, K);
        }
    }
    if (dW) {
        const int nb = (N + BLK - 1) / BLK;
#pragma omp parallel for num_threads(be->n_threads) schedule(static) if (nb > 1)
        for (int b = 0; b < nb; b++) {
            const int n0 = b * BLK, n = imin(BLK, N - n0);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, K, M, 1.0f, dy + n0, N, x,
                        K, 1.0f, dW + (size_t)n0 * K, K);
        }
    }
    if (db) { /* column blocks across threads, rows in order inside (cache-friendly) */
        const int nb = (N + 255) / 256;
#pragma omp parallel for num_threads(be->n_threads) schedule(static) if (nb > 1)
        for (int b = 0; b < nb; b++) {
            const int j0 = b * 256, n = imin(256, N - j0);
            double acc[256] = {0};
            for (int i = 0; i < M; i++) {
                const float *r = dy + (size_t)i * N + j0;
                for (int j = 0; j < n; j++) acc[j] += r[j];
            }
            for (int j = 0; j < n; j++) db[j0 + j] += (float)acc[j];
        }
    }
    return MG_OK;
}

/* ---------------------------------------------------------------- timestep norm */

/* The forward of kernels.h (Welford combine per token and group), from a fresh state, with
 * the statistics after every step kept: cmean[t,g] = mu_t, crstd[t,g] = 1/sqrt(var_t+eps). */
static int cpu_timestep_norm_train(mg_backend *be, const float *x, int S, int L, int D, int G,
                                   const float *w, const float *b, float eps, int64_t count0,
                                   const float *mean0, const float *var0, float *y,
                                   float *cmean, float *crstd)
{
    const int Dg = D / G;
    const int work = S * G;
#pragma omp parallel for num_threads(be->n_threads) schedule(static) if (work > 1)
    for (int sg = 0; sg < work; sg++) {
        const int s = sg / G, g = sg % G;
        double n = (double)count0, mu = mean0[g], var = var0[g];
        for (int t = 0; t < L; t++) {
            const size_t row = (size_t)s * L + t;
            const float *xr = x + row * D + (size_t)g * Dg;
            double gm = 0, gv = 0;
            for (int k = 0; k < Dg; k++) gm += xr[k];
            gm /= Dg;
            for (int k = 0; k < Dg; k++) gv += (xr[k] - gm) * (xr[k] - gm);
            gv /= Dg;
            const double n1 = n + 1, c1 = n / n1, c2 = 1.0 / n1, d = gm - mu;
            mu = c1 * mu + c2 * gm;
            var = c1 * var + c2 * gv + (c1 * d) * (c2 * d);
            n = n1;
            const float m = (float)mu, r = (float)(1.0 / sqrt(var + eps));
            cmean[row * G + g] = m;
            crstd[row * G + g] = r;
            float *yr = y + row * D + (size_t)g * Dg;
            for (int k = 0; k < Dg; k++) {
                const int kk = g * Dg + k;
                yr[k] = (xr[k] - m) * r * (w ? 1.0f + w[kk] : 1.0f) + (b ? b[kk] : 0.0f);
            }
        }
    }
    return MG_OK;
}

/* docs/model.md §18.1, per sequence and group, backwards in time (u_grad, v_grad: the gradients
 * reaching the running mean and variance from later steps):
 *   c1 = (m-1)/m, c2 = 1/m  (m = count after step j)
 *   du = u_grad - r sum_k dy w_k ;  dv = v_grad - r^3/2 sum_k dy (x-u) w_k
 *   dux = c2 du + 2 c1 c2 dv (ux - u_prev) ;  dvx = c2 dv
 *   dx_k = dy_k r w_k + dux/Dg + 2 dvx (x_k - ux)/Dg
 *   u_grad = c1 du - 2 c1 c2 dv (ux - u_prev) ;  v_grad = c1 dv
 * Parallel over groups (their features, weights and statistics are disjoint); the weight
 * gradients are summed over sequences in order. */
static int cpu_timestep_norm_backward(mg_backend *be, const float *x, int S, int L, int D,
                                      int G, const float *w, int64_t count0,
                                      const float *mean0, const float *cmean,
                                      const float *crstd, const float *dy, float *dx,
                                      float *dw, float *db)
{
    const int Dg = D / G;
    const mg_kernels *K = ctx_of(be)->k;
#pragma omp parallel num_threads(be->n_threads) if (G > 1)
    {
        double *acc_w = calloc((size_t)Dg * 2, sizeof(double));
        double *acc_b = acc_w ? acc_w + Dg : NULL;
#pragma omp for schedule(static)
        for (int g = 0; g < G; g++) {
            if (!acc_w) continue;
            const float *wg = w ? w + (size_t)g * Dg : NULL;
            memset(acc_w, 0, sizeof(double) * 2 * Dg);
            for (int s = 0; s < S; s++) {
                double ug = 0, vg = 0, m = (double)count0 + L;
                for (int j = L - 1; j >= 0; j--) {
                    const size_t row = (size_t)s * L + j;
                    const double c1 = (m - 1) / m, c2 = 1.0 / m;
                    m -= 1;
                    const double up = j > 0 ? cmean[(row - 1) * G + g] : mean0[g];
                    const double u = cmean[row * G + g], r = crstd[row * G + g];
                    const float *xr = x + row * D + (size_t)g * Dg;
                    const float *dyr = dy + row * D + (size_t)g * Dg;
                    float *dxr = dx + row * D + (size_t)g * Dg;
                    double sums[3]; /* sum x, sum dy (x-u) w, sum dy w */
                    K->tsnorm_bwd_sums(xr, dyr, wg, Dg, u, r, acc_w, acc_b, sums);
                    const double ux = sums[0] / Dg, ds = sums[1], dsb = sums[2];
                    const double du = ug - r * dsb, dv = vg - 0.5 * r * r * r * ds;
                    const double dux = c2 * du + 2 * c1 * c2 * dv * (ux - up), dvx = c2 * dv;
                    /* dx = dy r w + dux/Dg + (2 dvx/Dg) (x - ux) */
                    K->tsnorm_bwd_dx(xr, dyr, wg, Dg, r, dux / Dg, 2 * dvx / Dg, ux, dxr);
                    ug = c1 * du - 2 * c1 * c2 * dv * (ux - up);
                    vg = c1 * dv;
                }
            }
            for (int k = 0; k < Dg; k++) {
                if (dw) dw[g * Dg + k] += (float)acc_w[k];
                if (db) db[g * Dg + k] += (float)acc_b[k];
            }
        }
        free(acc_w);
    }
    return MG_OK;
}

/* ---------------------------------------------------------------- row norms */

/* y = x r (1+w), r = 1/sqrt(mean(x^2)+eps):
 *   dx = r g - x r^3 mean(g x), g = dy (1+w) ;  dw += sum_rows dy x r */
static int cpu_rms_norm_backward(mg_backend *be, const float *x, size_t rows, int n,
                                 const float *w, float eps, const float *dy, float *dx,
                                 float *dw)
{
    const mg_kernels *K = ctx_of(be)->k;
    float *rr = malloc(sizeof(float) * (rows ? rows : 1));
    if (!rr) return mg_seterr(MG_ERR_NOMEM, "out of memory in rms_norm backward");
#pragma omp parallel for num_threads(be->n_threads) schedule(static) if (rows > 16)
    for (size_t i = 0; i < rows; i++)
        rr[i] = K->rms_norm_backward_row(x + i * n, dy + i * n, w, n, eps, dx + i * n);
    if (dw) { /* column blocks across threads, rows in order inside (each sum as one loop) */
        const int nb = (n + COLS - 1) / COLS;
#pragma omp parallel for num_threads(be->n_threads) schedule(static) if (nb > 1)
        for (int b = 0; b < nb; b++) {
            const int k0 = b * COLS, nk = imin(COLS, n - k0);
            double s[COLS] = {0};
            for (size_t i = 0; i < rows; i++) {
                const float *dyr = dy + i * n + k0, *xr = x + i * n + k0;
                for (int k = 0; k < nk; k++) s[k] += (double)dyr[k] * xr[k] * rr[i];
            }
            for (int k = 0; k < nk; k++) dw[k0 + k] += (float)s[k];
        }
    }
    free(rr);
    return MG_OK;
}

/* xh = (x - mu) r, y = xh (1+w) + b:
 *   dx = r (g - mean(g) - xh mean(g xh)), g = dy (1+w) ;  dw += sum dy xh ;  db += sum dy */
static int cpu_layer_norm_backward(mg_backend *be, const float *x, size_t rows, int n,
                                   const float *w, float eps, const float *dy, float *dx,
                                   float *dw, float *db)
{
    const mg_kernels *K = ctx_of(be)->k;
    float *st = malloc(sizeof(float) * 2 * (rows ? rows : 1));
    if (!st) return mg_seterr(MG_ERR_NOMEM, "out of memory in layer_norm backward");
#pragma omp parallel for num_threads(be->n_threads) schedule(static) if (rows > 16)
    for (size_t i = 0; i < rows; i++)
        K->layer_norm_backward_row(x + i * n, dy + i * n, w, n, eps, dx + i * n, &st[2 * i],
                                   &st[2 * i + 1]);
    if (dw || db) { /* column blocks across threads, rows in order inside */
        const int nb = (n + COLS - 1) / COLS;
#pragma omp parallel for num_threads(be->n_threads) schedule(static) if (nb > 1)
        for (int b = 0; b < nb; b++) {
            const int k0 = b * COLS, nk = imin(COLS, n - k0);
            double sw[COLS] = {0}, sb[COLS] = {0};
            for (size_t i = 0; i < rows; i++) {
                const float *dyr = dy + i * n + k0, *xr = x + i * n + k0;
                const double mu = st[2 * i], r = st[2 * i + 1];
                for (int k = 0; k < nk; k++) {
                    const double g = dyr[k];
                    sw[k] += g * (xr[k] - mu) * r;
                    sb[k] += g;
                }
            }
            for (int k = 0; k < nk; k++) {
                if (dw) dw[k0 + k] += (float)sw[k];
                if (db) db[k0 + k] += (float)sb[k];
            }
        }
    }
    free(st);
    return MG_OK;
}

/* ---------------------------------------------------------------- CEMA */

/* Adjoint of the recurrence, per channel (h_{-1} = 0):
 *   h_t = q h_{t-1} + p x_t ,  y_t = Re(sum_n eta_n h_t,n) + omega x_t
 *   G_t = dy_t conj(eta) + conj(q) G_{t+1}           (G = dL/dRe h + i dL/dIm h)
 *   dx_t = omega dy_t + sum_n p Re(G_t,n) ;  dp += sum_t x_t Re(G_t)
 *   dq += sum_t G_t conj(h_{t-1}) ;  deta += sum_t dy_t conj(h_t) ;  domega += sum_t dy_t x_t
 * The forward states are recomputed per channel (L x N complex of scratch). Channels are
 * independent, so threads split them; sequences are summed in order. */
static int cema_backward_scan(mg_backend *be, const float *x, int S, int L,
                              const mg_cema_coeffs *c, const float *dy, float *dx, float *dp,
                              float *dq, float *deta, float *domega)
{
    const int D = c->D, N = c->N;
    int fail = 0;
#pragma omp parallel num_threads(be->n_threads) if (D > 1)
    {
        double *hs = malloc(sizeof(double) * 2 * (size_t)N * (L + 1));
        double *acc = malloc(sizeof(double) * 7 * (size_t)N);
        if (!hs || !acc) {
#pragma omp atomic write
            fail = 1;
        }
#pragma omp for schedule(static)
        for (int d = 0; d < D; d++) {
            if (!hs || !acc) continue;
            const float *p = c->p + (size_t)d * N, *q = c->q + (size_t)d * 2 * N,
                        *eta = c->eta + (size_t)d * 2 * N;
            const double om = c->omega[d];
            double *ap = acc, *aqr = acc + N, *aqi = acc + 2 * N, *aer = acc + 3 * N,
                   *aei = acc + 4 * N, *gr = acc + 5 * N, *gi = acc + 6 * N;
            memset(acc, 0, sizeof(double) * 5 * N);
            double aom = 0;
            for (int s = 0; s < S; s++) {
                const float *xs = x + (size_t)s * L * D + d, *dys = dy + (size_t)s * L * D + d;
                float *dxs = dx + (size_t)s * L * D + d;
                /* forward: hs[t+1] = h_t, hs[0] = h_{-1} = 0 */
                memset(hs, 0, sizeof(double) * 2 * N);
                for (int t = 0; t < L; t++) {
                    const double xt = xs[(size_t)t * D];
                    const double *hp = hs + (size_t)t * 2 * N;
                    double *hc = hs + (size_t)(t + 1) * 2 * N;
                    for (int n = 0; n < N; n++) {
                        const double qr = q[2 * n], qi = q[2 * n + 1];
                        hc[2 * n] = qr * hp[2 * n] - qi * hp[2 * n + 1] + p[n] * xt;
                        hc[2 * n + 1] = qr * hp[2 * n + 1] + qi * hp[2 * n];
                    }
                }
                memset(gr, 0, sizeof(double) * 2 * N); /* gr, gi contiguous */
                for (int t = L - 1; t >= 0; t--) {
                    const double g = dys[(size_t)t * D], xt = xs[(size_t)t * D];
                    const double *hc = hs + (size_t)(t + 1) * 2 * N, *hp = hs + (size_t)t * 2 * N;
                    double dxt = om * g;
                    aom += g * xt;
                    for (int n = 0; n < N; n++) {
                        const double qr = q[2 * n], qi = q[2 * n + 1];
                        /* G_t = g conj(eta) + conj(q) G_{t+1} */
                        const double nr = g * eta[2 * n] + qr * gr[n] + qi * gi[n];
                        const double ni = -g * eta[2 * n + 1] + qr * gi[n] - qi * gr[n];
                        gr[n] = nr;
                        gi[n] = ni;
                        dxt += p[n] * nr;
                        ap[n] += xt * nr;
                        /* G conj(h_{t-1}) */
                        aqr[n] += nr * hp[2 * n] + ni * hp[2 * n + 1];
                        aqi[n] += ni * hp[2 * n] - nr * hp[2 * n + 1];
                        /* g conj(h_t) */
                        aer[n] += g * hc[2 * n];
                        aei[n] -= g * hc[2 * n + 1];
                    }
                    dxs[(size_t)t * D] = (float)dxt;
                }
            }
            for (int n = 0; n < N; n++) {
                const size_t i = (size_t)d * N + n;
                dp[i] += (float)ap[n];
                dq[2 * i] += (float)aqr[n];
                dq[2 * i + 1] += (float)aqi[n];
                deta[2 * i] += (float)aer[n];
                deta[2 * i + 1] += (float)aei[n];
            }
            domega[d] += (float)aom;
        }
        free(hs);
        free(acc);
    }
    if (fail) return mg_seterr(MG_ERR_NOMEM, "out of memory in CEMA backward (L=%d, N=%d)", L, N);
    return MG_OK;
}

/* ---- the backward's planner (docs/cema.md: "The planner"): MEGALODON_CEMA, then the
 * algorithm asked for, then under MG_CEMA_AUTO cema_estimate_backward or, in measure mode,
 * both candidates timed once per shape on the call's own input and remembered in the wisdom
 * file (backend tag "cpu-bwd/sK"). Its state lives in the backend's context (cpu_ctx:
 * cema_bwd): the settings, read from the environment when the backend is created like the
 * forward's, and the backward's wisdom. */
struct cema_bwd {
    cema_settings set;
    pthread_mutex_t measure_lock; /* one measurement at a time */
    cema_wisdom *wis[8];          /* measure mode: per S bucket 1, 2, 4, ..., >= 128 */
};
typedef struct cema_bwd bwd_state;

static void bwd_state_free(bwd_state *st)
{
    for (int i = 0; i < 8; i++) cema_wisdom_free(st->wis[i]);
    cema_settings_free(&st->set);
    pthread_mutex_destroy(&st->measure_lock);
    free(st);
}

void cpu_train_free(cpu_ctx *c)
{
    if (c->cema_bwd) bwd_state_free(c->cema_bwd);
    c->cema_bwd = NULL;
}

/* At backend creation (cpu_fill_train_ops): read the settings (an invalid value has
 * already failed the forward's init, cpu_cema_init, with the same message). */
static int bwd_init(cpu_ctx *c)
{
    bwd_state *st = calloc(1, sizeof *st);
    if (!st) return mg_seterr(MG_ERR_NOMEM, "out of memory creating the CPU backend");
    int rc = cema_settings_read(&st->set);
    if (rc) {
        cema_settings_free(&st->set);
        free(st);
        return rc;
    }
    pthread_mutex_init(&st->measure_lock, NULL);
    c->cema_bwd = st;
    return MG_OK;
}

static int s_bucket_index(int S)
{
    int i = 0, b = 1;
    while (b < S && i < 7) b *= 2, i++;
    return i;
}

/* The wisdom of this S bucket (created on first use, under measure_lock). */
static cema_wisdom *bwd_wisdom(mg_backend *be, bwd_state *st, int S)
{
    const int i = s_bucket_index(S);
    if (!st->wis[i]) {
        char build[160], tag[32];
        snprintf(build, sizeof build, "megalodon-%s+%s", PACKAGE_VERSION, fftwf_version);
        snprintf(tag, sizeof tag, "cpu-bwd/s%d", 1 << i);
        st->wis[i] = cema_wisdom_new(st->set.wisdom_path, st->set.wisdom_default, build,
                                     ctx_of(be)->k->name, tag);
    }
    return st->wis[i];
}

static double bwd_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int bwd_run(mg_backend *be, cema_run r, const float *x, int S, int L,
                   const mg_cema_coeffs *c, const float *dy, float *dx, float *dp, float *dq,
                   float *deta, float *domega)
{
    if (r == CEMA_RUN_FFT) return cpu_cema_backward_fft(be, x, S, L, c, dy, dx, dp, dq, deta, domega);
    return cema_backward_scan(be, x, S, L, c, dy, dx, dp, dq, deta, domega);
}

static cema_run bwd_estimate(mg_backend *be, int S, int L, const mg_cema_coeffs *c,
                             double ns[CEMA_N_RUNS])
{
    double qmax = 0;
    for (size_t i = 0; i < (size_t)c->D * c->N; i++) {
        const double a = hypot(c->q[2 * i], c->q[2 * i + 1]);
        if (a > qmax) qmax = a;
    }
    cema_bwd_problem pb = {S, L, c->D, c->N, be->n_threads > 0 ? be->n_threads : 1,
                           cema_bwd_kernel_steps(qmax, L)};
    return cema_estimate_backward(&pb, ns);
}

/* Measure mode: the remembered choice of this shape, or time both candidates on (x, dy)
 * into scratch gradients (twice each, the first also warming up; the faster second run
 * wins) and remember the faster. The caller's gradients are not touched here. */
static int bwd_measure(mg_backend *be, bwd_state *st, const float *x, int S, int L,
                       const mg_cema_coeffs *c, const float *dy, cema_run *out)
{
    const int D = c->D, N = c->N, T = be->n_threads > 0 ? be->n_threads : 1;
    const int Lb = cema_len_bucket(L);
    pthread_mutex_lock(&st->measure_lock);
    cema_wisdom *w = bwd_wisdom(be, st, S);
    if (w && cema_wisdom_get(w, Lb, D, N, T, out)) {
        pthread_mutex_unlock(&st->measure_lock);
        return MG_OK;
    }
    const size_t DN = (size_t)D * N;
    float *sdx = malloc(sizeof(float) * (size_t)S * L * D);
    float *sg = malloc(sizeof(float) * (5 * DN + D));
    int rc = MG_OK;
    if (!w || !sdx || !sg) {
        double ns[CEMA_N_RUNS];
        *out = bwd_estimate(be, S, L, c, ns); /* no memory to measure: do not remember */
    } else {
        double ns[CEMA_N_RUNS] = {-1.0, -1.0, -1.0};
        const cema_run cand[2] = {CEMA_RUN_SCAN, CEMA_RUN_FFT};
        cema_run best = CEMA_RUN_SCAN;
        for (int k = 0; k < 2 && rc == MG_OK; k++) {
            double tmin = INFINITY;
            for (int rep = 0; rep < 2 && rc == MG_OK; rep++) {
                memset(sg, 0, sizeof(float) * (5 * DN + D));
                const double t0 = bwd_now();
                rc = bwd_run(be, cand[k], x, S, L, c, dy, sdx, sg, sg + DN, sg + 3 * DN,
                             sg + 5 * DN);
                const double t = bwd_now() - t0;
                if (t < tmin) tmin = t;
            }
            ns[cand[k]] = tmin * 1e9 / ((double)S * L * D);
            if (ns[cand[k]] < ns[best]) best = cand[k];
        }
        if (rc == MG_OK) {
            cema_wisdom_put(w, Lb, D, N, T, best, ns);
            cema_plan_count_measurement();
            *out = best;
        }
    }
    pthread_mutex_unlock(&st->measure_lock);
    free(sdx);
    free(sg);
    return rc;
}

/* What to run for algo. x, dy NULL: a query (measuring then uses synthetic input). */
static int bwd_resolve(mg_backend *be, mg_cema_algo algo, const float *x, int S, int L,
                       const mg_cema_coeffs *c, const float *dy, cema_run *out)
{
    bwd_state *st = ctx_of(be)->cema_bwd;
    mg_cema_algo a = st && st->set.override >= 0 ? (mg_cema_algo)st->set.override : algo;
    *out = CEMA_RUN_SCAN;
    switch ((int)a) {
    case MG_CEMA_SCAN: return MG_OK;
    case (int)CEMA_ALGO_CHUNKED: return MG_OK; /* no chunked backward: the scan */
    case MG_CEMA_FFT: *out = CEMA_RUN_FFT; return MG_OK;
    case MG_CEMA_AUTO: break;
    default: return mg_seterr(MG_ERR_INVALID_ARG, "unknown CEMA algorithm %d", (int)a);
    }
    if (L <= 1 || S < 1) return MG_OK;
    if (!st || st->set.mode != CEMA_PLAN_MEASURE) {
        double ns[CEMA_N_RUNS];
        *out = bwd_estimate(be, S, L, c, ns);
        return MG_OK;
    }
    if (x && dy) return bwd_measure(be, st, x, S, L, c, dy, out);
    const size_t n = (size_t)S * L * c->D;
    float *xs = malloc(sizeof(float) * n * 2);
    if (!xs) return mg_seterr(MG_ERR_NOMEM, "out of memory");
    uint32_t s = 12345;
    for (size_t i = 0; i < 2 * n; i++) {
        s = s * 1664525u + 1013904223u;
        xs[i] = (float)((int32_t)s >> 8) * 0x1p-23f;
    }
    int rc = bwd_measure(be, st, xs, S, L, c, xs + n, out);
    free(xs);
    return rc;
}

static int cpu_cema_backward(mg_backend *be, mg_cema_algo algo, const float *x, int S, int L,
                             const mg_cema_coeffs *c, const float *dy, float *dx, float *dp,
                             float *dq, float *deta, float *domega)
{
    if (S <= 0 || L <= 0) return MG_OK;
    cema_run r;
    int rc = bwd_resolve(be, algo, x, S, L, c, dy, &r);
    if (rc) return rc;
    return bwd_run(be, r, x, S, L, c, dy, dx, dp, dq, deta, domega);
}

const char *cpu_cema_backward_choice(mg_backend *be, mg_cema_algo algo, int S, int L,
                                     const mg_cema_coeffs *c)
{
    if (!be || be->cema_backward != cpu_cema_backward || !c) return NULL;
    cema_run r;
    if (bwd_resolve(be, algo, NULL, S, L, c, NULL, &r)) return NULL;
    return cema_run_name(r);
}

/* ---------------------------------------------------------------- chunk attention */

/* Per chunk and head: S = q k^T (causal), P = softmax(S), out = P v, in blocks of AB query
 * rows: block [i0, i1) multiplies only the keys 0 .. i1-1 it can see, so the products skip
 * everything above the diagonal but for the block's own triangle (about half the flops of
 * the full L x L block). P is kept whole (L x L, zero above the diagonal) for the backward.
 * The blocks depend on L only: the same result for any thread count. */
#define AB 64

static int cpu_attention_train(mg_backend *be, const float *q, const float *k, const float *v,
                               int S, int L, int H, int dk, int dv, float *out, float *P)
{
    const int work = S * H, qs = H * dk, vs = H * dv;
    const mg_kernels *K = ctx_of(be)->k;
#pragma omp parallel for num_threads(be->n_threads) schedule(static) if (work > 1)
    for (int sh = 0; sh < work; sh++) {
        const int s = sh / H, h = sh % H;
        const size_t r0 = (size_t)s * L;
        const float *qh = q + r0 * qs + (size_t)h * dk, *kh = k + r0 * qs + (size_t)h * dk;
        float *Ph = P + (size_t)sh * L * L;
        for (int i0 = 0; i0 < L; i0 += AB) {
            const int i1 = i0 + AB < L ? i0 + AB : L, m = i1 - i0;
            float *Pb = Ph + (size_t)i0 * L;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, i1, dk, 1.0f,
                        qh + (size_t)i0 * qs, qs, kh, qs, 0.0f, Pb, L);
            for (int i = i0; i < i1; i++) { /* causal: keys 0 .. i */
                float *row = Ph + (size_t)i * L;
                K->softmax(row, i + 1);
                memset(row + i + 1, 0, sizeof(float) * (size_t)(L - i - 1));
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, dv, i1, 1.0f, Pb, L,
                        v + r0 * vs + (size_t)h * dv, vs, 0.0f,
                        out + (r0 + i0) * vs + (size_t)h * dv, vs);
        }
    }
    return MG_OK;
}

/* dV = P^T dO ;  dP = dO V^T ;  dS = P (dP - rowsum(P dP)) ;  dQ = dS K ;  dK = dS^T Q,
 * in the blocks of the forward: query block [i0, i1) reads keys 0 .. i1-1 (dP, dS, dQ),
 * key block [j0, j1) is read by queries j0 .. L-1 (dV, dK). */
static int cpu_attention_backward(mg_backend *be, const float *q, const float *k,
                                  const float *v, const float *P, const float *dout, int S,
                                  int L, int H, int dk, int dv, float *dq, float *dk_,
                                  float *dv_)
{
    const int work = S * H, qs = H * dk, vs = H * dv;
    int fail = 0;
#pragma omp parallel num_threads(be->n_threads) if (work > 1)
    {
        float *dS = malloc(sizeof(float) * (size_t)L * L);
        if (!dS) {
#pragma omp atomic write
            fail = 1;
        }
#pragma omp for schedule(static)
        for (int sh = 0; sh < work; sh++) {
            if (!dS) continue;
            const int s = sh / H, h = sh % H;
            const size_t r0 = (size_t)s * L;
            const float *Ph = P + (size_t)sh * L * L;
            const float *qh = q + r0 * qs + (size_t)h * dk, *kh = k + r0 * qs + (size_t)h * dk;
            const float *vh = v + r0 * vs + (size_t)h * dv, *doh = dout + r0 * vs + (size_t)h * dv;
            float *dqh = dq + r0 * qs + (size_t)h * dk, *dkh = dk_ + r0 * qs + (size_t)h * dk;
            float *dvh = dv_ + r0 * vs + (size_t)h * dv;
            for (int i0 = 0; i0 < L; i0 += AB) {
                const int i1 = i0 + AB < L ? i0 + AB : L, m = i1 - i0;
                float *dSb = dS + (size_t)i0 * L;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, i1, dv, 1.0f,
                            doh + (size_t)i0 * vs, vs, vh, vs, 0.0f, dSb, L);
                for (int i = i0; i < i1; i++) {
                    const float *pr = Ph + (size_t)i * L;
                    float *dr = dS + (size_t)i * L;
                    double rs = 0;
                    for (int j = 0; j <= i; j++) rs += (double)pr[j] * dr[j];
                    for (int j = 0; j <= i; j++) dr[j] = pr[j] * (float)(dr[j] - rs);
                    memset(dr + i + 1, 0, sizeof(float) * (size_t)(L - i - 1));
                }
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, dk, i1, 1.0f, dSb, L,
                            kh, qs, 0.0f, dqh + (size_t)i0 * qs, qs);
            }
            for (int j0 = 0; j0 < L; j0 += AB) {
                const int j1 = j0 + AB < L ? j0 + AB : L, n = j1 - j0, rows = L - j0;
                const size_t off = (size_t)j0 * L + j0; /* rows j0 .. L-1, columns j0 .. j1-1 */
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, dv, rows, 1.0f,
                            Ph + off, L, doh + (size_t)j0 * vs, vs, 0.0f,
                            dvh + (size_t)j0 * vs, vs);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, dk, rows, 1.0f,
                            dS + off, L, qh + (size_t)j0 * qs, qs, 0.0f,
                            dkh + (size_t)j0 * qs, qs);
            }
        }
        free(dS);
    }
    if (fail) return mg_seterr(MG_ERR_NOMEM, "out of memory in attention backward (L=%d)", L);
    return MG_OK;
}

/* ---------------------------------------------------------------- elementwise, loss */

#define EW_BLK 16384 /* elements per block of an elementwise op split among threads */

/* silu(x) = x s(x):  silu'(x) = s (1 + x (1 - s)) */
static int cpu_silu_backward(mg_backend *be, const float *x, const float *dy, float *dx,
                             size_t n)
{
    const mg_kernels *K = ctx_of(be)->k;
    const long nb = (long)((n + EW_BLK - 1) / EW_BLK);
#pragma omp parallel for num_threads(be->n_threads) schedule(static) if (nb > 4)
    for (long b = 0; b < nb; b++) {
        const size_t i0 = (size_t)b * EW_BLK, m = n - i0 < EW_BLK ? n - i0 : EW_BLK;
        K->silu_backward(x + i0, dy + i0, dx + i0, m);
    }
    return MG_OK;
}

/* loss_r = logsumexp(l_r) - l_r[t_r] ;  dl_r = (softmax(l_r) - onehot(t_r)) * scale */
static int cpu_cross_entropy(mg_backend *be, const float *logits, const int32_t *targets,
                             size_t rows, int n, float scale, double *loss_sum, float *dlogits)
{
    double *lr = malloc(sizeof(double) * (rows ? rows : 1));
    if (!lr) return mg_seterr(MG_ERR_NOMEM, "out of memory in cross_entropy");
    const mg_kernels *K = ctx_of(be)->k;
#pragma omp parallel for num_threads(be->n_threads) schedule(static) if (rows > 4)
    for (size_t i = 0; i < rows; i++)
        lr[i] = K->cross_entropy_row(logits + i * n, n, targets[i], scale,
                                     dlogits ? dlogits + i * n : NULL);
    double s = 0;
    for (size_t i = 0; i < rows; i++) s += lr[i];
    *loss_sum += s;
    free(lr);
    return MG_OK;
}

/* AdamW over n parameters (backend.h: adamw) */
static int cpu_adamw(mg_backend *be, float *p, const float *g, float *m, float *v, size_t n,
                     double lr, double wd, double b1, double b2, double eps, double gs,
                     double step_size, double sbc2)
{
    const mg_kernels *K = ctx_of(be)->k;
    const long nb = (long)((n + EW_BLK - 1) / EW_BLK);
#pragma omp parallel for num_threads(be->n_threads) schedule(static) if (nb > 4)
    for (long b = 0; b < nb; b++) {
        const size_t i0 = (size_t)b * EW_BLK, k = n - i0 < EW_BLK ? n - i0 : EW_BLK;
        K->adamw(p + i0, g + i0, m + i0, v + i0, k, lr, wd, b1, b2, eps, gs, step_size, sbc2);
    }
    return MG_OK;
}

int cpu_fill_train_ops(mg_backend *be)
{
    be->matmul_backward = cpu_matmul_backward;
    be->timestep_norm_train = cpu_timestep_norm_train;
    be->timestep_norm_backward = cpu_timestep_norm_backward;
    be->rms_norm_backward = cpu_rms_norm_backward;
    be->layer_norm_backward = cpu_layer_norm_backward;
    be->cema_backward = cpu_cema_backward;
    be->attention_train = cpu_attention_train;
    be->attention_backward = cpu_attention_backward;
    be->silu_backward = cpu_silu_backward;
    be->cross_entropy = cpu_cross_entropy;
    be->adamw = cpu_adamw;
    return bwd_init(ctx_of(be));
}

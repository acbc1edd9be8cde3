/* backend-cpu-norms.c - the norms of the CPU backend, forward and backward: RMSNorm and
 * LayerNorm over rows, and the timestep norm (a running mean and variance over time, per
 * group of channels), through the backend's kernel table (simd/kernels.h).
 *
 * Double accumulators in the backward. Threads split the work only along dimensions whose
 * results are independent (rows, columns, groups), and every sum over rows runs in a fixed
 * order, so results and gradients are the same bit for bit for any thread count. */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend-cpu.h"
#include "error.h"

#define COLS 64 /* columns per block of a column sum over rows (norm weight gradients) */

static inline int imin(int a, int b) { return a < b ? a : b; }

/* ---------------------------------------------------------------- row norms */

int cpu_rms_norm(mg_backend *be, const float *x, size_t rows, int n, const float *w,
                 float eps, float *y)
{
    const mg_kernels *k = ctx_of(be)->k;
#pragma omp parallel for num_threads(be->n_threads) schedule(static) if (rows > 16)
    for (size_t r = 0; r < rows; r++) k->rms_norm(x + r * n, w, eps, n, y + r * n);
    return MG_OK;
}

int cpu_layer_norm(mg_backend *be, const float *x, size_t rows, int n, const float *w,
                   const float *b, float eps, float *y)
{
    const mg_kernels *k = ctx_of(be)->k;
#pragma omp parallel for num_threads(be->n_threads) schedule(static) if (rows > 16)
    for (size_t r = 0; r < rows; r++) k->layer_norm(x + r * n, w, b, eps, n, y + r * n);
    return MG_OK;
}


/* y = x r (1+w), r = 1/sqrt(mean(x^2)+eps):
 *   dx = r g - x r^3 mean(g x), g = dy (1+w) ;  dw += sum_rows dy x r */
int cpu_rms_norm_backward(mg_backend *be, const float *x, size_t rows, int n,
                          const float *w, float eps, const float *dy, float *dx,
                          float *dw)
{
    const mg_kernels *K = ctx_of(be)->k;
    float *rr = malloc(sizeof(float) * (rows ? rows : 1));
    if (!rr)
        return mg_seterr(MG_ERR_NOMEM,
                         "out of memory for the rms_norm backward's row scales (%zu rows)", rows);
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
int cpu_layer_norm_backward(mg_backend *be, const float *x, size_t rows, int n,
                            const float *w, float eps, const float *dy, float *dx,
                            float *dw, float *db)
{
    const mg_kernels *K = ctx_of(be)->k;
    float *st = malloc(sizeof(float) * 2 * (rows ? rows : 1));
    if (!st)
        return mg_seterr(MG_ERR_NOMEM,
                         "out of memory for the layer_norm backward's row statistics (%zu rows)",
                         rows);
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

/* ---------------------------------------------------------------- timestep norm */

int cpu_timestep_norm(mg_backend *be, const float *x, int L, int D, int G,
                      const float *w, const float *b, float eps, int64_t *count,
                      float *mean, float *var, float *y)
{
    /* Sequential in time by definition; the prefix-sum formulation comes with the SIMD work. */
    ctx_of(be)->k->timestep_norm(x, L, D, G, w, b, eps, count, mean, var, y);
    return MG_OK;
}

/* The forward of kernels.h (Welford combine per token and group), from a fresh state, with
 * the statistics after every step kept: cmean[t,g] = mu_t, crstd[t,g] = 1/sqrt(var_t+eps). */
int cpu_timestep_norm_train(mg_backend *be, const float *x, int S, int L, int D, int G,
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
int cpu_timestep_norm_backward(mg_backend *be, const float *x, int S, int L, int D,
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

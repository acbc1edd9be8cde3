/* backend-cpu-cema.c - the CEMA op of the CPU backend: the recurrence (simd/ kernel, split
 * across threads by channel) and the causal FFT convolution (FFTW). */
#include "config.h"

#include <fftw3.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "backend-cpu.h"
#include "error.h"

#ifdef _OPENMP
#include <omp.h>
#endif

static pthread_mutex_t fftw_planner_lock = PTHREAD_MUTEX_INITIALIZER;

static int get_plan(cpu_ctx *c, int n, fft_plan *out)
{
    pthread_mutex_lock(&c->lock);
    for (int i = 0; i < c->n_plans; i++)
        if (c->plans[i].n == n) {
            *out = c->plans[i];
            pthread_mutex_unlock(&c->lock);
            return MG_OK;
        }
    if (c->n_plans == MAX_PLANS) { /* forget the oldest size */
        fftwf_destroy_plan(c->plans[0].r2c);
        fftwf_destroy_plan(c->plans[0].c2r);
        memmove(c->plans, c->plans + 1, sizeof(fft_plan) * (MAX_PLANS - 1));
        c->n_plans--;
    }
    float *r = fftwf_malloc(sizeof(float) * n);
    fftwf_complex *f = fftwf_malloc(sizeof(fftwf_complex) * (n / 2 + 1));
    fft_plan p = {n, NULL, NULL};
    if (r && f) {
        pthread_mutex_lock(&fftw_planner_lock);
        p.r2c = fftwf_plan_dft_r2c_1d(n, r, f, FFTW_ESTIMATE);
        p.c2r = fftwf_plan_dft_c2r_1d(n, f, r, FFTW_ESTIMATE);
        pthread_mutex_unlock(&fftw_planner_lock);
    }
    fftwf_free(r);
    fftwf_free(f);
    if (!p.r2c || !p.c2r) {
        if (p.r2c) fftwf_destroy_plan(p.r2c);
        if (p.c2r) fftwf_destroy_plan(p.c2r);
        pthread_mutex_unlock(&c->lock);
        return mg_seterr(MG_ERR_NOMEM, "FFTW: cannot plan a transform of size %d", n);
    }
    c->plans[c->n_plans++] = p;
    *out = p;
    pthread_mutex_unlock(&c->lock);
    return MG_OK;
}

/* One channel by FFT convolution:
 *   k_j    = Re(sum_n p_n eta_n q_n^j)                       j < L
 *   b_j    = Re(sum_n eta_n q_n^(j+1) h_n)                   (carried-state term)
 *   y_t    = sum_{s<=t} k_{t-s} x_s + b_t + omega x_t
 *   h_new  = q^L h + p sum_j q^(L-1-j) x_j
 * Powers are formed by repeated multiplication in double precision (relative error about
 * L * 1e-16, far below fp32 rounding for any practical L). */
static void cema_fft_channel(const mg_kernels *K, const fft_plan *pl, const float *x, int L,
                             int D, int N, int d, const mg_cema_coeffs *c, float *h, float *y,
                             float *xr, float *kr, fftwf_complex *xf, fftwf_complex *kf)
{
    const int nfft = pl->n;
    const float *p = c->p + (size_t)d * N, *q = c->q + (size_t)d * N * 2;
    const float *eta = c->eta + (size_t)d * N * 2;
    float *hd = h + (size_t)d * N * 2;

    memset(kr, 0, sizeof(float) * nfft);
    memset(xr, 0, sizeof(float) * nfft);
    for (int n = 0; n < N; n++) {
        double qr = q[2 * n], qi = q[2 * n + 1];
        double wr = p[n] * (double)eta[2 * n], wi = p[n] * (double)eta[2 * n + 1];
        for (int j = 0; j < L; j++) { /* w = p eta q^j */
            kr[j] += (float)wr;
            double t = wr * qr - wi * qi;
            wi = wr * qi + wi * qr;
            wr = t;
        }
    }
    for (int t = 0; t < L; t++) xr[t] = x[(size_t)t * D + d];

    fftwf_execute_dft_r2c(pl->r2c, xr, xf);
    fftwf_execute_dft_r2c(pl->r2c, kr, kf);
    K->complex_mul((const float *)xf, (const float *)kf, (float *)xf, nfft / 2 + 1);
    fftwf_execute_dft_c2r(pl->c2r, xf, kr); /* kr now holds nfft * (x conv k) */

    const float inv = 1.0f / (float)nfft;
    for (int t = 0; t < L; t++)
        y[(size_t)t * D + d] = kr[t] * inv + c->omega[d] * xr[t];

    /* carried-state term and new state */
    for (int n = 0; n < N; n++) {
        double qr = q[2 * n], qi = q[2 * n + 1], hr = hd[2 * n], hi = hd[2 * n + 1];
        if (hr != 0.0 || hi != 0.0) {
            /* v = eta q h, then v *= q per step: b_j = Re(eta q^(j+1) h) */
            double er = eta[2 * n], ei = eta[2 * n + 1];
            double ehr = er * hr - ei * hi, ehi = er * hi + ei * hr;
            double vr = ehr * qr - ehi * qi, vi = ehr * qi + ehi * qr;
            for (int t = 0; t < L; t++) {
                y[(size_t)t * D + d] += (float)vr;
                double tt = vr * qr - vi * qi;
                vi = vr * qi + vi * qr;
                vr = tt;
            }
        }
        for (int t = 0; t < L; t++) { /* h = q h + p x_t */
            double tt = qr * hr - qi * hi + p[n] * (double)xr[t];
            hi = qr * hi + qi * hr;
            hr = tt;
        }
        hd[2 * n] = (float)hr;
        hd[2 * n + 1] = (float)hi;
    }
}

int cpu_cema(mg_backend *be, mg_cema_algo algo, const float *x, int L,
                    const mg_cema_coeffs *c, float *h, float *y)
{
    cpu_ctx *cx = ctx_of(be);
    const mg_kernels *K = cx->k;
    const int D = c->D, N = c->N;
    if (L <= 0) return MG_OK;
    /* Until the planner measures both, AUTO means the recurrence: in plain C its cost is
     * O(L N) per channel, which the FFT path also pays to build the kernel. */
    if (algo == MG_CEMA_AUTO || L == 1) algo = MG_CEMA_SCAN;

    if (algo == MG_CEMA_SCAN) {
        int nt = be->n_threads;
#pragma omp parallel num_threads(nt) if (D >= 64)
        {
            int t = 0, T = 1;
#ifdef _OPENMP
            t = omp_get_thread_num();
            T = omp_get_num_threads();
#endif
            int d0 = (int)((int64_t)D * t / T), d1 = (int)((int64_t)D * (t + 1) / T);
            K->cema_scan(x, L, D, N, d0, d1, c->p, c->q, c->eta, c->omega, h, y);
        }
        return MG_OK;
    }

    int nfft = 2;
    while (nfft < 2 * L) nfft *= 2;
    fft_plan pl;
    int rc = get_plan(cx, nfft, &pl);
    if (rc) return rc;
    int failed = 0;
#pragma omp parallel num_threads(be->n_threads) if (D >= 16)
    {
        float *xr = fftwf_malloc(sizeof(float) * nfft);
        float *kr = fftwf_malloc(sizeof(float) * nfft);
        fftwf_complex *xf = fftwf_malloc(sizeof(fftwf_complex) * (nfft / 2 + 1));
        fftwf_complex *kf = fftwf_malloc(sizeof(fftwf_complex) * (nfft / 2 + 1));
        if (!xr || !kr || !xf || !kf) {
#pragma omp atomic write
            failed = 1;
        } else {
#pragma omp for schedule(static)
            for (int d = 0; d < D; d++)
                cema_fft_channel(K, &pl, x, L, D, N, d, c, h, y, xr, kr, xf, kf);
        }
        fftwf_free(xr);
        fftwf_free(kr);
        fftwf_free(xf);
        fftwf_free(kf);
    }
    if (failed) return mg_seterr(MG_ERR_NOMEM, "CEMA FFT: out of memory for length %d", L);
    return MG_OK;
}


void cpu_cema_free_plans(cpu_ctx *c)
{
    for (int i = 0; i < c->n_plans; i++) {
        fftwf_destroy_plan(c->plans[i].r2c);
        fftwf_destroy_plan(c->plans[i].c2r);
    }
    c->n_plans = 0;
}

/* backend-cpu.c - the CPU backend: OpenBLAS for matrix products, FFTW (single precision)
 * for the CEMA convolution, OpenMP across rows/channels/heads, and the simd/ kernel table
 * for everything else. */
#include "config.h"

#include "backend.h"

#include <cblas.h>
#include <fftw3.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "kernels.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* FFTW plans are created once per transform size and reused (plan creation is not
 * thread-safe, execution with the new-array interface is). */
#define MAX_PLANS 32
typedef struct {
    int n;
    fftwf_plan r2c, c2r;
} fft_plan;

typedef struct {
    const mg_kernels *k;
    pthread_mutex_t lock;
    fft_plan plans[MAX_PLANS];
    int n_plans;
    char name[32];
} cpu_ctx;

static pthread_mutex_t fftw_planner_lock = PTHREAD_MUTEX_INITIALIZER;

static cpu_ctx *ctx_of(mg_backend *be) { return (cpu_ctx *)be->ctx; }

/* ---------------------------------------------------------------- matmul */

/* y = x W^T + bias */
static int cpu_matmul(mg_backend *be, const float *x, int M, int K, const float *W, int N,
                      const float *bias, float *y)
{
    (void)be;
    if (M <= 0 || N <= 0) return MG_OK;
    if (M == 1) { /* decode: OpenBLAS sgemv is an order of magnitude faster than sgemm here */
        if (bias) memcpy(y, bias, sizeof(float) * N);
        cblas_sgemv(CblasRowMajor, CblasNoTrans, N, K, 1.0f, W, K, x, 1, bias ? 1.0f : 0.0f, y, 1);
        return MG_OK;
    }
    float beta = 0.0f;
    if (bias) {
        for (int i = 0; i < M; i++) memcpy(y + (size_t)i * N, bias, sizeof(float) * N);
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, x, K, W, K, beta, y,
                N);
    return MG_OK;
}

/* ---------------------------------------------------------------- norms */

static int cpu_rms_norm(mg_backend *be, const float *x, size_t rows, int n, const float *w,
                        float eps, float *y)
{
    const mg_kernels *k = ctx_of(be)->k;
#pragma omp parallel for num_threads(be->n_threads) schedule(static) if (rows > 16)
    for (size_t r = 0; r < rows; r++) k->rms_norm(x + r * n, w, eps, n, y + r * n);
    return MG_OK;
}

static int cpu_layer_norm(mg_backend *be, const float *x, size_t rows, int n, const float *w,
                          const float *b, float eps, float *y)
{
    const mg_kernels *k = ctx_of(be)->k;
#pragma omp parallel for num_threads(be->n_threads) schedule(static) if (rows > 16)
    for (size_t r = 0; r < rows; r++) k->layer_norm(x + r * n, w, b, eps, n, y + r * n);
    return MG_OK;
}

static int cpu_timestep_norm(mg_backend *be, const float *x, int L, int D, int G,
                             const float *w, const float *b, float eps, int64_t *count,
                             float *mean, float *var, float *y)
{
    /* Sequential in time by definition; the prefix-sum formulation comes with the SIMD work. */
    ctx_of(be)->k->timestep_norm(x, L, D, G, w, b, eps, count, mean, var, y);
    return MG_OK;
}

/* ---------------------------------------------------------------- CEMA */

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

static int cpu_cema(mg_backend *be, mg_cema_algo algo, const float *x, int L,
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

/* ---------------------------------------------------------------- attention */

static int cpu_rope(mg_backend *be, float *x, int L, int H, int dh, int pos0,
                    const float *freqs)
{
    const mg_kernels *k = ctx_of(be)->k;
    for (int t = 0; t < L; t++)
        for (int hh = 0; hh < H; hh++) k->rope(x + ((size_t)t * H + hh) * dh, dh, pos0 + t, freqs);
    return MG_OK;
}

/* Per head: S = q k^T (L x Lk), causal mask bottom-right aligned, softmax rows, out = S v. */
static int cpu_attention(mg_backend *be, const float *q, const float *k, const float *v, int L,
                         int Lk, int H, int dk, int dv, float *out)
{
    const mg_kernels *K = ctx_of(be)->k;
    float *S = malloc(sizeof(float) * (size_t)L * Lk);
    if (!S) return mg_seterr(MG_ERR_NOMEM, "attention: out of memory (%d x %d scores)", L, Lk);
    const int off = Lk - L;
    for (int hh = 0; hh < H; hh++) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, L, Lk, dk, 1.0f, q + hh * dk,
                    H * dk, k + hh * dk, H * dk, 0.0f, S, Lk);
        for (int i = 0; i < L; i++) {
            float *row = S + (size_t)i * Lk;
            int n = off + i + 1; /* keys visible to query i */
            K->softmax(row, n);
            memset(row + n, 0, sizeof(float) * (Lk - n));
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, L, dv, Lk, 1.0f, S, Lk,
                    v + hh * dv, H * dv, 0.0f, out + hh * dv, H * dv);
    }
    free(S);
    return MG_OK;
}

/* ---------------------------------------------------------------- elementwise */

static int cpu_silu(mg_backend *be, const float *x, float *y, size_t n)
{
    ctx_of(be)->k->silu(x, y, n);
    return MG_OK;
}

static int cpu_mul(mg_backend *be, const float *a, const float *b, float *y, size_t n)
{
    ctx_of(be)->k->mul(a, b, y, n);
    return MG_OK;
}

static int cpu_add(mg_backend *be, const float *a, const float *b, float *y, size_t n)
{
    ctx_of(be)->k->add(a, b, y, n);
    return MG_OK;
}

static int cpu_scale(mg_backend *be, const float *x, float a, float *y, size_t n)
{
    ctx_of(be)->k->scale(x, a, y, n);
    return MG_OK;
}

static int cpu_affine_rows(mg_backend *be, const float *x, size_t rows, int m, const float *s,
                           const float *t, float *y)
{
    ctx_of(be)->k->affine_rows(x, rows, m, s, t, y);
    return MG_OK;
}

/* ---------------------------------------------------------------- setup */

static void cpu_free(mg_backend *be)
{
    if (!be) return;
    cpu_ctx *c = ctx_of(be);
    if (c) {
        for (int i = 0; i < c->n_plans; i++) {
            fftwf_destroy_plan(c->plans[i].r2c);
            fftwf_destroy_plan(c->plans[i].c2r);
        }
        pthread_mutex_destroy(&c->lock);
        free(c);
    }
    free(be);
}

void mg_backend_set_threads(mg_backend *be, int n_threads)
{
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)n : 1;
    }
    be->n_threads = n_threads;
    openblas_set_num_threads(n_threads);
}

int mg_backend_cpu_new(int n_threads, const char *isa, mg_backend **out)
{
    *out = NULL;
    const mg_kernels *k;
    if (isa && *isa && strcmp(isa, "auto") != 0) {
        if (!(k = mg_kernels_by_name(isa)))
            return mg_seterr(MG_ERR_UNSUPPORTED,
                             "kernel table '%s' is not built in or not supported by this CPU "
                             "(available: %s)", isa, mg_kernels_available());
    } else if (!(k = mg_kernels_best())) {
        return mg_seterr(MG_ERR_UNSUPPORTED,
                         "MEGALODON_ISA=%s: that kernel table is not built in or not "
                         "supported by this CPU (available: %s)",
                         getenv("MEGALODON_ISA"), mg_kernels_available());
    }
    mg_backend *be = calloc(1, sizeof *be);
    cpu_ctx *c = calloc(1, sizeof *c);
    if (!be || !c) {
        free(be);
        free(c);
        return mg_seterr(MG_ERR_NOMEM, "out of memory creating the CPU backend");
    }
    pthread_mutex_init(&c->lock, NULL);
    c->k = k;
    snprintf(c->name, sizeof c->name, "cpu/%s", k->name);
    be->name = c->name;
    be->ctx = c;
    be->n_threads = n_threads;
    be->free = cpu_free;
    be->matmul = cpu_matmul;
    be->rms_norm = cpu_rms_norm;
    be->layer_norm = cpu_layer_norm;
    be->timestep_norm = cpu_timestep_norm;
    be->cema = cpu_cema;
    be->rope = cpu_rope;
    be->attention = cpu_attention;
    be->silu = cpu_silu;
    be->mul = cpu_mul;
    be->add = cpu_add;
    be->scale = cpu_scale;
    be->affine_rows = cpu_affine_rows;
    mg_backend_set_threads(be, n_threads);
    *out = be;
    return MG_OK;
}

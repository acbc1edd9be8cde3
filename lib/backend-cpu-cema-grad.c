/* backend-cpu-cema-grad.c - the CEMA backward by FFT correlations (backend.h: cema_backward,
 * algorithm MG_CEMA_FFT; the scan version is in backend-cpu-train.c).
 *
 * With the kernel k_j = Re(sum_n p eta q^j) the forward of one channel is
 * y = causal_conv(x, k) + omega x (docs/model.md §6.3), so (§18.3, §18.4), per channel:
 *   dx_t = omega dy_t + sum_{s>=t} dy_s k_{s-t}     = irfft(DY conj(K))[t]
 *   dk_j = sum_seq sum_t dy_t x_{t-j}                = irfft(sum_seq DY conj(X))[j]
 *   domega += sum dy_t x_t
 *   S2 = sum_j dk_j q^j ,  S1 = sum_j dk_j j q^(j-1)          (Horner, in double)
 *   dp += Re(S2 eta) ;  dq += conj(S1 p eta) ;  deta += conj(S2 p)
 * with transforms of size nfft, the least power of two >= 2L, so that the circular
 * correlations equal the linear ones on 0..L-1 (the wrapped terms meet the zero padding).
 *
 * The kernel is built in double by repeated multiplication, each component stopped once
 * |q|^j is below 1e-30 (far under what fp32 can show, and before double's subnormals).
 * Threads split the channels, whose results are independent; sequences are summed in
 * order, so the gradients are the same bit for bit for any thread count. */
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

/* FFTW's planner is not thread-safe: plans are made and destroyed under mg_fftw_planner_lock
 * (backend-cpu.h), shared with the forward. */

#define MAX_L (1 << 28) /* nfft = 2^30 at most */
#define TAIL 1e-30      /* |q|^j below this ends a component of the kernel */

/* Buffer strides: whole cache lines, so that every buffer of the block has the alignment of
 * fftwf_malloc (the planning arrays), as FFTW's new-array execution requires. */
static inline size_t rstride(int nfft) { return ((size_t)nfft + 15) & ~(size_t)15; } /* floats */
static inline size_t cstride(int nfft) { return ((size_t)nfft / 2 + 1 + 7) & ~(size_t)7; }

/* Steps after which component (q) of the kernel is negligible, at most L. */
static int tail_steps(double qr, double qi, int L)
{
    const double a = sqrt(qr * qr + qi * qi);
    if (!(a < 1.0)) return L;
    if (a <= TAIL) return 1;
    const double j = ceil(log(TAIL) / log(a)) + 1;
    return j < (double)L ? (int)j : L;
}

int cpu_cema_backward_fft(mg_backend *be, const float *x, int S, int L, const mg_cema_coeffs *c,
                          const float *dy, float *dx, float *dp, float *dq, float *deta,
                          float *domega)
{
    const int D = c->D, N = c->N;
    if (S <= 0 || L <= 0 || D <= 0) return MG_OK;
    if (L > MAX_L) return mg_seterr(MG_ERR_INVALID_ARG, "CEMA backward: length %d too long", L);
    int nfft = 2;
    while (nfft < 2 * L) nfft *= 2;
    const size_t rs = rstride(nfft), cs = cstride(nfft);
    const int T = be->n_threads > 0 ? be->n_threads : 1;

    /* per thread: rin, rout [rs floats]; kf, f1, f2 [cs complex]; and apart (plain malloc)
     * acc [cs complex double], kd [L double] */
    const size_t per_thread = 2 * rs + 3 * 2 * cs;
    float *tb = fftwf_malloc(sizeof(float) * per_thread * T);
    double *db = malloc(sizeof(double) * (2 * cs + (size_t)L) * T);
    if (!tb || !db) {
        fftwf_free(tb);
        free(db);
        return mg_seterr(MG_ERR_NOMEM, "CEMA backward: out of memory for length %d", L);
    }
    fftwf_plan r2c, c2r;
    pthread_mutex_lock(&mg_fftw_planner_lock);
    r2c = fftwf_plan_dft_r2c_1d(nfft, tb, (fftwf_complex *)(tb + 2 * rs), FFTW_ESTIMATE);
    c2r = fftwf_plan_dft_c2r_1d(nfft, (fftwf_complex *)(tb + 2 * rs), tb + rs, FFTW_ESTIMATE);
    pthread_mutex_unlock(&mg_fftw_planner_lock);
    if (!r2c || !c2r) {
        pthread_mutex_lock(&mg_fftw_planner_lock);
        if (r2c) fftwf_destroy_plan(r2c);
        if (c2r) fftwf_destroy_plan(c2r);
        pthread_mutex_unlock(&mg_fftw_planner_lock);
        fftwf_free(tb);
        free(db);
        return mg_seterr(MG_ERR_NOMEM, "FFTW: cannot plan a transform of size %d", nfft);
    }
    const double inv = 1.0 / (double)nfft;
    const size_t ld = (size_t)D;

#pragma omp parallel num_threads(T) if (D > 1)
    {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        float *rin = tb + per_thread * tid, *rout = rin + rs;
        fftwf_complex *kf = (fftwf_complex *)(rout + rs), *f1 = kf + cs, *f2 = f1 + cs;
        double *acc = db + (2 * cs + (size_t)L) * tid, *kd = acc + 2 * cs;

#pragma omp for schedule(static)
        for (int d = 0; d < D; d++) {
            const float *p = c->p + (size_t)d * N, *q = c->q + (size_t)d * 2 * N,
                        *eta = c->eta + (size_t)d * 2 * N;
            const double om = c->omega[d];

            /* kernel k_j = Re(sum_n p eta q^j), its transform K */
            memset(kd, 0, sizeof(double) * L);
            for (int n = 0; n < N; n++) {
                const double qr = q[2 * n], qi = q[2 * n + 1];
                double zr = p[n] * (double)eta[2 * n], zi = p[n] * (double)eta[2 * n + 1];
                const int m = tail_steps(qr, qi, L);
                for (int j = 0; j < m; j++) {
                    kd[j] += zr;
                    const double t = zr * qr - zi * qi;
                    zi = zr * qi + zi * qr;
                    zr = t;
                }
            }
            for (int j = 0; j < L; j++) rin[j] = (float)kd[j];
            memset(rin + L, 0, sizeof(float) * (nfft - L));
            fftwf_execute_dft_r2c(r2c, rin, kf);

            memset(acc, 0, sizeof(double) * 2 * cs);
            double aom = 0;
            for (int s = 0; s < S; s++) {
                const float *xs = x + (size_t)s * L * ld + d, *dys = dy + (size_t)s * L * ld + d;
                float *dxs = dx + (size_t)s * L * ld + d;
                /* X = rfft(x_s), DY = rfft(dy_s) */
                for (int t = 0; t < L; t++) rin[t] = xs[(size_t)t * ld];
                fftwf_execute_dft_r2c(r2c, rin, f1);
                for (int t = 0; t < L; t++) rin[t] = dys[(size_t)t * ld];
                fftwf_execute_dft_r2c(r2c, rin, f2);
                for (int t = 0; t < L; t++) aom += (double)rin[t] * xs[(size_t)t * ld];
                /* acc += DY conj(X) ;  f2 = DY conj(K) */
                for (size_t i = 0; i < (size_t)nfft / 2 + 1; i++) {
                    const double yr = f2[i][0], yi = f2[i][1];
                    const double xr = f1[i][0], xi = f1[i][1];
                    const double kr = kf[i][0], ki = kf[i][1];
                    acc[2 * i] += yr * xr + yi * xi;
                    acc[2 * i + 1] += yi * xr - yr * xi;
                    f2[i][0] = (float)(yr * kr + yi * ki);
                    f2[i][1] = (float)(yi * kr - yr * ki);
                }
                fftwf_execute_dft_c2r(c2r, f2, rout);
                for (int t = 0; t < L; t++)
                    dxs[(size_t)t * ld] = (float)(om * dys[(size_t)t * ld] + rout[t] * inv);
            }
            domega[d] += (float)aom;

            /* dk = irfft(acc)[0..L-1] */
            for (size_t i = 0; i < (size_t)nfft / 2 + 1; i++) {
                f1[i][0] = (float)acc[2 * i];
                f1[i][1] = (float)acc[2 * i + 1];
            }
            fftwf_execute_dft_c2r(c2r, f1, rout);
            for (int j = 0; j < L; j++) kd[j] = rout[j] * inv;

            for (int n = 0; n < N; n++) {
                const double qr = q[2 * n], qi = q[2 * n + 1];
                const double pn = p[n], er = eta[2 * n], ei = eta[2 * n + 1];
                /* Horner: b = sum_j dk_j q^j (S2), a = its derivative in q (S1) */
                double br = kd[L - 1], bi = 0, ar = 0, ai = 0;
                for (int j = L - 2; j >= 0; j--) {
                    const double nar = ar * qr - ai * qi + br, nai = ar * qi + ai * qr + bi;
                    const double nbr = br * qr - bi * qi + kd[j], nbi = br * qi + bi * qr;
                    ar = nar;
                    ai = nai;
                    br = nbr;
                    bi = nbi;
                }
                const size_t i = (size_t)d * N + n;
                /* dp += Re(S2 eta) ; dq += conj(S1 p eta) ; deta += conj(S2 p) */
                dp[i] += (float)(br * er - bi * ei);
                dq[2 * i] += (float)(pn * (ar * er - ai * ei));
                dq[2 * i + 1] += (float)(-pn * (ar * ei + ai * er));
                deta[2 * i] += (float)(br * pn);
                deta[2 * i + 1] += (float)(-bi * pn);
            }
        }
    }

    pthread_mutex_lock(&mg_fftw_planner_lock);
    fftwf_destroy_plan(r2c);
    fftwf_destroy_plan(c2r);
    pthread_mutex_unlock(&mg_fftw_planner_lock);
    fftwf_free(tb);
    free(db);
    return MG_OK;
}

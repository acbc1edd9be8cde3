/* backend-cpu-cema.h - what the CPU backend's two CEMA files share (internal):
 * backend-cpu-cema.c (the scan and the chunked scan, the adjoint scan, the planner and the op
 * entry points) and backend-cpu-cema-fft.c (the FFT forward with its plan and kernel caches,
 * and the backward by FFT correlations). */
#ifndef MG_BACKEND_CPU_CEMA_H
#define MG_BACKEND_CPU_CEMA_H

#include <fftw3.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "backend-cpu.h"
#include "cema-plan.h"

#if defined(__SSE__)
#include <xmmintrin.h>
/* Flush-to-zero and denormals-are-zero for the zero-input runs of the kernel, whose decaying
 * states would otherwise crawl through the subnormal range (microcode assists, ~100x slower
 * per operation); those values are below 2^-126 and change nothing that fp32 can show. */
static inline unsigned ftz_enter(void)
{
    unsigned m = _mm_getcsr();
    _mm_setcsr(m | 0x8040);
    return m;
}
static inline void ftz_leave(unsigned m) { _mm_setcsr(m); }
#else
static inline unsigned ftz_enter(void) { return 0; }
static inline void ftz_leave(unsigned m) { (void)m; }
#endif

#define G 16          /* channels per group: a multiple of every kernel table's vector width */
#define TILE 1024     /* rows per zero-input kernel call (the size of the zero buffer) */
#define MAX_PLANS 32  /* FFT sizes kept */
#define MAX_SEEN 256  /* coefficient sets remembered for the cache-fit guess of the estimate */
#define BWD_BUCKETS 8 /* the backward's wisdom: per S bucket 1, 2, 4, ..., >= 128 */

typedef struct {
    int n, refs;
    uint64_t used;
    fftwf_plan r2c, c2r;
} fft_plan;

/* One cached kernel transform: D rows of cstride complex, row d = rfft(k_d, nfft). */
typedef struct kentry {
    struct kentry *next;
    const mg_cema_coeffs *coeffs;
    uint64_t hash;
    int D, N, nfft;
    fftwf_complex *kf;
    size_t bytes;
    int refs, cached;
    uint64_t used;
} kentry;

/* The CEMA state of a CPU backend (cpu_ctx: cema): the planner's settings, read from the
 * environment when the backend is created, the FFT forward's caches, and the wisdom of the
 * forward and of the backward. */
struct cema_cpu {
    cema_settings set;
    pthread_mutex_t lock; /* plans, kernel cache, seen */
    fft_plan *plans[MAX_PLANS];
    int n_plans;
    kentry *kc;
    size_t kc_bytes;
    uint64_t tick;
    long hits, misses, evictions;
    const mg_cema_coeffs *seen[MAX_SEEN];
    int n_seen;
    pthread_mutex_t measure_lock;     /* one forward measurement at a time */
    cema_wisdom *wis;                 /* measure mode: the forward's measured choices */
    pthread_mutex_t bwd_measure_lock; /* one backward measurement at a time */
    cema_wisdom *bwd_wis[BWD_BUCKETS]; /* the backward's, per S bucket (backend "cpu-bwd/sK") */
};

/* FFTW's planner is not thread-safe, and other backends may plan too: every plan is made and
 * destroyed under this lock (backend-cpu-cema-fft.c). */
extern pthread_mutex_t mg_fftw_planner_lock;

/* Row strides of the per-channel transform buffers: whole cache lines (FFTW's new-array
 * execution wants the planning arrays' alignment), plus one line so that the G rows of a
 * group, written and read across at the same t, do not all map to the same cache set. */
static inline int rstride(int nfft) { return ((nfft + 15) & ~15) + 16; } /* floats */
static inline int cstride(int nfft) { return (nfft / 2 + 1 + 7) & ~7; }    /* complex */
static inline int imin(int a, int b) { return a < b ? a : b; }

/* q^m in double by binary powering (relative error ~ log2(m) 1e-16 per step) */
static inline void cpow_d(double qr, double qi, int64_t m, double *rr, double *ri)
{
    double ar = 1.0, ai = 0.0, br = qr, bi = qi;
    while (m > 0) {
        if (m & 1) {
            double t = ar * br - ai * bi;
            ai = ar * bi + ai * br;
            ar = t;
        }
        m >>= 1;
        if (m) {
            double t = br * br - bi * bi;
            bi = 2.0 * br * bi;
            br = t;
        }
    }
    *rr = ar;
    *ri = ai;
}

/* the largest |q| over channels d .. d+nd-1 */
static inline double qmax_of(const mg_cema_coeffs *c, int d, int nd)
{
    double m2 = 0.0;
    const float *q = c->q + (size_t)d * c->N * 2;
    for (size_t i = 0; i < (size_t)nd * c->N; i++) {
        double a = (double)q[2 * i] * q[2 * i] + (double)q[2 * i + 1] * q[2 * i + 1];
        if (a > m2) m2 = a;
    }
    return sqrt(m2);
}

static inline int state_is_zero(const float *h, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (h[i] != 0.0f) return 0;
    return 1;
}

/* Zero-input run of the kernel for nd (<= G) channels whose parameters start at p, q, eta,
 * from the state h (nd*N complex, updated): out[t*G + c] = Re(sum_n eta q^(t+1) h) for
 * t < n. zeros: TILE*G zeros; zom: G zeros (omega). */
static inline void zero_input_scan(const mg_kernels *K, int n, int nd, int N, const float *p,
                                   const float *q, const float *eta, float *h, float *out,
                                   const float *zeros, const float *zom)
{
    for (int t0 = 0; t0 < n; t0 += TILE)
        K->cema_scan(zeros, imin(n - t0, TILE), G, N, 0, nd, p, q, eta, zom, h,
                     out + (size_t)t0 * G);
}

/* Channel groups: G channels each, the first one narrower when that puts the others at a
 * 64-byte boundary of the x rows (rows of a multiple of G floats from a buffer that is
 * 4-byte but not 64-byte aligned, as large malloc blocks are): a group's 16 floats then
 * fill one cache line instead of straddling two, which the strided access of the kernel
 * pays for (about 1.5x at D = 1024). A channel's result does not depend on its group. */
typedef struct {
    int D, s, n; /* s: width of the leading partial group, 0 if none; n: groups */
} groups;

static inline groups groups_of(const float *x, int D)
{
    groups gr = {D, 0, 0};
    uintptr_t a = (uintptr_t)x;
    if (D % G == 0 && D > G && (a & 3) == 0) gr.s = (int)((G - ((a >> 2) & (G - 1))) & (G - 1));
    gr.n = (gr.s ? 1 : 0) + (D - gr.s + G - 1) / G;
    return gr;
}

static inline void group_at(const groups *gr, int g, int *d, int *nd)
{
    *d = gr->s ? (g == 0 ? 0 : gr->s + (g - 1) * G) : g * G;
    *nd = gr->s && g == 0 ? gr->s : imin(G, gr->D - *d);
}

/* Remember c among the coefficient sets in use (the estimate's guess whether the kernel
 * cache holds every layer's transform). */
static inline void note_seen(struct cema_cpu *cs, const mg_cema_coeffs *c)
{
    pthread_mutex_lock(&cs->lock);
    int i = 0;
    while (i < cs->n_seen && cs->seen[i] != c) i++;
    if (i == cs->n_seen && cs->n_seen < MAX_SEEN) cs->seen[cs->n_seen++] = c;
    pthread_mutex_unlock(&cs->lock);
}

/* ---- backend-cpu-cema-fft.c */

/* The FFT forward (cema-plan.h: "fft"), h updated to the state after the L rows. */
int cema_fft_forward(mg_backend *be, const float *x, int L, const mg_cema_coeffs *c, float *h,
                     float *y);
/* The backward by FFT correlations (backend.h: cema_backward, algorithm MG_CEMA_FFT). */
int cema_fft_backward(mg_backend *be, const float *x, int S, int L, const mg_cema_coeffs *c,
                      const float *dy, float *dx, float *dp, float *dq, float *deta,
                      float *domega);
/* Destroy the cached plans and kernel transforms (at backend destruction). */
void cema_fft_free(struct cema_cpu *cs);

#endif

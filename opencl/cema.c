/* cema.c - CEMA on the OpenCL device (lib/backend.h: cema): the chunked scan (cema.cl) and
 * the causal convolution by FFT (fft.cl) with its cache of kernel transforms, and the choice
 * between them per call (cema_choice). */
#include "config.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cema-plan.h"
#include "ocl.h"

#define CEMA_B 64 /* time steps per block of the chunked scan */

/* ---- CEMA by FFT (opencl/fft.cl: the math, the layout, the overlap-save blocks) */

#define FFT_ROWS 64        /* lags or rows per work-item of mg_cema_fft_kernel/_carry (fft.cl) */
#define FFT_MAX_LOG2 24    /* the largest transform: 2^24 points (int indices, 128 MiB twiddles) */
#define FFT_CACHE 64       /* kernel transforms kept */

/* One cached kernel transform: the coefficient set (keyed by the address of its q, as the
 * weights are by theirs, and forgotten with them) at transform size n. */
typedef struct {
    const float *q; /* NULL: empty */
    int D, N, decay, n;
    cl_mem K;       /* (Ka_k, Kb_k) per pair of channels and k = 0 .. n/2, scaled by 1/n */
    size_t bytes;
    unsigned long used;
} fft_kentry;

struct ocl_fft {
    int override;   /* MEGALODON_CEMA: -1, or the mg_cema_algo it names */
    size_t budget;  /* bytes of kernel transforms kept (MEGALODON_CEMA_CACHE_MB, as the CPU) */
    size_t bytes;
    unsigned long tick;
    fft_kentry e[FFT_CACHE];
    cl_mem ws[3];   /* two work buffers the passes ping-pong between, and the tail's block ends */
    size_t ws_bytes[3];
    cl_mem tw[FFT_MAX_LOG2 + 1]; /* twiddle tables exp(-2 pi i m / 2^k), m < 2^k */
};

/* MEGALODON_CEMA and MEGALODON_CEMA_CACHE_MB, read once at creation as the CPU backend does
 * (an invalid value is an error there too). */
int ocl_cema_init(ocl_ctx *c)
{
    cema_settings s;
    int rc = cema_settings_read(&s);
    if (rc) return rc;
    c->fft = calloc(1, sizeof *c->fft);
    if (c->fft) {
        c->fft->override = s.override;
        c->fft->budget = s.cache_bytes;
    }
    cema_settings_free(&s);
    return c->fft ? MG_OK
                  : mg_seterr(MG_ERR_NOMEM, "OpenCL: out of memory for the CEMA FFT's settings");
}

void ocl_cema_forget(ocl_ctx *c)
{
    if (!c->fft) return;
    for (int i = 0; i < FFT_CACHE; i++)
        if (c->fft->e[i].q) clReleaseMemObject(c->fft->e[i].K);
    memset(c->fft->e, 0, sizeof c->fft->e);
    c->fft->bytes = 0;
}

void ocl_cema_free(ocl_ctx *c)
{
    if (!c->fft) return;
    ocl_cema_forget(c);
    for (int i = 0; i < 3; i++)
        if (c->fft->ws[i]) clReleaseMemObject(c->fft->ws[i]);
    for (int i = 0; i <= FFT_MAX_LOG2; i++)
        if (c->fft->tw[i]) clReleaseMemObject(c->fft->tw[i]);
    free(c->fft);
    c->fft = NULL;
}

/* Work buffer i of at least `bytes` (grown, never shrunk). */
static int fft_ws(ocl_ctx *c, int i, size_t bytes, cl_mem *out)
{
    struct ocl_fft *f = c->fft;
    TRY(ocl_grow(c, &f->ws[i], &f->ws_bytes[i], bytes, 0, "a CEMA FFT work buffer"));
    *out = f->ws[i];
    return MG_OK;
}

/* The transform size n = 2^m and the output rows per block M for L rows and a kernel of kl
 * lags: one transform of n >= L + kl - 1 (M = L), or, when the kernel is short against L,
 * overlap-save blocks of n >= max(64, 4 kl) (M = n - kl + 1 >= 3 kl) when they cost fewer
 * butterflies (cema_fft_blocks does the same on the CPU with FFTW's sizes). 0: too long. */
static int fft_size(int L, int kl, int *M)
{
    int m1 = 1, m2 = 6;
    while (m1 <= FFT_MAX_LOG2 && ((int64_t)1 << m1) < (int64_t)L + kl - 1) m1++;
    while (((int64_t)1 << m2) < 4 * (int64_t)kl) m2++;
    if (m1 > FFT_MAX_LOG2 && m2 > FFT_MAX_LOG2) return 0;
    *M = L;
    if (kl < L && m2 <= FFT_MAX_LOG2 && m2 < m1) {
        const int64_t n2 = (int64_t)1 << m2, M2 = n2 - kl + 1, nb2 = (L + M2 - 1) / M2;
        if (m1 > FFT_MAX_LOG2 || nb2 * n2 * m2 < ((int64_t)1 << m1) * m1) {
            *M = (int)M2;
            return (int)n2;
        }
    }
    return m1 > FFT_MAX_LOG2 ? 0 : 1 << m1;
}

/* The twiddle table of n = 2^m points, w_j = exp(-2 pi i j / n) rounded from double, made
 * once per size. */
static int fft_twiddles(ocl_ctx *c, int m, cl_mem *out)
{
    struct ocl_fft *f = c->fft;
    if (!f->tw[m]) {
        const int n = 1 << m;
        float *w = malloc(sizeof(float) * 2 * (size_t)n);
        if (!w) return mg_seterr(MG_ERR_NOMEM, "OpenCL: out of memory for FFT twiddles (%d)", n);
        for (int j = 0; j < n; j++) {
            const double a = -2.0 * M_PI * (double)j / (double)n;
            w[2 * j] = (float)cos(a);
            w[2 * j + 1] = (float)sin(a);
        }
        cl_int e;
        f->tw[m] = clCreateBuffer(c->ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
                                  sizeof(float) * 2 * (size_t)n, w, &e);
        free(w);
        if (!f->tw[m]) return ocl_fail(e, "clCreateBuffer (FFT twiddles)");
    }
    *out = f->tw[m];
    return MG_OK;
}

/* The passes of a transform of nblk blocks of S interleaved sequences of n points (fft.cl)
 * in a, with b as the other buffer; *res: the one holding the result. sign -1: forward; +1:
 * inverse (unscaled). */
static int fft_passes(ocl_ctx *c, cl_mem a, cl_mem b, int n, int S, int nblk, float sign,
                      cl_mem *res)
{
    int rc, Ns = 1, m = 0;
    while ((1 << m) < n) m++;
    cl_mem src = a, dst = b, t, w;
    const size_t seqs = (size_t)S * nblk;
    if ((rc = fft_twiddles(c, m, &w))) return rc;
    if (m & 1) { /* one radix-2 pass first, then radix 4 */
        karg ar[] = {A_MEM(src), A_MEM(dst), A_INT(n), A_INT(Ns), A_F(sign), A_INT(S),
                     A_INT(nblk), A_MEM(w)};
        if ((rc = ocl_launch1(c, K_FFT_R2, seqs * (n / 2), ar, 8))) return rc;
        Ns = 2;
        t = src, src = dst, dst = t;
    }
    for (; Ns < n; Ns *= 4) {
        karg ar[] = {A_MEM(src), A_MEM(dst), A_INT(n), A_INT(Ns), A_F(sign), A_INT(S),
                     A_INT(nblk), A_MEM(w)};
        if ((rc = ocl_launch1(c, K_FFT_R4, seqs * (n / 4), ar, 8))) return rc;
        t = src, src = dst, dst = t;
    }
    *res = src;
    return MG_OK;
}

/* Kernel kid over `items` work-items, with the arguments a[0 .. na-1] and then work buffer 0,
 * which it fills with nblk blocks of S sequences of n points; then their forward transform.
 * *zr: the work buffer holding the transform, *zo: the other one. */
static int fft_forward(ocl_ctx *c, int kid, size_t items, const karg *a, int na, int n, int S,
                       int nblk, cl_mem *zr, cl_mem *zo)
{
    const size_t bytes = (size_t)nblk * S * n * 8;
    cl_mem z0, z1;
    karg args[16]; /* na < 16 */
    int rc;
    if ((rc = fft_ws(c, 0, bytes, &z0)) || (rc = fft_ws(c, 1, bytes, &z1))) return rc;
    memcpy(args, a, sizeof *a * (size_t)na);
    args[na] = (karg)A_MEM(z0);
    if ((rc = ocl_launch1(c, kid, items, args, na + 1)) ||
        (rc = fft_passes(c, z0, z1, n, S, nblk, -1.0f, zr)))
        return rc;
    *zo = *zr == z0 ? z1 : z0;
    return MG_OK;
}

/* cema_decay_steps of the largest |q|: taken from a cached entry of the set when there is one. */
static int fft_decay(ocl_ctx *c, const mg_cema_coeffs *cf)
{
    for (int i = 0; i < FFT_CACHE; i++) {
        const fft_kentry *e = &c->fft->e[i];
        if (e->q == cf->q && e->D == cf->D && e->N == cf->N) return e->decay;
    }
    double m2 = 0.0;
    for (size_t i = 0; i < (size_t)cf->D * cf->N; i++) {
        const double re = cf->q[2 * i], im = cf->q[2 * i + 1], a = re * re + im * im;
        if (a > m2) m2 = a;
    }
    return cema_decay_steps(sqrt(m2));
}

/* Whether a call of L rows asked for algo runs the FFT: MEGALODON_CEMA overrides the
 * caller; decode (L = 1) is always the recurrence (as on the CPU); MG_CEMA_FFT runs it, and
 * auto does when the kernel is short against L (L >= FFT_AUTO_DECAYS decay, decay the
 * cema_decay_steps of the largest |q|): its cost is then mostly the transforms, 3-5x less
 * than the chunked scan's on PoCL, while with the decay near L the carried-state term and
 * the new state alone cost about what the scan costs (docs/opencl.md: the measurement, FFT
 * behind at L <= 2.2 decay, ahead from 4.3). */
#define FFT_AUTO_DECAYS 4
static int fft_chosen(ocl_ctx *c, mg_cema_algo algo, int L, const mg_cema_coeffs *cf)
{
    if (c->fft && c->fft->override >= 0) algo = (mg_cema_algo)c->fft->override;
    if (L <= 1) return 0;
    if (algo == MG_CEMA_FFT) return 1;
    if (algo != MG_CEMA_AUTO || !cf || !c->fft) return 0;
    return (int64_t)FFT_AUTO_DECAYS * fft_decay(c, cf) <= L;
}

/* The kernel's transform for n (k_j for j < min(n/2, decay), zero beyond: it serves every L
 * whose transform size is n), computed on the device the first time and cached. */
static int fft_kernel(ocl_ctx *c, const mg_cema_coeffs *cf, cl_mem bp, cl_mem bq, cl_mem beta,
                      int decay, int n, cl_mem *out)
{
    struct ocl_fft *f = c->fft;
    const int D = cf->D, N = cf->N, npair = (D + 1) / 2, h = n / 2 + 1;
    int rc, slot = -1;
    for (int i = 0; i < FFT_CACHE; i++) {
        fft_kentry *e = &f->e[i];
        if (e->q == cf->q && e->D == D && e->N == N && e->n == n) {
            e->used = ++f->tick;
            *out = e->K;
            return MG_OK;
        }
        if (!e->q && slot < 0) slot = i;
    }
    const size_t bytes = (size_t)npair * h * 16;
    if ((rc = ocl_fits(c, (size_t)npair * n, 8, "the CEMA kernel's transform"))) return rc;
    /* room: the least recently used go until the new one fits the budget and a slot is free */
    while (slot < 0 || (f->bytes && f->bytes + bytes > f->budget)) {
        int lru = -1;
        for (int i = 0; i < FFT_CACHE; i++)
            if (f->e[i].q && (lru < 0 || f->e[i].used < f->e[lru].used)) lru = i;
        if (lru < 0) break;
        clReleaseMemObject(f->e[lru].K); /* commands still using it keep it alive */
        f->bytes -= f->e[lru].bytes;
        memset(&f->e[lru], 0, sizeof f->e[lru]);
        if (slot < 0) slot = lru;
    }
    cl_int err;
    cl_mem K = clCreateBuffer(c->ctx, CL_MEM_READ_WRITE, bytes, NULL, &err);
    if (!K) return ocl_fail(err, "clCreateBuffer (CEMA kernel transform)");
    cl_mem zr, zo;
    const int kk = decay < n / 2 ? decay : n / 2, nb = (n + FFT_ROWS - 1) / FFT_ROWS;
    const float scale = 1.0f / (float)n;
    {
        karg a1[] = {A_INT(D), A_INT(N), A_INT(kk), A_INT(n), A_MEM(bp), A_MEM(bq), A_MEM(beta)};
        if ((rc = fft_forward(c, K_FFT_KERNEL, (size_t)nb * npair, a1, 7, n, npair, 1, &zr, &zo)))
            goto fail;
        karg a2[] = {A_MEM(zr), A_INT(n), A_INT(npair), A_F(scale), A_MEM(K)};
        if ((rc = ocl_launch1(c, K_FFT_SPLIT, (size_t)npair * h, a2, 5))) goto fail;
    }
    f->e[slot] = (fft_kentry){cf->q, D, N, decay, n, K, bytes, ++f->tick};
    f->bytes += bytes;
    *out = K;
    return MG_OK;
fail:
    clReleaseMemObject(K);
    return rc;
}

/* CEMA of L > 1 rows by FFT on device buffers: x (L x D) and the state h (D x N complex)
 * in, y (L x D) and the new state h_out out (h_out must not be h); the coefficients as the
 * weight cache holds them. Steps (fft.cl): the causal convolution with the cached kernel
 * transform (load, forward passes, multiply, inverse passes, store with omega x), the
 * carried-state term over the first min(L, decay) rows, and the new state from the last
 * min(L, decay) rows by passes A and B of the chunked scan (cema.cl), restricted to them. */
static int cema_fft(ocl_ctx *c, const mg_cema_coeffs *cf, int L, cl_mem bx, cl_mem bh,
                    cl_mem bhout, cl_mem by, cl_mem bp, cl_mem bq, cl_mem beta, cl_mem bom)
{
    const int D = cf->D, N = cf->N, npair = (D + 1) / 2, B = CEMA_B;
    const size_t DN = (size_t)D * N;
    const int decay = fft_decay(c, cf), kl = L < decay ? L : decay;
    int rc, M, n = fft_size(L, kl, &M);
    if (!n)
        return mg_seterr(MG_ERR_UNSUPPORTED,
                         "OpenCL: CEMA FFT of %d rows needs a transform of more than 2^%d points "
                         "(use the scan: MEGALODON_CEMA=scan)", L, FFT_MAX_LOG2);
    const int nblk = (L + M - 1) / M, batch = nblk * npair, h = n / 2 + 1;
    if ((rc = ocl_fits(c, (size_t)batch * n, 8, "the CEMA FFT's work buffer"))) return rc;
    cl_mem K, zr, zo, bE;
    if ((rc = fft_kernel(c, cf, bp, bq, beta, decay, n, &K))) return rc;
    /* y = k * x + omega x */
    karg a1[] = {A_MEM(bx), A_INT(L), A_INT(D), A_INT(n), A_INT(kl), A_INT(M), A_INT(nblk)};
    if ((rc = fft_forward(c, K_FFT_LOAD, (size_t)batch * n, a1, 7, n, npair, nblk, &zr, &zo)))
        return rc;
    karg a2[] = {A_MEM(zr), A_MEM(K), A_INT(n), A_INT(npair), A_INT(nblk)};
    if ((rc = ocl_launch1(c, K_FFT_MUL, (size_t)batch * h, a2, 5))) return rc;
    if ((rc = fft_passes(c, zr, zo, n, npair, nblk, 1.0f, &zr))) return rc;
    karg a3[] = {A_MEM(zr), A_MEM(bx), A_MEM(bom), A_INT(L), A_INT(D), A_INT(n), A_INT(kl),
                 A_INT(M), A_MEM(by)};
    if ((rc = ocl_launch1(c, K_FFT_STORE, (size_t)L * D, a3, 9))) return rc;
    /* + Re(sum_n eta q^(t+1) h) for t < kl */
    karg a4[] = {A_INT(kl), A_INT(D), A_INT(N), A_MEM(bq), A_MEM(beta), A_MEM(bh), A_MEM(by)};
    if ((rc = ocl_launch1(c, K_FFT_CARRY, (size_t)((kl + FFT_ROWS - 1) / FFT_ROWS) * D, a4, 7)))
        return rc;
    /* h_out = q^L h + sum_j q^(L-1-j) p x_j over the last kl rows */
    const int t_first = L - kl, nbt = (kl + B - 1) / B;
    if ((rc = fft_ws(c, 2, (size_t)nbt * DN * 8, &bE))) return rc;
    karg a5[] = {A_MEM(bx), A_INT(L), A_INT(D), A_INT(N), A_INT(B), A_INT(t_first), A_MEM(bp),
                 A_MEM(bq), A_MEM(bE)};
    if ((rc = ocl_launch1(c, K_CEMA_END, (size_t)nbt * DN, a5, 9))) return rc;
    karg a6[] = {A_INT(L), A_INT(D), A_INT(N), A_INT(B), A_INT(t_first), A_MEM(bq), A_MEM(bh),
                 A_MEM(bE), A_MEM(bhout)};
    return ocl_launch1(c, K_FFT_TAIL_FOLD, DN, a6, 9);
}

int ocl_cema(mg_backend *be, mg_cema_algo algo, const float *x, int L,
                    const mg_cema_coeffs *cf, float *h, float *y)
{
    ocl_ctx *c = octx(be);
    if (L <= 0) return MG_OK;
    const int D = cf->D, N = cf->N, B = CEMA_B, nb = (L + B - 1) / B;
    const size_t LD = (size_t)L * D, DN = (size_t)D * N;
    int rc;
    cl_mem bx, bh, bhout, bE, bS, by, bp, bq, beta, bom;
    LOCK(c);
    TRY_GOTO(ocl_upload(c, S_A, x, LD * 4, &bx), out);
    sregion *rh; /* h kept on the device (a registered state), or NULL */
    TRY_GOTO(ocl_state_in(c, S_B, h, DN * 8, &bh, &rh), out);
    TRY_GOTO(ocl_scratch(c, S_D, DN * 8, &bhout), out);
    TRY_GOTO(ocl_scratch(c, S_C, LD * 4, &by), out);
    TRY_GOTO(ocl_weight(c, cf->p, DN, 0, &bp), out);
    TRY_GOTO(ocl_weight(c, cf->q, 2 * DN, 0, &bq), out);
    TRY_GOTO(ocl_weight(c, cf->eta, 2 * DN, 0, &beta), out);
    TRY_GOTO(ocl_weight(c, cf->omega, (size_t)D, 0, &bom), out);
    if (fft_chosen(c, algo, L, cf)) {
        TRY_GOTO(cema_fft(c, cf, L, bx, bh, bhout, by, bp, bq, beta, bom), out);
    } else { /* the chunked scan (cema.cl) */
        bS = bh;
        if (nb > 1) {
            TRY_GOTO(ocl_scratch(c, S_E, (size_t)nb * DN * 8, &bE), out);
            TRY_GOTO(ocl_scratch(c, S_F, (size_t)nb * DN * 8, &bS), out);
            const int from = 0; /* pass A over every block */
            karg a1[] = {A_MEM(bx), A_INT(L), A_INT(D), A_INT(N), A_INT(B), A_INT(from),
                         A_MEM(bp), A_MEM(bq), A_MEM(bE)};
            TRY_GOTO(ocl_launch1(c, K_CEMA_END, (size_t)nb * DN, a1, 9), out);
            karg a2[] = {A_INT(L), A_INT(D), A_INT(N), A_INT(B), A_MEM(bq), A_MEM(bh), A_MEM(bE),
                         A_MEM(bS)};
            TRY_GOTO(ocl_launch1(c, K_CEMA_CARRY, DN, a2, 8), out);
        }
        karg a3[] = {A_MEM(bx), A_INT(L), A_INT(D), A_INT(N), A_INT(B), A_MEM(bp), A_MEM(bq),
                     A_MEM(beta), A_MEM(bom), A_MEM(bS), A_MEM(by), A_MEM(bhout)};
        TRY_GOTO(ocl_launch1(c, K_CEMA_OUT, (size_t)nb * D, a3, 12), out);
    }
    /* the new h: kept there, or read back */
    TRY_GOTO(ocl_state_out(c, rh, bhout, h, DN * 8), out);
    TRY_GOTO(ocl_download(c, by, y, LD * 4), out);
out:
    UNLOCK_RET(c, rc);
}

const char *ocl_cema_choice(mg_backend *be, mg_cema_algo algo, int L, const mg_cema_coeffs *cf)
{
    ocl_ctx *c = octx(be);
    LOCK(c);
    const int fft = fft_chosen(c, algo, L, cf);
    pthread_mutex_unlock(&c->lock);
    return fft ? "fft" : "scan-chunked";
}

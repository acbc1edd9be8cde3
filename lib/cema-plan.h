/* cema-plan.h - choosing how to compute CEMA (internal).
 *
 * The CEMA op (backend.h: cema) has three implementations in the CPU backend
 * (backend-cpu-cema.c, backend-cpu-cema-fft.c), which give the same result to fp32 rounding:
 *   scan          the recurrence, channels split across threads;
 *   scan-chunked  the recurrence split along time into blocks of a fixed length (a function
 *                 of L only), the carried state then propagated block to block and each
 *                 block's output corrected: uses all threads when D is small;
 *   fft           the causal convolution with the CEMA kernel by real FFTs (the kernel's
 *                 transform cached per layer and FFT size), plus the carried-state term and
 *                 the new state computed by the recurrence over the steps where they matter.
 * MG_CEMA_AUTO resolves to one of them per (L, D, N, threads): by a cost model (`estimate`,
 * the default) or by timing them once per shape (`measure`), remembered in a wisdom file.
 * See docs/cema.md. */
#ifndef MG_CEMA_PLAN_H
#define MG_CEMA_PLAN_H

#include <stddef.h>

#include "backend.h"

/* What the backend runs. */
typedef enum { CEMA_RUN_SCAN = 0, CEMA_RUN_SCAN_CHUNKED = 1, CEMA_RUN_FFT = 2 } cema_run;
#define CEMA_N_RUNS 3

/* What a caller may ask the CPU backend's cema and cema_backward for (and MEGALODON_CEMA may
 * name): the values of the public mg_cema_algo, and the chunked scan, which is not public
 * (the tests and the timing tool ask for it by name). The ops take an mg_cema_algo and read
 * it as a cema_algo. */
typedef enum {
    CEMA_ALGO_AUTO = MG_CEMA_AUTO,
    CEMA_ALGO_FFT = MG_CEMA_FFT,
    CEMA_ALGO_SCAN = MG_CEMA_SCAN,
    CEMA_ALGO_CHUNKED = 3 /* the value a public MG_CEMA_SCAN_CHUNKED would take */
} cema_algo;

/* "scan", "scan-chunked", "fft" */
const char *cema_run_name(cema_run r);

/* ------------------------------------------------------------------ environment */

typedef enum { CEMA_PLAN_ESTIMATE = 0, CEMA_PLAN_MEASURE = 1 } cema_plan_mode;

/* Settings read once per backend from the environment:
 *   MEGALODON_CEMA           auto | fft | scan | scan-chunked: overrides what the caller asks
 *   MEGALODON_CEMA_PLANNER   estimate (default) | measure
 *   MEGALODON_CEMA_WISDOM    the wisdom file, or "none" (default: $XDG_CACHE_HOME/megalodon/
 *                            cema-wisdom, else ~/.cache/megalodon/cema-wisdom)
 *   MEGALODON_CEMA_CACHE_MB  memory for cached FFT kernels, MiB (default 256; 0: no cache) */
typedef struct {
    int override;        /* -1: none; else a cema_algo */
    cema_plan_mode mode;
    char *wisdom_path;   /* malloc'd; NULL: no wisdom file */
    int wisdom_default;  /* the path is the default one (its directory may be created) */
    size_t cache_bytes;
} cema_settings;

/* MG_OK, or MG_ERR_INVALID_ARG naming the variable with an invalid value. */
int cema_settings_read(cema_settings *s);
void cema_settings_free(cema_settings *s);

/* ------------------------------------------------------------------ cost model */

/* Steps after which |q|^t < 2^-40 for |q| <= qmax: beyond them a decaying term is below fp32
 * resolution (2^-24) by a factor 2^16 and is dropped (FFT state terms, chunk corrections).
 * INT_MAX when qmax >= 1. */
int cema_decay_steps(double qmax);

/* Block length of the chunked scan: depends on L only, so that the result does not depend
 * on the thread count. >= L means a single block (the plain scan). */
int cema_chunk_len(int L);

/* The FFT size for L rows and a kernel of `decay` steps: the smallest 2^a, 5 2^a or 3 2^a
 * (sizes FFTW transforms about as fast per point as powers of two) >= L + min(L, decay) - 1,
 * or >= 2L when decay >= L; -1 beyond 2^30. */
int cema_nfft(int L, int decay);

/* The FFT path's transform size and output rows per transform: one transform of
 * cema_nfft(L, decay) points, or, for a long input and a short kernel, blocks of about
 * CEMA_FFT_BLOCK outputs (overlap-save: each transform also covers the kernel's
 * min(L, decay) - 1 rows before its block), which keep the buffers in cache. */
#define CEMA_FFT_BLOCK 4096
void cema_fft_blocks(int L, int decay, int *nfft, int *rows);

/* The key length of a measured choice: the power of two >= L. */
int cema_len_bucket(int L);

typedef struct {
    int L, D, N, threads;
    int decay;         /* cema_decay_steps of the largest |q| */
    int carried;       /* the hidden state on entry is not zero */
    int kernel_cached; /* the FFT kernel transform stays cached (the cache holds all layers) */
} cema_problem;

/* Estimated wall time (ns) of each implementation for the kernel table `isa` ("avx512",
 * "avx2", "scalar", ...) on the machine the constants were measured on (docs/cema.md), and
 * the cheapest; scan-chunked is a candidate only with threads > 1 and more than one block. */
cema_run cema_estimate(const char *isa, const cema_problem *pb, double ns[CEMA_N_RUNS]);

/* ------------------------------------------------------------------ backward */

/* The training backward (backend.h: cema_backward) has two implementations in the CPU
 * backend: scan (the adjoint recurrence in double, backend-cpu-cema.c) and fft (FFT
 * correlations, backend-cpu-cema-fft.c). MG_CEMA_AUTO resolves to one of them per
 * (S, L, D, N, threads) by cema_estimate_backward or by timing both once per shape (measure
 * mode: wisdom entries of backend "cpu-bwd/sK", K the power of two >= S). */
typedef struct {
    int S, L, D, N, threads;
    int tail; /* cema_bwd_kernel_steps of the largest |q| */
} cema_bwd_problem;

/* Steps of the backward FFT's kernel: |q|^j below 1e-30 after them, at most L. */
int cema_bwd_kernel_steps(double qmax, int L);

/* Estimated wall time (ns) of the backward scan and fft (ns[CEMA_RUN_SCAN_CHUNKED] is
 * INFINITY: not a backward candidate), and the cheaper (constants: lib/cema-plan.c). */
cema_run cema_estimate_backward(const cema_bwd_problem *pb, double ns[CEMA_N_RUNS]);

/* ------------------------------------------------------------------ wisdom */

/* Measured choices, in memory and in a file (docs/cema.md: "Wisdom file"): lines
 *   <build> <isa> <backend> <L-bucket> <D> <N> <threads> <choice> <ns scan> <ns chunked> <ns fft>
 * after the header line "megalodon-cema-wisdom 1". A corrupt or unreadable file is ignored
 * with one warning on stderr per process; writes are atomic (temporary file, fsync, rename). */
typedef struct cema_wisdom cema_wisdom;

/* path NULL: memory only. build, isa and backend are keys (spaces become '_'). */
cema_wisdom *cema_wisdom_new(const char *path, int create_dir, const char *build,
                             const char *isa, const char *backend);
void cema_wisdom_free(cema_wisdom *w);
/* 1 with *out set when a choice is known (the file is read on first use), else 0. */
int cema_wisdom_get(cema_wisdom *w, int Lb, int D, int N, int threads, cema_run *out);
/* Remember a choice and rewrite the file (ns[r] < 0: not measured). */
void cema_wisdom_put(cema_wisdom *w, int Lb, int D, int N, int threads, cema_run choice,
                     const double ns[CEMA_N_RUNS]);

/* Measurements made by this process so far (the tests check that a second backend reads the
 * wisdom back instead of measuring again). */
long cema_plan_n_measured(void);
void cema_plan_count_measurement(void);

/* ------------------------------------------------------------------ CPU backend queries */

/* What the CPU backend runs for a call of L rows with these coefficients when asked for
 * `algo` (MEGALODON_CEMA applied; in measure mode an unknown shape is measured now, on
 * synthetic input): "scan", "scan-chunked" or "fft". NULL if be is not a CPU backend. */
const char *cpu_cema_choice(mg_backend *be, mg_cema_algo algo, int L, const mg_cema_coeffs *c);

/* One line: the choice for AUTO and the estimated (and measured, when known) ns per
 * token-channel of each implementation. Returns buf. */
const char *cpu_cema_explain(mg_backend *be, int L, const mg_cema_coeffs *c, char *buf,
                             size_t size);

/* What the CPU backend's cema_backward runs for S sequences of L rows when asked for `algo`
 * (MEGALODON_CEMA applied; scan-chunked means the scan; in measure mode an unknown shape is
 * measured now, on synthetic input): "scan" or "fft". NULL if be is not a CPU backend. */
const char *cpu_cema_backward_choice(mg_backend *be, mg_cema_algo algo, int S, int L,
                                     const mg_cema_coeffs *c);

/* The FFT kernel cache: set its byte budget (evicting as needed) and read its counters. */
void cpu_cema_cache_budget(mg_backend *be, size_t bytes);
typedef struct {
    long hits, misses, evictions, entries;
    size_t bytes;
} cema_cache_stats;
void cpu_cema_cache_stats(mg_backend *be, cema_cache_stats *st);

#endif

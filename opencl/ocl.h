/* ocl.h - what the files of the OpenCL backend share (internal to opencl/; docs/opencl.md).
 *
 * The backend fills the inference ops of the op table (lib/backend.h) with kernels of its
 * own (the .cl files of opencl/, embedded at build time as one string, opencl/kernels.cl.h),
 * built once per device and driver and cached on disk. The op table passes host pointers,
 * so:
 *   - weights (matrix weights, biases, norm weights, CEMA coefficients, RoPE frequencies,
 *     the q/k affine) are uploaded the first time an op sees them and kept on the device,
 *     keyed by host address and size: a model's weights never change while it is loaded
 *     (and each model has its own backend, freed with it);
 *   - activations are copied to the device for the op and the results copied back
 *     (docs/opencl.md says what keeping them resident would take);
 *   - the streaming state (CEMA h, timestep-norm mean/var, the chunk's keys and values)
 *     stays on the device when lib/state.c has registered its buffers (opencl/state.c);
 *     the host copy is made current by state_sync.
 * Every op runs under one lock on one in-order queue; the last read is blocking.
 *
 * The files: device.c (devices, context, the program and its binary cache), buffers.c
 * (scratch buffers, the weight cache, uploads, downloads, kernel launches), state.c (the
 * resident streaming state), ops.c (elementwise, RoPE, norms, attention), matmul.c (the
 * matrix products and their choice), cema.c (CEMA by chunked scan and by FFT, and the
 * choice between them), backend-opencl.c (creating the backend and filling its op table). */
#ifndef MG_OCL_H
#define MG_OCL_H

#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "backend-opencl.h"
#include "error.h"

#define OCL_MAX_DEVICES 64
#define OCL_WG 64 /* work-group size of the reduction kernels (clamped to the device) */

/* ---------------------------------------------------------------- the kernels
 * One line per kernel of the program: the index the host uses (K_<first>) and the kernel's
 * name in the .cl files (the second). The enum and ocl_kernel_names both come from here. */
#define MG_OCL_KERNELS(X)                                                                  \
    X(PROBE, mg_probe)                                                                     \
    X(SILU, mg_silu)                                                                       \
    X(MUL, mg_mul)                                                                         \
    X(ADD, mg_add)                                                                         \
    X(SCALE, mg_scale)                                                                     \
    X(AFFINE, mg_affine_rows)                                                              \
    X(ROPE, mg_rope)                                                                       \
    X(RMS, mg_rms_norm)                                                                    \
    X(LN, mg_layer_norm)                                                                   \
    X(TN_MOM, mg_tnorm_moments)                                                            \
    X(TN_SCAN, mg_tnorm_scan)                                                              \
    X(TN_APPLY, mg_tnorm_apply)                                                            \
    X(TN_STORE, mg_tnorm_store)                                                            \
    X(MATMUL, mg_matmul)                                                                   \
    X(MATMUL_DIRECT, mg_matmul_direct)                                                     \
    X(GEMV, mg_gemv)                                                                       \
    X(GEMV_DIRECT, mg_gemv_direct)                                                         \
    X(GEMV_TYPED, mg_gemv_typed)                                                           \
    X(MATMUL_TYPED, mg_matmul_typed)                                                       \
    X(MATMUL_TYPED_DIRECT, mg_matmul_typed_direct)                                         \
    X(CEMA_END, mg_cema_block_end)                                                         \
    X(CEMA_CARRY, mg_cema_carry)                                                           \
    X(CEMA_OUT, mg_cema_block_out)                                                         \
    X(ATTN, mg_attention)                                                                  \
    X(ATTN_BLOCK, mg_attention_block)                                                      \
    X(FFT_R4, mg_fft_radix4)                                                               \
    X(FFT_R2, mg_fft_radix2)                                                               \
    X(FFT_LOAD, mg_fft_load)                                                               \
    X(FFT_MUL, mg_fft_mul)                                                                 \
    X(FFT_STORE, mg_fft_store)                                                             \
    X(FFT_KERNEL, mg_cema_fft_kernel)                                                      \
    X(FFT_SPLIT, mg_fft_split)                                                             \
    X(FFT_CARRY, mg_cema_fft_carry)                                                        \
    X(FFT_TAIL_FOLD, mg_cema_tail_fold)

#define OCL_KERNEL_ENUM(id, name) K_##id,
enum { MG_OCL_KERNELS(OCL_KERNEL_ENUM) K_COUNT };
#undef OCL_KERNEL_ENUM
extern const char *const ocl_kernel_names[K_COUNT]; /* "mg_probe", ... (device.c) */

/* scratch slots: each op uses them for its inputs, outputs and temporaries */
enum { S_A, S_B, S_C, S_D, S_E, S_F, S_COUNT };

/* The matrix product for M > 1: our tiled kernel (local memory), our direct kernel (no
 * local memory), or CLBlast's sgemm. MEGALODON_OPENCL_GEMM chooses; by default the fastest
 * on the device, measured once and remembered in the program cache directory (matmul.c). */
enum { GEMM_TILED = 0, GEMM_DIRECT = 1, GEMM_CLBLAST = 2, GEMM_N = 3 };
extern const char *const ocl_gemm_names[GEMM_N]; /* "tiled", "direct", "clblast" */
/* Attention of L > 1 queries: mg_attention (a work-group per query) or mg_attention_block
 * (a work-group per block of queries sharing key/value tiles); MEGALODON_OPENCL_ATTN. */
enum { ATTN_QUERY = 0, ATTN_BLOCK = 1 };

/* ---------------------------------------------------------------- the backend's context */

/* A device and its platform (device.c lists them). */
typedef struct {
    cl_platform_id plat;
    cl_device_id dev;
} dev_ref;

/* How a weight is kept on the device: fp32, fp32 stored as fp16 (c->f16w), or the bytes of
 * its file type as they are (f16, q8_0, q4_0: matmul-typed.cl reads them). */
enum { W_F32 = 0, W_HALF = 1, W_RAW = 2 };

/* A weight kept on the device (buffers.c). */
typedef struct {
    const void *host; /* NULL: empty */
    size_t bytes;
    int form; /* W_* */
    cl_mem mem;
} wentry;

typedef struct {
    cl_context ctx;
    cl_command_queue queue;
    cl_device_id dev;
    cl_program prog;
    cl_kernel k[K_COUNT];
    size_t wg;          /* reduction work-group size */
    size_t max_alloc;   /* CL_DEVICE_MAX_MEM_ALLOC_SIZE */
    size_t local_mem;
    int fp64, f16w;     /* accumulate in double; matrix weights stored as fp16 */
    int gemm;           /* GEMM_*: the matrix product kernel for M > 1 */
    int gemv_mode;      /* M == 1: GEMM_TILED = mg_gemv (a work-group per output),
                           GEMM_DIRECT = mg_gemv_direct, GEMM_CLBLAST = CLBlast sgemv */
    char gemm_why[160]; /* how the choice was made */
    int attn;           /* ATTN_*: the attention kernel for L > 1 (decode: mg_attention) */
    cl_mem scratch[S_COUNT];
    size_t scratch_bytes[S_COUNT];
    cl_mem dummy;       /* bound where an optional buffer is absent */
    struct ocl_fft *fft; /* CEMA by FFT: settings, cached kernel transforms, work buffers */
    wentry *w;
    size_t w_cap, w_n;
    long w_uploads, w_hits;
    size_t w_bytes;
    int from_cache;
    char bin_path[4200]; /* the cached binary ("" without a cache) */
    pthread_mutex_t lock;
    char name[160];
    struct sregion *st_tab[256]; /* the resident streaming state, by host address */
    long st_regions;
    size_t st_up_bytes, st_down_bytes, st_dev_bytes; /* its traffic (see mg_opencl_stats) */
} ocl_ctx;

static inline ocl_ctx *octx(mg_backend *be) { return (ocl_ctx *)be->ctx; }

#define LOCK(c) pthread_mutex_lock(&(c)->lock)
/* On failure, wait for what was enqueued (non-blocking writes still read the caller's
 * memory) before returning. */
#define UNLOCK_RET(c, rc)                                                                  \
    do {                                                                                   \
        int r_ = (rc);                                                                     \
        if (r_ != MG_OK) clFinish((c)->queue);                                             \
        pthread_mutex_unlock(&(c)->lock);                                                  \
        return r_;                                                                         \
    } while (0)

/* ---------------------------------------------------------------- device.c */

/* An OpenCL failure as an mg_status: out-of-memory codes become MG_ERR_NOMEM. `what` names
 * the call and what it was for. */
int ocl_fail(cl_int e, const char *what);
#define CL_TRY(call, what)                                                                 \
    do {                                                                                   \
        cl_int e_ = (call);                                                                \
        if (e_ != CL_SUCCESS) return ocl_fail(e_, what);                                   \
    } while (0)

void ocl_dev_str(cl_device_id d, cl_device_info what, char *buf, size_t size);
int ocl_dev_has_ext(cl_device_id d, const char *ext);
/* Device number *device of the listing into *r; *device -1: $MEGALODON_OPENCL_DEVICE, else 0
 * (*device is set to the number taken). */
int ocl_find_device(int *device, dev_ref *r);
/* The context, the queue and the device's limits (c->wg, max_alloc, local_mem). */
int ocl_open(ocl_ctx *c, const dev_ref *r);
/* The program (through the binary cache), its kernels, and one run of the probe. */
int ocl_build(ocl_ctx *c, const dev_ref *r, const char *opts);
/* Build `src` with `opts` (no cache); MG_ERR_BACKEND with the build log when it fails. */
int ocl_build_source(ocl_ctx *c, const char *src, const char *opts, cl_program *out);

/* ---------------------------------------------------------------- buffers.c */

/* `bytes` fit in one device buffer; n elements of `elem` bytes do. */
int ocl_check_size(ocl_ctx *c, size_t bytes, const char *what);
int ocl_fits(ocl_ctx *c, size_t n, size_t elem, const char *what);
/* *m made at least `bytes` large (grown, never shrunk; the contents are not kept). */
int ocl_grow(ocl_ctx *c, cl_mem *m, size_t *have, size_t bytes, size_t slack,
             const char *what);
/* Scratch slot `slot` of at least `bytes`; upload: and host's bytes written into it. */
int ocl_scratch(ocl_ctx *c, int slot, size_t bytes, cl_mem *out);
int ocl_upload(ocl_ctx *c, int slot, const void *host, size_t bytes, cl_mem *out);
/* Blocking read of the first `bytes` of m into host. */
int ocl_download(ocl_ctx *c, cl_mem m, void *host, size_t bytes);
/* The device copy of a weight (n floats at host), uploaded on first use; as fp16 when
 * half; c->dummy when host is NULL. */
int ocl_weight(ocl_ctx *c, const float *host, size_t n, int half, cl_mem *out);
/* The first `rows` rows of a weight matrix as fp32 (fp16 when half), uploaded on first use;
 * types other than f32 are expanded on the host then (ocl_weight_raw keeps the f16, q8_0 and
 * q4_0 ones in their own bytes instead). */
int ocl_weight_typed(ocl_ctx *c, const mg_weight *W, int rows, int half, cl_mem *out);
/* The type runs on the device in its own bytes (f16, q8_0, q4_0: matmul-typed.cl). */
int ocl_type_native(uint32_t type);
/* The first `rows` rows of a weight matrix of a native type, its bytes uploaded as they are
 * on first use (rows * W->row_bytes bytes on the device). */
int ocl_weight_raw(ocl_ctx *c, const mg_weight *W, int rows, cl_mem *out);
/* Drop every cached weight (and the CEMA kernel transforms keyed like them). */
void ocl_forget_weights(ocl_ctx *c);

/* A kernel argument: its size and a pointer to its value (NULL for local memory). */
typedef struct {
    size_t size;
    const void *value;
} karg;
#define A_MEM(m) {sizeof(cl_mem), &(m)}
#define A_INT(i) {sizeof(int), &(i)}
#define A_F(f) {sizeof(float), &(f)}
#define A_LOCAL(bytes) {(bytes), NULL}
/* Run kernel kid over `global` (rounded up to `local` when given). */
int ocl_launch(ocl_ctx *c, int kid, int dims, const size_t *global, const size_t *local,
               const karg *args, int nargs);
/* Elementwise launch over n items with a 1-D range of work-groups of 64. */
int ocl_launch1(ocl_ctx *c, int kid, size_t n, const karg *args, int nargs);

/* ---------------------------------------------------------------- state.c */

/* A registered region of the streaming state (backend.h: state_register) and its device
 * copy. */
typedef struct sregion {
    struct sregion *next;
    void *host;
    size_t bytes;
    cl_mem mem;    /* NULL until an op uses the region */
    cl_mem backup; /* state_snapshot's copy, NULL until the first */
    size_t valid;  /* bytes from the start held by the device (equal to the host's or newer) */
    int dev_newer; /* the device copy is newer than the host's */
    int backup_ok; /* backup holds the region as of the last snapshot */
} sregion;

sregion *ocl_state_find(ocl_ctx *c, const void *host);
int ocl_state_in(ocl_ctx *c, int slot, const void *host, size_t bytes, cl_mem *out,
                 sregion **rr);
int ocl_state_out(ocl_ctx *c, sregion *r, cl_mem src, void *host, size_t bytes);
void ocl_state_forget_all(ocl_ctx *c);
int ocl_state_register(mg_backend *be, void *host, size_t bytes);
void ocl_state_release(mg_backend *be, const void *host);
int ocl_state_sync(mg_backend *be, void *host);
void ocl_state_changed(mg_backend *be, const void *host, size_t off, size_t bytes);
int ocl_state_snapshot(mg_backend *be, const void *host, int restore);

/* ---------------------------------------------------------------- ops.c, matmul.c, cema.c:
 * the ops of the table (lib/backend.h says what each computes) */

/* The elementwise ops, RoPE, the norms and attention (ops.c) into the table. */
void ocl_ops_fill(mg_backend *be);

int ocl_matmul(mg_backend *be, const float *x, int M, int K, const mg_weight *W, int N,
               const float *bias, float *y);
/* The matrix product kernels by measurement (remembered beside the program binary). */
int ocl_choose_gemm(ocl_ctx *c);

/* MEGALODON_CEMA and MEGALODON_CEMA_CACHE_MB, read once at creation; ocl_cema_forget drops
 * the cached kernel transforms, ocl_cema_free everything. */
int ocl_cema_init(ocl_ctx *c);
void ocl_cema_forget(ocl_ctx *c);
void ocl_cema_free(ocl_ctx *c);
int ocl_cema(mg_backend *be, mg_cema_algo algo, const float *x, int L, const mg_cema_coeffs *cf,
             float *h, float *y);
const char *ocl_cema_choice(mg_backend *be, mg_cema_algo algo, int L, const mg_cema_coeffs *cf);

#endif

/* backend-opencl.c - the OpenCL backend (docs/opencl.md).
 *
 * It fills the inference ops of the op table (lib/backend.h) with kernels of its own
 * (the .cl files of opencl/, embedded at build time as one string, opencl/kernels.cl.h), built once per
 * device and driver and cached on disk. The op table passes host pointers, so:
 *   - weights (matrix weights, biases, norm weights, CEMA coefficients, RoPE frequencies,
 *     the q/k affine) are uploaded the first time an op sees them and kept on the device,
 *     keyed by host address and size: a model's weights never change while it is loaded
 *     (and each model has its own backend, freed with it);
 *   - activations are copied to the device for the op and the results copied back
 *     (docs/opencl.md says what keeping them resident would take);
 *   - the streaming state (CEMA h, timestep-norm mean/var, the chunk's keys and values)
 *     stays on the device when lib/state.c has registered its buffers (the section
 *     "resident streaming state" below); the host copy is made current by state_sync.
 * Every op runs under one lock on one in-order queue; the last read is blocking. */
#include "config.h"

#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>
#ifdef MG_HAVE_CLBLAST
#include <clblast_c.h>
#endif

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backend-opencl.h"
#include "cema-plan.h"
#include "error.h"
#include "gguf.h"
#include "model.h"
#include "opencl/kernels.cl.h"

#define MAX_DEVICES 64
#define WG 64 /* work-group size of the reduction kernels (clamped to the device) */

/* ---------------------------------------------------------------- errors */

static const char *cl_err_name(cl_int e)
{
    switch (e) {
#define E(x) case x: return #x;
    E(CL_DEVICE_NOT_FOUND) E(CL_DEVICE_NOT_AVAILABLE) E(CL_COMPILER_NOT_AVAILABLE)
    E(CL_MEM_OBJECT_ALLOCATION_FAILURE) E(CL_OUT_OF_RESOURCES) E(CL_OUT_OF_HOST_MEMORY)
    E(CL_BUILD_PROGRAM_FAILURE) E(CL_INVALID_VALUE) E(CL_INVALID_DEVICE)
    E(CL_INVALID_BINARY) E(CL_INVALID_BUILD_OPTIONS) E(CL_INVALID_PROGRAM)
    E(CL_INVALID_KERNEL_NAME) E(CL_INVALID_KERNEL_ARGS) E(CL_INVALID_ARG_INDEX)
    E(CL_INVALID_ARG_VALUE) E(CL_INVALID_ARG_SIZE) E(CL_INVALID_WORK_GROUP_SIZE)
    E(CL_INVALID_WORK_ITEM_SIZE) E(CL_INVALID_GLOBAL_WORK_SIZE) E(CL_INVALID_BUFFER_SIZE)
    E(CL_INVALID_MEM_OBJECT) E(CL_INVALID_COMMAND_QUEUE) E(CL_INVALID_CONTEXT)
    E(CL_INVALID_PLATFORM) E(CL_INVALID_OPERATION) E(CL_INVALID_KERNEL)
    E(CL_MISALIGNED_SUB_BUFFER_OFFSET) E(CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST)
#undef E
    case -1001: return "CL_PLATFORM_NOT_FOUND_KHR";
    default: return "unknown OpenCL error";
    }
}

static int is_oom(cl_int e)
{
    return e == CL_MEM_OBJECT_ALLOCATION_FAILURE || e == CL_OUT_OF_RESOURCES ||
           e == CL_OUT_OF_HOST_MEMORY || e == CL_INVALID_BUFFER_SIZE;
}

/* An OpenCL failure as an mg_status: out-of-memory codes become MG_ERR_NOMEM. */
static int cl_fail(cl_int e, const char *what)
{
    if (is_oom(e))
        return mg_seterr(MG_ERR_NOMEM, "OpenCL: out of device memory in %s (%s, %d)", what,
                         cl_err_name(e), (int)e);
    return mg_seterr(MG_ERR_BACKEND, "OpenCL: %s failed: %s (%d)", what, cl_err_name(e), (int)e);
}

#define CL_TRY(call, what)                                                                 \
    do {                                                                                   \
        cl_int e_ = (call);                                                                \
        if (e_ != CL_SUCCESS) return cl_fail(e_, what);                                    \
    } while (0)

/* ---------------------------------------------------------------- devices */

typedef struct {
    cl_platform_id plat;
    cl_device_id dev;
} dev_ref;

/* All devices of all platforms, in order. 0 devices: *n = 0 and MG_OK (no platform is not an
 * error here; the callers say what it means). */
static int enum_devices(dev_ref *out, int *n)
{
    *n = 0;
    cl_uint np = 0;
    cl_int e = clGetPlatformIDs(0, NULL, &np);
    if (e == -1001 /* CL_PLATFORM_NOT_FOUND_KHR */ || (e == CL_SUCCESS && np == 0)) return MG_OK;
    if (e != CL_SUCCESS) return cl_fail(e, "clGetPlatformIDs");
    cl_platform_id plats[16];
    if (np > 16) np = 16;
    CL_TRY(clGetPlatformIDs(np, plats, NULL), "clGetPlatformIDs");
    for (cl_uint p = 0; p < np; p++) {
        cl_uint nd = 0;
        cl_device_id devs[MAX_DEVICES];
        e = clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, MAX_DEVICES, devs, &nd);
        if (e == CL_DEVICE_NOT_FOUND) continue;
        if (e != CL_SUCCESS) return cl_fail(e, "clGetDeviceIDs");
        if (nd > MAX_DEVICES) nd = MAX_DEVICES;
        for (cl_uint d = 0; d < nd && *n < MAX_DEVICES; d++) {
            out[*n].plat = plats[p];
            out[*n].dev = devs[d];
            (*n)++;
        }
    }
    return MG_OK;
}

static void dev_str(cl_device_id d, cl_device_info what, char *buf, size_t size)
{
    buf[0] = '\0';
    if (clGetDeviceInfo(d, what, size, buf, NULL) != CL_SUCCESS) snprintf(buf, size, "?");
    buf[size - 1] = '\0';
}

static int dev_has_ext(cl_device_id d, const char *ext)
{
    size_t len = 0;
    if (clGetDeviceInfo(d, CL_DEVICE_EXTENSIONS, 0, NULL, &len) != CL_SUCCESS || !len) return 0;
    char *s = malloc(len + 1);
    if (!s) return 0;
    int has = 0;
    if (clGetDeviceInfo(d, CL_DEVICE_EXTENSIONS, len, s, NULL) == CL_SUCCESS) {
        s[len] = '\0';
        size_t el = strlen(ext);
        for (char *p = strstr(s, ext); p && !has; p = strstr(p + 1, ext))
            has = (p == s || p[-1] == ' ') && (p[el] == ' ' || p[el] == '\0');
    }
    free(s);
    return has;
}

static const char *dev_type(cl_device_id d)
{
    cl_device_type t = 0;
    clGetDeviceInfo(d, CL_DEVICE_TYPE, sizeof t, &t, NULL);
    return t & CL_DEVICE_TYPE_GPU ? "GPU" : t & CL_DEVICE_TYPE_CPU ? "CPU"
         : t & CL_DEVICE_TYPE_ACCELERATOR ? "accelerator" : "other";
}

static void describe(const dev_ref *r, char *buf, size_t size)
{
    char pname[128], dname[128], drv[64];
    cl_ulong mem = 0;
    cl_uint cus = 0;
    clGetPlatformInfo(r->plat, CL_PLATFORM_NAME, sizeof pname, pname, NULL);
    pname[sizeof pname - 1] = '\0';
    dev_str(r->dev, CL_DEVICE_NAME, dname, sizeof dname);
    dev_str(r->dev, CL_DRIVER_VERSION, drv, sizeof drv);
    clGetDeviceInfo(r->dev, CL_DEVICE_GLOBAL_MEM_SIZE, sizeof mem, &mem, NULL);
    clGetDeviceInfo(r->dev, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof cus, &cus, NULL);
    snprintf(buf, size, "%s / %s (%s, %u compute units, %.1f GiB, fp16 %s, fp64 %s, driver %s)",
             pname, dname, dev_type(r->dev), cus, mem / 1073741824.0,
             dev_has_ext(r->dev, "cl_khr_fp16") ? "yes" : "no",
             dev_has_ext(r->dev, "cl_khr_fp64") ? "yes" : "no", drv);
}

#define NO_PLATFORM                                                                        \
    "no OpenCL platform or device found (install an OpenCL driver: for CPUs the Debian "   \
    "package pocl-opencl-icd; clinfo lists what the ICD loader sees)"

int mg_opencl_list_devices(char *buf, size_t size)
{
    dev_ref devs[MAX_DEVICES];
    int n;
    int rc = enum_devices(devs, &n);
    if (rc) return rc;
    size_t used = 0;
    if (buf && size) buf[0] = '\0';
    if (n == 0 && buf && size) snprintf(buf, size, "%s\n", NO_PLATFORM);
    for (int i = 0; i < n && buf && used + 1 < size; i++) {
        char line[512];
        describe(&devs[i], line, sizeof line);
        int w = snprintf(buf + used, size - used, "%d: %s\n", i, line);
        if (w < 0) break;
        used += (size_t)w;
    }
    return n;
}

/* ---------------------------------------------------------------- the backend's state */

enum {
    K_PROBE, K_SILU, K_MUL, K_ADD, K_SCALE, K_AFFINE, K_ROPE, K_RMS, K_LN, K_TN_MOM,
    K_TN_SCAN, K_TN_APPLY, K_MATMUL, K_MATMUL_DIRECT, K_GEMV, K_GEMV_DIRECT, K_CEMA_END, K_CEMA_CARRY,
    K_CEMA_OUT, K_ATTN, K_ATTN_BLOCK, K_TN_STORE,
    K_FFT_R4, K_FFT_R2, K_FFT_LOAD, K_FFT_MUL, K_FFT_STORE, K_FFT_KERNEL, K_FFT_SPLIT, K_FFT_CARRY,
    K_FFT_TAIL_FOLD, K_COUNT
};
static const char *const kernel_names[K_COUNT] = {
    "mg_probe", "mg_silu", "mg_mul", "mg_add", "mg_scale", "mg_affine_rows", "mg_rope",
    "mg_rms_norm", "mg_layer_norm", "mg_tnorm_moments", "mg_tnorm_scan", "mg_tnorm_apply",
    "mg_matmul", "mg_matmul_direct", "mg_gemv", "mg_gemv_direct", "mg_cema_block_end", "mg_cema_carry", "mg_cema_block_out",
    "mg_attention", "mg_attention_block", "mg_tnorm_store",
    "mg_fft_radix4", "mg_fft_radix2", "mg_fft_load", "mg_fft_mul", "mg_fft_store",
    "mg_cema_fft_kernel", "mg_fft_split", "mg_cema_fft_carry",
    "mg_cema_tail_fold"};

/* scratch slots: each op uses them for its inputs, outputs and temporaries */
enum { S_A, S_B, S_C, S_D, S_E, S_F, S_COUNT };

typedef struct {
    const void *host; /* NULL: empty */
    size_t bytes;
    int half;
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

static ocl_ctx *octx(mg_backend *be) { return (ocl_ctx *)be->ctx; }

/* The matrix product for M > 1: our tiled kernel (local memory), our direct kernel (no
 * local memory), or CLBlast's sgemm. MEGALODON_OPENCL_GEMM chooses; by default the fastest
 * on the device, measured once and remembered in the program cache directory. */
enum { GEMM_TILED = 0, GEMM_DIRECT = 1, GEMM_CLBLAST = 2, GEMM_N = 3 };
/* Attention of L > 1 queries: mg_attention (a work-group per query) or mg_attention_block
 * (a work-group per block of queries sharing key/value tiles); MEGALODON_OPENCL_ATTN. */
enum { ATTN_QUERY = 0, ATTN_BLOCK = 1 };
static const char *const gemm_names[GEMM_N] = {"tiled", "direct", "clblast"};

/* ---------------------------------------------------------------- buffers */

static int check_size(ocl_ctx *c, size_t bytes, const char *what)
{
    if (bytes > c->max_alloc)
        return mg_seterr(MG_ERR_NOMEM,
                         "OpenCL: out of device memory: %s needs a buffer of %zu bytes, more than "
                         "the device's largest allocation (%zu bytes)", what, bytes, c->max_alloc);
    return MG_OK;
}

/* n elements of `elem` bytes fit in one device buffer (and in size_t). */
static int fits(ocl_ctx *c, size_t n, size_t elem, const char *what)
{
    if (n > c->max_alloc / elem)
        return mg_seterr(MG_ERR_NOMEM,
                         "OpenCL: out of device memory: %s of %zu elements is larger than the "
                         "device's largest allocation (%zu bytes)", what, n, c->max_alloc);
    return MG_OK;
}

/* A scratch buffer of at least `bytes` (grown, never shrunk). */
static int scratch(ocl_ctx *c, int slot, size_t bytes, cl_mem *out)
{
    if (bytes == 0) bytes = 4;
    if (c->scratch_bytes[slot] < bytes) {
        int rc = check_size(c, bytes, "an activation");
        if (rc) return rc;
        if (c->scratch[slot]) clReleaseMemObject(c->scratch[slot]);
        c->scratch[slot] = NULL;
        c->scratch_bytes[slot] = 0;
        size_t sz = bytes + bytes / 4; /* some room, so that growing is rare */
        if (sz > c->max_alloc) sz = bytes;
        cl_int e;
        cl_mem m = clCreateBuffer(c->ctx, CL_MEM_READ_WRITE, sz, NULL, &e);
        if (!m) return cl_fail(e, "clCreateBuffer (activations)");
        c->scratch[slot] = m;
        c->scratch_bytes[slot] = sz;
    }
    *out = c->scratch[slot];
    return MG_OK;
}

static int upload(ocl_ctx *c, int slot, const void *host, size_t bytes, cl_mem *out)
{
    int rc = scratch(c, slot, bytes, out);
    if (rc) return rc;
    if (bytes) CL_TRY(clEnqueueWriteBuffer(c->queue, *out, CL_FALSE, 0, bytes, host, 0, NULL, NULL),
                      "clEnqueueWriteBuffer");
    return MG_OK;
}

static int download(ocl_ctx *c, cl_mem m, void *host, size_t bytes)
{
    if (bytes) CL_TRY(clEnqueueReadBuffer(c->queue, m, CL_TRUE, 0, bytes, host, 0, NULL, NULL),
                      "clEnqueueReadBuffer (kernel execution)");
    return MG_OK;
}

/* fp32 -> fp16, round to nearest even (denormals and overflow to inf included). */
static uint16_t f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000, ex = (x >> 23) & 0xff, man = x & 0x7fffff;
    if (ex == 0xff) return (uint16_t)(sign | 0x7c00 | (man ? 0x200 : 0));
    int e = (int)ex - 127 + 15;
    if (e >= 31) return (uint16_t)(sign | 0x7c00);
    if (e <= 0) {
        if (e < -10) return (uint16_t)sign;
        man |= 0x800000;
        int shift = 14 - e;
        uint32_t h = man >> shift, rem = man & ((1u << shift) - 1), halfway = 1u << (shift - 1);
        if (rem > halfway || (rem == halfway && (h & 1))) h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = ((uint32_t)e << 10) | (man >> 13), rem = man & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++; /* may carry into the exponent: ok */
    return (uint16_t)(sign | h);
}

static size_t w_hash(const void *p, int half)
{
    uint64_t h = (uint64_t)(uintptr_t)p * 0x9e3779b97f4a7c15ull;
    return (size_t)(h >> 17) ^ (size_t)half;
}

static int w_grow(ocl_ctx *c)
{
    size_t cap = c->w_cap ? 2 * c->w_cap : 256;
    wentry *nw = calloc(cap, sizeof *nw);
    if (!nw) return mg_seterr(MG_ERR_NOMEM, "OpenCL: out of memory for the weight table");
    for (size_t i = 0; i < c->w_cap; i++) {
        if (!c->w[i].host) continue;
        size_t j = w_hash(c->w[i].host, c->w[i].half) & (cap - 1);
        while (nw[j].host) j = (j + 1) & (cap - 1);
        nw[j] = c->w[i];
    }
    free(c->w);
    c->w = nw;
    c->w_cap = cap;
    return MG_OK;
}

/* The device copy of the weight known by `key`, if it has one of at least `bytes`. */
static cl_mem w_lookup(ocl_ctx *c, const void *key, int half, size_t bytes)
{
    if (!c->w_cap) return NULL;
    size_t j = w_hash(key, half) & (c->w_cap - 1);
    while (c->w[j].host && !((const void *)c->w[j].host == key && c->w[j].half == half))
        j = (j + 1) & (c->w_cap - 1);
    return c->w[j].host && c->w[j].bytes >= bytes ? c->w[j].mem : NULL;
}

static int weight_as(ocl_ctx *c, const void *key, const float *host, size_t n, int half,
                     cl_mem *out);

/* The device copy of a weight (n floats at host), uploaded on first use; as fp16 when half. */
static int weight(ocl_ctx *c, const float *host, size_t n, int half, cl_mem *out)
{
    return weight_as(c, host, host, n, half, out);
}

/* The device copy of a weight matrix in its file type: f32 as weight(); the other types
 * expanded to fp32 on the host once, on first use, and kept like the f32 ones (keyed by the
 * address of their data). */
static int weight_typed(ocl_ctx *c, const mg_weight *W, size_t n, int half, cl_mem *out)
{
    if (W->type == GGML_TYPE_F32) return weight(c, W->data, n, half, out);
    size_t bytes = n * (half ? 2 : 4);
    if ((*out = w_lookup(c, W->data, half, bytes ? bytes : 4))) {
        c->w_hits++;
        return MG_OK;
    }
    float *tmp = malloc(sizeof(float) * (n ? n : 1));
    if (!tmp)
        return mg_seterr(MG_ERR_NOMEM, "OpenCL: out of memory expanding a %s weight (%zu "
                         "floats)", gguf_type_name(W->type), n);
    for (int r = 0; r < W->rows && (size_t)r * W->cols < n; r++)
        mg_weight_row(W, r, tmp + (size_t)r * W->cols);
    int rc = weight_as(c, W->data, tmp, n, half, out);
    free(tmp);
    return rc;
}

static int weight_as(ocl_ctx *c, const void *key, const float *host, size_t n, int half,
                     cl_mem *out)
{
    if (!host) {
        *out = c->dummy;
        return MG_OK;
    }
    size_t bytes = n * (half ? 2 : 4);
    if (bytes == 0) bytes = 4;
    if (2 * (c->w_n + 1) > c->w_cap) {
        int rc = w_grow(c);
        if (rc) return rc;
    }
    size_t j = w_hash(key, half) & (c->w_cap - 1);
    while (c->w[j].host && !((const void *)c->w[j].host == key && c->w[j].half == half))
        j = (j + 1) & (c->w_cap - 1);
    wentry *e = &c->w[j];
    if (e->host && e->bytes >= bytes) {
        c->w_hits++;
        *out = e->mem;
        return MG_OK;
    }
    if (e->host) { /* the same address seen with a smaller size: replace */
        clReleaseMemObject(e->mem);
        c->w_bytes -= e->bytes;
        c->w_n--;
        e->host = NULL;
    }
    int rc = check_size(c, bytes, "a weight");
    if (rc) return rc;
    cl_int err;
    cl_mem m = clCreateBuffer(c->ctx, CL_MEM_READ_ONLY, bytes, NULL, &err);
    if (!m) return cl_fail(err, "clCreateBuffer (weights)");
    if (half) {
        uint16_t *tmp = malloc(n * 2 + 2);
        if (!tmp) {
            clReleaseMemObject(m);
            return mg_seterr(MG_ERR_NOMEM, "OpenCL: out of memory converting a weight to fp16");
        }
        for (size_t i = 0; i < n; i++) tmp[i] = f32_to_f16(host[i]);
        err = n ? clEnqueueWriteBuffer(c->queue, m, CL_TRUE, 0, n * 2, tmp, 0, NULL, NULL)
                : CL_SUCCESS;
        free(tmp);
    } else if (n) {
        err = clEnqueueWriteBuffer(c->queue, m, CL_TRUE, 0, n * 4, host, 0, NULL, NULL);
    }
    if (err != CL_SUCCESS) {
        clReleaseMemObject(m);
        return cl_fail(err, "uploading a weight");
    }
    e->host = key;
    e->bytes = bytes;
    e->half = half;
    e->mem = m;
    c->w_n++;
    c->w_bytes += bytes;
    c->w_uploads++;
    *out = m;
    return MG_OK;
}

static void fft_forget(ocl_ctx *c); /* the CEMA kernel transforms, keyed like the weights */

static void forget_weights(ocl_ctx *c)
{
    for (size_t i = 0; i < c->w_cap; i++)
        if (c->w[i].host) clReleaseMemObject(c->w[i].mem);
    free(c->w);
    c->w = NULL;
    c->w_cap = c->w_n = 0;
    c->w_bytes = 0;
    fft_forget(c);
}

/* ---------------------------------------------------------------- running kernels */

typedef struct {
    size_t size;
    const void *value;
} karg;
#define A_MEM(m) {sizeof(cl_mem), &(m)}
#define A_INT(i) {sizeof(int), &(i)}
#define A_F(f) {sizeof(float), &(f)}
#define A_LOCAL(bytes) {(bytes), NULL}

static size_t round_up(size_t n, size_t m) { return (n + m - 1) / m * m; }

static int launch(ocl_ctx *c, int kid, int dims, const size_t *global, const size_t *local,
                  const karg *args, int nargs)
{
    cl_kernel k = c->k[kid];
    for (int i = 0; i < nargs; i++)
        CL_TRY(clSetKernelArg(k, (cl_uint)i, args[i].size, args[i].value), kernel_names[kid]);
    size_t g[2];
    for (int d = 0; d < dims; d++) g[d] = local ? round_up(global[d], local[d]) : global[d];
    for (int d = 0; d < dims; d++)
        if (g[d] == 0) return MG_OK;
    cl_int e = clEnqueueNDRangeKernel(c->queue, k, (cl_uint)dims, NULL, g, local, 0, NULL, NULL);
    if (e != CL_SUCCESS) {
        char what[96];
        snprintf(what, sizeof what, "running kernel %s", kernel_names[kid]);
        return cl_fail(e, what);
    }
    return MG_OK;
}

/* Elementwise launch over n items with a 1-D range of work-groups of 64. */
static int launch1(ocl_ctx *c, int kid, size_t n, const karg *args, int nargs)
{
    size_t l = 64 < c->wg ? 64 : c->wg;
    return launch(c, kid, 1, &n, &l, args, nargs);
}

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
#undef TRY /* error.h has the returning TRY; here a failure jumps to out */
#define TRY(x)                                                                             \
    do {                                                                                   \
        if ((rc = (x)) != MG_OK) goto out;                                                 \
    } while (0)

/* ---------------------------------------------------------------- resident streaming state
 * The buffers of an mg_state that lib/state.c registers (backend.h, state_register): a
 * table by host address of their device copies, under the backend's lock like everything
 * else. A region's device copy holds its first `valid` bytes; for a CEMA h and a norm's
 * mean/var, the ops update the device copy only and set dev_newer (the host copy is stale
 * until state_sync); a chunk's keys/values are written by the host (attention.c, then
 * state_changed lowers `valid` to the first row written) and uploaded by ocl_attention
 * from `valid` on, so a decode step sends its new row only. Pointers that are not
 * registered (the tests' ad-hoc buffers, the trainer's) go the old way: uploaded and read
 * back by every op. docs/opencl.md, "How it fits the op table". */

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

#define ST_BUCKETS (sizeof ((ocl_ctx *)0)->st_tab / sizeof ((ocl_ctx *)0)->st_tab[0])

static size_t st_hash(const void *p)
{
    return (size_t)(((uint64_t)(uintptr_t)p * 0x9e3779b97f4a7c15ull) >> 40) % ST_BUCKETS;
}

static sregion *st_find(ocl_ctx *c, const void *host)
{
    for (sregion *r = c->st_tab[st_hash(host)]; r; r = r->next)
        if (r->host == host) return r;
    return NULL;
}

static void st_free_region(sregion *r)
{
    if (r->mem) clReleaseMemObject(r->mem);
    if (r->backup) clReleaseMemObject(r->backup);
    free(r);
}

static void st_forget_all(ocl_ctx *c)
{
    for (size_t i = 0; i < ST_BUCKETS; i++)
        while (c->st_tab[i]) {
            sregion *r = c->st_tab[i];
            c->st_tab[i] = r->next;
            st_free_region(r);
        }
    c->st_regions = 0;
}

/* The region's device buffer, created on first use. */
static int st_mem(ocl_ctx *c, sregion *r)
{
    if (r->mem) return MG_OK;
    int rc = check_size(c, r->bytes, "the streaming state (kept on the device)");
    if (rc) return rc;
    cl_int e;
    r->mem = clCreateBuffer(c->ctx, CL_MEM_READ_WRITE, r->bytes, NULL, &e);
    if (!r->mem) return cl_fail(e, "clCreateBuffer (the streaming state kept on the device)");
    r->valid = 0;
    r->dev_newer = 0;
    return MG_OK;
}

/* The device buffer of an op's state input (`bytes` from host): the region's, with what
 * the device lacks uploaded, when host is a registered region (*rr set), else a scratch
 * slot with all of it uploaded (*rr NULL), as for any activation. */
static int state_in(ocl_ctx *c, int slot, const void *host, size_t bytes, cl_mem *out,
                    sregion **rr)
{
    sregion *r = bytes ? st_find(c, host) : NULL;
    *rr = NULL;
    if (!r || bytes > r->bytes) return upload(c, slot, host, bytes, out);
    int rc = st_mem(c, r);
    if (rc) return rc;
    if (r->valid < bytes) { /* only the host has these bytes (dev_newer is 0 here) */
        CL_TRY(clEnqueueWriteBuffer(c->queue, r->mem, CL_FALSE, r->valid, bytes - r->valid,
                                    (const char *)host + r->valid, 0, NULL, NULL),
               "clEnqueueWriteBuffer (the streaming state)");
        c->st_up_bytes += bytes - r->valid;
        r->valid = bytes;
    }
    *out = r->mem;
    *rr = r;
    return MG_OK;
}

/* An op's new state (`bytes` of src): into the region's device copy when r (the host copy
 * is then stale), else read back into host (non-blocking: the op's last read waits). */
static int state_out(ocl_ctx *c, sregion *r, cl_mem src, void *host, size_t bytes)
{
    if (r) {
        if (src != r->mem)
            CL_TRY(clEnqueueCopyBuffer(c->queue, src, r->mem, 0, 0, bytes, 0, NULL, NULL),
                   "clEnqueueCopyBuffer (the streaming state)");
        r->valid = r->bytes;
        r->dev_newer = 1;
        return MG_OK;
    }
    CL_TRY(clEnqueueReadBuffer(c->queue, src, CL_FALSE, 0, bytes, host, 0, NULL, NULL),
           "reading the streaming state");
    return MG_OK;
}

static int ocl_state_register(mg_backend *be, void *host, size_t bytes)
{
    ocl_ctx *c = octx(be);
    if (!host || !bytes) return MG_OK;
    sregion *n = calloc(1, sizeof *n);
    if (!n) return mg_seterr(MG_ERR_NOMEM, "OpenCL: out of memory for the state table");
    n->host = host;
    n->bytes = bytes;
    LOCK(c);
    sregion *old = st_find(c, host);
    if (old) { /* not released (a bug of the caller): the new one replaces it */
        sregion **pp = &c->st_tab[st_hash(host)];
        while (*pp != old) pp = &(*pp)->next;
        *pp = old->next;
        clFinish(c->queue);
        st_free_region(old);
        c->st_regions--;
    }
    size_t h = st_hash(host);
    n->next = c->st_tab[h];
    c->st_tab[h] = n;
    c->st_regions++;
    pthread_mutex_unlock(&c->lock);
    return MG_OK;
}

static void ocl_state_release(mg_backend *be, const void *host)
{
    ocl_ctx *c = octx(be);
    LOCK(c);
    for (sregion **pp = &c->st_tab[st_hash(host)]; *pp; pp = &(*pp)->next)
        if ((*pp)->host == host) {
            sregion *r = *pp;
            *pp = r->next;
            st_free_region(r);
            c->st_regions--;
            break;
        }
    pthread_mutex_unlock(&c->lock);
}

/* Bytes [off, off + n) of the region's device copy into the host copy (blocking). */
static int st_read(ocl_ctx *c, sregion *r, size_t off, size_t n)
{
    if (!n) return MG_OK;
    CL_TRY(clEnqueueReadBuffer(c->queue, r->mem, CL_TRUE, off, n, (char *)r->host + off, 0,
                               NULL, NULL),
           "reading the streaming state back from the device");
    c->st_down_bytes += n;
    return MG_OK;
}

static int ocl_state_sync(mg_backend *be, void *host)
{
    ocl_ctx *c = octx(be);
    int rc = MG_OK;
    LOCK(c);
    sregion *r = st_find(c, host);
    if (r && r->dev_newer) {
        TRY(st_read(c, r, 0, r->bytes));
        r->dev_newer = 0;
    }
out:
    UNLOCK_RET(c, rc);
}

static void ocl_state_changed(mg_backend *be, const void *host, size_t off, size_t bytes)
{
    ocl_ctx *c = octx(be);
    LOCK(c);
    sregion *r = st_find(c, host);
    if (r && r->dev_newer) {
        /* a write of part of a region whose device copy is newer: the rest of the host copy
         * is stale; bring it back first (lib/ writes whole regions: this does not happen) */
        size_t end = off + bytes < r->bytes ? off + bytes : r->bytes;
        if ((off && st_read(c, r, 0, off)) || (end < r->bytes && st_read(c, r, end, r->bytes - end))) {
            r->valid = 0; /* the device copy is unusable: the host's wins */
            fprintf(stderr, "megalodon: %s\n", mg_last_error());
        }
        r->dev_newer = 0;
    }
    if (r && off < r->valid) r->valid = off;
    pthread_mutex_unlock(&c->lock);
}

static int ocl_state_snapshot(mg_backend *be, const void *host, int restore)
{
    ocl_ctx *c = octx(be);
    int rc = 0;
    LOCK(c);
    sregion *r = st_find(c, host);
    if (!restore) {
        if (!r || !r->mem || r->valid < r->bytes) {
            if (r) r->backup_ok = 0;
            goto out; /* the host copy is current: the caller copies it */
        }
        if (!r->backup) {
            cl_int e;
            r->backup = clCreateBuffer(c->ctx, CL_MEM_READ_WRITE, r->bytes, NULL, &e);
            if (!r->backup) TRY(cl_fail(e, "clCreateBuffer (a backup of the streaming state)"));
        }
        cl_int e = clEnqueueCopyBuffer(c->queue, r->mem, r->backup, 0, 0, r->bytes, 0, NULL,
                                       NULL);
        if (e != CL_SUCCESS) TRY(cl_fail(e, "backing up the streaming state on the device"));
        c->st_dev_bytes += r->bytes;
        r->backup_ok = 1;
        rc = 1;
    } else if (r && r->backup_ok) {
        cl_int e = clEnqueueCopyBuffer(c->queue, r->backup, r->mem, 0, 0, r->bytes, 0, NULL,
                                       NULL);
        if (e == CL_SUCCESS) e = clFinish(c->queue);
        if (e != CL_SUCCESS) TRY(cl_fail(e, "restoring the streaming state on the device"));
        c->st_dev_bytes += r->bytes;
        r->valid = r->bytes;
        r->dev_newer = 1;
        r->backup_ok = 0;
        rc = 1;
    }
out:
    if (rc < 0) clFinish(c->queue);
    pthread_mutex_unlock(&c->lock);
    return rc;
}

/* ---------------------------------------------------------------- elementwise ops */

static int ew2(mg_backend *be, int kid, const float *a, const float *b, float *y, size_t n)
{
    ocl_ctx *c = octx(be);
    if (n == 0) return MG_OK;
    int rc;
    cl_mem ba, bb, by;
    cl_ulong nn = n;
    if ((rc = fits(c, n, 4, "an elementwise op"))) return rc;
    LOCK(c);
    TRY(upload(c, S_A, a, n * 4, &ba));
    TRY(upload(c, S_B, b, n * 4, &bb));
    TRY(scratch(c, S_C, n * 4, &by));
    {
        karg args[] = {A_MEM(ba), A_MEM(bb), A_MEM(by), {sizeof nn, &nn}};
        TRY(launch1(c, kid, n, args, 4));
    }
    TRY(download(c, by, y, n * 4));
out:
    UNLOCK_RET(c, rc);
}

static int ocl_mul(mg_backend *be, const float *a, const float *b, float *y, size_t n)
{
    return ew2(be, K_MUL, a, b, y, n);
}

static int ocl_add(mg_backend *be, const float *a, const float *b, float *y, size_t n)
{
    return ew2(be, K_ADD, a, b, y, n);
}

/* y = f(x) elementwise; with a scalar argument (scale) when `a` is not NULL */
static int ew1(mg_backend *be, int kid, const float *x, const float *a, float *y, size_t n)
{
    ocl_ctx *c = octx(be);
    if (n == 0) return MG_OK;
    int rc;
    cl_mem bx, by;
    cl_ulong nn = n;
    float av = a ? *a : 0.0f;
    if ((rc = fits(c, n, 4, "an elementwise op"))) return rc;
    LOCK(c);
    TRY(upload(c, S_A, x, n * 4, &bx));
    TRY(scratch(c, S_C, n * 4, &by));
    if (a) {
        karg args[] = {A_MEM(bx), A_F(av), A_MEM(by), {sizeof nn, &nn}};
        TRY(launch1(c, kid, n, args, 4));
    } else {
        karg args[] = {A_MEM(bx), A_MEM(by), {sizeof nn, &nn}};
        TRY(launch1(c, kid, n, args, 3));
    }
    TRY(download(c, by, y, n * 4));
out:
    UNLOCK_RET(c, rc);
}

static int ocl_silu(mg_backend *be, const float *x, float *y, size_t n)
{
    return ew1(be, K_SILU, x, NULL, y, n);
}

static int ocl_scale(mg_backend *be, const float *x, float a, float *y, size_t n)
{
    return ew1(be, K_SCALE, x, &a, y, n);
}

static int ocl_affine_rows(mg_backend *be, const float *x, size_t rows, int m, const float *s,
                           const float *t, float *y)
{
    ocl_ctx *c = octx(be);
    size_t n = rows * (size_t)m;
    if (n == 0) return MG_OK;
    int rc, has_t = t != NULL;
    cl_mem bx, bs, bt, by;
    cl_ulong nn = n;
    if ((rc = fits(c, n, 4, "affine_rows"))) return rc;
    LOCK(c);
    TRY(upload(c, S_A, x, n * 4, &bx));
    TRY(weight(c, s, (size_t)m, 0, &bs));
    TRY(weight(c, t, (size_t)m, 0, &bt));
    TRY(scratch(c, S_C, n * 4, &by));
    {
        karg args[] = {A_MEM(bx), {sizeof nn, &nn}, A_INT(m), A_MEM(bs), A_MEM(bt), A_INT(has_t),
                       A_MEM(by)};
        TRY(launch1(c, K_AFFINE, n, args, 7));
    }
    TRY(download(c, by, y, n * 4));
out:
    UNLOCK_RET(c, rc);
}

static int ocl_rope(mg_backend *be, float *x, int L, int H, int dh, int pos0, const float *freqs)
{
    ocl_ctx *c = octx(be);
    size_t n = (size_t)L * H * dh;
    if (n == 0 || dh < 2) return MG_OK;
    int rc;
    cl_mem bx, bf;
    LOCK(c);
    TRY(upload(c, S_A, x, n * 4, &bx));
    TRY(weight(c, freqs, (size_t)dh / 2, 0, &bf));
    {
        karg args[] = {A_MEM(bx), A_INT(L), A_INT(H), A_INT(dh), A_INT(pos0), A_MEM(bf)};
        TRY(launch1(c, K_ROPE, (size_t)L * H * (dh / 2), args, 6));
    }
    TRY(download(c, bx, x, n * 4));
out:
    UNLOCK_RET(c, rc);
}

/* ---------------------------------------------------------------- norms */

static size_t acc_size(const ocl_ctx *c) { return c->fp64 ? sizeof(double) : sizeof(float); }

static int ocl_rms_norm(mg_backend *be, const float *x, size_t rows, int n, const float *w,
                        float eps, float *y)
{
    ocl_ctx *c = octx(be);
    if (rows == 0 || n <= 0) return MG_OK;
    int rc, has_w = w != NULL;
    cl_mem bx, bw, by;
    LOCK(c);
    TRY(upload(c, S_A, x, rows * n * 4, &bx));
    TRY(weight(c, w, (size_t)n, 0, &bw));
    TRY(scratch(c, S_C, rows * n * 4, &by));
    {
        karg args[] = {A_MEM(bx), A_INT(n), A_MEM(bw), A_INT(has_w), A_F(eps), A_MEM(by),
                       A_LOCAL(c->wg * acc_size(c))};
        size_t g = rows * c->wg;
        TRY(launch(c, K_RMS, 1, &g, &c->wg, args, 7));
    }
    TRY(download(c, by, y, rows * n * 4));
out:
    UNLOCK_RET(c, rc);
}

static int ocl_layer_norm(mg_backend *be, const float *x, size_t rows, int n, const float *w,
                          const float *b, float eps, float *y)
{
    ocl_ctx *c = octx(be);
    if (rows == 0 || n <= 0) return MG_OK;
    int rc, has_w = w != NULL, has_b = b != NULL;
    cl_mem bx, bw, bb, by;
    LOCK(c);
    TRY(upload(c, S_A, x, rows * n * 4, &bx));
    TRY(weight(c, w, (size_t)n, 0, &bw));
    TRY(weight(c, b, (size_t)n, 0, &bb));
    TRY(scratch(c, S_C, rows * n * 4, &by));
    {
        karg args[] = {A_MEM(bx), A_INT(n), A_MEM(bw), A_INT(has_w), A_MEM(bb), A_INT(has_b),
                       A_F(eps), A_MEM(by), A_LOCAL(c->wg * acc_size(c))};
        size_t g = rows * c->wg;
        TRY(launch(c, K_LN, 1, &g, &c->wg, args, 9));
    }
    TRY(download(c, by, y, rows * n * 4));
out:
    UNLOCK_RET(c, rc);
}

static int ocl_timestep_norm(mg_backend *be, const float *x, int L, int D, int G,
                             const float *w, const float *b, float eps, int64_t *count,
                             float *mean, float *var, float *y)
{
    ocl_ctx *c = octx(be);
    if (L <= 0) return MG_OK;
    int rc, has_w = w != NULL, has_b = b != NULL;
    const size_t LD = (size_t)L * D, LG = (size_t)L * G, as = acc_size(c);
    cl_mem bx, bm0, bv0, bgm, bgv, bw, bb, by;
    double cnt_d = (double)*count;
    float cnt_f = (float)*count;
    sregion *rm = NULL, *rv = NULL; /* the statistics kept on the device, or NULL */
    LOCK(c);
    TRY(upload(c, S_A, x, LD * 4, &bx));
    {
        /* resident only when both are (else both go the old way) */
        sregion *fm = st_find(c, mean), *fv = st_find(c, var);
        if (fm && fv && fm->bytes == (size_t)G * 4 && fv->bytes == (size_t)G * 4) {
            TRY(state_in(c, S_B, mean, (size_t)G * 4, &bm0, &rm));
            TRY(state_in(c, S_D, var, (size_t)G * 4, &bv0, &rv));
        } else {
            TRY(upload(c, S_B, mean, (size_t)G * 4, &bm0));
            TRY(upload(c, S_D, var, (size_t)G * 4, &bv0));
        }
    }
    TRY(scratch(c, S_E, LG * as, &bgm));
    TRY(scratch(c, S_F, LG * as, &bgv));
    TRY(weight(c, w, (size_t)D, 0, &bw));
    TRY(weight(c, b, (size_t)D, 0, &bb));
    TRY(scratch(c, S_C, LD * 4, &by));
    {
        karg a1[] = {A_MEM(bx), A_INT(D), A_INT(G), A_MEM(bgm), A_MEM(bgv),
                     A_LOCAL(c->wg * as)};
        size_t g1 = LG * c->wg;
        TRY(launch(c, K_TN_MOM, 1, &g1, &c->wg, a1, 6));
        /* the scan's group: large enough for long inputs, at most the device's limit */
        size_t ls = c->wg;
        karg a2[] = {A_INT(L), A_INT(G), {as, c->fp64 ? (const void *)&cnt_d : (const void *)&cnt_f},
                     A_MEM(bm0), A_MEM(bv0), A_MEM(bgm), A_MEM(bgv), A_LOCAL(ls * 3 * as)};
        size_t g2 = (size_t)G * ls;
        TRY(launch(c, K_TN_SCAN, 1, &g2, &ls, a2, 8));
        karg a3[] = {A_MEM(bx), A_INT(L), A_INT(D), A_INT(G), A_MEM(bgm), A_MEM(bgv), A_MEM(bw),
                     A_INT(has_w), A_MEM(bb), A_INT(has_b), A_F(eps), A_MEM(by)};
        TRY(launch1(c, K_TN_APPLY, LD, a3, 12));
    }
    if (rm && rv) { /* the new statistics stay on the device: only y comes back */
        int last = L - 1;
        karg a4[] = {A_INT(G), A_INT(last), A_MEM(bgm), A_MEM(bgv), A_MEM(rm->mem),
                     A_MEM(rv->mem)};
        TRY(launch1(c, K_TN_STORE, (size_t)G, a4, 6));
        rm->valid = rm->bytes;
        rm->dev_newer = 1;
        rv->valid = rv->bytes;
        rv->dev_newer = 1;
        TRY(download(c, by, y, LD * 4));
        *count += L;
    } else {
        /* the new statistics: those after the last step */
        double tmp[2 * 1024];
        void *mv = (size_t)G <= 1024 ? (void *)tmp : malloc(2 * (size_t)G * as);
        if (!mv) {
            rc = mg_seterr(MG_ERR_NOMEM, "OpenCL: out of memory (timestep norm, G=%d)", G);
            goto out;
        }
        char *m8 = mv, *v8 = (char *)mv + (size_t)G * as;
        cl_int e = clEnqueueReadBuffer(c->queue, bgm, CL_FALSE, (size_t)(L - 1) * G * as,
                                       (size_t)G * as, m8, 0, NULL, NULL);
        if (e == CL_SUCCESS)
            e = clEnqueueReadBuffer(c->queue, bgv, CL_FALSE, (size_t)(L - 1) * G * as,
                                    (size_t)G * as, v8, 0, NULL, NULL);
        if (e == CL_SUCCESS)
            e = clEnqueueReadBuffer(c->queue, by, CL_TRUE, 0, LD * 4, y, 0, NULL, NULL);
        if (e == CL_SUCCESS) {
            for (int g = 0; g < G; g++) {
                mean[g] = c->fp64 ? (float)((double *)m8)[g] : ((float *)m8)[g];
                var[g] = c->fp64 ? (float)((double *)v8)[g] : ((float *)v8)[g];
            }
            *count += L;
        }
        if (mv != tmp) free(mv);
        if (e != CL_SUCCESS) rc = cl_fail(e, "timestep norm (reading results)");
    }
out:
    UNLOCK_RET(c, rc);
}

/* ---------------------------------------------------------------- matmul */

/* y = x W^T (+ bias) on device buffers, with the given kernel. */
static int run_gemm(ocl_ctx *c, int gemm, int gemv_mode, cl_mem bx, int M, int K, cl_mem bw,
                    int N, cl_mem bb, int has_b, cl_mem by)
{
    int rc = MG_OK;
#ifdef MG_HAVE_CLBLAST
    if (!c->f16w && ((M > 1 && gemm == GEMM_CLBLAST) || (M == 1 && gemv_mode == GEMM_CLBLAST))) {
        if (has_b) { /* y = the bias in every row, then y += x W^T */
            for (int i = 0; i < M; i++)
                CL_TRY(clEnqueueCopyBuffer(c->queue, bb, by, 0, (size_t)i * N * 4, (size_t)N * 4,
                                           0, NULL, NULL), "clEnqueueCopyBuffer (bias)");
        } else { /* y = 0, then y += x W^T: CLBlast computes beta * y even for beta = 0, so
                  * a NaN left in the scratch buffer by an earlier op would come through */
            float zero = 0.0f;
            CL_TRY(clEnqueueFillBuffer(c->queue, by, &zero, sizeof zero, 0, (size_t)M * N * 4, 0,
                                       NULL, NULL), "clEnqueueFillBuffer (zero output)");
        }
        cl_command_queue qq = c->queue;
        CLBlastStatusCode st;
        if (M == 1)
            st = CLBlastSgemv(CLBlastLayoutRowMajor, CLBlastTransposeNo, (size_t)N, (size_t)K,
                              1.0f, bw, 0, (size_t)K, bx, 0, 1, 1.0f, by, 0, 1,
                              &qq, NULL);
        else
            st = CLBlastSgemm(CLBlastLayoutRowMajor, CLBlastTransposeNo, CLBlastTransposeYes,
                              (size_t)M, (size_t)N, (size_t)K, 1.0f, bx, 0, (size_t)K, bw, 0,
                              (size_t)K, 1.0f, by, 0, (size_t)N, &qq, NULL);
        if (st != CLBlastSuccess)
            return mg_seterr(st == CLBlastInsufficientMemoryTemp || st == -4 ? MG_ERR_NOMEM
                                                                             : MG_ERR_BACKEND,
                             "OpenCL: CLBlast %s failed (status %d)", M == 1 ? "sgemv" : "sgemm",
                             (int)st);
        return MG_OK;
    }
#else
    (void)gemv_mode;
#endif
    if (M == 1 && gemv_mode == GEMM_DIRECT) {
        karg args[] = {A_MEM(bx), A_INT(K), A_MEM(bw), A_INT(N), A_MEM(bb), A_INT(has_b),
                       A_MEM(by)};
        size_t g = (size_t)(N + 3) / 4;
        rc = launch(c, K_GEMV_DIRECT, 1, &g, NULL, args, 7);
    } else if (M == 1) {
        karg args[] = {A_MEM(bx), A_INT(K), A_MEM(bw), A_INT(N), A_MEM(bb), A_INT(has_b),
                       A_MEM(by), A_LOCAL(c->wg * sizeof(float))};
        size_t g = (size_t)N * c->wg;
        rc = launch(c, K_GEMV, 1, &g, &c->wg, args, 8);
    } else if (gemm == GEMM_TILED) {
        karg args[] = {A_MEM(bx), A_INT(M), A_INT(K), A_MEM(bw), A_INT(N), A_MEM(bb),
                       A_INT(has_b), A_MEM(by)};
        size_t g[2] = {(size_t)(N + 31) / 32 * 8, (size_t)(M + 31) / 32 * 8}, l[2] = {8, 8};
        rc = launch(c, K_MATMUL, 2, g, l, args, 8);
    } else {
        karg args[] = {A_MEM(bx), A_INT(M), A_INT(K), A_MEM(bw), A_INT(N), A_MEM(bb),
                       A_INT(has_b), A_MEM(by)};
        size_t g[2] = {(size_t)(N + 3) / 4, (size_t)(M + 3) / 4};
        rc = launch(c, K_MATMUL_DIRECT, 2, g, NULL, args, 8);
    }
    return rc;
}

static int ocl_matmul(mg_backend *be, const float *x, int M, int K, const mg_weight *W, int N,
                      const float *bias, float *y)
{
    ocl_ctx *c = octx(be);
    if (M <= 0 || N <= 0) return MG_OK;
    int rc, has_b = bias != NULL;
    cl_mem bx, bw, bb, by;
    LOCK(c);
    TRY(upload(c, S_A, x, (size_t)M * K * 4, &bx));
    TRY(weight_typed(c, W, (size_t)N * K, c->f16w, &bw));
    TRY(weight(c, bias, (size_t)N, 0, &bb));
    TRY(scratch(c, S_C, (size_t)M * N * 4, &by));
    TRY(run_gemm(c, c->gemm, c->gemv_mode, bx, M, K, bw, N, bb, has_b, by));
    TRY(download(c, by, y, (size_t)M * N * 4));
out:
    UNLOCK_RET(c, rc);
}

/* ---------------------------------------------------------------- CEMA */

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
static int fft_init(ocl_ctx *c)
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
    return c->fft ? MG_OK : mg_seterr(MG_ERR_NOMEM, "out of memory creating the OpenCL backend");
}

static void fft_forget(ocl_ctx *c)
{
    if (!c->fft) return;
    for (int i = 0; i < FFT_CACHE; i++)
        if (c->fft->e[i].q) clReleaseMemObject(c->fft->e[i].K);
    memset(c->fft->e, 0, sizeof c->fft->e);
    c->fft->bytes = 0;
}

static void fft_free(ocl_ctx *c)
{
    if (!c->fft) return;
    fft_forget(c);
    for (int i = 0; i < 3; i++)
        if (c->fft->ws[i]) clReleaseMemObject(c->fft->ws[i]);
    for (int i = 0; i <= FFT_MAX_LOG2; i++)
        if (c->fft->tw[i]) clReleaseMemObject(c->fft->tw[i]);
    free(c->fft);
    c->fft = NULL;
}

/* Work buffer i of at least `bytes` (grown, never shrunk), as scratch() does. */
static int fft_ws(ocl_ctx *c, int i, size_t bytes, cl_mem *out)
{
    struct ocl_fft *f = c->fft;
    if (f->ws_bytes[i] < bytes) {
        int rc = check_size(c, bytes, "a CEMA FFT work buffer");
        if (rc) return rc;
        if (f->ws[i]) clReleaseMemObject(f->ws[i]);
        f->ws[i] = NULL;
        f->ws_bytes[i] = 0;
        cl_int e;
        cl_mem m = clCreateBuffer(c->ctx, CL_MEM_READ_WRITE, bytes, NULL, &e);
        if (!m) return cl_fail(e, "clCreateBuffer (CEMA FFT)");
        f->ws[i] = m;
        f->ws_bytes[i] = bytes;
    }
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
        if (!f->tw[m]) return cl_fail(e, "clCreateBuffer (FFT twiddles)");
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
        if ((rc = launch1(c, K_FFT_R2, seqs * (n / 2), ar, 8))) return rc;
        Ns = 2;
        t = src, src = dst, dst = t;
    }
    for (; Ns < n; Ns *= 4) {
        karg ar[] = {A_MEM(src), A_MEM(dst), A_INT(n), A_INT(Ns), A_F(sign), A_INT(S),
                     A_INT(nblk), A_MEM(w)};
        if ((rc = launch1(c, K_FFT_R4, seqs * (n / 4), ar, 8))) return rc;
        t = src, src = dst, dst = t;
    }
    *res = src;
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
    if ((rc = fits(c, (size_t)npair * n, 8, "the CEMA kernel's transform"))) return rc;
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
    if (!K) return cl_fail(err, "clCreateBuffer (CEMA kernel transform)");
    cl_mem z0, z1, zr;
    const int kk = decay < n / 2 ? decay : n / 2, nb = (n + FFT_ROWS - 1) / FFT_ROWS;
    const float scale = 1.0f / (float)n;
    if ((rc = fft_ws(c, 0, (size_t)npair * n * 8, &z0)) ||
        (rc = fft_ws(c, 1, (size_t)npair * n * 8, &z1)))
        goto fail;
    {
        karg a1[] = {A_INT(D), A_INT(N), A_INT(kk), A_INT(n), A_MEM(bp), A_MEM(bq), A_MEM(beta),
                     A_MEM(z0)};
        if ((rc = launch1(c, K_FFT_KERNEL, (size_t)nb * npair, a1, 8))) goto fail;
        if ((rc = fft_passes(c, z0, z1, n, npair, 1, -1.0f, &zr))) goto fail;
        karg a2[] = {A_MEM(zr), A_INT(n), A_INT(npair), A_F(scale), A_MEM(K)};
        if ((rc = launch1(c, K_FFT_SPLIT, (size_t)npair * h, a2, 5))) goto fail;
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
    if ((rc = fits(c, (size_t)batch * n, 8, "the CEMA FFT's work buffer"))) return rc;
    cl_mem K, z0, z1, zr, bE;
    if ((rc = fft_kernel(c, cf, bp, bq, beta, decay, n, &K))) return rc;
    if ((rc = fft_ws(c, 0, (size_t)batch * n * 8, &z0)) ||
        (rc = fft_ws(c, 1, (size_t)batch * n * 8, &z1)))
        return rc;
    /* y = k * x + omega x */
    karg a1[] = {A_MEM(bx), A_INT(L), A_INT(D), A_INT(n), A_INT(kl), A_INT(M), A_INT(nblk),
                 A_MEM(z0)};
    if ((rc = launch1(c, K_FFT_LOAD, (size_t)batch * n, a1, 8))) return rc;
    if ((rc = fft_passes(c, z0, z1, n, npair, nblk, -1.0f, &zr))) return rc;
    karg a2[] = {A_MEM(zr), A_MEM(K), A_INT(n), A_INT(npair), A_INT(nblk)};
    if ((rc = launch1(c, K_FFT_MUL, (size_t)batch * h, a2, 5))) return rc;
    if ((rc = fft_passes(c, zr, zr == z0 ? z1 : z0, n, npair, nblk, 1.0f, &zr))) return rc;
    karg a3[] = {A_MEM(zr), A_MEM(bx), A_MEM(bom), A_INT(L), A_INT(D), A_INT(n), A_INT(kl),
                 A_INT(M), A_MEM(by)};
    if ((rc = launch1(c, K_FFT_STORE, (size_t)L * D, a3, 9))) return rc;
    /* + Re(sum_n eta q^(t+1) h) for t < kl */
    karg a4[] = {A_INT(kl), A_INT(D), A_INT(N), A_MEM(bq), A_MEM(beta), A_MEM(bh), A_MEM(by)};
    if ((rc = launch1(c, K_FFT_CARRY, (size_t)((kl + FFT_ROWS - 1) / FFT_ROWS) * D, a4, 7)))
        return rc;
    /* h_out = q^L h + sum_j q^(L-1-j) p x_j over the last kl rows */
    const int t_first = L - kl, nbt = (kl + B - 1) / B;
    if ((rc = fft_ws(c, 2, (size_t)nbt * DN * 8, &bE))) return rc;
    karg a5[] = {A_MEM(bx), A_INT(L), A_INT(D), A_INT(N), A_INT(B), A_INT(t_first), A_MEM(bp),
                 A_MEM(bq), A_MEM(bE)};
    if ((rc = launch1(c, K_CEMA_END, (size_t)nbt * DN, a5, 9))) return rc;
    karg a6[] = {A_INT(L), A_INT(D), A_INT(N), A_INT(B), A_INT(t_first), A_MEM(bq), A_MEM(bh),
                 A_MEM(bE), A_MEM(bhout)};
    return launch1(c, K_FFT_TAIL_FOLD, DN, a6, 9);
}

static int ocl_cema(mg_backend *be, mg_cema_algo algo, const float *x, int L,
                    const mg_cema_coeffs *cf, float *h, float *y)
{
    ocl_ctx *c = octx(be);
    if (L <= 0) return MG_OK;
    const int D = cf->D, N = cf->N, B = CEMA_B, nb = (L + B - 1) / B;
    const size_t LD = (size_t)L * D, DN = (size_t)D * N;
    int rc;
    cl_mem bx, bh, bhout, bE, bS, by, bp, bq, beta, bom;
    LOCK(c);
    TRY(upload(c, S_A, x, LD * 4, &bx));
    sregion *rh; /* h kept on the device (a registered state), or NULL */
    TRY(state_in(c, S_B, h, DN * 8, &bh, &rh));
    TRY(scratch(c, S_D, DN * 8, &bhout));
    TRY(scratch(c, S_C, LD * 4, &by));
    TRY(weight(c, cf->p, DN, 0, &bp));
    TRY(weight(c, cf->q, 2 * DN, 0, &bq));
    TRY(weight(c, cf->eta, 2 * DN, 0, &beta));
    TRY(weight(c, cf->omega, (size_t)D, 0, &bom));
    if (fft_chosen(c, algo, L, cf)) {
        TRY(cema_fft(c, cf, L, bx, bh, bhout, by, bp, bq, beta, bom));
    } else { /* the chunked scan (cema.cl) */
        bS = bh;
        if (nb > 1) {
            TRY(scratch(c, S_E, (size_t)nb * DN * 8, &bE));
            TRY(scratch(c, S_F, (size_t)nb * DN * 8, &bS));
            const int from = 0; /* pass A over every block */
            karg a1[] = {A_MEM(bx), A_INT(L), A_INT(D), A_INT(N), A_INT(B), A_INT(from),
                         A_MEM(bp), A_MEM(bq), A_MEM(bE)};
            TRY(launch1(c, K_CEMA_END, (size_t)nb * DN, a1, 9));
            karg a2[] = {A_INT(L), A_INT(D), A_INT(N), A_INT(B), A_MEM(bq), A_MEM(bh), A_MEM(bE),
                         A_MEM(bS)};
            TRY(launch1(c, K_CEMA_CARRY, DN, a2, 8));
        }
        karg a3[] = {A_MEM(bx), A_INT(L), A_INT(D), A_INT(N), A_INT(B), A_MEM(bp), A_MEM(bq),
                     A_MEM(beta), A_MEM(bom), A_MEM(bS), A_MEM(by), A_MEM(bhout)};
        TRY(launch1(c, K_CEMA_OUT, (size_t)nb * D, a3, 12));
    }
    TRY(state_out(c, rh, bhout, h, DN * 8)); /* the new h: kept there, or read back */
    TRY(download(c, by, y, LD * 4));
out:
    UNLOCK_RET(c, rc);
}

/* ---------------------------------------------------------------- attention */

static int ocl_attention(mg_backend *be, const float *q, const float *k, const float *v, int L,
                         int Lk, int H, int dk, int dv, float *out)
{
    ocl_ctx *c = octx(be);
    if (L <= 0 || H <= 0) return MG_OK;
    if (Lk < L)
        return mg_seterr(MG_ERR_INVALID_ARG, "attention: %d queries over only %d keys", L, Lk);
    size_t lmem = ((size_t)dk + dv + 2 * c->wg) * sizeof(float);
    if (lmem > c->local_mem)
        return mg_seterr(MG_ERR_UNSUPPORTED,
                         "OpenCL: attention with head sizes %d/%d needs %zu bytes of local memory; "
                         "the device has %zu", dk, dv, lmem, c->local_mem);
    int rc;
    cl_mem bq, bk, bv, bo;
    /* the block kernel's sizes: QB queries and TK keys per tile, as large as local memory
     * allows (QB >= 4, TK >= 8), else the per-query kernel */
    int QB = 16, TK = 64;
    size_t bl = 0;
    for (;;) {
        bl = ((size_t)QB * dk + (size_t)TK * dk + (size_t)TK * dv + (size_t)QB * TK +
              (size_t)QB * dv + 3 * (size_t)QB) * sizeof(float);
        if (bl <= c->local_mem) break;
        if (TK > 8) TK /= 2;
        else if (QB > 4) QB /= 2;
        else break;
    }
    const int block = L > 1 && c->attn == ATTN_BLOCK && bl <= c->local_mem;
    LOCK(c);
    TRY(upload(c, S_A, q, (size_t)L * H * dk * 4, &bq));
    sregion *rk, *rv; /* the chunk's keys/values kept on the device, or NULL */
    TRY(state_in(c, S_B, k, (size_t)Lk * H * dk * 4, &bk, &rk));
    TRY(state_in(c, S_D, v, (size_t)Lk * H * dv * 4, &bv, &rv));
    (void)rk;
    (void)rv;
    TRY(scratch(c, S_C, (size_t)L * H * dv * 4, &bo));
    if (block) {
        karg args[] = {A_MEM(bq), A_MEM(bk), A_MEM(bv), A_INT(L), A_INT(Lk), A_INT(H),
                       A_INT(dk), A_INT(dv), A_MEM(bo), A_INT(QB), A_INT(TK),
                       A_LOCAL((size_t)QB * dk * 4), A_LOCAL((size_t)TK * dk * 4),
                       A_LOCAL((size_t)TK * dv * 4), A_LOCAL((size_t)QB * TK * 4),
                       A_LOCAL((size_t)QB * dv * 4), A_LOCAL((size_t)3 * QB * 4)};
        size_t g[2] = {(size_t)(L + QB - 1) / QB * c->wg, (size_t)H}, l[2] = {c->wg, 1};
        TRY(launch(c, K_ATTN_BLOCK, 2, g, l, args, 17));
    } else {
        karg args[] = {A_MEM(bq), A_MEM(bk), A_MEM(bv), A_INT(L), A_INT(Lk), A_INT(H),
                       A_INT(dk), A_INT(dv), A_MEM(bo), A_LOCAL((size_t)dk * 4),
                       A_LOCAL((size_t)dv * 4), A_LOCAL(c->wg * 4), A_LOCAL(c->wg * 4)};
        size_t g[2] = {(size_t)L * c->wg, (size_t)H}, l[2] = {c->wg, 1};
        TRY(launch(c, K_ATTN, 2, g, l, args, 13));
    }
    TRY(download(c, bo, out, (size_t)L * H * dv * 4));
out:
    UNLOCK_RET(c, rc);
}

/* ---------------------------------------------------------------- the program */

static uint64_t fnv1a(uint64_t h, const void *data, size_t n)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* The directory of cached program binaries: $MEGALODON_OPENCL_CACHE ("none": no cache), else
 * $XDG_CACHE_HOME/megalodon/opencl, else ~/.cache/megalodon/opencl. NULL: no cache. */
static char *cache_dir(void)
{
    const char *env = getenv("MEGALODON_OPENCL_CACHE");
    char buf[4096];
    if (env && *env) {
        if (strcmp(env, "none") == 0) return NULL;
        snprintf(buf, sizeof buf, "%s", env);
    } else if (getenv("XDG_CACHE_HOME") && *getenv("XDG_CACHE_HOME")) {
        snprintf(buf, sizeof buf, "%s/megalodon/opencl", getenv("XDG_CACHE_HOME"));
    } else if (getenv("HOME") && *getenv("HOME")) {
        snprintf(buf, sizeof buf, "%s/.cache/megalodon/opencl", getenv("HOME"));
    } else {
        return NULL;
    }
    return strdup(buf);
}

static void mkdirs(const char *path)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            mkdir(tmp, 0755);
            *p = '/';
        }
    mkdir(tmp, 0755);
}

/* The first lines of the build log, in buf. */
static void build_log(cl_program prog, cl_device_id dev, char *buf, size_t size)
{
    buf[0] = '\0';
    size_t len = 0;
    if (clGetProgramBuildInfo(prog, dev, CL_PROGRAM_BUILD_LOG, 0, NULL, &len) != CL_SUCCESS)
        return;
    char *log = malloc(len + 1);
    if (!log) return;
    if (clGetProgramBuildInfo(prog, dev, CL_PROGRAM_BUILD_LOG, len, log, NULL) == CL_SUCCESS) {
        log[len] = '\0';
        snprintf(buf, size, "%s", log);
    }
    free(log);
}

static int build_source(ocl_ctx *c, const char *src, const char *opts, cl_program *out)
{
    cl_int e;
    size_t len = strlen(src);
    cl_program p = clCreateProgramWithSource(c->ctx, 1, &src, &len, &e);
    if (!p) return cl_fail(e, "clCreateProgramWithSource");
    e = clBuildProgram(p, 1, &c->dev, opts, NULL, NULL);
    if (e != CL_SUCCESS) {
        char log[1024];
        build_log(p, c->dev, log, sizeof log);
        clReleaseProgram(p);
        return mg_seterr(MG_ERR_BACKEND,
                         "OpenCL: the kernels do not build on %s (%s); build log: %s", c->name,
                         cl_err_name(e), log[0] ? log : "(empty)");
    }
    *out = p;
    return MG_OK;
}

/* Build the embedded kernels, through the binary cache keyed by a hash of the source, the
 * build options, the device, its driver and the platform. */
static int build_program(ocl_ctx *c, const dev_ref *r, const char *opts)
{
    char dname[256], drv[128], dver[128], pver[256];
    dev_str(c->dev, CL_DEVICE_NAME, dname, sizeof dname);
    dev_str(c->dev, CL_DRIVER_VERSION, drv, sizeof drv);
    dev_str(c->dev, CL_DEVICE_VERSION, dver, sizeof dver);
    pver[0] = '\0';
    clGetPlatformInfo(r->plat, CL_PLATFORM_VERSION, sizeof pver, pver, NULL);
    pver[sizeof pver - 1] = '\0';
    uint64_t h = 0xcbf29ce484222325ull;
    h = fnv1a(h, mg_opencl_source, strlen(mg_opencl_source));
    const char *parts[] = {opts, dname, drv, dver, pver, PACKAGE_VERSION};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        h = fnv1a(h, parts[i], strlen(parts[i]) + 1);
    char *dir = cache_dir(), path[4200] = "";
    if (dir) snprintf(path, sizeof path, "%s/%016llx.bin", dir, (unsigned long long)h);

    c->from_cache = 0;
    snprintf(c->bin_path, sizeof c->bin_path, "%s", path);
    if (path[0]) { /* a cached binary: use it if it loads and builds */
        long size = 0;
        unsigned char *bin = NULL;
        FILE *f = fopen(path, "rb");
        if (f) {
            if (fseek(f, 0, SEEK_END) == 0 && (size = ftell(f)) > 0 && fseek(f, 0, SEEK_SET) == 0 &&
                (bin = malloc((size_t)size)) && fread(bin, 1, (size_t)size, f) != (size_t)size) {
                free(bin);
                bin = NULL;
            }
            fclose(f);
        }
        if (bin) {
            cl_int e, st;
            size_t sz = (size_t)size;
            const unsigned char *bp = bin;
            cl_program p = clCreateProgramWithBinary(c->ctx, 1, &c->dev, &sz, &bp, &st, &e);
            if (p && e == CL_SUCCESS && st == CL_SUCCESS &&
                clBuildProgram(p, 1, &c->dev, opts, NULL, NULL) == CL_SUCCESS) {
                c->prog = p;
                c->from_cache = 1;
            } else if (p) {
                clReleaseProgram(p);
            }
            free(bin);
        }
    }
    if (!c->prog) {
        int rc = build_source(c, mg_opencl_source, opts, &c->prog);
        if (rc) {
            free(dir);
            return rc;
        }
        if (path[0]) { /* save the binary: temporary file, then rename */
            size_t sz = 0;
            if (clGetProgramInfo(c->prog, CL_PROGRAM_BINARY_SIZES, sizeof sz, &sz, NULL) ==
                    CL_SUCCESS && sz > 0) {
                unsigned char *bin = malloc(sz);
                if (bin && clGetProgramInfo(c->prog, CL_PROGRAM_BINARIES, sizeof bin, &bin,
                                            NULL) == CL_SUCCESS) {
                    mkdirs(dir);
                    char tmp[4300];
                    snprintf(tmp, sizeof tmp, "%s.%ld.tmp", path, (long)getpid());
                    FILE *f = fopen(tmp, "wb");
                    if (f) {
                        int ok = fwrite(bin, 1, sz, f) == sz;
                        ok = fclose(f) == 0 && ok;
                        if (!ok || rename(tmp, path) != 0) remove(tmp);
                    }
                }
                free(bin);
            }
        }
    }
    free(dir);
    return MG_OK;
}

/* ---------------------------------------------------------------- set-up */

static void ocl_free(mg_backend *be)
{
    if (!be) return;
    ocl_ctx *c = octx(be);
    if (c) {
        forget_weights(c);
        fft_free(c);
        st_forget_all(c);
        for (int i = 0; i < S_COUNT; i++)
            if (c->scratch[i]) clReleaseMemObject(c->scratch[i]);
        if (c->dummy) clReleaseMemObject(c->dummy);
        for (int i = 0; i < K_COUNT; i++)
            if (c->k[i]) clReleaseKernel(c->k[i]);
        if (c->prog) clReleaseProgram(c->prog);
        if (c->queue) clReleaseCommandQueue(c->queue);
        if (c->ctx) clReleaseContext(c->ctx);
        pthread_mutex_destroy(&c->lock);
        free(c);
    }
    free(be);
}

int mg_backend_is_opencl(const mg_backend *be) { return be && be->free == ocl_free; }

const char *mg_opencl_cema_choice(mg_backend *be, mg_cema_algo algo, int L,
                                  const mg_cema_coeffs *cf)
{
    if (!mg_backend_is_opencl(be)) return NULL;
    ocl_ctx *c = octx(be);
    LOCK(c);
    const int fft = fft_chosen(c, algo, L, cf);
    pthread_mutex_unlock(&c->lock);
    return fft ? "fft" : "scan-chunked";
}

/* MEGALODON_OPENCL_<name>: auto (-1), 0 or 1; anything else is an error naming it. */
static int env_tristate(const char *name, int *out)
{
    *out = -1;
    const char *v = getenv(name);
    if (!v || !*v || strcmp(v, "auto") == 0) return MG_OK;
    if (strcmp(v, "0") == 0 || strcmp(v, "no") == 0) *out = 0;
    else if (strcmp(v, "1") == 0 || strcmp(v, "yes") == 0) *out = 1;
    else
        return mg_seterr(MG_ERR_INVALID_ARG, "%s=%s: expected auto, 0 or 1", name, v);
    return MG_OK;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* Seconds per product of the given kernel (best of 3 after a warm-up); < 0 on failure. */
static double time_gemm(ocl_ctx *c, int gemm, int gemv_mode, cl_mem bx, int M, int K,
                        cl_mem bw, int N, cl_mem by)
{
    double best = 1e30;
    for (int r = 0; r < 4; r++) {
        double t0 = now_s();
        if (run_gemm(c, gemm, gemv_mode, bx, M, K, bw, N, c->dummy, 0, by) != MG_OK ||
            clFinish(c->queue) != CL_SUCCESS)
            return -1;
        double t = now_s() - t0;
        if (r > 0 && t < best) best = t;
    }
    return best;
}

/* The matrix product kernels, by measurement on this device: the prefill shape 64 x 512 x 512
 * among tiled, direct and CLBlast, the decode shape 1 x 512 x 2048 between mg_gemv and
 * CLBlast's sgemv (CLBlast only when 10% faster: it builds its kernels again in every
 * process, which our binary cache cannot hold). The choice is kept beside the program binary (same key: source, options,
 * device, driver), so that it is measured once per device. */
static int choose_gemm(ocl_ctx *c)
{
    char path[4300] = "";
    if (c->bin_path[0]) {
        snprintf(path, sizeof path, "%s.gemm", c->bin_path);
        FILE *f = fopen(path, "r");
        if (f) {
            char g[32] = "", v[32] = "";
            int ok = fscanf(f, "%31s %31s", g, v) == 2;
            fclose(f);
            for (int i = 0; ok && i < GEMM_N; i++)
                if (strcmp(g, gemm_names[i]) == 0) {
                    c->gemm = i;
                    c->gemv_mode = strcmp(v, "clblast") == 0 ? GEMM_CLBLAST
                                      : strcmp(v, "direct") == 0 ? GEMM_DIRECT : GEMM_TILED;
                    snprintf(c->gemm_why, sizeof c->gemm_why, "measured earlier (%.40s)", path);
                    return MG_OK;
                }
        }
    }
    const int M = 64, K = 512, N = 2048;
    cl_int e;
    cl_mem bx = clCreateBuffer(c->ctx, CL_MEM_READ_WRITE, (size_t)M * K * 4, NULL, &e);
    cl_mem bw = clCreateBuffer(c->ctx, CL_MEM_READ_WRITE, (size_t)N * K * 4, NULL, &e);
    cl_mem by = clCreateBuffer(c->ctx, CL_MEM_READ_WRITE, (size_t)M * N * 4, NULL, &e);
    c->gemm = GEMM_DIRECT;
    c->gemv_mode = GEMM_DIRECT;
    snprintf(c->gemm_why, sizeof c->gemm_why, "default (the measurement failed)");
    if (!bx || !bw || !by) goto done;
    float z = 0.01f;
    clEnqueueFillBuffer(c->queue, bx, &z, 4, 0, (size_t)M * K * 4, 0, NULL, NULL);
    clEnqueueFillBuffer(c->queue, bw, &z, 4, 0, (size_t)N * K * 4, 0, NULL, NULL);
    double t[GEMM_N], tv[GEMM_N];
    int best = -1;
    for (int g = 0; g < GEMM_N; g++) {
        t[g] = -1;
#ifndef MG_HAVE_CLBLAST
        if (g == GEMM_CLBLAST) continue;
#endif
        if (g == GEMM_CLBLAST && c->f16w) continue;
        t[g] = time_gemm(c, g, 0, bx, M, K, bw, 512, by);
        /* CLBlast must win by 10%: it compiles its own kernels in every process */
        double tg = g == GEMM_CLBLAST ? t[g] * 1.1 : t[g];
        if (t[g] > 0 && (best < 0 || tg < t[best])) best = g;
    }
    int bestv = -1;
    for (int g = 0; g < GEMM_N; g++) {
        tv[g] = -1;
#ifndef MG_HAVE_CLBLAST
        if (g == GEMM_CLBLAST) continue;
#endif
        if (g == GEMM_CLBLAST && c->f16w) continue;
        tv[g] = time_gemm(c, GEMM_DIRECT, g, bx, 1, K, bw, N, by);
        double tg = g == GEMM_CLBLAST ? tv[g] * 1.1 : tv[g];
        if (tv[g] > 0 && (bestv < 0 || tg < tv[bestv])) bestv = g;
    }
    if (best < 0 || bestv < 0) goto done;
    c->gemm = best;
    c->gemv_mode = bestv;
    snprintf(c->gemm_why, sizeof c->gemm_why,
             "measured: 64x512x512 tiled %.3g ms, direct %.3g ms, clblast %.3g ms; "
             "1x512x2048 gemv %.3g ms, direct %.3g ms, clblast %.3g ms",
             t[0] * 1e3, t[1] * 1e3, t[2] * 1e3, tv[0] * 1e3, tv[1] * 1e3, tv[2] * 1e3);
    if (path[0]) {
        char tmp[4400];
        snprintf(tmp, sizeof tmp, "%s.%ld.tmp", path, (long)getpid());
        FILE *f = fopen(tmp, "w");
        if (f) {
            int ok = fprintf(f, "%s %s\n%s\n", gemm_names[c->gemm],
                             c->gemv_mode == GEMM_TILED ? "gemv" : gemm_names[c->gemv_mode],
                             c->gemm_why) > 0;
            ok = fclose(f) == 0 && ok;
            if (!ok || rename(tmp, path) != 0) remove(tmp);
        }
    }
done:
    if (bx) clReleaseMemObject(bx);
    if (bw) clReleaseMemObject(bw);
    if (by) clReleaseMemObject(by);
    return MG_OK;
}

static int setup(ocl_ctx *c, const dev_ref *r)
{
    cl_int e;
    c->dev = r->dev;
    cl_context_properties props[] = {CL_CONTEXT_PLATFORM, (cl_context_properties)r->plat, 0};
    c->ctx = clCreateContext(props, 1, &c->dev, NULL, NULL, &e);
    if (!c->ctx) return cl_fail(e, "clCreateContext");
    c->queue = clCreateCommandQueue(c->ctx, c->dev, 0, &e);
    if (!c->queue) return cl_fail(e, "clCreateCommandQueue");

    cl_ulong ma = 0, lm = 0;
    size_t mwg = 0;
    clGetDeviceInfo(c->dev, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof ma, &ma, NULL);
    clGetDeviceInfo(c->dev, CL_DEVICE_LOCAL_MEM_SIZE, sizeof lm, &lm, NULL);
    clGetDeviceInfo(c->dev, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof mwg, &mwg, NULL);
    c->max_alloc = ma ? (size_t)ma : (size_t)1 << 27;
    c->local_mem = lm ? (size_t)lm : 16384;
    c->wg = WG;
    while (c->wg > 1 && c->wg > mwg) c->wg >>= 1;
    if (mwg < 64)
        return mg_seterr(MG_ERR_UNSUPPORTED,
                         "OpenCL: device %s allows work-groups of %zu work-items; the kernels "
                         "need 64", c->name, mwg);

    int f16, gemm, f64;
    int rc = env_tristate("MEGALODON_OPENCL_F16", &f16);
    if (rc) return rc;
    /* double accumulation where the device has it; MEGALODON_OPENCL_FP64=0 tests the float
     * path of devices without it */
    if ((rc = env_tristate("MEGALODON_OPENCL_FP64", &f64))) return rc;
    c->fp64 = f64 != 0 && dev_has_ext(c->dev, "cl_khr_fp64");
    /* fp16 weight storage: by default where the device does fp16 arithmetic (a GPU); on
     * request anywhere (vload_half is core OpenCL) */
    c->f16w = f16 < 0 ? dev_has_ext(c->dev, "cl_khr_fp16") : f16;
    if ((rc = fft_init(c))) return rc; /* MEGALODON_CEMA (the CEMA algorithm) */
    const char *aenv = getenv("MEGALODON_OPENCL_ATTN");
    c->attn = ATTN_BLOCK;
    if (aenv && *aenv && strcmp(aenv, "auto") != 0) {
        if (strcmp(aenv, "query") == 0) c->attn = ATTN_QUERY;
        else if (strcmp(aenv, "block") != 0)
            return mg_seterr(MG_ERR_INVALID_ARG,
                             "MEGALODON_OPENCL_ATTN=%s: expected auto, query or block", aenv);
    }
    gemm = -1;
    const char *genv = getenv("MEGALODON_OPENCL_GEMM");
    if (genv && *genv && strcmp(genv, "auto") != 0) {
        for (int i = 0; i < GEMM_N; i++)
            if (strcmp(genv, gemm_names[i]) == 0) gemm = i;
        if (gemm < 0)
            return mg_seterr(MG_ERR_INVALID_ARG,
                             "MEGALODON_OPENCL_GEMM=%s: expected auto, tiled, direct or clblast",
                             genv);
#ifndef MG_HAVE_CLBLAST
        if (gemm == GEMM_CLBLAST)
            return mg_seterr(MG_ERR_UNSUPPORTED,
                             "MEGALODON_OPENCL_GEMM=clblast: this build has no CLBlast (Debian "
                             "libclblast-dev, then ./configure)");
#endif
        if (gemm == GEMM_CLBLAST && c->f16w)
            return mg_seterr(MG_ERR_UNSUPPORTED,
                             "MEGALODON_OPENCL_GEMM=clblast works with fp32 weights only "
                             "(set MEGALODON_OPENCL_F16=0)");
    }

    char opts[256];
    snprintf(opts, sizeof opts, "-cl-std=CL1.2 -DMG_ACC_DOUBLE=%d -DMG_W_HALF=%d", c->fp64,
             c->f16w);
    if ((rc = build_program(c, r, opts))) return rc;
    for (int i = 0; i < K_COUNT; i++) {
        c->k[i] = clCreateKernel(c->prog, kernel_names[i], &e);
        if (!c->k[i]) {
            char what[96];
            snprintf(what, sizeof what, "clCreateKernel(%s)", kernel_names[i]);
            return cl_fail(e, what);
        }
    }
    c->dummy = clCreateBuffer(c->ctx, CL_MEM_READ_WRITE, 64, NULL, &e);
    if (!c->dummy) return cl_fail(e, "clCreateBuffer");
    /* run the probe once: a device that builds but cannot run fails here, clearly */
    float one = 0.0f;
    size_t g = 1;
    karg args[] = {A_MEM(c->dummy)};
    if ((rc = launch(c, K_PROBE, 1, &g, NULL, args, 1))) return rc;
    CL_TRY(clEnqueueReadBuffer(c->queue, c->dummy, CL_TRUE, 0, 4, &one, 0, NULL, NULL),
           "running the probe kernel");
    if (one != 1.0f)
        return mg_seterr(MG_ERR_BACKEND, "OpenCL: device %s did not run the probe kernel",
                         c->name);
    if (gemm >= 0) {
        c->gemm = gemm; /* and for decode the corresponding kernel */
        c->gemv_mode = gemm;
        snprintf(c->gemm_why, sizeof c->gemm_why, "MEGALODON_OPENCL_GEMM=%s", gemm_names[gemm]);
        return MG_OK;
    }
    return choose_gemm(c);
}

int mg_backend_opencl_new(int device, mg_backend **out)
{
    *out = NULL;
    if (device < 0) {
        const char *env = getenv("MEGALODON_OPENCL_DEVICE");
        device = 0;
        if (env && *env) {
            char *end;
            errno = 0;
            long v = strtol(env, &end, 10);
            if (end == env || *end || errno || v < 0 || v > INT_MAX)
                return mg_seterr(MG_ERR_INVALID_ARG,
                                 "MEGALODON_OPENCL_DEVICE=%s: expected a device index (0, 1, ...; "
                                 "megalodon-run --list-devices lists them)", env);
            device = (int)v;
        }
    }
    dev_ref devs[MAX_DEVICES];
    int n;
    int rc = enum_devices(devs, &n);
    if (rc) return rc;
    if (n == 0) return mg_seterr(MG_ERR_UNSUPPORTED, "OpenCL backend: %s", NO_PLATFORM);
    if (device >= n) {
        char list[1024] = "";
        for (int i = 0; i < n; i++) {
            char d[512];
            describe(&devs[i], d, sizeof d);
            size_t l = strlen(list);
            snprintf(list + l, sizeof list - l, "%s%d: %s", i ? "; " : "", i, d);
        }
        return mg_seterr(MG_ERR_INVALID_ARG, "OpenCL device %d does not exist (%d device%s: %s)",
                         device, n, n == 1 ? "" : "s", list);
    }
    mg_backend *be = calloc(1, sizeof *be);
    ocl_ctx *c = calloc(1, sizeof *c);
    if (!be || !c) {
        free(be);
        free(c);
        return mg_seterr(MG_ERR_NOMEM, "out of memory creating the OpenCL backend");
    }
    pthread_mutex_init(&c->lock, NULL);
    be->ctx = c;
    be->free = ocl_free;
    char dname[128];
    dev_str(devs[device].dev, CL_DEVICE_NAME, dname, sizeof dname);
    snprintf(c->name, sizeof c->name, "opencl/%d:%s", device, dname);
    be->name = c->name;
    be->n_threads = 1;
    if ((rc = setup(c, &devs[device]))) {
        ocl_free(be);
        return rc;
    }
    be->matmul = ocl_matmul;
    be->rms_norm = ocl_rms_norm;
    be->layer_norm = ocl_layer_norm;
    be->timestep_norm = ocl_timestep_norm;
    be->cema = ocl_cema;
    be->rope = ocl_rope;
    be->attention = ocl_attention;
    be->silu = ocl_silu;
    be->mul = ocl_mul;
    be->add = ocl_add;
    be->scale = ocl_scale;
    be->affine_rows = ocl_affine_rows;
    /* the streaming state kept on the device, unless MEGALODON_OPENCL_RESIDENT=0 (then it
     * is copied in and out by every op, as before; for comparisons) */
    int resident;
    if ((rc = env_tristate("MEGALODON_OPENCL_RESIDENT", &resident))) {
        ocl_free(be);
        return rc;
    }
    if (resident != 0) {
        be->state_register = ocl_state_register;
        be->state_release = ocl_state_release;
        be->state_sync = ocl_state_sync;
        be->state_changed = ocl_state_changed;
        be->state_snapshot = ocl_state_snapshot;
    }
    /* the training ops stay NULL: the trainer refuses a backend without them */
    *out = be;
    return MG_OK;
}

/* ---------------------------------------------------------------- for the tests */

void mg_opencl_get_stats(mg_backend *be, mg_opencl_stats *st)
{
    memset(st, 0, sizeof *st);
    if (!mg_backend_is_opencl(be)) return;
    ocl_ctx *c = octx(be);
    LOCK(c);
    st->weight_uploads = c->w_uploads;
    st->weight_hits = c->w_hits;
    st->weight_bytes = c->w_bytes;
    st->program_from_cache = c->from_cache;
    st->fp16_weights = c->f16w;
    st->fp64 = c->fp64;
    st->gemm = gemm_names[c->gemm];
    st->gemv = c->gemv_mode == GEMM_TILED ? "gemv" : gemm_names[c->gemv_mode];
    st->gemm_why = c->gemm_why;
    st->attn = c->attn == ATTN_BLOCK ? "block" : "query";
    st->state_regions = c->st_regions;
    st->state_up_bytes = c->st_up_bytes;
    st->state_down_bytes = c->st_down_bytes;
    st->state_device_bytes = c->st_dev_bytes;
    pthread_mutex_unlock(&c->lock);
}

void mg_opencl_forget_weights(mg_backend *be)
{
    if (!mg_backend_is_opencl(be)) return;
    ocl_ctx *c = octx(be);
    LOCK(c);
    forget_weights(c);
    pthread_mutex_unlock(&c->lock);
}

int mg_opencl_test_build(mg_backend *be, const char *source)
{
    if (!mg_backend_is_opencl(be)) return mg_seterr(MG_ERR_INVALID_ARG, "not an OpenCL backend");
    ocl_ctx *c = octx(be);
    cl_program p = NULL;
    LOCK(c);
    int rc = build_source(c, source, "-cl-std=CL1.2", &p);
    if (p) clReleaseProgram(p);
    UNLOCK_RET(c, rc);
}

int mg_opencl_test_alloc(mg_backend *be, size_t bytes)
{
    if (!mg_backend_is_opencl(be)) return mg_seterr(MG_ERR_INVALID_ARG, "not an OpenCL backend");
    ocl_ctx *c = octx(be);
    int rc = check_size(c, bytes, "the test allocation");
    if (rc) return rc;
    cl_int e;
    LOCK(c);
    cl_mem m = clCreateBuffer(c->ctx, CL_MEM_READ_WRITE, bytes, NULL, &e);
    if (!m) UNLOCK_RET(c, cl_fail(e, "clCreateBuffer (test)"));
    float z = 0.0f;
    e = clEnqueueFillBuffer(c->queue, m, &z, sizeof z, 0, bytes / 4 * 4, 0, NULL, NULL);
    if (e == CL_SUCCESS) e = clFinish(c->queue);
    clReleaseMemObject(m);
    rc = e == CL_SUCCESS ? MG_OK : cl_fail(e, "filling the test allocation");
    UNLOCK_RET(c, rc);
}

int mg_opencl_test_poison(mg_backend *be, size_t min_bytes)
{
    if (!mg_backend_is_opencl(be)) return mg_seterr(MG_ERR_INVALID_ARG, "not an OpenCL backend");
    ocl_ctx *c = octx(be);
    LOCK(c);
    uint32_t nan_bits = 0x7fc00000u; /* a quiet NaN */
    int rc = MG_OK;
    cl_int e = CL_SUCCESS;
    for (int i = 0; i < S_COUNT && rc == MG_OK && e == CL_SUCCESS; i++) {
        cl_mem m;
        rc = scratch(c, i, min_bytes, &m);
        if (rc == MG_OK)
            e = clEnqueueFillBuffer(c->queue, m, &nan_bits, sizeof nan_bits, 0,
                                    c->scratch_bytes[i] / 4 * 4, 0, NULL, NULL);
    }
    if (rc == MG_OK && e == CL_SUCCESS) e = clFinish(c->queue);
    if (rc == MG_OK && e != CL_SUCCESS) rc = cl_fail(e, "filling the scratch buffers with NaN");
    UNLOCK_RET(c, rc);
}

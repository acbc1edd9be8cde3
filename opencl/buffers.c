/* buffers.c - the OpenCL backend's device memory: the scratch buffers of the ops'
 * activations, uploads and downloads, the weight cache (the device copies of a model's
 * weights, keyed by host address), and launching a kernel with its arguments. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "model.h"
#include "ocl.h"

/* ---------------------------------------------------------------- scratch buffers */

int ocl_check_size(ocl_ctx *c, size_t bytes, const char *what)
{
    if (bytes > c->max_alloc)
        return mg_seterr(MG_ERR_NOMEM,
                         "OpenCL: out of device memory: %s needs a buffer of %zu bytes, more than "
                         "the device's largest allocation (%zu bytes)", what, bytes, c->max_alloc);
    return MG_OK;
}

/* n elements of `elem` bytes fit in one device buffer (and in size_t). */
int ocl_fits(ocl_ctx *c, size_t n, size_t elem, const char *what)
{
    if (n > c->max_alloc / elem)
        return mg_seterr(MG_ERR_NOMEM,
                         "OpenCL: out of device memory: %s of %zu elements is larger than the "
                         "device's largest allocation (%zu bytes)", what, n, c->max_alloc);
    return MG_OK;
}

/* *m grown to at least `bytes` (never shrunk; what it held is lost): made again, with
 * `slack` bytes more where the device allows, whenever *have is short of `bytes`. `what`
 * names the buffer in the errors. */
int ocl_grow(ocl_ctx *c, cl_mem *m, size_t *have, size_t bytes, size_t slack,
             const char *what)
{
    if (*have >= bytes) return MG_OK;
    TRY(ocl_check_size(c, bytes, what));
    if (*m) clReleaseMemObject(*m);
    *m = NULL;
    *have = 0;
    size_t sz = bytes + slack;
    if (sz > c->max_alloc || sz < bytes) sz = bytes;
    cl_int e;
    *m = clCreateBuffer(c->ctx, CL_MEM_READ_WRITE, sz, NULL, &e);
    if (!*m) {
        char call[128];
        snprintf(call, sizeof call, "clCreateBuffer (%s)", what);
        return ocl_fail(e, call);
    }
    *have = sz;
    return MG_OK;
}

/* A scratch buffer of at least `bytes`, with a quarter more room so that growing is rare. */
int ocl_scratch(ocl_ctx *c, int slot, size_t bytes, cl_mem *out)
{
    if (bytes == 0) bytes = 4;
    TRY(ocl_grow(c, &c->scratch[slot], &c->scratch_bytes[slot], bytes, bytes / 4,
                 "an activation"));
    *out = c->scratch[slot];
    return MG_OK;
}

int ocl_upload(ocl_ctx *c, int slot, const void *host, size_t bytes, cl_mem *out)
{
    int rc = ocl_scratch(c, slot, bytes, out);
    if (rc) return rc;
    if (bytes) CL_TRY(clEnqueueWriteBuffer(c->queue, *out, CL_FALSE, 0, bytes, host, 0, NULL, NULL),
                      "clEnqueueWriteBuffer (an activation)");
    return MG_OK;
}

int ocl_download(ocl_ctx *c, cl_mem m, void *host, size_t bytes)
{
    if (bytes) CL_TRY(clEnqueueReadBuffer(c->queue, m, CL_TRUE, 0, bytes, host, 0, NULL, NULL),
                      "clEnqueueReadBuffer (kernel execution)");
    return MG_OK;
}

/* ---------------------------------------------------------------- the weight cache */

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
    while (c->w[j].host && !(c->w[j].host == key && c->w[j].half == half))
        j = (j + 1) & (c->w_cap - 1);
    return c->w[j].host && c->w[j].bytes >= bytes ? c->w[j].mem : NULL;
}

static int weight_as(ocl_ctx *c, const void *key, const float *host, size_t n, int half,
                     cl_mem *out);

/* The device copy of a weight (n floats at host), uploaded on first use; as fp16 when half. */
int ocl_weight(ocl_ctx *c, const float *host, size_t n, int half, cl_mem *out)
{
    return weight_as(c, host, host, n, half, out);
}

/* The device copy of a weight matrix in its file type: f32 as ocl_weight; the other types
 * expanded to fp32 on the host once, on first use, and then kept like the f32 ones (keyed by
 * the address of their data). */
int ocl_weight_typed(ocl_ctx *c, const mg_weight *W, size_t n, int half, cl_mem *out)
{
    if (W->type == GGML_TYPE_F32) return ocl_weight(c, W->data, n, half, out);
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
    while (c->w[j].host && !(c->w[j].host == key && c->w[j].half == half))
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
    int rc = ocl_check_size(c, bytes, "a weight");
    if (rc) return rc;
    cl_int err;
    cl_mem m = clCreateBuffer(c->ctx, CL_MEM_READ_ONLY, bytes, NULL, &err);
    if (!m) return ocl_fail(err, "clCreateBuffer (weights)");
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
        return ocl_fail(err, "uploading a weight");
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

/* ocl_cema_forget: the CEMA kernel transforms, keyed like the weights */
void ocl_forget_weights(ocl_ctx *c)
{
    for (size_t i = 0; i < c->w_cap; i++)
        if (c->w[i].host) clReleaseMemObject(c->w[i].mem);
    free(c->w);
    c->w = NULL;
    c->w_cap = c->w_n = 0;
    c->w_bytes = 0;
    ocl_cema_forget(c);
}

/* ---------------------------------------------------------------- running kernels */

static size_t round_up(size_t n, size_t m) { return (n + m - 1) / m * m; }

int ocl_launch(ocl_ctx *c, int kid, int dims, const size_t *global, const size_t *local,
               const karg *args, int nargs)
{
    cl_kernel k = c->k[kid];
    for (int i = 0; i < nargs; i++)
        CL_TRY(clSetKernelArg(k, (cl_uint)i, args[i].size, args[i].value), ocl_kernel_names[kid]);
    size_t g[2];
    for (int d = 0; d < dims; d++) g[d] = local ? round_up(global[d], local[d]) : global[d];
    for (int d = 0; d < dims; d++)
        if (g[d] == 0) return MG_OK;
    cl_int e = clEnqueueNDRangeKernel(c->queue, k, (cl_uint)dims, NULL, g, local, 0, NULL, NULL);
    if (e != CL_SUCCESS) {
        char what[96];
        snprintf(what, sizeof what, "running kernel %s", ocl_kernel_names[kid]);
        return ocl_fail(e, what);
    }
    return MG_OK;
}

/* Elementwise launch over n items with a 1-D range of work-groups of 64. */
int ocl_launch1(ocl_ctx *c, int kid, size_t n, const karg *args, int nargs)
{
    size_t l = 64 < c->wg ? 64 : c->wg;
    return ocl_launch(c, kid, 1, &n, &l, args, nargs);
}


/* backend-opencl.h - the OpenCL backend (internal; docs/opencl.md).
 *
 * It fills the inference ops of the op table (lib/backend.h); the training ops stay NULL.
 * Without OpenCL in the build (./configure --disable-opencl, or no headers/ICD loader found),
 * opencl-stub.c provides these functions and they fail with MG_ERR_UNSUPPORTED. */
#ifndef MG_BACKEND_OPENCL_H
#define MG_BACKEND_OPENCL_H

#include <stddef.h>

#include "backend.h"

/* A backend on OpenCL device `device` (the index in the listing of mg_opencl_list_devices:
 * all devices of all platforms, in order); -1: $MEGALODON_OPENCL_DEVICE, else 0. Errors:
 * MG_ERR_UNSUPPORTED (not built, or no OpenCL platform/device), MG_ERR_INVALID_ARG (no such
 * device, or a bad MEGALODON_OPENCL_* variable), MG_ERR_BACKEND (the kernels do not build
 * or run there), MG_ERR_NOMEM. */
int mg_backend_opencl_new(int device, mg_backend **out);

/* The devices, one line each ("N: platform / device (details)\n") into buf (truncated to
 * size, always NUL-terminated when size > 0). Returns the number of devices (0 with a
 * line saying there is no platform), or MG_ERR_UNSUPPORTED when OpenCL is not built in. */
int mg_opencl_list_devices(char *buf, size_t size);

/* ---- for the tests (tests/test-backend-ops.c) */

/* 1 if be is an OpenCL backend. */
int mg_backend_is_opencl(const mg_backend *be);

/* be->cema_choice of an OpenCL backend (cf may be NULL: auto is then the scan): "fft" or
 * "scan-chunked"; NULL if be is not an OpenCL backend. */
const char *mg_opencl_cema_choice(mg_backend *be, mg_cema_algo algo, int L,
                                  const mg_cema_coeffs *cf);

/* Counters: weight uploads (misses) and reuses (hits) of the weight cache, the bytes it
 * holds, and whether the program came from the on-disk binary cache. */
typedef struct {
    long weight_uploads, weight_hits;
    size_t weight_bytes;
    int program_from_cache;
    int fp16_weights;
    int fp64;
    const char *gemm, *gemv; /* the matrix product kernels chosen ("direct", "gemv", ...) */
    const char *gemm_why;    /* and how ("measured: ...", "MEGALODON_OPENCL_GEMM=...") */
    const char *attn;        /* the attention kernel of prefill: "block" or "query" */
    /* the streaming state kept on the device (backend.h: state_register): registered
     * regions, and the bytes of state copied host -> device (h and statistics when the host
     * copy was newer, keys/values past the device's prefix), device -> host (state_sync) and
     * device -> device (state_snapshot's backups and restores) since the backend began */
    long state_regions;
    size_t state_up_bytes, state_down_bytes, state_device_bytes;
} mg_opencl_stats;
void mg_opencl_get_stats(mg_backend *be, mg_opencl_stats *st);
/* Drop every cached weight (the tests reuse host buffers with new contents). */
void mg_opencl_forget_weights(mg_backend *be);
/* Build `source` as a program on the backend's device: the error path of a kernel that
 * does not compile (MG_ERR_BACKEND with the build log's first lines). */
int mg_opencl_test_build(mg_backend *be, const char *source);
/* Allocate and touch a device buffer of `bytes`, then free it: the out-of-memory path. */
int mg_opencl_test_alloc(mg_backend *be, size_t bytes);
/* Grow every scratch buffer to at least min_bytes and fill it with NaN: an op must not
 * read what it is about to overwrite. */
int mg_opencl_test_poison(mg_backend *be, size_t min_bytes);

#endif

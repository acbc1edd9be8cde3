/* backend-opencl.c - the OpenCL backend (docs/opencl.md): creating it on a device (its
 * settings, the program, the matrix product's choice) and filling its op table; and the
 * functions the tests use to look inside. ocl.h says how the backend works and which file
 * holds what. */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ocl.h"

/* ---------------------------------------------------------------- set-up */

static void ocl_free(mg_backend *be)
{
    if (!be) return;
    ocl_ctx *c = octx(be);
    if (c) {
        ocl_forget_weights(c);
        ocl_cema_free(c);
        ocl_state_forget_all(c);
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

static int ocl_supports_op(mg_backend *be, mg_op op)
{
    (void)be;
    (void)op;
    return 0; /* MG_OP_TRAIN: the training ops stay NULL (the trainer refuses the backend) */
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

/* The settings read from the environment: MEGALODON_OPENCL_F16, _FP64, _ATTN and _GEMM
 * (*gemm: the GEMM_* it names, or -1 for auto), and MEGALODON_CEMA*. */
static int read_settings(ocl_ctx *c, int *gemm)
{
    int f16, f64;
    int rc = env_tristate("MEGALODON_OPENCL_F16", &f16);
    if (rc) return rc;
    /* double accumulation where the device has it; MEGALODON_OPENCL_FP64=0 tests the float
     * path of devices without it */
    if ((rc = env_tristate("MEGALODON_OPENCL_FP64", &f64))) return rc;
    c->fp64 = f64 != 0 && ocl_dev_has_ext(c->dev, "cl_khr_fp64");
    /* fp16 weight storage: by default where the device does fp16 arithmetic (a GPU); on
     * request anywhere (vload_half is core OpenCL) */
    c->f16w = f16 < 0 ? ocl_dev_has_ext(c->dev, "cl_khr_fp16") : f16;
    if ((rc = ocl_cema_init(c))) return rc; /* MEGALODON_CEMA (the CEMA algorithm) */
    const char *aenv = getenv("MEGALODON_OPENCL_ATTN");
    c->attn = ATTN_BLOCK;
    if (aenv && *aenv && strcmp(aenv, "auto") != 0) {
        if (strcmp(aenv, "query") == 0) c->attn = ATTN_QUERY;
        else if (strcmp(aenv, "block") != 0)
            return mg_seterr(MG_ERR_INVALID_ARG,
                             "MEGALODON_OPENCL_ATTN=%s: expected auto, query or block", aenv);
    }
    *gemm = -1;
    const char *genv = getenv("MEGALODON_OPENCL_GEMM");
    if (genv && *genv && strcmp(genv, "auto") != 0) {
        for (int i = 0; i < GEMM_N; i++)
            if (strcmp(genv, ocl_gemm_names[i]) == 0) *gemm = i;
        if (*gemm < 0)
            return mg_seterr(MG_ERR_INVALID_ARG,
                             "MEGALODON_OPENCL_GEMM=%s: expected auto, tiled, direct or clblast",
                             genv);
#ifndef MG_HAVE_CLBLAST
        if (*gemm == GEMM_CLBLAST)
            return mg_seterr(MG_ERR_UNSUPPORTED,
                             "MEGALODON_OPENCL_GEMM=clblast: this build has no CLBlast (Debian "
                             "libclblast-dev, then ./configure)");
#endif
        if (*gemm == GEMM_CLBLAST && c->f16w)
            return mg_seterr(MG_ERR_UNSUPPORTED,
                             "MEGALODON_OPENCL_GEMM=clblast works with fp32 weights only "
                             "(set MEGALODON_OPENCL_F16=0)");
    }
    return MG_OK;
}

/* The device opened, the settings read, the program built and probed, the matrix product
 * chosen. */
static int setup(ocl_ctx *c, const dev_ref *r)
{
    int gemm = -1, rc = ocl_open(c, r);
    if (rc) return rc;
    if ((rc = read_settings(c, &gemm))) return rc;
    char opts[256];
    snprintf(opts, sizeof opts, "-cl-std=CL1.2 -DMG_ACC_DOUBLE=%d -DMG_W_HALF=%d", c->fp64,
             c->f16w);
    if ((rc = ocl_build(c, r, opts))) return rc;
    if (gemm >= 0) {
        c->gemm = gemm; /* and for decode the corresponding kernel */
        c->gemv_mode = gemm;
        snprintf(c->gemm_why, sizeof c->gemm_why, "MEGALODON_OPENCL_GEMM=%s",
                 ocl_gemm_names[gemm]);
        return MG_OK;
    }
    return ocl_choose_gemm(c);
}

int mg_backend_opencl_new(int device, mg_backend **out)
{
    *out = NULL;
    dev_ref dev;
    int rc = ocl_find_device(&device, &dev);
    if (rc) return rc;
    mg_backend *be = calloc(1, sizeof *be);
    ocl_ctx *c = calloc(1, sizeof *c);
    if (!be || !c) {
        free(be);
        free(c);
        return mg_seterr(MG_ERR_NOMEM, "out of memory for the OpenCL backend's op table and "
                                       "context");
    }
    pthread_mutex_init(&c->lock, NULL);
    be->ctx = c;
    be->free = ocl_free;
    char dname[128];
    ocl_dev_str(dev.dev, CL_DEVICE_NAME, dname, sizeof dname);
    snprintf(c->name, sizeof c->name, "opencl/%d:%s", device, dname);
    be->name = c->name;
    be->n_threads = 1;
    if ((rc = setup(c, &dev))) {
        ocl_free(be);
        return rc;
    }
    be->supports_op = ocl_supports_op;
    be->matmul = ocl_matmul;
    be->cema = ocl_cema;
    be->cema_choice = ocl_cema_choice;
    ocl_ops_fill(be); /* elementwise, RoPE, norms, attention */
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

int mg_backend_is_opencl(const mg_backend *be) { return be && be->free == ocl_free; }

const char *mg_opencl_cema_choice(mg_backend *be, mg_cema_algo algo, int L,
                                  const mg_cema_coeffs *cf)
{
    return mg_backend_is_opencl(be) ? be->cema_choice(be, algo, L, cf) : NULL;
}

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
    st->gemm = ocl_gemm_names[c->gemm];
    st->gemv = c->gemv_mode == GEMM_TILED ? "gemv" : ocl_gemm_names[c->gemv_mode];
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
    ocl_forget_weights(c);
    pthread_mutex_unlock(&c->lock);
}

int mg_opencl_test_build(mg_backend *be, const char *source)
{
    if (!mg_backend_is_opencl(be)) return mg_seterr(MG_ERR_INVALID_ARG, "not an OpenCL backend");
    ocl_ctx *c = octx(be);
    cl_program p = NULL;
    LOCK(c);
    int rc = ocl_build_source(c, source, "-cl-std=CL1.2", &p);
    if (p) clReleaseProgram(p);
    UNLOCK_RET(c, rc);
}

int mg_opencl_test_alloc(mg_backend *be, size_t bytes)
{
    if (!mg_backend_is_opencl(be)) return mg_seterr(MG_ERR_INVALID_ARG, "not an OpenCL backend");
    ocl_ctx *c = octx(be);
    int rc = ocl_check_size(c, bytes, "the test allocation");
    if (rc) return rc;
    cl_int e;
    LOCK(c);
    cl_mem m = clCreateBuffer(c->ctx, CL_MEM_READ_WRITE, bytes, NULL, &e);
    if (!m) UNLOCK_RET(c, ocl_fail(e, "clCreateBuffer (test)"));
    float z = 0.0f;
    e = clEnqueueFillBuffer(c->queue, m, &z, sizeof z, 0, bytes / 4 * 4, 0, NULL, NULL);
    if (e == CL_SUCCESS) e = clFinish(c->queue);
    clReleaseMemObject(m);
    rc = e == CL_SUCCESS ? MG_OK : ocl_fail(e, "filling the test allocation");
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
        rc = ocl_scratch(c, i, min_bytes, &m);
        if (rc == MG_OK)
            e = clEnqueueFillBuffer(c->queue, m, &nan_bits, sizeof nan_bits, 0,
                                    c->scratch_bytes[i] / 4 * 4, 0, NULL, NULL);
    }
    if (rc == MG_OK && e == CL_SUCCESS) e = clFinish(c->queue);
    if (rc == MG_OK && e != CL_SUCCESS) rc = ocl_fail(e, "filling the scratch buffers with NaN");
    UNLOCK_RET(c, rc);
}


/* opencl-stub.c - the OpenCL backend's entry points in a build without OpenCL: they say so
 * (configure found no CL/cl.h or ICD loader, or --disable-opencl was given). */
#include "config.h"

#include <stdio.h>

#include "backend-opencl.h"
#include "error.h"

#define NOT_BUILT                                                                          \
    "this build has no OpenCL backend (configure found no OpenCL headers and ICD loader, or " \
    "--disable-opencl was given; Debian: ocl-icd-opencl-dev opencl-c-headers, then "        \
    "./configure --enable-opencl)"

int mg_backend_opencl_new(int device, mg_backend **out)
{
    (void)device;
    *out = NULL;
    return mg_seterr(MG_ERR_UNSUPPORTED, "%s", NOT_BUILT);
}

int mg_opencl_list_devices(char *buf, size_t size)
{
    if (buf && size) snprintf(buf, size, "%s\n", NOT_BUILT);
    return mg_seterr(MG_ERR_UNSUPPORTED, "%s", NOT_BUILT);
}

int mg_backend_is_opencl(const mg_backend *be)
{
    (void)be;
    return 0;
}

const char *mg_opencl_cema_choice(mg_backend *be, mg_cema_algo algo, int L,
                                  const mg_cema_coeffs *cf)
{
    (void)be;
    (void)algo;
    (void)L;
    (void)cf;
    return NULL;
}

void mg_opencl_get_stats(mg_backend *be, mg_opencl_stats *st)
{
    (void)be;
    if (st) *st = (mg_opencl_stats){0};
}

void mg_opencl_forget_weights(mg_backend *be) { (void)be; }

int mg_opencl_test_build(mg_backend *be, const char *source)
{
    (void)be;
    (void)source;
    return mg_seterr(MG_ERR_UNSUPPORTED, "%s", NOT_BUILT);
}

int mg_opencl_test_alloc(mg_backend *be, size_t bytes)
{
    (void)be;
    (void)bytes;
    return mg_seterr(MG_ERR_UNSUPPORTED, "%s", NOT_BUILT);
}

int mg_opencl_test_poison(mg_backend *be, size_t min_bytes)
{
    (void)be;
    (void)min_bytes;
    return mg_seterr(MG_ERR_UNSUPPORTED, "%s", NOT_BUILT);
}

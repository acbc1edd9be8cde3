/* device.c - the OpenCL devices (the listing of all platforms' devices), the context and
 * queue of the one a backend runs on, and the program: the embedded kernels built once per
 * device and driver, through a binary cache on disk. */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ocl.h"
#include "opencl/kernels.cl.h"

#define OCL_KERNEL_NAME(id, name) #name,
const char *const ocl_kernel_names[K_COUNT] = {MG_OCL_KERNELS(OCL_KERNEL_NAME)};
#undef OCL_KERNEL_NAME

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

int ocl_fail(cl_int e, const char *what)
{
    if (is_oom(e))
        return mg_seterr(MG_ERR_NOMEM, "OpenCL: out of device memory in %s (%s, %d)", what,
                         cl_err_name(e), (int)e);
    return mg_seterr(MG_ERR_BACKEND, "OpenCL: %s failed: %s (%d)", what, cl_err_name(e), (int)e);
}

/* ---------------------------------------------------------------- devices */

/* All devices of all platforms, in order. 0 devices: *n = 0 and MG_OK (no platform is not an
 * error here; the callers say what it means). */
static int enum_devices(dev_ref *out, int *n)
{
    *n = 0;
    cl_uint np = 0;
    cl_int e = clGetPlatformIDs(0, NULL, &np);
    if (e == -1001 /* CL_PLATFORM_NOT_FOUND_KHR */ || (e == CL_SUCCESS && np == 0)) return MG_OK;
    if (e != CL_SUCCESS) return ocl_fail(e, "clGetPlatformIDs");
    cl_platform_id plats[16];
    if (np > 16) np = 16;
    CL_TRY(clGetPlatformIDs(np, plats, NULL), "clGetPlatformIDs");
    for (cl_uint p = 0; p < np; p++) {
        cl_uint nd = 0;
        cl_device_id devs[OCL_MAX_DEVICES];
        e = clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, OCL_MAX_DEVICES, devs, &nd);
        if (e == CL_DEVICE_NOT_FOUND) continue;
        if (e != CL_SUCCESS) return ocl_fail(e, "clGetDeviceIDs");
        if (nd > OCL_MAX_DEVICES) nd = OCL_MAX_DEVICES;
        for (cl_uint d = 0; d < nd && *n < OCL_MAX_DEVICES; d++) {
            out[*n].plat = plats[p];
            out[*n].dev = devs[d];
            (*n)++;
        }
    }
    return MG_OK;
}

void ocl_dev_str(cl_device_id d, cl_device_info what, char *buf, size_t size)
{
    buf[0] = '\0';
    if (clGetDeviceInfo(d, what, size, buf, NULL) != CL_SUCCESS) snprintf(buf, size, "?");
    buf[size - 1] = '\0';
}

int ocl_dev_has_ext(cl_device_id d, const char *ext)
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
    ocl_dev_str(r->dev, CL_DEVICE_NAME, dname, sizeof dname);
    ocl_dev_str(r->dev, CL_DRIVER_VERSION, drv, sizeof drv);
    clGetDeviceInfo(r->dev, CL_DEVICE_GLOBAL_MEM_SIZE, sizeof mem, &mem, NULL);
    clGetDeviceInfo(r->dev, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof cus, &cus, NULL);
    snprintf(buf, size, "%s / %s (%s, %u compute units, %.1f GiB, fp16 %s, fp64 %s, driver %s)",
             pname, dname, dev_type(r->dev), cus, mem / 1073741824.0,
             ocl_dev_has_ext(r->dev, "cl_khr_fp16") ? "yes" : "no",
             ocl_dev_has_ext(r->dev, "cl_khr_fp64") ? "yes" : "no", drv);
}

#define NO_PLATFORM                                                                        \
    "no OpenCL platform or device found (install an OpenCL driver: for CPUs the Debian "   \
    "package pocl-opencl-icd; clinfo lists what the ICD loader sees)"

int mg_opencl_list_devices(char *buf, size_t size)
{
    dev_ref devs[OCL_MAX_DEVICES];
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

int ocl_build_source(ocl_ctx *c, const char *src, const char *opts, cl_program *out)
{
    cl_int e;
    size_t len = strlen(src);
    cl_program p = clCreateProgramWithSource(c->ctx, 1, &src, &len, &e);
    if (!p) return ocl_fail(e, "clCreateProgramWithSource");
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
    ocl_dev_str(c->dev, CL_DEVICE_NAME, dname, sizeof dname);
    ocl_dev_str(c->dev, CL_DRIVER_VERSION, drv, sizeof drv);
    ocl_dev_str(c->dev, CL_DEVICE_VERSION, dver, sizeof dver);
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
        int rc = ocl_build_source(c, mg_opencl_source, opts, &c->prog);
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

/* ---------------------------------------------------------------- opening a device */

int ocl_find_device(int *device, dev_ref *r)
{
    if (*device < 0) {
        const char *env = getenv("MEGALODON_OPENCL_DEVICE");
        *device = 0;
        if (env && *env) {
            char *end;
            errno = 0;
            long v = strtol(env, &end, 10);
            if (end == env || *end || errno || v < 0 || v > INT_MAX)
                return mg_seterr(MG_ERR_INVALID_ARG,
                                 "MEGALODON_OPENCL_DEVICE=%s: expected a device index (0, 1, ...; "
                                 "megalodon-run --list-devices lists them)", env);
            *device = (int)v;
        }
    }
    dev_ref devs[OCL_MAX_DEVICES];
    int n;
    int rc = enum_devices(devs, &n);
    if (rc) return rc;
    if (n == 0) return mg_seterr(MG_ERR_UNSUPPORTED, "OpenCL backend: %s", NO_PLATFORM);
    if (*device >= n) {
        char list[1024] = "";
        for (int i = 0; i < n; i++) {
            char d[512];
            describe(&devs[i], d, sizeof d);
            size_t l = strlen(list);
            snprintf(list + l, sizeof list - l, "%s%d: %s", i ? "; " : "", i, d);
        }
        return mg_seterr(MG_ERR_INVALID_ARG, "OpenCL device %d does not exist (%d device%s: %s)",
                         *device, n, n == 1 ? "" : "s", list);
    }
    *r = devs[*device];
    return MG_OK;
}

int ocl_open(ocl_ctx *c, const dev_ref *r)
{
    cl_int e;
    c->dev = r->dev;
    cl_context_properties props[] = {CL_CONTEXT_PLATFORM, (cl_context_properties)r->plat, 0};
    c->ctx = clCreateContext(props, 1, &c->dev, NULL, NULL, &e);
    if (!c->ctx) return ocl_fail(e, "clCreateContext");
    c->queue = clCreateCommandQueue(c->ctx, c->dev, 0, &e);
    if (!c->queue) return ocl_fail(e, "clCreateCommandQueue");

    cl_ulong ma = 0, lm = 0;
    size_t mwg = 0;
    clGetDeviceInfo(c->dev, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof ma, &ma, NULL);
    clGetDeviceInfo(c->dev, CL_DEVICE_LOCAL_MEM_SIZE, sizeof lm, &lm, NULL);
    clGetDeviceInfo(c->dev, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof mwg, &mwg, NULL);
    c->max_alloc = ma ? (size_t)ma : (size_t)1 << 27;
    c->local_mem = lm ? (size_t)lm : 16384;
    c->wg = OCL_WG;
    while (c->wg > 1 && c->wg > mwg) c->wg >>= 1;
    if (mwg < 64)
        return mg_seterr(MG_ERR_UNSUPPORTED,
                         "OpenCL: device %s allows work-groups of %zu work-items; the kernels "
                         "need 64", c->name, mwg);
    return MG_OK;
}

int ocl_build(ocl_ctx *c, const dev_ref *r, const char *opts)
{
    cl_int e;
    int rc = build_program(c, r, opts);
    if (rc) return rc;
    for (int i = 0; i < K_COUNT; i++) {
        c->k[i] = clCreateKernel(c->prog, ocl_kernel_names[i], &e);
        if (!c->k[i]) {
            char what[96];
            snprintf(what, sizeof what, "clCreateKernel(%s)", ocl_kernel_names[i]);
            return ocl_fail(e, what);
        }
    }
    c->dummy = clCreateBuffer(c->ctx, CL_MEM_READ_WRITE, 64, NULL, &e);
    if (!c->dummy) return ocl_fail(e, "clCreateBuffer (the placeholder for absent buffers)");
    /* run the probe once: a device that builds but cannot run fails here, clearly */
    float one = 0.0f;
    size_t g = 1;
    karg args[] = {A_MEM(c->dummy)};
    if ((rc = ocl_launch(c, K_PROBE, 1, &g, NULL, args, 1))) return rc;
    CL_TRY(clEnqueueReadBuffer(c->queue, c->dummy, CL_TRUE, 0, 4, &one, 0, NULL, NULL),
           "running the probe kernel");
    if (one != 1.0f)
        return mg_seterr(MG_ERR_BACKEND, "OpenCL: device %s did not run the probe kernel",
                         c->name);
    return MG_OK;
}

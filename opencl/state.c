/* state.c - the resident streaming state of the OpenCL backend (lib/backend.h:
 * state_register, state_release, state_sync, state_changed, state_snapshot).
 *
 * The buffers of an mg_state that lib/state.c registers (backend.h, state_register): a
 * table by host address of their device copies, under the backend's lock like everything
 * else. A region's device copy holds its first `valid` bytes; for a CEMA h and a norm's
 * mean/var, the ops update the device copy only and set dev_newer (the host copy is stale
 * until state_sync); a chunk's keys/values are written by the host (attention.c, then
 * state_changed lowers `valid` to the first row written) and uploaded by ocl_attention
 * from `valid` on, so a decode step sends its new row only. Pointers that are not
 * registered (the tests' ad-hoc buffers, the trainer's) go the old way: uploaded and read
 * back by every op. docs/opencl.md, "How it fits the op table". */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "ocl.h"

#define ST_BUCKETS (sizeof ((ocl_ctx *)0)->st_tab / sizeof ((ocl_ctx *)0)->st_tab[0])

static size_t st_hash(const void *p)
{
    return (size_t)(((uint64_t)(uintptr_t)p * 0x9e3779b97f4a7c15ull) >> 40) % ST_BUCKETS;
}

sregion *ocl_state_find(ocl_ctx *c, const void *host)
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

void ocl_state_forget_all(ocl_ctx *c)
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
    int rc = ocl_check_size(c, r->bytes, "the streaming state (kept on the device)");
    if (rc) return rc;
    cl_int e;
    r->mem = clCreateBuffer(c->ctx, CL_MEM_READ_WRITE, r->bytes, NULL, &e);
    if (!r->mem) return ocl_fail(e, "clCreateBuffer (the streaming state kept on the device)");
    r->valid = 0;
    r->dev_newer = 0;
    return MG_OK;
}

/* The device buffer of an op's state input (`bytes` from host): the region's, with what
 * the device lacks uploaded, when host is a registered region (*rr set), else a scratch
 * slot with all of it uploaded (*rr NULL), as for any activation. */
int ocl_state_in(ocl_ctx *c, int slot, const void *host, size_t bytes, cl_mem *out,
                    sregion **rr)
{
    sregion *r = bytes ? ocl_state_find(c, host) : NULL;
    *rr = NULL;
    if (!r || bytes > r->bytes) return ocl_upload(c, slot, host, bytes, out);
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
int ocl_state_out(ocl_ctx *c, sregion *r, cl_mem src, void *host, size_t bytes)
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

int ocl_state_register(mg_backend *be, void *host, size_t bytes)
{
    ocl_ctx *c = octx(be);
    if (!host || !bytes) return MG_OK;
    sregion *n = calloc(1, sizeof *n);
    if (!n)
        return mg_seterr(MG_ERR_NOMEM, "OpenCL: out of memory for the table of the streaming "
                                       "state kept on the device");
    n->host = host;
    n->bytes = bytes;
    LOCK(c);
    sregion *old = ocl_state_find(c, host);
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

void ocl_state_release(mg_backend *be, const void *host)
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

int ocl_state_sync(mg_backend *be, void *host)
{
    ocl_ctx *c = octx(be);
    int rc = MG_OK;
    LOCK(c);
    sregion *r = ocl_state_find(c, host);
    if (r && r->dev_newer) {
        TRY_GOTO(st_read(c, r, 0, r->bytes), out);
        r->dev_newer = 0;
    }
out:
    UNLOCK_RET(c, rc);
}

void ocl_state_changed(mg_backend *be, const void *host, size_t off, size_t bytes)
{
    ocl_ctx *c = octx(be);
    LOCK(c);
    sregion *r = ocl_state_find(c, host);
    if (r && r->dev_newer) {
        /* a write of part of a region whose device copy is newer: the rest of the host copy
         * is stale; bring it back first (lib/ writes whole regions: this does not happen) */
        size_t end = off + bytes < r->bytes ? off + bytes : r->bytes;
        if ((off && st_read(c, r, 0, off)) ||
            (end < r->bytes && st_read(c, r, end, r->bytes - end))) {
            r->valid = 0; /* the device copy is unusable: the host's wins */
            fprintf(stderr, "megalodon: %s\n", mg_last_error());
        }
        r->dev_newer = 0;
    }
    if (r && off < r->valid) r->valid = off;
    pthread_mutex_unlock(&c->lock);
}

int ocl_state_snapshot(mg_backend *be, const void *host, int restore)
{
    ocl_ctx *c = octx(be);
    int rc = 0;
    LOCK(c);
    sregion *r = ocl_state_find(c, host);
    if (!restore) {
        if (!r || !r->mem || r->valid < r->bytes) {
            if (r) r->backup_ok = 0;
            goto out; /* the host copy is current: the caller copies it */
        }
        if (!r->backup) {
            cl_int e;
            r->backup = clCreateBuffer(c->ctx, CL_MEM_READ_WRITE, r->bytes, NULL, &e);
            if (!r->backup) {
                rc = ocl_fail(e, "clCreateBuffer (a backup of the streaming state)");
                goto out;
            }
        }
        cl_int e = clEnqueueCopyBuffer(c->queue, r->mem, r->backup, 0, 0, r->bytes, 0, NULL,
                                       NULL);
        if (e != CL_SUCCESS) {
            rc = ocl_fail(e, "backing up the streaming state on the device");
            goto out;
        }
        c->st_dev_bytes += r->bytes;
        r->backup_ok = 1;
        rc = 1;
    } else if (r && r->backup_ok) {
        cl_int e = clEnqueueCopyBuffer(c->queue, r->backup, r->mem, 0, 0, r->bytes, 0, NULL,
                                       NULL);
        if (e == CL_SUCCESS) e = clFinish(c->queue);
        if (e != CL_SUCCESS) {
            rc = ocl_fail(e, "restoring the streaming state on the device");
            goto out;
        }
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


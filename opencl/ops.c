/* ops.c - the OpenCL backend's elementwise ops, RoPE, norms and attention (lib/backend.h
 * says what each computes; the kernels are in elementwise.cl, norms.cl and attention.cl):
 * each uploads its activations, runs its kernels and reads the result back. */
#include "config.h"

#include <stdlib.h>

#include "ocl.h"

/* ---------------------------------------------------------------- elementwise ops */

static int ew2(mg_backend *be, int kid, const float *a, const float *b, float *y, size_t n)
{
    ocl_ctx *c = octx(be);
    if (n == 0) return MG_OK;
    int rc;
    cl_mem ba, bb, by;
    cl_ulong nn = n;
    if ((rc = ocl_fits(c, n, 4, "an elementwise op"))) return rc;
    LOCK(c);
    TRY_GOTO(ocl_upload(c, S_A, a, n * 4, &ba), out);
    TRY_GOTO(ocl_upload(c, S_B, b, n * 4, &bb), out);
    TRY_GOTO(ocl_scratch(c, S_C, n * 4, &by), out);
    {
        karg args[] = {A_MEM(ba), A_MEM(bb), A_MEM(by), {sizeof nn, &nn}};
        TRY_GOTO(ocl_launch1(c, kid, n, args, 4), out);
    }
    TRY_GOTO(ocl_download(c, by, y, n * 4), out);
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
    if ((rc = ocl_fits(c, n, 4, "an elementwise op"))) return rc;
    LOCK(c);
    TRY_GOTO(ocl_upload(c, S_A, x, n * 4, &bx), out);
    TRY_GOTO(ocl_scratch(c, S_C, n * 4, &by), out);
    if (a) {
        karg args[] = {A_MEM(bx), A_F(av), A_MEM(by), {sizeof nn, &nn}};
        TRY_GOTO(ocl_launch1(c, kid, n, args, 4), out);
    } else {
        karg args[] = {A_MEM(bx), A_MEM(by), {sizeof nn, &nn}};
        TRY_GOTO(ocl_launch1(c, kid, n, args, 3), out);
    }
    TRY_GOTO(ocl_download(c, by, y, n * 4), out);
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
    if ((rc = ocl_fits(c, n, 4, "affine_rows"))) return rc;
    LOCK(c);
    TRY_GOTO(ocl_upload(c, S_A, x, n * 4, &bx), out);
    TRY_GOTO(ocl_weight(c, s, (size_t)m, 0, &bs), out);
    TRY_GOTO(ocl_weight(c, t, (size_t)m, 0, &bt), out);
    TRY_GOTO(ocl_scratch(c, S_C, n * 4, &by), out);
    {
        karg args[] = {A_MEM(bx), {sizeof nn, &nn}, A_INT(m), A_MEM(bs), A_MEM(bt), A_INT(has_t),
                       A_MEM(by)};
        TRY_GOTO(ocl_launch1(c, K_AFFINE, n, args, 7), out);
    }
    TRY_GOTO(ocl_download(c, by, y, n * 4), out);
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
    TRY_GOTO(ocl_upload(c, S_A, x, n * 4, &bx), out);
    TRY_GOTO(ocl_weight(c, freqs, (size_t)dh / 2, 0, &bf), out);
    {
        karg args[] = {A_MEM(bx), A_INT(L), A_INT(H), A_INT(dh), A_INT(pos0), A_MEM(bf)};
        TRY_GOTO(ocl_launch1(c, K_ROPE, (size_t)L * H * (dh / 2), args, 6), out);
    }
    TRY_GOTO(ocl_download(c, bx, x, n * 4), out);
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
    TRY_GOTO(ocl_upload(c, S_A, x, rows * n * 4, &bx), out);
    TRY_GOTO(ocl_weight(c, w, (size_t)n, 0, &bw), out);
    TRY_GOTO(ocl_scratch(c, S_C, rows * n * 4, &by), out);
    {
        karg args[] = {A_MEM(bx), A_INT(n), A_MEM(bw), A_INT(has_w), A_F(eps), A_MEM(by),
                       A_LOCAL(c->wg * acc_size(c))};
        size_t g = rows * c->wg;
        TRY_GOTO(ocl_launch(c, K_RMS, 1, &g, &c->wg, args, 7), out);
    }
    TRY_GOTO(ocl_download(c, by, y, rows * n * 4), out);
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
    TRY_GOTO(ocl_upload(c, S_A, x, rows * n * 4, &bx), out);
    TRY_GOTO(ocl_weight(c, w, (size_t)n, 0, &bw), out);
    TRY_GOTO(ocl_weight(c, b, (size_t)n, 0, &bb), out);
    TRY_GOTO(ocl_scratch(c, S_C, rows * n * 4, &by), out);
    {
        karg args[] = {A_MEM(bx), A_INT(n), A_MEM(bw), A_INT(has_w), A_MEM(bb), A_INT(has_b),
                       A_F(eps), A_MEM(by), A_LOCAL(c->wg * acc_size(c))};
        size_t g = rows * c->wg;
        TRY_GOTO(ocl_launch(c, K_LN, 1, &g, &c->wg, args, 9), out);
    }
    TRY_GOTO(ocl_download(c, by, y, rows * n * 4), out);
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
    TRY_GOTO(ocl_upload(c, S_A, x, LD * 4, &bx), out);
    {
        /* resident only when both are (else both go the old way) */
        sregion *fm = ocl_state_find(c, mean), *fv = ocl_state_find(c, var);
        if (fm && fv && fm->bytes == (size_t)G * 4 && fv->bytes == (size_t)G * 4) {
            TRY_GOTO(ocl_state_in(c, S_B, mean, (size_t)G * 4, &bm0, &rm), out);
            TRY_GOTO(ocl_state_in(c, S_D, var, (size_t)G * 4, &bv0, &rv), out);
        } else {
            TRY_GOTO(ocl_upload(c, S_B, mean, (size_t)G * 4, &bm0), out);
            TRY_GOTO(ocl_upload(c, S_D, var, (size_t)G * 4, &bv0), out);
        }
    }
    TRY_GOTO(ocl_scratch(c, S_E, LG * as, &bgm), out);
    TRY_GOTO(ocl_scratch(c, S_F, LG * as, &bgv), out);
    TRY_GOTO(ocl_weight(c, w, (size_t)D, 0, &bw), out);
    TRY_GOTO(ocl_weight(c, b, (size_t)D, 0, &bb), out);
    TRY_GOTO(ocl_scratch(c, S_C, LD * 4, &by), out);
    {
        karg a1[] = {A_MEM(bx), A_INT(D), A_INT(G), A_MEM(bgm), A_MEM(bgv),
                     A_LOCAL(c->wg * as)};
        size_t g1 = LG * c->wg;
        TRY_GOTO(ocl_launch(c, K_TN_MOM, 1, &g1, &c->wg, a1, 6), out);
        /* the scan's group: large enough for long inputs, at most the device's limit */
        size_t ls = c->wg;
        const void *cnt = c->fp64 ? (const void *)&cnt_d : (const void *)&cnt_f;
        karg a2[] = {A_INT(L), A_INT(G), {as, cnt},
                     A_MEM(bm0), A_MEM(bv0), A_MEM(bgm), A_MEM(bgv), A_LOCAL(ls * 3 * as)};
        size_t g2 = (size_t)G * ls;
        TRY_GOTO(ocl_launch(c, K_TN_SCAN, 1, &g2, &ls, a2, 8), out);
        karg a3[] = {A_MEM(bx), A_INT(L), A_INT(D), A_INT(G), A_MEM(bgm), A_MEM(bgv), A_MEM(bw),
                     A_INT(has_w), A_MEM(bb), A_INT(has_b), A_F(eps), A_MEM(by)};
        TRY_GOTO(ocl_launch1(c, K_TN_APPLY, LD, a3, 12), out);
    }
    if (rm && rv) { /* the new statistics stay on the device: only y comes back */
        int last = L - 1;
        karg a4[] = {A_INT(G), A_INT(last), A_MEM(bgm), A_MEM(bgv), A_MEM(rm->mem),
                     A_MEM(rv->mem)};
        TRY_GOTO(ocl_launch1(c, K_TN_STORE, (size_t)G, a4, 6), out);
        rm->valid = rm->bytes;
        rm->dev_newer = 1;
        rv->valid = rv->bytes;
        rv->dev_newer = 1;
        TRY_GOTO(ocl_download(c, by, y, LD * 4), out);
        *count += L;
    } else {
        /* the new statistics: those after the last step */
        double tmp[2 * 1024];
        void *mv = (size_t)G <= 1024 ? (void *)tmp : malloc(2 * (size_t)G * as);
        if (!mv) {
            rc = mg_seterr(MG_ERR_NOMEM,
                           "OpenCL: out of memory for the timestep norm's statistics (G=%d)", G);
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
        if (e != CL_SUCCESS) rc = ocl_fail(e, "timestep norm (reading results)");
    }
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
    TRY_GOTO(ocl_upload(c, S_A, q, (size_t)L * H * dk * 4, &bq), out);
    sregion *rk, *rv; /* the chunk's keys/values kept on the device, or NULL */
    TRY_GOTO(ocl_state_in(c, S_B, k, (size_t)Lk * H * dk * 4, &bk, &rk), out);
    TRY_GOTO(ocl_state_in(c, S_D, v, (size_t)Lk * H * dv * 4, &bv, &rv), out);
    (void)rk;
    (void)rv;
    TRY_GOTO(ocl_scratch(c, S_C, (size_t)L * H * dv * 4, &bo), out);
    if (block) {
        karg args[] = {A_MEM(bq), A_MEM(bk), A_MEM(bv), A_INT(L), A_INT(Lk), A_INT(H),
                       A_INT(dk), A_INT(dv), A_MEM(bo), A_INT(QB), A_INT(TK),
                       A_LOCAL((size_t)QB * dk * 4), A_LOCAL((size_t)TK * dk * 4),
                       A_LOCAL((size_t)TK * dv * 4), A_LOCAL((size_t)QB * TK * 4),
                       A_LOCAL((size_t)QB * dv * 4), A_LOCAL((size_t)3 * QB * 4)};
        size_t g[2] = {(size_t)(L + QB - 1) / QB * c->wg, (size_t)H}, l[2] = {c->wg, 1};
        TRY_GOTO(ocl_launch(c, K_ATTN_BLOCK, 2, g, l, args, 17), out);
    } else {
        karg args[] = {A_MEM(bq), A_MEM(bk), A_MEM(bv), A_INT(L), A_INT(Lk), A_INT(H),
                       A_INT(dk), A_INT(dv), A_MEM(bo), A_LOCAL((size_t)dk * 4),
                       A_LOCAL((size_t)dv * 4), A_LOCAL(c->wg * 4), A_LOCAL(c->wg * 4)};
        size_t g[2] = {(size_t)L * c->wg, (size_t)H}, l[2] = {c->wg, 1};
        TRY_GOTO(ocl_launch(c, K_ATTN, 2, g, l, args, 13), out);
    }
    TRY_GOTO(ocl_download(c, bo, out, (size_t)L * H * dv * 4), out);
out:
    UNLOCK_RET(c, rc);
}

/* ---------------------------------------------------------------- the table */

void ocl_ops_fill(mg_backend *be)
{
    be->silu = ocl_silu;
    be->mul = ocl_mul;
    be->add = ocl_add;
    be->scale = ocl_scale;
    be->affine_rows = ocl_affine_rows;
    be->rope = ocl_rope;
    be->rms_norm = ocl_rms_norm;
    be->layer_norm = ocl_layer_norm;
    be->timestep_norm = ocl_timestep_norm;
    be->attention = ocl_attention;
}

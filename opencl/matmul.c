/* matmul.c - the OpenCL backend's matrix product y = x W^T (+ bias): its kernels (matmul.cl:
 * tiled, direct, and the gemv pair for M = 1; matmul-typed.cl: the same for f16, q8_0 and q4_0
 * weights in their own bytes), CLBlast's sgemm/sgemv when the build has it,
 * and the choice among them by measurement on the device. */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ocl.h" /* first: it sets the OpenCL version that CLBlast's header includes */
#include "gguf.h"
#include "quant.h"
#ifdef MG_HAVE_CLBLAST
#include <clblast_c.h>
#endif

const char *const ocl_gemm_names[GEMM_N] = {"tiled", "direct", "clblast"};

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
        if (st != CLBlastSuccess) {
            const int oom = st == CLBlastInsufficientMemoryTemp || st == -4;
            return mg_seterr(oom ? MG_ERR_NOMEM : MG_ERR_BACKEND,
                             "OpenCL: CLBlast %s failed (status %d%s)", M == 1 ? "sgemv" : "sgemm",
                             (int)st, oom ? ": out of device memory for its work buffers" : "");
        }
        return MG_OK;
    }
#else
    (void)gemv_mode;
#endif
    if (M == 1 && gemv_mode == GEMM_DIRECT) {
        karg args[] = {A_MEM(bx), A_INT(K), A_MEM(bw), A_INT(N), A_MEM(bb), A_INT(has_b),
                       A_MEM(by)};
        size_t g = (size_t)(N + 3) / 4;
        rc = ocl_launch(c, K_GEMV_DIRECT, 1, &g, NULL, args, 7);
    } else if (M == 1) {
        karg args[] = {A_MEM(bx), A_INT(K), A_MEM(bw), A_INT(N), A_MEM(bb), A_INT(has_b),
                       A_MEM(by), A_LOCAL(c->wg * sizeof(float))};
        size_t g = (size_t)N * c->wg;
        rc = ocl_launch(c, K_GEMV, 1, &g, &c->wg, args, 8);
    } else if (gemm == GEMM_TILED) {
        karg args[] = {A_MEM(bx), A_INT(M), A_INT(K), A_MEM(bw), A_INT(N), A_MEM(bb),
                       A_INT(has_b), A_MEM(by)};
        size_t g[2] = {(size_t)(N + 31) / 32 * 8, (size_t)(M + 31) / 32 * 8}, l[2] = {8, 8};
        rc = ocl_launch(c, K_MATMUL, 2, g, l, args, 8);
    } else {
        karg args[] = {A_MEM(bx), A_INT(M), A_INT(K), A_MEM(bw), A_INT(N), A_MEM(bb),
                       A_INT(has_b), A_MEM(by)};
        size_t g[2] = {(size_t)(N + 3) / 4, (size_t)(M + 3) / 4};
        rc = ocl_launch(c, K_MATMUL_DIRECT, 2, g, NULL, args, 8);
    }
    return rc;
}

/* y = x W^T (+ bias) with W of a native type (f16, q8_0, q4_0) in its own bytes (matmul-typed.cl):
 * mg_gemv_typed for M < 4 (the decode product; the 4-row blocks of the direct kernel would be
 * mostly padding), else the tiled kernel when it is the chosen one, the direct kernel
 * otherwise (also in place of CLBlast, which has no such types). */
static int run_typed(ocl_ctx *c, cl_mem bx, int M, int K, cl_mem bw, int wt, int row_bytes,
                     int N, cl_mem bb, int has_b, cl_mem by)
{
    karg args[] = {A_MEM(bx), A_INT(M), A_INT(K), A_MEM(bw), A_INT(wt), A_INT(row_bytes),
                   A_INT(N), A_MEM(bb), A_INT(has_b), A_MEM(by)};
    if (M < 4) {
        size_t g[2] = {(size_t)(N + 3) / 4, (size_t)M};
        return ocl_launch(c, K_GEMV_TYPED, 2, g, NULL, args, 10);
    }
    if (c->gemm == GEMM_TILED) {
        size_t g[2] = {(size_t)(N + 31) / 32 * 8, (size_t)(M + 31) / 32 * 8}, l[2] = {8, 8};
        return ocl_launch(c, K_MATMUL_TYPED, 2, g, l, args, 10);
    }
    size_t g[2] = {(size_t)(N + 3) / 4, (size_t)(M + 3) / 4};
    return ocl_launch(c, K_MATMUL_TYPED_DIRECT, 2, g, NULL, args, 10);
}

/* The weight's shape against the product's: its rows hold K values and there are N of them,
 * and a native type's rows are whole blocks. */
static int check_weight(const mg_weight *W, int K, int N)
{
    if (W->type == GGML_TYPE_F32) return MG_OK;
    const mg_type_info *ti = mg_type_info_of(W->type);
    if (!ti || W->cols != K || W->rows < N || K % (int)ti->blck != 0 ||
        W->row_bytes < mg_row_size(W->type, (uint64_t)K) || W->row_bytes > (size_t)INT32_MAX)
        return mg_seterr(MG_ERR_INVALID_ARG, "OpenCL matmul: a %s weight of %d x %d (rows of "
                         "%zu bytes) does not fit the product's N = %d, K = %d",
                         ti ? ti->name : "unknown", W->rows, W->cols, W->row_bytes, N, K);
    return MG_OK;
}

int ocl_matmul(mg_backend *be, const float *x, int M, int K, const mg_weight *W, int N,
               const float *bias, float *y)
{
    ocl_ctx *c = octx(be);
    if (M <= 0 || N <= 0) return MG_OK;
    int rc, has_b = bias != NULL;
    const int native = ocl_type_native(W->type);
    cl_mem bx, bw, bb, by;
    TRY(check_weight(W, K, N));
    LOCK(c);
    TRY_GOTO(ocl_upload(c, S_A, x, (size_t)M * K * 4, &bx), out);
    if (native) TRY_GOTO(ocl_weight_raw(c, W, N, &bw), out);
    else TRY_GOTO(ocl_weight_typed(c, W, N, c->f16w, &bw), out);
    TRY_GOTO(ocl_weight(c, bias, (size_t)N, 0, &bb), out);
    TRY_GOTO(ocl_scratch(c, S_C, (size_t)M * N * 4, &by), out);
    if (native)
        TRY_GOTO(run_typed(c, bx, M, K, bw, (int)W->type, (int)W->row_bytes, N, bb, has_b, by),
                 out);
    else
        TRY_GOTO(run_gemm(c, c->gemm, c->gemv_mode, bx, M, K, bw, N, bb, has_b, by), out);
    TRY_GOTO(ocl_download(c, by, y, (size_t)M * N * 4), out);
out:
    UNLOCK_RET(c, rc);
}

/* ---------------------------------------------------------------- choosing the kernels */

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

/* The fastest kernel of the product M x K x N (decode: the gemv kernels, given as gemv_mode),
 * every usable one's seconds in t[] (-1 for those not run); -1 when none ran. CLBlast must win
 * by 10%: it compiles its own kernels in every process. */
static int fastest(ocl_ctx *c, int decode, cl_mem bx, int M, int K, cl_mem bw, int N,
                   cl_mem by, double t[GEMM_N])
{
    int best = -1;
    for (int g = 0; g < GEMM_N; g++) {
        t[g] = -1;
#ifndef MG_HAVE_CLBLAST
        if (g == GEMM_CLBLAST) continue;
#endif
        if (g == GEMM_CLBLAST && c->f16w) continue;
        t[g] = decode ? time_gemm(c, GEMM_DIRECT, g, bx, M, K, bw, N, by)
                      : time_gemm(c, g, 0, bx, M, K, bw, N, by);
        double tg = g == GEMM_CLBLAST ? t[g] * 1.1 : t[g];
        if (t[g] > 0 && (best < 0 || tg < t[best])) best = g;
    }
    return best;
}

/* The matrix product kernels, by measurement on this device: the prefill shape 64 x 512 x 512
 * among tiled, direct and CLBlast, the decode shape 1 x 512 x 2048 between mg_gemv and
 * CLBlast's sgemv (CLBlast only when 10% faster: it builds its kernels again in every
 * process, which our binary cache cannot hold). The choice is kept beside the program
 * binary (same key: source, options, device, driver), so that it is measured once per
 * device. */
int ocl_choose_gemm(ocl_ctx *c)
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
                if (strcmp(g, ocl_gemm_names[i]) == 0) {
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
    const int best = fastest(c, 0, bx, M, K, bw, 512, by, t);
    const int bestv = fastest(c, 1, bx, 1, K, bw, N, by, tv);
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
            int ok = fprintf(f, "%s %s\n%s\n", ocl_gemm_names[c->gemm],
                             c->gemv_mode == GEMM_TILED ? "gemv" : ocl_gemm_names[c->gemv_mode],
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


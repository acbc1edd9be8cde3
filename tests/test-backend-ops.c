/* test-backend-ops - every inference op of the OpenCL backend against the CPU backend with the
 * scalar kernel table (the reference), in the manner of ggml's test-backend-ops: random
 * inputs of odd sizes, the error measured as the normalized mean squared error
 *     nmse(ref, got) = mse(ref, got) / mse(ref, 0) = sum (ref - got)^2 / sum ref^2
 * against a threshold per op (the table `thresholds` below). Then the backend's own
 * promises: weights uploaded once, the streaming state kept on the device (decode moves none
 * of it but the new key/value rows; sync, host writes, snapshots, release; the whole model's
 * save/load round trip, a failing mg_eval, window and reset against the CPU backend), the
 * program binary cached on disk, fp16 weight storage, CLBlast, and the bad cases (a device that does not exist, a kernel that does not build,
 * out of device memory, no such backend) give clear errors.
 *
 * Skips (77) when the build has no OpenCL or there is no OpenCL platform, unless
 * MG_REQUIRE_OPENCL=1 (CI, which installs PoCL), where that is a failure. The speed of these
 * ops is measured by tests/opencl-timing.c. */
#include "config.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backend-opencl.h"
#include "backend.h"
#include "error.h"
#include "gguf.h"
#include "model.h"
#include "quant.h"
#include "test.h"

/* Under --enable-sanitizers: PoCL (CI's CPU OpenCL platform), the ICD loader and CLBlast keep
 * a few KB of their own at exit; LeakSanitizer reads this hook (opencl/lsan-pocl.supp holds
 * the same list for the programs run by tests/test-opencl.sh). */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
    return "leak:libpocl.so\nleak:libOpenCL.so\nleak:libclblast.so\n";
}

/* ---------------------------------------------------------------- thresholds (nmse) */

static const struct {
    const char *op;
    double max_nmse;
} thresholds[] = {
    /* elementwise: the same float operations; only exp and fma contraction may differ */
    {"silu", 1e-12}, {"mul", 1e-14}, {"add", 1e-14}, {"scale", 1e-14}, {"affine_rows", 1e-13},
    /* cos/sin of the device vs libm */
    {"rope", 1e-11},
    /* norms: the same moments in double, a different summation order */
    {"rms_norm", 1e-12}, {"layer_norm", 1e-12}, {"timestep_norm", 1e-11},
    {"timestep_norm.stats", 1e-11},
    /* fp32 products, another summation order (fma, tiles) */
    {"matmul", 1e-11},
    /* fp16 weight storage: each weight rounded to 11 bits (relative 2^-12 on average) */
    {"matmul.f16", 1e-6},
    {"matmul.clblast", 1e-11}, {"matmul.tiled", 1e-11}, {"matmul.direct", 1e-11},
    /* weights in their file type against x times the dequantized W in double: the device
     * dequantizes to the same floats as lib/quant.c, so only the fp32 accumulation differs
     * (nmse ~ eps^2 = 1e-14; a wrong nibble, scale or block offset gives > 1e-4) */
    {"matmul.type.f16", 1e-11}, {"matmul.type.q8_0", 1e-11}, {"matmul.type.q4_0", 1e-11},
    /* the types expanded to fp32 on the host at upload */
    {"matmul.type.bf16", 1e-11}, {"matmul.type.q4_K", 1e-11}, {"matmul.type.q6_K", 1e-11},
    /* online softmax in tiles vs the exact one */
    {"attention", 1e-11}, {"attention.query", 1e-11},
    /* chunked scan (blocks joined through q^B) vs the sequential recurrence */
    {"cema", 1e-10}, {"cema.state", 1e-10},
    /* CEMA by fp32 FFT vs the recurrence: the transforms' rounding, nmse ~ eps^2 log2 n
     * (measured <= 4e-14 up to n = 8192); the kernel's cut at |q|^j < 2^-40 adds ~1e-24.
     * The state: the recurrence over the last min(L, decay) rows, folded in double. A
     * wrong twiddle, pair split or block offset is far above it. */
    {"cema.fft", 1e-11}, {"cema.fft.state", 1e-11},
    /* norms with float accumulation (devices without fp64; MEGALODON_OPENCL_FP64=0) */
    {"rms_norm.f32", 1e-12}, {"layer_norm.f32", 1e-12}, {"timestep_norm.f32", 1e-10},
    {"timestep_norm.stats.f32", 1e-10},
};

static double threshold(const char *op)
{
    for (size_t i = 0; i < sizeof thresholds / sizeof thresholds[0]; i++)
        if (strcmp(thresholds[i].op, op) == 0) return thresholds[i].max_nmse;
    fprintf(stderr, "no threshold for op %s\n", op);
    exit(1);
}

/* worst nmse per op, for the summary */
#define MAX_OPS 32
static struct {
    char op[48];
    double worst;
    int n;
} worst[MAX_OPS];
static int n_worst;

static double nmse(const float *ref, const float *got, size_t n)
{
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)ref[i] - (double)got[i];
        if (!isfinite(got[i]) && isfinite(ref[i])) return INFINITY;
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    return den > 0 ? num / den : num;
}

static const char *op_suffix = ""; /* ".f32" while testing float accumulation */

static void check_op(const char *op_, const char *shape, const float *ref, const float *got,
                     size_t n)
{
    char op[48];
    snprintf(op, sizeof op, "%s%s", op_, op_suffix);
    double e = nmse(ref, got, n), t = threshold(op);
    int i;
    for (i = 0; i < n_worst && strcmp(worst[i].op, op) != 0; i++) {}
    if (i == n_worst && n_worst < MAX_OPS) {
        snprintf(worst[n_worst].op, sizeof worst[0].op, "%s", op);
        worst[n_worst++].worst = 0;
    }
    if (i < MAX_OPS) {
        if (e > worst[i].worst || isnan(e)) worst[i].worst = isnan(e) ? INFINITY : e;
        worst[i].n++;
    }
    CHECK(e <= t, "%s %s: nmse %.3g > %.3g", op, shape, e, t);
    if (getenv("MG_VERBOSE")) printf("  %-20s %-34s nmse %.3g\n", op, shape, e);
}

/* ---------------------------------------------------------------- random data */

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float frand(void) /* uniform in [-1, 1) */
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(rng >> 40) / (double)(1ull << 24) * 2.0 - 1.0);
}
static float *rnd(size_t n, float scale)
{
    float *x = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) x[i] = frand() * scale;
    return x;
}
static float *dup_f(const float *x, size_t n)
{
    float *y = malloc(sizeof(float) * (n ? n : 1));
    memcpy(y, x, sizeof(float) * n);
    return y;
}

static mg_backend *cpu, *ocl;

#define OK(call, what)                                                                     \
    do {                                                                                   \
        int rc_ = (call);                                                                  \
        CHECK(rc_ == MG_OK, "%s: %s", what, mg_last_error());                            \
    } while (0)

/* ---------------------------------------------------------------- the ops */

static void test_elementwise(void)
{
    const size_t sizes[] = {1, 7, 4099};
    for (size_t s = 0; s < 3; s++) {
        size_t n = sizes[s];
        char shape[64];
        snprintf(shape, sizeof shape, "n=%zu", n);
        float *a = rnd(n, 4.0f), *b = rnd(n, 2.0f), *r = rnd(n, 1), *g = rnd(n, 1);
        OK(cpu->silu(cpu, a, r, n), "cpu silu");
        OK(ocl->silu(ocl, a, g, n), "ocl silu");
        check_op("silu", shape, r, g, n);
        OK(cpu->mul(cpu, a, b, r, n), "cpu mul");
        OK(ocl->mul(ocl, a, b, g, n), "ocl mul");
        check_op("mul", shape, r, g, n);
        OK(cpu->add(cpu, a, b, r, n), "cpu add");
        OK(ocl->add(ocl, a, b, g, n), "ocl add");
        check_op("add", shape, r, g, n);
        OK(cpu->scale(cpu, a, 1.7f, r, n), "cpu scale");
        OK(ocl->scale(ocl, a, 1.7f, g, n), "ocl scale");
        check_op("scale", shape, r, g, n);
        /* in place, as the model calls it */
        float *ip = dup_f(a, n);
        OK(ocl->silu(ocl, ip, ip, n), "ocl silu in place");
        OK(cpu->silu(cpu, a, r, n), "cpu silu");
        check_op("silu", "in place", r, ip, n);
        free(ip);
        free(a); free(b); free(r); free(g);
    }
    const int rows[] = {1, 13}, ms[] = {37, 5};
    for (int i = 0; i < 2; i++)
        for (int with_t = 0; with_t < 2; with_t++) {
            size_t n = (size_t)rows[i] * ms[i];
            float *x = rnd(n, 3), *sc = rnd(ms[i], 1), *t = with_t ? rnd(ms[i], 1) : NULL;
            float *r = rnd(n, 1), *g = rnd(n, 1);
            char shape[64];
            snprintf(shape, sizeof shape, "rows=%d m=%d t=%d", rows[i], ms[i], with_t);
            OK(cpu->affine_rows(cpu, x, rows[i], ms[i], sc, t, r), "cpu affine");
            OK(ocl->affine_rows(ocl, x, rows[i], ms[i], sc, t, g), "ocl affine");
            check_op("affine_rows", shape, r, g, n);
            free(x); free(sc); free(t); free(r); free(g);
            mg_opencl_forget_weights(ocl); /* the next case may get the same addresses */
        }
}

static void test_rope(void)
{
    const int cases[][4] = {{1, 1, 2, 0}, {9, 3, 10, 5}, {33, 2, 64, 100}}; /* L H dh pos0 */
    for (int c = 0; c < 3; c++) {
        int L = cases[c][0], H = cases[c][1], dh = cases[c][2], pos0 = cases[c][3];
        size_t n = (size_t)L * H * dh;
        float *fr = malloc(sizeof(float) * dh / 2);
        for (int i = 0; i < dh / 2; i++) fr[i] = powf(10000.0f, -2.0f * i / dh);
        float *x = rnd(n, 2), *r = dup_f(x, n), *g = dup_f(x, n);
        OK(cpu->rope(cpu, r, L, H, dh, pos0, fr), "cpu rope");
        OK(ocl->rope(ocl, g, L, H, dh, pos0, fr), "ocl rope");
        char shape[64];
        snprintf(shape, sizeof shape, "L=%d H=%d dh=%d pos0=%d", L, H, dh, pos0);
        check_op("rope", shape, r, g, n);
        free(fr); free(x); free(r); free(g);
        mg_opencl_forget_weights(ocl);
    }
}

static void test_norms(void)
{
    const int cases[][2] = {{1, 1}, {5, 67}, {3, 1031}, {40, 16}}; /* rows n */
    for (int c = 0; c < 4; c++)
        for (int aff = 0; aff < 2; aff++) {
            int rows = cases[c][0], n = cases[c][1];
            size_t N = (size_t)rows * n;
            float *x = rnd(N, 3), *w = aff ? rnd(n, 0.5f) : NULL, *b = aff ? rnd(n, 0.5f) : NULL;
            for (size_t i = 0; i < N; i++) x[i] += 0.5f; /* a mean that matters */
            float *r = rnd(N, 1), *g = rnd(N, 1);
            char shape[64];
            snprintf(shape, sizeof shape, "rows=%d n=%d affine=%d", rows, n, aff);
            OK(cpu->rms_norm(cpu, x, rows, n, w, 1e-5f, r), "cpu rms");
            OK(ocl->rms_norm(ocl, x, rows, n, w, 1e-5f, g), "ocl rms");
            check_op("rms_norm", shape, r, g, N);
            OK(cpu->layer_norm(cpu, x, rows, n, w, b, 1e-5f, r), "cpu ln");
            OK(ocl->layer_norm(ocl, x, rows, n, w, b, 1e-5f, g), "ocl ln");
            check_op("layer_norm", shape, r, g, N);
            free(x); free(w); free(b); free(r); free(g);
            mg_opencl_forget_weights(ocl);
        }
}

/* Timestep norm over several calls (a stream): y, and the statistics after each call. */
static void test_timestep_norm(void)
{
    const int cases[][4] = {{48, 4, 0, 1}, {48, 4, 5, 7}, {30, 1, 2, 300}, {64, 8, 0, 1000}};
    for (int c = 0; c < 4; c++)
        for (int aff = 0; aff < 2; aff++) {
            const int D = cases[c][0], G = cases[c][1], L = cases[c][3];
            int64_t cnt_r = cases[c][2], cnt_g = cases[c][2];
            float *w = aff ? rnd(D, 0.5f) : NULL, *b = aff ? rnd(D, 0.5f) : NULL;
            float mr[8], vr[8], mg[8], vg[8];
            for (int g = 0; g < G; g++) {
                mr[g] = mg[g] = frand();
                vr[g] = vg[g] = 1.0f + frand() * 0.5f;
            }
            /* three calls of L, 1 and L/2+1 rows */
            const int lens[3] = {L, 1, L / 2 + 1};
            for (int call = 0; call < 3; call++) {
                const int Lc = lens[call];
                size_t n = (size_t)Lc * D;
                float *x = rnd(n, 2), *r = rnd(n, 1), *g = rnd(n, 1);
                for (int t = 0; t < Lc; t++) /* drifting statistics */
                    for (int k = 0; k < D; k++) x[(size_t)t * D + k] += 0.01f * t + (k % 3);
                OK(cpu->timestep_norm(cpu, x, Lc, D, G, w, b, 1e-5f, &cnt_r, mr, vr, r), "cpu tn");
                OK(ocl->timestep_norm(ocl, x, Lc, D, G, w, b, 1e-5f, &cnt_g, mg, vg, g), "ocl tn");
                char shape[80];
                snprintf(shape, sizeof shape, "D=%d G=%d L=%d call %d aff=%d", D, G, Lc, call, aff);
                check_op("timestep_norm", shape, r, g, n);
                check_op("timestep_norm.stats", shape, mr, mg, (size_t)G);
                check_op("timestep_norm.stats", shape, vr, vg, (size_t)G);
                CHECK(cnt_r == cnt_g, "timestep_norm %s: count %lld vs %lld", shape,
                      (long long)cnt_r, (long long)cnt_g);
                free(x); free(r); free(g);
            }
            free(w); free(b);
            mg_opencl_forget_weights(ocl);
        }
}

/* NaN into every scratch buffer of the backend before an op: CLBlast once read its
 * output with beta = 0 and let such a NaN through (a flaky failure under load). */
static void poison(void)
{
    OK(mg_opencl_test_poison(ocl, (size_t)1 << 20), "filling the scratch buffers with NaN");
}

static void run_matmuls(const char *op, double *worst_out)
{
    const int cases[][3] = {{1, 67, 33}, {1, 512, 1000}, {5, 67, 33}, {37, 129, 65},
                            {64, 256, 96}, {130, 33, 257}, {2, 1, 3}}; /* M K N */
    (void)worst_out;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int bias = 0; bias < 2; bias++) {
            int M = cases[c][0], K = cases[c][1], N = cases[c][2];
            float *x = rnd((size_t)M * K, 1), *W = rnd((size_t)N * K, 0.2f);
            float *bb = bias ? rnd(N, 1) : NULL;
            float *r = rnd((size_t)M * N, 1), *g = rnd((size_t)M * N, 1);
            mg_weight Wt = mg_weight_of_f32(W, N, K);
            OK(cpu->matmul(cpu, x, M, K, &Wt, N, bb, r), "cpu matmul");
            poison(); /* a kernel must not read the output it is about to write */
            OK(ocl->matmul(ocl, x, M, K, &Wt, N, bb, g), "ocl matmul");
            char shape[64];
            snprintf(shape, sizeof shape, "M=%d K=%d N=%d bias=%d", M, K, N, bias);
            check_op(op, shape, r, g, (size_t)M * N);
            free(x); free(W); free(bb); free(r); free(g);
            mg_opencl_forget_weights(ocl);
        }
}

/* ---------------------------------------------------------------- weights in their type */

/* y = x W^T (+ bias) in double, W the dequantized weight (the reference of the typed products). */
static void matmul_ref(const float *x, int M, int K, const float *W, int N, const float *b,
                       float *y)
{
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double s = b ? b[n] : 0.0;
            for (int k = 0; k < K; k++) s += (double)x[(size_t)m * K + k] * W[(size_t)n * K + k];
            y[(size_t)m * N + n] = (float)s;
        }
}

/* The product with a weight of `type` (random, quantized by lib/quant.c's reference
 * quantizers) against the reference at odd shapes, with and without bias; the weight is
 * uploaded once, and takes on the device the type's bytes (f16, q8_0, q4_0: they run in
 * their own bytes) or fp32 (the types expanded on the host; fp16 with f16w). */
static void run_typed_matmuls(uint32_t type)
{
    const int cases[][3] = {{1, 32, 1}, {1, 544, 257}, {1, 96, 33}, {2, 96, 33},
                            {2, 544, 257}, {5, 32, 257}, {5, 544, 1}, {37, 544, 33},
                            {37, 32, 257}, {130, 96, 1}, {130, 544, 257}, {1, 256, 33},
                            {5, 512, 257}, {37, 256, 1}}; /* M K N */
    const mg_type_info *ti = mg_type_info_of(type);
    const int native = type == GGML_TYPE_F16 || type == GGML_TYPE_Q8_0 ||
                       type == GGML_TYPE_Q4_0;
    mg_opencl_stats st;
    mg_opencl_get_stats(ocl, &st);
    char op[48];
    snprintf(op, sizeof op, "matmul.type.%s", ti->name);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int bias = 0; bias < 2; bias++) {
            int M = cases[c][0], K = cases[c][1], N = cases[c][2];
            if (K % (int)ti->blck) continue;
            const size_t rb = mg_row_size(type, (uint64_t)K);
            float *x = rnd((size_t)M * K, 1), *W = rnd((size_t)N * K, 0.2f);
            float *bb = bias ? rnd(N, 1) : NULL;
            float *r = rnd((size_t)M * N, 1), *g = rnd((size_t)M * N, 1), *g2 = rnd((size_t)M * N, 1);
            unsigned char *q = malloc(rb * N);
            for (int n = 0; n < N; n++) {
                OK(mg_quantize_row(type, W + (size_t)n * K, q + rb * n, (size_t)K), "quantize");
                OK(mg_dequantize_row(type, q + rb * n, W + (size_t)n * K, (size_t)K), "dequantize");
            }
            mg_weight Wt = {q, type, N, K, rb};
            matmul_ref(x, M, K, W, N, bb, r);
            mg_opencl_stats s0, s1, s2;
            mg_opencl_get_stats(ocl, &s0);
            poison();
            OK(ocl->matmul(ocl, x, M, K, &Wt, N, bb, g), "ocl typed matmul");
            mg_opencl_get_stats(ocl, &s1);
            OK(ocl->matmul(ocl, x, M, K, &Wt, N, bb, g2), "ocl typed matmul again");
            mg_opencl_get_stats(ocl, &s2);
            char shape[64];
            snprintf(shape, sizeof shape, "M=%d K=%d N=%d bias=%d", M, K, N, bias);
            check_op(op, shape, r, g, (size_t)M * N);
            CHECK(memcmp(g, g2, sizeof(float) * M * N) == 0, "%s %s: the second call differs",
                  op, shape);
            CHECK(s1.weight_uploads - s0.weight_uploads == 1 + bias &&
                  s2.weight_uploads == s1.weight_uploads,
                  "%s %s: %ld weights uploaded by the first call, %ld by the second", op, shape,
                  s1.weight_uploads - s0.weight_uploads, s2.weight_uploads - s1.weight_uploads);
            size_t want = native ? rb * N : (size_t)N * K * (st.fp16_weights ? 2 : 4);
            want += bias ? (size_t)N * 4 : 0;
            CHECK(s1.weight_bytes - s0.weight_bytes == want && s2.weight_bytes == s1.weight_bytes,
                  "%s %s: the weights take %zu bytes on the device, not %zu", op, shape,
                  s1.weight_bytes - s0.weight_bytes, want);
            free(x); free(W); free(bb); free(r); free(g); free(g2); free(q);
            mg_opencl_forget_weights(ocl);
        }
}

/* The native types on the current backend: a shape the weight does not have is refused. */
static void run_native_matmuls(void)
{
    const uint32_t types[] = {GGML_TYPE_F16, GGML_TYPE_Q8_0, GGML_TYPE_Q4_0};
    for (int i = 0; i < 3; i++) run_typed_matmuls(types[i]);
    float x[40] = {0}, y[2];
    mg_block_q8_0 blk[2] = {{0}};
    mg_weight Wt = {blk, GGML_TYPE_Q8_0, 2, 32, sizeof blk[0]};
    int rc = ocl->matmul(ocl, x, 1, 40, &Wt, 2, NULL, y);
    CHECK(rc == MG_ERR_INVALID_ARG && strstr(mg_last_error(), "q8_0"),
          "a q8_0 weight of 32 columns in a product of K = 40: rc %d (%s)", rc, mg_last_error());
}

static void test_attention(void)
{
    const int cases[][5] = {{1, 1, 2, 8, 6},     {1, 70, 2, 16, 8},    {17, 17, 3, 8, 12},
                            {9, 40, 2, 16, 16},  {130, 130, 2, 10, 6}, {3, 200, 1, 32, 32},
                            {2, 2, 1, 4, 4},     {100, 237, 2, 24, 40}, {65, 65, 1, 128, 96}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int L = cases[c][0], Lk = cases[c][1], H = cases[c][2], dk = cases[c][3], dv = cases[c][4];
        float *q = rnd((size_t)L * H * dk, 1.5f), *k = rnd((size_t)Lk * H * dk, 1.5f);
        float *v = rnd((size_t)Lk * H * dv, 1);
        size_t n = (size_t)L * H * dv;
        float *r = rnd(n, 1), *g = rnd(n, 1);
        OK(cpu->attention(cpu, q, k, v, L, Lk, H, dk, dv, r), "cpu attention");
        poison();
        OK(ocl->attention(ocl, q, k, v, L, Lk, H, dk, dv, g), "ocl attention");
        char shape[64];
        snprintf(shape, sizeof shape, "L=%d Lk=%d H=%d dk=%d dv=%d", L, Lk, H, dk, dv);
        check_op("attention", shape, r, g, n);
        free(q); free(k); free(v); free(r); free(g);
    }
}

/* CEMA with random coefficients from the official parametrization, continuing a nonzero
 * state over several calls of different lengths, both algorithms on OpenCL against the CPU
 * recurrence. The FFT's cases cover an odd D (a channel without a partner in the last pair),
 * D = 1, odd N, one transform (L up to 1000 with the slow decay of the first cases: about a
 * thousand steps), overlap-save blocks (L = 5000 there; every L > 64 with the fast decay of
 * the last case, |q| <= ~0.2), and decode (L = 1, which runs the recurrence). Then the
 * choice (mg_opencl_cema_choice), and MEGALODON_CEMA=fft overriding the caller. */
static void test_cema(void)
{
    const int cases[][3] = {{19, 5, 0}, {8, 16, 0}, {1, 3, 0}, {21, 3, 4}}; /* D N shift */
    const int lens[] = {1, 7, 64, 65, 300, 1000, 5000, 1};
    for (int c = 0; c < 4; c++)
        for (int algo = 0; algo < 2; algo++) {
            const int D = cases[c][0], N = cases[c][1];
            float *alpha = rnd((size_t)D * N, 2), *delta = rnd((size_t)D * N, 2);
            for (int i = 0; i < D * N; i++) { /* shift > 0: sigmoids near 1, |q| small */
                alpha[i] += (float)cases[c][2];
                delta[i] += (float)cases[c][2];
            }
            float *theta = rnd(D, 2), *gamma = rnd((size_t)D * N * 2, 1), *omega = rnd(D, 1);
            mg_cema_coeffs cf;
            OK(mg_cema_coeffs_init(&cf, D, N, alpha, delta, theta, gamma, omega), "coeffs");
            float *hr = rnd((size_t)D * N * 2, 0.5f), *hg = dup_f(hr, (size_t)D * N * 2);
            const char *op = algo ? "cema.fft" : "cema";
            const char *ops = algo ? "cema.fft.state" : "cema.state";
            for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
                int L = lens[li];
                size_t n = (size_t)L * D;
                float *x = rnd(n, 1), *r = rnd(n, 1), *g = rnd(n, 1);
                OK(cpu->cema(cpu, MG_CEMA_SCAN, x, L, &cf, hr, r), "cpu cema");
                OK(ocl->cema(ocl, algo ? MG_CEMA_FFT : MG_CEMA_SCAN, x, L, &cf, hg, g), "ocl cema");
                char shape[64];
                snprintf(shape, sizeof shape, "D=%d N=%d L=%d%s %s", D, N, L,
                         cases[c][2] ? " fast" : "", algo ? "fft" : "scan");
                check_op(op, shape, r, g, n);
                check_op(ops, shape, hr, hg, (size_t)D * N * 2);
                free(x); free(r); free(g);
            }
            free(hr); free(hg);
            mg_cema_coeffs_free(&cf);
            free(alpha); free(delta); free(theta); free(gamma); free(omega);
            mg_opencl_forget_weights(ocl);
        }

    /* the choice: auto runs the FFT when L >= 4 decay (fast: |q| <= ~0.2, a decay of
     * ~20 steps; slow: up to ~0.98, ~1000 steps) */
    {
        const int D = 9, N = 4;
        mg_cema_coeffs fast, slow;
        float *a = rnd((size_t)D * N, 2), *dl = rnd((size_t)D * N, 2), *th = rnd(D, 2);
        float *gm = rnd((size_t)D * N * 2, 1), *om = rnd(D, 1);
        OK(mg_cema_coeffs_init(&slow, D, N, a, dl, th, gm, om), "coeffs");
        for (int i = 0; i < D * N; i++) a[i] += 4.0f, dl[i] += 4.0f;
        OK(mg_cema_coeffs_init(&fast, D, N, a, dl, th, gm, om), "coeffs");
        CHECK(!strcmp(mg_opencl_cema_choice(ocl, MG_CEMA_FFT, 300, &slow), "fft") &&
                  !strcmp(mg_opencl_cema_choice(ocl, MG_CEMA_FFT, 1, &slow), "scan-chunked") &&
                  !strcmp(mg_opencl_cema_choice(ocl, MG_CEMA_AUTO, 300, &slow), "scan-chunked") &&
                  !strcmp(mg_opencl_cema_choice(ocl, MG_CEMA_AUTO, 300, &fast), "fft") &&
                  !strcmp(mg_opencl_cema_choice(ocl, MG_CEMA_AUTO, 30, &fast), "scan-chunked") &&
                  !strcmp(mg_opencl_cema_choice(ocl, MG_CEMA_AUTO, 300, NULL), "scan-chunked") &&
                  !strcmp(mg_opencl_cema_choice(ocl, MG_CEMA_SCAN, 300, &fast), "scan-chunked") &&
                  mg_opencl_cema_choice(cpu, MG_CEMA_FFT, 300, &slow) == NULL,
              "mg_opencl_cema_choice");
        mg_cema_coeffs_free(&fast);
        mg_cema_coeffs_free(&slow);
        free(a); free(dl); free(th); free(gm); free(om);
        mg_opencl_forget_weights(ocl);
    }
    /* MEGALODON_CEMA=fft overrides the caller (read at creation) */
    setenv("MEGALODON_CEMA", "fft", 1);
    mg_backend *o2 = NULL;
    int rc = mg_backend_opencl_new(-1, &o2);
    unsetenv("MEGALODON_CEMA");
    CHECK(rc == MG_OK, "backend with MEGALODON_CEMA=fft: %s", mg_last_error());
    if (rc == MG_OK) {
        const int D = 9, N = 4, L = 300;
        float *a = rnd((size_t)D * N, 2), *dl = rnd((size_t)D * N, 2), *th = rnd(D, 2);
        float *gm = rnd((size_t)D * N * 2, 1), *om = rnd(D, 1), *x = rnd((size_t)L * D, 1);
        float *h1 = rnd((size_t)D * N * 2, 0.5f), *h2 = dup_f(h1, (size_t)D * N * 2);
        float *y1 = rnd((size_t)L * D, 1), *y2 = rnd((size_t)L * D, 1);
        mg_cema_coeffs cf;
        OK(mg_cema_coeffs_init(&cf, D, N, a, dl, th, gm, om), "coeffs");
        CHECK(!strcmp(mg_opencl_cema_choice(o2, MG_CEMA_SCAN, L, &cf), "fft") &&
                  !strcmp(mg_opencl_cema_choice(o2, MG_CEMA_AUTO, 1, &cf), "scan-chunked"),
              "MEGALODON_CEMA=fft: choice");
        OK(o2->cema(o2, MG_CEMA_SCAN, x, L, &cf, h1, y1), "cema, MEGALODON_CEMA=fft");
        OK(ocl->cema(ocl, MG_CEMA_FFT, x, L, &cf, h2, y2), "cema fft");
        CHECK(!memcmp(y1, y2, sizeof(float) * L * D) &&
                  !memcmp(h1, h2, sizeof(float) * D * N * 2),
              "MEGALODON_CEMA=fft did not override scan");
        mg_cema_coeffs_free(&cf);
        mg_opencl_forget_weights(ocl);
        free(a); free(dl); free(th); free(gm); free(om); free(x);
        free(h1); free(h2); free(y1); free(y2);
        o2->free(o2);
    }
    setenv("MEGALODON_CEMA", "bogus", 1);
    rc = mg_backend_opencl_new(-1, &o2);
    unsetenv("MEGALODON_CEMA");
    CHECK(rc == MG_ERR_INVALID_ARG && strstr(mg_last_error(), "MEGALODON_CEMA"),
          "MEGALODON_CEMA=bogus: rc %d", rc);
}

/* ---------------------------------------------------------------- the backend's promises */

static void test_weights_once(void)
{
    mg_opencl_forget_weights(ocl);
    mg_opencl_stats s0, s1, s2;
    mg_opencl_get_stats(ocl, &s0);
    float *x = rnd(3 * 40, 1), *W = rnd(50 * 40, 1), *b = rnd(50, 1), *y = rnd(3 * 50, 1);
    mg_weight Wt = mg_weight_of_f32(W, 50, 40);
    OK(ocl->matmul(ocl, x, 3, 40, &Wt, 50, b, y), "matmul 1");
    mg_opencl_get_stats(ocl, &s1);
    for (int i = 0; i < 5; i++) OK(ocl->matmul(ocl, x, 3, 40, &Wt, 50, b, y), "matmul again");
    mg_opencl_get_stats(ocl, &s2);
    CHECK(s1.weight_uploads - s0.weight_uploads == 2, "first matmul uploaded %ld weights, not 2",
          s1.weight_uploads - s0.weight_uploads);
    CHECK(s2.weight_uploads == s1.weight_uploads, "repeated matmuls uploaded %ld more weights",
          s2.weight_uploads - s1.weight_uploads);
    CHECK(s2.weight_hits - s1.weight_hits == 10, "%ld weight cache hits, not 10",
          s2.weight_hits - s1.weight_hits);
    free(x); free(W); free(b); free(y);
    mg_opencl_forget_weights(ocl);
}

static char cache[1024]; /* the tests' program cache, removed at exit */

static void remove_cache(void)
{
    char cmd[1100];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", cache);
    if (cache[0] && system(cmd) != 0) fprintf(stderr, "could not remove %s\n", cache);
}

static void test_program_cache(const char *dir)
{
    /* a fresh directory: the first backend builds and saves, the second loads the binary */
    setenv("MEGALODON_OPENCL_CACHE", dir, 1);
    mg_backend *a = NULL, *b = NULL;
    OK(mg_backend_opencl_new(-1, &a), "backend with a fresh cache");
    OK(mg_backend_opencl_new(-1, &b), "backend with the cache filled");
    mg_opencl_stats sa, sb;
    mg_opencl_get_stats(a, &sa);
    mg_opencl_get_stats(b, &sb);
    CHECK(a && !sa.program_from_cache, "the first backend claims a cached binary in an empty dir");
    CHECK(b && sb.program_from_cache, "the second backend did not load the cached binary");
    /* the binary still works: one op */
    if (b) {
        float x[5] = {1, -2, 3, -4, 5}, y[5], r[5];
        OK(b->silu(b, x, y, 5), "silu from the cached program");
        OK(cpu->silu(cpu, x, r, 5), "cpu silu");
        check_op("silu", "cached program", r, y, 5);
    }
    if (a) a->free(a);
    if (b) b->free(b);
    setenv("MEGALODON_OPENCL_CACHE", cache, 1); /* never the user's cache */
}

static void test_bad_cases(void)
{
    mg_backend *be = (mg_backend *)1;
    int rc = mg_backend_opencl_new(999, &be);
    CHECK(rc == MG_ERR_INVALID_ARG && be == NULL, "device 999: rc %d", rc);
    CHECK(strstr(mg_last_error(), "does not exist") != NULL, "device 999: message '%s'",
          mg_last_error());
    printf("  device 999: %s\n", mg_last_error());

    setenv("MEGALODON_OPENCL_DEVICE", "first", 1);
    rc = mg_backend_opencl_new(-1, &be);
    CHECK(rc == MG_ERR_INVALID_ARG && strstr(mg_last_error(), "MEGALODON_OPENCL_DEVICE"),
          "MEGALODON_OPENCL_DEVICE=first: rc %d, '%s'", rc, mg_last_error());
    unsetenv("MEGALODON_OPENCL_DEVICE");

    rc = mg_opencl_test_build(ocl, "__kernel void broken(__global float *x) { x[0] = nope; }");
    CHECK(rc == MG_ERR_BACKEND && strstr(mg_last_error(), "build log"),
          "a kernel that does not build: rc %d, '%s'", rc, mg_last_error());
    CHECK(strstr(mg_last_error(), "nope") != NULL, "the build log does not name the error: '%s'",
          mg_last_error());
    printf("  broken kernel: %.160s...\n", mg_last_error());

    rc = mg_opencl_test_alloc(ocl, (size_t)1 << 62);
    CHECK(rc == MG_ERR_NOMEM, "a 4 EiB buffer: rc %d, '%s'", rc, mg_last_error());
    printf("  4 EiB buffer: %s\n", mg_last_error());
    rc = mg_opencl_test_alloc(ocl, 1 << 20);
    CHECK(rc == MG_OK, "a 1 MiB buffer: %s", mg_last_error());

    /* an op too large for the device: an error, not a crash, and the backend still works */
    float small[4] = {0};
    rc = ocl->silu(ocl, small, small, (size_t)1 << 61);
    CHECK(rc == MG_ERR_NOMEM, "silu of 2^61 floats: rc %d, '%s'", rc, mg_last_error());
    float x[3] = {1, 2, 3}, y[3], r[3];
    OK(ocl->silu(ocl, x, y, 3), "silu after a failure");
    OK(cpu->silu(cpu, x, r, 3), "cpu silu");
    check_op("silu", "after a failure", r, y, 3);

    /* the training ops are not there (the trainer checks for NULL) */
    CHECK(ocl->matmul_backward == NULL && ocl->cema_backward == NULL &&
          ocl->cross_entropy == NULL, "the OpenCL backend claims training ops");
}

/* Model loading through the public parameters: opencl, a missing device, an unknown name. */
static void test_model_params(void)
{
    const char *dir = getenv("MG_GOLDEN_DIR");
    if (!dir) {
        printf("  (MG_GOLDEN_DIR not set: the model-level checks are skipped)\n");
        return;
    }
    char path[1024];
    snprintf(path, sizeof path, "%s/base.gguf", dir);
    mg_model_params mp = mg_model_default_params();
    CHECK(mp.backend == NULL && mp.device == -1, "default params: backend %s device %d",
          mp.backend ? mp.backend : "NULL", mp.device);
    mp.backend = "opencl";
    mg_model *m = NULL;
    int rc = mg_model_load(path, &mp, &m);
    CHECK(rc == MG_OK, "load on opencl: %s", mg_last_error());
    if (m) {
        CHECK(strncmp(mg_model_backend_name(m), "opencl/", 7) == 0, "backend name %s",
              mg_model_backend_name(m));
        mg_model_free(m);
    }
    mp.device = 4242;
    m = (mg_model *)1;
    rc = mg_model_load(path, &mp, &m);
    CHECK(rc == MG_ERR_INVALID_ARG && m == NULL, "device 4242: rc %d", rc);
    CHECK(strstr(mg_last_error(), "4242") != NULL, "device 4242: '%s'", mg_last_error());
    mp.backend = "cuda";
    mp.device = -1;
    rc = mg_model_load(path, &mp, &m);
    CHECK(rc == MG_ERR_INVALID_ARG && strstr(mg_last_error(), "cuda"), "backend cuda: rc %d '%s'",
          rc, mg_last_error());
    char buf[4096];
    int n = mg_backend_devices(buf, sizeof buf);
    CHECK(n >= 1 && strncmp(buf, "0: ", 3) == 0, "mg_backend_devices: %d, '%s'", n, buf);
}

/* ---------------------------------------------------------------- the resident streaming state
 * backend.h: state_register ... A state's buffers registered with the backend stay on the
 * device: decoding one token at a time through timestep_norm, cema and attention sends
 * nothing of the state but the new key/value row and reads nothing back; state_sync gives
 * the CPU reference's state; a host write announced with state_changed is used; a snapshot
 * restores; a region released and registered again at the same address does not see the
 * old device copy. */

static size_t st_up_of(mg_backend *be)
{
    mg_opencl_stats s;
    mg_opencl_get_stats(be, &s);
    return s.state_up_bytes;
}
static size_t st_down_of(mg_backend *be)
{
    mg_opencl_stats s;
    mg_opencl_get_stats(be, &s);
    return s.state_down_bytes;
}
#define st_up() st_up_of(ocl)
#define st_down() st_down_of(ocl)

static void test_resident_state(void)
{
    const int D = 24, N = 6, G = 4, H = 2, dk = 8, dv = 12, C = 16, T = 12;
    const size_t DN2 = (size_t)D * N * 2, KR = (size_t)H * dk, VR = (size_t)H * dv;
    float *alpha = rnd((size_t)D * N, 2), *delta = rnd((size_t)D * N, 2);
    float *theta = rnd(D, 2), *gamma = rnd(DN2, 1), *omega = rnd(D, 1);
    float *tw = rnd(D, 0.5f), *tb = rnd(D, 0.5f);
    mg_cema_coeffs cf;
    OK(mg_cema_coeffs_init(&cf, D, N, alpha, delta, theta, gamma, omega), "coeffs");
    /* the reference's state (plain buffers) and the device's (registered regions) */
    float *hr = rnd(DN2, 0.5f), *hg = dup_f(hr, DN2);
    float mr[4], vr[4], *mg = malloc(sizeof(float) * G), *vg = malloc(sizeof(float) * G);
    for (int g = 0; g < G; g++) {
        mr[g] = mg[g] = frand();
        vr[g] = vg[g] = 1.0f + 0.5f * frand();
    }
    int64_t cr = 3, cg = 3;
    float *kr = calloc((size_t)C * KR, sizeof(float)), *vr_ = calloc((size_t)C * VR, sizeof(float));
    float *kg = calloc((size_t)C * KR, sizeof(float)), *vg_ = calloc((size_t)C * VR, sizeof(float));
    CHECK(ocl->state_register && ocl->state_release && ocl->state_sync && ocl->state_changed &&
          ocl->state_snapshot, "the OpenCL backend has no state hooks");
    CHECK(!cpu->state_register && !cpu->state_sync, "the CPU backend has state hooks");
    if (!ocl->state_register) return;
    OK(ocl->state_register(ocl, hg, DN2 * 4), "register h");
    OK(ocl->state_register(ocl, mg, (size_t)G * 4), "register mean");
    OK(ocl->state_register(ocl, vg, (size_t)G * 4), "register var");
    OK(ocl->state_register(ocl, kg, (size_t)C * KR * 4), "register k");
    OK(ocl->state_register(ocl, vg_, (size_t)C * VR * 4), "register v");

    float *x = rnd(D, 1), *xt_r = rnd(D, 1), *xt_g = rnd(D, 1), *y_r = rnd(D, 1),
          *y_g = rnd(D, 1), *q = rnd(KR, 1), *o_r = rnd(VR, 1), *o_g = rnd(VR, 1);
    size_t up0 = 0, down0 = 0;
    for (int t = 0; t < T; t++) {
        for (int i = 0; i < D; i++) x[i] = frand() * 2 + 0.3f * (i % 3);
        OK(cpu->timestep_norm(cpu, x, 1, D, G, tw, tb, 1e-5f, &cr, mr, vr, xt_r), "cpu tn");
        OK(ocl->timestep_norm(ocl, x, 1, D, G, tw, tb, 1e-5f, &cg, mg, vg, xt_g), "ocl tn");
        check_op("timestep_norm", "resident decode", xt_r, xt_g, (size_t)D);
        CHECK(cr == cg, "resident timestep_norm: count %lld vs %lld", (long long)cr, (long long)cg);
        OK(cpu->cema(cpu, MG_CEMA_SCAN, xt_r, 1, &cf, hr, y_r), "cpu cema");
        OK(ocl->cema(ocl, MG_CEMA_SCAN, xt_r, 1, &cf, hg, y_g), "ocl cema");
        check_op("cema", "resident decode", y_r, y_g, (size_t)D);
        /* the new key/value row joins the chunk cache (as attention.c does) */
        for (size_t i = 0; i < KR; i++) kr[t * KR + i] = kg[t * KR + i] = frand();
        for (size_t i = 0; i < VR; i++) vr_[t * VR + i] = vg_[t * VR + i] = frand();
        ocl->state_changed(ocl, kg, t * KR * 4, KR * 4);
        ocl->state_changed(ocl, vg_, t * VR * 4, VR * 4);
        for (size_t i = 0; i < KR; i++) q[i] = frand();
        OK(cpu->attention(cpu, q, kr, vr_, 1, t + 1, H, dk, dv, o_r), "cpu attention");
        OK(ocl->attention(ocl, q, kg, vg_, 1, t + 1, H, dk, dv, o_g), "ocl attention");
        check_op("attention", "resident decode", o_r, o_g, VR);
        if (t == 1) { /* after the first uploads */
            up0 = st_up();
            down0 = st_down();
        }
    }
    size_t up = st_up() - up0, down = st_down() - down0, rows = (size_t)(T - 2);
    CHECK(down == 0, "resident decode: %zu bytes of state read back over %zu tokens", down, rows);
    CHECK(up == rows * (KR + VR) * 4,
          "resident decode: %zu bytes of state uploaded over %zu tokens, expected %zu (the new "
          "key/value rows only)", up, rows, rows * (KR + VR) * 4);
    /* the host copies are stale until synced */
    OK(ocl->state_sync(ocl, hg), "sync h");
    OK(ocl->state_sync(ocl, mg), "sync mean");
    OK(ocl->state_sync(ocl, vg), "sync var");
    check_op("cema.state", "resident, synced", hr, hg, DN2);
    check_op("timestep_norm.stats", "resident, synced", mr, mg, (size_t)G);
    check_op("timestep_norm.stats", "resident, synced", vr, vg, (size_t)G);
    size_t d1 = st_down();
    OK(ocl->state_sync(ocl, hg), "sync h again");
    CHECK(st_down() == d1, "a second sync read %zu bytes again", st_down() - d1);

    /* a host write, announced: the next op uses it */
    for (size_t i = 0; i < DN2; i++) hr[i] = hg[i] = 0.25f * frand();
    ocl->state_changed(ocl, hg, 0, DN2 * 4);
    for (int g = 0; g < G; g++) {
        mr[g] = mg[g] = frand();
        vr[g] = vg[g] = 2.0f + frand();
    }
    ocl->state_changed(ocl, mg, 0, (size_t)G * 4);
    ocl->state_changed(ocl, vg, 0, (size_t)G * 4);
    OK(cpu->timestep_norm(cpu, x, 1, D, G, tw, tb, 1e-5f, &cr, mr, vr, xt_r), "cpu tn");
    OK(ocl->timestep_norm(ocl, x, 1, D, G, tw, tb, 1e-5f, &cg, mg, vg, xt_g), "ocl tn");
    check_op("timestep_norm", "after a host write", xt_r, xt_g, (size_t)D);
    OK(cpu->cema(cpu, MG_CEMA_SCAN, x, 1, &cf, hr, y_r), "cpu cema");
    OK(ocl->cema(ocl, MG_CEMA_SCAN, x, 1, &cf, hg, y_g), "ocl cema");
    check_op("cema", "after a host write", y_r, y_g, (size_t)D);
    /* a host write of part of a region whose device copy is newer: the rest comes back */
    hr[0] = hg[0] = 0.5f;
    ocl->state_changed(ocl, hg, 0, 4);
    OK(cpu->cema(cpu, MG_CEMA_SCAN, x, 1, &cf, hr, y_r), "cpu cema");
    OK(ocl->cema(ocl, MG_CEMA_SCAN, x, 1, &cf, hg, y_g), "ocl cema");
    check_op("cema", "after a partial host write", y_r, y_g, (size_t)D);
    OK(ocl->state_sync(ocl, hg), "sync h");
    check_op("cema.state", "after a partial host write", hr, hg, DN2);
    /* a chunk cache rewritten from row 0 (a new chunk): the device's old rows are not used */
    for (int t = 0; t < 3; t++) {
        for (size_t i = 0; i < KR; i++) kr[t * KR + i] = kg[t * KR + i] = frand();
        for (size_t i = 0; i < VR; i++) vr_[t * VR + i] = vg_[t * VR + i] = frand();
    }
    ocl->state_changed(ocl, kg, 0, 3 * KR * 4);
    ocl->state_changed(ocl, vg_, 0, 3 * VR * 4);
    OK(cpu->attention(cpu, q, kr, vr_, 1, 3, H, dk, dv, o_r), "cpu attention");
    OK(ocl->attention(ocl, q, kg, vg_, 1, 3, H, dk, dv, o_g), "ocl attention");
    check_op("attention", "a new chunk", o_r, o_g, VR);

    /* snapshot on the device, an op, restore: the state before the op */
    float *before = dup_f(hr, DN2);
    int r1 = ocl->state_snapshot(ocl, hg, 0);
    CHECK(r1 == 1, "state_snapshot of a resident h: %d, expected 1", r1);
    OK(ocl->cema(ocl, MG_CEMA_SCAN, x, 1, &cf, hg, y_g), "ocl cema");
    r1 = ocl->state_snapshot(ocl, hg, 1);
    CHECK(r1 == 1, "state_snapshot restore: %d, expected 1", r1);
    OK(ocl->state_sync(ocl, hg), "sync h");
    check_op("cema.state", "restored from the device backup", before, hg, DN2);
    CHECK(ocl->state_snapshot(ocl, hg, 1) == 0, "a second restore without a backup");
    free(before);

    /* release, then a new region at the same address: the host's contents, not the old
     * device copy */
    ocl->state_release(ocl, hg);
    for (size_t i = 0; i < DN2; i++) hr[i] = hg[i] = 0.1f * frand();
    OK(ocl->state_register(ocl, hg, DN2 * 4), "register h again");
    OK(cpu->cema(cpu, MG_CEMA_SCAN, x, 1, &cf, hr, y_r), "cpu cema");
    OK(ocl->cema(ocl, MG_CEMA_SCAN, x, 1, &cf, hg, y_g), "ocl cema");
    check_op("cema", "a region registered again at a released address", y_r, y_g, (size_t)D);
    OK(ocl->state_sync(ocl, hg), "sync h");
    check_op("cema.state", "a region registered again", hr, hg, DN2);
    /* released: the pointer is an ordinary buffer again (uploaded, read back) */
    ocl->state_release(ocl, hg);
    ocl->state_release(ocl, kg);
    ocl->state_release(ocl, vg_);
    OK(cpu->cema(cpu, MG_CEMA_SCAN, x, 1, &cf, hr, y_r), "cpu cema");
    OK(ocl->cema(ocl, MG_CEMA_SCAN, x, 1, &cf, hg, y_g), "ocl cema");
    check_op("cema.state", "released: read back by the op", hr, hg, DN2);
    ocl->state_release(ocl, mg);
    ocl->state_release(ocl, vg);
    mg_opencl_stats s;
    mg_opencl_get_stats(ocl, &s);
    CHECK(s.state_regions == 0, "%ld regions left after releasing all", s.state_regions);

    free(x); free(xt_r); free(xt_g); free(y_r); free(y_g); free(q); free(o_r); free(o_g);
    free(hr); free(hg); free(mg); free(vg); free(kr); free(vr_); free(kg); free(vg_);
    free(alpha); free(delta); free(theta); free(gamma); free(omega); free(tw); free(tb);
    mg_cema_coeffs_free(&cf);
    mg_opencl_forget_weights(ocl);
}

/* The whole model on OpenCL with its state on the device, against the CPU backend (the
 * golden base model): decode reads no state back; save -> load -> continue equals the CPU's;
 * an mg_eval that fails half-way (an op made to fail after the first steps changed the
 * device's state) leaves the state as it was. */
static int (*real_matmul)(mg_backend *, const float *, int, int, const mg_weight *, int,
                          const float *, float *);
static long matmul_calls, matmul_fail_at = -1;
static int failing_matmul(mg_backend *be, const float *x, int M, int K, const mg_weight *W, int N,
                          const float *bias, float *y)
{
    if (matmul_calls++ == matmul_fail_at)
        return mg_seterr(MG_ERR_NOMEM, "injected failure (test-backend-ops)");
    return real_matmul(be, x, M, K, W, N, bias, y);
}

static double max_abs_diff(const float *a, const float *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= m)) m = d;
    }
    return m;
}

static void test_resident_model(void)
{
    const char *dir = getenv("MG_GOLDEN_DIR");
    if (!dir) {
        printf("  (MG_GOLDEN_DIR not set: the model-level state checks are skipped)\n");
        return;
    }
    char path[1024], f1[1200], f2[1200], f3[1200];
    snprintf(path, sizeof path, "%s/base.gguf", dir);
    snprintf(f1, sizeof f1, "%s/state-a.gguf", cache);
    snprintf(f2, sizeof f2, "%s/state-b.gguf", cache);
    snprintf(f3, sizeof f3, "%s/state-c.gguf", cache);
    mkdir(cache, 0700);
    mg_model_params mp = mg_model_default_params();
    mg_model *mc = NULL, *mo = NULL;
    mp.backend = "cpu";
    OK(mg_model_load(path, &mp, &mc), "load on cpu");
    mp.backend = "opencl";
    OK(mg_model_load(path, &mp, &mo), "load on opencl");
    if (!mc || !mo) return;
    const mg_hparams *hp = mg_model_hparams(mc);
    const int V = mg_model_n_vocab(mc), C = hp->chunk_size;
    mg_state *sc = NULL, *so = NULL, *so2 = NULL;
    OK(mg_state_new(mc, NULL, &sc), "state cpu");
    OK(mg_state_new(mo, NULL, &so), "state opencl");
    const int n_prompt = C + C / 2 + 1, n_dec = 10;
    int32_t *tok = malloc(sizeof(int32_t) * (n_prompt + 4 * C));
    for (int i = 0; i < n_prompt + 4 * C; i++) tok[i] = (int32_t)((i * 7919 + 13) % V);
    float *lc = malloc(sizeof(float) * V), *lo = malloc(sizeof(float) * V);
    double worst = 0;
    OK(mg_eval(sc, tok, n_prompt, lc, MG_LOGITS_LAST), "cpu prompt");
    OK(mg_eval(so, tok, n_prompt, lo, MG_LOGITS_LAST), "opencl prompt");
    worst = fmax(worst, max_abs_diff(lc, lo, V));
    size_t down0 = st_down_of(mo->be), up0 = st_up_of(mo->be);
    int p = n_prompt;
    for (int i = 0; i < n_dec; i++, p++) {
        OK(mg_eval(sc, tok + p, 1, lc, MG_LOGITS_LAST), "cpu decode");
        OK(mg_eval(so, tok + p, 1, lo, MG_LOGITS_LAST), "opencl decode");
        worst = fmax(worst, max_abs_diff(lc, lo, V));
    }
    size_t down = st_down_of(mo->be) - down0, up = st_up_of(mo->be) - up0;
    /* per token: nothing read back; uploaded: the new key/value row of every layer, plus
     * the whole cache at most once per chunk (its first rows, from the prompt's call) */
    size_t row = (size_t)(hp->z_dim + hp->value_dim) * 4 * hp->n_layer;
    CHECK(down == 0, "model decode: %zu bytes of state read back over %d tokens", down, n_dec);
    CHECK(up <= (size_t)n_dec * row + (size_t)C * row,
          "model decode: %zu bytes of state uploaded over %d tokens (a row is %zu)", up, n_dec,
          row);
    printf("  resident state: %d decode tokens moved %zu bytes of state up (%zu per token-row), "
           "%zu down\n", n_dec, up, row, down);

    /* save -> load -> continue, both backends */
    OK(mg_state_save(so, f1), "save opencl");
    OK(mg_state_new(mo, NULL, &so2), "state opencl 2");
    OK(mg_state_load(so2, f1), "load opencl");
    for (int i = 0; i < 5; i++, p++) {
        OK(mg_eval(sc, tok + p, 1, lc, MG_LOGITS_LAST), "cpu continue");
        OK(mg_eval(so2, tok + p, 1, lo, MG_LOGITS_LAST), "opencl continue after load");
        worst = fmax(worst, max_abs_diff(lc, lo, V));
    }
    OK(mg_eval(sc, tok + p, C + 3, lc, MG_LOGITS_LAST), "cpu continue, across a chunk");
    OK(mg_eval(so2, tok + p, C + 3, lo, MG_LOGITS_LAST), "opencl continue, across a chunk");
    worst = fmax(worst, max_abs_diff(lc, lo, V));
    p += C + 3;
    CHECK(worst < 1e-4, "resident state: logits differ from the CPU's by %.3g", worst);
    printf("  resident state: logits vs the CPU's, max abs diff %.3g\n", worst);
    /* the synced state equals the CPU's */
    OK(mg_state_sync(so2), "sync");
    double dh = 0, dm = 0;
    for (int il = 0; il < hp->n_layer; il++) {
        dh = fmax(dh, max_abs_diff(sc->layers[il].h, so2->layers[il].h,
                                   (size_t)hp->n_embd * hp->cema_ndim * 2));
        dm = fmax(dm, max_abs_diff(sc->layers[il].tnorm.mean, so2->layers[il].tnorm.mean,
                                   hp->norm_groups));
        dm = fmax(dm, max_abs_diff(sc->layers[il].tnorm.var, so2->layers[il].tnorm.var,
                                   hp->norm_groups));
    }
    dm = fmax(dm, max_abs_diff(sc->out_norm.mean, so2->out_norm.mean, hp->norm_groups));
    CHECK(dh < 1e-4 && dm < 1e-4, "synced state vs the CPU's: h %.3g, statistics %.3g", dh, dm);

    /* an mg_eval failing half-way: 2C + 5 tokens (several steps, across chunks) with the
     * matrix product made to fail after the first step */
    OK(mg_state_save(so2, f2), "save before the failing call");
    mg_backend *be = mo->be;
    real_matmul = be->matmul;
    be->matmul = failing_matmul;
    matmul_calls = 0;
    matmul_fail_at = -1;
    mg_state *probe = NULL;
    OK(mg_state_new(mo, NULL, &probe), "probe state");
    OK(mg_state_load(probe, f2), "probe load");
    OK(mg_eval(probe, tok, 2 * C + 5, NULL, MG_LOGITS_NONE), "probe eval");
    long n_calls = matmul_calls;
    mg_state_free(probe);
    for (int k = 0; k < 3; k++) {
        long at = k == 0 ? n_calls / 2 : k == 1 ? n_calls - 1 : n_calls * 3 / 4;
        matmul_calls = 0;
        matmul_fail_at = at;
        int rc = mg_eval(so2, tok, 2 * C + 5, NULL, MG_LOGITS_NONE);
        matmul_fail_at = -1;
        CHECK(rc == MG_ERR_NOMEM, "the failing mg_eval (matmul %ld of %ld): rc %d", at, n_calls,
              rc);
        OK(mg_state_save(so2, f3), "save after the failing call");
        long n2, n3;
        unsigned char *b2 = test_read_file(f2, &n2), *b3 = test_read_file(f3, &n3);
        CHECK(b2 && b3 && n2 == n3 && memcmp(b2, b3, (size_t)n2) == 0,
              "a failing mg_eval on OpenCL (matmul %ld of %ld) changed the state", at, n_calls);
        free(b2);
        free(b3);
    }
    be->matmul = real_matmul;
    /* and it continues as the CPU does */
    OK(mg_eval(sc, tok + p, 3, lc, MG_LOGITS_LAST), "cpu after");
    OK(mg_eval(so2, tok + p, 3, lo, MG_LOGITS_LAST), "opencl after the failed calls");
    double d = max_abs_diff(lc, lo, V);
    CHECK(d < 1e-4, "after the failed calls: logits differ from the CPU's by %.3g", d);
    p += 3;
    /* the statistics window (writes the statistics on the host, keeps h on the device) */
    OK(mg_state_window_norm_stats(sc, tok, C + 2), "cpu window");
    OK(mg_state_window_norm_stats(so2, tok, C + 2), "opencl window");
    OK(mg_eval(sc, tok + p, 2, lc, MG_LOGITS_LAST), "cpu after the window");
    OK(mg_eval(so2, tok + p, 2, lo, MG_LOGITS_LAST), "opencl after the window");
    d = max_abs_diff(lc, lo, V);
    CHECK(d < 1e-4, "after mg_state_window_norm_stats: logits differ from the CPU's by %.3g", d);
    /* a reset state on the device starts as a fresh one */
    mg_state_reset(so2);
    mg_state_reset(sc);
    OK(mg_eval(sc, tok, 5, lc, MG_LOGITS_LAST), "cpu after reset");
    OK(mg_eval(so2, tok, 5, lo, MG_LOGITS_LAST), "opencl after reset");
    d = max_abs_diff(lc, lo, V);
    CHECK(d < 1e-4, "after mg_state_reset: logits differ from the CPU's by %.3g", d);

    remove(f1);
    remove(f2);
    remove(f3);
    free(tok); free(lc); free(lo);
    mg_state_free(so2);
    mg_state_free(so);
    mg_state_free(sc);
    mg_model_free(mo);
    mg_model_free(mc);
}

/* ---------------------------------------------------------------- main */

int main(void)
{
    int require = getenv("MG_REQUIRE_OPENCL") && strcmp(getenv("MG_REQUIRE_OPENCL"), "1") == 0;
    /* the program cache of the tests lives in the build tree, not the user's cache */
    char cache2[1100];
    snprintf(cache, sizeof cache, "%s/test-opencl-cache.%ld",
             getenv("MG_TOP_BUILDDIR") ? getenv("MG_TOP_BUILDDIR") : ".", (long)getpid());
    snprintf(cache2, sizeof cache2, "%s/fresh", cache);
    setenv("MEGALODON_OPENCL_CACHE", cache, 1);
    atexit(remove_cache);

    if (mg_backend_cpu_new(1, "scalar", &cpu) != MG_OK) {
        fprintf(stderr, "CPU backend: %s\n", mg_last_error());
        return 1;
    }
    int rc = mg_backend_opencl_new(-1, &ocl);
    if (rc == MG_ERR_UNSUPPORTED) {
        if (require) {
            fprintf(stderr, "FAIL: MG_REQUIRE_OPENCL=1 but: %s\n", mg_last_error());
            return 1;
        }
        cpu->free(cpu);
        TEST_SKIP("%s", mg_last_error());
    }
    if (rc != MG_OK) {
        fprintf(stderr, "FAIL: the OpenCL backend: %s\n", mg_last_error());
        return 1;
    }
    mg_opencl_stats st;
    mg_opencl_get_stats(ocl, &st);
    printf("device: %s (accumulation in %s, weights %s)\nmatrix products: %s, decode %s (%s)\n",
           ocl->name, st.fp64 ? "double" : "float", st.fp16_weights ? "fp16" : "fp32", st.gemm,
           st.gemv, st.gemm_why);

    test_elementwise();
    test_rope();
    test_norms();
    test_timestep_norm();
    run_matmuls("matmul", NULL);
    run_native_matmuls();
    run_typed_matmuls(GGML_TYPE_BF16);
    run_typed_matmuls(GGML_TYPE_Q4_K);
    run_typed_matmuls(GGML_TYPE_Q6_K);
    test_attention();
    test_cema();
    test_weights_once();
    test_program_cache(cache2);
    test_bad_cases();
    test_model_params();
    test_resident_state();
    test_resident_model();
    /* MEGALODON_OPENCL_RESIDENT=0: no state hooks (every op copies the state in and out) */
    setenv("MEGALODON_OPENCL_RESIDENT", "0", 1);
    mg_backend *plain = NULL;
    OK(mg_backend_opencl_new(-1, &plain), "backend with MEGALODON_OPENCL_RESIDENT=0");
    if (plain) {
        CHECK(!plain->state_register && !plain->state_sync && !plain->state_snapshot,
              "MEGALODON_OPENCL_RESIDENT=0 still keeps the state on the device");
        plain->free(plain);
    }
    setenv("MEGALODON_OPENCL_RESIDENT", "sometimes", 1);
    plain = NULL;
    rc = mg_backend_opencl_new(-1, &plain);
    CHECK(rc == MG_ERR_INVALID_ARG && strstr(mg_last_error(), "MEGALODON_OPENCL_RESIDENT"),
          "MEGALODON_OPENCL_RESIDENT=sometimes: rc %d", rc);
    if (plain) plain->free(plain);
    unsetenv("MEGALODON_OPENCL_RESIDENT");

    /* fp16 weight storage (vload_half is core OpenCL, so any device can run it) */
    setenv("MEGALODON_OPENCL_F16", "1", 1);
    mg_backend *keep = ocl;
    if (mg_backend_opencl_new(-1, &ocl) == MG_OK) {
        mg_opencl_get_stats(ocl, &st);
        CHECK(st.fp16_weights, "MEGALODON_OPENCL_F16=1 did not store fp16 weights");
        run_matmuls("matmul.f16", NULL);
        run_native_matmuls(); /* still in their own bytes */
        ocl->free(ocl);
    } else {
        CHECK(0, "backend with MEGALODON_OPENCL_F16=1: %s", mg_last_error());
    }
    unsetenv("MEGALODON_OPENCL_F16");
    /* the per-query attention kernel (the default for L > 1 is the block kernel) */
    setenv("MEGALODON_OPENCL_ATTN", "query", 1);
    if (mg_backend_opencl_new(-1, &ocl) == MG_OK) {
        mg_opencl_get_stats(ocl, &st);
        CHECK(strcmp(st.attn, "query") == 0, "MEGALODON_OPENCL_ATTN=query gave %s", st.attn);
        op_suffix = ".query";
        test_attention();
        op_suffix = "";
        ocl->free(ocl);
    } else {
        CHECK(0, "backend with MEGALODON_OPENCL_ATTN=query: %s", mg_last_error());
    }
    setenv("MEGALODON_OPENCL_ATTN", "tiles", 1);
    rc = mg_backend_opencl_new(-1, &ocl);
    CHECK(rc == MG_ERR_INVALID_ARG && strstr(mg_last_error(), "MEGALODON_OPENCL_ATTN"),
          "MEGALODON_OPENCL_ATTN=tiles: rc %d", rc);
    unsetenv("MEGALODON_OPENCL_ATTN");

    /* float accumulation of the norms (what a device without fp64 runs) */
    setenv("MEGALODON_OPENCL_FP64", "0", 1);
    if (mg_backend_opencl_new(-1, &ocl) == MG_OK) {
        mg_opencl_get_stats(ocl, &st);
        CHECK(!st.fp64, "MEGALODON_OPENCL_FP64=0 still accumulates in double");
        op_suffix = ".f32";
        test_norms();
        test_timestep_norm();
        op_suffix = "";
        ocl->free(ocl);
    } else {
        CHECK(0, "backend with MEGALODON_OPENCL_FP64=0: %s", mg_last_error());
    }
    unsetenv("MEGALODON_OPENCL_FP64");

    /* every matrix product kernel, whichever the measurement chose */
    const char *gemms[] = {"tiled", "direct", "clblast"};
    for (int i = 0; i < 3; i++) {
#ifndef MG_HAVE_CLBLAST
        if (i == 2) {
            setenv("MEGALODON_OPENCL_GEMM", "clblast", 1);
            rc = mg_backend_opencl_new(-1, &ocl);
            CHECK(rc == MG_ERR_UNSUPPORTED, "MEGALODON_OPENCL_GEMM=clblast without CLBlast: %d", rc);
            continue;
        }
#endif
        char op[32];
        snprintf(op, sizeof op, "matmul.%s", gemms[i]);
        setenv("MEGALODON_OPENCL_GEMM", gemms[i], 1);
        if (mg_backend_opencl_new(-1, &ocl) == MG_OK) {
            mg_opencl_get_stats(ocl, &st);
            CHECK(strcmp(st.gemm, gemms[i]) == 0, "MEGALODON_OPENCL_GEMM=%s gave %s", gemms[i],
                  st.gemm);
            run_matmuls(op, NULL);
            run_native_matmuls(); /* tiled: mg_matmul_typed; else mg_matmul_typed_direct */
            ocl->free(ocl);
        } else {
            CHECK(0, "backend with MEGALODON_OPENCL_GEMM=%s: %s", gemms[i], mg_last_error());
        }
    }
    setenv("MEGALODON_OPENCL_GEMM", "fastest", 1);
    rc = mg_backend_opencl_new(-1, &ocl);
    CHECK(rc == MG_ERR_INVALID_ARG && strstr(mg_last_error(), "MEGALODON_OPENCL_GEMM"),
          "MEGALODON_OPENCL_GEMM=fastest: rc %d", rc);
    unsetenv("MEGALODON_OPENCL_GEMM");
    ocl = keep;

    printf("worst nmse per op (threshold):\n");
    for (int i = 0; i < n_worst; i++)
        printf("  %-20s %.3g (%.0e) over %d cases\n", worst[i].op, worst[i].worst,
               threshold(worst[i].op), worst[i].n);
    ocl->free(ocl);
    cpu->free(cpu);
    return test_finish("test-backend-ops"); /* remove_cache runs at exit */
}

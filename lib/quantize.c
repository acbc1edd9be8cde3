/* quantize.c - mg_model_quantize: a model file with its large matrices in another type.
 *
 * The input is mapped (gguf_open); the output goes through the GGUF writer's lazy tensors,
 * so each tensor is converted when the writer reaches it, into one buffer of its size: the
 * memory used stays near one tensor (plus one fp32 row per thread). The rows of a tensor are
 * converted in parallel (OpenMP); each row is independent, so the bytes do not depend on the
 * number of threads. docs/quantization.md describes the recipes and the fallback rule. */
#include "config.h"

#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "error.h"
#include "gguf.h"
#include "megalodon.h"
#include "quant.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* The tensor names of the large matrices (docs/model-format.md); blk.N.<suffix>. */
static const char *const layer_matrices[] = {
    "attn_z.weight", "attn_v.weight", "attn_r.weight", "attn_h1.weight", "attn_h2.weight",
    "ffn_up.weight", "ffn_gate.weight", "ffn_down.weight",
};

static const struct {
    mg_ftype ftype;
    const char *name;
    uint32_t type; /* the type of the large matrices (q4_k_m: most of them) */
} recipes[] = {
    {MG_FTYPE_F32, "f32", GGML_TYPE_F32},
    {MG_FTYPE_F16, "f16", GGML_TYPE_F16},
    {MG_FTYPE_BF16, "bf16", GGML_TYPE_BF16},
    {MG_FTYPE_Q8_0, "q8_0", GGML_TYPE_Q8_0},
    {MG_FTYPE_Q4_0, "q4_0", GGML_TYPE_Q4_0},
    {MG_FTYPE_Q4_K_M, "q4_k_m", GGML_TYPE_Q4_K},
};
#define N_RECIPES (sizeof recipes / sizeof recipes[0])

mg_quantize_params mg_quantize_default_params(void)
{
    mg_quantize_params p;
    memset(&p, 0, sizeof p);
    p.ftype = MG_FTYPE_Q4_K_M;
    return p;
}

int mg_ftype_from_name(const char *name, mg_ftype *out)
{
    for (size_t i = 0; name && i < N_RECIPES; i++)
        if (strcasecmp(recipes[i].name, name) == 0) {
            if (out) *out = recipes[i].ftype;
            return MG_OK;
        }
    return mg_seterr(MG_ERR_INVALID_ARG, "unknown quantization type '%s' (known: f32, f16,"
                     " bf16, q8_0, q4_0, q4_k_m)", name ? name : "(null)");
}

const char *mg_ftype_name(mg_ftype ftype)
{
    for (size_t i = 0; i < N_RECIPES; i++)
        if (recipes[i].ftype == ftype) return recipes[i].name;
    return NULL;
}

static uint32_t recipe_type(mg_ftype ftype)
{
    for (size_t i = 0; i < N_RECIPES; i++)
        if (recipes[i].ftype == ftype) return recipes[i].type;
    return GGML_TYPE_F32;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* Is the tensor one of the large matrices that take the recipe's type? */
static int is_matrix(const char *name, uint32_t n_dims)
{
    if (n_dims != 2) return 0;
    if (!strcmp(name, "token_embd.weight") || !strcmp(name, "output.weight")) return 1;
    if (strncmp(name, "blk.", 4) != 0 || !isdigit((unsigned char)name[4])) return 0;
    const char *s = name + 4; /* blk.N.<matrix> */
    while (isdigit((unsigned char)*s)) s++;
    if (*s++ != '.') return 0;
    for (size_t k = 0; k < sizeof layer_matrices / sizeof layer_matrices[0]; k++)
        if (!strcmp(s, layer_matrices[k])) return 1;
    return 0;
}

/* q4_k_m: the output head (the tied embedding when there is none), the value projection and
 * the FFN down projection take q6_K, the other matrices q4_K. */
static uint32_t wanted_type(const char *name, int tied, mg_ftype ftype)
{
    if (ftype != MG_FTYPE_Q4_K_M) return recipe_type(ftype);
    if (!strcmp(name, "output.weight") || (tied && !strcmp(name, "token_embd.weight")) ||
        ends_with(name, ".attn_v.weight") || ends_with(name, ".ffn_down.weight"))
        return GGML_TYPE_Q6_K;
    return GGML_TYPE_Q4_K;
}

int mg_recipe_tensor_type(mg_ftype ftype, const char *name, uint32_t n_dims,
                          const uint64_t *ne, int tied, uint32_t *type, uint32_t *wanted)
{
    if (!is_matrix(name, n_dims)) return 0;
    uint32_t want = wanted_type(name, tied, ftype);
    if (wanted) *wanted = want;
    if (type) *type = mg_type_fallback(want, ne[0]);
    return 1;
}

struct job;

/* One output tensor: the input tensor it comes from and the type it takes. */
struct plan {
    struct job *job;
    int64_t index;
    uint32_t type, wanted;
};

struct job {
    const gguf_file *in;
    const mg_quantize_params *p;
    int n_threads;
    int64_t count;
    struct plan *plans;
};

/* Rows [0, rows) of t converted to `type` into out: each row to fp32 (dequantized), then to
 * the type. A non-finite value is refused when the type has blocks (it cannot be stored). */
static int convert_rows(const gguf_tensor_info *t, uint32_t type, uint8_t *out, int nt)
{
    size_t ne0 = (size_t)t->ne[0];
    int64_t rows = (int64_t)(t->n_elements / ne0);
    size_t in_row = mg_row_size(t->type, ne0), out_row = mg_row_size(type, ne0);
    float *scratch = malloc(sizeof(float) * ne0 * (size_t)nt);
    if (!scratch)
        return mg_seterr(MG_ERR_NOMEM, "out of memory for %d rows of tensor '%s'", nt, t->name);
    int check = mg_type_is_quantized(type);
    int64_t bad = rows; /* the first row with a non-finite value */
#pragma omp parallel for num_threads(nt) schedule(static) reduction(min : bad)
    for (int64_t r = 0; r < rows; r++) {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        float *x = scratch + (size_t)tid * ne0;
        mg_dequantize_row(t->type, (const uint8_t *)t->data + (size_t)r * in_row, x, ne0);
        for (size_t j = 0; check && j < ne0; j++)
            if (!isfinite(x[j]) && r < bad) bad = r;
        mg_quantize_row(type, x, out + (size_t)r * out_row, ne0);
    }
    free(scratch);
    if (bad < rows)
        return mg_seterr(MG_ERR_MODEL, "tensor '%s': row %" PRId64 " holds a value that is not"
                         " finite (NaN or inf), which %s cannot store", t->name, bad,
                         mg_type_info_of(type)->name);
    return MG_OK;
}

/* The writer's fill function: the bytes of output tensor pl->index. */
static int fill_tensor(void *user, const char *name, void *buf, size_t n_bytes)
{
    const struct plan *pl = user;
    const struct job *job = pl->job;
    const gguf_tensor_info *t = gguf_tensor(job->in, pl->index);
    if (pl->type == t->type) memcpy(buf, t->data, n_bytes);
    else TRY(convert_rows(t, pl->type, buf, job->n_threads));
    if (job->p->progress) {
        mg_quantize_tensor info = {.name = name, .n_dims = (int)t->n_dims,
                                   .old_type = mg_type_info_of(t->type)->name,
                                   .new_type = mg_type_info_of(pl->type)->name,
                                   .wanted_type = mg_type_info_of(pl->wanted)->name,
                                   .n_elements = t->n_elements, .old_bytes = t->n_bytes,
                                   .new_bytes = n_bytes};
        for (int d = 0; d < 4; d++) info.ne[d] = (int64_t)t->ne[d];
        job->p->progress(pl->index, job->count, name, &info, job->p->progress_user);
    }
    return MG_OK;
}

/* Decide every tensor's type; refuse a quantized input unless allow_requantize or the
 * recipe is f32, which dequantizes every float tensor (f16, bf16 and the block types are
 * exact in f32, so nothing is lost). */
static int plan_tensors(struct job *job, const char *in_path)
{
    const int to_f32 = job->p->ftype == MG_FTYPE_F32;
    int tied = gguf_find_tensor(job->in, "output.weight") < 0;
    for (int64_t i = 0; i < job->count; i++) {
        const gguf_tensor_info *t = gguf_tensor(job->in, i);
        struct plan *pl = &job->plans[i];
        const mg_type_info *ti = mg_type_info_of(t->type);
        *pl = (struct plan){job, i, t->type, t->type};
        if (ti->blck > 1 && !to_f32 && !job->p->allow_requantize)
            return mg_seterr(MG_ERR_INVALID_ARG, "'%s' is already quantized (tensor '%s' is"
                             " %s): quantizing it again adds the errors of both; allow"
                             " requantizing to do it anyway", in_path, t->name, ti->name);
        if (!ti->is_float) continue; /* integer tensors (norm prior counts) as they are */
        if (to_f32)
            pl->type = pl->wanted = GGML_TYPE_F32;
        /* a large matrix takes the recipe's type; a small tensor that was quantized, f32 */
        else if (!mg_recipe_tensor_type(job->p->ftype, t->name, t->n_dims, t->ne, tied,
                                        &pl->type, &pl->wanted) && ti->blck > 1)
            pl->type = pl->wanted = GGML_TYPE_F32;
    }
    return MG_OK;
}

/* Every key of the input, then general.file_type and general.quantization_version (2, the
 * version of ggml's block layouts) as llama.cpp's quantizer sets them; then the tensors. */
static int build_writer(gguf_writer *w, const struct job *job)
{
    for (int64_t i = 0; i < gguf_n_kv(job->in); i++) TRY(gguf_copy_kv(w, job->in, i));
    TRY(gguf_set_u32(w, "general.file_type", (uint32_t)job->p->ftype));
    TRY(gguf_set_u32(w, "general.quantization_version", 2));
    for (int64_t i = 0; i < job->count; i++) {
        const gguf_tensor_info *t = gguf_tensor(job->in, i);
        TRY(gguf_add_tensor_lazy(w, t->name, job->plans[i].type, t->n_dims, t->ne, fill_tensor,
                                 &job->plans[i]));
    }
    return MG_OK;
}

int mg_model_quantize(const char *in_path, const char *out_path, const mg_quantize_params *params)
{
    mg_quantize_params p = params ? *params : mg_quantize_default_params();
    if (!in_path || !out_path)
        return mg_seterr(MG_ERR_INVALID_ARG, "mg_model_quantize: NULL path");
    if (!mg_ftype_name(p.ftype))
        return mg_seterr(MG_ERR_INVALID_ARG, "mg_model_quantize: unknown recipe %d",
                         (int)p.ftype);
    if (p.n_threads < 0)
        return mg_seterr(MG_ERR_INVALID_ARG, "mg_model_quantize: n_threads %d is negative",
                         p.n_threads);
    struct job job = {.p = &p, .n_threads = p.n_threads};
    if (job.n_threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        job.n_threads = n > 0 ? (int)n : 1;
    }
    gguf_file *in = NULL;
    gguf_writer *w = NULL;
    const char *arch = NULL;
    int rc = gguf_open(in_path, &in);
    if (rc) return rc; /* the message names the file */
    job.in = in;
    job.count = gguf_n_tensors(in);
    if (gguf_get_str(in, "general.architecture", &arch, NULL) != MG_OK ||
        strcmp(arch, "megalodon") != 0) {
        rc = mg_seterr(MG_ERR_MODEL, "'%s' is not a Megalodon model (general.architecture is"
                       " %s%s%s)", in_path, arch ? "'" : "", arch ? arch : "missing",
                       arch ? "'" : "");
        goto done;
    }
    job.plans = calloc(job.count ? (size_t)job.count : 1, sizeof *job.plans);
    w = gguf_writer_new();
    if (!job.plans || !w) {
        rc = mg_seterr(MG_ERR_NOMEM, "out of memory for quantizing '%s'", in_path);
        goto done;
    }
    TRY_GOTO(plan_tensors(&job, in_path), done);
    TRY_GOTO(build_writer(w, &job), done);
    rc = gguf_write_file(w, out_path);
done:
    gguf_writer_free(w);
    free(job.plans);
    gguf_close(in);
    return rc;
}

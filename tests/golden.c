/* golden.c - golden-case helpers shared by the model tests. */
#include "config.h"

#include "golden.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const golden_cases[] = {"base", "short", "exact", "heads2_swiglu", "share_scale",
                                    "rescale_noaffine", "f16", "bf16"};
const int golden_n_cases = (int)(sizeof golden_cases / sizeof golden_cases[0]);

static const char *golden_dir(void)
{
    const char *d = getenv("MG_GOLDEN_DIR");
    return d && *d ? d : "tests/golden";
}

int golden_open(const char *name, golden_case *gc)
{
    memset(gc, 0, sizeof *gc);
    snprintf(gc->name, sizeof gc->name, "%s", name);
    snprintf(gc->model_path, sizeof gc->model_path, "%s/%s.gguf", golden_dir(), name);
    char path[1100];
    snprintf(path, sizeof path, "%s/%s.expect.gguf", golden_dir(), name);
    int rc = gguf_open(path, &gc->expect);
    if (rc) {
        fprintf(stderr, "cannot open %s: %s\n", path, mg_last_error());
        return rc;
    }
    uint32_t L, n_kv;
    if ((rc = gguf_get_u32(gc->expect, "golden.n_tokens", &L)) ||
        (rc = gguf_get_u32(gc->expect, "golden.n_kv", &n_kv))) {
        fprintf(stderr, "%s: %s\n", path, mg_last_error());
        return rc;
    }
    gc->L = (int)L;
    gc->n_kv = (int)n_kv;
    int64_t i = gguf_find_tensor(gc->expect, "tokens");
    if (i < 0 || gguf_tensor(gc->expect, i)->type != GGML_TYPE_I32 ||
        gguf_tensor(gc->expect, i)->n_elements != L) {
        fprintf(stderr, "%s: bad or missing 'tokens'\n", path);
        return MG_ERR_FORMAT;
    }
    gc->tokens = gguf_tensor(gc->expect, i)->data;
    i = gguf_find_tensor(gc->expect, "logits");
    if (i < 0 || gguf_tensor(gc->expect, i)->ne[1] != L) {
        fprintf(stderr, "%s: bad or missing 'logits'\n", path);
        return MG_ERR_FORMAT;
    }
    gc->logits = gguf_tensor(gc->expect, i)->data;
    return MG_OK;
}

void golden_close(golden_case *gc)
{
    gguf_close(gc->expect);
    gc->expect = NULL;
}

const float *golden_f32(const golden_case *gc, const char *name, size_t n)
{
    int64_t i = gguf_find_tensor(gc->expect, name);
    if (i < 0) return NULL;
    const gguf_tensor_info *t = gguf_tensor(gc->expect, i);
    if (t->type != GGML_TYPE_F32 || t->n_elements != n) return NULL;
    return t->data;
}

int golden_i32(const golden_case *gc, const char *name, int32_t *v)
{
    int64_t i = gguf_find_tensor(gc->expect, name);
    if (i < 0) return -1;
    const gguf_tensor_info *t = gguf_tensor(gc->expect, i);
    if (t->type != GGML_TYPE_I32 || t->n_elements != 1) return -1;
    memcpy(v, t->data, 4);
    return 0;
}

int golden_trace_init(golden_trace *t, int L, int D, int n_layer)
{
    memset(t, 0, sizeof *t);
    t->L = L;
    t->D = D;
    t->n_layer = n_layer;
    size_t LD = (size_t)L * D;
    /* two blocks: the rows (embd, out_norm, attn_out, blk_out) and the counts (n_attn, n_blk) */
    t->embd = calloc(LD * (2 + 2 * (size_t)n_layer), sizeof(float));
    t->n_attn = calloc(2 * (size_t)n_layer, sizeof(int));
    if (!t->embd || !t->n_attn) return -1;
    t->out_norm = t->embd + LD;
    t->attn_out = t->out_norm + LD;
    t->blk_out = t->attn_out + LD * n_layer;
    t->n_blk = t->n_attn + n_layer;
    return 0;
}

void golden_trace_free(golden_trace *t)
{
    free(t->embd);
    free(t->n_attn);
}

static void append(float *dst, int *have, int cap, int D, const float *data, size_t rows)
{
    if (*have + (int)rows > cap) return; /* more rows than tokens: the comparison will fail */
    memcpy(dst + (size_t)*have * D, data, sizeof(float) * rows * D);
    *have += (int)rows;
}

void golden_trace_cb(void *user, const char *name, int layer, const float *data, size_t rows,
                     size_t cols)
{
    golden_trace *t = user;
    if ((int)cols != t->D) return;
    size_t LD = (size_t)t->L * t->D;
    if (strcmp(name, "embd") == 0)
        append(t->embd, &t->n_embd, t->L, t->D, data, rows);
    else if (strcmp(name, "output_norm") == 0)
        append(t->out_norm, &t->n_out_norm, t->L, t->D, data, rows);
    else if (strcmp(name, "blk.attn_out") == 0 && layer >= 0 && layer < t->n_layer)
        append(t->attn_out + LD * layer, &t->n_attn[layer], t->L, t->D, data, rows);
    else if (strcmp(name, "blk.out") == 0 && layer >= 0 && layer < t->n_layer)
        append(t->blk_out + LD * layer, &t->n_blk[layer], t->L, t->D, data, rows);
}

int golden_run(mg_state *st, const mg_model *m, const golden_case *gc, const int *pattern,
               float *logits)
{
    const size_t V = (size_t)mg_model_n_vocab(m);
    int done = 0, k = 0;
    while (done < gc->L) {
        if (pattern[k] == 0) k = 0;
        int n = pattern[k++];
        if (n > gc->L - done) n = gc->L - done;
        int rc = mg_eval(st, gc->tokens + done, (size_t)n, logits + (size_t)done * V, MG_LOGITS_ALL);
        if (rc) return rc;
        done += n;
    }
    return MG_OK;
}

/* golden.h - read the golden cases written by tests/reference/make_golden.py and run the
 * library against them. */
#ifndef MG_GOLDEN_H
#define MG_GOLDEN_H

#include <stddef.h>
#include <stdint.h>

#include "gguf.h"
#include "megalodon.h"

extern const char *const golden_cases[];
extern const int golden_n_cases;

typedef struct {
    char name[64];
    char model_path[1024];
    gguf_file *expect;
    int L, n_kv;
    const int32_t *tokens;
    const float *logits; /* L x V */
} golden_case;

/* Open tests/golden/NAME.expect.gguf (directory from $MG_GOLDEN_DIR). */
int golden_open(const char *name, golden_case *gc);
void golden_close(golden_case *gc);
/* Expected tensor `name` (n floats) or NULL if absent / wrong size. */
const float *golden_f32(const golden_case *gc, const char *name, size_t n);
int golden_i32(const golden_case *gc, const char *name, int32_t *v);

/* Intermediates collected through mg_eval's callback, concatenated over calls (two
 * allocations: the rows from embd, the counts from n_attn). */
typedef struct {
    int L, D, n_layer;
    float *embd, *out_norm, *attn_out, *blk_out; /* L*D, L*D, n_layer*L*D, n_layer*L*D */
    int n_embd, n_out_norm, *n_attn, *n_blk;     /* rows received so far */
} golden_trace;

int golden_trace_init(golden_trace *t, int L, int D, int n_layer);
void golden_trace_free(golden_trace *t);
void golden_trace_cb(void *user, const char *name, int layer, const float *data, size_t rows,
                     size_t cols);

/* Feed gc's tokens in calls of the sizes in `pattern` (cycled; 0-terminated), collecting all
 * logits (L x V) into `logits`. */
int golden_run(mg_state *st, const mg_model *m, const golden_case *gc, const int *pattern,
               float *logits);

#endif

/* train-config.c - megalodon-train: model presets and JSON configs.
 *
 * A JSON config is one flat object whose keys are the field names of mg_hparams; a key that
 * is not one of them, a value of the wrong type or out of range is an error naming the key.
 * n_vocab and n_output may be left out or 0: the vocabulary (--vocab, --vocab-size) gives
 * them. */
#include "config.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "train-cli.h"

typedef struct {
    const char *name;
    const char *about;
    int n_layer, n_embd, z_dim, value_dim, n_head, n_ff, cema_ndim, chunk_size, norm_groups;
    int swiglu, scale_emb, share_emb;
} preset;

/* docs/model.md §13 (mega.py:273-288) and small ones for CPU training */
static const preset presets[] = {
    {"tiny", "0.12M + embeddings; for tests", 2, 64, 32, 128, 1, 192, 8, 64, 8, 0, 0, 0},
    {"small", "3.6M + embeddings", 4, 256, 64, 512, 1, 768, 16, 256, 16,
     0, 0, 0},
    {"base", "28M + embeddings", 8, 512, 128, 1024, 1, 1536, 16, 512,
     32, 0, 0, 0},
    {"mega200M", "official (model.md §13)", 12, 1024, 256, 2048, 1, 2560, 16, 2048, 32, 0, 0, 0},
    {"mega1.3B", "official", 24, 2048, 512, 4096, 2, 4864, 16, 2048, 64, 0, 0, 0},
    {"mega1.3B_pg19", "official; swiglu, scale+share emb", 24, 2048, 512, 4096, 2, 3584,
     16, 2048, 64, 1, 1, 1},
    {"mega7.1B", "official", 32, 4096, 1024, 8192, 4, 11264, 16, 2048, 64, 0, 0, 0},
    {"mega7.3B", "official, swiglu", 32, 4096, 1024, 8192, 4, 8192, 16, 2048, 64, 1, 0, 0},
};
#define N_PRESETS (sizeof presets / sizeof presets[0])

/* A preset's hyper-parameters: its shape and flags, with norm_eps 1e-5, rope_base 10000 and
 * norm_affine; n_vocab and n_output 0 (the vocabulary gives them). */
static void preset_hparams(const preset *p, mg_hparams *hp)
{
    *hp = (mg_hparams){.n_layer = p->n_layer, .n_embd = p->n_embd, .z_dim = p->z_dim,
                       .value_dim = p->value_dim, .n_head = p->n_head, .n_ff = p->n_ff,
                       .cema_ndim = p->cema_ndim, .chunk_size = p->chunk_size,
                       .norm_groups = p->norm_groups, .swiglu = p->swiglu,
                       .scale_emb = p->scale_emb, .share_emb = p->share_emb,
                       .norm_eps = 1e-5f, .rope_base = 10000.0f, .norm_affine = 1};
}

int tr_preset(const char *name, mg_hparams *hp)
{
    for (size_t i = 0; i < N_PRESETS; i++)
        if (strcmp(presets[i].name, name) == 0) {
            preset_hparams(&presets[i], hp);
            return 0;
        }
    return -1;
}

const char *tr_preset_names(void)
{
    return "tiny, small, base, mega200M, mega1.3B, mega1.3B_pg19, mega7.1B, mega7.3B";
}

void tr_print_presets(int indent)
{
    printf("%*s%-14s%6s %5s %5s %5s %2s %5s %3s %5s %3s\n", indent, "", "name", "layers",
           "D", "Z", "E", "H", "F", "N", "C", "G");
    for (size_t i = 0; i < N_PRESETS; i++) {
        const preset *p = &presets[i];
        printf("%*s%-14s%6d %5d %5d %5d %2d %5d %3d %5d %3d  %s\n", indent, "", p->name,
               p->n_layer, p->n_embd, p->z_dim, p->value_dim, p->n_head, p->n_ff, p->cema_ndim,
               p->chunk_size, p->norm_groups, p->about);
    }
}

void tr_config_defaults(mg_hparams *hp)
{
    static const preset official = {"", "", 8, 1024, 256, 2048, 1, 2048, 16, 2048, 32, 0, 0, 0};
    preset_hparams(&official, hp);
}

/* ---------------------------------------------------------------- the fields */

typedef enum { F_INT, F_FLOAT, F_FLAG } field_kind;

typedef struct {
    const char *key;
    field_kind kind;
    size_t off;
    int lo; /* F_INT: smallest value */
} field;

#define FLD(name, kind, lo) {#name, kind, offsetof(mg_hparams, name), lo}
static const field fields[] = {
    FLD(n_layer, F_INT, 1),     FLD(n_embd, F_INT, 1),       FLD(z_dim, F_INT, 1),
    FLD(value_dim, F_INT, 1),   FLD(n_head, F_INT, 1),       FLD(n_ff, F_INT, 1),
    FLD(cema_ndim, F_INT, 1),   FLD(chunk_size, F_INT, 1),   FLD(norm_groups, F_INT, 1),
    FLD(n_vocab, F_INT, 0),     FLD(n_output, F_INT, 0),     FLD(norm_eps, F_FLOAT, 0),
    FLD(rope_base, F_FLOAT, 0), FLD(swiglu, F_FLAG, 0),      FLD(scale_emb, F_FLAG, 0),
    FLD(share_emb, F_FLAG, 0),  FLD(rescale_nffn, F_FLAG, 0), FLD(norm_affine, F_FLAG, 0),
};
#define N_FIELDS (sizeof fields / sizeof fields[0])
#define MAX_DIM (1 << 24)

int tr_read_config(const char *path, mg_hparams *hp)
{
    char *text;
    size_t len;
    int rc = run_read_file(path, &text, &len);
    if (rc) return rc;
    json_object o;
    char err[256];
    if (json_parse_flat(text, len, &o, err, sizeof err)) {
        free(text);
        return tr_error(TR_RUNTIME, "config %s: not a flat JSON object: %s", path, err);
    }
    free(text);
    rc = TR_OK;
    for (size_t k = 0; k < o.n && !rc; k++) {
        const json_member *m = &o.m[k];
        const field *f = NULL;
        for (size_t j = 0; j < N_FIELDS; j++)
            if (strcmp(fields[j].key, m->key) == 0) f = &fields[j];
        if (!f) {
            rc = tr_error(TR_RUNTIME,
                          "config %s: line %d: unknown key \"%.60s\" (the keys are the "
                          "mg_hparams fields: n_layer, n_embd, z_dim, value_dim, n_head, n_ff, "
                          "cema_ndim, chunk_size, norm_groups, n_vocab, n_output, norm_eps, "
                          "rope_base, swiglu, scale_emb, share_emb, rescale_nffn, norm_affine)",
                          path, m->line, m->key);
            break;
        }
        char *dst = (char *)hp + f->off;
        switch (f->kind) {
        case F_INT:
            if (m->type != JV_NUMBER)
                rc = tr_error(TR_RUNTIME, "config %s: line %d: \"%s\" must be an integer, not %s",
                              path, m->line, m->key, json_type_name(m->type));
            else if (m->num != floor(m->num))
                rc = tr_error(TR_RUNTIME, "config %s: line %d: \"%s\" must be an integer (got %g)",
                              path, m->line, m->key, m->num);
            else if (m->num < f->lo || m->num > MAX_DIM)
                rc = tr_error(TR_RUNTIME, "config %s: line %d: \"%s\" = %g is out of range [%d, %d]",
                              path, m->line, m->key, m->num, f->lo, MAX_DIM);
            else
                *(int32_t *)dst = (int32_t)m->num;
            break;
        case F_FLOAT:
            if (m->type != JV_NUMBER)
                rc = tr_error(TR_RUNTIME, "config %s: line %d: \"%s\" must be a number, not %s",
                              path, m->line, m->key, json_type_name(m->type));
            else if (!(m->num > 0) || !isfinite((float)m->num))
                rc = tr_error(TR_RUNTIME, "config %s: line %d: \"%s\" = %g must be positive",
                              path, m->line, m->key, m->num);
            else
                *(float *)dst = (float)m->num;
            break;
        case F_FLAG:
            if (m->type == JV_BOOL || (m->type == JV_NUMBER && (m->num == 0 || m->num == 1)))
                *(int32_t *)dst = (int32_t)m->num;
            else
                rc = tr_error(TR_RUNTIME,
                              "config %s: line %d: \"%s\" must be true or false (or 0 or 1), "
                              "not %s", path, m->line, m->key,
                              m->type == JV_NUMBER ? "another number" : json_type_name(m->type));
            break;
        }
    }
    json_free(&o);
    return rc;
}

void tr_config_json(const mg_hparams *hp, strbuf *b)
{
    sb_printf(b, "{\n");
    for (size_t j = 0; j < N_FIELDS; j++) {
        const field *f = &fields[j];
        const char *src = (const char *)hp + f->off;
        sb_printf(b, "  \"%s\": ", f->key);
        switch (f->kind) {
        case F_INT: sb_printf(b, "%d", (int)*(const int32_t *)src); break;
        case F_FLOAT: sb_printf(b, "%.9g", (double)*(const float *)src); break;
        case F_FLAG: sb_printf(b, "%s", *(const int32_t *)src ? "true" : "false"); break;
        }
        sb_printf(b, "%s\n", j + 1 < N_FIELDS ? "," : "");
    }
    sb_printf(b, "}\n");
}

int tr_check_hparams(const mg_hparams *hp)
{
    const struct { const char *name; int32_t v; } dims[] = {
        {"n_layer", hp->n_layer},     {"n_embd", hp->n_embd},       {"z_dim", hp->z_dim},
        {"value_dim", hp->value_dim}, {"n_head", hp->n_head},       {"n_ff", hp->n_ff},
        {"cema_ndim", hp->cema_ndim}, {"chunk_size", hp->chunk_size},
        {"norm_groups", hp->norm_groups}, {"n_vocab", hp->n_vocab}};
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
        if (dims[i].v < 1 || dims[i].v > MAX_DIM)
            return tr_error(TR_RUNTIME, "model config: %s = %d is out of range [1, %d]",
                            dims[i].name, (int)dims[i].v, MAX_DIM);
    if (hp->z_dim % hp->n_head)
        return tr_error(TR_RUNTIME, "model config: z_dim %d is not divisible by n_head %d",
                        (int)hp->z_dim, (int)hp->n_head);
    if ((hp->z_dim / hp->n_head) % 2)
        return tr_error(TR_RUNTIME, "model config: z_dim / n_head = %d is odd (RoPE needs pairs)",
                        (int)(hp->z_dim / hp->n_head));
    if (hp->value_dim % hp->n_head)
        return tr_error(TR_RUNTIME, "model config: value_dim %d is not divisible by n_head %d",
                        (int)hp->value_dim, (int)hp->n_head);
    if (hp->n_embd % hp->norm_groups)
        return tr_error(TR_RUNTIME, "model config: n_embd %d is not divisible by norm_groups %d",
                        (int)hp->n_embd, (int)hp->norm_groups);
    if (hp->share_emb && hp->n_output && hp->n_output != hp->n_vocab)
        return tr_error(TR_RUNTIME, "model config: share_emb needs n_output (%d) == n_vocab (%d)",
                        (int)hp->n_output, (int)hp->n_vocab);
    return TR_OK;
}

/* make-seeds.c - write the committed inputs of the fuzzers (fuzz/README.md):
 *
 *   OUTDIR/llama2-tokenizer.gguf   the model of fuzz-tokenizer: the LLaMA-2 vocabulary of
 *                                  tests/data/llama2-tokenizer/tokenizer.model (read from its
 *                                  protobuf here, as bin/megalodon-convert.py does; no
 *                                  sentencepiece module needed) on a 1-layer model of width 1;
 *   OUTDIR/corpus/HARNESS/NAME     the seed corpora: the golden models and test files of
 *                                  tests/, states saved for tests/golden/base.gguf, generated
 *                                  GGUF files with every key and tensor type, models with a
 *                                  small "llama" tokenizer, models with quantized matrices
 *                                  (q8_0, q4_0, q4_K, q6_K), broken variants and truncations,
 *                                  texts and id lists, megalodon-run command lines, training
 *                                  checkpoints of a very small model.
 *
 * Usage: make-seeds TOP_SRCDIR OUTDIR   (fuzz/build.sh builds it; fuzz/README.md says when to
 * run it). Deterministic: the same tree gives the same files. */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gguf.h"
#include "megalodon.h"
#include "model.h" /* mg_model_load_memory */
#include "tiny_model.h"

static const char *top, *outdir;
static int failures;

#define DIE(...)                                                                           \
    do {                                                                                   \
        fprintf(stderr, "make-seeds: " __VA_ARGS__);                                       \
        fputc('\n', stderr);                                                               \
        exit(1);                                                                           \
    } while (0)

static unsigned char *read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f) DIE("cannot open %s: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(n > 0 ? (size_t)n : 1);
    if (!b || fread(b, 1, (size_t)n, f) != (size_t)n) DIE("cannot read %s", path);
    fclose(f);
    *size = (size_t)n;
    return b;
}

static unsigned char *read_top(const char *rel, size_t *size)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", top, rel);
    return read_file(path, size);
}

static void mkdirs(const char *harness)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/corpus", outdir);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/corpus/%s", outdir, harness);
    mkdir(path, 0755);
}

static void put(const char *harness, const char *name, const void *data, size_t size)
{
    mkdirs(harness);
    char path[4096];
    snprintf(path, sizeof path, "%s/corpus/%s/%s", outdir, harness, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0)
        DIE("cannot write %s: %s", path, strerror(errno));
}

/* a seed that is a selector/flag byte followed by data */
static void put_sel(const char *harness, const char *name, unsigned char sel, const void *data,
                    size_t size)
{
    unsigned char *b = malloc(size + 1);
    b[0] = sel;
    memcpy(b + 1, data, size);
    put(harness, name, b, size + 1);
    free(b);
}

static void put_writer(const char *harness, const char *name, gguf_writer *w)
{
    void *buf;
    size_t size;
    if (gguf_write_memory(w, &buf, &size)) DIE("%s: %s", name, mg_last_error());
    put(harness, name, buf, size);
    free(buf);
}

/* tiny_model_write into memory (through a temporary file) */
static unsigned char *tiny_image(const tiny_opts *o, size_t *size)
{
    char tmp[] = "/tmp/mg-make-seeds-XXXXXX";
    int fd = mkstemp(tmp);
    if (fd < 0) DIE("mkstemp: %s", strerror(errno));
    close(fd);
    if (tiny_model_write(tmp, o)) DIE("tiny model: %s", mg_last_error());
    unsigned char *b = read_file(tmp, size);
    unlink(tmp);
    return b;
}

/* A writer holding every key and tensor of the GGUF image buf. */
static gguf_writer *writer_from(const void *buf, size_t size)
{
    gguf_file *f;
    if (gguf_open_memory(buf, size, &f)) DIE("re-reading: %s", mg_last_error());
    gguf_writer *w = gguf_writer_new();
    int rc = 0;
    for (int64_t i = 0; !rc && i < gguf_n_kv(f); i++) rc = gguf_copy_kv(w, f, i);
    for (int64_t i = 0; !rc && i < gguf_n_tensors(f); i++) {
        const gguf_tensor_info *t = gguf_tensor(f, i);
        rc = gguf_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data);
    }
    if (rc) DIE("writer_from: %s", mg_last_error());
    gguf_close(f);
    return w;
}

/* ------------------------------------------------------------------ protobuf */

typedef struct {
    const unsigned char *p, *end;
} pb;

static uint64_t pb_varint(pb *c)
{
    uint64_t v = 0;
    for (int s = 0; s < 64 && c->p < c->end; s += 7) {
        unsigned char b = *c->p++;
        v |= (uint64_t)(b & 0x7F) << s;
        if (!(b & 0x80)) return v;
    }
    DIE("tokenizer.model: bad varint");
}

/* next field: returns 0 at the end; *wt wire type, then *v (varint / fixed32) or *sub */
static int pb_next(pb *c, uint32_t *field, uint32_t *wt, uint64_t *v, pb *sub)
{
    if (c->p >= c->end) return 0;
    uint64_t key = pb_varint(c);
    *field = (uint32_t)(key >> 3);
    *wt = (uint32_t)(key & 7);
    switch (*wt) {
    case 0: *v = pb_varint(c); break;
    case 1:
        if (c->end - c->p < 8) DIE("tokenizer.model: truncated");
        memcpy(v, c->p, 8);
        c->p += 8;
        break;
    case 2: {
        uint64_t n = pb_varint(c);
        if ((uint64_t)(c->end - c->p) < n) DIE("tokenizer.model: truncated");
        sub->p = c->p;
        sub->end = c->p + n;
        c->p += n;
        break;
    }
    case 5: {
        uint32_t x;
        if (c->end - c->p < 4) DIE("tokenizer.model: truncated");
        memcpy(&x, c->p, 4);
        *v = x;
        c->p += 4;
        break;
    }
    default: DIE("tokenizer.model: wire type %u", *wt);
    }
    return 1;
}

typedef struct {
    char **pieces;
    float *scores;
    int32_t *types;
    uint32_t n;
    int64_t unk, bos, eos, pad;
    int add_dummy_prefix;
} spm;

static void read_spm(const char *rel, spm *m)
{
    size_t size;
    unsigned char *data = read_top(rel, &size);
    memset(m, 0, sizeof *m);
    m->unk = 0, m->bos = 1, m->eos = 2, m->pad = -1, m->add_dummy_prefix = 1;
    uint32_t cap = 0;
    pb c = {data, data + size}, sub, s2;
    uint32_t field, wt, f2, w2;
    uint64_t v, v2;
    while (pb_next(&c, &field, &wt, &v, &sub)) {
        if (field == 1 && wt == 2) { /* SentencePiece */
            if (m->n == cap) {
                cap = cap ? 2 * cap : 1024;
                m->pieces = realloc(m->pieces, cap * sizeof *m->pieces);
                m->scores = realloc(m->scores, cap * sizeof *m->scores);
                m->types = realloc(m->types, cap * sizeof *m->types);
            }
            char *piece = NULL;
            float score = 0;
            int32_t type = 1;
            while (pb_next(&sub, &f2, &w2, &v2, &s2)) {
                if (f2 == 1 && w2 == 2) {
                    piece = malloc((size_t)(s2.end - s2.p) + 1);
                    memcpy(piece, s2.p, (size_t)(s2.end - s2.p));
                    piece[s2.end - s2.p] = '\0';
                } else if (f2 == 2 && w2 == 5) {
                    uint32_t bits = (uint32_t)v2;
                    memcpy(&score, &bits, 4);
                } else if (f2 == 3 && w2 == 0) {
                    type = (int32_t)v2;
                }
            }
            if (!piece) DIE("tokenizer.model: piece %u has no text", m->n);
            m->pieces[m->n] = piece;
            m->scores[m->n] = score;
            m->types[m->n] = type;
            m->n++;
        } else if (field == 2 && wt == 2) { /* TrainerSpec */
            while (pb_next(&sub, &f2, &w2, &v2, &s2)) {
                if (w2 != 0) continue;
                if (f2 == 40) m->unk = (int32_t)v2;
                if (f2 == 41) m->bos = (int32_t)v2;
                if (f2 == 42) m->eos = (int32_t)v2;
                if (f2 == 43) m->pad = (int32_t)v2;
            }
        } else if (field == 3 && wt == 2) { /* NormalizerSpec */
            while (pb_next(&sub, &f2, &w2, &v2, &s2))
                if (f2 == 3 && w2 == 0) m->add_dummy_prefix = v2 != 0;
        }
    }
    free(data);
}

static int add_tokenizer(gguf_writer *w, const char *model, char **pieces, const float *scores,
                         const int32_t *types, uint32_t n, int64_t bos, int64_t eos,
                         int64_t unk, int64_t pad, int add_space_prefix)
{
    int rc = gguf_set_str(w, "tokenizer.ggml.model", model);
    if (!rc && pieces)
        rc = gguf_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)pieces, n);
    if (!rc && scores) rc = gguf_set_arr(w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, scores, n);
    if (!rc && types) rc = gguf_set_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types, n);
    const struct { const char *key; int64_t v; } ids[] = {
        {"tokenizer.ggml.bos_token_id", bos}, {"tokenizer.ggml.eos_token_id", eos},
        {"tokenizer.ggml.unknown_token_id", unk}, {"tokenizer.ggml.padding_token_id", pad}};
    for (int i = 0; !rc && i < 4; i++)
        if (ids[i].v >= 0) rc = gguf_set_u32(w, ids[i].key, (uint32_t)ids[i].v);
    if (!rc && add_space_prefix >= 0)
        rc = gguf_set_bool(w, "tokenizer.ggml.add_space_prefix", add_space_prefix);
    return rc;
}

/* the smallest model shape, for vocabulary-sized files */
static tiny_opts narrow_opts(int n_vocab)
{
    tiny_opts o = tiny_sized_opts((tiny_sizes){.n_layer = 1, .n_embd = 1, .z_dim = 2,
                                               .value_dim = 1, .n_head = 1, .n_ff = 1,
                                               .cema_ndim = 1, .chunk_size = 4,
                                               .norm_groups = 1, .n_vocab = n_vocab});
    o.share_emb = 1;
    return o;
}

static void make_tokenizer_model(void)
{
    spm m;
    read_spm("tests/data/llama2-tokenizer/tokenizer.model", &m);
    if (m.n != 32000) DIE("expected the 32000 pieces of LLaMA-2, got %u", m.n);
    tiny_opts o = narrow_opts((int)m.n);
    size_t size;
    unsigned char *img = tiny_image(&o, &size);
    gguf_writer *w = writer_from(img, size);
    free(img);
    if (gguf_set_str(w, "general.name", "llama2-tokenizer (fuzz/make-seeds)") ||
        add_tokenizer(w, "llama", m.pieces, m.scores, m.types, m.n, m.bos, m.eos, m.unk, m.pad,
                      m.add_dummy_prefix))
        DIE("tokenizer keys: %s", mg_last_error());
    char path[4096];
    snprintf(path, sizeof path, "%s/llama2-tokenizer.gguf", outdir);
    if (gguf_write_file(w, path)) DIE("%s: %s", path, mg_last_error());
    gguf_writer_free(w);
    for (uint32_t i = 0; i < m.n; i++) free(m.pieces[i]);
    free(m.pieces);
    free(m.scores);
    free(m.types);
    printf("make-seeds: %s (%u pieces)\n", path, m.n);
}

/* ------------------------------------------------------------------ gguf */

static void gguf_seeds(void)
{
    /* every key type, scalar and array, and every tensor type, with an explicit alignment */
    gguf_writer *w = gguf_writer_new();
    static const uint8_t u8[3] = {1, 2, 255};
    static const int8_t i8[2] = {-1, 7};
    static const uint16_t u16[2] = {1, 65535};
    static const int16_t i16[2] = {-300, 300};
    static const uint32_t u32[2] = {0, 4000000000u};
    static const int32_t i32[3] = {-1, 0, 1};
    static const float f32[2] = {1.5f, -2.0f};
    static const uint8_t bools[3] = {0, 1, 1};
    static const uint64_t u64[2] = {1, UINT64_MAX};
    static const int64_t i64[2] = {INT64_MIN, 5};
    static const double f64[2] = {0.25, -1e300};
    static const char *const strs[3] = {"a", "", "\xe2\x96\x81x"};
    /* the numeric arrays, in file order */
    static const struct {
        const char *key;
        uint32_t type;
        const void *data;
        uint64_t n;
    } arrs[] = {
        {"a.u8", GGUF_TYPE_UINT8, u8, 3},      {"a.i8", GGUF_TYPE_INT8, i8, 2},
        {"a.u16", GGUF_TYPE_UINT16, u16, 2},   {"a.i16", GGUF_TYPE_INT16, i16, 2},
        {"a.u32", GGUF_TYPE_UINT32, u32, 2},   {"a.i32", GGUF_TYPE_INT32, i32, 3},
        {"a.f32", GGUF_TYPE_FLOAT32, f32, 2},  {"a.bool", GGUF_TYPE_BOOL, bools, 3},
        {"a.u64", GGUF_TYPE_UINT64, u64, 2},   {"a.i64", GGUF_TYPE_INT64, i64, 2},
        {"a.f64", GGUF_TYPE_FLOAT64, f64, 2},  {"a.empty", GGUF_TYPE_INT32, i32, 0},
    };
    int rc = gguf_set_u32(w, "general.alignment", 64) ||
             gguf_set_str(w, "general.architecture", "megalodon") ||
             gguf_set_u32(w, "k.u32", 7) || gguf_set_i32(w, "k.i32", -7) ||
             gguf_set_u64(w, "k.u64", 1ull << 40) || gguf_set_i64(w, "k.i64", -(1ll << 40)) ||
             gguf_set_f32(w, "k.f32", 0.5f) || gguf_set_bool(w, "k.bool", 1) ||
             gguf_set_str(w, "k.str", "hello");
    for (size_t a = 0; !rc && a < sizeof arrs / sizeof arrs[0]; a++)
        rc = gguf_set_arr(w, arrs[a].key, arrs[a].type, arrs[a].data, arrs[a].n);
    if (!rc) rc = gguf_set_arr_str(w, "a.str", strs, 3);
    static const uint32_t types[] = {GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_BF16, GGML_TYPE_I8,
                                     GGML_TYPE_I16, GGML_TYPE_I32, GGML_TYPE_I64, GGML_TYPE_F64};
    unsigned char data[4 * 3 * 2 * 8];
    for (size_t i = 0; i < sizeof data; i++) data[i] = (unsigned char)(i * 37 + 11);
    for (size_t t = 0; !rc && t < sizeof types / sizeof types[0]; t++) {
        char name[32];
        snprintf(name, sizeof name, "t.%s", gguf_type_name(types[t]));
        uint64_t ne[4] = {3, 2, 1, 1 + t % 2};
        rc = gguf_add_tensor(w, name, types[t], t % 2 ? 4 : 2, ne, data);
    }
    if (rc) DIE("gguf seed: %s", mg_last_error());
    void *buf;
    size_t size;
    if (gguf_write_memory(w, &buf, &size)) DIE("gguf seed: %s", mg_last_error());
    put("gguf", "all-types.gguf", buf, size);
    /* truncations of it, at the header, in the keys, in the tensor infos, in the data */
    static const size_t cut[] = {3, 20, 24, 100, 400};
    for (size_t i = 0; i < sizeof cut / sizeof cut[0]; i++) {
        char name[64];
        snprintf(name, sizeof name, "all-types.trunc%zu", cut[i]);
        put("gguf", name, buf, cut[i] < size ? cut[i] : size);
    }
    char name[64];
    snprintf(name, sizeof name, "all-types.trunc-last");
    put("gguf", name, buf, size - 1);
    free(buf);
    gguf_writer_free(w);

    /* the block types, rows of one or two blocks (the bytes are not valid scales: the reader
     * only sizes them) */
    w = gguf_writer_new();
    static const struct { uint32_t type; uint64_t ne0, ne1; } blocks[] = {
        {GGML_TYPE_Q8_0, 64, 2}, {GGML_TYPE_Q4_0, 32, 3}, {GGML_TYPE_Q4_K, 256, 1},
        {GGML_TYPE_Q6_K, 256, 2}, {GGML_TYPE_Q8_K, 256, 1},
    };
    unsigned char bdata[2 * 292];
    for (size_t i = 0; i < sizeof bdata; i++) bdata[i] = (unsigned char)(i * 53 + 7);
    rc = gguf_set_str(w, "general.architecture", "megalodon");
    for (size_t t = 0; !rc && t < sizeof blocks / sizeof blocks[0]; t++) {
        char tname[32];
        snprintf(tname, sizeof tname, "t.%s", gguf_type_name(blocks[t].type));
        uint64_t ne[2] = {blocks[t].ne0, blocks[t].ne1};
        rc = gguf_add_tensor(w, tname, blocks[t].type, 2, ne, bdata);
    }
    if (rc || gguf_write_memory(w, &buf, &size)) DIE("gguf seed: %s", mg_last_error());
    put("gguf", "block-types.gguf", buf, size);
    put("gguf", "block-types.trunc-last", buf, size - 100);
    free(buf);
    gguf_writer_free(w);

    /* keys only, no tensors (no data section) */
    w = gguf_writer_new();
    if (gguf_set_str(w, "general.architecture", "megalodon-state") ||
        gguf_set_u32(w, "megalodon.block_count", 2))
        DIE("gguf seed: %s", mg_last_error());
    put_writer("gguf", "keys-only.gguf", w);
    gguf_writer_free(w);
    /* empty: header only */
    w = gguf_writer_new();
    put_writer("gguf", "empty.gguf", w);
    gguf_writer_free(w);

    /* test files */
    static const char *const files[] = {"base.gguf", "f16.gguf", "bf16.gguf",
                                        "short.expect.gguf", "q4_0.gguf"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char rel[256];
        snprintf(rel, sizeof rel, "tests/golden/%s", files[i]);
        unsigned char *b = read_top(rel, &size);
        put("gguf", files[i], b, size);
        if (i == 0) { /* truncations of a real model */
            put("gguf", "base.trunc-header", b, 1000);
            put("gguf", "base.trunc-data", b, size / 2);
        }
        free(b);
    }
}

/* ------------------------------------------------------------------ model */

/* A small model quantized by mg_model_quantize to q4_k_m and to q8_0: D = 32 and E = F = 256,
 * so attn_h2 (rows of E) is q4_K, ffn_down (rows of F) q6_K, and the matrices with rows of D
 * take the fallbacks q4_0 and q8_0; the q4_k_m one also truncated inside its last tensor. */
static void quantized_model_seeds(const tiny_opts *small)
{
    tiny_opts o = *small;
    o.n_embd = 32, o.z_dim = 8, o.value_dim = 256, o.n_ff = 256;
    static const struct { mg_ftype ftype; const char *name; } recipes[] = {
        {MG_FTYPE_Q4_K_M, "tiny-q4_k_m.gguf"}, {MG_FTYPE_Q8_0, "tiny-q8_0.gguf"},
    };
    char in[] = "/tmp/mg-make-seeds-XXXXXX", out[64];
    int fd = mkstemp(in);
    if (fd < 0) DIE("mkstemp: %s", strerror(errno));
    close(fd);
    snprintf(out, sizeof out, "%s.q", in);
    if (tiny_model_write(in, &o)) DIE("tiny model: %s", mg_last_error());
    for (size_t r = 0; r < sizeof recipes / sizeof recipes[0]; r++) {
        mg_quantize_params p = mg_quantize_default_params();
        p.ftype = recipes[r].ftype;
        p.n_threads = 1;
        if (mg_model_quantize(in, out, &p)) DIE("quantizing a seed: %s", mg_last_error());
        size_t size;
        unsigned char *b = read_file(out, &size);
        put("model", recipes[r].name, b, size);
        if (r == 0) put("model", "tiny-q4_k_m.trunc-data", b, size - 100);
        free(b);
        unlink(out);
    }
    unlink(in);
}

static void model_seeds(void)
{
    static const char *const golden[] = {"base.gguf", "heads2_swiglu.gguf", "share_scale.gguf",
                                          "rescale_noaffine.gguf", "f16.gguf", "bf16.gguf",
                                          "ppl-byte.gguf", "q8_0.gguf", "q4_0.gguf"};
    for (size_t i = 0; i < sizeof golden / sizeof golden[0]; i++) {
        char rel[256];
        size_t size;
        snprintf(rel, sizeof rel, "tests/golden/%s", golden[i]);
        unsigned char *b = read_top(rel, &size);
        put("model", golden[i], b, size);
        free(b);
    }
    /* small random models (tests/tiny_model.c), valid and broken */
    struct { const char *name; tiny_opts o; } cases[16];
    int nc = 0;
    tiny_opts o = tiny_sized_opts((tiny_sizes){.n_layer = 1, .n_embd = 8, .z_dim = 4,
                                               .value_dim = 8, .n_head = 2, .n_ff = 8,
                                               .cema_ndim = 2, .chunk_size = 4,
                                               .norm_groups = 2, .n_vocab = 16});
    cases[nc].name = "tiny.gguf", cases[nc++].o = o;
    tiny_opts b = o;
    b.swiglu = b.rescale_nffn = b.share_emb = b.scale_emb = 1, b.norm_affine = 0;
    cases[nc].name = "tiny-options.gguf", cases[nc++].o = b;
    b = o, b.skip_tensor = "blk.0.cema.gamma";
    cases[nc].name = "tiny-missing-tensor.gguf", cases[nc++].o = b;
    b = o, b.misshape_tensor = "blk.0.attn_v.weight";
    cases[nc].name = "tiny-misshaped.gguf", cases[nc++].o = b;
    b = o, b.skip_key = "megalodon.chunk_size";
    cases[nc].name = "tiny-missing-key.gguf", cases[nc++].o = b;
    b = o, b.arch = "llama";
    cases[nc].name = "tiny-wrong-arch.gguf", cases[nc++].o = b;
    b = o, b.n_head = 3;
    cases[nc].name = "tiny-bad-heads.gguf", cases[nc++].o = b;
    b = o, b.chunk_size = 1;
    cases[nc].name = "tiny-chunk1.gguf", cases[nc++].o = b;
    b = o, b.n_embd = 32, b.retype_tensor = "blk.0.tnorm.weight", b.retype = GGML_TYPE_Q8_0;
    cases[nc].name = "tiny-quantized-norm.gguf", cases[nc++].o = b;
    b = o, b.n_embd = 32, b.retype_tensor = "blk.0.ffn_up.weight", b.retype = GGML_TYPE_I32;
    cases[nc].name = "tiny-i32-matrix.gguf", cases[nc++].o = b;
    for (int i = 0; i < nc; i++) {
        size_t size;
        unsigned char *img = tiny_image(&cases[i].o, &size);
        put("model", cases[i].name, img, size);
        free(img);
    }
    quantized_model_seeds(&o);

    /* with a small "llama" tokenizer: 3 specials, 256 bytes, a few merges and a
     * user-defined and an unused piece; and a "byte" tokenizer without token list */
    {
        enum { NB = 256, NE = 8, NV = 3 + NB + NE };
        char *pieces[NV];
        float scores[NV];
        int32_t types[NV];
        static const char *const extra[NE] = {"\xe2\x96\x81", "\xe2\x96\x81t", "he",
                                              "\xe2\x96\x81the", "in", "<user>", "ing", "<unused0>"};
        static const int32_t extra_t[NE] = {1, 1, 1, 1, 1, 4, 1, 5};
        pieces[0] = strdup("<unk>"), types[0] = 2, scores[0] = 0;
        pieces[1] = strdup("<s>"), types[1] = 3, scores[1] = 0;
        pieces[2] = strdup("</s>"), types[2] = 3, scores[2] = 0;
        for (int i = 0; i < NB; i++) {
            char s[8];
            snprintf(s, sizeof s, "<0x%02X>", i);
            pieces[3 + i] = strdup(s), types[3 + i] = 6, scores[3 + i] = 0;
        }
        for (int i = 0; i < NE; i++)
            pieces[3 + NB + i] = strdup(extra[i]), types[3 + NB + i] = extra_t[i],
                            scores[3 + NB + i] = -(float)i;
        tiny_opts t = o;
        t.n_vocab = NV;
        size_t size;
        unsigned char *img = tiny_image(&t, &size);
        gguf_writer *w = writer_from(img, size);
        free(img);
        if (add_tokenizer(w, "llama", pieces, scores, types, NV, 1, 2, 0, -1, 1))
            DIE("tokenizer seed: %s", mg_last_error());
        put_writer("model", "tiny-llama-tokenizer.gguf", w);
        gguf_writer_free(w);
        for (int i = 0; i < NV; i++) free(pieces[i]);

        t.n_vocab = 260;
        img = tiny_image(&t, &size);
        w = writer_from(img, size);
        free(img);
        if (add_tokenizer(w, "byte", NULL, NULL, NULL, 0, 256, 257, -1, -1, -1))
            DIE("tokenizer seed: %s", mg_last_error());
        put_writer("model", "tiny-byte-tokenizer.gguf", w);
        gguf_writer_free(w);
    }
}

/* ------------------------------------------------------------------ state */

static void state_seeds(void)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/golden/base.gguf", top);
    mg_model_params mp = mg_model_default_params();
    mp.n_threads = 1;
    mg_model *m;
    if (mg_model_load(path, &mp, &m)) DIE("%s", mg_last_error());
    static const int after[] = {0, 3, 8, 13};
    char tmp[] = "/tmp/mg-make-seeds-XXXXXX";
    if (!mkdtemp(tmp)) DIE("mkdtemp: %s", strerror(errno));
    char file[4200];
    snprintf(file, sizeof file, "%s/state.gguf", tmp);
    for (size_t i = 0; i < sizeof after / sizeof after[0]; i++) {
        mg_state *st;
        if (mg_state_new(m, NULL, &st)) DIE("%s", mg_last_error());
        int32_t tok[16];
        for (int j = 0; j < 16; j++) tok[j] = (j * 7 + 3) % 37;
        if (after[i] && mg_eval(st, tok, (size_t)after[i], NULL, MG_LOGITS_NONE))
            DIE("%s", mg_last_error());
        if (mg_state_save(st, file)) DIE("%s", mg_last_error());
        size_t size;
        unsigned char *b = read_file(file, &size);
        char name[64];
        snprintf(name, sizeof name, "base-after-%d.gguf", after[i]);
        put("state", name, b, size);
        if (after[i] == 3) {
            put("state", "base-after-3.trunc-half", b, size / 2);
            put("state", "base-after-3.trunc-last", b, size - 1);
            put("gguf", "state-base-after-3.gguf", b, size);
        }
        free(b);
        mg_state_free(st);
    }
    unlink(file);
    rmdir(tmp);
    mg_model_free(m);
}

/* ------------------------------------------------------------------ tokenizer */

static void tokenizer_seeds(void)
{
    static const struct { const char *name; const char *text; } texts[] = {
        {"hello", "Hello world!"},
        {"spaces", "  two  spaces\tand a tab\n\nnewlines "},
        {"utf8", "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\x98\x80 "
                 "\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82 \xe2\x96\x81" "already"},
        {"invalid-utf8", "ok \xff\xfe bad \xc3( \xe2\x82 \xed\xa0\x80 \xf4\x90\x80\x80 end"},
        {"specials", "<s> </s> <unk> <0x0A> \xe2\x96\x81\xe2\x96\x81"},
        {"code", "int main(void) { return 0; } // 12345 + 67890 = 80235\n"},
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        char name[64];
        snprintf(name, sizeof name, "text-%s", texts[i].name);
        put_sel("tokenizer", name, (unsigned char)(i * 5), texts[i].text, strlen(texts[i].text));
    }
    size_t size;
    unsigned char *b = read_top("tests/golden/ppl-byte.txt", &size);
    put_sel("tokenizer", "text-ppl-byte", 0x01, b, size);
    free(b);
    /* ids: "Hello world!" is 15043 3186 29991; BOS, EOS, bytes and a few common pieces
     * (each value is stored + 1, little-endian) */
    static const int32_t ids[] = {1, 15043, 3186, 29991, 13, 2, 0, 3, 29871, 259, 31999, 450};
    unsigned char raw[2 * sizeof ids / sizeof ids[0]];
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        uint32_t v = (uint32_t)ids[i] + 1;
        raw[2 * i] = (unsigned char)v;
        raw[2 * i + 1] = (unsigned char)(v >> 8);
    }
    put_sel("tokenizer", "ids-mixed", 0x02 | (8 << 2), raw, sizeof raw);
    put_sel("tokenizer", "ids-hello", 0x03, raw + 2, 6);
}

/* ------------------------------------------------------------------ args */

static void args_seeds(void)
{
    /* '|' separates the arguments (it becomes the NUL the harness splits at) */
    static const struct { const char *name; unsigned char sel; const char *argv; } a[] = {
        {"generate", 0, "-m|model.gguf|-p|Hello|-n|16|--temp|0.8|--top-k|40|--top-p|0.9|-s|-1"},
        {"generate-eq", 0, "--model=m.gguf|--prompt=Hi there|--seed=42|--min-p=0.05|"
                           "--repeat-penalty=1.1|--repeat-last-n=64|-i|--ignore-eos|"
                           "--no-display-prompt"},
        {"generate-tokens", 0, "-m|m.gguf|--tokens|ids.txt|--state-in|s.gguf|--state-out|"
                               "t.gguf|-b|64|-t|2|--cema|fft|--isa|scalar|-v"},
        {"perplexity", 1, "-m|m.gguf|-f|doc.txt|--json|--per-token|--no-eos|-b|512"},
        {"perplexity-window", 1, "-m|m.gguf|--tokens|-|--official-window|--no-bos"},
        {"tokenize", 2, "-m|m.gguf|-p|text|--bos|--pieces"},
        {"info", 3, "-m|m.gguf|--state-in|s.gguf|--isa=auto"},
        {"help", 2, "--help"},
        {"nomode", 4, "-m|m.gguf|-p|x|--version"},
        {"main-mode-word", 5, "perplexity|-m|m.gguf|-f|-"},
        {"main-no-mode", 5, "-m|m.gguf|-n|-1|--cema=scan"},
        {"bad-values", 0, "-m|m.gguf|-n|-2|--temp|nan|--top-p|1.5|-t|99999|--seed|+3"},
        {"ids", 6 | (31 << 3), "1 15043 3186\n29991\t13  2"},
        {"ids-bad", 6 | (1 << 3), "1 2 x3 -4 +5 99999999999999999999"},
        {"token-file", 7 | (31 << 3), "1 15043 3186 29991\n13\n\n2 0 +7 -0 0007"},
        {"token-file-bad", 7 | (2 << 3), "12 abc\n 5000\n"},
    };
    for (size_t i = 0; i < sizeof a / sizeof a[0]; i++) {
        size_t n = strlen(a[i].argv);
        char *b = malloc(n + 1);
        for (size_t j = 0; j <= n; j++) b[j] = a[i].argv[j] == '|' ? '\0' : a[i].argv[j];
        put_sel("args", a[i].name, a[i].sel, b, n);
        free(b);
    }
}

/* ------------------------------------------------------------------ checkpoint */

/* Training checkpoints (mg_trainer_save_checkpoint) of a very small random model: a fresh
 * trainer (step 0), one after two steps with a caller string, a truncated one, one whose
 * tensor data no longer matches its checksum, and a plain model file (not a checkpoint). */
static void checkpoint_seeds(void)
{
    tiny_opts o = tiny_sized_opts((tiny_sizes){.n_layer = 1, .n_embd = 4, .z_dim = 2,
                                               .value_dim = 2, .n_head = 1, .n_ff = 4,
                                               .cema_ndim = 2, .chunk_size = 4,
                                               .norm_groups = 2, .n_vocab = 8});
    size_t msize;
    unsigned char *img = tiny_image(&o, &msize);
    put("checkpoint", "model-not-a-checkpoint.gguf", img, msize);
    mg_model_params mp = mg_model_default_params();
    mp.n_threads = 1;
    mg_model *m;
    if (mg_model_load_memory(img, msize, &mp, &m)) DIE("%s", mg_last_error());
    mg_train_params tp = mg_train_default_params();
    tp.n_threads = 1;
    mg_trainer *tr;
    if (mg_trainer_new(m, &tp, &tr)) DIE("trainer: %s", mg_last_error());
    char tmp[] = "/tmp/mg-make-seeds-XXXXXX";
    if (!mkdtemp(tmp)) DIE("mkdtemp: %s", strerror(errno));
    char file[4200];
    snprintf(file, sizeof file, "%s/c.ckpt", tmp);
    size_t size;
    unsigned char *b;
    if (mg_trainer_save_checkpoint(tr, file, NULL)) DIE("%s", mg_last_error());
    b = read_file(file, &size);
    put("checkpoint", "step0.ckpt", b, size);
    free(b);
    const int32_t ids[10] = {1, 2, 3, 4, 5, 6, 7, 0, 1, 2}; /* 2 rows of L + 1 = 5 */
    for (int k = 0; k < 2; k++)
        if (mg_trainer_step(tr, ids, 2, 4, NULL)) DIE("step: %s", mg_last_error());
    if (mg_trainer_save_checkpoint(tr, file, "{\"data\": \"corpus.txt\", \"offset\": 40}"))
        DIE("%s", mg_last_error());
    b = read_file(file, &size);
    put("checkpoint", "step2.ckpt", b, size);
    put("checkpoint", "step2.trunc-half", b, size / 2);
    b[size - 1] ^= 0x01; /* the last byte of the last tensor */
    put("checkpoint", "step2.bad-checksum", b, size);
    free(b);
    unlink(file);
    rmdir(tmp);
    mg_trainer_free(tr);
    mg_model_free(m);
    free(img);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: make-seeds TOP_SRCDIR OUTDIR\n");
        return 2;
    }
    top = argv[1];
    outdir = argv[2];
    setenv("MEGALODON_CEMA_WISDOM", "none", 1);
    mkdir(outdir, 0755);
    make_tokenizer_model();
    gguf_seeds();
    model_seeds();
    state_seeds();
    tokenizer_seeds();
    args_seeds();
    checkpoint_seeds();
    printf("make-seeds: corpora written under %s/corpus\n", outdir);
    return failures ? 1 : 0;
}

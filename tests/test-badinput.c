/* test-badinput - every kind of bad input gets a clear error naming the problem, a negative
 * status, and no crash: broken model files, inconsistent hyper-parameters, tensors of types
 * the model does not take, bad tokens and bad options. */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf.h"
#include "megalodon.h"
#include "test.h"
#include "tiny_model.h"

static char dir[256], path[512];

/* Write the model described by o, load it, and expect status `want` with `msg` in the error. */
static void expect_load(const char *what, const tiny_opts *o, int want, const char *msg)
{
    int rc = tiny_model_write(path, o);
    CHECK(rc == MG_OK, "%s: writing the model failed: %s", what, mg_last_error());
    mg_model *m = (mg_model *)1;
    rc = mg_model_load(path, NULL, &m);
    CHECK(rc == want, "%s: status %d (%s), expected %d", what, rc, mg_last_error(), want);
    if (want != MG_OK) {
        CHECK(m == NULL, "%s: *out not NULL on failure", what);
        CHECK(strstr(mg_last_error(), msg) != NULL, "%s: message '%s' lacks '%s'", what,
              mg_last_error(), msg);
    }
    if (rc == MG_OK) mg_model_free(m);
}

static void test_models(void)
{
    tiny_opts o = tiny_default_opts();
    expect_load("valid tiny model", &o, MG_OK, "");

    /* the file broken by one of tiny_opts' switches (NULL: not set) */
    static const struct {
        const char *what, *arch, *skip_tensor, *misshape_tensor, *skip_key, *msg;
    } broken[] = {
        {.what = "wrong architecture", .arch = "llama", .msg = "wrong architecture 'llama'"},
        {.what = "missing tensor", .skip_tensor = "blk.1.attn_v.weight",
         .msg = "missing tensor 'blk.1.attn_v.weight'"},
        {.what = "missing buffer", .skip_tensor = "output_norm.prior_count",
         .msg = "missing tensor 'output_norm.prior_count'"},
        {.what = "wrong shape", .misshape_tensor = "blk.0.attn_z.weight",
         .msg = "tensor 'blk.0.attn_z.weight' has shape [33, 16], expected [32, 16]"},
        {.what = "wrong CEMA shape", .misshape_tensor = "blk.1.cema.gamma",
         .msg = "tensor 'blk.1.cema.gamma' has shape"},
        {.what = "missing key", .skip_key = "megalodon.cema_ndim", .msg = "megalodon.cema_ndim"},
    };
    for (size_t i = 0; i < sizeof broken / sizeof broken[0]; i++) {
        o = tiny_default_opts();
        if (broken[i].arch) o.arch = broken[i].arch;
        o.skip_tensor = broken[i].skip_tensor;
        o.misshape_tensor = broken[i].misshape_tensor;
        o.skip_key = broken[i].skip_key;
        expect_load(broken[i].what, &o, MG_ERR_MODEL, broken[i].msg);
    }

    o = tiny_default_opts();
    o.swiglu = 1;
    o.skip_tensor = "blk.0.ffn_gate.weight";
    expect_load("swiglu without fc3", &o, MG_ERR_MODEL, "missing tensor 'blk.0.ffn_gate.weight'");

    o = tiny_default_opts();
    o.share_emb = 0;
    o.skip_tensor = "output.weight";
    expect_load("untied model without head", &o, MG_ERR_MODEL, "missing tensor 'output.weight'");

    o = tiny_default_opts();
    o.z_dim = 18;
    o.n_head = 4;
    expect_load("z_dim % heads", &o, MG_ERR_MODEL, "z_dim 18 is not divisible by head_count 4");

    o = tiny_default_opts();
    o.z_dim = 6;
    o.n_head = 2;
    expect_load("odd head dim", &o, MG_ERR_MODEL, "per-head z dimension 3 is odd");

    o = tiny_default_opts();
    o.value_dim = 33;
    expect_load("value_dim % heads", &o, MG_ERR_MODEL, "value_dim 33 is not divisible by head_count 2");

    o = tiny_default_opts();
    o.n_embd = 30;
    expect_load("D % groups", &o, MG_ERR_MODEL,
                "embedding_length 30 is not divisible by norm_groups 4");

    o = tiny_default_opts();
    o.chunk_size = 0;
    expect_load("zero chunk", &o, MG_ERR_MODEL, "megalodon.chunk_size = 0 is out of range");
}

/* A tensor in a type the model does not take for it: refused, naming the tensor and type. */
static void expect_type(const char *tensor, uint32_t type, const char *msg)
{
    tiny_opts o = tiny_default_opts();
    o.retype_tensor = tensor;
    o.retype = type;
    char what[160];
    snprintf(what, sizeof what, "%s as %s", tensor, gguf_type_name(type));
    expect_load(what, &o, MG_ERR_MODEL, msg);
}

/* The first byte of the u32 type of tensor `name` in a GGUF image: after the name, n_dims
 * and its ne[] (docs/model-format.md), or -1. */
static long type_field(const unsigned char *b, long size, const char *name)
{
    const size_t len = strlen(name);
    for (long i = 8; i + (long)len + 4 <= size; i++) {
        uint64_t n;
        memcpy(&n, b + i - 8, 8);
        if (n != len || memcmp(b + i, name, len) != 0) continue;
        uint32_t nd;
        memcpy(&nd, b + i + len, 4);
        long at = i + (long)len + 4 + 8 * (long)nd;
        return nd >= 1 && nd <= 4 && at + 4 <= size ? at : -1;
    }
    return -1;
}

static void test_weight_types(void)
{
    /* block and 16-bit types are for the matrices; vectors are f32, f16 or bf16 */
    tiny_opts o = tiny_default_opts();
    o.retype_tensor = "blk.0.attn_z.weight";
    o.retype = GGML_TYPE_Q8_0;
    expect_load("a q8_0 matrix", &o, MG_OK, "");
    o.retype_tensor = "blk.1.tnorm.weight";
    o.retype = GGML_TYPE_F16;
    expect_load("an f16 norm vector", &o, MG_OK, "");
    expect_type("blk.1.tnorm.weight", GGML_TYPE_Q8_0,
                "tensor 'blk.1.tnorm.weight' has type q8_0; expected f32, f16 or bf16");
    expect_type("blk.0.attn_v.bias", GGML_TYPE_Q4_0,
                "tensor 'blk.0.attn_v.bias' has type q4_0; expected f32, f16 or bf16");
    expect_type("blk.0.cema.alpha", GGML_TYPE_I32,
                "tensor 'blk.0.cema.alpha' has type i32; expected f32, f16 or bf16");
    expect_type("blk.0.ffn_up.weight", GGML_TYPE_I32,
                "tensor 'blk.0.ffn_up.weight' has type i32; weight matrices may be");
    expect_type("token_embd.weight", GGML_TYPE_F64,
                "tensor 'token_embd.weight' has type f64; weight matrices may be");
    expect_type("blk.1.ffn_down.weight", GGML_TYPE_I8,
                "tensor 'blk.1.ffn_down.weight' has type i8; weight matrices may be");

    /* q8_K (the activation blocks) is a type the reader knows but no weight may have; its
     * rows are 256 long */
    o = tiny_default_opts();
    o.n_embd = 256;
    o.retype_tensor = "blk.0.attn_h1.weight";
    o.retype = GGML_TYPE_Q8_K;
    expect_load("blk.0.attn_h1.weight as q8_K", &o, MG_ERR_MODEL,
                "tensor 'blk.0.attn_h1.weight' has type q8_K; weight matrices may be");

    /* a ggml type this library does not know (q5_0, 6): refused by the reader, named */
    o = tiny_default_opts();
    o.retype_tensor = "blk.0.attn_v.weight";
    o.retype = GGML_TYPE_Q8_0;
    CHECK(tiny_model_write(path, &o) == MG_OK, "write: %s", mg_last_error());
    long size = 0;
    unsigned char *bytes = test_read_file(path, &size);
    long at = bytes ? type_field(bytes, size, "blk.0.attn_v.weight") : -1;
    uint32_t t8;
    if (at >= 0) memcpy(&t8, bytes + at, 4);
    CHECK(at >= 0 && t8 == GGML_TYPE_Q8_0, "the type field of blk.0.attn_v.weight not found");
    if (at >= 0) {
        const uint32_t q5_0 = 6;
        memcpy(bytes + at, &q5_0, 4);
        FILE *w = fopen(path, "wb");
        CHECK(w && fwrite(bytes, 1, (size_t)size, w) == (size_t)size, "rewrite %s", path);
        if (w) fclose(w);
        mg_model *m = NULL;
        int rc = mg_model_load(path, NULL, &m);
        CHECK(rc == MG_ERR_FORMAT && m == NULL &&
                  strstr(mg_last_error(), "tensor 'blk.0.attn_v.weight': unsupported ggml type 6 "
                         "(q5_0)"),
              "q5_0 tensor: %d %s", rc, mg_last_error());
    }
    free(bytes);
}

static void test_file_damage(void)
{
    tiny_opts o = tiny_default_opts();
    CHECK(tiny_model_write(path, &o) == MG_OK, "write");
    long size = 0;
    unsigned char *bytes = test_read_file(path, &size);
    CHECK(bytes != NULL, "cannot read %s", path);
    if (!bytes) return;
    char bad[600];
    snprintf(bad, sizeof bad, "%s/damaged.gguf", dir);

    /* truncated anywhere: refused as a malformed file */
    int refused = 0, tried = 0, named = 0;
    for (long cut = 0; cut < size; cut += 1 + cut / 16) {
        FILE *w = fopen(bad, "wb");
        fwrite(bytes, 1, cut, w);
        fclose(w);
        mg_model *m = NULL;
        int rc = mg_model_load(bad, NULL, &m);
        tried++;
        if (rc == MG_ERR_FORMAT || rc == MG_ERR_IO) refused++;
        if (strstr(mg_last_error(), "damaged.gguf")) named++;
        if (rc == MG_OK) mg_model_free(m);
    }
    CHECK(refused == tried, "%d of %d truncated models were not refused as malformed",
          tried - refused, tried);
    CHECK(named == tried, "error messages do not name the file");

    /* random byte damage: load or refuse, never crash (the sanitizer build checks memory) */
    uint32_t s = 99;
    int loaded = 0;
    for (int it = 0; it < 300; it++) {
        unsigned char *c = malloc(size);
        memcpy(c, bytes, size);
        for (int k = 0; k < 4; k++) {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            c[s % (uint32_t)size] ^= (unsigned char)(1u << (s >> 29));
        }
        FILE *w = fopen(bad, "wb");
        fwrite(c, 1, size, w);
        fclose(w);
        free(c);
        mg_model *m = NULL;
        int rc = mg_model_load(bad, NULL, &m);
        CHECK(rc <= 0, "status %d", rc);
        if (rc == MG_OK) {
            loaded++;
            mg_state *st;
            int32_t tok[3] = {1, 2, 3};
            float *lg = malloc(sizeof(float) * mg_model_n_vocab(m));
            if (mg_state_new(m, NULL, &st) == MG_OK) {
                CHECK(mg_eval(st, tok, 3, lg, MG_LOGITS_LAST) == MG_OK, "eval of a loaded model");
                mg_state_free(st);
            }
            free(lg);
            mg_model_free(m);
        }
    }
    printf("  random damage: %d of 300 damaged files still loaded (damage in weight data)\n", loaded);
    free(bytes);
    unlink(bad);

    mg_model *m = NULL;
    int rc = mg_model_load("/nonexistent/model.gguf", NULL, &m);
    CHECK(rc == MG_ERR_IO && strstr(mg_last_error(), "/nonexistent/model.gguf"), "missing file: %d %s",
          rc, mg_last_error());
    CHECK(mg_model_load(NULL, NULL, &m) == MG_ERR_INVALID_ARG, "NULL path");
}

static void test_eval_args(void)
{
    tiny_opts o = tiny_default_opts();
    CHECK(tiny_model_write(path, &o) == MG_OK, "write");
    mg_model *m;
    CHECK(mg_model_load(path, NULL, &m) == MG_OK, "load: %s", mg_last_error());
    mg_state *st;
    CHECK(mg_state_new(m, NULL, &st) == MG_OK, "state");
    float *lg = malloc(sizeof(float) * mg_model_n_vocab(m));
    int32_t ok[2] = {1, 2}, high[3] = {1, 64, 2}, neg[2] = {-1, 0};
    CHECK(mg_eval(st, ok, 2, lg, MG_LOGITS_LAST) == MG_OK, "eval");
    int rc = mg_eval(st, high, 3, lg, MG_LOGITS_LAST);
    CHECK(rc == MG_ERR_INVALID_ARG && strstr(mg_last_error(), "token id 64 at position 1 is out of range [0, 64)"),
          "token too large: %d %s", rc, mg_last_error());
    rc = mg_eval(st, neg, 2, lg, MG_LOGITS_LAST);
    CHECK(rc == MG_ERR_INVALID_ARG && strstr(mg_last_error(), "token id -1"), "negative token: %s",
          mg_last_error());
    CHECK(mg_state_n_past(st) == 2, "a refused call moved the state (n_past %llu)",
          (unsigned long long)mg_state_n_past(st));
    rc = mg_eval(st, ok, 2, NULL, MG_LOGITS_LAST);
    CHECK(rc == MG_ERR_INVALID_ARG && strstr(mg_last_error(), "NULL"), "NULL logits: %s", mg_last_error());
    rc = mg_eval(st, ok, 2, lg, (mg_logits_mode)7);
    CHECK(rc == MG_ERR_INVALID_ARG, "bad mode");
    CHECK(mg_state_set_cema(st, (mg_cema_algo)9) == MG_ERR_INVALID_ARG, "bad CEMA algo");

    mg_state_params sp = mg_state_default_params();
    sp.n_batch = -3;
    mg_state *bad = (mg_state *)1;
    rc = mg_state_new(m, &sp, &bad);
    CHECK(rc == MG_ERR_INVALID_ARG && bad == NULL && strstr(mg_last_error(), "n_batch"), "n_batch: %s",
          mg_last_error());
    sp = mg_state_default_params();
    sp.cema = (mg_cema_algo)5;
    rc = mg_state_new(m, &sp, &bad);
    CHECK(rc == MG_ERR_INVALID_ARG && strstr(mg_last_error(), "CEMA"), "cema: %s", mg_last_error());
    free(lg);
    mg_state_free(st);
    mg_model_free(m);

    /* an instruction set that this build or CPU does not have */
    setenv("MEGALODON_ISA", "avx9000", 1);
    rc = mg_model_load(path, NULL, &m);
    CHECK(rc == MG_ERR_UNSUPPORTED && strstr(mg_last_error(), "MEGALODON_ISA=avx9000"), "ISA: %d %s",
          rc, mg_last_error());
    unsetenv("MEGALODON_ISA");
    CHECK(strcmp(mg_status_str(MG_ERR_MODEL), "invalid model") == 0, "status text");
}

int main(void)
{
    if (test_make_tmpdir(dir, sizeof dir, "test-bad") != 0) return 1;
    snprintf(path, sizeof path, "%s/model.gguf", dir);
    test_models();
    test_weight_types();
    test_file_damage();
    test_eval_args();
    unlink(path);
    rmdir(dir);
    return test_finish("test-badinput");
}

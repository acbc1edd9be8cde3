/* test-state - the streaming state: save/restore is bit-exact and continues identically, a
 * bad state file is refused without touching the state, the state's size does not depend on
 * how many tokens were seen, and reset gives back a fresh state. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "golden.h"
#include "model.h"
#include "state-bytes.h"
#include "test.h"
#include "tiny_model.h"


static int same_state(const mg_state *a, const mg_state *b)
{
    size_t na = state_bytes(a, NULL), nb = state_bytes(b, NULL);
    if (na != nb) return 0;
    unsigned char *x = malloc(na), *y = malloc(nb);
    state_bytes(a, x);
    state_bytes(b, y);
    int same = memcmp(x, y, na) == 0;
    free(x);
    free(y);
    return same;
}

static char tmpdir[256];

static void test_roundtrip(const mg_model *m, const golden_case *gc, mg_cema_algo algo)
{
    const int V = mg_model_n_vocab(m);
    float *la = malloc(sizeof(float) * (size_t)gc->L * V), *lb = malloc(sizeof(float) * (size_t)gc->L * V);
    char path[512];
    snprintf(path, sizeof path, "%s/state.gguf", tmpdir);
    const int splits[] = {1, 5, 8, 13, 16, 21};
    for (size_t si = 0; si < sizeof splits / sizeof splits[0]; si++) {
        int k = splits[si];
        mg_state_params sp = mg_state_default_params();
        sp.cema = algo;
        mg_state *a, *b;
        CHECK(mg_state_new(m, &sp, &a) == MG_OK && mg_state_new(m, &sp, &b) == MG_OK, "new");
        CHECK(mg_eval(a, gc->tokens, (size_t)k, la, MG_LOGITS_ALL) == MG_OK, "eval: %s", mg_last_error());
        CHECK(mg_state_save(a, path) == MG_OK, "save: %s", mg_last_error());
        CHECK(mg_state_load(b, path) == MG_OK, "load: %s", mg_last_error());
        CHECK(same_state(a, b), "split %d: restored state differs from the saved one", k);
        /* both continue identically, bit for bit */
        size_t rest = (size_t)(gc->L - k);
        CHECK(mg_eval(a, gc->tokens + k, rest, la + (size_t)k * V, MG_LOGITS_ALL) == MG_OK, "eval a");
        CHECK(mg_eval(b, gc->tokens + k, rest, lb + (size_t)k * V, MG_LOGITS_ALL) == MG_OK, "eval b");
        CHECK(memcmp(la + (size_t)k * V, lb + (size_t)k * V, sizeof(float) * rest * V) == 0,
              "split %d: logits after restore differ", k);
        CHECK(same_state(a, b), "split %d: final states differ", k);
        CHECK_CLOSE("restored run vs reference", lb + (size_t)k * V, gc->logits + (size_t)k * V,
                    rest * V, 1e-4);
        mg_state_free(a);
        mg_state_free(b);
    }
    unlink(path);
    free(la);
    free(lb);
}

static void test_bad_files(const mg_model *m, const golden_case *gc)
{
    char good[512], bad[512], other[512];
    snprintf(good, sizeof good, "%s/good.gguf", tmpdir);
    snprintf(bad, sizeof bad, "%s/bad.gguf", tmpdir);
    snprintf(other, sizeof other, "%s/other-model.gguf", tmpdir);
    mg_state *st, *ref;
    CHECK(mg_state_new(m, NULL, &st) == MG_OK && mg_state_new(m, NULL, &ref) == MG_OK, "new");
    CHECK(mg_eval(st, gc->tokens, 11, NULL, MG_LOGITS_NONE) == MG_OK, "eval");
    CHECK(mg_eval(ref, gc->tokens, 11, NULL, MG_LOGITS_NONE) == MG_OK, "eval");
    CHECK(mg_state_save(st, good) == MG_OK, "save: %s", mg_last_error());

    /* truncated copies of a good file: every one refused, the state untouched */
    long size = 0;
    unsigned char *bytes = test_read_file(good, &size);
    CHECK(bytes != NULL, "cannot read %s", good);
    if (!bytes) return;
    int refused = 0, tried = 0;
    for (long cut = 0; cut < size; cut += 37) {
        FILE *o = fopen(bad, "wb");
        fwrite(bytes, 1, cut, o);
        fclose(o);
        tried++;
        if (mg_state_load(st, bad) < 0) refused++;
    }
    CHECK(refused == tried, "%d of %d truncated state files were accepted", tried - refused, tried);
    CHECK(same_state(st, ref), "a refused state file changed the state");
    free(bytes);

    /* a model file is not a state file */
    int rc = mg_state_load(st, gc->model_path);
    CHECK(rc == MG_ERR_STATE && strstr(mg_last_error(), "not a state file"), "model as state: %d %s",
          rc, mg_last_error());
    CHECK(same_state(st, ref), "a refused state file changed the state");

    /* a state made for a model of other shapes */
    tiny_opts o = tiny_default_opts();
    CHECK(tiny_model_write(other, &o) == MG_OK, "tiny model: %s", mg_last_error());
    mg_model *m2;
    mg_state *s2;
    CHECK(mg_model_load(other, NULL, &m2) == MG_OK, "load tiny: %s", mg_last_error());
    CHECK(mg_state_new(m2, NULL, &s2) == MG_OK, "new");
    char s2path[512];
    snprintf(s2path, sizeof s2path, "%s/s2.gguf", tmpdir);
    CHECK(mg_state_save(s2, s2path) == MG_OK, "save");
    rc = mg_state_load(st, s2path);
    CHECK(rc == MG_ERR_STATE && strstr(mg_last_error(), "another model"), "other model: %d %s", rc,
          mg_last_error());
    CHECK(same_state(st, ref), "a refused state file changed the state");
    mg_state_free(s2);
    mg_model_free(m2);

    /* missing file, unwritable place */
    rc = mg_state_load(st, "/nonexistent/dir/state.gguf");
    CHECK(rc == MG_ERR_IO && strstr(mg_last_error(), "/nonexistent/dir/state.gguf"), "missing: %d %s",
          rc, mg_last_error());
    rc = mg_state_save(st, "/nonexistent/dir/state.gguf");
    CHECK(rc == MG_ERR_IO, "save into a missing directory: %d %s", rc, mg_last_error());
    unlink(good);
    unlink(bad);
    unlink(other);
    unlink(s2path);
    mg_state_free(st);
    mg_state_free(ref);
}

static void test_size_and_reset(const mg_model *m, const golden_case *gc)
{
    const int V = mg_model_n_vocab(m);
    mg_state *st;
    CHECK(mg_state_new(m, NULL, &st) == MG_OK, "new");
    size_t s0 = mg_state_size(st);
    /* 10000 tokens of context: the carried state has exactly the same size */
    enum { N = 10000 };
    int32_t *toks = malloc(sizeof(int32_t) * N);
    for (int i = 0; i < N; i++) toks[i] = gc->tokens[i % gc->L];
    CHECK(mg_eval(st, toks, N, NULL, MG_LOGITS_NONE) == MG_OK, "long eval: %s", mg_last_error());
    CHECK(mg_state_size(st) == s0, "state size grew from %zu to %zu", s0, mg_state_size(st));
    CHECK(mg_state_n_past(st) == N, "n_past %llu", (unsigned long long)mg_state_n_past(st));
    float *fin = malloc(sizeof(float) * V);
    CHECK(mg_eval(st, toks, 1, fin, MG_LOGITS_LAST) == MG_OK, "eval");
    int finite = 1;
    for (int v = 0; v < V; v++) finite &= isfinite(fin[v]);
    CHECK(finite, "logits after 10000 tokens are not finite");

    /* reset: the same as a new state */
    mg_state_reset(st);
    mg_state *fresh;
    CHECK(mg_state_new(m, NULL, &fresh) == MG_OK, "new");
    CHECK(same_state(st, fresh), "reset state differs from a new one");
    float *l = malloc(sizeof(float) * (size_t)gc->L * V);
    CHECK(mg_eval(st, gc->tokens, (size_t)gc->L, l, MG_LOGITS_ALL) == MG_OK, "eval");
    CHECK_CLOSE("after reset vs reference", l, gc->logits, (size_t)gc->L * V, 1e-4);
    free(l);
    free(fin);
    free(toks);
    mg_state_free(fresh);
    mg_state_free(st);
}

int main(void)
{
    if (test_make_tmpdir(tmpdir, sizeof tmpdir, "test-state") != 0) return 1;
    golden_case gc;
    if (golden_open("base", &gc) != MG_OK) return 1;
    mg_model *m;
    if (mg_model_load(gc.model_path, NULL, &m) != MG_OK) {
        fprintf(stderr, "%s\n", mg_last_error());
        return 1;
    }
    test_roundtrip(m, &gc, MG_CEMA_SCAN);
    test_roundtrip(m, &gc, MG_CEMA_FFT);
    test_bad_files(m, &gc);
    test_size_and_reset(m, &gc);
    mg_model_free(m);
    golden_close(&gc);
    rmdir(tmpdir);
    return test_finish("test-state");
}

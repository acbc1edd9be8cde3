/* test-tokenizer.c - the tokenizer (lib/tokenizer.c, docs/tokenizer.md):
 *   1. SentencePiece's own ids for BPE vocabularies trained by tests/tokenizer_cases.py (with
 *      byte fallback, with unused and user-defined pieces, with <unk> instead of bytes);
 *   2. the LLaMA-2 vocabulary (tests/data/llama2-tokenizer) on the held-out books, the README
 *      example and decoding round trips;
 *   3. the byte tokenizer; 4. malformed tokenizer keys; 5. buffers, BOS and models without
 *      a tokenizer.
 * Parts 1-2 need /usr/bin/python3 with sentencepiece and the corpus ($MG_SHARED_DIR/data/corpus
 * or $MG_TOP_SRCDIR/../shared/data/corpus); without them the other parts still run and the
 * test ends as SKIP (77) if they pass. */
#include "config.h" /* feature macros (_GNU_SOURCE) from configure */

#include "gguf.h"
#include "megalodon.h"
#include "test.h"
#include "tiny_model.h"

#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NO_KEY INT64_MIN
#define SP "\xe2\x96\x81" /* U+2581 */

static char tmpdir[4096];
static char skip_reason[1024];

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* ------------------------------------------------------------------ model files */

typedef struct {
    const char *model;               /* tokenizer.ggml.model; NULL: no tokenizer keys */
    char **tokens;                   /* NULL: key omitted */
    uint64_t n_tokens;
    const float *scores;             /* NULL: key omitted */
    uint64_t n_scores;
    const int32_t *types;            /* NULL: key omitted */
    uint64_t n_types;
    int64_t bos, eos, unk, pad;      /* NO_KEY: key omitted */
    int add_space_prefix;            /* -1: key omitted */
    int n_vocab;                     /* rows of the embedding */
    void (*tweak)(gguf_writer *w);   /* last changes (to break keys) */
} tok_spec;

static tok_spec spec_init(void)
{
    tok_spec s;
    memset(&s, 0, sizeof s);
    s.bos = s.eos = s.unk = s.pad = NO_KEY;
    s.add_space_prefix = -1;
    return s;
}

/* A tiny random model (tests/tiny_model.c) with the tokenizer keys of `s`. */
static int write_model(const char *path, const tok_spec *s)
{
    char tiny[4200];
    snprintf(tiny, sizeof tiny, "%s/tiny.gguf", tmpdir);
    tiny_opts o = tiny_default_opts();
    o.n_vocab = s->n_vocab ? s->n_vocab : 64;
    o.share_emb = 1;
    int rc = tiny_model_write(tiny, &o);
    if (rc) return rc;
    gguf_file *f = NULL;
    if ((rc = gguf_open(tiny, &f))) return rc;
    gguf_writer *w = gguf_writer_new();
    if (!w) rc = MG_ERR_NOMEM;
    for (int64_t i = 0; !rc && i < gguf_n_kv(f); i++) rc = gguf_copy_kv(w, f, i);
    for (int64_t i = 0; !rc && i < gguf_n_tensors(f); i++) {
        const gguf_tensor_info *t = gguf_tensor(f, i);
        rc = gguf_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data);
    }
    if (!rc && s->model) rc = gguf_set_str(w, "tokenizer.ggml.model", s->model);
    if (!rc && s->tokens)
        rc = gguf_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)s->tokens,
                              s->n_tokens);
    if (!rc && s->scores)
        rc = gguf_set_arr(w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, s->scores, s->n_scores);
    if (!rc && s->types)
        rc = gguf_set_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, s->types, s->n_types);
    const struct { const char *key; int64_t v; } ids[] = {
        {"tokenizer.ggml.bos_token_id", s->bos},
        {"tokenizer.ggml.eos_token_id", s->eos},
        {"tokenizer.ggml.unknown_token_id", s->unk},
        {"tokenizer.ggml.padding_token_id", s->pad},
    };
    for (size_t i = 0; !rc && i < sizeof ids / sizeof ids[0]; i++) {
        if (ids[i].v == NO_KEY) continue;
        if (ids[i].v >= 0 && ids[i].v <= UINT32_MAX)
            rc = gguf_set_u32(w, ids[i].key, (uint32_t)ids[i].v);
        else
            rc = gguf_set_i64(w, ids[i].key, ids[i].v);
    }
    if (!rc && s->add_space_prefix >= 0)
        rc = gguf_set_bool(w, "tokenizer.ggml.add_space_prefix", s->add_space_prefix);
    if (!rc && s->tweak) s->tweak(w);
    if (!rc) rc = gguf_write_file(w, path);
    gguf_writer_free(w);
    gguf_close(f);
    unlink(tiny);
    return rc;
}

static mg_model *load_spec(const tok_spec *s, const char *name)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s.gguf", tmpdir, name);
    int rc = write_model(path, s);
    CHECK(rc == MG_OK, "writing %s: %s", name, mg_last_error());
    if (rc) return NULL;
    mg_model *m = NULL;
    rc = mg_model_load(path, NULL, &m);
    CHECK(rc == MG_OK, "loading %s: %s", name, mg_last_error());
    unlink(path);
    return m;
}

/* ------------------------------------------------------------------ vocabularies */

typedef struct {
    int n;
    char **tokens;
    float *scores;
    int32_t *types;
    int64_t bos, eos, unk, pad;
    int add_space_prefix;
} vocab;

static void vocab_free(vocab *v)
{
    if (v->tokens)
        for (int i = 0; i < v->n; i++) free(v->tokens[i]);
    free(v->tokens);
    free(v->scores);
    free(v->types);
    memset(v, 0, sizeof *v);
}

static int vocab_alloc(vocab *v, int n)
{
    memset(v, 0, sizeof *v);
    v->n = n;
    v->tokens = calloc(n, sizeof *v->tokens);
    v->scores = calloc(n, sizeof *v->scores);
    v->types = calloc(n, sizeof *v->types);
    v->bos = v->eos = v->unk = v->pad = -1;
    v->add_space_prefix = 1;
    return v->tokens && v->scores && v->types ? 0 : -1;
}

static tok_spec vocab_spec(const vocab *v, int n_vocab)
{
    tok_spec s = spec_init();
    s.model = "llama";
    s.tokens = v->tokens;
    s.n_tokens = s.n_scores = s.n_types = v->n;
    s.scores = v->scores;
    s.types = v->types;
    s.bos = v->bos >= 0 ? v->bos : NO_KEY;
    s.eos = v->eos >= 0 ? v->eos : NO_KEY;
    s.unk = v->unk >= 0 ? v->unk : NO_KEY;
    s.pad = v->pad >= 0 ? v->pad : NO_KEY;
    s.add_space_prefix = v->add_space_prefix;
    s.n_vocab = n_vocab ? n_vocab : v->n;
    return s;
}

/* The NAME.vocab file of tests/tokenizer_cases.py. */
static int vocab_read(const char *path, vocab *v)
{
    memset(v, 0, sizeof *v);
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return -1;
    }
    char model[32];
    int asp, n;
    long long bos, eos, unk, pad;
    int ok = fscanf(f, "model %31s add_space_prefix %d bos %lld eos %lld unk %lld pad %lld n %d",
                    model, &asp, &bos, &eos, &unk, &pad, &n) == 7 &&
             strcmp(model, "llama") == 0 && n > 0 && vocab_alloc(v, n) == 0;
    if (ok) {
        v->bos = bos, v->eos = eos, v->unk = unk, v->pad = pad, v->add_space_prefix = asp;
        char hex[8192];
        for (int i = 0; ok && i < n; i++) {
            int type;
            ok = fscanf(f, "%d %f %8191s", &type, &v->scores[i], hex) == 3;
            size_t hl = strlen(hex);
            v->types[i] = type;
            v->tokens[i] = ok ? malloc(hl / 2 + 1) : NULL;
            if (!v->tokens[i]) {
                ok = 0;
                break;
            }
            for (size_t j = 0; j < hl / 2; j++) {
                unsigned b;
                sscanf(hex + 2 * j, "%2x", &b);
                v->tokens[i][j] = (char)b;
            }
            v->tokens[i][hl / 2] = '\0';
        }
    }
    fclose(f);
    if (!ok) {
        fprintf(stderr, "%s: malformed vocabulary file\n", path);
        vocab_free(v);
    }
    return ok ? 0 : -1;
}

/* ------------------------------------------------------------------ case files */

typedef struct {
    char *data;
    size_t size, pos;
} reader;

static int read_file(const char *path, reader *r)
{
    memset(r, 0, sizeof *r);
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    r->data = malloc(sz > 0 ? (size_t)sz + 1 : 1);
    if (!r->data || fread(r->data, 1, (size_t)sz, f) != (size_t)sz) {
        fclose(f);
        free(r->data);
        return -1;
    }
    r->data[sz] = '\0';
    r->size = (size_t)sz;
    fclose(f);
    return 0;
}

typedef struct {
    char name[256];
    const char *text;
    size_t len;
    int32_t *ids;
    size_t n_ids;
    const char *dec; /* NULL: not compared */
    size_t dec_len;
} tcase;

/* Next record; 1 = got one, 0 = end, -1 = malformed. */
static int next_case(reader *r, tcase *c)
{
    free(c->ids);
    memset(c, 0, sizeof *c);
    if (r->pos >= r->size) return 0;
    char *p = r->data + r->pos;
    unsigned long long nb, ni;
    int hl = 0;
    /* (no "\n" in the formats: it would also skip the text's leading whitespace) */
    if (sscanf(p, "case %255s %llu %llu%n", c->name, &nb, &ni, &hl) != 3 || p[hl] != '\n')
        return -1;
    p += hl + 1;
    if ((size_t)(p - r->data) + nb + 1 > r->size) return -1;
    c->text = p;
    c->len = nb;
    p += nb + 1;
    c->ids = malloc((ni ? ni : 1) * sizeof *c->ids);
    if (!c->ids) return -1;
    c->n_ids = ni;
    for (size_t i = 0; i < ni; i++) {
        char *e;
        c->ids[i] = (int32_t)strtol(p, &e, 10);
        if (e == p) return -1;
        p = e;
    }
    if (*p != '\n') return -1;
    p++;
    long long dl;
    hl = 0;
    if (sscanf(p, "dec %lld%n", &dl, &hl) != 1 || p[hl] != '\n') return -1;
    p += hl + 1;
    if (dl >= 0) {
        if ((size_t)(p - r->data) + (size_t)dl + 1 > r->size) return -1;
        c->dec = p;
        c->dec_len = (size_t)dl;
        p += dl + 1;
    }
    r->pos = (size_t)(p - r->data);
    return 1;
}

static void show_ids(const mg_model *m, const char *what, const int32_t *ids, size_t n, size_t at)
{
    size_t a = at > 4 ? at - 4 : 0, b = at + 5 < n ? at + 5 : n;
    fprintf(stderr, "  %s [%zu..%zu):", what, a, b);
    for (size_t i = a; i < b; i++) {
        const char *t = mg_token_text(m, ids[i]);
        fprintf(stderr, " %d'%s'", (int)ids[i], t ? t : "?");
    }
    fputc('\n', stderr);
}

static int is_byte_fallback(const vocab *v)
{
    for (int i = 0; i < v->n; i++)
        if (v->types[i] == 6) return 1;
    return 0;
}

/* Append `extra` unused placeholders "<unused_N>", as bin/megalodon-convert.py does for the
 * official additional_vocab_size rows: SentencePiece's ids must not change. */
static int vocab_add_unused(vocab *v, int extra)
{
    const int n0 = v->n, n = n0 + extra;
    char **t = realloc(v->tokens, n * sizeof *t);
    if (t) v->tokens = t;
    float *sc = realloc(v->scores, n * sizeof *sc);
    if (sc) v->scores = sc;
    int32_t *ty = realloc(v->types, n * sizeof *ty);
    if (ty) v->types = ty;
    if (!t || !sc || !ty) return -1;
    for (int i = n0; i < n; i++) {
        char name[32];
        snprintf(name, sizeof name, "<unused_%d>", i - n0);
        v->tokens[i] = strdup(name);
        v->scores[i] = 0;
        v->types[i] = 5;
        v->n = i + 1;
        if (!v->tokens[i]) return -1;
    }
    return 0;
}

/* Compare every case of NAME.cases (with `extra` unused placeholders appended to the
 * vocabulary); returns the number of failed cases. */
/* The llama2 vocabulary: the README example, a few pieces, and counting 1 MiB of the books
 * of the case file r (c: the case buffer of run_cases, reused). */
static void check_llama2(mg_model *m, const char *name, const reader *r, tcase *c)
{
    /* the README example */
    int32_t ids[8];
    size_t n = 0;
    CHECK_OK(mg_tokenize(m, "Hello world!", 12, 0, ids, 8, &n));
    CHECK(n == 3 && ids[0] == 15043 && ids[1] == 3186 && ids[2] == 29991,
          "Hello world! -> %zu ids %d %d %d", n, ids[0], ids[1], ids[2]);
    CHECK_OK(mg_tokenize(m, "Hello world!", 12, 1, ids, 8, &n));
    CHECK(n == 4 && ids[0] == 1 && ids[1] == 15043, "with BOS: %zu ids, %d %d", n, ids[0],
          ids[1]);
    CHECK(mg_token_bos(m) == 1 && mg_token_eos(m) == 2, "bos %d eos %d", mg_token_bos(m),
          mg_token_eos(m));
    const char *t = mg_token_text(m, 15043);
    CHECK(t && strcmp(t, SP "Hello") == 0, "text of 15043: %s", t ? t : "(null)");
    t = mg_token_text(m, 13);
    CHECK(t && strcmp(t, "<0x0A>") == 0, "text of 13: %s", t ? t : "(null)");
    t = mg_token_text(m, 1);
    CHECK(t && strcmp(t, "<s>") == 0, "text of 1: %s", t ? t : "(null)");

    /* a 1 MB text: the books concatenated */
    size_t big_len = 0;
    char *big = malloc(1 << 20);
    reader r2 = *r;
    r2.pos = 0;
    while (big && big_len < (1 << 20) && next_case(&r2, c) == 1)
        if (strncmp(c->name, "book-", 5) == 0) {
            size_t k = c->len < (1u << 20) - big_len ? c->len : (1u << 20) - big_len;
            memcpy(big + big_len, c->text, k);
            big_len += k;
        }
    if (big && big_len == (1 << 20)) {
        double t0 = now();
        size_t nb = 0;
        int rc2 = mg_tokenize(m, big, big_len, 1, NULL, 0, &nb);
        CHECK(rc2 == MG_ERR_INVALID_ARG && nb > 200000, "counting 1 MiB: %d, %zu", rc2, nb);
        printf("%s: 1 MiB of text (%zu tokens) counted in %.3f s\n", name, nb, now() - t0);
    }
    free(big);
}

static int run_cases(const char *dir, const char *vocab_name, int extra)
{
    char path[4600], name[300];
    vocab v;
    snprintf(path, sizeof path, "%s/%s.vocab", dir, vocab_name);
    if (extra)
        snprintf(name, sizeof name, "%s+%d-unused", vocab_name, extra);
    else
        snprintf(name, sizeof name, "%s", vocab_name);
    if (vocab_read(path, &v) || vocab_add_unused(&v, extra)) {
        CHECK(0, "cannot read %s", path);
        vocab_free(&v);
        return 1;
    }
    tok_spec s = vocab_spec(&v, 0);
    mg_model *m = load_spec(&s, name);
    reader r;
    snprintf(path, sizeof path, "%s/%s.cases", dir, vocab_name);
    CHECK(read_file(path, &r) == 0, "cannot read %s", path);
    if (!m || !r.data) {
        vocab_free(&v);
        mg_model_free(m);
        free(r.data);
        return 1;
    }
    const int round_trip = is_byte_fallback(&v);
    size_t cap = 1 << 16, n_cases = 0, ok_cases = 0, n_ids = 0, ok_ids = 0, n_dec = 0,
           ok_dec = 0, n_rt = 0, ok_rt = 0, reported = 0, book_bytes = 0, book_ids = 0;
    double book_time = 0;
    int32_t *out = malloc(cap * sizeof *out);
    char *dec = malloc(cap);
    size_t dec_cap = cap;
    tcase c;
    memset(&c, 0, sizeof c);
    int rc = 0;
    while (out && dec && (rc = next_case(&r, &c)) == 1) {
        n_cases++;
        size_t n = 0;
        double t0 = now();
        int trc = mg_tokenize(m, c.text, c.len, 0, out, cap, &n);
        if (trc == MG_ERR_INVALID_ARG && n > cap) {
            cap = n;
            int32_t *o2 = realloc(out, cap * sizeof *out);
            if (!o2) break;
            out = o2;
            t0 = now();
            trc = mg_tokenize(m, c.text, c.len, 0, out, cap, &n);
        }
        double t1 = now();
        if (strncmp(c.name, "book-", 5) == 0) {
            book_bytes += c.len;
            book_ids += n;
            book_time += t1 - t0;
        }
        CHECK(trc == MG_OK, "%s/%s: mg_tokenize: %s", name, c.name, mg_last_error());
        size_t same = 0;
        while (trc == MG_OK && same < n && same < c.n_ids && out[same] == c.ids[same]) same++;
        n_ids += c.n_ids;
        if (trc == MG_OK && n == c.n_ids && same == n) {
            ok_cases++;
            ok_ids += n;
        } else {
            ok_ids += same;
            if (reported++ < 5) {
                fprintf(stderr, "FAIL %s/%s: %zu ids, SentencePiece %zu; first difference at %zu\n",
                        name, c.name, n, c.n_ids, same);
                show_ids(m, "ours        ", out, n, same);
                show_ids(m, "SentencePiece", c.ids, c.n_ids, same);
            }
        }
        /* SentencePiece's decode of its ids */
        size_t need = 0;
        if (c.dec) {
            n_dec++;
            if (mg_detokenize(m, c.ids, c.n_ids, 1, dec, dec_cap, &need) == MG_OK &&
                need >= dec_cap) {
                free(dec);
                dec_cap = need + 1;
                if (!(dec = malloc(dec_cap))) break;
                mg_detokenize(m, c.ids, c.n_ids, 1, dec, dec_cap, &need);
            }
            if (need == c.dec_len && memcmp(dec, c.dec, need) == 0)
                ok_dec++;
            else if (reported++ < 5)
                fprintf(stderr, "FAIL %s/%s: decoding gives %zu bytes '%.*s', SentencePiece %zu "
                        "'%.*s'\n", name, c.name, need, (int)(need < 200 ? need : 200), dec,
                        c.dec_len, (int)(c.dec_len < 200 ? c.dec_len : 200), c.dec);
        }
        /* round trip (literal U+2581 decodes to a space, so those texts are left out) */
        if (round_trip && trc == MG_OK && !memmem(c.text, c.len, SP, 3)) {
            n_rt++;
            if (mg_detokenize(m, out, n, 1, dec, dec_cap, &need) == MG_OK && need >= dec_cap) {
                free(dec);
                dec_cap = need + 1;
                if (!(dec = malloc(dec_cap))) break;
                mg_detokenize(m, out, n, 1, dec, dec_cap, &need);
            }
            if (need == c.len && memcmp(dec, c.text, need) == 0)
                ok_rt++;
            else if (reported++ < 5)
                fprintf(stderr, "FAIL %s/%s: the round trip gives %zu bytes, the text is %zu\n",
                        name, c.name, need, c.len);
        }
    }
    CHECK(rc == 0, "%s: malformed case file after %zu cases", name, n_cases);
    CHECK(n_cases > 0, "%s: no cases", name);
    CHECK(ok_cases == n_cases, "%s: %zu of %zu cases differ from SentencePiece", name,
          n_cases - ok_cases, n_cases);
    CHECK(ok_dec == n_dec, "%s: %zu of %zu decodings differ from SentencePiece's", name,
          n_dec - ok_dec, n_dec);
    CHECK(ok_rt == n_rt, "%s: %zu of %zu round trips failed", name, n_rt - ok_rt, n_rt);
    printf("%s: %zu/%zu cases and %zu/%zu ids equal to SentencePiece's, %zu/%zu decodings "
           "equal, %zu/%zu round trips exact\n",
           name, ok_cases, n_cases, ok_ids, n_ids, ok_dec, n_dec, ok_rt, n_rt);
    if (book_time > 0)
        printf("%s: encoded %zu bytes of books into %zu ids in %.3f s (%.0f tokens/s, %.1f "
               "MB/s)\n",
               name, book_bytes, book_ids, book_time, book_ids / book_time,
               book_bytes / book_time / 1e6);

    if (strcmp(vocab_name, "llama2") == 0) check_llama2(m, name, &r, &c);
    free(c.ids);
    free(out);
    free(dec);
    free(r.data);
    mg_model_free(m);
    vocab_free(&v);
    return (int)(n_cases - ok_cases);
}

static void rm_rf(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[4600];
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

/* Parts 1 and 2: run tests/tokenizer_cases.py and compare with its files. */
static void test_sentencepiece(void)
{
    const char *top = getenv("MG_TOP_SRCDIR");
    if (!top || !*top) top = ".";
    const char *py = "/usr/bin/python3";
    if (access(py, X_OK) != 0) {
        snprintf(skip_reason, sizeof skip_reason, "%s is missing: no SentencePiece comparison",
                 py);
        return;
    }
    char dir[4200], cmd[12000];
    snprintf(dir, sizeof dir, "%s/cases", tmpdir);
    snprintf(cmd, sizeof cmd, "'%s' '%s/tests/tokenizer_cases.py' '%s'", py, top, dir);
    double t0 = now();
    int st = system(cmd);
    printf("tokenizer_cases.py: %.1f s\n", now() - t0);
    fflush(stdout);
    if (st == -1 || !WIFEXITED(st)) {
        CHECK(0, "cannot run %s", cmd);
        return;
    }
    if (WEXITSTATUS(st) == 77) {
        snprintf(skip_reason, sizeof skip_reason, "tokenizer_cases.py cannot run (see above)");
        rm_rf(dir);
        return;
    }
    CHECK(WEXITSTATUS(st) == 0, "%s failed with status %d", cmd, WEXITSTATUS(st));
    char path[4400];
    snprintf(path, sizeof path, "%s/skip", dir);
    FILE *f = fopen(path, "r");
    if (f) {
        if (!fgets(skip_reason, sizeof skip_reason, f)) strcpy(skip_reason, "(no reason)");
        skip_reason[strcspn(skip_reason, "\n")] = '\0';
        fclose(f);
    }
    snprintf(path, sizeof path, "%s/index", dir);
    f = fopen(path, "r");
    CHECK(f != NULL, "no %s", path);
    char name[256];
    int n = 0;
    while (f && fscanf(f, "%255s", name) == 1) {
        run_cases(dir, name, 0);
        if (strcmp(name, "llama2") == 0) run_cases(dir, name, 256);
        n++;
    }
    if (f) fclose(f);
    CHECK(n > 0, "no vocabularies in %s", path);
    rm_rf(dir);
}

/* ------------------------------------------------------------------ a hand-made vocabulary */

static const char *const hand_pieces[] = {
    SP "h", "ll", SP "he", "llo", SP "hello", "or", SP "w", "ld", SP "wor", SP "world",
    SP, "h", "e", "l", "o", "w", "r", "d", "a", "aa", "\xc3\xa9", /* é */
};

/* <unk> <s> </s>, the 256 bytes, then hand_pieces (scores -1, -2, ...; singles -20...) */
static void hand_vocab(vocab *v, int with_bytes)
{
    const int np = (int)(sizeof hand_pieces / sizeof hand_pieces[0]);
    vocab_alloc(v, 3 + (with_bytes ? 256 : 0) + np);
    int k = 0;
    const char *sp3[] = {"<unk>", "<s>", "</s>"};
    for (int i = 0; i < 3; i++, k++) {
        v->tokens[k] = strdup(sp3[i]);
        v->types[k] = i == 0 ? 2 : 3;
    }
    for (int b = 0; with_bytes && b < 256; b++, k++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        v->tokens[k] = strdup(name);
        v->types[k] = 6;
    }
    for (int i = 0; i < np; i++, k++) {
        v->tokens[k] = strdup(hand_pieces[i]);
        v->types[k] = 1;
        v->scores[k] = i < 10 ? -(float)(i + 1) : -(float)(i + 10);
    }
    v->unk = 0;
    v->bos = 1;
    v->eos = 2;
}

static int32_t hand_id(const vocab *v, const char *piece)
{
    for (int i = 0; i < v->n; i++)
        if (strcmp(v->tokens[i], piece) == 0) return i;
    return -1;
}

static int same_ids(const int32_t *a, size_t na, const int32_t *b, size_t nb)
{
    return na == nb && (na == 0 || memcmp(a, b, na * sizeof *a) == 0);
}

static void test_hand_vocab(void)
{
    vocab v;
    hand_vocab(&v, 1);
    tok_spec s = vocab_spec(&v, v.n + 10); /* a few embedding rows past the vocabulary */
    mg_model *m = load_spec(&s, "hand");
    if (!m) {
        vocab_free(&v);
        return;
    }
    CHECK(mg_model_has_tokenizer(m) == 1, "has tokenizer");
    int32_t ids[64];
    size_t n = 0;
    /* merges by score: "hello world" -> ▁hello ▁world */
    CHECK_OK(mg_tokenize(m, "hello world", 11, 0, ids, 64, &n));
    int32_t want[] = {hand_id(&v, SP "hello"), hand_id(&v, SP "world")};
    CHECK(same_ids(ids, n, want, 2), "hello world: %zu ids %d %d", n, ids[0], ids[1]);
    /* equal scores: the leftmost pair first: "aaa" -> ▁ aa a */
    CHECK_OK(mg_tokenize(m, "aaa", 3, 0, ids, 64, &n));
    int32_t want2[] = {hand_id(&v, SP), hand_id(&v, "aa"), hand_id(&v, "a")};
    CHECK(same_ids(ids, n, want2, 3), "aaa: %zu ids %d %d %d", n, ids[0], ids[1], ids[2]);
    /* byte fallback for unknown characters and invalid UTF-8; é is a piece */
    CHECK_OK(mg_tokenize(m, "h\xe2\x82\xac\xff\xc3\xa9\xc3", 8, 1, ids, 64, &n));
    int32_t want3[] = {1, hand_id(&v, SP "h"), 3 + 0xE2, 3 + 0x82, 3 + 0xAC, 3 + 0xFF,
                       hand_id(&v, "\xc3\xa9"), 3 + 0xC3};
    CHECK(same_ids(ids, n, want3, 8), "bytes: %zu ids", n);
    char buf[64];
    size_t len = 0;
    CHECK_OK(mg_detokenize(m, ids, n, 1, buf, sizeof buf, &len));
    CHECK(len == 8 && memcmp(buf, "h\xe2\x82\xac\xff\xc3\xa9\xc3", 8) == 0 && buf[8] == 0,
          "bytes round trip: %zu '%s'", len, buf);
    /* no dummy-prefix stripping when streaming (at_start = 0), and the <unk> surface */
    int32_t w[] = {hand_id(&v, SP "hello"), 0, 2, hand_id(&v, SP "world")};
    CHECK_OK(mg_detokenize(m, w, 4, 0, buf, sizeof buf, &len));
    CHECK(strcmp(buf, " hello \xe2\x81\x87  world") == 0 && len == strlen(buf), "'%s'", buf);
    CHECK_OK(mg_detokenize(m, w, 4, 1, buf, sizeof buf, &len));
    CHECK(strcmp(buf, "hello \xe2\x81\x87  world") == 0, "'%s'", buf);
    /* the id past the vocabulary but inside the embedding */
    CHECK(mg_token_text(m, v.n) == NULL, "text past the vocabulary");
    CHECK_ERR(mg_detokenize(m, (int32_t[]){v.n}, 1, 1, buf, sizeof buf, &len),
              MG_ERR_INVALID_ARG, "out of range");
    CHECK_ERR(mg_detokenize(m, (int32_t[]){-1}, 1, 1, buf, sizeof buf, &len), MG_ERR_INVALID_ARG,
              "out of range");
    CHECK_ERR(mg_tokenize(m, "x", 1, 0, NULL, 5, &n), MG_ERR_INVALID_ARG, "NULL");
    CHECK_ERR(mg_tokenize(m, NULL, 1, 0, ids, 5, &n), MG_ERR_INVALID_ARG, "NULL");
    CHECK_OK(mg_tokenize(m, NULL, 0, 0, ids, 5, &n));
    CHECK(n == 0, "empty text: %zu ids", n);
    mg_model_free(m);

    /* without byte tokens: runs of unknown characters become one <unk> */
    vocab_free(&v);
    hand_vocab(&v, 0);
    s = vocab_spec(&v, 0);
    m = load_spec(&s, "hand-unk");
    if (m) {
        CHECK_OK(mg_tokenize(m, "h\xe2\x82\xac\xff" "hello" "\xc3\xa9\xff", 13, 0, ids, 64, &n));
        int32_t want4[] = {hand_id(&v, SP "h"), 0, hand_id(&v, "h"), hand_id(&v, "e"),
                           hand_id(&v, "llo"), hand_id(&v, "\xc3\xa9"), 0};
        CHECK(same_ids(ids, n, want4, 7), "unk runs: %zu ids %d %d %d", n, ids[0], ids[1],
              ids[2]);
        mg_model_free(m);
    }
    /* without the dummy prefix */
    v.add_space_prefix = 0;
    s = vocab_spec(&v, 0);
    m = load_spec(&s, "hand-noprefix");
    if (m) {
        CHECK_OK(mg_tokenize(m, "hello world", 11, 0, ids, 64, &n));
        int32_t want5[] = {hand_id(&v, "h"), hand_id(&v, "e"), hand_id(&v, "llo"),
                           hand_id(&v, SP "world")};
        CHECK(same_ids(ids, n, want5, 4), "no prefix: %zu ids", n);
        CHECK_OK(mg_detokenize(m, ids, n, 1, buf, sizeof buf, &len));
        CHECK(strcmp(buf, "hello world") == 0, "'%s'", buf);
        mg_model_free(m);
    }
    vocab_free(&v);
}

/* ------------------------------------------------------------------ part 3: bytes */

static void test_byte_tokenizer(void)
{
    char *tok[258];
    int32_t types[258];
    for (int b = 0; b < 256; b++) {
        tok[b] = malloc(8);
        snprintf(tok[b], 8, "<0x%02X>", b);
        types[b] = 6;
    }
    tok[256] = strdup("<s>");
    tok[257] = strdup("</s>");
    types[256] = types[257] = 3;
    tok_spec s = spec_init();
    s.model = "byte";
    s.tokens = tok;
    s.n_tokens = s.n_types = 258;
    s.types = types;
    s.bos = 256;
    s.eos = 257;
    s.n_vocab = 260;
    mg_model *m = load_spec(&s, "byte");
    if (m) {
        CHECK(mg_token_bos(m) == 256 && mg_token_eos(m) == 257, "specials");
        uint32_t rng = 12345;
        unsigned char text[600];
        int32_t ids[700];
        char back[700];
        int bad = 0;
        for (int it = 0; it < 300; it++) {
            size_t len = it == 0 ? 0 : (size_t)(rng % 600);
            for (size_t i = 0; i < len; i++) {
                rng ^= rng << 13, rng ^= rng >> 17, rng ^= rng << 5;
                text[i] = (unsigned char)(it % 3 ? rng : rng % 4 + ' ');
            }
            rng ^= rng << 13, rng ^= rng >> 17, rng ^= rng << 5;
            size_t n = 0, bl = 0;
            int add_bos = it & 1;
            int rc = mg_tokenize(m, (const char *)text, len, add_bos, ids, 700, &n);
            if (rc || n != len + add_bos || (add_bos && ids[0] != 256)) {
                bad++;
                continue;
            }
            for (size_t i = 0; i < len; i++)
                if (ids[add_bos + i] != text[i]) bad++;
            if (mg_detokenize(m, ids, n, 1, back, sizeof back, &bl) || bl != len ||
                memcmp(back, text, len) != 0)
                bad++;
        }
        CHECK(bad == 0, "%d byte round trips failed", bad);
        int32_t w[] = {256, 'a', 257, ' ', 'b', 256};
        size_t bl;
        CHECK_OK(mg_detokenize(m, w, 6, 1, back, sizeof back, &bl));
        CHECK(bl == 3 && strcmp(back, "a b") == 0, "specials decode to nothing: '%s'", back);
        const char *t = mg_token_text(m, 'A');
        CHECK(t && strcmp(t, "<0x41>") == 0, "%s", t ? t : "(null)");
        t = mg_token_text(m, 257);
        CHECK(t && strcmp(t, "</s>") == 0, "%s", t ? t : "(null)");
        mg_model_free(m);
    }
    /* without the tokens key: just the bytes, no BOS */
    s = spec_init();
    s.model = "byte";
    s.n_vocab = 256;
    m = load_spec(&s, "byte-bare");
    if (m) {
        int32_t ids[8];
        size_t n;
        CHECK(mg_token_bos(m) == -1 && mg_token_eos(m) == -1, "no specials");
        CHECK_OK(mg_tokenize(m, "\x00\xff", 2, 1, ids, 8, &n));
        CHECK(n == 2 && ids[0] == 0 && ids[1] == 255, "bare bytes: %zu", n);
        const char *t = mg_token_text(m, 255);
        CHECK(t && strcmp(t, "<0xFF>") == 0, "%s", t ? t : "(null)");
        mg_model_free(m);
    }
    for (int b = 0; b < 258; b++) free(tok[b]);
}

/* ------------------------------------------------------------------ part 4: bad data */

static void tw_model_u32(gguf_writer *w) { gguf_set_u32(w, "tokenizer.ggml.model", 3); }
static void tw_scores_i32(gguf_writer *w)
{
    int32_t z[300] = {0};
    gguf_set_arr(w, "tokenizer.ggml.scores", GGUF_TYPE_INT32, z, 300);
}
static void tw_asp_str(gguf_writer *w)
{
    gguf_set_str(w, "tokenizer.ggml.add_space_prefix", "yes");
}
static void tw_bos_str(gguf_writer *w) { gguf_set_str(w, "tokenizer.ggml.bos_token_id", "1"); }
static void tw_types_u32(gguf_writer *w)
{
    uint32_t z[300] = {0};
    gguf_set_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_UINT32, z, 300);
}

static void expect_bad(const tok_spec *s, const char *what, const char *substr)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/bad.gguf", tmpdir);
    int rc = write_model(path, s);
    CHECK(rc == MG_OK, "%s: writing: %s", what, mg_last_error());
    if (rc) return;
    mg_model *m = NULL;
    rc = mg_model_load(path, NULL, &m);
    CHECK(rc == MG_ERR_MODEL && m == NULL, "%s: loaded with %d (%s)", what, rc, mg_last_error());
    CHECK(strstr(mg_last_error(), substr) != NULL, "%s: message '%s' lacks '%s'", what,
          mg_last_error(), substr);
    mg_model_free(m);
    unlink(path);
}

static void test_bad_data(void)
{
    vocab v;
    hand_vocab(&v, 1);
    const int n = v.n;
    tok_spec s;
    char *saved;
    float fs;
    int32_t ts;

#define RESET() (s = vocab_spec(&v, n))
    RESET();
    s.n_scores = n - 1;
    expect_bad(&s, "short scores", "tokenizer.ggml.scores");
    RESET();
    s.n_types = n - 1;
    expect_bad(&s, "short types", "tokenizer.ggml.token_type");
    RESET();
    s.bos = n;
    expect_bad(&s, "bos out of range", "tokenizer.ggml.bos_token_id");
    RESET();
    s.eos = 1000000;
    expect_bad(&s, "eos out of range", "tokenizer.ggml.eos_token_id");
    RESET();
    s.unk = -5;
    expect_bad(&s, "negative unk", "tokenizer.ggml.unknown_token_id");
    RESET();
    s.pad = n + 3;
    expect_bad(&s, "pad out of range", "tokenizer.ggml.padding_token_id");
    RESET();
    saved = v.tokens[n - 1];
    v.tokens[n - 1] = "\xff\xfeok";
    expect_bad(&s, "non-UTF-8 piece", "tokenizer.ggml.tokens[");
    v.tokens[n - 1] = "a\xed\xa0\x80";
    expect_bad(&s, "surrogate in a piece", "not valid UTF-8");
    v.tokens[n - 1] = "";
    expect_bad(&s, "empty piece", "tokenizer.ggml.tokens[");
    v.tokens[n - 1] = SP "h";
    expect_bad(&s, "duplicate piece", "appears twice");
    v.tokens[n - 1] = saved;
    RESET();
    s.model = "gpt2";
    expect_bad(&s, "unknown model", "tokenizer.ggml.model");
    RESET();
    s.tokens = NULL;
    expect_bad(&s, "no tokens", "tokenizer.ggml.tokens");
    RESET();
    s.scores = NULL;
    expect_bad(&s, "no scores", "tokenizer.ggml.scores");
    RESET();
    s.n_vocab = n - 1;
    expect_bad(&s, "more pieces than embedding rows", "tokenizer.ggml.tokens");
    RESET();
    ts = v.types[n - 1];
    v.types[n - 1] = 9;
    expect_bad(&s, "unknown type", "tokenizer.ggml.token_type[");
    v.types[n - 1] = 0;
    expect_bad(&s, "type 0", "tokenizer.ggml.token_type[");
    v.types[n - 1] = 6;
    expect_bad(&s, "byte type on a normal piece", "tokenizer.ggml.tokens[");
    v.types[n - 1] = ts;
    v.types[3 + 0x41] = 1; /* <0x41> no longer a byte: 255 byte tokens */
    expect_bad(&s, "255 byte tokens", "<0x41> is missing");
    v.types[3 + 0x41] = 6;
    v.types[1] = 2; /* two unknown tokens */
    expect_bad(&s, "two unknown tokens", "tokenizer.ggml.token_type");
    v.types[1] = 3;
    fs = v.scores[n - 1];
    v.scores[n - 1] = NAN;
    expect_bad(&s, "NaN score", "tokenizer.ggml.scores[");
    v.scores[n - 1] = fs;
    /* a key of another type, written over the spec's by a tweak (n_vocab 0: the spec's) */
    static const struct {
        const char *what;
        void (*tweak)(gguf_writer *w);
        int n_vocab;
        const char *substr;
    } retyped[] = {
        {"model not a string", tw_model_u32, 0, "tokenizer.ggml.model"},
        {"integer scores", tw_scores_i32, 400, "tokenizer.ggml.scores"},
        {"uint32 types", tw_types_u32, 400, "tokenizer.ggml.token_type"},
        {"add_space_prefix a string", tw_asp_str, 0, "tokenizer.ggml.add_space_prefix"},
        {"bos a string", tw_bos_str, 0, "tokenizer.ggml.bos_token_id"},
    };
    for (size_t i = 0; i < sizeof retyped / sizeof retyped[0]; i++) {
        RESET();
        s.tweak = retyped[i].tweak;
        if (retyped[i].n_vocab) s.n_vocab = retyped[i].n_vocab;
        expect_bad(&s, retyped[i].what, retyped[i].substr);
    }
    vocab_free(&v);

    /* no byte tokens and no unknown token: nothing to encode unknown characters with */
    hand_vocab(&v, 0);
    v.types[0] = 3;
    v.unk = -1;
    RESET();
    expect_bad(&s, "no bytes nor unk", "unknown");
    vocab_free(&v);

    /* byte tokenizers */
    s = spec_init();
    s.model = "byte";
    s.n_vocab = 200;
    expect_bad(&s, "byte model with 200 embedding rows", "tokenizer.ggml.tokens");
    s.n_vocab = 300;
    s.add_space_prefix = 1;
    expect_bad(&s, "byte model with a space prefix", "tokenizer.ggml.add_space_prefix");
    char *few[3] = {"<0x00>", "<0x01>", "<0x02>"};
    s = spec_init();
    s.model = "byte";
    s.n_vocab = 300;
    s.tokens = few;
    s.n_tokens = 3;
    expect_bad(&s, "byte model with 3 tokens", "tokenizer.ggml.tokens");
#undef RESET
}

/* ------------------------------------------------------------------ part 5: API */

static void test_api(void)
{
    /* no tokenizer */
    tok_spec s = spec_init();
    mg_model *m = load_spec(&s, "plain");
    if (m) {
        int32_t ids[4];
        size_t n = 99, len = 99;
        char buf[8];
        CHECK(mg_model_has_tokenizer(m) == 0, "plain model has a tokenizer");
        CHECK(mg_token_bos(m) == -1 && mg_token_eos(m) == -1, "plain model specials");
        CHECK_ERR(mg_tokenize(m, "hi", 2, 1, ids, 4, &n), MG_ERR_UNSUPPORTED,
                  "the model has no tokenizer");
        CHECK(n == 0, "n_out %zu", n);
        CHECK_ERR(mg_detokenize(m, ids, 0, 1, buf, sizeof buf, &len), MG_ERR_UNSUPPORTED,
                  "no tokenizer");
        CHECK(mg_token_text(m, 0) == NULL, "token text without a tokenizer");
        mg_model_free(m);
    }
    CHECK(mg_model_has_tokenizer(NULL) == 0 && mg_token_bos(NULL) == -1, "NULL model");
    size_t n0;
    CHECK_ERR(mg_tokenize(NULL, "x", 1, 0, NULL, 0, &n0), MG_ERR_INVALID_ARG, "model");

    /* buffers */
    vocab v;
    hand_vocab(&v, 1);
    s = vocab_spec(&v, 0);
    m = load_spec(&s, "hand-api");
    if (m) {
        int32_t ids[8] = {-7, -7, -7, -7, -7, -7, -7, -7};
        size_t n = 0;
        CHECK_ERR(mg_tokenize(m, "hello world", 11, 1, ids, 2, &n), MG_ERR_INVALID_ARG,
                  "needs 3 tokens");
        CHECK(n == 3 && ids[0] == 1 && ids[1] == hand_id(&v, SP "hello") && ids[2] == -7,
              "too small: n %zu, %d %d %d", n, ids[0], ids[1], ids[2]);
        CHECK_ERR(mg_tokenize(m, "hello world", 11, 0, NULL, 0, &n), MG_ERR_INVALID_ARG,
                  "buffer");
        CHECK(n == 2, "counting: %zu", n);
        CHECK_OK(mg_tokenize(m, "hello world", 11, 1, ids, 3, &n));
        CHECK(n == 3 && ids[0] == 1, "exact size: %zu", n);
        CHECK_ERR(mg_tokenize(m, "hello", 5, 0, ids, 3, NULL), MG_ERR_INVALID_ARG, "n_out");
        CHECK_OK(mg_tokenize(m, "", 0, 1, ids, 3, &n));
        CHECK(n == 1 && ids[0] == 1, "empty text with BOS: %zu", n);
        CHECK_OK(mg_tokenize(m, "", 0, 0, ids, 0, &n));
        CHECK(n == 0, "empty text: %zu", n);

        /* detokenize into small buffers */
        int32_t w[] = {1, hand_id(&v, SP "hello"), hand_id(&v, SP "world"), 2};
        char buf[8];
        size_t len = 0;
        memset(buf, 'X', sizeof buf);
        CHECK_OK(mg_detokenize(m, w, 4, 1, buf, 5, &len));
        CHECK(len == 11 && strcmp(buf, "hell") == 0 && buf[5] == 'X', "truncated: %zu '%s'",
              len, buf);
        CHECK_OK(mg_detokenize(m, w, 4, 1, NULL, 0, &len));
        CHECK(len == 11, "length only: %zu", len);
        CHECK_OK(mg_detokenize(m, w, 4, 1, buf, 1, &len));
        CHECK(len == 11 && buf[0] == 0, "size 1");
        char big[32];
        CHECK_OK(mg_detokenize(m, w, 4, 1, big, 12, &len));
        CHECK(len == 11 && strcmp(big, "hello world") == 0, "exact: '%s'", big);
        CHECK_ERR(mg_detokenize(m, w, 4, 1, NULL, 5, &len), MG_ERR_INVALID_ARG, "buf");
        mg_model_free(m);
    }
    vocab_free(&v);
}

int main(void)
{
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/test-tokenizer.XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tmpdir)) TEST_SKIP("cannot create a temporary directory: %s", strerror(errno));
    test_api();
    test_hand_vocab();
    test_byte_tokenizer();
    test_bad_data();
    test_sentencepiece();
    rm_rf(tmpdir);
    int rc = test_finish("test-tokenizer");
    if (rc == 0 && skip_reason[0]) {
        printf("SKIP: %s\n", skip_reason);
        return 77;
    }
    return rc;
}

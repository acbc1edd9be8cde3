/* run-common.c - megalodon-run: what the modes share: loading the model and the state,
 * reading documents and token files, tokenizing, timing. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "args.h"

double run_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static const char *cema_name(mg_cema_algo a)
{
    return a == MG_CEMA_FFT ? "fft" : a == MG_CEMA_SCAN ? "scan" : "auto";
}

/* whether `name` is a word of the space-separated list */
static int listed(const char *list, const char *name)
{
    const size_t len = strlen(name);
    for (const char *p = list; (p = strstr(p, name)) != NULL; p += len)
        if ((p == list || p[-1] == ' ') && (p[len] == ' ' || p[len] == '\0')) return 1;
    return 0;
}

/* The default model's file name, in the package data directory (installed) and in models/
 * of the source tree (uninstalled builds); the build defines MG_PKGDATADIR and MG_SRCDIR. */
#define DEFAULT_MODEL_NAME "megalodon-default.gguf"

static int is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int run_default_model(run_opts *o)
{
    const char *env = getenv("MEGALODON_MODEL");
    if (env) {
        if (!*env) return -1; /* set but empty: no default model */
        o->model = env;
        o->model_from = "MEGALODON_MODEL";
        return 0;
    }
    static const struct {
        const char *path, *from;
    } candidates[] = {
#ifdef MG_PKGDATADIR
        {MG_PKGDATADIR "/" DEFAULT_MODEL_NAME, "the default model, installed"},
#endif
#ifdef MG_SRCDIR
        {MG_SRCDIR "/models/" DEFAULT_MODEL_NAME, "the default model, in the source tree"},
#endif
        {NULL, NULL}};
    for (size_t i = 0; candidates[i].path; i++)
        if (is_file(candidates[i].path)) {
            o->model = candidates[i].path;
            o->model_from = candidates[i].from;
            return 0;
        }
    return -1;
}

int run_load_model(const run_opts *o, mg_model **model, double *load_ms)
{
    if (o->verbose)
        fprintf(stderr, "model: %s (%s)\n", o->model, o->model_from ? o->model_from : "-m");
    double t0 = run_now_ms();
    mg_model_params mp = mg_model_default_params();
    mp.n_threads = o->n_threads;
    mp.isa = o->isa;
    mp.backend = o->backend;
    mp.device = o->device;
    if (mg_model_load(o->model, &mp, model) != MG_OK) {
        /* a kernel table this machine lacks is the option's fault, not the file's */
        if (o->isa && strcmp(o->isa, "auto") != 0 && !listed(mg_isa_available(), o->isa))
            return run_error(EXIT_RUNTIME, "--isa %s: %s", o->isa, mg_last_error());
        return run_error(EXIT_RUNTIME, "cannot load model: %s", mg_last_error());
    }
    if (load_ms) *load_ms = run_now_ms() - t0;
    if (o->verbose) {
        const int is_auto = !o->isa || strcmp(o->isa, "auto") == 0;
        const char *env = getenv("MEGALODON_ISA");
        char req[96];
        if (is_auto && env && *env)
            snprintf(req, sizeof req, "auto, MEGALODON_ISA=%.60s", env);
        else
            snprintf(req, sizeof req, "%s", is_auto ? "auto" : o->isa);
        fprintf(stderr, "backend: %s (--isa %s; kernel tables here, best first: %s)\n",
                mg_model_backend_name(*model), req, mg_isa_available());
        fprintf(stderr, "blas: %s\n", mg_blas_info());
        if (mg_blas_warning()) fprintf(stderr, "warning: %s\n", mg_blas_warning());
        if (o->mode == MODE_GENERATE || o->mode == MODE_PERPLEXITY)
            fprintf(stderr, "cema: %s requested%s\n", cema_name(o->cema),
                    o->cema == MG_CEMA_AUTO ? " (FFT for long calls, the recurrence otherwise)"
                                            : "");
    }
    return EXIT_OK;
}

int run_new_state(const run_opts *o, const mg_model *model, int n_batch, mg_state **state)
{
    mg_state_params sp = mg_state_default_params();
    sp.cema = o->cema;
    sp.n_batch = n_batch;
    if (mg_state_new(model, &sp, state) != MG_OK) return run_lib_error("cannot create the state");
    if (o->state_in && mg_state_load(*state, o->state_in) != MG_OK) {
        mg_state_free(*state);
        *state = NULL;
        return run_error(EXIT_RUNTIME, "cannot load --state-in: %s", mg_last_error());
    }
    return EXIT_OK;
}

int run_save_state(const run_opts *o, const mg_state *state)
{
    if (!o->state_out) return EXIT_OK;
    if (mg_state_save(state, o->state_out) != MG_OK)
        return run_error(EXIT_RUNTIME, "cannot save --state-out: %s", mg_last_error());
    return EXIT_OK;
}

/* ---------------------------------------------------------------- files */

static FILE *open_input(const char *path)
{
    if (strcmp(path, "-") == 0) return stdin;
    return fopen(path, "rb");
}

static void close_input(FILE *f)
{
    if (f && f != stdin) fclose(f);
}

int run_read_file(const char *path, char **data, size_t *len)
{
    *data = NULL;
    *len = 0;
    FILE *f = open_input(path);
    if (!f) return run_error(EXIT_RUNTIME, "cannot open '%s': %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (!buf) {
            close_input(f);
            return run_error(EXIT_RUNTIME, "out of memory reading '%s'", path);
        }
        n += fread(buf + n, 1, cap - n - 1, f);
        if (ferror(f)) {
            int e = errno;
            free(buf);
            close_input(f);
            return run_error(EXIT_RUNTIME, "cannot read '%s': %s", path, strerror(e));
        }
        if (feof(f)) break;
        if (cap - n - 1 == 0) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) free(buf);
            buf = nb;
            cap *= 2;
        }
    }
    close_input(f);
    buf[n] = '\0';
    *data = buf;
    *len = n;
    return EXIT_OK;
}

/* Growable id array. */
typedef struct {
    int32_t *v;
    size_t n, cap;
} id_vec;

/* Room for at least `room` more ids (the capacity starts at 4096 and doubles); -1 when out
 * of memory. */
static int reserve(id_vec *a, size_t room)
{
    size_t cap = a->cap ? a->cap : 4096;
    while (cap - a->n < room) cap *= 2;
    if (cap == a->cap) return 0;
    int32_t *nv = realloc(a->v, cap * sizeof *nv);
    if (!nv) return -1;
    a->v = nv;
    a->cap = cap;
    return 0;
}

static int push(id_vec *a, int32_t t)
{
    if (reserve(a, 1)) return -1;
    a->v[a->n++] = t;
    return 0;
}

/* One word of a token file or line: an id in [0, n_vocab), or an error naming where. */
static int parse_id(const char *word, int32_t n_vocab, const char *where, size_t index,
                    size_t line, int32_t *out)
{
    char at[96];
    if (line)
        snprintf(at, sizeof at, "token %zu (line %zu)", index, line);
    else
        snprintf(at, sizeof at, "token %zu", index);
    const char *p = word;
    if (*p == '-' || *p == '+') p++;
    int digits = *p != '\0';
    for (const char *q = p; *q; q++) digits &= isdigit((unsigned char)*q) != 0;
    if (!digits)
        return run_error(EXIT_RUNTIME, "%s: %s: '%.40s' is not a token id", where, at, word);
    errno = 0;
    long long x = strtoll(word, NULL, 10);
    if (errno == ERANGE || x < 0 || x >= n_vocab)
        return run_error(EXIT_RUNTIME, "%s: %s: id %.40s is out of range [0, %d)", where, at,
                         word, (int)n_vocab);
    *out = (int32_t)x;
    return EXIT_OK;
}

/* ---------------------------------------------------------------- token files */

#define TOKEN_BLOCK (64 * 1024) /* bytes read at a time */

struct run_token_reader {
    FILE *f;
    const char *path;
    int32_t n_vocab;
    char *block;
    size_t len, off; /* bytes in block, next byte */
    int eof;         /* fread found the end: block holds the last bytes */
    char word[64];   /* the id being read (longer words are cut for the message) */
    int word_nul;    /* the word contains a NUL byte */
    size_t wl, word_line, line;
    size_t index;    /* ids returned */
};

int run_tokens_open(const char *path, int32_t n_vocab, run_token_reader **out)
{
    *out = NULL;
    run_token_reader *r = calloc(1, sizeof *r);
    if (!r || !(r->block = malloc(TOKEN_BLOCK))) {
        free(r);
        return run_error(EXIT_RUNTIME, "out of memory reading '%s'", path);
    }
    if (!(r->f = open_input(path))) {
        int e = errno;
        free(r->block);
        free(r);
        return run_error(EXIT_RUNTIME, "cannot open '%s': %s", path, strerror(e));
    }
    r->path = path;
    r->n_vocab = n_vocab;
    r->line = 1;
    *out = r;
    return EXIT_OK;
}

void run_tokens_close(run_token_reader *r)
{
    if (!r) return;
    close_input(r->f);
    free(r->block);
    free(r);
}

/* the word that ends here is the next id */
static int end_word(run_token_reader *r, int32_t *out)
{
    size_t wl = r->wl;
    int nul = r->word_nul;
    r->word[wl < sizeof r->word ? wl : sizeof r->word - 1] = '\0';
    r->wl = 0;
    r->word_nul = 0;
    if (nul)
        return run_error(EXIT_RUNTIME, "%s: token %zu (line %zu): a word with a NUL byte is "
                         "not a token id", r->path, r->index + 1, r->word_line);
    if (wl >= sizeof r->word)
        return run_error(EXIT_RUNTIME, "%s: token %zu (line %zu): '%.40s...' is too long to be "
                         "a token id", r->path, r->index + 1, r->word_line, r->word);
    return parse_id(r->word, r->n_vocab, r->path, r->index + 1, r->word_line, out);
}

int run_tokens_next(run_token_reader *r, int32_t *out, size_t max, size_t *n)
{
    *n = 0;
    while (*n < max) {
        if (r->off == r->len) {
            if (!r->eof) {
                r->len = fread(r->block, 1, TOKEN_BLOCK, r->f);
                r->off = 0;
                if (ferror(r->f))
                    return run_error(EXIT_RUNTIME, "cannot read '%s': %s", r->path,
                                     strerror(errno));
                if (r->len < TOKEN_BLOCK) r->eof = 1;
                if (r->len > 0) continue;
            }
            /* the end: a last id without white space after it */
            if (r->wl == 0) break;
            int rc = end_word(r, &out[*n]);
            if (rc) return rc;
            r->index++;
            ++*n;
            continue;
        }
        const int c = (unsigned char)r->block[r->off++];
        if (isspace(c)) {
            if (r->wl > 0) {
                int rc = end_word(r, &out[*n]);
                if (rc) return rc;
                r->index++;
                ++*n;
            }
            if (c == '\n') r->line++;
        } else {
            if (r->wl == 0) r->word_line = r->line;
            if (c == '\0') r->word_nul = 1;
            if (r->wl < sizeof r->word - 1) r->word[r->wl] = (char)c;
            r->wl++;
        }
    }
    return EXIT_OK;
}

int run_tokens_count(run_token_reader *r, size_t *n, int *known)
{
    *n = 0;
    *known = 0;
    struct stat st;
    if (r->f == stdin || fstat(fileno(r->f), &st) != 0 || !S_ISREG(st.st_mode)) return EXIT_OK;
    int32_t ids[1024];
    size_t got;
    do {
        int rc = run_tokens_next(r, ids, sizeof ids / sizeof ids[0], &got);
        if (rc) return rc;
        *n += got;
    } while (got == sizeof ids / sizeof ids[0]);
    /* back to the start */
    if (fseek(r->f, 0, SEEK_SET) != 0)
        return run_error(EXIT_RUNTIME, "cannot read '%s' again: %s", r->path, strerror(errno));
    clearerr(r->f);
    r->len = r->off = r->wl = r->index = 0;
    r->word_nul = 0;
    r->eof = 0;
    r->line = 1;
    *known = 1;
    return EXIT_OK;
}

int run_read_tokens(const char *path, int32_t n_vocab, int32_t **tokens, size_t *n)
{
    *tokens = NULL;
    *n = 0;
    run_token_reader *r;
    int rc = run_tokens_open(path, n_vocab, &r);
    if (rc) return rc;
    id_vec a = {0};
    size_t got, want;
    do {
        if (reserve(&a, 1024)) {
            rc = run_error(EXIT_RUNTIME, "out of memory reading '%s'", path);
            break;
        }
        want = a.cap - a.n;
        if ((rc = run_tokens_next(r, a.v + a.n, want, &got))) break;
        a.n += got;
    } while (got == want);
    run_tokens_close(r);
    if (rc) {
        free(a.v);
        return rc;
    }
    *tokens = a.v;
    *n = a.n;
    return EXIT_OK;
}

int run_parse_ids(const char *text, int32_t n_vocab, int32_t **tokens, size_t *n)
{
    *tokens = NULL;
    *n = 0;
    id_vec a = {0};
    const char *p = text;
    for (;;) {
        while (*p && isspace((unsigned char)*p)) p++;
        if (!*p) break;
        char word[64];
        size_t wl = 0;
        while (p[wl] && !isspace((unsigned char)p[wl])) wl++;
        snprintf(word, sizeof word, "%.*s", (int)(wl < sizeof word ? wl : sizeof word - 1), p);
        p += wl;
        int32_t t;
        int rc = wl >= sizeof word
                     ? run_error(EXIT_RUNTIME, "input: token %zu: '%.40s...' is too long to "
                                 "be a token id", a.n + 1, word)
                     : parse_id(word, n_vocab, "input", a.n + 1, 0, &t);
        if (!rc && push(&a, t)) rc = run_error(EXIT_RUNTIME, "out of memory");
        if (rc) {
            free(a.v);
            return rc;
        }
    }
    *tokens = a.v;
    *n = a.n;
    return EXIT_OK;
}

/* Offset of the first byte that is not part of a well-formed UTF-8 sequence (RFC 3629: no
 * overlongs, no surrogates, nothing above U+10FFFF), or len if the text is valid. */
static size_t utf8_invalid_at(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned c = s[i];
        size_t n;
        unsigned lo = 0x80, hi = 0xBF;
        if (c < 0x80) { i++; continue; }
        else if (c >= 0xC2 && c <= 0xDF) n = 1;
        else if (c == 0xE0) { n = 2; lo = 0xA0; }
        else if (c == 0xED) { n = 2; hi = 0x9F; }
        else if (c >= 0xE1 && c <= 0xEF) n = 2;
        else if (c == 0xF0) { n = 3; lo = 0x90; }
        else if (c == 0xF4) { n = 3; hi = 0x8F; }
        else if (c >= 0xF1 && c <= 0xF3) n = 3;
        else return i;
        if (i + n >= len) return i; /* truncated sequence */
        if (s[i + 1] < lo || s[i + 1] > hi) return i;
        for (size_t k = 2; k <= n; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF) return i;
        i += n + 1;
    }
    return len;
}

int run_tokenize(const mg_model *model, const char *text, size_t len, int add_bos,
                 int32_t **tokens, size_t *n)
{
    *tokens = NULL;
    *n = 0;
    size_t bad = utf8_invalid_at((const unsigned char *)text, len);
    if (bad < len)
        return run_error(EXIT_RUNTIME,
                         "the text is not valid UTF-8 (byte offset %zu: 0x%02x); give text as "
                         "UTF-8, or token ids with --tokens",
                         bad, (unsigned)(unsigned char)text[bad]);
    size_t cap = len + 8, need = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        int32_t *buf = malloc(cap * sizeof *buf);
        if (!buf) return run_error(EXIT_RUNTIME, "out of memory for %zu tokens", cap);
        int rc = mg_tokenize(model, text, len, add_bos, buf, cap, &need);
        if (rc == MG_OK) {
            *tokens = buf;
            *n = need;
            return EXIT_OK;
        }
        free(buf);
        if (rc != MG_ERR_INVALID_ARG || need <= cap) return run_lib_error("cannot tokenize the text");
        cap = need;
    }
    return run_lib_error("cannot tokenize the text");
}

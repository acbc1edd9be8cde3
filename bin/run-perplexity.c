/* run-perplexity.c - megalodon-run perplexity: score a document by streaming through it.
 *
 * The document t_0 .. t_{N-1} is fed in calls (MG_LOGITS_ALL into a buffer of one call's
 * logits, so memory does not grow with the document); the logits after t_{i-1} score t_i:
 *     nll_i = logsumexp(logits_{i-1}) - logits_{i-1}[t_i]      (double), i = 1 .. N-1
 *     ppl   = exp(sum nll_i / (N - 1)).
 * The last token is scored but never fed (its logits would score nothing), so --state-out
 * holds the state after N - 1 tokens and a following part starts with this part's last token:
 * parts A = t_0..t_k and B = t_k..t_{N-1} with --state-out/--state-in give the same sum as
 * the whole.
 *
 * --official-window reproduces megalodon/inference.py: the N - 1 inputs go in calls of two
 * chunks (the last full chunk alone if their number is odd), then the remainder; after a
 * call ending at e with 8C <= e while inputs remain, the norm statistics are replaced by
 * those of a fresh forward over t[e-6C, e) (mg_state_window_norm_stats, docs/model.md §15).
 *
 * A --tokens file is read a block at a time, and only the ids of the next call (plus the
 * last 6C fed, for the window) are kept; --per-token values are printed as they are made. So
 * memory does not depend on the document's length. A regular file is read once beforehand
 * to count and check its ids; standard input or a pipe is read once, as it comes. A text
 * (-f) is tokenized whole (the tokenizer needs the context): its ids are held.
 *
 * --kl-base FILE --kl-save stores every scored token's distribution in FILE as it is made;
 * --kl-base FILE compares this model's with it (kl-base.c): per token
 *     KL_i = sum_v p_v (log p_v - log q_v)     p: the base's, q: this model's softmax,
 * their mean (with its standard error), maximum and 99th percentile, the fraction of tokens
 * whose most likely token is the same, and ppl / ppl_base. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "args.h"
#include "kl-base.h"

#define TRUNCATE_CHUNKS 8 /* inference.py */
#define WINDOW_CHUNKS 6   /* TRUNCATE_CHUNKS - MAX_CHUNKS_PER_BATCH */

typedef struct {
    double t0, last;
    int tty;
} progress;

/* total: 0 when the length is not known (a token stream from standard input or a pipe) */
static void report(progress *pg, size_t done, size_t total, double nll, int final)
{
    double now = run_now_ms();
    if (!final && now - pg->last < 1000.0) return;
    pg->last = now;
    double s = (now - pg->t0) / 1e3;
    if (total)
        fprintf(stderr, "%sperplexity: %zu/%zu tokens (%.1f%%)", pg->tty ? "\r" : "", done, total,
                100.0 * done / total);
    else
        fprintf(stderr, "%sperplexity: %zu tokens", pg->tty ? "\r" : "", done);
    fprintf(stderr, ", ppl so far %.4f, %.1f tokens/s%s", done ? exp(nll / done) : 1.0,
            s > 0 ? done / s : 0.0, pg->tty && !final ? "   " : "\n");
    fflush(stderr);
}

/* The document t_0 .. t_{N-1}: a --tokens file read a block at a time, or the ids of a text. */
typedef struct {
    run_token_reader *reader; /* --tokens */
    int32_t *ids;             /* -f: the whole text's ids */
    size_t n, next;           /* ids (when known), the next to hand out (-f) */
    int known;                /* n is known before the end */
} document;

/* The next ids of the document, at most max: *got < max only at its end. */
static int doc_next(document *d, int32_t *out, size_t max, size_t *got)
{
    if (d->reader) return run_tokens_next(d->reader, out, max, got);
    *got = d->n - d->next < max ? d->n - d->next : max;
    memcpy(out, d->ids + d->next, *got * sizeof *out);
    d->next += *got;
    return EXIT_OK;
}

/* Open the document: --tokens as given (counted and checked first when it is a regular file),
 * or the text with BOS/EOS. */
static int open_document(const run_opts *o, const mg_model *model, const mg_state *state,
                         document *d)
{
    const mg_hparams *hp = mg_model_hparams(model);
    /* an id is fed (< n_vocab rows of the embedding) and scored (< logits per token) */
    int32_t limit = hp->n_vocab < mg_model_n_vocab(model) ? hp->n_vocab : mg_model_n_vocab(model);
    if (o->tokens_file) {
        int rc = run_tokens_open(o->tokens_file, limit, &d->reader);
        if (rc) return rc;
        return run_tokens_count(d->reader, &d->n, &d->known);
    }

    if (!mg_model_has_tokenizer(model))
        return run_error(EXIT_RUNTIME, "the model has no tokenizer; use --tokens");
    char *text;
    size_t len;
    int rc = run_read_file(o->file, &text, &len);
    if (rc) return rc;
    int add_bos = !o->no_bos && mg_token_bos(model) >= 0 && mg_state_n_past(state) == 0;
    int32_t *t;
    size_t nt;
    rc = run_tokenize(model, text, len, add_bos, &t, &nt);
    free(text);
    if (rc) return rc;
    int32_t eos = mg_token_eos(model);
    if (!o->no_eos && eos >= 0) {
        int32_t *t2 = realloc(t, (nt + 1) * sizeof *t2);
        if (!t2) {
            free(t);
            return run_error(EXIT_RUNTIME, "out of memory");
        }
        t = t2;
        t[nt++] = eos;
    }
    d->ids = t;
    d->n = nt;
    d->known = 1;
    return EXIT_OK;
}

/* The running result; --per-token values are printed as they come. */
typedef struct {
    const run_opts *o;
    double nll;
    size_t scored;
    kl_file *kl; /* --kl-base: written (--kl-save) or compared with */
} result;

/* the base file is compared with: --per-token then also gives each token's KL */
static int comparing(const result *r) { return r->kl && !r->o->kl_save; }

static void print_start(const result *r)
{
    if (!r->o->per_token) return;
    if (r->o->json)
        printf(comparing(r) ? "{\"per_token_nll_kl\": [" : "{\"per_token_nll\": [");
    else
        printf(comparing(r) ? "# position token nll kl\n" : "# position token nll\n");
}

/* Score the rows of one call: row j (t[j] fed) predicts t[j + 1]. */
static int score(const float *logits, size_t rows, int32_t V, const int32_t *t, result *r)
{
    for (size_t j = 0; j < rows; j++) {
        const float *l = logits + j * (size_t)V;
        double m = -INFINITY;
        for (int32_t v = 0; v < V; v++) m = l[v] > m ? l[v] : m;
        double sum = 0.0;
        for (int32_t v = 0; v < V; v++) sum += exp((double)l[v] - m);
        const size_t i = r->scored + 1; /* the position of t[j + 1] */
        double x = m + log(sum) - (double)l[t[j + 1]];
        if (!isfinite(x))
            return run_error(EXIT_RUNTIME, "non-finite logits when scoring token %zu", i);
        r->nll += x;
        r->scored++;
        double kl = 0.0;
        int rc = !r->kl        ? EXIT_OK
                 : r->o->kl_save ? kl_save_token(r->kl, l, t[j + 1])
                                 : kl_read_token(r->kl, l, t[j + 1], &kl);
        if (rc) return rc;
        if (r->o->per_token && comparing(r)) {
            if (r->o->json)
                printf("%s[%.10g, %.10g]", i > 1 ? ", " : "", x, kl);
            else
                printf("%zu %d %.10g %.10g\n", i, (int)t[j + 1], x, kl);
        } else if (r->o->per_token) {
            if (r->o->json)
                printf("%s%.10g", i > 1 ? ", " : "", x);
            else
                printf("%zu %d %.10g\n", i, (int)t[j + 1], x);
        }
    }
    return EXIT_OK;
}

/* a JSON number, or null when it is not finite */
static void json_num(const char *key, double x)
{
    if (isfinite(x))
        printf(", \"%s\": %.10g", key, x);
    else
        printf(", \"%s\": null", key);
}

/* The comparison with the base: ppl_base = exp(nll_base / n), the ratio ppl / ppl_base; KL
 * mean with its standard error sqrt(var / n), 99th percentile, maximum; top-1 agreement. */
static void print_kl(const result *r)
{
    const kl_stats *s = kl_file_stats(r->kl);
    const double n = (double)s->n, ppl = exp(r->nll / n), base_ppl = exp(s->base_nll / n);
    const double se = s->n > 1 ? sqrt(s->m2 / (n - 1) / n) : 0.0;
    const double p99 = kl_stats_quantile(s, 0.99), agree = (double)s->agree / n;
    if (r->o->json) {
        json_num("base_nll", s->base_nll);
        json_num("base_ppl", base_ppl);
        json_num("ppl_ratio", ppl / base_ppl);
        json_num("kl_mean", s->mean);
        json_num("kl_stderr", se);
        json_num("kl_p99", p99);
        json_num("kl_max", s->max);
        json_num("kl_error_bound", s->bound / n);
        json_num("top1_agreement", agree);
        return;
    }
    printf("base perplexity: %.10g (--kl-base %s); ratio model / base: %.10g\n", base_ppl,
           r->o->kl_base, ppl / base_ppl);
    printf("KL(base || model): mean %.6g +/- %.2g nats per token, 99th percentile %.6g, "
           "max %.6g (representation error of the mean <= %.2g)\n",
           s->mean, se, p99, s->max, s->bound / n);
    printf("top-1 agreement: %.6f (%zu of %zu tokens)\n", agree, s->agree, s->n);
}

static void print_end(const result *r)
{
    const size_t scored = r->scored;
    const double nll = r->nll, ppl = exp(nll / (double)scored);
    if (r->o->json) {
        if (r->o->per_token)
            printf("], ");
        else
            printf("{");
        printf("\"tokens\": %zu, \"nll\": %.10g, \"ppl\": ", scored, nll);
        if (isfinite(ppl))
            printf("%.10g", ppl);
        else
            printf("null");
        if (comparing(r)) print_kl(r);
        printf("}\n");
        return;
    }
    printf("perplexity: %.10g over %zu scored tokens (nll %.10g nats, %.6f nats per token)\n", ppl,
           scored, nll, nll / (double)scored);
    if (comparing(r)) print_kl(r);
}

/* --kl-base with the other options: usage errors */
static int kl_check_opts(const run_opts *o)
{
    if (o->kl_save && !o->kl_base)
        return run_error(EXIT_USAGE, "--kl-save writes the --kl-base FILE: give --kl-base FILE");
    if (!o->kl_base) return EXIT_OK;
    if (strcmp(o->kl_base, "-") == 0)
        return run_error(EXIT_USAGE, "--kl-base needs a file (not standard input or output)");
    const char *other[] = {o->tokens_file, o->file, o->state_in, o->state_out, o->model};
    const char *names[] = {"--tokens", "-f", "--state-in", "--state-out", "-m"};
    for (size_t i = 0; i < sizeof other / sizeof other[0]; i++)
        if (other[i] && strcmp(other[i], o->kl_base) == 0)
            return run_error(EXIT_USAGE, "--kl-base '%s' is also the %s file", o->kl_base,
                             names[i]);
    return EXIT_OK;
}

/* Open the --kl-base file, to write or to compare with; first: t_0 of the document. */
static int kl_open(const run_opts *o, const document *d, const mg_model *model,
                   const mg_state *state, int32_t first, kl_file **kl)
{
    if (!o->kl_base) return EXIT_OK;
    const int32_t V = mg_model_n_vocab(model);
    const uint32_t flags = o->official_window ? KL_OFFICIAL_WINDOW : 0;
    const uint64_t start = mg_state_n_past(state);
    if (o->kl_save) return kl_save_open(o->kl_base, V, flags, start, first, kl);
    return kl_read_open(o->kl_base, V, flags, start, first, d->known ? d->n : 0, kl);
}

static int too_short(size_t n)
{
    return run_error(EXIT_RUNTIME,
                     "perplexity needs at least 2 tokens (the first is context only); the "
                     "document has %zu", n);
}

int run_perplexity(const run_opts *o)
{
    mg_model *model = NULL;
    mg_state *state = NULL;
    document doc = {0};
    int32_t *buf = NULL;
    float *logits = NULL;
    double load_ms;
    result res = {o, 0.0, 0, NULL};
    int rc = kl_check_opts(o);
    if (rc) return rc;
    rc = run_load_model(o, &model, &load_ms);
    if (rc) return rc;

    const int32_t V = mg_model_n_vocab(model);
    const size_t C = (size_t)mg_model_hparams(model)->chunk_size;
    const size_t call = o->official_window ? 2 * C : o->n_batch ? (size_t)o->n_batch : C;
    /* the ids kept: the last WINDOW_CHUNKS * C fed (--official-window), then the inputs of
     * the next call and the token after them */
    const size_t hist = o->official_window ? WINDOW_CHUNKS * C : 0;
    if ((rc = run_new_state(o, model, (int)call, &state))) goto done;
    if ((rc = open_document(o, model, state, &doc))) goto done;
    if (doc.known && doc.n < 2) {
        rc = too_short(doc.n);
        goto done;
    }
    if (call > SIZE_MAX / sizeof(float) / (size_t)V ||
        !(logits = malloc(call * (size_t)V * sizeof *logits)) ||
        !(buf = malloc((hist + call + 1) * sizeof *buf))) {
        rc = run_error(EXIT_RUNTIME, "out of memory for the logits of %zu tokens", call);
        goto done;
    }
    /* buf[0, h): fed ids (the window); buf[h, h + avail): t_pos onwards */
    size_t h = 0, avail;
    if ((rc = doc_next(&doc, buf, call + 1, &avail))) goto done;
    int end = avail < call + 1; /* the whole document has been read */
    if (avail < 2) { /* a stream: its length is now known */
        rc = too_short(avail);
        goto done;
    }
    if ((rc = kl_open(o, &doc, model, state, buf[0], &res.kl))) goto done;
    if (doc.known)
        fprintf(stderr, "perplexity: %zu tokens, %zu scored; ", doc.n, doc.n - 1);
    else
        fprintf(stderr, "perplexity: reading %s as it comes; ",
                strcmp(o->tokens_file, "-") == 0 ? "standard input" : o->tokens_file);
    fprintf(stderr, "chunk size %zu, %zu tokens per call%s; load time %.2f ms\n", C, call,
            o->official_window ? ", official statistics window" : "", load_ms);

    progress pg = {run_now_ms(), run_now_ms(), isatty(2)};
    const size_t n_in = doc.known ? doc.n - 1 : 0; /* fed tokens = scored tokens, if known */
    size_t pos = 0;
    print_start(&res);
    while (avail >= 2) {
        /* avail - 1 inputs have their next token here; fewer than `call` only at the end.
         * official: whole chunks two at a time (the last one alone if their number is odd),
         * then the remainder; exact: calls of `call` */
        const size_t r = avail - 1;
        size_t len = r < call ? r : call;
        if (o->official_window && len < call && len >= C) len = C;
        if (mg_eval(state, buf + h, len, logits, MG_LOGITS_ALL) != MG_OK) {
            rc = run_error(EXIT_RUNTIME, "evaluation failed at token %zu: %s", pos, mg_last_error());
            goto done;
        }
        if ((rc = score(logits, len, V, buf + h, &res))) goto done;
        pos += len;
        /* keep the window and the ids not yet fed, then read the next ones */
        const size_t keep = h + len < hist ? h + len : hist;
        memmove(buf, buf + h + len - keep, (keep + avail - len) * sizeof *buf);
        h = keep;
        avail -= len;
        if (!end) {
            size_t got, want = call + 1 - avail;
            if ((rc = doc_next(&doc, buf + h + avail, want, &got))) goto done;
            avail += got;
            end = got < want;
        }
        if (o->official_window && pos >= TRUNCATE_CHUNKS * C && avail >= 2 &&
            mg_state_window_norm_stats(state, buf + h - WINDOW_CHUNKS * C, WINDOW_CHUNKS * C) !=
                MG_OK) {
            rc = run_error(EXIT_RUNTIME, "statistics window failed at token %zu: %s", pos,
                           mg_last_error());
            goto done;
        }
        report(&pg, pos, n_in, res.nll, avail < 2);
    }
    if (res.kl && (rc = o->kl_save ? kl_save_close(res.kl) : kl_read_close(res.kl))) goto done;
    if (o->kl_save)
        fprintf(stderr, "perplexity: wrote --kl-base %s: %zu scored tokens, %zu bytes each\n",
                o->kl_base, res.scored, KL_RECORD_BYTES(V));
    print_end(&res);
    fflush(stdout);
    rc = run_save_state(o, state);

done:
    kl_free(res.kl);
    free(buf);
    free(logits);
    free(doc.ids);
    run_tokens_close(doc.reader);
    mg_state_free(state);
    mg_model_free(model);
    return rc;
}

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
 * those of a fresh forward over t[e-6C, e) (mg_state_window_norm_stats, spec 9.4). */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "args.h"

#define TRUNCATE_CHUNKS 8 /* inference.py */
#define WINDOW_CHUNKS 6   /* TRUNCATE_CHUNKS - MAX_CHUNKS_PER_BATCH */

typedef struct {
    double t0, last;
    int tty;
} progress;

static void report(progress *pg, size_t done, size_t total, double nll, int final)
{
    double now = run_now_ms();
    if (!final && now - pg->last < 1000.0) return;
    pg->last = now;
    double s = (now - pg->t0) / 1e3;
    fprintf(stderr, "%sperplexity: %zu/%zu tokens (%.1f%%), ppl so far %.4f, %.1f tokens/s%s",
            pg->tty ? "\r" : "", done, total, total ? 100.0 * done / total : 100.0,
            done ? exp(nll / done) : 1.0, s > 0 ? done / s : 0.0,
            pg->tty && !final ? "   " : "\n");
    fflush(stderr);
}

/* Score the rows of one call: row j (token pos + j fed) predicts tokens[pos + j + 1]. */
static int score(const float *logits, size_t rows, int32_t V, const int32_t *tokens, size_t pos,
                 double *nll, double *per_token)
{
    for (size_t j = 0; j < rows; j++) {
        const float *l = logits + j * (size_t)V;
        double m = -INFINITY;
        for (int32_t v = 0; v < V; v++) m = l[v] > m ? l[v] : m;
        double sum = 0.0;
        for (int32_t v = 0; v < V; v++) sum += exp((double)l[v] - m);
        const size_t i = pos + j + 1;
        double x = m + log(sum) - (double)l[tokens[i]];
        if (!isfinite(x))
            return run_error(EXIT_RUNTIME, "non-finite logits when scoring token %zu", i);
        *nll += x;
        if (per_token) per_token[i - 1] = x;
    }
    return EXIT_OK;
}

/* The document's ids: --tokens as given, or the text with BOS/EOS. */
static int load_document(const run_opts *o, const mg_model *model, const mg_state *state,
                         int32_t **tokens, size_t *n)
{
    const mg_hparams *hp = mg_model_hparams(model);
    /* an id is fed (< n_vocab rows of the embedding) and scored (< logits per token) */
    int32_t limit = hp->n_vocab < mg_model_n_vocab(model) ? hp->n_vocab : mg_model_n_vocab(model);
    if (o->tokens_file) return run_read_tokens(o->tokens_file, limit, tokens, n);

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
    *tokens = t;
    *n = nt;
    return EXIT_OK;
}

static void print_result(const run_opts *o, size_t scored, double nll, const double *per_token,
                         const int32_t *tokens)
{
    double ppl = exp(nll / (double)scored);
    if (o->json) {
        printf("{\"tokens\": %zu, \"nll\": %.10g, \"ppl\": ", scored, nll);
        if (isfinite(ppl))
            printf("%.10g", ppl);
        else
            printf("null");
        if (per_token) {
            printf(", \"per_token_nll\": [");
            for (size_t i = 0; i < scored; i++) printf("%s%.10g", i ? ", " : "", per_token[i]);
            printf("]");
        }
        printf("}\n");
        return;
    }
    if (per_token) {
        printf("# position token nll\n");
        for (size_t i = 0; i < scored; i++)
            printf("%zu %d %.10g\n", i + 1, (int)tokens[i + 1], per_token[i]);
    }
    printf("perplexity: %.10g over %zu scored tokens (nll %.10g nats, %.6f nats per token)\n", ppl,
           scored, nll, nll / (double)scored);
}

int run_perplexity(const run_opts *o)
{
    mg_model *model = NULL;
    mg_state *state = NULL;
    int32_t *tokens = NULL;
    float *logits = NULL;
    double *per_token = NULL;
    double load_ms;
    int rc = run_load_model(o, &model, &load_ms);
    if (rc) return rc;

    const int32_t V = mg_model_n_vocab(model);
    const size_t C = (size_t)mg_model_hparams(model)->chunk_size;
    const size_t call = o->official_window ? 2 * C : o->n_batch ? (size_t)o->n_batch : C;
    size_t N = 0;
    if ((rc = run_new_state(o, model, (int)call, &state))) goto done;
    if ((rc = load_document(o, model, state, &tokens, &N))) goto done;
    if (N < 2) {
        rc = run_error(EXIT_RUNTIME,
                       "perplexity needs at least 2 tokens (the first is context only); the "
                       "document has %zu", N);
        goto done;
    }
    const size_t n_in = N - 1; /* fed tokens; also the number of scored tokens */
    if (call > SIZE_MAX / sizeof(float) / (size_t)V ||
        !(logits = malloc(call * (size_t)V * sizeof *logits)) ||
        (o->per_token && !(per_token = malloc(n_in * sizeof *per_token)))) {
        rc = run_error(EXIT_RUNTIME, "out of memory for the logits of %zu tokens", call);
        goto done;
    }
    fprintf(stderr,
            "perplexity: %zu tokens, %zu scored; chunk size %zu, %zu tokens per call%s; load "
            "time %.2f ms\n",
            N, n_in, C, call, o->official_window ? ", official statistics window" : "", load_ms);

    progress pg = {run_now_ms(), run_now_ms(), isatty(2)};
    double nll = 0.0;
    size_t pos = 0;
    /* official: whole chunks two at a time, then the remainder; exact: calls of `call` */
    const size_t full = o->official_window ? n_in / C * C : n_in;
    while (pos < n_in) {
        size_t len = pos < full ? full - pos : n_in - pos;
        if (len > call) len = call;
        if (mg_eval(state, tokens + pos, len, logits, MG_LOGITS_ALL) != MG_OK) {
            rc = run_error(EXIT_RUNTIME, "evaluation failed at token %zu: %s", pos, mg_last_error());
            goto done;
        }
        if ((rc = score(logits, len, V, tokens, pos, &nll, per_token))) goto done;
        pos += len;
        if (o->official_window && pos >= TRUNCATE_CHUNKS * C && pos < n_in &&
            mg_state_window_norm_stats(state, tokens + pos - WINDOW_CHUNKS * C,
                                       WINDOW_CHUNKS * C) != MG_OK) {
            rc = run_error(EXIT_RUNTIME, "statistics window failed at token %zu: %s", pos,
                           mg_last_error());
            goto done;
        }
        report(&pg, pos, n_in, nll, pos == n_in);
    }
    print_result(o, n_in, nll, per_token, tokens);
    fflush(stdout);
    rc = run_save_state(o, state);

done:
    free(per_token);
    free(logits);
    free(tokens);
    mg_state_free(state);
    mg_model_free(model);
    return rc;
}

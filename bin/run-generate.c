/* run-generate.c - megalodon-run generate (the default mode) and its interactive form.
 *
 * The prompt is fed in one mg_eval call (the library splits it into steps of n_batch), then
 * one token per call: sample, print, feed. Tokens are printed as they are made (pieces of
 * text with a tokenizer, ids without one). With -i every turn continues the same state.
 * The sampler is the library's (deterministic for a seed), and the forward pass does not
 * depend on the thread count, so a seed gives the same text with any -t. */
#include "config.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "args.h"

static volatile sig_atomic_t interrupted = 0;

static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

typedef struct {
    const run_opts *o;
    mg_model *model;
    mg_state *state;
    mg_sampler *sampler;
    float *logits;
    int have_logits; /* logits hold the prediction after the last fed token */
    int32_t eos;     /* -1: none (or --ignore-eos) */
    int has_tok;     /* the model has a tokenizer */
    int at_start;    /* the next printed text begins the document */
    int printed;     /* something went to stdout */
    char *piece;     /* detokenize buffer */
    size_t piece_cap;
    size_t n_prompt, n_gen;
    double prompt_ms, gen_ms;
} gen_ctx;

/* Print tokens: their text (streamed) or, without a tokenizer, their ids. */
static int emit(gen_ctx *g, const int32_t *t, size_t n)
{
    if (n == 0) return EXIT_OK;
    if (!g->has_tok) {
        for (size_t i = 0; i < n; i++) printf("%s%d", g->printed++ ? " " : "", (int)t[i]);
        fflush(stdout);
        return EXIT_OK;
    }
    size_t len = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        if (mg_detokenize(g->model, t, n, g->at_start, g->piece, g->piece_cap, &len) != MG_OK)
            return run_lib_error("cannot decode the tokens");
        if (len < g->piece_cap) break;
        char *nb = realloc(g->piece, len + 1);
        if (!nb) return run_error(EXIT_RUNTIME, "out of memory");
        g->piece = nb;
        g->piece_cap = len + 1;
    }
    if (len > 0) {
        fwrite(g->piece, 1, len, stdout);
        fflush(stdout);
        g->at_start = 0;
        g->printed = 1;
    }
    return EXIT_OK;
}

/* Feed tokens (a prompt or a user's turn); they also enter the penalty's history. */
static int feed(gen_ctx *g, const int32_t *t, size_t n)
{
    if (n == 0) return EXIT_OK;
    double t0 = run_now_ms();
    if (mg_eval(g->state, t, n, g->logits, MG_LOGITS_LAST) != MG_OK)
        return run_error(EXIT_RUNTIME, "evaluation of the prompt failed: %s", mg_last_error());
    g->prompt_ms += run_now_ms() - t0;
    g->n_prompt += n;
    for (size_t i = 0; i < n; i++) mg_sampler_accept(g->sampler, t[i]);
    g->have_logits = 1;
    return EXIT_OK;
}

/* Generate up to n tokens (n < 0: until end of text or Ctrl-C). feed_last: also feed the
 * last token, so that the state covers everything printed (for -i and --state-out). */
static int generate(gen_ctx *g, int n, int feed_last)
{
    if (!g->have_logits) return EXIT_OK;
    double t0 = run_now_ms();
    int rc = EXIT_OK;
    for (int i = 0; (n < 0 || i < n) && !interrupted; i++) {
        int32_t tok = mg_sampler_sample(g->sampler, g->logits);
        if (tok < 0) {
            rc = run_lib_error("sampling failed");
            break;
        }
        mg_sampler_accept(g->sampler, tok);
        if (tok == g->eos) {
            g->have_logits = 0; /* the end of text is not fed: the next turn feeds its input */
            break;
        }
        if ((rc = emit(g, &tok, 1))) break;
        g->n_gen++;
        if (n >= 0 && i == n - 1 && !feed_last) break;
        if (mg_eval(g->state, &tok, 1, g->logits, MG_LOGITS_LAST) != MG_OK) {
            rc = run_error(EXIT_RUNTIME, "evaluation failed after %zu generated tokens: %s",
                           g->n_gen, mg_last_error());
            break;
        }
    }
    g->gen_ms += run_now_ms() - t0;
    return rc;
}

/* The ids of a text, or of an id list for a model without a tokenizer. */
static int encode(gen_ctx *g, const char *text, size_t len, int32_t **t, size_t *n)
{
    if (!g->has_tok) return run_parse_ids(text, mg_model_hparams(g->model)->n_vocab, t, n);
    int add_bos = !g->o->no_bos && mg_token_bos(g->model) >= 0 && mg_state_n_past(g->state) == 0;
    return run_tokenize(g->model, text, len, add_bos, t, n);
}

static int interactive(gen_ctx *g)
{
    char *line = NULL;
    size_t cap = 0;
    int rc = EXIT_OK;
    for (;;) {
        interrupted = 0;
        fprintf(stderr, "\n> ");
        fflush(stderr);
        errno = 0;
        ssize_t r = getline(&line, &cap, stdin);
        if (r < 0) break; /* end of input, or Ctrl-C at the prompt */
        int32_t *t = NULL;
        size_t n = 0;
        int only_space = strspn(line, " \t\r\n") == (size_t)r;
        if (!only_space) {
            if (encode(g, line, (size_t)r, &t, &n)) continue; /* message printed; next line */
            int frc = feed(g, t, n);
            free(t);
            if (frc) continue;
        }
        /* an empty line just lets the model go on */
        if ((rc = generate(g, g->o->n_predict, 1))) break;
    }
    free(line);
    if (g->printed) putchar('\n');
    return rc;
}

static uint64_t time_seed(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ((uint64_t)ts.tv_sec << 30) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 48);
}

int run_generate(const run_opts *o)
{
    gen_ctx g;
    memset(&g, 0, sizeof g);
    g.o = o;
    int32_t *prompt = NULL;
    size_t n_prompt = 0;
    double load_ms;
    int rc = run_load_model(o, &g.model, &load_ms);
    if (rc) return rc;
    const mg_hparams *hp = mg_model_hparams(g.model);
    const int32_t V = mg_model_n_vocab(g.model);
    g.has_tok = mg_model_has_tokenizer(g.model);
    g.eos = o->ignore_eos || !g.has_tok ? -1 : mg_token_eos(g.model);

    if ((rc = run_new_state(o, g.model, o->n_batch, &g.state))) goto done;
    g.at_start = mg_state_n_past(g.state) == 0;

    mg_sampler_params sp = o->sampling;
    if (o->seed_from_time) sp.seed = time_seed();
    if (mg_sampler_new(&sp, V, &g.sampler) != MG_OK) {
        rc = run_lib_error("cannot create the sampler");
        goto done;
    }
    if (!(g.logits = malloc(sizeof(float) * (size_t)V))) {
        rc = run_error(EXIT_RUNTIME, "out of memory");
        goto done;
    }

    /* the prompt */
    if (o->tokens_file) {
        if ((rc = run_read_tokens(o->tokens_file, hp->n_vocab, &prompt, &n_prompt))) goto done;
    } else if (o->prompt || o->file) {
        if (!g.has_tok) {
            rc = run_error(EXIT_RUNTIME, "the model has no tokenizer; use --tokens");
            goto done;
        }
        char *text = NULL;
        size_t len = 0;
        if (o->file) {
            if ((rc = run_read_file(o->file, &text, &len))) goto done;
        }
        rc = encode(&g, text ? text : o->prompt, text ? len : strlen(o->prompt), &prompt, &n_prompt);
        free(text);
        if (rc) goto done;
    } else if (g.has_tok && !o->no_bos && mg_token_bos(g.model) >= 0 &&
               mg_state_n_past(g.state) == 0) {
        if (!(prompt = malloc(sizeof *prompt))) {
            rc = run_error(EXIT_RUNTIME, "out of memory");
            goto done;
        }
        prompt[n_prompt++] = mg_token_bos(g.model);
    }
    if (n_prompt == 0 && !o->interactive) {
        rc = run_error(EXIT_RUNTIME, "nothing to start from: the prompt is empty (give -p, -f "
                                     "or --tokens)");
        goto done;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: Ctrl-C at the interactive prompt ends the read */
    sigaction(SIGINT, &sa, NULL);

    fprintf(stderr, "load time: %.2f ms; seed: %llu; %s\n", load_ms, (unsigned long long)sp.seed,
            g.has_tok ? "text output" : "the model has no tokenizer: token ids in and out");
    if (!o->no_display_prompt && (rc = emit(&g, prompt, n_prompt))) goto done;
    if ((rc = feed(&g, prompt, n_prompt))) goto done;
    if ((rc = generate(&g, o->n_predict, o->interactive || o->state_out))) goto done;
    if (o->interactive)
        rc = interactive(&g);
    else if (g.printed)
        putchar('\n');
    fflush(stdout);

    fprintf(stderr, "\nprompt: %zu tokens in %.2f ms (%.2f tokens/s)\n", g.n_prompt, g.prompt_ms,
            g.prompt_ms > 0 ? g.n_prompt * 1e3 / g.prompt_ms : 0.0);
    fprintf(stderr, "generation: %zu tokens in %.2f ms (%.2f tokens/s)\n", g.n_gen, g.gen_ms,
            g.gen_ms > 0 ? g.n_gen * 1e3 / g.gen_ms : 0.0);
    if (!rc) rc = run_save_state(o, g.state);

done:
    free(prompt);
    free(g.piece);
    free(g.logits);
    mg_sampler_free(g.sampler);
    mg_state_free(g.state);
    mg_model_free(g.model);
    return rc;
}

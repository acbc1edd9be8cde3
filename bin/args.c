/* args.c - megalodon-run: command-line options of every mode, their parsing and help texts.
 *
 * Every option is one row of the table below: its names, the modes that take it, its value
 * and its help; the usage text of a mode is printed from the table, with the defaults. */
#include "config.h"

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "opt.h"

#define M_GEN (1u << MODE_GENERATE)
#define M_PPL (1u << MODE_PERPLEXITY)
#define M_TOK (1u << MODE_TOKENIZE)
#define M_INFO (1u << MODE_INFO)
#define M_ALL (M_GEN | M_PPL | M_TOK | M_INFO)

enum {
    O_HELP, O_VERSION, O_MODEL, O_THREADS, O_CEMA, O_STATE_IN, O_STATE_OUT, O_BATCH,
    O_PROMPT, O_FILE, O_TOKENS, O_NO_BOS, O_NO_EOS, O_BOS,
    O_N_PREDICT, O_TEMP, O_TOP_K, O_TOP_P, O_MIN_P, O_REPEAT_PENALTY, O_REPEAT_LAST_N, O_SEED,
    O_INTERACTIVE, O_IGNORE_EOS, O_NO_DISPLAY_PROMPT,
    O_JSON, O_PER_TOKEN, O_OFFICIAL_WINDOW, O_PIECES, O_ISA, O_VERBOSE,
    O_BACKEND, O_DEVICE, O_LIST_DEVICES,
    O_KL_BASE, O_KL_SAVE
};

/* opt.h: opt_def; sel is the set of modes (a bit each) that take the option, help the
 * mode-independent text */

static const opt_def options[] = {
    {O_HELP, "-h", "--help", NULL, M_ALL, "show this help and exit"},
    {O_VERSION, NULL, "--version", NULL, M_ALL, "show the library version and exit"},
    {O_MODEL, "-m", "--model", "FILE", M_ALL,
     "model file (GGUF); without -m: $MEGALODON_MODEL, else the default model"},
    {O_PROMPT, "-p", "--prompt", "TEXT", M_GEN | M_TOK, "prompt text"},
    {O_FILE, "-f", "--file", "FILE", M_GEN | M_PPL | M_TOK,
     "read the text from FILE (\"-\": standard input)"},
    {O_TOKENS, NULL, "--tokens", "FILE", M_GEN | M_PPL,
     "token ids separated by white space, used exactly as given (no BOS is added)"},
    {O_NO_BOS, NULL, "--no-bos", NULL, M_GEN | M_PPL,
     "do not put BOS before text (it is added when the model has one and the state is at "
     "position 0)"},
    {O_NO_EOS, NULL, "--no-eos", NULL, M_PPL,
     "do not put EOS after the text (added when the model has one, as the official "
     "evaluation does)"},
    {O_BOS, NULL, "--bos", NULL, M_TOK, "put BOS first"},
    {O_PIECES, NULL, "--pieces", NULL, M_TOK,
     "print the vocabulary pieces instead of the ids (space, backslash and control bytes "
     "escaped)"},
    {O_N_PREDICT, "-n", "--n-predict", "N", M_GEN,
     "tokens to generate (per turn with -i); -1: until end of text"},
    {O_TEMP, NULL, "--temp", "T", M_GEN, "temperature; 0: greedy (the most likely token)"},
    {O_TOP_K, NULL, "--top-k", "N", M_GEN, "keep the N most likely tokens; 0: off"},
    {O_TOP_P, NULL, "--top-p", "P", M_GEN,
     "keep the most likely tokens up to probability mass P; 1: off"},
    {O_MIN_P, NULL, "--min-p", "P", M_GEN,
     "keep the tokens at least P times as likely as the most likely one; 0: off"},
    {O_REPEAT_PENALTY, NULL, "--repeat-penalty", "X", M_GEN,
     "penalize tokens among the last --repeat-last-n; 1: off"},
    {O_REPEAT_LAST_N, NULL, "--repeat-last-n", "N", M_GEN,
     "tokens of history for the repetition penalty; 0: off"},
    {O_SEED, "-s", "--seed", "N", M_GEN, "random seed; -1: from the clock"},
    {O_INTERACTIVE, "-i", "--interactive", NULL, M_GEN,
     "interactive: after the prompt, read a line at a time from standard input and continue "
     "the same state (without a tokenizer, lines are token ids); Ctrl-C stops a turn, "
     "end of input ends"},
    {O_IGNORE_EOS, NULL, "--ignore-eos", NULL, M_GEN, "do not stop at the end-of-text token"},
    {O_NO_DISPLAY_PROMPT, NULL, "--no-display-prompt", NULL, M_GEN,
     "do not echo the prompt to standard output"},
    {O_JSON, NULL, "--json", NULL, M_PPL,
     "print {\"tokens\": SCORED, \"nll\": SUM_NATS, \"ppl\": P} as JSON"},
    {O_PER_TOKEN, NULL, "--per-token", NULL, M_PPL,
     "also give every scored token's NLL, printed as it is computed (with --json: "
     "\"per_token_nll\", the first key)"},
    {O_OFFICIAL_WINDOW, NULL, "--official-window", NULL, M_PPL,
     "reproduce the official evaluation: 2 chunks per call and, from 8 chunks on, norm "
     "statistics of the last 6 chunks only (docs/model.md §15; not with -b or --state-in)"},
    {O_KL_BASE, NULL, "--kl-base", "FILE", M_PPL,
     "compare with the base model's distributions stored in FILE: KL divergence, top-1 "
     "agreement, perplexity ratio (the same document and scoring options)"},
    {O_KL_SAVE, NULL, "--kl-save", NULL, M_PPL,
     "write the --kl-base FILE instead, replacing it atomically (20 + 2 x n_vocab bytes per "
     "scored token: 64,020 for a vocabulary of 32000)"},
    {O_BATCH, "-b", "--batch-size", "N", M_GEN | M_PPL, NULL /* per mode, below */},
    {O_THREADS, "-t", "--threads", "N", M_GEN | M_PPL, "compute threads; 0: all CPUs"},
    {O_CEMA, NULL, "--cema", "ALGO", M_GEN | M_PPL,
     "CEMA algorithm: fft, scan or auto (auto: FFT for long calls)"},
    {O_STATE_IN, NULL, "--state-in", "FILE", M_GEN | M_PPL | M_INFO,
     "start from the streaming state saved in FILE (info: describe it)"},
    {O_STATE_OUT, NULL, "--state-out", "FILE", M_GEN | M_PPL,
     "save the streaming state to FILE at the end"},
    {O_ISA, NULL, "--isa", "NAME", M_ALL,
     "kernel table: auto (the best for this CPU, or $MEGALODON_ISA), scalar, avx2, avx512 or "
     "neon; one this build or CPU lacks is an error"},
    {O_BACKEND, NULL, "--backend", "NAME", M_ALL,
     "compute backend: cpu, or opencl (an error when this build or machine has none; "
     "docs/opencl.md)"},
    {O_DEVICE, NULL, "--device", "N", M_ALL,
     "OpenCL device index (see --list-devices); -1: $MEGALODON_OPENCL_DEVICE, else 0"},
    {O_LIST_DEVICES, NULL, "--list-devices", NULL, M_ALL,
     "list the OpenCL devices and exit"},
    {O_VERBOSE, "-v", "--verbose", NULL, M_ALL,
     "describe the backend, its kernel table and the CEMA algorithm on standard error"},
};
#define N_OPTIONS (sizeof options / sizeof options[0])

/* the values of --isa (mg_model_params.isa), --backend and --cema */
static const char *const isa_names[] = {"auto", "scalar", "avx2", "avx512", "neon"};
static const char *const backend_names[] = {"cpu", "opencl"};
static const char *const cema_names[] = {"fft", "scan", "auto"};
static const mg_cema_algo cema_algos[] = {MG_CEMA_FFT, MG_CEMA_SCAN, MG_CEMA_AUTO};

static const char *const mode_names[MODE_COUNT] = {"generate", "perplexity", "tokenize", "info"};

const char *run_mode_name(run_mode mode) { return mode < MODE_COUNT ? mode_names[mode] : "?"; }

run_mode run_mode_from_word(const char *word)
{
    for (int m = 0; m < MODE_COUNT; m++)
        if (word && strcmp(word, mode_names[m]) == 0) return (run_mode)m;
    return MODE_COUNT;
}

run_mode run_take_mode(int *argc, char ***argv, int *mode_given)
{
    run_mode mode = *argc > 1 ? run_mode_from_word((*argv)[1]) : MODE_COUNT;
    *mode_given = mode != MODE_COUNT;
    if (!*mode_given) return MODE_GENERATE;
    (*argv)[1] = (*argv)[0];
    (*argv)++;
    (*argc)--;
    return mode;
}

static run_mode usage_mode = MODE_GENERATE; /* for the hint after a usage error */

int run_error(int code, const char *fmt, ...)
{
    char hint[96];
    snprintf(hint, sizeof hint, "Run 'megalodon-run%s%s --help' for usage.",
             usage_mode == MODE_GENERATE ? "" : " ",
             usage_mode == MODE_GENERATE ? "" : run_mode_name(usage_mode));
    va_list ap;
    va_start(ap, fmt);
    opt_verror(code == EXIT_USAGE ? hint : NULL, fmt, ap);
    va_end(ap);
    return code;
}

int run_lib_error(const char *what) { return run_error(EXIT_RUNTIME, "%s: %s", what, mg_last_error()); }

/* ---------------------------------------------------------------- help */

static const char *batch_help(run_mode mode)
{
    return mode == MODE_PERPLEXITY
               ? "tokens per call (1: token by token); the logits of a call take N x n_vocab "
                 "floats"
               : "most tokens per internal step of the prompt (0: 2 chunks)";
}

static void default_str(int id, run_mode mode, char *buf, size_t size)
{
    const mg_sampler_params sp = mg_sampler_default_params();
    buf[0] = '\0';
    switch (id) {
    case O_N_PREDICT: snprintf(buf, size, "128"); break;
    case O_TEMP: snprintf(buf, size, "%.2f", (double)sp.temp); break;
    case O_TOP_K: snprintf(buf, size, "%d", (int)sp.top_k); break;
    case O_TOP_P: snprintf(buf, size, "%.2f", (double)sp.top_p); break;
    case O_MIN_P: snprintf(buf, size, "%.2f", (double)sp.min_p); break;
    case O_REPEAT_PENALTY: snprintf(buf, size, "%.2f", (double)sp.repeat_penalty); break;
    case O_REPEAT_LAST_N: snprintf(buf, size, "%d", (int)sp.repeat_last_n); break;
    case O_SEED: snprintf(buf, size, "%llu", (unsigned long long)sp.seed); break;
    case O_THREADS: snprintf(buf, size, "0"); break;
    case O_CEMA: snprintf(buf, size, "auto"); break;
    case O_ISA: snprintf(buf, size, "auto"); break;
    case O_BACKEND: snprintf(buf, size, "$MEGALODON_BACKEND, else cpu"); break;
    case O_DEVICE: snprintf(buf, size, "-1"); break;
    case O_BATCH:
        snprintf(buf, size, "%s", mode == MODE_PERPLEXITY ? "the chunk size" : "0");
        break;
    default: break;
    }
}

void args_print_wrapped(const char *text, int col, int indent)
{
    const char *p = text;
    while (*p) {
        const char *sp = strchr(p, ' ');
        size_t w = sp ? (size_t)(sp - p) : strlen(p);
        if (col > indent && col + 1 + (int)w > 100) {
            printf("\n%*s", indent, "");
            col = indent;
        } else if (col > indent) {
            putchar(' ');
            col++;
        }
        printf("%.*s", (int)w, p);
        col += (int)w;
        p += w;
        while (*p == ' ') p++;
    }
    putchar('\n');
}

static const char *mode_summary(run_mode mode)
{
    switch (mode) {
    case MODE_GENERATE:
        return "Generate text from a prompt, streamed to standard output as it is made; load "
               "time and speeds go to standard error. The same seed and settings give the same "
               "text whatever the thread count. A model without a tokenizer reads the prompt "
               "with --tokens and prints token ids.";
    case MODE_PERPLEXITY:
        return "Score a document: exact streaming through the whole of it in calls of -b "
               "tokens; the first token is context only, every later token is scored with "
               "nll = logsumexp(logits) - logit[token] (in double). The result goes to standard "
               "output, progress to standard error. \"tokens\" is the number of scored tokens "
               "(N - 1). With --state-out the state after all tokens but the last is saved: a "
               "next part should start with the last token of this one. A --tokens file is read "
               "as it is scored, so memory does not grow with its length; a text (-f) is "
               "tokenized whole first.";
    case MODE_TOKENIZE:
        return "Print the token ids of a text (separated by spaces).";
    case MODE_INFO:
        return "Print the model's hyper-parameters, parameter count, vocabulary and tokenizer.";
    default: return "";
    }
}

void run_usage(run_mode mode, int whole_program)
{
    if (whole_program) {
        printf("usage: megalodon-run [MODE] [-m MODEL] [options]\n\n"
               "Run a Megalodon model (libmegalodon %s).\n\n"
               "modes:\n"
               "  generate     generate text from a prompt (the default when no mode is given)\n"
               "  perplexity   score a document (exact streaming, or --official-window)\n"
               "  tokenize     print the token ids of a text\n"
               "  info         describe a model\n\n"
               "Run 'megalodon-run MODE --help' for the options of a mode. Exit status: 0 "
               "success, 1 runtime error, 2 usage error.\n\n"
               "generate ",
               mg_version());
    } else {
        static const char *const synopsis[MODE_COUNT] = {
            "usage: megalodon-run [generate] [-m MODEL] [-p TEXT | -f FILE | --tokens FILE] [options]",
            "usage: megalodon-run perplexity [-m MODEL] (-f FILE | --tokens FILE) [options]",
            "usage: megalodon-run tokenize [-m MODEL] (-p TEXT | -f FILE) [options]",
            "usage: megalodon-run info [-m MODEL] [options]"};
        printf("%s\n\n", synopsis[mode]);
        args_print_wrapped(mode_summary(mode), 0, 0);
        printf("\nExit status: 0 success, 1 runtime error, 2 usage error.\n\n");
    }
    printf("options:\n");
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const opt_def *d = &options[i];
        if (!(d->sel & (1u << mode))) continue;
        char def[64];
        default_str(d->id, mode, def, sizeof def);
        opt_help_line(d, d->id == O_BATCH ? batch_help(mode) : d->help, def);
    }
}

/* ---------------------------------------------------------------- values */

static const char *opt_name(const opt_def *d) { return d->lng ? d->lng : d->shrt; }

static int parse_long(const char *name, const char *v, long lo, long hi, long *out)
{
    char err[256];
    int64_t x;
    if (opt_parse_i64(name, v, lo, hi == LONG_MAX ? INT64_MAX : hi, &x, err, sizeof err))
        return run_error(EXIT_USAGE, "%s", err);
    *out = (long)x;
    return -1;
}

/* lo_open: the value must be > lo instead of >= lo */
static int parse_float(const char *name, const char *v, double lo, int lo_open, double hi,
                       float *out)
{
    char err[256];
    double x;
    if (opt_parse_real(name, v, lo, lo_open, hi, 0, &x, err, sizeof err))
        return run_error(EXIT_USAGE, "%s", err);
    *out = (float)x;
    return -1;
}

/* *out: the index of v among names[0 .. n-1] */
static int parse_choice(const char *name, const char *v, const char *const *names, int n,
                        int *out)
{
    char err[4096];
    if (opt_parse_choice(name, v, names, n, out, err, sizeof err))
        return run_error(EXIT_USAGE, "%s", err);
    return -1;
}

static int parse_seed(const char *name, const char *v, run_opts *o)
{
    if (strcmp(v, "-1") == 0) {
        o->seed_from_time = 1;
        return -1;
    }
    char err[256];
    if (opt_parse_u64(name, v, &o->sampling.seed, err, sizeof err))
        return run_error(EXIT_USAGE,
                         "invalid value '%s' for %s: expected -1 or an integer in [0, 2^64)", v,
                         name);
    o->seed_from_time = 0;
    return -1;
}

static int apply(const opt_def *d, const char *name, const char *v, run_opts *o)
{
    long x;
    int rc, i;
    switch (d->id) {
    case O_MODEL: o->model = v; return -1;
    case O_PROMPT: o->prompt = v; return -1;
    case O_FILE: o->file = v; return -1;
    case O_TOKENS: o->tokens_file = v; return -1;
    case O_STATE_IN: o->state_in = v; return -1;
    case O_STATE_OUT: o->state_out = v; return -1;
    case O_NO_BOS: o->no_bos = 1; return -1;
    case O_NO_EOS: o->no_eos = 1; return -1;
    case O_BOS: o->bos = 1; return -1;
    case O_PIECES: o->pieces = 1; return -1;
    case O_INTERACTIVE: o->interactive = 1; return -1;
    case O_IGNORE_EOS: o->ignore_eos = 1; return -1;
    case O_NO_DISPLAY_PROMPT: o->no_display_prompt = 1; return -1;
    case O_JSON: o->json = 1; return -1;
    case O_PER_TOKEN: o->per_token = 1; return -1;
    case O_OFFICIAL_WINDOW: o->official_window = 1; return -1;
    case O_KL_BASE: o->kl_base = v; return -1;
    case O_KL_SAVE: o->kl_save = 1; return -1;
    case O_VERBOSE: o->verbose = 1; return -1;
    case O_BACKEND:
        if ((rc = parse_choice(name, v, backend_names, OPT_COUNT(backend_names), &i)) >= 0) return rc;
        o->backend = v;
        return -1;
    case O_DEVICE:
        if ((rc = parse_long(name, v, -1, 4095, &x)) >= 0) return rc;
        o->device = (int)x;
        return -1;
    case O_ISA:
        if ((rc = parse_choice(name, v, isa_names, OPT_COUNT(isa_names), &i)) >= 0) return rc;
        o->isa = v;
        return -1;
    case O_THREADS:
        if ((rc = parse_long(name, v, 0, 4096, &x)) >= 0) return rc;
        o->n_threads = (int)x;
        return -1;
    case O_BATCH:
        if ((rc = parse_long(name, v, o->mode == MODE_PERPLEXITY ? 1 : 0, 1 << 24, &x)) >= 0)
            return rc;
        o->n_batch = (int)x;
        return -1;
    case O_N_PREDICT:
        if ((rc = parse_long(name, v, -1, INT_MAX, &x)) >= 0) return rc;
        o->n_predict = (int)x;
        return -1;
    case O_TOP_K:
        if ((rc = parse_long(name, v, 0, INT32_MAX, &x)) >= 0) return rc;
        o->sampling.top_k = (int32_t)x;
        return -1;
    case O_REPEAT_LAST_N:
        if ((rc = parse_long(name, v, 0, INT32_MAX, &x)) >= 0) return rc;
        o->sampling.repeat_last_n = (int32_t)x;
        return -1;
    case O_TEMP: return parse_float(name, v, 0.0, 0, INFINITY, &o->sampling.temp);
    case O_TOP_P: return parse_float(name, v, 0.0, 0, 1.0, &o->sampling.top_p);
    case O_MIN_P: return parse_float(name, v, 0.0, 0, 1.0, &o->sampling.min_p);
    case O_REPEAT_PENALTY: return parse_float(name, v, 0.0, 1, INFINITY, &o->sampling.repeat_penalty);
    case O_SEED: return parse_seed(name, v, o);
    case O_CEMA:
        if ((rc = parse_choice(name, v, cema_names, OPT_COUNT(cema_names), &i)) >= 0) return rc;
        o->cema = cema_algos[i];
        return -1;
    }
    return -1;
}

static void modes_of(const opt_def *d, char *buf, size_t size)
{
    buf[0] = '\0';
    int n = 0, total = 0;
    for (int m = 0; m < MODE_COUNT; m++) total += (d->sel >> m) & 1;
    for (int m = 0; m < MODE_COUNT; m++) {
        if (!((d->sel >> m) & 1)) continue;
        size_t l = strlen(buf);
        snprintf(buf + l, size - l, "%s%s", n == 0 ? "" : n == total - 1 ? " and " : ", ",
                 mode_names[m]);
        n++;
    }
}

/* ---------------------------------------------------------------- the command line */

static int check_combination(run_opts *o)
{
    if (!o->model && run_default_model(o) != 0)
        return run_error(EXIT_USAGE, "no model given: -m FILE is required (no MEGALODON_MODEL "
                                     "and no default model found)");
    int inputs = !!o->prompt + !!o->file + !!o->tokens_file;
    switch (o->mode) {
    case MODE_GENERATE:
        if (inputs > 1) return run_error(EXIT_USAGE, "give at most one of -p, -f and --tokens");
        break;
    case MODE_PERPLEXITY:
        if (inputs != 1) return run_error(EXIT_USAGE, "give the document with -f FILE or --tokens FILE");
        if (o->official_window && o->n_batch)
            return run_error(EXIT_USAGE, "--official-window feeds 2 chunks per call: -b cannot be set");
        if (o->official_window && o->state_in)
            return run_error(EXIT_USAGE,
                             "--official-window starts at position 0: it cannot be combined with "
                             "--state-in");
        break;
    case MODE_TOKENIZE:
        if (inputs != 1) return run_error(EXIT_USAGE, "give the text with -p TEXT or -f FILE");
        break;
    default: break;
    }
    return -1;
}

int run_parse_args(run_mode mode, int mode_given, int argc, char **argv, run_opts *o)
{
    memset(o, 0, sizeof *o);
    o->mode = mode;
    usage_mode = mode;
    o->cema = MG_CEMA_AUTO;
    o->device = -1;
    o->n_predict = 128;
    o->sampling = mg_sampler_default_params();

    for (int i = 1; i < argc; i++) {
        opt_arg oa;
        char err[4096];
        if (opt_lookup(options, N_OPTIONS, argv[i], &oa, err, sizeof err))
            return run_error(EXIT_USAGE, "%s", err);
        const opt_def *d = oa.d;
        if (!(d->sel & (1u << mode))) {
            char ms[96];
            modes_of(d, ms, sizeof ms);
            return run_error(EXIT_USAGE, "option '%s' is not used by the %s mode (only by %s)",
                             opt_name(d), run_mode_name(mode), ms);
        }
        if (d->id == O_HELP) {
            run_usage(mode, !mode_given);
            return EXIT_OK;
        }
        if (d->id == O_VERSION) {
            printf("megalodon-run (libmegalodon %s)\n", mg_version());
            return EXIT_OK;
        }
        if (d->id == O_LIST_DEVICES) {
            char buf[8192];
            int n = mg_backend_devices(buf, sizeof buf);
            if (n < 0) return run_error(EXIT_RUNTIME, "--list-devices: %s", mg_last_error());
            printf("%s", buf);
            return EXIT_OK;
        }
        const char *v;
        if (opt_value(&oa, 0, argc, argv, &i, &v, err, sizeof err))
            return run_error(EXIT_USAGE, "%s", err);
        int rc = apply(d, oa.name, v, o);
        if (rc >= 0) return rc;
    }
    return check_combination(o);
}

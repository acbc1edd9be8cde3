/* args.h - megalodon-run: the options of every mode, their parsing and usage texts, and the
 * helpers the modes share (model and state set-up, reading documents, timing). */
#ifndef MG_RUN_ARGS_H
#define MG_RUN_ARGS_H

#include <stddef.h>
#include <stdint.h>

#include "megalodon.h"

/* exit codes */
enum { EXIT_OK = 0, EXIT_RUNTIME = 1, EXIT_USAGE = 2 };

typedef enum { MODE_GENERATE = 0, MODE_PERPLEXITY, MODE_TOKENIZE, MODE_INFO, MODE_COUNT } run_mode;

typedef struct {
    run_mode mode;
    /* every mode */
    const char *model;     /* -m, or the default model (run_default_model) */
    const char *model_from; /* where the model path came from, for -v */
    int n_threads;         /* -t; 0: all CPUs */
    mg_cema_algo cema;     /* --cema */
    const char *isa;       /* --isa; NULL: auto */
    const char *backend;   /* --backend; NULL: $MEGALODON_BACKEND, else cpu */
    int device;            /* --device; -1: $MEGALODON_OPENCL_DEVICE, else 0 */
    int verbose;           /* -v */
    const char *state_in;  /* --state-in */
    const char *state_out; /* --state-out */
    int n_batch;           /* -b; 0: the mode's default */
    /* input */
    const char *prompt;      /* -p */
    const char *file;        /* -f */
    const char *tokens_file; /* --tokens */
    int no_bos, no_eos, bos; /* --no-bos, --no-eos (perplexity), --bos (tokenize) */
    /* generate */
    int n_predict; /* -n; -1: until end of text */
    mg_sampler_params sampling;
    int seed_from_time; /* -s -1 */
    int interactive;    /* -i */
    int ignore_eos;
    int no_display_prompt;
    /* perplexity */
    int json, per_token, official_window;
    const char *kl_base; /* --kl-base: compare with this base file, or write it (--kl-save) */
    int kl_save;
    /* tokenize */
    int pieces;
} run_opts;

/* Parse the options in argv[1..argc-1] (the caller has removed the mode word; mode_given: there
 * was one, so that --help describes that mode rather than the whole program). Returns -1 when
 * the program should go on, otherwise the exit code (after --help or --version: 0; after a
 * usage error, with the message printed: 2). */
int run_parse_args(run_mode mode, int mode_given, int argc, char **argv, run_opts *o);
/* The mode word (argv[1]) -> mode; MODE_COUNT when argv[1] is not a mode word. */
run_mode run_mode_from_word(const char *word);
const char *run_mode_name(run_mode mode);
void run_usage(run_mode mode, int whole_program);

/* Print "error: ..." (and for usage errors a hint to --help) on stderr; return the code. */
int run_error(int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Report a failed library call: "error: WHAT: mg_last_error()"; returns EXIT_RUNTIME. */
int run_lib_error(const char *what);

/* ---------------------------------------------------------------- the modes (exit codes) */

int run_generate(const run_opts *o);      /* run-generate.c (also -i) */
int run_perplexity(const run_opts *o);    /* run-perplexity.c */
int run_tokenize_mode(const run_opts *o); /* run-tokenize.c */
int run_info(const run_opts *o);          /* run-info.c */

/* ---------------------------------------------------------------- shared helpers */

double run_now_ms(void);

/* Without -m: the model named by $MEGALODON_MODEL, else the default model installed in the
 * package data directory, else the one in the source tree of an uninstalled build
 * (docs/megalodon-run.md); sets o->model and o->model_from. 0 when one was found. */
int run_default_model(run_opts *o);
/* Load the model given by -m (with -t and --isa; -v describes the backend on stderr);
 * *load_ms receives the time taken. */
int run_load_model(const run_opts *o, mg_model **model, double *load_ms);
/* A fresh state with --cema and n_batch, then --state-in if given. */
int run_new_state(const run_opts *o, const mg_model *model, int n_batch, mg_state **state);
/* --state-out, if given. */
int run_save_state(const run_opts *o, const mg_state *state);

/* The whole file (or stdin for "-") in a malloc'd buffer with a NUL after it. */
int run_read_file(const char *path, char **data, size_t *len);
/* A token file (or "-") read a block at a time, so that memory does not depend on its length:
 * whitespace-separated ids, each checked to be in [0, n_vocab); errors name the file, the
 * token's position (1-based) and its line. */
typedef struct run_token_reader run_token_reader;
int run_tokens_open(const char *path, int32_t n_vocab, run_token_reader **r);
/* For a regular file: read it once through (checking every id), set *n to the number of ids
 * and *known to 1, and go back to the start. For standard input or a pipe, which can be read
 * only once, *known is 0 and nothing is read. */
int run_tokens_count(run_token_reader *r, size_t *n, int *known);
/* The next ids, at most max: *n < max only at the end of the file. */
int run_tokens_next(run_token_reader *r, int32_t *out, size_t max, size_t *n);
void run_tokens_close(run_token_reader *r);
/* All the ids of a token file, in a malloc'd array (a prompt). */
int run_read_tokens(const char *path, int32_t n_vocab, int32_t **tokens, size_t *n);
/* Parse whitespace-separated ids from a string (interactive lines). */
int run_parse_ids(const char *text, int32_t n_vocab, int32_t **tokens, size_t *n);
/* Encode text with the model's tokenizer (error if the model has none). */
int run_tokenize(const mg_model *model, const char *text, size_t len, int add_bos,
                 int32_t **tokens, size_t *n);

/* Print `text` wrapped at 100 columns, starting at column `col`, continuation lines indented
 * by `indent` (the help texts of the programs). */
void args_print_wrapped(const char *text, int col, int indent);

#endif

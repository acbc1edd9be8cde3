/* train-cli.h - megalodon-train, the program (megalodon-train.c: main and the set-up), and the
 * parts of it that live in their own files: the options (train-options.c), a strict reader
 * and a writer of flat JSON objects (train-json.c), model presets and JSON configs
 * (train-config.c), the training data and the rows of a step (train-data.c), checkpoint
 * files, the JSONL log, the plot and output paths (train-files.c), the checkpoint metadata
 * and --resume (train-meta.c), and the training loop (train-loop.c).
 *
 * The program uses only the public API (megalodon.h), plus the file and token helpers of
 * megalodon-run (args.h: run_read_file, run_read_tokens, run_tokenize, run_now_ms), whose
 * errors are printed as "error: ..." with exit status 1. */
#ifndef MG_TRAIN_H_PROGRAM
#define MG_TRAIN_H_PROGRAM

#include <stddef.h>
#include <stdint.h>

#include "megalodon.h"

/* exit codes (EXIT_OK, EXIT_RUNTIME, EXIT_USAGE as megalodon-run) */
enum { TR_OK = 0, TR_RUNTIME = 1, TR_USAGE = 2, TR_INTERRUPTED = 3 };

/* Print "error: ..." on stderr (usage errors add a pointer to --help); return code. */
int tr_error(int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* "warning: ..." on stderr. */
void tr_warn(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

/* ---------------------------------------------------------------- strings */

typedef struct {
    char *s;
    size_t n, cap;
    int oom; /* an allocation failed: s holds what fitted */
} strbuf;

void sb_printf(strbuf *b, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* s as a JSON string, with quotes and escapes */
void sb_json_str(strbuf *b, const char *s);
/* a finite number as %.17g (exact round trip), null otherwise */
void sb_json_num(strbuf *b, double x);
void sb_free(strbuf *b);

/* ---------------------------------------------------------------- flat JSON objects */

typedef enum { JV_STRING, JV_NUMBER, JV_BOOL, JV_NULL, JV_NESTED } json_type;

typedef struct {
    char *key;
    json_type type;
    char *str;    /* JV_STRING: the value (UTF-8, NUL-terminated; may not contain NUL) */
    double num;   /* JV_NUMBER; JV_BOOL: 0 or 1 */
    int integer;  /* JV_NUMBER written without fraction or exponent */
    int line;     /* where the value starts (1-based), for messages */
} json_member;

typedef struct {
    json_member *m;
    size_t n;
} json_object;

/* Parse one JSON object whose values are strings, numbers, true, false or null (RFC 8259
 * grammar; nested objects and arrays are refused, as are duplicate keys and anything after
 * the object but white space). On failure returns -1 with a message ("line L, column C:
 * ...") in err. */
int json_parse_flat(const char *text, size_t len, json_object *out, char *err, size_t errsize);
void json_free(json_object *o);
const json_member *json_get(const json_object *o, const char *key);
const char *json_type_name(json_type t);

/* ---------------------------------------------------------------- model configs */

/* The preset named `name` into hp (n_vocab and n_output 0: from the vocabulary); -1 if
 * there is none. */
int tr_preset(const char *name, mg_hparams *hp);
/* "tiny, small, base, mega200M, ..." and their descriptions for --help */
void tr_print_presets(int indent);
const char *tr_preset_names(void);
/* The official ModelConf defaults (docs/model.md §1), the base of a JSON config without --preset. */
void tr_config_defaults(mg_hparams *hp);
/* Read a JSON config (a flat object with mg_hparams field names) over hp: only the keys it
 * has change. Errors name the file and the key; returns the exit code. */
int tr_read_config(const char *path, mg_hparams *hp);
/* hp as a JSON object (one key per line), as --print-config writes it. */
void tr_config_json(const mg_hparams *hp, strbuf *b);
/* Checks that new-model hyper-parameters are usable, naming the field; exit code. */
int tr_check_hparams(const mg_hparams *hp);

/* ---------------------------------------------------------------- data */

typedef struct {
    const char *path;
    int is_tokens;    /* a --tokens file (ids), else a --data text file */
    uint64_t size;    /* text: bytes; tokens: ids */
    uint64_t hash;    /* FNV-1a 64 of the bytes (text) or of the ids as little-endian int32 */
} data_source;

typedef struct {
    int32_t *ids;       /* the whole stream: the training part, then the validation part */
    size_t n;           /* ids */
    size_t n_train;     /* ids[0, n_train): training; [n_train, n): validation */
    data_source *src;
    int n_src;
} train_data;

/* Read the sources in order: text files are tokenized with the model's tokenizer, each as one
 * document between BOS and EOS (when the tokenizer has them); token files are used as they
 * are (ids < n_vocab). Then split off the validation part (the last floor(n * val_fraction)
 * ids). Errors are printed; returns the exit code. */
int tr_load_data(const mg_model *model, const char *const *paths, const int *is_tokens,
                 int n_paths, double val_fraction, train_data *d);
void tr_free_data(train_data *d);

typedef enum { ORDER_RANDOM = 0, ORDER_SEQUENTIAL = 1 } data_order;

/* Sequence windows of L+1 ids that start at multiples of L in a part of n ids. */
static inline size_t tr_n_windows(size_t n, int L) { return n > (size_t)L ? (n - 1) / L : 0; }

/* The start (in the training part) of row `row` (0 .. B*accum-1) of optimizer step `step`
 * (0-based): sequential: window ((step * rows_per_step + row) mod windows) * L; random: a
 * hash of (seed, step, row) mod (n_train - L). */
size_t tr_row_start(const train_data *d, data_order order, uint64_t seed, int64_t step,
                    int rows_per_step, int row, int L);

/* ---------------------------------------------------------------- files */

/* The checkpoint of step `step` in dir: DIR/step-NNNNNNNN.ckpt (malloc'd). */
char *tr_ckpt_path(const char *dir, int64_t step);
/* The checkpoints in dir (names step-<digits>.ckpt), newest step first: malloc'd paths and
 * steps; *n 0 when none or when dir does not exist. */
int tr_ckpt_list(const char *dir, char ***paths, int64_t **steps, size_t *n);
void tr_ckpt_list_free(char **paths, int64_t *steps, size_t n);
/* Remove all but the newest `keep` checkpoints of dir (keep 0: remove none). */
void tr_ckpt_prune(const char *dir, int keep);
/* Remove the temporary files of checkpoint writes that were killed; with from >= 0 (a
 * resumed run), rename the checkpoints of later steps to step-N.ckpt.abandoned (with a note):
 * the run goes on from `from`, and they must not be taken for its own. */
void tr_ckpt_tidy(const char *dir, int64_t from);
/* mkdir -p */
int tr_mkdirs(const char *dir);

/* Rewrite the JSONL log keeping its lines with "step" <= step (the history up to a checkpoint
 * that a resumed run continues from); no-op when the file does not exist. */
int tr_log_truncate(const char *path, int64_t step);
/* Draw the train and validation losses of the JSONL log into a PNG with gnuplot
 * ($MEGALODON_GNUPLOT or gnuplot from PATH). Returns 0 when drawn, 1 when gnuplot is not
 * there (a note is printed), -1 on failure (a warning is printed). */
int tr_plot(const char *log_path, const char *png_path, const char *title);

/* FNV-1a 64 */
uint64_t tr_fnv1a(uint64_t h, const void *data, size_t n);
#define TR_FNV_INIT 0xcbf29ce484222325ull

/* ---------------------------------------------------------------- options (train-options.c) */

enum {
    O_HELP, O_VERSION, O_MODEL, O_PRESET, O_CONFIG, O_VOCAB, O_VOCAB_SIZE, O_PRINT_CONFIG,
    O_DATA, O_TOKENS, O_VAL_FRACTION, O_SEQ_LEN, O_BATCH, O_ACCUM, O_DATA_ORDER, O_SEED,
    O_STEPS, O_LR, O_WARMUP, O_SCHEDULE, O_LR_INIT_RATIO, O_LR_END_RATIO, O_WEIGHT_DECAY,
    O_CLIP, O_BETA1, O_BETA2, O_ADAM_EPS, O_THREADS, O_CEMA,
    O_OUT, O_LOG, O_PLOT, O_NO_PLOT, O_LOG_EVERY, O_EVAL_EVERY, O_EVAL_BATCHES,
    O_CKPT_EVERY, O_CKPT_DIR, O_KEEP, O_RESUME, O_COUNT
};

typedef struct {
    /* model */
    const char *model_path, *preset, *config, *vocab;
    int32_t vocab_size;
    int print_config;
    /* data */
    const char **data;
    int *is_tokens;
    int n_data;
    double val_fraction;
    int seq_len, batch, accum;
    data_order order;
    uint64_t seed;
    /* training */
    mg_train_params tp;
    /* output */
    const char *out, *log, *plot;
    int no_plot;
    int64_t log_every, eval_every, eval_batches, ckpt_every;
    const char *ckpt_dir;
    int keep;
    int resume;
    const char *resume_path;
    unsigned char given[O_COUNT];
    const char *value[O_COUNT]; /* a given option's (last) value; NULL for a flag */
} train_opts;

/* Parse the command line into o (defaults first): -1 to go on, else the exit code (--help
 * and --version: TR_OK after printing). */
int tr_parse_args(int argc, char **argv, train_opts *o);
/* The options that need or exclude each other: -1 when usable, else the exit code. */
int tr_check_options(train_opts *o);
/* Append a --data (is_tokens 0) or --tokens file: -1, or the exit code. */
int tr_add_data(train_opts *o, const char *path, int is_tokens);
void tr_free_opts(train_opts *o);
/* --resume: o->tp = base (the checkpoint's), then the training options given on the command
 * line (the "training" group of --help) applied over it again. */
void tr_apply_given_training(train_opts *o, const mg_train_params *base);
const char *tr_schedule_name(mg_lr_schedule s);
const char *tr_order_name(data_order d);

/* ---------------------------------------------------------------- checkpoint metadata
 * (train-meta.c) */

/* The metadata of a checkpoint of step `step`: a flat JSON object ending in its checksum. */
void tr_meta_build(const train_opts *o, const train_data *d, const char *model_desc,
                   int64_t step, strbuf *b);
/* Options of the run from the checkpoint's metadata; given ones that must match are checked
 * (-1, or the exit code). */
int tr_meta_apply(const json_object *m, train_opts *o);
/* The data read now against the checkpoint's: TR_OK or the exit code. */
int tr_meta_check_data(const json_object *m, const train_data *d);
/* A string member of the metadata, "" when absent. */
const char *tr_meta_str(const json_object *m, const char *key);
/* --resume: load the checkpoint file, or the newest usable one of a directory, with its
 * metadata (*used: its path, malloc'd). TR_OK or the exit code. */
int tr_load_resume(train_opts *o, mg_trainer **tr, json_object *meta, char **used);

/* ---------------------------------------------------------------- the run (train-loop.c) */

typedef struct {
    train_opts *o;
    mg_trainer *tr;
    train_data data;
    FILE *log;
    char *ckpt_dir;
    char *model_desc;
    int32_t *rows; /* B * (L+1) ids */
    const char *last_ckpt;
    char *last_ckpt_buf;
} tr_run;


/* One line of the JSONL log (nothing without a log). */
void tr_log_line(tr_run *r, const char *line);
/* The log's "end" record. */
void tr_log_end(tr_run *r, const char *status, const char *message);
/* Seconds since the epoch. */
double tr_unix_time(void);
/* The steps from the trainer's step count to --steps; returns the exit code. */
int tr_train_loop(tr_run *r);

/* ---------------------------------------------------------------- paths (train-files.c) */

/* path with a trailing ".gguf" replaced by (or, without one, followed by) ext (malloc'd) */
char *tr_derive(const char *path, const char *ext);
/* The directory part of path ("." if none; malloc'd). */
char *tr_dir_of(const char *path);

#endif

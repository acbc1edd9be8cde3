/* megalodon-train - the training program of libmegalodon.
 *
 *     megalodon-train (--preset NAME | --config FILE.json | -m MODEL.gguf)
 *                     [--vocab FILE.gguf | --vocab-size N] (--data FILE | --tokens FILE)...
 *                     -o OUT.gguf [options]
 *     megalodon-train --resume [PATH] [options]
 *
 * It uses only the public API (megalodon.h). A step reads B x accum rows of L+1 ids of the
 * training data (their positions are a function of the step alone), accumulates the gradient
 * of each batch's mean token cross-entropy and takes one AdamW step. Validation, a JSONL log,
 * checkpoints kept atomically and a loss plot come with it; --resume continues a run exactly.
 * Exit status: 0 success, 1 runtime error, 2 usage error, 3 stopped by a signal (after
 * writing a checkpoint). docs/megalodon-train.md describes everything. */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "args.h"
#include "opt.h"
#include "train.h"

#define META_FORMAT "megalodon-train/1"
#define META_CHECK ", \"check\": \""

/* ---------------------------------------------------------------- messages */

int tr_error(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    opt_verror(code == TR_USAGE ? "Run 'megalodon-train --help' for usage." : NULL, fmt, ap);
    va_end(ap);
    return code;
}

void tr_warn(const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fputs("warning: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* ---------------------------------------------------------------- options */

enum {
    O_HELP, O_VERSION, O_MODEL, O_PRESET, O_CONFIG, O_VOCAB, O_VOCAB_SIZE, O_PRINT_CONFIG,
    O_DATA, O_TOKENS, O_VAL_FRACTION, O_SEQ_LEN, O_BATCH, O_ACCUM, O_DATA_ORDER, O_SEED,
    O_STEPS, O_LR, O_WARMUP, O_SCHEDULE, O_LR_INIT_RATIO, O_LR_END_RATIO, O_WEIGHT_DECAY,
    O_CLIP, O_BETA1, O_BETA2, O_ADAM_EPS, O_THREADS, O_CEMA,
    O_OUT, O_LOG, O_PLOT, O_NO_PLOT, O_LOG_EVERY, O_EVAL_EVERY, O_EVAL_BATCHES,
    O_CKPT_EVERY, O_CKPT_DIR, O_KEEP, O_RESUME, O_COUNT
};

enum { G_MODEL, G_DATA, G_TRAIN, G_OUT, G_CKPT, G_OTHER };
static const char *const group_names[] = {
    "model (a new one from --preset/--config, or -m to continue training a model file)",
    "data", "training", "output and logging", "checkpoints and resuming", "other"};

/* opt.h: opt_def; sel is the help group (G_...) */

static const opt_def options[] = {
    {O_PRESET, NULL, "--preset", "NAME", G_MODEL,
     "a new model of a preset shape (see below)"},
    {O_CONFIG, NULL, "--config", "FILE", G_MODEL,
     "a new model from a JSON config: a flat object with mg_hparams field names (n_layer, "
     "n_embd, z_dim, value_dim, n_head, n_ff, cema_ndim, chunk_size, norm_groups, n_vocab, "
     "n_output, norm_eps, rope_base, swiglu, scale_emb, share_emb, rescale_nffn, norm_affine); "
     "keys left out keep the --preset's values, or without --preset the official defaults "
     "(8 layers, D 1024, Z 256, E 2048, H 1, F 2048, N 16, C 2048, G 32)"},
    {O_MODEL, "-m", "--model", "FILE", G_MODEL,
     "continue training the weights of a model file (GGUF; its shape and tokenizer)"},
    {O_VOCAB, NULL, "--vocab", "FILE", G_MODEL,
     "a new model's tokenizer: copied from this GGUF file (a model, or a tokenizer-only file "
     "of megalodon-convert --vocab-only); the vocabulary size is its number of tokens"},
    {O_VOCAB_SIZE, NULL, "--vocab-size", "N", G_MODEL,
     "a new model without a tokenizer, for ids 0..N-1 (data from --tokens only)"},
    {O_PRINT_CONFIG, NULL, "--print-config", NULL, G_MODEL,
     "print the model's hyper-parameters as a JSON config and exit"},
    {O_DATA, NULL, "--data", "FILE", G_DATA,
     "a UTF-8 text, one document, tokenized with the model's tokenizer between BOS and EOS "
     "(when it has them); may be given several times (\"-\": standard input)"},
    {O_TOKENS, NULL, "--tokens", "FILE", G_DATA,
     "token ids separated by white space (the format of megalodon-run --tokens), used as they "
     "are; may be given several times and mixed with --data, in order"},
    {O_VAL_FRACTION, NULL, "--val-fraction", "F", G_DATA,
     "the last F of the ids are the validation part; 0: no validation"},
    {O_SEQ_LEN, "-L", "--seq-len", "L", G_DATA,
     "tokens per row (a row is L+1 ids); below the chunk size or a multiple of it; 0: the "
     "chunk size"},
    {O_BATCH, "-B", "--batch", "B", G_DATA, "rows per batch"},
    {O_ACCUM, NULL, "--accum", "N", G_DATA,
     "batches whose gradients are averaged in one optimizer step (gradient accumulation)"},
    {O_DATA_ORDER, NULL, "--data-order", "ORDER", G_DATA,
     "random: each row starts at a position hashed from (seed, step, row); sequential: row r "
     "of step s reads the window number (s*B*accum + r) of L+1 ids starting at multiples of L, "
     "wrapping around to the start after the last whole window"},
    {O_SEED, "-s", "--seed", "N", G_DATA, "seed of a new model's weights and of the data order"},
    {O_STEPS, "-n", "--steps", "N", G_TRAIN, "optimizer steps (the schedule's length)"},
    {O_LR, NULL, "--lr", "X", G_TRAIN, "peak learning rate"},
    {O_WARMUP, NULL, "--warmup", "N", G_TRAIN,
     "warmup steps, from lr * --lr-init-ratio up to lr"},
    {O_SCHEDULE, NULL, "--schedule", "NAME", G_TRAIN,
     "after the warmup: linear (to lr * --lr-end-ratio at the last step, official), cosine "
     "(the same ends) or constant"},
    {O_LR_INIT_RATIO, NULL, "--lr-init-ratio", "X", G_TRAIN, "first warmup learning rate / lr"},
    {O_LR_END_RATIO, NULL, "--lr-end-ratio", "X", G_TRAIN, "last learning rate / lr"},
    {O_WEIGHT_DECAY, NULL, "--weight-decay", "X", G_TRAIN,
     "AdamW decoupled weight decay (on every parameter, as the official recipe)"},
    {O_CLIP, NULL, "--clip", "X", G_TRAIN, "clip the global gradient norm at X; 0: off"},
    {O_BETA1, NULL, "--beta1", "X", G_TRAIN, "AdamW beta1"},
    {O_BETA2, NULL, "--beta2", "X", G_TRAIN, "AdamW beta2"},
    {O_ADAM_EPS, NULL, "--adam-eps", "X", G_TRAIN, "AdamW epsilon"},
    {O_THREADS, "-t", "--threads", "N", G_TRAIN, "compute threads; 0: all CPUs"},
    {O_CEMA, NULL, "--cema", "ALGO", G_TRAIN, "CEMA algorithm: auto, fft or scan"},
    {O_OUT, "-o", "--output", "FILE", G_OUT, "the trained model (GGUF), written at the end"},
    {O_LOG, NULL, "--log", "FILE", G_OUT, "the JSONL log (default: OUT.jsonl, OUT without .gguf)"},
    {O_PLOT, NULL, "--plot", "FILE", G_OUT,
     "the loss curves as a PNG drawn by gnuplot at the end (default: OUT.png)"},
    {O_NO_PLOT, NULL, "--no-plot", NULL, G_OUT, "draw no plot"},
    {O_LOG_EVERY, NULL, "--log-every", "N", G_OUT,
     "print a progress line every N steps (the log has every step)"},
    {O_EVAL_EVERY, NULL, "--eval-every", "N", G_OUT,
     "validation loss every N steps and after the last; 0: never"},
    {O_EVAL_BATCHES, NULL, "--eval-batches", "N", G_OUT,
     "validation batches (of B rows: the first windows of the validation part)"},
    {O_CKPT_EVERY, NULL, "--checkpoint-every", "N", G_CKPT,
     "a checkpoint every N steps and after the last; 0: only when stopped by a signal"},
    {O_CKPT_DIR, NULL, "--checkpoint-dir", "DIR", G_CKPT,
     "where checkpoints go (default: OUT.ckpt)"},
    {O_KEEP, NULL, "--keep", "K", G_CKPT, "keep the newest K checkpoints; 0: all"},
    {O_RESUME, NULL, "--resume", "[PATH]", G_CKPT,
     "continue from a checkpoint file, or from the newest usable one of a directory (default: "
     "the checkpoint directory); the data, --val-fraction, --seq-len, --batch, --accum, "
     "--data-order and --seed come from the checkpoint and must match if given"},
    {O_HELP, "-h", "--help", NULL, G_OTHER, "show this help and exit"},
    {O_VERSION, NULL, "--version", NULL, G_OTHER, "show the version and exit"},
};
#define N_OPTIONS (sizeof options / sizeof options[0])

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
} train_opts;

static void defaults(train_opts *o)
{
    memset(o, 0, sizeof *o);
    o->val_fraction = 0.05;
    o->seq_len = 0;
    o->batch = 8;
    o->accum = 1;
    o->order = ORDER_RANDOM;
    o->seed = 1;
    o->tp = mg_train_default_params();
    o->log_every = 10;
    o->eval_every = 100;
    o->eval_batches = 4;
    o->ckpt_every = 100;
    o->keep = 3;
}

static const char *schedule_name(mg_lr_schedule s)
{
    return s == MG_LR_COSINE ? "cosine" : s == MG_LR_CONSTANT ? "constant" : "linear";
}
static const char *cema_name(mg_cema_algo a)
{
    return a == MG_CEMA_FFT ? "fft" : a == MG_CEMA_SCAN ? "scan" : "auto";
}
static const char *order_name(data_order d) { return d == ORDER_SEQUENTIAL ? "sequential" : "random"; }

static void default_str(int id, char *buf, size_t size)
{
    train_opts o;
    defaults(&o);
    buf[0] = '\0';
    switch (id) {
    case O_VAL_FRACTION: snprintf(buf, size, "%g", o.val_fraction); break;
    case O_SEQ_LEN: snprintf(buf, size, "0"); break;
    case O_BATCH: snprintf(buf, size, "%d", o.batch); break;
    case O_ACCUM: snprintf(buf, size, "%d", o.accum); break;
    case O_DATA_ORDER: snprintf(buf, size, "%s", order_name(o.order)); break;
    case O_SEED: snprintf(buf, size, "%" PRIu64, o.seed); break;
    case O_STEPS: snprintf(buf, size, "%" PRId64, o.tp.total_steps); break;
    case O_LR: snprintf(buf, size, "%g", (double)o.tp.lr); break;
    case O_WARMUP: snprintf(buf, size, "%" PRId64, o.tp.warmup); break;
    case O_SCHEDULE: snprintf(buf, size, "%s", schedule_name(o.tp.schedule)); break;
    case O_LR_INIT_RATIO: snprintf(buf, size, "%g", (double)o.tp.lr_init_ratio); break;
    case O_LR_END_RATIO: snprintf(buf, size, "%g", (double)o.tp.lr_end_ratio); break;
    case O_WEIGHT_DECAY: snprintf(buf, size, "%g", (double)o.tp.weight_decay); break;
    case O_CLIP: snprintf(buf, size, "%g", (double)o.tp.clip); break;
    case O_BETA1: snprintf(buf, size, "%g", (double)o.tp.beta1); break;
    case O_BETA2: snprintf(buf, size, "%g", (double)o.tp.beta2); break;
    case O_ADAM_EPS: snprintf(buf, size, "%g", (double)o.tp.eps); break;
    case O_THREADS: snprintf(buf, size, "0"); break;
    case O_CEMA: snprintf(buf, size, "%s", cema_name(o.tp.cema)); break;
    case O_LOG_EVERY: snprintf(buf, size, "%" PRId64, o.log_every); break;
    case O_EVAL_EVERY: snprintf(buf, size, "%" PRId64, o.eval_every); break;
    case O_EVAL_BATCHES: snprintf(buf, size, "%" PRId64, o.eval_batches); break;
    case O_CKPT_EVERY: snprintf(buf, size, "%" PRId64, o.ckpt_every); break;
    case O_KEEP: snprintf(buf, size, "%d", o.keep); break;
    default: break;
    }
}

static void usage(void)
{
    printf("usage: megalodon-train (--preset NAME | --config FILE | -m MODEL) [--vocab FILE | "
           "--vocab-size N]\n"
           "                       (--data FILE | --tokens FILE)... -o OUT.gguf [options]\n"
           "       megalodon-train --resume [PATH] [options]\n\n");
    args_print_wrapped(
        "Train a Megalodon model on the CPU (libmegalodon training API). Each optimizer step "
        "reads --accum batches of --batch rows of --seq-len + 1 ids of the training data, "
        "accumulates the gradient of each batch's mean token cross-entropy, clips the global "
        "gradient norm and takes an AdamW step at the scheduled learning rate. Progress lines "
        "go to standard output, every step to the JSONL log; the validation loss is measured "
        "every --eval-every steps; checkpoints are written atomically every "
        "--checkpoint-every steps. SIGINT or SIGTERM finishes the current step, writes a "
        "checkpoint and exits with status 3; --resume then continues exactly: the steps after "
        "the checkpoint give the same losses as a run that was never stopped (with the same "
        "thread count and build). At the end the model is written to -o and the loss curves "
        "are drawn with gnuplot.", 0, 0);
    printf("\nExit status: 0 success, 1 runtime error, 2 usage error, 3 stopped by a signal.\n");
    for (int g = G_MODEL; g <= G_OTHER; g++) {
        printf("\n%s:\n", group_names[g]);
        for (size_t i = 0; i < N_OPTIONS; i++) {
            const opt_def *d = &options[i];
            if (d->sel != (unsigned)g) continue;
            char def[64];
            default_str(d->id, def, sizeof def);
            opt_help_line(d, d->help, def);
        }
        if (g == G_MODEL) {
            printf("\n  presets (all with norm_eps 1e-5, rope_base 10000, norm_affine; the "
                   "vocabulary\n  from --vocab or --vocab-size):\n");
            tr_print_presets(4);
        }
    }
    printf("\nEnvironment: MEGALODON_GNUPLOT names the gnuplot program (default: gnuplot "
           "from PATH).\n");
}

static int parse_i64(const char *name, const char *v, int64_t lo, int64_t hi, int64_t *out)
{
    char err[256];
    if (opt_parse_i64(name, v, lo, hi, out, err, sizeof err)) return tr_error(TR_USAGE, "%s", err);
    return -1;
}

/* lo_open / hi_open: the bound itself is excluded */
static int parse_real(const char *name, const char *v, double lo, int lo_open, double hi,
                      int hi_open, double *out)
{
    char err[256];
    if (opt_parse_real(name, v, lo, lo_open, hi, hi_open, out, err, sizeof err))
        return tr_error(TR_USAGE, "%s", err);
    return -1;
}

static int parse_f(const char *name, const char *v, double lo, int lo_open, double hi,
                   int hi_open, float *out)
{
    double x;
    int rc = parse_real(name, v, lo, lo_open, hi, hi_open, &x);
    if (rc < 0) *out = (float)x;
    return rc;
}

static int add_data(train_opts *o, const char *path, int is_tokens)
{
    const char **d = realloc(o->data, (size_t)(o->n_data + 1) * sizeof *d);
    if (d) o->data = d;
    int *t = realloc(o->is_tokens, (size_t)(o->n_data + 1) * sizeof *t);
    if (t) o->is_tokens = t;
    if (!d || !t) return tr_error(TR_RUNTIME, "out of memory");
    o->data[o->n_data] = path;
    o->is_tokens[o->n_data] = is_tokens;
    o->n_data++;
    return -1;
}

static int apply(const opt_def *d, const char *name, const char *v, train_opts *o)
{
    int64_t x;
    int rc;
    switch (d->id) {
    case O_MODEL: o->model_path = v; return -1;
    case O_PRESET: {
        mg_hparams hp;
        if (tr_preset(v, &hp))
            return tr_error(TR_USAGE, "unknown preset '%s' for --preset: expected one of %s", v,
                            tr_preset_names());
        o->preset = v;
        return -1;
    }
    case O_CONFIG: o->config = v; return -1;
    case O_VOCAB: o->vocab = v; return -1;
    case O_VOCAB_SIZE:
        if ((rc = parse_i64(name, v, 1, 1 << 24, &x)) >= 0) return rc;
        o->vocab_size = (int32_t)x;
        return -1;
    case O_PRINT_CONFIG: o->print_config = 1; return -1;
    case O_DATA: return add_data(o, v, 0);
    case O_TOKENS: return add_data(o, v, 1);
    case O_VAL_FRACTION: return parse_real(name, v, 0.0, 0, 1.0, 1, &o->val_fraction);
    case O_SEQ_LEN:
        if ((rc = parse_i64(name, v, 0, 1 << 24, &x)) >= 0) return rc;
        o->seq_len = (int)x;
        return -1;
    case O_BATCH:
        if ((rc = parse_i64(name, v, 1, 1 << 20, &x)) >= 0) return rc;
        o->batch = (int)x;
        return -1;
    case O_ACCUM:
        if ((rc = parse_i64(name, v, 1, 1 << 20, &x)) >= 0) return rc;
        o->accum = (int)x;
        return -1;
    case O_DATA_ORDER:
        if (strcmp(v, "random") == 0)
            o->order = ORDER_RANDOM;
        else if (strcmp(v, "sequential") == 0)
            o->order = ORDER_SEQUENTIAL;
        else
            return tr_error(TR_USAGE,
                            "invalid value '%s' for %s: expected random or sequential", v, name);
        return -1;
    case O_SEED: {
        char *end;
        errno = 0;
        unsigned long long s = strtoull(v, &end, 10);
        if (v[0] == '-' || v[0] == '+' || end == v || *end != '\0' || errno == ERANGE)
            return tr_error(TR_USAGE,
                            "invalid value '%s' for %s: expected an integer in [0, 2^64)", v,
                            name);
        o->seed = (uint64_t)s;
        return -1;
    }
    case O_STEPS:
        if ((rc = parse_i64(name, v, 1, INT64_MAX / 4, &x)) >= 0) return rc;
        o->tp.total_steps = x;
        return -1;
    case O_LR: return parse_f(name, v, 0.0, 1, INFINITY, 0, &o->tp.lr);
    case O_WARMUP:
        if ((rc = parse_i64(name, v, 0, INT64_MAX / 4, &x)) >= 0) return rc;
        o->tp.warmup = x;
        return -1;
    case O_SCHEDULE:
        if (strcmp(v, "linear") == 0)
            o->tp.schedule = MG_LR_LINEAR;
        else if (strcmp(v, "cosine") == 0)
            o->tp.schedule = MG_LR_COSINE;
        else if (strcmp(v, "constant") == 0)
            o->tp.schedule = MG_LR_CONSTANT;
        else
            return tr_error(TR_USAGE,
                            "invalid value '%s' for %s: expected linear, cosine or constant", v,
                            name);
        return -1;
    case O_LR_INIT_RATIO: return parse_f(name, v, 0.0, 0, 1.0, 0, &o->tp.lr_init_ratio);
    case O_LR_END_RATIO: return parse_f(name, v, 0.0, 0, 1.0, 0, &o->tp.lr_end_ratio);
    case O_WEIGHT_DECAY: return parse_f(name, v, 0.0, 0, INFINITY, 0, &o->tp.weight_decay);
    case O_CLIP: return parse_f(name, v, 0.0, 0, INFINITY, 0, &o->tp.clip);
    case O_BETA1: return parse_f(name, v, 0.0, 0, 1.0, 1, &o->tp.beta1);
    case O_BETA2: return parse_f(name, v, 0.0, 0, 1.0, 1, &o->tp.beta2);
    case O_ADAM_EPS: return parse_f(name, v, 0.0, 1, INFINITY, 0, &o->tp.eps);
    case O_THREADS:
        if ((rc = parse_i64(name, v, 0, 4096, &x)) >= 0) return rc;
        o->tp.n_threads = (int)x;
        return -1;
    case O_CEMA:
        if (strcmp(v, "auto") == 0)
            o->tp.cema = MG_CEMA_AUTO;
        else if (strcmp(v, "fft") == 0)
            o->tp.cema = MG_CEMA_FFT;
        else if (strcmp(v, "scan") == 0)
            o->tp.cema = MG_CEMA_SCAN;
        else
            return tr_error(TR_USAGE, "invalid value '%s' for %s: expected auto, fft or scan", v,
                            name);
        return -1;
    case O_OUT: o->out = v; return -1;
    case O_LOG: o->log = v; return -1;
    case O_PLOT: o->plot = v; return -1;
    case O_NO_PLOT: o->no_plot = 1; return -1;
    case O_LOG_EVERY: return (rc = parse_i64(name, v, 1, INT64_MAX, &o->log_every)) >= 0 ? rc : -1;
    case O_EVAL_EVERY: return (rc = parse_i64(name, v, 0, INT64_MAX, &o->eval_every)) >= 0 ? rc : -1;
    case O_EVAL_BATCHES:
        return (rc = parse_i64(name, v, 1, 1 << 20, &o->eval_batches)) >= 0 ? rc : -1;
    case O_CKPT_EVERY: return (rc = parse_i64(name, v, 0, INT64_MAX, &o->ckpt_every)) >= 0 ? rc : -1;
    case O_CKPT_DIR: o->ckpt_dir = v; return -1;
    case O_KEEP:
        if ((rc = parse_i64(name, v, 0, 1 << 20, &x)) >= 0) return rc;
        o->keep = (int)x;
        return -1;
    case O_RESUME:
        o->resume = 1;
        o->resume_path = v;
        return -1;
    }
    return -1;
}

static int parse_args(int argc, char **argv, train_opts *o)
{
    defaults(o);
    for (int i = 1; i < argc; i++) {
        opt_arg oa;
        char err[4096];
        if (opt_lookup(options, N_OPTIONS, argv[i], &oa, err, sizeof err))
            return tr_error(TR_USAGE, "%s", err);
        const opt_def *d = oa.d;
        if (d->id == O_HELP) {
            usage();
            return TR_OK;
        }
        if (d->id == O_VERSION) {
            printf("megalodon-train (libmegalodon %s)\n", mg_version());
            return TR_OK;
        }
        /* --resume takes an optional value: --resume=PATH, or a next argument that is not an
         * option */
        const char *v;
        if (opt_value(&oa, d->id == O_RESUME, argc, argv, &i, &v, err, sizeof err))
            return tr_error(TR_USAGE, "%s", err);
        if (d->id == O_RESUME && v && !*v) return tr_error(TR_USAGE, "--resume= needs a path");
        o->given[d->id] = 1;
        int rc = apply(d, oa.name, v, o);
        if (rc >= 0) return rc;
    }
    return -1;
}

/* ---------------------------------------------------------------- paths */

/* path with a trailing ".gguf" replaced by (or, without one, followed by) ext */
static char *derive(const char *path, const char *ext)
{
    size_t n = strlen(path);
    if (n > 5 && strcmp(path + n - 5, ".gguf") == 0) n -= 5;
    size_t sz = n + strlen(ext) + 1;
    char *s = malloc(sz);
    if (s) snprintf(s, sz, "%.*s%s", (int)n, path, ext);
    return s;
}

static char *dir_of(const char *path)
{
    const char *sl = strrchr(path, '/');
    if (!sl) return strdup(".");
    if (sl == path) return strdup("/");
    return strndup(path, (size_t)(sl - path));
}

static int is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* ---------------------------------------------------------------- checkpoint metadata */

static void meta_build(const train_opts *o, const train_data *d, const char *model_desc,
                       int64_t step, strbuf *b)
{
    sb_printf(b, "{\"format\": ");
    sb_json_str(b, META_FORMAT);
    sb_printf(b, ", \"step\": %" PRId64, step);
    sb_printf(b, ", \"model\": ");
    sb_json_str(b, model_desc);
    sb_printf(b, ", \"output\": ");
    sb_json_str(b, o->out);
    sb_printf(b, ", \"log\": ");
    sb_json_str(b, o->log);
    sb_printf(b, ", \"plot\": ");
    sb_json_str(b, o->no_plot ? "" : o->plot);
    sb_printf(b, ", \"n_sources\": %d", d->n_src);
    for (int i = 0; i < d->n_src; i++) {
        const data_source *s = &d->src[i];
        sb_printf(b, ", \"source%d_kind\": \"%s\", \"source%d_path\": ", i,
                  s->is_tokens ? "tokens" : "text", i);
        sb_json_str(b, s->path);
        sb_printf(b, ", \"source%d_size\": %" PRIu64 ", \"source%d_fnv1a64\": \"%016" PRIx64 "\"",
                  i, s->size, i, s->hash);
    }
    sb_printf(b, ", \"n_tokens\": %zu, \"n_train\": %zu, \"val_fraction\": ", d->n, d->n_train);
    sb_json_num(b, o->val_fraction);
    sb_printf(b, ", \"seq_len\": %d, \"batch\": %d, \"accum\": %d, \"data_order\": \"%s\", "
                 "\"seed\": \"%" PRIu64 "\"",
              o->seq_len, o->batch, o->accum, order_name(o->order), o->seed);
    sb_printf(b, ", \"log_every\": %" PRId64 ", \"eval_every\": %" PRId64
                 ", \"eval_batches\": %" PRId64 ", \"checkpoint_every\": %" PRId64
                 ", \"keep\": %d",
              o->log_every, o->eval_every, o->eval_batches, o->ckpt_every, o->keep);
    /* the last member: FNV-1a 64 of all the text before it, so that a changed byte is found
     * (the library's checksum covers the tensor data) */
    uint64_t h = b->s ? tr_fnv1a(TR_FNV_INIT, b->s, b->n) : 0;
    sb_printf(b, META_CHECK "%016" PRIx64 "\"}", h);
}

/* the metadata's own checksum (meta_build): 0 when it matches */
static int meta_verify(const char *text, const char *path, char *why, size_t size)
{
    const char *at = NULL;
    for (const char *p = text; (p = strstr(p, META_CHECK)) != NULL; p++) at = p;
    if (!at) { /* written by a megalodon-train of before the checksum */
        tr_warn("%s: its metadata has no checksum (an older megalodon-train wrote it): not "
                "verified", path);
        return 0;
    }
    uint64_t h = tr_fnv1a(TR_FNV_INIT, text, (size_t)(at - text));
    char want[24];
    snprintf(want, sizeof want, "%016" PRIx64 "\"}", h);
    if (strcmp(at + strlen(META_CHECK), want) != 0) {
        snprintf(why, size, "%s: its metadata is corrupt (its checksum does not match)", path);
        return -1;
    }
    return 0;
}

/* the members of the metadata that megalodon-train needs, each of its type */
static int meta_check(const json_object *m, const char *path, char *why, size_t size)
{
    static const struct { const char *key; json_type t; } need[] = {
        {"format", JV_STRING},     {"output", JV_STRING},      {"log", JV_STRING},
        {"plot", JV_STRING},       {"n_sources", JV_NUMBER},   {"n_tokens", JV_NUMBER},
        {"val_fraction", JV_NUMBER}, {"seq_len", JV_NUMBER},   {"batch", JV_NUMBER},
        {"accum", JV_NUMBER},      {"data_order", JV_STRING},  {"seed", JV_STRING},
        {"log_every", JV_NUMBER},  {"eval_every", JV_NUMBER},  {"eval_batches", JV_NUMBER},
        {"checkpoint_every", JV_NUMBER}, {"keep", JV_NUMBER}};
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++) {
        const json_member *v = json_get(m, need[i].key);
        if (!v || v->type != need[i].t) {
            snprintf(why, size, "%s: its metadata lacks \"%s\" (%s)", path, need[i].key,
                     json_type_name(need[i].t));
            return -1;
        }
    }
    if (strcmp(json_get(m, "format")->str, META_FORMAT) != 0) {
        snprintf(why, size, "%s: its metadata format is \"%.40s\", not \"%s\"", path,
                 json_get(m, "format")->str, META_FORMAT);
        return -1;
    }
    double ns = json_get(m, "n_sources")->num;
    if (ns < 1 || ns > 1e6 || ns != floor(ns)) {
        snprintf(why, size, "%s: its metadata has a bad n_sources", path);
        return -1;
    }
    for (int i = 0; i < (int)ns; i++) {
        const char *sfx[] = {"kind", "path", "size", "fnv1a64"};
        const json_type ty[] = {JV_STRING, JV_STRING, JV_NUMBER, JV_STRING};
        for (int k = 0; k < 4; k++) {
            char key[48];
            snprintf(key, sizeof key, "source%d_%s", i, sfx[k]);
            const json_member *v = json_get(m, key);
            if (!v || v->type != ty[k]) {
                snprintf(why, size, "%s: its metadata lacks \"%s\"", path, key);
                return -1;
            }
        }
    }
    return 0;
}

static const char *meta_str(const json_object *m, const char *key)
{
    const json_member *v = json_get(m, key);
    return v && v->type == JV_STRING ? v->str : "";
}
static double meta_num(const json_object *m, const char *key)
{
    const json_member *v = json_get(m, key);
    return v && v->type == JV_NUMBER ? v->num : 0;
}

/* Options of the run from the checkpoint's metadata; given ones that must match are checked. */
static int meta_apply(const json_object *m, train_opts *o)
{
    struct { int id; const char *name; double stored, given; } ints[] = {
        {O_SEQ_LEN, "--seq-len", meta_num(m, "seq_len"), o->seq_len},
        {O_BATCH, "--batch", meta_num(m, "batch"), o->batch},
        {O_ACCUM, "--accum", meta_num(m, "accum"), o->accum},
        {O_VAL_FRACTION, "--val-fraction", meta_num(m, "val_fraction"), o->val_fraction},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        if (o->given[ints[i].id] && ints[i].stored != ints[i].given)
            return tr_error(TR_USAGE, "%s %g does not match the checkpoint (%g): the data "
                            "positions and the losses depend on it; leave it out to take the "
                            "checkpoint's", ints[i].name, ints[i].given, ints[i].stored);
    o->seq_len = (int)meta_num(m, "seq_len");
    o->batch = (int)meta_num(m, "batch");
    o->accum = (int)meta_num(m, "accum");
    o->val_fraction = meta_num(m, "val_fraction");
    const char *ord = meta_str(m, "data_order");
    data_order stored_order = strcmp(ord, "sequential") == 0 ? ORDER_SEQUENTIAL : ORDER_RANDOM;
    if (o->given[O_DATA_ORDER] && stored_order != o->order)
        return tr_error(TR_USAGE, "--data-order %s does not match the checkpoint (%s)",
                        order_name(o->order), order_name(stored_order));
    o->order = stored_order;
    uint64_t seed = strtoull(meta_str(m, "seed"), NULL, 10);
    if (o->given[O_SEED] && seed != o->seed)
        return tr_error(TR_USAGE, "--seed %" PRIu64 " does not match the checkpoint (%" PRIu64
                        ")", o->seed, seed);
    o->seed = seed;
    if (o->batch < 1 || o->accum < 1 || o->seq_len < 1)
        return tr_error(TR_RUNTIME, "the checkpoint's metadata has a bad seq_len, batch or "
                        "accum");
    /* the data: the sources of the checkpoint unless given */
    int ns = (int)meta_num(m, "n_sources");
    if (o->n_data == 0) {
        for (int i = 0; i < ns; i++) {
            char key[48];
            snprintf(key, sizeof key, "source%d_path", i);
            const char *p = meta_str(m, key);
            snprintf(key, sizeof key, "source%d_kind", i);
            int rc = add_data(o, p, strcmp(meta_str(m, key), "tokens") == 0);
            if (rc >= 0) return rc;
        }
    } else if (o->n_data != ns) {
        return tr_error(TR_USAGE, "%d data files given, the checkpoint was made with %d; give "
                        "the same ones in the same order, or none to take the checkpoint's",
                        o->n_data, ns);
    }
    /* the rest may change */
    if (!o->given[O_OUT]) o->out = meta_str(m, "output");
    if (!o->given[O_LOG]) o->log = meta_str(m, "log");
    if (!o->given[O_PLOT] && !o->given[O_NO_PLOT]) {
        o->plot = meta_str(m, "plot");
        if (!*o->plot) o->no_plot = 1;
    }
    if (!o->given[O_LOG_EVERY]) o->log_every = (int64_t)meta_num(m, "log_every");
    if (!o->given[O_EVAL_EVERY]) o->eval_every = (int64_t)meta_num(m, "eval_every");
    if (!o->given[O_EVAL_BATCHES]) o->eval_batches = (int64_t)meta_num(m, "eval_batches");
    if (!o->given[O_CKPT_EVERY]) o->ckpt_every = (int64_t)meta_num(m, "checkpoint_every");
    if (!o->given[O_KEEP]) o->keep = (int)meta_num(m, "keep");
    if (o->log_every < 1) o->log_every = 1;
    if (o->eval_batches < 1) o->eval_batches = 1;
    return -1;
}

/* the data read now against the checkpoint's */
static int meta_check_data(const json_object *m, const train_data *d)
{
    for (int i = 0; i < d->n_src; i++) {
        const data_source *s = &d->src[i];
        char key[48];
        snprintf(key, sizeof key, "source%d_kind", i);
        const char *kind = meta_str(m, key);
        snprintf(key, sizeof key, "source%d_path", i);
        const char *path = meta_str(m, key);
        snprintf(key, sizeof key, "source%d_size", i);
        double size = meta_num(m, key);
        snprintf(key, sizeof key, "source%d_fnv1a64", i);
        uint64_t hash = strtoull(meta_str(m, key), NULL, 16);
        const char *unit = s->is_tokens ? "ids" : "bytes";
        if (strcmp(kind, s->is_tokens ? "tokens" : "text") != 0)
            return tr_error(TR_USAGE, "data file %d ('%s') is %s, but the checkpoint's was %s "
                            "('%s')", i + 1, s->path, s->is_tokens ? "--tokens" : "--data",
                            strcmp(kind, "tokens") == 0 ? "--tokens" : "--data", path);
        if ((double)s->size != size || s->hash != hash)
            return tr_error(TR_RUNTIME,
                            "data file %d ('%s': %" PRIu64 " %s, FNV-1a %016" PRIx64 ") is not "
                            "the one the checkpoint was made with ('%s': %.0f %s, FNV-1a %016"
                            PRIx64 ")", i + 1, s->path, s->size, unit, s->hash, path, size, unit,
                            hash);
    }
    if ((double)d->n != meta_num(m, "n_tokens"))
        return tr_error(TR_RUNTIME, "the data gives %zu ids, the checkpoint's gave %.0f", d->n,
                        meta_num(m, "n_tokens"));
    return TR_OK;
}

/* ---------------------------------------------------------------- signals */

static volatile sig_atomic_t g_stop = 0;

static void on_signal(int sig) { g_stop = sig; }

static void install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    /* a second signal of the same kind ends the program at once */
    sa.sa_flags = SA_RESTART | SA_RESETHAND;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

/* ---------------------------------------------------------------- the run */

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
} run;

static void log_line(run *r, const char *line)
{
    if (!r->log) return;
    fputs(line, r->log);
    fputc('\n', r->log);
    fflush(r->log);
}

static double unix_time(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void fmt_duration(double s, char *buf, size_t size)
{
    if (!isfinite(s) || s < 0) {
        snprintf(buf, size, "?");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, size, "%ldh%02ldm", t / 3600, t / 60 % 60);
    else if (t >= 60)
        snprintf(buf, size, "%ldm%02lds", t / 60, t % 60);
    else
        snprintf(buf, size, "%lds", t);
}

/* Fill r->rows with the batch `a` of optimizer step `step` (0-based). */
static void fill_rows(run *r, int64_t step, int a)
{
    const train_opts *o = r->o;
    const int L = o->seq_len, B = o->batch;
    for (int b = 0; b < B; b++) {
        size_t s = tr_row_start(&r->data, o->order, o->seed, step, B * o->accum, a * B + b, L);
        memcpy(r->rows + (size_t)b * (L + 1), r->data.ids + s, (size_t)(L + 1) * sizeof(int32_t));
    }
}

/* validation: the first windows of the validation part, in batches of at most B rows */
static int evaluate(run *r, double *loss, int64_t *tokens)
{
    const train_opts *o = r->o;
    const int L = o->seq_len, B = o->batch;
    const int32_t *val = r->data.ids + r->data.n_train;
    size_t windows = tr_n_windows(r->data.n - r->data.n_train, L);
    size_t rows = (size_t)o->eval_batches * (size_t)B;
    if (rows > windows) rows = windows;
    double sum = 0;
    for (size_t done = 0; done < rows;) {
        int nb = rows - done < (size_t)B ? (int)(rows - done) : B;
        for (int b = 0; b < nb; b++)
            memcpy(r->rows + (size_t)b * (L + 1), val + (done + (size_t)b) * (size_t)L,
                   (size_t)(L + 1) * sizeof(int32_t));
        double l;
        if (mg_trainer_eval(r->tr, r->rows, nb, L, &l) != MG_OK)
            return tr_error(TR_RUNTIME, "validation failed: %s", mg_last_error());
        sum += l * nb;
        done += (size_t)nb;
    }
    *loss = sum / (double)rows;
    *tokens = (int64_t)rows * L;
    return TR_OK;
}

static int write_checkpoint(run *r, int64_t step)
{
    char *path = tr_ckpt_path(r->ckpt_dir, step);
    if (!path) return tr_error(TR_RUNTIME, "out of memory");
    strbuf meta = {0};
    meta_build(r->o, &r->data, r->model_desc, step, &meta);
    if (meta.oom) {
        sb_free(&meta);
        free(path);
        return tr_error(TR_RUNTIME, "out of memory");
    }
    if (mg_trainer_save_checkpoint(r->tr, path, meta.s) != MG_OK) {
        int rc = tr_error(TR_RUNTIME, "cannot write the checkpoint %s: %s", path, mg_last_error());
        sb_free(&meta);
        free(path);
        return rc;
    }
    sb_free(&meta);
    strbuf b = {0};
    sb_printf(&b, "{\"type\": \"checkpoint\", \"step\": %" PRId64 ", \"path\": ", step);
    sb_json_str(&b, path);
    sb_printf(&b, "}");
    log_line(r, b.s);
    sb_free(&b);
    tr_ckpt_prune(r->ckpt_dir, r->o->keep);
    free(r->last_ckpt_buf);
    r->last_ckpt_buf = path;
    r->last_ckpt = path;
    return TR_OK;
}

static void log_end(run *r, const char *status, const char *message)
{
    strbuf b = {0};
    sb_printf(&b, "{\"type\": \"end\", \"step\": %" PRId64 ", \"status\": \"%s\", \"message\": ",
              mg_trainer_step_count(r->tr), status);
    sb_json_str(&b, message);
    sb_printf(&b, ", \"time\": %.3f}", unix_time());
    log_line(r, b.s);
    sb_free(&b);
}

/* the training loop; returns the exit code */
static int train_loop(run *r)
{
    train_opts *o = r->o;
    const int L = o->seq_len, B = o->batch;
    const int64_t total = o->tp.total_steps;
    const int64_t first = mg_trainer_step_count(r->tr);
    const double t0 = run_now_ms();
    double train_ms = 0, win_loss = 0;
    int64_t win_n = 0, tokens_done = 0;
    install_signals();
    for (int64_t step = first; step < total; step++) {
        const double ts = run_now_ms();
        for (int a = 0; a < o->accum; a++) {
            fill_rows(r, step, a);
            double l;
            int rc = mg_trainer_accumulate(r->tr, r->rows, B, L, &l);
            if (rc != MG_OK) {
                char msg[512];
                snprintf(msg, sizeof msg, "step %" PRId64 ": %s", step + 1, mg_last_error());
                log_end(r, "error", msg);
                return tr_error(TR_RUNTIME, "step %" PRId64 " (batch %d): %s", step + 1, a + 1,
                                mg_last_error());
            }
        }
        mg_train_stats st;
        int rc = mg_trainer_update(r->tr, &st);
        if (rc != MG_OK) {
            char msg[700];
            if (rc == MG_ERR_NUMERIC)
                snprintf(msg, sizeof msg, "training stopped at step %" PRId64 ", the loss or the "
                         "gradient is not finite: %s; the last checkpoint is %s", step + 1,
                         mg_last_error(), r->last_ckpt ? r->last_ckpt : "(none written)");
            else
                snprintf(msg, sizeof msg, "step %" PRId64 ": %s", step + 1, mg_last_error());
            log_end(r, "error", msg);
            return tr_error(TR_RUNTIME, "%s", msg);
        }
        const double now = run_now_ms();
        train_ms += now - ts;
        tokens_done += st.n_tokens;
        const double tok_s = train_ms > 0 ? tokens_done / (train_ms / 1e3) : 0;
        const int64_t done = st.step - first;
        const double eta = (now - t0) / 1e3 / (double)done * (double)(total - st.step);

        strbuf b = {0};
        sb_printf(&b, "{\"type\": \"train\", \"step\": %" PRId64 ", \"loss\": ", st.step);
        sb_json_num(&b, st.loss);
        sb_printf(&b, ", \"lr\": ");
        sb_json_num(&b, st.lr);
        sb_printf(&b, ", \"grad_norm\": ");
        sb_json_num(&b, st.grad_norm);
        sb_printf(&b, ", \"tokens\": %" PRId64 ", \"tokens_per_s\": %.1f, \"elapsed_s\": %.3f}",
                  st.n_tokens, tok_s, (now - t0) / 1e3);
        log_line(r, b.s);
        sb_free(&b);

        win_loss += st.loss;
        win_n++;
        if (st.step % o->log_every == 0 || st.step == total || st.step == first + 1 || g_stop) {
            char e[32];
            fmt_duration(eta, e, sizeof e);
            printf("step %" PRId64 "/%" PRId64 "  loss %.4f  lr %.3e  grad %.4f  %.0f tok/s  "
                   "ETA %s\n", st.step, total, win_loss / win_n, st.lr, st.grad_norm, tok_s, e);
            fflush(stdout);
            win_loss = 0;
            win_n = 0;
        }

        const int have_val = r->data.n > r->data.n_train;
        if (have_val && o->eval_every > 0 && (st.step % o->eval_every == 0 || st.step == total)) {
            double vl = 0;
            int64_t vt = 0;
            if ((rc = evaluate(r, &vl, &vt))) {
                log_end(r, "error", "validation failed");
                return rc;
            }
            strbuf v = {0};
            sb_printf(&v, "{\"type\": \"val\", \"step\": %" PRId64 ", \"loss\": ", st.step);
            sb_json_num(&v, vl);
            sb_printf(&v, ", \"ppl\": ");
            sb_json_num(&v, exp(vl));
            sb_printf(&v, ", \"tokens\": %" PRId64 "}", vt);
            log_line(r, v.s);
            sb_free(&v);
            printf("step %" PRId64 "/%" PRId64 "  validation loss %.4f  ppl %.3f  (%" PRId64
                   " tokens)\n", st.step, total, vl, exp(vl), vt);
            fflush(stdout);
        }

        int ckpt_due = o->ckpt_every > 0 && (st.step % o->ckpt_every == 0 || st.step == total);
        if (ckpt_due || g_stop) {
            if ((rc = write_checkpoint(r, st.step))) {
                log_end(r, "error", "cannot write a checkpoint");
                return rc;
            }
        }
        if (g_stop) {
            char msg[600];
            snprintf(msg, sizeof msg, "stopped by %s after step %" PRId64 "; checkpoint %s; "
                     "continue with --resume", g_stop == SIGINT ? "SIGINT" : "SIGTERM", st.step,
                     r->last_ckpt);
            log_end(r, "interrupted", msg);
            fflush(stdout);
            fprintf(stderr, "megalodon-train: %s\n", msg);
            return TR_INTERRUPTED;
        }
    }
    return TR_OK;
}

/* ---------------------------------------------------------------- set-up */

/* hyper-parameters of a new model from --preset / --config / --vocab-size (without --vocab) */
static int new_hparams(const train_opts *o, mg_hparams *hp)
{
    if (o->preset)
        tr_preset(o->preset, hp);
    else
        tr_config_defaults(hp);
    if (o->config) {
        int rc = tr_read_config(o->config, hp);
        if (rc) return rc;
    }
    if (o->vocab_size) {
        if (hp->n_vocab && hp->n_vocab != o->vocab_size)
            return tr_error(TR_USAGE, "--vocab-size %d differs from the config's n_vocab %d",
                            (int)o->vocab_size, (int)hp->n_vocab);
        hp->n_vocab = o->vocab_size;
    }
    return TR_OK;
}

static int check_options(train_opts *o)
{
    const int model_src = !!o->model_path + !!(o->preset || o->config);
    if (o->resume) {
        static const struct { int id; const char *name; } model_opts[] = {
            {O_MODEL, "-m"}, {O_PRESET, "--preset"}, {O_CONFIG, "--config"},
            {O_VOCAB, "--vocab"}, {O_VOCAB_SIZE, "--vocab-size"},
            {O_PRINT_CONFIG, "--print-config"}};
        for (size_t i = 0; i < sizeof model_opts / sizeof model_opts[0]; i++)
            if (o->given[model_opts[i].id])
                return tr_error(TR_USAGE, "--resume continues the checkpoint's model: %s cannot "
                                "be given with it", model_opts[i].name);
        if (!o->resume_path && !o->ckpt_dir && !o->out)
            return tr_error(TR_USAGE, "--resume without a path looks in the checkpoint "
                            "directory: give it (--resume DIR or --checkpoint-dir DIR) or -o");
        return -1;
    }
    if (model_src == 0)
        return tr_error(TR_USAGE, "no model: give --preset NAME, --config FILE or -m MODEL "
                        "(or --resume)");
    if (model_src > 1)
        return tr_error(TR_USAGE, "-m continues a model file: it cannot be combined with "
                        "--preset or --config");
    if (o->model_path && (o->vocab || o->vocab_size))
        return tr_error(TR_USAGE, "-m brings its own vocabulary: --vocab and --vocab-size are "
                        "for a new model");
    if (o->vocab && o->vocab_size)
        return tr_error(TR_USAGE, "give --vocab FILE or --vocab-size N, not both");
    if (o->print_config) return -1;
    if (!o->out) return tr_error(TR_USAGE, "no output: -o OUT.gguf is required");
    if (o->n_data == 0)
        return tr_error(TR_USAGE, "no data: give --data FILE (text) or --tokens FILE (ids)");
    return -1;
}

static int print_config(const train_opts *o)
{
    mg_hparams hp;
    mg_model *m = NULL;
    int rc;
    if (o->model_path) {
        mg_model_params mp = mg_model_default_params();
        mp.n_threads = 1;
        if (mg_model_load(o->model_path, &mp, &m) != MG_OK)
            return tr_error(TR_RUNTIME, "cannot load %s: %s", o->model_path, mg_last_error());
        hp = *mg_model_hparams(m);
    } else {
        if ((rc = new_hparams(o, &hp))) return rc;
        int32_t nt;
        if (o->vocab && !hp.n_vocab) {
            if (mg_vocab_file_size(o->vocab, &nt) != MG_OK)
                return tr_error(TR_RUNTIME, "--vocab %s: %s", o->vocab, mg_last_error());
            hp.n_vocab = nt;
        }
        if (!hp.n_output) hp.n_output = hp.n_vocab;
    }
    strbuf b = {0};
    tr_config_json(&hp, &b);
    fputs(b.s ? b.s : "", stdout);
    sb_free(&b);
    mg_model_free(m);
    return TR_OK;
}

/* --resume: the checkpoint file, or the newest usable one of a directory */
static int load_resume(train_opts *o, mg_trainer **tr, json_object *meta, char **used)
{
    char *own_dir = NULL;
    const char *path = o->resume_path;
    if (!path) {
        if (o->ckpt_dir)
            path = o->ckpt_dir;
        else
            path = own_dir = derive(o->out, ".ckpt");
        if (!path) return tr_error(TR_RUNTIME, "out of memory");
    }
    char **paths = NULL;
    int64_t *steps = NULL;
    size_t n = 0;
    int rc = TR_OK;
    const int dir = is_dir(path);
    if (dir) {
        if ((rc = tr_ckpt_list(path, &paths, &steps, &n))) goto out;
        if (n == 0) {
            rc = tr_error(TR_RUNTIME, "--resume: no checkpoint (step-N.ckpt) in '%s'", path);
            goto out;
        }
    } else {
        struct stat st;
        if (stat(path, &st) != 0) {
            rc = tr_error(TR_RUNTIME, "--resume: cannot open '%s': %s", path, strerror(errno));
            goto out;
        }
        paths = malloc(sizeof *paths);
        if (!paths || !(paths[0] = strdup(path))) {
            free(paths);
            paths = NULL;
            rc = tr_error(TR_RUNTIME, "out of memory");
            goto out;
        }
        n = 1;
    }
    for (size_t i = 0; i < n; i++) {
        char why[600] = "";
        mg_trainer *t = NULL;
        if (mg_trainer_load_checkpoint(paths[i], NULL, &t) != MG_OK) {
            snprintf(why, sizeof why, "%s", mg_last_error()); /* names the file */
        } else {
            const char *um = mg_trainer_user_meta(t);
            char err[256];
            if (!*um) {
                snprintf(why, sizeof why, "%s: it has no megalodon-train metadata", paths[i]);
            } else if (meta_verify(um, paths[i], why, sizeof why) != 0) {
                /* why says it */
            } else if (json_parse_flat(um, strlen(um), meta, err, sizeof err) != 0) {
                snprintf(why, sizeof why, "%s: its metadata is not the JSON megalodon-train "
                         "writes (%s)", paths[i], err);
            } else if (meta_check(meta, paths[i], why, sizeof why) != 0) {
                json_free(meta);
            } else if (json_get(meta, "step") &&
                       meta_num(meta, "step") != (double)mg_trainer_step_count(t)) {
                snprintf(why, sizeof why, "%s: it holds step %" PRId64 " but its metadata was "
                         "written for step %.0f", paths[i], mg_trainer_step_count(t),
                         meta_num(meta, "step"));
                json_free(meta);
            } else {
                *tr = t;
                *used = strdup(paths[i]);
                printf("resuming from %s (step %" PRId64 ")\n", paths[i],
                       mg_trainer_step_count(t));
                goto out;
            }
            mg_trainer_free(t);
        }
        if (!dir) {
            rc = tr_error(TR_RUNTIME, "--resume: the checkpoint is not usable: %s", why);
            goto out;
        }
        tr_warn("skipping a checkpoint that is not usable: %s%s", why,
                i + 1 < n ? "; trying the previous one" : "");
    }
    rc = tr_error(TR_RUNTIME, "--resume: no usable checkpoint in '%s' (%zu tried)", path, n);
out:
    if (paths) tr_ckpt_list_free(paths, steps, n);
    free(own_dir);
    return rc;
}

static void free_opts(train_opts *o)
{
    free(o->data);
    free(o->is_tokens);
}

int main(int argc, char **argv)
{
    train_opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc >= 0) {
        free_opts(&o);
        return rc;
    }
    if ((rc = check_options(&o)) >= 0) {
        free_opts(&o);
        return rc;
    }
    if (o.print_config) {
        rc = print_config(&o);
        free_opts(&o);
        return rc;
    }

    /* output into a pipe that was closed (| head, a tee that died) is dropped: the run goes
     * on, the log file has everything */
    signal(SIGPIPE, SIG_IGN);

    run r;
    memset(&r, 0, sizeof r);
    r.o = &o;
    mg_model *init = NULL;
    json_object meta = {0};
    char *resumed = NULL, *own_log = NULL, *own_plot = NULL, *own_ckpt = NULL;
    char model_desc[600] = "";
    const int threads = o.tp.n_threads;

    /* ------------------------------------------------ the trainer */
    if (o.resume) {
        if ((rc = load_resume(&o, &r.tr, &meta, &resumed))) goto done;
        r.last_ckpt = resumed;
        if ((rc = meta_apply(&meta, &o)) >= 0) goto done;
        rc = TR_OK;
        snprintf(model_desc, sizeof model_desc, "%s", meta_str(&meta, "model"));
        /* the optimizer and schedule of the checkpoint, unless given now */
        mg_train_params tp = *mg_trainer_params(r.tr);
        if (o.given[O_STEPS]) tp.total_steps = o.tp.total_steps;
        if (o.given[O_LR]) tp.lr = o.tp.lr;
        if (o.given[O_WARMUP]) tp.warmup = o.tp.warmup;
        if (o.given[O_SCHEDULE]) tp.schedule = o.tp.schedule;
        if (o.given[O_LR_INIT_RATIO]) tp.lr_init_ratio = o.tp.lr_init_ratio;
        if (o.given[O_LR_END_RATIO]) tp.lr_end_ratio = o.tp.lr_end_ratio;
        if (o.given[O_WEIGHT_DECAY]) tp.weight_decay = o.tp.weight_decay;
        if (o.given[O_CLIP]) tp.clip = o.tp.clip;
        if (o.given[O_BETA1]) tp.beta1 = o.tp.beta1;
        if (o.given[O_BETA2]) tp.beta2 = o.tp.beta2;
        if (o.given[O_ADAM_EPS]) tp.eps = o.tp.eps;
        if (o.given[O_CEMA]) tp.cema = o.tp.cema;
        tp.n_threads = threads;
        if (mg_trainer_set_params(r.tr, &tp) != MG_OK) {
            rc = tr_error(TR_RUNTIME, "cannot apply the training options: %s", mg_last_error());
            goto done;
        }
        o.tp = tp;
        if (!o.given[O_CKPT_DIR]) o.ckpt_dir = own_ckpt = dir_of(resumed);
    } else if (o.model_path) {
        mg_model_params mp = mg_model_default_params();
        mp.n_threads = threads;
        if (mg_model_load(o.model_path, &mp, &init) != MG_OK) {
            rc = tr_error(TR_RUNTIME, "cannot load the model %s: %s", o.model_path,
                          mg_last_error());
            goto done;
        }
        if (mg_trainer_new(init, &o.tp, &r.tr) != MG_OK) {
            rc = tr_error(TR_RUNTIME, "cannot start training %s: %s", o.model_path,
                          mg_last_error());
            goto done;
        }
        snprintf(model_desc, sizeof model_desc, "model %s", o.model_path);
    } else {
        mg_hparams hp;
        if ((rc = new_hparams(&o, &hp))) goto done;
        if (o.vocab) {
            int32_t nt;
            if (mg_vocab_file_size(o.vocab, &nt) != MG_OK) {
                rc = tr_error(TR_RUNTIME, "--vocab %s: %s", o.vocab, mg_last_error());
                goto done;
            }
            if (!hp.n_vocab) hp.n_vocab = nt;
            if (hp.n_vocab < nt) {
                rc = tr_error(TR_RUNTIME, "the config's n_vocab %d is smaller than the tokenizer "
                              "of --vocab %s (%d tokens)", (int)hp.n_vocab, o.vocab, (int)nt);
                goto done;
            }
        }
        if (!hp.n_vocab) {
            rc = tr_error(TR_USAGE, "a new model needs a vocabulary: --vocab FILE.gguf (a GGUF "
                          "file whose tokenizer is copied) or --vocab-size N (ids only)");
            goto done;
        }
        if (!hp.n_output) hp.n_output = hp.n_vocab;
        if ((rc = tr_check_hparams(&hp))) goto done;
        if (mg_trainer_new_random(&hp, o.seed, o.vocab, &o.tp, &r.tr) != MG_OK) {
            rc = tr_error(TR_RUNTIME, "cannot create the model: %s", mg_last_error());
            goto done;
        }
        if (o.config)
            snprintf(model_desc, sizeof model_desc, "%s%s%sconfig %s", o.preset ? "preset " : "",
                     o.preset ? o.preset : "", o.preset ? ", " : "", o.config);
        else
            snprintf(model_desc, sizeof model_desc, "preset %s", o.preset);
    }
    const mg_model *model = mg_trainer_model(r.tr);
    const mg_hparams *hp = mg_model_hparams(model);

    /* ------------------------------------------------ options that need the model */
    if (o.seq_len == 0) o.seq_len = hp->chunk_size;
    if (o.seq_len >= hp->chunk_size && o.seq_len % hp->chunk_size) {
        rc = tr_error(TR_USAGE, "--seq-len %d: must be below the chunk size (%d) or a multiple "
                      "of it", o.seq_len, (int)hp->chunk_size);
        goto done;
    }
    if (!o.log && !(o.log = own_log = derive(o.out, ".jsonl"))) goto oom;
    if (!o.plot && !(o.plot = own_plot = derive(o.out, ".png"))) goto oom;
    if (!o.ckpt_dir && !(o.ckpt_dir = own_ckpt = derive(o.out, ".ckpt"))) goto oom;
    r.ckpt_dir = (char *)o.ckpt_dir;

    /* ------------------------------------------------ the data */
    if ((rc = tr_load_data(model, o.data, o.is_tokens, o.n_data, o.val_fraction, &r.data)))
        goto done;
    if (o.resume && (rc = meta_check_data(&meta, &r.data))) goto done;
    {
        const size_t need = (size_t)o.seq_len + 1, n_val = r.data.n - r.data.n_train;
        if (r.data.n_train < need) {
            rc = tr_error(TR_RUNTIME, "the training data has %zu ids%s: fewer than one row of "
                          "--seq-len + 1 = %zu", r.data.n_train,
                          n_val ? " (after the validation part)" : "", need);
            goto done;
        }
        if (o.val_fraction > 0 && n_val < need) {
            rc = tr_error(TR_RUNTIME, "the validation part (--val-fraction %g of %zu ids) has %zu "
                          "ids: fewer than one row of --seq-len + 1 = %zu; raise --val-fraction, "
                          "lower --seq-len, or use --val-fraction 0", o.val_fraction, r.data.n,
                          n_val, need);
            goto done;
        }
    }
    r.rows = malloc((size_t)o.batch * (size_t)(o.seq_len + 1) * sizeof *r.rows);
    if (!r.rows) goto oom;
    r.model_desc = model_desc;

    /* ------------------------------------------------ checkpoints and the log */
    if ((rc = tr_mkdirs(r.ckpt_dir))) goto done;
    if (!o.resume) {
        char **paths;
        int64_t *steps;
        size_t n;
        if ((rc = tr_ckpt_list(r.ckpt_dir, &paths, &steps, &n))) goto done;
        tr_ckpt_list_free(paths, steps, n);
        if (n) {
            rc = tr_error(TR_RUNTIME, "the checkpoint directory '%s' already holds checkpoints "
                          "of another run: continue it with --resume, or remove them or choose "
                          "another --checkpoint-dir", r.ckpt_dir);
            goto done;
        }
    }
    const int64_t start = mg_trainer_step_count(r.tr);
    tr_ckpt_tidy(r.ckpt_dir, o.resume ? start : -1);
    if (o.resume && (rc = tr_log_truncate(o.log, start))) goto done;
    if (!(r.log = fopen(o.log, o.resume ? "ab" : "wb"))) {
        rc = tr_error(TR_RUNTIME, "cannot write the log '%s': %s", o.log, strerror(errno));
        goto done;
    }
    {
        strbuf b = {0};
        sb_printf(&b, "{\"type\": \"%s\", \"step\": %" PRId64 ", \"time\": %.3f, \"version\": ",
                  o.resume ? "resume" : "start", start, unix_time());
        sb_json_str(&b, mg_version());
        sb_printf(&b, ", \"model\": ");
        sb_json_str(&b, model_desc);
        if (o.resume) {
            sb_printf(&b, ", \"checkpoint\": ");
            sb_json_str(&b, resumed);
        }
        sb_printf(&b, ", \"n_params\": %" PRIu64 ", \"n_tokens\": %zu, \"n_train\": %zu, "
                      "\"n_val\": %zu, \"seq_len\": %d, \"batch\": %d, \"accum\": %d, "
                      "\"steps\": %" PRId64 ", \"lr\": ",
                  mg_model_n_params(model), r.data.n, r.data.n_train, r.data.n - r.data.n_train,
                  o.seq_len, o.batch, o.accum, o.tp.total_steps);
        sb_json_num(&b, o.tp.lr);
        sb_printf(&b, ", \"schedule\": \"%s\", \"warmup\": %" PRId64 ", \"data_order\": \"%s\", "
                      "\"seed\": \"%" PRIu64 "\", \"threads\": %d}",
                  schedule_name(o.tp.schedule), o.tp.warmup, order_name(o.order), o.seed,
                  threads);
        log_line(&r, b.s);
        sb_free(&b);
    }
    printf("model: %s, %" PRIu64 " parameters (%d layer%s, D %d, chunk %d, vocabulary %d)\n",
           model_desc, mg_model_n_params(model), (int)hp->n_layer, hp->n_layer == 1 ? "" : "s",
           (int)hp->n_embd,
           (int)hp->chunk_size, (int)hp->n_vocab);
    printf("data: %zu ids: %zu training, %zu validation; rows of %d+1 ids, %d x %d rows (%" PRId64
           " tokens) per step, %s order\n", r.data.n, r.data.n_train, r.data.n - r.data.n_train,
           o.seq_len, o.batch, o.accum, (int64_t)o.batch * o.accum * o.seq_len,
           order_name(o.order));
    printf("training: steps %" PRId64 " (from %" PRId64 "), lr %g, %s schedule, warmup %" PRId64
           ", weight decay %g, clip %g; log %s; checkpoints in %s\n", o.tp.total_steps, start,
           (double)o.tp.lr, schedule_name(o.tp.schedule), o.tp.warmup,
           (double)o.tp.weight_decay, (double)o.tp.clip, o.log, r.ckpt_dir);
    fflush(stdout);
    if (start >= o.tp.total_steps)
        printf("the checkpoint is at step %" PRId64 ", not below --steps %" PRId64
               ": no step to take\n", start, o.tp.total_steps);

    /* ------------------------------------------------ train */
    if ((rc = train_loop(&r))) goto done;

    if (mg_trainer_save_model(r.tr, o.out) != MG_OK) {
        rc = tr_error(TR_RUNTIME, "cannot write the model %s: %s", o.out, mg_last_error());
        log_end(&r, "error", "cannot write the model");
        goto done;
    }
    {
        char msg[512];
        snprintf(msg, sizeof msg, "model written to %s", o.out);
        log_end(&r, "done", msg);
        printf("done: %s\n", msg);
    }
    fclose(r.log);
    r.log = NULL;
    if (!o.no_plot && *o.plot) {
        char title[256];
        snprintf(title, sizeof title, "%s: %s", o.out, model_desc);
        if (tr_plot(o.log, o.plot, title) == 0) printf("plot: %s\n", o.plot);
    }
    rc = TR_OK;
    goto done;
oom:
    rc = tr_error(TR_RUNTIME, "out of memory");
done:
    if (r.log) fclose(r.log);
    mg_trainer_free(r.tr);
    mg_model_free(init);
    tr_free_data(&r.data);
    json_free(&meta);
    free(r.rows);
    free(r.last_ckpt_buf);
    free(resumed);
    free(own_log);
    free(own_plot);
    free(own_ckpt);
    free_opts(&o);
    return rc;
}

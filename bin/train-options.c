/* train-options.c - megalodon-train's options: the table, the defaults, --help, parsing the
 * command line and the checks between options (docs/megalodon-train.md). */
#include "config.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "opt.h"
#include "train-cli.h"

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

/* the values of --schedule, --cema and --data-order, by their enums */
static const char *const schedule_names[] = {[MG_LR_LINEAR] = "linear", [MG_LR_COSINE] = "cosine",
                                             [MG_LR_CONSTANT] = "constant"};
static const char *const cema_names[] = {[MG_CEMA_AUTO] = "auto", [MG_CEMA_FFT] = "fft",
                                         [MG_CEMA_SCAN] = "scan"};
static const char *const order_names[] = {[ORDER_RANDOM] = "random",
                                          [ORDER_SEQUENTIAL] = "sequential"};

/* names[i], or for a value out of range names[0] (the default) */
static const char *name_of(const char *const *names, int n, int i)
{
    return i >= 0 && i < n ? names[i] : names[0];
}
const char *tr_schedule_name(mg_lr_schedule s)
{
    return name_of(schedule_names, OPT_COUNT(schedule_names), (int)s);
}
static const char *cema_name(mg_cema_algo a)
{
    return name_of(cema_names, OPT_COUNT(cema_names), (int)a);
}
const char *tr_order_name(data_order d)
{
    return name_of(order_names, OPT_COUNT(order_names), (int)d);
}

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
    case O_DATA_ORDER: snprintf(buf, size, "%s", tr_order_name(o.order)); break;
    case O_SEED: snprintf(buf, size, "%" PRIu64, o.seed); break;
    case O_STEPS: snprintf(buf, size, "%" PRId64, o.tp.total_steps); break;
    case O_LR: snprintf(buf, size, "%g", (double)o.tp.lr); break;
    case O_WARMUP: snprintf(buf, size, "%" PRId64, o.tp.warmup); break;
    case O_SCHEDULE: snprintf(buf, size, "%s", tr_schedule_name(o.tp.schedule)); break;
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

/* *out: the index of v among names[0 .. n-1] */
static int parse_choice(const char *name, const char *v, const char *const *names, int n,
                        int *out)
{
    char err[4096];
    if (opt_parse_choice(name, v, names, n, out, err, sizeof err))
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

int tr_add_data(train_opts *o, const char *path, int is_tokens)
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
    int rc, i;
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
    case O_DATA: return tr_add_data(o, v, 0);
    case O_TOKENS: return tr_add_data(o, v, 1);
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
        if ((rc = parse_choice(name, v, order_names, OPT_COUNT(order_names), &i)) >= 0) return rc;
        o->order = (data_order)i;
        return -1;
    case O_SEED: {
        char err[256];
        if (opt_parse_u64(name, v, &o->seed, err, sizeof err))
            return tr_error(TR_USAGE, "%s", err);
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
        if ((rc = parse_choice(name, v, schedule_names, OPT_COUNT(schedule_names), &i)) >= 0) return rc;
        o->tp.schedule = (mg_lr_schedule)i;
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
        if ((rc = parse_choice(name, v, cema_names, OPT_COUNT(cema_names), &i)) >= 0) return rc;
        o->tp.cema = (mg_cema_algo)i;
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

int tr_parse_args(int argc, char **argv, train_opts *o)
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
        o->value[d->id] = v;
        int rc = apply(d, oa.name, v, o);
        if (rc >= 0) return rc;
    }
    return -1;
}

void tr_apply_given_training(train_opts *o, const mg_train_params *base)
{
    o->tp = *base;
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const opt_def *d = &options[i];
        /* the values were checked by the first parse: this cannot fail */
        if (d->sel == G_TRAIN && o->given[d->id]) apply(d, d->lng, o->value[d->id], o);
    }
}

int tr_check_options(train_opts *o)
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

void tr_free_opts(train_opts *o)
{
    free(o->data);
    free(o->is_tokens);
}

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
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "opt.h"
#include "train-cli.h"

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

/* --resume: the trainer of the checkpoint, with its options; the optimizer and schedule of
 * the checkpoint unless given now. *resumed: the checkpoint's path; *own_ckpt: the checkpoint
 * directory when it is the checkpoint's. Returns the exit code. */
static int resume_trainer(train_opts *o, tr_run *r, json_object *meta, char **resumed,
                          char **own_ckpt, char *model_desc, size_t desc_size)
{
    const int threads = o->tp.n_threads;
    int rc = tr_load_resume(o, &r->tr, meta, resumed);
    if (rc) return rc;
    r->last_ckpt = *resumed;
    if ((rc = tr_meta_apply(meta, o)) >= 0) return rc;
    snprintf(model_desc, desc_size, "%s", tr_meta_str(meta, "model"));
    tr_apply_given_training(o, mg_trainer_params(r->tr));
    o->tp.n_threads = threads;
    if (mg_trainer_set_params(r->tr, &o->tp) != MG_OK)
        return tr_error(TR_RUNTIME, "cannot apply the training options: %s", mg_last_error());
    if (!o->given[O_CKPT_DIR]) o->ckpt_dir = *own_ckpt = tr_dir_of(*resumed);
    return TR_OK;
}

/* -m: a trainer on the weights of a model file (*init, freed by the caller). */
static int load_trainer(train_opts *o, tr_run *r, mg_model **init, char *model_desc,
                        size_t desc_size)
{
    mg_model_params mp = mg_model_default_params();
    mp.n_threads = o->tp.n_threads;
    if (mg_model_load(o->model_path, &mp, init) != MG_OK)
        return tr_error(TR_RUNTIME, "cannot load the model %s: %s", o->model_path,
                        mg_last_error());
    if (mg_trainer_new(*init, &o->tp, &r->tr) != MG_OK)
        return tr_error(TR_RUNTIME, "cannot start training %s: %s", o->model_path,
                        mg_last_error());
    snprintf(model_desc, desc_size, "model %s", o->model_path);
    return TR_OK;
}

/* --preset / --config: a trainer on a new model with random weights. */
static int new_trainer(train_opts *o, tr_run *r, char *model_desc, size_t desc_size)
{
    mg_hparams hp;
    int rc = new_hparams(o, &hp);
    if (rc) return rc;
    if (o->vocab) {
        int32_t nt;
        if (mg_vocab_file_size(o->vocab, &nt) != MG_OK)
            return tr_error(TR_RUNTIME, "--vocab %s: %s", o->vocab, mg_last_error());
        if (!hp.n_vocab) hp.n_vocab = nt;
        if (hp.n_vocab < nt)
            return tr_error(TR_RUNTIME, "the config's n_vocab %d is smaller than the tokenizer "
                            "of --vocab %s (%d tokens)", (int)hp.n_vocab, o->vocab, (int)nt);
    }
    if (!hp.n_vocab)
        return tr_error(TR_USAGE, "a new model needs a vocabulary: --vocab FILE.gguf (a GGUF "
                        "file whose tokenizer is copied) or --vocab-size N (ids only)");
    if (!hp.n_output) hp.n_output = hp.n_vocab;
    if ((rc = tr_check_hparams(&hp))) return rc;
    if (mg_trainer_new_random(&hp, o->seed, o->vocab, &o->tp, &r->tr) != MG_OK)
        return tr_error(TR_RUNTIME, "cannot create the model: %s", mg_last_error());
    if (o->config)
        snprintf(model_desc, desc_size, "%s%s%sconfig %s", o->preset ? "preset " : "",
                 o->preset ? o->preset : "", o->preset ? ", " : "", o->config);
    else
        snprintf(model_desc, desc_size, "preset %s", o->preset);
    return TR_OK;
}

/* The training part must hold a row of --seq-len + 1 ids, and so must a validation part. */
static int check_data_size(const train_opts *o, const train_data *d)
{
    const size_t need = (size_t)o->seq_len + 1, n_val = d->n - d->n_train;
    if (d->n_train < need)
        return tr_error(TR_RUNTIME, "the training data has %zu ids%s: fewer than one row of "
                        "--seq-len + 1 = %zu", d->n_train,
                        n_val ? " (after the validation part)" : "", need);
    if (o->val_fraction > 0 && n_val < need)
        return tr_error(TR_RUNTIME, "the validation part (--val-fraction %g of %zu ids) has %zu "
                        "ids: fewer than one row of --seq-len + 1 = %zu; raise --val-fraction, "
                        "lower --seq-len, or use --val-fraction 0", o->val_fraction, d->n,
                        n_val, need);
    return TR_OK;
}

/* A new run's checkpoint directory must not hold another run's checkpoints. */
static int check_ckpt_dir_free(const char *dir)
{
    char **paths;
    int64_t *steps;
    size_t n;
    int rc = tr_ckpt_list(dir, &paths, &steps, &n);
    if (rc) return rc;
    tr_ckpt_list_free(paths, steps, n);
    if (n)
        return tr_error(TR_RUNTIME, "the checkpoint directory '%s' already holds checkpoints "
                        "of another run: continue it with --resume, or remove them or choose "
                        "another --checkpoint-dir", dir);
    return TR_OK;
}

/* The log's "start" (or "resume") record, and the summary on standard output. */
static void announce(tr_run *r, const char *resumed, int threads, int64_t start)
{
    const train_opts *o = r->o;
    const mg_model *model = mg_trainer_model(r->tr);
    const mg_hparams *hp = mg_model_hparams(model);
    strbuf b = {0};
    sb_printf(&b, "{\"type\": \"%s\", \"step\": %" PRId64 ", \"time\": %.3f, \"version\": ",
              o->resume ? "resume" : "start", start, tr_unix_time());
    sb_json_str(&b, mg_version());
    sb_printf(&b, ", \"model\": ");
    sb_json_str(&b, r->model_desc);
    if (o->resume) {
        sb_printf(&b, ", \"checkpoint\": ");
        sb_json_str(&b, resumed);
    }
    sb_printf(&b, ", \"n_params\": %" PRIu64 ", \"n_tokens\": %zu, \"n_train\": %zu, "
                  "\"n_val\": %zu, \"seq_len\": %d, \"batch\": %d, \"accum\": %d, "
                  "\"steps\": %" PRId64 ", \"lr\": ",
              mg_model_n_params(model), r->data.n, r->data.n_train, r->data.n - r->data.n_train,
              o->seq_len, o->batch, o->accum, o->tp.total_steps);
    sb_json_num(&b, o->tp.lr);
    sb_printf(&b, ", \"schedule\": \"%s\", \"warmup\": %" PRId64 ", \"data_order\": \"%s\", "
                  "\"seed\": \"%" PRIu64 "\", \"threads\": %d}",
              tr_schedule_name(o->tp.schedule), o->tp.warmup, tr_order_name(o->order), o->seed,
              threads);
    tr_log_line(r, b.s);
    sb_free(&b);
    printf("model: %s, %" PRIu64 " parameters (%d layer%s, D %d, chunk %d, vocabulary %d)\n",
           r->model_desc, mg_model_n_params(model), (int)hp->n_layer,
           hp->n_layer == 1 ? "" : "s", (int)hp->n_embd, (int)hp->chunk_size,
           (int)hp->n_vocab);
    printf("data: %zu ids: %zu training, %zu validation; rows of %d+1 ids, %d x %d rows (%" PRId64
           " tokens) per step, %s order\n", r->data.n, r->data.n_train,
           r->data.n - r->data.n_train, o->seq_len, o->batch, o->accum,
           (int64_t)o->batch * o->accum * o->seq_len, tr_order_name(o->order));
    printf("training: steps %" PRId64 " (from %" PRId64 "), lr %g, %s schedule, warmup %" PRId64
           ", weight decay %g, clip %g; log %s; checkpoints in %s\n", o->tp.total_steps, start,
           (double)o->tp.lr, tr_schedule_name(o->tp.schedule), o->tp.warmup,
           (double)o->tp.weight_decay, (double)o->tp.clip, o->log, r->ckpt_dir);
    fflush(stdout);
    if (start >= o->tp.total_steps)
        printf("the checkpoint is at step %" PRId64 ", not below --steps %" PRId64
               ": no step to take\n", start, o->tp.total_steps);
}

int main(int argc, char **argv)
{
    train_opts o;
    int rc = tr_parse_args(argc, argv, &o);
    if (rc >= 0) {
        tr_free_opts(&o);
        return rc;
    }
    if ((rc = tr_check_options(&o)) >= 0) {
        tr_free_opts(&o);
        return rc;
    }
    if (o.print_config) {
        rc = print_config(&o);
        tr_free_opts(&o);
        return rc;
    }

    /* output into a pipe that was closed (| head, a tee that died) is dropped: the run goes
     * on, the log file has everything */
    signal(SIGPIPE, SIG_IGN);

    tr_run r;
    memset(&r, 0, sizeof r);
    r.o = &o;
    mg_model *init = NULL;
    json_object meta = {0};
    char *resumed = NULL, *own_log = NULL, *own_plot = NULL, *own_ckpt = NULL;
    char model_desc[600] = "";
    const int threads = o.tp.n_threads;

    /* ------------------------------------------------ the trainer */
    if (o.resume)
        rc = resume_trainer(&o, &r, &meta, &resumed, &own_ckpt, model_desc, sizeof model_desc);
    else if (o.model_path)
        rc = load_trainer(&o, &r, &init, model_desc, sizeof model_desc);
    else
        rc = new_trainer(&o, &r, model_desc, sizeof model_desc);
    if (rc) goto done;
    const int chunk = (int)mg_model_hparams(mg_trainer_model(r.tr))->chunk_size;

    /* ------------------------------------------------ options that need the model */
    if (o.seq_len == 0) o.seq_len = chunk;
    if (o.seq_len >= chunk && o.seq_len % chunk) {
        rc = tr_error(TR_USAGE, "--seq-len %d: must be below the chunk size (%d) or a multiple "
                      "of it", o.seq_len, chunk);
        goto done;
    }
    if (!o.log && !(o.log = own_log = tr_derive(o.out, ".jsonl"))) goto oom;
    if (!o.plot && !(o.plot = own_plot = tr_derive(o.out, ".png"))) goto oom;
    if (!o.ckpt_dir && !(o.ckpt_dir = own_ckpt = tr_derive(o.out, ".ckpt"))) goto oom;
    r.ckpt_dir = (char *)o.ckpt_dir;

    /* ------------------------------------------------ the data */
    if ((rc = tr_load_data(mg_trainer_model(r.tr), o.data, o.is_tokens, o.n_data,
                           o.val_fraction, &r.data)))
        goto done;
    if (o.resume && (rc = tr_meta_check_data(&meta, &r.data))) goto done;
    if ((rc = check_data_size(&o, &r.data))) goto done;
    r.rows = malloc((size_t)o.batch * (size_t)(o.seq_len + 1) * sizeof *r.rows);
    if (!r.rows) goto oom;
    r.model_desc = model_desc;

    /* ------------------------------------------------ checkpoints and the log */
    if ((rc = tr_mkdirs(r.ckpt_dir))) goto done;
    if (!o.resume && (rc = check_ckpt_dir_free(r.ckpt_dir))) goto done;
    const int64_t start = mg_trainer_step_count(r.tr);
    tr_ckpt_tidy(r.ckpt_dir, o.resume ? start : -1);
    if (o.resume && (rc = tr_log_truncate(o.log, start))) goto done;
    if (!(r.log = fopen(o.log, o.resume ? "ab" : "wb"))) {
        rc = tr_error(TR_RUNTIME, "cannot write the log '%s': %s", o.log, strerror(errno));
        goto done;
    }
    announce(&r, resumed, threads, start);

    /* ------------------------------------------------ train */
    if ((rc = tr_train_loop(&r))) goto done;

    if (mg_trainer_save_model(r.tr, o.out) != MG_OK) {
        rc = tr_error(TR_RUNTIME, "cannot write the model %s: %s", o.out, mg_last_error());
        tr_log_end(&r, "error", "cannot write the model");
        goto done;
    }
    {
        char msg[512];
        snprintf(msg, sizeof msg, "model written to %s", o.out);
        tr_log_end(&r, "done", msg);
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
    tr_free_opts(&o);
    return rc;
}

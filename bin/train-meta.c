/* train-meta.c - megalodon-train's checkpoint metadata: the run's options and data written
 * into each checkpoint as a flat JSON object, read back, checked and applied by --resume, which
 * also picks the checkpoint (docs/megalodon-train.md). */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "train-cli.h"

#define META_FORMAT "megalodon-train/1"
#define META_CHECK ", \"check\": \""

static int is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

void tr_meta_build(const train_opts *o, const train_data *d, const char *model_desc,
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
              o->seq_len, o->batch, o->accum, tr_order_name(o->order), o->seed);
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

const char *tr_meta_str(const json_object *m, const char *key)
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
int tr_meta_apply(const json_object *m, train_opts *o)
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
    const char *ord = tr_meta_str(m, "data_order");
    data_order stored_order = strcmp(ord, "sequential") == 0 ? ORDER_SEQUENTIAL : ORDER_RANDOM;
    if (o->given[O_DATA_ORDER] && stored_order != o->order)
        return tr_error(TR_USAGE, "--data-order %s does not match the checkpoint (%s)",
                        tr_order_name(o->order), tr_order_name(stored_order));
    o->order = stored_order;
    uint64_t seed = strtoull(tr_meta_str(m, "seed"), NULL, 10);
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
            const char *p = tr_meta_str(m, key);
            snprintf(key, sizeof key, "source%d_kind", i);
            int rc = tr_add_data(o, p, strcmp(tr_meta_str(m, key), "tokens") == 0);
            if (rc >= 0) return rc;
        }
    } else if (o->n_data != ns) {
        return tr_error(TR_USAGE, "%d data files given, the checkpoint was made with %d; give "
                        "the same ones in the same order, or none to take the checkpoint's",
                        o->n_data, ns);
    }
    /* the rest may change */
    if (!o->given[O_OUT]) o->out = tr_meta_str(m, "output");
    if (!o->given[O_LOG]) o->log = tr_meta_str(m, "log");
    if (!o->given[O_PLOT] && !o->given[O_NO_PLOT]) {
        o->plot = tr_meta_str(m, "plot");
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
int tr_meta_check_data(const json_object *m, const train_data *d)
{
    for (int i = 0; i < d->n_src; i++) {
        const data_source *s = &d->src[i];
        char key[48];
        snprintf(key, sizeof key, "source%d_kind", i);
        const char *kind = tr_meta_str(m, key);
        snprintf(key, sizeof key, "source%d_path", i);
        const char *path = tr_meta_str(m, key);
        snprintf(key, sizeof key, "source%d_size", i);
        double size = meta_num(m, key);
        snprintf(key, sizeof key, "source%d_fnv1a64", i);
        uint64_t hash = strtoull(tr_meta_str(m, key), NULL, 16);
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

/* --resume: the checkpoint file, or the newest usable one of a directory */
int tr_load_resume(train_opts *o, mg_trainer **tr, json_object *meta, char **used)
{
    char *own_dir = NULL;
    const char *path = o->resume_path;
    if (!path) {
        if (o->ckpt_dir)
            path = o->ckpt_dir;
        else
            path = own_dir = tr_derive(o->out, ".ckpt");
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


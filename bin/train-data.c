/* train-data.c - megalodon-train: the training data (text tokenized with the model's tokenizer,
 * or token ids), its identity for checkpoints, the validation split, and where each row of a
 * step starts. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "train-cli.h"

uint64_t tr_fnv1a(uint64_t h, const void *data, size_t n)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static uint64_t hash_ids(const int32_t *ids, size_t n)
{
    uint64_t h = TR_FNV_INIT;
    for (size_t i = 0; i < n; i++) {
        uint32_t v = (uint32_t)ids[i];
        unsigned char b[4] = {(unsigned char)v, (unsigned char)(v >> 8),
                              (unsigned char)(v >> 16), (unsigned char)(v >> 24)};
        h = tr_fnv1a(h, b, 4);
    }
    return h;
}

void tr_free_data(train_data *d)
{
    free(d->ids);
    free(d->src);
    memset(d, 0, sizeof *d);
}

/* append n ids to d->ids */
static int append(train_data *d, size_t *cap, const int32_t *ids, size_t n)
{
    if (d->n + n > *cap) {
        size_t c = *cap ? *cap : 4096;
        while (c < d->n + n) c *= 2;
        int32_t *v = realloc(d->ids, c * sizeof *v);
        if (!v) return tr_error(TR_RUNTIME, "out of memory for %zu token ids", d->n + n);
        d->ids = v;
        *cap = c;
    }
    memcpy(d->ids + d->n, ids, n * sizeof *ids);
    d->n += n;
    return TR_OK;
}

int tr_load_data(const mg_model *model, const char *const *paths, const int *is_tokens,
                 int n_paths, double val_fraction, train_data *d)
{
    memset(d, 0, sizeof *d);
    const mg_hparams *hp = mg_model_hparams(model);
    /* an id is fed (< n_vocab rows of the embedding) and predicted (< rows of the head) */
    int32_t limit = hp->n_vocab < mg_model_n_vocab(model) ? hp->n_vocab : mg_model_n_vocab(model);
    d->src = calloc((size_t)n_paths, sizeof *d->src);
    if (!d->src) return tr_error(TR_RUNTIME, "out of memory");
    d->n_src = n_paths;
    size_t cap = 0;
    const int32_t bos = mg_token_bos(model), eos = mg_token_eos(model);
    for (int i = 0; i < n_paths; i++) {
        data_source *s = &d->src[i];
        s->path = paths[i];
        s->is_tokens = is_tokens[i];
        int32_t *ids = NULL;
        size_t n = 0;
        int rc;
        if (is_tokens[i]) {
            rc = run_read_tokens(paths[i], limit, &ids, &n);
            if (!rc) {
                s->size = n;
                s->hash = hash_ids(ids, n);
            }
        } else {
            if (!mg_model_has_tokenizer(model)) {
                tr_free_data(d);
                return tr_error(TR_RUNTIME,
                                "--data %s: the model has no tokenizer to read text with; give "
                                "token ids with --tokens (or a tokenizer with --vocab)", paths[i]);
            }
            char *text;
            size_t len;
            rc = run_read_file(paths[i], &text, &len);
            if (!rc) {
                s->size = len;
                s->hash = tr_fnv1a(TR_FNV_INIT, text, len);
                rc = run_tokenize(model, text, len, bos >= 0, &ids, &n);
                free(text);
            }
            if (!rc && eos >= 0) {
                int32_t *v = realloc(ids, (n + 1) * sizeof *v);
                if (!v)
                    rc = tr_error(TR_RUNTIME, "out of memory");
                else {
                    ids = v;
                    ids[n++] = eos;
                }
            }
            if (!rc) /* ids of the tokenizer beyond the model's rows */
                for (size_t k = 0; k < n; k++)
                    if (ids[k] < 0 || ids[k] >= limit) {
                        rc = tr_error(TR_RUNTIME, "--data %s: the tokenizer gave id %d, out of "
                                      "the model's range [0, %d)", paths[i], (int)ids[k],
                                      (int)limit);
                        break;
                    }
        }
        if (!rc) rc = append(d, &cap, ids, n);
        free(ids);
        if (rc) {
            tr_free_data(d);
            return rc;
        }
    }
    size_t n_val = (size_t)((double)d->n * val_fraction);
    if (n_val > d->n) n_val = d->n;
    d->n_train = d->n - n_val;
    return TR_OK;
}

static uint64_t mix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

size_t tr_row_start(const train_data *d, data_order order, uint64_t seed, int64_t step,
                    int rows_per_step, int row, int L)
{
    if (order == ORDER_SEQUENTIAL) {
        uint64_t w = tr_n_windows(d->n_train, L);
        uint64_t r = (uint64_t)step * (uint64_t)rows_per_step + (uint64_t)row;
        return (size_t)(r % w) * (size_t)L;
    }
    uint64_t starts = d->n_train - (size_t)L; /* 0 .. n_train - L - 1 */
    uint64_t h = mix64(mix64(mix64(seed) ^ (uint64_t)step) ^ (uint64_t)row);
    return (size_t)(h % starts);
}

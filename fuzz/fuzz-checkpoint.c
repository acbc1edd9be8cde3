/* fuzz-checkpoint.c - libFuzzer harness for the training checkpoint reader (lib/trainer.c:
 * mg_trainer_load_checkpoint, a GGUF read with gguf_open, then the trainer built from it).
 *
 * A checkpoint carries its model, so no model is loaded first. Each input is written to an
 * anonymous in-memory file (memfd_create) and loaded by its /proc/self/fd path, with one
 * compute thread. Checks:
 *   - a refused file: a negative status, a message, and *out left NULL;
 *   - an accepted file gives a trainer that saves (to a private temporary directory), loads
 *     back with the same step and caller string, saves again to the same bytes, and runs one
 *     training step (which may fail only with MG_ERR_NUMERIC: weights from a fuzzed file can
 *     be anything).
 * Most mutations of a valid checkpoint break its checksum (64-bit FNV-1a over all tensor
 * bytes in file order, key train.checksum), which the reader checks before anything else.
 * So that the fuzzer also reaches what comes after, an input refused for its checksum is
 * rebuilt with the GGUF writer with the checksum recomputed (the same hash as
 * lib/trainer.c), and that image is loaded and checked too. */
#include "fuzz-common.h"

#include "gguf.h"
#include "megalodon.h"
#include "train.h"

static char tmpdir[4096];
static char save_path[4200], save_path2[4200];

static void cleanup(void)
{
    unlink(save_path);
    unlink(save_path2);
    rmdir(tmpdir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_quiet_env();
    fuzz_make_tmpdir(tmpdir, sizeof tmpdir, "checkpoint");
    snprintf(save_path, sizeof save_path, "%s/a.ckpt", tmpdir);
    snprintf(save_path2, sizeof save_path2, "%s/b.ckpt", tmpdir);
    atexit(cleanup);
    return 0;
}

static mg_train_params params(void)
{
    mg_train_params tp = mg_train_default_params();
    tp.n_threads = 1;
    return tp;
}

/* The whole file at path (malloc'd). */
static unsigned char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    FUZZ_ASSERT(f, "cannot open %s", path);
    unsigned char *b = NULL;
    long size = -1;
    if (fseek(f, 0, SEEK_END) == 0 && (size = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (b = malloc(size ? (size_t)size : 1)) != NULL &&
        fread(b, 1, (size_t)size, f) != (size_t)size) {
        free(b);
        b = NULL;
    }
    fclose(f);
    FUZZ_ASSERT(b, "cannot read %s", path);
    *n = (size_t)size;
    return b;
}

/* Load the checkpoint at path; check what the header comment says. Returns the status. */
static int load_and_check(const char *path)
{
    mg_train_params tp = params();
    mg_trainer *tr = (mg_trainer *)1;
    int rc = mg_trainer_load_checkpoint(path, &tp, &tr);
    if (rc != MG_OK) {
        FUZZ_ASSERT(rc < 0 && strlen(mg_last_error()) > 0, "status %d without a message", rc);
        FUZZ_ASSERT(tr == NULL, "a refused checkpoint left *out set (%s)", mg_last_error());
        return rc;
    }
    FUZZ_ASSERT(tr != NULL, "no trainer");
    const int64_t step = mg_trainer_step_count(tr);
    const char *meta = mg_trainer_user_meta(tr);
    FUZZ_ASSERT(step >= 0 && meta, "step %lld, user meta %p", (long long)step, (const void *)meta);
    /* save, load back, save again: same step, same caller string, same bytes */
    rc = mg_trainer_save_checkpoint(tr, save_path, meta);
    FUZZ_ASSERT(rc == MG_OK, "saving a loaded checkpoint: %s", mg_last_error());
    mg_trainer *tr2 = NULL;
    rc = mg_trainer_load_checkpoint(save_path, &tp, &tr2);
    FUZZ_ASSERT(rc == MG_OK, "loading a saved checkpoint: %s", mg_last_error());
    FUZZ_ASSERT(mg_trainer_step_count(tr2) == step && !strcmp(mg_trainer_user_meta(tr2), meta),
                "the saved checkpoint loads as step %lld, meta '%s' (was %lld, '%s')",
                (long long)mg_trainer_step_count(tr2), mg_trainer_user_meta(tr2),
                (long long)step, meta);
    rc = mg_trainer_save_checkpoint(tr2, save_path2, mg_trainer_user_meta(tr2));
    FUZZ_ASSERT(rc == MG_OK, "saving again: %s", mg_last_error());
    size_t n1, n2;
    unsigned char *b1 = slurp(save_path, &n1), *b2 = slurp(save_path2, &n2);
    FUZZ_ASSERT(n1 == n2 && memcmp(b1, b2, n1) == 0, "save/load/save changed the file");
    free(b1);
    free(b2);
    mg_trainer_free(tr2);
    unlink(save_path);
    unlink(save_path2);
    /* one training step on one row of two ids (L = 1 is valid for any chunk size) */
    const mg_hparams *hp = mg_model_hparams(mg_trainer_model(tr));
    FUZZ_ASSERT(hp && hp->n_vocab > 0, "hyper-parameters");
    const int32_t ids[2] = {0, hp->n_vocab > 1 ? 1 : 0};
    mg_train_stats stats;
    rc = mg_trainer_step(tr, ids, 1, 1, &stats);
    FUZZ_ASSERT(rc == MG_OK || rc == MG_ERR_NUMERIC, "a training step: status %d: %s", rc,
                mg_last_error());
    if (rc == MG_OK)
        FUZZ_ASSERT(mg_trainer_step_count(tr) == step + 1, "step count %lld after a step from %lld",
                    (long long)mg_trainer_step_count(tr), (long long)step);
    mg_trainer_free(tr);
    return MG_OK;
}

/* The GGUF image data[0..size) with train.checksum recomputed (malloc'd), or NULL when it
 * does not parse or cannot be rebuilt. */
static void *with_checksum(const uint8_t *data, size_t size, size_t *out_size)
{
    gguf_file *f = NULL;
    if (gguf_open_memory(data, size, &f) != MG_OK) return NULL;
    uint64_t h = 0;
    if (mg_checkpoint_checksum(f, &h) != MG_OK) { /* a train.* key is missing or malformed */
        gguf_close(f);
        return NULL;
    }
    gguf_writer *w = gguf_writer_new();
    int rc = w ? MG_OK : MG_ERR_NOMEM;
    for (int64_t i = 0; !rc && i < gguf_n_kv(f); i++) rc = gguf_copy_kv(w, f, i);
    for (int64_t i = 0; !rc && i < gguf_n_tensors(f); i++) {
        const gguf_tensor_info *t = gguf_tensor(f, i);
        rc = gguf_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data);
    }
    if (!rc) rc = gguf_set_i64(w, "train.checksum", (int64_t)h);
    void *buf = NULL;
    if (!rc) rc = gguf_write_memory(w, &buf, out_size);
    gguf_writer_free(w);
    gguf_close(f);
    if (rc) {
        free(buf);
        return NULL;
    }
    return buf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[64];
    int fd = fuzz_memfd(data, size, path, sizeof path);
    if (fd < 0) return 0;
    int rc = load_and_check(path);
    close(fd);
    if (rc != MG_OK && strstr(mg_last_error(), "checksum")) {
        size_t n = 0;
        void *fixed = with_checksum(data, size, &n);
        if (fixed) {
            fd = fuzz_memfd(fixed, n, path, sizeof path);
            if (fd >= 0) {
                rc = load_and_check(path);
                FUZZ_ASSERT(rc == MG_OK || !strstr(mg_last_error(), "the checksum of its tensor data"),
                            "the recomputed checksum is refused: %s", mg_last_error());
                close(fd);
            }
            free(fixed);
        }
    }
    return 0;
}

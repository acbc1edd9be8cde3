/* fuzz-state.c - libFuzzer harness for the state-file reader (lib/state.c: mg_state_load, a
 * GGUF read with gguf_open).
 *
 * The model is tests/golden/base.gguf (2 layers, D 16, Z 8, E 12, N 3, C 8, G 4), loaded once.
 * Each input is written to an anonymous in-memory file (memfd_create) and loaded, by its
 * /proc/self/fd path, into a state that has already seen 3 tokens. Checks:
 *   - a refused file leaves the state exactly as it was (every carried value compared);
 *   - an accepted file gives a consistent state (n_kv == n_past mod C), which then evaluates
 *     a token, saves (to a private temporary directory) and loads back to the same values. */
#include "fuzz-common.h"

#include <fcntl.h>
#include <sys/stat.h>

#include "megalodon.h"
#include "model.h"

static mg_model *model;
static char tmpdir[4096];
static char save_path[4200];

static void cleanup(void)
{
    unlink(save_path);
    rmdir(tmpdir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_quiet_env();
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/golden/base.gguf", fuzz_top_srcdir());
    model = fuzz_load_model(path, "fuzz-state");
    fuzz_make_tmpdir(tmpdir, sizeof tmpdir, "state");
    snprintf(save_path, sizeof save_path, "%s/state.gguf", tmpdir);
    atexit(cleanup);
    return 0;
}

/* Every value the state carries, in one buffer (malloc'd; *n its size). */
static unsigned char *snapshot(const mg_state *st, size_t *n)
{
    const mg_hparams *hp = &model->hp;
    const size_t G = hp->norm_groups, DN2 = (size_t)hp->n_embd * hp->cema_ndim * 2,
                 C = hp->chunk_size;
    size_t per_layer = sizeof(int64_t) + 2 * G * sizeof(float) + DN2 * sizeof(float) +
                       C * (hp->z_dim + hp->value_dim) * sizeof(float);
    size_t total = hp->n_layer * per_layer + sizeof(int64_t) + 2 * G * sizeof(float) +
                   sizeof st->n_past + sizeof st->n_kv;
    unsigned char *b = calloc(1, total), *p = b;
    FUZZ_ASSERT(b, "out of memory");
#define PUT(src, bytes) (memcpy(p, (src), (bytes)), p += (bytes))
    for (int il = 0; il < hp->n_layer; il++) {
        const mg_layer_state *ls = &st->layers[il];
        PUT(&ls->tnorm.count, sizeof(int64_t));
        PUT(ls->tnorm.mean, G * sizeof(float));
        PUT(ls->tnorm.var, G * sizeof(float));
        PUT(ls->h, DN2 * sizeof(float));
        /* keys/values: only the rows of the current chunk are state */
        PUT(ls->k, (size_t)st->n_kv * hp->z_dim * sizeof(float));
        PUT(ls->v, (size_t)st->n_kv * hp->value_dim * sizeof(float));
    }
    PUT(&st->out_norm.count, sizeof(int64_t));
    PUT(st->out_norm.mean, G * sizeof(float));
    PUT(st->out_norm.var, G * sizeof(float));
    PUT(&st->n_past, sizeof st->n_past);
    PUT(&st->n_kv, sizeof st->n_kv);
#undef PUT
    *n = (size_t)(p - b);
    return b;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[64];
    int fd = fuzz_memfd(data, size, path, sizeof path);
    if (fd < 0) return 0;
    mg_state *st = NULL;
    FUZZ_ASSERT(mg_state_new(model, NULL, &st) == MG_OK, "state_new: %s", mg_last_error());
    const int32_t warm[3] = {1, 2, 3};
    FUZZ_ASSERT(mg_eval(st, warm, 3, NULL, MG_LOGITS_NONE) == MG_OK, "eval: %s", mg_last_error());
    size_t n0, n1;
    unsigned char *before = snapshot(st, &n0);

    int rc = mg_state_load(st, path);
    close(fd);
    unsigned char *after = snapshot(st, &n1);
    if (rc != MG_OK) {
        FUZZ_ASSERT(rc < 0 && strlen(mg_last_error()) > 0, "rc %d without a message", rc);
        FUZZ_ASSERT(n0 == n1 && memcmp(before, after, n0) == 0,
                    "a refused state file changed the state (%s)", mg_last_error());
    } else {
        const int C = model->hp.chunk_size;
        FUZZ_ASSERT(st->n_kv >= 0 && st->n_kv < C && st->n_past % (uint64_t)C == (uint64_t)st->n_kv,
                    "loaded n_kv %d, n_past %llu", st->n_kv, (unsigned long long)st->n_past);
        /* save and load back: the same values */
        rc = mg_state_save(st, save_path);
        FUZZ_ASSERT(rc == MG_OK, "saving a loaded state: %s", mg_last_error());
        mg_state *st2 = NULL;
        FUZZ_ASSERT(mg_state_new(model, NULL, &st2) == MG_OK, "state_new");
        rc = mg_state_load(st2, save_path);
        FUZZ_ASSERT(rc == MG_OK, "loading a saved state: %s", mg_last_error());
        size_t n2;
        unsigned char *again = snapshot(st2, &n2);
        FUZZ_ASSERT(n2 == n1 && memcmp(again, after, n1) == 0, "save/load changed the state");
        free(again);
        mg_state_free(st2);
        unlink(save_path);
        /* and it runs */
        const int32_t t = 5;
        float logits[64];
        FUZZ_ASSERT(mg_model_n_vocab(model) <= 64, "vocabulary");
        rc = mg_eval(st, &t, 1, logits, MG_LOGITS_LAST);
        FUZZ_ASSERT(rc == MG_OK, "eval after a loaded state: %s", mg_last_error());
    }
    free(before);
    free(after);
    mg_state_free(st);
    return 0;
}

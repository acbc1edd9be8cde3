/* test-kill-save - a process killed at any moment of mg_state_save leaves the previous file
 * valid (docs/hardening.md, "Fault injection").
 *
 * A child process saves two distinct states A and B to the same path in a loop, A, B, A,
 * B, ... (or B, A, ...: chosen at random for each child); the parent kills it with SIGKILL after a random delay (uniform over about three
 * save durations, measured first), then checks the file at the path:
 *   - before any save has completed it may be absent; once it has existed it must exist;
 *   - it must be, byte for byte, the file of A or the file of B, and load into a state
 *     equal to A or B exactly;
 *   - the only other files in the directory are the writer's temporary files
 *     (PATH.tmp.XXXXXX), at most one more per kill (the save that was interrupted between
 *     creating it and renaming it; the library does not remove another process's
 *     temporary files: docs/hardening.md).
 * Then the process is started again, with the file from the last run in place.
 *
 * The same for training checkpoints (mg_trainer_save_checkpoint of the same model after one
 * and after two optimizer steps; the file must be one of the two and load as it).
 *
 * Environment: MG_KILL_SAVE_KILLS (default 200), MG_KILL_SAVE_CKPT_KILLS (checkpoints;
 * default 50, 0 skips them), MG_KILL_SAVE_SEED (default: from the time; printed so that a
 * failing run can be repeated). */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "model.h"
#include "state-bytes.h"
#include "test.h"
#include "tiny_model.h"

static char tmpdir[512];

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t rng_state;
static uint64_t rng(void)
{
    /* splitmix64 */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static unsigned char *snap(const mg_state *st, size_t *n)
{
    *n = state_bytes(st, NULL);
    unsigned char *b = malloc(*n);
    if (b) state_bytes(st, b);
    return b;
}

/* files in tmpdir: temporary files of the writer, and anything else besides `keep` */
static void scan_dir(const char *keep, const char *model, int *n_temp, int *n_other)
{
    *n_temp = *n_other = 0;
    DIR *d = opendir(tmpdir);
    if (!d) return;
    struct dirent *e;
    size_t kl = strlen(keep);
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || !strcmp(e->d_name, keep) ||
            !strcmp(e->d_name, model))
            continue;
        if (!strncmp(e->d_name, keep, kl) && !strncmp(e->d_name + kl, ".tmp.", 5) &&
            strlen(e->d_name + kl + 5) == 6)
            (*n_temp)++;
        else
            (*n_other)++;
    }
    closedir(d);
}

static void remove_temps(const char *keep)
{
    DIR *d = opendir(tmpdir);
    if (!d) return;
    struct dirent *e;
    char p[1024];
    while ((e = readdir(d)) != NULL)
        if (strstr(e->d_name, ".tmp.") && !strncmp(e->d_name, keep, strlen(keep))) {
            snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
            unlink(p);
        }
    closedir(d);
}

/* ---------------------------------------------------------------- the kill loop */

/* What is saved: object 0 or 1 to `path`; and which of the two a loaded file holds. */
typedef struct {
    const char *name;
    int (*save)(int which, const char *path);
    int (*load_which)(const char *path); /* 1 or 2 (object 0 or 1), 0 neither, <0 error */
    const unsigned char *bytes[2];
    long n[2];
} saver;

static void kill_loop(const saver *sv, const char *target, const char *base, long kills,
                      double t_save)
{
    long absent = 0, is[2] = {0, 0}, interrupted = 0, bad = 0;
    int seen = 0, prev_temps = 0;
    for (long k = 0; k < kills && bad < 5; k++) {
        int pfd[2];
        if (pipe(pfd) != 0) {
            perror("pipe");
            exit(1);
        }
        fflush(stdout);
        fflush(stderr);
        const int first = (int)(rng() & 1); /* object 0 or 1 first */
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            exit(1);
        }
        if (pid == 0) {
            close(pfd[0]);
            char r = 'r';
            if (write(pfd[1], &r, 1) != 1) _exit(3);
            for (unsigned long i = (unsigned long)first;; i++)
                if (sv->save((int)(i % 2), target) != MG_OK) {
                    fprintf(stderr, "child: save failed: %s\n", mg_last_error());
                    _exit(2);
                }
        }
        close(pfd[1]);
        char r;
        ssize_t got = read(pfd[0], &r, 1);
        close(pfd[0]);
        const double delay = 3 * t_save * (double)(rng() >> 11) / 9007199254740992.0;
        struct timespec ts = {(time_t)delay, (long)((delay - (time_t)delay) * 1e9)};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int status = 0;
        waitpid(pid, &status, 0);
        int ok = got == 1 && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
        CHECK(ok, "%s, kill %ld: the child did not die of SIGKILL (status 0x%x)", sv->name, k,
              status);

        struct stat st;
        if (stat(target, &st) != 0) {
            CHECK(!seen, "%s, kill %ld (after %.3f ms): the file disappeared", sv->name, k,
                  delay * 1e3);
            if (seen) bad++;
            absent++;
        } else {
            seen = 1;
            long n = 0;
            unsigned char *f = test_read_file(target, &n);
            int which = 0;
            for (int j = 0; j < 2; j++)
                if (f && n == sv->n[j] && !memcmp(f, sv->bytes[j], (size_t)n)) which = j + 1;
            free(f);
            int lwhich = sv->load_which(target);
            CHECK(which != 0, "%s, kill %ld (after %.3f ms): the file (%ld bytes) is neither of "
                  "the two saved ones", sv->name, k, delay * 1e3, (long)st.st_size);
            CHECK(lwhich == which, "%s, kill %ld: the file loads as %d (%s), its bytes are %d",
                  sv->name, k, lwhich, lwhich < 0 ? mg_last_error() : "", which);
            if (which == 0 || lwhich != which) bad++;
            if (which) is[which - 1]++;
        }
        int n_temp, n_other;
        scan_dir(base, "model.gguf", &n_temp, &n_other);
        CHECK(n_other == 0, "%s, kill %ld: %d unexpected files in the directory", sv->name, k,
              n_other);
        CHECK(n_temp == prev_temps || n_temp == prev_temps + 1,
              "%s, kill %ld: %d temporary files, %d before: at most one more per kill",
              sv->name, k, n_temp, prev_temps);
        interrupted += n_temp > prev_temps;
        prev_temps = n_temp;
    }
    printf("test-kill-save: %s: %ld kills; after each the file was absent %ld times (before "
           "the first save), the first object %ld times, the second %ld times; %ld kills "
           "interrupted a save and left its temporary file\n", sv->name, kills, absent, is[0],
           is[1], interrupted);
    if (kills >= 50) {
        CHECK(interrupted > 0, "%s: no kill landed inside a save: the test did not test much",
              sv->name);
        CHECK(is[0] > 0 && is[1] > 0, "%s: the file was never the first or never the second",
              sv->name);
    }
}

/* time n_cal alternating saves to path (then removed) */
static double time_saves(const saver *sv, const char *path)
{
    double t0 = now();
    const int n_cal = 10;
    for (int i = 0; i < n_cal; i++)
        CHECK(sv->save(i % 2, path) == MG_OK, "%s: save: %s", sv->name, mg_last_error());
    unlink(path);
    return (now() - t0) / n_cal;
}

/* ---------------------------------------------------------------- states */

static mg_state *states[2], *probe;
static unsigned char *snaps[2];
static size_t snap_n[2];

static int save_state(int which, const char *path) { return mg_state_save(states[which], path); }

static int load_state_which(const char *path)
{
    if (mg_state_load(probe, path) != MG_OK) return -1;
    size_t n = 0;
    unsigned char *s = snap(probe, &n);
    int which = 0;
    for (int j = 0; j < 2; j++)
        if (s && n == snap_n[j] && !memcmp(s, snaps[j], n)) which = j + 1;
    free(s);
    return which;
}

/* ---------------------------------------------------------------- checkpoints */

static mg_trainer *trainers[2];
static const char *const metas[2] = {"{\"step\": 1}", "{\"step\": 2}"};

static int save_ckpt(int which, const char *path)
{
    return mg_trainer_save_checkpoint(trainers[which], path, metas[which]);
}

static int load_ckpt_which(const char *path)
{
    mg_train_params tp = mg_train_default_params();
    tp.n_threads = 1;
    mg_trainer *tr = NULL;
    if (mg_trainer_load_checkpoint(path, &tp, &tr) != MG_OK) return -1;
    int which = 0;
    for (int j = 0; j < 2; j++)
        if (mg_trainer_step_count(tr) == j + 1 && !strcmp(mg_trainer_user_meta(tr), metas[j]))
            which = j + 1;
    mg_trainer_free(tr);
    return which;
}

int main(void)
{
    const char *e = getenv("MG_KILL_SAVE_KILLS");
    const long kills = e && atol(e) > 0 ? atol(e) : 200;
    e = getenv("MG_KILL_SAVE_CKPT_KILLS");
    const long ckpt_kills = e && atol(e) >= 0 && *e ? atol(e) : 50;
    e = getenv("MG_KILL_SAVE_SEED");
    uint64_t seed = e && *e ? strtoull(e, NULL, 10) : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20);
    rng_state = seed;
    setenv("MEGALODON_CEMA_WISDOM", "none", 1);
    if (test_make_tmpdir(tmpdir, sizeof tmpdir, "kill-save") != 0) return 1;

    /* a model whose state is a few hundred KiB, so that a kill often lands inside a write */
    char model_path[600], target[600], pa[600], pb[600];
    snprintf(model_path, sizeof model_path, "%s/model.gguf", tmpdir);
    snprintf(target, sizeof target, "%s/state.gguf", tmpdir);
    snprintf(pa, sizeof pa, "%s/a.gguf", tmpdir);
    snprintf(pb, sizeof pb, "%s/b.gguf", tmpdir);
    tiny_opts o = tiny_sized_opts((tiny_sizes){.n_layer = 4, .n_embd = 128, .z_dim = 64,
                                               .value_dim = 128, .n_head = 2, .n_ff = 128,
                                               .cema_ndim = 16, .chunk_size = 128,
                                               .norm_groups = 8, .n_vocab = 64});
    if (tiny_model_write(model_path, &o) != MG_OK) {
        fprintf(stderr, "cannot write the model: %s\n", mg_last_error());
        return 1;
    }
    mg_model_params mp = mg_model_default_params();
    mp.n_threads = 1;
    mg_model *m = NULL;
    if (mg_model_load(model_path, &mp, &m) != MG_OK || mg_state_new(m, NULL, &states[0]) != MG_OK ||
        mg_state_new(m, NULL, &states[1]) != MG_OK || mg_state_new(m, NULL, &probe) != MG_OK) {
        fprintf(stderr, "setup: %s\n", mg_last_error());
        return 1;
    }
    int32_t toks[200];
    for (int i = 0; i < 200; i++) toks[i] = (i * 11 + 5) % 64;
    CHECK(mg_eval(states[0], toks, 77, NULL, MG_LOGITS_NONE) == MG_OK, "eval a");
    CHECK(mg_eval(states[1], toks + 77, 123, NULL, MG_LOGITS_NONE) == MG_OK, "eval b");
    CHECK(mg_state_save(states[0], pa) == MG_OK && mg_state_save(states[1], pb) == MG_OK,
          "save: %s", mg_last_error());
    saver sv = {.name = "mg_state_save", .save = save_state, .load_which = load_state_which};
    unsigned char *fa = test_read_file(pa, &sv.n[0]), *fb = test_read_file(pb, &sv.n[1]);
    sv.bytes[0] = fa;
    sv.bytes[1] = fb;
    snaps[0] = snap(states[0], &snap_n[0]);
    snaps[1] = snap(states[1], &snap_n[1]);
    CHECK(fa && fb && snaps[0] && snaps[1] &&
              (sv.n[0] != sv.n[1] || memcmp(fa, fb, (size_t)sv.n[0]) != 0) &&
              (snap_n[0] != snap_n[1] || memcmp(snaps[0], snaps[1], snap_n[0]) != 0),
          "the two states must differ");
    unlink(pa);
    unlink(pb);
    double t_save = time_saves(&sv, target);
    printf("test-kill-save: seed %llu (MG_KILL_SAVE_SEED); states: files of %ld and %ld bytes, "
           "a save takes %.2f ms here; delays uniform in [0, %.2f] ms\n",
           (unsigned long long)seed, sv.n[0], sv.n[1], t_save * 1e3, 3 * t_save * 1e3);
    kill_loop(&sv, target, "state.gguf", kills, t_save);
    /* a clean save still works next to the stray temporary files, then they are removed */
    CHECK(mg_state_save(states[0], target) == MG_OK && load_state_which(target) == 1,
          "save after the kills: %s", mg_last_error());
    remove_temps("state.gguf");
    unlink(target);

    /* training checkpoints of the same model: after one step and after two */
    if (ckpt_kills > 0) {
        char ctarget[600];
        snprintf(ctarget, sizeof ctarget, "%s/train.ckpt", tmpdir);
        mg_train_params tp = mg_train_default_params();
        tp.n_threads = 1;
        int32_t ids[2 * 129];
        for (int i = 0; i < 2 * 129; i++) ids[i] = (i * 13 + 1) % 64;
        int rc = mg_trainer_new(m, &tp, &trainers[0]);
        if (!rc) rc = mg_trainer_step(trainers[0], ids, 2, 128, NULL);
        if (!rc) rc = mg_trainer_new(m, &tp, &trainers[1]);
        if (!rc) rc = mg_trainer_step(trainers[1], ids, 2, 128, NULL);
        if (!rc) rc = mg_trainer_step(trainers[1], ids, 2, 128, NULL);
        CHECK(rc == MG_OK, "trainers: %s", mg_last_error());
        saver cv = {.name = "mg_trainer_save_checkpoint", .save = save_ckpt,
                    .load_which = load_ckpt_which};
        unsigned char *cb[2] = {NULL, NULL};
        for (int j = 0; !rc && j < 2; j++) {
            CHECK(save_ckpt(j, pa) == MG_OK, "checkpoint: %s", mg_last_error());
            cb[j] = test_read_file(pa, &cv.n[j]);
            cv.bytes[j] = cb[j];
            unlink(pa);
        }
        if (!rc && cb[0] && cb[1]) {
            t_save = time_saves(&cv, ctarget);
            printf("test-kill-save: checkpoints: files of %ld and %ld bytes, a save takes "
                   "%.2f ms here\n", cv.n[0], cv.n[1], t_save * 1e3);
            kill_loop(&cv, ctarget, "train.ckpt", ckpt_kills, t_save);
            remove_temps("train.ckpt");
            unlink(ctarget);
        }
        for (int j = 0; j < 2; j++) {
            free(cb[j]);
            mg_trainer_free(trainers[j]);
        }
    }

    unlink(model_path);
    CHECK(rmdir(tmpdir) == 0, "the test directory is not empty: %s", strerror(errno));
    free(fa);
    free(fb);
    for (int j = 0; j < 2; j++) {
        free(snaps[j]);
        mg_state_free(states[j]);
    }
    mg_state_free(probe);
    mg_model_free(m);
    return test_finish("test-kill-save");
}

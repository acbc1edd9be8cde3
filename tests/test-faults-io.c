/* test-faults-io - fault injection: file-system failures (docs/hardening.md, "Fault
 * injection").
 *
 * This program is linked with `-Wl,--wrap=` for the allocators and the file-system calls
 * the library makes (Makefile.am: FAULT_WRAPS), so that any one call that the library's own
 * object files make can be made to fail (tests/faults.h). Allocation failures and training
 * checkpoints are tested by test-faults (parts 1 and 5).
 *
 * 2. Read faults: open, fstat and mmap failing (EIO, EINTR, EMFILE, ENOMEM...), and fstat
 *    reporting a size short of the real one (what a short read is for a reader that maps
 *    the file: the parser sees fewer bytes) at every length of a state file and at many
 *    lengths of a model file. The library has no read() call: there are no short reads
 *    or EINTR on read to inject, and an I/O error on a mapped page is a SIGBUS (part 4).
 * 3. Write faults in mg_state_save: ENOSPC and EIO at every write() call of a save (and a
 *    short write before the error), EIO from fsync and close, failures of mkstemp,
 *    fchmod and rename: the call fails with MG_ERR_IO and a message naming the file and the
 *    errno text, the previous file is untouched and still loads, no temporary file stays.
 *    Short writes and EINTR everywhere: the save succeeds and the file is byte-identical.
 *    The directory fsync after the rename failing: an error that says the new file was
 *    written (it is in place and loads).
 * 4. A model file truncated, rewritten in place or replaced while a model is loaded from
 *    it (in child processes): with mmap, evaluation after a truncation dies of SIGBUS and
 *    an in-place rewrite changes the results; with use_mmap = 0 both have no effect after
 *    the load; replacing the file by rename never affects a loaded model.
 *
 * Environment: MG_GOLDEN_DIR (set by make check). MG_FAULTS_QUICK=1 (used under valgrind)
 * tries fewer short views and write errors. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "error.h"
#include "faults.h"
#include "gguf.h"
#include "model.h"
#include "state-bytes.h"
#include "test.h"
#include "tiny_model.h"

/* ================================================================ 2. read faults */

static void test_read_faults(const char *golden)
{
    printf("2. read faults (open, fstat, mmap; a short view of the file)\n");
    char path[1024], pa[600], pb[600];
    snprintf(path, sizeof path, "%s/base.gguf", golden);
    mg_model *m = load_or_die(path, 1);
    int32_t toks[32];
    fill_tokens(toks, 32, mg_model_n_vocab(m), 3);
    mg_state *a = NULL, *b = NULL;
    CHECK(mg_state_new(m, NULL, &a) == MG_OK && mg_state_new(m, NULL, &b) == MG_OK, "new");
    CHECK(mg_eval(a, toks, 13, NULL, MG_LOGITS_NONE) == MG_OK, "eval");
    CHECK(mg_eval(b, toks + 13, 5, NULL, MG_LOGITS_NONE) == MG_OK, "eval");
    snprintf(pa, sizeof pa, "%s/a.state", tmpdir);
    snprintf(pb, sizeof pb, "%s/b.state", tmpdir);
    CHECK(mg_state_save(a, pa) == MG_OK && mg_state_save(b, pb) == MG_OK, "save");
    snap sb = take_snap(b);

    static const struct {
        enum io_fn fn;
        int err;
    } faults[] = {
        {IO_OPEN, EIO}, {IO_OPEN, EINTR}, {IO_OPEN, EMFILE}, {IO_OPEN, EACCES},
        {IO_FSTAT, EIO}, {IO_FSTAT, EOVERFLOW}, {IO_MMAP, ENOMEM}, {IO_MMAP, EIO},
        {IO_MMAP, ENODEV},
    };
    int n_cases = 0;
    for (size_t i = 0; i < sizeof faults / sizeof faults[0]; i++) {
        const char *etext = strerror(faults[i].err);
        char ebuf[128];
        snprintf(ebuf, sizeof ebuf, "%s", etext);
        /* state load: fails with MG_ERR_IO naming the file and the errno text; b unchanged */
        io_arm(faults[i].fn, 0, faults[i].err);
        int rc = mg_state_load(b, pa);
        io_disarm();
        const char *msg = mg_last_error();
        CHECK(io.injected == 1 && rc == MG_ERR_IO && strstr(msg, pa) && strstr(msg, ebuf),
              "mg_state_load with %s failing (%s): status %d: %s", io_names[faults[i].fn],
              ebuf, rc, msg);
        CHECK(snap_equal(b, &sb), "mg_state_load with %s failing changed the state",
              io_names[faults[i].fn]);
        /* model load */
        mg_model_params mp = model_params(1);
        mg_model *m2 = NULL;
        long live0 = live_blocks;
        io_arm(faults[i].fn, 0, faults[i].err);
        rc = mg_model_load(path, &mp, &m2);
        io_disarm();
        msg = mg_last_error();
        CHECK(io.injected == 1 && rc == MG_ERR_IO && !m2 && strstr(msg, path) &&
                  strstr(msg, ebuf),
              "mg_model_load with %s failing (%s): status %d: %s", io_names[faults[i].fn],
              ebuf, rc, msg);
        CHECK(live_blocks == live0, "mg_model_load with %s failing: %ld blocks leaked",
              io_names[faults[i].fn], live_blocks - live0);
        if (m2) mg_model_free(m2);
        n_cases += 2;
    }
    printf("  open/fstat/mmap failing: %d cases (model and state loads), each a clear error\n",
           n_cases);

    /* a short view: fstat says the file is k bytes shorter than it is (the parser gets a
     * prefix of the file) - every k for the state file, a spread of k for the models */
    size_t sn = 0;
    unsigned char *sbytes = slurp(pa, &sn);
    free(sbytes);
    long views = 0;
    for (size_t k = 1; k <= sn; k += quick ? 7 : 1) {
        io_count_only();
        io.fstat_short = (long)k;
        int rc = mg_state_load(b, pa);
        io_disarm();
        views++;
        if (rc == MG_OK || !snap_equal(b, &sb)) {
            CHECK(rc != MG_OK, "mg_state_load of a %zu-byte view of a %zu-byte file succeeded",
                  sn - k, sn);
            CHECK(snap_equal(b, &sb), "a failed load of a short view changed the state");
            break;
        }
    }
    static const char *const files[] = {"base.gguf", "f16.gguf", "ppl-byte.gguf"};
    for (size_t fi = 0; fi < sizeof files / sizeof files[0]; fi++) {
        char mp_path[1024];
        snprintf(mp_path, sizeof mp_path, "%s/%s", golden, files[fi]);
        size_t mn = 0;
        unsigned char *mb = slurp(mp_path, &mn);
        free(mb);
        const size_t step = quick ? 257 : 31;
        for (size_t k = 1; k < mn; k += (k < 64 || mn - k < 64) ? 1 : step) {
            io_count_only();
            io.fstat_short = (long)k;
            mg_model_params mp = model_params(1);
            mg_model *m2 = NULL;
            long live0 = live_blocks;
            int rc = mg_model_load(mp_path, &mp, &m2);
            io_disarm();
            views++;
            int ok = rc != MG_OK && !m2 && live_blocks == live0;
            if (!ok) {
                CHECK(ok, "mg_model_load of a %zu-byte view of %s (%zu bytes): status %d, "
                      "%ld blocks leaked", mn - k, files[fi], mn, rc, live_blocks - live0);
                if (m2) mg_model_free(m2);
                break;
            }
            test_checks++;
        }
    }
    printf("  short views (fstat smaller than the file): %ld loads, each refused\n", views);
    free(sb.b);
    mg_state_free(a);
    mg_state_free(b);
    mg_model_free(m);
    unlink(pa);
    unlink(pb);
}

/* ================================================================ 3. write faults */

typedef struct {
    mg_model *m;
    mg_state *a, *b; /* a is saved over b's file */
    char target[600];
    unsigned char *bytes_a, *bytes_b;
    size_t n_a, n_b;
    snap sa, sb;
} wctx;

/* The target holds b's file. Save a with the fault armed; returns the status. */
static int save_with_fault(wctx *w, enum io_fn fn, long nth, int err, int partial)
{
    FILE *f = fopen(w->target, "wb");
    if (!f || fwrite(w->bytes_b, 1, w->n_b, f) != w->n_b || fclose(f) != 0) {
        fprintf(stderr, "test-faults: cannot write %s\n", w->target);
        exit(1);
    }
    io_arm(fn, nth, err);
    io.partial = partial;
    long live0 = live_blocks;
    int rc = mg_state_save(w->a, w->target);
    io_disarm();
    CHECK(live_blocks == live0, "save with %s #%ld failing: %ld blocks leaked", io_names[fn],
          nth, live_blocks - live0);
    return rc;
}

/* After a failed save: MG_ERR_IO, the message names the file and the errno text, the old
 * file is untouched and loads as b, no temporary file stays. */
static int check_failed_save(wctx *w, int rc, const char *what, int err)
{
    const char *msg = mg_last_error();
    char etext[128];
    snprintf(etext, sizeof etext, "%s", strerror(err));
    int ok = 1;
#define WCHECK(cond, ...)                                                                  \
    do {                                                                                   \
        CHECK(cond, __VA_ARGS__);                                                          \
        if (!(cond)) ok = 0;                                                               \
    } while (0)
    WCHECK(io.injected == 1, "%s: the fault was not reached", what);
    WCHECK(rc == MG_ERR_IO, "%s: status %d, expected MG_ERR_IO (%s)", what, rc, msg);
    WCHECK(strstr(msg, w->target) != NULL, "%s: the message does not name the file: %s", what,
           msg);
    WCHECK(strstr(msg, etext) != NULL, "%s: the message lacks '%s': %s", what, etext, msg);
    WCHECK(same_file_bytes(w->target, w->bytes_b, w->n_b), "%s: the previous file changed",
           what);
    WCHECK(count_temp_files() == 0, "%s: a temporary file was left", what);
    mg_state *c = NULL;
    int lrc = mg_state_new(w->m, NULL, &c);
    if (lrc == MG_OK) lrc = mg_state_load(c, w->target);
    WCHECK(lrc == MG_OK && snap_equal(c, &w->sb), "%s: the previous file does not load as "
           "before: %s", what, mg_last_error());
    mg_state_free(c);
#undef WCHECK
    return ok;
}

static void test_write_faults(const char *golden)
{
    printf("3. write faults in mg_state_save\n");
    wctx w;
    memset(&w, 0, sizeof w);
    char path[1024], pa[600], pb[600];
    snprintf(path, sizeof path, "%s/heads2_swiglu.gguf", golden);
    w.m = load_or_die(path, 1);
    int32_t toks[64];
    fill_tokens(toks, 64, mg_model_n_vocab(w.m), 4);
    CHECK(mg_state_new(w.m, NULL, &w.a) == MG_OK && mg_state_new(w.m, NULL, &w.b) == MG_OK,
          "new");
    CHECK(mg_eval(w.a, toks, 27, NULL, MG_LOGITS_NONE) == MG_OK, "eval");
    CHECK(mg_eval(w.b, toks + 27, 6, NULL, MG_LOGITS_NONE) == MG_OK, "eval");
    snprintf(pa, sizeof pa, "%s/a.state", tmpdir);
    snprintf(pb, sizeof pb, "%s/b.state", tmpdir);
    snprintf(w.target, sizeof w.target, "%s/target.state", tmpdir);
    CHECK(mg_state_save(w.a, pa) == MG_OK && mg_state_save(w.b, pb) == MG_OK, "save");
    w.bytes_a = slurp(pa, &w.n_a);
    w.bytes_b = slurp(pb, &w.n_b);
    unlink(pa);
    unlink(pb);
    w.sa = take_snap(w.a);
    w.sb = take_snap(w.b);

    /* a clean save: count the calls */
    int rc = save_with_fault(&w, IO_N, 0, 0, 0);
    long n_write = io.calls[IO_WRITE], n_fsync = io.calls[IO_FSYNC];
    CHECK(rc == MG_OK && same_file_bytes(w.target, w.bytes_a, w.n_a),
          "clean save: %s", mg_last_error());
    CHECK(n_write > 0 && n_fsync == 2, "clean save: %ld writes, %ld fsyncs (expected 2: the "
          "file and its directory)", n_write, n_fsync);
    int cases = 0, good = 0;

    /* ENOSPC and EIO at every write, alone and after a half-done write */
    static const int werrs[] = {ENOSPC, EIO, EDQUOT, EFBIG};
    for (size_t e = 0; e < sizeof werrs / sizeof werrs[0]; e++)
        for (int partial = 0; partial < 2; partial++)
            for (long k = partial; k < n_write; k++) {
                char what[128];
                snprintf(what, sizeof what, "write #%ld %s%s", k, strerror(werrs[e]),
                         partial ? " after a half-done write" : "");
                rc = save_with_fault(&w, IO_WRITE, k, werrs[e], partial);
                cases++;
                good += check_failed_save(&w, rc, what, werrs[e]);
            }
    /* the other steps of a save */
    static const struct {
        enum io_fn fn;
        long nth;
        int err;
    } steps[] = {
        {IO_FSYNC, 0, EIO},     {IO_FSYNC, 0, ENOSPC},   {IO_CLOSE, 0, EIO},
        {IO_CLOSE, 0, ENOSPC},  {IO_RENAME, 0, EIO},     {IO_RENAME, 0, EACCES},
        {IO_RENAME, 0, EXDEV},  {IO_RENAME, 0, ENOSPC},  {IO_MKSTEMP, 0, ENOSPC},
        {IO_MKSTEMP, 0, EACCES}, {IO_MKSTEMP, 0, EMFILE}, {IO_FCHMOD, 0, EPERM},
        {IO_FCHMOD, 0, EIO},
    };
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        char what[128];
        snprintf(what, sizeof what, "%s %s", io_names[steps[i].fn], strerror(steps[i].err));
        rc = save_with_fault(&w, steps[i].fn, steps[i].nth, steps[i].err, 0);
        cases++;
        good += check_failed_save(&w, rc, what, steps[i].err);
    }
    printf("  %d failing saves (%ld writes per save; ENOSPC, EIO, EDQUOT, EFBIG at each, "
           "alone and after a half-done write; fsync, close, rename, mkstemp, fchmod): "
           "%d with a clear error and the previous file intact\n", cases, n_write, good);

    /* the directory fsync (or its open) after the rename fails: an error that says so;
     * the new file is in place and loads as a */
    static const struct {
        enum io_fn fn;
        long nth;
        int err;
    } dirs[] = {{IO_FSYNC, 1, EIO}, {IO_OPEN, 0, EACCES}};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        rc = save_with_fault(&w, dirs[i].fn, dirs[i].nth, dirs[i].err, 0);
        const char *msg = mg_last_error();
        CHECK(io.injected == 1 && rc == MG_ERR_IO && strstr(msg, "sync directory") &&
                  strstr(msg, w.target) && strstr(msg, strerror(dirs[i].err)),
              "directory %s failing: status %d: %s", io_names[dirs[i].fn], rc, msg);
        CHECK(same_file_bytes(w.target, w.bytes_a, w.n_a) && count_temp_files() == 0,
              "directory %s failing: the new file should be in place", io_names[dirs[i].fn]);
    }
    /* file systems that cannot sync directories (EINVAL) are accepted */
    rc = save_with_fault(&w, IO_FSYNC, 1, EINVAL, 0);
    CHECK(rc == MG_OK && same_file_bytes(w.target, w.bytes_a, w.n_a),
          "directory fsync EINVAL: %s", mg_last_error());

    /* short writes (at most 7 bytes) and EINTR on every other call: the save succeeds and
     * the file is the same bytes */
    {
        FILE *f = fopen(w.target, "wb");
        if (f) {
            fwrite(w.bytes_b, 1, w.n_b, f);
            fclose(f);
        }
        io_count_only();
        io.short_writes = 1;
        rc = mg_state_save(w.a, w.target);
        long nw = io.calls[IO_WRITE];
        io_disarm();
        CHECK(rc == MG_OK && same_file_bytes(w.target, w.bytes_a, w.n_a) &&
                  count_temp_files() == 0,
              "save with short writes and EINTR: %s", mg_last_error());
        printf("  short writes of at most 7 bytes and EINTR on every other write (%ld calls): "
               "the save succeeds, same bytes\n", nw);
    }
    /* a mode 0600 file keeps its mode when replaced */
    CHECK(chmod(w.target, 0600) == 0 && mg_state_save(w.a, w.target) == MG_OK, "save");
    struct stat st;
    CHECK(stat(w.target, &st) == 0 && (st.st_mode & 0777) == 0600, "mode not kept: %o",
          (unsigned)(st.st_mode & 0777));
    unlink(w.target);
    free(w.bytes_a);
    free(w.bytes_b);
    free(w.sa.b);
    free(w.sb.b);
    mg_state_free(w.a);
    mg_state_free(w.b);
    mg_model_free(w.m);
}

/* ================================================================ 4. files changed while mapped */

static float *child_l0, *child_l1;

enum { CHILD_OK = 0, CHILD_DIFF = 3, CHILD_ERR = 4, CHILD_SIGBUS = 86 };

static void on_sigbus(int sig)
{
    (void)sig;
    _exit(CHILD_SIGBUS);
}

/* In a child: load `path` (use_mmap as given), compute reference logits, do `what` to the
 * file, evaluate again. Exit status: CHILD_OK same logits, CHILD_DIFF different logits,
 * CHILD_SIGBUS the evaluation hit SIGBUS, CHILD_ERR anything else. */
enum change { TRUNCATE, REWRITE, REPLACE };

static int child_run(const char *path, int use_mmap, enum change what)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_sigbus;
        sigaction(SIGBUS, &sa, NULL);
        mg_model_params mp = model_params(use_mmap);
        mg_model *m = NULL;
        if (mg_model_load(path, &mp, &m) != MG_OK) _exit(CHILD_ERR);
        const int V = mg_model_n_vocab(m);
        int32_t toks[20];
        fill_tokens(toks, 20, V, 5);
        /* globals, so that memory checkers see them as reachable at _exit */
        float *l0 = child_l0 = malloc(sizeof(float) * 20 * (size_t)V);
        float *l1 = child_l1 = malloc(sizeof(float) * 20 * (size_t)V);
        mg_state *st = NULL;
        if (!l0 || !l1 || mg_state_new(m, NULL, &st) != MG_OK ||
            mg_eval(st, toks, 20, l0, MG_LOGITS_ALL) != MG_OK)
            _exit(CHILD_ERR);
        mg_state_reset(st);
        if (what == TRUNCATE) {
            if (truncate(path, 0) != 0) _exit(CHILD_ERR);
        } else if (what == REWRITE) {
            /* every byte after the first 4 KiB (tensor data) scaled: flip the low bit of
             * every second byte, in place */
            size_t n = 0;
            unsigned char *b = slurp(path, &n);
            if (!b || n < 8192) _exit(CHILD_ERR);
            for (size_t i = 4096; i < n; i += 2) b[i] ^= 0x40;
            int fd = open(path, O_WRONLY);
            if (fd < 0 || pwrite(fd, b + 4096, n - 4096, 4096) != (ssize_t)(n - 4096))
                _exit(CHILD_ERR);
            close(fd);
            free(b);
        } else {
            /* a new file renamed over the path */
            char tmp[1100];
            snprintf(tmp, sizeof tmp, "%s.new", path);
            FILE *f = fopen(tmp, "wb");
            if (!f || fputs("not a model any more", f) < 0 || fclose(f) != 0 ||
                rename(tmp, path) != 0)
                _exit(CHILD_ERR);
        }
        if (mg_eval(st, toks, 20, l1, MG_LOGITS_ALL) != MG_OK) _exit(CHILD_ERR);
        int same = memcmp(l0, l1, sizeof(float) * 20 * (size_t)V) == 0;
        mg_state_free(st);
        mg_model_free(m);
        free(l0);
        free(l1);
        _exit(same ? CHILD_OK : CHILD_DIFF);
    }
    int status = 0;
    if (waitpid(pid, &status, 0) != pid) return -1;
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

static void test_changed_while_mapped(const char *golden)
{
    printf("4. a model file truncated, rewritten in place or replaced while loaded\n");
    char src[1024], path[600];
    snprintf(src, sizeof src, "%s/heads2_swiglu.gguf", golden);
    snprintf(path, sizeof path, "%s/model.gguf", tmpdir);
    static const struct {
        enum change what;
        int use_mmap, expect;
        const char *name, *expect_name;
    } cases[] = {
        {TRUNCATE, 1, CHILD_SIGBUS, "truncated to 0 bytes, mmap", "SIGBUS"},
        {TRUNCATE, 0, CHILD_OK, "truncated to 0 bytes, use_mmap 0", "same logits"},
        {REWRITE, 1, CHILD_DIFF, "rewritten in place, mmap", "different logits"},
        {REWRITE, 0, CHILD_OK, "rewritten in place, use_mmap 0", "same logits"},
        {REPLACE, 1, CHILD_OK, "replaced by rename, mmap", "same logits"},
        {REPLACE, 0, CHILD_OK, "replaced by rename, use_mmap 0", "same logits"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        CHECK(copy_file(src, path) == 0, "copy");
        int r = child_run(path, cases[i].use_mmap, cases[i].what);
        CHECK(r == cases[i].expect, "%s: child status %d, expected %d (%s)", cases[i].name, r,
              cases[i].expect, cases[i].expect_name);
        printf("  %-36s -> %s\n", cases[i].name,
               r == CHILD_SIGBUS ? "SIGBUS" : r == CHILD_OK ? "same logits"
               : r == CHILD_DIFF ? "different logits" : "ERROR");
        unlink(path);
    }
}

/* ================================================================ main */

int main(void)
{
    const char *golden = getenv("MG_GOLDEN_DIR");
    if (!golden || !*golden) TEST_SKIP("MG_GOLDEN_DIR is not set (run through make check)");
    if (faults_begin() != 0) return 1;

    test_read_faults(golden);
    test_write_faults(golden);
    test_changed_while_mapped(golden);

    /* nothing left behind */
    int left = faults_files_left();
    CHECK(left == 0, "%d files left in the test directory", left);
    return test_finish("test-faults-io");
}

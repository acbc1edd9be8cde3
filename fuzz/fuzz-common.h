/* fuzz-common.h - helpers shared by the libFuzzer harnesses of fuzz/ (see docs/fuzzing.md). */
#ifndef MG_FUZZ_COMMON_H
#define MG_FUZZ_COMMON_H

#include "config.h"

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "megalodon.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* A failed check of the harness itself (not a library error): print and abort, which
 * libFuzzer reports as a crash and saves the input of. */
#define FUZZ_ASSERT(cond, ...)                                                             \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            char fuzz_msg_[1024];                                                          \
            int fuzz_n_ = snprintf(fuzz_msg_, sizeof fuzz_msg_,                            \
                                   "fuzz assertion failed at %s:%d: %s: ", __FILE__,       \
                                   __LINE__, #cond);                                       \
            if (fuzz_n_ > 0 && (size_t)fuzz_n_ < sizeof fuzz_msg_)                         \
                snprintf(fuzz_msg_ + fuzz_n_, sizeof fuzz_msg_ - (size_t)fuzz_n_,          \
                         __VA_ARGS__);                                                     \
            fuzz_fail_(fuzz_msg_);                                                         \
        }                                                                                  \
    } while (0)

/* The sanitizers' report channel still works when libFuzzer's -close_fd_mask has closed
 * stderr (libFuzzer points it at its own copy of stderr). */
void __sanitizer_report_error_summary(const char *error_summary);

static inline void fuzz_fail_(const char *msg)
{
    __sanitizer_report_error_summary(msg);
    fprintf(stderr, "%s\n", msg);
    abort();
}

/* The source tree: $MG_FUZZ_TOP_SRCDIR, else the one the harness was built from. */
static inline const char *fuzz_top_srcdir(void)
{
    const char *e = getenv("MG_FUZZ_TOP_SRCDIR");
    if (e && *e) return e;
#ifdef MG_FUZZ_TOP_SRCDIR
    return MG_FUZZ_TOP_SRCDIR;
#else
    return ".";
#endif
}

/* The whole file at top/rel in a malloc'd buffer; exits (the harness cannot run) if absent. */
static inline unsigned char *fuzz_read_src_file(const char *rel, size_t *size)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", fuzz_top_srcdir(), rel);
    FILE *f = fopen(path, "rb");
    unsigned char *b = NULL;
    long n = -1;
    if (f && fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (b = malloc(n ? (size_t)n : 1)) != NULL && fread(b, 1, (size_t)n, f) == (size_t)n) {
        fclose(f);
        *size = (size_t)n;
        return b;
    }
    fprintf(stderr, "fuzz: cannot read %s (set MG_FUZZ_TOP_SRCDIR to the source tree)\n", path);
    exit(1);
}

/* An anonymous in-memory file (memfd) holding data; its path is /proc/self/fd/N. Returns the
 * descriptor (the caller closes it) or -1. */
static inline int fuzz_memfd(const uint8_t *data, size_t size, char *path, size_t path_size)
{
    int fd = memfd_create("mg-fuzz", MFD_CLOEXEC);
    if (fd < 0) return -1;
    size_t done = 0;
    while (done < size) {
        ssize_t w = write(fd, data + done, size - done);
        if (w <= 0) {
            close(fd);
            return -1;
        }
        done += (size_t)w;
    }
    snprintf(path, path_size, "/proc/self/fd/%d", fd);
    return fd;
}

/* Settings for speed and reproducibility: one compute thread everywhere, no CEMA wisdom file
 * (nothing written under $HOME), no planner measurements. */
static inline void fuzz_quiet_env(void)
{
    setenv("OMP_NUM_THREADS", "1", 1);
    setenv("OPENBLAS_NUM_THREADS", "1", 1);
    setenv("MEGALODON_CEMA_WISDOM", "none", 1);
    setenv("MEGALODON_CEMA_PLANNER", "estimate", 1);
    unsetenv("MEGALODON_CEMA");
    unsetenv("MEGALODON_ISA");
}

/* A fresh directory mg-fuzz-NAME-XXXXXX in /dev/shm (else /tmp) in dir[size]; exits on failure. */
static inline void fuzz_make_tmpdir(char *dir, size_t size, const char *name)
{
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(dir, size, "%s/mg-fuzz-%s-XXXXXX", base, name);
    if (!mkdtemp(dir)) {
        fprintf(stderr, "fuzz-%s: mkdtemp: %s\n", name, strerror(errno));
        exit(1);
    }
}

/* The model at path, one compute thread; exits (naming the harness) if it does not load. */
static inline mg_model *fuzz_load_model(const char *path, const char *harness)
{
    mg_model_params mp = mg_model_default_params();
    mp.n_threads = 1;
    mg_model *m = NULL;
    if (mg_model_load(path, &mp, &m) != MG_OK) {
        fprintf(stderr, "%s: cannot load %s: %s\n", harness, path, mg_last_error());
        exit(1);
    }
    return m;
}

#endif

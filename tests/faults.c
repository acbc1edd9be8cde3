/* faults.c - the fault injection hooks (the __wrap_ functions of the allocators and the
 * file-system calls) and the file helpers of test-faults and test-faults-io (faults.h). */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "faults.h"
#include "state-bytes.h"
#include "test.h"

/* ================================================================ the allocator hook */

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
void __real_free(void *p);
int __real_posix_memalign(void **p, size_t align, size_t n);
void *__real_aligned_alloc(size_t align, size_t n);
char *__real_strdup(const char *s);
void *__real_fftwf_malloc(size_t n);
void __real_fftwf_free(void *p);

int alloc_mode = FAIL_NONE;
long alloc_target;
_Atomic int alloc_armed;
_Atomic long alloc_calls;
_Atomic long alloc_failed;
_Atomic long live_blocks;

/* distinct call sites (return addresses) seen while record_sites is set */
#define MAX_SITES 4096
static void *site_pc[MAX_SITES];
int n_sites, record_sites;

static void note_site(void *pc)
{
    if (!record_sites) return;
    for (int i = 0; i < n_sites; i++)
        if (site_pc[i] == pc) return;
    if (n_sites < MAX_SITES) site_pc[n_sites++] = pc;
}

/* 1 if this allocation call must fail */
static int alloc_fails(void *pc)
{
    if (!alloc_armed) return 0;
    long i = atomic_fetch_add(&alloc_calls, 1);
    note_site(pc);
    int fail = (alloc_mode == FAIL_ONE && i == alloc_target) ||
               (alloc_mode == FAIL_FROM && i >= alloc_target);
    if (fail) {
        atomic_fetch_add(&alloc_failed, 1);
        errno = ENOMEM;
    }
    return fail;
}

/* p (an allocator's result), counted as a live block unless the allocation failed */
static void *counted(void *p)
{
    if (p) atomic_fetch_add(&live_blocks, 1);
    return p;
}

void *__wrap_malloc(size_t n)
{
    if (alloc_fails(__builtin_return_address(0))) return NULL;
    return counted(__real_malloc(n));
}

void *__wrap_calloc(size_t n, size_t size)
{
    if (alloc_fails(__builtin_return_address(0))) return NULL;
    return counted(__real_calloc(n, size));
}

void *__wrap_realloc(void *old, size_t n)
{
    if (alloc_fails(__builtin_return_address(0))) return NULL;
    void *p = __real_realloc(old, n);
    if (p && !old) atomic_fetch_add(&live_blocks, 1);
    return p;
}

void __wrap_free(void *p)
{
    if (p) atomic_fetch_sub(&live_blocks, 1);
    __real_free(p);
}

int __wrap_posix_memalign(void **out, size_t align, size_t n)
{
    if (alloc_fails(__builtin_return_address(0))) return ENOMEM;
    int rc = __real_posix_memalign(out, align, n);
    if (rc == 0) atomic_fetch_add(&live_blocks, 1);
    return rc;
}

void *__wrap_aligned_alloc(size_t align, size_t n)
{
    if (alloc_fails(__builtin_return_address(0))) return NULL;
    return counted(__real_aligned_alloc(align, n));
}

char *__wrap_strdup(const char *s)
{
    if (alloc_fails(__builtin_return_address(0))) return NULL;
    return counted(__real_strdup(s));
}

void *__wrap_fftwf_malloc(size_t n)
{
    if (alloc_fails(__builtin_return_address(0))) return NULL;
    return counted(__real_fftwf_malloc(n));
}

void __wrap_fftwf_free(void *p)
{
    if (p) atomic_fetch_sub(&live_blocks, 1);
    __real_fftwf_free(p);
}

/* ================================================================ the file-system hook */

int __real_open(const char *path, int flags, ...);
int __real_fstat(int fd, struct stat *st);
void *__real_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);
ssize_t __real_write(int fd, const void *buf, size_t n);
int __real_fsync(int fd);
int __real_close(int fd);
int __real_rename(const char *from, const char *to);
int __real_mkstemp(char *tmpl);
int __real_fchmod(int fd, mode_t mode);

const char *const io_names[IO_N] = {"open", "fstat", "mmap", "write", "fsync", "close",
                                     "rename", "mkstemp", "fchmod"};
struct io_fault io;

void io_arm(enum io_fn fn, long nth, int err)
{
    memset(&io, 0, sizeof io);
    io.fn = fn;
    io.nth = nth;
    io.err = err;
    io.armed = 1;
}

void io_count_only(void)
{
    memset(&io, 0, sizeof io);
    io.fn = IO_N;
    io.armed = 1;
}

void io_disarm(void) { io.armed = 0; }

/* 1 if this call of fn must fail (errno is set) */
static int io_fails(enum io_fn fn)
{
    if (!io.armed) return 0;
    long i = io.calls[fn]++;
    if (fn == io.fn && i == io.nth) {
        io.injected++;
        errno = io.err;
        return 1;
    }
    return 0;
}

int __wrap_open(const char *path, int flags, ...)
{
    mode_t mode = 0;
    if (flags & (O_CREAT | O_TMPFILE)) {
        va_list ap;
        va_start(ap, flags);
        mode = (mode_t)va_arg(ap, int);
        va_end(ap);
    }
    if (io_fails(IO_OPEN)) return -1;
    return __real_open(path, flags, mode);
}

int __wrap_fstat(int fd, struct stat *st)
{
    if (io_fails(IO_FSTAT)) return -1;
    int rc = __real_fstat(fd, st);
    if (rc == 0 && io.armed && io.fstat_short > 0 && S_ISREG(st->st_mode))
        st->st_size = st->st_size > io.fstat_short ? st->st_size - io.fstat_short : 0;
    return rc;
}

void *__wrap_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    if (io_fails(IO_MMAP)) return MAP_FAILED;
    return __real_mmap(addr, len, prot, flags, fd, off);
}

ssize_t __wrap_write(int fd, const void *buf, size_t n)
{
    if (io.armed && io.short_writes) {
        if (io.calls[IO_WRITE]++ % 2 == 0) {
            errno = EINTR;
            return -1;
        }
        return __real_write(fd, buf, n < 7 ? n : 7);
    }
    if (io.armed && io.partial && !io.partial_done && io.fn == IO_WRITE &&
        io.calls[IO_WRITE] == io.nth && n > 1) {
        io.partial_done = 1; /* this call writes half; the next one (nth) fails */
        return __real_write(fd, buf, n / 2);
    }
    if (io_fails(IO_WRITE)) return -1;
    return __real_write(fd, buf, n);
}

int __wrap_fsync(int fd)
{
    if (io_fails(IO_FSYNC)) return -1;
    return __real_fsync(fd);
}

int __wrap_close(int fd)
{
    if (io_fails(IO_CLOSE)) {
        __real_close(fd); /* as Linux does: the descriptor is released even on EIO */
        errno = io.err;
        return -1;
    }
    return __real_close(fd);
}

int __wrap_rename(const char *from, const char *to)
{
    if (io_fails(IO_RENAME)) return -1;
    return __real_rename(from, to);
}

int __wrap_mkstemp(char *tmpl)
{
    if (io_fails(IO_MKSTEMP)) return -1;
    return __real_mkstemp(tmpl);
}

int __wrap_fchmod(int fd, mode_t mode)
{
    if (io_fails(IO_FCHMOD)) return -1;
    return __real_fchmod(fd, mode);
}

/* ================================================================ helpers */

char tmpdir[512];
int quick;

/* The whole file at path (malloc'd) or NULL. */
unsigned char *slurp(const char *path, size_t *n)
{
    long size = 0;
    unsigned char *b = test_read_file(path, &size);
    *n = b ? (size_t)size : 0;
    return b;
}

int same_file_bytes(const char *path, const unsigned char *bytes, size_t n)
{
    size_t m = 0;
    unsigned char *b = slurp(path, &m);
    int same = b && m == n && memcmp(b, bytes, n) == 0;
    free(b);
    return same;
}

int copy_file(const char *from, const char *to)
{
    size_t n = 0;
    unsigned char *b = slurp(from, &n);
    if (!b) return -1;
    FILE *f = fopen(to, "wb");
    int ok = f && fwrite(b, 1, n, f) == n;
    if (f && fclose(f) != 0) ok = 0;
    free(b);
    return ok ? 0 : -1;
}

/* Entries of tmpdir whose name contains ".tmp." (the writer's temporary files). */
int count_temp_files(void)
{
    DIR *d = opendir(tmpdir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strstr(e->d_name, ".tmp.")) n++;
    closedir(d);
    return n;
}

snap take_snap(const mg_state *st)
{
    snap s;
    s.n = state_bytes(st, NULL);
    s.b = malloc(s.n);
    state_bytes(st, s.b);
    return s;
}

int snap_equal(const mg_state *st, const snap *s)
{
    snap t = take_snap(st);
    int same = t.n == s->n && memcmp(t.b, s->b, s->n) == 0;
    free(t.b);
    return same;
}

mg_model_params model_params(int use_mmap)
{
    mg_model_params mp = mg_model_default_params();
    mp.n_threads = 1;
    mp.use_mmap = use_mmap;
    return mp;
}

mg_model *load_or_die(const char *path, int use_mmap)
{
    mg_model_params mp = model_params(use_mmap);
    mg_model *m = NULL;
    if (mg_model_load(path, &mp, &m) != MG_OK) {
        fprintf(stderr, "test-faults: cannot load %s: %s\n", path, mg_last_error());
        exit(1);
    }
    return m;
}

void fill_tokens(int32_t *t, size_t n, int V, int seed)
{
    for (size_t i = 0; i < n; i++) t[i] = (int32_t)((i * 7 + (size_t)seed * 13 + 3) % (size_t)V);
}

int faults_begin(void)
{
    quick = getenv("MG_FAULTS_QUICK") && atoi(getenv("MG_FAULTS_QUICK")) > 0;
    /* a deterministic backend: no wisdom file, the cost-model planner */
    setenv("MEGALODON_CEMA_PLANNER", "estimate", 1);
    setenv("MEGALODON_CEMA_WISDOM", "none", 1);
    unsetenv("MEGALODON_CEMA");
    if (test_make_tmpdir(tmpdir, sizeof tmpdir, "faults") != 0) return -1;
    return 0;
}

int faults_files_left(void)
{
    DIR *d = opendir(tmpdir);
    int left = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            fprintf(stderr, "left in the test directory: %s\n", e->d_name);
            left++;
        }
    if (d) closedir(d);
    rmdir(tmpdir);
    return left;
}

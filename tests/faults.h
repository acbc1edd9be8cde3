/* faults.h - the fault injection hooks and the file helpers that test-faults and
 * test-faults-io share (tests/faults.c; docs/hardening.md, "Fault injection").
 *
 * Both programs are linked with `-Wl,--wrap=` for the allocators and the file-system calls
 * the library makes (Makefile.am: FAULT_WRAPS). The library is linked statically
 * (libmgcore.la), so every call that the library's own object files make to malloc, calloc,
 * realloc, strdup, fftwf_malloc, open, fstat, mmap, write, fsync, close, rename, mkstemp,
 * fchmod ... goes through the __wrap_ functions of faults.c, which can make any one of them
 * fail. Calls made inside shared libraries (libc itself, FFTW, OpenBLAS, libgomp) are not
 * affected. */
#ifndef MG_TESTS_FAULTS_H
#define MG_TESTS_FAULTS_H

#include <stddef.h>
#include <stdint.h>

#include "megalodon.h"

/* ---------------------------------------------------------------- the allocator hook */

/* While alloc_armed, every allocation call is counted in alloc_calls; in FAIL_ONE mode call
 * number alloc_target (0-based) fails (ENOMEM, NULL), in FAIL_FROM mode every call from it
 * on. */
enum { FAIL_NONE, FAIL_ONE, FAIL_FROM };
extern int alloc_mode;
extern long alloc_target;
extern _Atomic int alloc_armed;  /* count (and maybe fail) calls only while armed */
extern _Atomic long alloc_calls; /* allocation calls since arming */
extern _Atomic long alloc_failed; /* calls made to fail since arming */
extern _Atomic long live_blocks; /* blocks allocated through the wrappers, not freed */
/* while record_sites is set, the distinct call sites (return addresses) are counted in
 * n_sites */
extern int n_sites, record_sites;

/* ---------------------------------------------------------------- the file-system hook */

enum io_fn { IO_OPEN, IO_FSTAT, IO_MMAP, IO_WRITE, IO_FSYNC, IO_CLOSE, IO_RENAME, IO_MKSTEMP,
             IO_FCHMOD, IO_N };
extern const char *const io_names[IO_N];

/* The injected fault: while armed, call number `nth` (0-based, counted per function) of
 * function `fn` fails with `err`. For write, `partial` first writes half the buffer and
 * fails the call after it. `short_writes` makes every write write at most 7 bytes and
 * every other write fail with EINTR (no failure). `fstat_short` > 0: fstat reports a size
 * that many bytes short of the real one. */
struct io_fault {
    int armed;
    enum io_fn fn;
    long nth;
    int err;
    int partial, partial_done;
    int short_writes;
    long fstat_short;
    long calls[IO_N];
    long injected;
};
extern struct io_fault io;

void io_arm(enum io_fn fn, long nth, int err);
void io_count_only(void); /* count the calls, fail none */
void io_disarm(void);

/* ---------------------------------------------------------------- helpers */

extern char tmpdir[512]; /* a fresh directory for the files of the test */
extern int quick;        /* MG_FAULTS_QUICK=1: fewer cases (under valgrind) */

/* Reads MG_FAULTS_QUICK, makes the backend deterministic (no wisdom file, the cost-model
 * planner) and creates tmpdir; -1 (with a message) if it cannot. */
int faults_begin(void);
/* The files left in tmpdir (each named on stderr); removes tmpdir. */
int faults_files_left(void);

unsigned char *slurp(const char *path, size_t *n); /* the whole file (malloc'd) or NULL */
int same_file_bytes(const char *path, const unsigned char *bytes, size_t n);
int copy_file(const char *from, const char *to);
int count_temp_files(void); /* entries of tmpdir with ".tmp." in the name */

/* a state's bytes (state-bytes.h), for bitwise comparisons */
typedef struct {
    unsigned char *b;
    size_t n;
} snap;
snap take_snap(const mg_state *st);
int snap_equal(const mg_state *st, const snap *s);

mg_model_params model_params(int use_mmap); /* one thread */
mg_model *load_or_die(const char *path, int use_mmap);
void fill_tokens(int32_t *t, size_t n, int V, int seed);

#endif

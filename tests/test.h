/* test.h - the small test harness shared by the C tests.
 *
 * Each test program runs its checks and exits 0 only if every CHECK passed; a skip exits
 * 77 (automake's SKIP) after saying why. Failures print file:line and the message. */
#ifndef MG_TEST_H
#define MG_TEST_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static int test_failures = 0;
static int test_checks = 0;

#define CHECK(cond, ...)                                                                   \
    do {                                                                                   \
        test_checks++;                                                                     \
        if (!(cond)) {                                                                     \
            test_failures++;                                                               \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                \
            fprintf(stderr, __VA_ARGS__);                                                  \
            fputc('\n', stderr);                                                           \
        }                                                                                  \
    } while (0)

/* A library call (megalodon.h or error.h, string.h included by the test): CHECK_ERR: `call`
 * must return `status` and leave a message containing `substr`; CHECK_OK: it must succeed. */
#define CHECK_ERR(call, status, substr)                                                      \
    do {                                                                                     \
        int rc_ = (call);                                                                    \
        CHECK(rc_ == (status), "got %d, expected %d (%s)", rc_, (int)(status),               \
              mg_last_error());                                                              \
        CHECK(strstr(mg_last_error(), (substr)) != NULL, "message '%s' lacks '%s'",          \
              mg_last_error(), (substr));                                                    \
    } while (0)

#define CHECK_OK(call)                                                                       \
    do {                                                                                     \
        int rc_ = (call);                                                                    \
        CHECK(rc_ == MG_OK, "got %d (%s)", rc_, mg_last_error());                            \
    } while (0)

/* The next value of the xorshift32 stream *s, uniform in [-1, 1) (24 random bits). */
static inline float test_frand(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return (float)((*s >> 8) / 8388608.0 - 1.0);
}

/* Check that |a - b| <= tol for n floats; reports the worst index. Returns max abs error. */
static inline double check_close_(const char *file, int line, const char *what,
                                  const float *a, const float *b, size_t n, double tol)
{
    double worst = 0.0;
    size_t wi = 0;
    int bad_nan = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (isnan(a[i]) != isnan(b[i])) bad_nan = 1;
        if (d > worst || isnan(d)) { worst = isnan(d) ? INFINITY : d; wi = i; }
    }
    test_checks++;
    if (worst > tol || bad_nan) {
        test_failures++;
        fprintf(stderr, "FAIL %s:%d: %s: max abs error %.3g > %.3g at [%zu] (%.9g vs %.9g)\n",
                file, line, what, worst, tol, wi, n ? (double)a[wi] : 0.0,
                n ? (double)b[wi] : 0.0);
    }
    return worst;
}
#define CHECK_CLOSE(what, a, b, n, tol) check_close_(__FILE__, __LINE__, what, a, b, n, tol)

#define TEST_SKIP(...)                                                                     \
    do {                                                                                   \
        printf("SKIP: ");                                                                  \
        printf(__VA_ARGS__);                                                               \
        printf("\n");                                                                      \
        exit(77);                                                                          \
    } while (0)

/* The whole file at `path` in a malloc'd buffer (NULL on failure); *size gets its length. */
static inline unsigned char *test_read_file(const char *path, long *size)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char *b = NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (*size = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (b = malloc(*size ? (size_t)*size : 1)) != NULL && fread(b, 1, (size_t)*size, f) != (size_t)*size) {
        free(b);
        b = NULL;
    }
    fclose(f);
    return b;
}

/* A fresh directory $TMPDIR/mg-NAME-XXXXXX (/tmp without TMPDIR) in dir[size]; 0, or -1 with
 * a message on stderr. */
static inline int test_make_tmpdir(char *dir, size_t size, const char *name)
{
    const char *t = getenv("TMPDIR");
    snprintf(dir, size, "%s/mg-%s-XXXXXX", t && *t ? t : "/tmp", name);
    if (mkdtemp(dir)) return 0;
    perror("mkdtemp");
    return -1;
}

static inline int test_finish(const char *name)
{
    printf("%s: %d checks, %d failed\n", name, test_checks, test_failures);
    return test_failures ? 1 : 0;
}

#endif

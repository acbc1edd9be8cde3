/* fuzz-args.c - libFuzzer harness for megalodon-run's input parsers (bin/args.c,
 * bin/run-common.c): the command line of every mode, and the token-id readers (--tokens
 * files and the id lines of interactive mode without a tokenizer).
 *
 * Input: one selector byte, then the payload. selector % 8:
 *   0..3  run_parse_args(mode = selector, mode given) on argv = "megalodon-run" + the payload
 *         split at NUL bytes (at most 64 arguments);
 *   4     the same without a mode word (generate);
 *   5     as megalodon-run's main: argv[1] chooses the mode when it is a mode word;
 *   6     run_parse_ids(payload up to its first NUL, n_vocab);
 *   7     run_read_tokens and run_tokens_count on the payload as a file (a memfd).
 *   n_vocab = 1 + (selector >> 3) * 1000.
 * The parsers print their errors and --help to stdout/stderr: run.sh passes
 * -close_fd_mask=3. Checks: nothing crashes; an accepted command line has a model and values
 * in their documented ranges; the id readers agree with an independent reference parser
 * (every whitespace-separated word must be at most 63 bytes of an optional sign and decimal
 * digits, whose value is in [0, n_vocab)). */
#include "fuzz-common.h"

#include <ctype.h>
#include <limits.h>

#include "args.h"

#define MAX_ARGS 64

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_quiet_env();
    return 0;
}

/* Reference: parse `len` bytes as whitespace-separated ids (the C locale's isspace). Returns
 * the number of ids, or -1 if some word is not a valid id in [0, n_vocab). */
static long ref_parse(const char *s, size_t len, int32_t n_vocab, int32_t *ids, size_t max)
{
    size_t i = 0;
    long n = 0;
    while (i < len) {
        while (i < len && isspace((unsigned char)s[i])) i++;
        if (i == len) break;
        size_t j = i;
        while (j < len && !isspace((unsigned char)s[j])) j++;
        /* word s[i..j): at most 63 bytes (no id needs more; longer words are refused) */
        if (j - i > 63) return -1;
        size_t k = i;
        int neg = 0;
        if (s[k] == '-' || s[k] == '+') neg = s[k++] == '-';
        if (k == j) return -1;
        for (size_t q = k; q < j; q++)
            if (!isdigit((unsigned char)s[q])) return -1;
        while (k < j - 1 && s[k] == '0') k++; /* leading zeros */
        if (j - k > 10) return -1;             /* more than 10 significant digits */
        unsigned long long v = 0;
        for (size_t q = k; q < j; q++) v = v * 10 + (unsigned long long)(s[q] - '0');
        if ((neg && v != 0) || v >= (unsigned long long)n_vocab) return -1;
        if ((size_t)n < max) ids[n] = (int32_t)v;
        n++;
        i = j;
    }
    return n;
}

static void check_ids(const char *what, const char *s, size_t len, int32_t n_vocab, int rc,
                      const int32_t *ids, size_t n)
{
    int32_t *ref = malloc((len + 1) * sizeof *ref);
    FUZZ_ASSERT(ref, "out of memory");
    long rn = ref_parse(s, len, n_vocab, ref, len + 1);
    if (rn < 0) {
        FUZZ_ASSERT(rc != EXIT_OK, "%s accepted what the reference refuses", what);
    } else {
        FUZZ_ASSERT(rc == EXIT_OK, "%s refused %ld valid ids", what, rn);
        FUZZ_ASSERT((size_t)rn == n, "%s: %zu ids, the reference %ld", what, n, rn);
        for (size_t i = 0; i < n; i++)
            FUZZ_ASSERT(ids[i] == ref[i], "%s: id %zu is %d, the reference %d", what, i,
                        ids[i], ref[i]);
    }
    free(ref);
}

static void check_opts(const run_opts *o, run_mode mode)
{
    FUZZ_ASSERT(o->mode == mode, "mode %d -> %d", (int)mode, (int)o->mode);
    FUZZ_ASSERT(o->model != NULL, "accepted without a model");
    FUZZ_ASSERT(o->n_threads >= 0 && o->n_threads <= 4096, "threads %d", o->n_threads);
    FUZZ_ASSERT(o->n_batch >= 0 && o->n_batch <= (1 << 24), "batch %d", o->n_batch);
    FUZZ_ASSERT(o->n_predict >= -1, "n_predict %d", o->n_predict);
    FUZZ_ASSERT(o->sampling.top_k >= 0 && o->sampling.repeat_last_n >= 0, "top_k/last_n");
    FUZZ_ASSERT(o->sampling.temp >= 0 && o->sampling.top_p >= 0 && o->sampling.top_p <= 1 &&
                    o->sampling.min_p >= 0 && o->sampling.min_p <= 1 &&
                    o->sampling.repeat_penalty > 0,
                "sampling values out of range");
    FUZZ_ASSERT(o->cema == MG_CEMA_AUTO || o->cema == MG_CEMA_FFT || o->cema == MG_CEMA_SCAN,
                "cema %d", (int)o->cema);
    int inputs = !!o->prompt + !!o->file + !!o->tokens_file;
    if (mode == MODE_PERPLEXITY || mode == MODE_TOKENIZE)
        FUZZ_ASSERT(inputs == 1, "%d inputs accepted", inputs);
    if (mode == MODE_GENERATE) FUZZ_ASSERT(inputs <= 1, "%d inputs accepted", inputs);
}

static void fuzz_command_line(int sel, const uint8_t *p, size_t len)
{
    /* the payload with a NUL after it, split at NULs */
    char *buf = malloc(len + 1);
    FUZZ_ASSERT(buf, "out of memory");
    memcpy(buf, p, len);
    buf[len] = '\0';
    char *argv[MAX_ARGS + 2];
    int argc = 0;
    argv[argc++] = (char *)"megalodon-run";
    if (len > 0) {
        for (size_t i = 0; i <= len && argc < MAX_ARGS + 1;) {
            argv[argc++] = buf + i;
            i += strlen(buf + i) + 1;
        }
    }
    argv[argc] = NULL;

    run_mode mode;
    int mode_given;
    char **av = argv;
    int ac = argc;
    if (sel <= 3) {
        mode = (run_mode)sel;
        mode_given = 1;
    } else if (sel == 4) {
        mode = MODE_GENERATE;
        mode_given = 0;
    } else { /* as main() */
        mode = run_take_mode(&ac, &av, &mode_given);
    }
    run_opts o;
    int rc = run_parse_args(mode, mode_given, ac, av, &o);
    /* --list-devices acts in the parser, and fails at run time where there is no OpenCL */
    int lists = 0;
    for (int i = 1; i < ac; i++) lists |= strncmp(av[i], "--list-devices", 14) == 0;
    FUZZ_ASSERT(rc == -1 || rc == EXIT_OK || rc == EXIT_USAGE || (lists && rc == EXIT_RUNTIME),
                "exit code %d", rc);
    if (rc == -1) check_opts(&o, mode);
    (void)run_mode_name(mode);
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    const int sel = data[0] & 7;
    const int32_t n_vocab = 1 + (int32_t)(data[0] >> 3) * 1000;
    const uint8_t *p = data + 1;
    const size_t len = size - 1;
    if (sel <= 5) {
        fuzz_command_line(sel, p, len);
    } else if (sel == 6) {
        char *text = malloc(len + 1);
        FUZZ_ASSERT(text, "out of memory");
        memcpy(text, p, len);
        text[len] = '\0';
        int32_t *ids = NULL;
        size_t n = 0;
        int rc = run_parse_ids(text, n_vocab, &ids, &n);
        check_ids("run_parse_ids", text, strlen(text), n_vocab, rc, ids, n);
        free(ids);
        free(text);
    } else {
        char path[64];
        int fd = fuzz_memfd(p, len, path, sizeof path);
        if (fd < 0) return 0;
        int32_t *ids = NULL;
        size_t n = 0;
        int rc = run_read_tokens(path, n_vocab, &ids, &n);
        check_ids("run_read_tokens", (const char *)p, len, n_vocab, rc, ids, n);
        free(ids);
        /* counting, then reading again from the start, block by block */
        run_token_reader *r = NULL;
        if (run_tokens_open(path, n_vocab, &r) == EXIT_OK) {
            size_t count = 0;
            int known = 0;
            int rc2 = run_tokens_count(r, &count, &known);
            FUZZ_ASSERT((rc2 == EXIT_OK) == (rc == EXIT_OK), "count and read disagree");
            if (rc2 == EXIT_OK) {
                FUZZ_ASSERT(known && count == n, "count %zu (known %d), read %zu", count, known,
                            n);
                int32_t block[7];
                size_t got, total = 0;
                do {
                    FUZZ_ASSERT(run_tokens_next(r, block, 7, &got) == EXIT_OK, "re-read");
                    total += got;
                } while (got == 7);
                FUZZ_ASSERT(total == n, "re-read %zu ids of %zu", total, n);
            }
            run_tokens_close(r);
        }
        close(fd);
    }
    return 0;
}

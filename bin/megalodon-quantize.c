/* megalodon-quantize - write a copy of a model with its large matrices in f16, bf16, q8_0,
 * q4_0 or q4_K/q6_K, or with every tensor in f32 (docs/megalodon-quantize.md,
 * docs/quantization.md). It uses only the public API (mg_model_quantize). Exit status:
 * 0 success, 1 failure, 2 usage. */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "megalodon.h"

static const char *prog = "megalodon-quantize";

static void usage(void)
{
    printf("usage: %s [options] IN.gguf OUT.gguf TYPE\n"
           "Writes OUT.gguf: IN.gguf with its large matrices (token embedding, projections,\n"
           "FFN matrices, output head) in TYPE; norms, CEMA parameters, biases and other\n"
           "small tensors are copied unchanged. OUT.gguf is written atomically.\n"
           "TYPE is one of:\n"
           "  f32      every tensor 32-bit float: dequantizes a quantized model\n"
           "  f16      16-bit IEEE half                      16 bits per weight\n"
           "  bf16     16-bit bfloat                         16 bits per weight\n"
           "  q8_0     8-bit, one fp16 scale per 32 values   8.5 bits per weight\n"
           "  q4_0     4-bit, one fp16 scale per 32 values   4.5 bits per weight\n"
           "  q4_k_m   q4_K (4.5 bits) with q6_K (6.56 bits) for the output head, the value\n"
           "           projections and the FFN down projections\n"
           "A matrix whose row length does not fit the type's block takes the nearest type\n"
           "that fits (q4_K -> q4_0 -> q8_0 -> f16, q6_K -> q8_0 -> f16).\n"
           "Options:\n"
           "  -h, --help            show this help and exit\n"
           "      --version         show the version and exit\n"
           "      --allow-requantize  accept an input whose tensors are already quantized\n"
           "                        (they are dequantized, then quantized again; not\n"
           "                        needed for f32, which only dequantizes)\n"
           "  -t, --threads N       threads (default 0: all online CPUs)\n"
           "  -q, --quiet           print only the summary\n"
           "Exit status: 0 success, 1 failure, 2 usage error.\n",
           prog);
}

/* "error: MESSAGE" on standard error (standard output flushed first), then the pointer to
 * --help; exit status 2. */
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fprintf(stderr, "error: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nRun 'megalodon-quantize --help' for usage.\n");
    return 2;
}

/* The library's message of a failed call as "error: MESSAGE"; exit status 1. */
static int lib_failure(void)
{
    fflush(stdout);
    fprintf(stderr, "error: %s\n", mg_last_error());
    return 1;
}

/* What the progress lines add up to, for the summary. */
typedef struct {
    int quiet;
    uint64_t n_elements, old_bytes, new_bytes;
} totals;

static double mib(uint64_t b) { return (double)b / (1024.0 * 1024.0); }

static void progress(int64_t index, int64_t count, const char *name,
                     const mg_quantize_tensor *t, void *user)
{
    totals *tot = user;
    tot->n_elements += t->n_elements;
    tot->old_bytes += t->old_bytes;
    tot->new_bytes += t->new_bytes;
    if (tot->quiet) return;
    char shape[96];
    int k = snprintf(shape, sizeof shape, "%" PRId64, t->ne[0]);
    for (int d = 1; d < t->n_dims && k > 0 && (size_t)k < sizeof shape; d++)
        k += snprintf(shape + k, sizeof shape - (size_t)k, " x %" PRId64, t->ne[d]);
    printf("[%4" PRId64 "/%4" PRId64 "] %-28s %-14s %5s -> %-5s %9.3f -> %9.3f MiB", index + 1,
           count, name, shape, t->old_type, t->new_type, mib(t->old_bytes), mib(t->new_bytes));
    if (strcmp(t->new_type, t->wanted_type) != 0)
        printf("  (row length %" PRId64 " does not fit %s: %s instead)", t->ne[0],
               t->wanted_type, t->new_type);
    printf("\n");
    fflush(stdout);
}

int main(int argc, char **argv)
{
    mg_quantize_params p = mg_quantize_default_params();
    totals tot = {0};
    const char *pos[3];
    int n_pos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || !strcmp(a, "-")) {
            if (n_pos == 3) return usage_error("unexpected argument '%s'", a);
            pos[n_pos++] = a;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage();
            return 0;
        } else if (!strcmp(a, "--version")) {
            printf("%s (libmegalodon %s)\n", prog, mg_version());
            return 0;
        } else if (!strcmp(a, "--allow-requantize")) {
            p.allow_requantize = 1;
        } else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
            tot.quiet = 1;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads") || !strncmp(a, "--threads=", 10)) {
            const char *v = a[1] == '-' && a[9] == '=' ? a + 10 : i + 1 < argc ? argv[++i] : NULL;
            if (!v) return usage_error("%s needs a value (a number of threads)", a);
            char *end;
            errno = 0;
            long n = strtol(v, &end, 10);
            if (!*v || *end || errno || n < 0 || n > 4096)
                return usage_error("invalid value '%s' for %s: expected an integer in 0..4096", v,
                                   a[1] == '-' ? "--threads" : "-t");
            p.n_threads = (int)n;
        } else {
            return usage_error("unknown option '%s'", a);
        }
    }
    if (n_pos < 3)
        return usage_error(n_pos == 0 ? "missing IN.gguf, OUT.gguf and TYPE"
                           : n_pos == 1 ? "missing OUT.gguf and TYPE" : "missing TYPE");
    if (mg_ftype_from_name(pos[2], &p.ftype) != MG_OK)
        return usage_error("%s", mg_last_error());
    p.progress = progress;
    p.progress_user = &tot;
    printf("quantizing '%s' to '%s' as %s\n", pos[0], pos[1], mg_ftype_name(p.ftype));
    fflush(stdout);
    if (mg_model_quantize(pos[0], pos[1], &p) != MG_OK) return lib_failure();
    printf("size: %.3f MiB -> %.3f MiB (%.1f%%), %.2f -> %.2f bits per weight\n",
           mib(tot.old_bytes), mib(tot.new_bytes),
           tot.old_bytes ? 100.0 * (double)tot.new_bytes / (double)tot.old_bytes : 100.0,
           tot.n_elements ? 8.0 * (double)tot.old_bytes / (double)tot.n_elements : 0.0,
           tot.n_elements ? 8.0 * (double)tot.new_bytes / (double)tot.n_elements : 0.0);
    return 0;
}

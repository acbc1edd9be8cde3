/* make-tiny-model - write a random Megalodon model (random weights: for trying the API, the
 * programs and the benchmarks, not for meaningful text). */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "megalodon.h"
#include "tiny_model.h"

static void usage(FILE *f, const char *prog)
{
    fprintf(f,
            "usage: %s [options] OUT.gguf\n"
            "Writes a Megalodon model with random weights. Defaults: a 2-layer model with\n"
            "D=32, Z=16, E=32, 2 heads, F=64, N=4, C=16, G=4, vocabulary 64.\n"
            "  --layers N --dim D --z-dim Z --value-dim E --heads H --ff F --ndim N\n"
            "  --chunk C --groups G --vocab V --seed S     sizes (positive integers)\n"
            "  --swiglu --scale-emb --share-emb --rescale-nffn --no-norm-affine   options\n"
            "Example (about 100M parameters, the 7B shape ratios):\n"
            "  %s --layers 12 --dim 768 --z-dim 192 --value-dim 1536 --heads 1 --ff 2048 \\\n"
            "     --ndim 16 --chunk 2048 --groups 32 --vocab 32000 m100.gguf\n",
            prog, prog);
}

int main(int argc, char **argv)
{
    tiny_opts o = tiny_default_opts();
    const char *out = NULL;
    struct { const char *flag; int *dst; } sizes[] = {
        {"--layers", &o.n_layer}, {"--dim", &o.n_embd},    {"--z-dim", &o.z_dim},
        {"--value-dim", &o.value_dim}, {"--heads", &o.n_head}, {"--ff", &o.n_ff},
        {"--ndim", &o.cema_ndim}, {"--chunk", &o.chunk_size}, {"--groups", &o.norm_groups},
        {"--vocab", &o.n_vocab}};
    struct { const char *flag; int *dst; int val; } flags[] = {
        {"--swiglu", &o.swiglu, 1},       {"--scale-emb", &o.scale_emb, 1},
        {"--share-emb", &o.share_emb, 1}, {"--rescale-nffn", &o.rescale_nffn, 1},
        {"--no-norm-affine", &o.norm_affine, 0}};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int done = 0;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout, argv[0]);
            return 0;
        }
        for (size_t k = 0; !done && k < sizeof sizes / sizeof sizes[0]; k++)
            if (!strcmp(a, sizes[k].flag)) {
                char *end;
                long v = i + 1 < argc ? strtol(argv[i + 1], &end, 10) : 0;
                if (i + 1 >= argc || *end || v < 1 || v > (1 << 24)) {
                    fprintf(stderr, "%s: %s needs a positive integer\n", argv[0], a);
                    return 2;
                }
                *sizes[k].dst = (int)v;
                i++;
                done = 1;
            }
        for (size_t k = 0; !done && k < sizeof flags / sizeof flags[0]; k++)
            if (!strcmp(a, flags[k].flag)) {
                *flags[k].dst = flags[k].val;
                done = 1;
            }
        if (!strcmp(a, "--seed") && i + 1 < argc) {
            o.seed = (uint32_t)strtoul(argv[++i], NULL, 10);
            done = 1;
        }
        if (!done && a[0] != '-' && !out) {
            out = a;
            done = 1;
        }
        if (!done) {
            fprintf(stderr, "%s: unexpected argument '%s' (see --help)\n", argv[0], a);
            return 2;
        }
    }
    if (!out) {
        usage(stderr, argv[0]);
        return 2;
    }
    if (tiny_model_write(out, &o) != MG_OK) {
        fprintf(stderr, "%s: %s\n", argv[0], mg_last_error());
        return 1;
    }
    return 0;
}

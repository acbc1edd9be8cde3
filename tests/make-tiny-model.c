/* make-tiny-model - write a random Megalodon model (random weights: for trying the API, the
 * programs and the benchmarks, not for meaningful text), of any size up to the official
 * configurations, in f32 or directly in the types of a quantization recipe. */
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
            "  --preset NAME   an official configuration, with the 32000-token vocabulary\n"
            "                  (the options above change it); NAME is one of\n"
            "                  %s\n"
            "  --type TYPE     f32 (default), or a recipe of megalodon-quantize (f16, bf16,\n"
            "                  q8_0, q4_0, q4_k_m): the large matrices in its types, the same\n"
            "                  bytes as megalodon-quantize makes of the f32 model of that seed\n"
            "  --print-config  print the sizes and the number of parameters, write nothing\n"
            "Each tensor is made when it is written: the memory used is about one tensor.\n"
            "Examples:\n"
            "  %s --preset mega7.3B --type q4_k_m mega7.3B-q4_k_m.gguf\n"
            "  %s --layers 12 --dim 768 --z-dim 192 --value-dim 1536 --heads 1 --ff 2048 \\\n"
            "     --ndim 16 --chunk 2048 --groups 32 --vocab 32000 m100.gguf\n",
            prog, tiny_preset_names(), prog, prog);
}

/* The sizes as a flat JSON object with the field names of mg_hparams. */
static void print_config(const tiny_opts *o)
{
    const struct { const char *key; int v; } ints[] = {
        {"n_layer", o->n_layer}, {"n_embd", o->n_embd}, {"z_dim", o->z_dim},
        {"value_dim", o->value_dim}, {"n_head", o->n_head}, {"n_ff", o->n_ff},
        {"cema_ndim", o->cema_ndim}, {"chunk_size", o->chunk_size},
        {"norm_groups", o->norm_groups}, {"n_vocab", o->n_vocab}};
    const struct { const char *key; int v; } flags[] = {
        {"swiglu", o->swiglu}, {"scale_emb", o->scale_emb}, {"share_emb", o->share_emb},
        {"rescale_nffn", o->rescale_nffn}, {"norm_affine", o->norm_affine}};
    printf("{\n");
    for (size_t k = 0; k < sizeof ints / sizeof ints[0]; k++)
        printf("  \"%s\": %d,\n", ints[k].key, ints[k].v);
    for (size_t k = 0; k < sizeof flags / sizeof flags[0]; k++)
        printf("  \"%s\": %s,\n", flags[k].key, flags[k].v ? "true" : "false");
    printf("  \"n_params\": %llu\n}\n", (unsigned long long)tiny_model_n_params(o));
}

int main(int argc, char **argv)
{
    tiny_opts o = tiny_default_opts();
    const char *out = NULL;
    int print_only = 0;
    /* the preset first, so that the other options change it wherever they stand */
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--preset") && tiny_preset(argv[i + 1], &o) != MG_OK) {
            fprintf(stderr, "%s: unknown preset '%s' (known: %s)\n", argv[0], argv[i + 1],
                    tiny_preset_names());
            return 2;
        }
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
        } else if (!strcmp(a, "--preset") && i + 1 < argc) {
            i++; /* applied above */
            done = 1;
        } else if (!strcmp(a, "--type") && i + 1 < argc) {
            mg_ftype ft;
            if (!strcmp(argv[++i], "f32")) {
                o.ftype = 0;
            } else if (mg_ftype_from_name(argv[i], &ft) == MG_OK) {
                o.ftype = (int)ft;
            } else {
                fprintf(stderr, "%s: unknown type '%s' (known: f32, f16, bf16, q8_0, q4_0,"
                        " q4_k_m)\n", argv[0], argv[i]);
                return 2;
            }
            done = 1;
        } else if (!strcmp(a, "--print-config")) {
            print_only = 1;
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
    if (print_only) {
        print_config(&o);
        return 0;
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

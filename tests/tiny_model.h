/* tiny_model.h - write small random Megalodon models with the library's GGUF writer, with
 * switches to break them in specific ways (for the bad-input tests). */
#ifndef MG_TINY_MODEL_H
#define MG_TINY_MODEL_H

#include <stdint.h>

typedef struct {
    int n_layer, n_embd, z_dim, value_dim, n_head, n_ff, cema_ndim, chunk_size, norm_groups,
        n_vocab;
    int swiglu, scale_emb, share_emb, rescale_nffn, norm_affine;
    uint32_t seed;
    /* 0: every tensor f32; else a recipe of mg_model_quantize (an mg_ftype): its large
     * matrices are written in the recipe's types, as megalodon-quantize would make them */
    int ftype;
    /* breakage */
    const char *arch;           /* general.architecture (default "megalodon") */
    const char *skip_tensor;    /* omit this tensor */
    const char *misshape_tensor;/* give this tensor one extra element in ne[0] */
    const char *skip_key;       /* omit this key */
    const char *retype_tensor;  /* store this tensor in type `retype` (a ggml type): float and
                                 * block types converted row by row, others as zero bytes */
    uint32_t retype;
} tiny_opts;

/* The sizes of a model (the first fields of tiny_opts). */
typedef struct {
    int n_layer, n_embd, z_dim, value_dim, n_head, n_ff, cema_ndim, chunk_size, norm_groups,
        n_vocab;
} tiny_sizes;

/* 2 layers of width 32, 2 heads (z_dim 16), value_dim 32, n_ff 64, 4 CEMA dimensions and norm
 * groups, chunks of 16, 64 ids; affine norms, seed 1234, architecture "megalodon". */
tiny_opts tiny_default_opts(void);
/* tiny_default_opts() with the sizes s. */
tiny_opts tiny_sized_opts(tiny_sizes s);
/* A wider one (the soak and thread tests): 2 layers of width 64, 4 heads of 16, value_dim and
 * n_ff 128, 8 CEMA dimensions and norm groups, chunks of 64, 160 ids, SwiGLU. */
tiny_opts tiny_heads4_opts(void);
/* Set the sizes and options of an official configuration ("mega7.3B"; the names of
 * tiny_preset_names()) with the 32000-token vocabulary; MG_OK, or MG_ERR_INVALID_ARG for an
 * unknown name. */
int tiny_preset(const char *name, tiny_opts *o);
const char *tiny_preset_names(void);
/* The number of parameters: the values of the random tensors (not rope.freqs, nor the
 * norms' prior counts). */
uint64_t tiny_model_n_params(const tiny_opts *o);
/* Write the model to `path`; returns MG_OK or an error (message in mg_last_error()).
 * The values come from one xorshift32 stream seeded by o->seed, in file order, whatever
 * o->ftype is; each tensor is made (and converted) when the writer reaches it, so that
 * about one tensor is in memory at a time. */
int tiny_model_write(const char *path, const tiny_opts *o);

#endif

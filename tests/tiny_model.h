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
    /* breakage */
    const char *arch;           /* general.architecture (default "megalodon") */
    const char *skip_tensor;    /* omit this tensor */
    const char *misshape_tensor;/* give this tensor one extra element in ne[0] */
    const char *skip_key;       /* omit this key */
    const char *retype_tensor;  /* store this tensor in type `retype` (a ggml type): float and
                                 * block types converted row by row, others as zero bytes */
    uint32_t retype;
} tiny_opts;

tiny_opts tiny_default_opts(void);
/* A wider one (the soak and thread tests): 2 layers of width 64, 4 heads of 16, value_dim and
 * n_ff 128, 8 CEMA dimensions and norm groups, chunks of 64, 160 ids, SwiGLU. */
tiny_opts tiny_heads4_opts(void);
/* Write the model to `path`; returns MG_OK or an error (message in mg_last_error()). */
int tiny_model_write(const char *path, const tiny_opts *o);

#endif

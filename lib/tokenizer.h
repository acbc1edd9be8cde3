/* tokenizer.h - the tokenizer stored in a model file (internal; public calls are in
 * megalodon.h). */
#ifndef MG_TOKENIZER_H
#define MG_TOKENIZER_H

#include "gguf.h"

typedef struct mg_tokenizer mg_tokenizer;

/* Read the tokenizer.ggml.* keys of `f`. *out is NULL (and MG_OK returned) when the file has
 * no tokenizer (no tokenizer.ggml.model key); a present but malformed tokenizer is an error
 * (MG_ERR_MODEL naming the key). n_vocab: rows of the embedding; token ids must fit. The
 * tokenizer may keep pointers into f, which outlives it. */
int mg_tokenizer_load(const gguf_file *f, int32_t n_vocab, mg_tokenizer **out);
void mg_tokenizer_free(mg_tokenizer *t);

#endif

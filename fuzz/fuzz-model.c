/* fuzz-model.c - libFuzzer harness for the model loader (lib/model.c on lib/gguf-read.c, with the
 * tokenizer keys of lib/tokenizer.c): hyper-parameter, shape and type validation.
 *
 * Each input is a GGUF image, loaded with mg_model_load_memory. The size of the input
 * decides a few options deterministically (use_mmap on or off, the kernel table, the CEMA
 * algorithm), so that the corpus reaches each. When it loads, the harness lists the tensors
 * and metadata, tokenizes and detokenizes a short text if there is a tokenizer, then runs
 * mg_eval with a fresh state on a few tokens (a partial chunk, then enough to cross a chunk
 * boundary) and the official statistics window.
 *
 * To keep executions fast and memory bounded, inputs whose hyper-parameters would make the
 * state and its activation buffers larger than STATE_BUDGET bytes are skipped before loading
 * (read with the GGUF reader). Everything else is bounded by the input itself: every weight
 * must be present in the file. */
#include "fuzz-common.h"

#include "gguf.h"
#include "megalodon.h"
#include "model.h"

#define STATE_BUDGET ((uint64_t)8 << 20) /* bytes */
#define MAX_CHUNK 256
#define MAX_TOKENS 24

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_quiet_env();
    setenv("MEGALODON_CEMA_CACHE_MB", "8", 1);
    return 0;
}

static uint64_t key_or_1(const gguf_file *f, const char *key)
{
    uint32_t v = 1;
    if (gguf_get_u32(f, key, &v) || v == 0) v = 1;
    return v;
}

/* 1 when the state of the model described by f would exceed the budget. */
static int too_big(const gguf_file *f)
{
    const uint64_t L = key_or_1(f, "megalodon.block_count"),
                   D = key_or_1(f, "megalodon.embedding_length"),
                   Z = key_or_1(f, "megalodon.z_dim"), E = key_or_1(f, "megalodon.value_dim"),
                   F = key_or_1(f, "megalodon.feed_forward_length"),
                   N = key_or_1(f, "megalodon.cema_ndim"),
                   C = key_or_1(f, "megalodon.chunk_size"),
                   G = key_or_1(f, "megalodon.norm_groups"),
                   V = key_or_1(f, "megalodon.vocab_size");
    uint64_t Vo = V;
    if (gguf_find_key(f, "megalodon.output_size") >= 0) Vo = key_or_1(f, "megalodon.output_size");
    if (C > MAX_CHUNK || L > 4096 || D > (1u << 24) || Z > (1u << 24) || E > (1u << 24) ||
        F > (1u << 24) || N > (1u << 24) || G > (1u << 24) || Vo > (1u << 24))
        return 1;
    /* floats: per layer statistics, CEMA state, keys and values; the activations of 2 chunks;
     * the logits of MAX_TOKENS tokens */
    uint64_t floats = L * (2 * G + 2 * D * N + C * (Z + E)) + 2 * G +
                      2 * C * (5 * D + 3 * Z + 3 * E + 2 * F) + MAX_TOKENS * Vo;
    return floats * 4 > STATE_BUDGET;
}

static void use_tokenizer(const mg_model *m)
{
    static const char text[] = "Hello world! \xe2\x96\x81 caf\xc3\xa9 \xff\n";
    int32_t ids[64];
    size_t n = 0;
    int rc = mg_tokenize(m, text, sizeof text - 1, 1, ids, 64, &n);
    if (!mg_model_has_tokenizer(m)) {
        FUZZ_ASSERT(rc == MG_ERR_UNSUPPORTED, "tokenize without a tokenizer: %d", rc);
        return;
    }
    if (rc == MG_OK) {
        for (size_t i = 0; i < n; i++)
            FUZZ_ASSERT(ids[i] >= 0 && ids[i] < mg_model_hparams(m)->n_vocab,
                        "token %d outside the vocabulary", ids[i]);
        char buf[256];
        size_t len = 0;
        rc = mg_detokenize(m, ids, n, 1, buf, sizeof buf, &len);
        FUZZ_ASSERT(rc == MG_OK, "detokenize of encoded ids: %s", mg_last_error());
        for (size_t i = 0; i < n; i++) (void)mg_token_text(m, ids[i]);
    }
    (void)mg_token_bos(m);
    (void)mg_token_eos(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gguf_file *f = NULL;
    if (gguf_open_memory(data, size, &f)) return 0; /* the loader would fail the same way */
    int skip = too_big(f);
    gguf_close(f);
    if (skip) return 0;

    mg_model_params mp = mg_model_default_params();
    mp.n_threads = 1;
    mp.use_mmap = (size & 1) == 0;
    mp.isa = (size & 2) ? "scalar" : NULL;
    mg_model *m = NULL;
    int rc = mg_model_load_memory(data, size, &mp, &m);
    if (rc) {
        FUZZ_ASSERT(rc < 0 && m == NULL, "failed load left a model (rc %d)", rc);
        return 0;
    }
    const mg_hparams *hp = mg_model_hparams(m);
    FUZZ_ASSERT(mg_hparams_validate(hp) == MG_OK, "loaded model fails validation: %s",
                mg_last_error());
    (void)mg_model_n_params(m);
    (void)mg_model_backend_name(m);
    (void)mg_model_meta_str(m, "general.name");
    (void)mg_model_meta_str(m, "tokenizer.ggml.model");
    for (int64_t i = 0; i < mg_model_n_tensors(m); i++) {
        mg_tensor_info ti;
        FUZZ_ASSERT(mg_model_tensor_info(m, i, &ti) == MG_OK, "tensor_info %lld", (long long)i);
    }
    use_tokenizer(m);

    mg_state_params sp = mg_state_default_params();
    sp.cema = (size & 4) ? MG_CEMA_FFT : (size & 8) ? MG_CEMA_SCAN : MG_CEMA_AUTO;
    mg_state *st = NULL;
    rc = mg_state_new(m, &sp, &st);
    if (rc == MG_OK) {
        const int32_t V = hp->n_vocab, C = hp->chunk_size;
        int32_t tok[MAX_TOKENS];
        /* ids from the input's last bytes (any id in range), then the edges of the range */
        for (int i = 0; i < MAX_TOKENS; i++)
            tok[i] = (int32_t)(data[(size - 1 - (size_t)i % size)] % V);
        tok[0] = 0;
        tok[1] = V - 1;
        size_t n1 = C > 2 ? 2 : 1;                  /* part of a chunk */
        size_t n2 = (size_t)C + 1 < MAX_TOKENS - n1 ? (size_t)C + 1 : MAX_TOKENS - n1;
        float *logits = malloc(sizeof(float) * (size_t)hp->n_output * MAX_TOKENS);
        if (logits) {
            rc = mg_eval(st, tok, n1, logits, MG_LOGITS_ALL);
            FUZZ_ASSERT(rc == MG_OK, "mg_eval of %zu tokens: %s", n1, mg_last_error());
            rc = mg_eval(st, tok + n1, n2, logits, MG_LOGITS_LAST);
            FUZZ_ASSERT(rc == MG_OK, "mg_eval of %zu tokens: %s", n2, mg_last_error());
            FUZZ_ASSERT(mg_state_n_past(st) == n1 + n2, "n_past %llu",
                        (unsigned long long)mg_state_n_past(st));
            int32_t bad = V;
            FUZZ_ASSERT(mg_eval(st, &bad, 1, logits, MG_LOGITS_LAST) == MG_ERR_INVALID_ARG,
                        "id %d accepted", bad);
            rc = mg_state_window_norm_stats(st, tok, n1 + n2);
            FUZZ_ASSERT(rc == MG_OK, "window_norm_stats: %s", mg_last_error());
            free(logits);
        }
        (void)mg_state_size(st);
        mg_state_free(st);
    }
    mg_model_free(m);
    return 0;
}

/* fuzz-tokenizer.c - libFuzzer harness for the tokenizer (lib/tokenizer.c): encoding of
 * arbitrary bytes and decoding of arbitrary id sequences with the LLaMA-2 vocabulary.
 *
 * The model is fuzz/llama2-tokenizer.gguf (made by fuzz/make-seeds from
 * tests/data/llama2-tokenizer/tokenizer.model: the 32000 pieces with their scores and types on
 * a one-layer model of width 1), loaded once at start-up. Input: one flag byte, then the
 * payload.
 *   flags bit 0: add BOS when encoding; bit 1: at_start when decoding;
 *         bits 2-7: the size of a small output buffer for the truncation checks.
 * Encode: the payload as text. Checks: counting with no buffer, every id in range, a short
 * buffer gets a prefix of the same ids, and the round trip decode(encode(text)) == text
 * for any bytes (invalid UTF-8 travels as byte tokens), except that a U+2581 of the text
 * comes back as a space (SentencePiece's space symbol: it does the same).
 * Decode: the payload as little-endian 16-bit values, id = value mod (n_vocab + 2) - 1 (so
 * -1 and n_vocab, which must be refused, occur too). Checks: a short buffer gets a
 * NUL-terminated prefix of the same text and the same full length, and the decoded text
 * round-trips through encode/decode. */
#include "fuzz-common.h"

#include "megalodon.h"

static mg_model *model;
static int32_t n_vocab;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_quiet_env();
    char path[4096];
    const char *e = getenv("MG_FUZZ_TOKENIZER_MODEL");
    if (e && *e)
        snprintf(path, sizeof path, "%s", e);
    else
        snprintf(path, sizeof path, "%s/fuzz/llama2-tokenizer.gguf", fuzz_top_srcdir());
    model = fuzz_load_model(path, "fuzz-tokenizer");
    if (!mg_model_has_tokenizer(model)) {
        fprintf(stderr, "fuzz-tokenizer: %s has no tokenizer\n", path);
        exit(1);
    }
    n_vocab = mg_model_hparams(model)->n_vocab;
    return 0;
}

/* decode(ids) into a malloc'd NUL-terminated buffer; *len its length. */
static char *decode(const int32_t *ids, size_t n, int at_start, size_t *len)
{
    size_t need = 0;
    int rc = mg_detokenize(model, ids, n, at_start, NULL, 0, &need);
    FUZZ_ASSERT(rc == MG_OK, "detokenize (count) of valid ids: %s", mg_last_error());
    char *buf = malloc(need + 1);
    FUZZ_ASSERT(buf, "out of memory");
    size_t len2 = 0;
    rc = mg_detokenize(model, ids, n, at_start, buf, need + 1, &len2);
    FUZZ_ASSERT(rc == MG_OK && len2 == need && buf[need] == '\0',
                "detokenize: rc %d, %zu bytes then %zu", rc, need, len2);
    *len = need;
    return buf;
}

/* encode(text) into a malloc'd array; *n its length. */
static int32_t *encode(const char *text, size_t len, int add_bos, size_t *n)
{
    /* at most one id per byte (U+2581 is a piece), plus the dummy prefix and BOS */
    const size_t cap = len + 2;
    int32_t *ids = malloc(cap * sizeof *ids);
    FUZZ_ASSERT(ids, "out of memory");
    size_t need = 0;
    int rc = mg_tokenize(model, text, len, add_bos, ids, cap, &need);
    FUZZ_ASSERT(rc == MG_OK && need <= len + 1 + (add_bos ? 1 : 0),
                "encode: rc %d (%s), %zu ids for %zu bytes", rc, mg_last_error(), need, len);
    if (len <= 64) { /* counting without a buffer gives the same number */
        size_t count = 0;
        rc = mg_tokenize(model, text, len, add_bos, NULL, 0, &count);
        FUZZ_ASSERT(count == need && (need > 0 ? rc == MG_ERR_INVALID_ARG : rc == MG_OK),
                    "counting: rc %d, %zu ids, then %zu", rc, count, need);
    }
    for (size_t i = 0; i < need; i++)
        FUZZ_ASSERT(ids[i] >= 0 && ids[i] < n_vocab, "id %d at %zu", ids[i], i);
    *n = need;
    return ids;
}

static void round_trip(const char *text, size_t len, int add_bos, size_t small)
{
    size_t n = 0;
    int32_t *ids = encode(text, len, add_bos, &n);
    if (add_bos)
        FUZZ_ASSERT(n >= 1 && ids[0] == mg_token_bos(model), "BOS missing");
    /* a short buffer: the call fails but writes the same first ids */
    if (small < n) {
        int32_t part[64];
        size_t got = 0;
        int rc = mg_tokenize(model, text, len, add_bos, part, small, &got);
        FUZZ_ASSERT(rc == MG_ERR_INVALID_ARG && got == n, "short buffer: rc %d, %zu ids", rc,
                    got);
        FUZZ_ASSERT(memcmp(part, ids, small * sizeof *ids) == 0, "short buffer: other ids");
    }
    /* SentencePiece's own limit: U+2581 in the text is the space symbol, so it decodes as a
     * space; everything else comes back */
    char *want = malloc(len ? len : 1);
    FUZZ_ASSERT(want, "out of memory");
    size_t wl = 0;
    for (size_t i = 0; i < len;) {
        if (i + 3 <= len && memcmp(text + i, "\xe2\x96\x81", 3) == 0) {
            want[wl++] = ' ';
            i += 3;
        } else {
            want[wl++] = text[i++];
        }
    }
    size_t dlen = 0;
    char *back = decode(ids, n, 1, &dlen);
    FUZZ_ASSERT(dlen == wl && memcmp(back, want, wl) == 0,
                "round trip: %zu bytes -> %zu ids -> %zu bytes", len, n, dlen);
    free(back);
    free(want);
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    const int add_bos = data[0] & 1, at_start = (data[0] >> 1) & 1;
    const size_t small = data[0] >> 2; /* 0..63 */
    const char *text = (const char *)data + 1;
    const size_t len = size - 1;

    /* ---- encode the payload */
    round_trip(text, len, add_bos, small);

    /* ---- decode the payload as ids */
    size_t n = len / 2;
    int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
    if (!ids) return 0;
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t v = (uint32_t)data[1 + 2 * i] | (uint32_t)data[2 + 2 * i] << 8;
        ids[i] = (int32_t)(v % (uint32_t)(n_vocab + 2)) - 1;
        if (ids[i] < 0 || ids[i] >= n_vocab) bad = 1;
    }
    if (bad) {
        char buf[8];
        size_t l = 99;
        int rc = mg_detokenize(model, ids, n, at_start, buf, sizeof buf, &l);
        FUZZ_ASSERT(rc == MG_ERR_INVALID_ARG && l == 0 && buf[0] == '\0',
                    "out-of-range id accepted: rc %d", rc);
        free(ids);
        return 0;
    }
    size_t dlen = 0;
    char *text2 = decode(ids, n, at_start, &dlen);
    for (size_t i = 0; i < n; i++)
        FUZZ_ASSERT(mg_token_text(model, ids[i]) != NULL, "no text for id %d", ids[i]);
    /* a short buffer: a NUL-terminated prefix and the full length */
    char part[64];
    size_t plen = 0;
    int rc = mg_detokenize(model, ids, n, at_start, part, small, &plen);
    FUZZ_ASSERT(rc == MG_OK && plen == dlen, "short decode: rc %d, %zu vs %zu", rc, plen, dlen);
    if (small > 0) {
        size_t k = dlen < small - 1 ? dlen : small - 1;
        FUZZ_ASSERT(memcmp(part, text2, k) == 0 && part[k] == '\0', "short decode: prefix");
    }
    /* the decoded text is a text like any other (bounded: pieces are up to 16 bytes) */
    if (dlen <= 1024) round_trip(text2, dlen, 0, small);
    free(text2);
    free(ids);
    return 0;
}

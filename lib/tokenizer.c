/* tokenizer.c - the tokenizer stored in a model file (docs/tokenizer.md).
 *
 * "llama": SentencePiece BPE with byte fallback, encoding exactly as SentencePiece's
 * bpe_model.cc and sentencepiece_processor.cc do for a model with the identity normalizer,
 * add_dummy_prefix on and remove_extra_whitespaces off (LLaMA / LLaMA-2):
 *   1. every ' ' becomes U+2581, and U+2581 is put in front (add_space_prefix);
 *   2. the text is split into symbols: the longest user-defined piece at the position
 *      (frozen: never merged), else one UTF-8 character, else one invalid byte;
 *   3. while some adjacent pair of symbols concatenates to a normal, user-defined or unused
 *      piece, the pair whose piece has the highest score (ties: the leftmost) is merged
 *      (a priority queue of candidate pairs; the text is cut where no piece can span, and
 *      each part is merged on its own, which gives the same result faster);
 *   4. each symbol becomes its id; merged unused pieces are split back into the pair they
 *      were last made of; a symbol that is not a piece (or is the unknown piece) becomes its
 *      bytes' <0xXX> tokens, or, without byte tokens, the unknown id (one per run).
 * The one deliberate difference from SentencePiece: it turns each invalid UTF-8 byte into
 * U+FFFD, we keep the byte (as its byte token), so that decoding gives the input back.
 *
 * "byte": ids 0..255 are the bytes, ids from 256 are special (control) tokens. */
#include "config.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "model.h"
#include "tokenizer.h"

/* tokenizer.ggml.token_type values (llama.cpp's numbering) */
enum {
    TT_NORMAL = 1,
    TT_UNKNOWN = 2,
    TT_CONTROL = 3,
    TT_USER = 4,
    TT_UNUSED = 5,
    TT_BYTE = 6
};

enum { KIND_LLAMA = 1, KIND_BYTE = 2 };

#define MAX_PIECE_BYTES 1024 /* longest accepted piece */

struct mg_tokenizer {
    int kind;
    int32_t n;           /* vocabulary entries */
    const char **text;   /* n NUL-terminated pieces (in the gguf_file or in `names`) */
    uint32_t *len;       /* their lengths in bytes */
    const float *score;  /* n (llama) */
    uint8_t *type;       /* n, TT_* */
    uint8_t *byte_val;   /* n: the byte of a TT_BYTE piece */
    int32_t byte_id[256];
    int has_bytes;       /* all 256 byte pieces are present */
    int32_t bos, eos, unk, pad;
    int add_space_prefix;
    int n_user;
    int n_unused_formed; /* unused pieces that a merge can form (then split back) */
    uint32_t max_user_len;
    uint8_t user_first[256]; /* bytes that begin a user-defined piece */
    struct slot { uint32_t hash; int32_t id; } *slots; /* open addressing: piece -> id,
                                                           id -1 = empty */
    uint32_t mask;
    uint64_t *pairs;     /* hash set of the character pairs adjacent in mergeable pieces */
    uint32_t pairs_mask;
    char *names;         /* "byte" without tokens: the generated "<0xXX>" names */
};

static const char SPACE_SYM[] = "\xe2\x96\x81"; /* U+2581 */
static const char UNK_SURFACE[] = " \xe2\x81\x87 "; /* SentencePiece's " ⁇ " */

/* ------------------------------------------------------------------ helpers */

/* Length of the valid UTF-8 character at s (n bytes available), 0 if invalid: the rules of
 * SentencePiece's DecodeUTF8 (no overlong forms, no surrogates, at most U+10FFFF). */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    if (c < 0x80) return 1;
    if ((c & 0xE0) == 0xC0) {
        if (n < 2 || (s[1] & 0xC0) != 0x80) return 0;
        unsigned cp = ((c & 0x1Fu) << 6) | (s[1] & 0x3Fu);
        return cp >= 0x80 ? 2 : 0;
    }
    if ((c & 0xF0) == 0xE0) {
        if (n < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80) return 0;
        unsigned cp = ((c & 0x0Fu) << 12) | ((s[1] & 0x3Fu) << 6) | (s[2] & 0x3Fu);
        return cp >= 0x800 && (cp < 0xD800 || cp > 0xDFFF) ? 3 : 0;
    }
    if ((c & 0xF8) == 0xF0) {
        if (n < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80)
            return 0;
        unsigned cp = ((c & 0x07u) << 18) | ((s[1] & 0x3Fu) << 12) | ((s[2] & 0x3Fu) << 6) |
                      (s[3] & 0x3Fu);
        return cp >= 0x10000 && cp <= 0x10FFFF ? 4 : 0;
    }
    return 0;
}

static int utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    while (n) {
        size_t k = utf8_len(p, n);
        if (!k) return 0;
        p += k;
        n -= k;
    }
    return 1;
}

static uint32_t hash_bytes(const char *s, size_t n)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 16777619u;
    }
    return h;
}

static int32_t lookup(const mg_tokenizer *t, const char *s, size_t n)
{
    uint32_t h = hash_bytes(s, n);
    for (uint32_t i = h & t->mask;; i = (i + 1) & t->mask) {
        int32_t id = t->slots[i].id;
        if (id < 0) return -1;
        if (t->slots[i].hash == h && t->len[id] == n && memcmp(t->text[id], s, n) == 0) return id;
    }
}

/* "<0xXX>" (upper-case hex, as SentencePiece writes them) -> 0..255, or -1. */
static int parse_byte_piece(const char *s, size_t n)
{
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

void mg_tokenizer_free(mg_tokenizer *t)
{
    if (!t) return;
    free(t->text);
    free(t->len);
    free(t->type);
    free(t->byte_val);
    free(t->slots);
    free(t->pairs);
    free(t->names);
    free(t);
}

/* ------------------------------------------------------------------ loading */

static int model_err(void)
{
    /* the GGUF getters name the key; report it as an invalid model */
    return mg_seterr(MG_ERR_MODEL, "%s", mg_last_error());
}

/* Index of array key `key` with elements of type `elem`; -1 in *idx when absent. */
static int find_array(const gguf_file *f, const char *key, uint32_t elem, const char *elem_name,
                      int required, int64_t *idx, uint64_t *n)
{
    *idx = gguf_find_key(f, key);
    *n = 0;
    if (*idx < 0) {
        if (required) return mg_seterr(MG_ERR_MODEL, "tokenizer: key '%s' is missing", key);
        return MG_OK;
    }
    if (gguf_kv_type(f, *idx) != GGUF_TYPE_ARRAY || gguf_arr_type(f, *idx) != elem)
        return mg_seterr(MG_ERR_MODEL, "tokenizer: key '%s' must be an array of %s", key,
                         elem_name);
    *n = gguf_arr_n(f, *idx);
    return MG_OK;
}

/* An optional token id key: absent = -1; present: in [0, n) (or -1 as a signed value). */
static int read_id_key(const gguf_file *f, const char *key, int32_t n, int32_t *out)
{
    *out = -1;
    if (gguf_find_key(f, key) < 0) return MG_OK;
    int64_t v;
    if (gguf_get_i64(f, key, &v)) return model_err();
    if (v == -1) return MG_OK;
    if (v < 0 || v >= n)
        return mg_seterr(MG_ERR_MODEL, "tokenizer: %s = %lld is out of range [0, %d)", key,
                         (long long)v, (int)n);
    *out = (int32_t)v;
    return MG_OK;
}

/* The code point of the valid character of k bytes at s. */
static uint32_t utf8_cp(const unsigned char *s, size_t k)
{
    switch (k) {
    case 1: return s[0];
    case 2: return (s[0] & 0x1Fu) << 6 | (s[1] & 0x3Fu);
    case 3: return (s[0] & 0x0Fu) << 12 | (s[1] & 0x3Fu) << 6 | (s[2] & 0x3Fu);
    default:
        return (s[0] & 0x07u) << 18 | (s[1] & 0x3Fu) << 12 | (s[2] & 0x3Fu) << 6 | (s[3] & 0x3Fu);
    }
}

static uint64_t pair_key(uint32_t a, uint32_t b) { return ((uint64_t)a << 21 | b) + 1; }

static uint32_t pair_slot(uint64_t key, uint32_t mask)
{
    return (uint32_t)((key * 0x9E3779B97F4A7C15ull) >> 32) & mask;
}

static int pair_known(const mg_tokenizer *t, uint32_t a, uint32_t b)
{
    uint64_t key = pair_key(a, b);
    for (uint32_t i = pair_slot(key, t->pairs_mask);; i = (i + 1) & t->pairs_mask) {
        if (t->pairs[i] == key) return 1;
        if (t->pairs[i] == 0) return 0;
    }
}

static int mergeable(int type) { return type == TT_NORMAL || type == TT_USER || type == TT_UNUSED; }

/* The set of character pairs (a, b) such that some piece that merges can produce has b right
 * after a: text between two characters that form no such pair is never merged across, so
 * the BPE can run on the pieces of text between those places one at a time (same result,
 * small heaps: several times faster on long texts). */
static int build_pairs(mg_tokenizer *t)
{
    uint64_t total = 0;
    for (int32_t id = 0; id < t->n; id++)
        if (mergeable(t->type[id])) total += t->len[id];
    uint32_t cap = 64;
    while (cap < 2 * total) cap *= 2;
    t->pairs = calloc(cap, sizeof *t->pairs);
    if (!t->pairs) return mg_seterr(MG_ERR_NOMEM, "out of memory loading the tokenizer");
    t->pairs_mask = cap - 1;
    for (int32_t id = 0; id < t->n; id++) {
        if (!mergeable(t->type[id])) continue;
        const unsigned char *s = (const unsigned char *)t->text[id];
        size_t n = t->len[id], k = utf8_len(s, n);
        uint32_t prev = utf8_cp(s, k);
        for (size_t j = k; j < n; j += k) {
            k = utf8_len(s + j, n - j);
            uint32_t cp = utf8_cp(s + j, k);
            uint64_t key = pair_key(prev, cp);
            uint32_t i = pair_slot(key, t->pairs_mask);
            while (t->pairs[i] && t->pairs[i] != key) i = (i + 1) & t->pairs_mask;
            t->pairs[i] = key;
            prev = cp;
        }
    }
    return MG_OK;
}

/* A symbol that can exist during the merges: one character or a mergeable piece. */
static int symbol_possible(const mg_tokenizer *t, const char *s, size_t n)
{
    if (utf8_len((const unsigned char *)s, n) == n) return 1;
    int32_t id = lookup(t, s, n);
    return id >= 0 && mergeable(t->type[id]);
}

/* Count the unused pieces that two possible symbols concatenate to. Only those are ever
 * split back, and only then does the order of all merges matter (see encode_spm). Unused
 * placeholders such as "<unused_0>" appended to a vocabulary are never formed. */
static void count_unused_formed(mg_tokenizer *t)
{
    for (int32_t id = 0; id < t->n; id++) {
        if (t->type[id] != TT_UNUSED) continue;
        const char *s = t->text[id];
        size_t n = t->len[id];
        for (size_t k = utf8_len((const unsigned char *)s, n); k < n;
             k += utf8_len((const unsigned char *)s + k, n - k)) {
            if (symbol_possible(t, s, k) && symbol_possible(t, s + k, n - k)) {
                t->n_unused_formed++;
                break;
            }
        }
    }
}

static int build_hash(mg_tokenizer *t)
{
    uint32_t cap = 64;
    while (cap < 2u * (uint32_t)t->n) cap *= 2;
    t->slots = malloc(sizeof *t->slots * cap);
    if (!t->slots) return mg_seterr(MG_ERR_NOMEM, "out of memory loading the tokenizer");
    for (uint32_t i = 0; i < cap; i++) t->slots[i].id = -1;
    t->mask = cap - 1;
    for (int32_t id = 0; id < t->n; id++) {
        uint32_t h = hash_bytes(t->text[id], t->len[id]), i = h & t->mask;
        while (t->slots[i].id >= 0) {
            int32_t o = t->slots[i].id;
            if (t->len[o] == t->len[id] && memcmp(t->text[o], t->text[id], t->len[id]) == 0)
                return mg_seterr(MG_ERR_MODEL,
                                 "tokenizer.ggml.tokens: piece '%s' appears twice (ids %d and %d)",
                                 t->text[id], (int)o, (int)id);
            i = (i + 1) & t->mask;
        }
        t->slots[i].hash = h;
        t->slots[i].id = id;
    }
    return MG_OK;
}

/* tokenizer.ggml.model: "llama" or "byte" */
static int read_kind(const gguf_file *f, mg_tokenizer *t)
{
    const char *name;
    uint64_t name_len;
    if (gguf_get_str(f, "tokenizer.ggml.model", &name, &name_len)) return model_err();
    if (name_len == 5 && memcmp(name, "llama", 5) == 0)
        t->kind = KIND_LLAMA;
    else if (name_len == 4 && memcmp(name, "byte", 4) == 0)
        t->kind = KIND_BYTE;
    else
        return mg_seterr(MG_ERR_MODEL,
                         "tokenizer.ggml.model = '%.*s' is not supported (this library reads "
                         "'llama' and 'byte' tokenizers)",
                         (int)(name_len > 64 ? 64 : name_len), name);
    return MG_OK;
}

/* The n pieces: tokenizer.ggml.tokens (array key ki), or without it (a "byte" tokenizer)
 * the names <0x00>..<0xFF>. */
static int read_pieces(const gguf_file *f, int64_t ki, uint64_t n, mg_tokenizer *t)
{
    if (ki >= 0) {
        for (uint64_t i = 0; i < n; i++) {
            uint64_t l = 0;
            const char *s = gguf_arr_str(f, ki, i, &l);
            if (!s || l == 0)
                return mg_seterr(MG_ERR_MODEL, "tokenizer.ggml.tokens[%llu] is empty",
                                 (unsigned long long)i);
            if (l > MAX_PIECE_BYTES)
                return mg_seterr(MG_ERR_MODEL,
                                 "tokenizer.ggml.tokens[%llu] is %llu bytes long (at most %d)",
                                 (unsigned long long)i, (unsigned long long)l, MAX_PIECE_BYTES);
            if (memchr(s, 0, (size_t)l))
                return mg_seterr(MG_ERR_MODEL, "tokenizer.ggml.tokens[%llu] contains a NUL byte",
                                 (unsigned long long)i);
            if (!utf8_valid(s, (size_t)l))
                return mg_seterr(MG_ERR_MODEL, "tokenizer.ggml.tokens[%llu] is not valid UTF-8",
                                 (unsigned long long)i);
            t->text[i] = s;
            t->len[i] = (uint32_t)l;
        }
    } else {
        if (!(t->names = malloc(256 * 7)))
            return mg_seterr(MG_ERR_NOMEM, "out of memory loading the tokenizer");
        for (int b = 0; b < 256; b++) {
            snprintf(t->names + 7 * b, 7, "<0x%02X>", b);
            t->text[b] = t->names + 7 * b;
            t->len[b] = 6;
        }
    }

    return MG_OK;
}

/* The token types (tokenizer.ggml.token_type, array key kt, or the "byte" tokenizer's
 * without it): the byte pieces, the unknown token (*first_unk) and the user-defined pieces. */
static int read_types(const gguf_file *f, int64_t kt, uint64_t n, int llama, mg_tokenizer *t,
                      int32_t *first_unk)
{
    const int32_t *ty = kt >= 0 ? gguf_arr_data(f, kt) : NULL;
    for (int b = 0; b < 256; b++) t->byte_id[b] = -1;
    int n_bytes = 0, n_unk = 0;
    *first_unk = -1;
    for (uint64_t i = 0; i < n; i++) {
        int32_t v;
        if (ty)
            v = ty[i];
        else
            v = i < 256 ? TT_BYTE : TT_CONTROL; /* "byte" without token_type */
        if (v < TT_NORMAL || v > TT_BYTE)
            return mg_seterr(MG_ERR_MODEL,
                             "tokenizer.ggml.token_type[%llu] = %d is not a known type (1..6)",
                             (unsigned long long)i, (int)v);
        if (!llama) {
            int want = i < 256 ? TT_BYTE : TT_CONTROL;
            if (v != want)
                return mg_seterr(MG_ERR_MODEL,
                                 "tokenizer.ggml.token_type[%llu] = %d: a 'byte' tokenizer has "
                                 "byte tokens (6) for ids 0..255 and control tokens (3) after",
                                 (unsigned long long)i, (int)v);
        }
        t->type[i] = (uint8_t)v;
        if (v == TT_BYTE) {
            int b = parse_byte_piece(t->text[i], t->len[i]);
            if (b < 0)
                return mg_seterr(MG_ERR_MODEL,
                                 "tokenizer.ggml.tokens[%llu] = '%s' has type byte but is not "
                                 "of the form <0xXX>",
                                 (unsigned long long)i, t->text[i]);
            if (!llama && (uint64_t)b != i)
                return mg_seterr(MG_ERR_MODEL,
                                 "tokenizer.ggml.tokens[%llu] = '%s': in a 'byte' tokenizer id "
                                 "%llu is <0x%02llX>",
                                 (unsigned long long)i, t->text[i], (unsigned long long)i,
                                 (unsigned long long)i);
            if (t->byte_id[b] >= 0)
                return mg_seterr(MG_ERR_MODEL, "tokenizer.ggml.tokens: byte piece '%s' appears "
                                 "twice (ids %d and %llu)",
                                 t->text[i], (int)t->byte_id[b], (unsigned long long)i);
            t->byte_id[b] = (int32_t)i;
            t->byte_val[i] = (uint8_t)b;
            n_bytes++;
        } else if (v == TT_UNKNOWN) {
            if (*first_unk < 0) *first_unk = (int32_t)i;
            n_unk++;
        } else if (v == TT_USER) {
            t->n_user++;
            if (t->len[i] > t->max_user_len) t->max_user_len = t->len[i];
            t->user_first[(unsigned char)t->text[i][0]] = 1;
        }
    }
    if (n_bytes != 0 && n_bytes != 256) {
        int b = 0;
        while (t->byte_id[b] >= 0) b++;
        return mg_seterr(MG_ERR_MODEL,
                         "tokenizer.ggml.token_type: %d byte tokens, but a byte-fallback "
                         "vocabulary has all 256 (<0x%02X> is missing)",
                         n_bytes, b);
    }
    t->has_bytes = n_bytes == 256;
    if (n_unk > 1)
        return mg_seterr(MG_ERR_MODEL, "tokenizer.ggml.token_type: %d unknown tokens (at most 1)",
                         n_unk);

    return MG_OK;
}

static int load(const gguf_file *f, int32_t n_vocab, mg_tokenizer *t)
{
    int rc = read_kind(f, t);
    if (rc) return rc;
    const int llama = t->kind == KIND_LLAMA;

    int64_t ki, ks, kt;
    uint64_t nt, ns, ntt;
    if ((rc = find_array(f, "tokenizer.ggml.tokens", GGUF_TYPE_STRING, "strings", llama, &ki, &nt)))
        return rc;
    if ((rc = find_array(f, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, "float32", llama, &ks,
                         &ns)))
        return rc;
    if ((rc = find_array(f, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, "int32", llama, &kt,
                         &ntt)))
        return rc;
    uint64_t n = ki >= 0 ? nt : 256;
    if (n == 0) return mg_seterr(MG_ERR_MODEL, "tokenizer.ggml.tokens is empty");
    if (!llama && n < 256)
        return mg_seterr(MG_ERR_MODEL,
                         "tokenizer.ggml.tokens has %llu entries: a 'byte' tokenizer has at "
                         "least 256 (the bytes)",
                         (unsigned long long)n);
    if (n > (uint64_t)n_vocab)
        return mg_seterr(MG_ERR_MODEL,
                         "tokenizer.ggml.tokens has %llu entries, more than the model's "
                         "vocabulary of %d",
                         (unsigned long long)n, (int)n_vocab);
    if (ks >= 0 && ns != n)
        return mg_seterr(MG_ERR_MODEL,
                         "tokenizer.ggml.scores has %llu entries, tokenizer.ggml.tokens %llu",
                         (unsigned long long)ns, (unsigned long long)n);
    if (kt >= 0 && ntt != n)
        return mg_seterr(MG_ERR_MODEL,
                         "tokenizer.ggml.token_type has %llu entries, tokenizer.ggml.tokens "
                         "%llu",
                         (unsigned long long)ntt, (unsigned long long)n);
    t->n = (int32_t)n;
    t->text = calloc(n, sizeof *t->text);
    t->len = calloc(n, sizeof *t->len);
    t->type = calloc(n, 1);
    t->byte_val = calloc(n, 1);
    if (!t->text || !t->len || !t->type || !t->byte_val)
        return mg_seterr(MG_ERR_NOMEM, "out of memory loading the tokenizer");

    if ((rc = read_pieces(f, ki, n, t))) return rc;

    /* scores */
    if (ks >= 0) {
        const float *sc = gguf_arr_data(f, ks);
        for (uint64_t i = 0; i < n; i++)
            if (!isfinite(sc[i]))
                return mg_seterr(MG_ERR_MODEL, "tokenizer.ggml.scores[%llu] is not finite",
                                 (unsigned long long)i);
        t->score = sc;
    }

    int32_t first_unk;
    if ((rc = read_types(f, kt, n, llama, t, &first_unk))) return rc;

    /* special ids */
    if ((rc = read_id_key(f, "tokenizer.ggml.bos_token_id", t->n, &t->bos))) return rc;
    if ((rc = read_id_key(f, "tokenizer.ggml.eos_token_id", t->n, &t->eos))) return rc;
    if ((rc = read_id_key(f, "tokenizer.ggml.unknown_token_id", t->n, &t->unk))) return rc;
    if ((rc = read_id_key(f, "tokenizer.ggml.padding_token_id", t->n, &t->pad))) return rc;
    if (t->unk < 0) t->unk = first_unk;
    if (llama && !t->has_bytes && t->unk < 0)
        return mg_seterr(MG_ERR_MODEL, "tokenizer: a 'llama' tokenizer needs byte tokens or an "
                         "unknown token (tokenizer.ggml.unknown_token_id)");

    /* flags */
    int add_bos = 0;
    if (gguf_get_bool_opt(f, "tokenizer.ggml.add_bos_token", &add_bos)) return model_err();
    int asp = llama;
    if (gguf_get_bool_opt(f, "tokenizer.ggml.add_space_prefix", &asp)) return model_err();
    if (!llama && asp)
        return mg_seterr(MG_ERR_MODEL,
                         "tokenizer.ggml.add_space_prefix is true, which a 'byte' tokenizer "
                         "does not support");
    t->add_space_prefix = asp ? 1 : 0;

    if ((rc = build_hash(t))) return rc;
    if (!llama) return MG_OK;
    count_unused_formed(t);
    return build_pairs(t);
}

int mg_tokenizer_load(const gguf_file *f, int32_t n_vocab, mg_tokenizer **out)
{
    if (!out) return mg_seterr(MG_ERR_INVALID_ARG, "mg_tokenizer_load: out is NULL");
    *out = NULL;
    if (!f) return mg_seterr(MG_ERR_INVALID_ARG, "mg_tokenizer_load: file is NULL");
    if (gguf_find_key(f, "tokenizer.ggml.model") < 0) return MG_OK;
    mg_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return mg_seterr(MG_ERR_NOMEM, "out of memory loading the tokenizer");
    int rc = load(f, n_vocab, t);
    if (rc) {
        mg_tokenizer_free(t);
        return rc;
    }
    *out = t;
    return MG_OK;
}

/* ------------------------------------------------------------------ encoding */

typedef struct {
    int32_t *buf;
    size_t max, n;
} sink;

static void emit(sink *s, int32_t id)
{
    if (s->n < s->max) s->buf[s->n] = id;
    s->n++;
}

typedef struct {
    int32_t prev, next; /* neighbours in the symbol list, -1 at the ends */
    uint32_t start, len;/* bytes of the normalized text; len 0 = merged into its left */
    uint32_t cp;        /* the initial character's code point; NO_CP: an invalid byte or a
                           user-defined piece (frozen: never merged) */
    int32_t id;         /* the piece, once merged; -2: not looked up */
} symbol;

#define NO_CP 0xFFFFFFFFu

typedef struct {
    float score;
    int32_t left, right;
    uint32_t size;      /* bytes of the merged piece when the pair was found */
    int32_t id;         /* the merged piece */
} pair;

typedef struct {
    const mg_tokenizer *t;
    const char *text;   /* normalized */
    symbol *sym;
    pair *heap;
    size_t n_heap, cap_heap;
    uint32_t *rev_left; /* unused piece id -> left part's length at its last sighting */
    int prev_unk;
    sink *out;
} encoder;

/* heap order: higher score first, then the leftmost pair */
static int pair_before(const pair *a, const pair *b)
{
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static int heap_push(encoder *e, pair p)
{
    if (e->n_heap == e->cap_heap) {
        size_t cap = e->cap_heap ? e->cap_heap * 2 : 256;
        pair *h = realloc(e->heap, cap * sizeof *h);
        if (!h) return mg_seterr(MG_ERR_NOMEM, "out of memory while tokenizing");
        e->heap = h;
        e->cap_heap = cap;
    }
    size_t i = e->n_heap++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!pair_before(&p, &e->heap[parent])) break;
        e->heap[i] = e->heap[parent];
        i = parent;
    }
    e->heap[i] = p;
    return MG_OK;
}

static pair heap_pop(encoder *e)
{
    pair top = e->heap[0];
    pair last = e->heap[--e->n_heap];
    size_t n = e->n_heap, i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && pair_before(&e->heap[c + 1], &e->heap[c])) c++;
        if (!pair_before(&e->heap[c], &last)) break;
        e->heap[i] = e->heap[c];
        i = c;
    }
    if (n) e->heap[i] = last;
    return top;
}

static int maybe_add_pair(encoder *e, int32_t l, int32_t r)
{
    if (l < 0 || r < 0) return MG_OK;
    const symbol *sl = &e->sym[l], *sr = &e->sym[r];
    if (sl->cp == NO_CP || sr->cp == NO_CP) return MG_OK; /* frozen (or never a piece) */
    uint32_t size = sl->len + sr->len;
    if (size > MAX_PIECE_BYTES) return MG_OK;
    const mg_tokenizer *t = e->t;
    int32_t id = lookup(t, e->text + sl->start, size);
    if (id < 0) return MG_OK;
    int ty = t->type[id];
    if (ty != TT_NORMAL && ty != TT_USER && ty != TT_UNUSED) return MG_OK;
    pair p = {t->score[id], l, r, size, id};
    int rc = heap_push(e, p);
    if (ty == TT_UNUSED) e->rev_left[id] = sl->len;
    return rc;
}

static void emit_piece(encoder *e, int32_t id, uint32_t start, uint32_t len)
{
    const mg_tokenizer *t = e->t;
    if (id < 0 || t->type[id] == TT_UNKNOWN) {
        if (t->has_bytes) {
            for (uint32_t i = 0; i < len; i++)
                emit(e->out, t->byte_id[(unsigned char)e->text[start + i]]);
        } else if (!e->prev_unk) {
            emit(e->out, t->unk);
        }
        e->prev_unk = 1;
    } else {
        emit(e->out, id);
        e->prev_unk = 0;
    }
}

/* Split merged unused pieces back (SentencePiece's resegment). id: the piece, -2 unknown. */
static void resegment(encoder *e, uint32_t start, uint32_t len, int32_t id)
{
    const mg_tokenizer *t = e->t;
    if (id == -2) id = lookup(t, e->text + start, len);
    if (id >= 0 && t->type[id] == TT_UNUSED && e->rev_left && e->rev_left[id]) {
        uint32_t l = e->rev_left[id];
        resegment(e, start, l, -2);
        resegment(e, start + l, len - l, -2);
        return;
    }
    emit_piece(e, id, start, len);
}

static int encode_spm(const mg_tokenizer *t, const char *in, size_t len, sink *out)
{
    if (len == 0) return MG_OK;
    size_t spaces = 0;
    for (size_t i = 0; i < len; i++) spaces += in[i] == ' ';
    const size_t prefix = t->add_space_prefix ? 3 : 0;
    if (len > ((size_t)INT32_MAX - prefix) / 3)
        return mg_seterr(MG_ERR_INVALID_ARG, "mg_tokenize: text of %zu bytes is too long", len);
    const size_t nlen = prefix + len + 2 * spaces;

    encoder e;
    memset(&e, 0, sizeof e);
    e.t = t;
    e.out = out;
    char *text = malloc(nlen);
    e.sym = malloc(sizeof *e.sym * nlen);
    if (t->n_unused_formed) e.rev_left = calloc((size_t)t->n, sizeof *e.rev_left);
    int rc = MG_OK;
    if (!text || !e.sym || (t->n_unused_formed && !e.rev_left)) {
        rc = mg_seterr(MG_ERR_NOMEM, "out of memory while tokenizing");
        goto done;
    }
    e.text = text;

    /* normalize: dummy prefix, ' ' -> U+2581 */
    size_t k = 0;
    if (prefix) {
        memcpy(text, SPACE_SYM, 3);
        k = 3;
    }
    for (size_t i = 0; i < len; i++) {
        if (in[i] == ' ') {
            memcpy(text + k, SPACE_SYM, 3);
            k += 3;
        } else {
            text[k++] = in[i];
        }
    }

    /* split into characters (user-defined pieces whole and frozen; invalid bytes alone) */
    int32_t ns = 0;
    for (size_t pos = 0; pos < nlen;) {
        size_t rest = nlen - pos, mb = 0;
        uint32_t cp = NO_CP;
        if (t->n_user && t->user_first[(unsigned char)text[pos]]) {
            size_t maxl = t->max_user_len < rest ? t->max_user_len : rest;
            for (size_t l = maxl; l > 0; l--) {
                int32_t id = lookup(t, text + pos, l);
                if (id >= 0 && t->type[id] == TT_USER) {
                    mb = l;
                    break;
                }
            }
        }
        if (!mb) {
            mb = utf8_len((const unsigned char *)text + pos, rest);
            if (mb)
                cp = utf8_cp((const unsigned char *)text + pos, mb);
            else
                mb = 1;
        }
        symbol *s = &e.sym[ns++];
        s->start = (uint32_t)pos;
        s->len = (uint32_t)mb;
        s->cp = cp;
        s->id = -2;
        pos += mb;
    }

    /* BPE on each run of symbols that no merge can cross (one run when merges can form
     * unused pieces: which split of one is undone depends on the order of all merges) */
    for (int32_t a = 0, b; a < ns; a = b) {
        b = a + 1;
        if (!t->n_unused_formed)
            while (b < ns && e.sym[b - 1].cp != NO_CP && e.sym[b].cp != NO_CP &&
                   pair_known(t, e.sym[b - 1].cp, e.sym[b].cp))
                b++;
        else
            b = ns;
        for (int32_t i = a; i < b; i++) {
            e.sym[i].prev = i > a ? i - 1 : -1;
            e.sym[i].next = i + 1 < b ? i + 1 : -1;
        }
        e.n_heap = 0;
        for (int32_t i = a + 1; i < b; i++)
            if ((rc = maybe_add_pair(&e, i - 1, i))) goto done;
        while (e.n_heap) {
            pair top = heap_pop(&e);
            symbol *l = &e.sym[top.left], *r = &e.sym[top.right];
            if (l->len == 0 || r->len == 0 || l->len + r->len != top.size) continue; /* stale */
            l->len += r->len;
            l->id = top.id;
            l->next = r->next;
            if (r->next >= 0) e.sym[r->next].prev = top.left;
            r->len = 0;
            if ((rc = maybe_add_pair(&e, l->prev, top.left))) goto done;
            if ((rc = maybe_add_pair(&e, top.left, l->next))) goto done;
        }
        for (int32_t i = a; i != -1; i = e.sym[i].next)
            resegment(&e, e.sym[i].start, e.sym[i].len, e.sym[i].id);
    }

done:
    free(text);
    free(e.sym);
    free(e.heap);
    free(e.rev_left);
    return rc;
}

/* ------------------------------------------------------------------ public calls */

int mg_model_has_tokenizer(const mg_model *model) { return model && model->tok ? 1 : 0; }

int32_t mg_token_bos(const mg_model *model)
{
    return model && model->tok ? model->tok->bos : -1;
}

int32_t mg_token_eos(const mg_model *model)
{
    return model && model->tok ? model->tok->eos : -1;
}

int mg_tokenize(const mg_model *model, const char *text, size_t len, int add_bos,
                int32_t *tokens, size_t n_max, size_t *n_out)
{
    if (n_out) *n_out = 0;
    if (!model) return mg_seterr(MG_ERR_INVALID_ARG, "mg_tokenize: model is NULL");
    if (!n_out) return mg_seterr(MG_ERR_INVALID_ARG, "mg_tokenize: n_out is NULL");
    if (!text && len) return mg_seterr(MG_ERR_INVALID_ARG, "mg_tokenize: text is NULL");
    if (!tokens && n_max)
        return mg_seterr(MG_ERR_INVALID_ARG, "mg_tokenize: tokens is NULL but n_max is %zu",
                         n_max);
    const mg_tokenizer *t = model->tok;
    if (!t) return mg_seterr(MG_ERR_UNSUPPORTED, "mg_tokenize: the model has no tokenizer");
    sink s = {tokens, n_max, 0};
    if (add_bos && t->bos >= 0) emit(&s, t->bos);
    if (t->kind == KIND_BYTE) {
        for (size_t i = 0; i < len; i++) emit(&s, (int32_t)(unsigned char)text[i]);
    } else {
        int rc = encode_spm(t, text, len, &s);
        if (rc) return rc;
    }
    *n_out = s.n;
    if (s.n > n_max)
        return mg_seterr(MG_ERR_INVALID_ARG,
                         "mg_tokenize: the text needs %zu tokens but the buffer holds %zu", s.n,
                         n_max);
    return MG_OK;
}

const char *mg_token_text(const mg_model *model, int32_t token)
{
    if (!model || !model->tok) {
        mg_seterr(MG_ERR_UNSUPPORTED, "mg_token_text: the model has no tokenizer");
        return NULL;
    }
    if (token < 0 || token >= model->tok->n) {
        mg_seterr(MG_ERR_INVALID_ARG, "mg_token_text: token %d is out of range [0, %d)",
                  (int)token, (int)model->tok->n);
        return NULL;
    }
    return model->tok->text[token];
}

typedef struct {
    char *buf;
    size_t size, n;
} text_out;

static void put(text_out *o, const char *s, size_t n)
{
    if (o->size && o->n < o->size - 1) {
        size_t room = o->size - 1 - o->n;
        memcpy(o->buf + o->n, s, n < room ? n : room);
    }
    o->n += n;
}

int mg_detokenize(const mg_model *model, const int32_t *tokens, size_t n, int at_start,
                  char *buf, size_t size, size_t *len)
{
    if (len) *len = 0;
    if (buf && size) buf[0] = '\0';
    if (!model) return mg_seterr(MG_ERR_INVALID_ARG, "mg_detokenize: model is NULL");
    if (!tokens && n) return mg_seterr(MG_ERR_INVALID_ARG, "mg_detokenize: tokens is NULL");
    if (!buf && size)
        return mg_seterr(MG_ERR_INVALID_ARG, "mg_detokenize: buf is NULL but size is %zu", size);
    const mg_tokenizer *t = model->tok;
    if (!t) return mg_seterr(MG_ERR_UNSUPPORTED, "mg_detokenize: the model has no tokenizer");
    for (size_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= t->n)
            return mg_seterr(MG_ERR_INVALID_ARG,
                             "mg_detokenize: tokens[%zu] = %d is out of range [0, %d)", i,
                             (int)tokens[i], (int)t->n);
    text_out o = {buf, size, 0};
    int strip = at_start && t->add_space_prefix; /* drop the dummy prefix's space */
    for (size_t i = 0; i < n; i++) {
        int32_t id = tokens[i];
        switch (t->type[id]) {
        case TT_CONTROL:
            break;
        case TT_BYTE: {
            char b = (char)t->byte_val[id];
            put(&o, &b, 1);
            strip = 0;
            break;
        }
        case TT_UNKNOWN:
            put(&o, UNK_SURFACE, sizeof UNK_SURFACE - 1);
            strip = 0;
            break;
        default: {
            const char *s = t->text[id];
            size_t l = t->len[id];
            if (strip && l >= 3 && memcmp(s, SPACE_SYM, 3) == 0) {
                s += 3;
                l -= 3;
            }
            strip = 0;
            size_t run = 0; /* copy runs between U+2581s */
            for (size_t j = 0; j < l;) {
                if (j + 3 <= l && memcmp(s + j, SPACE_SYM, 3) == 0) {
                    put(&o, s + run, j - run);
                    put(&o, " ", 1);
                    j += 3;
                    run = j;
                } else {
                    j++;
                }
            }
            put(&o, s + run, l - run);
        }
        }
    }
    if (size) buf[o.n < size - 1 ? o.n : size - 1] = '\0';
    if (len) *len = o.n;
    return MG_OK;
}

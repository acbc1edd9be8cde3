/* gguf-read.c - GGUF v3 reader (see gguf.h for the format).
 *
 * The reader parses an untrusted byte image through a bounded cursor: every read is checked
 * against the bytes that remain, every count is checked against the file size before it is
 * used to size an allocation, and all size arithmetic is overflow-checked. Names and string
 * values are copied into NUL-terminated storage owned by the handle; numeric arrays are
 * copied too (so that they are suitably aligned); tensor data stays in the mapping. */
#include "config.h" /* feature macros (_GNU_SOURCE) from configure */

#include "gguf-internal.h"
#include "quant.h"

#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#define GGUF_HEADER_SIZE 24u
/* Smallest possible encodings, used to bound the header counts before allocating:
 * a kv is key length (8) + >= 1 key byte + type (4) + >= 1 value byte;
 * a tensor info is name length (8) + >= 1 name byte + n_dims (4) + ne[0] (8) + type (4)
 * + offset (8). Empty keys and names are rejected, so these are true lower bounds. */
#define KV_MIN_BYTES 14u
#define TENSOR_MIN_BYTES 33u
#define MAX_ALIGNMENT 0x80000000u /* the largest power of two a uint32 can hold */

/* ------------------------------------------------------------------ type tables */

static const char *ggml_other_type_name(uint32_t t);

/* The types themselves (names, block sizes) are in quant.c's table. */
size_t gguf_type_size(uint32_t ggml_type)
{
    const mg_type_info *t = mg_type_info_of(ggml_type);
    return t && t->blck == 1 ? t->bytes : 0;
}

const char *gguf_type_name(uint32_t ggml_type)
{
    const mg_type_info *t = mg_type_info_of(ggml_type);
    return t ? t->name : "unknown";
}

#define SUPPORTED_TYPES "f32, f16, bf16, q8_0, q4_0, q4_K, q6_K, q8_K, i8, i16, i32, i64, f64"

/* The type of a tensor whose rows have ne0 values, or an error (status) naming the tensor
 * (ctx) when the type is unknown or a row is not a whole number of its blocks. */
int gguf_check_type(const char *ctx, uint32_t type, uint64_t ne0, int status,
                      const mg_type_info **info)
{
    const mg_type_info *t = mg_type_info_of(type);
    if (!t)
        return mg_seterr(status, "%s: unsupported ggml type %u (%s); supported types: "
                         SUPPORTED_TYPES, ctx, type, ggml_other_type_name(type));
    if (ne0 % t->blck != 0)
        return mg_seterr(status, "%s: type %s stores rows in blocks of %u values, but the row"
                         " length ne[0] = %" PRIu64 " is not a multiple of %u", ctx, t->name,
                         t->blck, ne0, t->blck);
    *info = t;
    return MG_OK;
}

/* Names of the ggml types we do not support, only to make error messages helpful. */
static const char *ggml_other_type_name(uint32_t t)
{
    static const char *const names[] = {
        [2] = "q4_0",     [3] = "q4_1",    [6] = "q5_0",     [7] = "q5_1",
        [8] = "q8_0",     [9] = "q8_1",    [10] = "q2_k",    [11] = "q3_k",
        [12] = "q4_k",    [13] = "q5_k",   [14] = "q6_k",    [15] = "q8_k",
        [16] = "iq2_xxs", [17] = "iq2_xs", [18] = "iq3_xxs", [19] = "iq1_s",
        [20] = "iq4_nl",  [21] = "iq3_s",  [22] = "iq2_s",   [23] = "iq4_xs",
        [29] = "iq1_m",
    };
    if (t < sizeof names / sizeof names[0] && names[t]) return names[t];
    return "unknown";
}

static const char *kv_type_name(uint32_t t)
{
    static const char *const names[GGUF_TYPE_COUNT] = {
        "uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
        "bool", "string", "array", "uint64", "int64", "float64",
    };
    return t < GGUF_TYPE_COUNT ? names[t] : "invalid";
}

static int is_unsigned_type(uint32_t t)
{
    return t == GGUF_TYPE_UINT8 || t == GGUF_TYPE_UINT16 || t == GGUF_TYPE_UINT32 ||
           t == GGUF_TYPE_UINT64;
}

static int is_signed_type(uint32_t t)
{
    return t == GGUF_TYPE_INT8 || t == GGUF_TYPE_INT16 || t == GGUF_TYPE_INT32 ||
           t == GGUF_TYPE_INT64;
}

static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint64_t le64(const uint8_t *p) { return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32; }

/* ------------------------------------------------------------------ name index
 * (struct name_index in gguf-internal.h) */

static uint64_t hash_name(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    while (*s) {
        h ^= (uint8_t)*s++;
        h *= 1099511628211ull;
    }
    return h;
}

static struct name_slot *index_probe(struct name_slot *slots, size_t mask, const char *name)
{
    size_t h = (size_t)hash_name(name) & mask;
    while (slots[h].name && strcmp(slots[h].name, name) != 0) h = (h + 1) & mask;
    return &slots[h];
}

static int64_t index_find(const struct name_index *ix, const char *name)
{
    if (!ix->slots) return -1;
    const struct name_slot *s = index_probe(ix->slots, ix->mask, name);
    return s->name ? s->idx : -1;
}

/* Insert name -> idx. If the name is already present, nothing is inserted and *dup is set
 * to the existing index (-1 otherwise). Keeps the load factor at most 1/2. */
static int index_insert(struct name_index *ix, const char *name, int64_t idx, int64_t *dup)
{
    if (!ix->slots || ix->count + 1 > (ix->mask + 1) / 2) {
        size_t cap = ix->slots ? (ix->mask + 1) * 2 : 16;
        struct name_slot *s = calloc(cap, sizeof *s);
        if (!s) return mg_seterr(MG_ERR_NOMEM, "out of memory for a name index of %zu", cap);
        for (size_t i = 0; ix->slots && i <= ix->mask; i++)
            if (ix->slots[i].name) *index_probe(s, cap - 1, ix->slots[i].name) = ix->slots[i];
        free(ix->slots);
        ix->slots = s;
        ix->mask = cap - 1;
    }
    struct name_slot *s = index_probe(ix->slots, ix->mask, name);
    *dup = s->name ? s->idx : -1;
    if (!s->name) {
        s->name = name;
        s->idx = idx;
        ix->count++;
    }
    return MG_OK;
}

/* ------------------------------------------------------------------ parsing */

/* A bounded cursor over the image. */
typedef struct {
    const uint8_t *base;
    size_t size;
    size_t pos;
} cursor;

static size_t cur_left(const cursor *c) { return c->size - c->pos; }

/* Consume n bytes. `ctx` and `what` name the field for the message ("key 'x'", "type"). */
static int cur_take(cursor *c, size_t n, const uint8_t **p, const char *ctx, const char *what)
{
    if (n > cur_left(c))
        return mg_seterr(MG_ERR_FORMAT,
                         "truncated file: %s %s needs %zu bytes at offset %zu, only %zu remain",
                         ctx, what, n, c->pos, cur_left(c));
    *p = c->base + c->pos;
    c->pos += n;
    return MG_OK;
}

static int cur_u32(cursor *c, uint32_t *v, const char *ctx, const char *what)
{
    const uint8_t *p = NULL;
    int rc = cur_take(c, 4, &p, ctx, what);
    if (rc == MG_OK) *v = le32(p);
    return rc;
}

static int cur_u64(cursor *c, uint64_t *v, const char *ctx, const char *what)
{
    const uint8_t *p = NULL;
    int rc = cur_take(c, 8, &p, ctx, what);
    if (rc == MG_OK) *v = le64(p);
    return rc;
}

/* A GGUF string: u64 length, then that many bytes (checked against what remains). */
static int cur_str(cursor *c, const uint8_t **s, uint64_t *len, const char *ctx,
                   const char *what)
{
    int rc = cur_u64(c, len, ctx, what);
    if (rc) return rc;
    if (*len > cur_left(c))
        return mg_seterr(MG_ERR_FORMAT, "truncated file: %s %s length %" PRIu64
                         " exceeds remaining %zu bytes", ctx, what, *len, cur_left(c));
    *s = c->base + c->pos;
    c->pos += (size_t)*len;
    return MG_OK;
}

/* A key or tensor name: non-empty, no NUL bytes; copied to NUL-terminated storage. */
static int cur_name(cursor *c, char **out, const char *ctx, const char *what)
{
    const uint8_t *s = NULL;
    uint64_t len = 0;
    int rc = cur_str(c, &s, &len, ctx, what);
    if (rc) return rc;
    if (len == 0) return mg_seterr(MG_ERR_FORMAT, "%s: %s is empty", ctx, what);
    if (memchr(s, 0, (size_t)len))
        return mg_seterr(MG_ERR_FORMAT, "%s: %s '%.*s' contains a NUL byte", ctx, what,
                         (int)strnlen((const char *)s, (size_t)len), (const char *)s);
    if (!(*out = dup_bytes(s, (size_t)len)))
        return mg_seterr(MG_ERR_NOMEM, "%s: out of memory for a %" PRIu64 "-byte %s", ctx,
                         len, what);
    return MG_OK;
}

static int parse_scalar(cursor *c, uint32_t type, union kv_scalar *v, const char *ctx)
{
    const uint8_t *p = NULL;
    int rc = cur_take(c, kv_scalar_size(type), &p, ctx, "value");
    if (rc) return rc;
    switch (type) {
    case GGUF_TYPE_UINT8: v->u = p[0]; break;
    case GGUF_TYPE_INT8: v->i = (int8_t)p[0]; break;
    case GGUF_TYPE_UINT16: v->u = le16(p); break;
    case GGUF_TYPE_INT16: v->i = (int16_t)le16(p); break;
    case GGUF_TYPE_UINT32: v->u = le32(p); break;
    case GGUF_TYPE_INT32: v->i = (int32_t)le32(p); break;
    case GGUF_TYPE_UINT64: v->u = le64(p); break;
    case GGUF_TYPE_INT64: v->i = (int64_t)le64(p); break;
    case GGUF_TYPE_FLOAT32: {
        uint32_t b = le32(p);
        float x;
        memcpy(&x, &b, sizeof x);
        v->f = x;
        break;
    }
    case GGUF_TYPE_FLOAT64: {
        uint64_t b = le64(p);
        memcpy(&v->f, &b, sizeof v->f);
        break;
    }
    case GGUF_TYPE_BOOL:
        if (p[0] > 1)
            return mg_seterr(MG_ERR_FORMAT, "%s: bool value byte is %u (must be 0 or 1)", ctx,
                             p[0]);
        v->u = p[0];
        break;
    }
    return MG_OK;
}

static int parse_str_array(cursor *c, struct gguf_kv *kv, const char *ctx)
{
    uint64_t n = kv->arr_n;
    /* Each element takes at least its 8-byte length: bound n before allocating. */
    if (n > cur_left(c) / 8)
        return mg_seterr(MG_ERR_FORMAT, "truncated file: %s array of %" PRIu64
                         " strings exceeds remaining %zu bytes", ctx, n, cur_left(c));
    /* First pass: validate every length and total the blob size (<= remaining + n). */
    cursor scan = *c;
    size_t total = 0;
    const uint8_t *s = NULL;
    uint64_t len = 0;
    char what[48];
    for (uint64_t j = 0; j < n; j++) {
        snprintf(what, sizeof what, "array string #%" PRIu64, j);
        int rc = cur_str(&scan, &s, &len, ctx, what);
        if (rc) return rc;
        total += (size_t)len + 1;
    }
    kv->arr_off = malloc(((size_t)n + 1) * sizeof *kv->arr_off);
    char *blob = kv->arr_data = malloc(total ? total : 1);
    if (!kv->arr_off || !blob)
        return mg_seterr(MG_ERR_NOMEM, "%s: out of memory for %" PRIu64 " strings", ctx, n);
    /* Second pass: copy (cannot fail, the first pass checked the same bytes). */
    size_t pos = 0;
    for (uint64_t j = 0; j < n; j++) {
        cur_str(c, &s, &len, ctx, "array string");
        kv->arr_off[j] = pos;
        if (len) memcpy(blob + pos, s, (size_t)len);
        blob[pos + len] = '\0';
        pos += (size_t)len + 1;
    }
    kv->arr_off[n] = pos;
    return MG_OK;
}

static int parse_array(cursor *c, struct gguf_kv *kv, const char *ctx)
{
    int rc = cur_u32(c, &kv->arr_type, ctx, "array element type");
    if (rc) return rc;
    rc = cur_u64(c, &kv->arr_n, ctx, "array length");
    if (rc) return rc;
    uint32_t et = kv->arr_type;
    uint64_t n = kv->arr_n;
    if (et == GGUF_TYPE_ARRAY)
        return mg_seterr(MG_ERR_FORMAT, "%s: nested arrays are not supported", ctx);
    if (et >= GGUF_TYPE_COUNT)
        return mg_seterr(MG_ERR_FORMAT, "%s: unknown array element type %u", ctx, et);
    if (et == GGUF_TYPE_STRING) return parse_str_array(c, kv, ctx);

    size_t es = kv_scalar_size(et);
    if (n > cur_left(c) / es)
        return mg_seterr(MG_ERR_FORMAT, "truncated file: %s array of %" PRIu64 " %s elements"
                         " exceeds remaining %zu bytes", ctx, n, kv_type_name(et), cur_left(c));
    const uint8_t *p = NULL;
    size_t nb = (size_t)n * es;
    cur_take(c, nb, &p, ctx, "array data");
    if (et == GGUF_TYPE_BOOL) {
        for (size_t j = 0; j < nb; j++)
            if (p[j] > 1)
                return mg_seterr(MG_ERR_FORMAT, "%s: bool array element %zu is %u (must be 0"
                                 " or 1)", ctx, j, p[j]);
    }
    /* Copied so that the caller gets naturally aligned elements. */
    if (!(kv->arr_data = malloc(nb ? nb : 1)))
        return mg_seterr(MG_ERR_NOMEM, "%s: out of memory for %zu bytes", ctx, nb);
    if (nb) memcpy(kv->arr_data, p, nb);
    return MG_OK;
}

static int parse_kv(gguf_file *f, cursor *c, int64_t i)
{
    struct gguf_kv *kv = &f->kvs[i];
    char ctx[256];
    snprintf(ctx, sizeof ctx, "key #%" PRId64, i);
    int rc = cur_name(c, &kv->key, ctx, "string");
    if (rc) return rc;
    f->n_kv = i + 1; /* from here on gguf_close frees this entry */
    int64_t dup;
    if ((rc = index_insert(&f->kv_index, kv->key, i, &dup))) return rc;
    if (dup >= 0)
        return mg_seterr(MG_ERR_FORMAT, "duplicate key '%s' (keys #%" PRId64 " and #%" PRId64
                         ")", kv->key, dup, i);
    snprintf(ctx, sizeof ctx, "key '%s'", kv->key);
    if ((rc = cur_u32(c, &kv->type, ctx, "type"))) return rc;
    if (kv->type >= GGUF_TYPE_COUNT)
        return mg_seterr(MG_ERR_FORMAT, "%s: unknown value type %u", ctx, kv->type);
    if (kv->type == GGUF_TYPE_ARRAY) return parse_array(c, kv, ctx);
    if (kv->type == GGUF_TYPE_STRING) {
        const uint8_t *s = NULL;
        if ((rc = cur_str(c, &s, &kv->str_len, ctx, "value string"))) return rc;
        if (!(kv->str = dup_bytes(s, (size_t)kv->str_len)))
            return mg_seterr(MG_ERR_NOMEM, "%s: out of memory for the value", ctx);
        return MG_OK;
    }
    return parse_scalar(c, kv->type, &kv->val, ctx);
}

/* Tensor info; t->offset holds the offset relative to the data section until
 * place_tensors() has checked it. */
static int parse_tensor_info(gguf_file *f, cursor *c, int64_t i)
{
    gguf_tensor_info *t = &f->tensors[i];
    char ctx[256];
    char *name;
    snprintf(ctx, sizeof ctx, "tensor #%" PRId64, i);
    int rc = cur_name(c, &name, ctx, "name");
    if (rc) return rc;
    t->name = name;
    f->n_tensors = i + 1;
    int64_t dup;
    if ((rc = index_insert(&f->tensor_index, name, i, &dup))) return rc;
    if (dup >= 0)
        return mg_seterr(MG_ERR_FORMAT, "duplicate tensor name '%s' (tensors #%" PRId64
                         " and #%" PRId64 ")", name, dup, i);
    snprintf(ctx, sizeof ctx, "tensor '%s'", name);
    if ((rc = cur_u32(c, &t->n_dims, ctx, "n_dims"))) return rc;
    if (t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS)
        return mg_seterr(MG_ERR_FORMAT, "%s: n_dims %u out of range (must be 1..%d)", ctx,
                         t->n_dims, GGUF_MAX_DIMS);
    uint64_t n_el = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        if ((rc = cur_u64(c, &t->ne[d], ctx, "ne"))) return rc;
        if (t->ne[d] == 0) return mg_seterr(MG_ERR_FORMAT, "%s: ne[%u] is 0", ctx, d);
        if (n_el > UINT64_MAX / t->ne[d])
            return mg_seterr(MG_ERR_FORMAT, "%s: element count overflows (ne[%u] = %" PRIu64
                             ")", ctx, d, t->ne[d]);
        n_el *= t->ne[d];
    }
    if ((rc = cur_u32(c, &t->type, ctx, "type"))) return rc;
    const mg_type_info *ti;
    if ((rc = gguf_check_type(ctx, t->type, t->ne[0], MG_ERR_FORMAT, &ti))) return rc;
    /* Any tensor larger than the whole file cannot fit, and checking here keeps n_bytes
     * far from overflow. */
    if (n_el / ti->blck > c->size / ti->bytes)
        return mg_seterr(MG_ERR_FORMAT, "%s: %" PRIu64 " elements of %s exceed the file size"
                         " (%zu bytes)", ctx, n_el, ti->name, c->size);
    t->n_elements = n_el;
    t->n_bytes = n_el / ti->blck * ti->bytes;
    return cur_u64(c, &t->offset, ctx, "offset");
}

static int read_alignment(gguf_file *f)
{
    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    int64_t i = index_find(&f->kv_index, "general.alignment");
    if (i < 0) return MG_OK;
    const struct gguf_kv *kv = &f->kvs[i];
    if (kv->type != GGUF_TYPE_UINT32)
        return mg_seterr(MG_ERR_FORMAT, "key 'general.alignment' has type %s, expected uint32",
                         kv_type_name(kv->type));
    uint64_t a = kv->val.u;
    if (a == 0 || (a & (a - 1)) != 0)
        return mg_seterr(MG_ERR_FORMAT, "key 'general.alignment' is %" PRIu64 ", must be a"
                         " non-zero power of two", a);
    f->alignment = a;
    return MG_OK;
}

/* Locate the data section and check every tensor's range against it. */
static int place_tensors(gguf_file *f, size_t header_end)
{
    uint64_t a = f->alignment;
    if (!round_up(header_end, a, &f->data_offset) ||
        (f->n_tensors > 0 && f->data_offset > f->size))
        return mg_seterr(MG_ERR_FORMAT, "truncated file: the data section (header end %zu"
                         " rounded up to alignment %" PRIu64 ") starts past end of file"
                         " (%zu bytes)", header_end, a, f->size);
    if (f->n_tensors == 0) return MG_OK; /* a file without tensors may omit the padding */
    uint64_t data_size = f->size - f->data_offset;
    for (int64_t i = 0; i < f->n_tensors; i++) {
        gguf_tensor_info *t = &f->tensors[i];
        uint64_t rel = t->offset;
        if (rel % a != 0)
            return mg_seterr(MG_ERR_FORMAT, "tensor '%s': offset %" PRIu64 " is not a multiple"
                             " of the alignment %" PRIu64, t->name, rel, a);
        if (rel > data_size || t->n_bytes > data_size - rel)
            return mg_seterr(MG_ERR_FORMAT, "tensor '%s': data [offset %" PRIu64 ", %" PRIu64
                             " bytes] extends past end of file (%zu bytes, data section at %"
                             PRIu64 ")", t->name, rel, t->n_bytes, f->size, f->data_offset);
        t->offset = f->data_offset + rel;
        t->data = f->base + t->offset;
    }
    return MG_OK;
}

static int parse_file(gguf_file *f)
{
    cursor c = {f->base, f->size, 0};
    const uint8_t *p = NULL;
    if (f->size == 0) return mg_seterr(MG_ERR_FORMAT, "empty file");
    if (f->size >= 4 && le32(f->base) != GGUF_MAGIC)
        return mg_seterr(MG_ERR_FORMAT, "not a GGUF file (bad magic): starts with %02x %02x"
                         " %02x %02x", f->base[0], f->base[1], f->base[2], f->base[3]);
    if (f->size < GGUF_HEADER_SIZE)
        return mg_seterr(MG_ERR_FORMAT, "truncated file: %zu bytes is smaller than the"
                         " %u-byte GGUF header", f->size, GGUF_HEADER_SIZE);
    cur_take(&c, GGUF_HEADER_SIZE, &p, "header", "");
    f->version = le32(p + 4);
    if (f->version != GGUF_VERSION)
        return mg_seterr(MG_ERR_FORMAT, "unsupported GGUF version %u (only version %u is"
                         " supported)%s", f->version, GGUF_VERSION,
                         f->version == 0x03000000u ? "; the file looks big-endian" : "");
    uint64_t n_tensors = le64(p + 8), n_kv = le64(p + 16);

    /* Bound the counts by the bytes that remain before anything is sized by them. */
    size_t left = cur_left(&c);
    if (n_kv > left / KV_MIN_BYTES)
        return mg_seterr(MG_ERR_FORMAT, "implausible header: n_kv = %" PRIu64 " needs at"
                         " least %u bytes each but only %zu bytes follow the header", n_kv,
                         KV_MIN_BYTES, left);
    left -= (size_t)n_kv * KV_MIN_BYTES;
    if (n_tensors > left / TENSOR_MIN_BYTES)
        return mg_seterr(MG_ERR_FORMAT, "implausible header: n_tensors = %" PRIu64 " needs"
                         " at least %u bytes each but only %zu bytes remain after the keys",
                         n_tensors, TENSOR_MIN_BYTES, left);

    /* The arrays grow as entries are parsed, so memory tracks what the file really holds. */
    int rc;
    for (uint64_t i = 0; i < n_kv; i++) {
        struct gguf_kv *kvs = grow_array(f->kvs, &f->kv_cap, (size_t)i + 1, sizeof *kvs);
        if (!kvs) return MG_ERR_NOMEM;
        f->kvs = kvs;
        if ((rc = parse_kv(f, &c, (int64_t)i))) return rc;
    }
    if ((rc = read_alignment(f))) return rc;
    for (uint64_t i = 0; i < n_tensors; i++) {
        gguf_tensor_info *ts = grow_array(f->tensors, &f->tensor_cap, (size_t)i + 1,
                                          sizeof *ts);
        if (!ts) return MG_ERR_NOMEM;
        f->tensors = ts;
        if ((rc = parse_tensor_info(f, &c, (int64_t)i))) return rc;
    }
    return place_tensors(f, c.pos);
}

int gguf_open_memory(const void *buf, size_t size, gguf_file **out)
{
    if (!out) return mg_seterr(MG_ERR_INVALID_ARG, "gguf_open_memory: out is NULL");
    *out = NULL;
    if (!buf && size)
        return mg_seterr(MG_ERR_INVALID_ARG, "gguf_open_memory: NULL buffer of %zu bytes",
                         size);
    gguf_file *f = calloc(1, sizeof *f);
    if (!f) return mg_seterr(MG_ERR_NOMEM, "out of memory");
    f->base = buf;
    f->size = size;
    int rc = parse_file(f);
    if (rc) {
        gguf_close(f);
        return rc;
    }
    *out = f;
    return MG_OK;
}

int gguf_open(const char *path, gguf_file **out)
{
    if (!out) return mg_seterr(MG_ERR_INVALID_ARG, "gguf_open: out is NULL");
    *out = NULL;
    if (!path) return mg_seterr(MG_ERR_INVALID_ARG, "gguf_open: path is NULL");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return mg_seterr(MG_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return mg_seterr(MG_ERR_IO, "cannot stat '%s': %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return mg_seterr(MG_ERR_IO, "'%s' is not a regular file", path);
    }
    if (st.st_size == 0) {
        close(fd);
        return mg_seterr(MG_ERR_FORMAT, "'%s': empty file", path);
    }
    if ((uint64_t)st.st_size > SIZE_MAX) {
        close(fd);
        return mg_seterr(MG_ERR_IO, "'%s' is too large to map", path);
    }
    size_t size = (size_t)st.st_size;
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd); /* the mapping keeps the file referenced */
    if (map == MAP_FAILED)
        return mg_seterr(MG_ERR_IO, "cannot map '%s' (%zu bytes): %s", path, size, strerror(e));
    gguf_file *f;
    int rc = gguf_open_memory(map, size, &f);
    if (rc) {
        munmap(map, size);
        return mg_adderr_context(rc, "'%s'", path);
    }
    f->map = map;
    *out = f;
    return MG_OK;
}

void gguf_close(gguf_file *f)
{
    if (!f) return;
    for (int64_t i = 0; i < f->n_kv; i++) {
        free(f->kvs[i].key);
        free(f->kvs[i].str);
        free(f->kvs[i].arr_data);
        free(f->kvs[i].arr_off);
    }
    for (int64_t i = 0; i < f->n_tensors; i++) free((char *)f->tensors[i].name);
    free(f->kvs);
    free(f->tensors);
    free(f->kv_index.slots);
    free(f->tensor_index.slots);
    if (f->map) munmap(f->map, f->size);
    free(f);
}

uint32_t gguf_version(const gguf_file *f) { return f ? f->version : 0; }
uint64_t gguf_alignment(const gguf_file *f) { return f ? f->alignment : 0; }
size_t gguf_file_size(const gguf_file *f) { return f ? f->size : 0; }
int64_t gguf_n_kv(const gguf_file *f) { return f ? f->n_kv : 0; }
int64_t gguf_n_tensors(const gguf_file *f) { return f ? f->n_tensors : 0; }

int64_t gguf_find_key(const gguf_file *f, const char *key)
{
    return f && key ? index_find(&f->kv_index, key) : -1;
}

int64_t gguf_find_tensor(const gguf_file *f, const char *name)
{
    return f && name ? index_find(&f->tensor_index, name) : -1;
}

const gguf_tensor_info *gguf_tensor(const gguf_file *f, int64_t i)
{
    return f && i >= 0 && i < f->n_tensors ? &f->tensors[i] : NULL;
}

static const struct gguf_kv *kv_at(const gguf_file *f, int64_t i)
{
    return f && i >= 0 && i < f->n_kv ? &f->kvs[i] : NULL;
}

/* The kv at index i if it is an array, else NULL. */
static const struct gguf_kv *arr_at(const gguf_file *f, int64_t i)
{
    const struct gguf_kv *kv = kv_at(f, i);
    return kv && kv->type == GGUF_TYPE_ARRAY ? kv : NULL;
}

const char *gguf_key_name(const gguf_file *f, int64_t i)
{
    const struct gguf_kv *kv = kv_at(f, i);
    return kv ? kv->key : NULL;
}

uint32_t gguf_kv_type(const gguf_file *f, int64_t i)
{
    const struct gguf_kv *kv = kv_at(f, i);
    return kv ? kv->type : GGUF_TYPE_COUNT;
}

uint32_t gguf_arr_type(const gguf_file *f, int64_t i)
{
    const struct gguf_kv *kv = arr_at(f, i);
    return kv ? kv->arr_type : GGUF_TYPE_COUNT;
}

uint64_t gguf_arr_n(const gguf_file *f, int64_t i)
{
    const struct gguf_kv *kv = arr_at(f, i);
    return kv ? kv->arr_n : 0;
}

const void *gguf_arr_data(const gguf_file *f, int64_t i)
{
    const struct gguf_kv *kv = arr_at(f, i);
    return kv && kv->arr_type != GGUF_TYPE_STRING ? kv->arr_data : NULL;
}

const char *gguf_arr_str(const gguf_file *f, int64_t i, uint64_t j, uint64_t *len)
{
    const struct gguf_kv *kv = arr_at(f, i);
    if (!kv || kv->arr_type != GGUF_TYPE_STRING || j >= kv->arr_n) return NULL;
    if (len) *len = kv->arr_off[j + 1] - kv->arr_off[j] - 1;
    return (const char *)kv->arr_data + kv->arr_off[j];
}

/* Find `key` for a getter. Absent: an error, or MG_OK with *kv = NULL when optional. */
static int lookup(const gguf_file *f, const char *key, const void *v, int optional,
                  const struct gguf_kv **kv)
{
    *kv = NULL;
    if (!f || !key || !v) return mg_seterr(MG_ERR_INVALID_ARG, "gguf getter: NULL argument");
    int64_t i = index_find(&f->kv_index, key);
    if (i < 0) return optional ? MG_OK : mg_seterr(MG_ERR_FORMAT, "missing key '%s'", key);
    *kv = &f->kvs[i];
    return MG_OK;
}

static int wrong_type(const struct gguf_kv *kv, const char *expected)
{
    if (kv->type == GGUF_TYPE_ARRAY)
        return mg_seterr(MG_ERR_FORMAT, "key '%s' has type array of %s, expected %s", kv->key,
                         kv_type_name(kv->arr_type), expected);
    return mg_seterr(MG_ERR_FORMAT, "key '%s' has type %s, expected %s", kv->key,
                     kv_type_name(kv->type), expected);
}

static int u32_from(const struct gguf_kv *kv, uint32_t *v)
{
    if (is_unsigned_type(kv->type)) {
        if (kv->val.u > UINT32_MAX)
            return mg_seterr(MG_ERR_FORMAT, "key '%s': value %" PRIu64 " does not fit in"
                             " uint32", kv->key, kv->val.u);
        *v = (uint32_t)kv->val.u;
        return MG_OK;
    }
    if (is_signed_type(kv->type)) {
        if (kv->val.i < 0 || kv->val.i > (int64_t)UINT32_MAX)
            return mg_seterr(MG_ERR_FORMAT, "key '%s': value %" PRId64 " does not fit in"
                             " uint32", kv->key, kv->val.i);
        *v = (uint32_t)kv->val.i;
        return MG_OK;
    }
    return wrong_type(kv, "an unsigned 32-bit integer");
}

static int f32_from(const struct gguf_kv *kv, float *v)
{
    if (kv->type != GGUF_TYPE_FLOAT32 && kv->type != GGUF_TYPE_FLOAT64)
        return wrong_type(kv, "float32");
    double d = kv->val.f;
    if (!isinf(d) && (d > FLT_MAX || d < -FLT_MAX))
        return mg_seterr(MG_ERR_FORMAT, "key '%s': value %g does not fit in float32", kv->key,
                         d);
    *v = (float)d;
    return MG_OK;
}

static int bool_from(const struct gguf_kv *kv, int *v)
{
    if (kv->type != GGUF_TYPE_BOOL) return wrong_type(kv, "bool");
    *v = (int)kv->val.u;
    return MG_OK;
}

/* The u32, f32 and bool getters, plain and optional: exactly one of u, x, b receives the
 * value. */
static int get_scalar(const gguf_file *f, const char *key, int optional, uint32_t *u, float *x,
                      int *b)
{
    const void *v = u ? (const void *)u : x ? (const void *)x : (const void *)b;
    const struct gguf_kv *kv;
    int rc = lookup(f, key, v, optional, &kv);
    if (rc || !kv) return rc;
    return u ? u32_from(kv, u) : x ? f32_from(kv, x) : bool_from(kv, b);
}

int gguf_get_u32(const gguf_file *f, const char *key, uint32_t *v)
{
    return get_scalar(f, key, 0, v, NULL, NULL);
}

int gguf_get_u32_opt(const gguf_file *f, const char *key, uint32_t *v)
{
    return get_scalar(f, key, 1, v, NULL, NULL);
}

int gguf_get_i64(const gguf_file *f, const char *key, int64_t *v)
{
    const struct gguf_kv *kv;
    int rc = lookup(f, key, v, 0, &kv);
    if (rc) return rc;
    if (is_signed_type(kv->type)) {
        *v = kv->val.i;
        return MG_OK;
    }
    if (!is_unsigned_type(kv->type)) return wrong_type(kv, "an integer");
    if (kv->val.u > (uint64_t)INT64_MAX)
        return mg_seterr(MG_ERR_FORMAT, "key '%s': value %" PRIu64 " does not fit in int64",
                         key, kv->val.u);
    *v = (int64_t)kv->val.u;
    return MG_OK;
}

int gguf_get_f32(const gguf_file *f, const char *key, float *v)
{
    return get_scalar(f, key, 0, NULL, v, NULL);
}

int gguf_get_f32_opt(const gguf_file *f, const char *key, float *v)
{
    return get_scalar(f, key, 1, NULL, v, NULL);
}

int gguf_get_bool(const gguf_file *f, const char *key, int *v)
{
    return get_scalar(f, key, 0, NULL, NULL, v);
}

int gguf_get_bool_opt(const gguf_file *f, const char *key, int *v)
{
    return get_scalar(f, key, 1, NULL, NULL, v);
}

int gguf_get_str(const gguf_file *f, const char *key, const char **v, uint64_t *len)
{
    const struct gguf_kv *kv;
    int rc = lookup(f, key, v, 0, &kv);
    if (rc) return rc;
    if (kv->type != GGUF_TYPE_STRING) return wrong_type(kv, "string");
    *v = kv->str;
    if (len) *len = kv->str_len;
    return MG_OK;
}

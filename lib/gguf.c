/* gguf.c - GGUF v3 reader and writer (see gguf.h for the format).
 *
 * The reader parses an untrusted byte image through a bounded cursor: every read is checked
 * against the bytes that remain, every count is checked against the file size before it is
 * used to size an allocation, and all size arithmetic is overflow-checked. Names and string
 * values are copied into NUL-terminated storage owned by the handle; numeric arrays are
 * copied too (so that they are suitably aligned); tensor data stays in the mapping. */
#include "config.h" /* feature macros (_GNU_SOURCE) from configure */

#include "gguf.h"
#include "quant.h"

#include "error.h"

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

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf.c needs a little-endian host: tensor data is used in place"
#endif

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
static int check_type(const char *ctx, uint32_t type, uint64_t ne0, int status,
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

/* Size of a scalar metadata value, 0 for STRING, ARRAY and invalid codes. */
static size_t kv_scalar_size(uint32_t t)
{
    switch (t) {
    case GGUF_TYPE_UINT8: case GGUF_TYPE_INT8: case GGUF_TYPE_BOOL: return 1;
    case GGUF_TYPE_UINT16: case GGUF_TYPE_INT16: return 2;
    case GGUF_TYPE_UINT32: case GGUF_TYPE_INT32: case GGUF_TYPE_FLOAT32: return 4;
    case GGUF_TYPE_UINT64: case GGUF_TYPE_INT64: case GGUF_TYPE_FLOAT64: return 8;
    }
    return 0;
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

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p) { return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32; }

/* Round x up to a multiple of the power of two a; returns 0 on overflow. */
static int round_up(uint64_t x, uint64_t a, uint64_t *out)
{
    if (x > UINT64_MAX - (a - 1)) return 0;
    *out = (x + a - 1) & ~(a - 1);
    return 1;
}

static char *dup_bytes(const void *p, size_t n)
{
    char *s = malloc(n + 1);
    if (!s) return NULL;
    if (n) memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

/* ------------------------------------------------------------------ name index
 * An open-addressing hash set of names -> index, for duplicate detection while parsing
 * and for lookups. The names are owned elsewhere (by the kv or tensor arrays). */

struct name_slot {
    const char *name; /* NULL = empty */
    int64_t idx;
};

struct name_index {
    struct name_slot *slots;
    size_t mask; /* capacity - 1; capacity is a power of two */
    size_t count;
};

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

/* Grow arr (elements of `elem` bytes, *cap of them) to hold at least `need`, zeroing the
 * new part. Returns the array, or NULL with the error set (arr is then unchanged). `need`
 * is already bounded by the file size, so only the doubling can overflow. */
static void *grow_array(void *arr, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return arr;
    size_t n = *cap ? *cap : 16;
    while (n < need) n = n > SIZE_MAX / 2 ? need : n * 2;
    void *p = n <= SIZE_MAX / elem ? realloc(arr, n * elem) : NULL;
    if (!p) {
        mg_seterr(MG_ERR_NOMEM, "out of memory for an array of %zu elements", n);
        return NULL;
    }
    memset((char *)p + *cap * elem, 0, (n - *cap) * elem);
    *cap = n;
    return p;
}

/* ------------------------------------------------------------------ reader */

union kv_scalar {
    uint64_t u; /* unsigned integer types and BOOL */
    int64_t i;  /* signed integer types */
    double f;   /* FLOAT32 and FLOAT64 */
};

struct gguf_kv {
    char *key;
    uint32_t type;
    union kv_scalar val; /* scalars */
    char *str;           /* STRING: NUL-terminated copy (may contain NULs; see str_len) */
    uint64_t str_len;
    uint32_t arr_type;   /* ARRAY */
    uint64_t arr_n;
    void *arr_data;      /* numeric: copy of the elements; strings: NUL-terminated blob */
    uint64_t *arr_off;   /* strings: arr_n + 1 offsets into the blob */
};

struct gguf_file {
    const uint8_t *base;
    size_t size;
    void *map; /* non-NULL when the image is our own mmap */
    uint32_t version;
    uint64_t alignment;
    uint64_t data_offset;
    int64_t n_kv, n_tensors;
    struct gguf_kv *kvs;
    gguf_tensor_info *tensors;
    size_t kv_cap, tensor_cap;
    struct name_index kv_index, tensor_index;
};

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
    if ((rc = check_type(ctx, t->type, t->ne[0], MG_ERR_FORMAT, &ti))) return rc;
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

int gguf_get_u32(const gguf_file *f, const char *key, uint32_t *v)
{
    const struct gguf_kv *kv;
    int rc = lookup(f, key, v, 0, &kv);
    return rc ? rc : u32_from(kv, v);
}

int gguf_get_u32_opt(const gguf_file *f, const char *key, uint32_t *v)
{
    const struct gguf_kv *kv;
    int rc = lookup(f, key, v, 1, &kv);
    return rc || !kv ? rc : u32_from(kv, v);
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
    const struct gguf_kv *kv;
    int rc = lookup(f, key, v, 0, &kv);
    return rc ? rc : f32_from(kv, v);
}

int gguf_get_f32_opt(const gguf_file *f, const char *key, float *v)
{
    const struct gguf_kv *kv;
    int rc = lookup(f, key, v, 1, &kv);
    return rc || !kv ? rc : f32_from(kv, v);
}

int gguf_get_bool(const gguf_file *f, const char *key, int *v)
{
    const struct gguf_kv *kv;
    int rc = lookup(f, key, v, 0, &kv);
    return rc ? rc : bool_from(kv, v);
}

int gguf_get_bool_opt(const gguf_file *f, const char *key, int *v)
{
    const struct gguf_kv *kv;
    int rc = lookup(f, key, v, 1, &kv);
    return rc || !kv ? rc : bool_from(kv, v);
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

/* ------------------------------------------------------------------ writer */

/* A growable byte buffer; allocation failure is sticky and checked once at the end. */
struct bytebuf {
    uint8_t *data;
    size_t len, cap;
    int oom;
};

static void bb_put(struct bytebuf *b, const void *p, size_t n)
{
    if (b->oom || n == 0) return;
    if (n > b->cap - b->len) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->len < n) {
            if (cap > SIZE_MAX / 2) {
                b->oom = 1;
                return;
            }
            cap *= 2;
        }
        uint8_t *d = realloc(b->data, cap);
        if (!d) {
            b->oom = 1;
            return;
        }
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

static void bb_uint(struct bytebuf *b, uint64_t v, size_t n)
{
    uint8_t p[8];
    for (size_t k = 0; k < n; k++) p[k] = (uint8_t)(v >> (8 * k));
    bb_put(b, p, n);
}

static const uint8_t zero_block[4096];

static void bb_zeros(struct bytebuf *b, uint64_t n)
{
    while (n > 0 && !b->oom) {
        size_t k = n > sizeof zero_block ? sizeof zero_block : (size_t)n;
        bb_put(b, zero_block, k);
        n -= k;
    }
}

static void bb_str(struct bytebuf *b, const char *s)
{
    size_t n = strlen(s);
    bb_uint(b, n, 8);
    bb_put(b, s, n);
}

struct wkv {
    char *key;
    uint32_t type;
    uint8_t *val; /* the serialized value (everything after the type field) */
    size_t val_len;
};

struct wtensor {
    char *name;
    uint32_t type, n_dims;
    uint64_t ne[GGUF_MAX_DIMS];
    size_t n_bytes;
    void *data;        /* NULL for a lazy tensor: */
    gguf_fill_fn fill; /* fills the bytes at write time */
    void *user;
};

struct gguf_writer {
    struct wkv *kvs;
    size_t n_kv, kv_cap;
    struct wtensor *tensors;
    size_t n_tensors, tensor_cap;
};

gguf_writer *gguf_writer_new(void)
{
    gguf_writer *w = calloc(1, sizeof *w);
    if (!w) mg_seterr(MG_ERR_NOMEM, "out of memory for a GGUF writer");
    return w;
}

void gguf_writer_free(gguf_writer *w)
{
    if (!w) return;
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kvs[i].key);
        free(w->kvs[i].val);
    }
    for (size_t i = 0; i < w->n_tensors; i++) {
        free(w->tensors[i].name);
        free(w->tensors[i].data);
    }
    free(w->kvs);
    free(w->tensors);
    free(w);
}

/* Store key = (type, serialized value in *val), replacing an existing key in place.
 * Takes ownership of val->data in every case. */
static int writer_put(gguf_writer *w, const char *key, uint32_t type, struct bytebuf *val)
{
    int rc = MG_OK;
    if (!w || !key || !*key)
        rc = mg_seterr(MG_ERR_INVALID_ARG, "gguf writer: NULL writer or empty key");
    else if (val->oom)
        rc = mg_seterr(MG_ERR_NOMEM, "gguf writer: out of memory for the value of '%s'", key);
    if (rc) {
        free(val->data);
        return rc;
    }
    for (size_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kvs[i].key, key) == 0) {
            free(w->kvs[i].val);
            w->kvs[i].type = type;
            w->kvs[i].val = val->data;
            w->kvs[i].val_len = val->len;
            return MG_OK;
        }
    }
    char *k = dup_bytes(key, strlen(key));
    struct wkv *kvs = k ? grow_array(w->kvs, &w->kv_cap, w->n_kv + 1, sizeof *kvs) : NULL;
    if (!kvs) {
        free(k);
        free(val->data);
        return mg_seterr(MG_ERR_NOMEM, "gguf writer: out of memory for key '%s'", key);
    }
    w->kvs = kvs;
    w->kvs[w->n_kv++] = (struct wkv){k, type, val->data, val->len};
    return MG_OK;
}

static int set_scalar(gguf_writer *w, const char *key, uint32_t type, uint64_t bits)
{
    struct bytebuf b = {0};
    bb_uint(&b, bits, kv_scalar_size(type));
    return writer_put(w, key, type, &b);
}

int gguf_set_u32(gguf_writer *w, const char *key, uint32_t v)
{
    return set_scalar(w, key, GGUF_TYPE_UINT32, v);
}

int gguf_set_i32(gguf_writer *w, const char *key, int32_t v)
{
    return set_scalar(w, key, GGUF_TYPE_INT32, (uint32_t)v);
}

int gguf_set_u64(gguf_writer *w, const char *key, uint64_t v)
{
    return set_scalar(w, key, GGUF_TYPE_UINT64, v);
}

int gguf_set_i64(gguf_writer *w, const char *key, int64_t v)
{
    return set_scalar(w, key, GGUF_TYPE_INT64, (uint64_t)v);
}

int gguf_set_f32(gguf_writer *w, const char *key, float v)
{
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    return set_scalar(w, key, GGUF_TYPE_FLOAT32, bits);
}

int gguf_set_bool(gguf_writer *w, const char *key, int v)
{
    return set_scalar(w, key, GGUF_TYPE_BOOL, v != 0);
}

int gguf_set_str(gguf_writer *w, const char *key, const char *v)
{
    if (!v) return mg_seterr(MG_ERR_INVALID_ARG, "gguf_set_str: NULL value for '%s'",
                             key ? key : "(null)");
    struct bytebuf b = {0};
    bb_str(&b, v);
    return writer_put(w, key, GGUF_TYPE_STRING, &b);
}

int gguf_set_arr(gguf_writer *w, const char *key, uint32_t elem_type, const void *data,
                 uint64_t n)
{
    const char *k = key ? key : "(null)";
    size_t es = kv_scalar_size(elem_type);
    if (es == 0)
        return mg_seterr(MG_ERR_INVALID_ARG, "gguf_set_arr '%s': invalid element type %u", k,
                         elem_type);
    if (n > SIZE_MAX / es || (n && !data))
        return mg_seterr(MG_ERR_INVALID_ARG, "gguf_set_arr '%s': bad array of %" PRIu64
                         " elements", k, n);
    size_t nb = (size_t)n * es;
    if (elem_type == GGUF_TYPE_BOOL)
        for (size_t j = 0; j < nb; j++)
            if (((const uint8_t *)data)[j] > 1)
                return mg_seterr(MG_ERR_INVALID_ARG, "gguf_set_arr '%s': bool element %zu is"
                                 " neither 0 nor 1", k, j);
    struct bytebuf b = {0};
    bb_uint(&b, elem_type, 4);
    bb_uint(&b, n, 8);
    bb_put(&b, data, nb);
    return writer_put(w, key, GGUF_TYPE_ARRAY, &b);
}

int gguf_set_arr_str(gguf_writer *w, const char *key, const char *const *v, uint64_t n)
{
    const char *k = key ? key : "(null)";
    if (n && !v)
        return mg_seterr(MG_ERR_INVALID_ARG, "gguf_set_arr_str '%s': NULL array", k);
    for (uint64_t j = 0; j < n; j++)
        if (!v[j])
            return mg_seterr(MG_ERR_INVALID_ARG, "gguf_set_arr_str '%s': element %" PRIu64
                             " is NULL", k, j);
    struct bytebuf b = {0};
    bb_uint(&b, GGUF_TYPE_STRING, 4);
    bb_uint(&b, n, 8);
    for (uint64_t j = 0; j < n; j++) bb_str(&b, v[j]);
    return writer_put(w, key, GGUF_TYPE_ARRAY, &b);
}

int gguf_copy_kv(gguf_writer *w, const gguf_file *f, int64_t i)
{
    if (!w || !f || i < 0 || i >= f->n_kv)
        return mg_seterr(MG_ERR_INVALID_ARG, "gguf_copy_kv: no key #%" PRId64, i);
    const struct gguf_kv *kv = &f->kvs[i];
    struct bytebuf b = {0};
    if (kv->type == GGUF_TYPE_STRING) {
        bb_uint(&b, kv->str_len, 8);
        bb_put(&b, kv->str, (size_t)kv->str_len);
    } else if (kv->type == GGUF_TYPE_ARRAY) {
        bb_uint(&b, kv->arr_type, 4);
        bb_uint(&b, kv->arr_n, 8);
        if (kv->arr_type == GGUF_TYPE_STRING) {
            const char *blob = kv->arr_data;
            for (uint64_t j = 0; j < kv->arr_n; j++) {
                size_t len = (size_t)(kv->arr_off[j + 1] - kv->arr_off[j] - 1);
                bb_uint(&b, len, 8);
                bb_put(&b, blob + kv->arr_off[j], len);
            }
        } else {
            bb_put(&b, kv->arr_data, (size_t)kv->arr_n * kv_scalar_size(kv->arr_type));
        }
    } else if (kv->type == GGUF_TYPE_FLOAT32) {
        float x = (float)kv->val.f;
        uint32_t bits;
        memcpy(&bits, &x, sizeof bits);
        bb_uint(&b, bits, 4);
    } else if (kv->type == GGUF_TYPE_FLOAT64) {
        uint64_t bits;
        memcpy(&bits, &kv->val.f, sizeof bits);
        bb_uint(&b, bits, 8);
    } else {
        bb_uint(&b, kv->val.u, kv_scalar_size(kv->type)); /* two's complement for signed */
    }
    return writer_put(w, kv->key, kv->type, &b);
}

/* Check a new tensor and append it; data (copied) or fill (lazy) gives its bytes. */
static int add_tensor(gguf_writer *w, const char *name, uint32_t ggml_type, uint32_t n_dims,
                      const uint64_t *ne, const void *data, gguf_fill_fn fill, void *user)
{
    if (!w || !name || !*name || !ne || (!data && !fill))
        return mg_seterr(MG_ERR_INVALID_ARG, "gguf_add_tensor: NULL argument or empty name");
    if (!mg_type_info_of(ggml_type))
        return mg_seterr(MG_ERR_INVALID_ARG, "gguf_add_tensor '%s': unsupported ggml type %u",
                         name, ggml_type);
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS)
        return mg_seterr(MG_ERR_INVALID_ARG, "gguf_add_tensor '%s': n_dims %u out of range"
                         " (must be 1..%d)", name, n_dims, GGUF_MAX_DIMS);
    uint64_t n_el = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        if (ne[d] == 0 || n_el > UINT64_MAX / ne[d])
            return mg_seterr(MG_ERR_INVALID_ARG, "gguf_add_tensor '%s': bad ne[%u] = %" PRIu64,
                             name, d, ne[d]);
        n_el *= ne[d];
    }
    char ctx[256];
    snprintf(ctx, sizeof ctx, "gguf_add_tensor '%s'", name);
    const mg_type_info *ti;
    int rc = check_type(ctx, ggml_type, ne[0], MG_ERR_INVALID_ARG, &ti);
    if (rc) return rc;
    if (n_el / ti->blck > SIZE_MAX / ti->bytes)
        return mg_seterr(MG_ERR_INVALID_ARG, "gguf_add_tensor '%s': too large", name);
    for (size_t i = 0; i < w->n_tensors; i++)
        if (strcmp(w->tensors[i].name, name) == 0)
            return mg_seterr(MG_ERR_INVALID_ARG, "gguf_add_tensor: duplicate tensor name '%s'",
                             name);
    struct wtensor *arr = grow_array(w->tensors, &w->tensor_cap, w->n_tensors + 1, sizeof *arr);
    if (!arr) return MG_ERR_NOMEM;
    w->tensors = arr;
    struct wtensor t = {.name = dup_bytes(name, strlen(name)), .type = ggml_type,
                        .n_dims = n_dims, .n_bytes = (size_t)(n_el / ti->blck * ti->bytes),
                        .fill = fill, .user = user};
    t.data = data ? malloc(t.n_bytes) : NULL;
    if (!t.name || (data && !t.data)) {
        free(t.name);
        free(t.data);
        return mg_seterr(MG_ERR_NOMEM, "gguf_add_tensor '%s': out of memory for %zu bytes",
                         name, t.n_bytes);
    }
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) t.ne[d] = d < n_dims ? ne[d] : 1;
    if (data) memcpy(t.data, data, t.n_bytes);
    w->tensors[w->n_tensors++] = t;
    return MG_OK;
}

int gguf_add_tensor(gguf_writer *w, const char *name, uint32_t ggml_type, uint32_t n_dims,
                    const uint64_t *ne, const void *data)
{
    return add_tensor(w, name, ggml_type, n_dims, ne, data, NULL, NULL);
}

int gguf_add_tensor_lazy(gguf_writer *w, const char *name, uint32_t ggml_type, uint32_t n_dims,
                         const uint64_t *ne, gguf_fill_fn fill, void *user)
{
    if (!fill)
        return mg_seterr(MG_ERR_INVALID_ARG, "gguf_add_tensor_lazy: NULL fill function");
    return add_tensor(w, name, ggml_type, n_dims, ne, NULL, fill, user);
}

/* The alignment the file will declare: general.alignment if set, else the default. */
static int writer_alignment(const gguf_writer *w, uint64_t *align)
{
    *align = GGUF_DEFAULT_ALIGNMENT;
    for (size_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kvs[i].key, "general.alignment") != 0) continue;
        uint32_t a = w->kvs[i].type == GGUF_TYPE_UINT32 ? le32(w->kvs[i].val) : 0;
        if (a == 0 || (a & (a - 1)) != 0)
            return mg_seterr(MG_ERR_INVALID_ARG, "gguf writer: 'general.alignment' must be a"
                             " uint32 non-zero power of two");
        *align = a;
    }
    return MG_OK;
}

/* Offset of tensor i's data in the data section: each tensor starts at the next multiple of
 * the alignment after the previous one; the file ends with the last tensor (no padding). */
static int data_layout(const gguf_writer *w, uint64_t align, uint64_t *data_size)
{
    uint64_t end = 0;
    for (size_t i = 0; i < w->n_tensors; i++) {
        uint64_t off = 0;
        if (!round_up(end, align, &off) || w->tensors[i].n_bytes > UINT64_MAX - off)
            return mg_seterr(MG_ERR_INVALID_ARG, "gguf writer: tensor data too large");
        end = off + w->tensors[i].n_bytes;
    }
    *data_size = end;
    return MG_OK;
}

/* Serialize everything before the data section (including the alignment padding). */
static int build_meta(const gguf_writer *w, struct bytebuf *meta, uint64_t *align,
                      uint64_t *data_size)
{
    int rc = writer_alignment(w, align);
    if (rc) return rc;
    if ((rc = data_layout(w, *align, data_size))) return rc;
    bb_uint(meta, GGUF_MAGIC, 4);
    bb_uint(meta, GGUF_VERSION, 4);
    bb_uint(meta, w->n_tensors, 8);
    bb_uint(meta, w->n_kv, 8);
    for (size_t i = 0; i < w->n_kv; i++) {
        bb_str(meta, w->kvs[i].key);
        bb_uint(meta, w->kvs[i].type, 4);
        bb_put(meta, w->kvs[i].val, w->kvs[i].val_len);
    }
    uint64_t end = 0;
    for (size_t i = 0; i < w->n_tensors; i++) {
        const struct wtensor *t = &w->tensors[i];
        uint64_t off = 0;
        round_up(end, *align, &off); /* cannot overflow: data_layout checked it */
        bb_str(meta, t->name);
        bb_uint(meta, t->n_dims, 4);
        for (uint32_t d = 0; d < t->n_dims; d++) bb_uint(meta, t->ne[d], 8);
        bb_uint(meta, t->type, 4);
        bb_uint(meta, off, 8);
        end = off + t->n_bytes;
    }
    uint64_t padded;
    if (!round_up(meta->len, *align, &padded)) meta->oom = 1;
    else bb_zeros(meta, padded - meta->len);
    if (meta->oom) return mg_seterr(MG_ERR_NOMEM, "gguf writer: out of memory for the header");
    return MG_OK;
}

/* An output: either a preallocated memory buffer or a file descriptor. */
struct sink {
    uint8_t *mem; /* memory sink when non-NULL */
    size_t pos;
    int fd;
};

/* Write all n bytes to fd, retrying short writes and EINTR; -1 with errno on failure. */
static int write_all(int fd, const void *buf, size_t n)
{
    const uint8_t *p = buf;
    while (n > 0) {
        size_t chunk = n > ((size_t)1 << 30) ? (size_t)1 << 30 : n;
        ssize_t k = write(fd, p, chunk);
        if (k < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (k == 0) {
            errno = EIO;
            return -1;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static int sink_put(struct sink *s, const void *p, size_t n)
{
    if (s->mem) {
        if (n) memcpy(s->mem + s->pos, p, n);
        s->pos += n;
        return 0;
    }
    return write_all(s->fd, p, n);
}

static int sink_zeros(struct sink *s, uint64_t n)
{
    while (n > 0) {
        size_t k = n > sizeof zero_block ? sizeof zero_block : (size_t)n;
        if (sink_put(s, zero_block, k)) return -1;
        n -= k;
    }
    return 0;
}

/* Write tensor t's bytes: its copy, or what its fill function makes (straight into a memory
 * sink, else through a buffer of the tensor's size, freed before the next tensor). -1 with
 * errno on a write error; a failing allocation or fill sets *fill_rc instead. */
static int sink_tensor(struct sink *s, const struct wtensor *t, int *fill_rc)
{
    if (t->data) return sink_put(s, t->data, t->n_bytes);
    if (s->mem) {
        *fill_rc = t->fill(t->user, t->name, s->mem + s->pos, t->n_bytes);
        s->pos += t->n_bytes;
        return *fill_rc ? -1 : 0;
    }
    void *buf = malloc(t->n_bytes ? t->n_bytes : 1);
    if (!buf) {
        *fill_rc = mg_seterr(MG_ERR_NOMEM, "gguf writer: out of memory for the %zu bytes of"
                             " tensor '%s'", t->n_bytes, t->name);
        return -1;
    }
    *fill_rc = t->fill(t->user, t->name, buf, t->n_bytes);
    int r = *fill_rc ? -1 : sink_put(s, buf, t->n_bytes);
    free(buf);
    return r;
}

/* Emit the header then the tensor data with its padding; -1 with errno on a write error, or
 * -1 with *fill_rc set when a lazy tensor could not be made. */
static int emit(const gguf_writer *w, const struct bytebuf *meta, uint64_t align,
                struct sink *s, int *fill_rc)
{
    *fill_rc = MG_OK;
    if (sink_put(s, meta->data, meta->len)) return -1;
    uint64_t end = 0;
    for (size_t i = 0; i < w->n_tensors; i++) {
        uint64_t off = 0;
        round_up(end, align, &off);
        if (sink_zeros(s, off - end) || sink_tensor(s, &w->tensors[i], fill_rc)) return -1;
        end = off + w->tensors[i].n_bytes;
    }
    return 0;
}

int gguf_write_memory(const gguf_writer *w, void **buf, size_t *size)
{
    if (!w || !buf || !size) return mg_seterr(MG_ERR_INVALID_ARG, "gguf_write_memory: NULL");
    *buf = NULL;
    *size = 0;
    struct bytebuf meta = {0};
    uint64_t align, data_size;
    int rc = build_meta(w, &meta, &align, &data_size);
    if (rc == MG_OK && data_size > SIZE_MAX - meta.len)
        rc = mg_seterr(MG_ERR_NOMEM, "gguf_write_memory: image too large");
    if (rc == MG_OK) {
        size_t total = meta.len + (size_t)data_size;
        struct sink s = {malloc(total), 0, -1};
        if (!s.mem) {
            rc = mg_seterr(MG_ERR_NOMEM, "gguf_write_memory: out of memory for %zu bytes",
                           total);
        } else {
            int fill_rc;
            if (emit(w, &meta, align, &s, &fill_rc) != 0) { /* only a lazy tensor can fail */
                free(s.mem);
                rc = fill_rc;
            } else {
                *buf = s.mem;
                *size = total;
            }
        }
    }
    free(meta.data);
    return rc;
}

/* The directory part of path ("." if none). */
static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash) return dup_bytes(".", 1);
    if (slash == path) return dup_bytes("/", 1);
    return dup_bytes(path, (size_t)(slash - path));
}

/* fsync the directory `dir` holding path so that the rename is durable. File systems that
 * cannot sync directories (EINVAL, ENOTSUP) are accepted. `dir` is computed before anything
 * is written, so that no allocation can fail once the new file is in place. */
static int sync_dir(const char *path, const char *dir)
{
    int rc = MG_OK;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || (fsync(fd) != 0 && errno != EINVAL && errno != ENOTSUP))
        rc = mg_seterr(MG_ERR_IO, "wrote '%s' but cannot sync directory '%s': %s", path, dir,
                       strerror(errno));
    if (fd >= 0) close(fd);
    return rc;
}

int gguf_write_file(const gguf_writer *w, const char *path)
{
    if (!w || !path || !*path) return mg_seterr(MG_ERR_INVALID_ARG, "gguf_write_file: NULL");
    struct bytebuf meta = {0};
    uint64_t align, data_size;
    int rc = build_meta(w, &meta, &align, &data_size);
    if (rc) {
        free(meta.data);
        return rc;
    }
    static const char suffix[] = ".tmp.XXXXXX";
    size_t plen = strlen(path);
    char *tmp = malloc(plen + sizeof suffix);
    char *dir = tmp ? dir_of(path) : NULL;
    if (!dir) {
        free(tmp);
        free(meta.data);
        return mg_seterr(MG_ERR_NOMEM, "cannot write '%s': out of memory", path);
    }
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, suffix, sizeof suffix);

    int fd = mkstemp(tmp), have_tmp = fd >= 0, fill_rc = MG_OK;
    const char *step = "cannot create a temporary file";
    if (fd >= 0) {
        /* mkstemp makes the file 0600; keep the mode of the file being replaced, else 0644. */
        struct stat st;
        mode_t mode = stat(path, &st) == 0 ? (st.st_mode & 0777) : 0644;
        struct sink s = {NULL, 0, fd};
        if (fchmod(fd, mode) != 0) step = "fchmod failed";
        else if (emit(w, &meta, align, &s, &fill_rc) != 0) step = "write failed";
        else if (fsync(fd) != 0) step = "fsync failed";
        else {
            int cr = close(fd);
            fd = -1;
            if (cr != 0) step = "close failed";
            else if (rename(tmp, path) != 0) step = "rename failed";
            else step = NULL;
        }
    }
    if (step) {
        /* a lazy tensor that failed has set its own message */
        rc = fill_rc ? fill_rc
                     : mg_seterr(MG_ERR_IO, "cannot write '%s': %s: %s", path, step,
                                 strerror(errno));
        if (fd >= 0) close(fd);
        if (have_tmp) unlink(tmp);
    } else {
        rc = sync_dir(path, dir);
    }
    free(dir);
    free(tmp);
    free(meta.data);
    return rc;
}

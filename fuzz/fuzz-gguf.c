/* fuzz-gguf.c - libFuzzer harness for the GGUF reader (lib/gguf-read.c: gguf_open_memory).
 *
 * Each input is a GGUF image. When it parses, the harness walks everything the reader
 * exposes: every key (through every typed getter, whatever its type), every array (every
 * numeric element, every string with its length), every tensor (shape, type, byte count,
 * and every byte of its data range, which must lie inside the image), and checks the name
 * indexes (find_key / find_tensor give back the entry). Then a differential check of the
 * writer: the file is copied through gguf_writer (the keys of the types the writer has
 * setters for, and all tensors), serialized with gguf_write_memory, parsed again, and the
 * copy must hold exactly the same values and tensor bytes. */
#include "fuzz-common.h"

#include "gguf.h"
#include "quant.h"
#include "megalodon.h"

static volatile uint8_t sink; /* keeps the byte walks from being optimized away */

static int scalar_copyable(uint32_t type)
{
    switch (type) {
    case GGUF_TYPE_UINT32: case GGUF_TYPE_INT32: case GGUF_TYPE_UINT64: case GGUF_TYPE_INT64:
    case GGUF_TYPE_FLOAT32: case GGUF_TYPE_BOOL: case GGUF_TYPE_STRING: case GGUF_TYPE_ARRAY:
        return 1;
    default:
        return 0;
    }
}

static size_t elem_size(uint32_t t)
{
    switch (t) {
    case GGUF_TYPE_UINT8: case GGUF_TYPE_INT8: case GGUF_TYPE_BOOL: return 1;
    case GGUF_TYPE_UINT16: case GGUF_TYPE_INT16: return 2;
    case GGUF_TYPE_UINT32: case GGUF_TYPE_INT32: case GGUF_TYPE_FLOAT32: return 4;
    case GGUF_TYPE_UINT64: case GGUF_TYPE_INT64: case GGUF_TYPE_FLOAT64: return 8;
    default: return 0;
    }
}

/* Walk key i through every accessor; returns 1 if the writer can copy it exactly. */
static int walk_kv(const gguf_file *f, int64_t i)
{
    const char *key = gguf_key_name(f, i);
    FUZZ_ASSERT(key && *key, "key #%lld has no name", (long long)i);
    FUZZ_ASSERT(gguf_find_key(f, key) == i, "find_key('%s') != %lld", key, (long long)i);
    uint32_t type = gguf_kv_type(f, i);
    FUZZ_ASSERT(type < GGUF_TYPE_COUNT, "key '%s' type %u", key, type);
    uint32_t u32;
    int64_t i64;
    float f32;
    int b;
    const char *s;
    uint64_t len;
    (void)gguf_get_u32(f, key, &u32);
    (void)gguf_get_i64(f, key, &i64);
    (void)gguf_get_f32(f, key, &f32);
    (void)gguf_get_bool(f, key, &b);
    (void)gguf_get_u32_opt(f, key, &u32);
    (void)gguf_get_f32_opt(f, key, &f32);
    (void)gguf_get_bool_opt(f, key, &b);
    int copyable = scalar_copyable(type);
    if (gguf_get_str(f, key, &s, &len) == MG_OK) {
        FUZZ_ASSERT(type == GGUF_TYPE_STRING, "get_str on type %u", type);
        uint8_t acc = 0;
        for (uint64_t j = 0; j <= len; j++) acc ^= (uint8_t)s[j]; /* the NUL after it too */
        sink = acc;
        FUZZ_ASSERT(s[len] == '\0', "string value of '%s' not NUL-terminated", key);
        if (strlen(s) != len) copyable = 0; /* embedded NUL: gguf_set_str takes a C string */
    }
    if (type != GGUF_TYPE_ARRAY) {
        FUZZ_ASSERT(gguf_arr_n(f, i) == 0 && gguf_arr_data(f, i) == NULL &&
                        gguf_arr_str(f, i, 0, NULL) == NULL,
                    "array accessors on a scalar key");
        return copyable;
    }
    uint32_t at = gguf_arr_type(f, i);
    uint64_t n = gguf_arr_n(f, i);
    FUZZ_ASSERT(at < GGUF_TYPE_COUNT && at != GGUF_TYPE_ARRAY, "array type %u", at);
    FUZZ_ASSERT(n <= gguf_file_size(f), "array of %llu elements in %zu bytes",
                (unsigned long long)n, gguf_file_size(f));
    if (at == GGUF_TYPE_STRING) {
        FUZZ_ASSERT(gguf_arr_data(f, i) == NULL, "arr_data of a string array");
        for (uint64_t j = 0; j < n; j++) {
            uint64_t l = UINT64_MAX;
            const char *e = gguf_arr_str(f, i, j, &l);
            FUZZ_ASSERT(e && l <= gguf_file_size(f), "string #%llu", (unsigned long long)j);
            uint8_t acc = 0;
            for (uint64_t k = 0; k <= l; k++) acc ^= (uint8_t)e[k];
            sink = acc;
            FUZZ_ASSERT(e[l] == '\0', "array string not NUL-terminated");
            if (strlen(e) != l) copyable = 0;
        }
        FUZZ_ASSERT(gguf_arr_str(f, i, n, NULL) == NULL, "string past the end");
    } else {
        const uint8_t *d = gguf_arr_data(f, i);
        size_t es = elem_size(at);
        FUZZ_ASSERT(d != NULL && es > 0, "numeric array without data");
        uint8_t acc = 0;
        for (uint64_t j = 0; j < n * es; j++) acc ^= d[j];
        sink = acc;
        if (at == GGUF_TYPE_BOOL)
            for (uint64_t j = 0; j < n; j++) FUZZ_ASSERT(d[j] <= 1, "bool element %u", d[j]);
    }
    return copyable;
}

static void walk_tensor(const gguf_file *f, int64_t i)
{
    const gguf_tensor_info *t = gguf_tensor(f, i);
    FUZZ_ASSERT(t && t->name && *t->name, "tensor #%lld", (long long)i);
    FUZZ_ASSERT(gguf_find_tensor(f, t->name) == i, "find_tensor('%s')", t->name);
    FUZZ_ASSERT(t->n_dims >= 1 && t->n_dims <= GGUF_MAX_DIMS, "n_dims %u", t->n_dims);
    uint64_t n = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) {
        FUZZ_ASSERT(t->ne[d] >= 1, "ne[%d] = 0", d);
        FUZZ_ASSERT(d < (int)t->n_dims || t->ne[d] == 1, "unused dim %d is %llu", d,
                    (unsigned long long)t->ne[d]);
        n *= t->ne[d]; /* cannot overflow: checked by the reader (else UBSan says nothing, */
    }                  /* but the comparison below fails) */
    size_t rs = mg_row_size(t->type, t->ne[0]); /* 0: unknown type or partial blocks */
    FUZZ_ASSERT(rs > 0, "tensor '%s' type %u accepted", t->name, t->type);
    FUZZ_ASSERT(n == t->n_elements && t->n_bytes == n / t->ne[0] * rs, "tensor '%s' sizes",
                t->name);
    FUZZ_ASSERT(t->offset % gguf_alignment(f) == 0, "tensor '%s' misaligned", t->name);
    FUZZ_ASSERT(t->offset <= gguf_file_size(f) &&
                    t->n_bytes <= gguf_file_size(f) - t->offset,
                "tensor '%s' [%llu, +%llu) outside %zu bytes", t->name,
                (unsigned long long)t->offset, (unsigned long long)t->n_bytes,
                gguf_file_size(f));
    const uint8_t *d = t->data;
    uint8_t acc = 0;
    for (uint64_t j = 0; j < t->n_bytes; j++) acc ^= d[j]; /* ASan checks every byte */
    sink = acc;
    (void)gguf_type_name(t->type);
}

/* Copy key i of f into w (only called for copyable keys). */
static int copy_kv(const gguf_file *f, int64_t i, gguf_writer *w)
{
    const char *key = gguf_key_name(f, i);
    int64_t v;
    uint32_t u;
    float x;
    int b;
    const char *s;
    uint64_t len;
    switch (gguf_kv_type(f, i)) {
    case GGUF_TYPE_UINT32: FUZZ_ASSERT(!gguf_get_u32(f, key, &u), "u32"); return gguf_set_u32(w, key, u);
    case GGUF_TYPE_INT32: FUZZ_ASSERT(!gguf_get_i64(f, key, &v), "i32"); return gguf_set_i32(w, key, (int32_t)v);
    case GGUF_TYPE_UINT64:
        /* get_i64 fails above INT64_MAX: those values are not copied */
        if (gguf_get_i64(f, key, &v)) return 1;
        return gguf_set_u64(w, key, (uint64_t)v);
    case GGUF_TYPE_INT64: FUZZ_ASSERT(!gguf_get_i64(f, key, &v), "i64"); return gguf_set_i64(w, key, v);
    case GGUF_TYPE_FLOAT32: FUZZ_ASSERT(!gguf_get_f32(f, key, &x), "f32"); return gguf_set_f32(w, key, x);
    case GGUF_TYPE_BOOL: FUZZ_ASSERT(!gguf_get_bool(f, key, &b), "bool"); return gguf_set_bool(w, key, b);
    case GGUF_TYPE_STRING: FUZZ_ASSERT(!gguf_get_str(f, key, &s, &len), "str"); return gguf_set_str(w, key, s);
    case GGUF_TYPE_ARRAY: {
        uint32_t at = gguf_arr_type(f, i);
        uint64_t n = gguf_arr_n(f, i);
        if (at != GGUF_TYPE_STRING) return gguf_set_arr(w, key, at, gguf_arr_data(f, i), n);
        const char **v2 = malloc((n ? n : 1) * sizeof *v2);
        if (!v2) return 1;
        for (uint64_t j = 0; j < n; j++) v2[j] = gguf_arr_str(f, i, j, NULL);
        int rc = gguf_set_arr_str(w, key, v2, n);
        free(v2);
        return rc;
    }
    }
    return 1;
}

/* The copy g must hold key i of f with the same type and value. */
static void compare_kv(const gguf_file *f, int64_t i, const gguf_file *g)
{
    const char *key = gguf_key_name(f, i);
    int64_t j = gguf_find_key(g, key);
    FUZZ_ASSERT(j >= 0, "key '%s' lost in the copy", key);
    uint32_t type = gguf_kv_type(f, i);
    FUZZ_ASSERT(gguf_kv_type(g, j) == type, "key '%s' type %u -> %u", key, type,
                gguf_kv_type(g, j));
    int64_t a, b;
    float x, y;
    const char *s, *t;
    uint64_t ls, lt;
    switch (type) {
    case GGUF_TYPE_UINT32: case GGUF_TYPE_INT32: case GGUF_TYPE_UINT64: case GGUF_TYPE_INT64:
        FUZZ_ASSERT(!gguf_get_i64(f, key, &a) && !gguf_get_i64(g, key, &b) && a == b,
                    "key '%s' value", key);
        break;
    case GGUF_TYPE_BOOL: {
        int p, q;
        FUZZ_ASSERT(!gguf_get_bool(f, key, &p) && !gguf_get_bool(g, key, &q) && p == q,
                    "key '%s' value", key);
        break;
    }
    case GGUF_TYPE_FLOAT32:
        FUZZ_ASSERT(!gguf_get_f32(f, key, &x) && !gguf_get_f32(g, key, &y) &&
                        memcmp(&x, &y, sizeof x) == 0,
                    "key '%s' value", key);
        break;
    case GGUF_TYPE_STRING:
        FUZZ_ASSERT(!gguf_get_str(f, key, &s, &ls) && !gguf_get_str(g, key, &t, &lt) &&
                        ls == lt && memcmp(s, t, ls) == 0,
                    "key '%s' value", key);
        break;
    case GGUF_TYPE_ARRAY: {
        uint32_t at = gguf_arr_type(f, i);
        uint64_t n = gguf_arr_n(f, i);
        FUZZ_ASSERT(gguf_arr_type(g, j) == at && gguf_arr_n(g, j) == n, "key '%s' array", key);
        if (at == GGUF_TYPE_STRING) {
            for (uint64_t k = 0; k < n; k++) {
                s = gguf_arr_str(f, i, k, &ls);
                t = gguf_arr_str(g, j, k, &lt);
                FUZZ_ASSERT(ls == lt && memcmp(s, t, ls) == 0, "key '%s' string %llu", key,
                            (unsigned long long)k);
            }
        } else if (n) {
            FUZZ_ASSERT(memcmp(gguf_arr_data(f, i), gguf_arr_data(g, j), n * elem_size(at)) == 0,
                        "key '%s' array data", key);
        }
        break;
    }
    }
}

static void round_trip(const gguf_file *f, const uint8_t *copyable)
{
    if (gguf_alignment(f) > 4096) return; /* the writer would pad to it */
    gguf_writer *w = gguf_writer_new();
    if (!w) return;
    int rc = 0;
    for (int64_t i = 0; !rc && i < gguf_n_kv(f); i++)
        if (copyable[i]) rc = copy_kv(f, i, w);
    for (int64_t i = 0; !rc && i < gguf_n_tensors(f); i++) {
        const gguf_tensor_info *t = gguf_tensor(f, i);
        rc = gguf_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data);
    }
    void *buf = NULL;
    size_t size = 0;
    if (!rc) rc = gguf_write_memory(w, &buf, &size);
    gguf_writer_free(w);
    if (rc) { /* values the writer refuses (e.g. a u64 above INT64_MAX) */
        free(buf);
        return;
    }
    gguf_file *g = NULL;
    rc = gguf_open_memory(buf, size, &g);
    FUZZ_ASSERT(rc == MG_OK, "the writer's copy does not parse: %s", mg_last_error());
    for (int64_t i = 0; i < gguf_n_kv(f); i++)
        if (copyable[i] && !(gguf_kv_type(f, i) == GGUF_TYPE_UINT64 &&
                             gguf_get_i64(f, gguf_key_name(f, i), &(int64_t){0})))
            compare_kv(f, i, g);
    FUZZ_ASSERT(gguf_n_tensors(g) == gguf_n_tensors(f), "tensor count");
    for (int64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor_info *a = gguf_tensor(f, i), *b = gguf_tensor(g, i);
        FUZZ_ASSERT(strcmp(a->name, b->name) == 0 && a->type == b->type &&
                        a->n_dims == b->n_dims && a->n_bytes == b->n_bytes &&
                        memcmp(a->ne, b->ne, sizeof a->ne) == 0 &&
                        memcmp(a->data, b->data, a->n_bytes) == 0,
                    "tensor '%s' differs in the copy", a->name);
    }
    gguf_close(g);
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gguf_file *f = NULL;
    int rc = gguf_open_memory(data, size, &f);
    if (rc) {
        FUZZ_ASSERT(rc < 0 && f == NULL, "failed open left a handle (rc %d)", rc);
        FUZZ_ASSERT(strlen(mg_last_error()) > 0, "no error message");
        return 0;
    }
    FUZZ_ASSERT(gguf_version(f) == GGUF_VERSION, "version %u", gguf_version(f));
    uint64_t a = gguf_alignment(f);
    FUZZ_ASSERT(a && (a & (a - 1)) == 0, "alignment %llu", (unsigned long long)a);
    int64_t n_kv = gguf_n_kv(f);
    uint8_t *copyable = malloc(n_kv ? (size_t)n_kv : 1);
    if (!copyable) {
        gguf_close(f);
        return 0;
    }
    for (int64_t i = 0; i < n_kv; i++) copyable[i] = (uint8_t)walk_kv(f, i);
    FUZZ_ASSERT(gguf_key_name(f, n_kv) == NULL && gguf_kv_type(f, -1) == GGUF_TYPE_COUNT,
                "out-of-range key index");
    for (int64_t i = 0; i < gguf_n_tensors(f); i++) walk_tensor(f, i);
    FUZZ_ASSERT(gguf_tensor(f, gguf_n_tensors(f)) == NULL, "out-of-range tensor index");
    round_trip(f, copyable);
    free(copyable);
    gguf_close(f);
    return 0;
}

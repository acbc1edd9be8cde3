/* gguf-internal.h - what the GGUF reader (gguf-read.c) and writer (gguf-write.c) share:
 * the layout of an opened file (the writer's gguf_copy_kv reads a parsed key) and the small
 * encoding helpers. Internal to gguf-read.c and gguf-write.c; everything else uses gguf.h. */
#ifndef MG_GGUF_INTERNAL_H
#define MG_GGUF_INTERNAL_H

#include "gguf.h"
#include "quant.h"

#include "error.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf needs a little-endian host: tensor data is used in place"
#endif

/* Size of a scalar metadata value, 0 for STRING, ARRAY and invalid codes. */
static inline size_t kv_scalar_size(uint32_t t)
{
    switch (t) {
    case GGUF_TYPE_UINT8: case GGUF_TYPE_INT8: case GGUF_TYPE_BOOL: return 1;
    case GGUF_TYPE_UINT16: case GGUF_TYPE_INT16: return 2;
    case GGUF_TYPE_UINT32: case GGUF_TYPE_INT32: case GGUF_TYPE_FLOAT32: return 4;
    case GGUF_TYPE_UINT64: case GGUF_TYPE_INT64: case GGUF_TYPE_FLOAT64: return 8;
    }
    return 0;
}

static inline uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Round x up to a multiple of the power of two a; returns 0 on overflow. */
static inline int round_up(uint64_t x, uint64_t a, uint64_t *out)
{
    if (x > UINT64_MAX - (a - 1)) return 0;
    *out = (x + a - 1) & ~(a - 1);
    return 1;
}

static inline char *dup_bytes(const void *p, size_t n)
{
    char *s = malloc(n + 1);
    if (!s) return NULL;
    if (n) memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

/* Grow arr (elements of `elem` bytes, *cap of them) to hold at least `need`, zeroing the
 * new part. Returns the array, or NULL with the error set (arr is then unchanged). `need`
 * is already bounded by the file size, so only the doubling can overflow. */
static inline void *grow_array(void *arr, size_t *cap, size_t need, size_t elem)
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

/* An open-addressing hash set of names -> index (gguf-read.c), for duplicate detection
 * while parsing and for lookups. The names are owned elsewhere (by the kv or tensor arrays). */
struct name_slot {
    const char *name; /* NULL = empty */
    int64_t idx;
};

struct name_index {
    struct name_slot *slots;
    size_t mask; /* capacity - 1; capacity is a power of two */
    size_t count;
};

/* A parsed file (gguf-read.c): its keys with their values, and its tensors. */
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

/* The type info of a tensor whose rows have ne0 values, or an error (status) naming the
 * tensor (ctx) when the type is unknown or a row is not a whole number of its blocks
 * (gguf-read.c; the writer checks what it is given the same way). */
int gguf_check_type(const char *ctx, uint32_t type, uint64_t ne0, int status,
                    const mg_type_info **info);

#endif

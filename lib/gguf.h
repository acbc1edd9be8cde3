/* gguf.h - GGUF v3 reader and writer (internal to libmegalodon).
 *
 * File layout (all integers little-endian):
 *   u32 magic "GGUF" (0x46554747), u32 version (3), u64 n_tensors, u64 n_kv
 *   n_kv   x { string key, u32 type, value }
 *   n_tensors x { string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset }
 *   padding to `general.alignment` (default 32), then the data section;
 *   each tensor's offset is relative to the data section and a multiple of the alignment.
 *   string = u64 length + bytes (no NUL). ne[0] is the fastest-varying dimension, so a
 *   PyTorch tensor of shape (a, b) is stored with ne = {b, a}.
 *
 * The reader trusts nothing: every count, length, type, offset and size is checked against
 * the file size before use; tensor data is mapped with mmap (read-only, MAP_PRIVATE).
 * All functions that can fail return MG_OK (0) or a negative mg_status and set the
 * library's last error message (see error.h). */
#ifndef MG_GGUF_H
#define MG_GGUF_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define GGUF_MAGIC 0x46554747u /* "GGUF" little-endian */
#define GGUF_VERSION 3u
#define GGUF_DEFAULT_ALIGNMENT 32u

enum gguf_type {
    GGUF_TYPE_UINT8 = 0,
    GGUF_TYPE_INT8 = 1,
    GGUF_TYPE_UINT16 = 2,
    GGUF_TYPE_INT16 = 3,
    GGUF_TYPE_UINT32 = 4,
    GGUF_TYPE_INT32 = 5,
    GGUF_TYPE_FLOAT32 = 6,
    GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8,
    GGUF_TYPE_ARRAY = 9,
    GGUF_TYPE_UINT64 = 10,
    GGUF_TYPE_INT64 = 11,
    GGUF_TYPE_FLOAT64 = 12,
    GGUF_TYPE_COUNT
};

/* Tensor element types (the ggml numbering, only those we support). */
enum ggml_type {
    GGML_TYPE_F32 = 0,
    GGML_TYPE_F16 = 1,
    GGML_TYPE_Q4_0 = 2,
    GGML_TYPE_Q8_0 = 8,
    GGML_TYPE_Q4_K = 12,
    GGML_TYPE_Q6_K = 14,
    GGML_TYPE_Q8_K = 15,
    GGML_TYPE_I8 = 24,
    GGML_TYPE_I16 = 25,
    GGML_TYPE_I32 = 26,
    GGML_TYPE_I64 = 27,
    GGML_TYPE_F64 = 28,
    GGML_TYPE_BF16 = 30
};

#define GGUF_MAX_DIMS 4

/* Size in bytes of one element of a supported plain ggml type, 0 if unsupported or a block
 * type (lib/quant.h has the block sizes). */
size_t gguf_type_size(uint32_t ggml_type);
/* Name of a ggml type ("f32", "f16", ...) or "unknown". */
const char *gguf_type_name(uint32_t ggml_type);

/* ------------------------------------------------------------------ reader */

typedef struct gguf_file gguf_file;

typedef struct {
    const char *name;     /* NUL-terminated copy owned by the gguf_file */
    uint32_t n_dims;      /* 1..GGUF_MAX_DIMS */
    uint64_t ne[GGUF_MAX_DIMS]; /* unused dims are 1 */
    uint32_t type;        /* enum ggml_type */
    uint64_t n_elements;  /* product of ne */
    uint64_t n_bytes;     /* n_elements / values per block * bytes per block */
    uint64_t offset;      /* absolute offset in the file */
    const void *data;     /* points into the mapping */
} gguf_tensor_info;

/* Open and validate `path`. On success *out owns the mapping. */
int gguf_open(const char *path, gguf_file **out);
/* Parse an in-memory image (no copy is made; `buf` must outlive the handle). Used by
 * tests and fuzzers; validation is identical to gguf_open. */
int gguf_open_memory(const void *buf, size_t size, gguf_file **out);
void gguf_close(gguf_file *f);

uint32_t gguf_version(const gguf_file *f);
uint64_t gguf_alignment(const gguf_file *f);
size_t gguf_file_size(const gguf_file *f);

/* Key/value access. gguf_find_key returns the index or -1. */
int64_t gguf_n_kv(const gguf_file *f);
int64_t gguf_find_key(const gguf_file *f, const char *key);
const char *gguf_key_name(const gguf_file *f, int64_t i);
uint32_t gguf_kv_type(const gguf_file *f, int64_t i);        /* enum gguf_type */
uint32_t gguf_arr_type(const gguf_file *f, int64_t i);       /* element type of an ARRAY */
uint64_t gguf_arr_n(const gguf_file *f, int64_t i);          /* element count of an ARRAY */
const void *gguf_arr_data(const gguf_file *f, int64_t i);    /* numeric arrays only */
const char *gguf_arr_str(const gguf_file *f, int64_t i, uint64_t j, uint64_t *len); /* string arrays */

/* Typed getters: return MG_OK, or an error naming the key if it is missing or has another
 * type. Integer getters accept any integer type whose value fits. */
int gguf_get_u32(const gguf_file *f, const char *key, uint32_t *v);
int gguf_get_i64(const gguf_file *f, const char *key, int64_t *v);
int gguf_get_f32(const gguf_file *f, const char *key, float *v); /* FLOAT32 or FLOAT64 */
int gguf_get_bool(const gguf_file *f, const char *key, int *v);
int gguf_get_str(const gguf_file *f, const char *key, const char **v, uint64_t *len);
/* Like the getters above but leave *v unchanged and return MG_OK when the key is absent. */
int gguf_get_u32_opt(const gguf_file *f, const char *key, uint32_t *v);
int gguf_get_f32_opt(const gguf_file *f, const char *key, float *v);
int gguf_get_bool_opt(const gguf_file *f, const char *key, int *v);

int64_t gguf_n_tensors(const gguf_file *f);
int64_t gguf_find_tensor(const gguf_file *f, const char *name);   /* index or -1 */
const gguf_tensor_info *gguf_tensor(const gguf_file *f, int64_t i);

/* ------------------------------------------------------------------ writer */

typedef struct gguf_writer gguf_writer;

gguf_writer *gguf_writer_new(void);  /* NULL on out of memory (error set) */
void gguf_writer_free(gguf_writer *w);

/* Keys are copied. Setting an existing key replaces it. */
int gguf_set_u32(gguf_writer *w, const char *key, uint32_t v);
int gguf_set_i32(gguf_writer *w, const char *key, int32_t v);
int gguf_set_u64(gguf_writer *w, const char *key, uint64_t v);
int gguf_set_i64(gguf_writer *w, const char *key, int64_t v);
int gguf_set_f32(gguf_writer *w, const char *key, float v);
int gguf_set_bool(gguf_writer *w, const char *key, int v);
int gguf_set_str(gguf_writer *w, const char *key, const char *v);
/* Numeric array: elem_type is a gguf_type other than STRING/ARRAY; data is copied. */
int gguf_set_arr(gguf_writer *w, const char *key, uint32_t elem_type, const void *data, uint64_t n);
int gguf_set_arr_str(gguf_writer *w, const char *key, const char *const *v, uint64_t n);

/* Copy key #i of a file (any type) into the writer. */
int gguf_copy_kv(gguf_writer *w, const gguf_file *f, int64_t i);

/* Add a tensor; ne as in the file (ne[0] fastest). data is copied. */
int gguf_add_tensor(gguf_writer *w, const char *name, uint32_t ggml_type, uint32_t n_dims,
                    const uint64_t *ne, const void *data);

/* Add a tensor whose bytes are produced at write time: fill(user, name, buf, n_bytes) must
 * write the tensor's n_bytes bytes into buf and return MG_OK, or an error (its message set),
 * which aborts the write. The file writer holds one such buffer at a time, so that a file
 * can be written with about one tensor in memory; `user` must stay valid until then. */
typedef int (*gguf_fill_fn)(void *user, const char *name, void *buf, size_t n_bytes);
int gguf_add_tensor_lazy(gguf_writer *w, const char *name, uint32_t ggml_type, uint32_t n_dims,
                         const uint64_t *ne, gguf_fill_fn fill, void *user);

/* Write to `path` atomically: a temporary file in the same directory, fsync, rename, fsync
 * of the directory. On failure the previous file (if any) is untouched. */
int gguf_write_file(const gguf_writer *w, const char *path);
/* Serialize into a malloc'd buffer (caller frees). */
int gguf_write_memory(const gguf_writer *w, void **buf, size_t *size);

#ifdef __cplusplus
}
#endif
#endif

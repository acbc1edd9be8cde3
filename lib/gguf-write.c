/* gguf-write.c - GGUF v3 writer (see gguf.h for the format).
 *
 * Keys and tensors are collected in memory (keys in insertion order, a repeated key
 * replacing its value in place), then serialized in one pass: to a memory image, or to a
 * temporary file that is synced and renamed over the destination. */
#include "config.h" /* feature macros (_GNU_SOURCE) from configure */

#include "gguf-internal.h"
#include "quant.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

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
    int rc = gguf_check_type(ctx, ggml_type, ne[0], MG_ERR_INVALID_ARG, &ti);
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

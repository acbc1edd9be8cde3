/* test-gguf.c - the GGUF reader and writer: round trips, malformed input, random corruption
 * and atomic writes. */
#include "config.h" /* feature macros (_GNU_SOURCE) from configure */

#include "gguf.h"
#include "megalodon.h"
#include "test.h"

#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------ test data */

static float f32_data[15];  /* ne {3, 5} */
static uint16_t f16_data[7]; /* ne {7} */
static int32_t i32_data[12]; /* ne {2, 2, 3} */
static uint16_t bf16_data[10]; /* ne {5, 1, 1, 2} */
static int8_t i8_data[3];    /* ne {3} */
static double f64_data[2];   /* ne {2} */

struct texp {
    const char *name;
    uint32_t type, n_dims;
    uint64_t ne[GGUF_MAX_DIMS];
    const void *data;
    size_t n_bytes;
};

static const struct texp tensors[] = {
    {"w.f32", GGML_TYPE_F32, 2, {3, 5, 1, 1}, f32_data, sizeof f32_data},
    {"w.f16", GGML_TYPE_F16, 1, {7, 1, 1, 1}, f16_data, sizeof f16_data},
    {"w.i32", GGML_TYPE_I32, 3, {2, 2, 3, 1}, i32_data, sizeof i32_data},
    {"w.bf16", GGML_TYPE_BF16, 4, {5, 1, 1, 2}, bf16_data, sizeof bf16_data},
    {"w.i8", GGML_TYPE_I8, 1, {3, 1, 1, 1}, i8_data, sizeof i8_data},
    {"w.f64", GGML_TYPE_F64, 1, {2, 1, 1, 1}, f64_data, sizeof f64_data},
};
#define N_TENSORS (sizeof tensors / sizeof tensors[0])

static const float arr_f32[] = {1.5f, -2.0f, 3e10f};
static const uint8_t arr_u8[] = {1, 2, 3};
static const int64_t arr_i64[] = {-1, INT64_MAX, INT64_MIN};
static const uint8_t arr_bool[] = {0, 1, 1};
static const char *const arr_str[] = {"alpha", "", "gamma delta"};
static const char str_val[] = "h\xc3\xa9llo world";

static void init_data(void)
{
    for (int i = 0; i < 15; i++) f32_data[i] = (float)i * 0.5f - 3.0f;
    for (int i = 0; i < 7; i++) f16_data[i] = (uint16_t)(0x3c00 + i);
    for (int i = 0; i < 12; i++) i32_data[i] = i * 1000 - 5000;
    for (int i = 0; i < 10; i++) bf16_data[i] = (uint16_t)(0x3f80 + 3 * i);
    for (int i = 0; i < 3; i++) i8_data[i] = (int8_t)(i * 50 - 60);
    f64_data[0] = 3.141592653589793;
    f64_data[1] = -1e300;
}

/* A writer with every kind of key and the tensors above; align 0 = default alignment. */
static gguf_writer *make_writer(uint32_t align)
{
    gguf_writer *w = gguf_writer_new();
    CHECK(w != NULL, "gguf_writer_new");
    if (!w) return NULL;
    CHECK_OK(gguf_set_str(w, "general.architecture", "megalodon"));
    CHECK_OK(gguf_set_u32(w, "test.u32", 1)); /* replaced below, keeping its position */
    CHECK_OK(gguf_set_i32(w, "test.i32", -123456));
    CHECK_OK(gguf_set_u64(w, "test.u64", (1ull << 40) + 7));
    CHECK_OK(gguf_set_u64(w, "test.u64_big", UINT64_MAX));
    CHECK_OK(gguf_set_i64(w, "test.i64", -(1ll << 50)));
    CHECK_OK(gguf_set_f32(w, "test.f32", 3.25f));
    CHECK_OK(gguf_set_bool(w, "test.true", 5));
    CHECK_OK(gguf_set_bool(w, "test.false", 0));
    CHECK_OK(gguf_set_str(w, "test.str", str_val));
    CHECK_OK(gguf_set_str(w, "test.empty", ""));
    CHECK_OK(gguf_set_arr(w, "test.arr_f32", GGUF_TYPE_FLOAT32, arr_f32, 3));
    CHECK_OK(gguf_set_arr(w, "test.arr_u8", GGUF_TYPE_UINT8, arr_u8, 3));
    CHECK_OK(gguf_set_arr(w, "test.arr_i64", GGUF_TYPE_INT64, arr_i64, 3));
    CHECK_OK(gguf_set_arr(w, "test.arr_bool", GGUF_TYPE_BOOL, arr_bool, 3));
    CHECK_OK(gguf_set_arr(w, "test.arr_empty", GGUF_TYPE_INT32, NULL, 0));
    CHECK_OK(gguf_set_arr_str(w, "test.arr_str", arr_str, 3));
    CHECK_OK(gguf_set_u32(w, "test.u32", 0xdeadbeefu));
    if (align) CHECK_OK(gguf_set_u32(w, "general.alignment", align));
    for (size_t i = 0; i < N_TENSORS; i++)
        CHECK_OK(gguf_add_tensor(w, tensors[i].name, tensors[i].type, tensors[i].n_dims,
                                 tensors[i].ne, tensors[i].data));
    return w;
}

/* Check everything make_writer(align) stored. `buf` is the image for gguf_open_memory
 * handles (tensor data must point into it), NULL for mapped files. */
static void verify(const gguf_file *f, uint32_t align, const void *buf, size_t size)
{
    uint64_t a = align ? align : GGUF_DEFAULT_ALIGNMENT;
    CHECK(gguf_version(f) == 3, "version %u", gguf_version(f));
    CHECK(gguf_alignment(f) == a, "alignment %llu", (unsigned long long)gguf_alignment(f));
    CHECK(gguf_file_size(f) == size, "size %zu vs %zu", gguf_file_size(f), size);
    CHECK(gguf_n_kv(f) == (align ? 18 : 17), "n_kv %lld", (long long)gguf_n_kv(f));
    CHECK(gguf_find_key(f, "test.u32") == 1, "replaced key keeps its position");
    CHECK(strcmp(gguf_key_name(f, 0), "general.architecture") == 0, "key 0");
    CHECK(gguf_key_name(f, gguf_n_kv(f)) == NULL && gguf_key_name(f, -1) == NULL, "range");
    CHECK(gguf_kv_type(f, 2) == GGUF_TYPE_INT32, "kv type");
    CHECK(gguf_find_key(f, "nope") == -1, "find missing key");

    uint32_t u32 = 0;
    int64_t i64 = 0;
    float f32 = 0;
    int b = -1;
    const char *s = NULL;
    uint64_t len = 99;
    CHECK_OK(gguf_get_u32(f, "test.u32", &u32));
    CHECK(u32 == 0xdeadbeefu, "u32 %x", u32);
    CHECK_OK(gguf_get_i64(f, "test.u32", &i64));
    CHECK(i64 == 0xdeadbeefll, "u32 as i64");
    CHECK_OK(gguf_get_i64(f, "test.i32", &i64));
    CHECK(i64 == -123456, "i32 %lld", (long long)i64);
    CHECK_ERR(gguf_get_u32(f, "test.i32", &u32), MG_ERR_FORMAT, "does not fit in uint32");
    CHECK_OK(gguf_get_i64(f, "test.u64", &i64));
    CHECK(i64 == (1ll << 40) + 7, "u64");
    CHECK_ERR(gguf_get_u32(f, "test.u64", &u32), MG_ERR_FORMAT, "'test.u64'");
    CHECK_ERR(gguf_get_i64(f, "test.u64_big", &i64), MG_ERR_FORMAT, "does not fit in int64");
    CHECK_OK(gguf_get_i64(f, "test.i64", &i64));
    CHECK(i64 == -(1ll << 50), "i64");
    CHECK_OK(gguf_get_f32(f, "test.f32", &f32));
    CHECK(f32 == 3.25f, "f32 %g", f32);
    CHECK_OK(gguf_get_bool(f, "test.true", &b));
    CHECK(b == 1, "true");
    CHECK_OK(gguf_get_bool(f, "test.false", &b));
    CHECK(b == 0, "false");
    CHECK_OK(gguf_get_str(f, "test.str", &s, &len));
    CHECK(s && len == strlen(str_val) && strcmp(s, str_val) == 0, "str");
    CHECK_OK(gguf_get_str(f, "test.empty", &s, &len));
    CHECK(s && len == 0 && s[0] == '\0', "empty str");
    CHECK_OK(gguf_get_str(f, "general.architecture", &s, NULL));
    CHECK(strcmp(s, "megalodon") == 0, "architecture");

    /* wrong types and missing keys */
    CHECK_ERR(gguf_get_f32(f, "test.str", &f32), MG_ERR_FORMAT,
              "key 'test.str' has type string, expected float32");
    CHECK_ERR(gguf_get_bool(f, "test.u32", &b), MG_ERR_FORMAT, "has type uint32");
    CHECK_ERR(gguf_get_str(f, "test.u32", &s, NULL), MG_ERR_FORMAT, "expected string");
    CHECK_ERR(gguf_get_i64(f, "test.f32", &i64), MG_ERR_FORMAT, "has type float32");
    CHECK_ERR(gguf_get_u32(f, "test.arr_f32", &u32), MG_ERR_FORMAT, "array of float32");
    CHECK_ERR(gguf_get_u32(f, "nope", &u32), MG_ERR_FORMAT, "missing key 'nope'");
    CHECK_ERR(gguf_get_f32(f, "nope", &f32), MG_ERR_FORMAT, "missing key 'nope'");
    u32 = 77;
    f32 = 7.5f;
    b = 7;
    CHECK_OK(gguf_get_u32_opt(f, "nope", &u32));
    CHECK_OK(gguf_get_f32_opt(f, "nope", &f32));
    CHECK_OK(gguf_get_bool_opt(f, "nope", &b));
    CHECK(u32 == 77 && f32 == 7.5f && b == 7, "_opt leaves values unchanged");
    CHECK_OK(gguf_get_bool_opt(f, "test.true", &b));
    CHECK(b == 1, "bool_opt");
    CHECK_ERR(gguf_get_u32_opt(f, "test.str", &u32), MG_ERR_FORMAT, "has type string");
    CHECK_ERR(gguf_get_f32_opt(f, "test.true", &f32), MG_ERR_FORMAT, "has type bool");
    CHECK_ERR(gguf_get_bool_opt(f, "test.f32", &b), MG_ERR_FORMAT, "expected bool");

    /* arrays */
    int64_t k = gguf_find_key(f, "test.arr_f32");
    CHECK(gguf_kv_type(f, k) == GGUF_TYPE_ARRAY && gguf_arr_type(f, k) == GGUF_TYPE_FLOAT32 &&
          gguf_arr_n(f, k) == 3, "arr_f32 type/n");
    CHECK(gguf_arr_data(f, k) && memcmp(gguf_arr_data(f, k), arr_f32, sizeof arr_f32) == 0,
          "arr_f32 data");
    CHECK(gguf_arr_str(f, k, 0, NULL) == NULL, "arr_str on a numeric array");
    k = gguf_find_key(f, "test.arr_u8");
    CHECK(gguf_arr_n(f, k) == 3 && memcmp(gguf_arr_data(f, k), arr_u8, 3) == 0, "arr_u8");
    k = gguf_find_key(f, "test.arr_i64");
    CHECK(gguf_arr_type(f, k) == GGUF_TYPE_INT64 &&
          memcmp(gguf_arr_data(f, k), arr_i64, sizeof arr_i64) == 0, "arr_i64");
    CHECK(((uintptr_t)gguf_arr_data(f, k) & 7) == 0, "numeric arrays are aligned");
    k = gguf_find_key(f, "test.arr_bool");
    CHECK(gguf_arr_type(f, k) == GGUF_TYPE_BOOL && memcmp(gguf_arr_data(f, k), arr_bool, 3) == 0,
          "arr_bool");
    k = gguf_find_key(f, "test.arr_empty");
    CHECK(gguf_arr_type(f, k) == GGUF_TYPE_INT32 && gguf_arr_n(f, k) == 0, "arr_empty");
    k = gguf_find_key(f, "test.arr_str");
    CHECK(gguf_arr_type(f, k) == GGUF_TYPE_STRING && gguf_arr_n(f, k) == 3, "arr_str n");
    CHECK(gguf_arr_data(f, k) == NULL, "arr_data on a string array");
    for (uint64_t j = 0; j < 3; j++) {
        s = gguf_arr_str(f, k, j, &len);
        CHECK(s && len == strlen(arr_str[j]) && strcmp(s, arr_str[j]) == 0, "arr_str[%llu]",
              (unsigned long long)j);
    }
    CHECK(gguf_arr_str(f, k, 3, &len) == NULL, "arr_str past the end");
    k = gguf_find_key(f, "test.u32");
    CHECK(gguf_arr_n(f, k) == 0 && gguf_arr_data(f, k) == NULL &&
          gguf_arr_type(f, k) == GGUF_TYPE_COUNT, "arr_* on a scalar");
    CHECK(gguf_arr_n(f, -1) == 0 && gguf_arr_data(f, 1000) == NULL &&
          gguf_arr_str(f, 1000, 0, NULL) == NULL, "arr_* out of range");

    /* tensors */
    CHECK(gguf_n_tensors(f) == (int64_t)N_TENSORS, "n_tensors %lld", (long long)gguf_n_tensors(f));
    CHECK(gguf_tensor(f, -1) == NULL && gguf_tensor(f, N_TENSORS) == NULL, "tensor range");
    CHECK(gguf_find_tensor(f, "nope") == -1, "find missing tensor");
    uint64_t prev_end = 0;
    for (size_t i = 0; i < N_TENSORS; i++) {
        const struct texp *e = &tensors[i];
        CHECK(gguf_find_tensor(f, e->name) == (int64_t)i, "find %s", e->name);
        const gguf_tensor_info *t = gguf_tensor(f, (int64_t)i);
        if (!t) continue;
        CHECK(strcmp(t->name, e->name) == 0 && t->type == e->type && t->n_dims == e->n_dims,
              "%s: name/type/n_dims", e->name);
        CHECK(memcmp(t->ne, e->ne, sizeof t->ne) == 0, "%s: ne", e->name);
        uint64_t n_el = e->ne[0] * e->ne[1] * e->ne[2] * e->ne[3];
        CHECK(t->n_elements == n_el && t->n_bytes == e->n_bytes, "%s: sizes", e->name);
        CHECK(t->offset % a == 0, "%s: offset %llu not aligned to %llu", e->name,
              (unsigned long long)t->offset, (unsigned long long)a);
        CHECK(t->offset >= prev_end, "%s: overlaps the previous tensor", e->name);
        CHECK(t->offset + t->n_bytes <= size, "%s: past the end", e->name);
        prev_end = t->offset + t->n_bytes;
        if (buf) CHECK(t->data == (const uint8_t *)buf + t->offset, "%s: data pointer", e->name);
        CHECK(memcmp(t->data, e->data, e->n_bytes) == 0, "%s: data bytes", e->name);
    }
    CHECK(prev_end == size, "the file ends with the last tensor");
}

/* ------------------------------------------------------------------ helpers */

static char tmpdir[4096];

static void path_in(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", tmpdir, name);
}

/* Number of entries of dir whose name contains ".tmp." */
static int count_tmp_files(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (strstr(de->d_name, ".tmp.")) n++;
    closedir(d);
    return n;
}

static uint8_t *read_whole(const char *path, size_t *size)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    uint8_t *b = malloc(n > 0 ? (size_t)n : 1);
    if (b && fread(b, 1, (size_t)n, fp) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(fp);
    *size = (size_t)n;
    return b;
}

/* Parse a copy of b[0..n) held in an allocation of exactly n bytes (so that the sanitizer
 * sees any over-read), then release it; returns the status. */
static int open_bytes(const uint8_t *b, size_t n)
{
    uint8_t *copy = malloc(n ? n : 1);
    if (n) memcpy(copy, b, n);
    gguf_file *f = NULL;
    int rc = gguf_open_memory(n ? copy : NULL, n, &f);
    if (rc == MG_OK) CHECK(f != NULL, "handle on success");
    else CHECK(f == NULL && rc < 0, "no handle on failure, rc %d", rc);
    gguf_close(f);
    free(copy);
    return rc;
}

static size_t find_bytes(const uint8_t *hay, size_t n, const char *needle)
{
    size_t m = strlen(needle);
    for (size_t i = 0; i + m <= n; i++)
        if (memcmp(hay + i, needle, m) == 0) return i;
    return (size_t)-1;
}

/* A little builder for hand-assembled files. */
typedef struct {
    uint8_t *d;
    size_t n, cap;
} tbuf;

static void tb_put(tbuf *b, const void *p, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->d = realloc(b->d, b->cap);
    }
    memcpy(b->d + b->n, p, n);
    b->n += n;
}

static void tb_uint(tbuf *b, uint64_t v, size_t n)
{
    uint8_t p[8];
    for (size_t k = 0; k < n; k++) p[k] = (uint8_t)(v >> (8 * k));
    tb_put(b, p, n);
}

static void tb_str(tbuf *b, const char *s)
{
    tb_uint(b, strlen(s), 8);
    tb_put(b, s, strlen(s));
}

/* A key of type u8 and its value; the key is len bytes (it may hold a NUL). */
static void tb_kv_u8(tbuf *b, const char *key, size_t len, uint8_t v)
{
    tb_uint(b, len, 8);
    tb_put(b, key, len);
    tb_uint(b, GGUF_TYPE_UINT8, 4);
    tb_uint(b, v, 1);
}

static void tb_header(tbuf *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv)
{
    tb_uint(b, GGUF_MAGIC, 4);
    tb_uint(b, version, 4);
    tb_uint(b, n_tensors, 8);
    tb_uint(b, n_kv, 8);
}

static void tb_zeros(tbuf *b, size_t n)
{
    for (size_t i = 0; i < n; i++) tb_uint(b, 0, 1);
}

/* A file with one tensor "t" (no keys), padded to 32, followed by data_len zero bytes. */
static tbuf tensor_file(uint32_t n_dims, const uint64_t *ne, uint32_t type, uint64_t offset,
                        size_t data_len)
{
    tbuf b = {0};
    tb_header(&b, 3, 1, 0);
    tb_str(&b, "t");
    tb_uint(&b, n_dims, 4);
    for (uint32_t d = 0; d < n_dims; d++) tb_uint(&b, ne[d], 8);
    tb_uint(&b, type, 4);
    tb_uint(&b, offset, 8);
    tb_zeros(&b, (32 - b.n % 32) % 32);
    tb_zeros(&b, data_len);
    return b;
}

/* A file with one key "k" of the given type; the caller appends the value. */
static tbuf kv_file(uint32_t type)
{
    tbuf b = {0};
    tb_header(&b, 3, 0, 1);
    tb_str(&b, "k");
    tb_uint(&b, type, 4);
    return b;
}

/* Expect the assembled file to fail with status and substr; frees it. */
#define EXPECT_FAIL(tb, status, substr)                                                      \
    do {                                                                                     \
        tbuf tb_ = (tb);                                                                     \
        CHECK_ERR(open_bytes(tb_.d, tb_.n), status, substr);                                 \
        free(tb_.d);                                                                         \
    } while (0)

/* ------------------------------------------------------------------ tests */

static void test_round_trip(uint32_t align)
{
    gguf_writer *w = make_writer(align);
    if (!w) return;
    void *img = NULL;
    size_t size = 0;
    CHECK_OK(gguf_write_memory(w, &img, &size));
    gguf_file *f = NULL;
    CHECK_OK(gguf_open_memory(img, size, &f));
    if (f) verify(f, align, img, size);
    gguf_close(f);

    char path[4200];
    snprintf(path, sizeof path, "%s/round-trip-%u.gguf", tmpdir, align);
    CHECK_OK(gguf_write_file(w, path));
    size_t fsize = 0;
    uint8_t *fbytes = read_whole(path, &fsize);
    CHECK(fbytes && fsize == size && memcmp(fbytes, img, size) == 0,
          "file and memory images differ");
    free(fbytes);
    struct stat st;
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0644, "new file mode %o",
          (unsigned)(st.st_mode & 0777));
    f = NULL;
    CHECK_OK(gguf_open(path, &f));
    if (f) verify(f, align, NULL, size);
    gguf_close(f);
    CHECK(count_tmp_files(tmpdir) == 0, "temporary files left behind");
    unlink(path);
    free(img);
    gguf_writer_free(w);
}

static void test_scalar_kinds(void)
{
    /* Scalar types the writer has no setter for, assembled by hand. */
    tbuf b = {0};
    tb_header(&b, 3, 0, 4);
    tb_kv_u8(&b, "u8", 2, 200);
    tb_str(&b, "i16");
    tb_uint(&b, GGUF_TYPE_INT16, 4);
    tb_uint(&b, (uint16_t)-300, 2);
    tb_str(&b, "f64");
    tb_uint(&b, GGUF_TYPE_FLOAT64, 4);
    double d = 0.125;
    tb_put(&b, &d, 8);
    tb_str(&b, "f64big");
    tb_uint(&b, GGUF_TYPE_FLOAT64, 4);
    d = 1e300;
    tb_put(&b, &d, 8);
    gguf_file *f = NULL;
    CHECK_OK(gguf_open_memory(b.d, b.n, &f));
    if (f) {
        uint32_t u = 0;
        int64_t i = 0;
        float x = 0;
        CHECK_OK(gguf_get_u32(f, "u8", &u));
        CHECK(u == 200, "u8");
        CHECK_OK(gguf_get_i64(f, "i16", &i));
        CHECK(i == -300, "i16");
        CHECK_ERR(gguf_get_u32(f, "i16", &u), MG_ERR_FORMAT, "does not fit");
        CHECK_OK(gguf_get_f32(f, "f64", &x));
        CHECK(x == 0.125f, "f64 as f32");
        CHECK_ERR(gguf_get_f32(f, "f64big", &x), MG_ERR_FORMAT, "does not fit in float32");
        CHECK(gguf_n_tensors(f) == 0, "no tensors");
    }
    gguf_close(f);
    free(b.d);
}

static void test_writer_errors(void)
{
    gguf_writer *w = gguf_writer_new();
    uint64_t ne[4] = {4, 1, 1, 1};
    float data[4] = {0};
    CHECK_OK(gguf_add_tensor(w, "t", GGML_TYPE_F32, 1, ne, data));
    CHECK_ERR(gguf_add_tensor(w, "t", GGML_TYPE_F32, 1, ne, data), MG_ERR_INVALID_ARG,
              "duplicate tensor name 't'");
    CHECK_ERR(gguf_add_tensor(w, "q", 3, 1, ne, data), MG_ERR_INVALID_ARG,
              "unsupported ggml type 3");
    CHECK_ERR(gguf_add_tensor(w, "q", GGML_TYPE_Q8_0, 1, ne, data), MG_ERR_INVALID_ARG,
              "'q': type q8_0 stores rows in blocks of 32 values, but the row length ne[0] = 4");
    CHECK_ERR(gguf_add_tensor(w, "q", GGML_TYPE_F32, 5, ne, data), MG_ERR_INVALID_ARG,
              "n_dims 5");
    CHECK_ERR(gguf_add_tensor(w, "q", GGML_TYPE_F32, 0, ne, data), MG_ERR_INVALID_ARG,
              "n_dims 0");
    uint64_t ne0[1] = {0};
    CHECK_ERR(gguf_add_tensor(w, "q", GGML_TYPE_F32, 1, ne0, data), MG_ERR_INVALID_ARG,
              "ne[0]");
    CHECK_ERR(gguf_add_tensor(w, "", GGML_TYPE_F32, 1, ne, data), MG_ERR_INVALID_ARG, "name");
    CHECK_ERR(gguf_set_u32(w, "", 1), MG_ERR_INVALID_ARG, "key");
    CHECK_ERR(gguf_set_arr(w, "a", GGUF_TYPE_STRING, data, 1), MG_ERR_INVALID_ARG,
              "element type");
    uint8_t bad_bool[2] = {1, 2};
    CHECK_ERR(gguf_set_arr(w, "a", GGUF_TYPE_BOOL, bad_bool, 2), MG_ERR_INVALID_ARG, "bool");
    CHECK_ERR(gguf_set_str(w, "a", NULL), MG_ERR_INVALID_ARG, "NULL");
    void *img = NULL;
    size_t size = 0;
    CHECK_OK(gguf_set_u32(w, "general.alignment", 48));
    CHECK_ERR(gguf_write_memory(w, &img, &size), MG_ERR_INVALID_ARG, "power of two");
    CHECK(img == NULL && size == 0, "no image on failure");
    CHECK_OK(gguf_set_u64(w, "general.alignment", 64)); /* replaced, but the wrong type */
    CHECK_ERR(gguf_write_memory(w, &img, &size), MG_ERR_INVALID_ARG, "general.alignment");
    CHECK_OK(gguf_set_u32(w, "general.alignment", 1));
    CHECK_OK(gguf_write_memory(w, &img, &size));
    gguf_file *f = NULL;
    CHECK_OK(gguf_open_memory(img, size, &f));
    CHECK(f && gguf_alignment(f) == 1 && gguf_n_kv(f) == 1, "alignment 1");
    gguf_close(f);
    free(img);
    gguf_writer_free(w);
}

/* A small valid file (3 keys, 2 tensors) for the truncation and corruption tests. */
static void *small_image(size_t *size)
{
    gguf_writer *w = gguf_writer_new();
    const char *strs[2] = {"a", "bc"};
    float x[6] = {1, 2, 3, 4, 5, 6};
    uint64_t ne1[2] = {3, 2}, ne2[1] = {5};
    CHECK_OK(gguf_set_u32(w, "n", 7));
    CHECK_OK(gguf_set_str(w, "s", "xyz"));
    CHECK_OK(gguf_set_arr_str(w, "v", strs, 2));
    CHECK_OK(gguf_set_arr(w, "f", GGUF_TYPE_FLOAT32, x, 3));
    CHECK_OK(gguf_add_tensor(w, "a", GGML_TYPE_F32, 2, ne1, x));
    CHECK_OK(gguf_add_tensor(w, "b", GGML_TYPE_I8, 1, ne2, x));
    void *img = NULL;
    CHECK_OK(gguf_write_memory(w, &img, size));
    gguf_writer_free(w);
    return img;
}

/* alignment key: patch the value of a valid file */
static void test_bad_alignment(void)
{
    gguf_writer *w = gguf_writer_new();
    float x[8] = {0};
    uint64_t ne8[1] = {8};
    CHECK_OK(gguf_set_u32(w, "general.alignment", 64));
    CHECK_OK(gguf_add_tensor(w, "t", GGML_TYPE_F32, 1, ne8, x));
    void *aimg = NULL;
    size_t asize = 0;
    CHECK_OK(gguf_write_memory(w, &aimg, &asize));
    gguf_writer_free(w);
    size_t at = find_bytes(aimg, asize, "general.alignment");
    CHECK(at != (size_t)-1, "alignment key in the image");
    if (aimg && at != (size_t)-1) {
        uint8_t *a = malloc(asize);
        size_t val = at + strlen("general.alignment") + 4;
        memcpy(a, aimg, asize);
        CHECK_OK(open_bytes(a, asize));
        memset(a + val, 0, 4);
        CHECK_ERR(open_bytes(a, asize), MG_ERR_FORMAT, "non-zero power of two");
        a[val] = 48;
        CHECK_ERR(open_bytes(a, asize), MG_ERR_FORMAT, "'general.alignment' is 48");
        memcpy(a, aimg, asize);
        a[val - 4] = GGUF_TYPE_INT32;
        CHECK_ERR(open_bytes(a, asize), MG_ERR_FORMAT,
                  "key 'general.alignment' has type int32, expected uint32");
        /* alignment 16 instead of 64: the data section moves, the tensor no longer fits */
        memcpy(a, aimg, asize);
        a[val] = 16;
        int rc = open_bytes(a, asize);
        CHECK(rc == MG_OK || rc == MG_ERR_FORMAT, "alignment 16: rc %d", rc);
        free(a);
    }
    free(aimg);
}

static void test_bad_tensors(void)
{
    tbuf b;
    uint64_t ne[5] = {8, 1, 1, 1, 1};
    b = tensor_file(1, ne, GGML_TYPE_F32, 0, 32);
    CHECK_OK(open_bytes(b.d, b.n));
    free(b.d);
    EXPECT_FAIL(tensor_file(0, ne, GGML_TYPE_F32, 0, 32), MG_ERR_FORMAT, "n_dims 0");
    EXPECT_FAIL(tensor_file(5, ne, GGML_TYPE_F32, 0, 32), MG_ERR_FORMAT, "n_dims 5");
    EXPECT_FAIL(tensor_file(1, ne, 3, 0, 32), MG_ERR_FORMAT,
                "tensor 't': unsupported ggml type 3 (q4_1)");
    /* block types: whole blocks per row, n_elements / 32 * 34 bytes for q8_0 */
    EXPECT_FAIL(tensor_file(1, ne, GGML_TYPE_Q4_K, 0, 144), MG_ERR_FORMAT,
                "tensor 't': type q4_K stores rows in blocks of 256 values, but the row length"
                " ne[0] = 8 is not a multiple of 256");
    uint64_t ne_q[2] = {64, 3};
    b = tensor_file(2, ne_q, GGML_TYPE_Q8_0, 0, 6 * 34);
    CHECK_OK(open_bytes(b.d, b.n));
    free(b.d);
    EXPECT_FAIL(tensor_file(2, ne_q, GGML_TYPE_Q8_0, 0, 6 * 34 - 1), MG_ERR_FORMAT,
                "extends past end");
    EXPECT_FAIL(tensor_file(1, ne, 99, 0, 32), MG_ERR_FORMAT, "unsupported ggml type 99");
    EXPECT_FAIL(tensor_file(1, ne, GGML_TYPE_F32, 4, 64), MG_ERR_FORMAT,
                "offset 4 is not a multiple of the alignment 32");
    EXPECT_FAIL(tensor_file(1, ne, GGML_TYPE_F32, 0, 31), MG_ERR_FORMAT,
                "tensor 't': data [offset 0, 32 bytes] extends past end of file");
    EXPECT_FAIL(tensor_file(1, ne, GGML_TYPE_F32, 32, 32), MG_ERR_FORMAT, "extends past end");
    EXPECT_FAIL(tensor_file(1, ne, GGML_TYPE_F32, 1ull << 63, 32), MG_ERR_FORMAT,
                "extends past end");
    EXPECT_FAIL(tensor_file(1, ne, GGML_TYPE_F32, UINT64_MAX - 31, 32), MG_ERR_FORMAT,
                "extends past end");
    uint64_t ne_over[3] = {1ull << 32, 1ull << 32, 2};
    EXPECT_FAIL(tensor_file(3, ne_over, GGML_TYPE_F32, 0, 32), MG_ERR_FORMAT,
                "element count overflows");
    uint64_t ne_big[2] = {1ull << 31, 1ull << 31};
    EXPECT_FAIL(tensor_file(2, ne_big, GGML_TYPE_F64, 0, 32), MG_ERR_FORMAT,
                "exceed the file size");
    uint64_t ne_zero[2] = {4, 0};
    EXPECT_FAIL(tensor_file(2, ne_zero, GGML_TYPE_F32, 0, 32), MG_ERR_FORMAT, "ne[1] is 0");

    b = (tbuf){0};
    tb_header(&b, 3, 2, 0);
    for (int i = 0; i < 2; i++) {
        tb_str(&b, "same");
        tb_uint(&b, 1, 4);
        tb_uint(&b, 8, 8);
        tb_uint(&b, GGML_TYPE_F32, 4);
        tb_uint(&b, 0, 8);
    }
    tb_zeros(&b, (32 - b.n % 32) % 32 + 32);
    EXPECT_FAIL(b, MG_ERR_FORMAT, "duplicate tensor name 'same'");
}

static void test_bad_input(void)
{
    size_t size = 0;
    uint8_t *img = small_image(&size);
    if (!img) return;
    uint8_t *p = malloc(size);

    CHECK_ERR(open_bytes(img, 0), MG_ERR_FORMAT, "empty file");
    CHECK_OK(open_bytes(img, size));
    memcpy(p, img, size);
    p[0] = 'X';
    CHECK_ERR(open_bytes(p, size), MG_ERR_FORMAT, "not a GGUF file (bad magic)");
    memcpy(p, img, size);
    p[4] = 2;
    CHECK_ERR(open_bytes(p, size), MG_ERR_FORMAT, "unsupported GGUF version 2");
    p[4] = 1;
    CHECK_ERR(open_bytes(p, size), MG_ERR_FORMAT, "version 1");
    p[4] = 0;
    p[7] = 3;
    CHECK_ERR(open_bytes(p, size), MG_ERR_FORMAT, "big-endian");

    /* every proper prefix fails cleanly */
    int trunc_ok = 1;
    for (size_t n = 0; n < size; n++) {
        int rc = open_bytes(img, n);
        const char *m = mg_last_error();
        if (rc != MG_ERR_FORMAT || (n > 0 && !strstr(m, "truncated") &&
                                    !strstr(m, "implausible") && !strstr(m, "past end"))) {
            trunc_ok = 0;
            fprintf(stderr, "prefix %zu: rc %d: %s\n", n, rc, mg_last_error());
        }
    }
    CHECK(trunc_ok, "every truncation of the %zu-byte file fails cleanly", size);

    /* huge counts fail before any allocation is sized by them */
    tbuf b = {0};
    tb_header(&b, 3, 0, 1ull << 60);
    tb_zeros(&b, 100);
    EXPECT_FAIL(b, MG_ERR_FORMAT, "n_kv = 1152921504606846976");
    b = (tbuf){0};
    tb_header(&b, 3, 1ull << 60, 0);
    tb_zeros(&b, 100);
    EXPECT_FAIL(b, MG_ERR_FORMAT, "n_tensors");
    b = (tbuf){0};
    tb_header(&b, 3, UINT64_MAX, UINT64_MAX);
    EXPECT_FAIL(b, MG_ERR_FORMAT, "implausible");

    /* strings past the end */
    b = (tbuf){0};
    tb_header(&b, 3, 0, 1);
    tb_uint(&b, 1000000, 8);
    tb_put(&b, "abcdefgh", 8);
    EXPECT_FAIL(b, MG_ERR_FORMAT, "key #0 string length 1000000 exceeds remaining 8 bytes");
    b = kv_file(GGUF_TYPE_STRING);
    tb_uint(&b, 10, 8);
    tb_put(&b, "abc", 3);
    EXPECT_FAIL(b, MG_ERR_FORMAT, "key 'k' value string length 10 exceeds remaining 3");
    b = kv_file(GGUF_TYPE_ARRAY);
    tb_uint(&b, GGUF_TYPE_STRING, 4);
    tb_uint(&b, 2, 8);
    tb_str(&b, "ok");
    tb_uint(&b, UINT64_MAX, 8);
    tb_put(&b, "abcdefgh", 8);
    EXPECT_FAIL(b, MG_ERR_FORMAT, "array string #1 length");

    /* huge arrays */
    b = kv_file(GGUF_TYPE_ARRAY);
    tb_uint(&b, GGUF_TYPE_UINT64, 4);
    tb_uint(&b, 1ull << 61, 8);
    tb_zeros(&b, 64);
    EXPECT_FAIL(b, MG_ERR_FORMAT, "exceeds remaining");
    b = kv_file(GGUF_TYPE_ARRAY);
    tb_uint(&b, GGUF_TYPE_STRING, 4);
    tb_uint(&b, 1ull << 61, 8);
    tb_zeros(&b, 64);
    EXPECT_FAIL(b, MG_ERR_FORMAT, "strings exceeds remaining");

    /* types */
    b = kv_file(13);
    tb_zeros(&b, 8);
    EXPECT_FAIL(b, MG_ERR_FORMAT, "unknown value type 13");
    b = kv_file(GGUF_TYPE_ARRAY);
    tb_uint(&b, 77, 4);
    tb_uint(&b, 0, 8);
    EXPECT_FAIL(b, MG_ERR_FORMAT, "unknown array element type 77");
    b = kv_file(GGUF_TYPE_ARRAY);
    tb_uint(&b, GGUF_TYPE_ARRAY, 4);
    tb_uint(&b, 1, 8);
    tb_uint(&b, GGUF_TYPE_UINT8, 4);
    tb_uint(&b, 1, 8);
    tb_zeros(&b, 1);
    EXPECT_FAIL(b, MG_ERR_FORMAT, "nested arrays");
    b = kv_file(GGUF_TYPE_BOOL);
    tb_uint(&b, 2, 1);
    EXPECT_FAIL(b, MG_ERR_FORMAT, "bool value byte is 2");
    b = kv_file(GGUF_TYPE_ARRAY);
    tb_uint(&b, GGUF_TYPE_BOOL, 4);
    tb_uint(&b, 3, 8);
    tb_put(&b, "\x01\x00\x02", 3);
    EXPECT_FAIL(b, MG_ERR_FORMAT, "bool array element 2");

    /* keys */
    b = (tbuf){0};
    tb_header(&b, 3, 0, 2);
    tb_kv_u8(&b, "dup", 3, 1);
    tb_kv_u8(&b, "dup", 3, 2);
    EXPECT_FAIL(b, MG_ERR_FORMAT, "duplicate key 'dup'");
    b = (tbuf){0};
    tb_header(&b, 3, 0, 1);
    tb_kv_u8(&b, "a\0b", 3, 1);
    EXPECT_FAIL(b, MG_ERR_FORMAT, "NUL byte");
    b = (tbuf){0};
    tb_header(&b, 3, 0, 1);
    tb_kv_u8(&b, "", 0, 1);
    tb_zeros(&b, 8);
    EXPECT_FAIL(b, MG_ERR_FORMAT, "key #0: string is empty");

    test_bad_alignment();
    test_bad_tensors();

    free(p);
    free(img);
}

static uint64_t xorshift64(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static void test_corruption(void)
{
    size_t size = 0;
    uint8_t *img = small_image(&size);
    if (!img) return;
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    int n_ok = 0, bad_rc = 0, bad_range = 0;
    for (int it = 0; it < 2000; it++) {
        uint8_t *p = malloc(size);
        memcpy(p, img, size);
        int flips = 1 + (int)(xorshift64(&seed) % 4);
        for (int k = 0; k < flips; k++) {
            /* half of the flips go to the first 160 bytes, where the header and keys are */
            uint64_t r = xorshift64(&seed);
            size_t pos = (r & 1) ? (size_t)((r >> 8) % size) : (size_t)((r >> 8) % 160 % size);
            p[pos] ^= (uint8_t)(1 + (r >> 40) % 255);
        }
        gguf_file *f = NULL;
        int rc = gguf_open_memory(p, size, &f);
        if (rc == MG_OK) {
            n_ok++;
            for (int64_t i = 0; i < gguf_n_tensors(f); i++) {
                const gguf_tensor_info *t = gguf_tensor(f, i);
                const uint8_t *d = t->data;
                if (d < p || t->offset > size || t->n_bytes > size - t->offset ||
                    d != p + t->offset || t->n_bytes == 0)
                    bad_range++;
            }
            /* every accessor must be safe on whatever was accepted */
            for (int64_t i = 0; i < gguf_n_kv(f); i++) {
                const char *key = gguf_key_name(f, i);
                if (!key || gguf_find_key(f, key) != i) bad_range++;
                uint64_t n = gguf_arr_n(f, i), len = 0;
                for (uint64_t j = 0; j < n && gguf_arr_type(f, i) == GGUF_TYPE_STRING; j++) {
                    const char *s = gguf_arr_str(f, i, j, &len);
                    if (!s || strlen(s) > len) bad_range++;
                }
                uint32_t u;
                gguf_get_u32(f, key, &u);
            }
        } else if (rc >= 0 || f != NULL) {
            bad_rc++;
        }
        gguf_close(f);
        free(p);
    }
    CHECK(bad_rc == 0, "%d corrupt images failed without a negative status", bad_rc);
    CHECK(bad_range == 0, "%d accepted tensors/keys out of range", bad_range);
    CHECK(n_ok < 2000, "corruption was never detected");
    printf("corruption: %d of 2000 corrupted images accepted\n", n_ok);
    free(img);
}

static int get_u32_of(const char *path, const char *key, uint32_t *v)
{
    gguf_file *f = NULL;
    int rc = gguf_open(path, &f);
    if (rc == MG_OK) rc = gguf_get_u32(f, key, v);
    gguf_close(f);
    return rc;
}

static void test_atomic_write(void)
{
    char path[4200], bad[4200], dirpath[4200];
    path_in(path, sizeof path, "atomic.gguf");
    gguf_writer *w = gguf_writer_new();
    CHECK_OK(gguf_set_u32(w, "v", 1));
    CHECK_OK(gguf_write_file(w, path));
    chmod(path, 0600);
    CHECK_OK(gguf_set_u32(w, "v", 2));
    CHECK_OK(gguf_set_str(w, "extra", "more bytes than before"));
    CHECK_OK(gguf_write_file(w, path));
    uint32_t v = 0;
    CHECK_OK(get_u32_of(path, "v", &v));
    CHECK(v == 2, "the new file replaced the old one (v = %u)", v);
    struct stat st;
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600, "mode kept: %o",
          (unsigned)(st.st_mode & 0777));
    CHECK(count_tmp_files(tmpdir) == 0, "no temporary files after a successful write");

    /* a directory that does not exist */
    path_in(bad, sizeof bad, "no-such-dir/sub/x.gguf");
    CHECK_ERR(gguf_write_file(w, bad), MG_ERR_IO, "no-such-dir/sub/x.gguf");
    CHECK(strstr(mg_last_error(), strerror(ENOENT)) != NULL, "strerror in '%s'",
          mg_last_error());
    CHECK(count_tmp_files(tmpdir) == 0, "no temporary files after a failed write");

    /* the target is a directory: everything succeeds until the rename */
    path_in(dirpath, sizeof dirpath, "a-directory");
    CHECK(mkdir(dirpath, 0755) == 0, "mkdir %s", dirpath);
    CHECK_ERR(gguf_write_file(w, dirpath), MG_ERR_IO, "rename");
    CHECK(count_tmp_files(tmpdir) == 0, "temporary file removed after a failed rename");
    CHECK(stat(dirpath, &st) == 0 && S_ISDIR(st.st_mode), "the directory is untouched");
    rmdir(dirpath);

    /* a failure leaves the previous file intact (needs permissions to matter: not as root) */
    if (geteuid() != 0) {
        CHECK(chmod(tmpdir, 0555) == 0, "chmod");
        CHECK_OK(gguf_set_u32(w, "v", 3));
        CHECK_ERR(gguf_write_file(w, path), MG_ERR_IO, "atomic.gguf");
        chmod(tmpdir, 0755);
        v = 0;
        CHECK_OK(get_u32_of(path, "v", &v));
        CHECK(v == 2, "the old file survived a failed write (v = %u)", v);
        CHECK(count_tmp_files(tmpdir) == 0, "no temporary files after a failed write");
    }
    unlink(path);
    gguf_writer_free(w);
}

static void test_open_errors(void)
{
    char path[4200];
    gguf_file *f = (gguf_file *)&f; /* must be reset to NULL on failure */
    path_in(path, sizeof path, "does-not-exist.gguf");
    CHECK_ERR(gguf_open(path, &f), MG_ERR_IO, path);
    CHECK(f == NULL, "*out is NULL on failure");
    CHECK_ERR(gguf_open(tmpdir, &f), MG_ERR_IO, "not a regular file");

    path_in(path, sizeof path, "empty.gguf");
    FILE *fp = fopen(path, "wb");
    if (fp) fclose(fp);
    CHECK_ERR(gguf_open(path, &f), MG_ERR_FORMAT, "empty file");
    CHECK(strstr(mg_last_error(), path) != NULL, "path in '%s'", mg_last_error());

    /* a truncated file on disk: the error names the file and the problem */
    size_t size = 0;
    uint8_t *img = small_image(&size);
    fp = fopen(path, "wb");
    if (fp && img) fwrite(img, 1, size - 1, fp);
    if (fp) fclose(fp);
    CHECK_ERR(gguf_open(path, &f), MG_ERR_FORMAT, "extends past end of file");
    CHECK(strstr(mg_last_error(), path) != NULL, "path in '%s'", mg_last_error());
    unlink(path);
    free(img);
}

int main(void)
{
    init_data();
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/test-gguf.XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tmpdir)) TEST_SKIP("cannot create a temporary directory: %s", strerror(errno));

    CHECK(gguf_type_size(GGML_TYPE_F32) == 4 && gguf_type_size(GGML_TYPE_BF16) == 2 &&
          gguf_type_size(GGML_TYPE_I64) == 8 && gguf_type_size(2) == 0, "type sizes");
    CHECK(strcmp(gguf_type_name(GGML_TYPE_F16), "f16") == 0 &&
          strcmp(gguf_type_name(GGML_TYPE_Q4_K), "q4_K") == 0 &&
          strcmp(gguf_type_name(3), "unknown") == 0, "type names");

    test_round_trip(0);
    test_round_trip(64);
    test_round_trip(1);
    test_scalar_kinds();
    test_writer_errors();
    test_bad_input();
    test_corruption();
    test_atomic_write();
    test_open_errors();

    rmdir(tmpdir);
    return test_finish("test-gguf");
}

/* kl-base.c - the base file of megalodon-run perplexity --kl-base: for every scored token of
 * a document, the base model's distribution over the V logits, stored compactly; and the
 * comparison of another model's distributions with it.
 *
 * The file (little-endian) is a header of 80 bytes, then one record per scored token:
 *
 *     header  "MGKLBASE", u32 version (1), u32 V, u32 flags, u32 record bytes (20 + 2V),
 *             u64 start (the state's position before the document), u64 N (ids in the
 *             document), u64 FNV-1a of the N ids (as u32), i32 t_0, u32 0, f64 base NLL sum,
 *             u64 FNV-1a of the records, u64 FNV-1a of the 72 bytes before it
 *     record  i32 token t_i, i32 the base's most likely token, f32 its nll_i, f32 lo,
 *             f32 step, u16 code[V]
 *
 * The log-probabilities lp_v = logit_v - logsumexp(logits) (double) are stored as
 *     code_v = round((lp_v - lo) / step),  lo <= min lp_v,  step >= (max lp_v - lo) / 65535,
 * so each reconstructed lo + step * code_v is within d = step / 2 of lp_v; for a V = 32000
 * vocabulary a record is 64,020 bytes. Renormalizing the reconstruction gives log p^ within
 * 2d of log p, and the KL computed from it is within
 *     e * e^{2d} (E_p^|log p^ - log q| + 2d) + e^2,   e = e^{2d} - 1,
 * of KL(p || q) (the first term bounds sum (p^ - p)(log p - log q), the second KL(p^ || p)
 * through the chi-square divergence). For logits spanning 30 nats d = 2.3e-4; with the same
 * model as base (log p = log q) the bound is about 4 d^2 = 2e-7 nats per token. The sum of
 * the bounds is reported with the result.
 *
 * Writing streams the records (the memory does not grow with the document) into a
 * temporary file beside the target, completes the header at the end, syncs and renames it;
 * reading checks the header (and the file's size) first, each record's token as it comes,
 * and the checksums at the end. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "args.h"
#include "kl-base.h"

#define KL_VERSION 1
static const char kl_magic[8] = {'M', 'G', 'K', 'L', 'B', 'A', 'S', 'E'};

struct kl_file {
    FILE *fp;
    char *path, *tmp; /* tmp: the temporary file while writing (NULL once renamed) */
    int writing;
    int32_t V;
    uint32_t flags;
    uint64_t start, n_ids, doc_hash, data_hash; /* counted / hashed as records pass */
    int32_t first;
    double nll;       /* writing: the NLL sum */
    uint64_t n_base;  /* reading: ids in the base's document */
    uint64_t want_doc_hash, want_data_hash;
    unsigned char *rec; /* one record */
    double *lp;         /* V log-probabilities */
    kl_stats st;
};

/* ---------------------------------------------------------------- bytes */

#define FNV_OFFSET 14695981039346656037ull
#define FNV_PRIME 1099511628211ull

static uint64_t fnv1a(uint64_t h, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * FNV_PRIME;
    return h;
}

static void put_u16(unsigned char *p, uint32_t x) { p[0] = (unsigned char)x; p[1] = (unsigned char)(x >> 8); }
static void put_u32(unsigned char *p, uint32_t x)
{
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(x >> (8 * i));
}
static void put_u64(unsigned char *p, uint64_t x)
{
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(x >> (8 * i));
}
static void put_f32(unsigned char *p, float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    put_u32(p, u);
}
static uint32_t get_u16(const unsigned char *p) { return p[0] | (uint32_t)p[1] << 8; }
static uint32_t get_u32(const unsigned char *p)
{
    return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get_u64(const unsigned char *p) { return get_u32(p) | (uint64_t)get_u32(p + 4) << 32; }
static float get_f32(const unsigned char *p)
{
    uint32_t u = get_u32(p);
    float x;
    memcpy(&x, &u, 4);
    return x;
}

static uint64_t hash_id(uint64_t h, int32_t id)
{
    unsigned char b[4];
    put_u32(b, (uint32_t)id);
    return fnv1a(h, b, 4);
}

/* ---------------------------------------------------------------- the header */

static void header_pack(const kl_file *f, unsigned char *h)
{
    memset(h, 0, KL_HEADER_BYTES);
    memcpy(h, kl_magic, 8);
    put_u32(h + 8, KL_VERSION);
    put_u32(h + 12, (uint32_t)f->V);
    put_u32(h + 16, f->flags);
    put_u32(h + 20, (uint32_t)KL_RECORD_BYTES(f->V));
    put_u64(h + 24, f->start);
    put_u64(h + 32, f->n_ids);
    put_u64(h + 40, f->doc_hash);
    put_u32(h + 48, (uint32_t)f->first);
    uint64_t nll_bits;
    memcpy(&nll_bits, &f->nll, 8);
    put_u64(h + 56, nll_bits);
    put_u64(h + 64, f->data_hash);
    put_u64(h + 72, fnv1a(FNV_OFFSET, h, 72));
}

static kl_file *kl_new(const char *path, int32_t V, int writing)
{
    kl_file *f = calloc(1, sizeof *f);
    if (!f) return NULL;
    f->writing = writing;
    f->V = V;
    f->path = strdup(path);
    f->rec = malloc(KL_RECORD_BYTES(V));
    f->lp = malloc((size_t)V * sizeof *f->lp);
    f->doc_hash = f->data_hash = FNV_OFFSET;
    f->st.max = 0.0;
    if (!f->path || !f->rec || !f->lp) {
        kl_free(f);
        return NULL;
    }
    return f;
}

void kl_free(kl_file *f)
{
    if (!f) return;
    if (f->fp) fclose(f->fp);
    if (f->tmp) unlink(f->tmp); /* an incomplete base file never replaces the target */
    free(f->tmp);
    free(f->path);
    free(f->rec);
    free(f->lp);
    free(f);
}

const kl_stats *kl_file_stats(const kl_file *f) { return &f->st; }

/* ---------------------------------------------------------------- log-probabilities */

/* lp_v = l_v - logsumexp(l) in double; *top: the first most likely token. Non-finite logits
 * are an error (their distribution cannot be stored or compared). */
static int log_softmax(const float *l, int32_t V, double *lp, int32_t *top, size_t pos)
{
    int32_t t = 0;
    for (int32_t v = 1; v < V; v++) t = l[v] > l[t] ? v : t;
    const double m = l[t];
    double sum = 0.0;
    for (int32_t v = 0; v < V; v++) {
        if (!isfinite(l[v]))
            return run_error(EXIT_RUNTIME, "--kl-base: non-finite logit at token %zu", pos);
        sum += exp((double)l[v] - m);
    }
    const double lse = m + log(sum);
    for (int32_t v = 0; v < V; v++) lp[v] = (double)l[v] - lse;
    *top = t;
    return EXIT_OK;
}

/* ---------------------------------------------------------------- writing */

int kl_save_open(const char *path, int32_t V, uint32_t flags, uint64_t start, int32_t first,
                 kl_file **out)
{
    *out = NULL;
    kl_file *f = kl_new(path, V, 1);
    static const char suffix[] = ".tmp.XXXXXX";
    if (f) f->tmp = malloc(strlen(path) + sizeof suffix);
    if (!f || !f->tmp) {
        kl_free(f);
        return run_error(EXIT_RUNTIME, "out of memory for --kl-base");
    }
    f->flags = flags;
    f->start = start;
    f->first = first;
    f->n_ids = 1;
    f->doc_hash = hash_id(f->doc_hash, first);
    strcpy(f->tmp, path);
    strcat(f->tmp, suffix);
    int fd = mkstemp(f->tmp);
    if (fd < 0) {
        int e = errno;
        free(f->tmp);
        f->tmp = NULL;
        kl_free(f);
        return run_error(EXIT_RUNTIME, "cannot write --kl-base '%s': %s", path, strerror(e));
    }
    /* mkstemp makes the file 0600: keep the mode of the file being replaced, else 0644 */
    struct stat st;
    (void)fchmod(fd, stat(path, &st) == 0 ? (st.st_mode & 0777) : 0644);
    unsigned char h[KL_HEADER_BYTES] = {0}; /* completed at the end */
    if (!(f->fp = fdopen(fd, "wb")) || fwrite(h, 1, sizeof h, f->fp) != sizeof h) {
        if (!f->fp) close(fd);
        int e = errno;
        kl_free(f);
        return run_error(EXIT_RUNTIME, "cannot write --kl-base '%s': %s", path, strerror(e));
    }
    *out = f;
    return EXIT_OK;
}

int kl_save_token(kl_file *f, const float *logits, int32_t token)
{
    const int32_t V = f->V;
    int32_t top = 0;
    int rc = log_softmax(logits, V, f->lp, &top, (size_t)f->n_ids);
    if (rc) return rc;
    double lo = f->lp[0], hi = f->lp[0];
    for (int32_t v = 1; v < V; v++) {
        lo = f->lp[v] < lo ? f->lp[v] : lo;
        hi = f->lp[v] > hi ? f->lp[v] : hi;
    }
    /* float lo <= min lp and lo + 65535 step >= max lp, so every code is in range */
    float lo_f = (float)lo;
    if ((double)lo_f > lo) lo_f = nextafterf(lo_f, -INFINITY);
    float step = (float)((hi - lo_f) / 65535.0);
    if ((double)lo_f + 65535.0 * step < hi) step = nextafterf(step, INFINITY);
    unsigned char *r = f->rec;
    put_u32(r, (uint32_t)token);
    put_u32(r + 4, (uint32_t)top);
    const double nll = -f->lp[token];
    put_f32(r + 8, (float)nll);
    put_f32(r + 12, lo_f);
    put_f32(r + 16, step);
    for (int32_t v = 0; v < V; v++) {
        double c = step > 0 ? nearbyint((f->lp[v] - lo_f) / step) : 0.0;
        c = c < 0 ? 0 : c > 65535 ? 65535 : c;
        put_u16(r + 20 + 2 * (size_t)v, (uint32_t)c);
    }
    const size_t n = KL_RECORD_BYTES(V);
    if (fwrite(r, 1, n, f->fp) != n)
        return run_error(EXIT_RUNTIME, "cannot write --kl-base '%s': %s", f->tmp, strerror(errno));
    f->data_hash = fnv1a(f->data_hash, r, n);
    f->doc_hash = hash_id(f->doc_hash, token);
    f->n_ids++;
    f->nll += nll;
    return EXIT_OK;
}

int kl_save_close(kl_file *f)
{
    unsigned char h[KL_HEADER_BYTES];
    header_pack(f, h);
    int bad = fseek(f->fp, 0, SEEK_SET) != 0 || fwrite(h, 1, sizeof h, f->fp) != sizeof h ||
              fflush(f->fp) != 0 || fsync(fileno(f->fp)) != 0;
    bad |= fclose(f->fp) != 0;
    f->fp = NULL;
    if (bad || rename(f->tmp, f->path) != 0)
        return run_error(EXIT_RUNTIME, "cannot write --kl-base '%s': %s", f->path, strerror(errno));
    free(f->tmp);
    f->tmp = NULL;
    return EXIT_OK;
}

/* ---------------------------------------------------------------- reading */

/* Check the header h of a file of `size` bytes against this run; messages name the file. */
static int header_check(kl_file *f, const unsigned char *h, long long size, uint32_t flags,
                        uint64_t start, int32_t first, uint64_t n_tokens)
{
    const char *p = f->path;
    if (memcmp(h, kl_magic, 8) != 0)
        return run_error(EXIT_RUNTIME, "--kl-base '%s' is not a base file (written by --kl-save)", p);
    if (get_u32(h + 8) != KL_VERSION)
        return run_error(EXIT_RUNTIME, "--kl-base '%s': version %u, this program reads %d", p,
                         get_u32(h + 8), KL_VERSION);
    if (get_u64(h + 72) != fnv1a(FNV_OFFSET, h, 72))
        return run_error(EXIT_RUNTIME, "--kl-base '%s': the header is corrupted (checksum)", p);
    const uint32_t V = get_u32(h + 12), fl = get_u32(h + 16);
    const uint64_t n = get_u64(h + 32), st = get_u64(h + 24);
    if (V != (uint32_t)f->V)
        return run_error(EXIT_RUNTIME, "--kl-base '%s' was written for %u logits per token; this "
                         "model has %d (another vocabulary)", p, V, (int)f->V);
    if (get_u32(h + 20) != KL_RECORD_BYTES(V) || n < 2)
        return run_error(EXIT_RUNTIME, "--kl-base '%s': the header is corrupted", p);
    if (fl != flags)
        return run_error(EXIT_RUNTIME, "--kl-base '%s' was written %s --official-window; give the "
                         "same scoring options", p, fl & KL_OFFICIAL_WINDOW ? "with" : "without");
    if (st != start)
        return run_error(EXIT_RUNTIME, "--kl-base '%s' was written from position %llu (--state-in); "
                         "this run starts at %llu", p, (unsigned long long)st, (unsigned long long)start);
    if (n_tokens && n != n_tokens)
        return run_error(EXIT_RUNTIME, "--kl-base '%s' was written for a document of %llu tokens; "
                         "this one has %llu", p, (unsigned long long)n, (unsigned long long)n_tokens);
    if ((int32_t)get_u32(h + 48) != first)
        return run_error(EXIT_RUNTIME, "--kl-base '%s' was written for another document (its first "
                         "token is %d, this one's %d)", p, (int)get_u32(h + 48), (int)first);
    const long long want = KL_HEADER_BYTES + (long long)(n - 1) * (long long)KL_RECORD_BYTES(V);
    if (n > (1ull << 40) || size != want)
        return run_error(EXIT_RUNTIME, "--kl-base '%s' is %s: %lld bytes, its header says %lld", p,
                         size < want ? "truncated" : "too long", size, want);
    f->n_base = n;
    f->want_doc_hash = get_u64(h + 40);
    f->want_data_hash = get_u64(h + 64);
    uint64_t nll_bits = get_u64(h + 56);
    memcpy(&f->st.base_nll, &nll_bits, 8);
    return EXIT_OK;
}

int kl_read_open(const char *path, int32_t V, uint32_t flags, uint64_t start, int32_t first,
                 uint64_t n_tokens, kl_file **out)
{
    *out = NULL;
    kl_file *f = kl_new(path, V, 0);
    if (!f) return run_error(EXIT_RUNTIME, "out of memory for --kl-base");
    struct stat st;
    unsigned char h[KL_HEADER_BYTES];
    f->fp = fopen(path, "rb");
    if (!f->fp || fstat(fileno(f->fp), &st) != 0 || !S_ISREG(st.st_mode)) {
        int e = f->fp ? EISDIR : errno;
        kl_free(f);
        return run_error(EXIT_RUNTIME, "cannot read --kl-base '%s': %s (write one with "
                         "--kl-base FILE --kl-save)", path, strerror(e));
    }
    if (fread(h, 1, sizeof h, f->fp) != sizeof h) {
        kl_free(f);
        return run_error(EXIT_RUNTIME, "--kl-base '%s' is truncated: %lld bytes, less than a header",
                         path, (long long)st.st_size);
    }
    int rc = header_check(f, h, (long long)st.st_size, flags, start, first, n_tokens);
    if (rc) {
        kl_free(f);
        return rc;
    }
    f->first = first;
    f->n_ids = 1;
    f->doc_hash = hash_id(f->doc_hash, first);
    *out = f;
    return EXIT_OK;
}

/* Count x in the histogram: bin 0 below 1e-12, the last at 1e4 and above. */
static void hist_add(kl_stats *s, double x)
{
    double b = x > 0 ? floor((log10(x) - KL_DECADE_LO) * KL_BINS_PER_DECADE) : -1.0;
    size_t i = b < 0 ? 0 : b >= KL_BINS - 2 ? KL_BINS - 1 : (size_t)b + 1;
    s->hist[i]++;
}

double kl_stats_quantile(const kl_stats *s, double q)
{
    if (s->n == 0) return 0.0;
    /* the k-th smallest value, k = ceil(q n) */
    uint64_t k = (uint64_t)ceil(q * (double)s->n), c = 0;
    k = k < 1 ? 1 : k;
    size_t i = 0;
    while (i < KL_BINS - 1 && (c += s->hist[i]) < k) i++;
    if (i == 0) return s->max < 1e-12 ? s->max : 1e-12;
    if (i == KL_BINS - 1) return s->max;
    double x = pow(10.0, KL_DECADE_LO + ((double)i - 0.5) / KL_BINS_PER_DECADE);
    return x < s->max ? x : s->max;
}

/* KL(p^ || q) of the record in f->rec and the logits; *bound: its representation error */
static double record_kl(kl_file *f, const float *l, double *bound)
{
    const int32_t V = f->V;
    const unsigned char *r = f->rec;
    const double lo = get_f32(r + 12), step = get_f32(r + 16);
    double m = -INFINITY, lm = -INFINITY;
    for (int32_t v = 0; v < V; v++) {
        f->lp[v] = lo + step * get_u16(r + 20 + 2 * (size_t)v);
        m = f->lp[v] > m ? f->lp[v] : m;
        lm = l[v] > lm ? l[v] : lm;
    }
    double sp = 0.0, sq = 0.0;
    for (int32_t v = 0; v < V; v++) {
        sp += exp(f->lp[v] - m);
        sq += exp((double)l[v] - lm);
    }
    const double lse_p = m + log(sp), lse_q = lm + log(sq);
    double kl = 0.0, abs_d = 0.0; /* sum p (log p - log q), sum p |log p - log q| */
    for (int32_t v = 0; v < V; v++) {
        const double lp = f->lp[v] - lse_p, d = lp - ((double)l[v] - lse_q), p = exp(lp);
        kl += p * d;
        abs_d += p * fabs(d);
    }
    const double d = step / 2, e = expm1(2 * d);
    *bound = e * exp(2 * d) * (abs_d + 2 * d) + e * e;
    return kl;
}

int kl_read_token(kl_file *f, const float *logits, int32_t token, double *kl)
{
    const char *p = f->path;
    const size_t pos = (size_t)f->n_ids, n = KL_RECORD_BYTES(f->V);
    if (f->n_ids >= f->n_base)
        return run_error(EXIT_RUNTIME, "the document is longer than that of --kl-base '%s' (%llu "
                         "tokens)", p, (unsigned long long)f->n_base);
    if (fread(f->rec, 1, n, f->fp) != n)
        return run_error(EXIT_RUNTIME, "cannot read --kl-base '%s' at token %zu: %s", p, pos,
                         ferror(f->fp) ? strerror(errno) : "truncated");
    const unsigned char *r = f->rec;
    const int32_t t = (int32_t)get_u32(r), top = (int32_t)get_u32(r + 4);
    const float nll = get_f32(r + 8), lo = get_f32(r + 12), step = get_f32(r + 16);
    if (t != token)
        return run_error(EXIT_RUNTIME, "the document differs from that of --kl-base '%s' at token "
                         "%zu (id %d there, %d here)", p, pos, (int)t, (int)token);
    if (top < 0 || top >= f->V || !isfinite(nll) || !isfinite(lo) || !isfinite(step) || step < 0 ||
        !isfinite(lo + 65535.0 * step))
        return run_error(EXIT_RUNTIME, "--kl-base '%s' is corrupted at token %zu", p, pos);
    int32_t mt = 0;
    for (int32_t v = 1; v < f->V; v++) mt = logits[v] > logits[mt] ? v : mt;
    double bound, x = record_kl(f, logits, &bound);
    if (!isfinite(x))
        return run_error(EXIT_RUNTIME, "--kl-base: non-finite KL at token %zu", pos);
    f->data_hash = fnv1a(f->data_hash, r, n);
    f->doc_hash = hash_id(f->doc_hash, token);
    f->n_ids++;
    /* Welford's running mean and squared deviations */
    kl_stats *s = &f->st;
    s->n++;
    const double dx = x - s->mean;
    s->mean += dx / (double)s->n;
    s->m2 += dx * (x - s->mean);
    s->max = s->n == 1 || x > s->max ? x : s->max;
    s->bound += bound;
    s->agree += mt == top;
    hist_add(s, x);
    *kl = x;
    return EXIT_OK;
}

int kl_read_close(kl_file *f)
{
    if (f->n_ids != f->n_base)
        return run_error(EXIT_RUNTIME, "the document is shorter than that of --kl-base '%s' (%llu "
                         "tokens here, %llu there)", f->path, (unsigned long long)f->n_ids,
                         (unsigned long long)f->n_base);
    if (f->data_hash != f->want_data_hash)
        return run_error(EXIT_RUNTIME, "--kl-base '%s' is corrupted (the records' checksum differs)",
                         f->path);
    if (f->doc_hash != f->want_doc_hash)
        return run_error(EXIT_RUNTIME, "the document differs from that of --kl-base '%s' (hash)",
                         f->path);
    return EXIT_OK;
}

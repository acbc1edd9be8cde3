/* kl-base.h - megalodon-run perplexity --kl-base: the base file of a document's next-token
 * distributions, written by one model (--kl-save) and compared with another's (KL divergence,
 * top-1 agreement, perplexity ratio). The format and its error are described in
 * kl-base.c and docs/megalodon-run.md. */
#ifndef MG_RUN_KL_BASE_H
#define MG_RUN_KL_BASE_H

#include <stddef.h>
#include <stdint.h>

/* the scoring options that change the distributions (header field `flags`) */
enum { KL_OFFICIAL_WINDOW = 1u };

/* the bytes of the header and of one scored token's record (V logits per token) */
#define KL_HEADER_BYTES 80
#define KL_RECORD_BYTES(V) (20 + 2 * (size_t)(V))

/* the histogram of KL values behind the percentile: 100 bins per decade over [1e-12, 1e4),
 * plus one bin below and one above */
#define KL_DECADE_LO (-12)
#define KL_DECADES 16
#define KL_BINS_PER_DECADE 100
#define KL_BINS (KL_DECADES * KL_BINS_PER_DECADE + 2)

/* What the comparison found, over the tokens compared so far. */
typedef struct {
    size_t n;          /* scored tokens compared */
    size_t agree;      /* tokens where both models' most likely token is the same */
    double mean, m2;   /* KL(base || model): running mean, sum of squared deviations */
    double max;        /* the largest KL */
    double bound;      /* sum of the per-token bounds on the representation's error */
    double base_nll;   /* the base's NLL sum (from the file's header, exact) */
    uint64_t hist[KL_BINS];
} kl_stats;

typedef struct kl_file kl_file;

/* Write a base file: `path` is replaced atomically (a temporary file beside it, renamed by
 * kl_save_close). first: the document's first token (context only); start: the state's
 * position before it (--state-in). Errors are printed (run_error) and returned. */
int kl_save_open(const char *path, int32_t n_vocab, uint32_t flags, uint64_t start,
                 int32_t first, kl_file **out);
/* One scored token: the logits that predict `token`. */
int kl_save_token(kl_file *f, const float *logits, int32_t token);
/* Complete the header, sync, rename over `path`. */
int kl_save_close(kl_file *f);

/* Open a base file to compare with: it must have been written for n_vocab logits, the same
 * flags, start and first token, and (when n_tokens is not 0) a document of n_tokens ids;
 * otherwise it is refused with a message. */
int kl_read_open(const char *path, int32_t n_vocab, uint32_t flags, uint64_t start,
                 int32_t first, uint64_t n_tokens, kl_file **out);
/* One scored token: reads the base's record (which must be for `token`) and compares it with
 * the model's logits; *kl receives KL(base || model) in nats. */
int kl_read_token(kl_file *f, const float *logits, int32_t token, double *kl);
/* At the end of the document: every record used, the checksums right. */
int kl_read_close(kl_file *f);
const kl_stats *kl_file_stats(const kl_file *f);

/* The q-quantile (0 < q <= 1) of the KL values: the bin's geometric middle, within 1.2%. */
double kl_stats_quantile(const kl_stats *s, double q);

/* Release (a base file being written and not completed is removed). */
void kl_free(kl_file *f);

#endif

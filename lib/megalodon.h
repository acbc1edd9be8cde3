/* megalodon.h - public C API of libmegalodon, a CPU-first engine for the Megalodon
 * architecture (Ma et al., 2024).
 *
 * Conventions:
 *  - Handles are opaque. Objects are created with *_default_params() + a params struct.
 *  - Functions that can fail return MG_OK (0) or a negative mg_status; mg_last_error()
 *    gives a message for the calling thread's last failure. The library never exits or
 *    aborts the process.
 *  - A loaded mg_model is read-only and may be shared by any number of mg_state objects;
 *    one mg_state must be used by one thread at a time.
 *
 * Minimal use:
 *     mg_model *m; mg_state *s;
 *     mg_model_load("model.gguf", NULL, &m);
 *     mg_state_new(m, NULL, &s);
 *     mg_eval(s, tokens, n, logits, MG_LOGITS_LAST);   // logits: mg_model_n_vocab(m) floats
 */
#ifndef MEGALODON_H
#define MEGALODON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define MG_API
#elif defined(__GNUC__)
#define MG_API __attribute__((visibility("default")))
#else
#define MG_API
#endif

/* ------------------------------------------------------------------ errors */

typedef enum {
    MG_OK = 0,
    MG_ERR_INVALID_ARG = -1, /* a bad argument or option */
    MG_ERR_NOMEM = -2,       /* an allocation failed */
    MG_ERR_IO = -3,          /* open/read/write/mmap failed */
    MG_ERR_FORMAT = -4,      /* the file is not valid GGUF (truncated, corrupt) */
    MG_ERR_MODEL = -5,       /* valid GGUF but not a usable Megalodon model */
    MG_ERR_UNSUPPORTED = -6, /* a feature this build or machine does not have */
    MG_ERR_STATE = -7,       /* a state (file) that does not fit the model */
    MG_ERR_BACKEND = -8,     /* a compute backend failed */
    MG_ERR_NUMERIC = -9      /* a loss or gradient that is not finite (training) */
} mg_status;

/* Message for the calling thread's last failure ("no error" if none). */
MG_API const char *mg_last_error(void);
/* Short generic text for a status code. */
MG_API const char *mg_status_str(int status);
/* Library version, "MAJOR.MINOR.PATCH". */
MG_API const char *mg_version(void);

/* ------------------------------------------------------------------ model */

typedef struct mg_model mg_model;

/* Hyper-parameters of a loaded model (the megalodon.* keys of the model file). */
typedef struct {
    int32_t n_layer;     /* num_layers */
    int32_t n_embd;      /* model_dim D */
    int32_t z_dim;       /* Z (all heads) */
    int32_t value_dim;   /* E (all heads) */
    int32_t n_head;      /* H */
    int32_t n_ff;        /* ffn_hidden_dim F */
    int32_t cema_ndim;   /* N */
    int32_t chunk_size;  /* C */
    int32_t norm_groups; /* G */
    int32_t n_vocab;     /* rows of the embedding */
    int32_t n_output;    /* rows of the output head (output_size, usually n_vocab) */
    float norm_eps;
    float rope_base;
    int32_t swiglu, scale_emb, share_emb, rescale_nffn, norm_affine; /* 0 or 1 */
} mg_hparams;

typedef struct {
    int n_threads;   /* threads for compute; 0 = all online CPUs */
    int use_mmap;    /* map f32 tensors from the file instead of copying (default 1) */
    const char *isa; /* kernel table: NULL or "auto" = best for this CPU (or $MEGALODON_ISA);
                        "scalar", "avx2", "avx512", "neon" force one (an error if unusable) */
    /* compute backend (see "backends" below): NULL = $MEGALODON_BACKEND, else "cpu";
       "cpu" or "opencl" (an error with MG_ERR_UNSUPPORTED if not built or no platform) */
    const char *backend;
    int device; /* OpenCL device index; -1 (default) = $MEGALODON_OPENCL_DEVICE, else 0 */
} mg_model_params;

MG_API mg_model_params mg_model_default_params(void);

/* Load a GGUF model. params may be NULL (defaults). On failure *out is NULL. */
MG_API int mg_model_load(const char *path, const mg_model_params *params, mg_model **out);
MG_API void mg_model_free(mg_model *model);

MG_API const mg_hparams *mg_model_hparams(const mg_model *model);
/* The tensors of the model file, for listings. */
typedef struct {
    const char *name;      /* GGUF tensor name */
    const char *type_name; /* "f32", "f16", "bf16", "i32", ... */
    int n_dims;
    int64_t ne[4];         /* GGUF order: ne[0] varies fastest */
    uint64_t n_bytes;
} mg_tensor_info;
MG_API int64_t mg_model_n_tensors(const mg_model *model);
MG_API int mg_model_tensor_info(const mg_model *model, int64_t i, mg_tensor_info *out);
/* A string key of the model file ("general.name", "tokenizer.ggml.model", ...) or NULL. */
MG_API const char *mg_model_meta_str(const mg_model *model, const char *key);

/* The compute backend and kernel table in use, e.g. "cpu/avx2". */
MG_API const char *mg_model_backend_name(const mg_model *model);
/* Change the number of compute threads (not while the model is in use by another thread). */
MG_API int mg_model_set_n_threads(mg_model *model, int n_threads);
/* Kernel tables compiled in and supported by this CPU, best first, e.g. "avx2 scalar". */
MG_API const char *mg_isa_available(void);
/* The BLAS library and the kernel it runs for this CPU, e.g. "OpenBLAS 0.3.21 ... kernel
 * Haswell". mg_blas_warning: NULL, or a sentence when that kernel is older than the CPU
 * (OpenBLAS's generic Prescott kernel on an AVX2 machine: matrix products 3-5x slower;
 * the OPENBLAS_CORETYPE environment variable chooses another, docs/performance.md). */
MG_API const char *mg_blas_info(void);
MG_API const char *mg_blas_warning(void);

/* ---- backends (docs/opencl.md): "cpu" always; "opencl" when built with OpenCL.
 * mg_backend_devices writes the OpenCL devices, one line each ("N: platform / device
 * (details)"), into buf (truncated to size, NUL-terminated) and returns their number: 0
 * when no OpenCL platform is installed (buf says so), MG_ERR_UNSUPPORTED when this build
 * has no OpenCL backend (buf and mg_last_error() say so). */
MG_API int mg_backend_devices(char *buf, size_t size);
MG_API int32_t mg_model_n_vocab(const mg_model *model);   /* logits per token (n_output) */
MG_API uint64_t mg_model_n_params(const mg_model *model); /* parameters, tied head once */

/* ------------------------------------------------------------------ streaming state */

typedef struct mg_state mg_state;

typedef enum {
    MG_CEMA_AUTO = 0, /* choose per call (FFT for long inputs, the recurrence otherwise) */
    MG_CEMA_FFT = 1,  /* causal convolution with the CEMA kernel by FFT (FFTW on the CPU) */
    MG_CEMA_SCAN = 2  /* the recurrence h_t = q h_{t-1} + p x_t */
} mg_cema_algo;

typedef enum {
    MG_LOGITS_NONE = 0, /* compute no logits (prefill only) */
    MG_LOGITS_LAST = 1, /* logits of the last token: n_vocab floats */
    MG_LOGITS_ALL = 2   /* logits of every token: n_tokens * n_vocab floats, row-major */
} mg_logits_mode;

/* Called with intermediate activations during mg_eval (for debugging and tests).
 * name: "embd", "blk.attn_out" (MEGA sub-layer output y, per layer), "blk.out" (block
 * output), "output_norm"; layer is -1 for non-layer tensors; data is rows x cols. */
typedef void (*mg_eval_cb)(void *user, const char *name, int layer, const float *data,
                           size_t rows, size_t cols);

typedef struct {
    mg_cema_algo cema;  /* default MG_CEMA_AUTO */
    int n_batch;        /* most tokens processed per internal step (rounded to whole chunks
                           when larger than the chunk size); 0 = 2 chunks */
    mg_eval_cb cb_eval; /* optional */
    void *cb_user;
} mg_state_params;

MG_API mg_state_params mg_state_default_params(void);

/* A fresh state (position 0) for `model`; params may be NULL. The state keeps a pointer to
 * the model, which must outlive it. */
MG_API int mg_state_new(const mg_model *model, const mg_state_params *params, mg_state **out);
MG_API void mg_state_free(mg_state *state);
/* Back to position 0 (prior statistics, zero CEMA state, empty chunk). */
MG_API void mg_state_reset(mg_state *state);
/* Tokens consumed since the last reset. */
MG_API uint64_t mg_state_n_past(const mg_state *state);
/* Bytes of state carried between calls: fixed by the config, independent of context. */
MG_API size_t mg_state_size(const mg_state *state);
MG_API int mg_state_set_cema(mg_state *state, mg_cema_algo algo);
/* The CEMA implementation run for a call of n_tokens tokens when asked for algo
 * (MEGALODON_CEMA and the planner applied, current thread count): "scan", "scan-chunked" or
 * "fft"; NULL on error. In measure mode (MEGALODON_CEMA_PLANNER=measure) an unmeasured
 * shape is timed now. */
MG_API const char *mg_cema_choice(const mg_model *model, mg_cema_algo algo, int n_tokens);

/* Feed n_tokens new tokens (any number, any position; they are split at chunk boundaries
 * internally) and write logits as asked. Every id must be in [0, n_vocab). On failure
 * the state is unchanged. */
MG_API int mg_eval(mg_state *state, const int32_t *tokens, size_t n_tokens, float *logits,
                   mg_logits_mode mode);

/* The official long-document evaluation's statistics window (docs/model.md §15): replace the
 * timestep-norm statistics of every layer and of the final norm by those of a fresh forward
 * over `tokens` (the last 6 chunks, in the official code); CEMA state and keys/values stay. */
MG_API int mg_state_window_norm_stats(mg_state *state, const int32_t *tokens, size_t n_tokens);

/* Save the state to a file (atomically: temporary file, fsync, rename) and load it back.
 * Loading checks that the file was made for a model with the same shapes. */
MG_API int mg_state_save(const mg_state *state, const char *path);
MG_API int mg_state_load(mg_state *state, const char *path);

/* ------------------------------------------------------------------ tokenizer
 * The tokenizer travels in the model file (tokenizer.ggml.* keys, docs/tokenizer.md):
 * "llama" (SentencePiece BPE with byte fallback, as LLaMA/LLaMA-2) or "byte" (one token per
 * byte, for small models). A model without one still runs on token ids. */

MG_API int mg_model_has_tokenizer(const mg_model *model);
/* Special token ids, -1 when the tokenizer has none. */
MG_API int32_t mg_token_bos(const mg_model *model);
MG_API int32_t mg_token_eos(const mg_model *model);

/* Encode `len` bytes of UTF-8 text (invalid UTF-8 is encoded through byte tokens). With
 * add_bos, BOS comes first (ignored when the tokenizer has no BOS). *n_out receives the number of ids the text needs; at most n_max
 * are written, and if n_max is too small the call returns MG_ERR_INVALID_ARG (call again
 * with a larger buffer). Fails with MG_ERR_UNSUPPORTED when the model has no tokenizer. */
MG_API int mg_tokenize(const mg_model *model, const char *text, size_t len, int add_bos,
                       int32_t *tokens, size_t n_max, size_t *n_out);

/* The vocabulary entry of a token as stored ("\u2581Hello", "<0x0A>", "<s>"); NULL (error
 * set) when the model has no tokenizer or the id has no entry. */
MG_API const char *mg_token_text(const mg_model *model, int32_t token);

/* Decode ids to UTF-8 text as SentencePiece does (byte tokens become their bytes, U+2581
 * becomes a space, the leading space of the dummy prefix is dropped when the first id is
 * at the start of the text, control tokens produce nothing). `buf` receives at most size-1
 * bytes and a NUL; *len receives the full length the text needs. `at_start`: the ids begin
 * the text (drop the dummy-prefix space; a leading BOS does not count) - pass 0 when
 * streaming later pieces. */
MG_API int mg_detokenize(const mg_model *model, const int32_t *tokens, size_t n, int at_start,
                         char *buf, size_t size, size_t *len);

/* ------------------------------------------------------------------ training
 * Small-scale training on the CPU (docs/training.md). A trainer owns an fp32 copy of the
 * model's parameters, their gradients and the AdamW moments. A training example is a row of
 * L+1 ids: inputs ids[0..L-1], next-token targets ids[1..L]; each row starts from a fresh
 * state (zero CEMA state, prior norm statistics), and L must be below the chunk size or a
 * multiple of it. The loss is the mean token cross-entropy. Gradients flow through the
 * CEMA state and the timestep-norm statistics across all chunks of a row. */

typedef struct mg_trainer mg_trainer;

typedef enum {
    MG_LR_LINEAR = 0,  /* official: warmup from lr*lr_init_ratio, then linear to lr*lr_end_ratio */
    MG_LR_COSINE = 1,  /* warmup, then lr*(end + (1-end)(1+cos(pi*progress))/2) */
    MG_LR_CONSTANT = 2 /* warmup, then lr */
} mg_lr_schedule;

typedef struct {
    float lr;              /* peak learning rate (1e-3) */
    float beta1, beta2;    /* AdamW betas (0.9, 0.98) */
    float eps;             /* AdamW epsilon (1e-8) */
    float weight_decay;    /* decoupled, on every parameter (0.1) */
    float clip;            /* global gradient-norm clip (1.0); <= 0: off */
    int64_t warmup;        /* warmup steps (0 here; the official default is 2000) */
    int64_t total_steps;   /* schedule length in optimizer steps (1000) */
    mg_lr_schedule schedule;
    float lr_init_ratio;   /* warmup starts at lr*lr_init_ratio (1e-4) */
    float lr_end_ratio;    /* linear/cosine end at lr*lr_end_ratio (0.01) */
    mg_cema_algo cema;     /* CEMA algorithm, forward and backward (MG_CEMA_AUTO) */
    int n_threads;         /* 0: all online CPUs */
} mg_train_params;

typedef struct {
    int64_t step;       /* optimizer steps done (after this one) */
    double loss;        /* mean token cross-entropy of the step's batches */
    double grad_norm;   /* global gradient norm before clipping */
    double lr;          /* learning rate used by this step */
    int64_t n_tokens;   /* target tokens in this step */
} mg_train_stats;

MG_API mg_train_params mg_train_default_params(void);
/* Learning rate of optimizer step `step` (0-based) under params. */
MG_API double mg_train_lr(const mg_train_params *params, int64_t step);

/* A trainer starting from the weights of a loaded model (f16/bf16 are converted to f32).
 * params may be NULL (defaults). */
MG_API int mg_trainer_new(const mg_model *init, const mg_train_params *params, mg_trainer **out);
/* A trainer for a new model with the official initialization (docs/model.md §12) from `seed`.
 * vocab_path: NULL (a model without tokenizer, ids only) or a GGUF file - a model, or a
 * tokenizer-only file from `megalodon-convert --vocab-only` - whose tokenizer.* keys are
 * copied; hp->n_vocab is then checked against (or, when 0, taken from) its vocabulary.
 * hp->n_output is set to hp->n_vocab when 0. */
MG_API int mg_trainer_new_random(const mg_hparams *hp, uint64_t seed, const char *vocab_path,
                                 const mg_train_params *params, mg_trainer **out);
/* Vocabulary size of the tokenizer in a GGUF file (model or tokenizer-only), or an error. */
MG_API int mg_vocab_file_size(const char *path, int32_t *n_vocab);
MG_API void mg_trainer_free(mg_trainer *tr);

/* The model with the current weights, usable with mg_state_new for evaluation or sampling
 * between steps (its states must be freed before the trainer). */
MG_API const mg_model *mg_trainer_model(const mg_trainer *tr);
MG_API int64_t mg_trainer_step_count(const mg_trainer *tr);
MG_API const mg_train_params *mg_trainer_params(const mg_trainer *tr);
/* Change the schedule/optimizer settings (e.g. on resume with a longer run). */
MG_API int mg_trainer_set_params(mg_trainer *tr, const mg_train_params *params);

/* Forward and backward of B rows of L+1 ids (row-major, B*(L+1) ids); adds the gradient of
 * the rows' mean loss to the accumulator and returns that loss in *loss. */
MG_API int mg_trainer_accumulate(mg_trainer *tr, const int32_t *ids, int B, int L,
                                 double *loss);
/* One optimizer step with the accumulated gradient (averaged over the accumulate calls
 * since the last step): global-norm clipping, AdamW at the scheduled learning rate, then
 * the accumulator is cleared. A non-finite gradient fails with MG_ERR_NUMERIC and leaves
 * the weights and moments unchanged. stats may be NULL. */
MG_API int mg_trainer_update(mg_trainer *tr, mg_train_stats *stats);
/* accumulate + update. */
MG_API int mg_trainer_step(mg_trainer *tr, const int32_t *ids, int B, int L,
                           mg_train_stats *stats);
/* Mean loss of B rows of L+1 ids without touching gradients (validation). */
MG_API int mg_trainer_eval(mg_trainer *tr, const int32_t *ids, int B, int L, double *loss);

/* The current weights as a model file (atomically: temporary file, fsync, rename). */
MG_API int mg_trainer_save_model(const mg_trainer *tr, const char *path);
/* A checkpoint: the weights, AdamW moments, step and params, plus an opaque caller string
 * (e.g. the program's options and data position as JSON; may be NULL). Atomic. */
MG_API int mg_trainer_save_checkpoint(const mg_trainer *tr, const char *path,
                                      const char *user_meta);
/* Resume from a checkpoint; params NULL: those stored in it. Corrupt or truncated files fail
 * with a message naming the problem. */
MG_API int mg_trainer_load_checkpoint(const char *path, const mg_train_params *params,
                                      mg_trainer **out);
/* The caller string of the checkpoint the trainer was loaded from ("" otherwise). */
MG_API const char *mg_trainer_user_meta(const mg_trainer *tr);

/* ------------------------------------------------------------------ sampling */

typedef struct mg_sampler mg_sampler;

typedef struct {
    uint64_t seed;        /* random seed */
    float temp;           /* <= 0: greedy (argmax) */
    int32_t top_k;        /* <= 0: off */
    float top_p;          /* >= 1: off */
    float min_p;          /* <= 0: off */
    float repeat_penalty; /* 1: off */
    int32_t repeat_last_n;/* tokens of history the penalty looks at */
} mg_sampler_params;

MG_API mg_sampler_params mg_sampler_default_params(void);
MG_API int mg_sampler_new(const mg_sampler_params *params, int32_t n_vocab, mg_sampler **out);
MG_API void mg_sampler_free(mg_sampler *s);
/* Remember a token (prompt or generated) for the repetition penalty. */
MG_API void mg_sampler_accept(mg_sampler *s, int32_t token);
/* Choose the next token from n_vocab logits (the array is not modified). */
MG_API int32_t mg_sampler_sample(mg_sampler *s, const float *logits);

/* ------------------------------------------------------------------ quantization */

/* Write a copy of a model file with its large matrices (token embedding, the projections,
 * the FFN matrices, the output head) stored in a smaller type; every other tensor (norms,
 * CEMA parameters, biases, rope.freqs, norm priors, anything 1-D) is copied as it is, and
 * every metadata key is copied (general.file_type set to the recipe, as llama.cpp does).
 * docs/quantization.md describes the types and the recipes. The recipe values are
 * llama.cpp's general.file_type numbers. */
typedef enum {
    MG_FTYPE_F16 = 1,     /* every large matrix f16 */
    MG_FTYPE_Q4_0 = 2,    /* q4_0 */
    MG_FTYPE_Q8_0 = 7,    /* q8_0 */
    MG_FTYPE_Q4_K_M = 15, /* q4_K; q6_K for the output head, attn_v and ffn_down */
    MG_FTYPE_BF16 = 32    /* bf16 */
} mg_ftype;

/* What happens to one tensor (passed to the progress callback once it is written). */
typedef struct {
    const char *name;
    int n_dims;
    int64_t ne[4];          /* ne[0] is the row length; unused dims are 1 */
    const char *old_type;   /* type names: "f32", "f16", "bf16", "q8_0", "q4_0", "q4_K", ... */
    const char *new_type;
    const char *wanted_type;/* the recipe's type; differs from new_type when the row length
                             * does not fit its block (the fallback of docs/quantization.md) */
    uint64_t n_elements, old_bytes, new_bytes;
} mg_quantize_tensor;

/* Called for tensor `index` (0-based) of `count`, in file order. */
typedef void (*mg_quantize_progress)(int64_t index, int64_t count, const char *name,
                                     const mg_quantize_tensor *info, void *user);

typedef struct {
    mg_ftype ftype;             /* recipe (MG_FTYPE_Q4_K_M) */
    int allow_requantize;       /* accept an input with quantized tensors (0: refuse it) */
    int n_threads;              /* 0: all online CPUs */
    mg_quantize_progress progress; /* may be NULL */
    void *progress_user;
} mg_quantize_params;

MG_API mg_quantize_params mg_quantize_default_params(void);
/* The recipe named "f16", "bf16", "q8_0", "q4_0" or "q4_k_m" (any case), or an error. */
MG_API int mg_ftype_from_name(const char *name, mg_ftype *out);
/* Its name ("q4_k_m"), or NULL for an unknown value. */
MG_API const char *mg_ftype_name(mg_ftype ftype);
/* Quantize the model in_path into out_path (written atomically; in_path is mapped, and
 * about one tensor is held in memory). A quantized input is refused unless
 * allow_requantize, which dequantizes and quantizes it again; a non-finite value in a matrix
 * that gets a block type is an error. params may be NULL (defaults). */
MG_API int mg_model_quantize(const char *in_path, const char *out_path,
                             const mg_quantize_params *params);

#ifdef __cplusplus
}
#endif
#endif

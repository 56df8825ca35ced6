/* ember.h - public C API of ember, a small C11 inference runtime for GGUF llama models.
 *
 * Lifecycle:
 *
 *     ember_model *m;  char err[256];
 *     if (ember_model_load("model.gguf", NULL, &m, err, sizeof err) != EMBER_OK) { puts(err); ... }
 *     ember_context *ctx;  ember_context_create(m, NULL, &ctx);
 *     ember_tokenize(m, text, len, 1, 1, ids, cap, &n);
 *     ember_decode(ctx, ids, n);              -> logits of the last token: ember_get_logits(ctx)
 *     ember_sampler *s;  ember_sampler_create(NULL, &s);  id = ember_sampler_sample(s, ctx);
 *     ... ember_sampler_free(s); ember_context_free(ctx); ember_model_free(m);
 *
 * No global state: any number of models and contexts may live in one process. The library
 * never exits.
 *
 * Threads: a model is read-only after ember_model_load returns; any number of threads may use
 * one model at once (each with its own contexts), with every function that takes a model.
 * A context or a sampler must not be used by two threads at once.
 *
 * Errors: functions return an ember_status (or -1 / NULL where they say so), and a message:
 *   - ember_model_load: in its err buffer, and as ember_model_last_error(NULL) on the thread
 *     that called it;
 *   - ember_context_create, ember_tokenize, ember_token_to_piece (the calls that take a model):
 *     ember_model_last_error(model) on the thread that made the failed call. The message is
 *     kept per thread because the model is shared and never written;
 *   - ember_decode, ember_generate (the calls that take a context): ember_context_last_error.
 * A message stays until the next failure of the same kind; success does not clear it.
 */
#ifndef EMBER_H
#define EMBER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EMBER_VERSION_MAJOR 0
#define EMBER_VERSION_MINOR 1
#define EMBER_VERSION_PATCH 0
#define EMBER_VERSION_STRING "0.1.0"
/* one integer that grows with every release: 10000*major + 100*minor + patch */
#define EMBER_VERSION_NUMBER (EMBER_VERSION_MAJOR * 10000 + EMBER_VERSION_MINOR * 100 + EMBER_VERSION_PATCH)

/* EMBER_API marks the exported functions. Build the shared library with EMBER_BUILD_SHARED,
 * link a static one with EMBER_STATIC defined (CMake does both for you). */
#if defined(EMBER_STATIC)
#  define EMBER_API
#elif defined(_WIN32) || defined(__CYGWIN__)
#  if defined(EMBER_BUILD_SHARED)
#    define EMBER_API __declspec(dllexport)
#  else
#    define EMBER_API __declspec(dllimport)
#  endif
#elif defined(__GNUC__) && __GNUC__ >= 4
#  define EMBER_API __attribute__((visibility("default")))
#else
#  define EMBER_API
#endif

typedef enum ember_status {
    EMBER_OK = 0,
    EMBER_ERR_INVALID_ARGUMENT = 1, /* a NULL handle, a bad id, a bad parameter */
    EMBER_ERR_IO = 2,               /* the file cannot be opened, read or mapped */
    EMBER_ERR_FORMAT = 3,           /* the file is not a valid GGUF model (truncated, corrupt) */
    EMBER_ERR_UNSUPPORTED = 4,      /* valid, but ember cannot run it (architecture, tensor type) */
    EMBER_ERR_OUT_OF_MEMORY = 5,
    EMBER_ERR_CONTEXT_FULL = 6,     /* more tokens than the context holds */
    EMBER_ERR_TOKENIZER = 7,
    EMBER_ERR_INTERNAL = 8
} ember_status;

/* A static, human readable name of a status ("invalid argument", ...). Never NULL. */
EMBER_API const char *ember_strerror(ember_status status);
/* EMBER_VERSION_STRING of the library actually loaded (may differ from the header's). */
EMBER_API const char *ember_version(void);
/* Name of the best kernel level this CPU runs ("avx512", "avx2", "neon", "scalar", ...). */
EMBER_API const char *ember_kernel_name(void);

typedef struct ember_model ember_model;
typedef struct ember_context ember_context;
typedef struct ember_sampler ember_sampler;

/* ---- model ------------------------------------------------------------------------ */

typedef struct ember_model_params {
    int reserved; /* no options yet; zero-initialise */
} ember_model_params;

/* Load a GGUF model. On failure *out is NULL and, if err is not NULL, err receives a
 * NUL-terminated message naming what is wrong (truncated to errlen). params may be NULL. */
EMBER_API ember_status ember_model_load(const char *path, const ember_model_params *params,
                                        ember_model **out, char *err, size_t errlen);
EMBER_API void ember_model_free(ember_model *model);
/* The message of the calling thread's last failed ember_context_create, ember_tokenize or
 * ember_token_to_piece when that call was on this model, else "". With NULL: the message of the
 * calling thread's last failed ember_model_load ("model is NULL" when none). The string belongs
 * to the thread and is valid until its next failing call of the same kind. */
EMBER_API const char *ember_model_last_error(const ember_model *model);

EMBER_API int32_t ember_model_n_vocab(const ember_model *model);
EMBER_API int32_t ember_model_n_ctx_train(const ember_model *model);
EMBER_API int32_t ember_model_n_embd(const ember_model *model);
EMBER_API int32_t ember_model_n_layer(const ember_model *model);
/* The value of a string metadata key (a NUL-terminated copy made at load, valid while the
 * model lives), or NULL when the key is absent or not a string. */
EMBER_API const char *ember_model_meta_str(const ember_model *model, const char *key);

/* ---- tokenizer (from the model's GGUF vocabulary) --------------------------------- */

/* Tokenize like llama.cpp's llama_tokenize. Writes at most cap ids to out; *n_out receives the
 * full count, so a call with cap too small can be repeated with a larger buffer. */
EMBER_API ember_status ember_tokenize(const ember_model *model, const char *text, size_t len,
                                      int add_special, int parse_special,
                                      int32_t *out, size_t cap, size_t *n_out);
/* Bytes of one token's text (not NUL-terminated). Returns the byte count; if that is > cap only
 * cap bytes were written. Negative for an invalid id. special=1 renders control tokens. */
EMBER_API int32_t ember_token_to_piece(const ember_model *model, int32_t token, int special,
                                       char *buf, size_t cap);
EMBER_API int ember_token_is_eog(const ember_model *model, int32_t token);
EMBER_API int32_t ember_token_bos(const ember_model *model); /* -1 when none */
EMBER_API int32_t ember_token_eos(const ember_model *model); /* -1 when none */

/* ---- context: KV cache, scratch buffers, threads ----------------------------------- */

typedef struct ember_context_params {
    uint32_t n_ctx;    /* tokens the KV cache holds; 0: 512 (may exceed the model's n_ctx_train, as in llama.cpp) */
    uint32_t n_batch;  /* most tokens evaluated in one batch; 0: 512 */
    int32_t n_threads; /* 0: number of CPUs */
    const char *kernel; /* SIMD level: "scalar", "avx2", ... ; NULL or "": $EMBER_KERNEL, else the
                           best level this CPU runs. Every level gives the same results. */
    const char *backend; /* "auto", "cpu", "cuda", "hip", "vulkan", "opencl", "openvino", "sycl"
                            (those built in: ember_backends()); NULL or "": $EMBER_BACKEND, else
                            "auto": the first GPU backend that starts, else the CPU (with one
                            line on stderr saying why each GPU backend did not start). */
} ember_context_params;

EMBER_API ember_context_params ember_context_default_params(void);
EMBER_API ember_status ember_context_create(const ember_model *model, const ember_context_params *params,
                                            ember_context **out);
EMBER_API void ember_context_free(ember_context *ctx);
EMBER_API const char *ember_context_last_error(const ember_context *ctx);
/* Forget every token: the next decode starts at position 0. */
EMBER_API void ember_context_reset(ember_context *ctx);
EMBER_API uint32_t ember_context_n_ctx(const ember_context *ctx);
EMBER_API uint32_t ember_context_n_past(const ember_context *ctx);
/* The backend the context computes with: "cpu", "cuda", "hip", "vulkan", "opencl", "openvino"
 * or "sycl". */
EMBER_API const char *ember_context_backend(const ember_context *ctx);
/* The device actually used: "cpu", or the GPU's name, compute capability and the kind of
 * device code loaded ("NVIDIA H100 (sm_90, cubin sm_90, driver 12.8)"). */
EMBER_API const char *ember_context_device(const ember_context *ctx);
/* The backends this build accepts besides "auto", e.g. "cpu, cuda": "cpu", then those of cuda,
 * hip, vulkan, opencl, openvino and sycl built in, in the order "auto" tries them. */
EMBER_API const char *ember_backends(void);
/* The kernel level the context computes with ("avx2", ...). */
EMBER_API const char *ember_context_kernel(const ember_context *ctx);

/* Append n tokens at the current position and evaluate them (in batches of n_batch). On
 * success the logits of the last token are available from ember_get_logits. n = 0 is an
 * error (EMBER_ERR_INVALID_ARGUMENT): there would be no logits to read. */
EMBER_API ember_status ember_decode(ember_context *ctx, const int32_t *tokens, size_t n);
/* n_vocab floats, valid until the next decode; NULL before the first decode. */
EMBER_API const float *ember_get_logits(const ember_context *ctx);

/* ---- batches of several sequences, and taking tokens back -------------------------- */

/* One sequence of a batch: tokens appended to ctx at its current position. */
typedef struct ember_batch_seq {
    ember_context *ctx;     /* the sequence's context: its KV cache and position */
    const int32_t *tokens;
    size_t n_tokens;        /* >= 1 */
    float *logits;          /* NULL: only the last token's logits, read with ember_get_logits(ctx);
                               else n_tokens * n_vocab floats that receive the logits of every
                               token (the last row is also ember_get_logits(ctx)) */
    int exact;              /* 1: compute each token with the kernels of a one-token decode, so its
                               logits are those of decoding the tokens one at a time, bit for bit,
                               whatever else is in the batch (generation steps, draft
                               verification); 0: the batch kernels (prompts: faster) */
} ember_batch_seq;

/* Evaluate several sequences in one forward pass: the weights are read once for the tokens of
 * all of them, each token attends only to its own context's cache. Every context must belong to
 * the same model; the computation runs on seqs[0].ctx's threads and scratch (batches larger than
 * its n_batch are split), so that context's n_ctx must be at least every other's. A context may
 * appear once. On failure no context has advanced (the message is in each involved context's
 * ember_context_last_error). On the CPU, exact sequences get the numbers of one-token decodes
 * whatever shares the pass, and the non-exact sequences of a pass share llama.cpp's batch
 * kernels: one non-exact sequence in a pass (with any exact ones) gets exactly ember_decode's
 * numbers; several may round differently in the last bits, since the kernels llama.cpp picks
 * depend on the batch size. So a server that puts at most one prompt in each pass gives every
 * request exactly the tokens ember-cli gives. GPU backends evaluate the sequences one after
 * another. */
EMBER_API ember_status ember_decode_batch(const ember_batch_seq *seqs, size_t n_seqs);

/* Forget the tokens at positions >= n_past (a rejected draft, an edited conversation). A
 * larger n_past than the context holds is an error. The logits are invalid until the next
 * decode. */
EMBER_API ember_status ember_context_truncate(ember_context *ctx, uint32_t n_past);

/* ---- sampling --------------------------------------------------------------------- */

typedef struct ember_sampler_params {
    float temperature;     /* <= 0: greedy (argmax) */
    int32_t top_k;         /* <= 0: off */
    float top_p;           /* >= 1: off */
    float min_p;           /* <= 0: off */
    float repeat_penalty;  /* 1: off */
    int32_t repeat_last_n; /* tokens the penalty looks back over */
    uint64_t seed;
} ember_sampler_params;

EMBER_API ember_sampler_params ember_sampler_default_params(void);
EMBER_API ember_status ember_sampler_create(const ember_sampler_params *params, ember_sampler **out);
EMBER_API void ember_sampler_free(ember_sampler *sampler);
/* Pick the next token from the context's current logits (-1 on error). */
EMBER_API int32_t ember_sampler_sample(ember_sampler *sampler, const ember_context *ctx);
/* Record a token (prompt or generated) for the repetition penalty. */
EMBER_API void ember_sampler_accept(ember_sampler *sampler, int32_t token);
EMBER_API void ember_sampler_reset(ember_sampler *sampler);

/* ---- convenience ------------------------------------------------------------------ */

/* Evaluate prompt (appended to what the context holds), then sample up to n_gen tokens into
 * out (capacity n_gen). Stops after an end-of-generation token unless ignore_eos. *n_out gets
 * the number of tokens written. The prompt is passed to ember_sampler_accept first. An empty
 * prompt continues from the context's current logits (an error when it has none). */
EMBER_API ember_status ember_generate(ember_context *ctx, ember_sampler *sampler,
                                      const int32_t *prompt, size_t n_prompt, size_t n_gen,
                                      int ignore_eos, int32_t *out, size_t *n_out);

#ifdef __cplusplus
}
#endif

#endif /* EMBER_H */

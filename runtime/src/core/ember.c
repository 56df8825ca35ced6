/* ember.c - the public API (ember.h): argument checks, error messages, and the batching of
 * decode calls. The work is done in model.c, llama.c and sampler.c.
 *
 * Where errors go: a loaded model is shared by threads and never written, so the failures of
 * calls that take a model (ember_model_load, ember_context_create, ember_tokenize,
 * ember_token_to_piece) are kept per thread, tagged with the model, and read back with
 * ember_model_last_error on the same thread; the failures of calls that take a context go to
 * that context, which one thread at a time uses. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "model.h"
#include "platform.h"

/* C11 _Thread_local; MSVC's C compiler (without clang) spells it __declspec(thread). gcc, clang
 * and zig cc accept _Thread_local on every target ember is built for. */
#if defined(_MSC_VER) && !defined(__clang__)
#define EM_THREAD_LOCAL __declspec(thread)
#else
#define EM_THREAD_LOCAL _Thread_local
#endif

/* This thread's last failed ember_model_load, and its last failed call that takes a model with
 * the model it was about. */
static EM_THREAD_LOCAL char tl_load_err[EM_ERRLEN];
static EM_THREAD_LOCAL const ember_model *tl_err_model;
static EM_THREAD_LOCAL char tl_err[EM_ERRLEN];

static void set_err(char *buf, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, EM_ERRLEN, fmt, ap);
    va_end(ap);
}

static void set_model_err(const ember_model *model, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tl_err, sizeof tl_err, fmt, ap);
    va_end(ap);
    tl_err_model = model;
}

const char *ember_strerror(ember_status status) {
    switch (status) {
    case EMBER_OK: return "success";
    case EMBER_ERR_INVALID_ARGUMENT: return "invalid argument";
    case EMBER_ERR_IO: return "I/O error";
    case EMBER_ERR_FORMAT: return "invalid or corrupt model file";
    case EMBER_ERR_UNSUPPORTED: return "unsupported model";
    case EMBER_ERR_OUT_OF_MEMORY: return "out of memory";
    case EMBER_ERR_CONTEXT_FULL: return "context full";
    case EMBER_ERR_TOKENIZER: return "tokenizer error";
    case EMBER_ERR_INTERNAL: return "internal error";
    }
    return "unknown error";
}

const char *ember_version(void) { return EMBER_VERSION_STRING; }
const char *ember_kernel_name(void) { return em_kernels_best()->name; }
const char *ember_backends(void) { return em_backend_names(); }

/* ---- model ---------------------------------------------------------------------------- */

ember_status ember_model_load(const char *path, const ember_model_params *params, ember_model **out,
                              char *err, size_t errlen) {
    (void)params;
    if (err && errlen) err[0] = 0;
    if (!out) {
        snprintf(tl_load_err, sizeof tl_load_err, "ember_model_load: out is NULL");
        if (err && errlen) snprintf(err, errlen, "%s", tl_load_err);
        return EMBER_ERR_INVALID_ARGUMENT;
    }
    *out = NULL;
    if (!path) {
        snprintf(tl_load_err, sizeof tl_load_err, "model path is NULL");
        if (err && errlen) snprintf(err, errlen, "%s", tl_load_err);
        return EMBER_ERR_INVALID_ARGUMENT;
    }
    ember_status st = em_model_load(path, out, tl_load_err, sizeof tl_load_err);
    if (st != EMBER_OK) {
        if (err && errlen) snprintf(err, errlen, "%s", tl_load_err);
    } else if (tl_err_model == *out) {
        tl_err_model = NULL; /* a stale message about a freed model at the same address */
        tl_err[0] = 0;
    }
    return st;
}

void ember_model_free(ember_model *model) {
    if (model && tl_err_model == model) {
        tl_err_model = NULL;
        tl_err[0] = 0;
    }
    em_model_free(model);
}

const char *ember_model_last_error(const ember_model *model) {
    if (!model) return tl_load_err[0] ? tl_load_err : "model is NULL";
    return tl_err_model == model ? tl_err : "";
}
int32_t ember_model_n_vocab(const ember_model *model) { return model ? model->hp.n_vocab : 0; }
int32_t ember_model_n_ctx_train(const ember_model *model) { return model ? model->hp.n_ctx_train : 0; }
int32_t ember_model_n_embd(const ember_model *model) { return model ? model->hp.n_embd : 0; }
int32_t ember_model_n_layer(const ember_model *model) { return model ? model->hp.n_layer : 0; }

const char *ember_model_meta_str(const ember_model *model, const char *key) {
    if (!model || !key) return NULL;
    const em_gguf_kv *kv = em_gguf_find(model->gguf, key);
    return kv ? model->meta_str[kv - model->gguf->kv] : NULL; /* copies made at load (model.c) */
}

/* ---- tokenizer -------------------------------------------------------------------------- */

ember_status ember_tokenize(const ember_model *model, const char *text, size_t len, int add_special,
                            int parse_special, int32_t *out, size_t cap, size_t *n_out) {
    if (!model) return EMBER_ERR_INVALID_ARGUMENT;
    if ((!text && len) || !n_out || (!out && cap)) {
        set_model_err(model, "ember_tokenize: NULL text, output buffer or count");
        return EMBER_ERR_INVALID_ARGUMENT;
    }
    if (em_tokenize(model->tok, text ? text : "", len, add_special, parse_special, out, cap, n_out) != 0) {
        set_model_err(model, "ember_tokenize: the tokenizer failed on %zu bytes of text", len);
        return EMBER_ERR_TOKENIZER;
    }
    return EMBER_OK;
}

int32_t ember_token_to_piece(const ember_model *model, int32_t token, int special, char *buf, size_t cap) {
    if (!model) return -1;
    if (!buf && cap) {
        set_model_err(model, "ember_token_to_piece: buf is NULL with cap %zu", cap);
        return -1;
    }
    if (token < 0 || token >= model->hp.n_vocab) {
        set_model_err(model, "token id %d out of range [0, %d)", token, model->hp.n_vocab);
        return -1;
    }
    return em_token_to_piece(model->tok, token, special, buf, cap);
}

int ember_token_is_eog(const ember_model *model, int32_t token) {
    if (!model || token < 0 || token >= model->hp.n_vocab) return 0;
    return em_tokenizer_is_eog(model->tok, token);
}

int32_t ember_token_bos(const ember_model *model) { return model ? model->bos_id : -1; }
int32_t ember_token_eos(const ember_model *model) { return model ? model->eos_id : -1; }

/* ---- context ------------------------------------------------------------------------------ */

ember_context_params ember_context_default_params(void) {
    ember_context_params p;
    p.n_ctx = 512;
    p.n_batch = 512;
    p.n_threads = 0;
    p.kernel = NULL;
    p.backend = NULL;
    return p;
}

/* Picks the backend (backend.h) and, for a GPU, initialises it. The CPU path needs nothing
 * here (em_context_init follows). Errors go to this thread's model error (no context yet). */
static ember_status select_backend(ember_context *ctx, const char *want) {
    const ember_model *model = ctx->model;
    if (!want || !want[0]) want = getenv("EMBER_BACKEND");
    if (!want || !want[0]) want = "auto";
    snprintf(ctx->device, sizeof ctx->device, "cpu");
    if (!strcmp(want, "cpu")) return EMBER_OK;
    const int is_auto = !strcmp(want, "auto");
    ctx->backend_auto = is_auto;
    char why[EM_ERRLEN];
    if (is_auto) {
        /* the table's auto order; a backend that cannot start is skipped with one line */
        for (int i = 0; i < em_n_gpu_backends; i++) {
            const em_backend *b = em_gpu_backends[i];
            why[0] = 0;
            if (b->init(ctx, why, sizeof why) == 0) {
                ctx->backend = b;
                return EMBER_OK;
            }
            snprintf(ctx->device, sizeof ctx->device, "cpu");
            fprintf(stderr, "ember: %s: %s; using cpu\n", b->name, why);
        }
        return EMBER_OK;
    }
    /* by name: any backend of the table built in, whether or not auto may pick it */
    const em_backend *b = em_backend_find(want);
    if (!b) {
        char msg[EM_ERRLEN];
        em_backend_not_in_build(want, msg, sizeof msg);
        set_model_err(model, "%s", msg);
        return EMBER_ERR_INVALID_ARGUMENT;
    }
    why[0] = 0;
    if (b->init(ctx, why, sizeof why) == 0) {
        ctx->backend = b;
        return EMBER_OK;
    }
    snprintf(ctx->device, sizeof ctx->device, "cpu");
    set_model_err(model, "backend %s cannot run: %s", b->name, why);
    return EMBER_ERR_UNSUPPORTED;
}

ember_status ember_context_create(const ember_model *model, const ember_context_params *params, ember_context **out) {
    if (!out) return EMBER_ERR_INVALID_ARGUMENT;
    *out = NULL;
    if (!model) return EMBER_ERR_INVALID_ARGUMENT;
    ember_context_params p = params ? *params : ember_context_default_params();
    if (p.n_ctx == 0) p.n_ctx = 512;
    if (p.n_batch == 0) p.n_batch = 512;
    if (p.n_threads < 0 || p.n_threads > 1024) {
        set_model_err(model, "thread count %d out of range [0, 1024]", p.n_threads);
        return EMBER_ERR_INVALID_ARGUMENT;
    }
    if (p.n_threads == 0) p.n_threads = em_cpu_count();
    if (p.n_batch > p.n_ctx) p.n_batch = p.n_ctx;

    const em_kernels *kern = em_kernels_select(p.kernel);
    if (!kern) {
        set_model_err(model, "kernel level '%s' is unknown or cannot run on this CPU (levels: scalar, sse42, avx2, avxvnni, avx512, neon, dotprod)",
                p.kernel && p.kernel[0] ? p.kernel : "(from EMBER_KERNEL)");
        return EMBER_ERR_INVALID_ARGUMENT;
    }
    ember_context *ctx = (ember_context *)calloc(1, sizeof *ctx);
    if (!ctx) return EMBER_ERR_OUT_OF_MEMORY;
    ctx->model = model;
    ctx->kern = kern;
    ctx->n_ctx = p.n_ctx;
    ctx->n_batch = p.n_batch;
    ctx->pool = em_pool_new(p.n_threads);
    if (!ctx->pool) {
        set_model_err(model, "cannot start %d threads", p.n_threads);
        free(ctx);
        return EMBER_ERR_INTERNAL;
    }
    ember_status st = select_backend(ctx, p.backend);
    if (st != EMBER_OK) {
        em_pool_free(ctx->pool);
        free(ctx);
        return st;
    }
    st = ctx->backend ? EMBER_OK : em_context_init(ctx);
    if (st != EMBER_OK) {
        set_model_err(model, "out of memory allocating a context of %u tokens", p.n_ctx);
        em_pool_free(ctx->pool);
        free(ctx);
        return st;
    }
    *out = ctx;
    return EMBER_OK;
}

void ember_context_free(ember_context *ctx) {
    if (!ctx) return;
    if (ctx->backend) ctx->backend->release(ctx);
    em_context_release(ctx);
    em_pool_free(ctx->pool);
    free(ctx);
}

const char *ember_context_last_error(const ember_context *ctx) { return ctx ? ctx->last_error : "context is NULL"; }
void ember_context_reset(ember_context *ctx) {
    if (!ctx) return;
    ctx->n_past = 0;
    ctx->has_logits = 0;
}
uint32_t ember_context_n_ctx(const ember_context *ctx) { return ctx ? ctx->n_ctx : 0; }
uint32_t ember_context_n_past(const ember_context *ctx) { return ctx ? ctx->n_past : 0; }
const char *ember_context_backend(const ember_context *ctx) { return ctx && ctx->backend ? ctx->backend->name : "cpu"; }
const char *ember_context_device(const ember_context *ctx) { return ctx ? ctx->device : ""; }
const char *ember_context_kernel(const ember_context *ctx) { return ctx ? ctx->kern->name : ""; }

ember_status ember_decode(ember_context *ctx, const int32_t *tokens, size_t n) {
    if (!ctx) return EMBER_ERR_INVALID_ARGUMENT;
    if (n == 0) {
        /* not a no-op success: a caller would then read logits that were never computed (NULL
         * after a reset) */
        set_err(ctx->last_error, "ember_decode: no tokens to evaluate (n is 0)");
        return EMBER_ERR_INVALID_ARGUMENT;
    }
    if (!tokens) {
        set_err(ctx->last_error, "ember_decode: tokens is NULL");
        return EMBER_ERR_INVALID_ARGUMENT;
    }
    const int32_t n_vocab = ctx->model->hp.n_vocab;
    for (size_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= n_vocab) {
            set_err(ctx->last_error, "ember_decode: token %zu has id %d, outside the vocabulary [0, %d)", i, tokens[i], n_vocab);
            return EMBER_ERR_INVALID_ARGUMENT;
        }
    if (n > (size_t)(ctx->n_ctx - ctx->n_past)) {
        set_err(ctx->last_error, "context full: %u tokens held, %zu more do not fit in %u", ctx->n_past, n, ctx->n_ctx);
        return EMBER_ERR_CONTEXT_FULL;
    }
    for (size_t done = 0; done < n;) {
        uint32_t chunk = (uint32_t)(n - done < ctx->n_batch ? n - done : ctx->n_batch);
        ember_status st;
        if (ctx->backend) {
            char why[EM_ERRLEN] = "";
            st = ctx->backend->eval(ctx, tokens + done, chunk, why, sizeof why);
            if (st != EMBER_OK) {
                set_err(ctx->last_error, "evaluation failed on %s: %s", ctx->backend->name, why);
                return st;
            }
            ctx->n_past += chunk;
            ctx->has_logits = 1;
        } else {
            st = em_llama_eval(ctx, tokens + done, chunk);
        }
        if (st != EMBER_OK) {
            set_err(ctx->last_error, "evaluation failed: %s", ember_strerror(st));
            return st;
        }
        done += chunk;
    }
    return EMBER_OK;
}

ember_status ember_context_truncate(ember_context *ctx, uint32_t n_past) {
    if (!ctx) return EMBER_ERR_INVALID_ARGUMENT;
    if (n_past > ctx->n_past) {
        set_err(ctx->last_error, "ember_context_truncate: %u tokens asked to be kept, the context holds %u", n_past,
                ctx->n_past);
        return EMBER_ERR_INVALID_ARGUMENT;
    }
    /* the cells past n_past stay as they are: attention never reads a cell past the position
     * of the token it computes, and the next decode overwrites them */
    ctx->n_past = n_past;
    ctx->has_logits = 0;
    return EMBER_OK;
}

/* Checks one sequence of a batch; the message goes to its context. */
static ember_status batch_seq_check(const ember_batch_seq *s, size_t i, const ember_context *lead) {
    ember_context *ctx = s->ctx;
    if (!s->tokens || s->n_tokens == 0) {
        set_err(ctx->last_error, "ember_decode_batch: sequence %zu has no tokens", i);
        return EMBER_ERR_INVALID_ARGUMENT;
    }
    if (ctx->model != lead->model) {
        set_err(ctx->last_error, "ember_decode_batch: sequence %zu belongs to another model than sequence 0", i);
        return EMBER_ERR_INVALID_ARGUMENT;
    }
    const int32_t n_vocab = ctx->model->hp.n_vocab;
    for (size_t k = 0; k < s->n_tokens; k++)
        if (s->tokens[k] < 0 || s->tokens[k] >= n_vocab) {
            set_err(ctx->last_error, "ember_decode_batch: sequence %zu, token %zu has id %d, outside the vocabulary [0, %d)",
                    i, k, s->tokens[k], n_vocab);
            return EMBER_ERR_INVALID_ARGUMENT;
        }
    if (s->n_tokens > (size_t)(ctx->n_ctx - ctx->n_past)) {
        set_err(ctx->last_error, "context full: %u tokens held, %zu more do not fit in %u", ctx->n_past, s->n_tokens,
                ctx->n_ctx);
        return EMBER_ERR_CONTEXT_FULL;
    }
    if (!ctx->backend && !lead->backend && ctx->n_ctx > lead->n_ctx) {
        set_err(ctx->last_error, "ember_decode_batch: sequence %zu holds %u tokens, more than sequence 0's %u", i,
                ctx->n_ctx, lead->n_ctx);
        return EMBER_ERR_INVALID_ARGUMENT;
    }
    return EMBER_OK;
}

/* A GPU backend evaluates one sequence at a time; the logits of every position, when asked
 * for, come from evaluating token by token. */
static ember_status batch_one_by_one(const ember_batch_seq *seqs, size_t n_seqs) {
    for (size_t i = 0; i < n_seqs; i++) {
        const ember_batch_seq *s = &seqs[i];
        if (!s->logits) {
            ember_status st = ember_decode(s->ctx, s->tokens, s->n_tokens);
            if (st != EMBER_OK) return st;
            continue;
        }
        const size_t V = (size_t)s->ctx->model->hp.n_vocab;
        for (size_t k = 0; k < s->n_tokens; k++) {
            ember_status st = ember_decode(s->ctx, s->tokens + k, 1);
            if (st != EMBER_OK) return st;
            memcpy(s->logits + k * V, s->ctx->logits, V * sizeof(float));
        }
    }
    return EMBER_OK;
}

ember_status ember_decode_batch(const ember_batch_seq *seqs, size_t n_seqs) {
    if (!seqs || n_seqs == 0 || n_seqs > INT32_MAX) return EMBER_ERR_INVALID_ARGUMENT;
    ember_context *lead = seqs[0].ctx;
    for (size_t i = 0; i < n_seqs; i++)
        if (!seqs[i].ctx) return EMBER_ERR_INVALID_ARGUMENT;
    int gpu = 0;
    for (size_t i = 0; i < n_seqs; i++) {
        for (size_t j = 0; j < i; j++)
            if (seqs[j].ctx == seqs[i].ctx) {
                set_err(seqs[i].ctx->last_error, "ember_decode_batch: sequences %zu and %zu share one context", j, i);
                return EMBER_ERR_INVALID_ARGUMENT;
            }
        ember_status st = batch_seq_check(&seqs[i], i, lead);
        if (st != EMBER_OK) return st;
        if (seqs[i].ctx->backend) gpu = 1;
    }
    uint32_t *saved = (uint32_t *)malloc(n_seqs * sizeof *saved);
    em_seq_slice *slice = (em_seq_slice *)malloc(n_seqs * sizeof *slice);
    size_t *order_buf = (size_t *)malloc(n_seqs * sizeof *order_buf);
    if (!saved || !slice || !order_buf) {
        free(saved);
        free(slice);
        free(order_buf);
        set_err(lead->last_error, "ember_decode_batch: out of memory");
        return EMBER_ERR_OUT_OF_MEMORY;
    }
    for (size_t i = 0; i < n_seqs; i++) saved[i] = seqs[i].ctx->n_past;

    ember_status st = EMBER_OK;
    if (gpu || lead->backend) {
        st = batch_one_by_one(seqs, n_seqs);
    } else {
        /* pack the sequences into batches of at most lead->n_batch tokens; a sequence longer
         * than what is left is split, and only its last piece gives its last logits */
        const size_t V = (size_t)lead->model->hp.n_vocab;
        /* the batch-kernel sequences go first in every pass, the exact ones after them */
        size_t *order = order_buf;
        size_t k = 0;
        for (size_t i = 0; i < n_seqs; i++)
            if (!seqs[i].exact) order[k++] = i;
        for (size_t i = 0; i < n_seqs; i++)
            if (seqs[i].exact) order[k++] = i;
        size_t seq_i = 0, off = 0;
        while (st == EMBER_OK && seq_i < n_seqs) {
            int n_slice = 0;
            size_t room = lead->n_batch;
            while (seq_i < n_seqs && room > 0) {
                const ember_batch_seq *s = &seqs[order[seq_i]];
                const size_t take = s->n_tokens - off < room ? s->n_tokens - off : room;
                em_seq_slice *sl = &slice[n_slice++];
                sl->ctx = s->ctx;
                sl->tokens = s->tokens + off;
                sl->n = (uint32_t)take;
                sl->logits = s->logits ? s->logits + off * V : NULL;
                sl->want_last = off + take == s->n_tokens;
                sl->exact = s->exact != 0;
                room -= take;
                off += take;
                if (off == s->n_tokens) {
                    seq_i++;
                    off = 0;
                }
            }
            st = em_llama_eval_multi(lead, slice, n_slice);
        }
        if (st != EMBER_OK)
            for (size_t i = 0; i < n_seqs; i++)
                set_err(seqs[i].ctx->last_error, "ember_decode_batch: evaluation failed: %s", ember_strerror(st));
    }
    if (st != EMBER_OK) {
        /* no context advances when the batch fails */
        for (size_t i = 0; i < n_seqs; i++) {
            ember_context *ctx = seqs[i].ctx;
            if (ctx->n_past != saved[i]) {
                ctx->n_past = saved[i];
                ctx->has_logits = 0;
            }
        }
    }
    free(saved);
    free(slice);
    free(order_buf);
    return st;
}

const float *ember_get_logits(const ember_context *ctx) {
    return ctx && ctx->has_logits ? ctx->logits : NULL;
}

/* ---- convenience -------------------------------------------------------------------------- */

ember_status ember_generate(ember_context *ctx, ember_sampler *sampler, const int32_t *prompt, size_t n_prompt,
                            size_t n_gen, int ignore_eos, int32_t *out, size_t *n_out) {
    if (!ctx) return EMBER_ERR_INVALID_ARGUMENT;
    if (!sampler || !n_out || (!out && n_gen) || (!prompt && n_prompt)) {
        set_err(ctx->last_error, "ember_generate: NULL sampler, prompt or output");
        return EMBER_ERR_INVALID_ARGUMENT;
    }
    *n_out = 0;
    for (size_t i = 0; i < n_prompt; i++) ember_sampler_accept(sampler, prompt[i]);
    /* an empty prompt continues from what the context already holds (checked below) */
    ember_status st = n_prompt ? ember_decode(ctx, prompt, n_prompt) : EMBER_OK;
    if (st != EMBER_OK) return st;
    for (size_t i = 0; i < n_gen; i++) {
        if (!ember_get_logits(ctx)) {
            set_err(ctx->last_error, "ember_generate: nothing evaluated yet (empty prompt)");
            return EMBER_ERR_INVALID_ARGUMENT;
        }
        int32_t id = ember_sampler_sample(sampler, ctx);
        if (id < 0) {
            set_err(ctx->last_error, "ember_generate: sampling failed");
            return EMBER_ERR_INTERNAL;
        }
        out[(*n_out)++] = id;
        ember_sampler_accept(sampler, id);
        if (!ignore_eos && ember_token_is_eog(ctx->model, id)) break;
        if (i + 1 < n_gen) {
            st = ember_decode(ctx, &id, 1);
            if (st != EMBER_OK) return st;
        }
    }
    return EMBER_OK;
}

/* model.h - internal state of ember, kept in three parts as llama2.c does: the config read
 * from the file (em_hparams), the weights (pointers into the mapping), and the run state of a
 * context (KV cache, scratch buffers, threads). */
#ifndef EMBER_MODEL_H
#define EMBER_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "ember.h"
#include "gguf.h"
#include "kernels.h"
#include "quants.h"
#include "threadpool.h"
#include "tokenizer.h"

#define EM_ERRLEN 512

typedef struct em_hparams {
    int32_t n_vocab;
    int32_t n_ctx_train;
    int32_t n_embd;
    int32_t n_layer;
    int32_t n_head;
    int32_t n_head_kv;
    int32_t head_dim;       /* n_embd / n_head */
    int32_t n_ff;
    int32_t n_rot;          /* rotated dims per head (== head_dim for llama) */
    float rms_eps;
    float rope_base;
    float rope_freq_scale; /* 1 / scaling factor; 1 without scaling */
    float yarn_ext_factor;
    float yarn_attn_factor;
    float yarn_beta_fast;
    float yarn_beta_slow;
    int32_t n_ctx_orig;     /* context the rope scaling was trained for */
    float kq_scale;         /* 1 / sqrt(head_dim) */
} em_hparams;

typedef struct em_weight {
    const void *data;
    em_type type;
    int64_t ne0, ne1;       /* row length, rows */
    size_t row_bytes;
    int plain_buffer;       /* 1: llama.cpp keeps it in the plain CPU buffer (never repacked) */
} em_weight;

typedef struct em_layer {
    const float *attn_norm; /* (n_embd) */
    em_weight wq;           /* (n_head*head_dim rows of n_embd) */
    em_weight wk;           /* (n_head_kv*head_dim rows of n_embd) */
    em_weight wv;           /* (n_head_kv*head_dim rows of n_embd) */
    em_weight wo;           /* (n_embd rows of n_head*head_dim) */
    const float *ffn_norm;  /* (n_embd) */
    em_weight w_gate;       /* (n_ff rows of n_embd) */
    em_weight w_up;         /* (n_ff rows of n_embd) */
    em_weight w_down;       /* (n_embd rows of n_ff) */
} em_layer;

struct ember_model {
    em_gguf *gguf;
    em_hparams hp;
    em_weight tok_embd;     /* (n_vocab rows of n_embd) */
    const float *output_norm; /* (n_embd) */
    em_weight output;       /* (n_vocab rows of n_embd); tok_embd when the file has no output.weight */
    const float *rope_freqs;  /* (n_rot/2) or NULL: llama3-style frequency factors */
    em_layer *layers;       /* (n_layer) */
    em_tokenizer *tok;
    int32_t bos_id, eos_id;
    /* NUL-terminated copies of the string metadata, made at load so that ember_model_meta_str
     * only reads: a model is shared by threads and nothing in it changes after loading (which
     * is also why it holds no error message: see ember.c) */
    const char **meta_str;  /* (gguf->n_kv) the value of a string key, NULL for other types */
    char *meta_arena;       /* the copies, back to back */
};

struct ember_context {
    const ember_model *model; /* shared with other contexts, read-only */
    const em_kernels *kern;  /* SIMD level chosen at creation; every level gives the same bits */
    uint32_t n_ctx;
    uint32_t n_batch;
    em_pool *pool;
    uint32_t n_past;        /* tokens in the KV cache */
    uint16_t *k_cache;      /* fp16 (n_layer, n_ctx, n_head_kv*head_dim) */
    uint16_t *v_cache;      /* fp16 (n_layer, n_head_kv*head_dim, n_ctx), transposed as llama.cpp keeps it */
    /* scratch for one batch of up to n_batch tokens */
    float *x;               /* (n_batch, n_embd) residual stream */
    float *xb;              /* (n_batch, n_embd) normalised input of a block */
    float *xb2;             /* (n_batch, n_embd) output of a block */
    float *q;               /* (n_batch, n_head*head_dim) */
    float *k;               /* (n_batch, n_head_kv*head_dim) */
    float *v;               /* (n_batch, n_head_kv*head_dim) */
    float *att;             /* (n_batch, n_head*head_dim) attention output per head */
    float *hb;              /* (n_batch, n_ff) gate, then swiglu */
    float *hb2;             /* (n_batch, n_ff) up */
    uint16_t *q16;          /* (n_batch, n_head*head_dim) queries in fp16 */
    uint8_t *act;           /* (n_batch, row bytes of the widest activation in any vec_dot type) */
    size_t act_stride;
    uint8_t *act_small;     /* (n_threads, 4, act_stride): per-thread activations of small batches */
    float *scores;          /* (n_threads, n_ctx) */
    uint16_t *probs16;      /* (n_threads, n_ctx) */
    float *logits;          /* (n_vocab) */
    int has_logits;
    /* a GPU backend (backend.h), or NULL for the CPU path above */
    const struct em_backend *backend;
    void *gpu;              /* the backend's device state */
    int backend_auto;       /* 1 while "auto" tries the backend: it must then decline a device
                               that is a CPU (a software driver, a CPU plugin), because ember's
                               own CPU path is faster there; 0 when asked for by name */
    char device[192];       /* the device actually used, as ember_context_device reports it */
    char last_error[EM_ERRLEN];
};

/* model.c */
ember_status em_model_load(const char *path, ember_model **out, char *err, size_t errlen);
void em_model_free(ember_model *m);

/* llama.c */
ember_status em_context_init(ember_context *ctx);   /* allocates KV cache and scratch */
void em_context_release(ember_context *ctx);
/* Evaluate n (<= n_batch) tokens at positions n_past.., write the last token's logits. */
ember_status em_llama_eval(ember_context *ctx, const int32_t *tokens, uint32_t n);
/* One sequence's part of a batch (llama.c): n tokens appended to ctx at ctx->n_past. */
typedef struct em_seq_slice {
    ember_context *ctx;
    const int32_t *tokens;
    uint32_t n;
    float *logits;   /* NULL, or n * n_vocab floats for the logits of every token */
    int want_last;   /* 1 when the slice ends the sequence: its last logits go to ctx->logits */
    int exact;       /* 1: every token computed with one-token kernels (exact slices come last) */
} em_seq_slice;
/* Several sequences in one pass on lead's threads and scratch (total tokens <= lead->n_batch). */
ember_status em_llama_eval_multi(ember_context *lead, const em_seq_slice *seq, int n_seq);

/* cos/sin pairs of every rotated pair at one position, (n_rot) floats; the GPU backends
 * upload the same table the CPU path uses */
void em_rope_cache(const ember_model *m, int64_t pos, float *cache);

/* em_expf_vec, em_softmax_row: scalar replicas of ggml's vector math, in kernels.h */

#endif /* EMBER_MODEL_H */

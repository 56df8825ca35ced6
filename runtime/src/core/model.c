/* model.c - turn a parsed GGUF file into a llama model: hyperparameters from the metadata,
 * weight pointers with their shapes and types checked, and the tokenizer. Anything missing,
 * mistyped or out of range is an error that names the key or tensor. */
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

static ember_status fail(char *err, size_t errlen, ember_status st, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return st;
}

static int is_int_type(uint32_t t) {
    return t == EM_GGUF_UINT8 || t == EM_GGUF_INT8 || t == EM_GGUF_UINT16 || t == EM_GGUF_INT16 ||
           t == EM_GGUF_UINT32 || t == EM_GGUF_INT32 || t == EM_GGUF_UINT64 || t == EM_GGUF_INT64;
}
static int is_signed_type(uint32_t t) {
    return t == EM_GGUF_INT8 || t == EM_GGUF_INT16 || t == EM_GGUF_INT32 || t == EM_GGUF_INT64;
}

/* Integer key into [lo, hi]. Returns 1 found, 0 absent (ok when !required), -1 error. */
static int get_int(const em_gguf *g, const char *key, int required, int64_t lo, int64_t hi, int64_t *out,
                   char *err, size_t errlen) {
    const em_gguf_kv *kv = em_gguf_find(g, key);
    if (!kv) {
        if (required) fail(err, errlen, EMBER_ERR_FORMAT, "missing metadata key '%s'", key);
        return required ? -1 : 0;
    }
    if (!is_int_type(kv->type)) {
        fail(err, errlen, EMBER_ERR_FORMAT, "metadata key '%s': expected an integer, got %s", key, em_gguf_type_name(kv->type));
        return -1;
    }
    int neg = is_signed_type(kv->type) && kv->v.i < 0;
    if (neg || (!is_signed_type(kv->type) && kv->v.u > (uint64_t)INT64_MAX) ||
        kv->v.i < lo || kv->v.i > hi) {
        if (neg) fail(err, errlen, EMBER_ERR_FORMAT, "metadata key '%s': value %lld out of range [%lld, %lld]",
                      key, (long long)kv->v.i, (long long)lo, (long long)hi);
        else fail(err, errlen, EMBER_ERR_FORMAT, "metadata key '%s': value %llu out of range [%lld, %lld]",
                  key, (unsigned long long)kv->v.u, (long long)lo, (long long)hi);
        return -1;
    }
    *out = kv->v.i;
    return 1;
}

/* Float key into [lo, hi]. The value becomes a float32: a float64 beyond float32's range would
 * turn into inf (and its conversion is undefined behaviour in C), and any non-finite or
 * implausible value would make every logit garbage, so both are format errors naming the key
 * and the value. Returns 1 found, 0 absent (ok when !required), -1 error. */
static int get_float(const em_gguf *g, const char *key, int required, double lo, double hi, float *out,
                     char *err, size_t errlen) {
    const em_gguf_kv *kv = em_gguf_find(g, key);
    if (!kv) {
        if (required) fail(err, errlen, EMBER_ERR_FORMAT, "missing metadata key '%s'", key);
        return required ? -1 : 0;
    }
    if (kv->type != EM_GGUF_FLOAT32 && kv->type != EM_GGUF_FLOAT64) {
        fail(err, errlen, EMBER_ERR_FORMAT, "metadata key '%s': expected a float, got %s", key, em_gguf_type_name(kv->type));
        return -1;
    }
    const double v = kv->v.f;
    if (!isfinite(v)) {
        fail(err, errlen, EMBER_ERR_FORMAT, "metadata key '%s': value %g is not finite", key, v);
        return -1;
    }
    if (v < lo || v > hi || fabs(v) > (double)FLT_MAX) {
        fail(err, errlen, EMBER_ERR_FORMAT, "metadata key '%s': value %g is out of range [%g, %g]", key, v, lo, hi);
        return -1;
    }
    *out = (float)v;
    return 1;
}

/* String key as a malloc'd NUL-terminated copy; NULL + *rc 0 when absent. */
static char *get_string(const em_gguf *g, const char *key, int required, int *rc, char *err, size_t errlen) {
    const em_gguf_kv *kv = em_gguf_find(g, key);
    *rc = 0;
    if (!kv) {
        if (required) { fail(err, errlen, EMBER_ERR_FORMAT, "missing metadata key '%s'", key); *rc = -1; }
        return NULL;
    }
    if (kv->type != EM_GGUF_STRING) {
        fail(err, errlen, EMBER_ERR_FORMAT, "metadata key '%s': expected a string, got %s", key, em_gguf_type_name(kv->type));
        *rc = -1;
        return NULL;
    }
    char *s = (char *)malloc((size_t)kv->str_len + 1);
    if (!s) { fail(err, errlen, EMBER_ERR_OUT_OF_MEMORY, "out of memory"); *rc = -1; return NULL; }
    memcpy(s, kv->str, (size_t)kv->str_len);
    s[kv->str_len] = 0;
    *rc = 1;
    return s;
}

static int get_bool(const em_gguf *g, const char *key, int *out, char *err, size_t errlen) {
    const em_gguf_kv *kv = em_gguf_find(g, key);
    *out = -1;
    if (!kv) return 0;
    if (kv->type != EM_GGUF_BOOL) {
        fail(err, errlen, EMBER_ERR_FORMAT, "metadata key '%s': expected a bool, got %s", key, em_gguf_type_name(kv->type));
        return -1;
    }
    *out = (int)kv->v.u;
    return 1;
}

/* A weight matrix of rows x cols (GGUF shape [cols, rows]) used by a matrix multiplication. */
static ember_status get_weight(const em_gguf *g, const char *name, int64_t cols, int64_t rows, int required,
                               int for_matmul, em_weight *w, char *err, size_t errlen) {
    memset(w, 0, sizeof *w);
    const em_gguf_tensor *t = em_gguf_find_tensor(g, name);
    if (!t) {
        if (!required) return EMBER_OK;
        return fail(err, errlen, EMBER_ERR_FORMAT, "missing tensor '%s'", name);
    }
    if (t->ne[0] != cols || t->ne[1] != rows || t->ne[2] != 1 || t->ne[3] != 1)
        return fail(err, errlen, EMBER_ERR_FORMAT,
                    "tensor '%s': shape [%lld, %lld, %lld, %lld], expected [%lld, %lld]", name,
                    (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2], (long long)t->ne[3],
                    (long long)cols, (long long)rows);
    const em_type_traits *tr = em_type_traits_get(t->type);
    if (!tr || !tr->supported)
        return fail(err, errlen, EMBER_ERR_UNSUPPORTED, "tensor '%s': type %s is not supported", name,
                    tr ? tr->name : "unknown");
    if (for_matmul && !em_can_quantize(tr->vec_dot_type))
        return fail(err, errlen, EMBER_ERR_UNSUPPORTED, "tensor '%s': type %s cannot be used in a matrix multiplication",
                    name, tr->name);
    w->data = t->data;
    w->type = (em_type)t->type;
    w->ne0 = cols;
    w->ne1 = rows;
    w->row_bytes = em_row_size(w->type, cols);
    return EMBER_OK;
}

static ember_status get_vector(const em_gguf *g, const char *name, int64_t n, int required, const float **out,
                               char *err, size_t errlen) {
    *out = NULL;
    const em_gguf_tensor *t = em_gguf_find_tensor(g, name);
    if (!t) {
        if (!required) return EMBER_OK;
        return fail(err, errlen, EMBER_ERR_FORMAT, "missing tensor '%s'", name);
    }
    if (t->type != EM_TYPE_F32)
        return fail(err, errlen, EMBER_ERR_UNSUPPORTED, "tensor '%s': type %u, only f32 is supported for norm weights",
                    name, t->type);
    if (t->ne[0] != n || t->ne[1] != 1 || t->ne[2] != 1 || t->ne[3] != 1)
        return fail(err, errlen, EMBER_ERR_FORMAT, "tensor '%s': shape [%lld, %lld, %lld, %lld], expected [%lld]", name,
                    (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2], (long long)t->ne[3], (long long)n);
    *out = (const float *)t->data;
    return EMBER_OK;
}

static ember_status load_hparams(ember_model *m, char *err, size_t errlen) {
    const em_gguf *g = m->gguf;
    em_hparams *hp = &m->hp;
    int rc;
    char *arch = get_string(g, "general.architecture", 1, &rc, err, errlen);
    if (rc < 0) return EMBER_ERR_FORMAT;
    if (strcmp(arch, "llama") != 0) {
        ember_status st = fail(err, errlen, EMBER_ERR_UNSUPPORTED,
                               "model architecture '%.64s' is not supported (ember runs 'llama')", arch);
        free(arch);
        return st;
    }
    free(arch);

    const int64_t big = 1 << 20;
    int64_t v;
    if (get_int(g, "llama.block_count", 1, 1, 4096, &v, err, errlen) < 0) return EMBER_ERR_FORMAT;
    hp->n_layer = (int32_t)v;
    if (get_int(g, "llama.embedding_length", 1, 1, big, &v, err, errlen) < 0) return EMBER_ERR_FORMAT;
    hp->n_embd = (int32_t)v;
    if (get_int(g, "llama.feed_forward_length", 1, 1, big, &v, err, errlen) < 0) return EMBER_ERR_FORMAT;
    hp->n_ff = (int32_t)v;
    if (get_int(g, "llama.attention.head_count", 1, 1, 4096, &v, err, errlen) < 0) return EMBER_ERR_FORMAT;
    hp->n_head = (int32_t)v;
    hp->n_head_kv = hp->n_head;
    if ((rc = get_int(g, "llama.attention.head_count_kv", 0, 1, 4096, &v, err, errlen)) < 0) return EMBER_ERR_FORMAT;
    if (rc) hp->n_head_kv = (int32_t)v;
    if (get_int(g, "llama.context_length", 1, 1, 1 << 24, &v, err, errlen) < 0) return EMBER_ERR_FORMAT;
    hp->n_ctx_train = (int32_t)v;
    /* the ranges below are wide (published models use eps 1e-6..1e-5, bases 1e4..1e8) but keep
     * every derived quantity finite */
    if (get_float(g, "llama.attention.layer_norm_rms_epsilon", 1, 0.0, 1.0, &hp->rms_eps, err, errlen) < 0)
        return EMBER_ERR_FORMAT;
    hp->rope_base = 10000.0f;
    if (get_float(g, "llama.rope.freq_base", 0, 0.0, 1e12, &hp->rope_base, err, errlen) < 0) return EMBER_ERR_FORMAT;
    if (!(hp->rope_base > 0.0f))
        return fail(err, errlen, EMBER_ERR_FORMAT, "metadata key 'llama.rope.freq_base': value %g must be positive",
                    (double)hp->rope_base);

    if (hp->n_embd % hp->n_head != 0)
        return fail(err, errlen, EMBER_ERR_FORMAT, "embedding length %d is not a multiple of the head count %d",
                    hp->n_embd, hp->n_head);
    if (hp->n_head % hp->n_head_kv != 0)
        return fail(err, errlen, EMBER_ERR_FORMAT, "head count %d is not a multiple of the KV head count %d",
                    hp->n_head, hp->n_head_kv);
    hp->head_dim = hp->n_embd / hp->n_head;
    if ((rc = get_int(g, "llama.attention.key_length", 0, 1, big, &v, err, errlen)) < 0) return EMBER_ERR_FORMAT;
    if (rc && v != hp->head_dim)
        return fail(err, errlen, EMBER_ERR_UNSUPPORTED, "attention key length %lld differs from n_embd/n_head = %d",
                    (long long)v, hp->head_dim);
    if ((rc = get_int(g, "llama.attention.value_length", 0, 1, big, &v, err, errlen)) < 0) return EMBER_ERR_FORMAT;
    if (rc && v != hp->head_dim)
        return fail(err, errlen, EMBER_ERR_UNSUPPORTED, "attention value length %lld differs from n_embd/n_head = %d",
                    (long long)v, hp->head_dim);
    hp->n_rot = hp->head_dim;
    if ((rc = get_int(g, "llama.rope.dimension_count", 0, 1, big, &v, err, errlen)) < 0) return EMBER_ERR_FORMAT;
    if (rc && v != hp->head_dim)
        return fail(err, errlen, EMBER_ERR_UNSUPPORTED, "rope dimension count %lld differs from the head size %d",
                    (long long)v, hp->head_dim);
    if (hp->head_dim % 2 != 0)
        return fail(err, errlen, EMBER_ERR_FORMAT, "head size %d is odd; rope needs pairs", hp->head_dim);

    /* rope scaling, resolved the way llama.cpp's context does it */
    int rc_type;
    char *scaling = get_string(g, "llama.rope.scaling.type", 0, &rc_type, err, errlen);
    if (rc_type < 0) return EMBER_ERR_FORMAT;
    enum { SCALE_NONE, SCALE_LINEAR, SCALE_YARN } stype = SCALE_LINEAR;
    if (scaling) {
        if (strcmp(scaling, "none") == 0) stype = SCALE_NONE;
        else if (strcmp(scaling, "linear") == 0) stype = SCALE_LINEAR;
        else if (strcmp(scaling, "yarn") == 0) stype = SCALE_YARN;
        /* llama3 scaling reaches the model as the rope_freqs tensor, not as a scale factor */
        else if (strcmp(scaling, "llama3") == 0) stype = SCALE_NONE;
        else {
            ember_status st = fail(err, errlen, EMBER_ERR_UNSUPPORTED, "rope scaling type '%.32s' is not supported", scaling);
            free(scaling);
            return st;
        }
        free(scaling);
    }
    float factor = 0.0f;
    const char *factor_key = "llama.rope.scaling.factor";
    if ((rc = get_float(g, factor_key, 0, 0.0, 1e6, &factor, err, errlen)) < 0) return EMBER_ERR_FORMAT;
    if (!rc) {
        factor_key = "llama.rope.scale_linear";
        if (get_float(g, factor_key, 0, 0.0, 1e6, &factor, err, errlen) < 0) return EMBER_ERR_FORMAT;
    }
    hp->rope_freq_scale = factor == 0.0f ? 1.0f : 1.0f / factor;
    /* a tiny (subnormal) factor has no finite inverse */
    if (!isfinite(hp->rope_freq_scale))
        return fail(err, errlen, EMBER_ERR_FORMAT, "metadata key '%s': value %g has no finite inverse", factor_key,
                    (double)factor);
    if (stype == SCALE_NONE) hp->rope_freq_scale = 1.0f;
    hp->n_ctx_orig = hp->n_ctx_train;
    if ((rc = get_int(g, "llama.rope.scaling.original_context_length", 0, 1, 1 << 24, &v, err, errlen)) < 0)
        return EMBER_ERR_FORMAT;
    if (rc) hp->n_ctx_orig = (int32_t)v;
    float rope_attn_factor = 1.0f;
    if (get_float(g, "llama.rope.scaling.attn_factor", 0, 0.0, 100.0, &rope_attn_factor, err, errlen) < 0)
        return EMBER_ERR_FORMAT;
    float yarn_log_mul = 0.0f;
    /* not negative: 1 + 0.1 * mul * ln(factor) below must stay positive */
    if (get_float(g, "llama.rope.scaling.yarn_log_multiplier", 0, 0.0, 100.0, &yarn_log_mul, err, errlen) < 0)
        return EMBER_ERR_FORMAT;
    hp->yarn_beta_fast = 32.0f;
    hp->yarn_beta_slow = 1.0f;
    hp->yarn_attn_factor = 1.0f;
    hp->yarn_ext_factor = stype == SCALE_YARN ? 1.0f : 0.0f;
    if (hp->yarn_ext_factor != 0.0f) {
        const float f = 1.0f / hp->rope_freq_scale;
        /* magnitude correction of YaRN, cancelled again by the factor ggml's rope applies */
        float ms = f <= 1.0f ? 1.0f : 0.1f * logf(f) + 1.0f;
        if (yarn_log_mul != 0.0f) {
            float ms_all = f <= 1.0f ? 1.0f : 0.1f * yarn_log_mul * logf(f) + 1.0f;
            ms = ms / ms_all;
        }
        hp->yarn_attn_factor = ms * (1.0f / (1.0f + 0.1f * logf(f)));
    }
    hp->yarn_attn_factor *= rope_attn_factor;
    hp->kq_scale = 1.0f / sqrtf((float)hp->head_dim);
    return EMBER_OK;
}

static ember_status load_tokenizer(ember_model *m, char *err, size_t errlen) {
    const em_gguf *g = m->gguf;
    em_tokenizer_config cfg;
    memset(&cfg, 0, sizeof cfg);
    ember_status st = EMBER_ERR_FORMAT;
    int rc;
    char *model = get_string(g, "tokenizer.ggml.model", 1, &rc, err, errlen);
    char *pre = NULL;
    if (rc < 0) return EMBER_ERR_FORMAT;
    pre = get_string(g, "tokenizer.ggml.pre", 0, &rc, err, errlen);
    if (rc < 0) goto done;
    cfg.model = model;
    cfg.pre = pre;

    const em_gguf_kv *tokens = em_gguf_find(g, "tokenizer.ggml.tokens");
    if (!tokens) { fail(err, errlen, st, "missing metadata key 'tokenizer.ggml.tokens'"); goto done; }
    if (tokens->type != EM_GGUF_ARRAY || tokens->arr_type != EM_GGUF_STRING) {
        fail(err, errlen, st, "metadata key 'tokenizer.ggml.tokens': expected an array of strings"); goto done;
    }
    if (tokens->arr_n == 0 || tokens->arr_n > (1u << 24)) {
        fail(err, errlen, st, "metadata key 'tokenizer.ggml.tokens': %llu tokens is out of range [1, 16777216]",
             (unsigned long long)tokens->arr_n);
        goto done;
    }
    cfg.n_vocab = (uint32_t)tokens->arr_n;
    cfg.tokens = tokens->strs;
    cfg.token_lens = tokens->str_lens;

    const em_gguf_kv *scores = em_gguf_find(g, "tokenizer.ggml.scores");
    if (scores) {
        if (scores->type != EM_GGUF_ARRAY || scores->arr_type != EM_GGUF_FLOAT32 || scores->arr_n != cfg.n_vocab) {
            fail(err, errlen, st, "metadata key 'tokenizer.ggml.scores': expected %u float32 values", cfg.n_vocab);
            goto done;
        }
        cfg.scores = (const float *)scores->arr;
    }
    const em_gguf_kv *types = em_gguf_find(g, "tokenizer.ggml.token_type");
    if (types) {
        if (types->type != EM_GGUF_ARRAY || types->arr_type != EM_GGUF_INT32 || types->arr_n != cfg.n_vocab) {
            fail(err, errlen, st, "metadata key 'tokenizer.ggml.token_type': expected %u int32 values", cfg.n_vocab);
            goto done;
        }
        cfg.token_types = (const int32_t *)types->arr;
    }
    const em_gguf_kv *merges = em_gguf_find(g, "tokenizer.ggml.merges");
    if (merges) {
        if (merges->type != EM_GGUF_ARRAY || merges->arr_type != EM_GGUF_STRING || merges->arr_n > (1u << 24)) {
            fail(err, errlen, st, "metadata key 'tokenizer.ggml.merges': expected an array of strings"); goto done;
        }
        cfg.n_merges = (uint32_t)merges->arr_n;
        cfg.merges = merges->strs;
        cfg.merge_lens = merges->str_lens;
    }
    struct { const char *key; int32_t *dst; } ids[] = {
        {"tokenizer.ggml.bos_token_id", &cfg.bos_id}, {"tokenizer.ggml.eos_token_id", &cfg.eos_id},
        {"tokenizer.ggml.unknown_token_id", &cfg.unk_id}, {"tokenizer.ggml.padding_token_id", &cfg.pad_id},
    };
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        int64_t v;
        *ids[i].dst = -1;
        rc = get_int(g, ids[i].key, 0, 0, (int64_t)cfg.n_vocab - 1, &v, err, errlen);
        if (rc < 0) goto done;
        if (rc) *ids[i].dst = (int32_t)v;
    }
    if (get_bool(g, "tokenizer.ggml.add_bos_token", &cfg.add_bos, err, errlen) < 0) goto done;
    if (get_bool(g, "tokenizer.ggml.add_eos_token", &cfg.add_eos, err, errlen) < 0) goto done;
    if (get_bool(g, "tokenizer.ggml.add_space_prefix", &cfg.add_space_prefix, err, errlen) < 0) goto done;

    char terr[256] = "";
    if (em_tokenizer_create(&cfg, &m->tok, terr, sizeof terr) != 0) {
        st = fail(err, errlen, EMBER_ERR_TOKENIZER, "tokenizer: %s", terr[0] ? terr : "cannot be created");
        m->tok = NULL;
        goto done;
    }
    m->bos_id = cfg.bos_id;
    m->eos_id = cfg.eos_id;
    m->hp.n_vocab = (int32_t)cfg.n_vocab;
    st = EMBER_OK;
done:
    free(model);
    free(pre);
    return st;
}

static ember_status load_weights(ember_model *m, char *err, size_t errlen) {
    const em_gguf *g = m->gguf;
    const em_hparams *hp = &m->hp;
    const int64_t E = hp->n_embd, V = hp->n_vocab, F = hp->n_ff;
    const int64_t QD = (int64_t)hp->n_head * hp->head_dim, KD = (int64_t)hp->n_head_kv * hp->head_dim;
    ember_status st;
    char name[96];

    if ((st = get_weight(g, "token_embd.weight", E, V, 1, 0, &m->tok_embd, err, errlen))) return st;
    if ((st = get_vector(g, "output_norm.weight", E, 1, &m->output_norm, err, errlen))) return st;
    if ((st = get_weight(g, "output.weight", E, V, 0, 1, &m->output, err, errlen))) return st;
    if (!m->output.data) {
        /* tied embeddings: the output projection reuses the token embedding matrix */
        if ((st = get_weight(g, "token_embd.weight", E, V, 1, 1, &m->output, err, errlen))) return st;
        /* a tensor read by get_rows stays in the plain buffer, so the tied output is not repacked */
        m->output.plain_buffer = 1;
    }
    if ((st = get_vector(g, "rope_freqs.weight", hp->n_rot / 2, 0, &m->rope_freqs, err, errlen))) return st;

    m->layers = (em_layer *)calloc((size_t)hp->n_layer, sizeof(em_layer));
    if (!m->layers) return fail(err, errlen, EMBER_ERR_OUT_OF_MEMORY, "out of memory");
    static const char *const biases[] = {"attn_q.bias", "attn_k.bias", "attn_v.bias", "attn_output.bias",
                                         "ffn_gate.bias", "ffn_up.bias", "ffn_down.bias"};
    for (int32_t il = 0; il < hp->n_layer; il++) {
        em_layer *L = &m->layers[il];
#define W(field, suffix, cols, rows)                                                   \
        snprintf(name, sizeof name, "blk.%d." suffix, (int)il);                        \
        if ((st = get_weight(g, name, cols, rows, 1, 1, &L->field, err, errlen))) return st;
#define N(field, suffix)                                                               \
        snprintf(name, sizeof name, "blk.%d." suffix, (int)il);                        \
        if ((st = get_vector(g, name, E, 1, &L->field, err, errlen))) return st;
        N(attn_norm, "attn_norm.weight")
        W(wq, "attn_q.weight", E, QD)
        W(wk, "attn_k.weight", E, KD)
        W(wv, "attn_v.weight", E, KD)
        W(wo, "attn_output.weight", QD, E)
        N(ffn_norm, "ffn_norm.weight")
        W(w_gate, "ffn_gate.weight", E, F)
        W(w_up, "ffn_up.weight", E, F)
        W(w_down, "ffn_down.weight", F, E)
#undef W
#undef N
        for (size_t b = 0; b < sizeof biases / sizeof biases[0]; b++) {
            snprintf(name, sizeof name, "blk.%d.%s", (int)il, biases[b]);
            if (em_gguf_find_tensor(g, name))
                return fail(err, errlen, EMBER_ERR_UNSUPPORTED, "tensor '%s': bias tensors are not supported", name);
        }
    }
    return EMBER_OK;
}

/* NUL-terminated copies of every string value, so that ember_model_meta_str never writes the
 * shared model (the file's strings are not terminated). */
static ember_status copy_meta_strings(ember_model *m, char *err, size_t errlen) {
    const em_gguf *g = m->gguf;
    size_t total = 0;
    for (uint64_t i = 0; i < g->n_kv; i++)
        if (g->kv[i].type == EM_GGUF_STRING) total += (size_t)g->kv[i].str_len + 1; /* bounded by the file size */
    m->meta_str = (const char **)calloc(g->n_kv ? (size_t)g->n_kv : 1, sizeof(char *));
    m->meta_arena = (char *)malloc(total ? total : 1);
    if (!m->meta_str || !m->meta_arena) return fail(err, errlen, EMBER_ERR_OUT_OF_MEMORY, "out of memory");
    char *p = m->meta_arena;
    for (uint64_t i = 0; i < g->n_kv; i++) {
        const em_gguf_kv *kv = &g->kv[i];
        if (kv->type != EM_GGUF_STRING) continue;
        if (kv->str_len) memcpy(p, kv->str, (size_t)kv->str_len);
        p[kv->str_len] = 0;
        m->meta_str[i] = p;
        p += kv->str_len + 1;
    }
    return EMBER_OK;
}

ember_status em_model_load(const char *path, ember_model **out, char *err, size_t errlen) {
    *out = NULL;
    ember_model *m = (ember_model *)calloc(1, sizeof *m);
    if (!m) return fail(err, errlen, EMBER_ERR_OUT_OF_MEMORY, "out of memory");
    char msg[EM_ERRLEN];
    msg[0] = 0;
    ember_status st;
    if (em_gguf_open(path, &m->gguf, msg, sizeof msg) != 0) {
        /* a file that cannot be opened is an I/O error, anything after that a format error */
        em_mapping probe;
        char tmp[8];
        st = EMBER_ERR_FORMAT;
        if (em_map_file(path, &probe, tmp, sizeof tmp) != 0) st = EMBER_ERR_IO;
        else em_unmap_file(&probe);
        fail(err, errlen, st, "%s", msg);
        em_model_free(m);
        return st;
    }
    if ((st = load_hparams(m, msg, sizeof msg)) == EMBER_OK &&
        (st = load_tokenizer(m, msg, sizeof msg)) == EMBER_OK) {
        int64_t v;
        int rc = get_int(m->gguf, "llama.vocab_size", 0, 1, 1 << 24, &v, msg, sizeof msg);
        if (rc < 0) st = EMBER_ERR_FORMAT;
        else if (rc && v != m->hp.n_vocab)
            st = fail(msg, sizeof msg, EMBER_ERR_FORMAT, "llama.vocab_size %lld differs from the %d tokens of the vocabulary",
                      (long long)v, m->hp.n_vocab);
        if (st == EMBER_OK) st = load_weights(m, msg, sizeof msg);
        if (st == EMBER_OK) st = copy_meta_strings(m, msg, sizeof msg);
    }
    if (st != EMBER_OK) {
        fail(err, errlen, st, "%s: %s", path, msg);
        em_model_free(m);
        return st;
    }
    *out = m;
    return EMBER_OK;
}

void em_model_free(ember_model *m) {
    if (!m) return;
    if (m->tok) em_tokenizer_free(m->tok);
    free(m->meta_str);
    free(m->meta_arena);
    free(m->layers);
    em_gguf_close(m->gguf);
    free(m);
}

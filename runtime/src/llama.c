/* llama.c - the llama forward pass on the CPU, written to give the same numbers as
 * llama.cpp's CPU backend (ggml-cpu on x86-64 with AVX-512, flash attention off).
 *
 * Per layer: RMSNorm -> Q,K,V projections -> RoPE (normal mode: adjacent pairs) -> K,V stored
 * as fp16 in the cache -> scores K.Q in fp16 -> scaled, causally masked softmax -> V.probs in
 * fp16 -> output projection -> residual; RMSNorm -> gate/up projections -> SwiGLU -> down
 * projection -> residual. Then the final RMSNorm and the output projection (the token embedding
 * matrix when the model ties them) for the last token only.
 *
 * Where ggml's result depends on the order of a floating-point sum, this file follows the
 * order ggml's kernels use, written as portable scalar C (fmaf for a fused multiply-add):
 *  - attention dot products of fp16 rows: 4 accumulators x 16 lanes over blocks of 64
 *    (ggml_vec_dot_f16) for one token; one 16-lane accumulator (llamafile's tinyBLAS) for a
 *    batch of >= 2 tokens, which is how ggml multiplies F16 matrices with more than one column;
 *  - softmax: exponentials from the polynomial ggml_v_expf evaluates per 16-lane vector, each
 *    vector's sum reduced pairwise then accumulated in double; the cache keeps ggml's n_kv
 *    (the used cells rounded up to 256) so the split between vector and scalar parts matches;
 *  - SwiGLU: the same exponential for every complete group of 16, libm expf for the rest;
 *  - RMSNorm: squares summed in double;
 *  - RoPE: the angle advanced by repeated float multiplication, the rotation contracted to
 *    fused multiply-adds the way GCC contracts ggml's C++ source.
 * Weight matrices go through quants.c (em_vec_dot / em_vec_dot_kernel), which reproduces each
 * of ggml's kernels; matmul() below picks the kernel llama.cpp would pick for the weight type,
 * the buffer the weight would live in, and the number of activation rows.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

/* ---- scalar replicas of ggml's vector math ---------------------------------------------- */

/* Sum of 16 lanes in the order of a 512-bit horizontal add: halves, quarters, pairs. */
static float reduce16(const float a[16]) {
    float t[8], u[4];
    for (int i = 0; i < 8; i++) t[i] = a[i + 8] + a[i];
    for (int i = 0; i < 4; i++) u[i] = t[i + 4] + t[i];
    float w0 = u[2] + u[0], w1 = u[3] + u[1];
    return w0 + w1;
}

/* One lane of ggml_v_expf (AVX-512): e^x = 2^n * p(b) with n = round(x / ln 2) and b the
 * remainder, p a degree-5 polynomial; |n| > 192 saturates to 0 or inf. */
float em_expf_vec(float x) {
    const float shift = 0x1.8p23f;
    const float z = fmaf(x, 0x1.715476p+0f, shift);
    const float n = z - shift;
    const float b = fmaf(-n, 0x1.7f7d1cp-20f, fmaf(-n, 0x1.62e4p-1f, x));
    const float u = b * b;
    const float j = fmaf(fmaf(fmaf(0x1.0e4020p-7f, b, 0x1.573e2ep-5f), u, fmaf(0x1.555e66p-3f, b, 0x1.fffdb6p-2f)),
                         u, fmaf(0x1.ffffecp-1f, b, 1.0f));
    if (isnan(n)) return n; /* NaN in, NaN out, as the vector code gives */
    if (fabsf(n) > 192.0f) return n <= 0.0f ? 0.0f : INFINITY;
    return ldexpf(j, (int)n);
}

/* Softmax of one row in place semantics of ggml_soft_max (x already scaled and masked). */
void em_softmax_row(float *y, const float *x, int64_t n) {
    float max = -INFINITY;
    for (int64_t i = 0; i < n; i++) max = x[i] > max ? x[i] : max;
    double sum = 0.0;
    int64_t i = 0;
    for (; i + 15 < n; i += 16) {
        for (int l = 0; l < 16; l++) y[i + l] = em_expf_vec(x[i + l] - max);
        sum += (double)reduce16(y + i);
    }
    for (; i < n; i++) {
        float v = expf(x[i] - max);
        sum += (double)v;
        y[i] = v;
    }
    const float inv = (float)(1.0 / sum);
    for (int64_t k = 0; k < n; k++) y[k] *= inv;
}

/* ggml_vec_dot_f16 with 512-bit vectors. Elements of y from nz on are zero and skipped
 * (a zero product leaves every partial sum unchanged). */
static float dot_f16_vec(int64_t n, const uint16_t *x, const uint16_t *y, int64_t nz) {
    float acc[4][16];
    memset(acc, 0, sizeof acc);
    const int64_t np = n & ~(int64_t)63;
    const int64_t lim = nz < np ? nz : np;
    for (int64_t i = 0; i < lim; i++)
        acc[(i >> 4) & 3][i & 15] = fmaf(em_fp16_to_fp32(x[i]), em_fp16_to_fp32(y[i]), acc[(i >> 4) & 3][i & 15]);
    for (int l = 0; l < 16; l++) {
        acc[0][l] = acc[0][l] + acc[2][l];
        acc[1][l] = acc[1][l] + acc[3][l];
        acc[0][l] = acc[0][l] + acc[1][l];
    }
    double sum = (double)reduce16(acc[0]);
    for (int64_t i = np; i < n && i < nz; i++)
        sum += (double)(em_fp16_to_fp32(x[i]) * em_fp16_to_fp32(y[i]));
    return (float)sum;
}

/* One output of tinyBLAS: a single 16-lane fused multiply-add accumulator (n % 16 == 0). */
static float dot_f16_gemm(int64_t n, const uint16_t *x, const uint16_t *y, int64_t nz) {
    float acc[16] = {0};
    const int64_t lim = nz < n ? nz : n;
    for (int64_t i = 0; i < lim; i++)
        acc[i & 15] = fmaf(em_fp16_to_fp32(x[i]), em_fp16_to_fp32(y[i]), acc[i & 15]);
    return reduce16(acc);
}

/* ---- building blocks ------------------------------------------------------------------ */

static void rmsnorm(float *y, const float *x, const float *w, int64_t n, float eps) {
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += (double)(x[i] * x[i]);
    const float mean = (float)(sum / (double)n);
    const float scale = 1.0f / sqrtf(mean + eps);
    for (int64_t i = 0; i < n; i++) y[i] = (x[i] * scale) * w[i];
}

static float yarn_ramp(float low, float high, int64_t i0) {
    const float y = ((float)(i0 / 2) - low) / fmaxf(0.001f, high - low);
    return 1.0f - fminf(1.0f, fmaxf(0.0f, y));
}

static float yarn_corr_dim(int n_dims, int n_ctx_orig, float n_rot, float base) {
    return (float)n_dims * logf((float)n_ctx_orig / (n_rot * 2.0f * 3.14159265358979323846f)) / (2.0f * logf(base));
}

/* cos/sin pairs for every rotated pair of one position: (n_rot) floats. */
static void rope_cache(const ember_model *m, int64_t pos, float *cache) {
    const em_hparams *hp = &m->hp;
    const int n_dims = hp->n_rot;
    const float theta_scale = powf(hp->rope_base, -2.0f / (float)n_dims);
    float corr[2] = {0.0f, 0.0f};
    if (hp->yarn_ext_factor != 0.0f) {
        float start = floorf(yarn_corr_dim(n_dims, hp->n_ctx_orig, hp->yarn_beta_fast, hp->rope_base));
        float end = ceilf(yarn_corr_dim(n_dims, hp->n_ctx_orig, hp->yarn_beta_slow, hp->rope_base));
        corr[0] = fmaxf(0.0f, start);
        corr[1] = fminf((float)(n_dims - 1), end);
    }
    float theta = (float)pos;
    for (int i0 = 0; i0 < n_dims; i0 += 2) {
        const float ff = m->rope_freqs ? m->rope_freqs[i0 / 2] : 1.0f;
        const float theta_extrap = theta / ff;
        const float theta_interp = hp->rope_freq_scale * theta_extrap;
        float th = theta_interp;
        float mscale = hp->yarn_attn_factor;
        if (hp->yarn_ext_factor != 0.0f) {
            const float ramp_mix = yarn_ramp(corr[0], corr[1], i0) * hp->yarn_ext_factor;
            th = fmaf(theta_interp, 1.0f - ramp_mix, theta_extrap * ramp_mix);
            mscale *= fmaf(0.1f, logf(1.0f / hp->rope_freq_scale), 1.0f);
        }
        cache[i0] = cosf(th) * mscale;
        cache[i0 + 1] = sinf(th) * mscale;
        theta *= theta_scale;
    }
}

static void rope_apply(float *x, const float *cache, int n_dims) {
    for (int i0 = 0; i0 < n_dims; i0 += 2) {
        const float c = cache[i0], s = cache[i0 + 1];
        const float x0 = x[i0], x1 = x[i0 + 1];
        x[i0] = fmaf(x0, c, -(x1 * s));
        x[i0 + 1] = fmaf(x0, s, x1 * c);
    }
}

/* ---- parallel jobs -------------------------------------------------------------------- */

typedef struct mm_job {
    const em_kernels *kern;
    const em_weight *w;
    const float *x;       /* (n, w->ne0) */
    float *y;             /* (n, y_stride) */
    int64_t y_stride;
    int64_t n;
    uint8_t *act;         /* (n, act_stride) x converted to the weight's vec_dot_type, or NULL */
    size_t act_stride;
    em_type act_type;
    em_kernel kern_head;  /* kernel for activation rows [0, n_head) */
    em_kernel kern_tail;  /* kernel for the rows after */
    int64_t n_head;
} mm_job;

static void mm_convert(void *arg, int ith, int nth) {
    mm_job *j = (mm_job *)arg;
    long long r0, r1;
    em_split_range(j->n, ith, nth, &r0, &r1);
    em_quantize_fn q = j->kern->quantize[j->act_type];
    for (long long t = r0; t < r1; t++) {
        const float *x = j->x + t * j->w->ne0;
        void *out = j->act + (size_t)t * j->act_stride;
        if (q) q(x, out, j->w->ne0);
        else em_quantize_row(j->act_type, x, out, j->w->ne0);
    }
}

static void mm_compute(void *arg, int ith, int nth) {
    mm_job *j = (mm_job *)arg;
    const em_weight *w = j->w;
    long long r0, r1;
    em_split_range(w->ne1, ith, nth, &r0, &r1);
    /* the fast table entries where the level has them; the scalar replicas otherwise */
    em_vec_dot_fn vec = j->kern->vec_dot[w->type];
    em_vec_dot_fn sgemm = j->kern->sgemm[w->type];
    for (long long r = r0; r < r1; r++) {
        const uint8_t *row = (const uint8_t *)w->data + (size_t)r * w->row_bytes;
        for (int64_t t = 0; t < j->n; t++) {
            float s;
            const void *a = j->act ? (const void *)(j->act + (size_t)t * j->act_stride)
                                   : (const void *)(j->x + t * w->ne0);
            em_kernel k = t < j->n_head ? j->kern_head : j->kern_tail;
            if (k == EM_KERNEL_SGEMM && sgemm) sgemm(w->ne0, &s, row, a);
            else if (k != EM_KERNEL_VEC_DOT && em_vec_dot_kernel(k, w->type, w->ne0, &s, row, a) == 0) { /* done */ }
            else if (vec) vec(w->ne0, &s, row, a);
            else em_vec_dot(w->type, w->ne0, &s, row, a);
            j->y[t * j->y_stride + r] = s;
        }
    }
}

/* y[t][r] = W[r] . x[t] for n tokens, with the kernel llama.cpp's CPU backend would run:
 * the repacked kernels for the weights it repacks (gemm over groups of 4 rows, gemv for the
 * rest), the tiled K-quant matmul for >= 8 rows, llamafile's sgemm for >= 2 rows when the
 * weight has a multiple of 4 rows, else vec_dot. */
static void matmul(ember_context *ctx, const em_weight *w, const float *x, float *y, int64_t n) {
    mm_job j;
    memset(&j, 0, sizeof j);
    j.kern = ctx->kern;
    j.w = w;
    j.x = x;
    j.y = y;
    j.y_stride = w->ne1;
    j.n = n;
    j.kern_head = j.kern_tail = EM_KERNEL_VEC_DOT;
    if (!w->plain_buffer && em_repack_applies(w->type, w->ne1)) {
        j.kern_head = EM_KERNEL_REPACK_GEMM;
        j.kern_tail = EM_KERNEL_REPACK_GEMV;
        j.n_head = n >= 2 ? n - n % 4 : 0;
    } else if (n >= 8 && w->type >= EM_TYPE_Q2_K && w->type <= EM_TYPE_Q6_K) {
        j.kern_head = EM_KERNEL_TILED;
        j.n_head = n;
    } else if (n >= 2 && w->ne1 % 4 == 0) {
        j.kern_head = EM_KERNEL_SGEMM;
        j.n_head = n;
    }
    j.act_type = em_type_traits_get(w->type)->vec_dot_type;
    if (j.act_type != EM_TYPE_F32) {
        j.act = ctx->act;
        j.act_stride = ctx->act_stride;
        em_pool_run(ctx->pool, mm_convert, &j);
    }
    em_pool_run(ctx->pool, mm_compute, &j);
}

typedef struct attn_job {
    ember_context *ctx;
    int il;
    int64_t n;            /* tokens in the batch */
    int64_t pos0;         /* position of the first */
    int64_t n_kv;         /* cache cells ggml's graph would cover */
} attn_job;

static void attn_compute(void *arg, int ith, int nth) {
    attn_job *a = (attn_job *)arg;
    ember_context *ctx = a->ctx;
    const em_hparams *hp = &ctx->model->hp;
    const int64_t hd = hp->head_dim, kvd = (int64_t)hp->n_head_kv * hd, qd = (int64_t)hp->n_head * hd;
    const int64_t group = hp->n_head / hp->n_head_kv;
    const int64_t n_kv = a->n_kv;
    const uint16_t *kc = ctx->k_cache + (size_t)a->il * ctx->n_ctx * kvd;
    const uint16_t *vc = ctx->v_cache + (size_t)a->il * kvd * ctx->n_ctx;
    float *scores = ctx->scores + (size_t)ith * ctx->n_ctx;
    uint16_t *p16 = ctx->probs16 + (size_t)ith * ctx->n_ctx;
    /* batches of two or more tokens are multiplied by tinyBLAS when the shapes allow it */
    const int kq_gemm = a->n >= 2 && n_kv % 4 == 0 && hd % 16 == 0;
    const int kqv_gemm = a->n >= 2 && hd % 4 == 0 && n_kv % 16 == 0;

    long long w0, w1;
    em_split_range(a->n * hp->n_head, ith, nth, &w0, &w1);
    for (long long wi = w0; wi < w1; wi++) {
        const int64_t t = wi / hp->n_head, h = wi % hp->n_head;
        const int64_t kvh = h / group;
        const int64_t pos = a->pos0 + t;
        const uint16_t *q = ctx->q16 + t * qd + h * hd;
        for (int64_t j = 0; j < n_kv; j++) {
            if (j > pos) { scores[j] = -INFINITY; continue; }
            const uint16_t *k = kc + (size_t)j * kvd + kvh * hd;
            const float s = kq_gemm ? dot_f16_gemm(hd, k, q, hd) : dot_f16_vec(hd, k, q, hd);
            scores[j] = s * hp->kq_scale + 0.0f;
        }
        em_softmax_row(scores, scores, n_kv);
        for (int64_t j = 0; j < n_kv; j++) p16[j] = em_fp32_to_fp16(scores[j]);
        /* probabilities past pos are exactly zero and are skipped */
        float *out = ctx->att + t * qd + h * hd;
        for (int64_t d = 0; d < hd; d++) {
            const uint16_t *vrow = vc + (size_t)(kvh * hd + d) * ctx->n_ctx;
            out[d] = kqv_gemm ? dot_f16_gemm(n_kv, vrow, p16, pos + 1) : dot_f16_vec(n_kv, vrow, p16, pos + 1);
        }
    }
}

/* ---- the forward pass ------------------------------------------------------------------ */

static void swiglu(float *g, const float *u, int64_t n) {
    int64_t i = 0;
    for (; i + 15 < n; i += 16)
        for (int l = 0; l < 16; l++) {
            const float x = g[i + l];
            g[i + l] = (x / (1.0f + em_expf_vec(0.0f - x))) * u[i + l];
        }
    for (; i < n; i++) {
        const float x = g[i];
        g[i] = (x / (1.0f + expf(-x))) * u[i];
    }
}

ember_status em_llama_eval(ember_context *ctx, const int32_t *tokens, uint32_t n_tokens) {
    const ember_model *m = ctx->model;
    const em_hparams *hp = &m->hp;
    const int64_t E = hp->n_embd, F = hp->n_ff, hd = hp->head_dim;
    const int64_t qd = (int64_t)hp->n_head * hd, kvd = (int64_t)hp->n_head_kv * hd;
    const int64_t pos0 = ctx->n_past;
    int64_t n = n_tokens;

    /* the number of cache cells the attention covers, as llama.cpp pads it */
    int64_t n_used = pos0 + n;
    int64_t n_kv = ((n_used + 255) / 256) * 256;
    if (n_kv > (int64_t)ctx->n_ctx) n_kv = ctx->n_ctx;

    float *x = ctx->x;
    for (int64_t t = 0; t < n; t++)
        em_dequantize_row(m->tok_embd.type, (const uint8_t *)m->tok_embd.data + (size_t)tokens[t] * m->tok_embd.row_bytes,
                          x + t * E, E);

    float *cache = ctx->scores; /* rope tables, before attention needs the scratch */
    for (int il = 0; il < hp->n_layer; il++) {
        const em_layer *L = &m->layers[il];
        for (int64_t t = 0; t < n; t++) rmsnorm(ctx->xb + t * E, x + t * E, L->attn_norm, E, hp->rms_eps);
        matmul(ctx, &L->wq, ctx->xb, ctx->q, n);
        matmul(ctx, &L->wk, ctx->xb, ctx->k, n);
        matmul(ctx, &L->wv, ctx->xb, ctx->v, n);

        uint16_t *kc = ctx->k_cache + (size_t)il * ctx->n_ctx * kvd;
        uint16_t *vc = ctx->v_cache + (size_t)il * kvd * ctx->n_ctx;
        for (int64_t t = 0; t < n; t++) {
            rope_cache(m, pos0 + t, cache);
            for (int h = 0; h < hp->n_head; h++) rope_apply(ctx->q + t * qd + h * hd, cache, hp->n_rot);
            for (int h = 0; h < hp->n_head_kv; h++) rope_apply(ctx->k + t * kvd + h * hd, cache, hp->n_rot);
            for (int64_t i = 0; i < qd; i++) ctx->q16[t * qd + i] = em_fp32_to_fp16(ctx->q[t * qd + i]);
            const int64_t pos = pos0 + t;
            for (int64_t i = 0; i < kvd; i++) {
                kc[(size_t)pos * kvd + i] = em_fp32_to_fp16(ctx->k[t * kvd + i]);
                vc[(size_t)i * ctx->n_ctx + pos] = em_fp32_to_fp16(ctx->v[t * kvd + i]);
            }
        }

        attn_job aj = {ctx, il, n, pos0, n_kv};
        em_pool_run(ctx->pool, attn_compute, &aj);
        matmul(ctx, &L->wo, ctx->att, ctx->xb2, n);

        if (il == hp->n_layer - 1 && n > 1) {
            /* only the last token's output is needed from here on */
            memmove(x, x + (n - 1) * E, (size_t)E * sizeof(float));
            memmove(ctx->xb2, ctx->xb2 + (n - 1) * E, (size_t)E * sizeof(float));
            n = 1;
        }
        for (int64_t i = 0; i < n * E; i++) x[i] = ctx->xb2[i] + x[i];

        for (int64_t t = 0; t < n; t++) rmsnorm(ctx->xb + t * E, x + t * E, L->ffn_norm, E, hp->rms_eps);
        matmul(ctx, &L->w_gate, ctx->xb, ctx->hb, n);
        matmul(ctx, &L->w_up, ctx->xb, ctx->hb2, n);
        for (int64_t t = 0; t < n; t++) swiglu(ctx->hb + t * F, ctx->hb2 + t * F, F);
        matmul(ctx, &L->w_down, ctx->hb, ctx->xb2, n);
        for (int64_t i = 0; i < n * E; i++) x[i] = ctx->xb2[i] + x[i];
    }

    rmsnorm(ctx->xb, x + (n - 1) * E, m->output_norm, E, hp->rms_eps);
    matmul(ctx, &m->output, ctx->xb, ctx->logits, 1);
    ctx->n_past += n_tokens;
    ctx->has_logits = 1;
    return EMBER_OK;
}

/* ---- context memory ------------------------------------------------------------------- */

ember_status em_context_init(ember_context *ctx) {
    const em_hparams *hp = &ctx->model->hp;
    const size_t B = ctx->n_batch, C = ctx->n_ctx, E = (size_t)hp->n_embd, F = (size_t)hp->n_ff;
    const size_t qd = (size_t)hp->n_head * (size_t)hp->head_dim, kvd = (size_t)hp->n_head_kv * (size_t)hp->head_dim;
    const size_t T = (size_t)em_pool_size(ctx->pool);
    size_t widest = E > F ? E : F;
    if (qd > widest) widest = qd;
    ctx->act_stride = ((4 * widest + 63) / 64) * 64; /* 4 bytes per element covers every vec_dot type */
    ctx->k_cache = (uint16_t *)calloc((size_t)hp->n_layer * C * kvd, sizeof(uint16_t));
    ctx->v_cache = (uint16_t *)calloc((size_t)hp->n_layer * C * kvd, sizeof(uint16_t));
    ctx->x = (float *)malloc(B * E * sizeof(float));
    ctx->xb = (float *)malloc(B * E * sizeof(float));
    ctx->xb2 = (float *)malloc(B * E * sizeof(float));
    ctx->q = (float *)malloc(B * qd * sizeof(float));
    ctx->k = (float *)malloc(B * kvd * sizeof(float));
    ctx->v = (float *)malloc(B * kvd * sizeof(float));
    ctx->att = (float *)malloc(B * qd * sizeof(float));
    ctx->hb = (float *)malloc(B * F * sizeof(float));
    ctx->hb2 = (float *)malloc(B * F * sizeof(float));
    ctx->q16 = (uint16_t *)malloc(B * qd * sizeof(uint16_t));
    ctx->act = (uint8_t *)malloc(B * ctx->act_stride);
    size_t per_thread = C > (size_t)hp->n_rot ? C : (size_t)hp->n_rot;
    ctx->scores = (float *)malloc(T * per_thread * sizeof(float));
    ctx->probs16 = (uint16_t *)malloc(T * per_thread * sizeof(uint16_t));
    ctx->logits = (float *)calloc((size_t)hp->n_vocab, sizeof(float));
    if (!ctx->k_cache || !ctx->v_cache || !ctx->x || !ctx->xb || !ctx->xb2 || !ctx->q || !ctx->k || !ctx->v ||
        !ctx->att || !ctx->hb || !ctx->hb2 || !ctx->q16 || !ctx->act || !ctx->scores || !ctx->probs16 || !ctx->logits) {
        em_context_release(ctx);
        return EMBER_ERR_OUT_OF_MEMORY;
    }
    return EMBER_OK;
}

void em_context_release(ember_context *ctx) {
    free(ctx->k_cache); free(ctx->v_cache);
    free(ctx->x); free(ctx->xb); free(ctx->xb2);
    free(ctx->q); free(ctx->k); free(ctx->v); free(ctx->att);
    free(ctx->hb); free(ctx->hb2); free(ctx->q16); free(ctx->act);
    free(ctx->scores); free(ctx->probs16); free(ctx->logits);
    ctx->k_cache = ctx->v_cache = NULL;
    ctx->x = ctx->xb = ctx->xb2 = ctx->q = ctx->k = ctx->v = ctx->att = ctx->hb = ctx->hb2 = NULL;
    ctx->q16 = NULL; ctx->act = NULL; ctx->scores = NULL; ctx->probs16 = NULL; ctx->logits = NULL;
}

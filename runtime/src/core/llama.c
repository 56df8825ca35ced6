/* llama.c - the llama forward pass on the CPU, written to give the same numbers as
 * llama.cpp's CPU backend (ggml-cpu on x86-64 with AVX-512, flash attention off).
 *
 * Per layer: RMSNorm -> Q,K,V projections -> RoPE (normal mode: adjacent pairs) -> K,V stored
 * as fp16 in the cache -> scores K.Q in fp16 -> scaled, causally masked softmax -> V.probs in
 * fp16 -> output projection -> residual; RMSNorm -> gate/up projections -> SwiGLU -> down
 * projection -> residual. Then the final RMSNorm and the output projection (the token embedding
 * matrix when the model ties them) for the last token only.
 *
 * Where ggml's result depends on the order of a floating-point sum, ember follows the order
 * ggml's kernels use, written as portable scalar C (fmaf for a fused multiply-add) in this file
 * and in kernels.c (the attention dots, softmax and SwiGLU, which the SIMD levels of
 * kernels.h reproduce bit for bit):
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
 * Weight matrices go through the kernel table of the context's level (kernels.h; quants.c is
 * the scalar reference), which reproduces each of ggml's kernels; mm_part_init() picks the
 * kernel llama.cpp would pick for the weight type, the buffer the weight would live in, and the
 * number of activation rows. Speed without changing a bit: a weight row is dotted with 4
 * activation rows at once (vec_dot4) in a batch and 4 weight rows with one activation row
 * (vec_dot_r4) in a token step; Q/K/V and gate/up share one thread-pool job each; small batches
 * convert their activations in every thread instead of waiting on one another.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

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
void em_rope_cache(const ember_model *m, int64_t pos, float *cache) {
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

/* Activation rows up to which every thread converts the whole input itself (into its own
 * slice of ctx->act_small), saving the barrier between conversion and dot products. */
#define MM_SMALL_N 4
#define MM_MAX_W 3

/* one weight of a matmul job: y[t][r] = W[r] . x[t] */
typedef struct mm_part {
    const em_weight *w;
    float *y;             /* (n, w->ne1) */
    em_kernel kern_head;  /* kernel for activation rows [0, n_head) */
    em_kernel kern_tail;  /* kernel for the rows after */
    int64_t n_head;
} mm_part;

/* up to MM_MAX_W weights of the same type and row length applied to the same input; their
 * rows are split over the threads as one list */
typedef struct mm_job {
    const em_kernels *kern;
    mm_part part[MM_MAX_W];
    int n_part;
    const float *x;       /* (n, ne0) */
    int64_t n, ne0;
    em_type type;
    uint8_t *act;         /* (n, act_stride) x converted to the weights' vec_dot_type, or NULL */
    size_t act_stride;
    em_type act_type;
    uint8_t *act_small;   /* (n_threads, MM_SMALL_N, act_stride): per-thread copies when small */
} mm_job;

static void convert_rows(const mm_job *j, int64_t t0, int64_t t1, uint8_t *out) {
    em_quantize_fn q = j->kern->quantize[j->act_type];
    for (int64_t t = t0; t < t1; t++) {
        const float *x = j->x + t * j->ne0;
        void *o = out + (size_t)(t - t0) * j->act_stride;
        if (q) q(x, o, j->ne0);
        else em_quantize_row(j->act_type, x, o, j->ne0);
    }
}

static void mm_convert(void *arg, int ith, int nth) {
    mm_job *j = (mm_job *)arg;
    long long r0, r1;
    em_split_range(j->n, ith, nth, &r0, &r1);
    convert_rows(j, r0, r1, j->act + (size_t)r0 * j->act_stride);
}

/* rows [r0, r1) of one weight */
static void mm_rows(const mm_job *j, const mm_part *p, const uint8_t *act, long long r0, long long r1) {
    const em_weight *w = p->w;
    const em_type type = j->type;
    /* the fast table entries where the level has them; the scalar replicas otherwise */
    em_vec_dot_fn vec = j->kern->vec_dot[type];
    em_vec_dot_fn sgemm = j->kern->sgemm[type];
    em_vec_dot_fn head_fn = NULL, tail_fn = NULL;
    if (p->kern_head == EM_KERNEL_REPACK_GEMM) head_fn = j->kern->repack_gemm[type];
    else if (p->kern_head == EM_KERNEL_TILED) head_fn = j->kern->tiled[type];
    else if (p->kern_head == EM_KERNEL_SGEMM) head_fn = sgemm;
    if (p->kern_tail == EM_KERNEL_REPACK_GEMV) tail_fn = j->kern->repack_gemv[type];
    /* tokens [0, n4) go 4 at a time through vec_dot4 where their kernel gives vec_dot's bits
     * (vec_dot itself, or sgemm of a quantized type, which is vec_dot) */
    em_vec_dot4_fn dot4 = act ? j->kern->vec_dot4[type] : NULL;
    int64_t n4 = 0;
    if (dot4) {
        const int quant = type != EM_TYPE_F32 && type != EM_TYPE_F16 && type != EM_TYPE_BF16;
        const int head_ok = p->kern_head == EM_KERNEL_VEC_DOT || (p->kern_head == EM_KERNEL_SGEMM && quant);
        const int tail_ok = p->kern_tail == EM_KERNEL_VEC_DOT || (p->kern_tail == EM_KERNEL_SGEMM && quant);
        n4 = head_ok && tail_ok ? j->n : head_ok ? p->n_head : 0;
        n4 -= n4 % 4;
    }
    const int64_t ys = w->ne1;
    /* the tokens after n4 whose kernel is vec_dot go 4 weight rows at a time through
     * vec_dot_r4 (which gives vec_dot's bits) */
    em_vec_dot_r4_fn dotr4 = act ? j->kern->vec_dot_r4[type] : NULL;
    int64_t t_r4 = j->n;   /* tokens [t_r4, n) take dotr4 */
    if (dotr4) {
        const int quant = type != EM_TYPE_F32 && type != EM_TYPE_F16 && type != EM_TYPE_BF16;
        t_r4 = n4;
        for (int64_t t = n4; t < j->n; t++) {
            const em_kernel k = t < p->n_head ? p->kern_head : p->kern_tail;
            if (!(k == EM_KERNEL_VEC_DOT || (k == EM_KERNEL_SGEMM && quant))) t_r4 = t + 1;
        }
        long long r = r0;
        for (; r + 4 <= r1; r += 4) {
            const uint8_t *row = (const uint8_t *)w->data + (size_t)r * w->row_bytes;
            for (int64_t t = t_r4; t < j->n; t++) {
                float s4[4];
                dotr4(j->ne0, s4, row, w->row_bytes, act + (size_t)t * j->act_stride);
                for (int c = 0; c < 4; c++) p->y[t * ys + r + c] = s4[c];
            }
        }
        for (; r < r1; r++) {
            const uint8_t *row = (const uint8_t *)w->data + (size_t)r * w->row_bytes;
            for (int64_t t = t_r4; t < j->n; t++) {
                float s1;
                vec(j->ne0, &s1, row, act + (size_t)t * j->act_stride);
                p->y[t * ys + r] = s1;
            }
        }
    }
    /* tokens [0, n4) of row pairs through the 2x4 tile where the level has one */
    em_vec_dot4x2_fn dot4x2 = n4 ? j->kern->vec_dot4x2[type] : NULL;
    long long r_tile = r0;
    if (dot4x2) {
        for (; r_tile + 2 <= r1; r_tile += 2) {
            const uint8_t *row = (const uint8_t *)w->data + (size_t)r_tile * w->row_bytes;
            for (int64_t t = 0; t < n4; t += 4) {
                float s8[8];
                dot4x2(j->ne0, s8, row, w->row_bytes, act + (size_t)t * j->act_stride, j->act_stride);
                for (int c = 0; c < 4; c++) {
                    p->y[(t + c) * ys + r_tile] = s8[c];
                    p->y[(t + c) * ys + r_tile + 1] = s8[4 + c];
                }
            }
        }
    }
    for (long long r = r0; r < r1; r++) {
        const uint8_t *row = (const uint8_t *)w->data + (size_t)r * w->row_bytes;
        for (int64_t t = 0; t < n4 && r >= r_tile; t += 4) {
            float s4[4];
            dot4(j->ne0, s4, row, act + (size_t)t * j->act_stride, j->act_stride);
            for (int c = 0; c < 4; c++) p->y[(t + c) * ys + r] = s4[c];
        }
        for (int64_t t = n4; t < t_r4; t++) {
            float s;
            const void *a = act ? (const void *)(act + (size_t)t * j->act_stride) : (const void *)(j->x + t * j->ne0);
            const int head = t < p->n_head;
            const em_kernel k = head ? p->kern_head : p->kern_tail;
            em_vec_dot_fn f = head ? head_fn : tail_fn;
            if (k == EM_KERNEL_VEC_DOT) f = vec;
            if (f) f(j->ne0, &s, row, a);
            else if (k == EM_KERNEL_VEC_DOT || em_vec_dot_kernel(k, type, j->ne0, &s, row, a) != 0)
                em_vec_dot(type, j->ne0, &s, row, a);
            p->y[t * ys + r] = s;
        }
    }
}

static void mm_compute(void *arg, int ith, int nth) {
    mm_job *j = (mm_job *)arg;
    const uint8_t *act = j->act;
    if (j->act_small) {
        uint8_t *mine = j->act_small + (size_t)ith * MM_SMALL_N * j->act_stride;
        convert_rows(j, 0, j->n, mine);
        act = mine;
    }
    long long total = 0;
    for (int i = 0; i < j->n_part; i++) total += j->part[i].w->ne1;
    long long r0, r1;
    em_split_range(total, ith, nth, &r0, &r1);
    long long base = 0;
    for (int i = 0; i < j->n_part; i++) {
        const long long rows = j->part[i].w->ne1;
        const long long a = r0 > base ? r0 - base : 0, b = r1 - base < rows ? r1 - base : rows;
        if (a < b) mm_rows(j, &j->part[i], act, a, b);
        base += rows;
    }
}

/* The kernel llama.cpp's CPU backend would run for w and n activation rows: the repacked
 * kernels for the weights it repacks (gemm over groups of 4 rows, gemv for the rest), the
 * tiled K-quant matmul for >= 8 rows, llamafile's sgemm for >= 2 rows when the weight has a
 * multiple of 4 rows, else vec_dot. */
static void mm_part_init(mm_part *p, const em_weight *w, float *y, int64_t n) {
    p->w = w;
    p->y = y;
    p->kern_head = p->kern_tail = EM_KERNEL_VEC_DOT;
    p->n_head = 0;
    if (!w->plain_buffer && em_repack_applies(w->type, w->ne1)) {
        p->kern_head = EM_KERNEL_REPACK_GEMM;
        p->kern_tail = EM_KERNEL_REPACK_GEMV;
        p->n_head = n >= 2 ? n - n % 4 : 0;
    } else if (n >= 8 && w->type >= EM_TYPE_Q2_K && w->type <= EM_TYPE_Q6_K) {
        p->kern_head = EM_KERNEL_TILED;
        p->n_head = n;
    } else if (n >= 2 && w->ne1 % 4 == 0) {
        p->kern_head = EM_KERNEL_SGEMM;
        p->n_head = n;
    }
}

static void mm_run(ember_context *ctx, mm_job *j) {
    j->act_type = em_type_traits_get(j->type)->vec_dot_type;
    if (j->act_type != EM_TYPE_F32) {
        j->act_stride = ctx->act_stride;
        if (j->n <= MM_SMALL_N && em_pool_size(ctx->pool) > 1) {
            j->act_small = ctx->act_small;
        } else {
            j->act = ctx->act;
            em_pool_run(ctx->pool, mm_convert, j);
        }
    }
    em_pool_run(ctx->pool, mm_compute, j);
}

/* y_i[t][r] = W_i[r] . x[t] for n tokens and the n_w weights w[i] (n_w <= MM_MAX_W); the
 * weights that share a type and row length go through one job. Rows [0, nb) take the kernels
 * llama.cpp picks for a batch of nb rows; rows [nb, n) the one-row kernels (the tail kernels of
 * mm_part_init are those of a single token), so each of them gets the bits of a one-token
 * decode. */
static void matmul_n(ember_context *ctx, const em_weight *const *w, float *const *y, int n_w, const float *x,
                     int64_t n, int64_t nb) {
    mm_job j;
    memset(&j, 0, sizeof j);
    for (int i = 0; i < n_w; i++) {
        if (j.n_part > 0 && (w[i]->type != j.type || w[i]->ne0 != j.ne0)) {
            mm_run(ctx, &j);
            memset(&j, 0, sizeof j);
        }
        if (j.n_part == 0) {
            j.kern = ctx->kern;
            j.x = x;
            j.n = n;
            j.ne0 = w[i]->ne0;
            j.type = w[i]->type;
        }
        mm_part_init(&j.part[j.n_part++], w[i], y[i], nb);
    }
    if (j.n_part > 0) mm_run(ctx, &j);
}

static void matmul(ember_context *ctx, const em_weight *w, const float *x, float *y, int64_t n, int64_t nb) {
    matmul_n(ctx, &w, &y, 1, x, n, nb);
}

typedef struct attn_job {
    ember_context *lead;      /* whose per-thread scratch the job uses */
    const em_seq_slice *seq;  /* the sequences of the batch, in token order */
    int n_seq;
    int il;
    int64_t n;                /* tokens in the batch, all sequences together */
} attn_job;

static void attn_compute(void *arg, int ith, int nth) {
    attn_job *a = (attn_job *)arg;
    ember_context *lead = a->lead;
    const em_hparams *hp = &lead->model->hp;
    const int64_t hd = hp->head_dim, kvd = (int64_t)hp->n_head_kv * hd, qd = (int64_t)hp->n_head * hd;
    const int64_t group = hp->n_head / hp->n_head_kv;
    float *scores = lead->scores + (size_t)ith * lead->n_ctx;
    uint16_t *p16 = lead->probs16 + (size_t)ith * lead->n_ctx;
    const em_attn_dot_fn dot_vec = lead->kern->attn_dot_vec ? lead->kern->attn_dot_vec : em_attn_dot_vec_ref;
    const em_attn_dot_fn dot_gemm = lead->kern->attn_dot_gemm ? lead->kern->attn_dot_gemm : em_attn_dot_gemm_ref;
    void (*const softmax)(float *, const float *, int64_t, int64_t) =
        lead->kern->attn_softmax ? lead->kern->attn_softmax : em_softmax_masked;
    const em_quantize_fn to_f16 = lead->kern->quantize[EM_TYPE_F16];

    long long w0, w1;
    em_split_range(a->n * hp->n_head, ith, nth, &w0, &w1);
    int si = 0;
    int64_t first = 0; /* batch index of the first token of sequence si */
    for (long long wi = w0; wi < w1; wi++) {
        const int64_t t = wi / hp->n_head, h = wi % hp->n_head;
        while (t >= first + a->seq[si].n) first += a->seq[si++].n;
        const em_seq_slice *sq = &a->seq[si];
        const ember_context *ctx = sq->ctx;
        /* each sequence attends to its own cache, with the cells ggml's graph would cover for
         * it (the used cells rounded up to 256) */
        const int64_t pos0 = ctx->n_past, n_seq_tok = sq->exact ? 1 : sq->n;
        const int64_t pos = pos0 + (t - first);
        /* an exact sequence's token sees the cells a one-token decode at its position would */
        int64_t n_kv = ((sq->exact ? pos + 1 : pos0 + n_seq_tok) + 255) / 256 * 256;
        if (n_kv > (int64_t)ctx->n_ctx) n_kv = ctx->n_ctx;
        /* batches of two or more tokens are multiplied by tinyBLAS when the shapes allow it */
        const int kq_gemm = n_seq_tok >= 2 && n_kv % 4 == 0 && hd % 16 == 0;
        const int kqv_gemm = n_seq_tok >= 2 && hd % 4 == 0 && n_kv % 16 == 0;
        const uint16_t *kc = ctx->k_cache + (size_t)a->il * ctx->n_ctx * kvd;
        const uint16_t *vc = ctx->v_cache + (size_t)a->il * kvd * ctx->n_ctx;
        const int64_t kvh = h / group;
        const uint16_t *q = lead->q16 + t * qd + h * hd;
        /* cells past pos are masked (-inf): they get probability 0 and are neither computed
         * nor read */
        const int64_t nv = pos + 1 < n_kv ? pos + 1 : n_kv;
        for (int64_t j = 0; j < nv; j++) {
            const uint16_t *k = kc + (size_t)j * kvd + kvh * hd;
            const float s = kq_gemm ? dot_gemm(hd, k, q, hd) : dot_vec(hd, k, q, hd);
            scores[j] = s * hp->kq_scale + 0.0f;
        }
        softmax(scores, scores, n_kv, nv);
        to_f16(scores, p16, nv);
        /* probabilities past pos are exactly zero and are skipped */
        float *out = lead->att + t * qd + h * hd;
        for (int64_t d = 0; d < hd; d++) {
            const uint16_t *vrow = vc + (size_t)(kvh * hd + d) * ctx->n_ctx;
            out[d] = kqv_gemm ? dot_gemm(n_kv, vrow, p16, pos + 1) : dot_vec(n_kv, vrow, p16, pos + 1);
        }
    }
}

/* ---- the forward pass ------------------------------------------------------------------ */


/* The forward pass of a batch made of n_seq sequences (each a slice of tokens appended to its
 * own context), computed with lead's threads and scratch; the total must fit lead->n_batch.
 * With one sequence this is exactly the single-context pass: the same kernels, the same bits. */
ember_status em_llama_eval_multi(ember_context *lead, const em_seq_slice *seq, int n_seq) {
    const ember_model *m = lead->model;
    const em_hparams *hp = &m->hp;
    const int64_t E = hp->n_embd, F = hp->n_ff, hd = hp->head_dim, V = hp->n_vocab;
    const int64_t qd = (int64_t)hp->n_head * hd, kvd = (int64_t)hp->n_head_kv * hd;
    int64_t n = 0, n_out = 0, nb = 0, nb_out = 0;
    for (int i = 0; i < n_seq; i++) {
        const int64_t rows = seq[i].logits ? seq[i].n : seq[i].want_last ? 1 : 0;
        if (seq[i].exact) {
            n += seq[i].n;
        } else {
            if (nb != n) return EMBER_ERR_INVALID_ARGUMENT; /* batch rows come first */
            n += seq[i].n;
            nb += seq[i].n;
            nb_out += rows;
        }
        n_out += rows;
    }
    if (n == 0 || n > (int64_t)lead->n_batch) return EMBER_ERR_INVALID_ARGUMENT;

    float *x = lead->x;
    {
        int64_t t = 0;
        for (int i = 0; i < n_seq; i++)
            for (uint32_t k = 0; k < seq[i].n; k++, t++)
                em_dequantize_row(m->tok_embd.type,
                                  (const uint8_t *)m->tok_embd.data + (size_t)seq[i].tokens[k] * m->tok_embd.row_bytes,
                                  x + t * E, E);
    }

    float *cache = lead->scores; /* rope tables, before attention needs the scratch */
    const em_quantize_fn to_f16 = lead->kern->quantize[EM_TYPE_F16];
    void (*const silu_mul)(float *, const float *, int64_t) = lead->kern->swiglu ? lead->kern->swiglu : em_swiglu_ref;
    for (int il = 0; il < hp->n_layer; il++) {
        const em_layer *L = &m->layers[il];
        for (int64_t t = 0; t < n; t++) rmsnorm(lead->xb + t * E, x + t * E, L->attn_norm, E, hp->rms_eps);
        {
            const em_weight *w3[3] = {&L->wq, &L->wk, &L->wv};
            float *y3[3] = {lead->q, lead->k, lead->v};
            matmul_n(lead, w3, y3, 3, lead->xb, n, nb);
        }

        {
            int64_t t = 0;
            for (int i = 0; i < n_seq; i++) {
                ember_context *ctx = seq[i].ctx;
                uint16_t *kc = ctx->k_cache + (size_t)il * ctx->n_ctx * kvd;
                uint16_t *vc = ctx->v_cache + (size_t)il * kvd * ctx->n_ctx;
                for (uint32_t k = 0; k < seq[i].n; k++, t++) {
                    const int64_t pos = (int64_t)ctx->n_past + k;
                    em_rope_cache(m, pos, cache);
                    for (int h = 0; h < hp->n_head; h++) rope_apply(lead->q + t * qd + h * hd, cache, hp->n_rot);
                    for (int h = 0; h < hp->n_head_kv; h++) rope_apply(lead->k + t * kvd + h * hd, cache, hp->n_rot);
                    to_f16(lead->q + t * qd, lead->q16 + t * qd, qd);
                    to_f16(lead->k + t * kvd, kc + (size_t)pos * kvd, kvd);
                    for (int64_t j = 0; j < kvd; j++)
                        vc[(size_t)j * ctx->n_ctx + pos] = em_fp32_to_fp16(lead->v[t * kvd + j]);
                }
            }
        }

        attn_job aj = {lead, seq, n_seq, il, n};
        em_pool_run(lead->pool, attn_compute, &aj);
        matmul(lead, &L->wo, lead->att, lead->xb2, n, nb);

        if (il == hp->n_layer - 1 && n_out < n) {
            /* only the rows whose logits are wanted are needed from here on; rows move towards
             * the front, so copying in order never overwrites a row still to be read */
            int64_t t = 0, o = 0;
            for (int i = 0; i < n_seq; i++) {
                for (uint32_t k = 0; k < seq[i].n; k++, t++) {
                    const int keep = seq[i].logits ? 1 : (seq[i].want_last && k + 1 == seq[i].n);
                    if (!keep) continue;
                    if (o != t) {
                        memmove(x + o * E, x + t * E, (size_t)E * sizeof(float));
                        memmove(lead->xb2 + o * E, lead->xb2 + t * E, (size_t)E * sizeof(float));
                    }
                    o++;
                }
            }
            n = n_out;
            nb = nb_out;
            if (n == 0) break; /* only the cache was wanted (a prompt chunk) */
        }
        for (int64_t i = 0; i < n * E; i++) x[i] = lead->xb2[i] + x[i];

        for (int64_t t = 0; t < n; t++) rmsnorm(lead->xb + t * E, x + t * E, L->ffn_norm, E, hp->rms_eps);
        {
            const em_weight *w2[2] = {&L->w_gate, &L->w_up};
            float *y2[2] = {lead->hb, lead->hb2};
            matmul_n(lead, w2, y2, 2, lead->xb, n, nb);
        }
        for (int64_t t = 0; t < n; t++) silu_mul(lead->hb + t * F, lead->hb2 + t * F, F);
        matmul(lead, &L->w_down, lead->hb, lead->xb2, n, nb);
        for (int64_t i = 0; i < n * E; i++) x[i] = lead->xb2[i] + x[i];
    }

    if (n_out == 1) {
        /* one row: straight into the logits of the context it belongs to */
        ember_context *owner = NULL;
        for (int i = 0; i < n_seq; i++)
            if (seq[i].logits || seq[i].want_last) owner = seq[i].ctx;
        rmsnorm(lead->xb, x, m->output_norm, E, hp->rms_eps);
        matmul(lead, &m->output, lead->xb, owner->logits, 1, 1);
        for (int i = 0; i < n_seq; i++)
            if (seq[i].logits) memcpy(seq[i].logits, owner->logits, (size_t)V * sizeof(float));
    } else if (n_out > 1) {
        float *all = (float *)malloc((size_t)n_out * (size_t)V * sizeof(float));
        if (!all) return EMBER_ERR_OUT_OF_MEMORY;
        for (int64_t t = 0; t < n_out; t++) rmsnorm(lead->xb + t * E, x + t * E, m->output_norm, E, hp->rms_eps);
        matmul(lead, &m->output, lead->xb, all, n_out, nb);
        int64_t o = 0;
        for (int i = 0; i < n_seq; i++) {
            const int64_t rows = seq[i].logits ? seq[i].n : seq[i].want_last ? 1 : 0;
            if (seq[i].logits) memcpy(seq[i].logits, all + o * V, (size_t)(rows * V) * sizeof(float));
            if (seq[i].want_last) memcpy(seq[i].ctx->logits, all + (o + rows - 1) * V, (size_t)V * sizeof(float));
            o += rows;
        }
        free(all);
    }
    for (int i = 0; i < n_seq; i++) {
        seq[i].ctx->n_past += seq[i].n;
        if (seq[i].want_last) seq[i].ctx->has_logits = 1;
    }
    return EMBER_OK;
}

ember_status em_llama_eval(ember_context *ctx, const int32_t *tokens, uint32_t n_tokens) {
    const em_seq_slice one = {ctx, tokens, n_tokens, NULL, 1, 0};
    return em_llama_eval_multi(ctx, &one, 1);
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
    ctx->act_small = (uint8_t *)malloc(T * MM_SMALL_N * ctx->act_stride);
    size_t per_thread = C > (size_t)hp->n_rot ? C : (size_t)hp->n_rot;
    ctx->scores = (float *)malloc(T * per_thread * sizeof(float));
    ctx->probs16 = (uint16_t *)malloc(T * per_thread * sizeof(uint16_t));
    ctx->logits = (float *)calloc((size_t)hp->n_vocab, sizeof(float));
    if (!ctx->k_cache || !ctx->v_cache || !ctx->x || !ctx->xb || !ctx->xb2 || !ctx->q || !ctx->k || !ctx->v ||
        !ctx->att || !ctx->hb || !ctx->hb2 || !ctx->q16 || !ctx->act || !ctx->act_small || !ctx->scores || !ctx->probs16 || !ctx->logits) {
        em_context_release(ctx);
        return EMBER_ERR_OUT_OF_MEMORY;
    }
    return EMBER_OK;
}

void em_context_release(ember_context *ctx) {
    free(ctx->k_cache); free(ctx->v_cache);
    free(ctx->x); free(ctx->xb); free(ctx->xb2);
    free(ctx->q); free(ctx->k); free(ctx->v); free(ctx->att);
    free(ctx->hb); free(ctx->hb2); free(ctx->q16); free(ctx->act); free(ctx->act_small);
    free(ctx->scores); free(ctx->probs16); free(ctx->logits);
    ctx->k_cache = ctx->v_cache = NULL;
    ctx->x = ctx->xb = ctx->xb2 = ctx->q = ctx->k = ctx->v = ctx->att = ctx->hb = ctx->hb2 = NULL;
    ctx->q16 = NULL; ctx->act = NULL; ctx->act_small = NULL; ctx->scores = NULL; ctx->probs16 = NULL; ctx->logits = NULL;
}

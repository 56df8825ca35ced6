/* backend_sycl.cpp - the SYCL backend (oneAPI DPC++): a whole token step on a SYCL GPU, in one
 * source file holding both the host side and the kernels (SYCL is single-source).
 *
 * Built with EMBER_SYCL=ON by a SYCL compiler (icx/icpx -fsycl from oneAPI DPC++; see
 * runtime/CMakeLists.txt). Unlike the CUDA/HIP backends it cannot open its runtime with dlopen:
 * SYCL code is C++ against libsycl, so the library links the SYCL runtime, and a machine
 * without it needs Intel's runtime (pip `intel-sycl-rt`, or the oneAPI runtime packages).
 * A machine with the runtime but no SYCL GPU gets a failed init with the reason, which `auto`
 * turns into one log line and the CPU path.
 *
 * Precision. The default build (EMBER_SYCL_F16 off) computes in fp32 like the CUDA kernels:
 * weights dequantised to float, products summed in float; the KV cache, the queries and the
 * attention probabilities are rounded to fp16 as the CPU path does. With EMBER_SYCL_F16 the
 * matrix-vector products of the F16 and legacy quant types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) run
 * where llama.cpp's GGML_SYCL_F16 runs its dequantize-mul-mat-vec kernels in half: activations
 * converted to fp16 once per product, each weight dequantised to fp16 (d*q + m), the products
 * and each 32-element block's sum in fp16, the block sums accumulated in float (llama.cpp keeps
 * a whole thread's share of the row in half; summing blocks in float rounds less). K-quants,
 * BF16 and F32 weights stay in float.
 *
 * Layouts are ggml's, read byte-wise from the GGUF data uploaded as is (runtime/src/cpu/quants.h).
 * Kernels (all in-order on one queue):
 *   matmul<T>   y[t][r] = W[r] . x[t]; one work-group of MM_LANES items per (row, token)
 *   rmsnorm     y[t] = x[t] / sqrt(mean(x[t]^2) + eps) * w; one work-group per token
 *   rope        adjacent pairs of every head rotated with a host-made cos/sin table
 *   kv_store    K and V rows of the batch into the fp16 caches at their positions
 *   attention   causal softmax(q.K * scale) . V; one work-group per (head, token)
 *   swiglu, add, to_half
 */
#include <sycl/sycl.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

extern "C" {
#include "backend.h"
#include "model.h"
}

namespace {

constexpr int WG = 128;          /* work-items per group of the row-wise kernels */
constexpr int MM_LANES = 32;     /* work-items sharing one weight row in a matmul */
constexpr uint32_t MAX_BATCH = 512;
constexpr int64_t ATT_TOKENS = 32; /* tokens per attention launch (bounds the score scratch) */

#if defined(EMBER_SYCL_F16)
constexpr bool kF16 = true;
constexpr const char *kPrecision = "fp16";
#else
constexpr bool kF16 = false;
constexpr const char *kPrecision = "fp32";
#endif

/* ggml type ids (quants.h em_type), as template arguments */
enum : int { T_F32 = 0, T_F16 = 1, T_Q4_0 = 2, T_Q4_1 = 3, T_Q5_0 = 6, T_Q5_1 = 7, T_Q8_0 = 8,
             T_Q2_K = 10, T_Q3_K = 11, T_Q4_K = 12, T_Q5_K = 13, T_Q6_K = 14, T_BF16 = 30 };

/* true where the FP16 build forms this type's products in half (llama.cpp's dmmv types) */
constexpr bool half_products(int t) {
    return kF16 && (t == T_F16 || t == T_Q4_0 || t == T_Q4_1 || t == T_Q5_0 || t == T_Q5_1 || t == T_Q8_0);
}

/* ---- device helpers ------------------------------------------------------------------- */

inline float h2f(uint16_t h) { return static_cast<float>(sycl::bit_cast<sycl::half>(h)); }
inline uint16_t f2h(float f) { return sycl::bit_cast<uint16_t>(static_cast<sycl::half>(f)); }
inline float ld16(const uint8_t *p) { return h2f(static_cast<uint16_t>(p[0] | (p[1] << 8))); }
inline uint32_t ld32(const uint8_t *p) {
    return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) | (static_cast<uint32_t>(p[2]) << 16) |
           (static_cast<uint32_t>(p[3]) << 24);
}

inline void scale_min_k4(int j, const uint8_t *q, int *sc, int *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

inline int q3k_scale(const uint8_t *packed, int j) {
    const int lo = (j < 8) ? (packed[j] & 0x0f) : (packed[j - 8] >> 4);
    const int hi = (packed[8 + (j & 3)] >> (2 * (j >> 2))) & 3;
    return (lo | (hi << 4)) - 32;
}

/* Element j of the 32-element block sb of a row, dequantised to half: d*q (+ m), so that its
 * product with an activation has the size of the result (the raw quant times x would
 * overflow half: 127 * 600 already does). */
template <int T>
inline sycl::half dequant_half(const uint8_t *row, int64_t sb, int j) {
    using H = sycl::half;
    if constexpr (T == T_F16) {
        return sycl::bit_cast<H>(reinterpret_cast<const uint16_t *>(row)[sb * 32 + j]);
    } else if constexpr (T == T_Q4_0) {
        const uint8_t *b = row + sb * 18;
        const int q = j < 16 ? (b[2 + j] & 0x0f) : (b[2 + j - 16] >> 4);
        return static_cast<H>(ld16(b)) * static_cast<H>(static_cast<float>(q - 8));
    } else if constexpr (T == T_Q4_1) {
        const uint8_t *b = row + sb * 20;
        const int q = j < 16 ? (b[4 + j] & 0x0f) : (b[4 + j - 16] >> 4);
        return static_cast<H>(ld16(b)) * static_cast<H>(static_cast<float>(q)) + static_cast<H>(ld16(b + 2));
    } else if constexpr (T == T_Q5_0 || T == T_Q5_1) {
        const int off = T == T_Q5_0 ? 2 : 4;
        const uint8_t *b = row + sb * (T == T_Q5_0 ? 22 : 24);
        const uint8_t *qs = b + off + 4;
        const int lo = j < 16 ? (qs[j] & 0x0f) : (qs[j - 16] >> 4);
        const int q = lo | static_cast<int>(((ld32(b + off) >> j) & 1u) << 4);
        if constexpr (T == T_Q5_0) return static_cast<H>(ld16(b)) * static_cast<H>(static_cast<float>(q - 16));
        else return static_cast<H>(ld16(b)) * static_cast<H>(static_cast<float>(q)) + static_cast<H>(ld16(b + 2));
    } else {
        static_assert(T == T_Q8_0, "not a type with fp16 products");
        const uint8_t *b = row + sb * 34;
        return static_cast<H>(ld16(b)) * static_cast<H>(static_cast<float>(static_cast<int8_t>(b[2 + j])));
    }
}

/* Dot of the 32 elements [32*sb, 32*sb + 32) of one weight row with x (already at 32*sb).
 * A is float, or sycl::half for the types half_products() names: then, as in llama.cpp's fp16
 * dequantize-mul-mat-vec, each weight is dequantised to half, multiplied by the half activation
 * and the block's products summed in half. */
template <int T, typename A>
inline float sub32_dot(const uint8_t *row, int64_t sb, const A *x) {
    if constexpr (!std::is_same_v<A, float>) {
        sycl::half s = static_cast<sycl::half>(0.0f);
        for (int j = 0; j < 32; j++) s += dequant_half<T>(row, sb, j) * x[j];
        return static_cast<float>(s);
    } else if constexpr (T == T_F32) {
        const float *w = reinterpret_cast<const float *>(row) + sb * 32;
        float s = 0.0f;
        for (int l = 0; l < 32; l++) s += w[l] * x[l];
        return s;
    } else if constexpr (T == T_F16) {
        const uint16_t *w = reinterpret_cast<const uint16_t *>(row) + sb * 32;
        float s = 0.0f;
        for (int l = 0; l < 32; l++) s += h2f(w[l]) * x[l];
        return s;
    } else if constexpr (T == T_BF16) {
        const uint16_t *w = reinterpret_cast<const uint16_t *>(row) + sb * 32;
        float s = 0.0f;
        for (int l = 0; l < 32; l++) s += sycl::bit_cast<float>(static_cast<uint32_t>(w[l]) << 16) * x[l];
        return s;
    } else if constexpr (T == T_Q4_0) {
        const uint8_t *b = row + sb * 18;
        float s = 0.0f;
        for (int j = 0; j < 16; j++)
            s += static_cast<float>((b[2 + j] & 0x0f) - 8) * x[j] +
                 static_cast<float>((b[2 + j] >> 4) - 8) * x[j + 16];
        return s * ld16(b);
    } else if constexpr (T == T_Q4_1) {
        const uint8_t *b = row + sb * 20;
        float s = 0.0f, xs = 0.0f;
        for (int j = 0; j < 16; j++) {
            s += static_cast<float>(b[4 + j] & 0x0f) * x[j] +
                 static_cast<float>(b[4 + j] >> 4) * x[j + 16];
            xs += x[j] + x[j + 16];
        }
        return s * ld16(b) + xs * ld16(b + 2);
    } else if constexpr (T == T_Q5_0 || T == T_Q5_1) {
        const int off = T == T_Q5_0 ? 2 : 4;
        const uint8_t *b = row + sb * (T == T_Q5_0 ? 22 : 24);
        const uint32_t qh = ld32(b + off);
        const uint8_t *qs = b + off + 4;
        float s = 0.0f, xs = 0.0f;
        for (int j = 0; j < 32; j++) {
            const int lo = j < 16 ? (qs[j] & 0x0f) : (qs[j - 16] >> 4);
            const int q = lo | static_cast<int>(((qh >> j) & 1u) << 4);
            s += static_cast<float>(T == T_Q5_0 ? q - 16 : q) * x[j];
            xs += x[j];
        }
        if constexpr (T == T_Q5_0) return s * ld16(b);
        else return s * ld16(b) + xs * ld16(b + 2);
    } else if constexpr (T == T_Q8_0) {
        const uint8_t *b = row + sb * 34;
        const int8_t *q = reinterpret_cast<const int8_t *>(b + 2);
        float s = 0.0f;
        for (int j = 0; j < 32; j++) s += static_cast<float>(q[j]) * x[j];
        return s * ld16(b);
    } else {
        /* K-quants: super-blocks of 256 = 8 sub-blocks of 32, always in float */
        const int e0 = static_cast<int>(sb & 7) * 32;
        float s = 0.0f;
        if constexpr (T == T_Q2_K) {
            const uint8_t *b = row + (sb >> 3) * 84;
            const uint8_t *scales = b, *qs = b + 16;
            const float d = ld16(b + 80), dmin = ld16(b + 82);
            for (int l = 0; l < 32; l++) {
                const int e = e0 + l;
                const int q = (qs[32 * (e >> 7) + (e & 31)] >> (2 * ((e >> 5) & 3))) & 3;
                const int sc = scales[e >> 4];
                s += (d * static_cast<float>(sc & 0x0f) * static_cast<float>(q) - dmin * static_cast<float>(sc >> 4)) *
                     static_cast<float>(x[l]);
            }
        } else if constexpr (T == T_Q3_K) {
            const uint8_t *b = row + (sb >> 3) * 110;
            const uint8_t *hmask = b, *qs = b + 32, *scales = b + 96;
            const float d = ld16(b + 108);
            for (int l = 0; l < 32; l++) {
                const int e = e0 + l;
                const int lo = (qs[32 * (e >> 7) + (e & 31)] >> (2 * ((e >> 5) & 3))) & 3;
                const int hi = (hmask[e & 31] >> (e >> 5)) & 1;
                s += d * static_cast<float>(q3k_scale(scales, e >> 4)) * static_cast<float>(lo - (hi ? 0 : 4)) *
                     static_cast<float>(x[l]);
            }
        } else if constexpr (T == T_Q4_K || T == T_Q5_K) {
            const uint8_t *b = row + (sb >> 3) * (T == T_Q4_K ? 144 : 176);
            const float d = ld16(b), dmin = ld16(b + 2);
            const uint8_t *scales = b + 4, *qh = b + 16;
            const uint8_t *qs = b + (T == T_Q4_K ? 16 : 48);
            int sc, m;
            scale_min_k4(static_cast<int>(sb & 7), scales, &sc, &m);
            const float dl = d * static_cast<float>(sc), ml = dmin * static_cast<float>(m);
            for (int l = 0; l < 32; l++) {
                const int e = e0 + l;
                const uint8_t byte = qs[32 * (e >> 6) + (e & 31)];
                int q = (e & 32) ? (byte >> 4) : (byte & 0x0f);
                if constexpr (T == T_Q5_K) q |= ((qh[e & 31] >> (e >> 5)) & 1) << 4;
                s += (dl * static_cast<float>(q) - ml) * static_cast<float>(x[l]);
            }
        } else {
            static_assert(T == T_Q6_K, "unhandled tensor type");
            const uint8_t *b = row + (sb >> 3) * 210;
            const uint8_t *ql = b, *qh = b + 128;
            const int8_t *scales = reinterpret_cast<const int8_t *>(b + 192);
            const float d = ld16(b + 208);
            for (int l = 0; l < 32; l++) {
                const int e = e0 + l;
                const int j = e >> 7, t = (e >> 5) & 3, ll = e & 31;
                const uint8_t lo = ql[64 * j + ll + 32 * (t & 1)];
                const int low = (t < 2) ? (lo & 0x0f) : (lo >> 4);
                const int high = (qh[32 * j + ll] >> (2 * t)) & 3;
                s += d * static_cast<float>(scales[e >> 4]) * static_cast<float>((low | (high << 4)) - 32) *
                     static_cast<float>(x[l]);
            }
        }
        return s;
    }
}

/* ---- host state ------------------------------------------------------------------------ */

struct sycl_weight {
    uint8_t *d = nullptr;
    const em_weight *w = nullptr;
};

struct sycl_layer {
    float *attn_norm = nullptr, *ffn_norm = nullptr;
    sycl_weight wq, wk, wv, wo, gate, up, down;
};

struct sycl_state {
    sycl::queue q;
    std::shared_ptr<std::string> async_error; /* the first asynchronous error of the queue */
    std::vector<sycl_layer> layers;
    sycl_weight output;
    float *output_norm = nullptr;
    float *x = nullptr, *xb = nullptr, *xb2 = nullptr;   /* (B, n_embd) */
    float *qv = nullptr, *att = nullptr;                 /* (B, n_head*head_dim) */
    float *k = nullptr, *v = nullptr;                    /* (B, n_head_kv*head_dim) */
    float *hb = nullptr, *hb2 = nullptr;                 /* (B, n_ff) */
    float *rope = nullptr;                               /* (B, n_rot) cos/sin pairs */
    float *scores = nullptr;                             /* (ATT_TOKENS, n_head, n_ctx) */
    float *logits = nullptr;                             /* (n_vocab) */
    uint16_t *kc = nullptr, *vc = nullptr;               /* fp16 (n_layer, n_ctx, kvd) each */
    sycl::half *xh = nullptr;                            /* FP16 build: (B, widest row) activations */
    std::vector<float> hx, hrope;                        /* host staging of embeddings and rope */
    uint32_t B = 0;
    std::vector<void *> allocs;                          /* every device allocation, for release */

    sycl_state(sycl::queue queue, std::shared_ptr<std::string> err) : q(std::move(queue)), async_error(std::move(err)) {}

    /* Wait for everything queued; an error of any of it becomes an exception. */
    void finish() {
        q.wait_and_throw();
        if (!async_error->empty()) throw std::runtime_error(*async_error);
    }
};

/* Device memory of n elements of T, remembered for release; nullptr when the device has none. */
template <typename T>
T *dev_alloc(sycl_state *g, size_t n) {
    T *p = sycl::malloc_device<T>(n ? n : 1, g->q);
    if (p) g->allocs.push_back(p);
    return p;
}

void state_free(sycl_state *g) {
    try {
        g->q.wait();
    } catch (const std::exception &) {
        /* releasing anyway: the memory goes with the queue's context */
    }
    for (void *p : g->allocs) sycl::free(p, g->q);
    delete g;
}

const char *type_name(em_type t) {
    const em_type_traits *tr = em_type_traits_get(static_cast<uint32_t>(t));
    return tr ? tr->name : "unknown";
}

bool type_supported(em_type t) {
    switch (t) {
    case EM_TYPE_F32: case EM_TYPE_F16: case EM_TYPE_BF16: case EM_TYPE_Q4_0: case EM_TYPE_Q4_1:
    case EM_TYPE_Q5_0: case EM_TYPE_Q5_1: case EM_TYPE_Q8_0: case EM_TYPE_Q2_K: case EM_TYPE_Q3_K:
    case EM_TYPE_Q4_K: case EM_TYPE_Q5_K: case EM_TYPE_Q6_K:
        return true;
    default:
        return false;
    }
}

/* Upload one weight matrix; false with why set when its type cannot run here. */
bool weight_init(sycl_state *g, sycl_weight *gw, const em_weight *w, const char *what, char *why, size_t whylen) {
    if (!type_supported(w->type) || w->ne0 % 32 != 0) {
        snprintf(why, whylen, "tensor %s has type %s with rows of %lld, which the SYCL backend does not support "
                 "(it runs f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0 and q2_K..q6_K)",
                 what, type_name(w->type), static_cast<long long>(w->ne0));
        return false;
    }
    const size_t bytes = static_cast<size_t>(w->ne1) * w->row_bytes;
    gw->w = w;
    gw->d = dev_alloc<uint8_t>(g, bytes);
    if (!gw->d) {
        snprintf(why, whylen, "out of device memory for tensor %s (%zu bytes)", what, bytes);
        return false;
    }
    g->q.memcpy(gw->d, w->data, bytes);
    return true;
}

bool upload_floats(sycl_state *g, float **d, const float *src, size_t n, const char *what, char *why, size_t whylen) {
    *d = dev_alloc<float>(g, n);
    if (!*d) {
        snprintf(why, whylen, "out of device memory for %s", what);
        return false;
    }
    g->q.memcpy(*d, src, n * sizeof(float));
    return true;
}

/* The first GPU the SYCL runtime offers (ONEAPI_DEVICE_SELECTOR narrows the list), or why not. */
std::optional<sycl::device> pick_device(char *why, size_t whylen) {
    std::vector<sycl::device> gpus = sycl::device::get_devices(sycl::info::device_type::gpu);
    if (gpus.empty()) {
        std::string seen;
        for (const sycl::platform &p : sycl::platform::get_platforms()) {
            if (!seen.empty()) seen += ", ";
            seen += p.get_info<sycl::info::platform::name>();
        }
        snprintf(why, whylen, "no SYCL GPU device (platforms found: %s)",
                 seen.empty() ? "none; is a Level Zero or OpenCL GPU driver installed?" : seen.c_str());
        return std::nullopt;
    }
    for (const sycl::device &d : gpus)
        if (d.has(sycl::aspect::fp16) && d.has(sycl::aspect::usm_device_allocations)) return d;
    snprintf(why, whylen, "SYCL GPU %s has no fp16 or no device USM support, which the SYCL backend needs",
             gpus[0].get_info<sycl::info::device::name>().c_str());
    return std::nullopt;
}

/* Uploads the weights and allocates the rest; g becomes ctx->gpu on success;
 * on failure (-1 with why set, or an exception) the caller frees it. */
int init_state(ember_context *ctx, sycl_state *g, const sycl::device &dev, char *why, size_t whylen) {
    const ember_model *m = ctx->model;
    const em_hparams *hp = &m->hp;
    const size_t E = static_cast<size_t>(hp->n_embd), F = static_cast<size_t>(hp->n_ff), C = ctx->n_ctx;
    const size_t qd = static_cast<size_t>(hp->n_head) * static_cast<size_t>(hp->head_dim);
    const size_t kvd = static_cast<size_t>(hp->n_head_kv) * static_cast<size_t>(hp->head_dim);
    const size_t L = static_cast<size_t>(hp->n_layer);
    const std::string name = dev.get_info<sycl::info::device::name>();
    g->B = ctx->n_batch < MAX_BATCH ? ctx->n_batch : MAX_BATCH;
    const size_t B = g->B;
    g->layers.resize(L);
    g->hx.resize(B * E);
    g->hrope.resize(B * static_cast<size_t>(hp->n_rot));

    static const char *const wnames[7] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};
    bool ok = true;
    for (size_t il = 0; il < L && ok; il++) {
        const em_layer *Lw = &m->layers[il];
        sycl_layer *G = &g->layers[il];
        ok = upload_floats(g, &G->attn_norm, Lw->attn_norm, E, "attn_norm", why, whylen) &&
             upload_floats(g, &G->ffn_norm, Lw->ffn_norm, E, "ffn_norm", why, whylen);
        const em_weight *ws[7] = {&Lw->wq, &Lw->wk, &Lw->wv, &Lw->wo, &Lw->w_gate, &Lw->w_up, &Lw->w_down};
        sycl_weight *gs[7] = {&G->wq, &G->wk, &G->wv, &G->wo, &G->gate, &G->up, &G->down};
        for (int i = 0; i < 7 && ok; i++) {
            char tname[64];
            snprintf(tname, sizeof tname, "blk.%zu.%s", il, wnames[i]);
            ok = weight_init(g, gs[i], ws[i], tname, why, whylen);
        }
    }
    ok = ok && upload_floats(g, &g->output_norm, m->output_norm, E, "output_norm", why, whylen) &&
         weight_init(g, &g->output, &m->output, "output", why, whylen);
    if (ok) {
        size_t widest = E > F ? E : F;
        if (qd > widest) widest = qd;
        struct { float **d; size_t n; } bufs[] = {
            {&g->x, B * E}, {&g->xb, B * E}, {&g->xb2, B * E}, {&g->qv, B * qd}, {&g->k, B * kvd},
            {&g->v, B * kvd}, {&g->att, B * qd}, {&g->hb, B * F}, {&g->hb2, B * F},
            {&g->rope, B * static_cast<size_t>(hp->n_rot)},
            {&g->scores, static_cast<size_t>(ATT_TOKENS) * static_cast<size_t>(hp->n_head) * C},
            {&g->logits, static_cast<size_t>(hp->n_vocab)}};
        for (auto &b : bufs) ok = ok && (*b.d = dev_alloc<float>(g, b.n)) != nullptr;
        ok = ok && (g->kc = dev_alloc<uint16_t>(g, L * C * kvd)) != nullptr &&
             (g->vc = dev_alloc<uint16_t>(g, L * C * kvd)) != nullptr;
        if (kF16) ok = ok && (g->xh = dev_alloc<sycl::half>(g, B * widest)) != nullptr;
        if (!ok) snprintf(why, whylen, "out of device memory for the KV cache and scratch on %s", name.c_str());
    }
    if (!ok) return -1;
    g->finish(); /* the uploads */
    ctx->logits = static_cast<float *>(calloc(static_cast<size_t>(hp->n_vocab), sizeof(float)));
    if (!ctx->logits) {
        snprintf(why, whylen, "out of host memory");
        return -1;
    }
    const std::string platform = dev.get_platform().get_info<sycl::info::platform::name>();
    const std::string driver = dev.get_info<sycl::info::device::driver_version>();
    snprintf(ctx->device, sizeof ctx->device, "%s (%s, driver %s, %s)", name.c_str(), platform.c_str(), driver.c_str(),
             kPrecision);
    ctx->gpu = g;
    return 0;
}

int init_impl(ember_context *ctx, char *why, size_t whylen) {
    const ember_model *m = ctx->model;
    const em_hparams *hp = &m->hp;
    const std::optional<sycl::device> picked = pick_device(why, whylen);
    if (!picked) return -1;
    const sycl::device &dev = *picked;

    const size_t C = ctx->n_ctx;
    const size_t kvd = static_cast<size_t>(hp->n_head_kv) * static_cast<size_t>(hp->head_dim);
    const size_t L = static_cast<size_t>(hp->n_layer);
    const uint64_t max_alloc = dev.get_info<sycl::info::device::max_mem_alloc_size>();
    const std::string name = dev.get_info<sycl::info::device::name>();
    if (static_cast<uint64_t>(L * C * kvd * 2) > max_alloc) {
        snprintf(why, whylen, "the KV cache (%zu MiB) is larger than one allocation on %s may be (%llu MiB); "
                 "use a smaller context", (L * C * kvd * 2) >> 20, name.c_str(),
                 static_cast<unsigned long long>(max_alloc >> 20));
        return -1;
    }

    auto err = std::make_shared<std::string>();
    auto handler = [err](sycl::exception_list errs) {
        for (const std::exception_ptr &e : errs) {
            try {
                std::rethrow_exception(e);
            } catch (const std::exception &ex) {
                if (err->empty()) *err = ex.what();
            }
        }
    };
    sycl_state *g = new sycl_state(sycl::queue(dev, handler, sycl::property::queue::in_order{}), err);
    int rc = -1;
    try {
        rc = init_state(ctx, g, dev, why, whylen);
    } catch (...) {
        state_free(g);
        throw;
    }
    if (rc != 0) state_free(g);
    return rc;
}

/* ---- kernels ---------------------------------------------------------------------------- */

/* (unused in the fp32 build, where no product is formed in half) */
[[maybe_unused]] void to_half(sycl_state *g, const float *x, sycl::half *y, size_t n) {
    g->q.parallel_for(sycl::range<1>(n), [=](sycl::id<1> id) {
        const size_t i = id[0];
        y[i] = static_cast<sycl::half>(x[i]);
    });
}

template <int T>
void matmul_t(sycl_state *g, const sycl_weight &gw, const float *x, float *y, int64_t n) {
    const uint8_t *w = gw.d;
    const int64_t row_bytes = static_cast<int64_t>(gw.w->row_bytes), ne0 = gw.w->ne0, ne1 = gw.w->ne1;
    const int64_t nb = ne0 / 32;
    const sycl::nd_range<2> nr(sycl::range<2>(static_cast<size_t>(n), static_cast<size_t>(ne1) * MM_LANES),
                               sycl::range<2>(1, MM_LANES));
    if constexpr (half_products(T)) {
        sycl::half *xh = g->xh;
        to_half(g, x, xh, static_cast<size_t>(n * ne0));
        g->q.parallel_for(nr, [=](sycl::nd_item<2> it) {
            const int64_t t = static_cast<int64_t>(it.get_global_id(0));
            const int64_t r = static_cast<int64_t>(it.get_group(1));
            const int64_t lane = static_cast<int64_t>(it.get_local_id(1));
            const uint8_t *row = w + r * row_bytes;
            const sycl::half *xt = xh + t * ne0;
            float s = 0.0f;
            for (int64_t sb = lane; sb < nb; sb += MM_LANES) s += sub32_dot<T, sycl::half>(row, sb, xt + sb * 32);
            s = sycl::reduce_over_group(it.get_group(), s, sycl::plus<float>());
            if (lane == 0) y[t * ne1 + r] = s;
        });
    } else {
        g->q.parallel_for(nr, [=](sycl::nd_item<2> it) {
            const int64_t t = static_cast<int64_t>(it.get_global_id(0));
            const int64_t r = static_cast<int64_t>(it.get_group(1));
            const int64_t lane = static_cast<int64_t>(it.get_local_id(1));
            const uint8_t *row = w + r * row_bytes;
            const float *xt = x + t * ne0;
            float s = 0.0f;
            for (int64_t sb = lane; sb < nb; sb += MM_LANES) s += sub32_dot<T, float>(row, sb, xt + sb * 32);
            s = sycl::reduce_over_group(it.get_group(), s, sycl::plus<float>());
            if (lane == 0) y[t * ne1 + r] = s;
        });
    }
}

void matmul(sycl_state *g, const sycl_weight &gw, const float *x, float *y, int64_t n) {
    switch (gw.w->type) {
    case EM_TYPE_F32: matmul_t<T_F32>(g, gw, x, y, n); break;
    case EM_TYPE_F16: matmul_t<T_F16>(g, gw, x, y, n); break;
    case EM_TYPE_BF16: matmul_t<T_BF16>(g, gw, x, y, n); break;
    case EM_TYPE_Q4_0: matmul_t<T_Q4_0>(g, gw, x, y, n); break;
    case EM_TYPE_Q4_1: matmul_t<T_Q4_1>(g, gw, x, y, n); break;
    case EM_TYPE_Q5_0: matmul_t<T_Q5_0>(g, gw, x, y, n); break;
    case EM_TYPE_Q5_1: matmul_t<T_Q5_1>(g, gw, x, y, n); break;
    case EM_TYPE_Q8_0: matmul_t<T_Q8_0>(g, gw, x, y, n); break;
    case EM_TYPE_Q2_K: matmul_t<T_Q2_K>(g, gw, x, y, n); break;
    case EM_TYPE_Q3_K: matmul_t<T_Q3_K>(g, gw, x, y, n); break;
    case EM_TYPE_Q4_K: matmul_t<T_Q4_K>(g, gw, x, y, n); break;
    case EM_TYPE_Q5_K: matmul_t<T_Q5_K>(g, gw, x, y, n); break;
    case EM_TYPE_Q6_K: matmul_t<T_Q6_K>(g, gw, x, y, n); break;
    default: /* weight_init refused every other type */
        throw std::logic_error("matmul of an unsupported tensor type");
    }
}

void rmsnorm(sycl_state *g, const float *x, const float *w, float *y, int64_t n_embd, float eps, int64_t n) {
    g->q.parallel_for(sycl::nd_range<1>(static_cast<size_t>(n) * WG, WG), [=](sycl::nd_item<1> it) {
        const int64_t t = static_cast<int64_t>(it.get_group(0));
        const int64_t lid = static_cast<int64_t>(it.get_local_id(0));
        const float *xt = x + t * n_embd;
        float *yt = y + t * n_embd;
        float s = 0.0f;
        for (int64_t i = lid; i < n_embd; i += WG) s += xt[i] * xt[i];
        const float mean = sycl::reduce_over_group(it.get_group(), s, sycl::plus<float>()) / static_cast<float>(n_embd);
        const float scale = 1.0f / sycl::sqrt(mean + eps);
        for (int64_t i = lid; i < n_embd; i += WG) yt[i] = (xt[i] * scale) * w[i];
    });
}

/* v: (n, n_heads * head_dim); the table: (n, n_rot) cos/sin pairs, as em_rope_cache makes them */
void rope(sycl_state *g, float *v, int64_t n, int n_heads, int head_dim, int n_rot) {
    const float *cache = g->rope;
    const int pairs = n_rot / 2;
    g->q.parallel_for(sycl::range<2>(static_cast<size_t>(n), static_cast<size_t>(n_heads * pairs)), [=](sycl::id<2> id) {
        const int64_t t = static_cast<int64_t>(id[0]);
        const int k = static_cast<int>(id[1]);
        const int h = k / pairs, i0 = 2 * (k % pairs);
        float *p = v + (t * n_heads + h) * head_dim + i0;
        const float *c = cache + t * n_rot;
        const float cs = c[i0], sn = c[i0 + 1];
        const float x0 = p[0], x1 = p[1];
        p[0] = sycl::fma(x0, cs, -(x1 * sn));
        p[1] = sycl::fma(x0, sn, x1 * cs);
    });
}

/* K and V rows (n, kvd) into one layer's caches (n_ctx, kvd) at pos0.. */
void kv_store(sycl_state *g, uint16_t *kc, uint16_t *vc, int64_t kvd, int64_t pos0, int64_t n) {
    const float *k = g->k, *v = g->v;
    g->q.parallel_for(sycl::range<1>(static_cast<size_t>(n * kvd)), [=](sycl::id<1> id) {
        const int64_t i = static_cast<int64_t>(id[0]);
        kc[pos0 * kvd + i] = f2h(k[i]);
        vc[pos0 * kvd + i] = f2h(v[i]);
    });
}

/* One (token, head) per work-group for cnt tokens from position tp: q (cnt, n_head*hd) rounded to
 * fp16 like the CPU path; scores scratch (cnt, n_head, n_ctx); out (cnt, n_head*hd). */
void attention(sycl_state *g, const float *q, const uint16_t *kc, const uint16_t *vc, float *out, int64_t cnt,
               int64_t tp, int n_head, int n_head_kv, int hd, int64_t n_ctx, float scale) {
    float *scores = g->scores;
    g->q.parallel_for(sycl::nd_range<2>(sycl::range<2>(static_cast<size_t>(cnt), static_cast<size_t>(n_head) * WG),
                                        sycl::range<2>(1, WG)),
                      [=](sycl::nd_item<2> it) {
        const sycl::group<2> grp = it.get_group();
        const int64_t t = static_cast<int64_t>(it.get_global_id(0));
        const int h = static_cast<int>(it.get_group(1));
        const int64_t lid = static_cast<int64_t>(it.get_local_id(1));
        const int64_t pos = tp + t;
        const int kvh = h / (n_head / n_head_kv);
        const int64_t kvd = static_cast<int64_t>(n_head_kv) * hd;
        const float *qh = q + (t * n_head + h) * hd;
        float *sc = scores + (t * n_head + h) * n_ctx;
        float mx = -INFINITY;
        for (int64_t j = lid; j <= pos; j += WG) {
            const uint16_t *kr = kc + j * kvd + static_cast<int64_t>(kvh) * hd;
            float s = 0.0f;
            for (int d = 0; d < hd; d++) s += h2f(f2h(qh[d])) * h2f(kr[d]);
            s *= scale;
            sc[j] = s;
            mx = sycl::fmax(mx, s);
        }
        mx = sycl::reduce_over_group(grp, mx, sycl::maximum<float>());
        float sum = 0.0f;
        for (int64_t j = lid; j <= pos; j += WG) {
            const float e = sycl::exp(sc[j] - mx);
            sc[j] = e;
            sum += e;
        }
        sum = sycl::reduce_over_group(grp, sum, sycl::plus<float>());
        const float inv = 1.0f / sum;
        for (int64_t j = lid; j <= pos; j += WG) sc[j] = h2f(f2h(sc[j] * inv));
        sycl::group_barrier(grp); /* every item reads every probability below */
        float *o = out + (t * n_head + h) * hd;
        for (int64_t d = lid; d < hd; d += WG) {
            float acc = 0.0f;
            for (int64_t j = 0; j <= pos; j++) acc += sc[j] * h2f(vc[j * kvd + static_cast<int64_t>(kvh) * hd + d]);
            o[d] = acc;
        }
    });
}

void swiglu(sycl_state *g, float *gate, const float *up, int64_t n) {
    g->q.parallel_for(sycl::range<1>(static_cast<size_t>(n)), [=](sycl::id<1> id) {
        const size_t i = id[0];
        const float x = gate[i];
        gate[i] = (x / (1.0f + sycl::exp(-x))) * up[i];
    });
}

void add(sycl_state *g, float *x, const float *y, int64_t n) {
    g->q.parallel_for(sycl::range<1>(static_cast<size_t>(n)), [=](sycl::id<1> id) {
        const size_t i = id[0];
        x[i] = x[i] + y[i];
    });
}

/* ---- one batch ------------------------------------------------------------------------- */

void eval_batch(ember_context *ctx, sycl_state *g, const int32_t *tokens, int64_t n, int64_t pos0, bool want_logits) {
    const ember_model *m = ctx->model;
    const em_hparams *hp = &m->hp;
    const int64_t E = hp->n_embd, F = hp->n_ff, hd = hp->head_dim;
    const int64_t qd = static_cast<int64_t>(hp->n_head) * hd, kvd = static_cast<int64_t>(hp->n_head_kv) * hd;
    const int64_t n_ctx = ctx->n_ctx;

    for (int64_t t = 0; t < n; t++) {
        em_dequantize_row(m->tok_embd.type,
                          static_cast<const uint8_t *>(m->tok_embd.data) + static_cast<size_t>(tokens[t]) * m->tok_embd.row_bytes,
                          g->hx.data() + t * E, E);
        em_rope_cache(m, pos0 + t, g->hrope.data() + t * hp->n_rot);
    }
    g->q.memcpy(g->x, g->hx.data(), static_cast<size_t>(n * E) * sizeof(float));
    g->q.memcpy(g->rope, g->hrope.data(), static_cast<size_t>(n * hp->n_rot) * sizeof(float));

    for (int il = 0; il < hp->n_layer; il++) {
        const sycl_layer &L = g->layers[static_cast<size_t>(il)];
        rmsnorm(g, g->x, L.attn_norm, g->xb, E, hp->rms_eps, n);
        matmul(g, L.wq, g->xb, g->qv, n);
        matmul(g, L.wk, g->xb, g->k, n);
        matmul(g, L.wv, g->xb, g->v, n);
        rope(g, g->qv, n, hp->n_head, static_cast<int>(hd), hp->n_rot);
        rope(g, g->k, n, hp->n_head_kv, static_cast<int>(hd), hp->n_rot);
        uint16_t *kc = g->kc + static_cast<size_t>(il) * static_cast<size_t>(n_ctx * kvd);
        uint16_t *vc = g->vc + static_cast<size_t>(il) * static_cast<size_t>(n_ctx * kvd);
        kv_store(g, kc, vc, kvd, pos0, n);
        for (int64_t t0 = 0; t0 < n; t0 += ATT_TOKENS) {
            const int64_t cnt = n - t0 < ATT_TOKENS ? n - t0 : ATT_TOKENS;
            attention(g, g->qv + t0 * qd, kc, vc, g->att + t0 * qd, cnt, pos0 + t0, hp->n_head, hp->n_head_kv,
                      static_cast<int>(hd), n_ctx, hp->kq_scale);
        }
        matmul(g, L.wo, g->att, g->xb2, n);
        add(g, g->x, g->xb2, n * E);
        rmsnorm(g, g->x, L.ffn_norm, g->xb, E, hp->rms_eps, n);
        matmul(g, L.gate, g->xb, g->hb, n);
        matmul(g, L.up, g->xb, g->hb2, n);
        swiglu(g, g->hb, g->hb2, n * F);
        matmul(g, L.down, g->hb, g->xb2, n);
        add(g, g->x, g->xb2, n * E);
    }
    if (want_logits) {
        rmsnorm(g, g->x + (n - 1) * E, g->output_norm, g->xb, E, hp->rms_eps, 1);
        matmul(g, g->output, g->xb, g->logits, 1);
        g->q.memcpy(ctx->logits, g->logits, static_cast<size_t>(hp->n_vocab) * sizeof(float));
    }
    /* the staging vectors are reused by the next batch: wait for the copies out of them */
    g->finish();
}

int sycl_init(ember_context *ctx, char *why, size_t whylen) {
    try {
        return init_impl(ctx, why, whylen);
    } catch (const sycl::exception &e) {
        snprintf(why, whylen, "SYCL runtime error: %s", e.what());
    } catch (const std::exception &e) {
        snprintf(why, whylen, "%s", e.what());
    }
    return -1;
}

ember_status sycl_eval(ember_context *ctx, const int32_t *tokens, uint32_t n, char *why, size_t whylen) {
    sycl_state *g = static_cast<sycl_state *>(ctx->gpu);
    try {
        for (uint32_t done = 0; done < n;) {
            const uint32_t chunk = n - done < g->B ? n - done : g->B;
            eval_batch(ctx, g, tokens + done, chunk, static_cast<int64_t>(ctx->n_past) + done, done + chunk == n);
            done += chunk;
        }
        return EMBER_OK;
    } catch (const sycl::exception &e) {
        snprintf(why, whylen, "SYCL runtime error: %s", e.what());
    } catch (const std::exception &e) {
        snprintf(why, whylen, "%s", e.what());
    }
    return EMBER_ERR_INTERNAL;
}

void sycl_release(ember_context *ctx) {
    if (ctx->gpu) state_free(static_cast<sycl_state *>(ctx->gpu));
    ctx->gpu = nullptr;
    free(ctx->logits);
    ctx->logits = nullptr;
}

} // namespace

extern "C" const em_backend em_backend_sycl = {"sycl", sycl_init, sycl_eval, sycl_release};

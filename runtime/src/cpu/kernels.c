/* kernels.c - the scalar table and the choice of a kernel level (see kernels.h).
 *
 * The scalar table forwards to quants.c. The SIMD tables live in quants_x86.c and
 * quants_arm.c; here they are only matched against the CPU's features.
 */
#include "kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- scalar replicas of ggml's vector math (the forward pass's, llama.c) ---------------- */

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

/* Softmax of x[0..n) where x[i] is -inf for i >= nv (ggml_soft_max of a masked row): the
 * exponentials of the masked entries are exactly zero and leave every sum unchanged, so only
 * y[0..nv) is computed and written. */
void em_softmax_masked(float *y, const float *x, int64_t n, int64_t nv) {
    if (nv > n) nv = n;
    float max = -INFINITY;
    for (int64_t i = 0; i < nv; i++) max = x[i] > max ? x[i] : max;
    double sum = 0.0;
    int64_t i = 0;
    for (; i + 15 < n && i < nv; i += 16) {
        float t[16];
        for (int l = 0; l < 16; l++) t[l] = i + l < nv ? em_expf_vec(x[i + l] - max) : 0.0f;
        sum += (double)reduce16(t);
        for (int l = 0; l < 16 && i + l < nv; l++) y[i + l] = t[l];
    }
    for (; i < nv; i++) {
        float v = expf(x[i] - max);
        sum += (double)v;
        y[i] = v;
    }
    const float inv = (float)(1.0 / sum);
    for (int64_t k = 0; k < nv; k++) y[k] *= inv;
}

/* Softmax of one row in place semantics of ggml_soft_max (x already scaled and masked). */
void em_softmax_row(float *y, const float *x, int64_t n) { em_softmax_masked(y, x, n, n); }

/* ggml_vec_dot_f16 with 512-bit vectors. Elements of y from nz on are zero and skipped
 * (a zero product leaves every partial sum unchanged). */
float em_attn_dot_vec_ref(int64_t n, const uint16_t *x, const uint16_t *y, int64_t nz) {
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
float em_attn_dot_gemm_ref(int64_t n, const uint16_t *x, const uint16_t *y, int64_t nz) {
    float acc[16] = {0};
    const int64_t lim = nz < n ? nz : n;
    for (int64_t i = 0; i < lim; i++)
        acc[i & 15] = fmaf(em_fp16_to_fp32(x[i]), em_fp16_to_fp32(y[i]), acc[i & 15]);
    return reduce16(acc);
}

/* SwiGLU, g = silu(g) * u: ggml_v_expf for every complete group of 16, libm expf for the rest */
void em_swiglu_ref(float *g, const float *u, int64_t n) {
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

/* ---- the scalar reference as table entries ------------------------------------------- */

#define SCALAR_DOT(T, ID)                                                                 \
    static void scalar_dot_##T(int64_t n, float *s, const void *x, const void *y) {       \
        em_vec_dot(ID, n, s, x, y);                                                       \
    }                                                                                     \
    static void scalar_sgemm_##T(int64_t n, float *s, const void *x, const void *y) {     \
        em_vec_dot_kernel(EM_KERNEL_SGEMM, ID, n, s, x, y);                               \
    }
#define SCALAR_KERNEL(NAME, K, T, ID)                                                      \
    static void scalar_##NAME##_##T(int64_t n, float *s, const void *x, const void *y) {   \
        em_vec_dot_kernel(K, ID, n, s, x, y);                                              \
    }
#define SCALAR_QUANT(T, ID)                                                               \
    static void scalar_quant_##T(const float *x, void *y, int64_t n) { em_quantize_row(ID, x, y, n); }

SCALAR_DOT(f32, EM_TYPE_F32)
SCALAR_DOT(f16, EM_TYPE_F16)
SCALAR_DOT(bf16, EM_TYPE_BF16)
SCALAR_DOT(q4_0, EM_TYPE_Q4_0)
SCALAR_DOT(q4_1, EM_TYPE_Q4_1)
SCALAR_DOT(q5_0, EM_TYPE_Q5_0)
SCALAR_DOT(q5_1, EM_TYPE_Q5_1)
SCALAR_DOT(q8_0, EM_TYPE_Q8_0)
SCALAR_DOT(q2_K, EM_TYPE_Q2_K)
SCALAR_DOT(q3_K, EM_TYPE_Q3_K)
SCALAR_DOT(q4_K, EM_TYPE_Q4_K)
SCALAR_DOT(q5_K, EM_TYPE_Q5_K)
SCALAR_DOT(q6_K, EM_TYPE_Q6_K)
SCALAR_KERNEL(gemv, EM_KERNEL_REPACK_GEMV, q4_0, EM_TYPE_Q4_0)
SCALAR_KERNEL(gemv, EM_KERNEL_REPACK_GEMV, q4_K, EM_TYPE_Q4_K)
SCALAR_KERNEL(gemm, EM_KERNEL_REPACK_GEMM, q4_0, EM_TYPE_Q4_0)
SCALAR_KERNEL(gemm, EM_KERNEL_REPACK_GEMM, q4_K, EM_TYPE_Q4_K)
SCALAR_KERNEL(tiled, EM_KERNEL_TILED, q2_K, EM_TYPE_Q2_K)
SCALAR_KERNEL(tiled, EM_KERNEL_TILED, q3_K, EM_TYPE_Q3_K)
SCALAR_KERNEL(tiled, EM_KERNEL_TILED, q4_K, EM_TYPE_Q4_K)
SCALAR_KERNEL(tiled, EM_KERNEL_TILED, q5_K, EM_TYPE_Q5_K)
SCALAR_KERNEL(tiled, EM_KERNEL_TILED, q6_K, EM_TYPE_Q6_K)
SCALAR_QUANT(f32, EM_TYPE_F32)
SCALAR_QUANT(f16, EM_TYPE_F16)
SCALAR_QUANT(bf16, EM_TYPE_BF16)
SCALAR_QUANT(q4_0, EM_TYPE_Q4_0)
SCALAR_QUANT(q4_1, EM_TYPE_Q4_1)
SCALAR_QUANT(q5_0, EM_TYPE_Q5_0)
SCALAR_QUANT(q5_1, EM_TYPE_Q5_1)
SCALAR_QUANT(q8_0, EM_TYPE_Q8_0)
SCALAR_QUANT(q8_1, EM_TYPE_Q8_1)
SCALAR_QUANT(q8_K, EM_TYPE_Q8_K)

static const em_kernels k_scalar = {
    .name = "scalar",
    .level = EM_LEVEL_SCALAR,
    .vec_dot = {
        [EM_TYPE_F32] = scalar_dot_f32, [EM_TYPE_F16] = scalar_dot_f16, [EM_TYPE_BF16] = scalar_dot_bf16,
        [EM_TYPE_Q4_0] = scalar_dot_q4_0, [EM_TYPE_Q4_1] = scalar_dot_q4_1,
        [EM_TYPE_Q5_0] = scalar_dot_q5_0, [EM_TYPE_Q5_1] = scalar_dot_q5_1,
        [EM_TYPE_Q8_0] = scalar_dot_q8_0,
        [EM_TYPE_Q2_K] = scalar_dot_q2_K, [EM_TYPE_Q3_K] = scalar_dot_q3_K, [EM_TYPE_Q4_K] = scalar_dot_q4_K,
        [EM_TYPE_Q5_K] = scalar_dot_q5_K, [EM_TYPE_Q6_K] = scalar_dot_q6_K,
    },
    .quantize = {
        [EM_TYPE_F32] = scalar_quant_f32, [EM_TYPE_F16] = scalar_quant_f16, [EM_TYPE_BF16] = scalar_quant_bf16,
        [EM_TYPE_Q4_0] = scalar_quant_q4_0, [EM_TYPE_Q4_1] = scalar_quant_q4_1,
        [EM_TYPE_Q5_0] = scalar_quant_q5_0, [EM_TYPE_Q5_1] = scalar_quant_q5_1,
        [EM_TYPE_Q8_0] = scalar_quant_q8_0, [EM_TYPE_Q8_1] = scalar_quant_q8_1, [EM_TYPE_Q8_K] = scalar_quant_q8_K,
    },
    .sgemm = {
        [EM_TYPE_F32] = scalar_sgemm_f32, [EM_TYPE_F16] = scalar_sgemm_f16, [EM_TYPE_BF16] = scalar_sgemm_bf16,
        [EM_TYPE_Q4_0] = scalar_sgemm_q4_0, [EM_TYPE_Q4_1] = scalar_sgemm_q4_1,
        [EM_TYPE_Q5_0] = scalar_sgemm_q5_0, [EM_TYPE_Q5_1] = scalar_sgemm_q5_1,
        [EM_TYPE_Q8_0] = scalar_sgemm_q8_0,
        [EM_TYPE_Q2_K] = scalar_sgemm_q2_K, [EM_TYPE_Q3_K] = scalar_sgemm_q3_K, [EM_TYPE_Q4_K] = scalar_sgemm_q4_K,
        [EM_TYPE_Q5_K] = scalar_sgemm_q5_K, [EM_TYPE_Q6_K] = scalar_sgemm_q6_K,
    },
    .repack_gemv = {[EM_TYPE_Q4_0] = scalar_gemv_q4_0, [EM_TYPE_Q4_K] = scalar_gemv_q4_K},
    .repack_gemm = {[EM_TYPE_Q4_0] = scalar_gemm_q4_0, [EM_TYPE_Q4_K] = scalar_gemm_q4_K},
    .tiled = {[EM_TYPE_Q2_K] = scalar_tiled_q2_K, [EM_TYPE_Q3_K] = scalar_tiled_q3_K, [EM_TYPE_Q4_K] = scalar_tiled_q4_K,
              [EM_TYPE_Q5_K] = scalar_tiled_q5_K, [EM_TYPE_Q6_K] = scalar_tiled_q6_K},
    EM_SCALAR_FORWARD_ENTRIES,
};

/* ---- levels -------------------------------------------------------------------------- */

static const char *const k_level_names[EM_LEVEL_COUNT] = {
    [EM_LEVEL_SCALAR] = "scalar", [EM_LEVEL_SSE42] = "sse42", [EM_LEVEL_AVX2] = "avx2",
    [EM_LEVEL_AVXVNNI] = "avxvnni", [EM_LEVEL_AVX512] = "avx512",
    [EM_LEVEL_NEON] = "neon", [EM_LEVEL_DOTPROD] = "dotprod",
};

/* Best first: the order em_kernels_best tries them in. */
static const em_kernel_level k_preference[] = {
    EM_LEVEL_AVX512, EM_LEVEL_AVXVNNI, EM_LEVEL_AVX2, EM_LEVEL_SSE42,
    EM_LEVEL_DOTPROD, EM_LEVEL_NEON, EM_LEVEL_SCALAR,
};

const char *em_kernel_level_name(em_kernel_level level) {
    return (unsigned)level < EM_LEVEL_COUNT ? k_level_names[level] : "unknown";
}

int em_kernel_level_from_name(const char *name) {
    if (!name) return -1;
    for (int i = 0; i < EM_LEVEL_COUNT; ++i)
        if (strcmp(name, k_level_names[i]) == 0) return i;
    return -1;
}

static const em_kernels *table_of(em_kernel_level level, const em_cpu_features *f) {
    if (level == EM_LEVEL_SCALAR) return &k_scalar;
    const em_kernels *k = em_kernels_x86(level, f);
    return k ? k : em_kernels_arm(level, f);
}

int em_kernel_level_supported(em_kernel_level level, const em_cpu_features *f) {
    if (table_of(level, f) == NULL) return 0;   /* not built for this architecture */
    switch (level) {
    case EM_LEVEL_SCALAR:
        return 1;
    case EM_LEVEL_SSE42:
        return f->sse2 && f->ssse3 && f->sse41 && f->sse42;
    case EM_LEVEL_AVX2:
        return f->avx2 && f->fma && f->f16c;
    case EM_LEVEL_AVXVNNI:
        return f->avx2 && f->fma && f->f16c && f->avxvnni;
    case EM_LEVEL_AVX512:
        return f->avx2 && f->fma && f->f16c && f->avx512f && f->avx512bw && f->avx512vl && f->avx512dq &&
               f->avx512vnni;
    case EM_LEVEL_NEON:
        return f->neon;
    case EM_LEVEL_DOTPROD:
        return f->neon && f->dotprod;
    default:
        return 0;
    }
}

const em_kernels *em_kernels_get(em_kernel_level level) {
    em_cpu_features f;
    em_cpu_features_detect(&f);
    return em_kernel_level_supported(level, &f) ? table_of(level, &f) : NULL;
}

const em_kernels *em_kernels_best(void) {
    em_cpu_features f;
    em_cpu_features_detect(&f);
    for (size_t i = 0; i < sizeof k_preference / sizeof k_preference[0]; ++i)
        if (em_kernel_level_supported(k_preference[i], &f)) return table_of(k_preference[i], &f);
    return &k_scalar;
}

const em_kernels *em_kernels_select(const char *force) {
    const char *name = force;
    if (!name || !*name) name = getenv("EMBER_KERNEL");
    if (!name || !*name || strcmp(name, "auto") == 0) return em_kernels_best();
    const int level = em_kernel_level_from_name(name);
    return level < 0 ? NULL : em_kernels_get((em_kernel_level)level);
}

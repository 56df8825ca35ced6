/* kernels.c - the scalar table and the choice of a kernel level (see kernels.h).
 *
 * The scalar table forwards to quants.c. The SIMD tables live in quants_x86.c and
 * quants_arm.c; here they are only matched against the CPU's features.
 */
#include "kernels.h"

#include <stdlib.h>
#include <string.h>

/* ---- the scalar reference as table entries ------------------------------------------- */

#define SCALAR_DOT(T, ID)                                                                 \
    static void scalar_dot_##T(int64_t n, float *s, const void *x, const void *y) {       \
        em_vec_dot(ID, n, s, x, y);                                                       \
    }                                                                                     \
    static void scalar_sgemm_##T(int64_t n, float *s, const void *x, const void *y) {     \
        em_vec_dot_kernel(EM_KERNEL_SGEMM, ID, n, s, x, y);                               \
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

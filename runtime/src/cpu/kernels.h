/* kernels.h - the compute kernels of one instruction-set level, as a table of functions.
 *
 * Every level gives exactly the bits of the scalar reference in quants.c (which follows the
 * float order of llama.cpp's x86 code), so the choice of level changes speed only, never a
 * token. A level is chosen once, when a model or context is set up, and its const table is
 * kept there; nothing here is global or mutable.
 *
 *     const em_kernels *k = em_kernels_select(cli_flag);   (NULL flag: EMBER_KERNEL, else best)
 *     if (!k) error: unknown name, or the CPU / this build lacks the level
 *     k->quantize[vdt](x, act, n);  k->vec_dot[w->type](n, &s, row, act);
 *     (and k->sgemm / repack_gemv / repack_gemm / tiled for the matmul paths of quants.h's
 *     em_vec_dot_kernel, for the types they handle)
 *
 * Levels (x86-64, chosen by run-time CPU detection; the binary is built for the baseline):
 *   scalar   quants.c as is
 *   sse42    SSSE3/SSE4.1 integer dots; the fused multiply-adds, which these CPUs lack, are
 *            done exactly in double precision (pre-Haswell Intel, Atom/Celeron/Pentium
 *            without AVX, pre-Excavator AMD)
 *   avx2     AVX2 + FMA + F16C, 256-bit (Haswell, Zen)
 *   avxvnni  avx2 with VEX vpdpbusd/vpdpwssd (Alder Lake and later without AVX-512)
 *   avx512   AVX-512 F/BW/VL/DQ + VNNI (Ice Lake, Cascade Lake, Sapphire Rapids, Zen 4+):
 *            EVEX vpdpbusd, 512-bit float dots, vdpbf16ps where AVX512_BF16 is present.
 *            AVX-512 CPUs without VNNI (Skylake-SP/X) get avx2.
 *   neon     AArch64 Advanced SIMD
 *   dotprod  neon with SDOT (Armv8.2+ dot product: Cortex-A55/A76+, Apple M1+, Graviton2+)
 */
#ifndef EMBER_KERNELS_H
#define EMBER_KERNELS_H

#include <stdint.h>

#include "cpu_features.h"
#include "quants.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum em_kernel_level {
    EM_LEVEL_SCALAR = 0,
    EM_LEVEL_SSE42,
    EM_LEVEL_AVX2,
    EM_LEVEL_AVXVNNI,
    EM_LEVEL_AVX512,
    EM_LEVEL_NEON,
    EM_LEVEL_DOTPROD,
    EM_LEVEL_COUNT
} em_kernel_level;

/* s = dot(weight row x, activation row y in traits(t)->vec_dot_type), as em_vec_dot */
typedef void (*em_vec_dot_fn)(int64_t n, float *s, const void *x, const void *y);
/* activation conversion of n floats, as em_quantize_row */
typedef void (*em_quantize_fn)(const float *x, void *y, int64_t n);
/* 4 dots of one weight row x with activation rows y + c * y_stride */
typedef void (*em_vec_dot4_fn)(int64_t n, float *s, const void *x, const void *y, size_t y_stride);
/* 4 dots of the weight rows x + r * x_stride with one activation row y */
typedef void (*em_vec_dot_r4_fn)(int64_t n, float *s, const void *x, size_t x_stride, const void *y);
/* the 8 dots of weight rows x + r * x_stride (r < 2) with activation rows y + c * y_stride
 * (c < 4): s[4 * r + c] */
typedef void (*em_vec_dot4x2_fn)(int64_t n, float *s, const void *x, size_t x_stride, const void *y,
                                 size_t y_stride);
/* dot of fp16 rows x, y of n elements where y[i] == 0 for i >= nz */
typedef float (*em_attn_dot_fn)(int64_t n, const uint16_t *x, const uint16_t *y, int64_t nz);

typedef struct em_kernels {
    const char *name;                        /* "scalar", "avx2", ... (the EMBER_KERNEL names) */
    em_kernel_level level;
    /* by weight type: every type em_type_traits_get(t)->supported; NULL elsewhere */
    em_vec_dot_fn vec_dot[EM_TYPE_COUNT];
    /* by activation type: every type em_can_quantize(t); NULL elsewhere */
    em_quantize_fn quantize[EM_TYPE_COUNT];
    /* em_vec_dot_kernel(EM_KERNEL_SGEMM, t, ...): llamafile's one-accumulator dot used for
     * batches of >= 2 rows. F32 and F16 need n % 16 == 0, BF16 n % 32 == 0 (else they give
     * vec_dot's bits, as llama.cpp falls back); other types are vec_dot. */
    em_vec_dot_fn sgemm[EM_TYPE_COUNT];
    /* em_vec_dot_kernel(EM_KERNEL_REPACK_GEMV / EM_KERNEL_REPACK_GEMM / EM_KERNEL_TILED, t, ...)
     * for the types those kernels handle (repack: Q4_0, Q4_K; tiled: Q2_K..Q6_K); NULL for the
     * others (where em_vec_dot_kernel gives vec_dot's bits or -1). */
    em_vec_dot_fn repack_gemv[EM_TYPE_COUNT];
    em_vec_dot_fn repack_gemm[EM_TYPE_COUNT];
    em_vec_dot_fn tiled[EM_TYPE_COUNT];
    /* the forward pass's vector math (llama.c), each with the bits of its scalar replica below
     * (em_attn_dot_vec_ref, ...; EM_SCALAR_FORWARD_ENTRIES in tables without SIMD forms):
     * attention dots of fp16 rows x and y, y zero from element nz on: ggml_vec_dot_f16
     * (4 x 16 lanes over blocks of 64) and tinyBLAS's one 16-lane accumulator */
    em_attn_dot_fn attn_dot_vec;
    em_attn_dot_fn attn_dot_gemm;
    /* em_softmax_row of x[0..n) with x[i] = -inf for i >= nv; writes y[0..nv) only */
    void (*attn_softmax)(float *y, const float *x, int64_t n, int64_t nv);
    /* SwiGLU: g[i] = silu(g[i]) * u[i] */
    void (*swiglu)(float *g, const float *u, int64_t n);
    /* by weight type, where a level has it: s[c] = vec_dot(x, row c of y) for the 4
     * activation rows at y + c * y_stride, with vec_dot's bits; NULL: 4 vec_dot calls */
    em_vec_dot4_fn vec_dot4[EM_TYPE_COUNT];
    /* by weight type, where a level has it: s[r] = vec_dot(row r of x, y) for the 4 weight
     * rows at x + r * x_stride, with vec_dot's bits; NULL: 4 vec_dot calls */
    em_vec_dot_r4_fn vec_dot_r4[EM_TYPE_COUNT];
    /* by weight type, where a level has it: a tile of 2 weight rows x 4 activation rows, each
     * dot with vec_dot's bits (both operands are loaded once for the tile); NULL: vec_dot4 */
    em_vec_dot4x2_fn vec_dot4x2[EM_TYPE_COUNT];
} em_kernels;

/* The scalar replicas of the forward pass's vector math (kernels.c): the scalar table's
 * entries, the fallback of a table without them, and the tests' reference.
 *   em_expf_vec         one lane of ggml_v_expf (AVX-512 form)
 *   em_softmax_row      ggml_soft_max of a row; em_softmax_masked: x[i] = -inf for i >= nv,
 *                       only y[0..nv) written
 *   em_attn_dot_vec_ref / _gemm_ref   the attn_dot_vec / attn_dot_gemm entries
 *   em_swiglu_ref       the swiglu entry */
float em_expf_vec(float x);
void em_softmax_row(float *y, const float *x, int64_t n);
void em_softmax_masked(float *y, const float *x, int64_t n, int64_t nv);
float em_attn_dot_vec_ref(int64_t n, const uint16_t *x, const uint16_t *y, int64_t nz);
float em_attn_dot_gemm_ref(int64_t n, const uint16_t *x, const uint16_t *y, int64_t nz);
void em_swiglu_ref(float *g, const float *u, int64_t n);

/* the forward-pass entries of a table that has no SIMD form of them */
#define EM_SCALAR_FORWARD_ENTRIES                                                         \
    .attn_dot_vec = em_attn_dot_vec_ref, .attn_dot_gemm = em_attn_dot_gemm_ref,           \
    .attn_softmax = em_softmax_masked, .swiglu = em_swiglu_ref

/* The table to use. force: a level name (the CLI flag), or NULL/"" to read the environment
 * variable EMBER_KERNEL, and if that is unset, empty or "auto", the best level this CPU runs.
 * NULL when the name is unknown or the level cannot run here (not built for this
 * architecture, or the CPU/OS lacks its instructions): the caller reports that as an error. */
const em_kernels *em_kernels_select(const char *force);

/* The table of a level, or NULL when it cannot run here. */
const em_kernels *em_kernels_get(em_kernel_level level);
/* The best level this CPU runs (never NULL: scalar always runs). */
const em_kernels *em_kernels_best(void);

/* EM_LEVEL_* of a name ("avx2"), or -1. */
int em_kernel_level_from_name(const char *name);
const char *em_kernel_level_name(em_kernel_level level);
/* 1 if the CPU/OS described by f runs level (and this build contains it). */
int em_kernel_level_supported(em_kernel_level level, const em_cpu_features *f);

/* Per-architecture tables (quants_x86.c, quants_arm.c); NULL for a level the file does not
 * build here. They do not check that the CPU runs the level (use em_kernels_get); f (may be
 * NULL) only picks among variants of a level that use optional extras, all with the same
 * bits: avx512 with AVX512_BF16 takes vdpbf16ps for the BF16 dots. */
const em_kernels *em_kernels_x86(em_kernel_level level, const em_cpu_features *f);
const em_kernels *em_kernels_arm(em_kernel_level level, const em_cpu_features *f);

#ifdef __cplusplus
}
#endif

#endif /* EMBER_KERNELS_H */

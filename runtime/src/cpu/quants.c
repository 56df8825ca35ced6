/* quants.c - scalar kernels for ember's tensor types.
 *
 * Goal: the same bits as llama.cpp's CPU backend on the x86-64 machine the reference was
 * built on (-march=native: AVX2, AVX-512 F/BW/VL/VNNI/BF16/FP16, F16C, FMA). Integer parts
 * of the dots are exact, so only the floating-point steps decide the result, and those are
 * written here in the order ggml's x86 SIMD code performs them:
 *
 *  - The 32-element-block dots (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) and the K-quant dots run on
 *    AVX2 in ggml: one int32 per group of 4 consecutive quants ("lane" k = elements 4k..4k+3
 *    of each 32-element vector), converted to float and accumulated per lane with an FMA into
 *    8 float accumulators, which are summed at the very end as
 *    ((a0+a4)+(a2+a6)) + ((a1+a5)+(a3+a7)). em_acc8 / em_hsum8 below model exactly that.
 *    The generic scalar path of ggml (one float sum, block after block) gives different bits.
 *  - Scalar statements in ggml-cpu such as `summs += m * s` are compiled with GCC's default
 *    -ffp-contract=fast and -mfma, i.e. they are fused multiply-adds; we call fmaf() there.
 *  - The F32/F16 dots follow the AVX-512 path (4 x 16 float accumulators, step 64, tree
 *    reduction, leftovers one by one); the BF16 dot follows the AVX512_BF16 path (vdpbf16ps:
 *    2 x 16 accumulators, pairs added odd element first, denormals flushed), finished in double.
 *  - Activation quantizers follow ggml-cpu's x86 from_float: Q8_0/Q8_1 use id = 127/amax and
 *    round half to even (vroundps); Q8_K is the reference quantizer (nearest_int trick).
 *  - Dequantizers follow ggml-base (built without FMA): plain multiply then add.
 *
 * vec_dot is not the only matmul path in llama.cpp: the later sections reproduce the others
 * (llamafile sgemm, the tiled K-quant matmul, the CPU_REPACK and AMX buffers), selected with
 * em_vec_dot_kernel. Every kernel here was compared bit for bit with the reference build's
 * libggml-cpu (see runtime/tests/test_quants.c and tests/runtime/test_quants_vs_gguf.py).
 *
 * To keep compilers from fusing a*b+c on their own (clang contracts by default, GCC does in
 * GNU modes), FP contraction is switched off for this file (clang honours the STDC pragma,
 * GCC its optimize pragma); every intended FMA is an explicit fmaf(). The build passes
 * -ffp-contract=off as well.
 */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "quants.h"

#include <assert.h>
#include <float.h>
#include <math.h>
#include <string.h>

/* Block sizes must match ggml byte for byte: tensors are read in place from the mmap. */
_Static_assert(sizeof(em_block_q4_0) == 18, "q4_0 block size");
_Static_assert(sizeof(em_block_q4_1) == 20, "q4_1 block size");
_Static_assert(sizeof(em_block_q5_0) == 22, "q5_0 block size");
_Static_assert(sizeof(em_block_q5_1) == 24, "q5_1 block size");
_Static_assert(sizeof(em_block_q8_0) == 34, "q8_0 block size");
_Static_assert(sizeof(em_block_q8_1) == 36, "q8_1 block size");
_Static_assert(sizeof(em_block_q2_K) == 84, "q2_K block size");
_Static_assert(sizeof(em_block_q3_K) == 110, "q3_K block size");
_Static_assert(sizeof(em_block_q4_K) == 144, "q4_K block size");
_Static_assert(sizeof(em_block_q5_K) == 176, "q5_K block size");
_Static_assert(sizeof(em_block_q6_K) == 210, "q6_K block size");
_Static_assert(sizeof(em_block_q8_K) == 292, "q8_K block size");
_Static_assert(offsetof(em_block_q5_0, qs) == 6, "q5_0 layout");
_Static_assert(offsetof(em_block_q4_K, qs) == 16, "q4_K layout");
_Static_assert(offsetof(em_block_q5_K, qs) == 48, "q5_K layout");
_Static_assert(offsetof(em_block_q6_K, d) == 208, "q6_K layout");
_Static_assert(offsetof(em_block_q8_K, bsums) == 260, "q8_K layout");

typedef void (*dequant_fn)(const void *x, float *y, int64_t n);
typedef void (*quant_fn)(const float *x, void *y, int64_t n);
typedef void (*dot_fn)(int64_t n, float *s, const void *x, const void *y);

/* ======================================================================================
 * Float bits, fp16, bf16
 * ====================================================================================== */

static inline uint32_t f32_bits(float f) { uint32_t u; memcpy(&u, &f, sizeof u); return u; }
static inline float f32_from(uint32_t u) { float f; memcpy(&f, &u, sizeof f); return f; }

/* Exact; NaNs come out quiet with their payload kept, as vcvtph2ps does. */
float em_fp16_to_fp32(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1fu;
    const uint32_t man = h & 0x3ffu;
    if (exp == 0x1f) {
        return f32_from(sign | 0x7f800000u | (man << 13) | (man ? 0x400000u : 0u));
    }
    if (exp == 0) {
        /* zero or subnormal: man * 2^-24 is exact in binary32 */
        const float v = (float)man * 0x1p-24f;
        return f32_from(sign | f32_bits(v));
    }
    return f32_from(sign | ((exp + 112u) << 23) | (man << 13));
}

/* Round to nearest even, overflow to inf, NaN -> quiet NaN with the top payload bits
 * (what F16C vcvtps2ph does; ggml-cpu uses F16C for every fp32->fp16 on this CPU). */
uint16_t em_fp32_to_fp16(float f) {
    const uint32_t x = f32_bits(f);
    const uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    const uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);  /* >= 65520 rounds to inf */
    if (ax >= 0x38800000u) {                                     /* normal half */
        const uint32_t r = ax + 0xfffu + ((ax >> 13) & 1u);
        return (uint16_t)(sign | ((r - 0x38000000u) >> 13));
    }
    /* subnormal half (or zero): quantum 2^-24 */
    const int e = (int)(ax >> 23);
    const int shift = 126 - e;              /* >= 14 here */
    if (shift > 24) return sign;            /* below half the smallest subnormal */
    const uint32_t man = (ax & 0x7fffffu) | 0x800000u;
    uint32_t q = man >> shift;
    const uint32_t rem = man & ((1u << shift) - 1u);
    const uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u))) q++;
    return (uint16_t)(sign | q);
}

float em_bf16_to_fp32(uint16_t h) { return f32_from((uint32_t)h << 16); }

/* Round to nearest even; NaN -> quiet NaN keeping the top payload bits; subnormals kept. */
uint16_t em_fp32_to_bf16(float f) {
    const uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u);
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

#define FP16(h) em_fp16_to_fp32(h)

/* ======================================================================================
 * Shared helpers: rounding, the 8-lane AVX2 accumulator, the AVX-512 reductions
 * ====================================================================================== */

/* Round to nearest, ties to even, for |v| < 2^22 (ggml's nearest_int: adding 1.5*2^23
 * leaves the rounded integer in the low mantissa bits). */
static inline int nearest_int(float v) {
    const float t = v + 12582912.f;
    return (int)(f32_bits(t) & 0x007fffffu) - 0x00400000;
}

/* float -> int8 conversions of values a quantizer has already scaled into range. A model with
 * inf/NaN weights makes NaN activations, and converting NaN to an integer is undefined in C:
 * these give 0 for anything outside the int8 range instead (the SIMD paths' instructions are
 * defined for NaN and give their own fixed value). Finite in-range values convert as before. */
static inline int8_t q8_rint(float v) { return v > -128.5f && v < 127.5f ? (int8_t)rintf(v) : 0; }
static inline int8_t q8_round(float v) { return v > -128.5f && v < 127.5f ? (int8_t)roundf(v) : 0; }
static inline int8_t q8_trunc(float v) { return v > -129.0f && v < 128.0f ? (int8_t)v : 0; }

/* acc[k] = fma(d, lane[k], acc[k]) for the 8 float lanes of a __m256 accumulator. */
static inline void em_acc8(float acc[8], float d, const int32_t lane[8]) {
    for (int k = 0; k < 8; ++k) acc[k] = fmaf(d, (float)lane[k], acc[k]);
}

/* Horizontal sum of 8 lanes in the order ggml's hsum_float_8 adds them. */
static inline float em_hsum8(const float a[8]) {
    return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
}

/* Horizontal sum of 16 lanes in the order GCC's _mm512_reduce_add_ps adds them. */
static inline float em_hsum16(const float a[16]) {
    float t8[8], t4[4];
    for (int i = 0; i < 8; ++i) t8[i] = a[i + 8] + a[i];
    for (int i = 0; i < 4; ++i) t4[i] = t8[i + 4] + t8[i];
    return (t4[0] + t4[2]) + (t4[1] + t4[3]);
}

/* get_scale_min_k4: 6-bit scale and min of sub-block j (0..7) of a Q4_K/Q5_K super-block.
 * Bytes 0-3: scales 0-3 (low 6 bits), 4-7: mins 0-3 (low 6 bits), 8-11: low/high nibbles
 * are the low 4 bits of scales/mins 4-7, whose top 2 bits sit in the top bits of bytes 0-7. */
static inline void scale_min_k4(int j, const uint8_t *q, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* Q3_K: the 16 6-bit scales (still offset by 32) from their 12-byte packing. */
static inline void q3k_scales(const uint8_t *packed, int8_t out[16]) {
    for (int j = 0; j < 16; ++j) {
        const int lo = (j < 8) ? (packed[j] & 0x0f) : (packed[j - 8] >> 4);
        const int hi = (packed[8 + (j & 3)] >> (2 * (j >> 2))) & 3;
        out[j] = (int8_t)(lo | (hi << 4));
    }
}

/* ======================================================================================
 * F32
 * ====================================================================================== */

static void dequantize_f32(const void *vx, float *y, int64_t n) { memcpy(y, vx, (size_t)n * sizeof(float)); }
static void quantize_f32(const float *x, void *vy, int64_t n) { memcpy(vy, x, (size_t)n * sizeof(float)); }

/* AVX-512 ggml_vec_dot_f32: 4 accumulators of 16 lanes over steps of 64 elements,
 * reduced (0+2, 1+3, then 0+1, then across lanes); the tail is fused into the float sum. */
static void vec_dot_f32(int64_t n, float *s, const void *vx, const void *vy) {
    const float *x = vx, *y = vy;
    float acc[4][16] = {{0}};
    const int64_t np = n & ~(int64_t)63;
    for (int64_t i = 0; i < np; i += 64)
        for (int j = 0; j < 4; ++j)
            for (int l = 0; l < 16; ++l)
                acc[j][l] = fmaf(x[i + 16 * j + l], y[i + 16 * j + l], acc[j][l]);
    for (int l = 0; l < 16; ++l) { acc[0][l] += acc[2][l]; acc[1][l] += acc[3][l]; }
    for (int l = 0; l < 16; ++l) acc[0][l] += acc[1][l];
    float sum = em_hsum16(acc[0]);
    /* The tail loop `sum += x[i]*y[i]` was auto-vectorized by GCC 12 in the reference build:
     * products of groups of 8 and then 4 are rounded first and added in order; only the last
     * (tail % 4) elements are fused multiply-adds. (Seen in the disassembly of the reference
     * libggml-cpu.so; checked bit for bit.) */
    const int64_t nfused = (n - np) & 3;
    for (int64_t i = np; i < n - nfused; ++i) sum += x[i] * y[i];
    for (int64_t i = n - nfused; i < n; ++i) sum = fmaf(x[i], y[i], sum);
    *s = sum;
}

/* ======================================================================================
 * F16
 * ====================================================================================== */

static void dequantize_f16(const void *vx, float *y, int64_t n) {
    const em_fp16 *x = vx;
    for (int64_t i = 0; i < n; ++i) y[i] = FP16(x[i]);
}
static void quantize_f16(const float *x, void *vy, int64_t n) {
    em_fp16 *y = vy;
    for (int64_t i = 0; i < n; ++i) y[i] = em_fp32_to_fp16(x[i]);
}

/* AVX512-FP16 build of ggml_vec_dot_f16: same shape as the F32 dot on converted values,
 * but the reduced sum and the tail are accumulated in double (ggml_float). */
static void vec_dot_f16(int64_t n, float *s, const void *vx, const void *vy) {
    const em_fp16 *x = vx, *y = vy;
    float acc[4][16] = {{0}};
    const int64_t np = n & ~(int64_t)63;
    for (int64_t i = 0; i < np; i += 64)
        for (int j = 0; j < 4; ++j)
            for (int l = 0; l < 16; ++l)
                acc[j][l] = fmaf(FP16(x[i + 16 * j + l]), FP16(y[i + 16 * j + l]), acc[j][l]);
    for (int l = 0; l < 16; ++l) { acc[0][l] += acc[2][l]; acc[1][l] += acc[3][l]; }
    for (int l = 0; l < 16; ++l) acc[0][l] += acc[1][l];
    double sum = (double)em_hsum16(acc[0]);
    for (int64_t i = np; i < n; ++i) sum += (double)(FP16(x[i]) * FP16(y[i]));
    *s = (float)sum;
}

/* ======================================================================================
 * BF16
 * ====================================================================================== */

static void dequantize_bf16(const void *vx, float *y, int64_t n) {
    const em_bf16 *x = vx;
    for (int64_t i = 0; i < n; ++i) y[i] = em_bf16_to_fp32(x[i]);
}
static void quantize_bf16(const float *x, void *vy, int64_t n) {
    em_bf16 *y = vy;
    for (int64_t i = 0; i < n; ++i) y[i] = em_fp32_to_bf16(x[i]);
}

/* vdpbf16ps works with DAZ and FTZ: subnormal inputs and results are zero. */
static inline float daz(float v) { return (f32_bits(v) & 0x7f800000u) ? v : copysignf(0.0f, v); }
static inline float bf16_dp_step(float acc, em_bf16 a, em_bf16 b) {
    return daz(fmaf(daz(em_bf16_to_fp32(a)), daz(em_bf16_to_fp32(b)), acc));
}

/* AVX512_BF16 ggml_vec_dot_bf16: two 16-lane accumulators over steps of 64; each lane takes
 * a pair of elements, the odd one first (vdpbf16ps); both reduced sums and the tail are
 * added in double. */
static void vec_dot_bf16(int64_t n, float *s, const void *vx, const void *vy) {
    const em_bf16 *x = vx, *y = vy;
    float c[2][16] = {{0}};
    int64_t i = 0;
    for (; i + 64 <= n; i += 64)
        for (int h = 0; h < 2; ++h)
            for (int l = 0; l < 16; ++l) {
                const int64_t e = i + 32 * h + 2 * l;
                float v = bf16_dp_step(c[h][l], x[e + 1], y[e + 1]);
                c[h][l] = bf16_dp_step(v, x[e], y[e]);
            }
    double sum = 0.0;
    sum += (double)em_hsum16(c[0]);
    sum += (double)em_hsum16(c[1]);
    for (; i < n; ++i) sum += (double)(em_bf16_to_fp32(x[i]) * em_bf16_to_fp32(y[i]));
    *s = (float)sum;
}

/* ======================================================================================
 * Q8_0: x = d * q, 32 per block
 * ====================================================================================== */

static void dequantize_q8_0(const void *vx, float *y, int64_t n) {
    const em_block_q8_0 *x = vx;
    for (int64_t ib = 0; ib < n / EM_QK8_0; ++ib) {
        const float d = FP16(x[ib].d);
        for (int j = 0; j < EM_QK8_0; ++j) y[ib * EM_QK8_0 + j] = x[ib].qs[j] * d;
    }
}

static inline float absmax32(const float *x) {
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j) amax = fmaxf(amax, fabsf(x[j]));
    return amax;
}

/* Activation path (ggml-cpu x86 quantize_row_q8_0): id = 127/amax, round half to even. */
static void quantize_q8_0(const float *x, void *vy, int64_t n) {
    em_block_q8_0 *y = vy;
    for (int64_t ib = 0; ib < n / EM_QK8_0; ++ib, x += EM_QK8_0) {
        const float amax = absmax32(x);
        const float d = amax / 127.f;
        const float id = amax != 0.0f ? 127.f / amax : 0.0f;
        y[ib].d = em_fp32_to_fp16(d);
        for (int j = 0; j < EM_QK8_0; ++j) y[ib].qs[j] = q8_rint(x[j] * id);
    }
}

/* Reference path (quantize_row_q8_0_ref, model files, gguf-py): id = 1/d, roundf. */
static void quantize_q8_0_ref(const float *x, void *vy, int64_t n) {
    em_block_q8_0 *y = vy;
    for (int64_t ib = 0; ib < n / EM_QK8_0; ++ib, x += EM_QK8_0) {
        const float d = absmax32(x) / 127.f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[ib].d = em_fp32_to_fp16(d);
        for (int j = 0; j < EM_QK8_0; ++j) y[ib].qs[j] = q8_round(x[j] * id);
    }
}

static void vec_dot_q8_0_q8_0(int64_t n, float *s, const void *vx, const void *vy) {
    const em_block_q8_0 *x = vx, *y = vy;
    float acc[8] = {0};
    for (int64_t ib = 0; ib < n / EM_QK8_0; ++ib) {
        const float d = FP16(x[ib].d) * FP16(y[ib].d);
        int32_t lane[8] = {0};
        for (int j = 0; j < EM_QK8_0; ++j) lane[j >> 2] += x[ib].qs[j] * y[ib].qs[j];
        em_acc8(acc, d, lane);
    }
    *s = em_hsum8(acc);
}

/* ======================================================================================
 * Q8_1: x = d * q, s = d * sum(q), 32 per block
 * ====================================================================================== */

static void dequantize_q8_1(const void *vx, float *y, int64_t n) {
    const em_block_q8_1 *x = vx;
    for (int64_t ib = 0; ib < n / EM_QK8_1; ++ib) {
        const float d = FP16(x[ib].d);
        for (int j = 0; j < EM_QK8_1; ++j) y[ib * EM_QK8_1 + j] = x[ib].qs[j] * d;
    }
}

/* Activation path (ggml-cpu x86 quantize_row_q8_1). */
static void quantize_q8_1(const float *x, void *vy, int64_t n) {
    em_block_q8_1 *y = vy;
    for (int64_t ib = 0; ib < n / EM_QK8_1; ++ib, x += EM_QK8_1) {
        const float amax = absmax32(x);
        const float d = amax / 127.f;
        const float id = amax != 0.0f ? 127.f / amax : 0.0f;
        int sum = 0;
        for (int j = 0; j < EM_QK8_1; ++j) {
            y[ib].qs[j] = q8_rint(x[j] * id);
            sum += y[ib].qs[j];
        }
        y[ib].d = em_fp32_to_fp16(d);
        y[ib].s = em_fp32_to_fp16(d * (float)sum);
    }
}

/* Reference path (quantize_row_q8_1_ref). */
static void quantize_q8_1_ref(const float *x, void *vy, int64_t n) {
    em_block_q8_1 *y = vy;
    for (int64_t ib = 0; ib < n / EM_QK8_1; ++ib, x += EM_QK8_1) {
        const float d = absmax32(x) / 127.f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        int sum = 0;
        for (int j = 0; j < EM_QK8_1; ++j) {
            y[ib].qs[j] = q8_round(x[j] * id);
            sum += y[ib].qs[j];
        }
        y[ib].d = em_fp32_to_fp16(d);
        y[ib].s = em_fp32_to_fp16((float)sum * d);
    }
}

/* ======================================================================================
 * Q4_0: x = d * (q - 8); qs[j] = element j | element j+16 << 4
 * ====================================================================================== */

static void dequantize_q4_0(const void *vx, float *y, int64_t n) {
    const em_block_q4_0 *x = vx;
    for (int64_t ib = 0; ib < n / EM_QK4_0; ++ib, y += EM_QK4_0) {
        const float d = FP16(x[ib].d);
        for (int j = 0; j < 16; ++j) {
            y[j] = ((x[ib].qs[j] & 0x0f) - 8) * d;
            y[j + 16] = ((x[ib].qs[j] >> 4) - 8) * d;
        }
    }
}

/* quantize_row_q4_0_ref: d = (signed value of largest magnitude) / -8. */
static void quantize_q4_0_ref(const float *x, void *vy, int64_t n) {
    em_block_q4_0 *y = vy;
    for (int64_t ib = 0; ib < n / EM_QK4_0; ++ib, x += EM_QK4_0) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < 32; ++j)
            if (amax < fabsf(x[j])) { amax = fabsf(x[j]); max = x[j]; }
        const float d = max / -8;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[ib].d = em_fp32_to_fp16(d);
        for (int j = 0; j < 16; ++j) {
            int q0 = q8_trunc(x[j] * id + 8.5f), q1 = q8_trunc(x[j + 16] * id + 8.5f);
            if (q0 > 15) q0 = 15;
            if (q1 > 15) q1 = 15;
            y[ib].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

static void vec_dot_q4_0_q8_0(int64_t n, float *s, const void *vx, const void *vy) {
    const em_block_q4_0 *x = vx;
    const em_block_q8_0 *y = vy;
    float acc[8] = {0};
    for (int64_t ib = 0; ib < n / EM_QK4_0; ++ib) {
        const float d = FP16(x[ib].d) * FP16(y[ib].d);
        int32_t lane[8] = {0};
        for (int j = 0; j < 16; ++j) {
            lane[j >> 2] += ((x[ib].qs[j] & 0x0f) - 8) * y[ib].qs[j];
            lane[(j + 16) >> 2] += ((x[ib].qs[j] >> 4) - 8) * y[ib].qs[j + 16];
        }
        em_acc8(acc, d, lane);
    }
    *s = em_hsum8(acc);
}

/* ======================================================================================
 * Q4_1: x = d * q + m
 * ====================================================================================== */

static void dequantize_q4_1(const void *vx, float *y, int64_t n) {
    const em_block_q4_1 *x = vx;
    for (int64_t ib = 0; ib < n / EM_QK4_1; ++ib, y += EM_QK4_1) {
        const float d = FP16(x[ib].d), m = FP16(x[ib].m);
        for (int j = 0; j < 16; ++j) {
            y[j] = (x[ib].qs[j] & 0x0f) * d + m;
            y[j + 16] = (x[ib].qs[j] >> 4) * d + m;
        }
    }
}

static void minmax32(const float *x, float *mn, float *mx) {
    float lo = FLT_MAX, hi = -FLT_MAX;
    for (int j = 0; j < 32; ++j) {
        if (x[j] < lo) lo = x[j];
        if (x[j] > hi) hi = x[j];
    }
    *mn = lo; *mx = hi;
}

static void quantize_q4_1_ref(const float *x, void *vy, int64_t n) {
    em_block_q4_1 *y = vy;
    for (int64_t ib = 0; ib < n / EM_QK4_1; ++ib, x += EM_QK4_1) {
        float mn, mx;
        minmax32(x, &mn, &mx);
        const float d = (mx - mn) / 15;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[ib].d = em_fp32_to_fp16(d);
        y[ib].m = em_fp32_to_fp16(mn);
        for (int j = 0; j < 16; ++j) {
            int q0 = q8_trunc((x[j] - mn) * id + 0.5f), q1 = q8_trunc((x[j + 16] - mn) * id + 0.5f);
            if (q0 > 15) q0 = 15;
            if (q1 > 15) q1 = 15;
            y[ib].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

/* The min term uses the activation's s = d*sum(q): summs is a fused multiply-add chain. */
static void vec_dot_q4_1_q8_1(int64_t n, float *s, const void *vx, const void *vy) {
    const em_block_q4_1 *x = vx;
    const em_block_q8_1 *y = vy;
    float acc[8] = {0};
    float summs = 0.0f;
    for (int64_t ib = 0; ib < n / EM_QK4_1; ++ib) {
        summs = fmaf(FP16(x[ib].m), FP16(y[ib].s), summs);
        const float d = FP16(x[ib].d) * FP16(y[ib].d);
        int32_t lane[8] = {0};
        for (int j = 0; j < 16; ++j) {
            lane[j >> 2] += (x[ib].qs[j] & 0x0f) * y[ib].qs[j];
            lane[(j + 16) >> 2] += (x[ib].qs[j] >> 4) * y[ib].qs[j + 16];
        }
        em_acc8(acc, d, lane);
    }
    *s = em_hsum8(acc) + summs;
}

/* ======================================================================================
 * Q5_0: x = d * (q - 16); low 4 bits as Q4_0, bit 4 of element j is bit j of qh
 * ====================================================================================== */

static inline uint32_t load_qh(const uint8_t qh[4]) {
    return (uint32_t)qh[0] | ((uint32_t)qh[1] << 8) | ((uint32_t)qh[2] << 16) | ((uint32_t)qh[3] << 24);
}

/* 5-bit unsigned value of element j (0..31) of a Q5_0/Q5_1 block */
static inline int q5_value(const uint8_t *qs, uint32_t qh, int j) {
    const int lo = j < 16 ? (qs[j] & 0x0f) : (qs[j - 16] >> 4);
    return lo | (int)(((qh >> j) & 1u) << 4);
}

static void dequantize_q5_0(const void *vx, float *y, int64_t n) {
    const em_block_q5_0 *x = vx;
    for (int64_t ib = 0; ib < n / EM_QK5_0; ++ib, y += EM_QK5_0) {
        const float d = FP16(x[ib].d);
        const uint32_t qh = load_qh(x[ib].qh);
        for (int j = 0; j < 32; ++j) y[j] = (q5_value(x[ib].qs, qh, j) - 16) * d;
    }
}

static void quantize_q5_0_ref(const float *x, void *vy, int64_t n) {
    em_block_q5_0 *y = vy;
    for (int64_t ib = 0; ib < n / EM_QK5_0; ++ib, x += EM_QK5_0) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < 32; ++j)
            if (amax < fabsf(x[j])) { amax = fabsf(x[j]); max = x[j]; }
        const float d = max / -16;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[ib].d = em_fp32_to_fp16(d);
        uint32_t qh = 0;
        for (int j = 0; j < 16; ++j) {
            int q0 = q8_trunc(x[j] * id + 16.5f), q1 = q8_trunc(x[j + 16] * id + 16.5f);
            if (q0 > 31) q0 = 31;
            if (q1 > 31) q1 = 31;
            y[ib].qs[j] = (uint8_t)((q0 & 0x0f) | ((q1 & 0x0f) << 4));
            qh |= (uint32_t)((q0 >> 4) & 1) << j;
            qh |= (uint32_t)((q1 >> 4) & 1) << (j + 16);
        }
        for (int b = 0; b < 4; ++b) y[ib].qh[b] = (uint8_t)(qh >> (8 * b));
    }
}

static void vec_dot_q5_0_q8_0(int64_t n, float *s, const void *vx, const void *vy) {
    const em_block_q5_0 *x = vx;
    const em_block_q8_0 *y = vy;
    float acc[8] = {0};
    for (int64_t ib = 0; ib < n / EM_QK5_0; ++ib) {
        const float d = FP16(x[ib].d) * FP16(y[ib].d);
        const uint32_t qh = load_qh(x[ib].qh);
        int32_t lane[8] = {0};
        for (int j = 0; j < 32; ++j) lane[j >> 2] += (q5_value(x[ib].qs, qh, j) - 16) * y[ib].qs[j];
        em_acc8(acc, d, lane);
    }
    *s = em_hsum8(acc);
}

/* ======================================================================================
 * Q5_1: x = d * q + m
 * ====================================================================================== */

static void dequantize_q5_1(const void *vx, float *y, int64_t n) {
    const em_block_q5_1 *x = vx;
    for (int64_t ib = 0; ib < n / EM_QK5_1; ++ib, y += EM_QK5_1) {
        const float d = FP16(x[ib].d), m = FP16(x[ib].m);
        const uint32_t qh = load_qh(x[ib].qh);
        for (int j = 0; j < 32; ++j) y[j] = q5_value(x[ib].qs, qh, j) * d + m;
    }
}

static void quantize_q5_1_ref(const float *x, void *vy, int64_t n) {
    em_block_q5_1 *y = vy;
    for (int64_t ib = 0; ib < n / EM_QK5_1; ++ib, x += EM_QK5_1) {
        float mn, mx;
        minmax32(x, &mn, &mx);
        const float d = (mx - mn) / 31;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[ib].d = em_fp32_to_fp16(d);
        y[ib].m = em_fp32_to_fp16(mn);
        uint32_t qh = 0;
        for (int j = 0; j < 16; ++j) {
            const int q0 = (uint8_t)((x[j] - mn) * id + 0.5f), q1 = (uint8_t)((x[j + 16] - mn) * id + 0.5f);
            y[ib].qs[j] = (uint8_t)((q0 & 0x0f) | ((q1 & 0x0f) << 4));
            qh |= (uint32_t)((q0 >> 4) & 1) << j;
            qh |= (uint32_t)((q1 >> 4) & 1) << (j + 16);
        }
        for (int b = 0; b < 4; ++b) y[ib].qh[b] = (uint8_t)(qh >> (8 * b));
    }
}

static void vec_dot_q5_1_q8_1(int64_t n, float *s, const void *vx, const void *vy) {
    const em_block_q5_1 *x = vx;
    const em_block_q8_1 *y = vy;
    float acc[8] = {0};
    float summs = 0.0f;
    for (int64_t ib = 0; ib < n / EM_QK5_1; ++ib) {
        summs = fmaf(FP16(x[ib].m), FP16(y[ib].s), summs);
        const float d = FP16(x[ib].d) * FP16(y[ib].d);
        const uint32_t qh = load_qh(x[ib].qh);
        int32_t lane[8] = {0};
        for (int j = 0; j < 32; ++j) lane[j >> 2] += q5_value(x[ib].qs, qh, j) * y[ib].qs[j];
        em_acc8(acc, d, lane);
    }
    *s = em_hsum8(acc) + summs;
}

/* ======================================================================================
 * Q8_K: activation type of the K-quants; x = d * q, d is a float
 * ====================================================================================== */

static void dequantize_q8_K(const void *vx, float *y, int64_t n) {
    const em_block_q8_K *x = vx;
    for (int64_t ib = 0; ib < n / EM_QK_K; ++ib)
        for (int j = 0; j < EM_QK_K; ++j) *y++ = x[ib].d * x[ib].qs[j];
}

/* quantize_row_q8_K_ref (also what ggml-cpu uses on x86): scale from the signed value of
 * largest magnitude, iscale = -127/max, q = nearest_int(iscale*x) capped at 127, d = 1/iscale. */
static void quantize_q8_K(const float *x, void *vy, int64_t n) {
    em_block_q8_K *y = vy;
    for (int64_t ib = 0; ib < n / EM_QK_K; ++ib, x += EM_QK_K) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < EM_QK_K; ++j)
            if (fabsf(x[j]) > amax) { amax = fabsf(x[j]); max = x[j]; }
        if (amax == 0.0f) {
            memset(&y[ib], 0, sizeof y[ib]);
            continue;
        }
        const float iscale = -127.f / max;
        for (int j = 0; j < EM_QK_K; ++j) {
            const int v = nearest_int(iscale * x[j]);
            y[ib].qs[j] = (int8_t)(v < 127 ? v : 127);
        }
        for (int g = 0; g < EM_QK_K / 16; ++g) {
            int sum = 0;
            for (int l = 0; l < 16; ++l) sum += y[ib].qs[16 * g + l];
            y[ib].bsums[g] = (int16_t)sum;
        }
        y[ib].d = 1 / iscale;
    }
}

/* ======================================================================================
 * Q2_K: 16 sub-blocks of 16; element 128j + 32t + l is (qs[32j + l] >> 2t) & 3
 * ====================================================================================== */

static inline int q2k_value(const em_block_q2_K *b, int e) {
    return (b->qs[32 * (e >> 7) + (e & 31)] >> (2 * ((e >> 5) & 3))) & 3;
}

static void dequantize_q2_K(const void *vx, float *y, int64_t n) {
    const em_block_q2_K *x = vx;
    for (int64_t ib = 0; ib < n / EM_QK_K; ++ib, y += EM_QK_K) {
        const float d = FP16(x[ib].d), dmin = FP16(x[ib].dmin);
        for (int g = 0; g < 16; ++g) {
            const float dl = d * (x[ib].scales[g] & 0x0f);
            const float ml = dmin * (x[ib].scales[g] >> 4);
            for (int l = 0; l < 16; ++l) y[16 * g + l] = dl * q2k_value(&x[ib], 16 * g + l) - ml;
        }
    }
}

/* AVX2 path: the mins term goes into the same 8 lanes first (lane k: mins 2k, 2k+1 times
 * bsums 2k, 2k+1), then the scaled quant sums. */
static void vec_dot_q2_K_q8_K(int64_t n, float *s, const void *vx, const void *vy) {
    const em_block_q2_K *x = vx;
    const em_block_q8_K *y = vy;
    float acc[8] = {0};
    for (int64_t ib = 0; ib < n / EM_QK_K; ++ib) {
        const float d = y[ib].d * FP16(x[ib].d);
        const float dmin = -y[ib].d * FP16(x[ib].dmin);
        int32_t lane[8];
        for (int k = 0; k < 8; ++k)
            lane[k] = (x[ib].scales[2 * k] >> 4) * y[ib].bsums[2 * k] +
                      (x[ib].scales[2 * k + 1] >> 4) * y[ib].bsums[2 * k + 1];
        em_acc8(acc, dmin, lane);
        memset(lane, 0, sizeof lane);
        for (int e = 0; e < EM_QK_K; ++e)
            lane[(e & 31) >> 2] += (x[ib].scales[e >> 4] & 0x0f) * q2k_value(&x[ib], e) * y[ib].qs[e];
        em_acc8(acc, d, lane);
    }
    *s = em_hsum8(acc);
}

/* ======================================================================================
 * Q3_K: 16 sub-blocks of 16; q = low 2 bits (as Q2_K) - (hmask bit ? 0 : 4),
 *       the hmask bit of element 32m + l is bit m of hmask[l]
 * ====================================================================================== */

static inline int q3k_value(const em_block_q3_K *b, int e) {
    const int lo = (b->qs[32 * (e >> 7) + (e & 31)] >> (2 * ((e >> 5) & 3))) & 3;
    const int hi = (b->hmask[e & 31] >> (e >> 5)) & 1;
    return lo - (hi ? 0 : 4);
}

static void dequantize_q3_K(const void *vx, float *y, int64_t n) {
    const em_block_q3_K *x = vx;
    for (int64_t ib = 0; ib < n / EM_QK_K; ++ib, y += EM_QK_K) {
        const float d = FP16(x[ib].d);
        int8_t sc[16];
        q3k_scales(x[ib].scales, sc);
        for (int g = 0; g < 16; ++g) {
            const float dl = d * (sc[g] - 32);
            for (int l = 0; l < 16; ++l) y[16 * g + l] = dl * q3k_value(&x[ib], 16 * g + l);
        }
    }
}

static void vec_dot_q3_K_q8_K(int64_t n, float *s, const void *vx, const void *vy) {
    const em_block_q3_K *x = vx;
    const em_block_q8_K *y = vy;
    float acc[8] = {0};
    for (int64_t ib = 0; ib < n / EM_QK_K; ++ib) {
        const float d = y[ib].d * FP16(x[ib].d);
        int8_t sc[16];
        q3k_scales(x[ib].scales, sc);
        int32_t lane[8] = {0};
        for (int e = 0; e < EM_QK_K; ++e)
            lane[(e & 31) >> 2] += (sc[e >> 4] - 32) * q3k_value(&x[ib], e) * y[ib].qs[e];
        em_acc8(acc, d, lane);
    }
    *s = em_hsum8(acc);
}

/* ======================================================================================
 * Q4_K: 8 sub-blocks of 32; element 64j + l (l < 32) is qs[32j + l] & 15,
 *       element 64j + 32 + l is qs[32j + l] >> 4; x = d*sc*q - dmin*m
 * ====================================================================================== */

static inline int q4k_value(const uint8_t *qs, int e) {
    const uint8_t b = qs[32 * (e >> 6) + (e & 31)];
    return (e & 32) ? (b >> 4) : (b & 0x0f);
}

static void dequantize_q4_K(const void *vx, float *y, int64_t n) {
    const em_block_q4_K *x = vx;
    for (int64_t ib = 0; ib < n / EM_QK_K; ++ib, y += EM_QK_K) {
        const float d = FP16(x[ib].d), dmin = FP16(x[ib].dmin);
        for (int g = 0; g < 8; ++g) {
            uint8_t sc, m;
            scale_min_k4(g, x[ib].scales, &sc, &m);
            const float dl = d * sc, ml = dmin * m;
            for (int l = 0; l < 32; ++l) y[32 * g + l] = dl * q4k_value(x[ib].qs, 32 * g + l) - ml;
        }
    }
}

/* AVX2 path: quant sums in 8 lanes (fma with d), mins in a separate 4-lane accumulator
 * (lane k: sub-blocks 2k and 2k+1), summed (0+2)+(1+3) and added last. */
static void vec_dot_q4_K_q8_K(int64_t n, float *s, const void *vx, const void *vy) {
    const em_block_q4_K *x = vx;
    const em_block_q8_K *y = vy;
    float acc[8] = {0}, acc_m[4] = {0};
    for (int64_t ib = 0; ib < n / EM_QK_K; ++ib) {
        const float d = y[ib].d * FP16(x[ib].d);
        const float dmin = -y[ib].d * FP16(x[ib].dmin);
        uint8_t sc[8], m[8];
        for (int g = 0; g < 8; ++g) scale_min_k4(g, x[ib].scales, &sc[g], &m[g]);
        const int16_t *bs = y[ib].bsums;
        for (int k = 0; k < 4; ++k) {
            const int32_t p = m[2 * k] * (bs[4 * k] + bs[4 * k + 1]) + m[2 * k + 1] * (bs[4 * k + 2] + bs[4 * k + 3]);
            acc_m[k] = fmaf(dmin, (float)p, acc_m[k]);
        }
        int32_t lane[8] = {0};
        for (int e = 0; e < EM_QK_K; ++e)
            lane[(e & 31) >> 2] += sc[e >> 5] * q4k_value(x[ib].qs, e) * y[ib].qs[e];
        em_acc8(acc, d, lane);
    }
    *s = em_hsum8(acc) + ((acc_m[0] + acc_m[2]) + (acc_m[1] + acc_m[3]));
}

/* ======================================================================================
 * Q5_K: Q4_K plus a high bit: element 32m + l has its bit 4 in bit m of qh[l]
 * ====================================================================================== */

static inline int q5k_value(const em_block_q5_K *b, int e) {
    return q4k_value(b->qs, e) | (((b->qh[e & 31] >> (e >> 5)) & 1) << 4);
}

static void dequantize_q5_K(const void *vx, float *y, int64_t n) {
    const em_block_q5_K *x = vx;
    for (int64_t ib = 0; ib < n / EM_QK_K; ++ib, y += EM_QK_K) {
        const float d = FP16(x[ib].d), dmin = FP16(x[ib].dmin);
        for (int g = 0; g < 8; ++g) {
            uint8_t sc, m;
            scale_min_k4(g, x[ib].scales, &sc, &m);
            const float dl = d * sc, ml = dmin * m;
            for (int l = 0; l < 32; ++l) y[32 * g + l] = dl * q5k_value(&x[ib], 32 * g + l) - ml;
        }
    }
}

/* AVX2 path: like Q4_K, but the mins are summed to one integer per super-block and
 * folded into a scalar with a fused multiply-add. */
static void vec_dot_q5_K_q8_K(int64_t n, float *s, const void *vx, const void *vy) {
    const em_block_q5_K *x = vx;
    const em_block_q8_K *y = vy;
    float acc[8] = {0};
    float summs = 0.0f;
    for (int64_t ib = 0; ib < n / EM_QK_K; ++ib) {
        const float d = y[ib].d * FP16(x[ib].d);
        const float dmin = -y[ib].d * FP16(x[ib].dmin);
        uint8_t sc[8], m[8];
        for (int g = 0; g < 8; ++g) scale_min_k4(g, x[ib].scales, &sc[g], &m[g]);
        int32_t msum = 0;
        for (int g = 0; g < 8; ++g) msum += m[g] * (y[ib].bsums[2 * g] + y[ib].bsums[2 * g + 1]);
        summs = fmaf(dmin, (float)msum, summs);
        int32_t lane[8] = {0};
        for (int e = 0; e < EM_QK_K; ++e)
            lane[(e & 31) >> 2] += sc[e >> 5] * q5k_value(&x[ib], e) * y[ib].qs[e];
        em_acc8(acc, d, lane);
    }
    *s = em_hsum8(acc) + summs;
}

/* ======================================================================================
 * Q6_K: 16 sub-blocks of 16; element 128j + 32t + l:
 *   low 4 bits: ql[64j + l + 32*(t&1)] (low nibble for t<2, high nibble for t>=2)
 *   high 2 bits: (qh[32j + l] >> 2t) & 3;   x = d * sc * (q - 32)
 * ====================================================================================== */

static inline int q6k_value(const em_block_q6_K *b, int e) {
    const int j = e >> 7, t = (e >> 5) & 3, l = e & 31;
    const uint8_t lo = b->ql[64 * j + l + 32 * (t & 1)];
    const int low = (t < 2) ? (lo & 0x0f) : (lo >> 4);
    const int high = (b->qh[32 * j + l] >> (2 * t)) & 3;
    return (low | (high << 4)) - 32;
}

static void dequantize_q6_K(const void *vx, float *y, int64_t n) {
    const em_block_q6_K *x = vx;
    for (int64_t ib = 0; ib < n / EM_QK_K; ++ib, y += EM_QK_K) {
        const float d = FP16(x[ib].d);
        for (int e = 0; e < EM_QK_K; ++e) y[e] = d * x[ib].scales[e >> 4] * q6k_value(&x[ib], e);
    }
}

/* AVX2 path: sum of sc*(q+32)*q8 per lane, minus 32*sc*bsums paired as lane k <-> groups
 * 2k, 2k+1 (that pairing is the SIMD layout's, not the elements'), then fma with d. */
static void vec_dot_q6_K_q8_K(int64_t n, float *s, const void *vx, const void *vy) {
    const em_block_q6_K *x = vx;
    const em_block_q8_K *y = vy;
    float acc[8] = {0};
    for (int64_t ib = 0; ib < n / EM_QK_K; ++ib) {
        const float d = y[ib].d * FP16(x[ib].d);
        const int8_t *sc = x[ib].scales;
        int32_t lane[8] = {0};
        for (int e = 0; e < EM_QK_K; ++e)
            lane[(e & 31) >> 2] += sc[e >> 4] * (q6k_value(&x[ib], e) + 32) * y[ib].qs[e];
        for (int k = 0; k < 8; ++k)
            lane[k] -= 32 * (y[ib].bsums[2 * k] * sc[2 * k] + y[ib].bsums[2 * k + 1] * sc[2 * k + 1]);
        em_acc8(acc, d, lane);
    }
    *s = em_hsum8(acc);
}

/* ======================================================================================
 * AMX buffer kernels (llama.cpp ggml-cpu/amx/mmq.cpp)
 *
 * On a CPU with AMX-INT8 and a -march=native build, llama.cpp loads Q4_0, Q4_1, Q8_0, Q4_K,
 * Q5_K, Q6_K and F16 matmul weights into its "AMX" buffer (when the row count is a multiple
 * of 32 and the row length a multiple of the block), and those matmuls never reach vec_dot.
 * Its one-row VNNI kernel and its tile kernel produce the same bits per output: the exact
 * integer dot of one whole block, then one float accumulator updated block after block:
 *     c = fma(isum, d_w * d_a, c)                   (all types)
 *     c = fma(m_w, s_a, c)                          (Q4_1: the min term, after each block)
 *     c = fma(-msum, dmin_w * d_a, c)               (Q4_K/Q5_K: the mins, after each block)
 * F16 weights stay unpacked and meet F32 activations (not converted to F16): 16 lanes of
 * fma over steps of 16 elements, then _mm512_reduce_add_ps.
 * (Checked bit for bit against an AMX build for one activation row; the reference build
 * used for ember's comparisons has AMX switched off, so these are kept for such builds.)
 * ====================================================================================== */

static void amx_dot_q4_0(int64_t n, float *s, const void *vx, const void *vy) {
    const em_block_q4_0 *x = vx;
    const em_block_q8_0 *y = vy;
    float c = 0.0f;
    for (int64_t ib = 0; ib < n / EM_QK4_0; ++ib) {
        int32_t isum = 0;
        for (int j = 0; j < 16; ++j)
            isum += ((x[ib].qs[j] & 0x0f) - 8) * y[ib].qs[j] + ((x[ib].qs[j] >> 4) - 8) * y[ib].qs[j + 16];
        c = fmaf((float)isum, FP16(x[ib].d) * FP16(y[ib].d), c);
    }
    *s = c;
}

static void amx_dot_q4_1(int64_t n, float *s, const void *vx, const void *vy) {
    const em_block_q4_1 *x = vx;
    const em_block_q8_1 *y = vy;
    float c = 0.0f;
    for (int64_t ib = 0; ib < n / EM_QK4_1; ++ib) {
        int32_t isum = 0;
        for (int j = 0; j < 16; ++j)
            isum += (x[ib].qs[j] & 0x0f) * y[ib].qs[j] + (x[ib].qs[j] >> 4) * y[ib].qs[j + 16];
        c = fmaf((float)isum, FP16(x[ib].d) * FP16(y[ib].d), c);
        c = fmaf(FP16(x[ib].m), FP16(y[ib].s), c);
    }
    *s = c;
}

static void amx_dot_q8_0(int64_t n, float *s, const void *vx, const void *vy) {
    const em_block_q8_0 *x = vx, *y = vy;
    float c = 0.0f;
    for (int64_t ib = 0; ib < n / EM_QK8_0; ++ib) {
        int32_t isum = 0;
        for (int j = 0; j < EM_QK8_0; ++j) isum += x[ib].qs[j] * y[ib].qs[j];
        c = fmaf((float)isum, FP16(x[ib].d) * FP16(y[ib].d), c);
    }
    *s = c;
}

static void amx_dot_q4_K(int64_t n, float *s, const void *vx, const void *vy) {
    const em_block_q4_K *x = vx;
    const em_block_q8_K *y = vy;
    float c = 0.0f;
    for (int64_t ib = 0; ib < n / EM_QK_K; ++ib) {
        uint8_t sc[8], m[8];
        for (int g = 0; g < 8; ++g) scale_min_k4(g, x[ib].scales, &sc[g], &m[g]);
        int32_t isum = 0, msum = 0;
        for (int e = 0; e < EM_QK_K; ++e) isum += sc[e >> 5] * q4k_value(x[ib].qs, e) * y[ib].qs[e];
        for (int g = 0; g < 8; ++g) msum += m[g] * (y[ib].bsums[2 * g] + y[ib].bsums[2 * g + 1]);
        c = fmaf((float)isum, FP16(x[ib].d) * y[ib].d, c);
        c = fmaf(-(float)msum, FP16(x[ib].dmin) * y[ib].d, c);
    }
    *s = c;
}

static void amx_dot_q5_K(int64_t n, float *s, const void *vx, const void *vy) {
    const em_block_q5_K *x = vx;
    const em_block_q8_K *y = vy;
    float c = 0.0f;
    for (int64_t ib = 0; ib < n / EM_QK_K; ++ib) {
        uint8_t sc[8], m[8];
        for (int g = 0; g < 8; ++g) scale_min_k4(g, x[ib].scales, &sc[g], &m[g]);
        int32_t isum = 0, msum = 0;
        for (int e = 0; e < EM_QK_K; ++e) isum += sc[e >> 5] * q5k_value(&x[ib], e) * y[ib].qs[e];
        for (int g = 0; g < 8; ++g) msum += m[g] * (y[ib].bsums[2 * g] + y[ib].bsums[2 * g + 1]);
        c = fmaf((float)isum, FP16(x[ib].d) * y[ib].d, c);
        c = fmaf(-(float)msum, FP16(x[ib].dmin) * y[ib].d, c);
    }
    *s = c;
}

static void amx_dot_q6_K(int64_t n, float *s, const void *vx, const void *vy) {
    const em_block_q6_K *x = vx;
    const em_block_q8_K *y = vy;
    float c = 0.0f;
    for (int64_t ib = 0; ib < n / EM_QK_K; ++ib) {
        int32_t isum = 0;
        for (int e = 0; e < EM_QK_K; ++e) isum += x[ib].scales[e >> 4] * q6k_value(&x[ib], e) * y[ib].qs[e];
        c = fmaf((float)isum, FP16(x[ib].d) * y[ib].d, c);
    }
    *s = c;
}

static int amx_dot_f16_f32(int64_t n, float *s, const void *vx, const void *vy) {
    const em_fp16 *w = vx;
    const float *x = vy;
    float acc[16] = {0};
    for (int64_t k = 0; k < n; k += 16)
        for (int l = 0; l < 16; ++l) acc[l] = fmaf(x[k + l], FP16(w[k + l]), acc[l]);
    *s = em_hsum16(acc);
    return 0;
}

/* ======================================================================================
 * CPU_REPACK buffer kernels (llama.cpp ggml-cpu/repack.cpp, x86 AVX2/AVX-512 paths)
 *
 * With AVX2, Q4_0 and Q4_K weights whose row count is a multiple of 8 are repacked into
 * 8-row interleaved blocks (q4_0_8x8, q4_K_8x8). Activation rows are taken in groups of 4 by
 * the gemm kernel; the remaining (rows % 4) rows, and every single-row (decode) product, by
 * the gemv kernel. Activation quantization is the same as em_quantize_row's.
 *   Q4_0 gemv and gemm:  c = fma(isum_block, d_w * d_a, c) per 32-element block.
 *   Q4_K gemv:           acc  = fma(isum_superblock, d_w * d_a, acc),
 *                        accm = fma(msum_superblock, dmin_w * d_a, accm);  s = acc - accm
 *   Q4_K gemm:           the same, but both updates per 64 elements (two sub-blocks).
 * ====================================================================================== */

static void repack_q4_K(int64_t n, float *s, const void *vx, const void *vy, int span) {
    const em_block_q4_K *x = vx;
    const em_block_q8_K *y = vy;
    float acc = 0.0f, accm = 0.0f;
    for (int64_t ib = 0; ib < n / EM_QK_K; ++ib) {
        uint8_t sc[8], m[8];
        for (int g = 0; g < 8; ++g) scale_min_k4(g, x[ib].scales, &sc[g], &m[g]);
        const float d = FP16(x[ib].d) * y[ib].d, dmin = FP16(x[ib].dmin) * y[ib].d;
        for (int e0 = 0; e0 < EM_QK_K; e0 += span) {
            int32_t isum = 0, msum = 0;
            for (int e = e0; e < e0 + span; ++e) isum += sc[e >> 5] * q4k_value(x[ib].qs, e) * y[ib].qs[e];
            for (int g = e0 / 32; g < (e0 + span) / 32; ++g) msum += m[g] * (y[ib].bsums[2 * g] + y[ib].bsums[2 * g + 1]);
            acc = fmaf((float)isum, d, acc);
            accm = fmaf((float)msum, dmin, accm);
        }
    }
    *s = acc - accm;
}

/* ======================================================================================
 * Tiled K-quant matmul (llama.cpp ggml-cpu/tiled, AVX-512 VNNI path)
 *
 * For Q2_K..Q6_K weights in the plain CPU buffer and >= 8 activation rows, llama.cpp uses
 * its tiled kernel instead of vec_dot. Per output and per super-block it forms the exact
 * integer sums, scales them by the weight's d (and dmin), and only then by the activation's
 * d. (The source writes that last step as mul then add; GCC fuses it: -ffp-contract=fast.)
 *     r = isum * d_w;  r = fma(-dmin_w, msum, r) (types with mins);  c = fma(r, d_a, c)
 * ====================================================================================== */

static void tiled_dot_kquant(em_type t, int64_t n, float *s, const void *vx, const void *vy) {
    const em_block_q8_K *y = vy;
    float c = 0.0f;
    for (int64_t ib = 0; ib < n / EM_QK_K; ++ib) {
        int32_t isum = 0, msum = 0;
        float dw = 0.0f, dmin = 0.0f;
        const int8_t *q8 = y[ib].qs;
        const int16_t *bs = y[ib].bsums;
        switch (t) {
        case EM_TYPE_Q2_K: {
            const em_block_q2_K *x = (const em_block_q2_K *)vx + ib;
            for (int e = 0; e < EM_QK_K; ++e) isum += (x->scales[e >> 4] & 0x0f) * q2k_value(x, e) * q8[e];
            for (int g = 0; g < 16; ++g) msum += (x->scales[g] >> 4) * bs[g];
            dw = FP16(x->d); dmin = FP16(x->dmin);
            break;
        }
        case EM_TYPE_Q3_K: {
            const em_block_q3_K *x = (const em_block_q3_K *)vx + ib;
            int8_t sc[16];
            q3k_scales(x->scales, sc);
            for (int e = 0; e < EM_QK_K; ++e) isum += (sc[e >> 4] - 32) * q3k_value(x, e) * q8[e];
            dw = FP16(x->d);
            break;
        }
        case EM_TYPE_Q4_K: case EM_TYPE_Q5_K: {
            const em_block_q4_K *x4 = (const em_block_q4_K *)vx + ib;
            const em_block_q5_K *x5 = (const em_block_q5_K *)vx + ib;
            const uint8_t *scales = t == EM_TYPE_Q4_K ? x4->scales : x5->scales;
            uint8_t sc[8], m[8];
            for (int g = 0; g < 8; ++g) scale_min_k4(g, scales, &sc[g], &m[g]);
            for (int e = 0; e < EM_QK_K; ++e)
                isum += sc[e >> 5] * (t == EM_TYPE_Q4_K ? q4k_value(x4->qs, e) : q5k_value(x5, e)) * q8[e];
            for (int g = 0; g < 8; ++g) msum += m[g] * (bs[2 * g] + bs[2 * g + 1]);
            dw = FP16(t == EM_TYPE_Q4_K ? x4->d : x5->d);
            dmin = FP16(t == EM_TYPE_Q4_K ? x4->dmin : x5->dmin);
            break;
        }
        case EM_TYPE_Q6_K: {
            const em_block_q6_K *x = (const em_block_q6_K *)vx + ib;
            for (int e = 0; e < EM_QK_K; ++e) isum += x->scales[e >> 4] * q6k_value(x, e) * q8[e];
            dw = FP16(x->d);
            break;
        }
        default:
            break;
        }
        float r = (float)isum * dw;
        if (t == EM_TYPE_Q2_K || t == EM_TYPE_Q4_K || t == EM_TYPE_Q5_K) r = fmaf(-dmin, (float)msum, r);
        c = fmaf(r, y[ib].d, c);
    }
    *s = c;
}

/* ======================================================================================
 * llamafile sgemm (llama.cpp ggml-cpu/llamafile/sgemm.cpp, AVX-512 build)
 *
 * Used for matmuls with >= 2 activation rows (prompt processing) on weights in the plain CPU
 * buffer. Its quantized kernels (Q8_0, Q4_0, Q5_0) give exactly vec_dot's bits; the float
 * ones do not: one 16-lane accumulator per output, fma over steps of 16 (F32, F16 on F16
 * activations) or 32 (BF16, vdpbf16ps), then _mm512_reduce_add_ps. A row length that is not
 * a multiple of the step makes llama.cpp fall back to vec_dot, and so do we.
 * ====================================================================================== */

static void sgemm_f32(int64_t n, float *s, const void *vx, const void *vy) {
    const float *x = vx, *y = vy;
    float acc[16] = {0};
    for (int64_t k = 0; k < n; k += 16)
        for (int l = 0; l < 16; ++l) acc[l] = fmaf(x[k + l], y[k + l], acc[l]);
    *s = em_hsum16(acc);
}

static void sgemm_f16(int64_t n, float *s, const void *vx, const void *vy) {
    const em_fp16 *x = vx, *y = vy;
    float acc[16] = {0};
    for (int64_t k = 0; k < n; k += 16)
        for (int l = 0; l < 16; ++l) acc[l] = fmaf(FP16(x[k + l]), FP16(y[k + l]), acc[l]);
    *s = em_hsum16(acc);
}

static void sgemm_bf16(int64_t n, float *s, const void *vx, const void *vy) {
    const em_bf16 *x = vx, *y = vy;
    float acc[16] = {0};
    for (int64_t k = 0; k < n; k += 32)
        for (int l = 0; l < 16; ++l) {
            const float v = bf16_dp_step(acc[l], x[k + 2 * l + 1], y[k + 2 * l + 1]);
            acc[l] = bf16_dp_step(v, x[k + 2 * l], y[k + 2 * l]);
        }
    *s = em_hsum16(acc);
}

/* ======================================================================================
 * Type table and dispatch
 * ====================================================================================== */

typedef struct type_ops {
    em_type_traits traits;
    dequant_fn dequantize;
    quant_fn quantize;      /* activation path (ggml-cpu from_float on x86) */
    quant_fn quantize_ref;  /* reference quantizer (ggml quantize_row_*_ref) */
    dot_fn vec_dot;
} type_ops;

static const type_ops k_types[EM_TYPE_COUNT] = {
    [EM_TYPE_F32]  = {{"f32",  1, 4, EM_TYPE_F32, 1}, dequantize_f32, quantize_f32, quantize_f32, vec_dot_f32},
    [EM_TYPE_F16]  = {{"f16",  1, 2, EM_TYPE_F16, 1}, dequantize_f16, quantize_f16, quantize_f16, vec_dot_f16},
    [EM_TYPE_BF16] = {{"bf16", 1, 2, EM_TYPE_BF16, 1}, dequantize_bf16, quantize_bf16, quantize_bf16, vec_dot_bf16},
    [EM_TYPE_Q4_0] = {{"q4_0", 32, sizeof(em_block_q4_0), EM_TYPE_Q8_0, 1}, dequantize_q4_0, quantize_q4_0_ref, quantize_q4_0_ref, vec_dot_q4_0_q8_0},
    [EM_TYPE_Q4_1] = {{"q4_1", 32, sizeof(em_block_q4_1), EM_TYPE_Q8_1, 1}, dequantize_q4_1, quantize_q4_1_ref, quantize_q4_1_ref, vec_dot_q4_1_q8_1},
    [EM_TYPE_Q5_0] = {{"q5_0", 32, sizeof(em_block_q5_0), EM_TYPE_Q8_0, 1}, dequantize_q5_0, quantize_q5_0_ref, quantize_q5_0_ref, vec_dot_q5_0_q8_0},
    [EM_TYPE_Q5_1] = {{"q5_1", 32, sizeof(em_block_q5_1), EM_TYPE_Q8_1, 1}, dequantize_q5_1, quantize_q5_1_ref, quantize_q5_1_ref, vec_dot_q5_1_q8_1},
    [EM_TYPE_Q8_0] = {{"q8_0", 32, sizeof(em_block_q8_0), EM_TYPE_Q8_0, 1}, dequantize_q8_0, quantize_q8_0, quantize_q8_0_ref, vec_dot_q8_0_q8_0},
    /* ggml has no Q8_1 weights dot: Q8_1 exists only as an activation type */
    [EM_TYPE_Q8_1] = {{"q8_1", 32, sizeof(em_block_q8_1), EM_TYPE_Q8_1, 0}, dequantize_q8_1, quantize_q8_1, quantize_q8_1_ref, NULL},
    [EM_TYPE_Q2_K] = {{"q2_K", 256, sizeof(em_block_q2_K), EM_TYPE_Q8_K, 1}, dequantize_q2_K, NULL, NULL, vec_dot_q2_K_q8_K},
    [EM_TYPE_Q3_K] = {{"q3_K", 256, sizeof(em_block_q3_K), EM_TYPE_Q8_K, 1}, dequantize_q3_K, NULL, NULL, vec_dot_q3_K_q8_K},
    [EM_TYPE_Q4_K] = {{"q4_K", 256, sizeof(em_block_q4_K), EM_TYPE_Q8_K, 1}, dequantize_q4_K, NULL, NULL, vec_dot_q4_K_q8_K},
    [EM_TYPE_Q5_K] = {{"q5_K", 256, sizeof(em_block_q5_K), EM_TYPE_Q8_K, 1}, dequantize_q5_K, NULL, NULL, vec_dot_q5_K_q8_K},
    [EM_TYPE_Q6_K] = {{"q6_K", 256, sizeof(em_block_q6_K), EM_TYPE_Q8_K, 1}, dequantize_q6_K, NULL, NULL, vec_dot_q6_K_q8_K},
    [EM_TYPE_Q8_K] = {{"q8_K", 256, sizeof(em_block_q8_K), EM_TYPE_Q8_K, 0}, dequantize_q8_K, quantize_q8_K, quantize_q8_K, NULL},
};

static const type_ops *ops_of(uint32_t type) {
    if (type >= EM_TYPE_COUNT || k_types[type].traits.name == NULL) return NULL;
    return &k_types[type];
}

const em_type_traits *em_type_traits_get(uint32_t type) {
    const type_ops *o = ops_of(type);
    return o ? &o->traits : NULL;
}

size_t em_row_size(em_type t, int64_t n) {
    const type_ops *o = ops_of((uint32_t)t);
    if (!o || n < 0 || n % o->traits.block_size != 0) return 0;
    return (size_t)(n / o->traits.block_size) * o->traits.type_size;
}

void em_dequantize_row(em_type t, const void *x, float *y, int64_t n) {
    const type_ops *o = ops_of((uint32_t)t);
    assert(o && o->dequantize && n % o->traits.block_size == 0);
    if (o && o->dequantize) o->dequantize(x, y, n);
}

void em_quantize_row(em_type t, const float *x, void *y, int64_t n) {
    const type_ops *o = ops_of((uint32_t)t);
    assert(o && o->quantize && n % o->traits.block_size == 0);
    if (o && o->quantize) o->quantize(x, y, n);
}

int em_quantize_row_ref(em_type t, const float *x, void *y, int64_t n) {
    const type_ops *o = ops_of((uint32_t)t);
    if (!o || !o->quantize_ref || n % o->traits.block_size != 0) return -1;
    o->quantize_ref(x, y, n);
    return 0;
}

int em_can_quantize(em_type t) {
    const type_ops *o = ops_of((uint32_t)t);
    return o != NULL && o->quantize != NULL;
}

void em_vec_dot(em_type t, int64_t n, float *s, const void *x, const void *y) {
    const type_ops *o = ops_of((uint32_t)t);
    assert(o && o->vec_dot && n % o->traits.block_size == 0);
    if (o && o->vec_dot) o->vec_dot(n, s, x, y);
    else *s = NAN;
}

/* Which llama.cpp kernel to reproduce: see quants.h and the AMX / CPU_REPACK / sgemm sections. */
int em_vec_dot_kernel(em_kernel kernel, em_type t, int64_t n, float *s, const void *x, const void *y) {
    const type_ops *o = ops_of((uint32_t)t);
    if (!o || !o->vec_dot || n <= 0 || n % o->traits.block_size != 0) return -1;
    switch (kernel) {
    case EM_KERNEL_VEC_DOT:
        o->vec_dot(n, s, x, y);
        return 0;
    case EM_KERNEL_SGEMM:
        if (t == EM_TYPE_F32 && n % 16 == 0) sgemm_f32(n, s, x, y);
        else if (t == EM_TYPE_F16 && n % 16 == 0) sgemm_f16(n, s, x, y);
        else if (t == EM_TYPE_BF16 && n % 32 == 0) sgemm_bf16(n, s, x, y);
        else o->vec_dot(n, s, x, y);
        return 0;
    case EM_KERNEL_TILED:
        if (t == EM_TYPE_Q2_K || t == EM_TYPE_Q3_K || t == EM_TYPE_Q4_K || t == EM_TYPE_Q5_K || t == EM_TYPE_Q6_K)
            tiled_dot_kquant(t, n, s, x, y);
        else o->vec_dot(n, s, x, y);
        return 0;
    case EM_KERNEL_REPACK_GEMV:
    case EM_KERNEL_REPACK_GEMM:
        if (t == EM_TYPE_Q4_0) { amx_dot_q4_0(n, s, x, y); return 0; }
        if (t == EM_TYPE_Q4_K) { repack_q4_K(n, s, x, y, kernel == EM_KERNEL_REPACK_GEMV ? EM_QK_K : 64); return 0; }
        return -1;
    case EM_KERNEL_AMX:
        switch (t) {
        case EM_TYPE_Q4_0: amx_dot_q4_0(n, s, x, y); return 0;
        case EM_TYPE_Q4_1: amx_dot_q4_1(n, s, x, y); return 0;
        case EM_TYPE_Q8_0: amx_dot_q8_0(n, s, x, y); return 0;
        case EM_TYPE_Q4_K: amx_dot_q4_K(n, s, x, y); return 0;
        case EM_TYPE_Q5_K: amx_dot_q5_K(n, s, x, y); return 0;
        case EM_TYPE_Q6_K: amx_dot_q6_K(n, s, x, y); return 0;
        case EM_TYPE_F16: return n % 16 == 0 ? amx_dot_f16_f32(n, s, x, y) : -1;
        default: return -1;
        }
    }
    return -1;
}

int em_repack_applies(em_type t, int64_t n_rows) {
    return (t == EM_TYPE_Q4_0 || t == EM_TYPE_Q4_K) && n_rows > 0 && n_rows % 8 == 0;
}

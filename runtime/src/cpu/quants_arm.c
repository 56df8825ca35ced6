/* quants_arm.c - SIMD kernels for AArch64: neon and dotprod levels.
 *
 * The reference run of llama.cpp is x86, so on ARM "correct" means: the bits of the scalar
 * reference in quants.c, whose float order is that of llama.cpp's AVX2/AVX-512 code. These
 * kernels keep that order exactly (eight float lanes for the block types, the 4 x 16 lanes of
 * the AVX-512 F32/F16 dot, ...), so ember gives the same tokens on ARM as on x86. This is
 * deliberately not llama.cpp's own NEON order.
 *
 *   neon     Advanced SIMD (every AArch64 CPU): int8 products widened to int16 and added
 *            pairwise into the int32 lanes
 *   dotprod  the same with SDOT (four int8 products into an int32 lane in one instruction)
 *
 * Integer sums are exact either way; float multiply-adds are FMLA (fused, as fmaf); F16
 * values are converted with FCVTL, which like F16C is exact and keeps NaN payloads; FPCR is
 * assumed to be the default of every OS (round to nearest, no flush-to-zero).
 *
 * Compiled only for AArch64 (GCC or clang); elsewhere em_kernels_arm returns NULL.
 */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "kernels.h"

#if defined(__aarch64__) && defined(__GNUC__)

#include <arm_neon.h>
#include <math.h>
#include <string.h>

/* small fixed-count loops over vector registers: unrolled, so that the registers stay registers */
#define EM_UNROLL _Pragma("GCC unroll 16")

/* ======================================================================================
 * Helpers
 * ====================================================================================== */

/* fp16 -> fp32: a load of the half straight into a SIMD register and FCVT (exact) */
static inline float h2f(em_fp16 h) {
    __fp16 v;
    memcpy(&v, &h, sizeof v);
    return (float)v;
}

static inline em_fp16 f2h(float f) {
    return vget_lane_u16(vreinterpret_u16_f16(vcvt_f16_f32(vdupq_n_f32(f))), 0);
}

static inline float fma1(float a, float b, float c) { return fmaf(a, b, c); }

/* em_acc8 on lanes acc[0] (0-3), acc[1] (4-7) */
static inline void acc8(float32x4_t acc[2], float d, int32x4_t lo, int32x4_t hi) {
    acc[0] = vfmaq_n_f32(acc[0], vcvtq_f32_s32(lo), d);
    acc[1] = vfmaq_n_f32(acc[1], vcvtq_f32_s32(hi), d);
}

/* em_hsum8: ((a0+a4)+(a2+a6)) + ((a1+a5)+(a3+a7)) */
static inline float hsum8_lh(float32x4_t lo, float32x4_t hi) {
    const float32x4_t t = vaddq_f32(lo, hi);
    const float32x2_t u = vadd_f32(vget_low_f32(t), vget_high_f32(t));
    return vget_lane_f32(u, 0) + vget_lane_f32(u, 1);
}
static inline float hsum8(const float32x4_t acc[2]) { return hsum8_lh(acc[0], acc[1]); }

/* v >> k for a run-time k */
static inline uint8x16_t shr_u8(uint8x16_t v, int k) { return vshlq_u8(v, vdupq_n_s8((int8_t)-k)); }

/* 0xff in byte j where bit j (0..15) of qh is set */
static inline uint8x16_t bits16(uint32_t qh) {
    static const uint8_t sel[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    const uint8x16_t b = vcombine_u8(vdup_n_u8((uint8_t)qh), vdup_n_u8((uint8_t)(qh >> 8)));
    return vtstq_u8(b, vld1q_u8(sel));
}

/* lane k = a[2k]*b[2k] + a[2k+1]*b[2k+1] (x86 vpmaddwd) */
static inline int32x4_t pair_madd(int16x8_t a, int16x8_t b) {
    return vpaddq_s32(vmull_s16(vget_low_s16(a), vget_low_s16(b)), vmull_high_s16(a, b));
}

/* Q3_K: the 16 6-bit scales (still offset by 32) */
static inline void q3k_scales(const uint8_t *packed, int8_t out[16]) {
    uint32_t a[3], u[4];
    memcpy(a, packed, 12);
    const uint32_t k4 = 0x0f0f0f0fu, k2 = 0x03030303u;
    u[0] = (a[0] & k4) | ((a[2] & k2) << 4);
    u[1] = (a[1] & k4) | (((a[2] >> 2) & k2) << 4);
    u[2] = ((a[0] >> 4) & k4) | (((a[2] >> 4) & k2) << 4);
    u[3] = ((a[1] >> 4) & k4) | (((a[2] >> 6) & k2) << 4);
    memcpy(out, u, 16);
}

/* Q4_K/Q5_K: 8 scales and 8 mins (get_scale_min_k4) */
static inline void k4_scales(const uint8_t q[12], uint8_t sc[8], uint8_t m[8]) {
    uint32_t a[3], u[4];
    memcpy(a, q, 12);
    const uint32_t k6 = 0x3f3f3f3fu, k4 = 0x0f0f0f0fu, k2 = 0x03030303u;
    u[0] = a[0] & k6;
    u[1] = (a[2] & k4) | (((a[0] >> 6) & k2) << 4);
    u[2] = a[1] & k6;
    u[3] = ((a[2] >> 4) & k4) | (((a[1] >> 6) & k2) << 4);
    memcpy(sc, u, 8);
    memcpy(m, u + 2, 8);
}

/* the 4 min lanes of Q4_K: m[2k]*(bs[4k]+bs[4k+1]) + m[2k+1]*(bs[4k+2]+bs[4k+3]) */
static inline int32x4_t k4_mins(const uint8_t m[8], const int16_t *bsums) {
    const int16x8_t pairs = vpaddq_s16(vld1q_s16(bsums), vld1q_s16(bsums + 8));
    return pair_madd(vreinterpretq_s16_u16(vmovl_u8(vld1_u8(m))), pairs);
}

/* Q2_K mins: lane k = min 2k * bsum 2k + min 2k+1 * bsum 2k+1 (lo: lanes 0-3, hi: 4-7) */
static inline void q2k_mins(const em_block_q2_K *x, const int16_t *bsums, int32x4_t *lo, int32x4_t *hi) {
    const uint8x16_t mins = vshrq_n_u8(vld1q_u8(x->scales), 4);
    *lo = pair_madd(vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(mins))), vld1q_s16(bsums));
    *hi = pair_madd(vreinterpretq_s16_u16(vmovl_high_u8(mins)), vld1q_s16(bsums + 8));
}

/* one super-block of the tiled K-quant matmul: r = isum * d_w, r = fma(-dmin_w, msum, r) for
 * the types with mins, c = fma(r, d_a, c) */
static inline float tiled_step(float c, int32_t isum, float dw, int has_min, float dmin, int32_t msum, float da) {
    float r = (float)isum * dw;
    if (has_min) r = fma1(-dmin, (float)msum, r);
    return fma1(r, da, c);
}

/* ======================================================================================
 * Integer dots: neon and dotprod
 * ====================================================================================== */

#define NSUF neon
#define NTARGET
#define NDOT 0
#include "quants_arm_neon.inc"
#undef NSUF
#undef NTARGET
#undef NDOT

#if defined(__clang__)
#define EM_TARGET_DOTPROD __attribute__((target("dotprod")))
#else
/* GCC's arm_neon.h gives SDOT the target armv8.2-a+dotprod, and inlines it only into functions
 * whose target includes that; every CPU with SDOT implements Armv8.2 */
#define EM_TARGET_DOTPROD __attribute__((target("arch=armv8.2-a+dotprod")))
#endif
#define NSUF dotprod
#define NTARGET EM_TARGET_DOTPROD
#define NDOT 1
#include "quants_arm_neon.inc"
#undef NSUF
#undef NTARGET
#undef NDOT

/* ======================================================================================
 * Float dots (the same for both levels)
 * ====================================================================================== */

/* 16 floats of a row of f32 (is16 = 0) or f16 (is16 = 1) from element i, as 4 quarters */
static inline void load16(const void *p, int64_t i, int is16, float32x4_t v[4]) {
    if (is16) {
        const uint16_t *h = (const uint16_t *)p + i;
        EM_UNROLL
        for (int q = 0; q < 2; ++q) {
            const float16x8_t x = vreinterpretq_f16_u16(vld1q_u16(h + 8 * q));
            v[2 * q] = vcvt_f32_f16(vget_low_f16(x));
            v[2 * q + 1] = vcvt_high_f32_f16(x);
        }
    } else {
        EM_UNROLL
        for (int q = 0; q < 4; ++q) v[q] = vld1q_f32((const float *)p + i + 4 * q);
    }
}

/* em_hsum16 of 16 lanes as 4 quarters: lanes i + 8 onto lanes i, then the 8-lane order */
static inline float hsum16(const float32x4_t a[4]) {
    return hsum8_lh(vaddq_f32(a[2], a[0]), vaddq_f32(a[3], a[1]));
}

/* the 4 x 16 lane body of the F32 and F16 dots (AVX-512 ggml_vec_dot_f32/f16) */
static inline float dot_4x16(const void *x, const void *y, int64_t np, int is16) {
    float32x4_t acc[4][4];
    EM_UNROLL
    for (int j = 0; j < 4; ++j)
        EM_UNROLL
        for (int q = 0; q < 4; ++q) acc[j][q] = vdupq_n_f32(0.0f);
    for (int64_t i = 0; i < np; i += 64)
        EM_UNROLL
        for (int j = 0; j < 4; ++j) {
            float32x4_t vx[4], vy[4];
            load16(x, i + 16 * j, is16, vx);
            load16(y, i + 16 * j, is16, vy);
            EM_UNROLL
            for (int q = 0; q < 4; ++q) acc[j][q] = vfmaq_f32(acc[j][q], vx[q], vy[q]);
        }
    EM_UNROLL
    for (int q = 0; q < 4; ++q) {
        acc[0][q] = vaddq_f32(acc[0][q], acc[2][q]);
        acc[1][q] = vaddq_f32(acc[1][q], acc[3][q]);
    }
    EM_UNROLL
    for (int q = 0; q < 4; ++q) acc[0][q] = vaddq_f32(acc[0][q], acc[1][q]);
    return hsum16(acc[0]);
}

static void dot_f32_arm(int64_t n, float *s, const void *vx, const void *vy) {
    const float *x = vx, *y = vy;
    const int64_t np = n & ~(int64_t)63;
    float sum = dot_4x16(vx, vy, np, 0);
    /* the tail as the reference: rounded products added in order, the last n % 4 fused */
    const int64_t nfused = (n - np) & 3;
    for (int64_t i = np; i < n - nfused; ++i) sum += x[i] * y[i];
    for (int64_t i = n - nfused; i < n; ++i) sum = fma1(x[i], y[i], sum);
    *s = sum;
}

static void dot_f16_arm(int64_t n, float *s, const void *vx, const void *vy) {
    const em_fp16 *x = vx, *y = vy;
    const int64_t np = n & ~(int64_t)63;
    double sum = (double)dot_4x16(vx, vy, np, 1);
    for (int64_t i = np; i < n; ++i) sum += (double)(h2f(x[i]) * h2f(y[i]));
    *s = (float)sum;
}

static void sgemm_f32_arm(int64_t n, float *s, const void *vx, const void *vy) {
    if (n % 16 != 0) { dot_f32_arm(n, s, vx, vy); return; }
    float32x4_t acc[4] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
    for (int64_t k = 0; k < n; k += 16) {
        float32x4_t a[4], b[4];
        load16(vx, k, 0, a);
        load16(vy, k, 0, b);
        EM_UNROLL
        for (int q = 0; q < 4; ++q) acc[q] = vfmaq_f32(acc[q], a[q], b[q]);
    }
    *s = hsum16(acc);
}

static void sgemm_f16_arm(int64_t n, float *s, const void *vx, const void *vy) {
    if (n % 16 != 0) { dot_f16_arm(n, s, vx, vy); return; }
    float32x4_t acc[4] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
    for (int64_t k = 0; k < n; k += 16) {
        float32x4_t a[4], b[4];
        load16(vx, k, 1, a);
        load16(vy, k, 1, b);
        EM_UNROLL
        for (int q = 0; q < 4; ++q) acc[q] = vfmaq_f32(acc[q], a[q], b[q]);
    }
    *s = hsum16(acc);
}

/* BF16 (vdpbf16ps semantics, see quants.c): subnormal inputs and results are zero */
static inline float32x4_t daz(float32x4_t v) {
    const uint32x4_t b = vreinterpretq_u32_f32(v);
    const uint32x4_t tiny = vceqq_u32(vandq_u32(b, vdupq_n_u32(0x7f800000u)), vdupq_n_u32(0));
    return vreinterpretq_f32_u32(vbicq_u32(b, vandq_u32(tiny, vdupq_n_u32(0x7fffffffu))));
}
/* acc lanes l = 0..3 take the pairs (2l, 2l+1) of the 8 bf16 at x, y: odd element first */
static inline float32x4_t bf16_pairs(float32x4_t acc, const em_bf16 *x, const em_bf16 *y) {
    const uint32x4_t vx = vreinterpretq_u32_u16(vld1q_u16(x)), vy = vreinterpretq_u32_u16(vld1q_u16(y));
    const uint32x4_t hi = vdupq_n_u32(0xffff0000u);
    acc = daz(vfmaq_f32(acc, daz(vreinterpretq_f32_u32(vandq_u32(vx, hi))), daz(vreinterpretq_f32_u32(vandq_u32(vy, hi)))));
    return daz(vfmaq_f32(acc, daz(vreinterpretq_f32_u32(vshlq_n_u32(vx, 16))),
                         daz(vreinterpretq_f32_u32(vshlq_n_u32(vy, 16)))));
}

static void dot_bf16_arm(int64_t n, float *s, const void *vx, const void *vy) {
    const em_bf16 *x = vx, *y = vy;
    float32x4_t c[2][4];
    EM_UNROLL
    for (int h = 0; h < 2; ++h)
        EM_UNROLL
        for (int q = 0; q < 4; ++q) c[h][q] = vdupq_n_f32(0.0f);
    int64_t i = 0;
    for (; i + 64 <= n; i += 64)
        EM_UNROLL
        for (int h = 0; h < 2; ++h)
            EM_UNROLL
            for (int q = 0; q < 4; ++q) c[h][q] = bf16_pairs(c[h][q], x + i + 32 * h + 8 * q, y + i + 32 * h + 8 * q);
    double sum = 0.0;
    sum += (double)hsum16(c[0]);
    sum += (double)hsum16(c[1]);
    for (; i < n; ++i) sum += (double)(em_bf16_to_fp32(x[i]) * em_bf16_to_fp32(y[i]));
    *s = (float)sum;
}

static void sgemm_bf16_arm(int64_t n, float *s, const void *vx, const void *vy) {
    if (n % 32 != 0) { dot_bf16_arm(n, s, vx, vy); return; }
    const em_bf16 *x = vx, *y = vy;
    float32x4_t acc[4] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
    for (int64_t k = 0; k < n; k += 32)
        EM_UNROLL
        for (int q = 0; q < 4; ++q) acc[q] = bf16_pairs(acc[q], x + k + 8 * q, y + k + 8 * q);
    *s = hsum16(acc);
}

/* ======================================================================================
 * Activation quantizers
 * ====================================================================================== */

/* max |x| over 4k floats; NaNs skipped (FMAXNM), as fmaxf does */
static inline float absmax(const float *x, int nvec) {
    float32x4_t m = vdupq_n_f32(0.0f);
    for (int k = 0; k < nvec; ++k) m = vmaxnmq_f32(m, vabsq_f32(vld1q_f32(x + 4 * k)));
    return vmaxnmvq_f32(m);
}

/* q = rint(x * id) for 32 floats into q8; returns their sum */
static inline int32_t round32(const float *x, float id, int8_t *q8) {
    int32x4_t sum = vdupq_n_s32(0);
    EM_UNROLL
    for (int h = 0; h < 2; ++h) {
        int32x4_t v[4];
        EM_UNROLL
        for (int k = 0; k < 4; ++k) {
            v[k] = vcvtq_s32_f32(vrndnq_f32(vmulq_n_f32(vld1q_f32(x + 16 * h + 4 * k), id)));
            sum = vaddq_s32(sum, v[k]);
        }
        const int16x8_t a = vcombine_s16(vqmovn_s32(v[0]), vqmovn_s32(v[1]));
        const int16x8_t b = vcombine_s16(vqmovn_s32(v[2]), vqmovn_s32(v[3]));
        vst1q_s8(q8 + 16 * h, vcombine_s8(vqmovn_s16(a), vqmovn_s16(b)));
    }
    return vaddvq_s32(sum);
}

static void quant_q8_0_arm(const float *x, void *vy, int64_t n) {
    em_block_q8_0 *y = vy;
    for (int64_t ib = 0; ib < n / EM_QK8_0; ++ib, x += EM_QK8_0) {
        const float amax = absmax(x, 8);
        const float d = amax / 127.f;
        const float id = amax != 0.0f ? 127.f / amax : 0.0f;
        y[ib].d = f2h(d);
        (void)round32(x, id, y[ib].qs);
    }
}

static void quant_q8_1_arm(const float *x, void *vy, int64_t n) {
    em_block_q8_1 *y = vy;
    for (int64_t ib = 0; ib < n / EM_QK8_1; ++ib, x += EM_QK8_1) {
        const float amax = absmax(x, 8);
        const float d = amax / 127.f;
        const float id = amax != 0.0f ? 127.f / amax : 0.0f;
        const int32_t sum = round32(x, id, y[ib].qs);
        y[ib].d = f2h(d);
        y[ib].s = f2h(d * (float)sum);
    }
}

static void quant_q8_K_arm(const float *x, void *vy, int64_t n) {
    em_block_q8_K *y = vy;
    for (int64_t ib = 0; ib < n / EM_QK_K; ++ib, x += EM_QK_K) {
        const float amax = absmax(x, EM_QK_K / 4);
        if (amax == 0.0f) {
            memset(&y[ib], 0, sizeof y[ib]);
            continue;
        }
        int first = 0;   /* the first element of largest magnitude gives the scale's sign */
        while (fabsf(x[first]) != amax) ++first;
        const float iscale = -127.f / x[first];
        const float32x4_t magic = vdupq_n_f32(12582912.f);
        EM_UNROLL
        for (int g = 0; g < EM_QK_K / 16; ++g) {
            int32x4_t v[4];
            EM_UNROLL
            for (int k = 0; k < 4; ++k) {
                /* nearest_int: the rounded value sits in the low mantissa bits of v + 1.5*2^23 */
                const float32x4_t t = vaddq_f32(vmulq_n_f32(vld1q_f32(x + 16 * g + 4 * k), iscale), magic);
                const int32x4_t r = vsubq_s32(vandq_s32(vreinterpretq_s32_f32(t), vdupq_n_s32(0x007fffff)),
                                              vdupq_n_s32(0x00400000));
                v[k] = vminq_s32(r, vdupq_n_s32(127));
            }
            const int16x8_t a = vcombine_s16(vqmovn_s32(v[0]), vqmovn_s32(v[1]));
            const int16x8_t b = vcombine_s16(vqmovn_s32(v[2]), vqmovn_s32(v[3]));
            const int8x16_t q = vcombine_s8(vqmovn_s16(a), vqmovn_s16(b));
            vst1q_s8(y[ib].qs + 16 * g, q);
            y[ib].bsums[g] = (int16_t)vaddlvq_s8(q);
        }
        y[ib].d = 1 / iscale;
    }
}

static void quant_f16_arm(const float *x, void *vy, int64_t n) {
    em_fp16 *y = vy;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) vst1_u16(y + i, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(x + i))));
    for (; i < n; ++i) y[i] = em_fp32_to_fp16(x[i]);
}

static void quant_bf16_arm(const float *x, void *vy, int64_t n) {
    em_bf16 *y = vy;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const uint32x4_t b = vreinterpretq_u32_f32(vld1q_f32(x + i));
        const uint32x4_t hi = vshrq_n_u32(b, 16);
        /* round to nearest even; a NaN keeps its top bits and is made quiet */
        const uint32x4_t rne = vshrq_n_u32(vaddq_u32(vaddq_u32(b, vdupq_n_u32(0x7fff)), vandq_u32(hi, vdupq_n_u32(1))), 16);
        const uint32x4_t nan = vcgtq_u32(vandq_u32(b, vdupq_n_u32(0x7fffffffu)), vdupq_n_u32(0x7f800000u));
        vst1_u16(y + i, vmovn_u32(vbslq_u32(nan, vorrq_u32(hi, vdupq_n_u32(0x40)), rne)));
    }
    for (; i < n; ++i) y[i] = em_fp32_to_bf16(x[i]);
}

#define FWD_QUANT(T, ID) \
    static void fwd_quant_##T(const float *x, void *y, int64_t n) { em_quantize_row(ID, x, y, n); }
FWD_QUANT(f32, EM_TYPE_F32)
FWD_QUANT(q4_0, EM_TYPE_Q4_0)
FWD_QUANT(q4_1, EM_TYPE_Q4_1)
FWD_QUANT(q5_0, EM_TYPE_Q5_0)
FWD_QUANT(q5_1, EM_TYPE_Q5_1)

/* ======================================================================================
 * Tables
 * ====================================================================================== */

#define ARM_TABLE(SUF, LEVEL)                                                                    \
    {                                                                                            \
        .name = #SUF,                                                                            \
        .level = LEVEL,                                                                          \
        .vec_dot = {[EM_TYPE_F32] = dot_f32_arm, [EM_TYPE_F16] = dot_f16_arm,                    \
                    [EM_TYPE_BF16] = dot_bf16_arm, ARM_QUANT_DOTS(SUF)},                         \
        .quantize = {[EM_TYPE_F32] = fwd_quant_f32, [EM_TYPE_F16] = quant_f16_arm,               \
                     [EM_TYPE_BF16] = quant_bf16_arm, [EM_TYPE_Q4_0] = fwd_quant_q4_0,           \
                     [EM_TYPE_Q4_1] = fwd_quant_q4_1, [EM_TYPE_Q5_0] = fwd_quant_q5_0,           \
                     [EM_TYPE_Q5_1] = fwd_quant_q5_1, [EM_TYPE_Q8_0] = quant_q8_0_arm,           \
                     [EM_TYPE_Q8_1] = quant_q8_1_arm, [EM_TYPE_Q8_K] = quant_q8_K_arm},          \
        .sgemm = {[EM_TYPE_F32] = sgemm_f32_arm, [EM_TYPE_F16] = sgemm_f16_arm,                  \
                  [EM_TYPE_BF16] = sgemm_bf16_arm, ARM_QUANT_DOTS(SUF)},                         \
        .repack_gemv = {[EM_TYPE_Q4_0] = repack_q4_0_##SUF, [EM_TYPE_Q4_K] = repack_q4_K_gemv_##SUF}, \
        .repack_gemm = {[EM_TYPE_Q4_0] = repack_q4_0_##SUF, [EM_TYPE_Q4_K] = repack_q4_K_gemm_##SUF}, \
        .tiled = {[EM_TYPE_Q2_K] = tiled_q2_K_##SUF, [EM_TYPE_Q3_K] = tiled_q3_K_##SUF,           \
                  [EM_TYPE_Q4_K] = tiled_q4_K_##SUF, [EM_TYPE_Q5_K] = tiled_q5_K_##SUF,           \
                  [EM_TYPE_Q6_K] = tiled_q6_K_##SUF},                                            \
        .vec_dot4 = {[EM_TYPE_Q4_0] = dot4_q4_0_##SUF, [EM_TYPE_Q4_1] = dot4_q4_1_##SUF,           \
                     [EM_TYPE_Q5_0] = dot4_q5_0_##SUF, [EM_TYPE_Q5_1] = dot4_q5_1_##SUF,           \
                     [EM_TYPE_Q8_0] = dot4_q8_0_##SUF},                                          \
        EM_SCALAR_FORWARD_ENTRIES,                                                               \
    }
#define ARM_QUANT_DOTS(SUF)                                                                      \
    [EM_TYPE_Q4_0] = dot_q4_0_##SUF, [EM_TYPE_Q4_1] = dot_q4_1_##SUF,                            \
    [EM_TYPE_Q5_0] = dot_q5_0_##SUF, [EM_TYPE_Q5_1] = dot_q5_1_##SUF,                            \
    [EM_TYPE_Q8_0] = dot_q8_0_##SUF, [EM_TYPE_Q2_K] = dot_q2_K_##SUF,                            \
    [EM_TYPE_Q3_K] = dot_q3_K_##SUF, [EM_TYPE_Q4_K] = dot_q4_K_##SUF,                            \
    [EM_TYPE_Q5_K] = dot_q5_K_##SUF, [EM_TYPE_Q6_K] = dot_q6_K_##SUF

static const em_kernels k_neon = ARM_TABLE(neon, EM_LEVEL_NEON);
static const em_kernels k_dotprod = ARM_TABLE(dotprod, EM_LEVEL_DOTPROD);

const em_kernels *em_kernels_arm(em_kernel_level level, const em_cpu_features *f) {
    (void)f;
    switch (level) {
    case EM_LEVEL_NEON: return &k_neon;
    case EM_LEVEL_DOTPROD: return &k_dotprod;
    default: return NULL;
    }
}

#else /* not AArch64 */

const em_kernels *em_kernels_arm(em_kernel_level level, const em_cpu_features *f) {
    (void)level;
    (void)f;
    return NULL;
}

#endif

/* quants_x86.c - SIMD kernels for x86-64: sse42, avx2, avxvnni and avx512 levels.
 *
 * Every function here gives the same bits as its scalar reference in quants.c, which follows
 * the float order of llama.cpp's AVX2/AVX-512 code: integer parts are exact, so only the float
 * steps are fixed, and those are done in the same lanes and the same order (see the comment
 * at the top of quants_x86_avx2.inc). The file is built for the baseline x86-64 target; each
 * function carries the target attribute of its level, and kernels.c only hands out a level's
 * table when the CPU and OS run it (cpu_features.c). No -m flags are needed.
 *
 *   sse42    128-bit integer dots (SSSE3 pmaddubsw, SSE4.1); these CPUs have no FMA, and a
 *            separate multiply and add would round twice, so the fused multiply-adds of the
 *            reference are done exactly in double: the product of two floats is exact in
 *            double, the sum is rounded to odd (a TwoSum error term says which way), and the
 *            final rounding to float then equals a single rounding of the exact a*b+c
 *            (Boldo and Melquiond, "Emulation of FMA and correctly rounded sums: proved
 *            algorithms using rounding to odd", IEEE TC 2008). Activation quantizers stay
 *            scalar here: they run once per row of activations, not once per weight row.
 *   avx2     quants_x86_avx2.inc with pmaddubsw/pmaddwd
 *   avxvnni  the same with VEX vpdpbusd/vpdpwssd
 *   avx512   the same with EVEX vpdpbusd/vpdpwssd, plus 512-bit F32 and BF16 dots (the
 *            reference's own shape: 4 x 16 lanes), vdpbf16ps where AVX512_BF16 is present
 *
 * Compiled only for x86-64 with GCC or clang (the attributes and <cpuid.h>); elsewhere
 * em_kernels_x86 returns NULL.
 */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)

#include <immintrin.h>
#include <math.h>
#include <string.h>

/* small fixed-count loops over vector registers: unrolled, so that the registers stay registers */
#define EM_UNROLL _Pragma("GCC unroll 16")

/* 8 bytes as an inline-asm memory operand */
typedef struct { uint8_t b[8]; } em_m64;


/* ======================================================================================
 * Scalar forwards, for table slots a level leaves to the reference
 * ====================================================================================== */

#define FWD_QUANT(T, ID) \
    static void fwd_quant_##T(const float *x, void *y, int64_t n) { em_quantize_row(ID, x, y, n); }
FWD_QUANT(f32, EM_TYPE_F32)
FWD_QUANT(f16, EM_TYPE_F16)
FWD_QUANT(bf16, EM_TYPE_BF16)
FWD_QUANT(q4_0, EM_TYPE_Q4_0)
FWD_QUANT(q4_1, EM_TYPE_Q4_1)
FWD_QUANT(q5_0, EM_TYPE_Q5_0)
FWD_QUANT(q5_1, EM_TYPE_Q5_1)
FWD_QUANT(q8_0, EM_TYPE_Q8_0)
FWD_QUANT(q8_1, EM_TYPE_Q8_1)
FWD_QUANT(q8_K, EM_TYPE_Q8_K)

/* ======================================================================================
 * sse42
 * ====================================================================================== */

#define SSE42 __attribute__((target("ssse3,sse4.1,sse4.2")))
#define SF static inline __attribute__((always_inline)) SSE42
#define SK static SSE42

/* fp16 -> fp32 without F16C, exactly as em_fp16_to_fp32 (NaNs made quiet) */
static inline float h2f_sw(em_fp16 h) {
    const uint32_t em = h & 0x7fffu, man = h & 0x3ffu;
    uint32_t bits;
    if (em >= 0x7c00u) {
        bits = 0x7f800000u | (man << 13) | (man ? 0x400000u : 0u);
    } else if (em >= 0x400u) {
        bits = (em << 13) + 0x38000000u;
    } else {
        const float v = (float)em * 0x1p-24f;   /* zero or subnormal: exact */
        memcpy(&bits, &v, 4);
    }
    bits |= (uint32_t)(h & 0x8000u) << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* fmaf(a, b, c) with one rounding, without an FMA unit (see the top of the file) */
static inline float fmaf_exact(float a, float b, float c) {
    const double p = (double)a * (double)b;     /* exact: 24 + 24 bits */
    const double dc = (double)c;
    double s = p + dc;
    const double bb = s - p;
    const double err = (p - (s - bb)) + (dc - bb);
    if (err < 0.0 || err > 0.0) {   /* inexact (NaN: an infinite operand, nothing to round) */
        uint64_t u;
        memcpy(&u, &s, 8);
        if ((u & 1u) == 0) u += ((err > 0.0) == (s > 0.0)) ? 1u : (uint64_t)-1;   /* round to odd */
        memcpy(&s, &u, 8);
    }
    return (float)s;
}

SF __m128d sse_fma_odd(__m128d a, __m128d b, __m128d c) {
    const __m128d p = _mm_mul_pd(a, b);
    const __m128d s = _mm_add_pd(p, c);
    const __m128d bb = _mm_sub_pd(s, p);
    const __m128d err = _mm_add_pd(_mm_sub_pd(p, _mm_sub_pd(s, bb)), _mm_sub_pd(c, bb));
    const __m128i si = _mm_castpd_si128(s), one = _mm_set1_epi64x(1);
    /* inexact: err non-zero and not NaN (NaN comes from an infinite operand: nothing to round) */
    const __m128i inexact = _mm_castpd_si128(_mm_and_pd(_mm_cmpneq_pd(err, _mm_setzero_pd()), _mm_cmpord_pd(err, err)));
    const __m128i even = _mm_cmpeq_epi64(_mm_and_si128(si, one), _mm_setzero_si128());
    /* +1 ulp of magnitude when the error has the sign of s, else -1 */
    const __m128i away = _mm_srli_epi64(_mm_xor_si128(si, _mm_castpd_si128(err)), 63);
    const __m128i step = _mm_sub_epi64(one, _mm_add_epi64(away, away));
    return _mm_castsi128_pd(_mm_add_epi64(si, _mm_and_si128(_mm_and_si128(inexact, even), step)));
}

/* four lanes of fmaf(a, b, c) */
SF __m128 sse_fma_ps(__m128 a, __m128 b, __m128 c) {
    const __m128d lo = sse_fma_odd(_mm_cvtps_pd(a), _mm_cvtps_pd(b), _mm_cvtps_pd(c));
    const __m128d hi = sse_fma_odd(_mm_cvtps_pd(_mm_movehl_ps(a, a)), _mm_cvtps_pd(_mm_movehl_ps(b, b)),
                                   _mm_cvtps_pd(_mm_movehl_ps(c, c)));
    return _mm_movelh_ps(_mm_cvtpd_ps(lo), _mm_cvtpd_ps(hi));
}

SF __m128i sse_load(const void *p) { return _mm_loadu_si128((const __m128i *)p); }

/* int32 groups of 4 products; u unsigned, s signed bytes */
SF __m128i sse_dot_us(__m128i u, __m128i s) { return _mm_madd_epi16(_mm_maddubs_epi16(u, s), _mm_set1_epi16(1)); }
SF __m128i sse_dot_ss(__m128i x, __m128i y) { return sse_dot_us(_mm_abs_epi8(x), _mm_sign_epi8(y, x)); }

/* em_acc8 on the 8 lanes held as acc[0] (lanes 0-3) and acc[1] (lanes 4-7) */
SF void sse_acc8(__m128 acc[2], float d, __m128i lo, __m128i hi) {
    const __m128 vd = _mm_set1_ps(d);
    acc[0] = sse_fma_ps(vd, _mm_cvtepi32_ps(lo), acc[0]);
    acc[1] = sse_fma_ps(vd, _mm_cvtepi32_ps(hi), acc[1]);
}

/* em_hsum8 of lanes lo (0-3), hi (4-7) */
SF float sse_hsum8(__m128 lo, __m128 hi) {
    const __m128 t = _mm_add_ps(lo, hi);
    const __m128 u = _mm_add_ps(t, _mm_movehl_ps(t, t));
    return _mm_cvtss_f32(_mm_add_ss(u, _mm_movehdup_ps(u)));
}

SF int32_t sse_hsum_i32(__m128i t) {
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4e));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xb1));
    return _mm_cvtsi128_si32(t);
}

/* 0xff in byte j where bit (j + first) of qh is set, j = 0..15 */
SF __m128i sse_bits16(uint32_t qh, int first) {
    const __m128i spread = _mm_shuffle_epi8(_mm_cvtsi32_si128((int)(qh >> first)),
                                            _mm_set_epi64x(0x0101010101010101ll, 0));
    const __m128i bitsel = _mm_set1_epi64x((long long)0x8040201008040201ull);
    return _mm_cmpeq_epi8(_mm_and_si128(spread, bitsel), bitsel);
}

SK void dot_q8_0_sse42(int64_t n, float *s, const void *vx, const void *vy) {
    const em_block_q8_0 *x = vx, *y = vy;
    __m128 acc[2] = {_mm_setzero_ps(), _mm_setzero_ps()};
    for (int64_t ib = 0; ib < n / EM_QK8_0; ++ib) {
        const float d = h2f_sw(x[ib].d) * h2f_sw(y[ib].d);
        sse_acc8(acc, d, sse_dot_ss(sse_load(x[ib].qs), sse_load(y[ib].qs)),
                 sse_dot_ss(sse_load(x[ib].qs + 16), sse_load(y[ib].qs + 16)));
    }
    *s = sse_hsum8(acc[0], acc[1]);
}

SK void dot_q4_0_sse42(int64_t n, float *s, const void *vx, const void *vy) {
    const em_block_q4_0 *x = vx;
    const em_block_q8_0 *y = vy;
    const __m128i m4 = _mm_set1_epi8(0x0f), eight = _mm_set1_epi8(8);
    __m128 acc[2] = {_mm_setzero_ps(), _mm_setzero_ps()};
    for (int64_t ib = 0; ib < n / EM_QK4_0; ++ib) {
        const float d = h2f_sw(x[ib].d) * h2f_sw(y[ib].d);
        const __m128i raw = sse_load(x[ib].qs);
        const __m128i lo = _mm_sub_epi8(_mm_and_si128(raw, m4), eight);
        const __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(raw, 4), m4), eight);
        sse_acc8(acc, d, sse_dot_ss(lo, sse_load(y[ib].qs)), sse_dot_ss(hi, sse_load(y[ib].qs + 16)));
    }
    *s = sse_hsum8(acc[0], acc[1]);
}

SK void dot_q4_1_sse42(int64_t n, float *s, const void *vx, const void *vy) {
    const em_block_q4_1 *x = vx;
    const em_block_q8_1 *y = vy;
    const __m128i m4 = _mm_set1_epi8(0x0f);
    __m128 acc[2] = {_mm_setzero_ps(), _mm_setzero_ps()};
    float summs = 0.0f;
    for (int64_t ib = 0; ib < n / EM_QK4_1; ++ib) {
        summs = fmaf_exact(h2f_sw(x[ib].m), h2f_sw(y[ib].s), summs);
        const float d = h2f_sw(x[ib].d) * h2f_sw(y[ib].d);
        const __m128i raw = sse_load(x[ib].qs);
        sse_acc8(acc, d, sse_dot_us(_mm_and_si128(raw, m4), sse_load(y[ib].qs)),
                 sse_dot_us(_mm_and_si128(_mm_srli_epi16(raw, 4), m4), sse_load(y[ib].qs + 16)));
    }
    *s = sse_hsum8(acc[0], acc[1]) + summs;
}

SK void dot_q5_0_sse42(int64_t n, float *s, const void *vx, const void *vy) {
    const em_block_q5_0 *x = vx;
    const em_block_q8_0 *y = vy;
    const __m128i m4 = _mm_set1_epi8(0x0f), f0 = _mm_set1_epi8((char)0xf0);
    __m128 acc[2] = {_mm_setzero_ps(), _mm_setzero_ps()};
    for (int64_t ib = 0; ib < n / EM_QK5_0; ++ib) {
        const float d = h2f_sw(x[ib].d) * h2f_sw(y[ib].d);
        uint32_t qh;
        memcpy(&qh, x[ib].qh, 4);
        const __m128i raw = sse_load(x[ib].qs);
        const __m128i lo = _mm_or_si128(_mm_and_si128(raw, m4), _mm_andnot_si128(sse_bits16(qh, 0), f0));
        const __m128i hi = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(raw, 4), m4), _mm_andnot_si128(sse_bits16(qh, 16), f0));
        sse_acc8(acc, d, sse_dot_ss(lo, sse_load(y[ib].qs)), sse_dot_ss(hi, sse_load(y[ib].qs + 16)));
    }
    *s = sse_hsum8(acc[0], acc[1]);
}

SK void dot_q5_1_sse42(int64_t n, float *s, const void *vx, const void *vy) {
    const em_block_q5_1 *x = vx;
    const em_block_q8_1 *y = vy;
    const __m128i m4 = _mm_set1_epi8(0x0f), b4 = _mm_set1_epi8(0x10);
    __m128 acc[2] = {_mm_setzero_ps(), _mm_setzero_ps()};
    float summs = 0.0f;
    for (int64_t ib = 0; ib < n / EM_QK5_1; ++ib) {
        summs = fmaf_exact(h2f_sw(x[ib].m), h2f_sw(y[ib].s), summs);
        const float d = h2f_sw(x[ib].d) * h2f_sw(y[ib].d);
        uint32_t qh;
        memcpy(&qh, x[ib].qh, 4);
        const __m128i raw = sse_load(x[ib].qs);
        const __m128i lo = _mm_or_si128(_mm_and_si128(raw, m4), _mm_and_si128(sse_bits16(qh, 0), b4));
        const __m128i hi = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(raw, 4), m4), _mm_and_si128(sse_bits16(qh, 16), b4));
        sse_acc8(acc, d, sse_dot_us(lo, sse_load(y[ib].qs)), sse_dot_us(hi, sse_load(y[ib].qs + 16)));
    }
    *s = sse_hsum8(acc[0], acc[1]) + summs;
}

/* ---- sse42 K-quants ---------------------------------------------------------------------
 * As in quants_x86_avx2.inc: the integer part of a super-block as 8 int32 lanes (here lo:
 * lanes 0-3, hi: lanes 4-7), shared by vec_dot, the tiled matmul and the repacked kernels. */

/* int16 scale s[c] (low 8 int16) and s[c+1] (high 8 int16) of 16 scale bytes */
SF void sse_scale_pair(__m128i sc8, int c, int is_signed, __m128i *lo, __m128i *hi) {
    const __m128i b = _mm_shuffle_epi8(sc8, _mm_set_epi8((char)(c + 1), (char)(c + 1), (char)(c + 1), (char)(c + 1),
                                                         (char)(c + 1), (char)(c + 1), (char)(c + 1), (char)(c + 1),
                                                         (char)c, (char)c, (char)c, (char)c, (char)c, (char)c, (char)c, (char)c));
    *lo = is_signed ? _mm_cvtepi8_epi16(b) : _mm_cvtepu8_epi16(b);
    *hi = is_signed ? _mm_cvtepi8_epi16(_mm_srli_si128(b, 8)) : _mm_cvtepu8_epi16(_mm_srli_si128(b, 8));
}

/* Q2_K: sum of (scale & 15) * q * q8 */
SF void sse_q2k_lanes(const em_block_q2_K *x, const int8_t *q8, __m128i *plo, __m128i *phi) {
    const __m128i m3 = _mm_set1_epi8(3);
    const __m128i sc8 = _mm_and_si128(sse_load(x->scales), _mm_set1_epi8(0x0f));
    __m128i lo = _mm_setzero_si128(), hi = _mm_setzero_si128();
    EM_UNROLL
    for (int j = 0; j < 2; ++j) {
        const __m128i bl = sse_load(x->qs + 32 * j), bh = sse_load(x->qs + 32 * j + 16);
        EM_UNROLL
        for (int t = 0; t < 4; ++t) {
            const int c = 4 * j + t;
            __m128i scl, sch;
            sse_scale_pair(sc8, 2 * c, 0, &scl, &sch);
            const __m128i ql = _mm_and_si128(_mm_srli_epi16(bl, 2 * t), m3);
            const __m128i qh = _mm_and_si128(_mm_srli_epi16(bh, 2 * t), m3);
            lo = _mm_add_epi32(lo, _mm_madd_epi16(_mm_maddubs_epi16(ql, sse_load(q8 + 32 * c)), scl));
            hi = _mm_add_epi32(hi, _mm_madd_epi16(_mm_maddubs_epi16(qh, sse_load(q8 + 32 * c + 16)), sch));
        }
    }
    *plo = lo;
    *phi = hi;
}

/* Q2_K mins: lane k = min 2k * bsum 2k + min 2k+1 * bsum 2k+1 */
SF void sse_q2k_mins(const em_block_q2_K *x, const int16_t *bsums, __m128i *lo, __m128i *hi) {
    const __m128i mn8 = _mm_and_si128(_mm_srli_epi16(sse_load(x->scales), 4), _mm_set1_epi8(0x0f));
    *lo = _mm_madd_epi16(_mm_cvtepu8_epi16(mn8), sse_load(bsums));
    *hi = _mm_madd_epi16(_mm_cvtepu8_epi16(_mm_srli_si128(mn8, 8)), sse_load(bsums + 8));
}

/* Q3_K: sum of (scale - 32) * q * q8, q in -4..3 */
SF void sse_q3k_lanes(const em_block_q3_K *x, const int8_t *q8, __m128i *plo, __m128i *phi) {
    const __m128i m3 = _mm_set1_epi8(3), four = _mm_set1_epi8(4), zero = _mm_setzero_si128();
    uint32_t a[3];
    memcpy(a, x->scales, 12);
    const uint32_t k4 = 0x0f0f0f0fu, k2 = 0x03030303u;
    const __m128i sc8 = _mm_sub_epi8(_mm_set_epi32((int)(((a[1] >> 4) & k4) | (((a[2] >> 6) & k2) << 4)),
                                                   (int)(((a[0] >> 4) & k4) | (((a[2] >> 4) & k2) << 4)),
                                                   (int)((a[1] & k4) | (((a[2] >> 2) & k2) << 4)),
                                                   (int)((a[0] & k4) | ((a[2] & k2) << 4))),
                                     _mm_set1_epi8(32));
    const __m128i hml = sse_load(x->hmask), hmh = sse_load(x->hmask + 16);
    __m128i lo = _mm_setzero_si128(), hi = _mm_setzero_si128();
    EM_UNROLL
    for (int j = 0; j < 2; ++j) {
        const __m128i bl = sse_load(x->qs + 32 * j), bh = sse_load(x->qs + 32 * j + 16);
        EM_UNROLL
        for (int t = 0; t < 4; ++t) {
            const int c = 4 * j + t;
            const __m128i bit = _mm_set1_epi8((char)(1u << c));
            __m128i scl, sch;
            sse_scale_pair(sc8, 2 * c, 1, &scl, &sch);
            const __m128i ql = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(bl, 2 * t), m3),
                                            _mm_and_si128(_mm_cmpeq_epi8(_mm_and_si128(hml, bit), zero), four));
            const __m128i qh = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(bh, 2 * t), m3),
                                            _mm_and_si128(_mm_cmpeq_epi8(_mm_and_si128(hmh, bit), zero), four));
            const __m128i pl = _mm_maddubs_epi16(_mm_abs_epi8(ql), _mm_sign_epi8(sse_load(q8 + 32 * c), ql));
            const __m128i ph = _mm_maddubs_epi16(_mm_abs_epi8(qh), _mm_sign_epi8(sse_load(q8 + 32 * c + 16), qh));
            lo = _mm_add_epi32(lo, _mm_madd_epi16(pl, scl));
            hi = _mm_add_epi32(hi, _mm_madd_epi16(ph, sch));
        }
    }
    *plo = lo;
    *phi = hi;
}

/* Q4_K/Q5_K: 8 scales and 8 mins (get_scale_min_k4) */
static inline void k4_scales_sw(const uint8_t q[12], uint8_t sc[8], uint8_t m[8]) {
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
SF __m128i sse_k4_mins(const uint8_t m[8], const int16_t *bsums) {
    int64_t m64;
    memcpy(&m64, m, 8);
    const __m128i pairs = _mm_hadd_epi16(sse_load(bsums), sse_load(bsums + 8));
    return _mm_madd_epi16(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(m64)), pairs);
}

/* Q4_K (h NULL) and Q5_K: sum of scale * q * q8 for each pair of chunks (elements 64j..64j+63)
 * apart: lo[j], hi[j] */
SF void sse_k4_lanes(const uint8_t *qs, const uint8_t *h, const uint8_t sc[8], const int8_t *q8,
                     __m128i lo[4], __m128i hi[4]) {
    const __m128i m4 = _mm_set1_epi8(0x0f), b4 = _mm_set1_epi8(0x10);
    __m128i hl = _mm_setzero_si128(), hh = _mm_setzero_si128();
    if (h) { hl = sse_load(h); hh = sse_load(h + 16); }
    EM_UNROLL
    for (int j = 0; j < 4; ++j) {
        const __m128i bl = sse_load(qs + 32 * j), bh = sse_load(qs + 32 * j + 16);
        lo[j] = _mm_setzero_si128();
        hi[j] = _mm_setzero_si128();
        EM_UNROLL
        for (int half = 0; half < 2; ++half) {
            const int c = 2 * j + half;
            __m128i ql = _mm_and_si128(half ? _mm_srli_epi16(bl, 4) : bl, m4);
            __m128i qh = _mm_and_si128(half ? _mm_srli_epi16(bh, 4) : bh, m4);
            if (h) {
                const __m128i bit = _mm_set1_epi8((char)(1u << c));
                ql = _mm_or_si128(ql, _mm_and_si128(_mm_cmpeq_epi8(_mm_and_si128(hl, bit), bit), b4));
                qh = _mm_or_si128(qh, _mm_and_si128(_mm_cmpeq_epi8(_mm_and_si128(hh, bit), bit), b4));
            }
            const __m128i scale = _mm_set1_epi16(sc[c]);
            lo[j] = _mm_add_epi32(lo[j], _mm_madd_epi16(_mm_maddubs_epi16(ql, sse_load(q8 + 32 * c)), scale));
            hi[j] = _mm_add_epi32(hi[j], _mm_madd_epi16(_mm_maddubs_epi16(qh, sse_load(q8 + 32 * c + 16)), scale));
        }
    }
}

SF __m128i sse_sum4(const __m128i v[4]) { return _mm_add_epi32(_mm_add_epi32(v[0], v[1]), _mm_add_epi32(v[2], v[3])); }

/* Q6_K: sum of scale * q * q8 with q the raw 6 bits (centered = 0) or q - 32 (centered = 1) */
SF void sse_q6k_lanes(const em_block_q6_K *x, const int8_t *q8, int centered, __m128i *plo, __m128i *phi) {
    const __m128i m4 = _mm_set1_epi8(0x0f), m30 = _mm_set1_epi8(0x30), c32 = _mm_set1_epi8(32);
    const __m128i sc8 = sse_load(x->scales);
    __m128i acc[2] = {_mm_setzero_si128(), _mm_setzero_si128()};
    EM_UNROLL
    for (int j = 0; j < 2; ++j)
        EM_UNROLL
        for (int half = 0; half < 2; ++half) {   /* bytes 0-15, then 16-31 of each 32 */
            const int o = 16 * half;
            const __m128i l0 = sse_load(x->ql + 64 * j + o), l1 = sse_load(x->ql + 64 * j + 32 + o);
            const __m128i h = sse_load(x->qh + 32 * j + o);
            __m128i q[4];
            q[0] = _mm_or_si128(_mm_and_si128(l0, m4), _mm_and_si128(_mm_slli_epi16(h, 4), m30));
            q[1] = _mm_or_si128(_mm_and_si128(l1, m4), _mm_and_si128(_mm_slli_epi16(h, 2), m30));
            q[2] = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(l0, 4), m4), _mm_and_si128(h, m30));
            q[3] = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(l1, 4), m4), _mm_and_si128(_mm_srli_epi16(h, 2), m30));
            EM_UNROLL
            for (int t = 0; t < 4; ++t) {
                __m128i scl, sch;
                sse_scale_pair(sc8, 2 * (4 * j + t), 1, &scl, &sch);
                const __m128i y8 = sse_load(q8 + 128 * j + 32 * t + o);
                __m128i p;
                if (centered) {
                    const __m128i qc = _mm_sub_epi8(q[t], c32);
                    p = _mm_maddubs_epi16(_mm_abs_epi8(qc), _mm_sign_epi8(y8, qc));
                } else {
                    p = _mm_maddubs_epi16(q[t], y8);
                }
                acc[half] = _mm_add_epi32(acc[half], _mm_madd_epi16(p, half ? sch : scl));
            }
        }
    *plo = acc[0];
    *phi = acc[1];
}

SK void dot_q2_K_sse42(int64_t n, float *s, const void *vx, const void *vy) {
    const em_block_q2_K *x = vx;
    const em_block_q8_K *y = vy;
    __m128 acc[2] = {_mm_setzero_ps(), _mm_setzero_ps()};
    for (int64_t ib = 0; ib < n / EM_QK_K; ++ib) {
        const float d = y[ib].d * h2f_sw(x[ib].d);
        const float dmin = -y[ib].d * h2f_sw(x[ib].dmin);
        __m128i lo, hi;
        sse_q2k_mins(&x[ib], y[ib].bsums, &lo, &hi);
        sse_acc8(acc, dmin, lo, hi);
        sse_q2k_lanes(&x[ib], y[ib].qs, &lo, &hi);
        sse_acc8(acc, d, lo, hi);
    }
    *s = sse_hsum8(acc[0], acc[1]);
}

SK void dot_q3_K_sse42(int64_t n, float *s, const void *vx, const void *vy) {
    const em_block_q3_K *x = vx;
    const em_block_q8_K *y = vy;
    __m128 acc[2] = {_mm_setzero_ps(), _mm_setzero_ps()};
    for (int64_t ib = 0; ib < n / EM_QK_K; ++ib) {
        const float d = y[ib].d * h2f_sw(x[ib].d);
        __m128i lo, hi;
        sse_q3k_lanes(&x[ib], y[ib].qs, &lo, &hi);
        sse_acc8(acc, d, lo, hi);
    }
    *s = sse_hsum8(acc[0], acc[1]);
}

SK void dot_q4_K_sse42(int64_t n, float *s, const void *vx, const void *vy) {
    const em_block_q4_K *x = vx;
    const em_block_q8_K *y = vy;
    __m128 acc[2] = {_mm_setzero_ps(), _mm_setzero_ps()};
    __m128 acc_m = _mm_setzero_ps();
    for (int64_t ib = 0; ib < n / EM_QK_K; ++ib) {
        const float d = y[ib].d * h2f_sw(x[ib].d);
        const float dmin = -y[ib].d * h2f_sw(x[ib].dmin);
        uint8_t sc[8], m[8];
        k4_scales_sw(x[ib].scales, sc, m);
        acc_m = sse_fma_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(sse_k4_mins(m, y[ib].bsums)), acc_m);
        __m128i lo[4], hi[4];
        sse_k4_lanes(x[ib].qs, NULL, sc, y[ib].qs, lo, hi);
        sse_acc8(acc, d, sse_sum4(lo), sse_sum4(hi));
    }
    const __m128 m2 = _mm_add_ps(acc_m, _mm_movehl_ps(acc_m, acc_m));
    *s = sse_hsum8(acc[0], acc[1]) + _mm_cvtss_f32(_mm_add_ss(m2, _mm_movehdup_ps(m2)));
}

SK void dot_q5_K_sse42(int64_t n, float *s, const void *vx, const void *vy) {
    const em_block_q5_K *x = vx;
    const em_block_q8_K *y = vy;
    __m128 acc[2] = {_mm_setzero_ps(), _mm_setzero_ps()};
    float summs = 0.0f;
    for (int64_t ib = 0; ib < n / EM_QK_K; ++ib) {
        const float d = y[ib].d * h2f_sw(x[ib].d);
        const float dmin = -y[ib].d * h2f_sw(x[ib].dmin);
        uint8_t sc[8], m[8];
        k4_scales_sw(x[ib].scales, sc, m);
        summs = fmaf_exact(dmin, (float)sse_hsum_i32(sse_k4_mins(m, y[ib].bsums)), summs);
        __m128i lo[4], hi[4];
        sse_k4_lanes(x[ib].qs, x[ib].qh, sc, y[ib].qs, lo, hi);
        sse_acc8(acc, d, sse_sum4(lo), sse_sum4(hi));
    }
    *s = sse_hsum8(acc[0], acc[1]) + summs;
}

SK void dot_q6_K_sse42(int64_t n, float *s, const void *vx, const void *vy) {
    const em_block_q6_K *x = vx;
    const em_block_q8_K *y = vy;
    __m128 acc[2] = {_mm_setzero_ps(), _mm_setzero_ps()};
    for (int64_t ib = 0; ib < n / EM_QK_K; ++ib) {
        const float d = y[ib].d * h2f_sw(x[ib].d);
        const __m128i sc8 = sse_load(x[ib].scales);
        __m128i lo, hi;
        sse_q6k_lanes(&x[ib], y[ib].qs, 0, &lo, &hi);
        /* the -32 offset through the bsums, paired as lane k <-> sub-blocks 2k, 2k+1 */
        const __m128i offl = _mm_madd_epi16(sse_load(y[ib].bsums), _mm_cvtepi8_epi16(sc8));
        const __m128i offh = _mm_madd_epi16(sse_load(y[ib].bsums + 8), _mm_cvtepi8_epi16(_mm_srli_si128(sc8, 8)));
        sse_acc8(acc, d, _mm_sub_epi32(lo, _mm_slli_epi32(offl, 5)), _mm_sub_epi32(hi, _mm_slli_epi32(offh, 5)));
    }
    *s = sse_hsum8(acc[0], acc[1]);
}

/* ---- sse42 tiled K-quant matmul and repacked kernels (see quants_x86_avx2.inc) ---------- */

static inline float tiled_step_sw(float c, int32_t isum, float dw, int has_min, float dmin, int32_t msum, float da) {
    float r = (float)isum * dw;
    if (has_min) r = fmaf_exact(-dmin, (float)msum, r);
    return fmaf_exact(r, da, c);
}

SF int32_t sse_hsum_lh(__m128i lo, __m128i hi) { return sse_hsum_i32(_mm_add_epi32(lo, hi)); }

SK void tiled_q2_K_sse42(int64_t n, float *s, const void *vx, const void *vy) {
    const em_block_q2_K *x = vx;
    const em_block_q8_K *y = vy;
    float c = 0.0f;
    for (int64_t ib = 0; ib < n / EM_QK_K; ++ib) {
        __m128i lo, hi, mlo, mhi;
        sse_q2k_lanes(&x[ib], y[ib].qs, &lo, &hi);
        sse_q2k_mins(&x[ib], y[ib].bsums, &mlo, &mhi);
        c = tiled_step_sw(c, sse_hsum_lh(lo, hi), h2f_sw(x[ib].d), 1, h2f_sw(x[ib].dmin), sse_hsum_lh(mlo, mhi), y[ib].d);
    }
    *s = c;
}

SK void tiled_q3_K_sse42(int64_t n, float *s, const void *vx, const void *vy) {
    const em_block_q3_K *x = vx;
    const em_block_q8_K *y = vy;
    float c = 0.0f;
    for (int64_t ib = 0; ib < n / EM_QK_K; ++ib) {
        __m128i lo, hi;
        sse_q3k_lanes(&x[ib], y[ib].qs, &lo, &hi);
        c = tiled_step_sw(c, sse_hsum_lh(lo, hi), h2f_sw(x[ib].d), 0, 0.0f, 0, y[ib].d);
    }
    *s = c;
}

SF float sse_tiled_k45(float c, const uint8_t *qs, const uint8_t *qh, const uint8_t scales[12], em_fp16 d, em_fp16 dmin,
                       const em_block_q8_K *y) {
    uint8_t sc[8], m[8];
    k4_scales_sw(scales, sc, m);
    __m128i lo[4], hi[4];
    sse_k4_lanes(qs, qh, sc, y->qs, lo, hi);
    return tiled_step_sw(c, sse_hsum_lh(sse_sum4(lo), sse_sum4(hi)), h2f_sw(d), 1, h2f_sw(dmin),
                         sse_hsum_i32(sse_k4_mins(m, y->bsums)), y->d);
}

SK void tiled_q4_K_sse42(int64_t n, float *s, const void *vx, const void *vy) {
    const em_block_q4_K *x = vx;
    const em_block_q8_K *y = vy;
    float c = 0.0f;
    for (int64_t ib = 0; ib < n / EM_QK_K; ++ib)
        c = sse_tiled_k45(c, x[ib].qs, NULL, x[ib].scales, x[ib].d, x[ib].dmin, &y[ib]);
    *s = c;
}

SK void tiled_q5_K_sse42(int64_t n, float *s, const void *vx, const void *vy) {
    const em_block_q5_K *x = vx;
    const em_block_q8_K *y = vy;
    float c = 0.0f;
    for (int64_t ib = 0; ib < n / EM_QK_K; ++ib)
        c = sse_tiled_k45(c, x[ib].qs, x[ib].qh, x[ib].scales, x[ib].d, x[ib].dmin, &y[ib]);
    *s = c;
}

SK void tiled_q6_K_sse42(int64_t n, float *s, const void *vx, const void *vy) {
    const em_block_q6_K *x = vx;
    const em_block_q8_K *y = vy;
    float c = 0.0f;
    for (int64_t ib = 0; ib < n / EM_QK_K; ++ib) {
        __m128i lo, hi;
        sse_q6k_lanes(&x[ib], y[ib].qs, 1, &lo, &hi);
        c = tiled_step_sw(c, sse_hsum_lh(lo, hi), h2f_sw(x[ib].d), 0, 0.0f, 0, y[ib].d);
    }
    *s = c;
}

SK void repack_q4_0_sse42(int64_t n, float *s, const void *vx, const void *vy) {
    const em_block_q4_0 *x = vx;
    const em_block_q8_0 *y = vy;
    const __m128i m4 = _mm_set1_epi8(0x0f), eight = _mm_set1_epi8(8);
    float c = 0.0f;
    for (int64_t ib = 0; ib < n / EM_QK4_0; ++ib) {
        const __m128i raw = sse_load(x[ib].qs);
        const __m128i lo = _mm_sub_epi8(_mm_and_si128(raw, m4), eight);
        const __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(raw, 4), m4), eight);
        const int32_t isum = sse_hsum_lh(sse_dot_ss(lo, sse_load(y[ib].qs)), sse_dot_ss(hi, sse_load(y[ib].qs + 16)));
        c = fmaf_exact((float)isum, h2f_sw(x[ib].d) * h2f_sw(y[ib].d), c);
    }
    *s = c;
}

SF void sse_repack_q4_K(int64_t n, float *s, const void *vx, const void *vy, int per64) {
    const em_block_q4_K *x = vx;
    const em_block_q8_K *y = vy;
    float acc = 0.0f, accm = 0.0f;
    for (int64_t ib = 0; ib < n / EM_QK_K; ++ib) {
        const float d = h2f_sw(x[ib].d) * y[ib].d, dmin = h2f_sw(x[ib].dmin) * y[ib].d;
        uint8_t sc[8], m[8];
        k4_scales_sw(x[ib].scales, sc, m);
        const __m128i mins = sse_k4_mins(m, y[ib].bsums);
        __m128i lo[4], hi[4];
        sse_k4_lanes(x[ib].qs, NULL, sc, y[ib].qs, lo, hi);
        if (per64) {
            int32_t mm[4];
            _mm_storeu_si128((__m128i *)(void *)mm, mins);
            for (int j = 0; j < 4; ++j) {
                acc = fmaf_exact((float)sse_hsum_lh(lo[j], hi[j]), d, acc);
                accm = fmaf_exact((float)mm[j], dmin, accm);
            }
        } else {
            acc = fmaf_exact((float)sse_hsum_lh(sse_sum4(lo), sse_sum4(hi)), d, acc);
            accm = fmaf_exact((float)sse_hsum_i32(mins), dmin, accm);
        }
    }
    *s = acc - accm;
}
SK void repack_q4_K_gemv_sse42(int64_t n, float *s, const void *vx, const void *vy) { sse_repack_q4_K(n, s, vx, vy, 0); }
SK void repack_q4_K_gemm_sse42(int64_t n, float *s, const void *vx, const void *vy) { sse_repack_q4_K(n, s, vx, vy, 1); }

/* ---- sse42 float types ---------------------------------------------------------------- */

/* 4 halves (in the low 16 bits of 32-bit lanes) to floats, as em_fp16_to_fp32 */
SF __m128 sse_h2f4(__m128i h) {
    const __m128i em = _mm_and_si128(h, _mm_set1_epi32(0x7fff));
    const __m128i man13 = _mm_slli_epi32(_mm_and_si128(h, _mm_set1_epi32(0x3ff)), 13);
    const __m128i normal = _mm_add_epi32(_mm_slli_epi32(em, 13), _mm_set1_epi32(0x38000000));
    const __m128i quiet = _mm_andnot_si128(_mm_cmpeq_epi32(man13, _mm_setzero_si128()), _mm_set1_epi32(0x400000));
    const __m128i special = _mm_or_si128(_mm_or_si128(man13, quiet), _mm_set1_epi32(0x7f800000));
    const __m128i tiny = _mm_castps_si128(_mm_mul_ps(_mm_cvtepi32_ps(em), _mm_set1_ps(0x1p-24f)));
    __m128i r = _mm_blendv_epi8(normal, special, _mm_cmpgt_epi32(em, _mm_set1_epi32(0x7bff)));
    r = _mm_blendv_epi8(r, tiny, _mm_cmplt_epi32(em, _mm_set1_epi32(0x400)));
    return _mm_castsi128_ps(_mm_or_si128(r, _mm_slli_epi32(_mm_and_si128(h, _mm_set1_epi32(0x8000)), 16)));
}

/* 16 floats of element i of a row of type f32 (is16 = 0) or f16 (is16 = 1) */
SF void sse_load16(const void *p, int64_t i, int is16, __m128 v[4]) {
    EM_UNROLL
    for (int q = 0; q < 4; ++q)
        v[q] = is16 ? sse_h2f4(_mm_cvtepu16_epi32(_mm_loadl_epi64((const __m128i *)(const void *)((const em_fp16 *)p + i + 4 * q))))
                    : _mm_loadu_ps((const float *)p + i + 4 * q);
}

SF float sse_hsum16(const __m128 a[4]) {
    /* em_hsum16: lanes i + 8 onto lanes i, then the 8-lane order */
    return sse_hsum8(_mm_add_ps(a[2], a[0]), _mm_add_ps(a[3], a[1]));
}

/* the 4 x 16 lane body of the F32 and F16 dots; returns the reduced sum */
SF float sse_dot_4x16(const void *x, const void *y, int64_t np, int is16) {
    __m128 acc[4][4];
    EM_UNROLL
    for (int j = 0; j < 4; ++j)
        EM_UNROLL
        for (int q = 0; q < 4; ++q) acc[j][q] = _mm_setzero_ps();
    for (int64_t i = 0; i < np; i += 64)
        EM_UNROLL
        for (int j = 0; j < 4; ++j) {
            __m128 vx[4], vy[4];
            sse_load16(x, i + 16 * j, is16, vx);
            sse_load16(y, i + 16 * j, is16, vy);
            EM_UNROLL
            for (int q = 0; q < 4; ++q) acc[j][q] = sse_fma_ps(vx[q], vy[q], acc[j][q]);
        }
    EM_UNROLL
    for (int q = 0; q < 4; ++q) {
        acc[0][q] = _mm_add_ps(acc[0][q], acc[2][q]);
        acc[1][q] = _mm_add_ps(acc[1][q], acc[3][q]);
    }
    EM_UNROLL
    for (int q = 0; q < 4; ++q) acc[0][q] = _mm_add_ps(acc[0][q], acc[1][q]);
    return sse_hsum16(acc[0]);
}

SK void dot_f32_sse42(int64_t n, float *s, const void *vx, const void *vy) {
    const float *x = vx, *y = vy;
    const int64_t np = n & ~(int64_t)63;
    float sum = sse_dot_4x16(vx, vy, np, 0);
    const int64_t nfused = (n - np) & 3;
    for (int64_t i = np; i < n - nfused; ++i) sum += x[i] * y[i];
    for (int64_t i = n - nfused; i < n; ++i) sum = fmaf_exact(x[i], y[i], sum);
    *s = sum;
}

SK void dot_f16_sse42(int64_t n, float *s, const void *vx, const void *vy) {
    const em_fp16 *x = vx, *y = vy;
    const int64_t np = n & ~(int64_t)63;
    double sum = (double)sse_dot_4x16(vx, vy, np, 1);
    for (int64_t i = np; i < n; ++i) sum += (double)(h2f_sw(x[i]) * h2f_sw(y[i]));
    *s = (float)sum;
}

SK void sgemm_f32_sse42(int64_t n, float *s, const void *vx, const void *vy) {
    if (n % 16 != 0) { dot_f32_sse42(n, s, vx, vy); return; }
    __m128 acc[4] = {_mm_setzero_ps(), _mm_setzero_ps(), _mm_setzero_ps(), _mm_setzero_ps()};
    for (int64_t k = 0; k < n; k += 16) {
        __m128 a[4], b[4];
        sse_load16(vx, k, 0, a);
        sse_load16(vy, k, 0, b);
        EM_UNROLL
        for (int q = 0; q < 4; ++q) acc[q] = sse_fma_ps(a[q], b[q], acc[q]);
    }
    *s = sse_hsum16(acc);
}

SK void sgemm_f16_sse42(int64_t n, float *s, const void *vx, const void *vy) {
    if (n % 16 != 0) { dot_f16_sse42(n, s, vx, vy); return; }
    __m128 acc[4] = {_mm_setzero_ps(), _mm_setzero_ps(), _mm_setzero_ps(), _mm_setzero_ps()};
    for (int64_t k = 0; k < n; k += 16) {
        __m128 a[4], b[4];
        sse_load16(vx, k, 1, a);
        sse_load16(vy, k, 1, b);
        EM_UNROLL
        for (int q = 0; q < 4; ++q) acc[q] = sse_fma_ps(a[q], b[q], acc[q]);
    }
    *s = sse_hsum16(acc);
}

/* BF16 (vdpbf16ps semantics, see quants.c): subnormal inputs and results are zero */
SF __m128 sse_daz(__m128 v) {
    const __m128i b = _mm_castps_si128(v);
    const __m128i tiny = _mm_cmpeq_epi32(_mm_and_si128(b, _mm_set1_epi32(0x7f800000)), _mm_setzero_si128());
    return _mm_castsi128_ps(_mm_andnot_si128(_mm_and_si128(tiny, _mm_set1_epi32(0x7fffffff)), b));
}
/* acc lanes l = 0..3 take the pairs (2l, 2l+1) of the 8 bf16 at x, y: odd element first */
SF __m128 sse_bf16_pairs(__m128 acc, const em_bf16 *x, const em_bf16 *y) {
    const __m128i hi = _mm_set1_epi32((int)0xffff0000u);
    const __m128i vx = sse_load(x), vy = sse_load(y);
    acc = sse_daz(sse_fma_ps(sse_daz(_mm_castsi128_ps(_mm_and_si128(vx, hi))),
                             sse_daz(_mm_castsi128_ps(_mm_and_si128(vy, hi))), acc));
    return sse_daz(sse_fma_ps(sse_daz(_mm_castsi128_ps(_mm_slli_epi32(vx, 16))),
                              sse_daz(_mm_castsi128_ps(_mm_slli_epi32(vy, 16))), acc));
}

SK void dot_bf16_sse42(int64_t n, float *s, const void *vx, const void *vy) {
    const em_bf16 *x = vx, *y = vy;
    __m128 c[2][4];
    EM_UNROLL
    for (int h = 0; h < 2; ++h)
        EM_UNROLL
        for (int q = 0; q < 4; ++q) c[h][q] = _mm_setzero_ps();
    int64_t i = 0;
    for (; i + 64 <= n; i += 64)
        EM_UNROLL
        for (int h = 0; h < 2; ++h)
            EM_UNROLL
            for (int q = 0; q < 4; ++q) c[h][q] = sse_bf16_pairs(c[h][q], x + i + 32 * h + 8 * q, y + i + 32 * h + 8 * q);
    double sum = 0.0;
    sum += (double)sse_hsum16(c[0]);
    sum += (double)sse_hsum16(c[1]);
    for (; i < n; ++i) sum += (double)(em_bf16_to_fp32(x[i]) * em_bf16_to_fp32(y[i]));
    *s = (float)sum;
}

SK void sgemm_bf16_sse42(int64_t n, float *s, const void *vx, const void *vy) {
    if (n % 32 != 0) { dot_bf16_sse42(n, s, vx, vy); return; }
    const em_bf16 *x = vx, *y = vy;
    __m128 acc[4] = {_mm_setzero_ps(), _mm_setzero_ps(), _mm_setzero_ps(), _mm_setzero_ps()};
    for (int64_t k = 0; k < n; k += 32)
        EM_UNROLL
        for (int q = 0; q < 4; ++q) acc[q] = sse_bf16_pairs(acc[q], x + k + 8 * q, y + k + 8 * q);
    *s = sse_hsum16(acc);
}


/* ======================================================================================
 * avx2, avxvnni, avx512: the 256-bit kernels
 * ====================================================================================== */

#define KSUF avx2
#define KTARGET __attribute__((target("avx2,fma,f16c")))
#define KVNNI 0
#include "quants_x86_avx2.inc"
#undef KSUF
#undef KTARGET
#undef KVNNI

#define KSUF avxvnni
#define KTARGET __attribute__((target("avx2,fma,f16c,avxvnni")))
#define KVNNI 1
#include "quants_x86_avx2.inc"
#undef KSUF
#undef KTARGET
#undef KVNNI

#define AVX512_TARGET "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni"
#define KSUF avx512
#define KTARGET __attribute__((target(AVX512_TARGET)))
#define KVNNI 2
#include "quants_x86_avx2.inc"
#undef KSUF
#undef KTARGET
#undef KVNNI

/* ======================================================================================
 * avx512: 512-bit float dots (the reference's own 4 x 16 shape, one register per accumulator)
 * ====================================================================================== */

#define ZF static inline __attribute__((always_inline)) __attribute__((target(AVX512_TARGET)))
#define ZK static __attribute__((target(AVX512_TARGET)))

/* em_hsum16 */
ZF float z_hsum16(__m512 a) {
    return hsum8_avx512(_mm256_add_ps(_mm512_extractf32x8_ps(a, 1), _mm512_castps512_ps256(a)));
}

ZF float z_reduce_4x16(__m512 a0, __m512 a1, __m512 a2, __m512 a3) {
    a0 = _mm512_add_ps(a0, a2);
    a1 = _mm512_add_ps(a1, a3);
    return z_hsum16(_mm512_add_ps(a0, a1));
}

ZK void dot_f32_z(int64_t n, float *s, const void *vx, const void *vy) {
    const float *x = vx, *y = vy;
    __m512 a[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    const int64_t np = n & ~(int64_t)63;
    for (int64_t i = 0; i < np; i += 64)
        EM_UNROLL
        for (int j = 0; j < 4; ++j)
            a[j] = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 16 * j), _mm512_loadu_ps(y + i + 16 * j), a[j]);
    float sum = z_reduce_4x16(a[0], a[1], a[2], a[3]);
    const int64_t nfused = (n - np) & 3;
    for (int64_t i = np; i < n - nfused; ++i) sum += x[i] * y[i];
    for (int64_t i = n - nfused; i < n; ++i) sum = fmaf_avx512(x[i], y[i], sum);
    *s = sum;
}

ZF __m512 z_daz(__m512 v) {
    const __m512i b = _mm512_castps_si512(v);
    const __mmask16 tiny = _mm512_testn_epi32_mask(b, _mm512_set1_epi32(0x7f800000));
    return _mm512_castsi512_ps(_mm512_mask_and_epi32(b, tiny, b, _mm512_set1_epi32((int)0x80000000u)));
}
ZF __m512i z_daz_bf16(__m512i v) {
    const __mmask32 tiny = _mm512_testn_epi16_mask(v, _mm512_set1_epi16(0x7f80));
    return _mm512_mask_blend_epi16(tiny, v, _mm512_and_si512(v, _mm512_set1_epi16((short)0x8000)));
}
/* 16 lanes over 32 bf16: lane l takes the pair (2l, 2l+1), odd element first */
ZF __m512 z_bf16_pairs(__m512 acc, const em_bf16 *px, const em_bf16 *py) {
    const __m512i hi = _mm512_set1_epi32((int)0xffff0000u);
    const __m512i x = z_daz_bf16(_mm512_loadu_si512(px)), y = z_daz_bf16(_mm512_loadu_si512(py));
    acc = z_daz(_mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(x, hi)),
                                _mm512_castsi512_ps(_mm512_and_si512(y, hi)), acc));
    return z_daz(_mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(x, 16)),
                                 _mm512_castsi512_ps(_mm512_slli_epi32(y, 16)), acc));
}

ZK void dot_bf16_z(int64_t n, float *s, const void *vx, const void *vy) {
    const em_bf16 *x = vx, *y = vy;
    __m512 c0 = _mm512_setzero_ps(), c1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        c0 = z_bf16_pairs(c0, x + i, y + i);
        c1 = z_bf16_pairs(c1, x + i + 32, y + i + 32);
    }
    double sum = 0.0;
    sum += (double)z_hsum16(c0);
    sum += (double)z_hsum16(c1);
    for (; i < n; ++i) sum += (double)(em_bf16_to_fp32(x[i]) * em_bf16_to_fp32(y[i]));
    *s = (float)sum;
}

ZK void sgemm_f32_z(int64_t n, float *s, const void *vx, const void *vy) {
    if (n % 16 != 0) { dot_f32_z(n, s, vx, vy); return; }
    const float *x = vx, *y = vy;
    __m512 acc = _mm512_setzero_ps();
    for (int64_t k = 0; k < n; k += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(x + k), _mm512_loadu_ps(y + k), acc);
    *s = z_hsum16(acc);
}

ZK void sgemm_bf16_z(int64_t n, float *s, const void *vx, const void *vy) {
    if (n % 32 != 0) { dot_bf16_z(n, s, vx, vy); return; }
    const em_bf16 *x = vx, *y = vy;
    __m512 acc = _mm512_setzero_ps();
    for (int64_t k = 0; k < n; k += 32) acc = z_bf16_pairs(acc, x + k, y + k);
    *s = z_hsum16(acc);
}

/* With AVX512_BF16 (Cooper Lake, Sapphire Rapids, Zen 4): vdpbf16ps itself, the instruction
 * the reference's BF16 dot and the scalar model are written after. */
#define ZB_TARGET __attribute__((target(AVX512_TARGET ",avx512bf16")))

static inline __attribute__((always_inline)) ZB_TARGET __m512 zb_dp(__m512 acc, const em_bf16 *x, const em_bf16 *y) {
    return _mm512_dpbf16_ps(acc, (__m512bh)_mm512_loadu_si512(x), (__m512bh)_mm512_loadu_si512(y));
}

static ZB_TARGET void dot_bf16_zb(int64_t n, float *s, const void *vx, const void *vy) {
    const em_bf16 *x = vx, *y = vy;
    __m512 c0 = _mm512_setzero_ps(), c1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        c0 = zb_dp(c0, x + i, y + i);
        c1 = zb_dp(c1, x + i + 32, y + i + 32);
    }
    double sum = 0.0;
    sum += (double)z_hsum16(c0);
    sum += (double)z_hsum16(c1);
    for (; i < n; ++i) sum += (double)(em_bf16_to_fp32(x[i]) * em_bf16_to_fp32(y[i]));
    *s = (float)sum;
}

static ZB_TARGET void sgemm_bf16_zb(int64_t n, float *s, const void *vx, const void *vy) {
    if (n % 32 != 0) { dot_bf16_zb(n, s, vx, vy); return; }
    const em_bf16 *x = vx, *y = vy;
    __m512 acc = _mm512_setzero_ps();
    for (int64_t k = 0; k < n; k += 32) acc = zb_dp(acc, x + k, y + k);
    *s = z_hsum16(acc);
}

/* ======================================================================================
 * Tables
 * ====================================================================================== */

#define QUANT_DOTS(SUF)                                                                    \
    [EM_TYPE_Q4_0] = dot_q4_0_##SUF, [EM_TYPE_Q4_1] = dot_q4_1_##SUF,                      \
    [EM_TYPE_Q5_0] = dot_q5_0_##SUF, [EM_TYPE_Q5_1] = dot_q5_1_##SUF,                      \
    [EM_TYPE_Q8_0] = dot_q8_0_##SUF, [EM_TYPE_Q2_K] = dot_q2_K_##SUF,                      \
    [EM_TYPE_Q3_K] = dot_q3_K_##SUF, [EM_TYPE_Q4_K] = dot_q4_K_##SUF,                      \
    [EM_TYPE_Q5_K] = dot_q5_K_##SUF, [EM_TYPE_Q6_K] = dot_q6_K_##SUF
#define FWD_QUANTS_REF                                                                     \
    [EM_TYPE_F32] = fwd_quant_f32, [EM_TYPE_Q4_0] = fwd_quant_q4_0,                        \
    [EM_TYPE_Q4_1] = fwd_quant_q4_1, [EM_TYPE_Q5_0] = fwd_quant_q5_0,                      \
    [EM_TYPE_Q5_1] = fwd_quant_q5_1

#define REPACK_TILED(SUF)                                                                       \
        .repack_gemv = {[EM_TYPE_Q4_0] = repack_q4_0_##SUF, [EM_TYPE_Q4_K] = repack_q4_K_gemv_##SUF}, \
        .repack_gemm = {[EM_TYPE_Q4_0] = repack_q4_0_##SUF, [EM_TYPE_Q4_K] = repack_q4_K_gemm_##SUF}, \
        .tiled = {[EM_TYPE_Q2_K] = tiled_q2_K_##SUF, [EM_TYPE_Q3_K] = tiled_q3_K_##SUF,           \
                  [EM_TYPE_Q4_K] = tiled_q4_K_##SUF, [EM_TYPE_Q5_K] = tiled_q5_K_##SUF,           \
                  [EM_TYPE_Q6_K] = tiled_q6_K_##SUF}

static const em_kernels k_sse42 = {
    .name = "sse42",
    .level = EM_LEVEL_SSE42,
    .vec_dot = {[EM_TYPE_F32] = dot_f32_sse42, [EM_TYPE_F16] = dot_f16_sse42, [EM_TYPE_BF16] = dot_bf16_sse42,
                QUANT_DOTS(sse42)},
    .quantize = {FWD_QUANTS_REF, [EM_TYPE_F16] = fwd_quant_f16, [EM_TYPE_BF16] = fwd_quant_bf16,
                 [EM_TYPE_Q8_0] = fwd_quant_q8_0, [EM_TYPE_Q8_1] = fwd_quant_q8_1, [EM_TYPE_Q8_K] = fwd_quant_q8_K},
    .sgemm = {[EM_TYPE_F32] = sgemm_f32_sse42, [EM_TYPE_F16] = sgemm_f16_sse42, [EM_TYPE_BF16] = sgemm_bf16_sse42,
              QUANT_DOTS(sse42)},
    REPACK_TILED(sse42),
    EM_SCALAR_FORWARD_ENTRIES,
};

#define YMM_TABLE(SUF, LEVEL, F32, F16, BF16, SG32, SG16, SGB16)                               \
    {                                                                                        \
        .name = #SUF,                                                                        \
        .level = LEVEL,                                                                      \
        .vec_dot = {[EM_TYPE_F32] = F32, [EM_TYPE_F16] = F16, [EM_TYPE_BF16] = BF16, QUANT_DOTS(SUF)}, \
        .quantize = {FWD_QUANTS_REF, [EM_TYPE_F16] = quant_f16_##SUF, [EM_TYPE_BF16] = quant_bf16_##SUF, \
                     [EM_TYPE_Q8_0] = quant_q8_0_##SUF, [EM_TYPE_Q8_1] = quant_q8_1_##SUF,      \
                     [EM_TYPE_Q8_K] = quant_q8_K_##SUF},                                     \
        .sgemm = {[EM_TYPE_F32] = SG32, [EM_TYPE_F16] = SG16, [EM_TYPE_BF16] = SGB16, QUANT_DOTS(SUF)}, \
        REPACK_TILED(SUF),                                                                   \
        .attn_dot_vec = attn_dot_vec_##SUF,                                                  \
        .attn_dot_gemm = attn_dot_gemm_##SUF,                                                \
        .attn_softmax = attn_softmax_##SUF,                                                  \
        .swiglu = swiglu_##SUF,                                                              \
        .vec_dot4 = {[EM_TYPE_Q4_0] = dot4_q4_0_##SUF, [EM_TYPE_Q4_1] = dot4_q4_1_##SUF,       \
                     [EM_TYPE_Q5_0] = dot4_q5_0_##SUF, [EM_TYPE_Q5_1] = dot4_q5_1_##SUF,       \
                     [EM_TYPE_Q8_0] = dot4_q8_0_##SUF},                                      \
        .vec_dot_r4 = {[EM_TYPE_Q4_0] = dotr4_q4_0_##SUF, [EM_TYPE_Q4_1] = dotr4_q4_1_##SUF,   \
                       [EM_TYPE_Q5_0] = dotr4_q5_0_##SUF, [EM_TYPE_Q5_1] = dotr4_q5_1_##SUF,   \
                       [EM_TYPE_Q8_0] = dotr4_q8_0_##SUF},                                   \
        .vec_dot4x2 = {[EM_TYPE_Q4_0] = dot4x2_q4_0_##SUF, [EM_TYPE_Q5_0] = dot4x2_q5_0_##SUF,   \
                       [EM_TYPE_Q8_0] = dot4x2_q8_0_##SUF},                                  \
    }

static const em_kernels k_avx2 = YMM_TABLE(avx2, EM_LEVEL_AVX2, dot_f32_avx2, dot_f16_avx2, dot_bf16_avx2,
                                           sgemm_f32_avx2, sgemm_f16_avx2, sgemm_bf16_avx2);
static const em_kernels k_avxvnni = YMM_TABLE(avxvnni, EM_LEVEL_AVXVNNI, dot_f32_avxvnni, dot_f16_avxvnni,
                                              dot_bf16_avxvnni, sgemm_f32_avxvnni, sgemm_f16_avxvnni,
                                              sgemm_bf16_avxvnni);
/* F16 stays 256-bit: converting 16 halves per vcvtph2ps zmm was slower on Sapphire Rapids */
static const em_kernels k_avx512 = YMM_TABLE(avx512, EM_LEVEL_AVX512, dot_f32_z, dot_f16_avx512, dot_bf16_z,
                                             sgemm_f32_z, sgemm_f16_avx512, sgemm_bf16_z);
static const em_kernels k_avx512_bf16 = YMM_TABLE(avx512, EM_LEVEL_AVX512, dot_f32_z, dot_f16_avx512, dot_bf16_zb,
                                                  sgemm_f32_z, sgemm_f16_avx512, sgemm_bf16_zb);

const em_kernels *em_kernels_x86(em_kernel_level level, const em_cpu_features *f) {
    switch (level) {
    case EM_LEVEL_SSE42: return &k_sse42;
    case EM_LEVEL_AVX2: return &k_avx2;
    case EM_LEVEL_AVXVNNI: return &k_avxvnni;
    case EM_LEVEL_AVX512: return f && f->avx512bf16 ? &k_avx512_bf16 : &k_avx512;
    default: return NULL;
    }
}

#else /* not x86-64 with GCC/clang */

const em_kernels *em_kernels_x86(em_kernel_level level, const em_cpu_features *f) {
    (void)level;
    (void)f;
    return NULL;
}

#endif

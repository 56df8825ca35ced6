/* ember_kernels.cl - the device code of ember's OpenCL backend (OpenCL C 1.2).
 *
 * Embedded in the library as a string (embed.cmake, beside this file) and compiled by the
 * device's driver when a context is created (backend_opencl.c). The Adreno variant is this
 * file with adreno.cl (also beside it) in front of it; everything Qualcomm-specific is behind
 * EM_ADRENO and the extension macros, so every OpenCL 1.2 compiler builds both.
 *
 * The numbers follow the CPU path (runtime/src/core/llama.c, quants.c) operation for operation:
 * activations quantized to q8_0/q8_1 blocks as ggml's from_float does it, each dot product
 * in the lane order of the CPU kernel, fused multiply-adds only where the CPU has them
 * (FP_CONTRACT is off), the exponential as the polynomial of ggml_v_expf, fp16 KV cache.
 * Where the CPU sums in double, so does this file when the device has cl_khr_fp64; without
 * it (most mobile GPUs) those sums are compensated float pairs (em_acc below), which round
 * to the same float in all but rare cases.
 * Each output element is computed by one work-item in the CPU's order, so the result does
 * not depend on the work-group size.
 *
 * Kernels (global sizes as backend_opencl.c launches them; t = token of the batch):
 *   em_quant_q8_0 / _q8_1 / _q8_K / _f16   activations -> the vec_dot type       (blocks)
 *   em_mm_<type>      y[t][r] = W[r] . act[t]                                  (ne1, n)
 *   em_rmsnorm        y[t] = x[t] / sqrt(mean(x[t]^2) + eps) * w                  (n)
 *   em_rope           rotate adjacent pairs with a host-made cos/sin table   (pairs, n)
 *   em_kv_store       K (row-major) and V (transposed) into the fp16 caches    (kvd, n)
 *   em_att_scores     scaled, causally masked q.k per cache cell   (n_kv, n_head, cnt)
 *   em_att_softmax    softmax of each score row, rounded to fp16        (n_head, cnt)
 *   em_att_out        probs . V per output dimension                 (hd, n_head, cnt)
 *   em_swiglu         g = silu(g) * u                                         (F, n)
 *   em_add            x = y + x                                                  (n)
 */
#pragma OPENCL FP_CONTRACT OFF

/* Float division and square root as the CPU rounds them (correctly). The host defines
 * EM_EXACT_DIV when the device has CL_FP_CORRECTLY_ROUNDED_DIVIDE_SQRT and the program is
 * built with -cl-fp32-correctly-rounded-divide-sqrt; elsewhere (OpenCL allows 2.5 ulp for a
 * division, 3 for sqrt) the quotient and root are corrected once from their exact residual,
 * which gives the correctly rounded result in all but rare ties. */
#ifdef EM_EXACT_DIV
float em_div(float a, float b) { return a / b; }
float em_sqrt(float x) { return sqrt(x); }
#else
float em_div(float a, float b) {
    const float q = a / b;
    if (q == 0.0f || !isfinite(q)) return q;
    return q + fma(-q, b, a) / b;
}
float em_sqrt(float x) {
    const float r = sqrt(x);
    if (!(x > 0.0f) || isinf(x)) return r;
    return r + fma(-r, r, x) / (2.0f * r);
}
#endif

/* em_acc: the double-precision accumulator of a sum of floats (the CPU sums squares for
 * RMSNorm, exponentials for softmax and some dot tails in double). Without cl_khr_fp64 it is
 * a compensated float pair (hi + lo, error-free additions), whose float result is that of the
 * double sum except when the exact sum lies within ~2^-48 relative of a rounding boundary. */
#if defined(cl_khr_fp64) && !defined(EM_NO_FP64)
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
typedef double em_acc;
em_acc em_acc_from(float v) { return (double)v; }
em_acc em_acc_add(em_acc a, float v) { return a + (double)v; }
float em_acc_float(em_acc a) { return (float)a; }
float em_acc_div(em_acc a, long n) { return (float)(a / (double)n); } /* (float)(a / n) */
float em_acc_inv(em_acc a) { return (float)(1.0 / a); }               /* (float)(1 / a) */
#else
typedef float2 em_acc; /* x: the sum so far, y: its rounding error */
em_acc em_acc_from(float v) { return (float2)(v, 0.0f); }
em_acc em_acc_add(em_acc a, float v) {
    const float s = a.x + v, bb = s - a.x;
    const float e = (a.x - (s - bb)) + (v - bb); /* TwoSum: a.x + v == s + e exactly */
    return (float2)(s, a.y + e);
}
float em_acc_float(em_acc a) { return a.x + a.y; }
float em_acc_div(em_acc a, long n) {
    const float fn = (float)n, q = em_div(a.x, fn);
    return q + (fma(-q, fn, a.x) + a.y) / fn;
}
float em_acc_inv(em_acc a) {
    const float q = em_div(1.0f, a.x);
    return q + (fma(-q, a.x, 1.0f) - q * a.y) * q;
}
#endif

#ifndef EM_MM_ATTR
#define EM_MM_ATTR
#endif

/* ---- scalar helpers ------------------------------------------------------------------- */

float em_h2f(ushort h) {
    const uint s = ((uint)h & 0x8000u) << 16;
    const uint e = ((uint)h >> 10) & 0x1fu;
    const uint m = (uint)h & 0x3ffu;
    if (e == 0u) {
        const float f = (float)m * 0x1p-24f; /* exact: subnormal or zero */
        return s ? -f : f;
    }
    if (e == 31u) return as_float(s | 0x7f800000u | (m << 13));
    return as_float(s | ((e + 112u) << 23) | (m << 13));
}

/* round to nearest even, as em_fp32_to_fp16 */
ushort em_f2h(float f) {
    const uint x = as_uint(f);
    const ushort sign = (ushort)((x >> 16) & 0x8000u);
    const uint ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (ushort)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));
    if (ax >= 0x477ff000u) return (ushort)(sign | 0x7c00u);
    if (ax >= 0x38800000u) {
        const uint r = ax + 0xfffu + ((ax >> 13) & 1u);
        return (ushort)(sign | ((r - 0x38000000u) >> 13));
    }
    const int e = (int)(ax >> 23);
    const int shift = 126 - e;
    if (shift > 24) return sign;
    const uint man = (ax & 0x7fffffu) | 0x800000u;
    uint q = man >> shift;
    const uint rem = man & ((1u << shift) - 1u);
    const uint half_ = 1u << (shift - 1);
    if (rem > half_ || (rem == half_ && (q & 1u))) q++;
    return (ushort)(sign | q);
}

float em_ld16(__global const uchar *p) { return em_h2f((ushort)(p[0] | (p[1] << 8))); }

/* sum of 16 lanes: halves, quarters, pairs (llama.c reduce16) */
float em_reduce16(const float *a) {
    float t[8], u[4];
    for (int i = 0; i < 8; i++) t[i] = a[i + 8] + a[i];
    for (int i = 0; i < 4; i++) u[i] = t[i + 4] + t[i];
    return (u[2] + u[0]) + (u[3] + u[1]);
}

/* quants.c em_hsum16 (the same tree, written as GCC's _mm512_reduce_add_ps adds it) */
float em_hsum16(const float *a) {
    float t8[8], t4[4];
    for (int i = 0; i < 8; i++) t8[i] = a[i + 8] + a[i];
    for (int i = 0; i < 4; i++) t4[i] = t8[i + 4] + t8[i];
    return (t4[0] + t4[2]) + (t4[1] + t4[3]);
}

float em_hsum8(const float *a) { return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7])); }

/* one lane of ggml_v_expf (llama.c em_expf_vec) */
float em_expf_vec(float x) {
    const float shift = 0x1.8p23f;
    const float z = fma(x, 0x1.715476p+0f, shift);
    const float n = z - shift;
    if (isnan(n)) return n;
    if (fabs(n) > 192.0f) return n <= 0.0f ? 0.0f : INFINITY;
    const float b = fma(-n, 0x1.7f7d1cp-20f, fma(-n, 0x1.62e4p-1f, x));
    const float u = b * b;
    const float j = fma(fma(fma(0x1.0e4020p-7f, b, 0x1.573e2ep-5f), u, fma(0x1.555e66p-3f, b, 0x1.fffdb6p-2f)), u,
                        fma(0x1.ffffecp-1f, b, 1.0f));
    return ldexp(j, (int)n);
}

/* ---- activation conversion (ggml-cpu's x86 from_float) -------------------------------- */

/* one block of 32 per work-item; x rows are contiguous, so block g reads x + 32 g */
__kernel void em_quant_q8_0(__global const float *x, __global uchar *y) {
    const size_t g = get_global_id(0);
    __global const float *xb = x + g * 32;
    __global uchar *b = y + g * 34;
    float amax = 0.0f;
    for (int j = 0; j < 32; j++) amax = fmax(amax, fabs(xb[j]));
    const float d = em_div(amax, 127.f);
    const float id = amax != 0.0f ? em_div(127.f, amax) : 0.0f;
    const ushort dh = em_f2h(d);
    b[0] = (uchar)(dh & 0xff);
    b[1] = (uchar)(dh >> 8);
    for (int j = 0; j < 32; j++) b[2 + j] = (uchar)(char)rint(xb[j] * id);
}

__kernel void em_quant_q8_1(__global const float *x, __global uchar *y) {
    const size_t g = get_global_id(0);
    __global const float *xb = x + g * 32;
    __global uchar *b = y + g * 36;
    float amax = 0.0f;
    for (int j = 0; j < 32; j++) amax = fmax(amax, fabs(xb[j]));
    const float d = em_div(amax, 127.f);
    const float id = amax != 0.0f ? em_div(127.f, amax) : 0.0f;
    int sum = 0;
    for (int j = 0; j < 32; j++) {
        const char q = (char)rint(xb[j] * id);
        b[4 + j] = (uchar)q;
        sum += q;
    }
    const ushort dh = em_f2h(d), sh = em_f2h(d * (float)sum);
    b[0] = (uchar)(dh & 0xff);
    b[1] = (uchar)(dh >> 8);
    b[2] = (uchar)(sh & 0xff);
    b[3] = (uchar)(sh >> 8);
}

/* Q8_K (quantize_row_q8_K_ref, which ggml-cpu uses on x86): one block of 256 per work-item.
 * Layout: float d, 256 int8 q, 16 int16 bsums (292 bytes). */
int em_nearest_int(float v) { return (as_int(v + 12582912.f) & 0x007fffff) - 0x00400000; }

__kernel void em_quant_q8_K(__global const float *x, __global uchar *y) {
    const size_t g = get_global_id(0);
    __global const float *xb = x + g * 256;
    __global uchar *b = y + g * 292;
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < 256; j++)
        if (fabs(xb[j]) > amax) { amax = fabs(xb[j]); max = xb[j]; }
    if (amax == 0.0f) {
        for (int j = 0; j < 292; j++) b[j] = 0;
        return;
    }
    const float iscale = em_div(-127.f, max);
    for (int j = 0; j < 256; j++) {
        const int v = em_nearest_int(iscale * xb[j]);
        b[4 + j] = (uchar)(char)(v < 127 ? v : 127);
    }
    for (int k = 0; k < 16; k++) {
        int sum = 0;
        for (int l = 0; l < 16; l++) sum += (int)(char)b[4 + 16 * k + l];
        b[260 + 2 * k] = (uchar)(sum & 0xff);
        b[261 + 2 * k] = (uchar)((sum >> 8) & 0xff);
    }
    const uint d = as_uint(em_div(1.0f, iscale));
    for (int k = 0; k < 4; k++) b[k] = (uchar)((d >> (8 * k)) & 0xff);
}

float em_q8k_d(__global const uchar *b) { return as_float((uint)b[0] | ((uint)b[1] << 8) | ((uint)b[2] << 16) | ((uint)b[3] << 24)); }
int em_q8k_bsum(__global const uchar *b, int k) { return (int)(short)(ushort)(b[260 + 2 * k] | (b[261 + 2 * k] << 8)); }

__kernel void em_quant_f16(__global const float *x, __global ushort *y) {
    const size_t i = get_global_id(0);
    y[i] = em_f2h(x[i]);
}

/* ---- matmuls: one (row, token) per work-item, the CPU kernel's lane order --------------- */

/* Every matmul kernel takes the same arguments. The CPU kernel to mirror is chosen per token
 * as llama.c's matmul() does: k_head for tokens [0, n_head), k_tail after (the em_kernel
 * values of quants.h: 0 vec_dot, 1 sgemm, 2 repack gemv, 3 repack gemm, 5 tiled). */
#define EM_MM_ARGS                                                                            \
    __global const uchar *w, long row_bytes, long ne0, long ne1, __global const uchar *act,   \
        long act_stride, __global float *y, int k_head, int k_tail, long n_head
#define EM_MM_INDEX                                                                           \
    const long r = (long)get_global_id(0), t = (long)get_global_id(1);                        \
    if (r >= ne1) return;                                                                     \
    __global const uchar *row = w + r * row_bytes;                                            \
    __global const uchar *a = act + t * act_stride;                                           \
    const int mode = t < n_head ? k_head : k_tail;
enum { EM_K_VEC_DOT = 0, EM_K_SGEMM = 1, EM_K_REPACK_GEMV = 2, EM_K_REPACK_GEMM = 3, EM_K_TILED = 5 };

/* The 8 integer lanes of a 32-element block (lane k: elements 4k..4k+3) from the products of
 * its two halves; integer sums, so any order gives the same values. */
int8 em_lanes(int16 lo, int16 hi) {
    const int8 plo = lo.even + lo.odd, phi = hi.even + hi.odd;
    return (int8)(plo.even + plo.odd, phi.even + phi.odd);
}

float em_hsum8v(float8 a) { return ((a.s0 + a.s4) + (a.s2 + a.s6)) + ((a.s1 + a.s5) + (a.s3 + a.s7)); }

/* vec_dot_q4_0_q8_0: 8 integer lanes of 4 elements, fma(d, lane) into 8 float lanes.
 * Repack modes: the CPU_REPACK kernels (one exact integer sum per block, c = fma(isum, d, c)) */
__kernel EM_MM_ATTR void em_mm_q4_0(EM_MM_ARGS) {
    EM_MM_INDEX
    const int repack = mode == EM_K_REPACK_GEMV || mode == EM_K_REPACK_GEMM;
    float8 acc = (float8)(0.0f);
    float c = 0.0f;
    for (long ib = 0; ib < ne0 / 32; ib++) {
        __global const uchar *x = row + ib * 18;
        __global const uchar *q = a + ib * 34;
        const float d = em_ld16(x) * em_ld16(q);
        const int16 qs = convert_int16(vload16(0, x + 2));
        const int16 y0 = convert_int16(vload16(0, (__global const char *)(q + 2)));
        const int16 y1 = convert_int16(vload16(0, (__global const char *)(q + 18)));
        const int8 lane = em_lanes(((qs & 0x0f) - 8) * y0, ((qs >> 4) - 8) * y1);
        if (repack) {
            c = fma((float)((((lane.s0 + lane.s1) + (lane.s2 + lane.s3)) + ((lane.s4 + lane.s5) + (lane.s6 + lane.s7)))), d, c);
        } else {
            acc = fma((float8)(d), convert_float8(lane), acc);
        }
    }
    y[t * ne1 + r] = repack ? c : em_hsum8v(acc);
}

/* vec_dot_q4_1_q8_1: as q4_0 plus the min term, a fused multiply-add chain over blocks */
__kernel EM_MM_ATTR void em_mm_q4_1(EM_MM_ARGS) {
    EM_MM_INDEX
    float8 acc = (float8)(0.0f);
    float summs = 0.0f;
    for (long ib = 0; ib < ne0 / 32; ib++) {
        __global const uchar *x = row + ib * 20;
        __global const uchar *q = a + ib * 36;
        summs = fma(em_ld16(x + 2), em_ld16(q + 2), summs);
        const float d = em_ld16(x) * em_ld16(q);
        const int16 qs = convert_int16(vload16(0, x + 4));
        const int16 y0 = convert_int16(vload16(0, (__global const char *)(q + 4)));
        const int16 y1 = convert_int16(vload16(0, (__global const char *)(q + 20)));
        acc = fma((float8)(d), convert_float8(em_lanes((qs & 0x0f) * y0, (qs >> 4) * y1)), acc);
    }
    y[t * ne1 + r] = em_hsum8v(acc) + summs;
}

/* the 5-bit values of a Q5_0/Q5_1 block: elements 0..15 (lo) and 16..31 (hi); the low
 * nibbles as Q4_0, bit 4 of element j is bit j of qh */
void em_q5_values(__global const uchar *qs, uint qh, int16 *lo, int16 *hi) {
    const int16 b = convert_int16(vload16(0, qs));
    const int16 j = (int16)(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const int16 h = as_int16(((uint16)(qh) >> as_uint16(j)) & 1u);
    const int16 h2 = as_int16(((uint16)(qh) >> as_uint16(j + 16)) & 1u);
    *lo = (b & 0x0f) | (h << 4);
    *hi = (b >> 4) | (h2 << 4);
}

uint em_ld32(__global const uchar *p) {
    return (uint)p[0] | ((uint)p[1] << 8) | ((uint)p[2] << 16) | ((uint)p[3] << 24);
}

/* vec_dot_q5_0_q8_0 (22-byte blocks: d, qh[4], qs[16]) */
__kernel EM_MM_ATTR void em_mm_q5_0(EM_MM_ARGS) {
    EM_MM_INDEX
    float8 acc = (float8)(0.0f);
    for (long ib = 0; ib < ne0 / 32; ib++) {
        __global const uchar *x = row + ib * 22;
        __global const uchar *q = a + ib * 34;
        const float d = em_ld16(x) * em_ld16(q);
        int16 lo, hi;
        em_q5_values(x + 6, em_ld32(x + 2), &lo, &hi);
        const int16 y0 = convert_int16(vload16(0, (__global const char *)(q + 2)));
        const int16 y1 = convert_int16(vload16(0, (__global const char *)(q + 18)));
        acc = fma((float8)(d), convert_float8(em_lanes((lo - 16) * y0, (hi - 16) * y1)), acc);
    }
    y[t * ne1 + r] = em_hsum8v(acc);
}

/* vec_dot_q5_1_q8_1 (24-byte blocks: d, m, qh[4], qs[16]) */
__kernel EM_MM_ATTR void em_mm_q5_1(EM_MM_ARGS) {
    EM_MM_INDEX
    float8 acc = (float8)(0.0f);
    float summs = 0.0f;
    for (long ib = 0; ib < ne0 / 32; ib++) {
        __global const uchar *x = row + ib * 24;
        __global const uchar *q = a + ib * 36;
        summs = fma(em_ld16(x + 2), em_ld16(q + 2), summs);
        const float d = em_ld16(x) * em_ld16(q);
        int16 lo, hi;
        em_q5_values(x + 8, em_ld32(x + 4), &lo, &hi);
        const int16 y0 = convert_int16(vload16(0, (__global const char *)(q + 4)));
        const int16 y1 = convert_int16(vload16(0, (__global const char *)(q + 20)));
        acc = fma((float8)(d), convert_float8(em_lanes(lo * y0, hi * y1)), acc);
    }
    y[t * ne1 + r] = em_hsum8v(acc) + summs;
}

/* vec_dot_q8_0_q8_0 */
__kernel EM_MM_ATTR void em_mm_q8_0(EM_MM_ARGS) {
    EM_MM_INDEX
    float8 acc = (float8)(0.0f);
    for (long ib = 0; ib < ne0 / 32; ib++) {
        __global const uchar *x = row + ib * 34;
        __global const uchar *q = a + ib * 34;
        const float d = em_ld16(x) * em_ld16(q);
        const int16 x0 = convert_int16(vload16(0, (__global const char *)(x + 2)));
        const int16 x1 = convert_int16(vload16(0, (__global const char *)(x + 18)));
        const int16 y0 = convert_int16(vload16(0, (__global const char *)(q + 2)));
        const int16 y1 = convert_int16(vload16(0, (__global const char *)(q + 18)));
        acc = fma((float8)(d), convert_float8(em_lanes(x0 * y0, x1 * y1)), acc);
    }
    y[t * ne1 + r] = em_hsum8v(acc);
}

/* F16 weights, F16 activations. sgemm mode with ne0 % 16 == 0: llamafile's single 16-lane
 * accumulator; else vec_dot_f16 (4 x 16 lanes per 64, sum and tail in double) */
__kernel EM_MM_ATTR void em_mm_f16(EM_MM_ARGS) {
    EM_MM_INDEX
    __global const ushort *xw = (__global const ushort *)row;
    __global const ushort *xa = (__global const ushort *)a;
    if (mode == EM_K_SGEMM && ne0 % 16 == 0) {
        float acc[16];
        for (int l = 0; l < 16; l++) acc[l] = 0.0f;
        for (long k = 0; k < ne0; k += 16)
            for (int l = 0; l < 16; l++) acc[l] = fma(em_h2f(xw[k + l]), em_h2f(xa[k + l]), acc[l]);
        y[t * ne1 + r] = em_hsum16(acc);
        return;
    }
    float acc[4][16];
    for (int j = 0; j < 4; j++)
        for (int l = 0; l < 16; l++) acc[j][l] = 0.0f;
    const long np = ne0 & ~(long)63;
    for (long i = 0; i < np; i += 64)
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 16; l++)
                acc[j][l] = fma(em_h2f(xw[i + 16 * j + l]), em_h2f(xa[i + 16 * j + l]), acc[j][l]);
    for (int l = 0; l < 16; l++) { acc[0][l] += acc[2][l]; acc[1][l] += acc[3][l]; }
    for (int l = 0; l < 16; l++) acc[0][l] += acc[1][l];
    em_acc sum = em_acc_from(em_hsum16(acc[0]));
    for (long i = np; i < ne0; i++) sum = em_acc_add(sum, em_h2f(xw[i]) * em_h2f(xa[i]));
    y[t * ne1 + r] = em_acc_float(sum);
}

/* F32 weights, F32 activations: sgemm as above, else vec_dot_f32 (the tail as GCC
 * vectorized it: rounded products in order, the last tail % 4 fused) */
__kernel EM_MM_ATTR void em_mm_f32(EM_MM_ARGS) {
    EM_MM_INDEX
    __global const float *xw = (__global const float *)row;
    __global const float *xa = (__global const float *)a;
    if (mode == EM_K_SGEMM && ne0 % 16 == 0) {
        float acc[16];
        for (int l = 0; l < 16; l++) acc[l] = 0.0f;
        for (long k = 0; k < ne0; k += 16)
            for (int l = 0; l < 16; l++) acc[l] = fma(xw[k + l], xa[k + l], acc[l]);
        y[t * ne1 + r] = em_hsum16(acc);
        return;
    }
    float acc[4][16];
    for (int j = 0; j < 4; j++)
        for (int l = 0; l < 16; l++) acc[j][l] = 0.0f;
    const long np = ne0 & ~(long)63;
    for (long i = 0; i < np; i += 64)
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 16; l++) acc[j][l] = fma(xw[i + 16 * j + l], xa[i + 16 * j + l], acc[j][l]);
    for (int l = 0; l < 16; l++) { acc[0][l] += acc[2][l]; acc[1][l] += acc[3][l]; }
    for (int l = 0; l < 16; l++) acc[0][l] += acc[1][l];
    float sum = em_hsum16(acc[0]);
    const long nfused = (ne0 - np) & 3;
    for (long i = np; i < ne0 - nfused; i++) sum += xw[i] * xa[i];
    for (long i = ne0 - nfused; i < ne0; i++) sum = fma(xw[i], xa[i], sum);
    y[t * ne1 + r] = sum;
}

/* get_scale_min_k4 */
void em_scale_min_k4(int j, __global const uchar *q, int *sc, int *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

int em_q4k_value(__global const uchar *qs, int e) {
    const uchar b = qs[32 * (e >> 6) + (e & 31)];
    return (e & 32) ? (b >> 4) : (b & 0x0f);
}

/* Q4_K (144-byte super-blocks: d, dmin, 12 scale bytes, 128 quant bytes) on Q8_K:
 *   vec_dot   AVX2 path: 8 lanes fma'd with d, mins in 4 lanes, summed (0+2)+(1+3), added last
 *   repack    the CPU_REPACK kernels: integer sums over spans of 256 (gemv) or 64 (gemm),
 *             acc = fma(isum, d, acc), accm = fma(msum, dmin, accm), s = acc - accm
 *   tiled     per super-block r = fma(-dmin, msum, isum * d_w), c = fma(r, d_a, c) */
__kernel EM_MM_ATTR void em_mm_q4_K(EM_MM_ARGS) {
    EM_MM_INDEX
    float8 acc = (float8)(0.0f);
    float acc_m[4] = {0, 0, 0, 0};
    float racc = 0.0f, raccm = 0.0f, c = 0.0f;
    const int span = mode == EM_K_REPACK_GEMM ? 2 : 8; /* sub-blocks of 32 per repack sum */
    for (long ib = 0; ib < ne0 / 256; ib++) {
        __global const uchar *x = row + ib * 144;
        __global const uchar *q = a + ib * 292;
        __global const uchar *qs = x + 16;
        __global const char *q8 = (__global const char *)(q + 4);
        int sc[8], m[8], sub[8];
        for (int g = 0; g < 8; g++) em_scale_min_k4(g, x + 4, &sc[g], &m[g]);
        const float dy = em_q8k_d(q);
        /* lane k of sub-block g: sc[g] * q * q8 over its elements 4k..4k+3 */
        int8 lane = (int8)(0);
        for (int g = 0; g < 8; g++) {
            const int16 b0 = convert_int16(vload16(0, qs + 32 * (g >> 1)));
            const int16 b1 = convert_int16(vload16(0, qs + 32 * (g >> 1) + 16));
            const int16 v0 = (g & 1) ? (b0 >> 4) : (b0 & 0x0f), v1 = (g & 1) ? (b1 >> 4) : (b1 & 0x0f);
            const int16 y0 = convert_int16(vload16(0, q8 + 32 * g)), y1 = convert_int16(vload16(0, q8 + 32 * g + 16));
            const int8 lg = sc[g] * em_lanes(v0 * y0, v1 * y1);
            lane += lg;
            const int4 l4 = lg.lo + lg.hi;
            sub[g] = (l4.s0 + l4.s1) + (l4.s2 + l4.s3);
        }
        if (mode == EM_K_REPACK_GEMV || mode == EM_K_REPACK_GEMM) {
            const float d = em_ld16(x) * dy, dmin = em_ld16(x + 2) * dy;
            for (int g0 = 0; g0 < 8; g0 += span) {
                int isum = 0, msum = 0;
                for (int g = g0; g < g0 + span; g++) {
                    isum += sub[g];
                    msum += m[g] * (em_q8k_bsum(q, 2 * g) + em_q8k_bsum(q, 2 * g + 1));
                }
                racc = fma((float)isum, d, racc);
                raccm = fma((float)msum, dmin, raccm);
            }
        } else if (mode == EM_K_TILED) {
            int isum = 0, msum = 0;
            for (int g = 0; g < 8; g++) {
                isum += sub[g];
                msum += m[g] * (em_q8k_bsum(q, 2 * g) + em_q8k_bsum(q, 2 * g + 1));
            }
            float rr = (float)isum * em_ld16(x);
            rr = fma(-em_ld16(x + 2), (float)msum, rr);
            c = fma(rr, dy, c);
        } else {
            const float d = dy * em_ld16(x);
            const float dmin = -dy * em_ld16(x + 2);
            for (int k = 0; k < 4; k++) {
                const int p = m[2 * k] * (em_q8k_bsum(q, 4 * k) + em_q8k_bsum(q, 4 * k + 1)) +
                              m[2 * k + 1] * (em_q8k_bsum(q, 4 * k + 2) + em_q8k_bsum(q, 4 * k + 3));
                acc_m[k] = fma(dmin, (float)p, acc_m[k]);
            }
            acc = fma((float8)(d), convert_float8(lane), acc);
        }
    }
    float out;
    if (mode == EM_K_REPACK_GEMV || mode == EM_K_REPACK_GEMM) out = racc - raccm;
    else if (mode == EM_K_TILED) out = c;
    else out = em_hsum8v(acc) + ((acc_m[0] + acc_m[2]) + (acc_m[1] + acc_m[3]));
    y[t * ne1 + r] = out;
}

/* Q5_K (176-byte super-blocks: d, dmin, 12 scale bytes, qh[32], qs[128]) on Q8_K:
 *   vec_dot   AVX2 path: like Q4_K, but the mins go into one fma chain, added last
 *   tiled     as Q4_K's (Q5_K is never repacked) */
__kernel EM_MM_ATTR void em_mm_q5_K(EM_MM_ARGS) {
    EM_MM_INDEX
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    float summs = 0.0f, c = 0.0f;
    for (long ib = 0; ib < ne0 / 256; ib++) {
        __global const uchar *x = row + ib * 176;
        __global const uchar *q = a + ib * 292;
        __global const uchar *qh = x + 16;
        __global const uchar *qs = x + 48;
        __global const char *q8 = (__global const char *)(q + 4);
        int sc[8], m[8];
        for (int g = 0; g < 8; g++) em_scale_min_k4(g, x + 4, &sc[g], &m[g]);
        const float dy = em_q8k_d(q);
        int isum = 0, msum = 0;
        int lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (int e = 0; e < 256; e++) {
            const int v = sc[e >> 5] * (em_q4k_value(qs, e) | (((qh[e & 31] >> (e >> 5)) & 1) << 4)) * (int)q8[e];
            isum += v;
            lane[(e & 31) >> 2] += v;
        }
        for (int g = 0; g < 8; g++) msum += m[g] * (em_q8k_bsum(q, 2 * g) + em_q8k_bsum(q, 2 * g + 1));
        if (mode == EM_K_TILED) {
            float rr = (float)isum * em_ld16(x);
            rr = fma(-em_ld16(x + 2), (float)msum, rr);
            c = fma(rr, dy, c);
        } else {
            const float d = dy * em_ld16(x);
            const float dmin = -dy * em_ld16(x + 2);
            summs = fma(dmin, (float)msum, summs);
            for (int k = 0; k < 8; k++) acc[k] = fma(d, (float)lane[k], acc[k]);
        }
    }
    y[t * ne1 + r] = mode == EM_K_TILED ? c : em_hsum8(acc) + summs;
}

/* Q6_K value of element e (-32..31): ql low 4 bits, qh high 2 bits */
int em_q6k_value(__global const uchar *b, int e) {
    const int j = e >> 7, tt = (e >> 5) & 3, l = e & 31;
    const uchar lo = b[64 * j + l + 32 * (tt & 1)];
    const int low = (tt < 2) ? (lo & 0x0f) : (lo >> 4);
    const int high = (b[128 + 32 * j + l] >> (2 * tt)) & 3;
    return (low | (high << 4)) - 32;
}

/* Q6_K (210-byte super-blocks: ql 128, qh 64, 16 int8 scales, d) on Q8_K:
 *   vec_dot   AVX2 path: sc*(q+32)*q8 in 8 lanes, minus 32*sc*bsums paired per lane, fma with d
 *   tiled     per super-block c = fma(isum * d_w, d_a, c) */
__kernel EM_MM_ATTR void em_mm_q6_K(EM_MM_ARGS) {
    EM_MM_INDEX
    float8 acc = (float8)(0.0f);
    float c = 0.0f;
    for (long ib = 0; ib < ne0 / 256; ib++) {
        __global const uchar *x = row + ib * 210;
        __global const uchar *q = a + ib * 292;
        __global const char *sc = (__global const char *)(x + 192);
        __global const char *q8 = (__global const char *)(q + 4);
        const float dy = em_q8k_d(q);
        int8 lane = (int8)(0);
        int isum = 0;
        for (int g = 0; g < 8; g++) { /* sub-block of 32: elements 32g.. */
            const int j = g >> 2, tt = g & 3;
            __global const uchar *ql = x + 64 * j + 32 * (tt & 1);
            __global const uchar *qh = x + 128 + 32 * j;
            const int16 l0 = convert_int16(vload16(0, ql)), l1 = convert_int16(vload16(0, ql + 16));
            const int16 h0 = (convert_int16(vload16(0, qh)) >> (2 * tt)) & 3;
            const int16 h1 = (convert_int16(vload16(0, qh + 16)) >> (2 * tt)) & 3;
            const int16 u0 = (tt < 2 ? (l0 & 0x0f) : (l0 >> 4)) | (h0 << 4); /* q + 32 */
            const int16 u1 = (tt < 2 ? (l1 & 0x0f) : (l1 >> 4)) | (h1 << 4);
            const int16 y0 = convert_int16(vload16(0, q8 + 32 * g)), y1 = convert_int16(vload16(0, q8 + 32 * g + 16));
            const int s0 = sc[2 * g], s1 = sc[2 * g + 1];
            if (mode == EM_K_TILED) {
                const int8 lg = em_lanes(s0 * (u0 - 32) * y0, s1 * (u1 - 32) * y1);
                const int4 l4 = lg.lo + lg.hi;
                isum += (l4.s0 + l4.s1) + (l4.s2 + l4.s3);
            } else {
                lane += em_lanes(s0 * u0 * y0, s1 * u1 * y1);
            }
        }
        if (mode == EM_K_TILED) {
            const float rr = (float)isum * em_ld16(x + 208);
            c = fma(rr, dy, c);
        } else {
            const float d = dy * em_ld16(x + 208);
            int cr[8]; /* lane k minus 32 * sc * bsums of groups 2k, 2k+1 (the SIMD layout's pairing) */
            for (int k = 0; k < 8; k++)
                cr[k] = 32 * (em_q8k_bsum(q, 2 * k) * (int)sc[2 * k] + em_q8k_bsum(q, 2 * k + 1) * (int)sc[2 * k + 1]);
            acc = fma((float8)(d), convert_float8(lane - vload8(0, cr)), acc);
        }
    }
    y[t * ne1 + r] = mode == EM_K_TILED ? c : em_hsum8v(acc);
}

/* ---- the rest of a layer -------------------------------------------------------------- */

/* rows row0.. of x (n_embd each); squares summed in double where the device has it */
__kernel void em_rmsnorm(__global const float *x, __global const float *w, __global float *y, long n, float eps,
                         long row0) {
    const long t = (long)get_global_id(0);
    __global const float *xt = x + (row0 + t) * n;
    __global float *yt = y + t * n;
    em_acc sum = em_acc_from(0.0f);
    for (long i = 0; i < n; i++) sum = em_acc_add(sum, xt[i] * xt[i]);
    const float mean = em_acc_div(sum, n);
    const float scale = em_div(1.0f, em_sqrt(mean + eps));
    for (long i = 0; i < n; i++) yt[i] = (xt[i] * scale) * w[i];
}

/* v: (n, n_heads * head_dim); cache: (n, n_rot) cos/sin pairs; global (n_heads * n_rot/2, n) */
__kernel void em_rope(__global float *v, __global const float *cache, int n_heads, int head_dim, int n_rot) {
    const int k = (int)get_global_id(0);
    const long t = (long)get_global_id(1);
    const int pairs = n_rot / 2;
    const int h = k / pairs, i0 = 2 * (k % pairs);
    __global float *p = v + t * (long)n_heads * head_dim + (long)h * head_dim + i0;
    __global const float *c = cache + t * (long)n_rot;
    const float cs = c[i0], sn = c[i0 + 1];
    const float x0 = p[0], x1 = p[1];
    p[0] = fma(x0, cs, -(x1 * sn));
    p[1] = fma(x0, sn, x1 * cs);
}

/* K rows (n, kvd) into kc (n_ctx, kvd), V into vc (kvd, n_ctx) at pos0..; both at layer
 * offset off (elements) */
__kernel void em_kv_store(__global const float *k, __global const float *v, __global ushort *kc,
                          __global ushort *vc, int kvd, long pos0, long off, long n_ctx) {
    const long i = (long)get_global_id(0), t = (long)get_global_id(1);
    kc[off + (pos0 + t) * kvd + i] = em_f2h(k[t * kvd + i]);
    vc[off + i * n_ctx + pos0 + t] = em_f2h(v[t * kvd + i]);
}

/* ggml_vec_dot_f16 with 512-bit vectors over fp16 x (global) and y; y from nz on is zero */
float em_dot_f16_vec(long n, __global const ushort *x, __global const ushort *y, long nz) {
    float acc[4][16];
    for (int j = 0; j < 4; j++)
        for (int l = 0; l < 16; l++) acc[j][l] = 0.0f;
    const long np = n & ~(long)63;
    const long lim = nz < np ? nz : np;
    for (long i = 0; i < lim; i++)
        acc[(i >> 4) & 3][i & 15] = fma(em_h2f(x[i]), em_h2f(y[i]), acc[(i >> 4) & 3][i & 15]);
    for (int l = 0; l < 16; l++) {
        acc[0][l] = acc[0][l] + acc[2][l];
        acc[1][l] = acc[1][l] + acc[3][l];
        acc[0][l] = acc[0][l] + acc[1][l];
    }
    em_acc sum = em_acc_from(em_reduce16(acc[0]));
    for (long i = np; i < n && i < nz; i++) sum = em_acc_add(sum, em_h2f(x[i]) * em_h2f(y[i]));
    return em_acc_float(sum);
}

/* tinyBLAS: one 16-lane accumulator (n % 16 == 0) */
float em_dot_f16_gemm(long n, __global const ushort *x, __global const ushort *y, long nz) {
    float acc[16];
    for (int l = 0; l < 16; l++) acc[l] = 0.0f;
    const long lim = nz < n ? nz : n;
    for (long i = 0; i < lim; i++) acc[i & 15] = fma(em_h2f(x[i]), em_h2f(y[i]), acc[i & 15]);
    return em_reduce16(acc);
}

/* q16: (n, n_head * hd) fp16 queries of the batch; token t of this launch is t0 + t.
 * scores: (cnt, n_head, n_ctx). gemm: the tinyBLAS order (batches of >= 2 tokens). */
__kernel void em_att_scores(__global const ushort *q16, __global const ushort *kc, __global float *scores,
                            int n_head, int n_head_kv, int hd, long pos0, long t0, long off, long n_ctx, float scale,
                            int gemm) {
    const long j = (long)get_global_id(0);
    const int h = (int)get_global_id(1);
    const long t = (long)get_global_id(2);
    const long pos = pos0 + t0 + t;
    __global float *sc = scores + (t * n_head + h) * n_ctx;
    if (j > pos) {
        sc[j] = -INFINITY;
        return;
    }
    const int kvh = h / (n_head / n_head_kv);
    const long kvd = (long)n_head_kv * hd;
    __global const ushort *k = kc + off + j * kvd + (long)kvh * hd;
    __global const ushort *q = q16 + ((t0 + t) * n_head + h) * (long)hd;
    const float s = gemm ? em_dot_f16_gemm(hd, k, q, hd) : em_dot_f16_vec(hd, k, q, hd);
    sc[j] = s * scale + 0.0f;
}

/* llama.c em_softmax_row over n_kv cells, rounded to fp16 into probs (cnt, n_head, n_ctx) */
__kernel void em_att_softmax(__global float *scores, __global ushort *probs, int n_head, long n_kv, long n_ctx) {
    const int h = (int)get_global_id(0);
    const long t = (long)get_global_id(1);
    __global float *x = scores + (t * n_head + h) * n_ctx;
    __global ushort *p = probs + (t * n_head + h) * n_ctx;
    float max = -INFINITY;
    for (long i = 0; i < n_kv; i++) max = x[i] > max ? x[i] : max;
    em_acc sum = em_acc_from(0.0f);
    long i = 0;
    for (; i + 15 < n_kv; i += 16) {
        float e[16];
        for (int l = 0; l < 16; l++) {
            e[l] = em_expf_vec(x[i + l] - max);
            x[i + l] = e[l];
        }
        sum = em_acc_add(sum, em_reduce16(e));
    }
    for (; i < n_kv; i++) {
        const float v = exp(x[i] - max);
        sum = em_acc_add(sum, v);
        x[i] = v;
    }
    const float inv = em_acc_inv(sum);
    for (long k = 0; k < n_kv; k++) p[k] = em_f2h(x[k] * inv);
}

/* out (n, n_head * hd): probs . V for dimension d of head h; cells past pos are skipped */
__kernel void em_att_out(__global const ushort *probs, __global const ushort *vc, __global float *out, int n_head,
                         int n_head_kv, int hd, long pos0, long t0, long off, long n_kv, long n_ctx, int gemm) {
    const int d = (int)get_global_id(0);
    const int h = (int)get_global_id(1);
    const long t = (long)get_global_id(2);
    const long pos = pos0 + t0 + t;
    const int kvh = h / (n_head / n_head_kv);
    __global const ushort *vrow = vc + off + ((long)kvh * hd + d) * n_ctx;
    __global const ushort *p = probs + (t * n_head + h) * n_ctx;
    out[((t0 + t) * n_head + h) * (long)hd + d] =
        gemm ? em_dot_f16_gemm(n_kv, vrow, p, pos + 1) : em_dot_f16_vec(n_kv, vrow, p, pos + 1);
}

/* g = silu(g) * u over rows of F: ggml's exponential for each complete group of 16 of a row,
 * the library exp for the rest */
__kernel void em_swiglu(__global float *g, __global const float *u, long F) {
    const long i = (long)get_global_id(0), t = (long)get_global_id(1);
    const long k = t * F + i;
    const float x = g[k];
    const float e = ((i & ~(long)15) + 15 < F) ? em_expf_vec(0.0f - x) : exp(-x);
    g[k] = em_div(x, 1.0f + e) * u[k];
}

__kernel void em_add(__global float *x, __global const float *y) {
    const size_t i = get_global_id(0);
    x[i] = y[i] + x[i];
}

// common.glsl - what every ember compute shader shares: the descriptor set, fp16 bit
// conversions and the scalar replicas of ggml's vector math (runtime/src/core/llama.c).
//
// One descriptor set for the whole token step, bound once; shaders address their tensors by
// offsets in push constants:
//   binding 0  W   weights and norm vectors, as uploaded from the GGUF (uint words)
//   binding 1  S   float scratch: residual stream, projections, rope table, scores, logits
//   binding 2  A   activations converted to a weight's vec_dot type (q8_0 / q8_1 / f16)
//   binding 3  KV  fp16 K and V caches, two halves per word, both laid out (pos, kv dim)
//
// Numerics: every float expression that decides a result bit is `precise` so that no
// compiler fuses or reorders it; fused multiply-adds are written as em_fma() where the CPU path
// has fmaf(). fp16 conversions are done in integer arithmetic (round to nearest even, as the
// CPU path), not by the driver.

#ifndef EM_COMMON_GLSL
#define EM_COMMON_GLSL

#define EM_LOCAL 64

layout(std430, set = 0, binding = 0) readonly buffer WBuf { uint W[]; };
#ifdef EM_S_COHERENT
layout(std430, set = 0, binding = 1) coherent buffer SBuf { float S[]; };
#else
layout(std430, set = 0, binding = 1) buffer SBuf { float S[]; };
#endif
layout(std430, set = 0, binding = 2) buffer ABuf { uint A[]; };
layout(std430, set = 0, binding = 3) buffer KVBuf { uint KV[]; };

// A fused multiply-add rounded once. GLSL lets fma() be a multiply then an add (Mesa's
// lavapipe does that), which changes results. With 64-bit floats the product is exact in
// double and the sum is rounded to odd (TwoSum error term) before the one rounding to float,
// which gives the correctly rounded fma. The driver's fma() is used where the host found it
// fused (EM_FMA_NATIVE: backend_vulkan.c probes it) or where there are no 64-bit floats.
#if defined(EM_F64) && !defined(EM_FMA_NATIVE)
float em_fma(float a, float b, float c) {
    precise double p = double(a) * double(b);
    precise double cd = double(c);
    precise double s = p + cd;
    precise double bb = s - p;
    precise double err = (p - (s - bb)) + (cd - bb);
    if (err != 0.0 && !isinf(s) && !isnan(s)) {
        uvec2 u = unpackDouble2x32(s); // x: low word
        if ((u.x & 1u) == 0u) {
            if ((err > 0.0) == (s > 0.0)) {
                u.x += 1u;
            } else {
                if (u.x == 0u) u.y -= 1u;
                u.x -= 1u;
            }
            s = packDouble2x32(u);
        }
    }
    return float(s);
}
#else
#define em_fma fma
#endif

// IEEE binary16 bits -> float (exact)
float em_h2f(uint h) {
    uint s = (h & 0x8000u) << 16;
    uint e = (h >> 10) & 0x1fu;
    uint m = h & 0x3ffu;
    if (e == 0u) {
        precise float v = float(m) * uintBitsToFloat(0x33800000u); // m * 2^-24, exact
        return s != 0u ? -v : v;
    }
    if (e == 31u) return uintBitsToFloat(s | 0x7f800000u | (m << 13));
    return uintBitsToFloat(s | ((e + 112u) << 23) | (m << 13));
}

// float -> IEEE binary16 bits, round to nearest even (em_fp32_to_fp16 of quants.c)
uint em_f2h(float f) {
    uint x = floatBitsToUint(f);
    uint sgn = (x >> 16) & 0x8000u;
    uint ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return sgn | 0x7e00u | ((ax >> 13) & 0x3ffu);
    if (ax >= 0x477ff000u) return sgn | 0x7c00u;
    if (ax >= 0x38800000u) {
        uint r = ax + 0xfffu + ((ax >> 13) & 1u);
        return sgn | ((r - 0x38000000u) >> 13);
    }
    int e = int(ax >> 23);
    int sh = 126 - e;
    if (sh > 24) return sgn;
    uint man = (ax & 0x7fffffu) | 0x800000u;
    uint q = man >> uint(sh);
    uint rem = man & ((1u << uint(sh)) - 1u);
    uint half_ = 1u << uint(sh - 1);
    if (rem > half_ || (rem == half_ && (q & 1u) != 0u)) q++;
    return sgn | q;
}

// a / b correctly rounded even where the compiler turns a division into a * (1 / b): one
// fused correction step of the quotient (exact when the reciprocal is the rounded one)
float em_div(float a, float b) {
    precise float y = 1.0 / b;
    precise float q = a * y;
    precise float r = em_fma(-q, b, a);
    precise float q2 = em_fma(r, y, q);
    return (isinf(y) || isinf(q) || y == 0.0) ? q : q2;
}
#ifdef EM_F64
double em_divd(double a, double b) {
    precise double y = 1.0 / b;
    precise double q = a * y;
    precise double r = fma(-q, b, a);
    precise double q2 = fma(r, y, q);
    return (isinf(y) || isinf(q) || y == 0.0) ? q : q2;
}
#define em_div_wide em_divd
#else
#define em_div_wide em_div
#endif

// fp16 rounding of a float, as a float
float em_round16(float f) { return em_h2f(em_f2h(f)); }

// em_expf_vec of llama.c: one lane of ggml_v_expf
float em_expf_vec(float x) {
    if (isinf(x) && x < 0.0) return 0.0;
    const float shift = uintBitsToFloat(0x4B400000u);
    precise float z = em_fma(x, uintBitsToFloat(0x3FB8AA3Bu), shift);
    precise float n = z - shift;
    precise float b = em_fma(-n, uintBitsToFloat(0x35BFBE8Eu), em_fma(-n, uintBitsToFloat(0x3F317200u), x));
    precise float u = b * b;
    precise float j = em_fma(em_fma(em_fma(uintBitsToFloat(0x3C072010u), b, uintBitsToFloat(0x3D2B9F17u)), u,
                              em_fma(uintBitsToFloat(0x3E2AAF33u), b, uintBitsToFloat(0x3EFFFEDBu))),
                          u, em_fma(uintBitsToFloat(0x3F7FFFF6u), b, 1.0));
    if (isnan(n)) return n;
    if (abs(n) > 192.0) return n <= 0.0 ? 0.0 : uintBitsToFloat(0x7f800000u);
    return ldexp(j, int(n));
}

// reduce16 of llama.c: halves, quarters, pairs
float em_reduce16(float a[16]) {
    precise float t[8];
    precise float u[4];
    for (int i = 0; i < 8; i++) t[i] = a[i + 8] + a[i];
    for (int i = 0; i < 4; i++) u[i] = t[i + 4] + t[i];
    precise float w0 = u[2] + u[0];
    precise float w1 = u[3] + u[1];
    precise float r = w0 + w1;
    return r;
}

// one fp16 element of the KV buffer (half index)
float em_kv_half(uint i) {
    uint w = KV[i >> 1];
    return em_h2f((i & 1u) != 0u ? (w >> 16) : (w & 0xffffu));
}

#ifdef EM_F64
#define em_wide double
#else
#define em_wide float
#endif

#endif

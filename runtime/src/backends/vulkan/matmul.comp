#version 450
#extension GL_GOOGLE_include_directive : require
// matmul.comp - y[t][r] = W[r] . x[t] for one weight type (compiled once per type with
// -DEM_T_<TYPE>): one invocation per output row and token, each running the whole row in the
// order the CPU kernel of llama.c/quants.c accumulates it, so that the results are the same
// bits:
//   Q4_0, Q4_1, Q5_0, Q5_1, Q8_0  integer dot per block of 32 with the activations quantized to q8_0 /
//                     q8_1 (quantize.comp), 8 lanes of 4 quants, acc[k] = fma(d, lane, acc[k]),
//                     horizontal sum ((a0+a4)+(a2+a6)) + ((a1+a5)+(a3+a7)); Q4_1 and Q5_1
//                     add the min term, a fused multiply-add chain
//   F16 (fp16 activations), F32   4 x 16 lanes over steps of 64 then reduced (vec_dot), or
//                     one 16-lane accumulator (llamafile sgemm: >= 2 tokens) when p.gemm
// Activations: quantized types read A (9 words per block: d | s << 16, then 32 int8);
// F16 reads A (2 halves per word); F32 reads S.
#include "common.glsl"

layout(local_size_x = EM_LOCAL) in;

layout(push_constant) uniform P {
    uint w_off;     // words into W
    uint row_bytes;
    uint ne0;
    uint ne1;
    uint x_off;     // words into A (S for F32)
    uint y_off;     // floats into S
    uint gemm;      // 1: the sgemm order (F16/F32 only)
} p;

uint wbyte(uint b) { return (W[b >> 2] >> ((b & 3u) * 8u)) & 0xffu; }
// signed byte j of a block's 32 quants, held in 8 words
int qbyte(uint w[8], uint j) { return bitfieldExtract(int(w[j >> 2]), int((j & 3u) * 8u), 8); }

float hsum8(float a[8]) {
    precise float r = ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
    return r;
}

void main() {
    const uint r = gl_GlobalInvocationID.x;
    const uint t = gl_WorkGroupID.y;
    if (r >= p.ne1) return;
    const uint rb = p.w_off * 4u + r * p.row_bytes; // first byte of the row
    precise float result;
#if defined(EM_T_Q4_0) || defined(EM_T_Q4_1) || defined(EM_T_Q5_0) || defined(EM_T_Q5_1) || defined(EM_T_Q8_0)
    const uint nb = p.ne0 / 32u;
    precise float acc[8] = float[8](0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    precise float summs = 0.0;
    for (uint ib = 0u; ib < nb; ib++) {
        const uint ab = p.x_off + (t * nb + ib) * 9u;
        const uint ads = A[ab];
        int lane[8] = int[8](0, 0, 0, 0, 0, 0, 0, 0);
        uint aq[8];
        for (uint k = 0u; k < 8u; k++) aq[k] = A[ab + 1u + k];
        precise float d;
#if defined(EM_T_Q4_1)
        const uint wb = (rb >> 2) + ib * 5u; // 20-byte blocks stay word aligned
        const uint dm = W[wb];
        summs = em_fma(em_h2f(dm >> 16), em_h2f(ads >> 16), summs);
        d = em_h2f(dm & 0xffffu) * em_h2f(ads & 0xffffu);
        for (uint wq = 0u; wq < 4u; wq++) {
            const uint q = W[wb + 1u + wq];
            for (uint k = 0u; k < 4u; k++) {
                const uint j = wq * 4u + k;
                const int byte_ = int((q >> (8u * k)) & 0xffu);
                lane[wq] += (byte_ & 15) * qbyte(aq, j);
                lane[wq + 4u] += (byte_ >> 4) * qbyte(aq, j + 16u);
            }
        }
#elif defined(EM_T_Q4_0)
        const uint bb = rb + ib * 18u;
        d = em_h2f(wbyte(bb) | (wbyte(bb + 1u) << 8)) * em_h2f(ads & 0xffffu);
        for (uint j = 0u; j < 16u; j++) {
            const int byte_ = int(wbyte(bb + 2u + j));
            lane[j >> 2] += ((byte_ & 15) - 8) * qbyte(aq, j);
            lane[(j + 16u) >> 2] += ((byte_ >> 4) - 8) * qbyte(aq, j + 16u);
        }
#elif defined(EM_T_Q5_0) || defined(EM_T_Q5_1)
        // d (, m), 4 bytes of high bits (bit j: bit 4 of element j), 16 bytes as Q4_0
#if defined(EM_T_Q5_0)
        const uint bb = rb + ib * 22u, qo = bb + 6u;
        const int bias = 16;
#else
        const uint bb = rb + ib * 24u, qo = bb + 8u;
        const int bias = 0;
        summs = em_fma(em_h2f(wbyte(bb + 2u) | (wbyte(bb + 3u) << 8)), em_h2f(ads >> 16), summs);
#endif
        d = em_h2f(wbyte(bb) | (wbyte(bb + 1u) << 8)) * em_h2f(ads & 0xffffu);
        const uint qh = wbyte(qo - 4u) | (wbyte(qo - 3u) << 8) | (wbyte(qo - 2u) << 16) | (wbyte(qo - 1u) << 24);
        for (uint j = 0u; j < 16u; j++) {
            const int byte_ = int(wbyte(qo + j));
            const int lo = (byte_ & 15) | int(((qh >> j) & 1u) << 4);
            const int hi = (byte_ >> 4) | int(((qh >> (j + 16u)) & 1u) << 4);
            lane[j >> 2] += (lo - bias) * qbyte(aq, j);
            lane[(j + 16u) >> 2] += (hi - bias) * qbyte(aq, j + 16u);
        }
#else
        const uint bb = rb + ib * 34u;
        d = em_h2f(wbyte(bb) | (wbyte(bb + 1u) << 8)) * em_h2f(ads & 0xffffu);
        for (uint j = 0u; j < 32u; j++) {
            const int wq = bitfieldExtract(int(wbyte(bb + 2u + j)), 0, 8);
            lane[j >> 2] += wq * qbyte(aq, j);
        }
#endif
        for (int k = 0; k < 8; k++) acc[k] = em_fma(d, float(lane[k]), acc[k]);
    }
    result = hsum8(acc) + summs;
#elif defined(EM_T_F16) || defined(EM_T_F32)
    const uint n = p.ne0;
#if defined(EM_T_F16)
#define WV(i) em_h2f(((W[(rb >> 2) + ((i) >> 1)]) >> (((i) & 1u) * 16u)) & 0xffffu)
#define XV(i) em_h2f(((A[p.x_off + t * (n >> 1) + ((i) >> 1)]) >> (((i) & 1u) * 16u)) & 0xffffu)
#else
#define WV(i) uintBitsToFloat(W[(rb >> 2) + (i)])
#define XV(i) S[p.x_off + t * n + (i)]
#endif
    if (p.gemm != 0u) {
        precise float acc[16];
        for (int l = 0; l < 16; l++) acc[l] = 0.0;
        for (uint k = 0u; k < n; k += 16u)
            for (uint l = 0u; l < 16u; l++) acc[l] = em_fma(WV(k + l), XV(k + l), acc[l]);
        result = em_reduce16(acc);
    } else {
        precise float acc[4][16];
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 16; l++) acc[j][l] = 0.0;
        const uint np = n & ~63u;
        for (uint i = 0u; i < np; i += 64u)
            for (uint j = 0u; j < 4u; j++)
                for (uint l = 0u; l < 16u; l++) {
                    const uint e = i + 16u * j + l;
                    acc[j][l] = em_fma(WV(e), XV(e), acc[j][l]);
                }
        for (int l = 0; l < 16; l++) { acc[0][l] = acc[0][l] + acc[2][l]; acc[1][l] = acc[1][l] + acc[3][l]; }
        for (int l = 0; l < 16; l++) acc[0][l] = acc[0][l] + acc[1][l];
#if defined(EM_T_F16)
        // the reduced sum and the tail in double (ggml_float)
        precise em_wide sum = em_wide(em_reduce16(acc[0]));
        for (uint i = np; i < n; i++) {
            precise float pr = WV(i) * XV(i);
            sum += em_wide(pr);
        }
        result = float(sum);
#else
        // the tail: products rounded then added, the last (tail % 4) fused (vec_dot_f32)
        precise float sum = em_reduce16(acc[0]);
        const uint nfused = (n - np) & 3u;
        for (uint i = np; i < n - nfused; i++) {
            precise float pr = WV(i) * XV(i);
            sum = sum + pr;
        }
        for (uint i = n - nfused; i < n; i++) sum = em_fma(WV(i), XV(i), sum);
        result = sum;
#endif
    }
#else
#error "matmul.comp: compile with -DEM_T_<TYPE>"
#endif
    S[p.y_off + t * p.ne1 + r] = result;
}

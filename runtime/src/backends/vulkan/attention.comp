#version 450
#extension GL_GOOGLE_include_directive : require
// attention.comp - causal attention of one head of one token per workgroup, in the steps and
// summation orders of llama.c's attn_compute:
//   1. q rounded to fp16; score j = (K[j] . q) * scale + 0 for j <= pos, -inf after, over
//      the n_kv cells llama.cpp's graph covers (4 x 16 lanes per dot for one token, one
//      16-lane accumulator for a batch: p.gemm bit 0)
//   2. softmax: em_expf_vec per group of 16, each group reduced as 16 lanes, the groups
//      summed in order in double (-DEM_F64; float otherwise); probabilities rounded to fp16
//   3. out[d] = V[., d] . probs over positions 0..pos (p.gemm bit 1 picks the order)
// Scores live in S (p.sc_off, 2 * n_ctx floats per head and token: scores, then group sums).
#define EM_S_COHERENT
#include "common.glsl"

layout(local_size_x = EM_LOCAL) in;

layout(push_constant) uniform P {
    uint q_off;     // floats into S: (tokens, qd)
    uint kc_off;    // words into KV: this layer's caches
    uint vc_off;
    uint sc_off;    // floats into S: scores scratch
    uint out_off;   // floats into S: (tokens, qd)
    uint n_head;
    uint n_head_kv;
    uint head_dim;
    uint pos0;      // position of the first token of this dispatch
    uint n_kv;
    uint n_ctx;
    float scale;
    uint gemm;      // bit 0: K.q as one 16-lane accumulator; bit 1: the same for V.probs
} p;

shared float q16[256];
shared float red[EM_LOCAL];
shared float inv_s;

void main() {
    const uint h = gl_WorkGroupID.x, t = gl_WorkGroupID.y, tid = gl_LocalInvocationID.x;
    const uint hd = p.head_dim, qd = p.n_head * hd, kvd = p.n_head_kv * hd;
    const uint kvh = h / (p.n_head / p.n_head_kv);
    const uint pos = p.pos0 + t;
    const uint n_kv = p.n_kv;
    const uint sc = p.sc_off + (t * p.n_head + h) * 2u * p.n_ctx;
    const uint gs = sc + p.n_ctx; // group sums

    for (uint i = tid; i < hd; i += EM_LOCAL) q16[i] = em_round16(S[p.q_off + t * qd + h * hd + i]);
    barrier();

    // 1. scores
    float lmax = uintBitsToFloat(0xff800000u);
    for (uint j = tid; j < n_kv; j += EM_LOCAL) {
        float s;
        if (j > pos) {
            s = uintBitsToFloat(0xff800000u);
        } else {
            const uint k0 = (p.kc_off * 2u) + j * kvd + kvh * hd; // half index
            precise float dot;
            if ((p.gemm & 1u) != 0u) {
                precise float acc[16];
                for (int l = 0; l < 16; l++) acc[l] = 0.0;
                for (uint i = 0u; i < hd; i++) acc[i & 15u] = em_fma(em_kv_half(k0 + i), q16[i], acc[i & 15u]);
                dot = em_reduce16(acc);
            } else {
                precise float acc[4][16];
                for (int a = 0; a < 4; a++)
                    for (int l = 0; l < 16; l++) acc[a][l] = 0.0;
                const uint np = hd & ~63u;
                for (uint i = 0u; i < np; i++)
                    acc[(i >> 4) & 3u][i & 15u] = em_fma(em_kv_half(k0 + i), q16[i], acc[(i >> 4) & 3u][i & 15u]);
                for (int l = 0; l < 16; l++) {
                    acc[0][l] = acc[0][l] + acc[2][l];
                    acc[1][l] = acc[1][l] + acc[3][l];
                    acc[0][l] = acc[0][l] + acc[1][l];
                }
                precise em_wide sum = em_wide(em_reduce16(acc[0]));
                for (uint i = np; i < hd; i++) {
                    precise float pr = em_kv_half(k0 + i) * q16[i];
                    sum += em_wide(pr);
                }
                dot = float(sum);
            }
            precise float sv = dot * p.scale;
            s = sv + 0.0;
        }
        S[sc + j] = s;
        lmax = max(lmax, s);
    }
    red[tid] = lmax;
    memoryBarrierBuffer();
    barrier();
    for (uint w = EM_LOCAL / 2u; w > 0u; w >>= 1) {
        if (tid < w) red[tid] = max(red[tid], red[tid + w]);
        barrier();
    }
    const float mx = red[0];

    // 2. exponentials per group of 16, then the ordered sum
    const uint ng = n_kv / 16u;
    for (uint g = tid; g < ng; g += EM_LOCAL) {
        precise float y[16];
        for (uint l = 0u; l < 16u; l++) {
            precise float dx = S[sc + 16u * g + l] - mx;
            y[l] = em_expf_vec(dx);
            S[sc + 16u * g + l] = y[l];
        }
        S[gs + g] = em_reduce16(y);
    }
    memoryBarrierBuffer();
    barrier();
    if (tid == 0u) {
        precise em_wide sum = em_wide(0.0);
        for (uint g = 0u; g < ng; g++) sum += em_wide(S[gs + g]);
        for (uint j = ng * 16u; j < n_kv; j++) {
            precise float dx = S[sc + j] - mx;
            precise float v = j > pos ? 0.0 : exp(dx);
            sum += em_wide(v);
            S[sc + j] = v;
        }
        precise em_wide one = em_wide(1.0);
        inv_s = float(em_div_wide(one, sum));
    }
    memoryBarrierBuffer();
    barrier();
    const float inv = inv_s;
    for (uint j = tid; j < n_kv; j += EM_LOCAL) {
        precise float pr = S[sc + j] * inv;
        S[sc + j] = em_round16(pr);
    }
    memoryBarrierBuffer();
    barrier();

    // 3. out = V . probs, positions past pos have probability zero and are skipped
    const uint nz = pos + 1u;
    for (uint d = tid; d < hd; d += EM_LOCAL) {
        const uint v0 = p.vc_off * 2u + kvh * hd + d;
        precise float r;
        if ((p.gemm & 2u) != 0u) {
            precise float acc[16];
            for (int l = 0; l < 16; l++) acc[l] = 0.0;
            const uint lim = min(nz, n_kv);
            for (uint j = 0u; j < lim; j++) acc[j & 15u] = em_fma(em_kv_half(v0 + j * kvd), S[sc + j], acc[j & 15u]);
            r = em_reduce16(acc);
        } else {
            precise float acc[4][16];
            for (int a = 0; a < 4; a++)
                for (int l = 0; l < 16; l++) acc[a][l] = 0.0;
            const uint np = n_kv & ~63u;
            const uint lim = min(nz, np);
            for (uint j = 0u; j < lim; j++)
                acc[(j >> 4) & 3u][j & 15u] = em_fma(em_kv_half(v0 + j * kvd), S[sc + j], acc[(j >> 4) & 3u][j & 15u]);
            for (int l = 0; l < 16; l++) {
                acc[0][l] = acc[0][l] + acc[2][l];
                acc[1][l] = acc[1][l] + acc[3][l];
                acc[0][l] = acc[0][l] + acc[1][l];
            }
            precise em_wide sum = em_wide(em_reduce16(acc[0]));
            for (uint j = np; j < n_kv && j < nz; j++) {
                precise float pr = em_kv_half(v0 + j * kvd) * S[sc + j];
                sum += em_wide(pr);
            }
            r = float(sum);
        }
        S[p.out_off + t * qd + h * hd + d] = r;
    }
}

#version 450
#extension GL_GOOGLE_include_directive : require
// quantize.comp - activations S -> A in a weight's vec_dot type, one invocation per block of
// 32 elements of one token, as ggml-cpu's x86 from_float does it (quants.c quantize_q8_0 /
// quantize_q8_1: d = amax / 127, id = 127 / amax, q = round half to even of x * id):
//   mode 0  q8_0: 9 words per block, d in the low half of word 0
//   mode 1  q8_1: the same plus s = fp16(d * sum(q)) in the high half of word 0
//   mode 2  f16:  16 words per block, two halves each
#include "common.glsl"

layout(local_size_x = EM_LOCAL) in;

layout(push_constant) uniform P {
    uint x_off; // floats into S
    uint a_off; // words into A
    uint ne0;
    uint mode;
} p;

void main() {
    const uint nb = p.ne0 / 32u;
    const uint ib = gl_GlobalInvocationID.x;
    const uint t = gl_WorkGroupID.y;
    if (ib >= nb) return;
    const uint x0 = p.x_off + t * p.ne0 + ib * 32u;
    if (p.mode == 2u) {
        const uint o = p.a_off + t * (p.ne0 >> 1) + ib * 16u;
        for (uint k = 0u; k < 16u; k++) A[o + k] = em_f2h(S[x0 + 2u * k]) | (em_f2h(S[x0 + 2u * k + 1u]) << 16);
        return;
    }
    precise float amax = 0.0;
    for (uint j = 0u; j < 32u; j++) amax = max(amax, abs(S[x0 + j]));
    precise float d = em_div(amax, 127.0);
    precise float id = amax != 0.0 ? em_div(127.0, amax) : 0.0;
    const uint o = p.a_off + (t * nb + ib) * 9u;
    int sum = 0;
    for (uint w = 0u; w < 8u; w++) {
        uint packed = 0u;
        for (uint k = 0u; k < 4u; k++) {
            precise float v = S[x0 + 4u * w + k] * id;
            const int q = int(roundEven(v));
            sum += q;
            packed |= (uint(q) & 0xffu) << (8u * k);
        }
        A[o + 1u + w] = packed;
    }
    precise float s = d * float(sum);
    A[o] = em_f2h(d) | (p.mode == 1u ? (em_f2h(s) << 16) : 0u);
}

#version 450
#extension GL_GOOGLE_include_directive : require
// kv_store.comp - the K and V rows of the batch into the fp16 caches at their positions,
// two halves per invocation (the KV dimension is even). Both caches are (pos, kv dim).
#include "common.glsl"

layout(local_size_x = EM_LOCAL) in;

layout(push_constant) uniform P {
    uint k_off;   // floats into S: (n tokens, kvd)
    uint v_off;
    uint kc_off;  // words into KV: this layer's K cache
    uint vc_off;
    uint kvd;
    uint pos0;
} p;

void main() {
    const uint t = gl_WorkGroupID.y;
    const uint w = gl_GlobalInvocationID.x;
    if (2u * w >= p.kvd) return;
    const uint src = t * p.kvd + 2u * w;
    const uint dst = ((p.pos0 + t) * p.kvd) / 2u + w;
    KV[p.kc_off + dst] = em_f2h(S[p.k_off + src]) | (em_f2h(S[p.k_off + src + 1u]) << 16);
    KV[p.vc_off + dst] = em_f2h(S[p.v_off + src]) | (em_f2h(S[p.v_off + src + 1u]) << 16);
}

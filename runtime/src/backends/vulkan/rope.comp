#version 450
#extension GL_GOOGLE_include_directive : require
// rope.comp - rotate adjacent pairs (normal mode) of every head of one token with the host's
// cos/sin table of its position (em_rope_cache): x0' = fma(x0, c, -(x1 s)), x1' = fma(x0, s, x1 c).
#include "common.glsl"

layout(local_size_x = EM_LOCAL) in;

layout(push_constant) uniform P {
    uint x_off;     // floats into S: (n tokens, stride)
    uint rope_off;  // floats into S: (n tokens, n_rot)
    uint n_heads;
    uint head_dim;
    uint n_rot;
    uint stride;
} p;

void main() {
    const uint t = gl_WorkGroupID.y;
    const uint pairs = p.n_rot / 2u;
    const uint i = gl_GlobalInvocationID.x;
    if (i >= p.n_heads * pairs) return;
    const uint h = i / pairs, k = i % pairs;
    const uint xi = p.x_off + t * p.stride + h * p.head_dim + 2u * k;
    const float c = S[p.rope_off + t * p.n_rot + 2u * k], s = S[p.rope_off + t * p.n_rot + 2u * k + 1u];
    const float x0 = S[xi], x1 = S[xi + 1u];
    precise float a = x1 * s;
    precise float b = x1 * c;
    precise float y0 = em_fma(x0, c, -a);
    precise float y1 = em_fma(x0, s, b);
    S[xi] = y0;
    S[xi + 1u] = y1;
}

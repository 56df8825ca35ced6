#version 450
#extension GL_GOOGLE_include_directive : require
// swiglu.comp - g = (g / (1 + e^-g)) * u per element, e^x from em_expf_vec for every complete
// group of 16 of a token's row (as the CPU path) and the driver's exp for the rest.
#include "common.glsl"

layout(local_size_x = EM_LOCAL) in;

layout(push_constant) uniform P {
    uint g_off;
    uint u_off;
    uint nf;    // row length
    uint n;     // rows * row length
} p;

void main() {
    const uint i = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * EM_LOCAL;
    if (i >= p.n) return;
    const float x = S[p.g_off + i];
    const float e = (i % p.nf) < (p.nf & ~15u) ? em_expf_vec(0.0 - x) : exp(-x);
    precise float den = 1.0 + e;
    precise float y = em_div(x, den) * S[p.u_off + i];
    S[p.g_off + i] = y;
}

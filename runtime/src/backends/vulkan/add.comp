#version 450
#extension GL_GOOGLE_include_directive : require
// add.comp - x += y (the residual connection)
#include "common.glsl"

layout(local_size_x = EM_LOCAL) in;

layout(push_constant) uniform P {
    uint x_off;
    uint y_off;
    uint n;
} p;

void main() {
    const uint i = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * EM_LOCAL;
    if (i >= p.n) return;
    precise float v = S[p.y_off + i] + S[p.x_off + i];
    S[p.x_off + i] = v;
}

#version 450
#extension GL_GOOGLE_include_directive : require
// rmsnorm.comp - y[t] = (x[t] * 1 / sqrt(mean(x[t]^2) + eps)) * w, one workgroup per token.
// The squares are summed by one invocation in element order, in double where the device has
// 64-bit floats (-DEM_F64), as the CPU path does; the scaling is spread over the workgroup.
#include "common.glsl"

layout(local_size_x = EM_LOCAL) in;

layout(push_constant) uniform P {
    uint x_off;  // floats into S
    uint w_off;  // words into W (the norm vector, f32)
    uint y_off;  // floats into S
    uint ne;
    float eps;
} p;

shared float scale_s;

void main() {
    const uint t = gl_WorkGroupID.x;
    const uint x0 = p.x_off + t * p.ne, y0 = p.y_off + t * p.ne;
    if (gl_LocalInvocationID.x == 0u) {
        precise em_wide sum = em_wide(0.0);
        for (uint i = 0u; i < p.ne; i++) {
            precise float sq = S[x0 + i] * S[x0 + i];
            sum += em_wide(sq);
        }
        precise float mean = float(em_div_wide(sum, em_wide(p.ne)));
        precise float sq_ = sqrt(mean + p.eps);
        precise float sc = em_div(1.0, sq_);
        scale_s = sc;
    }
    barrier();
    const float sc = scale_s;
    for (uint i = gl_LocalInvocationID.x; i < p.ne; i += EM_LOCAL) {
        precise float v = (S[x0 + i] * sc) * uintBitsToFloat(W[p.w_off + i]);
        S[y0 + i] = v;
    }
}

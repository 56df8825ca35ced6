#version 450
#extension GL_GOOGLE_include_directive : require
// probe_fma.comp - whether the driver's fma() rounds once: S[p.out] = fma(a, b, c) for inputs
// the host picks so that a fused and an unfused result differ (backend_vulkan.c vk_probe_fma).
#include "common.glsl"

layout(local_size_x = 1) in;

layout(push_constant) uniform P {
    float a;
    float b;
    float c;
    uint out_off;
} p;

void main() {
    precise float r = fma(p.a, p.b, p.c);
    S[p.out_off] = r;
}

/* test_quants.c - unit tests of runtime/src/cpu/quants.c (a CTest program: exit status 0 = pass).
 *
 *  - traits:      block sizes/bytes/vec_dot types as ggml, row sizes, unknown ids
 *  - fp16, bf16:  every 16-bit pattern round-trips; ties round to even; inf/NaN/subnormals
 *  - round trips: quantize then dequantize stays within half a quantization step per block
 *  - activation quantizers: Q8_0/Q8_1 (127/amax, ties to even), Q8_1 s field, Q8_K bsums
 *  - vec_dot:     every weight type agrees with dequantize-then-dot (double) within tolerance
 *  - golden:      bit-exact results recorded from llama.cpp's own CPU kernels (see below)
 *  - kernels:     em_vec_dot_kernel for every llama.cpp matmul path (sgemm, tiled, repack,
 *                 AMX): consistency, and whole-matmul golden hashes from llama.cpp
 */
#include "quants.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int g_failures;
static int g_checks;

#define CHECK(cond, ...)                                                  \
    do {                                                                  \
        ++g_checks;                                                       \
        if (!(cond)) {                                                    \
            ++g_failures;                                                 \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);          \
            fprintf(stderr, __VA_ARGS__);                                 \
            fputc('\n', stderr);                                          \
        }                                                                 \
    } while (0)

static uint32_t fbits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float ffrom(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/* ---- deterministic inputs (shared with the tool that recorded the golden values) ---- */

static uint32_t rng_next(uint64_t *st) {
    *st = *st * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(*st >> 32);
}
/* uniform in [-1, 1) */
static float rng_unit(uint64_t *st) { return (float)(int32_t)rng_next(st) * 0x1p-31f; }

/* Activation-like floats: uniform with an occasional outlier. */
static void gen_floats(uint64_t seed, float *x, int64_t n, float scale) {
    uint64_t st = seed;
    for (int64_t i = 0; i < n; ++i) {
        const float u = rng_unit(&st);
        x[i] = scale * u * ((i % 37) == 5 ? 8.0f : 1.0f);
    }
}

/* Byte offsets of the fp16 scale fields in one block, so random bytes can be given sane scales. */
static int fp16_fields(em_type t, size_t off[2]) {
    switch (t) {
    case EM_TYPE_Q4_0: case EM_TYPE_Q5_0: case EM_TYPE_Q8_0: off[0] = 0; return 1;
    case EM_TYPE_Q4_1: case EM_TYPE_Q5_1: case EM_TYPE_Q4_K: case EM_TYPE_Q5_K: off[0] = 0; off[1] = 2; return 2;
    case EM_TYPE_Q2_K: off[0] = 80; off[1] = 82; return 2;
    case EM_TYPE_Q3_K: off[0] = 108; return 1;
    case EM_TYPE_Q6_K: off[0] = 208; return 1;
    default: return 0;
    }
}

/* A weight row of type t: random bits for the quants, small random fp16 scales
 * (second field, the min, kept positive); plain random values for f32/f16/bf16. */
static void gen_weights(uint64_t seed, em_type t, void *w, int64_t n) {
    uint64_t st = seed;
    const em_type_traits *tr = em_type_traits_get((uint32_t)t);
    if (t == EM_TYPE_F32 || t == EM_TYPE_F16 || t == EM_TYPE_BF16) {
        for (int64_t i = 0; i < n; ++i) {
            const float v = 0.5f * rng_unit(&st);
            if (t == EM_TYPE_F32) ((float *)w)[i] = v;
            else if (t == EM_TYPE_F16) ((uint16_t *)w)[i] = em_fp32_to_fp16(v);
            else ((uint16_t *)w)[i] = em_fp32_to_bf16(v);
        }
        return;
    }
    uint8_t *b = w;
    const size_t nbytes = em_row_size(t, n);
    for (size_t i = 0; i < nbytes; ++i) b[i] = (uint8_t)(rng_next(&st) >> 24);
    size_t off[2];
    const int nf = fp16_fields(t, off);
    for (int64_t ib = 0; ib < n / tr->block_size; ++ib)
        for (int f = 0; f < nf; ++f) {
            const float u = rng_unit(&st);
            const float v = f == 0 ? 0.02f * u : 0.01f * fabsf(u);
            const uint16_t h = em_fp32_to_fp16(v);
            memcpy(b + (size_t)ib * tr->type_size + off[f], &h, 2);
        }
}

static uint64_t fnv1a(const void *p, size_t n) {
    const uint8_t *b = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; ++i) { h ^= b[i]; h *= 0x100000001b3ull; }
    return h;
}

#ifndef EM_TEST_NO_MAIN

/* ---- traits ------------------------------------------------------------------------ */

static void test_traits(void) {
    static const struct { em_type t; const char *name; int64_t bs; size_t ts; em_type vdt; } want[] = {
        {EM_TYPE_F32, "f32", 1, 4, EM_TYPE_F32},       {EM_TYPE_F16, "f16", 1, 2, EM_TYPE_F16},
        {EM_TYPE_BF16, "bf16", 1, 2, EM_TYPE_BF16},    {EM_TYPE_Q4_0, "q4_0", 32, 18, EM_TYPE_Q8_0},
        {EM_TYPE_Q4_1, "q4_1", 32, 20, EM_TYPE_Q8_1},  {EM_TYPE_Q5_0, "q5_0", 32, 22, EM_TYPE_Q8_0},
        {EM_TYPE_Q5_1, "q5_1", 32, 24, EM_TYPE_Q8_1},  {EM_TYPE_Q8_0, "q8_0", 32, 34, EM_TYPE_Q8_0},
        {EM_TYPE_Q8_1, "q8_1", 32, 36, EM_TYPE_Q8_1},  {EM_TYPE_Q2_K, "q2_K", 256, 84, EM_TYPE_Q8_K},
        {EM_TYPE_Q3_K, "q3_K", 256, 110, EM_TYPE_Q8_K}, {EM_TYPE_Q4_K, "q4_K", 256, 144, EM_TYPE_Q8_K},
        {EM_TYPE_Q5_K, "q5_K", 256, 176, EM_TYPE_Q8_K}, {EM_TYPE_Q6_K, "q6_K", 256, 210, EM_TYPE_Q8_K},
        {EM_TYPE_Q8_K, "q8_K", 256, 292, EM_TYPE_Q8_K},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; ++i) {
        const em_type_traits *tr = em_type_traits_get((uint32_t)want[i].t);
        CHECK(tr != NULL, "traits of %s", want[i].name);
        if (!tr) continue;
        CHECK(strcmp(tr->name, want[i].name) == 0, "name %s vs %s", tr->name, want[i].name);
        CHECK(tr->block_size == want[i].bs, "%s block_size %lld", want[i].name, (long long)tr->block_size);
        CHECK(tr->type_size == want[i].ts, "%s type_size %zu", want[i].name, tr->type_size);
        CHECK(tr->vec_dot_type == want[i].vdt, "%s vec_dot_type %d", want[i].name, (int)tr->vec_dot_type);
        CHECK(em_row_size(want[i].t, 4096) == (size_t)(4096 / want[i].bs) * want[i].ts, "%s row size", want[i].name);
        CHECK(em_can_quantize(tr->vec_dot_type), "%s: its vec_dot_type must be quantizable", want[i].name);
    }
    /* Q8_1 and Q8_K are activation-only in ggml: no weight dot */
    CHECK(!em_type_traits_get(EM_TYPE_Q8_1)->supported && !em_type_traits_get(EM_TYPE_Q8_K)->supported, "q8_1/q8_K not weights");
    CHECK(em_row_size(EM_TYPE_Q4_K, 100) == 0 && em_row_size(EM_TYPE_Q8_0, 33) == 0 &&
          em_row_size((em_type)4, 32) == 0 && em_row_size(EM_TYPE_F16, 3) == 6, "row sizes of odd lengths");
    static const uint32_t unknown[] = {4, 5, 16, 20, 29, 31, 39, 40, 41, 1000, 0xffffffffu};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; ++i)
        CHECK(em_type_traits_get(unknown[i]) == NULL, "type id %u should be unknown", unknown[i]);
    CHECK(sizeof(em_block_q4_0) == 18 && sizeof(em_block_q4_1) == 20 && sizeof(em_block_q5_0) == 22 &&
          sizeof(em_block_q5_1) == 24 && sizeof(em_block_q8_0) == 34 && sizeof(em_block_q8_1) == 36 &&
          sizeof(em_block_q2_K) == 84 && sizeof(em_block_q3_K) == 110 && sizeof(em_block_q4_K) == 144 &&
          sizeof(em_block_q5_K) == 176 && sizeof(em_block_q6_K) == 210 && sizeof(em_block_q8_K) == 292,
          "block struct sizes");
}

/* ---- fp16 / bf16 ------------------------------------------------------------------- */

static void test_fp16(void) {
    static const struct { uint32_t f; uint16_t h; } cases[] = {
        {0x00000000u, 0x0000}, {0x80000000u, 0x8000}, {0x3f800000u, 0x3c00}, {0xbf800000u, 0xbc00},
        {0x477fe000u, 0x7bff},          /* 65504, largest half */
        {0x477fefffu, 0x7bff},          /* just below the midpoint to 65536 */
        {0x477ff000u, 0x7c00},          /* midpoint: ties to even = inf */
        {0x7f7fffffu, 0x7c00}, {0x7f800000u, 0x7c00}, {0xff800000u, 0xfc00},
        {0x33800000u, 0x0001},          /* 2^-24, smallest subnormal */
        {0x33000000u, 0x0000},          /* 2^-25: tie between 0 and 2^-24 -> 0 */
        {0x33000001u, 0x0001},          /* just above the tie */
        {0x33c00000u, 0x0002},          /* 1.5 * 2^-24: tie -> 2 (even) */
        {0x34200000u, 0x0002},          /* 2.5 * 2^-24: tie -> 2 (even) */
        {0x387fc000u, 0x03ff},          /* largest subnormal */
        {0x387fe000u, 0x0400},          /* tie between largest subnormal and 2^-14 -> 2^-14 */
        {0x38800000u, 0x0400},          /* 2^-14, smallest normal */
        {0x3f801000u, 0x3c00},          /* 1 + 2^-11: tie -> 1.0 (even) */
        {0x3f803000u, 0x3c02},          /* 1 + 3*2^-11: tie -> 1 + 2^-9 (even) */
        {0x00000001u, 0x0000},          /* fp32 subnormal */
        {0x7fc00000u, 0x7e00},          /* quiet NaN */
        {0x7f800001u, 0x7e00},          /* signalling NaN comes out quiet */
        {0xffc02000u, 0xfe01},          /* NaN payload top bits kept (F16C behaviour) */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
        const uint16_t h = em_fp32_to_fp16(ffrom(cases[i].f));
        CHECK(h == cases[i].h, "fp32 %08x -> fp16 %04x, want %04x", cases[i].f, h, cases[i].h);
    }
    /* every half pattern converts exactly and back */
    int bad = 0;
    for (uint32_t h = 0; h < 65536; ++h) {
        const float f = em_fp16_to_fp32((uint16_t)h);
        const uint16_t back = em_fp32_to_fp16(f);
        if ((h & 0x7c00u) == 0x7c00u && (h & 0x3ffu)) {
            if (!isnan(f) || (back & 0x7e00u) != 0x7e00u || (back & 0x8000u) != (h & 0x8000u)) ++bad;
        } else if (back != h) {
            ++bad;
        }
    }
    CHECK(bad == 0, "fp16 round trip: %d patterns", bad);
    CHECK(em_fp16_to_fp32(0x0001) == 0x1p-24f && em_fp16_to_fp32(0x8400) == -0x1p-14f &&
          em_fp16_to_fp32(0x7bff) == 65504.0f && isinf(em_fp16_to_fp32(0xfc00)), "fp16 -> fp32 values");
    /* midpoints between neighbouring positive halves round to the even one, their neighbours to
       the nearest: this is round-to-nearest-even over the whole finite range */
    bad = 0;
    for (uint32_t h = 0; h < 0x7bff; ++h) {
        const float a = em_fp16_to_fp32((uint16_t)h), b = em_fp16_to_fp32((uint16_t)(h + 1));
        const float mid = a + (b - a) * 0.5f;   /* exact: halves have <= 11 significant bits */
        const uint16_t even = (h & 1u) ? (uint16_t)(h + 1) : (uint16_t)h;
        if (em_fp32_to_fp16(mid) != even) ++bad;
        if (em_fp32_to_fp16(nextafterf(mid, 0.0f)) != h) ++bad;
        if (em_fp32_to_fp16(nextafterf(mid, INFINITY)) != h + 1) ++bad;
        if (em_fp32_to_fp16(-mid) != (even | 0x8000u)) ++bad;
    }
    CHECK(bad == 0, "fp16 rounding: %d failures", bad);
}

static void test_bf16(void) {
    CHECK(em_fp32_to_bf16(1.0f) == 0x3f80, "bf16(1)");
    CHECK(em_fp32_to_bf16(ffrom(0x3f808000u)) == 0x3f80, "tie to even (down)");
    CHECK(em_fp32_to_bf16(ffrom(0x3f818000u)) == 0x3f82, "tie to even (up)");
    CHECK(em_fp32_to_bf16(ffrom(0x3f808001u)) == 0x3f81, "above tie");
    CHECK(em_fp32_to_bf16(ffrom(0x7f7fffffu)) == 0x7f80, "FLT_MAX rounds to inf");
    CHECK(em_fp32_to_bf16(ffrom(0x7f800001u)) == 0x7fc0, "sNaN becomes quiet");
    CHECK(em_fp32_to_bf16(ffrom(0xffc12345u)) == 0xffc1, "NaN keeps sign and payload top");
    CHECK(em_fp32_to_bf16(ffrom(0x00010000u)) == 0x0001, "subnormals are kept");
    CHECK(em_bf16_to_fp32(0xc040) == -3.0f, "bf16 -> fp32");
    int bad = 0;
    for (uint32_t h = 0; h < 65536; ++h) {
        const float f = em_bf16_to_fp32((uint16_t)h);
        const uint16_t back = em_fp32_to_bf16(f);
        if (isnan(f) ? ((back & 0x7fc0u) != 0x7fc0u) : back != h) ++bad;
    }
    CHECK(bad == 0, "bf16 round trip: %d patterns", bad);
}

/* ---- quantize / dequantize round trips --------------------------------------------- */

/* Largest error allowed in one block after a round trip: half a step (a whole step at the
   clipped end of Q4_0/Q5_0), plus the rounding of the fp16 scale and min over the block. */
static void check_roundtrip(em_type t, int ref, float scale) {
    const em_type_traits *tr = em_type_traits_get((uint32_t)t);
    enum { N = 2048 };
    static float x[N], y[N];
    static uint8_t q[N * 2];
    gen_floats(0x5eed0000u + (uint64_t)t * 7 + (uint64_t)ref, x, N, scale);
    if (ref) CHECK(em_quantize_row_ref(t, x, q, N) == 0, "%s has a reference quantizer", tr->name);
    else em_quantize_row(t, x, q, N);
    em_dequantize_row(t, q, y, N);
    const int64_t bs = tr->block_size > 1 ? tr->block_size : 32;
    const int levels = t == EM_TYPE_Q4_0 || t == EM_TYPE_Q4_1 ? 15 : t == EM_TYPE_Q5_0 || t == EM_TYPE_Q5_1 ? 31 : 254;
    int bad = 0;
    for (int64_t b = 0; b < N / bs; ++b) {
        float mn = x[b * bs], mx = x[b * bs];
        for (int64_t j = 0; j < bs; ++j) { mn = fminf(mn, x[b * bs + j]); mx = fmaxf(mx, x[b * bs + j]); }
        const float amax = fmaxf(fabsf(mn), fabsf(mx));
        float bound;
        if (t == EM_TYPE_F16) bound = amax * 0x1p-11f;
        else if (t == EM_TYPE_BF16) bound = amax * 0x1p-8f;
        else if (t == EM_TYPE_Q4_1 || t == EM_TYPE_Q5_1) bound = 0.5f * (mx - mn) / levels + (fabsf(mn) + (mx - mn)) * 0x1p-10f;
        else if (t == EM_TYPE_Q4_0 || t == EM_TYPE_Q5_0) bound = amax / (float)(levels / 2 + 1) * 1.01f; /* -max clips to one step short */
        else bound = amax / (float)(levels / 2) * 0.5f * 1.01f + amax * 0x1p-10f;
        if (t != EM_TYPE_F16 && t != EM_TYPE_BF16 && t != EM_TYPE_Q8_K)
            bound += 128 * 0x1p-24f; /* tiny scales are fp16 subnormals: absolute error up to 2^-25 each */
        for (int64_t j = 0; j < bs; ++j)
            if (!(fabsf(y[b * bs + j] - x[b * bs + j]) <= bound + 1e-12f)) ++bad;
    }
    CHECK(bad == 0, "%s %s round trip: %d values off", tr->name, ref ? "reference" : "activation", bad);
}

static void test_roundtrips(void) {
    static const em_type ref_types[] = {EM_TYPE_Q4_0, EM_TYPE_Q4_1, EM_TYPE_Q5_0, EM_TYPE_Q5_1,
                                        EM_TYPE_Q8_0, EM_TYPE_Q8_1, EM_TYPE_Q8_K, EM_TYPE_F16, EM_TYPE_BF16};
    static const em_type act_types[] = {EM_TYPE_Q8_0, EM_TYPE_Q8_1, EM_TYPE_Q8_K, EM_TYPE_F16, EM_TYPE_BF16};
    for (size_t i = 0; i < sizeof ref_types / sizeof ref_types[0]; ++i) {
        check_roundtrip(ref_types[i], 1, 1.0f);
        check_roundtrip(ref_types[i], 1, 1e-3f);
    }
    for (size_t i = 0; i < sizeof act_types / sizeof act_types[0]; ++i) {
        check_roundtrip(act_types[i], 0, 1.0f);
        check_roundtrip(act_types[i], 0, 300.0f);
    }
    /* f32 is a copy */
    float x[64], y[64];
    gen_floats(1, x, 64, 3.0f);
    em_quantize_row(EM_TYPE_F32, x, y, 64);
    CHECK(memcmp(x, y, sizeof x) == 0, "f32 copy");
    CHECK(em_quantize_row_ref(EM_TYPE_Q4_K, x, y, 64) == -1, "no q4_K quantizer");
}

/* ---- activation quantizers: the details that decide ggml's bits --------------------- */

static void test_activation_quantizers(void) {
    /* amax = 127 makes the inverse scale exactly 1: half-integers are ties. The activation
       path (vroundps) rounds them to even, the reference quantizer (roundf) away from zero. */
    float x[32];
    for (int j = 0; j < 32; ++j) x[j] = (float)(j - 16) + 0.5f;
    x[0] = 127.0f;
    em_block_q8_0 a, r;
    em_quantize_row(EM_TYPE_Q8_0, x, &a, 32);
    CHECK(em_quantize_row_ref(EM_TYPE_Q8_0, x, &r, 32) == 0, "q8_0 ref");
    CHECK(a.qs[0] == 127 && em_fp16_to_fp32(a.d) == em_fp16_to_fp32(em_fp32_to_fp16(1.0f)), "q8_0 scale");
    CHECK(a.qs[19] == 4 && r.qs[19] == 4, "3.5 -> 4 both ways");      /* x[19] = 3.5 */
    CHECK(a.qs[18] == 2 && r.qs[18] == 3, "2.5 -> 2 (even) vs 3 (away)");
    CHECK(a.qs[13] == -2 && r.qs[13] == -3, "-2.5 -> -2 vs -3");

    /* Q8_1: s = fp16(d * sum(q)) */
    float z[64];
    gen_floats(99, z, 64, 2.0f);
    em_block_q8_1 b[2];
    em_quantize_row(EM_TYPE_Q8_1, z, b, 64);
    for (int i = 0; i < 2; ++i) {
        int sum = 0;
        for (int j = 0; j < 32; ++j) sum += b[i].qs[j];
        float amax = 0;
        for (int j = 0; j < 32; ++j) amax = fmaxf(amax, fabsf(z[32 * i + j]));
        const float d = amax / 127.f;
        CHECK(b[i].d == em_fp32_to_fp16(d), "q8_1 d");
        CHECK(b[i].s == em_fp32_to_fp16(d * (float)sum), "q8_1 s = d*sum(q) (d unrounded)");
    }

    /* Q8_K: bsums, d = 1/iscale from the signed max, all-zero block */
    static float k[512];
    gen_floats(7, k, 512, 1.5f);
    for (int j = 256; j < 512; ++j) k[j] = 0.0f;
    em_block_q8_K q[2];
    em_quantize_row(EM_TYPE_Q8_K, k, q, 512);
    int ok = 1;
    for (int g = 0; g < 16; ++g) {
        int sum = 0;
        for (int l = 0; l < 16; ++l) sum += q[0].qs[16 * g + l];
        ok &= sum == q[0].bsums[g];
    }
    CHECK(ok, "q8_K bsums");
    float max = 0, amax = 0;
    for (int j = 0; j < 256; ++j) if (fabsf(k[j]) > amax) { amax = fabsf(k[j]); max = k[j]; }
    CHECK(q[0].d == 1 / (-127.f / max), "q8_K d");
    CHECK(q[1].d == 0.0f && q[1].bsums[3] == 0 && q[1].qs[100] == 0, "q8_K zero block");

    /* all-zero Q8_0 block: d = 0 and the dot is 0, not NaN */
    float zeros[32] = {0};
    em_quantize_row(EM_TYPE_Q8_0, zeros, &a, 32);
    CHECK(a.d == 0 && a.qs[5] == 0, "zero q8_0 block");
    em_block_q4_0 w;
    gen_weights(3, EM_TYPE_Q4_0, &w, 32);
    float s = 1.0f;
    em_vec_dot(EM_TYPE_Q4_0, 32, &s, &w, &a);
    CHECK(s == 0.0f, "dot with zero activations = %g", s);
}

/* ---- vec_dot against dequantize-then-dot ------------------------------------------- */

static void test_vec_dot_consistency(void) {
    static const em_type types[] = {EM_TYPE_F32, EM_TYPE_F16, EM_TYPE_BF16, EM_TYPE_Q4_0, EM_TYPE_Q4_1,
                                    EM_TYPE_Q5_0, EM_TYPE_Q5_1, EM_TYPE_Q8_0, EM_TYPE_Q2_K, EM_TYPE_Q3_K,
                                    EM_TYPE_Q4_K, EM_TYPE_Q5_K, EM_TYPE_Q6_K};
    static const int64_t sizes[] = {256, 768, 4096};
    enum { NMAX = 4096 };
    static float x[NMAX], wd[NMAX], ad[NMAX];
    static uint8_t w[NMAX * 4], a[NMAX * 4];
    for (size_t i = 0; i < sizeof types / sizeof types[0]; ++i) {
        const em_type t = types[i];
        const em_type_traits *tr = em_type_traits_get((uint32_t)t);
        for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; ++k) {
            const int64_t n = sizes[k];
            for (int variant = 0; variant < 2; ++variant) {
                /* weights: random bits, or (where there is one) the reference quantizer */
                if (variant == 1) {
                    gen_floats(1000 + i, x, n, 0.7f);
                    if (em_quantize_row_ref(t, x, w, n) != 0) gen_weights(2000 + i + k, t, w, n);
                } else {
                    gen_weights(3000 + i * 10 + k, t, w, n);
                }
                gen_floats(4000 + i * 10 + k + (uint64_t)variant, x, n, 2.0f);
                em_quantize_row(tr->vec_dot_type, x, a, n);
                em_dequantize_row(t, w, wd, n);
                em_dequantize_row(tr->vec_dot_type, a, ad, n);
                double ref = 0.0, mag = 0.0;
                for (int64_t j = 0; j < n; ++j) {
                    ref += (double)wd[j] * (double)ad[j];
                    mag += fabs((double)wd[j] * (double)ad[j]);
                }
                float s = NAN;
                em_vec_dot(t, n, &s, w, a);
                /* float accumulation over n terms: well inside 1e-5 of the magnitude sum;
                   Q4_1/Q5_1 use the activation's fp16 s field for the min term (2^-11). */
                const double tol = (t == EM_TYPE_Q4_1 || t == EM_TYPE_Q5_1 ? 2e-3 : 1e-5) * mag + 1e-6;
                CHECK(fabs((double)s - ref) <= tol, "%s n=%lld variant %d: dot %.9g vs %.9g (tol %.3g)",
                      tr->name, (long long)n, variant, s, ref, tol);
            }
        }
    }
}

/* ---- golden values from llama.cpp --------------------------------------------------- */

/* Recorded by feeding the inputs made by gen_weights/gen_floats above to the kernels of the
 * reference llama.cpp build (libggml-base/libggml-cpu of llama-cpp-python 0.3.36, GCC 12,
 * -O3 -march=native on an AVX-512 (F/BW/VL/VNNI/BF16/FP16) x86-64 CPU): type_traits->to_float,
 * type_traits_cpu->from_float of the vec_dot type, and type_traits_cpu->vec_dot. The dot must
 * match to the bit; the hashes are FNV-1a of the dequantized floats and the quantized
 * activation bytes. */
typedef struct golden {
    em_type type;
    int64_t n;
    uint32_t dot_bits;
    uint64_t dequant_hash;
    uint64_t act_hash;
} golden;

static const golden k_golden[] = {
/* BEGIN GOLDEN (generated) */
    {EM_TYPE_F32, 1, 0x3eb675acu, 0x8af442e1143066fbull, 0x631eaaf9619d8166ull},
    {EM_TYPE_F32, 7, 0x3f89b23au, 0x34b18ac409284329ull, 0xfef34d523d2b1b45ull},
    {EM_TYPE_F32, 64, 0x4096ce20u, 0x8b7e5a4a6831c964ull, 0x0a97283c48978ed1ull},
    {EM_TYPE_F32, 100, 0xbfe7fecfu, 0xffe6e17b56cffa6eull, 0xbb733d3b519d4761ull},
    {EM_TYPE_F32, 576, 0x416d90b4u, 0x82a52175692d0223ull, 0xf1124ec403033b92ull},
    {EM_TYPE_F32, 1000, 0x4146e8eau, 0x267e864801eb4c31ull, 0xeda10aa66ee19a29ull},
    {EM_TYPE_F32, 4096, 0x40e6d366u, 0xb8acb0cb5640f1edull, 0xd1e53a913ef0b72dull},
    {EM_TYPE_F16, 1, 0xbe412e08u, 0x252b087e65d727b7ull, 0x0a189107b6886d51ull},
    {EM_TYPE_F16, 7, 0x3f85e4eau, 0x7211aa9cac2ff4d9ull, 0xc416948c425d2089ull},
    {EM_TYPE_F16, 64, 0x3fb64d4cu, 0x514af6a53131fd89ull, 0xc6dd08d1285fc4b7ull},
    {EM_TYPE_F16, 100, 0xc09e2a7eu, 0xd15fe0093831b698ull, 0x89bfa45fe9ee1320ull},
    {EM_TYPE_F16, 576, 0xc13bffe8u, 0x17993ea8b4cd246cull, 0x1a7e2a4e38c44d6bull},
    {EM_TYPE_F16, 1000, 0x409e5ed8u, 0xcd2186c050d821d7ull, 0xc1da30f21dcc829aull},
    {EM_TYPE_F16, 4096, 0xc28685eeu, 0xcc4afd35ccb83e1cull, 0xf62ad76b954f5cb4ull},
    {EM_TYPE_BF16, 1, 0x3e40d800u, 0x4b64c87f9c50cd6full, 0x081a8907b4d6dfbfull},
    {EM_TYPE_BF16, 7, 0xbf7a4f34u, 0xe523bbf43bfdeee9ull, 0xd5b4101de8d50749ull},
    {EM_TYPE_BF16, 64, 0x4085e526u, 0x8e21b0a6babcd6d6ull, 0x2bc48e6f333c5e2bull},
    {EM_TYPE_BF16, 100, 0x40ab46c4u, 0x3ee9b3ce3d6d0794ull, 0x4a87af84e7363795ull},
    {EM_TYPE_BF16, 576, 0x3f3307ecu, 0xc813b679449c6cf2ull, 0xb907e88ca85351a9ull},
    {EM_TYPE_BF16, 1000, 0xc0dc186bu, 0x09d964b13cb8641bull, 0xdb2dc9af18542d73ull},
    {EM_TYPE_BF16, 4096, 0xc187e440u, 0x6c5e5a0907172380ull, 0x981bc23602f4c47full},
    {EM_TYPE_Q4_0, 32, 0x3d1921a2u, 0x8caa60b6bdc1efbcull, 0x5f68270743d5d5a7ull},
    {EM_TYPE_Q4_0, 96, 0xbd616218u, 0xeb2da3b32112981full, 0x3b0d7f76fc96ab28ull},
    {EM_TYPE_Q4_0, 576, 0x3f9ecbe0u, 0xc1660118bbe89cd2ull, 0xe29871259d7d76acull},
    {EM_TYPE_Q4_0, 2048, 0x40f89946u, 0x4656aa1deba25ce2ull, 0x7cbeae884a372a5eull},
    {EM_TYPE_Q4_1, 32, 0xbd974d7cu, 0xd9efc4ab6ddb673cull, 0xbc9f21cf67f198e9ull},
    {EM_TYPE_Q4_1, 96, 0x3eaa0950u, 0x0883517a25a101e7ull, 0xe6412a57e93cdd81ull},
    {EM_TYPE_Q4_1, 576, 0xc0e7a0a2u, 0x535273883bdfb6c4ull, 0x80dd6569a3a35fe8ull},
    {EM_TYPE_Q4_1, 2048, 0xbdea0644u, 0xd737d71536c779edull, 0xd13bf9f30bb50daaull},
    {EM_TYPE_Q5_0, 32, 0xbf79a146u, 0x27ab1f06a8d2c908ull, 0xb1646b170e614954ull},
    {EM_TYPE_Q5_0, 96, 0x3d8b7460u, 0xb579462ae4ba1ecaull, 0x26f7b0d6860e63aeull},
    {EM_TYPE_Q5_0, 576, 0xbff35b2eu, 0xba3f25eb1085a91full, 0x30ec0eccfaeed35dull},
    {EM_TYPE_Q5_0, 2048, 0xbbbfc000u, 0xa2498109ec5a1c33ull, 0x616933a51a644e52ull},
    {EM_TYPE_Q5_1, 32, 0x4061b5f2u, 0x0ba586c1b7f3a366ull, 0xe24117a412fbc2e1ull},
    {EM_TYPE_Q5_1, 96, 0x402bcadfu, 0x40096e2008d60b29ull, 0xb15ea25e94ad3f4full},
    {EM_TYPE_Q5_1, 576, 0xc10133a5u, 0x05a0629294ab9ab8ull, 0x20177a679ae0437eull},
    {EM_TYPE_Q5_1, 2048, 0x4172a310u, 0x239db53116698826ull, 0x0582aa4748d39318ull},
    {EM_TYPE_Q8_0, 32, 0xc13f0afcu, 0xcc7bb4f37e8c7e45ull, 0x7fb88ace7b753e65ull},
    {EM_TYPE_Q8_0, 96, 0xc12093abu, 0x259991a9beb2ef3cull, 0xb804bd0ee62654b5ull},
    {EM_TYPE_Q8_0, 576, 0x40b93aecu, 0xdf2664a075dfe870ull, 0x1f56552e654e83b1ull},
    {EM_TYPE_Q8_0, 2048, 0x42190dc4u, 0x9b9ff8ae90e0af4aull, 0x2cf8fe4c258816a4ull},
    {EM_TYPE_Q2_K, 256, 0x401ef4beu, 0x7efdb09314c5e42bull, 0x53762c9154fb17f1ull},
    {EM_TYPE_Q2_K, 1536, 0xc0a59ad2u, 0x48529ad4c794d0c5ull, 0x6fe5eeb21c4c4a8bull},
    {EM_TYPE_Q2_K, 5632, 0xc109c888u, 0x22c17d90498a1b8dull, 0x1630872db7e38e0eull},
    {EM_TYPE_Q3_K, 256, 0x3e4e456cu, 0x7cb5243810a20516ull, 0x682ec03c233d98f4ull},
    {EM_TYPE_Q3_K, 1536, 0x3f775f20u, 0x93f68e1d8b67469dull, 0x06e3febfa3eb9df4ull},
    {EM_TYPE_Q3_K, 5632, 0xc0ed8f04u, 0xf13e8108a9b26054ull, 0xa8777aa51ddac395ull},
    {EM_TYPE_Q4_K, 256, 0x416f56e4u, 0x402088e3245c0f45ull, 0xa404528f1e3adb9eull},
    {EM_TYPE_Q4_K, 1536, 0xc340ca36u, 0x6fd1d9ace79452d9ull, 0xc9232bb605270a7dull},
    {EM_TYPE_Q4_K, 5632, 0x421e4f87u, 0x53c9bb1f74417162ull, 0xb565f4fb69dbcb93ull},
    {EM_TYPE_Q5_K, 256, 0xc29e245au, 0x250e3bd1f7b6c505ull, 0x3d29cdd295ddc14cull},
    {EM_TYPE_Q5_K, 1536, 0x43d7ea0cu, 0xe0d8505a4e0d31f6ull, 0xe762da795837fc85ull},
    {EM_TYPE_Q5_K, 5632, 0x438d68ddu, 0x5680d6329c5c39abull, 0xee18c946e490b1c3ull},
    {EM_TYPE_Q6_K, 256, 0x4449a316u, 0x9bcb732a7be316cfull, 0x9842055ba9f18884ull},
    {EM_TYPE_Q6_K, 1536, 0xc454596bu, 0x9928da8173a1f925ull, 0xbdc0be3dce06bc37ull},
    {EM_TYPE_Q6_K, 5632, 0xc4bbff37u, 0xa6a37e9f8bba0afbull, 0x29d153bd9b00e6c4ull},
/* END GOLDEN */
};

static void test_golden(void) {
    enum { NMAX = 8192 };
    static float x[NMAX], y[NMAX];
    static uint8_t w[NMAX * 4], a[NMAX * 4];
    for (size_t i = 0; i < sizeof k_golden / sizeof k_golden[0]; ++i) {
        const golden *g = &k_golden[i];
        const em_type_traits *tr = em_type_traits_get((uint32_t)g->type);
        gen_weights(0xabc0u + (uint64_t)g->type * 131 + (uint64_t)g->n, g->type, w, g->n);
        gen_floats(0xdef0u + (uint64_t)g->type * 17 + (uint64_t)g->n, x, g->n, 1.5f);
        em_dequantize_row(g->type, w, y, g->n);
        CHECK(fnv1a(y, (size_t)g->n * sizeof(float)) == g->dequant_hash, "%s n=%lld dequantize differs from ggml",
              tr->name, (long long)g->n);
        em_quantize_row(tr->vec_dot_type, x, a, g->n);
        CHECK(fnv1a(a, em_row_size(tr->vec_dot_type, g->n)) == g->act_hash, "%s n=%lld: %s activation differs from ggml",
              tr->name, (long long)g->n, em_type_traits_get((uint32_t)tr->vec_dot_type)->name);
        float s = NAN;
        em_vec_dot(g->type, g->n, &s, w, a);
        CHECK(fbits(s) == g->dot_bits, "%s n=%lld: dot %.9g (%08x), ggml %.9g (%08x)", tr->name, (long long)g->n, s,
              fbits(s), ffrom(g->dot_bits), g->dot_bits);
    }
}


/* ---- whole matmuls: which kernel llama.cpp runs, and its bits ------------------------ */

/* The kernel llama.cpp's CPU backend (x86 AVX-512 build without AMX) uses for output row
 * `row` of a matmul with n_rows activation rows, for a weight in the plain buffer or, if
 * `repacked`, in the CPU_REPACK buffer. */
static em_kernel kernel_for(em_type t, int repacked, int64_t n_rows, int64_t row) {
    if (repacked) return row < n_rows - n_rows % 4 ? EM_KERNEL_REPACK_GEMM : EM_KERNEL_REPACK_GEMV;
    if (n_rows >= 8 && (t == EM_TYPE_Q2_K || t == EM_TYPE_Q3_K || t == EM_TYPE_Q4_K ||
                        t == EM_TYPE_Q5_K || t == EM_TYPE_Q6_K))
        return EM_KERNEL_TILED;
    return n_rows >= 2 ? EM_KERNEL_SGEMM : EM_KERNEL_VEC_DOT;
}

/* Recorded with ggml_mul_mat on the reference build (same libraries as k_golden, llama.cpp's
 * default CPU_REPACK buffer where `repacked`, 1 thread): 8 weight rows made by gen_weights,
 * n_rows activation rows made by gen_floats; FNV-1a of the (n_rows, 8) float output. */
typedef struct golden_mm {
    em_type type;
    int repacked;
    int64_t k, n_rows;
    uint64_t hash;
} golden_mm;

static const golden_mm k_golden_mm[] = {
/* BEGIN GOLDEN MATMUL (generated) */
    {EM_TYPE_F32, 0, 512, 2, 0xaafa79070cfee3e7ull},
    {EM_TYPE_F16, 0, 512, 2, 0x8720ad8d45e28603ull},
    {EM_TYPE_BF16, 0, 512, 2, 0x0f898ead14896eb8ull},
    {EM_TYPE_F32, 0, 520, 3, 0x6e356b9777c80277ull},
    {EM_TYPE_BF16, 0, 528, 3, 0x25d14bb956382ec7ull},
    {EM_TYPE_Q2_K, 0, 1024, 8, 0x1708fee9950f280aull},
    {EM_TYPE_Q3_K, 0, 1024, 8, 0xaac2974e61b2683eull},
    {EM_TYPE_Q4_K, 0, 1024, 9, 0xc4f09599c1d65659ull},
    {EM_TYPE_Q5_K, 0, 1024, 8, 0x223ecf382c1b614cull},
    {EM_TYPE_Q6_K, 0, 1024, 17, 0x5b3ef4d2ef5685e2ull},
    {EM_TYPE_Q6_K, 0, 1024, 5, 0x8f8ea7270dd00cc3ull},
    {EM_TYPE_Q8_0, 0, 512, 3, 0x504ce3622f0fb91dull},
    {EM_TYPE_Q4_0, 1, 512, 1, 0xcbf7f313bdd673a3ull},
    {EM_TYPE_Q4_0, 1, 512, 6, 0x7f67d0a9a349013eull},
    {EM_TYPE_Q4_K, 1, 1024, 1, 0x31da080f7927f652ull},
    {EM_TYPE_Q4_K, 1, 1024, 6, 0x71be042b2213de49ull},
/* END GOLDEN MATMUL */
};

static void test_golden_matmul(void) {
    enum { N = 8, KMAX = 1024, RMAX = 17 };
    static uint8_t w[N][KMAX * 4], a[KMAX * 4];
    static float x[KMAX], out[RMAX][N];
    for (size_t i = 0; i < sizeof k_golden_mm / sizeof k_golden_mm[0]; ++i) {
        const golden_mm *g = &k_golden_mm[i];
        const em_type_traits *tr = em_type_traits_get((uint32_t)g->type);
        CHECK(!g->repacked || em_repack_applies(g->type, N), "%s: repack rule", tr->name);
        for (int c = 0; c < N; ++c) gen_weights(0x77000u + (uint64_t)g->type * 1000 + (uint64_t)c, g->type, w[c], g->k);
        int ok = 1;
        for (int64_t r = 0; r < g->n_rows; ++r) {
            gen_floats(0x88000u + (uint64_t)g->type * 1000 + (uint64_t)r, x, g->k, 1.5f);
            em_quantize_row(tr->vec_dot_type, x, a, g->k);
            const em_kernel kern = kernel_for(g->type, g->repacked, g->n_rows, r);
            for (int c = 0; c < N; ++c) ok &= em_vec_dot_kernel(kern, g->type, g->k, &out[r][c], w[c], a) == 0;
        }
        CHECK(ok, "%s: kernel refused", tr->name);
        CHECK(fnv1a(out, sizeof(float) * N * (size_t)g->n_rows) == g->hash,
              "%s %s k=%lld rows=%lld: matmul differs from llama.cpp's", tr->name,
              g->repacked ? "CPU_REPACK" : "CPU", (long long)g->k, (long long)g->n_rows);
    }
}

/* Every kernel agrees with dequantize-then-dot within float accumulation error, and refuses
 * what it does not handle. */
static void test_kernels_consistency(void) {
    static const em_type types[] = {EM_TYPE_F32, EM_TYPE_F16, EM_TYPE_BF16, EM_TYPE_Q4_0, EM_TYPE_Q4_1,
                                    EM_TYPE_Q5_0, EM_TYPE_Q5_1, EM_TYPE_Q8_0, EM_TYPE_Q2_K, EM_TYPE_Q3_K,
                                    EM_TYPE_Q4_K, EM_TYPE_Q5_K, EM_TYPE_Q6_K};
    static const em_kernel kernels[] = {EM_KERNEL_VEC_DOT, EM_KERNEL_SGEMM, EM_KERNEL_REPACK_GEMV,
                                        EM_KERNEL_REPACK_GEMM, EM_KERNEL_AMX, EM_KERNEL_TILED};
    enum { NK = 1536 };
    static float x[NK], wd[NK], ad[NK];
    static uint8_t w[NK * 4], a[NK * 4];
    for (size_t i = 0; i < sizeof types / sizeof types[0]; ++i) {
        const em_type t = types[i];
        const em_type_traits *tr = em_type_traits_get((uint32_t)t);
        gen_weights(5000 + i, t, w, NK);
        gen_floats(6000 + i, x, NK, 2.0f);
        em_quantize_row(tr->vec_dot_type, x, a, NK);
        em_dequantize_row(t, w, wd, NK);
        em_dequantize_row(tr->vec_dot_type, a, ad, NK);
        double ref = 0.0, mag = 0.0;
        for (int j = 0; j < NK; ++j) { ref += (double)wd[j] * ad[j]; mag += fabs((double)wd[j] * ad[j]); }
        double ref_f32 = 0.0;   /* AMX F16 takes the activations unrounded */
        for (int j = 0; j < NK; ++j) ref_f32 += (double)wd[j] * x[j];
        for (size_t k = 0; k < sizeof kernels / sizeof kernels[0]; ++k) {
            float s = NAN;
            const int amx_f16 = kernels[k] == EM_KERNEL_AMX && t == EM_TYPE_F16;
            const int rc = em_vec_dot_kernel(kernels[k], t, NK, &s, w, amx_f16 ? (const void *)x : (const void *)a);
            const int handles = kernels[k] == EM_KERNEL_VEC_DOT || kernels[k] == EM_KERNEL_SGEMM ||
                                kernels[k] == EM_KERNEL_TILED ||
                                ((kernels[k] == EM_KERNEL_REPACK_GEMV || kernels[k] == EM_KERNEL_REPACK_GEMM) &&
                                 (t == EM_TYPE_Q4_0 || t == EM_TYPE_Q4_K)) ||
                                (kernels[k] == EM_KERNEL_AMX &&
                                 (t == EM_TYPE_Q4_0 || t == EM_TYPE_Q4_1 || t == EM_TYPE_Q8_0 || t == EM_TYPE_Q4_K ||
                                  t == EM_TYPE_Q5_K || t == EM_TYPE_Q6_K || t == EM_TYPE_F16));
            CHECK((rc == 0) == handles, "%s kernel %d: rc %d", tr->name, (int)kernels[k], rc);
            if (rc != 0) continue;
            const double tol = (t == EM_TYPE_Q4_1 || t == EM_TYPE_Q5_1 ? 2e-3 : 1e-5) * mag + 1e-6;
            CHECK(fabs((double)s - (amx_f16 ? ref_f32 : ref)) <= (amx_f16 ? 2e-3 * mag : tol),
                  "%s kernel %d: %.9g vs %.9g", tr->name, (int)kernels[k], s, amx_f16 ? ref_f32 : ref);
        }
    }
    float s;
    CHECK(em_vec_dot_kernel(EM_KERNEL_VEC_DOT, EM_TYPE_Q8_K, 256, &s, w, a) == -1, "no q8_K weights");
    CHECK(em_vec_dot_kernel(EM_KERNEL_REPACK_GEMV, EM_TYPE_Q4_K, 100, &s, w, a) == -1, "partial block");
    CHECK(em_repack_applies(EM_TYPE_Q4_0, 576) && !em_repack_applies(EM_TYPE_Q4_0, 100) &&
          !em_repack_applies(EM_TYPE_Q4_1, 576) && em_repack_applies(EM_TYPE_Q4_K, 1536), "repack rule");
}

int main(void) {
    test_traits();
    test_fp16();
    test_bf16();
    test_roundtrips();
    test_activation_quantizers();
    test_vec_dot_consistency();
    test_golden();
    test_kernels_consistency();
    test_golden_matmul();
    if (g_failures) {
        fprintf(stderr, "test_quants: %d of %d checks failed\n", g_failures, g_checks);
        return 1;
    }
    printf("test_quants: all %d checks passed\n", g_checks);
    return 0;
}

#endif /* EM_TEST_NO_MAIN */

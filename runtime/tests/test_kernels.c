/* test_kernels.c - every SIMD kernel level gives the scalar reference's bits (a CTest program).
 *
 * For each level this CPU runs (levels it lacks are skipped with a note), and for every
 * weight type's vec_dot, the sgemm dots, the repacked (Q4_0, Q4_K) and tiled (Q2_K..Q6_K)
 * matmul kernels and every activation quantizer: random rows of many
 * lengths (odd ones, lengths with tails, the model sizes 576 and 1536), plus rows made to hit
 * the edges (largest quants, -128 weight bytes, subnormal and huge fp16 scales, bf16
 * subnormals, rounding ties, all-zero blocks), compared with the scalar table bit for bit.
 *
 * Also checks the selection rules: names, "auto", unknown names, and, when EMBER_KERNEL is
 * set, that em_kernels_select(NULL) honours it. Prints "best: <level>" for the integration
 * test that runs this under emulated CPUs (tests/runtime/test_kernel_levels.py).
 */
#include "kernels.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int g_failures;
static long g_checks;
/* FNV-1a over every scalar result: equal on every architecture if quants.c is portable
 * (the integration test compares x86-64 with AArch64 under qemu) */
static uint64_t g_digest = 0xcbf29ce484222325ull;

static void digest(const void *p, size_t n) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; ++i) { g_digest ^= b[i]; g_digest *= 0x100000001b3ull; }
}

#define CHECK(cond, ...)                                                  \
    do {                                                                  \
        ++g_checks;                                                       \
        if (!(cond)) {                                                    \
            if (++g_failures <= 40) {                                     \
                fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);      \
                fprintf(stderr, __VA_ARGS__);                             \
                fputc('\n', stderr);                                      \
            }                                                             \
        }                                                                 \
    } while (0)

/* ---- deterministic inputs --------------------------------------------------------------- */

static uint32_t rng_next(uint64_t *st) {
    *st = *st * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(*st >> 32);
}
static float rng_unit(uint64_t *st) { return (float)(int32_t)rng_next(st) * 0x1p-31f; } /* [-1, 1) */

static uint32_t fbits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float ffrom(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/* a NaN's sign is the CPU's default (x86 negative, ARM positive): one NaN for the digest */
static void digest_float(float v) {
    const uint32_t b = isnan(v) ? 0x7fc00000u : fbits(v);
    digest(&b, 4);
}

/* How rows are filled. */
typedef enum {
    FILL_RANDOM,    /* random quants, moderate scales */
    FILL_EXTREME,   /* quant bytes all 0xff / 0x80 / 0x00 patterns, large scales */
    FILL_WILD,      /* random quants, fp16 scales from the whole finite range incl. subnormals */
    FILL_COUNT
} fill_kind;

static const char *const k_fill_names[FILL_COUNT] = {"random", "extreme", "wild"};

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

/* a finite fp16 from anywhere in the range (subnormals included) */
static uint16_t wild_fp16(uint64_t *st) {
    for (;;) {
        const uint16_t h = (uint16_t)rng_next(st);
        if ((h & 0x7c00u) != 0x7c00u) return h;
    }
}

/* float row values: moderate, with outliers; the wild/extreme kinds add subnormals, zeros,
 * huge values and exact ties */
static float gen_value(uint64_t *st, fill_kind kind, int64_t i) {
    const float u = rng_unit(st);
    if (kind == FILL_RANDOM) return u * ((i % 37) == 5 ? 8.0f : 1.0f);
    switch (rng_next(st) % 8) {
    case 0: return 0.0f;
    case 1: return ffrom((fbits(u) & 0x807fffffu));             /* float subnormal (or zero) */
    case 2: return u * 0x1p-120f;                                /* near the bottom */
    case 3: return ffrom((fbits(u) & 0x8000ffffu) | 0x00010000u); /* bf16 subnormal range */
    case 4: return u * 60000.0f;                                 /* near fp16's top */
    case 5: return (float)((int)(u * 64.0f)) + 0.5f;             /* ties */
    default: return u;
    }
}

static void gen_floats(uint64_t seed, float *x, int64_t n, fill_kind kind) {
    uint64_t st = seed;
    for (int64_t i = 0; i < n; ++i) x[i] = gen_value(&st, kind, i);
}

/* A weight row of type t. */
static void gen_weights(uint64_t seed, em_type t, void *w, int64_t n, fill_kind kind) {
    uint64_t st = seed;
    if (t == EM_TYPE_F32 || t == EM_TYPE_F16 || t == EM_TYPE_BF16) {
        for (int64_t i = 0; i < n; ++i) {
            const float v = gen_value(&st, kind, i) * 0.5f;
            if (t == EM_TYPE_F32) ((float *)w)[i] = v;
            else if (t == EM_TYPE_F16) ((uint16_t *)w)[i] = kind == FILL_WILD ? wild_fp16(&st) : em_fp32_to_fp16(v);
            else ((uint16_t *)w)[i] = em_fp32_to_bf16(v);
        }
        return;
    }
    const em_type_traits *tr = em_type_traits_get((uint32_t)t);
    uint8_t *b = w;
    const size_t nbytes = em_row_size(t, n);
    for (size_t i = 0; i < nbytes; ++i) {
        if (kind == FILL_EXTREME) {
            static const uint8_t pat[4] = {0xff, 0x80, 0x00, 0x7f};
            b[i] = pat[(i / 7 + (size_t)(seed & 3)) & 3];
        } else {
            b[i] = (uint8_t)(rng_next(&st) >> 24);
        }
    }
    size_t off[2];
    const int nf = fp16_fields(t, off);
    for (int64_t ib = 0; ib < n / tr->block_size; ++ib)
        for (int f = 0; f < nf; ++f) {
            uint16_t h;
            if (kind == FILL_WILD) {
                h = wild_fp16(&st);
            } else {
                const float u = rng_unit(&st);
                const float big = kind == FILL_EXTREME ? 1000.0f : 1.0f;
                h = em_fp32_to_fp16(f == 0 ? 0.02f * big * u : 0.01f * big * fabsf(u));
            }
            memcpy(b + (size_t)ib * tr->type_size + off[f], &h, 2);
        }
}

/* An activation row already in type a: quantized from floats by the reference, or, for the
 * integer types, raw int8 in [-127, 127] (what the quantizers can produce) with consistent
 * sums/scales. */
static void gen_activation(uint64_t seed, em_type a, void *y, int64_t n, fill_kind kind, float *scratch) {
    gen_floats(seed, scratch, n, kind == FILL_EXTREME ? FILL_WILD : kind);
    em_quantize_row(a, scratch, y, n);
    if (kind != FILL_EXTREME) return;
    uint64_t st = seed ^ 0x9e3779b97f4a7c15ull;
    if (a == EM_TYPE_Q8_0 || a == EM_TYPE_Q8_1) {
        const size_t bs = a == EM_TYPE_Q8_0 ? sizeof(em_block_q8_0) : sizeof(em_block_q8_1);
        const size_t qoff = a == EM_TYPE_Q8_0 ? offsetof(em_block_q8_0, qs) : offsetof(em_block_q8_1, qs);
        for (int64_t ib = 0; ib < n / 32; ++ib) {
            int8_t *q = (int8_t *)y + (size_t)ib * bs + qoff;
            for (int j = 0; j < 32; ++j) q[j] = (int8_t)((j + ib) % 3 == 0 ? 127 : ((j + ib) % 3 == 1 ? -127 : (int)(rng_next(&st) % 255) - 127));
        }
    } else if (a == EM_TYPE_Q8_K) {
        em_block_q8_K *b = y;
        for (int64_t ib = 0; ib < n / 256; ++ib) {
            for (int j = 0; j < 256; ++j) b[ib].qs[j] = (int8_t)((j & 1) ? 127 : -127);
            for (int g = 0; g < 16; ++g) b[ib].bsums[g] = 0;
            b[ib].d = 1e-3f;
        }
    }
}

/* ---- comparisons ------------------------------------------------------------------------ */

static const em_type k_weight_types[] = {
    EM_TYPE_F32, EM_TYPE_F16, EM_TYPE_BF16, EM_TYPE_Q4_0, EM_TYPE_Q4_1, EM_TYPE_Q5_0,
    EM_TYPE_Q5_1, EM_TYPE_Q8_0, EM_TYPE_Q2_K, EM_TYPE_Q3_K, EM_TYPE_Q4_K, EM_TYPE_Q5_K, EM_TYPE_Q6_K,
};

static const em_type k_act_types[] = {
    EM_TYPE_F32, EM_TYPE_F16, EM_TYPE_BF16, EM_TYPE_Q8_0, EM_TYPE_Q8_1, EM_TYPE_Q8_K,
    EM_TYPE_Q4_0, EM_TYPE_Q4_1, EM_TYPE_Q5_0, EM_TYPE_Q5_1,
};

/* row lengths in elements for a type of block size bs */
static int lengths_for(int64_t bs, int64_t *out) {
    if (bs == 1) {
        static const int64_t f[] = {1, 2, 3, 7, 15, 16, 17, 31, 32, 33, 48, 63, 64, 65, 67, 100, 127, 128,
                                    129, 191, 255, 256, 257, 320, 576, 1000, 1536, 2051, 4096};
        memcpy(out, f, sizeof f);
        return (int)(sizeof f / sizeof f[0]);
    }
    static const int64_t blocks32[] = {1, 2, 3, 5, 7, 8, 9, 18, 33, 48, 65};
    static const int64_t blocks256[] = {1, 2, 3, 5, 6, 11};
    const int64_t *b = bs == 32 ? blocks32 : blocks256;
    const int nb = bs == 32 ? (int)(sizeof blocks32 / sizeof blocks32[0]) : (int)(sizeof blocks256 / sizeof blocks256[0]);
    for (int i = 0; i < nb; ++i) out[i] = b[i] * bs;
    return nb;
}

#define MAXN 4608

static void *xmalloc(size_t n) {
    void *p = malloc(n);
    if (!p) { fprintf(stderr, "out of memory\n"); exit(2); }
    return p;
}

static int same_bits(float a, float b) { return fbits(a) == fbits(b); }

static void test_vec_dots(const em_kernels *k, const em_kernels *ref) {
    float *scratch = xmalloc(MAXN * sizeof(float));
    uint8_t *w = xmalloc(MAXN * 4 + 64), *a = xmalloc(MAXN * 4 + 64);
    int64_t lens[64];
    for (size_t ti = 0; ti < sizeof k_weight_types / sizeof k_weight_types[0]; ++ti) {
        const em_type t = k_weight_types[ti];
        const em_type_traits *tr = em_type_traits_get((uint32_t)t);
        CHECK(k->vec_dot[t] != NULL && k->sgemm[t] != NULL, "%s: %s has no vec_dot/sgemm", k->name, tr->name);
        if (!k->vec_dot[t] || !k->sgemm[t]) continue;
        const int nl = lengths_for(tr->block_size, lens);
        int bad = 0;
        for (int li = 0; li < nl; ++li) {
            const int64_t n = lens[li];
            for (int kind = 0; kind < FILL_COUNT; ++kind)
                for (int rep = 0; rep < 3; ++rep) {
                    const uint64_t seed = 1000003u * (uint64_t)(ti + 1) + 7919u * (uint64_t)n + 131u * (uint64_t)kind + (uint64_t)rep;
                    /* rows at addresses that are not 16- or 32-byte aligned (as rows of most
                     * block types in a GGUF file), keeping the 4-byte alignment C asks for */
                    uint8_t *wx = w + (rep & 1) * 4, *ay = a + ((rep >> 1) & 1) * 12;
                    gen_weights(seed, t, wx, n, (fill_kind)kind);
                    gen_activation(seed * 31 + 1, tr->vec_dot_type, ay, n, (fill_kind)kind, scratch);
                    float want, got, want_g, got_g;
                    ref->vec_dot[t](n, &want, wx, ay);
                    k->vec_dot[t](n, &got, wx, ay);
                    ref->sgemm[t](n, &want_g, wx, ay);
                    k->sgemm[t](n, &got_g, wx, ay);
                    /* the other matmul kernels of llama.cpp, for the types they handle */
                    const em_vec_dot_fn *others[3][2] = {{ref->repack_gemv, k->repack_gemv},
                                                         {ref->repack_gemm, k->repack_gemm},
                                                         {ref->tiled, k->tiled}};
                    static const char *const other_names[3] = {"repack_gemv", "repack_gemm", "tiled"};
                    for (int o = 0; o < 3; ++o) {
                        if (!others[o][0][t] && !others[o][1][t]) continue;
                        ++g_checks;
                        if (!others[o][0][t] || !others[o][1][t]) {
                            if (++bad <= 3) fprintf(stderr, "FAIL %s %s: %s present in one table only\n", k->name, tr->name, other_names[o]);
                            continue;
                        }
                        float w1, w2;
                        others[o][0][t](n, &w1, wx, ay);
                        others[o][1][t](n, &w2, wx, ay);
                        if (k == ref) digest_float(w1);
                        if (!same_bits(w1, w2) && ++bad <= 3)
                            fprintf(stderr, "FAIL %s %s %s n=%lld %s rep %d: %a vs scalar %a\n", k->name, tr->name,
                                    other_names[o], (long long)n, k_fill_names[kind], rep, (double)w2, (double)w1);
                    }
                    if (k == ref) {
                        digest_float(want);
                        digest_float(want_g);
                    }
                    ++g_checks;
                    if (!same_bits(want, got) || !same_bits(want_g, got_g)) {
                        if (++bad <= 3)
                            fprintf(stderr, "FAIL %s %s n=%lld %s rep %d: vec_dot %a (%08x) vs scalar %a (%08x); "
                                    "sgemm %a vs %a\n", k->name, tr->name, (long long)n, k_fill_names[kind], rep,
                                    (double)got, fbits(got), (double)want, fbits(want), (double)got_g, (double)want_g);
                    }
                }
        }
        if (bad) ++g_failures;
    }
    free(scratch);
    free(w);
    free(a);
}

/* float rows that hit the quantizers' edge cases */
static void gen_quant_input(uint64_t seed, float *x, int64_t n, int variant) {
    uint64_t st = seed;
    gen_floats(seed, x, n, variant == 0 ? FILL_RANDOM : FILL_WILD);
    if (variant < 2) return;
    for (int64_t i = 0; i < n; ++i) {
        const int64_t blk = i / 32;
        switch ((int)(blk % 6)) {
        case 0: x[i] = 0.0f; break;                                           /* all-zero block */
        case 1: x[i] = (i % 32 == 3) ? -2.0f : ((i % 32 == 9) ? 2.0f : rng_unit(&st)); break; /* +-max tie */
        case 2: x[i] = (float)((int)(rng_unit(&st) * 127.0f)) + 0.5f; break;  /* ties after scaling */
        case 3: x[i] = (i % 5 == 0) ? NAN : rng_unit(&st); break;               /* NaNs (F16/BF16 only) */
        case 4: x[i] = (i % 7 == 0) ? INFINITY : -rng_unit(&st) * 70000.0f; break; /* overflow to inf in f16 */
        default:                                                              /* tiny values */
            /* one element keeps 127/amax finite: below 127/FLT_MAX the reference's scale is 0
             * and its quant bytes come from converting inf/NaN to int (undefined in C,
             * harmless: the block's d is 0) */
            x[i] = (i % 32 == 17) ? -1e-35f : ffrom(rng_next(&st) & 0x80ffffffu);
            break;
        }
    }
}

static int row_has_nonfinite(const float *x, int64_t n) {
    for (int64_t i = 0; i < n; ++i)
        if (!isfinite(x[i])) return 1;
    return 0;
}

static void test_quantizers(const em_kernels *k, const em_kernels *ref) {
    float *x = xmalloc(MAXN * sizeof(float));
    uint8_t *want = xmalloc(MAXN * 4 + 64), *got = xmalloc(MAXN * 4 + 64);
    int64_t lens[64];
    for (size_t ti = 0; ti < sizeof k_act_types / sizeof k_act_types[0]; ++ti) {
        const em_type t = k_act_types[ti];
        const em_type_traits *tr = em_type_traits_get((uint32_t)t);
        CHECK(k->quantize[t] != NULL, "%s: no quantizer for %s", k->name, tr->name);
        if (!k->quantize[t]) continue;
        const int nl = lengths_for(tr->block_size, lens);
        int bad = 0;
        for (int li = 0; li < nl; ++li) {
            const int64_t n = lens[li];
            const size_t nbytes = em_row_size(t, n);
            for (int variant = 0; variant < 3; ++variant) {
                gen_quant_input(777u * (uint64_t)n + 13u * ti + (uint64_t)variant, x, n, variant);
                /* NaN/inf in a block makes the integer quantizers' result undefined (the
                 * reference converts NaN to int); the elementwise float ones must still agree */
                if (row_has_nonfinite(x, n) && t != EM_TYPE_F16 && t != EM_TYPE_BF16 && t != EM_TYPE_F32)
                    for (int64_t i = 0; i < n; ++i)
                        if (!isfinite(x[i])) x[i] = 1.0f;
                memset(want, 0xa5, nbytes);
                memset(got, 0x5a, nbytes);
                ref->quantize[t](x, want, n);
                k->quantize[t](x, got, n);
                if (k == ref) digest(want, nbytes);
                ++g_checks;
                if (memcmp(want, got, nbytes) != 0) {
                    size_t at = 0;
                    while (at < nbytes && want[at] == got[at]) ++at;
                    if (++bad <= 3)
                        fprintf(stderr, "FAIL %s quantize %s n=%lld variant %d: first difference at byte %zu "
                                "(%02x vs scalar %02x)\n", k->name, tr->name, (long long)n, variant, at, got[at], want[at]);
                }
            }
        }
        if (bad) ++g_failures;
    }
    free(x);
    free(want);
    free(got);
}

/* the quantizer and the dot together, as the model uses them: quantize with the level, dot
 * with the level, equal to scalar quantize + scalar dot */
static void test_pipeline(const em_kernels *k, const em_kernels *ref) {
    static const int64_t ns[] = {576, 1536};
    float *x = xmalloc(MAXN * sizeof(float));
    uint8_t *w = xmalloc(MAXN * 4), *a1 = xmalloc(MAXN * 4), *a2 = xmalloc(MAXN * 4);
    for (size_t ti = 0; ti < sizeof k_weight_types / sizeof k_weight_types[0]; ++ti)
        for (size_t ni = 0; ni < 2; ++ni) {
            const em_type t = k_weight_types[ti];
            const int64_t n = ns[ni];
            const em_type vdt = em_type_traits_get((uint32_t)t)->vec_dot_type;
            if (n % em_type_traits_get((uint32_t)t)->block_size != 0) continue;  /* 576 and K-quants */
            gen_weights(99u + ti * 17u + ni, t, w, n, FILL_RANDOM);
            gen_floats(12345u + ni, x, n, FILL_RANDOM);
            ref->quantize[vdt](x, a1, n);
            k->quantize[vdt](x, a2, n);
            float want, got;
            ref->vec_dot[t](n, &want, w, a1);
            k->vec_dot[t](n, &got, w, a2);
            CHECK(same_bits(want, got), "%s pipeline %s n=%lld: %a vs %a", k->name,
                  em_type_traits_get((uint32_t)t)->name, (long long)n, (double)got, (double)want);
        }
    free(x);
    free(w);
    free(a1);
    free(a2);
}

/* the forward pass's other entries: vec_dot4 (one weight row, 4 activation rows) against 4
 * vec_dot calls, and the attention dots, masked softmax and SwiGLU against the scalar
 * replicas (NULL entries fall back to those, so they are equal by construction) */
static void test_forward_entries(const em_kernels *k, const em_kernels *ref) {
    float *scratch = xmalloc(MAXN * sizeof(float));
    uint8_t *w = xmalloc(MAXN * 4 + 64);
    const size_t stride = MAXN * 4 + 64;
    uint8_t *a = xmalloc(4 * stride);
    int64_t lens[64];
    for (size_t ti = 0; ti < sizeof k_weight_types / sizeof k_weight_types[0]; ++ti) {
        const em_type t = k_weight_types[ti];
        if (!k->vec_dot4[t] && !k->vec_dot_r4[t] && !k->vec_dot4x2[t]) continue;
        const em_type_traits *tr = em_type_traits_get((uint32_t)t);
        const int nl = lengths_for(tr->block_size, lens);
        for (int li = 0; li < nl; ++li)
            for (int kind = 0; kind < FILL_COUNT; ++kind) {
                const int64_t n = lens[li];
                const uint64_t seed = 7777u * (uint64_t)(ti + 1) + 31u * (uint64_t)n + (uint64_t)kind;
                gen_weights(seed, t, w, n, (fill_kind)kind);
                for (int c = 0; c < 4; ++c)
                    gen_activation(seed * 17 + (uint64_t)c, tr->vec_dot_type, a + (size_t)c * stride, n,
                                   (fill_kind)kind, scratch);
                float got[4], got_r[4];
                if (k->vec_dot4[t]) k->vec_dot4[t](n, got, w, a, stride);
                for (int c = 0; c < 4 && k->vec_dot4[t]; ++c) {
                    float want;
                    ref->vec_dot[t](n, &want, w, a + (size_t)c * stride);
                    CHECK(same_bits(want, got[c]), "%s vec_dot4 %s n=%lld %s col %d: %a vs %a", k->name, tr->name,
                          (long long)n, k_fill_names[kind], c, (double)got[c], (double)want);
                }
                /* vec_dot4x2: weight rows w and w + MAXN * 2 against the 4 activation rows */
                if (k->vec_dot4x2[t]) {
                    uint8_t *w1 = w + MAXN * 2;
                    gen_weights(seed * 11, t, w1, n, (fill_kind)kind);
                    float got8[8];
                    k->vec_dot4x2[t](n, got8, w, (size_t)(w1 - w), a, stride);
                    for (int r = 0; r < 2; ++r)
                        for (int c = 0; c < 4; ++c) {
                            float want;
                            ref->vec_dot[t](n, &want, r ? w1 : w, a + (size_t)c * stride);
                            CHECK(same_bits(want, got8[4 * r + c]), "%s vec_dot4x2 %s n=%lld %s row %d col %d: %a vs %a",
                                  k->name, tr->name, (long long)n, k_fill_names[kind], r, c, (double)got8[4 * r + c],
                                  (double)want);
                        }
                }
                /* vec_dot_r4: the 4 activation rows' buffers stand for 4 weight rows */
                if (k->vec_dot_r4[t]) {
                    for (int c = 0; c < 4; ++c) gen_weights(seed * 5 + (uint64_t)c, t, a + (size_t)c * stride, n,
                                                            (fill_kind)kind);
                    gen_activation(seed * 3, tr->vec_dot_type, w + MAXN * 2, n, (fill_kind)kind, scratch);
                    k->vec_dot_r4[t](n, got_r, a, stride, w + MAXN * 2);
                    for (int c = 0; c < 4; ++c) {
                        float want;
                        ref->vec_dot[t](n, &want, a + (size_t)c * stride, w + MAXN * 2);
                        CHECK(same_bits(want, got_r[c]), "%s vec_dot_r4 %s n=%lld %s row %d: %a vs %a", k->name,
                              tr->name, (long long)n, k_fill_names[kind], c, (double)got_r[c], (double)want);
                    }
                }
            }
    }
    /* fp16 rows of attention: head sizes and cache lengths, all prefix lengths nz */
    static const int64_t ns[] = {16, 48, 64, 80, 128, 256, 272};
    uint16_t *x16 = xmalloc(512 * sizeof(uint16_t)), *y16 = xmalloc(512 * sizeof(uint16_t));
    for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ++ni) {
        const int64_t n = ns[ni];
        uint64_t st = 4242u + (uint64_t)n;
        for (int64_t i = 0; i < n; ++i) {
            x16[i] = em_fp32_to_fp16(rng_unit(&st) * 4.0f);
            y16[i] = em_fp32_to_fp16(rng_unit(&st) * (i % 7 == 0 ? -0.0f : 1.0f));
        }
        for (int64_t nz = 0; nz <= n; nz += (nz < 40 ? 1 : 13)) {
            CHECK(same_bits(ref->attn_dot_vec(n, x16, y16, nz), k->attn_dot_vec(n, x16, y16, nz)),
                  "%s attn_dot_vec n=%lld nz=%lld", k->name, (long long)n, (long long)nz);
            CHECK(same_bits(ref->attn_dot_gemm(n, x16, y16, nz), k->attn_dot_gemm(n, x16, y16, nz)),
                  "%s attn_dot_gemm n=%lld nz=%lld", k->name, (long long)n, (long long)nz);
        }
    }
    /* softmax of scaled scores (and rows with huge spreads: exponent saturation, subnormals) */
    float *sx = xmalloc(600 * sizeof(float)), *s1 = xmalloc(600 * sizeof(float)), *s2 = xmalloc(600 * sizeof(float));
    static const int64_t sn[] = {1, 15, 16, 17, 40, 256, 512, 520};
    for (size_t ni = 0; ni < sizeof sn / sizeof sn[0]; ++ni)
        for (int spread = 0; spread < 3; ++spread) {
            const int64_t n = sn[ni];
            uint64_t st = 99u + (uint64_t)n * 3u + (uint64_t)spread;
            const float scale = spread == 0 ? 3.0f : spread == 1 ? 90.0f : 300.0f;
            for (int64_t i = 0; i < n; ++i) sx[i] = rng_unit(&st) * scale;
            for (int64_t nv = 1; nv <= n; nv += (nv < 20 ? 1 : 37)) {
                ref->attn_softmax(s1, sx, n, nv);
                k->attn_softmax(s2, sx, n, nv);
                int same = 1;
                for (int64_t i = 0; i < nv; ++i) same &= same_bits(s1[i], s2[i]);
                CHECK(same, "%s attn_softmax n=%lld nv=%lld spread %d", k->name, (long long)n, (long long)nv, spread);
            }
        }
    /* SwiGLU over model sizes and tails, gate values up to saturation of the exponential */
    static const int64_t gn[] = {7, 16, 33, 1536};
    for (size_t ni = 0; ni < sizeof gn / sizeof gn[0]; ++ni) {
        const int64_t n = gn[ni];
        uint64_t st = 555u + (uint64_t)n;
        for (int64_t i = 0; i < n; ++i) {
            scratch[i] = rng_unit(&st) * (i % 5 == 0 ? 200.0f : 8.0f);
            scratch[MAXN / 2 + i] = rng_unit(&st);
        }
        float *g1 = xmalloc((size_t)n * sizeof(float)), *g2 = xmalloc((size_t)n * sizeof(float));
        memcpy(g1, scratch, (size_t)n * sizeof(float));
        memcpy(g2, scratch, (size_t)n * sizeof(float));
        ref->swiglu(g1, scratch + MAXN / 2, n);
        k->swiglu(g2, scratch + MAXN / 2, n);
        int same = 1;
        for (int64_t i = 0; i < n; ++i) same &= same_bits(g1[i], g2[i]) || (isnan(g1[i]) && isnan(g2[i]));
        CHECK(same, "%s swiglu n=%lld", k->name, (long long)n);
        if (k == ref)
            for (int64_t i = 0; i < n; ++i) digest_float(g1[i]);
        free(g1);
        free(g2);
    }
    free(sx); free(s1); free(s2);
    free(x16); free(y16);
    free(scratch);
    free(w);
    free(a);
}

static void test_selection(void) {
    const em_kernels *best = em_kernels_best();
    CHECK(best != NULL, "em_kernels_best");
    CHECK(em_kernels_select("auto") == best, "auto is the best level");
    CHECK(em_kernels_select("scalar") == em_kernels_get(EM_LEVEL_SCALAR), "scalar by name");
    CHECK(em_kernels_select("scalar") != NULL && strcmp(em_kernels_select("scalar")->name, "scalar") == 0, "scalar name");
    CHECK(em_kernels_select("avx3000") == NULL, "an unknown level name gives NULL");
    CHECK(em_kernel_level_from_name("AVX2") == -1, "names are lower case");
    for (int l = 0; l < EM_LEVEL_COUNT; ++l) {
        CHECK(em_kernel_level_from_name(em_kernel_level_name((em_kernel_level)l)) == l, "name round trip %d", l);
        const em_kernels *k = em_kernels_get((em_kernel_level)l);
        if (k) {
            CHECK(k->level == (em_kernel_level)l && strcmp(k->name, em_kernel_level_name((em_kernel_level)l)) == 0,
                  "table of level %d names itself", l);
            CHECK(em_kernels_select(k->name) == k, "select by name %s", k->name);
        }
    }
    const char *env = getenv("EMBER_KERNEL");
    if (env && *env && strcmp(env, "auto") != 0) {
        const em_kernels *k = em_kernels_select(NULL);
        CHECK(k == em_kernels_select(env), "EMBER_KERNEL=%s is honoured", env);
        printf("EMBER_KERNEL=%s -> %s\n", env, k ? k->name : "(none: not available here)");
    } else {
        CHECK(em_kernels_select(NULL) == best, "no EMBER_KERNEL: the best level");
        CHECK(em_kernels_select("") == best, "empty name: the best level");
    }
}

int main(void) {
    em_cpu_features f;
    char feats[256];
    em_cpu_features_detect(&f);
    printf("cpu features: %s\n", em_cpu_features_string(&f, feats, sizeof feats));
    printf("best: %s\n", em_kernels_best()->name);

    test_selection();
    const em_kernels *ref = em_kernels_get(EM_LEVEL_SCALAR);
    for (int l = 0; l < EM_LEVEL_COUNT; ++l) {
        const char *name = em_kernel_level_name((em_kernel_level)l);
        const em_kernels *k = em_kernels_get((em_kernel_level)l);
        if (!k) {
            printf("level %-8s skipped: not built for this architecture or not supported by this CPU\n", name);
            continue;
        }
        /* the level as this CPU gets it, and, where that uses optional extras (avx512 with
         * AVX512_BF16), also its base variant, which other CPUs of the level get */
        const em_kernels *variants[2] = {k, NULL};
        const em_kernels *base = em_kernels_x86((em_kernel_level)l, NULL);
        if (!base) base = em_kernels_arm((em_kernel_level)l, NULL);
        if (base && base != k) variants[1] = base;
        for (int v = 0; v < 2 && variants[v]; ++v) {
            const int before = g_failures;
            const long checks_before = g_checks;
            test_vec_dots(variants[v], ref);
            test_quantizers(variants[v], ref);
            test_pipeline(variants[v], ref);
            test_forward_entries(variants[v], ref);
            printf("level %-8s %s (%ld comparisons)%s\n", name, g_failures == before ? "bit-exact" : "MISMATCH",
                   g_checks - checks_before, v ? " [base variant, without the optional extras]" : "");
        }
    }
    printf("reference digest: %016llx\n", (unsigned long long)g_digest);
    printf("%s: %ld checks, %d failures\n", g_failures ? "FAILED" : "ok", g_checks, g_failures);
    return g_failures ? 1 : 0;
}

/* bench_kernels.c - nanoseconds per vec_dot row, per weight type and kernel level.
 *
 * Not a test (CTest only collects test_*.c); build it by hand next to the library sources:
 *     cc -std=c11 -O2 -ffp-contract=off -Iruntime/src/cpu runtime/src/cpu/quants.c \
 *        runtime/src/cpu/quants_x86.c runtime/src/cpu/quants_arm.c runtime/src/cpu/kernels.c \
 *        runtime/src/cpu/cpu_features.c runtime/tests/bench_kernels.c -lm -o bench_kernels
 *     ./bench_kernels [n ...]          (default: 576 1536)
 *
 * Each measurement runs one activation row against 64 weight rows (small enough to stay in
 * L2: this measures the kernel, not memory bandwidth), repeated for ~4 ms, best of 25 (the
 * minimum: other processes on the machine only ever add time).
 * Also reports the activation quantizers (ns per row of n floats).
 *
 * With EMBER_BENCH_GGML=<path of a libggml-cpu shared library> (Linux, macOS) it also times
 * llama.cpp's own vec_dot on the same rows (column "ggml") and says whether its result has
 * the same bits as ember's best level ("=" after the speed-up) or not ("!").
 */
#include "kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__unix__) || defined(__APPLE__)
#include <dlfcn.h>
#define HAVE_DLOPEN 1
#endif

#define ROWS 64

static double now_ns(void) {
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static uint32_t rng_next(uint64_t *st) {
    *st = *st * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(*st >> 32);
}

static volatile float g_sink;

static double bench_dot(em_vec_dot_fn fn, int64_t n, const uint8_t *w, size_t row_bytes, const void *a) {
    double best = 1e30;
    for (int trial = 0; trial < 25; ++trial) {
        long iters = 0;
        float acc = 0.0f;
        const double t0 = now_ns();
        double t1;
        do {
            for (int r = 0; r < ROWS; ++r) {
                float s;
                fn(n, &s, w + (size_t)r * row_bytes, a);
                acc += s;
            }
            ++iters;
            t1 = now_ns();
        } while (t1 - t0 < 4e6);
        g_sink = acc;
        const double per = (t1 - t0) / ((double)iters * ROWS);
        if (per < best) best = per;
    }
    return best;
}

static double bench_quant(em_quantize_fn fn, int64_t n, const float *x, void *out) {
    double best = 1e30;
    for (int trial = 0; trial < 5; ++trial) {
        long iters = 0;
        const double t0 = now_ns();
        double t1;
        do {
            fn(x, out, n);
            ++iters;
            t1 = now_ns();
        } while (t1 - t0 < 10e6);
        const double per = (t1 - t0) / (double)iters;
        if (per < best) best = per;
    }
    return best;
}

/* llama.cpp's CPU type traits (ggml-cpu.h), to time its vec_dot */
typedef void (*ggml_vec_dot_fn)(int n, float *s, size_t bs, const void *x, size_t bx, const void *y, size_t by, int nrc);
typedef struct {
    void (*from_float)(const float *x, void *y, int64_t k);
    ggml_vec_dot_fn vec_dot;
    int vec_dot_type;
    int64_t nrows;
} ggml_traits_cpu;
typedef const ggml_traits_cpu *(*ggml_get_traits_fn)(int type);

static ggml_get_traits_fn load_ggml(void) {
#if defined(HAVE_DLOPEN)
    const char *path = getenv("EMBER_BENCH_GGML");
    if (!path || !*path) return NULL;
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) { fprintf(stderr, "EMBER_BENCH_GGML: %s\n", dlerror()); return NULL; }
    void (*init)(void);
    ggml_get_traits_fn get;
    *(void **)(void *)&init = dlsym(h, "ggml_cpu_init");
    *(void **)(void *)&get = dlsym(h, "ggml_get_type_traits_cpu");
    if (!init || !get) { fprintf(stderr, "EMBER_BENCH_GGML: not a ggml-cpu library\n"); return NULL; }
    init();
    return get;
#else
    return NULL;
#endif
}

static ggml_vec_dot_fn g_ggml_dot;   /* the one being timed (bench only: not library code) */
static void ggml_dot_adapter(int64_t n, float *s, const void *x, const void *y) { g_ggml_dot((int)n, s, 0, x, 0, y, 0, 1); }

static const em_type k_types[] = {
    EM_TYPE_F32, EM_TYPE_F16, EM_TYPE_BF16, EM_TYPE_Q4_0, EM_TYPE_Q4_1, EM_TYPE_Q5_0,
    EM_TYPE_Q5_1, EM_TYPE_Q8_0, EM_TYPE_Q2_K, EM_TYPE_Q3_K, EM_TYPE_Q4_K, EM_TYPE_Q5_K, EM_TYPE_Q6_K,
};
static const em_type k_acts[] = {EM_TYPE_F16, EM_TYPE_BF16, EM_TYPE_Q8_0, EM_TYPE_Q8_1, EM_TYPE_Q8_K};

int main(int argc, char **argv) {
    int64_t ns[16] = {576, 1536};
    int nn = 2;
    if (argc > 1) {
        nn = 0;
        for (int i = 1; i < argc && nn < 16; ++i) ns[nn++] = atoll(argv[i]);
    }
    const em_kernels *levels[EM_LEVEL_COUNT];
    int nlev = 0;
    for (int l = 0; l < EM_LEVEL_COUNT; ++l) {
        const em_kernels *k = em_kernels_get((em_kernel_level)l);
        if (k) levels[nlev++] = k;
    }
    em_cpu_features f;
    char feats[256];
    em_cpu_features_detect(&f);
    printf("cpu features: %s\n", em_cpu_features_string(&f, feats, sizeof feats));
    printf("ns per vec_dot row (%d rows in cache, best of 25); x = speed-up of the best level over scalar\n\n", ROWS);
    printf("%-6s %6s", "type", "n");
    for (int l = 0; l < nlev; ++l) printf(" %9s", levels[l]->name);
    const ggml_get_traits_fn ggml = load_ggml();
    if (ggml) printf(" %9s", "ggml");
    printf(" %8s\n", "x");

    uint64_t st = 42;
    for (size_t ti = 0; ti < sizeof k_types / sizeof k_types[0]; ++ti)
        for (int ni = 0; ni < nn; ++ni) {
            const em_type t = k_types[ti];
            const em_type_traits *tr = em_type_traits_get((uint32_t)t);
            const int64_t n = ns[ni];
            if (n % tr->block_size != 0) continue;
            const size_t row_bytes = em_row_size(t, n);
            uint8_t *w = malloc(row_bytes * ROWS);
            float *x = malloc((size_t)n * sizeof(float));
            void *a = malloc(em_row_size(tr->vec_dot_type, n) + 64);
            if (!w || !x || !a) return 2;
            /* real-looking rows: quantized from random floats by the reference quantizer
             * where there is one, random bytes with small fp16 scales otherwise */
            float *wf = malloc((size_t)n * sizeof(float));
            if (!wf) return 2;
            for (int r = 0; r < ROWS; ++r) {
                for (int64_t i = 0; i < n; ++i) wf[i] = (float)(int32_t)rng_next(&st) * 0x1p-31f;
                if (em_quantize_row_ref(t, wf, w + (size_t)r * row_bytes, n) != 0) {
                    for (size_t b = 0; b < row_bytes; ++b) w[(size_t)r * row_bytes + b] = (uint8_t)(rng_next(&st) >> 24);
                    /* keep the fp16 scales finite: clear their top exponent bit */
                    for (size_t b = 1; b < row_bytes; b += 2) w[(size_t)r * row_bytes + b] &= 0x3b;
                }
            }
            free(wf);
            for (int64_t i = 0; i < n; ++i) x[i] = (float)(int32_t)rng_next(&st) * 0x1p-31f;
            em_quantize_row(tr->vec_dot_type, x, a, n);
            double scalar_ns = 0, best_ns = 1e30;
            const em_kernels *best = levels[0];
            printf("%-6s %6lld", tr->name, (long long)n);
            for (int l = 0; l < nlev; ++l) {
                const double v = bench_dot(levels[l]->vec_dot[t], n, w, row_bytes, a);
                if (levels[l]->level == EM_LEVEL_SCALAR) scalar_ns = v;
                if (v < best_ns) { best_ns = v; best = levels[l]; }
                printf(" %9.1f", v);
            }
            char same = ' ';
            const ggml_traits_cpu *gt = ggml ? ggml((int)t) : NULL;
            if (gt && gt->vec_dot && gt->vec_dot_type == (int)tr->vec_dot_type) {
                g_ggml_dot = gt->vec_dot;
                printf(" %9.1f", bench_dot(ggml_dot_adapter, n, w, row_bytes, a));
                same = '=';
                for (int r = 0; r < ROWS; ++r) {
                    float s1, s2;
                    ggml_dot_adapter(n, &s1, w + (size_t)r * row_bytes, a);
                    best->vec_dot[t](n, &s2, w + (size_t)r * row_bytes, a);
                    if (memcmp(&s1, &s2, sizeof s1) != 0) same = '!';
                }
            } else if (ggml) {
                printf(" %9s", "-");
            }
            printf(" %7.1fx%c\n", scalar_ns / best_ns, same);
            free(w);
            free(x);
            free(a);
        }

    /* llama.cpp's other matmul kernels, as ember reproduces them per row */
    printf("\nns per row of the repacked (CPU_REPACK buffer: gemv = decode) and tiled (prompts of >= 8 rows)"
           " kernels\n\n%-6s %-6s %6s", "kernel", "type", "n");
    for (int l = 0; l < nlev; ++l) printf(" %9s", levels[l]->name);
    printf(" %8s\n", "x");
    static const struct { const char *name; em_type t; int which; } others[] = {
        {"gemv", EM_TYPE_Q4_0, 0}, {"gemv", EM_TYPE_Q4_K, 0}, {"gemm", EM_TYPE_Q4_K, 1},
        {"tiled", EM_TYPE_Q2_K, 2}, {"tiled", EM_TYPE_Q3_K, 2}, {"tiled", EM_TYPE_Q4_K, 2},
        {"tiled", EM_TYPE_Q5_K, 2}, {"tiled", EM_TYPE_Q6_K, 2},
    };
    for (size_t oi = 0; oi < sizeof others / sizeof others[0]; ++oi)
        for (int ni = 0; ni < nn; ++ni) {
            const em_type t = others[oi].t;
            const em_type_traits *tr = em_type_traits_get((uint32_t)t);
            const int64_t n = ns[ni];
            if (n % tr->block_size != 0) continue;
            const size_t row_bytes = em_row_size(t, n);
            uint8_t *w = malloc(row_bytes * ROWS);
            float *x = malloc((size_t)n * sizeof(float));
            void *a = malloc(em_row_size(tr->vec_dot_type, n) + 64);
            if (!w || !x || !a) return 2;
            for (size_t b = 0; b < row_bytes * ROWS; ++b) w[b] = (uint8_t)(rng_next(&st) >> 24);
            for (int r = 0; r < ROWS; ++r)
                for (size_t b = 1; b < row_bytes; b += 2) w[(size_t)r * row_bytes + b] &= 0x3b;
            for (int64_t i = 0; i < n; ++i) x[i] = (float)(int32_t)rng_next(&st) * 0x1p-31f;
            em_quantize_row(tr->vec_dot_type, x, a, n);
            double scalar_ns = 0, best_ns = 1e30;
            printf("%-6s %-6s %6lld", others[oi].name, tr->name, (long long)n);
            for (int l = 0; l < nlev; ++l) {
                const em_kernels *k = levels[l];
                const em_vec_dot_fn fn = others[oi].which == 0 ? k->repack_gemv[t]
                                       : others[oi].which == 1 ? k->repack_gemm[t] : k->tiled[t];
                const double v = bench_dot(fn, n, w, row_bytes, a);
                if (k->level == EM_LEVEL_SCALAR) scalar_ns = v;
                if (v < best_ns) best_ns = v;
                printf(" %9.1f", v);
            }
            printf(" %7.1fx\n", scalar_ns / best_ns);
            free(w);
            free(x);
            free(a);
        }

    printf("\nns per activation row quantized (from n floats)\n\n%-6s %6s", "to", "n");
    for (int l = 0; l < nlev; ++l) printf(" %9s", levels[l]->name);
    printf("\n");
    for (size_t ai = 0; ai < sizeof k_acts / sizeof k_acts[0]; ++ai)
        for (int ni = 0; ni < nn; ++ni) {
            const em_type t = k_acts[ai];
            const em_type_traits *tr = em_type_traits_get((uint32_t)t);
            const int64_t n = ns[ni];
            if (n % tr->block_size != 0) continue;
            float *x = malloc((size_t)n * sizeof(float));
            void *out = malloc(em_row_size(t, n) + 64);
            if (!x || !out) return 2;
            for (int64_t i = 0; i < n; ++i) x[i] = (float)(int32_t)rng_next(&st) * 0x1p-31f;
            printf("%-6s %6lld", tr->name, (long long)n);
            for (int l = 0; l < nlev; ++l) printf(" %9.1f", bench_quant(levels[l]->quantize[t], n, x, out));
            printf("\n");
            free(x);
            free(out);
        }
    return 0;
}

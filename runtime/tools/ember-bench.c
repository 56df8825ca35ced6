/* ember-bench - prompt processing (pp) and text generation (tg) speed, like llama-bench.
 *
 *   ember-bench -m MODEL [-t THREADS] [-p N_PROMPT] [-n N_GEN] [-d DEPTH] [-r REPS] [--backend B] [--json]
 *
 * pp: one batch of N_PROMPT tokens from an empty cache; tg: N_GEN single-token steps from an
 * empty cache. With -d DEPTH (as llama-bench -d), each pp and each tg test first fills the
 * cache with DEPTH tokens (untimed, in batches of n_batch), then times the N_PROMPT batch or
 * the N_GEN steps appended after them; the context holds DEPTH + max(N_PROMPT, N_GEN) tokens
 * (at least 512), and a DEPTH that makes that exceed the model's training context is refused.
 * Token ids are fixed (not random), so runs are comparable. Each test runs REPS times after one
 * warm-up; the mean is reported. Exit status: 0 ok, 1 bad usage, 2 load error, 3 run error.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ember.h"
#include "tool_io.h"

#if defined(_WIN32)
#define WIN32_LEAN_AND_MEAN
#include <windows.h>
#include <psapi.h>
static double now_ms(void) {
    LARGE_INTEGER f, c;
    QueryPerformanceFrequency(&f);
    QueryPerformanceCounter(&c);
    return (double)c.QuadPart * 1000.0 / (double)f.QuadPart;
}
static double peak_rss_mb(void) {
    PROCESS_MEMORY_COUNTERS pmc;
    if (GetProcessMemoryInfo(GetCurrentProcess(), &pmc, sizeof pmc)) return (double)pmc.PeakWorkingSetSize / 1048576.0;
    return 0.0;
}
#else
#include <sys/resource.h>
#include <time.h>
static double now_ms(void) {
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}
static double peak_rss_mb(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0.0;
#if defined(__APPLE__)
    return (double)ru.ru_maxrss / 1048576.0;
#else
    return (double)ru.ru_maxrss / 1024.0;
#endif
}
#endif

static int parse_long(const char *flag, const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "ember-bench: %s: '%s' is not an integer in [%ld, %ld]\n", flag, s, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

static void usage(FILE *f) {
    fprintf(f, "usage: ember-bench -m MODEL [-t THREADS] [-p N_PROMPT] [-n N_GEN] [-d DEPTH] [-r REPS]\n"
               "                   [--kernel K] [--backend B: auto, %s] [--json]\n"
               "  -d, --depth N   tokens already in the KV cache (filled untimed) before each pp and tg test\n",
            ember_backends());
}

int main(int argc, char **argv) {
#if defined(_WIN32)
    /* a model path outside the ANSI code page: take the UTF-16 command line (tool_io.h) */
    char **wide_argv = NULL; /* lives as long as the process, like the CRT's argv */
    argc = utf8_argv("ember-bench", &wide_argv);
    if (argc < 0) return 1;
    argv = wide_argv;
#endif
    const char *path = NULL;
    const char *kernel = NULL;
    const char *backend = NULL;
    long threads = 0, n_prompt = 512, n_gen = 128, reps = 1, depth = 0;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        if (!strcmp(a, "--json")) { json = 1; continue; }
        if (i + 1 >= argc) {
            fprintf(stderr, "ember-bench: '%s' is an unknown option or lacks its value\n", a);
            usage(stderr);
            return 1;
        }
        const char *v = argv[++i];
        int rc = 0;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) path = v;
        else if (!strcmp(a, "--kernel")) kernel = v;
        else if (!strcmp(a, "--backend")) backend = v;
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) rc = parse_long(a, v, 1, 1024, &threads);
        else if (!strcmp(a, "-p") || !strcmp(a, "--n-prompt")) rc = parse_long(a, v, 0, 1 << 20, &n_prompt);
        else if (!strcmp(a, "-n") || !strcmp(a, "--n-gen")) rc = parse_long(a, v, 0, 1 << 20, &n_gen);
        else if (!strcmp(a, "-d") || !strcmp(a, "--depth")) rc = parse_long(a, v, 0, 1 << 20, &depth);
        else if (!strcmp(a, "-r") || !strcmp(a, "--repetitions")) rc = parse_long(a, v, 1, 1000, &reps);
        else {
            fprintf(stderr, "ember-bench: unknown option '%s'\n", a);
            usage(stderr);
            return 1;
        }
        if (rc) return 1;
    }
    if (!path) {
        fprintf(stderr, "ember-bench: no model given (-m MODEL)\n");
        return 1;
    }

    char err[1024];
    ember_model *m = NULL;
    ember_status st = ember_model_load(path, NULL, &m, err, sizeof err);
    if (st != EMBER_OK) {
        fprintf(stderr, "ember-bench: error: %s (%s)\n", err, ember_strerror(st));
        return 2;
    }
    ember_context_params cp = ember_context_default_params();
    cp.n_threads = (int32_t)threads;
    cp.kernel = kernel;
    cp.backend = backend;
    /* pp and tg each start from an empty cache: the context holds the depth plus the longer test */
    long need = depth + (n_prompt > n_gen ? n_prompt : n_gen);
    const int32_t n_ctx_train = ember_model_n_ctx_train(m);
    if (depth > 0 && n_ctx_train > 0 && need > (long)n_ctx_train) {
        fprintf(stderr,
                "ember-bench: error: depth %ld + %ld tokens (max of -p %ld, -n %ld) = %ld tokens exceed the "
                "model's context length of %d tokens\n",
                depth, need - depth, n_prompt, n_gen, need, (int)n_ctx_train);
        ember_model_free(m);
        return 2;
    }
    cp.n_ctx = (uint32_t)(need > 512 ? need : 512);
    /* pp is one batch of n_prompt tokens; without pp, the depth is filled 512 tokens at a time */
    cp.n_batch = (uint32_t)(n_prompt > 0 ? n_prompt : depth > 0 ? (depth < 512 ? depth : 512) : 1);
    ember_context *ctx = NULL;
    st = ember_context_create(m, &cp, &ctx);
    if (st != EMBER_OK || ember_context_n_ctx(ctx) < (uint32_t)need) {
        fprintf(stderr, "ember-bench: error: cannot create a context of %ld tokens: %s\n", need,
                st != EMBER_OK ? ember_model_last_error(m) : "larger than the model's training context");
        ember_context_free(ctx);
        ember_model_free(m);
        return 2;
    }
    const int32_t n_vocab = ember_model_n_vocab(m);
    int32_t *toks = (int32_t *)malloc((size_t)(need > 0 ? need : 1) * sizeof(int32_t));
    if (!toks) { ember_context_free(ctx); ember_model_free(m); return 3; }
    for (long i = 0; i < need; i++) toks[i] = (int32_t)((i * 7919 + 13) % n_vocab);

    double pp_ms = 0.0, tg_ms = 0.0;
    int failed = 0;
    for (long r = -1; r < reps && !failed; r++) { /* r = -1: warm-up */
        if (n_prompt > 0) {
            ember_context_reset(ctx);
            if (depth > 0) failed |= ember_decode(ctx, toks, (size_t)depth) != EMBER_OK; /* untimed */
            double t = now_ms();
            if (!failed) failed |= ember_decode(ctx, &toks[depth], (size_t)n_prompt) != EMBER_OK;
            if (r >= 0) pp_ms += now_ms() - t;
        }
        if (n_gen > 0 && !failed) {
            ember_context_reset(ctx);
            if (depth > 0) failed |= ember_decode(ctx, toks, (size_t)depth) != EMBER_OK; /* untimed */
            double t = now_ms();
            for (long i = 0; i < n_gen && !failed; i++) failed |= ember_decode(ctx, &toks[depth + i], 1) != EMBER_OK;
            if (r >= 0) tg_ms += now_ms() - t;
        }
        if (r == -1 && reps > 0) { pp_ms = tg_ms = 0.0; }
    }
    if (failed) {
        fprintf(stderr, "ember-bench: error: %s\n", ember_context_last_error(ctx));
        free(toks);
        ember_context_free(ctx);
        ember_model_free(m);
        return 3;
    }
    double pp = pp_ms > 0 ? (double)n_prompt * (double)reps * 1000.0 / pp_ms : 0.0;
    double tg = tg_ms > 0 ? (double)n_gen * (double)reps * 1000.0 / tg_ms : 0.0;
    double rss = peak_rss_mb();
    int nthreads = threads > 0 ? (int)threads : 0;
    if (json) {
        printf("{\"pp_tok_s\": %.3f, \"tg_tok_s\": %.3f, \"peak_rss_mb\": %.1f, \"threads\": %d, \"kernel\": \"%s\", "
               "\"n_prompt\": %ld, \"n_gen\": %ld, \"depth\": %ld, \"n_ctx\": %u, \"repetitions\": %ld, "
               "\"backend\": \"%s\", \"device\": \"%s\", \"version\": \"%s\"}\n",
               pp, tg, rss, nthreads, ember_context_kernel(ctx), n_prompt, n_gen, depth, (unsigned)ember_context_n_ctx(ctx),
               reps, ember_context_backend(ctx),
               ember_context_device(ctx), ember_version());
    } else {
        printf("| model | threads | test | t/s |\n|---|---|---|---|\n");
        /* at a depth, the test is named as llama-bench names it: "pp512 @ d4096" */
        char at[40] = "";
        if (depth > 0) snprintf(at, sizeof at, " @ d%ld", depth);
        if (n_prompt > 0) printf("| %s | %d | pp%ld%s | %.2f |\n", path, nthreads, n_prompt, at, pp);
        if (n_gen > 0) printf("| %s | %d | tg%ld%s | %.2f |\n", path, nthreads, n_gen, at, tg);
        printf("peak RSS: %.1f MiB, kernel: %s, backend: %s (%s)\n", rss, ember_context_kernel(ctx),
               ember_context_backend(ctx), ember_context_device(ctx));
    }
    free(toks);
    ember_context_free(ctx);
    ember_model_free(m);
    return 0;
}

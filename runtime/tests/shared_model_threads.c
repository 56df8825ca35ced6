/* shared_model_threads.c - one model shared by several threads, each with its own context:
 * ember.h promises that a loaded model is read-only and may be used from any number of threads
 * at once. Every thread reads metadata, tokenizes, renders tokens, provokes the errors of the
 * model-level calls and of a load (and reads them back), creates a context, generates and
 * provokes a context error, over a few rounds. Every thread must get the results a single thread gets, and each
 * error message must be the one of that thread's own failed call.
 *
 *     shared_model_threads MODEL [THREADS] [ROUNDS]
 *
 * Exit 0 when every check passed. Built with ThreadSanitizer (-DEMBER_TSAN=ON) it also proves
 * that no two threads touch the shared model unsynchronised (tests/runtime/test_tsan.py); it
 * needs a model file, so it is not a CTest test. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ember.h"
#include "platform.h"

#define MAX_THREADS 16
#define N_GEN 8
#define PROMPT "abc de abcd!"

typedef struct job {
    ember_model *model;
    int ith;
    int rounds;
    const int32_t *prompt; /* (n_prompt) ids of PROMPT from the main thread */
    size_t n_prompt;
    const int32_t *expect; /* (N_GEN) greedy continuation from the main thread */
    int failures;
} job;

#define CHECK(j, cond, ...)                                                                   \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            fprintf(stderr, "thread %d: %s:%d: CHECK(%s) failed: ", (j)->ith, __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                                     \
            fputc('\n', stderr);                                                              \
            (j)->failures++;                                                                  \
        }                                                                                     \
    } while (0)

static ember_status greedy(ember_context *ctx, const int32_t *prompt, size_t n_prompt, int32_t *out, size_t *n_out) {
    ember_sampler_params sp = ember_sampler_default_params();
    sp.temperature = 0.0f;
    ember_sampler *s = NULL;
    ember_status st = ember_sampler_create(&sp, &s);
    if (st != EMBER_OK) return st;
    ember_context_reset(ctx);
    st = ember_generate(ctx, s, prompt, n_prompt, N_GEN, 1, out, n_out);
    ember_sampler_free(s);
    return st;
}

static void run(void *arg) {
    job *j = (job *)arg;
    ember_model *m = j->model;
    /* each thread asks for the keys in its own order, so first lookups of a key collide */
    static const char *const keys[] = {"general.architecture", "general.name", "tokenizer.ggml.model",
                                       "tokenizer.ggml.pre"};
    const size_t n_keys = sizeof keys / sizeof keys[0];
    for (int r = 0; r < j->rounds; r++) {
        for (size_t k = 0; k < n_keys; k++) {
            const char *key = keys[(k + (size_t)j->ith) % n_keys];
            const char *v = ember_model_meta_str(m, key);
            CHECK(j, v != NULL, "meta '%s' is NULL", key);
            if (v && !strcmp(key, "general.architecture")) CHECK(j, !strcmp(v, "llama"), "architecture '%s'", v);
        }
        CHECK(j, ember_model_meta_str(m, "no.such.key") == NULL, "a missing key has a value");
        CHECK(j, ember_model_meta_str(m, "llama.context_length") == NULL, "an integer key has a string value");
        CHECK(j, ember_model_n_vocab(m) > 0 && ember_model_n_layer(m) > 0, "hyperparameters");

        int32_t ids[64];
        size_t n = 0;
        ember_status st = ember_tokenize(m, PROMPT, strlen(PROMPT), 1, 1, ids, 64, &n);
        CHECK(j, st == EMBER_OK && n == j->n_prompt && !memcmp(ids, j->prompt, n * sizeof ids[0]),
              "tokenize: status %d, %zu ids", (int)st, n);
        char piece[32];
        for (size_t i = 0; i < n && i < 64; i++)
            CHECK(j, ember_token_to_piece(m, ids[i], 0, piece, sizeof piece) >= 0, "piece of %d", ids[i]);
        (void)ember_token_is_eog(m, ids[0]);

        /* errors of model-level calls: each thread must read back its own message */
        char want[128];
        st = ember_tokenize(m, PROMPT, strlen(PROMPT), 1, 1, ids, 64, NULL);
        CHECK(j, st == EMBER_ERR_INVALID_ARGUMENT, "tokenize with no count: status %d", (int)st);
        CHECK(j, strstr(ember_model_last_error(m), "ember_tokenize") != NULL, "last error '%s'", ember_model_last_error(m));
        const int32_t bad = 1000000 + j->ith;
        CHECK(j, ember_token_to_piece(m, bad, 0, piece, sizeof piece) < 0, "piece of id %d", bad);
        snprintf(want, sizeof want, "token id %d", (int)bad);
        CHECK(j, strstr(ember_model_last_error(m), want) != NULL, "last error '%s', wanted '%s'", ember_model_last_error(m), want);
        char kernel[32];
        snprintf(kernel, sizeof kernel, "no-such-level-%d", j->ith);
        ember_context_params cp = ember_context_default_params();
        cp.kernel = kernel;
        ember_context *ctx = NULL;
        st = ember_context_create(m, &cp, &ctx);
        CHECK(j, st == EMBER_ERR_INVALID_ARGUMENT && ctx == NULL, "context with kernel %s: status %d", kernel, (int)st);
        CHECK(j, strstr(ember_model_last_error(m), kernel) != NULL, "last error '%s', wanted '%s'", ember_model_last_error(m), kernel);

        /* a failed load: its message is the thread's own too */
        char missing[64];
        snprintf(missing, sizeof missing, "no-such-model-%d.gguf", j->ith);
        ember_model *none = NULL;
        char lerr[256];
        st = ember_model_load(missing, NULL, &none, lerr, sizeof lerr);
        CHECK(j, st == EMBER_ERR_IO && none == NULL && strstr(lerr, missing), "load of %s: status %d, '%s'", missing,
              (int)st, lerr);
        CHECK(j, strstr(ember_model_last_error(NULL), missing) != NULL, "load error '%s', wanted '%s'",
              ember_model_last_error(NULL), missing);
        CHECK(j, strstr(ember_model_last_error(m), kernel) != NULL, "a load failure replaced '%s'", ember_model_last_error(m));

        /* a context of its own on the shared model */
        cp = ember_context_default_params();
        cp.n_ctx = 64;
        cp.n_threads = 2;
        cp.backend = "cpu";
        st = ember_context_create(m, &cp, &ctx);
        CHECK(j, st == EMBER_OK, "context: %s", ember_model_last_error(m));
        if (st != EMBER_OK) continue;
        int32_t out[N_GEN];
        size_t n_out = 0;
        st = greedy(ctx, j->prompt, j->n_prompt, out, &n_out);
        CHECK(j, st == EMBER_OK && n_out == N_GEN && !memcmp(out, j->expect, sizeof out),
              "generate: status %d (%s), %zu tokens", (int)st, ember_context_last_error(ctx), n_out);
        const int32_t oov = ember_model_n_vocab(m) + j->ith;
        st = ember_decode(ctx, &oov, 1);
        snprintf(want, sizeof want, "has id %d", (int)oov);
        CHECK(j, st == EMBER_ERR_INVALID_ARGUMENT && strstr(ember_context_last_error(ctx), want),
              "decode of id %d: status %d, '%s'", (int)oov, (int)st, ember_context_last_error(ctx));
        ember_context_free(ctx);
    }
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL [THREADS] [ROUNDS]\n", argv[0]);
        return 2;
    }
    int n_threads = argc > 2 ? atoi(argv[2]) : 4;
    int rounds = argc > 3 ? atoi(argv[3]) : 3;
    if (n_threads < 1 || n_threads > MAX_THREADS || rounds < 1) {
        fprintf(stderr, "THREADS must be in [1, %d] and ROUNDS at least 1\n", MAX_THREADS);
        return 2;
    }
    char err[512];
    ember_model *m = NULL;
    if (ember_model_load(argv[1], NULL, &m, err, sizeof err) != EMBER_OK) {
        fprintf(stderr, "cannot load %s: %s\n", argv[1], err);
        return 2;
    }
    /* the expected results, from this thread alone before any other starts; no metadata is
     * asked for here, so that the threads are the first to ask */
    int32_t prompt[64];
    size_t n_prompt = 0;
    int32_t expect[N_GEN];
    size_t n_expect = 0;
    ember_context_params cp = ember_context_default_params();
    cp.n_ctx = 64;
    cp.n_threads = 2;
    cp.backend = "cpu";
    ember_context *ctx = NULL;
    if (ember_tokenize(m, PROMPT, strlen(PROMPT), 1, 1, prompt, 64, &n_prompt) != EMBER_OK || n_prompt == 0 ||
        n_prompt > 64 || ember_context_create(m, &cp, &ctx) != EMBER_OK ||
        greedy(ctx, prompt, n_prompt, expect, &n_expect) != EMBER_OK || n_expect != N_GEN) {
        fprintf(stderr, "the single-threaded reference run failed: %s / %s\n", ember_model_last_error(m),
                ctx ? ember_context_last_error(ctx) : "");
        ember_context_free(ctx);
        ember_model_free(m);
        return 1;
    }
    ember_context_free(ctx);

    job jobs[MAX_THREADS];
    em_thread *threads[MAX_THREADS];
    int failures = 0;
    for (int i = 0; i < n_threads; i++) {
        jobs[i] = (job){m, i, rounds, prompt, n_prompt, expect, 0};
        if (em_thread_start(&threads[i], run, &jobs[i]) != 0) {
            fprintf(stderr, "cannot start thread %d\n", i);
            n_threads = i;
            failures++;
            break;
        }
    }
    for (int i = 0; i < n_threads; i++) {
        em_thread_join(threads[i]);
        failures += jobs[i].failures;
    }
    ember_model_free(m);
    if (failures) {
        fprintf(stderr, "%d checks failed\n", failures);
        return 1;
    }
    printf("ok: %d threads x %d rounds on one model\n", n_threads, rounds);
    return 0;
}

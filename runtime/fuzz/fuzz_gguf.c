/* fuzz_gguf.c - libFuzzer target for the GGUF reader and the model loader.
 *
 * Each input is parsed as a GGUF file held in memory; when it parses, every metadata value
 * and every tensor byte the reader claims to own is touched, so AddressSanitizer sees any
 * range the validation let through. Inputs that parse are also written to a temporary file
 * and loaded as a model, which exercises the metadata and shape checks of model.c and the
 * tokenizer construction, and a context is created for it. Build with -DEMBER_FUZZ=ON (clang); run with runtime/fuzz/run_fuzz.sh.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ember.h"
#include "gguf.h"

#if defined(_WIN32)
#include <process.h>
#define getpid _getpid
#else
#include <unistd.h>
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint64_t sink;

static void touch(const void *p, uint64_t n) {
    const uint8_t *b = (const uint8_t *)p;
    uint64_t acc = 0;
    for (uint64_t i = 0; i < n; i++) acc += b[i];
    sink += acc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    em_gguf *g = NULL;
    char err[512];
    if (em_gguf_parse(data, size, &g, err, sizeof err) != 0) {
        if (err[0] == 0) abort(); /* every failure must say why */
        return 0;
    }
    for (uint64_t i = 0; i < g->n_kv; i++) {
        const em_gguf_kv *kv = &g->kv[i];
        touch(kv->key, strlen(kv->key));
        if (kv->type == EM_GGUF_STRING) touch(kv->str, kv->str_len);
        if (kv->type == EM_GGUF_ARRAY && kv->arr_type == EM_GGUF_STRING)
            for (uint64_t j = 0; j < kv->arr_n; j++) touch(kv->strs[j], kv->str_lens[j]);
    }
    for (uint64_t i = 0; i < g->n_tensors; i++) touch(g->tensors[i].data, g->tensors[i].nbytes);
    int has_arch = em_gguf_find(g, "general.architecture") != NULL;
    em_gguf_close(g);

    if (has_arch) {
        /* the loader maps files, so give it one */
        char path[512];
        const char *tmp = getenv("TMPDIR");
        snprintf(path, sizeof path, "%s/ember-fuzz-%d.gguf", tmp && tmp[0] ? tmp : "/tmp", (int)getpid());
        FILE *f = fopen(path, "wb");
        if (!f) return 0;
        fwrite(data, 1, size, f);
        fclose(f);
        ember_model *m = NULL;
        if (ember_model_load(path, NULL, &m, err, sizeof err) == EMBER_OK) {
            ember_context_params cp = ember_context_default_params();
            cp.n_ctx = 8;
            cp.n_threads = 1;
            ember_context *ctx = NULL;
            /* no decode: the forward pass on random weights would be fuzzing the numerics (inf
             * and NaN activations), which is not what this target is about */
            if (ember_context_create(m, &cp, &ctx) == EMBER_OK) ember_context_free(ctx);
            ember_model_free(m);
        } else if (err[0] == 0) {
            abort();
        }
        remove(path);
    }
    return 0;
}

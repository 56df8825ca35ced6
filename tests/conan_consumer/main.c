/* ember_consumer [MODEL PROMPT N]: print ember's version; with a model, the greedy ids of N
 * tokens after PROMPT, as one JSON object (the fields ember-cli --json uses). */
#include <ember.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc == 1) {
        printf("{\"version\": \"%s\"}\n", ember_version());
        return 0;
    }
    if (argc != 4) {
        fprintf(stderr, "usage: %s [MODEL PROMPT N]\n", argv[0]);
        return 2;
    }
    size_t n_gen = (size_t)strtoul(argv[3], NULL, 10);
    char err[512];
    ember_model *model = NULL;
    if (ember_model_load(argv[1], NULL, &model, err, sizeof err) != EMBER_OK) {
        fprintf(stderr, "cannot load %s: %s\n", argv[1], err);
        return 1;
    }
    ember_context *ctx = NULL;
    if (ember_context_create(model, NULL, &ctx) != EMBER_OK) {
        fprintf(stderr, "cannot create a context: %s\n", ember_model_last_error(model));
        return 1;
    }
    size_t n_prompt = 0;
    int32_t prompt[512];
    if (ember_tokenize(model, argv[2], strlen(argv[2]), 1, 1, prompt, 512, &n_prompt) != EMBER_OK ||
        n_prompt > 512) {
        fprintf(stderr, "cannot tokenize the prompt\n");
        return 1;
    }
    ember_sampler_params sp = ember_sampler_default_params();
    sp.temperature = 0.0f;
    ember_sampler *sampler = NULL;
    if (ember_sampler_create(&sp, &sampler) != EMBER_OK) {
        fprintf(stderr, "cannot create a sampler\n");
        return 1;
    }
    int32_t *out = calloc(n_gen ? n_gen : 1, sizeof *out);
    size_t n_out = 0;
    if (out == NULL ||
        ember_generate(ctx, sampler, prompt, n_prompt, n_gen, 1, out, &n_out) != EMBER_OK) {
        fprintf(stderr, "generation failed: %s\n", ember_context_last_error(ctx));
        return 1;
    }
    printf("{\"version\": \"%s\", \"prompt_ids\": [", ember_version());
    for (size_t i = 0; i < n_prompt; i++) printf("%s%d", i ? ", " : "", (int)prompt[i]);
    printf("], \"generated_ids\": [");
    for (size_t i = 0; i < n_out; i++) printf("%s%d", i ? ", " : "", (int)out[i]);
    printf("]}\n");
    free(out);
    ember_sampler_free(sampler);
    ember_context_free(ctx);
    ember_model_free(model);
    return 0;
}

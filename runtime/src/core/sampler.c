/* sampler.c - pick the next token from logits: greedy, or repetition penalty -> top-k ->
 * top-p -> min-p -> temperature -> draw. The random state lives in the sampler, so a seed
 * reproduces a run. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

struct ember_sampler {
    ember_sampler_params p;
    uint64_t rng;             /* xorshift64* state, never 0 */
    int32_t *history;         /* ring of the last repeat_last_n accepted tokens */
    int32_t n_history;
    int32_t history_pos;
};

typedef struct cand { float logit; int32_t id; } cand;

ember_sampler_params ember_sampler_default_params(void) {
    ember_sampler_params p;
    memset(&p, 0, sizeof p);
    p.temperature = 0.0f;
    p.top_k = 40;
    p.top_p = 0.95f;
    p.min_p = 0.05f;
    p.repeat_penalty = 1.0f;
    p.repeat_last_n = 64;
    p.seed = 0;
    return p;
}

static uint64_t splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static uint64_t next_u64(ember_sampler *s) {
    uint64_t x = s->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    s->rng = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* uniform in [0, 1) */
static double next_unit(ember_sampler *s) { return (double)(next_u64(s) >> 11) * (1.0 / 9007199254740992.0); }

ember_status ember_sampler_create(const ember_sampler_params *params, ember_sampler **out) {
    if (!out) return EMBER_ERR_INVALID_ARGUMENT;
    *out = NULL;
    ember_sampler *s = (ember_sampler *)calloc(1, sizeof *s);
    if (!s) return EMBER_ERR_OUT_OF_MEMORY;
    s->p = params ? *params : ember_sampler_default_params();
    if (s->p.repeat_last_n < 0) s->p.repeat_last_n = 0;
    if (s->p.repeat_last_n > 0) {
        s->history = (int32_t *)calloc((size_t)s->p.repeat_last_n, sizeof(int32_t));
        if (!s->history) { free(s); return EMBER_ERR_OUT_OF_MEMORY; }
    }
    ember_sampler_reset(s);
    *out = s;
    return EMBER_OK;
}

void ember_sampler_reset(ember_sampler *s) {
    if (!s) return;
    s->rng = splitmix64(s->p.seed);
    if (s->rng == 0) s->rng = 0x9E3779B97F4A7C15ull;
    s->n_history = 0;
    s->history_pos = 0;
}

void ember_sampler_free(ember_sampler *s) {
    if (!s) return;
    free(s->history);
    free(s);
}

void ember_sampler_accept(ember_sampler *s, int32_t token) {
    if (!s || s->p.repeat_last_n <= 0) return;
    s->history[s->history_pos] = token;
    s->history_pos = (s->history_pos + 1) % s->p.repeat_last_n;
    if (s->n_history < s->p.repeat_last_n) s->n_history++;
}

static int cmp_cand_desc(const void *a, const void *b) {
    const cand *x = (const cand *)a, *y = (const cand *)b;
    if (x->logit > y->logit) return -1;
    if (x->logit < y->logit) return 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

int32_t ember_sampler_sample(ember_sampler *s, const ember_context *ctx) {
    if (!s || !ctx) return -1;
    const float *logits = ember_get_logits(ctx);
    if (!logits) return -1;
    const int32_t n_vocab = ctx->model->hp.n_vocab;

    if (s->p.repeat_penalty == 1.0f || s->n_history == 0) {
        if (s->p.temperature <= 0.0f) {
            /* greedy: the first of equal maxima, as llama.cpp's greedy sampler picks */
            int32_t best = 0;
            for (int32_t i = 1; i < n_vocab; i++)
                if (logits[i] > logits[best]) best = i;
            return best;
        }
    }

    cand *c = (cand *)malloc((size_t)n_vocab * sizeof(cand));
    if (!c) return -1;
    for (int32_t i = 0; i < n_vocab; i++) { c[i].logit = logits[i]; c[i].id = i; }

    /* repetition penalty over distinct recent tokens: shrink positive logits, grow negative */
    if (s->p.repeat_penalty != 1.0f && s->p.repeat_penalty > 0.0f) {
        for (int32_t k = 0; k < s->n_history; k++) {
            int32_t id = s->history[k];
            if (id < 0 || id >= n_vocab) continue;
            int seen = 0;
            for (int32_t j = 0; j < k; j++) if (s->history[j] == id) { seen = 1; break; }
            if (seen) continue;
            if (c[id].logit > 0.0f) c[id].logit /= s->p.repeat_penalty;
            else c[id].logit *= s->p.repeat_penalty;
        }
    }

    int32_t result;
    if (s->p.temperature <= 0.0f) {
        int32_t best = 0;
        for (int32_t i = 1; i < n_vocab; i++) if (c[i].logit > c[best].logit) best = i;
        result = best;
        free(c);
        return result;
    }

    qsort(c, (size_t)n_vocab, sizeof(cand), cmp_cand_desc);
    int32_t n = n_vocab;
    if (s->p.top_k > 0 && s->p.top_k < n) n = s->p.top_k;

    /* softmax at temperature 1 for top-p and min-p, as llama.cpp orders the chain */
    double *pr = (double *)malloc((size_t)n * sizeof(double));
    if (!pr) { free(c); return -1; }
    double sum = 0.0;
    for (int32_t i = 0; i < n; i++) { pr[i] = exp((double)c[i].logit - (double)c[0].logit); sum += pr[i]; }
    for (int32_t i = 0; i < n; i++) pr[i] /= sum;
    if (s->p.top_p < 1.0f) {
        double cum = 0.0;
        for (int32_t i = 0; i < n; i++) {
            cum += pr[i];
            if (cum >= (double)s->p.top_p) { n = i + 1; break; }
        }
    }
    if (s->p.min_p > 0.0f) {
        const double floor_p = (double)s->p.min_p * pr[0];
        int32_t keep = 1;
        while (keep < n && pr[keep] >= floor_p) keep++;
        n = keep;
    }
    /* temperature, then draw */
    sum = 0.0;
    for (int32_t i = 0; i < n; i++) {
        pr[i] = exp(((double)c[i].logit - (double)c[0].logit) / (double)s->p.temperature);
        sum += pr[i];
    }
    double r = next_unit(s) * sum;
    result = c[n - 1].id;
    for (int32_t i = 0; i < n; i++) {
        r -= pr[i];
        if (r < 0.0) { result = c[i].id; break; }
    }
    free(pr);
    free(c);
    return result;
}

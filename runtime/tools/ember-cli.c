/* ember-cli - generate text with a GGUF model.
 *
 *   ember-cli -m MODEL (-p PROMPT | -f FILE) [-n N] [--temp T] [--seed S] [-t THREADS]
 *             [--top-k K] [--top-p P] [--min-p P] [--repeat-penalty R] [--repeat-last-n N]
 *             [-c N_CTX] [--ignore-eos] [--json] [--logits-out FILE] [--backend B]
 *
 * Exit status: 0 success, 1 bad usage, 2 model or input cannot be loaded, 3 generation failed.
 *
 * Text is UTF-8 everywhere inside: arguments, file names, the prompt, the output. On Windows,
 * main's argv is in the ANSI code page, which turns every character outside it into '?', so
 * the arguments are taken from the UTF-16 command line (GetCommandLineW) and converted to
 * UTF-8 before parsing, and files are opened with wide-character calls (_wfopen here,
 * CreateFileW in platform.c). This works on every Windows version ember supports; the
 * alternative, a manifest declaring the UTF-8 active code page, needs Windows 10 1903 or later
 * and leaves older systems silently mangling text. CommandLineToArgvW would do the splitting
 * but lives in shell32.dll, which the release archives must not depend on, so the CRT's
 * splitting rules are implemented below. Output to a console is written as UTF-16
 * (WriteConsoleW); to a pipe or file, as the UTF-8 bytes.
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ember.h"

/* The most prompt bytes -f reads. A larger file is refused, and so is an input that never ends
 * (/dev/zero, a FIFO that keeps writing): reading stops at the cap instead of growing the
 * buffer until memory runs out. 64 MiB is far beyond any context ember runs (it is about
 * 16 million tokens of English text at ~4 bytes a token, the most -c allows). */
#define MAX_PROMPT_BYTES ((size_t)64 << 20)

#if defined(_WIN32)
#include <windows.h>
#include <wchar.h>
static double now_ms(void) {
    LARGE_INTEGER f, c;
    QueryPerformanceFrequency(&f);
    QueryPerformanceCounter(&c);
    return (double)c.QuadPart * 1000.0 / (double)f.QuadPart;
}
#else
#include <time.h>
static double now_ms(void) {
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}
#endif

#include "tool_io.h"

enum { EXIT_USAGE = 1, EXIT_LOAD = 2, EXIT_RUN = 3 };

typedef struct options {
    const char *model;
    const char *prompt;
    const char *prompt_file;
    const char *logits_out;
    const char *backend;
    const char *kernel;
    long n_predict;
    long threads;
    long n_ctx;
    int json;
    int ignore_eos;
    int no_special;
    ember_sampler_params sp;
} options;

static void usage(FILE *f) {
    out_printf(f,
            "usage: ember-cli -m MODEL (-p PROMPT | -f FILE) [options]\n"
            "  -m, --model FILE        GGUF model\n"
            "  -p, --prompt TEXT       prompt text\n"
            "  -f, --file FILE         read the prompt from a file (UTF-8, at most 64 MiB)\n"
            "  -n, --n-predict N       tokens to generate (default 32)\n"
            "  -t, --threads N         threads (default: all CPUs)\n"
            "  -c, --ctx-size N        context size (default 512)\n"
            "      --temp T            temperature, 0 = greedy (default 0)\n"
            "      --seed S            random seed (default 0)\n"
            "      --top-k K           (default 40)\n"
            "      --top-p P           (default 0.95)\n"
            "      --min-p P           (default 0.05)\n"
            "      --repeat-penalty R  (default 1.0 = off)\n"
            "      --repeat-last-n N   (default 64)\n"
            "      --ignore-eos        do not stop at an end-of-generation token\n"
            "      --no-special        do not parse special tokens in the prompt\n"
            "      --json              print one JSON object\n"
            "      --logits-out FILE   write the first step's logits (float32 little-endian)\n"
            "      --backend B         auto, or one this build has: %s;\n"
            "                          auto: the first GPU that starts, else cpu (default auto)\n"
            "      --kernel K          SIMD level: scalar, sse42, avx2, avxvnni, avx512, neon, dotprod\n"
            "                          (default: $EMBER_KERNEL, else the best this CPU runs)\n"
            "  -h, --help\n"
            "  --version\n", ember_backends());
}

static int parse_long(const char *flag, const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        out_printf(stderr, "ember-cli: %s: '%s' is not an integer in [%ld, %ld]\n", flag, s, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_float(const char *flag, const char *s, double lo, double hi, float *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) {
        out_printf(stderr, "ember-cli: %s: '%s' is not a number in [%g, %g]\n", flag, s, lo, hi);
        return -1;
    }
    *out = (float)v;
    return 0;
}

static int parse_u64(const char *flag, const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    if (*s == '-') {
        out_printf(stderr, "ember-cli: %s: '%s' is not a non-negative integer\n", flag, s);
        return -1;
    }
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end) {
        out_printf(stderr, "ember-cli: %s: '%s' is not a non-negative integer\n", flag, s);
        return -1;
    }
    *out = (uint64_t)v;
    return 0;
}

/* 0 ok, 1 help/version printed, -1 error */
static int parse_args(int argc, char **argv, options *o) {
    memset(o, 0, sizeof *o);
    o->n_predict = 32;
    o->backend = NULL; /* the library: $EMBER_BACKEND, else auto */
    o->sp = ember_sampler_default_params();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 1; }
        if (!strcmp(a, "--version")) { out_printf(stdout, "ember-cli %s\n", ember_version()); return 1; }
        if (!strcmp(a, "--json")) { o->json = 1; continue; }
        if (!strcmp(a, "--ignore-eos")) { o->ignore_eos = 1; continue; }
        if (!strcmp(a, "--no-special")) { o->no_special = 1; continue; }
        if (i + 1 >= argc) {
            out_printf(stderr, "ember-cli: '%s' is an unknown option or lacks its value (see --help)\n", a);
            return -1;
        }
        const char *v = argv[i + 1];
        int rc = 0;
        long l;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) o->model = v;
        else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) o->prompt = v;
        else if (!strcmp(a, "-f") || !strcmp(a, "--file")) o->prompt_file = v;
        else if (!strcmp(a, "--logits-out")) o->logits_out = v;
        else if (!strcmp(a, "--kernel")) o->kernel = v;
        else if (!strcmp(a, "--backend")) {
            if (!backend_built_in(v)) {
                out_printf(stderr, "ember-cli: --backend: '%s' is not in this build (it has: auto, %s)\n", v, ember_backends());
                return -1;
            }
            o->backend = v;
        }
        else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict")) rc = parse_long(a, v, 0, 1 << 20, &o->n_predict);
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) rc = parse_long(a, v, 1, 1024, &o->threads);
        else if (!strcmp(a, "-c") || !strcmp(a, "--ctx-size")) rc = parse_long(a, v, 1, 1 << 24, &o->n_ctx);
        else if (!strcmp(a, "--temp")) rc = parse_float(a, v, 0.0, 100.0, &o->sp.temperature);
        else if (!strcmp(a, "--seed")) rc = parse_u64(a, v, &o->sp.seed);
        else if (!strcmp(a, "--top-k")) { rc = parse_long(a, v, 0, INT_MAX, &l); o->sp.top_k = (int32_t)l; }
        else if (!strcmp(a, "--top-p")) rc = parse_float(a, v, 0.0, 1.0, &o->sp.top_p);
        else if (!strcmp(a, "--min-p")) rc = parse_float(a, v, 0.0, 1.0, &o->sp.min_p);
        else if (!strcmp(a, "--repeat-penalty")) rc = parse_float(a, v, 0.0, 100.0, &o->sp.repeat_penalty);
        else if (!strcmp(a, "--repeat-last-n")) { rc = parse_long(a, v, 0, 1 << 20, &l); o->sp.repeat_last_n = (int32_t)l; }
        else {
            out_printf(stderr, "ember-cli: unknown option '%s' (see --help)\n", a);
            return -1;
        }
        if (rc) return -1;
        i++;
    }
    if (!o->model) { out_printf(stderr, "ember-cli: no model given (-m MODEL)\n"); return -1; }
    if (!o->prompt && !o->prompt_file) { out_printf(stderr, "ember-cli: no prompt given (-p PROMPT or -f FILE)\n"); return -1; }
    if (o->prompt && o->prompt_file) { out_printf(stderr, "ember-cli: give either -p or -f, not both\n"); return -1; }
    return 0;
}

/* The prompt file, at most MAX_PROMPT_BYTES; NULL (message printed) when it cannot be opened
 * or read or is larger. Reading goes in chunks up to the cap, so an input without an end
 * (a device, a FIFO) stops there rather than filling memory. */
static char *read_file(const char *path, size_t *len) {
    FILE *f = open_utf8(path, "rb");
    if (!f) {
        out_printf(stderr, "ember-cli: cannot open prompt file '%s': %s\n", path, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, n = 0;
    char *buf = (char *)malloc(cap + 1);
    int too_big = 0, bad = 0, err = 0;
    while (buf) {
        /* one byte beyond the cap tells a file of exactly MAX_PROMPT_BYTES from a larger one */
        size_t want = cap - n;
        errno = 0;
        size_t got = fread(buf + n, 1, want, f);
        n += got;
        if (got < want) {
            if (ferror(f)) { bad = 1; err = errno; }
            break;
        }
        if (n > MAX_PROMPT_BYTES) { too_big = 1; break; }
        size_t next = cap * 2 > MAX_PROMPT_BYTES + 1 ? MAX_PROMPT_BYTES + 1 : cap * 2;
        char *g = (char *)realloc(buf, next + 1);
        if (!g) { free(buf); buf = NULL; break; }
        buf = g;
        cap = next;
    }
    fclose(f);
    if (!buf) {
        out_printf(stderr, "ember-cli: out of memory reading prompt file '%s' (%zu bytes read)\n", path, n);
        return NULL;
    }
    if (too_big) {
        out_printf(stderr, "ember-cli: prompt file '%s' is larger than %zu bytes (the most -f reads)\n", path,
                   MAX_PROMPT_BYTES);
        free(buf);
        return NULL;
    }
    if (bad) {
        out_printf(stderr, "ember-cli: cannot read prompt file '%s' (after %zu bytes): %s\n", path, n,
                   err ? strerror(err) : "read error");
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

/* JSON string body: escapes quotes, backslashes and control bytes; invalid UTF-8 bytes become
 * U+FFFD so the output is always valid JSON. */
static void json_str(FILE *f, const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s;
    out_bytes(f, "\"", 1);
    for (size_t i = 0; i < n;) {
        unsigned char c = p[i];
        if (c == '"' || c == '\\') { char e[2] = {'\\', (char)c}; out_bytes(f, e, 2); i++; continue; }
        if (c < 0x20) {
            if (c == '\n') out_bytes(f, "\\n", 2);
            else if (c == '\t') out_bytes(f, "\\t", 2);
            else if (c == '\r') out_bytes(f, "\\r", 2);
            else out_printf(f, "\\u%04x", c);
            i++;
            continue;
        }
        if (c < 0x80) { out_bytes(f, (const char *)p + i, 1); i++; continue; }
        size_t len = c >= 0xF0 && c <= 0xF4 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 && c <= 0xDF ? 2 : 0;
        int ok = len > 0 && i + len <= n;
        for (size_t k = 1; ok && k < len; k++) ok = (p[i + k] & 0xC0) == 0x80;
        if (ok && len == 3) {
            unsigned cp = ((c & 0x0Fu) << 12) | ((p[i + 1] & 0x3Fu) << 6);
            ok = cp >= 0x800 && !(cp >= 0xD800 && cp <= 0xDFFF);
        }
        if (ok && len == 4) {
            unsigned cp = ((c & 0x07u) << 18) | ((p[i + 1] & 0x3Fu) << 12);
            ok = cp >= 0x10000 && cp <= 0x10FFFF;
        }
        if (ok) { out_bytes(f, (const char *)p + i, len); i += len; }
        else { out_bytes(f, "\\ufffd", 6); i++; }
    }
    out_bytes(f, "\"", 1);
}

static void json_ids(FILE *f, const int32_t *ids, size_t n) {
    out_bytes(f, "[", 1);
    for (size_t i = 0; i < n; i++) out_printf(f, "%s%d", i ? ", " : "", ids[i]);
    out_bytes(f, "]", 1);
}

/* Appends the text of tokens to a growing buffer. */
typedef struct textbuf { char *p; size_t n, cap; } textbuf;

static int text_append(textbuf *t, ember_model *m, int32_t id) {
    char piece[256];
    int32_t k = ember_token_to_piece(m, id, 0, piece, sizeof piece);
    if (k < 0) return -1;
    char *src = piece, *heap = NULL;
    if ((size_t)k > sizeof piece) {
        heap = (char *)malloc((size_t)k);
        if (!heap) return -1;
        ember_token_to_piece(m, id, 0, heap, (size_t)k);
        src = heap;
    }
    if (t->n + (size_t)k + 1 > t->cap) {
        size_t cap = (t->cap ? t->cap * 2 : 256) + (size_t)k;
        char *g = (char *)realloc(t->p, cap);
        if (!g) { free(heap); return -1; }
        t->p = g;
        t->cap = cap;
    }
    memcpy(t->p + t->n, src, (size_t)k);
    t->n += (size_t)k;
    t->p[t->n] = 0;
    free(heap);
    return 0;
}

static int write_logits(const char *path, const float *logits, int32_t n) {
    FILE *f = open_utf8(path, "wb");
    if (!f) {
        out_printf(stderr, "ember-cli: cannot write logits to '%s': %s\n", path, strerror(errno));
        return -1;
    }
    int ok = 1;
    for (int32_t i = 0; i < n && ok; i++) {
        uint32_t b;
        memcpy(&b, &logits[i], 4);
        unsigned char le[4] = {(unsigned char)b, (unsigned char)(b >> 8), (unsigned char)(b >> 16), (unsigned char)(b >> 24)};
        ok = fwrite(le, 1, 4, f) == 4;
    }
    if (fclose(f) != 0) ok = 0;
    if (!ok) out_printf(stderr, "ember-cli: error writing logits to '%s'\n", path);
    return ok ? 0 : -1;
}

int main(int argc, char **argv) {
#if defined(_WIN32)
    /* the ANSI argv loses every character outside the code page: use the UTF-16 command line */
    char **wide_argv = NULL; /* lives as long as the process, like the CRT's argv */
    argc = utf8_argv("ember-cli", &wide_argv);
    if (argc < 0) return EXIT_USAGE;
    argv = wide_argv;
#endif
    options o;
    int rc = parse_args(argc, argv, &o);
    if (rc) return rc > 0 ? 0 : EXIT_USAGE;

    size_t prompt_len = 0;
    char *prompt_buf = NULL;
    const char *prompt = o.prompt;
    if (o.prompt_file) {
        prompt_buf = read_file(o.prompt_file, &prompt_len);
        if (!prompt_buf) return EXIT_LOAD;
        prompt = prompt_buf;
    } else {
        prompt_len = strlen(prompt);
    }

    int exit_code = EXIT_RUN;
    ember_model *model = NULL;
    ember_context *ctx = NULL;
    ember_sampler *smp = NULL;
    int32_t *ids = NULL, *gen = NULL;
    textbuf text = {NULL, 0, 0};
    char err[1024];

    double t0 = now_ms();
    ember_status st = ember_model_load(o.model, NULL, &model, err, sizeof err);
    if (st != EMBER_OK) {
        out_printf(stderr, "ember-cli: error: %s (%s)\n", err, ember_strerror(st));
        exit_code = EXIT_LOAD;
        goto out;
    }
    ember_context_params cp = ember_context_default_params();
    cp.n_threads = (int32_t)o.threads;
    if (o.n_ctx) cp.n_ctx = (uint32_t)o.n_ctx;
    cp.kernel = o.kernel;
    cp.backend = o.backend;
    st = ember_context_create(model, &cp, &ctx);
    if (st != EMBER_OK) {
        out_printf(stderr, "ember-cli: error: cannot create a context: %s (%s)\n", ember_model_last_error(model), ember_strerror(st));
        goto out;
    }
    double load_ms = now_ms() - t0;

    size_t n_ids = 0;
    st = ember_tokenize(model, prompt, prompt_len, 1, !o.no_special, NULL, 0, &n_ids);
    if (st == EMBER_OK) {
        ids = (int32_t *)malloc((n_ids ? n_ids : 1) * sizeof(int32_t));
        if (!ids) st = EMBER_ERR_OUT_OF_MEMORY;
        else st = ember_tokenize(model, prompt, prompt_len, 1, !o.no_special, ids, n_ids, &n_ids);
    }
    if (st != EMBER_OK) {
        out_printf(stderr, "ember-cli: error: cannot tokenize the prompt: %s\n", ember_model_last_error(model));
        goto out;
    }
    if (n_ids == 0) {
        out_printf(stderr, "ember-cli: error: the prompt has no tokens\n");
        exit_code = EXIT_USAGE;
        goto out;
    }
    if (n_ids + (size_t)o.n_predict > ember_context_n_ctx(ctx)) {
        out_printf(stderr, "ember-cli: error: %zu prompt tokens + %ld to generate exceed the context of %u tokens (-c)\n",
                n_ids, o.n_predict, ember_context_n_ctx(ctx));
        exit_code = EXIT_USAGE;
        goto out;
    }
    if (ember_sampler_create(&o.sp, &smp) != EMBER_OK) {
        out_printf(stderr, "ember-cli: error: cannot create the sampler\n");
        goto out;
    }
    gen = (int32_t *)malloc(((size_t)o.n_predict + 1) * sizeof(int32_t));
    if (!gen) goto out;

    /* prompt: one batch; then one token per step */
    double t1 = now_ms();
    for (size_t i = 0; i < n_ids; i++) ember_sampler_accept(smp, ids[i]);
    st = ember_decode(ctx, ids, n_ids);
    if (st != EMBER_OK) {
        out_printf(stderr, "ember-cli: error: %s\n", ember_context_last_error(ctx));
        goto out;
    }
    double prompt_ms = now_ms() - t1;
    if (o.logits_out && write_logits(o.logits_out, ember_get_logits(ctx), ember_model_n_vocab(model)) != 0) goto out;

    double t2 = now_ms();
    size_t n_gen = 0;
    int stopped_eog = 0;
    for (long i = 0; i < o.n_predict; i++) {
        int32_t id = ember_sampler_sample(smp, ctx);
        if (id < 0) { out_printf(stderr, "ember-cli: error: sampling failed\n"); goto out; }
        gen[n_gen++] = id;
        ember_sampler_accept(smp, id);
        if (!o.ignore_eos && ember_token_is_eog(model, id)) { stopped_eog = 1; break; }
        if (text_append(&text, model, id) != 0) { out_printf(stderr, "ember-cli: error: cannot render token %d\n", id); goto out; }
        if (i + 1 < o.n_predict) {
            st = ember_decode(ctx, &id, 1);
            if (st != EMBER_OK) { out_printf(stderr, "ember-cli: error: %s\n", ember_context_last_error(ctx)); goto out; }
        }
    }
    double gen_ms = now_ms() - t2;
    /* tokens evaluated during generation: every generated token but the last */
    double gen_evals = n_gen > 0 ? (double)n_gen : 0.0;

    if (o.json) {
        FILE *f = stdout;
        out_printf(f, "{\"prompt_ids\": ");
        json_ids(f, ids, n_ids);
        out_printf(f, ", \"generated_ids\": ");
        json_ids(f, gen, n_gen);
        out_printf(f, ", \"text\": ");
        json_str(f, text.p ? text.p : "", text.n);
        out_printf(f, ", \"stopped_at_eog\": %s", stopped_eog ? "true" : "false");
        out_printf(f, ", \"backend\": \"%s\", \"kernel\": \"%s\", \"device\": ", ember_context_backend(ctx), ember_context_kernel(ctx));
        json_str(f, ember_context_device(ctx), strlen(ember_context_device(ctx)));
        out_printf(f, ", \"threads\": %ld", o.threads);
        out_printf(f, ", \"load_ms\": %.3f, \"prompt_ms\": %.3f, \"gen_ms\": %.3f", load_ms, prompt_ms, gen_ms);
        out_printf(f, ", \"prompt_tok_s\": %.3f, \"gen_tok_s\": %.3f",
                prompt_ms > 0 ? (double)n_ids * 1000.0 / prompt_ms : 0.0,
                gen_ms > 0 ? gen_evals * 1000.0 / gen_ms : 0.0);
        out_printf(f, ", \"version\": \"%s\"}\n", ember_version());
    } else {
        out_bytes(stdout, prompt, prompt_len);
        if (text.n) out_bytes(stdout, text.p, text.n);
        out_bytes(stdout, "\n", 1);
        out_printf(stderr, "ember-cli: %zu prompt tokens in %.1f ms (%.1f tok/s), %zu generated in %.1f ms (%.1f tok/s)\n",
                n_ids, prompt_ms, prompt_ms > 0 ? (double)n_ids * 1000.0 / prompt_ms : 0.0, n_gen, gen_ms,
                gen_ms > 0 ? gen_evals * 1000.0 / gen_ms : 0.0);
    }
    if (fflush(stdout) != 0) { out_printf(stderr, "ember-cli: error writing output\n"); goto out; }
    exit_code = 0;
out:
    free(text.p);
    free(gen);
    free(ids);
    ember_sampler_free(smp);
    ember_context_free(ctx);
    ember_model_free(model);
    free(prompt_buf);
    return exit_code;
}

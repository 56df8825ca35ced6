/* ember-server - an OpenAI-compatible HTTP server for GGUF models. The contract (options, exit
 * status, routes, fields, errors, metrics, chat templates, slots, speculative decoding) is
 * docs/server.md.
 *
 * Threads: civetweb's worker threads parse and validate requests, tokenize the prompt, and
 * put the request in a queue; one scheduler thread owns every slot (one target context, and
 * with -md one draft context, each) and runs the forward passes. A step gathers the pending
 * prompt tokens (in chunks) or the last sampled token (and the draft's proposals) of every busy
 * slot into one ember_decode_batch call, samples, and hands text pieces to each request; the
 * request's worker thread writes them to the client (server-sent events when streaming). When a
 * write fails (the client went away) the worker marks the request cancelled, and the scheduler
 * frees the slot before its next step.
 *
 * One mutex (g.mu) guards everything the threads share: the queue, the slots' request pointers
 * and the requests' output, the error state and the metrics. The scheduler never holds it during
 * a forward pass.
 *
 * Where docs/server.md leaves a choice open:
 *   - generation ends after limit = max_tokens (or, without one, n_ctx - prompt) tokens, the
 *     end-of-generation token counted (in usage, timings and return_tokens, as in ember-cli's
 *     generated_ids) but not rendered; max_tokens 0 answers at once without evaluating;
 *   - a request that fails in flight (a forward pass failed) is answered 500 server_error (an
 *     error event when streaming); the 503 of the error state is for the requests after it;
 *   - ember_requests_failed_total counts every generation request not answered 200, plus the
 *     streams ended by an error or a client that went away;
 *   - sampling with temperature > 0 is ember_sampler's chain with top_k 0 and min_p 0, so a
 *     seed gives the tokens of ember-cli --top-k 0 --min-p 0 with the same seed;
 *   - EMBER_SERVER_FAULT set to the empty string counts as unset;
 *   - --draft-min larger than --draft-max, and an unknown --chat-template name, are bad command
 *     lines (exit 1); --draft-max is at most 64, --max-queue at most 1024, -np at most 256;
 *   - an empty stop string is ignored (it would end every generation before its first token).
 */
#if !defined(_WIN32)
#  if !defined(_POSIX_C_SOURCE) && !defined(_GNU_SOURCE)
#    define _POSIX_C_SOURCE 200809L
#  endif
#  if defined(__APPLE__) && !defined(_DARWIN_C_SOURCE)
#    define _DARWIN_C_SOURCE
#  endif
#endif

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if !defined(_WIN32)
#include <signal.h>
#endif

#include "civetweb.h"
#include "cJSON.h"
#include "ember.h"
#include "server_threads.h"
#include "tool_io.h"

/* ---- limits and exit codes ------------------------------------------------------------ */

enum { EXIT_USAGE = 1, EXIT_MODEL = 2, EXIT_DRAFT = 3, EXIT_TEMPLATE = 4, EXIT_LISTEN = 5 };

#define MAX_BODY ((size_t)8 << 20)    /* request body cap (413 beyond) */
#define MAX_DRAIN ((long long)64 << 20) /* a refused body is read and dropped up to this */
#define MAX_STOP 4
#define MAX_DRAFT 64                  /* --draft-max at most */
#define MAX_SLOTS 256
#define MAX_QUEUE 1024
/* Speculative decoding pays when the ms per generated token of a drafted step (draft passes and
 * verification) are below those of a plain step. Both are measured per slot, as moving averages:
 * the plain cost in plain steps (the first of a request is not counted: it pays for caches
 * the prompt left cold), also every SPEC_REMEASURE drafted steps, the drafted cost after
 * SPEC_JUDGE_STEPS drafted steps. When drafting is slower, the slot stops drafting for
 * SPEC_BACKOFF_MIN plain steps (doubled after each failed probe, up to SPEC_BACKOFF_MAX), then
 * probes again with a short draft. */
#define SPEC_JUDGE_STEPS 4
#define SPEC_REMEASURE 32
#define SPEC_BACKOFF_MIN 16
#define SPEC_BACKOFF_MAX 256

enum { FIN_NONE = 0, FIN_STOP = 1, FIN_LENGTH = 2 };
enum { RQ_QUEUED = 0, RQ_ACTIVE = 1, RQ_DONE = 2 };
enum { TPL_CHATML, TPL_LLAMA3, TPL_MISTRAL, TPL_GEMMA, TPL_PHI3, TPL_COUNT };
static const char *const TEMPLATE_NAMES[TPL_COUNT] = {"chatml", "llama3", "mistral", "gemma", "phi3"};

/* ---- growing buffers -------------------------------------------------------------------- */

typedef struct sbuf { char *p; size_t n, cap; } sbuf;
typedef struct ibuf { int32_t *p; size_t n, cap; } ibuf;

static int sbuf_reserve(sbuf *b, size_t extra) {
    if (extra > SIZE_MAX / 2 - b->n) return -1;
    if (b->n + extra + 1 <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + extra + 1) cap *= 2;
    char *p = (char *)realloc(b->p, cap);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static int sbuf_add(sbuf *b, const char *s, size_t n) {
    if (sbuf_reserve(b, n)) return -1;
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return 0;
}

static int sbuf_adds(sbuf *b, const char *s) { return sbuf_add(b, s, strlen(s)); }

static void sbuf_free(sbuf *b) {
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

static int ibuf_add(ibuf *b, const int32_t *v, size_t n) {
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->n + n) cap *= 2;
        int32_t *p = (int32_t *)realloc(b->p, cap * sizeof(int32_t));
        if (!p) return -1;
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, v, n * sizeof(int32_t));
    b->n += n;
    return 0;
}

static void ibuf_free(ibuf *b) {
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

/* ---- UTF-8 ------------------------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at p[0..n), 0 when it is not one (or is cut short). */
static size_t utf8_seq(const unsigned char *p, size_t n) {
    unsigned char c = p[0];
    if (c < 0x80) return 1;
    size_t len = c >= 0xF0 && c <= 0xF4 ? 4 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xC2 && c <= 0xDF ? 2 : 0;
    if (!len || len > n) return 0;
    for (size_t k = 1; k < len; k++)
        if ((p[k] & 0xC0) != 0x80) return 0;
    if (len == 3) {
        unsigned cp = ((c & 0x0Fu) << 12) | ((p[1] & 0x3Fu) << 6);
        if (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    }
    if (len == 4) {
        unsigned cp = ((c & 0x07u) << 18) | ((p[1] & 0x3Fu) << 12);
        if (cp < 0x10000 || cp > 0x10FFFF) return 0;
    }
    return len;
}

/* A NUL-terminated copy of s[0..n) that is valid UTF-8: each byte that does not belong to a
 * valid sequence becomes U+FFFD (as ember-cli's --json does), and NUL bytes too (cJSON
 * takes C strings). NULL when out of memory. */
static char *utf8_clean(const char *s, size_t n) {
    if (n > (SIZE_MAX - 1) / 3) return NULL;
    char *out = (char *)malloc(n * 3 + 1);
    if (!out) return NULL;
    const unsigned char *p = (const unsigned char *)s;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t len = p[i] ? utf8_seq(p + i, n - i) : 0;
        if (len) {
            memcpy(out + o, p + i, len);
            o += len;
            i += len;
        } else {
            out[o++] = (char)0xEF;
            out[o++] = (char)0xBF;
            out[o++] = (char)0xBD;
            i++;
        }
    }
    out[o] = 0;
    return out;
}

/* The largest end <= n such that p[start..end) does not end inside a UTF-8 character that the
 * next bytes may complete: a lead byte followed by fewer continuation bytes than it announces
 * is held back (anything invalid is let through; the JSON encoder replaces it). */
static size_t utf8_safe_end(const char *s, size_t start, size_t n) {
    const unsigned char *p = (const unsigned char *)s;
    size_t i = n;
    for (int back = 0; i > start && back < 4; back++) {
        unsigned char c = p[i - 1];
        if ((c & 0xC0) != 0x80) {
            size_t need = c >= 0xF0 && c <= 0xF4 ? 4 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xC2 && c <= 0xDF ? 2 : 1;
            if (n - (i - 1) >= need) return n;
            /* the bytes so far must be continuations for the sequence to be worth waiting for */
            return i - 1;
        }
        i--;
    }
    return n;
}

static const char *find_bytes(const char *h, size_t hn, const char *nd, size_t nn) {
    if (nn == 0 || nn > hn) return NULL;
    for (size_t i = 0; i + nn <= hn; i++)
        if (h[i] == nd[0] && !memcmp(h + i, nd, nn)) return h + i;
    return NULL;
}

/* ---- options ----------------------------------------------------------------------------- */

typedef struct options {
    const char *model;
    const char *draft;
    long draft_max, draft_min;
    long parallel;
    long n_ctx;       /* 0: the default */
    const char *host;
    long port;
    long threads;
    const char *backend;
    const char *api_key;
    const char *chat_template;
    const char *alias;
    long max_queue;
} options;

static void usage(FILE *f) {
    out_printf(f,
            "usage: ember-server -m MODEL [options]\n"
            "  -m, --model FILE          the model that answers (GGUF)\n"
            "  -md, --model-draft FILE   a draft model for speculative decoding (same vocabulary)\n"
            "      --draft-max N         most tokens the draft proposes per step (default 16, at most %d)\n"
            "      --draft-min N         fewest tokens worth drafting (default 0)\n"
            "  -np, --parallel N         slots: requests served at once (default 1)\n"
            "  -c, --ctx-size N          tokens each slot holds (default 4096, at most the model's\n"
            "                            training context)\n"
            "      --host ADDR           address to listen on (default 127.0.0.1)\n"
            "      --port N              port, 0 picks a free one (default 8080)\n"
            "  -t, --threads N           threads of the forward pass (default: all CPUs)\n"
            "      --backend B           auto, or one this build has: %s (default auto)\n"
            "      --api-key KEY         require 'Authorization: Bearer KEY' on /v1/* (also $EMBER_API_KEY)\n"
            "      --chat-template NAME  chatml, llama3, mistral, gemma, phi3 (default: from the model)\n"
            "      --alias NAME          the model id /v1/models reports (default: the file name)\n"
            "      --max-queue N         requests that may wait for a slot (default 64, at most %d)\n"
            "  -h, --help\n"
            "      --version\n", MAX_DRAFT, ember_backends(), MAX_QUEUE);
}

static void die_msg(const char *fmt, ...) {
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    /* one line, whatever the messages it quotes hold */
    for (char *p = buf; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
    out_printf(stderr, "ember-server: error: %s\n", buf);
    fflush(stderr);
}

static int parse_long(const char *flag, const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        die_msg("%s: '%s' is not an integer in [%ld, %ld]", flag, s, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

static int template_by_name(const char *name) {
    for (int i = 0; i < TPL_COUNT; i++)
        if (!strcmp(name, TEMPLATE_NAMES[i])) return i;
    return -1;
}

/* 0 ok, 1 help or version printed, -1 error (printed) */
static int parse_args(int argc, char **argv, options *o) {
    memset(o, 0, sizeof *o);
    o->draft_max = 16;
    o->parallel = 1;
    o->host = "127.0.0.1";
    o->port = 8080;
    o->max_queue = 64;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 1; }
        if (!strcmp(a, "--version")) { out_printf(stdout, "ember-server %s\n", ember_version()); return 1; }
        if (a[0] != '-') {
            die_msg("unexpected argument '%s' (see --help)", a);
            return -1;
        }
        static const char *const known[] = {"-m", "--model", "-md", "--model-draft", "--draft-max", "--draft-min",
                                            "-np", "--parallel", "-c", "--ctx-size", "--host", "--port", "-t",
                                            "--threads", "--backend", "--api-key", "--chat-template", "--alias",
                                            "--max-queue", NULL};
        int is_known = 0;
        for (int k = 0; known[k]; k++)
            if (!strcmp(a, known[k])) is_known = 1;
        if (!is_known) {
            die_msg("unknown option '%s' (see --help)", a);
            return -1;
        }
        if (i + 1 >= argc) {
            die_msg("option '%s' lacks its value (see --help)", a);
            return -1;
        }
        const char *v = argv[++i];
        int rc = 0;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) o->model = v;
        else if (!strcmp(a, "-md") || !strcmp(a, "--model-draft")) o->draft = v;
        else if (!strcmp(a, "--draft-max")) rc = parse_long(a, v, 0, MAX_DRAFT, &o->draft_max);
        else if (!strcmp(a, "--draft-min")) rc = parse_long(a, v, 0, MAX_DRAFT, &o->draft_min);
        else if (!strcmp(a, "-np") || !strcmp(a, "--parallel")) rc = parse_long(a, v, 1, MAX_SLOTS, &o->parallel);
        else if (!strcmp(a, "-c") || !strcmp(a, "--ctx-size")) rc = parse_long(a, v, 1, 1L << 24, &o->n_ctx);
        else if (!strcmp(a, "--host")) o->host = v;
        else if (!strcmp(a, "--port")) rc = parse_long(a, v, 0, 65535, &o->port);
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) rc = parse_long(a, v, 1, 1024, &o->threads);
        else if (!strcmp(a, "--backend")) {
            if (!backend_built_in(v)) {
                die_msg("--backend: '%s' is not in this build (it has: auto, %s)", v, ember_backends());
                return -1;
            }
            o->backend = v;
        } else if (!strcmp(a, "--api-key")) o->api_key = v;
        else if (!strcmp(a, "--chat-template")) {
            if (template_by_name(v) < 0) {
                die_msg("--chat-template: '%s' is not one of chatml, llama3, mistral, gemma, phi3", v);
                return -1;
            }
            o->chat_template = v;
        } else if (!strcmp(a, "--alias")) o->alias = v;
        else if (!strcmp(a, "--max-queue")) rc = parse_long(a, v, 0, MAX_QUEUE, &o->max_queue);
        if (rc) return -1;
        if ((!strcmp(a, "--host") || !strcmp(a, "--alias") || !strcmp(a, "--api-key") || !strcmp(a, "-m") ||
             !strcmp(a, "--model") || !strcmp(a, "-md") || !strcmp(a, "--model-draft")) && !*v) {
            die_msg("option '%s' has an empty value", a);
            return -1;
        }
    }
    if (!o->model) { die_msg("no model given (-m MODEL)"); return -1; }
    if (o->draft_min > o->draft_max) {
        die_msg("--draft-min %ld is larger than --draft-max %ld", o->draft_min, o->draft_max);
        return -1;
    }
    return 0;
}

/* ---- chat templates ---------------------------------------------------------------------- */

static int template_detect(const char *t) {
    if (!t) return -1;
    if (strstr(t, "<|im_start|>")) return TPL_CHATML;
    if (strstr(t, "<|start_header_id|>")) return TPL_LLAMA3;
    if (strstr(t, "[INST]")) return TPL_MISTRAL;
    if (strstr(t, "<start_of_turn>")) return TPL_GEMMA;
    if (strstr(t, "<|user|>") && strstr(t, "<|end|>")) return TPL_PHI3;
    return -1;
}

typedef struct chat_msg { const char *role; const char *content; } chat_msg;

/* Mistral and Gemma: no system turn, so the system messages join the first user turn (or make
 * the one user turn when there is none). */
static int render_system_joined(int tpl, const chat_msg *m, size_t n, sbuf *out) {
    int rc = 0;
    sbuf sys = {NULL, 0, 0};
    int have_user = 0;
    for (size_t i = 0; i < n; i++)
        if (!strcmp(m[i].role, "system")) {
            if (sys.n) rc |= sbuf_adds(&sys, "\n\n");
            rc |= sbuf_adds(&sys, m[i].content);
        } else if (!strcmp(m[i].role, "user")) {
            have_user = 1;
        }
    int sys_done = sys.n == 0;
    for (size_t i = 0; i < n && !rc; i++) {
        const char *role = m[i].role;
        if (!strcmp(role, "system")) continue;
        int user = !strcmp(role, "user");
        if (tpl == TPL_MISTRAL) {
            if (user) {
                rc |= sbuf_adds(out, "[INST] ");
                if (!sys_done) {
                    rc |= sbuf_add(out, sys.p, sys.n);
                    rc |= sbuf_adds(out, "\n\n");
                    sys_done = 1;
                }
                rc |= sbuf_adds(out, m[i].content);
                rc |= sbuf_adds(out, " [/INST]");
            } else {
                rc |= sbuf_adds(out, m[i].content);
                rc |= sbuf_adds(out, "</s>");
            }
        } else {
            rc |= sbuf_adds(out, user ? "<start_of_turn>user\n" : "<start_of_turn>model\n");
            if (user && !sys_done) {
                rc |= sbuf_add(out, sys.p, sys.n);
                rc |= sbuf_adds(out, "\n\n");
                sys_done = 1;
            }
            rc |= sbuf_adds(out, m[i].content);
            rc |= sbuf_adds(out, "<end_of_turn>\n");
        }
    }
    if (!have_user && !sys_done && !rc) {
        /* only system messages: they make the one user turn */
        if (tpl == TPL_MISTRAL) {
            rc |= sbuf_adds(out, "[INST] ");
            rc |= sbuf_add(out, sys.p, sys.n);
            rc |= sbuf_adds(out, " [/INST]");
        } else {
            rc |= sbuf_adds(out, "<start_of_turn>user\n");
            rc |= sbuf_add(out, sys.p, sys.n);
            rc |= sbuf_adds(out, "<end_of_turn>\n");
        }
    }
    if (tpl == TPL_GEMMA) rc |= sbuf_adds(out, "<start_of_turn>model\n");
    sbuf_free(&sys);
    return rc ? -1 : 0;
}

/* Renders the messages (roles already checked: system, user, assistant) into out. */
static int template_render(int tpl, const chat_msg *m, size_t n, sbuf *out) {
    int rc = 0;
    /* the families that frame every message the same way: BEFORE role AFTER_ROLE content END,
     * then the assistant's opening */
    static const struct { int tpl; const char *before, *after_role, *end, *assistant; } framed[] = {
        {TPL_CHATML, "<|im_start|>", "\n", "<|im_end|>\n", "<|im_start|>assistant\n"},
        {TPL_LLAMA3, "<|start_header_id|>", "<|end_header_id|>\n\n", "<|eot_id|>",
         "<|start_header_id|>assistant<|end_header_id|>\n\n"},
        {TPL_PHI3, "<|", "|>\n", "<|end|>\n", "<|assistant|>\n"},
    };
    for (size_t f = 0; f < sizeof framed / sizeof framed[0]; f++) {
        if (framed[f].tpl != tpl) continue;
        for (size_t i = 0; i < n; i++) {
            rc |= sbuf_adds(out, framed[f].before);
            rc |= sbuf_adds(out, m[i].role);
            rc |= sbuf_adds(out, framed[f].after_role);
            rc |= sbuf_adds(out, m[i].content);
            rc |= sbuf_adds(out, framed[f].end);
        }
        rc |= sbuf_adds(out, framed[f].assistant);
        return rc ? -1 : 0;
    }
    return render_system_joined(tpl, m, n, out);
}

/* ---- requests and slots ------------------------------------------------------------------ */

typedef struct request {
    /* set by the worker thread before the request is queued, then read-only */
    int chat, stream, return_tokens;
    int32_t *prompt;
    size_t n_prompt;
    long long max_tokens; /* -1: none */
    float temperature, top_p;
    uint64_t seed;
    int n_stop;
    char *stop[MAX_STOP];
    size_t stop_len[MAX_STOP];
    char id[64];
    long long created;

    /* under g.mu */
    srv_cond cv;
    int state;       /* RQ_* */
    int cancelled;   /* the client is gone: the scheduler drops the request */
    struct request *next;
    sbuf text;       /* text the scheduler delivered that the worker has not taken yet */
    ibuf toks;       /* the same for the token ids */
    int finish;      /* FIN_* once done */
    int err_status;  /* once done: 0, or the HTTP status of the failure */
    char err_msg[512];
    size_t n_gen, prompt_n, draft_n, draft_acc;
    double prompt_ms, predicted_ms;
} request;

typedef struct cand { float logit; int32_t id; } cand;

typedef struct slot {
    int id;
    ember_context *ctx, *dctx;
    request *req;         /* NULL: free (under g.mu; only the scheduler changes it) */

    /* the scheduler's own state of the request in the slot */
    int32_t *toks;        /* prompt, then every generated token */
    size_t n_toks, n_prompt, n_eval; /* n_eval: prompt tokens in the cache */
    int generating;
    size_t n_gen, limit;
    sbuf text;            /* generated text */
    size_t text_sent;     /* bytes of text delivered to the request */
    ibuf new_toks;        /* generated ids not yet delivered */
    uint64_t rng;
    const char *fail;     /* set when the request must end with a 500 */
    double t_start, t_prompt_end;
    size_t draft_n, draft_acc;

    /* sampling scratch */
    cand *cands;
    double *probs;

    /* speculative decoding */
    int n_draft;          /* current draft length */
    int spec_off;         /* plain steps left before drafting (again) */
    int probe;            /* when spec_off runs out: start a new probe */
    int backoff;          /* plain steps of the next pause */
    int n_spec;           /* drafted steps since the last judgement */
    int since_plain;      /* drafted steps since the plain cost was last measured */
    int plain_steps;      /* plain generation steps of this request */
    double ema_spec, ema_plain; /* ms per generated token, drafting and not (0: unknown) */
    int32_t *prop;        /* proposals of this step (draft_max) */
    int32_t *vtoks;       /* [last, proposals...] */
    float *vlogits;       /* (draft_max + 1) * n_vocab */
    int k;                /* proposals planned / made this step */
    int step_acc;         /* proposals accepted this step */

    /* per step */
    size_t plan_n;        /* prompt tokens in this step */
    int in_batch;
} slot;

typedef struct server {
    options o;
    ember_model *model, *draft;
    int32_t n_vocab;
    int n_slots;
    slot *slots;
    ember_batch_seq *seqs;
    int prompt_turn;        /* the slot where the next step starts looking for a prompt */
    int tpl;
    const char *alias;
    long long model_bytes;
    long long created;
    uint32_t n_ctx_slot;
    uint32_t chunk;       /* prompt tokens a slot feeds per step */
    const char *api_key;
    int draft_warned;

    srv_mutex mu;
    srv_cond sched_cv;
    request *q_head, *q_tail;
    int q_len;
    int busy;
    int handlers;         /* generation requests being answered by the workers */
    srv_cond idle_cv;     /* signalled when handlers drops to 0 */
    int stopping;
    int error_state;
    char error_msg[512];
    unsigned long long next_id;

    /* metrics (under mu) */
    unsigned long long m_req_completions, m_req_chat, m_req_failed;
    unsigned long long m_prompt_tokens, m_gen_tokens, m_draft_proposed, m_draft_accepted;
    double m_prompt_tps, m_gen_tps;
} server;

static server g;

/* ---- sampling ------------------------------------------------------------------------------
 * The same choices as ember_sampler (runtime/src/core/sampler.c) with top_k 0, min_p 0 and no
 * repetition penalty, from any row of logits: greedy is the first of equal maxima; otherwise
 * candidates sorted by logit (ties by id), top-p over the softmax at temperature 1, then the
 * softmax at the temperature and one xorshift64* draw seeded by splitmix64(seed). A request
 * with seed S therefore gets the tokens of `ember-cli --temp T --top-p P --top-k 0 --min-p 0
 * --seed S`. */

static uint64_t splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static double rng_unit(uint64_t *state) {
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return (double)((x * 0x2545F4914F6CDD1Dull) >> 11) * (1.0 / 9007199254740992.0);
}

static int32_t argmax(const float *logits, int32_t n) {
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (logits[i] > logits[best]) best = i;
    return best;
}

static int cmp_cand_desc(const void *a, const void *b) {
    const cand *x = (const cand *)a, *y = (const cand *)b;
    if (x->logit > y->logit) return -1;
    if (x->logit < y->logit) return 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static int32_t sample_row(slot *s, const float *logits) {
    const request *r = s->req;
    const int32_t V = g.n_vocab;
    if (r->temperature <= 0.0f) return argmax(logits, V);
    cand *c = s->cands;
    double *pr = s->probs;
    for (int32_t i = 0; i < V; i++) { c[i].logit = logits[i]; c[i].id = i; }
    qsort(c, (size_t)V, sizeof(cand), cmp_cand_desc);
    int32_t n = V;
    double sum = 0.0;
    if (r->top_p < 1.0f) {
        for (int32_t i = 0; i < n; i++) { pr[i] = exp((double)c[i].logit - (double)c[0].logit); sum += pr[i]; }
        for (int32_t i = 0; i < n; i++) pr[i] /= sum;
        double cum = 0.0;
        for (int32_t i = 0; i < n; i++) {
            cum += pr[i];
            if (cum >= (double)r->top_p) { n = i + 1; break; }
        }
    }
    sum = 0.0;
    for (int32_t i = 0; i < n; i++) {
        pr[i] = exp(((double)c[i].logit - (double)c[0].logit) / (double)r->temperature);
        sum += pr[i];
    }
    double x = rng_unit(&s->rng) * sum;
    int32_t result = c[n - 1].id;
    for (int32_t i = 0; i < n; i++) {
        x -= pr[i];
        if (x < 0.0) { result = c[i].id; break; }
    }
    return result;
}

/* ---- the scheduler ------------------------------------------------------------------------ */

static void request_free(request *r) {
    if (!r) return;
    free(r->prompt);
    for (int i = 0; i < r->n_stop; i++) free(r->stop[i]);
    sbuf_free(&r->text);
    ibuf_free(&r->toks);
    srv_cond_destroy(&r->cv);
    free(r);
}

/* Ends the request in slot s (under g.mu): delivers what is left, sets the result, frees the
 * slot. err_status 0: a normal end with finish. */
static void slot_end(slot *s, int finish, int err_status, const char *msg) {
    request *r = s->req;
    double now = srv_now_ms();
    if (!err_status && !r->cancelled) {
        if (s->text.n > s->text_sent && sbuf_add(&r->text, s->text.p + s->text_sent, s->text.n - s->text_sent))
            err_status = 500, msg = "out of memory";
        if (s->new_toks.n && ibuf_add(&r->toks, s->new_toks.p, s->new_toks.n)) err_status = 500, msg = "out of memory";
    }
    r->finish = finish;
    r->err_status = err_status;
    if (msg) snprintf(r->err_msg, sizeof r->err_msg, "%s", msg);
    r->n_gen = s->n_gen;
    r->prompt_n = s->generating ? s->n_eval : 0;
    r->prompt_ms = s->generating ? s->t_prompt_end - s->t_start : 0.0;
    r->predicted_ms = s->generating ? now - s->t_prompt_end : 0.0;
    r->draft_n = s->draft_n;
    r->draft_acc = s->draft_acc;
    if (!err_status && !r->cancelled) {
        g.m_gen_tokens += s->n_gen;
        if (s->n_gen > 0 && r->predicted_ms > 0) g.m_gen_tps = (double)s->n_gen * 1000.0 / r->predicted_ms;
    }
    r->state = RQ_DONE;
    srv_cond_broadcast(&r->cv);
    s->req = NULL;
    g.busy--;
    ember_context_reset(s->ctx);
    if (s->dctx) ember_context_reset(s->dctx);
    free(s->toks);
    s->toks = NULL;
    sbuf_free(&s->text);
    ibuf_free(&s->new_toks);
}

/* Fails a request still in the queue (under g.mu). */
static void queued_fail(request *r, int status, const char *msg) {
    r->state = RQ_DONE;
    r->err_status = status;
    snprintf(r->err_msg, sizeof r->err_msg, "%s", msg);
    srv_cond_broadcast(&r->cv);
}

static void spec_reset(slot *s) {
    int floor_k = g.o.draft_min > 1 ? (int)g.o.draft_min : 1;
    int k = 4 > floor_k ? 4 : floor_k;
    s->n_draft = k < (int)g.o.draft_max ? k : (int)g.o.draft_max;
}

/* Puts request r into the free slot s (under g.mu). */
static void slot_start(slot *s, request *r) {
    s->req = r;
    r->state = RQ_ACTIVE;
    g.busy++;
    s->n_prompt = r->n_prompt;
    s->limit = r->max_tokens >= 0 ? (size_t)r->max_tokens : (size_t)g.n_ctx_slot - r->n_prompt;
    s->n_toks = 0;
    s->n_eval = 0;
    s->n_gen = 0;
    s->generating = 0;
    s->text_sent = 0;
    s->fail = NULL;
    s->draft_n = s->draft_acc = 0;
    s->rng = splitmix64(r->seed);
    if (s->rng == 0) s->rng = 0x9E3779B97F4A7C15ull;
    s->t_start = srv_now_ms();
    s->t_prompt_end = s->t_start;
    spec_reset(s);
    /* an unknown plain cost is measured first (the first plain step is not counted) */
    s->spec_off = s->ema_plain > 0 ? 0 : 3;
    s->probe = 0;
    s->backoff = SPEC_BACKOFF_MIN;
    s->n_spec = 0;
    s->since_plain = 0;
    s->plain_steps = 0;
    s->ema_spec = 0;
    s->toks = (int32_t *)malloc((s->n_prompt + s->limit + (size_t)g.o.draft_max + 2) * sizeof(int32_t));
    if (!s->toks) {
        slot_end(s, FIN_NONE, 500, "out of memory");
        return;
    }
    memcpy(s->toks, r->prompt, s->n_prompt * sizeof(int32_t));
    s->n_toks = s->n_prompt;
    if (s->limit == 0) {
        /* max_tokens 0: nothing to generate, nothing to evaluate */
        slot_end(s, FIN_LENGTH, 0, NULL);
    }
}

/* Appends one generated token; returns FIN_* when it ends the request. */
static int emit_token(slot *s, int32_t t) {
    const request *r = s->req;
    s->toks[s->n_toks++] = t;
    s->n_gen++;
    if (ibuf_add(&s->new_toks, &t, 1)) s->fail = "out of memory";
    if (ember_token_is_eog(g.model, t)) return FIN_STOP;
    char piece[256];
    int32_t k = ember_token_to_piece(g.model, t, 0, piece, sizeof piece);
    if (k > 0) {
        if ((size_t)k <= sizeof piece) {
            if (sbuf_add(&s->text, piece, (size_t)k)) s->fail = "out of memory";
        } else if (sbuf_reserve(&s->text, (size_t)k) == 0) {
            ember_token_to_piece(g.model, t, 0, s->text.p + s->text.n, (size_t)k);
            s->text.n += (size_t)k;
            s->text.p[s->text.n] = 0;
        } else {
            s->fail = "out of memory";
        }
    }
    if (r->n_stop && s->text.n > s->text_sent) {
        const char *base = s->text.p + s->text_sent;
        size_t len = s->text.n - s->text_sent;
        const char *first = NULL;
        for (int i = 0; i < r->n_stop; i++) {
            const char *f = find_bytes(base, len, r->stop[i], r->stop_len[i]);
            if (f && (!first || f < first)) first = f;
        }
        if (first) {
            s->text.n = (size_t)(first - s->text.p);
            s->text.p[s->text.n] = 0;
            return FIN_STOP;
        }
    }
    if (s->n_gen >= s->limit) return FIN_LENGTH;
    return FIN_NONE;
}

/* The end of the text that may be sent now: not a byte that could start a stop string, nor
 * inside a UTF-8 character. */
static size_t safe_end(const slot *s) {
    const request *r = s->req;
    size_t end = s->text.n;
    for (int i = 0; i < r->n_stop; i++) {
        size_t max = r->stop_len[i] - 1;
        if (max > s->text.n - s->text_sent) max = s->text.n - s->text_sent;
        for (size_t l = max; l > 0; l--)
            if (!memcmp(s->text.p + s->text.n - l, r->stop[i], l)) {
                if (s->text.n - l < end) end = s->text.n - l;
                break;
            }
    }
    return utf8_safe_end(s->text.p, s->text_sent, end);
}

/* Delivers the text and ids ready in s to its request (under g.mu). */
static void slot_deliver(slot *s) {
    request *r = s->req;
    size_t end = safe_end(s);
    int any = 0;
    if (end > s->text_sent) {
        if (sbuf_add(&r->text, s->text.p + s->text_sent, end - s->text_sent)) s->fail = "out of memory";
        s->text_sent = end;
        any = 1;
    }
    if (s->new_toks.n) {
        if (ibuf_add(&r->toks, s->new_toks.p, s->new_toks.n)) s->fail = "out of memory";
        s->new_toks.n = 0;
        any = 1;
    }
    if (any) srv_cond_broadcast(&r->cv);
}

/* Tokens the draft proposes this step for slot s (0: a plain step). */
static int plan_draft(slot *s) {
    if (!s->dctx || g.o.draft_max <= 0) return 0;
    if (s->spec_off > 0) {
        s->spec_off--;
        if (s->spec_off == 0 && s->probe) {
            /* a probe: start small again, and judge it on its own steps */
            spec_reset(s);
            s->n_spec = 0;
            s->probe = 0;
        }
        return 0;
    }
    size_t remaining = s->limit - s->n_gen; /* >= 1 while generating */
    long k = s->n_draft;
    if ((size_t)k > remaining - 1) k = (long)(remaining - 1);
    long floor_k = g.o.draft_min > 1 ? g.o.draft_min : 1;
    if (k < floor_k) return 0;
    return (int)k;
}

/* Runs the draft for every slot with s->k > 0: up to k greedy proposals each, the drafts of all
 * slots batched. s->k becomes the number of proposals made. */
static void draft_phase(void) {
    int kmax = 0;
    for (int i = 0; i < g.n_slots; i++)
        if (g.slots[i].in_batch && g.slots[i].k > kmax) kmax = g.slots[i].k;
    for (int j = 0; j < kmax; j++) {
        size_t n = 0;
        for (int i = 0; i < g.n_slots; i++) {
            slot *s = &g.slots[i];
            if (!s->in_batch || s->k <= j) continue;
            ember_batch_seq *q = &g.seqs[n++];
            q->ctx = s->dctx;
            q->logits = NULL;
            if (j == 0) {
                /* what the draft lacks of the sequence: at least the last token */
                size_t dp = ember_context_n_past(s->dctx);
                q->tokens = s->toks + dp;
                q->n_tokens = s->n_toks - dp;
            } else {
                q->tokens = &s->prop[j - 1];
                q->n_tokens = 1;
            }
        }
        if (!n) break;
        ember_status st = ember_decode_batch(g.seqs, n);
        if (st != EMBER_OK) {
            if (!g.draft_warned) {
                out_printf(stderr, "ember-server: warning: the draft's forward pass failed (%s); those steps go on without it\n",
                           ember_context_last_error(g.seqs[0].ctx));
                g.draft_warned = 1;
            }
            for (int i = 0; i < g.n_slots; i++) {
                slot *s = &g.slots[i];
                if (s->in_batch && s->k > j) s->k = j;
            }
            break;
        }
        for (int i = 0; i < g.n_slots; i++) {
            slot *s = &g.slots[i];
            if (!s->in_batch || s->k <= j) continue;
            const float *lg = ember_get_logits(s->dctx);
            if (!lg) { s->k = j; continue; }
            s->prop[j] = argmax(lg, g.n_vocab);
        }
    }
    long floor_k = g.o.draft_min > 1 ? g.o.draft_min : 1;
    for (int i = 0; i < g.n_slots; i++) {
        slot *s = &g.slots[i];
        if (s->in_batch && s->k > 0 && s->k < floor_k) s->k = 0; /* too short to verify */
    }
}

/* Adapts the draft length and decides whether drafting pays, after a drafted step of slot s
 * that proposed k tokens, got a accepted and emitted n_out tokens in ms milliseconds. */
static void spec_adapt(slot *s, int k, int a, int n_out, double ms) {
    int floor_k = g.o.draft_min > 1 ? (int)g.o.draft_min : 1;
    if (a == k) {
        int grow = s->n_draft / 2 > 1 ? s->n_draft / 2 : 1;
        s->n_draft = s->n_draft + grow < (int)g.o.draft_max ? s->n_draft + grow : (int)g.o.draft_max;
    } else {
        int want = a + 1 > s->n_draft / 2 ? a + 1 : s->n_draft / 2;
        if (want > s->n_draft - 1) want = s->n_draft - 1;
        s->n_draft = want > floor_k ? want : floor_k;
    }
    if (n_out <= 0) return;
    double mpt = ms / n_out;
    s->ema_spec = s->n_spec ? 0.7 * s->ema_spec + 0.3 * mpt : mpt;
    s->n_spec++;
    s->since_plain++;
    if (s->n_spec >= SPEC_JUDGE_STEPS && s->ema_plain > 0) {
        if (s->ema_spec > s->ema_plain) {
            /* slower than plain decoding: pause, and probe again later */
            s->spec_off = s->backoff;
            s->probe = 1;
            s->backoff = s->backoff * 2 < SPEC_BACKOFF_MAX ? s->backoff * 2 : SPEC_BACKOFF_MAX;
            s->n_spec = 0;
            s->since_plain = 0;
            return;
        }
        s->backoff = SPEC_BACKOFF_MIN;
    }
    if (s->since_plain >= SPEC_REMEASURE) {
        /* the plain cost changes with the other slots' load: measure it again */
        s->spec_off = 2;
        s->since_plain = 0;
    }
}

/* Enters the error state after a failed forward pass (under g.mu). */
static void fail_all(const char *why) {
    g.error_state = 1;
    snprintf(g.error_msg, sizeof g.error_msg, "forward pass failed: %s", why);
    for (int i = 0; i < g.n_slots; i++)
        if (g.slots[i].req) slot_end(&g.slots[i], FIN_NONE, 500, g.error_msg);
    while (g.q_head) {
        request *r = g.q_head;
        g.q_head = r->next;
        g.q_len--;
        queued_fail(r, 503, g.error_msg);
    }
    g.q_tail = NULL;
    out_printf(stderr, "ember-server: error: %s; every generation request is now answered 503\n", g.error_msg);
    fflush(stderr);
}

static void step(void) {
    /* plan: the busy slots do not change outside this thread (workers only set cancelled) */
    int any_draft = 0, prompt_taken = 0;
    /* start the search for a prompt at a different slot each step, so that prompts take
     * turns */
    const int first = g.prompt_turn;
    for (int j = 0; j < g.n_slots; j++) {
        slot *s = &g.slots[(first + j) % g.n_slots];
        s->in_batch = s->req != NULL;
        s->k = 0;
        if (!s->in_batch) continue;
        if (!s->generating) {
            /* one prompt chunk per pass: it then takes the batch kernels of its own length, as
             * in ember-cli, while the generating slots take the one-token kernels, so every
             * request gets the tokens it would get alone */
            if (prompt_taken) {
                s->in_batch = 0;
                continue;
            }
            prompt_taken = 1;
            g.prompt_turn = (int)(s - g.slots + 1) % g.n_slots;
            size_t left = s->n_prompt - s->n_eval;
            s->plan_n = left < g.chunk ? left : g.chunk;
        } else {
            s->k = plan_draft(s);
            if (s->k) any_draft = 1;
        }
    }
    double t0 = srv_now_ms();
    if (any_draft) draft_phase();
    double t1 = srv_now_ms();

    size_t n = 0;
    for (int i = 0; i < g.n_slots; i++) {
        slot *s = &g.slots[i];
        if (!s->in_batch) continue;
        ember_batch_seq *q = &g.seqs[n++];
        q->ctx = s->ctx;
        q->logits = NULL;
        /* generation steps and draft verification: one-token kernels, so the logits are those
         * of decoding alone one token at a time, bit for bit, whatever else is in the pass */
        q->exact = s->generating;
        if (!s->generating) {
            q->tokens = s->toks + s->n_eval;
            q->n_tokens = s->plan_n;
        } else if (s->k > 0) {
            s->vtoks[0] = s->toks[s->n_toks - 1];
            memcpy(s->vtoks + 1, s->prop, (size_t)s->k * sizeof(int32_t));
            q->tokens = s->vtoks;
            q->n_tokens = (size_t)s->k + 1;
            q->logits = s->vlogits;
        } else {
            q->tokens = s->toks + s->n_toks - 1;
            q->n_tokens = 1;
        }
    }
    if (!n) return;
    ember_status st = ember_decode_batch(g.seqs, n);
    double t2 = srv_now_ms();
    if (st != EMBER_OK) {
        char why[300];
        const char *msg = ember_context_last_error(g.seqs[0].ctx);
        if (msg && *msg) snprintf(why, sizeof why, "%s (%s)", msg, ember_strerror(st));
        else snprintf(why, sizeof why, "%s", ember_strerror(st));
        srv_mutex_lock(&g.mu);
        fail_all(why);
        srv_mutex_unlock(&g.mu);
        return;
    }

    /* sample (no lock: only this thread touches the slots' generation state) */
    int fin[MAX_SLOTS];
    int prompt_done[MAX_SLOTS];
    for (int i = 0; i < g.n_slots; i++) {
        slot *s = &g.slots[i];
        fin[i] = FIN_NONE;
        prompt_done[i] = 0;
        if (!s->in_batch) continue;
        if (!s->generating) {
            s->n_eval += s->plan_n;
            if (s->n_eval < s->n_prompt) continue;
            s->generating = 1;
            s->t_prompt_end = srv_now_ms();
            prompt_done[i] = 1;
            const float *lg = ember_get_logits(s->ctx);
            if (lg) fin[i] = emit_token(s, sample_row(s, lg));
            else s->fail = "the forward pass gave no logits";
        } else if (s->k > 0) {
            const int k = s->k;
            int a = 0, n_out = 0;
            for (int r = 0; r <= k; r++) {
                int32_t t = sample_row(s, s->vlogits + (size_t)r * (size_t)g.n_vocab);
                int match = r < k && t == s->prop[r];
                if (match) a++;
                n_out++;
                fin[i] = emit_token(s, t);
                if (fin[i] || !match) break;
            }
            s->draft_n += (size_t)k;
            s->draft_acc += (size_t)a;
            s->step_acc = a;
            if (!fin[i]) {
                /* keep what was accepted: the target holds the sequence but its last token */
                ember_context_truncate(s->ctx, (uint32_t)(s->n_toks - 1));
            }
            spec_adapt(s, k, a, n_out, (t1 - t0) + (t2 - t1));
        } else {
            const float *lg = ember_get_logits(s->ctx);
            if (lg) fin[i] = emit_token(s, sample_row(s, lg));
            else s->fail = "the forward pass gave no logits";
            double mpt = t2 - t1;
            if (s->plain_steps++ > 0) s->ema_plain = s->ema_plain > 0 ? 0.7 * s->ema_plain + 0.3 * mpt : mpt;
        }
        if (s->dctx && s->generating && !fin[i]) {
            uint32_t dp = ember_context_n_past(s->dctx);
            if (dp > s->n_toks - 1) ember_context_truncate(s->dctx, (uint32_t)(s->n_toks - 1));
        }
    }

    srv_mutex_lock(&g.mu);
    for (int i = 0; i < g.n_slots; i++) {
        slot *s = &g.slots[i];
        if (!s->in_batch || !s->req) continue;
        if (prompt_done[i]) {
            g.m_prompt_tokens += s->n_prompt;
            double ms = s->t_prompt_end - s->t_start;
            if (ms > 0) g.m_prompt_tps = (double)s->n_prompt * 1000.0 / ms;
        }
        if (s->k > 0) {
            g.m_draft_proposed += (unsigned)s->k;
            g.m_draft_accepted += (unsigned)s->step_acc;
        }
        if (s->req->cancelled) continue; /* dropped before the next step */
        if (s->fail) {
            slot_end(s, FIN_NONE, 500, s->fail);
            continue;
        }
        if (fin[i]) slot_end(s, fin[i], 0, NULL);
        else slot_deliver(s);
    }
    srv_mutex_unlock(&g.mu);
}

static void scheduler_main(void *arg) {
    (void)arg;
    for (;;) {
        srv_mutex_lock(&g.mu);
        for (;;) {
            for (int i = 0; i < g.n_slots; i++)
                if (g.slots[i].req && g.slots[i].req->cancelled) slot_end(&g.slots[i], FIN_NONE, 499, "cancelled");
            if (g.stopping) {
                for (int i = 0; i < g.n_slots; i++)
                    if (g.slots[i].req) slot_end(&g.slots[i], FIN_NONE, 503, "the server is shutting down");
                while (g.q_head) {
                    request *r = g.q_head;
                    g.q_head = r->next;
                    g.q_len--;
                    queued_fail(r, 503, "the server is shutting down");
                }
                g.q_tail = NULL;
                srv_mutex_unlock(&g.mu);
                return;
            }
            for (int i = 0; i < g.n_slots && g.q_head; i++) {
                if (g.slots[i].req) continue;
                request *r = g.q_head;
                g.q_head = r->next;
                if (!g.q_head) g.q_tail = NULL;
                g.q_len--;
                r->next = NULL;
                slot_start(&g.slots[i], r);
            }
            if (g.busy > 0) break;
            srv_cond_wait(&g.sched_cv, &g.mu);
        }
        srv_mutex_unlock(&g.mu);
        step();
    }
}

/* ---- HTTP responses ------------------------------------------------------------------------ */

static const char *reason_phrase(int status) {
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Payload Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Error";
    }
}

/* Writes all of buf; 0 on success, -1 when the client is gone. */
static int write_all(struct mg_connection *conn, const char *buf, size_t n) {
    while (n > 0) {
        size_t part = n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n;
        int w = mg_write(conn, buf, part);
        if (w <= 0) return -1;
        buf += w;
        n -= (size_t)w;
    }
    return 0;
}

static int send_body(struct mg_connection *conn, int status, const char *ctype, const char *body, size_t n,
                     const char *extra_headers) {
    char head[512];
    int hn = snprintf(head, sizeof head,
                      "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %lu\r\nCache-Control: no-cache\r\n"
                      "Connection: close\r\n%s\r\n",
                      status, reason_phrase(status), ctype, (unsigned long)n, extra_headers ? extra_headers : "");
    if (hn > 0 && hn < (int)sizeof head && write_all(conn, head, (size_t)hn) == 0) write_all(conn, body, n);
    return status;
}

/* Sends obj (deleted here) as the JSON body. */
static int send_cjson(struct mg_connection *conn, int status, cJSON *obj, const char *extra_headers) {
    char *text = obj ? cJSON_PrintUnformatted(obj) : NULL;
    cJSON_Delete(obj);
    if (!text) {
        static const char oom[] = "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\",\"param\":null,\"code\":null}}";
        send_body(conn, 500, "application/json", oom, sizeof oom - 1, NULL);
        return 500;
    }
    send_body(conn, status, "application/json", text, strlen(text), extra_headers);
    cJSON_free(text);
    return status;
}

static cJSON *error_json(const char *type, const char *param, const char *code, const char *msg) {
    cJSON *root = cJSON_CreateObject();
    cJSON *e = cJSON_AddObjectToObject(root, "error");
    char *clean = utf8_clean(msg, strlen(msg));
    cJSON_AddStringToObject(e, "message", clean ? clean : "error");
    free(clean);
    cJSON_AddStringToObject(e, "type", type);
    if (param) cJSON_AddStringToObject(e, "param", param);
    else cJSON_AddNullToObject(e, "param");
    if (code) cJSON_AddStringToObject(e, "code", code);
    else cJSON_AddNullToObject(e, "code");
    return root;
}

static const char *error_type(int status) {
    switch (status) {
    case 401: return "authentication_error";
    case 404: return "not_found_error";
    case 500:
    case 503: return "server_error";
    default: return "invalid_request_error";
    }
}

static int send_error(struct mg_connection *conn, int status, const char *param, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const char *code = status == 401 ? "invalid_api_key" : NULL;
    const char *extra = status == 401 ? "WWW-Authenticate: Bearer\r\n" : NULL;
    return send_cjson(conn, status, error_json(error_type(status), param, code, msg), extra);
}

/* ---- the request body --------------------------------------------------------------------- */

/* Reads and drops what is left of a body that is refused, so that closing the connection
 * does not reset it before the client reads the answer (bounded: a larger body is cut). */
static void drain_body(struct mg_connection *conn, long long already) {
    char buf[16384];
    long long total = already;
    while (total < MAX_DRAIN) {
        int n = mg_read(conn, buf, sizeof buf);
        if (n <= 0) break;
        total += n;
    }
}

/* 0 and the body (NUL-terminated, free it) or an HTTP status: 413 too large, 400 unreadable */
static int read_body(struct mg_connection *conn, char **out, size_t *out_n, long long *got) {
    const struct mg_request_info *ri = mg_get_request_info(conn);
    *out = NULL;
    *got = 0;
    if (ri->content_length > (long long)MAX_BODY) return 413;
    size_t cap = ri->content_length >= 0 ? (size_t)ri->content_length + 1 : 65536;
    char *buf = (char *)malloc(cap);
    if (!buf) return 500;
    size_t n = 0;
    for (;;) {
        if (n + 1 >= cap) {
            if (cap > MAX_BODY + 1) break;
            size_t ncap = cap * 2 > MAX_BODY + 2 ? MAX_BODY + 2 : cap * 2;
            char *p = (char *)realloc(buf, ncap);
            if (!p) { free(buf); return 500; }
            buf = p;
            cap = ncap;
        }
        int r = mg_read(conn, buf + n, cap - 1 - n);
        if (r < 0) { free(buf); return 400; }
        if (r == 0) break;
        n += (size_t)r;
        *got = (long long)n;
        if (n > MAX_BODY) { free(buf); return 413; }
    }
    buf[n] = 0;
    *out = buf;
    *out_n = n;
    return 0;
}

/* ---- request fields ----------------------------------------------------------------------- */

typedef struct perr { int status; const char *param; char msg[512]; } perr;

static int bad(perr *e, int status, const char *param, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    e->status = status;
    e->param = param;
    return -1;
}

/* a field that is present and not null, else NULL */
static const cJSON *field(const cJSON *obj, const char *name) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(obj, name);
    return f && !cJSON_IsNull(f) ? f : NULL;
}

static int is_integer(const cJSON *f) {
    if (!cJSON_IsNumber(f)) return 0;
    double v = f->valuedouble;
    return isfinite(v) && floor(v) == v;
}

static int get_bool(const cJSON *obj, const char *name, int *out, perr *e) {
    const cJSON *f = field(obj, name);
    if (!f) return 0;
    if (!cJSON_IsBool(f)) return bad(e, 400, name, "'%s' must be a boolean", name);
    *out = cJSON_IsTrue(f) ? 1 : 0;
    return 0;
}

/* Tokenizes like ember-cli -p: BOS added, special tokens parsed. */
static int tokenize(const char *text, size_t len, request *r, perr *e) {
    const char *param = r->chat ? "messages" : "prompt";
    size_t n = 0;
    ember_status st = ember_tokenize(g.model, text, len, 1, 1, NULL, 0, &n);
    if (st != EMBER_OK) return bad(e, 400, param, "cannot tokenize the prompt: %s", ember_model_last_error(g.model));
    if (n == 0) return bad(e, 400, param, "the prompt has no tokens");
    if (n > g.n_ctx_slot)
        return bad(e, 400, param, "the prompt has %zu tokens, more than the slot's context of %u", n, g.n_ctx_slot);
    r->prompt = (int32_t *)malloc(n * sizeof(int32_t));
    if (!r->prompt) return bad(e, 500, NULL, "out of memory");
    st = ember_tokenize(g.model, text, len, 1, 1, r->prompt, n, &n);
    if (st != EMBER_OK) return bad(e, 400, param, "cannot tokenize the prompt: %s", ember_model_last_error(g.model));
    r->n_prompt = n;
    return 0;
}

static const char *const ROLES[] = {"system", "user", "assistant"};

/* Whether a JSON text holds the escape \u0000 inside a string. cJSON would keep it as a C
 * string cut at that point, so "user\u0000x" would read as "user" and a prompt would lose its
 * tail without a word; such a request is refused instead. */
static int json_has_nul_escape(const char *body, size_t len) {
    int in_str = 0;
    for (size_t i = 0; i < len; i++) {
        const char c = body[i];
        if (!in_str) {
            if (c == '"') in_str = 1;
            continue;
        }
        if (c == '"') {
            in_str = 0;
        } else if (c == '\\') {
            if (i + 5 < len && body[i + 1] == 'u' && !memcmp(body + i + 2, "0000", 4)) return 1;
            i++; /* the escaped character */
        }
    }
    return 0;
}

/* Parses and checks a generation request; builds r (prompt tokenized). */
static int parse_request(const char *body, size_t len, int chat, request *r, perr *e) {
    if (memchr(body, 0, len)) return bad(e, 400, NULL, "the body contains a NUL byte");
    if (json_has_nul_escape(body, len)) return bad(e, 400, NULL, "strings must not contain U+0000 (\\u0000)");
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(body, len, &end, 0);
    int rc = -1;
    if (!root) return bad(e, 400, NULL, "the body is not valid JSON");
    if (end) {
        while (end < body + len && (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r')) end++;
        if (end < body + len) {
            cJSON_Delete(root);
            return bad(e, 400, NULL, "the body is not valid JSON (text after the value)");
        }
    }
    if (!cJSON_IsObject(root)) {
        bad(e, 400, NULL, "the body must be a JSON object");
        goto out;
    }
    const cJSON *f;
    if ((f = field(root, "model")) && !cJSON_IsString(f)) { bad(e, 400, "model", "'model' must be a string"); goto out; }
    r->max_tokens = -1;
    if ((f = field(root, "max_tokens"))) {
        if (!is_integer(f) || f->valuedouble < 0) {
            bad(e, 400, "max_tokens", "'max_tokens' must be an integer >= 0 or null");
            goto out;
        }
        r->max_tokens = f->valuedouble > 1e15 ? (long long)1e15 : (long long)f->valuedouble;
    }
    r->temperature = 1.0f;
    if ((f = field(root, "temperature"))) {
        if (!cJSON_IsNumber(f) || !(f->valuedouble >= 0.0 && f->valuedouble <= 2.0)) {
            bad(e, 400, "temperature", "'temperature' must be a number in [0, 2]");
            goto out;
        }
        r->temperature = (float)f->valuedouble;
    }
    r->top_p = 1.0f;
    if ((f = field(root, "top_p"))) {
        if (!cJSON_IsNumber(f) || !(f->valuedouble > 0.0 && f->valuedouble <= 1.0)) {
            bad(e, 400, "top_p", "'top_p' must be a number in (0, 1]");
            goto out;
        }
        r->top_p = (float)f->valuedouble;
        if (r->top_p <= 0.0f) r->top_p = 1e-30f; /* a double that rounds to 0 as a float */
    }
    r->seed = 0;
    if ((f = field(root, "seed"))) {
        double v = f->valuedouble;
        if (!is_integer(f) || v < -9223372036854775808.0 || v >= 18446744073709551616.0) {
            bad(e, 400, "seed", "'seed' must be an integer");
            goto out;
        }
        r->seed = v < 0 ? (uint64_t)(int64_t)v : (uint64_t)v;
    }
    if ((f = field(root, "n"))) {
        if (!is_integer(f)) { bad(e, 400, "n", "'n' must be an integer"); goto out; }
        if (f->valuedouble != 1.0) { bad(e, 400, "n", "only 'n': 1 is supported"); goto out; }
    }
    if (get_bool(root, "stream", &r->stream, e) || get_bool(root, "return_tokens", &r->return_tokens, e)) goto out;
    if ((f = field(root, "stop"))) {
        const cJSON *items[MAX_STOP];
        int n = 0;
        if (cJSON_IsString(f)) {
            items[n++] = f;
        } else if (cJSON_IsArray(f)) {
            int size = cJSON_GetArraySize(f);
            if (size > MAX_STOP) { bad(e, 400, "stop", "'stop' holds at most %d strings", MAX_STOP); goto out; }
            for (int i = 0; i < size; i++) {
                const cJSON *it = cJSON_GetArrayItem(f, i);
                if (!cJSON_IsString(it)) { bad(e, 400, "stop", "'stop' must be a string or an array of strings"); goto out; }
                items[n++] = it;
            }
        } else {
            bad(e, 400, "stop", "'stop' must be a string or an array of strings");
            goto out;
        }
        for (int i = 0; i < n; i++) {
            size_t sl = strlen(items[i]->valuestring);
            if (sl == 0) continue; /* an empty stop string would end every generation at once */
            r->stop[r->n_stop] = (char *)malloc(sl + 1);
            if (!r->stop[r->n_stop]) { bad(e, 500, NULL, "out of memory"); goto out; }
            memcpy(r->stop[r->n_stop], items[i]->valuestring, sl + 1);
            r->stop_len[r->n_stop++] = sl;
        }
    }
    if (!chat) {
        f = cJSON_GetObjectItemCaseSensitive(root, "prompt");
        if (f && cJSON_IsArray(f)) {
            if (cJSON_GetArraySize(f) != 1 || !cJSON_IsString(cJSON_GetArrayItem(f, 0))) {
                bad(e, 400, "prompt", "'prompt' must be a string or an array with exactly one string");
                goto out;
            }
            f = cJSON_GetArrayItem(f, 0);
        }
        if (!f) { bad(e, 400, "prompt", "'prompt' is required"); goto out; }
        if (!cJSON_IsString(f)) { bad(e, 400, "prompt", "'prompt' must be a string or an array with exactly one string"); goto out; }
        if (!f->valuestring[0]) { bad(e, 400, "prompt", "the prompt is empty"); goto out; }
        if (tokenize(f->valuestring, strlen(f->valuestring), r, e)) goto out;
    } else {
        f = cJSON_GetObjectItemCaseSensitive(root, "messages");
        if (!f) { bad(e, 400, "messages", "'messages' is required"); goto out; }
        if (!cJSON_IsArray(f)) { bad(e, 400, "messages", "'messages' must be an array"); goto out; }
        int n = cJSON_GetArraySize(f);
        if (n == 0) { bad(e, 400, "messages", "'messages' is empty"); goto out; }
        chat_msg *m = (chat_msg *)calloc((size_t)n, sizeof *m);
        if (!m) { bad(e, 500, NULL, "out of memory"); goto out; }
        int ok = 1;
        const cJSON *it = f->child; /* walked once: cJSON arrays are linked lists */
        for (int i = 0; i < n && ok; i++, it = it->next) {
            const cJSON *role = cJSON_IsObject(it) ? cJSON_GetObjectItemCaseSensitive(it, "role") : NULL;
            const cJSON *content = cJSON_IsObject(it) ? cJSON_GetObjectItemCaseSensitive(it, "content") : NULL;
            if (!cJSON_IsObject(it)) {
                ok = 0;
                bad(e, 400, "messages", "message %d is not an object", i);
            } else if (!cJSON_IsString(role)) {
                ok = 0;
                bad(e, 400, "messages", "message %d: 'role' must be a string", i);
            } else if (!cJSON_IsString(content)) {
                ok = 0;
                bad(e, 400, "messages", "message %d: 'content' must be a string", i);
            } else {
                m[i].role = NULL;
                for (size_t k = 0; k < sizeof ROLES / sizeof ROLES[0]; k++)
                    if (!strcmp(role->valuestring, ROLES[k])) m[i].role = ROLES[k];
                m[i].content = content->valuestring;
                if (!m[i].role) {
                    ok = 0;
                    char shown[64];
                    char *clean = utf8_clean(role->valuestring, strlen(role->valuestring));
                    snprintf(shown, sizeof shown, "%s", clean ? clean : "?");
                    free(clean);
                    bad(e, 400, "messages", "message %d has the unknown role '%s' (system, user or assistant)", i, shown);
                }
            }
        }
        sbuf text = {NULL, 0, 0};
        if (ok && template_render(g.tpl, m, (size_t)n, &text)) {
            ok = 0;
            bad(e, 500, NULL, "out of memory");
        }
        free(m);
        if (ok) ok = tokenize(text.p, text.n, r, e) == 0;
        sbuf_free(&text);
        if (!ok) goto out;
    }
    if (r->max_tokens >= 0 && (unsigned long long)r->max_tokens + r->n_prompt > g.n_ctx_slot) {
        bad(e, 400, "max_tokens", "max_tokens %lld + %zu prompt tokens exceed the slot's context of %u", r->max_tokens,
            r->n_prompt, g.n_ctx_slot);
        goto out;
    }
    rc = 0;
out:
    cJSON_Delete(root);
    return rc;
}

/* ---- responses of a generation ------------------------------------------------------------- */

static cJSON *response_base(const request *r, const char *object) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "id", r->id);
    cJSON_AddStringToObject(root, "object", object);
    cJSON_AddNumberToObject(root, "created", (double)r->created);
    cJSON_AddStringToObject(root, "model", g.alias);
    return root;
}

static const char *finish_name(int finish) { return finish == FIN_LENGTH ? "length" : "stop"; }

static void add_tokens(cJSON *choice, const int32_t *t, size_t n) {
    cJSON *arr = cJSON_AddArrayToObject(choice, "tokens");
    for (size_t i = 0; arr && i < n; i++) cJSON_AddItemToArray(arr, cJSON_CreateNumber((double)t[i]));
}

static void add_usage_timings(cJSON *root, const request *r) {
    cJSON *u = cJSON_AddObjectToObject(root, "usage");
    cJSON_AddNumberToObject(u, "prompt_tokens", (double)r->n_prompt);
    cJSON_AddNumberToObject(u, "completion_tokens", (double)r->n_gen);
    cJSON_AddNumberToObject(u, "total_tokens", (double)(r->n_prompt + r->n_gen));
    cJSON *t = cJSON_AddObjectToObject(root, "timings");
    cJSON_AddNumberToObject(t, "prompt_n", (double)r->prompt_n);
    cJSON_AddNumberToObject(t, "prompt_ms", r->prompt_ms);
    cJSON_AddNumberToObject(t, "predicted_n", (double)r->n_gen);
    cJSON_AddNumberToObject(t, "predicted_ms", r->predicted_ms);
    cJSON_AddNumberToObject(t, "draft_n", (double)r->draft_n);
    cJSON_AddNumberToObject(t, "draft_n_accepted", (double)r->draft_acc);
}

/* One streamed chunk: text (may be NULL), ids, and when finish is set the finish reason, usage
 * and timings. role: the first chat chunk. */
static cJSON *stream_chunk(const request *r, const char *text, const int32_t *t, size_t nt, int role, int finish) {
    cJSON *root = response_base(r, r->chat ? "chat.completion.chunk" : "text_completion");
    cJSON *choices = cJSON_AddArrayToObject(root, "choices");
    cJSON *c = cJSON_CreateObject();
    cJSON_AddItemToArray(choices, c);
    cJSON_AddNumberToObject(c, "index", 0);
    if (r->chat) {
        cJSON *d = cJSON_AddObjectToObject(c, "delta");
        if (role) {
            cJSON_AddStringToObject(d, "role", "assistant");
            cJSON_AddStringToObject(d, "content", "");
        } else if (text) {
            cJSON_AddStringToObject(d, "content", text);
        }
    } else {
        cJSON_AddStringToObject(c, "text", text ? text : "");
        cJSON_AddNullToObject(c, "logprobs");
    }
    if (finish) cJSON_AddStringToObject(c, "finish_reason", finish_name(finish));
    else cJSON_AddNullToObject(c, "finish_reason");
    if (r->return_tokens && (nt || finish)) add_tokens(c, t, nt);
    if (finish) add_usage_timings(root, r);
    return root;
}

/* "data: JSON\n\n"; 0 or -1 when the client is gone. obj is deleted. */
static int sse_send(struct mg_connection *conn, cJSON *obj) {
    char *text = obj ? cJSON_PrintUnformatted(obj) : NULL;
    cJSON_Delete(obj);
    if (!text) return -1;
    size_t n = strlen(text);
    char *buf = (char *)malloc(n + 8);
    int rc = -1;
    if (buf) {
        memcpy(buf, "data: ", 6);
        memcpy(buf + 6, text, n);
        buf[n + 6] = '\n';
        buf[n + 7] = '\n';
        rc = write_all(conn, buf, n + 8);
        free(buf);
    }
    cJSON_free(text);
    return rc;
}

/* Tells the scheduler the client is gone and waits until it let go of r. */
static void request_abandon(request *r) {
    srv_mutex_lock(&g.mu);
    if (r->state == RQ_QUEUED) {
        request **pp = &g.q_head, *prev = NULL;
        while (*pp && *pp != r) { prev = *pp; pp = &(*pp)->next; }
        if (*pp) {
            *pp = r->next;
            if (g.q_tail == r) g.q_tail = prev;
            g.q_len--;
        }
        r->state = RQ_DONE;
    } else if (r->state == RQ_ACTIVE) {
        r->cancelled = 1;
        srv_cond_signal(&g.sched_cv);
        while (r->state != RQ_DONE) srv_cond_wait(&r->cv, &g.mu);
    }
    srv_mutex_unlock(&g.mu);
}

static void count_failed(void) {
    srv_mutex_lock(&g.mu);
    g.m_req_failed++;
    srv_mutex_unlock(&g.mu);
}

/* Streams r to the client; returns 0, or -1 when the request failed. */
static int stream_response(struct mg_connection *conn, request *r) {
    static const char head[] = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
                               "Cache-Control: no-cache\r\nConnection: close\r\nX-Accel-Buffering: no\r\n\r\n";
    int gone = write_all(conn, head, sizeof head - 1) != 0;
    if (!gone && r->chat) gone = sse_send(conn, stream_chunk(r, NULL, NULL, 0, 1, 0)) != 0;
    sbuf text = {NULL, 0, 0};
    ibuf toks = {NULL, 0, 0};
    int failed = 0;
    while (!gone) {
        srv_mutex_lock(&g.mu);
        while (r->state != RQ_DONE && r->text.n == 0 && r->toks.n == 0) srv_cond_wait(&r->cv, &g.mu);
        sbuf t = r->text;
        r->text = text;
        text = t;
        ibuf k = r->toks;
        r->toks = toks;
        toks = k;
        int done = r->state == RQ_DONE;
        srv_mutex_unlock(&g.mu);

        if (done && r->err_status) {
            cJSON *ej = error_json(error_type(r->err_status), NULL, NULL, r->err_msg);
            sse_send(conn, ej);
            failed = 1;
            break;
        }
        char *clean = text.n ? utf8_clean(text.p, text.n) : NULL;
        if (text.n && !clean) {
            failed = 1;
            sse_send(conn, error_json("server_error", NULL, NULL, "out of memory"));
            request_abandon(r);
            break;
        }
        if (done) {
            if (clean && sse_send(conn, stream_chunk(r, clean, NULL, 0, 0, 0)) != 0) gone = 1;
            free(clean);
            /* the ids of the last piece ride on the final chunk */
            if (!gone && sse_send(conn, stream_chunk(r, NULL, toks.p, toks.n, 0, r->finish)) != 0) gone = 1;
            if (!gone) gone = write_all(conn, "data: [DONE]\n\n", 14) != 0;
            break;
        }
        if (clean || (toks.n && r->return_tokens)) {
            if (sse_send(conn, stream_chunk(r, clean, toks.p, toks.n, 0, 0)) != 0) gone = 1;
        }
        free(clean);
        text.n = 0;
        toks.n = 0;
    }
    if (gone) {
        request_abandon(r);
        failed = 1;
    }
    sbuf_free(&text);
    ibuf_free(&toks);
    return failed ? -1 : 0;
}

static int whole_response(struct mg_connection *conn, request *r) {
    srv_mutex_lock(&g.mu);
    while (r->state != RQ_DONE) srv_cond_wait(&r->cv, &g.mu);
    srv_mutex_unlock(&g.mu);
    if (r->err_status) {
        send_error(conn, r->err_status == 499 ? 500 : r->err_status, NULL, "%s", r->err_msg);
        return -1;
    }
    char *clean = utf8_clean(r->text.p ? r->text.p : "", r->text.n);
    if (!clean) {
        send_error(conn, 500, NULL, "out of memory");
        return -1;
    }
    cJSON *root = response_base(r, r->chat ? "chat.completion" : "text_completion");
    cJSON *choices = cJSON_AddArrayToObject(root, "choices");
    cJSON *c = cJSON_CreateObject();
    cJSON_AddItemToArray(choices, c);
    cJSON_AddNumberToObject(c, "index", 0);
    if (r->chat) {
        cJSON *m = cJSON_AddObjectToObject(c, "message");
        cJSON_AddStringToObject(m, "role", "assistant");
        cJSON_AddStringToObject(m, "content", clean);
    } else {
        cJSON_AddStringToObject(c, "text", clean);
        cJSON_AddNullToObject(c, "logprobs");
    }
    cJSON_AddStringToObject(c, "finish_reason", finish_name(r->finish));
    if (r->return_tokens) add_tokens(c, r->toks.p, r->toks.n);
    free(clean);
    add_usage_timings(root, r);
    return send_cjson(conn, 200, root, NULL) == 200 ? 0 : -1;
}

static int handle_generation_inner(struct mg_connection *conn, int chat);

static int handle_generation(struct mg_connection *conn, int chat) {
    srv_mutex_lock(&g.mu);
    g.handlers++;
    srv_mutex_unlock(&g.mu);
    int rc = handle_generation_inner(conn, chat);
    srv_mutex_lock(&g.mu);
    if (--g.handlers == 0) srv_cond_broadcast(&g.idle_cv);
    srv_mutex_unlock(&g.mu);
    return rc;
}

/* 1 when the client waits for "100 Continue" before it sends the body */
static int expects_continue(const struct mg_connection *conn) {
    const char *e = mg_get_header(conn, "Expect");
    static const char want[] = "100-continue";
    if (!e) return 0;
    for (size_t i = 0; i < sizeof want; i++) {
        char c = e[i];
        if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
        if (c != want[i]) return 0;
    }
    return 1;
}

static int handle_generation_inner(struct mg_connection *conn, int chat) {
    char *body = NULL;
    size_t len = 0;
    long long got = 0;
    const struct mg_request_info *ri = mg_get_request_info(conn);
    int expect = expects_continue(conn);
    if (expect && ri->content_length > (long long)MAX_BODY) {
        /* refused before the client sends it */
        return send_error(conn, 413, NULL, "the body is larger than %lu bytes", (unsigned long)MAX_BODY), -1;
    }
    if (expect) write_all(conn, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    int st = read_body(conn, &body, &len, &got);
    if (st == 413) {
        send_error(conn, 413, NULL, "the body is larger than %lu bytes", (unsigned long)MAX_BODY);
        drain_body(conn, got);
        return -1;
    }
    if (st) {
        send_error(conn, st, NULL, st == 500 ? "out of memory" : "the body could not be read");
        return -1;
    }
    request *r = (request *)calloc(1, sizeof *r);
    if (!r || srv_cond_init(&r->cv)) {
        free(r);
        free(body);
        send_error(conn, 500, NULL, "out of memory");
        return -1;
    }
    r->chat = chat;
    perr e;
    memset(&e, 0, sizeof e);
    int rc = parse_request(body, len, chat, r, &e);
    free(body);
    if (rc) {
        request_free(r);
        send_error(conn, e.status, e.param, "%s", e.msg);
        return -1;
    }
    r->created = (long long)time(NULL);

    srv_mutex_lock(&g.mu);
    const char *refuse = NULL;
    char why[600];
    if (g.stopping) refuse = "the server is shutting down";
    else if (g.error_state) {
        snprintf(why, sizeof why, "the server is in the error state: %s", g.error_msg);
        refuse = why;
    } else if (g.q_len + g.busy >= g.n_slots + (int)g.o.max_queue) {
        snprintf(why, sizeof why, "the queue is full (%d requests wait for %d slots)", g.q_len, g.n_slots);
        refuse = why;
    }
    if (!refuse) {
        snprintf(r->id, sizeof r->id, "%s-%llx%04llx", chat ? "chatcmpl" : "cmpl", (unsigned long long)r->created,
                 g.next_id++ & 0xffff);
        r->state = RQ_QUEUED;
        if (g.q_tail) g.q_tail->next = r;
        else g.q_head = r;
        g.q_tail = r;
        g.q_len++;
        srv_cond_signal(&g.sched_cv);
    }
    srv_mutex_unlock(&g.mu);
    if (refuse) {
        request_free(r);
        send_error(conn, 503, NULL, "%s", refuse);
        return -1;
    }
    rc = r->stream ? stream_response(conn, r) : whole_response(conn, r);
    request_free(r);
    return rc;
}

/* ---- the other routes ---------------------------------------------------------------------- */

static int handle_health(struct mg_connection *conn) {
    srv_mutex_lock(&g.mu);
    int err = g.error_state;
    char msg[sizeof g.error_msg];
    memcpy(msg, g.error_msg, sizeof msg);
    srv_mutex_unlock(&g.mu);
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "status", err ? "error" : "ok");
    if (err) {
        char *clean = utf8_clean(msg, strlen(msg));
        cJSON_AddStringToObject(root, "error", clean ? clean : "forward pass failed");
        free(clean);
    }
    return send_cjson(conn, err ? 503 : 200, root, NULL);
}

static int handle_models(struct mg_connection *conn) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(root, "data");
    cJSON *m = cJSON_CreateObject();
    cJSON_AddItemToArray(data, m);
    cJSON_AddStringToObject(m, "id", g.alias);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", (double)g.created);
    cJSON_AddStringToObject(m, "owned_by", "ember");
    cJSON *meta = cJSON_AddObjectToObject(m, "meta");
    cJSON_AddNumberToObject(meta, "n_vocab", (double)g.n_vocab);
    cJSON_AddNumberToObject(meta, "n_ctx_train", (double)ember_model_n_ctx_train(g.model));
    cJSON_AddNumberToObject(meta, "n_ctx_slot", (double)g.n_ctx_slot);
    cJSON_AddNumberToObject(meta, "n_params_file_bytes", (double)g.model_bytes);
    return send_cjson(conn, 200, root, NULL);
}

static void metric(sbuf *b, const char *name, const char *type, const char *help) {
    char line[256];
    snprintf(line, sizeof line, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
    sbuf_adds(b, line);
}

static void metric_value(sbuf *b, const char *name, const char *labels, double v) {
    char line[256];
    if (v == floor(v) && fabs(v) < 9e15) snprintf(line, sizeof line, "%s%s %.0f\n", name, labels, v);
    else snprintf(line, sizeof line, "%s%s %.6f\n", name, labels, v);
    sbuf_adds(b, line);
}

static int handle_metrics(struct mg_connection *conn) {
    struct {
        unsigned long long m_req_completions, m_req_chat, m_req_failed;
        unsigned long long m_prompt_tokens, m_gen_tokens, m_draft_proposed, m_draft_accepted;
        double m_prompt_tps, m_gen_tps;
        int busy, n_slots, q_len;
    } m; /* a consistent snapshot */
    srv_mutex_lock(&g.mu);
    m.m_req_completions = g.m_req_completions;
    m.m_req_chat = g.m_req_chat;
    m.m_req_failed = g.m_req_failed;
    m.m_prompt_tokens = g.m_prompt_tokens;
    m.m_gen_tokens = g.m_gen_tokens;
    m.m_draft_proposed = g.m_draft_proposed;
    m.m_draft_accepted = g.m_draft_accepted;
    m.m_prompt_tps = g.m_prompt_tps;
    m.m_gen_tps = g.m_gen_tps;
    m.busy = g.busy;
    m.n_slots = g.n_slots;
    m.q_len = g.q_len;
    srv_mutex_unlock(&g.mu);
    sbuf b = {NULL, 0, 0};
    metric(&b, "ember_requests_total", "counter", "Generation requests received, by route.");
    metric_value(&b, "ember_requests_total", "{route=\"completions\"}", (double)m.m_req_completions);
    metric_value(&b, "ember_requests_total", "{route=\"chat_completions\"}", (double)m.m_req_chat);
    metric(&b, "ember_requests_failed_total", "counter", "Generation requests that ended in an error or a disconnect.");
    metric_value(&b, "ember_requests_failed_total", "", (double)m.m_req_failed);
    metric(&b, "ember_prompt_tokens_total", "counter", "Prompt tokens evaluated.");
    metric_value(&b, "ember_prompt_tokens_total", "", (double)m.m_prompt_tokens);
    metric(&b, "ember_generated_tokens_total", "counter", "Tokens generated.");
    metric_value(&b, "ember_generated_tokens_total", "", (double)m.m_gen_tokens);
    metric(&b, "ember_prompt_tokens_per_second", "gauge", "Prompt evaluation speed of the last request that had a prompt.");
    metric_value(&b, "ember_prompt_tokens_per_second", "", m.m_prompt_tps);
    metric(&b, "ember_generation_tokens_per_second", "gauge", "Generation speed of the last finished request.");
    metric_value(&b, "ember_generation_tokens_per_second", "", m.m_gen_tps);
    metric(&b, "ember_draft_tokens_proposed_total", "counter", "Tokens the draft model proposed.");
    metric_value(&b, "ember_draft_tokens_proposed_total", "", (double)m.m_draft_proposed);
    metric(&b, "ember_draft_tokens_accepted_total", "counter", "Proposed tokens the model accepted.");
    metric_value(&b, "ember_draft_tokens_accepted_total", "", (double)m.m_draft_accepted);
    metric(&b, "ember_slots_busy", "gauge", "Slots serving a request.");
    metric_value(&b, "ember_slots_busy", "", (double)m.busy);
    metric(&b, "ember_slots_total", "gauge", "Slots.");
    metric_value(&b, "ember_slots_total", "", (double)m.n_slots);
    metric(&b, "ember_queue_length", "gauge", "Requests waiting for a slot.");
    metric_value(&b, "ember_queue_length", "", (double)m.q_len);
    if (!b.p) return send_error(conn, 500, NULL, "out of memory");
    send_body(conn, 200, "text/plain; version=0.0.4; charset=utf-8", b.p, b.n, NULL);
    sbuf_free(&b);
    return 200;
}

/* ---- routing ------------------------------------------------------------------------------- */

enum { R_NONE, R_HEALTH, R_MODELS, R_COMPLETIONS, R_CHAT, R_METRICS };

static int auth_ok(const struct mg_connection *conn) {
    const char *h = mg_get_header(conn, "Authorization");
    if (!h) return 0;
    while (*h == ' ') h++;
    static const char bearer[] = "bearer ";
    for (size_t i = 0; i < sizeof bearer - 1; i++) {
        char c = h[i];
        if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
        if (c != bearer[i]) return 0;
    }
    h += sizeof bearer - 1;
    while (*h == ' ') h++;
    size_t hn = strlen(h), kn = strlen(g.api_key);
    while (hn > 0 && (h[hn - 1] == ' ' || h[hn - 1] == '\t')) hn--;
    /* compare every byte whatever differs first */
    unsigned diff = (unsigned)(hn != kn);
    for (size_t i = 0; i < kn; i++) diff |= (unsigned)(unsigned char)(i < hn ? h[i] : 0) ^ (unsigned char)g.api_key[i];
    return diff == 0;
}

/* A Content-Length that could be read two ways (two headers, a list, anything but digits) is
 * refused, as RFC 9112 section 6.3 asks: a proxy in front could have read the other length. */
static const char *content_length_problem(const struct mg_request_info *ri) {
    int seen = 0;
    for (int i = 0; ri && i < ri->num_headers; i++) {
        const char *name = ri->http_headers[i].name, *value = ri->http_headers[i].value;
        if (!name || mg_strcasecmp(name, "Content-Length") != 0) continue;
        if (++seen > 1) return "the request has more than one Content-Length header";
        if (!value || !*value) return "the Content-Length header is empty";
        for (const char *c = value; *c; c++)
            if (*c < '0' || *c > '9') return "the Content-Length header is not a decimal number";
    }
    return NULL;
}

static int begin_request(struct mg_connection *conn) {
    const struct mg_request_info *ri = mg_get_request_info(conn);
    const char *uri = ri && ri->local_uri ? ri->local_uri : "";
    const char *method = ri && ri->request_method ? ri->request_method : "";
    int route = !strcmp(uri, "/health") ? R_HEALTH
              : !strcmp(uri, "/v1/models") ? R_MODELS
              : !strcmp(uri, "/v1/completions") ? R_COMPLETIONS
              : !strcmp(uri, "/v1/chat/completions") ? R_CHAT
              : !strcmp(uri, "/metrics") ? R_METRICS
              : R_NONE;
    int gen = route == R_COMPLETIONS || route == R_CHAT;
    if (gen) {
        srv_mutex_lock(&g.mu);
        if (route == R_COMPLETIONS) g.m_req_completions++;
        else g.m_req_chat++;
        srv_mutex_unlock(&g.mu);
    }
    int status;
    const char *framing = content_length_problem(ri);
    if (framing) {
        status = send_error(conn, 400, NULL, "%s", framing);
    } else if (!strncmp(uri, "/v1/", 4) && g.api_key && !auth_ok(conn)) {
        status = send_error(conn, 401, NULL, "invalid or missing API key (Authorization: Bearer KEY)");
    } else if (route == R_NONE) {
        status = send_error(conn, 404, NULL, "there is no route %s %s", method, uri);
    } else if (strcmp(method, gen ? "POST" : "GET") != 0) {
        char allow[64];
        snprintf(allow, sizeof allow, "Allow: %s\r\n", gen ? "POST" : "GET");
        status = send_cjson(conn, 405,
                            error_json("invalid_request_error", NULL, NULL,
                                       gen ? "this route takes POST" : "this route takes GET"),
                            allow);
    } else if (route == R_HEALTH) {
        return handle_health(conn);
    } else if (route == R_MODELS) {
        return handle_models(conn);
    } else if (route == R_METRICS) {
        return handle_metrics(conn);
    } else {
        status = handle_generation(conn, route == R_CHAT) == 0 ? 200 : 400;
        if (status != 200) count_failed();
        return status;
    }
    if (gen) count_failed();
    return status;
}

/* ---- start and stop ------------------------------------------------------------------------ */

/* civetweb's first error message: the cause when it cannot listen (its last one is only
 * "Failed to setup server ports"); later messages are not shown */
static srv_mutex g_weblog_mu;
static char g_weblog[512];

static int on_civetweb_log(const struct mg_connection *conn, const char *message) {
    (void)conn;
    srv_mutex_lock(&g_weblog_mu);
    if (!g_weblog[0]) snprintf(g_weblog, sizeof g_weblog, "%s", message ? message : "");
    srv_mutex_unlock(&g_weblog_mu);
    return 1;
}

#if defined(_WIN32)
static volatile LONG g_stop_requested = 0;
static BOOL WINAPI on_console_event(DWORD type) {
    (void)type;
    InterlockedExchange(&g_stop_requested, 1);
    return TRUE;
}
static int stop_requested(void) { return InterlockedCompareExchange(&g_stop_requested, 0, 0) != 0; }
#else
static volatile sig_atomic_t g_stop_requested = 0;
static void on_signal(int sig) {
    (void)sig;
    g_stop_requested = 1;
}
static int stop_requested(void) { return g_stop_requested != 0; }
#endif

static void free_all(void) {
    if (g.slots) {
        for (int i = 0; i < g.n_slots; i++) {
            slot *s = &g.slots[i];
            ember_context_free(s->ctx);
            ember_context_free(s->dctx);
            free(s->cands);
            free(s->probs);
            free(s->prop);
            free(s->vtoks);
            free(s->vlogits);
            free(s->toks);
            sbuf_free(&s->text);
            ibuf_free(&s->new_toks);
        }
        free(g.slots);
        g.slots = NULL;
    }
    free(g.seqs);
    g.seqs = NULL;
    ember_model_free(g.draft);
    g.draft = NULL;
    ember_model_free(g.model);
    g.model = NULL;
}

static const char *base_name(const char *path) {
    const char *b = path;
    for (const char *p = path; *p; p++)
        if (*p == '/' || *p == '\\') b = p + 1;
    return *b ? b : path;
}

/* A printable excerpt of a token's text for a message. */
static void token_excerpt(const char *s, int32_t n, char *out, size_t cap) {
    size_t o = 0;
    for (int32_t i = 0; i < n && o + 5 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f || c >= 0x80) o += (size_t)snprintf(out + o, cap - o, "\\x%02x", c);
        else out[o++] = (char)c;
    }
    out[o < cap ? o : cap - 1] = 0;
}

/* 0 when the two models have the same vocabulary (size, then every token's text); else -1
 * with the difference in why. */
static int vocab_compare(char *why, size_t cap) {
    int32_t nt = ember_model_n_vocab(g.model), nd = ember_model_n_vocab(g.draft);
    if (nt != nd) {
        snprintf(why, cap, "%d tokens in the draft, %d in the target", nd, nt);
        return -1;
    }
    size_t bcap = 1024;
    char *a = (char *)malloc(bcap), *b = (char *)malloc(bcap);
    int rc = 0;
    if (!a || !b) {
        snprintf(why, cap, "out of memory");
        rc = -1;
    }
    for (int32_t id = 0; id < nt && rc == 0; id++) {
        int32_t la = ember_token_to_piece(g.model, id, 1, a, bcap);
        int32_t lb = ember_token_to_piece(g.draft, id, 1, b, bcap);
        if (la > (int32_t)bcap || lb > (int32_t)bcap) {
            size_t need = (size_t)(la > lb ? la : lb);
            char *na = (char *)realloc(a, need), *nb = NULL;
            if (na) a = na;
            if (na) nb = (char *)realloc(b, need);
            if (nb) b = nb;
            if (!na || !nb) {
                snprintf(why, cap, "out of memory");
                rc = -1;
                break;
            }
            bcap = need;
            la = ember_token_to_piece(g.model, id, 1, a, bcap);
            lb = ember_token_to_piece(g.draft, id, 1, b, bcap);
        }
        if (la != lb || (la > 0 && memcmp(a, b, (size_t)la) != 0)) {
            char ea[128], eb[128];
            token_excerpt(b, lb > 0 ? lb : 0, eb, sizeof eb);
            token_excerpt(a, la > 0 ? la : 0, ea, sizeof ea);
            snprintf(why, cap, "token %d is \"%s\" in the draft, \"%s\" in the target", id, eb, ea);
            rc = -1;
        }
    }
    free(a);
    free(b);
    return rc;
}

int main(int argc, char **argv) {
#if defined(_WIN32)
    char **wide_argv = NULL; /* lives as long as the process */
    argc = utf8_argv("ember-server", &wide_argv);
    if (argc < 0) return EXIT_USAGE;
    argv = wide_argv;
#endif
    int rc = parse_args(argc, argv, &g.o);
    if (rc) return rc > 0 ? 0 : EXIT_USAGE;
    const options *o = &g.o;

    const char *fault = getenv("EMBER_SERVER_FAULT");
    int fault_draft_load = 0, fault_draft_ctx = 0;
    if (fault && *fault) {
        if (!strcmp(fault, "draft-load")) fault_draft_load = 1;
        else if (!strcmp(fault, "draft-context")) fault_draft_ctx = 1;
        else {
            die_msg("EMBER_SERVER_FAULT='%s' is not a known fault (draft-context, draft-load)", fault);
            return EXIT_USAGE;
        }
    }
    g.api_key = o->api_key;
    if (!g.api_key) {
        const char *env = getenv("EMBER_API_KEY");
        if (env && *env) g.api_key = env;
    }

#if defined(_WIN32)
    SetConsoleCtrlHandler(on_console_event, TRUE);
#else
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* the threads started from here on (the contexts' pools, the scheduler, civetweb's) leave the
     * two signals to this one */
    sigset_t stop_set, old_set;
    sigemptyset(&stop_set);
    sigaddset(&stop_set, SIGINT);
    sigaddset(&stop_set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_set, &old_set);
#endif

    char err[1024];
    ember_status st = ember_model_load(o->model, NULL, &g.model, err, sizeof err);
    if (st != EMBER_OK) {
        die_msg("cannot load the model '%s': %s (%s)", o->model, err, ember_strerror(st));
        return EXIT_MODEL;
    }
    g.n_vocab = ember_model_n_vocab(g.model);

    if (o->chat_template) {
        g.tpl = template_by_name(o->chat_template);
    } else {
        const char *t = ember_model_meta_str(g.model, "tokenizer.chat_template");
        g.tpl = template_detect(t);
        if (g.tpl < 0) {
            if (!t) die_msg("the model has no chat template (tokenizer.chat_template); name one with --chat-template (chatml, llama3, mistral, gemma, phi3)");
            else die_msg("the model's chat template is none ember-server knows (chatml, llama3, mistral, gemma, phi3); name one with --chat-template");
            free_all();
            return EXIT_TEMPLATE;
        }
    }

    int32_t n_train = ember_model_n_ctx_train(g.model);
    g.n_ctx_slot = o->n_ctx ? (uint32_t)o->n_ctx : (n_train > 0 && n_train < 4096 ? (uint32_t)n_train : 4096u);
    g.chunk = g.n_ctx_slot < 512 ? g.n_ctx_slot : 512; /* ember's n_batch: prompts split as ember-cli's */
    g.n_slots = (int)o->parallel;
    g.slots = (slot *)calloc((size_t)g.n_slots, sizeof(slot));
    g.seqs = (ember_batch_seq *)calloc((size_t)g.n_slots, sizeof(ember_batch_seq));
    if (!g.slots || !g.seqs) {
        die_msg("out of memory for %d slots", g.n_slots);
        free_all();
        return EXIT_MODEL;
    }
    ember_context_params cp = ember_context_default_params();
    cp.n_ctx = g.n_ctx_slot;
    cp.n_threads = (int32_t)o->threads;
    cp.backend = o->backend;
    for (int i = 0; i < g.n_slots; i++) {
        slot *s = &g.slots[i];
        s->id = i;
        st = ember_context_create(g.model, &cp, &s->ctx);
        if (st != EMBER_OK) {
            die_msg("context for slot %d could not be created: %s (%s)", i, ember_model_last_error(g.model), ember_strerror(st));
            free_all();
            return EXIT_MODEL;
        }
        s->cands = (cand *)malloc((size_t)g.n_vocab * sizeof(cand));
        s->probs = (double *)malloc((size_t)g.n_vocab * sizeof(double));
        if (!s->cands || !s->probs) {
            die_msg("context for slot %d could not be created: out of memory for the sampler", i);
            free_all();
            return EXIT_MODEL;
        }
    }

    if (o->draft) {
        if (fault_draft_load) {
            die_msg("cannot load the draft model '%s': out of memory (EMBER_SERVER_FAULT=draft-load)", o->draft);
            free_all();
            return EXIT_DRAFT;
        }
        st = ember_model_load(o->draft, NULL, &g.draft, err, sizeof err);
        if (st != EMBER_OK) {
            die_msg("cannot load the draft model '%s': %s (%s)", o->draft, err, ember_strerror(st));
            free_all();
            return EXIT_DRAFT;
        }
        for (int i = 0; i < g.n_slots; i++) {
            slot *s = &g.slots[i];
            if (fault_draft_ctx && i == g.n_slots - 1) {
                die_msg("draft context for slot %d could not be created: %s (EMBER_SERVER_FAULT=draft-context)", i,
                        ember_strerror(EMBER_ERR_OUT_OF_MEMORY));
                free_all();
                return EXIT_DRAFT;
            }
            st = ember_context_create(g.draft, &cp, &s->dctx);
            if (st != EMBER_OK) {
                die_msg("draft context for slot %d could not be created: %s (%s)", i, ember_model_last_error(g.draft),
                        ember_strerror(st));
                free_all();
                return EXIT_DRAFT;
            }
            s->prop = (int32_t *)malloc(((size_t)o->draft_max + 1) * sizeof(int32_t));
            s->vtoks = (int32_t *)malloc(((size_t)o->draft_max + 1) * sizeof(int32_t));
            s->vlogits = (float *)malloc(((size_t)o->draft_max + 1) * (size_t)g.n_vocab * sizeof(float));
            if (!s->prop || !s->vtoks || !s->vlogits) {
                die_msg("draft context for slot %d could not be created: out of memory for the verification logits", i);
                free_all();
                return EXIT_DRAFT;
            }
        }
        char why[512];
        if (vocab_compare(why, sizeof why) != 0) {
            die_msg("the draft model '%s' does not share the target's vocabulary: %s", o->draft, why);
            free_all();
            return EXIT_DRAFT;
        }
    }

    g.alias = o->alias ? o->alias : base_name(o->model);
    g.model_bytes = srv_file_size(o->model);
    g.created = (long long)time(NULL);
    if (srv_mutex_init(&g.mu) || srv_cond_init(&g.sched_cv) || srv_cond_init(&g.idle_cv)) {
        die_msg("cannot create the scheduler's lock");
        free_all();
        return EXIT_MODEL;
    }
    srv_thread sched;
    if (srv_thread_create(&sched, scheduler_main, NULL) != 0) {
        die_msg("cannot start the scheduler thread");
        free_all();
        return EXIT_MODEL;
    }

    /* listen */
    char ports[300], threads[32];
    int v6 = strchr(o->host, ':') != NULL;
    if (!strcmp(o->host, "localhost")) snprintf(ports, sizeof ports, "127.0.0.1:%ld", o->port);
    else snprintf(ports, sizeof ports, v6 ? "[%s]:%ld" : "%s:%ld", o->host, o->port);
    /* civetweb serves each connection on a thread of its own: enough for every slot, every
     * queued request and 64 more connections (health checks, metrics, refusals); a connection
     * that sends nothing is dropped after request_timeout_ms */
    snprintf(threads, sizeof threads, "%d", g.n_slots + (int)o->max_queue + 64);
    const char *copts[] = {"listening_ports", ports, "num_threads", threads, "enable_keep_alive", "no",
                           "tcp_nodelay", "1", "request_timeout_ms", "10000",
                           /* routes are matched on the path as sent: a percent-escape (a decoded
                              NUL would cut the path short) never names a route */
                           "decode_url", "no", NULL};
    struct mg_callbacks cb;
    memset(&cb, 0, sizeof cb);
    cb.begin_request = begin_request;
    cb.log_message = on_civetweb_log;
    srv_mutex_init(&g_weblog_mu);
    mg_init_library(0);
    struct mg_init_data init;
    memset(&init, 0, sizeof init);
    init.callbacks = &cb;
    init.configuration_options = copts;
    char mgerr[512] = "";
    struct mg_error_data mge;
    memset(&mge, 0, sizeof mge);
    mge.text = mgerr;
    mge.text_buffer_size = sizeof mgerr;
    struct mg_context *web = NULL;
    if (!stop_requested()) web = mg_start2(&init, &mge);
    int port = (int)o->port;
    if (web) {
        struct mg_server_port sp[4];
        memset(sp, 0, sizeof sp);
        int np = mg_get_server_ports(web, 4, sp);
        if (np > 0) port = sp[0].port;
    }
    int exit_code = 0;
    if (!web && !stop_requested()) {
        srv_mutex_lock(&g_weblog_mu);
        die_msg("cannot listen on %s: %s", ports, g_weblog[0] ? g_weblog : mgerr[0] ? mgerr : "civetweb could not start");
        srv_mutex_unlock(&g_weblog_mu);
        exit_code = EXIT_LISTEN;
    } else if (web) {
        out_printf(stderr, "ember-server: listening on http://%s%s%s:%d (%d slots, draft: %s, template: %s)\n",
                   v6 ? "[" : "", o->host, v6 ? "]" : "", port, g.n_slots,
                   o->draft ? o->draft : "none", TEMPLATE_NAMES[g.tpl]);
        fflush(stderr);
    }
#if !defined(_WIN32)
    pthread_sigmask(SIG_SETMASK, &old_set, NULL);
#endif
    while (web && !stop_requested()) srv_sleep_ms(50);

    /* stop: cancel the running requests, let the workers answer, stop listening */
    srv_mutex_lock(&g.mu);
    g.stopping = 1;
    srv_cond_broadcast(&g.sched_cv);
    srv_mutex_unlock(&g.mu);
    srv_thread_join(sched);
    /* the workers write the last words of the cancelled requests before civetweb stops
     * (it drops every write once stopping); a client that does not read is not waited for */
    srv_mutex_lock(&g.mu);
    double deadline = srv_now_ms() + 2000.0;
    while (g.handlers > 0 && srv_now_ms() < deadline) srv_cond_timedwait_ms(&g.idle_cv, &g.mu, 50);
    srv_mutex_unlock(&g.mu);
    if (web) mg_stop(web);
    mg_exit_library();
    free_all();
    return exit_code;
}

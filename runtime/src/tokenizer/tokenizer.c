/* ember tokenizer: llama.cpp-compatible tokenization from GGUF vocabulary metadata.
 *
 * Two vocabulary types are supported, chosen by tokenizer.ggml.model:
 *   "gpt2"  byte-level BPE: text is split by a pre-tokenizer (selected by tokenizer.ggml.pre),
 *           each piece's UTF-8 bytes are mapped to printable code points (the GPT-2
 *           byte-to-unicode table) and merged by merge rank.
 *   "llama" SentencePiece BPE: spaces become U+2581, symbols are merged by token score,
 *           leftovers fall back to <0xXX> byte tokens.
 * Before either, special tokens written in the text are cut out (llama.cpp's
 * "special token partition"), longest first.
 *
 * The data flow in this file: vocabulary set-up (create), special-token partition,
 * pre-tokenizer splits, BPE merges, SPM merges, token_to_piece.
 *
 * The reference behaviour is llama.cpp's src/llama-vocab.cpp and src/unicode.cpp; where
 * llama.cpp aborts or throws (it does for a few malformed inputs), this file picks a
 * harmless result instead, noted at each place. No global mutable state: a tokenizer is
 * immutable after create, and every em_tokenize call owns its scratch memory, so
 * concurrent calls on one tokenizer are safe.
 */
#include "tokenizer.h"
#include "unicode_tables.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------ */
/* constants                                                                            */
/* ------------------------------------------------------------------------------------ */

/* llama.cpp's token attributes (llama_token_attr), kept bit-compatible. */
enum {
    ATTR_UNKNOWN = 1 << 0,
    ATTR_UNUSED = 1 << 1,
    ATTR_NORMAL = 1 << 2,
    ATTR_CONTROL = 1 << 3,
    ATTR_USER_DEFINED = 1 << 4,
    ATTR_BYTE = 1 << 5,
};

/* GGUF token types (tokenizer.ggml.token_type). */
enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER_DEFINED = 4, TT_UNUSED = 5, TT_BYTE = 6 };

enum vocab_type { VOCAB_BPE, VOCAB_SPM };

/* Pre-tokenizer families: each is a fixed sequence of split passes (see bpe_fragment). */
enum pre_kind {
    PRE_DEFAULT,  /* punctuation runs, GPT-2, number runs, ASCII digit triples */
    PRE_GPT2,     /* GPT-2 regex only */
    PRE_DIGITS,   /* every number code point alone, then GPT-2 (starcoder, smollm, ...) */
    PRE_LLAMA3,   /* llama3 regex: numbers in groups of up to 3 */
    PRE_QWEN2,    /* as llama3 but every number code point alone */
};

#define EM_WS 0x0100u        /* white space, or-ed into category flags */
#define CP_NONE 0xFFFFFFFFu  /* "no code point here" (outside the current piece) */

/* ------------------------------------------------------------------------------------ */
/* small helpers                                                                        */
/* ------------------------------------------------------------------------------------ */

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Grow *p (element size sz) so that it holds at least need elements. 0 ok, -1 out of memory. */
static int grow(void **p, size_t *cap, size_t need, size_t sz)
{
    if (need <= *cap) return 0;
    size_t nc = *cap ? *cap : 16;
    while (nc < need) {
        if (nc > ((size_t)-1) / 2) return -1;
        nc *= 2;
    }
    if (nc > ((size_t)-1) / sz) return -1;
    void *q = realloc(*p, nc * sz);
    if (!q) return -1;
    *p = q;
    *cap = nc;
    return 0;
}

/* length up to the first NUL, at most n */
static size_t c_strlen(const char *s, size_t n)
{
    const char *z = n ? memchr(s, 0, n) : NULL;
    return z ? (size_t)(z - s) : n;
}

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;  /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

/* ------------------------------------------------------------------------------------ */
/* string -> int map (open addressing; keys point into the tokenizer's arena)           */
/* ------------------------------------------------------------------------------------ */

typedef struct strmap_slot {
    const char *key;   /* NULL: empty slot */
    uint32_t len;
    int32_t val;
} strmap_slot;

typedef struct strmap {
    strmap_slot *slots;  /* (cap) */
    size_t cap;          /* power of two */
} strmap;

static int strmap_init(strmap *m, size_t n)
{
    size_t cap = 16;
    while (cap < n * 2 + 1) cap *= 2;
    m->slots = calloc(cap, sizeof(strmap_slot));
    m->cap = cap;
    return m->slots ? 0 : -1;
}

static strmap_slot *strmap_find_slot(const strmap *m, const char *key, size_t len)
{
    size_t mask = m->cap - 1;
    size_t i = (size_t)hash_bytes(key, len) & mask;
    for (;;) {
        strmap_slot *s = &m->slots[i];
        if (!s->key || (s->len == len && memcmp(s->key, key, len) == 0)) return s;
        i = (i + 1) & mask;
    }
}

/* keep_first: a key seen again keeps its first value (merge ranks), else the last (vocab). */
static void strmap_put(strmap *m, const char *key, uint32_t len, int32_t val, int keep_first)
{
    strmap_slot *s = strmap_find_slot(m, key, len);
    if (s->key) {
        if (!keep_first) s->val = val;
        return;
    }
    s->key = key;
    s->len = len;
    s->val = val;
}

static int32_t strmap_get(const strmap *m, const char *key, size_t len)
{
    if (!m->slots) return -1;
    const strmap_slot *s = strmap_find_slot(m, key, len);
    return s->key ? s->val : -1;
}

/* ------------------------------------------------------------------------------------ */
/* Unicode                                                                              */
/* ------------------------------------------------------------------------------------ */

static int is_unicode_space(uint32_t c)
{
    /* Unicode White_Space, as llama.cpp lists it */
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

/* Category flags (| EM_WS); never 0 for a code point, so 0 can mean "outside the piece". */
static uint16_t cp_flags(uint32_t c)
{
    if (c >= 0x110000) return EM_UCAT_UNDEFINED;
    size_t lo = 0, hi = em_ucat_ranges_n;  /* find the last range with start <= c */
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (em_ucat_ranges[mid].start <= c) lo = mid; else hi = mid;
    }
    uint16_t f = em_ucat_ranges[lo].flags;
    if (is_unicode_space(c)) f |= EM_WS;
    return f;
}

static uint32_t cp_tolower(uint32_t c)
{
    size_t lo = 0, hi = em_lower_map_n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (em_lower_map[mid].cp < c) lo = mid + 1; else hi = mid;
    }
    if (lo < em_lower_map_n && em_lower_map[lo].cp == c) return em_lower_map[lo].lower;
    return c;
}

/* Decode UTF-8 the way llama.cpp does: a malformed lead or sequence yields U+FFFD and
   skips ONE byte; there is no overlong or surrogate check. out has room for n code points. */
static size_t utf8_decode_lenient(const unsigned char *s, size_t n, uint32_t *out)
{
    size_t i = 0, k = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) {
            out[k++] = c;
            i += 1;
        } else if ((c & 0xE0) == 0xC0 && i + 1 < n && (s[i + 1] & 0xC0) == 0x80) {
            out[k++] = ((c & 0x1Fu) << 6) | (s[i + 1] & 0x3Fu);
            i += 2;
        } else if ((c & 0xF0) == 0xE0 && i + 2 < n && (s[i + 1] & 0xC0) == 0x80 &&
                   (s[i + 2] & 0xC0) == 0x80) {
            out[k++] = ((c & 0x0Fu) << 12) | ((s[i + 1] & 0x3Fu) << 6) | (s[i + 2] & 0x3Fu);
            i += 3;
        } else if ((c & 0xF8) == 0xF0 && i + 3 < n && (s[i + 1] & 0xC0) == 0x80 &&
                   (s[i + 2] & 0xC0) == 0x80 && (s[i + 3] & 0xC0) == 0x80) {
            out[k++] = ((c & 0x07u) << 18) | ((s[i + 1] & 0x3Fu) << 12) |
                       ((s[i + 2] & 0x3Fu) << 6) | (s[i + 3] & 0x3Fu);
            i += 4;
        } else {
            out[k++] = 0xFFFD;
            i += 1;
        }
    }
    return k;
}

/* Encode one code point; returns its length (1..4). A value above U+10FFFF (possible from
   F5..F7 lead bytes) makes llama.cpp throw; it is written as U+FFFD here. */
static size_t utf8_encode(uint32_t c, unsigned char *o)
{
    if (c < 0x80) { o[0] = (unsigned char)c; return 1; }
    if (c < 0x800) {
        o[0] = (unsigned char)(0xC0 | (c >> 6));
        o[1] = (unsigned char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c > 0x10FFFF) c = 0xFFFD;
    if (c < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (c >> 12));
        o[1] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (c & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (c >> 18));
    o[1] = (unsigned char)(0x80 | ((c >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (c & 0x3F));
    return 4;
}

/* Length of the UTF-8 "character" starting with byte c, judged by its high nibble only
   (as llama.cpp's SPM and BPE symbol splitting do): continuation bytes count as 1. */
static size_t utf8_lead_len(unsigned char c)
{
    static const unsigned char len[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return len[c >> 4];
}

/* first occurrence of nd[0..nn) in hay[0..hn), or NULL */
static const char *find_bytes(const char *hay, size_t hn, const char *nd, size_t nn)
{
    if (nn == 0 || nn > hn) return NULL;
    const char *end = hay + (hn - nn) + 1;
    for (const char *p = hay; p < end;) {
        const char *q = memchr(p, nd[0], (size_t)(end - p));
        if (!q) return NULL;
        if (memcmp(q, nd, nn) == 0) return q;
        p = q + 1;
    }
    return NULL;
}

/* ------------------------------------------------------------------------------------ */
/* the tokenizer object                                                                 */
/* ------------------------------------------------------------------------------------ */

struct em_tokenizer {
    enum vocab_type type;
    enum pre_kind pre;
    int ignore_merges;             /* a whole pre-token found in the vocab skips merging */
    uint32_t n_vocab;

    char *arena;                   /* all token and merge texts, back to back */
    const char **tok_text;         /* (n_vocab) into arena */
    uint32_t *tok_len;             /* (n_vocab) */
    float *score;                  /* (n_vocab) */
    uint8_t *attr;                 /* (n_vocab) ATTR_* bits */
    uint8_t *eog;                  /* (n_vocab) 1 if end-of-generation */

    strmap vocab;                  /* token text -> id; a repeated text maps to its last id */
    strmap merges;                 /* "left right" -> rank; a repeated merge keeps its first rank */

    int32_t *special;              /* (n_special) ids matched in raw text, longest first */
    size_t n_special;

    int32_t bos, eos, unk, pad;    /* -1 for none */
    int add_bos, add_eos, add_space_prefix;

    unsigned char byte_enc[256][2];  /* GPT-2 byte -> UTF-8 of its printable code point */
    unsigned char byte_enc_len[256];
    int16_t byte_dec[324];           /* that code point -> byte, -1 if none */
    int32_t byte_tok[256];           /* SPM: byte -> <0xXX> token (or the 1-byte token), -1 */
    int32_t single_tok[256];         /* BPE: 1-byte string -> token id, -1 */
};

static void build_byte_maps(em_tokenizer *t)
{
    int n = 0;
    for (int i = 0; i < 324; i++) t->byte_dec[i] = -1;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        uint32_t cp = printable ? (uint32_t)b : (uint32_t)(256 + n++);
        unsigned char tmp[4];
        size_t len = utf8_encode(cp, tmp);
        memcpy(t->byte_enc[b], tmp, len);
        t->byte_enc_len[b] = (unsigned char)len;
        t->byte_dec[cp] = (int16_t)b;
    }
}

static int32_t text_to_token(const em_tokenizer *t, const char *s, size_t n)
{
    return strmap_get(&t->vocab, s, n);
}

static int tok_is(const em_tokenizer *t, int32_t id, const char *s)
{
    size_t n = strlen(s);
    return t->tok_len[id] == n && memcmp(t->tok_text[id], s, n) == 0;
}

static int in_list(const em_tokenizer *t, int32_t id, const char *const *list)
{
    for (; *list; list++)
        if (tok_is(t, id, *list)) return 1;
    return 0;
}

/* Which pre-tokenizer llama.cpp uses for tokenizer.ggml.pre, and the flags that go with it.
   Returns 0 when ember does not implement that pre-tokenizer. */
static int select_pre(const char *pre, enum pre_kind *kind, int *ignore_merges, int *def_add_bos,
                      int *no_bos)
{
    static const char *const llama3[] = {"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1",
                                         "pixtral", "midm-2.0", "lfm2", "jina-v5-nano", NULL};
    static const char *const llama3_plain[] = {"dbrx", "smaug-bpe", NULL};
    static const char *const chatglm[] = {"chatglm-bpe", NULL};
    static const char *const glm[] = {"glm4", "glm5", NULL};
    static const char *const qwen2[] = {"qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez",
                                        "stablelm2", "hunyuan", "solar-open", NULL};
    static const char *const digits[] = {"starcoder", "refact", "command-r", "smollm", "codeshell",
                                         "exaone", "minerva-7b", "mellum2", NULL};
    static const char *const gpt2[] = {"gpt-2", "phi-2", "jina-es", "jina-de", "gigachat",
                                       "jina-v2-es", "jina-v2-de", "a.x-4.0", "mellum",
                                       "modern-bert", "jina-v1-en", "jina-v2-code", "roberta-bpe",
                                       "mpt", "olmo", "jais", "exaone4", "trillion",
                                       "granite-docling", NULL};
    *ignore_merges = 0;
    *def_add_bos = 0;
    *no_bos = 0;
    if (!pre || !*pre || strcmp(pre, "default") == 0) { *kind = PRE_DEFAULT; return 1; }
    struct { const char *const *names; enum pre_kind kind; int im, bos, nobos; } table[] = {
        {llama3, PRE_LLAMA3, 1, 1, 0},
        {llama3_plain, PRE_LLAMA3, 0, 0, 0},
        {chatglm, PRE_LLAMA3, 0, 0, 1},
        {glm, PRE_LLAMA3, 1, 0, 1},
        {qwen2, PRE_QWEN2, 0, 0, 0},
        {digits, PRE_DIGITS, 0, 0, 0},
        {gpt2, PRE_GPT2, 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        for (const char *const *p = table[i].names; *p; p++) {
            if (strcmp(pre, *p) == 0) {
                *kind = table[i].kind;
                *ignore_merges = table[i].im;
                *def_add_bos = table[i].bos;
                *no_bos = table[i].nobos;
                return 1;
            }
        }
    }
    return 0;
}

/* llama.cpp's text-based adjustments of attributes and its end-of-generation set. */
static void detect_special_by_text(em_tokenizer *t)
{
    static const char *const eot[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>",
        "<|endoftext|>", "<|end_of_text|>", "<EOT>", "_<EOT>", "[EOT]",
        "<\xEF\xBD\x9C" "end\xE2\x96\x81" "of\xE2\x96\x81" "sentence\xEF\xBD\x9C>",
        "<end_of_utterance>", NULL};
    static const char *const eom[] = {"<|eom_id|>", NULL};
    static const char *const fim_pre[] = {"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>",
        "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "begin\xEF\xBD\x9C>", "<PRE>", "\xE2\x96\x81<PRE>",
        "<|code_prefix|>", "<|prefix|>", NULL};
    static const char *const fim_suf[] = {"<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>",
        "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "hole\xEF\xBD\x9C>", "<SUF>", "\xE2\x96\x81<SUF>",
        "<|code_suffix|>", "<|suffix|>", NULL};
    static const char *const fim_mid[] = {"<|fim_middle|>", "<fim-middle>", "<fim_middle>",
        "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "end\xEF\xBD\x9C>", "<MID>", "\xE2\x96\x81<MID>",
        "<|code_middle|>", "<|middle|>", NULL};
    static const char *const fim_pad[] = {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]", NULL};
    static const char *const fim_rep[] = {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>",
        "<reponame>", NULL};
    static const char *const fim_sep[] = {"<|file_sep|>", NULL};
    static const char *const eog[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>",
        "<|call|>", "<|flush|>", "<|calls|>", "<end_of_turn>", "<|endoftext|>", "</s>",
        "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>",
        "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
        "<\xEF\xBD\x9C" "end\xE2\x96\x81" "of\xE2\x96\x81" "sentence\xEF\xBD\x9C>", "[e~[", NULL};
    static const char *const always_user[] = {"<|channel|>", "<|message|>", "<|start|>",
        "<|constrain|>", NULL};

    /* The lists an id is picked from. llama.cpp walks a hash map and takes the first match,
       an order it does not define; ember takes the lowest id whose text appears in
       token_to_id (i.e. the id the text maps to). Only vocabularies holding two candidates
       of one list can differ. */
    const char *const *pick_lists[] = {eot, eom, fim_pre, fim_suf, fim_mid, fim_pad, fim_rep, fim_sep};
    int32_t picked[8];
    for (int l = 0; l < 8; l++) {
        picked[l] = -1;
        for (const char *const *p = pick_lists[l]; *p; p++) {
            int32_t id = text_to_token(t, *p, strlen(*p));
            if (id >= 0 && (picked[l] < 0 || id < picked[l])) picked[l] = id;
        }
        if (picked[l] >= 0) t->attr[picked[l]] |= ATTR_CONTROL;
    }

    /* control tokens named "unused" */
    for (uint32_t i = 0; i < t->n_vocab; i++) {
        if (!(t->attr[i] & ATTR_CONTROL)) continue;
        if (text_to_token(t, t->tok_text[i], t->tok_len[i]) != (int32_t)i) continue;
        if (find_bytes(t->tok_text[i], t->tok_len[i], "unused", 6)) t->attr[i] |= ATTR_UNUSED;
    }

    for (int l = 5; l < 8; l++)  /* fim pad, rep, sep */
        if (picked[l] >= 0) t->eog[picked[l]] = 1;
    for (uint32_t i = 0; i < t->n_vocab; i++) {
        if (text_to_token(t, t->tok_text[i], t->tok_len[i]) != (int32_t)i) continue;
        if (in_list(t, (int32_t)i, eog)) {
            t->eog[i] = 1;
            t->attr[i] |= ATTR_CONTROL;
        }
    }
    for (uint32_t i = 0; i < t->n_vocab; i++) {
        if (text_to_token(t, t->tok_text[i], t->tok_len[i]) != (int32_t)i) continue;
        if (in_list(t, (int32_t)i, always_user)) t->attr[i] = ATTR_USER_DEFINED;
    }
    if (t->eos >= 0) t->eog[t->eos] = 1;
    if (picked[0] >= 0) t->eog[picked[0]] = 1;
    if (picked[1] >= 0) t->eog[picked[1]] = 1;

    /* o200k_harmony / solar-open: "<|end|>" is not end-of-generation there */
    int has_return = 0, has_call = 0, has_flush = 0;
    int32_t end_id = -1, s_id = -1;
    int has_s_marker = 0;
    for (uint32_t i = 0; i < t->n_vocab; i++) {
        if (!t->eog[i]) continue;
        if (tok_is(t, (int32_t)i, "<|return|>")) has_return = 1;
        else if (tok_is(t, (int32_t)i, "<|call|>") || tok_is(t, (int32_t)i, "<|calls|>")) has_call = 1;
        else if (tok_is(t, (int32_t)i, "<|flush|>")) has_flush = 1;
        else if (tok_is(t, (int32_t)i, "<|end|>")) end_id = (int32_t)i;
    }
    if (end_id >= 0 && ((has_return && has_call) || (has_call && has_flush))) {
        t->eog[end_id] = 0;
        t->attr[end_id] = ATTR_USER_DEFINED;
    }
    /* gemma4 / plamo: a plain "</s>" */
    for (uint32_t i = 0; i < t->n_vocab; i++) {
        if (!t->eog[i]) continue;
        if (tok_is(t, (int32_t)i, "<|tool_response>") || tok_is(t, (int32_t)i, "<|plamo:eos|>")) has_s_marker = 1;
        else if (tok_is(t, (int32_t)i, "</s>")) s_id = (int32_t)i;
    }
    if (has_s_marker && s_id >= 0) {
        t->eog[s_id] = 0;
        t->attr[s_id] = ATTR_NORMAL;
    }
}

static int cmp_special(const void *a, const void *b, const em_tokenizer *t)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (t->tok_len[x] != t->tok_len[y]) return t->tok_len[x] > t->tok_len[y] ? -1 : 1;
    return (x > y) - (x < y);
}

/* Stable merge sort of the special ids, longest text first, then lowest id (qsort has no
   context argument in C11). llama.cpp uses std::sort, whose order among equal lengths is
   unspecified; it only matters when two equal-length special texts overlap in the input. */
static int sort_special(em_tokenizer *t)
{
    size_t n = t->n_special;
    if (n < 2) return 0;
    int32_t *tmp = malloc(n * sizeof(int32_t));
    if (!tmp) return -1;
    for (size_t w = 1; w < n; w *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * w) {
            size_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            size_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi)
                tmp[k++] = cmp_special(&t->special[j], &t->special[i], t) < 0 ? t->special[j++] : t->special[i++];
            while (i < mid) tmp[k++] = t->special[i++];
            while (j < hi) tmp[k++] = t->special[j++];
        }
        memcpy(t->special, tmp, n * sizeof(int32_t));
    }
    free(tmp);
    return 0;
}

void em_tokenizer_free(em_tokenizer *t)
{
    if (!t) return;
    free(t->arena);
    free(t->tok_text);
    free(t->tok_len);
    free(t->score);
    free(t->attr);
    free(t->eog);
    free(t->vocab.slots);
    free(t->merges.slots);
    free(t->special);
    free(t);
}

int em_tokenizer_create(const em_tokenizer_config *cfg, em_tokenizer **out, char *err, size_t errlen)
{
    if (out) *out = NULL;
    if (!cfg || !out) { set_err(err, errlen, "em_tokenizer_create: NULL argument"); return 1; }
    if (!cfg->model) { set_err(err, errlen, "tokenizer.ggml.model is missing"); return 1; }
    if (cfg->n_vocab == 0 || cfg->n_vocab > 0x7FFFFFFFu || !cfg->tokens || !cfg->token_lens) {
        set_err(err, errlen, "tokenizer.ggml.tokens is missing or empty (n_vocab=%u)", cfg->n_vocab);
        return 1;
    }

    em_tokenizer *t = calloc(1, sizeof(*t));
    if (!t) { set_err(err, errlen, "out of memory"); return 2; }

    int def_add_bos = 0, def_add_eos = 0, def_space_prefix = 0, no_bos = 0;
    int32_t def_bos, def_eos, def_unk;
    if (strcmp(cfg->model, "gpt2") == 0) {
        t->type = VOCAB_BPE;
        if (!select_pre(cfg->pre, &t->pre, &t->ignore_merges, &def_add_bos, &no_bos)) {
            set_err(err, errlen,
                    "tokenizer.ggml.pre = '%s' is not supported by ember (supported: default, gpt-2, "
                    "smollm, starcoder, llama-bpe/llama3, qwen2, dbrx and their aliases)", cfg->pre);
            em_tokenizer_free(t);
            return 1;
        }
        if (!cfg->merges && cfg->n_merges) {
            set_err(err, errlen, "tokenizer.ggml.merges: n_merges=%u but no array", cfg->n_merges);
            em_tokenizer_free(t);
            return 1;
        }
        def_bos = 11; def_eos = 11; def_unk = -1;
    } else if (strcmp(cfg->model, "llama") == 0) {
        t->type = VOCAB_SPM;
        t->pre = PRE_DEFAULT;
        def_add_bos = 1;
        def_space_prefix = 1;
        def_bos = 1; def_eos = 2; def_unk = 0;
    } else {
        set_err(err, errlen, "tokenizer.ggml.model = '%s' is not supported by ember (use \"gpt2\" or \"llama\")",
                cfg->model);
        em_tokenizer_free(t);
        return 1;
    }
    if (no_bos) def_bos = -1;

    uint32_t nv = cfg->n_vocab;
    uint32_t nm = t->type == VOCAB_BPE ? cfg->n_merges : 0;
    t->n_vocab = nv;

    /* arena: every token text (an empty one becomes "[EMPTY_<id>]" as in llama.cpp), then merges */
    size_t total = 0;
    for (uint32_t i = 0; i < nv; i++) {
        uint64_t l = cfg->token_lens[i];
        if (l > 0xFFFFFFFFull || (l && !cfg->tokens[i])) {
            set_err(err, errlen, "tokenizer.ggml.tokens[%u]: bad length %llu", i, (unsigned long long)l);
            em_tokenizer_free(t);
            return 1;
        }
        size_t kept = l ? c_strlen(cfg->tokens[i], (size_t)l) : 0;
        total += kept ? kept : 24;
    }
    for (uint32_t i = 0; i < nm; i++) {
        uint64_t l = cfg->merge_lens ? cfg->merge_lens[i] : 0;
        if (l > 0xFFFFFFFFull || (l && !cfg->merges[i])) {
            set_err(err, errlen, "tokenizer.ggml.merges[%u]: bad length %llu", i, (unsigned long long)l);
            em_tokenizer_free(t);
            return 1;
        }
        total += (size_t)l;
    }
    t->arena = malloc(total ? total : 1);
    t->tok_text = malloc(nv * sizeof(*t->tok_text));
    t->tok_len = malloc(nv * sizeof(*t->tok_len));
    t->score = malloc(nv * sizeof(*t->score));
    t->attr = malloc(nv);
    t->eog = calloc(nv, 1);
    t->special = malloc(nv * sizeof(*t->special));
    if (!t->arena || !t->tok_text || !t->tok_len || !t->score || !t->attr || !t->eog || !t->special ||
        strmap_init(&t->vocab, nv) != 0 || (nm && strmap_init(&t->merges, nm) != 0)) {
        set_err(err, errlen, "out of memory building the vocabulary (%u tokens)", nv);
        em_tokenizer_free(t);
        return 2;
    }

    /* llama.cpp reads GGUF strings as C strings: a text ends at its first NUL byte. */
    char *p = t->arena;
    for (uint32_t i = 0; i < nv; i++) {
        size_t l = c_strlen(cfg->tokens[i], (size_t)cfg->token_lens[i]);
        if (l) memcpy(p, cfg->tokens[i], l);
        else l = (size_t)snprintf(p, 24, "[EMPTY_%u]", i);
        t->tok_text[i] = p;
        t->tok_len[i] = (uint32_t)l;
        p += l;
        t->score[i] = cfg->scores ? cfg->scores[i] : 0.0f;
        uint8_t a = ATTR_NORMAL;
        if (cfg->token_types) {
            switch (cfg->token_types[i]) {
            case TT_UNKNOWN: a = ATTR_UNKNOWN; break;
            case TT_UNUSED: a = ATTR_UNUSED; break;
            case TT_NORMAL: a = ATTR_NORMAL; break;
            case TT_CONTROL: a = ATTR_CONTROL; break;
            case TT_USER_DEFINED: a = ATTR_USER_DEFINED; break;
            case TT_BYTE: a = ATTR_BYTE; break;
            default: a = 0; break;  /* undefined */
            }
        }
        t->attr[i] = a;
        strmap_put(&t->vocab, t->tok_text[i], t->tok_len[i], (int32_t)i, 0);
    }
    for (uint32_t i = 0; i < nm; i++) {
        size_t l = cfg->merge_lens ? c_strlen(cfg->merges[i], (size_t)cfg->merge_lens[i]) : 0;
        if (l) memcpy(p, cfg->merges[i], l);
        /* Keyed by the whole "left right" text: a lookup key never has a space inside left
           or right, so this matches llama.cpp's split at the first space after byte 0. */
        strmap_put(&t->merges, p, (uint32_t)l, (int32_t)i, 1);
        p += l;
    }

    /* special ids: the model default, replaced by metadata when in range */
    if (def_bos >= (int64_t)nv) def_bos = -1;
    if (def_eos >= (int64_t)nv) def_eos = -1;
    if (def_unk >= (int64_t)nv) def_unk = -1;
    t->bos = (cfg->bos_id >= 0 && (uint32_t)cfg->bos_id < nv) ? cfg->bos_id : def_bos;
    t->eos = (cfg->eos_id >= 0 && (uint32_t)cfg->eos_id < nv) ? cfg->eos_id : def_eos;
    t->unk = (cfg->unk_id >= 0 && (uint32_t)cfg->unk_id < nv) ? cfg->unk_id : def_unk;
    t->pad = (cfg->pad_id >= 0 && (uint32_t)cfg->pad_id < nv) ? cfg->pad_id : -1;
    t->add_bos = cfg->add_bos >= 0 ? !!cfg->add_bos : def_add_bos;
    t->add_eos = cfg->add_eos >= 0 ? !!cfg->add_eos : def_add_eos;
    t->add_space_prefix = cfg->add_space_prefix >= 0 ? !!cfg->add_space_prefix : def_space_prefix;

    build_byte_maps(t);
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        t->single_tok[b] = text_to_token(t, &c, 1);
        char hex[7];
        snprintf(hex, sizeof(hex), "<0x%02X>", b);
        int32_t id = text_to_token(t, hex, 6);
        t->byte_tok[b] = id >= 0 ? id : t->single_tok[b];
    }

    detect_special_by_text(t);

    t->n_special = 0;
    for (uint32_t i = 0; i < nv; i++)
        if (t->attr[i] & (ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN)) t->special[t->n_special++] = (int32_t)i;
    if (sort_special(t) != 0) {
        set_err(err, errlen, "out of memory");
        em_tokenizer_free(t);
        return 2;
    }

    *out = t;
    return 0;
}

uint32_t em_tokenizer_n_vocab(const em_tokenizer *t) { return t ? t->n_vocab : 0; }
int32_t em_tokenizer_bos(const em_tokenizer *t) { return t ? t->bos : -1; }
int32_t em_tokenizer_eos(const em_tokenizer *t) { return t ? t->eos : -1; }
int em_tokenizer_add_bos(const em_tokenizer *t) { return t ? t->add_bos : 0; }
int em_tokenizer_add_eos(const em_tokenizer *t) { return t ? t->add_eos : 0; }

int em_tokenizer_is_eog(const em_tokenizer *t, int32_t id)
{
    return t && id >= 0 && (uint32_t)id < t->n_vocab && t->eog[id];
}

/* ------------------------------------------------------------------------------------ */
/* per-call scratch                                                                     */
/* ------------------------------------------------------------------------------------ */

typedef struct symbol {
    int32_t prev, next;  /* linked list over the piece's symbols, -1 at the ends */
    size_t off, n;       /* bytes [off, off+n) of the piece; n == 0 once merged away */
} symbol;

typedef struct bigram {
    int32_t left, right;
    double priority;     /* higher merges first (see pair_priority_fn) */
    size_t size;         /* byte length of left+right when queued; stale entries differ */
} bigram;

typedef struct fragment {
    int32_t token;       /* >= 0: a special token; -1: raw text [off, off+len) */
    size_t off, len;
} fragment;

typedef struct scratch {
    int oom;
    int32_t *out; size_t n_out, cap_out;
    fragment *frag, *frag2; size_t n_frag, cap_frag, cap_frag2;
    uint32_t *cp; uint16_t *fl; size_t cap_cp, cap_fl;     /* (code points of one fragment) */
    size_t *seg, *seg2; size_t n_seg, cap_seg, cap_seg2;   /* piece lengths in code points */
    unsigned char *buf; size_t cap_buf;                    /* one piece's bytes */
    unsigned char *key; size_t cap_key;                    /* merge lookup key */
    symbol *sym; size_t cap_sym;
    bigram *heap; size_t n_heap, cap_heap;
} scratch;

static void scratch_free(scratch *s)
{
    free(s->out); free(s->frag); free(s->frag2); free(s->cp); free(s->fl); free(s->seg);
    free(s->seg2); free(s->buf); free(s->key); free(s->sym); free(s->heap);
}

static void emit(scratch *s, int32_t id)
{
    if (s->oom) return;
    if (grow((void **)&s->out, &s->cap_out, s->n_out + 1, sizeof(int32_t))) { s->oom = 1; return; }
    s->out[s->n_out++] = id;
}

/* ------------------------------------------------------------------------------------ */
/* special-token partition                                                              */
/* ------------------------------------------------------------------------------------ */

/* Split the raw text at every occurrence of every special token, longest token first;
   occurrences are taken left to right without overlap inside text not yet claimed.
   With parse_special off, control and unknown tokens stay text, user-defined ones are
   still matched (as llama.cpp does, following HF tokenizers). */
static int partition(const em_tokenizer *t, scratch *s, const char *text, size_t len, int parse_special)
{
    s->n_frag = 0;
    if (len == 0) return 0;
    if (grow((void **)&s->frag, &s->cap_frag, 1, sizeof(fragment))) return -1;
    s->frag[0].token = -1;
    s->frag[0].off = 0;
    s->frag[0].len = len;
    s->n_frag = 1;

    for (size_t k = 0; k < t->n_special; k++) {
        int32_t id = t->special[k];
        if (!parse_special && (t->attr[id] & (ATTR_CONTROL | ATTR_UNKNOWN))) continue;
        const char *tx = t->tok_text[id];
        size_t tn = t->tok_len[id];
        size_t n2 = 0;
        int changed = 0;
        for (size_t f = 0; f < s->n_frag; f++) {
            fragment fr = s->frag[f];
            if (fr.token < 0) {
                size_t off = fr.off, rem = fr.len;
                const char *m;
                while (rem >= tn && (m = find_bytes(text + off, rem, tx, tn)) != NULL) {
                    size_t at = (size_t)(m - text);
                    changed = 1;
                    if (grow((void **)&s->frag2, &s->cap_frag2, n2 + 2, sizeof(fragment))) return -1;
                    if (at > off) s->frag2[n2++] = (fragment){-1, off, at - off};
                    s->frag2[n2++] = (fragment){id, 0, 0};
                    rem -= (at - off) + tn;
                    off = at + tn;
                }
                if (rem > 0) {
                    if (grow((void **)&s->frag2, &s->cap_frag2, n2 + 1, sizeof(fragment))) return -1;
                    s->frag2[n2++] = (fragment){-1, off, rem};
                }
            } else {
                if (grow((void **)&s->frag2, &s->cap_frag2, n2 + 1, sizeof(fragment))) return -1;
                s->frag2[n2++] = fr;
            }
        }
        if (changed) {
            fragment *tmp = s->frag; s->frag = s->frag2; s->frag2 = tmp;
            size_t tc = s->cap_frag; s->cap_frag = s->cap_frag2; s->cap_frag2 = tc;
            s->n_frag = n2;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* pre-tokenizer: split a fragment's code points into pieces                            */
/* ------------------------------------------------------------------------------------ */

/* Each pass reads the piece lengths s->seg[0..n_seg) and writes new ones to s->seg2,
   then the two are swapped. A pass never merges pieces, it only cuts them further. */

typedef struct cutter {
    scratch *s;
    size_t n2;     /* lengths written */
    size_t last;   /* end of the last piece written (absolute code point index) */
} cutter;

static void cut(cutter *c, size_t end)
{
    if (end <= c->last) return;
    scratch *s = c->s;
    if (grow((void **)&s->seg2, &s->cap_seg2, c->n2 + 1, sizeof(size_t))) { s->oom = 1; return; }
    s->seg2[c->n2++] = end - c->last;
    c->last = end;
}

static void pass_done(cutter *c)
{
    scratch *s = c->s;
    size_t *tmp = s->seg; s->seg = s->seg2; s->seg2 = tmp;
    size_t tc = s->cap_seg; s->cap_seg = s->cap_seg2; s->cap_seg2 = tc;
    s->n_seg = c->n2;
}

/* A character class pass: "[class]" (one code point per match) or "[class]+" (runs);
   the text between matches is kept as pieces of its own. Used for the passes llama.cpp
   runs through std::regex on its category-collapsed text. */
enum cls { CLS_NUMBER, CLS_PUNCT_DEFAULT, CLS_ASCII_DIGIT };

static int in_class(enum cls k, uint32_t c, uint16_t f)
{
    switch (k) {
    case CLS_NUMBER:
        return (f & EM_UCAT_NUMBER) != 0;
    case CLS_PUNCT_DEFAULT:
        /* [\p{P}\$\+<=>\^~\|]: every printable ASCII non-alphanumeric except '`',
           and non-ASCII punctuation (never white space) */
        if (c < 0x80) return c >= 0x21 && c <= 0x7E && c != 0x60 && !(f & (EM_UCAT_NUMBER | EM_UCAT_LETTER));
        return (f & EM_UCAT_PUNCTUATION) && !(f & EM_WS);
    case CLS_ASCII_DIGIT:
        return c >= '0' && c <= '9';
    }
    return 0;
}

static void pass_class(scratch *s, enum cls k, int runs)
{
    cutter c = {s, 0, 0};
    size_t start = 0;
    for (size_t g = 0; g < s->n_seg; g++) {
        size_t b = start, e = start + s->seg[g];
        start = e;
        for (size_t p = b; p < e;) {
            if (in_class(k, s->cp[p], s->fl[p])) {
                cut(&c, p);
                p++;
                if (runs)
                    while (p < e && in_class(k, s->cp[p], s->fl[p])) p++;
                cut(&c, p);
            } else {
                p++;
            }
        }
        cut(&c, e);
    }
    pass_done(&c);
}

/* "[0-9][0-9][0-9]": ASCII digit triples, left to right. */
static void pass_digit_triples(scratch *s)
{
    cutter c = {s, 0, 0};
    size_t start = 0;
    for (size_t g = 0; g < s->n_seg; g++) {
        size_t b = start, e = start + s->seg[g];
        start = e;
        for (size_t p = b; p < e;) {
            if (p + 3 <= e && in_class(CLS_ASCII_DIGIT, s->cp[p], 0) &&
                in_class(CLS_ASCII_DIGIT, s->cp[p + 1], 0) && in_class(CLS_ASCII_DIGIT, s->cp[p + 2], 0)) {
                cut(&c, p);
                p += 3;
                cut(&c, p);
            } else {
                p++;
            }
        }
        cut(&c, e);
    }
    pass_done(&c);
}

/* The GPT-2 pattern
       's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
   evaluated by hand, with llama.cpp's choices where it departs from a regex engine:
   lookahead and "outside the piece" use the piece's end, and a code point llama.cpp's
   scanner does not match by any alternative becomes a piece of one. */
static void pass_gpt2(scratch *s)
{
    const uint32_t *cp = s->cp;
    const uint16_t *fl = s->fl;
    cutter c = {s, 0, 0};
    size_t start = 0;
    for (size_t g = 0; g < s->n_seg; g++) {
        size_t b = start, e = start + s->seg[g];
        start = e;
#define FL(q) ((q) < e ? fl[q] : (uint16_t)0)
        size_t p = b;
        while (p < e) {
            uint32_t ch = cp[p];
            uint16_t f = fl[p];
            if (ch == '\'' && p + 1 < e) {
                uint32_t c1 = cp[p + 1];
                if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') { p += 2; cut(&c, p); continue; }
                if (p + 2 < e) {
                    uint32_t c2 = cp[p + 2];
                    if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) {
                        p += 3; cut(&c, p); continue;
                    }
                }
            }
            uint16_t f2 = ch == ' ' ? FL(p + 1) : f;
            if (f2 & EM_UCAT_LETTER) {
                p += ch == ' ' ? 2 : 1;
                while (FL(p) & EM_UCAT_LETTER) p++;
                cut(&c, p);
                continue;
            }
            if (f2 & EM_UCAT_NUMBER) {
                p += ch == ' ' ? 2 : 1;
                while (FL(p) & EM_UCAT_NUMBER) p++;
                cut(&c, p);
                continue;
            }
            if (f2 && !(f2 & (EM_WS | EM_UCAT_LETTER | EM_UCAT_NUMBER))) {
                p += ch == ' ' ? 2 : 1;
                while (FL(p) && !(FL(p) & (EM_WS | EM_UCAT_LETTER | EM_UCAT_NUMBER))) p++;
                cut(&c, p);
                continue;
            }
            size_t nws = 0;
            while (FL(p + nws) & EM_WS) nws++;
            if (nws > 1 && p + nws < e) { p += nws - 1; cut(&c, p); continue; }  /* \s+(?!\S) */
            p += nws > 0 ? nws : 1;
            cut(&c, p);
        }
#undef FL
        cut(&c, e);
    }
    pass_done(&c);
}

/* The llama3 pattern (max_digits 3) and the qwen2 one (max_digits 1):
       (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*
       |\s*[\r\n]+|\s+(?!\S)|\s+                                                                 */
static void pass_llama3(scratch *s, size_t max_digits)
{
    const uint32_t *cp = s->cp;
    const uint16_t *fl = s->fl;
    cutter c = {s, 0, 0};
    size_t start = 0;
    for (size_t g = 0; g < s->n_seg; g++) {
        size_t b = start, e = start + s->seg[g];
        start = e;
#define FL(q) ((q) < e ? fl[q] : (uint16_t)0)
#define CP(q) ((q) < e ? cp[q] : CP_NONE)
        size_t p = b;
        while (p < e) {
            uint32_t ch = cp[p];
            uint16_t f = fl[p];
            if (ch == '\'' && p + 1 < e) {
                uint32_t c1 = cp_tolower(cp[p + 1]);
                if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') { p += 2; cut(&c, p); continue; }
                if (p + 2 < e) {
                    uint32_t c2 = cp_tolower(cp[p + 2]);
                    if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) {
                        p += 3; cut(&c, p); continue;
                    }
                }
            }
            if (!(ch == '\r' || ch == '\n' || (f & EM_UCAT_NUMBER)) &&
                ((f & EM_UCAT_LETTER) || (FL(p + 1) & EM_UCAT_LETTER))) {
                p++;
                while (FL(p) & EM_UCAT_LETTER) p++;
                cut(&c, p);
                continue;
            }
            if (f & EM_UCAT_NUMBER) {
                size_t run = p;
                while (FL(p) & EM_UCAT_NUMBER) {
                    p++;
                    if (p - run >= max_digits) { cut(&c, p); run = p; }
                }
                cut(&c, p);
                continue;
            }
            uint16_t f2 = ch == ' ' ? FL(p + 1) : f;
            if (!(f2 & (EM_WS | EM_UCAT_LETTER | EM_UCAT_NUMBER))) {
                /* (f is never 0 here; llama.cpp tests it, not f2, at this point) */
                if (ch == ' ') p++;
                while (FL(p) && !(FL(p) & (EM_WS | EM_UCAT_LETTER | EM_UCAT_NUMBER))) p++;
                while (CP(p) == '\r' || CP(p) == '\n') p++;
                cut(&c, p);
                continue;
            }
            size_t nws = 0, nl_end = 0;
            while (FL(p + nws) & EM_WS) {
                uint32_t w = cp[p + nws];
                if (w == '\r' || w == '\n') nl_end = p + nws + 1;
                nws++;
            }
            if (nl_end > 0) { p = nl_end; cut(&c, p); continue; }           /* \s*[\r\n]+ */
            if (nws > 1 && p + nws < e) { p += nws - 1; cut(&c, p); continue; }  /* \s+(?!\S) */
            p += nws > 0 ? nws : 1;
            cut(&c, p);
        }
#undef FL
#undef CP
        cut(&c, e);
    }
    pass_done(&c);
}

/* ------------------------------------------------------------------------------------ */
/* the merge loop (BPE and SPM)                                                         */
/* ------------------------------------------------------------------------------------ */

/* Both vocabularies merge the same way: the piece is cut into UTF-8 characters, every
   adjacent pair that may merge is queued, and the best queued pair is merged until none is
   left. They differ only in which pairs may merge and how good a merge is, which
   a pair_priority_fn answers: 0 when L and R (adjacent in s->buf) do not merge, else 1
   with *priority set, higher merging first. Ties go to the leftmost pair in both, as in
   llama.cpp (llm_bigram_bpe and llm_bigram_spm compare left last).

   The priority is a double so that one comparison serves both: an int32 merge rank (lower
   first) is stored as -rank and a float score (higher first) as itself, both exactly, so
   the order, NaN scores included, is that of comparing the originals. */
typedef int (*pair_priority_fn)(const em_tokenizer *t, scratch *s, const symbol *L, const symbol *R,
                                double *priority);

static int bigram_before(const bigram *a, const bigram *b)
{
    if (a->priority != b->priority) return a->priority > b->priority;
    return a->left < b->left;
}

static void heap_push(scratch *s, bigram bg)
{
    if (grow((void **)&s->heap, &s->cap_heap, s->n_heap + 1, sizeof(bigram))) { s->oom = 1; return; }
    size_t i = s->n_heap++;
    while (i > 0) {
        size_t up = (i - 1) / 2;
        if (!bigram_before(&bg, &s->heap[up])) break;
        s->heap[i] = s->heap[up];
        i = up;
    }
    s->heap[i] = bg;
}

static bigram heap_pop(scratch *s)
{
    bigram top = s->heap[0];
    bigram last = s->heap[--s->n_heap];
    size_t n = s->n_heap, i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const bigram *best = &last;
        if (l < n && bigram_before(&s->heap[l], best)) { m = l; best = &s->heap[l]; }
        if (r < n && bigram_before(&s->heap[r], best)) { m = r; }
        if (m == i) break;
        s->heap[i] = s->heap[m];
        i = m;
    }
    if (n > 0) s->heap[i] = last;
    return top;
}

static void try_pair(const em_tokenizer *t, scratch *s, pair_priority_fn priority, int32_t left, int32_t right)
{
    if (left < 0 || right < 0) return;
    const symbol *L = &s->sym[left], *R = &s->sym[right];
    bigram bg = {left, right, 0.0, L->n + R->n};
    if (!priority(t, s, L, R, &bg.priority)) return;
    heap_push(s, bg);
}

/* Merge s->buf[0..n) into s->sym[0..ns), returned. A merge keeps the left symbol and
   empties the right one (n = 0), so the surviving symbols, in array order, are the list
   from symbol 0 on. */
static size_t merge_piece(const em_tokenizer *t, scratch *s, size_t n, pair_priority_fn priority)
{
    size_t ns = 0;
    for (size_t off = 0; off < n; ns++) {
        size_t cl = utf8_lead_len(s->buf[off]);
        if (cl > n - off) cl = n - off;
        off += cl;
    }
    if (grow((void **)&s->sym, &s->cap_sym, ns, sizeof(symbol))) { s->oom = 1; return 0; }
    size_t k = 0;
    for (size_t off = 0; off < n; k++) {
        size_t cl = utf8_lead_len(s->buf[off]);
        if (cl > n - off) cl = n - off;
        s->sym[k].prev = (int32_t)k - 1;
        s->sym[k].next = off + cl == n ? -1 : (int32_t)k + 1;
        s->sym[k].off = off;
        s->sym[k].n = cl;
        off += cl;
    }
    s->n_heap = 0;
    for (size_t i = 1; i < ns; i++) try_pair(t, s, priority, (int32_t)i - 1, (int32_t)i);
    while (s->n_heap > 0 && !s->oom) {
        bigram bg = heap_pop(s);
        symbol *L = &s->sym[bg.left], *R = &s->sym[bg.right];
        if (L->n == 0 || R->n == 0 || L->n + R->n != bg.size) continue;  /* stale */
        L->n += R->n;
        R->n = 0;
        L->next = R->next;
        if (R->next >= 0) s->sym[R->next].prev = bg.left;
        try_pair(t, s, priority, L->prev, bg.left);
        try_pair(t, s, priority, bg.left, L->next);
    }
    return ns;
}

/* ------------------------------------------------------------------------------------ */
/* BPE                                                                                  */
/* ------------------------------------------------------------------------------------ */

/* BPE: "left right" must be in the merge list; the lower its rank, the sooner it merges. */
static int bpe_pair_priority(const em_tokenizer *t, scratch *s, const symbol *L, const symbol *R,
                             double *priority)
{
    size_t kn = L->n + 1 + R->n;
    if (grow((void **)&s->key, &s->cap_key, kn, 1)) { s->oom = 1; return 0; }
    memcpy(s->key, s->buf + L->off, L->n);
    s->key[L->n] = ' ';
    memcpy(s->key + L->n + 1, s->buf + R->off, R->n);
    int32_t rank = strmap_get(&t->merges, (const char *)s->key, kn);
    if (rank < 0) return 0;
    *priority = -(double)rank;
    return 1;
}

/* Merge one pre-tokenized piece (already byte-encoded, in s->buf[0..n)) and emit its ids. */
static void bpe_piece(const em_tokenizer *t, scratch *s, size_t n)
{
    const char *w = (const char *)s->buf;
    if (t->ignore_merges) {
        int32_t id = text_to_token(t, w, n);
        if (id >= 0) { emit(s, id); return; }
    }
    size_t ns = merge_piece(t, s, n, bpe_pair_priority);
    for (size_t i = 0; i < ns; i++) {
        const symbol *y = &s->sym[i];
        if (y->n == 0) continue;
        int32_t id = text_to_token(t, w + y->off, y->n);
        if (id >= 0) { emit(s, id); continue; }
        /* no such token: each byte alone if the vocab has it, else nothing (as llama.cpp) */
        for (size_t j = 0; j < y->n; j++) {
            int32_t bid = t->single_tok[(unsigned char)w[y->off + j]];
            if (bid >= 0) emit(s, bid);
        }
    }
}

static void bpe_fragment(const em_tokenizer *t, scratch *s, const char *text, size_t len)
{
    if (grow((void **)&s->cp, &s->cap_cp, len, sizeof(uint32_t)) ||
        grow((void **)&s->fl, &s->cap_fl, len, sizeof(uint16_t))) { s->oom = 1; return; }
    size_t n = utf8_decode_lenient((const unsigned char *)text, len, s->cp);
    for (size_t i = 0; i < n; i++) s->fl[i] = cp_flags(s->cp[i]);

    if (grow((void **)&s->seg, &s->cap_seg, 1, sizeof(size_t))) { s->oom = 1; return; }
    s->seg[0] = n;
    s->n_seg = 1;
    switch (t->pre) {
    case PRE_DEFAULT:
        pass_class(s, CLS_PUNCT_DEFAULT, 1);
        pass_gpt2(s);
        pass_class(s, CLS_NUMBER, 1);
        pass_digit_triples(s);
        break;
    case PRE_GPT2: pass_gpt2(s); break;
    case PRE_DIGITS:
        pass_class(s, CLS_NUMBER, 0);
        pass_gpt2(s);
        break;
    case PRE_LLAMA3: pass_llama3(s, 3); break;
    case PRE_QWEN2: pass_llama3(s, 1); break;
    }
    if (s->oom) return;

    size_t start = 0;
    for (size_t g = 0; g < s->n_seg && !s->oom; g++) {
        size_t b = start, e = start + s->seg[g];
        start = e;
        /* UTF-8 of each code point, each byte through the GPT-2 byte map (<= 2 bytes) */
        if (grow((void **)&s->buf, &s->cap_buf, (e - b) * 8, 1)) { s->oom = 1; return; }
        size_t bn = 0;
        for (size_t i = b; i < e; i++) {
            unsigned char u[4];
            size_t ul = utf8_encode(s->cp[i], u);
            for (size_t j = 0; j < ul; j++) {
                memcpy(s->buf + bn, t->byte_enc[u[j]], t->byte_enc_len[u[j]]);
                bn += t->byte_enc_len[u[j]];
            }
        }
        bpe_piece(t, s, bn);
    }
}

/* ------------------------------------------------------------------------------------ */
/* SentencePiece (SPM)                                                                  */
/* ------------------------------------------------------------------------------------ */

/* SPM: the two together must be a vocab token; the higher its score, the sooner it merges. */
static int spm_pair_priority(const em_tokenizer *t, scratch *s, const symbol *L, const symbol *R,
                             double *priority)
{
    int32_t id = text_to_token(t, (const char *)s->buf + L->off, L->n + R->n);
    if (id < 0) return 0;
    *priority = (double)t->score[id];
    return 1;
}

static void spm_fragment(const em_tokenizer *t, scratch *s, const char *text, size_t len, int space_prefix)
{
    /* escape: ' ' -> U+2581 (3 bytes) */
    size_t need = (len + 1) * 3;
    if (grow((void **)&s->buf, &s->cap_buf, need, 1)) { s->oom = 1; return; }
    size_t n = 0;
    if (space_prefix) { memcpy(s->buf, "\xE2\x96\x81", 3); n = 3; }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') { memcpy(s->buf + n, "\xE2\x96\x81", 3); n += 3; }
        else s->buf[n++] = (unsigned char)text[i];
    }
    if (n == 0) return;

    merge_piece(t, s, n, spm_pair_priority);
    /* Every merged symbol is a vocab token by construction; only single characters can be
       missing, and those fall back to byte tokens. (llama.cpp's reverse-merge lookup can
       only fire for merged symbols, so it never changes the result.) */
    for (int32_t i = 0; i != -1 && !s->oom; i = s->sym[i].next) {
        const symbol *y = &s->sym[i];
        int32_t id = text_to_token(t, (const char *)s->buf + y->off, y->n);
        if (id >= 0) { emit(s, id); continue; }
        for (size_t j = 0; j < y->n; j++) {
            int32_t bid = t->byte_tok[s->buf[y->off + j]];
            /* llama.cpp throws when the vocab has neither <0xXX> nor the byte itself;
               ember emits the unknown token then, or nothing without one */
            if (bid < 0) bid = t->unk;
            if (bid >= 0) emit(s, bid);
        }
    }
}

/* ------------------------------------------------------------------------------------ */
/* tokenize                                                                             */
/* ------------------------------------------------------------------------------------ */

int em_tokenize(const em_tokenizer *t, const char *text, size_t len, int add_special, int parse_special,
                int32_t *out, size_t cap, size_t *n_out)
{
    if (n_out) *n_out = 0;
    if (!t || (!text && len) || !n_out || (!out && cap)) return 1;
    if (len > ((size_t)-1) / 16) return 2;  /* scratch sizes below are a few times len */
    scratch s;
    memset(&s, 0, sizeof(s));

    if (partition(t, &s, text, len, parse_special) != 0) { scratch_free(&s); return 2; }

    /* With add_special and no BOS/EOS id llama.cpp aborts; ember adds nothing. */
    if (add_special && t->add_bos && t->bos >= 0) emit(&s, t->bos);

    int prev_special = 1;  /* SPM: a text fragment after a special token (or first) gets " " */
    for (size_t f = 0; f < s.n_frag && !s.oom; f++) {
        const fragment *fr = &s.frag[f];
        if (fr->token >= 0) {
            emit(&s, fr->token);
            prev_special = 1;
            continue;
        }
        if (t->type == VOCAB_SPM) {
            spm_fragment(t, &s, text + fr->off, fr->len, t->add_space_prefix && prev_special);
            prev_special = 0;
        } else {
            bpe_fragment(t, &s, text + fr->off, fr->len);
        }
    }

    if (add_special && t->add_eos && t->eos >= 0) emit(&s, t->eos);

    if (s.oom) { scratch_free(&s); return 2; }
    size_t m = s.n_out < cap ? s.n_out : cap;
    if (m) memcpy(out, s.out, m * sizeof(int32_t));
    *n_out = s.n_out;
    scratch_free(&s);
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* token_to_piece                                                                       */
/* ------------------------------------------------------------------------------------ */

/* Writes the n bytes at src if they fit; returns n either way. */
static int put_piece(char *buf, size_t cap, const void *src, size_t n)
{
    if (n > 0x7FFFFFFF) return -2;
    if (n <= cap && n) memcpy(buf, src, n);
    return (int)n;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* <0xXX> -> byte: up to two hex digits after the third character, as strtol reads them */
static int byte_piece(const em_tokenizer *t, int32_t id, char *buf, size_t cap)
{
    const char *s = t->tok_text[id];
    size_t n = t->tok_len[id];
    unsigned v = 0;
    for (size_t i = 3; i < 5 && i < n; i++) {
        int h = hexval(s[i]);
        if (h < 0) break;
        v = v * 16 + (unsigned)h;
    }
    char c = (char)v;
    return put_piece(buf, cap, &c, 1);
}

int em_token_to_piece(const em_tokenizer *t, int32_t id, int special, char *buf, size_t cap)
{
    if (!t || id < 0 || (uint32_t)id >= t->n_vocab) return -1;
    if (!buf) cap = 0;
    uint8_t a = t->attr[id];
    const char *tx = t->tok_text[id];
    size_t tn = t->tok_len[id];
    if (a & (ATTR_UNKNOWN | ATTR_CONTROL)) return special ? put_piece(buf, cap, tx, tn) : 0;
    if (a & ATTR_USER_DEFINED) return put_piece(buf, cap, tx, tn);
    if (a & ATTR_NORMAL) {
        if (t->type == VOCAB_SPM) {
            /* U+2581 -> ' ' */
            size_t w = 0;
            for (size_t i = 0; i < tn;) {
                if (i + 3 <= tn && memcmp(tx + i, "\xE2\x96\x81", 3) == 0) {
                    if (w < cap) buf[w] = ' ';
                    w++;
                    i += 3;
                } else {
                    if (w < cap) buf[w] = tx[i];
                    w++;
                    i++;
                }
            }
            return w > 0x7FFFFFFF ? -2 : (int)w;
        }
        /* byte-level BPE: each code point back to its byte. A code point outside the map
           gives llama.cpp's "[UNK_BYTE_0x<utf8 hex><whole token text>]" marker. */
        uint32_t *cps = malloc((tn ? tn : 1) * sizeof(uint32_t));
        if (!cps) return -3;
        size_t nc = utf8_decode_lenient((const unsigned char *)tx, tn, cps);
        size_t w = 0;
        for (size_t i = 0; i < nc; i++) {
            uint32_t c = cps[i];
            if (c < 324 && t->byte_dec[c] >= 0) {
                if (w < cap) buf[w] = (char)t->byte_dec[c];
                w++;
                continue;
            }
            unsigned char u[4];
            size_t ul = utf8_encode(c, u);
            char hex[16];
            const char *pre = "[UNK_BYTE_0x";
            for (size_t j = 0; pre[j]; j++, w++) if (w < cap) buf[w] = pre[j];
            for (size_t j = 0; j < ul; j++) {
                snprintf(hex, sizeof(hex), "%02x", u[j]);
                for (int q = 0; q < 2; q++, w++) if (w < cap) buf[w] = hex[q];
            }
            for (size_t j = 0; j < tn; j++, w++) if (w < cap) buf[w] = tx[j];
            if (w < cap) buf[w] = ']';
            w++;
        }
        free(cps);
        return w > 0x7FFFFFFF ? -2 : (int)w;
    }
    if (a & ATTR_BYTE) return byte_piece(t, id, buf, cap);
    return 0;  /* unused / undefined */
}

/* Unit tests of runtime/src/tokenizer/tokenizer.c on small hand-made vocabularies: the API contract
 * (buffer retry, errors, bad ids), special-token handling, BOS/EOS defaults, byte fallback,
 * invalid UTF-8 and a large input. Token-for-token agreement with llama.cpp on real
 * vocabularies is tested by tests/runtime/test_tokenizer_ref.py. */
#include "tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int n_pass, n_fail;

#define CHECK(cond)                                                              \
    do {                                                                         \
        if (cond) n_pass++;                                                      \
        else { n_fail++; fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); } \
    } while (0)

/* ---- a growing vocabulary description ---- */

#define MAXV 600
typedef struct vocab {
    const char *tok[MAXV];
    uint64_t len[MAXV];
    float score[MAXV];
    int32_t type[MAXV];
    uint32_t n;
    const char *merge[64];
    uint64_t mlen[64];
    uint32_t nm;
    char bytes[256][8];  /* storage for byte-token texts */
} vocab;

static int32_t add_tok(vocab *v, const char *s, size_t len, float score, int32_t type)
{
    v->tok[v->n] = s;
    v->len[v->n] = len;
    v->score[v->n] = score;
    v->type[v->n] = type;
    return (int32_t)v->n++;
}

static int32_t add(vocab *v, const char *s, float score, int32_t type)
{
    return add_tok(v, s, strlen(s), score, type);
}

static void add_merge(vocab *v, const char *m)
{
    v->merge[v->nm] = m;
    v->mlen[v->nm] = strlen(m);
    v->nm++;
}

static em_tokenizer_config config(const vocab *v, const char *model, const char *pre)
{
    em_tokenizer_config c;
    memset(&c, 0, sizeof(c));
    c.model = model;
    c.pre = pre;
    c.n_vocab = v->n;
    c.tokens = v->tok;
    c.token_lens = v->len;
    c.scores = v->score;
    c.token_types = v->type;
    c.n_merges = v->nm;
    c.merges = v->merge;
    c.merge_lens = v->mlen;
    c.bos_id = c.eos_id = c.unk_id = c.pad_id = -1;
    c.add_bos = c.add_eos = c.add_space_prefix = -1;
    return c;
}

static size_t tok(const em_tokenizer *t, const char *s, int add_special, int parse_special, int32_t *out, size_t cap)
{
    size_t n = 0;
    int rc = em_tokenize(t, s, strlen(s), add_special, parse_special, out, cap, &n);
    CHECK(rc == 0);
    return n;
}

static int same(const int32_t *a, size_t n, const int32_t *b, size_t m)
{
    return n == m && (n == 0 || memcmp(a, b, n * sizeof(int32_t)) == 0);
}

/* ---- GPT-2 byte-level vocabulary ---- */

/* ids 0..2 specials, then the 256 byte tokens in byte order (id 3 + byte), then merges' results */
static void gpt2_vocab(vocab *v)
{
    memset(v, 0, sizeof(*v));
    add(v, "<|endoftext|>", 0, 3);   /* 0 */
    add(v, "<|im_start|>", 0, 3);    /* 1 */
    add(v, "<|user|>", 0, 4);        /* 2: user-defined */
    int n = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        unsigned cp = printable ? (unsigned)b : 256u + (unsigned)n++;
        char *o = v->bytes[b];
        if (cp < 0x80) { o[0] = (char)cp; o[1] = 0; }
        else { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3F)); o[2] = 0; }
        add(v, o, 0, 1);             /* 3 + b */
    }
    add(v, "he", 0, 1);              /* 259 */
    add(v, "ll", 0, 1);              /* 260 */
    add(v, "hell", 0, 1);            /* 261 */
    add(v, "hello", 0, 1);           /* 262 */
    add(v, "\xC4\xA0w", 0, 1);       /* 263 "Ġw" */
    add(v, "\xC4\xA0wo", 0, 1);      /* 264 */
    add_merge(v, "h e");
    add_merge(v, "l l");
    add_merge(v, "he ll");
    add_merge(v, "hell o");
    add_merge(v, "\xC4\xA0 w");
    add_merge(v, "\xC4\xA0w o");
}

#define B(c) (3 + (int32_t)(unsigned char)(c))

static void test_gpt2(void)
{
    vocab v;
    gpt2_vocab(&v);
    em_tokenizer_config c = config(&v, "gpt2", "smollm");
    em_tokenizer *t = NULL;
    char err[256] = "";
    CHECK(em_tokenizer_create(&c, &t, err, sizeof(err)) == 0);
    if (!t) { fprintf(stderr, "create: %s\n", err); return; }
    int32_t out[64];
    size_t n;

    CHECK(em_tokenizer_n_vocab(t) == v.n);
    n = tok(t, "hello", 0, 1, out, 64);
    { int32_t e[] = {262}; CHECK(same(out, n, e, 1)); }
    n = tok(t, "hello wor", 0, 1, out, 64);
    { int32_t e[] = {262, 264, B('r')}; CHECK(same(out, n, e, 3)); }
    /* smollm: every digit alone */
    n = tok(t, "x 123", 0, 1, out, 64);
    { int32_t e[] = {B('x'), B(' '), B('1'), B('2'), B('3')}; CHECK(same(out, n, e, 5)); }

    /* special tokens: control ones only with parse_special, user-defined always */
    n = tok(t, "<|im_start|>hello", 0, 1, out, 64);
    { int32_t e[] = {1, 262}; CHECK(same(out, n, e, 2)); }
    n = tok(t, "<|im_start|>", 0, 0, out, 64);
    CHECK(n > 1 && out[0] == B('<'));
    n = tok(t, "hello<|user|>hello", 0, 0, out, 64);
    { int32_t e[] = {262, 2, 262}; CHECK(same(out, n, e, 3)); }
    n = tok(t, "<|endoftext|><|endoftext|>", 0, 1, out, 64);
    { int32_t e[] = {0, 0}; CHECK(same(out, n, e, 2)); }

    /* gpt2 default: add_bos false, so add_special adds nothing */
    CHECK(em_tokenizer_add_bos(t) == 0 && em_tokenizer_bos(t) == 11 && em_tokenizer_eos(t) == 11);
    n = tok(t, "hello", 1, 1, out, 64);
    { int32_t e[] = {262}; CHECK(same(out, n, e, 1)); }

    /* invalid UTF-8 becomes U+FFFD (EF BF BD), byte by byte */
    {
        size_t m = 0;
        CHECK(em_tokenize(t, "\xff", 1, 0, 1, out, 64, &m) == 0);
        int32_t e[] = {B(0xEF), B(0xBF), B(0xBD)};
        CHECK(same(out, m, e, 3));
        /* F5..F7 leads decode above U+10FFFF (llama.cpp throws there): must not crash */
        CHECK(em_tokenize(t, "\xf7\xbf\xbf\xbf", 4, 0, 1, out, 64, &m) == 0 && m == 3);
        /* a NUL inside the text is an ordinary byte */
        CHECK(em_tokenize(t, "a\0b", 3, 0, 1, out, 64, &m) == 0 && m == 3 && out[1] == B(0));
    }

    /* buffer contract: count reported even when it does not fit */
    n = 0;
    CHECK(em_tokenize(t, "a b c d", 7, 0, 1, out, 2, &n) == 0);
    CHECK(n == 7 && out[0] == B('a'));
    CHECK(em_tokenize(t, "abc", 3, 0, 1, NULL, 0, &n) == 0 && n == 3);
    CHECK(em_tokenize(t, "", 0, 0, 1, out, 64, &n) == 0 && n == 0);
    CHECK(em_tokenize(NULL, "a", 1, 0, 1, out, 64, &n) != 0);
    CHECK(em_tokenize(t, NULL, 5, 0, 1, out, 64, &n) != 0);

    /* pieces */
    {
        char buf[64];
        CHECK(em_token_to_piece(t, 264, 0, buf, sizeof(buf)) == 3 && memcmp(buf, " wo", 3) == 0);
        CHECK(em_token_to_piece(t, 264, 0, buf, 1) == 3);   /* needed size when it does not fit */
        CHECK(em_token_to_piece(t, B('\n'), 0, buf, sizeof(buf)) == 1 && buf[0] == '\n');
        CHECK(em_token_to_piece(t, 1, 0, buf, sizeof(buf)) == 0);   /* control, special=0 */
        CHECK(em_token_to_piece(t, 1, 1, buf, sizeof(buf)) == 12 && memcmp(buf, "<|im_start|>", 12) == 0);
        CHECK(em_token_to_piece(t, 2, 0, buf, sizeof(buf)) == 8);   /* user-defined always */
        CHECK(em_token_to_piece(t, -1, 1, buf, sizeof(buf)) < 0);
        CHECK(em_token_to_piece(t, (int32_t)v.n, 1, buf, sizeof(buf)) < 0);
    }
    CHECK(em_tokenizer_is_eog(t, 0));        /* <|endoftext|> */
    CHECK(em_tokenizer_is_eog(t, 11));       /* default eos 11 */
    CHECK(!em_tokenizer_is_eog(t, 262));
    CHECK(!em_tokenizer_is_eog(t, -5));

    /* a large input: 8 MiB of mixed text, no crash, every byte accounted for */
    {
        const char *chunk = "hello world 123 \xE6\x97\xA5\xE6\x9C\xAC <|im_start|> \xff\t\n  x'LL ";
        size_t cl = strlen(chunk), big = (size_t)8 << 20;
        char *s = malloc(big);
        CHECK(s != NULL);
        if (s) {
            for (size_t i = 0; i < big; i++) s[i] = chunk[i % cl];
            size_t m = 0;
            CHECK(em_tokenize(t, s, big, 1, 1, NULL, 0, &m) == 0);
            int32_t *ids = malloc(m * sizeof(int32_t));
            size_t m2 = 0;
            CHECK(ids && em_tokenize(t, s, big, 1, 1, ids, m, &m2) == 0 && m2 == m && m > big / 8);
            free(ids);
            free(s);
        }
    }
    em_tokenizer_free(t);

    /* llama3-style pre-tokenizer defaults: add_bos true when the metadata says nothing */
    c = config(&v, "gpt2", "llama-bpe");
    c.bos_id = 0;
    CHECK(em_tokenizer_create(&c, &t, err, sizeof(err)) == 0);
    if (t) {
        n = tok(t, "hello", 1, 1, out, 64);
        { int32_t e[] = {0, 262}; CHECK(same(out, n, e, 2)); }
        em_tokenizer_free(t);
    }
    c.add_bos = 0;
    CHECK(em_tokenizer_create(&c, &t, err, sizeof(err)) == 0);
    if (t) {
        n = tok(t, "hello", 1, 1, out, 64);
        { int32_t e[] = {262}; CHECK(same(out, n, e, 1)); }
        em_tokenizer_free(t);
    }

    /* errors name the field and value */
    c = config(&v, "gpt2", "no-such-pre");
    t = (em_tokenizer *)&c;  /* must be reset to NULL */
    CHECK(em_tokenizer_create(&c, &t, err, sizeof(err)) != 0 && t == NULL);
    CHECK(strstr(err, "no-such-pre") != NULL && strstr(err, "tokenizer.ggml.pre") != NULL);
    c = config(&v, "bert", NULL);
    CHECK(em_tokenizer_create(&c, &t, err, sizeof(err)) != 0 && strstr(err, "bert") != NULL);
    c = config(&v, "gpt2", "gpt-2");
    c.n_vocab = 0;
    CHECK(em_tokenizer_create(&c, &t, err, sizeof(err)) != 0);
    CHECK(em_tokenizer_create(NULL, &t, err, sizeof(err)) != 0);
    em_tokenizer_free(NULL);
}

/* ---- SentencePiece vocabulary ---- */

static void test_spm(void)
{
    vocab v;
    memset(&v, 0, sizeof(v));
    add(&v, "<unk>", 0, 2);            /* 0 */
    add(&v, "<s>", 0, 3);              /* 1 */
    add(&v, "</s>", 0, 3);             /* 2 */
    for (int b = 0; b < 256; b++) {    /* 3 + b */
        snprintf(v.bytes[b], sizeof(v.bytes[b]), "<0x%02X>", b);
        add(&v, v.bytes[b], 0, 6);
    }
    int32_t sp = add(&v, "\xE2\x96\x81", -1, 1);         /* 259 "▁" */
    int32_t h = add(&v, "h", -2, 1);
    add(&v, "e", -2, 1);
    add(&v, "l", -2, 1);
    int32_t o = add(&v, "o", -2, 1);
    add(&v, "he", -3, 1);
    int32_t ll = add(&v, "ll", -4, 1);
    add(&v, "hell", -5, 1);
    int32_t hello = add(&v, "hello", -6, 1);
    int32_t sphello = add(&v, "\xE2\x96\x81hello", -7, 1);
    int32_t hl = add(&v, "<|hl|>", 0, 4);                 /* user-defined */

    em_tokenizer_config c = config(&v, "llama", NULL);
    em_tokenizer *t = NULL;
    char err[256];
    CHECK(em_tokenizer_create(&c, &t, err, sizeof(err)) == 0);
    if (!t) return;
    int32_t out[64];
    size_t n;

    /* defaults: add_bos, add_space_prefix, bos 1, eos 2, unk 0 */
    CHECK(em_tokenizer_add_bos(t) == 1 && em_tokenizer_bos(t) == 1 && em_tokenizer_eos(t) == 2);
    n = tok(t, "hello", 1, 1, out, 64);
    { int32_t e[] = {1, sphello}; CHECK(same(out, n, e, 2)); }
    n = tok(t, "", 1, 1, out, 64);
    { int32_t e[] = {1}; CHECK(same(out, n, e, 1)); }
    /* "hi": 'i' is not a token -> <0x69> */
    n = tok(t, "hi", 0, 1, out, 64);
    { int32_t e[] = {sp, h, 3 + 'i'}; CHECK(same(out, n, e, 3)); }
    /* multi-byte character missing from the vocab -> its bytes */
    n = tok(t, "\xC3\xA9", 0, 1, out, 64);
    { int32_t e[] = {sp, 3 + 0xC3, 3 + 0xA9}; CHECK(same(out, n, e, 3)); }
    /* text after a special token gets the space prefix again */
    n = tok(t, "hello<|hl|>hello", 0, 0, out, 64);
    { int32_t e[] = {sphello, hl, sphello}; CHECK(same(out, n, e, 3)); }
    n = tok(t, "<s>hello", 0, 1, out, 64);
    { int32_t e[] = {1, sphello}; CHECK(same(out, n, e, 2)); }
    n = tok(t, "lol", 0, 1, out, 64);
    CHECK(n == 4 && out[0] == sp && out[2] == o);
    (void)ll; (void)hello;

    char buf[32];
    CHECK(em_token_to_piece(t, sphello, 0, buf, sizeof(buf)) == 6 && memcmp(buf, " hello", 6) == 0);
    CHECK(em_token_to_piece(t, 3 + 'A', 0, buf, sizeof(buf)) == 1 && buf[0] == 'A');
    CHECK(em_token_to_piece(t, 0, 0, buf, sizeof(buf)) == 0);
    CHECK(em_token_to_piece(t, 0, 1, buf, sizeof(buf)) == 5);
    CHECK(em_tokenizer_is_eog(t, 2) && !em_tokenizer_is_eog(t, 1));
    em_tokenizer_free(t);

    c.add_space_prefix = 0;
    CHECK(em_tokenizer_create(&c, &t, err, sizeof(err)) == 0);
    if (t) {
        n = tok(t, "hello", 0, 1, out, 64);
        { int32_t e[] = {hello}; CHECK(same(out, n, e, 1)); }
        em_tokenizer_free(t);
    }
}

int main(void)
{
    test_gpt2();
    test_spm();
    printf("test_tokenizer: %d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}

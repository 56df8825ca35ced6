/* test_gguf.c - the GGUF reader on hand-made buffers: a valid file, and every kind of defect
 * reported with a message naming it. Also the vector exp and softmax replicas of llama.c. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "model.h"

static int failures;

#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "%s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                      \
            fputc('\n', stderr);                                               \
            failures++;                                                        \
        }                                                                      \
    } while (0)

typedef struct buf { uint8_t d[4096]; size_t n; } buf;

static void put(buf *b, const void *p, size_t n) { memcpy(b->d + b->n, p, n); b->n += n; }
static void u32(buf *b, uint32_t v) { uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)}; put(b, x, 4); }
static void u64(buf *b, uint64_t v) { u32(b, (uint32_t)v); u32(b, (uint32_t)(v >> 32)); }
static void str(buf *b, const char *s) { u64(b, strlen(s)); put(b, s, strlen(s)); }

/* GGUF v3 with 2 kv (a string, a u32 array) and one F32 tensor [4, 2] at offset 0. */
static size_t make_valid(buf *b, size_t *off_tensor_offset, size_t *off_count) {
    memset(b, 0, sizeof *b);
    put(b, "GGUF", 4);
    u32(b, 3);
    u64(b, 1);
    *off_count = b->n;
    u64(b, 2);
    str(b, "general.architecture"); u32(b, EM_GGUF_STRING); str(b, "llama");
    str(b, "numbers"); u32(b, EM_GGUF_ARRAY); u32(b, EM_GGUF_UINT32); u64(b, 3); u32(b, 7); u32(b, 8); u32(b, 9);
    str(b, "t"); u32(b, 2); u64(b, 4); u64(b, 2); u32(b, 0);
    *off_tensor_offset = b->n;
    u64(b, 0);
    while (b->n % 32) b->d[b->n++] = 0;
    for (int i = 0; i < 8; i++) { float f = (float)i; uint32_t bits; memcpy(&bits, &f, 4); u32(b, bits); }
    return b->n;
}

static void expect_error(const uint8_t *d, size_t n, const char *needle, const char *what) {
    em_gguf *g = NULL;
    char err[512] = "";
    int rc = em_gguf_parse(d, n, &g, err, sizeof err);
    CHECK(rc != 0 && g == NULL, "%s: parsed a broken file", what);
    CHECK(strstr(err, needle) != NULL, "%s: message '%s' lacks '%s'", what, err, needle);
}

static void test_valid(void) {
    buf b;
    size_t o1, o2;
    size_t n = make_valid(&b, &o1, &o2);
    em_gguf *g = NULL;
    char err[512] = "";
    CHECK(em_gguf_parse(b.d, n, &g, err, sizeof err) == 0, "valid file rejected: %s", err);
    if (!g) return;
    CHECK(g->version == 3 && g->n_kv == 2 && g->n_tensors == 1, "counts");
    const em_gguf_kv *kv = em_gguf_find(g, "numbers");
    CHECK(kv && kv->arr_n == 3 && ((const uint32_t *)kv->arr)[2] == 9, "array value");
    const em_gguf_tensor *t = em_gguf_find_tensor(g, "t");
    CHECK(t && t->ne[0] == 4 && t->ne[1] == 2 && t->nbytes == 32, "tensor shape");
    CHECK(t && ((const float *)t->data)[5] == 5.0f, "tensor data");
    em_gguf_close(g);
}

static void test_defects(void) {
    buf b;
    size_t off_toff, off_count;
    size_t n = make_valid(&b, &off_toff, &off_count);
    for (size_t cut = 0; cut < n; cut++) {
        char what[64];
        snprintf(what, sizeof what, "truncated at %zu", cut);
        em_gguf *g = NULL;
        char err[512] = "";
        CHECK(em_gguf_parse(b.d, cut, &g, err, sizeof err) != 0 && err[0], "%s", what);
    }
    buf c = b;
    memcpy(c.d, "GGUX", 4);
    expect_error(c.d, n, "bad magic", "magic");
    c = b; c.n = 4; u32(&c, 1);
    expect_error(c.d, n, "version 1", "version 1");
    c = b; c.n = off_count; u64(&c, UINT64_MAX);
    expect_error(c.d, n, "metadata count", "huge kv count");
    c = b; c.n = off_toff; u64(&c, 1u << 20);
    expect_error(c.d, n, "data range", "tensor offset past the end");
    c = b; c.n = off_toff; u64(&c, 3);
    expect_error(c.d, n, "alignment", "misaligned tensor");
    c = b; c.n = off_toff - 4; u32(&c, 77);
    expect_error(c.d, n, "unknown tensor type", "tensor type");
    c = b; c.n = off_toff - 12; u64(&c, UINT64_MAX / 2);
    expect_error(c.d, n, "tensor 't'", "huge dimension");
}

static void test_math(void) {
    /* the vector exp tracks libm within a few ulps and saturates like the vector code */
    for (float x = -80.0f; x < 80.0f; x += 0.37f) {
        float a = em_expf_vec(x), e = expf(x);
        CHECK(fabsf(a - e) <= 4e-7f * e, "exp(%g): %g vs %g", (double)x, (double)a, (double)e);
    }
    CHECK(em_expf_vec(-INFINITY) == 0.0f, "exp(-inf)");
    CHECK(em_expf_vec(1000.0f) == INFINITY, "exp(1000)");
    CHECK(isnan(em_expf_vec(NAN)), "exp(nan)");
    float x[40], y[40];
    for (int i = 0; i < 40; i++) x[i] = i < 30 ? (float)i * 0.1f : -INFINITY;
    em_softmax_row(y, x, 40);
    double s = 0;
    for (int i = 0; i < 40; i++) s += y[i];
    CHECK(fabs(s - 1.0) < 1e-6 && y[35] == 0.0f && y[29] > y[28], "softmax");
}

int main(void) {
    test_valid();
    test_defects();
    test_math();
    if (failures) {
        fprintf(stderr, "test_gguf: %d failures\n", failures);
        return 1;
    }
    printf("test_gguf: ok\n");
    return 0;
}

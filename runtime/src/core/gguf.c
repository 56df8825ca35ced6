/* gguf.c - see gguf.h. The parser walks the file with a bounds-checked cursor; nothing is
 * read before its size has been compared with what is left of the file. */
#include "gguf.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quants.h"

typedef struct cursor {
    const uint8_t *p;
    uint64_t size;
    uint64_t pos;
    char *err;
    size_t errlen;
} cursor;

static int fail(char *err, size_t errlen, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | ((uint64_t)rd32(p + 4) << 32); }

static uint64_t remaining(const cursor *c) { return c->size - c->pos; }

/* Reads n bytes; what names the field for the error message. */
static int need(cursor *c, uint64_t n, const char *what) {
    if (n > remaining(c))
        return fail(c->err, c->errlen, "file truncated: %s at offset %llu needs %llu bytes, only %llu left (file size %llu)",
                    what, (unsigned long long)c->pos, (unsigned long long)n,
                    (unsigned long long)remaining(c), (unsigned long long)c->size);
    return 0;
}

static int get_u32(cursor *c, uint32_t *v, const char *what) {
    if (need(c, 4, what)) return -1;
    *v = rd32(c->p + c->pos);
    c->pos += 4;
    return 0;
}

static int get_u64(cursor *c, uint64_t *v, const char *what) {
    if (need(c, 8, what)) return -1;
    *v = rd64(c->p + c->pos);
    c->pos += 8;
    return 0;
}

static int get_str(cursor *c, const char **s, uint64_t *len, const char *what) {
    if (get_u64(c, len, what)) return -1;
    if (*len > remaining(c))
        return fail(c->err, c->errlen, "%s: string length %llu at offset %llu exceeds the %llu bytes left in the file",
                    what, (unsigned long long)*len, (unsigned long long)(c->pos - 8),
                    (unsigned long long)remaining(c));
    *s = (const char *)(c->p + c->pos);
    c->pos += *len;
    return 0;
}

static char *dup_str(const char *s, uint64_t len) {
    char *d = (char *)malloc((size_t)len + 1);
    if (!d) return NULL;
    if (len) memcpy(d, s, (size_t)len);
    d[len] = 0;
    return d;
}

static const char *const TYPE_NAMES[EM_GGUF_TYPE_COUNT] = {
    "uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "bool",
    "string", "array", "uint64", "int64", "float64",
};

const char *em_gguf_type_name(uint32_t type) {
    return type < EM_GGUF_TYPE_COUNT ? TYPE_NAMES[type] : "invalid";
}

/* Size of a scalar value in the file; 0 for STRING/ARRAY/invalid. */
static uint64_t scalar_size(uint32_t type) {
    switch (type) {
    case EM_GGUF_UINT8: case EM_GGUF_INT8: case EM_GGUF_BOOL: return 1;
    case EM_GGUF_UINT16: case EM_GGUF_INT16: return 2;
    case EM_GGUF_UINT32: case EM_GGUF_INT32: case EM_GGUF_FLOAT32: return 4;
    case EM_GGUF_UINT64: case EM_GGUF_INT64: case EM_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

static float f32_from_bits(uint32_t b) { float f; memcpy(&f, &b, 4); return f; }
static double f64_from_bits(uint64_t b) { double f; memcpy(&f, &b, 8); return f; }

/* Decodes one little-endian scalar at p into kv->v. */
static void decode_scalar(uint32_t type, const uint8_t *p, em_gguf_kv *kv) {
    switch (type) {
    case EM_GGUF_UINT8: kv->v.u = p[0]; break;
    case EM_GGUF_INT8: kv->v.i = (int8_t)p[0]; break;
    case EM_GGUF_BOOL: kv->v.u = p[0] != 0; break;
    case EM_GGUF_UINT16: kv->v.u = rd16(p); break;
    case EM_GGUF_INT16: kv->v.i = (int16_t)rd16(p); break;
    case EM_GGUF_UINT32: kv->v.u = rd32(p); break;
    case EM_GGUF_INT32: kv->v.i = (int32_t)rd32(p); break;
    case EM_GGUF_FLOAT32: kv->v.f = f32_from_bits(rd32(p)); break;
    case EM_GGUF_UINT64: kv->v.u = rd64(p); break;
    case EM_GGUF_INT64: kv->v.i = (int64_t)rd64(p); break;
    case EM_GGUF_FLOAT64: kv->v.f = f64_from_bits(rd64(p)); break;
    default: break;
    }
}

/* Decodes n little-endian elements into an array of the native C type (bool: uint8_t). */
static void decode_array(uint32_t type, const uint8_t *p, uint64_t n, void *out) {
    uint64_t i;
    switch (scalar_size(type)) {
    case 1: memcpy(out, p, (size_t)n); break;
    case 2: for (i = 0; i < n; i++) ((uint16_t *)out)[i] = rd16(p + 2 * i); break;
    case 4: for (i = 0; i < n; i++) ((uint32_t *)out)[i] = rd32(p + 4 * i); break;
    case 8: for (i = 0; i < n; i++) ((uint64_t *)out)[i] = rd64(p + 8 * i); break;
    default: break;
    }
}

static int read_kv(cursor *c, em_gguf_kv *kv, uint64_t index) {
    const char *key;
    uint64_t key_len;
    char what[96];
    snprintf(what, sizeof what, "key of metadata entry %llu", (unsigned long long)index);
    if (get_str(c, &key, &key_len, what)) return -1;
    if (memchr(key, 0, (size_t)key_len))
        return fail(c->err, c->errlen, "metadata entry %llu: key contains a NUL byte", (unsigned long long)index);
    kv->key = dup_str(key, key_len);
    if (!kv->key) return fail(c->err, c->errlen, "out of memory");

    char what2[160];
    snprintf(what2, sizeof what2, "type of metadata key '%.100s'", kv->key);
    if (get_u32(c, &kv->type, what2)) return -1;
    if (kv->type >= EM_GGUF_TYPE_COUNT)
        return fail(c->err, c->errlen, "metadata key '%.100s': invalid value type %u (valid: 0..%d)",
                    kv->key, kv->type, EM_GGUF_TYPE_COUNT - 1);

    snprintf(what2, sizeof what2, "value of metadata key '%.100s'", kv->key);
    if (kv->type == EM_GGUF_STRING) return get_str(c, &kv->str, &kv->str_len, what2);
    if (kv->type != EM_GGUF_ARRAY) {
        uint64_t sz = scalar_size(kv->type);
        if (need(c, sz, what2)) return -1;
        if (kv->type == EM_GGUF_BOOL && c->p[c->pos] > 1)
            return fail(c->err, c->errlen, "metadata key '%.100s': invalid bool value %u (must be 0 or 1)",
                        kv->key, (unsigned)c->p[c->pos]);
        decode_scalar(kv->type, c->p + c->pos, kv);
        c->pos += sz;
        return 0;
    }

    if (get_u32(c, &kv->arr_type, what2)) return -1;
    if (kv->arr_type >= EM_GGUF_TYPE_COUNT)
        return fail(c->err, c->errlen, "metadata key '%.100s': invalid array element type %u",
                    kv->key, kv->arr_type);
    if (kv->arr_type == EM_GGUF_ARRAY)
        return fail(c->err, c->errlen, "metadata key '%.100s': arrays of arrays are not supported", kv->key);
    if (get_u64(c, &kv->arr_n, what2)) return -1;
    if (kv->arr_type == EM_GGUF_STRING) {
        /* each element needs at least its 8-byte length */
        if (kv->arr_n > remaining(c) / 8)
            return fail(c->err, c->errlen, "metadata key '%.100s': array of %llu strings cannot fit in the %llu bytes left in the file",
                        kv->key, (unsigned long long)kv->arr_n, (unsigned long long)remaining(c));
        uint64_t n = kv->arr_n ? kv->arr_n : 1;
        kv->strs = (const char **)malloc((size_t)n * sizeof(char *));
        kv->str_lens = (uint64_t *)malloc((size_t)n * sizeof(uint64_t));
        if (!kv->strs || !kv->str_lens) return fail(c->err, c->errlen, "out of memory");
        for (uint64_t i = 0; i < kv->arr_n; i++) {
            snprintf(what2, sizeof what2, "element %llu of metadata key '%.100s'", (unsigned long long)i, kv->key);
            if (get_str(c, &kv->strs[i], &kv->str_lens[i], what2)) return -1;
        }
        return 0;
    }
    uint64_t esz = scalar_size(kv->arr_type);
    if (kv->arr_n > remaining(c) / esz)
        return fail(c->err, c->errlen, "metadata key '%.100s': array of %llu %s values (%llu bytes each) exceeds the %llu bytes left in the file",
                    kv->key, (unsigned long long)kv->arr_n, em_gguf_type_name(kv->arr_type),
                    (unsigned long long)esz, (unsigned long long)remaining(c));
    if (kv->arr_type == EM_GGUF_BOOL)
        for (uint64_t i = 0; i < kv->arr_n; i++)
            if (c->p[c->pos + i] > 1)
                return fail(c->err, c->errlen, "metadata key '%.100s': element %llu is an invalid bool value %u",
                            kv->key, (unsigned long long)i, (unsigned)c->p[c->pos + i]);
    kv->arr = malloc(kv->arr_n ? (size_t)(kv->arr_n * esz) : 1);
    if (!kv->arr) return fail(c->err, c->errlen, "out of memory");
    decode_array(kv->arr_type, c->p + c->pos, kv->arr_n, kv->arr);
    c->pos += kv->arr_n * esz;
    return 0;
}

static int read_tensor_info(cursor *c, em_gguf_tensor *t, uint64_t index) {
    const char *name;
    uint64_t len;
    char what[160];
    snprintf(what, sizeof what, "name of tensor %llu", (unsigned long long)index);
    if (get_str(c, &name, &len, what)) return -1;
    if (len == 0) return fail(c->err, c->errlen, "tensor %llu: empty name", (unsigned long long)index);
    if (len > 255) return fail(c->err, c->errlen, "tensor %llu: name of %llu bytes is too long (at most 255)",
                               (unsigned long long)index, (unsigned long long)len);
    if (memchr(name, 0, (size_t)len))
        return fail(c->err, c->errlen, "tensor %llu: name contains a NUL byte", (unsigned long long)index);
    t->name = dup_str(name, len);
    if (!t->name) return fail(c->err, c->errlen, "out of memory");

    snprintf(what, sizeof what, "dimension count of tensor '%s'", t->name);
    if (get_u32(c, &t->n_dims, what)) return -1;
    if (t->n_dims < 1 || t->n_dims > EM_GGUF_MAX_DIMS)
        return fail(c->err, c->errlen, "tensor '%s': invalid number of dimensions %u (valid: 1..%d)",
                    t->name, t->n_dims, EM_GGUF_MAX_DIMS);
    for (int d = 0; d < EM_GGUF_MAX_DIMS; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        uint64_t ne;
        snprintf(what, sizeof what, "dimension %u of tensor '%s'", d, t->name);
        if (get_u64(c, &ne, what)) return -1;
        if (ne > (uint64_t)INT64_MAX)
            return fail(c->err, c->errlen, "tensor '%s': dimension %u has invalid size %llu",
                        t->name, d, (unsigned long long)ne);
        t->ne[d] = (int64_t)ne;
    }
    snprintf(what, sizeof what, "type of tensor '%s'", t->name);
    if (get_u32(c, &t->type, what)) return -1;
    snprintf(what, sizeof what, "data offset of tensor '%s'", t->name);
    if (get_u64(c, &t->offset, what)) return -1;
    return 0;
}

/* Multi-byte fields of one block, for the big-endian swap: {offset, width} pairs. */
typedef struct swap_field { uint8_t off, width; } swap_field;
typedef struct swap_layout { uint32_t type; uint8_t n; swap_field f[3]; } swap_layout;

static const swap_layout SWAP_LAYOUTS[] = {
    {EM_TYPE_F32, 1, {{0, 4}}},
    {EM_TYPE_F16, 1, {{0, 2}}},
    {EM_TYPE_BF16, 1, {{0, 2}}},
    {EM_TYPE_Q4_0, 1, {{0, 2}}},
    {EM_TYPE_Q4_1, 2, {{0, 2}, {2, 2}}},
    {EM_TYPE_Q5_0, 1, {{0, 2}}},
    {EM_TYPE_Q5_1, 2, {{0, 2}, {2, 2}}},
    {EM_TYPE_Q8_0, 1, {{0, 2}}},
    {EM_TYPE_Q8_1, 2, {{0, 2}, {2, 2}}},
    {EM_TYPE_Q2_K, 2, {{80, 2}, {82, 2}}},
    {EM_TYPE_Q3_K, 1, {{108, 2}}},
    {EM_TYPE_Q4_K, 2, {{0, 2}, {2, 2}}},
    {EM_TYPE_Q5_K, 2, {{0, 2}, {2, 2}}},
    {EM_TYPE_Q6_K, 1, {{208, 2}}},
    {24, 0, {{0, 0}}}, /* I8 */
    {25, 1, {{0, 2}}}, /* I16 */
    {26, 1, {{0, 4}}}, /* I32 */
    {27, 1, {{0, 8}}}, /* I64 */
    {28, 1, {{0, 8}}}, /* F64 */
};

static void swap_bytes(uint8_t *p, int width) {
    for (int i = 0; i < width / 2; i++) {
        uint8_t t = p[i];
        p[i] = p[width - 1 - i];
        p[width - 1 - i] = t;
    }
}

/* Converts the tensor data of g to host order into g->swapped (big-endian hosts only). */
static int swap_tensor_data(em_gguf *g, char *err, size_t errlen) {
    uint64_t n = g->size - g->data_offset;
    g->swapped = (uint8_t *)malloc(n ? (size_t)n : 1);
    if (!g->swapped) return fail(err, errlen, "out of memory copying %llu bytes of tensor data", (unsigned long long)n);
    if (n) memcpy(g->swapped, g->base + g->data_offset, (size_t)n);
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        em_gguf_tensor *t = &g->tensors[i];
        const swap_layout *lay = NULL;
        for (size_t k = 0; k < sizeof SWAP_LAYOUTS / sizeof SWAP_LAYOUTS[0]; k++)
            if (SWAP_LAYOUTS[k].type == t->type) lay = &SWAP_LAYOUTS[k];
        if (t->type == EM_TYPE_Q8_K) {
            /* float d, 256 int8, 16 int16 sums */
            static const swap_layout q8k = {EM_TYPE_Q8_K, 1, {{0, 4}}};
            lay = &q8k;
        }
        if (!lay)
            return fail(err, errlen, "tensor '%s': byte-order conversion for type %u is not implemented on big-endian hosts",
                        t->name, t->type);
        const em_type_traits *tr = em_type_traits_get(t->type);
        uint64_t bsz = tr ? tr->type_size : 1;
        uint8_t *p = g->swapped + t->offset;
        t->data = p;
        for (uint64_t b = 0; b + bsz <= t->nbytes; b += bsz) {
            for (int f = 0; f < lay->n; f++) swap_bytes(p + b + lay->f[f].off, lay->f[f].width);
            if (t->type == EM_TYPE_Q8_K)
                for (int s = 0; s < 16; s++) swap_bytes(p + b + 260 + 2 * s, 2);
        }
    }
    return 0;
}

/* ---- name index --------------------------------------------------------------------
 *
 * Tensor names and metadata keys are looked up through an open-addressing hash table built
 * once at load: a model asks for ~16 tensors per layer, and a linear scan per lookup made
 * loading quadratic in the tensor count (a 10 MB file with 200,000 tensors took 45 s).
 * Building the table also finds a duplicate name in O(n).
 *
 * The file's author chooses the names, so a fixed hash would let a hostile file put every
 * name in one probe chain and bring the quadratic time back. The hash is SipHash-1-3 keyed
 * with a per-process value (clock and ASLR addresses): not a secret from a local attacker,
 * but nothing a file written in advance can aim at. */

#define ROTL64(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND(v0, v1, v2, v3)                                                              \
    do {                                                                                      \
        v0 += v1; v1 = ROTL64(v1, 13); v1 ^= v0; v0 = ROTL64(v0, 32);                         \
        v2 += v3; v3 = ROTL64(v3, 16); v3 ^= v2;                                              \
        v0 += v3; v3 = ROTL64(v3, 21); v3 ^= v0;                                              \
        v2 += v1; v1 = ROTL64(v1, 17); v1 ^= v2; v2 = ROTL64(v2, 32);                         \
    } while (0)

static uint64_t siphash13(uint64_t k0, uint64_t k1, const uint8_t *p, size_t n) {
    uint64_t v0 = k0 ^ 0x736f6d6570736575ULL, v1 = k1 ^ 0x646f72616e646f6dULL;
    uint64_t v2 = k0 ^ 0x6c7967656e657261ULL, v3 = k1 ^ 0x7465646279746573ULL;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t m = rd64(p + i);
        v3 ^= m;
        SIPROUND(v0, v1, v2, v3);
        v0 ^= m;
    }
    uint64_t b = (uint64_t)n << 56;
    for (size_t k = 0; i + k < n; k++) b |= (uint64_t)p[i + k] << (8 * k);
    v3 ^= b;
    SIPROUND(v0, v1, v2, v3);
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND(v0, v1, v2, v3);
    SIPROUND(v0, v1, v2, v3);
    SIPROUND(v0, v1, v2, v3);
    return v0 ^ v1 ^ v2 ^ v3;
}

static uint64_t mix64(uint64_t x) {
    x ^= x >> 33; x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ULL;
    return x ^ (x >> 33);
}

/* The per-index key: the clock and the addresses of a stack, a heap and a static object. */
static void index_key(const void *heap, uint64_t key[2]) {
    static int anchor;
    int local = 0;
    double t = em_time_ms();
    uint64_t tb;
    memcpy(&tb, &t, sizeof tb);
    key[0] = mix64(tb ^ (uint64_t)(uintptr_t)&local);
    key[1] = mix64(key[0] ^ (uint64_t)(uintptr_t)heap ^ ((uint64_t)(uintptr_t)&anchor << 17));
}

/* Builds the table over n names (a char * field at name_off in each item of item_size bytes).
 * Returns 0, or 1 with *dup naming a name that occurs twice, or -1 when out of memory. */
static int index_build(em_gguf_index *ix, const void *items, uint64_t n, size_t item_size, size_t name_off,
                       const char **dup) {
    *dup = NULL;
    memset(ix, 0, sizeof *ix);
    /* at most half full, so probe chains stay short; n is bounded by the file size / 13 */
    uint64_t cap = 8;
    while (cap < 2 * n) cap <<= 1;
    if (cap > SIZE_MAX / sizeof(uint64_t)) return -1;
    ix->slots = (uint64_t *)calloc((size_t)cap, sizeof(uint64_t));
    if (!ix->slots) return -1;
    ix->mask = cap - 1;
    index_key(ix->slots, ix->key);
    for (uint64_t i = 0; i < n; i++) {
        const char *name;
        memcpy(&name, (const char *)items + i * item_size + name_off, sizeof name);
        size_t len = strlen(name);
        uint64_t h = siphash13(ix->key[0], ix->key[1], (const uint8_t *)name, len);
        for (uint64_t s = h & ix->mask;; s = (s + 1) & ix->mask) {
            uint64_t slot = ix->slots[s];
            if (slot == 0) { ix->slots[s] = i + 1; break; }
            const char *other;
            memcpy(&other, (const char *)items + (slot - 1) * item_size + name_off, sizeof other);
            if (strcmp(other, name) == 0) { *dup = name; return 1; }
        }
    }
    return 0;
}

/* The item whose name is name, or NULL. */
static const void *index_find(const em_gguf_index *ix, const void *items, size_t item_size, size_t name_off,
                              const char *name) {
    if (!ix->slots || !name) return NULL;
    uint64_t h = siphash13(ix->key[0], ix->key[1], (const uint8_t *)name, strlen(name));
    for (uint64_t s = h & ix->mask;; s = (s + 1) & ix->mask) {
        uint64_t slot = ix->slots[s];
        if (slot == 0) return NULL;
        const char *item = (const char *)items + (slot - 1) * item_size;
        const char *other;
        memcpy(&other, item + name_off, sizeof other);
        if (strcmp(other, name) == 0) return item;
    }
}

void em_gguf_close(em_gguf *g) {
    if (!g) return;
    if (g->kv) {
        for (uint64_t i = 0; i < g->n_kv; i++) {
            free(g->kv[i].key);
            free(g->kv[i].arr);
            free((void *)g->kv[i].strs);
            free(g->kv[i].str_lens);
        }
        free(g->kv);
    }
    if (g->tensors) {
        for (uint64_t i = 0; i < g->n_tensors; i++) free(g->tensors[i].name);
        free(g->tensors);
    }
    free(g->kv_index.slots);
    free(g->tensor_index.slots);
    free(g->swapped);
    em_unmap_file(&g->map);
    free(g);
}

int em_gguf_parse(const uint8_t *data, uint64_t size, em_gguf **out, char *err, size_t errlen) {
    *out = NULL;
    em_gguf *g = (em_gguf *)calloc(1, sizeof *g);
    if (!g) return fail(err, errlen, "out of memory");
    g->base = data;
    g->size = size;
    cursor c = {data, size, 0, err, errlen};
    int rc = -1;

    if (size < 4 || memcmp(data, "GGUF", 4) != 0) {
        fail(err, errlen, size < 4 ? "file too small to be GGUF (%llu bytes)" : "not a GGUF file (bad magic; file size %llu)",
             (unsigned long long)size);
        goto done;
    }
    c.pos = 4;
    if (get_u32(&c, &g->version, "GGUF version")) goto done;
    if (g->version == 1) { fail(err, errlen, "GGUF version 1 is not supported (only 2 and 3)"); goto done; }
    if ((g->version & 0xFFFF) == 0 && g->version != 0) {
        fail(err, errlen, "GGUF file is big-endian (version field 0x%08x); only little-endian files are supported", g->version);
        goto done;
    }
    if (g->version != 2 && g->version != 3) {
        fail(err, errlen, "unsupported GGUF version %u (only 2 and 3)", g->version);
        goto done;
    }
    if (get_u64(&c, &g->n_tensors, "tensor count")) goto done;
    if (get_u64(&c, &g->n_kv, "metadata count")) goto done;
    /* smallest tensor info: 8 (name length) + 1 + 4 + 8 + 4 + 8 bytes; smallest kv: 8 + 4 + 1 */
    if (g->n_tensors > remaining(&c) / 33) {
        fail(err, errlen, "tensor count %llu cannot fit in a file of %llu bytes",
             (unsigned long long)g->n_tensors, (unsigned long long)size);
        goto done;
    }
    if (g->n_kv > remaining(&c) / 13) {
        fail(err, errlen, "metadata count %llu cannot fit in a file of %llu bytes",
             (unsigned long long)g->n_kv, (unsigned long long)size);
        goto done;
    }
    g->kv = (em_gguf_kv *)calloc(g->n_kv ? (size_t)g->n_kv : 1, sizeof(em_gguf_kv));
    g->tensors = (em_gguf_tensor *)calloc(g->n_tensors ? (size_t)g->n_tensors : 1, sizeof(em_gguf_tensor));
    if (!g->kv || !g->tensors) { fail(err, errlen, "out of memory"); goto done; }

    for (uint64_t i = 0; i < g->n_kv; i++) {
        if (read_kv(&c, &g->kv[i], i)) goto done;
    }
    {
        const char *dup = NULL;
        int r = index_build(&g->kv_index, g->kv, g->n_kv, sizeof(em_gguf_kv), offsetof(em_gguf_kv, key), &dup);
        if (r != 0) {
            if (r < 0) fail(err, errlen, "out of memory indexing %llu metadata keys", (unsigned long long)g->n_kv);
            else fail(err, errlen, "duplicate metadata key '%.100s'", dup);
            goto done;
        }
    }

    g->alignment = EM_GGUF_DEFAULT_ALIGNMENT;
    const em_gguf_kv *al = em_gguf_find(g, "general.alignment");
    if (al) {
        if (al->type != EM_GGUF_UINT32) {
            fail(err, errlen, "metadata key 'general.alignment': expected uint32, got %s", em_gguf_type_name(al->type));
            goto done;
        }
        if (al->v.u == 0 || (al->v.u & (al->v.u - 1)) != 0) {
            fail(err, errlen, "metadata key 'general.alignment': %llu is not a power of two", (unsigned long long)al->v.u);
            goto done;
        }
        g->alignment = al->v.u;
    }

    for (uint64_t i = 0; i < g->n_tensors; i++) {
        if (read_tensor_info(&c, &g->tensors[i], i)) goto done;
    }
    {
        const char *dup = NULL;
        int r = index_build(&g->tensor_index, g->tensors, g->n_tensors, sizeof(em_gguf_tensor),
                            offsetof(em_gguf_tensor, name), &dup);
        if (r != 0) {
            if (r < 0) fail(err, errlen, "out of memory indexing %llu tensors", (unsigned long long)g->n_tensors);
            else fail(err, errlen, "duplicate tensor name '%s'", dup);
            goto done;
        }
    }

    /* the data section starts at the next multiple of the alignment */
    uint64_t pad = (g->alignment - c.pos % g->alignment) % g->alignment;
    g->data_offset = c.pos + pad;
    if (g->n_tensors > 0 && g->data_offset > size) {
        fail(err, errlen, "file truncated: data section would start at offset %llu, file size is %llu",
             (unsigned long long)g->data_offset, (unsigned long long)size);
        goto done;
    }

    for (uint64_t i = 0; i < g->n_tensors; i++) {
        em_gguf_tensor *t = &g->tensors[i];
        const em_type_traits *tr = em_type_traits_get(t->type);
        if (!tr) {
            fail(err, errlen, "tensor '%s': unknown tensor type %u", t->name, t->type);
            goto done;
        }
        if (tr->block_size <= 0 || tr->type_size == 0) {
            fail(err, errlen, "tensor '%s': type %s has no block layout", t->name, tr->name);
            goto done;
        }
        if (t->ne[0] % tr->block_size != 0) {
            fail(err, errlen, "tensor '%s': row length %lld is not a multiple of the %s block size %lld",
                 t->name, (long long)t->ne[0], tr->name, (long long)tr->block_size);
            goto done;
        }
        /* nbytes = (ne0 / block) * type_size * ne1 * ne2 * ne3, each step checked */
        uint64_t nb = (uint64_t)(t->ne[0] / tr->block_size);
        int overflow = nb != 0 && tr->type_size > UINT64_MAX / nb;
        nb *= tr->type_size;
        uint64_t nel = (uint64_t)t->ne[0];
        for (int d = 1; d < EM_GGUF_MAX_DIMS && !overflow; d++) {
            uint64_t ne = (uint64_t)t->ne[d];
            if (ne != 0 && nb > UINT64_MAX / ne) overflow = 1;
            if (ne != 0 && nel > (uint64_t)INT64_MAX / ne) overflow = 1;
            nb *= ne;
            nel *= ne;
        }
        if (overflow) {
            fail(err, errlen, "tensor '%s': shape [%lld, %lld, %lld, %lld] overflows the element count",
                 t->name, (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2], (long long)t->ne[3]);
            goto done;
        }
        t->nbytes = nb;
        if (t->offset % g->alignment != 0) {
            fail(err, errlen, "tensor '%s': data offset %llu is not a multiple of the alignment %llu",
                 t->name, (unsigned long long)t->offset, (unsigned long long)g->alignment);
            goto done;
        }
        uint64_t avail = size - g->data_offset;
        if (t->offset > avail || t->nbytes > avail - t->offset) {
            unsigned long long start = (unsigned long long)g->data_offset + (unsigned long long)t->offset;
            fail(err, errlen, "tensor '%s': data range [%llu, %llu) exceeds file size %llu", t->name,
                 start, start + (unsigned long long)t->nbytes, (unsigned long long)size);
            goto done;
        }
        /* kernels read floats and fp16 scales in place: the data must be aligned for them */
        uint64_t need_align = (t->type == EM_TYPE_F32 || t->type == EM_TYPE_Q8_K || t->type == 26) ? 4
                            : (t->type == 27 || t->type == 28) ? 8 : 2;
        if ((g->data_offset + t->offset) % need_align != 0) {
            fail(err, errlen, "tensor '%s': data at file offset %llu is not %llu-byte aligned", t->name,
                 (unsigned long long)(g->data_offset + t->offset), (unsigned long long)need_align);
            goto done;
        }
        t->data = data + g->data_offset + t->offset;
    }

    if (em_host_is_big_endian() && g->n_tensors > 0 && swap_tensor_data(g, err, errlen)) goto done;

    rc = 0;
done:
    if (rc != 0) {
        em_gguf_close(g);
        return rc;
    }
    *out = g;
    return 0;
}

int em_gguf_open(const char *path, em_gguf **out, char *err, size_t errlen) {
    *out = NULL;
    em_mapping map;
    if (em_map_file(path, &map, err, errlen) != 0) return -1;
    em_gguf *g = NULL;
    char msg[512];
    if (em_gguf_parse(map.data, map.size, &g, msg, sizeof msg) != 0) {
        fail(err, errlen, "%s: %s", path, msg);
        em_unmap_file(&map);
        return -1;
    }
    g->map = map;
    *out = g;
    return 0;
}

/* O(1) on average through the indexes built at load (see index_build). */
const em_gguf_kv *em_gguf_find(const em_gguf *g, const char *key) {
    return (const em_gguf_kv *)index_find(&g->kv_index, g->kv, sizeof(em_gguf_kv), offsetof(em_gguf_kv, key), key);
}

const em_gguf_tensor *em_gguf_find_tensor(const em_gguf *g, const char *name) {
    return (const em_gguf_tensor *)index_find(&g->tensor_index, g->tensors, sizeof(em_gguf_tensor),
                                              offsetof(em_gguf_tensor, name), name);
}

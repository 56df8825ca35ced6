/* gguf.h - a validating reader of GGUF v2/v3 files.
 *
 * The file is mapped read-only. Every count, length, offset, type and alignment is checked
 * against the file size before it is used, so a truncated, corrupt or hostile file gives an
 * error message naming the field and the values, never an out-of-bounds read.
 *
 * Byte order: GGUF files are little-endian. Header and metadata are decoded byte by byte on
 * every host. On big-endian hosts the tensor data is copied into an owned buffer and the
 * multi-byte fields of every block (floats, fp16 scales, int16 sums) are swapped to host
 * order; byte arrays inside blocks (quants, qh bits, packed scales) keep file order, so
 * kernels must read those byte by byte.
 */
#ifndef EMBER_GGUF_H
#define EMBER_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "platform.h"

enum {
    EM_GGUF_UINT8 = 0, EM_GGUF_INT8 = 1, EM_GGUF_UINT16 = 2, EM_GGUF_INT16 = 3,
    EM_GGUF_UINT32 = 4, EM_GGUF_INT32 = 5, EM_GGUF_FLOAT32 = 6, EM_GGUF_BOOL = 7,
    EM_GGUF_STRING = 8, EM_GGUF_ARRAY = 9, EM_GGUF_UINT64 = 10, EM_GGUF_INT64 = 11,
    EM_GGUF_FLOAT64 = 12, EM_GGUF_TYPE_COUNT = 13
};

#define EM_GGUF_MAX_DIMS 4
#define EM_GGUF_DEFAULT_ALIGNMENT 32

typedef struct em_gguf_kv {
    char *key;             /* NUL-terminated copy */
    uint32_t type;         /* EM_GGUF_* */
    union {                /* scalar value in host order (bool: 0/1) */
        uint64_t u;
        int64_t i;
        double f;
    } v;
    const char *str;       /* STRING: bytes in the file (not NUL-terminated) */
    uint64_t str_len;
    uint32_t arr_type;     /* ARRAY: element type (never ARRAY) */
    uint64_t arr_n;        /*        element count */
    void *arr;             /*        numeric elements, owned, host order, native C types */
    const char **strs;     /*        STRING elements: (arr_n) pointers into the file */
    uint64_t *str_lens;    /*        (arr_n) */
} em_gguf_kv;

typedef struct em_gguf_tensor {
    char *name;            /* NUL-terminated copy */
    uint32_t n_dims;
    int64_t ne[EM_GGUF_MAX_DIMS]; /* elements per dimension, ne[0] fastest; unused dims 1 */
    uint32_t type;         /* ggml / em_type id */
    uint64_t offset;       /* from the start of the data section */
    uint64_t nbytes;
    const void *data;      /* into the mapping (or the swapped copy on big-endian hosts) */
} em_gguf_tensor;

/* Open-addressing hash table of names (see gguf.c): slots hold item index + 1, 0 = empty. */
typedef struct em_gguf_index {
    uint64_t *slots;
    uint64_t mask;         /* slot count - 1 (a power of two) */
    uint64_t key[2];       /* hash key, chosen per table */
} em_gguf_index;

typedef struct em_gguf {
    em_mapping map;        /* empty when parsed from a caller's buffer */
    const uint8_t *base;
    uint64_t size;
    uint32_t version;
    uint64_t n_kv;
    em_gguf_kv *kv;        /* (n_kv) */
    uint64_t n_tensors;
    em_gguf_tensor *tensors; /* (n_tensors) */
    uint64_t alignment;
    uint64_t data_offset;  /* start of the data section in the file */
    uint8_t *swapped;      /* big-endian hosts: tensor data in host order */
    em_gguf_index kv_index;     /* metadata keys -> kv */
    em_gguf_index tensor_index; /* tensor names -> tensors */
} em_gguf;

/* Map and parse a file. 0 on success; else non-zero with a message in err. */
int em_gguf_open(const char *path, em_gguf **out, char *err, size_t errlen);
/* Parse a buffer the caller keeps alive (used by the fuzzer and the tests). */
int em_gguf_parse(const uint8_t *data, uint64_t size, em_gguf **out, char *err, size_t errlen);
void em_gguf_close(em_gguf *g);

/* Lookups by name: O(1) on average (hash indexes built at load; names are unique). */
const em_gguf_kv *em_gguf_find(const em_gguf *g, const char *key);
const em_gguf_tensor *em_gguf_find_tensor(const em_gguf *g, const char *name);
const char *em_gguf_type_name(uint32_t type);

#endif /* EMBER_GGUF_H */

/* quants.h - tensor types, block layouts and scalar kernels of ember.
 *
 * Every block struct below is laid out byte for byte like ggml's (GGUF tensor data is
 * used straight from the mmap), and the kernels reproduce the numbers that llama.cpp's
 * CPU backend produces on x86-64 with AVX2/AVX-512 (see quants.c for which summation
 * order each kernel follows and why).
 *
 * Type ids are ggml's, so a GGUF tensor's type id can be passed in directly.
 */
#ifndef EMBER_QUANTS_H
#define EMBER_QUANTS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef uint16_t em_fp16;  /* IEEE binary16 bits */
typedef uint16_t em_bf16;  /* bfloat16 bits */

typedef enum em_type {
    EM_TYPE_F32 = 0, EM_TYPE_F16 = 1, EM_TYPE_Q4_0 = 2, EM_TYPE_Q4_1 = 3,
    EM_TYPE_Q5_0 = 6, EM_TYPE_Q5_1 = 7, EM_TYPE_Q8_0 = 8, EM_TYPE_Q8_1 = 9,
    EM_TYPE_Q2_K = 10, EM_TYPE_Q3_K = 11, EM_TYPE_Q4_K = 12, EM_TYPE_Q5_K = 13,
    EM_TYPE_Q6_K = 14, EM_TYPE_Q8_K = 15, EM_TYPE_BF16 = 30, EM_TYPE_COUNT = 40
} em_type;

typedef struct em_type_traits {
    const char *name;        /* "q4_0" ... */
    int64_t block_size;      /* elements per block (1 for f32/f16/bf16) */
    size_t type_size;        /* bytes per block */
    em_type vec_dot_type;    /* what activations are converted to for em_vec_dot (as ggml) */
    int supported;           /* 1 if ember can compute with it as a weight type */
} em_type_traits;

const em_type_traits *em_type_traits_get(uint32_t type);   /* NULL for unknown ids */
size_t em_row_size(em_type t, int64_t n);                  /* bytes of n elements; n % block_size == 0 */
/* (em_row_size returns 0 for an unknown type or an n that is not a whole number of blocks) */
void em_dequantize_row(em_type t, const void *x, float *y, int64_t n);
/* Activation conversion, as ggml-cpu's from_float does it on x86 (AVX2 path): F32, F16, BF16,
 * Q8_0, Q8_1, Q8_K. For Q4_0/Q4_1/Q5_0/Q5_1 this is the reference quantizer (em_quantize_row_ref). */
void em_quantize_row(em_type t, const float *x, void *y, int64_t n);
/* s = dot(row x of weight type t, row y already converted to traits(t)->vec_dot_type) */
void em_vec_dot(em_type t, int64_t n, float *s, const void *x, const void *y);
float em_fp16_to_fp32(uint16_t h); uint16_t em_fp32_to_fp16(float f);
float em_bf16_to_fp32(uint16_t h); uint16_t em_fp32_to_bf16(float f);

/* --- additions beyond the agreed interface -------------------------------------------- */

/* ggml's reference quantizers (quantize_row_*_ref: the ones that write model files and that
 * gguf-py mirrors): F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q8_K. They differ from
 * the activation path of em_quantize_row for Q8_0/Q8_1 (1/d vs 127/amax, roundf vs rint).
 * Returns 0 on success, -1 if the type has no reference quantizer here. */
int em_quantize_row_ref(em_type t, const float *x, void *y, int64_t n);

/* 1 if em_quantize_row can produce type t (i.e. t can be a vec_dot_type or a test target). */
int em_can_quantize(em_type t);

/* llama.cpp's CPU backend does not always use vec_dot for a matmul; which kernel runs depends
 * on the buffer the weight lives in and on the number of activation rows. em_vec_dot_kernel
 * gives the bits of each (x86-64, AVX2/AVX-512 build), per output element:
 *   EM_KERNEL_VEC_DOT     plain CPU buffer, 1 activation row; also >= 2 rows for every type
 *                         llamafile does not take. Same as em_vec_dot.
 *   EM_KERNEL_SGEMM       plain CPU buffer, >= 2 activation rows (llamafile sgemm): differs
 *                         from vec_dot for F32/F16/BF16 only; falls back to vec_dot like
 *                         llama.cpp does (other types, odd row lengths).
 *   EM_KERNEL_TILED       plain CPU buffer, >= 8 activation rows, Q2_K..Q6_K (ggml's tiled
 *                         K-quant matmul, which llama.cpp tries before llamafile); other
 *                         types give vec_dot's bits.
 *   EM_KERNEL_REPACK_GEMV CPU_REPACK buffer (Q4_0, Q4_K with em_repack_applies): the single
 *                         activation rows, i.e. decode, and the last (rows % 4) prompt rows.
 *   EM_KERNEL_REPACK_GEMM CPU_REPACK buffer: prompt rows in groups of 4 (the first
 *                         rows - rows % 4).
 *   EM_KERNEL_AMX         AMX buffer (only in builds with AMX enabled): Q4_0, Q4_1, Q8_0,
 *                         Q4_K, Q5_K, Q6_K, and F16 whose activation y is then F32 (not F16).
 * y is in traits(t)->vec_dot_type except for that AMX F16 case. Returns 0, or -1 when the
 * kernel does not handle the type (or n is not a whole number of its blocks). */
typedef enum em_kernel {
    EM_KERNEL_VEC_DOT = 0,
    EM_KERNEL_SGEMM = 1,
    EM_KERNEL_REPACK_GEMV = 2,
    EM_KERNEL_REPACK_GEMM = 3,
    EM_KERNEL_AMX = 4,
    EM_KERNEL_TILED = 5
} em_kernel;
int em_vec_dot_kernel(em_kernel kernel, em_type t, int64_t n, float *s, const void *x, const void *y);
/* 1 if llama.cpp (x86 with AVX2) repacks a matmul weight of this type with n_rows output rows
 * (ggml ne[1]) into the CPU_REPACK buffer: Q4_0 and Q4_K with n_rows % 8 == 0. (Weights only
 * read by get_rows, e.g. token_embd, stay in the plain buffer.) Q2_K is also repacked by
 * llama.cpp on AVX-512 CPUs; ember does not model that kernel. */
int em_repack_applies(em_type t, int64_t n_rows);

/* --- block layouts (identical to ggml-common.h) --------------------------------------- */

#define EM_QK4_0 32
#define EM_QK4_1 32
#define EM_QK5_0 32
#define EM_QK5_1 32
#define EM_QK8_0 32
#define EM_QK8_1 32
#define EM_QK_K  256
#define EM_K_SCALE_SIZE 12

/* Q4_0: x = d * (q - 8), q in [0, 15]. qs[j] holds element j (low nibble) and j+16 (high). */
typedef struct { em_fp16 d; uint8_t qs[EM_QK4_0 / 2]; } em_block_q4_0;            /* 18 bytes */
/* Q4_1: x = d * q + m. */
typedef struct { em_fp16 d; em_fp16 m; uint8_t qs[EM_QK4_1 / 2]; } em_block_q4_1; /* 20 bytes */
/* Q5_0: x = d * (q - 16); bit 4 of element j is bit j of qh (little-endian uint32). */
typedef struct { em_fp16 d; uint8_t qh[4]; uint8_t qs[EM_QK5_0 / 2]; } em_block_q5_0; /* 22 */
/* Q5_1: x = d * q + m. */
typedef struct { em_fp16 d; em_fp16 m; uint8_t qh[4]; uint8_t qs[EM_QK5_1 / 2]; } em_block_q5_1; /* 24 */
/* Q8_0: x = d * q. */
typedef struct { em_fp16 d; int8_t qs[EM_QK8_0]; } em_block_q8_0;                 /* 34 bytes */
/* Q8_1: x = d * q; s = d * sum(q) (used by the Q4_1/Q5_1 dots for the min term). */
typedef struct { em_fp16 d; em_fp16 s; int8_t qs[EM_QK8_1]; } em_block_q8_1;     /* 36 bytes */

/* Q2_K: 16 sub-blocks of 16; scales[i] = scale (low 4 bits) | min (high 4 bits);
 * x = d * sc * q - dmin * m, q 2-bit. */
typedef struct {
    uint8_t scales[EM_QK_K / 16];   /* (16) */
    uint8_t qs[EM_QK_K / 4];        /* (64) 4 elements per byte */
    em_fp16 d, dmin;
} em_block_q2_K;                    /* 84 bytes */
/* Q3_K: 16 sub-blocks of 16; 6-bit signed scales (offset 32) packed in 12 bytes;
 * x = d * (sc - 32) * (q - (hmask bit ? 0 : 4)), q 2-bit low part. */
typedef struct {
    uint8_t hmask[EM_QK_K / 8];     /* (32) high bit */
    uint8_t qs[EM_QK_K / 4];        /* (64) low 2 bits */
    uint8_t scales[12];
    em_fp16 d;
} em_block_q3_K;                    /* 110 bytes */
/* Q4_K: 8 sub-blocks of 32; 6-bit scales and mins packed in 12 bytes (get_scale_min_k4);
 * x = d * sc * q - dmin * m. */
typedef struct {
    em_fp16 d, dmin;
    uint8_t scales[EM_K_SCALE_SIZE];
    uint8_t qs[EM_QK_K / 2];        /* (128) */
} em_block_q4_K;                    /* 144 bytes */
/* Q5_K: like Q4_K plus one high bit per element in qh. */
typedef struct {
    em_fp16 d, dmin;
    uint8_t scales[EM_K_SCALE_SIZE];
    uint8_t qh[EM_QK_K / 8];        /* (32) */
    uint8_t qs[EM_QK_K / 2];        /* (128) */
} em_block_q5_K;                    /* 176 bytes */
/* Q6_K: 16 sub-blocks of 16; x = d * sc * (q - 32), q 6-bit = 4 low (ql) + 2 high (qh). */
typedef struct {
    uint8_t ql[EM_QK_K / 2];        /* (128) */
    uint8_t qh[EM_QK_K / 4];        /* (64) */
    int8_t scales[EM_QK_K / 16];    /* (16) */
    em_fp16 d;
} em_block_q6_K;                    /* 210 bytes */
/* Q8_K: activation type of the K-quant dots; x = d * q; bsums[i] = sum of q[16i..16i+15]. */
typedef struct {
    float d;
    int8_t qs[EM_QK_K];             /* (256) */
    int16_t bsums[EM_QK_K / 16];    /* (16) */
} em_block_q8_K;                    /* 292 bytes */

#ifdef __cplusplus
}
#endif

#endif /* EMBER_QUANTS_H */

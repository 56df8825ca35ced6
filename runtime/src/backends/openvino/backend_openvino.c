/* backend_openvino.c - the OpenVINO backend: the whole llama graph described to OpenVINO as an
 * IR (XML text plus a weights blob, both built in memory), read with
 * ov_core_read_model_from_memory_buffer, compiled for one OpenVINO device and run once per
 * batch.
 *
 * The OpenVINO C API (libopenvino_c.so / openvino_c.dll) is opened at run time, as the other
 * GPU backends open their driver: ember links nothing of OpenVINO and needs none of its headers
 * to build (the few entry points used are declared below with their documented signatures), so
 * the Windows build cross-compiles with zig like the CPU build. Where the library is looked for,
 * in order (ov_open):
 *   $EMBER_OPENVINO_LIB                      the library file itself (e.g. the pip wheel's
 *                                            site-packages/openvino/libs/libopenvino_c.so.2621);
 *                                            when set, the only place
 *   $INTEL_OPENVINO_DIR/runtime/lib/intel64  an OpenVINO archive set up by setupvars
 *                                            (runtime/lib/aarch64 on Linux arm64,
 *                                            runtime/lib/<arch>/Release on macOS,
 *                                            runtime\bin\intel64\Release on Windows)
 *   libopenvino_c.so, libopenvino_c.so.2621, the loader's search path ($LD_LIBRARY_PATH, ...)
 *   libopenvino_c.so.2620 / openvino_c.dll   by name, then any libopenvino_c.so.* in the
 *                                            folders of $LD_LIBRARY_PATH (the wheel ships only
 *                                            the versioned file)
 *   /opt/intel/openvino_<version>/runtime/lib/intel64
 *                                            archives unpacked where OpenVINO's guide puts them
 *                                            (any /opt/intel/openvino...), newest first (not on
 *                                            Windows)
 *   <prefix>/lib/python3.X/site-packages/openvino/libs
 *                                            `pip install openvino` in $VIRTUAL_ENV,
 *                                            $CONDA_PREFIX, the prefix of each python3 on $PATH
 *                                            or ~/.local (Windows: the first two), found without
 *                                            running Python
 * When none has it, the error lists every place tried and how to install the runtime.
 * The device is $EMBER_OPENVINO_DEVICE when set ("CPU", "GPU", "GPU.1", ...), else "GPU" when
 * OpenVINO lists one, else "CPU" -- but only when asked for by name: "auto" declines the CPU
 * plugin, since ember's own CPU path is faster there. The inference precision hint is f32 on every device, so the
 * CPU plugin does not drop to bf16 on CPUs with AMX / AVX512-BF16.
 *
 * The graph: inputs are the token embeddings of the batch (dequantized on the host exactly as
 * the CPU path does), the RoPE cos/sin of each position (em_rope_cache, the CPU path's table),
 * the causal mask and, per layer, the cached K and V rows of the positions before the batch.
 * Outputs are the logits of the last token and the batch's new K and V rows of every layer,
 * which the host appends to its KV cache (f32, one [n_ctx][n_head_kv*head_dim] array per layer
 * and kind; the first n_past rows of each are handed to OpenVINO without a copy). The token
 * count and the cached length are dynamic dimensions: one compiled model serves prompt and
 * generation. Weights of Q4_0, Q4_1 and Q8_0 go into the blob as one byte per value plus an
 * f32 scale and zero point per block of 32, behind OpenVINO's weight-decompression pattern
 * (Convert, Subtract, Multiply), which the CPU plugin runs as a FullyConnectedCompressed layer;
 * every other format, and all of them with $EMBER_OPENVINO_WEIGHTS=f32, is dequantized to f32
 * (em_dequantize_row). Either way the matrix products see the same f32 weight values (up to
 * the rounding of (q - zp) * d against d * q + m) and f32 activations, where ember's CPU path
 * quantizes activations to the weight's vec_dot type (q8_1 for Q4_1) and keeps K, V, Q and
 * the attention probabilities in fp16: results agree closely, not bit for bit.
 *
 * "auto" takes this backend whenever the OpenVINO runtime loads, on a machine without an
 * Intel GPU too (then on OpenVINO's CPU plugin); `--backend cpu` keeps ember's own CPU path.
 */
#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L /* dlopen */
#endif
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "gpu_dl.h"
#include "model.h"

#ifndef _WIN32
#include <glob.h>
#include <unistd.h>
#endif

/* ---- the subset of the OpenVINO C API used (the openvino/c headers of 2026.2) ---------------------- */

typedef int ov_status;             /* ov_status_e: OK = 0 */
typedef struct ov_core ov_core;
typedef struct ov_model ov_model;
typedef struct ov_compiled_model ov_compiled_model;
typedef struct ov_infer_request ov_infer_request;
typedef struct ov_tensor ov_tensor;
typedef struct { int64_t rank; int64_t *dims; } ov_shape;
typedef struct { const char *build_number; const char *description; } ov_version;
typedef struct { char **devices; size_t size; } ov_devices;
enum { OV_F32 = 4, OV_U8 = 16 }; /* ov_element_type_e */

/* The library's names: the unversioned one (an archive's or a -dev package's symlink), then the
 * versioned file of the supported releases, newest first. OpenVINO versions its libraries with
 * <last two digits of the year><minor><patch>: 2026.2.1 is libopenvino_c.so.2621 (the only name
 * the pip wheel ships), 2026.2.0 libopenvino_c.so.2620. A directory that is searched (an
 * archive's, a wheel's, one of $LD_LIBRARY_PATH) is also globbed for any other version
 * (OV_LIB_GLOB), the newest first. OV_ARCHIVE_DIR: the libraries' folder in an OpenVINO archive,
 * under $INTEL_OPENVINO_DIR or /opt/intel/openvino*; OV_PY_LIBS: the wheel's, under a Python's
 * prefix. */
#if defined(_WIN32)
static const char *const ov_lib_names[] = {"openvino_c.dll", NULL};
#define OV_WHEEL_LIB "openvino_c.dll"
#define OV_SEP "\\"
#define OV_ARCHIVE_DIR "\\runtime\\bin\\intel64\\Release"
#define OV_PY_LIBS "\\Lib\\site-packages\\openvino\\libs"
#elif defined(__APPLE__)
static const char *const ov_lib_names[] = {"libopenvino_c.dylib", "libopenvino_c.2621.dylib",
                                           "libopenvino_c.2620.dylib", NULL};
#define OV_WHEEL_LIB "libopenvino_c.2621.dylib"
#define OV_LIB_GLOB "libopenvino_c.*.dylib"
#define OV_SEP "/"
#if defined(__aarch64__) || defined(__arm64__)
#define OV_ARCHIVE_DIR "/runtime/lib/arm64/Release"
#else
#define OV_ARCHIVE_DIR "/runtime/lib/intel64/Release"
#endif
#define OV_PY_LIBS "/lib/python3*/site-packages/openvino/libs"
#define OV_SEARCH_PATH "DYLD_LIBRARY_PATH"
#else
static const char *const ov_lib_names[] = {"libopenvino_c.so", "libopenvino_c.so.2621", "libopenvino_c.so.2620",
                                           NULL};
#define OV_WHEEL_LIB "libopenvino_c.so.2621"
#define OV_LIB_GLOB "libopenvino_c.so.*"
#define OV_SEP "/"
#if defined(__aarch64__)
#define OV_ARCHIVE_DIR "/runtime/lib/aarch64"
#else
#define OV_ARCHIVE_DIR "/runtime/lib/intel64"
#endif
/* lib64 for Fedora's system-wide pip, dist-packages for Debian's */
#define OV_PY_LIBS "/lib*/python3*/*-packages/openvino/libs"
#define OV_SEARCH_PATH "LD_LIBRARY_PATH"
#endif

typedef struct ov_api {
    void *lib;
    ov_status (*get_openvino_version)(ov_version *);
    void (*version_free)(ov_version *);
    const char *(*get_last_err_msg)(void);
    const char *(*get_error_info)(ov_status);
    void (*free_str)(const char *);
    ov_status (*core_create)(ov_core **);
    void (*core_free)(ov_core *);
    ov_status (*core_get_available_devices)(const ov_core *, ov_devices *);
    void (*available_devices_free)(ov_devices *);
    ov_status (*core_get_property)(const ov_core *, const char *, const char *, char **);
    ov_status (*core_read_model_from_memory_buffer)(const ov_core *, const char *, size_t, const ov_tensor *,
                                                   ov_model **);
    ov_status (*core_compile_model)(const ov_core *, const ov_model *, const char *, size_t, ov_compiled_model **,
                                    ...);
    void (*model_free)(ov_model *);
    ov_status (*compiled_model_create_infer_request)(const ov_compiled_model *, ov_infer_request **);
    ov_status (*compiled_model_get_property)(const ov_compiled_model *, const char *, char **);
    void (*compiled_model_free)(ov_compiled_model *);
    ov_status (*infer_request_set_tensor)(ov_infer_request *, const char *, const ov_tensor *);
    ov_status (*infer_request_get_tensor)(const ov_infer_request *, const char *, ov_tensor **);
    ov_status (*infer_request_infer)(ov_infer_request *);
    void (*infer_request_free)(ov_infer_request *);
    ov_status (*shape_create)(int64_t, const int64_t *, ov_shape *);
    ov_status (*shape_free)(ov_shape *);
    ov_status (*tensor_create_from_host_ptr)(int, ov_shape, void *, ov_tensor **);
    ov_status (*tensor_get_shape)(const ov_tensor *, ov_shape *);
    ov_status (*tensor_data)(const ov_tensor *, void **);
    void (*tensor_free)(ov_tensor *);
} ov_api;

static const char *ov_resolve(ov_api *a) {
    GPU_SYM(a->lib, a->get_openvino_version, "ov_get_openvino_version");
    GPU_SYM(a->lib, a->version_free, "ov_version_free");
    GPU_SYM(a->lib, a->get_last_err_msg, "ov_get_last_err_msg");
    GPU_SYM(a->lib, a->get_error_info, "ov_get_error_info");
    GPU_SYM(a->lib, a->free_str, "ov_free");
    GPU_SYM(a->lib, a->core_create, "ov_core_create");
    GPU_SYM(a->lib, a->core_free, "ov_core_free");
    GPU_SYM(a->lib, a->core_get_available_devices, "ov_core_get_available_devices");
    GPU_SYM(a->lib, a->available_devices_free, "ov_available_devices_free");
    GPU_SYM(a->lib, a->core_get_property, "ov_core_get_property");
    GPU_SYM(a->lib, a->core_read_model_from_memory_buffer, "ov_core_read_model_from_memory_buffer");
    GPU_SYM(a->lib, a->core_compile_model, "ov_core_compile_model");
    GPU_SYM(a->lib, a->model_free, "ov_model_free");
    GPU_SYM(a->lib, a->compiled_model_create_infer_request, "ov_compiled_model_create_infer_request");
    GPU_SYM(a->lib, a->compiled_model_get_property, "ov_compiled_model_get_property");
    GPU_SYM(a->lib, a->compiled_model_free, "ov_compiled_model_free");
    GPU_SYM(a->lib, a->infer_request_set_tensor, "ov_infer_request_set_tensor");
    GPU_SYM(a->lib, a->infer_request_get_tensor, "ov_infer_request_get_tensor");
    GPU_SYM(a->lib, a->infer_request_infer, "ov_infer_request_infer");
    GPU_SYM(a->lib, a->infer_request_free, "ov_infer_request_free");
    GPU_SYM(a->lib, a->shape_create, "ov_shape_create");
    GPU_SYM(a->lib, a->shape_free, "ov_shape_free");
    GPU_SYM(a->lib, a->tensor_create_from_host_ptr, "ov_tensor_create_from_host_ptr");
    GPU_SYM(a->lib, a->tensor_get_shape, "ov_tensor_get_shape");
    GPU_SYM(a->lib, a->tensor_data, "ov_tensor_data");
    GPU_SYM(a->lib, a->tensor_free, "ov_tensor_free");
    return NULL;
}

/* "what: OpenVINO's message" into why */
static int ov_fail(const ov_api *a, ov_status st, const char *what, char *why, size_t whylen) {
    const char *msg = a->get_last_err_msg ? a->get_last_err_msg() : NULL;
    if (!msg || !msg[0]) msg = a->get_error_info ? a->get_error_info(st) : "unknown error";
    /* OpenVINO's messages span lines; keep the reason on one */
    size_t k = (size_t)snprintf(why, whylen, "%s failed (status %d): ", what, st);
    for (const char *p = msg; *p && k + 1 < whylen; p++) why[k++] = (*p == '\n' || *p == '\r') ? ' ' : *p;
    if (k < whylen) why[k] = 0;
    return -1;
}

/* ---- the IR: XML text and the weights blob ------------------------------------------------ */

typedef struct sbuf {
    char *p;
    size_t n, cap;
    int oom;
} sbuf;

static void sb_grow(sbuf *b, size_t more) {
    if (b->oom || b->n + more + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->n + more + 1) cap *= 2;
    char *p = (char *)realloc(b->p, cap);
    if (!p) { b->oom = 1; return; }
    b->p = p;
    b->cap = cap;
}

#if defined(__GNUC__) || defined(__clang__)
__attribute__((format(printf, 2, 3)))
#endif
static void sb_printf(sbuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (k < 0) { b->oom = 1; return; }
    sb_grow(b, (size_t)k);
    if (b->oom) return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->n, (size_t)k + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)k;
}

typedef struct val { int layer, port; } val; /* one output of one IR layer */

typedef struct irb {
    sbuf xml, edges;
    uint8_t *blob;
    size_t blob_n, blob_cap;
    int next_id;
    int oom;
} irb;

/* room for `bytes` more in the blob at a 64-byte boundary; offset or -1 */
static int64_t blob_reserve(irb *b, size_t bytes) {
    size_t off = (b->blob_n + 63) & ~(size_t)63;
    if (off + bytes > b->blob_cap) {
        size_t cap = b->blob_cap ? b->blob_cap : ((size_t)1 << 20);
        while (cap < off + bytes) cap *= 2;
        uint8_t *p = (uint8_t *)realloc(b->blob, cap);
        if (!p) { b->oom = 1; return -1; }
        b->blob = p;
        b->blob_cap = cap;
    }
    b->blob_n = off + bytes;
    return (int64_t)off;
}

static const char *ov_prec(const char *et) { return !strcmp(et, "f32") ? "FP32" : !strcmp(et, "i64") ? "I64" : "U8"; }

/* A constant of element type et ("f32", "i64") and shape (comma-separated) whose bytes are
 * at blob offset off. */
static val ir_const_at(irb *b, const char *et, const char *shape, int64_t off, size_t bytes) {
    int id = b->next_id++;
    sb_printf(&b->xml,
              "<layer id=\"%d\" name=\"c%d\" type=\"Const\" version=\"opset1\"><data element_type=\"%s\" shape=\"%s\" "
              "offset=\"%lld\" size=\"%zu\"/><output><port id=\"0\" precision=\"%s\"/></output></layer>\n",
              id, id, et, shape, (long long)off, bytes, ov_prec(et));
    val v = {id, 0};
    return v;
}

/* n values; n == 0: the scalar x[0] */
static val ir_i64(irb *b, int n, const int64_t *x) {
    char shape[32] = "";
    if (n) snprintf(shape, sizeof shape, "%d", n);
    else n = 1;
    int64_t off = blob_reserve(b, (size_t)n * 8);
    if (off >= 0) memcpy(b->blob + off, x, (size_t)n * 8);
    return ir_const_at(b, "i64", shape, off < 0 ? 0 : off, (size_t)n * 8);
}

static val ir_f32(irb *b, const char *shape, const float *x, size_t n) {
    int64_t off = blob_reserve(b, n * 4);
    if (off >= 0) memcpy(b->blob + off, x, n * 4);
    return ir_const_at(b, "f32", shape, off < 0 ? 0 : off, n * 4);
}

static val ir_op(irb *b, const char *type, const char *attrs, int n_in, const val *in);
static val ir_bin(irb *b, const char *type, val x, val y);
static val ir_reshape(irb *b, val x, int n, const int64_t *shape);

/* One block of 32 of a GGUF format whose values are scale * (q - zp) with q in 0..255:
 * Q4_0 d*(q-8), Q4_1 d*q+m, Q8_0 d*q. 0 when the type is not one of them. */
static int block_split(em_type t, const uint8_t *blk, uint8_t q[32], float *scale, float *zp) {
    switch (t) {
    case EM_TYPE_Q4_0: {
        const em_block_q4_0 *x = (const em_block_q4_0 *)(const void *)blk;
        for (int j = 0; j < 16; j++) { q[j] = x->qs[j] & 15; q[j + 16] = x->qs[j] >> 4; }
        *scale = em_fp16_to_fp32(x->d);
        *zp = 8.0f;
        return 1;
    }
    case EM_TYPE_Q4_1: {
        const em_block_q4_1 *x = (const em_block_q4_1 *)(const void *)blk;
        const float d = em_fp16_to_fp32(x->d), m = em_fp16_to_fp32(x->m);
        for (int j = 0; j < 16; j++) { q[j] = x->qs[j] & 15; q[j + 16] = x->qs[j] >> 4; }
        if (d != 0.0f) {
            *scale = d;
            *zp = -m / d;
        } else { /* every value is m: (0 - -1) * m */
            memset(q, 0, 32);
            *scale = m;
            *zp = -1.0f;
        }
        return 1;
    }
    case EM_TYPE_Q8_0: {
        const em_block_q8_0 *x = (const em_block_q8_0 *)(const void *)blk;
        for (int j = 0; j < 32; j++) q[j] = (uint8_t)(x->qs[j] + 128);
        *scale = em_fp16_to_fp32(x->d);
        *zp = 128.0f;
        return 1;
    }
    default: return 0;
    }
}

/* A weight matrix of a block format block_split knows, as OpenVINO's weight decompression
 * pattern: u8 codes -> Convert -> Subtract(zero point) -> Multiply(scale) per block of 32,
 * which the CPU plugin runs as a fully connected layer on compressed weights (4x less memory
 * traffic than f32 for Q4 formats). */
static val ir_weight_blocks(irb *b, const em_weight *w) {
    const int64_t nb = w->ne0 / 32, rows = w->ne1;
    const size_t bsz = w->row_bytes / (size_t)nb;
    char shape[96], sshape[96];
    snprintf(shape, sizeof shape, "%lld,%lld,32", (long long)rows, (long long)nb);
    snprintf(sshape, sizeof sshape, "%lld,%lld,1", (long long)rows, (long long)nb);
    const size_t nq = (size_t)rows * (size_t)nb * 32, ns = (size_t)rows * (size_t)nb;
    int64_t oq = blob_reserve(b, nq), os = blob_reserve(b, ns * 4), oz = blob_reserve(b, ns * 4);
    if (oq >= 0 && os >= 0 && oz >= 0)
        for (int64_t r = 0; r < rows; r++)
            for (int64_t k = 0; k < nb; k++) {
                const size_t i = (size_t)(r * nb + k);
                float sc, zp;
                block_split(w->type, (const uint8_t *)w->data + (size_t)r * w->row_bytes + (size_t)k * bsz,
                            b->blob + oq + i * 32, &sc, &zp);
                memcpy(b->blob + os + i * 4, &sc, 4);
                memcpy(b->blob + oz + i * 4, &zp, 4);
            }
    val codes = ir_const_at(b, "u8", shape, oq < 0 ? 0 : oq, nq);
    val f = ir_op(b, "Convert", "destination_type=\"f32\"", 1, &codes);
    val zp = ir_const_at(b, "f32", sshape, oz < 0 ? 0 : oz, ns * 4);
    val sc = ir_const_at(b, "f32", sshape, os < 0 ? 0 : os, ns * 4);
    const int64_t flat[2] = {rows, w->ne0};
    return ir_reshape(b, ir_bin(b, "Multiply", ir_bin(b, "Subtract", f, zp), sc), 2, flat);
}

/* a weight matrix (ne1 rows of ne0): compressed where the format allows, else dequantized to
 * f32 ($EMBER_OPENVINO_WEIGHTS=f32 dequantizes every format) */
static val ir_weight(irb *b, const em_weight *w) {
    uint8_t q[32];
    float sc, zp;
    const char *mode = getenv("EMBER_OPENVINO_WEIGHTS");
    if (!(mode && !strcmp(mode, "f32")) && w->ne0 % 32 == 0 && block_split(w->type, (const uint8_t *)w->data, q, &sc, &zp))
        return ir_weight_blocks(b, w);
    char shape[64];
    snprintf(shape, sizeof shape, "%lld,%lld", (long long)w->ne1, (long long)w->ne0);
    const size_t n = (size_t)w->ne0 * (size_t)w->ne1;
    int64_t off = blob_reserve(b, n * 4);
    if (off >= 0)
        for (int64_t r = 0; r < w->ne1; r++)
            em_dequantize_row(w->type, (const uint8_t *)w->data + (size_t)r * w->row_bytes,
                              (float *)(void *)(b->blob + off) + (size_t)r * (size_t)w->ne0, w->ne0);
    return ir_const_at(b, "f32", shape, off < 0 ? 0 : off, n * 4);
}

static val ir_param(irb *b, const char *name, const char *shape) {
    int id = b->next_id++;
    sb_printf(&b->xml,
              "<layer id=\"%d\" name=\"%s\" type=\"Parameter\" version=\"opset1\"><data shape=\"%s\" "
              "element_type=\"f32\"/><output><port id=\"0\" precision=\"FP32\" names=\"%s\"/></output></layer>\n",
              id, name, shape, name);
    val v = {id, 0};
    return v;
}

/* An operation with n_in inputs and n_out f32 outputs (ports n_in..); attrs is the inside of
 * <data .../> or NULL; name names the first output tensor or is NULL. Returns its first output. */
static val ir_op_n(irb *b, const char *type, const char *opset, const char *attrs, int n_in, const val *in, int n_out,
                   const char *name) {
    int id = b->next_id++;
    sb_printf(&b->xml, "<layer id=\"%d\" name=\"n%d\" type=\"%s\" version=\"%s\">", id, id, type, opset);
    if (attrs) sb_printf(&b->xml, "<data %s/>", attrs);
    sb_printf(&b->xml, "<input>");
    for (int i = 0; i < n_in; i++) {
        sb_printf(&b->xml, "<port id=\"%d\"/>", i);
        sb_printf(&b->edges, "<edge from-layer=\"%d\" from-port=\"%d\" to-layer=\"%d\" to-port=\"%d\"/>\n", in[i].layer,
                  in[i].port, id, i);
    }
    sb_printf(&b->xml, "</input>");
    if (n_out) {
        sb_printf(&b->xml, "<output>");
        for (int o = 0; o < n_out; o++) {
            if (o == 0 && name) sb_printf(&b->xml, "<port id=\"%d\" precision=\"FP32\" names=\"%s\"/>", n_in, name);
            else sb_printf(&b->xml, "<port id=\"%d\" precision=\"FP32\"/>", n_in + o);
        }
        sb_printf(&b->xml, "</output>");
    }
    sb_printf(&b->xml, "</layer>\n");
    val v = {id, n_in};
    return v;
}

static val ir_op(irb *b, const char *type, const char *attrs, int n_in, const val *in) {
    return ir_op_n(b, type, "opset1", attrs, n_in, in, 1, NULL);
}
static val ir_bin(irb *b, const char *type, val x, val y) {
    val in[2] = {x, y};
    return ir_op(b, type, "auto_broadcast=\"numpy\"", 2, in);
}
static val ir_matmul_t(irb *b, val x, val w) { /* x . w^T */
    val in[2] = {x, w};
    return ir_op(b, "MatMul", "transpose_a=\"false\" transpose_b=\"true\"", 2, in);
}
static val ir_reshape(irb *b, val x, int n, const int64_t *shape) {
    val in[2] = {x, ir_i64(b, n, shape)};
    return ir_op(b, "Reshape", "special_zero=\"true\"", 2, in);
}
static val ir_transpose(irb *b, val x, int n, const int64_t *perm) {
    val in[2] = {x, ir_i64(b, n, perm)};
    return ir_op(b, "Transpose", NULL, 2, in);
}
static val ir_concat(irb *b, int axis, int n, const val *in) {
    char attrs[32];
    snprintf(attrs, sizeof attrs, "axis=\"%d\"", axis);
    return ir_op(b, "Concat", attrs, n, in);
}
static void ir_result(irb *b, val x) { ir_op_n(b, "Result", "opset1", NULL, 1, &x, 0, NULL); }

/* y = x / sqrt(mean(x^2) + eps) * w over the last axis of [n, E] */
static val ir_rmsnorm(irb *b, val x, const float *w, int64_t E, float eps) {
    char shape[32];
    snprintf(shape, sizeof shape, "%lld", (long long)E);
    const int64_t axis = 1;
    val sq = ir_bin(b, "Multiply", x, x);
    val in[2] = {sq, ir_i64(b, 1, &axis)};
    val mean = ir_op(b, "ReduceMean", "keep_dims=\"true\"", 2, in);
    val rs = ir_op(b, "Sqrt", NULL, 1, (val[]){ir_bin(b, "Add", mean, ir_f32(b, "1", &eps, 1))});
    return ir_bin(b, "Multiply", ir_bin(b, "Divide", x, rs), ir_f32(b, shape, w, (size_t)E));
}

/* RoPE, normal mode (adjacent pairs), of [n, heads*hd] with cos/sin of [n, 1, hd/2, 1] */
static val ir_rope(irb *b, val x, int64_t heads, int64_t hd, val cs, val sn) {
    const int64_t s4[4] = {0, heads, hd / 2, 2}, s2[2] = {0, heads * hd}, axis = 3;
    val r = ir_reshape(b, x, 4, s4);
    val in[2] = {r, ir_i64(b, 0, &axis)};
    val x0 = ir_op_n(b, "Split", "opset1", "num_splits=\"2\"", 2, in, 2, NULL);
    val x1 = {x0.layer, x0.port + 1};
    val o0 = ir_bin(b, "Subtract", ir_bin(b, "Multiply", x0, cs), ir_bin(b, "Multiply", x1, sn));
    val o1 = ir_bin(b, "Add", ir_bin(b, "Multiply", x0, sn), ir_bin(b, "Multiply", x1, cs));
    val cat[2] = {o0, o1};
    return ir_reshape(b, ir_concat(b, 3, 2, cat), 2, s2);
}

/* The whole model. Inputs: x [n, E], cos/sin [n, 1, hd/2, 1], mask [n, T] (T = past + n),
 * k<l>/v<l> [past, kvd]. Outputs: logits [1, V], k_new/v_new [n_layer * n, kvd]. */
static int ir_build(irb *b, const ember_model *m) {
    const em_hparams *hp = &m->hp;
    const int64_t E = hp->n_embd, hd = hp->head_dim, H = hp->n_head, Hkv = hp->n_head_kv;
    const int64_t kvd = Hkv * hd, qd = H * hd, group = H / Hkv, L = hp->n_layer;
    char shape[96];
    sb_printf(&b->xml, "<?xml version=\"1.0\"?>\n<net name=\"ember\" version=\"11\">\n<layers>\n");
    snprintf(shape, sizeof shape, "?,%lld", (long long)E);
    val x = ir_param(b, "x", shape);
    snprintf(shape, sizeof shape, "?,1,%lld,1", (long long)(hd / 2));
    val cs = ir_param(b, "cos", shape), sn = ir_param(b, "sin", shape);
    val mask = ir_param(b, "mask", "?,?");
    const int64_t reps[2] = {group, 1};
    val tin[2] = {mask, ir_i64(b, 2, reps)};
    val maskg = ir_op(b, "Tile", NULL, 2, tin); /* [group*n, T], row g*n + t = mask[t] */
    val *pk = (val *)calloc((size_t)L * 4, sizeof(val));
    if (!pk) return -1;
    val *pv = pk + L, *nk = pk + 2 * L, *nv = pk + 3 * L;
    snprintf(shape, sizeof shape, "?,%lld", (long long)kvd);
    for (int64_t l = 0; l < L; l++) {
        char name[32];
        snprintf(name, sizeof name, "k%lld", (long long)l);
        pk[l] = ir_param(b, name, shape);
        snprintf(name, sizeof name, "v%lld", (long long)l);
        pv[l] = ir_param(b, name, shape);
    }
    const int64_t perm[3] = {1, 0, 2};
    const int64_t q3[3] = {0, H, hd}, qg[3] = {Hkv, -1, hd}, kv3[3] = {-1, Hkv, hd}, hq[3] = {H, -1, hd},
                  back[2] = {0, qd};
    const float scale = hp->kq_scale;
    const val kq_scale = ir_f32(b, "1", &scale, 1);
    for (int64_t l = 0; l < L; l++) {
        const em_layer *Ly = &m->layers[l];
        val h = ir_rmsnorm(b, x, Ly->attn_norm, E, hp->rms_eps);
        val q = ir_rope(b, ir_matmul_t(b, h, ir_weight(b, &Ly->wq)), H, hd, cs, sn);
        nk[l] = ir_rope(b, ir_matmul_t(b, h, ir_weight(b, &Ly->wk)), Hkv, hd, cs, sn);
        nv[l] = ir_matmul_t(b, h, ir_weight(b, &Ly->wv));
        val kc[2] = {pk[l], nk[l]}, vc[2] = {pv[l], nv[l]};
        val K = ir_transpose(b, ir_reshape(b, ir_concat(b, 0, 2, kc), 3, kv3), 3, perm); /* [Hkv, T, hd] */
        val V = ir_transpose(b, ir_reshape(b, ir_concat(b, 0, 2, vc), 3, kv3), 3, perm);
        /* [H, n, hd] grouped as [Hkv, group*n, hd]: head h reads kv head h / group */
        val Q = ir_reshape(b, ir_transpose(b, ir_reshape(b, q, 3, q3), 3, perm), 3, qg);
        val s = ir_bin(b, "Add", ir_bin(b, "Multiply", ir_matmul_t(b, Q, K), kq_scale), maskg);
        val p = ir_op_n(b, "Softmax", "opset8", "axis=\"-1\"", 1, &s, 1, NULL);
        val pvin[2] = {p, V};
        val att = ir_op(b, "MatMul", "transpose_a=\"false\" transpose_b=\"false\"", 2, pvin); /* [Hkv, group*n, hd] */
        att = ir_reshape(b, ir_transpose(b, ir_reshape(b, att, 3, hq), 3, perm), 2, back);
        x = ir_bin(b, "Add", x, ir_matmul_t(b, att, ir_weight(b, &Ly->wo)));
        h = ir_rmsnorm(b, x, Ly->ffn_norm, E, hp->rms_eps);
        val g = ir_matmul_t(b, h, ir_weight(b, &Ly->w_gate));
        val u = ir_matmul_t(b, h, ir_weight(b, &Ly->w_up));
        g = ir_op_n(b, "Swish", "opset4", NULL, 1, &g, 1, NULL);
        x = ir_bin(b, "Add", x, ir_matmul_t(b, ir_bin(b, "Multiply", g, u), ir_weight(b, &Ly->w_down)));
    }
    /* only the last token's logits */
    const int64_t start = -1, stop = INT64_MAX, step = 1, axis0 = 0;
    val sl[5] = {x, ir_i64(b, 1, &start), ir_i64(b, 1, &stop), ir_i64(b, 1, &step), ir_i64(b, 1, &axis0)};
    val last = ir_op_n(b, "Slice", "opset8", NULL, 5, sl, 1, NULL);
    val h = ir_rmsnorm(b, last, m->output_norm, E, hp->rms_eps);
    val in[2] = {h, ir_weight(b, &m->output)};
    val logits = ir_op_n(b, "MatMul", "opset1", "transpose_a=\"false\" transpose_b=\"true\"", 2, in, 1, "logits");
    ir_result(b, logits);
    val kn = ir_op_n(b, "Concat", "opset1", "axis=\"0\"", (int)L, nk, 1, "k_new");
    val vn = ir_op_n(b, "Concat", "opset1", "axis=\"0\"", (int)L, nv, 1, "v_new");
    ir_result(b, kn);
    ir_result(b, vn);
    free(pk);
    sb_printf(&b->xml, "</layers>\n<edges>\n");
    if (!b->edges.oom && b->edges.n) sb_printf(&b->xml, "%.*s", (int)b->edges.n, b->edges.p);
    sb_printf(&b->xml, "</edges>\n</net>\n");
    return b->oom || b->xml.oom || b->edges.oom ? -1 : 0;
}

/* ---- the backend ------------------------------------------------------------------------- */

typedef struct ov_state {
    ov_api api;
    ov_core *core;
    ov_compiled_model *compiled;
    ov_infer_request *req;
    float *kc, *vc;         /* (n_layer, n_ctx, kvd) each, f32 */
    float *hx, *hcos, *hsin, *hmask; /* host inputs of one batch */
    uint8_t *blob;          /* the IR's weights: constants may keep pointing into it */
} ov_state;

static void ov_state_free(ov_state *s) {
    ov_api *a = &s->api;
    if (s->req) a->infer_request_free(s->req);
    if (s->compiled) a->compiled_model_free(s->compiled);
    if (s->core) a->core_free(s->core);
    if (a->lib) gpu_dlclose(a->lib);
    free(s->kc); free(s->vc); free(s->hx); free(s->hcos); free(s->hsin); free(s->hmask);
    free(s->blob);
    free(s);
}

/* A library named by its path loads the libraries it needs from its own folder: the default
 * on ELF systems (OpenVINO's RUNPATH is $ORIGIN); on Windows LoadLibrary looks there only
 * with LOAD_WITH_ALTERED_SEARCH_PATH (openvino_c.dll needs openvino.dll and TBB beside it). */
static void *ov_dlopen(const char *name) {
#if defined(_WIN32)
    if (strchr(name, '\\') || strchr(name, '/')) return (void *)LoadLibraryExA(name, NULL, LOAD_WITH_ALTERED_SEARCH_PATH);
#endif
    return gpu_dlopen(name);
}

/* Where the library was looked for, for the message when no place has it: the places, "; "
 * between them, and the first library file that is there but does not load (a missing
 * dependency, another architecture), with the loader's reason. */
typedef struct ov_search {
    char tried[1536];
    size_t n;
    char broken[400];
} ov_search;

#if defined(__GNUC__) || defined(__clang__)
__attribute__((format(printf, 2, 3)))
#endif
static void ov_tried(ov_search *s, const char *fmt, ...) {
    if (s->n + 3 >= sizeof s->tried) return;
    if (s->n) {
        memcpy(s->tried + s->n, "; ", 3);
        s->n += 2;
    }
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(s->tried + s->n, sizeof s->tried - s->n, fmt, ap);
    va_end(ap);
    if (k > 0) s->n += (size_t)k;
    if (s->n >= sizeof s->tried) s->n = sizeof s->tried - 1;
}

static void *ov_try(ov_search *s, const char *path) {
    void *lib = ov_dlopen(path);
#if defined(_WIN32)
    (void)s;
#else
    const char *err = lib ? NULL : dlerror();
    if (!lib && !s->broken[0] && access(path, F_OK) == 0) {
        /* glibc's reason starts with the path when the file itself is at fault */
        int k = err && !strncmp(err, path, strlen(path)) ? snprintf(s->broken, sizeof s->broken, "%s", err)
                : snprintf(s->broken, sizeof s->broken, "%s: %s", path, err ? err : "cannot be loaded");
        if (k < 0) s->broken[0] = 0;
    }
#endif
    return lib;
}

#ifndef _WIN32
/* -1, 0, 1 as a is an older, the same, a newer version than b: runs of digits compare as numbers
 * ("openvino_2026.10" after "openvino_2026.9"), and '/' before any other character, so that a
 * folder's name ends there ("openvino_2026.2.1/runtime" after "openvino_2026/runtime") */
static int ov_vercmp(const char *a, const char *b) {
    while (*a && *b) {
        if (*a >= '0' && *a <= '9' && *b >= '0' && *b <= '9') {
            while (*a == '0') a++;
            while (*b == '0') b++;
            size_t na = strspn(a, "0123456789"), nb = strspn(b, "0123456789");
            if (na != nb) return na < nb ? -1 : 1;
            int c = strncmp(a, b, na);
            if (c) return c < 0 ? -1 : 1;
            a += na;
            b += nb;
        } else {
            int ca = *a == '/' ? 0 : (unsigned char)*a, cb = *b == '/' ? 0 : (unsigned char)*b;
            if (ca != cb) return ca < cb ? -1 : 1;
            a++;
            b++;
        }
    }
    return (*a != 0) - (*b != 0);
}

static int ov_newest_first(const void *x, const void *y) {
    return ov_vercmp(*(char *const *)y, *(char *const *)x);
}

/* glob(dir + tail), dir taken literally; the matches newest first. 0 when something matched. */
static int ov_glob(const char *dir, const char *tail, glob_t *g) {
    char pat[1280];
    size_t n = 0;
    for (const char *c = dir; *c; c++) {
        if (n + 2 >= sizeof pat) return -1;
        if (strchr("*?[\\", *c)) pat[n++] = '\\';
        pat[n++] = *c;
    }
    if (n + strlen(tail) >= sizeof pat) return -1;
    memcpy(pat + n, tail, strlen(tail) + 1);
    memset(g, 0, sizeof *g);
    if (glob(pat, 0, NULL, g) != 0) {
        globfree(g);
        return -1;
    }
    qsort(g->gl_pathv, g->gl_pathc, sizeof *g->gl_pathv, ov_newest_first);
    return 0;
}
#endif

/* appends ", " (unless list is empty) and item to list, cut at its size */
static void ov_list_add(char *list, size_t cap, const char *item) {
    size_t n = strlen(list), k = strlen(item);
    if (n && n + 2 < cap) {
        memcpy(list + n, ", ", 2);
        n += 2;
    }
    if (n + k >= cap) k = n + 1 < cap ? cap - n - 1 : 0;
    memcpy(list + n, item, k);
    list[n + k] = 0;
}

/* the library in one folder: its names of ov_lib_names, then any other version there */
static void *ov_open_dir(ov_search *s, const char *dir) {
    char path[1280];
    void *lib = NULL;
    for (int i = 0; ov_lib_names[i] && !lib; i++) {
        if (snprintf(path, sizeof path, "%s" OV_SEP "%s", dir, ov_lib_names[i]) >= (int)sizeof path) return NULL;
        lib = ov_try(s, path);
    }
#ifndef _WIN32
    glob_t g;
    if (!lib && ov_glob(dir, "/" OV_LIB_GLOB, &g) == 0) {
        for (size_t i = 0; i < g.gl_pathc && !lib; i++) lib = ov_try(s, g.gl_pathv[i]);
        globfree(&g);
    }
#endif
    return lib;
}

/* the OpenVINO archive of $INTEL_OPENVINO_DIR (which its setupvars sets) */
static void *ov_open_archive(ov_search *s) {
    void *lib = NULL;
    const char *root = getenv("INTEL_OPENVINO_DIR");
    if (root && root[0]) {
        char dir[1100];
        if (snprintf(dir, sizeof dir, "%s%s", root, OV_ARCHIVE_DIR) >= (int)sizeof dir) dir[0] = 0;
        ov_tried(s, "%s", dir);
        if (dir[0]) lib = ov_open_dir(s, dir);
    } else {
        ov_tried(s, "$INTEL_OPENVINO_DIR" OV_ARCHIVE_DIR " (unset)");
    }
    return lib;
}

/* the loader's search path by name, then (POSIX) each folder of $LD_LIBRARY_PATH globbed */
static void *ov_open_search_path(ov_search *s) {
    void *lib = NULL;
    char names[256] = "";
    for (int i = 0; ov_lib_names[i] && !lib; i++) {
        lib = gpu_dlopen(ov_lib_names[i]);
        ov_list_add(names, sizeof names, ov_lib_names[i]);
    }
    if (lib) return lib;
#if defined(_WIN32)
    ov_tried(s, "%s on the DLL search path (PATH)", names);
#else
    const char *path = getenv(OV_SEARCH_PATH);
    if (path && path[0])
        ov_tried(s, "%s on the loader's path, and " OV_LIB_GLOB " in $" OV_SEARCH_PATH, names);
    else
        ov_tried(s, "%s on the loader's path (" OV_SEARCH_PATH " unset)", names);
    while (path && *path && !lib) {
        char dir[1100];
        size_t len = strcspn(path, ":");
        if (len && len < sizeof dir) {
            memcpy(dir, path, len);
            dir[len] = 0;
            lib = ov_open_dir(s, dir);
        }
        path += len + (path[len] == ':');
    }
#endif
    return lib;
}

#ifndef _WIN32
/* the archives unpacked as /opt/intel/openvino_<version> (OpenVINO's instructions), newest first */
static void *ov_open_opt(ov_search *s) {
    void *lib = NULL;
    glob_t g;
    if (ov_glob("/opt/intel/openvino", "*" OV_ARCHIVE_DIR, &g) == 0) {
        char names[512] = "";
        for (size_t i = 0; i < g.gl_pathc && !lib; i++) {
            char name[256];
            const char *folder = g.gl_pathv[i] + strlen("/opt/intel/");
            size_t len = strlen(folder) - strlen(OV_ARCHIVE_DIR);
            if (len < sizeof name) {
                memcpy(name, folder, len);
                name[len] = 0;
                ov_list_add(names, sizeof names, name);
            }
            lib = ov_open_dir(s, g.gl_pathv[i]);
        }
        if (!lib) ov_tried(s, "/opt/intel/{%s}" OV_ARCHIVE_DIR, names);
        globfree(&g);
    } else {
        ov_tried(s, "/opt/intel/openvino*" OV_ARCHIVE_DIR " (none)");
    }
    return lib;
}
#endif

/* adds prefix to the list unless it is there or the list is full */
static void ov_add_prefix(char (*pre)[1024], int *n, int max, const char *prefix) {
    if (!prefix || !prefix[0] || *n >= max || strlen(prefix) >= sizeof pre[0]) return;
    for (int i = 0; i < *n; i++)
        if (!strcmp(pre[i], prefix)) return;
    memcpy(pre[(*n)++], prefix, strlen(prefix) + 1);
}

/* `pip install openvino` next to a Python, found without running one: under the active
 * virtualenv or conda environment, (POSIX) the prefix of each python3 on $PATH and pip's --user
 * folder ~/.local */
static void *ov_open_pip(ov_search *s) {
    char pre[8][1024];
    int n = 0;
    ov_add_prefix(pre, &n, 8, getenv("VIRTUAL_ENV"));
    ov_add_prefix(pre, &n, 8, getenv("CONDA_PREFIX"));
#ifndef _WIN32
    const char *path = getenv("PATH");
    while (path && *path) {
        size_t len = strcspn(path, ":");
        char dir[1024];
        if (len && len + sizeof "/python3" < sizeof dir && path[0] == '/') {
            memcpy(dir, path, len);
            memcpy(dir + len, "/python3", sizeof "/python3");
            if (access(dir, X_OK) == 0) {
                dir[len] = 0;
                while (len > 1 && dir[len - 1] == '/') dir[--len] = 0;
                char *slash = strrchr(dir, '/');
                if (slash && slash != dir) {
                    *slash = 0;
                    ov_add_prefix(pre, &n, 7, dir);
                }
            }
        }
        path += len + (path[len] == ':');
    }
    const char *home = getenv("HOME");
    char local[1024] = "";
    if (home && home[0] && snprintf(local, sizeof local, "%s/.local", home) < (int)sizeof local)
        ov_add_prefix(pre, &n, 8, local);
#endif
    char list[1024] = "";
    void *lib = NULL;
    for (int i = 0; i < n && !lib; i++) {
#if defined(_WIN32)
        ov_list_add(list, sizeof list, pre[i]);
        char dir[1100];
        if (snprintf(dir, sizeof dir, "%s%s", pre[i], OV_PY_LIBS) < (int)sizeof dir) lib = ov_open_dir(s, dir);
#else
        ov_list_add(list, sizeof list, local[0] && !strcmp(pre[i], local) ? "~/.local" : pre[i]);
        glob_t g;
        if (ov_glob(pre[i], OV_PY_LIBS, &g) == 0) {
            for (size_t k = 0; k < g.gl_pathc && !lib; k++) lib = ov_open_dir(s, g.gl_pathv[k]);
            globfree(&g);
        }
#endif
    }
    if (!lib) ov_tried(s, "pip's openvino" OV_SEP "libs under %s", n ? list : "no virtualenv or python3 found");
    return lib;
}

/* the message when no place has the library: every place tried, then the fix; the places are
 * cut short rather than the fix, leaving room for the caller's "backend openvino cannot run: " */
static void ov_not_found(const ov_search *s, char *why, size_t whylen) {
    static const char fix[] = "; fix: `pip install openvino==2026.2.*` for the python3 on PATH, or set "
                              "EMBER_OPENVINO_LIB to its libs" OV_SEP OV_WHEEL_LIB;
    size_t room = whylen > 256 ? whylen - 32 : whylen;
    if (s->broken[0])
        snprintf(why, room, "OpenVINO runtime does not load (%s); also tried ", s->broken);
    else
        snprintf(why, room, "OpenVINO runtime not found; tried ");
    size_t used = strlen(why);
    size_t cap = room > used + sizeof fix ? room - used - sizeof fix : 0;
    if (s->n <= cap)
        snprintf(why + used, whylen - used, "%s", s->tried);
    else if (cap > 3)
        snprintf(why + used, whylen - used, "%.*s...", (int)(cap - 3), s->tried);
    used = strlen(why);
    snprintf(why + used, whylen - used, "%s", fix);
}

static int ov_open(ov_api *a, char *why, size_t whylen) {
    const char *env = getenv("EMBER_OPENVINO_LIB");
    if (env && env[0]) {
        a->lib = ov_dlopen(env);
        if (!a->lib) {
            snprintf(why, whylen, "EMBER_OPENVINO_LIB=%s cannot be opened (set it to the path of libopenvino_c)", env);
            return -1;
        }
    } else {
        ov_search s;
        memset(&s, 0, sizeof s);
        a->lib = ov_open_archive(&s);
        if (!a->lib) a->lib = ov_open_search_path(&s);
#ifndef _WIN32
        if (!a->lib) a->lib = ov_open_opt(&s);
#endif
        if (!a->lib) a->lib = ov_open_pip(&s);
        if (!a->lib) {
            ov_not_found(&s, why, whylen);
            return -1;
        }
    }
    const char *missing = ov_resolve(a);
    if (missing) {
        snprintf(why, whylen, "the OpenVINO C library has no %s (OpenVINO too old: 2026.2 or later is needed)", missing);
        gpu_dlclose(a->lib);
        a->lib = NULL;
        return -1;
    }
    return 0;
}

/* the device to compile for: $EMBER_OPENVINO_DEVICE, else GPU when listed, else CPU */
static void ov_pick_device(ov_state *s, char *dev, size_t devlen) {
    const char *env = getenv("EMBER_OPENVINO_DEVICE");
    if (env && env[0]) {
        snprintf(dev, devlen, "%s", env);
        return;
    }
    snprintf(dev, devlen, "CPU");
    ov_devices d;
    memset(&d, 0, sizeof d);
    if (s->api.core_get_available_devices(s->core, &d) != 0) return;
    for (size_t i = 0; i < d.size; i++)
        if (d.devices[i] && !strncmp(d.devices[i], "GPU", 3)) {
            snprintf(dev, devlen, "%s", d.devices[i]);
            break;
        }
    s->api.available_devices_free(&d);
}

static int ov_init(ember_context *ctx, char *why, size_t whylen) {
    const ember_model *m = ctx->model;
    const em_hparams *hp = &m->hp;
    if (hp->n_rot != hp->head_dim || hp->head_dim % 2 || hp->n_head % hp->n_head_kv) {
        snprintf(why, whylen, "the OpenVINO graph needs n_rot == head_dim (even) and n_head a multiple of n_head_kv "
                              "(this model: n_rot %d, head_dim %d, heads %d/%d)",
                 hp->n_rot, hp->head_dim, hp->n_head, hp->n_head_kv);
        return -1;
    }
    ov_state *s = (ov_state *)calloc(1, sizeof *s);
    if (!s) { snprintf(why, whylen, "out of host memory"); return -1; }
    ov_api *a = &s->api;
    if (ov_open(a, why, whylen)) { free(s); return -1; }
    ov_status st;
    if ((st = a->core_create(&s->core))) { ov_fail(a, st, "ov_core_create", why, whylen); goto fail; }
    char dev[64];
    ov_pick_device(s, dev, sizeof dev);
    const char *dev_env = getenv("EMBER_OPENVINO_DEVICE");
    if (ctx->backend_auto && !(dev_env && dev_env[0]) && !strncmp(dev, "CPU", 3)) {
        /* "auto" only for an OpenVINO GPU: on the CPU plugin ember's own path is faster */
        snprintf(why, whylen, "OpenVINO lists no GPU (its CPU plugin runs with --backend openvino "
                              "or EMBER_OPENVINO_DEVICE=CPU)");
        goto fail;
    }

    irb b;
    memset(&b, 0, sizeof b);
    if (ir_build(&b, m)) {
        snprintf(why, whylen, "out of host memory building the OpenVINO model (%zu MiB of weights)", b.blob_n >> 20);
        free(b.xml.p); free(b.edges.p); free(b.blob);
        goto fail;
    }
    free(b.edges.p);
    ov_model *model = NULL;
    ov_tensor *wt = NULL;
    int64_t wdim = (int64_t)b.blob_n;
    ov_shape wshape;
    if ((st = a->shape_create(1, &wdim, &wshape))) { ov_fail(a, st, "ov_shape_create", why, whylen); goto fail_ir; }
    st = a->tensor_create_from_host_ptr(OV_U8, wshape, b.blob, &wt);
    a->shape_free(&wshape);
    if (st) { ov_fail(a, st, "ov_tensor_create_from_host_ptr (weights)", why, whylen); goto fail_ir; }
    st = a->core_read_model_from_memory_buffer(s->core, b.xml.p, b.xml.n, wt, &model);
    if (st) { ov_fail(a, st, "reading the model IR", why, whylen); goto fail_ir; }
    char threads[16];
    snprintf(threads, sizeof threads, "%d", em_pool_size(ctx->pool));
    if (!strncmp(dev, "CPU", 3))
        /* no dynamic quantization of activations either: f32 activations as documented above */
        st = a->core_compile_model(s->core, model, dev, 8, &s->compiled, "INFERENCE_PRECISION_HINT", "f32",
                                   "PERFORMANCE_HINT", "LATENCY", "INFERENCE_NUM_THREADS", threads,
                                   "DYNAMIC_QUANTIZATION_GROUP_SIZE", "0");
    else
        st = a->core_compile_model(s->core, model, dev, 4, &s->compiled, "INFERENCE_PRECISION_HINT", "f32",
                                   "PERFORMANCE_HINT", "LATENCY");
    a->model_free(model);
    if (st) {
        char what[128];
        snprintf(what, sizeof what, "compiling the model for OpenVINO device %s", dev);
        ov_fail(a, st, what, why, whylen);
        goto fail_ir;
    }
    /* the weights tensor wraps b.blob without a copy, and OpenVINO may keep constants that
     * point into it (a plugin that needs no repacking uses them in place): the blob lives as
     * long as the compiled model */
    a->tensor_free(wt);
    wt = NULL;
    free(b.xml.p);
    s->blob = b.blob;
    if ((st = a->compiled_model_create_infer_request(s->compiled, &s->req))) {
        ov_fail(a, st, "ov_compiled_model_create_infer_request", why, whylen);
        goto fail;
    }

    const size_t kvd = (size_t)hp->n_head_kv * (size_t)hp->head_dim, B = ctx->n_batch, C = ctx->n_ctx;
    s->kc = (float *)calloc((size_t)hp->n_layer * C * kvd, sizeof(float));
    s->vc = (float *)calloc((size_t)hp->n_layer * C * kvd, sizeof(float));
    s->hx = (float *)malloc(B * (size_t)hp->n_embd * sizeof(float));
    s->hcos = (float *)malloc(B * (size_t)hp->head_dim / 2 * sizeof(float));
    s->hsin = (float *)malloc(B * (size_t)hp->head_dim / 2 * sizeof(float));
    s->hmask = (float *)malloc(B * C * sizeof(float));
    ctx->logits = (float *)calloc((size_t)hp->n_vocab, sizeof(float));
    if (!s->kc || !s->vc || !s->hx || !s->hcos || !s->hsin || !s->hmask || !ctx->logits) {
        snprintf(why, whylen, "out of host memory for a KV cache of %zu tokens", C);
        goto fail;
    }

    char *full = NULL, *prec = NULL;
    ov_version ver;
    memset(&ver, 0, sizeof ver);
    a->get_openvino_version(&ver);
    const char *devname = dev;
    if (a->core_get_property(s->core, dev, "FULL_DEVICE_NAME", &full) == 0 && full) devname = full;
    a->compiled_model_get_property(s->compiled, "INFERENCE_PRECISION_HINT", &prec);
    snprintf(ctx->device, sizeof ctx->device, "%s (OpenVINO %s, %s plugin, %s)", devname,
             ver.build_number ? ver.build_number : "?", dev, prec ? prec : "?");
    if (full) a->free_str(full);
    if (prec) a->free_str(prec);
    if (ver.build_number) a->version_free(&ver);
    ctx->gpu = s;
    return 0;

fail_ir:
    if (wt) a->tensor_free(wt);
    free(b.xml.p); free(b.blob);
fail:
    free(ctx->logits);
    ctx->logits = NULL;
    ov_state_free(s);
    return -1;
}

static void ov_release(ember_context *ctx) {
    if (ctx->gpu) ov_state_free((ov_state *)ctx->gpu);
    ctx->gpu = NULL;
    free(ctx->logits);
    ctx->logits = NULL;
}

/* a tensor over host memory, set as the input called name */
static int ov_set(ov_state *s, const char *name, float *data, int rank, const int64_t *dims, char *why, size_t whylen) {
    ov_api *a = &s->api;
    ov_shape shape;
    ov_tensor *t = NULL;
    ov_status st = a->shape_create(rank, dims, &shape);
    if (st) return ov_fail(a, st, "ov_shape_create", why, whylen);
    st = a->tensor_create_from_host_ptr(OV_F32, shape, data, &t);
    a->shape_free(&shape);
    if (st) return ov_fail(a, st, "ov_tensor_create_from_host_ptr", why, whylen);
    st = a->infer_request_set_tensor(s->req, name, t);
    a->tensor_free(t); /* the request keeps its own reference */
    if (st) {
        char what[64];
        snprintf(what, sizeof what, "setting input %s", name);
        return ov_fail(a, st, what, why, whylen);
    }
    return 0;
}

/* the data of output name, which must hold `count` floats */
static const float *ov_get(ov_state *s, const char *name, size_t count, ov_tensor **t, char *why, size_t whylen) {
    ov_api *a = &s->api;
    void *data = NULL;
    ov_shape shape;
    ov_status st = a->infer_request_get_tensor(s->req, name, t);
    if (st) { ov_fail(a, st, name, why, whylen); return NULL; }
    if ((st = a->tensor_get_shape(*t, &shape))) { ov_fail(a, st, "ov_tensor_get_shape", why, whylen); return NULL; }
    size_t have = 1;
    for (int64_t i = 0; i < shape.rank; i++) have *= (size_t)shape.dims[i];
    a->shape_free(&shape);
    if (have != count) {
        snprintf(why, whylen, "OpenVINO output %s has %zu values, expected %zu", name, have, count);
        return NULL;
    }
    if ((st = a->tensor_data(*t, &data))) { ov_fail(a, st, "ov_tensor_data", why, whylen); return NULL; }
    return (const float *)data;
}

static ember_status ov_eval(ember_context *ctx, const int32_t *tokens, uint32_t n_tokens, char *why, size_t whylen) {
    ov_state *s = (ov_state *)ctx->gpu;
    const ember_model *m = ctx->model;
    const em_hparams *hp = &m->hp;
    const int64_t E = hp->n_embd, hd = hp->head_dim, n = n_tokens, P = ctx->n_past, T = P + n;
    const int64_t kvd = (int64_t)hp->n_head_kv * hd, L = hp->n_layer, C = ctx->n_ctx;
    for (int64_t t = 0; t < n; t++)
        em_dequantize_row(m->tok_embd.type, (const uint8_t *)m->tok_embd.data + (size_t)tokens[t] * m->tok_embd.row_bytes,
                          s->hx + t * E, E);
    float cache[1024];
    if (hp->n_rot > (int)(sizeof cache / sizeof cache[0])) {
        snprintf(why, whylen, "n_rot %d is larger than this backend's rope table", hp->n_rot);
        return EMBER_ERR_UNSUPPORTED;
    }
    for (int64_t t = 0; t < n; t++) {
        em_rope_cache(m, P + t, cache);
        for (int64_t i = 0; i < hd / 2; i++) {
            s->hcos[t * (hd / 2) + i] = cache[2 * i];
            s->hsin[t * (hd / 2) + i] = cache[2 * i + 1];
        }
        for (int64_t j = 0; j < T; j++) s->hmask[t * T + j] = j <= P + t ? 0.0f : -INFINITY;
    }
    const int64_t dx[2] = {n, E}, dr[4] = {n, 1, hd / 2, 1}, dm[2] = {n, T}, dkv[2] = {P, kvd};
    if (ov_set(s, "x", s->hx, 2, dx, why, whylen) || ov_set(s, "cos", s->hcos, 4, dr, why, whylen) ||
        ov_set(s, "sin", s->hsin, 4, dr, why, whylen) || ov_set(s, "mask", s->hmask, 2, dm, why, whylen))
        return EMBER_ERR_INTERNAL;
    for (int64_t l = 0; l < L; l++) {
        char name[32];
        snprintf(name, sizeof name, "k%lld", (long long)l);
        if (ov_set(s, name, s->kc + (size_t)(l * C * kvd), 2, dkv, why, whylen)) return EMBER_ERR_INTERNAL;
        snprintf(name, sizeof name, "v%lld", (long long)l);
        if (ov_set(s, name, s->vc + (size_t)(l * C * kvd), 2, dkv, why, whylen)) return EMBER_ERR_INTERNAL;
    }
    ov_status st = s->api.infer_request_infer(s->req);
    if (st) {
        ov_fail(&s->api, st, "ov_infer_request_infer", why, whylen);
        return EMBER_ERR_INTERNAL;
    }
    ov_tensor *tl = NULL, *tk = NULL, *tv = NULL;
    ember_status ret = EMBER_ERR_INTERNAL;
    const float *lg = ov_get(s, "logits", (size_t)hp->n_vocab, &tl, why, whylen);
    const float *kn = lg ? ov_get(s, "k_new", (size_t)(L * n * kvd), &tk, why, whylen) : NULL;
    const float *vn = kn ? ov_get(s, "v_new", (size_t)(L * n * kvd), &tv, why, whylen) : NULL;
    if (vn) {
        memcpy(ctx->logits, lg, (size_t)hp->n_vocab * sizeof(float));
        for (int64_t l = 0; l < L; l++) {
            memcpy(s->kc + (size_t)((l * C + P) * kvd), kn + (size_t)(l * n * kvd), (size_t)(n * kvd) * sizeof(float));
            memcpy(s->vc + (size_t)((l * C + P) * kvd), vn + (size_t)(l * n * kvd), (size_t)(n * kvd) * sizeof(float));
        }
        ret = EMBER_OK;
    }
    if (tl) s->api.tensor_free(tl);
    if (tk) s->api.tensor_free(tk);
    if (tv) s->api.tensor_free(tv);
    return ret;
}

const em_backend em_backend_openvino = {"openvino", ov_init, ov_eval, ov_release};

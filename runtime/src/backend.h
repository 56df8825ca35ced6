/* backend.h - compute backends other than the CPU, chosen when a context is created.
 *
 * A GPU backend is compiled in with its CMake option (EMBER_CUDA, EMBER_HIP) and opens its
 * vendor runtime at run time (dlopen / LoadLibrary): nothing links against a toolkit, so a
 * machine without the GPU or its driver still loads ember and runs on the CPU. Each backend
 * runs a whole token step on its device (weights uploaded once per context, KV cache on the
 * device) and leaves the last token's logits in ctx->logits.
 *
 * Selection (ember_context_params.backend, else $EMBER_BACKEND, else "auto"):
 *   "cpu"            the CPU path of llama.c
 *   "cuda", "hip"    that backend, or an error naming why it cannot run
 *   "auto"           the first compiled-in GPU backend that starts; when none does, one line
 *                    on stderr per backend tried ("ember: cuda: libcuda.so.1 not found;
 *                    using cpu") and the CPU
 */
#ifndef EMBER_BACKEND_H
#define EMBER_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "ember.h"

typedef struct em_backend {
    const char *name; /* "cuda" */
    /* Open the runtime and a device, upload the weights, allocate the device KV cache and
     * scratch, and ctx->logits on the host. 0 on success; else why (a sentence, no newline)
     * and nothing left allocated. ctx->model, n_ctx and n_batch are set. */
    int (*init)(ember_context *ctx, char *why, size_t whylen);
    /* Evaluate n tokens at positions ctx->n_past..; logits of the last one into ctx->logits.
     * Does not advance n_past (the caller does). */
    ember_status (*eval)(ember_context *ctx, const int32_t *tokens, uint32_t n, char *why, size_t whylen);
    void (*release)(ember_context *ctx);
} em_backend;

/* The GPU backends compiled into this build, in the order "auto" tries them. */
extern const em_backend *const em_gpu_backends[];
extern const int em_n_gpu_backends;

/* One per backend source (backend_cuda.c, ...), present only with its CMake option
 * (EMBER_CUDA, EMBER_HIP, EMBER_VULKAN, EMBER_OPENCL, EMBER_OPENVINO, EMBER_SYCL). */
extern const em_backend em_backend_cuda;
extern const em_backend em_backend_hip;
extern const em_backend em_backend_vulkan;
extern const em_backend em_backend_opencl;
extern const em_backend em_backend_openvino;
extern const em_backend em_backend_sycl;

/* "cpu, cuda" ...: the names this build accepts besides "auto" */
const char *em_backend_names(void);

#endif /* EMBER_BACKEND_H */

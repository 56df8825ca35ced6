/* backend.h - compute backends other than the CPU, chosen when a context is created.
 *
 * The backends ember knows: cpu (always there), and cuda, hip, vulkan, opencl, openvino and
 * sycl, each compiled in with its CMake option (EMBER_CUDA, EMBER_HIP, EMBER_VULKAN,
 * EMBER_OPENCL, EMBER_OPENVINO, EMBER_SYCL). A GPU backend opens its vendor runtime at run time
 * (dlopen / LoadLibrary): nothing links against a toolkit, so a machine without the GPU or its
 * driver still loads ember and runs on the CPU. Each backend runs a whole token step on its
 * device (weights uploaded once per context, KV cache on the device) and leaves the last
 * token's logits in ctx->logits.
 *
 * Selection (ember_context_params.backend, else $EMBER_BACKEND, else "auto"):
 *   "cpu"            the CPU path of llama.c
 *   "cuda", "hip", "vulkan", "opencl", "openvino", "sycl"
 *                    that backend, or an error naming why it cannot run
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

/* THE list of GPU/accelerator backends, one row each, in the order "auto" tries them:
 *
 *     X(name, enable macro, auto may pick it)
 *
 * name is how --backend and $EMBER_BACKEND spell it; the backend's source defines
 * `const em_backend em_backend_<name>` and is compiled only when CMake defines the enable
 * macro (its option's name; CMake defines it for backend.c alone, with no value, i.e. 1).
 * Everything else is derived from this table in backend.c: em_backend_table, the auto order
 * (em_gpu_backends), lookup by name, the name list and the "not in this build" message.
 * Adding a backend is one row here, its source file and its CMake option. */
#define EM_BACKEND_TABLE(X)                \
    X(cuda,     EMBER_CUDA,     1)         \
    X(hip,      EMBER_HIP,      1)         \
    X(vulkan,   EMBER_VULKAN,   1)         \
    X(opencl,   EMBER_OPENCL,   1)         \
    X(openvino, EMBER_OPENVINO, 1)         \
    X(sycl,     EMBER_SYCL,     1)

/* One per row, defined by the backend's source (backend_cuda.c, ...): present only in a build
 * with its enable macro. */
#define EM_BACKEND_DECLARE(name, enable, auto_pick) extern const em_backend em_backend_##name;
EM_BACKEND_TABLE(EM_BACKEND_DECLARE)
#undef EM_BACKEND_DECLARE

/* A row of EM_BACKEND_TABLE as data. */
typedef struct em_backend_row {
    const char *name;      /* "cuda" */
    const em_backend *ops; /* NULL: not in this build */
    int auto_pick;         /* "auto" may try it (when built in) */
} em_backend_row;

/* Every row of EM_BACKEND_TABLE, built in or not, in its order. */
extern const em_backend_row em_backend_table[];
extern const int em_n_backend_table;

/* The GPU backends compiled into this build that "auto" tries, in the order it tries them. */
extern const em_backend *const em_gpu_backends[];
extern const int em_n_gpu_backends;

/* The backend of this build called name (explicit selection: whether or not "auto" may pick
 * it); NULL when it is not in this build or unknown ("cpu" and "auto" included: they are not
 * em_backends). */
const em_backend *em_backend_find(const char *name);

/* "cpu, cuda" ...: the names this build accepts besides "auto" */
const char *em_backend_names(void);

/* Writes "backend '<name>' is not in this build (it has: auto, <em_backend_names()>)", the
 * message of a name em_backend_find does not know, into msg (truncated to msglen). */
void em_backend_not_in_build(const char *name, char *msg, size_t msglen);

#endif /* EMBER_BACKEND_H */

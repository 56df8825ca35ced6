/* backend.c - which GPU backends this build has (backend.h).
 *
 * Adding a backend: one `#if defined(EMBER_X)` line in the table below (the order is the
 * order "auto" tries them), its EM_NAME_ macro below, its extern in backend.h, and its CMake
 * option. */
#include "backend.h"

#include <stddef.h>

const em_backend *const em_gpu_backends[] = {
#if defined(EMBER_CUDA)
    &em_backend_cuda,
#endif
#if defined(EMBER_HIP)
    &em_backend_hip,
#endif
#if defined(EMBER_VULKAN)
    &em_backend_vulkan,
#endif
#if defined(EMBER_OPENCL)
    &em_backend_opencl,
#endif
#if defined(EMBER_OPENVINO)
    &em_backend_openvino,
#endif
#if defined(EMBER_SYCL)
    &em_backend_sycl,
#endif
    NULL
};

const int em_n_gpu_backends = (int)(sizeof em_gpu_backends / sizeof em_gpu_backends[0]) - 1;

/* The names, as a constant built by the preprocessor from the same options as the table. */
#if defined(EMBER_CUDA)
#define EM_NAME_CUDA ", cuda"
#else
#define EM_NAME_CUDA ""
#endif
#if defined(EMBER_HIP)
#define EM_NAME_HIP ", hip"
#else
#define EM_NAME_HIP ""
#endif
#if defined(EMBER_VULKAN)
#define EM_NAME_VULKAN ", vulkan"
#else
#define EM_NAME_VULKAN ""
#endif
#if defined(EMBER_OPENCL)
#define EM_NAME_OPENCL ", opencl"
#else
#define EM_NAME_OPENCL ""
#endif
#if defined(EMBER_OPENVINO)
#define EM_NAME_OPENVINO ", openvino"
#else
#define EM_NAME_OPENVINO ""
#endif
#if defined(EMBER_SYCL)
#define EM_NAME_SYCL ", sycl"
#else
#define EM_NAME_SYCL ""
#endif

const char *em_backend_names(void) {
    return "cpu" EM_NAME_CUDA EM_NAME_HIP EM_NAME_VULKAN EM_NAME_OPENCL EM_NAME_OPENVINO EM_NAME_SYCL;
}

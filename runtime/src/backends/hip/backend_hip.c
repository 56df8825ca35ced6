/* backend_hip.c - the HIP backend for AMD GPUs: the HIP runtime (libamdhip64.so /
 * amdhip64_*.dll), opened at run time, and the code-object bundle for a gfx list that the
 * HIP build embeds in em_hip_blobs[] (hipcc --genco from runtime/src/backends/hip/ember_kernels.hip, the
 * same kernels as CUDA). hipModuleLoadData picks the device's code object from the bundle.
 * No HIP header: the entry points used are declared here. */
#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L /* dlopen */
#endif
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "backend.h"
#include "gpu_blobs.h"
#include "gpu_dl.h"
#include "model.h"

typedef int hipError_t; /* hipSuccess = 0 */
typedef void *hipModule_t;
typedef void *hipFunction_t;

#if defined(_WIN32)
static const char *const hip_libs[] = {"amdhip64_7.dll", "amdhip64_6.dll", "amdhip64.dll", NULL};
#else
static const char *const hip_libs[] = {"libamdhip64.so.7", "libamdhip64.so.6", "libamdhip64.so", NULL};
#endif

struct gpu_api {
    void *lib;
    hipModule_t mod;
    hipError_t (*Init)(unsigned);
    hipError_t (*GetDeviceCount)(int *);
    hipError_t (*SetDevice)(int);
    hipError_t (*DeviceGetName)(char *, int, int);
    hipError_t (*DriverGetVersion)(int *);
    hipError_t (*DeviceSynchronize)(void);
    hipError_t (*ModuleLoadData)(hipModule_t *, const void *);
    hipError_t (*ModuleUnload)(hipModule_t);
    hipError_t (*ModuleGetFunction)(hipFunction_t *, hipModule_t, const char *);
    hipError_t (*Malloc)(void **, size_t);
    hipError_t (*Free)(void *);
    hipError_t (*MemcpyHtoD)(void *, const void *, size_t);
    hipError_t (*MemcpyDtoH)(void *, void *, size_t);
    hipError_t (*ModuleLaunchKernel)(hipFunction_t, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                                     unsigned, void *, void **, void **);
    const char *(*GetErrorString)(hipError_t);
};

static const char *hip_resolve(struct gpu_api *a) {
    GPU_SYM(a->lib, a->Init, "hipInit");
    GPU_SYM(a->lib, a->GetDeviceCount, "hipGetDeviceCount");
    GPU_SYM(a->lib, a->SetDevice, "hipSetDevice");
    GPU_SYM(a->lib, a->DeviceGetName, "hipDeviceGetName");
    GPU_SYM(a->lib, a->DriverGetVersion, "hipDriverGetVersion");
    GPU_SYM(a->lib, a->DeviceSynchronize, "hipDeviceSynchronize");
    GPU_SYM(a->lib, a->ModuleLoadData, "hipModuleLoadData");
    GPU_SYM(a->lib, a->ModuleUnload, "hipModuleUnload");
    GPU_SYM(a->lib, a->ModuleGetFunction, "hipModuleGetFunction");
    GPU_SYM(a->lib, a->Malloc, "hipMalloc");
    GPU_SYM(a->lib, a->Free, "hipFree");
    GPU_SYM(a->lib, a->MemcpyHtoD, "hipMemcpyHtoD");
    GPU_SYM(a->lib, a->MemcpyDtoH, "hipMemcpyDtoH");
    GPU_SYM(a->lib, a->ModuleLaunchKernel, "hipModuleLaunchKernel");
    GPU_SYM(a->lib, a->GetErrorString, "hipGetErrorString");
    return NULL;
}

static const char *gpu_errstr(struct gpu_api *a, int rc) {
    const char *s = a->GetErrorString ? a->GetErrorString(rc) : NULL;
    return s ? s : "unknown HIP error";
}

static void gpu_close(struct gpu_api *a) {
    if (a->mod) a->ModuleUnload(a->mod);
    if (a->lib) gpu_dlclose(a->lib);
    memset(a, 0, sizeof *a);
}

static int gpu_open(struct gpu_api *a, char *why, size_t whylen, char *device, size_t devlen) {
    memset(a, 0, sizeof *a);
    for (int i = 0; hip_libs[i] && !a->lib; i++) a->lib = gpu_dlopen(hip_libs[i]);
    if (!a->lib) {
        snprintf(why, whylen, "libamdhip64 (ROCm 6/7 HIP runtime) not found");
        return -1;
    }
    const char *missing = hip_resolve(a);
    if (missing) {
        snprintf(why, whylen, "the HIP runtime has no %s", missing);
        gpu_close(a);
        return -1;
    }
    int count = 0, drv = 0, rc = a->Init(0);
    if (!rc) rc = a->GetDeviceCount(&count);
    if (rc || count == 0) {
        snprintf(why, whylen, "no HIP device (%s)", rc ? gpu_errstr(a, rc) : "the runtime sees none");
        gpu_close(a);
        return -1;
    }
    char name[128] = "";
    if ((rc = a->SetDevice(0)) || (rc = a->DeviceGetName(name, (int)sizeof name, 0))) {
        snprintf(why, whylen, "cannot open HIP device 0: %s", gpu_errstr(a, rc));
        gpu_close(a);
        return -1;
    }
    a->DriverGetVersion(&drv);
    if (em_hip_n_blobs == 0) {
        snprintf(why, whylen, "%s: this build has no HIP kernels (built without hipcc)", name);
        gpu_close(a);
        return -1;
    }
    if ((rc = a->ModuleLoadData(&a->mod, em_hip_blobs[0].data))) {
        snprintf(why, whylen, "%s: no code object for this GPU in the build (%s): %s", name, em_hip_blobs[0].arch,
                 gpu_errstr(a, rc));
        gpu_close(a);
        return -1;
    }
    snprintf(device, devlen, "%s (HIP runtime %d)", name, drv);
    return 0;
}

static int gpu_alloc(struct gpu_api *a, uint64_t *p, size_t bytes) {
    void *d = NULL;
    int rc = a->Malloc(&d, bytes ? bytes : 1);
    *p = rc ? 0 : (uint64_t)(uintptr_t)d;
    return rc;
}
static void gpu_free(struct gpu_api *a, uint64_t p) { if (p && a->Free) a->Free((void *)(uintptr_t)p); }
static int gpu_h2d(struct gpu_api *a, uint64_t d, const void *s, size_t n) { return a->MemcpyHtoD((void *)(uintptr_t)d, s, n); }
static int gpu_d2h(struct gpu_api *a, void *d, uint64_t s, size_t n) { return a->MemcpyDtoH(d, (void *)(uintptr_t)s, n); }
static int gpu_fn(struct gpu_api *a, const char *name, void **fn) {
    hipFunction_t f = NULL;
    int rc = a->ModuleGetFunction(&f, a->mod, name);
    *fn = f;
    return rc;
}
static int gpu_launch(struct gpu_api *a, void *fn, unsigned gx, unsigned gy, unsigned bx, unsigned by, void **args) {
    return a->ModuleLaunchKernel((hipFunction_t)fn, gx, gy, 1, bx, by, 1, 0, NULL, args, NULL);
}
static int gpu_sync(struct gpu_api *a) { return a->DeviceSynchronize(); }

#include "backend_gpu.inc"

const em_backend em_backend_hip = {"hip", gpu_init, gpu_eval, gpu_release};

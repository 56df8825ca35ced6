/* backend_cuda.c - the CUDA backend: the driver API (libcuda.so.1 / nvcuda.dll), opened at
 * run time, and the kernels kiln compiled into em_cuda_blobs[] (cubins per SM architecture
 * plus PTX for the newest). No CUDA header and no CUDA runtime library: the few driver
 * entry points used are declared here with their documented C signatures, and the device
 * code is loaded with cuModuleLoadData. */
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

typedef int CUresult;          /* CUDA_SUCCESS = 0 */
typedef int CUdevice;
typedef void *CUcontext;
typedef void *CUmodule;
typedef void *CUfunction;
typedef unsigned long long CUdeviceptr;

enum { CU_ATTR_CC_MAJOR = 75, CU_ATTR_CC_MINOR = 76 };

#if defined(_WIN32)
#define CUAPI __stdcall
static const char *const cuda_libs[] = {"nvcuda.dll", NULL};
#else
#define CUAPI
static const char *const cuda_libs[] = {"libcuda.so.1", NULL};
#endif

struct gpu_api {
    void *lib;
    CUcontext ctx;
    CUdevice dev;
    CUmodule mod;
    CUresult (CUAPI *Init)(unsigned);
    CUresult (CUAPI *DriverGetVersion)(int *);
    CUresult (CUAPI *DeviceGetCount)(int *);
    CUresult (CUAPI *DeviceGet)(CUdevice *, int);
    CUresult (CUAPI *DeviceGetName)(char *, int, CUdevice);
    CUresult (CUAPI *DeviceGetAttribute)(int *, int, CUdevice);
    CUresult (CUAPI *PrimaryCtxRetain)(CUcontext *, CUdevice);
    CUresult (CUAPI *PrimaryCtxRelease)(CUdevice);
    CUresult (CUAPI *CtxSetCurrent)(CUcontext);
    CUresult (CUAPI *CtxSynchronize)(void);
    CUresult (CUAPI *ModuleLoadData)(CUmodule *, const void *);
    CUresult (CUAPI *ModuleUnload)(CUmodule);
    CUresult (CUAPI *ModuleGetFunction)(CUfunction *, CUmodule, const char *);
    CUresult (CUAPI *MemAlloc)(CUdeviceptr *, size_t);
    CUresult (CUAPI *MemFree)(CUdeviceptr);
    CUresult (CUAPI *MemcpyHtoD)(CUdeviceptr, const void *, size_t);
    CUresult (CUAPI *MemcpyDtoH)(void *, CUdeviceptr, size_t);
    CUresult (CUAPI *LaunchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                                   unsigned, void *, void **, void **);
    CUresult (CUAPI *GetErrorString)(CUresult, const char **);
};

/* backend_gpu.inc's GPU_SYM returns the missing name from the function that uses it */
static const char *cuda_resolve(struct gpu_api *a) {
    GPU_SYM(a->lib, a->Init, "cuInit");
    GPU_SYM(a->lib, a->DriverGetVersion, "cuDriverGetVersion");
    GPU_SYM(a->lib, a->DeviceGetCount, "cuDeviceGetCount");
    GPU_SYM(a->lib, a->DeviceGet, "cuDeviceGet");
    GPU_SYM(a->lib, a->DeviceGetName, "cuDeviceGetName");
    GPU_SYM(a->lib, a->DeviceGetAttribute, "cuDeviceGetAttribute");
    GPU_SYM(a->lib, a->PrimaryCtxRetain, "cuDevicePrimaryCtxRetain");
    GPU_SYM(a->lib, a->PrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2");
    GPU_SYM(a->lib, a->CtxSetCurrent, "cuCtxSetCurrent");
    GPU_SYM(a->lib, a->CtxSynchronize, "cuCtxSynchronize");
    GPU_SYM(a->lib, a->ModuleLoadData, "cuModuleLoadData");
    GPU_SYM(a->lib, a->ModuleUnload, "cuModuleUnload");
    GPU_SYM(a->lib, a->ModuleGetFunction, "cuModuleGetFunction");
    GPU_SYM(a->lib, a->MemAlloc, "cuMemAlloc_v2");
    GPU_SYM(a->lib, a->MemFree, "cuMemFree_v2");
    GPU_SYM(a->lib, a->MemcpyHtoD, "cuMemcpyHtoD_v2");
    GPU_SYM(a->lib, a->MemcpyDtoH, "cuMemcpyDtoH_v2");
    GPU_SYM(a->lib, a->LaunchKernel, "cuLaunchKernel");
    GPU_SYM(a->lib, a->GetErrorString, "cuGetErrorString");
    return NULL;
}

static const char *gpu_errstr(struct gpu_api *a, int rc);
static void gpu_close(struct gpu_api *a);

/* The image for compute capability cc: the newest cubin of the same major version not newer
 * than the device (cubins run on later minor versions only), else the newest PTX not newer
 * than the device (JIT-compiled by the driver). NULL when the build has neither. */
const em_gpu_blob *em_cuda_pick_blob(int cc, int ptx_only);
const em_gpu_blob *em_cuda_pick_blob(int cc, int ptx_only) {
    const em_gpu_blob *best = NULL;
    for (int i = 0; i < em_cuda_n_blobs && !ptx_only; i++) {
        const em_gpu_blob *b = &em_cuda_blobs[i];
        if (b->kind == EM_BLOB_CUBIN && b->sm / 10 == cc / 10 && b->sm <= cc && (!best || b->sm > best->sm)) best = b;
    }
    if (best) return best;
    for (int i = 0; i < em_cuda_n_blobs; i++) {
        const em_gpu_blob *b = &em_cuda_blobs[i];
        if (b->kind == EM_BLOB_PTX && b->sm <= cc && (!best || b->sm > best->sm)) best = b;
    }
    return best;
}

static void cuda_archs(char *out, size_t len) {
    size_t used = 0;
    out[0] = 0;
    for (int i = 0; i < em_cuda_n_blobs && used + 1 < len; i++) {
        int k = snprintf(out + used, len - used, "%s%s", i ? " " : "", em_cuda_blobs[i].arch);
        if (k < 0) break;
        used += (size_t)k;
    }
    if (!em_cuda_n_blobs) snprintf(out, len, "none: built without a CUDA device compiler");
}

static int gpu_open(struct gpu_api *a, char *why, size_t whylen, char *device, size_t devlen) {
    memset(a, 0, sizeof *a);
    for (int i = 0; cuda_libs[i] && !a->lib; i++) a->lib = gpu_dlopen(cuda_libs[i]);
    if (!a->lib) {
        snprintf(why, whylen, "%s not found (no NVIDIA driver)", cuda_libs[0]);
        return -1;
    }
    const char *missing = cuda_resolve(a);
    if (missing) {
        snprintf(why, whylen, "%s has no %s (driver too old)", cuda_libs[0], missing);
        gpu_close(a);
        return -1;
    }
    int rc = a->Init(0), count = 0, drv = 0, major = 0, minor = 0;
    if (!rc) rc = a->DeviceGetCount(&count);
    if (rc || count == 0) {
        snprintf(why, whylen, "no CUDA device (%s)", rc ? gpu_errstr(a, rc) : "the driver sees none");
        gpu_close(a);
        return -1;
    }
    a->DriverGetVersion(&drv);
    char name[128] = "";
    if ((rc = a->DeviceGet(&a->dev, 0)) || (rc = a->DeviceGetName(name, (int)sizeof name, a->dev)) ||
        (rc = a->DeviceGetAttribute(&major, CU_ATTR_CC_MAJOR, a->dev)) ||
        (rc = a->DeviceGetAttribute(&minor, CU_ATTR_CC_MINOR, a->dev))) {
        snprintf(why, whylen, "cannot query CUDA device 0: %s", gpu_errstr(a, rc));
        gpu_close(a);
        return -1;
    }
    if ((rc = a->PrimaryCtxRetain(&a->ctx, a->dev)) || (rc = a->CtxSetCurrent(a->ctx))) {
        snprintf(why, whylen, "cannot create a context on %s: %s", name, gpu_errstr(a, rc));
        gpu_close(a);
        return -1;
    }
    const int cc = major * 10 + minor;
    const em_gpu_blob *b = em_cuda_pick_blob(cc, 0);
    if (b) {
        rc = a->ModuleLoadData(&a->mod, b->data);
        if (rc && b->kind == EM_BLOB_CUBIN) { /* try the PTX before giving up */
            const em_gpu_blob *p = em_cuda_pick_blob(cc, 1);
            if (p && !(rc = a->ModuleLoadData(&a->mod, p->data))) b = p;
        }
    }
    if (!b || rc) {
        char archs[256];
        cuda_archs(archs, sizeof archs);
        if (!b)
            snprintf(why, whylen, "%s (sm_%d) has no kernels in this build (it has: %s)", name, cc, archs);
        else
            snprintf(why, whylen, "cannot load the %s kernels on %s (driver %d.%d): %s", b->arch, name, drv / 1000,
                     (drv % 1000) / 10, gpu_errstr(a, rc));
        gpu_close(a);
        return -1;
    }
    snprintf(device, devlen, "%s (sm_%d, %s %s, driver %d.%d)", name, cc, b->kind == EM_BLOB_PTX ? "PTX" : "cubin",
             b->arch, drv / 1000, (drv % 1000) / 10);
    return 0;
}

static void gpu_close(struct gpu_api *a) {
    if (a->mod) a->ModuleUnload(a->mod);
    if (a->ctx) a->PrimaryCtxRelease(a->dev);
    if (a->lib) gpu_dlclose(a->lib);
    memset(a, 0, sizeof *a);
}

static const char *gpu_errstr(struct gpu_api *a, int rc) {
    const char *s = NULL;
    if (a->GetErrorString && a->GetErrorString(rc, &s) == 0 && s) return s;
    return "unknown CUDA error";
}

static int gpu_alloc(struct gpu_api *a, uint64_t *p, size_t bytes) {
    CUdeviceptr d = 0;
    int rc = a->MemAlloc(&d, bytes ? bytes : 1);
    *p = rc ? 0 : (uint64_t)d;
    return rc;
}
static void gpu_free(struct gpu_api *a, uint64_t p) { if (p && a->MemFree) a->MemFree((CUdeviceptr)p); }
static int gpu_h2d(struct gpu_api *a, uint64_t d, const void *s, size_t n) { return a->MemcpyHtoD((CUdeviceptr)d, s, n); }
static int gpu_d2h(struct gpu_api *a, void *d, uint64_t s, size_t n) { return a->MemcpyDtoH(d, (CUdeviceptr)s, n); }
static int gpu_fn(struct gpu_api *a, const char *name, void **fn) {
    CUfunction f = NULL;
    int rc = a->ModuleGetFunction(&f, a->mod, name);
    *fn = f;
    return rc;
}
static int gpu_launch(struct gpu_api *a, void *fn, unsigned gx, unsigned gy, unsigned bx, unsigned by, void **args) {
    return a->LaunchKernel((CUfunction)fn, gx, gy, 1, bx, by, 1, 0, NULL, args, NULL);
}
static int gpu_sync(struct gpu_api *a) { return a->CtxSynchronize(); }

#include "backend_gpu.inc"

const em_backend em_backend_cuda = {"cuda", gpu_init, gpu_eval, gpu_release};

/* A stand-in for libcuda.so.1 for tests/runtime/test_backend_fallback.py: enough of the driver
 * API for ember's CUDA backend to get as far as choosing device code, on a machine without an
 * NVIDIA GPU. FAKE_CUDA_MODE: "nodevice" (cuInit fails like a driver without a GPU) or
 * "kepler" (one sm_35 device, older than any cubin or PTX ember embeds). */
#include <stdlib.h>
#include <string.h>

typedef unsigned long long CUdeviceptr;
#define EXPORT __attribute__((visibility("default")))

static int nodevice(void) {
    const char *m = getenv("FAKE_CUDA_MODE");
    return !m || strcmp(m, "kepler") != 0;
}

EXPORT int cuInit(unsigned f) { (void)f; return nodevice() ? 100 : 0; } /* CUDA_ERROR_NO_DEVICE */
EXPORT int cuDriverGetVersion(int *v) { *v = 13000; return 0; }
EXPORT int cuDeviceGetCount(int *n) { *n = nodevice() ? 0 : 1; return 0; }
EXPORT int cuDeviceGet(int *d, int i) { *d = i; return 0; }
EXPORT int cuDeviceGetName(char *s, int n, int d) { (void)d; strncpy(s, "Fake Kepler", (size_t)n); return 0; }
EXPORT int cuDeviceGetAttribute(int *v, int a, int d) { (void)d; *v = a == 75 ? 3 : 5; return 0; }
EXPORT int cuDevicePrimaryCtxRetain(void **c, int d) { (void)d; *c = (void *)1; return 0; }
EXPORT int cuDevicePrimaryCtxRelease_v2(int d) { (void)d; return 0; }
EXPORT int cuCtxSetCurrent(void *c) { (void)c; return 0; }
EXPORT int cuCtxSynchronize(void) { return 0; }
EXPORT int cuModuleLoadData(void **m, const void *p) { (void)m; (void)p; return 209; } /* NO_BINARY_FOR_GPU */
EXPORT int cuModuleUnload(void *m) { (void)m; return 0; }
EXPORT int cuModuleGetFunction(void **f, void *m, const char *n) { (void)f; (void)m; (void)n; return 500; }
EXPORT int cuMemAlloc_v2(CUdeviceptr *p, size_t n) { (void)n; *p = 0; return 2; }
EXPORT int cuMemFree_v2(CUdeviceptr p) { (void)p; return 0; }
EXPORT int cuMemcpyHtoD_v2(CUdeviceptr d, const void *s, size_t n) { (void)d; (void)s; (void)n; return 0; }
EXPORT int cuMemcpyDtoH_v2(void *d, CUdeviceptr s, size_t n) { (void)d; (void)s; (void)n; return 0; }
EXPORT int cuLaunchKernel(void *f, unsigned a, unsigned b, unsigned c, unsigned d, unsigned e, unsigned g,
                          unsigned sh, void *st, void **p, void **x) {
    (void)f; (void)a; (void)b; (void)c; (void)d; (void)e; (void)g; (void)sh; (void)st; (void)p; (void)x;
    return 0;
}
EXPORT int cuGetErrorString(int rc, const char **s) {
    *s = rc == 100 ? "no CUDA-capable device is detected" : "fake error";
    return 0;
}

/* backend_opencl.c - the OpenCL backend: the ICD loader (libOpenCL.so.1 / OpenCL.dll) opened
 * at run time, kernels compiled from OpenCL C source by the device's driver when a context is
 * created. The sources (runtime/src/backends/opencl/ember_kernels.cl, adreno.cl) are embedded in the library at build time
 * (runtime/src/backends/opencl/embed.cmake writes em_cl_kernels[] and em_cl_adreno[]).
 *
 * No OpenCL header is needed to build this file, on the host or cross-compiling: the few
 * types, constants and entry points used are declared below with the C signatures of the
 * Khronos specification (OpenCL 1.2, which every ICD exports). Where the Khronos headers are
 * installed (Debian: opencl-headers), the constants are checked against CL/cl.h at compile
 * time.
 *
 * Device: the first GPU or accelerator of any platform; CPU devices (PoCL, Intel's CPU
 * runtime) only when asked (--backend opencl with no GPU, or $EMBER_OPENCL_DEVICE), so that
 * "auto" never trades the native CPU path for an OpenCL emulation of it.
 * $EMBER_OPENCL_DEVICE: "gpu" (the default), "cpu", "any", or the index of
 * a device in the order clinfo -l lists them (platform by platform).
 * Variant: the Adreno kernels (adreno.cl in front of the generic source) when the device's
 * vendor or name says Qualcomm/Adreno, else the generic ones; $EMBER_OPENCL_VARIANT=generic
 * or adreno overrides that. $EMBER_OPENCL_PORTABLE=1 builds the kernels as for a device with
 * neither fp64 nor correctly rounded division (most mobile GPUs, Adreno among them), so that
 * the numerics of those devices can be tested anywhere.
 *
 * One token step runs on the device with the CPU path's numerics (see ember_kernels.cl):
 * weights uploaded once per context in their GGUF blocks, fp16 KV cache on the device, the
 * token embedding and the RoPE table made on the host as the CUDA backend does.
 */
#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L /* dlopen */
#endif
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "gpu_dl.h"
#include "model.h"

/* ---- the OpenCL 1.2 API subset (Khronos cl.h / cl_platform.h) ----------------------------- */

typedef int32_t cl_int;
typedef uint32_t cl_uint;
typedef uint64_t cl_ulong;
typedef cl_ulong cl_bitfield;
typedef struct _cl_platform_id *cl_platform_id;
typedef struct _cl_device_id *cl_device_id;
typedef struct _cl_context *cl_context;
typedef struct _cl_command_queue *cl_command_queue;
typedef struct _cl_mem *cl_mem;
typedef struct _cl_program *cl_program;
typedef struct _cl_kernel *cl_kernel;
typedef struct _cl_event *cl_event;

enum {
    EM_CL_SUCCESS = 0,
    EM_CL_PLATFORM_NAME = 0x0902,
    EM_CL_DEVICE_TYPE = 0x1000,
    EM_CL_DEVICE_MAX_MEM_ALLOC_SIZE = 0x1010,
    EM_CL_DEVICE_SINGLE_FP_CONFIG = 0x101B,
    EM_CL_DEVICE_NAME = 0x102B,
    EM_CL_DEVICE_VENDOR = 0x102C,
    EM_CL_DEVICE_VERSION = 0x102F,
    EM_CL_DEVICE_EXTENSIONS = 0x1030,
    EM_CL_PROGRAM_BUILD_LOG = 0x1183
};
#define EM_CL_DEVICE_TYPE_CPU ((cl_bitfield)1 << 1)
#define EM_CL_DEVICE_TYPE_GPU ((cl_bitfield)1 << 2)
#define EM_CL_DEVICE_TYPE_ACCELERATOR ((cl_bitfield)1 << 3)
#define EM_CL_DEVICE_TYPE_ALL ((cl_bitfield)0xFFFFFFFF)
#define EM_CL_FP_CORRECTLY_ROUNDED_DIVIDE_SQRT ((cl_bitfield)1 << 7)
#define EM_CL_MEM_READ_WRITE ((cl_bitfield)1 << 0)
#define EM_CL_MEM_READ_ONLY ((cl_bitfield)1 << 2)
#define EM_CL_MEM_COPY_HOST_PTR ((cl_bitfield)1 << 5)

#if defined(__has_include)
#if __has_include(<CL/cl.h>)
#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>
_Static_assert(EM_CL_PLATFORM_NAME == CL_PLATFORM_NAME, "CL_PLATFORM_NAME");
_Static_assert(EM_CL_DEVICE_TYPE == CL_DEVICE_TYPE, "CL_DEVICE_TYPE");
_Static_assert(EM_CL_DEVICE_MAX_MEM_ALLOC_SIZE == CL_DEVICE_MAX_MEM_ALLOC_SIZE, "CL_DEVICE_MAX_MEM_ALLOC_SIZE");
_Static_assert(EM_CL_DEVICE_SINGLE_FP_CONFIG == CL_DEVICE_SINGLE_FP_CONFIG, "CL_DEVICE_SINGLE_FP_CONFIG");
_Static_assert(EM_CL_DEVICE_NAME == CL_DEVICE_NAME, "CL_DEVICE_NAME");
_Static_assert(EM_CL_DEVICE_VENDOR == CL_DEVICE_VENDOR, "CL_DEVICE_VENDOR");
_Static_assert(EM_CL_DEVICE_VERSION == CL_DEVICE_VERSION, "CL_DEVICE_VERSION");
_Static_assert(EM_CL_DEVICE_EXTENSIONS == CL_DEVICE_EXTENSIONS, "CL_DEVICE_EXTENSIONS");
_Static_assert(EM_CL_PROGRAM_BUILD_LOG == CL_PROGRAM_BUILD_LOG, "CL_PROGRAM_BUILD_LOG");
_Static_assert(EM_CL_DEVICE_TYPE_CPU == CL_DEVICE_TYPE_CPU && EM_CL_DEVICE_TYPE_GPU == CL_DEVICE_TYPE_GPU &&
                   EM_CL_DEVICE_TYPE_ACCELERATOR == CL_DEVICE_TYPE_ACCELERATOR &&
                   EM_CL_DEVICE_TYPE_ALL == CL_DEVICE_TYPE_ALL,
               "CL_DEVICE_TYPE_*");
_Static_assert(EM_CL_FP_CORRECTLY_ROUNDED_DIVIDE_SQRT == CL_FP_CORRECTLY_ROUNDED_DIVIDE_SQRT, "CL_FP_*");
_Static_assert(EM_CL_MEM_READ_WRITE == CL_MEM_READ_WRITE && EM_CL_MEM_READ_ONLY == CL_MEM_READ_ONLY &&
                   EM_CL_MEM_COPY_HOST_PTR == CL_MEM_COPY_HOST_PTR,
               "CL_MEM_*");
#endif
#endif

#if defined(_WIN32)
#define CLAPI __stdcall
static const char *const cl_libs[] = {"OpenCL.dll", NULL};
#else
#define CLAPI
static const char *const cl_libs[] = {"libOpenCL.so.1", "libOpenCL.so", NULL};
#endif

/* the embedded sources (generated by runtime/src/backends/opencl/embed.cmake) */
extern const unsigned char em_cl_kernels[];
extern const unsigned long em_cl_kernels_len;
extern const unsigned char em_cl_adreno[];
extern const unsigned long em_cl_adreno_len;

struct cl_api {
    void *lib;
    cl_int (CLAPI *GetPlatformIDs)(cl_uint, cl_platform_id *, cl_uint *);
    cl_int (CLAPI *GetPlatformInfo)(cl_platform_id, cl_uint, size_t, void *, size_t *);
    cl_int (CLAPI *GetDeviceIDs)(cl_platform_id, cl_bitfield, cl_uint, cl_device_id *, cl_uint *);
    cl_int (CLAPI *GetDeviceInfo)(cl_device_id, cl_uint, size_t, void *, size_t *);
    cl_context (CLAPI *CreateContext)(const intptr_t *, cl_uint, const cl_device_id *,
                                      void (CLAPI *)(const char *, const void *, size_t, void *), void *, cl_int *);
    cl_command_queue (CLAPI *CreateCommandQueue)(cl_context, cl_device_id, cl_bitfield, cl_int *);
    cl_program (CLAPI *CreateProgramWithSource)(cl_context, cl_uint, const char **, const size_t *, cl_int *);
    cl_int (CLAPI *BuildProgram)(cl_program, cl_uint, const cl_device_id *, const char *,
                                 void (CLAPI *)(cl_program, void *), void *);
    cl_int (CLAPI *GetProgramBuildInfo)(cl_program, cl_device_id, cl_uint, size_t, void *, size_t *);
    cl_kernel (CLAPI *CreateKernel)(cl_program, const char *, cl_int *);
    cl_mem (CLAPI *CreateBuffer)(cl_context, cl_bitfield, size_t, void *, cl_int *);
    cl_int (CLAPI *SetKernelArg)(cl_kernel, cl_uint, size_t, const void *);
    cl_int (CLAPI *EnqueueNDRangeKernel)(cl_command_queue, cl_kernel, cl_uint, const size_t *, const size_t *,
                                         const size_t *, cl_uint, const cl_event *, cl_event *);
    cl_int (CLAPI *EnqueueWriteBuffer)(cl_command_queue, cl_mem, cl_uint, size_t, size_t, const void *, cl_uint,
                                       const cl_event *, cl_event *);
    cl_int (CLAPI *EnqueueReadBuffer)(cl_command_queue, cl_mem, cl_uint, size_t, size_t, void *, cl_uint,
                                      const cl_event *, cl_event *);
    cl_int (CLAPI *EnqueueCopyBuffer)(cl_command_queue, cl_mem, cl_mem, size_t, size_t, size_t, cl_uint,
                                      const cl_event *, cl_event *);
    cl_int (CLAPI *Finish)(cl_command_queue);
    cl_int (CLAPI *ReleaseMemObject)(cl_mem);
    cl_int (CLAPI *ReleaseKernel)(cl_kernel);
    cl_int (CLAPI *ReleaseProgram)(cl_program);
    cl_int (CLAPI *ReleaseCommandQueue)(cl_command_queue);
    cl_int (CLAPI *ReleaseContext)(cl_context);
};

static const char *cl_resolve(struct cl_api *a) {
    GPU_SYM(a->lib, a->GetPlatformIDs, "clGetPlatformIDs");
    GPU_SYM(a->lib, a->GetPlatformInfo, "clGetPlatformInfo");
    GPU_SYM(a->lib, a->GetDeviceIDs, "clGetDeviceIDs");
    GPU_SYM(a->lib, a->GetDeviceInfo, "clGetDeviceInfo");
    GPU_SYM(a->lib, a->CreateContext, "clCreateContext");
    GPU_SYM(a->lib, a->CreateCommandQueue, "clCreateCommandQueue");
    GPU_SYM(a->lib, a->CreateProgramWithSource, "clCreateProgramWithSource");
    GPU_SYM(a->lib, a->BuildProgram, "clBuildProgram");
    GPU_SYM(a->lib, a->GetProgramBuildInfo, "clGetProgramBuildInfo");
    GPU_SYM(a->lib, a->CreateKernel, "clCreateKernel");
    GPU_SYM(a->lib, a->CreateBuffer, "clCreateBuffer");
    GPU_SYM(a->lib, a->SetKernelArg, "clSetKernelArg");
    GPU_SYM(a->lib, a->EnqueueNDRangeKernel, "clEnqueueNDRangeKernel");
    GPU_SYM(a->lib, a->EnqueueWriteBuffer, "clEnqueueWriteBuffer");
    GPU_SYM(a->lib, a->EnqueueReadBuffer, "clEnqueueReadBuffer");
    GPU_SYM(a->lib, a->EnqueueCopyBuffer, "clEnqueueCopyBuffer");
    GPU_SYM(a->lib, a->Finish, "clFinish");
    GPU_SYM(a->lib, a->ReleaseMemObject, "clReleaseMemObject");
    GPU_SYM(a->lib, a->ReleaseKernel, "clReleaseKernel");
    GPU_SYM(a->lib, a->ReleaseProgram, "clReleaseProgram");
    GPU_SYM(a->lib, a->ReleaseCommandQueue, "clReleaseCommandQueue");
    GPU_SYM(a->lib, a->ReleaseContext, "clReleaseContext");
    return NULL;
}

static const char *cl_errstr(cl_int rc) {
    switch (rc) {
    case -1: return "CL_DEVICE_NOT_FOUND";
    case -2: return "CL_DEVICE_NOT_AVAILABLE";
    case -3: return "CL_COMPILER_NOT_AVAILABLE";
    case -4: return "CL_MEM_OBJECT_ALLOCATION_FAILURE";
    case -5: return "CL_OUT_OF_RESOURCES";
    case -6: return "CL_OUT_OF_HOST_MEMORY";
    case -11: return "CL_BUILD_PROGRAM_FAILURE";
    case -30: return "CL_INVALID_VALUE";
    case -33: return "CL_INVALID_DEVICE";
    case -34: return "CL_INVALID_CONTEXT";
    case -36: return "CL_INVALID_COMMAND_QUEUE";
    case -38: return "CL_INVALID_MEM_OBJECT";
    case -43: return "CL_INVALID_BUILD_OPTIONS";
    case -46: return "CL_INVALID_KERNEL_NAME";
    case -48: return "CL_INVALID_KERNEL";
    case -49: return "CL_INVALID_ARG_INDEX";
    case -50: return "CL_INVALID_ARG_VALUE";
    case -51: return "CL_INVALID_ARG_SIZE";
    case -52: return "CL_INVALID_KERNEL_ARGS";
    case -54: return "CL_INVALID_WORK_GROUP_SIZE";
    case -61: return "CL_INVALID_BUFFER_SIZE";
    case -63: return "CL_INVALID_GLOBAL_WORK_SIZE";
    case -1001: return "CL_PLATFORM_NOT_FOUND_KHR (no OpenCL driver registered with the ICD loader)";
    default: return "OpenCL error";
    }
}

/* ---- device state -------------------------------------------------------------------- */

typedef struct cl_weight {
    cl_mem d;
    const em_weight *w;
} cl_weight;

typedef struct cl_layer {
    cl_mem attn_norm, ffn_norm;
    cl_weight wq, wk, wv, wo, gate, up, down;
} cl_layer;

enum {
    K_QUANT_Q8_0, K_QUANT_Q8_1, K_QUANT_Q8_K, K_QUANT_F16,
    K_MM_Q4_0, K_MM_Q4_1, K_MM_Q8_0, K_MM_F16, K_MM_F32, K_MM_Q4_K, K_MM_Q6_K, K_MM_Q5_0, K_MM_Q5_1, K_MM_Q5_K,
    K_RMSNORM, K_ROPE, K_KV_STORE, K_ATT_SCORES, K_ATT_SOFTMAX, K_ATT_OUT, K_SWIGLU, K_ADD,
    K_COUNT
};
static const char *const kernel_names[K_COUNT] = {
    "em_quant_q8_0", "em_quant_q8_1", "em_quant_q8_K", "em_quant_f16",
    "em_mm_q4_0", "em_mm_q4_1", "em_mm_q8_0", "em_mm_f16", "em_mm_f32", "em_mm_q4_K", "em_mm_q6_K", "em_mm_q5_0", "em_mm_q5_1", "em_mm_q5_K",
    "em_rmsnorm", "em_rope", "em_kv_store", "em_att_scores", "em_att_softmax", "em_att_out", "em_swiglu", "em_add"};

#define CL_ATT_TOKENS 32 /* tokens per attention launch (bounds the score scratch) */

typedef struct cl_state {
    struct cl_api api;
    cl_device_id dev;
    cl_context cx;
    cl_command_queue q;
    cl_program prog;
    cl_kernel k[K_COUNT];
    cl_layer *layers;
    cl_weight output;
    cl_mem output_norm;
    cl_mem x, xb, xb2, qf, kf, vf, att, hb, hb2, rope, q16, act, scores, probs, logits, kc, vc;
    float *hx, *hrope;
    uint32_t B;
    cl_ulong max_alloc; /* CL_DEVICE_MAX_MEM_ALLOC_SIZE: the largest buffer the device takes */
} cl_state;

/* the matmul kernel and activation type of a weight type; -1 when unsupported */
static int mm_kernel(em_type t) {
    switch (t) {
    case EM_TYPE_F32: return K_MM_F32;
    case EM_TYPE_F16: return K_MM_F16;
    case EM_TYPE_Q4_0: return K_MM_Q4_0;
    case EM_TYPE_Q4_1: return K_MM_Q4_1;
    case EM_TYPE_Q8_0: return K_MM_Q8_0;
    case EM_TYPE_Q4_K: return K_MM_Q4_K;
    case EM_TYPE_Q6_K: return K_MM_Q6_K;
    case EM_TYPE_Q5_0: return K_MM_Q5_0;
    case EM_TYPE_Q5_1: return K_MM_Q5_1;
    case EM_TYPE_Q5_K: return K_MM_Q5_K;
    default: return -1;
    }
}

static void info_str(struct cl_api *a, cl_device_id d, cl_uint what, char *out, size_t len) {
    out[0] = 0;
    if (a->GetDeviceInfo(d, what, len, out, NULL) != EM_CL_SUCCESS) out[0] = 0;
    out[len - 1] = 0;
}

static int contains_ci(const char *hay, const char *needle) {
    const size_t n = strlen(needle);
    for (; *hay; hay++) {
        size_t i = 0;
        while (i < n && hay[i] && (hay[i] | 0x20) == (needle[i] | 0x20)) i++;
        if (i == n) return 1;
    }
    return 0;
}

/* Picks the device ($EMBER_OPENCL_DEVICE, see the top of this file). 0, or -1 with why. */
static int cl_pick_device(cl_state *g, int backend_auto, char *platform, size_t plen, char *why, size_t whylen) {
    struct cl_api *a = &g->api;
    cl_platform_id plats[16];
    cl_uint np = 0;
    cl_int rc = a->GetPlatformIDs(16, plats, &np);
    if (rc != EM_CL_SUCCESS || np == 0) {
        snprintf(why, whylen, "no OpenCL platform (%s; install a driver, e.g. apt-get install -y pocl-opencl-icd)",
                 rc != EM_CL_SUCCESS ? cl_errstr(rc) : "the ICD loader lists none");
        return -1;
    }
    if (np > 16) np = 16;
    const char *want = getenv("EMBER_OPENCL_DEVICE");
    /* unset: a GPU; asked for by name (--backend opencl), a CPU device when there is no GPU */
    const int fallback_cpu = (!want || !want[0]) && !backend_auto;
    if (!want || !want[0]) want = "gpu";
    char *end = NULL;
    const long index = strtol(want, &end, 10);
    const int by_index = end && end != want && *end == 0;
    if (!by_index && strcmp(want, "gpu") && strcmp(want, "cpu") && strcmp(want, "any")) {
        snprintf(why, whylen, "EMBER_OPENCL_DEVICE='%s' is not gpu, cpu, any or a device index", want);
        return -1;
    }
    long seen = 0;
    char skipped[160] = "";
    for (cl_uint p = 0; p < np; p++) {
        cl_device_id devs[16];
        cl_uint nd = 0;
        if (a->GetDeviceIDs(plats[p], EM_CL_DEVICE_TYPE_ALL, 16, devs, &nd) != EM_CL_SUCCESS) continue;
        if (nd > 16) nd = 16;
        for (cl_uint i = 0; i < nd; i++, seen++) {
            cl_bitfield type = 0;
            a->GetDeviceInfo(devs[i], EM_CL_DEVICE_TYPE, sizeof type, &type, NULL);
            const int is_gpu = (type & (EM_CL_DEVICE_TYPE_GPU | EM_CL_DEVICE_TYPE_ACCELERATOR)) != 0;
            const int is_cpu = (type & EM_CL_DEVICE_TYPE_CPU) != 0;
            int take;
            if (by_index) take = seen == index;
            else if (!strcmp(want, "gpu")) take = is_gpu;
            else if (!strcmp(want, "cpu")) take = is_cpu;
            else take = 1;
            if (take) {
                g->dev = devs[i];
                if (a->GetPlatformInfo(plats[p], EM_CL_PLATFORM_NAME, plen, platform, NULL) != EM_CL_SUCCESS)
                    platform[0] = 0;
                platform[plen - 1] = 0;
                return 0;
            }
            if (!skipped[0]) {
                char name[96];
                info_str(a, devs[i], EM_CL_DEVICE_NAME, name, sizeof name);
                snprintf(skipped, sizeof skipped, "%s %s", is_cpu ? "CPU" : "device", name);
            }
        }
    }
    if (fallback_cpu && skipped[0]) {
        /* the same walk for a CPU device (cheap: a handful of devices) */
        for (cl_uint p = 0; p < np; p++) {
            cl_device_id devs[16];
            cl_uint nd = 0;
            if (a->GetDeviceIDs(plats[p], EM_CL_DEVICE_TYPE_CPU, 16, devs, &nd) != EM_CL_SUCCESS || nd == 0) continue;
            g->dev = devs[0];
            if (a->GetPlatformInfo(plats[p], EM_CL_PLATFORM_NAME, plen, platform, NULL) != EM_CL_SUCCESS)
                platform[0] = 0;
            platform[plen - 1] = 0;
            return 0;
        }
    }
    if (by_index)
        snprintf(why, whylen, "EMBER_OPENCL_DEVICE=%ld but there are %ld OpenCL devices", index, seen);
    else if (!strcmp(want, "gpu") && skipped[0])
        snprintf(why, whylen, "no OpenCL GPU (only %s; --backend opencl or EMBER_OPENCL_DEVICE=cpu runs on it)", skipped);
    else
        snprintf(why, whylen, "no OpenCL %s device", want);
    return -1;
}

static int cl_build(cl_state *g, int adreno, int exact_div, char *why, size_t whylen) {
    struct cl_api *a = &g->api;
    const char *srcs[2];
    size_t lens[2];
    cl_uint n = 0;
    if (adreno) {
        srcs[n] = (const char *)em_cl_adreno;
        lens[n++] = (size_t)em_cl_adreno_len;
    }
    srcs[n] = (const char *)em_cl_kernels;
    lens[n++] = (size_t)em_cl_kernels_len;
    cl_int rc = 0;
    g->prog = a->CreateProgramWithSource(g->cx, n, srcs, lens, &rc);
    if (!g->prog || rc != EM_CL_SUCCESS) {
        snprintf(why, whylen, "clCreateProgramWithSource failed: %s", cl_errstr(rc));
        return -1;
    }
    /* $EMBER_OPENCL_PORTABLE=1 builds the kernels as for a device with neither fp64 nor
     * correctly rounded division (most mobile GPUs), to test that path on any device */
    const char *portable = getenv("EMBER_OPENCL_PORTABLE");
    const int force = portable && !strcmp(portable, "1");
    char opts[160];
    snprintf(opts, sizeof opts, "-cl-std=CL1.2%s%s",
             exact_div && !force ? " -cl-fp32-correctly-rounded-divide-sqrt -D EM_EXACT_DIV" : "",
             force ? " -D EM_NO_FP64" : "");
    rc = a->BuildProgram(g->prog, 1, &g->dev, opts, NULL, NULL);
    if (rc != EM_CL_SUCCESS) {
        char log[1024] = "";
        a->GetProgramBuildInfo(g->prog, g->dev, EM_CL_PROGRAM_BUILD_LOG, sizeof log, log, NULL);
        log[sizeof log - 1] = 0;
        for (char *c = log; *c; c++)
            if (*c == '\n' || *c == '\r') *c = ' ';
        snprintf(why, whylen, "the %s kernels do not build on this device (%s): %.300s", adreno ? "adreno" : "generic",
                 cl_errstr(rc), log);
        return -1;
    }
    for (int i = 0; i < K_COUNT; i++) {
        g->k[i] = a->CreateKernel(g->prog, kernel_names[i], &rc);
        if (!g->k[i] || rc != EM_CL_SUCCESS) {
            snprintf(why, whylen, "clCreateKernel(%s) failed: %s", kernel_names[i], cl_errstr(rc));
            return -1;
        }
    }
    return 0;
}

static int cl_open(cl_state *g, int backend_auto, char *why, size_t whylen, char *device, size_t devlen) {
    struct cl_api *a = &g->api;
    for (int i = 0; cl_libs[i] && !a->lib; i++) a->lib = gpu_dlopen(cl_libs[i]);
    if (!a->lib) {
        snprintf(why, whylen, "%s not found (no OpenCL ICD loader; e.g. apt-get install -y ocl-icd-libopencl1 pocl-opencl-icd)",
                 cl_libs[0]);
        return -1;
    }
    const char *missing = cl_resolve(a);
    if (missing) {
        snprintf(why, whylen, "%s has no %s (not an OpenCL 1.2 loader)", cl_libs[0], missing);
        return -1;
    }
    char platform[96];
    if (cl_pick_device(g, backend_auto, platform, sizeof platform, why, whylen)) return -1;
    char name[128], vendor[96], version[96], ext[4096];
    cl_bitfield fp = 0;
    info_str(a, g->dev, EM_CL_DEVICE_NAME, name, sizeof name);
    info_str(a, g->dev, EM_CL_DEVICE_VENDOR, vendor, sizeof vendor);
    info_str(a, g->dev, EM_CL_DEVICE_VERSION, version, sizeof version);
    info_str(a, g->dev, EM_CL_DEVICE_EXTENSIONS, ext, sizeof ext);
    a->GetDeviceInfo(g->dev, EM_CL_DEVICE_SINGLE_FP_CONFIG, sizeof fp, &fp, NULL);
    if (a->GetDeviceInfo(g->dev, EM_CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof g->max_alloc, &g->max_alloc, NULL))
        g->max_alloc = 0;
    const char *variant = getenv("EMBER_OPENCL_VARIANT");
    int adreno;
    if (variant && variant[0]) {
        if (strcmp(variant, "generic") && strcmp(variant, "adreno")) {
            snprintf(why, whylen, "EMBER_OPENCL_VARIANT='%s' is not generic or adreno", variant);
            return -1;
        }
        adreno = !strcmp(variant, "adreno");
    } else {
        adreno = contains_ci(vendor, "qualcomm") || contains_ci(name, "adreno");
    }
    cl_int rc = 0;
    g->cx = a->CreateContext(NULL, 1, &g->dev, NULL, NULL, &rc);
    if (!g->cx || rc != EM_CL_SUCCESS) {
        snprintf(why, whylen, "cannot create an OpenCL context on %s: %s", name, cl_errstr(rc));
        return -1;
    }
    g->q = a->CreateCommandQueue(g->cx, g->dev, 0, &rc);
    if (!g->q || rc != EM_CL_SUCCESS) {
        snprintf(why, whylen, "cannot create a command queue on %s: %s", name, cl_errstr(rc));
        return -1;
    }
    if (cl_build(g, adreno, (fp & EM_CL_FP_CORRECTLY_ROUNDED_DIVIDE_SQRT) != 0, why, whylen)) return -1;
    const char *portable = getenv("EMBER_OPENCL_PORTABLE");
    snprintf(device, devlen, "%s (%s, %s, %s kernels%s)", name, platform, version, adreno ? "adreno" : "generic",
             portable && !strcmp(portable, "1") ? ", portable numerics"
             : strstr(ext, "cl_khr_fp64") ? "" : ", no fp64");
    return 0;
}

static void cl_state_free(cl_state *g, const ember_model *m) {
    struct cl_api *a = &g->api;
    if (a->ReleaseMemObject) {
#define REL(b) do { if (b) a->ReleaseMemObject(b); } while (0)
        if (g->layers)
            for (int il = 0; il < m->hp.n_layer; il++) {
                cl_layer *L = &g->layers[il];
                REL(L->attn_norm); REL(L->ffn_norm); REL(L->wq.d); REL(L->wk.d); REL(L->wv.d); REL(L->wo.d);
                REL(L->gate.d); REL(L->up.d); REL(L->down.d);
            }
        REL(g->output.d); REL(g->output_norm);
        cl_mem bufs[] = {g->x, g->xb, g->xb2, g->qf, g->kf, g->vf, g->att, g->hb, g->hb2, g->rope,
                         g->q16, g->act, g->scores, g->probs, g->logits, g->kc, g->vc};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) REL(bufs[i]);
#undef REL
        for (int i = 0; i < K_COUNT; i++)
            if (g->k[i]) a->ReleaseKernel(g->k[i]);
        if (g->prog) a->ReleaseProgram(g->prog);
        if (g->q) a->ReleaseCommandQueue(g->q);
        if (g->cx) a->ReleaseContext(g->cx);
    }
    if (a->lib) gpu_dlclose(a->lib);
    free(g->layers);
    free(g->hx);
    free(g->hrope);
    free(g);
}

/* Many drivers accept a buffer over the device's limit and fail at its first use; asking for
 * more than CL_DEVICE_MAX_MEM_ALLOC_SIZE is refused here instead (CL_INVALID_BUFFER_SIZE). */
static cl_mem cl_buffer(cl_state *g, size_t bytes, const void *init, cl_int *rc) {
    if (g->max_alloc && (cl_ulong)bytes > g->max_alloc) {
        *rc = -61;
        return NULL;
    }
    cl_bitfield flags = init ? (EM_CL_MEM_READ_ONLY | EM_CL_MEM_COPY_HOST_PTR) : EM_CL_MEM_READ_WRITE;
    return g->api.CreateBuffer(g->cx, flags, bytes ? bytes : 4, (void *)(uintptr_t)init, rc);
}

/* 0, or -1 with why; name is the tensor's role for the message */
static int cl_weight_init(cl_state *g, cl_weight *cw, const em_weight *w, const char *name, char *why, size_t whylen) {
    const em_type_traits *tr = em_type_traits_get(w->type);
    if (mm_kernel(w->type) < 0 || (tr && w->ne0 % tr->block_size != 0)) {
        snprintf(why, whylen,
                 "tensor type %s (%s) is not supported by the OpenCL backend (it has f32, f16, q4_0, q4_1, q5_0, q5_1, q8_0, q4_K, q5_K, q6_K)",
                 tr ? tr->name : "?", name);
        return -1;
    }
    cl_int rc = 0;
    cw->w = w;
    cw->d = cl_buffer(g, (size_t)w->ne1 * w->row_bytes, w->data, &rc);
    if (!cw->d || rc != EM_CL_SUCCESS) {
        snprintf(why, whylen, "cannot upload %s (%.1f MiB): %s", name, (double)w->ne1 * (double)w->row_bytes / 1048576.0,
                 cl_errstr(rc));
        return -1;
    }
    return 0;
}

static int cl_init(ember_context *ctx, char *why, size_t whylen) {
    const ember_model *m = ctx->model;
    const em_hparams *hp = &m->hp;
    cl_state *g = (cl_state *)calloc(1, sizeof *g);
    if (!g) { snprintf(why, whylen, "out of host memory"); return -1; }
    if (cl_open(g, ctx->backend_auto, why, whylen, ctx->device, sizeof ctx->device)) goto fail;
    {
        const size_t E = (size_t)hp->n_embd, F = (size_t)hp->n_ff, C = ctx->n_ctx;
        const size_t qd = (size_t)hp->n_head * (size_t)hp->head_dim;
        const size_t kvd = (size_t)hp->n_head_kv * (size_t)hp->head_dim;
        g->B = ctx->n_batch;
        const size_t B = g->B;
        size_t widest = E > F ? E : F;
        if (qd > widest) widest = qd;
        g->layers = (cl_layer *)calloc((size_t)hp->n_layer, sizeof(cl_layer));
        g->hx = (float *)malloc(B * E * sizeof(float));
        g->hrope = (float *)malloc(B * (size_t)hp->n_rot * sizeof(float));
        if (!g->layers || !g->hx || !g->hrope) { snprintf(why, whylen, "out of host memory"); goto fail; }
        static const char *const roles[7] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};
        cl_int rc = 0;
        for (int il = 0; il < hp->n_layer; il++) {
            const em_layer *L = &m->layers[il];
            cl_layer *G = &g->layers[il];
            G->attn_norm = cl_buffer(g, E * sizeof(float), L->attn_norm, &rc);
            if (rc == EM_CL_SUCCESS) G->ffn_norm = cl_buffer(g, E * sizeof(float), L->ffn_norm, &rc);
            if (rc != EM_CL_SUCCESS) {
                snprintf(why, whylen, "cannot upload the norms of layer %d: %s", il, cl_errstr(rc));
                goto fail;
            }
            const em_weight *ws[7] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
            cl_weight *gs[7] = {&G->wq, &G->wk, &G->wv, &G->wo, &G->gate, &G->up, &G->down};
            for (int i = 0; i < 7; i++) {
                char name[48];
                snprintf(name, sizeof name, "blk.%d.%s", il, roles[i]);
                if (cl_weight_init(g, gs[i], ws[i], name, why, whylen)) goto fail;
            }
        }
        g->output_norm = cl_buffer(g, E * sizeof(float), m->output_norm, &rc);
        if (rc != EM_CL_SUCCESS) { snprintf(why, whylen, "cannot upload output_norm: %s", cl_errstr(rc)); goto fail; }
        if (cl_weight_init(g, &g->output, &m->output, "output", why, whylen)) goto fail;
        struct { cl_mem *d; size_t bytes; } bufs[] = {
            {&g->x, B * E * 4}, {&g->xb, B * E * 4}, {&g->xb2, B * E * 4}, {&g->qf, B * qd * 4},
            {&g->kf, B * kvd * 4}, {&g->vf, B * kvd * 4}, {&g->att, B * qd * 4}, {&g->hb, B * F * 4},
            {&g->hb2, B * F * 4}, {&g->rope, B * (size_t)hp->n_rot * 4}, {&g->q16, B * qd * 2},
            {&g->act, B * 4 * widest}, /* 4 bytes per element covers every activation type */
            {&g->scores, (size_t)CL_ATT_TOKENS * (size_t)hp->n_head * C * 4},
            {&g->probs, (size_t)CL_ATT_TOKENS * (size_t)hp->n_head * C * 2},
            {&g->logits, (size_t)hp->n_vocab * 4},
            {&g->kc, (size_t)hp->n_layer * C * kvd * 2}, {&g->vc, (size_t)hp->n_layer * C * kvd * 2}};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
            *bufs[i].d = cl_buffer(g, bufs[i].bytes, NULL, &rc);
            if (!*bufs[i].d || rc != EM_CL_SUCCESS) {
                snprintf(why, whylen, "device allocation of %.1f MiB for the KV cache and scratch failed: %s "
                         "(the device takes buffers of up to %.1f MiB; a smaller context size helps)",
                         (double)bufs[i].bytes / 1048576.0, cl_errstr(rc), (double)g->max_alloc / 1048576.0);
                goto fail;
            }
        }
    }
    ctx->logits = (float *)calloc((size_t)hp->n_vocab, sizeof(float));
    if (!ctx->logits) { snprintf(why, whylen, "out of host memory"); goto fail; }
    ctx->gpu = g;
    return 0;
fail:
    cl_state_free(g, m);
    return -1;
}

static void cl_release(ember_context *ctx) {
    if (ctx->gpu) cl_state_free((cl_state *)ctx->gpu, ctx->model);
    ctx->gpu = NULL;
    free(ctx->logits);
    ctx->logits = NULL;
}

/* ---- one batch ----------------------------------------------------------------------- */

typedef struct cl_run {
    cl_state *g;
    cl_int rc;
    const char *what;
} cl_run;

/* kernel arguments: pointers to their values and sizes, in order */
typedef struct cl_arg {
    size_t size;
    const void *p;
} cl_arg;
#define A_MEM(m) {sizeof(cl_mem), &(m)}
#define A_I64(v) {sizeof(int64_t), &(v)}
#define A_I32(v) {sizeof(int32_t), &(v)}
#define A_F32(v) {sizeof(float), &(v)}

static void launch(cl_run *r, int k, const cl_arg *args, int nargs, cl_uint dims, size_t g0, size_t g1, size_t g2) {
    if (r->rc) return;
    struct cl_api *a = &r->g->api;
    cl_kernel kern = r->g->k[k];
    for (int i = 0; i < nargs; i++) {
        cl_int rc = a->SetKernelArg(kern, (cl_uint)i, args[i].size, args[i].p);
        if (rc) { r->rc = rc; r->what = kernel_names[k]; return; }
    }
    if (g0 == 0 || g1 == 0 || g2 == 0) return;
    const size_t gws[3] = {g0, g1, g2};
    cl_int rc = a->EnqueueNDRangeKernel(r->g->q, kern, dims, NULL, gws, NULL, 0, NULL, NULL);
    if (rc) { r->rc = rc; r->what = kernel_names[k]; }
}

/* y[t][r] = W[r] . x[t] for n tokens, with the CPU kernel llama.c's matmul() picks for the
 * weight type, its buffer and the number of rows (the kernels mirror each of them) */
static void run_matmul(cl_run *r, const cl_weight *cw, cl_mem x, cl_mem y, int64_t n) {
    cl_state *g = r->g;
    const em_weight *w = cw->w;
    int64_t row_bytes = (int64_t)w->row_bytes, ne0 = w->ne0, ne1 = w->ne1, stride, block = 1;
    const int mk = mm_kernel(w->type);
    cl_mem act = g->act;
    int qk = -1;
    switch (w->type) {
    case EM_TYPE_Q4_0: case EM_TYPE_Q5_0: case EM_TYPE_Q8_0:
        qk = K_QUANT_Q8_0; block = 32; stride = ne0 / 32 * 34;
        break;
    case EM_TYPE_Q4_1: case EM_TYPE_Q5_1:
        qk = K_QUANT_Q8_1; block = 32; stride = ne0 / 32 * 36;
        break;
    case EM_TYPE_Q4_K: case EM_TYPE_Q5_K: case EM_TYPE_Q6_K:
        qk = K_QUANT_Q8_K; block = 256; stride = ne0 / 256 * 292;
        break;
    case EM_TYPE_F16: qk = K_QUANT_F16; stride = ne0 * 2; break;
    default: act = x; stride = ne0 * 4; break;
    }
    if (qk >= 0) {
        const cl_arg qa[] = {A_MEM(x), A_MEM(act)};
        launch(r, qk, qa, 2, 1, (size_t)(n * ne0 / block), 1, 1);
    }
    int32_t k_head = EM_KERNEL_VEC_DOT, k_tail = EM_KERNEL_VEC_DOT;
    int64_t n_head = 0;
    if (!w->plain_buffer && em_repack_applies(w->type, ne1)) {
        k_head = EM_KERNEL_REPACK_GEMM;
        k_tail = EM_KERNEL_REPACK_GEMV;
        n_head = n >= 2 ? n - n % 4 : 0;
    } else if (n >= 8 && w->type >= EM_TYPE_Q2_K && w->type <= EM_TYPE_Q6_K) {
        k_head = EM_KERNEL_TILED;
        n_head = n;
    } else if (n >= 2 && ne1 % 4 == 0) {
        k_head = EM_KERNEL_SGEMM;
        n_head = n;
    }
    const cl_arg ma[] = {A_MEM(cw->d), A_I64(row_bytes), A_I64(ne0), A_I64(ne1), A_MEM(act), A_I64(stride), A_MEM(y),
                         A_I32(k_head), A_I32(k_tail), A_I64(n_head)};
    launch(r, mk, ma, 10, 2, (size_t)ne1, (size_t)n, 1);
}

static void run_rmsnorm(cl_run *r, cl_mem x, cl_mem w, cl_mem y, int64_t n_embd, float eps, int64_t row0, int64_t n) {
    const cl_arg a[] = {A_MEM(x), A_MEM(w), A_MEM(y), A_I64(n_embd), A_F32(eps), A_I64(row0)};
    launch(r, K_RMSNORM, a, 6, 1, (size_t)n, 1, 1);
}

static void run_add(cl_run *r, cl_mem x, cl_mem y, int64_t n) {
    const cl_arg a[] = {A_MEM(x), A_MEM(y)};
    launch(r, K_ADD, a, 2, 1, (size_t)n, 1, 1);
}

static ember_status cl_eval_batch(ember_context *ctx, const int32_t *tokens, uint32_t n_tokens, int64_t pos0, char *why,
                                  size_t whylen) {
    cl_state *g = (cl_state *)ctx->gpu;
    struct cl_api *a = &g->api;
    const ember_model *m = ctx->model;
    const em_hparams *hp = &m->hp;
    const int64_t E = hp->n_embd, F = hp->n_ff, hd = hp->head_dim;
    const int64_t qd = (int64_t)hp->n_head * hd, kvd = (int64_t)hp->n_head_kv * hd;
    int64_t n = n_tokens;
    cl_run r = {g, 0, ""};

    int64_t n_kv = ((pos0 + n + 255) / 256) * 256; /* the cells llama.cpp's graph covers */
    if (n_kv > (int64_t)ctx->n_ctx) n_kv = ctx->n_ctx;
    for (int64_t t = 0; t < n; t++) {
        em_dequantize_row(m->tok_embd.type, (const uint8_t *)m->tok_embd.data + (size_t)tokens[t] * m->tok_embd.row_bytes,
                          g->hx + t * E, E);
        em_rope_cache(m, pos0 + t, g->hrope + t * hp->n_rot);
    }
    cl_int rc = a->EnqueueWriteBuffer(g->q, g->x, 1, 0, (size_t)(n * E) * sizeof(float), g->hx, 0, NULL, NULL);
    if (!rc) rc = a->EnqueueWriteBuffer(g->q, g->rope, 1, 0, (size_t)(n * hp->n_rot) * sizeof(float), g->hrope, 0, NULL, NULL);
    if (rc) { r.rc = rc; r.what = "upload"; }

    int32_t n_head = hp->n_head, n_head_kv = hp->n_head_kv, head_dim = (int32_t)hd, n_rot = hp->n_rot, kvd_i = (int32_t)kvd;
    int64_t n_ctx = ctx->n_ctx;
    float scale = hp->kq_scale;
    const int32_t kq_gemm = n >= 2 && n_kv % 4 == 0 && hd % 16 == 0;
    const int32_t kqv_gemm = n >= 2 && hd % 4 == 0 && n_kv % 16 == 0;
    for (int il = 0; il < hp->n_layer && !r.rc; il++) {
        const cl_layer *L = &g->layers[il];
        run_rmsnorm(&r, g->x, L->attn_norm, g->xb, E, hp->rms_eps, 0, n);
        run_matmul(&r, &L->wq, g->xb, g->qf, n);
        run_matmul(&r, &L->wk, g->xb, g->kf, n);
        run_matmul(&r, &L->wv, g->xb, g->vf, n);
        const cl_arg rq[] = {A_MEM(g->qf), A_MEM(g->rope), A_I32(n_head), A_I32(head_dim), A_I32(n_rot)};
        launch(&r, K_ROPE, rq, 5, 2, (size_t)(n_head * (n_rot / 2)), (size_t)n, 1);
        const cl_arg rk[] = {A_MEM(g->kf), A_MEM(g->rope), A_I32(n_head_kv), A_I32(head_dim), A_I32(n_rot)};
        launch(&r, K_ROPE, rk, 5, 2, (size_t)(n_head_kv * (n_rot / 2)), (size_t)n, 1);
        const cl_arg qh[] = {A_MEM(g->qf), A_MEM(g->q16)};
        launch(&r, K_QUANT_F16, qh, 2, 1, (size_t)(n * qd), 1, 1);
        int64_t off = (int64_t)il * n_ctx * kvd;
        const cl_arg kv[] = {A_MEM(g->kf), A_MEM(g->vf), A_MEM(g->kc), A_MEM(g->vc), A_I32(kvd_i), A_I64(pos0), A_I64(off),
                             A_I64(n_ctx)};
        launch(&r, K_KV_STORE, kv, 8, 2, (size_t)kvd, (size_t)n, 1);
        for (int64_t t0 = 0; t0 < n; t0 += CL_ATT_TOKENS) {
            const int64_t cnt = n - t0 < CL_ATT_TOKENS ? n - t0 : CL_ATT_TOKENS;
            const cl_arg sa[] = {A_MEM(g->q16), A_MEM(g->kc), A_MEM(g->scores), A_I32(n_head), A_I32(n_head_kv),
                                 A_I32(head_dim), A_I64(pos0), A_I64(t0), A_I64(off), A_I64(n_ctx), A_F32(scale),
                                 A_I32(kq_gemm)};
            launch(&r, K_ATT_SCORES, sa, 12, 3, (size_t)n_kv, (size_t)n_head, (size_t)cnt);
            const cl_arg so[] = {A_MEM(g->scores), A_MEM(g->probs), A_I32(n_head), A_I64(n_kv), A_I64(n_ctx)};
            launch(&r, K_ATT_SOFTMAX, so, 5, 2, (size_t)n_head, (size_t)cnt, 1);
            const cl_arg ao[] = {A_MEM(g->probs), A_MEM(g->vc), A_MEM(g->att), A_I32(n_head), A_I32(n_head_kv),
                                 A_I32(head_dim), A_I64(pos0), A_I64(t0), A_I64(off), A_I64(n_kv), A_I64(n_ctx),
                                 A_I32(kqv_gemm)};
            launch(&r, K_ATT_OUT, ao, 12, 3, (size_t)hd, (size_t)n_head, (size_t)cnt);
        }
        run_matmul(&r, &L->wo, g->att, g->xb2, n);
        if (il == hp->n_layer - 1 && n > 1 && !r.rc) {
            /* as llama.c: only the last token goes on (and its matmuls are single-row ones) */
            const size_t row = (size_t)E * sizeof(float), src = (size_t)(n - 1) * row;
            rc = a->EnqueueCopyBuffer(g->q, g->x, g->hb, src, 0, row, 0, NULL, NULL);
            if (!rc) rc = a->EnqueueCopyBuffer(g->q, g->hb, g->x, 0, 0, row, 0, NULL, NULL);
            if (!rc) rc = a->EnqueueCopyBuffer(g->q, g->xb2, g->hb, src, 0, row, 0, NULL, NULL);
            if (!rc) rc = a->EnqueueCopyBuffer(g->q, g->hb, g->xb2, 0, 0, row, 0, NULL, NULL);
            if (rc) { r.rc = rc; r.what = "copy of the last token"; }
            n = 1;
        }
        run_add(&r, g->x, g->xb2, n * E);
        run_rmsnorm(&r, g->x, L->ffn_norm, g->xb, E, hp->rms_eps, 0, n);
        run_matmul(&r, &L->gate, g->xb, g->hb, n);
        run_matmul(&r, &L->up, g->xb, g->hb2, n);
        const cl_arg sw[] = {A_MEM(g->hb), A_MEM(g->hb2), A_I64(F)};
        launch(&r, K_SWIGLU, sw, 3, 2, (size_t)F, (size_t)n, 1);
        run_matmul(&r, &L->down, g->hb, g->xb2, n);
        run_add(&r, g->x, g->xb2, n * E);
    }
    int64_t last = n - 1;
    run_rmsnorm(&r, g->x, g->output_norm, g->xb, E, hp->rms_eps, last, 1);
    run_matmul(&r, &g->output, g->xb, g->logits, 1);
    if (!r.rc) {
        rc = a->EnqueueReadBuffer(g->q, g->logits, 1, 0, (size_t)hp->n_vocab * sizeof(float), ctx->logits, 0, NULL, NULL);
        if (rc) { r.rc = rc; r.what = "download of the logits"; }
    }
    if (r.rc) {
        snprintf(why, whylen, "%s: %s (%d)", r.what, cl_errstr(r.rc), (int)r.rc);
        return EMBER_ERR_INTERNAL;
    }
    return EMBER_OK;
}

static ember_status cl_eval(ember_context *ctx, const int32_t *tokens, uint32_t n, char *why, size_t whylen) {
    cl_state *g = (cl_state *)ctx->gpu;
    for (uint32_t done = 0; done < n;) {
        uint32_t chunk = n - done < g->B ? n - done : g->B;
        ember_status st = cl_eval_batch(ctx, tokens + done, chunk, (int64_t)ctx->n_past + done, why, whylen);
        if (st != EMBER_OK) return st;
        done += chunk;
    }
    return EMBER_OK;
}

const em_backend em_backend_opencl = {"opencl", cl_init, cl_eval, cl_release};

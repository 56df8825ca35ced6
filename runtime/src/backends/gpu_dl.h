/* gpu_dl.h - opening a vendor runtime at run time (dlopen / LoadLibrary) for the GPU
 * backends; header-only, static functions. */
#ifndef EMBER_GPU_DL_H
#define EMBER_GPU_DL_H

#include <string.h>

#if defined(_WIN32)
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <windows.h>
static void *gpu_dlopen(const char *name) { return (void *)LoadLibraryA(name); }
static void *gpu_dlsym(void *lib, const char *name) {
    FARPROC p = GetProcAddress((HMODULE)lib, name);
    void *out;
    memcpy(&out, &p, sizeof out);
    return out;
}
static void gpu_dlclose(void *lib) { FreeLibrary((HMODULE)lib); }
#else
#include <dlfcn.h>
static void *gpu_dlopen(const char *name) { return dlopen(name, RTLD_NOW | RTLD_LOCAL); }
static void *gpu_dlsym(void *lib, const char *name) { return dlsym(lib, name); }
static void gpu_dlclose(void *lib) { dlclose(lib); }
#endif

/* symbol -> function pointer without an object/function pointer cast */
#define GPU_SYM(lib, field, name)                                  \
    do {                                                           \
        void *p_ = gpu_dlsym((lib), (name));                       \
        if (!p_) return (name);                                    \
        memcpy(&(field), &p_, sizeof p_);                          \
    } while (0)

#endif /* EMBER_GPU_DL_H */

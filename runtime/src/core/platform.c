/* platform.c - POSIX (Linux, macOS, Android) and Win32 implementations of platform.h. */
#if !defined(_WIN32)
#  if !defined(_POSIX_C_SOURCE)
#    define _POSIX_C_SOURCE 200809L
#  endif
#  if defined(__APPLE__) && !defined(_DARWIN_C_SOURCE)
#    define _DARWIN_C_SOURCE
#  endif
#endif

#include "platform.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(_WIN32)
#  ifndef WIN32_LEAN_AND_MEAN
#    define WIN32_LEAN_AND_MEAN
#  endif
#  include <windows.h>
#  include <process.h>
#  include <psapi.h>
#else
#  include <errno.h>
#  include <fcntl.h>
#  include <pthread.h>
#  include <sys/mman.h>
#  include <sys/resource.h>
#  include <sys/stat.h>
#  include <time.h>
#  include <unistd.h>
#endif

/* ---- file mapping ------------------------------------------------------------------ */

#if defined(_WIN32)

typedef struct win_map { HANDLE file, mapping; } win_map;

static wchar_t *utf8_to_wide(const char *s) {
    int n = MultiByteToWideChar(CP_UTF8, 0, s, -1, NULL, 0);
    if (n <= 0) return NULL;
    wchar_t *w = (wchar_t *)malloc((size_t)n * sizeof(wchar_t));
    if (w && MultiByteToWideChar(CP_UTF8, 0, s, -1, w, n) <= 0) { free(w); return NULL; }
    return w;
}

int em_map_file(const char *path, em_mapping *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    wchar_t *wpath = utf8_to_wide(path);
    if (!wpath) { snprintf(err, errlen, "%s: invalid file name", path); return -1; }
    HANDLE f = CreateFileW(wpath, GENERIC_READ, FILE_SHARE_READ, NULL, OPEN_EXISTING,
                           FILE_ATTRIBUTE_NORMAL, NULL);
    free(wpath);
    if (f == INVALID_HANDLE_VALUE) {
        snprintf(err, errlen, "%s: cannot open file (Windows error %lu)", path, (unsigned long)GetLastError());
        return -1;
    }
    LARGE_INTEGER sz;
    if (!GetFileSizeEx(f, &sz)) {
        snprintf(err, errlen, "%s: cannot get file size", path);
        CloseHandle(f);
        return -1;
    }
    out->size = (uint64_t)sz.QuadPart;
    if (out->size == 0) { CloseHandle(f); return 0; }
    if ((uint64_t)(SIZE_MAX) < out->size) {
        snprintf(err, errlen, "%s: file too large to map", path);
        CloseHandle(f);
        return -1;
    }
    HANDLE mh = CreateFileMappingW(f, NULL, PAGE_READONLY, 0, 0, NULL);
    if (!mh) {
        snprintf(err, errlen, "%s: cannot map file (Windows error %lu)", path, (unsigned long)GetLastError());
        CloseHandle(f);
        return -1;
    }
    void *p = MapViewOfFile(mh, FILE_MAP_READ, 0, 0, 0);
    if (!p) {
        snprintf(err, errlen, "%s: cannot map view of file (Windows error %lu)", path, (unsigned long)GetLastError());
        CloseHandle(mh);
        CloseHandle(f);
        return -1;
    }
    win_map *wm = (win_map *)malloc(sizeof *wm);
    if (!wm) {
        UnmapViewOfFile(p); CloseHandle(mh); CloseHandle(f);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    wm->file = f;
    wm->mapping = mh;
    out->data = (const uint8_t *)p;
    out->impl = wm;
    return 0;
}

void em_unmap_file(em_mapping *m) {
    if (!m) return;
    if (m->data) UnmapViewOfFile((void *)m->data);
    if (m->impl) {
        win_map *wm = (win_map *)m->impl;
        CloseHandle(wm->mapping);
        CloseHandle(wm->file);
        free(wm);
    }
    memset(m, 0, sizeof *m);
}

#else

int em_map_file(const char *path, em_mapping *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot open file: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        snprintf(err, errlen, "%s: cannot stat file: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", path);
        close(fd);
        return -1;
    }
    out->size = (uint64_t)st.st_size;
    if (out->size == 0) { close(fd); return 0; }
    if ((uint64_t)SIZE_MAX < out->size) {
        snprintf(err, errlen, "%s: file too large to map", path);
        close(fd);
        return -1;
    }
    void *p = mmap(NULL, (size_t)out->size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        snprintf(err, errlen, "%s: cannot map file: %s", path, strerror(errno));
        return -1;
    }
    out->data = (const uint8_t *)p;
    return 0;
}

void em_unmap_file(em_mapping *m) {
    if (!m) return;
    if (m->data) munmap((void *)m->data, (size_t)m->size);
    memset(m, 0, sizeof *m);
}

#endif

/* ---- threads ------------------------------------------------------------------------- */

struct em_thread {
    void (*fn)(void *);
    void *arg;
#if defined(_WIN32)
    HANDLE h;
#else
    pthread_t t;
#endif
};

#if defined(_WIN32)
struct em_mutex { CRITICAL_SECTION cs; };
struct em_cond { CONDITION_VARIABLE cv; };

static unsigned __stdcall thread_trampoline(void *p) {
    em_thread *t = (em_thread *)p;
    t->fn(t->arg);
    return 0;
}

int em_thread_start(em_thread **out, void (*fn)(void *), void *arg) {
    em_thread *t = (em_thread *)calloc(1, sizeof *t);
    if (!t) return -1;
    t->fn = fn;
    t->arg = arg;
    uintptr_t h = _beginthreadex(NULL, 0, thread_trampoline, t, 0, NULL);
    if (h == 0) { free(t); return -1; }
    t->h = (HANDLE)h;
    *out = t;
    return 0;
}

void em_thread_join(em_thread *t) {
    if (!t) return;
    WaitForSingleObject(t->h, INFINITE);
    CloseHandle(t->h);
    free(t);
}

em_mutex *em_mutex_new(void) {
    em_mutex *m = (em_mutex *)malloc(sizeof *m);
    if (m) InitializeCriticalSection(&m->cs);
    return m;
}
void em_mutex_free(em_mutex *m) { if (m) { DeleteCriticalSection(&m->cs); free(m); } }
void em_mutex_lock(em_mutex *m) { EnterCriticalSection(&m->cs); }
void em_mutex_unlock(em_mutex *m) { LeaveCriticalSection(&m->cs); }

em_cond *em_cond_new(void) {
    em_cond *c = (em_cond *)malloc(sizeof *c);
    if (c) InitializeConditionVariable(&c->cv);
    return c;
}
void em_cond_free(em_cond *c) { free(c); }
void em_cond_wait(em_cond *c, em_mutex *m) { SleepConditionVariableCS(&c->cv, &m->cs, INFINITE); }
void em_cond_broadcast(em_cond *c) { WakeAllConditionVariable(&c->cv); }

int em_cpu_count(void) {
    SYSTEM_INFO si;
    GetSystemInfo(&si);
    return si.dwNumberOfProcessors > 0 ? (int)si.dwNumberOfProcessors : 1;
}

double em_time_ms(void) {
    LARGE_INTEGER f, c;
    QueryPerformanceFrequency(&f);
    QueryPerformanceCounter(&c);
    return (double)c.QuadPart * 1000.0 / (double)f.QuadPart;
}

double em_peak_rss_mb(void) {
    PROCESS_MEMORY_COUNTERS pmc;
    if (GetProcessMemoryInfo(GetCurrentProcess(), &pmc, sizeof pmc))
        return (double)pmc.PeakWorkingSetSize / (1024.0 * 1024.0);
    return 0.0;
}

#else
struct em_mutex { pthread_mutex_t m; };
struct em_cond { pthread_cond_t c; };

static void *thread_trampoline(void *p) {
    em_thread *t = (em_thread *)p;
    t->fn(t->arg);
    return NULL;
}

int em_thread_start(em_thread **out, void (*fn)(void *), void *arg) {
    em_thread *t = (em_thread *)calloc(1, sizeof *t);
    if (!t) return -1;
    t->fn = fn;
    t->arg = arg;
    if (pthread_create(&t->t, NULL, thread_trampoline, t) != 0) { free(t); return -1; }
    *out = t;
    return 0;
}

void em_thread_join(em_thread *t) {
    if (!t) return;
    pthread_join(t->t, NULL);
    free(t);
}

em_mutex *em_mutex_new(void) {
    em_mutex *m = (em_mutex *)malloc(sizeof *m);
    if (m && pthread_mutex_init(&m->m, NULL) != 0) { free(m); return NULL; }
    return m;
}
void em_mutex_free(em_mutex *m) { if (m) { pthread_mutex_destroy(&m->m); free(m); } }
void em_mutex_lock(em_mutex *m) { pthread_mutex_lock(&m->m); }
void em_mutex_unlock(em_mutex *m) { pthread_mutex_unlock(&m->m); }

em_cond *em_cond_new(void) {
    em_cond *c = (em_cond *)malloc(sizeof *c);
    if (c && pthread_cond_init(&c->c, NULL) != 0) { free(c); return NULL; }
    return c;
}
void em_cond_free(em_cond *c) { if (c) { pthread_cond_destroy(&c->c); free(c); } }
void em_cond_wait(em_cond *c, em_mutex *m) { pthread_cond_wait(&c->c, &m->m); }
void em_cond_broadcast(em_cond *c) { pthread_cond_broadcast(&c->c); }

int em_cpu_count(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

double em_time_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

double em_peak_rss_mb(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0.0;
#if defined(__APPLE__)
    return (double)ru.ru_maxrss / (1024.0 * 1024.0); /* bytes on macOS */
#else
    return (double)ru.ru_maxrss / 1024.0;            /* KiB on Linux */
#endif
}
#endif

int em_host_is_big_endian(void) {
    const uint16_t one = 1;
    uint8_t b;
    memcpy(&b, &one, 1);
    return b == 0;
}

/* server_threads.h - the few system services ember-server needs, the same on every system:
 * a mutex, a condition variable (with a timed wait), a thread, a monotonic clock, a sleep,
 * and the size of a file. POSIX threads everywhere but Windows, where SRWLOCK,
 * CONDITION_VARIABLE and _beginthreadex are used (C11 <threads.h> is missing from macOS and
 * from some C libraries ember is built with). Every function is static so that the header
 * can be included by one translation unit without unused-function warnings mattering. */
#ifndef EMBER_SERVER_THREADS_H
#define EMBER_SERVER_THREADS_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(_WIN32)
#include <windows.h>
#include <process.h>
#include <sys/stat.h>
#include <wchar.h>
#else
#include <errno.h>
#include <pthread.h>
#include <sys/stat.h>
#include <time.h>
#endif

#if defined(__GNUC__) || defined(__clang__)
#define SRV_MAYBE_UNUSED __attribute__((unused))
#else
#define SRV_MAYBE_UNUSED
#endif

#if defined(_WIN32)

typedef SRWLOCK srv_mutex;
typedef CONDITION_VARIABLE srv_cond;
typedef HANDLE srv_thread;

static SRV_MAYBE_UNUSED int srv_mutex_init(srv_mutex *m) { InitializeSRWLock(m); return 0; }
static SRV_MAYBE_UNUSED void srv_mutex_destroy(srv_mutex *m) { (void)m; }
static SRV_MAYBE_UNUSED void srv_mutex_lock(srv_mutex *m) { AcquireSRWLockExclusive(m); }
static SRV_MAYBE_UNUSED void srv_mutex_unlock(srv_mutex *m) { ReleaseSRWLockExclusive(m); }
static SRV_MAYBE_UNUSED int srv_cond_init(srv_cond *c) { InitializeConditionVariable(c); return 0; }
static SRV_MAYBE_UNUSED void srv_cond_destroy(srv_cond *c) { (void)c; }
static SRV_MAYBE_UNUSED void srv_cond_wait(srv_cond *c, srv_mutex *m) { SleepConditionVariableSRW(c, m, INFINITE, 0); }
/* waits at most ms milliseconds (a spurious or early wake-up is possible, as with any wait) */
static SRV_MAYBE_UNUSED void srv_cond_timedwait_ms(srv_cond *c, srv_mutex *m, unsigned ms) {
    SleepConditionVariableSRW(c, m, ms, 0);
}
static SRV_MAYBE_UNUSED void srv_cond_signal(srv_cond *c) { WakeConditionVariable(c); }
static SRV_MAYBE_UNUSED void srv_cond_broadcast(srv_cond *c) { WakeAllConditionVariable(c); }

typedef struct srv_thread_start { void (*fn)(void *); void *arg; } srv_thread_start;
static unsigned __stdcall srv_thread_trampoline(void *p) {
    srv_thread_start s = *(srv_thread_start *)p;
    free(p);
    s.fn(s.arg);
    return 0;
}
static SRV_MAYBE_UNUSED int srv_thread_create(srv_thread *t, void (*fn)(void *), void *arg) {
    srv_thread_start *s = (srv_thread_start *)malloc(sizeof *s);
    if (!s) return -1;
    s->fn = fn;
    s->arg = arg;
    uintptr_t h = _beginthreadex(NULL, 0, srv_thread_trampoline, s, 0, NULL);
    if (!h) { free(s); return -1; }
    *t = (HANDLE)h;
    return 0;
}
static SRV_MAYBE_UNUSED void srv_thread_join(srv_thread t) {
    WaitForSingleObject(t, INFINITE);
    CloseHandle(t);
}

static SRV_MAYBE_UNUSED double srv_now_ms(void) {
    LARGE_INTEGER f, c;
    QueryPerformanceFrequency(&f);
    QueryPerformanceCounter(&c);
    return (double)c.QuadPart * 1000.0 / (double)f.QuadPart;
}
static SRV_MAYBE_UNUSED void srv_sleep_ms(unsigned ms) { Sleep(ms); }

/* size in bytes of the file at a UTF-8 path, -1 when it cannot be read */
static SRV_MAYBE_UNUSED long long srv_file_size(const char *path) {
    int n = MultiByteToWideChar(CP_UTF8, 0, path, -1, NULL, 0);
    if (n <= 0) return -1;
    wchar_t *w = (wchar_t *)malloc((size_t)n * sizeof(wchar_t));
    if (!w) return -1;
    MultiByteToWideChar(CP_UTF8, 0, path, -1, w, n);
    struct _stat64 st;
    int rc = _wstat64(w, &st);
    free(w);
    return rc == 0 ? (long long)st.st_size : -1;
}

#else /* POSIX */

typedef pthread_mutex_t srv_mutex;
typedef pthread_cond_t srv_cond;
typedef pthread_t srv_thread;

static SRV_MAYBE_UNUSED int srv_mutex_init(srv_mutex *m) { return pthread_mutex_init(m, NULL) ? -1 : 0; }
static SRV_MAYBE_UNUSED void srv_mutex_destroy(srv_mutex *m) { pthread_mutex_destroy(m); }
static SRV_MAYBE_UNUSED void srv_mutex_lock(srv_mutex *m) { pthread_mutex_lock(m); }
static SRV_MAYBE_UNUSED void srv_mutex_unlock(srv_mutex *m) { pthread_mutex_unlock(m); }
static SRV_MAYBE_UNUSED int srv_cond_init(srv_cond *c) { return pthread_cond_init(c, NULL) ? -1 : 0; }
static SRV_MAYBE_UNUSED void srv_cond_destroy(srv_cond *c) { pthread_cond_destroy(c); }
static SRV_MAYBE_UNUSED void srv_cond_wait(srv_cond *c, srv_mutex *m) { pthread_cond_wait(c, m); }
/* waits at most ms milliseconds (against the realtime clock, the default of a condition
 * variable: a clock step only makes one wait shorter or longer) */
static SRV_MAYBE_UNUSED void srv_cond_timedwait_ms(srv_cond *c, srv_mutex *m, unsigned ms) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
    pthread_cond_timedwait(c, m, &ts);
}
static SRV_MAYBE_UNUSED void srv_cond_signal(srv_cond *c) { pthread_cond_signal(c); }
static SRV_MAYBE_UNUSED void srv_cond_broadcast(srv_cond *c) { pthread_cond_broadcast(c); }

typedef struct srv_thread_start { void (*fn)(void *); void *arg; } srv_thread_start;
static void *srv_thread_trampoline(void *p) {
    srv_thread_start s = *(srv_thread_start *)p;
    free(p);
    s.fn(s.arg);
    return NULL;
}
static SRV_MAYBE_UNUSED int srv_thread_create(srv_thread *t, void (*fn)(void *), void *arg) {
    srv_thread_start *s = (srv_thread_start *)malloc(sizeof *s);
    if (!s) return -1;
    s->fn = fn;
    s->arg = arg;
    if (pthread_create(t, NULL, srv_thread_trampoline, s) != 0) { free(s); return -1; }
    return 0;
}
static SRV_MAYBE_UNUSED void srv_thread_join(srv_thread t) { pthread_join(t, NULL); }

static SRV_MAYBE_UNUSED double srv_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}
static SRV_MAYBE_UNUSED void srv_sleep_ms(unsigned ms) {
    struct timespec ts;
    ts.tv_sec = (time_t)(ms / 1000);
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static SRV_MAYBE_UNUSED long long srv_file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

#endif

#endif

/* platform.h - the operating system, behind one small interface: read-only file mapping,
 * threads, a monotonic clock, peak memory. POSIX and Win32 live in platform.c only. */
#ifndef EMBER_PLATFORM_H
#define EMBER_PLATFORM_H

#include <stddef.h>
#include <stdint.h>

/* A whole file mapped read-only (or read into memory where mapping is impossible). */
typedef struct em_mapping {
    const uint8_t *data; /* NULL for an empty file */
    uint64_t size;
    void *impl;          /* platform handle(s) */
} em_mapping;

/* 0 on success; else -1 with a message in err. */
int em_map_file(const char *path, em_mapping *out, char *err, size_t errlen);
void em_unmap_file(em_mapping *m);

typedef struct em_thread em_thread;
typedef struct em_mutex em_mutex;
typedef struct em_cond em_cond;

int em_thread_start(em_thread **out, void (*fn)(void *), void *arg);
void em_thread_join(em_thread *t);

em_mutex *em_mutex_new(void);
void em_mutex_free(em_mutex *m);
void em_mutex_lock(em_mutex *m);
void em_mutex_unlock(em_mutex *m);

em_cond *em_cond_new(void);
void em_cond_free(em_cond *c);
void em_cond_wait(em_cond *c, em_mutex *m);
void em_cond_broadcast(em_cond *c);

int em_cpu_count(void);
double em_time_ms(void);         /* monotonic milliseconds */
double em_peak_rss_mb(void);     /* peak resident set size of the process, MiB; 0 if unknown */
int em_host_is_big_endian(void);

#endif /* EMBER_PLATFORM_H */

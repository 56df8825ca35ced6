/* threadpool.h - a fixed set of worker threads that run one job at a time.
 *
 * em_pool_run(pool, fn, arg) calls fn(arg, ith, nth) for ith = 0..nth-1, ith 0 on the calling
 * thread, and returns when all have finished. Jobs split their work by ith only, never by
 * timing, so a result never depends on the number of threads. */
#ifndef EMBER_THREADPOOL_H
#define EMBER_THREADPOOL_H

typedef struct em_pool em_pool;
typedef void (*em_pool_fn)(void *arg, int ith, int nth);

/* n_threads >= 1 (1: no worker threads). NULL on failure. */
em_pool *em_pool_new(int n_threads);
void em_pool_free(em_pool *pool);
int em_pool_size(const em_pool *pool);
void em_pool_run(em_pool *pool, em_pool_fn fn, void *arg);

/* The half-open range [*start, *end) of n items that thread ith of nth handles. */
void em_split_range(long long n, int ith, int nth, long long *start, long long *end);

#endif /* EMBER_THREADPOOL_H */

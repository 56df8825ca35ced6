/* threadpool.c - see threadpool.h. Workers sleep on a condition variable between jobs; a
 * generation counter tells them a new job is there. */
#include "threadpool.h"

#include <stdlib.h>

#include "platform.h"

typedef struct worker {
    em_pool *pool;
    int ith;
    em_thread *thread;
} worker;

struct em_pool {
    int n;
    worker *workers;       /* (n - 1) */
    em_mutex *mu;
    em_cond *wake;         /* signalled when a job is posted or on shutdown */
    em_cond *done;         /* signalled when the last worker finishes a job */
    unsigned long generation;
    int pending;           /* workers still running the current job */
    int quit;
    em_pool_fn fn;
    void *arg;
};

static void worker_main(void *p) {
    worker *w = (worker *)p;
    em_pool *pool = w->pool;
    unsigned long seen = 0;
    for (;;) {
        em_mutex_lock(pool->mu);
        while (!pool->quit && pool->generation == seen) em_cond_wait(pool->wake, pool->mu);
        if (pool->quit) { em_mutex_unlock(pool->mu); return; }
        seen = pool->generation;
        em_pool_fn fn = pool->fn;
        void *arg = pool->arg;
        em_mutex_unlock(pool->mu);

        fn(arg, w->ith, pool->n);

        em_mutex_lock(pool->mu);
        if (--pool->pending == 0) em_cond_broadcast(pool->done);
        em_mutex_unlock(pool->mu);
    }
}

em_pool *em_pool_new(int n_threads) {
    if (n_threads < 1) n_threads = 1;
    em_pool *pool = (em_pool *)calloc(1, sizeof *pool);
    if (!pool) return NULL;
    pool->n = n_threads;
    pool->mu = em_mutex_new();
    pool->wake = em_cond_new();
    pool->done = em_cond_new();
    if (!pool->mu || !pool->wake || !pool->done) { em_pool_free(pool); return NULL; }
    if (n_threads > 1) {
        pool->workers = (worker *)calloc((size_t)(n_threads - 1), sizeof(worker));
        if (!pool->workers) { em_pool_free(pool); return NULL; }
        for (int i = 0; i < n_threads - 1; i++) {
            pool->workers[i].pool = pool;
            pool->workers[i].ith = i + 1;
            if (em_thread_start(&pool->workers[i].thread, worker_main, &pool->workers[i]) != 0) {
                pool->n = i + 1; /* join only the ones that started */
                em_pool_free(pool);
                return NULL;
            }
        }
    }
    return pool;
}

void em_pool_free(em_pool *pool) {
    if (!pool) return;
    if (pool->workers) {
        em_mutex_lock(pool->mu);
        pool->quit = 1;
        em_cond_broadcast(pool->wake);
        em_mutex_unlock(pool->mu);
        for (int i = 0; i < pool->n - 1; i++) em_thread_join(pool->workers[i].thread);
        free(pool->workers);
    }
    em_cond_free(pool->done);
    em_cond_free(pool->wake);
    em_mutex_free(pool->mu);
    free(pool);
}

int em_pool_size(const em_pool *pool) { return pool ? pool->n : 1; }

void em_pool_run(em_pool *pool, em_pool_fn fn, void *arg) {
    if (!pool || pool->n == 1) {
        fn(arg, 0, 1);
        return;
    }
    em_mutex_lock(pool->mu);
    pool->fn = fn;
    pool->arg = arg;
    pool->pending = pool->n - 1;
    pool->generation++;
    em_cond_broadcast(pool->wake);
    em_mutex_unlock(pool->mu);

    fn(arg, 0, pool->n);

    em_mutex_lock(pool->mu);
    while (pool->pending > 0) em_cond_wait(pool->done, pool->mu);
    em_mutex_unlock(pool->mu);
}

void em_split_range(long long n, int ith, int nth, long long *start, long long *end) {
    long long per = n / nth, rem = n % nth;
    long long s = ith * per + (ith < rem ? ith : rem);
    *start = s;
    *end = s + per + (ith < rem ? 1 : 0);
}

/* threadpool.c - see threadpool.h. A generation counter tells the workers a new job is
 * there. Jobs of a forward pass come every few microseconds, so a waiting thread (a worker
 * for the next job, the caller for the last worker) first spins on the counter for a short
 * while, and only then sleeps on a condition variable: a sleep and wake-up costs tens of
 * microseconds, more than a whole job of a token step. */
#include "threadpool.h"

#include <stdatomic.h>
#include <stdlib.h>

#include "platform.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#elif defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
#define CPU_RELAX() __asm__ __volatile__("yield")
#else
#define CPU_RELAX() ((void)0)
#endif

/* pause iterations before a waiting thread sleeps (tens of microseconds) */
#define SPIN_COUNT 2000

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
    atomic_ulong generation;
    atomic_int pending;    /* workers still running the current job */
    atomic_int quit;
    int sleepers;          /* workers asleep on wake (under mu) */
    int caller_waiting;    /* the caller asleep on done (under mu) */
    em_pool_fn fn;
    void *arg;
};

static void worker_main(void *p) {
    worker *w = (worker *)p;
    em_pool *pool = w->pool;
    unsigned long seen = 0;
    for (;;) {
        int spins = 0;
        while (atomic_load_explicit(&pool->generation, memory_order_acquire) == seen &&
               !atomic_load_explicit(&pool->quit, memory_order_acquire) && spins < SPIN_COUNT) {
            CPU_RELAX();
            spins++;
        }
        if (atomic_load_explicit(&pool->generation, memory_order_acquire) == seen) {
            em_mutex_lock(pool->mu);
            pool->sleepers++;
            while (!atomic_load(&pool->quit) && atomic_load(&pool->generation) == seen)
                em_cond_wait(pool->wake, pool->mu);
            pool->sleepers--;
            em_mutex_unlock(pool->mu);
        }
        if (atomic_load(&pool->quit)) return;
        seen = atomic_load_explicit(&pool->generation, memory_order_acquire);
        em_pool_fn fn = pool->fn;
        void *arg = pool->arg;

        fn(arg, w->ith, pool->n);

        if (atomic_fetch_sub_explicit(&pool->pending, 1, memory_order_acq_rel) == 1) {
            em_mutex_lock(pool->mu);
            if (pool->caller_waiting) em_cond_broadcast(pool->done);
            em_mutex_unlock(pool->mu);
        }
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
        atomic_store(&pool->quit, 1);
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
    /* every worker has finished the previous job (pending reached 0): fn and arg are free */
    pool->fn = fn;
    pool->arg = arg;
    atomic_store_explicit(&pool->pending, pool->n - 1, memory_order_relaxed);
    em_mutex_lock(pool->mu);
    atomic_fetch_add_explicit(&pool->generation, 1, memory_order_release);
    if (pool->sleepers > 0) em_cond_broadcast(pool->wake);
    em_mutex_unlock(pool->mu);

    fn(arg, 0, pool->n);

    int spins = 0;
    while (atomic_load_explicit(&pool->pending, memory_order_acquire) > 0 && spins < SPIN_COUNT) {
        CPU_RELAX();
        spins++;
    }
    if (atomic_load_explicit(&pool->pending, memory_order_acquire) > 0) {
        em_mutex_lock(pool->mu);
        pool->caller_waiting = 1;
        while (atomic_load(&pool->pending) > 0) em_cond_wait(pool->done, pool->mu);
        pool->caller_waiting = 0;
        em_mutex_unlock(pool->mu);
    }
}

void em_split_range(long long n, int ith, int nth, long long *start, long long *end) {
    long long per = n / nth, rem = n % nth;
    long long s = ith * per + (ith < rem ? ith : rem);
    *start = s;
    *end = s + per + (ith < rem ? 1 : 0);
}

#include "pool.h"

#include "status.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct tl_pool {
    int n;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t start, done;
    tl_pool_fn fn;
    void *arg;
    atomic_ulong generation;  /* bumped for every run */
    atomic_int pending;       /* workers still busy with this generation */
    atomic_bool quit;
    pid_t pid; /* the process the workers live in: a forked child starts its own */
};

/* Ops follow each other within microseconds during a forward pass: a worker spins this
 * many rounds for the next one before it sleeps on the condition variable. */
#define SPIN_ROUNDS 20000

typedef struct {
    tl_pool *pool;
    int ith;
} worker_arg;

static void *worker(void *p) {
    worker_arg wa = *(worker_arg *)p;
    free(p);
    tl_pool *pool = wa.pool;
    unsigned long seen = 0;
    for (;;) {
        /* wait for a new generation: spin first, then sleep */
        for (int i = 0; i < SPIN_ROUNDS && atomic_load_explicit(&pool->generation, memory_order_acquire) == seen &&
                        !atomic_load(&pool->quit);
             i++)
            if (i > 1000) sched_yield();
        if (atomic_load_explicit(&pool->generation, memory_order_acquire) == seen && !atomic_load(&pool->quit)) {
            pthread_mutex_lock(&pool->mu);
            while (!atomic_load(&pool->quit) && atomic_load(&pool->generation) == seen)
                pthread_cond_wait(&pool->start, &pool->mu);
            pthread_mutex_unlock(&pool->mu);
        }
        if (atomic_load(&pool->quit)) break;
        seen = atomic_load_explicit(&pool->generation, memory_order_acquire);
        pool->fn(pool->arg, wa.ith, pool->n);
        if (atomic_fetch_sub_explicit(&pool->pending, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&pool->mu); /* the caller may be asleep on done */
            pthread_cond_signal(&pool->done);
            pthread_mutex_unlock(&pool->mu);
        }
    }
    return NULL;
}

static tl_status start_workers(tl_pool *p);

tl_status tl_pool_new(int n_threads, tl_pool **out) {
    *out = NULL;
    if (n_threads < 1 || n_threads > 1024)
        return tl_set_error(TL_ERR_INVALID, "n_threads must be between 1 and 1024, got %d", n_threads);
    tl_pool *p = calloc(1, sizeof *p);
    if (!p) return tl_set_error(TL_ERR_NOMEM, "out of memory creating a thread pool");
    p->n = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->start, NULL);
    pthread_cond_init(&p->done, NULL);
    p->threads = calloc((size_t)n_threads, sizeof *p->threads);
    if (!p->threads) {
        tl_pool_free(p);
        return tl_set_error(TL_ERR_NOMEM, "out of memory creating a thread pool");
    }
    tl_status st = start_workers(p);
    if (st) {
        tl_pool_free(p);
        return st;
    }
    *out = p;
    return TL_OK;
}

/* Threads 1..n-1 of this process; on failure p->n is the number that did start. */
static tl_status start_workers(tl_pool *p) {
    p->pid = getpid();
    /* workers inherit this mask: every signal blocked, so handlers run on the caller */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    tl_status st = TL_OK;
    for (int i = 1; i < p->n; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        int e = wa ? 0 : -1;
        if (wa) {
            wa->pool = p;
            wa->ith = i;
            e = pthread_create(&p->threads[i], NULL, worker, wa);
            if (e) free(wa);
        }
        if (e) {
            st = tl_set_error(TL_ERR_NOMEM, "could not start worker thread %d: %s", i, e > 0 ? strerror(e) : "no memory");
            p->n = i; /* threads [1, i) exist */
            break;
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return st;
}

/* After fork() only the forking thread exists in the child: the pool's workers, and any
 * lock one of them held, are gone. Start afresh (fresh locks, new threads). */
static void restart_after_fork(tl_pool *p) {
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->start, NULL);
    pthread_cond_init(&p->done, NULL);
    atomic_store(&p->generation, 0);
    atomic_store(&p->pending, 0);
    atomic_store(&p->quit, false);
    (void)start_workers(p); /* on failure the pool runs with the threads that did start */
}

void tl_pool_free(tl_pool *p) {
    if (!p) return;
    if (p->threads && p->pid == getpid()) { /* in a forked child that never ran, no workers exist */
        pthread_mutex_lock(&p->mu);
        atomic_store(&p->quit, true);
        pthread_cond_broadcast(&p->start);
        pthread_mutex_unlock(&p->mu);
        for (int i = 1; i < p->n; i++) pthread_join(p->threads[i], NULL);
        free(p->threads);
    }
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->start);
    pthread_cond_destroy(&p->done);
    free(p);
}

int tl_pool_size(const tl_pool *p) { return p->n; }

void tl_pool_run(tl_pool *p, tl_pool_fn fn, void *arg) {
    if (p->pid != getpid()) restart_after_fork(p);
    if (p->n == 1) {
        fn(arg, 0, 1);
        return;
    }
    p->fn = fn;
    p->arg = arg;
    atomic_store_explicit(&p->pending, p->n - 1, memory_order_relaxed);
    pthread_mutex_lock(&p->mu); /* publishes fn/arg and wakes sleepers */
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
    pthread_cond_broadcast(&p->start);
    pthread_mutex_unlock(&p->mu);
    fn(arg, 0, p->n);
    for (int i = 0; i < SPIN_ROUNDS && atomic_load_explicit(&p->pending, memory_order_acquire) > 0; i++)
        if (i > 1000) sched_yield();
    if (atomic_load_explicit(&p->pending, memory_order_acquire) > 0) {
        pthread_mutex_lock(&p->mu);
        while (atomic_load(&p->pending) > 0) pthread_cond_wait(&p->done, &p->mu);
        pthread_mutex_unlock(&p->mu);
    }
}

/* Distinct (physical id, core id) pairs in /proc/cpuinfo; logical CPUs otherwise. */
int tl_physical_cores(void) {
    long logical = sysconf(_SC_NPROCESSORS_ONLN);
    if (logical < 1) logical = 1;
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return (int)logical;
    char line[256];
    int phys = -1, cores = 0;
    int seen[1024][2];
    while (fgets(line, sizeof line, f)) {
        int v;
        if (sscanf(line, "physical id : %d", &v) == 1) phys = v;
        else if (sscanf(line, "core id : %d", &v) == 1) {
            bool dup = false;
            for (int i = 0; i < cores; i++) dup |= seen[i][0] == phys && seen[i][1] == v;
            if (!dup && cores < 1024) {
                seen[cores][0] = phys;
                seen[cores][1] = v;
                cores++;
            }
        }
    }
    fclose(f);
    return cores > 0 && cores <= logical ? cores : (int)logical;
}

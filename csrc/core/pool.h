/* A pool of persistent worker threads: run(fn) calls fn(arg, ith, nth) on every
 * thread (the caller is thread 0) and returns when all are done. One pool per
 * context; workers block every signal, so Ctrl-C reaches the caller's thread. */
#ifndef TL_POOL_H
#define TL_POOL_H

#include "torchless.h"

typedef struct tl_pool tl_pool;
typedef void (*tl_pool_fn)(void *arg, int ith, int nth);

tl_status tl_pool_new(int n_threads, tl_pool **out);
void tl_pool_free(tl_pool *p);
int tl_pool_size(const tl_pool *p);
void tl_pool_run(tl_pool *p, tl_pool_fn fn, void *arg);

/* [*begin, *end) of n items for thread ith of nth, in contiguous shares. */
static inline void tl_split(int64_t n, int ith, int nth, int64_t *begin, int64_t *end) {
    int64_t per = (n + nth - 1) / nth;
    *begin = per * ith < n ? per * ith : n;
    *end = *begin + per < n ? *begin + per : n;
}

/* Physical cores of this machine (logical CPUs when that cannot be told). */
int tl_physical_cores(void);

#endif

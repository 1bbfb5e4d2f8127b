/* The thread pool's cost per operation: tl_pool_run of an empty job, best of 5 x 100,000, for
 * 1 and 2 threads (JSON lines on stdout). Every matmul, the attention and the quantization of a
 * forward pass is one tl_pool_run, so this is the floor a decode step pays per op.
 *
 *   cc -O2 -std=c11 -D_GNU_SOURCE -Icsrc/include -Icsrc -o /tmp/pool_barrier \
 *      benchmarks/pool_barrier.c csrc/core/pool.c csrc/core/status.c -lpthread && /tmp/pool_barrier
 */
#include "core/pool.h"

#include <stdio.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void nop(void *arg, int ith, int nth) {
    (void)arg;
    (void)ith;
    (void)nth;
}

int main(void) {
    const int max_threads = tl_physical_cores() > 1 ? tl_physical_cores() : 2;
    for (int nt = 1; nt <= max_threads; nt++) {
        tl_pool *p;
        if (tl_pool_new(nt, &p)) return 1;
        for (int i = 0; i < 1000; i++) tl_pool_run(p, nop, NULL); /* warm up: workers spinning */
        double best = 1e9;
        for (int r = 0; r < 5; r++) {
            double t = now();
            for (int i = 0; i < 100000; i++) tl_pool_run(p, nop, NULL);
            t = (now() - t) / 100000;
            if (t < best) best = t;
        }
        printf("{\"bench\": \"pool_barrier\", \"threads\": %d, \"ns_per_run\": %.0f}\n", nt, best * 1e9);
        tl_pool_free(p);
    }
    return 0;
}

/* tl_matmul alone on TinyLlama-shaped weights (random, quantized with our quantizers): decode
 * (1 row of x) and prefill (128 rows) per dtype and thread count, best of 5, as JSON lines
 * with the weight bytes per second (the decode ceiling is the machine's read bandwidth) and
 * multiply-adds per second. TORCHLESS_CPU picks the dispatch level as for the engine.
 *
 *   cmake --build build/c && cc -O2 -std=c11 -D_GNU_SOURCE -Icsrc/include -Icsrc -o /tmp/bench_matmul \
 *      benchmarks/bench_matmul.c build/c/libtorchless_core.a $(pkg-config --libs openblas) -lpthread -lm \
 *      && /tmp/bench_matmul
 */
#include "core/matmul.h"
#include "core/pool.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(void) {
    const tl_dtype types[] = {TL_Q4_0, TL_Q8_0, TL_Q4_K, TL_Q6_K, TL_Q4_1, TL_Q5_0};
    const int64_t shapes[][2] = {{5632, 2048}, {2048, 5632}}; /* (m, k): ffn_up, ffn_down */
    const int64_t ns[] = {1, 128};
    for (size_t s = 0; s < 2; s++) {
        const int64_t m = shapes[s][0], k = shapes[s][1];
        float *wf = malloc((size_t)(m * k) * sizeof(float)), *x = malloc((size_t)(128 * k) * sizeof(float));
        float *y = malloc((size_t)(128 * m) * sizeof(float));
        srand(1);
        for (int64_t i = 0; i < m * k; i++) wf[i] = (float)rand() / RAND_MAX - 0.5f;
        for (int64_t i = 0; i < 128 * k; i++) x[i] = (float)rand() / RAND_MAX - 0.5f;
        for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
            const size_t bytes = tl_dtype_row_size(types[ti], k) * (size_t)m;
            void *wq = malloc(bytes);
            tl_quantize(types[ti], wf, wq, m * k);
            tl_tensor w = {.dtype = types[ti], .n_dims = 2, .ne = {k, m}, .nbytes = bytes, .data = wq};
            for (int nt = 1; nt <= 2; nt++) {
                tl_pool *pool;
                if (tl_pool_new(nt, &pool)) return 1;
                float *scratch = malloc(tl_matmul_scratch_floats(k, nt) * sizeof(float));
                for (size_t ni = 0; ni < 2; ni++) {
                    double best = 1e30;
                    for (int rep = 0; rep < 5; rep++) {
                        double t = now();
                        tl_matmul(pool, &w, x, ns[ni], y, scratch);
                        t = now() - t;
                        if (t < best) best = t;
                    }
                    printf("{\"isa\": \"%s\", \"dtype\": \"%s\", \"m\": %lld, \"k\": %lld, \"n\": %lld, \"threads\": %d, "
                           "\"ms\": %.3f, \"weight_GBps\": %.2f, \"GMACps\": %.1f}\n",
                           tl_cpu_isa(), tl_dtype_name(types[ti]), (long long)m, (long long)k, (long long)ns[ni], nt,
                           best * 1e3, (double)bytes / best * 1e-9, (double)(m * k * ns[ni]) / best * 1e-9);
                    fflush(stdout);
                }
                free(scratch);
                tl_pool_free(pool);
            }
            free(wq);
        }
        free(wf);
        free(x);
        free(y);
    }
    return 0;
}

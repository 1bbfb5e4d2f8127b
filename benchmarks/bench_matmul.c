/* tl_matmul alone on TinyLlama-shaped weights (random, quantized with our quantizers): decode
 * (1 row of x) and prefill (128 and 512 rows) per dtype and thread count, best of 5, as JSON lines
 * with the weight bytes per second (the decode ceiling is the machine's read bandwidth) and
 * multiply-adds per second; these weights stay in the L3. Decode is measured a second time
 * "from memory" ("mem": 1): one call on each of enough copies of the weights (>= 192 MB) to
 * miss every cache, as a model's decode step reads them; best of 5 passes, per call. Dtypes
 * with an interleaved layout (tl_matmul_interleave) are measured again in it ("interleaved": 1).
 * TORCHLESS_CPU picks the dispatch level as for the engine; an argument (a dtype name, e.g.
 * q4_K) measures that dtype only; a second one, "prefill", only the products of 128 and 512 rows
 * of x, and two more instead (rows and columns: 262144 640 for Gemma 3's head) that shape instead
 * of TinyLlama's two.
 *
 *   cmake --build build/c && cc -O2 -std=c11 -D_GNU_SOURCE -Icsrc/include -Icsrc -o /tmp/bench_matmul \
 *      benchmarks/bench_matmul.c build/c/libtorchless_core.a $(pkg-config --libs openblas) -lpthread -lm \
 *      && /tmp/bench_matmul
 */
#include "core/dot_q8.h"
#include "core/matmul.h"
#include "core/pool.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* OpenBLAS (where the library uses it) on the caller's thread only, as the CPU backend sets it */
void openblas_set_num_threads(int);

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* per-call seconds of decode over copies of w that together exceed every cache */
static double decode_from_memory(tl_pool *pool, const tl_tensor *w, const float *x, float *y, float *scratch) {
    const size_t total = (size_t)192 << 20;
    const int copies = (int)((total + w->nbytes - 1) / w->nbytes);
    tl_tensor *c = malloc((size_t)copies * sizeof *c);
    void **data = malloc((size_t)copies * sizeof *data);
    for (int i = 0; i < copies; i++) { /* the bytes the matmul reads: the blocks, or the interleaved copy */
        data[i] = memcpy(malloc(w->nbytes), w->rows16 ? w->rows16 : w->data, w->nbytes);
        c[i] = *w;
        if (w->rows16) c[i].rows16 = data[i];
        else c[i].data = data[i];
    }
    double best = 1e30;
    for (int rep = 0; rep < 5; rep++) {
        double t = now();
        for (int i = 0; i < copies; i++) tl_matmul(pool, &c[i], x, 1, y, scratch);
        t = (now() - t) / copies;
        if (t < best) best = t;
    }
    for (int i = 0; i < copies; i++) free(data[i]);
    free(data);
    free(c);
    return best;
}

int main(int argc, char **argv) {
    openblas_set_num_threads(1);
    const tl_dtype types[] = {TL_Q4_0, TL_Q8_0, TL_Q4_K, TL_Q5_K, TL_Q6_K, TL_Q4_1, TL_Q5_0, TL_F16, TL_BF16, TL_F32};
    int64_t shapes[][2] = {{5632, 2048}, {2048, 5632}}; /* (m, k): ffn_up, ffn_down */
    size_t n_shapes = 2;
    if (argc > 3) shapes[0][0] = atoll(argv[2]), shapes[0][1] = atoll(argv[3]), n_shapes = 1;
    const int64_t ns[] = {1, 128, 512};
    const size_t n_ns = sizeof ns / sizeof ns[0];
    const int prefill_only = argc == 3 && strcmp(argv[2], "prefill") == 0;
    for (size_t s = 0; s < n_shapes; s++) {
        const int64_t m = shapes[s][0], k = shapes[s][1];
        float *wf = malloc((size_t)(m * k) * sizeof(float)), *x = malloc((size_t)(512 * k) * sizeof(float));
        float *y = malloc((size_t)(512 * m) * sizeof(float));
        srand(1);
        for (int64_t i = 0; i < m * k; i++) wf[i] = (float)rand() / RAND_MAX - 0.5f;
        for (int64_t i = 0; i < 512 * k; i++) x[i] = (float)rand() / RAND_MAX - 0.5f;
        for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
            if (argc > 1 && strcmp(argv[1], tl_dtype_name(types[ti])) != 0) continue;
            const size_t bytes = tl_dtype_row_size(types[ti], k) * (size_t)m;
            void *wq = malloc(bytes);
            tl_quantize(types[ti], wf, wq, m * k);
            tl_tensor w = {.dtype = types[ti], .n_dims = 2, .ne = {k, m}, .nbytes = bytes, .data = wq};
            for (int il = 0; il < 2; il++) {
            /* (the float formats' copy is their rows as they are: nothing to measure again here) */
            if (il == 1 && (!tl_q8_interleaves(w.dtype) || !(w.rows16 = tl_matmul_interleave(&w, 2)))) break;
            for (int nt = 1; nt <= 2; nt++) {
                tl_pool *pool;
                if (tl_pool_new(nt, &pool)) return 1;
                float *scratch = aligned_alloc(64, (tl_matmul_scratch_floats(k, nt) * sizeof(float) + 63) & ~(size_t)63);
                for (size_t ni = prefill_only; ni < n_ns; ni++) {
                    double best = 1e30;
                    for (int rep = 0; rep < 5; rep++) {
                        double t = now();
                        tl_matmul(pool, &w, x, ns[ni], y, scratch);
                        t = now() - t;
                        if (t < best) best = t;
                    }
                    printf("{\"isa\": \"%s\", \"dtype\": \"%s\", \"m\": %lld, \"k\": %lld, \"n\": %lld, \"threads\": %d, "
                           "\"interleaved\": %d, \"ms\": %.3f, \"weight_GBps\": %.2f, \"GMACps\": %.1f}\n",
                           tl_cpu_isa(), tl_dtype_name(types[ti]), (long long)m, (long long)k, (long long)ns[ni], nt, il,
                           best * 1e3, (double)bytes / best * 1e-9, (double)(m * k * ns[ni]) / best * 1e-9);
                    fflush(stdout);
                }
                const double t = prefill_only ? 0 : decode_from_memory(pool, &w, x, y, scratch);
                if (!prefill_only) printf("{\"isa\": \"%s\", \"dtype\": \"%s\", \"m\": %lld, \"k\": %lld, \"n\": 1, \"threads\": %d, "
                       "\"interleaved\": %d, \"mem\": 1, \"ms\": %.3f, \"weight_GBps\": %.2f}\n",
                       tl_cpu_isa(), tl_dtype_name(types[ti]), (long long)m, (long long)k, nt, il, t * 1e3,
                       (double)bytes / t * 1e-9);
                fflush(stdout);
                free(scratch);
                tl_pool_free(pool);
            }
            }
            free((void *)w.rows16);
            free(wq);
        }
        free(wf);
        free(x);
        free(y);
    }
    return 0;
}

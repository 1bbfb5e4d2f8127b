/* The CPU backend's fused ops against the plain sequences they replace, alone: add_rmsnorm
 * against add + rmsnorm, rope_store against rope + rope + kv_store, for a decode step (1 row) and
 * a prompt of 128, on the TinyLlama (dim 2,048; 32 / 4 heads of 64) and SmolLM2 (576; 9 / 3)
 * shapes, each KV dtype. Microseconds a call, the best of 5 x reps, as JSON lines.
 *
 *   cmake --build build/c && cc -O2 -std=c11 -D_GNU_SOURCE -Icsrc/include -Icsrc -o /tmp/bench_cpu_fused \
 *      benchmarks/bench_cpu_fused.c build/c/libtorchless_core.a $(pkg-config --libs openblas) -lOpenCL -lpthread -lm \
 *      && /tmp/bench_cpu_fused [threads]
 * (-lOpenCL where the library was built with TORCHLESS_OPENCL)
 */
#include "backends/backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static float *floats(size_t n, float scale) {
    float *x = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = (float)(i % 13) * scale;
    return x;
}

int main(int argc, char **argv) {
    const int threads = argc > 1 ? atoi(argv[1]) : 1;
    tl_device *cpu;
    tl_stream *st;
    if (tl_device_open("cpu", &cpu) || cpu->ops->stream_new(cpu, threads, &st)) {
        fprintf(stderr, "cpu: %s\n", tl_last_error());
        return 1;
    }
    const tl_backend_ops *o = cpu->ops;
    const int64_t norms[][2] = {{1, 576}, {1, 2048}, {128, 576}, {128, 2048}};
    for (int s = 0; s < 4; s++) {
        const int64_t rows = norms[s][0], dim = norms[s][1];
        const size_t n = (size_t)(rows * dim);
        float *x = floats(n, 0.01f), *y = floats(n, 0.001f), *out = floats(n, 0), *w = floats((size_t)dim, 0.1f);
        const int reps = rows == 1 ? 20000 : 400;
        double best[2] = {1e9, 1e9};
        for (int r = 0; r < 5; r++) {
            const double t0 = now();
            for (int i = 0; i < reps; i++) {
                o->add(st, x, y, (int64_t)n);
                o->rmsnorm(st, out, x, w, rows, dim, 1e-5f);
            }
            const double t1 = now();
            for (int i = 0; i < reps; i++) o->add_rmsnorm(st, x, y, out, w, rows, dim, 1e-5f);
            const double t2 = now();
            best[0] = (t1 - t0) / reps < best[0] ? (t1 - t0) / reps : best[0];
            best[1] = (t2 - t1) / reps < best[1] ? (t2 - t1) / reps : best[1];
        }
        printf("{\"op\": \"add_rmsnorm\", \"rows\": %lld, \"dim\": %lld, \"threads\": %d, \"plain_us\": %.2f, \"fused_us\": %.2f}\n",
               (long long)rows, (long long)dim, threads, best[0] * 1e6, best[1] * 1e6);
        free(x), free(y), free(out), free(w);
    }
    const int ropes[][3] = {{1, 32, 4}, {128, 32, 4}, {1, 9, 3}, {128, 9, 3}}; /* tokens, heads, kv heads */
    const int hd = 64, max_seq = 256;
    for (int s = 0; s < 4; s++) {
        const int n = ropes[s][0], heads = ropes[s][1], kvh = ropes[s][2];
        float *q = floats((size_t)n * heads * hd, 0.01f), *k = floats((size_t)n * kvh * hd, 0.01f);
        float *v = floats((size_t)n * kvh * hd, 0.01f), *cs = floats((size_t)n * hd, 0);
        for (int i = 0; i < n * hd; i += 2) cs[i] = 1.0f; /* angle 0: q and k stay as they are over the repeats */
        int32_t *pos = malloc((size_t)n * sizeof(int32_t)), *seq = calloc((size_t)n, sizeof(int32_t));
        for (int i = 0; i < n; i++) pos[i] = i;
        const tl_dtype kvs[] = {TL_F32, TL_F16, TL_Q8_0};
        for (int d = 0; d < 3; d++) {
            const size_t bytes = tl_dtype_row_size(kvs[d], (int64_t)kvh * max_seq * hd);
            void *kc = malloc(bytes), *vc = malloc(bytes);
            const int reps = n == 1 ? 20000 : 400;
            double best[2] = {1e9, 1e9};
            for (int r = 0; r < 5; r++) {
                const double t0 = now();
                for (int i = 0; i < reps; i++) {
                    o->rope(st, q, cs, n, heads, hd, hd, false);
                    o->rope(st, k, cs, n, kvh, hd, hd, false);
                    o->kv_store(st, kc, vc, kvs[d], k, v, pos, seq, n, kvh, hd, max_seq);
                }
                const double t1 = now();
                for (int i = 0; i < reps; i++)
                    o->rope_store(st, q, k, v, cs, n, heads, kvh, hd, hd, false, kc, vc, kvs[d], pos, seq, max_seq);
                const double t2 = now();
                best[0] = (t1 - t0) / reps < best[0] ? (t1 - t0) / reps : best[0];
                best[1] = (t2 - t1) / reps < best[1] ? (t2 - t1) / reps : best[1];
            }
            printf("{\"op\": \"rope_store\", \"tokens\": %d, \"heads\": %d, \"kv_heads\": %d, \"kv\": \"%s\", \"threads\": %d, "
                   "\"plain_us\": %.2f, \"fused_us\": %.2f}\n",
                   n, heads, kvh, tl_dtype_name(kvs[d]), threads, best[0] * 1e6, best[1] * 1e6);
            free(kc), free(vc);
        }
        free(q), free(k), free(v), free(cs), free(pos), free(seq);
    }
    o->stream_free(st);
    tl_device_free(cpu);
    return 0;
}

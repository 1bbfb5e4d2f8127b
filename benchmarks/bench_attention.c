/* The CPU backend's attention op alone on the TinyLlama shape (32 query heads, 4 kv heads of 64,
 * F16 cache), as a model's step calls it: one call a layer for 22 layers, each layer its own
 * cache (22 x 2 MB at 2,048 positions: more than the L3, so that each call reads its keys and
 * values from memory, as in the model). Decode (one token at the context's position) and a
 * prefill chunk (the 256 tokens before it), per thread count; the median of the repeats, as JSON
 * lines with the milliseconds a step (22 calls) and the cache's bytes read per second.
 *
 *   cmake --build build/c && cc -O2 -std=c11 -D_GNU_SOURCE -Icsrc/include -Icsrc -o /tmp/bench_attention \
 *      benchmarks/bench_attention.c build/c/libtorchless_core.a $(pkg-config --libs openblas) -lOpenCL -lpthread -lm \
 *      && /tmp/bench_attention [context] [threads,...] [repeats] [decode]
 * (-lOpenCL where the library was built with TORCHLESS_OPENCL)
 */
#include "backends/backend.h"
#include "core/fp16.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { LAYERS = 22, HEADS = 32, KV_HEADS = 4, HD = 64, CHUNK = 256 };

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static uint64_t rng = 88172645463325252ull;
static float urand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)(rng >> 40) / (float)(1 << 24) * 2 - 1;
}

int main(int argc, char **argv) {
    const int ctx = argc > 1 ? atoi(argv[1]) : 2048, reps = argc > 3 ? atoi(argv[3]) : 41;
    const char *threads = argc > 2 ? argv[2] : "1,2";
    const bool decode_only = argc > 4 && strcmp(argv[4], "decode") == 0;
    const int max_seq = ctx + 8;
    const size_t elems = (size_t)KV_HEADS * max_seq * HD;
    tl_device *cpu;
    if (tl_device_open("cpu", &cpu)) {
        fprintf(stderr, "cpu: %s\n", tl_last_error());
        return 1;
    }
    uint16_t *kc[LAYERS], *vc[LAYERS];
    for (int l = 0; l < LAYERS; l++) {
        kc[l] = malloc(elems * 2), vc[l] = malloc(elems * 2);
        for (size_t i = 0; i < elems; i++) kc[l][i] = tl_f32_to_f16(urand()), vc[l][i] = tl_f32_to_f16(urand());
    }
    float *q = malloc((size_t)CHUNK * HEADS * HD * sizeof(float)), *out = malloc((size_t)CHUNK * HEADS * HD * sizeof(float));
    for (size_t i = 0; i < (size_t)CHUNK * HEADS * HD; i++) q[i] = urand() * 4;
    int32_t pos[CHUNK], seq[CHUNK] = {0};
    double *ms = malloc(reps * sizeof(double));
    for (const char *p = threads; *p;) {
        const int nth = atoi(p);
        while (*p && *p != ',') p++;
        if (*p) p++;
        tl_stream *st;
        if (cpu->ops->stream_new(cpu, nth, &st)) return 1;
        for (int mode = 0; mode < (decode_only ? 1 : 2); mode++) {
            const int n = mode == 0 ? 1 : CHUNK;
            for (int i = 0; i < n; i++) pos[i] = mode == 0 ? ctx : ctx - CHUNK + i;
            const int nr = mode == 0 ? reps : 3; /* a chunk takes a second or more */
            for (int r = 0; r < nr; r++) {
                const double t = now();
                for (int l = 0; l < LAYERS; l++) {
                    const tl_attn_args a = {.q = q, .out = out, .k_cache = kc[l], .v_cache = vc[l], .kv_dtype = TL_F16,
                                            .pos = pos, .seq = seq, .host_pos = pos, .host_seq = seq, .n = n,
                                            .n_heads = HEADS, .n_kv_heads = KV_HEADS, .head_dim = HD, .max_seq_len = max_seq,
                                            .scale = 0.125f};
                    cpu->ops->attention(st, &a);
                }
                ms[r] = (now() - t) * 1e3;
            }
            qsort(ms, nr, sizeof(double), cmp);
            const double bytes = (double)LAYERS * KV_HEADS * 2 * (ctx + 1) * HD * 2;
            printf("{\"mode\": \"%s\", \"context\": %d, \"threads\": %d, \"ms_step\": %.3f, \"ms_p25\": %.3f, \"ms_p75\": %.3f, "
                   "\"cache_GBps\": %.2f}\n",
                   mode == 0 ? "decode" : "chunk256", ctx, nth, ms[nr / 2], ms[nr / 4], ms[3 * nr / 4],
                   bytes / ms[nr / 2] * 1e-6);
            fflush(stdout);
        }
        cpu->ops->stream_free(st);
    }
    for (int l = 0; l < LAYERS; l++) free(kc[l]), free(vc[l]);
    free(q), free(out), free(ms);
    tl_device_free(cpu);
    return 0;
}

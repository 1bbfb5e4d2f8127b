/* The CPU backend's attention op against a double-precision softmax over the same cached keys
 * and values (F16 caches read back exactly with tl_f16_to_f32, Q8_0 ones as d·q), at the
 * dispatch level this process runs (ctest runs it once per level: TORCHLESS_CPU=...). The op
 * takes tiles of queries and of keys (widened to float once for every query head of a kv group);
 * the cases are the edges of that tiling: prompts that are no multiple of any tile, a chunk after
 * a cached prefix, windows that start and end inside tiles, groups of 1, 2, 3, 4, 7 and 8 query
 * heads a kv head, head sizes with and without block kernels, soft-capping, sequences mixed in
 * one batch, decode steps (which read an F16 cache's halves as they lie: an odd last tile, a
 * window, soft-capping), 1 to 3 threads. Seeded (TORCHLESS_SEED replays a run); bound: normwise
 * error over every output row at most 1e-5 (float32 dot products of up to 256 terms and a vector
 * exp within 2 ulp: measured about 1e-7), and every output finite. */
#include "backends/backend.h"
#include "check.h"
#include "core/fp16.h"
#include "core/quants.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#define TOL 1e-5

static double worst; /* the largest normwise error of the run, printed */


typedef struct {
    const char *what;
    tl_dtype kv;
    int hd, heads, kv_heads, window, threads;
    float softcap, q_scale;
    int n;                  /* tokens in the batch */
    const int32_t *pos, *seq; /* per token; NULL: one sequence at positions p0.. */
    int p0;
} attn_case;

/* ((seq * kv_heads + kv head) * max_seq + pos) * hd: backend.h's cache layout */
static double cached(const void *cache, tl_dtype kv, size_t at) {
    if (kv == TL_Q8_0) {
        const block_q8_0 *b = (const block_q8_0 *)cache + at / QK8_0;
        return (double)tl_f16_to_f32(b->d) * b->qs[at % QK8_0];
    }
    return kv == TL_F32 ? ((const float *)cache)[at] : tl_f16_to_f32(((const uint16_t *)cache)[at]);
}

/* n random values in [-1, 1) into a cache of dtype kv (Q8_0: its rows are whole blocks, so the
 * n values quantize as one row) */
static void *random_cache(tl_dtype kv, size_t n) {
    float *f = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) f[i] = (float)(check_urand() * 2 - 1);
    if (kv == TL_F32) return f;
    void *c = malloc(tl_dtype_row_size(kv, (int64_t)n));
    for (size_t i = 0; i < n; i++)
        if (kv == TL_F16) ((uint16_t *)c)[i] = tl_f32_to_f16(f[i]);
    if (kv == TL_Q8_0) tl_quantize_row_q8_0(f, c, (int64_t)n);
    free(f);
    return c;
}

static void run_case(tl_device *cpu, const attn_case *c) {
    enum { MAX_SEQ = 300, N_SEQ = 2 };
    const int hd = c->hd, group = c->heads / c->kv_heads;
    const size_t elems = (size_t)N_SEQ * c->kv_heads * MAX_SEQ * hd, q_dim = (size_t)c->heads * hd;
    /* every cached position random (those past a token's position must not count) */
    uint8_t *kc = random_cache(c->kv, elems), *vc = random_cache(c->kv, elems);
    float *q = malloc(c->n * q_dim * sizeof(float)), *out = malloc(c->n * q_dim * sizeof(float));
    int32_t *pos = malloc(c->n * sizeof(int32_t)), *seq = malloc(c->n * sizeof(int32_t));
    double *z = malloc(MAX_SEQ * sizeof(double));
    for (size_t i = 0; i < c->n * q_dim; i++) q[i] = (float)((check_urand() * 2 - 1) * c->q_scale);
    for (int i = 0; i < c->n; i++) {
        pos[i] = c->pos ? c->pos[i] : c->p0 + i;
        seq[i] = c->seq ? c->seq[i] : 1;
    }
    tl_stream *st;
    if (cpu->ops->stream_new(cpu, c->threads, &st)) {
        CHECK(false, "stream: %s", tl_last_error());
        return;
    }
    const tl_attn_args a = {.q = q, .out = out, .k_cache = kc, .v_cache = vc, .kv_dtype = c->kv, .pos = pos, .seq = seq,
                            .host_pos = pos, .host_seq = seq, .n = c->n, .n_heads = c->heads, .n_kv_heads = c->kv_heads,
                            .head_dim = hd, .max_seq_len = MAX_SEQ, .window = c->window,
                            .scale = 1.0f / sqrtf((float)hd), .softcap = c->softcap};
    cpu->ops->attention(st, &a);
    cpu->ops->stream_free(st);
    double err = 0, ref2 = 0;
    bool finite = true;
    for (int i = 0; i < c->n; i++)
        for (int h = 0; h < c->heads; h++) {
            const size_t base = ((size_t)seq[i] * c->kv_heads + h / group) * MAX_SEQ * hd;
            const float *qi = q + i * q_dim + (size_t)h * hd;
            const int t0 = c->window > 0 && pos[i] >= c->window ? pos[i] - c->window + 1 : 0;
            double m = -INFINITY, l = 0;
            for (int t = t0; t <= pos[i]; t++) {
                double s = 0;
                for (int d = 0; d < hd; d++) s += (double)qi[d] * cached(kc, c->kv, base + (size_t)t * hd + d);
                s *= a.scale;
                if (c->softcap > 0) s = c->softcap * tanh(s / c->softcap);
                z[t] = s;
                m = s > m ? s : m;
            }
            for (int t = t0; t <= pos[i]; t++) l += z[t] = exp(z[t] - m);
            for (int d = 0; d < hd; d++) {
                double o = 0;
                for (int t = t0; t <= pos[i]; t++) o += z[t] * cached(vc, c->kv, base + (size_t)t * hd + d);
                o /= l;
                const float got = out[i * q_dim + (size_t)h * hd + d];
                finite &= isfinite(got);
                err += (got - o) * (got - o);
                ref2 += o * o;
            }
        }
    const double e = sqrt(err / ref2);
    worst = e > worst ? e : worst;
    CHECK(finite && e <= TOL, "%s (%s, hd %d, %d heads / %d kv, window %d, softcap %g, %d tokens, %d threads): normwise %.3g",
          c->what, tl_dtype_name(c->kv), hd, c->heads, c->kv_heads, c->window, (double)c->softcap, c->n, c->threads, e);
    free(kc), free(vc), free(q), free(out), free(pos), free(seq), free(z);
}

int main(void) {
    const char *env = getenv("TORCHLESS_SEED");
    *check_rng() = env ? strtoull(env, NULL, 10) : (uint64_t)time(NULL);
    printf("seed %llu, kernels: %s\n", (unsigned long long)*check_rng(), tl_cpu_isa());
    if (check_cpu_level_missing()) return CHECK_SKIPPED;
    tl_device *cpu;
    if (tl_device_open("cpu", &cpu)) {
        printf("cpu: %s\n", tl_last_error());
        return 1;
    }
    const tl_dtype kvs[] = {TL_F16, TL_F32, TL_Q8_0};
    /* query heads / kv heads: groups of 1, 2, 3, 4, 7 and 8 (a decode step's row kernels take 8
     * rows, then the last 1 to 4) */
    const int shapes[][2] = {{2, 2}, {4, 2}, {6, 2}, {4, 1}, {14, 2}, {16, 2}};
    /* head sizes: Gemma 3's 256, LLaMA's 64 and 128, 40 (no 16-wide kernels), 12 (no block kernels) */
    const int hds[] = {256, 64, 128, 40, 12};
    /* a mixed batch: seq 0 decodes at 150, seq 1 prefills 0..6 around it, seq 0 again at 151 */
    static const int32_t mix_pos[] = {0, 1, 150, 2, 3, 4, 5, 6, 151}, mix_seq[] = {1, 1, 0, 1, 1, 1, 1, 1, 0};
    for (int k = 0; k < 3; k++)
        for (int s = 0; s < 6; s++)
            for (int hi = 0; hi < 5; hi++) {
                const int hd = hds[hi], heads = shapes[s][0], kv_heads = shapes[s][1];
                if (kvs[k] == TL_Q8_0 && hd % 32) continue; /* Q8_0 caches: rows of whole blocks */
                /* larger shapes with fewer cases: the double reference is the slow part; groups of
                 * 2 and 7 only for the decode steps (their row kernels' edges: the prompts' tiles
                 * see every remainder through the lengths above) */
                const bool big = hd >= 128 && heads >= 6, decode_only = heads / kv_heads == 2 || heads / kv_heads == 7;
                const attn_case cases[] = {
                    {"prompt of 100", kvs[k], hd, heads, kv_heads, 0, 2, 0, 1, 100, NULL, NULL, 0},
                    {"prompt of 37 after 61 cached, one thread", kvs[k], hd, heads, kv_heads, 0, 1, 0, 2, 37, NULL, NULL, 61},
                    {"window 40 across tiles, three threads", kvs[k], hd, heads, kv_heads, 40, 3, 0, 1, 45, NULL, NULL, 70},
                    {"window 5, soft-capped", kvs[k], hd, heads, kv_heads, 5, 2, 3.0f, 4, 23, NULL, NULL, 3},
                    {"decode at 257", kvs[k], hd, heads, kv_heads, 0, 2, 0, 1, 1, NULL, NULL, 257},
                    {"decode at 257, window 100, one thread", kvs[k], hd, heads, kv_heads, 100, 1, 0, 1, 1, NULL, NULL, 257},
                    {"decode at 130 (an odd last tile), three threads", kvs[k], hd, heads, kv_heads, 0, 3, 0, 1, 1, NULL, NULL, 130},
                    {"decode at 200, window 37, soft-capped", kvs[k], hd, heads, kv_heads, 37, 2, 5.0f, 2, 1, NULL, NULL, 200},
                    {"mixed batch", kvs[k], hd, heads, kv_heads, 0, 2, 0, 1, 9, mix_pos, mix_seq, 0},
                };
                for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++)
                    if ((!big || ci % 2 == 0 || cases[ci].n == 1) && (!decode_only || cases[ci].n == 1)) run_case(cpu, &cases[ci]);
            }
    tl_device_free(cpu);
    printf("largest normwise error %.3g (bound %g)\n", worst, TOL);
    return check_summary();
}

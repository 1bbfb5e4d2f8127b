/* The CPU backend's fused ops against its plain sequences, bit for bit, at the dispatch level
 * this process runs (ctest runs it once per level: TORCHLESS_CPU=...):
 *   add_rmsnorm = add, then rmsnorm (x and out; out apart from y and in y's place);
 *   rope_store  = rope of q, rope of k, then kv_store (q, the rotated k, and every byte of both
 *                 caches, F32, F16 and Q8_0, around the cells written too).
 * Shapes: rows a multiple of 8 and not (the norm's 8 partial sums and its tail), one token and
 * many (a decode step on the calling thread; a prompt's on the pool), rope_dim below head_dim,
 * NeoX and adjacent pairs, 1 to 3 threads. The plain ops are themselves checked against
 * references elsewhere; here a double-precision RMSNorm and rotation also bound the fused
 * results (normwise 1e-6: float32 products and sums of at most 3000 terms, measured ~1e-7),
 * so that a shared mistake would not pass. Seeded (TORCHLESS_SEED replays a run). */
#include "backends/backend.h"
#include "check.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TOL 1e-6

static double worst; /* the largest normwise error against double of the run, printed */

static void fill(float *x, size_t n, float scale) {
    for (size_t i = 0; i < n; i++) x[i] = (float)((check_urand() * 2 - 1) * scale);
}

static float *copy_of(const float *x, size_t n) {
    float *c = malloc(n * sizeof(float));
    memcpy(c, x, n * sizeof(float));
    return c;
}

static void add_rmsnorm_case(tl_device *cpu, int threads, int64_t rows, int64_t dim, bool in_place) {
    const size_t n = (size_t)(rows * dim);
    const float eps = 1e-5f;
    float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float)), *w = malloc((size_t)dim * sizeof(float));
    fill(x, n, 3.0f), fill(y, n, 1.0f), fill(w, (size_t)dim, 2.0f);
    float *x2 = copy_of(x, n), *y2 = copy_of(y, n), *want = malloc(n * sizeof(float)), *out = malloc(n * sizeof(float));
    float *dref = malloc(n * sizeof(float));
    tl_stream *st;
    if (cpu->ops->stream_new(cpu, threads, &st)) {
        CHECK(false, "stream: %s", tl_last_error());
        return;
    }
    /* the double reference, from the inputs */
    double err = 0, ref2 = 0;
    for (int64_t r = 0; r < rows; r++) {
        double ss = 0;
        for (int64_t i = 0; i < dim; i++) {
            const double v = (double)x[r * dim + i] + y[r * dim + i];
            ss += v * v;
        }
        const double scale = 1.0 / sqrt(ss / (double)dim + eps);
        for (int64_t i = 0; i < dim; i++) {
            const double o = ((double)x[r * dim + i] + y[r * dim + i]) * scale * w[i];
            ref2 += o * o;
            dref[r * dim + i] = (float)o;
        }
    }
    cpu->ops->add(st, x2, y2, (int64_t)n);
    cpu->ops->rmsnorm(st, want, x2, w, rows, dim, eps);
    float *dst = in_place ? y : out;
    cpu->ops->add_rmsnorm(st, x, y, dst, w, rows, dim, eps);
    cpu->ops->stream_free(st);
    for (size_t i = 0; i < n; i++) err += ((double)dst[i] - dref[i]) * ((double)dst[i] - dref[i]);
    const double e = sqrt(err / ref2);
    worst = e > worst ? e : worst;
    CHECK(memcmp(x, x2, n * sizeof(float)) == 0, "add_rmsnorm x: %lld x %lld, %d threads", (long long)rows, (long long)dim,
          threads);
    CHECK(memcmp(dst, want, n * sizeof(float)) == 0, "add_rmsnorm out%s: %lld x %lld, %d threads", in_place ? " (in y)" : "",
          (long long)rows, (long long)dim, threads);
    CHECK(e <= TOL, "add_rmsnorm vs double: %lld x %lld: normwise %.3g", (long long)rows, (long long)dim, e);
    free(x), free(y), free(w), free(x2), free(y2), free(want), free(out), free(dref);
}

typedef struct {
    int n, heads, kv_heads, hd, rope_dim, threads;
} rope_case;

static void rope_store_case(tl_device *cpu, const rope_case *c, bool neox, tl_dtype kv) {
    enum { MAX_SEQ = 80, N_SEQ = 3 };
    const int n = c->n, hd = c->hd, half = c->rope_dim / 2;
    const size_t qn = (size_t)n * c->heads * hd, kn = (size_t)n * c->kv_heads * hd;
    const size_t cache = tl_dtype_row_size(kv, (int64_t)N_SEQ * c->kv_heads * MAX_SEQ * hd);
    float *q = malloc(qn * sizeof(float)), *k = malloc(kn * sizeof(float)), *v = malloc(kn * sizeof(float));
    float *cs = malloc((size_t)n * c->rope_dim * sizeof(float));
    fill(q, qn, 2.0f), fill(k, kn, 2.0f), fill(v, kn, 2.0f);
    for (int i = 0; i < n; i++) /* cos, sin of random angles */
        for (int p = 0; p < half; p++) {
            const double a = check_urand() * 6.283185307179586;
            cs[(size_t)i * c->rope_dim + 2 * p] = (float)cos(a), cs[(size_t)i * c->rope_dim + 2 * p + 1] = (float)sin(a);
        }
    /* distinct (sequence, position) cells, sequences interleaved */
    int32_t *pos = malloc((size_t)n * sizeof(int32_t)), *seq = malloc((size_t)n * sizeof(int32_t));
    for (int i = 0; i < n; i++) seq[i] = (i * 7 + 1) % N_SEQ, pos[i] = (i / N_SEQ + 5 * seq[i]) % MAX_SEQ;
    /* caches of random bytes: the cells not written must stay as they were */
    uint8_t *kc = malloc(cache), *vc = malloc(cache);
    for (size_t i = 0; i < cache; i++) kc[i] = (uint8_t)(check_urand() * 256), vc[i] = (uint8_t)(check_urand() * 256);
    uint8_t *kc2 = malloc(cache), *vc2 = malloc(cache);
    memcpy(kc2, kc, cache), memcpy(vc2, vc, cache);
    float *q2 = copy_of(q, qn), *k2 = copy_of(k, kn), *q0 = copy_of(q, qn);
    tl_stream *st;
    if (cpu->ops->stream_new(cpu, c->threads, &st)) {
        CHECK(false, "stream: %s", tl_last_error());
        return;
    }
    cpu->ops->rope(st, q2, cs, n, c->heads, hd, c->rope_dim, neox);
    cpu->ops->rope(st, k2, cs, n, c->kv_heads, hd, c->rope_dim, neox);
    cpu->ops->kv_store(st, kc2, vc2, kv, k2, v, pos, seq, n, c->kv_heads, hd, MAX_SEQ);
    cpu->ops->rope_store(st, q, k, v, cs, n, c->heads, c->kv_heads, hd, c->rope_dim, neox, kc, vc, kv, pos, seq, MAX_SEQ);
    cpu->ops->stream_free(st);
    const char *dt = tl_dtype_name(kv);
    CHECK(memcmp(q, q2, qn * sizeof(float)) == 0, "rope_store q: %d tokens, %d/%d heads of %d, rope %d, neox %d, %s, %d threads",
          n, c->heads, c->kv_heads, hd, c->rope_dim, neox, dt, c->threads);
    CHECK(memcmp(k, k2, kn * sizeof(float)) == 0, "rope_store k: %d tokens, hd %d, rope %d, neox %d, %s", n, hd, c->rope_dim,
          neox, dt);
    CHECK(memcmp(kc, kc2, cache) == 0, "rope_store key cache: %d tokens, hd %d, rope %d, neox %d, %s", n, hd, c->rope_dim,
          neox, dt);
    CHECK(memcmp(vc, vc2, cache) == 0, "rope_store value cache: %d tokens, hd %d, %s", n, hd, dt);
    /* q against the rotation in double */
    double err = 0, ref2 = 0;
    for (int i = 0; i < n; i++)
        for (int h = 0; h < c->heads; h++) {
            const float *x0 = q0 + ((size_t)i * c->heads + h) * hd, *got = q + ((size_t)i * c->heads + h) * hd;
            const float *ci = cs + (size_t)i * c->rope_dim;
            for (int d = 0; d < hd; d++) {
                double o = x0[d];
                const int p = neox ? d % half : d / 2;
                if (d < c->rope_dim) {
                    const int a = neox ? p : 2 * p, b = neox ? p + half : 2 * p + 1;
                    o = d == a ? (double)x0[a] * ci[2 * p] - (double)x0[b] * ci[2 * p + 1]
                               : (double)x0[a] * ci[2 * p + 1] + (double)x0[b] * ci[2 * p];
                }
                err += (got[d] - o) * (got[d] - o), ref2 += o * o;
            }
        }
    const double e = sqrt(err / ref2);
    worst = e > worst ? e : worst;
    CHECK(e <= TOL, "rope_store q vs double: normwise %.3g", e);
    free(q), free(k), free(v), free(cs), free(pos), free(seq), free(kc), free(vc), free(kc2), free(vc2), free(q2), free(k2),
        free(q0);
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
    /* rows x dim: decode steps (SmolLM2's 576, TinyLlama's 2048, a tail of 5), prompts on the pool */
    const int64_t norms[][2] = {{1, 576}, {1, 2048}, {3, 61}, {40, 2048}, {9, 3000}, {128, 576}};
    for (size_t s = 0; s < sizeof norms / sizeof norms[0]; s++)
        for (int threads = 1; threads <= 3; threads++)
            for (int in_place = 0; in_place < 2; in_place++) add_rmsnorm_case(cpu, threads, norms[s][0], norms[s][1], in_place);
    /* tokens, heads, kv heads, head_dim, rope_dim, threads */
    const rope_case ropes[] = {
        {1, 9, 3, 64, 64, 2},    /* a decode step (SmolLM2's heads) */
        {1, 4, 1, 256, 256, 1},  /* Gemma 3's heads */
        {3, 4, 2, 64, 48, 2},    /* rope_dim < head_dim */
        {7, 8, 2, 96, 32, 3},    /* Phi-style partial rotation, three threads */
        {64, 8, 2, 64, 64, 2},   /* a prompt: on the pool */
        {50, 32, 4, 128, 128, 2}, /* a prompt, LLaMA's heads */
        {33, 6, 6, 40, 20, 2},   /* heads of 40: F32 and F16 caches only */
    };
    const tl_dtype kvs[] = {TL_F32, TL_F16, TL_Q8_0};
    for (size_t r = 0; r < sizeof ropes / sizeof ropes[0]; r++)
        for (int neox = 0; neox < 2; neox++)
            for (int k = 0; k < 3; k++) {
                if (kvs[k] == TL_Q8_0 && ropes[r].hd % 32) continue; /* Q8_0 caches: rows of whole blocks */
                rope_store_case(cpu, &ropes[r], neox, kvs[k]);
            }
    tl_device_free(cpu);
    printf("largest normwise error against double %.3g (bound %g)\n", worst, TOL);
    return check_summary();
}

/* Every op of a GPU backend against the CPU backend (the reference) on seeded random inputs of
 * awkward sizes, per weight dtype: matmul on the GEMV path (1..8 tokens) and the GEMM path
 * (more), embeddings, RMSNorm, RoPE, the KV store and attention (F16 and F32 caches, windows,
 * soft-capping, several sequences), the elementwise ops, and the sampling candidates (top_k,
 * bit for bit against the host's). Normwise tolerances per op below.
 * Without a GPU it says so and exits 77 (ctest: skipped).
 *
 *   test_backend_ops [--bench]   (TORCHLESS_TEST_DEVICE=cuda:1 to pick a device)
 *
 * --bench times the ops at LLaMA-2-7B sizes instead (GB/s of weights for decode, TFLOP/s for
 * prefill; the sampling candidates against downloading the rows), for benchmarks/NOTES.md. */
#define _POSIX_C_SOURCE 200809L
#include "backends/backend.h"
#include "check.h"
#include "core/fp16.h"
#include "generate/sampling.h"
#include "model/model.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static float nrand(void) { return (float)(sqrt(-2 * log(check_urand() + 1e-300)) * cos(6.283185307179586 * check_urand())); }
static void fill(float *x, size_t n, float scale) {
    for (size_t i = 0; i < n; i++) x[i] = nrand() * scale;
}

static double normwise(const float *a, const float *b, size_t n) {
    double d = 0, r = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i])) return INFINITY;
        d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        r += (double)b[i] * b[i];
    }
    return sqrt(d / (r > 0 ? r : 1));
}

static tl_device *cpu, *gpu;
static tl_stream *cs, *gs;

/* a device copy of n host bytes (freed with gfree) */
static void *gput(const void *host, size_t bytes) {
    void *p = NULL;
    if (gpu->ops->alloc(gpu, bytes, &p) || gs->ops->upload(gs, p, host, bytes)) {
        printf("device allocation/upload failed: %s\n", tl_last_error());
        exit(1);
    }
    return p;
}
static void gget(void *host, const void *dev, size_t bytes) {
    if (gs->ops->download(gs, host, dev, bytes)) printf("download failed: %s\n", tl_last_error());
}
static void gfree(void *p) { gpu->ops->free(gpu, p); }

static const tl_dtype DTYPES[] = {TL_F32, TL_F16, TL_BF16, TL_Q8_0, TL_Q4_0, TL_Q4_1, TL_Q5_0,
                                  TL_Q5_1, TL_Q4_K, TL_Q5_K, TL_Q6_K, TL_Q2_K, TL_Q3_K};
#define N_DTYPES (sizeof DTYPES / sizeof DTYPES[0])

/* A random weight of m rows x k in dtype t, as a host tensor (data malloc'd). */
static tl_tensor make_weight(tl_dtype t, int64_t m, int64_t k) {
    float *w = malloc((size_t)(m * k) * sizeof(float));
    fill(w, (size_t)(m * k), 1.0f / sqrtf((float)k));
    size_t row = tl_dtype_row_size(t, k);
    uint8_t *q = malloc(row * (size_t)m);
    for (int64_t r = 0; r < m; r++) tl_quantize(t, w + r * k, q + (size_t)r * row, k);
    free(w);
    tl_tensor x = {.dtype = t, .n_dims = 2, .ne = {k, m, 1, 1}, .nbytes = row * (size_t)m, .data = q};
    return x;
}

static void test_matmul(void) {
    /* rows x columns; a few rows, not one: one dot product's relative error has no bound */
    const int64_t shapes[][2] = {{77, 256}, {4, 512}, {33, 768}};
    const int64_t ns[] = {1, 3, 8, 9, 40};
    for (size_t di = 0; di < N_DTYPES; di++)
        for (size_t si = 0; si < 3; si++) {
            const int64_t m = shapes[si][0], k = shapes[si][1];
            tl_tensor h = make_weight(DTYPES[di], m, k), d;
            if (gpu->ops->weight_upload(gpu, &h, &d)) {
                printf("weight_upload %s: %s\n", tl_dtype_name(h.dtype), tl_last_error());
                n_fail++;
                continue;
            }
            float *bias = malloc((size_t)m * sizeof(float));
            fill(bias, (size_t)m, 1.0f);
            float *dbias = gput(bias, (size_t)m * sizeof(float));
            for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
                const int64_t n = ns[ni];
                float *x = malloc((size_t)(n * k) * sizeof(float)), *want = malloc((size_t)(n * m) * sizeof(float));
                float *got = malloc((size_t)(n * m) * sizeof(float));
                fill(x, (size_t)(n * k), 1.0f);
                cs->ops->reserve(cs, n, k);
                gs->ops->reserve(gs, n, k);
                const bool with_bias = ni % 2 == 0;
                cs->ops->matmul(cs, &h, x, n, want, with_bias ? bias : NULL);
                float *dx = gput(x, (size_t)(n * k) * sizeof(float)), *dy = NULL;
                gpu->ops->alloc(gpu, (size_t)(n * m) * sizeof(float), (void **)&dy);
                for (int64_t i = 0; i < n * m; i++) got[i] = NAN; /* poison: every output must be written */
                gs->ops->upload(gs, dy, got, (size_t)(n * m) * sizeof(float));
                gs->ops->matmul(gs, &d, dx, n, dy, with_bias ? dbias : NULL);
                gget(got, dy, (size_t)(n * m) * sizeof(float));
                /* GEMV: float32 activations (rounding only); GEMM: F16 activations and tiles;
                 * dtypes without kernels of their own are F16 on the device */
                const bool converted = h.dtype == TL_Q2_K || h.dtype == TL_Q3_K;
                const double tol = converted ? 2e-3 : n <= 8 || h.dtype == TL_F32 ? 2e-5 : 2e-3;
                const double e = normwise(got, want, (size_t)(n * m));
                CHECK(e <= tol, "matmul %s %lldx%lld n=%lld: normwise %.3g > %.1g", tl_dtype_name(h.dtype), (long long)m,
                      (long long)k, (long long)n, e, tol);
                gfree(dx);
                gfree(dy);
                free(x);
                free(want);
                free(got);
            }
            /* embeddings: rows picked by id, scaled */
            int32_t ids[5] = {0, (int32_t)m - 1, (int32_t)(m / 2), 0, (int32_t)(m / 3)};
            float want[5 * 768], got[5 * 768];
            cs->ops->embed(cs, &h, ids, 5, 1.5f, want);
            int32_t *dids = gput(ids, sizeof ids);
            float *dout = NULL;
            gpu->ops->alloc(gpu, 5 * (size_t)k * sizeof(float), (void **)&dout);
            gs->ops->embed(gs, &d, dids, 5, 1.5f, dout);
            gget(got, dout, 5 * (size_t)k * sizeof(float));
            /* dtypes the GPU keeps as converted F16 round there */
            const double e = normwise(got, want, 5 * (size_t)k);
            CHECK(e <= 1e-3, "embed %s: normwise %.3g", tl_dtype_name(h.dtype), e);
            gfree(dids);
            gfree(dout);
            gfree(dbias);
            free(bias);
            gpu->ops->weight_free(gpu, &d);
            free((void *)h.data);
        }
}

/* CUDA/HIP decode on 8-bit activations (TORCHLESS_ACT_QUANT on, as the CPU): both backends
 * quantize x the same way and multiply the same integers, so only the float sums' order differs.
 * Also: rows quantized once serve several matmuls (q, k, v), and new data in x is seen. Batches
 * of 3 to 8 tokens both through the GEMVs and through CUDA's tensor-core mmq, larger ones through
 * mmq (k a multiple of 256; split-K for the widths of 512 and more, several row tiles at 300). */
static void test_matmul_q8(void) {
    if (strcmp(gpu->ops->name, "opencl") == 0) {
        printf("matmul on 8-bit activations: not on opencl (float activations there): skipped\n");
        return;
    }
    setenv("TORCHLESS_ACT_QUANT", "1", 1);
    const tl_dtype types[] = {TL_Q8_0, TL_Q4_0, TL_Q4_1, TL_Q5_0, TL_Q5_1, TL_Q4_K, TL_Q5_K, TL_Q6_K};
    const int64_t shapes[][2] = {{77, 256}, {4, 512}, {33, 768}, {19, 576}, {300, 1024}};
    const bool mmq = strcmp(gpu->ops->name, "cuda") == 0;
    const int64_t ns[] = {1, 2, 3, 5, 8, 12, 32};
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++)
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
            const int64_t m = shapes[si][0], k = shapes[si][1];
            if (k % 256 && (types[ti] == TL_Q4_K || types[ti] == TL_Q5_K || types[ti] == TL_Q6_K)) continue;
            tl_tensor h = make_weight(types[ti], m, k), h2 = make_weight(types[ti], m, k), d, d2;
            gpu->ops->weight_upload(gpu, &h, &d);
            gpu->ops->weight_upload(gpu, &h2, &d2);
            float *bias = malloc((size_t)m * sizeof(float));
            fill(bias, (size_t)m, 1.0f);
            float *dbias = gput(bias, (size_t)m * sizeof(float));
            for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++)
            for (int via = 0; via < 3; via++) { /* via 0: the tensor cores from 3 tokens (mmv.cuh where it
                                                  * has the dtype); 1: the GEMVs up to 8; 2: mmq.cuh */
                const int64_t n = ns[ni];
                if (via == 1 ? n < 3 || n > 8 : n > 8 && (!mmq || k % 256)) continue; /* mmq: k of whole 256s */
                setenv("TORCHLESS_GPU_MMQ_MIN", via == 1 ? "99" : "3", 1);
                setenv("TORCHLESS_GPU_MMV", via == 2 ? "0" : "1", 1);
                const size_t xb = (size_t)(n * k) * sizeof(float), yb = (size_t)(n * m) * sizeof(float);
                float *x = malloc(xb), *want = malloc(yb), *want2 = malloc(yb), *got = malloc(yb), *g = malloc(yb);
                cs->ops->reserve(cs, n, k);
                gs->ops->reserve(gs, n, k);
                float *dx = NULL, *dy = NULL, *dy2 = NULL;
                gpu->ops->alloc(gpu, xb, (void **)&dx);
                gpu->ops->alloc(gpu, yb, (void **)&dy);
                gpu->ops->alloc(gpu, yb, (void **)&dy2);
                for (int round = 0; round < 2; round++) { /* round 1: new x in the same buffer */
                    fill(x, (size_t)(n * k), round ? 3.0f : 1.0f);
                    gs->ops->upload(gs, dx, x, xb);
                    const float *b = ni % 2 == 0 ? bias : NULL;
                    cs->ops->matmul(cs, &h, x, n, want, b);
                    cs->ops->matmul(cs, &h2, x, n, want2, NULL);
                    gs->ops->matmul(gs, &d, dx, n, dy, b ? dbias : NULL);
                    gs->ops->matmul(gs, &d2, dx, n, dy2, NULL);
                    gget(got, dy, yb);
                    gget(g, dy2, yb);
                    const double e = normwise(got, want, (size_t)(n * m)), e2 = normwise(g, want2, (size_t)(n * m));
                    CHECK(e <= 1e-5 && e2 <= 1e-5, "matmul 8-bit %s %lldx%lld n=%lld via %d round %d: normwise %.3g, %.3g (second)",
                          tl_dtype_name(types[ti]), (long long)m, (long long)k, (long long)n, via, round, e, e2);
                }
                { /* q, k, v in one pass: the first two again, and a third of other rows */
                    tl_tensor h3 = make_weight(types[ti], m + 5, k), d3;
                    gpu->ops->weight_upload(gpu, &h3, &d3);
                    const size_t y3b = (size_t)(n * (m + 5)) * sizeof(float);
                    float *want3 = malloc(y3b), *g3 = malloc(y3b), *dy3 = NULL;
                    gpu->ops->alloc(gpu, y3b, (void **)&dy3);
                    cs->ops->matmul(cs, &h, x, n, want, bias);
                    cs->ops->matmul(cs, &h3, x, n, want3, NULL);
                    gs->ops->matmul_qkv(gs, &d, &d2, &d3, dx, n, dy, dy2, dy3, dbias, NULL, NULL);
                    gget(got, dy, yb);
                    gget(g, dy2, yb);
                    gget(g3, dy3, y3b);
                    const double e = normwise(got, want, (size_t)(n * m)), e2 = normwise(g, want2, (size_t)(n * m)),
                                 e3 = normwise(g3, want3, (size_t)(n * (m + 5)));
                    CHECK(e <= 1e-5 && e2 <= 1e-5 && e3 <= 1e-5, "matmul_qkv 8-bit %s %lldx%lld n=%lld: normwise %.3g %.3g %.3g",
                          tl_dtype_name(types[ti]), (long long)m, (long long)k, (long long)n, e, e2, e3);
                    gfree(dy3), free(want3), free(g3);
                    gpu->ops->weight_free(gpu, &d3), free((void *)h3.data);
                }
                if (n == 1 || n == 5 || n == 12) { /* norms that quantize their output for the next matmuls: the
                                          * same bits as a copy of that output quantized on its own */
                    float *nw = malloc((size_t)k * sizeof(float)), *res = malloc(xb), *normed = malloc(xb);
                    fill(nw, (size_t)k, 1.0f);
                    fill(res, (size_t)(n * k), 1.0f);
                    float *dnw = gput(nw, (size_t)k * sizeof(float)), *dres = gput(res, xb), *dn = NULL, *dcopy = NULL;
                    gpu->ops->alloc(gpu, xb, (void **)&dn);
                    gpu->ops->alloc(gpu, xb, (void **)&dcopy);
                    for (int add = 0; add < 2; add++) {
                        if (add) gs->ops->add_rmsnorm(gs, dres, dx, dn, dnw, n, k, 1e-5f);
                        else gs->ops->rmsnorm(gs, dn, dx, dnw, n, k, 1e-5f);
                        gs->ops->matmul(gs, &d2, dn, n, dy, NULL);
                        gget(normed, dn, xb);
                        gs->ops->upload(gs, dcopy, normed, xb);
                        gs->ops->matmul(gs, &d2, dcopy, n, dy2, NULL);
                        gget(got, dy, yb);
                        gget(g, dy2, yb);
                        CHECK(memcmp(got, g, yb) == 0, "matmul 8-bit %s after %s n=%lld: differs from its input quantized apart",
                              tl_dtype_name(types[ti]), add ? "add_rmsnorm" : "rmsnorm", (long long)n);
                    }
                    gfree(dnw), gfree(dres), gfree(dn), gfree(dcopy), free(nw), free(res), free(normed);
                }
                if (n == 1 || n == 3 || n == 8) /* gate and up in one pass */
                    for (int act = 0; act < 2; act++) {
                        cs->ops->matmul(cs, &h, x, n, want, NULL);
                        cs->ops->matmul(cs, &h2, x, n, want2, NULL);
                        cs->ops->glu(cs, (tl_activation)act, want, want2, n * m);
                        gs->ops->matmul_glu(gs, &d, &d2, dx, n, dy, dy2, (tl_activation)act);
                        gget(got, dy, yb);
                        const double e = normwise(got, want, (size_t)(n * m));
                        /* 5e-5 as for the float GLU: GELU's relative error grows where its value is
                     * small, and a few rows make a normwise error one element's */
                    CHECK(e <= 5e-5, "matmul_glu 8-bit %s %lldx%lld n=%lld act %d: normwise %.3g", tl_dtype_name(types[ti]),
                              (long long)m, (long long)k, (long long)n, act, e);
                    }
                gfree(dx), gfree(dy), gfree(dy2);
                free(x), free(want), free(want2), free(got), free(g);
            }
            gfree(dbias), free(bias);
            gpu->ops->weight_free(gpu, &d), gpu->ops->weight_free(gpu, &d2);
            free((void *)h.data), free((void *)h2.data);
        }
    setenv("TORCHLESS_ACT_QUANT", "0", 1);
    unsetenv("TORCHLESS_GPU_MMQ_MIN");
    unsetenv("TORCHLESS_GPU_MMV");
}

static void test_small_ops(void) {
    const int64_t rows = 7, dim = 200;
    const size_t n = (size_t)(rows * dim);
    float *x = malloc(n * 4), *y = malloc(n * 4), *w = malloc(dim * 4), *want = malloc(n * 4), *got = malloc(n * 4);
    fill(x, n, 2.0f);
    fill(y, n, 1.0f);
    fill(w, (size_t)dim, 1.0f);
    float *dx = gput(x, n * 4), *dy = gput(y, n * 4), *dw = gput(w, dim * 4), *dout = gput(x, n * 4);
    /* rmsnorm (the CPU sums squares in double, the GPU in float) */
    cs->ops->rmsnorm(cs, want, x, w, rows, dim, 1e-5f);
    gs->ops->rmsnorm(gs, dout, dx, dw, rows, dim, 1e-5f);
    gget(got, dout, n * 4);
    CHECK(normwise(got, want, n) <= 1e-6, "rmsnorm %.3g", normwise(got, want, n));
    /* add, glu (both activations), softcap */
    memcpy(want, x, n * 4);
    cs->ops->add(cs, want, y, (int64_t)n);
    gs->ops->upload(gs, dout, x, n * 4);
    gs->ops->add(gs, dout, dy, (int64_t)n);
    gget(got, dout, n * 4);
    CHECK(normwise(got, want, n) == 0, "add");
    for (int act = 0; act < 2; act++) {
        memcpy(want, x, n * 4);
        cs->ops->glu(cs, (tl_activation)act, want, y, (int64_t)n);
        gs->ops->upload(gs, dout, x, n * 4);
        gs->ops->glu(gs, (tl_activation)act, dout, dy, (int64_t)n);
        gget(got, dout, n * 4);
        CHECK(normwise(got, want, n) <= 1e-6, "glu %d: %.3g", act, normwise(got, want, n));
    }
    memcpy(want, x, n * 4);
    cs->ops->softcap(cs, want, (int64_t)n, 1.5f);
    gs->ops->upload(gs, dout, x, n * 4);
    gs->ops->softcap(gs, dout, (int64_t)n, 1.5f);
    gget(got, dout, n * 4);
    CHECK(normwise(got, want, n) <= 1e-6, "softcap %.3g", normwise(got, want, n));
    /* gather */
    int32_t rws[3] = {6, 0, 3};
    cs->ops->gather(cs, want, x, rws, 3, dim);
    int32_t *drows = gput(rws, sizeof rws);
    gs->ops->gather(gs, dout, dx, drows, 3, dim);
    gget(got, dout, 3 * (size_t)dim * 4);
    CHECK(normwise(got, want, 3 * (size_t)dim) == 0, "gather");
    /* rope, both pair orders, a partial rotary dim */
    const int heads = 5, hd = 40, rope_dim = 24, nt = 3;
    float *q = malloc((size_t)nt * heads * hd * 4), *csn = malloc((size_t)nt * rope_dim * 4);
    fill(q, (size_t)nt * heads * hd, 1.0f);
    for (int i = 0; i < nt * rope_dim / 2; i++) {
        double a = check_urand() * 6.28;
        csn[2 * i] = (float)cos(a);
        csn[2 * i + 1] = (float)sin(a);
    }
    float *dcs = gput(csn, (size_t)nt * rope_dim * 4);
    for (int neox = 0; neox < 2; neox++) {
        memcpy(want, q, (size_t)nt * heads * hd * 4);
        cs->ops->rope(cs, want, csn, nt, heads, hd, rope_dim, neox);
        gs->ops->upload(gs, dout, q, (size_t)nt * heads * hd * 4);
        gs->ops->rope(gs, dout, dcs, nt, heads, hd, rope_dim, neox);
        gget(got, dout, (size_t)nt * heads * hd * 4);
        CHECK(normwise(got, want, (size_t)nt * heads * hd) <= 1e-6, "rope neox=%d", neox);
    }
    gfree(dcs);
    gfree(drows);
    free(q);
    free(csn);
    gfree(dx);
    gfree(dy);
    gfree(dw);
    gfree(dout);
    free(x);
    free(y);
    free(w);
    free(want);
    free(got);
}

/* kv_store then attention: 3 sequences of different lengths in one batch, or (one_seq) a
 * prefill of 203 positions of one sequence (the GPU shares key reads among its tokens) */
static void test_attention(tl_dtype kv, int hd, int window, float softcap, bool one_seq) {
    const int heads = 6, kv_heads = 2, max_seq = 300, n_seq = 3;
    const int lens[3] = {one_seq ? 0 : 1, one_seq ? 203 : 130, one_seq ? 0 : 257};
    const size_t cache = (size_t)n_seq * kv_heads * max_seq * hd * tl_dtype_type_size(kv);
    void *ck = calloc(1, cache), *cv = calloc(1, cache), *gk, *gv;
    gpu->ops->alloc(gpu, cache, &gk);
    gpu->ops->alloc(gpu, cache, &gv);
    gs->ops->upload(gs, gk, ck, cache); /* the same zeros where no position is stored */
    gs->ops->upload(gs, gv, cv, cache);
    /* fill each sequence's cache through kv_store, one batch of all positions */
    int total = lens[0] + lens[1] + lens[2];
    int32_t *pos = malloc((size_t)total * 4), *seq = malloc((size_t)total * 4);
    for (int s = 0, i = 0; s < n_seq; s++)
        for (int p = 0; p < lens[s]; p++, i++) pos[i] = p, seq[i] = s;
    float *k = malloc((size_t)total * kv_heads * hd * 4), *v = malloc((size_t)total * kv_heads * hd * 4);
    fill(k, (size_t)total * kv_heads * hd, 1.0f);
    fill(v, (size_t)total * kv_heads * hd, 1.0f);
    cs->ops->kv_store(cs, ck, cv, kv, k, v, pos, seq, total, kv_heads, hd, max_seq);
    float *dk = gput(k, (size_t)total * kv_heads * hd * 4), *dv = gput(v, (size_t)total * kv_heads * hd * 4);
    int32_t *dpos = gput(pos, (size_t)total * 4), *dseq = gput(seq, (size_t)total * 4);
    gs->ops->kv_store(gs, gk, gv, kv, dk, dv, dpos, dseq, total, kv_heads, hd, max_seq);
    uint8_t *back = malloc(cache);
    gget(back, gk, cache);
    CHECK(memcmp(back, ck, cache) == 0, "kv_store keys (%s, hd %d)", tl_dtype_name(kv), hd);
    gget(back, gv, cache);
    CHECK(memcmp(back, cv, cache) == 0, "kv_store values");
    /* every stored position attends (the batch as a prefill of all three) */
    float *q = malloc((size_t)total * heads * hd * 4), *want = malloc((size_t)total * heads * hd * 4);
    float *got = malloc((size_t)total * heads * hd * 4);
    fill(q, (size_t)total * heads * hd, 1.0f);
    tl_attn_args a = {.q = q, .out = want, .k_cache = ck, .v_cache = cv, .kv_dtype = kv, .pos = pos, .seq = seq,
                      .host_pos = pos, .host_seq = seq, .n = total, .n_heads = heads, .n_kv_heads = kv_heads, .head_dim = hd,
                      .max_seq_len = max_seq, .window = window, .scale = 1.0f / sqrtf((float)hd), .softcap = softcap};
    cs->ops->attention(cs, &a);
    float *dq = gput(q, (size_t)total * heads * hd * 4), *dout;
    gpu->ops->alloc(gpu, (size_t)total * heads * hd * 4, (void **)&dout);
    tl_attn_args g = a;
    g.q = dq, g.out = dout, g.k_cache = gk, g.v_cache = gv, g.pos = dpos, g.seq = dseq;
    gs->ops->attention(gs, &g);
    gget(got, dout, (size_t)total * heads * hd * 4);
    double e = normwise(got, want, (size_t)total * heads * hd);
    /* CUDA's prompt of one sequence over an F16 cache (heads of a multiple of 16 up to 128) runs
     * on the tensor cores with F16 queries and probabilities: 3e-3 there, 1e-5 elsewhere */
    const bool tc = one_seq && kv == TL_F16 && hd % 16 == 0 && hd <= 128 && strcmp(gpu->ops->name, "cuda") == 0;
    CHECK(e <= (tc ? 3e-3 : 1e-5), "attention %s hd %d window %d softcap %g one_seq %d: normwise %.3g", tl_dtype_name(kv), hd,
          window, softcap, one_seq, e);
    if (tc) printf("attention on the tensor cores, hd %d window %d softcap %g: normwise %.3g\n", hd, window, softcap, e);
    /* one token decoding the longest sequence alone (a GPU may split its keys: flash-decoding) */
    a.q += (size_t)(total - 1) * heads * hd, a.out += (size_t)(total - 1) * heads * hd;
    a.pos += total - 1, a.seq += total - 1, a.host_pos += total - 1, a.host_seq += total - 1, a.n = 1;
    cs->ops->attention(cs, &a);
    g.q = dq + (size_t)(total - 1) * heads * hd, g.out = dout, g.pos = dpos + total - 1, g.seq = dseq + total - 1;
    g.host_pos = a.host_pos, g.host_seq = a.host_seq, g.n = 1;
    gs->ops->attention(gs, &g);
    gget(got, dout, (size_t)heads * hd * 4);
    e = normwise(got, a.out, (size_t)heads * hd);
    CHECK(e <= 1e-5, "attention of one token %s hd %d window %d softcap %g: normwise %.3g", tl_dtype_name(kv), hd, window,
          softcap, e);
    gfree(dk), gfree(dv), gfree(dpos), gfree(dseq), gfree(dq), gfree(dout);
    gpu->ops->free(gpu, gk);
    gpu->ops->free(gpu, gv);
    free(ck), free(cv), free(pos), free(seq), free(k), free(v), free(back), free(q), free(want), free(got);
}

/* asking for more memory than any device has is an error that says so, and the device stays usable */
static void test_out_of_memory(void) {
    void *p = NULL;
    tl_status s = gpu->ops->alloc(gpu, (size_t)1 << 50, &p);
    CHECK(s == TL_ERR_NOMEM && p == NULL, "alloc of 1 PiB: status %d", (int)s);
    CHECK(strstr(tl_last_error(), "memory") != NULL, "%s", tl_last_error());
    const float x = 1.5f;
    float back = 0;
    float *d = gput(&x, sizeof x);
    gget(&back, d, sizeof back);
    CHECK(back == x);
    gfree(d);
}

/* The fused ops a backend has, against the CPU's plain sequences. */
static void test_fused(void) {
    const int64_t rows = 3, dim = 512;
    const size_t n = (size_t)(rows * dim);
    float *x = malloc(n * 4), *y = malloc(n * 4), *w = malloc(dim * 4), *want = malloc(n * 4), *got = malloc(n * 4);
    fill(x, n, 1.0f), fill(y, n, 1.0f), fill(w, (size_t)dim, 1.0f);
    if (gs->ops->add_rmsnorm) { /* out in y's place */
        float *dx = gput(x, n * 4), *dy = gput(y, n * 4), *dw = gput(w, dim * 4);
        float *xc = malloc(n * 4);
        memcpy(xc, x, n * 4);
        cs->ops->add(cs, xc, y, (int64_t)n);
        cs->ops->rmsnorm(cs, want, xc, w, rows, dim, 1e-5f);
        gs->ops->add_rmsnorm(gs, dx, dy, dy, dw, rows, dim, 1e-5f);
        gget(got, dy, n * 4);
        CHECK(normwise(got, want, n) <= 1e-6, "add_rmsnorm out %.3g", normwise(got, want, n));
        gget(got, dx, n * 4);
        CHECK(normwise(got, xc, n) == 0, "add_rmsnorm x");
        gfree(dx), gfree(dy), gfree(dw), free(xc);
    }
    if (gs->ops->rope_store) {
        const int nt = 3, heads = 4, kvh = 2, hd = 64, rope_dim = 48, max_seq = 16;
        for (int neox = 0; neox < 2; neox++)
            for (int f16 = 0; f16 < 2; f16++) {
                const tl_dtype kv = f16 ? TL_F16 : TL_F32;
                const size_t qn = (size_t)nt * heads * hd, kn = (size_t)nt * kvh * hd;
                const size_t cache = (size_t)2 * kvh * max_seq * hd * tl_dtype_type_size(kv);
                float *q = malloc(qn * 4), *k = malloc(kn * 4), *v = malloc(kn * 4), *csn = malloc((size_t)nt * rope_dim * 4);
                fill(q, qn, 1.0f), fill(k, kn, 1.0f), fill(v, kn, 1.0f), fill(csn, (size_t)nt * rope_dim, 1.0f);
                int32_t pos[3] = {5, 0, 6}, seq[3] = {1, 0, 1};
                float *dq = gput(q, qn * 4), *dk = gput(k, kn * 4), *dv = gput(v, kn * 4), *dcs = gput(csn, (size_t)nt * rope_dim * 4);
                int32_t *dpos = gput(pos, sizeof pos), *dseq = gput(seq, sizeof seq);
                uint8_t *ck = calloc(1, cache), *cv = calloc(1, cache), *back = malloc(cache);
                void *gk = gput(ck, cache), *gv = gput(cv, cache);
                cs->ops->rope(cs, q, csn, nt, heads, hd, rope_dim, neox);
                cs->ops->rope(cs, k, csn, nt, kvh, hd, rope_dim, neox);
                cs->ops->kv_store(cs, ck, cv, kv, k, v, pos, seq, nt, kvh, hd, max_seq);
                gs->ops->rope_store(gs, dq, dk, dv, dcs, nt, heads, kvh, hd, rope_dim, neox, gk, gv, kv, dpos, dseq, max_seq);
                float *gq = malloc(qn * 4);
                gget(gq, dq, qn * 4);
                CHECK(normwise(gq, q, qn) <= 1e-6, "rope_store q neox=%d", neox);
                /* the keys went through RoPE, whose products the GPU may fuse (FMA) where the CPU
                 * rounds each: compared as numbers; the values are stored bit for bit */
                gget(back, gk, cache);
                const size_t cells = cache / tl_dtype_type_size(kv);
                float *fa = malloc(cells * 4), *fb = malloc(cells * 4);
                tl_dequantize(kv, back, fa, (int64_t)cells);
                tl_dequantize(kv, ck, fb, (int64_t)cells);
                CHECK(normwise(fa, fb, cells) <= (f16 ? 1e-3 : 1e-6), "rope_store keys neox=%d f16=%d: %.3g", neox, f16,
                      normwise(fa, fb, cells));
                free(fa), free(fb);
                gget(back, gv, cache);
                CHECK(memcmp(back, cv, cache) == 0, "rope_store values f16=%d", f16);
                gfree(dq), gfree(dk), gfree(dv), gfree(dcs), gfree(dpos), gfree(dseq), gfree(gk), gfree(gv);
                free(q), free(k), free(v), free(csn), free(ck), free(cv), free(back), free(gq);
            }
    }
    if (gs->ops->matmul_glu) {
        const tl_dtype types[] = {TL_F16, TL_Q4_0, TL_Q8_0, TL_Q4_K, TL_Q6_K, TL_Q5_K};
        for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++)
            for (int64_t nn = 1; nn <= 3; nn++)
                for (int act = 0; act < 2; act++) {
                    const int64_t m = 70, k = 768;
                    tl_tensor hg = make_weight(types[ti], m, k), hu = make_weight(types[ti], m, k), dg, du;
                    gpu->ops->weight_upload(gpu, &hg, &dg);
                    gpu->ops->weight_upload(gpu, &hu, &du);
                    float *xx = malloc((size_t)(nn * k) * 4), *a = malloc((size_t)(nn * m) * 4), *b = malloc((size_t)(nn * m) * 4);
                    fill(xx, (size_t)(nn * k), 1.0f);
                    cs->ops->reserve(cs, nn, k);
                    gs->ops->reserve(gs, nn, k);
                    cs->ops->matmul(cs, &hg, xx, nn, a, NULL);
                    cs->ops->matmul(cs, &hu, xx, nn, b, NULL);
                    cs->ops->glu(cs, (tl_activation)act, a, b, nn * m);
                    float *dx = gput(xx, (size_t)(nn * k) * 4), *da, *db;
                    gpu->ops->alloc(gpu, (size_t)(nn * m) * 4, (void **)&da);
                    gpu->ops->alloc(gpu, (size_t)(nn * m) * 4, (void **)&db);
                    gs->ops->matmul_glu(gs, &dg, &du, dx, nn, da, db, (tl_activation)act);
                    float *ga = malloc((size_t)(nn * m) * 4);
                    gget(ga, da, (size_t)(nn * m) * 4);
                    const double e = normwise(ga, a, (size_t)(nn * m));
                    CHECK(e <= 5e-5, "matmul_glu %s n=%lld act %d: normwise %.3g", tl_dtype_name(types[ti]), (long long)nn, act, e);
                    gfree(dx), gfree(da), gfree(db), free(xx), free(a), free(b), free(ga);
                    gpu->ops->weight_free(gpu, &dg), gpu->ops->weight_free(gpu, &du);
                    free((void *)hg.data), free((void *)hu.data);
                }
    }
    if (gs->ops->matmul_qkv) { /* q, k and v of other heights (grouped keys), each with its bias */
        const tl_dtype types[] = {TL_F16, TL_F32, TL_Q4_0, TL_Q8_0, TL_Q4_K, TL_Q6_K};
        const int64_t k = 768, ms[3] = {70, 35, 35};
        for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++)
            for (int64_t nn = 1; nn <= 5; nn += 2) {
                tl_tensor hw[3], dw[3];
                float *want[3], *got[3], *dy[3], *bias[3], *db[3];
                float *xx = malloc((size_t)(nn * k) * 4);
                fill(xx, (size_t)(nn * k), 1.0f);
                cs->ops->reserve(cs, nn, k);
                gs->ops->reserve(gs, nn, k);
                float *dx = gput(xx, (size_t)(nn * k) * 4);
                for (int i = 0; i < 3; i++) {
                    hw[i] = make_weight(types[ti], ms[i], k);
                    gpu->ops->weight_upload(gpu, &hw[i], &dw[i]);
                    bias[i] = malloc((size_t)ms[i] * 4), want[i] = malloc((size_t)(nn * ms[i]) * 4), got[i] = malloc((size_t)(nn * ms[i]) * 4);
                    fill(bias[i], (size_t)ms[i], 1.0f);
                    db[i] = gput(bias[i], (size_t)ms[i] * 4);
                    gpu->ops->alloc(gpu, (size_t)(nn * ms[i]) * 4, (void **)&dy[i]);
                    cs->ops->matmul(cs, &hw[i], xx, nn, want[i], bias[i]);
                }
                gs->ops->matmul_qkv(gs, &dw[0], &dw[1], &dw[2], dx, nn, dy[0], dy[1], dy[2], db[0], db[1], db[2]);
                for (int i = 0; i < 3; i++) {
                    gget(got[i], dy[i], (size_t)(nn * ms[i]) * 4);
                    const double e = normwise(got[i], want[i], (size_t)(nn * ms[i]));
                    CHECK(e <= 5e-5, "matmul_qkv %s n=%lld matrix %d: normwise %.3g", tl_dtype_name(types[ti]), (long long)nn, i, e);
                    gfree(dy[i]), gfree(db[i]), free(want[i]), free(got[i]), free(bias[i]);
                    gpu->ops->weight_free(gpu, &dw[i]), free((void *)hw[i].data);
                }
                gfree(dx), free(xx);
            }
    }
    free(x), free(y), free(w), free(want), free(got);
}

/* ---------------------------------------------------------------- top_k */

/* One case of the top_k op against tl_top_k_reference (the host sampler's definition): ids,
 * order and logits of the candidates, the stats (the integer sum too) and the logits at ids,
 * all bit for bit. kind: 0 normal logits, 1 on a grid of 0.25 (many ties), 2 all equal, 3 mostly
 * -inf, 4 -0 and +0, 5 a NaN and a +inf among normal ones (only the stats are defined). */
static void top_k_case(int32_t rows, int32_t nv, int32_t k, int32_t n_ids, int kind) {
    const size_t n = (size_t)rows * nv;
    float *l = malloc(n * 4), *at_h = malloc((size_t)rows * n_ids * 4 + 4), *at_d = malloc((size_t)rows * n_ids * 4 + 4);
    int32_t *ids = malloc((size_t)rows * n_ids * 4 + 4);
    tl_top_k_stats *st_h = malloc(rows * sizeof *st_h), *st_d = malloc(rows * sizeof *st_d);
    tl_top_k_cand *c_h = malloc((size_t)rows * k * sizeof *c_h), *c_d = malloc((size_t)rows * k * sizeof *c_d);
    for (size_t i = 0; i < n; i++) {
        const float v = nrand() * 3;
        l[i] = kind == 1 ? roundf(v * 4) / 4 : kind == 2 ? 0.75f : kind == 4 ? (check_urand() < 0.5 ? 0.0f : -0.0f) : v;
        if (kind == 3 && check_urand() < 0.99) l[i] = -INFINITY;
    }
    if (kind == 5)
        for (int32_t r = 0; r < rows; r++) {
            l[(size_t)r * nv + (size_t)(check_urand() * nv)] = r % 2 ? NAN : INFINITY;
            l[(size_t)r * nv + (size_t)(check_urand() * nv)] = NAN;
        }
    for (int32_t j = 0; j < rows * n_ids; j++) ids[j] = j % 7 == 3 ? -1 : (int32_t)(check_urand() * nv); /* repeats too */
    tl_top_k_args h = {k, ids, n_ids, st_h, c_h, at_h}, d = {k, ids, n_ids, st_d, c_d, at_d};
    CHECK(tl_top_k_reference(l, rows, nv, &h) == TL_OK, "%s", tl_last_error());
    float *dl = gput(l, n * 4);
    memset(st_d, 0xAB, rows * sizeof *st_d), memset(c_d, 0xAB, (size_t)rows * k * sizeof *c_d); /* poison */
    tl_status s = gs->ops->top_k(gs, dl, rows, nv, &d);
    CHECK(s == TL_OK, "top_k: %s", tl_last_error());
    int bad_stats = 0, bad_cand = 0, bad_at = 0;
    for (int32_t r = 0; r < rows && !s; r++) {
        const tl_top_k_stats *a = &st_d[r], *b = &st_h[r];
        const bool bad_same = a->bad == b->bad && (b->bad < 0 || memcmp(&a->bad_value, &b->bad_value, 4) == 0);
        bad_stats += !(a->max == b->max && bad_same && a->sum_lo == b->sum_lo && a->sum_hi == b->sum_hi);
        if (kind == 5) continue; /* no order among NaNs */
        bad_cand += memcmp(c_d + (size_t)r * k, c_h + (size_t)r * k, (size_t)k * sizeof *c_d) != 0;
        for (int32_t j = 0; j < n_ids; j++)
            bad_at += ids[r * n_ids + j] >= 0 && memcmp(&at_d[r * n_ids + j], &at_h[r * n_ids + j], 4) != 0;
    }
    CHECK(bad_stats == 0 && bad_cand == 0 && bad_at == 0,
          "top_k rows %d n_vocab %d k %d ids %d kind %d: %d rows' stats, %d rows' candidates, %d logits at ids differ",
          (int)rows, (int)nv, (int)k, (int)n_ids, kind, bad_stats, bad_cand, bad_at);
    if (bad_cand && rows > 0) /* the first difference, to see what went wrong */
        for (int32_t i = 0; i < rows * k; i++)
            if (memcmp(&c_d[i], &c_h[i], sizeof c_d[i]) != 0) {
                printf("  candidate %d of row %d: device (%.9g, %d), host (%.9g, %d)\n", (int)(i % k), (int)(i / k),
                       (double)c_d[i].logit, (int)c_d[i].id, (double)c_h[i].logit, (int)c_h[i].id);
                break;
            }
    gfree(dl);
    free(l), free(at_h), free(at_d), free(ids), free(st_h), free(st_d), free(c_h), free(c_d);
}

/* Prompts through the vendor's F16 GEMM: the F16 copy of x made once serves q, k and v (and gate
 * and up); the norms and the GLU write it as they go; a matmul that overwrites x, or new data
 * uploaded into it, is seen. Each result bit for bit the same as the matmul of a separate copy
 * of its input (converted on its own), for F16 weights and for quantized ones (dequantized
 * tiles); the CPU's result at 1e-2 (F16 activations). */
static void test_gemm_half_rows(void) {
    if (!gs->ops->matmul_qkv || !gs->ops->matmul_glu || !gs->ops->add_rmsnorm) {
        printf("F16 rows for the GEMMs: %s has not the fused ops: skipped\n", gpu->ops->name);
        return;
    }
    const tl_dtype types[] = {TL_F16, TL_Q4_K};
    const int64_t n = 40, k = 512, m = 256; /* n past the GEMVs and mmq */
    const size_t xb = (size_t)(n * k) * sizeof(float), yb = (size_t)(n * m) * sizeof(float);
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        tl_tensor h[3], d[3], hd2 = make_weight(types[ti], k, m), dd2; /* dd2: m wide, k rows (a down projection) */
        for (int i = 0; i < 3; i++) h[i] = make_weight(types[ti], m, k), gpu->ops->weight_upload(gpu, &h[i], &d[i]);
        gpu->ops->weight_upload(gpu, &hd2, &dd2);
        const size_t big = xb > yb ? xb : yb;
        float *x = malloc(xb), *nw = malloc((size_t)k * 4), *want = malloc(yb), *got = malloc(big), *got2 = malloc(big);
        float *tmp = malloc(big);
        fill(x, (size_t)(n * k), 1.0f);
        fill(nw, (size_t)k, 1.0f);
        cs->ops->reserve(cs, n, k);
        gs->ops->reserve(gs, n, k);
        float *dx = gput(x, xb), *dnw = gput(nw, (size_t)k * 4), *dn, *dcopy, *dy[3], *dz[3], *da, *db;
        gpu->ops->alloc(gpu, xb, (void **)&dn);
        gpu->ops->alloc(gpu, xb, (void **)&dcopy);
        gs->ops->upload(gs, dcopy, x, xb); /* (add_rmsnorm's y below) */
        gpu->ops->alloc(gpu, yb, (void **)&da);
        gpu->ops->alloc(gpu, yb, (void **)&db);
        for (int i = 0; i < 3; i++) gpu->ops->alloc(gpu, yb, (void **)&dy[i]), gpu->ops->alloc(gpu, yb, (void **)&dz[i]);
        const char *dt = tl_dtype_name(types[ti]);
        /* a GEMM first: the stream now writes F16 rows where it can */
        gs->ops->matmul(gs, &d[0], dx, n, dy[0], NULL);
        cs->ops->matmul(cs, &h[0], x, n, want, NULL);
        gget(got, dy[0], yb);
        CHECK(normwise(got, want, (size_t)(n * m)) <= 1e-2, "gemm %s n=%lld: normwise %.3g against the CPU", dt, (long long)n,
              normwise(got, want, (size_t)(n * m)));
        for (int add = 0; add < 2; add++) { /* a norm, then q, k, v; each against its input copied apart */
            if (add) gs->ops->add_rmsnorm(gs, dx, dcopy, dn, dnw, n, k, 1e-5f);
            else gs->ops->rmsnorm(gs, dn, dx, dnw, n, k, 1e-5f);
            gs->ops->matmul_qkv(gs, &d[0], &d[1], &d[2], dn, n, dy[0], dy[1], dy[2], NULL, NULL, NULL);
            gget(tmp, dn, xb);
            gs->ops->upload(gs, dcopy, tmp, xb);
            for (int i = 0; i < 3; i++) {
                gs->ops->matmul(gs, &d[i], dcopy, n, dz[i], NULL);
                gget(got, dy[i], yb);
                gget(got2, dz[i], yb);
                CHECK(memcmp(got, got2, yb) == 0, "gemm %s after %s, matrix %d of q/k/v: differs from its input converted apart",
                      dt, add ? "add_rmsnorm" : "rmsnorm", i);
            }
        }
        /* gate and up, then the down projection reading the GLU's rows */
        gs->ops->matmul_glu(gs, &d[0], &d[1], dn, n, da, db, TL_ACT_SILU);
        gs->ops->matmul(gs, &dd2, da, n, dcopy, NULL);
        gget(tmp, da, yb);
        gs->ops->upload(gs, db, tmp, yb);
        gs->ops->matmul(gs, &dd2, db, n, dx, NULL);
        gget(got, dcopy, xb);
        gget(tmp, dx, xb);
        CHECK(memcmp(got, tmp, xb) == 0, "gemm %s after matmul_glu: differs from its input converted apart", dt);
        /* a matmul (a GEMV: 4 tokens) writing into rows a norm converted: the next GEMM reads them new */
        gs->ops->rmsnorm(gs, dn, dx, dnw, n, k, 1e-5f);
        gs->ops->matmul(gs, &dd2, da, 4, dn, NULL);
        gs->ops->matmul(gs, &d[0], dn, n, dy[1], NULL);
        gget(tmp, dn, xb);
        gs->ops->upload(gs, dcopy, tmp, xb);
        gs->ops->matmul(gs, &d[0], dcopy, n, dy[2], NULL);
        gget(got, dy[1], yb);
        gget(got2, dy[2], yb);
        CHECK(memcmp(got, got2, yb) == 0, "gemm %s: rows overwritten by a matmul not seen", dt);
        fill(x, (size_t)(n * k), 2.0f); /* new data uploaded into the same buffer */
        gs->ops->upload(gs, dx, x, xb);
        gs->ops->matmul(gs, &d[0], dx, n, dy[0], NULL);
        cs->ops->matmul(cs, &h[0], x, n, want, NULL);
        gget(got, dy[0], yb);
        CHECK(normwise(got, want, (size_t)(n * m)) <= 1e-2, "gemm %s after an upload: normwise %.3g against the CPU", dt,
              normwise(got, want, (size_t)(n * m)));
        for (int i = 0; i < 3; i++) gfree(dy[i]), gfree(dz[i]), gpu->ops->weight_free(gpu, &d[i]), free((void *)h[i].data);
        gpu->ops->weight_free(gpu, &dd2), free((void *)hd2.data);
        gfree(dx), gfree(dnw), gfree(dn), gfree(dcopy), gfree(da), gfree(db);
        free(x), free(nw), free(want), free(got), free(got2), free(tmp);
    }
}

static void test_top_k(void) {
    if (!gs->ops->top_k) {
        printf("top_k: the %s backend has none: skipped\n", gs->ops->name);
        return;
    }
    top_k_case(1, 1000, 1, 0, 0);
    top_k_case(3, 1000, 40, 5, 0);
    top_k_case(2, 1000, 1000, 3, 0);    /* every token */
    top_k_case(1, 5, 5, 2, 0);
    top_k_case(2, 8193, 2, 4, 3);       /* a chunk and one more, mostly -inf */
    top_k_case(4, 32000, 100, 64, 1);   /* ties on a grid */
    top_k_case(2, 50000, 1024, 0, 2);   /* all equal: the lowest ids */
    top_k_case(3, 20000, 257, 9, 4);    /* -0 beside +0 */
    top_k_case(4, 20000, 64, 3, 5);     /* NaN and +inf: the first is found */
    top_k_case(1, 262144, 1, 0, 0);     /* Gemma's vocabulary */
    top_k_case(2, 262144, 41, 65, 0);
    top_k_case(1, 262144, 1024, 1024, 1);
    top_k_case(32, 49152, 105, 64, 0);  /* a batch of sequences */
    for (int i = 0; i < 6; i++) {       /* sizes at random */
        const int32_t nv = 1 + (int32_t)(check_urand() * 70000), k = 1 + (int32_t)(check_urand() * (nv < 1024 ? nv : 1024));
        top_k_case(1 + (int32_t)(check_urand() * 5), nv, k, (int32_t)(check_urand() * 100), (int)(check_urand() * 5));
    }
}

/* Generation whose logits stay on the device (only candidates cross) against the same device's
 * logits downloaded and sampled on the host (TORCHLESS_DEVICE_SAMPLING=0): stories260K, greedy
 * and sampling with top-k/top-p/min-p, penalties and logit bias (a ban, a boost); the same
 * tokens and logprobs bit for bit, and every step of the first through the op (counted). The
 * greedy run from BOS gives the others their prompt: its text up to a token it repeats, so
 * that the first sample's favourite is penalised for being in the prompt. */
static int top_k_calls;
static tl_status counted_top_k(tl_stream *s, const float *logits, int32_t rows, int32_t n_vocab, const tl_top_k_args *a) {
    top_k_calls++;
    return gpu->ops->top_k(s, logits, rows, n_vocab, a);
}

static void test_generation_samples_on_the_device(const char *fixtures) {
    if (!gs->ops->top_k) return;
    char path[4096];
    snprintf(path, sizeof path, "%s/stories260K/stories260K.derived-f32.gguf", fixtures);
    tl_model_load_params lp = tl_model_default_load_params();
    char dev[64]; /* the device under test */
    snprintf(dev, sizeof dev, "%s:%d", gpu->ops->name, gpu->index);
    lp.device = dev;
    tl_model *m = NULL;
    if (tl_model_load_ex(path, &lp, &m)) {
        printf("generation on the device: %s: skipped\n", tl_last_error());
        return;
    }
    tl_context_params cp = tl_context_default_params();
    cp.max_seq_len = 128;
    tl_context *ctx = NULL;
    CHECK(tl_context_new(m, &cp, &ctx) == TL_OK, "%s", tl_last_error());
    if (!ctx) return tl_model_free(m);
    static tl_backend_ops counted;
    counted = *ctx->stream->ops;
    counted.top_k = counted_top_k;
    ctx->stream->ops = &counted;
    int32_t bias_ids[3] = {(int32_t)(check_urand() * 512), (int32_t)(check_urand() * 512), 13};
    float bias[3] = {-INFINITY, 4.0f, 2.5f};
    int32_t prompt[41] = {1};
    int n_prompt = 1;
    for (int set = 0; set < 6; set++) {
        tl_sampler_params sp = tl_sampler_default_params();
        sp.seed = (uint64_t)(check_urand() * 1e9);
        if (set == 0) sp.temperature = 0;
        if (set == 1) sp.temperature = 0.9f, sp.top_k = 40, sp.top_p = 0.9f, sp.min_p = 0.05f, sp.repeat_penalty = 1.3f,
                      sp.presence_penalty = 0.5f, sp.frequency_penalty = 0.3f, sp.penalty_last_n = 16;
        if (set == 2) sp.temperature = 1.5f, sp.top_k = 5, sp.top_p = 1, sp.min_p = 0, sp.repeat_penalty = 1.1f, sp.penalty_last_n = -1;
        if (set == 3) sp.temperature = 1.2f, sp.top_k = 200, sp.n_logit_bias = 3, sp.logit_bias_ids = bias_ids, sp.logit_bias = bias;
        if (set == 4) sp.temperature = 0, sp.n_logit_bias = 3, sp.logit_bias_ids = bias_ids, sp.logit_bias = bias,
                      sp.frequency_penalty = 1.0f;
        if (set == 5) sp.temperature = 0, sp.frequency_penalty = 50; /* never the prompt's tokens */
        int32_t tok[2][40];
        float lp2[2][40];
        int steps[2] = {0, 0}, calls[2] = {0, 0};
        for (int host = 0; host < 2; host++) {
            setenv("TORCHLESS_DEVICE_SAMPLING", host ? "0" : "1", 1);
            tl_sampler *smp = NULL;
            tl_generation *g = NULL;
            tl_generate_params gp = {.max_new_tokens = 40, .ignore_eog = true};
            tl_status st = tl_sampler_new(&sp, 512, &smp);
            if (!st) st = tl_generation_new(ctx, 0, prompt, (size_t)n_prompt, smp, &gp, &g);
            top_k_calls = 0;
            tl_generated out = {0};
            while (!st && !out.finish) {
                st = tl_generation_next(g, &out);
                if (!st && out.token >= 0) tok[host][steps[host]] = out.token, lp2[host][steps[host]++] = out.logprob;
            }
            CHECK(st == TL_OK, "set %d: %s", set, tl_last_error());
            calls[host] = top_k_calls;
            tl_generation_free(g);
            tl_sampler_free(smp);
        }
        unsetenv("TORCHLESS_DEVICE_SAMPLING");
        CHECK(steps[0] == 40 && steps[1] == 40 && memcmp(tok[0], tok[1], sizeof tok[0]) == 0 &&
                  memcmp(lp2[0], lp2[1], sizeof lp2[0]) == 0,
              "set %d: generation on the device differs from the downloaded logits'", set);
        CHECK(calls[0] == 40 && calls[1] == 0, "set %d: %d and %d steps through top_k", set, calls[0], calls[1]);
        for (int i = 1; set == 0 && i < steps[0] && n_prompt == 1; i++)
            for (int j = 0; j < i; j++)
                if (tok[0][j] == tok[0][i]) { /* the prompt: BOS and the text before the first repeat */
                    memcpy(prompt + 1, tok[0], (size_t)i * sizeof *prompt);
                    n_prompt = 1 + i;
                    break;
                }
        if (set == 0) CHECK(n_prompt > 1, "greedy text without a repeated token");
    }
    tl_context_free(ctx);
    tl_model_free(m);
}

/* ---------------------------------------------------------------- --bench */

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

/* The sampling candidates of rows of logits against downloading the rows (what the host
 * sampler reads without the op), µs a call. */
static void bench_top_k(void) {
    if (!gs->ops->top_k) return;
    const int32_t cases[][3] = {{1, 32000, 41}, {1, 262144, 1}, {1, 262144, 41}, {1, 262144, 1024}, {8, 262144, 41},
                                {32, 262144, 41}, {32, 49152, 41}};
    printf("| rows | n_vocab | k | top_k us/call | KB down | rows' download us | MB down |\n|---|---|---|---|---|---|---|\n");
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const int32_t rows = cases[c][0], nv = cases[c][1], k = cases[c][2];
        const size_t n = (size_t)rows * nv;
        float *l = malloc(n * 4);
        fill(l, n, 3.0f);
        float *dl = gput(l, n * 4), *at = malloc((size_t)rows * 64 * 4);
        int32_t *ids = malloc((size_t)rows * 64 * 4);
        for (int32_t j = 0; j < rows * 64; j++) ids[j] = (int32_t)(check_urand() * nv);
        tl_top_k_stats *st = malloc(rows * sizeof *st);
        tl_top_k_cand *cand = malloc((size_t)rows * k * sizeof *cand);
        tl_top_k_args a = {k, ids, 0, st, cand, at};
        gs->ops->top_k(gs, dl, rows, nv, &a); /* warm-up: scratch and kernels */
        const int reps = 50;
        double t = now();
        for (int r = 0; r < reps; r++) gs->ops->top_k(gs, dl, rows, nv, &a);
        t = (now() - t) / reps;
        gget(l, dl, n * 4);
        double d = now();
        for (int r = 0; r < reps; r++) gget(l, dl, n * 4);
        d = (now() - d) / reps;
        printf("| %d | %d | %d | %.1f | %.1f | %.1f | %.1f |\n", (int)rows, (int)nv, (int)k, 1e6 * t,
               rows * tl_top_k_row_bytes(k, 0) / 1e3, 1e6 * d, n * 4 / 1e6);
        gfree(dl), free(l), free(at), free(ids), free(st), free(cand);
    }
}

/* TORCHLESS_BENCH_ONLY="q4_0 11008x4096 1" times only the cases whose "dtype rowsxcols n" label
 * contains it (one kernel for a profiler); =top_k only the sampling candidates */
static void bench(void) {
    const char *only = getenv("TORCHLESS_BENCH_ONLY");
    if (only && strcmp(only, "top_k") == 0) return bench_top_k();
    const int64_t shapes[][2] = {{4096, 4096}, {11008, 4096}, {4096, 11008}, {32000, 4096}};
    const tl_dtype types[] = {TL_F16, TL_Q8_0, TL_Q4_0, TL_Q4_K, TL_Q6_K};
    printf("| dtype | rows x cols | n | activations | us/call | weight GB/s | TFLOP/s |\n|---|---|---|---|---|---|---|\n");
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++)
        for (size_t si = 0; si < 4; si++) {
            const int64_t m = shapes[si][0], k = shapes[si][1];
            char label[64];
            snprintf(label, sizeof label, "%s %lldx%lld ", tl_dtype_name(types[ti]), (long long)m, (long long)k);
            if (only && strncmp(label, only, strlen(label) < strlen(only) ? strlen(label) : strlen(only)) != 0) continue;
            /* copies to rotate through, so that the weights come from memory, not the L2 cache */
            tl_tensor h = make_weight(types[ti], m, k), d[8];
            int copies = h.nbytes >= (64 << 20) ? 1 : h.nbytes >= (16 << 20) ? 4 : 8;
            if (getenv("TORCHLESS_BENCH_L2")) copies = 1; /* the weights from the L2 cache where they fit */
            for (int c = 0; c < copies; c++)
                if (gpu->ops->weight_upload(gpu, &h, &d[c])) {
                    printf("upload: %s\n", tl_last_error());
                    return;
                }
            const int64_t ns[] = {1, 2, 4, 8, 16, 32, 64, 512};
            for (int ni = 0; ni < 8; ni++) {
                const int64_t n = ns[ni];
                char full[80];
                snprintf(full, sizeof full, "%s%lld", label, (long long)n);
                if (only && strcmp(full, only) != 0 && strlen(only) > strlen(label)) continue;
                float *x = malloc((size_t)(n * k) * 4);
                fill(x, (size_t)(n * k), 1.0f);
                float *dx = gput(x, (size_t)(n * k) * 4), *dy;
                gpu->ops->alloc(gpu, (size_t)(n * m) * 4, (void **)&dy);
                gs->ops->reserve(gs, n, k);
                const int reps = n == 512 ? 10 : 100;
                /* quantized weights: on float activations (the GEMVs up to 8 tokens, cuBLAS past),
                 * on 8-bit ones through the GEMVs (up to 8) and through mmq (from 2 to 32); the
                 * rows quantized once here: they are the same every call */
                const bool quantized = h.dtype != TL_F16;
                for (int q8 = 0; q8 < (quantized ? 4 : 1); q8++) { /* 3: mmq.cuh where mmv.cuh would run */
                    if ((q8 == 1 && n > 8) || (q8 >= 2 && (n < 2 || n > 32))) continue;
                    setenv("TORCHLESS_ACT_QUANT", q8 ? "1" : "0", 1);
                    setenv("TORCHLESS_GPU_MMQ_MIN", q8 >= 2 ? "2" : "99", 1);
                    setenv("TORCHLESS_GPU_MMV", q8 == 3 ? "0" : "1", 1);
                    gs->ops->matmul(gs, &d[0], dx, n, dy, NULL);
                    gs->ops->sync(gs);
                    double t = now();
                    for (int r = 0; r < reps; r++) gs->ops->matmul(gs, &d[r % copies], dx, n, dy, NULL);
                    gs->ops->sync(gs);
                    t = (now() - t) / reps;
                    printf("| %s | %lldx%lld | %lld | %s | %.1f | %.0f | %.1f |\n", tl_dtype_name(h.dtype), (long long)m,
                           (long long)k, (long long)n, q8 == 3 ? "int8 mmq" : q8 == 2 ? "int8 mma" : q8 ? "int8" : "float", 1e6 * t, h.nbytes / t / 1e9,
                           2.0 * m * k * n / t / 1e12);
                }
                setenv("TORCHLESS_ACT_QUANT", "0", 1);
                unsetenv("TORCHLESS_GPU_MMQ_MIN");
                unsetenv("TORCHLESS_GPU_MMV");
                gfree(dx), gfree(dy), free(x);
            }
            for (int c = 0; c < copies; c++) gpu->ops->weight_free(gpu, &d[c]);
            free((void *)h.data);
        }
    if (only && strcmp(only, "attention") != 0) return; /* TORCHLESS_BENCH_ONLY=attention: only that */
    if (!only) bench_top_k();
    /* attention: 32 heads of 128, decode at 512 and 4096 positions, and a 512-token prefill */
    const int heads = 32, hd = 128, max_seq = 4096;
    const size_t cache = (size_t)heads * max_seq * hd * 2;
    void *gk, *gv;
    gpu->ops->alloc(gpu, cache, &gk);
    gpu->ops->alloc(gpu, cache, &gv);
    const int cases[][2] = {{1, 511}, {1, 4095}, {512, 0}}; /* tokens, position of the first */
    for (int c = 0; c < 3; c++) {
        const int n = cases[c][0];
        int32_t *pos = malloc((size_t)n * 4), *seq = calloc((size_t)n, 4);
        for (int i = 0; i < n; i++) pos[i] = cases[c][1] + i;
        float *q = malloc((size_t)n * heads * hd * 4);
        fill(q, (size_t)n * heads * hd, 1.0f);
        float *dq = gput(q, (size_t)n * heads * hd * 4), *dout;
        int32_t *dpos = gput(pos, (size_t)n * 4), *dseq = gput(seq, (size_t)n * 4);
        gpu->ops->alloc(gpu, (size_t)n * heads * hd * 4, (void **)&dout);
        tl_attn_args a = {.q = dq, .out = dout, .k_cache = gk, .v_cache = gv, .kv_dtype = TL_F16, .pos = dpos, .seq = dseq,
                          .host_pos = pos, .host_seq = seq, .n = n, .n_heads = heads, .n_kv_heads = heads, .head_dim = hd,
                          .max_seq_len = max_seq, .window = 0, .scale = 0.088f, .softcap = 0};
        gs->ops->attention(gs, &a);
        gs->ops->sync(gs);
        const int reps = 50;
        double t = now();
        for (int r = 0; r < reps; r++) gs->ops->attention(gs, &a);
        gs->ops->sync(gs);
        t = (now() - t) / reps;
        printf("attention: %d tokens from position %d: %.1f us\n", n, cases[c][1], 1e6 * t);
        gfree(dq), gfree(dout), gfree(dpos), gfree(dseq), free(q), free(pos), free(seq);
    }
    gpu->ops->free(gpu, gk);
    gpu->ops->free(gpu, gv);
}

int main(int argc, char **argv) {
    /* the GPU backends keep float activations: so must the CPU reference here */
    setenv("TORCHLESS_ACT_QUANT", "0", 1);
    const char *want = getenv("TORCHLESS_TEST_DEVICE");
    tl_device_info info[16];
    int n = tl_devices(info, 16);
    char name[64] = "";
    for (int i = 0; i < n && i < 16 && !want; i++)
        if (strcmp(info[i].backend, "cpu") != 0) {
            snprintf(name, sizeof name, "%.15s:%d", info[i].backend, info[i].index);
            break;
        }
    if (want) snprintf(name, sizeof name, "%.63s", want);
    if (!name[0]) {
        printf("no GPU device found (backends built:");
        for (const char *const *b = tl_backends_built(); *b; b++) printf(" %s", *b);
        printf("): skipped\n");
        return 77;
    }
    if (tl_device_open("cpu", &cpu) || tl_device_open(name, &gpu) || cpu->ops->stream_new(cpu, 4, &cs) ||
        gpu->ops->stream_new(gpu, 1, &gs)) {
        printf("opening %s: %s\n", name, tl_last_error());
        return 1;
    }
    const char *s = getenv("TORCHLESS_SEED");
    *check_rng() = s ? strtoull(s, NULL, 10) : (uint64_t)time(NULL);
    printf("seed %llu, device %s (%s)\n", (unsigned long long)*check_rng(), name, gpu->name);
    if (argc > 1 && strcmp(argv[1], "--bench") == 0) {
        bench();
    } else {
        test_matmul();
        test_matmul_q8();
        test_small_ops();
        test_fused();
        test_gemm_half_rows();
        test_out_of_memory();
        test_top_k();
        test_generation_samples_on_the_device(argc > 2 ? argv[2] : "../shared/fixtures");
        for (int kv = 0; kv < 2; kv++) {
            const tl_dtype t = kv ? TL_F32 : TL_F16;
            for (int one = 0; one < 2; one++) {
                test_attention(t, 64, 0, 0, one);
                test_attention(t, 24, 0, 0, one);
                test_attention(t, 128, 100, 0, one);
                test_attention(t, 256, 0, 1.5f, one);
                test_attention(t, 64, 50, 2.0f, one);
            }
        }
    }
    tl_status st = gs->ops->sync(gs);
    CHECK(st == TL_OK, "queued work failed: %s", tl_last_error());
    gs->ops->stream_free(gs);
    cs->ops->stream_free(cs);
    tl_device_free(gpu);
    tl_device_free(cpu);
    return check_summary();
}

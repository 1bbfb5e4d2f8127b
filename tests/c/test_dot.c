/* The SIMD kernels of core/dot.c against the portable path (dequantize with the dtype table,
 * then a dot), at the dispatch level this process runs: ctest runs it once per level of the
 * architecture (TORCHLESS_CPU=...), and a level the CPU lacks is skipped. Seeded random inputs
 * of awkward sizes (one block, an odd number of blocks, float rows that are no multiple of the
 * vector width, one cached row); normwise error at most 1e-5 against a double-precision sum,
 * since the kernels sum in another order. */
#include "core/cpu.h"
#include "core/dot.h"
#include "core/fp16.h"
#include "core/matmul.h"
#include "core/quants.h"
#include "torchless.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"

#define TOL 1e-5

static uint64_t state;
static double uniform(void) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(state >> 11) / 9007199254740992.0;
}

static void fill(float *v, int64_t n, double scale) {
    for (int64_t i = 0; i < n; i++) v[i] = (float)((uniform() * 2 - 1) * scale);
}

/* one row of n elements of type t: the fused kernel against the dequantized row */
static void check_dot_row(tl_dtype t, tl_dot_fn dot, int64_t n, int trial, float *w, float *x, float *deq, void *q) {
    fill(w, n, trial % 5 == 0 ? 1e-3 : trial % 7 == 0 ? 1e3 : 1.0);
    fill(x, n, 1.0);
    if (trial == 0)
        for (int64_t i = 0; i < n && i < 64; i++) w[i] = 0; /* zero blocks */
    CHECK(tl_quantize(t, w, q, n) == TL_OK);
    CHECK(tl_dequantize(t, q, deq, n) == TL_OK);
    double ref = 0, mag = 0;
    for (int64_t i = 0; i < n; i++) {
        ref += (double)deq[i] * x[i];
        mag += fabs((double)deq[i] * x[i]);
    }
    const float got = dot(q, x, n), portable = tl_dot_f32(deq, x, n);
    CHECK(fabs(got - ref) <= TOL * mag + 1e-30, "%s n=%lld trial %d: %g vs %g", tl_dtype_name(t), (long long)n, trial,
          (double)got, ref);
    CHECK(fabs(portable - ref) <= TOL * mag + 1e-30);
}

static void test_dot_kernels(void) {
    const tl_dtype types[] = {TL_F32, TL_F16, TL_BF16, TL_Q4_0, TL_Q4_1, TL_Q5_0, TL_Q5_1, TL_Q8_0, TL_Q4_K, TL_Q6_K};
    enum { MAX_N = 4096 };
    float *w = malloc(MAX_N * sizeof(float)), *x = malloc(MAX_N * sizeof(float)), *deq = malloc(MAX_N * sizeof(float));
    void *q = malloc(MAX_N * sizeof(float));
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        const tl_dtype t = types[ti];
        const tl_dot_fn dot = tl_dot_kernel(t);
        if (!dot) continue;
        const int64_t bs = tl_dtype_block_size(t);
        /* plain types: tails of every length below the vector width, and past the unrolled steps
         * (83 = 64 + 16 + 3), a TinyLlama row (2,048); blocks: one, two, three, five, eight, many */
        const int64_t sizes[] = {bs == 1 ? 1 : bs,        bs == 1 ? 7 : 3 * bs,    bs == 1 ? 33 : 5 * bs,
                                 bs == 1 ? 83 : 2 * bs,   bs == 1 ? 1029 : 16 * bs, bs == 1 ? 2048 : 8 * bs};
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++)
            for (int trial = 0; trial < 30; trial++) check_dot_row(t, dot, sizes[si], trial, w, x, deq, q);
    }
    free(w);
    free(x);
    free(deq);
    free(q);
}

/* nk cached rows of kv type, `stride` elements apart (other heads between them): block scores
 * q . k_t and out += sum_t p[t] v_t against double sums over the stored values */
static void check_attention(tl_dtype kv, int hd, int nk, tl_attn_scores_fn scores, tl_attn_values_fn values) {
    enum { MAX_HD = 128, MAX_NK = 64, MAX_ROWS = MAX_NK * (MAX_HD + 8) };
    static float kf[MAX_ROWS], vf[MAX_ROWS], kd[MAX_ROWS], vd[MAX_ROWS];
    static uint8_t kbuf[MAX_ROWS * 4], vbuf[MAX_ROWS * 4];
    float q[MAX_HD], s[MAX_NK], p[MAX_NK], out[MAX_HD], out0[MAX_HD];
    const size_t stride = (size_t)hd + 8, rows = (size_t)nk * stride;
    fill(kf, (int64_t)rows, 2.0);
    fill(vf, (int64_t)rows, 2.0);
    fill(q, hd, 1.0);
    fill(out0, hd, 1.0);
    for (int t = 0; t < nk; t++) p[t] = (float)uniform();
    CHECK(tl_quantize(kv, kf, kbuf, (int64_t)rows) == TL_OK && tl_dequantize(kv, kbuf, kd, (int64_t)rows) == TL_OK);
    CHECK(tl_quantize(kv, vf, vbuf, (int64_t)rows) == TL_OK && tl_dequantize(kv, vbuf, vd, (int64_t)rows) == TL_OK);
    scores(q, kbuf, stride, nk, hd, s);
    for (int t = 0; t < nk; t++) {
        double ref = 0, mag = 0;
        for (int d = 0; d < hd; d++) {
            ref += (double)q[d] * kd[t * stride + d];
            mag += fabs((double)q[d] * kd[t * stride + d]);
        }
        CHECK(fabs(s[t] - ref) <= TOL * mag, "%s scores hd=%d nk=%d [%d]: %g vs %g", tl_dtype_name(kv), hd, nk, t,
              (double)s[t], ref);
    }
    for (int d = 0; d < hd; d++) out[d] = out0[d];
    values(out, p, vbuf, stride, nk, hd);
    for (int d = 0; d < hd; d++) {
        double ref = out0[d], mag = fabs(out0[d]);
        for (int t = 0; t < nk; t++) {
            ref += (double)p[t] * vd[t * stride + d];
            mag += fabs((double)p[t] * vd[t * stride + d]);
        }
        CHECK(fabs(out[d] - ref) <= TOL * mag, "%s values hd=%d nk=%d [%d]: %g vs %g", tl_dtype_name(kv), hd, nk, d,
              (double)out[d], ref);
    }
}

/* A float matrix's copy at load (tl_matmul_interleave: the rows as they are, in huge pages, from
 * 1 MB on shared out among threads, a last group of fewer than 16 rows) holds the same bytes, and
 * exists where the level has the dtype's dot kernel (unless TORCHLESS_INTERLEAVE=0) */
static void test_float_matrix_copy(void) {
    const tl_dtype types[] = {TL_F32, TL_F16, TL_BF16};
    const char *off = getenv("TORCHLESS_INTERLEAVE");
    for (size_t ti = 0; ti < 3; ti++) {
        const tl_dtype t = types[ti];
        const int64_t m = 1003, k = 1024; /* 2 MB (F16) to 4 MB (F32) */
        const size_t bytes = (size_t)m * tl_dtype_row_size(t, k);
        uint8_t *w = malloc(bytes);
        for (size_t i = 0; i < bytes; i++) w[i] = (uint8_t)(uniform() * 256);
        const tl_tensor wt = {.dtype = t, .n_dims = 2, .ne = {k, m, 1, 1}, .nbytes = bytes, .data = w};
        for (int threads = 1; threads <= 3; threads += 2) {
            uint8_t *copy = tl_matmul_interleave(&wt, threads);
            CHECK(!copy == (!tl_dot_kernel(t) || (off && strcmp(off, "0") == 0)), "%s: a copy where the level has kernels",
                  tl_dtype_name(t));
            CHECK(!copy || memcmp(copy, w, bytes) == 0, "%s: the copy on %d threads differs", tl_dtype_name(t), threads);
            free(copy);
        }
        free(w);
    }
}

static void test_attention_kernels(void) {
    const tl_dtype kvs[] = {TL_F32, TL_F16};
    const int hds[] = {8, 24, 64, 128}, nks[] = {1, 3, 64};
    for (int i = 0; i < 2; i++) {
        tl_attn_scores_fn scores;
        tl_attn_values_fn values;
        /* a head size that is no multiple of 8 has no block kernels: the caller goes row by row */
        CHECK(!tl_attn_kernels(kvs[i], 12, &scores, &values) && !scores && !values);
        for (int h = 0; h < 4; h++) {
            if (!tl_attn_kernels(kvs[i], hds[h], &scores, &values)) continue;
            for (int k = 0; k < 3; k++)
                for (int trial = 0; trial < 5; trial++) check_attention(kvs[i], hds[h], nks[k], scores, values);
        }
    }
}

/* the row kernels over float tiles (or, f16, over halves as cached): nr query rows by nk keys and
 * values, every tail of the 4x4 (8x2) register tiles, against double sums; entries of s outside
 * [0, nr) x [0, nk) stay untouched */
static void check_attention_rows(int hd, int nr, int nk, bool f16, tl_attn_scores_rows_fn scores, tl_attn_values_rows_fn values,
                                 tl_attn_scores_rows_f16_fn scores_h, tl_attn_values_rows_f16_fn values_h) {
    enum { MAX_HD = 256, MAX_NK = 67, MAX_NR = 17, LD = MAX_NK + 3 };
    static float q[MAX_NR * MAX_HD], k[MAX_NK * MAX_HD], v[MAX_NK * MAX_HD], out[MAX_NR * MAX_HD], out0[MAX_NR * MAX_HD];
    static uint16_t kh[MAX_NK * MAX_HD], vh[MAX_NK * MAX_HD];
    static float s[MAX_NR * LD], p[MAX_NR * LD];
    fill(q, (int64_t)nr * hd, 1.0);
    fill(k, (int64_t)nk * hd, 2.0);
    fill(v, (int64_t)nk * hd, 2.0);
    fill(out0, (int64_t)nr * hd, 1.0);
    for (int i = 0; i < nk * hd; i++) { /* the halves' values are the keys and values checked */
        kh[i] = tl_f32_to_f16(k[i]), vh[i] = tl_f32_to_f16(v[i]);
        if (f16) k[i] = tl_f16_to_f32(kh[i]), v[i] = tl_f16_to_f32(vh[i]);
    }
    for (int i = 0; i < MAX_NR * LD; i++) s[i] = -7.0f, p[i] = (float)uniform();
    if (f16)
        scores_h(q, nr, kh, nk, hd, s, LD);
    else
        scores(q, nr, k, nk, hd, s, LD);
    int bad = 0;
    for (int r = 0; r < MAX_NR; r++)
        for (int t = 0; t < LD; t++) {
            if (r >= nr || t >= nk) {
                bad += s[r * LD + t] != -7.0f;
                continue;
            }
            double ref = 0, mag = 0;
            for (int d = 0; d < hd; d++) {
                ref += (double)q[r * hd + d] * k[t * hd + d];
                mag += fabs((double)q[r * hd + d] * k[t * hd + d]);
            }
            bad += !(fabs(s[r * LD + t] - ref) <= TOL * mag);
        }
    CHECK(bad == 0, "row scores (%s) hd=%d nr=%d nk=%d: %d entries wrong", f16 ? "f16" : "f32", hd, nr, nk, bad);
    memcpy(out, out0, sizeof(float) * (size_t)nr * hd);
    if (f16)
        values_h(out, nr, p, LD, vh, nk, hd);
    else
        values(out, nr, p, LD, v, nk, hd);
    bad = 0;
    for (int r = 0; r < nr; r++)
        for (int d = 0; d < hd; d++) {
            double ref = out0[r * hd + d], mag = fabs(out0[r * hd + d]);
            for (int t = 0; t < nk; t++) {
                ref += (double)p[r * LD + t] * v[t * hd + d];
                mag += fabs((double)p[r * LD + t] * v[t * hd + d]);
            }
            bad += !(fabs(out[r * hd + d] - ref) <= TOL * mag);
        }
    CHECK(bad == 0, "row values (%s) hd=%d nr=%d nk=%d: %d entries wrong", f16 ? "f16" : "f32", hd, nr, nk, bad);
}

static void test_attention_rows_kernels(void) {
    tl_attn_scores_rows_fn scores;
    tl_attn_values_rows_fn values;
    tl_attn_scores_rows_f16_fn scores_h;
    tl_attn_values_rows_f16_fn values_h;
    /* AVX-512 takes 8 keys a step in two halves of 4: nk 12 and 13 end on a half, 67 inside one */
    const int hds[] = {4, 8, 16, 24, 40, 64, 80, 128, 256}, nrs[] = {1, 3, 4, 5, 8, 9, 11, 16, 17},
              nks[] = {1, 3, 4, 5, 12, 13, 64, 67};
    CHECK(!tl_attn_rows_kernels(6, &scores, &values) && !scores && !values);
    CHECK(!tl_attn_rows_f16_kernels(6, &scores_h, &values_h) && !scores_h && !values_h);
    for (int h = 0; h < 9; h++) {
        const bool rows = tl_attn_rows_kernels(hds[h], &scores, &values), halves = tl_attn_rows_f16_kernels(hds[h], &scores_h, &values_h);
        CHECK(!halves || rows); /* the cache's halves are read as they lie only where float tiles could be */
        for (int f16 = 0; f16 < 2; f16++) {
            if (!(f16 ? halves : rows)) continue;
            CHECK(f16 ? scores_h && values_h : scores && values);
            for (int r = 0; r < 9; r++)
                for (int k = 0; k < 8; k++) check_attention_rows(hds[h], nrs[r], nks[k], f16, scores, values, scores_h, values_h);
        }
    }
}

/* every half widened as tl_f16_to_f32 widens it, bit for bit (a NaN as a NaN), from every
 * starting offset of a vector */
static void test_f16_widen(void) {
    const tl_f16_widen_fn widen = tl_f16_widen_kernel();
    if (!widen) return;
    enum { N = 65536 + 40 };
    uint16_t *h = malloc(N * sizeof(uint16_t));
    float *f = malloc(N * sizeof(float));
    for (int i = 0; i < N; i++) h[i] = (uint16_t)i;
    for (int off = 0; off < 33; off += 11) {
        widen(h + off, f, N - 40);
        int bad = 0;
        for (int i = 0; i < N - 40; i++) {
            const float want = tl_f16_to_f32(h[off + i]);
            bad += isnan(want) ? !isnan(f[i]) : memcmp(&want, f + i, sizeof want) != 0;
        }
        CHECK(bad == 0, "f16 widen from offset %d: %d halves differ", off, bad);
    }
    free(h);
    free(f);
}

/* Q8_0 cache rows widened as tl_dequantize_row_q8_0 dequantizes them, bit for bit: every code
 * under every finite scale (one block a scale: d runs over all 63,488 finite halves), then rows
 * of random blocks of 1 to 9 blocks */
static void test_q8_0_widen(void) {
    const tl_q8_0_widen_fn widen = tl_q8_0_widen_kernel();
    CHECK(widen != NULL);
    enum { BLOCKS = 65536 };
    block_q8_0 *b = malloc(BLOCKS * sizeof *b);
    float *want = malloc((size_t)BLOCKS * QK8_0 * sizeof(float)), *got = malloc((size_t)BLOCKS * QK8_0 * sizeof(float));
    int n = 0;
    for (int h = 0; h < 65536; h++) {
        if (!isfinite(tl_f16_to_f32((uint16_t)h))) continue;
        b[n].d = (uint16_t)h;
        for (int j = 0; j < QK8_0; j++) b[n].qs[j] = (int8_t)(8 * j + h); /* every code over the scales */
        n++;
    }
    tl_dequantize_row_q8_0(b, want, (int64_t)n * QK8_0);
    widen(b, got, (int64_t)n * QK8_0);
    CHECK(memcmp(want, got, (size_t)n * QK8_0 * sizeof(float)) == 0, "q8_0 widen differs from tl_dequantize_row_q8_0");
    for (int rows = 1; rows <= 9; rows++) {
        for (int i = 0; i < rows; i++) {
            b[i].d = tl_f32_to_f16((float)check_urand() * 0.05f);
            for (int j = 0; j < QK8_0; j++) b[i].qs[j] = (int8_t)(check_urand() * 255 - 127);
        }
        memset(got, 0, (size_t)(rows + 1) * QK8_0 * sizeof(float));
        tl_dequantize_row_q8_0(b, want, rows * QK8_0);
        widen(b, got, rows * QK8_0);
        CHECK(memcmp(want, got, (size_t)rows * QK8_0 * sizeof(float)) == 0 && got[rows * QK8_0] == 0.0f,
              "q8_0 widen of %d blocks", rows);
    }
    free(b), free(want), free(got);
}

/* softmax numerators: exp(s - m) within 2 ulp of expf, down to where it underflows */
static void test_exp_sum(void) {
    const tl_exp_sum_fn exp_sum = tl_exp_sum_kernel();
    if (!exp_sum) return;
    float sc[67], want[67];
    for (int trial = 0; trial < 200; trial++) {
        const int len = 1 + trial % 67;
        const float m = (float)(uniform() * 40 - 20);
        double total = 0;
        for (int i = 0; i < len; i++) {
            double spread = trial % 4 == 0 ? 120.0 : trial % 4 == 1 ? 1.0 : 30.0;
            sc[i] = i == 0 ? m : m - (float)(uniform() * spread);
            want[i] = expf(sc[i] - m);
            total += want[i];
        }
        float got = exp_sum(sc, len, m);
        CHECK(fabs(got - total) <= 4e-7 * total, "exp sum trial %d: %g vs %g", trial, (double)got, total);
        for (int i = 0; i < len; i++)
            CHECK(fabsf(sc[i] - want[i]) <= 2.5e-7f * want[i] + 2e-38f, "exp trial %d [%d]: %.9g vs %.9g", trial, i,
                  (double)sc[i], (double)want[i]);
    }
}

/* the vector GELU-tanh GLU against dot.h's scalar formula, within the bound dot.h states, on
 * a dense sweep of [-20, 20] (both tails and the bend) and random gates */
/* every length to 70 (each vector tail), scores of either sign and a NaN among them: the products
 * bit for bit s[i] * scale, and the maximum the scalar comparison's (a NaN passed over) */
static void test_scale_max(void) {
    const tl_scale_max_fn scale_max = tl_scale_max_kernel();
    if (!scale_max) return;
    enum { N = 70 };
    float s[N + 1], want[N];
    for (int len = 0; len <= N; len++)
        for (int nan = 0; nan < 2; nan++) {
            const float scale = (float)(uniform() + 0.05);
            for (int i = 0; i <= N; i++) s[i] = (float)(uniform() * 200 - 100);
            if (nan && len > 0) s[len / 2] = NAN;
            float m = -INFINITY;
            for (int i = 0; i < len; i++) {
                want[i] = s[i] * scale;
                m = want[i] > m ? want[i] : m;
            }
            const float sentinel = s[len];
            const float got = scale_max(s, len, scale);
            int bad = s[len] != sentinel;
            for (int i = 0; i < len; i++) bad += memcmp(&s[i], &want[i], sizeof(float)) != 0;
            CHECK(bad == 0 && got == m, "scale_max len=%d nan=%d: %d products wrong, max %g want %g", len, nan, bad,
                  (double)got, (double)m);
        }
}

static void test_gelu_glu(void) {
    const tl_gelu_glu_fn gelu_glu = tl_gelu_glu_kernel();
    if (!gelu_glu) return;
    enum { N = 1 << 16 };
    static float a[N], b[N], x[N];
    for (int trial = 0; trial < 8; trial++) {
        for (int i = 0; i < N; i++) {
            x[i] = a[i] = -20.0f + 40.0f * (float)i / N + (float)(uniform() * 1e-3);
            b[i] = trial == 0 ? 1.0f : (float)(uniform() * 4 - 2);
        }
        const int n = N - trial; /* tails shorter than a vector */
        gelu_glu(a, b, n);
        int bad = 0;
        for (int i = 0; i < n; i++) {
            const float want = tl_gelu_tanh(x[i]) * b[i];
            const float ulp4 = want != 0.0f ? ldexpf(4.0f, ilogbf(want) - 23) : 0.0f;
            if (!(fabsf(a[i] - want) <= ulp4 + ldexpf(fabsf(x[i] * b[i]), -22))) {
                if (bad++ < 5) CHECK(false, "gelu trial %d x %.9g: %.9g vs %.9g", trial, (double)x[i], (double)a[i], (double)want);
            }
        }
        CHECK(bad == 0, "gelu trial %d: %d elements outside the bound", trial, bad);
    }
}

/* the vector SiLU GLU against x / (1 + exp(-x)) · b in double, within the bound dot.h states,
 * on a dense sweep of [-100, 100] (both tails, past the cap at 88, and the bend) and random gates */
static void test_silu_glu(void) {
    const tl_gelu_glu_fn silu_glu = tl_silu_glu_kernel();
    if (!silu_glu) return;
    enum { N = 1 << 16 };
    static float a[N], b[N], x[N];
    for (int trial = 0; trial < 8; trial++) {
        const float span = trial < 4 ? 20.0f : 100.0f;
        for (int i = 0; i < N; i++) {
            x[i] = a[i] = -span + 2 * span * (float)i / N + (float)(uniform() * 1e-3);
            b[i] = trial % 4 == 0 ? 1.0f : (float)(uniform() * 4 - 2);
        }
        const int n = N - trial; /* tails shorter than a vector */
        silu_glu(a, b, n);
        int bad = 0;
        for (int i = 0; i < n; i++) {
            const double want = (double)x[i] / (1.0 + exp(-(double)x[i])) * b[i];
            const double ulp4 = want != 0.0 ? ldexp(4.0, ilogb(want) - 23) : 0.0;
            if (!(fabs(a[i] - want) <= ulp4 + ldexp(fabs((double)x[i] * b[i]), -126))) {
                if (bad++ < 5) CHECK(false, "silu trial %d x %.9g: %.9g vs %.9g", trial, (double)x[i], (double)a[i], want);
            }
        }
        CHECK(bad == 0, "silu trial %d: %d elements outside the bound", trial, bad);
    }
}

int main(void) {
    if (check_cpu_level_missing()) return CHECK_SKIPPED;
    const char *env = getenv("TORCHLESS_SEED");
    const uint64_t seed = env ? strtoull(env, NULL, 10) : (uint64_t)time(NULL);
    state = seed;
    printf("seed %llu, kernels: %s%s%s%s\n", (unsigned long long)seed, tl_cpu_isa(),
           tl_cpu_has(TL_CPU_FEAT_AVX512_VNNI) ? " +vnni" : "", tl_cpu_has(TL_CPU_FEAT_AVX512_BF16) ? " +bf16" : "",
           tl_cpu_has(TL_CPU_FEAT_NEON_DOTPROD) ? " +dotprod" : "");
#ifdef __aarch64__
    /* NEON is part of every AArch64 CPU: unless forced, it is the level detected */
    if (!getenv("TORCHLESS_CPU")) CHECK(tl_cpu_level_get() == TL_CPU_NEON);
#endif
    test_dot_kernels();
    test_float_matrix_copy();
    test_attention_kernels();
    test_attention_rows_kernels();
    test_f16_widen();
    test_q8_0_widen();
    test_exp_sum();
    test_scale_max();
    test_gelu_glu();
    test_silu_glu();
    return check_summary();
}

/* The quantized-activation kernels (core/dot_q8.h) at this run's dispatch level against the
 * portable ones, on seeded random weights and activations of awkward sizes (1 row, rows not
 * a multiple of 16, one block of k, activation counts that leave partial tiles):
 *  - activations: q·dx equals GGUF Q8_0 / Q8_K quantization dequantized, bit for bit;
 *  - repacks and products: bit-identical to the portable kernels (the integer sums are
 *    exact and every output takes the same float operations in the same order), and a
 *    product of n rows equals n products of one row, and the decode kernels (no pack) the
 *    GEMM (prefill equals decode); where the level has kernels for rows interleaved 16 at a
 *    time (tl_q8_interleave), their packs and decodes are the same bytes and outputs too, and
 *    each row comes back whole from its group (tl_q8_interleaved_row), and a whole matrix's
 *    copy, made by several threads, holds the same groups;
 *  - the portable product against the dequantized operands in double: within 1e-5 of the
 *    sum of magnitudes (only the per-sub-block float combination rounds). */
#include "core/cpu.h"
#include "core/dot_q8.h"
#include "core/matmul.h"
#include "core/pool.h"
#include "torchless.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"

static uint64_t state;
static double uniform(void) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(state >> 11) / 9007199254740992.0;
}

/* activations: each element of x quantized and dequantized two ways */
static void check_activations(tl_dtype t, const float *x, int64_t k, const uint8_t *xq, int g) {
    const bool k_quant = t == TL_Q4_K || t == TL_Q5_K || t == TL_Q6_K;
    const tl_dtype act = k_quant ? TL_Q8_K : TL_Q8_0;
    uint8_t *blocks = malloc(tl_dtype_row_size(act, k));
    float *want = malloc((size_t)k * sizeof(float));
    CHECK(tl_quantize(act, x, blocks, k) == TL_OK);
    CHECK(tl_dequantize(act, blocks, want, k) == TL_OK);
    const int8_t *q = (const int8_t *)xq;
    const float *ds = (const float *)(xq + k);
    int bad = 0;
    for (int64_t s = 0; s < k / g; s++) {
        int sum = 0;
        for (int64_t e = s * g; e < (s + 1) * g; e++) {
            sum += q[e];
            /* Q8_0 dequantizes as q·d, Q8_K as d·q: the same product */
            bad += (float)q[e] * ds[2 * s] != want[e];
        }
        bad += ds[2 * s + 1] != ds[2 * s] * (float)sum;
    }
    CHECK(bad == 0, "%s: %d activation elements differ from %s", tl_dtype_name(t), bad, tl_dtype_name(act));
    free(blocks);
    free(want);
}

static void check_dtype(tl_dtype t, int trial) {
    tl_q8_kernels ref, got;
    if (!tl_q8_kernels_scalar(t, &ref)) return;
    const bool have = tl_q8_kernels_get(t, &got);
    const int64_t blk = t == TL_Q4_K || t == TL_Q5_K || t == TL_Q6_K ? 256 : 32;
    static const int row_counts[] = {1, 32, 17, 5, 37};
    static const int64_t blocks[] = {1, 3, 8};
    static const int x_counts[] = {1, 3, 8, 13};
    const int rows = row_counts[trial % 5], n = x_counts[trial % 4];
    const int64_t k = blk * blocks[trial % 3];
    const size_t rb = tl_dtype_row_size(t, k), xs = tl_q8_act_bytes(t, k), pb = tl_q8_pack_bytes(t, k);
    float *w = malloc((size_t)rows * k * sizeof(float)), *wd = malloc((size_t)rows * k * sizeof(float));
    float *x = malloc((size_t)n * k * sizeof(float));
    uint8_t *wq = malloc((size_t)rows * rb), *xq = malloc((size_t)n * xs), *xg = malloc(xs), *pr = malloc(pb), *pg = malloc(pb);
    float *yr = malloc((size_t)n * rows * sizeof(float)), *yg = malloc((size_t)n * rows * sizeof(float));
    const double wscale = trial % 5 == 0 ? 1e-3 : trial % 7 == 0 ? 1e3 : 1.0;
    for (int64_t i = 0; i < rows * k; i++) w[i] = (float)((uniform() * 2 - 1) * wscale);
    for (int64_t i = 0; i < n * k; i++) x[i] = (float)((uniform() * 2 - 1) * (trial % 4 == 0 ? 1e-4 : 1.0));
    if (trial % 6 == 1)
        for (int64_t i = 0; i < blk; i++) x[i] = 0; /* an all-zero activation block */
    if (trial % 6 == 2)
        for (int64_t i = 0; i < blk; i++) w[i] = 0; /* an all-zero weight block */
    if (trial % 6 == 4) /* the largest codes times the largest activations (Q8_0: 255 · -127, whose pairs overflow int16) */
        for (int64_t i = 0; i < blk; i++) w[i] = (float)wscale, x[i] = -1.0f;
    if (trial % 6 == 3) /* rounding ties: -127 leads every block, so the scale is 1 and halves stay halves */
        for (int64_t i = 0; i < n * k; i++) x[i] = i % blk == 0 ? -127.0f : (float)((int)(uniform() * 509) - 254) / 2;
    CHECK(tl_quantize(t, w, wq, rows * k) == TL_OK);
    CHECK(tl_dequantize(t, wq, wd, rows * k) == TL_OK);
    for (int c = 0; c < n; c++) {
        ref.quantize(x + c * k, k, xq + c * xs);
        check_activations(t, x + c * k, k, xq + c * xs, ref.g);
        if (have) {
            got.quantize(x + c * k, k, xg);
            CHECK(memcmp(xq + c * xs, xg, xs) == 0, "%s trial %d: quantized activation row %d differs", tl_dtype_name(t), trial, c);
        }
    }
    /* the portable product against the dequantized operands in double */
    ref.pack(wq, rb, rows, k, pr);
    ref.gemm(pr, xq, xs, n, k, ref.g, yr, (size_t)rows, rows < 16 ? rows : 16);
    for (int c = 0; c < n; c++) {
        const int8_t *q = (const int8_t *)(xq + c * xs);
        const float *ds = (const float *)(q + k);
        for (int r = 0; r < (rows < 16 ? rows : 16); r++) {
            double dot = 0, mag = 0;
            for (int64_t e = 0; e < k; e++) {
                const double p = (double)wd[r * k + e] * ((double)q[e] * ds[2 * (e / ref.g)]);
                dot += p;
                mag += fabs(p);
            }
            const double err = fabs(yr[c * rows + r] - dot);
            CHECK(err <= 1e-5 * mag + 1e-30, "%s trial %d scalar row %d col %d: %.9g vs %.9g", tl_dtype_name(t), trial,
                  r, c, (double)yr[c * rows + r], dot);
        }
    }
    /* this level's kernels, bit for bit, over every group of 16 rows */
    if (have) {
        for (int r0 = 0; r0 < rows; r0 += 16) {
            const int nr = rows - r0 < 16 ? rows - r0 : 16;
            ref.pack(wq + (size_t)r0 * rb, rb, nr, k, pr);
            got.pack(wq + (size_t)r0 * rb, rb, nr, k, pg);
            CHECK(memcmp(pr, pg, pb) == 0, "%s trial %d: pack of rows %d.. differs", tl_dtype_name(t), trial, r0);
            ref.gemm(pr, xq, xs, n, k, ref.g, yr + r0, (size_t)rows, nr);
            got.gemm(pg, xq, xs, n, k, got.g, yg + r0, (size_t)rows, nr);
        }
        CHECK(memcmp(yr, yg, (size_t)n * rows * sizeof(float)) == 0, "%s trial %d (%d rows, k %lld, %d x): products differ",
              tl_dtype_name(t), trial, rows, (long long)k, n);
        /* n rows at once against one at a time (pg holds the last group) */
        const int last = (rows - 1) / 16 * 16;
        for (int c = 0; c < n; c++) got.gemm(pg, xq + c * xs, xs, 1, k, got.g, yg + c * rows + last, (size_t)rows, rows - last);
        bool same = true;
        for (int c = 0; c < n; c++)
            for (int r = last; r < rows; r++) same &= yg[c * rows + r] == yr[c * rows + r];
        CHECK(same, "%s trial %d: one row at a time differs", tl_dtype_name(t), trial);
        /* the decode kernel, without a pack, on up to TL_Q8_GEMV_MAX rows of x */
        if (got.gemv) {
            const int nd = n < TL_Q8_GEMV_MAX ? n : TL_Q8_GEMV_MAX;
            for (int r0 = 0; r0 < rows; r0 += 16)
                got.gemv(wq + (size_t)r0 * rb, rb, rows - r0 < 16 ? rows - r0 : 16, k, xq, xs, nd, yg + r0, (size_t)rows);
            CHECK(memcmp(yr, yg, (size_t)nd * rows * sizeof(float)) == 0, "%s trial %d (%d rows, k %lld, %d x): decode differs",
                  tl_dtype_name(t), trial, rows, (long long)k, nd);
        }
        /* interleaved rows (whole groups of 16 only): the pack and the decode kernel from them */
        if (got.gemv16 && rows % 16 == 0) {
            CHECK(tl_q8_interleaves(t));
            uint8_t *iw = malloc((size_t)rows * rb);
            for (int r0 = 0; r0 < rows; r0 += 16) {
                tl_q8_interleave(t, wq + (size_t)r0 * rb, rb, k, iw + (size_t)r0 * rb);
                /* the same bytes, moved: every row comes back whole from its group */
                for (int r = 0; r < 16; r++) {
                    tl_q8_interleaved_row(t, iw + (size_t)r0 * rb, r, k, pr);
                    CHECK(memcmp(pr, wq + (size_t)(r0 + r) * rb, rb) == 0, "%s trial %d: row %d from its group differs",
                          tl_dtype_name(t), trial, r0 + r);
                }
                ref.pack(wq + (size_t)r0 * rb, rb, 16, k, pr);
                got.pack16(iw + (size_t)r0 * rb, rb, 16, k, pg);
                CHECK(memcmp(pr, pg, pb) == 0, "%s trial %d: pack of interleaved rows %d.. differs", tl_dtype_name(t), trial, r0);
            }
            for (int nd = 1; nd <= (n < TL_Q8_GEMV_MAX ? n : TL_Q8_GEMV_MAX); nd++) {
                memset(yg, 0, (size_t)n * rows * sizeof(float));
                for (int r0 = 0; r0 < rows; r0 += 16) got.gemv16(iw + (size_t)r0 * rb, rb, 16, k, xq, xs, nd, yg + r0, (size_t)rows);
                CHECK(memcmp(yr, yg, (size_t)nd * rows * sizeof(float)) == 0,
                      "%s trial %d (%d rows, k %lld, %d x): decode of interleaved rows differs", tl_dtype_name(t), trial, rows,
                      (long long)k, nd);
            }
            free(iw);
        }
    }
    free(w);
    free(wd);
    free(x);
    free(wq);
    free(xq);
    free(xg);
    free(pr);
    free(pg);
    free(yr);
    free(yg);
}

/* A whole matrix's copy (tl_matmul_interleave: from 1 MB on, its groups shared out among
 * threads) holds every group as tl_q8_interleave makes it */
static void check_matrix_copy(tl_dtype t) {
    const int64_t m = 4096, k = 1024; /* 2.4 MB (Q4_0) to 4.5 MB (Q8_0): two threads or more */
    const size_t rb = tl_dtype_row_size(t, k);
    uint8_t *wq = malloc((size_t)m * rb), *group = malloc(TL_Q8_LANES * rb);
    for (size_t i = 0; i < (size_t)m * rb; i++) wq[i] = (uint8_t)(uniform() * 256);
    const tl_tensor w = {.dtype = t, .n_dims = 2, .ne = {k, m, 1, 1}, .nbytes = (size_t)m * rb, .data = wq};
    uint8_t *copy = tl_matmul_interleave(&w, 3);
    tl_q8_kernels kern;
    const char *off = getenv("TORCHLESS_INTERLEAVE");
    const bool want = tl_q8_kernels_get(t, &kern) && kern.gemv16 && !(off && strcmp(off, "0") == 0);
    CHECK(!copy == !want, "%s: a copy where the level reads one", tl_dtype_name(t));
    int bad = 0;
    for (int64_t r0 = 0; copy && r0 < m; r0 += TL_Q8_LANES) {
        tl_q8_interleave(t, wq + (size_t)r0 * rb, rb, k, group);
        bad += memcmp(copy + (size_t)r0 * rb, group, TL_Q8_LANES * rb) != 0;
    }
    CHECK(bad == 0, "%s: %d groups of the matrix's copy differ", tl_dtype_name(t), bad);
    free(copy);
    free(wq);
    free(group);
}

/* Whole products through tl_matmul (1 to 130 rows of x: decode, the GEMM's tiles and a second
 * chunk) read from the interleaved copy equal those from the blocks, bit for bit; a matrix whose
 * rows are not a multiple of 16 gets no copy */
static void check_matmul_copy(tl_dtype t) {
    const int64_t blk = t == TL_Q4_K || t == TL_Q5_K || t == TL_Q6_K ? 256 : 32, k = 3 * blk, m = 48;
    const size_t rb = tl_dtype_row_size(t, k);
    float *wf = malloc((size_t)(m * k) * sizeof(float)), *x = malloc((size_t)(130 * k) * sizeof(float));
    float *y0 = malloc((size_t)(130 * m) * sizeof(float)), *y1 = malloc((size_t)(130 * m) * sizeof(float));
    uint8_t *wq = malloc((size_t)m * rb);
    for (int64_t i = 0; i < m * k; i++) wf[i] = (float)(uniform() * 2 - 1);
    for (int64_t i = 0; i < 130 * k; i++) x[i] = (float)(uniform() * 2 - 1);
    CHECK(tl_quantize(t, wf, wq, m * k) == TL_OK);
    tl_tensor w = {.dtype = t, .n_dims = 2, .ne = {k, m - 8, 1, 1}, .nbytes = (size_t)(m - 8) * rb, .data = wq};
    CHECK(tl_matmul_interleave(&w, 2) == NULL, "%s: a copy of 40 rows", tl_dtype_name(t));
    w.ne[1] = m, w.nbytes = (size_t)m * rb;
    void *copy = tl_matmul_interleave(&w, 2);
    tl_pool *pool;
    CHECK(tl_pool_new(2, &pool) == TL_OK);
    float *scratch = aligned_alloc(64, (tl_matmul_scratch_floats(k, 2) * sizeof(float) + 63) & ~(size_t)63);
    static const int64_t ns[] = {1, 3, 4, 13, 130};
    for (size_t i = 0; copy && i < sizeof ns / sizeof ns[0]; i++) {
        w.rows16 = NULL;
        tl_matmul(pool, &w, x, ns[i], y0, scratch);
        w.rows16 = copy;
        tl_matmul(pool, &w, x, ns[i], y1, scratch);
        CHECK(memcmp(y0, y1, (size_t)(ns[i] * m) * sizeof(float)) == 0, "%s: %lld rows of x from the copy differ",
              tl_dtype_name(t), (long long)ns[i]);
    }
    tl_pool_free(pool);
    free(scratch);
    free(copy);
    free(wf);
    free(x);
    free(y0);
    free(y1);
    free(wq);
}

static void times(float *a, const float *b, int64_t n) {
    for (int64_t i = 0; i < n; i++) a[i] = a[i] * 0.5f + b[i];
}

/* tl_matmul_many (q, k, v of 48, 16 and 40 rows: the last no multiple of 16, so read from its
 * blocks; gate and up with a GLU) equals tl_matmul one matrix at a time, bit for bit, for 1 to
 * 130 rows of x; matrices of two dtypes or widths are refused, with nothing written */
static void check_matmul_many(tl_dtype t) {
    const int64_t blk = t == TL_Q4_K || t == TL_Q5_K || t == TL_Q6_K ? 256 : 32, k = 2 * blk;
    const int64_t ms[3] = {48, 16, 40};
    const size_t rb = tl_dtype_row_size(t, k);
    tl_tensor w[3];
    void *copies[3];
    float *x = malloc((size_t)(130 * k) * sizeof(float)), *y0[3], *y1[3];
    for (int64_t i = 0; i < 130 * k; i++) x[i] = (float)(uniform() * 2 - 1);
    for (int i = 0; i < 3; i++) {
        float *wf = malloc((size_t)(ms[i] * k) * sizeof(float));
        for (int64_t e = 0; e < ms[i] * k; e++) wf[e] = (float)(uniform() * 2 - 1);
        uint8_t *wq = malloc((size_t)ms[i] * rb);
        CHECK(tl_quantize(t, wf, wq, ms[i] * k) == TL_OK);
        free(wf);
        w[i] = (tl_tensor){.dtype = t, .n_dims = 2, .ne = {k, ms[i], 1, 1}, .nbytes = (size_t)ms[i] * rb, .data = wq};
        w[i].rows16 = copies[i] = tl_matmul_interleave(&w[i], 2);
        y0[i] = malloc((size_t)(130 * 48) * sizeof(float));
        y1[i] = malloc((size_t)(130 * 48) * sizeof(float));
    }
    tl_pool *pool;
    CHECK(tl_pool_new(2, &pool) == TL_OK);
    float *scratch = aligned_alloc(64, (tl_matmul_scratch_floats(k, 2) * sizeof(float) + 63) & ~(size_t)63);
    const tl_tensor *ws[3] = {&w[0], &w[1], &w[2]}, *gu[2] = {&w[0], &w[0]};
    static const int64_t ns[] = {1, 2, 5, 16, 130};
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
        const int64_t n = ns[i];
        for (int j = 0; j < 3; j++) tl_matmul(pool, &w[j], x, n, y0[j], scratch);
        CHECK(tl_matmul_many(pool, ws, 3, x, n, y1, NULL, scratch), "%s: q, k, v refused", tl_dtype_name(t));
        for (int j = 0; j < 3; j++)
            CHECK(memcmp(y0[j], y1[j], (size_t)(n * ms[j]) * sizeof(float)) == 0, "%s: matrix %d of 3, %lld rows of x",
                  tl_dtype_name(t), j, (long long)n);
        /* gate and up (the same matrix twice: the GLU still sees two outputs) */
        tl_matmul(pool, &w[0], x, n, y0[0], scratch);
        memcpy(y0[1], y0[0], (size_t)(n * 48) * sizeof(float));
        times(y0[0], y0[1], n * 48);
        CHECK(tl_matmul_many(pool, gu, 2, x, n, y1, times, scratch), "%s: gate and up refused", tl_dtype_name(t));
        CHECK(memcmp(y0[0], y1[0], (size_t)(n * 48) * sizeof(float)) == 0, "%s: GLU of %lld rows of x", tl_dtype_name(t),
              (long long)n);
    }
    /* refused: another dtype, another width, a GLU of rows that differ */
    tl_tensor other = w[1];
    other.dtype = t == TL_Q8_0 ? TL_Q4_0 : TL_Q8_0;
    const tl_tensor *mixed[3] = {&w[0], &other, &w[2]}, *glu_rows[2] = {&w[0], &w[1]};
    CHECK(!tl_matmul_many(pool, mixed, 3, x, 1, y1, NULL, scratch), "%s: two dtypes taken", tl_dtype_name(t));
    other = w[1], other.ne[0] = k / 2;
    CHECK(!tl_matmul_many(pool, mixed, 3, x, 1, y1, NULL, scratch), "%s: two widths taken", tl_dtype_name(t));
    CHECK(!tl_matmul_many(pool, glu_rows, 2, x, 1, y1, times, scratch), "%s: a GLU of 48 and 16 rows", tl_dtype_name(t));
    tl_pool_free(pool);
    free(scratch);
    free(x);
    for (int i = 0; i < 3; i++) free(copies[i]), free((void *)w[i].data), free(y0[i]), free(y1[i]);
}

int main(void) {
    const char *env = getenv("TORCHLESS_SEED");
    uint64_t seed = env ? strtoull(env, NULL, 10) : (uint64_t)time(NULL);
    state = seed;
    printf("seed %llu, kernels: %s\n", (unsigned long long)seed, tl_cpu_isa());
#ifdef __aarch64__
    /* the NEON level has two kinds of integer kernels (dot_q8_neon.c): say which ran */
    printf("dotprod: %s\n", tl_cpu_has(TL_CPU_FEAT_NEON_DOTPROD) ? "yes (SDOT)" : "no (SMULL/SADALP)");
#endif
    if (check_cpu_level_missing()) return CHECK_SKIPPED;
    const tl_dtype types[] = {TL_Q4_0, TL_Q4_1, TL_Q5_0, TL_Q5_1, TL_Q8_0, TL_Q4_K, TL_Q5_K, TL_Q6_K};
    int n_level = 0;
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        tl_q8_kernels k;
        n_level += tl_q8_kernels_get(types[ti], &k);
#ifdef __x86_64__
        /* the AVX2 and AVX-512 levels read every format from interleaved rows */
        if (tl_cpu_level_get() != TL_CPU_SCALAR && tl_q8_kernels_get(types[ti], &k))
            CHECK(k.gemv16 && k.pack16, "%s: no kernels for interleaved rows at %s", tl_dtype_name(types[ti]), tl_cpu_isa());
#endif
        CHECK(tl_q8_kernels_get(types[ti], &k) == tl_dtype_quantizes_activations(types[ti]));
        for (int trial = 0; trial < 60; trial++) check_dtype(types[ti], trial);
        check_matrix_copy(types[ti]);
        check_matmul_copy(types[ti]);
        if (tl_q8_kernels_get(types[ti], &k)) check_matmul_many(types[ti]);
    }
    tl_q8_kernels k;
    CHECK(!tl_q8_kernels_get(TL_F32, &k) && !tl_q8_kernels_get(TL_F16, &k) && !tl_q8_kernels_get(TL_BF16, &k));
    printf("dtypes with integer kernels at this level: %d\n", n_level);
#ifdef __aarch64__
    /* NEON has them for every dtype the portable kernels have (unless TORCHLESS_ACT_QUANT=0) */
    const char *aq = getenv("TORCHLESS_ACT_QUANT");
    if (!(aq && strcmp(aq, "0") == 0)) CHECK(n_level == 8, "NEON: integer kernels for %d dtypes of 8", n_level);
#endif
    return check_summary();
}

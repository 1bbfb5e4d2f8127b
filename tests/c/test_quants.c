/* Round trips through every GGUF quant block format (csrc/core/quants.c),
 * through the public tl_quantize / tl_dequantize entry points and the dtype
 * table: normwise error bounds on seeded random rows, exact zeros for all-zero
 * blocks, finite output for tiny and large inputs, Q8_K/Q8_1 block sums.
 * Bit-exactness against the gguf package is tested in tests/test_quants.py.
 *
 * Usage: test_quants [data_dir] [fixtures_dir]   (both ignored)
 * The seed is printed; set TORCHLESS_SEED to replay a run. */
#include "core/fp16.h"
#include "core/quants.h"
#include "torchless.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"

/* ---- seeded random numbers (xorshift64*, Box-Muller) ---- */
static uint64_t rng_state;
static uint64_t rng_next(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1DULL;
}
static double rng_uniform(void) { return ((double)(rng_next() >> 11) + 0.5) * 0x1p-53; } /* (0, 1) */
static float rng_normal(void) {
    double u = rng_uniform(), v = rng_uniform();
    return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}

/* ---- the formats: block geometry and the round-trip bound ----
 * bound: the largest normwise error ||x - x'|| / ||x|| accepted on standard
 * normal rows. Measured on 64 Ki normal samples (see the printed values) and
 * set with a margin of ~1.3-1.5x: a quantizer that gets worse fails here. */
typedef struct {
    const char *name;
    tl_dtype type;
    int block;
    size_t bytes;
    double bound;         /* standard normal rows */
    double outlier_bound; /* 1 in 200 weights 30x larger */
} fmt;

static const fmt formats[] = {
    {"q4_0", TL_Q4_0, QK4_0, sizeof(block_q4_0), 0.14, 0.21},
    {"q4_1", TL_Q4_1, QK4_1, sizeof(block_q4_1), 0.12, 0.18},
    {"q5_0", TL_Q5_0, QK5_0, sizeof(block_q5_0), 0.07, 0.13},
    {"q5_1", TL_Q5_1, QK5_1, sizeof(block_q5_1), 0.06, 0.09},
    {"q8_0", TL_Q8_0, QK8_0, sizeof(block_q8_0), 0.008, 0.016},
    {"q8_1", TL_Q8_1, QK8_1, sizeof(block_q8_1), 0.008, 0.016},
    {"q2_k", TL_Q2_K, QK_K, sizeof(block_q2_K), 0.4, 0.6},
    {"q3_k", TL_Q3_K, QK_K, sizeof(block_q3_K), 0.22, 0.33},
    {"q4_k", TL_Q4_K, QK_K, sizeof(block_q4_K), 0.1, 0.15},
    {"q5_k", TL_Q5_K, QK_K, sizeof(block_q5_K), 0.05, 0.075},
    {"q6_k", TL_Q6_K, QK_K, sizeof(block_q6_K), 0.025, 0.05},
    {"q8_k", TL_Q8_K, QK_K, sizeof(block_q8_K), 0.009, 0.04},
    /* ternary: values are sign(x) or 0 times absmax, so the error of normal data is large */
    {"tq1_0", TL_TQ1_0, QK_K, sizeof(block_tq1_0), 0.85, 0.95},
    {"tq2_0", TL_TQ2_0, QK_K, sizeof(block_tq2_0), 0.85, 0.95},
};
#define N_FORMATS (int)(sizeof formats / sizeof formats[0])

enum { N = 64 * 1024 };

static int all_finite(const float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(y[i])) return 0;
    return 1;
}

static double rel_err(const float *x, const float *y, int64_t n) {
    double num = 0.0, den = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double e = (double)x[i] - (double)y[i];
        num += e * e;
        den += (double)x[i] * (double)x[i];
    }
    return den > 0.0 ? sqrt(num / den) : sqrt(num);
}

/* quantize n floats and dequantize them again; returns 0 on an API error */
static int round_trip(const fmt *f, const float *x, float *y, int64_t n, uint8_t *q) {
    if (tl_quantize(f->type, x, q, n) != TL_OK) return 0;
    if (tl_dequantize(f->type, q, y, n) != TL_OK) return 0;
    return 1;
}

static void test_geometry(void) {
    for (int t = 0; t < N_FORMATS; t++) {
        const fmt *f = &formats[t];
        CHECK(tl_dtype_block_size(f->type) == f->block, "%s: block size %" PRId64, f->name,
              tl_dtype_block_size(f->type));
        CHECK(tl_dtype_type_size(f->type) == f->bytes, "%s: type size %zu", f->name, tl_dtype_type_size(f->type));
        tl_dtype parsed;
        CHECK(tl_dtype_from_name(f->name, &parsed) && parsed == f->type, "%s: name lookup", f->name);
    }
}

/* Normal rows, the same rows scaled by 1e-3 and 1e3 (scale-invariant formats
 * keep the same relative error), and rows with rare large outliers. */
static void test_round_trip_error(float *x, float *y, uint8_t *q) {
    static const float scales[] = {1.0f, 1e-3f, 1e3f};
    for (int t = 0; t < N_FORMATS; t++) {
        const fmt *f = &formats[t];
        for (int s = 0; s < 3; s++) {
            for (int i = 0; i < N; i++) x[i] = rng_normal() * scales[s];
            CHECK(round_trip(f, x, y, N, q), "%s: quantize/dequantize failed: %s", f->name, tl_last_error());
            double e = rel_err(x, y, N);
            if (s == 0) printf("  %-6s normwise round-trip error %.5f (bound %.3f)\n", f->name, e, f->bound);
            /* at 1e-3 the f16 scales of the 32-weight formats lose a few bits to rounding;
             * allow 5% slack on the bound for the scaled rows */
            CHECK(e <= f->bound * (s == 0 ? 1.0 : 1.05), "%s: scale %g: error %.5f > %.3f", f->name,
                  (double)scales[s], e, f->bound);
            CHECK(all_finite(y, N), "%s: scale %g: non-finite output", f->name, (double)scales[s]);
        }
        /* outliers: 1 in 200 weights is 30x larger; bounded by the format's
         * error on the outlier-dominated norm, looser than the plain bound */
        for (int i = 0; i < N; i++) {
            x[i] = rng_normal();
            if (rng_next() % 200 == 0) x[i] *= 30.0f;
        }
        CHECK(round_trip(f, x, y, N, q), "%s: outliers: round trip failed", f->name);
        double e = rel_err(x, y, N);
        printf("  %-6s with outliers: error %.5f (bound %.3f)\n", f->name, e, f->outlier_bound);
        CHECK(e <= f->outlier_bound, "%s: outliers: error %.5f > %.3f", f->name, e, f->outlier_bound);
        CHECK(all_finite(y, N), "%s: outliers: non-finite output", f->name);
    }
}

/* All-zero rows and an all-zero block between normal blocks dequantize to
 * exact zeros; a constant block is finite. */
static void test_zero_blocks(float *x, float *y, uint8_t *q) {
    for (int t = 0; t < N_FORMATS; t++) {
        const fmt *f = &formats[t];
        const int64_t n = 4 * (int64_t)f->block;
        memset(x, 0, (size_t)n * sizeof *x);
        for (int64_t i = 0; i < n; i++) y[i] = NAN;
        CHECK(round_trip(f, x, y, n, q), "%s: zeros: round trip failed", f->name);
        int exact = 1;
        for (int64_t i = 0; i < n; i++) exact &= y[i] == 0.0f;
        CHECK(exact, "%s: an all-zero row does not dequantize to zeros", f->name);

        for (int64_t i = 0; i < n; i++) x[i] = rng_normal();
        memset(x + f->block, 0, (size_t)f->block * sizeof *x); /* block 1 is zero */
        CHECK(round_trip(f, x, y, n, q), "%s: mixed: round trip failed", f->name);
        exact = 1;
        for (int64_t i = f->block; i < 2 * (int64_t)f->block; i++) exact &= y[i] == 0.0f;
        CHECK(exact, "%s: a zero block between normal blocks is not zero", f->name);
        CHECK(all_finite(y, n), "%s: mixed: non-finite output", f->name);

        for (int64_t i = 0; i < n; i++) x[i] = 0.75f;
        CHECK(round_trip(f, x, y, n, q), "%s: constant: round trip failed", f->name);
        CHECK(all_finite(y, n), "%s: constant block: non-finite output", f->name);
        CHECK(rel_err(x, y, n) <= 0.5, "%s: constant block: error %.4f", f->name, rel_err(x, y, n));
    }
}

/* Inputs so small that the scales underflow (to f16 subnormals or zero, or
 * even 1/d overflowing) and large inputs still within the f16 scale range:
 * finite output; absolute error at most twice the input's magnitude plus the
 * f16 subnormal resolution (a block of 1e-8 may dequantize to its rounded
 * f16 offset), and for large inputs the usual relative bound. */
static void test_extreme_scales(float *x, float *y, uint8_t *q) {
    static const float tiny[] = {1e-5f, 1e-8f, 1e-20f, 1e-39f /* subnormal float32 */};
    for (int t = 0; t < N_FORMATS; t++) {
        const fmt *f = &formats[t];
        const int64_t n = 8 * (int64_t)f->block;
        for (int s = 0; s < 4; s++) {
            float amax = 0.0f;
            for (int64_t i = 0; i < n; i++) {
                x[i] = rng_normal() * tiny[s];
                if (fabsf(x[i]) > amax) amax = fabsf(x[i]);
            }
            CHECK(round_trip(f, x, y, n, q), "%s: tiny: round trip failed", f->name);
            CHECK(all_finite(y, n), "%s: tiny %g: non-finite output", f->name, (double)tiny[s]);
            float worst = 0.0f;
            for (int64_t i = 0; i < n; i++) worst = fmaxf(worst, fabsf(x[i] - y[i]));
            /* f16 scales and offsets are rounded to multiples of 2^-24 down here */
            const float allowed = 2.0f * amax + 0x1p-22f;
            CHECK(worst <= allowed, "%s: tiny %g: error %g > 2 * max + 2^-22 = %g", f->name, (double)tiny[s],
                  (double)worst, (double)allowed);
        }
        /* large: |x| up to ~1e4 keeps every f16 scale finite (65504 / 127 > 500) */
        for (int64_t i = 0; i < n; i++) x[i] = rng_normal() * 2000.0f;
        CHECK(round_trip(f, x, y, n, q), "%s: large: round trip failed", f->name);
        CHECK(all_finite(y, n), "%s: large: non-finite output", f->name);
        CHECK(rel_err(x, y, n) <= 1.05 * f->bound, "%s: large: error %.5f", f->name, rel_err(x, y, n));
    }
}

/* Q8_K: bsums[k] is the sum of quants 16k..16k+15, d * q reproduces the
 * signed extreme exactly at -127; Q8_1: s = d * sum(q) in f16. */
static void test_activation_sums(float *x) {
    enum { NB = 16 };
    block_q8_K k8[NB];
    for (int i = 0; i < NB * QK_K; i++) x[i] = rng_normal();
    memset(x + 3 * QK_K, 0, QK_K * sizeof *x);
    tl_quantize_row_q8_K(x, k8, NB * QK_K);
    int ok = 1, extreme_ok = 1;
    for (int b = 0; b < NB; b++) {
        for (int k = 0; k < QK_K / 16; k++) {
            int sum = 0;
            for (int l = 0; l < 16; l++) sum += k8[b].qs[16 * k + l];
            ok &= k8[b].bsums[k] == sum;
        }
        if (b == 3) {
            ok &= k8[b].d == 0.0f;
            continue;
        }
        int has_m127 = 0;
        for (int j = 0; j < QK_K; j++) has_m127 |= k8[b].qs[j] == -127;
        extreme_ok &= has_m127;
    }
    CHECK(ok, "q8_k: bsums are not the sums of 16 quants (or zero block not zero)");
    CHECK(extreme_ok, "q8_k: the signed extreme does not map to -127");

    block_q8_1 b1[NB];
    tl_quantize_row_q8_1(x, b1, NB * QK8_1);
    ok = 1;
    for (int b = 0; b < NB; b++) {
        int sum = 0;
        float amax = 0.0f;
        /* two loops: one with both reductions crashes Debian 12's aarch64 gcc (12.2, -O2) */
        for (int j = 0; j < QK8_1; j++) sum += b1[b].qs[j];
        for (int j = 0; j < QK8_1; j++) amax = fmaxf(amax, fabsf(x[QK8_1 * b + j]));
        float d = amax / 127.0f; /* the float32 scale, before rounding to f16 (as ggml) */
        ok &= b1[b].d == tl_f32_to_f16(d);
        ok &= b1[b].s == tl_f32_to_f16((float)sum * d);
    }
    CHECK(ok, "q8_1: d is not f16(absmax / 127) or s is not f16(d * sum(q))");
}

int main(int argc, char **argv) {
    (void)argc;
    (void)argv;
    const char *env = getenv("TORCHLESS_SEED");
    uint64_t seed = env ? strtoull(env, NULL, 10) : (uint64_t)time(NULL);
    printf("test_quants: seed %" PRIu64 " (replay with TORCHLESS_SEED=%" PRIu64 ")\n", seed, seed);
    rng_state = seed * 0x9E3779B97F4A7C15ULL + 1;

    float *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y);
    uint8_t *q = malloc(N * 2); /* more than any format needs (f16/q8: <= 1.2 B per weight) */
    if (!x || !y || !q) {
        printf("out of memory\n");
        return 1;
    }
    test_geometry();
    test_round_trip_error(x, y, q);
    test_zero_blocks(x, y, q);
    test_extreme_scales(x, y, q);
    test_activation_sums(x);
    free(x);
    free(y);
    free(q);
    return check_summary();
}

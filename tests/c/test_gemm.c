/* The float-weight GEMM (core/gemm.h) at this run's dispatch level and the portable one, and
 * tl_matmul's prefill of F32/F16/BF16 weights, on seeded random weights and activations of
 * awkward sizes: weight rows 1, a register block less one, one, one more, and more blocks with a
 * partial one; every activation count from 1 to one register block more than a block, one more
 * than a chunk; columns 1, one vector less one, one column block, one more, odd multiples; 1 to 3
 * threads. Each product is compared normwise with the product in double of the same weights
 * (converted to float exactly: F16 and BF16 are subsets of float32) and activations:
 *     ||y - y_exact||_2 <= 1e-5 ||y_exact||_2.
 * Why 1e-5: each output is a float32 sum over k in order, block after block; with random signs
 * its rounding errors add like a random walk, about u·sqrt(k/2) of the norm (u = 2^-24; k <= 645
 * here: ~1.1e-6), so the bound holds with margin, while a dropped column block, a wrong or
 * unconverted row, or a lost panel moves the norm by far more than 1e-5 (a single wrong element
 * among the at most ~3,000 of a case by ~1/sqrt(3,000) of it). The SIMD levels are checked the
 * same way against the portable kernels (they differ only in fused or separate multiply-adds). */
#include "core/cpu.h"
#include "core/gemm.h"
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

static tl_pool *pools[3];
static double worst; /* the largest relative error seen, printed */

/* ||y - ref||_2 / ||mag||_2 */
static double normwise(const float *y, const double *ref, const double *mag, int64_t count) {
    double d = 0, r = 0;
    for (int64_t i = 0; i < count; i++) {
        d += (y[i] - ref[i]) * (y[i] - ref[i]);
        r += mag[i] * mag[i];
    }
    return r > 0 ? sqrt(d / r) : d > 0 ? INFINITY : 0.0;
}

typedef enum { VIA_LEVEL, VIA_SCALAR, VIA_MATMUL } route;
static const char *route_name[] = {"this level's GEMM", "portable GEMM", "tl_matmul"};

static void check_case(tl_dtype t, route via, int64_t m, int64_t k, int64_t n, int nth, int trial) {
    tl_gemm_kernels kern;
    if (via == VIA_LEVEL) CHECK(tl_gemm_kernels_get(t, &kern));
    if (via == VIA_SCALAR) CHECK(tl_gemm_kernels_scalar(t, &kern));
    const size_t rb = tl_dtype_row_size(t, k);
    float *wf = malloc((size_t)(m * k) * sizeof(float)), *x = malloc((size_t)(n * k) * sizeof(float) + 1);
    float *y = malloc((size_t)(n * m) * sizeof(float)), *y2 = malloc((size_t)(n * m) * sizeof(float));
    double *ref = malloc((size_t)(n * m) * sizeof(double)), *mag = malloc((size_t)(n * m) * sizeof(double));
    uint8_t *wq = malloc((size_t)m * rb);
    /* F16 weights of about 1e-6 are subnormal halves (a flush to zero would lose them all) */
    const double wscale = t == TL_F16 && trial % 5 == 3 ? 1e-6 : trial % 7 == 2 ? 1e3 : 1.0;
    for (int64_t i = 0; i < m * k; i++) wf[i] = (float)((uniform() * 2 - 1) * wscale);
    for (int64_t i = 0; i < n * k; i++) x[i] = (float)(uniform() * 2 - 1);
    if (trial % 4 == 1)
        for (int64_t i = 0; i < k; i++) wf[i] = 0, x[(n - 1) * k + i] = 0; /* an all-zero weight row and token */
    CHECK(tl_quantize(t, wf, wq, m * k) == TL_OK);
    CHECK(tl_dequantize(t, wq, wf, m * k) == TL_OK); /* exact: the weights the kernels see */
    for (int64_t c = 0; c < n; c++)
        for (int64_t r = 0; r < m; r++) {
            double s = 0, a = 0;
            for (int64_t e = 0; e < k; e++) {
                const double p = (double)wf[r * k + e] * x[c * k + e];
                s += p;
                a += fabs(p);
            }
            ref[c * m + r] = s;
            mag[c * m + r] = a;
        }
    tl_tensor w = {.dtype = t, .n_dims = 2, .ne = {k, m}, .nbytes = (size_t)m * rb, .data = wq};
    /* the scratch one float past an alignment: tl_gemm aligns its packs itself */
    const size_t sf = tl_matmul_scratch_floats(k, nth) + 1;
    float *scratch = aligned_alloc(64, (sf * sizeof(float) + 63) & ~(size_t)63);
    for (int64_t i = 0; i < n * m; i++) y[i] = NAN; /* every output written, none read first */
    if (via == VIA_MATMUL) tl_matmul(pools[nth - 1], &w, x, n, y, scratch + 1);
    else tl_gemm(pools[nth - 1], &kern, &w, x, n, y, scratch + 1);
    const double err = normwise(y, ref, mag, n * m);
    if (err > worst) worst = err;
    CHECK(err <= 1e-5, "%s, %s, trial %d (m %lld, k %lld, n %lld, %d threads): error %.3g", tl_dtype_name(t),
          route_name[via], trial, (long long)m, (long long)k, (long long)n, nth, err);
    if (via == VIA_LEVEL) { /* against the portable kernels */
        tl_gemm_kernels portable;
        CHECK(tl_gemm_kernels_scalar(t, &portable));
        tl_gemm(pools[0], &portable, &w, x, n, y2, scratch + 1);
        for (int64_t i = 0; i < n * m; i++) ref[i] = y2[i];
        const double diff = normwise(y, ref, mag, n * m);
        CHECK(diff <= 1e-5, "%s trial %d (m %lld, k %lld, n %lld): %.3g from the portable kernels", tl_dtype_name(t), trial,
              (long long)m, (long long)k, (long long)n, diff);
    }
    free(scratch);
    free(wf);
    free(x);
    free(y);
    free(y2);
    free(ref);
    free(mag);
    free(wq);
}

/* every shape of the header, for one route */
static void check_route(tl_dtype t, route via, int *trial) {
    tl_gemm_kernels kern;
    if (via == VIA_MATMUL) CHECK(tl_gemm_kernels_get(t, &kern));
    else if (!(via == VIA_LEVEL ? tl_gemm_kernels_get(t, &kern) : tl_gemm_kernels_scalar(t, &kern))) return;
    const int mr = kern.mr, nr = kern.nr, kc = kern.kc;
    const int64_t ms[] = {1, mr - 1, mr, mr + 1, 2 * mr + 3};
    const int64_t ks[] = {1, 15, kc, kc + 1, 3 * kc / 2 + 5, 2 * kc + 1, 16};
    for (int64_t n = 1; n <= 2 * nr + 1; n++, ++*trial)
        check_case(t, via, ms[*trial % 5], ks[*trial % 7], n, 1 + *trial % 3, *trial);
    /* more rows than a chunk of x */
    check_case(t, via, mr + 3, kc + 7, TL_GEMM_CHUNK + nr + 1, 1 + *trial % 3, *trial);
    ++*trial;
}

int main(void) {
    const char *env = getenv("TORCHLESS_SEED");
    uint64_t seed = env ? strtoull(env, NULL, 10) : (uint64_t)time(NULL);
    state = seed;
    printf("seed %llu, kernels: %s\n", (unsigned long long)seed, tl_cpu_isa());
    if (check_cpu_level_missing()) return CHECK_SKIPPED;
    for (int i = 0; i < 3; i++)
        if (tl_pool_new(i + 1, &pools[i]) != TL_OK) return 1;
    const tl_dtype types[] = {TL_F32, TL_F16, TL_BF16};
    for (size_t ti = 0; ti < 3; ti++) {
        tl_gemm_kernels level, portable;
        CHECK(tl_gemm_kernels_get(types[ti], &level) && tl_gemm_kernels_scalar(types[ti], &portable));
        /* a SIMD level runs its own kernels, within the bounds the scratch is sized by */
        CHECK((level.kernel == portable.kernel) == (tl_cpu_level_get() == TL_CPU_SCALAR || tl_cpu_level_get() == TL_CPU_NEON));
        CHECK(level.mr <= TL_GEMM_MAX_MR && level.nr <= TL_GEMM_MAX_NR && level.kc <= TL_GEMM_MAX_KC);
        int trial = 0;
        for (int rep = 0; rep < 2; rep++) {
            check_route(types[ti], VIA_LEVEL, &trial);
            check_route(types[ti], VIA_SCALAR, &trial);
            check_route(types[ti], VIA_MATMUL, &trial);
        }
    }
    tl_gemm_kernels k;
    CHECK(!tl_gemm_kernels_get(TL_Q4_0, &k) && !tl_gemm_kernels_scalar(TL_Q8_0, &k));
    printf("largest error: %.3g\n", worst);
    for (int i = 0; i < 3; i++) tl_pool_free(pools[i]);
    return check_summary();
}

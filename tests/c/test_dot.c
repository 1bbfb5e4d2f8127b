/* The fused dequantize-dot kernels (core/dot.c) against the portable path: dequantize
 * the row with the dtype table, then a float dot. Seeded random rows of every dtype that
 * has a fused kernel on this CPU; relative error bound 1e-5 (summation order differs). */
#include "core/dot.h"
#include "core/matmul.h"
#include "torchless.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include "check.h"

static uint64_t state;
static double uniform(void) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(state >> 11) / 9007199254740992.0;
}

int main(void) {
    const char *env = getenv("TORCHLESS_SEED");
    uint64_t seed = env ? strtoull(env, NULL, 10) : (uint64_t)time(NULL);
    state = seed;
    printf("seed %llu, kernels: %s\n", (unsigned long long)seed, tl_cpu_isa());
    const tl_dtype types[] = {TL_F32, TL_F16, TL_Q4_0, TL_Q4_1, TL_Q8_0, TL_Q4_K, TL_Q6_K, TL_BF16, TL_Q5_0, TL_Q5_1};
    const int64_t n = 1024;
    float *w = malloc(n * sizeof(float)), *x = malloc(n * sizeof(float)), *deq = malloc(n * sizeof(float));
    uint8_t *q = malloc(n * 8);
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        tl_dot_fn dot = tl_dot_kernel(types[ti]);
        if (!dot) continue;
        for (int trial = 0; trial < 50; trial++) {
            double scale = trial % 5 == 0 ? 1e-3 : trial % 7 == 0 ? 1e3 : 1.0;
            for (int64_t i = 0; i < n; i++) {
                w[i] = (float)((uniform() * 2 - 1) * scale);
                x[i] = (float)(uniform() * 2 - 1);
            }
            if (trial == 0)
                for (int64_t i = 0; i < 64; i++) w[i] = 0; /* zero blocks */
            CHECK(tl_quantize(types[ti], w, q, n) == TL_OK);
            CHECK(tl_dequantize(types[ti], q, deq, n) == TL_OK);
            double ref = 0, mag = 0;
            for (int64_t i = 0; i < n; i++) {
                ref += (double)deq[i] * x[i];
                mag += fabs((double)deq[i] * x[i]);
            }
            float got = dot(q, x, n);
            CHECK(fabs(got - ref) <= 1e-5 * mag + 1e-30, "%s trial %d: %g vs %g", tl_dtype_name(types[ti]), trial,
                  (double)got, ref);
            float portable = tl_dot_f32(deq, x, n);
            CHECK(fabs(portable - ref) <= 1e-5 * mag + 1e-30);
        }
    }
    /* softmax numerators: exp(s - m) within 2 ulp of expf, down to where it underflows */
    tl_exp_sum_fn exp_sum = tl_exp_sum_kernel();
    if (exp_sum) {
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
    free(w);
    free(x);
    free(deq);
    free(q);
    return check_summary();
}

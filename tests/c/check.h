/* The C tests' one assertion: CHECK(cond) or CHECK(cond, "fmt", args...) counts a
 * pass or prints the failure (file, line, condition, optional note) and counts it;
 * check_summary() prints the "N passed, N failed" line ctest logs and gives the
 * exit status; CHECK_SKIPPED is the status of a test with nothing to test here. */
#ifndef TL_TEST_CHECK_H
#define TL_TEST_CHECK_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "torchless.h"

static int n_pass, n_fail;

static inline void check_note(const char *fmt, ...) {
    if (!fmt[0]) {
        printf("\n");
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    printf(": ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
}

#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        if (cond) {                                                        \
            n_pass++;                                                      \
        } else {                                                           \
            n_fail++;                                                      \
            printf("FAIL %s:%d: %s: %s", __FILE__, __LINE__, __func__, #cond); \
            check_note("" __VA_ARGS__);                                    \
        }                                                                  \
    } while (0)

static inline int check_summary(void) {
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail != 0;
}

#define CHECK_SKIPPED 77 /* ctest's SKIP_RETURN_CODE */

/* The tests' seeded random numbers: *check_rng() = the run's seed (printed), then
 * check_urand() draws splitmix64 values in [0, 1). */
static inline uint64_t *check_rng(void) {
    static uint64_t state;
    return &state;
}

static inline double check_urand(void) {
    uint64_t z = (*check_rng() += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return (double)((z ^ (z >> 31)) >> 11) / 9007199254740992.0;
}

/* The per-level runs (TORCHLESS_CPU=avx512, =neon, ...): true, after saying so, when this CPU
 * lacks the level asked for, so that its kernels fell back to another level's. */
static inline bool check_cpu_level_missing(void) {
    const char *want = getenv("TORCHLESS_CPU");
    if (!want || !*want || strcmp(want, tl_cpu_isa()) == 0) return false;
    printf("skipped: this CPU has no %s kernels (TORCHLESS_CPU=%s runs %s)\n", want, want, tl_cpu_isa());
    return true;
}

#endif

/* The C tests' one assertion: CHECK(cond) or CHECK(cond, "fmt", args...) counts a
 * pass or prints the failure (file, line, condition, optional note) and counts it;
 * check_summary() prints the "N passed, N failed" line ctest logs and gives the
 * exit status. */
#ifndef TL_TEST_CHECK_H
#define TL_TEST_CHECK_H

#include <stdarg.h>
#include <stdio.h>

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

#endif

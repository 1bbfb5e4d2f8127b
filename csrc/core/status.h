/* Internal error reporting: set the thread's message and return the status. */
#ifndef TL_STATUS_H
#define TL_STATUS_H

#include "torchless.h"

#if defined(__GNUC__)
#define TL_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define TL_PRINTF(a, b)
#endif

/* Formats the message for this thread and returns s, so callers write
 *     return tl_set_error(TL_ERR_FORMAT, "gguf: bad magic %08x", magic); */
tl_status tl_set_error(tl_status s, const char *fmt, ...) TL_PRINTF(2, 3);
void tl_clear_error(void);

/* a * b into *out; false on size_t overflow. */
static inline bool tl_mul_overflows(size_t a, size_t b, size_t *out) {
    return __builtin_mul_overflow(a, b, out);
}
static inline bool tl_add_overflows(size_t a, size_t b, size_t *out) {
    return __builtin_add_overflow(a, b, out);
}

#endif

/* The dtype table: one row per tensor element type. This is the only place a
 * format plugs in (block geometry, conversions, and later the SIMD dot kernels). */
#ifndef TL_DTYPE_H
#define TL_DTYPE_H

#include "torchless.h"

typedef void (*tl_to_float_fn)(const void *restrict src, float *restrict dst, int64_t n);
typedef void (*tl_from_float_fn)(const float *restrict src, void *restrict dst, int64_t n);

typedef struct tl_dtype_traits {
    const char *name;          /* lower-case, as GGUF tools print it: "q4_K" -> "q4_k" */
    int64_t block_size;        /* elements per block */
    size_t type_size;          /* bytes per block */
    bool is_quantized;
    const char *buffer_format; /* PEP 3118 element code of an unquantized type */
    tl_to_float_fn to_float;   /* NULL: no conversion */
    tl_from_float_fn from_float;
    /* The performance issue adds vec_dot / vec_dot_type here, with per-ISA variants. */
} tl_dtype_traits;

/* NULL for ids that are not in the table. */
const tl_dtype_traits *tl_dtype_traits_of(int t);

/* rows x k elements of dtype from as dtype to, through float32, into dst (rows whole rows of
 * to): a GPU backend turning a dtype it has no kernels for into F16 at upload. */
tl_status tl_convert_rows(tl_dtype from, const void *src, tl_dtype to, void *dst, int64_t rows, int64_t k);

#endif

/* Fused dequantize-and-dot kernels: one weight row (any supported dtype, as stored)
 * against a float32 vector, without writing the dequantized row anywhere. Chosen at
 * run time from the CPU's features (TORCHLESS_CPU=scalar forces the portable path).
 * The performance issue adds quantized-activation (int8) kernels and more ISAs. */
#ifndef TL_DOT_H
#define TL_DOT_H

#include "torchless.h"

typedef float (*tl_dot_fn)(const void *w_row, const float *x, int64_t n);

/* The fastest kernel for this dtype on this CPU, or NULL (then dequantize + tl_dot_f32). */
tl_dot_fn tl_dot_kernel(tl_dtype t);

#endif

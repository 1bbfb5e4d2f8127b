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

/* Attention over nk cached rows of a KV cache (F16 or F32), rows `stride` elements apart:
 * scores s[t] = q . k_t, and out[0..hd) += sum_t p[t] v_t. Available for head sizes that are a
 * multiple of 8 (AVX2, NEON; 16 on AVX-512); false (and NULLs) otherwise, when the caller goes row by row. */
typedef void (*tl_attn_scores_fn)(const float *q, const void *k, size_t stride, int nk, int hd, float *s);
typedef void (*tl_attn_values_fn)(float *out, const float *p, const void *v, size_t stride, int nk, int hd);
/* s[i] = exp(s[i] - m) for n scores at most m, returning their sum; within 2 ulp of expf.
 * NULL on the portable path (then expf). */
typedef float (*tl_exp_sum_fn)(float *s, int n, float m);
tl_exp_sum_fn tl_exp_sum_kernel(void);

bool tl_attn_kernels(tl_dtype kv, int hd, tl_attn_scores_fn *scores, tl_attn_values_fn *values);

#endif

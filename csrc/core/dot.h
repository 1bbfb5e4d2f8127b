/* Fused dequantize-and-dot kernels: one weight row (any supported dtype, as stored)
 * against a float32 vector, without writing the dequantized row anywhere. Chosen at
 * run time from the CPU's features (TORCHLESS_CPU=scalar forces the portable path).
 * The performance issue adds quantized-activation (int8) kernels and more ISAs. */
#ifndef TL_DOT_H
#define TL_DOT_H

#include "torchless.h"

#include <math.h>

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
/* s[i] *= scale for n scores, returning their maximum (-INFINITY for none): the softmax's pass
 * over a block of scores before the exp, bit for bit the scalar products. NULL on the portable
 * path. */
typedef float (*tl_scale_max_fn)(float *s, int n, float scale);
tl_scale_max_fn tl_scale_max_kernel(void);

/* GELU, tanh approximation (Hendrycks & Gimpel 2016; PyTorch gelu(approximate="tanh")):
 * 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). The definition the vector kernel is tested against. */
static inline float tl_gelu_tanh(float x) {
    const float sqrt_2_over_pi = 0.79788456080286535588f;
    return 0.5f * x * (1.0f + tanhf(sqrt_2_over_pi * x * (1.0f + 0.044715f * x * x)));
}

/* a[i] = gelu_tanh(a[i]) · b[i] (the gated FFN of Gemma) as x / (1 + exp(-2u)), u the tanh's
 * argument (1 + tanh u = 2 / (1 + exp(-2u))), with the softmax's vector exp. Tested bound: within
 * 4 ulp + 2^-22 |x| of tl_gelu_tanh (measured: 2 ulp for x >= 0; for x < 0 at most 1.1e-7 |x|,
 * where the scalar formula itself loses its relative accuracy cancelling 1 + tanh u, and is
 * exactly 0 below about -5). NULL on the portable path. */
typedef void (*tl_gelu_glu_fn)(float *a, const float *b, int64_t n);
tl_gelu_glu_fn tl_gelu_glu_kernel(void);

/* a[i] = silu(a[i]) · b[i] = a[i] / (1 + exp(-a[i])) · b[i] (SwiGLU: LLaMA, Qwen, SmolLM2), with
 * the same vector exp (its argument capped at 88, where it is still finite: below -88 the result
 * is x·e^-88, about 0, as the formula's). Tested bound: within 4 ulp + 2^-126 |x·b| of the
 * formula in double. NULL on the portable path. */
tl_gelu_glu_fn tl_silu_glu_kernel(void);

bool tl_attn_kernels(tl_dtype kv, int hd, tl_attn_scores_fn *scores, tl_attn_values_fn *values);

/* The same over a tile of float keys and values (an F16 cache's widened once for every query
 * head of a kv group), nr query rows at once: q and out are nr rows of hd floats, k and v nk
 * rows of hd floats; s[r ld + t] = q_r . k_t, and out_r += sum_t p[r ld + t] v_t. Each key and
 * value read serves several rows (register tiles of 4 rows; on AVX-512, 8 rows of 4 dimensions
 * against 8 keys, whose 4 rows x 4 keys' scores reduce in 9 shuffles and adds). For head sizes
 * that are a multiple of 16 up to 256 (AVX-512; larger ones take AVX2's), 8 (AVX2) or 4 (NEON);
 * false (and NULLs) otherwise, when the caller goes a row at a time. */
typedef void (*tl_attn_scores_rows_fn)(const float *q, int nr, const float *k, int nk, int hd, float *s, int ld);
typedef void (*tl_attn_values_rows_fn)(float *out, int nr, const float *p, int ld, const float *v, int nk, int hd);
bool tl_attn_rows_kernels(int hd, tl_attn_scores_rows_fn *scores, tl_attn_values_rows_fn *values);
/* The same over nk rows of an F16 cache as they lie, for rows that read each key once (a decode
 * step's query heads of one kv head): each key and value converted once for up to 8 rows (8 keys
 * at a time widened into a 2-8 KB buffer that stays in L1, the values straight from the cache),
 * no tile of the whole block widened first. AVX-512 (head sizes a multiple of 16) and AVX2 (8),
 * up to 256; false (and NULLs) otherwise, when the caller widens. */
typedef void (*tl_attn_scores_rows_f16_fn)(const float *q, int nr, const uint16_t *k, int nk, int hd, float *s, int ld);
typedef void (*tl_attn_values_rows_f16_fn)(float *out, int nr, const float *p, int ld, const uint16_t *v, int nk, int hd);
bool tl_attn_rows_f16_kernels(int hd, tl_attn_scores_rows_f16_fn *scores, tl_attn_values_rows_f16_fn *values);

/* dst[i] = src[i] for n halves (F16 to F32: exact, as tl_f16_to_f32; a signalling NaN comes back
 * quiet), in hardware: the attention widens a tile of cached keys and values once for every query
 * head that reads it. NULL on the portable path (then tl_f16_table()). */
typedef void (*tl_f16_widen_fn)(const uint16_t *src, float *dst, int64_t n);
tl_f16_widen_fn tl_f16_widen_kernel(void);

/* The same for a Q8_0 cache's rows: n elements (a multiple of 32) of Q8_0 blocks to floats,
 * d·q bit for bit as tl_dequantize_row_q8_0 (one product each). Never NULL (the portable path
 * is tl_dequantize_row_q8_0). */
typedef void (*tl_q8_0_widen_fn)(const void *src, float *dst, int64_t n);
tl_q8_0_widen_fn tl_q8_0_widen_kernel(void);

#endif

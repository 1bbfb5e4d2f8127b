/* What dot.c's dispatch shares with the kernel files of other instruction sets: the constants
 * of the vectorised exp, and each such file's kernel choice (dot.h's functions, for one ISA). */
#ifndef TL_DOT_ISA_H
#define TL_DOT_ISA_H

#include "dot.h"

/* s[i] = exp(s[i] - m) for scores at most m, and their sum (attention's softmax numerators):
 * Cephes' expf on a vector. exp(x) = 2^n exp(r), n = round(x log2 e), r = x - n ln 2 (ln 2 in two
 * parts), exp(r) by its degree-7 Taylor-like polynomial; x below -87.3 gives about 1e-38 (the
 * maximum's own term is 1, so such terms cannot matter). Within 2 ulp of expf. */
#define EXP_LO -87.3f
#define EXP_LOG2E 1.44269504088896341f
#define EXP_C1 0.693359375f
#define EXP_C2 -2.12194440e-4f
static const float exp_poly[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                                  4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};

#ifdef __aarch64__
/* dot_neon.c: AArch64 Advanced SIMD, 4 float lanes */
tl_dot_fn tl_dot_kernel_neon(tl_dtype t);
tl_exp_sum_fn tl_exp_sum_kernel_neon(void);
void tl_attn_kernels_neon(tl_dtype kv, tl_attn_scores_fn *scores, tl_attn_values_fn *values);
tl_f16_widen_fn tl_f16_widen_kernel_neon(void);
tl_gelu_glu_fn tl_silu_glu_kernel_neon(void);
tl_q8_0_widen_fn tl_q8_0_widen_kernel_neon(void);
void tl_attn_rows_kernels_neon(tl_attn_scores_rows_fn *scores, tl_attn_values_rows_fn *values);
#endif

#endif

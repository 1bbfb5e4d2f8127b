/* Matrix products against weight tensors of any dtype, read where they lie. */
#ifndef TL_MATMUL_H
#define TL_MATMUL_H

#include "pool.h"

/* Rows of W dequantized at a time per thread (the tile of scratch each thread needs). */
#define TL_MATMUL_TILE 64

/* Floats of scratch tl_matmul needs for weights of k columns on nth threads. */
static inline size_t tl_matmul_scratch_floats(int64_t k, int nth) { return (size_t)nth * TL_MATMUL_TILE * (size_t)k; }

/* y[n][m] = x[n][k] · W^T for W of shape (m, k) (ne = [k, m]), any dtype with a float
 * conversion. Decode (small n) dequantizes a tile of W rows into per-thread scratch and
 * dots it with every x row: the model is never dequantized as a whole. Prefill (larger n)
 * multiplies the tile with OpenBLAS sgemm where available. */
void tl_matmul(tl_pool *pool, const tl_tensor *w, const float *x, int64_t n, float *y, float *scratch);

/* sum a[i] * b[i] in float, 8 independent partial sums (vectorizable without reassociation) */
float tl_dot_f32(const float *a, const float *b, int64_t n);

#endif

/* Matrix products against weight tensors of any dtype, read where they lie. */
#ifndef TL_MATMUL_H
#define TL_MATMUL_H

#include "gemm.h"
#include "pool.h"

/* Rows of W dequantized at a time per thread (the tile of scratch each thread needs). */
#define TL_MATMUL_TILE 64

/* Rows of x quantized at a time for weights with integer kernels (dot_q8.h) */
#define TL_MATMUL_Q8_CHUNK 128

/* Floats of scratch tl_matmul needs for weights of k columns on nth threads: a tile of
 * dequantized rows per thread; or a chunk of quantized x rows (at most 1.5 bytes an element:
 * int8 and two floats per 16) and a 16-row pack of W per thread (16 times that), each
 * rounded up to 64 bytes; or the float-weight GEMM's (gemm.h). */
static inline size_t tl_matmul_scratch_floats(int64_t k, int nth) {
    const size_t tiles = (size_t)nth * TL_MATMUL_TILE * (size_t)k;
    const size_t q8 = ((size_t)TL_MATMUL_Q8_CHUNK * 3 * (size_t)k / 2 + (size_t)nth * (24 * (size_t)k + 64) + 64) / sizeof(float) + 1;
    const size_t gemm = tl_gemm_scratch_floats(k, nth);
    const size_t most = tiles > q8 ? tiles : q8;
    return most > gemm ? most : gemm;
}

/* y[n][m] = x[n][k] · W^T for W of shape (m, k) (ne = [k, m]), any dtype with a float
 * conversion. Weights with integer kernels at this dispatch level (tl_q8_kernels_get: the
 * 4-, 5- and 8-bit block formats) get x quantized to 8 bits and integer dot products, the
 * same arithmetic for prefill and decode. Otherwise decode (small n) runs the fused float
 * dot kernels row by row; prefill of F32/F16/BF16 weights runs our GEMM (gemm.h) where this
 * level has SIMD kernels for it (its portable ones only without OpenBLAS), on chunks of x packed
 * once; other prefills dequantize a tile of W rows into per-thread scratch and multiply it with
 * OpenBLAS sgemm where available: the model is never dequantized as a whole. */
void tl_matmul(tl_pool *pool, const tl_tensor *w, const float *x, int64_t n, float *y, float *scratch);

/* a[i] = act(a[i]) * b[i] for n elements (a GLU) */
typedef void (*tl_matmul_glu_fn)(float *a, const float *b, int64_t n);

/* tl_matmul for count (at most 3) matrices of one dtype and width against the same x: q, k and
 * v, or (glu given, count 2) gate and up with y[0] = glu(y[0], y[1]) after. Where they have
 * integer kernels, x is quantized once and the matrices' groups of 16 rows share one pass of
 * the pool, a gate group and its up group on the same thread with the GLU applied to their rows
 * at once: the results are tl_matmul's, bit for bit (and the GLU op's where rows are a multiple
 * of 16, as its vector kernels then take the same runs). false,
 * with nothing done, otherwise (no integer kernels, dtypes or widths that differ): the caller
 * runs the matrices one by one. */
bool tl_matmul_many(tl_pool *pool, const tl_tensor *const *w, int count, const float *x, int64_t n, float *const *y,
                    tl_matmul_glu_fn glu, float *scratch);

/* A copy of W's rows in the layout this CPU's decode kernels read best, made on up to n_threads
 * threads (a MB each), allocated with posix_memalign (free() it), in huge pages where the kernel
 * gives them; NULL where there is none for W, or TORCHLESS_INTERLEAVE=0. For the quantized
 * formats with interleaved kernels (dot_q8.h, tl_q8_interleave; rows a multiple of 16) the rows
 * interleaved: set as w->rows16, it serves decode and prefill in place of w->data, with the same
 * results, and w->data stays the tensor's (every other reader keeps using it). For F16, BF16 and
 * F32 at a level with their dot kernels the rows as they are (the same bytes, read from 2 MB
 * pages rather than the file's 4 KB ones): set as both w->data and w->rows16 (tl_matmul_copied
 * tells the two apart), every reader of the placed tensor reads it. Where w->owner maps a file,
 * its pages under w->data are given back as the copy is made (they come back from the file if
 * read again). */
void *tl_matmul_interleave(const tl_tensor *w, int n_threads);

/* Whether w->rows16 is the interleaved layout (not the rows as they are: see above) */
static inline bool tl_matmul_interleaved(const tl_tensor *w) { return w->rows16 && w->rows16 != w->data; }

/* sum a[i] * b[i] in float, 8 independent partial sums (vectorizable without reassociation) */
float tl_dot_f32(const float *a, const float *b, int64_t n);

#endif

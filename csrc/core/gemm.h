/* Float weights (F32, F16, BF16) times float activations for prefill, y[n][m] = x[n][k] · W^T,
 * in our own blocked GEMM (Goto and van de Geijn, "Anatomy of High-Performance Matrix
 * Multiplication", 2008; the BLIS loop order):
 *  - x is packed once per chunk of its rows (pack_x, the work split over the threads): for each
 *    block of kc columns, panels of nr activation rows, column by column (nr floats of one column
 *    side by side);
 *  - each thread takes contiguous panels of mr weight rows, a few hundred rows at a time (their
 *    outputs stay in L2 from one column block to the next); per block of kc columns it converts
 *    one panel to float32, column by column (pack_w: mr floats of one column side by side; the
 *    F16/BF16 → F32 conversion happens here, in registers, once per weight, block and chunk), and
 *    multiplies it with every activation panel (kernel): mr x nr outputs held in registers, each
 *    step one column of the weight panel times one broadcast activation per output column. While
 *    it does, the kernel prefetches the next panel's weights (short pieces of many rows, which the
 *    hardware prefetchers do not follow).
 * The weight pack (mr x kc floats: 16 KB for AVX2, 64 KB for AVX-512) stays in L1 or L2 across the
 * activation panels and the packed block of x (n x kc) in L2 or L3 across the weight panels; W is
 * read from memory once per chunk of x.
 *
 * Every kernel sums over k in order, block after block (y of a later block added to the stored
 * y), in float32: the levels differ only in rounding (fused or separate multiply-adds). */
#ifndef TL_GEMM_H
#define TL_GEMM_H

#include "pool.h"
#include "torchless.h"

/* bounds of every level's blocking (the scratch the driver needs) */
#define TL_GEMM_MAX_MR 32
#define TL_GEMM_MAX_NR 16
#define TL_GEMM_MAX_KC 512

/* rows (<= mr) of W from w (row_bytes apart), columns [k0, k0 + kc), to dst[kk·mr + r] as floats;
 * rows past `rows` are zeros. dst is 64-byte aligned (the kernels load it whole registers at a time). */
typedef void (*tl_gemm_pack_w_fn)(const void *w, size_t row_bytes, int rows, int64_t k0, int kc, float *dst);

/* y[c·ldy + r] = (y[c·ldy + r] if add, else 0) + Σ_kk wp[kk·mr + r] · xp[kk·nr + c] for r < rows,
 * c < cols (the packs' other lanes are computed and dropped); meanwhile the npf cache lines at
 * pf[] are prefetched into L2, spread over the columns (the next pack's weights) */
typedef void (*tl_gemm_kernel_fn)(const float *wp, const float *xp, int kc, float *y, size_t ldy, int rows, int cols,
                                  bool add, const void *const *pf, int npf);

/* cols (<= nr) rows of x (k floats apart), columns [k0, k0 + kc), to dst[kk·nr + c]; columns
 * past `cols` are zeros */
typedef void (*tl_gemm_pack_x_fn)(const float *x, int64_t k, int cols, int64_t k0, int kc, float *dst);

typedef struct {
    tl_gemm_pack_w_fn pack_w;
    tl_gemm_pack_x_fn pack_x;
    tl_gemm_kernel_fn kernel;
    int mr, nr, kc; /* register block (weight rows x activation rows) and column block */
} tl_gemm_kernels;

/* Rows of x packed at a time */
#define TL_GEMM_CHUNK 512

/* Floats of scratch tl_gemm needs for k columns on nth threads: a weight pack per thread and a
 * packed chunk of x (its rows rounded up to nr), after 64 bytes of room to align them. */
static inline size_t tl_gemm_scratch_floats(int64_t k, int nth) {
    return 16 + (size_t)nth * TL_GEMM_MAX_MR * TL_GEMM_MAX_KC + (TL_GEMM_CHUNK + TL_GEMM_MAX_NR) * (size_t)k;
}

/* y[n][m] = x[n][k] · W^T for W of shape (m, k) (ne = [k, m]) of the kernels' dtype, on the pool's
 * threads: per chunk of x, its panels packed (split over the threads), then each thread takes
 * contiguous panels of weight rows and, per block of columns, packs each panel and multiplies it
 * with every panel of x. */
void tl_gemm(tl_pool *pool, const tl_gemm_kernels *kern, const tl_tensor *w, const float *x, int64_t n, float *y,
             float *scratch);

/* The kernels for weights of dtype t at the CPU's dispatch level, false for a dtype other than
 * F32/F16/BF16. The scalar level's are the portable ones. */
bool tl_gemm_kernels_get(tl_dtype t, tl_gemm_kernels *out);

/* The portable kernels: plain C, the reference every SIMD level is tested against. */
bool tl_gemm_kernels_scalar(tl_dtype t, tl_gemm_kernels *out);

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define TL_GEMM_X86 1
/* gemm_x86.c: AVX2 + FMA + F16C (mr 16, nr 6), AVX-512 F (mr 32, nr 12) */
bool tl_gemm_kernels_avx2(tl_dtype t, tl_gemm_kernels *out);
bool tl_gemm_kernels_avx512(tl_dtype t, tl_gemm_kernels *out);
#endif

#endif

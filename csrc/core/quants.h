/* GGUF quantized block formats, bit for bit as GGML defines them
 * (ggml-common.h), and the scalar row kernels over them.
 * Every to_float/from_float takes n = a whole number of blocks. */
#ifndef TL_QUANTS_H
#define TL_QUANTS_H

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define QK4_0 32
#define QK4_1 32
#define QK5_0 32
#define QK5_1 32
#define QK8_0 32
#define QK8_1 32
#define QK_K 256
#define K_SCALE_SIZE 12

typedef uint16_t tl_half; /* IEEE half, stored as bits */

typedef struct { tl_half d; uint8_t qs[QK4_0 / 2]; } block_q4_0;
typedef struct { tl_half d, m; uint8_t qs[QK4_1 / 2]; } block_q4_1;
typedef struct { tl_half d; uint8_t qh[4]; uint8_t qs[QK5_0 / 2]; } block_q5_0;
typedef struct { tl_half d, m; uint8_t qh[4]; uint8_t qs[QK5_1 / 2]; } block_q5_1;
typedef struct { tl_half d; int8_t qs[QK8_0]; } block_q8_0;
typedef struct { tl_half d, s; int8_t qs[QK8_1]; } block_q8_1;
/* K-quants: super-blocks of 256 */
typedef struct { uint8_t scales[QK_K / 16]; uint8_t qs[QK_K / 4]; tl_half d, dmin; } block_q2_K;
typedef struct { uint8_t hmask[QK_K / 8]; uint8_t qs[QK_K / 4]; uint8_t scales[12]; tl_half d; } block_q3_K;
typedef struct { tl_half d, dmin; uint8_t scales[K_SCALE_SIZE]; uint8_t qs[QK_K / 2]; } block_q4_K;
typedef struct { tl_half d, dmin; uint8_t scales[K_SCALE_SIZE]; uint8_t qh[QK_K / 8]; uint8_t qs[QK_K / 2]; } block_q5_K;
typedef struct { uint8_t ql[QK_K / 2]; uint8_t qh[QK_K / 4]; int8_t scales[QK_K / 16]; tl_half d; } block_q6_K;
typedef struct { float d; int8_t qs[QK_K]; int16_t bsums[QK_K / 16]; } block_q8_K;
/* ternary (BitNet b1.58) */
typedef struct { uint8_t qs[(QK_K - 4 * QK_K / 64) / 5]; uint8_t qh[QK_K / 64]; tl_half d; } block_tq1_0;
typedef struct { uint8_t qs[QK_K / 4]; tl_half d; } block_tq2_0;

static_assert(sizeof(block_q4_0) == 18, "q4_0 block");
static_assert(sizeof(block_q4_1) == 20, "q4_1 block");
static_assert(sizeof(block_q5_0) == 22, "q5_0 block");
static_assert(sizeof(block_q5_1) == 24, "q5_1 block");
static_assert(sizeof(block_q8_0) == 34, "q8_0 block");
static_assert(sizeof(block_q8_1) == 36, "q8_1 block");
static_assert(sizeof(block_q2_K) == 84, "q2_K block");
static_assert(sizeof(block_q3_K) == 110, "q3_K block");
static_assert(sizeof(block_q4_K) == 144, "q4_K block");
static_assert(sizeof(block_q5_K) == 176, "q5_K block");
static_assert(sizeof(block_q6_K) == 210, "q6_K block");
static_assert(sizeof(block_q8_K) == 292, "q8_K block");
static_assert(sizeof(block_tq1_0) == 54, "tq1_0 block");
static_assert(sizeof(block_tq2_0) == 66, "tq2_0 block");

/* Q4_K/Q5_K: the 6-bit scale and min of sub-block j (0..7) from the 12 packed bytes
 * (ggml's get_scale_min_k4: j < 4 in the low 6 bits, j >= 4 split over nibbles and the
 * top 2 bits of the first 8 bytes). */
static inline void get_scale_min_k4(int j, const uint8_t *q, int *sc, int *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0x0F) | (q[j - 4] >> 6) << 4;
        *m = (q[j + 4] >> 4) | (q[j] >> 6) << 4;
    }
}

/* The fields of super-block i of a Q4_K row, or of a Q5_K row (q5; qh is NULL for Q4_K) */
typedef struct {
    const uint8_t *qs, *qh, *scales;
    tl_half d, dmin;
} k4_fields;

static inline k4_fields k4_block(const void *row, int64_t i, bool q5) {
    if (q5) {
        const block_q5_K *p = (const block_q5_K *)row + i;
        return (k4_fields){p->qs, p->qh, p->scales, p->d, p->dmin};
    }
    const block_q4_K *p = (const block_q4_K *)row + i;
    return (k4_fields){p->qs, NULL, p->scales, p->d, p->dmin};
}

#define TL_QUANT_KERNELS(X) X(q4_0) X(q4_1) X(q5_0) X(q5_1) X(q8_0) X(q8_1) X(q2_K) X(q3_K) \
    X(q4_K) X(q5_K) X(q6_K) X(q8_K) X(tq1_0) X(tq2_0)

#define TL_DECLARE_ROW_KERNELS(t)                                                    \
    void tl_dequantize_row_##t(const void *restrict src, float *restrict dst, int64_t n); \
    void tl_quantize_row_##t(const float *restrict src, void *restrict dst, int64_t n);
TL_QUANT_KERNELS(TL_DECLARE_ROW_KERNELS)
#undef TL_DECLARE_ROW_KERNELS

#endif

/* Quantized weights times quantized activations in integer arithmetic (issue 6), as
 * llama.cpp pairs them (its vec_dot_type): activations are quantized to 8 bits once per
 * matmul, Q8_0-style (blocks of 32, fp16 scale) for Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 weights and
 * Q8_K-style (blocks of 256, float scale) for the K-quants.
 *
 * Every weight format is brought to one shape: a row is sub-blocks of G elements (32, or
 * 16 for Q6_K) whose values are a·code + b with an unsigned 8-bit code and two floats per
 * sub-block (Q4_0: a = d, b = -8d; Q4_1: a = d, b = m; Q8_0: code = q + 128, b = -128d;
 * Q4_K: a = d·scale, b = -dmin·min; ...). An activation sub-block is dx·q with int8 q, and
 * s = dx·Σq beside it, so one sub-block's contribution is
 *     a·dx·(Σ code·q) + b·s,
 * the first sum exact in int32. Kernels work on 16 weight rows at a time, repacked so that
 * one 32-bit lane holds 4 consecutive codes of one row (vpdpbusd then adds 4 products into
 * each row's lane), and every kernel, at every dispatch level, accumulates each output as
 *     acc = fma(a·dx, (float)Σ code·q, acc);  acc = fma(b, s, acc)
 * sub-block after sub-block: the results are bit-identical across levels and across how
 * many activation rows a call gets (a prefill equals its decodes). */
#ifndef TL_DOT_Q8_H
#define TL_DOT_Q8_H

#include "torchless.h"

#define TL_Q8_LANES 16 /* weight rows per pack */

/* An activation row of k elements quantized for weights of one dtype (tl_q8_act_bytes):
 * int8 q[k], then per sub-block the float pair (dx, s = dx·Σq). */
size_t tl_q8_act_bytes(tl_dtype t, int64_t k);
typedef void (*tl_q8_quantize_fn)(const float *x, int64_t k, void *dst);

/* 16 weight rows repacked (tl_q8_pack_bytes): codes[k/4][16][4] (lane r: 4 consecutive codes
 * of row r), then a[k/G][16] and b[k/G][16] as floats. Rows past `rows` repeat the last row. */
size_t tl_q8_pack_bytes(tl_dtype t, int64_t k);
typedef void (*tl_q8_pack_fn)(const void *w, size_t row_bytes, int rows, int64_t k, void *pack);

/* y[c·ldy + r] for rows r < rows and activation rows c < n (x_stride bytes apart), sub-blocks of g */
typedef void (*tl_q8_gemm_fn)(const void *pack, const void *xq, size_t x_stride, int n, int64_t k, int g, float *y,
                              size_t ldy, int rows);

/* Decode: the same products for n <= TL_Q8_GEMV_MAX activation rows, straight from 16 rows of
 * W (w, row_bytes, rows as for a pack) without a pack: the same results, bit for bit. */
#define TL_Q8_GEMV_MAX 4

/* call(N) with N the constant equal to n (1..TL_Q8_GEMV_MAX): a decode kernel's entry, so that
 * its loops over activation rows unroll and their accumulators stay in registers */
#define TL_Q8_BY_ROWS(n, call)                                                                                          \
    switch (n) {                                                                                                        \
    case 1: call(1); break;                                                                                             \
    case 2: call(2); break;                                                                                             \
    case 3: call(3); break;                                                                                             \
    default: call(4); break;                                                                                            \
    }
typedef void (*tl_q8_gemv_fn)(const void *w, size_t row_bytes, int rows, int64_t k, const void *xq, size_t x_stride,
                              int n, float *y, size_t ldy);

/* Interleaved rows (tl_q8_interleave): where a level has kernels for them (AVX-512 VNNI, and
 * AVX2 on the same layout: one rule for every level), a matrix of
 * quantized rows may be copied once at load into groups of 16 rows whose blocks sit side by
 * side, each block's 4-byte words transposed: word t of row r's block i at byte 64t + 4r of the
 * group's i-th unit of 16 blocks. The words are a block's bytes but for one fp16, which goes
 * after the last unit (the 16 rows' values of block i at 32 bytes each, in row order):
 *   Q4_0, Q5_0, Q8_0: d first, then 4, 5, 8 words (qs; Q5_0 qh then qs): units of 256, 320, 512 B
 *   Q4_1, Q5_1: 5 and 6 words (d|m, Q5_1's qh, qs), no fp16 after: units of 320 and 384 B
 *   Q4_K, Q5_K: 36 and 44 words, no fp16 after: units of 2,304 and 2,816 B
 *   Q6_K: the first 208 bytes as 52 words (units of 3,328 B), then d.
 * A group is as many bytes as its 16 rows, at the same offset, and keeps the codes as they are
 * packed (nibbles and high bits apart): a decode kernel reads one stream of whole 64-byte
 * registers, one row per 32-bit lane, instead of 16 row streams gathered 16 bytes at a time
 * (AVX2: two 32-byte registers, rows 0..7 and 8..15, each activation word broadcast once for
 * both; from these groups it reads 10.5-10.8 GB/s of Q4_0/Q8_0 from memory on one thread of
 * 11.3, so groups of 8 rows, a second copy rule, could gain at most the rest: benchmarks/NOTES.md).
 * The arithmetic is unchanged, so the results are the same, bit for bit. */
bool tl_q8_interleaves(tl_dtype t);
/* 16 rows of w (row_bytes apart, k columns) into one group at dst */
void tl_q8_interleave(tl_dtype t, const void *w, size_t row_bytes, int64_t k, void *dst);
/* row r (< 16) of a group back as its blocks (row_bytes at row) */
void tl_q8_interleaved_row(tl_dtype t, const void *group, int r, int64_t k, void *row);

typedef struct {
    tl_q8_quantize_fn quantize;
    tl_q8_pack_fn pack;
    tl_q8_gemm_fn gemm;
    tl_q8_gemv_fn gemv; /* NULL: pack and GEMM for any n */
    int g;              /* sub-block size */
    /* the same on one group of interleaved rows (rows = 16); NULL where the level has none */
    tl_q8_pack_fn pack16;
    tl_q8_gemv_fn gemv16;
} tl_q8_kernels;

/* The kernels for this weight dtype at the CPU's dispatch level; false when the dtype keeps
 * float activations there (F32/F16/BF16 weights always do; every dtype with the environment
 * variable TORCHLESS_ACT_QUANT=0). */
bool tl_q8_kernels_get(tl_dtype t, tl_q8_kernels *out);

/* The portable kernels: the definition the SIMD ones are tested against, bit for bit. */
bool tl_q8_kernels_scalar(tl_dtype t, tl_q8_kernels *out);

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define TL_Q8_X86 1
/* dot_q8_x86.c: AVX-512 VNNI (false without VNNI, or for a dtype it has no repack for) */
bool tl_q8_kernels_avx512(tl_dtype t, tl_q8_kernels *out);
/* dot_q8_avx2.c: AVX2, for every dtype the portable kernels have */
bool tl_q8_kernels_avx2(tl_dtype t, tl_q8_kernels *out);
#endif

#if defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
#define TL_Q8_NEON 1
/* dot_q8_neon.c: SDOT where the CPU has dotprod, SMULL/SADALP where it does not; every dtype
 * the portable kernels have */
bool tl_q8_kernels_neon(tl_dtype t, tl_q8_kernels *out);
#endif

#endif

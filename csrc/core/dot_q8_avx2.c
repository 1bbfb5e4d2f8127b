/* AVX2 products for quantized activations (dot_q8.h), for CPUs without AVX-512 VNNI: the
 * portable quantizers and repacks, a GEMM on the same 16-row packs, and decode kernels that
 * read each row's blocks in place. Their integer sums are vpdpbusd's, made of vpmaddubsw
 * (unsigned code x signed activation, adjacent pairs added into int16, saturating) and
 * vpmaddwd (int16 pairs added into int32).
 *
 * No pair saturates: a pair is at most 2 · 63 · 128 = 16128 < 32767 for codes of at most 6 bits
 * (Q4_x: 15, Q5_x: 31, Q6_K: 63; activations are in [-128, 127]). Q8_0's codes take 8 bits
 * (2 · 255 · 127 would saturate), so they go in as two nibbles, each pair at most
 * 2 · 15 · 128 = 3840, and vpmaddwd weighs the high one by 16. Every integer sum is then
 * exact, and the float operations after it are gemm_scalar's: bit-identical results. */
#include "dot_q8.h"

#ifdef TL_Q8_X86
#include "fp16.h"
#include "quants.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

#define AVX2 __attribute__((target("avx2,fma")))
#define INLINE inline __attribute__((always_inline))
#define UNROLL _Pragma("GCC unroll 8")

/* lane r: the sum of 4 codes of row r times the same 4 activation bytes x (vpdpbusd) */
AVX2 static INLINE __m256i dot4(__m256i codes, __m256i x, const bool nibbles) {
    const __m256i ones = _mm256_set1_epi16(1);
    if (!nibbles) return _mm256_madd_epi16(_mm256_maddubs_epi16(codes, x), ones);
    const __m256i m4 = _mm256_set1_epi8(15);
    const __m256i lo = _mm256_and_si256(codes, m4), hi = _mm256_and_si256(_mm256_srli_epi16(codes, 4), m4);
    return _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(lo, x), ones),
                            _mm256_madd_epi16(_mm256_maddubs_epi16(hi, x), _mm256_set1_epi16(16)));
}

/* y[c][0..8) for nc activation rows: 8 rows of a pack (codes, a and b offset to them), the
 * arithmetic of dot_q8.c's gemm_scalar */
AVX2 static INLINE void gemm_tile(const uint8_t *codes, const float *a, const float *b, const uint8_t *xq,
                                  size_t x_stride, const int nc, int64_t k, const int g, const bool nibbles, float *y,
                                  size_t ldy, __m256i keep) {
    __m256 acc[4];
    UNROLL for (int c = 0; c < nc; c++) acc[c] = _mm256_setzero_ps();
    for (int64_t s = 0; s < k / g; s++) {
        __m256i sum[4];
        UNROLL for (int c = 0; c < nc; c++) sum[c] = _mm256_setzero_si256();
        UNROLL for (int j = 0; j < g / 4; j++) {
            const __m256i wv = _mm256_loadu_si256((const __m256i *)(codes + (s * (g / 4) + j) * 4 * TL_Q8_LANES));
            UNROLL for (int c = 0; c < nc; c++) {
                int32_t v;
                memcpy(&v, xq + (size_t)c * x_stride + s * g + 4 * j, 4);
                sum[c] = _mm256_add_epi32(sum[c], dot4(wv, _mm256_set1_epi32(v), nibbles));
            }
        }
        const __m256 av = _mm256_loadu_ps(a + TL_Q8_LANES * s), bv = _mm256_loadu_ps(b + TL_Q8_LANES * s);
        UNROLL for (int c = 0; c < nc; c++) {
            const float *ds = (const float *)(xq + (size_t)c * x_stride + k) + 2 * s;
            acc[c] = _mm256_fmadd_ps(_mm256_mul_ps(av, _mm256_set1_ps(ds[0])), _mm256_cvtepi32_ps(sum[c]), acc[c]);
            acc[c] = _mm256_fmadd_ps(bv, _mm256_set1_ps(ds[1]), acc[c]);
        }
    }
    UNROLL for (int c = 0; c < nc; c++) _mm256_maskstore_ps(y + (size_t)c * ldy, keep, acc[c]);
}

/* each half of the pack's 16 rows that holds rows, in tiles of 4 activation rows, then 1 */
AVX2 static INLINE void gemm_avx2(const void *pack, const void *xq, size_t x_stride, int n, int64_t k, const int g,
                                  const bool nibbles, float *y, size_t ldy, int rows) {
    const uint8_t *codes = pack, *x = xq;
    const float *a = (const float *)(codes + TL_Q8_LANES * k), *b = a + TL_Q8_LANES * (k / g);
    for (int h = 0; h < 2 && 8 * h < rows; h++) {
        const __m256i keep = _mm256_cmpgt_epi32(_mm256_set1_epi32(rows - 8 * h), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        int c = 0;
        for (; c + 4 <= n; c += 4)
            gemm_tile(codes + 32 * h, a + 8 * h, b + 8 * h, x + c * x_stride, x_stride, 4, k, g, nibbles,
                      y + c * ldy + 8 * h, ldy, keep);
        for (; c < n; c++)
            gemm_tile(codes + 32 * h, a + 8 * h, b + 8 * h, x + c * x_stride, x_stride, 1, k, g, nibbles,
                      y + c * ldy + 8 * h, ldy, keep);
    }
}

#define GEMM_AVX2(name, G, NIBBLES)                                                                                     \
    AVX2 static void gemm_##name##_avx2(const void *pack, const void *xq, size_t x_stride, int n, int64_t k, int g,    \
                                        float *y, size_t ldy, int rows) {                                               \
        (void)g;                                                                                                        \
        gemm_avx2(pack, xq, x_stride, n, k, G, NIBBLES, y, ldy, rows);                                                  \
    }
GEMM_AVX2(g32, 32, false)
GEMM_AVX2(g16, 16, false)
GEMM_AVX2(q8_0, 32, true)
#undef GEMM_AVX2

/* ---------------------------------------------------------------- decode
 * One row at a time, straight from its blocks: the 32 codes of a sub-block (two of Q6_K's
 * sub-blocks of 16) in one register in element order, their a and b as the portable unpack
 * computes them, and per activation row the integer sum, then gemm_scalar's two fmaf. */

/* the sum of the 32-bit lanes i..i+3 (i = 0, 4) of v */
AVX2 static INLINE int32_t sum4(__m256i v, int i) {
    __m128i h = i ? _mm256_extracti128_si256(v, 1) : _mm256_castsi256_si128(v);
    h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4E));
    return _mm_cvtsi128_si32(_mm_add_epi32(h, _mm_shuffle_epi32(h, 0xB1)));
}

/* acc[c] += sub-block s (of 32) of this row against activation row c */
AVX2 static INLINE void add_sub32(float *acc, int n, __m256i codes, const bool nibbles, float a, float b,
                                  const uint8_t *x, size_t xs, int64_t k, int64_t s) {
    for (int c = 0; c < n; c++) {
        const uint8_t *q = x + (size_t)c * xs;
        const float *ds = (const float *)(q + k) + 2 * s;
        const __m256i p = dot4(codes, _mm256_loadu_si256((const __m256i *)(q + 32 * s)), nibbles);
        acc[c] = fmaf(a * ds[0], (float)(sum4(p, 0) + sum4(p, 4)), acc[c]);
        acc[c] = fmaf(b, ds[1], acc[c]);
    }
}

/* acc[c] += sub-blocks s and s + 1 (of 16): the two halves of codes, in order */
AVX2 static INLINE void add_sub16x2(float *acc, int n, __m256i codes, const float a[2], const float b[2],
                                    const uint8_t *x, size_t xs, int64_t k, int64_t s) {
    for (int c = 0; c < n; c++) {
        const uint8_t *q = x + (size_t)c * xs;
        const float *ds = (const float *)(q + k) + 2 * s;
        const __m256i p = dot4(codes, _mm256_loadu_si256((const __m256i *)(q + 16 * s)), false);
        for (int h = 0; h < 2; h++) {
            acc[c] = fmaf(a[h] * ds[2 * h], (float)sum4(p, 4 * h), acc[c]);
            acc[c] = fmaf(b[h], ds[2 * h + 1], acc[c]);
        }
    }
}

/* the low nibbles of 16 bytes as elements 0..15, the high ones as 16..31 */
AVX2 static INLINE __m256i nibbles32(const uint8_t *qs) {
    const __m128i v = _mm_loadu_si128((const __m128i *)qs), m4 = _mm_set1_epi8(15);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m4), _mm_and_si128(v, m4));
}

/* byte j: 16 where bit j of the 32 bits h is set (Q5_0/Q5_1's 5th bits) */
AVX2 static INLINE __m256i bits32(const uint8_t qh[4]) {
    uint32_t h;
    memcpy(&h, qh, 4);
    const __m256i byte_of = _mm256_setr_epi64x(0, 0x0101010101010101, 0x0202020202020202, 0x0303030303030303);
    const __m256i bit = _mm256_set1_epi64x((int64_t)0x8040201008040201);
    const __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int32_t)h), byte_of);
    return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit), _mm256_set1_epi8(16));
}

/* the legacy formats (see dot_q8.c's unpack_legacy) */
AVX2 static INLINE void row_legacy(const uint8_t *row, int64_t k, const uint8_t *x, size_t xs, int n, float *acc,
                                   const tl_dtype t) {
    const size_t bytes = tl_dtype_row_size(t, 32);
    for (int64_t i = 0; i < k / 32; i++) {
        const uint8_t *blk = row + (size_t)i * bytes;
        __m256i codes;
        float d, b;
        switch (t) {
        case TL_Q4_0: {
            const block_q4_0 *p = (const block_q4_0 *)blk;
            d = tl_f16_to_f32(p->d), b = -8.0f * d, codes = nibbles32(p->qs);
            break;
        }
        case TL_Q4_1: {
            const block_q4_1 *p = (const block_q4_1 *)blk;
            d = tl_f16_to_f32(p->d), b = tl_f16_to_f32(p->m), codes = nibbles32(p->qs);
            break;
        }
        case TL_Q5_0: {
            const block_q5_0 *p = (const block_q5_0 *)blk;
            d = tl_f16_to_f32(p->d), b = -16.0f * d, codes = _mm256_or_si256(nibbles32(p->qs), bits32(p->qh));
            break;
        }
        case TL_Q5_1: {
            const block_q5_1 *p = (const block_q5_1 *)blk;
            d = tl_f16_to_f32(p->d), b = tl_f16_to_f32(p->m), codes = _mm256_or_si256(nibbles32(p->qs), bits32(p->qh));
            break;
        }
        default: { /* Q8_0: the code q + 128 */
            const block_q8_0 *p = (const block_q8_0 *)blk;
            d = tl_f16_to_f32(p->d), b = -128.0f * d;
            codes = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)p->qs), _mm256_set1_epi8(-128));
            break;
        }
        }
        add_sub32(acc, n, codes, t == TL_Q8_0, d, b, x, xs, k, i);
    }
}

/* Q4_K and Q5_K (see unpack_k4): sub-block s from the low (even s) or high nibbles of qs
 * bytes 32(s/2)..; Q5_K's 5th bit of element l is bit s of qh[l] */
AVX2 static INLINE void row_k4(const uint8_t *row, int64_t k, const uint8_t *x, size_t xs, int n, float *acc,
                               const bool q5) {
    const __m256i m4 = _mm256_set1_epi8(15);
    for (int64_t i = 0; i < k / QK_K; i++) {
        const k4_fields f = k4_block(row, i, q5);
        const uint8_t *qs = f.qs, *qh = f.qh, *scales = f.scales;
        const float d = tl_f16_to_f32(f.d), dmin = tl_f16_to_f32(f.dmin);
        const __m256i hv = q5 ? _mm256_loadu_si256((const __m256i *)qh) : _mm256_setzero_si256();
        for (int s = 0; s < 8; s++) {
            int sc, m;
            get_scale_min_k4(s, scales, &sc, &m);
            const __m256i v = _mm256_loadu_si256((const __m256i *)(qs + 32 * (s / 2)));
            __m256i codes = _mm256_and_si256(s % 2 ? _mm256_srli_epi16(v, 4) : v, m4);
            if (q5) {
                const __m256i bit = _mm256_set1_epi8((char)(1 << s));
                codes = _mm256_or_si256(codes, _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hv, bit), bit),
                                                                _mm256_set1_epi8(16)));
            }
            add_sub32(acc, n, codes, false, d * (float)sc, -(dmin * (float)m), x, xs, k, 8 * i + s);
        }
    }
}

/* Q6_K (see unpack_q6_K): elements l + 32p of a half (l < 32) are sub-blocks 2p and 2p + 1 */
AVX2 static INLINE void row_q6_K(const uint8_t *row, int64_t k, const uint8_t *x, size_t xs, int n, float *acc) {
    const __m256i m4 = _mm256_set1_epi8(15), m2 = _mm256_set1_epi8(0x30);
    for (int64_t i = 0; i < k / QK_K; i++) {
        const block_q6_K *p = (const block_q6_K *)row + i;
        const float d = tl_f16_to_f32(p->d);
        for (int h = 0; h < 2; h++) {
            const __m256i qh = _mm256_loadu_si256((const __m256i *)(p->qh + 32 * h));
            for (int q = 0; q < 4; q++) {
                const __m256i ql = _mm256_loadu_si256((const __m256i *)(p->ql + 64 * h + 32 * (q % 2)));
                const __m256i lo = _mm256_and_si256(q < 2 ? ql : _mm256_srli_epi16(ql, 4), m4);
                const __m256i hi = _mm256_and_si256(_mm256_slli_epi16(_mm256_srli_epi16(qh, 2 * q), 4), m2);
                const int s = 8 * h + 2 * q;
                float a[2], b[2];
                for (int j = 0; j < 2; j++) {
                    a[j] = d * (float)p->scales[s + j];
                    b[j] = -32.0f * a[j];
                }
                add_sub16x2(acc, n, _mm256_or_si256(lo, hi), a, b, x, xs, k, 16 * i + s);
            }
        }
    }
}

/* one entry per format: each of the rows against up to TL_Q8_GEMV_MAX activation rows */
#define GEMV_AVX2(name, call)                                                                                           \
    AVX2 static void gemv_##name##_avx2(const void *w, size_t row_bytes, int rows, int64_t k, const void *xq,          \
                                        size_t xs, int n, float *y, size_t ldy) {                                      \
        const uint8_t *x = xq;                                                                                          \
        for (int r = 0; r < rows; r++) {                                                                                \
            const uint8_t *row = (const uint8_t *)w + (size_t)r * row_bytes;                                            \
            float acc[TL_Q8_GEMV_MAX] = {0};                                                                            \
            call;                                                                                                       \
            for (int c = 0; c < n; c++) y[(size_t)c * ldy + r] = acc[c];                                                \
        }                                                                                                               \
    }
GEMV_AVX2(q4_0, row_legacy(row, k, x, xs, n, acc, TL_Q4_0))
GEMV_AVX2(q4_1, row_legacy(row, k, x, xs, n, acc, TL_Q4_1))
GEMV_AVX2(q5_0, row_legacy(row, k, x, xs, n, acc, TL_Q5_0))
GEMV_AVX2(q5_1, row_legacy(row, k, x, xs, n, acc, TL_Q5_1))
GEMV_AVX2(q8_0, row_legacy(row, k, x, xs, n, acc, TL_Q8_0))
GEMV_AVX2(q4_K, row_k4(row, k, x, xs, n, acc, false))
GEMV_AVX2(q5_K, row_k4(row, k, x, xs, n, acc, true))
GEMV_AVX2(q6_K, row_q6_K(row, k, x, xs, n, acc))
#undef GEMV_AVX2

bool tl_q8_kernels_avx2(tl_dtype t, tl_q8_kernels *out) {
    if (!tl_q8_kernels_scalar(t, out)) return false;
    out->gemm = t == TL_Q8_0 ? gemm_q8_0_avx2 : out->g == 32 ? gemm_g32_avx2 : gemm_g16_avx2;
    switch (t) {
    case TL_Q4_0: out->gemv = gemv_q4_0_avx2; break;
    case TL_Q4_1: out->gemv = gemv_q4_1_avx2; break;
    case TL_Q5_0: out->gemv = gemv_q5_0_avx2; break;
    case TL_Q5_1: out->gemv = gemv_q5_1_avx2; break;
    case TL_Q8_0: out->gemv = gemv_q8_0_avx2; break;
    case TL_Q4_K: out->gemv = gemv_q4_K_avx2; break;
    case TL_Q5_K: out->gemv = gemv_q5_K_avx2; break;
    default: out->gemv = gemv_q6_K_avx2; break; /* Q6_K, the last format the portable kernels have */
    }
    return true;
}
#endif

/* AVX2 products for quantized activations (dot_q8.h), for CPUs without AVX-512 VNNI: the
 * portable quantizers and repacks, and a GEMM on the same 16-row packs whose integer sums are
 * vpdpbusd's, made of vpmaddubsw (unsigned code x signed activation, adjacent pairs added into
 * int16, saturating) and vpmaddwd (int16 pairs added into int32).
 *
 * No pair saturates: a pair is at most 2 · 63 · 128 = 16128 < 32767 for codes of at most 6 bits
 * (Q4_x: 15, Q5_x: 31, Q6_K: 63; activations are in [-128, 127]). Q8_0's codes take 8 bits
 * (2 · 255 · 127 would saturate), so they go in as two nibbles, each pair at most
 * 2 · 15 · 128 = 3840, and vpmaddwd weighs the high one by 16. Every integer sum is then
 * exact, and the float operations after it are gemm_scalar's: bit-identical results. */
#include "dot_q8.h"

#ifdef TL_Q8_X86
#include <immintrin.h>
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

bool tl_q8_kernels_avx2(tl_dtype t, tl_q8_kernels *out) {
    if (!tl_q8_kernels_scalar(t, out)) return false;
    out->gemm = t == TL_Q8_0 ? gemm_q8_0_avx2 : out->g == 32 ? gemm_g32_avx2 : gemm_g16_avx2;
    return true;
}
#endif

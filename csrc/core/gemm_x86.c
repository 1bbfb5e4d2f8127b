/* x86 GEMM kernels for float weights (gemm.h):
 * - AVX-512 F: a register block of 32 weight rows (two registers) x 12 activation rows, 24
 *   accumulators; per column 2 loads of the weight pack, 12 broadcasts, 24 FMAs (the FMA ports
 *   are the bound: 14 loads fit in the 12 cycles of 24 FMAs on two ports). Column blocks of 512.
 * - AVX2 + FMA: 16 rows (two registers) x 6 activation rows, 12 accumulators of the 16
 *   registers. Column blocks of 256.
 * The weight packs convert 16 (AVX2: 8) columns of 16 (8) rows to float32 in registers (vcvtph2ps
 * for F16, a 16-bit shift for BF16) and transpose them there, so each weight is converted once
 * per column block and chunk of x, and read by the kernel as float32; x is packed by the same
 * transposes. Measured (benchmarks/NOTES.md): the kernels alone at 92-94% of the FMA ports' rate,
 * the whole GEMM at ~73% (AVX-512) on TinyLlama's matrices. */
#include "gemm.h"

#ifdef TL_GEMM_X86
#include "fp16.h"

#include <immintrin.h>

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
#define AVX2 __attribute__((target("avx2,fma,f16c")))
#define INLINE inline __attribute__((always_inline))

/* ---------------------------------------------------------------- AVX-512 */

#define MR16 32
#define NR16 12

/* elements [e, e + n) of a row (n <= 16, the rest zeros) as floats */
AVX512 static INLINE __m512 row16(tl_dtype t, const void *row, int64_t e, int n) {
    if (n == 16) switch (t) { /* unmasked loads */
        case TL_F16: return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)row + e)));
        case TL_BF16:
            return _mm512_castsi512_ps(
                _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)((const uint16_t *)row + e))), 16));
        default: return _mm512_loadu_ps((const float *)row + e);
        }
    const __mmask16 m = (__mmask16)((1u << n) - 1);
    switch (t) {
    case TL_F16: return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const uint16_t *)row + e));
    case TL_BF16:
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, (const uint16_t *)row + e)), 16));
    default: return _mm512_maskz_loadu_ps(m, (const float *)row + e);
    }
}

/* r[i] = row i of a 16x16 block -> r[j] = column j (4 rounds of 16 in-lane and lane shuffles) */
AVX512 static INLINE void transpose16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    /* r[4i + j], 128-bit lane L: column 4L + j of rows 4i..4i+3 */
    for (int i = 0; i < 4; i++) {
        const __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
        const __m512d c = _mm512_castps_pd(t[4 * i + 2]), d = _mm512_castps_pd(t[4 * i + 3]);
        r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    for (int j = 0; j < 4; j++) {
        const __m512 a = _mm512_shuffle_f32x4(r[j], r[4 + j], 0x88), b = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0x88);
        const __m512 c = _mm512_shuffle_f32x4(r[j], r[4 + j], 0xdd), d = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0xdd);
        t[j] = _mm512_shuffle_f32x4(a, b, 0x88);
        t[8 + j] = _mm512_shuffle_f32x4(a, b, 0xdd);
        t[4 + j] = _mm512_shuffle_f32x4(c, d, 0x88);
        t[12 + j] = _mm512_shuffle_f32x4(c, d, 0xdd);
    }
    for (int j = 0; j < 16; j++) r[j] = t[j];
}

AVX512 static INLINE void pack_w_avx512(tl_dtype t, const void *w, size_t row_bytes, int rows, int64_t k0, int kc, float *dst) {
    for (int h = 0; h < MR16 / 16; h++) {
        const int hr = rows - 16 * h; /* rows of this half */
        const uint8_t *w16 = (const uint8_t *)w + (size_t)16 * h * row_bytes;
        int kk = 0;
        __m512 r[16];
        if (hr >= 16) /* whole blocks of 16 x 16, without a test a row */
            for (; kk + 16 <= kc; kk += 16) {
#pragma GCC unroll 16
                for (int i = 0; i < 16; i++) r[i] = row16(t, w16 + (size_t)i * row_bytes, k0 + kk, 16);
                transpose16(r);
#pragma GCC unroll 16
                for (int j = 0; j < 16; j++) _mm512_store_ps(dst + (size_t)(kk + j) * MR16 + 16 * h, r[j]);
            }
        for (; kk < kc; kk += 16) { /* the last columns, or a partial panel */
            const int n = kc - kk < 16 ? kc - kk : 16;
            for (int i = 0; i < 16; i++) r[i] = i < hr ? row16(t, w16 + (size_t)i * row_bytes, k0 + kk, n) : _mm512_setzero_ps();
            transpose16(r);
            for (int j = 0; j < n; j++) _mm512_store_ps(dst + (size_t)(kk + j) * MR16 + 16 * h, r[j]);
        }
    }
}

AVX512 static void pack_w_f32_avx512(const void *w, size_t row_bytes, int rows, int64_t k0, int kc, float *dst) {
    pack_w_avx512(TL_F32, w, row_bytes, rows, k0, kc, dst);
}
AVX512 static void pack_w_f16_avx512(const void *w, size_t row_bytes, int rows, int64_t k0, int kc, float *dst) {
    pack_w_avx512(TL_F16, w, row_bytes, rows, k0, kc, dst);
}
AVX512 static void pack_w_bf16_avx512(const void *w, size_t row_bytes, int rows, int64_t k0, int kc, float *dst) {
    pack_w_avx512(TL_BF16, w, row_bytes, rows, k0, kc, dst);
}

/* 16 columns of 12 rows of x at a time, transposed as the weights are (4 rows of zeros) */
AVX512 static void pack_x_avx512(const float *x, int64_t k, int cols, int64_t k0, int kc, float *dst) {
    for (int kk = 0; kk < kc; kk += 16) {
        const int n = kc - kk < 16 ? kc - kk : 16;
        __m512 r[16];
        for (int c = 0; c < 16; c++) r[c] = c < cols ? row16(TL_F32, x + (size_t)c * (size_t)k, k0 + kk, n) : _mm512_setzero_ps();
        transpose16(r);
        for (int j = 0; j < n; j++) _mm512_mask_storeu_ps(dst + (size_t)(kk + j) * NR16, (__mmask16)((1u << NR16) - 1), r[j]);
    }
}

AVX512 static void kernel_avx512(const float *wp, const float *xp, int kc, float *y, size_t ldy, int rows, int cols, bool add,
                                 const void *const *pf, int npf) {
    __m512 c0[NR16], c1[NR16];
#pragma GCC unroll 12
    for (int c = 0; c < NR16; c++) c0[c] = c1[c] = _mm512_setzero_ps();
    const int step = npf ? (kc / npf > 0 ? kc / npf : 1) : kc; /* columns between prefetches */
    int f = 0;
    for (int kk = 0; kk < kc;) {
        if (f < npf) _mm_prefetch(pf[f++], _MM_HINT_T1);
        for (const int end = kk + step < kc ? kk + step : kc; kk < end; kk++, wp += MR16, xp += NR16) {
            const __m512 a0 = _mm512_load_ps(wp), a1 = _mm512_load_ps(wp + 16);
#pragma GCC unroll 12
            for (int c = 0; c < NR16; c++) {
                const __m512 b = _mm512_set1_ps(xp[c]);
                c0[c] = _mm512_fmadd_ps(a0, b, c0[c]);
                c1[c] = _mm512_fmadd_ps(a1, b, c1[c]);
            }
        }
    }
    for (; f < npf; f++) _mm_prefetch(pf[f], _MM_HINT_T1);
    const __mmask16 m0 = rows >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << rows) - 1);
    const __mmask16 m1 = rows >= 32 ? (__mmask16)0xffff : rows > 16 ? (__mmask16)((1u << (rows - 16)) - 1) : 0;
    /* constant indices only (unrolled, each column tested): an accumulator indexed at run time
     * would make the compiler keep them all in memory, stored every column */
#pragma GCC unroll 12
    for (int c = 0; c < NR16; c++) {
        if (c >= cols) break;
        float *yc = y + (size_t)c * ldy;
        if (add) {
            c0[c] = _mm512_add_ps(c0[c], _mm512_maskz_loadu_ps(m0, yc));
            c1[c] = _mm512_add_ps(c1[c], _mm512_maskz_loadu_ps(m1, yc + 16));
        }
        _mm512_mask_storeu_ps(yc, m0, c0[c]);
        _mm512_mask_storeu_ps(yc + 16, m1, c1[c]);
    }
}

bool tl_gemm_kernels_avx512(tl_dtype t, tl_gemm_kernels *out) {
    tl_gemm_pack_w_fn pack = t == TL_F32    ? pack_w_f32_avx512
                             : t == TL_F16  ? pack_w_f16_avx512
                             : t == TL_BF16 ? pack_w_bf16_avx512
                                            : NULL;
    if (!pack) return false;
    *out = (tl_gemm_kernels){pack, pack_x_avx512, kernel_avx512, MR16, NR16, 512};
    return true;
}

/* ---------------------------------------------------------------- AVX2 */

#define MR8 16
#define NR8 6

/* elements [e, e + n) of a row (n <= 8, the rest zeros) as floats */
AVX2 static INLINE __m256 row8(tl_dtype t, const void *row, int64_t e, int n) {
    if (n < 8) { /* the block's last columns: through a zeroed buffer */
        float tmp[8] = {0};
        for (int i = 0; i < n; i++) {
            if (t == TL_F32) {
                tmp[i] = ((const float *)row)[e + i];
            } else {
                const uint16_t h = ((const uint16_t *)row)[e + i];
                tmp[i] = t == TL_F16 ? _cvtsh_ss(h) : tl_bf16_to_f32(h);
            }
        }
        return _mm256_loadu_ps(tmp);
    }
    switch (t) {
    case TL_F16: return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)row + e)));
    case TL_BF16:
        return _mm256_castsi256_ps(
            _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)row + e))), 16));
    default: return _mm256_loadu_ps((const float *)row + e);
    }
}

/* r[i] = row i of an 8x8 block -> r[j] = column j */
AVX2 static INLINE void transpose8(__m256 r[8]) {
    __m256 t[8];
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 2; i++) {
        const __m256d a = _mm256_castps_pd(t[4 * i]), b = _mm256_castps_pd(t[4 * i + 1]);
        const __m256d c = _mm256_castps_pd(t[4 * i + 2]), d = _mm256_castps_pd(t[4 * i + 3]);
        r[4 * i] = _mm256_castpd_ps(_mm256_unpacklo_pd(a, c));
        r[4 * i + 1] = _mm256_castpd_ps(_mm256_unpackhi_pd(a, c));
        r[4 * i + 2] = _mm256_castpd_ps(_mm256_unpacklo_pd(b, d));
        r[4 * i + 3] = _mm256_castpd_ps(_mm256_unpackhi_pd(b, d));
    }
    /* r[4i + j], 128-bit half H: column 4H + j of rows 4i..4i+3 */
    for (int j = 0; j < 4; j++) {
        t[j] = _mm256_permute2f128_ps(r[j], r[4 + j], 0x20);
        t[4 + j] = _mm256_permute2f128_ps(r[j], r[4 + j], 0x31);
    }
    for (int j = 0; j < 8; j++) r[j] = t[j];
}

AVX2 static INLINE void pack_w_avx2(tl_dtype t, const void *w, size_t row_bytes, int rows, int64_t k0, int kc, float *dst) {
    for (int h = 0; h < MR8 / 8; h++) {
        const int hr = rows - 8 * h;
        const uint8_t *w8 = (const uint8_t *)w + (size_t)8 * h * row_bytes;
        int kk = 0;
        __m256 r[8];
        if (hr >= 8) /* whole blocks of 8 x 8, without a test a row */
            for (; kk + 8 <= kc; kk += 8) {
#pragma GCC unroll 8
                for (int i = 0; i < 8; i++) r[i] = row8(t, w8 + (size_t)i * row_bytes, k0 + kk, 8);
                transpose8(r);
#pragma GCC unroll 8
                for (int j = 0; j < 8; j++) _mm256_store_ps(dst + (size_t)(kk + j) * MR8 + 8 * h, r[j]);
            }
        for (; kk < kc; kk += 8) { /* the last columns, or a partial panel */
            const int n = kc - kk < 8 ? kc - kk : 8;
            for (int i = 0; i < 8; i++) r[i] = i < hr ? row8(t, w8 + (size_t)i * row_bytes, k0 + kk, n) : _mm256_setzero_ps();
            transpose8(r);
            for (int j = 0; j < n; j++) _mm256_store_ps(dst + (size_t)(kk + j) * MR8 + 8 * h, r[j]);
        }
    }
}

AVX2 static void pack_w_f32_avx2(const void *w, size_t row_bytes, int rows, int64_t k0, int kc, float *dst) {
    pack_w_avx2(TL_F32, w, row_bytes, rows, k0, kc, dst);
}
AVX2 static void pack_w_f16_avx2(const void *w, size_t row_bytes, int rows, int64_t k0, int kc, float *dst) {
    pack_w_avx2(TL_F16, w, row_bytes, rows, k0, kc, dst);
}
AVX2 static void pack_w_bf16_avx2(const void *w, size_t row_bytes, int rows, int64_t k0, int kc, float *dst) {
    pack_w_avx2(TL_BF16, w, row_bytes, rows, k0, kc, dst);
}

/* 8 columns of 6 rows of x at a time, transposed as the weights are (2 rows of zeros) */
AVX2 static void pack_x_avx2(const float *x, int64_t k, int cols, int64_t k0, int kc, float *dst) {
    const __m256i six = _mm256_setr_epi32(-1, -1, -1, -1, -1, -1, 0, 0);
    for (int kk = 0; kk < kc; kk += 8) {
        const int n = kc - kk < 8 ? kc - kk : 8;
        __m256 r[8];
        for (int c = 0; c < 8; c++) r[c] = c < cols ? row8(TL_F32, x + (size_t)c * (size_t)k, k0 + kk, n) : _mm256_setzero_ps();
        transpose8(r);
        for (int j = 0; j < n; j++) _mm256_maskstore_ps(dst + (size_t)(kk + j) * NR8, six, r[j]);
    }
}

AVX2 static void kernel_avx2(const float *wp, const float *xp, int kc, float *y, size_t ldy, int rows, int cols, bool add,
                             const void *const *pf, int npf) {
    __m256 c0[NR8], c1[NR8];
#pragma GCC unroll 6
    for (int c = 0; c < NR8; c++) c0[c] = c1[c] = _mm256_setzero_ps();
    const int step = npf ? (kc / npf > 0 ? kc / npf : 1) : kc; /* columns between prefetches */
    int f = 0;
    for (int kk = 0; kk < kc;) {
        if (f < npf) _mm_prefetch(pf[f++], _MM_HINT_T1);
        for (const int end = kk + step < kc ? kk + step : kc; kk < end; kk++, wp += MR8, xp += NR8) {
            const __m256 a0 = _mm256_load_ps(wp), a1 = _mm256_load_ps(wp + 8);
#pragma GCC unroll 6
            for (int c = 0; c < NR8; c++) {
                const __m256 b = _mm256_broadcast_ss(xp + c);
                c0[c] = _mm256_fmadd_ps(a0, b, c0[c]);
                c1[c] = _mm256_fmadd_ps(a1, b, c1[c]);
            }
        }
    }
    for (; f < npf; f++) _mm_prefetch(pf[f], _MM_HINT_T1);
    /* constant indices only, as in kernel_avx512 */
#pragma GCC unroll 6
    for (int c = 0; c < NR8; c++) {
        if (c >= cols) break;
        float *yc = y + (size_t)c * ldy;
        if (rows == MR8) {
            if (add) {
                c0[c] = _mm256_add_ps(c0[c], _mm256_loadu_ps(yc));
                c1[c] = _mm256_add_ps(c1[c], _mm256_loadu_ps(yc + 8));
            }
            _mm256_storeu_ps(yc, c0[c]);
            _mm256_storeu_ps(yc + 8, c1[c]);
        } else { /* a partial panel: through a buffer */
            float tmp[MR8];
            _mm256_storeu_ps(tmp, c0[c]);
            _mm256_storeu_ps(tmp + 8, c1[c]);
            for (int r = 0; r < rows; r++) yc[r] = add ? yc[r] + tmp[r] : tmp[r];
        }
    }
}

bool tl_gemm_kernels_avx2(tl_dtype t, tl_gemm_kernels *out) {
    tl_gemm_pack_w_fn pack = t == TL_F32 ? pack_w_f32_avx2 : t == TL_F16 ? pack_w_f16_avx2 : t == TL_BF16 ? pack_w_bf16_avx2 : NULL;
    if (!pack) return false;
    *out = (tl_gemm_kernels){pack, pack_x_avx2, kernel_avx2, MR8, NR8, 256};
    return true;
}
#endif

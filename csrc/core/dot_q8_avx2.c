/* AVX2 products for quantized activations (dot_q8.h), for CPUs without AVX-512 VNNI:
 * activation quantizers; decode kernels and packs on interleaved rows (the copy made at load,
 * tl_q8_interleave: the same 16-row groups as the AVX-512 level's, each 64-byte row of words
 * read as two 32-byte halves of 8 rows); a GEMM of 16 rows x 2-4 activation rows on the packs;
 * and, for rows without a copy, decode kernels that read each row's blocks in place and the
 * portable repack. Their integer sums are vpdpbusd's, made of vpmaddubsw (unsigned code x
 * signed activation, adjacent pairs added into int16, saturating) and vpmaddwd (int16 pairs
 * added into int32). *
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

#define AVX2 __attribute__((target("avx2,fma,f16c")))
#define INLINE inline __attribute__((always_inline))
#define UNROLL _Pragma("GCC unroll 8")
/* v kept as it is here: without it GCC reassociates a run's int16 sums into a tree whose
 * temporaries (vpmaddubsw results) spill to the stack */
#define KEEP(v) __asm__("" : "+x"(v))

/* ---------------------------------------------------------------- activations
 * Bit for bit dot_q8.c's quantize_act (through quants.c's Q8_0 and Q8_K quantizers), as
 * dot_q8_x86.c's AVX-512 ones: the same float products and roundings, the scale in scalar code. */

/* the largest of the 8 lanes */
AVX2 static INLINE float max8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps(m, m, 1)));
}

/* the sum of the 8 lanes */
AVX2 static INLINE int32_t sum8_epi32(__m256i v) {
    __m128i h = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4E));
    return _mm_cvtsi128_si32(_mm_add_epi32(h, _mm_shuffle_epi32(h, 0xB1)));
}

/* 32 int32 in [-128, 127] to 32 bytes at q, in order */
AVX2 static INLINE void store_bytes32(int8_t *q, const __m256i v[4]) {
    const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]), _mm256_packs_epi32(v[2], v[3]));
    _mm256_storeu_si256((__m256i *)q, _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
}

/* C's roundf (half away from zero) of t clamped to [-127, 127]: truncate, then step away from
 * zero where the dropped fraction (exact) is at least one half */
AVX2 static INLINE __m256i round_away8(__m256 t) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    t = _mm256_min_ps(_mm256_max_ps(t, _mm256_set1_ps(-127.0f)), _mm256_set1_ps(127.0f));
    const __m256 r = _mm256_round_ps(t, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m256 up = _mm256_cmp_ps(_mm256_andnot_ps(sign, _mm256_sub_ps(t, r)), _mm256_set1_ps(0.5f), _CMP_GE_OQ);
    const __m256 one = _mm256_or_ps(_mm256_and_ps(t, sign), _mm256_set1_ps(1.0f));
    return _mm256_cvttps_epi32(_mm256_add_ps(r, _mm256_and_ps(up, one)));
}

/* Q8_0: d = amax / 127 rounded to fp16, q = roundf(x / d) */
AVX2 static void quantize_q8_0_avx2(const float *x, int64_t k, void *dst) {
    int8_t *q = dst;
    float *ds = (float *)(q + k);
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t i = 0; i < k; i += 32) {
        __m256 v[4], amax = _mm256_setzero_ps();
        for (int j = 0; j < 4; j++) {
            v[j] = _mm256_loadu_ps(x + i + 8 * j);
            amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v[j]));
        }
        const float d = max8(amax) / 127.0f;
        const __m256 id = _mm256_set1_ps(d != 0.0f ? 1.0f / d : 0.0f);
        __m256i qi[4];
        for (int j = 0; j < 4; j++) qi[j] = round_away8(_mm256_mul_ps(v[j], id));
        store_bytes32(q + i, qi);
        const float dx = tl_f16_to_f32(tl_f32_to_f16(d));
        ds[i / 16] = dx;
        ds[i / 16 + 1] = dx * (float)sum8_epi32(_mm256_add_epi32(_mm256_add_epi32(qi[0], qi[1]), _mm256_add_epi32(qi[2], qi[3])));
    }
}

/* Q8_K: the first element of largest magnitude m maps to -127: q = rint(x · -127/m) (at most
 * 127), d = 1 / (-127/m); sums over sub-blocks of g */
AVX2 static INLINE void quantize_q8_K_avx2(const float *x, int64_t k, void *dst, const int g) {
    int8_t *q = dst;
    float *ds = (float *)(q + k);
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t i = 0; i < k; i += QK_K, x += QK_K) {
        __m256 amax = _mm256_setzero_ps();
        for (int j = 0; j < 32; j++) amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + 8 * j)));
        const __m256 top = _mm256_set1_ps(max8(amax));
        int first = 0;
        for (int j = 31; j >= 0; j--) {
            const int at = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + 8 * j)), top, _CMP_EQ_OQ));
            if (at) first = 8 * j + __builtin_ctz((unsigned)at);
        }
        const float max = x[first], iscale = max != 0.0f ? -127.0f / max : 0.0f;
        if (!isfinite(iscale) || iscale == 0.0f) {
            memset(q + i, 0, QK_K);
            for (int s = 0; s < QK_K / g; s++) ds[2 * (i / g + s)] = ds[2 * (i / g + s) + 1] = 0.0f;
            continue;
        }
        const float d = 1.0f / iscale;
        for (int j = 0; j < QK_K; j += 32) {
            __m256i v[4];
            for (int t = 0; t < 4; t++) {
                v[t] = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + j + 8 * t), _mm256_set1_ps(iscale)));
                v[t] = _mm256_max_epi32(_mm256_min_epi32(v[t], _mm256_set1_epi32(127)), _mm256_set1_epi32(-128));
            }
            store_bytes32(q + i + j, v);
            for (int s = 0; s < 32 / g; s++) { /* g = 16: vectors 0, 1 and 2, 3; g = 32: all four */
                __m256i sum = _mm256_add_epi32(v[2 * s], v[2 * s + 1]);
                if (g == 32) sum = _mm256_add_epi32(sum, _mm256_add_epi32(v[2], v[3]));
                const int64_t sb = (i + j) / g + s;
                ds[2 * sb] = d;
                ds[2 * sb + 1] = d * (float)sum8_epi32(sum);
            }
        }
    }
}

AVX2 static void quantize_q8_K_g32_avx2(const float *x, int64_t k, void *dst) { quantize_q8_K_avx2(x, k, dst, 32); }
AVX2 static void quantize_q8_K_g16_avx2(const float *x, int64_t k, void *dst) { quantize_q8_K_avx2(x, k, dst, 16); }

/* lane r: the sum of 4 codes of row r times the same 4 activation bytes x (vpdpbusd) */
AVX2 static INLINE __m256i dot4(__m256i codes, __m256i x, const bool nibbles) {
    const __m256i ones = _mm256_set1_epi16(1);
    if (!nibbles) return _mm256_madd_epi16(_mm256_maddubs_epi16(codes, x), ones);
    const __m256i m4 = _mm256_set1_epi8(15);
    const __m256i lo = _mm256_and_si256(codes, m4), hi = _mm256_and_si256(_mm256_srli_epi16(codes, 4), m4);
    return _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(lo, x), ones),
                            _mm256_madd_epi16(_mm256_maddubs_epi16(hi, x), _mm256_set1_epi16(16)));
}


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

/* ---------------------------------------------------------------- interleaved rows
 * A group of 16 rows as tl_q8_interleave lays them out (dot_q8.h), the same copy as the AVX-512
 * level's: each 64-byte row of a unit holds 4-byte word w of rows 0..15, so its 32-byte halves
 * are rows 0..7 and 8..15, one row per 32-bit lane. Every register is a plain load from one
 * stream (no gathers, no lane sums), and each activation word, broadcast once, serves both halves.
 * vpmaddubsw's int16 pair sums of a run of words are added in int16 before vpmaddwd widens them:
 * runs of 8 words of 4-bit codes, 4 of 5-bit, 2 of 6-bit (a pair at most 2·(2^b - 1)·128, a run at
 * most 30720, 31744, 32256 < 32768); Q8_0's codes as two nibbles, 8 words a run each. The sums are
 * exact, and the float operations per sub-block those of gemm_scalar, in its order. */

/* the 4 bytes at q in every 32-bit lane */
AVX2 static INLINE __m256i bcast4(const uint8_t *q) {
    int32_t v;
    memcpy(&v, q, 4);
    return _mm256_set1_epi32(v);
}

/* the fp16 in the low / high half of each 32-bit lane, as float */
AVX2 static INLINE __m256 half_lo8(__m256i v) {
    v = _mm256_and_si256(v, _mm256_set1_epi32(0xFFFF));
    return _mm256_cvtph_ps(_mm_packus_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1)));
}
AVX2 static INLINE __m256 half_hi8(__m256i v) {
    v = _mm256_srli_epi32(v, 16);
    return _mm256_cvtph_ps(_mm_packus_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1)));
}

/* -v with the sign bit flipped, as C's unary minus */
AVX2 static INLINE __m256 neg8(__m256 v) { return _mm256_xor_ps(v, _mm256_set1_ps(-0.0f)); }

/* the integer sum of one sub-block for 8 rows: nw registers of 4 codes a lane against the
 * activation words at q (broadcast), in runs of `run` words summed in int16; Q8_0's 8-bit codes
 * (nibbles) as low and high nibbles, the high sums weighed by 16 */
AVX2 static INLINE __m256i sum8(const __m256i *cd, const int nw, const int run, const bool nibbles, const uint8_t *q) {
    const __m256i ones = _mm256_set1_epi16(1), m4 = _mm256_set1_epi8(15);
    __m256i s32 = _mm256_setzero_si256();
    UNROLL for (int j0 = 0; j0 < nw; j0 += run) {
        __m256i lo = _mm256_setzero_si256(), hi = _mm256_setzero_si256();
        UNROLL for (int j = j0; j < j0 + run; j++) {
            const __m256i xv = bcast4(q + 4 * j);
            if (nibbles) {
                lo = _mm256_add_epi16(lo, _mm256_maddubs_epi16(_mm256_and_si256(cd[j], m4), xv));
                hi = _mm256_add_epi16(hi, _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(cd[j], 4), m4), xv));
                KEEP(hi);
            } else {
                lo = _mm256_add_epi16(lo, _mm256_maddubs_epi16(cd[j], xv));
            }
            KEEP(lo);
        }
        s32 = _mm256_add_epi32(s32, _mm256_madd_epi16(lo, ones));
        if (nibbles) s32 = _mm256_add_epi32(s32, _mm256_madd_epi16(hi, _mm256_set1_epi16(16)));
    }
    return s32;
}

/* Where one sub-block of a group goes: into the accumulators of n (1..TL_Q8_GEMV_MAX) activation
 * rows (decode), or, n = 0, into a pack (codes[k/4][16][4], a and b [k/g][16]: dot_q8.h) */
typedef struct {
    __m256 acc[2][TL_Q8_GEMV_MAX];
    const uint8_t *x;
    size_t xs;
    int64_t k;
    uint8_t *codes;
    float *a, *b;
} sink8;

/* sub-block s (elements e = s·g..) of half h: its codes cd[0..nw), a and b */
AVX2 static INLINE void emit8(sink8 *o, const int n, int h, const __m256i *cd, const int nw, const int run,
                              const bool nibbles, int64_t s, __m256 a, __m256 b) {
    const int64_t e = s * 4 * nw;
    if (n == 0) {
        UNROLL for (int j = 0; j < nw; j++) _mm256_storeu_si256((__m256i *)(o->codes + (e / 4 + j) * 64 + 32 * h), cd[j]);
        _mm256_storeu_ps(o->a + 16 * s + 8 * h, a);
        _mm256_storeu_ps(o->b + 16 * s + 8 * h, b);
        return;
    }
    UNROLL for (int c = 0; c < n; c++) {
        const uint8_t *q = o->x + (size_t)c * o->xs;
        const float *ds = (const float *)(q + o->k) + 2 * s;
        const __m256i p = sum8(cd, nw, run, nibbles, q + e);
        o->acc[h][c] = _mm256_fmadd_ps(_mm256_mul_ps(a, _mm256_set1_ps(ds[0])), _mm256_cvtepi32_ps(p), o->acc[h][c]);
        o->acc[h][c] = _mm256_fmadd_ps(b, _mm256_set1_ps(ds[1]), o->acc[h][c]);
    }
}

/* Every line of a group is asked for AHEAD bytes before it is read (the decode stream, as the
 * AVX-512 kernels do it) */
#define AHEAD 4096
AVX2 static INLINE void prefetch_lines8(const uint8_t *p, int first, int count) {
    for (int l = first; l < first + count; l++) _mm_prefetch((const char *)p + AHEAD + 64 * l, _MM_HINT_T0);
}

/* 32 bytes: word w of rows 8h..8h+7 of the unit at p */
AVX2 static INLINE __m256i word8(const uint8_t *p, int w, int h) { return _mm256_loadu_si256((const __m256i *)(p + 64 * w + 32 * h)); }

/* The legacy formats (units as dot_q8.h says: Q4_1/Q5_1's d | m word first, Q5_0/Q5_1's qh word,
 * then 4 qs words (Q8_0: 8); Q4_0/Q5_0/Q8_0's fp16 d of the 16 rows after the units, 32 bytes a
 * block). Codes of elements 4j.. in cd[j]. */
enum legacy8 { L4_0, L4_1, L5_0, L5_1, L8_0 };
static const int legacy8_words[] = {4, 5, 5, 6, 8};
static const tl_dtype legacy8_dtype[] = {TL_Q4_0, TL_Q4_1, TL_Q5_0, TL_Q5_1, TL_Q8_0};

AVX2 static INLINE void legacy8_block(const uint8_t *w, int64_t i, int64_t nb, int h, const enum legacy8 f, __m256i cd[8],
                                      __m256 *a, __m256 *b) {
    const size_t unit = 64 * (size_t)legacy8_words[f];
    const uint8_t *p = w + (size_t)i * unit;
    if (f == L8_0) {
        UNROLL for (int j = 0; j < 8; j++) cd[j] = _mm256_xor_si256(word8(p, j, h), _mm256_set1_epi8(-128));
    } else {
        const int qs = f == L4_0 ? 0 : f == L5_1 ? 2 : 1;
        const __m256i m4 = _mm256_set1_epi8(15);
        UNROLL for (int t = 0; t < 4; t++) { /* low nibbles: elements 4t.., high nibbles: 16 + 4t.. */
            const __m256i v = word8(p, qs + t, h);
            cd[t] = _mm256_and_si256(v, m4), cd[4 + t] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
        }
        if (f == L5_0 || f == L5_1) { /* + 16 where bit j of the row's qh is set, for element j */
            const __m256i qh = word8(p, qs - 1, h), sixteen = _mm256_set1_epi8(16);
            UNROLL for (int q = 0; q < 4; q++) { /* qh byte q: the bits of elements 8q.. (cd[2q], cd[2q + 1]) */
                const __m256i o = _mm256_set1_epi8((char)q);
                const __m256i idx = _mm256_add_epi8(_mm256_setr_epi32(0, 0x04040404, 0x08080808, 0x0C0C0C0C, 0, 0x04040404,
                                                                      0x08080808, 0x0C0C0C0C), o);
                const __m256i bq = _mm256_shuffle_epi8(qh, idx);
                UNROLL for (int hh = 0; hh < 2; hh++) {
                    const __m256i bit = _mm256_set1_epi32(hh ? (int)0x80402010 : 0x08040201);
                    const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(bq, bit), bit);
                    cd[2 * q + hh] = _mm256_or_si256(cd[2 * q + hh], _mm256_and_si256(set, sixteen));
                }
            }
        }
    }
    if (f == L4_1 || f == L5_1) {
        const __m256i dm = word8(p, 0, h);
        *a = half_lo8(dm), *b = half_hi8(dm);
    } else {
        *a = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + (size_t)nb * unit + 32 * (size_t)i + 16 * h)));
        *b = _mm256_mul_ps(*a, _mm256_set1_ps(f == L8_0 ? -128.0f : f == L5_0 ? -16.0f : -8.0f));
    }
}

AVX2 static INLINE void group_legacy(const uint8_t *w, int64_t k, sink8 *o, const int n, const enum legacy8 f) {
    const size_t span = 16 * tl_dtype_row_size(legacy8_dtype[f], 32);
    const int64_t nb = k / 32;
    for (int64_t i = 0; i < nb; i++) {
        /* the group's bytes in order, a block's share at a time, wherever they lie */
        for (size_t l = ((size_t)i * span + 63) / 64 * 64; l < (size_t)(i + 1) * span; l += 64)
            _mm_prefetch((const char *)w + AHEAD + l, _MM_HINT_T0);
        UNROLL for (int h = 0; h < 2; h++) {
            __m256i cd[8];
            __m256 a, b;
            legacy8_block(w, i, nb, h, f, cd, &a, &b);
            emit8(o, n, h, cd, 8, f == L5_0 || f == L5_1 ? 4 : 8, f == L8_0, i, a, b);
        }
    }
}

/* byte j of every 32-bit lane of v as int32 */
AVX2 static INLINE __m256i byte8(__m256i v, int j) {
    return j == 3 ? _mm256_srli_epi32(v, 24) : _mm256_and_si256(_mm256_srli_epi32(v, 8 * j), _mm256_set1_epi32(0xFF));
}

/* Q4_K and Q5_K: unit words 0..3 the header (d | dmin, the 12 scale bytes), Q5_K's words 4..11
 * its qh bytes, then words qs + 8u + j the qs bytes 32u + 4j.. (sub-block 2u in the low nibbles,
 * 2u + 1 in the high ones); the scales taken apart bytewise as in dot_q8_x86.c's gemv_k4_16 */
AVX2 static INLINE void group_k4(const uint8_t *w, int64_t k, sink8 *o, const int n, const bool q5) {
    const size_t unit = (q5 ? 44 : 36) * 64, qs = q5 ? 12 : 4;
    const __m256i m6 = _mm256_set1_epi8(63), m4 = _mm256_set1_epi8(15), top = _mm256_set1_epi8(0x30);
    for (int64_t i = 0; i < k / QK_K; i++) {
        const uint8_t *p = w + (size_t)i * unit;
        __m256 d[2], dmin[2];
        __m256i sc[2][2], m[2][2]; /* [h][0]: sub-blocks 0..3 in bytes 0..3, [h][1]: 4..7 */
        for (int h = 0; h < 2; h++) {
            const __m256i h0 = word8(p, 0, h), h1 = word8(p, 1, h), h2 = word8(p, 2, h), h3 = word8(p, 3, h);
            d[h] = half_lo8(h0), dmin[h] = half_hi8(h0);
            sc[h][0] = _mm256_and_si256(h1, m6), m[h][0] = _mm256_and_si256(h2, m6);
            sc[h][1] = _mm256_or_si256(_mm256_and_si256(h3, m4), _mm256_and_si256(_mm256_srli_epi32(h1, 2), top));
            m[h][1] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(h3, 4), m4), _mm256_and_si256(_mm256_srli_epi32(h2, 2), top));
        }
        for (int u = 0; u < 4; u++) {
            prefetch_lines8(p, (int)unit / 256 * u, (int)unit / 256);
            UNROLL for (int h = 0; h < 2; h++) {
                __m256i v[8];
                UNROLL for (int j = 0; j < 8; j++) v[j] = word8(p, (int)qs + 8 * u + j, h);
                UNROLL for (int half = 0; half < 2; half++) {
                    const int sb = 2 * u + half;
                    __m256i cd[8];
                    UNROLL for (int j = 0; j < 8; j++) {
                        cd[j] = _mm256_and_si256(half ? _mm256_srli_epi16(v[j], 4) : v[j], m4);
                        if (q5) { /* bit sb of each qh byte, as 16 */
                            const __m256i hb = _mm256_and_si256(_mm256_srli_epi16(word8(p, 4 + j, h), sb), _mm256_set1_epi8(1));
                            cd[j] = _mm256_or_si256(cd[j], _mm256_slli_epi16(hb, 4));
                        }
                    }
                    const __m256 a = _mm256_mul_ps(d[h], _mm256_cvtepi32_ps(byte8(sc[h][sb / 4], sb % 4)));
                    const __m256 b = neg8(_mm256_mul_ps(dmin[h], _mm256_cvtepi32_ps(byte8(m[h][sb / 4], sb % 4))));
                    emit8(o, n, h, cd, 8, q5 ? 4 : 8, false, 8 * i + sb, a, b);
                }
            }
        }
    }
}

/* Q6_K: unit words 0..31 the ql bytes, 32..47 qh, 48..51 the int8 scales; d after the units.
 * Element l + 32p of half hh (l < 32): nibble p / 2 of ql[64hh + 32(p % 2) + l], bits 2p, 2p + 1
 * of qh[32hh + l]; sub-blocks of 16 */
AVX2 static INLINE void group_q6_K(const uint8_t *w, int64_t k, sink8 *o, const int n) {
    const size_t unit = 52 * 64;
    const int64_t nb = k / QK_K;
    const __m256i m4 = _mm256_set1_epi8(15), m2 = _mm256_set1_epi8(0x30);
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *p = w + (size_t)i * unit;
        __m256 d[2];
        for (int h = 0; h < 2; h++)
            d[h] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + (size_t)nb * unit + 32 * (size_t)i + 16 * h)));
        for (int hh = 0; hh < 2; hh++)
            for (int pp = 0; pp < 4; pp++) {
                prefetch_lines8(p, 52 * (8 * hh + 2 * pp) / 16, 52 * (8 * hh + 2 * pp + 2) / 16 - 52 * (8 * hh + 2 * pp) / 16);
                UNROLL for (int h = 0; h < 2; h++) UNROLL for (int l16 = 0; l16 < 2; l16++) {
                    const int sb = 8 * hh + 2 * pp + l16;
                    __m256i cd[4];
                    UNROLL for (int j = 0; j < 4; j++) {
                        const __m256i ql = word8(p, 16 * hh + 8 * (pp % 2) + 4 * l16 + j, h);
                        const __m256i qh = word8(p, 32 + 8 * hh + 4 * l16 + j, h);
                        const __m256i lo = _mm256_and_si256(pp < 2 ? ql : _mm256_srli_epi16(ql, 4), m4);
                        const __m256i q2 = pp == 0 ? _mm256_slli_epi16(qh, 4) : pp == 1 ? _mm256_slli_epi16(qh, 2)
                                         : pp == 2 ? qh : _mm256_srli_epi16(qh, 2);
                        cd[j] = _mm256_or_si256(lo, _mm256_and_si256(q2, m2));
                    }
                    const __m256i scw = word8(p, 48 + sb / 4, h);
                    const __m256i sc = _mm256_srai_epi32(_mm256_slli_epi32(scw, 24 - 8 * (sb % 4)), 24); /* int8 */
                    const __m256 a = _mm256_mul_ps(d[h], _mm256_cvtepi32_ps(sc));
                    emit8(o, n, h, cd, 4, 2, false, 16 * i + sb, a, _mm256_mul_ps(a, _mm256_set1_ps(-32.0f)));
                }
            }
    }
}

/* the decode entry of a format: n made a constant for each count of activation rows */
#define GEMV16_AVX2(name, group)                                                                                        \
    AVX2 static void gemv16_##name##_avx2(const void *w, size_t row_bytes, int rows, int64_t k, const void *xq,        \
                                          size_t xs, int n, float *y, size_t ldy) {                                    \
        (void)row_bytes, (void)rows;                                                                                    \
        sink8 o = {.x = xq, .xs = xs, .k = k};                                                                          \
        for (int c = 0; c < TL_Q8_GEMV_MAX; c++) o.acc[0][c] = o.acc[1][c] = _mm256_setzero_ps();                       \
        TL_Q8_BY_ROWS(n, group);                                                                                        \
        for (int c = 0; c < n; c++)                                                                                     \
            for (int h = 0; h < 2; h++) _mm256_storeu_ps(y + (size_t)c * ldy + 8 * h, o.acc[h][c]);                     \
    }                                                                                                                   \
    AVX2 static void pack16_##name##_avx2(const void *w, size_t row_bytes, int rows, int64_t k, void *pack) {          \
        (void)row_bytes, (void)rows;                                                                                    \
        sink8 o = {.k = k, .codes = pack};                                                                              \
        o.a = (float *)(o.codes + TL_Q8_LANES * k);                                                                     \
        o.b = o.a + TL_Q8_LANES * (k / (G_##name));                                                                      \
        group(0);                                                                                                       \
    }
#define G_q4_0 32
#define G_q4_1 32
#define G_q5_0 32
#define G_q5_1 32
#define G_q8_0 32
#define G_q4_K 32
#define G_q5_K 32
#define G_q6_K 16
#define CALL_Q4_0(n) group_legacy(w, k, &o, n, L4_0)
#define CALL_Q4_1(n) group_legacy(w, k, &o, n, L4_1)
#define CALL_Q5_0(n) group_legacy(w, k, &o, n, L5_0)
#define CALL_Q5_1(n) group_legacy(w, k, &o, n, L5_1)
#define CALL_Q8_0(n) group_legacy(w, k, &o, n, L8_0)
#define CALL_Q4_K(n) group_k4(w, k, &o, n, false)
#define CALL_Q5_K(n) group_k4(w, k, &o, n, true)
#define CALL_Q6_K(n) group_q6_K(w, k, &o, n)
GEMV16_AVX2(q4_0, CALL_Q4_0)
GEMV16_AVX2(q4_1, CALL_Q4_1)
GEMV16_AVX2(q5_0, CALL_Q5_0)
GEMV16_AVX2(q5_1, CALL_Q5_1)
GEMV16_AVX2(q8_0, CALL_Q8_0)
GEMV16_AVX2(q4_K, CALL_Q4_K)
GEMV16_AVX2(q5_K, CALL_Q5_K)
GEMV16_AVX2(q6_K, CALL_Q6_K)
#undef GEMV16_AVX2
#undef G_q4_0
#undef G_q4_1
#undef G_q5_0
#undef G_q5_1
#undef G_q8_0
#undef G_q4_K
#undef G_q5_K
#undef G_q6_K
#undef CALL_Q4_0
#undef CALL_Q4_1
#undef CALL_Q5_0
#undef CALL_Q5_1
#undef CALL_Q8_0
#undef CALL_Q4_K
#undef CALL_Q5_K
#undef CALL_Q6_K

/* ---------------------------------------------------------------- GEMM (prefill)
 * A tile of all 16 rows of a pack (codes[k/4][16][4]: the halves of a 64-byte word row are rows
 * 0..7 and 8..15) times nc activation rows: per word, two loads of codes and nc broadcasts feed
 * 2·nc vpmaddubsw, their int16 sums added in runs as in sum8, so that vpmaddwd and the float
 * operations come once a run and once a sub-block; the float operations are gemm_scalar's. */
AVX2 static INLINE void gemm16_tile(const uint8_t *codes, const float *a, const float *b, const uint8_t *xq, size_t xs,
                                    const int nc, int64_t k, const int g, const int run, const bool nibbles, float *y,
                                    size_t ldy, int rows) {
    const __m256i ones = _mm256_set1_epi16(1), m4 = _mm256_set1_epi8(15);
    __m256 acc[4][2];
    UNROLL for (int c = 0; c < nc; c++) acc[c][0] = acc[c][1] = _mm256_setzero_ps();
    for (int64_t s = 0; s < k / g; s++) {
        __m256i s32[4][2];
        UNROLL for (int c = 0; c < nc; c++) s32[c][0] = s32[c][1] = _mm256_setzero_si256();
        UNROLL for (int j0 = 0; j0 < g / 4; j0 += run) {
            __m256i lo[4][2], hi[4][2];
            UNROLL for (int c = 0; c < nc; c++) lo[c][0] = lo[c][1] = hi[c][0] = hi[c][1] = _mm256_setzero_si256();
            UNROLL for (int j = j0; j < j0 + run; j++) {
                const uint8_t *wp = codes + (s * (g / 4) + j) * 64;
                __m256i w[2], wh[2];
                UNROLL for (int h = 0; h < 2; h++) {
                    w[h] = _mm256_loadu_si256((const __m256i *)(wp + 32 * h));
                    if (nibbles) {
                        wh[h] = _mm256_and_si256(_mm256_srli_epi16(w[h], 4), m4);
                        w[h] = _mm256_and_si256(w[h], m4);
                    }
                }
                UNROLL for (int c = 0; c < nc; c++) {
                    const __m256i xv = bcast4(xq + (size_t)c * xs + s * g + 4 * j);
                    UNROLL for (int h = 0; h < 2; h++) {
                        lo[c][h] = _mm256_add_epi16(lo[c][h], _mm256_maddubs_epi16(w[h], xv));
                        KEEP(lo[c][h]);
                        if (nibbles) {
                            hi[c][h] = _mm256_add_epi16(hi[c][h], _mm256_maddubs_epi16(wh[h], xv));
                            KEEP(hi[c][h]);
                        }
                    }
                }
            }
            UNROLL for (int c = 0; c < nc; c++) UNROLL for (int h = 0; h < 2; h++) {
                s32[c][h] = _mm256_add_epi32(s32[c][h], _mm256_madd_epi16(lo[c][h], ones));
                if (nibbles) s32[c][h] = _mm256_add_epi32(s32[c][h], _mm256_madd_epi16(hi[c][h], _mm256_set1_epi16(16)));
            }
        }
        UNROLL for (int c = 0; c < nc; c++) {
            const float *ds = (const float *)(xq + (size_t)c * xs + k) + 2 * s;
            const __m256 dx = _mm256_set1_ps(ds[0]), sx = _mm256_set1_ps(ds[1]);
            UNROLL for (int h = 0; h < 2; h++) {
                const __m256 av = _mm256_loadu_ps(a + TL_Q8_LANES * s + 8 * h), bv = _mm256_loadu_ps(b + TL_Q8_LANES * s + 8 * h);
                acc[c][h] = _mm256_fmadd_ps(_mm256_mul_ps(av, dx), _mm256_cvtepi32_ps(s32[c][h]), acc[c][h]);
                acc[c][h] = _mm256_fmadd_ps(bv, sx, acc[c][h]);
            }
        }
    }
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    UNROLL for (int h = 0; h < 2; h++) {
        if (rows >= 8 * h + 8) {
            UNROLL for (int c = 0; c < nc; c++) _mm256_storeu_ps(y + (size_t)c * ldy + 8 * h, acc[c][h]);
        } else if (rows > 8 * h) {
            const __m256i keep = _mm256_cmpgt_epi32(_mm256_set1_epi32(rows - 8 * h), lane);
            UNROLL for (int c = 0; c < nc; c++) _mm256_maskstore_ps(y + (size_t)c * ldy + 8 * h, keep, acc[c][h]);
        }
    }
}

/* tiles of NC activation rows, then one at a time */
#define GEMM16_AVX2(name, G, RUN, NIBBLES, NC)                                                                          \
    AVX2 static void gemm16_##name##_avx2(const void *pack, const void *xq, size_t xs, int n, int64_t k, int g,        \
                                          float *y, size_t ldy, int rows) {                                             \
        (void)g;                                                                                                        \
        const uint8_t *codes = pack, *x = xq;                                                                           \
        const float *a = (const float *)(codes + TL_Q8_LANES * k), *b = a + TL_Q8_LANES * (k / G);                      \
        int c = 0;                                                                                                      \
        for (; c + NC <= n; c += NC) gemm16_tile(codes, a, b, x + c * xs, xs, NC, k, G, RUN, NIBBLES, y + c * ldy, ldy, rows); \
        for (; c < n; c++) gemm16_tile(codes, a, b, x + c * xs, xs, 1, k, G, RUN, NIBBLES, y + c * ldy, ldy, rows);      \
    }
/* NC as measured best (one thread, 5632x2048, 128 rows of x: 2, 3, 4 columns gave Q4_0 51 / 53 /
 * 60 GMAC/s, Q5_0 47 / 58 / 50, Q6_K 40 / 43 / 44; Q8_0's nibbles take twice the registers: 2) */
GEMM16_AVX2(q4, 32, 8, false, 4) /* Q4_0, Q4_1, Q4_K: 4-bit codes */
GEMM16_AVX2(q5, 32, 4, false, 3) /* Q5_0, Q5_1, Q5_K: 5-bit codes */
GEMM16_AVX2(q6_K, 16, 2, false, 4)
GEMM16_AVX2(q8_0, 32, 8, true, 2)
#undef GEMM16_AVX2

bool tl_q8_kernels_avx2(tl_dtype t, tl_q8_kernels *out) {
    if (!tl_q8_kernels_scalar(t, out)) return false;
    out->quantize = t == TL_Q6_K ? quantize_q8_K_g16_avx2 : t == TL_Q4_K || t == TL_Q5_K ? quantize_q8_K_g32_avx2 : quantize_q8_0_avx2;
    switch (t) {
    case TL_Q4_0: case TL_Q4_1: case TL_Q4_K: out->gemm = gemm16_q4_avx2; break;
    case TL_Q5_0: case TL_Q5_1: case TL_Q5_K: out->gemm = gemm16_q5_avx2; break;
    case TL_Q8_0: out->gemm = gemm16_q8_0_avx2; break;
    default: out->gemm = gemm16_q6_K_avx2; break;
    }
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
    switch (t) {
    case TL_Q4_0: out->gemv16 = gemv16_q4_0_avx2, out->pack16 = pack16_q4_0_avx2; break;
    case TL_Q4_1: out->gemv16 = gemv16_q4_1_avx2, out->pack16 = pack16_q4_1_avx2; break;
    case TL_Q5_0: out->gemv16 = gemv16_q5_0_avx2, out->pack16 = pack16_q5_0_avx2; break;
    case TL_Q5_1: out->gemv16 = gemv16_q5_1_avx2, out->pack16 = pack16_q5_1_avx2; break;
    case TL_Q8_0: out->gemv16 = gemv16_q8_0_avx2, out->pack16 = pack16_q8_0_avx2; break;
    case TL_Q4_K: out->gemv16 = gemv16_q4_K_avx2, out->pack16 = pack16_q4_K_avx2; break;
    case TL_Q5_K: out->gemv16 = gemv16_q5_K_avx2, out->pack16 = pack16_q5_K_avx2; break;
    default: out->gemv16 = gemv16_q6_K_avx2, out->pack16 = pack16_q6_K_avx2; break;
    }
    return true;
}
#endif

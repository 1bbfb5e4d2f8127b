#include "dot.h"

#include "cpu.h"
#include "dot_isa.h"
#include "quants.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define TL_X86 1
#define AVX2 __attribute__((target("avx2,fma,f16c")))

/* The float rows of a decode step are read once, from memory, one after the other: the float
 * kernels prefetch the weights this many bytes ahead of their loads, a 64-byte line per line
 * they read (past the row's end, the next row's: the rows lie one after the other in the
 * matrix). The hardware streamer stops at every 4 KB page, which an F16 row of 2,048 columns
 * fills; with this, a TinyLlama-shaped F16 matrix from memory reads as fast as a plain read
 * loop (benchmarks/NOTES.md, 2026-11-27, F16 generation). */
#define FLOAT_ROW_PREFETCH 4096
#ifndef ATTN_PREFETCH
#define ATTN_PREFETCH 4096
#endif
#define PREFETCH_AHEAD(p) _mm_prefetch((const char *)(p) + FLOAT_ROW_PREFETCH, _MM_HINT_T0)

AVX2 static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* 8 signed bytes -> 8 floats */
AVX2 static inline __m256 i8_to_ps(__m128i b) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)); }

AVX2 static float dot_f32_avx2(const void *w, const float *x, int64_t n) {
    const float *a = w;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        PREFETCH_AHEAD(a + i);
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(x + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(x + i + 8), acc1);
    }
    float s = hsum(_mm256_add_ps(acc0, acc1));
    for (; i < n; i++) s += a[i] * x[i];
    return s;
}

/* F16: four accumulators (an FMA's latency is 4 cycles), a 64-byte line of weights a step */
AVX2 static float dot_f16_avx2(const void *w, const float *x, int64_t n) {
    const uint16_t *a = w;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps(), acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        PREFETCH_AHEAD(a + i);
        acc0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(a + i))), _mm256_loadu_ps(x + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(a + i + 8))), _mm256_loadu_ps(x + i + 8),
                               acc1);
        acc2 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(a + i + 16))), _mm256_loadu_ps(x + i + 16),
                               acc2);
        acc3 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(a + i + 24))), _mm256_loadu_ps(x + i + 24),
                               acc3);
    }
    for (; i + 8 <= n; i += 8)
        acc0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(a + i))), _mm256_loadu_ps(x + i), acc0);
    float s = hsum(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));
    for (; i < n; i++) s += _cvtsh_ss(a[i]) * x[i];
    return s;
}

/* BF16 is the high half of an F32: widen to 32 bits and shift into place */
AVX2 static inline __m256 bf16x8_to_ps(const uint16_t *a) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)a)), 16));
}

static inline float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

AVX2 static float dot_bf16_avx2(const void *w, const float *x, int64_t n) {
    const uint16_t *a = w;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        if (i % 32 == 0) PREFETCH_AHEAD(a + i);
        acc0 = _mm256_fmadd_ps(bf16x8_to_ps(a + i), _mm256_loadu_ps(x + i), acc0);
        acc1 = _mm256_fmadd_ps(bf16x8_to_ps(a + i + 8), _mm256_loadu_ps(x + i + 8), acc1);
    }
    float s = hsum(_mm256_add_ps(acc0, acc1));
    for (; i < n; i++) s += bf16_to_f32(a[i]) * x[i];
    return s;
}

/* Attention block kernels, 8 lanes (the AVX-512 ones below are the same with 16) */
AVX2 static inline __m256 kv8_avx2(const void *row, int64_t d, bool f16) {
    return f16 ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)row + d)))
               : _mm256_loadu_ps((const float *)row + d);
}

AVX2 static void attn_scores_avx2(const float *q, const void *k, size_t stride, int nk, int hd, bool f16, float *s) {
    const size_t esz = f16 ? 2 : 4;
    for (int t = 0; t < nk; t++) {
        const uint8_t *kt = (const uint8_t *)k + (size_t)t * stride * esz;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        int d = 0;
        for (; d + 16 <= hd; d += 16) {
            a0 = _mm256_fmadd_ps(kv8_avx2(kt, d, f16), _mm256_loadu_ps(q + d), a0);
            a1 = _mm256_fmadd_ps(kv8_avx2(kt, d + 8, f16), _mm256_loadu_ps(q + d + 8), a1);
        }
        if (d < hd) a0 = _mm256_fmadd_ps(kv8_avx2(kt, d, f16), _mm256_loadu_ps(q + d), a0);
        s[t] = hsum(_mm256_add_ps(a0, a1));
    }
}

AVX2 static void attn_values_avx2(float *out, const float *p, const void *v, size_t stride, int nk, int hd, bool f16) {
    const size_t esz = f16 ? 2 : 4;
    for (int d = 0; d < hd; d += 8) {
        __m256 acc = _mm256_loadu_ps(out + d);
        for (int t = 0; t < nk; t++)
            acc = _mm256_fmadd_ps(_mm256_set1_ps(p[t]), kv8_avx2((const uint8_t *)v + (size_t)t * stride * esz, d, f16), acc);
        _mm256_storeu_ps(out + d, acc);
    }
}

AVX2 static void f16_widen_avx2(const uint16_t *src, float *dst, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i < n; i++) dst[i] = _cvtsh_ss(src[i]);
}

/* Q8_0 blocks to floats: each block's 32 codes widened to int32, converted (exact) and
 * multiplied by the block's scale */
AVX2 static void q8_0_widen_avx2(const void *src, float *dst, int64_t n) {
    const block_q8_0 *b = src;
    for (int64_t i = 0; i < n / QK8_0; i++, dst += QK8_0) {
        const __m256 d = _mm256_set1_ps(_cvtsh_ss(b[i].d));
        for (int j = 0; j < QK8_0; j += 8) {
            const __m256i q = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(b[i].qs + j)));
            _mm256_storeu_ps(dst + j, _mm256_mul_ps(_mm256_cvtepi32_ps(q), d));
        }
    }
}

/* dot.h's tl_attn_scores_rows_fn on 8 lanes: tiles of 4 rows x 2 keys, the 8 sums reduced at once
 * (lane 2r + t holds row r, key t); rows and keys past the ends repeat the last one, unstored */
AVX2 static void attn_scores_rows_avx2(const float *q, int nr, const float *k, int nk, int hd, float *s, int ld) {
    for (int r0 = 0; r0 < nr; r0 += 4) {
        const float *qr[4];
        for (int r = 0; r < 4; r++) qr[r] = q + (size_t)(r0 + r < nr ? r0 + r : nr - 1) * hd;
        for (int t0 = 0; t0 < nk; t0 += 2) {
            const float *k0 = k + (size_t)t0 * hd, *k1 = t0 + 1 < nk ? k0 + hd : k0;
            __m256 acc[8];
            for (int i = 0; i < 8; i++) acc[i] = _mm256_setzero_ps();
            for (int d = 0; d < hd; d += 8) {
                const __m256 a = _mm256_loadu_ps(k0 + d), b = _mm256_loadu_ps(k1 + d);
                for (int r = 0; r < 4; r++) {
                    const __m256 qv = _mm256_loadu_ps(qr[r] + d);
                    acc[2 * r] = _mm256_fmadd_ps(qv, a, acc[2 * r]);
                    acc[2 * r + 1] = _mm256_fmadd_ps(qv, b, acc[2 * r + 1]);
                }
            }
            const __m256 h01 = _mm256_hadd_ps(_mm256_hadd_ps(acc[0], acc[1]), _mm256_hadd_ps(acc[2], acc[3]));
            const __m256 h23 = _mm256_hadd_ps(_mm256_hadd_ps(acc[4], acc[5]), _mm256_hadd_ps(acc[6], acc[7]));
            float z[8];
            _mm256_storeu_ps(z, _mm256_add_ps(_mm256_permute2f128_ps(h01, h23, 0x20), _mm256_permute2f128_ps(h01, h23, 0x31)));
            for (int r = 0; r < 4 && r0 + r < nr; r++) {
                s[(size_t)(r0 + r) * ld + t0] = z[2 * r];
                if (t0 + 1 < nk) s[(size_t)(r0 + r) * ld + t0 + 1] = z[2 * r + 1];
            }
        }
    }
}

/* R rows (a constant where it is called) of out[d0 .. d0 + 16) += sum_t p[r ld + t] v_t[d0 ..] */
static inline __attribute__((always_inline)) AVX2 void values_rows_avx2(float *out, int R, const float *p, int ld, const float *v,
                                                                         int nk, int hd, int d0) {
    __m256 acc[4][2];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < 2; c++) acc[r][c] = _mm256_loadu_ps(out + (size_t)r * hd + d0 + 8 * c);
    for (int t = 0; t < nk; t++) {
        const __m256 v0 = _mm256_loadu_ps(v + (size_t)t * hd + d0), v1 = _mm256_loadu_ps(v + (size_t)t * hd + d0 + 8);
        for (int r = 0; r < R; r++) {
            const __m256 pt = _mm256_broadcast_ss(p + (size_t)r * ld + t);
            acc[r][0] = _mm256_fmadd_ps(pt, v0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(pt, v1, acc[r][1]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int c = 0; c < 2; c++) _mm256_storeu_ps(out + (size_t)r * hd + d0 + 8 * c, acc[r][c]);
}

AVX2 static void attn_values_rows_avx2(float *out, int nr, const float *p, int ld, const float *v, int nk, int hd) {
    int r0 = 0;
    for (; r0 + 4 <= nr; r0 += 4) {
        int d0 = 0;
        for (; d0 + 16 <= hd; d0 += 16) values_rows_avx2(out + (size_t)r0 * hd, 4, p + (size_t)r0 * ld, ld, v, nk, hd, d0);
        for (int r = 0; r < 4 && d0 < hd; r++) /* hd an odd multiple of 8: the last 8 columns */
            attn_values_avx2(out + (size_t)(r0 + r) * hd + d0, p + (size_t)(r0 + r) * ld, v + d0, (size_t)hd, nk, 8, false);
    }
    for (; r0 < nr; r0++) attn_values_avx2(out + (size_t)r0 * hd, p + (size_t)r0 * ld, v, (size_t)hd, nk, hd, false);
}

/* The row kernels for rows that read an F16 cache as it lies (dot.h's tl_attn_scores_rows_f16_fn;
 * AVX-512's below, on 8 lanes): the scores take 2 query rows x 4 dimensions a vector against a
 * key's 4 dimensions broadcast to both halves (vbroadcastf128, a load), 8 rows (4 pairs) x 2 keys
 * in 8 accumulators, whose 8 scores reduce in 3 horizontal adds; each key is widened once, into
 * a buffer that stays in L1, for 8 rows. Head sizes up to ATTN_ROWS_MAX_HD (the stack's copies
 * of the interleaved query rows and the widened keys). */
#define ATTN_ROWS_MAX_HD 256

/* rows [0, 2P) of q (past nr: the last row again) in pairs: qi[(b P + p) 8 + 4r + j] is row
 * 2p + r, dimension 4b + j */
static inline __attribute__((always_inline)) AVX2 void interleave_pairs_avx2(const float *q, int nr, int hd, int P, float *qi) {
    for (int p = 0; p < P; p++) {
        const float *q0 = q + (size_t)(2 * p < nr ? 2 * p : nr - 1) * hd, *q1 = q + (size_t)(2 * p + 1 < nr ? 2 * p + 1 : nr - 1) * hd;
        for (int d = 0; d < hd; d += 8) {
            const __m256 a = _mm256_loadu_ps(q0 + d), b = _mm256_loadu_ps(q1 + d);
            _mm256_store_ps(qi + ((size_t)(d / 4) * P + p) * 8, _mm256_permute2f128_ps(a, b, 0x20));
            _mm256_store_ps(qi + ((size_t)(d / 4 + 1) * P + p) * 8, _mm256_permute2f128_ps(a, b, 0x31));
        }
    }
}

/* The scores of nr rows (at most 2P; P pairs, interleaved in qi, P 2 or 4) against nk halves'
 * keys, 2 keys a step, widened into kw prefetching ATTN_PREFETCH ahead. Keys and rows past the
 * ends repeat the last one and are not stored. */
static inline __attribute__((always_inline)) AVX2 void scores_pairs_f16_avx2(const float *qi, int P, int nr, const uint16_t *k,
                                                                              int nk, int hd, float *s, int ld, float *kw) {
    for (int t0 = 0; t0 < nk; t0 += 2) {
        const int kn = nk - t0 < 2 ? nk - t0 : 2;
        const uint16_t *kh = k + (size_t)t0 * hd;
        for (size_t b = 0; b < (size_t)kn * hd * 2; b += 64) _mm_prefetch((const char *)kh + ATTN_PREFETCH + b, _MM_HINT_T0);
        for (int i = 0; i < kn * hd; i += 8) _mm256_store_ps(kw + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(kh + i))));
        const float *k0 = kw, *k1 = kn == 2 ? kw + hd : kw;
        __m256 acc[4][2];
        for (int p = 0; p < P; p++) acc[p][0] = acc[p][1] = _mm256_setzero_ps();
        for (int b = 0; b < hd / 4; b++) {
            const __m256 a = _mm256_broadcast_ps((const __m128 *)(k0 + 4 * b)), c = _mm256_broadcast_ps((const __m128 *)(k1 + 4 * b));
            for (int p = 0; p < P; p++) {
                const __m256 qv = _mm256_load_ps(qi + ((size_t)b * P + p) * 8);
                acc[p][0] = _mm256_fmadd_ps(qv, a, acc[p][0]);
                acc[p][1] = _mm256_fmadd_ps(qv, c, acc[p][1]);
            }
        }
        for (int p = 0; p < P; p += 2) {
            /* low half: rows 2p and 2p + 2, keys t0 and t0 + 1; high half: rows 2p + 1 and 2p + 3 */
            const __m256 z = _mm256_hadd_ps(_mm256_hadd_ps(acc[p][0], acc[p][1]), _mm256_hadd_ps(acc[p + 1][0], acc[p + 1][1]));
            float zs[8];
            _mm256_storeu_ps(zs, z);
            const int rows[4] = {2 * p, 2 * p + 2, 2 * p + 1, 2 * p + 3};
            for (int i = 0; i < 4; i++) {
                if (rows[i] >= nr) continue;
                float *sr = s + (size_t)rows[i] * ld + t0;
                sr[0] = zs[2 * i];
                if (kn == 2) sr[1] = zs[2 * i + 1];
            }
        }
    }
}

AVX2 static void attn_scores_rows_f16_avx2(const float *q, int nr, const uint16_t *k, int nk, int hd, float *s, int ld) {
    _Alignas(32) float qi[8 * ATTN_ROWS_MAX_HD], kw[2 * ATTN_ROWS_MAX_HD];
    int r0 = 0;
    for (; nr - r0 > 4; r0 += 8) {
        interleave_pairs_avx2(q + (size_t)r0 * hd, nr - r0, hd, 4, qi);
        scores_pairs_f16_avx2(qi, 4, nr - r0 < 8 ? nr - r0 : 8, k, nk, hd, s + (size_t)r0 * ld, ld, kw);
    }
    if (r0 < nr) {
        interleave_pairs_avx2(q + (size_t)r0 * hd, nr - r0, hd, 2, qi);
        scores_pairs_f16_avx2(qi, 2, nr - r0, k, nk, hd, s + (size_t)r0 * ld, ld, kw);
    }
}

/* R rows by C 8-column slices (constants where it is called; R C at most 8) of
 * out[d0 .. d0 + 8 C) += sum_t p[r ld + t] v_t[d0 ..], values as cached halves: per key C
 * conversions, R broadcasts and R C FMAs */
static inline __attribute__((always_inline)) AVX2 void values_rows_f16_avx2(float *out, int R, int C, const float *p, int ld,
                                                                             const uint16_t *v, int nk, int hd, int d0) {
    __m256 acc[8][2];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) acc[r][c] = _mm256_loadu_ps(out + (size_t)r * hd + d0 + 8 * c);
    for (int t = 0; t < nk; t++) {
        const uint16_t *vt = v + (size_t)t * hd + d0;
        if (d0 % 32 == 0) _mm_prefetch((const char *)vt + ATTN_PREFETCH, _MM_HINT_T0);
        __m256 vv[2];
        for (int c = 0; c < C; c++) vv[c] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(vt + 8 * c)));
        for (int r = 0; r < R; r++) {
            const __m256 pt = _mm256_broadcast_ss(p + (size_t)r * ld + t);
            for (int c = 0; c < C; c++) acc[r][c] = _mm256_fmadd_ps(pt, vv[c], acc[r][c]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) _mm256_storeu_ps(out + (size_t)r * hd + d0 + 8 * c, acc[r][c]);
}

/* 8 rows x 8 columns a key (each value converted once for 8 rows), then 4 x 16, then 1 x 16 */
AVX2 static void attn_values_rows_f16_avx2(float *out, int nr, const float *p, int ld, const uint16_t *v, int nk, int hd) {
    int r0 = 0;
    for (; r0 + 8 <= nr; r0 += 8)
        for (int d0 = 0; d0 < hd; d0 += 8) values_rows_f16_avx2(out + (size_t)r0 * hd, 8, 1, p + (size_t)r0 * ld, ld, v, nk, hd, d0);
    for (; r0 + 4 <= nr; r0 += 4) {
        int d0 = 0;
        for (; d0 + 16 <= hd; d0 += 16) values_rows_f16_avx2(out + (size_t)r0 * hd, 4, 2, p + (size_t)r0 * ld, ld, v, nk, hd, d0);
        if (d0 < hd) values_rows_f16_avx2(out + (size_t)r0 * hd, 4, 1, p + (size_t)r0 * ld, ld, v, nk, hd, d0);
    }
    for (; r0 < nr; r0++) {
        int d0 = 0;
        for (; d0 + 16 <= hd; d0 += 16) values_rows_f16_avx2(out + (size_t)r0 * hd, 1, 2, p + (size_t)r0 * ld, ld, v, nk, hd, d0);
        if (d0 < hd) values_rows_f16_avx2(out + (size_t)r0 * hd, 1, 1, p + (size_t)r0 * ld, ld, v, nk, hd, d0);
    }
}

AVX2 static void attn_scores_f16_avx2(const float *q, const void *k, size_t stride, int nk, int hd, float *s) {
    attn_scores_avx2(q, k, stride, nk, hd, true, s);
}
AVX2 static void attn_scores_f32_avx2(const float *q, const void *k, size_t stride, int nk, int hd, float *s) {
    attn_scores_avx2(q, k, stride, nk, hd, false, s);
}
AVX2 static void attn_values_f16_avx2(float *out, const float *p, const void *v, size_t stride, int nk, int hd) {
    attn_values_avx2(out, p, v, stride, nk, hd, true);
}
AVX2 static void attn_values_f32_avx2(float *out, const float *p, const void *v, size_t stride, int nk, int hd) {
    attn_values_avx2(out, p, v, stride, nk, hd, false);
}

/* dot_isa.h's exp on 8 lanes */
AVX2 static inline __m256 exp8_avx2(__m256 x) {
    x = _mm256_max_ps(x, _mm256_set1_ps(EXP_LO));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(EXP_LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(EXP_C1), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(EXP_C2), r);
    __m256 y = _mm256_set1_ps(exp_poly[0]);
    for (int i = 1; i < 6; i++) y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(exp_poly[i]));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

AVX2 static float exp_sum_avx2(float *s, int n, float m) {
    __m256 sum = _mm256_setzero_ps();
    const __m256 vm = _mm256_set1_ps(m);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 e = exp8_avx2(_mm256_sub_ps(_mm256_loadu_ps(s + i), vm));
        _mm256_storeu_ps(s + i, e);
        sum = _mm256_add_ps(sum, e);
    }
    float total = hsum(sum);
    for (; i < n; i++) total += s[i] = expf(s[i] - m);
    return total;
}

AVX2 static float scale_max_avx2(float *s, int n, float scale) {
    const __m256 vs = _mm256_set1_ps(scale);
    __m256 mx = _mm256_set1_ps(-INFINITY);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 z = _mm256_mul_ps(_mm256_loadu_ps(s + i), vs);
        _mm256_storeu_ps(s + i, z);
        mx = _mm256_max_ps(z, mx);
    }
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    float m = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
    for (; i < n; i++) {
        s[i] *= scale;
        m = s[i] > m ? s[i] : m;
    }
    return m;
}

/* x / (1 + exp(-2u)) with u = sqrt(2/pi) x (1 + 0.044715 x^2) (dot.h's tl_gelu_glu_fn);
 * -2u at most 88, where exp8 is still finite */
AVX2 static inline __m256 gelu8_avx2(__m256 x) {
    const __m256 x2 = _mm256_mul_ps(x, x);
    const __m256 u = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(-2.0f * 0.79788456080286535588f), x),
                                   _mm256_fmadd_ps(_mm256_set1_ps(0.044715f), x2, _mm256_set1_ps(1.0f)));
    const __m256 e = exp8_avx2(_mm256_min_ps(u, _mm256_set1_ps(88.0f)));
    return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

AVX2 static void silu_glu_avx2(float *a, const float *b, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 x = _mm256_loadu_ps(a + i);
        const __m256 e = exp8_avx2(_mm256_min_ps(_mm256_sub_ps(_mm256_setzero_ps(), x), _mm256_set1_ps(88.0f)));
        _mm256_storeu_ps(a + i, _mm256_mul_ps(_mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e)), _mm256_loadu_ps(b + i)));
    }
    for (; i < n; i++) a[i] = a[i] / (1.0f + expf(-a[i])) * b[i];
}

AVX2 static void gelu_glu_avx2(float *a, const float *b, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(a + i, _mm256_mul_ps(gelu8_avx2(_mm256_loadu_ps(a + i)), _mm256_loadu_ps(b + i)));
    for (; i < n; i++) a[i] = tl_gelu_tanh(a[i]) * b[i];
}

/* GGUF Q5_0/Q5_1: the 5th bit of element j is bit j of qh. 32 bytes, 0xFF where the bit is set
 * (broadcast qh, put byte j/8 in lane j, or in every bit but j%8, compare with all ones). */
AVX2 static inline __m256i q5_high_bits(const uint8_t qh[4]) {
    uint32_t h;
    memcpy(&h, qh, sizeof h);
    const __m256i spread = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
    __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32((int)h), spread);
    bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    return _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1));
}

/* The 32 5-bit values of a Q5 block, element order, as bytes 0..31 */
AVX2 static inline __m256i q5_values(const uint8_t qs[16], const uint8_t qh[4]) {
    const __m128i mask = _mm_set1_epi8(0x0F);
    __m128i q = _mm_loadu_si128((const __m128i *)qs);
    __m256i nib = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), mask), _mm_and_si128(q, mask));
    return _mm256_or_si256(nib, _mm256_and_si256(q5_high_bits(qh), _mm256_set1_epi8(0x10)));
}

/* sum over 32 signed bytes v[j] * x[j] */
AVX2 static inline __m256 i8x32_dot(__m256i v, const float *x) {
    __m128i lo = _mm256_castsi256_si128(v), hi = _mm256_extracti128_si256(v, 1);
    __m256 s = _mm256_mul_ps(i8_to_ps(lo), _mm256_loadu_ps(x));
    s = _mm256_fmadd_ps(i8_to_ps(_mm_srli_si128(lo, 8)), _mm256_loadu_ps(x + 8), s);
    s = _mm256_fmadd_ps(i8_to_ps(hi), _mm256_loadu_ps(x + 16), s);
    return _mm256_fmadd_ps(i8_to_ps(_mm_srli_si128(hi, 8)), _mm256_loadu_ps(x + 24), s);
}

/* GGUF Q5_0: d * (q - 16); even and odd blocks in separate accumulators */
AVX2 static float dot_q5_0_avx2(const void *w, const float *x, int64_t n) {
    const block_q5_0 *b = w;
    const int64_t nb = n / QK5_0;
    const __m256i sixteen = _mm256_set1_epi8(16);
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 2 <= nb; i += 2) {
        __m256i v0 = _mm256_sub_epi8(q5_values(b[i].qs, b[i].qh), sixteen);
        __m256i v1 = _mm256_sub_epi8(q5_values(b[i + 1].qs, b[i + 1].qh), sixteen);
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(b[i].d)), i8x32_dot(v0, x + i * QK5_0), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(b[i + 1].d)), i8x32_dot(v1, x + (i + 1) * QK5_0), acc1);
    }
    if (i < nb) {
        __m256i v = _mm256_sub_epi8(q5_values(b[i].qs, b[i].qh), sixteen);
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(b[i].d)), i8x32_dot(v, x + i * QK5_0), acc0);
    }
    return hsum(_mm256_add_ps(acc0, acc1));
}

/* GGUF Q5_1: d * q + m  ->  d * sum(q x) + m * sum(x) */
AVX2 static inline void q5_1_block_avx2(const block_q5_1 *b, const float *x, __m256 *acc, __m256 *accm) {
    __m256 xs = _mm256_add_ps(_mm256_add_ps(_mm256_loadu_ps(x), _mm256_loadu_ps(x + 8)),
                              _mm256_add_ps(_mm256_loadu_ps(x + 16), _mm256_loadu_ps(x + 24)));
    *acc = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(b->d)), i8x32_dot(q5_values(b->qs, b->qh), x), *acc);
    *accm = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(b->m)), xs, *accm);
}

AVX2 static float dot_q5_1_avx2(const void *w, const float *x, int64_t n) {
    const block_q5_1 *b = w;
    const int64_t nb = n / QK5_1;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), m0 = _mm256_setzero_ps(), m1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 2 <= nb; i += 2) {
        q5_1_block_avx2(&b[i], x + i * QK5_1, &a0, &m0);
        q5_1_block_avx2(&b[i + 1], x + (i + 1) * QK5_1, &a1, &m1);
    }
    if (i < nb) q5_1_block_avx2(&b[i], x + i * QK5_1, &a0, &m0);
    return hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(m0, m1)));
}

/* GGUF Q4_0: d * (q - 8); low nibbles are elements 0..15, high nibbles 16..31 */
AVX2 static float dot_q4_0_avx2(const void *w, const float *x, int64_t n) {
    const block_q4_0 *b = w;
    const __m128i mask = _mm_set1_epi8(0x0F), eight = _mm_set1_epi8(8);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK4_0; i++, x += QK4_0) {
        __m128i q = _mm_loadu_si128((const __m128i *)b[i].qs);
        __m128i lo = _mm_sub_epi8(_mm_and_si128(q, mask), eight);
        __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(q, 4), mask), eight);
        __m256 v = _mm256_mul_ps(i8_to_ps(lo), _mm256_loadu_ps(x));
        v = _mm256_fmadd_ps(i8_to_ps(_mm_srli_si128(lo, 8)), _mm256_loadu_ps(x + 8), v);
        v = _mm256_fmadd_ps(i8_to_ps(hi), _mm256_loadu_ps(x + 16), v);
        v = _mm256_fmadd_ps(i8_to_ps(_mm_srli_si128(hi, 8)), _mm256_loadu_ps(x + 24), v);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(b[i].d)), v, acc);
    }
    return hsum(acc);
}

/* GGUF Q4_1: d * q + m  ->  d * sum(q x) + m * sum(x) */
AVX2 static float dot_q4_1_avx2(const void *w, const float *x, int64_t n) {
    const block_q4_1 *b = w;
    const __m128i mask = _mm_set1_epi8(0x0F);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK4_1; i++, x += QK4_1) {
        __m128i q = _mm_loadu_si128((const __m128i *)b[i].qs);
        __m128i lo = _mm_and_si128(q, mask), hi = _mm_and_si128(_mm_srli_epi16(q, 4), mask);
        __m256 x0 = _mm256_loadu_ps(x), x1 = _mm256_loadu_ps(x + 8), x2 = _mm256_loadu_ps(x + 16),
               x3 = _mm256_loadu_ps(x + 24);
        __m256 v = _mm256_mul_ps(i8_to_ps(lo), x0);
        v = _mm256_fmadd_ps(i8_to_ps(_mm_srli_si128(lo, 8)), x1, v);
        v = _mm256_fmadd_ps(i8_to_ps(hi), x2, v);
        v = _mm256_fmadd_ps(i8_to_ps(_mm_srli_si128(hi, 8)), x3, v);
        __m256 sx = _mm256_add_ps(_mm256_add_ps(x0, x1), _mm256_add_ps(x2, x3));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(b[i].d)), v, acc);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(b[i].m)), sx, acc);
    }
    return hsum(acc);
}

/* GGUF Q8_0: d * q */
AVX2 static float dot_q8_0_avx2(const void *w, const float *x, int64_t n) {
    const block_q8_0 *b = w;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK8_0; i++, x += QK8_0) {
        __m128i q0 = _mm_loadu_si128((const __m128i *)b[i].qs), q1 = _mm_loadu_si128((const __m128i *)(b[i].qs + 16));
        __m256 v = _mm256_mul_ps(i8_to_ps(q0), _mm256_loadu_ps(x));
        v = _mm256_fmadd_ps(i8_to_ps(_mm_srli_si128(q0, 8)), _mm256_loadu_ps(x + 8), v);
        v = _mm256_fmadd_ps(i8_to_ps(q1), _mm256_loadu_ps(x + 16), v);
        v = _mm256_fmadd_ps(i8_to_ps(_mm_srli_si128(q1, 8)), _mm256_loadu_ps(x + 24), v);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(b[i].d)), v, acc);
    }
    return hsum(acc);
}

/* AVX-512 (F): 16 floats a step, so a block of 32 is two multiply-adds */
#define AVX512 __attribute__((target("avx512f,avx2,fma,f16c")))

AVX512 static inline __m512 u8x16_to_ps(__m128i b) { return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(b)); }
AVX512 static inline __m512 i8x16_to_ps(__m128i b) { return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b)); }

AVX512 static float dot_f32_avx512(const void *w, const float *x, int64_t n) {
    const float *a = w;
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        PREFETCH_AHEAD(a + i);
        PREFETCH_AHEAD(a + i + 16);
        acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(x + i), acc0);
        acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(x + i + 16), acc1);
    }
    float s = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
    for (; i < n; i++) s += a[i] * x[i];
    return s;
}

/* F16: four accumulators, two 64-byte lines of weights a step, each prefetched ahead (dot_f16_avx2) */
AVX512 static inline __m512 f16x16_avx512(const uint16_t *a) {
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)a));
}

AVX512 static float dot_f16_avx512(const void *w, const float *x, int64_t n) {
    const uint16_t *a = w;
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps(), acc2 = _mm512_setzero_ps(), acc3 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        PREFETCH_AHEAD(a + i);
        PREFETCH_AHEAD(a + i + 32);
        acc0 = _mm512_fmadd_ps(f16x16_avx512(a + i), _mm512_loadu_ps(x + i), acc0);
        acc1 = _mm512_fmadd_ps(f16x16_avx512(a + i + 16), _mm512_loadu_ps(x + i + 16), acc1);
        acc2 = _mm512_fmadd_ps(f16x16_avx512(a + i + 32), _mm512_loadu_ps(x + i + 32), acc2);
        acc3 = _mm512_fmadd_ps(f16x16_avx512(a + i + 48), _mm512_loadu_ps(x + i + 48), acc3);
    }
    for (; i + 16 <= n; i += 16) acc0 = _mm512_fmadd_ps(f16x16_avx512(a + i), _mm512_loadu_ps(x + i), acc0);
    float s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc0, acc1), _mm512_add_ps(acc2, acc3)));
    for (; i < n; i++) s += _cvtsh_ss(a[i]) * x[i];
    return s;
}

/* Attention over a block of cached rows (stride elements apart): scores s[t] = q . k_t, and
 * out += sum_t p[t] v_t with each 16-wide slice of out held in a register across the block. */
AVX512 static inline __m512 kv16_avx512(const void *row, int64_t d, bool f16) {
    return f16 ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)row + d)))
               : _mm512_loadu_ps((const float *)row + d);
}

AVX512 static void attn_scores_avx512(const float *q, const void *k, size_t stride, int nk, int hd, bool f16, float *s) {
    const size_t esz = f16 ? 2 : 4;
    int t = 0;
    for (; t + 2 <= nk; t += 2) {
        const uint8_t *k0 = (const uint8_t *)k + (size_t)t * stride * esz, *k1 = k0 + stride * esz;
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
        for (int d = 0; d < hd; d += 16) {
            const __m512 qd = _mm512_loadu_ps(q + d);
            a0 = _mm512_fmadd_ps(kv16_avx512(k0, d, f16), qd, a0);
            a1 = _mm512_fmadd_ps(kv16_avx512(k1, d, f16), qd, a1);
        }
        s[t] = _mm512_reduce_add_ps(a0);
        s[t + 1] = _mm512_reduce_add_ps(a1);
    }
    for (; t < nk; t++) {
        const uint8_t *k0 = (const uint8_t *)k + (size_t)t * stride * esz;
        __m512 a0 = _mm512_setzero_ps();
        for (int d = 0; d < hd; d += 16) a0 = _mm512_fmadd_ps(kv16_avx512(k0, d, f16), _mm512_loadu_ps(q + d), a0);
        s[t] = _mm512_reduce_add_ps(a0);
    }
}

/* out[0..16 NC) += sum_t p[t] v_t with all NC slices of out in registers: one broadcast of p[t]
 * per key (NC is a constant at each call site, so the loops unroll) */
#define ATTN_VALUES_NC(NC)                                                                                              \
    AVX512 static void attn_values_##NC##_avx512(float *out, const float *p, const void *v, size_t stride, int nk,     \
                                                 bool f16) {                                                            \
        const size_t esz = f16 ? 2 : 4;                                                                                 \
        __m512 acc[NC];                                                                                                 \
        for (int c = 0; c < NC; c++) acc[c] = _mm512_loadu_ps(out + 16 * c);                                            \
        for (int t = 0; t < nk; t++) {                                                                                  \
            const uint8_t *vt = (const uint8_t *)v + (size_t)t * stride * esz;                                          \
            const __m512 pt = _mm512_set1_ps(p[t]);                                                                     \
            for (int c = 0; c < NC; c++) acc[c] = _mm512_fmadd_ps(pt, kv16_avx512(vt, 16 * c, f16), acc[c]);           \
        }                                                                                                               \
        for (int c = 0; c < NC; c++) _mm512_storeu_ps(out + 16 * c, acc[c]);                                            \
    }
ATTN_VALUES_NC(4)
ATTN_VALUES_NC(8)
#undef ATTN_VALUES_NC

AVX512 static void attn_values_avx512(float *out, const float *p, const void *v, size_t stride, int nk, int hd, bool f16) {
    if (hd == 64) {
        attn_values_4_avx512(out, p, v, stride, nk, f16);
        return;
    }
    if (hd == 128) {
        attn_values_8_avx512(out, p, v, stride, nk, f16);
        return;
    }
    const size_t esz = f16 ? 2 : 4;
    for (int d = 0; d < hd; d += 16) {
        __m512 acc = _mm512_loadu_ps(out + d);
        for (int t = 0; t < nk; t++)
            acc = _mm512_fmadd_ps(_mm512_set1_ps(p[t]), kv16_avx512((const uint8_t *)v + (size_t)t * stride * esz, d, f16), acc);
        _mm512_storeu_ps(out + d, acc);
    }
}

AVX512 static void f16_widen_avx512(const uint16_t *src, float *dst, int64_t n) {
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(src + i))));
        _mm512_storeu_ps(dst + i + 16, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(src + i + 16))));
    }
    for (; i < n; i++) dst[i] = _cvtsh_ss(src[i]);
}

AVX512 static void q8_0_widen_avx512(const void *src, float *dst, int64_t n) {
    const block_q8_0 *b = src;
    for (int64_t i = 0; i < n / QK8_0; i++, dst += QK8_0) {
        const __m512 d = _mm512_set1_ps(_cvtsh_ss(b[i].d));
        const __m128i q0 = _mm_loadu_si128((const __m128i *)b[i].qs), q1 = _mm_loadu_si128((const __m128i *)(b[i].qs + 16));
        _mm512_storeu_ps(dst, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q0)), d));
        _mm512_storeu_ps(dst + 16, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q1)), d));
    }
}

/* The row scores' register tiles hold 4 query rows x 4 dimensions a vector (lane 4r + j: row r,
 * dimension 4b + j of a block b of 4), against a key's 4 dimensions broadcast to the 4 lane
 * groups (a load, vbroadcastf32x4): each key loaded serves 4 rows a multiply-add, and 4 keys'
 * accumulators reduce to the 16 scores of 4 rows x 4 keys in 6 shuffles and 3 adds (the 16x16
 * tiles of full dot products took 45). Head sizes up to ATTN_ROWS_MAX_HD (the stack's copies of
 * the interleaved query rows and the widened keys). */
#define ATTN_ROWS_KEYS 8 /* keys a step: 8 loads and 16 multiply-adds a block for 8 rows */

/* rows [0, 4G) of q (past nr: the last row again) interleaved: qi[(b G + g) 16 + 4r + j] is row
 * 4g + r, dimension 4b + j (a 4x4 transpose of 128-bit lane groups per 16 dimensions) */
static inline __attribute__((always_inline)) AVX512 void interleave_rows_avx512(const float *q, int nr, int hd, int G, float *qi) {
    for (int g = 0; g < G; g++) {
        const float *qr[4];
        for (int r = 0; r < 4; r++) qr[r] = q + (size_t)(4 * g + r < nr ? 4 * g + r : nr - 1) * hd;
        for (int d = 0; d < hd; d += 16) {
            const __m512 r0 = _mm512_loadu_ps(qr[0] + d), r1 = _mm512_loadu_ps(qr[1] + d);
            const __m512 r2 = _mm512_loadu_ps(qr[2] + d), r3 = _mm512_loadu_ps(qr[3] + d);
            const __m512 t0 = _mm512_shuffle_f32x4(r0, r1, 0x44), t1 = _mm512_shuffle_f32x4(r0, r1, 0xEE);
            const __m512 t2 = _mm512_shuffle_f32x4(r2, r3, 0x44), t3 = _mm512_shuffle_f32x4(r2, r3, 0xEE);
            float *o = qi + ((size_t)(d / 4) * G + g) * 16;
            _mm512_store_ps(o, _mm512_shuffle_f32x4(t0, t2, 0x88));
            _mm512_store_ps(o + 16 * G, _mm512_shuffle_f32x4(t0, t2, 0xDD));
            _mm512_store_ps(o + 32 * G, _mm512_shuffle_f32x4(t1, t3, 0x88));
            _mm512_store_ps(o + 48 * G, _mm512_shuffle_f32x4(t1, t3, 0xDD));
        }
    }
}

/* lane 4r + t: the sum of lanes 4r .. 4r + 3 of a[t] (row r's score against key t) */
static inline __attribute__((always_inline)) AVX512 __m512 sum4x4_avx512(__m512 a0, __m512 a1, __m512 a2, __m512 a3) {
    const __m512 s01 = _mm512_add_ps(_mm512_unpacklo_ps(a0, a1), _mm512_unpackhi_ps(a0, a1));
    const __m512 s23 = _mm512_add_ps(_mm512_unpacklo_ps(a2, a3), _mm512_unpackhi_ps(a2, a3));
    return _mm512_add_ps(_mm512_shuffle_ps(s01, s23, 0x44), _mm512_shuffle_ps(s01, s23, 0xEE));
}

/* The scores of nr rows (at most 4G; G groups of 4, interleaved in qi) against nk keys, 8 keys a
 * step; keys as cached halves are widened 8 at a time into kw (in L1 for the 8 broadcasts of each
 * block), prefetching ATTN_PREFETCH ahead. Keys and rows past the ends repeat the last one and
 * are not stored. */
static inline __attribute__((always_inline)) AVX512 void scores_tile_avx512(const float *qi, int G, int nr, const void *k, int nk,
                                                                             int hd, float *s, int ld, bool f16, float *kw) {
    enum { KEYS = ATTN_ROWS_KEYS };
    for (int t0 = 0; t0 < nk; t0 += KEYS) {
        const int kn = nk - t0 < KEYS ? nk - t0 : KEYS;
        const float *kp[KEYS];
        if (f16) {
            const uint16_t *kh = (const uint16_t *)k + (size_t)t0 * hd;
            for (size_t b = 0; b < (size_t)kn * hd * 2; b += 64) _mm_prefetch((const char *)kh + ATTN_PREFETCH + b, _MM_HINT_T0);
            for (int i = 0; i < kn * hd; i += 16) _mm512_store_ps(kw + i, f16x16_avx512(kh + i));
            for (int t = 0; t < KEYS; t++) kp[t] = kw + (size_t)(t < kn ? t : kn - 1) * hd;
        } else {
            for (int t = 0; t < KEYS; t++) kp[t] = (const float *)k + (size_t)(t0 + (t < kn ? t : kn - 1)) * hd;
        }
        __m512 acc[2][KEYS];
        for (int g = 0; g < G; g++)
            for (int t = 0; t < KEYS; t++) acc[g][t] = _mm512_setzero_ps();
        for (int b = 0; b < hd / 4; b++) {
            __m512 qv[2];
            for (int g = 0; g < G; g++) qv[g] = _mm512_load_ps(qi + ((size_t)b * G + g) * 16);
            for (int t = 0; t < KEYS; t++) {
                const __m512 kb = _mm512_broadcast_f32x4(_mm_loadu_ps(kp[t] + 4 * b));
                for (int g = 0; g < G; g++) acc[g][t] = _mm512_fmadd_ps(qv[g], kb, acc[g][t]);
            }
        }
#pragma GCC unroll 2
        for (int g = 0; g < G; g++)
#pragma GCC unroll 2
            for (int t = 0; t < KEYS; t += 4) {
                const __m512 z = sum4x4_avx512(acc[g][t], acc[g][t + 1], acc[g][t + 2], acc[g][t + 3]);
                float *sr = s + (size_t)4 * g * ld + t0 + t;
                if (4 * g + 4 <= nr && t + 4 <= kn) {
                    _mm_storeu_ps(sr, _mm512_castps512_ps128(z));
                    _mm_storeu_ps(sr + (size_t)ld, _mm512_extractf32x4_ps(z, 1));
                    _mm_storeu_ps(sr + 2 * (size_t)ld, _mm512_extractf32x4_ps(z, 2));
                    _mm_storeu_ps(sr + 3 * (size_t)ld, _mm512_extractf32x4_ps(z, 3));
                } else if (t < kn) {
                    float zs[16];
                    _mm512_storeu_ps(zs, z);
                    for (int r = 0; r < 4 && 4 * g + r < nr; r++)
                        for (int j = 0; j < 4 && t + j < kn; j++) sr[(size_t)r * ld + j] = zs[4 * r + j];
                }
            }
    }
}

/* dot.h's tl_attn_scores_rows_fn (f16: its F16 form, keys as cached): 8 rows at a time (a decode
 * step's group of 8 query heads: each key read and widened once for them), the last 1 to 4 rows
 * as one group */
static inline __attribute__((always_inline)) AVX512 void scores_rows_avx512(const float *q, int nr, const void *k, int nk,
                                                                             int hd, float *s, int ld, bool f16) {
    _Alignas(64) float qi[8 * ATTN_ROWS_MAX_HD], kw[ATTN_ROWS_KEYS * ATTN_ROWS_MAX_HD];
    int r0 = 0;
    for (; nr - r0 > 4; r0 += 8) {
        interleave_rows_avx512(q + (size_t)r0 * hd, nr - r0, hd, 2, qi);
        scores_tile_avx512(qi, 2, nr - r0 < 8 ? nr - r0 : 8, k, nk, hd, s + (size_t)r0 * ld, ld, f16, kw);
    }
    if (r0 < nr) {
        interleave_rows_avx512(q + (size_t)r0 * hd, nr - r0, hd, 1, qi);
        scores_tile_avx512(qi, 1, nr - r0, k, nk, hd, s + (size_t)r0 * ld, ld, f16, kw);
    }
}

AVX512 static void attn_scores_rows_avx512(const float *q, int nr, const float *k, int nk, int hd, float *s, int ld) {
    scores_rows_avx512(q, nr, k, nk, hd, s, ld, false);
}
AVX512 static void attn_scores_rows_f16_avx512(const float *q, int nr, const uint16_t *k, int nk, int hd, float *s, int ld) {
    scores_rows_avx512(q, nr, k, nk, hd, s, ld, true);
}

/* R rows by C 16-column slices (constants where it is called; R C at most 16) of
 * out[d0 .. d0 + 16 C) += sum_t p[r ld + t] v_t[d0 ..]: per key C value loads, R broadcasts and
 * R C FMAs */
static inline __attribute__((always_inline)) AVX512 void values_rows_avx512(float *out, int R, int C, const float *p, int ld,
                                                                             const void *v, int nk, int hd, int d0, bool f16) {
    const size_t row = (size_t)hd * (f16 ? 2 : 4);
    __m512 acc[8][4];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) acc[r][c] = _mm512_loadu_ps(out + (size_t)r * hd + d0 + 16 * c);
    for (int t = 0; t < nk; t++) {
        __m512 vv[4];
        if (f16 && R == 8) _mm_prefetch((const char *)((const uint16_t *)v + (size_t)t * hd + d0) + ATTN_PREFETCH, _MM_HINT_T0);
        for (int c = 0; c < C; c++) vv[c] = kv16_avx512((const uint8_t *)v + (size_t)t * row, d0 + 16 * c, f16);
        for (int r = 0; r < R; r++) {
            const __m512 pt = _mm512_set1_ps(p[(size_t)r * ld + t]);
            for (int c = 0; c < C; c++) acc[r][c] = _mm512_fmadd_ps(pt, vv[c], acc[r][c]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) _mm512_storeu_ps(out + (size_t)r * hd + d0 + 16 * c, acc[r][c]);
}

/* dot.h's tl_attn_values_rows_fn (f16: its F16 form): 4 rows x 64 columns a key; halves take 8
 * rows x 32 columns first, each value converted once for 8 rows */
static inline __attribute__((always_inline)) AVX512 void values_rows_all_avx512(float *out, int nr, const float *p, int ld,
                                                                                 const void *v, int nk, int hd, bool f16) {
    int r0 = 0;
    for (; f16 && r0 + 8 <= nr; r0 += 8) {
        float *o = out + (size_t)r0 * hd;
        const float *pr = p + (size_t)r0 * ld;
        int d0 = 0;
        for (; d0 + 32 <= hd; d0 += 32) values_rows_avx512(o, 8, 2, pr, ld, v, nk, hd, d0, true);
        for (; d0 < hd; d0 += 16) values_rows_avx512(o, 8, 1, pr, ld, v, nk, hd, d0, true);
    }
    for (; r0 + 4 <= nr; r0 += 4) {
        float *o = out + (size_t)r0 * hd;
        const float *pr = p + (size_t)r0 * ld;
        int d0 = 0;
        for (; d0 + 64 <= hd; d0 += 64) values_rows_avx512(o, 4, 4, pr, ld, v, nk, hd, d0, f16);
        for (; d0 < hd; d0 += 16) values_rows_avx512(o, 4, 1, pr, ld, v, nk, hd, d0, f16);
    }
    for (; r0 < nr; r0++) {
        float *o = out + (size_t)r0 * hd;
        const float *pr = p + (size_t)r0 * ld;
        int d0 = 0;
        for (; d0 + 64 <= hd; d0 += 64) values_rows_avx512(o, 1, 4, pr, ld, v, nk, hd, d0, f16);
        for (; d0 < hd; d0 += 16) values_rows_avx512(o, 1, 1, pr, ld, v, nk, hd, d0, f16);
    }
}

AVX512 static void attn_values_rows_avx512(float *out, int nr, const float *p, int ld, const float *v, int nk, int hd) {
    values_rows_all_avx512(out, nr, p, ld, v, nk, hd, false);
}
AVX512 static void attn_values_rows_f16_avx512(float *out, int nr, const float *p, int ld, const uint16_t *v, int nk, int hd) {
    values_rows_all_avx512(out, nr, p, ld, v, nk, hd, true);
}

AVX512 static void attn_scores_f16_avx512(const float *q, const void *k, size_t stride, int nk, int hd, float *s) {
    attn_scores_avx512(q, k, stride, nk, hd, true, s);
}
AVX512 static void attn_scores_f32_avx512(const float *q, const void *k, size_t stride, int nk, int hd, float *s) {
    attn_scores_avx512(q, k, stride, nk, hd, false, s);
}
AVX512 static void attn_values_f16_avx512(float *out, const float *p, const void *v, size_t stride, int nk, int hd) {
    attn_values_avx512(out, p, v, stride, nk, hd, true);
}
AVX512 static void attn_values_f32_avx512(float *out, const float *p, const void *v, size_t stride, int nk, int hd) {
    attn_values_avx512(out, p, v, stride, nk, hd, false);
}

AVX512 static inline __m512 exp16_avx512(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(EXP_LO));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(EXP_LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(EXP_C1), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(EXP_C2), r);
    __m512 y = _mm512_set1_ps(exp_poly[0]);
    for (int i = 1; i < 6; i++) y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(exp_poly[i]));
    y = _mm512_fmadd_ps(y, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(y, n);
}

/* gelu8_avx2 on 16 lanes */
AVX512 static inline __m512 gelu16_avx512(__m512 x) {
    const __m512 x2 = _mm512_mul_ps(x, x);
    const __m512 u = _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(-2.0f * 0.79788456080286535588f), x),
                                   _mm512_fmadd_ps(_mm512_set1_ps(0.044715f), x2, _mm512_set1_ps(1.0f)));
    const __m512 e = exp16_avx512(_mm512_min_ps(u, _mm512_set1_ps(88.0f)));
    return _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

AVX512 static void silu_glu_avx512(float *a, const float *b, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 x = _mm512_loadu_ps(a + i);
        const __m512 e = exp16_avx512(_mm512_min_ps(_mm512_sub_ps(_mm512_setzero_ps(), x), _mm512_set1_ps(88.0f)));
        _mm512_storeu_ps(a + i, _mm512_mul_ps(_mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), e)), _mm512_loadu_ps(b + i)));
    }
    for (; i < n; i++) a[i] = a[i] / (1.0f + expf(-a[i])) * b[i];
}

AVX512 static void gelu_glu_avx512(float *a, const float *b, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(a + i, _mm512_mul_ps(gelu16_avx512(_mm512_loadu_ps(a + i)), _mm512_loadu_ps(b + i)));
    for (; i < n; i++) a[i] = tl_gelu_tanh(a[i]) * b[i];
}

AVX512 static float exp_sum_avx512(float *s, int n, float m) {
    __m512 sum = _mm512_setzero_ps();
    const __m512 vm = _mm512_set1_ps(m);
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 e = exp16_avx512(_mm512_sub_ps(_mm512_loadu_ps(s + i), vm));
        _mm512_storeu_ps(s + i, e);
        sum = _mm512_add_ps(sum, e);
    }
    float total = _mm512_reduce_add_ps(sum);
    for (; i < n; i++) total += s[i] = expf(s[i] - m);
    return total;
}

AVX512 static float scale_max_avx512(float *s, int n, float scale) {
    const __m512 vs = _mm512_set1_ps(scale);
    __m512 mx = _mm512_set1_ps(-INFINITY);
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 z = _mm512_mul_ps(_mm512_loadu_ps(s + i), vs);
        _mm512_storeu_ps(s + i, z);
        mx = _mm512_max_ps(z, mx); /* a NaN score is passed over, as by the scalar comparison */
    }
    if (i < n) {
        const __mmask16 k = (__mmask16)((1u << (n - i)) - 1);
        const __m512 z = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, s + i), vs);
        _mm512_mask_storeu_ps(s + i, k, z);
        mx = _mm512_mask_max_ps(mx, k, z, mx);
    }
    return _mm512_reduce_max_ps(mx);
}

AVX512 static float dot_bf16_avx512(const void *w, const float *x, int64_t n) {
    const uint16_t *a = w;
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        PREFETCH_AHEAD(a + i);
        __m512i h0 = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(a + i)));
        __m512i h1 = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(a + i + 16)));
        acc0 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(h0, 16)), _mm512_loadu_ps(x + i), acc0);
        acc1 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(h1, 16)), _mm512_loadu_ps(x + i + 16), acc1);
    }
    float s = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
    for (; i < n; i++) s += bf16_to_f32(a[i]) * x[i];
    return s;
}

/* The float kernels below keep two accumulators, even blocks in one and odd blocks in the
 * other, as named registers: an array indexed by (i & 1) made the compiler keep them on the
 * stack, and every block then waited on a store-to-load forward. */

/* one Q4_0 block: sum (q - 8) x, unscaled */
AVX512 static inline __m512 q4_0_block_avx512(const block_q4_0 *b, const float *x) {
    const __m128i mask = _mm_set1_epi8(0x0F), eight = _mm_set1_epi8(8);
    __m128i q = _mm_loadu_si128((const __m128i *)b->qs);
    __m128i lo = _mm_sub_epi8(_mm_and_si128(q, mask), eight);
    __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(q, 4), mask), eight);
    __m512 v = _mm512_mul_ps(i8x16_to_ps(lo), _mm512_loadu_ps(x));
    return _mm512_fmadd_ps(i8x16_to_ps(hi), _mm512_loadu_ps(x + 16), v);
}

AVX512 static float dot_q4_0_avx512(const void *w, const float *x, int64_t n) {
    const block_q4_0 *b = w;
    const int64_t nb = n / QK4_0;
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 2 <= nb; i += 2) {
        acc0 = _mm512_fmadd_ps(_mm512_set1_ps(_cvtsh_ss(b[i].d)), q4_0_block_avx512(&b[i], x + i * QK4_0), acc0);
        acc1 = _mm512_fmadd_ps(_mm512_set1_ps(_cvtsh_ss(b[i + 1].d)), q4_0_block_avx512(&b[i + 1], x + (i + 1) * QK4_0),
                               acc1);
    }
    if (i < nb) acc0 = _mm512_fmadd_ps(_mm512_set1_ps(_cvtsh_ss(b[i].d)), q4_0_block_avx512(&b[i], x + i * QK4_0), acc0);
    return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

/* Q4_1: d * sum(q x) + m * sum(x); the d terms and m terms in separate accumulators too */
AVX512 static inline void q4_1_block_avx512(const block_q4_1 *b, const float *x, __m512 *ad, __m512 *am) {
    const __m128i mask = _mm_set1_epi8(0x0F);
    __m128i q = _mm_loadu_si128((const __m128i *)b->qs);
    __m512 x0 = _mm512_loadu_ps(x), x1 = _mm512_loadu_ps(x + 16);
    __m512 v = _mm512_mul_ps(u8x16_to_ps(_mm_and_si128(q, mask)), x0);
    v = _mm512_fmadd_ps(u8x16_to_ps(_mm_and_si128(_mm_srli_epi16(q, 4), mask)), x1, v);
    *ad = _mm512_fmadd_ps(_mm512_set1_ps(_cvtsh_ss(b->d)), v, *ad);
    *am = _mm512_fmadd_ps(_mm512_set1_ps(_cvtsh_ss(b->m)), _mm512_add_ps(x0, x1), *am);
}

AVX512 static float dot_q4_1_avx512(const void *w, const float *x, int64_t n) {
    const block_q4_1 *b = w;
    const int64_t nb = n / QK4_1;
    __m512 ad0 = _mm512_setzero_ps(), ad1 = _mm512_setzero_ps(), am0 = _mm512_setzero_ps(), am1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 2 <= nb; i += 2) {
        q4_1_block_avx512(&b[i], x + i * QK4_1, &ad0, &am0);
        q4_1_block_avx512(&b[i + 1], x + (i + 1) * QK4_1, &ad1, &am1);
    }
    if (i < nb) q4_1_block_avx512(&b[i], x + i * QK4_1, &ad0, &am0);
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(ad0, ad1), _mm512_add_ps(am0, am1)));
}

AVX512 static inline __m512 q8_0_block_avx512(const block_q8_0 *b, const float *x) {
    __m512 v = _mm512_mul_ps(i8x16_to_ps(_mm_loadu_si128((const __m128i *)b->qs)), _mm512_loadu_ps(x));
    return _mm512_fmadd_ps(i8x16_to_ps(_mm_loadu_si128((const __m128i *)(b->qs + 16))), _mm512_loadu_ps(x + 16), v);
}

AVX512 static float dot_q8_0_avx512(const void *w, const float *x, int64_t n) {
    const block_q8_0 *b = w;
    const int64_t nb = n / QK8_0;
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 2 <= nb; i += 2) {
        acc0 = _mm512_fmadd_ps(_mm512_set1_ps(_cvtsh_ss(b[i].d)), q8_0_block_avx512(&b[i], x + i * QK8_0), acc0);
        acc1 = _mm512_fmadd_ps(_mm512_set1_ps(_cvtsh_ss(b[i + 1].d)), q8_0_block_avx512(&b[i + 1], x + (i + 1) * QK8_0),
                               acc1);
    }
    if (i < nb) acc0 = _mm512_fmadd_ps(_mm512_set1_ps(_cvtsh_ss(b[i].d)), q8_0_block_avx512(&b[i], x + i * QK8_0), acc0);
    return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

/* GGUF Q4_K: 256 = 8 sub-blocks of 32, value d*sc*q - dmin*m; qs holds sub-blocks 2j
 * (low nibbles) and 2j+1 (high nibbles) in its bytes 32j..32j+31 */
AVX512 static float dot_q4_K_avx512(const void *w, const float *x, int64_t n) {
    const block_q4_K *b = w;
    const __m128i mask = _mm_set1_epi8(0x0F);
    __m512 acc = _mm512_setzero_ps(), accm = _mm512_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float d = _cvtsh_ss(b[i].d), dmin = _cvtsh_ss(b[i].dmin);
        for (int j = 0; j < 4; j++, x += 64) {
            int sc0, m0, sc1, m1;
            get_scale_min_k4(2 * j, b[i].scales, &sc0, &m0);
            get_scale_min_k4(2 * j + 1, b[i].scales, &sc1, &m1);
            const uint8_t *q = b[i].qs + 32 * j;
            __m128i qa = _mm_loadu_si128((const __m128i *)q), qb = _mm_loadu_si128((const __m128i *)(q + 16));
            __m512 x0 = _mm512_loadu_ps(x), x1 = _mm512_loadu_ps(x + 16), x2 = _mm512_loadu_ps(x + 32),
                   x3 = _mm512_loadu_ps(x + 48);
            __m512 lo = _mm512_fmadd_ps(u8x16_to_ps(_mm_and_si128(qb, mask)), x1,
                                        _mm512_mul_ps(u8x16_to_ps(_mm_and_si128(qa, mask)), x0));
            __m512 hi = _mm512_fmadd_ps(u8x16_to_ps(_mm_and_si128(_mm_srli_epi16(qb, 4), mask)), x3,
                                        _mm512_mul_ps(u8x16_to_ps(_mm_and_si128(_mm_srli_epi16(qa, 4), mask)), x2));
            acc = _mm512_fmadd_ps(_mm512_set1_ps(d * (float)sc0), lo, acc);
            acc = _mm512_fmadd_ps(_mm512_set1_ps(d * (float)sc1), hi, acc);
            accm = _mm512_fmadd_ps(_mm512_set1_ps(dmin * (float)m0), _mm512_add_ps(x0, x1), accm);
            accm = _mm512_fmadd_ps(_mm512_set1_ps(dmin * (float)m1), _mm512_add_ps(x2, x3), accm);
        }
    }
    return _mm512_reduce_add_ps(_mm512_sub_ps(acc, accm));
}

/* GGUF Q6_K: 256 = 2 halves of 128; element 32p + l of a half is (4 bits of ql, 2 of qh) - 32,
 * scaled by d * scales[8h + 2p + l / 16] */
AVX512 static float dot_q6_K_avx512(const void *w, const float *x, int64_t n) {
    const block_q6_K *b = w;
    const __m128i m4 = _mm_set1_epi8(0x0F), m2 = _mm_set1_epi8(3), c32 = _mm_set1_epi8(32);
    __m512 acc = _mm512_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float d = _cvtsh_ss(b[i].d);
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = b[i].ql + 64 * h, *qh = b[i].qh + 32 * h;
            const int8_t *sc = b[i].scales + 8 * h;
            for (int part = 0; part < 4; part++) {
                const uint8_t *lo = ql + 32 * (part % 2);
                const int lshift = 4 * (part / 2), hshift = 2 * part;
                for (int half = 0; half < 2; half++, x += 16) {
                    __m128i l4 = _mm_loadu_si128((const __m128i *)(lo + 16 * half));
                    __m128i h2 = _mm_loadu_si128((const __m128i *)(qh + 16 * half));
                    l4 = _mm_and_si128(_mm_srl_epi16(l4, _mm_cvtsi32_si128(lshift)), m4);
                    h2 = _mm_and_si128(_mm_srl_epi16(h2, _mm_cvtsi32_si128(hshift)), m2);
                    __m128i v = _mm_sub_epi8(_mm_or_si128(l4, _mm_slli_epi16(h2, 4)), c32);
                    acc = _mm512_fmadd_ps(_mm512_set1_ps(d * (float)sc[2 * part + half]),
                                          _mm512_mul_ps(i8x16_to_ps(v), _mm512_loadu_ps(x)), acc);
                }
            }
        }
    }
    return _mm512_reduce_add_ps(acc);
}
#endif

/* 0 scalar (or NEON, whose kernels dot_neon.c chooses), 1 avx2, 2 avx512 */
static int simd_level(void) {
    const tl_cpu_level l = tl_cpu_level_get();
    return l == TL_CPU_AVX512 ? 2 : l == TL_CPU_AVX2 ? 1 : 0;
}

tl_dot_fn tl_dot_kernel(tl_dtype t) {
#ifdef __aarch64__
    if (tl_cpu_level_get() == TL_CPU_NEON) return tl_dot_kernel_neon(t);
#endif
    const int use_simd = simd_level();
    if (!use_simd) return NULL;
#ifdef TL_X86
    if (use_simd == 2) switch (t) {
        case TL_F32: return dot_f32_avx512;
        case TL_F16: return dot_f16_avx512;
        case TL_BF16: return dot_bf16_avx512;
        case TL_Q5_0: return dot_q5_0_avx2; /* memory-bound at 5.5 bits: the AVX2 kernel keeps up */
        case TL_Q5_1: return dot_q5_1_avx2;
        case TL_Q4_0: return dot_q4_0_avx512;
        case TL_Q4_1: return dot_q4_1_avx512;
        case TL_Q8_0: return dot_q8_0_avx512;
        case TL_Q4_K: return dot_q4_K_avx512;
        case TL_Q6_K: return dot_q6_K_avx512;
        default: return NULL;
        }
    switch (t) {
    case TL_F32: return dot_f32_avx2;
    case TL_F16: return dot_f16_avx2;
    case TL_BF16: return dot_bf16_avx2;
    case TL_Q5_0: return dot_q5_0_avx2;
    case TL_Q5_1: return dot_q5_1_avx2;
    case TL_Q4_0: return dot_q4_0_avx2;
    case TL_Q4_1: return dot_q4_1_avx2;
    case TL_Q8_0: return dot_q8_0_avx2;
    default: return NULL;
    }
#else
    (void)t;
    return NULL;
#endif
}

tl_exp_sum_fn tl_exp_sum_kernel(void) {
#ifdef __aarch64__
    if (tl_cpu_level_get() == TL_CPU_NEON) return tl_exp_sum_kernel_neon();
#endif
    const int use_simd = simd_level();
    if (!use_simd) return NULL;
#ifdef TL_X86
    return use_simd == 2 ? exp_sum_avx512 : exp_sum_avx2;
#else
    return NULL;
#endif
}

tl_scale_max_fn tl_scale_max_kernel(void) {
#ifdef TL_X86
    const int use_simd = simd_level();
    return use_simd == 2 ? scale_max_avx512 : use_simd == 1 ? scale_max_avx2 : NULL;
#else
    return NULL;
#endif
}

tl_gelu_glu_fn tl_gelu_glu_kernel(void) {
#ifdef TL_X86
    const int use_simd = simd_level();
    return use_simd == 2 ? gelu_glu_avx512 : use_simd == 1 ? gelu_glu_avx2 : NULL;
#else
    return NULL;
#endif
}

tl_gelu_glu_fn tl_silu_glu_kernel(void) {
#ifdef __aarch64__
    if (tl_cpu_level_get() == TL_CPU_NEON) return tl_silu_glu_kernel_neon();
#endif
#ifdef TL_X86
    const int use_simd = simd_level();
    return use_simd == 2 ? silu_glu_avx512 : use_simd == 1 ? silu_glu_avx2 : NULL;
#else
    return NULL;
#endif
}

tl_f16_widen_fn tl_f16_widen_kernel(void) {
#ifdef __aarch64__
    if (tl_cpu_level_get() == TL_CPU_NEON) return tl_f16_widen_kernel_neon();
#endif
#ifdef TL_X86
    const int use_simd = simd_level();
    return use_simd == 2 ? f16_widen_avx512 : use_simd == 1 ? f16_widen_avx2 : NULL;
#else
    return NULL;
#endif
}

tl_q8_0_widen_fn tl_q8_0_widen_kernel(void) {
#ifdef __aarch64__
    if (tl_cpu_level_get() == TL_CPU_NEON) return tl_q8_0_widen_kernel_neon();
#endif
#ifdef TL_X86
    const int use_simd = simd_level();
    if (use_simd) return use_simd == 2 ? q8_0_widen_avx512 : q8_0_widen_avx2;
#endif
    return tl_dequantize_row_q8_0;
}

bool tl_attn_rows_kernels(int hd, tl_attn_scores_rows_fn *scores, tl_attn_values_rows_fn *values) {
    *scores = NULL;
    *values = NULL;
#ifdef __aarch64__
    if (tl_cpu_level_get() == TL_CPU_NEON && hd % 4 == 0) {
        tl_attn_rows_kernels_neon(scores, values);
        return true;
    }
#endif
#ifdef TL_X86
    const int use_simd = simd_level();
    if (use_simd == 2 && hd % 16 == 0 && hd <= ATTN_ROWS_MAX_HD) {
        *scores = attn_scores_rows_avx512;
        *values = attn_values_rows_avx512;
    } else if (use_simd >= 1 && hd % 8 == 0) {
        *scores = attn_scores_rows_avx2;
        *values = attn_values_rows_avx2;
    }
#else
    (void)hd;
#endif
    return *scores != NULL;
}

bool tl_attn_rows_f16_kernels(int hd, tl_attn_scores_rows_f16_fn *scores, tl_attn_values_rows_f16_fn *values) {
    *scores = NULL;
    *values = NULL;
#ifdef TL_X86
    const int use_simd = simd_level();
    if (use_simd == 2 && hd % 16 == 0 && hd <= ATTN_ROWS_MAX_HD) {
        *scores = attn_scores_rows_f16_avx512;
        *values = attn_values_rows_f16_avx512;
    } else if (use_simd >= 1 && hd % 8 == 0 && hd <= ATTN_ROWS_MAX_HD) {
        *scores = attn_scores_rows_f16_avx2;
        *values = attn_values_rows_f16_avx2;
    }
#else
    (void)hd;
#endif
    return *scores != NULL;
}

bool tl_attn_kernels(tl_dtype kv, int hd, tl_attn_scores_fn *scores, tl_attn_values_fn *values) {
    *scores = NULL;
    *values = NULL;
    if (hd % 8 != 0 || (kv != TL_F16 && kv != TL_F32)) return false;
#ifdef __aarch64__
    if (tl_cpu_level_get() == TL_CPU_NEON) {
        tl_attn_kernels_neon(kv, scores, values);
        return true;
    }
#endif
    const int use_simd = simd_level();
    if (!use_simd) return false;
#ifdef TL_X86
    if (use_simd == 2 && hd % 16 == 0) {
        *scores = kv == TL_F16 ? attn_scores_f16_avx512 : attn_scores_f32_avx512;
        *values = kv == TL_F16 ? attn_values_f16_avx512 : attn_values_f32_avx512;
    } else {
        *scores = kv == TL_F16 ? attn_scores_f16_avx2 : attn_scores_f32_avx2;
        *values = kv == TL_F16 ? attn_values_f16_avx2 : attn_values_f32_avx2;
    }
    return true;
#else
    return false;
#endif
}

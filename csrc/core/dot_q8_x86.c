/* x86 kernels for quantized activations (dot_q8.h): AVX-512 VNNI.
 * - Prefill: a pack holds 16 weight rows, one per 32-bit lane, so vpdpbusd multiplies 4 codes
 *   of each of 16 rows by the same 4 activation bytes (broadcast) and adds them into that
 *   row's lane; a sub-block's integer sums for 16 rows land in one register with no horizontal
 *   reduction, and a tile of 16 rows x 8 activation rows keeps 8 accumulators in registers.
 * - Decode: packing costs more than the product of one activation row, so the decode kernels
 *   read 16 rows straight from their blocks (see "decode" below).
 * Both end in the same float operations per sub-block as dot_q8.c's gemm_scalar. */
#include "dot_q8.h"

#ifdef TL_Q8_X86
#include "cpu.h"
#include "fp16.h"
#include "quants.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

#define VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))
#define INLINE inline __attribute__((always_inline))
#define UNROLL _Pragma("GCC unroll 8")

/* ---------------------------------------------------------------- activations
 * Bit for bit dot_q8.c's quantize_act (through quants.c's Q8_0 and Q8_K quantizers): the
 * same float products, the same roundings, the per-block scale in scalar code. */

VNNI static INLINE __m512i as_int(__m512 v) { return _mm512_castps_si512(v); }

/* C's roundf (half away from zero) of t clamped to [-127, 127]: truncate, then step away
 * from zero where the dropped fraction (exact) is at least one half */
VNNI static INLINE __m512i round_away(__m512 t) {
    t = _mm512_min_ps(_mm512_max_ps(t, _mm512_set1_ps(-127.0f)), _mm512_set1_ps(127.0f));
    const __m512 r = _mm512_roundscale_ps(t, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __mmask16 up = _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_sub_ps(t, r)), _mm512_set1_ps(0.5f), _CMP_GE_OQ);
    const __m512 one = _mm512_castsi512_ps(
        _mm512_or_si512(_mm512_and_si512(as_int(t), _mm512_set1_epi32((int)0x80000000u)), as_int(_mm512_set1_ps(1.0f))));
    return _mm512_cvttps_epi32(_mm512_mask_add_ps(r, up, r, one));
}

/* Q8_0: d = amax / 127 rounded to fp16, q = roundf(x / d) */
VNNI static void quantize_q8_0_vnni(const float *x, int64_t k, void *dst) {
    int8_t *q = dst;
    float *ds = (float *)(q + k);
    for (int64_t i = 0; i < k; i += 32) {
        const __m512 v0 = _mm512_loadu_ps(x + i), v1 = _mm512_loadu_ps(x + i + 16);
        const float d = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1))) / 127.0f;
        const __m512 id = _mm512_set1_ps(d != 0.0f ? 1.0f / d : 0.0f);
        const __m512i q0 = round_away(_mm512_mul_ps(v0, id)), q1 = round_away(_mm512_mul_ps(v1, id));
        _mm_storeu_si128((__m128i *)(q + i), _mm512_cvtsepi32_epi8(q0));
        _mm_storeu_si128((__m128i *)(q + i + 16), _mm512_cvtsepi32_epi8(q1));
        const float dx = tl_f16_to_f32(tl_f32_to_f16(d));
        ds[i / 16] = dx;
        ds[i / 16 + 1] = dx * (float)_mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
    }
}

/* Q8_K: the first element of largest magnitude m maps to -127: q = rint(x · -127/m) (at most
 * 127), d = 1 / (-127/m); sums over sub-blocks of g */
VNNI static INLINE void quantize_q8_K(const float *x, int64_t k, void *dst, const int g) {
    int8_t *q = dst;
    float *ds = (float *)(q + k);
    for (int64_t i = 0; i < k; i += QK_K, x += QK_K) {
        __m512 amax = _mm512_setzero_ps();
        for (int j = 0; j < 16; j++) amax = _mm512_max_ps(amax, _mm512_abs_ps(_mm512_loadu_ps(x + 16 * j)));
        const __m512 top = _mm512_set1_ps(_mm512_reduce_max_ps(amax));
        int first = 0;
        for (int j = 15; j >= 0; j--) {
            const __mmask16 at = _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_loadu_ps(x + 16 * j)), top, _CMP_EQ_OQ);
            if (at) first = 16 * j + __builtin_ctz(at);
        }
        const float max = x[first], iscale = max != 0.0f ? -127.0f / max : 0.0f;
        if (!isfinite(iscale) || iscale == 0.0f) {
            memset(q + i, 0, QK_K);
            for (int s = 0; s < QK_K / g; s++) ds[2 * (i / g + s)] = ds[2 * (i / g + s) + 1] = 0.0f;
            continue;
        }
        const float d = 1.0f / iscale;
        int sum = 0;
        for (int j = 0; j < 16; j++) {
            __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + 16 * j), _mm512_set1_ps(iscale)));
            v = _mm512_max_epi32(_mm512_min_epi32(v, _mm512_set1_epi32(127)), _mm512_set1_epi32(-128));
            _mm_storeu_si128((__m128i *)(q + i + 16 * j), _mm512_cvtsepi32_epi8(v));
            sum += _mm512_reduce_add_epi32(v);
            if ((16 * j + 16) % g == 0) {
                const int64_t s = (i + 16 * j) / g;
                ds[2 * s] = d;
                ds[2 * s + 1] = d * (float)sum;
                sum = 0;
            }
        }
    }
}

VNNI static void quantize_q8_K_g32_vnni(const float *x, int64_t k, void *dst) { quantize_q8_K(x, k, dst, 32); }
VNNI static void quantize_q8_K_g16_vnni(const float *x, int64_t k, void *dst) { quantize_q8_K(x, k, dst, 16); }

/* ---------------------------------------------------------------- GEMM */

/* y[c][0..16) for nc activation rows (nc and g constants where inlined): the arithmetic of
 * dot_q8.c's gemm_scalar, 16 rows at once */
VNNI static INLINE void gemm_tile(const uint8_t *codes, const float *a, const float *b, const uint8_t *xq,
                                  size_t x_stride, const int nc, int64_t k, const int g, float *y, size_t ldy,
                                  __mmask16 keep) {
    __m512 acc[8];
    /* the loops over columns and codes unrolled, so that acc[] and wv[] live in registers */
    UNROLL for (int c = 0; c < nc; c++) acc[c] = _mm512_setzero_ps();
    for (int64_t s = 0; s < k / g; s++) {
        __m512i wv[8];
        UNROLL for (int j = 0; j < g / 4; j++) wv[j] = _mm512_loadu_si512(codes + (s * (g / 4) + j) * 64);
        const __m512 av = _mm512_loadu_ps(a + TL_Q8_LANES * s), bv = _mm512_loadu_ps(b + TL_Q8_LANES * s);
        /* the columns' integer sums side by side: nc independent vpdpbusd chains */
        __m512i sum[8];
        UNROLL for (int c = 0; c < nc; c++) sum[c] = _mm512_setzero_si512();
        UNROLL for (int j = 0; j < g / 4; j++) {
            UNROLL for (int c = 0; c < nc; c++) {
                int32_t v;
                memcpy(&v, xq + (size_t)c * x_stride + s * g + 4 * j, 4);
                sum[c] = _mm512_dpbusd_epi32(sum[c], wv[j], _mm512_set1_epi32(v));
            }
        }
        UNROLL for (int c = 0; c < nc; c++) {
            const float *ds = (const float *)(xq + (size_t)c * x_stride + k) + 2 * s;
            acc[c] = _mm512_fmadd_ps(_mm512_mul_ps(av, _mm512_set1_ps(ds[0])), _mm512_cvtepi32_ps(sum[c]), acc[c]);
            acc[c] = _mm512_fmadd_ps(bv, _mm512_set1_ps(ds[1]), acc[c]);
        }
    }
    UNROLL for (int c = 0; c < nc; c++) _mm512_mask_storeu_ps(y + (size_t)c * ldy, keep, acc[c]);
}

/* tiles of 8 activation rows (8 accumulators + 8 code registers), then 4, then 1 */
#define GEMM_VNNI(G)                                                                                                    \
    VNNI static void gemm_g##G##_vnni(const void *pack, const void *xq, size_t x_stride, int n, int64_t k, int g,      \
                                      float *y, size_t ldy, int rows) {                                                 \
        (void)g;                                                                                                        \
        const uint8_t *codes = pack, *x = xq;                                                                           \
        const float *a = (const float *)(codes + TL_Q8_LANES * k), *b = a + TL_Q8_LANES * (k / G);                      \
        const __mmask16 keep = (__mmask16)(rows >= 16 ? 0xFFFF : (1u << rows) - 1);                                     \
        int c = 0;                                                                                                      \
        for (; c + 8 <= n; c += 8)                                                                                      \
            gemm_tile(codes, a, b, x + c * x_stride, x_stride, 8, k, G, y + c * ldy, ldy, keep);                        \
        for (; c + 4 <= n; c += 4)                                                                                      \
            gemm_tile(codes, a, b, x + c * x_stride, x_stride, 4, k, G, y + c * ldy, ldy, keep);                        \
        for (; c < n; c++) gemm_tile(codes, a, b, x + c * x_stride, x_stride, 1, k, G, y + c * ldy, ldy, keep);        \
    }
GEMM_VNNI(32)
GEMM_VNNI(16)
#undef GEMM_VNNI

/* ---------------------------------------------------------------- repacks
 * Each reads the same bytes of 16 rows (rows past the last repeat it), turns 16 bytes of
 * every row into 4 registers of one 32-bit word per row (words4), and makes codes of them
 * lane by lane, bit for bit as dot_q8.c's unpack_*. (Gathers would be shorter to write, but
 * cost ~80 cycles each on the Cascade Lake this was measured on: more than the repack.) */

typedef struct {
    const uint8_t *row[16];
} rows16;

VNNI static INLINE rows16 rows_of(const void *w, size_t row_bytes, int rows) {
    rows16 r;
    for (int i = 0; i < 16; i++) r.row[i] = (const uint8_t *)w + (size_t)(i < rows ? i : rows - 1) * row_bytes;
    return r;
}

/* Sixteen row streams are more than the hardware prefetchers follow: ask for the cache
 * lines that the block [at, at + bytes) of each row reaches, PREFETCH bytes ahead (L1-resident
 * weights repack twice as fast as weights from L3). */
#define PREFETCH 256
VNNI static INLINE void prefetch_block(const rows16 *r, size_t at, size_t bytes) {
    for (size_t line = (at + PREFETCH) / 64; line <= (at + PREFETCH + bytes - 1) / 64; line++)
        if (line * 64 >= at + PREFETCH || at == 0)
            for (int i = 0; i < 16; i++) _mm_prefetch((const char *)r->row[i] + line * 64, _MM_HINT_T0);
}

/* 4 registers of 4 rows: 128-bit lane L of z[q] holds the 16 bytes at row 4q + L + at. Masked
 * broadcasts rather than inserts: they blend on port 0 or 5, inserts only on 5. */
VNNI static INLINE void rows4x4(const rows16 *r, size_t at, __m512i z[4]) {
    for (int q = 0; q < 4; q++) {
        __m512i v = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(r->row[4 * q] + at)));
        for (int j = 1; j < 4; j++)
            v = _mm512_mask_broadcast_i32x4(v, (__mmask16)(0xF << (4 * j)), _mm_loadu_si128((const __m128i *)(r->row[4 * q + j] + at)));
        z[q] = v;
    }
}

/* out[t], lane r: 32-bit word t of the 16 bytes at row r + at (a 4 x 4 transpose of words:
 * two-source permutes, then 128-bit lane shuffles) */
VNNI static INLINE void words4(const rows16 *r, size_t at, __m512i out[4]) {
    __m512i z[4];
    rows4x4(r, at, z); /* element 4j + t of z[q]: word t of row 4q + j */
    const __m512i w01 = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 1, 5, 9, 13, 17, 21, 25, 29);
    const __m512i w23 = _mm512_setr_epi32(2, 6, 10, 14, 18, 22, 26, 30, 3, 7, 11, 15, 19, 23, 27, 31);
    const __m512i a01 = _mm512_permutex2var_epi32(z[0], w01, z[1]), a23 = _mm512_permutex2var_epi32(z[0], w23, z[1]);
    const __m512i b01 = _mm512_permutex2var_epi32(z[2], w01, z[3]), b23 = _mm512_permutex2var_epi32(z[2], w23, z[3]);
    out[0] = _mm512_shuffle_i64x2(a01, b01, 0x44);
    out[1] = _mm512_shuffle_i64x2(a01, b01, 0xEE);
    out[2] = _mm512_shuffle_i64x2(a23, b23, 0x44);
    out[3] = _mm512_shuffle_i64x2(a23, b23, 0xEE);
}

/* the fp16 in the low / high half of each lane, as float */
VNNI static INLINE __m512 half_lo(__m512i v) { return _mm512_cvtph_ps(_mm512_cvtepi32_epi16(v)); }
VNNI static INLINE __m512 half_hi(__m512i v) { return half_lo(_mm512_srli_epi32(v, 16)); }

VNNI static INLINE void put(uint8_t *codes, int64_t k4, __m512i v) { _mm512_storeu_si512(codes + k4 * 64, v); }

/* the low and high nibble of every byte */
VNNI static INLINE __m512i and4(__m512i v) { return _mm512_and_si512(v, _mm512_set1_epi8(15)); }
VNNI static INLINE __m512i high4(__m512i v) { return and4(_mm512_srli_epi32(v, 4)); }

/* element j of a Q5 block: 16 when bit j of qh is set; the 4 bits from bit 4·t on, one per byte */
VNNI static INLINE __m512i q5_high(__m512i qh, int t) {
    __m512i h = _mm512_and_si512(_mm512_srli_epi32(qh, 4 * t), _mm512_set1_epi32(15));
    h = _mm512_and_si512(_mm512_mullo_epi32(h, _mm512_set1_epi32(0x00204081)), _mm512_set1_epi32(0x01010101));
    return _mm512_slli_epi32(h, 4);
}

/* the 32 codes of a 4- or 5-bit block from its 16 qs bytes: low nibbles are elements 0..15 */
VNNI static INLINE void put_nibbles(uint8_t *codes, int64_t k4, const __m512i q[4], __m512i qh, bool q5) {
    const __m512i m4 = _mm512_set1_epi8(15);
    for (int t = 0; t < 4; t++) {
        __m512i lo = _mm512_and_si512(q[t], m4), hi = _mm512_and_si512(_mm512_srli_epi32(q[t], 4), m4);
        if (q5) {
            lo = _mm512_or_si512(lo, q5_high(qh, t));
            hi = _mm512_or_si512(hi, q5_high(qh, t + 4));
        }
        put(codes, k4 + t, lo);
        put(codes, k4 + 4 + t, hi);
    }
}

/* -v with the sign bit flipped, as C's unary minus (0 - v would turn -0 into +0) */
VNNI static INLINE __m512 neg(__m512 v) {
    return _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(v), _mm512_set1_epi32((int)0x80000000u)));
}

/* The legacy formats: one sub-block of 32 a block, d (and m, qh) at the front; the bias b is
 * -8d, -16d or -128d (Q8_0: the code is q + 128, the sign bit flipped), or Q4_1/Q5_1's m */
enum legacy { Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 };
static const size_t legacy_bytes[] = {sizeof(block_q4_0), sizeof(block_q4_1), sizeof(block_q5_0), sizeof(block_q5_1),
                                      sizeof(block_q8_0)};
static const int legacy_qs_at[] = {2, 4, 6, 8, 2};

VNNI static INLINE __m512 legacy_bias(enum legacy f, __m512 d, __m512i dm) {
    if (f == Q4_1 || f == Q5_1) return half_hi(dm);
    return _mm512_mul_ps(d, _mm512_set1_ps(f == Q8_0 ? -128.0f : f == Q5_0 ? -16.0f : -8.0f));
}

VNNI static INLINE void pack_legacy(const void *w, size_t row_bytes, int rows, int64_t k, void *pack, const enum legacy f) {
    const rows16 r = rows_of(w, row_bytes, rows);
    uint8_t *codes = pack;
    float *a = (float *)(codes + TL_Q8_LANES * k), *b = a + TL_Q8_LANES * (k / 32);
    __m512i q[4];
    for (int64_t i = 0; i < k / 32; i++) {
        const size_t at = (size_t)i * legacy_bytes[f];
        prefetch_block(&r, at, legacy_bytes[f]);
        words4(&r, at, q);
        const __m512 d = half_lo(q[0]);
        _mm512_storeu_ps(a + 16 * i, d);
        _mm512_storeu_ps(b + 16 * i, legacy_bias(f, d, q[0]));
        /* Q5_0's qh straddles words 0 and 1, Q5_1's is word 1 */
        const __m512i qh = f == Q5_0 ? _mm512_or_si512(_mm512_srli_epi32(q[0], 16), _mm512_slli_epi32(q[1], 16)) : q[1];
        if (f == Q8_0) {
            for (int half = 0; half < 2; half++) {
                words4(&r, at + 2 + 16 * half, q);
                for (int t = 0; t < 4; t++) put(codes, 8 * i + 4 * half + t, _mm512_xor_si512(q[t], _mm512_set1_epi8(-128)));
            }
            continue;
        }
        words4(&r, at + legacy_qs_at[f], q);
        put_nibbles(codes, 8 * i, q, qh, f == Q5_0 || f == Q5_1);
    }
}

#define PACK_LEGACY(name, f)                                                                                            \
    VNNI static void pack_##name##_vnni(const void *w, size_t row_bytes, int rows, int64_t k, void *pack) {            \
        pack_legacy(w, row_bytes, rows, k, pack, f);                                                                    \
    }
PACK_LEGACY(q4_0, Q4_0)
PACK_LEGACY(q4_1, Q4_1)
PACK_LEGACY(q5_0, Q5_0)
PACK_LEGACY(q5_1, Q5_1)
PACK_LEGACY(q8_0, Q8_0)
#undef PACK_LEGACY

/* byte j of each lane */
VNNI static INLINE __m512i byte_of(__m512i v, int j) {
    return _mm512_and_si512(_mm512_srli_epi32(v, 8 * j), _mm512_set1_epi32(0xFF));
}

/* Q4_K's a and b of the 8 sub-blocks from the header words h (d|dmin, then the 12 scale
 * bytes; any lane order), taken apart lane-wise as get_scale_min_k4 does; sub-block s's at
 * a + s·step */
VNNI static INLINE void q4_K_scales(const __m512i h[4], float *a, float *b, int step) {
    const __m512i m6 = _mm512_set1_epi32(63);
    const __m512 d = half_lo(h[0]), dmin = half_hi(h[0]);
    for (int s = 0; s < 8; s++) {
        __m512i sc, m;
        if (s < 4) {
            sc = _mm512_and_si512(byte_of(h[1], s), m6);
            m = _mm512_and_si512(byte_of(h[2], s), m6);
        } else {
            const __m512i hi = byte_of(h[3], s - 4);
            sc = _mm512_or_si512(_mm512_and_si512(hi, _mm512_set1_epi32(15)),
                                 _mm512_slli_epi32(_mm512_srli_epi32(byte_of(h[1], s - 4), 6), 4));
            m = _mm512_or_si512(_mm512_srli_epi32(hi, 4), _mm512_slli_epi32(_mm512_srli_epi32(byte_of(h[2], s - 4), 6), 4));
        }
        _mm512_storeu_ps(a + s * step, _mm512_mul_ps(d, _mm512_cvtepi32_ps(sc)));
        _mm512_storeu_ps(b + s * step, neg(_mm512_mul_ps(dmin, _mm512_cvtepi32_ps(m))));
    }
}

/* the 5th bits of Q5_K's sub-block s: bit s of each qh byte, as 16 */
VNNI static INLINE __m512i k5_bits(__m512i qh, int s) {
    return _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(qh, s), _mm512_set1_epi8(1)), 4);
}

/* GGUF Q4_K and Q5_K (see unpack_k4): the header (first 16 bytes), Q5_K's 32 qh bytes, the qs */
VNNI static INLINE void pack_k4(const void *w, size_t row_bytes, int rows, int64_t k, void *pack, const bool q5) {
    const rows16 r = rows_of(w, row_bytes, rows);
    const size_t bytes = q5 ? sizeof(block_q5_K) : sizeof(block_q4_K), qs_at = q5 ? 48 : 16;
    uint8_t *codes = pack;
    float *a = (float *)(codes + TL_Q8_LANES * k), *b = a + TL_Q8_LANES * (k / 32);
    __m512i h[4], q[4], qh[2][4];
    for (int64_t i = 0; i < k / QK_K; i++) {
        const size_t at = (size_t)i * bytes;
        prefetch_block(&r, at, bytes);
        words4(&r, at, h);
        q4_K_scales(h, a + 16 * 8 * i, b + 16 * 8 * i, 16);
        if (q5) {
            words4(&r, at + 16, qh[0]);
            words4(&r, at + 32, qh[1]);
        }
        /* qs bytes 32u..32u+31: sub-block 2u in the low nibbles, 2u+1 in the high ones */
        for (int c = 0; c < 8; c++) {
            words4(&r, at + qs_at + 16 * c, q);
            const int s = 2 * (c / 2);
            for (int t = 0; t < 4; t++) {
                const int64_t k4 = 64 * i + 16 * (c / 2) + 4 * (c % 2) + t;
                __m512i lo = and4(q[t]), hi = high4(q[t]);
                if (q5) {
                    lo = _mm512_or_si512(lo, k5_bits(qh[c % 2][t], s));
                    hi = _mm512_or_si512(hi, k5_bits(qh[c % 2][t], s + 1));
                }
                put(codes, k4, lo);
                put(codes, k4 + 8, hi);
            }
        }
    }
}

VNNI static void pack_q4_K_vnni(const void *w, size_t row_bytes, int rows, int64_t k, void *pack) {
    pack_k4(w, row_bytes, rows, k, pack, false);
}
VNNI static void pack_q5_K_vnni(const void *w, size_t row_bytes, int rows, int64_t k, void *pack) {
    pack_k4(w, row_bytes, rows, k, pack, true);
}

/* Q6_K's a = d·scale and b = -32a of the 16 sub-blocks from d and the scale words (int8) */
VNNI static INLINE void q6_K_scales(__m512 d, const __m512i sc4[4], float *a, float *b) {
    for (int s = 0; s < 16; s++) {
        const __m512i sc = _mm512_srai_epi32(_mm512_slli_epi32(sc4[s / 4], 24 - 8 * (s % 4)), 24); /* int8 */
        const __m512 ds = _mm512_mul_ps(d, _mm512_cvtepi32_ps(sc));
        _mm512_storeu_ps(a + 16 * s, ds);
        _mm512_storeu_ps(b + 16 * s, _mm512_mul_ps(ds, _mm512_set1_ps(-32.0f)));
    }
}

/* Q6_K codes of element l + 32p of a half, bytewise from ql[l] (lo), ql[l + 32] (hi), qh[l] */
VNNI static INLINE __m512i q6_codes(__m512i lo, __m512i hi, __m512i qh, int p) {
    const __m512i m4 = _mm512_set1_epi8(15), m2 = _mm512_set1_epi8(0x30);
    const __m512i q4 = p == 0 ? lo : p == 1 ? hi : _mm512_srli_epi32(p == 2 ? lo : hi, 4);
    const __m512i q2 = p == 0 ? _mm512_slli_epi32(qh, 4) : p == 1 ? _mm512_slli_epi32(qh, 2) : p == 2 ? qh : _mm512_srli_epi32(qh, 2);
    return _mm512_or_si512(_mm512_and_si512(q4, m4), _mm512_and_si512(q2, m2));
}

/* GGUF Q6_K (see unpack_q6_K) */
VNNI static void pack_q6_K_vnni(const void *w, size_t row_bytes, int rows, int64_t k, void *pack) {
    const rows16 r = rows_of(w, row_bytes, rows);
    uint8_t *codes = pack;
    float *a = (float *)(codes + TL_Q8_LANES * k), *b = a + TL_Q8_LANES * (k / 16);
    __m512i sc4[4], lo[4], hi[4], qh[4];
    for (int64_t i = 0; i < k / QK_K; i++) {
        const size_t at = (size_t)i * sizeof(block_q6_K);
        prefetch_block(&r, at, sizeof(block_q6_K));
        words4(&r, at + 194, sc4); /* d is the high half of the last word */
        const __m512 d = half_hi(sc4[3]);
        words4(&r, at + 192, sc4);
        q6_K_scales(d, sc4, a + 16 * 16 * i, b + 16 * 16 * i);
        for (int hh = 0; hh < 2; hh++)
            for (int c = 0; c < 2; c++) { /* l = 16c .. 16c + 15 of this half */
                words4(&r, at + 64 * hh + 16 * c, lo);
                words4(&r, at + 64 * hh + 32 + 16 * c, hi);
                words4(&r, at + 128 + 32 * hh + 16 * c, qh);
                for (int t = 0; t < 4; t++)
                    for (int p = 0; p < 4; p++) put(codes, 64 * i + 32 * hh + 4 * c + t + 8 * p, q6_codes(lo[t], hi[t], qh[t], p));
            }
    }
}

/* ---------------------------------------------------------------- decode
 * 16 weight rows straight from their blocks, no pack: rows4x4 puts 16 bytes of 4 rows in each
 * register (element order within a row), vpdpbusd multiplies them by the activation's 16 bytes
 * broadcast to every 128-bit lane, and lane_sums adds each row's 4 lanes. The integer sums are
 * the GEMM's, and so are the float operations after them: the results are the same, bit for
 * bit. Lane 4L + j holds row 4j + L until the store puts rows back in order. */

/* lane 4L + j: the sum of the four 32-bit lanes of 128-bit lane L of p[j] */
VNNI static INLINE __m512i lane_sums(const __m512i p[4]) {
    const __m512i v01 = _mm512_add_epi32(_mm512_unpacklo_epi32(p[0], p[1]), _mm512_unpackhi_epi32(p[0], p[1]));
    const __m512i v23 = _mm512_add_epi32(_mm512_unpacklo_epi32(p[2], p[3]), _mm512_unpackhi_epi32(p[2], p[3]));
    return _mm512_add_epi32(_mm512_unpacklo_epi64(v01, v23), _mm512_unpackhi_epi64(v01, v23));
}

/* out[t], lane 4L + j: 32-bit word t of 128-bit lane L of z[j] (the rows4x4 order of rows) */
VNNI static INLINE void words_of(const __m512i z[4], __m512i out[4]) {
    const __m512i lo01 = _mm512_unpacklo_epi32(z[0], z[1]), hi01 = _mm512_unpackhi_epi32(z[0], z[1]);
    const __m512i lo23 = _mm512_unpacklo_epi32(z[2], z[3]), hi23 = _mm512_unpackhi_epi32(z[2], z[3]);
    out[0] = _mm512_unpacklo_epi64(lo01, lo23);
    out[1] = _mm512_unpackhi_epi64(lo01, lo23);
    out[2] = _mm512_unpacklo_epi64(hi01, hi23);
    out[3] = _mm512_unpackhi_epi64(hi01, hi23);
}

/* acc[c] += one sub-block for each of n activation rows: codes c0 (and c1, for sub-blocks of
 * 32) in rows4x4 order against the activation bytes at x + c·x_stride + e, scaled as in gemm_tile */
VNNI static INLINE void gemv_sub(__m512 *acc, const int n, const __m512i c0[4], const __m512i c1[4], const int g,
                                 const uint8_t *x, size_t x_stride, int64_t e, const float *ds, size_t ds_at, __m512 a,
                                 __m512 b) {
    UNROLL for (int c = 0; c < n; c++) {
        const uint8_t *q = x + (size_t)c * x_stride + e;
        __m512i p[4];
        const __m512i x0 = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)q));
        UNROLL for (int j = 0; j < 4; j++) p[j] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), c0[j], x0);
        if (g == 32) {
            const __m512i x1 = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(q + 16)));
            UNROLL for (int j = 0; j < 4; j++) p[j] = _mm512_dpbusd_epi32(p[j], c1[j], x1);
        }
        const float *d = (const float *)((const uint8_t *)ds + (size_t)c * x_stride) + ds_at;
        acc[c] = _mm512_fmadd_ps(_mm512_mul_ps(a, _mm512_set1_ps(d[0])), _mm512_cvtepi32_ps(lane_sums(p)), acc[c]);
        acc[c] = _mm512_fmadd_ps(b, _mm512_set1_ps(d[1]), acc[c]);
    }
}

/* the rows of acc[c] back in order, stored for rows < rows */
VNNI static INLINE void gemv_store(const __m512 *acc, const int n, float *y, size_t ldy, int rows) {
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    const __mmask16 keep = (__mmask16)(rows >= 16 ? 0xFFFF : (1u << rows) - 1);
    for (int c = 0; c < n; c++) _mm512_mask_storeu_ps(y + (size_t)c * ldy, keep, _mm512_permutexvar_ps(order, acc[c]));
}

/* 16 bytes of 5th bits from a Q5 block's qh (the first 32-bit word of each 128-bit lane): bit
 * j (j = 16·half + t) to byte t as 16 */
VNNI static INLINE __m512i q5_bits(__m512i qh, int half) {
    const __m512i idx = half ? _mm512_set4_epi32(0x03030303, 0x03030303, 0x02020202, 0x02020202)
                             : _mm512_set4_epi32(0x01010101, 0x01010101, 0, 0);
    const __mmask64 set = _mm512_test_epi8_mask(_mm512_shuffle_epi8(qh, idx), _mm512_set1_epi64(0x8040201008040201));
    return _mm512_maskz_mov_epi8(set, _mm512_set1_epi8(16));
}

/* the legacy formats (see pack_legacy) */
VNNI static INLINE void gemv_legacy(const rows16 *r, int64_t k, const uint8_t *x, size_t xs, const int n, float *y,
                                    size_t ldy, int rows, const enum legacy f) {
    __m512 acc[TL_Q8_GEMV_MAX];
    for (int c = 0; c < n; c++) acc[c] = _mm512_setzero_ps();
    for (int64_t i = 0; i < k / 32; i++) {
        const size_t at = (size_t)i * legacy_bytes[f];
        prefetch_block(r, at, legacy_bytes[f]);
        __m512i z[4], lo[4], hi[4], hz[4], dw[4];
        rows4x4(r, at, z); /* d (and m, qh) at the front */
        words_of(z, dw);
        const __m512 d = half_lo(dw[0]);
        const __m512 b = legacy_bias(f, d, dw[0]);
        if (f == Q5_0) rows4x4(r, at + 2, hz);
        if (f == Q5_1)
            for (int j = 0; j < 4; j++) hz[j] = _mm512_srli_epi64(z[j], 32); /* qh to the first word */
        rows4x4(r, at + legacy_qs_at[f], z);
        if (f == Q8_0) {
            rows4x4(r, at + 18, hi);
            for (int j = 0; j < 4; j++) {
                lo[j] = _mm512_xor_si512(z[j], _mm512_set1_epi8(-128));
                hi[j] = _mm512_xor_si512(hi[j], _mm512_set1_epi8(-128));
            }
        } else {
            for (int j = 0; j < 4; j++) {
                lo[j] = and4(z[j]);
                hi[j] = high4(z[j]);
                if (f == Q5_0 || f == Q5_1) {
                    lo[j] = _mm512_or_si512(lo[j], q5_bits(hz[j], 0));
                    hi[j] = _mm512_or_si512(hi[j], q5_bits(hz[j], 1));
                }
            }
        }
        gemv_sub(acc, n, lo, hi, 32, x, xs, 32 * i, (const float *)(x + k), 2 * (size_t)i, d, b);
    }
    gemv_store(acc, n, y, ldy, rows);
}

/* Q4_K and Q5_K: per super-block the header's scales (any lane order: words_of's), Q5_K's qh,
 * then 4 times 32 qs bytes: sub-block 2u in their low nibbles, 2u + 1 in the high ones */
VNNI static INLINE void gemv_k4(const rows16 *r, int64_t k, const uint8_t *x, size_t xs, const int n, float *y,
                                size_t ldy, int rows, const bool q5) {
    __m512 acc[TL_Q8_GEMV_MAX];
    for (int c = 0; c < n; c++) acc[c] = _mm512_setzero_ps();
    const size_t bytes = q5 ? sizeof(block_q5_K) : sizeof(block_q4_K), qs_at = q5 ? 48 : 16;
    float a[8 * 16], b[8 * 16];
    for (int64_t i = 0; i < k / QK_K; i++) {
        const size_t at = (size_t)i * bytes;
        prefetch_block(r, at, bytes);
        __m512i z[4], h[4], z1[4], lo[4], hi[4], qh0[4], qh1[4];
        rows4x4(r, at, z);
        words_of(z, h);
        q4_K_scales(h, a, b, 16);
        if (q5) {
            rows4x4(r, at + 16, qh0);
            rows4x4(r, at + 32, qh1);
        }
        for (int u = 0; u < 4; u++) {
            rows4x4(r, at + qs_at + 32 * u, z);
            rows4x4(r, at + qs_at + 16 + 32 * u, z1);
            for (int half = 0; half < 2; half++) {
                const int64_t s = 8 * i + 2 * u + half;
                for (int j = 0; j < 4; j++) {
                    lo[j] = half ? high4(z[j]) : and4(z[j]);
                    hi[j] = half ? high4(z1[j]) : and4(z1[j]);
                    if (q5) {
                        lo[j] = _mm512_or_si512(lo[j], k5_bits(qh0[j], 2 * u + half));
                        hi[j] = _mm512_or_si512(hi[j], k5_bits(qh1[j], 2 * u + half));
                    }
                }
                gemv_sub(acc, n, lo, hi, 32, x, xs, 32 * s, (const float *)(x + k), 2 * (size_t)s,
                         _mm512_loadu_ps(a + 32 * u + 16 * half), _mm512_loadu_ps(b + 32 * u + 16 * half));
            }
        }
    }
    gemv_store(acc, n, y, ldy, rows);
}

/* Q6_K: sub-blocks of 16; element l + 32p of a half from ql[l], ql[l + 32], qh[l] (q6_codes) */
VNNI static INLINE void gemv_q6_K(const rows16 *r, int64_t k, const uint8_t *x, size_t xs, const int n, float *y,
                                  size_t ldy, int rows) {
    __m512 acc[TL_Q8_GEMV_MAX];
    for (int c = 0; c < n; c++) acc[c] = _mm512_setzero_ps();
    float a[16 * 16], b[16 * 16];
    for (int64_t i = 0; i < k / QK_K; i++) {
        const size_t at = (size_t)i * sizeof(block_q6_K);
        prefetch_block(r, at, sizeof(block_q6_K));
        __m512i z[4], sc4[4], lo[2][4], hi[2][4], qh[2][4], cd[4];
        rows4x4(r, at + 194, z);
        words_of(z, sc4);
        const __m512 d = half_hi(sc4[3]);
        rows4x4(r, at + 192, z);
        words_of(z, sc4);
        q6_K_scales(d, sc4, a, b);
        for (int hh = 0; hh < 2; hh++) {
            /* both 16-byte halves of ql[l], ql[l + 32] and qh[l] first: sub-blocks go in order */
            for (int c16 = 0; c16 < 2; c16++) {
                rows4x4(r, at + 64 * hh + 16 * c16, lo[c16]);
                rows4x4(r, at + 64 * hh + 32 + 16 * c16, hi[c16]);
                rows4x4(r, at + 128 + 32 * hh + 16 * c16, qh[c16]);
            }
            for (int p = 0; p < 4; p++)
                for (int c16 = 0; c16 < 2; c16++) {
                    for (int j = 0; j < 4; j++) cd[j] = q6_codes(lo[c16][j], hi[c16][j], qh[c16][j], p);
                    const int sb = 8 * hh + 2 * p + c16, s = 16 * (int)i + sb;
                    gemv_sub(acc, n, cd, cd, 16, x, xs, 16 * (int64_t)s, (const float *)(x + k), 2 * (size_t)s,
                             _mm512_loadu_ps(a + 16 * sb), _mm512_loadu_ps(b + 16 * sb));
                }
        }
    }
    gemv_store(acc, n, y, ldy, rows);
}

/* ---------------------------------------------------------------- interleaved rows
 * One group of 16 rows as tl_q8_interleave lays them out: every register a plain 64-byte load
 * with row r in lane r, so vpdpbusd adds 4 codes of each row into its own lane (as in the
 * GEMM) and no lane sums or gathers are needed; the sub-blocks and the float operations after
 * them are those of gemm_tile, in the same order. */

/* Every line of a unit is asked for AHEAD bytes before it is read: one stream is what the
 * hardware prefetchers follow best, and yet this adds a fifth from memory (Q4_K on one thread:
 * 8.9 GB/s without; measured with a unit's prefetches bunched, 1 KB ahead -1%, 3-4 KB best,
 * 8 KB -3%, into L2 only -7%, non-temporal -40%). */
#define AHEAD 4096
VNNI static INLINE void prefetch_unit(const uint8_t *p, size_t unit) {
    for (size_t l = 0; l < unit; l += 64) _mm_prefetch((const char *)p + AHEAD + l, _MM_HINT_T0);
}

/* lines [first, first + count) of the unit at p, AHEAD bytes on: the decode kernels spread a
 * unit's prefetches over its sub-blocks (all at once, they wait for fill buffers and hold up
 * the arithmetic behind them) */
VNNI static INLINE void prefetch_lines(const uint8_t *p, int first, int count) {
    for (int l = first; l < first + count; l++) _mm_prefetch((const char *)p + AHEAD + 64 * l, _MM_HINT_T0);
}

/* byte j of every lane of v as int32 (zero-extended) */
VNNI static INLINE __m512i byte_u(__m512i v, int j) {
    return j == 3 ? _mm512_srli_epi32(v, 24) : _mm512_and_si512(_mm512_srli_epi32(v, 8 * j), _mm512_set1_epi32(0xFF));
}

/* acc[c] += one sub-block for n activation rows: nw registers of 4 codes a lane against the
 * activation words at x + c·xs + e (4 bytes each, broadcast), two vpdpbusd chains */
VNNI static INLINE void sub16(__m512 *acc, const int n, const __m512i *cd, const int nw, const uint8_t *x, size_t xs,
                              int64_t e, const float *ds, size_t ds_at, __m512 a, __m512 b) {
    UNROLL for (int c = 0; c < n; c++) {
        const uint8_t *q = x + (size_t)c * xs + e;
        __m512i p0 = _mm512_setzero_si512(), p1 = _mm512_setzero_si512();
        UNROLL for (int j = 0; j < nw; j += 2) {
            int32_t v0, v1;
            memcpy(&v0, q + 4 * j, 4);
            memcpy(&v1, q + 4 * j + 4, 4);
            p0 = _mm512_dpbusd_epi32(p0, cd[j], _mm512_set1_epi32(v0));
            p1 = _mm512_dpbusd_epi32(p1, cd[j + 1], _mm512_set1_epi32(v1));
        }
        const float *d = (const float *)((const uint8_t *)ds + (size_t)c * xs) + ds_at;
        acc[c] = _mm512_fmadd_ps(_mm512_mul_ps(a, _mm512_set1_ps(d[0])), _mm512_cvtepi32_ps(_mm512_add_epi32(p0, p1)), acc[c]);
        acc[c] = _mm512_fmadd_ps(b, _mm512_set1_ps(d[1]), acc[c]);
    }
}

VNNI static INLINE void store16(const __m512 *acc, const int n, float *y, size_t ldy) {
    for (int c = 0; c < n; c++) _mm512_storeu_ps(y + (size_t)c * ldy, acc[c]);
}

/* Q4_K and Q5_K: unit words 0..3 the header (d | dmin, then the 12 scale bytes), Q5_K's words
 * 4..11 its qh bytes (bit s of qh[l]: the 5th bit of element l of sub-block s), then words
 * qs + 8u + j the qs bytes 32u + 4j.. (sub-block 2u in the low nibbles, 2u + 1 in the high
 * ones). The scales as get_scale_min_k4 takes them apart, bytewise for the 8 sub-blocks at
 * once: sc[0..3] and m[0..3] are the low 6 bits of scale bytes 0..3 and 4..7; sc[4..7] and
 * m[4..7] the nibbles of bytes 8..11 with the top 2 bits of bytes 0..3 and 4..7 above them. */
VNNI static INLINE void gemv_k4_16(const uint8_t *w, int64_t k, const uint8_t *x, size_t xs, const int n, float *y,
                                   size_t ldy, const bool q5) {
    const size_t unit = (q5 ? 44 : 36) * 64, qs = q5 ? 12 : 4;
    const __m512i m6 = _mm512_set1_epi8(63), m4 = _mm512_set1_epi8(15), top = _mm512_set1_epi8(0x30);
    __m512 acc[TL_Q8_GEMV_MAX];
    for (int c = 0; c < n; c++) acc[c] = _mm512_setzero_ps();
    for (int64_t i = 0; i < k / QK_K; i++) {
        const uint8_t *p = w + (size_t)i * unit;
        const __m512i h0 = _mm512_loadu_si512(p), h1 = _mm512_loadu_si512(p + 64), h2 = _mm512_loadu_si512(p + 128),
                      h3 = _mm512_loadu_si512(p + 192);
        const __m512 d = half_lo(h0), dmin = half_hi(h0);
        __m512i sc[4], m[4]; /* u: the scales and mins of sub-blocks 2u, 2u + 1 in bytes 0, 1 */
        sc[0] = _mm512_and_si512(h1, m6), m[0] = _mm512_and_si512(h2, m6);
        /* (h3 & 15) | ((h1 >> 2) & 0x30): a bitwise select under the mask 15 */
        sc[2] = _mm512_ternarylogic_epi32(m4, h3, _mm512_and_si512(_mm512_srli_epi32(h1, 2), top), 0xCA);
        m[2] = _mm512_ternarylogic_epi32(m4, _mm512_srli_epi32(h3, 4), _mm512_and_si512(_mm512_srli_epi32(h2, 2), top), 0xCA);
        sc[1] = _mm512_srli_epi32(sc[0], 16), m[1] = _mm512_srli_epi32(m[0], 16);
        sc[3] = _mm512_srli_epi32(sc[2], 16), m[3] = _mm512_srli_epi32(m[2], 16);
        /* one u a trip, not unrolled: the loop body then fits the decoded-uop cache (unrolled
         * 4 times it ran from the legacy decoders, ~15% slower) */
        for (int u = 0; u < 4; u++) {
            prefetch_lines(p, (int)unit / 256 * u, (int)unit / 256);
            __m512i v[8], h5[8];
            UNROLL for (int j = 0; j < 8; j++) v[j] = _mm512_loadu_si512(p + 64 * (qs + 8 * u + j));
            if (q5) /* bits 2u, 2u + 1 of every qh byte to bits 0, 1 */
                UNROLL for (int j = 0; j < 8; j++) h5[j] = _mm512_srlv_epi32(_mm512_loadu_si512(p + 64 * (4 + j)), _mm512_set1_epi32(2 * u));
            UNROLL for (int half = 0; half < 2; half++) {
                __m512i cd[8];
                UNROLL for (int j = 0; j < 8; j++) {
                    cd[j] = _mm512_and_si512(half ? _mm512_srli_epi32(v[j], 4) : v[j], m4);
                    if (q5) /* cd | (h5 << (4 - half)) & 16 */
                        cd[j] = _mm512_ternarylogic_epi32(cd[j], _mm512_slli_epi32(h5[j], 4 - half), _mm512_set1_epi8(16), 0xF8);
                }
                const __m512 a = _mm512_mul_ps(d, _mm512_cvtepi32_ps(byte_u(sc[u], half)));
                const __m512 b = neg(_mm512_mul_ps(dmin, _mm512_cvtepi32_ps(byte_u(m[u], half))));
                const int64_t s = 8 * i + 2 * u + half;
                sub16(acc, n, cd, 8, x, xs, 32 * s, (const float *)(x + k), 2 * (size_t)s, a, b);
            }
        }
    }
    store16(acc, n, y, ldy);
}

/* Q6_K: unit words 0..31 the ql bytes, 32..47 qh, 48..51 the int8 scales; d after the units.
 * Element l + 32p of half h (l < 32): the nibble p / 2 of ql[64h + 32(p % 2) + l], bits 2p, 2p+1
 * of qh[32h + l] (q6_codes) */
VNNI static INLINE void gemv_q6_K_16(const uint8_t *w, int64_t k, const uint8_t *x, size_t xs, const int n, float *y,
                                     size_t ldy) {
    const size_t unit = 52 * 64;
    const int64_t nb = k / QK_K;
    __m512 acc[TL_Q8_GEMV_MAX];
    for (int c = 0; c < n; c++) acc[c] = _mm512_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *p = w + (size_t)i * unit;
        const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(w + (size_t)nb * unit + 32 * (size_t)i)));
        /* the halves not unrolled: the loop body then fits the decoded-uop cache */
        for (int h = 0; h < 2; h++) UNROLL for (int pp = 0; pp < 4; pp++) UNROLL for (int half = 0; half < 2; half++) {
            const int sb = 8 * h + 2 * pp + half, j0 = 4 * half;
            if (sb % 2 == 0) prefetch_lines(p, 52 * sb / 16, 52 * (sb + 2) / 16 - 52 * sb / 16);
            __m512i cd[4];
            UNROLL for (int j = 0; j < 4; j++) {
                const __m512i ql = _mm512_loadu_si512(p + 64 * (16 * h + 8 * (pp % 2) + j0 + j));
                const __m512i qh = _mm512_loadu_si512(p + 64 * (32 + 8 * h + j0 + j));
                cd[j] = q6_codes(ql, ql, qh, pp); /* ql holds ql[l] or ql[l + 32], whichever p takes */
            }
            const __m512i scw = _mm512_loadu_si512(p + 64 * (48 + sb / 4));
            const __m512i sc = _mm512_srai_epi32(_mm512_slli_epi32(scw, 24 - 8 * (sb % 4)), 24); /* int8 */
            const __m512 a = _mm512_mul_ps(d, _mm512_cvtepi32_ps(sc)), b = _mm512_mul_ps(a, _mm512_set1_ps(-32.0f));
            const int64_t s = 16 * i + sb;
            sub16(acc, n, cd, 4, x, xs, 16 * s, (const float *)(x + k), 2 * (size_t)s, a, b);
        }
    }
    store16(acc, n, y, ldy);
}

/* The legacy formats: block i's unit of legacy_words 64-byte registers at w + i·unit (Q4_1 and
 * Q5_1: first the word d | m; Q5_0 and Q5_1: then the qh word; then the 4 qs words, Q8_0's 8),
 * Q4_0, Q5_0 and Q8_0's fp16 d of the 16 rows at w + nb·unit + 32i. A block takes 16 times
 * its bytes of the group, in one place or two. */
static const int legacy_words[] = {4, 5, 5, 6, 8};

/* the codes of block i for elements 4j.. in cd[j], as pack_legacy makes them */
VNNI static INLINE void legacy16_codes(const uint8_t *p, const enum legacy f, __m512i cd[8]) {
    if (f == Q8_0) {
        UNROLL for (int j = 0; j < 8; j++) cd[j] = _mm512_xor_si512(_mm512_loadu_si512(p + 64 * j), _mm512_set1_epi8(-128));
        return;
    }
    const int qs = f == Q4_0 ? 0 : f == Q5_1 ? 2 : 1; /* the first qs word */
    UNROLL for (int t = 0; t < 4; t++) { /* low nibbles: elements 4t.., high nibbles: 16 + 4t.. */
        const __m512i v = _mm512_loadu_si512(p + 64 * (qs + t));
        cd[t] = and4(v), cd[4 + t] = high4(v);
    }
    if (f == Q5_0 || f == Q5_1) { /* + 16 where bit j of the row's qh is set, for element j */
        const __m512i qh = _mm512_loadu_si512(p + 64 * (qs - 1));
        UNROLL for (int q = 0; q < 4; q++) { /* qh byte q: the bits of codes 8q.. (cd[2q], cd[2q + 1]) */
            const __m512i o = _mm512_set1_epi8((char)q);
            const __m512i bq = _mm512_shuffle_epi8(qh, _mm512_add_epi8(_mm512_set4_epi32(0x0C0C0C0C, 0x08080808, 0x04040404, 0), o));
            UNROLL for (int h = 0; h < 2; h++) {
                const __mmask64 set = _mm512_test_epi8_mask(bq, _mm512_set1_epi32(h ? (int)0x80402010 : 0x08040201));
                cd[2 * q + h] = _mm512_mask_add_epi8(cd[2 * q + h], set, cd[2 * q + h], _mm512_set1_epi8(16));
            }
        }
    }
}

/* block i's a and b: legacy_bias of d */
VNNI static INLINE void legacy16_scales(const uint8_t *w, int64_t i, int64_t nb, const enum legacy f, __m512 *a, __m512 *b) {
    const size_t unit = 64 * (size_t)legacy_words[f];
    __m512i dm = _mm512_setzero_si512();
    if (f == Q4_1 || f == Q5_1) {
        dm = _mm512_loadu_si512(w + (size_t)i * unit);
        *a = half_lo(dm);
    } else {
        *a = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(w + (size_t)nb * unit + 32 * (size_t)i)));
    }
    *b = legacy_bias(f, *a, dm);
}

VNNI static INLINE void gemv_legacy_16(const uint8_t *w, int64_t k, const uint8_t *x, size_t xs, const int n, float *y,
                                       size_t ldy, const enum legacy f) {
    const size_t unit = 64 * (size_t)legacy_words[f], span = 16 * legacy_bytes[f];
    const int64_t nb = k / 32;
    __m512 acc[TL_Q8_GEMV_MAX];
    for (int c = 0; c < n; c++) acc[c] = _mm512_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        /* the group's bytes in order, a block's share at a time, wherever they lie */
        for (size_t l = ((size_t)i * span + 63) / 64 * 64; l < (size_t)(i + 1) * span; l += 64)
            _mm_prefetch((const char *)w + AHEAD + l, _MM_HINT_T0);
        __m512i cd[8];
        __m512 a, b;
        legacy16_codes(w + (size_t)i * unit, f, cd);
        legacy16_scales(w, i, nb, f, &a, &b);
        sub16(acc, n, cd, 8, x, xs, 32 * i, (const float *)(x + k), 2 * (size_t)i, a, b);
    }
    store16(acc, n, y, ldy);
}

VNNI static INLINE void pack16_legacy(const void *w, int64_t k, void *pack, const enum legacy f) {
    const size_t unit = 64 * (size_t)legacy_words[f];
    const int64_t nb = k / 32;
    uint8_t *codes = pack;
    float *a = (float *)(codes + TL_Q8_LANES * k), *b = a + TL_Q8_LANES * nb;
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *p = (const uint8_t *)w + (size_t)i * unit;
        prefetch_unit(p, unit);
        __m512i cd[8];
        __m512 av, bv;
        legacy16_codes(p, f, cd);
        legacy16_scales(w, i, nb, f, &av, &bv);
        for (int j = 0; j < 8; j++) put(codes, 8 * i + j, cd[j]);
        _mm512_storeu_ps(a + 16 * i, av);
        _mm512_storeu_ps(b + 16 * i, bv);
    }
}

#define PACK16_LEGACY(name, f)                                                                                          \
    VNNI static void pack16_##name##_vnni(const void *w, size_t row_bytes, int rows, int64_t k, void *pack) {          \
        (void)row_bytes, (void)rows;                                                                                    \
        pack16_legacy(w, k, pack, f);                                                                                   \
    }
PACK16_LEGACY(q4_0, Q4_0)
PACK16_LEGACY(q4_1, Q4_1)
PACK16_LEGACY(q5_0, Q5_0)
PACK16_LEGACY(q5_1, Q5_1)
PACK16_LEGACY(q8_0, Q8_0)
#undef PACK16_LEGACY

/* The packs of the GEMM (prefill) from one group: the same codes, a and b as pack_k4 and
 * pack_q6_K_vnni make from the blocks */
VNNI static INLINE void pack16_k4(const void *w, int64_t k, void *pack, const bool q5) {
    const size_t unit = (q5 ? 44 : 36) * 64, qs = q5 ? 12 : 4;
    uint8_t *codes = pack;
    float *a = (float *)(codes + TL_Q8_LANES * k), *b = a + TL_Q8_LANES * (k / 32);
    for (int64_t i = 0; i < k / QK_K; i++) {
        const uint8_t *p = (const uint8_t *)w + (size_t)i * unit;
        prefetch_unit(p, unit);
        __m512i h[4];
        for (int t = 0; t < 4; t++) h[t] = _mm512_loadu_si512(p + 64 * t);
        q4_K_scales(h, a + 16 * 8 * i, b + 16 * 8 * i, 16);
        for (int u = 0; u < 4; u++)
            for (int j = 0; j < 8; j++) {
                const __m512i v = _mm512_loadu_si512(p + 64 * (qs + 8 * u + j));
                __m512i lo = and4(v), hi = high4(v);
                if (q5) {
                    const __m512i qh = _mm512_loadu_si512(p + 64 * (4 + j));
                    lo = _mm512_or_si512(lo, k5_bits(qh, 2 * u));
                    hi = _mm512_or_si512(hi, k5_bits(qh, 2 * u + 1));
                }
                put(codes, 64 * i + 16 * u + j, lo);
                put(codes, 64 * i + 16 * u + 8 + j, hi);
            }
    }
}

VNNI static void pack16_q4_K_vnni(const void *w, size_t row_bytes, int rows, int64_t k, void *pack) {
    (void)row_bytes, (void)rows;
    pack16_k4(w, k, pack, false);
}
VNNI static void pack16_q5_K_vnni(const void *w, size_t row_bytes, int rows, int64_t k, void *pack) {
    (void)row_bytes, (void)rows;
    pack16_k4(w, k, pack, true);
}

VNNI static void pack16_q6_K_vnni(const void *w, size_t row_bytes, int rows, int64_t k, void *pack) {
    (void)row_bytes, (void)rows;
    const size_t unit = 52 * 64;
    const int64_t nb = k / QK_K;
    uint8_t *codes = pack;
    float *a = (float *)(codes + TL_Q8_LANES * k), *b = a + TL_Q8_LANES * (k / 16);
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *p = (const uint8_t *)w + (size_t)i * unit;
        prefetch_unit(p, unit);
        const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint8_t *)w + (size_t)nb * unit + 32 * (size_t)i)));
        __m512i sc4[4];
        for (int t = 0; t < 4; t++) sc4[t] = _mm512_loadu_si512(p + 64 * (48 + t));
        q6_K_scales(d, sc4, a + 16 * 16 * i, b + 16 * 16 * i);
        for (int h = 0; h < 2; h++)
            for (int pp = 0; pp < 4; pp++)
                for (int j = 0; j < 8; j++) {
                    const __m512i ql = _mm512_loadu_si512(p + 64 * (16 * h + 8 * (pp % 2) + j));
                    const __m512i qh = _mm512_loadu_si512(p + 64 * (32 + 8 * h + j));
                    put(codes, 64 * i + 32 * h + 8 * pp + j, q6_codes(ql, ql, qh, pp));
                }
    }
}

/* one entry per format, n made a constant for each count of activation rows */
#define GEMV_VNNI(name, call)                                                                                           \
    VNNI static void gemv_##name##_vnni(const void *w, size_t row_bytes, int rows, int64_t k, const void *xq,          \
                                        size_t xs, int n, float *y, size_t ldy) {                                      \
        const rows16 rr = rows_of(w, row_bytes, rows), *r = &rr;                                                        \
        const uint8_t *x = xq;                                                                                          \
        TL_Q8_BY_ROWS(n, call);                                                                                         \
    }
#define CALL_Q4_0(n) gemv_legacy(r, k, x, xs, n, y, ldy, rows, Q4_0)
#define CALL_Q4_1(n) gemv_legacy(r, k, x, xs, n, y, ldy, rows, Q4_1)
#define CALL_Q5_0(n) gemv_legacy(r, k, x, xs, n, y, ldy, rows, Q5_0)
#define CALL_Q5_1(n) gemv_legacy(r, k, x, xs, n, y, ldy, rows, Q5_1)
#define CALL_Q8_0(n) gemv_legacy(r, k, x, xs, n, y, ldy, rows, Q8_0)
#define CALL_Q4_K(n) gemv_k4(r, k, x, xs, n, y, ldy, rows, false)
#define CALL_Q5_K(n) gemv_k4(r, k, x, xs, n, y, ldy, rows, true)
#define CALL_Q6_K(n) gemv_q6_K(r, k, x, xs, n, y, ldy, rows)
GEMV_VNNI(q4_0, CALL_Q4_0)
GEMV_VNNI(q4_1, CALL_Q4_1)
GEMV_VNNI(q5_0, CALL_Q5_0)
GEMV_VNNI(q5_1, CALL_Q5_1)
GEMV_VNNI(q8_0, CALL_Q8_0)
GEMV_VNNI(q4_K, CALL_Q4_K)
GEMV_VNNI(q5_K, CALL_Q5_K)
GEMV_VNNI(q6_K, CALL_Q6_K)
#undef GEMV_VNNI

/* the same for interleaved rows: rows is always 16 there */
#define GEMV_VNNI(name, call)                                                                                           \
    VNNI static void gemv16_##name##_vnni(const void *w, size_t row_bytes, int rows, int64_t k, const void *xq,        \
                                          size_t xs, int n, float *y, size_t ldy) {                                    \
        (void)row_bytes, (void)rows;                                                                                    \
        const uint8_t *x = xq;                                                                                          \
        TL_Q8_BY_ROWS(n, call);                                                                                         \
    }
#define CALL16_Q4_0(n) gemv_legacy_16(w, k, x, xs, n, y, ldy, Q4_0)
#define CALL16_Q4_1(n) gemv_legacy_16(w, k, x, xs, n, y, ldy, Q4_1)
#define CALL16_Q5_0(n) gemv_legacy_16(w, k, x, xs, n, y, ldy, Q5_0)
#define CALL16_Q5_1(n) gemv_legacy_16(w, k, x, xs, n, y, ldy, Q5_1)
#define CALL16_Q8_0(n) gemv_legacy_16(w, k, x, xs, n, y, ldy, Q8_0)
#define CALL16_Q4_K(n) gemv_k4_16(w, k, x, xs, n, y, ldy, false)
#define CALL16_Q5_K(n) gemv_k4_16(w, k, x, xs, n, y, ldy, true)
#define CALL16_Q6_K(n) gemv_q6_K_16(w, k, x, xs, n, y, ldy)
GEMV_VNNI(q4_0, CALL16_Q4_0)
GEMV_VNNI(q4_1, CALL16_Q4_1)
GEMV_VNNI(q5_0, CALL16_Q5_0)
GEMV_VNNI(q5_1, CALL16_Q5_1)
GEMV_VNNI(q8_0, CALL16_Q8_0)
GEMV_VNNI(q4_K, CALL16_Q4_K)
GEMV_VNNI(q5_K, CALL16_Q5_K)
GEMV_VNNI(q6_K, CALL16_Q6_K)
#undef CALL16_Q4_0
#undef CALL16_Q4_1
#undef CALL16_Q5_0
#undef CALL16_Q5_1
#undef CALL16_Q8_0
#undef CALL16_Q4_K
#undef CALL16_Q5_K
#undef CALL16_Q6_K
#undef CALL_Q4_0
#undef CALL_Q4_1
#undef CALL_Q5_0
#undef CALL_Q5_1
#undef CALL_Q8_0
#undef CALL_Q4_K
#undef CALL_Q5_K
#undef CALL_Q6_K
#undef GEMV_VNNI

bool tl_q8_kernels_avx512(tl_dtype t, tl_q8_kernels *out) {
    if (!tl_cpu_has(TL_CPU_FEAT_AVX512_VNNI)) return false;
    tl_q8_pack_fn pack, pack16;
    tl_q8_gemv_fn gemv, gemv16;
    switch (t) {
    case TL_Q4_0: pack = pack_q4_0_vnni, gemv = gemv_q4_0_vnni, pack16 = pack16_q4_0_vnni, gemv16 = gemv16_q4_0_vnni; break;
    case TL_Q4_1: pack = pack_q4_1_vnni, gemv = gemv_q4_1_vnni, pack16 = pack16_q4_1_vnni, gemv16 = gemv16_q4_1_vnni; break;
    case TL_Q5_0: pack = pack_q5_0_vnni, gemv = gemv_q5_0_vnni, pack16 = pack16_q5_0_vnni, gemv16 = gemv16_q5_0_vnni; break;
    case TL_Q5_1: pack = pack_q5_1_vnni, gemv = gemv_q5_1_vnni, pack16 = pack16_q5_1_vnni, gemv16 = gemv16_q5_1_vnni; break;
    case TL_Q8_0: pack = pack_q8_0_vnni, gemv = gemv_q8_0_vnni, pack16 = pack16_q8_0_vnni, gemv16 = gemv16_q8_0_vnni; break;
    case TL_Q4_K: pack = pack_q4_K_vnni, gemv = gemv_q4_K_vnni, pack16 = pack16_q4_K_vnni, gemv16 = gemv16_q4_K_vnni; break;
    case TL_Q5_K: pack = pack_q5_K_vnni, gemv = gemv_q5_K_vnni, pack16 = pack16_q5_K_vnni, gemv16 = gemv16_q5_K_vnni; break;
    case TL_Q6_K: pack = pack_q6_K_vnni, gemv = gemv_q6_K_vnni, pack16 = pack16_q6_K_vnni, gemv16 = gemv16_q6_K_vnni; break;
    default: return false;
    }
    const int g = t == TL_Q6_K ? 16 : 32;
    const tl_q8_quantize_fn quantize = t == TL_Q6_K                   ? quantize_q8_K_g16_vnni
                                       : t == TL_Q4_K || t == TL_Q5_K ? quantize_q8_K_g32_vnni
                                                                      : quantize_q8_0_vnni;
    *out = (tl_q8_kernels){quantize, pack, g == 32 ? gemm_g32_vnni : gemm_g16_vnni, gemv, g, pack16, gemv16};
    return true;
}
#endif

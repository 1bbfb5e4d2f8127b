/* x86 kernels for quantized activations (dot_q8.h): AVX-512 VNNI. A pack holds 16 weight
 * rows, one per 32-bit lane, so vpdpbusd multiplies 4 codes of each of 16 rows by the same
 * 4 activation bytes (broadcast) and adds them into that row's lane; a sub-block's integer
 * sums for 16 rows land in one register with no horizontal reduction. */
#include "dot_q8.h"

#ifdef TL_Q8_X86
#include "cpu.h"
#include "quants.h"

#include <immintrin.h>
#include <string.h>

#define VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))
#define INLINE inline __attribute__((always_inline))

/* ---------------------------------------------------------------- GEMM */

/* y[c][0..16) for nc activation rows (nc and g constants where inlined): the arithmetic of
 * dot_q8.c's gemm_scalar, 16 rows at once */
VNNI static INLINE void gemm_tile(const uint8_t *codes, const float *a, const float *b, const uint8_t *xq,
                                  size_t x_stride, const int nc, int64_t k, const int g, float *y, size_t ldy,
                                  __mmask16 keep) {
    __m512 acc[8];
    for (int c = 0; c < nc; c++) acc[c] = _mm512_setzero_ps();
    for (int64_t s = 0; s < k / g; s++) {
        __m512i wv[8];
        for (int j = 0; j < g / 4; j++) wv[j] = _mm512_loadu_si512(codes + (s * (g / 4) + j) * 64);
        const __m512 av = _mm512_loadu_ps(a + TL_Q8_LANES * s), bv = _mm512_loadu_ps(b + TL_Q8_LANES * s);
        for (int c = 0; c < nc; c++) {
            const uint8_t *q = xq + (size_t)c * x_stride + s * g;
            const float *ds = (const float *)(xq + (size_t)c * x_stride + k) + 2 * s;
            __m512i sum = _mm512_setzero_si512();
            for (int j = 0; j < g / 4; j++) {
                int32_t v;
                memcpy(&v, q + 4 * j, 4);
                sum = _mm512_dpbusd_epi32(sum, wv[j], _mm512_set1_epi32(v));
            }
            acc[c] = _mm512_fmadd_ps(_mm512_mul_ps(av, _mm512_set1_ps(ds[0])), _mm512_cvtepi32_ps(sum), acc[c]);
            acc[c] = _mm512_fmadd_ps(bv, _mm512_set1_ps(ds[1]), acc[c]);
        }
    }
    for (int c = 0; c < nc; c++) _mm512_mask_storeu_ps(y + (size_t)c * ldy, keep, acc[c]);
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
 * Each gathers one 32-bit word at the same offset of 16 rows (rows past the last repeat it)
 * and turns the words into codes lane by lane, bit for bit as dot_q8.c's unpack_*. */

VNNI static INLINE __m512i row_offsets(size_t row_bytes, int rows) {
    int32_t off[16];
    for (int r = 0; r < 16; r++) off[r] = (int32_t)((size_t)(r < rows ? r : rows - 1) * row_bytes);
    return _mm512_loadu_si512(off);
}

VNNI static INLINE __m512i gather(const uint8_t *p, __m512i idx) { return _mm512_i32gather_epi32(idx, p, 1); }

/* the fp16 in the low / high half of each lane, as float */
VNNI static INLINE __m512 half_lo(__m512i v) { return _mm512_cvtph_ps(_mm512_cvtepi32_epi16(v)); }
VNNI static INLINE __m512 half_hi(__m512i v) { return half_lo(_mm512_srli_epi32(v, 16)); }

VNNI static INLINE void put(uint8_t *codes, int64_t k4, __m512i v) { _mm512_storeu_si512(codes + k4 * 64, v); }

/* element j of a Q5 block: 16 when bit j of qh is set; the 4 bits from bit 4·t on, one per byte */
VNNI static INLINE __m512i q5_high(__m512i qh, int t) {
    __m512i h = _mm512_and_si512(_mm512_srli_epi32(qh, 4 * t), _mm512_set1_epi32(15));
    h = _mm512_and_si512(_mm512_mullo_epi32(h, _mm512_set1_epi32(0x00204081)), _mm512_set1_epi32(0x01010101));
    return _mm512_slli_epi32(h, 4);
}

/* the legacy formats: block of 32 at `bytes` apart, the scale (and min) at the front, qh
 * (Q5) at qh_at, qs at qs_at; bias -8, -16 or -128 (Q8_0) times d, or the stored min */
VNNI static INLINE void pack_legacy(const void *w, size_t row_bytes, int rows, int64_t k, void *pack, const int bytes,
                                    const int has_min, const int qh_at, const int qs_at, const float bias,
                                    const int q8) {
    const __m512i idx = row_offsets(row_bytes, rows), m4 = _mm512_set1_epi8(15);
    uint8_t *codes = pack;
    float *a = (float *)(codes + TL_Q8_LANES * k), *b = a + TL_Q8_LANES * (k / 32);
    const uint8_t *p = w;
    for (int64_t i = 0; i < k / 32; i++, p += bytes) {
        const __m512i dm = gather(p, idx);
        const __m512 d = half_lo(dm);
        _mm512_storeu_ps(a + 16 * i, d);
        _mm512_storeu_ps(b + 16 * i, has_min ? half_hi(dm) : _mm512_mul_ps(d, _mm512_set1_ps(bias)));
        if (q8) {
            for (int t = 0; t < 8; t++) put(codes, 8 * i + t, _mm512_xor_si512(gather(p + qs_at + 4 * t, idx), _mm512_set1_epi8(-128)));
            continue;
        }
        const __m512i qh = qh_at ? gather(p + qh_at, idx) : _mm512_setzero_si512();
        for (int t = 0; t < 4; t++) {
            const __m512i q = gather(p + qs_at + 4 * t, idx);
            __m512i lo = _mm512_and_si512(q, m4), hi = _mm512_and_si512(_mm512_srli_epi32(q, 4), m4);
            if (qh_at) {
                lo = _mm512_or_si512(lo, q5_high(qh, t));
                hi = _mm512_or_si512(hi, q5_high(qh, t + 4));
            }
            put(codes, 8 * i + t, lo);
            put(codes, 8 * i + 4 + t, hi);
        }
    }
}

VNNI static void pack_q4_0_vnni(const void *w, size_t rb, int rows, int64_t k, void *pack) {
    pack_legacy(w, rb, rows, k, pack, sizeof(block_q4_0), 0, 0, 2, -8.0f, 0);
}
VNNI static void pack_q4_1_vnni(const void *w, size_t rb, int rows, int64_t k, void *pack) {
    pack_legacy(w, rb, rows, k, pack, sizeof(block_q4_1), 1, 0, 4, 0.0f, 0);
}
VNNI static void pack_q5_0_vnni(const void *w, size_t rb, int rows, int64_t k, void *pack) {
    pack_legacy(w, rb, rows, k, pack, sizeof(block_q5_0), 0, 2, 6, -16.0f, 0);
}
VNNI static void pack_q5_1_vnni(const void *w, size_t rb, int rows, int64_t k, void *pack) {
    pack_legacy(w, rb, rows, k, pack, sizeof(block_q5_1), 1, 4, 8, 0.0f, 0);
}
VNNI static void pack_q8_0_vnni(const void *w, size_t rb, int rows, int64_t k, void *pack) {
    pack_legacy(w, rb, rows, k, pack, sizeof(block_q8_0), 0, 0, 2, -128.0f, 1);
}

/* byte j of each lane */
VNNI static INLINE __m512i byte_of(__m512i v, int j) {
    return _mm512_and_si512(_mm512_srli_epi32(v, 8 * j), _mm512_set1_epi32(0xFF));
}

/* -v with the sign bit flipped, as C's unary minus (0 - v would turn -0 into +0) */
VNNI static INLINE __m512 neg(__m512 v) {
    return _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(v), _mm512_set1_epi32((int)0x80000000u)));
}

/* GGUF Q4_K (see unpack_q4_K): scales from get_scale_min_k4's bit layout, lane-wise */
VNNI static void pack_q4_K_vnni(const void *w, size_t row_bytes, int rows, int64_t k, void *pack) {
    const __m512i idx = row_offsets(row_bytes, rows), m4 = _mm512_set1_epi8(15), m6 = _mm512_set1_epi32(63);
    uint8_t *codes = pack;
    float *a = (float *)(codes + TL_Q8_LANES * k), *b = a + TL_Q8_LANES * (k / 32);
    const uint8_t *p = w;
    for (int64_t i = 0; i < k / QK_K; i++, p += sizeof(block_q4_K)) {
        const __m512i dm = gather(p, idx), s0 = gather(p + 4, idx), s1 = gather(p + 8, idx), s2 = gather(p + 12, idx);
        const __m512 d = half_lo(dm), dmin = half_hi(dm);
        for (int s = 0; s < 8; s++) {
            __m512i sc, m;
            if (s < 4) {
                sc = _mm512_and_si512(byte_of(s0, s), m6);
                m = _mm512_and_si512(byte_of(s1, s), m6);
            } else {
                const __m512i q8 = byte_of(s2, s - 4);
                sc = _mm512_or_si512(_mm512_and_si512(q8, _mm512_set1_epi32(15)),
                                     _mm512_slli_epi32(_mm512_srli_epi32(byte_of(s0, s - 4), 6), 4));
                m = _mm512_or_si512(_mm512_srli_epi32(q8, 4), _mm512_slli_epi32(_mm512_srli_epi32(byte_of(s1, s - 4), 6), 4));
            }
            _mm512_storeu_ps(a + 16 * (8 * i + s), _mm512_mul_ps(d, _mm512_cvtepi32_ps(sc)));
            _mm512_storeu_ps(b + 16 * (8 * i + s), neg(_mm512_mul_ps(dmin, _mm512_cvtepi32_ps(m))));
        }
        for (int t = 0; t < 32; t++) {
            const __m512i q = gather(p + 16 + 4 * t, idx);
            const int64_t k4 = 64 * i + 16 * (t / 8) + t % 8;
            put(codes, k4, _mm512_and_si512(q, m4));
            put(codes, k4 + 8, _mm512_and_si512(_mm512_srli_epi32(q, 4), m4));
        }
    }
}

/* GGUF Q6_K (see unpack_q6_K) */
VNNI static void pack_q6_K_vnni(const void *w, size_t row_bytes, int rows, int64_t k, void *pack) {
    const __m512i idx = row_offsets(row_bytes, rows), m4 = _mm512_set1_epi8(15), m2 = _mm512_set1_epi8(0x30);
    uint8_t *codes = pack;
    float *a = (float *)(codes + TL_Q8_LANES * k), *b = a + TL_Q8_LANES * (k / 16);
    const uint8_t *p = w;
    for (int64_t i = 0; i < k / QK_K; i++, p += sizeof(block_q6_K)) {
        const __m512 d = half_hi(gather(p + 206, idx)); /* d is the last 2 bytes of the block */
        for (int t = 0; t < 4; t++) {
            const __m512i sc4 = gather(p + 192 + 4 * t, idx);
            for (int j = 0; j < 4; j++) {
                const __m512i sc = _mm512_srai_epi32(_mm512_slli_epi32(sc4, 24 - 8 * j), 24); /* int8, sign-extended */
                const __m512 ds = _mm512_mul_ps(d, _mm512_cvtepi32_ps(sc));
                _mm512_storeu_ps(a + 16 * (16 * i + 4 * t + j), ds);
                _mm512_storeu_ps(b + 16 * (16 * i + 4 * t + j), _mm512_mul_ps(ds, _mm512_set1_ps(-32.0f)));
            }
        }
        for (int h = 0; h < 2; h++)
            for (int l4 = 0; l4 < 8; l4++) {
                const __m512i lo = gather(p + 64 * h + 4 * l4, idx), hi = gather(p + 64 * h + 32 + 4 * l4, idx);
                const __m512i qh = gather(p + 128 + 32 * h + 4 * l4, idx);
                const int64_t k4 = 64 * i + 32 * h + l4;
                put(codes, k4, _mm512_or_si512(_mm512_and_si512(lo, m4), _mm512_and_si512(_mm512_slli_epi32(qh, 4), m2)));
                put(codes, k4 + 8, _mm512_or_si512(_mm512_and_si512(hi, m4), _mm512_and_si512(_mm512_slli_epi32(qh, 2), m2)));
                put(codes, k4 + 16,
                    _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(lo, 4), m4), _mm512_and_si512(qh, m2)));
                put(codes, k4 + 24, _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(hi, 4), m4),
                                                    _mm512_and_si512(_mm512_srli_epi32(qh, 2), m2)));
            }
    }
}

bool tl_q8_kernels_avx512(tl_dtype t, tl_q8_kernels *out) {
    if (!tl_cpu_has(TL_CPU_FEAT_AVX512_VNNI)) return false;
    tl_q8_pack_fn pack;
    switch (t) {
    case TL_Q4_0: pack = pack_q4_0_vnni; break;
    case TL_Q4_1: pack = pack_q4_1_vnni; break;
    case TL_Q5_0: pack = pack_q5_0_vnni; break;
    case TL_Q5_1: pack = pack_q5_1_vnni; break;
    case TL_Q8_0: pack = pack_q8_0_vnni; break;
    case TL_Q4_K: pack = pack_q4_K_vnni; break;
    case TL_Q6_K: pack = pack_q6_K_vnni; break;
    default: return false;
    }
    const int g = t == TL_Q6_K ? 16 : 32;
    *out = (tl_q8_kernels){pack, g == 32 ? gemm_g32_vnni : gemm_g16_vnni, g};
    return true;
}
#endif

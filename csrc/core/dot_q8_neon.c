/* AArch64 products for quantized activations (dot_q8.h): the portable quantizers and
 * repacks, a GEMM on the same 16-row packs, and decode kernels that read each row's blocks
 * in place. Each is built twice, and HWCAP picks one (tl_cpu_has):
 * - with the dotprod extension (ARMv8.2 SDOT): each 32-bit lane adds the products of 4
 *   int8 pairs, so with a pack's 4 codes of a row per lane, one SDOT gives 4 rows' sums;
 * - with baseline Advanced SIMD, for the CPUs without it (Cortex-A53/A57/A72): SMULL
 *   multiplies int8 pairs into int16, SADALP adds adjacent int16 pairs into int32.
 *
 * Both multiply signed by signed. The codes of Q4_x, Q5_x, Q4_K, Q5_K and Q6_K are at most
 * 63, so they are int8 as they are. Q8_0's code q + 128 takes 8 bits; it goes in as the
 * stored int8 q (the code with its top bit flipped), and the sum gains 128·Σx:
 *     Σ (q + 128)·x = Σ q·x + 128·Σ x.
 * Nothing overflows: one SMULL product is at most 128·128 = 16384 in magnitude (int16 holds
 * 32767), and products are only ever added in int32 (SMLAL would add them in int16, where
 * two of 128·128 do not fit). Every integer sum is then exact, and the float operations
 * after it are dot_q8.c's gemm_scalar's: bit-identical results at both levels. */
#include "dot_q8.h"

#ifdef TL_Q8_NEON
#include "cpu.h"
#include "fp16.h"
#include "quants.h"

#include <arm_neon.h>
#include <math.h>
#include <string.h>

#define DOTPROD __attribute__((target("arch=armv8.2-a+dotprod")))
#define INLINE inline __attribute__((always_inline))
#define UNROLL _Pragma("GCC unroll 8")

/* The helpers below take `const bool dot` and are inlined into entry points of both kinds;
 * only SDOT itself needs the extension, so it alone carries the target attribute (GCC
 * inlines it where the caller has the extension too, and the other entry points never reach
 * it: their `dot` is a constant false). */
DOTPROD static inline int32x4_t sdot(int32x4_t acc, int8x16_t a, int8x16_t b) { return vdotq_s32(acc, a, b); }

/* Integer sums over groups of 4 bytes. With SDOT, lane i of lo is group i's sum; without it,
 * group i's sum is spread over two lanes (lo: groups 0 and 1, hi: groups 2 and 3) until the
 * end of a sub-block, so that the loop adds pairs (SADALP) and reduces once. */
typedef struct {
    int32x4_t lo, hi;
} isum4;

static INLINE isum4 isum_zero(void) { return (isum4){vdupq_n_s32(0), vdupq_n_s32(0)}; }

/* s += bytes 4i..4i+3 of w times bytes 4i..4i+3 of x, into group i */
static INLINE void dot4(isum4 *s, int8x16_t w, int8x16_t x, const bool dot) {
    if (dot) {
        s->lo = sdot(s->lo, w, x);
        return;
    }
    s->lo = vpadalq_s16(s->lo, vmull_s8(vget_low_s8(w), vget_low_s8(x)));
    s->hi = vpadalq_s16(s->hi, vmull_high_s8(w, x));
}

/* lane i: group i's sum */
static INLINE int32x4_t isum_groups(isum4 s, const bool dot) { return dot ? s.lo : vpaddq_s32(s.lo, s.hi); }

/* all groups' sum */
static INLINE int32_t isum_total(isum4 s, const bool dot) { return vaddvq_s32(dot ? s.lo : vaddq_s32(s.lo, s.hi)); }

/* Q8_0's correction 128·Σx over the 32 activation bytes of a sub-block */
static INLINE int32_t q8_0_correction(int8x16_t x0, int8x16_t x1) {
    return 128 * ((int32_t)vaddlvq_s8(x0) + (int32_t)vaddlvq_s8(x1));
}

/* Q8_0's codes q + 128 as the signed q */
static INLINE int8x16_t flip_top_bit(int8x16_t v) { return veorq_s8(v, vdupq_n_s8(-128)); }

/* ---------------------------------------------------------------- GEMM */

/* rows 0..n-1 of v to y (n at most 4; none when n <= 0): the rows of a pack past `rows` repeat
 * the last row and are not stored */
static INLINE void store_rows(float *y, float32x4_t v, int n) {
    if (n >= 4) {
        vst1q_f32(y, v);
    } else if (n > 0) {
        float t[4];
        vst1q_f32(t, v);
        memcpy(y, t, (size_t)n * sizeof(float));
    }
}

/* y[c][0..8) for nc activation rows: 8 rows of a pack (codes, a and b offset to them, two
 * registers of 4 rows), the arithmetic of dot_q8.c's gemm_scalar */
static INLINE void gemm_tile(const uint8_t *codes, const float *a, const float *b, const uint8_t *xq, size_t x_stride,
                             const int nc, int64_t k, const int g, const bool q8_0, const bool dot, float *y,
                             size_t ldy, int rows) {
    float32x4_t acc[4][2];
    UNROLL for (int c = 0; c < nc; c++) acc[c][0] = acc[c][1] = vdupq_n_f32(0.0f);
    for (int64_t s = 0; s < k / g; s++) {
        isum4 sum[4][2];
        UNROLL for (int c = 0; c < nc; c++) sum[c][0] = sum[c][1] = isum_zero();
        UNROLL for (int j = 0; j < g / 4; j++) {
            const uint8_t *cj = codes + (s * (g / 4) + j) * 4 * TL_Q8_LANES;
            int8x16_t wv[2];
            for (int i = 0; i < 2; i++) {
                wv[i] = vreinterpretq_s8_u8(vld1q_u8(cj + 16 * i));
                if (q8_0) wv[i] = flip_top_bit(wv[i]);
            }
            UNROLL for (int c = 0; c < nc; c++) {
                int32_t v; /* 4 activation bytes, in every lane */
                memcpy(&v, xq + (size_t)c * x_stride + s * g + 4 * j, 4);
                const int8x16_t xv = vreinterpretq_s8_s32(vdupq_n_s32(v));
                dot4(&sum[c][0], wv[0], xv, dot);
                dot4(&sum[c][1], wv[1], xv, dot);
            }
        }
        const float32x4_t av[2] = {vld1q_f32(a + TL_Q8_LANES * s), vld1q_f32(a + TL_Q8_LANES * s + 4)};
        const float32x4_t bv[2] = {vld1q_f32(b + TL_Q8_LANES * s), vld1q_f32(b + TL_Q8_LANES * s + 4)};
        UNROLL for (int c = 0; c < nc; c++) {
            const uint8_t *x = xq + (size_t)c * x_stride;
            const float *ds = (const float *)(x + k) + 2 * s;
            const int8_t *q = (const int8_t *)x + s * g;
            const int32x4_t corr = vdupq_n_s32(q8_0 ? q8_0_correction(vld1q_s8(q), vld1q_s8(q + 16)) : 0);
            for (int i = 0; i < 2; i++) {
                const int32x4_t isum = vaddq_s32(isum_groups(sum[c][i], dot), corr);
                acc[c][i] = vfmaq_f32(acc[c][i], vmulq_n_f32(av[i], ds[0]), vcvtq_f32_s32(isum));
                acc[c][i] = vfmaq_n_f32(acc[c][i], bv[i], ds[1]);
            }
        }
    }
    UNROLL for (int c = 0; c < nc; c++) {
        store_rows(y + (size_t)c * ldy, acc[c][0], rows);
        store_rows(y + (size_t)c * ldy + 4, acc[c][1], rows - 4);
    }
}

/* each half of the pack's 16 rows that holds rows, in tiles of 4 activation rows, then 1 */
static INLINE void gemm_neon(const void *pack, const void *xq, size_t x_stride, int n, int64_t k, const int g,
                             const bool q8_0, const bool dot, float *y, size_t ldy, int rows) {
    const uint8_t *codes = pack, *x = xq;
    const float *a = (const float *)(codes + TL_Q8_LANES * k), *b = a + TL_Q8_LANES * (k / g);
    for (int h = 0; h < 2 && 8 * h < rows; h++) {
        int c = 0;
        for (; c + 4 <= n; c += 4)
            gemm_tile(codes + 32 * h, a + 8 * h, b + 8 * h, x + c * x_stride, x_stride, 4, k, g, q8_0, dot,
                      y + c * ldy + 8 * h, ldy, rows - 8 * h);
        for (; c < n; c++)
            gemm_tile(codes + 32 * h, a + 8 * h, b + 8 * h, x + c * x_stride, x_stride, 1, k, g, q8_0, dot,
                      y + c * ldy + 8 * h, ldy, rows - 8 * h);
    }
}

#define GEMM_NEON(name, ATTR, G, Q8_0, DOT)                                                                            \
    ATTR static void gemm_##name(const void *pack, const void *xq, size_t x_stride, int n, int64_t k, int g, float *y, \
                                 size_t ldy, int rows) {                                                               \
        (void)g;                                                                                                       \
        gemm_neon(pack, xq, x_stride, n, k, G, Q8_0, DOT, y, ldy, rows);                                               \
    }
GEMM_NEON(g32_sdot, DOTPROD, 32, false, true)
GEMM_NEON(g16_sdot, DOTPROD, 16, false, true)
GEMM_NEON(q8_0_sdot, DOTPROD, 32, true, true)
GEMM_NEON(g32_smull, , 32, false, false)
GEMM_NEON(g16_smull, , 16, false, false)
GEMM_NEON(q8_0_smull, , 32, true, false)
#undef GEMM_NEON

/* ---------------------------------------------------------------- decode
 * One row at a time, straight from its blocks: the 32 codes of a sub-block (two of Q6_K's
 * sub-blocks of 16) in two registers in element order, their a and b as the portable unpack
 * computes them, and per activation row the integer sum, then gemm_scalar's two fmaf. */

/* acc[c] += sub-block s (of 32; codes c0 = elements 0..15, c1 = 16..31) of this row against
 * activation row c */
static INLINE void add_sub32(float *acc, int n, int8x16_t c0, int8x16_t c1, const bool q8_0, float a, float b,
                             const uint8_t *x, size_t xs, int64_t k, int64_t s, const bool dot) {
    for (int c = 0; c < n; c++) {
        const int8_t *q = (const int8_t *)(x + (size_t)c * xs) + 32 * s;
        const float *ds = (const float *)(x + (size_t)c * xs + k) + 2 * s;
        const int8x16_t x0 = vld1q_s8(q), x1 = vld1q_s8(q + 16);
        isum4 p = isum_zero();
        dot4(&p, c0, x0, dot);
        dot4(&p, c1, x1, dot);
        const int32_t sum = isum_total(p, dot) + (q8_0 ? q8_0_correction(x0, x1) : 0);
        acc[c] = fmaf(a * ds[0], (float)sum, acc[c]);
        acc[c] = fmaf(b, ds[1], acc[c]);
    }
}

/* acc[c] += sub-blocks s (codes c0) and s + 1 (codes c1) of 16, in order */
static INLINE void add_sub16x2(float *acc, int n, int8x16_t c0, int8x16_t c1, const float a[2], const float b[2],
                               const uint8_t *x, size_t xs, int64_t k, int64_t s, const bool dot) {
    for (int c = 0; c < n; c++) {
        const int8_t *q = (const int8_t *)(x + (size_t)c * xs) + 16 * s;
        const float *ds = (const float *)(x + (size_t)c * xs + k) + 2 * s;
        isum4 p[2] = {isum_zero(), isum_zero()};
        dot4(&p[0], c0, vld1q_s8(q), dot);
        dot4(&p[1], c1, vld1q_s8(q + 16), dot);
        for (int h = 0; h < 2; h++) {
            acc[c] = fmaf(a[h] * ds[2 * h], (float)isum_total(p[h], dot), acc[c]);
            acc[c] = fmaf(b[h], ds[2 * h + 1], acc[c]);
        }
    }
}

static INLINE int8x16_t low4(uint8x16_t v) { return vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(15))); }
static INLINE int8x16_t high4(uint8x16_t v) { return vreinterpretq_s8_u8(vshrq_n_u8(v, 4)); }

/* byte j: 16 where bit j of the 16 bits qh[0] | qh[1] << 8 is set (Q5_0/Q5_1's 5th bits) */
static INLINE int8x16_t bits16(const uint8_t qh[2]) {
    static const uint8_t bit[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    const uint8x16_t v = vcombine_u8(vdup_n_u8(qh[0]), vdup_n_u8(qh[1]));
    return vreinterpretq_s8_u8(vandq_u8(vtstq_u8(v, vld1q_u8(bit)), vdupq_n_u8(16)));
}

/* the legacy formats (see dot_q8.c's unpack_legacy) */
static INLINE void row_legacy(const uint8_t *row, int64_t k, const uint8_t *x, size_t xs, int n, float *acc,
                              const tl_dtype t, const bool dot) {
    const size_t bytes = tl_dtype_row_size(t, 32);
    for (int64_t i = 0; i < k / 32; i++) {
        const uint8_t *blk = row + (size_t)i * bytes;
        int8x16_t c0, c1;
        float d, b;
        switch (t) {
        case TL_Q4_0: {
            const block_q4_0 *p = (const block_q4_0 *)blk;
            const uint8x16_t v = vld1q_u8(p->qs);
            d = tl_f16_to_f32(p->d), b = -8.0f * d, c0 = low4(v), c1 = high4(v);
            break;
        }
        case TL_Q4_1: {
            const block_q4_1 *p = (const block_q4_1 *)blk;
            const uint8x16_t v = vld1q_u8(p->qs);
            d = tl_f16_to_f32(p->d), b = tl_f16_to_f32(p->m), c0 = low4(v), c1 = high4(v);
            break;
        }
        case TL_Q5_0: {
            const block_q5_0 *p = (const block_q5_0 *)blk;
            const uint8x16_t v = vld1q_u8(p->qs);
            d = tl_f16_to_f32(p->d), b = -16.0f * d;
            c0 = vorrq_s8(low4(v), bits16(p->qh)), c1 = vorrq_s8(high4(v), bits16(p->qh + 2));
            break;
        }
        case TL_Q5_1: {
            const block_q5_1 *p = (const block_q5_1 *)blk;
            const uint8x16_t v = vld1q_u8(p->qs);
            d = tl_f16_to_f32(p->d), b = tl_f16_to_f32(p->m);
            c0 = vorrq_s8(low4(v), bits16(p->qh)), c1 = vorrq_s8(high4(v), bits16(p->qh + 2));
            break;
        }
        default: { /* Q8_0: the code q + 128, here as q (see the top of this file) */
            const block_q8_0 *p = (const block_q8_0 *)blk;
            d = tl_f16_to_f32(p->d), b = -128.0f * d, c0 = vld1q_s8(p->qs), c1 = vld1q_s8(p->qs + 16);
            break;
        }
        }
        add_sub32(acc, n, c0, c1, t == TL_Q8_0, d, b, x, xs, k, i, dot);
    }
}

/* Q4_K and Q5_K (see unpack_k4): sub-block s from the low (even s) or high nibbles of qs
 * bytes 32(s/2)..; Q5_K's 5th bit of element l is bit s of qh[l] */
static INLINE void row_k4(const uint8_t *row, int64_t k, const uint8_t *x, size_t xs, int n, float *acc, const bool q5,
                          const bool dot) {
    for (int64_t i = 0; i < k / QK_K; i++) {
        const k4_fields f = k4_block(row, i, q5);
        const uint8_t *qs = f.qs, *qh = f.qh, *scales = f.scales;
        const float d = tl_f16_to_f32(f.d), dmin = tl_f16_to_f32(f.dmin);
        const uint8x16_t h0 = q5 ? vld1q_u8(qh) : vdupq_n_u8(0), h1 = q5 ? vld1q_u8(qh + 16) : vdupq_n_u8(0);
        for (int s = 0; s < 8; s++) {
            int sc, m;
            get_scale_min_k4(s, scales, &sc, &m);
            const uint8x16_t v0 = vld1q_u8(qs + 32 * (s / 2)), v1 = vld1q_u8(qs + 32 * (s / 2) + 16);
            int8x16_t c0 = s % 2 ? high4(v0) : low4(v0), c1 = s % 2 ? high4(v1) : low4(v1);
            if (q5) {
                const uint8x16_t bit = vdupq_n_u8((uint8_t)(1 << s)), sixteen = vdupq_n_u8(16);
                c0 = vorrq_s8(c0, vreinterpretq_s8_u8(vandq_u8(vtstq_u8(h0, bit), sixteen)));
                c1 = vorrq_s8(c1, vreinterpretq_s8_u8(vandq_u8(vtstq_u8(h1, bit), sixteen)));
            }
            add_sub32(acc, n, c0, c1, false, d * (float)sc, -(dmin * (float)m), x, xs, k, 8 * i + s, dot);
        }
    }
}

/* Q6_K (see unpack_q6_K): elements l + 32p of a half (l < 32) are sub-blocks 2p and 2p + 1;
 * the 2 high bits of element l + 32p are bits 2p, 2p + 1 of qh[l], shifted to bits 4, 5 */
static INLINE void row_q6_K(const uint8_t *row, int64_t k, const uint8_t *x, size_t xs, int n, float *acc,
                            const bool dot) {
    const uint8x16_t m2 = vdupq_n_u8(0x30);
    for (int64_t i = 0; i < k / QK_K; i++) {
        const block_q6_K *p = (const block_q6_K *)row + i;
        const float d = tl_f16_to_f32(p->d);
        for (int h = 0; h < 2; h++) {
            const uint8x16_t qh0 = vld1q_u8(p->qh + 32 * h), qh1 = vld1q_u8(p->qh + 32 * h + 16);
            for (int q = 0; q < 4; q++) {
                const uint8_t *ql = p->ql + 64 * h + 32 * (q % 2);
                const uint8x16_t l0 = vld1q_u8(ql), l1 = vld1q_u8(ql + 16);
                const int8x16_t shift = vdupq_n_s8((int8_t)(4 - 2 * q)); /* negative: to the right */
                const int8x16_t c0 = vorrq_s8(q < 2 ? low4(l0) : high4(l0),
                                              vreinterpretq_s8_u8(vandq_u8(vshlq_u8(qh0, shift), m2)));
                const int8x16_t c1 = vorrq_s8(q < 2 ? low4(l1) : high4(l1),
                                              vreinterpretq_s8_u8(vandq_u8(vshlq_u8(qh1, shift), m2)));
                const int s = 8 * h + 2 * q;
                float a[2], b[2];
                for (int j = 0; j < 2; j++) {
                    a[j] = d * (float)p->scales[s + j];
                    b[j] = -32.0f * a[j];
                }
                add_sub16x2(acc, n, c0, c1, a, b, x, xs, k, 16 * i + s, dot);
            }
        }
    }
}

/* one entry per format and kind: each of the rows against up to TL_Q8_GEMV_MAX activation rows */
#define GEMV_NEON(name, ATTR, call)                                                                                    \
    ATTR static void gemv_##name(const void *w, size_t row_bytes, int rows, int64_t k, const void *xq, size_t xs,      \
                                 int n, float *y, size_t ldy) {                                                        \
        const uint8_t *x = xq;                                                                                         \
        for (int r = 0; r < rows; r++) {                                                                               \
            const uint8_t *row = (const uint8_t *)w + (size_t)r * row_bytes;                                           \
            float acc[TL_Q8_GEMV_MAX] = {0};                                                                           \
            call;                                                                                                      \
            for (int c = 0; c < n; c++) y[(size_t)c * ldy + r] = acc[c];                                               \
        }                                                                                                              \
    }
GEMV_NEON(q4_0_sdot, DOTPROD, row_legacy(row, k, x, xs, n, acc, TL_Q4_0, true))
GEMV_NEON(q4_1_sdot, DOTPROD, row_legacy(row, k, x, xs, n, acc, TL_Q4_1, true))
GEMV_NEON(q5_0_sdot, DOTPROD, row_legacy(row, k, x, xs, n, acc, TL_Q5_0, true))
GEMV_NEON(q5_1_sdot, DOTPROD, row_legacy(row, k, x, xs, n, acc, TL_Q5_1, true))
GEMV_NEON(q8_0_sdot, DOTPROD, row_legacy(row, k, x, xs, n, acc, TL_Q8_0, true))
GEMV_NEON(q4_K_sdot, DOTPROD, row_k4(row, k, x, xs, n, acc, false, true))
GEMV_NEON(q5_K_sdot, DOTPROD, row_k4(row, k, x, xs, n, acc, true, true))
GEMV_NEON(q6_K_sdot, DOTPROD, row_q6_K(row, k, x, xs, n, acc, true))
GEMV_NEON(q4_0_smull, , row_legacy(row, k, x, xs, n, acc, TL_Q4_0, false))
GEMV_NEON(q4_1_smull, , row_legacy(row, k, x, xs, n, acc, TL_Q4_1, false))
GEMV_NEON(q5_0_smull, , row_legacy(row, k, x, xs, n, acc, TL_Q5_0, false))
GEMV_NEON(q5_1_smull, , row_legacy(row, k, x, xs, n, acc, TL_Q5_1, false))
GEMV_NEON(q8_0_smull, , row_legacy(row, k, x, xs, n, acc, TL_Q8_0, false))
GEMV_NEON(q4_K_smull, , row_k4(row, k, x, xs, n, acc, false, false))
GEMV_NEON(q5_K_smull, , row_k4(row, k, x, xs, n, acc, true, false))
GEMV_NEON(q6_K_smull, , row_q6_K(row, k, x, xs, n, acc, false))
#undef GEMV_NEON

bool tl_q8_kernels_neon(tl_dtype t, tl_q8_kernels *out) {
    if (!tl_q8_kernels_scalar(t, out)) return false;
    const bool dot = tl_cpu_has(TL_CPU_FEAT_NEON_DOTPROD);
    if (t == TL_Q8_0) out->gemm = dot ? gemm_q8_0_sdot : gemm_q8_0_smull;
    else if (out->g == 32) out->gemm = dot ? gemm_g32_sdot : gemm_g32_smull;
    else out->gemm = dot ? gemm_g16_sdot : gemm_g16_smull;
    switch (t) {
    case TL_Q4_0: out->gemv = dot ? gemv_q4_0_sdot : gemv_q4_0_smull; break;
    case TL_Q4_1: out->gemv = dot ? gemv_q4_1_sdot : gemv_q4_1_smull; break;
    case TL_Q5_0: out->gemv = dot ? gemv_q5_0_sdot : gemv_q5_0_smull; break;
    case TL_Q5_1: out->gemv = dot ? gemv_q5_1_sdot : gemv_q5_1_smull; break;
    case TL_Q8_0: out->gemv = dot ? gemv_q8_0_sdot : gemv_q8_0_smull; break;
    case TL_Q4_K: out->gemv = dot ? gemv_q4_K_sdot : gemv_q4_K_smull; break;
    case TL_Q5_K: out->gemv = dot ? gemv_q5_K_sdot : gemv_q5_K_smull; break;
    default: out->gemv = dot ? gemv_q6_K_sdot : gemv_q6_K_smull; break; /* Q6_K, the portable kernels' last */
    }
    return true;
}
#endif

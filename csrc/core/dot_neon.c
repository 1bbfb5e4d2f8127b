/* dot.h's kernels in AArch64 Advanced SIMD (NEON is baseline there): 4 float lanes, fused
 * multiply-add, half -> float in hardware (FCVTL). Float activations throughout; the int8
 * activation (sdot) kernels belong with the quantized-activation path. */
#ifdef __aarch64__

#include "dot_isa.h"
#include "fp16.h"
#include "quants.h"

#include <arm_neon.h>
#include <math.h>
#include <string.h>

/* the three float weight (and KV cache) types, one loop for all */
enum { W_F32, W_F16, W_BF16 };

/* 4 consecutive elements i..i+3 of a row as floats (all three conversions are exact) */
static inline float32x4_t load4(const void *row, int64_t i, int kind) {
    if (kind == W_F32) return vld1q_f32((const float *)row + i);
    uint16x4_t h = vld1_u16((const uint16_t *)row + i);
    if (kind == W_F16) return vcvt_f32_f16(vreinterpret_f16_u16(h));
    return vreinterpretq_f32_u32(vshll_n_u16(h, 16)); /* BF16 is the high half of an F32 */
}

/* one half as a float: a single FCVT (ACLE's __fp16 storage type) */
static inline float half_to_f32(tl_half h) {
    __fp16 f;
    memcpy(&f, &h, sizeof f);
    return f;
}

static inline float load1(const void *row, int64_t i, int kind) {
    if (kind == W_F32) return ((const float *)row)[i];
    uint16_t h = ((const uint16_t *)row)[i];
    return kind == W_F16 ? half_to_f32(h) : tl_bf16_to_f32(h);
}

static inline float dot_float(const void *w, const float *x, int64_t n, int kind) {
    float32x4_t a0 = vdupq_n_f32(0), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        a0 = vfmaq_f32(a0, load4(w, i, kind), vld1q_f32(x + i));
        a1 = vfmaq_f32(a1, load4(w, i + 4, kind), vld1q_f32(x + i + 4));
        a2 = vfmaq_f32(a2, load4(w, i + 8, kind), vld1q_f32(x + i + 8));
        a3 = vfmaq_f32(a3, load4(w, i + 12, kind), vld1q_f32(x + i + 12));
    }
    float s = vaddvq_f32(vaddq_f32(vaddq_f32(a0, a1), vaddq_f32(a2, a3)));
    for (; i < n; i++) s += load1(w, i, kind) * x[i];
    return s;
}

static float dot_f32_neon(const void *w, const float *x, int64_t n) { return dot_float(w, x, n, W_F32); }
static float dot_f16_neon(const void *w, const float *x, int64_t n) { return dot_float(w, x, n, W_F16); }
static float dot_bf16_neon(const void *w, const float *x, int64_t n) { return dot_float(w, x, n, W_BF16); }

/* sum over 16 signed bytes v[j] * x[j], in 4 lanes */
static inline float32x4_t i8x16_dot(int8x16_t v, const float *x) {
    const int16x8_t lo = vmovl_s8(vget_low_s8(v)), hi = vmovl_high_s8(v);
    float32x4_t s = vmulq_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo))), vld1q_f32(x));
    s = vfmaq_f32(s, vcvtq_f32_s32(vmovl_high_s16(lo)), vld1q_f32(x + 4));
    s = vfmaq_f32(s, vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi))), vld1q_f32(x + 8));
    return vfmaq_f32(s, vcvtq_f32_s32(vmovl_high_s16(hi)), vld1q_f32(x + 12));
}

/* sum over 32 bytes (elements 0..15, then 16..31) times x[0..32) */
static inline float32x4_t i8x32_dot(int8x16_t v0, int8x16_t v1, const float *x) {
    return vaddq_f32(i8x16_dot(v0, x), i8x16_dot(v1, x + 16));
}

/* x[0] + ... + x[31], in 4 lanes: the offset terms (m, dmin) multiply it */
static inline float32x4_t sum32(const float *x) {
    float32x4_t s[8];
    for (int k = 0; k < 8; k++) s[k] = vld1q_f32(x + 4 * k);
    return vaddq_f32(vaddq_f32(vaddq_f32(s[0], s[1]), vaddq_f32(s[2], s[3])),
                     vaddq_f32(vaddq_f32(s[4], s[5]), vaddq_f32(s[6], s[7])));
}

static inline int8x16_t low_nibbles(uint8x16_t q) { return vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0x0F))); }
static inline int8x16_t high_nibbles(uint8x16_t q) { return vreinterpretq_s8_u8(vshrq_n_u8(q, 4)); }

/* GGUF Q4_0: d * (q - 8); low nibbles are elements 0..15, high nibbles 16..31 */
static float dot_q4_0_neon(const void *w, const float *x, int64_t n) {
    const block_q4_0 *b = w;
    const int8x16_t eight = vdupq_n_s8(8);
    float32x4_t acc = vdupq_n_f32(0);
    for (int64_t i = 0; i < n / QK4_0; i++, x += QK4_0) {
        const uint8x16_t q = vld1q_u8(b[i].qs);
        const float32x4_t v = i8x32_dot(vsubq_s8(low_nibbles(q), eight), vsubq_s8(high_nibbles(q), eight), x);
        acc = vfmaq_n_f32(acc, v, half_to_f32(b[i].d));
    }
    return vaddvq_f32(acc);
}

/* GGUF Q4_1: d * q + m  ->  d * sum(q x) + m * sum(x) */
static float dot_q4_1_neon(const void *w, const float *x, int64_t n) {
    const block_q4_1 *b = w;
    float32x4_t acc = vdupq_n_f32(0), accm = acc;
    for (int64_t i = 0; i < n / QK4_1; i++, x += QK4_1) {
        const uint8x16_t q = vld1q_u8(b[i].qs);
        acc = vfmaq_n_f32(acc, i8x32_dot(low_nibbles(q), high_nibbles(q), x), half_to_f32(b[i].d));
        accm = vfmaq_n_f32(accm, sum32(x), half_to_f32(b[i].m));
    }
    return vaddvq_f32(vaddq_f32(acc, accm));
}

/* GGUF Q5_0/Q5_1: the 5th bit of element j is bit j of qh. For the 16 elements whose bits are
 * in qh2[0..1]: 0x10 where the bit is set (each byte of qh2 spread over 8 lanes, one bit a lane). */
static inline int8x16_t q5_high_bits(const uint8_t qh2[2]) {
    static const uint8_t lane_bit[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    const uint8x16_t bytes = vcombine_u8(vdup_n_u8(qh2[0]), vdup_n_u8(qh2[1]));
    return vreinterpretq_s8_u8(vandq_u8(vtstq_u8(bytes, vld1q_u8(lane_bit)), vdupq_n_u8(0x10)));
}

/* The 32 5-bit values of a Q5 block, elements 0..15 in *v0 and 16..31 in *v1 */
static inline void q5_values(const uint8_t qs[16], const uint8_t qh[4], int8x16_t *v0, int8x16_t *v1) {
    const uint8x16_t q = vld1q_u8(qs);
    *v0 = vorrq_s8(low_nibbles(q), q5_high_bits(qh));
    *v1 = vorrq_s8(high_nibbles(q), q5_high_bits(qh + 2));
}

/* GGUF Q5_0: d * (q - 16) */
static float dot_q5_0_neon(const void *w, const float *x, int64_t n) {
    const block_q5_0 *b = w;
    const int8x16_t sixteen = vdupq_n_s8(16);
    float32x4_t acc = vdupq_n_f32(0);
    for (int64_t i = 0; i < n / QK5_0; i++, x += QK5_0) {
        int8x16_t v0, v1;
        q5_values(b[i].qs, b[i].qh, &v0, &v1);
        acc = vfmaq_n_f32(acc, i8x32_dot(vsubq_s8(v0, sixteen), vsubq_s8(v1, sixteen), x), half_to_f32(b[i].d));
    }
    return vaddvq_f32(acc);
}

/* GGUF Q5_1: d * q + m  ->  d * sum(q x) + m * sum(x) */
static float dot_q5_1_neon(const void *w, const float *x, int64_t n) {
    const block_q5_1 *b = w;
    float32x4_t acc = vdupq_n_f32(0), accm = acc;
    for (int64_t i = 0; i < n / QK5_1; i++, x += QK5_1) {
        int8x16_t v0, v1;
        q5_values(b[i].qs, b[i].qh, &v0, &v1);
        acc = vfmaq_n_f32(acc, i8x32_dot(v0, v1, x), half_to_f32(b[i].d));
        accm = vfmaq_n_f32(accm, sum32(x), half_to_f32(b[i].m));
    }
    return vaddvq_f32(vaddq_f32(acc, accm));
}

/* GGUF Q8_0: d * q */
static float dot_q8_0_neon(const void *w, const float *x, int64_t n) {
    const block_q8_0 *b = w;
    float32x4_t acc = vdupq_n_f32(0);
    for (int64_t i = 0; i < n / QK8_0; i++, x += QK8_0)
        acc = vfmaq_n_f32(acc, i8x32_dot(vld1q_s8(b[i].qs), vld1q_s8(b[i].qs + 16), x), half_to_f32(b[i].d));
    return vaddvq_f32(acc);
}

/* GGUF Q4_K: 256 = 8 sub-blocks of 32, value d*sc*q - dmin*m; qs holds sub-blocks 2j
 * (low nibbles) and 2j+1 (high nibbles) in its bytes 32j..32j+31 */
static float dot_q4_K_neon(const void *w, const float *x, int64_t n) {
    const block_q4_K *b = w;
    float32x4_t acc = vdupq_n_f32(0), accm = acc;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float d = half_to_f32(b[i].d), dmin = half_to_f32(b[i].dmin);
        for (int j = 0; j < 4; j++, x += 64) {
            int sc0, m0, sc1, m1;
            get_scale_min_k4(2 * j, b[i].scales, &sc0, &m0);
            get_scale_min_k4(2 * j + 1, b[i].scales, &sc1, &m1);
            const uint8x16_t qa = vld1q_u8(b[i].qs + 32 * j), qb = vld1q_u8(b[i].qs + 32 * j + 16);
            acc = vfmaq_n_f32(acc, i8x32_dot(low_nibbles(qa), low_nibbles(qb), x), d * (float)sc0);
            acc = vfmaq_n_f32(acc, i8x32_dot(high_nibbles(qa), high_nibbles(qb), x + 32), d * (float)sc1);
            accm = vfmaq_n_f32(accm, sum32(x), dmin * (float)m0);
            accm = vfmaq_n_f32(accm, sum32(x + 32), dmin * (float)m1);
        }
    }
    return vaddvq_f32(vsubq_f32(acc, accm));
}

/* GGUF Q6_K: 256 = 2 halves of 128; element 32p + l of a half is (4 bits of ql, 2 of qh) - 32,
 * scaled by d * scales[8h + 2p + l / 16] */
static float dot_q6_K_neon(const void *w, const float *x, int64_t n) {
    const block_q6_K *b = w;
    const uint8x16_t m4 = vdupq_n_u8(0x0F), m2 = vdupq_n_u8(3);
    const int8x16_t c32 = vdupq_n_s8(32);
    float32x4_t acc = vdupq_n_f32(0);
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float d = half_to_f32(b[i].d);
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = b[i].ql + 64 * h, *qh = b[i].qh + 32 * h;
            const int8_t *sc = b[i].scales + 8 * h;
            for (int part = 0; part < 4; part++) {
                const uint8_t *lo = ql + 32 * (part % 2);
                /* a negative count shifts right */
                const int8x16_t lshift = vdupq_n_s8((int8_t)(-4 * (part / 2))), hshift = vdupq_n_s8((int8_t)(-2 * part));
                for (int half = 0; half < 2; half++, x += 16) {
                    const uint8x16_t l4 = vandq_u8(vshlq_u8(vld1q_u8(lo + 16 * half), lshift), m4);
                    const uint8x16_t h2 = vandq_u8(vshlq_u8(vld1q_u8(qh + 16 * half), hshift), m2);
                    const int8x16_t v = vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(l4, vshlq_n_u8(h2, 4))), c32);
                    acc = vfmaq_n_f32(acc, i8x16_dot(v, x), d * (float)sc[2 * part + half]);
                }
            }
        }
    }
    return vaddvq_f32(acc);
}

/* Attention over a block of cached rows (stride elements apart, hd a multiple of 8) */
static inline void attn_scores(const float *q, const void *k, size_t stride, int nk, int hd, int kind, float *s) {
    const size_t esz = kind == W_F16 ? 2 : 4;
    for (int t = 0; t < nk; t++) {
        const uint8_t *kt = (const uint8_t *)k + (size_t)t * stride * esz;
        float32x4_t a0 = vdupq_n_f32(0), a1 = a0;
        for (int d = 0; d < hd; d += 8) {
            a0 = vfmaq_f32(a0, load4(kt, d, kind), vld1q_f32(q + d));
            a1 = vfmaq_f32(a1, load4(kt, d + 4, kind), vld1q_f32(q + d + 4));
        }
        s[t] = vaddvq_f32(vaddq_f32(a0, a1));
    }
}

/* out[0..hd) += sum_t p[t] v_t, 8 elements of out held in registers across the block */
static inline void attn_values(float *out, const float *p, const void *v, size_t stride, int nk, int hd, int kind) {
    const size_t esz = kind == W_F16 ? 2 : 4;
    for (int d = 0; d < hd; d += 8) {
        float32x4_t a0 = vld1q_f32(out + d), a1 = vld1q_f32(out + d + 4);
        for (int t = 0; t < nk; t++) {
            const uint8_t *vt = (const uint8_t *)v + (size_t)t * stride * esz;
            a0 = vfmaq_n_f32(a0, load4(vt, d, kind), p[t]);
            a1 = vfmaq_n_f32(a1, load4(vt, d + 4, kind), p[t]);
        }
        vst1q_f32(out + d, a0);
        vst1q_f32(out + d + 4, a1);
    }
}

static void attn_scores_f16_neon(const float *q, const void *k, size_t stride, int nk, int hd, float *s) {
    attn_scores(q, k, stride, nk, hd, W_F16, s);
}
static void attn_scores_f32_neon(const float *q, const void *k, size_t stride, int nk, int hd, float *s) {
    attn_scores(q, k, stride, nk, hd, W_F32, s);
}
static void attn_values_f16_neon(float *out, const float *p, const void *v, size_t stride, int nk, int hd) {
    attn_values(out, p, v, stride, nk, hd, W_F16);
}
static void attn_values_f32_neon(float *out, const float *p, const void *v, size_t stride, int nk, int hd) {
    attn_values(out, p, v, stride, nk, hd, W_F32);
}

/* the exp of dot_isa.h on 4 lanes (FRINTN rounds to nearest even, as the x86 kernels do) */
static inline float32x4_t exp4(float32x4_t x) {
    x = vmaxq_f32(x, vdupq_n_f32(EXP_LO));
    const float32x4_t n = vrndnq_f32(vmulq_n_f32(x, EXP_LOG2E));
    float32x4_t r = vfmsq_f32(x, n, vdupq_n_f32(EXP_C1));
    r = vfmsq_f32(r, n, vdupq_n_f32(EXP_C2));
    float32x4_t y = vdupq_n_f32(exp_poly[0]);
    for (int i = 1; i < 6; i++) y = vfmaq_f32(vdupq_n_f32(exp_poly[i]), y, r);
    y = vfmaq_f32(vaddq_f32(r, vdupq_n_f32(1.0f)), y, vmulq_f32(r, r));
    const int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23);
    return vmulq_f32(y, vreinterpretq_f32_s32(e));
}

static float exp_sum_neon(float *s, int n, float m) {
    float32x4_t sum = vdupq_n_f32(0);
    const float32x4_t vm = vdupq_n_f32(m);
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        const float32x4_t e = exp4(vsubq_f32(vld1q_f32(s + i), vm));
        vst1q_f32(s + i, e);
        sum = vaddq_f32(sum, e);
    }
    float total = vaddvq_f32(sum);
    for (; i < n; i++) total += s[i] = expf(s[i] - m);
    return total;
}

static void silu_glu_neon(float *a, const float *b, int64_t n) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const float32x4_t x = vld1q_f32(a + i);
        const float32x4_t e = exp4(vminq_f32(vnegq_f32(x), vdupq_n_f32(88.0f)));
        vst1q_f32(a + i, vmulq_f32(vdivq_f32(x, vaddq_f32(vdupq_n_f32(1.0f), e)), vld1q_f32(b + i)));
    }
    for (; i < n; i++) a[i] = a[i] / (1.0f + expf(-a[i])) * b[i];
}

tl_gelu_glu_fn tl_silu_glu_kernel_neon(void) { return silu_glu_neon; }

tl_dot_fn tl_dot_kernel_neon(tl_dtype t) {
    switch (t) {
    case TL_F32: return dot_f32_neon;
    case TL_F16: return dot_f16_neon;
    case TL_BF16: return dot_bf16_neon;
    case TL_Q4_0: return dot_q4_0_neon;
    case TL_Q4_1: return dot_q4_1_neon;
    case TL_Q5_0: return dot_q5_0_neon;
    case TL_Q5_1: return dot_q5_1_neon;
    case TL_Q8_0: return dot_q8_0_neon;
    case TL_Q4_K: return dot_q4_K_neon;
    case TL_Q6_K: return dot_q6_K_neon;
    default: return NULL;
    }
}

tl_exp_sum_fn tl_exp_sum_kernel_neon(void) { return exp_sum_neon; }

/* dot.h's tl_attn_scores_rows_fn on 4 lanes: tiles of 4 rows x 4 keys, each row's 4 sums by two
 * pairwise adds; rows and keys past the ends repeat the last one, unstored */
static void attn_scores_rows_neon(const float *q, int nr, const float *k, int nk, int hd, float *s, int ld) {
    for (int r0 = 0; r0 < nr; r0 += 4) {
        const float *qr[4];
        for (int r = 0; r < 4; r++) qr[r] = q + (size_t)(r0 + r < nr ? r0 + r : nr - 1) * hd;
        for (int t0 = 0; t0 < nk; t0 += 4) {
            const float *kt[4];
            for (int t = 0; t < 4; t++) kt[t] = k + (size_t)(t0 + t < nk ? t0 + t : nk - 1) * hd;
            float32x4_t acc[4][4];
            for (int r = 0; r < 4; r++)
                for (int t = 0; t < 4; t++) acc[r][t] = vdupq_n_f32(0);
            for (int d = 0; d < hd; d += 4) {
                float32x4_t kv[4];
                for (int t = 0; t < 4; t++) kv[t] = vld1q_f32(kt[t] + d);
                for (int r = 0; r < 4; r++) {
                    const float32x4_t qv = vld1q_f32(qr[r] + d);
                    for (int t = 0; t < 4; t++) acc[r][t] = vfmaq_f32(acc[r][t], qv, kv[t]);
                }
            }
            for (int r = 0; r < 4 && r0 + r < nr; r++) {
                const float32x4_t z = vpaddq_f32(vpaddq_f32(acc[r][0], acc[r][1]), vpaddq_f32(acc[r][2], acc[r][3]));
                if (t0 + 4 <= nk) {
                    vst1q_f32(s + (size_t)(r0 + r) * ld + t0, z);
                } else {
                    float zs[4];
                    vst1q_f32(zs, z);
                    for (int t = 0; t < nk - t0; t++) s[(size_t)(r0 + r) * ld + t0 + t] = zs[t];
                }
            }
        }
    }
}

/* out_r += sum_t p[r ld + t] v_t: 4 rows x 16 columns of out in registers across the keys */
static void attn_values_rows_neon(float *out, int nr, const float *p, int ld, const float *v, int nk, int hd) {
    for (int r0 = 0; r0 < nr; r0 += 4) {
        const int rn = nr - r0 < 4 ? nr - r0 : 4;
        for (int d0 = 0; d0 < hd; d0 += 16) {
            const int cn = hd - d0 < 16 ? (hd - d0) / 4 : 4;
            float32x4_t acc[4][4];
            for (int r = 0; r < rn; r++)
                for (int c = 0; c < cn; c++) acc[r][c] = vld1q_f32(out + (size_t)(r0 + r) * hd + d0 + 4 * c);
            for (int t = 0; t < nk; t++) {
                float32x4_t vv[4];
                for (int c = 0; c < cn; c++) vv[c] = vld1q_f32(v + (size_t)t * hd + d0 + 4 * c);
                for (int r = 0; r < rn; r++) {
                    const float pt = p[(size_t)(r0 + r) * ld + t];
                    for (int c = 0; c < cn; c++) acc[r][c] = vfmaq_n_f32(acc[r][c], vv[c], pt);
                }
            }
            for (int r = 0; r < rn; r++)
                for (int c = 0; c < cn; c++) vst1q_f32(out + (size_t)(r0 + r) * hd + d0 + 4 * c, acc[r][c]);
        }
    }
}

void tl_attn_rows_kernels_neon(tl_attn_scores_rows_fn *scores, tl_attn_values_rows_fn *values) {
    *scores = attn_scores_rows_neon;
    *values = attn_values_rows_neon;
}

static void f16_widen_neon(const uint16_t *src, float *dst, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        vst1q_f32(dst + i, load4(src, i, W_F16));
        vst1q_f32(dst + i + 4, load4(src, i + 4, W_F16));
    }
    for (; i < n; i++) dst[i] = half_to_f32(src[i]);
}

tl_f16_widen_fn tl_f16_widen_kernel_neon(void) { return f16_widen_neon; }

static void q8_0_widen_neon(const void *src, float *dst, int64_t n) {
    const block_q8_0 *b = src;
    for (int64_t i = 0; i < n / QK8_0; i++, dst += QK8_0) {
        const float d = half_to_f32(b[i].d);
        for (int j = 0; j < QK8_0; j += 16) {
            const int8x16_t q = vld1q_s8(b[i].qs + j);
            const int16x8_t lo = vmovl_s8(vget_low_s8(q)), hi = vmovl_s8(vget_high_s8(q));
            vst1q_f32(dst + j, vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo))), d));
            vst1q_f32(dst + j + 4, vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_high_s16(lo))), d));
            vst1q_f32(dst + j + 8, vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi))), d));
            vst1q_f32(dst + j + 12, vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_high_s16(hi))), d));
        }
    }
}

tl_q8_0_widen_fn tl_q8_0_widen_kernel_neon(void) { return q8_0_widen_neon; }

void tl_attn_kernels_neon(tl_dtype kv, tl_attn_scores_fn *scores, tl_attn_values_fn *values) {
    *scores = kv == TL_F16 ? attn_scores_f16_neon : attn_scores_f32_neon;
    *values = kv == TL_F16 ? attn_values_f16_neon : attn_values_f32_neon;
}

#endif

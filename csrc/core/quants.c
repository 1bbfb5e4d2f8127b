/* GGUF quantized block formats: scalar row kernels (dequantize = to_float,
 * quantize = from_float), bit for bit on the layouts of quants.h.
 *
 * Dequantization performs the same float32 operations, in the same order, as
 * the gguf package's NumPy code (gguf-py/gguf/quants.py) and ggml's
 * dequantize_row_*; the build uses -ffp-contract=off, so no multiply-add is
 * fused and the results are identical.
 *
 * Quantization:
 *  - Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, TQ1_0, TQ2_0 reproduce gguf.quants.quantize
 *    (and ggml's quantize_row_*_ref) exactly: float32 scale, reciprocal by
 *    division, truncation after adding the offset + 0.5 (the 4/5-bit types),
 *    round half away from zero (Q8_0 and the ternary types).
 *  - The K-quants, Q8_1 and Q8_K follow ggml's reference quantizers
 *    (quantize_row_q*_K_ref with make_qx_quants / make_q3_quants /
 *    make_qkx2_quants), written again here from the algorithm.
 *
 * Inputs are assumed finite. Blocks whose scale underflows (all zero, or so
 * small that 1/d is infinite) give zero quants and a zero scale, never NaN;
 * blocks whose scale overflows half precision store an infinite scale, as
 * ggml does (the format cannot represent them). No input makes these kernels
 * perform undefined behaviour: every float-to-integer conversion is clamped
 * first. */
#include "quants.h"

#include "fp16.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* helpers                                                                   */
/* ------------------------------------------------------------------------ */

#define GROUP_MAX_EPS 1e-15f /* ggml: below this a group counts as all zero */

static inline int imin(int a, int b) { return a < b ? a : b; }
static inline int imax(int a, int b) { return a > b ? a : b; }
static inline int iclamp(int v, int lo, int hi) { return imin(hi, imax(lo, v)); }

/* Round to nearest, ties to even (ggml's nearest_int: add 1.5 * 2^23 and read
 * the mantissa). Saturates outside +-2^22 and maps NaN to 0 so that the
 * result is always defined; inside that range it is ggml's value exactly. */
static inline int nearest_int(float v) {
    if (!(fabsf(v) <= 4194303.0f)) v = v > 0.0f ? 4194303.0f : v < 0.0f ? -4194303.0f : 0.0f;
    float t = v + 12582912.0f;
    uint32_t bits = tl_f32_to_bits(t);
    return (int)(bits & 0x007fffffu) - 0x00400000;
}

/* Round half away from zero (C roundf; the gguf package's np_roundf), then
 * clamp to [lo, hi]. NaN gives 0. */
static inline int round_away_clamped(float v, int lo, int hi) {
    if (!(v == v)) return 0;
    if (v <= (float)lo) return lo;
    if (v >= (float)hi) return hi;
    return (int)roundf(v);
}

/* trunc(v) clamped to [0, hi], as the gguf package's
 * np.trunc(v).astype(np.uint8).clip(0, hi) for the v it can produce (v >= 0).
 * NaN and negative v give 0. */
static inline int trunc_clamped(float v, int hi) {
    if (!(v >= 0.0f)) return 0;
    if (v >= (float)hi) return hi;
    return (int)v;
}

/* Reciprocal of a block scale, 0 for a zero scale (gguf: np.where(d == 0, 0, 1 / d)). */
static inline float inv_or_zero(float d) { return d != 0.0f ? 1.0f / d : 0.0f; }

/* The element of largest magnitude, with its sign; the first one on ties
 * (gguf: abs(x).argmax(), then take_along_axis). */
static float signed_absmax(const float *x, int n) {
    float amax = fabsf(x[0]), max = x[0];
    for (int i = 1; i < n; i++) {
        float a = fabsf(x[i]);
        if (a > amax) {
            amax = a;
            max = x[i];
        }
    }
    return max;
}

static float absmax(const float *x, int n) {
    float amax = 0.0f;
    for (int i = 0; i < n; i++) {
        float a = fabsf(x[i]);
        if (a > amax) amax = a;
    }
    return amax;
}

static void min_max(const float *x, int n, float *mn, float *mx) {
    float lo = x[0], hi = x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < lo) lo = x[i];
        if (x[i] > hi) hi = x[i];
    }
    *mn = lo;
    *mx = hi;
}

/* ------------------------------------------------------------------------ */
/* Q4_0: 32 weights, f16 scale d, 4-bit quants q; w = d * (q - 8).          */
/* qs[j] holds element j (low nibble) and element j + 16 (high nibble).     */
/* ------------------------------------------------------------------------ */

void tl_dequantize_row_q4_0(const void *restrict src, float *restrict dst, int64_t n) {
    const block_q4_0 *b = src;
    for (int64_t i = 0; i < n / QK4_0; i++, dst += QK4_0) {
        const float d = tl_f16_to_f32(b[i].d);
        for (int j = 0; j < QK4_0 / 2; j++) {
            dst[j] = d * (float)((b[i].qs[j] & 0x0F) - 8);
            dst[j + QK4_0 / 2] = d * (float)((b[i].qs[j] >> 4) - 8);
        }
    }
}

void tl_quantize_row_q4_0(const float *restrict src, void *restrict dst, int64_t n) {
    block_q4_0 *b = dst;
    for (int64_t i = 0; i < n / QK4_0; i++, src += QK4_0) {
        /* the signed extreme maps to -8, so the range [-8, 7] is used asymmetrically */
        const float d = signed_absmax(src, QK4_0) / -8.0f;
        const float id = inv_or_zero(d);
        b[i].d = tl_f32_to_f16(d);
        for (int j = 0; j < QK4_0 / 2; j++) {
            int q0 = trunc_clamped(src[j] * id + 8.5f, 15);
            int q1 = trunc_clamped(src[j + QK4_0 / 2] * id + 8.5f, 15);
            b[i].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Q4_1: 32 weights, f16 scale d and offset m, 4-bit q; w = d * q + m.      */
/* ------------------------------------------------------------------------ */

void tl_dequantize_row_q4_1(const void *restrict src, float *restrict dst, int64_t n) {
    const block_q4_1 *b = src;
    for (int64_t i = 0; i < n / QK4_1; i++, dst += QK4_1) {
        const float d = tl_f16_to_f32(b[i].d), m = tl_f16_to_f32(b[i].m);
        for (int j = 0; j < QK4_1 / 2; j++) {
            dst[j] = d * (float)(b[i].qs[j] & 0x0F) + m;
            dst[j + QK4_1 / 2] = d * (float)(b[i].qs[j] >> 4) + m;
        }
    }
}

void tl_quantize_row_q4_1(const float *restrict src, void *restrict dst, int64_t n) {
    block_q4_1 *b = dst;
    for (int64_t i = 0; i < n / QK4_1; i++, src += QK4_1) {
        float mn, mx;
        min_max(src, QK4_1, &mn, &mx);
        const float d = (mx - mn) / 15.0f;
        const float id = inv_or_zero(d);
        b[i].d = tl_f32_to_f16(d);
        b[i].m = tl_f32_to_f16(mn);
        for (int j = 0; j < QK4_1 / 2; j++) {
            int q0 = trunc_clamped((src[j] - mn) * id + 0.5f, 15);
            int q1 = trunc_clamped((src[j + QK4_1 / 2] - mn) * id + 0.5f, 15);
            b[i].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Q5_0: 32 weights, f16 scale d, 5-bit q; w = d * (q - 16). The low nibbles */
/* pack as in Q4_0; bit 4 of element j is bit j of the little-endian qh.     */
/* ------------------------------------------------------------------------ */

static inline uint32_t load_u32le(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline void store_u32le(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

void tl_dequantize_row_q5_0(const void *restrict src, float *restrict dst, int64_t n) {
    const block_q5_0 *b = src;
    for (int64_t i = 0; i < n / QK5_0; i++, dst += QK5_0) {
        const float d = tl_f16_to_f32(b[i].d);
        const uint32_t qh = load_u32le(b[i].qh);
        for (int j = 0; j < QK5_0 / 2; j++) {
            int q0 = (b[i].qs[j] & 0x0F) | (int)((qh >> j) & 1) << 4;
            int q1 = (b[i].qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
            dst[j] = d * (float)(q0 - 16);
            dst[j + QK5_0 / 2] = d * (float)(q1 - 16);
        }
    }
}

void tl_quantize_row_q5_0(const float *restrict src, void *restrict dst, int64_t n) {
    block_q5_0 *b = dst;
    for (int64_t i = 0; i < n / QK5_0; i++, src += QK5_0) {
        const float d = signed_absmax(src, QK5_0) / -16.0f;
        const float id = inv_or_zero(d);
        b[i].d = tl_f32_to_f16(d);
        uint32_t qh = 0;
        for (int j = 0; j < QK5_0 / 2; j++) {
            int q0 = trunc_clamped(src[j] * id + 16.5f, 31);
            int q1 = trunc_clamped(src[j + QK5_0 / 2] * id + 16.5f, 31);
            b[i].qs[j] = (uint8_t)((q0 & 0x0F) | (q1 & 0x0F) << 4);
            qh |= (uint32_t)(q0 >> 4) << j;
            qh |= (uint32_t)(q1 >> 4) << (j + 16);
        }
        store_u32le(b[i].qh, qh);
    }
}

/* ------------------------------------------------------------------------ */
/* Q5_1: 32 weights, f16 d and m, 5-bit q (layout of Q5_0); w = d * q + m.   */
/* ------------------------------------------------------------------------ */

void tl_dequantize_row_q5_1(const void *restrict src, float *restrict dst, int64_t n) {
    const block_q5_1 *b = src;
    for (int64_t i = 0; i < n / QK5_1; i++, dst += QK5_1) {
        const float d = tl_f16_to_f32(b[i].d), m = tl_f16_to_f32(b[i].m);
        const uint32_t qh = load_u32le(b[i].qh);
        for (int j = 0; j < QK5_1 / 2; j++) {
            int q0 = (b[i].qs[j] & 0x0F) | (int)((qh >> j) & 1) << 4;
            int q1 = (b[i].qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
            dst[j] = d * (float)q0 + m;
            dst[j + QK5_1 / 2] = d * (float)q1 + m;
        }
    }
}

void tl_quantize_row_q5_1(const float *restrict src, void *restrict dst, int64_t n) {
    block_q5_1 *b = dst;
    for (int64_t i = 0; i < n / QK5_1; i++, src += QK5_1) {
        float mn, mx;
        min_max(src, QK5_1, &mn, &mx);
        const float d = (mx - mn) / 31.0f;
        const float id = inv_or_zero(d);
        b[i].d = tl_f32_to_f16(d);
        b[i].m = tl_f32_to_f16(mn);
        uint32_t qh = 0;
        for (int j = 0; j < QK5_1 / 2; j++) {
            int q0 = trunc_clamped((src[j] - mn) * id + 0.5f, 31);
            int q1 = trunc_clamped((src[j + QK5_1 / 2] - mn) * id + 0.5f, 31);
            b[i].qs[j] = (uint8_t)((q0 & 0x0F) | (q1 & 0x0F) << 4);
            qh |= (uint32_t)(q0 >> 4) << j;
            qh |= (uint32_t)(q1 >> 4) << (j + 16);
        }
        store_u32le(b[i].qh, qh);
    }
}

/* ------------------------------------------------------------------------ */
/* Q8_0: 32 weights, f16 scale d = absmax / 127, int8 q; w = q * d.          */
/* Q8_1: the same plus s = d * sum(q) (an activation format).                */
/* ------------------------------------------------------------------------ */

void tl_dequantize_row_q8_0(const void *restrict src, float *restrict dst, int64_t n) {
    const block_q8_0 *b = src;
    for (int64_t i = 0; i < n / QK8_0; i++, dst += QK8_0) {
        const float d = tl_f16_to_f32(b[i].d);
        for (int j = 0; j < QK8_0; j++) dst[j] = (float)b[i].qs[j] * d;
    }
}

void tl_quantize_row_q8_0(const float *restrict src, void *restrict dst, int64_t n) {
    block_q8_0 *b = dst;
    for (int64_t i = 0; i < n / QK8_0; i++, src += QK8_0) {
        const float d = absmax(src, QK8_0) / 127.0f;
        const float id = inv_or_zero(d);
        b[i].d = tl_f32_to_f16(d);
        for (int j = 0; j < QK8_0; j++) b[i].qs[j] = (int8_t)round_away_clamped(src[j] * id, -127, 127);
    }
}

void tl_dequantize_row_q8_1(const void *restrict src, float *restrict dst, int64_t n) {
    const block_q8_1 *b = src;
    for (int64_t i = 0; i < n / QK8_1; i++, dst += QK8_1) {
        const float d = tl_f16_to_f32(b[i].d);
        for (int j = 0; j < QK8_1; j++) dst[j] = (float)b[i].qs[j] * d;
    }
}

void tl_quantize_row_q8_1(const float *restrict src, void *restrict dst, int64_t n) {
    block_q8_1 *b = dst;
    for (int64_t i = 0; i < n / QK8_1; i++, src += QK8_1) {
        const float d = absmax(src, QK8_1) / 127.0f;
        const float id = inv_or_zero(d);
        b[i].d = tl_f32_to_f16(d);
        int sum = 0;
        for (int j = 0; j < QK8_1; j++) {
            int q = round_away_clamped(src[j] * id, -127, 127);
            b[i].qs[j] = (int8_t)q;
            sum += q;
        }
        b[i].s = tl_f32_to_f16((float)sum * d);
    }
}

/* ------------------------------------------------------------------------ */
/* K-quant building blocks (ggml-quants.c: make_qx_quants, make_q3_quants,   */
/* make_qkx2_quants). Each fits a scale (and for the "x2" kind a min) to one */
/* sub-block and returns the integer levels L.                               */
/* ------------------------------------------------------------------------ */

/* Symmetric levels in [-nmax, nmax - 1], weighted by x^2: start from the
 * scale that sends the signed extreme to -nmax, then try 18 nearby scales
 * (nmax +- 0.1 k) and keep the one with the best weighted least-squares fit.
 * L gets the levels offset by +nmax; returns the scale. */
static float make_qx_quants_x2(int n, int nmax, const float *x, int8_t *L) {
    float amax = 0.0f, max = 0.0f;
    for (int i = 0; i < n; i++) {
        float a = fabsf(x[i]);
        if (a > amax) {
            amax = a;
            max = x[i];
        }
    }
    if (amax < GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.0f;
    }
    float iscale = (float)(-nmax) / max;
    float sumlx = 0.0f, suml2 = 0.0f;
    for (int i = 0; i < n; i++) {
        int l = iclamp(nearest_int(iscale * x[i]), -nmax, nmax - 1);
        L[i] = (int8_t)(l + nmax);
        float w = x[i] * x[i];
        sumlx += w * x[i] * (float)l;
        suml2 += w * (float)l * (float)l;
    }
    float scale = suml2 != 0.0f ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0) continue;
        iscale = -((float)nmax + 0.1f * (float)is) / max;
        sumlx = suml2 = 0.0f;
        for (int i = 0; i < n; i++) {
            int l = iclamp(nearest_int(iscale * x[i]), -nmax, nmax - 1);
            float w = x[i] * x[i];
            sumlx += w * x[i] * (float)l;
            suml2 += w * (float)l * (float)l;
        }
        if (suml2 > 0.0f && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++)
                L[i] = (int8_t)(nmax + iclamp(nearest_int(iscale * x[i]), -nmax, nmax - 1));
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* Symmetric levels in [-nmax, nmax - 1] for Q3_K: start from the extreme's
 * scale, then up to 5 sweeps of coordinate descent, moving one level at a
 * time when that improves the x^2-weighted fit (sumlx^2 / suml2).
 * L gets the levels offset by +nmax; returns the scale. */
static float make_q3_quants_rmse(int n, int nmax, const float *x, int8_t *L) {
    float amax = 0.0f, max = 0.0f;
    for (int i = 0; i < n; i++) {
        float a = fabsf(x[i]);
        if (a > amax) {
            amax = a;
            max = x[i];
        }
    }
    if (amax < GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.0f;
    }
    const float iscale = (float)(-nmax) / max;
    float sumlx = 0.0f, suml2 = 0.0f;
    for (int i = 0; i < n; i++) {
        int l = iclamp(nearest_int(iscale * x[i]), -nmax, nmax - 1);
        L[i] = (int8_t)l;
        float w = x[i] * x[i];
        sumlx += w * x[i] * (float)l;
        suml2 += w * (float)l * (float)l;
    }
    for (int itry = 0; itry < 5; itry++) {
        int n_changed = 0;
        for (int i = 0; i < n; i++) {
            float w = x[i] * x[i];
            float slx = sumlx - w * x[i] * (float)L[i];
            if (slx > 0.0f) {
                float sl2 = suml2 - w * (float)L[i] * (float)L[i];
                int new_l = iclamp(nearest_int(x[i] * sl2 / slx), -nmax, nmax - 1);
                if (new_l != L[i]) {
                    slx += w * x[i] * (float)new_l;
                    sl2 += w * (float)new_l * (float)new_l;
                    if (sl2 > 0.0f && slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = (int8_t)new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed++;
                    }
                }
            }
        }
        if (!n_changed) break;
    }
    for (int i = 0; i < n; i++) L[i] = (int8_t)(L[i] + nmax);
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

/* Asymmetric levels in [0, nmax] with w = scale * L - min: start from the
 * min/max fit, then for nstep + 1 candidate inverse scales
 * (nmax + rmin + rdelta * k) / (max - min) solve the weighted least-squares
 * (scale, min) for the rounded levels and keep the lowest weighted error
 * (absolute error if use_mad, else squared). min is clamped to <= 0 and
 * returned negated in *the_min. */
static float make_qkx2_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L,
                              float *the_min, uint8_t *Laux, float rmin, float rdelta, int nstep,
                              bool use_mad) {
    float min = x[0], max = x[0];
    float sum_w = weights[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        float w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if (min > 0.0f) min = 0.0f;
    if (max == min) {
        memset(L, 0, (size_t)n);
        *the_min = -min;
        return 0.0f;
    }
    float iscale = (float)nmax / (max - min);
    float scale = 1.0f / iscale;
    float best_error = 0.0f;
    for (int i = 0; i < n; i++) {
        int l = iclamp(nearest_int(iscale * (x[i] - min)), 0, nmax);
        L[i] = (uint8_t)l;
        float diff = scale * (float)l + min - x[i];
        diff = use_mad ? fabsf(diff) : diff * diff;
        best_error += weights[i] * diff;
    }
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * (float)is + (float)nmax) / (max - min);
        float sum_l = 0.0f, sum_l2 = 0.0f, sum_xl = 0.0f;
        for (int i = 0; i < n; i++) {
            int l = iclamp(nearest_int(iscale * (x[i] - min)), 0, nmax);
            Laux[i] = (uint8_t)l;
            float w = weights[i];
            sum_l += w * (float)l;
            sum_l2 += w * (float)l * (float)l;
            sum_xl += w * (float)l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0.0f) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0.0f) {
                this_min = 0.0f;
                this_scale = sum_xl / sum_l2;
            }
            float cur_error = 0.0f;
            for (int i = 0; i < n; i++) {
                float diff = this_scale * (float)Laux[i] + this_min - x[i];
                diff = use_mad ? fabsf(diff) : diff * diff;
                cur_error += weights[i] * diff;
            }
            if (cur_error < best_error) {
                memcpy(L, Laux, (size_t)n);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

/* 2 bits per level, 4 levels per byte: byte j / 4 + l (j = 0, 128; l < 32)
 * holds elements j + l, j + l + 32, j + l + 64, j + l + 96 at shifts 0, 2, 4, 6
 * (the qs layout of Q2_K, and of the low bits of Q3_K). */
static void pack_2bit(const uint8_t *L, uint8_t *qs) {
    for (int j = 0; j < QK_K; j += 128)
        for (int l = 0; l < 32; l++)
            qs[j / 4 + l] = (uint8_t)((L[j + l] & 3) | (L[j + l + 32] & 3) << 2 |
                                      (L[j + l + 64] & 3) << 4 | (L[j + l + 96] & 3) << 6);
}

/* GGUF Q4_K/Q5_K: 8 six-bit scales and 8 six-bit mins in 12 bytes. Bytes 0-3
 * hold scales 0-3, bytes 4-7 mins 0-3 (low 6 bits each); bytes 8-11 hold the
 * low nibbles of scales/mins 4-7, whose top 2 bits sit in the top 2 bits of
 * bytes 0-3 (scales) and 4-7 (mins). */
static void set_scale_min_k4(uint8_t *q, const uint8_t *ls, const uint8_t *lm) {
    for (int j = 0; j < 4; j++) {
        q[j] = ls[j];
        q[j + 4] = lm[j];
    }
    for (int j = 4; j < 8; j++) {
        q[j + 4] = (uint8_t)((ls[j] & 0x0F) | (lm[j] & 0x0F) << 4);
        q[j - 4] |= (uint8_t)((ls[j] >> 4) << 6);
        q[j] |= (uint8_t)((lm[j] >> 4) << 6);
    }
}

/* GGUF Q3_K: 16 six-bit scales (stored biased by +32) in 12 bytes. Scale k:
 * low nibble in byte k (k < 8, bits 0-3) or byte k - 8 (bits 4-7); top 2 bits
 * in byte 8 + k % 4 at bit 2 * (k / 4). */
static inline int q3_k_scale(const uint8_t *s, int k) {
    int lo = k < 8 ? s[k] & 0x0F : s[k - 8] >> 4;
    int hi = (s[8 + k % 4] >> (2 * (k / 4))) & 3;
    return (lo | hi << 4) - 32;
}

/* ------------------------------------------------------------------------ */
/* Q2_K: 256 weights in 16 sub-blocks of 16; per sub-block a 4-bit scale and */
/* 4-bit min (scales[k] = sc | m << 4) under f16 d and dmin; 2-bit q;        */
/* w = d * sc * q - dmin * m.                                                */
/* ------------------------------------------------------------------------ */

void tl_dequantize_row_q2_K(const void *restrict src, float *restrict dst, int64_t n) {
    const block_q2_K *b = src;
    for (int64_t i = 0; i < n / QK_K; i++, dst += QK_K) {
        const float d = tl_f16_to_f32(b[i].d), dmin = tl_f16_to_f32(b[i].dmin);
        for (int e = 0; e < QK_K; e += 16) {
            /* element e + l lives in byte (e / 128) * 32 + (e % 32) + l at shift 2 * ((e % 128) / 32) */
            const uint8_t sc = b[i].scales[e / 16];
            const float dl = d * (float)(sc & 0x0F), ml = dmin * (float)(sc >> 4);
            const uint8_t *q = b[i].qs + (e / 128) * 32 + (e % 32);
            const int shift = 2 * ((e % 128) / 32);
            for (int l = 0; l < 16; l++) dst[e + l] = dl * (float)((q[l] >> shift) & 3) - ml;
        }
    }
}

void tl_quantize_row_q2_K(const float *restrict src, void *restrict dst, int64_t n) {
    block_q2_K *b = dst;
    uint8_t L[QK_K], Laux[16];
    float weights[16], mins[QK_K / 16], scales[QK_K / 16];
    const float q4scale = 15.0f;
    for (int64_t i = 0; i < n / QK_K; i++, src += QK_K) {
        const float *x = src;
        float max_scale = 0.0f, max_min = 0.0f; /* the min is subtracted: scales are >= 0 */
        for (int j = 0; j < QK_K / 16; j++) {
            for (int l = 0; l < 16; l++) weights[l] = fabsf(x[16 * j + l]);
            scales[j] = make_qkx2_quants(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux, -0.5f,
                                         0.1f, 15, true);
            if (scales[j] > max_scale) max_scale = scales[j];
            if (mins[j] > max_min) max_min = mins[j];
        }
        if (max_scale > 0.0f) {
            const float iscale = q4scale / max_scale;
            for (int j = 0; j < QK_K / 16; j++)
                b[i].scales[j] = (uint8_t)iclamp(nearest_int(iscale * scales[j]), 0, 15);
            b[i].d = tl_f32_to_f16(max_scale / q4scale);
        } else {
            memset(b[i].scales, 0, sizeof b[i].scales);
            b[i].d = tl_f32_to_f16(0.0f);
        }
        if (max_min > 0.0f) {
            const float iscale = q4scale / max_min;
            for (int j = 0; j < QK_K / 16; j++)
                b[i].scales[j] |= (uint8_t)(iclamp(nearest_int(iscale * mins[j]), 0, 15) << 4);
            b[i].dmin = tl_f32_to_f16(max_min / q4scale);
        } else {
            b[i].dmin = tl_f32_to_f16(0.0f);
        }
        /* requantize against the scales as stored */
        const float dd = tl_f16_to_f32(b[i].d), dm = tl_f16_to_f32(b[i].dmin);
        for (int j = 0; j < QK_K / 16; j++) {
            const float d = dd * (float)(b[i].scales[j] & 0x0F);
            if (d == 0.0f) continue;
            const float m = dm * (float)(b[i].scales[j] >> 4);
            for (int l = 0; l < 16; l++)
                L[16 * j + l] = (uint8_t)iclamp(nearest_int((x[16 * j + l] + m) / d), 0, 3);
        }
        pack_2bit(L, b[i].qs);
    }
}

/* ------------------------------------------------------------------------ */
/* Q3_K: 256 weights in 16 sub-blocks of 16; 6-bit signed scales under f16  */
/* d; 3-bit q = 2 low bits in qs (Q2_K layout) + a high bit in hmask        */
/* (element e: hmask[e % 32], bit e / 32); w = d * sc * (q - 4).             */
/* ------------------------------------------------------------------------ */

void tl_dequantize_row_q3_K(const void *restrict src, float *restrict dst, int64_t n) {
    const block_q3_K *b = src;
    for (int64_t i = 0; i < n / QK_K; i++, dst += QK_K) {
        const float d = tl_f16_to_f32(b[i].d);
        for (int e = 0; e < QK_K; e += 16) {
            const float dl = d * (float)q3_k_scale(b[i].scales, e / 16);
            const uint8_t *q = b[i].qs + (e / 128) * 32 + (e % 32);
            const uint8_t *hm = b[i].hmask + (e % 32);
            const int shift = 2 * ((e % 128) / 32);
            const int hbit = e / 32;
            for (int l = 0; l < 16; l++) {
                /* the high bit set means "no -4 offset" */
                int v = ((q[l] >> shift) & 3) - (((hm[l] >> hbit) & 1) ? 0 : 4);
                dst[e + l] = dl * (float)v;
            }
        }
    }
}

void tl_quantize_row_q3_K(const float *restrict src, void *restrict dst, int64_t n) {
    block_q3_K *b = dst;
    int8_t L[QK_K];
    float scales[QK_K / 16];
    for (int64_t i = 0; i < n / QK_K; i++, src += QK_K) {
        const float *x = src;
        float max_scale = 0.0f, amax = 0.0f;
        for (int j = 0; j < QK_K / 16; j++) {
            scales[j] = make_q3_quants_rmse(16, 4, x + 16 * j, L + 16 * j);
            float a = fabsf(scales[j]);
            if (a > amax) {
                amax = a;
                max_scale = scales[j];
            }
        }
        memset(b[i].scales, 0, sizeof b[i].scales);
        if (max_scale != 0.0f) {
            const float iscale = -32.0f / max_scale;
            for (int j = 0; j < QK_K / 16; j++) {
                int l = iclamp(nearest_int(iscale * scales[j]), -32, 31) + 32;
                if (j < 8)
                    b[i].scales[j] = (uint8_t)(l & 0x0F);
                else
                    b[i].scales[j - 8] |= (uint8_t)((l & 0x0F) << 4);
                b[i].scales[8 + j % 4] |= (uint8_t)((l >> 4) << (2 * (j / 4)));
            }
            b[i].d = tl_f32_to_f16(1.0f / iscale);
        } else {
            b[i].d = tl_f32_to_f16(0.0f);
        }
        const float dd = tl_f16_to_f32(b[i].d);
        for (int j = 0; j < QK_K / 16; j++) {
            const float d = dd * (float)q3_k_scale(b[i].scales, j);
            if (d == 0.0f) continue;
            for (int l = 0; l < 16; l++)
                L[16 * j + l] = (int8_t)(iclamp(nearest_int(x[16 * j + l] / d), -4, 3) + 4);
        }
        memset(b[i].hmask, 0, sizeof b[i].hmask);
        uint8_t low[QK_K];
        for (int e = 0; e < QK_K; e++) {
            int l = L[e];
            if (l > 3) {
                b[i].hmask[e % 32] |= (uint8_t)(1u << (e / 32));
                l -= 4;
            }
            low[e] = (uint8_t)l;
        }
        pack_2bit(low, b[i].qs);
    }
}

/* ------------------------------------------------------------------------ */
/* Q4_K: 256 weights in 8 sub-blocks of 32, 6-bit scales and mins under f16 */
/* d and dmin; 4-bit q: byte 32 c + l holds element 64 c + l (low nibble)   */
/* and 64 c + 32 + l (high); w = d * sc * q - dmin * m.                      */
/* Q5_K adds a fifth bit: element e has bit e / 32 of qh[e % 32].            */
/* ------------------------------------------------------------------------ */

void tl_dequantize_row_q4_K(const void *restrict src, float *restrict dst, int64_t n) {
    const block_q4_K *b = src;
    for (int64_t i = 0; i < n / QK_K; i++, dst += QK_K) {
        const float d = tl_f16_to_f32(b[i].d), dmin = tl_f16_to_f32(b[i].dmin);
        /* each 32 bytes of qs hold two sub-blocks: low nibbles, then high nibbles */
        for (int s = 0; s < QK_K / 32; s += 2) {
            int sc0, m0, sc1, m1;
            get_scale_min_k4(s, b[i].scales, &sc0, &m0);
            get_scale_min_k4(s + 1, b[i].scales, &sc1, &m1);
            const float d0 = d * (float)sc0, n0 = dmin * (float)m0;
            const float d1 = d * (float)sc1, n1 = dmin * (float)m1;
            const uint8_t *q = b[i].qs + (s / 2) * 32;
            float *y = dst + 32 * s;
            for (int l = 0; l < 32; l++) y[l] = d0 * (float)(q[l] & 0x0F) - n0;
            for (int l = 0; l < 32; l++) y[32 + l] = d1 * (float)(q[l] >> 4) - n1;
        }
    }
}

void tl_dequantize_row_q5_K(const void *restrict src, float *restrict dst, int64_t n) {
    const block_q5_K *b = src;
    for (int64_t i = 0; i < n / QK_K; i++, dst += QK_K) {
        const float d = tl_f16_to_f32(b[i].d), dmin = tl_f16_to_f32(b[i].dmin);
        for (int s = 0; s < QK_K / 32; s++) {
            int sc, m;
            get_scale_min_k4(s, b[i].scales, &sc, &m);
            const float d1 = d * (float)sc, m1 = dmin * (float)m;
            const uint8_t *q = b[i].qs + (s / 2) * 32;
            const int shift = 4 * (s % 2);
            for (int l = 0; l < 32; l++) {
                int v = ((q[l] >> shift) & 0x0F) | ((b[i].qh[l] >> s) & 1) << 4;
                dst[32 * s + l] = d1 * (float)v - m1;
            }
        }
    }
}

/* Shared by Q4_K and Q5_K (ggml's quantize_row_q4_K_ref / q5_K_ref): fit each
 * sub-block of 32 with make_qkx2_quants (weights av|x| + |x|), quantize the 8
 * scales and 8 mins to 6 bits against their maxima, then requantize every
 * weight against the stored scales. Levels go to L (0..nmax). */
static void quantize_k_scale_min(const float *x, int nmax, float rmin, float rdelta, int nstep,
                                 tl_half *d_out, tl_half *dmin_out, uint8_t *scales_out, uint8_t *L) {
    uint8_t Laux[32];
    float weights[32], mins[QK_K / 32], scales[QK_K / 32];
    float max_scale = 0.0f, max_min = 0.0f;
    for (int j = 0; j < QK_K / 32; j++) {
        float sum_x2 = 0.0f;
        for (int l = 0; l < 32; l++) sum_x2 += x[32 * j + l] * x[32 * j + l];
        const float av_x = sqrtf(sum_x2 / 32.0f);
        for (int l = 0; l < 32; l++) weights[l] = av_x + fabsf(x[32 * j + l]);
        scales[j] = make_qkx2_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, rmin,
                                     rdelta, nstep, false);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    const float inv_scale = max_scale > 0.0f ? 63.0f / max_scale : 0.0f;
    const float inv_min = max_min > 0.0f ? 63.0f / max_min : 0.0f;
    uint8_t ls[QK_K / 32], lm[QK_K / 32];
    for (int j = 0; j < QK_K / 32; j++) {
        ls[j] = (uint8_t)iclamp(nearest_int(inv_scale * scales[j]), 0, 63);
        lm[j] = (uint8_t)iclamp(nearest_int(inv_min * mins[j]), 0, 63);
    }
    set_scale_min_k4(scales_out, ls, lm);
    *d_out = tl_f32_to_f16(max_scale / 63.0f);
    *dmin_out = tl_f32_to_f16(max_min / 63.0f);

    const float dd = tl_f16_to_f32(*d_out), dm = tl_f16_to_f32(*dmin_out);
    for (int j = 0; j < QK_K / 32; j++) {
        int sc, m;
        get_scale_min_k4(j, scales_out, &sc, &m);
        const float d = dd * (float)sc;
        if (d == 0.0f) continue;
        const float mm = dm * (float)m;
        for (int l = 0; l < 32; l++)
            L[32 * j + l] = (uint8_t)iclamp(nearest_int((x[32 * j + l] + mm) / d), 0, nmax);
    }
}

void tl_quantize_row_q4_K(const float *restrict src, void *restrict dst, int64_t n) {
    block_q4_K *b = dst;
    uint8_t L[QK_K];
    for (int64_t i = 0; i < n / QK_K; i++, src += QK_K) {
        quantize_k_scale_min(src, 15, -1.0f, 0.1f, 20, &b[i].d, &b[i].dmin, b[i].scales, L);
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++)
                b[i].qs[32 * c + l] = (uint8_t)(L[64 * c + l] | L[64 * c + 32 + l] << 4);
    }
}

void tl_quantize_row_q5_K(const float *restrict src, void *restrict dst, int64_t n) {
    block_q5_K *b = dst;
    uint8_t L[QK_K];
    for (int64_t i = 0; i < n / QK_K; i++, src += QK_K) {
        quantize_k_scale_min(src, 31, -0.5f, 0.1f, 15, &b[i].d, &b[i].dmin, b[i].scales, L);
        memset(b[i].qh, 0, sizeof b[i].qh);
        for (int e = 0; e < QK_K; e++)
            if (L[e] > 15) b[i].qh[e % 32] |= (uint8_t)(1u << (e / 32));
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++)
                b[i].qs[32 * c + l] = (uint8_t)((L[64 * c + l] & 0x0F) | (L[64 * c + 32 + l] & 0x0F) << 4);
    }
}

/* ------------------------------------------------------------------------ */
/* Q6_K: 256 weights in 16 sub-blocks of 16, int8 scales under f16 d; 6-bit */
/* q = 4 low bits in ql + 2 high bits in qh; w = d * sc * (q - 32).          */
/* Per half h of 128: ql[64 h + l] holds elements l (low nibble) and l + 64  */
/* (high), ql[64 h + 32 + l] elements l + 32 and l + 96; qh[32 h + l] holds  */
/* the top bits of l, l + 32, l + 64, l + 96 at shifts 0, 2, 4, 6.           */
/* ------------------------------------------------------------------------ */

void tl_dequantize_row_q6_K(const void *restrict src, float *restrict dst, int64_t n) {
    const block_q6_K *b = src;
    for (int64_t i = 0; i < n / QK_K; i++, dst += QK_K) {
        const float d = tl_f16_to_f32(b[i].d);
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = b[i].ql + 64 * h, *qh = b[i].qh + 32 * h;
            const int8_t *sc = b[i].scales + 8 * h;
            float *y = dst + 128 * h;
            /* element 32 part + l of this half: 4 low bits from ql, 2 high bits from qh;
             * its scale is sc[(32 part + l) / 16], one per 16 elements */
            for (int part = 0; part < 4; part++) {
                const uint8_t *lo = ql + 32 * (part % 2);
                const int lshift = 4 * (part / 2), hshift = 2 * part;
                for (int half = 0; half < 2; half++) {
                    const float dl = d * (float)sc[2 * part + half];
                    for (int l = 16 * half; l < 16 * half + 16; l++) {
                        int v = (((lo[l] >> lshift) & 0x0F) | ((qh[l] >> hshift) & 3) << 4) - 32;
                        y[32 * part + l] = dl * (float)v;
                    }
                }
            }
        }
    }
}

void tl_quantize_row_q6_K(const float *restrict src, void *restrict dst, int64_t n) {
    block_q6_K *b = dst;
    int8_t L[QK_K];
    float scales[QK_K / 16];
    for (int64_t i = 0; i < n / QK_K; i++, src += QK_K) {
        const float *x = src;
        float max_scale = 0.0f, max_abs_scale = 0.0f;
        for (int j = 0; j < QK_K / 16; j++) {
            scales[j] = make_qx_quants_x2(16, 32, x + 16 * j, L + 16 * j);
            float a = fabsf(scales[j]);
            if (a > max_abs_scale) {
                max_abs_scale = a;
                max_scale = scales[j];
            }
        }
        if (max_abs_scale < GROUP_MAX_EPS) {
            memset(&b[i], 0, sizeof b[i]);
            continue;
        }
        const float iscale = -128.0f / max_scale;
        b[i].d = tl_f32_to_f16(1.0f / iscale);
        for (int j = 0; j < QK_K / 16; j++)
            b[i].scales[j] = (int8_t)iclamp(nearest_int(iscale * scales[j]), -128, 127);
        const float dd = tl_f16_to_f32(b[i].d);
        for (int j = 0; j < QK_K / 16; j++) {
            const float d = dd * (float)b[i].scales[j];
            if (d == 0.0f) continue;
            for (int l = 0; l < 16; l++)
                L[16 * j + l] = (int8_t)(iclamp(nearest_int(x[16 * j + l] / d), -32, 31) + 32);
        }
        for (int h = 0; h < 2; h++) {
            const int8_t *Lh = L + 128 * h;
            uint8_t *ql = b[i].ql + 64 * h, *qh = b[i].qh + 32 * h;
            for (int l = 0; l < 32; l++) {
                ql[l] = (uint8_t)((Lh[l] & 0x0F) | (Lh[l + 64] & 0x0F) << 4);
                ql[l + 32] = (uint8_t)((Lh[l + 32] & 0x0F) | (Lh[l + 96] & 0x0F) << 4);
                qh[l] = (uint8_t)((Lh[l] >> 4) | (Lh[l + 32] >> 4) << 2 | (Lh[l + 64] >> 4) << 4 |
                                  (Lh[l + 96] >> 4) << 6);
            }
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Q8_K: 256 weights, float32 scale d, int8 q, and bsums[k] = sum of the 16 */
/* quants k*16..k*16+15 (an activation format for the K-quant dot products); */
/* w = d * q. The signed extreme maps to -127 (ggml's quantize_row_q8_K_ref).*/
/* ------------------------------------------------------------------------ */

void tl_dequantize_row_q8_K(const void *restrict src, float *restrict dst, int64_t n) {
    const block_q8_K *b = src;
    for (int64_t i = 0; i < n / QK_K; i++, dst += QK_K) {
        const float d = b[i].d;
        for (int j = 0; j < QK_K; j++) dst[j] = d * (float)b[i].qs[j];
    }
}

void tl_quantize_row_q8_K(const float *restrict src, void *restrict dst, int64_t n) {
    block_q8_K *b = dst;
    for (int64_t i = 0; i < n / QK_K; i++, src += QK_K) {
        const float max = signed_absmax(src, QK_K);
        const float iscale = max != 0.0f ? -127.0f / max : 0.0f;
        if (!isfinite(iscale) || iscale == 0.0f) {
            /* all zero, or so tiny that the inverse scale overflows: store zeros */
            memset(&b[i], 0, sizeof b[i]);
            continue;
        }
        for (int j = 0; j < QK_K; j++) b[i].qs[j] = (int8_t)iclamp(nearest_int(iscale * src[j]), -128, 127);
        for (int k = 0; k < QK_K / 16; k++) {
            int sum = 0;
            for (int l = 0; l < 16; l++) sum += b[i].qs[16 * k + l];
            b[i].bsums[k] = (int16_t)sum;
        }
        b[i].d = 1.0f / iscale;
    }
}

/* ------------------------------------------------------------------------ */
/* TQ1_0 (ternary, BitNet b1.58): 256 weights, f16 d = absmax, trits        */
/* t in {0, 1, 2} for w = d * (t - 1), five trits per byte in base 3 stored  */
/* as ceil(v * 256 / 243) so that trit k is ((byte * 3^k mod 256) * 3) >> 8. */
/* qs[0..31]: elements 32 k + m (k < 5) of byte m; qs[32..47]: elements      */
/* 160 + 16 k + m; qh[0..3]: elements 240 + 4 k + m (k < 4).                 */
/* ------------------------------------------------------------------------ */

static const uint8_t pow3[5] = {1, 3, 9, 27, 81};

static inline float ternary(uint8_t byte, int k) {
    uint8_t q = (uint8_t)(byte * pow3[k]); /* wraps mod 256 on purpose */
    return (float)((((uint16_t)q * 3) >> 8) - 1);
}

void tl_dequantize_row_tq1_0(const void *restrict src, float *restrict dst, int64_t n) {
    const block_tq1_0 *b = src;
    for (int64_t i = 0; i < n / QK_K; i++, dst += QK_K) {
        const float d = tl_f16_to_f32(b[i].d);
        for (int k = 0; k < 5; k++)
            for (int m = 0; m < 32; m++) dst[32 * k + m] = d * ternary(b[i].qs[m], k);
        for (int k = 0; k < 5; k++)
            for (int m = 0; m < 16; m++) dst[160 + 16 * k + m] = d * ternary(b[i].qs[32 + m], k);
        for (int k = 0; k < 4; k++)
            for (int m = 0; m < 4; m++) dst[240 + 4 * k + m] = d * ternary(b[i].qh[m], k);
    }
}

/* base-3 digits t[0] (most significant) .. t[count-1], padded to 5 trits, as
 * the byte ceil(v * 256 / 243) */
static inline uint8_t pack_trits(const int *t, int count) {
    unsigned v = 0;
    for (int k = 0; k < 5; k++) v = v * 3 + (unsigned)(k < count ? t[k] : 0);
    return (uint8_t)((v * 256 + 242) / 243);
}

void tl_quantize_row_tq1_0(const float *restrict src, void *restrict dst, int64_t n) {
    block_tq1_0 *b = dst;
    int t[QK_K];
    for (int64_t i = 0; i < n / QK_K; i++, src += QK_K) {
        const float d = absmax(src, QK_K);
        const float id = inv_or_zero(d);
        b[i].d = tl_f32_to_f16(d);
        for (int j = 0; j < QK_K; j++) t[j] = round_away_clamped(src[j] * id, -1, 1) + 1;
        int g[5];
        for (int m = 0; m < 32; m++) {
            for (int k = 0; k < 5; k++) g[k] = t[32 * k + m];
            b[i].qs[m] = pack_trits(g, 5);
        }
        for (int m = 0; m < 16; m++) {
            for (int k = 0; k < 5; k++) g[k] = t[160 + 16 * k + m];
            b[i].qs[32 + m] = pack_trits(g, 5);
        }
        for (int m = 0; m < 4; m++) {
            for (int k = 0; k < 4; k++) g[k] = t[240 + 4 * k + m];
            b[i].qh[m] = pack_trits(g, 4);
        }
    }
}

/* ------------------------------------------------------------------------ */
/* TQ2_0 (ternary): 256 weights, f16 d = absmax, 2-bit t in {0, 1, 2},      */
/* w = d * (t - 1); byte 32 g + m holds elements 128 g + 32 k + m at 2 k.    */
/* ------------------------------------------------------------------------ */

void tl_dequantize_row_tq2_0(const void *restrict src, float *restrict dst, int64_t n) {
    const block_tq2_0 *b = src;
    for (int64_t i = 0; i < n / QK_K; i++, dst += QK_K) {
        const float d = tl_f16_to_f32(b[i].d);
        for (int g = 0; g < 2; g++)
            for (int k = 0; k < 4; k++)
                for (int m = 0; m < 32; m++)
                    dst[128 * g + 32 * k + m] = d * (float)(((b[i].qs[32 * g + m] >> (2 * k)) & 3) - 1);
    }
}

void tl_quantize_row_tq2_0(const float *restrict src, void *restrict dst, int64_t n) {
    block_tq2_0 *b = dst;
    for (int64_t i = 0; i < n / QK_K; i++, src += QK_K) {
        const float d = absmax(src, QK_K);
        const float id = inv_or_zero(d);
        b[i].d = tl_f32_to_f16(d);
        for (int g = 0; g < 2; g++)
            for (int m = 0; m < 32; m++) {
                unsigned byte = 0;
                for (int k = 0; k < 4; k++)
                    byte |= (unsigned)(round_away_clamped(src[128 * g + 32 * k + m] * id, -1, 1) + 1) << (2 * k);
                b[i].qs[32 * g + m] = (uint8_t)byte;
            }
    }
}

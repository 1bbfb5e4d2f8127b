/* Quantized-activation matmul kernels: the activation quantizers, the portable (scalar)
 * repack and GEMM that define the arithmetic, and the choice per dispatch level. The
 * x86 kernels are in dot_q8_x86.c (AVX-512 VNNI) and dot_q8_avx2.c, the AArch64 ones in
 * dot_q8_neon.c. */
#include "dot_q8.h"

#include "cpu.h"
#include "fp16.h"
#include "quants.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* How one row of a format becomes codes (into lane r of a pack), a and b */
typedef void (*unpack_fn)(tl_dtype t, const void *row, int64_t k, uint8_t *codes, int r, float *a, float *b);

/* One weight format in the common shape: its sub-block size, the activation block it pairs
 * with (32: Q8_0-style, 256: Q8_K-style), and its portable repack. */
typedef struct {
    int g, act_block;
    tl_q8_quantize_fn quantize;
    tl_q8_pack_fn pack;
} q8_format;

/* the code of element e of the row in lane r of a pack */
static inline void put_code(uint8_t *codes, int r, int64_t e, int v) {
    codes[(e >> 2) * 4 * TL_Q8_LANES + r * 4 + (e & 3)] = (uint8_t)v;
}

/* The legacy formats, blocks of 32 (GGUF layouts, quants.h): Q4_0 d·(q - 8), Q4_1 d·q + m,
 * Q5_0 d·(q - 16), Q5_1 d·q + m (the 5th bit of element j is bit j of qh), Q8_0 d·q with the
 * code q + 128 so that it is unsigned. Low nibbles are elements 0..15, high nibbles 16..31. */
static void unpack_legacy(tl_dtype t, const void *row, int64_t k, uint8_t *codes, int r, float *a, float *b) {
    const size_t bytes = tl_dtype_row_size(t, 32);
    for (int64_t i = 0; i < k / 32; i++) {
        const uint8_t *blk = (const uint8_t *)row + (size_t)i * bytes;
        const uint8_t *qs, *qh = NULL;
        tl_half d, m = 0;
        float bias = 0.0f; /* times d, for the formats without a stored minimum */
        switch (t) {
        case TL_Q4_0: d = ((const block_q4_0 *)blk)->d, qs = ((const block_q4_0 *)blk)->qs, bias = -8.0f; break;
        case TL_Q4_1: d = ((const block_q4_1 *)blk)->d, m = ((const block_q4_1 *)blk)->m, qs = ((const block_q4_1 *)blk)->qs; break;
        case TL_Q5_0:
            d = ((const block_q5_0 *)blk)->d, qs = ((const block_q5_0 *)blk)->qs, qh = ((const block_q5_0 *)blk)->qh, bias = -16.0f;
            break;
        case TL_Q5_1:
            d = ((const block_q5_1 *)blk)->d, m = ((const block_q5_1 *)blk)->m, qs = ((const block_q5_1 *)blk)->qs,
            qh = ((const block_q5_1 *)blk)->qh;
            break;
        default: d = ((const block_q8_0 *)blk)->d, qs = (const uint8_t *)((const block_q8_0 *)blk)->qs, bias = -128.0f; break;
        }
        const float df = tl_f16_to_f32(d);
        a[i * TL_Q8_LANES + r] = df;
        b[i * TL_Q8_LANES + r] = bias != 0.0f ? bias * df : tl_f16_to_f32(m);
        const uint32_t h = qh ? (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24 : 0;
        for (int j = 0; j < 32; j++) {
            const int code = t == TL_Q8_0 ? (int8_t)qs[j] + 128 : (j < 16 ? qs[j] & 15 : qs[j - 16] >> 4) | (int)((h >> j) & 1) << 4;
            put_code(codes, r, 32 * i + j, code);
        }
    }
}

/* GGUF Q4_K and Q5_K: 256 = 8 sub-blocks of 32, value d·sc·q - dmin·m (6-bit sc, m); qs bytes
 * 32j..32j+31 hold sub-block 2j in their low nibbles and 2j+1 in their high nibbles; Q5_K's
 * 5th bit of element l of sub-block s is bit s of qh[l]. d·sc and dmin·m are exact in float
 * (11 + 6 significant bits). */
static void unpack_k4(const uint8_t *qs, const uint8_t *qh, const uint8_t *scales, tl_half dh, tl_half dminh, int64_t i,
                      uint8_t *codes, int r, float *a, float *b) {
    const float d = tl_f16_to_f32(dh), dmin = tl_f16_to_f32(dminh);
    for (int s = 0; s < 8; s++) {
        int sc, m;
        get_scale_min_k4(s, scales, &sc, &m);
        a[(8 * i + s) * TL_Q8_LANES + r] = d * (float)sc;
        b[(8 * i + s) * TL_Q8_LANES + r] = -(dmin * (float)m);
        const uint8_t *q = qs + 32 * (s / 2);
        for (int l = 0; l < 32; l++) {
            const int high = qh ? (qh[l] >> s & 1) << 4 : 0;
            put_code(codes, r, QK_K * i + 32 * s + l, (s % 2 ? q[l] >> 4 : q[l] & 15) | high);
        }
    }
}

static void unpack_q4_K(tl_dtype t, const void *row, int64_t k, uint8_t *codes, int r, float *a, float *b) {
    const block_q4_K *x = row;
    (void)t;
    for (int64_t i = 0; i < k / QK_K; i++) unpack_k4(x[i].qs, NULL, x[i].scales, x[i].d, x[i].dmin, i, codes, r, a, b);
}

static void unpack_q5_K(tl_dtype t, const void *row, int64_t k, uint8_t *codes, int r, float *a, float *b) {
    const block_q5_K *x = row;
    (void)t;
    for (int64_t i = 0; i < k / QK_K; i++) unpack_k4(x[i].qs, x[i].qh, x[i].scales, x[i].d, x[i].dmin, i, codes, r, a, b);
}

/* GGUF Q6_K: 256 = 16 sub-blocks of 16, value d·sc·(q - 32) with int8 sc; in each half of 128,
 * element l + 32p (l < 32) has the low 4 bits of ql[l + 32(p % 2)] (high nibble for p >= 2)
 * and bits 2p, 2p+1 of qh[l]. */
static void unpack_q6_K(tl_dtype t, const void *row, int64_t k, uint8_t *codes, int r, float *a, float *b) {
    const block_q6_K *x = row;
    (void)t;
    for (int64_t i = 0; i < k / QK_K; i++) {
        const float d = tl_f16_to_f32(x[i].d);
        for (int s = 0; s < 16; s++) {
            const float ds = d * (float)x[i].scales[s];
            a[(16 * i + s) * TL_Q8_LANES + r] = ds;
            b[(16 * i + s) * TL_Q8_LANES + r] = -32.0f * ds;
        }
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = x[i].ql + 64 * h, *qh = x[i].qh + 32 * h;
            for (int p = 0; p < 4; p++)
                for (int l = 0; l < 32; l++) {
                    const int lo = p < 2 ? ql[l + 32 * p] & 15 : ql[l + 32 * (p - 2)] >> 4;
                    put_code(codes, r, QK_K * i + 128 * h + 32 * p + l, lo | ((qh[l] >> (2 * p)) & 3) << 4);
                }
        }
    }
}

/* Activations: x quantized exactly as GGUF Q8_0 (d = amax/127 rounded to fp16, q = x/d
 * rounded half away from zero) or Q8_K (d = max/-127 in float, q = x/d rounded to even),
 * through the quantizers of quants.c; then dx and s = dx·Σq for every sub-block. */
static void quantize_act(const float *x, int64_t k, void *dst, int act_block, int g) {
    int8_t *q = dst;
    float *ds = (float *)(q + k);
    for (int64_t i = 0; i < k; i += act_block) {
        float dx;
        if (act_block == QK8_0) {
            block_q8_0 blk;
            tl_quantize_row_q8_0(x + i, &blk, QK8_0);
            memcpy(q + i, blk.qs, QK8_0);
            dx = tl_f16_to_f32(blk.d);
        } else {
            block_q8_K blk;
            tl_quantize_row_q8_K(x + i, &blk, QK_K);
            memcpy(q + i, blk.qs, QK_K);
            dx = blk.d;
        }
        for (int64_t s = i; s < i + act_block; s += g) {
            int sum = 0;
            for (int j = 0; j < g; j++) sum += q[s + j];
            ds[2 * (s / g)] = dx;
            ds[2 * (s / g) + 1] = dx * (float)sum;
        }
    }
}

static void quantize_q8_0(const float *x, int64_t k, void *dst) { quantize_act(x, k, dst, QK8_0, 32); }
static void quantize_q8_K_g32(const float *x, int64_t k, void *dst) { quantize_act(x, k, dst, QK_K, 32); }
static void quantize_q8_K_g16(const float *x, int64_t k, void *dst) { quantize_act(x, k, dst, QK_K, 16); }

/* The portable repack: each row through its format's unpack */
static void pack_rows(unpack_fn unpack, tl_dtype t, int g, const void *w, size_t row_bytes, int rows, int64_t k,
                      void *pack) {
    uint8_t *codes = pack;
    float *a = (float *)(codes + TL_Q8_LANES * k), *b = a + TL_Q8_LANES * (k / g);
    for (int r = 0; r < TL_Q8_LANES; r++)
        unpack(t, (const uint8_t *)w + (size_t)(r < rows ? r : rows - 1) * row_bytes, k, codes, r, a, b);
}

#define PACK_SCALAR(name, unpack, t, g)                                                                                 \
    static void pack_##name(const void *w, size_t row_bytes, int rows, int64_t k, void *pack) {                        \
        pack_rows(unpack, t, g, w, row_bytes, rows, k, pack);                                                           \
    }
PACK_SCALAR(q4_0, unpack_legacy, TL_Q4_0, 32)
PACK_SCALAR(q4_1, unpack_legacy, TL_Q4_1, 32)
PACK_SCALAR(q5_0, unpack_legacy, TL_Q5_0, 32)
PACK_SCALAR(q5_1, unpack_legacy, TL_Q5_1, 32)
PACK_SCALAR(q8_0, unpack_legacy, TL_Q8_0, 32)
PACK_SCALAR(q4_K, unpack_q4_K, TL_Q4_K, 32)
PACK_SCALAR(q5_K, unpack_q5_K, TL_Q5_K, 32)
PACK_SCALAR(q6_K, unpack_q6_K, TL_Q6_K, 16)
#undef PACK_SCALAR

static const q8_format *format_of(tl_dtype t) {
    static const q8_format q4_0 = {32, QK8_0, quantize_q8_0, pack_q4_0}, q4_1 = {32, QK8_0, quantize_q8_0, pack_q4_1},
                           q5_0 = {32, QK8_0, quantize_q8_0, pack_q5_0}, q5_1 = {32, QK8_0, quantize_q8_0, pack_q5_1},
                           q8_0 = {32, QK8_0, quantize_q8_0, pack_q8_0}, q4_k = {32, QK_K, quantize_q8_K_g32, pack_q4_K},
                           q5_k = {32, QK_K, quantize_q8_K_g32, pack_q5_K}, q6_k = {16, QK_K, quantize_q8_K_g16, pack_q6_K};
    switch (t) {
    case TL_Q4_0: return &q4_0;
    case TL_Q4_1: return &q4_1;
    case TL_Q5_0: return &q5_0;
    case TL_Q5_1: return &q5_1;
    case TL_Q8_0: return &q8_0;
    case TL_Q4_K: return &q4_k;
    case TL_Q5_K: return &q5_k;
    case TL_Q6_K: return &q6_k;
    default: return NULL;
    }
}

size_t tl_q8_act_bytes(tl_dtype t, int64_t k) {
    const q8_format *f = format_of(t);
    return f ? (size_t)k + 2 * sizeof(float) * (size_t)(k / f->g) : 0;
}

size_t tl_q8_pack_bytes(tl_dtype t, int64_t k) {
    const q8_format *f = format_of(t);
    return f ? TL_Q8_LANES * ((size_t)k + 2 * sizeof(float) * (size_t)(k / f->g)) : 0;
}

/* The definition of the arithmetic (see dot_q8.h): per output, sub-block after sub-block,
 * acc = fma(a·dx, Σ code·q, acc) then acc = fma(b, s, acc). fmaf rounds once, as the SIMD
 * multiply-adds do. */
static void gemm_scalar(const void *pack, const void *xq, size_t x_stride, int n, int64_t k, int g, float *y,
                        size_t ldy, int rows) {
    const uint8_t *codes = pack;
    const float *a = (const float *)(codes + TL_Q8_LANES * k), *b = a + TL_Q8_LANES * (k / g);
    for (int c = 0; c < n; c++) {
        const int8_t *q = (const int8_t *)((const uint8_t *)xq + (size_t)c * x_stride);
        const float *ds = (const float *)(q + k);
        for (int r = 0; r < rows; r++) {
            float acc = 0.0f;
            for (int64_t s = 0; s < k / g; s++) {
                int32_t sum = 0;
                for (int64_t e = s * g; e < (s + 1) * g; e++) sum += codes[(e >> 2) * 4 * TL_Q8_LANES + r * 4 + (e & 3)] * q[e];
                acc = fmaf(a[s * TL_Q8_LANES + r] * ds[2 * s], (float)sum, acc);
                acc = fmaf(b[s * TL_Q8_LANES + r], ds[2 * s + 1], acc);
            }
            y[(size_t)c * ldy + r] = acc;
        }
    }
}

bool tl_q8_kernels_scalar(tl_dtype t, tl_q8_kernels *out) {
    const q8_format *f = format_of(t);
    if (!f) return false;
    *out = (tl_q8_kernels){f->quantize, f->pack, gemm_scalar, NULL, f->g, NULL, NULL};
    return true;
}

/* A block as tl_q8_interleave lays it out (dot_q8.h): `words` 4-byte words from byte `at` on,
 * transposed, and the fp16 at byte `half_at` (-1: none) after the units */
typedef struct {
    int at, words, half_at;
} interleave_layout;

static bool interleave_layout_of(tl_dtype t, interleave_layout *out) {
    switch (t) {
    case TL_Q4_0: *out = (interleave_layout){2, 4, 0}; return true;  /* d | qs */
    case TL_Q4_1: *out = (interleave_layout){0, 5, -1}; return true; /* d, m | qs */
    case TL_Q5_0: *out = (interleave_layout){2, 5, 0}; return true;  /* d | qh, qs */
    case TL_Q5_1: *out = (interleave_layout){0, 6, -1}; return true; /* d, m | qh, qs */
    case TL_Q8_0: *out = (interleave_layout){2, 8, 0}; return true;  /* d | qs */
    case TL_Q4_K: *out = (interleave_layout){0, 36, -1}; return true;
    case TL_Q5_K: *out = (interleave_layout){0, 44, -1}; return true;
    case TL_Q6_K: *out = (interleave_layout){0, 52, 208}; return true; /* ql, qh, scales | d */
    default: return false;
    }
}

bool tl_q8_interleaves(tl_dtype t) {
    interleave_layout l;
    return interleave_layout_of(t, &l);
}

void tl_q8_interleave(tl_dtype t, const void *w, size_t row_bytes, int64_t k, void *dst) {
    interleave_layout l;
    if (!interleave_layout_of(t, &l)) return;
    const size_t block = tl_dtype_row_size(t, tl_dtype_block_size(t)), unit = 64 * (size_t)l.words;
    const int64_t nb = k / tl_dtype_block_size(t);
    uint8_t *out = dst;
    for (int64_t i = 0; i < nb; i++) { /* written in order, 64 bytes of 16 rows' words at a time */
        const uint8_t *blk = (const uint8_t *)w + (size_t)i * block;
        uint8_t *u = out + (size_t)i * unit;
        for (int wi = 0; wi < l.words; wi++)
            for (int r = 0; r < TL_Q8_LANES; r++)
                memcpy(u + 64 * wi + 4 * r, blk + (size_t)r * row_bytes + l.at + 4 * wi, 4);
        if (l.half_at >= 0)
            for (int r = 0; r < TL_Q8_LANES; r++)
                memcpy(out + (size_t)nb * unit + 32 * (size_t)i + 2 * r, blk + (size_t)r * row_bytes + l.half_at, 2);
    }
}

void tl_q8_interleaved_row(tl_dtype t, const void *group, int r, int64_t k, void *row) {
    interleave_layout l;
    if (!interleave_layout_of(t, &l)) return;
    const size_t block = tl_dtype_row_size(t, tl_dtype_block_size(t)), unit = 64 * (size_t)l.words;
    const int64_t nb = k / tl_dtype_block_size(t);
    const uint8_t *in = group;
    for (int64_t i = 0; i < nb; i++) {
        uint8_t *blk = (uint8_t *)row + (size_t)i * block;
        for (int wi = 0; wi < l.words; wi++) memcpy(blk + l.at + 4 * wi, in + (size_t)i * unit + 64 * wi + 4 * r, 4);
        if (l.half_at >= 0) memcpy(blk + l.half_at, in + (size_t)nb * unit + 32 * (size_t)i + 2 * r, 2);
    }
}

/* TORCHLESS_ACT_QUANT=0 keeps float activations everywhere: for comparisons with backends that
 * keep them (the GPU backends' tests). Read at every call, so that a test may switch it. */
static bool act_quant_off(void) {
    const char *e = getenv("TORCHLESS_ACT_QUANT");
    return e && strcmp(e, "0") == 0;
}

bool tl_q8_kernels_get(tl_dtype t, tl_q8_kernels *out) {
    if (act_quant_off()) return false;
    switch (tl_cpu_level_get()) {
    case TL_CPU_SCALAR: return tl_q8_kernels_scalar(t, out);
#ifdef TL_Q8_X86
    case TL_CPU_AVX512: return tl_q8_kernels_avx512(t, out) || tl_q8_kernels_avx2(t, out); /* AVX2's without VNNI */
    case TL_CPU_AVX2: return tl_q8_kernels_avx2(t, out);
#endif
#ifdef TL_Q8_NEON
    case TL_CPU_NEON: return tl_q8_kernels_neon(t, out);
#endif
    default: return false;
    }
}

bool tl_dtype_quantizes_activations(tl_dtype t) {
    tl_q8_kernels k;
    return tl_q8_kernels_get(t, &k);
}

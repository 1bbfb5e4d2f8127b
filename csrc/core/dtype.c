#include "dtype.h"

#include "fp16.h"
#include "quants.h"
#include "status.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- plain element types: straight conversions ---- */

static void f32_to_float(const void *restrict src, float *restrict dst, int64_t n) {
    memcpy(dst, src, (size_t)n * sizeof(float));
}
static void f32_from_float(const float *restrict src, void *restrict dst, int64_t n) {
    memcpy(dst, src, (size_t)n * sizeof(float));
}
static void f16_to_float(const void *restrict src, float *restrict dst, int64_t n) {
    const uint16_t *s = src;
    const float *table = tl_f16_table();
    for (int64_t i = 0; i < n; i++) dst[i] = table[s[i]];
}
static void f16_from_float(const float *restrict src, void *restrict dst, int64_t n) {
    uint16_t *d = dst;
    for (int64_t i = 0; i < n; i++) d[i] = tl_f32_to_f16(src[i]);
}
static void bf16_to_float(const void *restrict src, float *restrict dst, int64_t n) {
    const uint16_t *s = src;
    for (int64_t i = 0; i < n; i++) dst[i] = tl_bf16_to_f32(s[i]);
}
static void bf16_from_float(const float *restrict src, void *restrict dst, int64_t n) {
    uint16_t *d = dst;
    for (int64_t i = 0; i < n; i++) d[i] = tl_f32_to_bf16(src[i]);
}

#define PLAIN_TO_FLOAT(name, ctype)                                                       \
    static void name##_to_float(const void *restrict src, float *restrict dst, int64_t n) { \
        const ctype *s = src;                                                             \
        for (int64_t i = 0; i < n; i++) dst[i] = (float)s[i];                             \
    }
PLAIN_TO_FLOAT(f64, double)
PLAIN_TO_FLOAT(i8, int8_t)
PLAIN_TO_FLOAT(i16, int16_t)
PLAIN_TO_FLOAT(i32, int32_t)
PLAIN_TO_FLOAT(i64, int64_t)
PLAIN_TO_FLOAT(u8, uint8_t)
static void bool_to_float(const void *restrict src, float *restrict dst, int64_t n) {
    const uint8_t *s = src;
    for (int64_t i = 0; i < n; i++) dst[i] = s[i] ? 1.0f : 0.0f;
}

#define QUANT(t, blk, qk) \
    { #t, qk, sizeof(blk), true, NULL, tl_dequantize_row_##t, tl_quantize_row_##t }

static const tl_dtype_traits table[TL_DTYPE_COUNT] = {
    [TL_F32] = {"f32", 1, 4, false, "f", f32_to_float, f32_from_float},
    [TL_F16] = {"f16", 1, 2, false, "e", f16_to_float, f16_from_float},
    [TL_BF16] = {"bf16", 1, 2, false, "H", bf16_to_float, bf16_from_float},
    [TL_F64] = {"f64", 1, 8, false, "d", f64_to_float, NULL},
    [TL_I8] = {"i8", 1, 1, false, "b", i8_to_float, NULL},
    [TL_I16] = {"i16", 1, 2, false, "h", i16_to_float, NULL},
    [TL_I32] = {"i32", 1, 4, false, "i", i32_to_float, NULL},
    [TL_I64] = {"i64", 1, 8, false, "q", i64_to_float, NULL},
    [TL_U8] = {"u8", 1, 1, false, "B", u8_to_float, NULL},
    [TL_BOOL] = {"bool", 1, 1, false, "?", bool_to_float, NULL},
    [TL_Q4_0] = QUANT(q4_0, block_q4_0, QK4_0),
    [TL_Q4_1] = QUANT(q4_1, block_q4_1, QK4_1),
    [TL_Q5_0] = QUANT(q5_0, block_q5_0, QK5_0),
    [TL_Q5_1] = QUANT(q5_1, block_q5_1, QK5_1),
    [TL_Q8_0] = QUANT(q8_0, block_q8_0, QK8_0),
    [TL_Q8_1] = QUANT(q8_1, block_q8_1, QK8_1),
    [TL_Q2_K] = QUANT(q2_K, block_q2_K, QK_K),
    [TL_Q3_K] = QUANT(q3_K, block_q3_K, QK_K),
    [TL_Q4_K] = QUANT(q4_K, block_q4_K, QK_K),
    [TL_Q5_K] = QUANT(q5_K, block_q5_K, QK_K),
    [TL_Q6_K] = QUANT(q6_K, block_q6_K, QK_K),
    [TL_Q8_K] = QUANT(q8_K, block_q8_K, QK_K),
    [TL_TQ1_0] = QUANT(tq1_0, block_tq1_0, QK_K),
    [TL_TQ2_0] = QUANT(tq2_0, block_tq2_0, QK_K),
};

const tl_dtype_traits *tl_dtype_traits_of(int t) {
    if (t < 0 || t >= TL_DTYPE_COUNT || !table[t].name) return NULL;
    return &table[t];
}

bool tl_dtype_is_valid(int t) { return tl_dtype_traits_of(t) != NULL; }

/* Names are reported lower-case ("q4_k"); the table keeps GGML's spelling for the
 * kernel names, so compare without case. */
const char *tl_dtype_name(tl_dtype t) {
    static const char *lower[TL_DTYPE_COUNT] = {
        [TL_Q2_K] = "q2_k", [TL_Q3_K] = "q3_k", [TL_Q4_K] = "q4_k",
        [TL_Q5_K] = "q5_k", [TL_Q6_K] = "q6_k", [TL_Q8_K] = "q8_k",
    };
    const tl_dtype_traits *tr = tl_dtype_traits_of(t);
    if (!tr) return NULL;
    return lower[t] ? lower[t] : tr->name;
}

bool tl_dtype_from_name(const char *name, tl_dtype *out) {
    for (int t = 0; t < TL_DTYPE_COUNT; t++) {
        const tl_dtype_traits *tr = tl_dtype_traits_of(t);
        if (tr && strcasecmp(tr->name, name) == 0) {
            *out = (tl_dtype)t;
            return true;
        }
    }
    return false;
}

int64_t tl_dtype_block_size(tl_dtype t) {
    const tl_dtype_traits *tr = tl_dtype_traits_of(t);
    return tr ? tr->block_size : 0;
}

size_t tl_dtype_type_size(tl_dtype t) {
    const tl_dtype_traits *tr = tl_dtype_traits_of(t);
    return tr ? tr->type_size : 0;
}

bool tl_dtype_is_quantized(tl_dtype t) {
    const tl_dtype_traits *tr = tl_dtype_traits_of(t);
    return tr && tr->is_quantized;
}

size_t tl_dtype_row_size(tl_dtype t, int64_t n) {
    const tl_dtype_traits *tr = tl_dtype_traits_of(t);
    if (!tr || n < 0 || n % tr->block_size != 0) return 0;
    size_t bytes;
    if (tl_mul_overflows((size_t)(n / tr->block_size), tr->type_size, &bytes)) return 0;
    return bytes;
}

static tl_status check_n(const tl_dtype_traits *tr, int t, int64_t n, const char *what) {
    if (!tr) return tl_set_error(TL_ERR_UNSUPPORTED, "%s: unknown dtype id %d", what, t);
    if (n < 0 || n % tr->block_size != 0)
        return tl_set_error(TL_ERR_INVALID, "%s: %lld elements is not a whole number of %s blocks of %lld",
                            what, (long long)n, tl_dtype_name((tl_dtype)t), (long long)tr->block_size);
    return TL_OK;
}

/* Data in a file may lie at any address (GGUF general.alignment 1, odd safetensors
 * headers) while the kernels read block fields through typed pointers. Such data
 * goes through an aligned bounce buffer, a chunk of blocks at a time. */
static size_t required_alignment(const tl_dtype_traits *tr) {
    size_t a = tr->type_size & (~tr->type_size + 1); /* largest power of two dividing it */
    return a > 8 ? 8 : a;
}

#define BOUNCE_BYTES (64 * 1024)

tl_status tl_dequantize(tl_dtype t, const void *src, float *dst, int64_t n) {
    const tl_dtype_traits *tr = tl_dtype_traits_of(t);
    tl_status s = check_n(tr, t, n, "dequantize");
    if (s) return s;
    if (!tr->to_float)
        return tl_set_error(TL_ERR_UNSUPPORTED, "dequantize: no conversion from %s", tl_dtype_name(t));
    if (n == 0) return TL_OK;
    if ((uintptr_t)src % required_alignment(tr) == 0) {
        tr->to_float(src, dst, n);
        return TL_OK;
    }
    _Alignas(64) unsigned char bounce[BOUNCE_BYTES];
    int64_t blocks_per_chunk = (int64_t)(BOUNCE_BYTES / tr->type_size);
    const unsigned char *p = src;
    for (int64_t done = 0; done < n;) {
        int64_t blocks = (n - done) / tr->block_size;
        if (blocks > blocks_per_chunk) blocks = blocks_per_chunk;
        memcpy(bounce, p, (size_t)blocks * tr->type_size);
        tr->to_float(bounce, dst + done, blocks * tr->block_size);
        p += (size_t)blocks * tr->type_size;
        done += blocks * tr->block_size;
    }
    return TL_OK;
}

tl_status tl_quantize(tl_dtype t, const float *src, void *dst, int64_t n) {
    const tl_dtype_traits *tr = tl_dtype_traits_of(t);
    tl_status s = check_n(tr, t, n, "quantize");
    if (s) return s;
    if (!tr->from_float)
        return tl_set_error(TL_ERR_UNSUPPORTED, "quantize: no conversion to %s", tl_dtype_name(t));
    if (n == 0) return TL_OK;
    if ((uintptr_t)dst % required_alignment(tr) == 0 && (uintptr_t)src % sizeof(float) == 0) {
        tr->from_float(src, dst, n);
        return TL_OK;
    }
    _Alignas(64) unsigned char bounce[BOUNCE_BYTES];
    _Alignas(64) float in[BOUNCE_BYTES / sizeof(float)];
    int64_t blocks_per_chunk = (int64_t)(BOUNCE_BYTES / tr->type_size);
    int64_t in_blocks = (int64_t)(sizeof in / sizeof(float)) / tr->block_size;
    if (in_blocks < blocks_per_chunk) blocks_per_chunk = in_blocks;
    unsigned char *p = dst;
    for (int64_t done = 0; done < n;) {
        int64_t blocks = (n - done) / tr->block_size;
        if (blocks > blocks_per_chunk) blocks = blocks_per_chunk;
        memcpy(in, src + done, (size_t)(blocks * tr->block_size) * sizeof(float));
        tr->from_float(in, bounce, blocks * tr->block_size);
        memcpy(p, bounce, (size_t)blocks * tr->type_size);
        p += (size_t)blocks * tr->type_size;
        done += blocks * tr->block_size;
    }
    return TL_OK;
}

tl_status tl_convert_rows(tl_dtype from, const void *src, tl_dtype to, void *dst, int64_t rows, int64_t k) {
    const size_t in = tl_dtype_row_size(from, k), out = tl_dtype_row_size(to, k);
    float *row = malloc((size_t)k * sizeof(float) + 1);
    tl_status s = row ? TL_OK : tl_set_error(TL_ERR_NOMEM, "convert: out of memory for a row of %lld", (long long)k);
    for (int64_t r = 0; r < rows && !s; r++) {
        s = tl_dequantize(from, (const unsigned char *)src + (size_t)r * in, row, k);
        if (!s) s = tl_quantize(to, row, (unsigned char *)dst + (size_t)r * out, k);
    }
    free(row);
    return s;
}

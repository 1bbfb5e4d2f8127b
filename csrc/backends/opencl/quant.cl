/* Weights as the OpenCL kernels read them: rows in GGUF's layouts, bit for bit (ggml-common.h
 * block structs; F16 fields through vload_half, so no cl_khr_fp16 is needed). w8 decodes the
 * eight elements e..e+7 of a row (e a multiple of 8), the unit every matmul kernel works in:
 * eight aligned elements never straddle a block, and share one scale in every format.
 *
 * Buffers reach a kernel as (buffer, byte offset) pairs, since the host hands out addresses
 * inside its buffers (opencl.c): ARG declares such a pair and AT makes the pointer. */

#define ARG(p) global uchar *p##_b, ulong p##_o
#define AT(T, p) ((global T *)(p##_b + p##_o))

/* GGUF type ids (ggml_type) */
#define DT_F32 0
#define DT_F16 1
#define DT_Q4_0 2
#define DT_Q4_1 3
#define DT_Q5_0 6
#define DT_Q5_1 7
#define DT_Q8_0 8
#define DT_Q4_K 12
#define DT_Q5_K 13
#define DT_Q6_K 14
#define DT_BF16 30

static inline float f16_at(global const uchar *p) { return vload_half(0, (global const half *)p); }

static inline uint u32_at(global const uchar *p) {
    return (uint)p[0] | (uint)p[1] << 8 | (uint)p[2] << 16 | (uint)p[3] << 24;
}

/* bit i of h for lanes i = 0..7, as floats 0 or 1 */
static inline float8 bits8(uint h) {
    const uint8 lanes = (uint8)(0, 1, 2, 3, 4, 5, 6, 7);
    return convert_float8(((uint8)(h) >> lanes) & 1u);
}

/* Q4_K/Q5_K: scale and min of sub-block j from the 12 packed 6-bit values (get_scale_min_k4) */
static inline float2 scale_min_k4(int j, global const uchar *q) {
    if (j < 4) return (float2)((float)(q[j] & 63), (float)(q[j + 4] & 63));
    return (float2)((float)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4)), (float)((q[j + 4] >> 4) | ((q[j] >> 6) << 4)));
}

static inline float8 w8(const int dt, global const uchar *row, int e) {
    if (dt == DT_F32) return vload8(0, (global const float *)row + e);
    if (dt == DT_F16) return vload_half8(0, (global const half *)row + e);
    if (dt == DT_BF16) return as_float8(convert_uint8(vload8(0, (global const ushort *)row + e)) << 16);
    const int j = e & 31; /* within a 32-element block */
    if (dt == DT_Q8_0) { /* d, qs[32] */
        global const uchar *b = row + (e >> 5) * 34;
        return convert_float8(vload8(0, (global const char *)(b + 2 + j))) * f16_at(b);
    }
    if (dt == DT_Q4_0 || dt == DT_Q4_1 || dt == DT_Q5_0 || dt == DT_Q5_1) {
        /* Q4_0: d, qs[16]   Q4_1: d, m, qs[16]   Q5_0: d, qh, qs[16]   Q5_1: d, m, qh, qs[16];
         * element j < 16 is the low nibble of qs[j], j >= 16 the high nibble of qs[j - 16];
         * Q5's fifth bit of element j is bit j of qh */
        const int size = dt == DT_Q4_0 ? 18 : dt == DT_Q4_1 ? 20 : dt == DT_Q5_0 ? 22 : 24;
        const int qs = dt == DT_Q4_0 ? 2 : dt == DT_Q4_1 ? 4 : dt == DT_Q5_0 ? 6 : 8;
        global const uchar *b = row + (e >> 5) * size;
        const uchar8 q = vload8(0, b + qs + (j & 15));
        float8 v = convert_float8(j < 16 ? q & (uchar)15 : q >> (uchar)4);
        if (dt == DT_Q5_0) v += 16.0f * bits8(u32_at(b + 2) >> j);
        if (dt == DT_Q5_1) v += 16.0f * bits8(u32_at(b + 4) >> j);
        const float d = f16_at(b);
        if (dt == DT_Q4_0) return (v - 8.0f) * d;
        if (dt == DT_Q5_0) return (v - 16.0f) * d;
        return v * d + f16_at(b + 2);
    }
    const int i = e & 255; /* within a 256-element super-block */
    if (dt == DT_Q4_K || dt == DT_Q5_K) {
        /* d, dmin, scales[12], (Q5_K: qh[32]), qs[128]: sub-block s = i / 32 of 8; the pair
         * (2c, 2c + 1) shares qs[32c .. 32c + 31], low nibbles then high; Q5_K's fifth bit of
         * element l of sub-block s is bit s of qh[l] */
        global const uchar *b = row + (e >> 8) * (dt == DT_Q4_K ? 144 : 176);
        const int s = i >> 5, l = i & 31;
        const uchar8 q = vload8(0, b + (dt == DT_Q4_K ? 16 : 48) + 32 * (s >> 1) + l);
        float8 v = convert_float8(s & 1 ? q >> (uchar)4 : q & (uchar)15);
        if (dt == DT_Q5_K) v += 16.0f * convert_float8((vload8(0, b + 16 + l) >> (uchar)s) & (uchar)1);
        const float2 sm = scale_min_k4(s, b + 4);
        return v * (f16_at(b) * sm.x) - f16_at(b + 2) * sm.y;
    }
    /* DT_Q6_K: ql[128], qh[64], scales[16] (int8), d. Half h = i / 128, part a = (i % 128) / 32,
     * element l of the part: low 4 bits in ql[64h + 32(a % 2) + l] (low nibble for a < 2), high
     * 2 bits at 2a in qh[32h + l], scale scales[8h + l / 16 + 2a]; value d * scale * (q - 32) */
    global const uchar *b = row + (e >> 8) * 210;
    const int h = i >> 7, a = (i >> 5) & 3, l = i & 31;
    const uchar8 ql = vload8(0, b + 64 * h + 32 * (a & 1) + l);
    const uchar8 qh = vload8(0, b + 128 + 32 * h + l);
    const uchar8 q = (a < 2 ? ql & (uchar)15 : ql >> (uchar)4) | ((qh >> (uchar)(2 * a)) & (uchar)3) << (uchar)4;
    const float sc = (float)((global const char *)b)[192 + 8 * h + l / 16 + 2 * a];
    return (convert_float8(q) - 32.0f) * (f16_at(b + 208) * sc);
}

/* One element of an F32/F16/BF16 row: the tail of rows whose length is not a multiple of 8
 * (quantized rows are whole blocks of 32 or 256) */
static inline float w1(const int dt, global const uchar *row, int e) {
    if (dt == DT_F32) return ((global const float *)row)[e];
    if (dt == DT_F16) return vload_half(e, (global const half *)row);
    return as_float((uint)((global const ushort *)row)[e] << 16);
}

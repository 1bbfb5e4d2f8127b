/* IEEE half and bfloat16 <-> float32, exact and round-to-nearest-even, in plain C
 * (F16C/AVX-512 versions belong to the SIMD kernels, chosen at run time). */
#ifndef TL_FP16_H
#define TL_FP16_H

#include <stdint.h>
#include <string.h>

static inline float tl_bits_to_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline uint32_t tl_f32_to_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline float tl_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    if (exp == 0x1f) return tl_bits_to_f32(sign | 0x7f800000u | (man << 13)); /* inf / nan */
    if (exp == 0) {
        if (man == 0) return tl_bits_to_f32(sign);
        /* subnormal: man * 2^-24, exact in float32 */
        float f = (float)man * 0x1p-24f;
        return sign ? -f : f;
    }
    return tl_bits_to_f32(sign | ((exp + 112) << 23) | (man << 13));
}

static inline uint16_t tl_f32_to_f16(float f) {
    uint32_t x = tl_f32_to_bits(f);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00 | ((ax >> 13) & 0x3ff)); /* nan, quiet */
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* rounds to inf */
    if (ax < 0x38800000u) {
        /* result is subnormal or zero: round ax as a multiple of 2^-24 */
        if (ax < 0x33000000u) return (uint16_t)sign; /* below half the smallest subnormal */
        uint32_t e = ax >> 23;
        uint32_t m = (ax & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - e; /* 14..24 */
        uint32_t r = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1);
        uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1))) r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = ax - 0x38000000u; /* rebias 127 -> 15 */
    uint32_t lsb = (r >> 13) & 1;
    r += 0xfff + lsb;
    return (uint16_t)(sign | (r >> 13));
}

/* All 65,536 halves as floats, built on first use (thread-safe): one load per
 * conversion in the hot loops (KV cache reads, dequantization of F16). */
const float *tl_f16_table(void);

static inline float tl_bf16_to_f32(uint16_t h) { return tl_bits_to_f32((uint32_t)h << 16); }

/* Round to nearest even; NaN stays NaN (quiet), as the gguf package and torch do. */
static inline uint16_t tl_f32_to_bf16(float f) {
    uint32_t x = tl_f32_to_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 64);
    return (uint16_t)((x + (0x7fffu + ((x >> 16) & 1))) >> 16);
}

#endif

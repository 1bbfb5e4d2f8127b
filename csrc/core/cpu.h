/* The CPU's kernel level, detected once per process (CPUID on x86-64, HWCAP on AArch64) and
 * overridable with TORCHLESS_CPU=scalar|avx2|avx512|neon for testing. A level the CPU lacks
 * (avx512 on an AVX2 CPU, neon on x86-64) runs the detected level instead; any other value is
 * ignored (the Python package warns of it at import). Every SIMD kernel is chosen through this. */
#ifndef TL_CPU_H
#define TL_CPU_H

#include <stdbool.h>

typedef enum {
    TL_CPU_SCALAR = 0, /* the portable kernels: the reference every SIMD kernel is tested against */
    TL_CPU_AVX2 = 1,   /* AVX2 + FMA + F16C */
    TL_CPU_AVX512 = 2, /* AVX-512 F/BW/VL (+ VNNI, BF16 where tl_cpu_has says) */
    TL_CPU_NEON = 3,   /* AArch64 Advanced SIMD (+ dotprod where tl_cpu_has says) */
} tl_cpu_level;

typedef enum {
    TL_CPU_FEAT_AVX512_VNNI = 1 << 0,
    TL_CPU_FEAT_AVX512_BF16 = 1 << 1,
    TL_CPU_FEAT_NEON_DOTPROD = 1 << 2,
} tl_cpu_feature;

tl_cpu_level tl_cpu_level_get(void);
/* Whether an optional feature of the chosen level is present (false below that level). */
bool tl_cpu_has(tl_cpu_feature f);

#endif

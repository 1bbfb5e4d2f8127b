#include "cpu.h"

#include "torchless.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#define TL_X86 1
#endif

#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#endif

static pthread_once_t detected = PTHREAD_ONCE_INIT;
static tl_cpu_level level;
static unsigned features;

static void detect(void) {
    const char *env = getenv("TORCHLESS_CPU");
    tl_cpu_level best = TL_CPU_SCALAR;
    unsigned feat = 0;
#ifdef TL_X86
    __builtin_cpu_init();
    /* F16C is CPUID.1:ECX bit 29 (not every compiler's __builtin_cpu_supports knows it) */
    unsigned a, b, c = 0, d;
    bool f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
    bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
    bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                  __builtin_cpu_supports("avx512vl");
    if (avx512) {
        best = TL_CPU_AVX512;
        /* CPUID.(7,0):ECX bit 11 = AVX512_VNNI; CPUID.(7,1):EAX bit 5 = AVX512_BF16 */
        unsigned a7, b7, c7 = 0, d7;
        if (__get_cpuid_count(7, 0, &a7, &b7, &c7, &d7) && (c7 & (1u << 11))) feat |= TL_CPU_FEAT_AVX512_VNNI;
        unsigned a71 = 0, b71, c71, d71;
        if (__get_cpuid_count(7, 1, &a71, &b71, &c71, &d71) && (a71 & (1u << 5))) feat |= TL_CPU_FEAT_AVX512_BF16;
    } else if (avx2) {
        best = TL_CPU_AVX2;
    }
#elif defined(__aarch64__)
    best = TL_CPU_NEON; /* Advanced SIMD is part of every AArch64 CPU */
#ifdef __linux__
    if (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) feat |= TL_CPU_FEAT_NEON_DOTPROD;
#endif
#endif
    tl_cpu_level want = best;
    if (env && *env) {
        if (strcmp(env, "scalar") == 0) want = TL_CPU_SCALAR;
        else if (strcmp(env, "avx2") == 0) want = TL_CPU_AVX2;
        else if (strcmp(env, "avx512") == 0) want = TL_CPU_AVX512;
        else if (strcmp(env, "neon") == 0) want = TL_CPU_NEON;
        /* anything else is ignored (the library prints nothing; Python's import warns) */
    }
    /* a level the CPU lacks runs the detected one */
    if (best == TL_CPU_NEON) {
        level = want == TL_CPU_SCALAR ? TL_CPU_SCALAR : TL_CPU_NEON;
    } else {
        level = want == TL_CPU_NEON || want > best ? best : want;
    }
    features = level == best ? feat : 0;
}

tl_cpu_level tl_cpu_level_get(void) {
    pthread_once(&detected, detect);
    return level;
}

bool tl_cpu_has(tl_cpu_feature f) {
    pthread_once(&detected, detect);
    return (features & (unsigned)f) != 0;
}

const char *tl_cpu_isa(void) {
    static const char *names[] = {"scalar", "avx2", "avx512", "neon"};
    return names[tl_cpu_level_get()];
}

/* The F16 GEMV of a decode step against the read bandwidth, on three kinds of pages: the model
 * file's mapping (as the page cache holds it), an anonymous copy in 2 MB pages (MADV_HUGEPAGE)
 * and one in 4 KB pages (MADV_NOHUGEPAGE). "Matrices" of ROWS x 2048 F16 one after the other
 * over MB of the file, rows split between the threads and a barrier after each, as the pool runs
 * them; GB/s, best of 3. Kernels: a plain AVX-512 read loop; one accumulator, 16 columns a step
 * (the dot kernel before 2026-11-27); four accumulators, 64 a step, with prefetches PF bytes
 * ahead (hint 0: T0 a line per line, 1: T1, 2: NTA, 3: T0 every other line); two rows a step.
 * Standalone (no torchless code): benchmarks/NOTES.md, 2026-11-27, F16 generation.
 *
 *   cc -O2 -o /tmp/stream_probe benchmarks/stream_probe.c -lpthread
 *   /tmp/stream_probe ~/.cache/torchless/bench/tinyllama-shape-f16.gguf 1024 5632 fhs 1 2
 *                     (file, MB, rows a matrix, f/h/s: which pages, threads from, to)
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <immintrin.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define AVX512 __attribute__((target("avx512f,avx2,fma,f16c")))

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static size_t REG;          /* bytes per region */
static int K = 2048;        /* columns */
static size_t ROWS_PER_MAT; /* rows per "matrix" */
static float *X, *Y;
static int PF = 0, HINT = 0; /* prefetch distance bytes */

AVX512 static float dot0(const uint16_t *a, const float *x, int64_t n) {
    __m512 acc = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16)
        acc = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(a + i))), _mm512_loadu_ps(x + i), acc);
    return _mm512_reduce_add_ps(acc);
}

AVX512 static float dot4(const uint16_t *a, const float *x, int64_t n) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t i = 0; i < n; i += 64) {
        if (PF) {
            if (HINT == 0) { _mm_prefetch((const char *)(a + i) + PF, _MM_HINT_T0); _mm_prefetch((const char *)(a + i) + PF + 64, _MM_HINT_T0); }
            else if (HINT == 1) { _mm_prefetch((const char *)(a + i) + PF, _MM_HINT_T1); _mm_prefetch((const char *)(a + i) + PF + 64, _MM_HINT_T1); }
            else if (HINT == 2) { _mm_prefetch((const char *)(a + i) + PF, _MM_HINT_NTA); _mm_prefetch((const char *)(a + i) + PF + 64, _MM_HINT_NTA); }
            else { _mm_prefetch((const char *)(a + i) + PF, _MM_HINT_T0); }
        }
        a0 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(a + i))), _mm512_loadu_ps(x + i), a0);
        a1 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(a + i + 16))), _mm512_loadu_ps(x + i + 16), a1);
        a2 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(a + i + 32))), _mm512_loadu_ps(x + i + 32), a2);
        a3 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(a + i + 48))), _mm512_loadu_ps(x + i + 48), a3);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

/* 2 rows at once */
AVX512 static void dot2rows(const uint16_t *a, const uint16_t *b, const float *x, int64_t n, float *ya, float *yb) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, b0 = a0, b1 = a0;
    for (int64_t i = 0; i < n; i += 32) {
        if (PF) {
            _mm_prefetch((const char *)(a + i) + PF, _MM_HINT_T0);
            _mm_prefetch((const char *)(b + i) + PF, _MM_HINT_T0);
        }
        __m512 x0 = _mm512_loadu_ps(x + i), x1 = _mm512_loadu_ps(x + i + 16);
        a0 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(a + i))), x0, a0);
        a1 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(a + i + 16))), x1, a1);
        b0 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(b + i))), x0, b0);
        b1 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(b + i + 16))), x1, b1);
    }
    *ya = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
    *yb = _mm512_reduce_add_ps(_mm512_add_ps(b0, b1));
}

AVX512 static uint64_t readloop(const uint8_t *p, size_t bytes) {
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i < bytes; i += 256) {
        a0 = _mm512_add_epi32(a0, _mm512_load_si512(p + i));
        a1 = _mm512_add_epi32(a1, _mm512_load_si512(p + i + 64));
        a2 = _mm512_add_epi32(a2, _mm512_load_si512(p + i + 128));
        a3 = _mm512_add_epi32(a3, _mm512_load_si512(p + i + 192));
    }
    return (uint64_t)_mm512_reduce_add_epi32(_mm512_add_epi32(_mm512_add_epi32(a0, a1), _mm512_add_epi32(a2, a3)));
}

typedef struct {
    const uint8_t *base;
    int mode, ith, nth;
    pthread_barrier_t *bar;
    uint64_t sink;
} targ;

static void work(targ *t) {
    const size_t rb = (size_t)K * 2;
    const size_t mats = REG / (ROWS_PER_MAT * rb);
    for (size_t m = 0; m < mats; m++) {
        const uint8_t *w = t->base + m * ROWS_PER_MAT * rb;
        size_t per = (ROWS_PER_MAT + t->nth - 1) / t->nth, r0 = per * t->ith, r1 = r0 + per < ROWS_PER_MAT ? r0 + per : ROWS_PER_MAT;
        if (t->mode == 0) t->sink += readloop(w + r0 * rb, (r1 - r0) * rb);
        else if (t->mode == 1) for (size_t r = r0; r < r1; r++) Y[r] = dot0((const uint16_t *)(w + r * rb), X, K);
        else if (t->mode == 2) for (size_t r = r0; r < r1; r++) Y[r] = dot4((const uint16_t *)(w + r * rb), X, K);
        else if (t->mode == 3) for (size_t r = r0; r < r1; r += 2) dot2rows((const uint16_t *)(w + r * rb), (const uint16_t *)(w + (r + 1) * rb), X, K, &Y[r], &Y[r + 1]);
        if (t->nth > 1) pthread_barrier_wait(t->bar);
    }
}

static void *thr(void *p) {
    work(p);
    return NULL;
}

static double run(const uint8_t *base, int mode, int nth) {
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, nth);
    targ ts[8];
    pthread_t th[8];
    double t0 = now();
    for (int i = 0; i < nth; i++) ts[i] = (targ){base, mode, i, nth, &bar, 0};
    for (int i = 1; i < nth; i++) pthread_create(&th[i], NULL, thr, &ts[i]);
    work(&ts[0]);
    for (int i = 1; i < nth; i++) pthread_join(th[i], NULL);
    double t = now() - t0;
    pthread_barrier_destroy(&bar);
    if (ts[0].sink == 42) printf(".");
    return REG / t / 1e9;
}

int main(int argc, char **argv) {
    const char *path = argv[1];
    REG = (size_t)atol(argv[2]) << 20;
    ROWS_PER_MAT = argc > 3 ? atol(argv[3]) : 5632;
    const char *which = argc > 4 ? argv[4] : "fth";
    REG = REG / (ROWS_PER_MAT * K * 2) * (ROWS_PER_MAT * K * 2);
    int fd = open(path, O_RDONLY);
    uint8_t *file = mmap(NULL, REG + 4096 * 16, PROT_READ, MAP_PRIVATE, fd, 0);
    uint8_t *fbase = file + 4096 * 8; /* aligned at a page */
    volatile uint64_t s = 0;
    for (size_t i = 0; i < REG; i += 4096) s += fbase[i];
    uint8_t *huge = NULL, *small = NULL;
    if (strchr(which, 'h')) {
        huge = aligned_alloc(2 << 20, REG);
        madvise(huge, REG, MADV_HUGEPAGE);
        memcpy(huge, fbase, REG);
    }
    if (strchr(which, 's')) {
        small = aligned_alloc(4096, REG);
        madvise(small, REG, MADV_NOHUGEPAGE);
        memcpy(small, fbase, REG);
    }
    X = aligned_alloc(64, K * 4);
    Y = aligned_alloc(64, ROWS_PER_MAT * 4 + 64);
    for (int i = 0; i < K; i++) X[i] = (float)(i % 7) * 0.1f;
    const char *names[] = {"read", "dot0", "dot4", "dot2rows"};
    int nth0 = argc > 5 ? atoi(argv[5]) : 1, nth1 = argc > 6 ? atoi(argv[6]) : 2;
    int cfg[][3] = {{0,0,0},{1,0,0},{2,0,0},{2,1024,0},{2,1536,0},{2,2048,0},{2,3072,0},{2,4096,0},{2,2048,1},{2,2048,2},{2,2048,3},{2,4096,3},{3,512,0},{3,1024,1},{0,0,0}};
    for (int nth = nth0; nth <= nth1; nth++)
        for (size_t c = 0; c < sizeof cfg / sizeof cfg[0]; c++) {
                int mode = cfg[c][0]; PF = cfg[c][1]; HINT = cfg[c][2];
                double bf = 0, bh = 0, bs = 0;
                for (int rep = 0; rep < 3; rep++) {
                    double g;
                    if (strchr(which, 'f') && (g = run(fbase, mode, nth)) > bf) bf = g;
                    if (huge && (g = run(huge, mode, nth)) > bh) bh = g;
                    if (small && (g = run(small, mode, nth)) > bs) bs = g;
                }
                printf("threads %d %-9s pf %4d hint %d  file %.2f  thp %.2f  anon4k %.2f GB/s\n", nth, names[mode], PF, HINT, bf, bh, bs);
                fflush(stdout);
            }
    return 0;
}

/* The GEMM's driver (gemm.h: tl_gemm), its portable kernels, and the choice of kernels by
 * dispatch level. */
#include "gemm.h"

#include "cpu.h"
#include "fp16.h"

#include <stdint.h>
#include <string.h>

typedef struct {
    const tl_gemm_kernels *kern;
    const tl_tensor *w;
    const float *x;
    int64_t n, m, k, n_pad; /* n_pad: the chunk's rows rounded up to nr */
    float *y, *xp, *wpacks; /* the packed chunk; a weight pack per thread */
} gemm_job;

static void pack_x_worker(void *p, int ith, int nth) {
    const gemm_job *j = p;
    const int nr = j->kern->nr, kc = j->kern->kc;
    const int64_t panels = j->n_pad / nr, blocks = (j->k + kc - 1) / kc;
    int64_t i0, i1;
    tl_split(panels * blocks, ith, nth, &i0, &i1);
    for (int64_t i = i0; i < i1; i++) {
        /* the block of columns from k0 holds every panel of x, each kb columns of nr floats */
        const int64_t k0 = i / panels * kc, c0 = i % panels * nr;
        const int kb = j->k - k0 < kc ? (int)(j->k - k0) : kc, cols = j->n - c0 < nr ? (int)(j->n - c0) : nr;
        j->kern->pack_x(j->x + c0 * j->k, j->k, cols, k0, kb, j->xp + k0 * j->n_pad + c0 * kb);
    }
}

/* Weight rows a thread takes per pass over the columns: the outputs they write (at most
 * TL_GEMM_CHUNK x GEMM_MC floats, 512 KB) stay in L2 from one block of columns to the next */
#define GEMM_MC 256

/* The pack after (b0, k0, pn): panels of the block [b0, b0 + block) one after another, for each
 * block of columns, then the next block of panels; false after the last */
static bool next_pack(int64_t *b0, int64_t *k0, int64_t *pn, int64_t p1, int64_t block, int64_t k, int kc) {
    const int64_t b1 = *b0 + block < p1 ? *b0 + block : p1;
    if (++*pn < b1) return true;
    *pn = *b0;
    if ((*k0 += kc) < k) return true;
    *k0 = 0;
    *b0 = *pn = b1;
    return b1 < p1;
}

static void gemm_worker(void *p, int ith, int nth) {
    const gemm_job *j = p;
    const tl_gemm_kernels *kern = j->kern;
    const int mr = kern->mr, nr = kern->nr, kc = kern->kc;
    const size_t row_bytes = tl_dtype_row_size(j->w->dtype, j->k), esize = tl_dtype_row_size(j->w->dtype, 1);
    const uint8_t *w = j->w->data;
    float *wp = j->wpacks + (size_t)ith * TL_GEMM_MAX_MR * TL_GEMM_MAX_KC;
    const int64_t panels = (j->n + nr - 1) / nr, block = GEMM_MC / mr > 0 ? GEMM_MC / mr : 1;
    /* the next pack's weights, one address a cache line: from memory, short pieces of many rows,
     * they are a latency the hardware prefetchers do not hide, so the kernels prefetch them while
     * they multiply this pack (spread over their columns: a burst would wait on fill buffers) */
    const void *pf[TL_GEMM_MAX_MR * TL_GEMM_MAX_KC * 4 / 64];
    int64_t p0, p1;
    tl_split((j->m + mr - 1) / mr, ith, nth, &p0, &p1);
    int64_t b0 = p0, k0 = 0, pn = p0;
    for (bool more = p0 < p1; more;) {
        const int64_t r0 = pn * mr;
        const int rows = j->m - r0 < mr ? (int)(j->m - r0) : mr, kb = j->k - k0 < kc ? (int)(j->k - k0) : kc;
        kern->pack_w(w + r0 * row_bytes, row_bytes, rows, k0, kb, wp);
        const int64_t this_k0 = k0;
        more = next_pack(&b0, &k0, &pn, p1, block, j->k, kc);
        int npf = 0;
        if (more) {
            const int64_t nr0 = pn * mr, nrows = j->m - nr0 < mr ? j->m - nr0 : mr;
            const size_t bytes = (size_t)(j->k - k0 < kc ? j->k - k0 : kc) * esize;
            for (int64_t r = 0; r < nrows; r++)
                for (size_t b = 0; b < bytes; b += 64) pf[npf++] = w + (nr0 + r) * row_bytes + k0 * esize + b;
        }
        const float *xb = j->xp + this_k0 * j->n_pad;
        for (int64_t q = 0; q < panels; q++) {
            const int64_t c0 = q * nr;
            const int f0 = (int)(npf * q / panels), f1 = (int)(npf * (q + 1) / panels);
            kern->kernel(wp, xb + c0 * kb, kb, j->y + c0 * j->m + r0, (size_t)j->m, rows, j->n - c0 < nr ? (int)(j->n - c0) : nr,
                         this_k0 > 0, pf + f0, f1 - f0);
        }
    }
}

void tl_gemm(tl_pool *pool, const tl_gemm_kernels *kern, const tl_tensor *w, const float *x, int64_t n, float *y,
             float *scratch) {
    gemm_job j = {.kern = kern, .w = w, .m = w->n_dims > 1 ? w->ne[1] : 1, .k = w->ne[0]};
    j.wpacks = (float *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
    j.xp = j.wpacks + (size_t)tl_pool_size(pool) * TL_GEMM_MAX_MR * TL_GEMM_MAX_KC;
    for (int64_t c0 = 0; c0 < n; c0 += TL_GEMM_CHUNK) {
        j.n = n - c0 < TL_GEMM_CHUNK ? n - c0 : TL_GEMM_CHUNK;
        j.n_pad = (j.n + kern->nr - 1) / kern->nr * kern->nr;
        j.x = x + c0 * j.k;
        j.y = y + c0 * j.m;
        tl_pool_run(pool, pack_x_worker, &j);
        tl_pool_run(pool, gemm_worker, &j);
    }
}

/* The portable register block: 8 weight rows x 4 activation rows of float accumulators */
#define MR 8
#define NR 4

static inline float weight(tl_dtype t, const uint8_t *row, int64_t e) {
    uint16_t h;
    float f;
    switch (t) {
    case TL_F16: memcpy(&h, row + 2 * e, 2); return tl_f16_to_f32(h);
    case TL_BF16: memcpy(&h, row + 2 * e, 2); return tl_bf16_to_f32(h);
    default: memcpy(&f, row + 4 * e, 4); return f;
    }
}

static inline void pack_w(tl_dtype t, const void *w, size_t row_bytes, int rows, int64_t k0, int kc, float *dst) {
    for (int r = 0; r < MR; r++) {
        const uint8_t *row = (const uint8_t *)w + (size_t)r * row_bytes;
        for (int kk = 0; kk < kc; kk++) dst[kk * MR + r] = r < rows ? weight(t, row, k0 + kk) : 0.0f;
    }
}

static void pack_x_scalar(const float *x, int64_t k, int cols, int64_t k0, int kc, float *dst) {
    for (int c = 0; c < NR; c++) {
        const float *row = x + (size_t)c * (size_t)k + k0;
        for (int kk = 0; kk < kc; kk++) dst[kk * NR + c] = c < cols ? row[kk] : 0.0f;
    }
}

static void pack_w_f32(const void *w, size_t row_bytes, int rows, int64_t k0, int kc, float *dst) {
    pack_w(TL_F32, w, row_bytes, rows, k0, kc, dst);
}
static void pack_w_f16(const void *w, size_t row_bytes, int rows, int64_t k0, int kc, float *dst) {
    pack_w(TL_F16, w, row_bytes, rows, k0, kc, dst);
}
static void pack_w_bf16(const void *w, size_t row_bytes, int rows, int64_t k0, int kc, float *dst) {
    pack_w(TL_BF16, w, row_bytes, rows, k0, kc, dst);
}

/* the definition: each output a float sum over k in order, product then sum (no fused multiply-add) */
static void kernel_scalar(const float *wp, const float *xp, int kc, float *y, size_t ldy, int rows, int cols, bool add,
                          const void *const *pf, int npf) {
    for (int i = 0; i < npf; i++) __builtin_prefetch(pf[i], 0, 2);
    float acc[NR][MR] = {{0}};
    for (int kk = 0; kk < kc; kk++)
        for (int c = 0; c < NR; c++)
            for (int r = 0; r < MR; r++) acc[c][r] += wp[kk * MR + r] * xp[kk * NR + c];
    for (int c = 0; c < cols; c++)
        for (int r = 0; r < rows; r++) y[(size_t)c * ldy + r] = add ? y[(size_t)c * ldy + r] + acc[c][r] : acc[c][r];
}

bool tl_gemm_kernels_scalar(tl_dtype t, tl_gemm_kernels *out) {
    tl_gemm_pack_w_fn pack = t == TL_F32 ? pack_w_f32 : t == TL_F16 ? pack_w_f16 : t == TL_BF16 ? pack_w_bf16 : NULL;
    if (!pack) return false;
    *out = (tl_gemm_kernels){pack, pack_x_scalar, kernel_scalar, MR, NR, 256};
    return true;
}

bool tl_gemm_kernels_get(tl_dtype t, tl_gemm_kernels *out) {
    switch (tl_cpu_level_get()) {
#ifdef TL_GEMM_X86
    case TL_CPU_AVX512: return tl_gemm_kernels_avx512(t, out);
    case TL_CPU_AVX2: return tl_gemm_kernels_avx2(t, out);
#endif
    default: return tl_gemm_kernels_scalar(t, out);
    }
}

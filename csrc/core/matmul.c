#include "matmul.h"

#include "dot.h"
#include "dot_q8.h"
#include "mapping.h"
#include "pool.h"
#include "status.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifdef TL_HAVE_OPENBLAS
#include <cblas.h>
#endif

float tl_dot_f32(const float *a, const float *b, int64_t n) {
    float acc[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) acc[l] += a[i + l] * b[i + l];
    float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

typedef struct {
    const tl_tensor *w;
    const float *x;
    int64_t n, m, k;
    float *y, *scratch;
} matmul_job;

/* below this many input rows, per-row dots beat a GEMM call */
#define GEMM_MIN_ROWS 4

/* Decode: each weight row is read once, as stored, and dotted with every x row. */
static void matmul_rows_worker(void *p, int ith, int nth) {
    const matmul_job *j = p;
    const tl_dot_fn dot = tl_dot_kernel(j->w->dtype);
    const size_t row_bytes = tl_dtype_row_size(j->w->dtype, j->k);
    int64_t r0, r1;
    tl_split(j->m, ith, nth, &r0, &r1);
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = (const uint8_t *)j->w->data + (size_t)r * row_bytes;
        for (int64_t i = 0; i < j->n; i++) j->y[i * j->m + r] = dot(row, j->x + i * j->k, j->k);
    }
}

static float portable_dot(const void *a, const float *b, int64_t n) { return tl_dot_f32(a, b, n); }

static void matmul_worker(void *p, int ith, int nth) {
    const matmul_job *j = p;
    tl_dot_fn dot_f32 = tl_dot_kernel(TL_F32);
    if (!dot_f32) dot_f32 = portable_dot;
    const size_t row_bytes = tl_dtype_row_size(j->w->dtype, j->k);
    float *tile = j->scratch + (size_t)ith * TL_MATMUL_TILE * (size_t)j->k;
    /* tiles of rows, dealt out in contiguous shares */
    int64_t n_tiles = (j->m + TL_MATMUL_TILE - 1) / TL_MATMUL_TILE, t0, t1;
    tl_split(n_tiles, ith, nth, &t0, &t1);
    for (int64_t t = t0; t < t1; t++) {
        int64_t r0 = t * TL_MATMUL_TILE, rows = j->m - r0 < TL_MATMUL_TILE ? j->m - r0 : TL_MATMUL_TILE;
        const uint8_t *src = (const uint8_t *)j->w->data + (size_t)r0 * row_bytes;
        /* rows * k elements are whole blocks: each row is */
        tl_dequantize(j->w->dtype, src, tile, rows * j->k);
#ifdef TL_HAVE_OPENBLAS
        if (j->n >= GEMM_MIN_ROWS) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)j->n, (int)rows, (int)j->k, 1.0f, j->x,
                        (int)j->k, tile, (int)j->k, 0.0f, j->y + r0, (int)j->m);
            continue;
        }
#endif
        for (int64_t r = 0; r < rows; r++)
            for (int64_t i = 0; i < j->n; i++)
                j->y[i * j->m + r0 + r] = dot_f32(tile + r * j->k, j->x + i * j->k, j->k);
    }
}

/* the GEMM, where this level has it for the dtype (its portable kernels only without OpenBLAS,
 * whose SGEMM on dequantized tiles is faster than portable C) */
static bool matmul_gemm(tl_pool *pool, const tl_tensor *w, const float *x, int64_t n, float *y, float *scratch) {
    tl_gemm_kernels kern;
    if (!tl_gemm_kernels_get(w->dtype, &kern)) return false;
#ifdef TL_HAVE_OPENBLAS
    tl_gemm_kernels portable;
    if (tl_gemm_kernels_scalar(w->dtype, &portable) && kern.kernel == portable.kernel) return false;
#endif
    tl_gemm(pool, &kern, w, x, n, y, scratch);
    return true;
}

/* Quantized activations: a chunk of x rows is quantized once (rows split over the threads),
 * then each thread repacks its groups of 16 weight rows and multiplies each group by every
 * quantized row of the chunk. Up to TL_MATMUL_MANY matrices of one dtype and width share the
 * quantized rows and one pass of the pool (q, k and v; gate and up, with the GLU applied to each
 * group of rows as soon as both are done). */
#define TL_MATMUL_MANY 3
typedef struct {
    const tl_tensor *w[TL_MATMUL_MANY];
    float *y[TL_MATMUL_MANY]; /* this chunk's rows */
    bool interleaved[TL_MATMUL_MANY]; /* read w->rows16 through kern.gemv16 / pack16 */
    int64_t group_end[TL_MATMUL_MANY]; /* groups of 16 rows of the matrices up to this one */
    int count;
    tl_matmul_glu_fn glu; /* count 2: y[0] = glu(y[0], y[1]), a group's rows at a time */
    const float *x;
    int64_t n, k;
    tl_q8_kernels kern;
    uint8_t *xq, *packs;
    size_t x_stride, pack_bytes;
} q8_job;

static void q8_quantize_worker(void *p, int ith, int nth) {
    const q8_job *j = p;
    int64_t i0, i1;
    tl_split(j->n, ith, nth, &i0, &i1);
    for (int64_t i = i0; i < i1; i++) j->kern.quantize(j->x + i * j->k, j->k, j->xq + (size_t)i * j->x_stride);
}

/* the 16-row group g of matrix i against the chunk's quantized rows */
static void q8_group(const q8_job *j, int i, int64_t g, uint8_t *pack) {
    const tl_tensor *w = j->w[i];
    const int64_t m = w->n_dims > 1 ? w->ne[1] : 1;
    const size_t row_bytes = tl_dtype_row_size(w->dtype, j->k);
    /* the blocks where they lie, or the interleaved copy (a group of 16 rows at the offset of its rows) */
    const uint8_t *base = (const uint8_t *)(j->interleaved[i] ? w->rows16 : w->data);
    const tl_q8_gemv_fn gemv = j->interleaved[i] ? j->kern.gemv16 : j->kern.gemv;
    const int64_t r0 = g * TL_Q8_LANES;
    const int rows = m - r0 < TL_Q8_LANES ? (int)(m - r0) : TL_Q8_LANES;
    const uint8_t *rw = base + (size_t)r0 * row_bytes;
    if (gemv && j->n <= TL_Q8_GEMV_MAX) { /* decode: no pack */
        gemv(rw, row_bytes, rows, j->k, j->xq, j->x_stride, (int)j->n, j->y[i] + r0, (size_t)m);
        return;
    }
    (j->interleaved[i] ? j->kern.pack16 : j->kern.pack)(rw, row_bytes, rows, j->k, pack);
    j->kern.gemm(pack, j->xq, j->x_stride, (int)j->n, j->k, j->kern.g, j->y[i] + r0, (size_t)m, rows);
}

static void q8_gemm_worker(void *p, int ith, int nth) {
    const q8_job *j = p;
    uint8_t *pack = j->packs + (size_t)ith * j->pack_bytes;
    int64_t g0, g1;
    if (j->glu) { /* gate and up: each share's groups of both, then their GLU */
        const int64_t m = j->w[0]->ne[1];
        tl_split(j->group_end[0], ith, nth, &g0, &g1);
        for (int64_t g = g0; g < g1; g++) {
            q8_group(j, 0, g, pack);
            q8_group(j, 1, g, pack);
            const int64_t r0 = g * TL_Q8_LANES, rows = m - r0 < TL_Q8_LANES ? m - r0 : TL_Q8_LANES;
            for (int64_t t = 0; t < j->n; t++) j->glu(j->y[0] + t * m + r0, j->y[1] + t * m + r0, rows);
        }
        return;
    }
    tl_split(j->group_end[j->count - 1], ith, nth, &g0, &g1);
    for (int64_t g = g0; g < g1; g++) {
        int i = 0;
        while (g >= j->group_end[i]) i++;
        q8_group(j, i, g - (i ? j->group_end[i - 1] : 0), pack);
    }
}

/* the integer path, when this level has it for the dtype (the same for every matrix, and the
 * same width) and the pack's 32-bit row offsets fit */
static bool matmul_q8(tl_pool *pool, const tl_tensor *const *w, int count, const float *x, int64_t n, float *const *y,
                      tl_matmul_glu_fn glu, float *scratch) {
    q8_job j = {.count = count, .glu = glu, .k = w[0]->ne[0]};
    if (!tl_q8_kernels_get(w[0]->dtype, &j.kern) || tl_dtype_row_size(w[0]->dtype, j.k) * TL_Q8_LANES > INT32_MAX) return false;
    for (int i = 0; i < count; i++) {
        const int64_t m = w[i]->n_dims > 1 ? w[i]->ne[1] : 1;
        if (w[i]->dtype != w[0]->dtype || w[i]->ne[0] != j.k || (glu && m != w[0]->ne[1])) return false;
        j.w[i] = w[i];
        j.interleaved[i] = tl_matmul_interleaved(w[i]) && j.kern.gemv16 && j.kern.pack16 && m % TL_Q8_LANES == 0;
        j.group_end[i] = (i ? j.group_end[i - 1] : 0) + (m + TL_Q8_LANES - 1) / TL_Q8_LANES;
    }
    j.x_stride = tl_q8_act_bytes(w[0]->dtype, j.k);
    j.pack_bytes = (tl_q8_pack_bytes(w[0]->dtype, j.k) + 63) & ~(size_t)63;
    j.xq = (uint8_t *)scratch;
    j.packs = j.xq + (((size_t)TL_MATMUL_Q8_CHUNK * j.x_stride + 63) & ~(size_t)63);
    for (int64_t c0 = 0; c0 < n; c0 += TL_MATMUL_Q8_CHUNK) {
        j.n = n - c0 < TL_MATMUL_Q8_CHUNK ? n - c0 : TL_MATMUL_Q8_CHUNK;
        j.x = x + c0 * j.k;
        for (int i = 0; i < count; i++) j.y[i] = y[i] + c0 * w[i]->ne[1];
        /* one row (decode): quantized here, after the norm that made it, not in a pool run of its own */
        if (j.n == 1) q8_quantize_worker(&j, 0, 1);
        else tl_pool_run(pool, q8_quantize_worker, &j);
        tl_pool_run(pool, q8_gemm_worker, &j);
    }
    return true;
}

/* TORCHLESS_INTERLEAVE=0 keeps every weight where it lies (the mapped file) */
static bool interleave_off(void) {
    const char *e = getenv("TORCHLESS_INTERLEAVE");
    return e && strcmp(e, "0") == 0;
}

/* One share of the groups of 16 rows of a copy (interleaved, or the float rows as they are): a
 * file mapping's pages are given back as the copy replaces them, a few MB at a time, so that
 * memory never holds two copies of a large matrix (Gemma 3's 171 MB head); a page the last drop
 * left (not wholly copied yet) goes with the next */
typedef struct {
    const tl_tensor *w;
    uint8_t *out;
    int64_t m, k;
    size_t row_bytes;
    bool interleave; /* tl_q8_interleave, else the rows as they are */
} copy_job;

static void copy_worker(void *p, int ith, int nth) {
    const copy_job *j = p;
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    const size_t drop_every = (size_t)4 << 20;
    int64_t g0, g1;
    tl_split((j->m + TL_Q8_LANES - 1) / TL_Q8_LANES, ith, nth, &g0, &g1);
    const uint8_t *src = j->w->data, *kept = src + (size_t)g0 * TL_Q8_LANES * j->row_bytes;
    for (int64_t g = g0; g < g1; g++) {
        const size_t at = (size_t)g * TL_Q8_LANES * j->row_bytes;
        const int64_t rows = j->m - g * TL_Q8_LANES < TL_Q8_LANES ? j->m - g * TL_Q8_LANES : TL_Q8_LANES;
        if (j->interleave) tl_q8_interleave(j->w->dtype, src + at, j->row_bytes, j->k, j->out + at);
        else memcpy(j->out + at, src + at, (size_t)rows * j->row_bytes);
        const uint8_t *done = src + at + (size_t)rows * j->row_bytes;
        if (tl_mapping_from_file(j->w->owner) && ((size_t)(done - kept) >= drop_every || g + 1 == g1)) {
            (void)tl_mapping_drop_pages(j->w->owner, kept, (size_t)(done - kept));
            kept = (const uint8_t *)((uintptr_t)done & ~(page - 1));
        }
    }
}

/* the float formats this level has decode kernels for: their rows are copied as they are */
static bool copies_rows(tl_dtype t) { return (t == TL_F16 || t == TL_BF16 || t == TL_F32) && tl_dot_kernel(t); }

void *tl_matmul_interleave(const tl_tensor *w, int n_threads) {
    tl_q8_kernels kern;
    const int64_t m = w->n_dims > 1 ? w->ne[1] : 1, k = w->ne[0];
    if (interleave_off() || w->n_dims > 2) return NULL;
    const bool interleave = tl_q8_interleaves(w->dtype);
    if (interleave ? !tl_q8_kernels_get(w->dtype, &kern) || !kern.gemv16 || m % TL_Q8_LANES != 0 ||
                         tl_dtype_row_size(w->dtype, k) * TL_Q8_LANES > INT32_MAX
                   : !copies_rows(w->dtype))
        return NULL;
    /* the whole 2 MB pages of the copy in huge pages where the kernel gives them (its page
     * faults are most of its cost at load, and a decode step's stream through F16 weights reads
     * ~10% faster from them than from the file's pages); the rest in small ones, so that
     * nothing is rounded up */
    const size_t huge = (size_t)2 << 20;
    void *p = NULL; /* posix_memalign: aligned_alloc wants the size a multiple of the alignment */
    if (posix_memalign(&p, w->nbytes >= huge ? huge : 64, w->nbytes)) return NULL;
#ifdef MADV_HUGEPAGE
    if (w->nbytes >= huge) (void)madvise(p, w->nbytes & ~(huge - 1), MADV_HUGEPAGE);
#endif
    copy_job j = {w, p, m, k, tl_dtype_row_size(w->dtype, k), interleave};
    /* a thread a MB on up to n_threads cores: the kernel's zeroing of the new pages and the copy
     * itself are what a load of such weights spends its time on, and both divide */
    if (n_threads < 1) n_threads = 1;
    const size_t mb = w->nbytes >> 20;
    const int n = mb < (size_t)n_threads ? (int)mb : n_threads;
    tl_pool *pool = NULL;
    if (n > 1 && tl_pool_new(n, &pool) == TL_OK) {
        tl_pool_run(pool, copy_worker, &j);
        tl_pool_free(pool);
        (void)tl_mapping_drop_pages(w->owner, w->data, w->nbytes); /* the pages where two shares meet */
    } else {
        copy_worker(&j, 0, 1);
    }
    return p;
}

bool tl_matmul_many(tl_pool *pool, const tl_tensor *const *w, int count, const float *x, int64_t n, float *const *y,
                    tl_matmul_glu_fn glu, float *scratch) {
    if (count < 1 || count > TL_MATMUL_MANY || (glu && count != 2)) return false;
    return matmul_q8(pool, w, count, x, n, y, glu, scratch);
}

void tl_matmul(tl_pool *pool, const tl_tensor *w, const float *x, int64_t n, float *y, float *scratch) {
    if (matmul_q8(pool, &w, 1, x, n, &y, NULL, scratch)) return;
    bool small = n < GEMM_MIN_ROWS;
    if (!small && matmul_gemm(pool, w, x, n, y, scratch)) return;
    matmul_job j = {w, x, n, w->n_dims > 1 ? w->ne[1] : 1, w->ne[0], y, scratch};
#ifndef TL_HAVE_OPENBLAS
    small = true;
#endif
    tl_pool_run(pool, small && tl_dot_kernel(w->dtype) ? matmul_rows_worker : matmul_worker, &j);
}

#include "matmul.h"

#include "dot.h"
#include "status.h"

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

void tl_matmul(tl_pool *pool, const tl_tensor *w, const float *x, int64_t n, float *y, float *scratch) {
    matmul_job j = {w, x, n, w->n_dims > 1 ? w->ne[1] : 1, w->ne[0], y, scratch};
    bool small = n < GEMM_MIN_ROWS;
#ifndef TL_HAVE_OPENBLAS
    small = true;
#endif
    tl_pool_run(pool, small && tl_dot_kernel(w->dtype) ? matmul_rows_worker : matmul_worker, &j);
}

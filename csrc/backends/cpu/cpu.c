/* The CPU backend: host memory, weights used where they lie (the mapping), ops on the
 * context's thread pool with the SIMD kernels core/ chose for this CPU. The reference every
 * other backend is tested against. */
#include "backends/backend.h"

#include "core/cpu.h"
#include "core/dot.h"
#include "core/dot_q8.h"
#include "core/fp16.h"
#include "core/mapping.h"
#include "core/matmul.h"
#include "core/pool.h"
#include "core/quants.h"
#include "core/status.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef TL_HAVE_OPENBLAS
void openblas_set_num_threads(int);
#endif

/* A thread's tile of widened keys, and one of values: ATTN_TILE_FLOATS / head_dim positions (at
 * most attention's block: 64 for heads of 64 and 128, 32 for 256), 32 KB each, read from L1/L2 by
 * every query row of a work item */
#define ATTN_TILE_FLOATS 8192

typedef struct cpu_stream {
    tl_stream base;
    tl_pool *pool;
    float *scratch; /* tl_matmul's per-thread tiles */
    size_t scratch_floats;
    float *attn_tiles; /* attention's widened keys and values, 2 ATTN_TILE_FLOATS a thread */
} cpu_stream;

static void *aligned_bytes(size_t bytes) { return aligned_alloc(64, (bytes + 63) & ~(size_t)63); }

/* ---- device ---- */

static void device_free(tl_device *d) { free(d); }

static tl_status alloc(tl_device *d, size_t bytes, void **out) {
    (void)d;
    *out = aligned_bytes(bytes ? bytes : 1);
    return *out ? TL_OK : tl_set_error(TL_ERR_NOMEM, "cpu: out of memory for %zu bytes", bytes);
}

static void free_(tl_device *d, void *p) {
    (void)d;
    free(p);
}

/* A weight matrix is read where it lies (the mapping). Where the decode kernels have an
 * interleaved layout for it (core/matmul.h), the matmuls read a copy in that layout instead;
 * float weights (F16, BF16, F32) are copied as they are into huge pages, which every reader of
 * the placed tensor reads; either way the mapped pages the copy replaces are given back: the
 * memory stays one copy of the weights. Only for file mappings, whose pages come back from the
 * file if a reader of the blocks themselves (a float fallback, Python's views of the weights)
 * touches them again; the embedding of tied weights reads its rows from the copy. The copies
 * are made on the model's load threads (d->n_threads). */
static tl_status weight_upload(tl_device *d, const tl_tensor *src, tl_tensor *dst) {
    *dst = *src;
    void *copy = tl_mapping_from_file(src->owner) ? tl_matmul_interleave(src, d->n_threads) : NULL;
    if (copy && !tl_q8_interleaves(src->dtype)) dst->data = copy; /* the rows as they are */
    dst->rows16 = copy;
    return TL_OK;
}

static void weight_free(tl_device *d, tl_tensor *t) {
    (void)d;
    free((void *)t->rows16);
    t->rows16 = NULL;
}

/* ---- streams ---- */

static tl_status stream_new(tl_device *d, int n_threads, tl_stream **out) {
    cpu_stream *s = calloc(1, sizeof *s);
    if (!s) return tl_set_error(TL_ERR_NOMEM, "cpu: out of memory");
    s->base.ops = d->ops;
    s->base.device = d;
    tl_status st = tl_pool_new(n_threads, &s->pool);
    if (st) {
        free(s);
        return st;
    }
    s->attn_tiles = aligned_bytes((size_t)tl_pool_size(s->pool) * 2 * ATTN_TILE_FLOATS * sizeof(float));
    if (!s->attn_tiles) {
        tl_pool_free(s->pool);
        free(s);
        return tl_set_error(TL_ERR_NOMEM, "cpu: out of memory for attention tiles");
    }
#ifdef TL_HAVE_OPENBLAS
    openblas_set_num_threads(1); /* our pool owns the threads (CONVENTIONS.md) */
#endif
    (void)tl_f16_table();
    *out = &s->base;
    return TL_OK;
}

static void stream_free(tl_stream *st) {
    cpu_stream *s = (cpu_stream *)st;
    if (!s) return;
    tl_pool_free(s->pool);
    free(s->scratch);
    free(s->attn_tiles);
    free(s);
}

static tl_status copy(tl_stream *s, void *dst, const void *src, size_t bytes) {
    (void)s;
    if (dst != src) memcpy(dst, src, bytes);
    return TL_OK;
}

static tl_status sync(tl_stream *s) {
    (void)s;
    return TL_OK;
}

static tl_status reserve(tl_stream *st, int64_t n_tokens, int64_t max_k) {
    cpu_stream *s = (cpu_stream *)st;
    (void)n_tokens;
    size_t need = tl_matmul_scratch_floats(max_k, tl_pool_size(s->pool));
    if (need <= s->scratch_floats) return TL_OK;
    float *p = aligned_bytes(need * sizeof(float));
    if (!p) return tl_set_error(TL_ERR_NOMEM, "cpu: out of memory for %zu floats of matmul scratch", need);
    free(s->scratch);
    s->scratch = p;
    s->scratch_floats = need;
    return TL_OK;
}

/* ---- small kernels ---- */

/* The rows of the tokens, from the interleaved copy where the table has one (a tied head's: the
 * mapped pages it replaced stay given back) */
static void embed(tl_stream *s, const tl_tensor *table, const int32_t *tokens, int32_t n, float scale, float *out) {
    (void)s;
    const int64_t dim = table->ne[0];
    const size_t row = tl_dtype_row_size(table->dtype, dim);
    uint8_t *blocks = tl_matmul_interleaved(table) ? malloc(row) : NULL;
    for (int32_t i = 0; i < n; i++) {
        const uint8_t *src = (const uint8_t *)table->data + (size_t)tokens[i] * row;
        if (blocks) {
            const size_t group = (size_t)tokens[i] / TL_Q8_LANES * TL_Q8_LANES;
            tl_q8_interleaved_row(table->dtype, (const uint8_t *)table->rows16 + group * row, tokens[i] % TL_Q8_LANES, dim, blocks);
            src = blocks;
        }
        tl_dequantize(table->dtype, src, out + (size_t)i * dim, dim);
    }
    free(blocks);
    if (scale != 1.0f)
        for (int64_t i = 0; i < n * dim; i++) out[i] *= scale;
}

/* The element-wise ops and the norms on the pool when a call has this many elements (a prompt's
 * rows); below it (a decode step's) on the calling thread, cheaper than a pool run */
#define POOL_MIN_ELEMENTS 16384

/* out = x / sqrt(mean(x^2) + eps) * w  (RMSNorm, Zhang & Sennrich 2019), the sum in double, in
 * 8 partial sums (independent chains: a row of 640 in ~100 cycles instead of ~2,600), added in
 * this order by sum8 */
static inline double sum8(const double acc[8]) {
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

/* a row's out from its x and sum of squares ss */
static inline void rmsnorm_scale(float *o, const float *xr, const float *w, int64_t dim, double ss, float eps) {
    const float scale = (float)(1.0 / sqrt(ss / dim + eps));
    for (int64_t i = 0; i < dim; i++) o[i] = xr[i] * scale * w[i];
}

static void rmsnorm_rows(float *out, const float *x, const float *w, int64_t dim, float eps, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
        const float *xr = x + r * dim;
        double acc[8] = {0};
        int64_t i = 0;
        for (; i + 8 <= dim; i += 8)
            for (int l = 0; l < 8; l++) acc[l] += (double)xr[i + l] * xr[i + l];
        double ss = sum8(acc);
        for (; i < dim; i++) ss += (double)xr[i] * xr[i];
        rmsnorm_scale(out + r * dim, xr, w, dim, ss, eps);
    }
}

/* x += y, then rmsnorm: the sum of squares taken as the sums are made (two sweeps of a row, not
 * three), in rmsnorm_rows's order, so the bits are add's then rmsnorm's. out may be y: a row of
 * y is read whole before its out is written. */
static void add_rmsnorm_rows(float *x, const float *y, float *out, const float *w, int64_t dim, float eps, int64_t r0,
                             int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
        float *xr = x + r * dim;
        const float *yr = y + r * dim;
        double acc[8] = {0};
        int64_t i = 0;
        for (; i + 8 <= dim; i += 8)
            for (int l = 0; l < 8; l++) {
                const float v = xr[i + l] + yr[i + l];
                xr[i + l] = v;
                acc[l] += (double)v * v;
            }
        double ss = sum8(acc);
        for (; i < dim; i++) {
            const float v = xr[i] + yr[i];
            xr[i] = v;
            ss += (double)v * v;
        }
        rmsnorm_scale(out + r * dim, xr, w, dim, ss, eps);
    }
}

typedef struct {
    float *out;
    const float *x, *w;
    float *residual; /* add_rmsnorm's x, whose rows get the x above (its y) added first; NULL: rmsnorm */
    int64_t rows, dim;
    float eps;
} rmsnorm_job;

static void rmsnorm_worker(void *p, int ith, int nth) {
    const rmsnorm_job *j = p;
    int64_t r0, r1;
    tl_split(j->rows, ith, nth, &r0, &r1);
    if (j->residual) add_rmsnorm_rows(j->residual, j->x, j->out, j->w, j->dim, j->eps, r0, r1);
    else rmsnorm_rows(j->out, j->x, j->w, j->dim, j->eps, r0, r1);
}

static void rmsnorm_run(tl_stream *s, const rmsnorm_job *j) {
    if (j->rows > 1 && j->rows * j->dim >= POOL_MIN_ELEMENTS) tl_pool_run(((cpu_stream *)s)->pool, rmsnorm_worker, (void *)j);
    else rmsnorm_worker((void *)j, 0, 1);
}

static void rmsnorm(tl_stream *s, float *out, const float *x, const float *w, int64_t rows, int64_t dim, float eps) {
    rmsnorm_job j = {out, x, w, NULL, rows, dim, eps};
    rmsnorm_run(s, &j);
}

static void add_rmsnorm(tl_stream *s, float *x, const float *y, float *out, const float *w, int64_t rows, int64_t dim,
                        float eps) {
    rmsnorm_job j = {out, y, w, x, rows, dim, eps};
    rmsnorm_run(s, &j);
}

static void add_bias(float *y, const float *bias, int64_t n, int64_t m) {
    if (bias)
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < m; j++) y[i * m + j] += bias[j];
}

static void matmul(tl_stream *st, const tl_tensor *w, const float *x, int64_t n, float *y, const float *bias) {
    cpu_stream *s = (cpu_stream *)st;
    tl_matmul(s->pool, w, x, n, y, s->scratch);
    add_bias(y, bias, n, w->ne[1]);
}

/* RoPE and the KV store, on the pool from POOL_MIN_ELEMENTS on (a prompt's): shares of whole
 * tokens, each element computed as on one thread */
typedef struct {
    float *x;
    const float *cs;
    int32_t n, heads, hd, rope_dim;
    bool neox;
} rope_job;

/* the heads of one token's row of x rotated by its cs (rope_dim floats: cos, sin pairs) */
static void rope_token(float *x, const float *c, int32_t heads, int32_t hd, int32_t rope_dim, bool neox) {
    const int half = rope_dim / 2;
    for (int32_t h = 0; h < heads; h++) {
        float *v = x + (size_t)h * hd;
        for (int k = 0; k < half; k++) {
            const int a = neox ? k : 2 * k, b = neox ? k + half : 2 * k + 1;
            const float x0 = v[a], x1 = v[b];
            v[a] = x0 * c[2 * k] - x1 * c[2 * k + 1];
            v[b] = x0 * c[2 * k + 1] + x1 * c[2 * k];
        }
    }
}

static void rope_worker(void *p, int ith, int nth) {
    const rope_job *j = p;
    int64_t i0, i1;
    tl_split(j->n, ith, nth, &i0, &i1);
    for (int64_t i = i0; i < i1; i++)
        rope_token(j->x + (size_t)i * j->heads * j->hd, j->cs + (size_t)i * j->rope_dim, j->heads, j->hd, j->rope_dim, j->neox);
}

static void rope(tl_stream *s, float *x, const float *cs, int32_t n, int32_t heads, int32_t hd, int32_t rope_dim,
                 bool neox) {
    rope_job j = {x, cs, n, heads, hd, rope_dim, neox};
    if ((int64_t)n * heads * rope_dim >= POOL_MIN_ELEMENTS) tl_pool_run(((cpu_stream *)s)->pool, rope_worker, &j);
    else rope_worker(&j, 0, 1);
}

/* Element index of (sequence, kv head, position) in one layer's cache: each head's positions
 * are contiguous rows of head_dim, so attention streams one head's keys and values without gaps. */
static size_t cache_index(int32_t seq, int32_t kvh, int32_t pos, int32_t kv_heads, int32_t max_seq_len, int32_t hd) {
    return (((size_t)seq * kv_heads + (size_t)kvh) * max_seq_len + (size_t)pos) * hd;
}

static void store_row(void *cache, tl_dtype dt, size_t at, const float *src, int32_t n) {
    if (dt == TL_F32) {
        memcpy((float *)cache + at, src, (size_t)n * sizeof(float));
    } else if (dt == TL_Q8_0) {
        tl_quantize_row_q8_0(src, (uint8_t *)cache + tl_dtype_row_size(dt, (int64_t)at), n);
    } else {
        uint16_t *d = (uint16_t *)cache + at;
        for (int32_t i = 0; i < n; i++) d[i] = tl_f32_to_f16(src[i]);
    }
}

typedef struct {
    void *k_cache, *v_cache;
    tl_dtype dt;
    const float *k, *v;
    const int32_t *pos, *seq;
    int32_t n, kv_heads, hd, max_seq_len;
} kv_store_job;

/* token i's kv heads of k and v into the caches */
static void kv_store_token(const kv_store_job *j, int64_t i) {
    for (int32_t h = 0; h < j->kv_heads; h++) {
        const size_t at = cache_index(j->seq[i], h, j->pos[i], j->kv_heads, j->max_seq_len, j->hd);
        const size_t row = ((size_t)i * j->kv_heads + h) * j->hd;
        store_row(j->k_cache, j->dt, at, j->k + row, j->hd);
        store_row(j->v_cache, j->dt, at, j->v + row, j->hd);
    }
}

static void kv_store_worker(void *p, int ith, int nth) {
    const kv_store_job *j = p;
    int64_t i0, i1;
    tl_split(j->n, ith, nth, &i0, &i1);
    for (int64_t i = i0; i < i1; i++) kv_store_token(j, i);
}

static void kv_store(tl_stream *s, void *k_cache, void *v_cache, tl_dtype dt, const float *k, const float *v,
                     const int32_t *pos, const int32_t *seq, int32_t n, int32_t kv_heads, int32_t hd, int32_t max_seq_len) {
    kv_store_job j = {k_cache, v_cache, dt, k, v, pos, seq, n, kv_heads, hd, max_seq_len};
    if ((int64_t)n * kv_heads * hd >= POOL_MIN_ELEMENTS) tl_pool_run(((cpu_stream *)s)->pool, kv_store_worker, &j);
    else kv_store_worker(&j, 0, 1);
}

/* RoPE of q and k and the KV store in one pass over the tokens (one pool run for a prompt, where
 * the plain ops take three): each token's q heads, then its k heads, then its k and v rows into
 * the caches, while they are in L1; every element computed as rope and kv_store compute it */
typedef struct {
    float *q, *k;
    const float *cs;
    int32_t n_heads, rope_dim;
    bool neox;
    kv_store_job kv; /* its k: the rotated keys */
} rope_store_job;

static void rope_store_worker(void *p, int ith, int nth) {
    const rope_store_job *j = p;
    const int32_t hd = j->kv.hd;
    int64_t i0, i1;
    tl_split(j->kv.n, ith, nth, &i0, &i1);
    for (int64_t i = i0; i < i1; i++) {
        const float *c = j->cs + (size_t)i * j->rope_dim;
        rope_token(j->q + (size_t)i * j->n_heads * hd, c, j->n_heads, hd, j->rope_dim, j->neox);
        rope_token(j->k + (size_t)i * j->kv.kv_heads * hd, c, j->kv.kv_heads, hd, j->rope_dim, j->neox);
        kv_store_token(&j->kv, i);
    }
}

static void rope_store(tl_stream *s, float *q, float *k, const float *v, const float *cs, int32_t n, int32_t n_heads,
                       int32_t kv_heads, int32_t hd, int32_t rope_dim, bool neox, void *k_cache, void *v_cache,
                       tl_dtype dt, const int32_t *pos, const int32_t *seq, int32_t max_seq_len) {
    rope_store_job j = {q, k, cs, n_heads, rope_dim, neox, {k_cache, v_cache, dt, k, v, pos, seq, n, kv_heads, hd, max_seq_len}};
    if (n > 1 && (int64_t)n * (n_heads + 2 * kv_heads) * hd >= POOL_MIN_ELEMENTS)
        tl_pool_run(((cpu_stream *)s)->pool, rope_store_worker, &j);
    else
        rope_store_worker(&j, 0, 1);
}

/* ---- attention ---- */

static inline float softcap1(float z, float c) { return c * tanhf(z / c); }

/* One cached key or value row: F32 or F16 (portable paths for when no SIMD kernel is chosen). */
static float kv_dot_portable(const float *q, const void *row, int hd, tl_dtype dt) {
    if (dt == TL_F32) return tl_dot_f32(q, row, hd);
    const uint16_t *k = row;
    const float *f16 = tl_f16_table();
    float acc[8] = {0};
    int d = 0;
    for (; d + 8 <= hd; d += 8)
        for (int l = 0; l < 8; l++) acc[l] += q[d + l] * f16[k[d + l]];
    float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; d < hd; d++) s += q[d] * f16[k[d]];
    return s;
}

static void kv_axpy_portable(float *y, float a, const void *row, int hd, tl_dtype dt) {
    if (dt == TL_F32) {
        const float *v = row;
        for (int d = 0; d < hd; d++) y[d] += a * v[d];
    } else {
        const uint16_t *v = row;
        const float *f16 = tl_f16_table();
        for (int d = 0; d < hd; d++) y[d] += a * f16[v[d]];
    }
}

/* keys per step of the online softmax: their scores live on the stack, never the whole row */
#define ATTN_BLOCK 64
/* query rows (query heads of one kv head x tokens of one sequence) in a work item */
#define ATTN_ROWS 64

typedef struct {
    const tl_attn_args *a;
    float *tiles; /* per thread: keys then values, 2 ATTN_TILE_FLOATS; NULL: rows read as cached */
    int heads;    /* query heads of a kv group in one work item */
    int tokens;   /* consecutive tokens of one sequence in one work item */
} attn_job;

/* the kernels for the rows attention reads: the cache's, or its tiles widened to F32 */
typedef struct {
    tl_dtype dt;
    size_t elem;
    tl_dot_fn dot;
    tl_attn_scores_fn scores;
    tl_attn_values_fn values;
    tl_attn_scores_rows_fn scores_rows; /* F32 rows only */
    tl_attn_values_rows_fn values_rows;
    tl_attn_scores_rows_f16_fn scores_rows_h; /* an F16 cache's rows as they lie */
    tl_attn_values_rows_f16_fn values_rows_h;
    tl_exp_sum_fn exp_sum;
    tl_scale_max_fn scale_max;
} attn_kernels;

/* the first key position a query at pos sees: causal, and a windowed layer's last W positions */
static inline int32_t first_key(const tl_attn_args *a, int32_t pos) {
    return a->window > 0 && pos >= a->window ? pos - a->window + 1 : 0;
}

/* One step of a query row's online softmax (flash-decoding style) over nk scores q . k_t: scaled
 * and soft-capped where the model says, they raise the running maximum m when they exceed it
 * (rescaling the sum l and the output accumulated so far by exp(m_old - m)); s becomes their
 * exp(s - m), added to l, for the caller to add sum_t s[t] v_t to out. No score matrix is
 * materialised, at any context length. */
static void softmax_step(const tl_attn_args *a, const attn_kernels *K, float *s, int nk, float *out, float *m, float *l) {
    float bm = -INFINITY;
    if (K->scale_max && !(a->softcap > 0)) {
        bm = K->scale_max(s, nk, a->scale);
    } else {
        for (int t = 0; t < nk; t++) {
            float z = s[t] * a->scale;
            if (a->softcap > 0) z = softcap1(z, a->softcap);
            s[t] = z;
            if (z > bm) bm = z;
        }
    }
    if (bm > *m) { /* a new maximum: what was summed so far shrinks by exp(m - bm) */
        const float r = expf(*m - bm);
        if (*l > 0)
            for (int d = 0; d < a->head_dim; d++) out[d] *= r;
        *l *= r;
        *m = bm;
    }
    if (K->exp_sum) {
        *l += K->exp_sum(s, nk, *m);
    } else {
        for (int t = 0; t < nk; t++) {
            s[t] = expf(s[t] - *m);
            *l += s[t];
        }
    }
}

/* nk consecutive keys and values (rows of head_dim) for one query row */
static void attend_block(const tl_attn_args *a, const attn_kernels *K, const float *q, float *out, const uint8_t *k,
                         const uint8_t *v, int nk, float *m, float *l) {
    const int hd = a->head_dim;
    const size_t row = (size_t)hd * K->elem;
    float s[ATTN_BLOCK];
    if (K->scores) {
        K->scores(q, k, (size_t)hd, nk, hd, s);
    } else {
        for (int t = 0; t < nk; t++) {
            const void *kt = k + (size_t)t * row;
            s[t] = K->dot ? K->dot(kt, q, hd) : kv_dot_portable(q, kt, hd, K->dt);
        }
    }
    softmax_step(a, K, s, nk, out, m, l);
    if (K->values) {
        K->values(out, s, v, (size_t)hd, nk, hd);
    } else {
        for (int t = 0; t < nk; t++) kv_axpy_portable(out, s[t], v + (size_t)t * row, hd, K->dt);
    }
}

/* The query rows of one token (heads of a kv group, hd floats apart in q and out) over the same
 * nk keys and values (float, or halves where half): attend_block for every row, with the scores
 * and the value sums of all rows from the row kernels (each key and value read once for 4 rows,
 * or 8 from halves) */
static void attend_rows(const tl_attn_args *a, const attn_kernels *K, const float *q, float *out, int nr, const void *k,
                        const void *v, bool half, int nk, float *m, float *l) {
    enum { ROWS = 16 };
    const int hd = a->head_dim;
    float s[ROWS * ATTN_BLOCK];
    for (int r0 = 0; r0 < nr; r0 += ROWS) {
        const int rn = nr - r0 < ROWS ? nr - r0 : ROWS;
        if (half)
            K->scores_rows_h(q + (size_t)r0 * hd, rn, k, nk, hd, s, ATTN_BLOCK);
        else
            K->scores_rows(q + (size_t)r0 * hd, rn, k, nk, hd, s, ATTN_BLOCK);
        for (int r = 0; r < rn; r++)
            softmax_step(a, K, s + r * ATTN_BLOCK, nk, out + (size_t)(r0 + r) * hd, m + r0 + r, l + r0 + r);
        if (half)
            K->values_rows_h(out + (size_t)r0 * hd, rn, s, ATTN_BLOCK, v, nk, hd);
        else
            K->values_rows(out + (size_t)r0 * hd, rn, s, ATTN_BLOCK, v, nk, hd);
    }
}

/* How the attention widens a tile of cached rows to float: F16 (NULL f16: the table) or Q8_0 */
typedef struct {
    tl_dtype dt;
    tl_f16_widen_fn f16;
    tl_q8_0_widen_fn q8_0;
} kv_widen;

static void widen_rows(const kv_widen *w, const uint8_t *src, float *dst, int64_t n) {
    if (w->dt == TL_Q8_0) {
        w->q8_0(src, dst, n);
        return;
    }
    if (w->f16) {
        w->f16((const uint16_t *)src, dst, n);
        return;
    }
    const float *f16 = tl_f16_table();
    const uint16_t *h = (const uint16_t *)src;
    for (int64_t i = 0; i < n; i++) dst[i] = f16[h[i]];
}

/* One work item: tokens [i0, i1) of one sequence and query heads [h0, h1) of kv head kvh, over
 * every key any of them sees, a tile of tk positions at a time. Where kt and vt are given, each
 * tile of keys and values is widened to float once, for all the item's rows (the query heads
 * of the group, each token); an item of one token (a decode step), whose rows read each key
 * once, reads an F16 cache as it lies where the half row kernels exist. */
static void attend_item(const tl_attn_args *a, const attn_kernels *K, const kv_widen *widen, float *kt, float *vt,
                        int tk, int i0, int i1, int kvh, int h0, int h1) {
    const int hd = a->head_dim, nh = h1 - h0;
    const size_t q_dim = (size_t)a->n_heads * hd, row = (size_t)hd * K->elem;
    const size_t base = tl_dtype_row_size(a->kv_dtype, (int64_t)cache_index(a->seq[i0], kvh, 0, a->n_kv_heads, a->max_seq_len, hd));
    const uint8_t *kc = (const uint8_t *)a->k_cache + base, *vc = (const uint8_t *)a->v_cache + base;
    float m[ATTN_ROWS], l[ATTN_ROWS];
    int32_t lo = a->pos[i0], hi = a->pos[i0];
    for (int i = i0; i < i1; i++) {
        const int32_t t0 = first_key(a, a->pos[i]);
        lo = t0 < lo ? t0 : lo;
        hi = a->pos[i] > hi ? a->pos[i] : hi;
        memset(a->out + (size_t)i * q_dim + (size_t)h0 * hd, 0, (size_t)nh * hd * sizeof(float));
    }
    for (int r = 0; r < (i1 - i0) * nh; r++) m[r] = -INFINITY, l[r] = 0;
    const bool half = kt && K->scores_rows_h && i1 - i0 == 1;
    if (half) tk = ATTN_BLOCK;
    for (int32_t tb = lo; tb <= hi; tb += tk) {
        const int nt = hi - tb + 1 < tk ? hi - tb + 1 : tk;
        const size_t at = tl_dtype_row_size(a->kv_dtype, (int64_t)tb * hd);
        const uint8_t *kb = kc + at, *vb = vc + at;
        if (half) { /* one token: every key of [lo, hi] is its own */
            const size_t at = (size_t)i0 * q_dim + (size_t)h0 * hd;
            attend_rows(a, K, a->q + at, a->out + at, nh, kb, vb, true, nt, m, l);
            continue;
        }
        if (kt) {
            widen_rows(widen, kb, kt, (int64_t)nt * hd);
            widen_rows(widen, vb, vt, (int64_t)nt * hd);
            kb = (const uint8_t *)kt;
            vb = (const uint8_t *)vt;
        }
        for (int i = i0; i < i1; i++) {
            /* this token's keys in the tile: [ta, tz] */
            const int32_t t0 = first_key(a, a->pos[i]), ta = t0 > tb ? t0 : tb;
            const int32_t tz = a->pos[i] < tb + nt - 1 ? a->pos[i] : tb + nt - 1;
            if (ta > tz) continue;
            if (K->scores_rows) {
                const size_t at = (size_t)i * q_dim + (size_t)h0 * hd, r = (size_t)(i - i0) * nh;
                attend_rows(a, K, a->q + at, a->out + at, nh, kb + (size_t)(ta - tb) * row, vb + (size_t)(ta - tb) * row, false,
                            tz - ta + 1, m + r, l + r);
                continue;
            }
            for (int h = h0; h < h1; h++) {
                const int r = (i - i0) * nh + h - h0;
                const size_t at = (size_t)i * q_dim + (size_t)h * hd;
                attend_block(a, K, a->q + at, a->out + at, kb + (size_t)(ta - tb) * row, vb + (size_t)(ta - tb) * row,
                             tz - ta + 1, &m[r], &l[r]);
            }
        }
    }
    for (int i = i0; i < i1; i++)
        for (int h = h0; h < h1; h++) {
            const float inv = 1.0f / l[(i - i0) * nh + h - h0];
            float *out = a->out + (size_t)i * q_dim + (size_t)h * hd;
            for (int d = 0; d < hd; d++) out[d] *= inv;
        }
}

/* Work items (runs of up to j->tokens tokens of one sequence, kv head, j->heads query heads of
 * its group) dealt round-robin: the causal prompt's later items, which see more keys, alternate
 * between the threads. The result does not depend on which thread takes an item. */
static void attention_worker(void *p, int ith, int nth) {
    const attn_job *j = p;
    const tl_attn_args *a = j->a;
    const int hd = a->head_dim, group = a->n_heads / a->n_kv_heads;
    /* a Q8_0 cache is always read through the tiles (the context checked head_dim) */
    const bool wide = j->tiles && (a->kv_dtype == TL_F16 || a->kv_dtype == TL_Q8_0) && hd <= ATTN_TILE_FLOATS;
    attn_kernels K = {.dt = wide ? TL_F32 : a->kv_dtype};
    K.elem = K.dt == TL_F32 ? sizeof(float) : sizeof(uint16_t);
    K.dot = tl_dot_kernel(K.dt);
    tl_attn_kernels(K.dt, hd, &K.scores, &K.values);
    if (K.dt == TL_F32) tl_attn_rows_kernels(hd, &K.scores_rows, &K.values_rows);
    if (wide && K.scores_rows && a->kv_dtype == TL_F16) tl_attn_rows_f16_kernels(hd, &K.scores_rows_h, &K.values_rows_h);
    K.exp_sum = tl_exp_sum_kernel();
    K.scale_max = tl_scale_max_kernel();
    float *kt = wide ? j->tiles + (size_t)ith * 2 * ATTN_TILE_FLOATS : NULL, *vt = wide ? kt + ATTN_TILE_FLOATS : NULL;
    const int tk = wide && ATTN_TILE_FLOATS / hd < ATTN_BLOCK ? ATTN_TILE_FLOATS / hd : ATTN_BLOCK;
    const kv_widen widen = {a->kv_dtype, tl_f16_widen_kernel(), tl_q8_0_widen_kernel()};
    int64_t w = 0;
    for (int i0 = 0, i1; i0 < a->n; i0 = i1) {
        for (i1 = i0 + 1; i1 < a->n && i1 - i0 < j->tokens && a->seq[i1] == a->seq[i0]; i1++) {}
        for (int kvh = 0; kvh < a->n_kv_heads; kvh++)
            for (int h0 = 0; h0 < group; h0 += j->heads, w++) {
                if (w % nth != ith) continue;
                const int h1 = h0 + j->heads < group ? h0 + j->heads : group;
                attend_item(a, &K, &widen, kt, vt, tk, i0, i1, kvh, kvh * group + h0, kvh * group + h1);
            }
    }
}

static void attention(tl_stream *st, const tl_attn_args *a) {
    cpu_stream *s = (cpu_stream *)st;
    const int nth = tl_pool_size(s->pool), group = a->n_heads / a->n_kv_heads;
    attn_job j = {.a = a, .tiles = s->attn_tiles, .heads = group < ATTN_ROWS ? group : ATTN_ROWS};
    j.tokens = ATTN_ROWS / j.heads;
    /* fewer items than threads (a decode step with few kv heads): the group's heads in parts,
     * each part widening the tiles for itself */
    int64_t runs = 0;
    for (int i = 0, len = 0; i < a->n; i++, len++)
        if (i == 0 || a->seq[i] != a->seq[i - 1] || len == j.tokens) runs++, len = 0;
    while (j.heads > 1 && runs * a->n_kv_heads * ((group + j.heads - 1) / j.heads) < nth) j.heads = (j.heads + 1) / 2;
    tl_pool_run(s->pool, attention_worker, &j);
}

/* ---- elementwise ---- */

/* An element-wise op over n elements, on the pool from POOL_MIN_ELEMENTS on: shares of whole
 * runs of 16 (the SIMD GLU's width), so that its scalar tail is the array's, as on one thread */
typedef struct {
    tl_activation act; /* glu */
    float *a;
    const float *b;
    int64_t n;
} elementwise_job;

static void elementwise_share(int64_t n, int ith, int nth, int64_t *i0, int64_t *i1) {
    int64_t l0, l1;
    tl_split((n + 15) / 16, ith, nth, &l0, &l1);
    *i0 = 16 * l0 < n ? 16 * l0 : n;
    *i1 = 16 * l1 < n ? 16 * l1 : n;
}

static void add_worker(void *p, int ith, int nth) {
    const elementwise_job *j = p;
    int64_t i0, i1;
    elementwise_share(j->n, ith, nth, &i0, &i1);
    for (int64_t i = i0; i < i1; i++) j->a[i] += j->b[i];
}

static void add(tl_stream *s, float *x, const float *y, int64_t n) {
    elementwise_job j = {.a = x, .b = y, .n = n};
    if (n >= POOL_MIN_ELEMENTS) tl_pool_run(((cpu_stream *)s)->pool, add_worker, &j);
    else add_worker(&j, 0, 1);
}

static inline float silu(float x) { return x / (1.0f + expf(-x)); }

static void glu_worker(void *p, int ith, int nth) {
    const elementwise_job *j = p;
    int64_t i0, i1;
    elementwise_share(j->n, ith, nth, &i0, &i1);
    float *a = j->a + i0;
    const float *b = j->b + i0;
    const int64_t n = i1 - i0;
    const tl_gelu_glu_fn simd = j->act == TL_ACT_GELU_TANH ? tl_gelu_glu_kernel() : tl_silu_glu_kernel();
    if (simd)
        simd(a, b, n);
    else if (j->act == TL_ACT_GELU_TANH)
        for (int64_t i = 0; i < n; i++) a[i] = tl_gelu_tanh(a[i]) * b[i];
    else
        for (int64_t i = 0; i < n; i++) a[i] = silu(a[i]) * b[i];
}

/* the GLU of one run of a gate group's rows (tl_matmul_many's epilogue), as glu_worker runs it */
static void silu_glu_run(float *a, const float *b, int64_t n) {
    elementwise_job j = {TL_ACT_SILU, a, b, n};
    glu_worker(&j, 0, 1);
}

static void gelu_glu_run(float *a, const float *b, int64_t n) {
    elementwise_job j = {TL_ACT_GELU_TANH, a, b, n};
    glu_worker(&j, 0, 1);
}

static void glu(tl_stream *s, tl_activation act, float *a, const float *b, int64_t n) {
    elementwise_job j = {act, a, b, n};
    if (n >= POOL_MIN_ELEMENTS) tl_pool_run(((cpu_stream *)s)->pool, glu_worker, &j);
    else glu_worker(&j, 0, 1);
}

/* q, k and v (or gate and up, with their GLU) on one quantized x and one pass of the pool where
 * the matrices share a dtype with integer kernels (tl_matmul_many); one by one otherwise */
static void matmul_qkv(tl_stream *st, const tl_tensor *wq, const tl_tensor *wk, const tl_tensor *wv, const float *x,
                       int64_t n, float *q, float *k, float *v, const float *bq, const float *bk, const float *bv) {
    cpu_stream *s = (cpu_stream *)st;
    const tl_tensor *w[3] = {wq, wk, wv};
    float *y[3] = {q, k, v};
    if (tl_matmul_many(s->pool, w, 3, x, n, y, NULL, s->scratch)) {
        add_bias(q, bq, n, wq->ne[1]);
        add_bias(k, bk, n, wk->ne[1]);
        add_bias(v, bv, n, wv->ne[1]);
        return;
    }
    matmul(st, wq, x, n, q, bq);
    matmul(st, wk, x, n, k, bk);
    matmul(st, wv, x, n, v, bv);
}

static void matmul_glu(tl_stream *st, const tl_tensor *gate, const tl_tensor *up, const float *x, int64_t n, float *a,
                       float *b, tl_activation act) {
    cpu_stream *s = (cpu_stream *)st;
    const tl_tensor *w[2] = {gate, up};
    float *y[2] = {a, b};
    if (tl_matmul_many(s->pool, w, 2, x, n, y, act == TL_ACT_GELU_TANH ? gelu_glu_run : silu_glu_run, s->scratch)) return;
    matmul(st, gate, x, n, a, NULL);
    matmul(st, up, x, n, b, NULL);
    glu(st, act, a, b, n * gate->ne[1]);
}

static void softcap(tl_stream *s, float *x, int64_t n, float c) {
    (void)s;
    for (int64_t i = 0; i < n; i++) x[i] = softcap1(x[i], c);
}

static void gather(tl_stream *s, float *out, const float *x, const int32_t *rows, int32_t n, int64_t dim) {
    (void)s;
    for (int32_t j = 0; j < n; j++)
        if (out + (size_t)j * dim != x + (size_t)rows[j] * dim)
            memmove(out + (size_t)j * dim, x + (size_t)rows[j] * dim, (size_t)dim * sizeof(float));
}

const tl_backend_ops tl_cpu_backend = {
    .name = "cpu",
    .device_free = device_free,
    .host_memory = true,
    .kv_q8_0 = true,
    .alloc = alloc,
    .free = free_,
    .weight_upload = weight_upload,
    .weight_free = weight_free,
    .memory = NULL,
    .stream_new = stream_new,
    .stream_free = stream_free,
    .upload = copy,
    .download = copy,
    .sync = sync,
    .reserve = reserve,
    .embed = embed,
    .rmsnorm = rmsnorm,
    .matmul = matmul,
    .rope = rope,
    .kv_store = kv_store,
    .attention = attention,
    .add = add,
    .glu = glu,
    .add_rmsnorm = add_rmsnorm,
    .rope_store = rope_store,
    .matmul_qkv = matmul_qkv,
    .matmul_glu = matmul_glu,
    .softcap = softcap,
    .gather = gather,
};

tl_status tl_cpu_device_open(int index, tl_device **out) {
    *out = NULL;
    if (index != 0) return tl_set_error(TL_ERR_INVALID, "device: there is one CPU device (cpu:0), not cpu:%d", index);
    tl_device *d = calloc(1, sizeof *d);
    if (!d) return tl_set_error(TL_ERR_NOMEM, "device: out of memory");
    d->ops = &tl_cpu_backend;
    snprintf(d->name, sizeof d->name, "CPU (%s)", tl_cpu_isa());
    *out = d;
    return TL_OK;
}

int tl_cpu_device_count(void) { return 1; }

/* The backend interface: where a model's weights, activations and KV cache live, and the
 * ops the decoder forward (model/forward.c) is written in. The forward never touches a
 * buffer's contents itself; it calls these ops, so the same forward runs on every backend.
 *
 * Two levels of state:
 *   tl_device  one per model: memory (alloc/upload/download) and the weights placed on it;
 *   tl_stream  one per context: where ops run (a thread pool; a CUDA stream and cuBLAS
 *              handle), with its scratch. Contexts of one model share the device.
 *
 * Pointers passed to ops are device memory (for the CPU backend, host memory). Ops only queue
 * work: a GPU op may return before it has run. download() and sync() wait for what was queued
 * before them, and report a failure of anything queued (as a tl_status with a message).
 * Backends know nothing of architectures: every op is a plain tensor operation. */
#ifndef TL_BACKEND_H
#define TL_BACKEND_H

#include <assert.h>

#include "torchless.h"

typedef struct tl_device tl_device;
typedef struct tl_stream tl_stream;

/* Attention of n tokens over the cached positions of their sequences (flash-style: online
 * softmax, no score matrix). q and out are [n][n_heads][head_dim]; the cache of one layer is
 * [seq][kv head][pos][head_dim] of kv_dtype; keys 0..pos[i] of sequence seq[i] are valid (a
 * window W > 0 keeps pos - W < t <= pos only). */
typedef struct tl_attn_args {
    const float *q;
    float *out;
    const void *k_cache, *v_cache;  /* this layer's part of the caches */
    tl_dtype kv_dtype;              /* TL_F16, TL_F32 or (where ops->kv_q8_0) TL_Q8_0 */
    const int32_t *pos, *seq;       /* per token, on the device */
    const int32_t *host_pos, *host_seq; /* the same on the host (launch sizing) */
    int32_t n, n_heads, n_kv_heads, head_dim;
    int32_t max_seq_len;            /* positions per (sequence, kv head) in the cache */
    int32_t window;
    float scale, softcap;           /* softcap 0: none */
} tl_attn_args;

/* Sampling with the logits left on the device: what the host sampler needs of a row
 * (generate/sampling.h), so that a few hundred bytes cross to the host instead of the row.
 * The definition every backend's top_k op is tested against is tl_top_k_reference. */
#define TL_TOP_K_MAX 1024 /* candidates per row, at most */

/* The row's log-partition, in a form every backend computes to the same bits:
 * log Z = max + log(sum * 2^-63), sum = the sum over the row of floor(2^63 exp(l - max)) with
 * the sampler's exp (sampling.c: tl_exp_fixed), an integer summed exactly. */
typedef struct tl_top_k_stats {
    float max;          /* the largest logit that is not NaN (-inf: every one is -inf) */
    int32_t bad;        /* the first index whose logit is NaN or +inf; -1: none */
    float bad_value;    /* its logit */
    uint32_t unused;
    uint64_t sum_lo, sum_hi; /* 0 unless max is finite */
} tl_top_k_stats;

typedef struct tl_top_k_cand {
    float logit; /* the raw logit, bit for bit */
    int32_t id;
} tl_top_k_cand;

typedef struct tl_top_k_args {
    int32_t k;              /* candidates per row: 1..TL_TOP_K_MAX, at most n_vocab */
    const int32_t *ids;     /* host: rows x n_ids tokens whose logits are wanted too (< 0: none) */
    int32_t n_ids;          /* 0..TL_TOP_K_MAX */
    tl_top_k_stats *stats;  /* host: rows */
    tl_top_k_cand *cand;    /* host: rows x k, the best first: larger logit, then lower id */
    float *at_ids;          /* host: rows x n_ids, the logits of ids (unspecified for an id < 0) */
} tl_top_k_args;
/* the kernels write these layouts (sample.cl, sample.cuh) */
static_assert(sizeof(tl_top_k_stats) == 32 && sizeof(tl_top_k_cand) == 8, "top_k layouts");

/* For the GPU backends' top_k ops (backend.c): the checks of their arguments; the bytes of a
 * row of results as their kernels lay them out for one download (the stats, k candidates, the
 * logits at the ids padded to an even count); those rows unpacked into a's arrays. */
tl_status tl_top_k_check(const char *backend, int32_t rows, int32_t n_vocab, const tl_top_k_args *a);
size_t tl_top_k_row_bytes(int32_t k, int32_t n_ids);
void tl_top_k_unpack(const void *results, int32_t rows, const tl_top_k_args *a);

typedef struct tl_backend_ops {
    const char *name; /* "cpu", "cuda", "hip", "opencl" */

    /* ---- device: memory and weights ---- */
    void (*device_free)(tl_device *d);
    /* true: device memory is host memory (weights are used in place, uploads are copies) */
    bool host_memory;
    /* true: the KV cache may be Q8_0 (rows of head_dim a multiple of 32, in blocks of 32:
     * kv_store quantizes, attention reads them); else F16 or F32 only */
    bool kv_q8_0;
    tl_status (*alloc)(tl_device *d, size_t bytes, void **out);
    void (*free)(tl_device *d, void *p);
    /* A weight matrix on the device, in the layout the backend's matmul reads (GGUF's blocks,
     * repacked, or converted where the backend has no kernel for the dtype). dst->data is
     * then device memory, dst->dtype what the backend keeps; weight_free releases it. On host
     * memory the matrices (not the vectors, not the embedding table) come here too: dst->data
     * stays src's, and the backend may add a layout of its own (the CPU's rows16). */
    tl_status (*weight_upload)(tl_device *d, const tl_tensor *src, tl_tensor *dst);
    void (*weight_free)(tl_device *d, tl_tensor *t);
    /* Bytes of device memory free and in all (NULL for host memory: no budget checked). */
    tl_status (*memory)(tl_device *d, size_t *free_bytes, size_t *total_bytes);

    /* ---- streams ---- */
    tl_status (*stream_new)(tl_device *d, int n_threads, tl_stream **out);
    void (*stream_free)(tl_stream *s);
    /* Bytes between host and device; upload may return before the copy is done only when
     * the source stays valid until the next sync. download waits for everything queued. */
    tl_status (*upload)(tl_stream *s, void *dst, const void *src, size_t bytes);
    tl_status (*download)(tl_stream *s, void *dst, const void *src, size_t bytes);
    tl_status (*sync)(tl_stream *s);
    /* Scratch for batches of up to n_tokens tokens through weights of up to max_k columns;
     * called before the ops of a batch that may need more than the last one. */
    tl_status (*reserve)(tl_stream *s, int64_t n_tokens, int64_t max_k);

    /* Replaying a whole forward (NULL where the backend has no such thing): the ops queued
     * between capture_begin and capture_end are recorded under `key` (which the caller derives
     * from everything that shapes the launches; the data they read may change between calls)
     * and run; graph_replay(key) runs them again, returning false if nothing is recorded under
     * key. capture_end failing leaves nothing run: the caller queues the ops again. reserve()
     * forgets every recording (buffers may have moved). */
    bool (*graph_replay)(tl_stream *s, uint64_t key);
    bool (*capture_begin)(tl_stream *s, uint64_t key);
    tl_status (*capture_end)(tl_stream *s);

    /* ---- the forward's ops (all float32 activations, rows contiguous) ---- */
    /* out[i] = row tokens[i] of table (any dtype) times scale */
    void (*embed)(tl_stream *s, const tl_tensor *table, const int32_t *tokens, int32_t n, float scale, float *out);
    /* out = x / sqrt(mean(x^2) + eps) * w, for rows of dim; out may be x */
    void (*rmsnorm)(tl_stream *s, float *out, const float *x, const float *w, int64_t rows, int64_t dim, float eps);
    /* y[n][m] = x[n][k] . W^T (+ bias[m] when given), W of shape (m, k) as weight_upload left it */
    void (*matmul)(tl_stream *s, const tl_tensor *w, const float *x, int64_t n, float *y, const float *bias);
    /* Rotate the first rope_dim dims of every head of x [n][heads][head_dim] by cs
     * [n][rope_dim] (cos, sin pairs); neox: pairs (i, i + rope_dim/2), else (2i, 2i+1). */
    void (*rope)(tl_stream *s, float *x, const float *cs, int32_t n, int32_t heads, int32_t head_dim, int32_t rope_dim,
                 bool neox);
    /* Row i of k and v ([n][kv_heads][head_dim]) into the caches at (seq[i], head, pos[i]) */
    void (*kv_store)(tl_stream *s, void *k_cache, void *v_cache, tl_dtype kv_dtype, const float *k, const float *v,
                     const int32_t *pos, const int32_t *seq, int32_t n, int32_t kv_heads, int32_t head_dim,
                     int32_t max_seq_len);
    void (*attention)(tl_stream *s, const tl_attn_args *a);
    /* x += y */
    void (*add)(tl_stream *s, float *x, const float *y, int64_t n);
    /* a = act(a) * b; act SiLU or tanh-GELU */
    void (*glu)(tl_stream *s, tl_activation act, float *a, const float *b, int64_t n);
    /* x = c tanh(x / c) */
    void (*softcap)(tl_stream *s, float *x, int64_t n, float c);
    /* out[j] = x[rows[j]] for rows of dim floats (rows on the device) */
    void (*gather)(tl_stream *s, float *out, const float *x, const int32_t *rows, int32_t n, int64_t dim);

    /* Sampling candidates from rows x n_vocab logits on the device, into the host arrays of a
     * (see tl_top_k_args); like download(), waits for what was queued and reports its failure.
     * The logits are not changed. NULL where the backend has none (the CPU's logits are host
     * memory already): the caller downloads the rows. */
    tl_status (*top_k)(tl_stream *s, const float *logits, int32_t rows, int32_t n_vocab, const tl_top_k_args *a);

    /* ---- fused forms of sequences the forward runs every layer; NULL: it runs the plain ops.
     * Each computes what its sequence does, in one pass where the backend can. ---- */
    /* add(x, y, rows * dim), then rmsnorm(out, x, w, rows, dim, eps); out may be y */
    void (*add_rmsnorm)(tl_stream *s, float *x, const float *y, float *out, const float *w, int64_t rows, int64_t dim,
                        float eps);
    /* rope(q, n_heads), rope(k, kv_heads), then kv_store(k, v) */
    void (*rope_store)(tl_stream *s, float *q, float *k, const float *v, const float *cs, int32_t n, int32_t n_heads,
                       int32_t kv_heads, int32_t head_dim, int32_t rope_dim, bool neox, void *k_cache, void *v_cache,
                       tl_dtype kv_dtype, const int32_t *pos, const int32_t *seq, int32_t max_seq_len);
    /* matmul(wq, x) into q (+ bq), matmul(wk, x) into k (+ bk), matmul(wv, x) into v (+ bv) */
    void (*matmul_qkv)(tl_stream *s, const tl_tensor *wq, const tl_tensor *wk, const tl_tensor *wv, const float *x,
                       int64_t n, float *q, float *k, float *v, const float *bq, const float *bk, const float *bv);
    /* matmul(gate, x) into a, matmul(up, x) into b, then glu(act, a, b) */
    void (*matmul_glu)(tl_stream *s, const tl_tensor *gate, const tl_tensor *up, const float *x, int64_t n, float *a,
                       float *b, tl_activation act);
} tl_backend_ops;

struct tl_device {
    const tl_backend_ops *ops;
    int index;          /* the N of "cuda:N" */
    char name[128];     /* "CPU (avx512)", "NVIDIA H100 80GB HBM3" */
    int n_threads;      /* host threads weight_upload may use: the model load's n_threads (0, a device opened alone: one) */
};

struct tl_stream {
    const tl_backend_ops *ops;
    tl_device *device;
};

/* Opens a device by name: "cpu", "cuda", "cuda:N", "hip[:N]", "opencl[:N]", or "auto" (or NULL:
 * the first GPU found, else the CPU). A backend not compiled in, or no such device, is an
 * error saying which. */
tl_status tl_device_open(const char *name, tl_device **out);
void tl_device_free(tl_device *d);

/* Each backend compiled in provides these (the CPU always): how many devices it sees (0 when
 * its runtime finds none: never an error) and an opener. */
typedef struct tl_backend_entry {
    const char *name;
    int (*count)(void);
    tl_status (*open)(int index, tl_device **out);
    /* whether "auto" may pick device index (NULL: every one); an OpenCL CPU device (PoCL) is
     * there for tests, not to run models in place of the CPU backend */
    bool (*auto_ok)(int index);
} tl_backend_entry;

int tl_cpu_device_count(void);
tl_status tl_cpu_device_open(int index, tl_device **out);
#ifdef TL_HAVE_CUDA
int tl_cuda_device_count(void);
tl_status tl_cuda_device_open(int index, tl_device **out);
#endif
#ifdef TL_HAVE_HIP
int tl_hip_device_count(void);
tl_status tl_hip_device_open(int index, tl_device **out);
#endif
#ifdef TL_HAVE_OPENCL
int tl_opencl_device_count(void);
tl_status tl_opencl_device_open(int index, tl_device **out);
bool tl_opencl_device_is_gpu(int index);
#endif

#endif

/* Sampling candidates (backend.h: top_k; included by cuda.cu inside its namespace): for each
 * row of logits, the k best tokens by (logit descending, id ascending), the logits at a few
 * ids, and the row's stats (largest logit, first NaN or +inf, the integer sum of exp of
 * generate/sampling.c), which the host sampler finishes with. The algorithm of
 * backends/opencl/sample.cl (tested on PoCL), kernel for kernel:
 *   top_k_max    a block per chunk of TOPK_CHUNK logits: its largest and first bad index
 *   top_k_chunk  a block per chunk: its sum of exp against the row's largest, its best k keys
 *   top_k_merge  a block per row: the best k of the chunks' keys, sorted; the stats; the ids'
 * A token's rank is one 64-bit key: the logit's bits made monotone (-0 as +0), then the id
 * complemented. Keys are distinct, so "the k best" has one answer however many logits tie: a
 * radix select finds the k-th largest key a byte at a time, and the keys above it are taken.
 * Only comparisons and integer sums, and the exp's float operations, made in sampling.c's
 * order and never fused: the host's bits. */

#define TOPK_WG 256 /* threads a block; also the buckets of a byte */
#define TOPK_CHUNK 8192

/* tl_top_k_stats; also a chunk's part of them */
struct topk_stats {
    float max;
    int bad;
    float bad_value;
    unsigned unused;
    unsigned long long lo, hi;
};
static_assert(sizeof(topk_stats) == sizeof(tl_top_k_stats), "top_k stats");

/* the logit's order as an unsigned integer; -0 and +0 are one logit */
__device__ __forceinline__ uint32_t topk_ordered(float v) {
    uint32_t u = __float_as_uint(v);
    if (u == 0x80000000u) u = 0;
    return (u & 0x80000000u) ? ~u : u | 0x80000000u;
}
__device__ __forceinline__ uint64_t topk_key(float v, int id) { return (uint64_t)topk_ordered(v) << 32 | (uint32_t)~id; }
__device__ __forceinline__ int topk_id(uint64_t key) { return (int)~(uint32_t)key; }

/* Products and sums rounded one by one, never fused into an FMA: CUDA's _rn intrinsics are never
 * fused; HIP's are plain operators, so there they are spelled so, under a pragma that keeps clang
 * from fusing them (an intrinsic's operators would carry the header's permission to fuse). */
#ifdef TL_HIP
#define TOPK_MUL(a, b) ((a) * (b))
#define TOPK_ADD(a, b) ((a) + (b))
#define TOPK_SUB(a, b) ((a) - (b))
#else
#define TOPK_MUL __fmul_rn
#define TOPK_ADD __fadd_rn
#define TOPK_SUB __fsub_rn
#endif

/* tl_exp_fixed (generate/sampling.c), operation for operation */
__device__ __forceinline__ unsigned long long topk_exp_fixed(float x) {
#ifdef TL_HIP
#pragma clang fp contract(off)
#endif
    if (!(x >= -64.0f)) return 0;
    const float n = TOPK_SUB(TOPK_ADD(TOPK_MUL(x, 1.44269504088896341f), 12582912.0f), 12582912.0f);
    float r = TOPK_SUB(x, TOPK_MUL(n, 0.693359375f));
    r = TOPK_SUB(r, TOPK_MUL(n, -2.12194440e-4f));
    float p = 1.9875691500e-4f;
    p = TOPK_ADD(TOPK_MUL(p, r), 1.3981999507e-3f);
    p = TOPK_ADD(TOPK_MUL(p, r), 8.3334519073e-3f);
    p = TOPK_ADD(TOPK_MUL(p, r), 4.1665795894e-2f);
    p = TOPK_ADD(TOPK_MUL(p, r), 1.6666665459e-1f);
    p = TOPK_ADD(TOPK_MUL(p, r), 5.0000001201e-1f);
    p = TOPK_ADD(TOPK_MUL(p, TOPK_MUL(r, r)), r);
    p = TOPK_ADD(p, 1.0f);
    const float e = TOPK_MUL(p, __uint_as_float((uint32_t)((int)n + 127) << 23));
    return __float2ull_rz(TOPK_MUL(e, 0x1p63f));
}

__global__ void __launch_bounds__(TOPK_WG) top_k_max_kernel(const float *__restrict__ logits, int n_vocab, topk_stats *part) {
    grid_wait();
    __shared__ float red[TOPK_WG];
    __shared__ int first[TOPK_WG];
    const int lid = threadIdx.x, c = blockIdx.x, row = blockIdx.y;
    const int base = c * TOPK_CHUNK, n = min(TOPK_CHUNK, n_vocab - base);
    const float *l = logits + (size_t)row * n_vocab + base;
    float m = -INFINITY;
    int bad = INT_MAX;
    for (int i = lid; i < n; i += TOPK_WG) {
        const float v = l[i];
        m = fmaxf(m, v); /* NaN left out */
        if ((isnan(v) || v == INFINITY) && i < bad) bad = i;
    }
    red[lid] = m;
    first[lid] = bad;
    __syncthreads();
    for (int s = TOPK_WG / 2; s > 0; s >>= 1) {
        if (lid < s) {
            red[lid] = fmaxf(red[lid], red[lid + s]);
            first[lid] = min(first[lid], first[lid + s]);
        }
        __syncthreads();
    }
    if (lid == 0) {
        topk_stats *p = part + (size_t)row * gridDim.x + c;
        p->max = red[0];
        p->bad = first[0] == INT_MAX ? -1 : base + first[0];
    }
}

/* The k largest of n keys (0 < k <= n) into sel[0..k), unordered; a block calls it whole. The
 * keys: keys[i], or when l is given those of the logits l[i] with ids first_id + i. A pass a
 * byte, until the k-th key's bucket is taken whole (eight at most); a thread a bucket. */
__device__ void topk_select(const float *l, int first_id, const uint64_t *keys, int n, int k, uint64_t *sel) {
    __shared__ unsigned hist[256], above[256], count;
    __shared__ uint64_t state[3];
    const int lid = threadIdx.x;
    uint64_t prefix = 0, mask = 0; /* the k-th key's bytes found so far */
    unsigned need = k;             /* how many keys to take from those matching them */
    for (int shift = 56; shift >= 0; shift -= 8) {
        hist[lid] = 0;
        __syncthreads();
        for (int i = lid; i < n; i += TOPK_WG) {
            const uint64_t key = l ? topk_key(l[i], first_id + i) : keys[i];
            if ((key & mask) == prefix) atomicAdd(&hist[(unsigned)(key >> shift) & 255], 1u);
        }
        __syncthreads();
        /* above[d]: the keys in buckets d and up (a suffix sum over the buckets) */
        above[lid] = hist[lid];
        __syncthreads();
        for (int step = 1; step < 256; step <<= 1) {
            const unsigned v = lid + step < 256 ? above[lid + step] : 0;
            __syncthreads();
            above[lid] += v;
            __syncthreads();
        }
        /* the bucket that holds the need-th largest */
        const unsigned over = lid < 255 ? above[lid + 1] : 0;
        if (over < need && need <= above[lid]) {
            state[0] = prefix | (uint64_t)lid << shift;
            state[1] = need - over;
            state[2] = hist[lid] == need - over; /* the whole bucket is taken: no need to look further */
        }
        __syncthreads();
        prefix = state[0];
        need = (unsigned)state[1];
        mask |= (uint64_t)255 << shift;
        const bool done = state[2] != 0; /* the same in every thread */
        __syncthreads();
        if (done) break;
    }
    /* the keys above the bucket, and the bucket: k of them */
    if (lid == 0) count = 0;
    __syncthreads();
    for (int i = lid; i < n; i += TOPK_WG) {
        const uint64_t key = l ? topk_key(l[i], first_id + i) : keys[i];
        if ((key & mask) >= prefix) sel[atomicAdd(&count, 1u)] = key;
    }
    __syncthreads();
}

__global__ void __launch_bounds__(TOPK_WG) top_k_chunk_kernel(const float *__restrict__ logits, int n_vocab, int k,
                                                              topk_stats *part, uint64_t *keys) {
    grid_wait();
    __shared__ unsigned long long lo_r[TOPK_WG], hi_r[TOPK_WG];
    __shared__ uint64_t sel[TL_TOP_K_MAX];
    const int lid = threadIdx.x, c = blockIdx.x, row = blockIdx.y, chunks = gridDim.x;
    const int base = c * TOPK_CHUNK, n = min(TOPK_CHUNK, n_vocab - base);
    const float *l = logits + (size_t)row * n_vocab + base;
    topk_stats *p = part + (size_t)row * chunks;
    /* this chunk's part of the sum: exp against the row's largest logit, in 128-bit integers */
    float m = -INFINITY;
    for (int i = 0; i < chunks; i++) m = fmaxf(m, p[i].max);
    unsigned long long lo = 0, hi = 0;
    if (isfinite(m))
        for (int i = lid; i < n; i += TOPK_WG) {
            const unsigned long long t = topk_exp_fixed(l[i] - m);
            lo += t;
            hi += lo < t;
        }
    lo_r[lid] = lo;
    hi_r[lid] = hi;
    __syncthreads();
    for (int s = TOPK_WG / 2; s > 0; s >>= 1) {
        if (lid < s) {
            const unsigned long long a = lo_r[lid] + lo_r[lid + s];
            hi_r[lid] += hi_r[lid + s] + (a < lo_r[lid]);
            lo_r[lid] = a;
        }
        __syncthreads();
    }
    if (lid == 0) p[c].lo = lo_r[0], p[c].hi = hi_r[0];
    /* its best k (every key of a chunk of no more) */
    uint64_t *out = keys + ((size_t)row * chunks + c) * k;
    if (n <= k) {
        for (int i = lid; i < n; i += TOPK_WG) out[i] = topk_key(l[i], base + i);
        return;
    }
    topk_select(l, base, NULL, n, k, sel);
    for (int i = lid; i < k; i += TOPK_WG) out[i] = sel[i];
}

/* out, per row: the stats, k candidates (logit, id), then the logits at the ids (the row's ids
 * padded to an even count) */
__global__ void __launch_bounds__(TOPK_WG) top_k_merge_kernel(const float *__restrict__ logits, int n_vocab, int k,
                                                              const topk_stats *part, const uint64_t *keys,
                                                              const int32_t *ids, int n_ids, uint8_t *out) {
    grid_wait();
    __shared__ uint64_t sel[TL_TOP_K_MAX];
    const int lid = threadIdx.x, row = blockIdx.x, chunks = (n_vocab + TOPK_CHUNK - 1) / TOPK_CHUNK;
    const float *l = logits + (size_t)row * n_vocab;
    const topk_stats *p = part + (size_t)row * chunks;
    uint8_t *o = out + (size_t)row * (sizeof(topk_stats) + 8 * (size_t)k + 8 * (size_t)((n_ids + 1) / 2));
    /* every chunk left k keys but the last, which left min(k, its length): one run of keys */
    const int n = (chunks - 1) * k + min(k, n_vocab - (chunks - 1) * TOPK_CHUNK);
    const uint64_t *keys_row = keys + (size_t)row * chunks * k;
    if (n > k) {
        topk_select(NULL, 0, keys_row, n, k, sel);
    } else {
        for (int i = lid; i < k; i += TOPK_WG) sel[i] = keys_row[i];
        __syncthreads();
    }
    /* sorted, largest first: a bitonic sort of the next power of two, padded with key 0 (below any) */
    int size = 1;
    while (size < k) size <<= 1;
    for (int i = k + lid; i < size; i += TOPK_WG) sel[i] = 0;
    __syncthreads();
    for (int run = 2; run <= size; run <<= 1)
        for (int stride = run >> 1; stride > 0; stride >>= 1) {
            for (int t = lid; t < size / 2; t += TOPK_WG) {
                const int i = 2 * t - (t & (stride - 1)), j = i + stride;
                const uint64_t a = sel[i], b = sel[j];
                if ((a < b) == ((i & run) == 0)) sel[i] = b, sel[j] = a;
            }
            __syncthreads();
        }
    tl_top_k_cand *cand = (tl_top_k_cand *)(o + sizeof(topk_stats));
    for (int i = lid; i < k; i += TOPK_WG) {
        const int id = topk_id(sel[i]);
        cand[i].logit = l[id]; /* the logit's own bits (-0 stays -0) */
        cand[i].id = id;
    }
    float *at = (float *)(cand + k);
    for (int j = lid; j < n_ids; j += TOPK_WG) {
        const int id = ids[(size_t)row * n_ids + j];
        at[j] = id >= 0 && id < n_vocab ? l[id] : NAN;
    }
    if (lid == 0) {
        topk_stats st = {-INFINITY, -1, 0.0f, 0, 0, 0};
        for (int c = 0; c < chunks; c++) {
            st.max = fmaxf(st.max, p[c].max);
            if (st.bad < 0 && p[c].bad >= 0) st.bad = p[c].bad;
            st.lo += p[c].lo;
            st.hi += p[c].hi + (st.lo < p[c].lo);
        }
        if (st.bad >= 0) st.bad_value = l[st.bad];
        *(topk_stats *)o = st;
    }
}

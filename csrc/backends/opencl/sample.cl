/* Sampling candidates (backend.h: top_k): for each row of logits, the k best tokens by
 * (logit descending, id ascending), the logits at a few ids, and the row's stats (largest
 * logit, first NaN or +inf, the integer sum of exp of generate/sampling.c), which the host
 * sampler finishes with. backends/cuda/sample.cuh is the same algorithm. Three kernels over
 * chunks of TOPK_CHUNK logits:
 *   top_k_max    a work-group per chunk: its largest logit and first bad index
 *   top_k_chunk  a work-group per chunk: its sum of exp against the row's largest, and its
 *                best k keys (unordered)
 *   top_k_merge  a work-group per row: the best k of the chunks' keys, sorted; the stats; the
 *                logits at the ids
 * A token's rank is one 64-bit key: the logit's bits made monotone (-0 as +0), then the id
 * complemented. Keys are distinct, so "the k best" has one answer however many logits tie: a
 * radix select finds the k-th largest key a byte at a time, and the keys above it are taken.
 * Only comparisons and integer sums, and the exp's float operations, which are made in the
 * order sampling.c makes them, without contraction: the host's bits. */

#pragma OPENCL FP_CONTRACT OFF

#define TOPK_WG 256 /* also the buckets of a byte */
#define TOPK_CHUNK 8192 /* opencl.c */
#define TOPK_MAX 1024   /* TL_TOP_K_MAX */

/* tl_top_k_stats; also a chunk's part of them */
typedef struct {
    float max;
    int bad;
    float bad_value;
    uint unused;
    ulong lo, hi;
} topk_stats;

/* the logit's order as an unsigned integer; -0 and +0 are one logit */
static inline uint ordered(float v) {
    uint u = as_uint(v);
    if (u == 0x80000000u) u = 0;
    return (u & 0x80000000u) ? ~u : u | 0x80000000u;
}
static inline ulong key_of(float v, int id) { return (ulong)ordered(v) << 32 | (uint)~id; }
static inline int id_of(ulong key) { return (int)~(uint)key; }

/* tl_exp_fixed (generate/sampling.c), operation for operation */
static inline ulong exp_fixed(float x) {
    if (!(x >= -64.0f)) return 0;
    const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r;
    p = p + 1.0f;
    const float e = p * as_float((uint)((int)n + 127) << 23);
    return convert_ulong_rtz(e * 0x1p63f);
}

kernel __attribute__((reqd_work_group_size(TOPK_WG, 1, 1))) void top_k_max(ARG(logits), int n_vocab, ARG(part)) {
    local float red[TOPK_WG];
    local int first[TOPK_WG];
    const int lid = get_local_id(0), c = get_group_id(0), row = get_group_id(1);
    const int base = c * TOPK_CHUNK, n = min(TOPK_CHUNK, n_vocab - base);
    global const float *l = AT(float, logits) + (size_t)row * n_vocab + base;
    float m = -INFINITY;
    int bad = INT_MAX;
    for (int i = lid; i < n; i += TOPK_WG) {
        const float v = l[i];
        m = fmax(m, v); /* NaN left out */
        if ((isnan(v) || v == INFINITY) && i < bad) bad = i;
    }
    red[lid] = m;
    first[lid] = bad;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = TOPK_WG / 2; s > 0; s >>= 1) {
        if (lid < s) {
            red[lid] = fmax(red[lid], red[lid + s]);
            first[lid] = min(first[lid], first[lid + s]);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0) {
        global topk_stats *p = AT(topk_stats, part) + (size_t)row * get_num_groups(0) + c;
        p->max = red[0];
        p->bad = first[0] == INT_MAX ? -1 : base + first[0];
    }
}

/* The k largest of n keys (0 < k <= n) into sel[0..k), unordered; a work-group calls it whole.
 * The keys: keys[i], or when l is given those of the logits l[i] with ids first_id + i.
 * A pass a byte, until the k-th key's bucket is taken whole (eight at most); a work-item a
 * bucket (PoCL miscompiled a bucket search by one work-item: a loop of data-dependent length
 * between barriers). */
static void select_top(global const float *l, int first_id, global const ulong *keys, int n, int k, local uint *hist,
                       local uint *above, local ulong *state, local uint *count, local ulong *sel) {
    const int lid = get_local_id(0);
    ulong prefix = 0, mask = 0; /* the k-th key's bytes found so far */
    uint need = k;              /* how many keys to take from those matching them */
    for (int shift = 56; shift >= 0; shift -= 8) {
        hist[lid] = 0;
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int i = lid; i < n; i += TOPK_WG) {
            const ulong key = l ? key_of(l[i], first_id + i) : keys[i];
            if ((key & mask) == prefix) atomic_inc(&hist[(uint)(key >> shift) & 255]);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        /* above[d]: the keys in buckets d and up (a suffix sum over the buckets) */
        above[lid] = hist[lid];
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int step = 1; step < 256; step <<= 1) {
            const uint v = lid + step < 256 ? above[lid + step] : 0;
            barrier(CLK_LOCAL_MEM_FENCE);
            above[lid] += v;
            barrier(CLK_LOCAL_MEM_FENCE);
        }
        /* the bucket that holds the need-th largest */
        const uint over = lid < 255 ? above[lid + 1] : 0;
        if (over < need && need <= above[lid]) {
            state[0] = prefix | (ulong)lid << shift;
            state[1] = need - over;
            state[2] = hist[lid] == need - over; /* the whole bucket is taken: no need to look further */
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        prefix = state[0];
        need = (uint)state[1];
        mask |= (ulong)255 << shift;
        const bool done = state[2] != 0; /* the same in every work-item */
        barrier(CLK_LOCAL_MEM_FENCE);
        if (done) break;
    }
    /* the keys above the bucket, and the bucket: k of them */
    if (lid == 0) *count = 0;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int i = lid; i < n; i += TOPK_WG) {
        const ulong key = l ? key_of(l[i], first_id + i) : keys[i];
        if ((key & mask) >= prefix) sel[atomic_inc(count)] = key;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
}

kernel __attribute__((reqd_work_group_size(TOPK_WG, 1, 1))) void top_k_chunk(ARG(logits), int n_vocab, int k, ARG(part),
                                                                            ARG(keys)) {
    local uint hist[256], above[256];
    local ulong state[3], lo_r[TOPK_WG], hi_r[TOPK_WG], sel[TOPK_MAX];
    local uint count;
    const int lid = get_local_id(0), c = get_group_id(0), row = get_group_id(1), chunks = get_num_groups(0);
    const int base = c * TOPK_CHUNK, n = min(TOPK_CHUNK, n_vocab - base);
    global const float *l = AT(float, logits) + (size_t)row * n_vocab + base;
    global topk_stats *p = AT(topk_stats, part) + (size_t)row * chunks;
    /* this chunk's part of the sum: exp against the row's largest logit, in 128-bit integers */
    float m = -INFINITY;
    for (int i = 0; i < chunks; i++) m = fmax(m, p[i].max);
    ulong lo = 0, hi = 0;
    if (isfinite(m))
        for (int i = lid; i < n; i += TOPK_WG) {
            const ulong t = exp_fixed(l[i] - m);
            lo += t;
            hi += lo < t;
        }
    lo_r[lid] = lo;
    hi_r[lid] = hi;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = TOPK_WG / 2; s > 0; s >>= 1) {
        if (lid < s) {
            const ulong a = lo_r[lid] + lo_r[lid + s];
            hi_r[lid] += hi_r[lid + s] + (a < lo_r[lid]);
            lo_r[lid] = a;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0) p[c].lo = lo_r[0], p[c].hi = hi_r[0];
    /* its best k (every key of a chunk of no more) */
    global ulong *out = AT(ulong, keys) + ((size_t)row * chunks + c) * k;
    if (n <= k) {
        for (int i = lid; i < n; i += TOPK_WG) out[i] = key_of(l[i], base + i);
        return;
    }
    select_top(l, base, NULL, n, k, hist, above, state, &count, sel);
    for (int j = 0; j < k; j += TOPK_WG)
        if (j + lid < k) out[j + lid] = sel[j + lid];
}

/* out, per row: the stats, k candidates (logit, id), then the logits at the ids (the row's
 * ids padded to an even count) */
kernel __attribute__((reqd_work_group_size(TOPK_WG, 1, 1))) void top_k_merge(ARG(logits), int n_vocab, int k, ARG(part),
                                                                            ARG(keys), ARG(ids), int n_ids, ARG(out)) {
    local uint hist[256], above[256];
    local ulong state[3], sel[TOPK_MAX];
    local uint count;
    const int lid = get_local_id(0), row = get_group_id(1), chunks = (n_vocab + TOPK_CHUNK - 1) / TOPK_CHUNK;
    global const float *l = AT(float, logits) + (size_t)row * n_vocab;
    global const topk_stats *p = AT(topk_stats, part) + (size_t)row * chunks;
    global uchar *o = AT(uchar, out) + (size_t)row * (sizeof(topk_stats) + 8 * k + 8 * ((n_ids + 1) / 2));
    /* every chunk left k keys but the last, which left min(k, its length): one run of keys */
    const int n = (chunks - 1) * k + min(k, n_vocab - (chunks - 1) * TOPK_CHUNK);
    global const ulong *keys_row = AT(ulong, keys) + (size_t)row * chunks * k;
    if (n > k) {
        select_top(NULL, 0, keys_row, n, k, hist, above, state, &count, sel);
    } else {
        for (int i = lid; i < k; i += TOPK_WG) sel[i] = keys_row[i];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    /* sorted, largest first: a bitonic sort of the next power of two, padded with key 0 (below any) */
    int size = 1;
    while (size < k) size <<= 1;
    for (int i = k + lid; i < size; i += TOPK_WG) sel[i] = 0;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int run = 2; run <= size; run <<= 1)
        for (int stride = run >> 1; stride > 0; stride >>= 1) {
            for (int t = lid; t < size / 2; t += TOPK_WG) {
                const int i = 2 * t - (t & (stride - 1)), j = i + stride;
                const ulong a = sel[i], b = sel[j];
                if ((a < b) == ((i & run) == 0)) sel[i] = b, sel[j] = a;
            }
            barrier(CLK_LOCAL_MEM_FENCE);
        }
    global float *cand = (global float *)(o + sizeof(topk_stats));
    for (int i = lid; i < k; i += TOPK_WG) {
        const int id = id_of(sel[i]);
        cand[2 * i] = l[id]; /* the logit's own bits (-0 stays -0) */
        ((global int *)cand)[2 * i + 1] = id;
    }
    global float *at = cand + 2 * k;
    for (int j = lid; j < n_ids; j += TOPK_WG) {
        const int id = AT(int, ids)[(size_t)row * n_ids + j];
        at[j] = id >= 0 && id < n_vocab ? l[id] : NAN;
    }
    if (lid == 0) {
        topk_stats st = {-INFINITY, -1, 0.0f, 0, 0, 0};
        for (int c = 0; c < chunks; c++) {
            st.max = fmax(st.max, p[c].max);
            if (st.bad < 0 && p[c].bad >= 0) st.bad = p[c].bad;
            st.lo += p[c].lo;
            st.hi += p[c].hi + (st.lo < p[c].lo);
        }
        if (st.bad >= 0) st.bad_value = l[st.bad];
        *(global topk_stats *)o = st;
    }
}

/* Batched matmuls on 8-bit activations through the int8 tensor cores (included by cuda.cu after
 * gemv_q8.cuh, inside its namespace; CUDA only: HIP keeps the GEMVs).
 *
 * The same integers as the GEMVs (gemv_q8.cuh): the activations quantized as the CPU quantizes
 * them, a 32-element weight sub-block a·code + b, its contribution to an output
 *     a·dx·Σ code·q + b·s,
 * but Σ code·q for 16 rows and 8 tokens at once: one mma.sync m16n8k32 (s8 × s8 → s32) a
 * sub-block; Q6_K's two 16-element scale groups of a sub-block take an m16n8k16 each.
 *
 * A block takes 128 consecutive rows (a warp 32 of them: two m16 tiles) and all NT tokens (NT / 8
 * n8 tiles), in stages of 8 sub-blocks (256 elements): the stage's weight bytes of the 128 rows
 * and its activations are copied to shared memory with 16-byte cp.async (a warp reads whole lines:
 * the fragments' 4-byte pieces read straight from global memory cost 8 lines a load), the
 * fragments then read from there, rows padded so that a fragment load meets no bank twice.
 * Where the rows are few for the card, blockIdx.y splits a row's stages (split-K): each split
 * writes its partial sums to a workspace, and the block that finishes a row tile last adds them
 * in split order (the same order whichever arrives last) and writes y. Weights are read once a
 * call whatever NT is. Needs k a multiple of 256.
 *
 * mmv.cuh, which reads the weights into the fragments without staging, is faster for every
 * shape measured up to 32 tokens but the 32,000-row Q4_K head at 32 (H100, benchmarks/NOTES.md):
 * it takes Q4_0, Q8_0, Q4_K and Q6_K, mmq the other formats (and all of them with
 * TORCHLESS_GPU_MMV=0).
 *
 * Fragments (PTX ISA, mma.m16n8k32 .s8): lane = 4·g + t. A (16 x 32, row-major): a0 = row g,
 * k 4t..4t+3; a1 = row g+8, same k; a2 = row g, k 16+4t..; a3 = row g+8, k 16+4t... B (32 x 8,
 * column-major): b0 = column g, k 4t..4t+3; b1 = column g, k 16+4t... C (16 x 8): c0, c1 = row g,
 * columns 2t, 2t+1; c2, c3 = row g+8. A row's k 4t.. and 16+4t.. of a sub-block are the "lo" and
 * "hi" words below. */

#ifdef TL_HIP
#define MMQ_MAX_TOKENS 0 /* no mma.sync: HIP keeps the GEMVs, and batches past them take its BLAS */
#else
#define MMQ_MAX_TOKENS 32
#define MMQ_ROWS 128 /* a block's rows: 4 warps of 32 */

__device__ __forceinline__ void mma_s8_k32(int c[4], int a0, int a1, int a2, int a3, int b0, int b1) {
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void mma_s8_k16(int c[4], int a0, int a1, int b0) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%0,%1,%2,%3};"
                 : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
                 : "r"(a0), "r"(a1), "r"(b0));
}

/* What a stage holds of a row: the fields of the split layouts (cuda.cu) for 8 blocks of the
 * 32-element formats, or one block (256 elements) of the K-quants: Q4_K/Q5_K's whole GGUF block,
 * Q6_K's ql, qh and scales (its d is read from global memory) */
__host__ __device__ constexpr int mmq_fields(int dt) {
    return dt == TL_Q4_K || dt == TL_Q5_K ? 1 : dt == TL_Q6_K ? 3 : field_size(dt, 2) ? 3 : 2;
}
__host__ __device__ constexpr int mmq_block_bytes(int dt, int f) {
    return dt == TL_Q4_K ? 144 : dt == TL_Q5_K ? 176 : field_size(dt, f);
}
/* bytes of a row a stage, and their stride in shared memory: a multiple of 16 bytes whose word
 * count is 4 mod 8, so that 8 rows x 4 consecutive words fall in 32 distinct banks */
__host__ __device__ constexpr int mmq_row_bytes(int dt, int f) { return (kquant(dt) ? 1 : 8) * mmq_block_bytes(dt, f); }
__host__ __device__ constexpr int mmq_stride(int dt, int f) {
    return mmq_row_bytes(dt, f) + ((mmq_row_bytes(dt, f) / 4) % 8 == 0 ? 16 : 0);
}
__host__ __device__ constexpr int mmq_field_at(int dt, int f) {
    return f == 0 ? 0 : mmq_field_at(dt, f - 1) + MMQ_ROWS * mmq_stride(dt, f - 1);
}
#define MMQ_XQ_STRIDE 272 /* an activation row's 256 bytes a stage, padded */
#define MMQ_XD_STRIDE 80  /* its 8 (dx, s) pairs (64 bytes), padded */
__host__ __device__ constexpr size_t mmq_smem(int dt, int nt) {
    return (size_t)mmq_field_at(dt, mmq_fields(dt)) + (size_t)nt * (MMQ_XQ_STRIDE + MMQ_XD_STRIDE);
}
/* Q4_K/Q5_K's (a, b) of the stage's 128 rows x 8 sub-blocks, decoded once (4 lanes of a fragment
 * would decode the same scales), after the two stage buffers */
__host__ __device__ constexpr size_t mmq_ab_bytes(int dt) { return dt == TL_Q4_K || dt == TL_Q5_K ? MMQ_ROWS * 8 * 8 : 0; }
__host__ __device__ constexpr size_t mmq_smem_all(int dt, int nt) { return 2 * mmq_smem(dt, nt) + mmq_ab_bytes(dt); }
/* no b term: Q4_0/Q5_0's codes are made signed (code - 8, code - 16), Q8_0's are */
__host__ __device__ constexpr bool mmq_has_b(int dt) {
    return dt == TL_Q4_1 || dt == TL_Q5_1 || dt == TL_Q4_K || dt == TL_Q5_K;
}

__device__ __forceinline__ void cp_async16(void *smem, const void *g) {
    const unsigned a = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(a), "l"(g));
}
__device__ __forceinline__ void cp_async_commit(void) {
    asm volatile("cp.async.commit_group;" ::: "memory");
}
/* wait for all copies issued, or all but the last group */
__device__ __forceinline__ void cp_async_wait(void) {
    asm volatile("cp.async.wait_group 0;" ::: "memory");
}
__device__ __forceinline__ void cp_async_wait_but_one(void) {
    asm volatile("cp.async.wait_group 1;" ::: "memory");
}

/* Sub-block u (of the stage's 8) of a row whose stage bytes are at p[f], as lane t of a fragment
 * needs it: codes of elements 4t..4t+3 (lo) and 16+4t..16+4t+3 (hi) as signed bytes, and the
 * sub-block's a and b (Q6_K: a of each 16-element half, in a and b; its codes shifted to code - 32) */
template <int DT> struct mmq_sub {
    int lo, hi;
    float a, b;
    __device__ __forceinline__ void load(const uint8_t *const p[3], int u, int t, float, const float2 *) {
        if (DT == TL_Q8_0) {
            const int *qs = (const int *)p[0] + 8 * u;
            lo = qs[t], hi = qs[4 + t];
            a = h2f(p[1] + 2 * u), b = 0.0f;
            return;
        }
        /* Q4_0, Q4_1, Q5_0, Q5_1 */
        const int q = ((const int *)p[0])[4 * u + t];
        lo = q & 0x0F0F0F0F, hi = (q >> 4) & 0x0F0F0F0F;
        if (DT == TL_Q5_0 || DT == TL_Q5_1) {
            const uint32_t h = ((const uint32_t *)p[1])[u];
            lo |= (int)spread4_bit4(h, 4 * t);
            hi |= (int)spread4_bit4(h, 16 + 4 * t);
        }
        const uint8_t *dm = p[DT == TL_Q5_0 || DT == TL_Q5_1 ? 2 : 1];
        if (DT == TL_Q4_0 || DT == TL_Q5_0) {
            const int z = DT == TL_Q4_0 ? 0x08080808 : 0x10101010;
            lo = (int)__vsub4((unsigned)lo, z), hi = (int)__vsub4((unsigned)hi, z);
            a = h2f(dm + 2 * u), b = 0.0f;
        } else {
            const float2 f = __half22float2(((const __half2 *)dm)[u]);
            a = f.x, b = f.y;
        }
    }
};

/* Q4_K/Q5_K: sub-block u: the low (u even) or high nibbles of qs bytes 32 (u / 2) on; Q5_K's
 * fifth bit is bit u of qh byte e; (a, b) decoded once a stage into ab (mmq_k4_scales) */
template <int DT> struct mmq_k4 {
    int lo, hi;
    float a, b;
    __device__ __forceinline__ void load(const uint8_t *const p[3], int u, int t, float, const float2 *ab) {
        const uint8_t *blk = p[0];
        const int *qs = (const int *)(blk + (DT == TL_Q4_K ? 16 : 48) + 32 * (u / 2));
        const int sh = 4 * (u & 1);
        lo = (qs[t] >> sh) & 0x0F0F0F0F, hi = (qs[4 + t] >> sh) & 0x0F0F0F0F;
        if (DT == TL_Q5_K) {
            const int *qh = (const int *)(blk + 16);
            lo |= ((qh[t] >> u) & 0x01010101) << 4;
            hi |= ((qh[4 + t] >> u) & 0x01010101) << 4;
        }
        const float2 f = ab[u];
        a = f.x, b = f.y;
    }
};
template <> struct mmq_sub<TL_Q4_K> : mmq_k4<TL_Q4_K> {};

/* a Q4_K/Q5_K block's 8 sub-blocks' (a, b) = (d·scale, -dmin·min) */
__device__ __forceinline__ float2 mmq_k4_scale(const uint8_t *blk, int u) {
    const uint4 hdr = *(const uint4 *)blk; /* (d, dmin), the 12 scale bytes */
    int sc, mn;
    scale_min_words(u, hdr.y, hdr.z, hdr.w, &sc, &mn);
    const float2 dd = __half22float2(*(const __half2 *)&hdr.x);
    return make_float2(dd.x * (float)sc, -dd.y * (float)mn);
}
template <> struct mmq_sub<TL_Q5_K> : mmq_k4<TL_Q5_K> {};

/* Q6_K: sub-block u is elements 128h + 32v + l (h = u / 4, v = u % 4, l < 32): ql byte
 * 64h + 32(v & 1) + l (high nibble for v >= 2), qh byte 32h + l bits 2v, 2v+1, scale
 * sc[8h + 2v + l / 16] */
template <> struct mmq_sub<TL_Q6_K> {
    int lo, hi;
    float a, b; /* the scales of the lo and hi halves */
    __device__ __forceinline__ void load(const uint8_t *const p[3], int u, int t, float d, const float2 *) {
        const int h = u / 4, v = u & 3;
        const int *ql = (const int *)(p[0] + 64 * h + 32 * (v & 1));
        const int *qh = (const int *)(p[1] + 32 * h);
        const int sh = v >= 2 ? 4 : 0;
        const int c0 = ((ql[t] >> sh) & 0x0F0F0F0F) | ((qh[t] >> (2 * v)) & 0x03030303) << 4;
        const int c1 = ((ql[4 + t] >> sh) & 0x0F0F0F0F) | ((qh[4 + t] >> (2 * v)) & 0x03030303) << 4;
        lo = (int)__vsub4((unsigned)c0, 0x20202020u), hi = (int)__vsub4((unsigned)c1, 0x20202020u);
        const int8_t *sc = (const int8_t *)p[2] + 8 * h + 2 * v;
        a = d * (float)sc[0], b = d * (float)sc[1];
    }
};

/* y[t][r] = W[r] . x[t] (+ bias[r]) for the n <= NT tokens quantized in xq (rows xs bytes apart;
 * rows up to NT are read, those past n unused), for each of up to 3 matrices (W, y, bias) of mats. Split blockIdx.y of gridDim.y takes sub-blocks
 * [blockIdx.y·per, +per) of each row, per a multiple of 8. Dynamic shared memory: mmq_smem_all. */
#define MMQ_MATS 3        /* matrices of one dtype and width against the same rows in one launch (q, k, v) */
#define MMQ_MAX_SPLITS 8 /* split-K's most splits */
typedef struct mmq_mats {
    gw w[MMQ_MATS];
    float *y[MMQ_MATS];
    const float *bias[MMQ_MATS];
    float *ws[MMQ_MATS];          /* each one's partial sums */
    unsigned tile_end[MMQ_MATS]; /* matrix i has the row tiles [tile_end[i-1], tile_end[i]) of blockIdx.x */
} mmq_mats;

template <int DT, int NT>
__global__ void __launch_bounds__(128, 4) mmq_kernel(mmq_mats mats, const int8_t *__restrict__ xq, size_t xs, int64_t k,
                                                     int n, int64_t per, unsigned *__restrict__ counts) {
    extern __shared__ __align__(16) uint8_t sm[];
    constexpr int TT = NT / 8, NF = mmq_fields(DT);
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3, warp = threadIdx.x >> 5;
    /* which matrix (selects, not an index into the parameters: that could copy them to local memory) */
    const unsigned bx = blockIdx.x;
    const int mi = bx < mats.tile_end[0] ? 0 : bx < mats.tile_end[1] ? 1 : 2;
    const gw w = mi == 0 ? mats.w[0] : mi == 1 ? mats.w[1] : mats.w[2];
    float *const y = mi == 0 ? mats.y[0] : mi == 1 ? mats.y[1] : mats.y[2];
    const float *const bias = mi == 0 ? mats.bias[0] : mi == 1 ? mats.bias[1] : mats.bias[2];
    float *const ws = mi == 0 ? mats.ws[0] : mi == 1 ? mats.ws[1] : mats.ws[2];
    const unsigned first = mi == 0 ? 0 : mi == 1 ? mats.tile_end[0] : mats.tile_end[1];
    const int64_t m = w.m, tile0 = (int64_t)(bx - first) * MMQ_ROWS;
    const int64_t subs = k / 32, j0 = (int64_t)blockIdx.y * per, j1 = j0 + per < subs ? j0 + per : subs;
    grid_wait();
    /* this lane's four rows in the tile: g, g+8 of the warp's first m16 tile, g+16, g+24 */
    const int rl0 = 32 * warp + g;
    float acc[2][TT][4];
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int tt = 0; tt < TT; tt++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[mt][tt][e] = 0.0f;

    /* stage js into buffer b: each field's bytes of the 128 rows (rows past m: the last row
     * again), the NT activation rows' 256 bytes and their 8 (dx, s) pairs */
    auto issue = [&](int64_t js, int b) {
        uint8_t *const buf = sm + (size_t)b * mmq_smem(DT, NT);
#pragma unroll
        for (int f = 0; f < NF; f++) {
            const int chunks = mmq_row_bytes(DT, f) / 16;
            for (int i = threadIdx.x; i < MMQ_ROWS * chunks; i += 128) {
                const int rho = i / chunks, c = i % chunks;
                const int64_t r = tile0 + rho < m ? tile0 + rho : m - 1;
                const uint8_t *src = DT == TL_Q4_K || DT == TL_Q5_K
                                         ? w.p + (size_t)(r * w.nb + js / 8) * mmq_block_bytes(DT, 0)
                                         : field<DT>(w, f, r * w.nb + (kquant(DT) ? js / 8 : js));
                cp_async16(buf + mmq_field_at(DT, f) + rho * mmq_stride(DT, f) + 16 * c, src + 16 * c);
            }
        }
        uint8_t *const bxq = buf + mmq_field_at(DT, NF), *const bxd = bxq + NT * MMQ_XQ_STRIDE;
        for (int i = threadIdx.x; i < NT * 20; i += 128) {
            const int tok = i / 20, c = i % 20;
            const int8_t *row = xq + (size_t)tok * xs;
            if (c < 16) cp_async16(bxq + tok * MMQ_XQ_STRIDE + 16 * c, row + 32 * js + 16 * c);
            else cp_async16(bxd + tok * MMQ_XD_STRIDE + 16 * (c - 16), row + k + 8 * js + 16 * (c - 16));
        }
        cp_async_commit();
    };

    /* two buffers: the next stage is on its way while this one is multiplied */
    issue(j0, 0);
    int b = 0;
    for (int64_t js = j0; js < j1; js += 8, b ^= 1) {
        const bool more = js + 8 < j1;
        if (more) issue(js + 8, b ^ 1);
        float d6[4] = {0.0f, 0.0f, 0.0f, 0.0f}; /* Q6_K's d of the lane's rows */
        if (DT == TL_Q6_K)
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const int64_t r = tile0 + rl0 + 8 * i < m ? tile0 + rl0 + 8 * i : m - 1;
                d6[i] = h2f(field<TL_Q6_K>(w, 3, r * w.nb + js / 8));
            }
        if (more) cp_async_wait_but_one();
        else cp_async_wait();
        __syncthreads();
        uint8_t *const buf = sm + (size_t)b * mmq_smem(DT, NT);
        float2 *const sab = (float2 *)(sm + 2 * mmq_smem(DT, NT));
        if (DT == TL_Q4_K || DT == TL_Q5_K) {
            for (int i = threadIdx.x; i < MMQ_ROWS * 8; i += 128)
                sab[i] = mmq_k4_scale(buf + (i / 8) * mmq_stride(DT, 0), i % 8);
            __syncthreads();
        }
        uint8_t *const sxq = buf + mmq_field_at(DT, NF), *const sxd = sxq + NT * MMQ_XQ_STRIDE;
#pragma unroll 2
        for (int u = 0; u < 8; u++) {
            mmq_sub<DT> wt[4];
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const int rho = rl0 + 8 * i;
                const uint8_t *const p[3] = {buf + mmq_field_at(DT, 0) + rho * mmq_stride(DT, 0),
                                             buf + mmq_field_at(DT, NF > 1 ? 1 : 0) + rho * mmq_stride(DT, NF > 1 ? 1 : 0),
                                             buf + mmq_field_at(DT, NF > 2 ? 2 : 0) + rho * mmq_stride(DT, NF > 2 ? 2 : 0)};
                wt[i].load(p, u, t, d6[i], sab + 8 * rho);
            }
#pragma unroll
            for (int tt = 0; tt < TT; tt++) {
                const uint8_t *xb = sxq + (8 * tt + g) * MMQ_XQ_STRIDE + 32 * u;
                const int b0 = *(const int *)(xb + 4 * t), b1 = *(const int *)(xb + 16 + 4 * t);
                /* (dx, s) of this sub-block for the columns of c: tokens 2t and 2t+1 of the tile */
                const float2 d0 = *(const float2 *)(sxd + (8 * tt + 2 * t) * MMQ_XD_STRIDE + 8 * u);
                const float2 d1 = *(const float2 *)(sxd + (8 * tt + 2 * t + 1) * MMQ_XD_STRIDE + 8 * u);
#pragma unroll
                for (int mt = 0; mt < 2; mt++) {
                    const mmq_sub<DT> &p = wt[2 * mt], &q = wt[2 * mt + 1]; /* rows g, g+8 */
                    float *o = acc[mt][tt];
                    if (DT == TL_Q6_K) {
                        int cl[4] = {0, 0, 0, 0}, ch[4] = {0, 0, 0, 0};
                        mma_s8_k16(cl, p.lo, q.lo, b0);
                        mma_s8_k16(ch, p.hi, q.hi, b1);
                        o[0] = fmaf(d0.x, fmaf(p.a, (float)cl[0], p.b * (float)ch[0]), o[0]);
                        o[1] = fmaf(d1.x, fmaf(p.a, (float)cl[1], p.b * (float)ch[1]), o[1]);
                        o[2] = fmaf(d0.x, fmaf(q.a, (float)cl[2], q.b * (float)ch[2]), o[2]);
                        o[3] = fmaf(d1.x, fmaf(q.a, (float)cl[3], q.b * (float)ch[3]), o[3]);
                    } else {
                        int c[4] = {0, 0, 0, 0};
                        mma_s8_k32(c, p.lo, q.lo, p.hi, q.hi, b0, b1);
                        if (mmq_has_b(DT)) {
                            o[0] = fmaf(p.b, d0.y, o[0]), o[1] = fmaf(p.b, d1.y, o[1]);
                            o[2] = fmaf(q.b, d0.y, o[2]), o[3] = fmaf(q.b, d1.y, o[3]);
                        }
                        o[0] = fmaf(p.a * d0.x, (float)c[0], o[0]);
                        o[1] = fmaf(p.a * d1.x, (float)c[1], o[1]);
                        o[2] = fmaf(q.a * d0.x, (float)c[2], o[2]);
                        o[3] = fmaf(q.a * d1.x, (float)c[3], o[3]);
                    }
                }
            }
        }
        __syncthreads(); /* before the stage after next overwrites this buffer */
    }

    /* c's element e: row g + 8 (e / 2) of its m16 tile, token 2t + e % 2 of its n8 tile */
    const bool split = gridDim.y > 1;
    float *out = split ? ws + (size_t)blockIdx.y * n * m : y;
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int tt = 0; tt < TT; tt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int64_t r = tile0 + rl0 + 16 * mt + 8 * (e >> 1);
                const int tok = 8 * tt + 2 * t + (e & 1);
                if (r < m && tok < n) out[(size_t)tok * m + r] = acc[mt][tt][e] + (!split && bias ? bias[r] : 0.0f);
            }
    if (!split) return;
    /* the last split of this row tile to finish adds the partial sums, in split order */
    __shared__ bool last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(&counts[bx], 1u) == gridDim.y - 1;
    __syncthreads();
    if (!last) return;
    __threadfence();
    const int64_t rows_here = m - tile0 < MMQ_ROWS ? m - tile0 : MMQ_ROWS;
    const size_t step = (size_t)n * m;
    for (int64_t e = threadIdx.x; e < rows_here * n; e += blockDim.x) {
        const int64_t r = tile0 + e % rows_here, tok = e / rows_here;
        /* every split's value loaded before any is added (one L2 round trip, not one a split) */
        float v[MMQ_MAX_SPLITS];
#pragma unroll
        for (unsigned sp = 0; sp < MMQ_MAX_SPLITS; sp++) v[sp] = sp < gridDim.y ? __ldcg(ws + sp * step + (size_t)tok * m + r) : 0.0f;
        float sum = v[0];
#pragma unroll
        for (unsigned sp = 1; sp < MMQ_MAX_SPLITS; sp++)
            if (sp < gridDim.y) sum += v[sp];
        y[(size_t)tok * m + r] = sum + (bias ? bias[r] : 0.0f);
    }
    if (threadIdx.x == 0) counts[bx] = 0; /* ready for the next call */
}

/* the most shared memory an instance needs (two stages; past 48 KiB a kernel opts in) */
static_assert(mmq_smem_all(TL_Q8_0, 32) + 16 <= 227 * 1024 && mmq_smem_all(TL_Q5_K, 32) + 16 <= 227 * 1024, "mmq: shared memory");

#endif /* !TL_HIP */

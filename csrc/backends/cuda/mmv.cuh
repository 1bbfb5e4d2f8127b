/* Small batches (2 to 32 tokens) on 8-bit activations through the int8 tensor cores, weights
 * straight from global memory into the fragments (included by cuda.cu after mmq.cuh; CUDA only).
 *
 * mmq.cuh stages 128 rows at a time through shared memory, which pays a latency per stage that
 * a few tokens' arithmetic cannot hide. Here, as in the GEMVs, the weights go from memory to
 * registers: a block takes 16 rows (one m16 tile) and its 8 warps split the row's 256-element
 * steps between them (warp w takes steps w, w + 8, ...), so that a 4,096-row matrix has 2,048
 * warps with all their loads in flight at once; the warps' sums are added in shared memory in
 * warp order (deterministic, no workspace).
 *
 * The same integers as the GEMVs and mmq: a 32-element weight sub-block a·code + b against
 * 8-bit activations (dx, s = dx·Σq): a·dx·Σ code·q + b·s, Σ code·q by mma.sync m16n8k32 for 16
 * rows and 8 tokens at once (Q6_K's 16-element scale groups by m16n8k16). Since an mma sums over
 * its 32 k, the k of a sub-block may be taken in any order that the weights and the activations
 * share: lane t (of the 4 that hold a row's fragment) takes elements 8t..8t+7, as fragment k
 * 4t..4t+3 (a0, a1, b0) and 16+4t..16+4t+3 (a2, a3, b1), so that its weights are one 8-byte
 * load a row (mma's own order would want two 4-byte ones, 16 bytes apart). Fragment layouts:
 * mmq.cuh. Needs k a multiple of 256. */

#if MMQ_MAX_TOKENS
#define MMV_WARPS 8
#define MMV_ROWS 16

__host__ __device__ constexpr bool mmv_dtype(int dt) {
    return dt == TL_Q4_0 || dt == TL_Q8_0 || dt == TL_Q4_K || dt == TL_Q6_K;
}

/* half i of the four words w */
__device__ __forceinline__ float half_of(const uint4 &w, int i) {
    const uint32_t x = i < 2 ? w.x : i < 4 ? w.y : i < 6 ? w.z : w.w;
    return __half2float(__ushort_as_half((unsigned short)(i & 1 ? x >> 16 : x & 0xFFFF)));
}

/* One row's weights of one 256-element step, as lane t needs them: load() issues every load,
 * frag(u) gives sub-block u's fragment words (lo: elements 8t..8t+3, hi: 8t+4..8t+7, signed)
 * and its scale (the K-quants: see mmv_step). */
template <int DT> struct mmv_w;

template <> struct mmv_w<TL_Q4_K> {
    uint2 q[4]; /* qs bytes 32p + 8t.. of pair p: sub-block 2p in the low nibbles, 2p+1 in the high */
    uint4 hdr;  /* d, dmin, the 12 scale bytes */
    __device__ __forceinline__ void load(gw w, int64_t r, int64_t kb, int t) {
        const uint8_t *blk = w.p + (size_t)(r * w.nb + kb) * 144;
        hdr = *(const uint4 *)blk;
#pragma unroll
        for (int p = 0; p < 4; p++) q[p] = *(const uint2 *)(blk + 16 + 32 * p + 8 * t);
    }
    /* sub-block u's codes, its 6-bit scale (a = d·sc) and b = -dmin·min */
    __device__ __forceinline__ void frag(int u, int *lo, int *hi, int *sc, float *b) const {
        const int sh = 4 * (u & 1);
        *lo = (int)((q[u / 2].x >> sh) & 0x0F0F0F0Fu), *hi = (int)((q[u / 2].y >> sh) & 0x0F0F0F0Fu);
        int mn;
        scale_min_words(u, hdr.y, hdr.z, hdr.w, sc, &mn);
        *b = -__half2float(__ushort_as_half((unsigned short)(hdr.x >> 16))) * (float)mn;
    }
    __device__ __forceinline__ float d() const { return __half2float(__ushort_as_half((unsigned short)(hdr.x & 0xFFFF))); }
};

/* Q4_0: lane t's elements 8t..8t+7 are the low (t < 2) or high nibbles of qs bytes 8(t & 1).. */
template <> struct mmv_w<TL_Q4_0> {
    uint2 q[8];
    uint4 d8; /* the 8 blocks' d */
    __device__ __forceinline__ void load(gw w, int64_t r, int64_t kb, int t) {
        const int64_t b0 = r * w.nb + 8 * kb;
#pragma unroll
        for (int u = 0; u < 8; u++) q[u] = *(const uint2 *)(field<TL_Q4_0>(w, 0, b0 + u) + 8 * (t & 1));
        d8 = *(const uint4 *)field<TL_Q4_0>(w, 1, b0);
    }
    __device__ __forceinline__ void frag(int u, int t, int *lo, int *hi, float *a) const {
        const int sh = 4 * (t >> 1);
        *lo = (int)__vsub4((q[u].x >> sh) & 0x0F0F0F0Fu, 0x08080808u);
        *hi = (int)__vsub4((q[u].y >> sh) & 0x0F0F0F0Fu, 0x08080808u);
        *a = half_of(d8, u);
    }
};

template <> struct mmv_w<TL_Q8_0> {
    uint2 q[8];
    uint4 d8;
    __device__ __forceinline__ void load(gw w, int64_t r, int64_t kb, int t) {
        const int64_t b0 = r * w.nb + 8 * kb;
#pragma unroll
        for (int u = 0; u < 8; u++) q[u] = *(const uint2 *)(field<TL_Q8_0>(w, 0, b0 + u) + 8 * t);
        d8 = *(const uint4 *)field<TL_Q8_0>(w, 1, b0);
    }
    __device__ __forceinline__ void frag(int u, int, int *lo, int *hi, float *a) const {
        *lo = (int)q[u].x, *hi = (int)q[u].y;
        *a = half_of(d8, u);
    }
};

/* Q6_K in mma's own order (lane t: elements 4t..4t+3 of each 16-element scale group, m16n8k16):
 * sub-block u = 4h + v, group f (0, 1) of it: ql bytes 64h + 32(v & 1) + 16f + 4t.. (high nibbles
 * for v >= 2), qh bytes 32h + 16f + 4t.. bits 2v, 2v+1, scale sc[8h + 2v + f] (mmq.cuh) */
template <> struct mmv_w<TL_Q6_K> {
    uint32_t ql[8], qh[4];
    uint4 sc;
    float d;
    __device__ __forceinline__ void load(gw w, int64_t r, int64_t kb, int t) {
        const int64_t b = r * w.nb + kb;
        const uint8_t *pl = field<TL_Q6_K>(w, 0, b), *ph = field<TL_Q6_K>(w, 1, b);
#pragma unroll
        for (int i = 0; i < 8; i++) ql[i] = *(const uint32_t *)(pl + 64 * (i / 4) + 32 * ((i / 2) & 1) + 16 * (i & 1) + 4 * t);
#pragma unroll
        for (int i = 0; i < 4; i++) qh[i] = *(const uint32_t *)(ph + 32 * (i / 2) + 16 * (i & 1) + 4 * t);
        sc = *(const uint4 *)field<TL_Q6_K>(w, 2, b);
        d = h2f(field<TL_Q6_K>(w, 3, b));
    }
    /* group f of sub-block u: its codes - 32 and its scale (a = d·sc) */
    __device__ __forceinline__ int code(int u, int f, int *scale) const {
        const int h = u / 4, v = u & 3;
        const uint32_t l = ql[4 * h + 2 * (v & 1) + f] >> (v >= 2 ? 4 : 0);
        const uint32_t c = (l & 0x0F0F0F0Fu) | ((qh[2 * h + f] >> (2 * v)) & 0x03030303u) << 4;
        const int i = 8 * h + 2 * v + f; /* scale byte i */
        const uint32_t sw = i < 4 ? sc.x : i < 8 ? sc.y : i < 12 ? sc.z : sc.w;
        *scale = (int)(int8_t)(sw >> (8 * (i & 3)));
        return (int)__vsub4(c, 0x20202020u);
    }
};

/* acc (rows g, g+8 x tokens 2t, 2t+1 of an n8 tile) += one step of the rows wa, wb against the
 * tile's tokens: xg the row of token g (the B fragment), x0, x1 those of tokens 2t, 2t+1 (their
 * (dx, s) pairs, 8 bytes per 32 elements after the k codes).
 * The K-quants' sub-block scales are small integers under one d a block, and their activations
 * one dx a block: Σ_u a_u·dx·c_u = d·dx·Σ_u sc_u·c_u, the inner sum exact in int32 (at most
 * 8 · 63 · 32·15·128 for Q4_K, 16 · 128 · 16·32·128 for Q6_K), so that a mma's four sums cost an
 * integer multiply-add each, and the conversion to float and the scaling come once a block. */
template <int DT>
__device__ __forceinline__ void mmv_step(const mmv_w<DT> &wa, const mmv_w<DT> &wb, const int8_t *xg, const int8_t *x0,
                                         const int8_t *x1, int64_t k, int64_t kb, int t, float acc[4]) {
    if constexpr (DT == TL_Q6_K || DT == TL_Q4_K) {
        int is[4] = {0, 0, 0, 0};
        if constexpr (DT == TL_Q6_K) {
#pragma unroll
            for (int u = 0; u < 8; u++)
#pragma unroll
                for (int f = 0; f < 2; f++) {
                    int sa, sb;
                    const int ca = wa.code(u, f, &sa), cb = wb.code(u, f, &sb);
                    int c[4] = {0, 0, 0, 0};
                    mma_s8_k16(c, ca, cb, *(const int *)(xg + 256 * kb + 32 * u + 16 * f + 4 * t));
                    is[0] += sa * c[0], is[1] += sa * c[1], is[2] += sb * c[2], is[3] += sb * c[3];
                }
        } else {
#pragma unroll
            for (int u = 0; u < 8; u++) {
                const int64_t j = 8 * kb + u; /* the sub-block in the row */
                int la, ha, lb, hb, sa, sb;
                float ba, bb;
                wa.frag(u, &la, &ha, &sa, &ba);
                wb.frag(u, &lb, &hb, &sb, &bb);
                const uint2 xb = *(const uint2 *)(xg + 32 * j + 8 * t);
                int c[4] = {0, 0, 0, 0};
                mma_s8_k32(c, la, lb, ha, hb, (int)xb.x, (int)xb.y);
                is[0] += sa * c[0], is[1] += sa * c[1], is[2] += sb * c[2], is[3] += sb * c[3];
                /* b·s, s = dx·Σq of the token's sub-block */
                const float s0 = *(const float *)(x0 + k + 8 * j + 4), s1 = *(const float *)(x1 + k + 8 * j + 4);
                acc[0] = fmaf(ba, s0, acc[0]);
                acc[1] = fmaf(ba, s1, acc[1]);
                acc[2] = fmaf(bb, s0, acc[2]);
                acc[3] = fmaf(bb, s1, acc[3]);
            }
        }
        const float dx0 = *(const float *)(x0 + k + 64 * kb), dx1 = *(const float *)(x1 + k + 64 * kb);
        float da, db;
        if constexpr (DT == TL_Q6_K) da = wa.d, db = wb.d;
        else da = wa.d(), db = wb.d();
        acc[0] = fmaf(da * dx0, (float)is[0], acc[0]);
        acc[1] = fmaf(da * dx1, (float)is[1], acc[1]);
        acc[2] = fmaf(db * dx0, (float)is[2], acc[2]);
        acc[3] = fmaf(db * dx1, (float)is[3], acc[3]);
    } else {
#pragma unroll
        for (int u = 0; u < 8; u++) {
            const int64_t j = 8 * kb + u; /* the sub-block in the row */
            int la, ha, lb, hb;
            float aa, ab;
            wa.frag(u, t, &la, &ha, &aa);
            wb.frag(u, t, &lb, &hb, &ab);
            const uint2 xb = *(const uint2 *)(xg + 32 * j + 8 * t);
            int c[4] = {0, 0, 0, 0};
            mma_s8_k32(c, la, lb, ha, hb, (int)xb.x, (int)xb.y);
            const float d0 = *(const float *)(x0 + k + 8 * j), d1 = *(const float *)(x1 + k + 8 * j);
            acc[0] = fmaf(aa * d0, (float)c[0], acc[0]);
            acc[1] = fmaf(aa * d1, (float)c[1], acc[1]);
            acc[2] = fmaf(ab * d0, (float)c[2], acc[2]);
            acc[3] = fmaf(ab * d1, (float)c[3], acc[3]);
        }
    }
}

/* y_i = x W_i^T (+ bias_i) for the n <= NT tokens of xq (rows xs bytes apart; rows up to NT are
 * read, those past n unused), up to 3 matrices of one dtype and width (mats: tile_end counts
 * tiles of MMV_ROWS rows; ws unused) */
template <int DT, int NT>
__global__ void __launch_bounds__(32 * MMV_WARPS, 2) mmv_kernel(mmq_mats mats, const int8_t *__restrict__ xq, size_t xs,
                                                              int64_t k, int n) {
    constexpr int TT = NT / 8;
    __shared__ float red[MMV_WARPS - 1][TT * 4][32];
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3, warp = threadIdx.x >> 5;
    const unsigned bx = blockIdx.x;
    const int mi = bx < mats.tile_end[0] ? 0 : bx < mats.tile_end[1] ? 1 : 2;
    const gw w = mi == 0 ? mats.w[0] : mi == 1 ? mats.w[1] : mats.w[2];
    float *const y = mi == 0 ? mats.y[0] : mi == 1 ? mats.y[1] : mats.y[2];
    const float *const bias = mi == 0 ? mats.bias[0] : mi == 1 ? mats.bias[1] : mats.bias[2];
    const unsigned first = mi == 0 ? 0 : mi == 1 ? mats.tile_end[0] : mats.tile_end[1];
    const int64_t m = w.m, r0 = (int64_t)(bx - first) * MMV_ROWS;
    const int64_t ra = r0 + g < m ? r0 + g : m - 1, rb = r0 + g + 8 < m ? r0 + g + 8 : m - 1;
    grid_wait();
    float acc[TT][4];
#pragma unroll
    for (int tt = 0; tt < TT; tt++)
#pragma unroll
        for (int e = 0; e < 4; e++) acc[tt][e] = 0.0f;
    for (int64_t kb = warp; kb < k / 256; kb += MMV_WARPS) {
        mmv_w<DT> wa, wb;
        wa.load(w, ra, kb, t);
        wb.load(w, rb, kb, t);
#pragma unroll
        for (int tt = 0; tt < TT; tt++) {
            const int8_t *xt = xq + (size_t)(8 * tt) * xs;
            mmv_step<DT>(wa, wb, xt + (size_t)g * xs, xt + (size_t)(2 * t) * xs, xt + (size_t)(2 * t + 1) * xs, k, kb, t,
                         acc[tt]);
        }
    }
    if (warp > 0)
#pragma unroll
        for (int tt = 0; tt < TT; tt++)
#pragma unroll
            for (int e = 0; e < 4; e++) red[warp - 1][4 * tt + e][lane] = acc[tt][e];
    __syncthreads();
    if (warp > 0) return;
#pragma unroll
    for (int tt = 0; tt < TT; tt++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            float v = acc[tt][e];
            for (int i = 0; i < MMV_WARPS - 1; i++) v += red[i][4 * tt + e][lane];
            const int64_t r = r0 + g + (e >= 2 ? 8 : 0);
            const int tok = 8 * tt + 2 * t + (e & 1);
            if (r < m && tok < n) y[(size_t)tok * m + r] = v + (bias ? bias[r] : 0.0f);
        }
}

/* TORCHLESS_GPU_MMV=0: mmq for every batch (to compare) */
static bool mmv_enabled(void) {
    const char *e = getenv("TORCHLESS_GPU_MMV");
    return !(e && strcmp(e, "0") == 0);
}

template <int DT, bool OK> struct mmv_for {
    static bool run(gpu_stream *, const tl_tensor *const *, int, int64_t, float *const *, const float *const *) { return false; }
};
template <int DT> struct mmv_for<DT, true> {
    /* false: not taken (the caller goes on to mmq) */
    static bool run(gpu_stream *s, const tl_tensor *const *w, int count, int64_t n, float *const *y,
                    const float *const *bias) {
        if (!mmv_enabled()) return false;
        mmq_mats mats;
        memset(&mats, 0, sizeof mats);
        unsigned tiles = 0;
        for (int i = 0; i < MMQ_MATS; i++) {
            if (i < count) {
                mats.w[i] = view(w[i]), mats.y[i] = y[i], mats.bias[i] = bias ? bias[i] : NULL;
                tiles += (unsigned)((w[i]->ne[1] + MMV_ROWS - 1) / MMV_ROWS);
            }
            mats.tile_end[i] = tiles;
        }
        const int64_t k = w[0]->ne[0];
        const size_t xs = q8_stride(k);
#define MMV(NT) launch(s->stream, mmv_kernel<DT, NT>, dim3(tiles), dim3(32 * MMV_WARPS), 0, mats, s->xq[kquant(DT)], xs, k, (int)n)
        if (n <= 8) MMV(8);
        else if (n <= 16) MMV(16);
        else MMV(32);
#undef MMV
        return true;
    }
};
template <int DT> struct mmv_launch : mmv_for<DT, mmv_dtype(DT)> {};
#endif

/* Decode GEMVs on 8-bit activations (included by cuda.cu inside its namespace).
 *
 * As on the CPU (core/dot_q8.h), a matmul against quantized weights first quantizes its input
 * rows to int8: Q8_0-style (blocks of 32, scale amax/127 rounded to fp16, round half away) for
 * Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 weights, Q8_K-style (blocks of 256, scale max/-127, round to even)
 * for the K-quants, exactly as the CPU quantizes them, so that both backends multiply the same
 * integers. A weight sub-block is a·code + b (dot_q8.h); its contribution to an output is
 *     a·dx·Σ code·q + b·s,   s = dx·Σq,
 * the first sum exact in int32 through dp4a (four byte products a cycle), where the float GEMVs
 * spent an int-to-float conversion and a multiply-add on every weight. Codes are at most 7 bits,
 * so signed byte products serve for every format (Q8_0's signed codes are used as they are, b = 0;
 * Q6_K's codes are shifted to code - 32, so that its 16-element scale groups need no sums of q).
 *
 * The quantized rows, per token, xs bytes apart: int8 q[k], then float (dx, s) per 32 elements
 * (for the Q8_K style dx repeats over the 8 sub-blocks of a 256-block).
 *
 * A lane takes one unit of a row at a time (32 elements of the 32-block formats, 64 of the
 * K-quants: a pair of Q4_K/Q5_K sub-blocks, or four 16-element runs of Q6_K), a warp 32
 * consecutive units, so a warp's weight loads are contiguous; U units a lane are loaded before
 * any is used, to keep loads in flight. */

#define Q8_STYLE_0 0 /* blocks of 32 */
#define Q8_STYLE_K 1 /* blocks of 256 */

__host__ __device__ constexpr bool kquant(int dt) { return dt == TL_Q4_K || dt == TL_Q5_K || dt == TL_Q6_K; }
__host__ __device__ constexpr int q8_unit(int dt) { return kquant(dt) ? 64 : 32; }
/* the dtypes with 8-bit GEMVs */
__host__ __device__ constexpr bool q8_dtype(int dt) {
    return dt == TL_Q4_0 || dt == TL_Q4_1 || dt == TL_Q5_0 || dt == TL_Q5_1 || dt == TL_Q8_0 || kquant(dt);
}

/* bytes per token of the quantized rows */
static size_t q8_stride(int64_t k) { return ((size_t)k + 8 * (size_t)(k / 32) + 15) & ~(size_t)15; }

__device__ __forceinline__ int dot4(int a, int b, int c) {
#ifdef TL_HIP
    /* portable: no AMD card reachable to test the vendor's builtin on */
    for (int i = 0; i < 4; i++) c += (int)(int8_t)(a >> (8 * i)) * (int)(int8_t)(b >> (8 * i));
    return c;
#else
    return __dp4a(a, b, c);
#endif
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, SHFL_XOR(v, o));
    return v;
}

__device__ __forceinline__ int warp_sum_int(int v) {
    for (int o = 16; o > 0; o >>= 1) v += SHFL_XOR(v, o);
    return v;
}

/* Q8_0 style, a warp's 32 values v (one a lane) into q[32] and ds = (dx, s) (quants.c's
 * tl_quantize_row_q8_0: d = amax/127 rounded to fp16, q = x/d rounded half away from zero) */
__device__ __forceinline__ void q8_0_block(float v, int lane, int8_t *q, float *ds) {
    const float d = warp_max(fabsf(v)) / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const float z = v * id;
    const int c = !(z == z) ? 0 : z <= -127.0f ? -127 : z >= 127.0f ? 127 : (int)roundf(z);
    const float dx = __half2float(__float2half_rn(d));
    const int sum = warp_sum_int(c);
    q[lane] = (int8_t)c;
    if (lane == 0) ds[0] = dx, ds[1] = dx * (float)sum;
}

/* Q8_K style, a warp's 256 values (8 consecutive a lane) into q[256] and the 8 pairs ds[16]
 * (tl_quantize_row_q8_K: the element of largest magnitude with its sign, the first on ties,
 * q = x·(-127/max) rounded to even; all zeros when that scale overflows) */
__device__ __forceinline__ void q8_K_block(const float v[8], int lane, int8_t *q, float *ds) {
    float amax = fabsf(v[0]), max = v[0];
    int at = 8 * lane;
#pragma unroll
    for (int i = 1; i < 8; i++)
        if (fabsf(v[i]) > amax) amax = fabsf(v[i]), max = v[i], at = 8 * lane + i;
    for (int o = 16; o > 0; o >>= 1) {
        const float a2 = SHFL_XOR(amax, o), m2 = SHFL_XOR(max, o);
        const int at2 = SHFL_XOR(at, o);
        if (a2 > amax || (a2 == amax && at2 < at)) amax = a2, max = m2, at = at2;
    }
    const float iscale = max != 0.0f ? -127.0f / max : 0.0f;
    const bool zero = !isfinite(iscale) || iscale == 0.0f;
    int c[8], sum = 0;
#pragma unroll
    for (int i = 0; i < 8; i++) {
        const float z = iscale * v[i];
        const int r = !(z == z) || zero ? 0 : __float2int_rn(fminf(fmaxf(z, -4194303.0f), 4194303.0f));
        c[i] = r < -128 ? -128 : r > 127 ? 127 : r;
        sum += c[i];
    }
    uint2 packed;
    packed.x = (uint32_t)(c[0] & 255) | (uint32_t)(c[1] & 255) << 8 | (uint32_t)(c[2] & 255) << 16 | (uint32_t)(c[3] & 255) << 24;
    packed.y = (uint32_t)(c[4] & 255) | (uint32_t)(c[5] & 255) << 8 | (uint32_t)(c[6] & 255) << 16 | (uint32_t)(c[7] & 255) << 24;
    *(uint2 *)(q + 8 * lane) = packed;
    /* sub-block j of 32 is lanes 4j..4j+3 */
    sum += SHFL_XOR(sum, 1);
    sum += SHFL_XOR(sum, 2);
    if ((lane & 3) == 0) {
        const float d = zero ? 0.0f : 1.0f / iscale;
        ds[2 * (lane / 4)] = d;
        ds[2 * (lane / 4) + 1] = d * (float)sum;
    }
}

/* Rows of k (t = row) quantized a warp per block, `blocks` in all */
__global__ void quantize_q8_0_kernel(const float *__restrict__ x, int64_t k, int64_t blocks, int8_t *__restrict__ xq,
                                     size_t xs) {
    grid_wait();
    const int64_t gb = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (gb >= blocks) return;
    const int64_t t = gb / (k / 32), b = gb % (k / 32);
    int8_t *row = xq + (size_t)t * xs;
    q8_0_block(x[(size_t)t * k + 32 * b + (threadIdx.x & 31)], threadIdx.x & 31, row + 32 * b, (float *)(row + k) + 2 * b);
}

__global__ void quantize_q8_K_kernel(const float *__restrict__ x, int64_t k, int64_t blocks, int8_t *__restrict__ xq,
                                     size_t xs) {
    grid_wait();
    const int lane = threadIdx.x & 31;
    const int64_t gb = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (gb >= blocks) return;
    const int64_t t = gb / (k / 256), b = gb % (k / 256);
    const float *src = x + (size_t)t * k + 256 * b + 8 * lane;
    const float4 f0 = *(const float4 *)src, f1 = *(const float4 *)(src + 4);
    const float v[8] = {f0.x, f0.y, f0.z, f0.w, f1.x, f1.y, f1.z, f1.w};
    int8_t *row = xq + (size_t)t * xs;
    q8_K_block(v, lane, row + 256 * b, (float *)(row + k) + 16 * b);
}

/* One row of dim floats just written by this block (o), quantized in both styles into q0 and
 * qk (either NULL: not wanted): for the norms that feed the matmuls, which then need no
 * quantizing launch of their own. Every thread of the block calls it. */
__device__ __forceinline__ void q8_row_both(const float *o, int64_t dim, int8_t *q0, int8_t *qk) {
    __syncthreads(); /* the block's writes of o, visible to the whole block */
    const int lane = threadIdx.x & 31, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    if (q0)
        for (int64_t b = warp; b < dim / 32; b += warps) q8_0_block(o[32 * b + lane], lane, q0 + 32 * b, (float *)(q0 + dim) + 2 * b);
    if (qk)
        for (int64_t b = warp; b < dim / 256; b += warps) {
            const float *src = o + 256 * b + 8 * lane;
            const float4 f0 = *(const float4 *)src, f1 = *(const float4 *)(src + 4);
            const float v[8] = {f0.x, f0.y, f0.z, f0.w, f1.x, f1.y, f1.z, f1.w};
            q8_K_block(v, lane, qk + 256 * b, (float *)(qk + dim) + 16 * b);
        }
}

/* The weights of unit u of row r, loaded (load) and then dotted with NT tokens' quantized
 * rows (dot), so that a lane's loads for several units can be issued before the first use. */
template <int DT> struct q8_unit_w;

/* the four words of a 16-byte load */
#define WORDS(v) {(int)(v).x, (int)(v).y, (int)(v).z, (int)(v).w}

template <int DT> struct q8_legacy {
    uint4 q;
    uint32_t h; /* Q5_x: the fifth bits */
    float d, m; /* a = d, b = m (or -8d, -16d) */
    __device__ __forceinline__ void load(gw w, int64_t r, int64_t u) {
        const int64_t b = r * w.nb + u;
        q = *(const uint4 *)field<DT>(w, 0, b);
        legacy_dm<DT>(w, b, &d, &m);
        h = DT == TL_Q5_0 || DT == TL_Q5_1 ? *(const uint32_t *)field<DT>(w, 1, b) : 0;
    }
    /* acc += this unit against the quantized row xr (u its unit, k its length) */
    __device__ __forceinline__ float dot(const int8_t *xr, int64_t k, int64_t u, float acc) const {
        const int4 x0 = *(const int4 *)(xr + 32 * u), x1 = *(const int4 *)(xr + 32 * u + 16);
        const float2 ds = *(const float2 *)(xr + k + 8 * u);
        const int qw[4] = WORDS(q), xl[4] = WORDS(x0), xh[4] = WORDS(x1);
        int sum = 0;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            int lo = qw[i] & 0x0F0F0F0F, hi = (qw[i] >> 4) & 0x0F0F0F0F;
            if (DT == TL_Q5_0 || DT == TL_Q5_1) {
                lo |= (int)spread4_bit4(h, 4 * i);
                hi |= (int)spread4_bit4(h, 16 + 4 * i);
            }
            sum = dot4(lo, xl[i], sum);
            sum = dot4(hi, xh[i], sum);
        }
        acc = fmaf(d * ds.x, (float)sum, acc);
        return fmaf(m, ds.y, acc);
    }
};
template <> struct q8_unit_w<TL_Q4_0> : q8_legacy<TL_Q4_0> {};
template <> struct q8_unit_w<TL_Q4_1> : q8_legacy<TL_Q4_1> {};
template <> struct q8_unit_w<TL_Q5_0> : q8_legacy<TL_Q5_0> {};
template <> struct q8_unit_w<TL_Q5_1> : q8_legacy<TL_Q5_1> {};

template <> struct q8_unit_w<TL_Q8_0> {
    uint4 q0, q1;
    float d;
    __device__ __forceinline__ void load(gw w, int64_t r, int64_t u) {
        const int64_t b = r * w.nb + u;
        const uint4 *p = (const uint4 *)field<TL_Q8_0>(w, 0, b);
        q0 = p[0], q1 = p[1];
        d = h2f(field<TL_Q8_0>(w, 1, b));
    }
    __device__ __forceinline__ float dot(const int8_t *xr, int64_t k, int64_t u, float acc) const {
        const int4 x0 = *(const int4 *)(xr + 32 * u), x1 = *(const int4 *)(xr + 32 * u + 16);
        const float dx = *(const float *)(xr + k + 8 * u);
        const int a[4] = WORDS(q0), b[4] = WORDS(q1), xl[4] = WORDS(x0), xh[4] = WORDS(x1);
        int sum = 0;
#pragma unroll
        for (int i = 0; i < 4; i++) sum = dot4(b[i], xh[i], dot4(a[i], xl[i], sum));
        return fmaf(d * dx, (float)sum, acc);
    }
};

/* Q4_K/Q5_K: unit u = sub-blocks 2p and 2p+1 (p = u % 4) of block u / 4, their 32 qs bytes
 * (2p in the low nibbles, 2p+1 in the high ones) */
template <int DT> struct q8_k4 {
    uint4 q0, q1, h0, h1;
    float a0, b0, a1, b1;
    int p;
    __device__ __forceinline__ void load(gw w, int64_t r, int64_t u) {
        p = (int)(u & 3);
        const uint8_t *blk = w.p + (size_t)(r * w.nb + u / 4) * (DT == TL_Q4_K ? 144 : 176);
        const uint4 *qs = (const uint4 *)(blk + (DT == TL_Q4_K ? 16 : 48) + 32 * p);
        q0 = qs[0], q1 = qs[1];
        if (DT == TL_Q5_K) {
            h0 = ((const uint4 *)(blk + 16))[0];
            h1 = ((const uint4 *)(blk + 16))[1];
        }
        const float4 ab = k4_pair_scales(blk, p);
        a0 = ab.x, b0 = -ab.y, a1 = ab.z, b1 = -ab.w;
    }
    __device__ __forceinline__ float dot(const int8_t *xr, int64_t k, int64_t u, float acc) const {
        const int4 *xv = (const int4 *)(xr + 64 * u);
        const int4 x0 = xv[0], x1 = xv[1], x2 = xv[2], x3 = xv[3];
        const float4 ds = *(const float4 *)(xr + k + 16 * u); /* (dx, s) of sub-blocks 2p, 2p+1 */
        const int qw[8] = {(int)q0.x, (int)q0.y, (int)q0.z, (int)q0.w, (int)q1.x, (int)q1.y, (int)q1.z, (int)q1.w};
        const int hw[8] = {(int)h0.x, (int)h0.y, (int)h0.z, (int)h0.w, (int)h1.x, (int)h1.y, (int)h1.z, (int)h1.w};
        const int xl[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
        const int xh[8] = {x2.x, x2.y, x2.z, x2.w, x3.x, x3.y, x3.z, x3.w};
        int s0 = 0, s1 = 0;
#pragma unroll
        for (int i = 0; i < 8; i++) {
            int lo = qw[i] & 0x0F0F0F0F, hi = (qw[i] >> 4) & 0x0F0F0F0F;
            if (DT == TL_Q5_K) {
                lo |= ((hw[i] >> (2 * p)) & 0x01010101) << 4;
                hi |= ((hw[i] >> (2 * p + 1)) & 0x01010101) << 4;
            }
            s0 = dot4(lo, xl[i], s0);
            s1 = dot4(hi, xh[i], s1);
        }
        acc = fmaf(a0 * ds.x, (float)s0, acc);
        acc = fmaf(b0, ds.y, acc);
        acc = fmaf(a1 * ds.z, (float)s1, acc);
        return fmaf(b1, ds.w, acc);
    }
};
template <> struct q8_unit_w<TL_Q4_K> : q8_k4<TL_Q4_K> {};
template <> struct q8_unit_w<TL_Q5_K> : q8_k4<TL_Q5_K> {};

/* Q6_K: unit u = quarter j = u % 4 of block u / 4: half h = j / 2, bytes i0 = 16 (j % 2) on of
 * each 32: four runs of 16 elements 128h + 32a + i0 (a = 0..3), each in one scale group */
template <> struct q8_unit_w<TL_Q6_K> {
    uint4 l0, l1, hb;
    float a[4];
    int j;
    __device__ __forceinline__ void load(gw w, int64_t r, int64_t u) {
        j = (int)(u & 3);
        const int h = j / 2, i0 = (j & 1) * 16;
        const int64_t b = r * w.nb + u / 4;
        l0 = *(const uint4 *)(field<TL_Q6_K>(w, 0, b) + 64 * h + i0);
        l1 = *(const uint4 *)(field<TL_Q6_K>(w, 0, b) + 64 * h + 32 + i0);
        hb = *(const uint4 *)(field<TL_Q6_K>(w, 1, b) + 32 * h + i0);
        /* scales 8h + (j & 1) + 2i: bytes (j & 1) and (j & 1) + 2 of two words, in one 8-byte load */
        const uint2 sc = *(const uint2 *)(field<TL_Q6_K>(w, 2, b) + 8 * h);
        const int at = 8 * (j & 1);
        const float d = h2f(field<TL_Q6_K>(w, 3, b));
        a[0] = d * (float)(int8_t)(sc.x >> at);
        a[1] = d * (float)(int8_t)(sc.x >> (at + 16));
        a[2] = d * (float)(int8_t)(sc.y >> at);
        a[3] = d * (float)(int8_t)(sc.y >> (at + 16));
    }
    __device__ __forceinline__ float dot(const int8_t *xr, int64_t k, int64_t u, float acc) const {
        const int h = j / 2, i0 = (j & 1) * 16;
        const int8_t *xb = xr + 256 * (u / 4) + 128 * h + i0;
        const float dx = *(const float *)(xr + k + 64 * (u / 4)); /* the 256-block's scale: 8 (dx, s) pairs a block */
        const int lw0[4] = WORDS(l0), lw1[4] = WORDS(l1), hw[4] = WORDS(hb);
#pragma unroll
        for (int run = 0; run < 4; run++) {
            const int4 xv = *(const int4 *)(xb + 32 * run);
            const int xw[4] = {xv.x, xv.y, xv.z, xv.w};
            int sum = 0;
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const int lw = run & 1 ? lw1[i] : lw0[i];
                const int code = ((run < 2 ? lw : lw >> 4) & 0x0F0F0F0F) | ((hw[i] >> (2 * run)) & 0x03030303) << 4;
                /* code - 32 in each byte: flip bit 5; where it is now set (code < 32), set 6 and 7 */
                const int t = code ^ 0x20202020, m = t & 0x20202020;
                sum = dot4(t | m << 1 | m << 2, xw[i], sum);
            }
            acc = fmaf(a[run] * dx, (float)sum, acc);
        }
        return acc;
    }
};
#undef WORDS

/* acc[t] += the U units u0, u0 + 32, ... of wt (those before units) against token t's row */
template <int DT, int NT, int U>
__device__ __forceinline__ void q8_dots(const q8_unit_w<DT> wt[U], int64_t u0, int64_t units,
                                        const int8_t *__restrict__ xq, size_t xs, int64_t k, int n, float acc[NT]) {
#pragma unroll
    for (int i = 0; i < U; i++)
        if (u0 + 32 * i < units)
#pragma unroll
            for (int t = 0; t < NT; t++)
                if (t < n) acc[t] = wt[i].dot(xq + (size_t)t * xs, k, u0 + 32 * i, acc[t]);
}

/* A lane's first U units of row r (clamped into the matrix: slots past the row's end load its
 * last unit, unused), loaded before grid_wait(), since no kernel writes weights: they are on
 * their way while the kernel before finishes. */
template <int DT, int U> struct q8_first {
    q8_unit_w<DT> wt[U];
    __device__ __forceinline__ void load(gw w, int64_t r, int64_t k, int lane) {
        const int64_t units = k / q8_unit(DT);
        r = r < w.m ? r : w.m - 1;
#pragma unroll
        for (int i = 0; i < U; i++) wt[i].load(w, r, lane + 32 * i < units ? lane + 32 * i : units - 1);
    }
};

/* Partial sums for NT tokens (n of them real) over the units of row r that lane `lane` takes,
 * the first U of them in `first` */
template <int DT, int NT, int U>
__device__ __forceinline__ void q8_row(gw w, int64_t r, const q8_first<DT, U> &first, const int8_t *__restrict__ xq,
                                       size_t xs, int64_t k, int n, int lane, float acc[NT]) {
    const int64_t units = k / q8_unit(DT);
    q8_dots<DT, NT, U>(first.wt, lane, units, xq, xs, k, n, acc);
    for (int64_t u0 = lane + 32 * U; u0 < units; u0 += 32 * U) {
        /* every load issued first: slots past the row's end load unit u0 again (unused), so that
         * no load waits behind a branch */
        q8_unit_w<DT> wt[U];
#pragma unroll
        for (int i = 0; i < U; i++) wt[i].load(w, r, u0 + 32 * i < units ? u0 + 32 * i : u0);
        q8_dots<DT, NT, U>(wt, u0, units, xq, xs, k, n, acc);
    }
}

/* y[t][r] = the warp's sum of acc[t] (+ bias[r]) for the n real tokens, rows m apart */
template <int NT>
__device__ __forceinline__ void q8_store(const float acc[NT], int n, int lane, float *y, int64_t m, int64_t r,
                                         const float *bias) {
#pragma unroll
    for (int t = 0; t < NT; t++) {
        if (t >= n) continue; /* (not break: hipcc's clang then declines to unroll) */
        float a = acc[t];
        for (int o = 16; o > 0; o >>= 1) a += SHFL_XOR(a, o);
        if (lane == 0) y[(size_t)t * m + r] = a + (bias ? bias[r] : 0.0f);
    }
}

/* y[t][r] = W[r] . x[t] (+ bias[r]) for n <= NT tokens: a warp per row, 4 to a block.
 * GLU: a second matrix (u) and y[t][r] = act(W[r] . x[t]) * (U[r] . x[t]). */
template <int DT, int NT, bool GLU>
__global__ void __launch_bounds__(128) gemv_q8_kernel(gw w, gw w2, const int8_t *__restrict__ xq, size_t xs, int64_t k,
                                                      int n, float *__restrict__ y, const float *__restrict__ bias,
                                                      int gelu) {
    const int lane = threadIdx.x & 31;
    const int64_t r = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    /* 64 bytes of weights a lane in flight: 4 units of the 32-block formats (2 of Q8_0's, whose
     * units are twice as large, would do too, but 4 measured no slower), 2 of the K-quants'
     * (more held the K-quants' registers over 90, 5 blocks an SM: two waves for 4096 rows; and
     * Q4_K units of 16-byte chunks, 8 lanes a block, so that each load of a warp is whole
     * blocks, took 87 registers at 4 a lane and made decode 9% slower on the H200) */
    constexpr int U = kquant(DT) ? 2 : 4;
    q8_first<DT, U> first, first2;
    first.load(w, r, k, lane);
    grid_wait();
    if (r >= w.m) return;
    float acc[NT], acc2[NT];
#pragma unroll
    for (int t = 0; t < NT; t++) acc[t] = acc2[t] = 0.0f;
    q8_row<DT, NT, U>(w, r, first, xq, xs, k, n, lane, acc);
    if (GLU) {
        first2.load(w2, r, k, lane); /* (not before the wait: its registers would be held through the first row) */
        q8_row<DT, NT, U>(w2, r, first2, xq, xs, k, n, lane, acc2);
    }
    if (GLU) {
#pragma unroll
        for (int t = 0; t < NT; t++) {
            if (t >= n) continue; /* (not break: hipcc's clang then declines to unroll) */
            float a = acc[t], b = acc2[t];
            for (int o = 16; o > 0; o >>= 1) a += SHFL_XOR(a, o), b += SHFL_XOR(b, o);
            if (lane == 0) y[(size_t)t * w.m + r] = act_of(gelu, a) * b;
        }
    } else {
        q8_store<NT>(acc, n, lane, y, w.m, r, bias);
    }
}

/* Three matrices of one dtype and width against the same rows (q, k and v) in one launch: the
 * warps take the rows of all three in turn. */
typedef struct q8_three {
    gw w[3];
    float *y[3];
    const float *bias[3];
} q8_three;

template <int DT, int NT>
__global__ void __launch_bounds__(128) gemv_q8_three_kernel(q8_three m, const int8_t *__restrict__ xq, size_t xs,
                                                            int64_t k, int n) {
    const int lane = threadIdx.x & 31;
    int64_t r = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    /* which matrix (selects, not an index into the parameters: that could copy them to local memory) */
    const int i = r < m.w[0].m ? 0 : r < m.w[0].m + m.w[1].m ? 1 : 2;
    r -= i == 0 ? 0 : i == 1 ? m.w[0].m : m.w[0].m + m.w[1].m;
    const gw w = i == 0 ? m.w[0] : i == 1 ? m.w[1] : m.w[2];
    float *y = i == 0 ? m.y[0] : i == 1 ? m.y[1] : m.y[2];
    const float *bias = i == 0 ? m.bias[0] : i == 1 ? m.bias[1] : m.bias[2];
    constexpr int U = kquant(DT) ? 2 : 4;
    q8_first<DT, U> first;
    first.load(w, r, k, lane);
    grid_wait();
    if (r >= w.m) return;
    float acc[NT];
#pragma unroll
    for (int t = 0; t < NT; t++) acc[t] = 0.0f;
    q8_row<DT, NT, U>(w, r, first, xq, xs, k, n, lane, acc);
    q8_store<NT>(acc, n, lane, y, w.m, r, bias);
}

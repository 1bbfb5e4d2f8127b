/* The CUDA backend (and, compiled by hipcc with TL_HIP, the HIP backend): weights, activations
 * and KV caches in device memory; decode through fused dequantize-GEMV kernels that read each
 * weight once for every token of the batch; prefill through cuBLAS on F16 tiles dequantized on
 * the device; flash-decoding attention over the F16/F32 cache. Ops queue work on the
 * context's stream; the first failure is kept and reported by the next download or sync. */
#include "gpu.h"

extern "C" {
#include "backends/backend.h"
#include "core/fp16.h"
#include "core/status.h"
}

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- state */

typedef struct gpu_device {
    tl_device base;
    int dev;
} gpu_device;

typedef struct gpu_stream {
    tl_stream base;
    int dev;
    gpuStream_t stream;
    gpublasHandle_t blas;
    tl_status err;     /* the first failure since the last sync */
    char msg[256];
    /* prefill scratch: a tile of weight rows dequantized to F16, and the activations in F16 */
    __half *w_tile, *x_half;
    size_t w_tile_elems, x_half_elems;
} gpu_stream;

/* rows of a weight dequantized per cuBLAS call in prefill */
#define TILE_ROWS 4096
/* batches of up to this many tokens go through the GEMV kernels (weights read once) */
#define GEMV_MAX_TOKENS 8

static tl_status fail(gpuError_t e, const char *what) {
    return tl_set_error(TL_ERR_DEVICE, GPU_BACKEND ": %s: %s", what, gpuGetErrorString(e));
}

/* Keeps the first failure of a stream's queued work, to report at the next sync. */
static void note(gpu_stream *s, gpuError_t e, const char *what) {
    if (e == gpuSuccess || s->err) return;
    s->err = TL_ERR_DEVICE;
    snprintf(s->msg, sizeof s->msg, GPU_BACKEND ": %s: %s", what, gpuGetErrorString(e));
}

static void note_blas(gpu_stream *s, gpublasStatus_t st, const char *what) {
    if (st == GPUBLAS_STATUS_SUCCESS || s->err) return;
    s->err = TL_ERR_DEVICE;
    snprintf(s->msg, sizeof s->msg, GPU_BACKEND ": %s: BLAS status %d", what, (int)st);
}

#define LAUNCHED(s, what) note((s), gpuGetLastError(), (what))

static int blocks_for(int64_t n, int threads) { return (int)((n + threads - 1) / threads); }

/* ---------------------------------------------------------------- decoding weights */

/* The dtypes with kernels of their own; the others are converted to F16 at upload. */
static bool native_dtype(tl_dtype t) {
    switch (t) {
    case TL_F32: case TL_F16: case TL_BF16: case TL_Q4_0: case TL_Q4_1: case TL_Q5_0: case TL_Q5_1: case TL_Q8_0:
    case TL_Q4_K: case TL_Q5_K: case TL_Q6_K: return true;
    default: return false;
    }
}

__device__ __forceinline__ float h2f(const uint8_t *p) {
    __half h;
    memcpy(&h, p, 2);
    return __half2float(h);
}

__device__ __forceinline__ uint32_t u32le(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* 6-bit scale and min j of a Q4_K/Q5_K block (ggml's get_scale_min_k4) */
__device__ __forceinline__ void scale_min_k4(int j, const uint8_t *q, int *sc, int *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/* Elements [32u, 32u + 32) of a row of dtype DT into v: every kernel reads weights through this.
 * Layouts are GGUF's (core/quants.h). */
template <int DT> __device__ __forceinline__ void decode32(const uint8_t *row, int64_t u, float v[32]) {
    if (DT == TL_F32) {
        const float4 *p = (const float4 *)(row + u * 128);
#pragma unroll
        for (int i = 0; i < 8; i++) {
            float4 f = p[i];
            v[4 * i] = f.x, v[4 * i + 1] = f.y, v[4 * i + 2] = f.z, v[4 * i + 3] = f.w;
        }
    } else if (DT == TL_F16) {
        const uint4 *p = (const uint4 *)(row + u * 64);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            uint4 w = p[i];
            const __half2 *h = (const __half2 *)&w;
#pragma unroll
            for (int j = 0; j < 4; j++) {
                float2 f = __half22float2(h[j]);
                v[8 * i + 2 * j] = f.x, v[8 * i + 2 * j + 1] = f.y;
            }
        }
    } else if (DT == TL_BF16) {
        const uint4 *p = (const uint4 *)(row + u * 64);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            uint4 w = p[i];
            const uint32_t *b = (const uint32_t *)&w;
#pragma unroll
            for (int j = 0; j < 4; j++) {
                v[8 * i + 2 * j] = __uint_as_float(b[j] << 16);
                v[8 * i + 2 * j + 1] = __uint_as_float(b[j] & 0xFFFF0000u);
            }
        }
    } else if (DT == TL_Q4_0 || DT == TL_Q4_1) {
        const int bs = DT == TL_Q4_0 ? 18 : 20;
        const uint8_t *b = row + u * bs;
        const float d = h2f(b), m = DT == TL_Q4_1 ? h2f(b + 2) : -8.0f * d;
        const uint8_t *qs = b + (DT == TL_Q4_0 ? 2 : 4);
#pragma unroll
        for (int j = 0; j < 16; j++) {
            const int q = qs[j];
            v[j] = (float)(q & 0xF) * d + m;
            v[j + 16] = (float)(q >> 4) * d + m;
        }
    } else if (DT == TL_Q5_0 || DT == TL_Q5_1) {
        const int bs = DT == TL_Q5_0 ? 22 : 24;
        const uint8_t *b = row + u * bs;
        const float d = h2f(b), m = DT == TL_Q5_1 ? h2f(b + 2) : -16.0f * d;
        const uint8_t *qhp = b + (DT == TL_Q5_0 ? 2 : 4);
        const uint32_t qh = u32le(qhp);
        const uint8_t *qs = qhp + 4;
#pragma unroll
        for (int j = 0; j < 16; j++) {
            const int q = qs[j];
            v[j] = (float)((q & 0xF) | ((qh >> j) & 1) << 4) * d + m;
            v[j + 16] = (float)((q >> 4) | ((qh >> (j + 16)) & 1) << 4) * d + m;
        }
    } else if (DT == TL_Q8_0) {
        const uint8_t *b = row + u * 34;
        const float d = h2f(b);
        const int8_t *qs = (const int8_t *)(b + 2);
#pragma unroll
        for (int j = 0; j < 32; j++) v[j] = (float)qs[j] * d;
    } else if (DT == TL_Q4_K || DT == TL_Q5_K) {
        /* sub-block s of 8 in a super-block of 256: d*sc*q - dmin*m */
        const int bs = DT == TL_Q4_K ? 144 : 176;
        const uint8_t *b = row + (u >> 3) * bs;
        const int s = (int)(u & 7);
        int sc, mn;
        scale_min_k4(s, b + 4, &sc, &mn);
        const float d1 = h2f(b) * (float)sc, m1 = h2f(b + 2) * (float)mn;
        const uint8_t *qh = b + 16;
        const uint8_t *q = b + (DT == TL_Q4_K ? 16 : 48) + (s / 2) * 32;
        const int shift = 4 * (s & 1);
#pragma unroll
        for (int l = 0; l < 32; l++) {
            int x = (q[l] >> shift) & 0xF;
            if (DT == TL_Q5_K) x |= ((qh[l] >> s) & 1) << 4;
            v[l] = d1 * (float)x - m1;
        }
    } else if (DT == TL_Q6_K) {
        /* part p of 4 in half h of a super-block: 4 low bits from ql, 2 high from qh, a scale per 16 */
        const uint8_t *b = row + (u >> 3) * 210;
        const int h = (int)((u >> 2) & 1), p = (int)(u & 3);
        const uint8_t *lo = b + 64 * h + 32 * (p & 1), *qh = b + 128 + 32 * h;
        const int8_t *sc = (const int8_t *)(b + 192) + 8 * h;
        const float d = h2f(b + 208);
        const int lshift = 4 * (p >> 1), hshift = 2 * p;
        const float d0 = d * (float)sc[2 * p], d1 = d * (float)sc[2 * p + 1];
#pragma unroll
        for (int l = 0; l < 32; l++) {
            const int x = (((lo[l] >> lshift) & 0xF) | ((qh[l] >> hshift) & 3) << 4) - 32;
            v[l] = (l < 16 ? d0 : d1) * (float)x;
        }
    }
}

/* ---------------------------------------------------------------- GEMV (decode) */

/* y[t][r] = W[r] . x[t] (+ bias[r]) for NT tokens: one 32-lane group per row; lane i takes units
 * i, i + 32, ... of 32 weights, decodes each once and dots it with every token's slice of x. */
template <int DT, int NT>
__global__ void gemv_kernel(const uint8_t *__restrict__ w, size_t row_bytes, const float *__restrict__ x, int64_t k,
                            int64_t m, float *__restrict__ y, const float *__restrict__ bias) {
    const int lane = threadIdx.x & 31;
    const int64_t r = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (r >= m) return;
    const uint8_t *row = w + (size_t)r * row_bytes;
    float acc[NT];
#pragma unroll
    for (int t = 0; t < NT; t++) acc[t] = 0.0f;
    const int64_t units = k / 32;
    for (int64_t u = lane; u < units; u += 32) {
        float v[32];
        decode32<DT>(row, u, v);
#pragma unroll
        for (int t = 0; t < NT; t++) {
            const float4 *xs = (const float4 *)(x + (size_t)t * k + u * 32);
            float a = 0.0f;
#pragma unroll
            for (int i = 0; i < 8; i++) {
                const float4 f = __ldg(xs + i);
                a += v[4 * i] * f.x + v[4 * i + 1] * f.y + v[4 * i + 2] * f.z + v[4 * i + 3] * f.w;
            }
            acc[t] += a;
        }
    }
#pragma unroll
    for (int t = 0; t < NT; t++) {
        float a = acc[t];
        for (int o = 16; o > 0; o >>= 1) a += SHFL_XOR(a, o);
        if (lane == 0) y[(size_t)t * m + r] = a + (bias ? bias[r] : 0.0f);
    }
}

/* F32/F16/BF16 rows whose length is not a multiple of 32: element by element. */
__global__ void gemv_float_any(const uint8_t *__restrict__ w, int dt, size_t row_bytes, const float *__restrict__ x,
                               int64_t k, int64_t m, int64_t n, float *__restrict__ y, const float *__restrict__ bias) {
    const int lane = threadIdx.x & 31;
    const int64_t r = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (r >= m) return;
    const uint8_t *row = w + (size_t)r * row_bytes;
    for (int64_t t = 0; t < n; t++) {
        float a = 0.0f;
        for (int64_t i = lane; i < k; i += 32) {
            float wv;
            if (dt == TL_F32) wv = ((const float *)row)[i];
            else if (dt == TL_F16) wv = __half2float(((const __half *)row)[i]);
            else wv = __uint_as_float((uint32_t)((const uint16_t *)row)[i] << 16);
            a += wv * x[t * k + i];
        }
        for (int o = 16; o > 0; o >>= 1) a += SHFL_XOR(a, o);
        if (lane == 0) y[t * m + r] = a + (bias ? bias[r] : 0.0f);
    }
}

/* ---------------------------------------------------------------- dequantize (prefill, embeddings) */

/* out[r][32u + j] = W[r0 + r] unit u, for rows [r0, r0 + rows): one thread per unit */
template <int DT, typename T>
__global__ void dequant_kernel(const uint8_t *__restrict__ w, size_t row_bytes, int64_t k, int64_t r0, int64_t rows,
                               T *__restrict__ out, float scale) {
    const int64_t units = k / 32, i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows * units) return;
    const int64_t r = i / units, u = i % units;
    float v[32];
    decode32<DT>(w + (size_t)(r0 + r) * row_bytes, u, v);
    T *o = out + r * k + u * 32;
#pragma unroll
    for (int j = 0; j < 32; j++) o[j] = (T)(v[j] * scale);
}

/* rows of a table picked by ids: out[i] = table[ids[i]] * scale (embeddings) */
template <int DT>
__global__ void embed_kernel(const uint8_t *__restrict__ w, size_t row_bytes, int64_t k, const int32_t *__restrict__ ids,
                             int32_t n, float scale, float *__restrict__ out) {
    const int64_t units = k / 32, i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (int64_t)n * units) return;
    const int64_t t = i / units, u = i % units;
    float v[32];
    decode32<DT>(w + (size_t)ids[t] * row_bytes, u, v);
    float *o = out + t * k + u * 32;
#pragma unroll
    for (int j = 0; j < 32; j++) o[j] = v[j] * scale;
}

__global__ void embed_float_any(const uint8_t *__restrict__ w, int dt, size_t row_bytes, int64_t k,
                                const int32_t *__restrict__ ids, int32_t n, float scale, float *__restrict__ out) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (int64_t)n * k) return;
    const uint8_t *row = w + (size_t)ids[i / k] * row_bytes;
    const int64_t j = i % k;
    float v;
    if (dt == TL_F32) v = ((const float *)row)[j];
    else if (dt == TL_F16) v = __half2float(((const __half *)row)[j]);
    else v = __uint_as_float((uint32_t)((const uint16_t *)row)[j] << 16);
    out[i] = v * scale;
}

__global__ void to_half_kernel(const float *__restrict__ x, int64_t n, __half *__restrict__ out) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = __float2half(x[i]);
}

__global__ void add_bias_kernel(float *__restrict__ y, const float *__restrict__ bias, int64_t n, int64_t m) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n * m) y[i] += bias[i % m];
}

/* ---------------------------------------------------------------- small ops */

/* one block per row; the sum of squares in float, reduced across the block */
__global__ void rmsnorm_kernel(float *out, const float *x, const float *__restrict__ w, int64_t dim, float eps) {
    const float *xr = x + (size_t)blockIdx.x * dim;
    float *o = out + (size_t)blockIdx.x * dim;
    float ss = 0.0f;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) ss += xr[i] * xr[i];
    __shared__ float part[32];
    for (int off = 16; off > 0; off >>= 1) ss += SHFL_XOR(ss, off);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x / 32] = ss;
    __syncthreads();
    if (threadIdx.x < 32) {
        ss = threadIdx.x < blockDim.x / 32 ? part[threadIdx.x] : 0.0f;
        for (int off = 16; off > 0; off >>= 1) ss += SHFL_XOR(ss, off);
        if (threadIdx.x == 0) part[0] = ss;
    }
    __syncthreads();
    const float scale = rsqrtf(part[0] / (float)dim + eps);
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) o[i] = xr[i] * scale * w[i];
}

__global__ void rope_kernel(float *x, const float *__restrict__ cs, int32_t n, int32_t heads, int32_t hd, int32_t rope_dim,
                            bool neox) {
    const int half = rope_dim / 2;
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (int64_t)n * heads * half) return;
    const int k = (int)(i % half);
    const int64_t th = i / half, t = th / heads;
    float *v = x + th * hd;
    const float c = cs[t * rope_dim + 2 * k], s = cs[t * rope_dim + 2 * k + 1];
    const int a = neox ? k : 2 * k, b = neox ? k + half : 2 * k + 1;
    const float x0 = v[a], x1 = v[b];
    v[a] = x0 * c - x1 * s;
    v[b] = x0 * s + x1 * c;
}

__global__ void kv_store_kernel(void *kc, void *vc, int f16, const float *__restrict__ k, const float *__restrict__ v,
                                const int32_t *__restrict__ pos, const int32_t *__restrict__ seq, int32_t n,
                                int32_t kv_heads, int32_t hd, int32_t max_seq_len) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (int64_t)n * kv_heads * hd) return;
    const int64_t d = i % hd, h = (i / hd) % kv_heads, t = i / ((int64_t)hd * kv_heads);
    const size_t at = (((size_t)seq[t] * kv_heads + h) * max_seq_len + pos[t]) * hd + d;
    if (f16) {
        ((__half *)kc)[at] = __float2half(k[i]);
        ((__half *)vc)[at] = __float2half(v[i]);
    } else {
        ((float *)kc)[at] = k[i];
        ((float *)vc)[at] = v[i];
    }
}

__global__ void add_kernel(float *x, const float *__restrict__ y, int64_t n) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] += y[i];
}

__global__ void glu_kernel(int gelu, float *a, const float *__restrict__ b, int64_t n) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float z = a[i];
    float g;
    if (gelu) g = 0.5f * z * (1.0f + tanhf(0.79788456080286535588f * z * (1.0f + 0.044715f * z * z)));
    else g = z / (1.0f + expf(-z));
    a[i] = g * b[i];
}

__global__ void softcap_kernel(float *x, int64_t n, float c) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = c * tanhf(x[i] / c);
}

__global__ void gather_kernel(float *out, const float *x, const int32_t *__restrict__ rows, int32_t n, int64_t dim) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < (int64_t)n * dim) out[i] = x[(size_t)rows[i / dim] * dim + i % dim];
}

/* ---------------------------------------------------------------- attention */

#define ATTN_WARPS 8
#define ATTN_MAX_HD 256

template <typename KV> __device__ __forceinline__ float kv_get(const KV *p, size_t i);
template <> __device__ __forceinline__ float kv_get<float>(const float *p, size_t i) { return p[i]; }
template <> __device__ __forceinline__ float kv_get<__half>(const __half *p, size_t i) { return __half2float(p[i]); }

/* One block per (head, token): each 32-lane group walks every ATTN_WARPS-th key with its own
 * online softmax (running max m, sum l, output acc; lane i holds dims i, i + 32, ...), and the
 * groups' partial results are merged at the end. No score matrix is stored. */
template <typename KV, int PER_LANE>
__global__ void attention_kernel(tl_attn_args a) {
    const int h = blockIdx.x, i = blockIdx.y, lane = threadIdx.x & 31, wid = threadIdx.x / 32;
    const int hd = a.head_dim, group = a.n_heads / a.n_kv_heads;
    const int32_t pos = a.pos[i];
    const size_t base = (((size_t)a.seq[i] * a.n_kv_heads + h / group) * a.max_seq_len) * hd;
    const KV *kc = (const KV *)a.k_cache + base, *vc = (const KV *)a.v_cache + base;
    const float *q = a.q + ((size_t)i * a.n_heads + h) * hd;
    float qr[PER_LANE], acc[PER_LANE];
#pragma unroll
    for (int j = 0; j < PER_LANE; j++) {
        const int d = lane + 32 * j;
        qr[j] = d < hd ? q[d] * a.scale : 0.0f;
        acc[j] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    const int32_t t0 = a.window > 0 && pos >= a.window ? pos - a.window + 1 : 0;
    for (int32_t t = t0 + wid; t <= pos; t += ATTN_WARPS) {
        const size_t row = (size_t)t * hd;
        float z = 0.0f;
#pragma unroll
        for (int j = 0; j < PER_LANE; j++) {
            const int d = lane + 32 * j;
            if (d < hd) z += qr[j] * kv_get(kc, row + d);
        }
        for (int o = 16; o > 0; o >>= 1) z += SHFL_XOR(z, o);
        if (a.softcap > 0) z = a.softcap * tanhf(z / a.softcap);
        const float mn = fmaxf(m, z), r = __expf(m - mn), p = __expf(z - mn);
        l = l * r + p;
#pragma unroll
        for (int j = 0; j < PER_LANE; j++) {
            const int d = lane + 32 * j;
            acc[j] = acc[j] * r + (d < hd ? p * kv_get(vc, row + d) : 0.0f);
        }
        m = mn;
    }
    /* merge the groups: rescale each to the largest maximum */
    __shared__ float sm[ATTN_WARPS], sl[ATTN_WARPS], sacc[ATTN_WARPS][ATTN_MAX_HD];
    if (lane == 0) {
        sm[wid] = m;
        sl[wid] = l;
    }
#pragma unroll
    for (int j = 0; j < PER_LANE; j++) {
        const int d = lane + 32 * j;
        if (d < hd) sacc[wid][d] = acc[j];
    }
    __syncthreads();
    float M = -INFINITY;
    for (int w = 0; w < ATTN_WARPS; w++) M = fmaxf(M, sm[w]);
    float L = 0.0f;
    for (int w = 0; w < ATTN_WARPS; w++)
        if (sl[w] > 0) L += sl[w] * __expf(sm[w] - M);
    float *out = a.out + ((size_t)i * a.n_heads + h) * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float o = 0.0f;
        for (int w = 0; w < ATTN_WARPS; w++)
            if (sl[w] > 0) o += sacc[w][d] * __expf(sm[w] - M);
        out[d] = o / L;
    }
}

/* ---------------------------------------------------------------- the device */

static void device_free(tl_device *d) { free(d); }

static tl_status set_device(int dev) {
    gpuError_t e = gpuSetDevice(dev);
    return e == gpuSuccess ? TL_OK : fail(e, "selecting the device");
}

static tl_status dev_alloc(tl_device *d, size_t bytes, void **out) {
    *out = NULL;
    tl_status s = set_device(((gpu_device *)d)->dev);
    if (s) return s;
    gpuError_t e = gpuMalloc(out, bytes ? bytes : 1);
    if (e != gpuSuccess) {
        *out = NULL;
        (void)gpuGetLastError();
        size_t free_b = 0, total = 0;
        gpuMemGetInfo(&free_b, &total);
        return tl_set_error(TL_ERR_NOMEM, GPU_BACKEND ": out of device memory: %.1f MiB asked for, %.1f MiB of %.1f MiB free on %s",
                            bytes / 1048576.0, free_b / 1048576.0, total / 1048576.0, d->name);
    }
    return TL_OK;
}

static void dev_free(tl_device *d, void *p) {
    if (!p) return;
    set_device(((gpu_device *)d)->dev);
    gpuFree(p);
}

static tl_status memory(tl_device *d, size_t *free_bytes, size_t *total_bytes) {
    tl_status s = set_device(((gpu_device *)d)->dev);
    if (s) return s;
    gpuError_t e = gpuMemGetInfo(free_bytes, total_bytes);
    return e == gpuSuccess ? TL_OK : fail(e, "reading free memory");
}

static tl_status weight_upload(tl_device *d, const tl_tensor *src, tl_tensor *dst) {
    *dst = *src;
    dst->owner = NULL;
    dst->data = NULL;
    const int64_t k = src->ne[0], rows = tl_tensor_nrows(src);
    const void *host = src->data;
    uint16_t *conv = NULL;
    if (!native_dtype(src->dtype) || (k % 32 != 0 && src->dtype != TL_F32 && src->dtype != TL_F16 && src->dtype != TL_BF16)) {
        /* no kernel of ours reads this dtype: F16 rows, converted here once */
        float *row = (float *)malloc((size_t)k * sizeof(float));
        conv = (uint16_t *)malloc((size_t)k * rows * sizeof(uint16_t));
        if (!row || !conv) {
            free(row);
            free(conv);
            return tl_set_error(TL_ERR_NOMEM, GPU_BACKEND ": out of host memory converting a weight");
        }
        const size_t rb = tl_dtype_row_size(src->dtype, k);
        tl_status s = TL_OK;
        for (int64_t r = 0; r < rows && !s; r++) {
            s = tl_dequantize(src->dtype, (const uint8_t *)src->data + (size_t)r * rb, row, k);
            for (int64_t j = 0; j < k && !s; j++) conv[(size_t)r * k + j] = tl_f32_to_f16(row[j]);
        }
        free(row);
        if (s) {
            free(conv);
            return s;
        }
        host = conv;
        dst->dtype = TL_F16;
        dst->nbytes = (size_t)k * rows * sizeof(uint16_t);
    }
    void *p;
    tl_status s = dev_alloc(d, dst->nbytes, &p);
    if (!s) {
        gpuError_t e = gpuMemcpy(p, host, dst->nbytes, gpuMemcpyHostToDevice);
        if (e != gpuSuccess) {
            gpuFree(p);
            s = fail(e, "uploading a weight");
        }
    }
    free(conv);
    if (!s) dst->data = p;
    return s;
}

static void weight_free(tl_device *d, tl_tensor *t) {
    dev_free(d, (void *)t->data);
    t->data = NULL;
}

/* ---------------------------------------------------------------- streams */

static tl_status stream_new(tl_device *d, int n_threads, tl_stream **out) {
    (void)n_threads;
    *out = NULL;
    gpu_device *g = (gpu_device *)d;
    tl_status s = set_device(g->dev);
    if (s) return s;
    gpu_stream *st = (gpu_stream *)calloc(1, sizeof *st);
    if (!st) return tl_set_error(TL_ERR_NOMEM, GPU_BACKEND ": out of memory");
    st->base.ops = d->ops;
    st->base.device = d;
    st->dev = g->dev;
    gpuError_t e = gpuStreamCreateWithFlags(&st->stream, gpuStreamNonBlocking);
    if (e != gpuSuccess) {
        free(st);
        return fail(e, "creating a stream");
    }
    if (gpublasCreate(&st->blas) != GPUBLAS_STATUS_SUCCESS) {
        gpuStreamDestroy(st->stream);
        free(st);
        return tl_set_error(TL_ERR_DEVICE, GPU_BACKEND ": creating the BLAS handle failed");
    }
    gpublasSetStream(st->blas, st->stream);
    *out = &st->base;
    return TL_OK;
}

static void stream_free(tl_stream *ts) {
    gpu_stream *s = (gpu_stream *)ts;
    if (!s) return;
    set_device(s->dev);
    gpuStreamSynchronize(s->stream);
    gpublasDestroy(s->blas);
    gpuStreamDestroy(s->stream);
    gpuFree(s->w_tile);
    gpuFree(s->x_half);
    free(s);
}

/* The failure kept since the last sync, as this thread's error (and cleared). */
static tl_status take_error(gpu_stream *s) {
    if (!s->err) return TL_OK;
    tl_status st = tl_set_error(s->err, "%s", s->msg);
    s->err = TL_OK;
    return st;
}

static tl_status sync(tl_stream *ts) {
    gpu_stream *s = (gpu_stream *)ts;
    note(s, gpuStreamSynchronize(s->stream), "running queued work");
    return take_error(s);
}

static tl_status upload(tl_stream *ts, void *dst, const void *src, size_t bytes) {
    gpu_stream *s = (gpu_stream *)ts;
    if (bytes) note(s, gpuMemcpyAsync(dst, src, bytes, gpuMemcpyHostToDevice, s->stream), "copying to the device");
    return s->err ? sync(ts) : TL_OK;
}

static tl_status download(tl_stream *ts, void *dst, const void *src, size_t bytes) {
    gpu_stream *s = (gpu_stream *)ts;
    if (bytes) note(s, gpuMemcpyAsync(dst, src, bytes, gpuMemcpyDeviceToHost, s->stream), "copying from the device");
    return sync(ts);
}

static tl_status reserve(tl_stream *ts, int64_t n_tokens, int64_t max_k) {
    gpu_stream *s = (gpu_stream *)ts;
    tl_device *d = ts->device;
    if (n_tokens <= GEMV_MAX_TOKENS) return TL_OK; /* the GEMV path needs no scratch */
    const size_t tile = (size_t)TILE_ROWS * max_k, xh = (size_t)n_tokens * max_k;
    tl_status st = TL_OK;
    if (tile > s->w_tile_elems) {
        dev_free(d, s->w_tile);
        s->w_tile = NULL;
        s->w_tile_elems = 0;
        st = dev_alloc(d, tile * sizeof(__half), (void **)&s->w_tile);
        if (!st) s->w_tile_elems = tile;
    }
    if (!st && xh > s->x_half_elems) {
        dev_free(d, s->x_half);
        s->x_half = NULL;
        s->x_half_elems = 0;
        st = dev_alloc(d, xh * sizeof(__half), (void **)&s->x_half);
        if (!st) s->x_half_elems = xh;
    }
    return st;
}

/* ---------------------------------------------------------------- ops */

#define THREADS 256

template <template <int> class F, typename... A> static void by_dtype(tl_dtype t, A... args) {
    switch (t) {
    case TL_F32: F<TL_F32>::run(args...); break;
    case TL_F16: F<TL_F16>::run(args...); break;
    case TL_BF16: F<TL_BF16>::run(args...); break;
    case TL_Q4_0: F<TL_Q4_0>::run(args...); break;
    case TL_Q4_1: F<TL_Q4_1>::run(args...); break;
    case TL_Q5_0: F<TL_Q5_0>::run(args...); break;
    case TL_Q5_1: F<TL_Q5_1>::run(args...); break;
    case TL_Q8_0: F<TL_Q8_0>::run(args...); break;
    case TL_Q4_K: F<TL_Q4_K>::run(args...); break;
    case TL_Q5_K: F<TL_Q5_K>::run(args...); break;
    case TL_Q6_K: F<TL_Q6_K>::run(args...); break;
    default: break; /* weight_upload converted every other dtype to F16 */
    }
}

template <int DT> struct embed_launch {
    static void run(gpu_stream *s, const tl_tensor *t, const int32_t *ids, int32_t n, float scale, float *out) {
        const int64_t k = t->ne[0];
        const int64_t units = (int64_t)n * (k / 32);
        embed_kernel<DT><<<blocks_for(units, 128), 128, 0, s->stream>>>((const uint8_t *)t->data,
                                                                          tl_dtype_row_size(t->dtype, k), k, ids, n, scale, out);
    }
};

static void embed(tl_stream *ts, const tl_tensor *table, const int32_t *tokens, int32_t n, float scale, float *out) {
    gpu_stream *s = (gpu_stream *)ts;
    const int64_t k = table->ne[0];
    if (k % 32 == 0) {
        by_dtype<embed_launch>(table->dtype, s, table, tokens, n, scale, out);
    } else {
        embed_float_any<<<blocks_for((int64_t)n * k, THREADS), THREADS, 0, s->stream>>>(
            (const uint8_t *)table->data, table->dtype, tl_dtype_row_size(table->dtype, k), k, tokens, n, scale, out);
    }
    LAUNCHED(s, "embedding");
}

static void rmsnorm(tl_stream *ts, float *out, const float *x, const float *w, int64_t rows, int64_t dim, float eps) {
    gpu_stream *s = (gpu_stream *)ts;
    int threads = dim >= 1024 ? 1024 : dim >= 256 ? 256 : 64;
    rmsnorm_kernel<<<(unsigned)rows, threads, 0, s->stream>>>(out, x, w, dim, eps);
    LAUNCHED(s, "rmsnorm");
}

template <int DT> struct gemv_launch {
    static void run(gpu_stream *s, const tl_tensor *w, const float *x, int64_t n, float *y, const float *bias) {
        const int64_t k = w->ne[0], m = w->ne[1];
        const size_t rb = tl_dtype_row_size(w->dtype, k);
        const int rows_per_block = 4;
        const unsigned blocks = (unsigned)((m + rows_per_block - 1) / rows_per_block);
        const uint8_t *wd = (const uint8_t *)w->data;
        switch (n) {
#define CASE(N) \
    case N: gemv_kernel<DT, N><<<blocks, 32 * rows_per_block, 0, s->stream>>>(wd, rb, x, k, m, y, bias); break;
            CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7) CASE(8)
#undef CASE
        }
    }
};

template <int DT> struct dequant_launch {
    static void run(gpu_stream *s, const tl_tensor *w, int64_t r0, int64_t rows, __half *out) {
        const int64_t k = w->ne[0];
        const int64_t units = rows * (k / 32);
        dequant_kernel<DT, __half><<<blocks_for(units, 128), 128, 0, s->stream>>>(
            (const uint8_t *)w->data, tl_dtype_row_size(w->dtype, k), k, r0, rows, out, 1.0f);
    }
};

/* y = x W^T through cuBLAS: column-major, W (m x k row-major) is A^T with lda k, x is B (k x n),
 * y is C (m x n) with ldc m. F32 weights stay F32 (SGEMM); others in F16 tiles, F32 accumulation. */
static void gemm(gpu_stream *s, const tl_tensor *w, const float *x, int64_t n, float *y) {
    const int64_t k = w->ne[0], m = w->ne[1];
    const float one = 1.0f, zero = 0.0f;
    if (w->dtype == TL_F32) {
        note_blas(s, gpublasSgemm(s->blas, GPUBLAS_OP_T, GPUBLAS_OP_N, (int)m, (int)n, (int)k, &one, (const float *)w->data,
                                  (int)k, x, (int)k, &zero, y, (int)m),
                  "sgemm");
        return;
    }
    to_half_kernel<<<blocks_for(n * k, THREADS), THREADS, 0, s->stream>>>(x, n * k, s->x_half);
    LAUNCHED(s, "activations to f16");
    for (int64_t r0 = 0; r0 < m; r0 += TILE_ROWS) {
        const int64_t rows = m - r0 < TILE_ROWS ? m - r0 : TILE_ROWS;
        const __half *a;
        if (w->dtype == TL_F16) {
            a = (const __half *)w->data + (size_t)r0 * k;
        } else {
            by_dtype<dequant_launch>(w->dtype, s, w, r0, rows, s->w_tile);
            LAUNCHED(s, "dequantize");
            a = s->w_tile;
        }
        note_blas(s, gpublasGemmEx(s->blas, GPUBLAS_OP_T, GPUBLAS_OP_N, (int)rows, (int)n, (int)k, &one, a, GPU_R_16F, (int)k,
                                   s->x_half, GPU_R_16F, (int)k, &zero, y + r0, GPU_R_32F, (int)m, GPUBLAS_COMPUTE_32F,
                                   GPUBLAS_GEMM_DEFAULT),
                  "gemm");
    }
}

static void matmul(tl_stream *ts, const tl_tensor *w, const float *x, int64_t n, float *y, const float *bias) {
    gpu_stream *s = (gpu_stream *)ts;
    const int64_t k = w->ne[0], m = w->ne[1];
    if (k % 32 != 0) { /* float weights of an odd width (weight_upload converted any others) */
        gemv_float_any<<<(unsigned)((m + 3) / 4), 128, 0, s->stream>>>((const uint8_t *)w->data, w->dtype,
                                                                         tl_dtype_row_size(w->dtype, k), x, k, m, n, y, bias);
        LAUNCHED(s, "gemv");
        return;
    }
    if (n <= GEMV_MAX_TOKENS) {
        by_dtype<gemv_launch>(w->dtype, s, w, x, n, y, bias);
        LAUNCHED(s, "gemv");
        return;
    }
    if (!s->x_half || s->x_half_elems < (size_t)(n * k)) {
        if (!s->err) {
            s->err = TL_ERR_INVALID;
            snprintf(s->msg, sizeof s->msg, GPU_BACKEND ": matmul of %lld tokens without reserve()", (long long)n);
        }
        return;
    }
    gemm(s, w, x, n, y);
    if (bias) {
        add_bias_kernel<<<blocks_for(n * m, THREADS), THREADS, 0, s->stream>>>(y, bias, n, m);
        LAUNCHED(s, "bias");
    }
}

static void rope(tl_stream *ts, float *x, const float *cs, int32_t n, int32_t heads, int32_t hd, int32_t rope_dim, bool neox) {
    gpu_stream *s = (gpu_stream *)ts;
    const int64_t pairs = (int64_t)n * heads * (rope_dim / 2);
    if (!pairs) return;
    rope_kernel<<<blocks_for(pairs, THREADS), THREADS, 0, s->stream>>>(x, cs, n, heads, hd, rope_dim, neox);
    LAUNCHED(s, "rope");
}

static void kv_store(tl_stream *ts, void *k_cache, void *v_cache, tl_dtype dt, const float *k, const float *v,
                     const int32_t *pos, const int32_t *seq, int32_t n, int32_t kv_heads, int32_t hd, int32_t max_seq_len) {
    gpu_stream *s = (gpu_stream *)ts;
    const int64_t total = (int64_t)n * kv_heads * hd;
    kv_store_kernel<<<blocks_for(total, THREADS), THREADS, 0, s->stream>>>(k_cache, v_cache, dt == TL_F16, k, v, pos, seq, n,
                                                                             kv_heads, hd, max_seq_len);
    LAUNCHED(s, "kv store");
}

template <typename KV> static void attention_for(gpu_stream *s, const tl_attn_args *a) {
    dim3 grid((unsigned)a->n_heads, (unsigned)a->n);
    const int per_lane = (a->head_dim + 31) / 32;
    if (per_lane <= 2) attention_kernel<KV, 2><<<grid, 32 * ATTN_WARPS, 0, s->stream>>>(*a);
    else if (per_lane <= 4) attention_kernel<KV, 4><<<grid, 32 * ATTN_WARPS, 0, s->stream>>>(*a);
    else attention_kernel<KV, 8><<<grid, 32 * ATTN_WARPS, 0, s->stream>>>(*a);
}

static void attention(tl_stream *ts, const tl_attn_args *a) {
    gpu_stream *s = (gpu_stream *)ts;
    if (a->head_dim > ATTN_MAX_HD) {
        if (!s->err) {
            s->err = TL_ERR_UNSUPPORTED;
            snprintf(s->msg, sizeof s->msg, GPU_BACKEND ": attention heads of %d dims (at most %d)", a->head_dim, ATTN_MAX_HD);
        }
        return;
    }
    if (a->kv_dtype == TL_F16) attention_for<__half>(s, a);
    else attention_for<float>(s, a);
    LAUNCHED(s, "attention");
}

static void add(tl_stream *ts, float *x, const float *y, int64_t n) {
    gpu_stream *s = (gpu_stream *)ts;
    add_kernel<<<blocks_for(n, THREADS), THREADS, 0, s->stream>>>(x, y, n);
    LAUNCHED(s, "add");
}

static void glu(tl_stream *ts, tl_activation act, float *a, const float *b, int64_t n) {
    gpu_stream *s = (gpu_stream *)ts;
    glu_kernel<<<blocks_for(n, THREADS), THREADS, 0, s->stream>>>(act == TL_ACT_GELU_TANH, a, b, n);
    LAUNCHED(s, "glu");
}

static void softcap(tl_stream *ts, float *x, int64_t n, float c) {
    gpu_stream *s = (gpu_stream *)ts;
    softcap_kernel<<<blocks_for(n, THREADS), THREADS, 0, s->stream>>>(x, n, c);
    LAUNCHED(s, "softcap");
}

static void gather(tl_stream *ts, float *out, const float *x, const int32_t *rows, int32_t n, int64_t dim) {
    gpu_stream *s = (gpu_stream *)ts;
    gather_kernel<<<blocks_for((int64_t)n * dim, THREADS), THREADS, 0, s->stream>>>(out, x, rows, n, dim);
    LAUNCHED(s, "gather");
}

static tl_backend_ops make_ops(void) {
    tl_backend_ops o;
    memset(&o, 0, sizeof o);
    o.name = GPU_BACKEND;
    o.device_free = device_free;
    o.host_memory = false;
    o.alloc = dev_alloc;
    o.free = dev_free;
    o.weight_upload = weight_upload;
    o.weight_free = weight_free;
    o.memory = memory;
    o.stream_new = stream_new;
    o.stream_free = stream_free;
    o.upload = upload;
    o.download = download;
    o.sync = sync;
    o.reserve = reserve;
    o.embed = embed;
    o.rmsnorm = rmsnorm;
    o.matmul = matmul;
    o.rope = rope;
    o.kv_store = kv_store;
    o.attention = attention;
    o.add = add;
    o.glu = glu;
    o.softcap = softcap;
    o.gather = gather;
    return o;
}

static const tl_backend_ops gpu_ops = make_ops();

extern "C" int GPU_FN(device_count)(void) {
    int n = 0;
    if (gpuGetDeviceCount(&n) != gpuSuccess) { /* no driver, no card: none, never an error */
        (void)gpuGetLastError();
        return 0;
    }
    return n;
}

extern "C" tl_status GPU_FN(device_open)(int index, tl_device **out) {
    *out = NULL;
    const int n = GPU_FN(device_count)();
    if (index < 0 || index >= n)
        return tl_set_error(TL_ERR_UNSUPPORTED, GPU_BACKEND ": no device %d (%d found)", index, n);
    gpuDeviceProp p;
    gpuError_t e = gpuGetDeviceProperties(&p, index);
    if (e != gpuSuccess) return fail(e, "reading the device's properties");
    gpu_device *d = (gpu_device *)calloc(1, sizeof *d);
    if (!d) return tl_set_error(TL_ERR_NOMEM, GPU_BACKEND ": out of memory");
    d->base.ops = &gpu_ops;
    d->base.index = index;
    d->dev = index;
    snprintf(d->base.name, sizeof d->base.name, "%s", p.name);
    *out = &d->base;
    return TL_OK;
}

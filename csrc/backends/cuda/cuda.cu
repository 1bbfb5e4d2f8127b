/* The CUDA backend (and, compiled by hipcc with TL_HIP, the HIP backend): weights, activations
 * and KV caches in device memory; decode through fused dequantize-GEMV kernels that read each
 * weight once for every token of the batch; prefill through cuBLAS (hipBLAS, or where there is
 * none our own GEMM: gemm.cuh) on F16 tiles dequantized on the device; flash-decoding attention
 * over the F16/F32 cache. Ops queue work on the context's stream; the first failure is kept
 * and reported by the next download or sync. */
#include "gpu.h"

extern "C" {
#define restrict __restrict__ /* C11's keyword in the core's headers */
#include "backends/backend.h"
#include "core/dtype.h"
#include "core/fp16.h"
#include "core/status.h"
#undef restrict
}

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifndef TL_HIP
#include <mma.h> /* wmma: the tensor cores, for the prompt's attention */
#endif

/* Everything is in a namespace of the backend's own (the extern "C" entry points at the end keep
 * their names): a build with both CUDA and HIP links two compilations of this file into one
 * library. */
namespace GPU_NS {

#include "gemm.cuh"

/* ---------------------------------------------------------------- state */

typedef struct gpu_device {
    tl_device base;
    int dev;
} gpu_device;

/* forwards recorded per stream (decode shapes: tokens, rows, context bucket) */
#define GRAPHS 32

typedef struct gpu_stream {
    tl_stream base;
    int dev;
    gpuStream_t stream;
#if GPU_HAVE_BLAS
    gpublasHandle_t blas; /* NULL: our own GEMM (TORCHLESS_GPU_OWN_GEMM=1) */
#endif
    tl_status err;     /* the first failure since the last sync */
    char msg[256];
    /* prefill scratch: a tile of weight rows dequantized to F16, and the activations in F16 */
    __half *w_tile, *x_half;
    size_t w_tile_elems, x_half_elems;
    /* which rows x_half holds (as xq_src below: forgotten by every op but the matmuls), and
     * whether a GEMM has wanted them: then the norms and the GLU write it as they go */
    const float *xh_src;
    int64_t xh_n, xh_k;
    bool xh_used;
    float *part; /* attention: the splits' partial results */
    size_t part_floats;
    /* decode: the input rows quantized to 8 bits (gemv_q8.cuh), and which rows they are: the
     * pointer, shape and style last quantized, forgotten by every op but a matmul (which may read
     * the same rows again: q, k and v) */
    int8_t *xq[2]; /* by style: Q8_STYLE_0, Q8_STYLE_K */
    size_t xq_bytes;  /* each */
    const float *xq_src[2];
    int64_t xq_n[2], xq_k[2];
    bool xq_used; /* a matmul took the 8-bit path: the norms quantize their outputs too */
    float *mmq_ws;        /* mmq.cuh's split-K partial sums */
    size_t mmq_ws_floats;
    unsigned *mmq_counts; /* and its per-tile arrival counters (zero between calls) */
    int sms;     /* multiprocessors */
    int gemv;    /* TORCHLESS_GPU_GEMV=narrow|wide|narrow4|narrow1|narrow2: one GEMV kernel (to compare) */
    bool tc_attention; /* the prompt's attention on the tensor cores (TORCHLESS_GPU_TC_ATTENTION=0: not) */
    /* recorded forwards (CUDA graphs), by the caller's key */
    struct {
        uint64_t key;
        gpuGraphExec_t exec;
    } graphs[GRAPHS];
    int n_graphs;
    uint64_t capturing;
    /* top_k: the chunks' stats and keys, the ids, the rows' results; those downloaded */
    uint8_t *topk, *topk_host;
    size_t topk_bytes, topk_host_bytes;
} gpu_stream;

/* rows of a weight dequantized per cuBLAS call in prefill */
#define TILE_ROWS 4096
/* batches of up to this many tokens go through the GEMV kernels (weights read once) */
#define GEMV_MAX_TOKENS 8
/* mmq.cuh's workspace: partial sums (floats) and row tiles that may be split */
#define MMQ_WS_FLOATS (4 << 20)
#define MMQ_COUNTS 4096

static void forget_graphs(gpu_stream *s);

/* Every op but the matmuls may write the rows last quantized: it forgets them. */
static gpu_stream *op_begin(tl_stream *ts) {
    gpu_stream *s = (gpu_stream *)ts;
    s->xq_src[0] = s->xq_src[1] = NULL;
    s->xh_src = NULL;
    return s;
}

static tl_status fail(gpuError_t e, const char *what) {
    return tl_set_error(TL_ERR_DEVICE, GPU_BACKEND ": %s: %s", what, gpuGetErrorString(e));
}

/* Keeps the first failure of a stream's queued work, to report at the next sync. */
static void note(gpu_stream *s, gpuError_t e, const char *what) {
    if (e == gpuSuccess || s->err) return;
    s->err = TL_ERR_DEVICE;
    snprintf(s->msg, sizeof s->msg, GPU_BACKEND ": %s: %s", what, gpuGetErrorString(e));
}

#if GPU_HAVE_BLAS
static void note_blas(gpu_stream *s, gpublasStatus_t st, const char *what) {
    if (st == GPUBLAS_STATUS_SUCCESS || s->err) return;
    s->err = TL_ERR_DEVICE;
    snprintf(s->msg, sizeof s->msg, GPU_BACKEND ": %s: BLAS status %d", what, (int)st);
}
#endif

#define LAUNCHED(s, what) note((s), gpuGetLastError(), (what))

static int blocks_for(int64_t n, int threads) { return (int)((n + threads - 1) / threads); }

/* ---------------------------------------------------------------- weights on the device */

/* The dtypes with kernels of their own; the others are converted to F16 at upload. */
static bool native_dtype(tl_dtype t) {
    switch (t) {
    case TL_F32: case TL_F16: case TL_BF16: case TL_Q4_0: case TL_Q4_1: case TL_Q5_0: case TL_Q5_1: case TL_Q8_0:
    case TL_Q4_K: case TL_Q5_K: case TL_Q6_K: return true;
    default: return false;
    }
}

/* Layouts on the device. F32/F16/BF16 and Q4_K/Q5_K (144- and 176-byte blocks, multiples of
 * 16) keep GGUF's rows. The others are split at upload into arrays of like fields, so that a
 * lane's loads are aligned and a warp's are contiguous (block b = row * nb + block in row):
 *   Q4_0  qs[b][16]  d[b]            Q4_1  qs[b][16]  dm[b] (d, m)
 *   Q5_0  qs[b][16]  qh[b] d[b]      Q5_1  qs[b][16]  qh[b] dm[b]
 *   Q8_0  qs[b][32]  d[b]            Q6_K  ql[b][128] qh[b][64] sc[b][16] d[b]
 * each array starting on a 256-byte boundary. */
typedef struct gw {
    const uint8_t *p;
    int64_t m, nb; /* rows, blocks per row */
} gw;

static __host__ __device__ __forceinline__ size_t align256(size_t n) { return (n + 255) & ~(size_t)255; }

/* The split layouts' fields in array order: bytes per block, and where the field sits in GGUF's
 * block (0 bytes: no such field; the host's repack and the kernels' reads share this one table) */
__host__ __device__ constexpr int field_size(int dt, int f) {
    switch (dt) {
    case TL_Q4_0: return f == 0 ? 16 : f == 1 ? 2 : 0;                              /* qs, d */
    case TL_Q4_1: return f == 0 ? 16 : f == 1 ? 4 : 0;                              /* qs, (d, m) */
    case TL_Q5_0: return f == 0 ? 16 : f == 1 ? 4 : f == 2 ? 2 : 0;                /* qs, qh, d */
    case TL_Q5_1: return f == 0 ? 16 : f == 1 || f == 2 ? 4 : 0;                   /* qs, qh, (d, m) */
    case TL_Q8_0: return f == 0 ? 32 : f == 1 ? 2 : 0;                              /* qs, d */
    case TL_Q6_K: return f == 0 ? 128 : f == 1 ? 64 : f == 2 ? 16 : f == 3 ? 2 : 0; /* ql, qh, sc, d */
    default: return 0;
    }
}

static int gguf_offset(tl_dtype t, int f) {
    switch (t) {
    case TL_Q4_0: case TL_Q8_0: return f == 0 ? 2 : 0;
    case TL_Q4_1: return f == 0 ? 4 : 0;
    case TL_Q5_0: return f == 0 ? 6 : f == 1 ? 2 : 0;
    case TL_Q5_1: return f == 0 ? 8 : f == 1 ? 4 : 0;
    case TL_Q6_K: return f == 0 ? 0 : f == 1 ? 128 : f == 2 ? 192 : 208;
    default: return 0;
    }
}

static bool split_layout(tl_dtype t) { return field_size(t, 0) != 0; }

/* bytes of the split layout of `blocks` blocks */
static size_t split_bytes(tl_dtype t, size_t blocks) {
    size_t total = 0;
    for (int f = 0; field_size(t, f); f++) total += align256(blocks * (size_t)field_size(t, f));
    return total;
}

/* field f of block b of a split tensor */
template <int DT> __device__ __forceinline__ const uint8_t *field(gw w, int f, int64_t b) {
    const size_t blocks = (size_t)(w.m * w.nb);
    size_t off = 0;
#pragma unroll
    for (int i = 0; i < 4; i++)
        if (i < f) off += align256(blocks * field_size(DT, i));
    return w.p + off + (size_t)b * field_size(DT, f);
}

__device__ __forceinline__ float h2f(const uint8_t *p) { return __half2float(*(const __half *)p); }

/* a Q4_0/Q4_1/Q5_0/Q5_1 block's scale d and offset m (-8d, -16d for the formats without one) */
template <int DT> __device__ __forceinline__ void legacy_dm(gw w, int64_t b, float *d, float *m) {
    if (DT == TL_Q4_0 || DT == TL_Q5_0) {
        *d = h2f(field<DT>(w, DT == TL_Q4_0 ? 1 : 2, b));
        *m = (DT == TL_Q4_0 ? -8.0f : -16.0f) * *d;
    } else {
        const float2 dm = __half22float2(*(const __half2 *)field<DT>(w, DT == TL_Q4_1 ? 1 : 2, b));
        *d = dm.x, *m = dm.y;
    }
}

/* 6-bit scale and min j of a Q4_K/Q5_K block (ggml's get_scale_min_k4), the 12 scale bytes held
 * as three words: byte i is byte i % 4 of word i / 4. Byte j % 4 of each word, by shifts: an
 * array of the words indexed by a j known only at run time went to local memory. */
__device__ __forceinline__ void scale_min_words(int j, uint32_t w0, uint32_t w1, uint32_t w2, int *sc, int *m) {
    const int at = 8 * (j & 3);
    const int b0 = (int)((w0 >> at) & 0xFF), b1 = (int)((w1 >> at) & 0xFF), b2 = (int)((w2 >> at) & 0xFF);
    if (j < 4) {
        *sc = b0 & 63;
        *m = b1 & 63;
    } else {
        *sc = (b2 & 0xF) | ((b0 >> 6) << 4);
        *m = (b2 >> 4) | ((b1 >> 6) << 4);
    }
}

/* sub-blocks 2p and 2p + 1 of a Q4_K/Q5_K block: (d·scale, dmin·min) of each, from one 16-byte
 * load of the block's header (d, dmin, the 12 scale bytes) */
__device__ __forceinline__ float4 k4_pair_scales(const uint8_t *blk, int p) {
    const uint4 hdr = *(const uint4 *)blk;
    int sc0, m0, sc1, m1;
    scale_min_words(2 * p, hdr.y, hdr.z, hdr.w, &sc0, &m0);
    scale_min_words(2 * p + 1, hdr.y, hdr.z, hdr.w, &sc1, &m1);
    const float2 dd = __half22float2(*(const __half2 *)&hdr.x);
    return make_float4(dd.x * (float)sc0, dd.y * (float)m0, dd.x * (float)sc1, dd.y * (float)m1);
}

/* The four bytes of b as floats, each minus `bias`: a byte placed in the mantissa of 2^23
 * (0x4B0000bb = 8388608 + bb) less 8388608 + bias is bb - bias exactly. One byte permute and one
 * add per element, at full rate, where an int-to-float conversion runs at a quarter of it. */
__device__ __forceinline__ void bytes_to_floats(uint32_t b, float bias, float out[4]) {
    const float off = 8388608.0f + bias;
    out[0] = __int_as_float((int)__byte_perm(b, 0x4B000000u, 0x7650)) - off;
    out[1] = __int_as_float((int)__byte_perm(b, 0x4B000000u, 0x7651)) - off;
    out[2] = __int_as_float((int)__byte_perm(b, 0x4B000000u, 0x7652)) - off;
    out[3] = __int_as_float((int)__byte_perm(b, 0x4B000000u, 0x7653)) - off;
}

/* bit i of h (i = 0..3 from `first`) into bit 4 of byte i */
__device__ __forceinline__ uint32_t spread4_bit4(uint32_t h, int first) {
    const uint32_t b = h >> first;
    return ((b & 1) << 4) | ((b & 2) << 11) | ((b & 4) << 18) | ((b & 8) << 25);
}

/* bytes of a GGUF-layout row */
template <int DT> __device__ __forceinline__ size_t gguf_row_bytes(int64_t nb) {
    return (size_t)nb * (DT == TL_F32 ? 128 : DT == TL_F16 || DT == TL_BF16 ? 64 : DT == TL_Q4_K ? 144 : 176);
}

/* Eight elements of row r in the 256-element chunk c, the ones lane `lane` reads: v[0..3] are
 * elements e0..e0+3 and v[4..7] are e1..e1+3 of the row. A warp's 32 lanes cover the chunk, each
 * with aligned loads of 4 to 16 bytes, together contiguous. nb counts blocks of the dtype
 * (32 elements; 256 for the K-quants). */
template <int DT>
__device__ __forceinline__ void load8(gw w, int64_t r, int64_t c, int lane, float v[8], int64_t *e0, int64_t *e1) {
    if (DT == TL_F32 || DT == TL_F16 || DT == TL_BF16) {
        *e0 = c * 256 + lane * 8;
        *e1 = *e0 + 4;
        const uint8_t *row = w.p + (size_t)r * gguf_row_bytes<DT>(w.nb);
        if (DT == TL_F32) {
            const float4 a = *(const float4 *)(row + *e0 * 4), b = *(const float4 *)(row + *e0 * 4 + 16);
            v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
        } else {
            const uint4 q = *(const uint4 *)(row + *e0 * 2);
            const uint32_t u[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
            for (int i = 0; i < 4; i++) {
                if (DT == TL_F16) {
                    const float2 f = __half22float2(*(const __half2 *)&u[i]);
                    v[2 * i] = f.x, v[2 * i + 1] = f.y;
                } else {
                    v[2 * i] = __uint_as_float(u[i] << 16), v[2 * i + 1] = __uint_as_float(u[i] & 0xFFFF0000u);
                }
            }
        }
    } else if (DT == TL_Q4_0 || DT == TL_Q4_1 || DT == TL_Q5_0 || DT == TL_Q5_1) {
        /* 4 lanes a block: qs bytes j..j+3 hold elements j.. (low nibbles) and j+16.. (high) */
        const int64_t b = r * w.nb + c * 8 + lane / 4;
        const int j = (lane & 3) * 4;
        *e0 = (c * 8 + lane / 4) * 32 + j;
        *e1 = *e0 + 16;
        const uint32_t q = *(const uint32_t *)(field<DT>(w, 0, b) + j);
        float d, m;
        legacy_dm<DT>(w, b, &d, &m);
        uint32_t lo = q & 0x0F0F0F0Fu, hi = (q >> 4) & 0x0F0F0F0Fu;
        if (DT == TL_Q5_0 || DT == TL_Q5_1) {
            const uint32_t h = *(const uint32_t *)field<DT>(w, 1, b);
            lo |= spread4_bit4(h, j);
            hi |= spread4_bit4(h, j + 16);
        }
        float fl[4], fh[4];
        bytes_to_floats(lo, 0.0f, fl);
        bytes_to_floats(hi, 0.0f, fh);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            v[i] = fl[i] * d + m;
            v[4 + i] = fh[i] * d + m;
        }
    } else if (DT == TL_Q8_0) {
        const int64_t b = r * w.nb + c * 8 + lane / 4;
        const int j = (lane & 3) * 8;
        *e0 = (c * 8 + lane / 4) * 32 + j;
        *e1 = *e0 + 4;
        const uint2 q = *(const uint2 *)(field<DT>(w, 0, b) + j);
        const float d = h2f(field<DT>(w, 1, b));
        /* signed bytes: flipping the top bit gives q + 128 */
        float f0[4], f1[4];
        bytes_to_floats(q.x ^ 0x80808080u, 128.0f, f0);
        bytes_to_floats(q.y ^ 0x80808080u, 128.0f, f1);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            v[i] = f0[i] * d;
            v[4 + i] = f1[i] * d;
        }
    } else if (DT == TL_Q4_K || DT == TL_Q5_K) {
        /* 8 lanes a pair of sub-blocks p: qs bytes 32p + l.. hold sub-block 2p (low) and 2p+1 (high) */
        const uint8_t *blk = w.p + (size_t)(r * w.nb + c) * (DT == TL_Q4_K ? 144 : 176);
        const int p = lane / 8, l = (lane & 7) * 4;
        *e0 = c * 256 + 64 * p + l;
        *e1 = *e0 + 32;
        const uint32_t q = *(const uint32_t *)(blk + (DT == TL_Q4_K ? 16 : 48) + 32 * p + l);
        const float4 ab = k4_pair_scales(blk, p);
        const float d0 = ab.x, n0 = ab.y, d1 = ab.z, n1 = ab.w;
        uint32_t lo = q & 0x0F0F0F0Fu, hi = (q >> 4) & 0x0F0F0F0Fu;
        if (DT == TL_Q5_K) {
            const uint32_t hb = *(const uint32_t *)(blk + 16 + l);
            lo |= ((hb >> (2 * p)) & 0x01010101u) << 4;
            hi |= ((hb >> (2 * p + 1)) & 0x01010101u) << 4;
        }
        float fl[4], fh[4];
        bytes_to_floats(lo, 0.0f, fl);
        bytes_to_floats(hi, 0.0f, fh);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            v[i] = d0 * fl[i] - n0;
            v[4 + i] = d1 * fh[i] - n1;
        }
    } else if (DT == TL_Q6_K) {
        /* half h of the block, part a (and a + 2): ql bytes 64h + 32a + l.. (low and high
         * nibbles), two high bits each from qh bytes 32h + l.. */
        const int64_t b = r * w.nb + c;
        const int h = lane / 16, a = (lane / 8) & 1, l = (lane & 7) * 4;
        *e0 = c * 256 + 128 * h + 32 * a + l;
        *e1 = *e0 + 64;
        const uint32_t q = *(const uint32_t *)(field<DT>(w, 0, b) + 64 * h + 32 * a + l);
        const uint32_t hb = *(const uint32_t *)(field<DT>(w, 1, b) + 32 * h + l);
        const int8_t *sc = (const int8_t *)field<DT>(w, 2, b) + 8 * h;
        const float d = h2f(field<DT>(w, 3, b));
        const float d0 = d * (float)sc[2 * a + (l >= 16)], d1 = d * (float)sc[2 * (a + 2) + (l >= 16)];
        const uint32_t lo = (q & 0x0F0F0F0Fu) | ((hb >> (2 * a)) & 0x03030303u) << 4;
        const uint32_t hi = ((q >> 4) & 0x0F0F0F0Fu) | ((hb >> (2 * (a + 2))) & 0x03030303u) << 4;
        float fl[4], fh[4];
        bytes_to_floats(lo, 32.0f, fl);
        bytes_to_floats(hi, 32.0f, fh);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            v[i] = d0 * fl[i];
            v[4 + i] = d1 * fh[i];
        }
    }
}

/* Elements [32u, 32u + 32) of row r into v (any length that is a multiple of 32): through
 * load8 for the dtypes whose chunks are 256 wide, one 32-block at a time otherwise. */
template <int DT> __device__ __forceinline__ void decode32(gw w, int64_t r, int64_t u, float v[32]) {
    if (DT == TL_Q4_K || DT == TL_Q5_K || DT == TL_Q6_K) {
        /* sub-block u % 8 of block u / 8: the four lanes of load8 that cover it */
        for (int i = 0; i < 32; i++) v[i] = 0.0f;
        const int64_t c = u / 8;
        for (int lane = 0; lane < 32; lane++) {
            float t[8];
            int64_t e0, e1;
            load8<DT>(w, r, c, lane, t, &e0, &e1);
#pragma unroll
            for (int i = 0; i < 4; i++) {
                if (e0 / 32 == u) v[e0 % 32 + i] = t[i];
                if (e1 / 32 == u) v[e1 % 32 + i] = t[4 + i];
            }
        }
        return;
    }
    if (DT == TL_F32 || DT == TL_F16 || DT == TL_BF16) { /* rows of any multiple of 32 */
        const uint8_t *row = w.p + (size_t)r * w.nb * (DT == TL_F32 ? 128 : 64);
        for (int i = 0; i < 32; i++) {
            const int64_t e = u * 32 + i;
            v[i] = DT == TL_F32 ? ((const float *)row)[e]
                   : DT == TL_F16 ? __half2float(((const __half *)row)[e])
                                  : __uint_as_float((uint32_t)((const uint16_t *)row)[e] << 16);
        }
        return;
    }
    /* 32-blocks: the block's four lanes of its chunk */
    const int64_t c = u / 8;
    for (int q = 0; q < 4; q++) {
        float t[8];
        int64_t e0, e1;
        load8<DT>(w, r, c, (int)(u % 8) * 4 + q, t, &e0, &e1);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            v[e0 % 32 + i] = t[i];
            v[e1 % 32 + i] = t[4 + i];
        }
    }
}

/* ---------------------------------------------------------------- GEMV (decode) */

/* y[t][r] = W[r] . x[t] (+ bias[r]) for NT tokens and R rows per 32-lane group: each lane
 * decodes its 8 weights of a 256-wide chunk once and dots them with every token's x; the
 * groups of a block take consecutive rows. k a multiple of 256. */
template <int DT, int NT, int R>
__global__ void __launch_bounds__(128) gemv_kernel(gw w, const float *__restrict__ x, int64_t k, float *__restrict__ y,
                                                   const float *__restrict__ bias) {
    const int lane = threadIdx.x & 31;
    const int64_t r0 = ((int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32) * R;
    grid_wait();
    if (r0 >= w.m) return;
    float acc[R][NT];
#pragma unroll
    for (int i = 0; i < R; i++)
#pragma unroll
        for (int t = 0; t < NT; t++) acc[i][t] = 0.0f;
    const int64_t chunks = k / 256;
#pragma unroll 4
    for (int64_t c = 0; c < chunks; c++) {
        float v[R][8];
        int64_t e0 = 0, e1 = 0;
#pragma unroll
        for (int i = 0; i < R; i++) load8<DT>(w, r0 + i < w.m ? r0 + i : r0, c, lane, v[i], &e0, &e1);
#pragma unroll
        for (int t = 0; t < NT; t++) {
            const float4 a = __ldg((const float4 *)(x + (size_t)t * k + e0));
            const float4 b = __ldg((const float4 *)(x + (size_t)t * k + e1));
#pragma unroll
            for (int i = 0; i < R; i++)
                acc[i][t] += v[i][0] * a.x + v[i][1] * a.y + v[i][2] * a.z + v[i][3] * a.w + v[i][4] * b.x +
                             v[i][5] * b.y + v[i][6] * b.z + v[i][7] * b.w;
        }
    }
#pragma unroll
    for (int i = 0; i < R; i++)
#pragma unroll
        for (int t = 0; t < NT; t++) {
            float a = acc[i][t];
            for (int o = 16; o > 0; o >>= 1) a += SHFL_XOR(a, o);
            if (lane == 0 && r0 + i < w.m) y[(size_t)t * w.m + r0 + i] = a + (bias ? bias[r0 + i] : 0.0f);
        }
}

/* ---------------------------------------------------------------- GEMV, wide loads (quantized) */

/* Thirty-two elements of row r in 256-chunk c, the ones lane j of the chunk's 8 lanes reads with
 * 16-byte loads: v[0..15] are elements e0.. and v[16..31] are e1.. (two runs of 16). */
__device__ __forceinline__ void nibbles16(uint4 q, float d, float m, float lo[16], float hi[16]) {
    const uint32_t w[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
    for (int k = 0; k < 4; k++) {
        bytes_to_floats(w[k] & 0x0F0F0F0Fu, 0.0f, lo + 4 * k);
        bytes_to_floats((w[k] >> 4) & 0x0F0F0F0Fu, 0.0f, hi + 4 * k);
    }
#pragma unroll
    for (int i = 0; i < 16; i++) {
        lo[i] = lo[i] * d + m;
        hi[i] = hi[i] * d + m;
    }
}

template <int DT>
__device__ __forceinline__ void load32(gw w, int64_t r, int64_t c, int j, float v[32], int64_t *e0, int64_t *e1) {
    if (DT == TL_Q4_0 || DT == TL_Q4_1 || DT == TL_Q5_0 || DT == TL_Q5_1) {
        const int64_t blk = c * 8 + j, b = r * w.nb + blk;
        *e0 = blk * 32;
        *e1 = *e0 + 16;
        const uint4 q = *(const uint4 *)field<DT>(w, 0, b);
        float d, m;
        legacy_dm<DT>(w, b, &d, &m);
        if (DT == TL_Q4_0 || DT == TL_Q4_1) {
            nibbles16(q, d, m, v, v + 16);
        } else { /* the fifth bits: element i of the block is bit i of h */
            const uint32_t h = *(const uint32_t *)field<DT>(w, 1, b);
            const uint32_t qw[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
            for (int k = 0; k < 4; k++) {
                bytes_to_floats((qw[k] & 0x0F0F0F0Fu) | spread4_bit4(h, 4 * k), 0.0f, v + 4 * k);
                bytes_to_floats(((qw[k] >> 4) & 0x0F0F0F0Fu) | spread4_bit4(h, 16 + 4 * k), 0.0f, v + 16 + 4 * k);
            }
#pragma unroll
            for (int i = 0; i < 32; i++) v[i] = v[i] * d + m;
        }
    } else if (DT == TL_Q8_0) {
        const int64_t blk = c * 8 + j, b = r * w.nb + blk;
        *e0 = blk * 32;
        *e1 = *e0 + 16;
        const uint4 *p = (const uint4 *)field<DT>(w, 0, b);
        const uint4 q0 = p[0], q1 = p[1];
        const float d = h2f(field<DT>(w, 1, b));
        const uint32_t u[8] = {q0.x, q0.y, q0.z, q0.w, q1.x, q1.y, q1.z, q1.w};
#pragma unroll
        for (int k = 0; k < 8; k++) bytes_to_floats(u[k] ^ 0x80808080u, 128.0f, v + 4 * k);
#pragma unroll
        for (int i = 0; i < 32; i++) v[i] *= d;
    } else if (DT == TL_Q4_K || DT == TL_Q5_K) {
        /* pair p of sub-blocks, 16 bytes of its 32 (sub-block 2p in the low nibbles, 2p+1 in the high) */
        const uint8_t *blk = w.p + (size_t)(r * w.nb + c) * (DT == TL_Q4_K ? 144 : 176);
        const int p = j / 2, l = (j & 1) * 16;
        *e0 = c * 256 + 64 * p + l;
        *e1 = *e0 + 32;
        const uint4 q = *(const uint4 *)(blk + (DT == TL_Q4_K ? 16 : 48) + 32 * p + l);
        const float4 ab = k4_pair_scales(blk, p);
        const float d0 = ab.x, n0 = ab.y, d1 = ab.z, n1 = ab.w;
        const uint32_t qw[4] = {q.x, q.y, q.z, q.w};
        uint32_t hw[4] = {0, 0, 0, 0};
        if (DT == TL_Q5_K) {
            const uint4 h = *(const uint4 *)(blk + 16 + l);
            hw[0] = h.x, hw[1] = h.y, hw[2] = h.z, hw[3] = h.w;
        }
#pragma unroll
        for (int k = 0; k < 4; k++) {
            uint32_t lo = qw[k] & 0x0F0F0F0Fu, hi = (qw[k] >> 4) & 0x0F0F0F0Fu;
            if (DT == TL_Q5_K) {
                lo |= ((hw[k] >> (2 * p)) & 0x01010101u) << 4;
                hi |= ((hw[k] >> (2 * p + 1)) & 0x01010101u) << 4;
            }
            bytes_to_floats(lo, 0.0f, v + 4 * k);
            bytes_to_floats(hi, 0.0f, v + 16 + 4 * k);
        }
#pragma unroll
        for (int i = 0; i < 16; i++) {
            v[i] = d0 * v[i] - n0;
            v[16 + i] = d1 * v[16 + i] - n1;
        }
    } else if (DT == TL_Q6_K) {
        /* half h, part a (and a + 2), 16 of the 32 bytes: ql 64h + 32a + l.., qh 32h + l.. */
        const int64_t b = r * w.nb + c;
        const int h = j / 4, a = (j / 2) & 1, l = (j & 1) * 16;
        *e0 = c * 256 + 128 * h + 32 * a + l;
        *e1 = *e0 + 64;
        const uint4 q = *(const uint4 *)(field<DT>(w, 0, b) + 64 * h + 32 * a + l);
        const uint4 hq = *(const uint4 *)(field<DT>(w, 1, b) + 32 * h + l);
        const int8_t *sc = (const int8_t *)field<DT>(w, 2, b) + 8 * h;
        const float d = h2f(field<DT>(w, 3, b));
        const float d0 = d * (float)sc[2 * a + l / 16], d1 = d * (float)sc[2 * (a + 2) + l / 16];
        const uint32_t qw[4] = {q.x, q.y, q.z, q.w}, hw[4] = {hq.x, hq.y, hq.z, hq.w};
#pragma unroll
        for (int k = 0; k < 4; k++) {
            bytes_to_floats((qw[k] & 0x0F0F0F0Fu) | ((hw[k] >> (2 * a)) & 0x03030303u) << 4, 32.0f, v + 4 * k);
            bytes_to_floats(((qw[k] >> 4) & 0x0F0F0F0Fu) | ((hw[k] >> (2 * (a + 2))) & 0x03030303u) << 4, 32.0f,
                            v + 16 + 4 * k);
        }
#pragma unroll
        for (int i = 0; i < 16; i++) {
            v[i] *= d0;
            v[16 + i] *= d1;
        }
    }
}

__device__ __forceinline__ float dot16(const float *v, const float *x) {
    const float4 *x4 = (const float4 *)x;
    float a = 0.0f;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const float4 f = __ldg(x4 + i);
        a += v[4 * i] * f.x + v[4 * i + 1] * f.y + v[4 * i + 2] * f.z + v[4 * i + 3] * f.w;
    }
    return a;
}

/* y[t][r] = W[r] . x[t] (+ bias[r]) with 16-byte weight loads: 8 lanes a 256-chunk, 4 chunks a
 * group of 32 lanes, R rows a group; k a multiple of 256 (a group's last step may be partial). */
template <int DT, int NT, int R>
__global__ void __launch_bounds__(128) gemv_wide_kernel(gw w, const float *__restrict__ x, int64_t k,
                                                        float *__restrict__ y, const float *__restrict__ bias) {
    const int lane = threadIdx.x & 31;
    const int64_t r0 = ((int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32) * R;
    grid_wait();
    if (r0 >= w.m) return;
    float acc[R][NT];
#pragma unroll
    for (int i = 0; i < R; i++)
#pragma unroll
        for (int t = 0; t < NT; t++) acc[i][t] = 0.0f;
    const int64_t chunks = k / 256;
#pragma unroll 2
    for (int64_t c = lane / 8; c < chunks; c += 4) {
#pragma unroll
        for (int i = 0; i < R; i++) {
            float v[32];
            int64_t e0, e1;
            load32<DT>(w, r0 + i < w.m ? r0 + i : r0, c, lane & 7, v, &e0, &e1);
#pragma unroll
            for (int t = 0; t < NT; t++)
                acc[i][t] += dot16(v, x + (size_t)t * k + e0) + dot16(v + 16, x + (size_t)t * k + e1);
        }
    }
#pragma unroll
    for (int i = 0; i < R; i++)
#pragma unroll
        for (int t = 0; t < NT; t++) {
            float a = acc[i][t];
            for (int o = 16; o > 0; o >>= 1) a += SHFL_XOR(a, o);
            if (lane == 0 && r0 + i < w.m) y[(size_t)t * w.m + r0 + i] = a + (bias ? bias[r0 + i] : 0.0f);
        }
}

/* The same for rows whose length is a multiple of 32 but not of 256: a lane per 32-block. */
template <int DT>
__global__ void gemv32_kernel(gw w, const float *__restrict__ x, int64_t k, int64_t n, float *__restrict__ y,
                              const float *__restrict__ bias) {
    grid_wait();
    const int lane = threadIdx.x & 31;
    const int64_t r = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (r >= w.m) return;
    for (int64_t t = 0; t < n; t++) {
        float a = 0.0f;
        for (int64_t u = lane; u < k / 32; u += 32) {
            float v[32];
            decode32<DT>(w, r, u, v);
            for (int i = 0; i < 32; i++) a += v[i] * x[t * k + u * 32 + i];
        }
        for (int o = 16; o > 0; o >>= 1) a += SHFL_XOR(a, o);
        if (lane == 0) y[t * w.m + r] = a + (bias ? bias[r] : 0.0f);
    }
}

/* F32/F16/BF16 rows whose length is not a multiple of 32: element by element. */
__global__ void gemv_float_any(const uint8_t *__restrict__ w, int dt, size_t row_bytes, const float *__restrict__ x,
                               int64_t k, int64_t m, int64_t n, float *__restrict__ y, const float *__restrict__ bias) {
    grid_wait();
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

/* out[r - r0][...] = rows [r0, r0 + rows) of W in F16: a lane per 8 elements (k a multiple of 256) */
template <int DT>
__global__ void dequant_kernel(gw w, int64_t k, int64_t r0, int64_t rows, __half *__restrict__ out) {
    grid_wait();
    const int64_t chunks = k / 256, g = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    const int lane = threadIdx.x & 31;
    if (g >= rows * chunks) return;
    const int64_t r = g / chunks, c = g % chunks;
    float v[8];
    int64_t e0, e1;
    load8<DT>(w, r0 + r, c, lane, v, &e0, &e1);
    __half2 *o0 = (__half2 *)(out + r * k + e0), *o1 = (__half2 *)(out + r * k + e1);
    o0[0] = __floats2half2_rn(v[0], v[1]), o0[1] = __floats2half2_rn(v[2], v[3]);
    o1[0] = __floats2half2_rn(v[4], v[5]), o1[1] = __floats2half2_rn(v[6], v[7]);
}

/* the same a 32-block per thread, for rows that are not a multiple of 256 */
template <int DT>
__global__ void dequant32_kernel(gw w, int64_t k, int64_t r0, int64_t rows, __half *__restrict__ out) {
    grid_wait();
    const int64_t units = k / 32, i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows * units) return;
    const int64_t r = i / units, u = i % units;
    float v[32];
    decode32<DT>(w, r0 + r, u, v);
    for (int j = 0; j < 32; j++) out[r * k + u * 32 + j] = __float2half(v[j]);
}

/* rows of a table picked by ids: out[i] = table[ids[i]] * scale (embeddings), k a multiple of 32 */
template <int DT>
__global__ void embed_kernel(gw w, int64_t k, const int32_t *__restrict__ ids, int32_t n, float scale,
                             float *__restrict__ out) {
    grid_wait();
    const int64_t units = k / 32, i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (int64_t)n * units) return;
    const int64_t t = i / units, u = i % units;
    float v[32];
    decode32<DT>(w, ids[t], u, v);
    float *o = out + t * k + u * 32;
#pragma unroll
    for (int j = 0; j < 32; j++) o[j] = v[j] * scale;
}

__global__ void embed_float_any(const uint8_t *__restrict__ w, int dt, size_t row_bytes, int64_t k,
                                const int32_t *__restrict__ ids, int32_t n, float scale, float *__restrict__ out) {
    grid_wait();
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

#if GPU_HAVE_BLAS
/* the activations for the vendor's F16 GEMM: out = x as F16, four elements a thread (n a
 * multiple of 4: the GEMMs' n x k) */
__global__ void to_half_kernel(const float *__restrict__ x, int64_t n, __half *__restrict__ out) {
    grid_wait();
    const int64_t i = 4 * ((int64_t)blockIdx.x * blockDim.x + threadIdx.x);
    if (i >= n) return;
    const float4 v = *(const float4 *)(x + i);
    __half2 h[2] = {__floats2half2_rn(v.x, v.y), __floats2half2_rn(v.z, v.w)};
    *(uint2 *)(out + i) = *(const uint2 *)h;
}
#endif

__global__ void add_bias_kernel(float *__restrict__ y, const float *__restrict__ bias, int64_t n, int64_t m) {
    grid_wait();
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n * m) y[i] += bias[i % m];
}

/* ---------------------------------------------------------------- GEMV on 8-bit activations */

__device__ __forceinline__ float act_of(int gelu, float z) {
    return gelu ? 0.5f * z * (1.0f + tanhf(0.79788456080286535588f * z * (1.0f + 0.044715f * z * z)))
                : z / (1.0f + expf(-z));
}

#include "gemv_q8.cuh"
#include "mmq.cuh"

/* the most tokens a matmul takes on 8-bit activations (the GEMVs', or mmq's where it is built) */
#define Q8_MAX_TOKENS (MMQ_MAX_TOKENS > GEMV_MAX_TOKENS ? MMQ_MAX_TOKENS : GEMV_MAX_TOKENS)

/* ---------------------------------------------------------------- small ops */

/* the sum of v over the block (every thread gets it; at most 1024 threads) */
__device__ __forceinline__ float block_sum(float v) {
    __shared__ float part[32];
    for (int off = 16; off > 0; off >>= 1) v += SHFL_XOR(v, off);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x / 32] = v;
    __syncthreads();
    if (threadIdx.x < 32) {
        v = threadIdx.x < blockDim.x / 32 ? part[threadIdx.x] : 0.0f;
        for (int off = 16; off > 0; off >>= 1) v += SHFL_XOR(v, off);
        if (threadIdx.x == 0) part[0] = v;
    }
    __syncthreads();
    return part[0];
}

/* one block per row; the sum of squares in float, reduced across the block */
__global__ void rmsnorm_kernel(float *out, const float *x, const float *__restrict__ w, int64_t dim, float eps, int8_t *q0,
                               int8_t *qk, size_t xs) {
    grid_wait();
    const float *xr = x + (size_t)blockIdx.x * dim;
    float *o = out + (size_t)blockIdx.x * dim;
    float ss = 0.0f;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) ss += xr[i] * xr[i];
    const float scale = rsqrtf(block_sum(ss) / (float)dim + eps);
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) o[i] = xr[i] * scale * w[i];
    if (q0 || qk) q8_row_both(o, dim, q0 ? q0 + blockIdx.x * xs : NULL, qk ? qk + blockIdx.x * xs : NULL);
}

__global__ void rope_kernel(float *x, const float *__restrict__ cs, int32_t n, int32_t heads, int32_t hd, int32_t rope_dim,
                            bool neox) {
    grid_wait();
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
    grid_wait();
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
    grid_wait();
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] += y[i];
}

/* a = act(a) * b, and the same as F16 into ah where given (the next GEMM's input) */
__global__ void glu_kernel(int gelu, float *a, const float *__restrict__ b, int64_t n, __half *ah) {
    grid_wait();
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float z = a[i];
    float g;
    if (gelu) g = 0.5f * z * (1.0f + tanhf(0.79788456080286535588f * z * (1.0f + 0.044715f * z * z)));
    else g = z / (1.0f + expf(-z));
    const float r = g * b[i];
    a[i] = r;
    if (ah) ah[i] = __float2half(r);
}

__global__ void softcap_kernel(float *x, int64_t n, float c) {
    grid_wait();
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = c * tanhf(x[i] / c);
}

__global__ void gather_kernel(float *out, const float *x, const int32_t *__restrict__ rows, int32_t n, int64_t dim) {
    grid_wait();
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < (int64_t)n * dim) out[i] = x[(size_t)rows[i / dim] * dim + i % dim];
}

#include "sample.cuh"

/* ---------------------------------------------------------------- fused ops */

/* RMSNorm of one row a block for widths of a multiple of 256 up to 8192, 8 consecutive elements
 * a thread (a warp holds 256), the row kept in registers: with ADD, x += y first (out may be y:
 * each thread reads its elements of y before it writes them). The quantized forms for the next
 * matmuls (q0, qk; NULL: not wanted) come from the registers too: a Q8_0 block is 4 lanes, a
 * Q8_K block a warp. The 8-element loads made this 3x faster than a thread per element with the
 * quantizing done after a pass through memory (ncu, 4096 wide). */
template <bool ADD>
__global__ void norm8_kernel(float *x, const float *y, float *out, const float *__restrict__ w, int64_t dim, float eps,
                             int8_t *q0, int8_t *qk, size_t xs, __half *oh) {
    grid_wait();
    const int lane = threadIdx.x & 31;
    const int64_t row = blockIdx.x, e = 8 * (int64_t)threadIdx.x;
    float *xr = x + row * dim + e;
    float v[8];
    const float4 a0 = *(const float4 *)xr, a1 = *(const float4 *)(xr + 4);
    v[0] = a0.x, v[1] = a0.y, v[2] = a0.z, v[3] = a0.w, v[4] = a1.x, v[5] = a1.y, v[6] = a1.z, v[7] = a1.w;
    if (ADD) {
        const float *yr = y + row * dim + e;
        const float4 b0 = *(const float4 *)yr, b1 = *(const float4 *)(yr + 4);
        v[0] += b0.x, v[1] += b0.y, v[2] += b0.z, v[3] += b0.w, v[4] += b1.x, v[5] += b1.y, v[6] += b1.z, v[7] += b1.w;
        *(float4 *)xr = make_float4(v[0], v[1], v[2], v[3]);
        *(float4 *)(xr + 4) = make_float4(v[4], v[5], v[6], v[7]);
    }
    float ss = 0.0f;
#pragma unroll
    for (int i = 0; i < 8; i++) ss += v[i] * v[i];
    const float scale = rsqrtf(block_sum(ss) / (float)dim + eps);
    const float4 w0 = *(const float4 *)(w + e), w1 = *(const float4 *)(w + e + 4);
    const float wv[8] = {w0.x, w0.y, w0.z, w0.w, w1.x, w1.y, w1.z, w1.w};
#pragma unroll
    for (int i = 0; i < 8; i++) v[i] = v[i] * scale * wv[i];
    float *o = out + row * dim + e;
    *(float4 *)o = make_float4(v[0], v[1], v[2], v[3]);
    *(float4 *)(o + 4) = make_float4(v[4], v[5], v[6], v[7]);
    if (oh) { /* the row in F16 too, for the GEMMs that read it */
        __half2 h[4];
#pragma unroll
        for (int i = 0; i < 4; i++) h[i] = __floats2half2_rn(v[2 * i], v[2 * i + 1]);
        *(uint4 *)(oh + row * dim + e) = *(const uint4 *)h;
    }
    if (q0) { /* Q8_0: this lane's 8 of a 32-block, its 4 lanes reduced together (q8_0_block's arithmetic) */
        float amax = 0.0f;
#pragma unroll
        for (int i = 0; i < 8; i++) amax = fmaxf(amax, fabsf(v[i]));
        amax = fmaxf(amax, SHFL_XOR(amax, 1));
        amax = fmaxf(amax, SHFL_XOR(amax, 2));
        const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        int c[8], sum = 0;
#pragma unroll
        for (int i = 0; i < 8; i++) {
            const float z = v[i] * id;
            c[i] = !(z == z) ? 0 : z <= -127.0f ? -127 : z >= 127.0f ? 127 : (int)roundf(z);
            sum += c[i];
        }
        sum += SHFL_XOR(sum, 1);
        sum += SHFL_XOR(sum, 2);
        int8_t *qr = q0 + row * xs;
        uint2 packed;
        packed.x = (uint32_t)(c[0] & 255) | (uint32_t)(c[1] & 255) << 8 | (uint32_t)(c[2] & 255) << 16 | (uint32_t)(c[3] & 255) << 24;
        packed.y = (uint32_t)(c[4] & 255) | (uint32_t)(c[5] & 255) << 8 | (uint32_t)(c[6] & 255) << 16 | (uint32_t)(c[7] & 255) << 24;
        *(uint2 *)(qr + e) = packed;
        if ((lane & 3) == 0) {
            const float dx = __half2float(__float2half_rn(d));
            float *ds = (float *)(qr + dim) + 2 * (e / 32);
            ds[0] = dx, ds[1] = dx * (float)sum;
        }
    }
    if (qk) q8_K_block(v, lane, qk + row * xs + (e / 256) * 256, (float *)(qk + row * xs + dim) + 16 * (e / 256));
}

/* x += y, then out = rmsnorm(x) * w: one block per row (out may be y: each element of y is
 * read before its row is written) */
__global__ void add_rmsnorm_kernel(float *x, const float *y, float *out, const float *__restrict__ w, int64_t dim, float eps,
                                   int8_t *q0, int8_t *qk, size_t xs) {
    grid_wait();
    float *xr = x + (size_t)blockIdx.x * dim;
    const float *yr = y + (size_t)blockIdx.x * dim;
    float ss = 0.0f;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
        const float v = xr[i] + yr[i];
        xr[i] = v;
        ss += v * v;
    }
    const float scale = rsqrtf(block_sum(ss) / (float)dim + eps);
    float *o = out + (size_t)blockIdx.x * dim;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) o[i] = xr[i] * scale * w[i];
    if (q0 || qk) q8_row_both(o, dim, q0 ? q0 + blockIdx.x * xs : NULL, qk ? qk + blockIdx.x * xs : NULL);
}

/* A warp per (token, head), four to a block (a block each was ~3x slower for a 512-token prompt:
 * blocks of 64 busy threads): query heads are rotated; key heads are rotated and then stored
 * with their value rows into the caches. */
__global__ void rope_store_kernel(float *q, float *k, const float *__restrict__ v, const float *__restrict__ cs, int32_t n,
                                  int32_t n_heads, int32_t kv_heads, int32_t hd, int32_t rope_dim, bool neox, void *kc,
                                  void *vc, int f16, const int32_t *__restrict__ pos, const int32_t *__restrict__ seq,
                                  int32_t max_seq_len) {
    grid_wait();
    const int64_t item = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (item >= (int64_t)n * (n_heads + kv_heads)) return;
    const int lane = threadIdx.x & 31;
    const int t = (int)(item / (n_heads + kv_heads)), hh = (int)(item % (n_heads + kv_heads));
    const bool is_q = hh < n_heads;
    float *x = is_q ? q + ((size_t)t * n_heads + hh) * hd : k + ((size_t)t * kv_heads + (hh - n_heads)) * hd;
    const int h = hh - n_heads;
    const size_t at = is_q ? 0 : (((size_t)seq[t] * kv_heads + h) * max_seq_len + pos[t]) * hd;
    /* a lane stores the keys it rotated (no lane reads another's) */
    const int half = rope_dim / 2;
    for (int p = lane; p < half; p += 32) {
        const float c = cs[(size_t)t * rope_dim + 2 * p], s = cs[(size_t)t * rope_dim + 2 * p + 1];
        const int a = neox ? p : 2 * p, b = neox ? p + half : 2 * p + 1;
        const float x0 = x[a], x1 = x[b];
        const float ya = x0 * c - x1 * s, yb = x0 * s + x1 * c;
        x[a] = ya;
        x[b] = yb;
        if (is_q) continue;
        if (f16) ((__half *)kc)[at + a] = __float2half(ya), ((__half *)kc)[at + b] = __float2half(yb);
        else ((float *)kc)[at + a] = ya, ((float *)kc)[at + b] = yb;
    }
    if (is_q) return;
    const float *vr = v + ((size_t)t * kv_heads + h) * hd;
    for (int d = lane; d < hd; d += 32) {
        if (f16) {
            if (d >= rope_dim) ((__half *)kc)[at + d] = __float2half(x[d]);
            ((__half *)vc)[at + d] = __float2half(vr[d]);
        } else {
            if (d >= rope_dim) ((float *)kc)[at + d] = x[d];
            ((float *)vc)[at + d] = vr[d];
        }
    }
}


/* a[t][r] = act(gate[r] . x[t]) * (up[r] . x[t]): the two GEMVs of a feed-forward sharing their
 * x reads, a 32-lane group per output row; WIDE: the 16-byte loads of gemv_wide_kernel */
template <int DT, int NT, bool WIDE>
__global__ void __launch_bounds__(128) gemv_glu_kernel(gw g, gw u, const float *__restrict__ x, int64_t k,
                                                       float *__restrict__ a, int gelu) {
    const int lane = threadIdx.x & 31;
    const int64_t r = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    grid_wait();
    if (r >= g.m) return;
    float ag[NT], au[NT];
#pragma unroll
    for (int t = 0; t < NT; t++) ag[t] = au[t] = 0.0f;
    const int64_t chunks = k / 256;
    if (WIDE) {
#pragma unroll 2
        for (int64_t c = lane / 8; c < chunks; c += 4) {
            float v[32];
            int64_t e0, e1;
            load32<DT>(g, r, c, lane & 7, v, &e0, &e1);
#pragma unroll
            for (int t = 0; t < NT; t++) ag[t] += dot16(v, x + (size_t)t * k + e0) + dot16(v + 16, x + (size_t)t * k + e1);
            load32<DT>(u, r, c, lane & 7, v, &e0, &e1);
#pragma unroll
            for (int t = 0; t < NT; t++) au[t] += dot16(v, x + (size_t)t * k + e0) + dot16(v + 16, x + (size_t)t * k + e1);
        }
    } else {
#pragma unroll 4
        for (int64_t c = 0; c < chunks; c++) {
            float vg[8], vu[8];
            int64_t e0, e1;
            load8<DT>(g, r, c, lane, vg, &e0, &e1);
            load8<DT>(u, r, c, lane, vu, &e0, &e1);
#pragma unroll
            for (int t = 0; t < NT; t++) {
                const float4 p = __ldg((const float4 *)(x + (size_t)t * k + e0));
                const float4 q = __ldg((const float4 *)(x + (size_t)t * k + e1));
                ag[t] += vg[0] * p.x + vg[1] * p.y + vg[2] * p.z + vg[3] * p.w + vg[4] * q.x + vg[5] * q.y + vg[6] * q.z +
                         vg[7] * q.w;
                au[t] += vu[0] * p.x + vu[1] * p.y + vu[2] * p.z + vu[3] * p.w + vu[4] * q.x + vu[5] * q.y + vu[6] * q.z +
                         vu[7] * q.w;
            }
        }
    }
#pragma unroll
    for (int t = 0; t < NT; t++) {
        float sg = ag[t], su = au[t];
        for (int o = 16; o > 0; o >>= 1) sg += SHFL_XOR(sg, o), su += SHFL_XOR(su, o);
        if (lane == 0) a[(size_t)t * g.m + r] = act_of(gelu, sg) * su;
    }
}

/* ---------------------------------------------------------------- attention */

#define ATTN_WARPS 4
#define ATTN_MAX_HD 256
/* tokens of a prefill a block attends for (their key and value reads shared) */
#define QUERIES 8

__device__ __forceinline__ float kv_get(const float *p, size_t i) { return p[i]; }
__device__ __forceinline__ float kv_get(const __half *p, size_t i) { return __half2float(p[i]); }

/* q . k for one cached key row (head size a multiple of 8, rows 16-byte aligned); q in shared memory */
__device__ __forceinline__ float qk(const float *q, const __half *k, int hd) {
    float z = 0.0f;
#pragma unroll 8
    for (int d = 0; d < hd; d += 8) {
        const uint4 u = *(const uint4 *)(k + d);
        const __half2 *h = (const __half2 *)&u;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const float2 f = __half22float2(h[j]);
            z += q[d + 2 * j] * f.x + q[d + 2 * j + 1] * f.y;
        }
    }
    return z;
}
__device__ __forceinline__ float qk(const float *q, const float *k, int hd) {
    float z = 0.0f;
#pragma unroll 8
    for (int d = 0; d < hd; d += 4) {
        const float4 f = *(const float4 *)(k + d);
        z += q[d] * f.x + q[d + 1] * f.y + q[d + 2] * f.z + q[d + 3] * f.w;
    }
    return z;
}

/* z[i] = q[i] . k for QT queries against one cached key row (read once) */
template <int QT>
__device__ __forceinline__ void qk_many(const float (*q)[ATTN_MAX_HD], const __half *k, int hd, float z[QT]) {
#pragma unroll
    for (int i = 0; i < QT; i++) z[i] = 0.0f;
    for (int d = 0; d < hd; d += 8) {
        const uint4 u = *(const uint4 *)(k + d);
        const __half2 *h = (const __half2 *)&u;
        float f[8];
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const float2 t = __half22float2(h[j]);
            f[2 * j] = t.x, f[2 * j + 1] = t.y;
        }
#pragma unroll
        for (int i = 0; i < QT; i++)
#pragma unroll
            for (int j = 0; j < 8; j++) z[i] += q[i][d + j] * f[j];
    }
}
template <int QT>
__device__ __forceinline__ void qk_many(const float (*q)[ATTN_MAX_HD], const float *k, int hd, float z[QT]) {
#pragma unroll
    for (int i = 0; i < QT; i++) z[i] = 0.0f;
    for (int d = 0; d < hd; d += 4) {
        const float4 f = *(const float4 *)(k + d);
#pragma unroll
        for (int i = 0; i < QT; i++) z[i] += q[i][d] * f.x + q[i][d + 1] * f.y + q[i][d + 2] * f.z + q[i][d + 3] * f.w;
    }
}

/* Attention of QT consecutive tokens of one sequence (blockIdx.y * QT ..), head blockIdx.x, over
 * keys [t0 + split * chunk, + chunk), split blockIdx.z (flash-decoding: the splits' partial
 * softmaxes are merged by attention_merge). Each 32-lane group takes 32 keys at a time, a key per
 * lane: lane t reads its key row once and scores it against the QT queries (held in shared
 * memory), each query keeps its running maximum, and every lane adds the group's 32 weighted
 * value rows to the DPL dims it owns. QT > 1 shares the key and value reads among the tokens of
 * a prefill. One split: the output is written directly. */
template <typename KV, int DPL, int QT>
__global__ void __launch_bounds__(32 * ATTN_WARPS) attention_kernel(tl_attn_args a, int chunk, float *part) {
    grid_wait();
    const int h = blockIdx.x, i0 = blockIdx.y * QT, split = blockIdx.z, lane = threadIdx.x & 31, wid = threadIdx.x / 32;
    const int hd = a.head_dim, group = a.n_heads / a.n_kv_heads;
    const int nq = min(QT, a.n - i0);
    const size_t base = (((size_t)a.seq[i0] * a.n_kv_heads + h / group) * a.max_seq_len) * hd;
    const KV *kc = (const KV *)a.k_cache + base, *vc = (const KV *)a.v_cache + base;
    __shared__ float q[QT][ATTN_MAX_HD];
    for (int e = threadIdx.x; e < QT * hd; e += blockDim.x) {
        const int qi = e / hd, d = e % hd;
        q[qi][d] = qi < nq ? a.q[((size_t)(i0 + qi) * a.n_heads + h) * hd + d] * a.scale : 0.0f;
    }
    __syncthreads();
    /* each query's keys [lo, hi]; the block walks their union */
    int32_t lo[QT], hi[QT], first = INT32_MAX, last = -1;
#pragma unroll
    for (int qi = 0; qi < QT; qi++) {
        const int32_t pos = qi < nq ? a.pos[i0 + qi] : -1;
        hi[qi] = pos;
        lo[qi] = a.window > 0 && pos >= a.window ? pos - a.window + 1 : 0;
        if (qi < nq) first = min(first, lo[qi]), last = max(last, hi[qi]);
    }
    const int32_t t_begin = first + split * chunk, t_end = min(last + 1, t_begin + chunk);
    float m[QT], l[QT], acc[QT][DPL];
#pragma unroll
    for (int qi = 0; qi < QT; qi++) {
        m[qi] = -INFINITY, l[qi] = 0.0f;
#pragma unroll
        for (int j = 0; j < DPL; j++) acc[qi][j] = 0.0f;
    }
    for (int32_t g = t_begin + 32 * wid; g < t_end; g += 32 * ATTN_WARPS) {
        const int valid = min(32, t_end - g);
        const int32_t t = g + lane;
        float z[QT];
        if (QT == 1) {
            z[0] = lane < valid ? qk(q[0], kc + (size_t)t * hd, hd) : 0.0f;
        } else {
            qk_many<QT>(q, lane < valid ? kc + (size_t)t * hd : kc, hd, z);
        }
        float p[QT];
#pragma unroll
        for (int qi = 0; qi < QT; qi++) {
            const bool ok = lane < valid && t >= lo[qi] && t <= hi[qi];
            float zz = ok ? (a.softcap > 0 ? a.softcap * tanhf(z[qi] / a.softcap) : z[qi]) : -INFINITY;
            float gm = zz;
            for (int o = 16; o > 0; o >>= 1) gm = fmaxf(gm, SHFL_XOR(gm, o));
            const float mn = fmaxf(m[qi], gm);
            /* a group with no key for this query leaves it as it was (mn may still be -inf) */
            const float r = mn == -INFINITY ? 1.0f : __expf(m[qi] - mn);
            p[qi] = ok ? __expf(zz - mn) : 0.0f;
            float ps = p[qi];
            for (int o = 16; o > 0; o >>= 1) ps += SHFL_XOR(ps, o);
            l[qi] = l[qi] * r + ps;
            m[qi] = mn;
#pragma unroll
            for (int j = 0; j < DPL; j++) acc[qi][j] *= r;
        }
        /* the group's value rows, VR at a time with their loads issued together (one after
         * another, each waited for, they made a decode step's attention a chain of 32 memory
         * latencies); rows past the group's end load row g again and weigh 0 */
        constexpr int VR = 8;
        for (int t0 = 0; t0 < valid; t0 += VR) {
            float vv[VR][DPL];
#pragma unroll
            for (int u = 0; u < VR; u++) {
                const KV *v = vc + (size_t)(g + (t0 + u < valid ? t0 + u : 0)) * hd;
#pragma unroll
                for (int j = 0; j < DPL; j++) vv[u][j] = lane * DPL + j < hd ? kv_get(v, lane * DPL + j) : 0.0f;
            }
#pragma unroll
            for (int u = 0; u < VR; u++)
#pragma unroll
                for (int qi = 0; qi < QT; qi++) {
#ifdef TL_HIP
                    const float pt = __shfl(p[qi], (t0 + u) & 31, 32);
#else
                    const float pt = __shfl_sync(0xffffffffu, p[qi], (t0 + u) & 31);
#endif
                    if (t0 + u < valid)
#pragma unroll
                        for (int j = 0; j < DPL; j++) acc[qi][j] += pt * vv[u][j];
                }
        }
    }
    /* merge the groups, query by query: each rescaled to the block's largest maximum */
    __shared__ float sm[ATTN_WARPS], sl[ATTN_WARPS], sacc[ATTN_WARPS][ATTN_MAX_HD];
    for (int qi = 0; qi < nq; qi++) {
        if (lane == 0) sm[wid] = m[qi], sl[wid] = l[qi];
#pragma unroll
        for (int j = 0; j < DPL; j++)
            if (lane * DPL + j < hd) sacc[wid][lane * DPL + j] = acc[qi][j];
        __syncthreads();
        float M = -INFINITY, L = 0.0f;
        for (int w = 0; w < ATTN_WARPS; w++)
            if (sl[w] > 0) M = fmaxf(M, sm[w]);
        for (int w = 0; w < ATTN_WARPS; w++)
            if (sl[w] > 0) L += sl[w] * __expf(sm[w] - M);
        const size_t row = (size_t)(i0 + qi) * a.n_heads + h;
        float *pp = gridDim.z == 1 ? NULL : part + (row * gridDim.z + split) * (size_t)(hd + 2);
        if (pp && threadIdx.x == 0) pp[0] = M, pp[1] = L;
        for (int d = threadIdx.x; d < hd; d += blockDim.x) {
            float o = 0.0f;
            for (int w = 0; w < ATTN_WARPS; w++)
                if (sl[w] > 0) o += sacc[w][d] * __expf(sm[w] - M);
            if (pp) pp[2 + d] = o; /* a split's partial result: m, l, the unnormalised output */
            else a.out[row * hd + d] = o / L;
        }
        __syncthreads();
    }
}

/* out = the splits' partial softmaxes rescaled to their largest maximum and normalised */
__global__ void attention_merge(const float *part, int splits, int hd, float *out) {
    grid_wait();
    const size_t row = blockIdx.x;
    const float *pp = part + row * splits * (size_t)(hd + 2);
    float M = -INFINITY, L = 0.0f;
    for (int s = 0; s < splits; s++)
        if (pp[s * (hd + 2) + 1] > 0) M = fmaxf(M, pp[s * (hd + 2)]);
    for (int s = 0; s < splits; s++)
        if (pp[s * (hd + 2) + 1] > 0) L += pp[s * (hd + 2) + 1] * __expf(pp[s * (hd + 2)] - M);
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float o = 0.0f;
        for (int s = 0; s < splits; s++)
            if (pp[s * (hd + 2) + 1] > 0) o += pp[s * (hd + 2) + 2 + d] * __expf(pp[s * (hd + 2)] - M);
        out[row * hd + d] = o / L;
    }
}

#ifndef TL_HIP
/* A prompt's attention on the tensor cores (F16 cache, one sequence, heads of a multiple of 16
 * up to 128 dims): a block takes 64 queries of a head, a warp 16 of them, and walks the keys
 * in tiles of 32: S = Q K^T (wmma, F16 in, F32 out), an online softmax row by row (two lanes a
 * row), P in F16, O += P V (wmma) with O kept in shared memory, where the softmax's rescaling
 * of its rows is done. Queries are rounded to F16 (the keys and values are F16 already): it
 * agrees with the float kernel to about 1e-3. */
#define TC_Q 64 /* queries a block */
#define TC_K 32 /* keys a tile */

static size_t tc_attention_smem(int hd) {
    const size_t ldh = (size_t)hd + 8, ldo = (size_t)hd + 4;
    return (TC_Q + 2 * TC_K) * ldh * sizeof(__half) + 4 * 16 * TC_K * sizeof(float) + 4 * 16 * (TC_K + 8) * sizeof(__half) +
           4 * 16 * ldo * sizeof(float);
}

__global__ void __launch_bounds__(128) attention_tc_kernel(tl_attn_args a) {
    grid_wait();
    using namespace nvcuda;
    extern __shared__ __align__(32) unsigned char smem[];
    const int h = blockIdx.x, i0 = blockIdx.y * TC_Q, lane = threadIdx.x & 31, wid = threadIdx.x / 32;
    const int hd = a.head_dim, ldh = hd + 8, ldo = hd + 4, ldp = TC_K + 8, group = a.n_heads / a.n_kv_heads;
    const int nq = min(TC_Q, a.n - i0);
    /* every region a multiple of 32 bytes, as wmma's pointers must be */
    __half *sQ = (__half *)smem, *sK = sQ + TC_Q * ldh, *sV = sK + TC_K * ldh;
    float *sS = (float *)(sV + TC_K * ldh);
    __half *sP = (__half *)(sS + 4 * 16 * TC_K);
    float *sO = (float *)(sP + 4 * 16 * ldp);
    __shared__ float sL[TC_Q];
    const size_t base = (((size_t)a.seq[i0] * a.n_kv_heads + h / group) * a.max_seq_len) * hd;
    const __half *kc = (const __half *)a.k_cache + base, *vc = (const __half *)a.v_cache + base;
    for (int e = threadIdx.x; e < TC_Q * hd; e += blockDim.x) {
        const int r = e / hd, d = e % hd;
        sQ[r * ldh + d] = __float2half(r < nq ? a.q[((size_t)(i0 + r) * a.n_heads + h) * hd + d] * a.scale : 0.0f);
    }
    float *myO = sO + wid * 16 * ldo, *myS = sS + wid * 16 * TC_K;
    __half *myP = sP + wid * 16 * ldp;
    for (int e = lane; e < 16 * hd; e += 32) myO[(e / hd) * ldo + e % hd] = 0.0f;
    /* this lane's row of the warp's 16 (two lanes a row, 16 keys of a tile each) */
    const int row = lane / 2, c0 = (lane & 1) * (TC_K / 2), qi = wid * 16 + row;
    const int32_t qpos = qi < nq ? a.pos[i0 + qi] : -1;
    const int32_t qlo = a.window > 0 && qpos >= a.window ? qpos - a.window + 1 : 0;
    int32_t first = INT32_MAX, last = -1;
    for (int r = 0; r < nq; r++) {
        const int32_t p = a.pos[i0 + r];
        first = min(first, a.window > 0 && p >= a.window ? p - a.window + 1 : 0);
        last = max(last, p);
    }
    float m = -INFINITY, l = 0.0f;
    __syncthreads();
    for (int32_t t0 = first; t0 <= last; t0 += TC_K) {
        for (int e = threadIdx.x; e < TC_K * hd / 8; e += blockDim.x) {
            const int r = e / (hd / 8), c = (e % (hd / 8)) * 8;
            uint4 kv = make_uint4(0, 0, 0, 0), vv = kv;
            if (t0 + r <= last) {
                kv = *(const uint4 *)(kc + (size_t)(t0 + r) * hd + c);
                vv = *(const uint4 *)(vc + (size_t)(t0 + r) * hd + c);
            }
            *(uint4 *)(sK + r * ldh + c) = kv;
            *(uint4 *)(sV + r * ldh + c) = vv;
        }
        __syncthreads();
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> s0, s1;
        wmma::fill_fragment(s0, 0.0f);
        wmma::fill_fragment(s1, 0.0f);
        for (int k = 0; k < hd; k += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> qa;
            wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> kb;
            wmma::load_matrix_sync(qa, sQ + wid * 16 * ldh + k, ldh);
            wmma::load_matrix_sync(kb, sK + k, ldh); /* K^T: element (d, key) at sK[key][d] */
            wmma::mma_sync(s0, qa, kb, s0);
            wmma::load_matrix_sync(kb, sK + 16 * ldh + k, ldh);
            wmma::mma_sync(s1, qa, kb, s1);
        }
        wmma::store_matrix_sync(myS, s0, TC_K, wmma::mem_row_major);
        wmma::store_matrix_sync(myS + 16, s1, TC_K, wmma::mem_row_major);
        __syncwarp();
        float z[TC_K / 2], tmax = -INFINITY;
#pragma unroll
        for (int j = 0; j < TC_K / 2; j++) {
            const int32_t t = t0 + c0 + j;
            float v = myS[row * TC_K + c0 + j];
            if (a.softcap > 0) v = a.softcap * tanhf(v / a.softcap);
            z[j] = t <= qpos && t >= qlo && t <= last ? v : -INFINITY;
            tmax = fmaxf(tmax, z[j]);
        }
        tmax = fmaxf(tmax, SHFL_XOR(tmax, 1));
        const float mn = fmaxf(m, tmax);
        const float corr = mn == -INFINITY ? 1.0f : __expf(m - mn);
        float ps = 0.0f;
#pragma unroll
        for (int j = 0; j < TC_K / 2; j++) {
            const float p = z[j] == -INFINITY ? 0.0f : __expf(z[j] - mn);
            ps += p;
            myP[row * ldp + c0 + j] = __float2half(p);
        }
        ps += SHFL_XOR(ps, 1);
        l = l * corr + ps;
        m = mn;
        for (int d = (lane & 1) * (hd / 2); d < (lane & 1) * (hd / 2) + hd / 2; d++) myO[row * ldo + d] *= corr;
        __syncwarp();
        for (int n0 = 0; n0 < hd; n0 += 16) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> o;
            wmma::load_matrix_sync(o, myO + n0, ldo, wmma::mem_row_major);
#pragma unroll
            for (int k = 0; k < TC_K; k += 16) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> pa;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::row_major> vb;
                wmma::load_matrix_sync(pa, myP + k, ldp);
                wmma::load_matrix_sync(vb, sV + k * ldh + n0, ldh);
                wmma::mma_sync(o, pa, vb, o);
            }
            wmma::store_matrix_sync(myO + n0, o, ldo, wmma::mem_row_major);
        }
        __syncthreads(); /* the tile's keys and values stay until every warp is done with them */
    }
    if ((lane & 1) == 0) sL[qi] = l;
    __syncwarp();
    for (int e = lane; e < 16 * hd; e += 32) {
        const int r = e / hd, d = e % hd, q = wid * 16 + r;
        if (q < nq) a.out[((size_t)(i0 + q) * a.n_heads + h) * hd + d] = sL[q] > 0 ? myO[r * ldo + d] / sL[q] : 0.0f;
    }
}
#endif

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
        conv = (uint16_t *)malloc((size_t)k * rows * sizeof(uint16_t));
        if (!conv) return tl_set_error(TL_ERR_NOMEM, GPU_BACKEND ": out of host memory converting a weight");
        tl_status s = tl_convert_rows(src->dtype, src->data, TL_F16, conv, rows, k);
        if (s) {
            free(conv);
            return s;
        }
        host = conv;
        dst->dtype = TL_F16;
        dst->nbytes = (size_t)k * rows * sizeof(uint16_t);
    }
    uint8_t *split = NULL;
    if (!conv && split_layout(src->dtype)) { /* fields of a kind together (see gw) */
        const size_t blocks = src->nbytes / tl_dtype_type_size(src->dtype), bs = tl_dtype_type_size(src->dtype);
        dst->nbytes = split_bytes(src->dtype, blocks);
        split = (uint8_t *)calloc(1, dst->nbytes);
        if (!split) return tl_set_error(TL_ERR_NOMEM, GPU_BACKEND ": out of host memory repacking a weight");
        uint8_t *base = split;
        for (int f = 0; field_size(src->dtype, f); f++) {
            const int size = field_size(src->dtype, f);
            const uint8_t *in = (const uint8_t *)src->data + gguf_offset(src->dtype, f);
            for (size_t b = 0; b < blocks; b++) memcpy(base + b * size, in + b * bs, (size_t)size);
            base += align256(blocks * (size_t)size);
        }
        host = split;
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
    free(split);
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
    gpuDeviceProp prop;
    memset(&prop, 0, sizeof prop);
    st->sms = gpuGetDeviceProperties(&prop, g->dev) == gpuSuccess ? prop.multiProcessorCount : 100;
    const char *gemv = getenv("TORCHLESS_GPU_GEMV");
    st->gemv = !gemv                        ? 0
               : strcmp(gemv, "narrow") == 0 ? 1
               : strcmp(gemv, "wide") == 0   ? 2
               : strcmp(gemv, "narrow4") == 0 ? 3
               : strcmp(gemv, "narrow1") == 0 ? 4
               : strcmp(gemv, "narrow2") == 0 ? 5
                                              : 0;
    const char *tc = getenv("TORCHLESS_GPU_TC_ATTENTION");
    st->tc_attention = !(tc && strcmp(tc, "0") == 0);
    gpuError_t e = gpuStreamCreateWithFlags(&st->stream, gpuStreamNonBlocking);
    if (e != gpuSuccess) {
        free(st);
        return fail(e, "creating a stream");
    }
#if GPU_HAVE_BLAS
    /* TORCHLESS_GPU_OWN_GEMM=1: our GEMM instead of the vendor's, to test it against the vendor's */
    const char *own = getenv("TORCHLESS_GPU_OWN_GEMM");
    if (!(own && strcmp(own, "1") == 0)) {
        if (gpublasCreate(&st->blas) != GPUBLAS_STATUS_SUCCESS) {
            gpuStreamDestroy(st->stream);
            free(st);
            return tl_set_error(TL_ERR_DEVICE, GPU_BACKEND ": creating the BLAS handle failed");
        }
        gpublasSetStream(st->blas, st->stream);
    }
#endif
    *out = &st->base;
    return TL_OK;
}

static void stream_free(tl_stream *ts) {
    gpu_stream *s = (gpu_stream *)ts;
    if (!s) return;
    set_device(s->dev);
    gpuStreamSynchronize(s->stream);
    forget_graphs(s);
#if GPU_HAVE_BLAS
    if (s->blas) gpublasDestroy(s->blas);
#endif
    gpuStreamDestroy(s->stream);
    gpuFree(s->w_tile);
    gpuFree(s->x_half);
    gpuFree(s->part);
    gpuFree(s->xq[0]);
    gpuFree(s->xq[1]);
    gpuFree(s->mmq_ws);
    gpuFree(s->mmq_counts);
    gpuFree(s->topk);
    free(s->topk_host);
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
    gpu_stream *s = op_begin(ts);
    if (bytes) note(s, gpuMemcpyAsync(dst, src, bytes, gpuMemcpyHostToDevice, s->stream), "copying to the device");
    return s->err ? sync(ts) : TL_OK;
}

static tl_status download(tl_stream *ts, void *dst, const void *src, size_t bytes) {
    gpu_stream *s = (gpu_stream *)ts;
    if (bytes) note(s, gpuMemcpyAsync(dst, src, bytes, gpuMemcpyDeviceToHost, s->stream), "copying from the device");
    return sync(ts);
}

static void forget_graphs(gpu_stream *s) {
    for (int i = 0; i < s->n_graphs; i++) gpuGraphExecDestroy(s->graphs[i].exec);
    s->n_graphs = 0;
}

static bool graph_replay(tl_stream *ts, uint64_t key) {
    gpu_stream *s = op_begin(ts);
    for (int i = 0; i < s->n_graphs; i++)
        if (s->graphs[i].key == key) {
            note(s, gpuGraphLaunch(s->graphs[i].exec, s->stream), "replaying a forward");
            return true;
        }
    return false;
}

static bool capture_begin(tl_stream *ts, uint64_t key) {
    gpu_stream *s = op_begin(ts);
    if (s->err || s->n_graphs == GRAPHS) return false;
    if (gpuStreamBeginCapture(s->stream, gpuStreamCaptureModeThreadLocal) != gpuSuccess) {
        (void)gpuGetLastError();
        return false;
    }
    s->capturing = key;
    return true;
}

/* Ends the recording, keeps it and runs it; on failure nothing ran and nothing is kept. */
static tl_status capture_end(tl_stream *ts) {
    gpu_stream *s = op_begin(ts);
    gpuGraph_t graph = NULL;
    gpuGraphExec_t exec = NULL;
    gpuError_t e = gpuStreamEndCapture(s->stream, &graph);
    if (e == gpuSuccess && !s->err) e = gpuGraphInstantiate(&exec, graph, 0);
    if (graph) gpuGraphDestroy(graph);
    if (e != gpuSuccess || s->err || !exec) {
        (void)gpuGetLastError();
        s->err = TL_OK; /* the caller queues the ops again, unrecorded */
        if (exec) gpuGraphExecDestroy(exec);
        return e != gpuSuccess ? fail(e, "recording a forward") : tl_set_error(TL_ERR_DEVICE, GPU_BACKEND ": recording a forward failed");
    }
    s->graphs[s->n_graphs].key = s->capturing;
    s->graphs[s->n_graphs++].exec = exec;
    note(s, gpuGraphLaunch(exec, s->stream), "running a recorded forward");
    return TL_OK;
}

static tl_status reserve(tl_stream *ts, int64_t n_tokens, int64_t max_k) {
    gpu_stream *s = op_begin(ts);
    tl_device *d = ts->device;
    forget_graphs(s); /* the buffers they read may move */
    tl_status st = TL_OK;
    const size_t xq = Q8_MAX_TOKENS * q8_stride(max_k); /* the 8-bit matmuls' quantized rows, each style */
    if (xq > s->xq_bytes) {
        dev_free(d, s->xq[0]);
        dev_free(d, s->xq[1]);
        s->xq[0] = s->xq[1] = NULL;
        s->xq_bytes = 0;
        st = dev_alloc(d, xq, (void **)&s->xq[0]);
        if (!st) st = dev_alloc(d, xq, (void **)&s->xq[1]);
        /* defined bytes in the rows past a batch's, which mmq reads and does not use */
        if (!st) note(s, gpuMemsetAsync(s->xq[0], 0, xq, s->stream), "clearing"), note(s, gpuMemsetAsync(s->xq[1], 0, xq, s->stream), "clearing");
        if (!st) s->xq_bytes = xq;
    }
    if (!st && MMQ_MAX_TOKENS && !s->mmq_ws) {
        st = dev_alloc(d, MMQ_WS_FLOATS * sizeof(float), (void **)&s->mmq_ws);
        if (!st) st = dev_alloc(d, MMQ_COUNTS * sizeof(unsigned), (void **)&s->mmq_counts);
        if (!st) note(s, gpuMemsetAsync(s->mmq_counts, 0, MMQ_COUNTS * sizeof(unsigned), s->stream), "clearing");
        if (!st) s->mmq_ws_floats = MMQ_WS_FLOATS;
    }
    if (st || n_tokens <= GEMV_MAX_TOKENS) return st; /* the GEMV path needs no more */
    const size_t tile = (size_t)TILE_ROWS * max_k, xh = (size_t)n_tokens * max_k;
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

/* the device view of a weight: rows, blocks per row */
static gw view(const tl_tensor *t) {
    const int64_t k = t->ne[0];
    const int64_t block = t->dtype == TL_Q4_K || t->dtype == TL_Q5_K || t->dtype == TL_Q6_K ? 256 : 32;
    gw w = {(const uint8_t *)t->data, tl_tensor_nrows(t), k / block};
    return w;
}

template <int DT> struct embed_launch {
    static void run(gpu_stream *s, const tl_tensor *t, const int32_t *ids, int32_t n, float scale, float *out) {
        const int64_t k = t->ne[0];
        const int64_t units = (int64_t)n * (k / 32);
        launch(s->stream, embed_kernel<DT>, blocks_for(units, 128), 128, 0, view(t), k, ids, n, scale, out);
    }
};

static void embed(tl_stream *ts, const tl_tensor *table, const int32_t *tokens, int32_t n, float scale, float *out) {
    gpu_stream *s = op_begin(ts);
    const int64_t k = table->ne[0];
    if (k % 32 == 0) {
        by_dtype<embed_launch>(table->dtype, s, table, tokens, n, scale, out);
    } else {
        launch(s->stream, embed_float_any, blocks_for((int64_t)n * k, THREADS), THREADS, 0,
            (const uint8_t *)table->data, table->dtype, tl_dtype_row_size(table->dtype, k), k, tokens, n, scale, out);
    }
    LAUNCHED(s, "embedding");
}

static void q8_norm_targets(gpu_stream *s, const float *out, int64_t rows, int64_t dim, int8_t **q0, int8_t **qk);

/* A norm about to write rows x dim floats to out: where a GEMM has read F16 rows before (a
 * prompt) and has room, the buffer to write them into as well, remembered as out's */
static __half *half_norm_target(gpu_stream *s, const float *out, int64_t rows, int64_t dim) {
    if (!s->xh_used || rows <= GEMV_MAX_TOKENS || !s->x_half || s->x_half_elems < (size_t)(rows * dim)) return nullptr;
    s->xh_src = out, s->xh_n = rows, s->xh_k = dim;
    return s->x_half;
}

static void rmsnorm(tl_stream *ts, float *out, const float *x, const float *w, int64_t rows, int64_t dim, float eps) {
    gpu_stream *s = op_begin(ts);
    int threads = dim >= 1024 ? 1024 : dim >= 256 ? 256 : 64;
    int8_t *q0, *qk;
    q8_norm_targets(s, out, rows, dim, &q0, &qk);
    if (dim % 256 == 0 && dim <= 8192)
        launch(s->stream, norm8_kernel<false>, (unsigned)rows, (unsigned)(dim / 8), 0, (float *)x, nullptr, out, w, dim, eps, q0, qk,
                                                                                  q8_stride(dim), half_norm_target(s, out, rows, dim));
    else
        launch(s->stream, rmsnorm_kernel, (unsigned)rows, threads, 0, out, x, w, dim, eps, q0, qk, q8_stride(dim));
    LAUNCHED(s, "rmsnorm");
}

/* 32-lane groups of 4 to a block; R rows a group (fewer groups, each streaming more weight
 * rows against the same x loads), more as tokens grow */
template <int DT> struct gemv_launch {
    static void run(gpu_stream *s, const tl_tensor *w, const float *x, int64_t n, float *y, const float *bias) {
        const int64_t k = w->ne[0], m = w->ne[1];
        const gw v = view(w);
        if (k % 256 != 0) {
            launch(s->stream, gemv32_kernel<DT>, (unsigned)((m + 3) / 4), 128, 0, v, x, k, n, y, bias);
            return;
        }
        /* K-quant rows of one or two tokens: 16-byte loads (measured faster for them, slower for
         * the 32-blocks; TORCHLESS_GPU_GEMV=narrow|wide forces one kernel, to compare); more
         * tokens would spill the wide kernel's registers */
        const bool quantized = DT != TL_F32 && DT != TL_F16 && DT != TL_BF16;
        const bool wide = quantized && (s->gemv == 2 || (s->gemv == 0 && (DT == TL_Q4_K || DT == TL_Q5_K || DT == TL_Q6_K)));
        /* rows a group for one token: one for float weights (twice the groups of 2 rows, each
         * with the same loads in flight: F16 decode +8% on the H200), two for the others;
         * TORCHLESS_GPU_GEMV=narrow4|narrow1|narrow2 forces 4, 1 or 2, to compare */
        const int rows1 = s->gemv == 3 ? 4 : s->gemv == 4 ? 1 : s->gemv == 5 ? 2 : quantized ? 2 : 1;
        const unsigned b1 = (unsigned)((m + 3) / 4), b2 = (unsigned)((m + 7) / 8), b4 = (unsigned)((m + 15) / 16);
#define WIDE(N) launch(s->stream, gemv_wide_kernel<DT, N, 2>, b2, 128, 0, v, x, k, y, bias)
#define LAUNCH(N, R) launch(s->stream, gemv_kernel<DT, N, R>, (R) == 1 ? b1 : (R) == 2 ? b2 : b4, 128, 0, v, x, k, y, bias)
        switch (n) {
        case 1:
            if (wide) WIDE(1);
            else if (rows1 == 4) LAUNCH(1, 4);
            else if (rows1 == 1) LAUNCH(1, 1);
            else LAUNCH(1, 2);
            break;
        case 2: if (wide) WIDE(2); else if (s->gemv == 3) LAUNCH(2, 4); else LAUNCH(2, 2); break;
        case 3: LAUNCH(3, 4); break;
        case 4: LAUNCH(4, 4); break;
        case 5: LAUNCH(5, 4); break;
        case 6: LAUNCH(6, 4); break;
        case 7: LAUNCH(7, 4); break;
        default: LAUNCH(8, 4); break;
        }
#undef WIDE
#undef LAUNCH
    }
};

/* TORCHLESS_ACT_QUANT=0 keeps float activations, as on the CPU (read at every matmul, so that a
 * test may switch it) */
static bool act_quant(void) {
    const char *e = getenv("TORCHLESS_ACT_QUANT");
    return !(e && strcmp(e, "0") == 0);
}

/* Whether an 8-bit matmul of n tokens goes through mmq (the tensor cores) rather than a GEMV:
 * from TORCHLESS_GPU_MMQ_MIN tokens (default 3; past MMQ_MAX_TOKENS: never), read at every
 * matmul so that a test or benchmark may switch it */
static bool use_mmq(const tl_tensor *w, int64_t n) {
    if (!MMQ_MAX_TOKENS || n > MMQ_MAX_TOKENS || w->ne[0] % 256) return false;
    const char *e = getenv("TORCHLESS_GPU_MMQ_MIN");
    return n >= (e ? atoi(e) : 3);
}

/* Whether a matmul of n tokens against w goes through the 8-bit GEMVs or mmq */
static bool q8_path(const gpu_stream *s, const tl_tensor *w, int64_t n) {
    const int64_t k = w->ne[0];
    return q8_dtype(w->dtype) && (n <= GEMV_MAX_TOKENS || use_mmq(w, n)) && k % (kquant(w->dtype) ? 256 : 32) == 0 && s->xq[0] &&
           (size_t)n * q8_stride(k) <= s->xq_bytes && act_quant();
}

/* x's n rows of k quantized into s->xq in the style of weights of dtype t, unless they are
 * there already */
static void q8_quantize(gpu_stream *s, tl_dtype t, const float *x, int64_t n, int64_t k) {
    const int style = kquant(t) ? Q8_STYLE_K : Q8_STYLE_0;
    s->xq_used = true;
    if (s->xq_src[style] == x && s->xq_n[style] == n && s->xq_k[style] == k) return;
    const int64_t blocks = n * k / (style == Q8_STYLE_K ? 256 : 32);
    if (style == Q8_STYLE_K)
        launch(s->stream, quantize_q8_K_kernel, blocks_for(blocks * 32, 128), 128, 0, x, k, blocks, s->xq[style], q8_stride(k));
    else
        launch(s->stream, quantize_q8_0_kernel, blocks_for(blocks * 32, 128), 128, 0, x, k, blocks, s->xq[style], q8_stride(k));
    LAUNCHED(s, "quantizing activations");
    s->xq_src[style] = x, s->xq_n[style] = n, s->xq_k[style] = k;
}

/* A norm about to write rows x dim floats to out: where its rows will feed 8-bit matmuls, the
 * buffers to quantize them into as well (NULL: not this style), remembered as out's */
static void q8_norm_targets(gpu_stream *s, const float *out, int64_t rows, int64_t dim, int8_t **q0, int8_t **qk) {
    *q0 = *qk = NULL;
    if (!s->xq_used || rows > Q8_MAX_TOKENS || dim % 32 || !s->xq[0] || (size_t)rows * q8_stride(dim) > s->xq_bytes ||
        !act_quant())
        return;
    *q0 = s->xq[0];
    s->xq_src[0] = out, s->xq_n[0] = rows, s->xq_k[0] = dim;
    if (dim % 256 == 0) {
        *qk = s->xq[1];
        s->xq_src[1] = out, s->xq_n[1] = rows, s->xq_k[1] = dim;
    }
}

/* A matmul wrote y[0, count): the quantized (or F16) rows are stale if they came from there */
static void forget_written(gpu_stream *s, const float *y, int64_t count) {
    for (int i = 0; i < 2; i++)
        if (s->xq_src[i] && y < s->xq_src[i] + s->xq_n[i] * s->xq_k[i] && s->xq_src[i] < y + count) s->xq_src[i] = NULL;
    if (s->xh_src && y < s->xh_src + s->xh_n * s->xh_k && s->xh_src < y + count) s->xh_src = NULL;
}

/* y = x W^T (+ bias) from the quantized rows; with w2, y = act(x W^T) * (x W2^T) */
template <int DT, bool Q> struct q8_launch_for {
    static void run(gpu_stream *, const tl_tensor *, const tl_tensor *, int64_t, float *, const float *, int) {}
};
template <int DT> struct q8_launch_for<DT, true> {
    static void run(gpu_stream *s, const tl_tensor *w, const tl_tensor *w2, int64_t n, float *y, const float *bias,
                    int gelu) {
        const int64_t k = w->ne[0];
        const unsigned blocks = (unsigned)((w->ne[1] + 3) / 4);
        const gw a = view(w), b = w2 ? view(w2) : a;
        const size_t xs = q8_stride(k);
#define Q8(NT)                                                                                                          \
    (w2 ? launch(s->stream, gemv_q8_kernel<DT, NT, true>, blocks, 128, 0, a, b, s->xq[kquant(DT)], xs, k, (int)n, y, nullptr, gelu)         \
        : launch(s->stream, gemv_q8_kernel<DT, NT, false>, blocks, 128, 0, a, b, s->xq[kquant(DT)], xs, k, (int)n, y, bias, 0))
        if (n == 1) Q8(1);
        else if (n == 2) Q8(2);
        else if (n <= 4) Q8(4);
        else Q8(8);
#undef Q8
    }
};
template <int DT, bool Q> struct q8_three_for {
    static void run(gpu_stream *, const q8_three *, int64_t, int64_t, int64_t) {}
};
template <int DT> struct q8_three_for<DT, true> {
    static void run(gpu_stream *s, const q8_three *m, int64_t rows, int64_t k, int64_t n) {
        const unsigned blocks = (unsigned)((rows + 3) / 4);
        const size_t xs = q8_stride(k);
#define Q8(NT) launch(s->stream, gemv_q8_three_kernel<DT, NT>, blocks, 128, 0, *m, s->xq[kquant(DT)], xs, k, (int)n)
        if (n == 1) Q8(1);
        else if (n == 2) Q8(2);
        else if (n <= 4) Q8(4);
        else Q8(8);
#undef Q8
    }
};
template <int DT> struct q8_three_launch : q8_three_for<DT, q8_dtype(DT)> {};

template <int DT> struct q8_launch : q8_launch_for<DT, q8_dtype(DT)> {};

/* y_i = x W_i^T (+ bias_i) from the quantized rows through mmq, for `count` matrices of one dtype
 * and width: a block a tile of MMQ_ROWS rows, and the sub-blocks split over blockIdx.y while the
 * blocks fit one wave of TORCHLESS_GPU_MMQ_WAVES (default 4) blocks an SM and the workspace holds
 * the partial sums */
#include "mmv.cuh"

template <int DT, bool Q> struct mmq_for {
    static void run(gpu_stream *, const tl_tensor *const *, int, int64_t, float *const *, const float *const *) {}
};
#if MMQ_MAX_TOKENS
/* a kernel's dynamic shared memory past the 48 KiB it may have without asking */
template <typename K> static void smem_opt_in(gpu_stream *s, K kernel, size_t bytes) {
    if (bytes > 48 * 1024)
        note(s, cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes), "mmq: shared memory");
}
template <int DT> struct mmq_for<DT, true> {
    static void run(gpu_stream *s, const tl_tensor *const *w, int count, int64_t n, float *const *y,
                    const float *const *bias) {
        if (mmv_launch<DT>::run(s, w, count, n, y, bias)) return;
        const int64_t k = w[0]->ne[0], subs = k / 32;
        mmq_mats mats;
        memset(&mats, 0, sizeof mats);
        int64_t tiles = 0, rows = 0;
        for (int i = 0; i < MMQ_MATS; i++) {
            if (i < count) {
                mats.w[i] = view(w[i]), mats.y[i] = y[i], mats.bias[i] = bias ? bias[i] : NULL;
                tiles += (w[i]->ne[1] + MMQ_ROWS - 1) / MMQ_ROWS;
                rows += w[i]->ne[1];
            }
            mats.tile_end[i] = (unsigned)tiles;
        }
        /* as many blocks as one wave holds (4 an SM: __launch_bounds__), not past it */
        const char *e = getenv("TORCHLESS_GPU_MMQ_WAVES");
        const int64_t per_sm = e && atoi(e) > 0 ? atoi(e) : 4;
        int64_t splits = per_sm * s->sms / tiles;
        if (splits > subs / 8) splits = subs / 8; /* a stage of 8 sub-blocks at least a split */
        if (splits > MMQ_MAX_SPLITS) splits = MMQ_MAX_SPLITS;
        while (splits > 1 && (size_t)(splits * n * rows) > s->mmq_ws_floats) splits--;
        if (splits < 1 || tiles > MMQ_COUNTS) splits = 1;
        const int64_t per = ((subs + splits - 1) / splits + 7) / 8 * 8; /* whole stages */
        splits = (subs + per - 1) / per;
        for (int64_t i = 0, at = 0; i < count; at += splits * n * w[i]->ne[1], i++) mats.ws[i] = s->mmq_ws + at;
        const dim3 grid((unsigned)tiles, (unsigned)splits);
        const size_t xs = q8_stride(k);
#define MMQ(NT)                                                                                                         \
    (smem_opt_in(s, mmq_kernel<DT, NT>, mmq_smem_all(DT, NT)),                                                          \
     launch(s->stream, mmq_kernel<DT, NT>, grid, 128, mmq_smem_all(DT, NT), mats, s->xq[kquant(DT)], xs, k, (int)n, per,    \
                                                                        s->mmq_counts))
        if (n <= 8) MMQ(8);
        else if (n <= 16) MMQ(16);
        else MMQ(32);
#undef MMQ
    }
};
#endif
template <int DT> struct mmq_launch : mmq_for<DT, q8_dtype(DT)> {};

template <int DT> struct dequant_launch {
    static void run(gpu_stream *s, const tl_tensor *w, int64_t r0, int64_t rows, __half *out) {
        const int64_t k = w->ne[0];
        if (k % 256 == 0) {
            launch(s->stream, dequant_kernel<DT>, blocks_for(rows * (k / 256) * 32, 256), 256, 0, view(w), k, r0, rows, out);
        } else {
            launch(s->stream, dequant32_kernel<DT>, blocks_for(rows * (k / 32), 128), 128, 0, view(w), k, r0, rows, out);
        }
    }
};

/* y = x W^T. F32 weights stay F32; the others are multiplied as F16 tiles of TILE_ROWS rows.
 * Through cuBLAS/hipBLAS: column-major, W (m x k row-major) is A^T with lda k, x is B (k x n),
 * y is C (m x n) with ldc m; F16 activations, F32 accumulation. Without a BLAS handle: our own
 * GEMM, on the F32 activations. */
static void gemm(gpu_stream *s, const tl_tensor *w, const float *x, int64_t n, float *y) {
    const int64_t k = w->ne[0], m = w->ne[1];
#if GPU_HAVE_BLAS
    const float one = 1.0f, zero = 0.0f;
    if (s->blas && w->dtype == TL_F32) {
        note_blas(s, gpublasSgemm(s->blas, GPUBLAS_OP_T, GPUBLAS_OP_N, (int)m, (int)n, (int)k, &one, (const float *)w->data,
                                  (int)k, x, (int)k, &zero, y, (int)m),
                  "sgemm");
        return;
    }
    if (s->blas) {
        s->xh_used = true;
        if (!(s->xh_src == x && s->xh_n == n && s->xh_k == k)) { /* (q, k and v, gate and up: one conversion) */
            launch(s->stream, to_half_kernel, blocks_for(n * k / 4, THREADS), THREADS, 0, x, n * k, s->x_half);
            LAUNCHED(s, "activations to f16");
            s->xh_src = x, s->xh_n = n, s->xh_k = k;
        }
    }
#endif
    if (w->dtype == TL_F32) {
        own_gemm(s->stream, (const float *)w->data, x, m, n, k, y, m);
        LAUNCHED(s, "gemm");
        return;
    }
    /* F16 weights need no tile: one product over every row (fewer, larger GEMMs) */
    const int64_t tile = w->dtype == TL_F16 ? m : TILE_ROWS;
    for (int64_t r0 = 0; r0 < m; r0 += tile) {
        const int64_t rows = m - r0 < tile ? m - r0 : tile;
        const __half *a;
        if (w->dtype == TL_F16) {
            a = (const __half *)w->data + (size_t)r0 * k;
        } else {
            by_dtype<dequant_launch>(w->dtype, s, w, r0, rows, s->w_tile);
            LAUNCHED(s, "dequantize");
            a = s->w_tile;
        }
#if GPU_HAVE_BLAS
        if (s->blas) {
            note_blas(s, gpublasGemmEx(s->blas, GPUBLAS_OP_T, GPUBLAS_OP_N, (int)rows, (int)n, (int)k, &one, a, GPU_R_16F,
                                       (int)k, s->x_half, GPU_R_16F, (int)k, &zero, y + r0, GPU_R_32F, (int)m,
                                       GPUBLAS_COMPUTE_32F, GPUBLAS_GEMM_DEFAULT),
                      "gemm");
            continue;
        }
#endif
        own_gemm(s->stream, a, x, rows, n, k, y + r0, m);
        LAUNCHED(s, "gemm");
    }
}

static void matmul(tl_stream *ts, const tl_tensor *w, const float *x, int64_t n, float *y, const float *bias) {
    gpu_stream *s = (gpu_stream *)ts;
    const int64_t k = w->ne[0], m = w->ne[1];
    if (k % 32 != 0) { /* float weights of an odd width (weight_upload converted any others) */
        launch(s->stream, gemv_float_any, (unsigned)((m + 3) / 4), 128, 0, (const uint8_t *)w->data, w->dtype,
                                                                         tl_dtype_row_size(w->dtype, k), x, k, m, n, y, bias);
        LAUNCHED(s, "gemv");
        return;
    }
    if (q8_path(s, w, n)) {
        q8_quantize(s, w->dtype, x, n, k);
        if (use_mmq(w, n)) {
            by_dtype<mmq_launch>(w->dtype, s, &w, 1, n, &y, bias ? &bias : (const float *const *)NULL);
            LAUNCHED(s, "mmq");
        } else {
            by_dtype<q8_launch>(w->dtype, s, w, (const tl_tensor *)NULL, n, y, bias, 0);
            LAUNCHED(s, "gemv");
        }
        forget_written(s, y, n * m);
        return;
    }
    s->xq_src[0] = s->xq_src[1] = NULL;
    if (n <= GEMV_MAX_TOKENS) {
        by_dtype<gemv_launch>(w->dtype, s, w, x, n, y, bias);
        LAUNCHED(s, "gemv");
        forget_written(s, y, n * m);
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
    forget_written(s, y, n * m);
    if (bias) {
        launch(s->stream, add_bias_kernel, blocks_for(n * m, THREADS), THREADS, 0, y, bias, n, m);
        LAUNCHED(s, "bias");
    }
}

static void rope(tl_stream *ts, float *x, const float *cs, int32_t n, int32_t heads, int32_t hd, int32_t rope_dim, bool neox) {
    gpu_stream *s = op_begin(ts);
    const int64_t pairs = (int64_t)n * heads * (rope_dim / 2);
    if (!pairs) return;
    launch(s->stream, rope_kernel, blocks_for(pairs, THREADS), THREADS, 0, x, cs, n, heads, hd, rope_dim, neox);
    LAUNCHED(s, "rope");
}

static void kv_store(tl_stream *ts, void *k_cache, void *v_cache, tl_dtype dt, const float *k, const float *v,
                     const int32_t *pos, const int32_t *seq, int32_t n, int32_t kv_heads, int32_t hd, int32_t max_seq_len) {
    gpu_stream *s = op_begin(ts);
    const int64_t total = (int64_t)n * kv_heads * hd;
    launch(s->stream, kv_store_kernel, blocks_for(total, THREADS), THREADS, 0, k_cache, v_cache, dt == TL_F16, k, v, pos, seq, n,
                                                                             kv_heads, hd, max_seq_len);
    LAUNCHED(s, "kv store");
}

/* Splits of the keys so that the grid has a few blocks per multiprocessor even for one token
 * (flash-decoding): chunks of at least 128 keys. */
template <typename KV> static void attention_for(gpu_stream *s, const tl_attn_args *a) {
    /* sized for the longest context rounded up to a power of two (the forward records one
     * graph per such bucket: its splits must cover every length in it), at most the window */
    int32_t longest = 1;
    for (int32_t i = 0; i < a->n; i++)
        if (a->host_pos[i] + 1 > longest) longest = a->host_pos[i] + 1;
    int32_t bucket = 1;
    while (bucket < longest) bucket *= 2;
    longest = a->window > 0 && bucket > a->window ? a->window : bucket;
    const int64_t rows = (int64_t)a->n * a->n_heads;
    int splits = (int)((2 * s->sms + rows - 1) / rows);
    int chunk = (longest + splits - 1) / splits;
    if (chunk < 128) chunk = 128;
    chunk = (chunk + 31) / 32 * 32;
    splits = (longest + chunk - 1) / chunk;
    float *part = NULL;
    if (splits > 1) {
        const size_t need = (size_t)rows * splits * (a->head_dim + 2);
        if (need > s->part_floats) {
            dev_free(s->base.device, s->part);
            s->part = NULL;
            s->part_floats = 0;
            if (dev_alloc(s->base.device, need * sizeof(float), (void **)&s->part)) {
                note(s, gpuErrorMemoryAllocation, "attention scratch");
                return;
            }
            s->part_floats = need;
        }
        part = s->part;
    }
    /* a prefill of one sequence: QUERIES tokens a block share their key and value reads */
    bool one_seq = a->n >= 2 * QUERIES && splits == 1;
    for (int32_t i = 1; one_seq && i < a->n; i++) one_seq = a->host_seq[i] == a->host_seq[0];
#ifndef TL_HIP
    /* TORCHLESS_GPU_TC_ATTENTION=0: the float kernel for the prompt too (to compare) */
    if (one_seq && s->tc_attention && a->kv_dtype == TL_F16 && a->n >= TC_Q && a->head_dim % 16 == 0 &&
        a->head_dim <= 128) {
        const size_t smem = tc_attention_smem(a->head_dim);
        note(s, cudaFuncSetAttribute(attention_tc_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem),
             "attention's shared memory");
        dim3 tc_grid((unsigned)a->n_heads, (unsigned)((a->n + TC_Q - 1) / TC_Q));
        launch(s->stream, attention_tc_kernel, tc_grid, 128, smem, *a);
        return;
    }
#endif
    const int qt = one_seq ? QUERIES : 1;
    dim3 grid((unsigned)a->n_heads, (unsigned)((a->n + qt - 1) / qt), (unsigned)splits);
    const int dpl = (a->head_dim + 31) / 32;
#define ATTN(D, Q) launch(s->stream, attention_kernel<KV, D, Q>, grid, 32 * ATTN_WARPS, 0, *a, chunk, part)
    if (qt == 1) {
        if (dpl <= 1) ATTN(1, 1);
        else if (dpl <= 2) ATTN(2, 1);
        else if (dpl <= 4) ATTN(4, 1);
        else ATTN(8, 1);
    } else {
        if (dpl <= 1) ATTN(1, QUERIES);
        else if (dpl <= 2) ATTN(2, QUERIES);
        else if (dpl <= 4) ATTN(4, QUERIES);
        else ATTN(8, QUERIES);
    }
#undef ATTN
    if (splits > 1) {
        LAUNCHED(s, "attention");
        launch(s->stream, attention_merge, (unsigned)rows, 128, 0, part, splits, a->head_dim, a->out);
    }
}

static void attention(tl_stream *ts, const tl_attn_args *a) {
    gpu_stream *s = op_begin(ts);
    if (a->head_dim > ATTN_MAX_HD || a->head_dim % 8 != 0) {
        if (!s->err) {
            s->err = TL_ERR_UNSUPPORTED;
            snprintf(s->msg, sizeof s->msg, GPU_BACKEND ": attention heads of %d dims (a multiple of 8, at most %d)",
                     a->head_dim, ATTN_MAX_HD);
        }
        return;
    }
    if (a->kv_dtype == TL_F16) attention_for<__half>(s, a);
    else attention_for<float>(s, a);
    LAUNCHED(s, "attention");
}

static void add(tl_stream *ts, float *x, const float *y, int64_t n) {
    gpu_stream *s = op_begin(ts);
    launch(s->stream, add_kernel, blocks_for(n, THREADS), THREADS, 0, x, y, n);
    LAUNCHED(s, "add");
}

/* a = act(a) * b over n elements, and the same in F16 into ah where given */
static void glu_run(gpu_stream *s, tl_activation act, float *a, const float *b, int64_t n, __half *ah) {
    launch(s->stream, glu_kernel, blocks_for(n, THREADS), THREADS, 0, act == TL_ACT_GELU_TANH, a, b, n, ah);
    LAUNCHED(s, "glu");
}

static void glu(tl_stream *ts, tl_activation act, float *a, const float *b, int64_t n) {
    glu_run(op_begin(ts), act, a, b, n, nullptr);
}

static void softcap(tl_stream *ts, float *x, int64_t n, float c) {
    gpu_stream *s = op_begin(ts);
    launch(s->stream, softcap_kernel, blocks_for(n, THREADS), THREADS, 0, x, n, c);
    LAUNCHED(s, "softcap");
}

static void gather(tl_stream *ts, float *out, const float *x, const int32_t *rows, int32_t n, int64_t dim) {
    gpu_stream *s = op_begin(ts);
    launch(s->stream, gather_kernel, blocks_for((int64_t)n * dim, THREADS), THREADS, 0, out, x, rows, n, dim);
    LAUNCHED(s, "gather");
}

/* sample.cuh's three kernels; the results of every row in one download, unpacked into a's arrays */
static tl_status top_k(tl_stream *ts, const float *logits, int32_t rows, int32_t n_vocab, const tl_top_k_args *a) {
    gpu_stream *s = op_begin(ts);
    tl_status st = tl_top_k_check(GPU_BACKEND, rows, n_vocab, a);
    if (st) return st;
    const int32_t chunks = (n_vocab + TOPK_CHUNK - 1) / TOPK_CHUNK, k = a->k, n_ids = a->n_ids;
    const size_t parts = (size_t)rows * chunks * sizeof(topk_stats), keys = (size_t)rows * chunks * k * 8,
                 ids = ((size_t)rows * n_ids * 4 + 7) / 8 * 8, out_bytes = (size_t)rows * tl_top_k_row_bytes(k, n_ids);
    const size_t need = parts + keys + ids + out_bytes;
    if (need > s->topk_bytes && !s->err) {
        dev_free(ts->device, s->topk);
        s->topk = NULL;
        s->topk_bytes = 0;
        if (dev_alloc(ts->device, need, (void **)&s->topk)) {
            s->err = TL_ERR_NOMEM;
            snprintf(s->msg, sizeof s->msg, "%s (top_k scratch)", tl_last_error());
        } else {
            s->topk_bytes = need;
        }
    }
    if (out_bytes > s->topk_host_bytes && !s->err) {
        free(s->topk_host);
        s->topk_host = (uint8_t *)malloc(out_bytes);
        s->topk_host_bytes = s->topk_host ? out_bytes : 0;
        if (!s->topk_host) {
            s->err = TL_ERR_NOMEM;
            snprintf(s->msg, sizeof s->msg, GPU_BACKEND ": out of host memory (top_k)");
        }
    }
    if (s->err) return sync(ts);
    topk_stats *part = (topk_stats *)s->topk;
    uint64_t *key = (uint64_t *)(s->topk + parts);
    int32_t *d_ids = (int32_t *)(s->topk + parts + keys);
    uint8_t *out = s->topk + parts + keys + ids;
    if (n_ids) note(s, gpuMemcpyAsync(d_ids, a->ids, (size_t)rows * n_ids * 4, gpuMemcpyHostToDevice, s->stream), "copying to the device");
    launch(s->stream, top_k_max_kernel, dim3(chunks, rows), TOPK_WG, 0, logits, n_vocab, part);
    LAUNCHED(s, "top_k");
    launch(s->stream, top_k_chunk_kernel, dim3(chunks, rows), TOPK_WG, 0, logits, n_vocab, k, part, key);
    LAUNCHED(s, "top_k");
    launch(s->stream, top_k_merge_kernel, rows, TOPK_WG, 0, logits, n_vocab, k, part, key, d_ids, n_ids, out);
    LAUNCHED(s, "top_k");
    if ((st = download(ts, s->topk_host, out, out_bytes))) return st;
    tl_top_k_unpack(s->topk_host, rows, a);
    return TL_OK;
}

static void add_rmsnorm(tl_stream *ts, float *x, const float *y, float *out, const float *w, int64_t rows, int64_t dim,
                        float eps) {
    gpu_stream *s = op_begin(ts);
    int threads = dim >= 1024 ? 1024 : dim >= 256 ? 256 : 64;
    int8_t *q0, *qk;
    q8_norm_targets(s, out, rows, dim, &q0, &qk);
    if (dim % 256 == 0 && dim <= 8192)
        launch(s->stream, norm8_kernel<true>, (unsigned)rows, (unsigned)(dim / 8), 0, x, y, out, w, dim, eps, q0, qk,
                                                                                 q8_stride(dim), half_norm_target(s, out, rows, dim));
    else
        launch(s->stream, add_rmsnorm_kernel, (unsigned)rows, threads, 0, x, y, out, w, dim, eps, q0, qk, q8_stride(dim));
    LAUNCHED(s, "add + rmsnorm");
}

static void rope_store(tl_stream *ts, float *q, float *k, const float *v, const float *cs, int32_t n, int32_t n_heads,
                       int32_t kv_heads, int32_t hd, int32_t rope_dim, bool neox, void *k_cache, void *v_cache,
                       tl_dtype kv_dtype, const int32_t *pos, const int32_t *seq, int32_t max_seq_len) {
    gpu_stream *s = op_begin(ts);
    const int64_t items = (int64_t)n * (n_heads + kv_heads); /* a warp each, 4 to a block */
    launch(s->stream, rope_store_kernel, (unsigned)((items + 3) / 4), 128, 0,
        q, k, v, cs, n, n_heads, kv_heads, hd, rope_dim, neox, k_cache, v_cache, kv_dtype == TL_F16, pos, seq, max_seq_len);
    LAUNCHED(s, "rope + kv store");
}

/* q, k and v from the same rows: one launch where the three share dtype and width */
static void matmul_qkv(tl_stream *ts, const tl_tensor *wq, const tl_tensor *wk, const tl_tensor *wv, const float *x,
                       int64_t n, float *q, float *k, float *v, const float *bq, const float *bk, const float *bv) {
    gpu_stream *s = (gpu_stream *)ts;
    const int64_t width = wq->ne[0];
    if (wk->dtype == wq->dtype && wv->dtype == wq->dtype && wk->ne[0] == width && wv->ne[0] == width &&
        q8_path(s, wq, n)) {
        q8_quantize(s, wq->dtype, x, n, width);
        if (use_mmq(wq, n)) {
            const tl_tensor *const w[3] = {wq, wk, wv};
            float *const y[3] = {q, k, v};
            const float *const b[3] = {bq, bk, bv};
            by_dtype<mmq_launch>(wq->dtype, s, w, 3, n, y, b);
        } else {
            const q8_three m = {{view(wq), view(wk), view(wv)}, {q, k, v}, {bq, bk, bv}};
            by_dtype<q8_three_launch>(wq->dtype, s, &m, wq->ne[1] + wk->ne[1] + wv->ne[1], width, n);
        }
        LAUNCHED(s, "q, k, v");
        forget_written(s, q, n * wq->ne[1]);
        forget_written(s, k, n * wk->ne[1]);
        forget_written(s, v, n * wv->ne[1]);
        return;
    }
    matmul(ts, wq, x, n, q, bq);
    matmul(ts, wk, x, n, k, bk);
    matmul(ts, wv, x, n, v, bv);
}

template <int DT> struct glu_launch {
    static void run(gpu_stream *s, const tl_tensor *g, const tl_tensor *u, const float *x, int64_t n, float *a, int gelu) {
        const int64_t k = g->ne[0];
        const unsigned blocks = (unsigned)((g->ne[1] + 3) / 4);
        const bool wide = (DT == TL_Q4_K || DT == TL_Q5_K || DT == TL_Q6_K) ? s->gemv != 1 : s->gemv == 2;
        const bool quantized = DT != TL_F32 && DT != TL_F16 && DT != TL_BF16;
#define GLU(N, W) launch(s->stream, gemv_glu_kernel<DT, N, W>, blocks, 128, 0, view(g), view(u), x, k, a, gelu)
        if (n == 1 && wide && quantized) GLU(1, true);
        else if (n == 1) GLU(1, false);
        else GLU(2, false);
#undef GLU
    }
};

/* one pass over both matrices for one or two tokens; the plain ops otherwise */
static void matmul_glu(tl_stream *ts, const tl_tensor *gate, const tl_tensor *up, const float *x, int64_t n, float *a,
                       float *b, tl_activation act) {
    gpu_stream *s = (gpu_stream *)ts;
    if (gate->dtype == up->dtype && gate->ne[0] == up->ne[0] && q8_path(s, gate, n) && use_mmq(gate, n)) {
        q8_quantize(s, gate->dtype, x, n, gate->ne[0]); /* both in one launch, then the activation */
        const tl_tensor *const w[2] = {gate, up};
        float *const y[2] = {a, b};
        by_dtype<mmq_launch>(gate->dtype, s, w, 2, n, y, (const float *const *)NULL);
        LAUNCHED(s, "gate, up");
        forget_written(s, a, n * gate->ne[1]);
        forget_written(s, b, n * up->ne[1]);
        glu(ts, act, a, b, n * gate->ne[1]);
        return;
    }
    if (gate->dtype == up->dtype && q8_path(s, gate, n) && !use_mmq(gate, n)) {
        q8_quantize(s, gate->dtype, x, n, gate->ne[0]);
        by_dtype<q8_launch>(gate->dtype, s, gate, up, n, a, (const float *)NULL, act == TL_ACT_GELU_TANH ? 1 : 0);
        LAUNCHED(s, "gate + up");
        forget_written(s, a, n * gate->ne[1]);
        return;
    }
    if (n <= 2 && gate->dtype == up->dtype && gate->ne[0] % 256 == 0) {
        by_dtype<glu_launch>(gate->dtype, s, gate, up, x, n, a, act == TL_ACT_GELU_TANH);
        LAUNCHED(s, "gate + up");
        forget_written(s, a, n * gate->ne[1]);
        return;
    }
    matmul(ts, gate, x, n, a, NULL);
    matmul(ts, up, x, n, b, NULL);
    /* the activation, writing its rows in F16 as well where a GEMM will read them (down's) */
    const int64_t m = gate->ne[1];
    op_begin(ts);
    __half *ah = s->xh_used && n > GEMV_MAX_TOKENS && s->x_half && s->x_half_elems >= (size_t)(n * m) ? s->x_half : nullptr;
    glu_run(s, act, a, b, n * m, ah);
    if (ah) s->xh_src = a, s->xh_n = n, s->xh_k = m;
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
    o.graph_replay = graph_replay;
    o.capture_begin = capture_begin;
    o.capture_end = capture_end;
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
    o.top_k = top_k;
    o.add_rmsnorm = add_rmsnorm;
    o.rope_store = rope_store;
    o.matmul_glu = matmul_glu;
    o.matmul_qkv = matmul_qkv;
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
    snprintf(d->base.name, sizeof d->base.name, "%.127s", p.name);
    *out = &d->base;
    return TL_OK;
}

} // namespace GPU_NS

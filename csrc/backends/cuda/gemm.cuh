/* Our own prefill GEMM, y[n][m] = x[n][k] . W^T with float accumulation, for builds without a
 * BLAS (HIP without hipBLAS) and, on request (TORCHLESS_GPU_OWN_GEMM=1), on CUDA to test it
 * against cuBLAS. W is m rows of k, F16 (a dequantized tile) or F32; x is n rows of k floats;
 * any m, n, k. Included by cuda.cu.
 *
 * A block computes a 64 x 64 tile of y (64 tokens by 64 weight rows) in steps of 16 columns of
 * k: both operands' slices are staged in shared memory, k-major, and each of the 256 threads
 * keeps a 4 x 4 tile of sums in registers. The next step's slices are read from global memory
 * into registers while the current one is being multiplied. */
#ifndef TL_GEMM_CUH
#define TL_GEMM_CUH

#define GEMM_TILE 64   /* tokens and weight rows per block */
#define GEMM_STEP 16   /* columns of k per step */
#define GEMM_THREADS 256
/* elements of one operand's slice each thread moves per step */
#define GEMM_LOADS (GEMM_TILE * GEMM_STEP / GEMM_THREADS)

__device__ __forceinline__ float gemm_get(const float *p) { return *p; }
__device__ __forceinline__ float gemm_get(const __half *p) { return __half2float(*p); }

/* This thread's share of the slice [k0, k0 + GEMM_STEP) of rows [r0, r0 + GEMM_TILE) of a
 * (rows x k) matrix, zero past its edges. Neighbouring threads read neighbouring columns. */
template <typename T>
__device__ __forceinline__ void gemm_fetch(const T *__restrict__ a, int64_t rows, int64_t k, int64_t r0, int64_t k0,
                                           float v[GEMM_LOADS]) {
#pragma unroll
    for (int p = 0; p < GEMM_LOADS; p++) {
        const int i = p * GEMM_THREADS + threadIdx.x;
        const int64_t r = r0 + i / GEMM_STEP, c = k0 + i % GEMM_STEP;
        v[p] = r < rows && c < k ? gemm_get(a + (size_t)r * k + c) : 0.0f;
    }
}

/* ... and into shared memory, transposed: s[column][row]. The row stride is one more than the
 * tile, so the 16 columns a group of threads stores fall in different banks. */
__device__ __forceinline__ void gemm_stage(float s[GEMM_STEP][GEMM_TILE + 1], const float v[GEMM_LOADS]) {
#pragma unroll
    for (int p = 0; p < GEMM_LOADS; p++) {
        const int i = p * GEMM_THREADS + threadIdx.x;
        s[i % GEMM_STEP][i / GEMM_STEP] = v[p];
    }
}

/* y rows (tokens) blockIdx.y * 64.., columns (weight rows) blockIdx.x * 64..; row stride ldy.
 * Thread (tx, ty) of the 16 x 16 owns tokens ty + 16i and weight rows tx + 16j (i, j < 4):
 * strided, so that its reads of shared memory are conflict-free and its stores coalesce. */
template <typename TW>
__global__ void __launch_bounds__(GEMM_THREADS)
    gemm_kernel(const TW *__restrict__ w, const float *__restrict__ x, int64_t m, int64_t n, int64_t k,
                float *__restrict__ y, int64_t ldy) {
    grid_wait();
    __shared__ float xs[GEMM_STEP][GEMM_TILE + 1], ws[GEMM_STEP][GEMM_TILE + 1];
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const int64_t t0 = (int64_t)blockIdx.y * GEMM_TILE, r0 = (int64_t)blockIdx.x * GEMM_TILE;
    float acc[4][4] = {};
    float xv[GEMM_LOADS], wv[GEMM_LOADS];
    gemm_fetch(x, n, k, t0, 0, xv);
    gemm_fetch(w, m, k, r0, 0, wv);
    for (int64_t k0 = 0; k0 < k; k0 += GEMM_STEP) {
        gemm_stage(xs, xv);
        gemm_stage(ws, wv);
        __syncthreads();
        if (k0 + GEMM_STEP < k) {
            gemm_fetch(x, n, k, t0, k0 + GEMM_STEP, xv);
            gemm_fetch(w, m, k, r0, k0 + GEMM_STEP, wv);
        }
#pragma unroll
        for (int c = 0; c < GEMM_STEP; c++) {
            float a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; i++) a[i] = xs[c][ty + 16 * i], b[i] = ws[c][tx + 16 * i];
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) acc[i][j] += a[i] * b[j];
        }
        __syncthreads(); /* the slices are overwritten next step */
    }
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int64_t t = t0 + ty + 16 * i, r = r0 + tx + 16 * j;
            if (t < n && r < m) y[(size_t)t * ldy + r] = acc[i][j];
        }
}

/* y (row stride ldy) = x . W^T for W of m rows, on stream st */
template <typename TW>
static void own_gemm(gpuStream_t st, const TW *w, const float *x, int64_t m, int64_t n, int64_t k, float *y,
                     int64_t ldy) {
    const dim3 grid((unsigned)((m + GEMM_TILE - 1) / GEMM_TILE), (unsigned)((n + GEMM_TILE - 1) / GEMM_TILE));
    launch(st, gemm_kernel<TW>, grid, GEMM_THREADS, 0, w, x, m, n, k, y, ldy);
}

#endif

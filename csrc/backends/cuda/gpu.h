/* The few runtime and library names the GPU kernels use, spelled once for CUDA and once for
 * HIP: cuda.cu is compiled by nvcc as the CUDA backend and by hipcc (with TL_HIP defined)
 * as the HIP backend. Nothing else in the kernel sources is vendor-specific. GPU_NS is the
 * namespace each compilation lives in, so that a build with both backends links.
 * GPU_HAVE_BLAS: cuBLAS always; hipBLAS where the build found it (TL_HAVE_HIPBLAS), else the
 * prefill GEMM is our own (gemm.cuh). */
#ifndef TL_GPU_H
#define TL_GPU_H

#ifdef TL_HIP
#include <hip/hip_fp16.h>
#include <hip/hip_runtime.h>
#define GPU_BACKEND "hip"
#define GPU_NS tl_hip
#define GPU_FN(name) tl_hip_##name
#define gpuError_t hipError_t
#define gpuSuccess hipSuccess
#define gpuErrorMemoryAllocation hipErrorOutOfMemory
#define gpuGetErrorString hipGetErrorString
#define gpuGetLastError hipGetLastError
#define gpuGetDeviceCount hipGetDeviceCount
#define gpuSetDevice hipSetDevice
#define gpuGetDeviceProperties hipGetDeviceProperties
#define gpuDeviceProp hipDeviceProp_t
#define gpuMemGetInfo hipMemGetInfo
#define gpuMalloc hipMalloc
#define gpuFree hipFree
#define gpuMemcpy hipMemcpy
#define gpuMemcpyAsync hipMemcpyAsync
#define gpuMemsetAsync hipMemsetAsync
#define gpuMemcpyHostToDevice hipMemcpyHostToDevice
#define gpuMemcpyDeviceToHost hipMemcpyDeviceToHost
#define gpuStream_t hipStream_t
#define gpuStreamCreateWithFlags hipStreamCreateWithFlags
#define gpuStreamNonBlocking hipStreamNonBlocking
#define gpuStreamDestroy hipStreamDestroy
#define gpuStreamSynchronize hipStreamSynchronize
#define gpuGraph_t hipGraph_t
#define gpuGraphExec_t hipGraphExec_t
#define gpuStreamBeginCapture hipStreamBeginCapture
#define gpuStreamEndCapture hipStreamEndCapture
#define gpuStreamCaptureModeThreadLocal hipStreamCaptureModeThreadLocal
#define gpuGraphInstantiate(e, g, f) hipGraphInstantiate((e), (g), NULL, NULL, 0)
#define gpuGraphLaunch hipGraphLaunch
#define gpuGraphDestroy hipGraphDestroy
#define gpuGraphExecDestroy hipGraphExecDestroy
#ifdef TL_HAVE_HIPBLAS
/* the hipBLAS 2 interface (ROCm 6 and later): hipDataType and hipblasComputeType_t, as cuBLAS */
#define HIPBLAS_V2
#include <hipblas/hipblas.h>
#define GPU_HAVE_BLAS 1
#define gpublasHandle_t hipblasHandle_t
#define gpublasStatus_t hipblasStatus_t
#define GPUBLAS_STATUS_SUCCESS HIPBLAS_STATUS_SUCCESS
#define gpublasCreate hipblasCreate
#define gpublasDestroy hipblasDestroy
#define gpublasSetStream hipblasSetStream
#define gpublasSgemm hipblasSgemm
#define gpublasGemmEx hipblasGemmEx
#define GPUBLAS_OP_T HIPBLAS_OP_T
#define GPUBLAS_OP_N HIPBLAS_OP_N
#define GPU_R_16F HIP_R_16F
#define GPU_R_32F HIP_R_32F
#define GPUBLAS_COMPUTE_32F HIPBLAS_COMPUTE_32F
#define GPUBLAS_GEMM_DEFAULT HIPBLAS_GEMM_DEFAULT
#else
#define GPU_HAVE_BLAS 0
#endif
/* kernels work in groups of 32 lanes (half a wavefront on CDNA) */
#define SHFL_XOR(v, mask) __shfl_xor((v), (mask), 32)
#else
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdlib.h>
#define GPU_BACKEND "cuda"
#define GPU_NS tl_cuda
#define GPU_HAVE_BLAS 1
#define GPU_FN(name) tl_cuda_##name
#define gpuError_t cudaError_t
#define gpuSuccess cudaSuccess
#define gpuErrorMemoryAllocation cudaErrorMemoryAllocation
#define gpuGetErrorString cudaGetErrorString
#define gpuGetLastError cudaGetLastError
#define gpuGetDeviceCount cudaGetDeviceCount
#define gpuSetDevice cudaSetDevice
#define gpuGetDeviceProperties cudaGetDeviceProperties
#define gpuDeviceProp cudaDeviceProp
#define gpuMemGetInfo cudaMemGetInfo
#define gpuMalloc cudaMalloc
#define gpuFree cudaFree
#define gpuMemcpy cudaMemcpy
#define gpuMemcpyAsync cudaMemcpyAsync
#define gpuMemsetAsync cudaMemsetAsync
#define gpuMemcpyHostToDevice cudaMemcpyHostToDevice
#define gpuMemcpyDeviceToHost cudaMemcpyDeviceToHost
#define gpuStream_t cudaStream_t
#define gpuStreamCreateWithFlags cudaStreamCreateWithFlags
#define gpuStreamNonBlocking cudaStreamNonBlocking
#define gpuStreamDestroy cudaStreamDestroy
#define gpuStreamSynchronize cudaStreamSynchronize
#define gpuGraph_t cudaGraph_t
#define gpuGraphExec_t cudaGraphExec_t
#define gpuStreamBeginCapture cudaStreamBeginCapture
#define gpuStreamEndCapture cudaStreamEndCapture
#define gpuStreamCaptureModeThreadLocal cudaStreamCaptureModeThreadLocal
#define gpuGraphInstantiate(e, g, f) cudaGraphInstantiate((e), (g), (f))
#define gpuGraphLaunch cudaGraphLaunch
#define gpuGraphDestroy cudaGraphDestroy
#define gpuGraphExecDestroy cudaGraphExecDestroy
#define gpublasHandle_t cublasHandle_t
#define gpublasStatus_t cublasStatus_t
#define GPUBLAS_STATUS_SUCCESS CUBLAS_STATUS_SUCCESS
#define gpublasCreate cublasCreate
#define gpublasDestroy cublasDestroy
#define gpublasSetStream cublasSetStream
#define gpublasSgemm cublasSgemm
#define gpublasGemmEx cublasGemmEx
#define GPUBLAS_OP_T CUBLAS_OP_T
#define GPUBLAS_OP_N CUBLAS_OP_N
#define GPU_R_16F CUDA_R_16F
#define GPU_R_32F CUDA_R_32F
#define GPUBLAS_COMPUTE_32F CUBLAS_COMPUTE_32F
#define GPUBLAS_GEMM_DEFAULT CUBLAS_GEMM_DEFAULT
#define SHFL_XOR(v, mask) __shfl_xor_sync(0xffffffffu, (v), (mask), 32)
#endif

/* Programmatic dependent launch (CUDA on Hopper and later): launch() lets a kernel start while
 * the one before it in the stream (graphs included) finishes, so that its blocks are placed and
 * started while the last blocks of the one before drain. Every kernel of the backend calls
 * grid_wait() before it reads or writes anything another kernel touches: the wait returns when
 * the kernel before has finished and its writes are visible (and since that kernel waited too,
 * so had all before it); then it lets the next kernel's blocks start. tests/test_gpu.py checks
 * that every kernel calls it. TORCHLESS_GPU_PDL=0 launches as <<<>>> does; HIP always does.
 * (Measured on the H100: prefetching a GEMV's rows to L2 before the wait made decode slower. On
 * the H200: letting the next kernel start before the small kernels between the GEMVs wait, so
 * that a GEMV's blocks and first loads would come a kernel earlier, made it slower too, by 2-6%.) */
__device__ __forceinline__ void grid_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;\n\tgriddepcontrol.launch_dependents;" ::: "memory");
#endif
}

#ifdef TL_HIP
template <typename... P, typename... A>
static void launch(gpuStream_t st, void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, A &&...args) {
    kernel<<<grid, block, smem, st>>>(static_cast<P>(args)...);
}
#else
static bool pdl_enabled(void) {
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("TORCHLESS_GPU_PDL");
        on = !(e && e[0] == '0');
    }
    return on;
}
/* (a launch's failure is the runtime's last error, which the caller's LAUNCHED reads) */
template <typename... P, typename... A>
static void launch(gpuStream_t st, void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, A &&...args) {
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid, cfg.blockDim = block, cfg.dynamicSmemBytes = smem, cfg.stream = st;
    cfg.attrs = attr, cfg.numAttrs = pdl_enabled() ? 1 : 0;
    (void)cudaLaunchKernelEx(&cfg, kernel, static_cast<P>(args)...);
}
#endif

#endif

/* cuda_internal.cuh — state and helpers shared by the CUDA kernel files only (kernels/cuda/<op>.cu);
 * not a public header. The entry points for the registry are declared in cuda_backend.h.
 *
 * Precision: this first version keeps activations in fp32 (ops->act_bytes = 4), exactly like the CPU
 * backend, so that every op can be compared with the CPU op on the same inputs. Matrix products use
 * CUBLAS_COMPUTE_32F (no TF32).
 *
 * Errors: kernels return void (kernels.h); a failed launch or library call is recorded in the context
 * (the first one wins) and returned by the next sync(), upload() or download().
 *
 * Determinism: no atomics. Every reduction is either a warp butterfly (__shfl_xor_sync; every lane ends
 * with the same bits), a fixed shared-memory tree, or a sequential loop; grid sizes depend only on the
 * problem size and the device, never on timing. */
#ifndef FM_CUDA_INTERNAL_CUH
#define FM_CUDA_INTERNAL_CUH

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <stddef.h>
#include <stdint.h>

#include <type_traits>

extern "C" {
#include "../kernels.h"
#include "cuda_backend.h"
}

/* sum_squares: the first pass uses at most this many blocks (partial sums in double). */
#define FM_CUDA_SUMSQ_BLOCKS 1024
/* cuBLAS / cuBLASLt workspace (shared: both run on the backend's one stream). */
#define FM_CUDA_WORKSPACE_BYTES ((size_t)32 << 20)
/* Cached cuBLASLt algorithm choices for matmul_forward (one per shape and alignment). */
#define FM_CUDA_LT_CACHE 64
/* Attention keeps one query (or key) row of hs floats per lane group in registers: hs <= this. */
#define FM_CUDA_ATT_MAXD 256

typedef struct fm_cuda_lt_entry {
    int used;
    int N, C, OC, bias;
    int align_a, align_b, align_d;
    int ok; /* 0: no cuBLASLt algorithm, use cublasSgemm + bias kernel */
    cublasLtMatmulAlgo_t algo;
} fm_cuda_lt_entry;

typedef struct fm_cuda_ctx {
    int device;
    int sm_count;
    char describe[256]; /* ops->describe: "<name> (device <d>, sm_<XY>, <n> SMs)", filled at init */
    cudaStream_t stream;
    cublasHandle_t blas;
    cublasLtHandle_t lt;
    void *workspace;
    size_t workspace_bytes;
    double *sumsq_part; /* FM_CUDA_SUMSQ_BLOCKS + 1 doubles, device */
    double *sumsq_host; /* 1 double, pinned host memory */
    fm_cuda_lt_entry lt_cache[FM_CUDA_LT_CACHE];
    int lt_next;
    int failed;    /* non-zero after the first recorded error */
    char err[512]; /* the first recorded error */
} fm_cuda_ctx;

#define FM_CUDA_CX(be) ((fm_cuda_ctx *)(be)->impl)

/* Records the first error (later ones are dropped: they are usually consequences). */
void fm_cuda_fail(fm_cuda_ctx *cx, const char *what, const char *detail);
/* Records `e` when it is not cudaSuccess. */
void fm_cuda_check(fm_cuda_ctx *cx, cudaError_t e, const char *what);
/* Records a launch error of the kernel just launched (cudaGetLastError). */
void fm_cuda_check_launch(fm_cuda_ctx *cx, const char *what);
/* Records a cuBLAS / cuBLASLt status that is not CUBLAS_STATUS_SUCCESS. */
void fm_cuda_check_blas(fm_cuda_ctx *cx, cublasStatus_t s, const char *what);

/* Blocks for a grid-stride loop over n items with `threads` threads per block: enough to fill the
 * device, never more than needed. Depends only on n and the device. */
static inline unsigned fm_cuda_grid(const fm_cuda_ctx *cx, size_t n, unsigned threads)
{
    size_t b = (n + threads - 1) / threads;
    size_t cap = (size_t)(cx->sm_count > 0 ? cx->sm_count : 1) * 32u;
    if (b > cap) b = cap;
    if (b < 1) b = 1;
    return (unsigned)b;
}

/* Butterfly reductions over a full warp: every lane ends with the same value (a + b == b + a). */
__device__ __forceinline__ float fm_warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ double fm_warp_sum_d(double v)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float fm_warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Block-wide reductions for blockDim.x a multiple of 32 (<= 1024); `sh` holds 32 values. Every thread
 * gets the result. Fixed order: warps first, then warp 0 over the warp results. */
__device__ __forceinline__ float fm_block_sum(float v, float *sh)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = fm_warp_sum(v);
    __syncthreads(); /* sh may still be read from a previous call */
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    float r = lane < nw ? sh[lane] : 0.0f;
    r = fm_warp_sum(r);
    return r;
}
__device__ __forceinline__ float fm_block_max(float v, float *sh)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = fm_warp_max(v);
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    float r = lane < nw ? sh[lane] : -INFINITY;
    r = fm_warp_max(r);
    return r;
}
__device__ __forceinline__ double fm_block_sum_d(double v, double *sh)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = fm_warp_sum_d(v);
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    double r = lane < nw ? sh[lane] : 0.0;
    r = fm_warp_sum_d(r);
    return r;
}

/* out[c] += sum over rows r of in[r*C + c] (rows in a fixed order per column), c < C: the column sum
 * used for dbias (matmul.cu). */
void fm_cuda_colsum_acc(fm_cuda_ctx *cx, float *out, const float *in, int rows, int C);

/* ---- typed kernels (one file per family, as kernels/cpu) --------------------------------------- */
/* fm_cuda_<op> has exactly the type of the table entry <op> (declared from it, so a definition with
 * another signature does not link); the shapes are documented once, in kernels.h. Each takes the
 * backend first and reads its context with FM_CUDA_CX(be); the operation table of cuda_backend.cu
 * points straight at them. */
#define FM_CUDA_KERNEL(op) std::remove_pointer<decltype(fm_kernel_ops::op)>::type fm_cuda_##op
FM_CUDA_KERNEL(encoder_forward);       /* encoder.cu */
FM_CUDA_KERNEL(encoder_backward);      /* encoder.cu */
FM_CUDA_KERNEL(embedding_forward);     /* encoder.cu */
FM_CUDA_KERNEL(embedding_backward);    /* encoder.cu */
FM_CUDA_KERNEL(layernorm_forward);     /* layernorm.cu */
FM_CUDA_KERNEL(layernorm_backward);    /* layernorm.cu */
FM_CUDA_KERNEL(rmsnorm_forward);       /* rmsnorm.cu */
FM_CUDA_KERNEL(rmsnorm_backward);      /* rmsnorm.cu */
FM_CUDA_KERNEL(residual_forward);      /* residual.cu */
FM_CUDA_KERNEL(matmul_forward);        /* matmul.cu */
FM_CUDA_KERNEL(matmul_backward);       /* matmul.cu */
FM_CUDA_KERNEL(gelu_forward);          /* gelu.cu */
FM_CUDA_KERNEL(gelu_backward);         /* gelu.cu */
FM_CUDA_KERNEL(swiglu_forward);        /* swiglu.cu */
FM_CUDA_KERNEL(swiglu_backward);       /* swiglu.cu */
FM_CUDA_KERNEL(rope_forward);          /* rope.cu */
FM_CUDA_KERNEL(rope_backward);         /* rope.cu */
FM_CUDA_KERNEL(attention_forward);     /* attention.cu */
FM_CUDA_KERNEL(attention_backward);    /* attention.cu */
FM_CUDA_KERNEL(attention_decode);      /* attention.cu */
FM_CUDA_KERNEL(softmax_xent_forward);  /* softmax_xent.cu */
FM_CUDA_KERNEL(softmax_xent_backward); /* softmax_xent.cu */
FM_CUDA_KERNEL(adamw_update);          /* adamw.cu */
FM_CUDA_KERNEL(sum_squares);           /* adamw.cu */
FM_CUDA_KERNEL(to_bf16);               /* convert.cu */

/* fp32 -> bf16 bits, round to nearest, ties to even, NaN kept (quiet, same sign): the integer formula
 * of the CPU backend (kernels/cpu/cpu_internal.h, fm_cpu_round_bf16), so both give the same bits,
 * subnormals and NaN payloads included (kernels.h, "Precision"). */
__device__ __forceinline__ unsigned short fm_cuda_round_bf16(float f)
{
    const unsigned u = __float_as_uint(f);
    const unsigned rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    const unsigned nan = (u >> 16) | 0x0040u;
    return (unsigned short)((u & 0x7FFFFFFFu) > 0x7F800000u ? nan : rounded);
}

#endif /* FM_CUDA_INTERNAL_CUH */

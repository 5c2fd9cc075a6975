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
/* Each takes the backend first and reads its context with FM_CUDA_CX(be), so the operation table of
 * cuda_backend.c points straight at them. Shapes: kernels.h, the op of the same name. */
void fm_cuda_encoder_forward(fm_backend *be, float *out, const int32_t *tokens, const float *wte,
                             const float *wpe, int B, int T, int C);
void fm_cuda_encoder_backward(fm_backend *be, float *dwte, float *dwpe, const float *dout,
                              const int32_t *tokens, int B, int T, int C);
void fm_cuda_layernorm_forward(fm_backend *be, float *out, float *mean, float *rstd,
                               const float *inp, const float *weight, const float *bias, int N,
                               int C);
void fm_cuda_layernorm_backward(fm_backend *be, float *dinp, float *dweight, float *dbias,
                                const float *dout, const float *inp, const float *weight,
                                const float *mean, const float *rstd, int N, int C);
void fm_cuda_residual_forward(fm_backend *be, float *out, const float *a, const float *b, size_t n);
void fm_cuda_matmul_forward(fm_backend *be, float *out, const float *inp, const float *weight,
                            const float *bias, int N, int C, int OC);
void fm_cuda_matmul_backward(fm_backend *be, float *dinp, float *dweight, float *dbias,
                             const float *dout, const float *inp, const float *weight, int N, int C,
                             int OC);
void fm_cuda_gelu_forward(fm_backend *be, float *out, const float *inp, size_t n);
void fm_cuda_gelu_backward(fm_backend *be, float *dinp, const float *inp, const float *dout,
                           size_t n);
void fm_cuda_attention_forward(fm_backend *be, float *out, float *lse, const float *qkv, int B,
                               int T, int C, int NH);
void fm_cuda_attention_backward(fm_backend *be, float *dqkv, const float *dout, const float *qkv,
                                const float *out, const float *lse, int B, int T, int C, int NH);
void fm_cuda_attention_decode(fm_backend *be, float *out, float *kcache, float *vcache,
                              const float *qkv, int B, int Tq, int pos0, int maxT, int C, int NH);
void fm_cuda_softmax_xent_forward(fm_backend *be, float *losses, float *lse, const float *logits,
                                  const int32_t *targets, int N, int V, int Vp);
void fm_cuda_softmax_xent_backward(fm_backend *be, float *logits, const float *lse,
                                   const int32_t *targets, float dloss, int N, int V, int Vp);
void fm_cuda_adamw_update(fm_backend *be, float *params, float *grads, float *m, float *v, size_t n,
                          float lr, float beta1, float beta2, float eps, float weight_decay,
                          float grad_scale, int64_t t);
void fm_cuda_sum_squares(fm_backend *be, double *out, const float *grads, size_t n);

#endif /* FM_CUDA_INTERNAL_CUH */

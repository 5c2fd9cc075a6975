/* cuda_internal.cuh — state and helpers shared by the CUDA kernel files only (kernels/cuda/<op>.cu);
 * not a public header. The entry points for the registry are declared in cuda_backend.h.
 *
 * Precision (kernels.h, "Precision"): two operation tables, as the CPU backend has.
 *   - fp32 (act_bytes 4): every tensor fp32. Matrix products run on tensor cores in TF32
 *     (CUBLAS_COMPUTE_32F_FAST_TF32: inputs rounded to a 10-bit significand, products summed in fp32),
 *     the PyTorch default for matmuls with allow_tf32; FM_CUDA_TF32=0 in the environment selects full
 *     fp32 products (CUBLAS_COMPUTE_32F) instead, e.g. to compare with the CPU at fp32 tolerances.
 *   - bf16 (act_bytes 2, sm_80 and newer): the "act" arguments are bf16 (stored as unsigned short
 *     bits, rounded with fm_cuda_round_bf16, the CPU's rule); matmuls are cuBLASLt bf16 x bf16 with
 *     CUBLAS_COMPUTE_32F (fp32 accumulation) and fp32 output; matmul_backward rounds the fp32 dout
 *     to bf16 for its products in the same pass that sums dbias from the fp32 dout.
 *   The kernels whose "act" output or input changes type have a `_bf16` twin (declared below); the
 *   others are shared by both tables.
 *
 * Errors: kernels return void (kernels.h); a failed launch or library call is recorded in the context
 * (the first one wins) and returned by the next sync(), upload() or download(). With
 * FM_CUDA_SYNC_CHECK=1 in the environment every op synchronises its stream after its launch(es) and
 * records the first failure under the op's name (slow: a debugging aid, docs/troubleshooting.md).
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
/* Cached cuBLASLt algorithm choices (one per GEMM kind, shape, type and alignment). */
#define FM_CUDA_LT_CACHE 128
/* Largest bf16 copy of a matmul_backward dout (rows are processed in chunks beyond it); the
 * environment's FM_CUDA_DOUT16_BYTES overrides it (tests use a small value to exercise the chunks). */
#define FM_CUDA_DOUT16_BYTES ((size_t)512 << 20)
/* Attention keeps one query (or key) row of hs floats per lane group in registers: hs <= this. */
#define FM_CUDA_ATT_MAXD 256

/* One cuBLASLt GEMM: D (m,n) = alpha op(A) op(B) + beta C [+ bias], column-major; the key of the
 * algorithm cache (matmul.cu). */
typedef struct fm_cuda_gemm_key {
    int m, n, k;
    int ta, tb;   /* 1: op is a transpose */
    int lda, ldb, ldd;
    int bf16;     /* 1: A and B bf16, 0: fp32 */
    int bias;     /* 1: BIAS epilogue */
    int accumulate; /* beta 1 */
    int align_a, align_b, align_d, align_bias;
} fm_cuda_gemm_key;

typedef struct fm_cuda_lt_entry {
    int used;
    fm_cuda_gemm_key key;
    int ok; /* 0: no cuBLASLt algorithm: the fallback (cuBLAS) runs, reported once per shape */
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
    int lt_fallbacks;   /* GEMM shapes that fell back to cuBLAS (each reported once on stderr) */
    unsigned precision; /* FM_PRECISION_FP32 or FM_PRECISION_BF16 */
    int tf32;           /* fp32 instance: 1 = TF32 tensor-core products (default), 0 = full fp32 */
    int cc_major, cc_minor; /* compute capability */
    int sync_check;     /* FM_CUDA_SYNC_CHECK=1: synchronise and check after every op */
    size_t dout16_bytes; /* FM_CUDA_DOUT16_BYTES or the environment's value */
    void *scratch;      /* op-local device scratch (fm_cuda_scratch), grown on demand */
    size_t scratch_bytes;
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
/* Both check_launch and check_blas end with this: with FM_CUDA_SYNC_CHECK=1, synchronises the stream
 * and records a failure under `what` (the op's name), so the failing op is named. */
void fm_cuda_debug_sync(fm_cuda_ctx *cx, const char *what);
/* Device scratch of at least `bytes`, valid until the next call (ops run in order on one stream and
 * never hold it across ops). Grows by synchronising, freeing and reallocating; NULL (error recorded
 * under `what`) when the device is out of memory. */
void *fm_cuda_scratch(fm_cuda_ctx *cx, size_t bytes, const char *what);

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

/* Column reductions over the whole GPU, deterministic (two passes, no atomics): the first pass of an
 * op writes per-row-block partial sums part[rb * C + c] (rb < RB) for each of its `nout` outputs
 * (output j at part + j * RB * C), then fm_cuda_colreduce_finish adds, for every column c, the RB
 * partials of each output in the fixed order rb = 0..RB-1 to out_j[c]. RB depends only on (rows, C)
 * and the device (fm_cuda_row_blocks), never on timing. */
int fm_cuda_row_blocks(const fm_cuda_ctx *cx, int rows, int col_blocks);
void fm_cuda_colreduce_finish(fm_cuda_ctx *cx, float *out0, float *out1, const float *part, int RB,
                              int C, const char *what);
/* out[c] += sum over rows r of in[r*C + c] (fixed order), c < C: the column sum used for dbias
 * (matmul.cu), on the whole GPU (two passes through the scratch). */
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
/* The bf16 table's twins (act arguments bf16; kernels.h, "Precision"). */
#define FM_CUDA_KERNEL_BF16(op) std::remove_pointer<decltype(fm_kernel_ops::op)>::type fm_cuda_##op##_bf16
FM_CUDA_KERNEL_BF16(layernorm_forward);  /* layernorm.cu */
FM_CUDA_KERNEL_BF16(rmsnorm_forward);    /* rmsnorm.cu */
FM_CUDA_KERNEL_BF16(matmul_forward);     /* matmul.cu */
FM_CUDA_KERNEL_BF16(matmul_backward);    /* matmul.cu */
FM_CUDA_KERNEL_BF16(gelu_forward);       /* gelu.cu */
FM_CUDA_KERNEL_BF16(swiglu_forward);     /* swiglu.cu */
FM_CUDA_KERNEL_BF16(attention_forward);  /* attention_bf16.cu (or the attention owner's file) */
FM_CUDA_KERNEL_BF16(attention_backward); /* attention_bf16.cu */
FM_CUDA_KERNEL_BF16(attention_decode);   /* attention_bf16.cu */

typedef unsigned short fm_cuda_bf16; /* bf16 bits, as stored in "act" buffers */

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

/* bf16 bits -> fp32 (exact) */
__device__ __forceinline__ float fm_cuda_bf16_to_f32(unsigned short h)
{
    return __uint_as_float((unsigned)h << 16);
}

/* Stores one fp32 value as the output type: fp32, or bf16 bits rounded with fm_cuda_round_bf16. */
__device__ __forceinline__ void fm_cuda_store(float *p, float v) { *p = v; }
__device__ __forceinline__ void fm_cuda_store(fm_cuda_bf16 *p, float v) { *p = fm_cuda_round_bf16(v); }
/* Four consecutive values as one 128-bit (fp32) or 64-bit (bf16) store; p aligned to that size. */
__device__ __forceinline__ void fm_cuda_store4(float *p, float4 v)
{
    *reinterpret_cast<float4 *>(p) = v;
}
__device__ __forceinline__ void fm_cuda_store4(fm_cuda_bf16 *p, float4 v)
{
    uint2 u;
    u.x = (unsigned)fm_cuda_round_bf16(v.x) | ((unsigned)fm_cuda_round_bf16(v.y) << 16);
    u.y = (unsigned)fm_cuda_round_bf16(v.z) | ((unsigned)fm_cuda_round_bf16(v.w) << 16);
    *reinterpret_cast<uint2 *>(p) = u;
}
/* Whether every pointer given is 16-byte aligned (the 128-bit paths' condition, with n % 4 == 0). */
static inline int fm_cuda_al16(const void *a, const void *b = NULL, const void *c = NULL)
{
    return ((uintptr_t)a % 16u) == 0 && ((uintptr_t)b % 16u) == 0 && ((uintptr_t)c % 16u) == 0;
}

#endif /* FM_CUDA_INTERNAL_CUH */

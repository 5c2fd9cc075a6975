/* attention_cudnn.cuh — cuDNN 9 SDPA (fused flash attention on tensor cores) for the bf16 attention of
 * attention.cu; compiled only when FM_HAVE_CUDNN (kernels/cuda/CMakeLists.txt). Not a public header.
 *
 * Tensors (all device pointers, element offsets as in kernels.h, shapes with hs = C / NH):
 *   qkv16 (B,T,W) bf16 [q | k | v] rows, W = (NH + 2 NKV) hs: q viewed as (B,NH,T,hs) with strides
 *   (T W, hs, W, 1), k and v as (B,NKV,T,hs) at offsets C and C + NKV hs (cuDNN's GQA: query head h
 *   reads key/value head h / (NH/NKV), as kernels.h states); out16 (B,T,C) bf16 viewed as
 *   (B,NH,T,hs) with strides (T C, hs, C, 1); lse (B,NH,T) fp32 = cuDNN's "Stats" (max + ln sum exp of
 *   the scaled, causally masked scores: natural log); dout16 (B,T,C) bf16 as out16; dqkv16 (B,T,W)
 *   bf16 as qkv16 (dk, dv of a key/value head summed over its query heads by cuDNN).
 * Causal mask top-left (query i sees keys j <= i), scale 1/sqrt(hs), no dropout; the backward is
 * cuDNN's deterministic algorithm (bit-identical reruns; on Hopper a dP workspace of about
 * B NH T^2 2 bytes).
 *
 * Graphs (forward and backward) are built once per shape (B, T, NH, NKV, hs) and cached with their
 * execution plans; the workspace grows to the largest plan's. A shape cuDNN cannot run (head size not a
 * multiple of 8 or above its limit, an engine refused) is remembered as unsupported and named once on
 * stderr; the caller then uses its built-in kernels. */
#ifndef FM_CUDA_ATTENTION_CUDNN_CUH
#define FM_CUDA_ATTENTION_CUDNN_CUH

#include "cuda_internal.cuh"

typedef struct fm_cuda_cudnn fm_cuda_cudnn; /* handle, graph cache, workspace (attention_cudnn.cu) */

enum { FM_CUDNN_FWD = 0, FM_CUDNN_BWD = 1 };

/* The cached graph of `kind` for this shape, built on first use; NULL when cuDNN cannot run it (or
 * cuDNN could not be initialised: the reason is printed once). *st is created on first use. Errors of
 * the CUDA runtime while building are recorded in cx (and NULL returned). */
const void *fm_cuda_cudnn_graph(fm_cuda_ctx *cx, fm_cuda_cudnn **st, int kind, int B, int T, int NH,
                                int NKV, int hs);

/* Queues the forward graph g (from fm_cuda_cudnn_graph) on cx->stream: out16, lse from qkv16. */
void fm_cuda_cudnn_forward(fm_cuda_ctx *cx, fm_cuda_cudnn *st, const void *g, void *out16, float *lse,
                           const void *qkv16, int B, int T, int NH, int NKV, int hs);

/* Queues the backward graph g on cx->stream: dqkv16 (overwritten) from dout16, qkv16, out16, lse. */
void fm_cuda_cudnn_backward(fm_cuda_ctx *cx, fm_cuda_cudnn *st, const void *g, void *dqkv16,
                            const void *dout16, const void *qkv16, const void *out16,
                            const float *lse, int B, int T, int NH, int NKV, int hs);

/* Releases everything *st holds (the stream must be idle) and sets *st to NULL; safe on NULL. */
void fm_cuda_cudnn_free(fm_cuda_cudnn **st);

#endif /* FM_CUDA_ATTENTION_CUDNN_CUH */

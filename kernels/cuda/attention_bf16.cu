/* attention_bf16.cu — the bf16 table's attention ops (kernels.h, "Precision": out is an "act" tensor,
 * bf16; qkv, lse, dout and dqkv stay fp32) as a bridge over the fp32 kernels of attention.cu:
 *   forward / decode: the fp32 kernel writes out into the scratch (accumulated in fp32), then one
 *     pass rounds it to bf16 (fm_cuda_round_bf16): "accumulated in fp32, rounded once when stored".
 *   backward: out (bf16, forward's) is widened exactly to fp32 in the scratch, then the fp32 kernel
 *     runs (it reads out only for D = rowsum(dO * O)).
 * Correct by construction and as fast as the fp32 kernels plus one (B,T,C) pass; the tensor-core
 * flash attention for the bf16 table (issue 15, the attention helper's part) replaces this file's
 * three functions. */
#include "cuda_internal.cuh"

__global__ void widen_bf16_k(float *dst, const fm_cuda_bf16 *src, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = fm_cuda_bf16_to_f32(src[i]);
}

/* out (B,T,C) bf16; lse (B,NH,T); qkv (B,T,W) */
void fm_cuda_attention_forward_bf16(fm_backend *be, float *out, float *lse, const float *qkv, int B,
                                    int T, int C, int NH, int NKV)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    const size_t n = (size_t)B * (size_t)T * (size_t)C;
    if (n == 0) return;
    float *o32 = (float *)fm_cuda_scratch(cx, n * sizeof(float), "attention_forward (bf16)");
    if (!o32) return;
    fm_cuda_attention_forward(be, o32, lse, qkv, B, T, C, NH, NKV);
    fm_cuda_to_bf16(be, out, o32, n);
}

/* dqkv (B,T,W); dout (B,T,C) fp32; qkv (B,T,W); out (B,T,C) bf16 from forward; lse (B,NH,T) */
void fm_cuda_attention_backward_bf16(fm_backend *be, float *dqkv, const float *dout, const float *qkv,
                                     const float *out, const float *lse, int B, int T, int C, int NH,
                                     int NKV)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    const size_t n = (size_t)B * (size_t)T * (size_t)C;
    if (n == 0) return;
    float *o32 = (float *)fm_cuda_scratch(cx, n * sizeof(float), "attention_backward (bf16)");
    if (!o32) return;
    widen_bf16_k<<<fm_cuda_grid(cx, n, 256), 256, 0, cx->stream>>>(o32, (const fm_cuda_bf16 *)out, n);
    fm_cuda_check_launch(cx, "attention_backward (bf16 out widened)");
    fm_cuda_attention_backward(be, dqkv, dout, qkv, o32, lse, B, T, C, NH, NKV);
}

/* out (B,Tq,C) bf16; the rest as fm_cuda_attention_decode */
void fm_cuda_attention_decode_bf16(fm_backend *be, float *out, float *kcache, float *vcache,
                                   const float *qkv, int B, int Tq, int pos0, int maxT, int C, int NH,
                                   int NKV)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    const size_t n = (size_t)B * (size_t)Tq * (size_t)C;
    if (n == 0) return;
    float *o32 = (float *)fm_cuda_scratch(cx, n * sizeof(float), "attention_decode (bf16)");
    if (!o32) return;
    fm_cuda_attention_decode(be, o32, kcache, vcache, qkv, B, Tq, pos0, maxT, C, NH, NKV);
    fm_cuda_to_bf16(be, out, o32, n);
}

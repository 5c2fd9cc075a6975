/* convert.cu — the to_bf16 op (kernels.h, "Precision"): fp32 -> bf16 bits with fm_cuda_round_bf16,
 * the CPU backend's rounding (round to nearest, ties to even, NaN kept), grid-strided; 128-bit loads
 * and 64-bit stores of 4 elements when src is 16-byte and dst 8-byte aligned, the tail (or everything,
 * when unaligned) element by element. */
#include "cuda_internal.cuh"

__global__ void to_bf16_k(fm_cuda_bf16 *dst, const float *src, size_t n, size_t nv)
{
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    const size_t t0 = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    for (size_t v = t0; v < nv; v += stride)
        fm_cuda_store4(dst + 4 * v, reinterpret_cast<const float4 *>(src)[v]);
    for (size_t i = 4 * nv + t0; i < n; i += stride) dst[i] = fm_cuda_round_bf16(src[i]);
}

/* dst (n) bf16 = to_bf16(src (n)) */
void fm_cuda_to_bf16(fm_backend *be, void *dst, const float *src, size_t n)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    if (n == 0) return;
    const size_t nv = fm_cuda_al16(src) && (uintptr_t)dst % 8u == 0 ? n / 4 : 0;
    to_bf16_k<<<fm_cuda_grid(cx, nv ? nv : n, 256), 256, 0, cx->stream>>>((fm_cuda_bf16 *)dst, src,
                                                                         n, nv);
    fm_cuda_check_launch(cx, "to_bf16");
}

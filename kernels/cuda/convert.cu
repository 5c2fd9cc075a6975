/* convert.cu — the to_bf16 op (kernels.h, "Precision"): fp32 -> bf16 bits with fm_cuda_round_bf16,
 * the CPU backend's rounding (round to nearest, ties to even, NaN kept), grid-strided. */
#include "cuda_internal.cuh"

__global__ void to_bf16_k(unsigned short *dst, const float *src, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = fm_cuda_round_bf16(src[i]);
}

/* dst (n) bf16 = to_bf16(src (n)) */
void fm_cuda_to_bf16(fm_backend *be, void *dst, const float *src, size_t n)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    if (n == 0) return;
    to_bf16_k<<<fm_cuda_grid(cx, n, 256), 256, 0, cx->stream>>>((unsigned short *)dst, src, n);
    fm_cuda_check_launch(cx, "to_bf16");
}

/* residual.cu — the residual addition (CUDA, fp32): a grid-stride streaming kernel. Its backward is the
 * identity (the model reads the residual stream's gradient directly), so there is no kernel. */
#include "cuda_internal.cuh"

__global__ void res_fwd_k(float *out, const float *a, const float *b, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        out[i] = a[i] + b[i];
}

void fm_cuda_residual_forward(fm_backend *be, float *out, const float *a, const float *b, size_t n)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    if (n == 0) return;
    res_fwd_k<<<fm_cuda_grid(cx, n, 256), 256, 0, cx->stream>>>(out, a, b, n);
    fm_cuda_check_launch(cx, "residual_forward");
}

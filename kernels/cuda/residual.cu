/* residual.cu — residual additions, forward and backward (CUDA, fp32): grid-stride streaming kernels. */
#include "cuda_internal.cuh"

__global__ void res_fwd_k(float *out, const float *a, const float *b, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        out[i] = a[i] + b[i];
}

__global__ void res_bwd_k(float *da, float *db, const float *dout, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        const float d = dout[i];
        da[i] += d;
        db[i] += d;
    }
}

void fm_cuda_residual_forward(fm_cuda_ctx *cx, float *out, const float *a, const float *b, size_t n)
{
    if (n == 0) return;
    res_fwd_k<<<fm_cuda_grid(cx, n, 256), 256, 0, cx->stream>>>(out, a, b, n);
    fm_cuda_check_launch(cx, "residual_forward");
}

void fm_cuda_residual_backward(fm_cuda_ctx *cx, float *da, float *db, const float *dout, size_t n)
{
    if (n == 0) return;
    res_bwd_k<<<fm_cuda_grid(cx, n, 256), 256, 0, cx->stream>>>(da, db, dout, n);
    fm_cuda_check_launch(cx, "residual_backward");
}

/* gelu.cu — GELU with the tanh approximation, forward and backward (CUDA, fp32). Same formula as the
 * CPU kernel: 0.5 (1 + tanh u) = 1 / (1 + exp(-2u)), u = sqrt(2/pi) (x + 0.044715 x^3). expf is the
 * CUDA library's full-precision expf (no --use_fast_math). */
#include "cuda_internal.cuh"

#define GELU_S 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_K 0.044715f

__global__ void gelu_fwd_k(float *out, const float *inp, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        const float x = inp[i];
        const float u = GELU_S * (x + GELU_K * x * x * x);
        out[i] = x / (1.0f + expf(-2.0f * u));
    }
}

__global__ void gelu_bwd_k(float *dinp, const float *inp, const float *dout, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        const float x = inp[i];
        const float u = GELU_S * (x + GELU_K * x * x * x);
        const float sig = 1.0f / (1.0f + expf(-2.0f * u));
        const float du = GELU_S * (1.0f + 3.0f * GELU_K * x * x);
        dinp[i] = (sig + 2.0f * x * sig * (1.0f - sig) * du) * dout[i];
    }
}

void fm_cuda_gelu_forward(fm_backend *be, float *out, const float *inp, size_t n)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    if (n == 0) return;
    gelu_fwd_k<<<fm_cuda_grid(cx, n, 256), 256, 0, cx->stream>>>(out, inp, n);
    fm_cuda_check_launch(cx, "gelu_forward");
}

void fm_cuda_gelu_backward(fm_backend *be, float *dinp, const float *inp, const float *dout,
                           size_t n)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    if (n == 0) return;
    gelu_bwd_k<<<fm_cuda_grid(cx, n, 256), 256, 0, cx->stream>>>(dinp, inp, dout, n);
    fm_cuda_check_launch(cx, "gelu_backward");
}

/* swiglu.cu — SwiGLU (silu(gate) * up), forward and backward (CUDA, fp32). Same formulas as the CPU
 * kernel (kernels/cpu/swiglu.c); expf is the CUDA library's full-precision expf. Element-wise over
 * (row, f); backward may run in place (dinp == inp): thread (n, f) reads gate and up f of row n
 * before writing them and touches nothing else. */
#include "cuda_internal.cuh"

/* out (N,F) = silu(inp[:, :F]) * inp[:, F:]; inp (N,2F) */
__global__ void swiglu_fwd_k(float *out, const float *inp, int F, size_t total)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        const size_t n = i / (size_t)F, f = i % (size_t)F;
        const float g = inp[n * 2 * (size_t)F + f], u = inp[n * 2 * (size_t)F + (size_t)F + f];
        out[i] = g / (1.0f + expf(-g)) * u;
    }
}

/* dinp (N,2F) = [dgate | dup]; inp (N,2F), dout (N,F) */
__global__ void swiglu_bwd_k(float *dinp, const float *inp, const float *dout, int F, size_t total)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        const size_t n = i / (size_t)F, f = i % (size_t)F;
        const size_t ig = n * 2 * (size_t)F + f, iu = ig + (size_t)F;
        const float g = inp[ig], u = inp[iu], d = dout[i];
        const float s = 1.0f / (1.0f + expf(-g));
        dinp[ig] = d * u * s * (1.0f + g * (1.0f - s));
        dinp[iu] = d * g * s;
    }
}

void fm_cuda_swiglu_forward(fm_backend *be, float *out, const float *inp, int N, int F)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    const size_t total = (size_t)N * (size_t)F;
    if (N <= 0 || F <= 0) return;
    swiglu_fwd_k<<<fm_cuda_grid(cx, total, 256), 256, 0, cx->stream>>>(out, inp, F, total);
    fm_cuda_check_launch(cx, "swiglu_forward");
}

void fm_cuda_swiglu_backward(fm_backend *be, float *dinp, const float *inp, const float *dout, int N,
                             int F)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    const size_t total = (size_t)N * (size_t)F;
    if (N <= 0 || F <= 0) return;
    swiglu_bwd_k<<<fm_cuda_grid(cx, total, 256), 256, 0, cx->stream>>>(dinp, inp, dout, F, total);
    fm_cuda_check_launch(cx, "swiglu_backward");
}

/* residual.cu — the residual addition (CUDA, fp32 in both tables): a grid-stride streaming kernel with
 * 128-bit loads and stores when the three pointers are 16-byte aligned (the tail of n % 4 elements,
 * or everything when unaligned, element by element). out may alias a (element-wise). Its backward is
 * the identity (the model reads the residual stream's gradient directly), so there is no kernel. */
#include "cuda_internal.cuh"

__global__ void res_fwd_k(float *out, const float *a, const float *b, size_t n, size_t nv)
{
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    const size_t t0 = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    for (size_t v = t0; v < nv; v += stride) {
        const float4 x = reinterpret_cast<const float4 *>(a)[v];
        const float4 y = reinterpret_cast<const float4 *>(b)[v];
        reinterpret_cast<float4 *>(out)[v] = make_float4(x.x + y.x, x.y + y.y, x.z + y.z, x.w + y.w);
    }
    for (size_t i = 4 * nv + t0; i < n; i += stride) out[i] = a[i] + b[i];
}

void fm_cuda_residual_forward(fm_backend *be, float *out, const float *a, const float *b, size_t n)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    if (n == 0) return;
    const size_t nv = fm_cuda_al16(out, a, b) ? n / 4 : 0;
    res_fwd_k<<<fm_cuda_grid(cx, nv ? nv : n, 256), 256, 0, cx->stream>>>(out, a, b, n, nv);
    fm_cuda_check_launch(cx, "residual_forward");
}

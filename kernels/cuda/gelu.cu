/* gelu.cu — GELU with the tanh approximation, forward (both tables: out fp32, or bf16 rounded once
 * from the fp32 value) and backward (shared: inp, dout and dinp are fp32 in both). Same formula as the
 * CPU kernel: 0.5 (1 + tanh u) = 1 / (1 + exp(-2u)), u = sqrt(2/pi) (x + 0.044715 x^3). expf is the
 * CUDA library's full-precision expf (no --use_fast_math).
 *
 * Grid-stride loops over groups of 4 elements with 128-bit loads (and 128-bit fp32 / 64-bit bf16
 * stores) when the pointers are 16-byte aligned; the last n % 4 elements (or all, when unaligned)
 * element by element. Element-wise, so aliasing dinp == dout (or out == inp in fp32) is safe. */
#include "cuda_internal.cuh"

#define GELU_S 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_K 0.044715f

__device__ __forceinline__ float gelu_f(float x)
{
    const float u = GELU_S * (x + GELU_K * x * x * x);
    return x / (1.0f + expf(-2.0f * u));
}

__device__ __forceinline__ float gelu_grad(float x, float d)
{
    const float u = GELU_S * (x + GELU_K * x * x * x);
    const float sig = 1.0f / (1.0f + expf(-2.0f * u));
    const float du = GELU_S * (1.0f + 3.0f * GELU_K * x * x);
    return (sig + 2.0f * x * sig * (1.0f - sig) * du) * d;
}

/* out (n) = gelu(inp (n)); nv groups of 4 vectorised (0 when unaligned), then the tail */
template <typename OutT>
__global__ void gelu_fwd_k(OutT *out, const float *inp, size_t n, size_t nv)
{
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    const size_t t0 = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    for (size_t v = t0; v < nv; v += stride) {
        const float4 x = reinterpret_cast<const float4 *>(inp)[v];
        fm_cuda_store4(out + 4 * v, make_float4(gelu_f(x.x), gelu_f(x.y), gelu_f(x.z), gelu_f(x.w)));
    }
    for (size_t i = 4 * nv + t0; i < n; i += stride) fm_cuda_store(out + i, gelu_f(inp[i]));
}

__global__ void gelu_bwd_k(float *dinp, const float *inp, const float *dout, size_t n, size_t nv)
{
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    const size_t t0 = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    for (size_t v = t0; v < nv; v += stride) {
        const float4 x = reinterpret_cast<const float4 *>(inp)[v];
        const float4 d = reinterpret_cast<const float4 *>(dout)[v];
        reinterpret_cast<float4 *>(dinp)[v] = make_float4(gelu_grad(x.x, d.x), gelu_grad(x.y, d.y),
                                                          gelu_grad(x.z, d.z), gelu_grad(x.w, d.w));
    }
    for (size_t i = 4 * nv + t0; i < n; i += stride) dinp[i] = gelu_grad(inp[i], dout[i]);
}

template <typename OutT>
static void gelu_forward(fm_backend *be, OutT *out, const float *inp, size_t n, const char *what)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    if (n == 0) return;
    const size_t nv = fm_cuda_al16(out, inp) ? n / 4 : 0;
    gelu_fwd_k<OutT><<<fm_cuda_grid(cx, nv ? nv : n, 256), 256, 0, cx->stream>>>(out, inp, n, nv);
    fm_cuda_check_launch(cx, what);
}

void fm_cuda_gelu_forward(fm_backend *be, float *out, const float *inp, size_t n)
{
    gelu_forward(be, out, inp, n, "gelu_forward");
}

/* bf16 table: out (n) bf16 = gelu(inp (n) fp32), computed in fp32 and rounded once */
void fm_cuda_gelu_forward_bf16(fm_backend *be, float *out, const float *inp, size_t n)
{
    gelu_forward(be, (fm_cuda_bf16 *)out, inp, n, "gelu_forward (bf16)");
}

void fm_cuda_gelu_backward(fm_backend *be, float *dinp, const float *inp, const float *dout,
                           size_t n)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    if (n == 0) return;
    const size_t nv = fm_cuda_al16(dinp, inp, dout) ? n / 4 : 0;
    gelu_bwd_k<<<fm_cuda_grid(cx, nv ? nv : n, 256), 256, 0, cx->stream>>>(dinp, inp, dout, n, nv);
    fm_cuda_check_launch(cx, "gelu_backward");
}

/* swiglu.cu — SwiGLU (silu(gate) * up), forward (both tables: out fp32, or bf16 rounded once from the
 * fp32 value) and backward (shared: every tensor fp32). Same formulas as the CPU kernel
 * (kernels/cpu/swiglu.c); expf is the CUDA library's full-precision expf. Element-wise over (row, f),
 * in groups of 4 consecutive f with 128-bit loads and stores when F % 4 == 0 and the pointers are
 * 16-byte aligned (else element by element); backward may run in place (dinp == inp): the thread of
 * (n, f..f+3) reads gate and up of those f before writing them and touches nothing else. */
#include "cuda_internal.cuh"

__device__ __forceinline__ float silu_mul(float g, float u)
{
    return g / (1.0f + expf(-g)) * u;
}

/* dgate and dup of one element */
__device__ __forceinline__ void swiglu_grad(float g, float u, float d, float *dg, float *du)
{
    const float s = 1.0f / (1.0f + expf(-g));
    *dg = d * u * s * (1.0f + g * (1.0f - s));
    *du = d * g * s;
}

/* out (N,F) = silu(inp[:, :F]) * inp[:, F:]; inp (N,2F); W = 4 (vectorised, F % 4 == 0) or 1 */
template <typename OutT, int W>
__global__ void swiglu_fwd_k(OutT *out, const float *inp, int F, size_t groups)
{
    const size_t Fg = (size_t)F / W;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < groups;
         i += (size_t)gridDim.x * blockDim.x) {
        const size_t n = i / Fg, f = (i % Fg) * W;
        const float *g = inp + n * 2 * (size_t)F + f, *u = g + F;
        OutT *o = out + n * (size_t)F + f;
        if (W == 4) {
            const float4 a = *reinterpret_cast<const float4 *>(g);
            const float4 b = *reinterpret_cast<const float4 *>(u);
            fm_cuda_store4(o, make_float4(silu_mul(a.x, b.x), silu_mul(a.y, b.y), silu_mul(a.z, b.z),
                                          silu_mul(a.w, b.w)));
        } else {
            fm_cuda_store(o, silu_mul(*g, *u));
        }
    }
}

/* dinp (N,2F) = [dgate | dup]; inp (N,2F), dout (N,F) */
template <int W>
__global__ void swiglu_bwd_k(float *dinp, const float *inp, const float *dout, int F, size_t groups)
{
    const size_t Fg = (size_t)F / W;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < groups;
         i += (size_t)gridDim.x * blockDim.x) {
        const size_t n = i / Fg, f = (i % Fg) * W;
        const size_t ig = n * 2 * (size_t)F + f, iu = ig + (size_t)F, io = n * (size_t)F + f;
        if (W == 4) {
            const float4 g = *reinterpret_cast<const float4 *>(inp + ig);
            const float4 u = *reinterpret_cast<const float4 *>(inp + iu);
            const float4 d = *reinterpret_cast<const float4 *>(dout + io);
            float4 dg, du;
            swiglu_grad(g.x, u.x, d.x, &dg.x, &du.x);
            swiglu_grad(g.y, u.y, d.y, &dg.y, &du.y);
            swiglu_grad(g.z, u.z, d.z, &dg.z, &du.z);
            swiglu_grad(g.w, u.w, d.w, &dg.w, &du.w);
            *reinterpret_cast<float4 *>(dinp + ig) = dg;
            *reinterpret_cast<float4 *>(dinp + iu) = du;
        } else {
            float dg, du;
            swiglu_grad(inp[ig], inp[iu], dout[io], &dg, &du);
            dinp[ig] = dg;
            dinp[iu] = du;
        }
    }
}

template <typename OutT>
static void swiglu_forward(fm_backend *be, OutT *out, const float *inp, int N, int F,
                           const char *what)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    if (N <= 0 || F <= 0) return;
    const size_t total = (size_t)N * (size_t)F;
    if (F % 4 == 0 && fm_cuda_al16(out, inp))
        swiglu_fwd_k<OutT, 4><<<fm_cuda_grid(cx, total / 4, 256), 256, 0, cx->stream>>>(out, inp, F,
                                                                                      total / 4);
    else
        swiglu_fwd_k<OutT, 1><<<fm_cuda_grid(cx, total, 256), 256, 0, cx->stream>>>(out, inp, F,
                                                                                  total);
    fm_cuda_check_launch(cx, what);
}

void fm_cuda_swiglu_forward(fm_backend *be, float *out, const float *inp, int N, int F)
{
    swiglu_forward(be, out, inp, N, F, "swiglu_forward");
}

/* bf16 table: out (N,F) bf16; inp fp32 */
void fm_cuda_swiglu_forward_bf16(fm_backend *be, float *out, const float *inp, int N, int F)
{
    swiglu_forward(be, (fm_cuda_bf16 *)out, inp, N, F, "swiglu_forward (bf16)");
}

void fm_cuda_swiglu_backward(fm_backend *be, float *dinp, const float *inp, const float *dout, int N,
                             int F)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    if (N <= 0 || F <= 0) return;
    const size_t total = (size_t)N * (size_t)F;
    if (F % 4 == 0 && fm_cuda_al16(dinp, inp, dout))
        swiglu_bwd_k<4><<<fm_cuda_grid(cx, total / 4, 256), 256, 0, cx->stream>>>(dinp, inp, dout, F,
                                                                                 total / 4);
    else
        swiglu_bwd_k<1><<<fm_cuda_grid(cx, total, 256), 256, 0, cx->stream>>>(dinp, inp, dout, F,
                                                                             total);
    fm_cuda_check_launch(cx, "swiglu_backward");
}

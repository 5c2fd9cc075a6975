/* rope.cu — rotary position embedding on the q and k heads of a fused qkv, in place, forward and
 * backward (CUDA). The rounding is the CPU kernel's (kernels/cpu/rope.c, kernels.h): inv_j =
 * 1/theta^(2j/hs) and the angle p*inv_j in fp32, cos and sin in double from that angle, rounded to
 * fp32; the rotation's products and sums use the round-to-nearest intrinsics (no FMA contraction),
 * so the result equals the CPU's up to the last bit of double-precision pow, cos and sin (the
 * tests compare them). One thread per (row, rotated head, pair j). */
#include "cuda_internal.cuh"

/* x (B,T,W): pairs (j, j+hs/2) of the first NH + NKV heads of each row rotated by sign * a */
__global__ void rope_k(float *x, int T, int hs, int nrot, int W, int pos0, float theta, float sign,
                       size_t total)
{
    const int half = hs / 2;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        const int j = (int)(i % (size_t)half);
        const size_t rh = i / (size_t)half; /* row * nrot + head */
        const size_t r = rh / (size_t)nrot, hh = rh % (size_t)nrot;
        const float p = (float)(pos0 + (int)(r % (size_t)T));
        const float e = __fdiv_rn((float)(2 * j), (float)hs);
        const float inv = __fdiv_rn(1.0f, (float)pow((double)theta, (double)e));
        const double a = (double)__fmul_rn(p, inv);
        const float c = (float)cos(a), s = sign * (float)sin(a);
        float *lo = x + r * (size_t)W + hh * (size_t)hs + (size_t)j, *hi = lo + half;
        const float u = *lo, v = *hi;
        *lo = __fsub_rn(__fmul_rn(u, c), __fmul_rn(v, s));
        *hi = __fadd_rn(__fmul_rn(v, c), __fmul_rn(u, s));
    }
}

static void rope_launch(fm_backend *be, float *x, int B, int T, int C, int NH, int NKV, int pos0,
                        float theta, float sign, const char *what)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    if (B <= 0 || T <= 0 || NH <= 0 || NKV <= 0) return;
    const int hs = C / NH, W = (NH + 2 * NKV) * hs;
    const size_t total = (size_t)B * (size_t)T * (size_t)(NH + NKV) * (size_t)(hs / 2);
    if (total == 0) return;
    rope_k<<<fm_cuda_grid(cx, total, 256), 256, 0, cx->stream>>>(x, T, hs, NH + NKV, W, pos0, theta,
                                                                sign, total);
    fm_cuda_check_launch(cx, what);
}

void fm_cuda_rope_forward(fm_backend *be, float *qkv, int B, int T, int C, int NH, int NKV, int pos0,
                          float theta)
{
    rope_launch(be, qkv, B, T, C, NH, NKV, pos0, theta, 1.0f, "rope_forward");
}

void fm_cuda_rope_backward(fm_backend *be, float *dqkv, int B, int T, int C, int NH, int NKV,
                           int pos0, float theta)
{
    rope_launch(be, dqkv, B, T, C, NH, NKV, pos0, theta, -1.0f, "rope_backward");
}

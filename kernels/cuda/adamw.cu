/* adamw.cu — the optimizer step fused with zeroing the gradient, and the gradient's sum of squares
 * (CUDA, fp32). AdamW uses the CPU kernel's operation order (torch.optim.AdamW single-tensor
 * path) and the same host-side bias corrections in double; with params_bf16 it also writes the bf16
 * copy of the updated parameters (fm_cuda_round_bf16, the CPU's rounding).
 * sum_squares is deterministic: pass 1 has a fixed number of blocks (a function of n only), each
 * thread sums a grid-strided subset in double, each block reduces in a fixed tree; pass 2 (one block)
 * reduces the block sums in a fixed tree; the result is copied to pinned host memory and the stream
 * synchronised (the interface delivers the value on the host). */
#include <math.h>

#include "cuda_internal.cuh"

#define SUMSQ_THREADS 256

__global__ void adamw_k(float *params, unsigned short *params_bf16, float *grads, float *m,
                        float *v, size_t n, float beta1, float beta2, float eps, float decay,
                        float grad_scale, float step_size, float bc2_sqrt)
{
    const float omb1 = 1.0f - beta1, omb2 = 1.0f - beta2;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        const float g = grads[i] * grad_scale;
        const float mi = m[i] + omb1 * (g - m[i]);
        const float vi = beta2 * v[i] + omb2 * g * g;
        const float denom = sqrtf(vi) / bc2_sqrt + eps;
        const float p = params[i] * decay - step_size * (mi / denom);
        params[i] = p;
        if (params_bf16) params_bf16[i] = fm_cuda_round_bf16(p);
        m[i] = mi;
        v[i] = vi;
        grads[i] = 0.0f;
    }
}

__global__ void sumsq_part_k(double *part, const float *x, size_t n)
{
    __shared__ double sh[32];
    double acc = 0.0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        const double d = (double)x[i];
        acc += d * d;
    }
    acc = fm_block_sum_d(acc, sh);
    if (threadIdx.x == 0) part[blockIdx.x] = acc;
}

/* one block of FM_CUDA_SUMSQ_BLOCKS threads; part[nparts] := sum of part[0..nparts) */
__global__ void sumsq_final_k(double *part, int nparts)
{
    __shared__ double sh[32];
    double v = (int)threadIdx.x < nparts ? part[threadIdx.x] : 0.0;
    v = fm_block_sum_d(v, sh);
    if (threadIdx.x == 0) part[nparts] = v;
}

void fm_cuda_adamw_update(fm_backend *be, float *params, void *params_bf16, float *grads, float *m,
                          float *v, size_t n, float lr, float beta1, float beta2, float eps,
                          float weight_decay, float grad_scale, int64_t t)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    if (n == 0) return;
    const double bc1 = 1.0 - pow((double)beta1, (double)t);
    const double bc2 = 1.0 - pow((double)beta2, (double)t);
    const float step_size = (float)((double)lr / bc1);
    const float bc2_sqrt = (float)sqrt(bc2);
    const float decay = 1.0f - lr * weight_decay;
    adamw_k<<<fm_cuda_grid(cx, n, 256), 256, 0, cx->stream>>>(
        params, (unsigned short *)params_bf16, grads, m, v, n, beta1, beta2, eps, decay, grad_scale,
        step_size, bc2_sqrt);
    fm_cuda_check_launch(cx, "adamw_update");
}

void fm_cuda_sum_squares(fm_backend *be, double *out, const float *grads, size_t n)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    *out = 0.0;
    if (n == 0) return;
    size_t nb = (n + SUMSQ_THREADS - 1) / SUMSQ_THREADS;
    if (nb > FM_CUDA_SUMSQ_BLOCKS) nb = FM_CUDA_SUMSQ_BLOCKS;
    const int nparts = (int)nb;
    sumsq_part_k<<<(unsigned)nparts, SUMSQ_THREADS, 0, cx->stream>>>(cx->sumsq_part, grads, n);
    fm_cuda_check_launch(cx, "sum_squares (blocks)");
    sumsq_final_k<<<1, FM_CUDA_SUMSQ_BLOCKS, 0, cx->stream>>>(cx->sumsq_part, nparts);
    fm_cuda_check_launch(cx, "sum_squares (final)");
    fm_cuda_check(cx,
                  cudaMemcpyAsync(cx->sumsq_host, cx->sumsq_part + nparts, sizeof(double),
                                  cudaMemcpyDeviceToHost, cx->stream),
                  "sum_squares (copy to host)");
    fm_cuda_check(cx, cudaStreamSynchronize(cx->stream), "sum_squares (synchronise)");
    *out = cx->failed ? NAN : *cx->sumsq_host;
}

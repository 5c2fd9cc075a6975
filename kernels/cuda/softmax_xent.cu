/* softmax_xent.cu — fused softmax + cross-entropy over the padded vocabulary (CUDA, fp32).
 * One block per row. Forward: block max, then block sum of exp(x - max) (fixed-tree reductions),
 * lse = max + log(sum), loss = lse - x[target]; nothing else is written. Backward in place:
 * x := (exp(x - lse) - [c == target]) * dloss for c < V, 0 for the padding columns. */
#include "cuda_internal.cuh"

#define SX_THREADS 512

__global__ void sx_fwd_k(float *losses, float *lse, const float *logits, const int32_t *targets,
                         int V, int Vp)
{
    __shared__ float sh[32];
    const int n = blockIdx.x;
    const float *x = logits + (size_t)n * (size_t)Vp;
    float mx = -INFINITY;
    for (int c = threadIdx.x; c < V; c += blockDim.x) mx = fmaxf(mx, x[c]);
    mx = fm_block_max(mx, sh);
    float s = 0.0f;
    for (int c = threadIdx.x; c < V; c += blockDim.x) s += expf(x[c] - mx);
    s = fm_block_sum(s, sh);
    if (threadIdx.x == 0) {
        const float l = mx + logf(s);
        lse[n] = l;
        losses[n] = l - x[targets[n]];
    }
}

__global__ void sx_bwd_k(float *logits, const float *lse, const int32_t *targets, float dloss, int V,
                         int Vp)
{
    const int n = blockIdx.x;
    float *x = logits + (size_t)n * (size_t)Vp;
    const float l = lse[n];
    const int tg = targets[n];
    for (int c = threadIdx.x; c < Vp; c += blockDim.x) {
        float g = 0.0f;
        if (c < V) {
            const float p = expf(x[c] - l);
            g = (c == tg ? p - 1.0f : p) * dloss;
        }
        x[c] = g;
    }
}

void fm_cuda_softmax_xent_forward(fm_backend *be, float *losses, float *lse, const float *logits,
                                  const int32_t *targets, int N, int V, int Vp)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    if (N <= 0) return;
    sx_fwd_k<<<(unsigned)N, SX_THREADS, 0, cx->stream>>>(losses, lse, logits, targets, V, Vp);
    fm_cuda_check_launch(cx, "softmax_xent_forward");
}

void fm_cuda_softmax_xent_backward(fm_backend *be, float *logits, const float *lse,
                                   const int32_t *targets, float dloss, int N, int V, int Vp)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    if (N <= 0) return;
    sx_bwd_k<<<(unsigned)N, SX_THREADS, 0, cx->stream>>>(logits, lse, targets, dloss, V, Vp);
    fm_cuda_check_launch(cx, "softmax_xent_backward");
}

/* softmax_xent.cu — fused softmax + cross-entropy over the padded vocabulary (CUDA). The logits are
 * a matmul output, fp32 in both precisions (kernels.h, "Precision"), and so are lse, the losses and
 * dlogits: one set of kernels serves the fp32 and the bf16 tables. Statistics in fp32.
 *
 * One block per row, 128-bit loads and stores (when Vp % 4 == 0 and the logits are 16-byte
 * aligned; the padded vocabulary is a multiple of 128, so always in the model; else one column per
 * step), streaming cache hints (the (N,Vp) logits, 1.65 GB for GPT-2 at B*T = 8192, never fit in L2):
 *   - forward, ONE read of the row: each thread keeps an online (max, sum of exp(x - max)) over its
 *     columns < V (rescaling its sum when its max grows), the pairs are merged by a warp butterfly
 *     and a fixed tree over the warps; lse = max + log(sum), loss = lse - x[target]. Nothing else is
 *     written (the forward may serve evaluation, whose logits must stay).
 *   - backward, IN PLACE, one read and one write: x := (exp(x - lse) - [c == target]) * dloss for
 *     c < V, 0 for the padding columns.
 * So a training step moves 3 x 4 bytes per logit here (the former kernels: 4 reads and a write). The
 * op contract splits forward (with the loss) and backward (with the loss scale, one model call
 * later), so the row cannot be kept between the two: a forward+backward op would save one more read
 * (docs/performance.md, "CUDA backend").
 * Determinism: the reduction tree depends only on blockDim (fixed) and the row length. */
#include "cuda_internal.cuh"

#define SX_THREADS 512
#define SX_UNROLL 4

/* online softmax state of a set of values: m their max, s = sum exp(v - m) (m = -inf: empty) */
struct sx_ms {
    float m, s;
};

static __device__ __forceinline__ sx_ms sx_merge(sx_ms a, sx_ms b)
{
    const float M = fmaxf(a.m, b.m);
    if (M == -INFINITY) return {M, 0.0f};
    /* a + b == b + a, so both lanes of a butterfly pair end with the same bits */
    return {M, (a.m == -INFINITY ? 0.0f : a.s * expf(a.m - M)) +
                   (b.m == -INFINITY ? 0.0f : b.s * expf(b.m - M))};
}

static __device__ __forceinline__ sx_ms sx_add4(sx_ms a, const float4 v)
{
    const float M = fmaxf(fmaxf(a.m, fmaxf(v.x, v.y)), fmaxf(v.z, v.w));
    const float r = a.m == -INFINITY ? 0.0f : a.s * expf(a.m - M);
    return {M, r + ((expf(v.x - M) + expf(v.y - M)) + (expf(v.z - M) + expf(v.w - M)))};
}

static __device__ __forceinline__ sx_ms sx_add1(sx_ms a, const float v)
{
    const float M = fmaxf(a.m, v);
    const float r = a.m == -INFINITY ? 0.0f : a.s * expf(a.m - M);
    return {M, r + expf(v - M)};
}

/* block-wide merge (blockDim.x a multiple of 32); every thread gets the result */
static __device__ __forceinline__ sx_ms sx_block_merge(sx_ms v, sx_ms *sh)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int o = 16; o > 0; o >>= 1)
        v = sx_merge(v, {__shfl_xor_sync(0xffffffffu, v.m, o), __shfl_xor_sync(0xffffffffu, v.s, o)});
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : sx_ms{-INFINITY, 0.0f};
    for (int o = 16; o > 0; o >>= 1)
        v = sx_merge(v, {__shfl_xor_sync(0xffffffffu, v.m, o), __shfl_xor_sync(0xffffffffu, v.s, o)});
    return v;
}

/* losses (N), lse (N); logits (N,Vp), targets (N) in [0,V). VEC = 4: Vp % 4 == 0, rows 16-byte
 * aligned. */
template <int VEC>
__global__ void __launch_bounds__(SX_THREADS)
    sx_fwd_k(float *__restrict__ losses, float *__restrict__ lse, const float *__restrict__ logits,
             const int32_t *__restrict__ targets, int V, int Vp)
{
    __shared__ sx_ms sh[32];
    const int n = blockIdx.x, bd = blockDim.x;
    const float *x = logits + (size_t)n * (size_t)Vp;
    sx_ms st = {-INFINITY, 0.0f};
    int c0 = 0; /* first column of the scalar tail */
    if constexpr (VEC == 4) {
        const float4 *x4 = reinterpret_cast<const float4 *>(x);
        const int nfull = V / 4;
        int k = threadIdx.x;
        for (; k + (SX_UNROLL - 1) * bd < nfull; k += SX_UNROLL * bd) {
            float4 v[SX_UNROLL];
#pragma unroll
            for (int u = 0; u < SX_UNROLL; u++) v[u] = __ldcs(x4 + k + u * bd);
#pragma unroll
            for (int u = 0; u < SX_UNROLL; u++) st = sx_add4(st, v[u]);
        }
        for (; k < nfull; k += bd) st = sx_add4(st, __ldcs(x4 + k));
        c0 = 4 * nfull;
    }
    for (int c = c0 + (int)threadIdx.x; c < V; c += bd) st = sx_add1(st, __ldcs(x + c));
    st = sx_block_merge(st, sh);
    if (threadIdx.x == 0) {
        const float l = st.m + logf(st.s);
        lse[n] = l;
        losses[n] = l - x[targets[n]];
    }
}

/* logits (N,Vp) := dlogits in place; lse (N), targets (N) */
template <int VEC>
__global__ void __launch_bounds__(SX_THREADS)
    sx_bwd_k(float *__restrict__ logits, const float *__restrict__ lse,
             const int32_t *__restrict__ targets, float dloss, int V, int Vp)
{
    const int n = blockIdx.x, bd = blockDim.x;
    float *x = logits + (size_t)n * (size_t)Vp;
    const float l = lse[n];
    const int tg = targets[n];
    if constexpr (VEC == 4) {
        float4 *x4 = reinterpret_cast<float4 *>(x);
        const int nv = Vp / 4;
        int k = threadIdx.x;
        for (; k + (SX_UNROLL - 1) * bd < nv; k += SX_UNROLL * bd) {
            float4 v[SX_UNROLL];
#pragma unroll
            for (int u = 0; u < SX_UNROLL; u++) v[u] = __ldcs(x4 + k + u * bd);
#pragma unroll
            for (int u = 0; u < SX_UNROLL; u++) {
                const int c = 4 * (k + u * bd);
                float4 g;
                g.x = c + 0 < V ? (expf(v[u].x - l) - (c + 0 == tg ? 1.0f : 0.0f)) * dloss : 0.0f;
                g.y = c + 1 < V ? (expf(v[u].y - l) - (c + 1 == tg ? 1.0f : 0.0f)) * dloss : 0.0f;
                g.z = c + 2 < V ? (expf(v[u].z - l) - (c + 2 == tg ? 1.0f : 0.0f)) * dloss : 0.0f;
                g.w = c + 3 < V ? (expf(v[u].w - l) - (c + 3 == tg ? 1.0f : 0.0f)) * dloss : 0.0f;
                __stcs(x4 + k + u * bd, g);
            }
        }
        for (; k < nv; k += bd) {
            const float4 v = __ldcs(x4 + k);
            const int c = 4 * k;
            float4 g;
            g.x = c + 0 < V ? (expf(v.x - l) - (c + 0 == tg ? 1.0f : 0.0f)) * dloss : 0.0f;
            g.y = c + 1 < V ? (expf(v.y - l) - (c + 1 == tg ? 1.0f : 0.0f)) * dloss : 0.0f;
            g.z = c + 2 < V ? (expf(v.z - l) - (c + 2 == tg ? 1.0f : 0.0f)) * dloss : 0.0f;
            g.w = c + 3 < V ? (expf(v.w - l) - (c + 3 == tg ? 1.0f : 0.0f)) * dloss : 0.0f;
            __stcs(x4 + k, g);
        }
    } else {
        for (int c = threadIdx.x; c < Vp; c += bd)
            x[c] = c < V ? (expf(x[c] - l) - (c == tg ? 1.0f : 0.0f)) * dloss : 0.0f;
    }
}

static bool sx_vec(const float *logits, int Vp)
{
    return Vp % 4 == 0 && ((uintptr_t)logits & 15u) == 0;
}

void fm_cuda_softmax_xent_forward(fm_backend *be, float *losses, float *lse, const float *logits,
                                  const int32_t *targets, int N, int V, int Vp)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    if (N <= 0) return;
    if (sx_vec(logits, Vp))
        sx_fwd_k<4><<<(unsigned)N, SX_THREADS, 0, cx->stream>>>(losses, lse, logits, targets, V, Vp);
    else
        sx_fwd_k<1><<<(unsigned)N, SX_THREADS, 0, cx->stream>>>(losses, lse, logits, targets, V, Vp);
    fm_cuda_check_launch(cx, "softmax_xent_forward");
}

void fm_cuda_softmax_xent_backward(fm_backend *be, float *logits, const float *lse,
                                   const int32_t *targets, float dloss, int N, int V, int Vp)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    if (N <= 0) return;
    if (sx_vec(logits, Vp))
        sx_bwd_k<4><<<(unsigned)N, SX_THREADS, 0, cx->stream>>>(logits, lse, targets, dloss, V, Vp);
    else
        sx_bwd_k<1><<<(unsigned)N, SX_THREADS, 0, cx->stream>>>(logits, lse, targets, dloss, V, Vp);
    fm_cuda_check_launch(cx, "softmax_xent_backward");
}

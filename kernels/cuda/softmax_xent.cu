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
 *   - fused (training: the model's forward when fm_model_set_fused_loss_scale is on): the forward's
 *     statistics, then the backward's pass over the same row, with the same device functions as the
 *     two kernels (products and sums written with _rn intrinsics, so no context-dependent FMA
 *     contraction) and the same block size: the same bits as forward + backward. When the row's
 *     float4 groups fit in the block's shared memory (Vp*4 bytes up to the device's opt-in limit:
 *     227 KiB on sm_90, so GPT-2's 197 KiB rows; 163 KiB on sm_80) the statistics pass keeps them
 *     there and the gradient pass reads them back: 8 bytes per logit from HBM, one block per SM.
 *     Else the statistics pass reads with normal caching and the gradient pass finds what L2 kept.
 * Determinism: the reduction tree depends only on blockDim (SX_THREADS, the same for every kernel)
 * and the row length. */
#include "cuda_internal.cuh"

#define SX_THREADS 1024
#define SX_UNROLL 4

/* online softmax state of a set of values: m their max, s = sum exp(v - m) (m = -inf: empty) */
struct sx_ms {
    float m, s;
};

static __device__ __forceinline__ sx_ms sx_merge(sx_ms a, sx_ms b)
{
    const float M = fmaxf(a.m, b.m);
    if (M == -INFINITY) return {M, 0.0f};
    /* a + b == b + a, so both lanes of a butterfly pair end with the same bits; _rn: no FMA
     * contraction, so every kernel that inlines this computes the same bits */
    return {M, __fadd_rn(a.m == -INFINITY ? 0.0f : __fmul_rn(a.s, expf(a.m - M)),
                         b.m == -INFINITY ? 0.0f : __fmul_rn(b.s, expf(b.m - M)))};
}

static __device__ __forceinline__ sx_ms sx_add4(sx_ms a, const float4 v)
{
    const float M = fmaxf(fmaxf(a.m, fmaxf(v.x, v.y)), fmaxf(v.z, v.w));
    const float r = a.m == -INFINITY ? 0.0f : __fmul_rn(a.s, expf(a.m - M));
    return {M, r + ((expf(v.x - M) + expf(v.y - M)) + (expf(v.z - M) + expf(v.w - M)))};
}

static __device__ __forceinline__ sx_ms sx_add1(sx_ms a, const float v)
{
    const float M = fmaxf(a.m, v);
    const float r = a.m == -INFINITY ? 0.0f : __fmul_rn(a.s, expf(a.m - M));
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

/* The statistics of row x (V real columns) for the whole block (every thread gets them), each thread
 * reading its columns once; LOAD_CS: evict-first loads (the row is not read again soon); keep (may
 * be NULL): shared memory that receives the row's first V/4 float4 groups. VEC = 4: Vp % 4 == 0,
 * rows 16-byte aligned. */
template <int VEC, bool LOAD_CS>
static __device__ __forceinline__ sx_ms sx_row_stats(const float *x, int V, sx_ms *sh, float4 *keep)
{
    const int bd = blockDim.x;
    sx_ms st = {-INFINITY, 0.0f};
    int c0 = 0; /* first column of the scalar tail */
    if constexpr (VEC == 4) {
        const float4 *x4 = reinterpret_cast<const float4 *>(x);
        const int nfull = V / 4;
        int k = threadIdx.x;
        for (; k + (SX_UNROLL - 1) * bd < nfull; k += SX_UNROLL * bd) {
            float4 v[SX_UNROLL];
#pragma unroll
            for (int u = 0; u < SX_UNROLL; u++) v[u] = LOAD_CS ? __ldcs(x4 + k + u * bd) : x4[k + u * bd];
            if (keep) {
#pragma unroll
                for (int u = 0; u < SX_UNROLL; u++) keep[k + u * bd] = v[u];
            }
#pragma unroll
            for (int u = 0; u < SX_UNROLL; u++) st = sx_add4(st, v[u]);
        }
        for (; k < nfull; k += bd) {
            const float4 v = LOAD_CS ? __ldcs(x4 + k) : x4[k];
            if (keep) keep[k] = v;
            st = sx_add4(st, v);
        }
        c0 = 4 * nfull;
    }
    for (int c = c0 + (int)threadIdx.x; c < V; c += bd) st = sx_add1(st, LOAD_CS ? __ldcs(x + c) : x[c]);
    return sx_block_merge(st, sh);
}

/* lse and loss of the row from its statistics; xt = x[target], read before the row may change */
static __device__ __forceinline__ void sx_row_loss(sx_ms st, float xt, float *loss, float *lse)
{
    const float l = st.m + logf(st.s);
    *lse = l;
    *loss = l - xt;
}

/* the gradient of one element: column c of V, value v, lse l, target tg */
static __device__ __forceinline__ float sx_grad(float v, int c, float l, int tg, float dloss, int V)
{
    return c < V ? __fmul_rn(expf(v - l) - (c == tg ? 1.0f : 0.0f), dloss) : 0.0f;
}

static __device__ __forceinline__ float4 sx_grad4(float4 v, int k, float l, int tg, float dloss, int V)
{
    const int c = 4 * k;
    return make_float4(sx_grad(v.x, c, l, tg, dloss, V), sx_grad(v.y, c + 1, l, tg, dloss, V),
                       sx_grad(v.z, c + 2, l, tg, dloss, V), sx_grad(v.w, c + 3, l, tg, dloss, V));
}

/* row x (Vp) := dlogits in place, one write per element (streaming); the values are read from HBM
 * (evict-first), except float4 groups k < nkeep, which come from keep (shared memory) */
template <int VEC>
static __device__ __forceinline__ void sx_row_grad(float *x, float l, int tg, float dloss, int V,
                                                   int Vp, const float4 *keep, int nkeep)
{
    const int bd = blockDim.x;
    if constexpr (VEC == 4) {
        float4 *x4 = reinterpret_cast<float4 *>(x);
        const int nv = Vp / 4;
        int k = threadIdx.x;
        for (; k + (SX_UNROLL - 1) * bd < nv; k += SX_UNROLL * bd) {
            float4 v[SX_UNROLL];
#pragma unroll
            for (int u = 0; u < SX_UNROLL; u++)
                v[u] = k + u * bd < nkeep ? keep[k + u * bd] : __ldcs(x4 + k + u * bd);
#pragma unroll
            for (int u = 0; u < SX_UNROLL; u++)
                __stcs(x4 + k + u * bd, sx_grad4(v[u], k + u * bd, l, tg, dloss, V));
        }
        for (; k < nv; k += bd) __stcs(x4 + k, sx_grad4(k < nkeep ? keep[k] : __ldcs(x4 + k), k, l, tg, dloss, V));
    } else {
        for (int c = threadIdx.x; c < Vp; c += bd) x[c] = sx_grad(x[c], c, l, tg, dloss, V);
    }
}

/* losses (N), lse (N); logits (N,Vp), targets (N) in [0,V) */
template <int VEC>
__global__ void __launch_bounds__(SX_THREADS)
    sx_fwd_k(float *__restrict__ losses, float *__restrict__ lse, const float *__restrict__ logits,
             const int32_t *__restrict__ targets, int V, int Vp)
{
    __shared__ sx_ms sh[32];
    const int n = blockIdx.x;
    const float *x = logits + (size_t)n * (size_t)Vp;
    const float xt = threadIdx.x == 0 ? x[targets[n]] : 0.0f;
    const sx_ms st = sx_row_stats<VEC, true>(x, V, sh, NULL);
    if (threadIdx.x == 0) sx_row_loss(st, xt, &losses[n], &lse[n]);
}

/* logits (N,Vp) := dlogits in place; lse (N), targets (N) */
template <int VEC>
__global__ void __launch_bounds__(SX_THREADS)
    sx_bwd_k(float *__restrict__ logits, const float *__restrict__ lse,
             const int32_t *__restrict__ targets, float dloss, int V, int Vp)
{
    const int n = blockIdx.x;
    sx_row_grad<VEC>(logits + (size_t)n * (size_t)Vp, lse[n], targets[n], dloss, V, Vp, NULL, 0);
}

/* both: losses (N), lse (N), logits (N,Vp) := dlogits. KEEP (VEC = 4 only): the row's V/4 float4
 * groups are kept in dynamic shared memory between the two passes. lse is computed by every thread
 * from the block's statistics with the forward's expression: the same bits as the forward stores and
 * the backward would read. */
template <int VEC, bool KEEP>
__global__ void __launch_bounds__(SX_THREADS)
    sx_fused_k(float *__restrict__ losses, float *__restrict__ lse, float *__restrict__ logits,
               const int32_t *__restrict__ targets, float dloss, int V, int Vp)
{
    extern __shared__ float4 sx_keep[];
    __shared__ sx_ms sh[32];
    const int n = blockIdx.x, tg = targets[n];
    float *x = logits + (size_t)n * (size_t)Vp;
    /* every read of the statistics pass (and xt) and every store into sx_keep precede the merge's
     * __syncthreads; the gradient pass writes only the elements the writing thread itself reads
     * (from x or sx_keep): no hazard */
    const float xt = threadIdx.x == 0 ? x[tg] : 0.0f;
    const sx_ms st = sx_row_stats<VEC, false>(x, V, sh, KEEP ? sx_keep : NULL);
    float loss_n, lse_n;
    sx_row_loss(st, xt, &loss_n, &lse_n);
    if (threadIdx.x == 0) losses[n] = loss_n, lse[n] = lse_n;
    sx_row_grad<VEC>(x, lse_n, tg, dloss, V, Vp, KEEP ? sx_keep : NULL, KEEP ? V / 4 : 0);
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

void fm_cuda_softmax_xent_fused(fm_backend *be, float *losses, float *lse, float *logits,
                                const int32_t *targets, float dloss, int N, int V, int Vp)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    if (N <= 0) return;
    if (!sx_vec(logits, Vp)) {
        sx_fused_k<1, false><<<(unsigned)N, SX_THREADS, 0, cx->stream>>>(losses, lse, logits, targets,
                                                                        dloss, V, Vp);
        fm_cuda_check_launch(cx, "softmax_xent_fused");
        return;
    }
    /* the row in shared memory when it fits (static: 32 sx_ms pairs besides) */
    int optin = 0;
    fm_cuda_check(cx, cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, cx->device),
                  "softmax_xent_fused (shared memory limit)");
    const size_t keep = (size_t)(V / 4) * sizeof(float4);
    if (keep > 0 && keep + 32 * sizeof(sx_ms) <= (size_t)optin) {
        fm_cuda_check(cx, cudaFuncSetAttribute(sx_fused_k<4, true>,
                                               cudaFuncAttributeMaxDynamicSharedMemorySize, (int)keep),
                      "softmax_xent_fused (shared memory)");
        sx_fused_k<4, true><<<(unsigned)N, SX_THREADS, keep, cx->stream>>>(losses, lse, logits, targets,
                                                                          dloss, V, Vp);
    } else {
        sx_fused_k<4, false><<<(unsigned)N, SX_THREADS, 0, cx->stream>>>(losses, lse, logits, targets,
                                                                         dloss, V, Vp);
    }
    fm_cuda_check_launch(cx, "softmax_xent_fused");
}

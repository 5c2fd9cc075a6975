/* adamw.cu — the optimizer step fused with zeroing the gradient, and the gradient's sum of squares
 * (CUDA; master parameters, gradients and moments fp32 in both precisions).
 *
 * AdamW: one pass, the CPU kernel's operation order (torch.optim.AdamW single-tensor path) and the
 * same host-side bias corrections in double; with params_bf16 it also writes the bf16 copy of the
 * updated parameters (fm_cuda_round_bf16, the CPU's rounding) in the same pass. 128-bit loads and
 * stores of params, grads, m, v (and 64-bit stores of 4 bf16) once the pointers are 16-byte aligned:
 * the optimizer's runs start at any parameter offset, so the first (offset mod 4) elements are done
 * one by one, then the aligned body, then the tail; when the five arrays are misaligned relative to
 * each other (never the case for views of 256-aligned buffers at one offset) every element is done
 * one by one. 32 bytes per parameter (+ 2 for the copy), the minimum for this update.
 *
 * sum_squares, deterministic: pass 1 has a fixed number of blocks (a function of n only), each thread
 * sums a grid-strided subset of 4-element groups (128-bit loads when grads is 16-byte aligned) in
 * double, each block reduces in a fixed tree; pass 2 (one block) reduces the block sums in a fixed
 * tree; the result is copied to pinned host memory and the stream synchronised (the interface
 * delivers the value on the host). */
#include <math.h>

#include "cuda_internal.cuh"

#define ADAMW_THREADS 256
#define SUMSQ_THREADS 256

struct adamw_args {
    float beta1, beta2, omb1, omb2, eps, decay, grad_scale, step_size, bc2_sqrt;
};

/* the update of one element (the CPU kernel's expression, operation for operation) */
static __device__ __forceinline__ float adamw_one(const adamw_args &a, float &p, float g, float &m,
                                                  float &v)
{
    g *= a.grad_scale;
    m = m + a.omb1 * (g - m);
    v = a.beta2 * v + a.omb2 * g * g;
    const float denom = sqrtf(v) / a.bc2_sqrt + a.eps;
    p = p * a.decay - a.step_size * (m / denom);
    return p;
}

/* elements [0, n) one by one (grid-stride) */
__global__ void adamw_scalar_k(float *__restrict__ params, unsigned short *__restrict__ pb,
                               float *__restrict__ grads, float *__restrict__ m,
                               float *__restrict__ v, size_t n, adamw_args a)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float p = params[i], mi = m[i], vi = v[i];
        adamw_one(a, p, grads[i], mi, vi);
        params[i] = p;
        if (pb) pb[i] = fm_cuda_round_bf16(p);
        m[i] = mi;
        v[i] = vi;
        grads[i] = 0.0f;
    }
}

/* n4 groups of 4 elements, all pointers 16-byte aligned (pb 8-byte aligned) */
__global__ void adamw_vec_k(float4 *__restrict__ params, uint2 *__restrict__ pb,
                            float4 *__restrict__ grads, float4 *__restrict__ m,
                            float4 *__restrict__ v, size_t n4, adamw_args a)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n4;
         i += (size_t)gridDim.x * blockDim.x) {
        float4 p = __ldcs(params + i), mi = __ldcs(m + i), vi = __ldcs(v + i);
        const float4 g = __ldcs(grads + i);
        adamw_one(a, p.x, g.x, mi.x, vi.x);
        adamw_one(a, p.y, g.y, mi.y, vi.y);
        adamw_one(a, p.z, g.z, mi.z, vi.z);
        adamw_one(a, p.w, g.w, mi.w, vi.w);
        __stcs(params + i, p);
        if (pb) {
            uint2 b;
            b.x = (unsigned)fm_cuda_round_bf16(p.x) | ((unsigned)fm_cuda_round_bf16(p.y) << 16);
            b.y = (unsigned)fm_cuda_round_bf16(p.z) | ((unsigned)fm_cuda_round_bf16(p.w) << 16);
            pb[i] = b; /* kept in cache: the next forward's matmuls read it */
        }
        __stcs(m + i, mi);
        __stcs(v + i, vi);
        __stcs(grads + i, make_float4(0.0f, 0.0f, 0.0f, 0.0f));
    }
}

static int misalign16(const void *p)
{
    return (int)((uintptr_t)p & 15u);
}

void fm_cuda_adamw_update(fm_backend *be, float *params, void *params_bf16, float *grads, float *m,
                          float *v, size_t n, float lr, float beta1, float beta2, float eps,
                          float weight_decay, float grad_scale, int64_t t)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    if (n == 0) return;
    const double bc1 = 1.0 - pow((double)beta1, (double)t);
    const double bc2 = 1.0 - pow((double)beta2, (double)t);
    adamw_args a;
    a.beta1 = beta1;
    a.beta2 = beta2;
    a.omb1 = 1.0f - beta1;
    a.omb2 = 1.0f - beta2;
    a.eps = eps;
    a.decay = 1.0f - lr * weight_decay;
    a.grad_scale = grad_scale;
    a.step_size = (float)((double)lr / bc1);
    a.bc2_sqrt = (float)sqrt(bc2);
    unsigned short *pb = (unsigned short *)params_bf16;
    /* head: elements until params is 16-byte aligned (0..3; params is 4-byte aligned) */
    size_t head = (size_t)((16 - misalign16(params)) & 15) / sizeof(float);
    if (head > n) head = n;
    const size_t n4 = (n - head) / 4, tail0 = head + 4 * n4;
    const bool vec = n4 > 0 && misalign16(params) % 4 == 0 && misalign16(grads + head) == 0 &&
                     misalign16(m + head) == 0 && misalign16(v + head) == 0 &&
                     (!pb || ((uintptr_t)(pb + head) & 7u) == 0);
    if (!vec) {
        adamw_scalar_k<<<fm_cuda_grid(cx, n, ADAMW_THREADS), ADAMW_THREADS, 0, cx->stream>>>(
            params, pb, grads, m, v, n, a);
        fm_cuda_check_launch(cx, "adamw_update");
        return;
    }
    if (head > 0) {
        adamw_scalar_k<<<1, 32, 0, cx->stream>>>(params, pb, grads, m, v, head, a);
        fm_cuda_check_launch(cx, "adamw_update (head)");
    }
    adamw_vec_k<<<fm_cuda_grid(cx, n4, ADAMW_THREADS), ADAMW_THREADS, 0, cx->stream>>>(
        reinterpret_cast<float4 *>(params + head), pb ? reinterpret_cast<uint2 *>(pb + head) : NULL,
        reinterpret_cast<float4 *>(grads + head), reinterpret_cast<float4 *>(m + head),
        reinterpret_cast<float4 *>(v + head), n4, a);
    fm_cuda_check_launch(cx, "adamw_update");
    if (tail0 < n) {
        adamw_scalar_k<<<1, 32, 0, cx->stream>>>(params + tail0, pb ? pb + tail0 : NULL,
                                                  grads + tail0, m + tail0, v + tail0, n - tail0, a);
        fm_cuda_check_launch(cx, "adamw_update (tail)");
    }
}

/* ---- sum of squares -------------------------------------------------------------------------- */

static __device__ __forceinline__ double sq4(const float4 x)
{
    return ((double)x.x * (double)x.x + (double)x.y * (double)x.y) +
           ((double)x.z * (double)x.z + (double)x.w * (double)x.w);
}

/* part[block] = the block's sum of x[i]^2 over its grid-strided groups of 4 (n4 groups); block 0
 * also adds the n % 4 last elements (x + 4*n4, ntail). VEC: x 16-byte aligned. */
template <bool VEC>
__global__ void sumsq_part_k(double *__restrict__ part, const float *__restrict__ x, size_t n4,
                             int ntail)
{
    __shared__ double sh[32];
    double acc = 0.0;
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if constexpr (VEC) {
        const float4 *x4 = reinterpret_cast<const float4 *>(x);
        for (; i + stride < n4; i += 2 * stride) { /* two loads in flight */
            const float4 a = __ldcs(x4 + i), b = __ldcs(x4 + i + stride);
            acc += sq4(a);
            acc += sq4(b);
        }
        if (i < n4) acc += sq4(__ldcs(x4 + i));
    } else {
        for (; i < n4; i += stride)
            acc += sq4(make_float4(x[4 * i], x[4 * i + 1], x[4 * i + 2], x[4 * i + 3]));
    }
    if (blockIdx.x == 0 && (int)threadIdx.x < ntail) {
        const double d = (double)x[4 * n4 + threadIdx.x];
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

void fm_cuda_sum_squares(fm_backend *be, double *out, const float *grads, size_t n)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    *out = 0.0;
    if (n == 0) return;
    const size_t n4 = n / 4;
    const int ntail = (int)(n % 4);
    size_t nb = (n4 + SUMSQ_THREADS - 1) / SUMSQ_THREADS;
    if (nb > FM_CUDA_SUMSQ_BLOCKS) nb = FM_CUDA_SUMSQ_BLOCKS;
    if (nb < 1) nb = 1;
    const int nparts = (int)nb;
    if (misalign16(grads) == 0)
        sumsq_part_k<true><<<(unsigned)nparts, SUMSQ_THREADS, 0, cx->stream>>>(cx->sumsq_part, grads,
                                                                              n4, ntail);
    else
        sumsq_part_k<false><<<(unsigned)nparts, SUMSQ_THREADS, 0, cx->stream>>>(cx->sumsq_part,
                                                                               grads, n4, ntail);
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

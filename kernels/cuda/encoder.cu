/* encoder.cu — token embeddings, forward and backward (CUDA, fp32): token + position (GPT-2:
 * encoder_*) and token only (Llama: embedding_*). The embedding tables, their gradients and the
 * output (the residual stream) are fp32 in both precisions (kernels.h, "Precision"), so one set of
 * kernels serves the fp32 and the bf16 tables.
 *
 * Forward: one thread per 4 channels (128-bit loads and stores) when C % 4 == 0 and the pointers are
 * 16-byte aligned, else one thread per channel.
 *
 * Backward, deterministic and without atomics (llm.c's bucketing, in our own form):
 *   - dwpe (T,C): one thread per 4 channels of a position t sums dout over b in order, starting from
 *     the accumulated dwpe value: the CPU kernel's additions in the CPU kernel's order.
 *   - dwte (Vp,C): the N = B*T token positions are bucketed by id with a stable radix sort (CUB's
 *     DeviceRadixSort::SortPairs on (id, position) pairs: a permutation, so its result does not
 *     depend on timing; stable, so each bucket lists its positions in row order). One block per
 *     bucket (a block per sorted position, those that do not start a bucket return at once), one
 *     thread per 4 channels, adds the bucket's dout rows in row order to the accumulated dwte row:
 *     again exactly the CPU kernel's additions in its order, so the result is bit-identical to the
 *     CPU backend and every id is summed in a fixed order. The longest chain is the most frequent
 *     id's count (a few hundred for GPT-2 text at B*T = 8192), with 8 rows' loads in flight per step.
 * The sort needs 3 int arrays of N and CUB's temporary storage: the context's scratch
 * (fm_cuda_scratch: grown once, synchronising, when it is too small; a failed allocation is recorded
 * like any device error and the op is skipped). */
#include <cub/device/device_radix_sort.cuh>

#include "cuda_internal.cuh"

#define ENC_THREADS 256
#define ENC_BWD_UNROLL 8

/* 16-byte alignment of a device pointer (cudaMalloc gives 256; views into a buffer may not) */
static inline int aligned16(const void *p)
{
    return ((uintptr_t)p & 15u) == 0;
}

/* ---- forward ------------------------------------------------------------------------------------ */

/* out (N,C) = wte (Vp,C)[tokens (N)] (+ wpe (maxT,C)[n % T] when WITH_POS); VEC: 4 channels per
 * thread (C % 4 == 0, 16-byte aligned rows), else 1. total = N * C / VEC items. */
template <int VEC, bool WITH_POS>
__global__ void enc_fwd_k(float *__restrict__ out, const int32_t *__restrict__ tokens,
                          const float *__restrict__ wte, const float *__restrict__ wpe, int T,
                          int C, size_t total)
{
    const size_t Cv = (size_t)(C / VEC);
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        const size_t r = i / Cv, cv = i % Cv;
        const size_t we = (size_t)tokens[r] * Cv + cv;
        if constexpr (VEC == 4) {
            float4 a = __ldg(reinterpret_cast<const float4 *>(wte) + we);
            if constexpr (WITH_POS) {
                const float4 p = __ldg(reinterpret_cast<const float4 *>(wpe) + (r % (size_t)T) * Cv + cv);
                a.x += p.x, a.y += p.y, a.z += p.z, a.w += p.w;
            }
            reinterpret_cast<float4 *>(out)[i] = a;
        } else {
            float a = __ldg(wte + we);
            if constexpr (WITH_POS) a += __ldg(wpe + (r % (size_t)T) * Cv + cv);
            out[i] = a;
        }
    }
}

template <bool WITH_POS>
static void enc_fwd_launch(fm_cuda_ctx *cx, float *out, const int32_t *tokens, const float *wte,
                           const float *wpe, int B, int T, int C, const char *what)
{
    const size_t elems = (size_t)B * (size_t)T * (size_t)C;
    if (elems == 0) return;
    const bool vec = C % 4 == 0 && aligned16(out) && aligned16(wte) && (!WITH_POS || aligned16(wpe));
    const size_t total = vec ? elems / 4 : elems;
    const unsigned grid = fm_cuda_grid(cx, total, ENC_THREADS);
    if (vec)
        enc_fwd_k<4, WITH_POS><<<grid, ENC_THREADS, 0, cx->stream>>>(out, tokens, wte, wpe, T, C, total);
    else
        enc_fwd_k<1, WITH_POS><<<grid, ENC_THREADS, 0, cx->stream>>>(out, tokens, wte, wpe, T, C, total);
    fm_cuda_check_launch(cx, what);
}

void fm_cuda_encoder_forward(fm_backend *be, float *out, const int32_t *tokens, const float *wte,
                             const float *wpe, int B, int T, int C)
{
    enc_fwd_launch<true>(FM_CUDA_CX(be), out, tokens, wte, wpe, B, T, C, "encoder_forward");
}

void fm_cuda_embedding_forward(fm_backend *be, float *out, const int32_t *tokens, const float *wte,
                               int B, int T, int C)
{
    enc_fwd_launch<false>(FM_CUDA_CX(be), out, tokens, wte, NULL, B, T, C, "embedding_forward");
}

/* ---- backward: dwpe ----------------------------------------------------------------------------- */

static __device__ __forceinline__ void add4(float4 &a, const float4 b)
{
    a.x += b.x, a.y += b.y, a.z += b.z, a.w += b.w;
}

/* dwpe (T,C) += sum over b of dout (B,T,C), b in order; TCv = T*C/VEC items */
template <int VEC>
__global__ void enc_bwd_wpe_k(float *__restrict__ dwpe, const float *__restrict__ dout, int B,
                              size_t TCv)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < TCv;
         i += (size_t)gridDim.x * blockDim.x) {
        if constexpr (VEC == 4) {
            const float4 *d = reinterpret_cast<const float4 *>(dout);
            float4 acc = reinterpret_cast<float4 *>(dwpe)[i];
            int b = 0;
            for (; b + ENC_BWD_UNROLL <= B; b += ENC_BWD_UNROLL) {
                float4 x[ENC_BWD_UNROLL];
#pragma unroll
                for (int u = 0; u < ENC_BWD_UNROLL; u++) x[u] = __ldg(d + (size_t)(b + u) * TCv + i);
#pragma unroll
                for (int u = 0; u < ENC_BWD_UNROLL; u++) add4(acc, x[u]);
            }
            for (; b < B; b++) add4(acc, __ldg(d + (size_t)b * TCv + i));
            reinterpret_cast<float4 *>(dwpe)[i] = acc;
        } else {
            float acc = dwpe[i];
            for (int b = 0; b < B; b++) acc += __ldg(dout + (size_t)b * TCv + i);
            dwpe[i] = acc;
        }
    }
}

/* ---- backward: dwte through buckets of equal ids ------------------------------------------------- */

/* pos[i] = i, the values sorted along with the ids */
__global__ void enc_iota_k(int32_t *pos, int N)
{
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < N; i += gridDim.x * blockDim.x) pos[i] = i;
}

/* One block per sorted position s (ids (N) sorted, pos (N) their rows in row order within an id);
 * the block of the first position of a bucket adds the bucket's dout rows, in order, to dwte's row
 * of that id (C/VEC items per row, blockDim.x threads loop over them). */
template <int VEC>
__global__ void enc_bwd_wte_k(float *__restrict__ dwte, const float *__restrict__ dout,
                              const uint32_t *__restrict__ ids, const int32_t *__restrict__ pos,
                              int N, int C)
{
    const int s = blockIdx.x;
    const uint32_t id = ids[s];
    if (s > 0 && ids[s - 1] == id) return; /* not the start of a bucket: uniform over the block */
    /* the bucket is [s, e): e = the first sorted position with a larger id (binary search) */
    int lo = s + 1, hi = N;
    while (lo < hi) {
        const int mid = lo + (hi - lo) / 2;
        if (ids[mid] == id) lo = mid + 1;
        else hi = mid;
    }
    const int e = lo;
    const int Cv = C / VEC;
    for (int cv = threadIdx.x; cv < Cv; cv += blockDim.x) {
        if constexpr (VEC == 4) {
            const float4 *d = reinterpret_cast<const float4 *>(dout);
            float4 *w = reinterpret_cast<float4 *>(dwte) + (size_t)id * (size_t)Cv + cv;
            float4 acc = *w;
            int j = s;
            for (; j + ENC_BWD_UNROLL <= e; j += ENC_BWD_UNROLL) {
                float4 x[ENC_BWD_UNROLL];
#pragma unroll
                for (int u = 0; u < ENC_BWD_UNROLL; u++)
                    x[u] = __ldg(d + (size_t)__ldg(pos + j + u) * (size_t)Cv + cv);
#pragma unroll
                for (int u = 0; u < ENC_BWD_UNROLL; u++) add4(acc, x[u]);
            }
            for (; j < e; j++) add4(acc, __ldg(d + (size_t)__ldg(pos + j) * (size_t)Cv + cv));
            *w = acc;
        } else {
            float *w = dwte + (size_t)id * (size_t)C + cv;
            float acc = *w;
            for (int j = s; j < e; j++) acc += __ldg(dout + (size_t)__ldg(pos + j) * (size_t)C + cv);
            *w = acc;
        }
    }
}

static size_t round256(size_t b)
{
    return (b + 255u) / 256u * 256u;
}

/* dwte (Vp,C) += dout (N,C) rows scattered by tokens (N), through the sorted buckets */
static void wte_backward(fm_cuda_ctx *cx, float *dwte, const float *dout, const int32_t *tokens,
                         int N, int C, const char *what)
{
    if (N <= 0 || C <= 0) return;
    const uint32_t *keys_in = reinterpret_cast<const uint32_t *>(tokens); /* ids >= 0 */
    size_t temp_bytes = 0;
    cudaError_t e = cub::DeviceRadixSort::SortPairs(NULL, temp_bytes, keys_in, (uint32_t *)NULL,
                                                    (const int32_t *)NULL, (int32_t *)NULL, N, 0,
                                                    32, cx->stream);
    if (e != cudaSuccess) {
        fm_cuda_check(cx, e, what);
        return;
    }
    const size_t arr = round256((size_t)N * sizeof(int32_t));
    char *sc = (char *)fm_cuda_scratch(cx, 3 * arr + round256(temp_bytes), what);
    if (!sc) return; /* recorded */
    uint32_t *ids = (uint32_t *)sc;
    int32_t *pos_in = (int32_t *)(sc + arr), *pos = (int32_t *)(sc + 2 * arr);
    void *temp = sc + 3 * arr;
    enc_iota_k<<<fm_cuda_grid(cx, (size_t)N, ENC_THREADS), ENC_THREADS, 0, cx->stream>>>(pos_in, N);
    fm_cuda_check_launch(cx, what);
    fm_cuda_check(cx,
                  cub::DeviceRadixSort::SortPairs(temp, temp_bytes, keys_in, ids, pos_in, pos, N, 0,
                                                  32, cx->stream),
                  what);
    const bool vec = C % 4 == 0 && aligned16(dwte) && aligned16(dout);
    const int Cv = vec ? C / 4 : C;
    const unsigned threads = Cv >= ENC_THREADS ? ENC_THREADS : (unsigned)((Cv + 31) / 32 * 32);
    if (vec)
        enc_bwd_wte_k<4><<<(unsigned)N, threads, 0, cx->stream>>>(dwte, dout, ids, pos, N, C);
    else
        enc_bwd_wte_k<1><<<(unsigned)N, threads, 0, cx->stream>>>(dwte, dout, ids, pos, N, C);
    fm_cuda_check_launch(cx, what);
}

void fm_cuda_encoder_backward(fm_backend *be, float *dwte, float *dwpe, const float *dout,
                              const int32_t *tokens, int B, int T, int C)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    const size_t TC = (size_t)T * (size_t)C;
    if (TC == 0 || B <= 0) return;
    const bool vec = C % 4 == 0 && aligned16(dwpe) && aligned16(dout);
    const size_t TCv = vec ? TC / 4 : TC;
    const unsigned grid = fm_cuda_grid(cx, TCv, ENC_THREADS);
    if (vec)
        enc_bwd_wpe_k<4><<<grid, ENC_THREADS, 0, cx->stream>>>(dwpe, dout, B, TCv);
    else
        enc_bwd_wpe_k<1><<<grid, ENC_THREADS, 0, cx->stream>>>(dwpe, dout, B, TCv);
    fm_cuda_check_launch(cx, "encoder_backward (wpe)");
    wte_backward(cx, dwte, dout, tokens, B * T, C, "encoder_backward (wte)");
}

/* dwte (Vp,C) += dout (B,T,C) rows scattered by token: the wte part of encoder_backward */
void fm_cuda_embedding_backward(fm_backend *be, float *dwte, const float *dout,
                                const int32_t *tokens, int B, int T, int C)
{
    wte_backward(FM_CUDA_CX(be), dwte, dout, tokens, B * T, C, "embedding_backward");
}

/* attention.cu — causal self-attention, multi-head or grouped-query, forward, backward and KV-cache
 * decode (CUDA, fp32), flash-style: nothing quadratic in T is stored; backward recomputes the
 * probabilities from qkv and lse. qkv rows are [q (NH heads) | k (NKV heads) | v (NKV heads)] of width
 * W = (NH + 2 NKV) hs; query head h uses key/value head g = h / (NH/NKV).
 *
 * One warp per row. Forward: warp (b, h, i) walks the keys j <= i in chunks of 32 (one key per lane:
 * lane computes the scaled score q_i . k_j), keeps an online softmax (running max m, running sum l)
 * and accumulates o_i = sum_j p_j v_j with the lanes split over the head dimension (each lane holds
 * hs/32 <= FM_CUDA_ATT_MAXD/32 outputs in registers), p_j broadcast by shuffles in key order.
 *
 * Backward, three kernels, with D_i = dO_i . O_i and dS_ij = P_ij (dO_i . v_j - D_i) scale:
 *   1. D:  warp per query row; D_i is stored temporarily in the first element of the row's dq slot
 *          of dqkv (dqkv is overwritten anyway; no workspace needed).
 *   2. dK, dV: warp per key row j of key/value head g, over the group's query heads in order and,
 *          lanes over query rows i >= j in chunks of 32:
 *          dv_j = sum_h sum_i P_ij dO_i,  dk_j = sum_h sum_i dS_ij q_i.
 *   3. dQ: warp per query row i (reads its own D_i first, then overwrites the slot):
 *          dq_i = sum_{j<=i} dS_ij k_j.
 * Decode (KV cache): one kernel stores the new k, v rows into the caches, then the forward's row
 * routine (att_row_fwd) runs per new query row over the cache (row stride NKV hs instead of W), so a
 * decoded row has the same numbers as that row of attention_forward on the full sequence.
 * Every sum has a fixed order (chunks in order, keys/queries in order within a chunk): deterministic,
 * no atomics. Cost: each (i, j) pair reads a q/k/v row of hs floats from L1/L2; simple rather than
 * fast (docs/performance.md, "CUDA backend").
 *
 * bf16 table (kernels.h, "Precision": qkv, lse, dout, dqkv and the caches fp32; out bf16). The bf16
 * instance computes attention on tensor cores through cuDNN 9's fused SDPA (attention_cudnn.cu) when
 * the build has cuDNN and cuDNN runs the shape: q, k, v (and, backward, dO) are rounded to bf16 once
 * (to_bf16's rule) into the backend's staging buffers, cuDNN accumulates in fp32 (its probabilities and
 * dS are rounded to bf16 for the second products, as any flash attention on bf16 tensor cores), out is
 * written in bf16 in place, lse is cuDNN's Stats (natural log), and dqkv is cuDNN's bf16 dQ|dK|dV
 * widened to fp32. Otherwise (no cuDNN in the build, a shape cuDNN refuses, e.g. a head size that is
 * not a multiple of 8, or FMTRAIN_CUDA_ATTENTION=builtin in the environment) the kernels below run,
 * with the same inputs rounded to bf16 as they are loaded (so a bf16 instance has one set of numbers
 * whichever path runs, up to the bf16 rounding of the probabilities) and out stored in bf16.
 * attention_decode of the bf16 table rounds q and the cache's k, v to bf16 the same way, so a decoded
 * row matches attention_forward's row of the full sequence. This differs from the CPU's bf16 table,
 * which keeps q, k, v fp32 inside attention: tests/kernels/test_backend_ops.c states both tolerances. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.cuh"
#ifdef FM_HAVE_CUDNN
#include "attention_cudnn.cuh"
#endif

#define ATT_WARPS 4 /* warps per block */
#define ATT_PER (FM_CUDA_ATT_MAXD / 32)

typedef unsigned short att_bf16; /* bf16 bits */

/* An input element as the instance's attention sees it: as is (fp32 table, R = false) or rounded to
 * bf16 (bf16 table, R = true: the tensor-core inputs). */
template <bool R> __device__ __forceinline__ float att_in(const float *p)
{
    const float x = *p;
    if (!R) return x;
    return __uint_as_float((unsigned)fm_cuda_round_bf16(x) << 16);
}
/* Loads and stores of the "act" tensor out: fp32 or bf16 bits (rounded once when stored). */
__device__ __forceinline__ float att_ld(const float *p)
{
    return *p;
}
__device__ __forceinline__ float att_ld(const att_bf16 *p)
{
    return __uint_as_float((unsigned)*p << 16);
}
__device__ __forceinline__ void att_st(float *p, float v)
{
    *p = v;
}
__device__ __forceinline__ void att_st(att_bf16 *p, float v)
{
    *p = fm_cuda_round_bf16(v);
}

/* Row indices of global warp gw over (b, h, i): i fastest, so the warps of a block share (b, h). */
__device__ __forceinline__ void att_row(long gw, int T, int NH, int *b, int *h, int *i)
{
    *i = (int)(gw % T);
    const long bh = gw / T;
    *b = (int)(bh / NH);
    *h = (int)(bh % NH);
}

/* One query row of causal attention, computed by one warp (this lane's share): the query in shared
 * memory qs (hs floats), keys and values 0..last at kb, vb with a row stride of `ks` floats. Writes
 * orow (hs floats) and, when lse_out is not NULL, *lse_out = the row's log-sum-exp (lane 0). Shared by
 * attention_forward (keys in qkv, stride W) and attention_decode (keys in the cache, stride NKV hs), so a
 * decoded row gets the same numbers as the row of the full sequence. */
template <bool R, typename O>
__device__ __forceinline__ void att_row_fwd(const float *qs, const float *kb, const float *vb,
                                            size_t ks, int last, int hs, float scale, int lane,
                                            O *orow, float *lse_out)
{
    float m = -INFINITY, l = 0.0f;
    float acc[ATT_PER];
#pragma unroll
    for (int k = 0; k < ATT_PER; k++) acc[k] = 0.0f;
    for (int j0 = 0; j0 <= last; j0 += 32) {
        const int j = j0 + lane;
        float s = -INFINITY;
        if (j <= last) {
            const float *kr = kb + (size_t)j * ks;
            float dot = 0.0f;
            for (int e = 0; e < hs; e++) dot += qs[e] * att_in<R>(kr + e);
            s = dot * scale;
        }
        const float mnew = fmaxf(m, fm_warp_max(s)); /* finite: key j0 <= last is valid */
        const float p = j <= last ? expf(s - mnew) : 0.0f;
        const float psum = fm_warp_sum(p);
        const float corr = expf(m - mnew); /* 0 on the first chunk (m = -inf) */
        l = l * corr + psum;
        m = mnew;
#pragma unroll
        for (int k = 0; k < ATT_PER; k++) acc[k] *= corr;
        const int cnt = last - j0 + 1 < 32 ? last - j0 + 1 : 32; /* warp-uniform */
        for (int jj = 0; jj < cnt; jj++) {
            const float pj = __shfl_sync(0xffffffffu, p, jj);
            const float *vr = vb + (size_t)(j0 + jj) * ks;
#pragma unroll
            for (int k = 0; k < ATT_PER; k++) {
                const int d = lane + 32 * k;
                if (d < hs) acc[k] += pj * att_in<R>(vr + d);
            }
        }
    }
    const float inv = 1.0f / l;
#pragma unroll
    for (int k = 0; k < ATT_PER; k++) {
        const int d = lane + 32 * k;
        if (d < hs) att_st(orow + d, acc[k] * inv);
    }
    if (lse_out && lane == 0) *lse_out = m + logf(l);
}

/* out (B,T,C), lse (B,NH,T); qkv (B,T,W). Warp per query row (b, h, i). */
template <bool R, typename O>
__global__ void att_fwd_k(O *out, float *lse, const float *qkv, int B, int T, int C, int NH,
                          int NKV, float scale)
{
    extern __shared__ float sh[]; /* ATT_WARPS * hs: the warp's query row */
    const int wib = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const long gw = (long)blockIdx.x * ATT_WARPS + wib;
    if (gw >= (long)B * NH * T) return;
    const int hs = C / NH, W = (NH + 2 * NKV) * hs;
    int b, h, i;
    att_row(gw, T, NH, &b, &h, &i);
    const float *base = qkv + (size_t)b * T * W;
    const float *kb = base + C + (size_t)(h / (NH / NKV)) * hs, *vb = kb + (size_t)NKV * hs;
    float *qs = sh + wib * hs;
    for (int d = lane; d < hs; d += 32) qs[d] = att_in<R>(base + (size_t)i * W + (size_t)h * hs + d);
    __syncwarp();
    att_row_fwd<R>(qs, kb, vb, (size_t)W, i, hs, scale, lane,
                out + ((size_t)b * T + i) * (size_t)C + (size_t)h * hs,
                lse + ((size_t)b * NH + h) * T + i);
}

/* kcache, vcache (B,maxT,KW), KW = NKV hs: rows pos0..pos0+Tq-1 := the k and v of qkv (B,Tq,W).
 * Grid-stride. */
__global__ void att_kv_store_k(float *kcache, float *vcache, const float *qkv, int B, int Tq,
                               int pos0, int maxT, int C, int W, int KW)
{
    const size_t n = (size_t)B * Tq * KW;
    for (size_t x = blockIdx.x * (size_t)blockDim.x + threadIdx.x; x < n;
         x += (size_t)gridDim.x * blockDim.x) {
        const size_t bi = x / (size_t)KW, c = x % (size_t)KW;
        const size_t b = bi / (size_t)Tq, i = bi % (size_t)Tq;
        const size_t dst = (b * (size_t)maxT + (size_t)pos0 + i) * (size_t)KW + c;
        kcache[dst] = qkv[bi * (size_t)W + (size_t)C + c];
        vcache[dst] = qkv[bi * (size_t)W + (size_t)C + (size_t)KW + c];
    }
}

/* out (B,Tq,C); qkv (B,Tq,W); kcache, vcache (B,maxT,NKV hs) already holding rows 0..pos0+Tq-1.
 * Warp per new query row (b, h, i) over cache rows 0..pos0+i. */
template <bool R, typename O>
__global__ void att_dec_k(O *out, const float *kcache, const float *vcache, const float *qkv,
                          int B, int Tq, int pos0, int maxT, int C, int NH, int NKV, float scale)
{
    extern __shared__ float sh[]; /* ATT_WARPS * hs: the warp's query row */
    const int wib = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const long gw = (long)blockIdx.x * ATT_WARPS + wib;
    if (gw >= (long)B * NH * Tq) return;
    const int hs = C / NH, W = (NH + 2 * NKV) * hs, KW = NKV * hs;
    int b, h, i;
    att_row(gw, Tq, NH, &b, &h, &i);
    const float *q = qkv + ((size_t)b * Tq + i) * (size_t)W + (size_t)h * hs;
    float *qs = sh + wib * hs;
    for (int d = lane; d < hs; d += 32) qs[d] = att_in<R>(q + d);
    __syncwarp();
    const size_t cb = (size_t)b * maxT * KW + (size_t)(h / (NH / NKV)) * hs;
    att_row_fwd<R>(qs, kcache + cb, vcache + cb, (size_t)KW, pos0 + i, hs, scale, lane,
                out + ((size_t)b * Tq + i) * (size_t)C + (size_t)h * hs, NULL);
}

/* 1. D_i = dO_i . O_i into dqkv[b, i, h*hs] (the first element of the row's dq slot) */
template <bool R, typename O>
__global__ void att_bwd_d_k(float *dqkv, const float *dout, const O *out, int B, int T, int C,
                            int NH, int NKV)
{
    const int wib = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const long gw = (long)blockIdx.x * ATT_WARPS + wib;
    if (gw >= (long)B * NH * T) return;
    const int hs = C / NH;
    int b, h, i;
    att_row(gw, T, NH, &b, &h, &i);
    const size_t o = ((size_t)b * T + i) * (size_t)C + (size_t)h * hs;
    float s = 0.0f;
    for (int d = lane; d < hs; d += 32) s += att_in<R>(dout + o + d) * att_ld(out + o + d);
    s = fm_warp_sum(s);
    if (lane == 0) dqkv[((size_t)b * T + i) * (size_t)((NH + 2 * NKV) * hs) + (size_t)h * hs] = s;
}

/* 2. dk_j, dv_j for key row j of key/value head g (warp (b, g, j)): the group's query heads in
 * order, lanes over query rows i >= j */
template <bool R>
__global__ void att_bwd_kv_k(float *dqkv, const float *dout, const float *qkv, const float *lse,
                             int B, int T, int C, int NH, int NKV, float scale)
{
    extern __shared__ float sh[]; /* ATT_WARPS * 2 * hs: k_j and v_j */
    const int wib = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const long gw = (long)blockIdx.x * ATT_WARPS + wib;
    if (gw >= (long)B * NKV * T) return;
    const int hs = C / NH, W = (NH + 2 * NKV) * hs, grp = NH / NKV;
    int b, g, j;
    att_row(gw, T, NKV, &b, &g, &j);
    const float *kj = qkv + ((size_t)b * T + j) * W + (size_t)C + (size_t)g * hs;
    const float *vj = kj + (size_t)NKV * hs;
    float *ks = sh + wib * 2 * hs, *vs = ks + hs;
    for (int d = lane; d < hs; d += 32) {
        ks[d] = att_in<R>(kj + d);
        vs[d] = att_in<R>(vj + d);
    }
    __syncwarp();
    float adk[ATT_PER], adv[ATT_PER];
#pragma unroll
    for (int k = 0; k < ATT_PER; k++) adk[k] = adv[k] = 0.0f;
    for (int h = g * grp; h < (g + 1) * grp; h++) {
        const float *qb = qkv + (size_t)b * T * W + (size_t)h * hs;
        const float *dob = dout + (size_t)b * T * C + (size_t)h * hs;
        const float *dqb = dqkv + (size_t)b * T * W + (size_t)h * hs;
        const float *lse_bh = lse + ((size_t)b * NH + h) * T;
        for (int i0 = j; i0 < T; i0 += 32) {
            const int i = i0 + lane;
            float p = 0.0f, ds = 0.0f;
            if (i < T) {
                const float *qr = qb + (size_t)i * W;
                const float *dor = dob + (size_t)i * C;
                float s = 0.0f, dp = 0.0f;
                for (int e = 0; e < hs; e++) {
                    s += att_in<R>(qr + e) * ks[e];
                    dp += att_in<R>(dor + e) * vs[e];
                }
                p = expf(s * scale - lse_bh[i]);
                const float Di = dqb[(size_t)i * W]; /* written by att_bwd_d_k */
                ds = p * (dp - Di) * scale;
            }
            const int cnt = T - i0 < 32 ? T - i0 : 32; /* warp-uniform */
            for (int ii = 0; ii < cnt; ii++) {
                const float pi = __shfl_sync(0xffffffffu, p, ii);
                const float dsi = __shfl_sync(0xffffffffu, ds, ii);
                const float *qr = qb + (size_t)(i0 + ii) * W;
                const float *dor = dob + (size_t)(i0 + ii) * C;
#pragma unroll
                for (int k = 0; k < ATT_PER; k++) {
                    const int d = lane + 32 * k;
                    if (d < hs) {
                        adv[k] += pi * att_in<R>(dor + d);
                        adk[k] += dsi * att_in<R>(qr + d);
                    }
                }
            }
        }
    }
    float *dk = dqkv + ((size_t)b * T + j) * W + (size_t)C + (size_t)g * hs;
    float *dv = dk + (size_t)NKV * hs;
#pragma unroll
    for (int k = 0; k < ATT_PER; k++) {
        const int d = lane + 32 * k;
        if (d < hs) {
            dk[d] = adk[k];
            dv[d] = adv[k];
        }
    }
}

/* 3. dq_i for query row i (warp (b, h, i)), lanes over keys j <= i of key/value head h/(NH/NKV) */
template <bool R>
__global__ void att_bwd_q_k(float *dqkv, const float *dout, const float *qkv, const float *lse,
                            int B, int T, int C, int NH, int NKV, float scale)
{
    extern __shared__ float sh[]; /* ATT_WARPS * 2 * hs: q_i and dO_i */
    const int wib = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const long gw = (long)blockIdx.x * ATT_WARPS + wib;
    if (gw >= (long)B * NH * T) return;
    const int hs = C / NH, W = (NH + 2 * NKV) * hs;
    int b, h, i;
    att_row(gw, T, NH, &b, &h, &i);
    const float *qb = qkv + (size_t)b * T * W + (size_t)h * hs;
    const float *kb = qkv + (size_t)b * T * W + (size_t)C + (size_t)(h / (NH / NKV)) * hs;
    const float *vb = kb + (size_t)NKV * hs;
    float *dq = dqkv + ((size_t)b * T + i) * W + (size_t)h * hs;
    const float Di = dq[0]; /* written by att_bwd_d_k; overwritten below by this warp only */
    const float li = lse[((size_t)b * NH + h) * T + i];
    float *qs = sh + wib * 2 * hs, *dos = qs + hs;
    for (int d = lane; d < hs; d += 32) {
        qs[d] = att_in<R>(qb + (size_t)i * W + d);
        dos[d] = att_in<R>(dout + ((size_t)b * T + i) * (size_t)C + (size_t)h * hs + d);
    }
    __syncwarp();
    float acc[ATT_PER];
#pragma unroll
    for (int k = 0; k < ATT_PER; k++) acc[k] = 0.0f;
    for (int j0 = 0; j0 <= i; j0 += 32) {
        const int j = j0 + lane;
        float ds = 0.0f;
        if (j <= i) {
            const float *kr = kb + (size_t)j * W, *vr = vb + (size_t)j * W;
            float s = 0.0f, dp = 0.0f;
            for (int e = 0; e < hs; e++) {
                s += qs[e] * att_in<R>(kr + e);
                dp += dos[e] * att_in<R>(vr + e);
            }
            const float p = expf(s * scale - li);
            ds = p * (dp - Di) * scale;
        }
        const int cnt = i - j0 + 1 < 32 ? i - j0 + 1 : 32;
        for (int jj = 0; jj < cnt; jj++) {
            const float dsj = __shfl_sync(0xffffffffu, ds, jj);
            const float *kr = kb + (size_t)(j0 + jj) * W;
#pragma unroll
            for (int k = 0; k < ATT_PER; k++) {
                const int d = lane + 32 * k;
                if (d < hs) acc[k] += dsj * att_in<R>(kr + d);
            }
        }
    }
    __syncwarp(); /* every lane has read Di before any lane overwrites dq[0] */
#pragma unroll
    for (int k = 0; k < ATT_PER; k++) {
        const int d = lane + 32 * k;
        if (d < hs) dq[d] = acc[k];
    }
}

static int att_check(fm_cuda_ctx *cx, int C, int NH, int NKV, const char *what)
{
    if (NH <= 0 || C % NH != 0 || C / NH > FM_CUDA_ATT_MAXD || NKV <= 0 || NH % NKV != 0) {
        char detail[160];
        snprintf(detail, sizeof detail,
                 "head size C/NH = %d/%d with %d key/value heads is not supported (head size at "
                 "most %d, NKV dividing NH)", C, NH, NKV, FM_CUDA_ATT_MAXD);
        fm_cuda_fail(cx, what, detail);
        return 0;
    }
    return 1;
}

/* ---- the built-in kernels, both tables ---------------------------------------------------------- */

template <bool R, typename O>
static void att_forward(fm_cuda_ctx *cx, O *out, float *lse, const float *qkv, int B, int T, int C,
                        int NH, int NKV)
{
    const int hs = C / NH;
    const float scale = 1.0f / sqrtf((float)hs);
    const long rows = (long)B * NH * T;
    const unsigned blocks = (unsigned)((rows + ATT_WARPS - 1) / ATT_WARPS);
    att_fwd_k<R, O><<<blocks, 32 * ATT_WARPS, ATT_WARPS * hs * sizeof(float), cx->stream>>>(
        out, lse, qkv, B, T, C, NH, NKV, scale);
    fm_cuda_check_launch(cx, "attention_forward");
}

template <bool R, typename O>
static void att_backward(fm_cuda_ctx *cx, float *dqkv, const float *dout, const float *qkv,
                         const O *out, const float *lse, int B, int T, int C, int NH, int NKV)
{
    const int hs = C / NH;
    const float scale = 1.0f / sqrtf((float)hs);
    const long rows = (long)B * NH * T, kv_rows = (long)B * NKV * T;
    const unsigned blocks = (unsigned)((rows + ATT_WARPS - 1) / ATT_WARPS);
    const unsigned kv_blocks = (unsigned)((kv_rows + ATT_WARPS - 1) / ATT_WARPS);
    att_bwd_d_k<R, O><<<blocks, 32 * ATT_WARPS, 0, cx->stream>>>(dqkv, dout, out, B, T, C, NH, NKV);
    fm_cuda_check_launch(cx, "attention_backward (D)");
    att_bwd_kv_k<R><<<kv_blocks, 32 * ATT_WARPS, 2 * ATT_WARPS * hs * sizeof(float), cx->stream>>>(
        dqkv, dout, qkv, lse, B, T, C, NH, NKV, scale);
    fm_cuda_check_launch(cx, "attention_backward (dK, dV)");
    att_bwd_q_k<R><<<blocks, 32 * ATT_WARPS, 2 * ATT_WARPS * hs * sizeof(float), cx->stream>>>(
        dqkv, dout, qkv, lse, B, T, C, NH, NKV, scale);
    fm_cuda_check_launch(cx, "attention_backward (dQ)");
}

template <bool R, typename O>
static void att_decode(fm_cuda_ctx *cx, O *out, float *kcache, float *vcache, const float *qkv, int B,
                       int Tq, int pos0, int maxT, int C, int NH, int NKV)
{
    const int hs = C / NH, W = (NH + 2 * NKV) * hs, KW = NKV * hs;
    const float scale = 1.0f / sqrtf((float)hs);
    const size_t n = (size_t)B * Tq * KW;
    att_kv_store_k<<<fm_cuda_grid(cx, n, 256), 256, 0, cx->stream>>>(kcache, vcache, qkv, B, Tq,
                                                                      pos0, maxT, C, W, KW);
    fm_cuda_check_launch(cx, "attention_decode (cache store)");
    const long rows = (long)B * NH * Tq;
    const unsigned blocks = (unsigned)((rows + ATT_WARPS - 1) / ATT_WARPS);
    att_dec_k<R, O><<<blocks, 32 * ATT_WARPS, ATT_WARPS * hs * sizeof(float), cx->stream>>>(
        out, kcache, vcache, qkv, B, Tq, pos0, maxT, C, NH, NKV, scale);
    fm_cuda_check_launch(cx, "attention_decode");
}

/* ---- fp32 table ---------------------------------------------------------------------------------- */

void fm_cuda_attention_forward(fm_backend *be, float *out, float *lse, const float *qkv, int B,
                               int T, int C, int NH, int NKV)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    if (B <= 0 || T <= 0) return;
    if (!att_check(cx, C, NH, NKV, "attention_forward")) return;
    att_forward<false>(cx, out, lse, qkv, B, T, C, NH, NKV);
}

void fm_cuda_attention_backward(fm_backend *be, float *dqkv, const float *dout, const float *qkv,
                                const float *out, const float *lse, int B, int T, int C, int NH,
                                int NKV)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    if (B <= 0 || T <= 0) return;
    if (!att_check(cx, C, NH, NKV, "attention_backward")) return;
    att_backward<false>(cx, dqkv, dout, qkv, out, lse, B, T, C, NH, NKV);
}

void fm_cuda_attention_decode(fm_backend *be, float *out, float *kcache, float *vcache,
                              const float *qkv, int B, int Tq, int pos0, int maxT, int C, int NH,
                              int NKV)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    if (B <= 0 || Tq <= 0) return;
    if (!att_check(cx, C, NH, NKV, "attention_decode")) return;
    att_decode<false>(cx, out, kcache, vcache, qkv, B, Tq, pos0, maxT, C, NH, NKV);
}

/* ---- bf16 table ---------------------------------------------------------------------------------- */

/* The attention state of a backend (cx->att): bf16 staging buffers for cuDNN, grown to the largest
 * shape seen (the growth synchronises the device, once per larger shape), and the cuDNN state. */
typedef struct att_state {
    int builtin; /* FMTRAIN_CUDA_ATTENTION=builtin: never cuDNN */
    int warned;  /* the built-in kernels' use for a head size or alignment was reported */
    void *buf[3];     /* qkv16 (B,T,W), dout16 (B,T,C), dqkv16 (B,T,W): bf16 */
    size_t bytes[3];
#ifdef FM_HAVE_CUDNN
    fm_cuda_cudnn *dnn;
#endif
} att_state;

enum { BUF_QKV = 0, BUF_DOUT = 1, BUF_DQKV = 2 };

static att_state *att_get(fm_cuda_ctx *cx)
{
    if (!cx->att) {
        att_state *st = (att_state *)calloc(1, sizeof *st);
        if (!st) {
            fm_cuda_fail(cx, "attention", "out of host memory for the attention state");
            return NULL;
        }
        const char *env = getenv("FMTRAIN_CUDA_ATTENTION");
        st->builtin = env && strcmp(env, "builtin") == 0;
        cx->att = st;
    }
    return (att_state *)cx->att;
}

void fm_cuda_attention_release(fm_cuda_ctx *cx)
{
    att_state *st = (att_state *)cx->att;
    if (!st) return;
#ifdef FM_HAVE_CUDNN
    fm_cuda_cudnn_free(&st->dnn);
#endif
    for (int k = 0; k < 3; k++)
        if (st->buf[k]) (void)cudaFree(st->buf[k]);
    free(st);
    cx->att = NULL;
}

#ifdef FM_HAVE_CUDNN
/* Staging buffer k of at least `bytes` bytes (NULL after a recorded error). */
static void *att_buf(fm_cuda_ctx *cx, att_state *st, int k, size_t bytes)
{
    if (st->bytes[k] >= bytes) return st->buf[k];
    if (st->buf[k]) fm_cuda_check(cx, cudaFree(st->buf[k]), "attention (staging buffer free)");
    st->buf[k] = NULL;
    st->bytes[k] = 0;
    const cudaError_t e = cudaMalloc(&st->buf[k], bytes);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        char d[200];
        snprintf(d, sizeof d, "allocating a bf16 staging buffer of %zu bytes failed: %s (lower the "
                              "micro-batch size)", bytes, cudaGetErrorString(e));
        fm_cuda_fail(cx, "attention", d);
        st->buf[k] = NULL;
        return NULL;
    }
    st->bytes[k] = bytes;
    return st->buf[k];
}

/* dst (n) fp32 = src (n) bf16, exactly; 4 elements per thread (n % 4 == 0, 16-/8-byte aligned) */
__global__ void att_widen4_k(float4 *dst, const uint2 *src, size_t n4)
{
    for (size_t x = blockIdx.x * (size_t)blockDim.x + threadIdx.x; x < n4;
         x += (size_t)gridDim.x * blockDim.x) {
        const uint2 u = src[x];
        dst[x] = make_float4(__uint_as_float(u.x << 16), __uint_as_float(u.x & 0xFFFF0000u),
                             __uint_as_float(u.y << 16), __uint_as_float(u.y & 0xFFFF0000u));
    }
}
__global__ void att_widen_k(float *dst, const att_bf16 *src, size_t n)
{
    for (size_t x = blockIdx.x * (size_t)blockDim.x + threadIdx.x; x < n;
         x += (size_t)gridDim.x * blockDim.x)
        dst[x] = __uint_as_float((unsigned)src[x] << 16);
}

static int aligned16(const void *p)
{
    return ((uintptr_t)p & 15u) == 0;
}

/* The cuDNN graph for this call, or NULL when the built-in kernels must run (the reason, when it is
 * cuDNN's, is printed once per shape by fm_cuda_cudnn_graph). cuDNN needs a head size that is a
 * multiple of 8 and 16-byte aligned tensors (out, lse, dout come from the caller). */
static const void *att_dnn(fm_cuda_ctx *cx, att_state *st, int kind, int B, int T, int C, int NH,
                           int NKV, const void *p1, const void *p2)
{
    const int hs = C / NH;
    if (st->builtin) return NULL;
    if (hs % 8 != 0 || !aligned16(p1) || !aligned16(p2)) {
        if (!st->warned) /* once per backend: the model has one head size and one buffer layout */
            fprintf(stderr, "fmtrain: CUDA attention (head size %d): %s; the bf16 attention uses "
                            "the built-in kernels (slower)\n", hs,
                    hs % 8 != 0 ? "cuDNN SDPA needs a head size that is a multiple of 8"
                                : "a tensor is not 16-byte aligned as cuDNN needs");
        st->warned = 1;
        return NULL;
    }
    return fm_cuda_cudnn_graph(cx, &st->dnn, kind, B, T, NH, NKV, hs);
}
#endif

void fm_cuda_attention_forward_bf16(fm_backend *be, float *out, float *lse, const float *qkv, int B,
                                    int T, int C, int NH, int NKV)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    if (B <= 0 || T <= 0) return;
    if (!att_check(cx, C, NH, NKV, "attention_forward")) return;
    att_state *st = att_get(cx);
    if (!st) return;
#ifdef FM_HAVE_CUDNN
    const void *g = att_dnn(cx, st, FM_CUDNN_FWD, B, T, C, NH, NKV, out, lse);
    if (g) {
        const int hs = C / NH;
        const size_t n3 = (size_t)B * T * (size_t)((NH + 2 * NKV) * hs);
        void *qkv16 = att_buf(cx, st, BUF_QKV, n3 * sizeof(att_bf16));
        if (!qkv16) return;
        fm_cuda_to_bf16(be, qkv16, qkv, n3);
        fm_cuda_cudnn_forward(cx, st->dnn, g, out, lse, qkv16, B, T, NH, NKV, hs);
        return;
    }
#endif
    att_forward<true>(cx, (att_bf16 *)out, lse, qkv, B, T, C, NH, NKV);
}

void fm_cuda_attention_backward_bf16(fm_backend *be, float *dqkv, const float *dout,
                                     const float *qkv, const float *out, const float *lse, int B,
                                     int T, int C, int NH, int NKV)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    if (B <= 0 || T <= 0) return;
    if (!att_check(cx, C, NH, NKV, "attention_backward")) return;
    att_state *st = att_get(cx);
    if (!st) return;
#ifdef FM_HAVE_CUDNN
    const void *g = att_dnn(cx, st, FM_CUDNN_BWD, B, T, C, NH, NKV, out, lse);
    if (g) {
        const int hs = C / NH;
        const size_t n3 = (size_t)B * T * (size_t)((NH + 2 * NKV) * hs), n1 = (size_t)B * T * C;
        void *qkv16 = att_buf(cx, st, BUF_QKV, n3 * sizeof(att_bf16));
        void *dout16 = qkv16 ? att_buf(cx, st, BUF_DOUT, n1 * sizeof(att_bf16)) : NULL;
        void *dqkv16 = dout16 ? att_buf(cx, st, BUF_DQKV, n3 * sizeof(att_bf16)) : NULL;
        if (!dqkv16) return;
        fm_cuda_to_bf16(be, qkv16, qkv, n3);
        fm_cuda_to_bf16(be, dout16, dout, n1);
        fm_cuda_cudnn_backward(cx, st->dnn, g, dqkv16, dout16, qkv16, out, lse, B, T, NH, NKV, hs);
        if (n3 % 4 == 0 && aligned16(dqkv))
            att_widen4_k<<<fm_cuda_grid(cx, n3 / 4, 256), 256, 0, cx->stream>>>(
                (float4 *)dqkv, (const uint2 *)dqkv16, n3 / 4);
        else
            att_widen_k<<<fm_cuda_grid(cx, n3, 256), 256, 0, cx->stream>>>(
                dqkv, (const att_bf16 *)dqkv16, n3);
        fm_cuda_check_launch(cx, "attention_backward (dqkv to fp32)");
        return;
    }
#endif
    att_backward<true>(cx, dqkv, dout, qkv, (const att_bf16 *)out, lse, B, T, C, NH, NKV);
}

void fm_cuda_attention_decode_bf16(fm_backend *be, float *out, float *kcache, float *vcache,
                                   const float *qkv, int B, int Tq, int pos0, int maxT, int C,
                                   int NH, int NKV)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    if (B <= 0 || Tq <= 0) return;
    if (!att_check(cx, C, NH, NKV, "attention_decode")) return;
    att_decode<true>(cx, (att_bf16 *)out, kcache, vcache, qkv, B, Tq, pos0, maxT, C, NH, NKV);
}

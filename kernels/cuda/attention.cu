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
 * fast (docs/performance.md, "CUDA backend"). */
#include "cuda_internal.cuh"

#define ATT_WARPS 4 /* warps per block */
#define ATT_PER (FM_CUDA_ATT_MAXD / 32)

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
__device__ __forceinline__ void att_row_fwd(const float *qs, const float *kb, const float *vb,
                                            size_t ks, int last, int hs, float scale, int lane,
                                            float *orow, float *lse_out)
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
            for (int e = 0; e < hs; e++) dot += qs[e] * kr[e];
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
                if (d < hs) acc[k] += pj * vr[d];
            }
        }
    }
    const float inv = 1.0f / l;
#pragma unroll
    for (int k = 0; k < ATT_PER; k++) {
        const int d = lane + 32 * k;
        if (d < hs) orow[d] = acc[k] * inv;
    }
    if (lse_out && lane == 0) *lse_out = m + logf(l);
}

/* out (B,T,C), lse (B,NH,T); qkv (B,T,W). Warp per query row (b, h, i). */
__global__ void att_fwd_k(float *out, float *lse, const float *qkv, int B, int T, int C, int NH,
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
    for (int d = lane; d < hs; d += 32) qs[d] = base[(size_t)i * W + (size_t)h * hs + d];
    __syncwarp();
    att_row_fwd(qs, kb, vb, (size_t)W, i, hs, scale, lane,
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
__global__ void att_dec_k(float *out, const float *kcache, const float *vcache, const float *qkv,
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
    for (int d = lane; d < hs; d += 32) qs[d] = q[d];
    __syncwarp();
    const size_t cb = (size_t)b * maxT * KW + (size_t)(h / (NH / NKV)) * hs;
    att_row_fwd(qs, kcache + cb, vcache + cb, (size_t)KW, pos0 + i, hs, scale, lane,
                out + ((size_t)b * Tq + i) * (size_t)C + (size_t)h * hs, NULL);
}

/* 1. D_i = dO_i . O_i into dqkv[b, i, h*hs] (the first element of the row's dq slot) */
__global__ void att_bwd_d_k(float *dqkv, const float *dout, const float *out, int B, int T, int C,
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
    for (int d = lane; d < hs; d += 32) s += dout[o + d] * out[o + d];
    s = fm_warp_sum(s);
    if (lane == 0) dqkv[((size_t)b * T + i) * (size_t)((NH + 2 * NKV) * hs) + (size_t)h * hs] = s;
}

/* 2. dk_j, dv_j for key row j of key/value head g (warp (b, g, j)): the group's query heads in
 * order, lanes over query rows i >= j */
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
        ks[d] = kj[d];
        vs[d] = vj[d];
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
                    s += qr[e] * ks[e];
                    dp += dor[e] * vs[e];
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
                        adv[k] += pi * dor[d];
                        adk[k] += dsi * qr[d];
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
        qs[d] = qb[(size_t)i * W + d];
        dos[d] = dout[((size_t)b * T + i) * (size_t)C + (size_t)h * hs + d];
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
                s += qs[e] * kr[e];
                dp += dos[e] * vr[e];
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
                if (d < hs) acc[k] += dsj * kr[d];
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

void fm_cuda_attention_forward(fm_backend *be, float *out, float *lse, const float *qkv, int B,
                               int T, int C, int NH, int NKV)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    if (B <= 0 || T <= 0) return;
    if (!att_check(cx, C, NH, NKV, "attention_forward")) return;
    const int hs = C / NH;
    const float scale = 1.0f / sqrtf((float)hs);
    const long rows = (long)B * NH * T;
    const unsigned blocks = (unsigned)((rows + ATT_WARPS - 1) / ATT_WARPS);
    att_fwd_k<<<blocks, 32 * ATT_WARPS, ATT_WARPS * hs * sizeof(float), cx->stream>>>(
        out, lse, qkv, B, T, C, NH, NKV, scale);
    fm_cuda_check_launch(cx, "attention_forward");
}

void fm_cuda_attention_backward(fm_backend *be, float *dqkv, const float *dout, const float *qkv,
                                const float *out, const float *lse, int B, int T, int C, int NH,
                                int NKV)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    if (B <= 0 || T <= 0) return;
    if (!att_check(cx, C, NH, NKV, "attention_backward")) return;
    const int hs = C / NH;
    const float scale = 1.0f / sqrtf((float)hs);
    const long rows = (long)B * NH * T, kv_rows = (long)B * NKV * T;
    const unsigned blocks = (unsigned)((rows + ATT_WARPS - 1) / ATT_WARPS);
    const unsigned kv_blocks = (unsigned)((kv_rows + ATT_WARPS - 1) / ATT_WARPS);
    att_bwd_d_k<<<blocks, 32 * ATT_WARPS, 0, cx->stream>>>(dqkv, dout, out, B, T, C, NH, NKV);
    fm_cuda_check_launch(cx, "attention_backward (D)");
    att_bwd_kv_k<<<kv_blocks, 32 * ATT_WARPS, 2 * ATT_WARPS * hs * sizeof(float), cx->stream>>>(
        dqkv, dout, qkv, lse, B, T, C, NH, NKV, scale);
    fm_cuda_check_launch(cx, "attention_backward (dK, dV)");
    att_bwd_q_k<<<blocks, 32 * ATT_WARPS, 2 * ATT_WARPS * hs * sizeof(float), cx->stream>>>(
        dqkv, dout, qkv, lse, B, T, C, NH, NKV, scale);
    fm_cuda_check_launch(cx, "attention_backward (dQ)");
}

void fm_cuda_attention_decode(fm_backend *be, float *out, float *kcache, float *vcache,
                              const float *qkv, int B, int Tq, int pos0, int maxT, int C, int NH,
                              int NKV)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    if (B <= 0 || Tq <= 0) return;
    if (!att_check(cx, C, NH, NKV, "attention_decode")) return;
    const int hs = C / NH, W = (NH + 2 * NKV) * hs, KW = NKV * hs;
    const float scale = 1.0f / sqrtf((float)hs);
    const size_t n = (size_t)B * Tq * KW;
    att_kv_store_k<<<fm_cuda_grid(cx, n, 256), 256, 0, cx->stream>>>(kcache, vcache, qkv, B, Tq,
                                                                      pos0, maxT, C, W, KW);
    fm_cuda_check_launch(cx, "attention_decode (cache store)");
    const long rows = (long)B * NH * Tq;
    const unsigned blocks = (unsigned)((rows + ATT_WARPS - 1) / ATT_WARPS);
    att_dec_k<<<blocks, 32 * ATT_WARPS, ATT_WARPS * hs * sizeof(float), cx->stream>>>(
        out, kcache, vcache, qkv, B, Tq, pos0, maxT, C, NH, NKV, scale);
    fm_cuda_check_launch(cx, "attention_decode");
}

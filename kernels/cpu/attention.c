/* attention.c — causal self-attention, multi-head or grouped-query (NKV key/value heads shared by
 * groups of NH/NKV query heads), forward and backward (CPU), flash-style, and the KV-cache decode used
 * for inference (attention_decode, at the end). qkv rows are [q (NH heads) | k (NKV) | v (NKV)] of
 * width W = (NH + 2*NKV)*hs; query head h reads key/value head h / (NH/NKV).
 *
 * Work item: forward, one (batch b, query head h) pair; backward, one (batch b, key/value head g)
 * pair, whose query heads are processed in order (so dk/dv of a key/value head, which sum over its
 * query heads, and dq of each head are written by one thread in a fixed order: deterministic for any
 * thread count). Within a head the query rows are
 * processed in blocks of BQ = FM_CPU_ATT_BQ rows against key blocks of BK = FM_CPU_ATT_BK columns up
 * to the diagonal; block products are single-threaded cblas_sgemm calls on the strided q/k/v columns
 * of qkv, the softmax is an online (running max / running sum) softmax in the thread's scratch.
 *
 * Memory: nothing quadratic in T. Forward keeps out (B,T,C) and lse (B,NH,T); backward recomputes the
 * probabilities P = exp(scale q.k - lse) block by block. Scratch per thread (fm_cpu_ctx):
 * 2*BQ*BK + 4*BQ floats = 66 KiB, independent of T.
 *
 * FLOPs: forward 2*T*T*hs per head (two products over the causal half, counting the masked part of
 * diagonal blocks), backward 2.5x that.
 *
 * Precision: q, k, v, lse and every gradient are fp32 in both tables (kernels.h); the bf16 table's
 * kernels differ only in the attention output `out`, a matmul input: accumulated in fp32 (the
 * forward's block in the thread's BQ x hs workspace), rounded to bf16 once when stored, and read back
 * as bf16 by the backward for D = rowsum(dO * O). The block products stay fp32 CBLAS calls: at GPT-2's
 * shapes attention is a few per cent of a step (docs/performance.md). */
#include <math.h>
#include <omp.h>

#include <cblas.h>

#include "cpu_internal.h"
#include "cpu_kernels.h"

#define BQ FM_CPU_ATT_BQ
#define BK FM_CPU_ATT_BK

/* Threads for `work` multiply-adds split into `items` independent work items. */
static int att_team(int threads, double work, int items)
{
    int nt = work < (double)FM_CPU_GEMM_SERIAL_MAC ? 1 : threads;
    if (nt > items) nt = items;
    return nt < 1 ? 1 : nt;
}

/* out (B,T,C) as fp32 (o32) or bf16 (o16, the other NULL), lse (B,NH,T); qkv (B,T,W). The output
 * block is accumulated in fp32: in place in o32, or (bf16) in the thread's BQ x hs buffer obuf
 * (nt * BQ * hs floats) and rounded once when its rows are final. */
static void att_forward(fm_backend *be, float *o32, fm_bf16 *o16, float *obuf, float *lse,
                        const float *qkv, int B, int T, int C, int NH, int NKV)
{
    const fm_cpu_ctx *cx = fm_cpu_cx(be);
    const int hs = C / NH, W = (NH + 2 * NKV) * hs, grp = NH / NKV; /* W: the row width of qkv */
    const float scale = 1.0f / sqrtf((float)hs);
    const int nt = att_team(be->threads, (double)B * (double)T * (double)T * (double)C, B * NH);
#pragma omp parallel num_threads(nt)
    {
        float *S = cx->scratch + (size_t)omp_get_thread_num() * cx->scratch_floats;
        float *mrow = S + 2 * BQ * BK, *lrow = mrow + BQ;
        float *ob_thread = o16 ? obuf + (size_t)omp_get_thread_num() * BQ * (size_t)hs : NULL;
#pragma omp for schedule(static)
        for (int bh = 0; bh < B * NH; bh++) {
            const int b = bh / NH, h = bh % NH;
            const float *q = qkv + (size_t)b * T * W + (size_t)h * hs;
            const float *k = qkv + (size_t)b * T * W + (size_t)C + (size_t)(h / grp) * hs;
            const float *v = k + (size_t)NKV * hs;
            const size_t ooff = (size_t)b * T * C + (size_t)h * hs; /* (b, t=0, head h) of out */
            float *lse_bh = lse + (size_t)bh * T;
            for (int i0 = 0; i0 < T; i0 += BQ) {
                const int i1 = i0 + BQ < T ? i0 + BQ : T, nr = i1 - i0;
                /* the block's fp32 output rows: out itself (fp32) or the thread's buffer (bf16) */
                float *ob = o16 ? ob_thread : o32 + ooff + (size_t)i0 * C;
                const int ldo = o16 ? hs : C;
                for (int r = 0; r < nr; r++) {
                    mrow[r] = -INFINITY;
                    lrow[r] = 0.0f;
                    float *orow = ob + (size_t)r * ldo;
                    for (int d = 0; d < hs; d++) orow[d] = 0.0f;
                }
                for (int j0 = 0; j0 < i1; j0 += BK) {
                    const int j1 = j0 + BK < i1 ? j0 + BK : i1, nk = j1 - j0;
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nr, nk, hs, scale,
                                q + (size_t)i0 * W, W, k + (size_t)j0 * W, W, 0.0f, S, BK);
                    for (int r = 0; r < nr; r++) {
                        float *s = S + (size_t)r * BK;
                        int cnt = i0 + r + 1 - j0; /* keys j <= i */
                        if (cnt > nk) cnt = nk;
                        if (cnt <= 0) {
                            for (int c = 0; c < nk; c++) s[c] = 0.0f;
                            continue;
                        }
                        float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
                        for (int c = 0; c < cnt; c++) mx = s[c] > mx ? s[c] : mx;
                        const float mnew = mx > mrow[r] ? mx : mrow[r];
                        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
                        for (int c = 0; c < cnt; c++) {
                            float p = fm_cpu_expf(s[c] - mnew);
                            s[c] = p;
                            sum += p;
                        }
                        for (int c = cnt; c < nk; c++) s[c] = 0.0f;
                        const float corr = fm_cpu_expf(mrow[r] - mnew); /* 0 on the first block */
                        lrow[r] = lrow[r] * corr + sum;
                        mrow[r] = mnew;
                        if (corr != 1.0f) {
                            float *orow = ob + (size_t)r * ldo;
#pragma omp simd
                            for (int d = 0; d < hs; d++) orow[d] *= corr;
                        }
                    }
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nr, hs, nk, 1.0f, S, BK,
                                v + (size_t)j0 * W, W, 1.0f, ob, ldo);
                }
                for (int r = 0; r < nr; r++) {
                    float *orow = ob + (size_t)r * ldo;
                    const float inv = 1.0f / lrow[r];
                    if (o16) {
                        fm_bf16 *h16 = o16 + ooff + (size_t)(i0 + r) * C;
#pragma omp simd
                        for (int d = 0; d < hs; d++) h16[d] = fm_cpu_round_bf16(orow[d] * inv);
                    } else {
#pragma omp simd
                        for (int d = 0; d < hs; d++) orow[d] *= inv;
                    }
                    lse_bh[i0 + r] = mrow[r] + logf(lrow[r]);
                }
            }
        }
    }
}

/* out (B,T,C), lse (B,NH,T); qkv (B,T,W) */
void fm_cpu_attention_forward(fm_backend *be, float *out, float *lse, const float *qkv, int B,
                              int T, int C, int NH, int NKV)
{
    att_forward(be, out, NULL, NULL, lse, qkv, B, T, C, NH, NKV);
}

/* bf16 table: out (B,T,C) bf16; the rest as fm_cpu_attention_forward */
void fm_cpu_attention_forward_bf16(fm_backend *be, float *out, float *lse, const float *qkv, int B,
                                   int T, int C, int NH, int NKV)
{
    float *obuf = fm_cpu_work(be, (size_t)be->threads * BQ * (size_t)(C / NH) * sizeof(float));
    if (!obuf) return;
    att_forward(be, NULL, (fm_bf16 *)out, obuf, lse, qkv, B, T, C, NH, NKV);
}

/* dqkv (B,T,W) overwritten; dout (B,T,C), qkv (B,T,W), out (B,T,C) fp32 (o32) or bf16 (o16, the
 * other NULL), lse (B,NH,T) */
static void att_backward(fm_backend *be, float *dqkv, const float *dout, const float *qkv,
                         const float *o32, const fm_bf16 *o16, const float *lse, int B, int T, int C,
                         int NH, int NKV)
{
    const fm_cpu_ctx *cx = fm_cpu_cx(be);
    const int hs = C / NH, W = (NH + 2 * NKV) * hs, grp = NH / NKV; /* W: the row width of qkv */
    const float scale = 1.0f / sqrtf((float)hs);
    const int nt = att_team(be->threads, (double)B * (double)T * (double)T * (double)C, B * NKV);
#pragma omp parallel num_threads(nt)
    {
        float *P = cx->scratch + (size_t)omp_get_thread_num() * cx->scratch_floats;
        float *dP = P + BQ * BK, *Drow = dP + BQ * BK;
#pragma omp for schedule(static)
        for (int bg = 0; bg < B * NKV; bg++) {
            const int b = bg / NKV, g = bg % NKV;
            const float *k = qkv + (size_t)b * T * W + (size_t)C + (size_t)g * hs;
            const float *v = k + (size_t)NKV * hs;
            float *dk = dqkv + (size_t)b * T * W + (size_t)C + (size_t)g * hs;
            float *dv = dk + (size_t)NKV * hs;
            for (int t = 0; t < T; t++) {
                float *rk = dk + (size_t)t * W, *rv = dv + (size_t)t * W;
                for (int d = 0; d < hs; d++) rk[d] = rv[d] = 0.0f;
            }
            for (int h = g * grp; h < (g + 1) * grp; h++) { /* the group's query heads, in order */
                const float *q = qkv + (size_t)b * T * W + (size_t)h * hs;
                float *dq = dqkv + (size_t)b * T * W + (size_t)h * hs;
                const size_t ooff = (size_t)b * T * C + (size_t)h * hs;
                const float *dO = dout + (size_t)b * T * C + (size_t)h * hs;
                const float *lse_bh = lse + ((size_t)b * NH + (size_t)h) * T;
                for (int t = 0; t < T; t++) {
                    float *rq = dq + (size_t)t * W;
                    for (int d = 0; d < hs; d++) rq[d] = 0.0f;
                }
                for (int i0 = 0; i0 < T; i0 += BQ) {
                    const int i1 = i0 + BQ < T ? i0 + BQ : T, nr = i1 - i0;
                    for (int r = 0; r < nr; r++) { /* D_i = dO_i . O_i */
                        const float *a = dO + (size_t)(i0 + r) * C;
                        const size_t orow = ooff + (size_t)(i0 + r) * C;
                        float s = 0.0f;
                        if (o16) {
                            const fm_bf16 *c = o16 + orow;
#pragma omp simd reduction(+ : s)
                            for (int d = 0; d < hs; d++) s += a[d] * fm_cpu_bf16_to_f32(c[d]);
                        } else {
                            const float *c = o32 + orow;
#pragma omp simd reduction(+ : s)
                            for (int d = 0; d < hs; d++) s += a[d] * c[d];
                        }
                        Drow[r] = s;
                    }
                    for (int j0 = 0; j0 < i1; j0 += BK) {
                        const int j1 = j0 + BK < i1 ? j0 + BK : i1, nk = j1 - j0;
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nr, nk, hs, scale,
                                    q + (size_t)i0 * W, W, k + (size_t)j0 * W, W, 0.0f, P, BK);
                        for (int r = 0; r < nr; r++) {
                            float *s = P + (size_t)r * BK;
                            int cnt = i0 + r + 1 - j0;
                            if (cnt > nk) cnt = nk;
                            if (cnt < 0) cnt = 0;
                            const float l = lse_bh[i0 + r];
#pragma omp simd
                            for (int c = 0; c < cnt; c++) s[c] = fm_cpu_expf(s[c] - l);
                            for (int c = cnt; c < nk; c++) s[c] = 0.0f;
                        }
                        /* dV_j += P^T dO_i */
                        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, hs, nr, 1.0f, P, BK,
                                    dO + (size_t)i0 * C, C, 1.0f, dv + (size_t)j0 * W, W);
                        /* dP = dO_i V_j^T */
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nr, nk, hs, 1.0f,
                                    dO + (size_t)i0 * C, C, v + (size_t)j0 * W, W, 0.0f, dP, BK);
                        /* dS = P (dP - D) * scale (the scale of the scores folded in) */
                        for (int r = 0; r < nr; r++) {
                            const float *p = P + (size_t)r * BK;
                            float *gr = dP + (size_t)r * BK;
                            const float Dr = Drow[r];
#pragma omp simd
                            for (int c = 0; c < nk; c++) gr[c] = p[c] * (gr[c] - Dr) * scale;
                        }
                        /* dQ_i += dS K_j ; dK_j += dS^T Q_i */
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nr, hs, nk, 1.0f, dP,
                                    BK, k + (size_t)j0 * W, W, 1.0f, dq + (size_t)i0 * W, W);
                        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, hs, nr, 1.0f, dP,
                                    BK, q + (size_t)i0 * W, W, 1.0f, dk + (size_t)j0 * W, W);
                    }
                }
            }
        }
    }
}

/* dqkv (B,T,W) overwritten; dout (B,T,C), qkv (B,T,W), out (B,T,C), lse (B,NH,T) */
void fm_cpu_attention_backward(fm_backend *be, float *dqkv, const float *dout, const float *qkv,
                               const float *out, const float *lse, int B, int T, int C, int NH,
                               int NKV)
{
    att_backward(be, dqkv, dout, qkv, out, NULL, lse, B, T, C, NH, NKV);
}

/* bf16 table: out (B,T,C) (forward's output) bf16; the rest as fm_cpu_attention_backward */
void fm_cpu_attention_backward_bf16(fm_backend *be, float *dqkv, const float *dout, const float *qkv,
                                    const float *out, const float *lse, int B, int T, int C, int NH,
                                    int NKV)
{
    att_backward(be, dqkv, dout, qkv, NULL, (const fm_bf16 *)out, lse, B, T, C, NH, NKV);
}

/* Inference with a key/value cache (kernels.h, attention_decode).
 * out (B,Tq,C); kcache, vcache (B,maxT,KW), KW = NKV*hs: rows pos0..pos0+Tq-1 are written first (the
 * new k, v), rows 0..pos0-1 hold earlier positions; qkv (B,Tq,W) the new positions' [q | k | v].
 * Work item: one (b, h, i) query row, i in 0..Tq-1 at absolute position pos0+i; one thread computes
 * it entirely (online softmax over the same key blocks of BK columns as attention_forward, keys in
 * index order), so the result does not depend on the thread count. Scratch: BK floats per thread. */
static void att_decode(fm_backend *be, float *o32, fm_bf16 *o16, float *obuf, float *kcache,
                       float *vcache, const float *qkv, int B, int Tq, int pos0, int maxT, int C,
                       int NH, int NKV)
{
    const fm_cpu_ctx *cx = fm_cpu_cx(be);
    if (B <= 0 || Tq <= 0) return;
    const int hs = C / NH, W = (NH + 2 * NKV) * hs, KW = NKV * hs, grp = NH / NKV;
    const float scale = 1.0f / sqrtf((float)hs);
    const int nitems = B * NH * Tq;
    const int nt =
        att_team(be->threads, (double)B * (double)Tq * (double)(pos0 + Tq) * (double)C, nitems);
#pragma omp parallel num_threads(nt)
    {
        float *s = cx->scratch + (size_t)omp_get_thread_num() * cx->scratch_floats; /* BK scores */
        float *ob_thread = o16 ? obuf + (size_t)omp_get_thread_num() * (size_t)hs : NULL;
#pragma omp for schedule(static)
        for (int bi = 0; bi < B * Tq; bi++) { /* the new k and v into the caches */
            const int b = bi / Tq, i = bi % Tq;
            const float *src = qkv + (size_t)bi * W;
            const size_t row = (size_t)b * maxT + (size_t)(pos0 + i);
            float *kd = kcache + row * KW, *vd = vcache + row * KW;
            for (int c = 0; c < KW; c++) {
                kd[c] = src[C + c];
                vd[c] = src[C + KW + c];
            }
        } /* implicit barrier: every cache row is written before any query reads it */
#pragma omp for schedule(static)
        for (int it = 0; it < nitems; it++) {
            const int i = it % Tq, bh = it / Tq, b = bh / NH, h = bh % NH;
            const int last = pos0 + i; /* keys 0..last */
            const float *q = qkv + ((size_t)b * Tq + i) * W + (size_t)h * hs;
            const float *kb = kcache + (size_t)b * maxT * KW + (size_t)(h / grp) * hs;
            const float *vb = vcache + (size_t)b * maxT * KW + (size_t)(h / grp) * hs;
            const size_t ooff = ((size_t)b * Tq + i) * C + (size_t)h * hs;
            float *o = o16 ? ob_thread : o32 + ooff; /* fp32 accumulator of the row */
            for (int d = 0; d < hs; d++) o[d] = 0.0f;
            float m = -INFINITY, l = 0.0f;
            for (int j0 = 0; j0 <= last; j0 += BK) {
                const int cnt = last + 1 - j0 < BK ? last + 1 - j0 : BK;
                float mx = -INFINITY;
                for (int c = 0; c < cnt; c++) {
                    const float *kr = kb + (size_t)(j0 + c) * KW;
                    float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
                    for (int d = 0; d < hs; d++) dot += q[d] * kr[d];
                    s[c] = dot * scale;
                    mx = s[c] > mx ? s[c] : mx;
                }
                const float mnew = mx > m ? mx : m;
                float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
                for (int c = 0; c < cnt; c++) {
                    const float p = fm_cpu_expf(s[c] - mnew);
                    s[c] = p;
                    sum += p;
                }
                const float corr = fm_cpu_expf(m - mnew); /* 0 on the first block */
                l = l * corr + sum;
                m = mnew;
                if (corr != 1.0f) {
#pragma omp simd
                    for (int d = 0; d < hs; d++) o[d] *= corr;
                }
                for (int c = 0; c < cnt; c++) {
                    const float p = s[c];
                    const float *vr = vb + (size_t)(j0 + c) * KW;
#pragma omp simd
                    for (int d = 0; d < hs; d++) o[d] += p * vr[d];
                }
            }
            const float inv = 1.0f / l;
            if (o16) {
                fm_bf16 *h16 = o16 + ooff;
#pragma omp simd
                for (int d = 0; d < hs; d++) h16[d] = fm_cpu_round_bf16(o[d] * inv);
            } else {
#pragma omp simd
                for (int d = 0; d < hs; d++) o[d] *= inv;
            }
        }
    }
}

void fm_cpu_attention_decode(fm_backend *be, float *out, float *kcache, float *vcache,
                             const float *qkv, int B, int Tq, int pos0, int maxT, int C, int NH,
                             int NKV)
{
    att_decode(be, out, NULL, NULL, kcache, vcache, qkv, B, Tq, pos0, maxT, C, NH, NKV);
}

/* bf16 table: out (B,Tq,C) bf16 (each row accumulated in fp32 in the thread's hs floats of the
 * workspace, rounded once); the caches and qkv fp32 as in fm_cpu_attention_decode */
void fm_cpu_attention_decode_bf16(fm_backend *be, float *out, float *kcache, float *vcache,
                                  const float *qkv, int B, int Tq, int pos0, int maxT, int C,
                                  int NH, int NKV)
{
    float *obuf = fm_cpu_work(be, (size_t)be->threads * (size_t)(C / NH) * sizeof(float));
    if (!obuf) return;
    att_decode(be, NULL, (fm_bf16 *)out, obuf, kcache, vcache, qkv, B, Tq, pos0, maxT, C, NH, NKV);
}

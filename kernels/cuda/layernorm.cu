/* layernorm.cu — LayerNorm over the last dimension (eps 1e-5, biased variance), CUDA; forward in both
 * tables (out fp32, or bf16 rounded once from the fp32 value: kernels.h "Precision"), backward shared
 * (it reads no "act" tensor).
 *
 * Forward and the dinp part of backward: one warp per row, lanes striding over C (128-bit loads when
 * C % 4 == 0 and the rows are 16-byte aligned), butterfly sums (two passes for the variance, as the
 * CPU kernel: mean first, then the mean of (x - mean)^2).
 * dweight/dbias: over the whole GPU in two passes (matmul.cu's scheme): per-row-block partial sums
 * (grid ceil(C/128) x RB, fm_cuda_row_blocks) into the scratch, then a fixed-order sum over the row
 * blocks per channel; no atomics, bits independent of timing. */
#include "cuda_internal.cuh"

#define LN_EPS 1e-5f
#define LN_ROWS_PER_BLOCK 8 /* warps per block in the row kernels */
#define LN_PX 32 /* parameter-gradient kernel: column groups of 4 per block (128 columns) */
#define LN_PY 8  /* row lanes per block */

/* out (N,C) as OutT (float or bf16 bits); vec: C % 4 == 0 and inp, weight, bias 16-byte aligned
 * (out then 16- or 8-byte aligned per row as well: it is checked by the caller) */
template <typename OutT>
__global__ void ln_fwd_k(OutT *out, float *mean, float *rstd, const float *inp, const float *weight,
                         const float *bias, int N, int C, int vec)
{
    const int row = blockIdx.x * LN_ROWS_PER_BLOCK + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= N) return; /* whole warps leave together */
    const float *x = inp + (size_t)row * (size_t)C;
    OutT *o = out + (size_t)row * (size_t)C;
    float s = 0.0f;
    if (vec) {
        for (int c = 4 * lane; c < C; c += 128) {
            const float4 v = *reinterpret_cast<const float4 *>(x + c);
            s += (v.x + v.y) + (v.z + v.w);
        }
    } else {
        for (int c = lane; c < C; c += 32) s += x[c];
    }
    const float m = fm_warp_sum(s) / (float)C;
    float v = 0.0f;
    if (vec) {
        for (int c = 4 * lane; c < C; c += 128) {
            const float4 a = *reinterpret_cast<const float4 *>(x + c);
            const float d0 = a.x - m, d1 = a.y - m, d2 = a.z - m, d3 = a.w - m;
            v += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3);
        }
    } else {
        for (int c = lane; c < C; c += 32) {
            const float d = x[c] - m;
            v += d * d;
        }
    }
    const float r = 1.0f / sqrtf(fm_warp_sum(v) / (float)C + LN_EPS);
    if (vec) {
        for (int c = 4 * lane; c < C; c += 128) {
            const float4 a = *reinterpret_cast<const float4 *>(x + c);
            const float4 w = *reinterpret_cast<const float4 *>(weight + c);
            const float4 b = *reinterpret_cast<const float4 *>(bias + c);
            fm_cuda_store4(o + c, make_float4((a.x - m) * r * w.x + b.x, (a.y - m) * r * w.y + b.y,
                                              (a.z - m) * r * w.z + b.z, (a.w - m) * r * w.w + b.w));
        }
    } else {
        for (int c = lane; c < C; c += 32) fm_cuda_store(o + c, (x[c] - m) * r * weight[c] + bias[c]);
    }
    if (lane == 0) {
        mean[row] = m;
        rstd[row] = r;
    }
}

/* dinp (N,C) += rstd * (g - mean_c(g) - xh * mean_c(g * xh)), g = dout * weight */
__global__ void ln_bwd_dinp_k(float *dinp, const float *dout, const float *inp, const float *weight,
                              const float *mean, const float *rstd, int N, int C)
{
    const int row = blockIdx.x * LN_ROWS_PER_BLOCK + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= N) return;
    const float *x = inp + (size_t)row * (size_t)C;
    const float *d = dout + (size_t)row * (size_t)C;
    float *di = dinp + (size_t)row * (size_t)C;
    const float m = mean[row], r = rstd[row];
    float sg = 0.0f, sgx = 0.0f;
    for (int c = lane; c < C; c += 32) {
        const float g = d[c] * weight[c];
        sg += g;
        sgx += g * (x[c] - m) * r;
    }
    const float mg = fm_warp_sum(sg) / (float)C;
    const float mgx = fm_warp_sum(sgx) / (float)C;
    for (int c = lane; c < C; c += 32) {
        const float g = d[c] * weight[c];
        const float xh = (x[c] - m) * r;
        di[c] += r * (g - mg - xh * mgx);
    }
}

/* First pass of dweight/dbias: part (RB, C) = per-row-block sums of dout * xh, part + RB*C the sums
 * of dout; block (LN_PX, LN_PY), grid (ceil(C/128), RB); each thread owns 4 consecutive channels of
 * the rows of its row lane. Fixed order throughout. */
__global__ void ln_bwd_params_part_k(float *part, const float *dout, const float *inp,
                                     const float *mean, const float *rstd, int N, int C)
{
    __shared__ float sw[LN_PY][4 * LN_PX + 1];
    __shared__ float sb[LN_PY][4 * LN_PX + 1];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int c0 = blockIdx.x * 4 * LN_PX + 4 * tx;
    const int per = (N + (int)gridDim.y - 1) / (int)gridDim.y;
    const int r0 = (int)blockIdx.y * per, r1 = min(N, r0 + per);
    float aw[4] = {0.0f, 0.0f, 0.0f, 0.0f}, ab[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int n = r0 + ty; n < r1; n += LN_PY) {
        const float m = mean[n], r = rstd[n];
        for (int j = 0; j < 4; j++) {
            const int c = c0 + j;
            if (c < C) {
                const size_t i = (size_t)n * (size_t)C + (size_t)c;
                const float d = dout[i];
                aw[j] += d * (inp[i] - m) * r;
                ab[j] += d;
            }
        }
    }
    for (int j = 0; j < 4; j++) sw[ty][4 * tx + j] = aw[j], sb[ty][4 * tx + j] = ab[j];
    __syncthreads();
    const int t = ty * LN_PX + tx, c = blockIdx.x * 4 * LN_PX + t;
    if (t < 4 * LN_PX && c < C) {
        float w = 0.0f, b = 0.0f;
        for (int y = 0; y < LN_PY; y++) w += sw[y][t], b += sb[y][t];
        const size_t RB = gridDim.y;
        part[(size_t)blockIdx.y * (size_t)C + (size_t)c] = w;
        part[RB * (size_t)C + (size_t)blockIdx.y * (size_t)C + (size_t)c] = b;
    }
}

template <typename OutT>
static void ln_forward(fm_backend *be, OutT *out, float *mean, float *rstd, const float *inp,
                       const float *weight, const float *bias, int N, int C, const char *what)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    if (N <= 0 || C <= 0) return;
    const int vec = C % 4 == 0 && fm_cuda_al16(inp, weight, bias) && fm_cuda_al16(out);
    const unsigned blocks = (unsigned)((N + LN_ROWS_PER_BLOCK - 1) / LN_ROWS_PER_BLOCK);
    ln_fwd_k<OutT><<<blocks, 32 * LN_ROWS_PER_BLOCK, 0, cx->stream>>>(out, mean, rstd, inp, weight,
                                                                      bias, N, C, vec);
    fm_cuda_check_launch(cx, what);
}

void fm_cuda_layernorm_forward(fm_backend *be, float *out, float *mean, float *rstd,
                               const float *inp, const float *weight, const float *bias, int N,
                               int C)
{
    ln_forward(be, out, mean, rstd, inp, weight, bias, N, C, "layernorm_forward");
}

/* bf16 table: out (N,C) bf16; the rest as fm_cuda_layernorm_forward */
void fm_cuda_layernorm_forward_bf16(fm_backend *be, float *out, float *mean, float *rstd,
                                    const float *inp, const float *weight, const float *bias, int N,
                                    int C)
{
    ln_forward(be, (fm_cuda_bf16 *)out, mean, rstd, inp, weight, bias, N, C,
               "layernorm_forward (bf16)");
}

void fm_cuda_layernorm_backward(fm_backend *be, float *dinp, float *dweight, float *dbias,
                                const float *dout, const float *inp, const float *weight,
                                const float *mean, const float *rstd, int N, int C)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    if (N <= 0 || C <= 0) return;
    const unsigned blocks = (unsigned)((N + LN_ROWS_PER_BLOCK - 1) / LN_ROWS_PER_BLOCK);
    ln_bwd_dinp_k<<<blocks, 32 * LN_ROWS_PER_BLOCK, 0, cx->stream>>>(dinp, dout, inp, weight, mean,
                                                                     rstd, N, C);
    fm_cuda_check_launch(cx, "layernorm_backward (dinp)");
    const int cb = (C + 4 * LN_PX - 1) / (4 * LN_PX);
    const int RB = fm_cuda_row_blocks(cx, N, cb);
    float *part = (float *)fm_cuda_scratch(cx, 2 * (size_t)RB * (size_t)C * sizeof(float),
                                           "layernorm_backward (dweight, dbias)");
    if (!part) return;
    ln_bwd_params_part_k<<<dim3((unsigned)cb, (unsigned)RB), dim3(LN_PX, LN_PY), 0, cx->stream>>>(
        part, dout, inp, mean, rstd, N, C);
    fm_cuda_check_launch(cx, "layernorm_backward (dweight, dbias partials)");
    fm_cuda_colreduce_finish(cx, dweight, dbias, part, RB, C, "layernorm_backward (dweight, dbias)");
}

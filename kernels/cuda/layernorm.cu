/* layernorm.cu — LayerNorm over the last dimension (eps 1e-5, biased variance), CUDA, fp32.
 *
 * Forward and the dinp part of backward: one warp per row, lanes striding over C, butterfly sums
 * (two passes for the variance, as the CPU kernel: mean first, then the mean of (x - mean)^2).
 * dweight/dbias: a column kernel, one block per 32 channels, 16 row-strided partial sums per channel
 * combined in a fixed order; no atomics. */
#include "cuda_internal.cuh"

#define LN_EPS 1e-5f
#define LN_ROWS_PER_BLOCK 8 /* warps per block in the row kernels */
#define LN_COL_Y 16         /* row partitions per channel in the column kernel */

__global__ void ln_fwd_k(float *out, float *mean, float *rstd, const float *inp,
                         const float *weight, const float *bias, int N, int C)
{
    const int row = blockIdx.x * LN_ROWS_PER_BLOCK + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= N) return; /* whole warps leave together */
    const float *x = inp + (size_t)row * (size_t)C;
    float *o = out + (size_t)row * (size_t)C;
    float s = 0.0f;
    for (int c = lane; c < C; c += 32) s += x[c];
    const float m = fm_warp_sum(s) / (float)C;
    float v = 0.0f;
    for (int c = lane; c < C; c += 32) {
        const float d = x[c] - m;
        v += d * d;
    }
    const float r = 1.0f / sqrtf(fm_warp_sum(v) / (float)C + LN_EPS);
    for (int c = lane; c < C; c += 32) o[c] = (x[c] - m) * r * weight[c] + bias[c];
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

/* dweight[c] += sum_n dout * xh, dbias[c] += sum_n dout; block (32, LN_COL_Y), grid ceil(C/32) */
__global__ void ln_bwd_params_k(float *dweight, float *dbias, const float *dout, const float *inp,
                                const float *mean, const float *rstd, int N, int C)
{
    __shared__ float sw[LN_COL_Y][33];
    __shared__ float sb[LN_COL_Y][33];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int c = blockIdx.x * 32 + tx;
    float aw = 0.0f, ab = 0.0f;
    if (c < C) {
        for (int n = ty; n < N; n += LN_COL_Y) {
            const size_t i = (size_t)n * (size_t)C + (size_t)c;
            const float d = dout[i];
            aw += d * (inp[i] - mean[n]) * rstd[n];
            ab += d;
        }
    }
    sw[ty][tx] = aw;
    sb[ty][tx] = ab;
    __syncthreads();
    if (ty == 0 && c < C) {
        float w = 0.0f, b = 0.0f;
        for (int y = 0; y < LN_COL_Y; y++) {
            w += sw[y][tx];
            b += sb[y][tx];
        }
        dweight[c] += w;
        dbias[c] += b;
    }
}

void fm_cuda_layernorm_forward(fm_backend *be, float *out, float *mean, float *rstd,
                               const float *inp, const float *weight, const float *bias, int N,
                               int C)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    if (N <= 0 || C <= 0) return;
    const unsigned blocks = (unsigned)((N + LN_ROWS_PER_BLOCK - 1) / LN_ROWS_PER_BLOCK);
    ln_fwd_k<<<blocks, 32 * LN_ROWS_PER_BLOCK, 0, cx->stream>>>(out, mean, rstd, inp, weight, bias,
                                                                N, C);
    fm_cuda_check_launch(cx, "layernorm_forward");
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
    ln_bwd_params_k<<<(unsigned)((C + 31) / 32), dim3(32, LN_COL_Y), 0, cx->stream>>>(
        dweight, dbias, dout, inp, mean, rstd, N, C);
    fm_cuda_check_launch(cx, "layernorm_backward (dweight, dbias)");
}

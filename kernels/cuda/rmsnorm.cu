/* rmsnorm.cu — RMSNorm over the last dimension (Llama's LlamaRMSNorm), CUDA, fp32.
 *
 * Forward and the dinp part of backward: one warp per row, lanes striding over C, butterfly sums (as
 * layernorm.cu). dweight: a column kernel, one block per 32 channels, LN_COL_Y row-strided partial
 * sums per channel combined in a fixed order; no atomics. */
#include "cuda_internal.cuh"

#define RMS_ROWS_PER_BLOCK 8 /* warps per block in the row kernels */
#define RMS_COL_Y 16         /* row partitions per channel in the column kernel */

/* out (N,C) = weight * (inp * rstd), rstd (N) = 1/sqrt(mean(inp^2) + eps) */
__global__ void rms_fwd_k(float *out, float *rstd, const float *inp, const float *weight, int N,
                          int C, float eps)
{
    const int row = blockIdx.x * RMS_ROWS_PER_BLOCK + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= N) return; /* whole warps leave together */
    const float *x = inp + (size_t)row * (size_t)C;
    float *o = out + (size_t)row * (size_t)C;
    float ss = 0.0f;
    for (int c = lane; c < C; c += 32) ss += x[c] * x[c];
    const float r = 1.0f / sqrtf(fm_warp_sum(ss) / (float)C + eps);
    for (int c = lane; c < C; c += 32) o[c] = weight[c] * (x[c] * r);
    if (lane == 0) rstd[row] = r;
}

/* dinp (N,C) += rstd * (g - xh * mean_c(g * xh)), g = dout * weight, xh = inp * rstd */
__global__ void rms_bwd_dinp_k(float *dinp, const float *dout, const float *inp,
                               const float *weight, const float *rstd, int N, int C)
{
    const int row = blockIdx.x * RMS_ROWS_PER_BLOCK + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= N) return;
    const float *x = inp + (size_t)row * (size_t)C;
    const float *d = dout + (size_t)row * (size_t)C;
    float *di = dinp + (size_t)row * (size_t)C;
    const float r = rstd[row];
    float sgx = 0.0f;
    for (int c = lane; c < C; c += 32) sgx += d[c] * weight[c] * (x[c] * r);
    const float mgx = fm_warp_sum(sgx) / (float)C;
    for (int c = lane; c < C; c += 32) di[c] += r * (d[c] * weight[c] - (x[c] * r) * mgx);
}

/* dweight[c] += sum_n dout * xh; block (32, RMS_COL_Y), grid ceil(C/32) */
__global__ void rms_bwd_w_k(float *dweight, const float *dout, const float *inp, const float *rstd,
                            int N, int C)
{
    __shared__ float sw[RMS_COL_Y][33];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int c = blockIdx.x * 32 + tx;
    float aw = 0.0f;
    if (c < C)
        for (int n = ty; n < N; n += RMS_COL_Y) {
            const size_t i = (size_t)n * (size_t)C + (size_t)c;
            aw += dout[i] * (inp[i] * rstd[n]);
        }
    sw[ty][tx] = aw;
    __syncthreads();
    if (ty == 0 && c < C) {
        float w = 0.0f;
        for (int y = 0; y < RMS_COL_Y; y++) w += sw[y][tx];
        dweight[c] += w;
    }
}

void fm_cuda_rmsnorm_forward(fm_backend *be, float *out, float *rstd, const float *inp,
                             const float *weight, int N, int C, float eps)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    if (N <= 0 || C <= 0) return;
    const unsigned blocks = (unsigned)((N + RMS_ROWS_PER_BLOCK - 1) / RMS_ROWS_PER_BLOCK);
    rms_fwd_k<<<blocks, 32 * RMS_ROWS_PER_BLOCK, 0, cx->stream>>>(out, rstd, inp, weight, N, C, eps);
    fm_cuda_check_launch(cx, "rmsnorm_forward");
}

void fm_cuda_rmsnorm_backward(fm_backend *be, float *dinp, float *dweight, const float *dout,
                              const float *inp, const float *weight, const float *rstd, int N,
                              int C)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    if (N <= 0 || C <= 0) return;
    const unsigned blocks = (unsigned)((N + RMS_ROWS_PER_BLOCK - 1) / RMS_ROWS_PER_BLOCK);
    rms_bwd_dinp_k<<<blocks, 32 * RMS_ROWS_PER_BLOCK, 0, cx->stream>>>(dinp, dout, inp, weight, rstd,
                                                                       N, C);
    fm_cuda_check_launch(cx, "rmsnorm_backward (dinp)");
    rms_bwd_w_k<<<(unsigned)((C + 31) / 32), dim3(32, RMS_COL_Y), 0, cx->stream>>>(dweight, dout,
                                                                                   inp, rstd, N, C);
    fm_cuda_check_launch(cx, "rmsnorm_backward (dweight)");
}

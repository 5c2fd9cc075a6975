/* rmsnorm.cu — RMSNorm over the last dimension (Llama's LlamaRMSNorm), CUDA; forward in both tables
 * (out fp32, or bf16 rounded once: kernels.h "Precision"), backward shared.
 *
 * Forward and the dinp part of backward: one warp per row, lanes striding over C, butterfly sums (as
 * layernorm.cu). dweight: over the whole GPU in two passes, as layernorm.cu (per-row-block partials
 * into the scratch, then a fixed-order sum per channel); no atomics. */
#include "cuda_internal.cuh"

#define RMS_ROWS_PER_BLOCK 8 /* warps per block in the row kernels */
#define RMS_PX 32 /* dweight kernel: column groups of 4 per block (128 columns) */
#define RMS_PY 8  /* row lanes per block */

/* out (N,C) = weight * (inp * rstd) as OutT (float or bf16 bits), rstd (N) = 1/sqrt(mean(inp^2) + eps) */
template <typename OutT>
__global__ void rms_fwd_k(OutT *out, float *rstd, const float *inp, const float *weight, int N, int C,
                          float eps)
{
    const int row = blockIdx.x * RMS_ROWS_PER_BLOCK + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= N) return; /* whole warps leave together */
    const float *x = inp + (size_t)row * (size_t)C;
    OutT *o = out + (size_t)row * (size_t)C;
    float ss = 0.0f;
    for (int c = lane; c < C; c += 32) ss += x[c] * x[c];
    const float r = 1.0f / sqrtf(fm_warp_sum(ss) / (float)C + eps);
    for (int c = lane; c < C; c += 32) fm_cuda_store(o + c, weight[c] * (x[c] * r));
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

/* First pass of dweight: part (RB, C) = per-row-block sums of dout * xh; block (RMS_PX, RMS_PY),
 * grid (ceil(C/128), RB); each thread owns 4 consecutive channels. Fixed order throughout. */
__global__ void rms_bwd_w_part_k(float *part, const float *dout, const float *inp, const float *rstd,
                                 int N, int C)
{
    __shared__ float sw[RMS_PY][4 * RMS_PX + 1];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int c0 = blockIdx.x * 4 * RMS_PX + 4 * tx;
    const int per = (N + (int)gridDim.y - 1) / (int)gridDim.y;
    const int r0 = (int)blockIdx.y * per, r1 = min(N, r0 + per);
    float aw[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int n = r0 + ty; n < r1; n += RMS_PY) {
        const float r = rstd[n];
        for (int j = 0; j < 4; j++) {
            const int c = c0 + j;
            if (c < C) {
                const size_t i = (size_t)n * (size_t)C + (size_t)c;
                aw[j] += dout[i] * (inp[i] * r);
            }
        }
    }
    for (int j = 0; j < 4; j++) sw[ty][4 * tx + j] = aw[j];
    __syncthreads();
    const int t = ty * RMS_PX + tx, c = blockIdx.x * 4 * RMS_PX + t;
    if (t < 4 * RMS_PX && c < C) {
        float w = 0.0f;
        for (int y = 0; y < RMS_PY; y++) w += sw[y][t];
        part[(size_t)blockIdx.y * (size_t)C + (size_t)c] = w;
    }
}

template <typename OutT>
static void rms_forward(fm_backend *be, OutT *out, float *rstd, const float *inp, const float *weight,
                        int N, int C, float eps, const char *what)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    if (N <= 0 || C <= 0) return;
    const unsigned blocks = (unsigned)((N + RMS_ROWS_PER_BLOCK - 1) / RMS_ROWS_PER_BLOCK);
    rms_fwd_k<OutT><<<blocks, 32 * RMS_ROWS_PER_BLOCK, 0, cx->stream>>>(out, rstd, inp, weight, N, C,
                                                                        eps);
    fm_cuda_check_launch(cx, what);
}

void fm_cuda_rmsnorm_forward(fm_backend *be, float *out, float *rstd, const float *inp,
                             const float *weight, int N, int C, float eps)
{
    rms_forward(be, out, rstd, inp, weight, N, C, eps, "rmsnorm_forward");
}

/* bf16 table: out (N,C) bf16; the rest as fm_cuda_rmsnorm_forward */
void fm_cuda_rmsnorm_forward_bf16(fm_backend *be, float *out, float *rstd, const float *inp,
                                  const float *weight, int N, int C, float eps)
{
    rms_forward(be, (fm_cuda_bf16 *)out, rstd, inp, weight, N, C, eps, "rmsnorm_forward (bf16)");
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
    const int cb = (C + 4 * RMS_PX - 1) / (4 * RMS_PX);
    const int RB = fm_cuda_row_blocks(cx, N, cb);
    float *part = (float *)fm_cuda_scratch(cx, (size_t)RB * (size_t)C * sizeof(float),
                                           "rmsnorm_backward (dweight)");
    if (!part) return;
    rms_bwd_w_part_k<<<dim3((unsigned)cb, (unsigned)RB), dim3(RMS_PX, RMS_PY), 0, cx->stream>>>(
        part, dout, inp, rstd, N, C);
    fm_cuda_check_launch(cx, "rmsnorm_backward (dweight partials)");
    fm_cuda_colreduce_finish(cx, dweight, NULL, part, RB, C, "rmsnorm_backward (dweight)");
}

/* encoder.cu — token embeddings, forward and backward (CUDA, fp32): token + position (GPT-2:
 * encoder_*) and token only (Llama: embedding_*).
 *
 * Backward without atomics: dwpe has one thread per (t, c) element summing over b in order; dwte has
 * one thread per channel c walking all rows (b, t) in order, so repeated tokens are added in the
 * same order as the CPU kernel (bit-identical to it). The dwte pass has only C threads: it is
 * latency-bound (docs/performance.md, "CUDA backend", lists it as a known slow kernel). */
#include "cuda_internal.cuh"

__global__ void enc_fwd_k(float *out, const int32_t *tokens, const float *wte, const float *wpe,
                          int T, int C, size_t total)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        const size_t r = i / (size_t)C;
        const size_t c = i % (size_t)C;
        const size_t t = r % (size_t)T;
        out[i] = wte[(size_t)tokens[r] * (size_t)C + c] + wpe[t * (size_t)C + c];
    }
}

/* dwpe (T,C) += sum over b of dout (B,T,C), b in order */
__global__ void enc_bwd_wpe_k(float *dwpe, const float *dout, int B, int T, int C)
{
    const size_t TC = (size_t)T * (size_t)C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < TC;
         i += (size_t)gridDim.x * blockDim.x) {
        float acc = dwpe[i];
        for (int b = 0; b < B; b++) acc += dout[(size_t)b * TC + i];
        dwpe[i] = acc;
    }
}

/* dwte (Vp,C) += dout rows scattered by token; one thread per channel, rows in order */
__global__ void enc_bwd_wte_k(float *dwte, const float *dout, const int32_t *tokens, int N, int C)
{
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    for (int r = 0; r < N; r++) {
        float *w = dwte + (size_t)tokens[r] * (size_t)C + c;
        *w += dout[(size_t)r * (size_t)C + c];
    }
}

void fm_cuda_encoder_forward(fm_backend *be, float *out, const int32_t *tokens, const float *wte,
                             const float *wpe, int B, int T, int C)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    const size_t total = (size_t)B * (size_t)T * (size_t)C;
    if (total == 0) return;
    enc_fwd_k<<<fm_cuda_grid(cx, total, 256), 256, 0, cx->stream>>>(out, tokens, wte, wpe, T, C,
                                                                   total);
    fm_cuda_check_launch(cx, "encoder_forward");
}

void fm_cuda_encoder_backward(fm_backend *be, float *dwte, float *dwpe, const float *dout,
                              const int32_t *tokens, int B, int T, int C)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    const size_t TC = (size_t)T * (size_t)C;
    if (TC == 0 || B == 0) return;
    enc_bwd_wpe_k<<<fm_cuda_grid(cx, TC, 256), 256, 0, cx->stream>>>(dwpe, dout, B, T, C);
    fm_cuda_check_launch(cx, "encoder_backward (wpe)");
    enc_bwd_wte_k<<<(unsigned)((C + 63) / 64), 64, 0, cx->stream>>>(dwte, dout, tokens, B * T, C);
    fm_cuda_check_launch(cx, "encoder_backward (wte)");
}

/* out (B,T,C) = wte (Vp,C)[tokens (B,T)]: the embedding without positions */
__global__ void emb_fwd_k(float *out, const int32_t *tokens, const float *wte, int C, size_t total)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        const size_t r = i / (size_t)C, c = i % (size_t)C;
        out[i] = wte[(size_t)tokens[r] * (size_t)C + c];
    }
}

void fm_cuda_embedding_forward(fm_backend *be, float *out, const int32_t *tokens, const float *wte,
                               int B, int T, int C)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    const size_t total = (size_t)B * (size_t)T * (size_t)C;
    if (total == 0) return;
    emb_fwd_k<<<fm_cuda_grid(cx, total, 256), 256, 0, cx->stream>>>(out, tokens, wte, C, total);
    fm_cuda_check_launch(cx, "embedding_forward");
}

/* dwte (Vp,C) += dout (B,T,C) rows scattered by token: the wte pass of encoder_backward (one thread
 * per channel, rows in order: bit-identical to the CPU kernel) */
void fm_cuda_embedding_backward(fm_backend *be, float *dwte, const float *dout,
                                const int32_t *tokens, int B, int T, int C)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    if ((size_t)B * (size_t)T * (size_t)C == 0) return;
    enc_bwd_wte_k<<<(unsigned)((C + 63) / 64), 64, 0, cx->stream>>>(dwte, dout, tokens, B * T, C);
    fm_cuda_check_launch(cx, "embedding_backward");
}

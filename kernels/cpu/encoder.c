/* encoder.c — token embeddings, forward and backward (CPU): token + position (GPT-2: encoder_*) and
 * token only (Llama: embedding_*). */
#include <omp.h>

#include "cpu_internal.h"
#include "cpu_kernels.h"

/* out (B,T,C) = wte (Vp,C)[tokens (B,T)] + wpe (>=T,C)[t]. Parallel over rows. */
void fm_cpu_encoder_forward(fm_backend *be, float *out, const int32_t *tokens, const float *wte,
                            const float *wpe, int B, int T, int C)
{
    const long rows = (long)B * T;
    int nt = fm_cpu_team(be->threads, (size_t)rows * (size_t)C, FM_CPU_ELEMWISE_SERIAL);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (long r = 0; r < rows; r++) {
        const float *we = wte + (size_t)tokens[r] * (size_t)C;
        const float *pe = wpe + (size_t)(r % T) * (size_t)C;
        float *o = out + (size_t)r * (size_t)C;
#pragma omp simd
        for (int c = 0; c < C; c++) o[c] = we[c] + pe[c];
    }
}

/* dwte (Vp,C) += dout rows scattered by token; dwpe (>=T,C) += dout summed over b; dout (B,T,C).
 * Each thread owns a slice of the C channels and visits all (b,t) in order, so every element of
 * dwte/dwpe is summed in the same order for any thread count (no atomics, no races on repeated
 * tokens). */
void fm_cpu_encoder_backward(fm_backend *be, float *dwte, float *dwpe, const float *dout,
                             const int32_t *tokens, int B, int T, int C)
{
    int nt = fm_cpu_team(be->threads, (size_t)B * (size_t)T * (size_t)C, FM_CPU_ELEMWISE_SERIAL);
    if (C < 16 * nt) nt = 1;
#pragma omp parallel num_threads(nt)
    {
        size_t lo, hi;
        fm_cpu_split((size_t)C, omp_get_num_threads(), omp_get_thread_num(), 16, &lo, &hi);
        const int c0 = (int)lo, c1 = (int)hi;
        for (int b = 0; b < B; b++) {
            for (int t = 0; t < T; t++) {
                const float *d = dout + ((size_t)b * T + t) * (size_t)C;
                float *we = dwte + (size_t)tokens[(size_t)b * T + t] * (size_t)C;
                float *pe = dwpe + (size_t)t * (size_t)C;
#pragma omp simd
                for (int c = c0; c < c1; c++) {
                    we[c] += d[c];
                    pe[c] += d[c];
                }
            }
        }
    }
}

/* out (B,T,C) = wte (Vp,C)[tokens (B,T)]: the embedding without positions. Parallel over rows. */
void fm_cpu_embedding_forward(fm_backend *be, float *out, const int32_t *tokens, const float *wte,
                              int B, int T, int C)
{
    const long rows = (long)B * T;
    int nt = fm_cpu_team(be->threads, (size_t)rows * (size_t)C, FM_CPU_ELEMWISE_SERIAL);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (long r = 0; r < rows; r++) {
        const float *we = wte + (size_t)tokens[r] * (size_t)C;
        float *o = out + (size_t)r * (size_t)C;
#pragma omp simd
        for (int c = 0; c < C; c++) o[c] = we[c];
    }
}

/* dwte (Vp,C) += dout (B,T,C) rows scattered by token. Channel slices per thread, rows in order (as
 * encoder_backward): deterministic for any thread count. */
void fm_cpu_embedding_backward(fm_backend *be, float *dwte, const float *dout,
                               const int32_t *tokens, int B, int T, int C)
{
    const long rows = (long)B * T;
    int nt = fm_cpu_team(be->threads, (size_t)rows * (size_t)C, FM_CPU_ELEMWISE_SERIAL);
    if (C < 16 * nt) nt = 1;
#pragma omp parallel num_threads(nt)
    {
        size_t lo, hi;
        fm_cpu_split((size_t)C, omp_get_num_threads(), omp_get_thread_num(), 16, &lo, &hi);
        const int c0 = (int)lo, c1 = (int)hi;
        for (long r = 0; r < rows; r++) {
            const float *d = dout + (size_t)r * (size_t)C;
            float *we = dwte + (size_t)tokens[r] * (size_t)C;
#pragma omp simd
            for (int c = c0; c < c1; c++) we[c] += d[c];
        }
    }
}

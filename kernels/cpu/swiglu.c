/* swiglu.c — SwiGLU, Llama's MLP nonlinearity: silu(gate) * up, forward and backward (CPU; the forward's output fp32 or, bf16 table, bf16).
 * The input row is [gate (F) | up (F)], the output of one fused (2F, C) matmul. sigmoid(g) =
 * 1 / (1 + exp(-g)) with the inlined fm_cpu_expf, so the loops vectorise. Element-wise: rows in
 * parallel, identical for any thread count.
 *   forward:  out = g s u, s = sigmoid(g)
 *   backward: dg = dout u s (1 + g (1 - s)),  du = dout g s */
#include <omp.h>

#include "cpu_internal.h"
#include "cpu_kernels.h"

/* out (N,F) as fp32 (o32) or bf16 (o16, the other NULL); inp (N,2F) = [gate | up] */
static void swiglu_forward(fm_backend *be, float *o32, fm_bf16 *o16, const float *inp, int N, int F)
{
    int nt = fm_cpu_team(be->threads, (size_t)N * (size_t)F, FM_CPU_ELEMWISE_SERIAL);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int n = 0; n < N; n++) {
        const float *g = inp + (size_t)n * 2 * (size_t)F, *u = g + F;
        if (o16) {
            fm_bf16 *o = o16 + (size_t)n * (size_t)F;
#pragma omp simd
            for (int f = 0; f < F; f++) {
                const float x = g[f];
                o[f] = fm_cpu_round_bf16(x / (1.0f + fm_cpu_expf(-x)) * u[f]);
            }
        } else {
            float *o = o32 + (size_t)n * (size_t)F;
#pragma omp simd
            for (int f = 0; f < F; f++) {
                const float x = g[f];
                o[f] = x / (1.0f + fm_cpu_expf(-x)) * u[f];
            }
        }
    }
}

/* out (N,F); inp (N,2F) = [gate | up] */
void fm_cpu_swiglu_forward(fm_backend *be, float *out, const float *inp, int N, int F)
{
    swiglu_forward(be, out, NULL, inp, N, F);
}

/* bf16 table: out (N,F) bf16, computed in fp32 and rounded once */
void fm_cpu_swiglu_forward_bf16(fm_backend *be, float *out, const float *inp, int N, int F)
{
    swiglu_forward(be, NULL, (fm_bf16 *)out, inp, N, F);
}

/* dinp (N,2F) = [dgate | dup]; inp (N,2F), dout (N,F); dinp may alias inp (element f of a row reads
 * gate f and up f before writing them, and touches nothing else) */
void fm_cpu_swiglu_backward(fm_backend *be, float *dinp, const float *inp, const float *dout, int N,
                            int F)
{
    int nt = fm_cpu_team(be->threads, (size_t)N * (size_t)F, FM_CPU_ELEMWISE_SERIAL);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int n = 0; n < N; n++) {
        const float *g = inp + (size_t)n * 2 * (size_t)F, *u = g + F;
        const float *d = dout + (size_t)n * (size_t)F;
        float *dg = dinp + (size_t)n * 2 * (size_t)F, *du = dg + F;
#pragma omp simd
        for (int f = 0; f < F; f++) {
            const float x = g[f], y = u[f], s = 1.0f / (1.0f + fm_cpu_expf(-x));
            dg[f] = d[f] * y * s * (1.0f + x * (1.0f - s));
            du[f] = d[f] * x * s;
        }
    }
}

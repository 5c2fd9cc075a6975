/* gelu.c — GELU with the tanh approximation (GPT-2's "gelu_new", torch approximate='tanh'), CPU.
 *
 * With u = sqrt(2/pi) (x + 0.044715 x^3) we use 0.5 (1 + tanh u) = sigmoid(2u) = 1 / (1 + exp(-2u)),
 * which avoids the cancellation of 1 + tanh(u) for negative x and needs one exp per element (the
 * inlined fm_cpu_expf, so the loop vectorises). Derivative: sig + 2 x sig (1 - sig) du/dx,
 * du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2). */
#include <omp.h>

#include "cpu_internal.h"
#include "cpu_kernels.h"

#define GELU_S 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_K 0.044715f

static inline float gelu(float x)
{
    float u = GELU_S * (x + GELU_K * x * x * x);
    return x / (1.0f + fm_cpu_expf(-2.0f * u));
}

/* out (n) = gelu(inp (n)); out may alias inp */
void fm_cpu_gelu_forward(fm_backend *be, float *out, const float *inp, size_t n)
{
    int nt = fm_cpu_team(be->threads, n, FM_CPU_ELEMWISE_SERIAL);
#pragma omp parallel for simd num_threads(nt) schedule(static)
    for (size_t i = 0; i < n; i++) out[i] = gelu(inp[i]);
}

/* bf16 table: out (n) bf16 = gelu(inp (n) fp32), computed in fp32 and rounded once */
void fm_cpu_gelu_forward_bf16(fm_backend *be, float *out, const float *inp, size_t n)
{
    fm_bf16 *o = (fm_bf16 *)out;
    int nt = fm_cpu_team(be->threads, n, FM_CPU_ELEMWISE_SERIAL);
#pragma omp parallel for simd num_threads(nt) schedule(static)
    for (size_t i = 0; i < n; i++) o[i] = fm_cpu_round_bf16(gelu(inp[i]));
}

/* dinp (n) = gelu'(inp (n)) * dout (n); dinp may alias dout */
void fm_cpu_gelu_backward(fm_backend *be, float *dinp, const float *inp, const float *dout,
                          size_t n)
{
    int nt = fm_cpu_team(be->threads, n, FM_CPU_ELEMWISE_SERIAL);
#pragma omp parallel for simd num_threads(nt) schedule(static)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        float u = GELU_S * (x + GELU_K * x * x * x);
        float sig = 1.0f / (1.0f + fm_cpu_expf(-2.0f * u));
        float du = GELU_S * (1.0f + 3.0f * GELU_K * x * x);
        dinp[i] = (sig + 2.0f * x * sig * (1.0f - sig) * du) * dout[i];
    }
}

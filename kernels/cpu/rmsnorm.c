/* rmsnorm.c — RMSNorm over the last dimension (Llama's LlamaRMSNorm: x / sqrt(mean(x^2) + eps) *
 * weight, no mean subtraction, no bias), CPU; statistics fp32, the output fp32 or (bf16 table) bf16.
 * Forward: one pass for the mean square, one for the output. Backward: rows in parallel for dinp;
 * dweight in a second pass over channel slices so that each sums its rows in order (deterministic
 * for any thread count), as layernorm.c. */
#include <math.h>
#include <omp.h>

#include "cpu_internal.h"
#include "cpu_kernels.h"

/* out (N,C) as fp32 (o32) or bf16 (o16, the other NULL), rstd (N); inp (N,C), weight (C) */
static void rms_forward(fm_backend *be, float *o32, fm_bf16 *o16, float *rstd, const float *inp,
                        const float *weight, int N, int C, float eps)
{
    int nt = fm_cpu_team(be->threads, (size_t)N * (size_t)C, FM_CPU_ELEMWISE_SERIAL);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * (size_t)C;
        float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
        for (int c = 0; c < C; c++) ss += x[c] * x[c];
        const float r = 1.0f / sqrtf(ss / (float)C + eps);
        if (o16) {
            fm_bf16 *o = o16 + (size_t)n * (size_t)C;
#pragma omp simd
            for (int c = 0; c < C; c++) o[c] = fm_cpu_round_bf16(weight[c] * (x[c] * r));
        } else {
            float *o = o32 + (size_t)n * (size_t)C;
#pragma omp simd
            for (int c = 0; c < C; c++) o[c] = weight[c] * (x[c] * r);
        }
        rstd[n] = r;
    }
}

/* out (N,C), rstd (N); inp (N,C), weight (C) */
void fm_cpu_rmsnorm_forward(fm_backend *be, float *out, float *rstd, const float *inp,
                            const float *weight, int N, int C, float eps)
{
    rms_forward(be, out, NULL, rstd, inp, weight, N, C, eps);
}

/* bf16 table: out (N,C) bf16; the rest as fm_cpu_rmsnorm_forward */
void fm_cpu_rmsnorm_forward_bf16(fm_backend *be, float *out, float *rstd, const float *inp,
                                 const float *weight, int N, int C, float eps)
{
    rms_forward(be, NULL, (fm_bf16 *)out, rstd, inp, weight, N, C, eps);
}

/* dinp (N,C) accumulates; dweight (C) accumulates; dout (N,C), inp (N,C), weight (C), rstd (N).
 * With xh = x rstd and g = dout * weight:  dinp += rstd * (g - xh * mean_c(g * xh)) */
void fm_cpu_rmsnorm_backward(fm_backend *be, float *dinp, float *dweight, const float *dout,
                             const float *inp, const float *weight, const float *rstd, int N, int C)
{
    int nt = fm_cpu_team(be->threads, (size_t)N * (size_t)C, FM_CPU_ELEMWISE_SERIAL);
#pragma omp parallel num_threads(nt)
    {
#pragma omp for schedule(static)
        for (int n = 0; n < N; n++) {
            const float *x = inp + (size_t)n * (size_t)C;
            const float *d = dout + (size_t)n * (size_t)C;
            float *di = dinp + (size_t)n * (size_t)C;
            const float r = rstd[n];
            float sgx = 0.0f;
#pragma omp simd reduction(+ : sgx)
            for (int c = 0; c < C; c++) sgx += d[c] * weight[c] * (x[c] * r);
            const float mgx = sgx / (float)C;
#pragma omp simd
            for (int c = 0; c < C; c++) di[c] += r * (d[c] * weight[c] - (x[c] * r) * mgx);
        }
        /* implicit barrier; now the weight gradient over channel slices */
        size_t lo, hi;
        fm_cpu_split((size_t)C, omp_get_num_threads(), omp_get_thread_num(), 16, &lo, &hi);
        const int c0 = (int)lo, c1 = (int)hi;
        for (int n = 0; n < N; n++) {
            const float *x = inp + (size_t)n * (size_t)C;
            const float *d = dout + (size_t)n * (size_t)C;
            const float r = rstd[n];
#pragma omp simd
            for (int c = c0; c < c1; c++) dweight[c] += d[c] * (x[c] * r);
        }
    }
}

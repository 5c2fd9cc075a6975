/* layernorm.c — LayerNorm over the last dimension (eps 1e-5, biased variance, as torch), CPU.
 * Forward: per row, two passes (mean, then variance of x - mean: no cancellation) and the output pass
 * (stored in fp32, or rounded to bf16 by the bf16 table's kernel).
 * Backward: rows in parallel for dinp; dweight/dbias in a second pass over channel slices so that
 * each sums its rows in order (deterministic for any thread count). */
#include <math.h>
#include <omp.h>

#include "cpu_internal.h"
#include "cpu_kernels.h"

#define LN_EPS 1e-5f

/* out (N,C) as fp32 (o32) or bf16 (o16, the other NULL), mean (N), rstd (N); inp (N,C), weight (C),
 * bias (C). The statistics and the normalisation are fp32 in both; bf16 only rounds the store. */
static void ln_forward(fm_backend *be, float *o32, fm_bf16 *o16, float *mean, float *rstd,
                       const float *inp, const float *weight, const float *bias, int N, int C)
{
    int nt = fm_cpu_team(be->threads, (size_t)N * (size_t)C, FM_CPU_ELEMWISE_SERIAL);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * (size_t)C;
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int c = 0; c < C; c++) s += x[c];
        float m = s / (float)C;
        float v = 0.0f;
#pragma omp simd reduction(+ : v)
        for (int c = 0; c < C; c++) {
            float d = x[c] - m;
            v += d * d;
        }
        float r = 1.0f / sqrtf(v / (float)C + LN_EPS);
        if (o16) {
            fm_bf16 *o = o16 + (size_t)n * (size_t)C;
#pragma omp simd
            for (int c = 0; c < C; c++) o[c] = fm_cpu_round_bf16((x[c] - m) * r * weight[c] + bias[c]);
        } else {
            float *o = o32 + (size_t)n * (size_t)C;
#pragma omp simd
            for (int c = 0; c < C; c++) o[c] = (x[c] - m) * r * weight[c] + bias[c];
        }
        mean[n] = m;
        rstd[n] = r;
    }
}

/* out (N,C), mean (N), rstd (N); inp (N,C), weight (C), bias (C) */
void fm_cpu_layernorm_forward(fm_backend *be, float *out, float *mean, float *rstd,
                              const float *inp, const float *weight, const float *bias, int N,
                              int C)
{
    ln_forward(be, out, NULL, mean, rstd, inp, weight, bias, N, C);
}

/* bf16 table: out (N,C) bf16; the rest as fm_cpu_layernorm_forward */
void fm_cpu_layernorm_forward_bf16(fm_backend *be, float *out, float *mean, float *rstd,
                                   const float *inp, const float *weight, const float *bias, int N,
                                   int C)
{
    ln_forward(be, NULL, (fm_bf16 *)out, mean, rstd, inp, weight, bias, N, C);
}

/* dinp (N,C) accumulates; dweight (C), dbias (C) accumulate; dout (N,C), inp (N,C), weight (C),
 * mean (N), rstd (N).  With xh = (x - mean) rstd and g = dout * weight:
 *   dinp += rstd * (g - mean_c(g) - xh * mean_c(g * xh)) */
void fm_cpu_layernorm_backward(fm_backend *be, float *dinp, float *dweight, float *dbias,
                               const float *dout, const float *inp, const float *weight,
                               const float *mean, const float *rstd, int N, int C)
{
    int nt = fm_cpu_team(be->threads, (size_t)N * (size_t)C, FM_CPU_ELEMWISE_SERIAL);
#pragma omp parallel num_threads(nt)
    {
#pragma omp for schedule(static)
        for (int n = 0; n < N; n++) {
            const float *x = inp + (size_t)n * (size_t)C;
            const float *d = dout + (size_t)n * (size_t)C;
            float *di = dinp + (size_t)n * (size_t)C;
            const float m = mean[n], r = rstd[n];
            float sg = 0.0f, sgx = 0.0f;
#pragma omp simd reduction(+ : sg, sgx)
            for (int c = 0; c < C; c++) {
                float g = d[c] * weight[c];
                sg += g;
                sgx += g * (x[c] - m) * r;
            }
            const float mg = sg / (float)C, mgx = sgx / (float)C;
#pragma omp simd
            for (int c = 0; c < C; c++) {
                float g = d[c] * weight[c];
                float xh = (x[c] - m) * r;
                di[c] += r * (g - mg - xh * mgx);
            }
        }
        /* implicit barrier; now the parameter gradients over channel slices */
        size_t lo, hi;
        fm_cpu_split((size_t)C, omp_get_num_threads(), omp_get_thread_num(), 16, &lo, &hi);
        const int c0 = (int)lo, c1 = (int)hi;
        for (int n = 0; n < N; n++) {
            const float *x = inp + (size_t)n * (size_t)C;
            const float *d = dout + (size_t)n * (size_t)C;
            const float m = mean[n], r = rstd[n];
#pragma omp simd
            for (int c = c0; c < c1; c++) {
                dweight[c] += d[c] * (x[c] - m) * r;
                dbias[c] += d[c];
            }
        }
    }
}

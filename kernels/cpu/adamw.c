/* adamw.c — the optimizer step fused with zeroing the gradient, and the gradient's sum of squares
 * (CPU). The AdamW pass is the largest non-GEMM memory stream of a training step: per
 * parameter it reads p, g, m, v and writes p, g (= 0), m, v: 32 bytes, and with a bf16 copy of the
 * parameters (bf16 precision) 2 more. */
#include <math.h>
#include <omp.h>

#include "cpu_internal.h"
#include "cpu_kernels.h"

/* params, grads, m, v: (n); params_bf16 (n) or NULL. Operation order as torch.optim.AdamW
 * (single-tensor path): decay first, m by lerp, denominator sqrt(v)/sqrt(bias_correction2) + eps.
 * grads := 0 afterwards; params_bf16 := the updated params rounded to bf16 (2 more bytes per
 * parameter in the same pass). */
void fm_cpu_adamw_update(fm_backend *be, float *params, void *params_bf16, float *grads, float *m,
                         float *v, size_t n, float lr, float beta1, float beta2, float eps,
                         float weight_decay, float grad_scale, int64_t t)
{
    const double bc1 = 1.0 - pow((double)beta1, (double)t);
    const double bc2 = 1.0 - pow((double)beta2, (double)t);
    const float step_size = (float)((double)lr / bc1);
    const float bc2_sqrt = (float)sqrt(bc2);
    const float decay = 1.0f - lr * weight_decay;
    const float omb1 = 1.0f - beta1, omb2 = 1.0f - beta2;
    fm_bf16 *pb = params_bf16;
    int nt = fm_cpu_team(be->threads, n, FM_CPU_ELEMWISE_SERIAL);
    if (pb) {
#pragma omp parallel for simd num_threads(nt) schedule(static)
        for (size_t i = 0; i < n; i++) {
            const float g = grads[i] * grad_scale;
            const float mi = m[i] + omb1 * (g - m[i]);
            const float vi = beta2 * v[i] + omb2 * g * g;
            const float denom = sqrtf(vi) / bc2_sqrt + eps;
            const float p = params[i] * decay - step_size * (mi / denom);
            params[i] = p;
            pb[i] = fm_cpu_round_bf16(p);
            m[i] = mi;
            v[i] = vi;
            grads[i] = 0.0f;
        }
        return;
    }
#pragma omp parallel for simd num_threads(nt) schedule(static)
    for (size_t i = 0; i < n; i++) {
        const float g = grads[i] * grad_scale;
        const float mi = m[i] + omb1 * (g - m[i]);
        const float vi = beta2 * v[i] + omb2 * g * g;
        const float denom = sqrtf(vi) / bc2_sqrt + eps;
        params[i] = params[i] * decay - step_size * (mi / denom);
        m[i] = mi;
        v[i] = vi;
        grads[i] = 0.0f;
    }
}

/* Sum of squares of one block of at most FM_CPU_SUMSQ_BLOCK elements, in 8 double lanes. */
static double sumsq_block(const float *x, size_t n)
{
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    const size_t n8 = n / 8;
    for (size_t j = 0; j < n8; j++) {
        const float *p = x + 8 * j;
#pragma omp simd
        for (int l = 0; l < 8; l++) acc[l] += (double)p[l] * (double)p[l];
    }
    for (size_t i = 8 * n8, l = 0; i < n; i++, l++) acc[l] += (double)x[i] * (double)x[i];
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/* *out = sum grads[i]^2 (n): blocks of FM_CPU_SUMSQ_BLOCK in parallel (the partition into blocks does
 * not depend on the thread count), block sums added in index order (computed in groups of 2048
 * blocks, one parallel region per group: 4 regions for 124 M parameters). */
void fm_cpu_sum_squares(fm_backend *be, double *out, const float *grads, size_t n)
{
    enum { GROUP = 2048 }; /* 2048 block sums (16 KiB) per parallel region */
    const size_t nblocks = (n + FM_CPU_SUMSQ_BLOCK - 1) / FM_CPU_SUMSQ_BLOCK;
    double total = 0.0;
    for (size_t g0 = 0; g0 < nblocks; g0 += GROUP) {
        const size_t g1 = g0 + GROUP < nblocks ? g0 + GROUP : nblocks;
        double part[GROUP];
        int nt = fm_cpu_team(be->threads, (g1 - g0) * FM_CPU_SUMSQ_BLOCK, FM_CPU_ELEMWISE_SERIAL);
#pragma omp parallel for num_threads(nt) schedule(static)
        for (size_t bl = g0; bl < g1; bl++) {
            const size_t lo = bl * FM_CPU_SUMSQ_BLOCK;
            const size_t hi = lo + FM_CPU_SUMSQ_BLOCK < n ? lo + FM_CPU_SUMSQ_BLOCK : n;
            part[bl - g0] = sumsq_block(grads + lo, hi - lo);
        }
        for (size_t bl = g0; bl < g1; bl++) total += part[bl - g0];
    }
    *out = total;
}

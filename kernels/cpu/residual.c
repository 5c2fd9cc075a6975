/* residual.c — residual additions, forward and backward (CPU). Pure streaming kernels: forward moves
 * 12 bytes per element, backward 16. */
#include <omp.h>

#include "cpu_internal.h"
#include "cpu_kernels.h"

/* out (n) = a (n) + b (n); out may alias a or b */
void fm_cpu_residual_forward(const fm_cpu_ctx *cx, float *out, const float *a, const float *b,
                             size_t n)
{
    int nt = fm_cpu_team(cx->threads, n, FM_CPU_ELEMWISE_SERIAL);
#pragma omp parallel for simd num_threads(nt) schedule(static)
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

/* da (n) += dout (n); db (n) += dout (n) */
void fm_cpu_residual_backward(const fm_cpu_ctx *cx, float *da, float *db, const float *dout,
                              size_t n)
{
    int nt = fm_cpu_team(cx->threads, n, FM_CPU_ELEMWISE_SERIAL);
#pragma omp parallel for simd num_threads(nt) schedule(static)
    for (size_t i = 0; i < n; i++) {
        da[i] += dout[i];
        db[i] += dout[i];
    }
}

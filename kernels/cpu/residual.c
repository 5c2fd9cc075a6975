/* residual.c — the residual addition (CPU): a pure streaming kernel, 12 bytes per element. Its backward
 * is the identity (the model reads the residual stream's gradient directly), so there is no kernel. */
#include <omp.h>

#include "cpu_internal.h"
#include "cpu_kernels.h"

/* out (n) = a (n) + b (n); out may alias a or b */
void fm_cpu_residual_forward(fm_backend *be, float *out, const float *a, const float *b, size_t n)
{
    int nt = fm_cpu_team(be->threads, n, FM_CPU_ELEMWISE_SERIAL);
#pragma omp parallel for simd num_threads(nt) schedule(static)
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

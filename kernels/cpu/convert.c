/* convert.c — the to_bf16 op (kernels.h, "Precision"): fp32 -> bf16, round to nearest, ties to even,
 * NaN kept (fm_cpu_round_bf16 of cpu_internal.h, the one rounding every CPU kernel uses). Element-wise,
 * memory-bound (6 bytes per element), identical for any thread count. */
#include <omp.h>

#include "cpu_internal.h"
#include "cpu_kernels.h"

/* dst (n) bf16 = to_bf16(src (n)) */
void fm_cpu_to_bf16(fm_backend *be, void *dst, const float *src, size_t n)
{
    fm_bf16 *d = dst;
    const int nt = fm_cpu_team(be->threads, n, FM_CPU_ELEMWISE_SERIAL);
#pragma omp parallel for simd num_threads(nt) schedule(static)
    for (size_t i = 0; i < n; i++) d[i] = fm_cpu_round_bf16(src[i]);
}

/* softmax_xent.c — fused softmax + cross-entropy over the (padded) vocabulary, CPU.
 *
 * Forward reads each logits row twice (max, then sum of exp; the row is 4*Vp bytes, e.g. 197 KiB for
 * GPT-2, so the second read hits L2) and writes two floats per row; no probabilities are stored.
 * Backward turns the logits into dlogits in place, one read and one write per element. Columns >= V
 * (padding) get no probability mass: the forward ignores them and the backward writes 0 there.
 * The fused op (training) runs the forward's and then the backward's row function on each row while
 * it is in cache: the row functions are not inlined, so the three ops execute the same machine code
 * per row and the fused op's results are the same bits as forward + backward. */
#include <math.h>
#include <omp.h>

#include "cpu_internal.h"
#include "cpu_kernels.h"

/* lse and loss of one row x (V real columns) with target tg */
static __attribute__((noinline)) void xent_row_forward(const float *x, int V, int tg, float *loss,
                                                       float *lse)
{
    float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
    for (int c = 0; c < V; c++) mx = x[c] > mx ? x[c] : mx;
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int c = 0; c < V; c++) s += fm_cpu_expf(x[c] - mx);
    const float l = mx + logf(s);
    *lse = l;
    *loss = l - x[tg];
}

/* x (Vp) := dlogits of one row with log-sum-exp l and target tg */
static __attribute__((noinline)) void xent_row_backward(float *x, float l, int tg, float dloss,
                                                        int V, int Vp)
{
    const float xt = x[tg];
#pragma omp simd
    for (int c = 0; c < V; c++) x[c] = fm_cpu_expf(x[c] - l) * dloss;
    for (int c = V; c < Vp; c++) x[c] = 0.0f;
    x[tg] = (fm_cpu_expf(xt - l) - 1.0f) * dloss;
}

/* losses (N), lse (N); logits (N,Vp), targets (N) in [0,V) */
void fm_cpu_softmax_xent_forward(fm_backend *be, float *losses, float *lse, const float *logits,
                                 const int32_t *targets, int N, int V, int Vp)
{
    int nt = fm_cpu_team(be->threads, (size_t)N * (size_t)V, FM_CPU_ELEMWISE_SERIAL);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int n = 0; n < N; n++)
        xent_row_forward(logits + (size_t)n * (size_t)Vp, V, targets[n], &losses[n], &lse[n]);
}

/* logits (N,Vp) := dlogits in place; lse (N), targets (N) */
void fm_cpu_softmax_xent_backward(fm_backend *be, float *logits, const float *lse,
                                  const int32_t *targets, float dloss, int N, int V, int Vp)
{
    int nt = fm_cpu_team(be->threads, (size_t)N * (size_t)Vp, FM_CPU_ELEMWISE_SERIAL);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int n = 0; n < N; n++)
        xent_row_backward(logits + (size_t)n * (size_t)Vp, lse[n], targets[n], dloss, V, Vp);
}

/* losses (N), lse (N), logits (N,Vp) := dlogits in place; targets (N) */
void fm_cpu_softmax_xent_fused(fm_backend *be, float *losses, float *lse, float *logits,
                               const int32_t *targets, float dloss, int N, int V, int Vp)
{
    int nt = fm_cpu_team(be->threads, (size_t)N * (size_t)Vp, FM_CPU_ELEMWISE_SERIAL);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int n = 0; n < N; n++) {
        float *x = logits + (size_t)n * (size_t)Vp;
        xent_row_forward(x, V, targets[n], &losses[n], &lse[n]);
        xent_row_backward(x, lse[n], targets[n], dloss, V, Vp);
    }
}

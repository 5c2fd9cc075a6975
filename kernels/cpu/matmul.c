/* matmul.c — fully connected layer out = inp @ weight^T + bias, forward and backward (CPU), in fp32
 * and (with oneDNN) with bf16 inputs.
 *
 * Two GEMM engines (docs/performance.md, "Threads and GEMMs"):
 *   - oneDNN (FM_HAVE_ONEDNN): each product is one cached matmul primitive (onednn.c) that oneDNN runs
 *     on the rank's OpenMP pool; the transposed weight is described by strides, the bias is the
 *     primitive's bias (added to the fp32 accumulator), dweight accumulates through a sum post-op.
 *     dbias is a separate pass over the columns of dout. The bf16 kernels (the bf16 table's matmul)
 *     round dout to bf16 in that same pass (kernels.h: dout is fp32, the products take bf16).
 *   - CBLAS (builds without oneDNN; fp32 only): every product is cut into one tile per OpenMP thread
 *     (along the larger output dimension, tile edges on multiples of 32) and each tile is one
 *     single-threaded cblas_sgemm call inside the parallel region; the BLAS library's own threading
 *     is 1 (fm_cpu_backend_init). The K dimension is never split, so each output element is one BLAS
 *     dot-product chain; bias and dbias are epilogues on the tile the thread just produced. */
#include <omp.h>

#include <cblas.h>

#include "cpu_internal.h"
#include "cpu_kernels.h"

#if !FM_HAVE_ONEDNN
/* Tile of an (M,N) output for thread t of nt: rows [*i0,*i1), columns [*j0,*j1). */
static void tile_of(int M, int N, int nt, int t, int *i0, int *i1, int *j0, int *j1)
{
    size_t lo, hi;
    if (N >= M) {
        fm_cpu_split((size_t)N, nt, t, 32, &lo, &hi);
        *i0 = 0;
        *i1 = M;
        *j0 = (int)lo;
        *j1 = (int)hi;
    } else {
        fm_cpu_split((size_t)M, nt, t, 32, &lo, &hi);
        *i0 = (int)lo;
        *i1 = (int)hi;
        *j0 = 0;
        *j1 = N;
    }
}

static int gemm_team(int threads, int M, int N, int K)
{
    double mac = (double)M * (double)N * (double)K;
    return mac < (double)FM_CPU_GEMM_SERIAL_MAC ? 1 : threads;
}

/* out (N,OC) = inp (N,C) @ weight (OC,C)^T + bias (OC) */
static void cblas_forward(fm_backend *be, float *out, const float *inp, const float *weight,
                          const float *bias, int N, int C, int OC)
{
    int nt = gemm_team(be->threads, N, OC, C);
#pragma omp parallel num_threads(nt)
    {
        int i0, i1, j0, j1;
        tile_of(N, OC, omp_get_num_threads(), omp_get_thread_num(), &i0, &i1, &j0, &j1);
        if (i1 > i0 && j1 > j0) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, i1 - i0, j1 - j0, C, 1.0f,
                        inp + (size_t)i0 * (size_t)C, C, weight + (size_t)j0 * (size_t)C, C, 0.0f,
                        out + (size_t)i0 * (size_t)OC + j0, OC);
            if (bias) {
                for (int i = i0; i < i1; i++) {
                    float *o = out + (size_t)i * (size_t)OC;
#pragma omp simd
                    for (int j = j0; j < j1; j++) o[j] += bias[j];
                }
            }
        }
    }
}

/* dinp (N,C) = dout (N,OC) @ weight (OC,C), overwritten (skipped when NULL);
 * dweight (OC,C) += dout^T @ inp (N,C); dbias (OC) += column sums of dout (skipped when NULL) */
static void cblas_backward(fm_backend *be, float *dinp, float *dweight, float *dbias,
                           const float *dout, const float *inp, const float *weight, int N, int C,
                           int OC)
{
    int nt = gemm_team(be->threads, OC, C, N);
#pragma omp parallel num_threads(nt)
    {
        const int t = omp_get_thread_num(), T = omp_get_num_threads();
        int i0, i1, j0, j1;
        /* dweight tile (OC rows x C columns); K = N */
        tile_of(OC, C, T, t, &i0, &i1, &j0, &j1);
        if (i1 > i0 && j1 > j0) {
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, i1 - i0, j1 - j0, N, 1.0f,
                        dout + i0, OC, inp + j0, C, 1.0f, dweight + (size_t)i0 * (size_t)C + j0, C);
            /* dbias for this tile's rows of OC, by the tile that holds column 0 (each OC index is
             * summed by exactly one thread, over n in order) */
            if (dbias && j0 == 0) {
                for (int n = 0; n < N; n++) {
                    const float *d = dout + (size_t)n * (size_t)OC;
#pragma omp simd
                    for (int o = i0; o < i1; o++) dbias[o] += d[o];
                }
            }
        }
        /* dinp tile (N rows x C columns); K = OC */
        if (dinp) {
            tile_of(N, C, T, t, &i0, &i1, &j0, &j1);
            if (i1 > i0 && j1 > j0)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, i1 - i0, j1 - j0, OC, 1.0f,
                            dout + (size_t)i0 * (size_t)OC, OC, weight + j0, C, 0.0f,
                            dinp + (size_t)i0 * (size_t)C + j0, C);
        }
    }
}
#endif /* !FM_HAVE_ONEDNN */

#if FM_HAVE_ONEDNN
/* dbias (OC) += column sums of dout (N,OC), fp32, each column summed over n in order by one thread
 * (column slices of 16); with dout_bf16 != NULL, also dout_bf16 (N,OC) = to_bf16(dout) in the same
 * pass. */
static void dout_pass(fm_backend *be, float *dbias, fm_bf16 *dout_bf16, const float *dout, int N,
                      int OC)
{
    const int nt = fm_cpu_team(be->threads, (size_t)N * (size_t)OC, FM_CPU_ELEMWISE_SERIAL);
#pragma omp parallel num_threads(nt)
    {
        size_t lo, hi;
        fm_cpu_split((size_t)OC, omp_get_num_threads(), omp_get_thread_num(), 16, &lo, &hi);
        const int o0 = (int)lo, o1 = (int)hi;
        for (int n = 0; n < N && o1 > o0; n++) {
            const float *d = dout + (size_t)n * (size_t)OC;
            if (dbias) {
#pragma omp simd
                for (int o = o0; o < o1; o++) dbias[o] += d[o];
            }
            if (dout_bf16) {
                fm_bf16 *h = dout_bf16 + (size_t)n * (size_t)OC;
#pragma omp simd
                for (int o = o0; o < o1; o++) h[o] = fm_cpu_round_bf16(d[o]);
            }
        }
    }
}

/* out (N,OC) = inp (N,C) @ weight (OC,C)^T + bias: one oneDNN matmul, the weight transposed by its
 * strides; bf16: inp and weight bf16 */
static void dnnl_forward(fm_backend *be, int bf16, float *out, const void *inp, const void *weight,
                         const float *bias, int N, int C, int OC)
{
    const fm_cpu_gemm g = {N, OC, C, 0, 1, C, C, OC, bf16, 0};
    fm_cpu_dnnl_gemm(be, &g, inp, weight, bias, out);
}

/* dweight (OC,C) += dout^T (OC,N) @ inp (N,C); dinp (N,C) = dout (N,OC) @ weight (OC,C); dout in
 * the inputs' type (fp32, or its bf16 rounding) */
static void dnnl_backward(fm_backend *be, int bf16, float *dinp, float *dweight, const void *dout,
                          const void *inp, const void *weight, int N, int C, int OC)
{
    const fm_cpu_gemm gw = {OC, C, N, 1, 0, OC, C, C, bf16, 1};
    fm_cpu_dnnl_gemm(be, &gw, dout, inp, NULL, dweight);
    if (dinp) {
        const fm_cpu_gemm gd = {N, C, OC, 0, 0, OC, C, C, bf16, 0};
        fm_cpu_dnnl_gemm(be, &gd, dout, weight, NULL, dinp);
    }
}
#endif /* FM_HAVE_ONEDNN */

/* out (N,OC) = inp (N,C) @ weight (OC,C)^T + bias (OC), all fp32 */
void fm_cpu_matmul_forward(fm_backend *be, float *out, const float *inp, const float *weight,
                           const float *bias, int N, int C, int OC)
{
#if FM_HAVE_ONEDNN
    dnnl_forward(be, 0, out, inp, weight, bias, N, C, OC);
#else
    cblas_forward(be, out, inp, weight, bias, N, C, OC);
#endif
}

/* dinp (N,C) = dout (N,OC) @ weight (OC,C), overwritten (skipped when NULL);
 * dweight (OC,C) += dout^T @ inp (N,C); dbias (OC) += column sums of dout (skipped when NULL); fp32 */
void fm_cpu_matmul_backward(fm_backend *be, float *dinp, float *dweight, float *dbias,
                            const float *dout, const float *inp, const float *weight, int N, int C,
                            int OC)
{
#if FM_HAVE_ONEDNN
    if (dbias) dout_pass(be, dbias, NULL, dout, N, OC);
    dnnl_backward(be, 0, dinp, dweight, dout, inp, weight, N, C, OC);
#else
    cblas_backward(be, dinp, dweight, dbias, dout, inp, weight, N, C, OC);
#endif
}

#if FM_HAVE_ONEDNN
/* bf16 table: out (N,OC) fp32 = inp (N,C) bf16 @ weight (OC,C) bf16 ^T + bias (OC) fp32 */
void fm_cpu_matmul_forward_bf16(fm_backend *be, float *out, const float *inp, const float *weight,
                                const float *bias, int N, int C, int OC)
{
    dnnl_forward(be, 1, out, inp, weight, bias, N, C, OC);
}

/* bf16 table: dout (N,OC) fp32 is rounded to bf16 (workspace) in the pass that sums dbias; then
 * dweight (OC,C) += dout^T @ inp (N,C) bf16 and dinp (N,C) = dout @ weight (OC,C) bf16, in fp32 */
void fm_cpu_matmul_backward_bf16(fm_backend *be, float *dinp, float *dweight, float *dbias,
                                 const float *dout, const float *inp, const float *weight, int N,
                                 int C, int OC)
{
    fm_bf16 *d16 = fm_cpu_work(be, (size_t)N * (size_t)OC * sizeof(fm_bf16));
    if (!d16) return;
    dout_pass(be, dbias, d16, dout, N, OC);
    dnnl_backward(be, 1, dinp, dweight, d16, inp, weight, N, C, OC);
}
#endif

/* matmul.c — fully connected layer out = inp @ weight^T + bias, forward and backward (CPU).
 *
 * Every product is cut into one tile per OpenMP thread (along the larger output dimension, tile
 * edges on multiples of 32) and each tile is one single-threaded cblas_sgemm call inside the parallel
 * region; the BLAS library's own threading is 1 (fm_cpu_ctx_create). The K dimension is never split,
 * so each output element is one BLAS dot-product chain; bias and dbias are epilogues on the tile the
 * thread just produced (still in cache). */
#include <omp.h>

#include <cblas.h>

#include "cpu_internal.h"
#include "cpu_kernels.h"

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
void fm_cpu_matmul_forward(fm_backend *be, float *out, const float *inp, const float *weight,
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
void fm_cpu_matmul_backward(fm_backend *be, float *dinp, float *dweight, float *dbias,
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

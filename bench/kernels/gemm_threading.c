/* gemm_threading.c — `fmtrain-gemm-threading`: the measurement behind the threading policy of
 * docs/performance.md ("Threads and BLAS") and its determinism statement.
 *
 * For every GEMM shape of a GPT-2 step (C=768, N = B*T rows, given on the command line) and a large
 * square one, it times in the same run (best of R):
 *   tiled    the CPU backend's policy: one tile per OpenMP thread along the larger output dimension,
 *            one single-threaded cblas_sgemm per tile (the split of kernels/cpu/matmul.c);
 *   blas     one cblas_sgemm call with the BLAS library's own threads set to P (OpenBLAS only).
 * Then it checks whether fm_cpu_matmul_forward/backward give bit-identical results for 1..P+1 threads
 * at the model's shapes and at a small odd shape.
 *
 * Usage: fmtrain-gemm-threading [threads P=2] [rows N=256] [reps R=5] */
#define _POSIX_C_SOURCE 200809L
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>

#include "cpu/cpu_kernels.h"

#if FM_HAVE_OPENBLAS
void openblas_set_num_threads(int num_threads);
#endif

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct shape {
    int M, N, K, ta, tb;
    const char *name;
} shape;

static void gemm(const shape *s, const float *A, const float *B, float *C, int i0, int i1, int j0,
                 int j1)
{
    const int lda = s->ta ? s->M : s->K, ldb = s->tb ? s->K : s->N;
    cblas_sgemm(CblasRowMajor, s->ta ? CblasTrans : CblasNoTrans, s->tb ? CblasTrans : CblasNoTrans,
                i1 - i0, j1 - j0, s->K, 1.0f, s->ta ? A + i0 : A + (size_t)i0 * lda, lda,
                s->tb ? B + (size_t)j0 * ldb : B + j0, ldb, 0.0f, C + (size_t)i0 * s->N + j0, s->N);
}

static int same_bits(int N, int C, int OC, int maxt)
{
    float *x = malloc((size_t)N * C * 4), *w = malloc((size_t)OC * C * 4), *b = malloc((size_t)OC * 4);
    float *o[2], *dx[2], *dw[2], *db[2];
    unsigned s = 1;
    for (size_t i = 0; i < (size_t)N * C; i++) s = s * 1103515245u + 12345u, x[i] = (float)((s >> 8) & 1023) / 512.0f - 1.0f;
    for (size_t i = 0; i < (size_t)OC * C; i++) s = s * 1103515245u + 12345u, w[i] = (float)((s >> 8) & 1023) / 512.0f - 1.0f;
    for (int i = 0; i < OC; i++) b[i] = 0.01f * (float)i;
    int same = 1;
    for (int t = 1; t <= maxt; t++) {
        int k = t == 1 ? 0 : 1;
        fm_backend *be = NULL;
        fm_status st = fm_backend_create("cpu", t, -1, &be);
        if (st) {
            fm_status_print(st, stderr, 0);
            exit(1);
        }
        if (t > 2) free(o[1]), free(dx[1]), free(dw[1]), free(db[1]);
        o[k] = calloc((size_t)N * OC, 4), dx[k] = calloc((size_t)N * C, 4);
        dw[k] = calloc((size_t)OC * C, 4), db[k] = calloc((size_t)OC, 4);
        fm_cpu_matmul_forward(be, o[k], x, w, b, N, C, OC);
        fm_cpu_matmul_backward(be, dx[k], dw[k], db[k], o[k], x, w, N, C, OC);
        fm_backend_free(&be);
        if (k == 1)
            same &= !memcmp(o[0], o[1], (size_t)N * OC * 4) && !memcmp(dx[0], dx[1], (size_t)N * C * 4) &&
                    !memcmp(dw[0], dw[1], (size_t)OC * C * 4) && !memcmp(db[0], db[1], (size_t)OC * 4);
    }
    for (int k = 0; k < 2 && maxt > 1; k++) free(o[k]), free(dx[k]), free(dw[k]), free(db[k]);
    if (maxt == 1) free(o[0]), free(dx[0]), free(dw[0]), free(db[0]);
    free(x), free(w), free(b);
    return same;
}

int main(int argc, char **argv)
{
    const int P = argc > 1 ? atoi(argv[1]) : 2, N = argc > 2 ? atoi(argv[2]) : 256;
    const int R = argc > 3 ? atoi(argv[3]) : 5;
    if (P < 1 || N < 1 || R < 1) {
        fprintf(stderr, "usage: fmtrain-gemm-threading [threads] [rows] [reps]\n");
        return 2;
    }
    const shape sh[] = {{N, 2304, 768, 0, 1, "qkv forward"},    {N, 768, 768, 0, 1, "attn proj forward"},
                        {N, 3072, 768, 0, 1, "fc forward"},     {N, 768, 3072, 0, 1, "fc proj forward"},
                        {N, 50304, 768, 0, 1, "LM head forward"}, {2304, 768, N, 1, 0, "qkv dW"},
                        {N, 768, 2304, 0, 0, "qkv dX"},         {3072, 768, N, 1, 0, "fc dW"},
                        {N, 768, 3072, 0, 0, "fc dX"},          {50304, 768, N, 1, 0, "LM head dW"},
                        {N, 768, 50304, 0, 0, "LM head dX"},     {2048, 2048, 2048, 0, 1, "square"}};
    const int ns = (int)(sizeof sh / sizeof sh[0]);
    size_t maxa = 0, maxb = 0, maxc = 0;
    for (int i = 0; i < ns; i++) {
        size_t a = (size_t)sh[i].M * sh[i].K, b = (size_t)sh[i].K * sh[i].N, c = (size_t)sh[i].M * sh[i].N;
        maxa = a > maxa ? a : maxa, maxb = b > maxb ? b : maxb, maxc = c > maxc ? c : maxc;
    }
    float *A = malloc(maxa * 4), *B = malloc(maxb * 4), *C = calloc(maxc, 4);
    if (!A || !B || !C) return 1;
    for (size_t i = 0; i < maxa; i++) A[i] = (float)(i % 7) * 0.1f;
    for (size_t i = 0; i < maxb; i++) B[i] = (float)(i % 5) * 0.1f;
    fm_backend *be = NULL; /* sets the BLAS library to 1 thread, as the backend does */
    fm_status st = fm_backend_create("cpu", P, -1, &be);
    if (st) {
        fm_status_print(st, stderr, 0);
        fm_status_free(&st);
        return 1;
    }
    printf("%-18s %6s %6s %6s %12s %12s   (GFLOP/s, %d threads, best of %d)\n", "GEMM", "M", "N", "K",
           "tiled", "blas", P, R);
    for (int i = 0; i < ns; i++) {
        const shape *s = &sh[i];
        const double fl = 2.0 * s->M * (double)s->N * s->K;
        double bt = 1e30, bb = 1e30;
        for (int r = 0; r < R; r++) {
            double t0 = now();
#pragma omp parallel num_threads(P)
            {
                const int t = omp_get_thread_num(), T = omp_get_num_threads();
                int i0 = 0, i1 = s->M, j0 = 0, j1 = s->N;
                int *lo = s->N >= s->M ? &j0 : &i0, *hi = s->N >= s->M ? &j1 : &i1;
                const int dim = s->N >= s->M ? s->N : s->M;
                const int per = ((dim + T - 1) / T + 31) / 32 * 32;
                *lo = per * t < dim ? per * t : dim;
                *hi = per * (t + 1) < dim ? per * (t + 1) : dim;
                if (i1 > i0 && j1 > j0) gemm(s, A, B, C, i0, i1, j0, j1);
            }
            double t1 = now();
            bt = t1 - t0 < bt ? t1 - t0 : bt;
#if FM_HAVE_OPENBLAS
            openblas_set_num_threads(P);
            t0 = now();
            gemm(s, A, B, C, 0, s->M, 0, s->N);
            t1 = now();
            openblas_set_num_threads(1);
            bb = t1 - t0 < bb ? t1 - t0 : bb;
#endif
        }
        printf("%-18s %6d %6d %6d %12.1f %12.1f\n", s->name, s->M, s->N, s->K, fl / bt * 1e-9,
               bb < 1e29 ? fl / bb * 1e-9 : 0.0);
    }
    fm_backend_free(&be);
    free(A), free(B), free(C);

    const int det[][3] = {{N, 768, 2304}, {N, 768, 768}, {N, 768, 3072}, {N, 3072, 768},
                          {N, 768, 50304}, {100, 77, 333}, {37, 768, 2304}};
    for (size_t i = 0; i < sizeof det / sizeof det[0]; i++)
        printf("matmul fwd+bwd N=%d C=%d OC=%d: threads 1..%d bit-identical: %s\n", det[i][0],
               det[i][1], det[i][2], P + 1, same_bits(det[i][0], det[i][1], det[i][2], P + 1) ? "yes" : "no");
    return 0;
}

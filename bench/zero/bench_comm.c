/* bench_comm.c — the collectives of each parallelism scheme, timed with ranks on one machine (no
 * model compute, or a simulated one): what docs/parallelism.md quotes as "measured".
 *
 *   mpiexec -n N fmtrain-bench-comm [ITERS [COMPUTE_MS]]
 *
 * The buffer is the parameter layout of GPT-2 124M with vocabulary 8192 and seq_len 64 (the shape
 * of bench_zero.sh), cut into its layers as the backward reports them (last layer first, then the
 * head range). Per step and rank (median of ITERS, default 5), in the order of docs/parallelism.md:
 *   mpi_allreduce      fm_comm in MPI's all-reduce mode (MPI_Iallreduce per bucket)
 *   ordered_allreduce  fm_comm's ordered all-reduce ([train] zero = 0 and 1)
 *   reduce_scatter     fm_comm's ordered reduce-scatter (zero = 2)
 *   allgather          fm_comm_allgather of the weights' shards (zero >= 1)
 *   zero3_sim          ZeRO-3 / FSDP: each layer's weights all-gathered before its forward and again
 *                      before its backward (MPI_Allgather of its shards), then the reduce-scatter
 *   tp_sim             tensor parallelism of degree N: 4 all-reduces per layer (2 forward, 2
 *                      backward) of the activations (B 4, T 64, C 768 floats) per micro-batch
 * With COMPUTE_MS > 0 each layer's "backward" spins that long before reporting its gradients, so
 * the first three show the exposed wait after the backward (what the trainer's grad_wait measures)
 * instead of the raw time. Rank 0 prints one line per measurement with the bytes each rank sent. */
#define _POSIX_C_SOURCE 200809L
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "dist/comm.h"
#include "model/model.h"

static int cmpd(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmpd);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void spin(double ms)
{
    double t0 = fm_util_now();
    while ((fm_util_now() - t0) * 1e3 < ms) {
    }
}

static void die(fm_status st)
{
    if (!st) return;
    fprintf(stderr, "bench_comm: %s\n", fm_status_message(st));
    MPI_Abort(MPI_COMM_WORLD, 1);
}

/* One gradient step through engine `ar`: the layers reported last to first (head range last),
 * each after `compute_ms` of spinning; returns the wait after the last report. */
static double grad_step(fm_comm_allreduce *ar, const size_t *loff, const size_t *lcnt, int L,
                        double compute_ms, double *total)
{
    double t0 = fm_util_now();
    for (int l = L - 1; l >= -1; l--) {
        if (compute_ms > 0) spin(compute_ms);
        int k = l + 1; /* index 0: the head range */
        fm_comm_allreduce_ready(ar, loff[k], lcnt[k]);
    }
    double t1 = fm_util_now();
    die(fm_comm_allreduce_wait_all(ar));
    double t2 = fm_util_now();
    *total = t2 - t0;
    return t2 - t1;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int iters = argc > 1 ? atoi(argv[1]) : 5;
    double compute_ms = argc > 2 ? atof(argv[2]) : 0.0;
    if (iters < 1) iters = 1;
    fm_comm *c = NULL;
    die(fm_comm_init(&c));
    fm_model_shape shape = {12, 12, 768, 64, 8192, .arch = "gpt2"};
    const int N = c->size, L = shape.n_layer;
    size_t *b = malloc(sizeof *b * ((size_t)N + 1));
    die(fm_model_shard_bounds(&shape, N, b));
    const size_t P = b[N];
    /* the layer ranges: the head range, then L equal layers (GPT-2's layout) */
    size_t layer = (size_t)12 * 768 * 768 + 13 * 768, head = P - (size_t)L * layer;
    size_t loff[64], lcnt[64];
    loff[0] = 0;
    lcnt[0] = head;
    for (int l = 0; l < L; l++) {
        loff[l + 1] = head + (size_t)l * layer;
        lcnt[l + 1] = layer;
    }
    float *g = malloc(sizeof *g * P), *p = malloc(sizeof *p * P);
    if (!g || !p) die(FM_ERR(FM_ERR_NOMEM, "out of memory for %zu floats", 2 * P));
    for (size_t i = 0; i < P; i++) g[i] = p[i] = (float)(i % 1000) * 1e-3f;
    double *t = malloc(sizeof *t * (size_t)iters), *w = malloc(sizeof *w * (size_t)iters);
    double load[3] = {0, 0, 0};
    if (c->rank == 0) {
        FILE *f = fopen("/proc/loadavg", "r");
        if (f) {
            if (fscanf(f, "%lf %lf %lf", &load[0], &load[1], &load[2]) != 3) load[0] = -1;
            fclose(f);
        }
        printf("# %d ranks, %zu floats (%.1f MB of fp32 gradients), %d iterations, compute %.0f ms "
               "per layer; load average %.2f\n",
               N, P, 4.0 * (double)P / 1e6, iters, compute_ms, load[0]);
        printf("%-18s %10s %10s %14s %10s\n", "collective", "median_ms", "wait_ms", "MB_sent/rank",
               "GB/s/rank");
    }
    const double frac = (double)(N - 1) / N;
    const char *names[3] = {"mpi_allreduce", "ordered_allreduce", "reduce_scatter"};
    const double vol[3] = {2 * frac, 2 * frac, frac};
    for (int mode = 0; mode < 3; mode++) {
        fm_comm_allreduce *ar = NULL;
        if (mode == 0) die(fm_comm_allreduce_init(&ar, c, g, P, 0, 0));
        if (mode == 1) die(fm_comm_allreduce_init_ordered(&ar, c, g, P, b, 0, 0, 0));
        if (mode == 2) die(fm_comm_reduce_scatter_init(&ar, c, g, P, b, 0, 0, 0));
        double tot = 0;
        grad_step(ar, loff, lcnt, L, 0, &tot); /* warm-up */
        for (int i = 0; i < iters; i++) {
            MPI_Barrier(MPI_COMM_WORLD);
            w[i] = grad_step(ar, loff, lcnt, L, compute_ms, &t[i]);
        }
        double mt = median(t, iters), mw = median(w, iters), mb = vol[mode] * 4.0 * (double)P / 1e6;
        if (c->rank == 0)
            printf("%-18s %10.1f %10.1f %14.1f %10.2f\n", names[mode], 1e3 * mt, 1e3 * mw, mb,
                   mb / 1e3 / (compute_ms > 0 ? mw > 0 ? mw : 1e-9 : mt));
        fm_comm_allreduce_free(&ar);
    }
    /* the all-gather of the weights' shards */
    {
        fm_comm_allgather *ag = NULL;
        die(fm_comm_allgather_init(&ag, c, p, P, b, 0));
        for (int i = -1; i < iters; i++) {
            MPI_Barrier(MPI_COMM_WORLD);
            double t0 = fm_util_now();
            die(fm_comm_allgather_start(ag));
            die(fm_comm_allgather_wait_all(ag));
            if (i >= 0) t[i] = fm_util_now() - t0;
        }
        double mt = median(t, iters), mb = frac * 4.0 * (double)P / 1e6;
        if (c->rank == 0)
            printf("%-18s %10.1f %10s %14.1f %10.2f\n", "allgather", 1e3 * mt, "-", mb, mb / 1e3 / mt);
        fm_comm_allgather_free(&ag);
    }
    /* ZeRO-3: per layer, the layer's weights gathered (forward, backward), then the reduce-scatter */
    {
        size_t maxl = head > layer ? head : layer;
        size_t per = (maxl + (size_t)N - 1) / (size_t)N;
        float *shard = malloc(sizeof *shard * per), *full = malloc(sizeof *full * per * (size_t)N);
        fm_comm_allreduce *rs = NULL;
        die(fm_comm_reduce_scatter_init(&rs, c, g, P, b, 0, 0, 0));
        for (int i = -1; i < iters; i++) {
            MPI_Barrier(MPI_COMM_WORLD);
            double t0 = fm_util_now();
            for (int pass = 0; pass < 2; pass++)
                for (int l = 0; l <= L; l++) {
                    size_t n = (lcnt[l] + (size_t)N - 1) / (size_t)N;
                    memcpy(shard, p + loff[l], n * sizeof(float));
                    MPI_Allgather(shard, (int)n, MPI_FLOAT, full, (int)n, MPI_FLOAT,
                                  MPI_COMM_WORLD); /* MPI_COMM_WORLD: errors are fatal */
                }
            double tot = 0;
            grad_step(rs, loff, lcnt, L, 0, &tot);
            if (i >= 0) t[i] = fm_util_now() - t0;
        }
        double mt = median(t, iters), mb = 3 * frac * 4.0 * (double)P / 1e6;
        if (c->rank == 0)
            printf("%-18s %10.1f %10s %14.1f %10.2f\n", "zero3_sim", 1e3 * mt, "-", mb, mb / 1e3 / mt);
        fm_comm_allreduce_free(&rs);
        free(shard);
        free(full);
    }
    /* tensor parallelism of degree N: 4 all-reduces per layer of (B T C) activations */
    {
        size_t n = (size_t)4 * 64 * 768;
        float *act = malloc(sizeof *act * n);
        for (size_t i = 0; i < n; i++) act[i] = 1.0f;
        for (int i = -1; i < iters; i++) {
            MPI_Barrier(MPI_COMM_WORLD);
            double t0 = fm_util_now();
            for (int k = 0; k < 4 * L; k++)
                MPI_Allreduce(MPI_IN_PLACE, act, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
            if (i >= 0) t[i] = fm_util_now() - t0;
        }
        double mt = median(t, iters), mb = 4.0 * L * 2 * frac * 4.0 * (double)n / 1e6;
        if (c->rank == 0)
            printf("%-18s %10.1f %10s %14.1f %10.2f\n", "tp_sim", 1e3 * mt, "-", mb, mb / 1e3 / mt);
        free(act);
    }
    free(t);
    free(w);
    free(g);
    free(p);
    free(b);
    fm_comm_free(&c);
    MPI_Finalize();
    return 0;
}

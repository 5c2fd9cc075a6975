/* bench_zero.c — `fmtrain train` that reports, for every step, where each rank's time went: the
 * trainer's timeline (trainer.h, fm_trainer_timeline: data, forward+backward with the gradient
 * buckets started from it, the exposed wait for the gradient all-reduce / reduce-scatter, the
 * gradient norm, the update with the all-gather's sends started from it, the exposed wait for the
 * all-gather), gathered on rank 0 after each step through the after_step test hook.
 *
 * Usage: the arguments of `fmtrain train` (mpiexec -n N fmtrain-bench-zero train PARAMS.ini
 * --set ...). Rank 0 prints to stderr, besides fmtrain's own output:
 *   zero-step STEP step_ms ... compute ... grad_wait ... norm ... update ... gather_wait ... data ...
 *     other ... slowest_compute ... cpu ... buckets EARLY/ALL
 * one line per step (ms): step_ms is the slowest rank's step, every phase the mean over ranks (so
 * that the phases add up: a rank that computes faster waits longer for the others), "other" the
 * step minus the phases (loss average, bookkeeping), slowest_compute the largest compute time of
 * any rank (a straggler shows there), cpu the CPU time all ranks' processes used in the step (all
 * their threads, CLOCK_PROCESS_CPUTIME_ID from one step's end to the next: on a machine shared with
 * other work it counts what the run itself spent, including MPI's polling and OpenMP's spinning,
 * where the wall-clock columns also count the time the neighbours took); and after the last step
 * one summary line
 *   zero-summary zero=Z ranks=N threads=P steps=S median_step_ms=... tokens_per_s=... compute=...
 *     grad_wait=... norm=... update=... gather_wait=... data=... slowest_compute=... other=...
 *     cpu=... comm_exposed_pct=...
 * with the medians over the steps after the first `FMTRAIN_BENCH_SKIP` (default 2: allocation and
 * page faults), taken per column. bench_zero.sh drives it.
 * It is the fmtrain program (fm_main) with one test hook: same code, same numbers. */
#define _POSIX_C_SOURCE 200809L
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "config/config.h"
#include "dist/comm.h"
#include "train/trainer.h"

enum { NPH = 10 }; /* step (max), compute, grad_wait, norm, update, gather_wait, data (means),
                      compute (max), other (step minus the means), cpu (sum over ranks) */

typedef struct bench {
    double *rows; /* (steps, NPH) maxima over ranks, rank 0 */
    int64_t cap, n;
    int skip;
    double cpu_prev; /* this rank's process CPU time at the previous step's end */
} bench;

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median_col(const bench *b, int col)
{
    int64_t m = b->n - b->skip;
    if (m <= 0) return 0.0;
    double *v = malloc(sizeof *v * (size_t)m);
    if (!v) return 0.0;
    for (int64_t i = 0; i < m; i++) v[i] = b->rows[(b->skip + i) * NPH + col];
    qsort(v, (size_t)m, sizeof *v, cmp);
    double r = m % 2 ? v[m / 2] : 0.5 * (v[m / 2 - 1] + v[m / 2]);
    free(v);
    return r;
}

static fm_status after_step(void *ctx, fm_trainer *t, int64_t step, const fm_trainer_timeline *tl)
{
    bench *b = ctx;
    const fm_comm *c = fm_trainer_comm(t);
    const fm_config *cfg = fm_trainer_config(t);
    double mine[NPH] = {tl->step_s, tl->compute_s, tl->grad_wait_s, tl->norm_s, tl->update_s,
                        tl->gather_wait_s, tl->data_s, tl->compute_s, 0.0, 0.0};
    double cpu = cpu_now();
    mine[9] = b->cpu_prev > 0.0 ? cpu - b->cpu_prev : 0.0;
    b->cpu_prev = cpu;
    double sum[NPH], most[NPH], mx[NPH];
    FM_MPI_TRY(MPI_Reduce(mine, sum, NPH, MPI_DOUBLE, MPI_SUM, 0, c->world));
    FM_MPI_TRY(MPI_Reduce(mine, most, NPH, MPI_DOUBLE, MPI_MAX, 0, c->world));
    if (c->rank != 0) return NULL;
    for (int k = 0; k < NPH; k++) mx[k] = sum[k] / c->size;
    mx[0] = most[0];
    mx[7] = most[7];
    mx[8] = mx[0] - mx[1] - mx[2] - mx[3] - mx[4] - mx[5] - mx[6];
    mx[9] = sum[9];
    if (b->n == b->cap) {
        int64_t cap = b->cap ? 2 * b->cap : 256;
        double *r = realloc(b->rows, sizeof *r * (size_t)cap * NPH);
        if (!r) return FM_ERR(FM_ERR_NOMEM, "bench: out of memory");
        b->rows = r;
        b->cap = cap;
    }
    memcpy(b->rows + b->n * NPH, mx, sizeof mx);
    b->n++;
    fprintf(stderr,
            "zero-step %lld step_ms %.1f compute %.1f grad_wait %.1f norm %.1f update %.1f "
            "gather_wait %.1f data %.1f other %.1f slowest_compute %.1f cpu %.1f buckets %d/%d\n",
            (long long)step, 1e3 * mx[0], 1e3 * mx[1], 1e3 * mx[2], 1e3 * mx[3], 1e3 * mx[4],
            1e3 * mx[5], 1e3 * mx[6], 1e3 * mx[8], 1e3 * mx[7], 1e3 * mx[9], tl->early_buckets,
            tl->buckets);
    if (step == cfg->train_steps) {
        double med[NPH];
        for (int k = 0; k < NPH; k++) med[k] = median_col(b, k);
        double tokens = (double)cfg->train_micro_batch * cfg->train_grad_accum * c->size *
                        cfg->model_seq_len;
        double comm = med[2] + med[5];
        fprintf(stderr,
                "zero-summary zero=%d ranks=%d threads=%d steps=%lld median_step_ms=%.1f "
                "tokens_per_s=%.1f compute=%.1f grad_wait=%.1f norm=%.1f update=%.1f "
                "gather_wait=%.1f data=%.1f slowest_compute=%.1f other=%.1f cpu=%.1f comm_exposed_pct=%.1f\n",
                cfg->train_zero, c->size, cfg->runtime_threads, (long long)(b->n - b->skip),
                1e3 * med[0], med[0] > 0 ? tokens / med[0] : 0.0, 1e3 * med[1], 1e3 * med[2],
                1e3 * med[3], 1e3 * med[4], 1e3 * med[5], 1e3 * med[6], 1e3 * med[7], 1e3 * med[8],
                1e3 * med[9], med[0] > 0 ? 100.0 * comm / med[0] : 0.0);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    static bench b;
    const char *skip = getenv("FMTRAIN_BENCH_SKIP");
    b.skip = skip && *skip ? atoi(skip) : 2;
    if (b.skip < 0) b.skip = 0;
    fm_trainer_test_hooks th = {NULL, NULL, &b, after_step};
    fm_main_hooks hooks = {&th};
    int rc = fm_main(argc, argv, &hooks);
    free(b.rows);
    return rc;
}

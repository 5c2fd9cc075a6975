/* bench_reader.c — how long a training step waits for its data: reads STEPS steps of G windows of
 * T+1 tokens with a simulated compute time per step, with read-ahead on and off, and prints the
 * wait as a fraction of step time. Usage (under mpiexec or alone):
 *   bench_reader [DATA.h5] [--seq-len T] [--windows G] [--compute-ms C] [--steps S]
 * Without DATA.h5 it writes a 64 Mi-token uint16 file to /tmp first (and removes it). */
#define _POSIX_C_SOURCE 200809L
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dataset/ds_fixture.h"
#include "data/reader.h"
#include "core/util.h"

static int fail(fm_status st)
{
    fm_status_print(st, stderr, 1);
    fm_status_free(&st);
    MPI_Abort(MPI_COMM_WORLD, 1);
    return 1;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    const char *path = NULL;
    int T = 1024, steps = 100;
    long G = 32;
    double compute_ms = 20;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seq-len") && i + 1 < argc) T = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--windows") && i + 1 < argc) G = atol(argv[++i]);
        else if (!strcmp(argv[i], "--compute-ms") && i + 1 < argc) compute_ms = atof(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else path = argv[i];
    }
    char tmp[256] = "";
    if (!path) {
        if (rank == 0) {
            snprintf(tmp, sizeof tmp, "/tmp/fm_bench_reader_%ld.h5", (long)getpid());
            fm_status st = fixture_write(tmp, 50304, (uint64_t)64 << 20, 1 << 20, NULL);
            if (st) return fail(st);
        }
        MPI_Bcast(tmp, sizeof tmp, MPI_CHAR, 0, MPI_COMM_WORLD);
        path = tmp;
    }
    long per = G / size, first = per * rank, count = rank == size - 1 ? G - first : per;
    int32_t *tok = malloc((size_t)count * (size_t)(T + 1) * sizeof *tok);
    for (int ra = 1; ra >= 0; ra--) {
        fm_reader_options o;
        memset(&o, 0, sizeof o);
        o.comm = MPI_COMM_WORLD;
        o.seq_len = T;
        o.global_windows = G;
        o.first = first;
        o.count = count;
        o.seed = 1;
        o.read_ahead = ra;
        fm_reader *r = NULL;
        fm_status st = fm_reader_open(path, &o, &r);
        if (st) return fail(st);
        MPI_Barrier(MPI_COMM_WORLD);
        double t0 = fm_util_now();
        for (int s = 0; s < steps; s++) {
            if ((st = fm_reader_next(r, tok))) return fail(st);
            struct timespec ts = {(time_t)(compute_ms / 1000), (long)(compute_ms * 1e6) % 1000000000L};
            nanosleep(&ts, NULL);
        }
        double total = fm_util_now() - t0, wait = fm_reader_wait_seconds(r), maxwait = 0;
        MPI_Reduce(&wait, &maxwait, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
        if (rank == 0)
            printf("read-ahead %-3s  %d ranks, %d steps of %ld x %d+1 tokens, compute %.1f ms/step: "
                   "max I/O wait %.3f ms total = %.4f %% of step time (%.1f us/step)\n",
                   ra ? "on" : "off", size, steps, G, T, compute_ms, maxwait * 1e3, 100 * maxwait / total,
                   maxwait / steps * 1e6);
        fm_reader_free(&r);
    }
    free(tok);
    if (tmp[0] && rank == 0) unlink(tmp);
    MPI_Finalize();
    return 0;
}

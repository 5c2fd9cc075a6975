/* bench_checkpoint.c — checkpoint write and read bandwidth vs plain sequential write()/read() of the
 * same bytes on the same file system, in the same run.
 *
 * Usage: mpiexec -n N bench_checkpoint DIR [--trials K] [--layers L] [--dmodel C] [--vocab V]
 *                                          [--seq T] [--align BYTES] [--hints "k=v,..."]
 * Default shape: GPT-2 124M (V 50257 padded to 50304, C 768, L 12, T 1024): params + AdamW m and v
 * in the model's layer-major layout, 3 x 124.5 M floats = 1.49 GB.
 *
 * Each trial, in alternating order:
 *   baseline write: rank 0 writes the three buffers with write() in 8 MiB calls to a new file
 *                   DIR/baseline.bin, then fsync + close;
 *   checkpoint write: fm_checkpoint_file_create + write_groups + commit (collective, CRC-32, fsync,
 *                   rename, directory fsync) by all N ranks.
 * Then both files are evicted from the page cache (fsync + posix_fadvise DONTNEED on these two files
 * only) and read back: the baseline with read() by rank 0, the checkpoint with
 * fm_checkpoint_file_open + read_groups (every rank reads its part, CRC-32 verified, parts
 * exchanged so all ranks hold everything). Bandwidth = tensor bytes / seconds. The files are
 * removed at the end. A first, unreported trial warms the page cache and file system up; the
 * summary gives the geometric mean of the per-trial ratios (which cancels a bias of the write order,
 * see below) and their median. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint/ckpt_test_util.h"
#include "ckpt/checkpoint_dir.h"
#include "ckpt/checkpoint_file.h"
#include "core/util.h"

#define FORMAT "fmtrain-checkpoint-bench"
#define CHUNK ((size_t)8 << 20)

static int die(const char *what, fm_status st)
{
    fprintf(stderr, "bench_checkpoint: %s: %s\n", what, st ? fm_status_message(st) : strerror(errno));
    MPI_Abort(MPI_COMM_WORLD, 1);
    return 1;
}

static void evict(const char *path)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) return;
    fdatasync(fd);
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
}

/* Touches and frees `bytes` of anonymous memory so that the page cache of the next writer is built
 * from pages the (virtual) machine has recently used: on VMs whose balloon returns freed pages to
 * the host, first-touch costs otherwise fall on whichever writer happens to run first. Called
 * before each measured write, baseline and checkpoint alike. */
static void prefault(size_t bytes)
{
    char *p = malloc(bytes);
    if (!p) return;
    memset(p, 1, bytes);
    volatile char sink = p[bytes - 1];
    (void)sink;
    free(p);
}

static double baseline_write(const char *path, const ckpt_synth *s)
{
    double t0 = fm_util_now();
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd < 0) die(path, NULL);
    for (int g = 0; g < 3; g++) {
        const char *p = (const char *)s->buf[g];
        size_t n = s->numel * sizeof(float);
        while (n > 0) {
            ssize_t w = write(fd, p, n < CHUNK ? n : CHUNK);
            if (w <= 0) die(path, NULL);
            p += w;
            n -= (size_t)w;
        }
    }
    if (fsync(fd) != 0) die(path, NULL);
    close(fd);
    return fm_util_now() - t0;
}

static double baseline_read(const char *path, ckpt_synth *s)
{
    double t0 = fm_util_now();
    int fd = open(path, O_RDONLY);
    if (fd < 0) die(path, NULL);
    for (int g = 0; g < 3; g++) {
        char *p = (char *)s->buf[g];
        size_t n = s->numel * sizeof(float);
        while (n > 0) {
            ssize_t r = read(fd, p, n < CHUNK ? n : CHUNK);
            if (r <= 0) die(path, NULL);
            p += r;
            n -= (size_t)r;
        }
    }
    close(fd);
    return fm_util_now() - t0;
}

static double ckpt_write(const char *path, const ckpt_synth *s, const fm_checkpoint_io_opts *opts)
{
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = fm_util_now();
    fm_checkpoint_file *f = NULL;
    fm_status st = fm_checkpoint_file_create(MPI_COMM_WORLD, path, FORMAT, 1, opts, &f);
    if (st) die("create", st);
    double t1 = fm_util_now();
    st = fm_checkpoint_file_write_groups(f, s->groups, 3);
    if (st) die("write", st);
    double t2 = fm_util_now();
    st = fm_checkpoint_file_commit(&f, 0, NULL);
    if (st) die("commit", st);
    MPI_Barrier(MPI_COMM_WORLD);
    double t3 = fm_util_now();
    if (getenv("FM_BENCH_VERBOSE"))
        fprintf(stderr, "  ckpt write: create %.3f s, tensors %.3f s, commit (flush, close, fsync, "
                        "rename) %.3f s\n", t1 - t0, t2 - t1, t3 - t2);
    return t3 - t0;
}

static double ckpt_read(const char *path, ckpt_synth *s, const fm_checkpoint_io_opts *opts)
{
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = fm_util_now();
    fm_checkpoint_file *f = NULL;
    fm_status st = fm_checkpoint_file_open(MPI_COMM_WORLD, path, FORMAT, NULL, opts, &f);
    if (st) die("open", st);
    st = fm_checkpoint_file_read_groups(f, s->groups, 3, 1);
    if (st) die("read", st);
    fm_checkpoint_file_close(&f);
    MPI_Barrier(MPI_COMM_WORLD);
    return fm_util_now() - t0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (argc < 2) {
        if (rank == 0)
            fprintf(stderr, "usage: bench_checkpoint DIR [--trials K] [--layers L] [--dmodel C] "
                            "[--vocab V] [--seq T] [--align BYTES] [--hints k=v,...]\n");
        MPI_Finalize();
        return 2;
    }
    const char *dir = argv[1];
    int trials = 3, L = 12, C = 768, V = 50257, T = 1024;
    long long align = 1 << 20;
    const char *hints = NULL;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--trials")) trials = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--layers")) L = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--dmodel")) C = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--vocab")) V = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--seq")) T = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--align")) align = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--hints")) hints = argv[i + 1];
    }
    fm_checkpoint_io_opts opts = {align, hints, 0};
    ckpt_synth s;
    if (ckpt_synth_gpt2(&s, V, C, L, T, 2024) != 0) die("allocating buffers", NULL);
    double bytes = 3.0 * (double)s.numel * sizeof(float);
    char base[4200], ck[4200];
    snprintf(base, sizeof base, "%s/baseline.bin", dir);
    fm_status st = fm_checkpoint_dir_file_path(dir, 1, ck, sizeof ck);
    if (st) die("path", st);
    if (rank == 0) {
        fm_status e = fm_util_mkdir_p(dir);
        if (e) die("mkdir", e);
        printf("# checkpoint benchmark: %d rank(s), L=%d C=%d V=%d T=%d, %d tensors x 3, %.3f GB, "
               "align %lld, hints \"%s\"\n",
               size, L, C, V, T, s.ntensors, bytes / 1e9, align, hints ? hints : "");
        printf("# trial  seq_write_GBps  ckpt_write_GBps  write_ratio  seq_read_GBps  "
               "ckpt_read_GBps  read_ratio\n");
    }
    double wr[64], rr[64], best[4] = {0, 0, 0, 0};
    if (trials > 64) trials = 64;
    /* Trial 0 is a warm-up (page cache and file system state), not reported. */
    for (int t = 0; t <= trials; t++) {
        double tw_seq = 0, tw_ck = 0, tr_seq = 0, tr_ck = 0;
        /* Both writers create new files: the previous ones are deleted first, so both draw their
         * page-cache pages from the same free pool (on a VM whose balloon reclaims freed pages,
         * rewriting a file in place would favour whichever reuses its own just-freed pages). */
        if (rank == 0) {
            unlink(base);
            unlink(ck);
        }
        MPI_Barrier(MPI_COMM_WORLD);
        for (int k = 0; k < 2; k++) {
            int do_seq_first = (t % 2 == 0);
            int seq = (k == 0) == do_seq_first;
            prefault((size_t)(bytes / size) + ((size_t)64 << 20));
            MPI_Barrier(MPI_COMM_WORLD);
            if (seq) {
                if (rank == 0) tw_seq = baseline_write(base, &s);
                MPI_Barrier(MPI_COMM_WORLD);
            } else {
                tw_ck = ckpt_write(ck, &s, &opts);
            }
        }
        if (rank == 0) {
            evict(base);
            evict(ck);
        }
        /* Clobber the buffers so that reading is checked. */
        for (int g = 0; g < 3; g++) memset(s.buf[g], 0, s.numel * sizeof(float));
        MPI_Barrier(MPI_COMM_WORLD);
        tr_ck = ckpt_read(ck, &s, &opts);
        long long bad = ckpt_synth_check(&s, 2024);
        if (bad != -1) {
            fprintf(stderr, "rank %d: checkpoint read back wrong data at %lld\n", rank, bad);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        if (rank == 0) tr_seq = baseline_read(base, &s);
        MPI_Barrier(MPI_COMM_WORLD);
        MPI_Bcast(&tw_seq, 1, MPI_DOUBLE, 0, MPI_COMM_WORLD);
        MPI_Bcast(&tr_seq, 1, MPI_DOUBLE, 0, MPI_COMM_WORLD);
        double g[4] = {bytes / tw_seq / 1e9, bytes / tw_ck / 1e9, bytes / tr_seq / 1e9,
                       bytes / tr_ck / 1e9};
        if (t == 0) continue;
        wr[t - 1] = g[1] / g[0];
        rr[t - 1] = g[3] / g[2];
        for (int k = 0; k < 4; k++)
            if (g[k] > best[k]) best[k] = g[k];
        if (rank == 0)
            printf("  %d      %8.3f          %8.3f        %6.1f%%       %8.3f        %8.3f       "
                   "%6.1f%%\n",
                   t, g[0], g[1], 100 * g[1] / g[0], g[2], g[3], 100 * g[3] / g[2]);
        fflush(stdout);
    }
    if (rank == 0) {
        /* The write order alternates between trials; whichever writer runs first in a trial may
         * be slowed (or sped up) by a factor p common to both orders, which the geometric mean of
         * the ratios over pairs of trials cancels: (c/(p s)) x (p c/s) = (c/s)^2. */
        double gw = 0, gr = 0;
        for (int k = 0; k < trials; k++) {
            gw += log(wr[k]);
            gr += log(rr[k]);
        }
        printf("# geometric mean of the ratios over %d trials: write %.1f%%, read %.1f%% of "
               "sequential\n",
               trials, 100 * exp(gw / trials), 100 * exp(gr / trials));
        printf("# median ratio over %d trials: write %.1f%%, read %.1f%% of sequential "
               "(best GB/s: seq write %.3f, ckpt write %.3f, seq read %.3f, ckpt read %.3f)\n",
               trials, 100 * median(wr, trials), 100 * median(rr, trials), best[0], best[1],
               best[2], best[3]);
        unlink(base);
        unlink(ck);
        char cdir[4200];
        snprintf(cdir, sizeof cdir, "%s/checkpoints/latest", dir);
        unlink(cdir);
        snprintf(cdir, sizeof cdir, "%s/checkpoints", dir);
        rmdir(cdir);
    }
    ckpt_synth_free(&s);
    MPI_Finalize();
    return 0;
}

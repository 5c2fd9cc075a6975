/* fmtrain_faults.c — a test executable: the fmtrain program (fm_main, the same code as fmtrain)
 * with a fault injector installed through the trainer's test hooks, so that the tests can exercise
 * [train] on_nan (tests/train/test_nan.sh), the hang watchdog (test_watchdog.sh) and the straggler
 * report (test_straggler.sh). The production fmtrain carries no such code and ignores the variables
 * below.
 *
 * FMTRAIN_TEST_NAN_STEP = "N:loss" or "N:grad" poisons step N (1-based), after the gradient
 * all-reduce: "loss" makes rank 0's loss NaN (the averaged loss becomes NaN on every rank), "grad"
 * sets the first gradient to NaN on every rank (the gradient norm becomes NaN).
 * FMTRAIN_TEST_STALL = "N:R" or "N:R:SECONDS": in step N rank R stops inside its compute time (the
 * before_compute hook) for SECONDS (default: for ever), as a rank on a dead node or a stuck file
 * system would. It first writes "fmtrain_faults: rank R stalls in step N at T" (T: seconds since
 * the epoch) to standard error, so that a test can measure the time from the fault to the exit.
 * FMTRAIN_TEST_SLOW = "R:MS": rank R spends MS more milliseconds computing in every step (a
 * straggler).
 * FMTRAIN_TEST_FILL = "DIR:FILE": a thread watches directory DIR (inotify) and, as soon as a
 * checkpoint's temporary file (*.h5.tmp) appears there, writes FILE until its file system is full:
 * a disk that fills up after the checkpoint's free-space check, while HDF5 has the file open (the
 * case only the watchdog can bound). It writes "fmtrain_faults: disk filled at T" to stderr.
 * FMTRAIN_TEST_CKPT_WRITE = "delay:SECONDS" or "fill:STEP:FILE": the background writer of an
 * asynchronous checkpoint ([checkpoint] async = true, ckpt/async.h) waits SECONDS before it writes
 * (a slow file system: training goes on while the write is in flight, so a kill -9 lands in it), or,
 * for the checkpoint of step STEP, first writes FILE until its file system is full, less 64 KiB (a
 * disk that fills while the checkpoint is written in the background; the logs still fit). It writes "fmtrain_faults: rank R:
 * background write of step S starts at T" to stderr.
 * Unset: no fault. A malformed value exits 2 before anything runs. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <time.h>
#include <unistd.h>

#include "ckpt/async.h"
#include "cli/cli.h"
#include "kernels.h"
#include "train/trainer.h"

typedef struct faults {
    long long nan_step;   /* the step to poison; 0: none */
    int nan_grad;         /* 1: a gradient, 0: rank 0's loss */
    long long stall_step; /* the step in which stall_rank stalls; 0: none */
    int stall_rank;
    double stall_s; /* < 0: for ever */
    int slow_rank;  /* -1: none */
    double slow_ms;
} faults;

/* Parses "N:loss" / "N:grad"; -1 when malformed. */
static int parse_nan(const char *v, faults *f)
{
    char kind[8] = "";
    if (sscanf(v, "%lld:%7s", &f->nan_step, kind) != 2 || f->nan_step < 1) return -1;
    if (strcmp(kind, "grad") == 0)
        f->nan_grad = 1;
    else if (strcmp(kind, "loss") == 0)
        f->nan_grad = 0;
    else
        return -1;
    return 0;
}

/* Parses "N:R" / "N:R:SECONDS"; -1 when malformed. */
static int parse_stall(const char *v, faults *f)
{
    double s = -1.0;
    int n = sscanf(v, "%lld:%d:%lf", &f->stall_step, &f->stall_rank, &s);
    if (n < 2 || f->stall_step < 1 || f->stall_rank < 0 || (n == 3 && !(s >= 0))) return -1;
    f->stall_s = n == 3 ? s : -1.0;
    return 0;
}

/* Parses "R:MS"; -1 when malformed. */
static int parse_slow(const char *v, faults *f)
{
    if (sscanf(v, "%d:%lf", &f->slow_rank, &f->slow_ms) != 2 || f->slow_rank < 0 ||
        !(f->slow_ms >= 0))
        return -1;
    return 0;
}

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

/* fm_trainer_test_hooks.after_allreduce: poisons the configured step. */
static fm_status inject_nan(void *ctx, fm_trainer *t, int64_t step, double *loss)
{
    const faults *f = ctx;
    if (step != f->nan_step) return NULL;
    if (!f->nan_grad) {
        if (fm_trainer_comm(t)->rank == 0) *loss = NAN;
        return NULL;
    }
    fm_model *m = fm_trainer_model(t);
    fm_backend *be = fm_model_get_backend(m);
    const float nan = NAN;
    return be->ops->upload(be, fm_model_grads(m), &nan, sizeof nan);
}

/* fm_trainer_test_hooks.before_compute: the straggler and the stall. */
static fm_status slow_or_stall(void *ctx, fm_trainer *t, int64_t step)
{
    const faults *f = ctx;
    int rank = fm_trainer_comm(t)->rank;
    if (rank == f->slow_rank && f->slow_ms > 0) sleep_s(f->slow_ms / 1e3);
    if (step != f->stall_step || rank != f->stall_rank) return NULL;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    fprintf(stderr, "fmtrain_faults: rank %d stalls in step %lld at %.3f\n", rank, (long long)step,
            (double)now.tv_sec + now.tv_nsec * 1e-9);
    fflush(stderr);
    if (f->stall_s >= 0) {
        sleep_s(f->stall_s);
        return NULL;
    }
    for (;;) sleep_s(3600.0);
}

/* FMTRAIN_TEST_CKPT_WRITE. */
typedef struct ckpt_write_fault {
    double delay_s;      /* > 0: wait this long */
    long long fill_step; /* > 0: fill the disk before the write of this step */
    char fill_file[2048];
} ckpt_write_fault;

/* Writes `path` until its file system is full, then gives 64 KiB back: room for the run's logs for
 * a few steps, none for a checkpoint. */
static void fill_disk(const char *path)
{
    int out = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    static char block[65536];
    while (out >= 0 && write(out, block, sizeof block) > 0) {
    }
    while (out >= 0 && write(out, block, 512) > 0) {
    }
    off_t end = out >= 0 ? lseek(out, 0, SEEK_END) : 0;
    if (out >= 0 && end > 65536 && ftruncate(out, end - 65536) != 0) {
    }
    if (out >= 0) close(out);
}

/* fm_checkpoint_async_test_fn: runs on each rank's writer thread before it writes. */
static fm_status before_background_write(void *ctx, int rank, int64_t step, const char *tmp_path)
{
    const ckpt_write_fault *w = ctx;
    (void)tmp_path;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    fprintf(stderr, "fmtrain_faults: rank %d: background write of step %lld starts at %.3f\n", rank,
            (long long)step, (double)now.tv_sec + now.tv_nsec * 1e-9);
    if (w->delay_s > 0) sleep_s(w->delay_s);
    if (w->fill_step > 0 && step == w->fill_step) {
        fill_disk(w->fill_file);
        clock_gettime(CLOCK_REALTIME, &now);
        fprintf(stderr, "fmtrain_faults: disk filled at %.3f\n",
                (double)now.tv_sec + now.tv_nsec * 1e-9);
    }
    return NULL;
}

/* Parses "delay:SECONDS" / "fill:STEP:FILE"; -1 when malformed. */
static int parse_ckpt_write(const char *v, ckpt_write_fault *w)
{
    int n = 0;
    if (sscanf(v, "delay:%lf%n", &w->delay_s, &n) == 1 && v[n] == '\0' && w->delay_s > 0) return 0;
    w->delay_s = 0;
    n = 0;
    if (sscanf(v, "fill:%lld:%n", &w->fill_step, &n) == 1 && n > 0 && w->fill_step > 0 && v[n] &&
        strlen(v + n) < sizeof w->fill_file) {
        strcpy(w->fill_file, v + n);
        return 0;
    }
    return -1;
}

/* FMTRAIN_TEST_FILL: the watcher thread. */
typedef struct filler {
    char dir[2048];
    char file[2048];
} filler;

static void *fill_when_created(void *arg)
{
    const filler *fl = arg;
    int fd = inotify_init();
    if (fd < 0 || inotify_add_watch(fd, fl->dir, IN_CREATE) < 0) {
        fprintf(stderr, "fmtrain_faults: cannot watch %s: %s\n", fl->dir, strerror(errno));
        return NULL;
    }
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0) return NULL;
        for (char *p = buf; p < buf + n;) {
            const struct inotify_event *ev = (const struct inotify_event *)p;
            size_t len = ev->len ? strlen(ev->name) : 0;
            if (len > 7 && strcmp(ev->name + len - 7, ".h5.tmp") == 0) {
                int out = open(fl->file, O_WRONLY | O_CREAT | O_APPEND, 0644);
                static char block[65536];
                while (out >= 0 && write(out, block, sizeof block) > 0) {
                }
                while (out >= 0 && write(out, block, 512) > 0) {
                }
                if (out >= 0) close(out);
                struct timespec now;
                clock_gettime(CLOCK_REALTIME, &now);
                fprintf(stderr, "fmtrain_faults: disk filled at %.3f\n",
                        (double)now.tv_sec + now.tv_nsec * 1e-9);
                close(fd);
                return NULL;
            }
            p += sizeof *ev + ev->len;
        }
    }
}

int main(int argc, char **argv)
{
    faults f = {0, 0, 0, 0, -1.0, -1, 0.0};
    const char *nan = getenv("FMTRAIN_TEST_NAN_STEP"), *stall = getenv("FMTRAIN_TEST_STALL"),
               *slow = getenv("FMTRAIN_TEST_SLOW");
    if (nan && *nan && parse_nan(nan, &f) != 0) {
        fprintf(stderr,
                "fmtrain_faults: FMTRAIN_TEST_NAN_STEP = '%s': expected STEP:loss or STEP:grad\n",
                nan);
        return 2;
    }
    if (stall && *stall && parse_stall(stall, &f) != 0) {
        fprintf(stderr, "fmtrain_faults: FMTRAIN_TEST_STALL = '%s': expected STEP:RANK[:SECONDS]\n",
                stall);
        return 2;
    }
    if (slow && *slow && parse_slow(slow, &f) != 0) {
        fprintf(stderr, "fmtrain_faults: FMTRAIN_TEST_SLOW = '%s': expected RANK:MILLISECONDS\n",
                slow);
        return 2;
    }
    const char *fill = getenv("FMTRAIN_TEST_FILL");
    static filler fl;
    if (fill && *fill) {
        const char *colon = strchr(fill, ':');
        if (!colon || colon == fill || !colon[1] || (size_t)(colon - fill) >= sizeof fl.dir ||
            strlen(colon + 1) >= sizeof fl.file) {
            fprintf(stderr, "fmtrain_faults: FMTRAIN_TEST_FILL = '%s': expected DIR:FILE\n", fill);
            return 2;
        }
        memcpy(fl.dir, fill, (size_t)(colon - fill));
        strcpy(fl.file, colon + 1);
        pthread_t th;
        if (pthread_create(&th, NULL, fill_when_created, &fl) != 0) return 2;
        pthread_detach(th);
    }
    const char *cw = getenv("FMTRAIN_TEST_CKPT_WRITE");
    static ckpt_write_fault wf;
    if (cw && *cw) {
        if (parse_ckpt_write(cw, &wf) != 0) {
            fprintf(stderr,
                    "fmtrain_faults: FMTRAIN_TEST_CKPT_WRITE = '%s': expected delay:SECONDS or "
                    "fill:STEP:FILE\n",
                    cw);
            return 2;
        }
        fm_checkpoint_async_set_test_hook(before_background_write, &wf);
    }
    int compute = f.stall_step > 0 || f.slow_rank >= 0;
    fm_trainer_test_hooks trainer_hooks = {f.nan_step > 0 ? inject_nan : NULL,
                                           compute ? slow_or_stall : NULL, &f, NULL};
    fm_main_hooks hooks = {&trainer_hooks};
    return fm_main(argc, argv, &hooks);
}

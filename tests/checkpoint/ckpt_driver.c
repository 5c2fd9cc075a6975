/* ckpt_driver.c — drives the checkpoint file layer for the fault tests (run under mpiexec).
 *
 *   ckpt_driver write RUN_DIR FIRST LAST LAYERS [--keep K] [--fsize-limit BYTES]
 *       writes checkpoints of steps FIRST..LAST into RUN_DIR/checkpoints (synthetic GPT-2-shaped
 *       params/adam_m/adam_v, V 2000, C 256, LAYERS layers: 6.3 MB + 9.4 MB per layer; the content
 *       of step s is pattern s), keep_last K (default 2). --fsize-limit sets RLIMIT_FSIZE (a write
 *       beyond it fails with EFBIG: the fallback for the full-disk test where tmpfs cannot be
 *       mounted). Prints "wrote step S" after each commit; on error prints the message and exits
 *       with the error's exit code.
 *   ckpt_driver check RUN_DIR LAYERS
 *       resume = auto over RUN_DIR/checkpoints (fm_checkpoint_load_newest): loads the newest
 *       checkpoint that verifies, checks that its tensors equal pattern <its step>, prints
 *       "loaded step S" (or "no checkpoint"). Warnings about damaged files go to stderr. */
#define _POSIX_C_SOURCE 200809L
#include <mpi.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "checkpoint/ckpt_test_util.h"
#include "ckpt/checkpoint_dir.h"
#include "ckpt/checkpoint_file.h"

#define FORMAT "fmtrain-test-checkpoint"

typedef struct check_ctx {
    int layers;
    int64_t step;
} check_ctx;

static fm_status load_and_check(void *user, const char *path)
{
    check_ctx *c = user;
    ckpt_synth s;
    if (ckpt_synth_gpt2(&s, 2000, 256, c->layers, 64, 0) != 0) return FM_ERR(FM_ERR_NOMEM, "oom");
    fm_checkpoint_file *f = NULL;
    fm_status st = fm_checkpoint_file_open(MPI_COMM_WORLD, path, FORMAT, NULL, NULL, &f);
    int64_t step = -1;
    if (!st) st = fm_checkpoint_file_get_attr_i64(f, "/", "step", &step);
    if (!st) st = fm_checkpoint_file_read_groups(f, s.groups, 3, 1);
    fm_checkpoint_file_close(&f);
    if (!st && ckpt_synth_check(&s, (uint64_t)step) != -1)
        st = FM_ERR(FM_ERR_INTERNAL, "%s: verified checksums but wrong content", path);
    if (!st) c->step = step;
    ckpt_synth_free(&s);
    return st;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    fm_status st = NULL;
    int rc = 0;
    if (argc >= 6 && strcmp(argv[1], "write") == 0) {
        const char *run = argv[2];
        long long first = atoll(argv[3]), last = atoll(argv[4]);
        int layers = atoi(argv[5]), keep = 2;
        for (int i = 6; i + 1 < argc; i += 2) {
            if (!strcmp(argv[i], "--keep")) keep = atoi(argv[i + 1]);
            if (!strcmp(argv[i], "--fsize-limit")) {
                struct rlimit rl = {(rlim_t)atoll(argv[i + 1]), (rlim_t)atoll(argv[i + 1])};
                signal(SIGXFSZ, SIG_IGN); /* the write fails with EFBIG instead of killing us */
                setrlimit(RLIMIT_FSIZE, &rl);
            }
        }
        fm_checkpoint_io_opts io = {1 << 20, NULL, 0};
        for (long long step = first; step <= last && !st; step++) {
            ckpt_synth s;
            if (ckpt_synth_gpt2(&s, 2000, 256, layers, 64, (uint64_t)step) != 0) {
                st = FM_ERR(FM_ERR_NOMEM, "oom");
                break;
            }
            char path[4200];
            st = fm_checkpoint_dir_file_path(run, step, path, sizeof path);
            fm_checkpoint_file *f = NULL;
            if (!st) st = fm_checkpoint_file_create(MPI_COMM_WORLD, path, FORMAT, 1, &io, &f);
            if (!st) st = fm_checkpoint_file_attr_i64(f, "/", "step", step);
            if (!st) st = fm_checkpoint_file_write_groups(f, s.groups, 3);
            if (st)
                fm_checkpoint_file_abort(&f);
            else
                st = fm_checkpoint_file_commit(&f, keep, NULL);
            ckpt_synth_free(&s);
            if (!st && rank == 0) {
                printf("wrote step %lld\n", step);
                fflush(stdout);
            }
        }
    } else if (argc == 4 && strcmp(argv[1], "check") == 0) {
        check_ctx c = {atoi(argv[3]), -1};
        char dir[4200], path[4300];
        st = fm_checkpoint_dir_of_run(argv[2], dir, sizeof dir);
        int64_t step = -1;
        if (!st)
            st = fm_checkpoint_load_newest(MPI_COMM_WORLD, dir, load_and_check, &c,
                                           rank == 0 ? stderr : NULL, &step, path, sizeof path);
        if (!st && rank == 0) {
            if (step >= 0)
                printf("loaded step %lld from %s\n", (long long)step, path);
            else
                printf("no checkpoint\n");
        }
    } else {
        if (rank == 0)
            fprintf(stderr, "usage: ckpt_driver write RUN_DIR FIRST LAST LAYERS [--keep K] "
                            "[--fsize-limit BYTES] | check RUN_DIR LAYERS\n");
        rc = 2;
    }
    if (st) {
        if (rank == 0 || !fm_status_is_collective(st)) fm_status_print(st, stderr, 0);
        rc = fm_status_exit_code(st);
        fm_status_free(&st);
    }
    MPI_Finalize();
    return rc;
}

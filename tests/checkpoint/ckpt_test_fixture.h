/* ckpt_test_fixture.h — the CMocka fixture shared by the checkpoint tests under MPI (test_file.c,
 * test_async_writer.c): this process's rank and the world size, a fresh temporary run directory per
 * test (made by rank 0, its name broadcast, removed after the test by rank 0 between barriers), the
 * checkpoint file path of a step in it, and a status check that names the rank. Header-only: it
 * defines the fixture's state, so one test program includes it once (after <cmocka.h>).
 * CKPT_TEST_DIR_NAME, defined before the include, names the directories (leftovers show which test
 * made them). The synthetic tensors are in ckpt_test_util.h (shared with the driver and the
 * benchmark, which have no CMocka). */
#ifndef FM_CKPT_TEST_FIXTURE_H
#define FM_CKPT_TEST_FIXTURE_H

#include <ftw.h> /* needs _XOPEN_SOURCE >= 500 before the first system header */
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "ckpt/checkpoint_dir.h"
#include "core/status.h"

#ifndef CKPT_TEST_DIR_NAME
#define CKPT_TEST_DIR_NAME "fmckpt-test"
#endif

/* the format name the checkpoint tests write and expect */
#define CKPT_TEST_FORMAT "fmtrain-test-checkpoint"

static int g_rank, g_size; /* MPI_COMM_WORLD; set by the test's main after MPI_Init */
static char g_dir[256];    /* the current test's run directory (setup_dir), the same on every rank */

/* Fails the test on an error, printing it with this rank's number. */
static void expect_ok(fm_status st)
{
    if (st) {
        fprintf(stderr, "rank %d: unexpected error: %s\n", g_rank, fm_status_message(st));
        fm_status_free(&st);
        fail();
    }
}

static int ckpt_test_rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

/* CMocka setup: a new directory $TMPDIR (or /tmp)/CKPT_TEST_DIR_NAME-XXXXXX in g_dir on every rank. */
static int setup_dir(void **state)
{
    (void)state;
    if (g_rank == 0) {
        const char *tmp = getenv("TMPDIR");
        snprintf(g_dir, sizeof g_dir, "%s/" CKPT_TEST_DIR_NAME "-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
        if (!mkdtemp(g_dir)) return -1;
    }
    MPI_Bcast(g_dir, sizeof g_dir, MPI_CHAR, 0, MPI_COMM_WORLD);
    return 0;
}

/* CMocka teardown: removes g_dir and all in it once every rank is done with it. */
static int teardown_dir(void **state)
{
    (void)state;
    MPI_Barrier(MPI_COMM_WORLD);
    if (g_rank == 0) nftw(g_dir, ckpt_test_rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    MPI_Barrier(MPI_COMM_WORLD);
    return 0;
}

/* The path of step `step`'s checkpoint file in g_dir. */
static void ckpt_path(char *buf, size_t n, int64_t step)
{
    expect_ok(fm_checkpoint_dir_file_path(g_dir, step, buf, n));
}

#endif /* FM_CKPT_TEST_FIXTURE_H */

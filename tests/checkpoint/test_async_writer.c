/* test_async_writer.c — the background writer (src/ckpt/async.h) on synthetic GPT-2-shaped
 * buffers, 2 ranks (and 1): a file staged, launched and settled while the live buffers change is
 * bit-identical in its tensors and CRCs to one written synchronously from the snapshot's content;
 * settle without waiting publishes only once every rank is done; a write that fails on one rank
 * (the test hook) is the same error on every rank and publishes nothing; the buffer is reused. */
#define _XOPEN_SOURCE 700
#include <hdf5.h>
#include <mpi.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define CKPT_TEST_DIR_NAME "fmasync-test"
#include "checkpoint/ckpt_test_fixture.h"
#include "checkpoint/ckpt_test_util.h"
#include "ckpt/async.h"
#include "ckpt/checkpoint_file.h"
#include "dist/comm.h"
#include "kernels.h"

static MPI_Comm g_comm = MPI_COMM_NULL;
static fm_backend *g_be;

/* What the test hook does: delay (seconds) on every rank, fail on rank `fail_rank` (-1: none). */
typedef struct hook_plan {
    double delay_s;
    int fail_rank;
    int calls;
} hook_plan;

static fm_status hook(void *ctx, int rank, int64_t step, const char *tmp_path)
{
    hook_plan *p = ctx;
    (void)step;
    p->calls++;
    if (p->delay_s > 0) {
        struct timespec ts = {0, (long)(p->delay_s * 1e9)};
        nanosleep(&ts, NULL);
    }
    if (rank == p->fail_rank)
        return FM_ERR(FM_ERR_IO, "injected failure writing %s (No space left on device)", tmp_path);
    return NULL;
}

/* Stages and launches pattern `seed` as step `step`, then overwrites the live buffers (training
 * goes on). */
static void start_write(fm_checkpoint_async *a, ckpt_synth *s, int64_t step, uint64_t seed)
{
    char path[512];
    ckpt_path(path, sizeof path, step);
    fm_checkpoint_io_opts io = {1 << 16, NULL, 0};
    fm_checkpoint_file *f = NULL;
    expect_ok(fm_checkpoint_file_create(g_comm, path, CKPT_TEST_FORMAT, 1, &io, &f));
    expect_ok(fm_checkpoint_async_stage(a, f, s->groups, 3, g_be));
    expect_ok(fm_checkpoint_file_attr_i64(f, "/", "step", step));
    expect_ok(fm_checkpoint_file_write_text(f, "/config", "[run]\nname = test\n"));
    expect_ok(fm_checkpoint_async_launch(a, &f, step, 5, 0, 0.0));
    assert_null(f);
    assert_true(fm_checkpoint_async_in_flight(a));
    for (int g = 0; g < 3; g++)
        for (size_t i = 0; i < s->numel; i++) s->buf[g][i] = ckpt_value(seed + 1000, g, i);
}

/* Reads step `step` back (CRCs verified by read_groups) and compares with pattern `seed`. */
static void expect_file(int64_t step, uint64_t seed)
{
    ckpt_synth r;
    assert_int_equal(ckpt_synth_gpt2(&r, 300, 16, 2, 12, 0), 0);
    char path[512];
    ckpt_path(path, sizeof path, step);
    fm_checkpoint_file *f = NULL;
    expect_ok(fm_checkpoint_file_open(g_comm, path, CKPT_TEST_FORMAT, NULL, NULL, &f));
    expect_ok(fm_checkpoint_file_read_groups(f, r.groups, 3, 1));
    int checked = 0, failed = 0;
    expect_ok(fm_checkpoint_file_verify(f, NULL, NULL, &checked, &failed));
    assert_int_equal(failed, 0);
    assert_true(checked >= 3 * r.ntensors);
    fm_checkpoint_file_close(&f);
    assert_int_equal(ckpt_synth_check(&r, seed), -1);
    ckpt_synth_free(&r);
}

static void test_roundtrip(void **state)
{
    (void)state;
    hook_plan plan = {0.2, -1, 0};
    fm_checkpoint_async_set_test_hook(hook, &plan);
    fm_checkpoint_async *a = NULL;
    expect_ok(fm_checkpoint_async_create(g_comm, &a));
    ckpt_synth s;
    assert_int_equal(ckpt_synth_gpt2(&s, 300, 16, 2, 12, 11), 0);
    for (int k = 0; k < 2; k++) { /* twice: the buffer is reused */
        int64_t step = 10 + k;
        uint64_t seed = 11 + (uint64_t)k * 1000;
        start_write(a, &s, step, seed);
        /* The writer waits 0.2 s: the first question finds it busy on every rank. */
        int published = 1;
        fm_checkpoint_async_result res;
        expect_ok(fm_checkpoint_async_settle(a, 0, NULL, &published, &res));
        assert_int_equal(published, 0);
        char path[512];
        ckpt_path(path, sizeof path, step);
        assert_int_equal(access(path, F_OK), -1); /* not published while in flight */
        for (int i = 0; i < 400 && !published; i++) {
            struct timespec ts = {0, 10 * 1000 * 1000};
            nanosleep(&ts, NULL);
            expect_ok(fm_checkpoint_async_settle(a, 0, NULL, &published, &res));
        }
        assert_int_equal(published, 1);
        assert_false(fm_checkpoint_async_in_flight(a));
        assert_int_equal(res.step, step);
        assert_true(res.tensor_bytes == 3 * s.numel * sizeof(float));
        assert_true(res.write_s > 0 && res.stall_s >= 0);
        expect_file(step, seed);
    }
    /* The same content written synchronously has the same CRCs (and tensors). */
    ckpt_synth w;
    assert_int_equal(ckpt_synth_gpt2(&w, 300, 16, 2, 12, 1011), 0);
    char path[512];
    ckpt_path(path, sizeof path, 99);
    fm_checkpoint_io_opts io = {1 << 16, NULL, 0};
    fm_checkpoint_file *f = NULL;
    expect_ok(fm_checkpoint_file_create(g_comm, path, CKPT_TEST_FORMAT, 1, &io, &f));
    expect_ok(fm_checkpoint_file_write_groups(f, w.groups, 3));
    expect_ok(fm_checkpoint_file_commit(&f, -1, NULL));
    if (g_rank == 0) {
        char p11[512];
        ckpt_path(p11, sizeof p11, 11);
        hid_t fa = H5Fopen(p11, H5F_ACC_RDONLY, H5P_DEFAULT), fb = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
        assert_true(fa >= 0 && fb >= 0);
        for (int t = 0; t < w.ntensors; t++) {
            char d[128];
            snprintf(d, sizeof d, "/adam_v/%s", w.table[t].name);
            uint32_t ca = 0, cb = 1;
            hid_t xa = H5Aopen_by_name(fa, d, "crc32", H5P_DEFAULT, H5P_DEFAULT);
            hid_t xb = H5Aopen_by_name(fb, d, "crc32", H5P_DEFAULT, H5P_DEFAULT);
            H5Aread(xa, H5T_NATIVE_UINT32, &ca);
            H5Aread(xb, H5T_NATIVE_UINT32, &cb);
            H5Aclose(xa);
            H5Aclose(xb);
            assert_int_equal(ca, cb);
        }
        H5Fclose(fa);
        H5Fclose(fb);
    }
    ckpt_synth_free(&w);
    ckpt_synth_free(&s);
    fm_checkpoint_async_free(&a);
    assert_null(a);
    fm_checkpoint_async_set_test_hook(NULL, NULL);
}

static void test_failure_agreed(void **state)
{
    (void)state;
    hook_plan plan = {0.0, g_size - 1, 0};
    fm_checkpoint_async_set_test_hook(hook, &plan);
    fm_checkpoint_async *a = NULL;
    expect_ok(fm_checkpoint_async_create(g_comm, &a));
    ckpt_synth s;
    assert_int_equal(ckpt_synth_gpt2(&s, 300, 16, 2, 12, 5), 0);
    start_write(a, &s, 20, 5);
    int published = 1;
    fm_checkpoint_async_result res;
    fm_status st = fm_checkpoint_async_settle(a, 1, NULL, &published, &res);
    assert_non_null(st);
    assert_int_equal(published, 0);
    assert_true(fm_status_is_collective(st));
    assert_int_equal(fm_status_code(st), FM_ERR_IO);
    assert_non_null(strstr(fm_status_message(st), "step-00000020.h5 not written (the previous "
                                                  "checkpoints are intact): injected failure"));
    fm_status_free(&st);
    assert_false(fm_checkpoint_async_in_flight(a));
    char path[512], tmp[600];
    ckpt_path(path, sizeof path, 20);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    MPI_Barrier(MPI_COMM_WORLD);
    assert_int_equal(access(path, F_OK), -1);
    assert_int_equal(access(tmp, F_OK), -1);
    fm_checkpoint_async_set_test_hook(NULL, NULL);
    /* The writer is usable again. */
    start_write(a, &s, 21, 1005);
    expect_ok(fm_checkpoint_async_settle(a, 1, NULL, &published, &res));
    assert_int_equal(published, 1);
    expect_file(21, 1005);
    ckpt_synth_free(&s);
    fm_checkpoint_async_free(&a);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    fm_status st = fm_comm_dup(MPI_COMM_WORLD, &g_comm);
    if (!st) st = fm_backend_create("cpu", 1, 0, &g_be);
    if (st) {
        fprintf(stderr, "setup: %s\n", fm_status_message(st));
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_roundtrip, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_failure_agreed, setup_dir, teardown_dir),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    fm_backend_free(&g_be);
    fm_comm_dup_free(&g_comm);
    MPI_Finalize();
    return rc;
}

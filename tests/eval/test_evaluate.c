/* test_evaluate.c — train/evaluate.h on 2 ranks (mpiexec -n 2): the loss of the K-window set equals,
 * bit for bit, the same procedure run by one rank alone (every chunk in turn, window losses summed in
 * member order), for several K and B, with the work really split (each rank evaluates only its
 * chunks); K beyond the split means all windows; the train split; errors are the same on every rank.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <mpi.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "dataset/ds_fixture.h"
#include "data/reader.h"
#include "dist/comm.h"
#include "fm_test.h"
#include "kernels.h"
#include "model/model.h"
#include "train/evaluate.h"

enum { T = 8, NV = 30, MAXB = 5 };
static const fm_model_shape SHAPE = {2, 2, 32, T, 256, .arch = "gpt2"};
static int rank, size;
static char path[256], empty[256];

typedef struct fixture {
    fm_comm *comm;
    fm_backend *be;
    fm_model *model;
    fm_reader *reader;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    FM_ASSERT_OK(fm_comm_init(&f->comm));
    FM_ASSERT_OK(fm_backend_create("cpu", 1, 0, &f->be));
    FM_ASSERT_OK(fm_model_create_opts(
        &SHAPE, f->be, &(fm_model_options){.mode = FM_MODEL_EVAL, .max_batch = MAXB}, &f->model));
    FM_ASSERT_OK(fm_model_init_weights(f->model, 5));
    fm_reader_options o = {f->comm->world, T, 0, 0, 0, 0, 0, NULL, 0};
    FM_ASSERT_OK(fm_reader_open(path, &o, &f->reader));
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    fm_reader_free(&f->reader);
    fm_model_free(&f->model);
    fm_backend_free(&f->be);
    fm_comm_free(&f->comm);
    free(f);
    return 0;
}

/* One rank alone: chunks of B members in order, window losses, summed in member order. */
static double reference(fixture *f, fm_dataset_split split, int64_t K, int B)
{
    int32_t win[MAXB * (T + 1)], inp[MAXB * T], tgt[MAXB * T];
    double *loss = calloc((size_t)K, sizeof *loss);
    for (int64_t first = 0; first < K; first += B) {
        int n = (int)(first + B <= K ? B : K - first);
        FM_ASSERT_OK(fm_reader_read_eval(f->reader, split, K, first, n, win));
        for (int b = 0; b < n; b++) {
            memcpy(inp + b * T, win + b * (T + 1), T * sizeof *inp);
            memcpy(tgt + b * T, win + b * (T + 1) + 1, T * sizeof *tgt);
        }
        FM_ASSERT_OK(fm_model_forward(f->model, inp, tgt, n, T, NULL));
        FM_ASSERT_OK(fm_model_sequence_losses(f->model, loss + first));
    }
    double sum = 0;
    for (int64_t k = 0; k < K; k++) sum += loss[k];
    free(loss);
    return sum / (double)K;
}

static void test_rank_count_does_not_matter(void **state)
{
    fixture *f = *state;
    const int64_t Ks[] = {1, 7, 10, 23, NV};
    const int Bs[] = {1, 3, 5};
    for (size_t i = 0; i < sizeof Ks / sizeof *Ks; i++)
        for (size_t j = 0; j < sizeof Bs / sizeof *Bs; j++) {
            fm_eval_options o = {FM_SPLIT_VAL, Ks[i], Bs[j]};
            fm_eval_result r;
            FM_ASSERT_OK(fm_evaluate(f->model, f->reader, f->comm, &o, &r));
            double ref = reference(f, FM_SPLIT_VAL, Ks[i], Bs[j]);
            if (memcmp(&ref, &r.loss, sizeof ref) != 0)
                fail_msg("K %lld, B %d: %.17g on 2 ranks, %.17g on one", (long long)Ks[i], Bs[j],
                         r.loss, ref);
            assert_int_equal(r.windows, Ks[i]);
            assert_int_equal(r.split_windows, NV);
            assert_int_equal(r.tokens, Ks[i] * T);
            assert_true(r.loss > 4.0 && r.loss < 7.0); /* about ln(256) at init */
            /* the same on both ranks */
            double lo = r.loss, hi = r.loss;
            MPI_Allreduce(MPI_IN_PLACE, &lo, 1, MPI_DOUBLE, MPI_MIN, MPI_COMM_WORLD);
            MPI_Allreduce(MPI_IN_PLACE, &hi, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
            assert_memory_equal(&lo, &hi, sizeof lo);
        }
}

/* With B = 1 and K = 2 each rank evaluates exactly one window: rank r's last forward is window
 * member r, so the work was split, not repeated. */
static void test_work_is_split(void **state)
{
    fixture *f = *state;
    fm_eval_options o = {FM_SPLIT_VAL, 2, 1};
    fm_eval_result r;
    FM_ASSERT_OK(fm_evaluate(f->model, f->reader, f->comm, &o, &r));
    double mine = 0;
    FM_ASSERT_OK(fm_model_sequence_losses(f->model, &mine));
    double all[2] = {0, 0};
    MPI_Allgather(&mine, 1, MPI_DOUBLE, all, 1, MPI_DOUBLE, MPI_COMM_WORLD);
    assert_true(all[0] != all[1]); /* two different windows */
    assert_true(fabs((all[0] + all[1]) / 2 - r.loss) <= 1e-15 * r.loss);
}

static void test_all_windows_and_train_split(void **state)
{
    fixture *f = *state;
    fm_eval_options o = {FM_SPLIT_VAL, INT64_MAX, 4};
    fm_eval_result r;
    FM_ASSERT_OK(fm_evaluate(f->model, f->reader, f->comm, &o, &r));
    assert_int_equal(r.windows, NV);
    double ref = reference(f, FM_SPLIT_VAL, NV, 4);
    assert_memory_equal(&ref, &r.loss, sizeof ref);
    o.split = FM_SPLIT_TRAIN;
    o.windows = 9;
    FM_ASSERT_OK(fm_evaluate(f->model, f->reader, f->comm, &o, &r));
    assert_int_equal(r.split_windows, fm_reader_train_windows(f->reader));
    ref = reference(f, FM_SPLIT_TRAIN, 9, 4);
    assert_memory_equal(&ref, &r.loss, sizeof ref);
}

static void test_errors(void **state)
{
    fixture *f = *state;
    fm_eval_result r;
    fm_eval_options bad = {FM_SPLIT_VAL, 3, MAXB + 1};
    fm_status st = fm_evaluate(f->model, f->reader, f->comm, &bad, &r);
    assert_int_equal(fm_status_code(st), FM_ERR_USAGE);
    assert_true(fm_status_is_collective(st));
    fm_status_free(&st);
    /* a file whose val split has no window: the reader's message, on every rank */
    fm_reader *er = NULL;
    fm_reader_options o = {f->comm->world, T, 0, 0, 0, 0, 0, NULL, 0};
    FM_ASSERT_OK(fm_reader_open(empty, &o, &er));
    fm_eval_options eo = {FM_SPLIT_VAL, 3, 2};
    st = fm_evaluate(f->model, er, f->comm, &eo, &r);
    assert_int_equal(fm_status_code(st), FM_ERR_INPUT);
    assert_true(fm_status_is_collective(st));
    assert_non_null(strstr(fm_status_message(st), "has no validation window"));
    fm_status_free(&st);
    fm_reader_free(&er);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (rank == 0) {
        snprintf(path, sizeof path, "/tmp/fm_evaluate_%ld.h5", (long)getpid());
        snprintf(empty, sizeof empty, "/tmp/fm_evaluate_%ld_empty.h5", (long)getpid());
        fm_status st = fixture_write(path, 256, 40 * T + 1, NV * T + 3, NULL);
        if (!st) st = fixture_write(empty, 256, 40 * T + 1, T, NULL);
        if (st) {
            fm_status_print(st, stderr, 1);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
    }
    MPI_Bcast(path, sizeof path, MPI_CHAR, 0, MPI_COMM_WORLD);
    MPI_Bcast(empty, sizeof empty, MPI_CHAR, 0, MPI_COMM_WORLD);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_rank_count_does_not_matter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_work_is_split, setup, teardown),
        cmocka_unit_test_setup_teardown(test_all_windows_and_train_split, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
    };
    int rc = size == 2 ? cmocka_run_group_tests(tests, NULL, NULL) : 1;
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) {
        unlink(path);
        unlink(empty);
    }
    MPI_Finalize();
    return rc;
}

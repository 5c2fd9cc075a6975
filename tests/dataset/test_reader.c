/* test_reader.c — the reader on 2 ranks (mpiexec -n 2): both ranks open the file with parallel
 * HDF5 and read their slices; the global sequence of windows equals the 1-rank sequence, slices are
 * disjoint and together cover each epoch exactly once; the evaluation windows agree; state restore on 2
 * ranks continues a 1-rank run; open errors are reported on every rank; the tokenizer can be saved
 * collectively into an MPI-IO file. */
#define _POSIX_C_SOURCE 200809L
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

static int rank, size;
static char path[256];

enum { T = 12, G = 10, STEPS = 30 };
#define NWIN 100 /* windows: 10 steps per epoch */

static fm_reader_options opts(MPI_Comm comm, int64_t first, int64_t count, int ra)
{
    fm_reader_options o;
    memset(&o, 0, sizeof o);
    o.comm = comm;
    o.seq_len = T;
    o.global_windows = G;
    o.first = first;
    o.count = count;
    o.seed = 2024;
    o.read_ahead = ra;
    return o;
}

/* The 1-rank reference: window index of (step, j), read with a COMM_SELF reader on rank 0. */
static int64_t ref[STEPS][G];

static void read_reference(void)
{
    if (rank == 0) {
        fm_reader_options o = opts(MPI_COMM_SELF, 0, G, 1);
        fm_reader *r = NULL;
        FIX_OK(fm_reader_open(path, &o, &r));
        int32_t tok[G * (T + 1)];
        for (int s = 0; s < STEPS; s++) {
            FIX_OK(fm_reader_next(r, tok));
            for (int j = 0; j < G; j++) ref[s][j] = tok[j * (T + 1)] / T;
        }
        fm_reader_free(&r);
    }
    MPI_Bcast(ref, STEPS * G, MPI_INT64_T, 0, MPI_COMM_WORLD);
}

/* Rank r reads slice [first_r, first_r + count_r) of every step; uneven slices on purpose. */
static void slice_of(int r, int64_t *first, int64_t *count)
{
    *first = r == 0 ? 0 : 3;
    *count = r == 0 ? 3 : G - 3;
}

static void test_global_sequence(void **state)
{
    (void)state;
    read_reference();
    for (int ra = 0; ra <= 1; ra++) {
        int64_t first, count;
        slice_of(rank, &first, &count);
        fm_reader_options o = opts(MPI_COMM_WORLD, first, count, ra);
        fm_reader *r = NULL;
        FIX_OK(fm_reader_open(path, &o, &r));
        int32_t tok[G * (T + 1)];
        int64_t mine[G], all[G];
        int counts[2], displs[2];
        for (int q = 0; q < 2; q++) {
            int64_t f, c;
            slice_of(q, &f, &c);
            counts[q] = (int)c;
            displs[q] = (int)f;
        }
        unsigned char seen[NWIN];
        for (int s = 0; s < STEPS; s++) {
            if (s % (NWIN / G) == 0) memset(seen, 0, sizeof seen);
            FIX_OK(fm_reader_next(r, tok));
            for (int j = 0; j < count; j++) {
                for (int i = 1; i <= T; i++) assert_int_equal(tok[j * (T + 1) + i], tok[j * (T + 1)] + i);
                mine[j] = tok[j * (T + 1)] / T;
            }
            MPI_Allgatherv(mine, (int)count, MPI_INT64_T, all, counts, displs, MPI_INT64_T, MPI_COMM_WORLD);
            for (int j = 0; j < G; j++) {
                assert_int_equal(all[j], ref[s][j]); /* same global sequence as 1 rank */
                assert_false(seen[all[j]]);          /* disjoint across ranks, once per epoch */
                seen[all[j]] = 1;
            }
            if (s % (NWIN / G) == NWIN / G - 1)
                for (int w = 0; w < NWIN; w++) assert_true(seen[w]);
        }
        fm_reader_free(&r);
    }
}

static void test_restore_on_other_rank_count(void **state)
{
    (void)state;
    /* 1 rank runs 7 steps and saves its state; 2 ranks restore it and continue the reference */
    fm_reader_state saved;
    if (rank == 0) {
        fm_reader_options o = opts(MPI_COMM_SELF, 0, G, 1);
        fm_reader *r = NULL;
        FIX_OK(fm_reader_open(path, &o, &r));
        int32_t tok[G * (T + 1)];
        for (int s = 0; s < 7; s++) FIX_OK(fm_reader_next(r, tok));
        fm_reader_get_state(r, &saved);
        fm_reader_free(&r);
    }
    MPI_Bcast(&saved, sizeof saved, MPI_BYTE, 0, MPI_COMM_WORLD);
    int64_t first, count;
    slice_of(rank, &first, &count);
    fm_reader_options o = opts(MPI_COMM_WORLD, first, count, 1);
    o.seed = 1; /* replaced by the restored state */
    fm_reader *r = NULL;
    FIX_OK(fm_reader_open(path, &o, &r));
    FIX_OK(fm_reader_set_state(r, &saved));
    int32_t tok[G * (T + 1)];
    for (int s = 7; s < 15; s++) {
        FIX_OK(fm_reader_next(r, tok));
        for (int j = 0; j < count; j++) assert_int_equal(tok[j * (T + 1)] / T, ref[s][first + j]);
    }
    fm_reader_free(&r);
}

/* The evaluation set depends on the file, T and K only: on 2 ranks with any slice of the training
 * stream, each rank reads the same windows floor(k*Nv/K) that the formula (and one rank) gives. */
static void test_validation_same_for_rank_counts(void **state)
{
    (void)state;
    int64_t first, count;
    slice_of(rank, &first, &count);
    fm_reader_options o = opts(MPI_COMM_WORLD, first, count, 1);
    fm_reader *r = NULL;
    FIX_OK(fm_reader_open(path, &o, &r));
    int64_t nv = fm_reader_val_windows(r);
    assert_true(nv > 7);
    enum { K = 7 };
    int32_t tok[K * (T + 1)];
    /* rank r reads the members r, r+2, ...: one at a time, as an evaluation's chunks would */
    for (int64_t k = rank; k < K; k += size) {
        FIX_OK(fm_reader_read_eval(r, FM_SPLIT_VAL, K, k, 1, tok));
        int64_t w = k * nv / K;
        assert_int_equal(tok[0], (int32_t)((1u << 20) - 1 - (uint64_t)w * T));
    }
    /* and every member at once */
    FIX_OK(fm_reader_read_eval(r, FM_SPLIT_VAL, K, 0, K, tok));
    for (int64_t k = 0; k < K; k++)
        assert_int_equal(tok[k * (T + 1)], (int32_t)((1u << 20) - 1 - (uint64_t)(k * nv / K) * T));
    fm_reader_free(&r);
}

static void test_errors_on_every_rank(void **state)
{
    (void)state;
    fm_reader_options o = opts(MPI_COMM_WORLD, rank * 5, 5, 1);
    fm_reader *r = NULL;
    char missing[300];
    snprintf(missing, sizeof missing, "%s.missing", path);
    fm_status st = fm_reader_open(missing, &o, &r);
    assert_non_null(st);
    assert_int_equal(fm_status_code(st), FM_ERR_INPUT);
    assert_true(fm_status_is_collective(st));
    assert_non_null(strstr(fm_status_message(st), ".missing"));
    fm_status_free(&st);
    o.vocab_size = 12345;
    st = fm_reader_open(path, &o, &r);
    assert_non_null(st);
    assert_non_null(strstr(fm_status_message(st), "vocab_size"));
    fm_status_free(&st);
    assert_null(r);
}

/* fm_tokenizer_save into a file opened with the MPI-IO driver is collective; the result loads back
 * identically (the checkpoint module stores the tokenizer this way). */
static void test_tokenizer_save_parallel(void **state)
{
    (void)state;
    const char *text = "parallel files need collective metadata; every rank writes the same tokenizer";
    fm_tokenizer *tok = NULL, *back = NULL;
    FIX_OK(fm_tokenizer_train((const uint8_t *)text, strlen(text), 300, &tok));
    char p[300];
    snprintf(p, sizeof p, "%s.tok.h5", path);
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_fapl_mpio(fapl, MPI_COMM_WORLD, MPI_INFO_NULL);
    hid_t f = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    assert_true(f >= 0);
    FIX_OK(fm_tokenizer_save(tok, f, "tokenizer"));
    assert_true(H5Fclose(f) >= 0);
    MPI_Barrier(MPI_COMM_WORLD);
    f = H5Fopen(p, H5F_ACC_RDONLY, H5P_DEFAULT); /* each rank, serially */
    assert_true(f >= 0);
    FIX_OK(fm_tokenizer_load(f, "tokenizer", &back));
    H5Fclose(f);
    for (uint32_t id = 0; id < 300; id++) {
        size_t la, lb;
        const uint8_t *a = fm_tokenizer_token(tok, id, &la), *b = fm_tokenizer_token(back, id, &lb);
        assert_int_equal(la, lb);
        assert_memory_equal(a, b, la);
    }
    fm_tokenizer_free(&tok);
    fm_tokenizer_free(&back);
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) unlink(p);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    if (rank == 0) {
        snprintf(path, sizeof path, "/tmp/fm_reader_mpi_%ld.h5", (long)getpid());
        fm_status st = fixture_write(path, 1u << 20, (uint64_t)NWIN * T + 1, 40 * T + 1, NULL);
        if (st) {
            fm_status_print(st, stderr, 1);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
    }
    MPI_Bcast(path, sizeof path, MPI_CHAR, 0, MPI_COMM_WORLD);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_global_sequence),
        cmocka_unit_test(test_restore_on_other_rank_count),
        cmocka_unit_test(test_validation_same_for_rank_counts),
        cmocka_unit_test(test_errors_on_every_rank),
        cmocka_unit_test(test_tokenizer_save_parallel),
    };
    int rc = size == 2 ? cmocka_run_group_tests(tests, NULL, NULL) : 1;
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) unlink(path);
    MPI_Finalize();
    return rc;
}

/* test_dataset.c — dataset file format and the reader on one rank: writer/probe round trip, the
 * sampling rule (each window once per epoch, epoch boundary), read-ahead == synchronous reads,
 * state save/restore, validation batches, every open error, and the "a step waits on I/O < 1 % of
 * its time" figure (damaged files: test_damage.c). Runs under mpiexec -n 1. */
#define _POSIX_C_SOURCE 200809L
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

#include "dataset/ds_fixture.h"
#include "data/reader.h"
#include "dataset/ds_unit.h"
#include "data/tokenizer.h"
#include "core/util.h"

static char dir[256];

static void path_in(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", dir, name); }

static void test_write_probe(void **state)
{
    (void)state;
    char p[300];
    path_in(p, sizeof p, "probe.h5");
    FIX_OK(fixture_write(p, 1000, 5000, 700, NULL));
    fm_dataset_info info;
    FIX_OK(fm_dataset_probe(p, &info));
    assert_int_equal(info.format_version, FM_DATASET_VERSION);
    assert_int_equal(info.vocab_size, 1000);
    assert_int_equal(info.eot_id, 999);
    assert_int_equal(info.train_tokens, 5000);
    assert_int_equal(info.val_tokens, 700);
    assert_int_equal(info.token_bytes, 2);
    assert_int_equal(info.has_tokenizer, 0);
    assert_string_equal(info.tokenizer_kind, "none");
    assert_string_equal(info.source, "test fixture");
    char fmt[64];
    FIX_OK(fm_dataset_file_format(p, fmt, sizeof fmt));
    assert_string_equal(fmt, FM_DATASET_FORMAT);
    /* wide vocabulary -> uint32 */
    path_in(p, sizeof p, "wide.h5");
    FIX_OK(fixture_write(p, 70000, 100, 10, NULL));
    FIX_OK(fm_dataset_probe(p, &info));
    assert_int_equal(info.token_bytes, 4);
    /* with a tokenizer */
    const char *text = "to be or not to be, that is the question; to be is to do, to do is to be";
    fm_tokenizer *tok = NULL;
    FIX_OK(fm_tokenizer_train((const uint8_t *)text, strlen(text), 270, &tok));
    path_in(p, sizeof p, "withtok.h5");
    FIX_OK(fixture_write(p, 270, 300, 30, tok));
    FIX_OK(fm_dataset_probe(p, &info));
    assert_int_equal(info.has_tokenizer, 1);
    assert_string_equal(info.tokenizer_kind, FM_TOKENIZER_KIND);
    fm_tokenizer_free(&tok);
    /* writer errors */
    fm_dataset_writer *w = NULL;
    path_in(p, sizeof p, "bad.h5");
    FIX_OK(fm_dataset_writer_open(p, 500, 499, NULL, "x", &w));
    uint32_t ids[3] = {1, 2, 500};
    fixture_expect_error(fm_dataset_writer_append(w, FM_SPLIT_TRAIN, ids, 3), FM_ERR_INPUT, "offset 2");
    fm_dataset_writer_free(&w);
    fixture_expect_error(fm_dataset_writer_open(p, 255, 0, NULL, "x", &w), FM_ERR_USAGE, "out of range");
    fixture_expect_error(fm_dataset_writer_open(p, 300, 300, NULL, "x", &w), FM_ERR_USAGE, "end-of-text");
    fixture_expect_error(fm_dataset_writer_open("/nonexistent-dir/x.h5", 300, 1, NULL, "x", &w), FM_ERR_IO,
                 "/nonexistent-dir/x.h5");
}

static void test_permute_bijection(void **state)
{
    (void)state;
    uint64_t ns[] = {1, 2, 3, 5, 16, 17, 100, 1000, 4097};
    for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
        uint64_t n = ns[k];
        unsigned char *seen = calloc(n, 1);
        for (uint64_t e = 0; e < 3; e++) {
            memset(seen, 0, n);
            for (uint64_t p = 0; p < n; p++) {
                uint64_t w = fm_reader_permute(42, e, p, n);
                assert_true(w < n);
                assert_false(seen[w]);
                seen[w] = 1;
            }
        }
        free(seen);
    }
    /* different epochs and seeds give different orders */
    int same_e = 1, same_s = 1;
    for (uint64_t p = 0; p < 1000; p++) {
        if (fm_reader_permute(1, 0, p, 1000) != fm_reader_permute(1, 1, p, 1000)) same_e = 0;
        if (fm_reader_permute(1, 0, p, 1000) != fm_reader_permute(2, 0, p, 1000)) same_s = 0;
    }
    assert_false(same_e);
    assert_false(same_s);
}

/* The data order is part of the contract (dataset.h; resuming and reproducing runs rely on it): these
 * values were computed by an independent Python implementation of the rule (splitmix64 keys, 4-round
 * Feistel, cycle walking), so a change to the permutation or to core/rng.h fails here. */
static void test_permute_pinned(void **state)
{
    (void)state;
    const uint64_t a[8] = {475, 733, 606, 835, 824, 493, 551, 838};
    for (uint64_t p = 0; p < 8; p++) assert_int_equal(fm_reader_permute(42, 3, p, 1000), a[p]);
    const uint64_t b[4] = {100554, 110852, 32477, 101602};
    for (uint64_t p = 0; p < 4; p++) assert_int_equal(fm_reader_permute(0xfeedbeef, 0, p, 123457), b[p]);
}

/* Window index from its content: train token k = k % vocab (vocab large enough to be exact). */
static uint64_t window_of(const int32_t *w, int T) { return (uint64_t)w[0] / (uint64_t)T; }

static void check_window(const int32_t *w, int T)
{
    for (int i = 1; i <= T; i++) assert_int_equal(w[i], w[0] + i);
}

static void test_epoch_is_permutation(void **state)
{
    (void)state;
    char p[300];
    path_in(p, sizeof p, "perm.h5");
    const int T = 16;
    const uint64_t N = 240; /* windows; divisible by G */
    FIX_OK(fixture_write(p, 1u << 20, N * T + 1, 200, NULL));
    for (int ra = 0; ra <= 1; ra++) {
        fm_reader_options o = fixture_opts(T, 12, 0, 12, 7, ra);
        fm_reader *r = NULL;
        FIX_OK(fm_reader_open(p, &o, &r));
        assert_int_equal(fm_reader_train_windows(r), N);
        assert_int_equal(fm_reader_read_ahead_active(r), ra);
        int32_t *tok = malloc(12 * (T + 1) * sizeof *tok);
        unsigned char seen[240];
        for (int epoch = 0; epoch < 2; epoch++) {
            memset(seen, 0, sizeof seen);
            for (uint64_t s = 0; s < N / 12; s++) {
                fm_reader_state stt;
                fm_reader_get_state(r, &stt);
                assert_int_equal(stt.epoch, epoch);
                assert_int_equal(stt.position, s * 12);
                FIX_OK(fm_reader_next(r, tok));
                for (int j = 0; j < 12; j++) {
                    check_window(tok + j * (T + 1), T);
                    uint64_t w = window_of(tok + j * (T + 1), T);
                    assert_int_equal(w, fm_reader_permute(7, (uint64_t)epoch, s * 12 + (uint64_t)j, N));
                    assert_false(seen[w]);
                    seen[w] = 1;
                }
            }
            for (uint64_t w = 0; w < N; w++) assert_true(seen[w]);
        }
        free(tok);
        fm_reader_free(&r);
        assert_null(r);
    }
}

static void test_epoch_boundary(void **state)
{
    (void)state;
    char p[300];
    path_in(p, sizeof p, "boundary.h5");
    const int T = 8;
    FIX_OK(fixture_write(p, 1u << 20, 50 * T + 5, 0, NULL)); /* N = 50 windows */
    fm_reader_options o = fixture_opts(T, 16, 0, 16, 3, 1);
    fm_reader *r = NULL;
    FIX_OK(fm_reader_open(p, &o, &r));
    int32_t tok[16 * 9];
    for (int s = 0; s < 3; s++) FIX_OK(fm_reader_next(r, tok)); /* 48 windows of epoch 0 */
    fm_reader_state st;
    fm_reader_get_state(r, &st);
    assert_int_equal(st.epoch, 1); /* 2 left < 16: the step starts epoch 1 */
    assert_int_equal(st.position, 0);
    FIX_OK(fm_reader_next(r, tok));
    assert_int_equal(window_of(tok, T), fm_reader_permute(3, 1, 0, 50));
    /* no validation windows in this file */
    fixture_expect_error(fm_reader_read_eval(r, FM_SPLIT_VAL, 1, 0, 1, tok), FM_ERR_INPUT,
                         "no validation window");
    fm_reader_free(&r);
}

static void test_readahead_matches_sync_and_restore(void **state)
{
    (void)state;
    char p[300];
    path_in(p, sizeof p, "restore.h5");
    const int T = 32;
    /* 3.5 chunks of tokens, so windows cross chunk boundaries */
    uint64_t ntok = (uint64_t)FM_DATASET_CHUNK * 7 / 2;
    FIX_OK(fixture_write(p, 1u << 24, ntok, 1000, NULL));
    fm_reader_options oa = fixture_opts(T, 64, 16, 20, 11, 1), ob = fixture_opts(T, 64, 16, 20, 11, 0);
    fm_reader *a = NULL, *b = NULL;
    FIX_OK(fm_reader_open(p, &oa, &a));
    FIX_OK(fm_reader_open(p, &ob, &b));
    size_t n = 20 * (T + 1);
    int32_t *ta = malloc(n * sizeof *ta), *tb = malloc(n * sizeof *tb);
    for (int s = 0; s < 25; s++) {
        FIX_OK(fm_reader_next(a, ta));
        FIX_OK(fm_reader_next(b, tb));
        assert_memory_equal(ta, tb, n * sizeof *ta);
        for (int j = 0; j < 20; j++) check_window(ta + j * (T + 1), T);
    }
    /* save the state, read 10 steps, restore into a fresh reader: the same 10 steps follow */
    fm_reader_state saved;
    fm_reader_get_state(a, &saved);
    int32_t *rec = malloc(10 * n * sizeof *rec);
    for (int s = 0; s < 10; s++) FIX_OK(fm_reader_next(a, rec + (size_t)s * n));
    fm_reader *c = NULL;
    fm_reader_options oc = fixture_opts(T, 64, 16, 20, 999 /* overwritten by the state */, 1);
    FIX_OK(fm_reader_open(p, &oc, &c));
    FIX_OK(fm_reader_next(c, ta)); /* consume something first: set_state must drop read-ahead */
    FIX_OK(fm_reader_set_state(c, &saved));
    fm_reader_state got;
    fm_reader_get_state(c, &got);
    assert_memory_equal(&got, &saved, sizeof got);
    for (int s = 0; s < 10; s++) {
        FIX_OK(fm_reader_next(c, ta));
        assert_memory_equal(ta, rec + (size_t)s * n, n * sizeof *ta);
    }
    FIX_OK(fm_reader_sync(c));
    free(rec);
    free(ta);
    free(tb);
    fm_reader_free(&a);
    fm_reader_free(&b);
    fm_reader_free(&c);
}

/* The val token at position i of a fixture file (ds_fixture.h). */
static int32_t val_token(uint64_t vocab, uint64_t i) { return (int32_t)(vocab - 1 - i % vocab); }

/* Members [first, first+count) of the K-window evaluation set of the val split must be windows
 * floor(k*n/K), read whole. */
static void check_val_members(fm_reader *r, uint64_t vocab, int T, int64_t K, int64_t first,
                              int64_t count, uint64_t n)
{
    int32_t *tok = malloc((size_t)count * (size_t)(T + 1) * sizeof *tok);
    FIX_OK(fm_reader_read_eval(r, FM_SPLIT_VAL, K, first, count, tok));
    for (int64_t j = 0; j < count; j++) {
        uint64_t k = (uint64_t)(first + j), w = k * n / (uint64_t)K;
        assert_int_equal(fm_reader_eval_window(k, (uint64_t)K, n), w);
        for (int i = 0; i <= T; i++)
            assert_int_equal(tok[j * (T + 1) + i], val_token(vocab, w * (uint64_t)T + (uint64_t)i));
    }
    free(tok);
}

static void test_validation(void **state)
{
    (void)state;
    char p[300];
    path_in(p, sizeof p, "val.h5");
    const int T = 10;
    const uint64_t vocab = 1u << 20;
    FIX_OK(fixture_write(p, vocab, 1000, 10 * 37 + 1, NULL)); /* Nv = 37, N = 99 */
    fm_reader_options o = fixture_opts(T, 8, 2, 4, 5, 1);
    fm_reader *r = NULL;
    FIX_OK(fm_reader_open(p, &o, &r));
    assert_int_equal(fm_reader_val_windows(r), 37);
    assert_int_equal(fm_reader_split_windows(r, FM_SPLIT_VAL), 37);
    assert_int_equal(fm_reader_split_windows(r, FM_SPLIT_TRAIN), 99);
    assert_string_equal(fm_reader_split_path(r, FM_SPLIT_VAL), p);
    /* the set of 5 of 37: windows 0, 7, 14, 22, 29 — spread evenly, whatever is asked at once */
    const uint64_t five[5] = {0, 7, 14, 22, 29};
    for (int k = 0; k < 5; k++) assert_int_equal(fm_reader_eval_window((uint64_t)k, 5, 37), five[k]);
    check_val_members(r, vocab, T, 5, 0, 5, 37);
    check_val_members(r, vocab, T, 5, 3, 2, 37);
    check_val_members(r, vocab, T, 37, 0, 37, 37); /* K = n: every window in order */
    check_val_members(r, vocab, T, 36, 30, 6, 37);
    check_val_members(r, vocab, T, 1, 0, 1, 37);   /* window 0 */
    int32_t tok[6 * 11];
    /* the train split in file order (not the sampling permutation) */
    FIX_OK(fm_reader_read_eval(r, FM_SPLIT_TRAIN, 3, 1, 2, tok));
    assert_int_equal(tok[0], 33 * T);
    assert_int_equal(tok[11], 66 * T);
    /* outside the set: usage errors that say what is allowed */
    fixture_expect_error(fm_reader_read_eval(r, FM_SPLIT_VAL, 38, 0, 1, tok), FM_ERR_USAGE,
                         "expected 0 <= first <= first+count <= K <= 37");
    fixture_expect_error(fm_reader_read_eval(r, FM_SPLIT_VAL, 0, 0, 0, tok), FM_ERR_USAGE, "K <= 37");
    fixture_expect_error(fm_reader_read_eval(r, FM_SPLIT_VAL, 5, 4, 2, tok), FM_ERR_USAGE,
                         "members [4, 6)");
    /* exact for large sets: K < 2^32 with n far above it */
    /* floor((K-1) * 2^40 / K) with K = 2^32-1: 2^40 - ceil(2^40 / K) = 2^40 - 257 */
    assert_int_equal(fm_reader_eval_window(4294967294u, 4294967295u, UINT64_C(1) << 40),
                     (UINT64_C(1) << 40) - 257);
    assert_int_equal(fm_reader_eval_window(UINT64_C(1) << 35, UINT64_C(1) << 36, UINT64_C(1) << 36),
                     UINT64_C(1) << 35);
    /* a separate validation file */
    char pv[300];
    path_in(pv, sizeof pv, "val2.h5");
    FIX_OK(fixture_write(pv, vocab, 20, 10 * 5 + 1, NULL));
    fm_reader *r2 = NULL;
    o.val_path = pv;
    FIX_OK(fm_reader_open(p, &o, &r2));
    assert_int_equal(fm_reader_val_windows(r2), 5);
    assert_string_equal(fm_reader_split_path(r2, FM_SPLIT_VAL), pv);
    check_val_members(r2, vocab, T, 2, 0, 2, 5); /* windows 0 and 2 of val2.h5 */
    fm_reader_free(&r2);
    /* a validation file with another vocabulary */
    FIX_OK(fixture_write(pv, 1000, 20, 100, NULL));
    fixture_expect_error(fm_reader_open(p, &o, &r2), FM_ERR_INPUT, "vocab_size");
    fm_reader_free(&r);
}

/* A reader without a training stream (global_windows 0, fmtrain eval): no window requirement on the
 * train split, no read-ahead thread, evaluation windows only. */
static void test_eval_only_reader(void **state)
{
    (void)state;
    char p[300];
    path_in(p, sizeof p, "evalonly.h5");
    const int T = 10;
    const uint64_t vocab = 1u << 20;
    FIX_OK(fixture_write(p, vocab, 5, 10 * 4 + 1, NULL)); /* no training window at all, Nv = 4 */
    fm_reader_options o = fixture_opts(T, 0, 0, 0, 5, 1);
    fm_reader *r = NULL;
    FIX_OK(fm_reader_open(p, &o, &r));
    assert_int_equal(fm_reader_read_ahead_active(r), 0);
    assert_int_equal(fm_reader_seq_len(r), T);
    check_val_members(r, vocab, T, 4, 0, 4, 4);
    int32_t tok[11];
    fixture_expect_error(fm_reader_next(r, tok), FM_ERR_INTERNAL, "without a training stream");
    fixture_expect_error(fm_reader_read_eval(r, FM_SPLIT_TRAIN, 1, 0, 1, tok), FM_ERR_INPUT,
                         "has no training window of seq_len+1 = 11 tokens");
    fm_reader_free(&r);
}

static void set_attr_int(const char *path, const char *name, int64_t v)
{
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    assert_true(f >= 0);
    if (H5Aexists(f, name) > 0) H5Adelete(f, name);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(f, name, H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_INT64, &v);
    H5Aclose(a);
    H5Sclose(sp);
    H5Fclose(f);
}

static void set_attr_str(const char *path, const char *name, const char *v)
{
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    assert_true(f >= 0);
    if (H5Aexists(f, name) > 0) H5Adelete(f, name);
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(v) + 1);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(f, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, t, v);
    H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
    H5Fclose(f);
}

static void test_open_errors(void **state)
{
    (void)state;
    char p[300], q[300];
    fm_reader *r = NULL;
    fm_reader_options o = fixture_opts(16, 4, 0, 4, 1, 1);
    fm_dataset_info info;
    /* missing */
    path_in(p, sizeof p, "missing.h5");
    fixture_expect_error(fm_reader_open(p, &o, &r), FM_ERR_INPUT, "missing.h5");
    fixture_expect_error(fm_dataset_probe(p, &info), FM_ERR_INPUT, "No such file");
    /* not HDF5 */
    path_in(p, sizeof p, "text.h5");
    FILE *fp = fopen(p, "w");
    fputs("just some text, not HDF5\n", fp);
    fclose(fp);
    fixture_expect_error(fm_reader_open(p, &o, &r), FM_ERR_INPUT, "not an HDF5 file");
    /* HDF5 but not fmtrain */
    path_in(p, sizeof p, "foreign.h5");
    hid_t f = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    H5Fclose(f);
    fixture_expect_error(fm_reader_open(p, &o, &r), FM_ERR_INPUT, "not an fmtrain");
    fixture_expect_error(fm_dataset_file_format(p, q, sizeof q), FM_ERR_INPUT, "not an fmtrain file");
    /* another fmtrain format */
    path_in(p, sizeof p, "other.h5");
    FIX_OK(fixture_write(p, 1000, 1000, 100, NULL));
    set_attr_str(p, "format", "fmtrain-checkpoint");
    fixture_expect_error(fm_reader_open(p, &o, &r), FM_ERR_INPUT, "'fmtrain-checkpoint' file");
    /* another version */
    FIX_OK(fixture_write(p, 1000, 1000, 100, NULL));
    set_attr_int(p, "format_version", 2);
    fixture_expect_error(fm_reader_open(p, &o, &r), FM_ERR_INPUT, "version 2");
    /* incomplete (prepare interrupted before the counts were written) */
    FIX_OK(fixture_write(p, 1000, 1000, 100, NULL));
    f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    H5Adelete(f, "train_tokens");
    H5Fclose(f);
    fixture_expect_error(fm_dataset_probe(p, &info), FM_ERR_INPUT, "incomplete");
    /* counts that disagree with the data */
    FIX_OK(fixture_write(p, 1000, 1000, 100, NULL));
    set_attr_int(p, "train_tokens", 5000);
    fixture_expect_error(fm_dataset_probe(p, &info), FM_ERR_INPUT, "holds 1000 tokens");
    /* vocab mismatch with the model */
    FIX_OK(fixture_write(p, 1000, 1000, 100, NULL));
    o.vocab_size = 2000;
    fixture_expect_error(fm_reader_open(p, &o, &r), FM_ERR_INPUT, "model's vocab_size is 2000");
    o.vocab_size = 1000;
    FIX_OK(fm_reader_open(p, &o, &r));
    fm_reader_free(&r);
    /* fewer windows than one global batch: 999/16 = 62 windows */
    o.global_windows = 63;
    o.count = 63;
    fixture_expect_error(fm_reader_open(p, &o, &r), FM_ERR_INPUT, "fewer than one global batch");
    /* bad options */
    o.first = 60;
    o.count = 10;
    fixture_expect_error(fm_reader_open(p, &o, &r), FM_ERR_USAGE, "bad reader options");
    assert_null(r);
}

/* One measurement: `steps` steps of 10 ms "compute" after the first; returns wait / wall time. */
static double wait_fraction(const char *p, int T, int64_t G, int steps)
{
    fm_reader_options o = fixture_opts(T, G, 0, G, 1, 1);
    fm_reader *r = NULL;
    FIX_OK(fm_reader_open(p, &o, &r));
    assert_true(fm_reader_read_ahead_active(r));
    int32_t *tok = malloc((size_t)G * (T + 1) * sizeof *tok);
    /* the first next() necessarily waits for the read started at open (nothing to overlap with):
     * measure the steady state, steps 2.. */
    FIX_OK(fm_reader_next(r, tok));
    double w0 = fm_reader_wait_seconds(r);
    double t0 = fm_util_now();
    for (int s = 0; s < steps; s++) {
        FIX_OK(fm_reader_next(r, tok));
        struct timespec ts = {0, 10 * 1000 * 1000}; /* the model would compute here */
        nanosleep(&ts, NULL);
    }
    double total = fm_util_now() - t0, wait = fm_reader_wait_seconds(r) - w0;
    fprintf(stderr, "I/O wait %.3f ms over %d steps of %.1f ms: %.3f %% of step time\n", wait * 1e3, steps,
            total / steps * 1e3, 100 * wait / total);
    assert_int_equal(fm_reader_steps_read(r), steps + 1);
    free(tok);
    fm_reader_free(&r);
    return wait / total;
}

static void test_io_wait_fraction(void **state)
{
    (void)state;
    char p[300];
    path_in(p, sizeof p, "speed.h5");
    uint64_t ntok = (uint64_t)8 << 20; /* 8 Mi tokens, 8191 windows of 1024+1 */
    FIX_OK(fixture_write(p, 50304, ntok, 0, NULL));
    /* best of 3: the machine is shared, so one measurement can catch another process's burst */
    double best = 1;
    for (int k = 0; k < 3 && best >= 0.01; k++) {
        double f = wait_fraction(p, 1024, 16, 40);
        if (f < best) best = f;
    }
    assert_true(best < 0.01);
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/fm_dataset_test_XXXXXX");
    if (!mkdtemp(dir)) return -1;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_write_probe),
        cmocka_unit_test(test_permute_bijection),
        cmocka_unit_test(test_permute_pinned),
        cmocka_unit_test(test_epoch_is_permutation),
        cmocka_unit_test(test_epoch_boundary),
        cmocka_unit_test(test_readahead_matches_sync_and_restore),
        cmocka_unit_test(test_validation),
        cmocka_unit_test(test_eval_only_reader),
        cmocka_unit_test(test_open_errors),
        cmocka_unit_test(test_io_wait_fraction),
    };
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    MPI_Finalize();
    return rc;
}

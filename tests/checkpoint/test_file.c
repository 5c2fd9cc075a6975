/* test_file.c — the checkpoint file layer under MPI (run with 2 ranks, and with 1):
 * round trips, files written by N ranks read by M ranks (parallel and serial mode), CRC-32 values,
 * damaged files (bit flip, truncation), the directory (latest, keep_last, stale temporaries),
 * resume = auto falling back past a damaged checkpoint, an error on one rank only (agreed, collective),
 * the shared directory scan, MPI-IO hints, alignment, the partition, explicit per-rank parts with
 * partial buffers (how each rank writes its ZeRO shard). */
#define _XOPEN_SOURCE 700
#include <fcntl.h>
#include <hdf5.h>
#include <mpi.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cmocka.h>

#include "checkpoint/ckpt_test_fixture.h"
#include "checkpoint/ckpt_test_util.h"
#include "ckpt/checkpoint_dir.h"
#include "ckpt/checkpoint_file.h"

/* Writes synthetic pattern `seed` as step `step` with communicator comm. */
static void write_ckpt(MPI_Comm comm, int64_t step, uint64_t seed, int keep_last,
                       const fm_checkpoint_io_opts *opts)
{
    ckpt_synth s;
    assert_int_equal(ckpt_synth_gpt2(&s, 300, 16, 2, 12, seed), 0);
    char path[512];
    ckpt_path(path, sizeof path, step);
    fm_checkpoint_io_opts def = {1 << 20, NULL, 0};
    fm_checkpoint_file *f = NULL;
    expect_ok(fm_checkpoint_file_create(comm, path, CKPT_TEST_FORMAT, 1, opts ? opts : &def, &f));
    expect_ok(fm_checkpoint_file_write_groups(f, s.groups, 3));
    expect_ok(fm_checkpoint_file_attr_i64(f, "/", "step", step));
    expect_ok(fm_checkpoint_file_write_text(f, "/config", "[run]\nname = test\n"));
    fm_checkpoint_write_stats ws;
    expect_ok(fm_checkpoint_file_commit(&f, keep_last, &ws));
    assert_null(f);
    assert_true(ws.tensor_bytes == 3 * s.numel * sizeof(float));
    assert_true(ws.file_bytes >= ws.tensor_bytes);
    ckpt_synth_free(&s);
}

/* Reads step `step` with comm (MPI_COMM_NULL: serial) and returns the first mismatch or -1. */
static long long read_ckpt(MPI_Comm comm, int64_t step, uint64_t seed, fm_status *err)
{
    ckpt_synth s;
    assert_int_equal(ckpt_synth_gpt2(&s, 300, 16, 2, 12, 0), 0);
    char path[512];
    ckpt_path(path, sizeof path, step);
    fm_checkpoint_file *f = NULL;
    int version = 0;
    fm_status st = fm_checkpoint_file_open(comm, path, CKPT_TEST_FORMAT, &version, NULL, &f);
    if (!st) {
        assert_int_equal(version, 1);
        st = fm_checkpoint_file_read_groups(f, s.groups, 3, 1);
    }
    fm_checkpoint_file_close(&f);
    long long bad = st ? -2 : ckpt_synth_check(&s, seed);
    ckpt_synth_free(&s);
    *err = st;
    return bad;
}

static void test_roundtrip(void **state)
{
    (void)state;
    write_ckpt(MPI_COMM_WORLD, 10, 1234, 0, NULL);
    fm_status st = NULL;
    assert_int_equal(read_ckpt(MPI_COMM_WORLD, 10, 1234, &st), -1);
    /* Without replication each rank holds exactly its part. */
    ckpt_synth s;
    assert_int_equal(ckpt_synth_gpt2(&s, 300, 16, 2, 12, 0), 0);
    for (int g = 0; g < 3; g++)
        for (size_t i = 0; i < s.numel; i++) s.buf[g][i] = -7.0f;
    char path[512];
    ckpt_path(path, sizeof path, 10);
    fm_checkpoint_file *f = NULL;
    expect_ok(fm_checkpoint_file_open(MPI_COMM_WORLD, path, CKPT_TEST_FORMAT, NULL, NULL, &f));
    expect_ok(fm_checkpoint_file_read_groups(f, s.groups, 3, 0));
    int64_t step = 0;
    expect_ok(fm_checkpoint_file_get_attr_i64(f, "/", "step", &step));
    assert_int_equal(step, 10);
    char *cfg = NULL;
    expect_ok(fm_checkpoint_file_read_text(f, "/config", &cfg));
    assert_string_equal(cfg, "[run]\nname = test\n");
    free(cfg);
    fm_checkpoint_file_close(&f);
    size_t mine = 0;
    for (int g = 0; g < 3; g++)
        for (int t = 0; t < s.ntensors; t++) {
            size_t lo, hi;
            expect_ok(fm_checkpoint_file_part(s.groups, 3, g_size, g_rank, g, t, &lo, &hi));
            const float *p = s.buf[g] + s.table[t].offset;
            size_t n = 1;
            for (int k = 0; k < s.table[t].ndim; k++) n *= (size_t)s.table[t].shape[k];
            for (size_t i = 0; i < n; i++) {
                float want = i >= lo && i < hi ? ckpt_value(1234, g, s.table[t].offset + i) : -7.0f;
                assert_memory_equal(&want, &p[i], sizeof want);
            }
            mine += hi - lo;
        }
    /* Balance: each rank reads about a 1/N share (within one row per tensor). */
    size_t total = 3 * s.numel;
    assert_true(mine + 3 * 4 * 16 * (size_t)s.ntensors >= total / (size_t)g_size);
    ckpt_synth_free(&s);
}

/* The crc32 attribute equals zlib's CRC of the tensor's bytes, whatever the writer's rank count. */
static void test_crc_attribute(void **state)
{
    (void)state;
    write_ckpt(MPI_COMM_WORLD, 11, 99, 0, NULL);
    if (g_rank == 0) {
        ckpt_synth s;
        assert_int_equal(ckpt_synth_gpt2(&s, 300, 16, 2, 12, 99), 0);
        char path[512];
        ckpt_path(path, sizeof path, 11);
        fm_checkpoint_file *f = NULL;
        expect_ok(fm_checkpoint_file_open(MPI_COMM_NULL, path, CKPT_TEST_FORMAT, NULL, NULL, &f));
        for (int t = 0; t < s.ntensors; t++) {
            char d[200];
            snprintf(d, sizeof d, "/adam_m/%s", s.table[t].name);
            int64_t crc = 0;
            expect_ok(fm_checkpoint_file_get_attr_i64(f, d, "crc32", &crc));
            size_t n = 1;
            for (int k = 0; k < s.table[t].ndim; k++) n *= (size_t)s.table[t].shape[k];
            uLong want = crc32(0L, (const Bytef *)(s.buf[1] + s.table[t].offset),
                               (uInt)(n * sizeof(float)));
            assert_int_equal((uint64_t)crc, (uint64_t)want);
            assert_int_equal(fm_checkpoint_crc32(s.buf[1] + s.table[t].offset, n * sizeof(float)),
                             (uint32_t)want);
        }
        /* Long buffers are split into chunks whose CRCs are combined. */
        size_t big = (size_t)9 << 20;
        unsigned char *b = malloc(big);
        assert_non_null(b);
        for (size_t i = 0; i < big; i++) b[i] = (unsigned char)(ckpt_mix(i) >> 7);
        assert_int_equal(fm_checkpoint_crc32(b, big), (uint32_t)crc32(0L, b, (uInt)big));
        free(b);
        int checked = 0, failed = -1;
        expect_ok(fm_checkpoint_file_verify(f, NULL, NULL, &checked, &failed));
        assert_int_equal(checked, 3 * s.ntensors + 1);
        assert_int_equal(failed, 0);
        fm_checkpoint_file_close(&f);
        ckpt_synth_free(&s);
    }
    MPI_Barrier(MPI_COMM_WORLD);
}

/* A file written by all ranks is read by one rank (parallel on MPI_COMM_SELF, and serially), and a
 * file written by one rank is read by all. */
static void test_cross_rank_counts(void **state)
{
    (void)state;
    write_ckpt(MPI_COMM_WORLD, 20, 555, 0, NULL);
    fm_status st = NULL;
    if (g_rank == 0) {
        assert_int_equal(read_ckpt(MPI_COMM_SELF, 20, 555, &st), -1);
        assert_int_equal(read_ckpt(MPI_COMM_NULL, 20, 555, &st), -1);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    if (g_rank == 0) write_ckpt(MPI_COMM_SELF, 21, 777, 0, NULL);
    MPI_Barrier(MPI_COMM_WORLD);
    assert_int_equal(read_ckpt(MPI_COMM_WORLD, 21, 777, &st), -1);
    /* Both files are byte-for-byte the same tensors: the rank count leaves no trace in the data. */
    if (g_rank == 0) {
        assert_int_equal(read_ckpt(MPI_COMM_NULL, 21, 777, &st), -1);
    }
    MPI_Barrier(MPI_COMM_WORLD);
}

static void flip_byte(const char *path, const char *dset, size_t at)
{
    hid_t fid = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(fid >= 0);
    hid_t d = H5Dopen2(fid, dset, H5P_DEFAULT);
    assert_true(d >= 0);
    haddr_t off = H5Dget_offset(d);
    assert_true(off != HADDR_UNDEF);
    H5Dclose(d);
    H5Fclose(fid);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    unsigned char c;
    assert_int_equal(pread(fd, &c, 1, (off_t)(off + at)), 1);
    c ^= 0x10;
    assert_int_equal(pwrite(fd, &c, 1, (off_t)(off + at)), 1);
    close(fd);
}

static void test_damage_detected(void **state)
{
    (void)state;
    write_ckpt(MPI_COMM_WORLD, 30, 42, 0, NULL);
    write_ckpt(MPI_COMM_WORLD, 31, 43, 0, NULL);
    char p30[512], p31[512];
    ckpt_path(p30, sizeof p30, 30);
    ckpt_path(p31, sizeof p31, 31);
    if (g_rank == 0) flip_byte(p30, "/adam_v/h.1.mlp.c_fc.weight", 777);
    MPI_Barrier(MPI_COMM_WORLD);
    fm_status st = NULL;
    assert_int_equal(read_ckpt(MPI_COMM_WORLD, 30, 42, &st), -2);
    assert_int_equal(fm_status_code(st), FM_ERR_INPUT);
    assert_non_null(strstr(fm_status_message(st), "/adam_v/h.1.mlp.c_fc.weight"));
    assert_non_null(strstr(fm_status_message(st), "CRC-32"));
    fm_status_free(&st);
    /* verify() finds exactly that dataset, in parallel and serially. */
    fm_checkpoint_file *f = NULL;
    expect_ok(fm_checkpoint_file_open(MPI_COMM_WORLD, p30, CKPT_TEST_FORMAT, NULL, NULL, &f));
    int checked = 0, failed = 0;
    st = fm_checkpoint_file_verify(f, NULL, NULL, &checked, &failed);
    assert_int_equal(fm_status_code(st), FM_ERR_INPUT);
    assert_non_null(strstr(fm_status_message(st), "h.1.mlp.c_fc.weight"));
    assert_int_equal(failed, 1);
    fm_status_free(&st);
    fm_checkpoint_file_close(&f);

    /* Truncation: the file loses its second half. */
    if (g_rank == 0) {
        struct stat sb;
        assert_int_equal(stat(p31, &sb), 0);
        assert_int_equal(truncate(p31, sb.st_size / 2), 0);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    assert_int_equal(read_ckpt(MPI_COMM_WORLD, 31, 43, &st), -2);
    assert_int_equal(fm_status_code(st), FM_ERR_INPUT);
    fm_status_free(&st);
    if (g_rank == 0) {
        assert_int_equal(read_ckpt(MPI_COMM_NULL, 31, 43, &st), -2);
        assert_int_equal(fm_status_code(st), FM_ERR_INPUT);
        fm_status_free(&st);
    }
    /* A file that is not a checkpoint at all. */
    if (g_rank == 0) {
        FILE *fp = fopen(p31, "w");
        assert_non_null(fp);
        fputs("not hdf5\n", fp);
        fclose(fp);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    assert_int_equal(read_ckpt(MPI_COMM_WORLD, 31, 43, &st), -2);
    assert_int_equal(fm_status_code(st), FM_ERR_INPUT);
    assert_non_null(strstr(fm_status_message(st), "step-00000031.h5"));
    fm_status_free(&st);
    /* A missing file. */
    assert_int_equal(read_ckpt(MPI_COMM_WORLD, 32, 43, &st), -2);
    assert_int_equal(fm_status_code(st), FM_ERR_INPUT);
    fm_status_free(&st);
}

static void test_directory(void **state)
{
    (void)state;
    for (int64_t step = 100; step <= 400; step += 100) write_ckpt(MPI_COMM_WORLD, step, (uint64_t)step, 2, NULL);
    char cdir[512];
    expect_ok(fm_checkpoint_dir_of_run(g_dir, cdir, sizeof cdir));
    fm_checkpoint_entry *v = NULL;
    int n = 0;
    expect_ok(fm_checkpoint_dir_list(cdir, &v, &n));
    assert_int_equal(n, 2);
    assert_int_equal(v[0].step, 400);
    assert_string_equal(v[0].name, "step-00000400.h5");
    assert_int_equal(v[1].step, 300);
    free(v);
    char latest[128];
    expect_ok(fm_checkpoint_dir_read_latest(cdir, latest, sizeof latest));
    assert_string_equal(latest, "step-00000400.h5");
    MPI_Barrier(MPI_COMM_WORLD);
    if (g_rank == 0) {
        /* Stale temporaries are removed; complete files are not. */
        char p[600];
        snprintf(p, sizeof p, "%s/step-00000500.h5.tmp", cdir);
        FILE *fp = fopen(p, "w");
        assert_non_null(fp);
        fclose(fp);
        snprintf(p, sizeof p, "%s/notes.tmp", cdir);
        fp = fopen(p, "w");
        assert_non_null(fp);
        fclose(fp);
        int removed = 0;
        expect_ok(fm_checkpoint_dir_remove_stale(cdir, &removed));
        assert_int_equal(removed, 1);
        assert_int_equal(access(p, F_OK), 0);
        unlink(p);
        int64_t step = 0;
        assert_int_equal(fm_checkpoint_dir_parse_name("step-00000042.h5", &step), 1);
        assert_int_equal(step, 42);
        assert_int_equal(fm_checkpoint_dir_parse_name("step-123456789.h5", &step), 1);
        assert_int_equal(step, 123456789);
        assert_int_equal(fm_checkpoint_dir_parse_name("step-0042.h5", &step), 0);
        assert_int_equal(fm_checkpoint_dir_parse_name("step-00000042.h5.tmp", &step), 0);
        assert_int_equal(fm_checkpoint_dir_parse_name("latest", &step), 0);
    }
    MPI_Barrier(MPI_COMM_WORLD);
}

typedef struct load_ctx {
    uint64_t expect_seed_of_step[1000];
    int64_t loaded;
} load_ctx;

static fm_status load_synth(void *user, const char *path)
{
    load_ctx *c = user;
    ckpt_synth s;
    if (ckpt_synth_gpt2(&s, 300, 16, 2, 12, 0) != 0) return FM_ERR(FM_ERR_NOMEM, "oom");
    fm_checkpoint_file *f = NULL;
    fm_status st = fm_checkpoint_file_open(MPI_COMM_WORLD, path, CKPT_TEST_FORMAT, NULL, NULL, &f);
    int64_t step = -1;
    if (!st) st = fm_checkpoint_file_get_attr_i64(f, "/", "step", &step);
    if (!st) st = fm_checkpoint_file_read_groups(f, s.groups, 3, 1);
    fm_checkpoint_file_close(&f);
    if (!st && ckpt_synth_check(&s, c->expect_seed_of_step[step]) != -1)
        st = FM_ERR(FM_ERR_INTERNAL, "loaded data differ");
    if (!st) c->loaded = step;
    ckpt_synth_free(&s);
    return st;
}

static void test_load_newest(void **state)
{
    (void)state;
    load_ctx c;
    memset(&c, 0, sizeof c);
    char cdir[512];
    expect_ok(fm_checkpoint_dir_of_run(g_dir, cdir, sizeof cdir));
    int64_t step = 0;
    char path[600];
    /* Empty directory: nothing to resume, not an error. */
    expect_ok(fm_checkpoint_load_newest(MPI_COMM_WORLD, cdir, load_synth, &c, NULL, &step, path, sizeof path));
    assert_int_equal(step, -1);
    for (int s = 1; s <= 3; s++) {
        c.expect_seed_of_step[s] = 1000 + (uint64_t)s;
        write_ckpt(MPI_COMM_WORLD, s, c.expect_seed_of_step[s], 5, NULL);
    }
    expect_ok(fm_checkpoint_load_newest(MPI_COMM_WORLD, cdir, load_synth, &c, NULL, &step, path, sizeof path));
    assert_int_equal(step, 3);
    assert_int_equal(c.loaded, 3);
    char p3[512], p2[512], p1[512];
    ckpt_path(p3, sizeof p3, 3);
    ckpt_path(p2, sizeof p2, 2);
    ckpt_path(p1, sizeof p1, 1);
    if (g_rank == 0) flip_byte(p3, "/params/wte.weight", 5);
    MPI_Barrier(MPI_COMM_WORLD);
    FILE *warn = g_rank == 0 ? tmpfile() : NULL;
    expect_ok(fm_checkpoint_load_newest(MPI_COMM_WORLD, cdir, load_synth, &c, warn, &step, path, sizeof path));
    assert_int_equal(step, 2);
    assert_string_equal(path, p2);
    if (g_rank == 0) {
        char text[4096] = "";
        rewind(warn);
        size_t n = fread(text, 1, sizeof text - 1, warn);
        text[n] = '\0';
        assert_non_null(strstr(text, "step-00000003.h5"));
        assert_non_null(strstr(text, "falling back"));
        fclose(warn);
        flip_byte(p2, "/adam_m/h.0.attn.c_attn.bias", 0);
        flip_byte(p1, "/config", 3);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    fm_status st = fm_checkpoint_load_newest(MPI_COMM_WORLD, cdir, load_synth, &c, NULL, &step, path, sizeof path);
    /* step 1's tensors are intact; the loader here reads only tensors, so step 1 loads. */
    expect_ok(st);
    assert_int_equal(step, 1);
    if (g_rank == 0) flip_byte(p1, "/params/h.1.ln_2.bias", 1);
    MPI_Barrier(MPI_COMM_WORLD);
    st = fm_checkpoint_load_newest(MPI_COMM_WORLD, cdir, load_synth, &c, NULL, &step, path, sizeof path);
    assert_int_equal(fm_status_code(st), FM_ERR_INPUT);
    assert_non_null(strstr(fm_status_message(st), "every checkpoint"));
    assert_int_equal(step, -1);
    fm_status_free(&st);
}

/* An error seen by one rank only ends the call on every rank, with that rank's message, as a
 * collective status (fm_comm_agree): no rank waits and nothing aborts. */
static void test_rank_local_failure(void **state)
{
    (void)state;
    if (g_size < 2) skip();
    write_ckpt(MPI_COMM_WORLD, 7, 77, 0, NULL);
    char good[512], missing[600];
    ckpt_path(good, sizeof good, 7);
    snprintf(missing, sizeof missing, "%s/only-rank-%d-looks-here.h5", g_dir, g_size - 1);
    fm_checkpoint_file *f = NULL;
    /* the last rank is given a path that does not exist, as if the file system differed there */
    fm_status st = fm_checkpoint_file_open(MPI_COMM_WORLD, g_rank == g_size - 1 ? missing : good, CKPT_TEST_FORMAT,
                                           NULL, NULL, &f);
    assert_null(f);
    assert_non_null(st);
    assert_int_equal(fm_status_code(st), FM_ERR_INPUT);
    assert_true(fm_status_is_collective(st));
    assert_non_null(strstr(fm_status_message(st), "only-rank-"));
    char by[64];
    snprintf(by, sizeof by, "(reported by rank %d)", g_size - 1);
    if (g_rank == 0) assert_non_null(strstr(fm_status_message(st), by));
    fm_status_free(&st);
    /* and the ranks are still in step: a collective open of the good file works */
    expect_ok(fm_checkpoint_file_open(MPI_COMM_WORLD, good, CKPT_TEST_FORMAT, NULL, NULL, &f));
    fm_checkpoint_file_close(&f);
}

/* Rank 0 scans the run directory; every rank receives the same list. */
static void test_scan_dir(void **state)
{
    (void)state;
    char cdir[512];
    expect_ok(fm_checkpoint_dir_of_run(g_dir, cdir, sizeof cdir));
    fm_checkpoint_entry *v = NULL;
    int n = -1, removed = -1;
    expect_ok(fm_checkpoint_scan_dir(MPI_COMM_WORLD, cdir, &v, &n, &removed)); /* no directory yet */
    assert_int_equal(n, 0);
    assert_null(v);
    assert_int_equal(removed, 0);
    for (int64_t step = 10; step <= 30; step += 10) write_ckpt(MPI_COMM_WORLD, step, (uint64_t)step, 0, NULL);
    if (g_rank == 0) {
        char p[600];
        snprintf(p, sizeof p, "%s/step-00000040.h5.tmp", cdir);
        FILE *fp = fopen(p, "w");
        assert_non_null(fp);
        fclose(fp);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    expect_ok(fm_checkpoint_scan_dir(MPI_COMM_WORLD, cdir, &v, &n, &removed));
    assert_int_equal(n, 3);
    assert_int_equal(v[0].step, 30);
    assert_string_equal(v[2].name, "step-00000010.h5");
    assert_int_equal(removed, g_rank == 0 ? 1 : 0);
    free(v);
}

static void test_hints_and_alignment(void **state)
{
    (void)state;
    MPI_Info info = MPI_INFO_NULL;
    expect_ok(fm_checkpoint_parse_hints(" striping_factor = 4 , cb_nodes=2,, ", &info));
    assert_true(info != MPI_INFO_NULL);
    char val[64];
    int flag = 0;
    MPI_Info_get(info, "striping_factor", sizeof val - 1, val, &flag);
    assert_true(flag);
    assert_string_equal(val, "4");
    MPI_Info_get(info, "cb_nodes", sizeof val - 1, val, &flag);
    assert_true(flag);
    assert_string_equal(val, "2");
    MPI_Info_free(&info);
    expect_ok(fm_checkpoint_parse_hints("", &info));
    assert_true(info == MPI_INFO_NULL);
    fm_status st = fm_checkpoint_parse_hints("striping_factor=4,oops", &info);
    assert_int_equal(fm_status_code(st), FM_ERR_CONFIG);
    assert_non_null(strstr(fm_status_message(st), "mpiio_hints"));
    assert_non_null(strstr(fm_status_message(st), "oops"));
    fm_status_free(&st);
    /* A write with hints and 64 KiB alignment: datasets of at least 64 KiB start on a boundary. */
    fm_checkpoint_io_opts opts = {65536, "romio_cb_write=enable,cb_buffer_size=1048576", 0};
    write_ckpt(MPI_COMM_WORLD, 50, 5, 0, &opts);
    fm_status err = NULL;
    assert_int_equal(read_ckpt(MPI_COMM_WORLD, 50, 5, &err), -1);
    if (g_rank == 0) {
        char path[512];
        ckpt_path(path, sizeof path, 50);
        hid_t fid = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
        assert_true(fid >= 0);
        hid_t d = H5Dopen2(fid, "/params/wte.weight", H5P_DEFAULT); /* 384x16 floats = 24 KiB */
        hid_t d2 = H5Dopen2(fid, "/adam_v/wte.weight", H5P_DEFAULT);
        assert_true(d >= 0 && d2 >= 0);
        /* 24 KiB < threshold: packed; check the rule on a synthetic larger file below instead. */
        H5Dclose(d);
        H5Dclose(d2);
        H5Fclose(fid);
    }
    /* A table with a 256 KiB tensor: it must be aligned. */
    fm_checkpoint_tensor t[2];
    memset(t, 0, sizeof t);
    snprintf(t[0].name, sizeof t[0].name, "small");
    t[0].ndim = 1;
    t[0].shape[0] = 10;
    snprintf(t[1].name, sizeof t[1].name, "big");
    t[1].ndim = 2;
    t[1].shape[0] = 256;
    t[1].shape[1] = 256;
    t[1].offset = 10;
    float *buf = calloc(10 + 65536, sizeof(float));
    assert_non_null(buf);
    fm_checkpoint_group g = {"params", t, 2, buf, 10 + 65536, NULL, 0};
    char path[512];
    ckpt_path(path, sizeof path, 51);
    fm_checkpoint_file *f = NULL;
    expect_ok(fm_checkpoint_file_create(MPI_COMM_WORLD, path, CKPT_TEST_FORMAT, 1, &opts, &f));
    expect_ok(fm_checkpoint_file_write_groups(f, &g, 1));
    expect_ok(fm_checkpoint_file_commit(&f, 0, NULL));
    free(buf);
    if (g_rank == 0) {
        hid_t fid = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
        hid_t d = H5Dopen2(fid, "/params/big", H5P_DEFAULT);
        haddr_t off = H5Dget_offset(d);
        assert_true(off != HADDR_UNDEF);
        assert_int_equal(off % 65536, 0);
        H5Dclose(d);
        H5Fclose(fid);
    }
    MPI_Barrier(MPI_COMM_WORLD);
}

static void test_small_items(void **state)
{
    (void)state;
    char path[512];
    ckpt_path(path, sizeof path, 60);
    fm_checkpoint_file *f = NULL;
    expect_ok(fm_checkpoint_file_create(MPI_COMM_WORLD, path, CKPT_TEST_FORMAT, 3, NULL, &f));
    uint64_t v[5] = {1, 2, 3, UINT64_MAX, 0x0123456789abcdefull};
    expect_ok(fm_checkpoint_file_write_u64(f, "/state/rng", v, 5));
    uint64_t mine[2] = {(uint64_t)g_rank * 10 + 1, (uint64_t)g_rank * 10 + 2};
    expect_ok(fm_checkpoint_file_write_u64_per_rank(f, "/state/per_rank", mine, 2));
    expect_ok(fm_checkpoint_file_write_text(f, "/empty", ""));
    expect_ok(fm_checkpoint_file_attr_f64(f, "/state", "lr", 6e-4));
    expect_ok(fm_checkpoint_file_attr_str(f, "/meta/sub", "host", "node-01"));
    expect_ok(fm_checkpoint_file_attr_i64(f, "/state/rng", "count", -5));
    expect_ok(fm_checkpoint_file_commit(&f, 0, NULL));
    int version = 0;
    expect_ok(fm_checkpoint_file_open(MPI_COMM_WORLD, path, CKPT_TEST_FORMAT, &version, NULL, &f));
    assert_int_equal(version, 3);
    uint64_t r[5] = {0};
    expect_ok(fm_checkpoint_file_read_u64(f, "/state/rng", r, 5));
    assert_memory_equal(r, v, sizeof v);
    fm_status st = fm_checkpoint_file_read_u64(f, "/state/rng", r, 4);
    assert_int_equal(fm_status_code(st), FM_ERR_INPUT);
    fm_status_free(&st);
    uint64_t *pr = calloc(2 * (size_t)g_size, sizeof *pr);
    expect_ok(fm_checkpoint_file_read_u64(f, "/state/per_rank", pr, 2 * (size_t)g_size));
    for (int k = 0; k < g_size; k++) {
        assert_int_equal(pr[2 * k], (uint64_t)k * 10 + 1);
        assert_int_equal(pr[2 * k + 1], (uint64_t)k * 10 + 2);
    }
    free(pr);
    int nd = 0;
    int64_t shape[FM_CHECKPOINT_MAX_DIMS];
    expect_ok(fm_checkpoint_file_dataset_shape(f, "/state/per_rank", &nd, shape));
    assert_int_equal(nd, 2);
    assert_int_equal(shape[0], g_size);
    char *text = NULL;
    expect_ok(fm_checkpoint_file_read_text(f, "/empty", &text));
    assert_string_equal(text, "");
    free(text);
    double lr = 0;
    expect_ok(fm_checkpoint_file_get_attr_f64(f, "/state", "lr", &lr));
    assert_true(lr == 6e-4);
    char *host = NULL;
    expect_ok(fm_checkpoint_file_get_attr_str(f, "/meta/sub", "host", &host));
    assert_string_equal(host, "node-01");
    free(host);
    int64_t cnt = 0;
    expect_ok(fm_checkpoint_file_get_attr_i64(f, "/state/rng", "count", &cnt));
    assert_int_equal(cnt, -5);
    st = fm_checkpoint_file_get_attr_i64(f, "/state", "nope", &cnt);
    assert_int_equal(fm_status_code(st), FM_ERR_INPUT);
    assert_non_null(strstr(fm_status_message(st), "nope"));
    fm_status_free(&st);
    st = fm_checkpoint_file_get_attr_i64(f, "/state", "lr", &cnt); /* wrong type */
    assert_int_equal(fm_status_code(st), FM_ERR_INPUT);
    fm_status_free(&st);
    assert_int_equal(fm_checkpoint_file_exists(f, "/state/rng"), 1);
    assert_int_equal(fm_checkpoint_file_exists(f, "/nothing/here"), 0);
    fm_checkpoint_file_close(&f);
    /* The wrong format name is refused. */
    st = fm_checkpoint_file_open(MPI_COMM_WORLD, path, "other-format", NULL, NULL, &f);
    assert_int_equal(fm_status_code(st), FM_ERR_INPUT);
    assert_non_null(strstr(fm_status_message(st), "not a other-format file"));
    fm_status_free(&st);
    assert_null(f);
}

/* Every CRC path (SIMD, zlib table, threaded chunks) equals zlib's crc32 for many lengths and
 * alignments. */
static void test_crc_paths(void **state)
{
    (void)state;
    size_t cap = ((size_t)9 << 20) + 300;
    unsigned char *b = malloc(cap);
    assert_non_null(b);
    for (size_t i = 0; i < cap; i++) b[i] = (unsigned char)(ckpt_mix(i * 31 + 7) >> 13);
    uint64_t rng = 99;
    for (int trial = 0; trial < 400; trial++) {
        size_t off = (size_t)(ckpt_mix(rng++) % 64);
        size_t len = trial < 200 ? (size_t)trial : (size_t)(ckpt_mix(rng++) % 100000);
        uint32_t want = (uint32_t)crc32(0L, b + off, (uInt)len);
        assert_int_equal(fm_checkpoint_crc32_serial(b + off, len, 1), want);
        assert_int_equal(fm_checkpoint_crc32_serial(b + off, len, 0), want);
        assert_int_equal(fm_checkpoint_crc32(b + off, len), want);
    }
    size_t len = cap - 37; /* several 4 MiB chunks plus a ragged end */
    uint32_t want = (uint32_t)crc32(0L, b + 37, (uInt)len);
    assert_int_equal(fm_checkpoint_crc32(b + 37, len), want);
    assert_int_equal(fm_checkpoint_crc32_serial(b + 37, len, 1), want);
    /* A flipped bit anywhere changes the CRC. */
    b[12345] ^= 4;
    assert_true(fm_checkpoint_crc32(b + 37, len) != want);
    free(b);
}

/* The partition covers every element exactly once, on row boundaries, for random tables. */
static void test_partition(void **state)
{
    (void)state;
    uint64_t rng = 12345;
    for (int trial = 0; trial < 200; trial++) {
        int nt = 1 + (int)(ckpt_mix(rng++) % 9);
        fm_checkpoint_tensor t[9];
        memset(t, 0, sizeof t);
        size_t off = 0;
        for (int i = 0; i < nt; i++) {
            snprintf(t[i].name, sizeof t[i].name, "t%d", i);
            t[i].ndim = 1 + (int)(ckpt_mix(rng++) % 3);
            size_t n = 1;
            for (int k = 0; k < t[i].ndim; k++) {
                t[i].shape[k] = 1 + (int64_t)(ckpt_mix(rng++) % 13);
                n *= (size_t)t[i].shape[k];
            }
            t[i].offset = off;
            off += n;
        }
        fm_checkpoint_group g[2] = {{"a", t, nt, NULL, off, NULL, 0},
                                    {"b", t, nt, NULL, off, NULL, 0}};
        int nranks = 1 + (int)(ckpt_mix(rng++) % 8);
        for (int gi = 0; gi < 2; gi++)
            for (int i = 0; i < nt; i++) {
                size_t n = 1, row = 1;
                for (int k = 0; k < t[i].ndim; k++) n *= (size_t)t[i].shape[k];
                for (int k = 1; k < t[i].ndim; k++) row *= (size_t)t[i].shape[k];
                size_t expect_lo = 0;
                for (int r = 0; r < nranks; r++) {
                    size_t lo, hi;
                    expect_ok(fm_checkpoint_file_part(g, 2, nranks, r, gi, i, &lo, &hi));
                    if (hi > lo) {
                        assert_int_equal(lo, expect_lo);
                        expect_lo = hi;
                    }
                    assert_int_equal(lo % row, 0);
                    assert_int_equal(hi % row, 0);
                }
                assert_int_equal(expect_lo, n);
            }
    }
}

/* A ZeRO-like plan for the synthetic table: nranks+1 offsets, each split point moved down to a row
 * boundary of its tensor; with 3 or more ranks rank 1's part is empty. */
static void shard_parts(const ckpt_synth *s, int nranks, size_t *parts)
{
    parts[0] = 0;
    parts[nranks] = s->numel;
    for (int r = 1; r < nranks; r++) {
        size_t p = s->numel * (size_t)r / (size_t)nranks;
        for (int i = 0; i < s->ntensors; i++) {
            const fm_checkpoint_tensor *t = &s->table[i];
            size_t n = 1, row = 1;
            for (int k = 0; k < t->ndim; k++) n *= (size_t)t->shape[k];
            for (int k = 1; k < t->ndim; k++) row *= (size_t)t->shape[k];
            if (p >= t->offset && p < t->offset + n) p -= (p - t->offset) % row;
        }
        parts[r] = p < parts[r - 1] ? parts[r - 1] : p;
    }
    if (nranks >= 3) parts[2] = parts[1];
}

/* Each rank writes exactly its part of every group from buffers that hold only that part (the ZeRO
 * writer); the file is the ordinary one (any rank count reads it whole, CRCs included), and a
 * reader takes back its own part into a partial buffer; plans that cut a row are refused. */
static void test_shard_parts(void **state)
{
    (void)state;
    ckpt_synth s;
    assert_int_equal(ckpt_synth_gpt2(&s, 300, 16, 2, 12, 4242), 0);
    size_t *parts = malloc(sizeof *parts * ((size_t)g_size + 1));
    assert_non_null(parts);
    shard_parts(&s, g_size, parts);
    const size_t lo = parts[g_rank], hi = parts[g_rank + 1], mine = hi > lo ? hi - lo : 1;
    float *part[3];
    for (int g = 0; g < 3; g++) {
        part[g] = malloc(mine * sizeof(float));
        assert_non_null(part[g]);
        for (size_t i = lo; i < hi; i++) part[g][i - lo] = s.buf[g][i];
        /* params keep the whole buffer, moments only this rank's part */
        s.groups[g].parts = parts;
        if (g > 0) {
            s.groups[g].data = part[g];
            s.groups[g].base = lo;
        }
    }
    char path[512];
    ckpt_path(path, sizeof path, 30);
    fm_checkpoint_io_opts def = {1 << 20, NULL, 0};
    fm_checkpoint_file *f = NULL;
    expect_ok(fm_checkpoint_file_create(MPI_COMM_WORLD, path, CKPT_TEST_FORMAT, 1, &def, &f));
    expect_ok(fm_checkpoint_file_write_groups(f, s.groups, 3));
    fm_checkpoint_write_stats ws;
    expect_ok(fm_checkpoint_file_commit(&f, 0, &ws));
    fm_status st = NULL;
    assert_int_equal(read_ckpt(MPI_COMM_WORLD, 30, 4242, &st), -1);
    if (g_rank == 0) assert_int_equal(read_ckpt(MPI_COMM_NULL, 30, 4242, &st), -1);
    MPI_Barrier(MPI_COMM_WORLD);

    /* Read back: params whole (default partition, replicated), moments into the partial buffers. */
    for (int g = 0; g < 3; g++) {
        memset(part[g], 0, mine * sizeof(float));
        if (g == 0) {
            memset(s.buf[0], 0, s.numel * sizeof(float));
            s.groups[0].parts = NULL;
        }
    }
    int version = 0;
    expect_ok(fm_checkpoint_file_open(MPI_COMM_WORLD, path, CKPT_TEST_FORMAT, &version, NULL, &f));
    expect_ok(fm_checkpoint_file_read_groups(f, s.groups, 3, 1));
    for (size_t i = 0; i < s.numel; i++) assert_true(s.buf[0][i] == ckpt_value(4242, 0, i));
    for (int g = 1; g < 3; g++)
        for (size_t i = lo; i < hi; i++) assert_true(part[g][i - lo] == ckpt_value(4242, g, i));

    /* A boundary inside a row of wte (16 floats per row) is refused on every rank. */
    size_t *bad = malloc(sizeof *bad * ((size_t)g_size + 2));
    assert_non_null(bad);
    for (int r = 0; r <= g_size; r++) bad[r] = r == 0 ? 0 : s.numel;
    if (g_size > 1) bad[1] = 16 * 5 + 3;
    fm_checkpoint_group bg = s.groups[1];
    bg.parts = bad;
    bg.data = s.buf[1];
    bg.base = 0;
    st = fm_checkpoint_file_read_groups(f, &bg, 1, 0);
    if (g_size > 1) {
        assert_non_null(st);
        assert_non_null(strstr(fm_status_message(st), "cuts a row of tensor wte.weight"));
        fm_status_free(&st);
    } else {
        expect_ok(st);
    }
    fm_checkpoint_file_close(&f);
    free(bad);
    for (int g = 0; g < 3; g++) free(part[g]);
    s.groups[1].data = s.buf[1];
    s.groups[2].data = s.buf[2];
    free(parts);
    ckpt_synth_free(&s);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_partition),
        cmocka_unit_test(test_crc_paths),
        cmocka_unit_test_setup_teardown(test_roundtrip, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_crc_attribute, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_cross_rank_counts, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_shard_parts, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_damage_detected, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_directory, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_load_newest, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_rank_local_failure, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_scan_dir, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_hints_and_alignment, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_small_items, setup_dir, teardown_dir),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    MPI_Finalize();
    return rc;
}

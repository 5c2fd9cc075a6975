/* test_comm.c — MPI tests of src/dist/comm.c: the process context, the small collectives, the parameter
 * checksum compare, the MPI error convention (FM_MPI_* macros, fm_comm_dup, fm_comm_agree) and the
 * bucketed non-blocking gradient all-reduce (values, averaging, backward
 * and shuffled order, splitting and merging, ranges left to wait_all, errors, determinism), the
 * ordered modes (reduce-scatter and all-reduce: the documented fixed reduction order, bit for bit,
 * with a scratch of one segment; gaps; errors), the all-gather of shards and the sums in rank
 * order.
 * Runs under mpiexec with 2 and 3 ranks (and 1 rank: the single-process path makes no MPI calls). */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fm_test.h"
#include <mpi.h>

#include "dist/comm.h"

static int setup(void **state)
{
    fm_comm *c = NULL;
    fm_status st = fm_comm_init(&c);
    if (st) {
        fm_status_print(st, stderr, 1);
        fm_status_free(&st);
        return -1;
    }
    *state = c;
    return 0;
}

static int teardown(void **state)
{
    fm_comm *c = *state;
    fm_comm_free(&c);
    assert_null(c);
    return 0;
}

/* ---- context and small collectives --------------------------------------------------------------- */

static void test_context(void **state)
{
    const fm_comm *c = *state;
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    assert_int_equal(c->rank, rank);
    assert_int_equal(c->size, size);
    /* The tests run on one machine: every rank is on the same node. */
    assert_int_equal(c->local_size, size);
    assert_int_equal(c->local_rank, rank);
    assert_int_equal(c->nodes, 1);
    assert_int_equal(c->node_index, 0);
    assert_true(strlen(c->host) > 0);
    int eh_is_return = 0;
    MPI_Errhandler eh;
    MPI_Comm_get_errhandler(c->world, &eh);
    eh_is_return = eh == MPI_ERRORS_RETURN;
    MPI_Errhandler_free(&eh);
    assert_true(eh_is_return);
}

static void test_bcast(void **state)
{
    const fm_comm *c = *state;
    unsigned char buf[1001];
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = c->rank == 0 ? (unsigned char)(i * 7 + 3) : 0;
    FM_ASSERT_OK(fm_comm_bcast(c, buf, sizeof buf));
    for (size_t i = 0; i < sizeof buf; i++) assert_int_equal(buf[i], (unsigned char)(i * 7 + 3));
    FM_ASSERT_OK(fm_comm_bcast(c, buf, 0));
}

static void test_any(void **state)
{
    const fm_comm *c = *state;
    int any = -1;
    FM_ASSERT_OK(fm_comm_any(c, 0, &any));
    assert_int_equal(any, 0);
    FM_ASSERT_OK(fm_comm_any(c, c->rank == c->size - 1 ? 5 : 0, &any)); /* only the last rank */
    assert_int_equal(any, 1);
    FM_ASSERT_OK(fm_comm_any(c, 1, &any));
    assert_int_equal(any, 1);
}

static void test_doubles(void **state)
{
    const fm_comm *c = *state;
    double v[3] = {c->rank + 1.0, -(c->rank + 1.0), 0.5};
    FM_ASSERT_OK(fm_comm_sum_doubles(c, v, 3));
    assert_true(v[0] == c->size * (c->size + 1) / 2.0);
    assert_true(v[1] == -c->size * (c->size + 1) / 2.0);
    assert_true(v[2] == 0.5 * c->size);
    double m[2] = {c->rank + 1.0, 10.0 - c->rank};
    FM_ASSERT_OK(fm_comm_max_doubles(c, m, 2));
    assert_true(m[0] == c->size && m[1] == 10.0);
    double n[2] = {c->rank + 1.0, 10.0 - c->rank};
    FM_ASSERT_OK(fm_comm_min_doubles(c, n, 2));
    assert_true(n[0] == 1.0 && n[1] == 10.0 - (c->size - 1));
}

static void test_gather(void **state)
{
    const fm_comm *c = *state;
    int mine = c->rank * 7 + 1;
    int *all = c->rank == 0 ? calloc((size_t)c->size, sizeof *all) : NULL;
    FM_ASSERT_OK(fm_comm_gather(c, &mine, sizeof mine, all));
    if (c->rank == 0)
        for (int r = 0; r < c->size; r++) assert_int_equal(all[r], r * 7 + 1);
    free(all);
    int *node = calloc((size_t)c->local_size, sizeof *node);
    FM_ASSERT_OK(fm_comm_node_allgather(c, &mine, sizeof mine, node));
    for (int r = 0; r < c->local_size; r++) assert_int_equal(node[r], r * 7 + 1);
    free(node);
    FM_ASSERT_OK(fm_comm_barrier(c));
}

/* A failing MPI call on the context's communicator returns (MPI_ERRORS_RETURN) and becomes an
 * FM_ERR_MPI status with MPI_Error_string's text. */
static fm_status bad_bcast(const fm_comm *c)
{
    int x = 0;
    FM_MPI_TRY(MPI_Bcast(&x, -1, MPI_INT, 0, c->world)); /* negative count: MPI_ERR_COUNT */
    return NULL;
}

static void test_mpi_error(void **state)
{
    const fm_comm *c = *state;
    fm_status st = bad_bcast(c);
    assert_non_null(st);
    assert_int_equal(fm_status_code(st), FM_ERR_MPI);
    assert_non_null(strstr(fm_status_message(st), "MPI_Bcast(&x, -1, MPI_INT, 0, c->world) failed: "));
    char text[MPI_MAX_ERROR_STRING];
    int len = 0, cls = 0;
    MPI_Error_class(MPI_ERR_COUNT, &cls);
    MPI_Error_string(cls, text, &len);
    assert_non_null(strstr(fm_status_message(st), text));
    fm_status_free(&st);
    assert_null(fm_comm_mpi_status(MPI_SUCCESS, "MPI_Barrier", __FILE__, __LINE__, __func__));
}

/* FM_MPI_TRY_GOTO stores the failure and jumps to the release code; FM_MPI_KEEP makes every call and
 * keeps the first failure. */
static fm_status goto_and_release(const fm_comm *c, int *released, int *after)
{
    fm_status st = NULL;
    int x = 0;
    FM_MPI_TRY_GOTO(st, done, MPI_Bcast(&x, 1, MPI_INT, 0, c->world));
    FM_MPI_TRY_GOTO(st, done, MPI_Bcast(&x, -2, MPI_INT, 0, c->world));
    *after = 1;
done:
    *released = 1;
    return st;
}

static void test_mpi_macros(void **state)
{
    const fm_comm *c = *state;
    int released = 0, after = 0;
    fm_status st = goto_and_release(c, &released, &after);
    assert_non_null(st);
    assert_int_equal(fm_status_code(st), FM_ERR_MPI);
    assert_non_null(strstr(fm_status_message(st), "MPI_Bcast(&x, -2, MPI_INT, 0, c->world) failed: "));
    assert_int_equal(released, 1);
    assert_int_equal(after, 0);
    fm_status_free(&st);

    int x = 0, calls = 0;
    FM_MPI_KEEP(st, MPI_Bcast(&x, -3, MPI_INT, 0, c->world));
    calls++;
    FM_MPI_KEEP(st, MPI_Bcast(&x, -4, MPI_INT, 0, c->world)); /* made, but the first failure stays */
    calls++;
    FM_MPI_KEEP(st, MPI_Barrier(c->world));
    calls++;
    assert_int_equal(calls, 3);
    assert_non_null(st);
    assert_non_null(strstr(fm_status_message(st), "-3"));
    assert_null(strstr(fm_status_message(st), "-4"));
    fm_status_free(&st);
    FM_MPI_KEEP(st, MPI_Barrier(c->world));
    assert_null(st);
}

/* A duplicate of MPI_COMM_WORLD (whose handler is MPI_ERRORS_ARE_FATAL) returns errors. */
static void test_comm_dup(void **state)
{
    (void)state;
    MPI_Comm d = MPI_COMM_NULL;
    FM_ASSERT_OK(fm_comm_dup(MPI_COMM_WORLD, &d));
    assert_true(d != MPI_COMM_NULL);
    MPI_Errhandler eh;
    MPI_Comm_get_errhandler(d, &eh);
    assert_true(eh == MPI_ERRORS_RETURN);
    int x = 0;
    assert_int_not_equal(MPI_Bcast(&x, -1, MPI_INT, 0, d), MPI_SUCCESS); /* returned, not aborted */
    fm_comm_dup_free(&d);
    assert_true(d == MPI_COMM_NULL);
    fm_comm_dup_free(&d); /* safe on MPI_COMM_NULL */
}

/* fm_comm_agree: nobody fails; one rank fails; every rank fails with its own code and message. */
static void test_agree(void **state)
{
    const fm_comm *c = *state;
    assert_null(fm_comm_agree(c->world, NULL));

    /* Only the last rank fails: every rank gets its code and message, collective. */
    int last = c->size - 1;
    fm_status st = c->rank == last ? FM_ERR(FM_ERR_IO, "disk of rank %d is full", last) : NULL;
    fm_status mine = st;
    st = fm_comm_agree(c->world, st);
    assert_non_null(st);
    assert_int_equal(fm_status_code(st), FM_ERR_IO);
    assert_true(fm_status_is_collective(st));
    char want[96];
    snprintf(want, sizeof want, "disk of rank %d is full", last);
    if (c->rank == last) {
        assert_ptr_equal(st, mine); /* its own status, traceback kept */
        assert_string_equal(fm_status_message(st), want);
    } else {
        /* rank 0 prints the error: it names the rank that saw it */
        snprintf(want + strlen(want), sizeof want - strlen(want), " (reported by rank %d)", last);
        assert_string_equal(fm_status_message(st), want);
    }
    fm_status_free(&st);

    /* Every rank fails differently: all return rank 0's code and message. */
    if (c->rank == 0) st = FM_ERR(FM_ERR_CONFIG, "rank 0: bad value");
    else st = FM_ERR(FM_ERR_INPUT, "rank %d: bad file", c->rank);
    st = fm_comm_agree(c->world, st);
    assert_non_null(st);
    assert_int_equal(fm_status_code(st), FM_ERR_CONFIG);
    assert_string_equal(fm_status_message(st), "rank 0: bad value");
    assert_true(fm_status_is_collective(st));
    fm_status_free(&st);

    /* A message longer than one broadcast piece arrives whole. */
    char *big = malloc(5001);
    assert_non_null(big);
    for (int i = 0; i < 5000; i++) big[i] = (char)('a' + i % 26);
    big[5000] = '\0';
    st = c->rank == 0 ? FM_ERR(FM_ERR_INTERNAL, "%s", big) : NULL;
    st = fm_comm_agree(c->world, st);
    assert_non_null(st);
    assert_string_equal(fm_status_message(st), big);
    fm_status_free(&st);
    free(big);

    /* Over a communicator smaller than the job (here: each rank alone) the error is shared by its
     * ranks but not collective: main must still end the other ranks. */
    MPI_Comm self = MPI_COMM_NULL;
    FM_ASSERT_OK(fm_comm_dup(MPI_COMM_SELF, &self));
    st = fm_comm_agree(self, FM_ERR(FM_ERR_IO, "only here"));
    assert_non_null(st);
    assert_true(fm_status_is_collective(st) == (c->size == 1));
    fm_status_free(&st);
    /* and over the node, which on the test machine is the whole job */
    st = fm_comm_agree(c->node, c->local_rank == 0 ? FM_ERR(FM_ERR_IO, "node") : NULL);
    assert_true(fm_status_is_collective(st));
    fm_status_free(&st);
    fm_comm_dup_free(&self);

    /* Serial use: the status comes back unchanged, not collective. */
    st = FM_ERR(FM_ERR_IO, "serial");
    mine = st;
    st = fm_comm_agree(MPI_COMM_NULL, st);
    assert_ptr_equal(st, mine);
    assert_false(fm_status_is_collective(st));
    fm_status_free(&st);
    assert_null(fm_comm_agree(MPI_COMM_NULL, NULL));
}

/* ---- checksum ------------------------------------------------------------------------------------- */

static void test_hash(void **state)
{
    (void)state;
    unsigned char a[133];
    for (size_t i = 0; i < sizeof a; i++) a[i] = (unsigned char)(i * 31 + 1);
    uint64_t h = fm_comm_hash64(a, sizeof a);
    assert_true(h == fm_comm_hash64(a, sizeof a));
    /* Every byte position matters, in the 32-byte body and in the tail. */
    for (size_t i = 0; i < sizeof a; i++) {
        a[i] ^= 0x10;
        assert_true(fm_comm_hash64(a, sizeof a) != h);
        a[i] ^= 0x10;
    }
    assert_true(fm_comm_hash64(a, sizeof a - 1) != h);
    /* Swapping two 8-byte words changes the hash (the lanes are not a plain sum). */
    unsigned char b[64];
    memcpy(b, a, 64);
    uint64_t hb = fm_comm_hash64(b, 64);
    unsigned char t[8];
    memcpy(t, b, 8);
    memcpy(b, b + 32, 8);
    memcpy(b + 32, t, 8);
    assert_true(fm_comm_hash64(b, 64) != hb);
    assert_true(fm_comm_hash64(NULL, 0) == fm_comm_hash64(a, 0));
    /* The same value on every machine and in every version (computed by an independent Python
     * implementation): a change to the lanes or to core/rng.h's finaliser fails here. */
    unsigned char c[133];
    for (size_t i = 0; i < sizeof c; i++) c[i] = (unsigned char)(i * 31 + 1);
    assert_true(fm_comm_hash64(c, sizeof c) == UINT64_C(0x0227392cae202c18));
    assert_true(fm_comm_hash64("fmtrain", 7) == UINT64_C(0x9d2ae8831b1cc412));
    assert_true(fm_comm_hash64(NULL, 0) == UINT64_C(0x38712ec1168aaeba));
}

static void test_identical_ok(void **state)
{
    const fm_comm *c = *state;
    float p[1000];
    for (int i = 0; i < 1000; i++) p[i] = (float)i * 0.25f;
    FM_ASSERT_OK(fm_comm_check_identical(c, p, sizeof p, "parameters"));
}

static void test_identical_mismatch(void **state)
{
    const fm_comm *c = *state;
    if (c->size < 2) skip();
    float p[1000];
    for (int i = 0; i < 1000; i++) p[i] = (float)i * 0.25f;
    if (c->rank == c->size - 1) p[517] = 1e-30f; /* one parameter differs on the last rank */
    fm_status st = fm_comm_check_identical(c, p, sizeof p, "parameters");
    assert_non_null(st);
    assert_int_equal(fm_status_code(st), FM_ERR_INTERNAL);
    assert_true(fm_status_is_collective(st));
    const char *msg = fm_status_message(st);
    char want[32];
    snprintf(want, sizeof want, "(%d)", c->size - 1);
    assert_non_null(strstr(msg, "parameters differ across ranks"));
    assert_non_null(strstr(msg, want));
    fm_status_free(&st);

    /* A different byte count is reported as such. */
    st = fm_comm_check_identical(c, p, c->rank == 0 ? sizeof p : sizeof p - 4, "parameters");
    assert_non_null(st);
    assert_non_null(strstr(fm_status_message(st), "number of bytes"));
    fm_status_free(&st);
}

/* ---- the all-reduce engine ---------------------------------------------------------------------- */

/* Rank r's gradient i: small integers and halves, so sums and the average are exact in float. */
static float grad_value(int rank, size_t i)
{
    return (float)(rank + 1) * (float)(i % 97) + 0.5f * (float)rank;
}

static float expected_avg(int size, size_t i)
{
    return (float)(i % 97) * (float)(size + 1) / 2.0f + 0.25f * (float)(size - 1);
}

static void fill(const fm_comm *c, float *g, size_t n)
{
    for (size_t i = 0; i < n; i++) g[i] = grad_value(c->rank, i);
}

static void check_avg(const fm_comm *c, const float *g, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (g[i] != expected_avg(c->size, i))
            fail_msg("element %zu: got %g, expected %g", i, (double)g[i], (double)expected_avg(c->size, i));
}

/* The layers of the bucket tests: uneven sizes (a 1-element one, ones below and above the bucket
 * bounds), reported last to first as a backward pass does. */
enum { K_LAYERS = 9 };
static const size_t k_layer_sizes[K_LAYERS] = {7, 300, 1000, 64, 2500, 13, 4000, 1, 2115};

/* off[l] = the offset of layer l in the flat buffer; returns the buffer's element count. */
static size_t layer_offsets(size_t off[K_LAYERS])
{
    size_t count = 0;
    for (int l = 0; l < K_LAYERS; l++) {
        off[l] = count;
        count += k_layer_sizes[l];
    }
    return count;
}

/* Layers of uneven sizes, reported last to first as a backward pass does. */
static void test_allreduce_backward(void **state)
{
    const fm_comm *c = *state;
    const size_t *sizes = k_layer_sizes;
    const int nl = K_LAYERS;
    size_t off[K_LAYERS];
    const size_t count = layer_offsets(off);
    float *g = malloc(sizeof *g * count);
    assert_non_null(g);
    fm_comm_allreduce *ar = NULL;
    /* 256-float buckets at most, ranges under 100 floats are merged */
    FM_ASSERT_OK(fm_comm_allreduce_init(&ar, c, g, count, 256 * sizeof(float), 100 * sizeof(float)));
    for (int step = 0; step < 3; step++) {
        fill(c, g, count);
        for (int l = nl - 1; l >= 0; l--) fm_comm_allreduce_ready(ar, off[l], sizes[l]);
        FM_ASSERT_OK(fm_comm_allreduce_wait_all(ar));
        check_avg(c, g, count);
        fm_comm_allreduce_stats s = fm_comm_allreduce_last_stats(ar);
        assert_int_equal(s.bytes, count * sizeof(float));
        assert_true(s.buckets >= (int)((count + 255) / 256));
        /* everything was reported during "backward"; only the last short range (held back for
         * merging) is started by wait_all */
        assert_int_equal(s.early_buckets, s.buckets - 1);
        assert_true(s.wait_s >= 0.0);
    }
    fm_comm_allreduce_free(&ar);
    assert_null(ar);
    free(g);
}

/* A range longer than the maximum is split into equal pieces; short neighbours are merged. */
static void test_allreduce_split_merge(void **state)
{
    const fm_comm *c = *state;
    float g[1000];
    fm_comm_allreduce *ar = NULL;

    FM_ASSERT_OK(fm_comm_allreduce_init(&ar, c, g, 1000, 256 * sizeof(float), 1));
    fill(c, g, 1000);
    fm_comm_allreduce_ready(ar, 0, 1000);
    FM_ASSERT_OK(fm_comm_allreduce_wait_all(ar));
    check_avg(c, g, 1000);
    assert_int_equal(fm_comm_allreduce_last_stats(ar).buckets, 4); /* 250 floats each */
    fm_comm_allreduce_free(&ar);

    /* 10 ranges of 10 floats, backward order, merged up to 50 floats: 2 buckets (+ the gap rest) */
    FM_ASSERT_OK(fm_comm_allreduce_init(&ar, c, g, 100, 1 << 20, 50 * sizeof(float)));
    fill(c, g, 100);
    for (int l = 9; l >= 0; l--) fm_comm_allreduce_ready(ar, (size_t)l * 10, 10);
    FM_ASSERT_OK(fm_comm_allreduce_wait_all(ar));
    check_avg(c, g, 100);
    assert_int_equal(fm_comm_allreduce_last_stats(ar).buckets, 2);
    assert_int_equal(fm_comm_allreduce_last_stats(ar).early_buckets, 2);

    /* Ascending order merges the same way. */
    fill(c, g, 100);
    for (int l = 0; l < 10; l++) fm_comm_allreduce_ready(ar, (size_t)l * 10, 10);
    FM_ASSERT_OK(fm_comm_allreduce_wait_all(ar));
    check_avg(c, g, 100);
    assert_int_equal(fm_comm_allreduce_last_stats(ar).buckets, 2);
    fm_comm_allreduce_free(&ar);

    /* No merging (min 1 byte): one bucket per range. */
    FM_ASSERT_OK(fm_comm_allreduce_init(&ar, c, g, 100, 1 << 20, 1));
    fill(c, g, 100);
    for (int l = 9; l >= 0; l--) fm_comm_allreduce_ready(ar, (size_t)l * 10, 10);
    FM_ASSERT_OK(fm_comm_allreduce_wait_all(ar));
    check_avg(c, g, 100);
    assert_int_equal(fm_comm_allreduce_last_stats(ar).buckets, 10);
    fm_comm_allreduce_free(&ar);

    /* Ranges that are not neighbours are never merged: 0-10 then 50-60 gives two buckets. */
    FM_ASSERT_OK(fm_comm_allreduce_init(&ar, c, g, 100, 1 << 20, 1 << 20));
    fill(c, g, 100);
    fm_comm_allreduce_ready(ar, 0, 10);
    fm_comm_allreduce_ready(ar, 50, 10);
    FM_ASSERT_OK(fm_comm_allreduce_wait_all(ar));
    check_avg(c, g, 100);
    fm_comm_allreduce_stats s = fm_comm_allreduce_last_stats(ar);
    assert_int_equal(s.early_buckets, 1); /* 0-10 was flushed early by the non-adjacent 50-60 */
    assert_int_equal(s.buckets, 4);       /* + 50-60 at wait_all, + the gaps 10-50 and 60-100 */
    fm_comm_allreduce_free(&ar);
}

/* Ranges in a shuffled order, some never reported (wait_all reduces those). */
static void test_allreduce_shuffled_and_gaps(void **state)
{
    const fm_comm *c = *state;
    enum { N = 50, L = 37 };
    size_t count = (size_t)N * L;
    float *g = malloc(sizeof *g * count);
    assert_non_null(g);
    int order[N];
    for (int i = 0; i < N; i++) order[i] = i;
    uint32_t x = 12345; /* the same permutation on every rank */
    for (int i = N - 1; i > 0; i--) {
        x = x * 1664525u + 1013904223u;
        int j = (int)(x % (uint32_t)(i + 1));
        int t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    fm_comm_allreduce *ar = NULL;
    FM_ASSERT_OK(fm_comm_allreduce_init(&ar, c, g, count, 64 * sizeof(float), 80 * sizeof(float)));
    fill(c, g, count);
    for (int i = 0; i < N; i++) fm_comm_allreduce_ready(ar, (size_t)order[i] * L, L);
    FM_ASSERT_OK(fm_comm_allreduce_wait_all(ar));
    check_avg(c, g, count);

    fill(c, g, count);
    for (int i = 0; i < N; i += 3) fm_comm_allreduce_ready(ar, (size_t)order[i] * L, L);
    FM_ASSERT_OK(fm_comm_allreduce_wait_all(ar));
    check_avg(c, g, count);
    fm_comm_allreduce_stats s = fm_comm_allreduce_last_stats(ar);
    assert_true(s.buckets > s.early_buckets);

    /* Nothing reported at all: wait_all reduces the whole buffer in max-size pieces. */
    fill(c, g, count);
    FM_ASSERT_OK(fm_comm_allreduce_wait_all(ar));
    check_avg(c, g, count);
    s = fm_comm_allreduce_last_stats(ar);
    assert_int_equal(s.early_buckets, 0);
    assert_int_equal(s.buckets, (int)((count + 63) / 64));
    fm_comm_allreduce_free(&ar);
    free(g);
}

static void test_allreduce_errors(void **state)
{
    const fm_comm *c = *state;
    float g[200];
    fm_comm_allreduce *ar = NULL;
    FM_ASSERT_OK(fm_comm_allreduce_init(&ar, c, g, 200, 1 << 20, 1));

    fill(c, g, 200);
    fm_comm_allreduce_ready(ar, 0, 50);
    fm_comm_allreduce_ready(ar, 40, 20); /* overlaps the first */
    fm_status st = fm_comm_allreduce_wait_all(ar);
    assert_non_null(st);
    assert_int_equal(fm_status_code(st), FM_ERR_INTERNAL);
    assert_non_null(strstr(fm_status_message(st), "twice"));
    fm_status_free(&st);

    fill(c, g, 200);
    fm_comm_allreduce_ready(ar, 190, 20); /* past the end */
    st = fm_comm_allreduce_wait_all(ar);
    assert_non_null(st);
    assert_non_null(strstr(fm_status_message(st), "outside the gradient buffer"));
    fm_status_free(&st);

    /* The engine is usable again after an error. */
    fill(c, g, 200);
    fm_comm_allreduce_ready(ar, 100, 100);
    fm_comm_allreduce_ready(ar, 0, 0); /* empty ranges are ignored */
    FM_ASSERT_OK(fm_comm_allreduce_wait_all(ar));
    check_avg(c, g, 200);
    fm_comm_allreduce_free(&ar);
    fm_comm_allreduce_free(&ar); /* safe on NULL */
}

/* Arbitrary floats: the result is bit-identical on every rank, equal to one blocking all-reduce of
 * the whole buffer (with 1 or 2 ranks each element is one addition), and the same on a rerun. */
static void test_allreduce_deterministic(void **state)
{
    const fm_comm *c = *state;
    enum { N = 30011 };
    float *g = malloc(sizeof *g * N), *ref = malloc(sizeof *ref * N), *first = malloc(sizeof *first * N);
    assert_true(g && ref && first);
    uint64_t s = 0x9e3779b97f4a7c15ULL * (uint64_t)(c->rank + 1);
    for (int i = 0; i < N; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ref[i] = (float)((double)(s >> 11) / 9007199254740992.0 - 0.5) * 1e-3f;
    }
    fm_comm_allreduce *ar = NULL;
    FM_ASSERT_OK(fm_comm_allreduce_init(&ar, c, g, N, 4096 * sizeof(float), 1000 * sizeof(float)));
    for (int run = 0; run < 2; run++) {
        memcpy(g, ref, sizeof *g * N);
        for (int off = N; off > 0;) {
            int len = off >= 777 ? 777 : off;
            off -= len;
            fm_comm_allreduce_ready(ar, (size_t)off, (size_t)len);
        }
        FM_ASSERT_OK(fm_comm_allreduce_wait_all(ar));
        if (run == 0)
            memcpy(first, g, sizeof *g * N);
        else
            assert_memory_equal(first, g, sizeof *g * N);
    }
    FM_ASSERT_OK(fm_comm_check_identical(c, g, sizeof *g * N, "averaged gradients"));
    if (c->size <= 2) {
        MPI_Allreduce(MPI_IN_PLACE, ref, N, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        float scale = (float)(1.0 / c->size);
        for (int i = 0; i < N; i++) {
            if (c->size > 1) ref[i] *= scale;
            if (memcmp(&ref[i], &g[i], sizeof(float)) != 0)
                fail_msg("element %d: %.9g vs blocking all-reduce %.9g", i, (double)g[i], (double)ref[i]);
        }
    }
    fm_comm_allreduce_free(&ar);
    free(g);
    free(ref);
    free(first);
}

/* ---- the reduce-scatter engine, the all-gather and ordered sums -------------------------------- */

/* Rank r's gradient i: arbitrary floats (not exact sums), the same function on every rank, so each
 * rank can compute what every other rank contributes. */
static float rs_value(int rank, size_t i, int step)
{
    uint64_t z = ((uint64_t)rank << 40) ^ ((uint64_t)step << 32) ^ (uint64_t)i;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)((double)(z >> 11) / 9007199254740992.0 - 0.5) * (float)(1 + rank);
}

/* The documented order for element i of rank q's shard: ((g_{q+1} + g_{q+2}) + ... + g_q) / size. */
static float rs_expected(int size, int q, size_t i, int step)
{
    float sum = rs_value((q + 1) % size, i, step);
    for (int k = 2; k <= size; k++) sum = sum + rs_value((q + k) % size, i, step);
    return size > 1 ? sum * (float)(1.0 / size) : sum;
}

/* An uneven shard plan over count elements (rank 1's shard empty when there are 3 or more ranks). */
static void rs_bounds(int size, size_t count, size_t *b)
{
    b[0] = 0;
    for (int r = 1; r < size; r++) b[r] = count * (size_t)r / (size_t)size + (size_t)(r * 7 % 13);
    if (size >= 3) b[2] = b[1];
    b[size] = count;
}

/* Every rank checks its buffer, then all agree, so that a wrong element fails the test on every
 * rank at once (a rank failing alone would leave the others waiting in the next collective). */
static void rs_check_mode(const fm_comm *c, const float *g, size_t count, const size_t *b, int step,
                          int scatter)
{
    long bad = -1;
    float got = 0.0f, want = 0.0f;
    for (size_t i = 0; i < count && bad < 0; i++) {
        int q = 0;
        while (q < c->size - 1 && i >= b[q + 1]) q++;
        int mine = q == c->rank;
        want = mine || !scatter ? rs_expected(c->size, q, i, step) : rs_value(c->rank, i, step);
        got = g[i];
        if (memcmp(&want, &got, sizeof want) != 0) bad = (long)i;
    }
    long worst = bad;
    MPI_Allreduce(&bad, &worst, 1, MPI_LONG, MPI_MAX, MPI_COMM_WORLD);
    if (bad >= 0)
        fail_msg("rank %d, step %d, element %ld: %.9g, expected %.9g", c->rank, step, bad,
                 (double)got, (double)want);
    if (worst >= 0) fail_msg("another rank found a wrong element (step %d)", step);
}

/* Every rank checks its buffer, then all agree, so that a wrong element fails the test on every
 * rank at once (a rank failing alone would leave the others waiting in the next collective).
 * Reduce-scatter: this rank's shard holds the ordered average, the rest its own values. */
static void rs_check(const fm_comm *c, const float *g, size_t count, const size_t *b, int step)
{
    rs_check_mode(c, g, count, b, step, 1);
}

/* The bucket tests' layers (offsets into off, K_LAYERS of them) and an uneven shard plan over them
 * (*b, malloc'ed, size+1 bounds); returns the buffer's length. */
static size_t rs_layer_plan(const fm_comm *c, size_t *off, size_t **b)
{
    const size_t count = layer_offsets(off);
    *b = malloc(sizeof **b * ((size_t)c->size + 1));
    assert_non_null(*b);
    rs_bounds(c->size, count, *b);
    return count;
}

/* Layers reported last to first (split, merged, the last held back for wait_all); a one-segment
 * scratch, so every receive waits for the previous one to free its slot; several steps. */
static void test_reduce_scatter_order(void **state)
{
    const fm_comm *c = *state;
    const size_t *sizes = k_layer_sizes;
    const int nl = K_LAYERS;
    size_t off[K_LAYERS], *b = NULL;
    const size_t count = rs_layer_plan(c, off, &b);
    float *g = malloc(sizeof *g * count);
    assert_non_null(g);
    for (int scratch = 0; scratch < 2; scratch++) {
        fm_comm_allreduce *ar = NULL;
        /* 256-float buckets (and segments), merged under 100; scratch: one slot, or the default */
        FM_ASSERT_OK(fm_comm_reduce_scatter_init(&ar, c, g, count, b, 256 * sizeof(float),
                                                 100 * sizeof(float), scratch ? 0 : 1));
        assert_true(fm_comm_reduce_scatter_scratch_bytes(ar) ==
                    fm_comm_reduce_scatter_scratch_for(count, c->size, 256 * sizeof(float),
                                                       scratch ? 0 : 1));
        if (c->size > 1 && !scratch)
            assert_int_equal(fm_comm_reduce_scatter_scratch_bytes(ar), 256 * sizeof(float));
        for (int step = 0; step < 3; step++) {
            for (size_t i = 0; i < count; i++) g[i] = rs_value(c->rank, i, step);
            for (int l = nl - 1; l >= 0; l--) fm_comm_allreduce_ready(ar, off[l], sizes[l]);
            FM_ASSERT_OK(fm_comm_allreduce_wait_all(ar));
            rs_check(c, g, count, b, step);
            fm_comm_allreduce_stats s = fm_comm_allreduce_last_stats(ar);
            assert_int_equal(s.early_buckets, s.buckets - 1);
            if (c->size > 1) assert_true(s.segments >= s.buckets);
        }
        fm_comm_allreduce_free(&ar);
        assert_null(ar);
    }
    /* Ordered all-reduce over the same plan: every element everywhere, the same bits as the
     * reduce-scatter's owner got (so zero 0, 1 and 2 compute the same gradients). */
    fm_comm_allreduce *ar = NULL;
    FM_ASSERT_OK(fm_comm_allreduce_init_ordered(&ar, c, g, count, b, 256 * sizeof(float),
                                                100 * sizeof(float), 1));
    for (int step = 0; step < 3; step++) {
        for (size_t i = 0; i < count; i++) g[i] = rs_value(c->rank, i, step);
        for (int l = nl - 1; l >= 0; l--) fm_comm_allreduce_ready(ar, off[l], sizes[l]);
        FM_ASSERT_OK(fm_comm_allreduce_wait_all(ar));
        rs_check_mode(c, g, count, b, step, 0);
    }
    FM_ASSERT_OK(fm_comm_check_identical(c, g, sizeof *g * count, "averaged gradients"));
    fm_comm_allreduce_free(&ar);
    free(g);
    free(b);
}

/* Shuffled ranges, ranges never reported, nothing reported; the errors of the all-reduce mode. */
static void test_reduce_scatter_gaps_errors(void **state)
{
    const fm_comm *c = *state;
    enum { N = 40, L = 53 };
    size_t count = (size_t)N * L;
    size_t *b = malloc(sizeof *b * ((size_t)c->size + 1));
    float *g = malloc(sizeof *g * count);
    assert_true(b && g);
    rs_bounds(c->size, count, b);
    fm_comm_allreduce *ar = NULL;
    FM_ASSERT_OK(fm_comm_reduce_scatter_init(&ar, c, g, count, b, 64 * sizeof(float),
                                             80 * sizeof(float), 5 * 64 * sizeof(float)));
    for (int step = 0; step < 3; step++) {
        for (size_t i = 0; i < count; i++) g[i] = rs_value(c->rank, i, step);
        for (int i = 0; step < 2 && i < N; i += step + 2)
            fm_comm_allreduce_ready(ar, (size_t)((i * 17) % N) * L, L);
        FM_ASSERT_OK(fm_comm_allreduce_wait_all(ar));
        rs_check(c, g, count, b, step);
    }
    fm_comm_allreduce_ready(ar, 0, 50);
    fm_comm_allreduce_ready(ar, 40, 20); /* overlaps the first */
    fm_status st = fm_comm_allreduce_wait_all(ar);
    assert_non_null(st);
    assert_non_null(strstr(fm_status_message(st), "twice"));
    fm_status_free(&st);
    for (size_t i = 0; i < count; i++) g[i] = rs_value(c->rank, i, 9);
    FM_ASSERT_OK(fm_comm_allreduce_wait_all(ar)); /* usable again */
    rs_check(c, g, count, b, 9);
    fm_comm_allreduce_free(&ar);

    /* Bad plans are refused before anything is created (the same answer on every rank). */
    b[c->size] = count + 1;
    st = fm_comm_reduce_scatter_init(&ar, c, g, count, b, 0, 0, 0);
    assert_non_null(st);
    assert_null(ar);
    assert_non_null(strstr(fm_status_message(st), "shard bounds"));
    fm_status_free(&st);
    free(g);
    free(b);
}

/* Each rank fills its shard (in the pieces an optimizer reports), the others arrive. */
static void test_allgather(void **state)
{
    const fm_comm *c = *state;
    const size_t count = 5000;
    size_t *b = malloc(sizeof *b * ((size_t)c->size + 1));
    float *buf = malloc(sizeof *buf * count);
    assert_true(b && buf);
    rs_bounds(c->size, count, b);
    fm_comm_allgather *ag = NULL;
    FM_ASSERT_OK(fm_comm_allgather_init(&ag, c, buf, count, b, 100 * sizeof(float)));
    for (int step = 0; step < 3; step++) {
        for (size_t i = 0; i < count; i++) buf[i] = -1.0f;
        FM_ASSERT_OK(fm_comm_allgather_start(ag));
        size_t lo = b[c->rank], hi = b[c->rank + 1];
        for (size_t a = lo; a < hi;) {
            size_t n = (size_t)(37 + 61 * step) < hi - a ? (size_t)(37 + 61 * step) : hi - a;
            if (step == 2 && a > lo) break; /* the rest is left to wait_all */
            for (size_t i = a; i < a + n; i++) buf[i] = rs_value(7, i, step);
            FM_ASSERT_OK(fm_comm_allgather_ready(ag, a, n));
            a += n;
        }
        for (size_t i = lo; i < hi; i++) buf[i] = rs_value(7, i, step);
        FM_ASSERT_OK(fm_comm_allgather_wait_all(ag));
        for (size_t i = 0; i < count; i++)
            if (buf[i] != rs_value(7, i, step))
                fail_msg("step %d, element %zu: %g", step, i, (double)buf[i]);
        fm_comm_allgather_stats s = fm_comm_allgather_last_stats(ag);
        assert_int_equal(s.bytes, (count - (hi - lo)) * sizeof(float));
    }
    /* Out of order, and wait_all without start: refused. */
    FM_ASSERT_OK(fm_comm_allgather_start(ag));
    fm_status st = b[c->rank + 1] > b[c->rank] + 1 ? fm_comm_allgather_ready(ag, b[c->rank] + 1, 1)
                                                  : fm_comm_allgather_ready(ag, count, 1);
    assert_non_null(st);
    assert_non_null(strstr(fm_status_message(st), "in order"));
    fm_status_free(&st);
    for (size_t i = b[c->rank]; i < b[c->rank + 1]; i++) buf[i] = 3.0f;
    FM_ASSERT_OK(fm_comm_allgather_wait_all(ag));
    for (size_t i = 0; i < count; i++) assert_true(buf[i] == 3.0f);
    st = fm_comm_allgather_wait_all(ag);
    assert_non_null(st);
    fm_status_free(&st);
    fm_comm_allgather_free(&ag);
    assert_null(ag);
    fm_comm_allgather_free(&ag);
    free(buf);
    free(b);
}

/* Node-shared memory: one buffer for the node (rank 0's writes seen by all after the barrier), a
 * part per rank (each rank's writes seen by the others), and a request larger than the backing
 * file system refused with a message that says what to do. */
static void test_shared_memory(void **state)
{
    const fm_comm *c = *state;
    assert_true(fm_comm_single_node(c)); /* mpiexec on one machine */
    fm_comm_shared *one = NULL, *per = NULL;
    FM_ASSERT_OK(fm_comm_shared_alloc(c, 4096, 0, &one));
    FM_ASSERT_OK(fm_comm_shared_alloc(c, 1000 * sizeof(int), 1, &per));
    assert_int_equal(fm_comm_shared_bytes(per), 1000 * sizeof(int));
    int *o = fm_comm_shared_ptr(one, c->local_rank), *mine = fm_comm_shared_ptr(per, c->local_rank);
    assert_true(o && mine && o == fm_comm_shared_ptr(one, 0));
    assert_int_equal((uintptr_t)o % 4096, 0); /* page-aligned, as the model's views assume */
    assert_int_equal((uintptr_t)mine % 4096, 0);
    for (int i = 0; i < 1000; i++) assert_int_equal(mine[i], 0); /* zeroed */
    if (c->local_rank == 0) o[5] = 42;
    for (int i = 0; i < 1000; i++) mine[i] = 1000 * c->local_rank + i;
    FM_ASSERT_OK(fm_comm_shared_barrier(per));
    assert_int_equal(o[5], 42);
    for (int r = 0; r < c->local_size; r++) {
        const int *p = fm_comm_shared_ptr(per, r);
        assert_non_null(p);
        assert_int_equal(p[999], 1000 * r + 999);
    }
    assert_null(fm_comm_shared_ptr(per, c->local_size));
    FM_ASSERT_OK(fm_comm_shared_barrier(per)); /* nobody reads a part after it is freed */
    fm_comm_shared_free(&one);
    fm_comm_shared_free(&per);
    assert_null(per);
    fm_comm_shared_free(&per);
    fm_status st = fm_comm_shared_alloc(c, (size_t)1 << 52, 0, &one); /* 4 PiB */
    assert_non_null(st);
    assert_null(one);
    assert_non_null(strstr(fm_status_message(st), "shared_memory = off"));
    fm_status_free(&st);
}

/* The shared-memory engines give the message engines' bits: the documented order, the same layers
 * reported last to first, several steps (the counters run on across steps), reduce-scatter and
 * all-reduce. */
static void test_shared_reduce(void **state)
{
    const fm_comm *c = *state;
    const size_t *sizes = k_layer_sizes;
    const int nl = K_LAYERS;
    size_t off[K_LAYERS], *b = NULL;
    const size_t count = rs_layer_plan(c, off, &b);
    fm_comm_shared *win = NULL;
    FM_ASSERT_OK(fm_comm_shared_alloc(c, count * sizeof(float), 1, &win));
    float *g = fm_comm_shared_ptr(win, c->local_rank);
    for (int scatter = 1; scatter >= 0; scatter--) {
        fm_comm_allreduce *ar = NULL;
        if (scatter)
            FM_ASSERT_OK(fm_comm_reduce_scatter_init_shared(
                &ar, c, win, count, b, 256 * sizeof(float), 100 * sizeof(float)));
        else
            FM_ASSERT_OK(fm_comm_allreduce_init_shared(&ar, c, win, count, b, 256 * sizeof(float),
                                                       100 * sizeof(float)));
        assert_int_equal(fm_comm_reduce_scatter_scratch_bytes(ar), 0);
        for (int step = 0; step < 4; step++) {
            for (size_t i = 0; i < count; i++) g[i] = rs_value(c->rank, i, step);
            /* step 3: nothing reported, everything started by wait_all */
            for (int l = nl - 1; l >= 0 && step < 3; l--)
                fm_comm_allreduce_ready(ar, off[l], sizes[l]);
            FM_ASSERT_OK(fm_comm_allreduce_wait_all(ar));
            rs_check_mode(c, g, count, b, step, scatter);
            fm_comm_allreduce_stats s = fm_comm_allreduce_last_stats(ar);
            assert_int_equal(s.segments, 0);
            assert_int_equal(s.early_buckets, step < 3 ? s.buckets - 1 : 0);
        }
        if (!scatter)
            FM_ASSERT_OK(fm_comm_check_identical(c, g, sizeof *g * count, "averaged gradients"));
        fm_comm_allreduce_free(&ar);
        assert_null(ar);
    }
    /* A window smaller than the buffer is refused on every rank. */
    fm_comm_allreduce *ar = NULL;
    fm_status st = fm_comm_reduce_scatter_init_shared(&ar, c, win, count + 1, NULL, 0, 0);
    assert_non_null(st);
    fm_status_free(&st);
    size_t *b1 = malloc(sizeof *b1 * ((size_t)c->size + 1));
    assert_non_null(b1);
    rs_bounds(c->size, count + 1, b1);
    st = fm_comm_reduce_scatter_init_shared(&ar, c, win, count + 1, b1, 0, 0);
    assert_non_null(st);
    assert_null(ar);
    assert_non_null(strstr(fm_status_message(st), "bytes per rank"));
    fm_status_free(&st);
    fm_comm_shared_free(&win);
    free(b1);
    free(b);
}

/* Rank order, not MPI's: 1e16 + 1 - 1e16 style sums whose value depends on it. */
static void test_sum_ordered(void **state)
{
    const fm_comm *c = *state;
    double v[3] = {c->rank == 0 ? 1e16 : 1.0, (double)c->rank, c->rank % 2 ? -1e16 : 0.5};
    double want[3] = {0, 0, 0};
    for (int r = 0; r < c->size; r++) {
        want[0] += r == 0 ? 1e16 : 1.0;
        want[1] += (double)r;
        want[2] += r % 2 ? -1e16 : 0.5;
    }
    FM_ASSERT_OK(fm_comm_sum_ordered(c, v, 3));
    for (int k = 0; k < 3; k++) assert_memory_equal(&v[k], &want[k], sizeof(double));
    FM_ASSERT_OK(fm_comm_sum_ordered(c, v, 0));
}

int main(int argc, char **argv)
{
    int provided;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_context),
        cmocka_unit_test(test_bcast),
        cmocka_unit_test(test_any),
        cmocka_unit_test(test_doubles),
        cmocka_unit_test(test_gather),
        cmocka_unit_test(test_mpi_error),
        cmocka_unit_test(test_mpi_macros),
        cmocka_unit_test(test_comm_dup),
        cmocka_unit_test(test_agree),
        cmocka_unit_test(test_hash),
        cmocka_unit_test(test_identical_ok),
        cmocka_unit_test(test_identical_mismatch),
        cmocka_unit_test(test_allreduce_backward),
        cmocka_unit_test(test_allreduce_split_merge),
        cmocka_unit_test(test_allreduce_shuffled_and_gaps),
        cmocka_unit_test(test_allreduce_errors),
        cmocka_unit_test(test_allreduce_deterministic),
        cmocka_unit_test(test_reduce_scatter_order),
        cmocka_unit_test(test_reduce_scatter_gaps_errors),
        cmocka_unit_test(test_allgather),
        cmocka_unit_test(test_sum_ordered),
        cmocka_unit_test(test_shared_memory),
        cmocka_unit_test(test_shared_reduce),
    };
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    MPI_Finalize();
    return rc;
}

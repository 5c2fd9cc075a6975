/* test_bind.c — placement on this machine under MPI (2 ranks; also registered with 3 ranks,
 * more than the test machines' 2 cores): fm_topology_place binds the process inside its starting
 * binding, sets the OpenMP thread count and pins each OpenMP thread to one core of the rank's share;
 * ranks get disjoint cores when there are enough, and a warning (not an error) when there are not;
 * rank 0's table lists every rank. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fm_test.h"
#include <mpi.h>
#include <omp.h>

#include "dist/topology.h"

typedef struct fixture {
    fm_comm *comm;
    hwloc_topology_t topo;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f) return -1;
    fm_status st = fm_comm_init(&f->comm);
    if (!st) st = fm_topology_load(&f->topo, NULL);
    if (st) {
        fm_status_print(st, stderr, 1);
        fm_status_free(&st);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    hwloc_topology_destroy(f->topo);
    fm_comm_free(&f->comm);
    free(f);
    return 0;
}

static hwloc_bitmap_t parse(const char *list)
{
    hwloc_bitmap_t s = hwloc_bitmap_alloc();
    assert_int_equal(hwloc_bitmap_list_sscanf(s, list), 0);
    return s;
}

static int cores_in(hwloc_topology_t t, hwloc_const_bitmap_t set)
{
    int n = 0, depth = hwloc_get_type_or_below_depth(t, HWLOC_OBJ_CORE);
    hwloc_obj_t o = NULL;
    while ((o = hwloc_get_next_obj_by_depth(t, depth, o)))
        if (hwloc_bitmap_intersects(o->cpuset, set)) n++;
    return n;
}

static void test_place_auto(void **state)
{
    fixture *f = *state;
    const fm_comm *c = f->comm;
    hwloc_bitmap_t before = hwloc_bitmap_alloc();
    FM_ASSERT_OK(fm_topology_current_binding(f->topo, before));

    /* The cores the node's ranks may use together: the union of their starting bindings. */
    char mine[FM_TOPOLOGY_LIST_MAX], *lists = calloc((size_t)c->local_size, FM_TOPOLOGY_LIST_MAX);
    assert_non_null(lists);
    hwloc_bitmap_list_snprintf(mine, sizeof mine, before);
    FM_ASSERT_OK(fm_comm_node_allgather(c, mine, sizeof mine, lists));
    hwloc_bitmap_t node_set = hwloc_bitmap_alloc();
    for (int i = 0; i < c->local_size; i++) {
        hwloc_bitmap_t b = parse(lists + (size_t)i * FM_TOPOLOGY_LIST_MAX);
        hwloc_bitmap_or(node_set, node_set, b);
        hwloc_bitmap_free(b);
    }
    free(lists);
    int node_cores = cores_in(f->topo, node_set);

    fm_topology_options opt = {FM_BIND_AUTO, 0, 0};
    fm_topology_plan plan;
    FM_ASSERT_OK(fm_topology_place(c, &opt, &plan));
    assert_int_equal(plan.rank, c->rank);
    assert_int_equal(plan.local_rank, c->local_rank);
    assert_string_equal(plan.host, c->host);
    assert_int_equal(plan.gpu, -1);
    assert_null(strstr(plan.warning, "could not"));

    /* Never widened; the process is bound to exactly the planned set. */
    hwloc_bitmap_t set = parse(plan.cpuset), share = parse(plan.share), now = hwloc_bitmap_alloc();
    assert_true(hwloc_bitmap_isincluded(set, before));
    assert_int_equal(hwloc_get_cpubind(f->topo, now, HWLOC_CPUBIND_PROCESS), 0);
    if (!hwloc_bitmap_isequal(now, set)) {
        char a[256];
        hwloc_bitmap_list_snprintf(a, sizeof a, now);
        fail_msg("rank %d: process bound to %s, plan says %s", c->rank, a, plan.cpuset);
    }

    /* OpenMP: the planned thread count, each thread on one core of the share, distinct cores while
     * there are enough. */
    assert_int_equal(omp_get_max_threads(), plan.threads);
    assert_int_equal(plan.threads, plan.cores);
    int nt = plan.threads;
    hwloc_bitmap_t *tb = calloc((size_t)nt, sizeof *tb);
    assert_non_null(tb);
    int bad = 0;
#pragma omp parallel num_threads(nt) reduction(+ : bad)
    {
        int t = omp_get_thread_num();
        tb[t] = hwloc_bitmap_alloc();
        if (hwloc_get_cpubind(f->topo, tb[t], HWLOC_CPUBIND_THREAD) != 0) bad++;
    }
    assert_int_equal(bad, 0);
    for (int t = 0; t < nt; t++) {
        assert_true(hwloc_bitmap_isincluded(tb[t], share));
        assert_int_equal(cores_in(f->topo, tb[t]), 1);
        for (int u = 0; u < t; u++)
            if (t < plan.cores) assert_false(hwloc_bitmap_intersects(tb[t], tb[u]));
    }
    for (int t = 0; t < nt; t++) hwloc_bitmap_free(tb[t]);
    free(tb);

    /* Across ranks: disjoint shares when the node has enough cores, otherwise a warning on each. */
    fm_topology_plan *all = calloc((size_t)c->size, sizeof *all);
    assert_non_null(all);
    FM_ASSERT_OK(fm_comm_node_allgather(c, &plan, sizeof plan, all));
    if (c->local_size <= node_cores) {
        assert_int_equal(plan.shared, 0);
        assert_null(strstr(plan.warning, "share"));
        for (int i = 0; i < c->local_size; i++)
            for (int j = 0; j < i; j++) {
                hwloc_bitmap_t a = parse(all[i].share), b = parse(all[j].share);
                assert_false(hwloc_bitmap_intersects(a, b));
                hwloc_bitmap_free(a);
                hwloc_bitmap_free(b);
            }
    } else {
        assert_int_equal(plan.shared, 1);
        assert_non_null(strstr(plan.warning, "ranks share"));
        assert_int_equal(plan.threads, 1);
    }
    if (c->rank == 0)
        printf("# %d ranks on %d cores: rank 0 runs %d threads on %s%s%s\n", c->local_size, node_cores,
               plan.threads, plan.cpuset, plan.warning[0] ? "; warning: " : "", plan.warning);
    free(all);

    /* Placing again starts from the binding just applied and keeps it. */
    fm_topology_plan again;
    FM_ASSERT_OK(fm_topology_place(c, &opt, &again));
    assert_string_equal(again.cpuset, plan.cpuset);
    assert_int_equal(again.threads, plan.threads);

    hwloc_bitmap_free(before);
    hwloc_bitmap_free(set);
    hwloc_bitmap_free(share);
    hwloc_bitmap_free(now);
    hwloc_bitmap_free(node_set);
}

static void test_threads_override_and_report(void **state)
{
    fixture *f = *state;
    const fm_comm *c = f->comm;
    fm_topology_options opt = {FM_BIND_AUTO, 1, 0};
    fm_topology_plan plan;
    FM_ASSERT_OK(fm_topology_place(c, &opt, &plan));
    assert_int_equal(plan.threads, 1);
    assert_int_equal(omp_get_max_threads(), 1);

    char *text = NULL;
    size_t len = 0;
    FILE *out = c->rank == 0 ? open_memstream(&text, &len) : NULL;
    FM_ASSERT_OK(fm_topology_report(c, &plan, out));
    if (c->rank == 0) {
        fclose(out);
        char want[64];
        snprintf(want, sizeof want, "placement: %d rank%s on 1 node", c->size, c->size == 1 ? "" : "s");
        assert_non_null(strstr(text, want));
        assert_non_null(strstr(text, "rank  host"));
        /* one row per rank, "   r  host  ..." (the host appears in warning lines too, so counting
         * its occurrences would not tell a missing row) */
        for (int r = 0; r < c->size; r++) {
            char row[FM_TOPOLOGY_HOST_MAX + 16];
            snprintf(row, sizeof row, "\n%4d  %s  ", r, c->host);
            if (!strstr(text, row)) fail_msg("no table row for rank %d in:\n%s", r, text);
        }
        fputs(text, stdout);
        free(text);
    }
}

int main(int argc, char **argv)
{
    int provided;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_place_auto),
        cmocka_unit_test(test_threads_override_and_report),
    };
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    MPI_Finalize();
    return rc;
}

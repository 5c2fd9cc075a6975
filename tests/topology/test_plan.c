/* test_plan.c — the placement planner on saved hwloc XML topologies (the XML files in tests/topology,
 * written by make_fixtures.py): a two-socket 128-core node with 8 NUMA domains, a four-GPU node, a
 * Grace-Hopper-like node and a Leonardo Booster node (all GPUs on one of two NUMA domains). Checks that shares are disjoint, evenly spread, inside the launcher's
 * binding, that too few cores give a warning and not an error, and the bind modes and GPU choice. */
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

#include "dist/topology.h"

#ifndef FM_TOPOLOGY_FIXTURES
#error "FM_TOPOLOGY_FIXTURES must name the fixture folder"
#endif

enum { MAXR = 300 };

static hwloc_topology_t load(const char *name)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", FM_TOPOLOGY_FIXTURES, name);
    hwloc_topology_t t = NULL;
    FM_ASSERT_OK(fm_topology_load(&t, path));
    return t;
}

/* Plans n ranks that all start from `binding` ("" = the whole machine). */
static fm_status plan(hwloc_topology_t t, const char *binding, int n, fm_bind mode, int threads,
                      int gpus, fm_topology_plan *plans)
{
    hwloc_bitmap_t b = hwloc_bitmap_alloc();
    if (*binding)
        assert_int_equal(hwloc_bitmap_list_sscanf(b, binding), 0);
    else
        hwloc_bitmap_copy(b, hwloc_topology_get_allowed_cpuset(t));
    hwloc_const_bitmap_t binds[MAXR];
    for (int i = 0; i < n; i++) binds[i] = b;
    fm_topology_options opt = {mode, threads, gpus};
    fm_status st = fm_topology_plan_node(t, binds, n, &opt, plans);
    hwloc_bitmap_free(b);
    return st;
}

static hwloc_bitmap_t set_of(const char *list)
{
    hwloc_bitmap_t s = hwloc_bitmap_alloc();
    assert_int_equal(hwloc_bitmap_list_sscanf(s, list), 0);
    return s;
}

/* Shares pairwise disjoint, each inside `within`, together covering `cover` (if not NULL). */
static void check_partition(const fm_topology_plan *p, int n, const char *within, const char *cover)
{
    hwloc_bitmap_t w = set_of(within), u = hwloc_bitmap_alloc();
    for (int i = 0; i < n; i++) {
        hwloc_bitmap_t a = set_of(p[i].share);
        hwloc_bitmap_t cs = set_of(p[i].cpuset);
        if (!hwloc_bitmap_isincluded(a, w) || !hwloc_bitmap_isincluded(cs, w))
            fail_msg("rank %d: %s / %s not inside %s", i, p[i].share, p[i].cpuset, within);
        if (!hwloc_bitmap_isincluded(a, cs)) fail_msg("rank %d: share %s not in cpuset %s", i, p[i].share, p[i].cpuset);
        for (int j = 0; j < i; j++) {
            hwloc_bitmap_t b = set_of(p[j].share);
            if (hwloc_bitmap_intersects(a, b)) fail_msg("ranks %d and %d overlap: %s / %s", j, i, p[j].share, p[i].share);
            hwloc_bitmap_free(b);
        }
        hwloc_bitmap_or(u, u, a);
        hwloc_bitmap_free(a);
        hwloc_bitmap_free(cs);
    }
    if (cover) {
        hwloc_bitmap_t c = set_of(cover);
        assert_true(hwloc_bitmap_isequal(u, c));
        hwloc_bitmap_free(c);
    }
    hwloc_bitmap_free(u);
    hwloc_bitmap_free(w);
}

static void test_two_socket_auto(void **state)
{
    (void)state;
    hwloc_topology_t t = load("two-socket.xml");
    fm_topology_plan p[MAXR];

    FM_ASSERT_OK(plan(t, "", 1, FM_BIND_AUTO, 0, 0, p));
    assert_string_equal(p[0].cpuset, "0-255");
    assert_string_equal(p[0].numa, "0-7");
    assert_int_equal(p[0].cores, 128);
    assert_int_equal(p[0].threads, 128); /* one thread per core, not per hyperthread */
    assert_int_equal(p[0].pin_threads, 1);
    assert_int_equal(p[0].launcher_bound, 0);
    assert_int_equal(p[0].gpu, -1);
    assert_string_equal(p[0].gpu_name, "no GPU");
    assert_string_equal(p[0].warning, "");

    /* 2 ranks: one package each, with the hyperthread siblings of their cores */
    FM_ASSERT_OK(plan(t, "", 2, FM_BIND_AUTO, 0, 0, p));
    assert_string_equal(p[0].cpuset, "0-63,128-191");
    assert_string_equal(p[1].cpuset, "64-127,192-255");
    assert_string_equal(p[0].numa, "0-3");
    assert_string_equal(p[1].numa, "4-7");
    check_partition(p, 2, "0-255", "0-255");

    /* 4, 8, 16 ranks: spread evenly over packages then NUMA domains */
    static const int counts[] = {4, 8, 16, 32, 128};
    for (size_t k = 0; k < sizeof counts / sizeof counts[0]; k++) {
        int n = counts[k];
        FM_ASSERT_OK(plan(t, "", n, FM_BIND_AUTO, 0, 0, p));
        check_partition(p, n, "0-255", "0-255");
        for (int i = 0; i < n; i++) {
            assert_int_equal(p[i].cores, 128 / n);
            assert_int_equal(p[i].threads, 128 / n);
            assert_string_equal(p[i].warning, "");
            /* rank i lies in package i/(n/2) and NUMA domain i/(n/8) when there are enough ranks */
            char numa[16];
            if (n >= 8) {
                snprintf(numa, sizeof numa, "%d", i / (n / 8));
                assert_string_equal(p[i].numa, numa);
            }
        }
    }
    FM_ASSERT_OK(plan(t, "", 8, FM_BIND_AUTO, 0, 0, p));
    assert_string_equal(p[5].cpuset, "80-95,208-223");
    hwloc_topology_destroy(t);
}

static void test_two_socket_uneven(void **state)
{
    (void)state;
    hwloc_topology_t t = load("two-socket.xml");
    fm_topology_plan p[MAXR];
    FM_ASSERT_OK(plan(t, "", 3, FM_BIND_AUTO, 0, 0, p));
    check_partition(p, 3, "0-255", "0-255");
    /* no rank straddles the two packages */
    hwloc_bitmap_t p0 = set_of("0-63,128-191"), p1 = set_of("64-127,192-255");
    for (int i = 0; i < 3; i++) {
        hwloc_bitmap_t s = set_of(p[i].cpuset);
        assert_true(hwloc_bitmap_isincluded(s, p0) || hwloc_bitmap_isincluded(s, p1));
        assert_non_null(strstr(p[i].warning, "uneven shares"));
        hwloc_bitmap_free(s);
    }
    hwloc_bitmap_free(p0);
    hwloc_bitmap_free(p1);
    hwloc_topology_destroy(t);
}

/* More ranks than cores: a warning on every rank, never an error; cores shared evenly. */
static void test_oversubscribed(void **state)
{
    (void)state;
    hwloc_topology_t t = load("two-socket.xml");
    fm_topology_plan p[MAXR];
    FM_ASSERT_OK(plan(t, "", 256, FM_BIND_AUTO, 0, 0, p));
    int per_core[128] = {0};
    for (int i = 0; i < 256; i++) {
        assert_int_equal(p[i].cores, 1);
        assert_int_equal(p[i].threads, 1);
        assert_int_equal(p[i].shared, 1);
        assert_non_null(strstr(p[i].warning, "256 ranks share 128 cores"));
        hwloc_bitmap_t s = set_of(p[i].share);
        per_core[hwloc_bitmap_first(s) % 128]++;
        hwloc_bitmap_free(s);
    }
    for (int c = 0; c < 128; c++) assert_int_equal(per_core[c], 2);

    /* inside a launcher binding of 2 cores, 3 ranks */
    FM_ASSERT_OK(plan(t, "0-1", 3, FM_BIND_AUTO, 0, 0, p));
    for (int i = 0; i < 3; i++) {
        assert_non_null(strstr(p[i].warning, "3 ranks share 2 cores"));
        assert_int_equal(p[i].launcher_bound, 1);
        hwloc_bitmap_t s = set_of(p[i].cpuset), w = set_of("0-1");
        assert_true(hwloc_bitmap_isincluded(s, w));
        hwloc_bitmap_free(s);
        hwloc_bitmap_free(w);
    }
    hwloc_topology_destroy(t);
}

/* A launcher binding (srun --cpu-bind, mpirun --bind-to) is never widened. */
static void test_launcher_binding(void **state)
{
    (void)state;
    hwloc_topology_t t = load("two-socket.xml");
    fm_topology_plan p[MAXR];
    const char *pkg1 = "64-127,192-255";
    static const fm_bind modes[] = {FM_BIND_AUTO, FM_BIND_CORE, FM_BIND_NUMA, FM_BIND_SOCKET,
                                    FM_BIND_NONE};
    for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++) {
        FM_ASSERT_OK(plan(t, pkg1, 4, modes[m], 0, 0, p));
        check_partition(p, 4, pkg1, pkg1);
        for (int i = 0; i < 4; i++) {
            assert_int_equal(p[i].launcher_bound, 1);
            assert_string_equal(p[i].binding, pkg1);
            assert_int_equal(p[i].cores, 16);
        }
    }
    /* Half a core (one hyperthread of each core): the other siblings are never added. */
    FM_ASSERT_OK(plan(t, "0-127", 2, FM_BIND_AUTO, 0, 0, p));
    check_partition(p, 2, "0-127", "0-127");
    assert_string_equal(p[0].cpuset, "0-63");
    assert_int_equal(p[0].threads, 64);

    /* Each rank bound to its own core (mpirun --bind-to core): each keeps exactly that core. */
    hwloc_bitmap_t b[4];
    hwloc_const_bitmap_t cb[4];
    for (int i = 0; i < 4; i++) {
        b[i] = hwloc_bitmap_alloc();
        hwloc_bitmap_set(b[i], (unsigned)(10 + i));
        hwloc_bitmap_set(b[i], (unsigned)(138 + i));
        cb[i] = b[i];
    }
    fm_topology_options opt = {FM_BIND_AUTO, 0, 0};
    FM_ASSERT_OK(fm_topology_plan_node(t, cb, 4, &opt, p));
    for (int i = 0; i < 4; i++) {
        char want[32];
        snprintf(want, sizeof want, "%d,%d", 10 + i, 138 + i);
        assert_string_equal(p[i].cpuset, want);
        assert_int_equal(p[i].threads, 1);
        assert_int_equal(p[i].launcher_bound, 1);
        assert_string_equal(p[i].warning, "");
    }
    /* Overlapping but different launcher bindings: kept, with a warning. */
    hwloc_bitmap_set(b[1], 10);
    FM_ASSERT_OK(fm_topology_plan_node(t, cb, 4, &opt, p));
    assert_non_null(strstr(p[1].warning, "overlap"));
    for (int i = 0; i < 4; i++) hwloc_bitmap_free(b[i]);
    hwloc_topology_destroy(t);
}

static void test_modes(void **state)
{
    (void)state;
    hwloc_topology_t t = load("two-socket.xml");
    fm_topology_plan p[MAXR];

    /* numa: 16 ranks, two per NUMA domain, each bound to the whole domain, threads floating */
    FM_ASSERT_OK(plan(t, "", 16, FM_BIND_NUMA, 0, 0, p));
    check_partition(p, 16, "0-255", "0-255");
    assert_string_equal(p[0].cpuset, "0-15,128-143");
    assert_string_equal(p[1].cpuset, "0-15,128-143");
    assert_string_equal(p[15].cpuset, "112-127,240-255");
    for (int i = 0; i < 16; i++) {
        assert_int_equal(p[i].threads, 8);
        assert_int_equal(p[i].pin_threads, 0);
    }

    /* socket: 4 ranks, each bound to its package, 32 threads */
    FM_ASSERT_OK(plan(t, "", 4, FM_BIND_SOCKET, 0, 0, p));
    assert_string_equal(p[0].cpuset, "0-63,128-191");
    assert_string_equal(p[1].cpuset, "0-63,128-191");
    assert_string_equal(p[3].cpuset, "64-127,192-255");
    assert_string_equal(p[3].numa, "4-7");
    assert_int_equal(p[3].threads, 32);

    /* core: the same shares as auto, pinned */
    fm_topology_plan q[MAXR];
    FM_ASSERT_OK(plan(t, "", 4, FM_BIND_CORE, 0, 0, p));
    FM_ASSERT_OK(plan(t, "", 4, FM_BIND_AUTO, 0, 0, q));
    for (int i = 0; i < 4; i++) {
        assert_string_equal(p[i].cpuset, q[i].cpuset);
        assert_int_equal(p[i].pin_threads, 1);
    }

    /* none: the binding is left alone; threads still from the share */
    FM_ASSERT_OK(plan(t, "", 4, FM_BIND_NONE, 0, 0, p));
    for (int i = 0; i < 4; i++) {
        assert_string_equal(p[i].cpuset, "0-255");
        assert_int_equal(p[i].threads, 32);
        assert_int_equal(p[i].pin_threads, 0);
    }

    /* threads override; more threads than cores warns */
    FM_ASSERT_OK(plan(t, "", 2, FM_BIND_AUTO, 4, 0, p));
    assert_int_equal(p[0].threads, 4);
    assert_string_equal(p[0].warning, "");
    FM_ASSERT_OK(plan(t, "", 2, FM_BIND_AUTO, 100, 0, p));
    assert_int_equal(p[1].threads, 100);
    assert_non_null(strstr(p[1].warning, "100 threads on 64 cores"));
    hwloc_topology_destroy(t);
}

static void test_four_gpu(void **state)
{
    (void)state;
    hwloc_topology_t t = load("four-gpu.xml");
    fm_topology_plan p[MAXR];

    /* 4 ranks: rank i takes GPU i and the cores of GPU i's NUMA domain */
    FM_ASSERT_OK(plan(t, "", 4, FM_BIND_AUTO, 0, 1, p));
    check_partition(p, 4, "0-95", "0-95");
    for (int i = 0; i < 4; i++) {
        char numa[8], name[16];
        snprintf(numa, sizeof numa, "%d", i);
        snprintf(name, sizeof name, "cuda%d ", i);
        assert_int_equal(p[i].gpu, i);
        assert_string_equal(p[i].numa, numa);
        assert_non_null(strstr(p[i].gpu_name, name));
        assert_non_null(strstr(p[i].gpu_name, "A100"));
        assert_int_equal(p[i].threads, 12);
        assert_string_equal(p[i].warning, "");
    }
    /* 2 ranks: spread over the packages (GPUs 0 and 2), each with its GPU's NUMA domain */
    FM_ASSERT_OK(plan(t, "", 2, FM_BIND_AUTO, 0, 1, p));
    assert_int_equal(p[0].gpu, 0);
    assert_int_equal(p[1].gpu, 2);
    assert_string_equal(p[0].cpuset, "0-11,48-59");
    assert_string_equal(p[1].cpuset, "24-35,72-83");
    /* 8 ranks: two per GPU, splitting its NUMA domain, with a sharing warning */
    FM_ASSERT_OK(plan(t, "", 8, FM_BIND_AUTO, 0, 1, p));
    check_partition(p, 8, "0-95", "0-95");
    for (int i = 0; i < 8; i++) {
        assert_int_equal(p[i].gpu, i / 2);
        assert_int_equal(p[i].cores, 6);
        assert_non_null(strstr(p[i].warning, "2 ranks share GPU"));
    }
    /* Other modes pick the nearest unused GPU for the share. */
    FM_ASSERT_OK(plan(t, "", 4, FM_BIND_SOCKET, 0, 1, p));
    for (int i = 0; i < 4; i++) assert_int_equal(p[i].gpu, i);
    /* Launcher bound everything to package 1: the GPUs near it come first. */
    FM_ASSERT_OK(plan(t, "24-47,72-95", 2, FM_BIND_AUTO, 0, 1, p));
    assert_int_equal(p[0].gpu, 2);
    assert_int_equal(p[1].gpu, 3);
    /* Without a GPU backend the plan says so. */
    FM_ASSERT_OK(plan(t, "", 4, FM_BIND_AUTO, 0, 0, p));
    for (int i = 0; i < 4; i++) {
        assert_int_equal(p[i].gpu, -1);
        assert_string_equal(p[i].gpu_name, "no GPU");
    }
    char desc[512];
    fm_topology_describe(t, desc, sizeof desc);
    assert_non_null(strstr(desc, "2 packages, 4 NUMA nodes, 48 cores, 96 PUs, cuda0"));
    hwloc_topology_destroy(t);
}

static void test_grace_hopper(void **state)
{
    (void)state;
    hwloc_topology_t t = load("grace-hopper.xml");
    fm_topology_plan p[MAXR];
    FM_ASSERT_OK(plan(t, "", 1, FM_BIND_AUTO, 0, 1, p));
    assert_string_equal(p[0].cpuset, "0-71");
    assert_string_equal(p[0].numa, "0"); /* the GPU's HBM node (GPUMemory) is not a CPU domain */
    assert_int_equal(p[0].threads, 72);
    assert_int_equal(p[0].gpu, 0);
    assert_non_null(strstr(p[0].gpu_name, "GH200"));
    FM_ASSERT_OK(plan(t, "", 4, FM_BIND_NUMA, 0, 1, p));
    for (int i = 0; i < 4; i++) {
        assert_string_equal(p[i].cpuset, "0-71");
        assert_int_equal(p[i].threads, 18);
        assert_non_null(strstr(p[i].warning, "4 ranks share GPU 0"));
    }
    FM_ASSERT_OK(plan(t, "", 4, FM_BIND_AUTO, 0, 1, p));
    check_partition(p, 4, "0-71", "0-71");
    assert_string_equal(p[1].cpuset, "18-35");
    char desc[512];
    fm_topology_describe(t, desc, sizeof desc);
    assert_non_null(strstr(desc, "1 package, 1 NUMA node, 72 cores"));
    hwloc_topology_destroy(t);
}

/* Leonardo Booster (CINECA): all four GPUs sit on NUMA domain 0 (cores 0-15 of 32). Binding each
 * rank next to its GPU would put the four ranks on 16 cores and leave the other 16 idle; the plan
 * uses the whole node instead (8 cores each, the plain split) and gives rank i GPU i. */
static void test_leonardo_booster(void **state)
{
    (void)state;
    hwloc_topology_t t = load("leonardo-booster.xml");
    fm_topology_plan p[MAXR];
    FM_ASSERT_OK(plan(t, "", 4, FM_BIND_AUTO, 0, 1, p));
    check_partition(p, 4, "0-31", "0-31");
    for (int i = 0; i < 4; i++) {
        assert_int_equal(p[i].cores, 8);
        assert_int_equal(p[i].threads, 8);
        assert_int_equal(p[i].gpu, i);
        assert_string_equal(p[i].numa, i < 2 ? "0" : "1");
        assert_string_equal(p[i].warning, "");
    }
    /* one rank: the whole node, GPU 0 */
    FM_ASSERT_OK(plan(t, "", 1, FM_BIND_AUTO, 0, 1, p));
    assert_string_equal(p[0].cpuset, "0-31");
    assert_int_equal(p[0].gpu, 0);
    /* eight ranks (two per GPU): still every core, 4 each */
    FM_ASSERT_OK(plan(t, "", 8, FM_BIND_AUTO, 0, 1, p));
    check_partition(p, 8, "0-31", "0-31");
    for (int i = 0; i < 8; i++) assert_int_equal(p[i].cores, 4);
    /* the launcher bound the ranks to the GPUs' cores: steering inside them, as before */
    FM_ASSERT_OK(plan(t, "0-15", 4, FM_BIND_AUTO, 0, 1, p));
    check_partition(p, 4, "0-15", "0-15");
    for (int i = 0; i < 4; i++) assert_int_equal(p[i].gpu, i);
    char desc[512];
    fm_topology_describe(t, desc, sizeof desc);
    assert_non_null(strstr(desc, "1 package, 2 NUMA nodes, 32 cores"));
    hwloc_topology_destroy(t);
}

/* GPUs given by the caller (what a backend would pass from hwloc's CUDA runtime helper; no caller
 * in src/ does yet, see fm_topology_gpu). */
static void test_given_gpus(void **state)
{
    (void)state;
    hwloc_topology_t t = load("two-socket.xml");
    fm_topology_plan p[MAXR];
    hwloc_bitmap_t all = hwloc_bitmap_dup(hwloc_topology_get_allowed_cpuset(t));
    hwloc_const_bitmap_t binds[2] = {all, all};
    /* device 0 sits next to package 1, device 1 next to package 0: rank 0 follows device 0 */
    fm_topology_gpu g[2] = {{0, "cuda0 (test)", "64-127,192-255"}, {1, "cuda1 (test)", "0-63,128-191"}};
    fm_topology_options opt = {FM_BIND_AUTO, 0, 1};
    FM_ASSERT_OK(fm_topology_plan_node_gpus(t, binds, 2, &opt, g, 2, p));
    assert_int_equal(p[0].gpu, 0);
    assert_string_equal(p[0].gpu_name, "cuda0 (test)");
    assert_string_equal(p[0].cpuset, "64-127,192-255");
    assert_int_equal(p[1].gpu, 1);
    assert_string_equal(p[1].cpuset, "0-63,128-191");
    /* one GPU without locality, one near package 1: the plain split, then the nearest free GPU */
    fm_topology_gpu h[2] = {{0, "cuda0", "64-127,192-255"}, {1, "cuda1", ""}};
    FM_ASSERT_OK(fm_topology_plan_node_gpus(t, binds, 2, &opt, h, 2, p));
    assert_string_equal(p[0].cpuset, "0-63,128-191");
    assert_int_equal(p[0].gpu, 1);
    assert_int_equal(p[1].gpu, 0);
    /* a locality that is not a list */
    fm_topology_gpu bad[1] = {{0, "cuda0", "zero"}};
    fm_status st = fm_topology_plan_node_gpus(t, binds, 2, &opt, bad, 1, p);
    assert_non_null(st);
    assert_non_null(strstr(fm_status_message(st), "'zero'"));
    fm_status_free(&st);
    hwloc_bitmap_free(all);
    hwloc_topology_destroy(t);
}

static void test_errors_and_table(void **state)
{
    (void)state;
    hwloc_topology_t t = load("two-socket.xml");
    fm_topology_plan p[MAXR];
    /* a binding outside the machine */
    fm_status st = plan(t, "300-301", 2, FM_BIND_AUTO, 0, 0, p);
    assert_non_null(st);
    assert_non_null(strstr(fm_status_message(st), "300-301"));
    fm_status_free(&st);
    st = plan(t, "", 2, FM_BIND_AUTO, -1, 0, p);
    assert_non_null(st);
    fm_status_free(&st);

    hwloc_topology_t bad = NULL;
    st = fm_topology_load(&bad, FM_TOPOLOGY_FIXTURES "/no-such-file.xml");
    assert_non_null(st);
    assert_int_equal(fm_status_code(st), FM_ERR_INPUT);
    assert_non_null(strstr(fm_status_message(st), "no-such-file.xml"));
    assert_null(bad);
    fm_status_free(&st);

    fm_bind b;
    FM_ASSERT_OK(fm_topology_bind_parse("numa", &b));
    assert_int_equal(b, FM_BIND_NUMA);
    st = fm_topology_bind_parse("sockets", &b);
    assert_non_null(st);
    assert_int_equal(fm_status_code(st), FM_ERR_USAGE);
    fm_status_free(&st);

    /* the table: one line per rank, cpusets as lists, warnings once with their ranks */
    FM_ASSERT_OK(plan(t, "0-1", 3, FM_BIND_AUTO, 0, 0, p));
    for (int i = 0; i < 3; i++) {
        p[i].rank = 10 + i;
        strcpy(p[i].host, "nodeA");
    }
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    fm_topology_print_table(f, p, 3);
    fclose(f);
    assert_non_null(strstr(text, "rank  host   bind    cpuset  numa  cores  threads  pinned  gpu"));
    assert_non_null(strstr(text, "  10  nodeA  auto    0       0         1        1  core    no GPU"));
    assert_non_null(strstr(text, "  12  nodeA  auto    1       0"));
    assert_non_null(strstr(text, "launcher binding kept (never widened) for ranks 10-12"));
    assert_non_null(strstr(text, "warning (ranks 10-12 on nodeA): 3 ranks share 2 cores"));
    free(text);
    hwloc_topology_destroy(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_socket_auto), cmocka_unit_test(test_two_socket_uneven),
        cmocka_unit_test(test_oversubscribed),  cmocka_unit_test(test_launcher_binding),
        cmocka_unit_test(test_modes),           cmocka_unit_test(test_four_gpu),
        cmocka_unit_test(test_grace_hopper),    cmocka_unit_test(test_leonardo_booster),
        cmocka_unit_test(test_given_gpus),
        cmocka_unit_test(test_errors_and_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

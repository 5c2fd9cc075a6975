/* cmd_topology.c — `fmtrain topology`: prints the placement plan that `fmtrain train` would use on
 * this node, without MPI and without training (the local ranks are simulated). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "dist/topology.h"
#include "core/util.h"

static const char topology_help[] =
    "Usage: fmtrain topology [--ranks-per-node N] [--bind MODE] [--threads N] [--gpus]\n"
    "                        [--xml FILE] [--binding LIST]\n"
    "\n"
    "Prints how `fmtrain train` would place N ranks on this node: each rank's cpuset (PU numbers as\n"
    "a list), NUMA node(s), cores, OpenMP threads and GPU. No MPI is needed: the node's ranks are\n"
    "simulated. The plan starts from this process's current binding, so running it under\n"
    "`srun --cpu-bind=...` or `mpirun --bind-to ...` shows what those launchers leave to fmtrain.\n"
    "See docs/placement.md.\n"
    "\n"
    "Options:\n"
    "  --ranks-per-node N  ranks to place on the node (default 1)\n"
    "  --bind MODE         auto, socket, numa, core or none (as [runtime] bind; default auto)\n"
    "  --threads N         OpenMP threads per rank (as [runtime] threads; default: OMP_NUM_THREADS\n"
    "                      when set, else the cores of the rank's share)\n"
    "  --gpus              plan for a GPU run: give each rank the nearest CUDA GPU\n"
    "  --xml FILE          plan for a saved hwloc XML topology (lstopo --of xml) instead of this\n"
    "                      machine\n"
    "  --binding LIST      start from this binding instead of the current one, e.g. 0-15\n"
    "  --help              show this help\n";

static fm_status topology_run(int argc, char **argv, const fm_cmd_env *env)
{
    (void)env;
    const char *ranks_s = NULL, *bind_s = NULL, *threads_s = NULL, *xml = NULL, *binding_s = NULL;
    int gpus = 0;
    fm_cli_list pos = {0};
    const fm_cli_opt opts[] = {
        {"ranks-per-node", FM_CLI_STRING, &ranks_s}, {"bind", FM_CLI_STRING, &bind_s},
        {"threads", FM_CLI_STRING, &threads_s},      {"gpus", FM_CLI_FLAG, &gpus},
        {"xml", FM_CLI_STRING, &xml},                {"binding", FM_CLI_STRING, &binding_s},
    };
    fm_status st = NULL;
    hwloc_topology_t topo = NULL;
    hwloc_bitmap_t cur = NULL;
    hwloc_const_bitmap_t *binds = NULL;
    fm_topology_plan *plans = NULL;
    FM_TRY_GOTO(st, done, fm_cli_parse("topology", argc, argv, opts, 6, &pos));
    if (pos.n > 0) {
        st = FM_ERR(FM_ERR_USAGE, "fmtrain topology: unexpected argument '%s'; see 'fmtrain help topology'",
                    pos.items[0]);
        goto done;
    }
    long long ranks = 1, threads = 0;
    if (ranks_s) FM_TRY_GOTO(st, done, fm_cli_int("--ranks-per-node", ranks_s, 1, 4096, &ranks));
    if (threads_s) FM_TRY_GOTO(st, done, fm_cli_int("--threads", threads_s, 0, 65536, &threads));
    fm_topology_options opt = {FM_BIND_AUTO, (int)threads, gpus};
    if (bind_s) {
        st = fm_topology_bind_parse(bind_s, &opt.bind);
        if (st) {
            fm_status_prefix(st, "--bind");
            goto done;
        }
    }
    const char *threads_from = threads_s ? "--threads" : "the cores of each rank's share";
    if (opt.threads == 0 && fm_topology_env_threads() > 0) {
        opt.threads = fm_topology_env_threads();
        threads_from = "OMP_NUM_THREADS";
    }

    FM_TRY_GOTO(st, done, fm_topology_load(&topo, xml));
    cur = hwloc_bitmap_alloc();
    if (!cur) {
        st = FM_ERR(FM_ERR_NOMEM, "out of memory");
        goto done;
    }
    if (binding_s) {
        if (hwloc_bitmap_list_sscanf(cur, binding_s) != 0 || hwloc_bitmap_iszero(cur)) {
            st = FM_ERR(FM_ERR_USAGE, "--binding: expected a PU list such as 0-15,32, got '%s'", binding_s);
            goto done;
        }
    } else if (xml) {
        hwloc_bitmap_copy(cur, hwloc_topology_get_allowed_cpuset(topo));
    } else {
        FM_TRY_GOTO(st, done, fm_topology_current_binding(topo, cur));
    }

    binds = malloc(sizeof *binds * (size_t)ranks);
    plans = calloc((size_t)ranks, sizeof *plans);
    if (!binds || !plans) {
        st = FM_ERR(FM_ERR_NOMEM, "out of memory for %lld plans", ranks);
        goto done;
    }
    for (long long i = 0; i < ranks; i++) binds[i] = cur;
    FM_TRY_GOTO(st, done, fm_topology_plan_node(topo, binds, (int)ranks, &opt, plans));

    char host[FM_TOPOLOGY_HOST_MAX] = "localhost";
    if (xml) {
        const char *base = strrchr(xml, '/');
        fm_util_strlcpy(host, base ? base + 1 : xml, sizeof host);
    } else if (gethostname(host, sizeof host) != 0) {
        fm_util_strlcpy(host, "localhost", sizeof host);
    }
    host[sizeof host - 1] = '\0';
    for (long long i = 0; i < ranks; i++) fm_util_strlcpy(plans[i].host, host, sizeof plans[i].host);

    char desc[512], list[FM_TOPOLOGY_LIST_MAX];
    fm_topology_describe(topo, desc, sizeof desc);
    printf("node %s: %s\n", host, desc);
    hwloc_bitmap_list_snprintf(list, sizeof list, cur);
    printf("starting binding: %s%s\n", list,
           plans[0].launcher_bound ? " (narrower than the node: kept, never widened)"
                                   : " (the whole node)");
    printf("plan for %lld rank%s per node, bind=%s, threads from %s%s\n", ranks, ranks == 1 ? "" : "s",
           fm_topology_bind_name(opt.bind), threads_from,
           getenv("OMP_PLACES") || getenv("OMP_PROC_BIND") ? " (OMP_PLACES/OMP_PROC_BIND set: the "
                                                             "OpenMP runtime would place threads)"
                                                           : "");
    fm_topology_print_table(stdout, plans, (int)ranks);
done:
    free(plans);
    free(binds);
    hwloc_bitmap_free(cur);
    if (topo) hwloc_topology_destroy(topo);
    fm_cli_list_free(&pos);
    return st;
}

const fm_command fm_cmd_topology = {"topology", "print how ranks and threads would be placed on this node",
                                    topology_help, 0, topology_run};

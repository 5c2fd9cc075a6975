/* topology.c — placement of ranks and OpenMP threads with hwloc (see topology.h for the contract and
 * docs/placement.md for the user's view).
 *
 * The planner works on cpusets only, so it runs the same on this machine and on saved XML topologies:
 *   1. the local ranks are grouped by identical current binding (no launcher binding: one group);
 *   2. each group's binding is shared out among its ranks: packages first, then NUMA domains, then
 *      cores (split_share), each rank getting a whole number of cores;
 *   3. the bind mode widens the share to its NUMA domain(s) or package(s), or keeps it (core, auto);
 *   4. GPUs (when the run uses them) are matched to ranks by locality.
 */
#define _POSIX_C_SOURCE 200809L
#include "dist/topology.h"

#include <errno.h>
#include <limits.h>
#include <omp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

/* Levels at which a binding is split, coarse to fine. */
enum { LEVEL_PACKAGE, LEVEL_NUMA, LEVEL_CORE, LEVEL_COUNT };

typedef struct gpu_info {
    int index;           /* CUDA ordinal from the OS device name "cudaN" */
    char name[FM_TOPOLOGY_NAME_MAX];
    hwloc_bitmap_t near; /* cpuset of the GPU's closest non-I/O ancestor */
} gpu_info;

/* ---- small helpers ------------------------------------------------------------------------------ */

const char *fm_topology_bind_name(fm_bind bind)
{
    switch (bind) {
    case FM_BIND_AUTO: return "auto";
    case FM_BIND_SOCKET: return "socket";
    case FM_BIND_NUMA: return "numa";
    case FM_BIND_CORE: return "core";
    case FM_BIND_NONE: return "none";
    }
    return "?";
}

fm_status fm_topology_bind_parse(const char *text, fm_bind *out)
{
    static const fm_bind all[] = {FM_BIND_AUTO, FM_BIND_SOCKET, FM_BIND_NUMA, FM_BIND_CORE,
                                  FM_BIND_NONE};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (strcmp(text, fm_topology_bind_name(all[i])) == 0) {
            *out = all[i];
            return NULL;
        }
    return FM_ERR(FM_ERR_USAGE, "bind mode '%s' is not one of auto, socket, numa, core, none", text);
}

/* Appends "; text" (or text) to a plan's warning, truncating politely. */
static void add_warning(fm_topology_plan *p, const char *fmt, ...)
{
    char msg[FM_TOPOLOGY_WARN_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    size_t used = strlen(p->warning);
    if (used && used + 2 < sizeof p->warning) {
        memcpy(p->warning + used, "; ", 3);
        used += 2;
    }
    if (used < sizeof p->warning) fm_util_strlcpy(p->warning + used, msg, sizeof p->warning - used);
}

static fm_status list_string(char *dst, size_t size, hwloc_const_bitmap_t set, const char *what)
{
    int n = hwloc_bitmap_list_snprintf(dst, size, set);
    if (n < 0 || (size_t)n >= size)
        return FM_ERR(FM_ERR_INTERNAL, "placement: the %s cpuset needs %d characters as a list (at most "
                                       "%zu fit in a plan)",
                      what, n, size - 1);
    return NULL;
}

static int core_depth(hwloc_topology_t topo)
{
    return hwloc_get_type_or_below_depth(topo, HWLOC_OBJ_CORE);
}

/* Cores (objects at core depth) with at least one PU in `set`. */
static int count_cores(hwloc_topology_t topo, hwloc_const_bitmap_t set)
{
    int depth = core_depth(topo), n = 0;
    hwloc_obj_t o = NULL;
    while ((o = hwloc_get_next_obj_by_depth(topo, depth, o)))
        if (hwloc_bitmap_intersects(o->cpuset, set)) n++;
    return n;
}

/* NUMA nodes that hold CPU memory: GPU memory exposed as NUMA nodes (subtype "GPUMemory", as on
 * Grace Hopper) is not a place to run threads. */
static int cpu_numa(hwloc_obj_t o)
{
    return !(o->subtype && strcmp(o->subtype, "GPUMemory") == 0);
}

/* The domains of `level` inside `set`: nonempty intersections with at least one core, duplicates
 * removed, in topology order. Returns the count; domains[] (capacity cap) are allocated here. */
static int domains_at(hwloc_topology_t topo, int level, hwloc_const_bitmap_t set,
                      hwloc_bitmap_t *domains, int *cores, int cap)
{
    int n = 0;
    hwloc_obj_t o = NULL;
    for (;;) {
        if (level == LEVEL_PACKAGE)
            o = hwloc_get_next_obj_by_type(topo, HWLOC_OBJ_PACKAGE, o);
        else if (level == LEVEL_NUMA)
            o = hwloc_get_next_obj_by_type(topo, HWLOC_OBJ_NUMANODE, o);
        else
            o = hwloc_get_next_obj_by_depth(topo, core_depth(topo), o);
        if (!o) break;
        if (level == LEVEL_NUMA && !cpu_numa(o)) continue;
        if (!o->cpuset || !hwloc_bitmap_intersects(o->cpuset, set)) continue;
        hwloc_bitmap_t d = hwloc_bitmap_alloc();
        if (!d) break;
        hwloc_bitmap_and(d, o->cpuset, set);
        int c = count_cores(topo, d), dup = 0;
        for (int i = 0; i < n && !dup; i++) dup = hwloc_bitmap_isequal(domains[i], d);
        if (c == 0 || dup || n == cap) {
            hwloc_bitmap_free(d);
            continue;
        }
        domains[n] = d;
        cores[n] = c;
        n++;
    }
    return n;
}

static void free_sets(hwloc_bitmap_t *sets, int n)
{
    for (int i = 0; i < n; i++) {
        hwloc_bitmap_free(sets[i]);
        sets[i] = NULL;
    }
}

/* Splits `set` (with at least k cores) among k ranks: out[0..k) receive disjoint shares of whole
 * cores, spread over packages, then NUMA domains, then cores. A level is used when it has at least
 * two domains and every domain (k >= domains) or every rank (k < domains) gets something; ranks go
 * to the domain that holds the middle of their ideal core range, domains to the rank that holds
 * the middle of theirs, so equal domains get equal numbers of ranks. */
static fm_status split_share(hwloc_topology_t topo, hwloc_const_bitmap_t set, int k, int level,
                             hwloc_bitmap_t *out)
{
    if (k == 1) {
        hwloc_bitmap_copy(out[0], set);
        return NULL;
    }
    int cap = count_cores(topo, set);
    hwloc_bitmap_t *dom = calloc((size_t)cap, sizeof *dom);
    int *cores = calloc((size_t)cap, sizeof *cores);
    int *cnt = calloc((size_t)(cap > k ? cap : k), sizeof *cnt);
    if (!dom || !cores || !cnt) {
        free(dom);
        free(cores);
        free(cnt);
        return FM_ERR(FM_ERR_NOMEM, "out of memory planning the placement of %d ranks", k);
    }
    fm_status st = NULL;
    int done = 0;
    for (int lv = level; lv < LEVEL_COUNT && !done && !st; lv++) {
        int nd = domains_at(topo, lv, set, dom, cores, cap);
        if (nd <= 1) {
            free_sets(dom, nd);
            continue;
        }
        long long total = 0;
        for (int d = 0; d < nd; d++) total += cores[d];
        if (k >= nd) {
            /* Ranks to domains: rank j's middle core is (2j+1)*total/(2k). */
            memset(cnt, 0, sizeof *cnt * (size_t)nd);
            int d = 0;
            long long cum = 0;
            for (int j = 0; j < k; j++) {
                long long mid2 = (2LL * j + 1) * total; /* scaled by 2k */
                while (d < nd - 1 && mid2 >= 2LL * k * (cum + cores[d])) cum += cores[d++];
                cnt[d]++;
            }
            int ok = 1;
            for (int e = 0; e < nd; e++) ok &= cnt[e] > 0 && cnt[e] <= cores[e];
            if (ok) {
                int r = 0;
                for (int e = 0; e < nd && !st; e++) {
                    st = split_share(topo, dom[e], cnt[e], lv + 1, out + r);
                    r += cnt[e];
                }
                done = 1;
            }
        } else {
            /* Domains to ranks: domain e goes to the rank holding its middle core. */
            for (int j = 0; j < k; j++) {
                hwloc_bitmap_zero(out[j]);
                cnt[j] = 0;
            }
            long long cum = 0;
            for (int e = 0; e < nd; e++) {
                int owner = (int)(((2 * cum + cores[e]) * k) / (2 * total));
                if (owner >= k) owner = k - 1;
                hwloc_bitmap_or(out[owner], out[owner], dom[e]);
                cnt[owner]++;
                cum += cores[e];
            }
            int ok = 1;
            for (int j = 0; j < k; j++) ok &= cnt[j] > 0;
            done = ok;
        }
        free_sets(dom, nd);
    }
    free(dom);
    free(cores);
    free(cnt);
    if (!st && !done)
        st = FM_ERR(FM_ERR_INTERNAL, "placement: could not split %d cores among %d ranks", cap, k);
    return st;
}

/* Union of the domains of `level` (within `bound`) that intersect `share`. */
static void widen(hwloc_topology_t topo, hwloc_obj_type_t type, hwloc_const_bitmap_t share,
                  hwloc_const_bitmap_t bound, hwloc_bitmap_t out)
{
    hwloc_bitmap_zero(out);
    hwloc_obj_t o = NULL;
    while ((o = hwloc_get_next_obj_by_type(topo, type, o))) {
        if (type == HWLOC_OBJ_NUMANODE && !cpu_numa(o)) continue;
        if (o->cpuset && hwloc_bitmap_intersects(o->cpuset, share))
            hwloc_bitmap_or(out, out, o->cpuset);
    }
    if (hwloc_bitmap_iszero(out))
        hwloc_bitmap_copy(out, bound);
    else
        hwloc_bitmap_and(out, out, bound);
}

/* ---- GPUs --------------------------------------------------------------------------------------- */

/* The CUDA devices hwloc knows (OS devices "cudaN", the same lookup as hwloc's CUDA runtime helper
 * hwloc_cudart_get_device_osdev_by_index), sorted by N. */
static int find_gpus(hwloc_topology_t topo, gpu_info *gpus, int cap)
{
    int n = 0;
    hwloc_obj_t o = NULL;
    while ((o = hwloc_get_next_osdev(topo, o)) && n < cap) {
        if (o->attr->osdev.type != HWLOC_OBJ_OSDEV_COPROC || !o->name || strncmp(o->name, "cuda", 4) != 0)
            continue;
        char *end;
        long idx = strtol(o->name + 4, &end, 10);
        if (end == o->name + 4 || *end || idx < 0 || idx > INT_MAX) continue;
        hwloc_obj_t anc = hwloc_get_non_io_ancestor_obj(topo, o);
        gpu_info g = {(int)idx, "", hwloc_bitmap_dup(anc && anc->cpuset ? anc->cpuset
                                                      : hwloc_topology_get_topology_cpuset(topo))};
        if (!g.near) continue;
        const char *model = hwloc_obj_get_info_by_name(o, "GPUModel");
        snprintf(g.name, sizeof g.name, "%s%s%s%s", o->name, model ? " (" : "", model ? model : "",
                 model ? ")" : "");
        int at = n++;
        while (at > 0 && gpus[at - 1].index > g.index) {
            gpus[at] = gpus[at - 1];
            at--;
        }
        gpus[at] = g;
    }
    return n;
}

/* ---- the planner --------------------------------------------------------------------------------- */

typedef struct plan_work {
    hwloc_bitmap_t *bind;  /* [n] binding ∩ topology */
    hwloc_bitmap_t *share; /* [n] */
    hwloc_bitmap_t *set;   /* [n] bound set per mode */
    int *group;            /* [n] index of the first rank with the same binding */
    int *gpu;              /* [n] index into gpus, -1 none */
    gpu_info gpus[64];
    int ngpus;
    int n;
} plan_work;

/* The GPUs the caller listed (opt->gpus), with their locality parsed. */
static fm_status given_gpus(hwloc_topology_t topo, const fm_topology_gpu *list, int n, plan_work *w)
{
    int cap = (int)(sizeof w->gpus / sizeof w->gpus[0]);
    if (n < 0 || n > cap)
        return FM_ERR(FM_ERR_INTERNAL, "placement: %d GPUs given (0 to %d supported)", n, cap);
    for (int g = 0; g < n; g++) {
        gpu_info *d = &w->gpus[g];
        d->index = list[g].index;
        fm_util_strlcpy(d->name, list[g].name, sizeof d->name);
        d->near = hwloc_bitmap_alloc();
        FM_CHECK_ALLOC(d->near, sizeof(void *));
        w->ngpus = g + 1; /* so that work_free releases it */
        if (!list[g].near[0]) {
            hwloc_bitmap_copy(d->near, hwloc_topology_get_topology_cpuset(topo));
        } else if (hwloc_bitmap_list_sscanf(d->near, list[g].near) != 0) {
            return FM_ERR(FM_ERR_INTERNAL, "placement: GPU %d's locality '%s' is not a PU list",
                          list[g].index, list[g].near);
        }
    }
    return NULL;
}

static void work_free(plan_work *w)
{
    for (int i = 0; i < w->n; i++) {
        if (w->bind) hwloc_bitmap_free(w->bind[i]);
        if (w->share) hwloc_bitmap_free(w->share[i]);
        if (w->set) hwloc_bitmap_free(w->set[i]);
    }
    for (int g = 0; g < w->ngpus; g++) hwloc_bitmap_free(w->gpus[g].near);
    free(w->bind);
    free(w->share);
    free(w->set);
    free(w->group);
    free(w->gpu);
}

static fm_status work_alloc(plan_work *w, int n)
{
    memset(w, 0, sizeof *w);
    w->bind = calloc((size_t)n, sizeof *w->bind);
    w->share = calloc((size_t)n, sizeof *w->share);
    w->set = calloc((size_t)n, sizeof *w->set);
    w->group = calloc((size_t)n, sizeof *w->group);
    w->gpu = calloc((size_t)n, sizeof *w->gpu);
    w->n = n;
    if (!w->bind || !w->share || !w->set || !w->group || !w->gpu) {
        w->n = 0;
        work_free(w);
        return FM_ERR(FM_ERR_NOMEM, "out of memory planning %d ranks", n);
    }
    for (int i = 0; i < n; i++) {
        w->bind[i] = hwloc_bitmap_alloc();
        w->share[i] = hwloc_bitmap_alloc();
        w->set[i] = hwloc_bitmap_alloc();
        w->gpu[i] = -1;
        if (!w->bind[i] || !w->share[i] || !w->set[i]) {
            work_free(w);
            return FM_ERR(FM_ERR_NOMEM, "out of memory planning %d ranks", n);
        }
    }
    return NULL;
}

/* Shares `region` among the ranks listed in members[0..k): whole cores when there are enough,
 * otherwise cores shared in blocks (rank j of k on core floor(j*cores/k)) with a warning. */
static fm_status share_region(hwloc_topology_t topo, hwloc_const_bitmap_t region, const int *members,
                              int k, plan_work *w, fm_topology_plan *plans)
{
    int ncores = count_cores(topo, region);
    if (ncores >= k) {
        hwloc_bitmap_t *out = malloc(sizeof *out * (size_t)k);
        FM_CHECK_ALLOC(out, sizeof *out * (size_t)k);
        for (int j = 0; j < k; j++) out[j] = w->share[members[j]];
        fm_status st = split_share(topo, region, k, LEVEL_PACKAGE, out);
        free(out);
        FM_TRY(st);
        int lo = INT_MAX, hi = 0;
        for (int j = 0; j < k; j++) {
            int c = count_cores(topo, w->share[members[j]]);
            lo = c < lo ? c : lo;
            hi = c > hi ? c : hi;
        }
        if (lo != hi)
            for (int j = 0; j < k; j++)
                add_warning(&plans[members[j]],
                            "uneven shares: %d ranks on %d cores get %d to %d cores each (choose a "
                            "rank count that divides the packages and NUMA domains evenly)",
                            k, ncores, lo, hi);
        return NULL;
    }
    char list[64];
    hwloc_bitmap_list_snprintf(list, sizeof list, region);
    int depth = core_depth(topo), c = 0;
    hwloc_obj_t o = NULL;
    hwloc_bitmap_t *cores = calloc((size_t)ncores, sizeof *cores);
    FM_CHECK_ALLOC(cores, sizeof *cores * (size_t)ncores);
    while ((o = hwloc_get_next_obj_by_depth(topo, depth, o)) && c < ncores)
        if (hwloc_bitmap_intersects(o->cpuset, region)) cores[c++] = o->cpuset;
    for (int j = 0; j < k; j++) {
        fm_topology_plan *p = &plans[members[j]];
        hwloc_bitmap_and(w->share[members[j]], cores[(long long)j * ncores / k], region);
        p->shared = 1;
        add_warning(p, "%d ranks share %d core%s (%s%s): expect slow steps; use at most %d rank%s "
                       "on this node",
                    k, ncores, ncores == 1 ? "" : "s", list,
                    strlen(list) + 1 >= sizeof list ? "..." : "", ncores, ncores == 1 ? "" : "s");
    }
    free(cores);
    return NULL;
}

/* With GPUs in auto mode and one binding for all ranks: the GPUs near the binding (their locality
 * shares cores with it) are "eligible"; rank j of k uses eligible GPU floor(j*E/k), and the ranks of
 * GPUs with the same locality share those cores. Distinct localities that overlap make the split
 * ambiguous, and localities that leave cores of the binding near no GPU would strand them: in both
 * cases nothing is applied and the caller falls back to the plain split. */
static fm_status steer_by_gpu(hwloc_topology_t topo, const int *members, int k, plan_work *w,
                              fm_topology_plan *plans, int *applied)
{
    *applied = 0;
    int G = w->ngpus, E = 0;
    hwloc_const_bitmap_t region = w->bind[members[0]];
    hwloc_bitmap_t *loc = calloc((size_t)G, sizeof *loc);
    int *elig = calloc((size_t)G, sizeof *elig);
    int *cluster = calloc((size_t)G, sizeof *cluster);
    int *members_c = malloc(sizeof *members_c * (size_t)k);
    fm_status st = NULL;
    if (!loc || !elig || !cluster || !members_c) {
        st = FM_ERR(FM_ERR_NOMEM, "out of memory planning GPU placement");
        goto done;
    }
    int ok = 1;
    for (int g = 0; g < G && ok; g++) {
        hwloc_bitmap_t l = hwloc_bitmap_alloc();
        if (!l) {
            st = FM_ERR(FM_ERR_NOMEM, "out of memory planning GPU placement");
            goto done;
        }
        hwloc_bitmap_and(l, w->gpus[g].near, region);
        if (count_cores(topo, l) == 0) {
            hwloc_bitmap_free(l);
            continue;
        }
        loc[E] = l;
        elig[E] = g;
        cluster[E] = E;
        for (int h = 0; h < E && ok; h++) {
            if (hwloc_bitmap_isequal(loc[E], loc[h])) {
                cluster[E] = cluster[h];
                break;
            }
            ok = !hwloc_bitmap_intersects(loc[E], loc[h]);
        }
        E++;
    }
    if (!ok || E == 0) goto done;
    /* GPUs near only part of the binding (Leonardo Booster: all four next to cores 0-15 of 32):
     * steering would crowd the ranks onto those cores and leave the rest idle, so keep the plain
     * split over every core; assign_nearest_gpus then gives each rank its nearest free GPU. */
    hwloc_bitmap_t near_all = hwloc_bitmap_alloc();
    if (!near_all) {
        st = FM_ERR(FM_ERR_NOMEM, "out of memory planning GPU placement");
        goto done;
    }
    for (int e = 0; e < E; e++) hwloc_bitmap_or(near_all, near_all, loc[e]);
    int stranded = count_cores(topo, near_all) < count_cores(topo, region);
    hwloc_bitmap_free(near_all);
    if (stranded) goto done;
    int *pick = members_c; /* reuse: eligible slot of each member, then the cluster's members */
    for (int j = 0; j < k; j++) w->gpu[members[j]] = (int)((long long)j * E / k); /* slot for now */
    for (int c = 0; c < E && !st; c++) {
        if (cluster[c] != c) continue;
        int m = 0;
        for (int j = 0; j < k; j++)
            if (cluster[w->gpu[members[j]]] == c) pick[m++] = members[j];
        if (m > 0) st = share_region(topo, loc[c], pick, m, w, plans);
    }
    for (int j = 0; j < k; j++) w->gpu[members[j]] = elig[w->gpu[members[j]]];
    *applied = !st;
done:
    if (loc)
        for (int e = 0; e < E; e++) hwloc_bitmap_free(loc[e]);
    free(loc);
    free(elig);
    free(cluster);
    free(members_c);
    return st;
}

/* Each rank without a GPU yet takes the least used GPU, preferring the most cores in common with
 * its share, then the lowest index. */
static void assign_nearest_gpus(hwloc_topology_t topo, plan_work *w)
{
    int used[64] = {0};
    for (int i = 0; i < w->n; i++)
        if (w->gpu[i] >= 0) used[w->gpu[i]]++;
    hwloc_bitmap_t tmp = hwloc_bitmap_alloc();
    if (!tmp) return;
    for (int i = 0; i < w->n; i++) {
        if (w->gpu[i] >= 0) continue;
        int best = -1, best_used = 0, best_near = 0;
        for (int g = 0; g < w->ngpus; g++) {
            hwloc_bitmap_and(tmp, w->gpus[g].near, w->share[i]);
            int near = count_cores(topo, tmp);
            if (best < 0 || used[g] < best_used || (used[g] == best_used && near > best_near)) {
                best = g;
                best_used = used[g];
                best_near = near;
            }
        }
        w->gpu[i] = best;
        if (best >= 0) used[best]++;
    }
    hwloc_bitmap_free(tmp);
}

static fm_status fill_numa(hwloc_topology_t topo, hwloc_const_bitmap_t set, char *dst, size_t size)
{
    hwloc_bitmap_t ids = hwloc_bitmap_alloc();
    FM_CHECK_ALLOC(ids, sizeof(void *));
    hwloc_obj_t o = NULL;
    while ((o = hwloc_get_next_obj_by_type(topo, HWLOC_OBJ_NUMANODE, o)))
        if (cpu_numa(o) && o->cpuset && hwloc_bitmap_intersects(o->cpuset, set))
            hwloc_bitmap_set(ids, o->os_index);
    fm_status st = NULL;
    if (hwloc_bitmap_iszero(ids))
        fm_util_strlcpy(dst, "-", size);
    else
        st = list_string(dst, size, ids, "NUMA");
    hwloc_bitmap_free(ids);
    return st;
}

static fm_status plan_node(hwloc_topology_t topo, const hwloc_const_bitmap_t *bindings, int n,
                           const fm_topology_options *opt, const fm_topology_gpu *gpus, int ngpus,
                           fm_topology_plan *plans, plan_work *w)
{
    hwloc_const_bitmap_t all = hwloc_topology_get_topology_cpuset(topo);
    hwloc_bitmap_t machine = hwloc_bitmap_dup(hwloc_topology_get_allowed_cpuset(topo));
    FM_CHECK_ALLOC(machine, sizeof(void *));
    hwloc_bitmap_and(machine, machine, all);

    for (int i = 0; i < n; i++) {
        fm_topology_plan *p = &plans[i];
        memset(p, 0, sizeof *p);
        p->rank = i;
        p->local_rank = i;
        p->local_size = n;
        p->bind = opt->bind;
        p->gpu = -1;
        fm_util_strlcpy(p->gpu_name, "no GPU", sizeof p->gpu_name);
        if (!bindings[i] || hwloc_bitmap_iszero(bindings[i])) {
            hwloc_bitmap_free(machine);
            return FM_ERR(FM_ERR_INTERNAL, "placement: local rank %d has an empty CPU binding", i);
        }
        hwloc_bitmap_and(w->bind[i], bindings[i], all);
        if (hwloc_bitmap_iszero(w->bind[i])) {
            char b[128];
            hwloc_bitmap_list_snprintf(b, sizeof b, bindings[i]);
            hwloc_bitmap_free(machine);
            return FM_ERR(FM_ERR_INTERNAL,
                          "placement: local rank %d is bound to PUs %s, none of which this topology has",
                          i, b);
        }
        fm_status st = list_string(p->binding, sizeof p->binding, w->bind[i], "binding");
        if (st) {
            hwloc_bitmap_free(machine);
            return fm_status_trace(st, __FILE__, __LINE__, __func__);
        }
        p->launcher_bound = !hwloc_bitmap_isequal(w->bind[i], machine);
        w->group[i] = i;
        for (int j = 0; j < i; j++)
            if (hwloc_bitmap_isequal(w->bind[i], w->bind[j])) {
                w->group[i] = w->group[j];
                break;
            }
    }
    hwloc_bitmap_free(machine);

    /* Bindings of different groups that overlap: each rank keeps its own, but say so. */
    for (int i = 0; i < n; i++)
        for (int j = 0; j < i; j++)
            if (w->group[i] != w->group[j] && w->group[j] == j &&
                hwloc_bitmap_intersects(w->bind[i], w->bind[j])) {
                add_warning(&plans[i], "launcher bindings of local ranks %d and %d overlap", j, i);
                break;
            }

    if (opt->use_gpus && gpus && ngpus > 0) {
        FM_TRY(given_gpus(topo, gpus, ngpus, w));
    } else if (opt->use_gpus) {
        w->ngpus = find_gpus(topo, w->gpus, (int)(sizeof w->gpus / sizeof w->gpus[0]));
    }

    int *members = malloc(sizeof *members * (size_t)n);
    FM_CHECK_ALLOC(members, sizeof *members * (size_t)n);
    fm_status st = NULL;
    for (int g = 0; g < n && !st; g++) {
        if (w->group[g] != g) continue;
        int k = 0;
        for (int i = g; i < n; i++)
            if (w->group[i] == g) members[k++] = i;
        int steered = 0;
        if (opt->bind == FM_BIND_AUTO && w->ngpus > 0 && k == n)
            st = steer_by_gpu(topo, members, k, w, plans, &steered);
        if (!st && !steered) st = share_region(topo, w->bind[g], members, k, w, plans);
    }
    free(members);
    FM_TRY(st);
    if (w->ngpus > 0) assign_nearest_gpus(topo, w);

    int gpu_users[64] = {0};
    for (int i = 0; i < n; i++)
        if (w->gpu[i] >= 0) gpu_users[w->gpu[i]]++;

    for (int i = 0; i < n; i++) {
        fm_topology_plan *p = &plans[i];
        switch (opt->bind) {
        case FM_BIND_NUMA: widen(topo, HWLOC_OBJ_NUMANODE, w->share[i], w->bind[i], w->set[i]); break;
        case FM_BIND_SOCKET: widen(topo, HWLOC_OBJ_PACKAGE, w->share[i], w->bind[i], w->set[i]); break;
        case FM_BIND_NONE: hwloc_bitmap_copy(w->set[i], w->bind[i]); break;
        case FM_BIND_CORE:
        case FM_BIND_AUTO: hwloc_bitmap_copy(w->set[i], w->share[i]); break;
        }
        p->cores = count_cores(topo, w->share[i]);
        p->threads = opt->threads > 0 ? opt->threads : p->cores;
        p->pin_threads = opt->bind == FM_BIND_AUTO || opt->bind == FM_BIND_CORE;
        if (p->threads > p->cores && !p->shared)
            add_warning(p, "%d threads on %d core%s: threads share cores", p->threads, p->cores,
                        p->cores == 1 ? "" : "s");
        FM_TRY(list_string(p->cpuset, sizeof p->cpuset, w->set[i], "rank's"));
        FM_TRY(list_string(p->share, sizeof p->share, w->share[i], "share"));
        FM_TRY(fill_numa(topo, w->set[i], p->numa, sizeof p->numa));
        if (w->gpu[i] >= 0) {
            const gpu_info *g = &w->gpus[w->gpu[i]];
            p->gpu = g->index;
            fm_util_strlcpy(p->gpu_name, g->name, sizeof p->gpu_name);
            if (gpu_users[w->gpu[i]] > 1)
                add_warning(p, "%d ranks share GPU %d", gpu_users[w->gpu[i]], g->index);
        } else if (opt->use_gpus) {
            add_warning(p, "no CUDA GPU found by hwloc on this node");
        }
    }
    return NULL;
}

fm_status fm_topology_plan_node(hwloc_topology_t topo, const hwloc_const_bitmap_t *bindings,
                                int local_size, const fm_topology_options *opt,
                                fm_topology_plan *plans)
{
    FM_TRY(fm_topology_plan_node_gpus(topo, bindings, local_size, opt, NULL, 0, plans));
    return NULL;
}

fm_status fm_topology_plan_node_gpus(hwloc_topology_t topo, const hwloc_const_bitmap_t *bindings,
                                     int local_size, const fm_topology_options *opt,
                                     const fm_topology_gpu *gpus, int ngpus, fm_topology_plan *plans)
{
    if (!topo || !bindings || !opt || !plans || local_size < 1)
        return FM_ERR(FM_ERR_INTERNAL, "fm_topology_plan_node: invalid arguments (%d ranks)", local_size);
    if (opt->bind < FM_BIND_AUTO || opt->bind > FM_BIND_NONE)
        return FM_ERR(FM_ERR_INTERNAL, "fm_topology_plan_node: invalid bind mode %d", (int)opt->bind);
    if (opt->threads < 0)
        return FM_ERR(FM_ERR_USAGE, "placement: threads must be 0 (automatic) or positive, got %d",
                      opt->threads);
    plan_work w;
    FM_TRY(work_alloc(&w, local_size));
    fm_status st = plan_node(topo, bindings, local_size, opt, gpus, ngpus, plans, &w);
    work_free(&w);
    FM_TRY(st);
    return NULL;
}

void fm_topology_describe(hwloc_topology_t topo, char *buf, size_t size)
{
    int numa = 0;
    hwloc_obj_t o = NULL;
    while ((o = hwloc_get_next_obj_by_type(topo, HWLOC_OBJ_NUMANODE, o))) numa += cpu_numa(o);
    int packages = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_PACKAGE);
    int cores = count_cores(topo, hwloc_topology_get_topology_cpuset(topo));
    int pus = hwloc_bitmap_weight(hwloc_topology_get_topology_cpuset(topo));
    gpu_info gpus[64];
    int ng = find_gpus(topo, gpus, 64);
    int w = snprintf(buf, size, "%d package%s, %d NUMA node%s, %d core%s, %d PU%s, ", packages,
                     packages == 1 ? "" : "s", numa, numa == 1 ? "" : "s", cores, cores == 1 ? "" : "s",
                     pus, pus == 1 ? "" : "s");
    size_t used = w > 0 ? (size_t)w : 0;
    if (ng == 0 && used < size) snprintf(buf + used, size - used, "no CUDA GPU");
    for (int g = 0; g < ng; g++) {
        if (used < size) {
            w = snprintf(buf + used, size - used, "%s%s", g ? ", " : "", gpus[g].name);
            if (w > 0) used += (size_t)w;
        }
        hwloc_bitmap_free(gpus[g].near);
    }
}

/* ---- this machine ---------------------------------------------------------------------------------- */

fm_status fm_topology_load(hwloc_topology_t *topo, const char *xml_path)
{
    *topo = NULL;
    hwloc_topology_t t;
    if (hwloc_topology_init(&t) != 0)
        return FM_ERR(FM_ERR_NOMEM, "hwloc_topology_init failed: %s", strerror(errno));
    if (xml_path && hwloc_topology_set_xml(t, xml_path) != 0) {
        int e = errno;
        hwloc_topology_destroy(t);
        return FM_ERR(FM_ERR_INPUT, "%s: cannot use as an hwloc XML topology: %s", xml_path, strerror(e));
    }
    /* GPUs are I/O objects, filtered out by default. */
    hwloc_topology_set_io_types_filter(t, HWLOC_TYPE_FILTER_KEEP_IMPORTANT);
    if (hwloc_topology_load(t) != 0) {
        int e = errno;
        hwloc_topology_destroy(t);
        if (xml_path)
            return FM_ERR(FM_ERR_INPUT, "%s: not a valid hwloc XML topology: %s", xml_path, strerror(e));
        return FM_ERR(FM_ERR_INTERNAL, "hwloc could not discover this machine's topology: %s",
                      strerror(e));
    }
    *topo = t;
    return NULL;
}

fm_status fm_topology_current_binding(hwloc_topology_t topo, hwloc_bitmap_t set)
{
    if (hwloc_get_cpubind(topo, set, HWLOC_CPUBIND_PROCESS) != 0 &&
        hwloc_get_cpubind(topo, set, HWLOC_CPUBIND_THREAD) != 0)
        hwloc_bitmap_copy(set, hwloc_topology_get_allowed_cpuset(topo));
    hwloc_bitmap_and(set, set, hwloc_topology_get_topology_cpuset(topo));
    if (hwloc_bitmap_iszero(set)) hwloc_bitmap_copy(set, hwloc_topology_get_allowed_cpuset(topo));
    return NULL;
}

/* Non-zero when the user asked the OpenMP runtime to place threads itself. */
static int omp_env_binds(void)
{
    const char *places = getenv("OMP_PLACES");
    const char *bind = getenv("OMP_PROC_BIND");
    if (places && *places) return 1;
    return bind && *bind && strcmp(bind, "false") != 0 && strcmp(bind, "FALSE") != 0;
}

fm_status fm_topology_apply(hwloc_topology_t topo, const fm_topology_plan *plan)
{
    if (plan->threads < 1)
        return FM_ERR(FM_ERR_INTERNAL, "fm_topology_apply: plan has %d threads", plan->threads);
    fm_status st = NULL;
    hwloc_bitmap_t set = hwloc_bitmap_alloc(), share = hwloc_bitmap_alloc();
    hwloc_bitmap_t *units = NULL;
    int n = 0, cap = 0, failed = 0, err = 0;
    if (!set || !share) {
        st = FM_ERR(FM_ERR_NOMEM, "out of memory applying the placement");
        goto done;
    }
    if (hwloc_bitmap_list_sscanf(set, plan->cpuset) != 0 || hwloc_bitmap_iszero(set) ||
        hwloc_bitmap_list_sscanf(share, plan->share) != 0 || hwloc_bitmap_iszero(share)) {
        st = FM_ERR(FM_ERR_INTERNAL, "fm_topology_apply: invalid cpusets '%s' / '%s' in the plan",
                    plan->cpuset, plan->share);
        goto done;
    }
    if (plan->bind != FM_BIND_NONE && hwloc_set_cpubind(topo, set, HWLOC_CPUBIND_PROCESS) != 0 &&
        hwloc_set_cpubind(topo, set, HWLOC_CPUBIND_THREAD) != 0) {
        st = FM_ERR(FM_ERR_INTERNAL, "could not bind the process to PUs %s: %s", plan->cpuset,
                    strerror(errno));
        goto done;
    }
    omp_set_num_threads(plan->threads);
    if (!plan->pin_threads || plan->bind == FM_BIND_NONE || omp_env_binds()) goto done;

    int depth = core_depth(topo);
    cap = count_cores(topo, share);
    units = calloc((size_t)cap, sizeof *units);
    if (!units) {
        st = FM_ERR(FM_ERR_NOMEM, "out of memory applying the placement");
        goto done;
    }
    hwloc_obj_t o = NULL;
    while ((o = hwloc_get_next_obj_by_depth(topo, depth, o)) && n < cap) {
        if (!hwloc_bitmap_intersects(o->cpuset, share)) continue;
        units[n] = hwloc_bitmap_alloc();
        if (!units[n]) break;
        hwloc_bitmap_and(units[n], o->cpuset, share);
        n++;
    }
    if (n == 0) {
        st = FM_ERR(FM_ERR_INTERNAL, "fm_topology_apply: share %s has no core", plan->share);
        goto done;
    }
#pragma omp parallel num_threads(plan->threads) reduction(+ : failed) reduction(max : err)
    {
        int t = omp_get_thread_num();
        if (hwloc_set_cpubind(topo, units[t % n], HWLOC_CPUBIND_THREAD) != 0) {
            failed++;
            err = errno;
        }
    }
    if (failed)
        st = FM_ERR(FM_ERR_INTERNAL, "could not pin %d of %d OpenMP threads to their cores in %s: %s",
                    failed, plan->threads, plan->share, strerror(err));
done:
    if (units)
        for (int i = 0; i < n; i++) hwloc_bitmap_free(units[i]);
    free(units);
    hwloc_bitmap_free(set);
    hwloc_bitmap_free(share);
    return st;
}

/* OMP_NUM_THREADS's first value ("8" or "8,4"), or 0 when unset or not a positive number. */
int fm_topology_env_threads(void)
{
    const char *s = getenv("OMP_NUM_THREADS");
    if (!s || !*s) return 0;
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || (*end && *end != ',') || v < 1 || v > 1 << 20) return 0;
    return (int)v;
}

fm_status fm_topology_place(const fm_comm *c, const fm_topology_options *opt,
                            fm_topology_plan *mine)
{
    FM_TRY(fm_topology_place_gpus(c, opt, NULL, 0, mine));
    return NULL;
}

fm_status fm_topology_place_gpus(const fm_comm *c, const fm_topology_options *opt_in,
                                 const fm_topology_gpu *gpus, int ngpus, fm_topology_plan *mine)
{
    fm_topology_options opt = *opt_in;
    if (opt.threads == 0) opt.threads = fm_topology_env_threads();
    int n = c->local_size;
    hwloc_topology_t topo = NULL;
    hwloc_bitmap_t cur = NULL;
    hwloc_bitmap_t *binds = NULL;
    char *lists = NULL;
    fm_topology_plan *plans = NULL;
    char my_list[FM_TOPOLOGY_LIST_MAX] = "";

    /* The node's ranks agree before the allgather (fm_comm_agree over c->node): when one of them
     * cannot read its binding or allocate the table, all of them return its error and none waits
     * in the allgather. */
    fm_status st = fm_topology_load(&topo, NULL);
    if (!st) {
        cur = hwloc_bitmap_alloc();
        if (!cur) st = FM_ERR(FM_ERR_NOMEM, "out of memory");
    }
    if (!st) st = fm_topology_current_binding(topo, cur);
    if (!st) st = list_string(my_list, sizeof my_list, cur, "current binding");
    if (!st) {
        lists = calloc((size_t)n, FM_TOPOLOGY_LIST_MAX);
        if (!lists) st = FM_ERR(FM_ERR_NOMEM, "out of memory for %d bindings", n);
    }
    FM_TRY_GOTO(st, done, fm_comm_agree(c->node, st));
    FM_TRY_GOTO(st, done, fm_comm_node_allgather(c, my_list, FM_TOPOLOGY_LIST_MAX, lists));
    binds = calloc((size_t)n, sizeof *binds);
    plans = calloc((size_t)n, sizeof *plans);
    if (!binds || !plans) {
        st = FM_ERR(FM_ERR_NOMEM, "out of memory planning %d ranks", n);
        goto done;
    }
    for (int i = 0; i < n && !st; i++) {
        const char *l = lists + (size_t)i * FM_TOPOLOGY_LIST_MAX;
        binds[i] = hwloc_bitmap_alloc();
        if (!binds[i] || hwloc_bitmap_list_sscanf(binds[i], l) != 0)
            st = FM_ERR(FM_ERR_INTERNAL, "placement: cannot parse local rank %d's binding '%s'", i, l);
    }
    if (st) goto done;
    FM_TRY_GOTO(st, done,
                fm_topology_plan_node_gpus(topo, (const hwloc_const_bitmap_t *)binds, n, &opt, gpus,
                                           ngpus, plans));
    *mine = plans[c->local_rank];
    mine->rank = c->rank;
    fm_util_strlcpy(mine->host, c->host, sizeof mine->host);
    if (mine->pin_threads && omp_env_binds()) {
        mine->pin_threads = 0;
        /* The OpenMP runtime computed its places from the binding at start; ranks that started with
         * the same binding therefore place their threads on the same cores. */
        int same = 0;
        for (int i = 0; i < n; i++) same += hwloc_bitmap_isequal(binds[i], binds[c->local_rank]);
        if (same > 1)
            add_warning(mine, "OMP_PLACES/OMP_PROC_BIND set while %d ranks started with the same binding: "
                              "their OpenMP threads may share cores; unset both (fmtrain then pins the "
                              "threads) or have the launcher bind each rank to its own cores",
                        same);
        else
            add_warning(mine, "OMP_PLACES/OMP_PROC_BIND set: the OpenMP runtime places the threads");
    }
    fm_status ast = fm_topology_apply(topo, mine);
    if (ast) {
        /* Running unbound is slower, not wrong: report it and continue. */
        add_warning(mine, "%s", fm_status_message(ast));
        fm_status_free(&ast);
    }
done:
    if (binds)
        for (int i = 0; i < n; i++) hwloc_bitmap_free(binds[i]);
    free(binds);
    free(plans);
    free(lists);
    hwloc_bitmap_free(cur);
    if (topo) hwloc_topology_destroy(topo);
    return st;
}

/* ---- the table ------------------------------------------------------------------------------------- */

/* "0-3,7" for the ranks in `r` (sorted). */
static void rank_ranges(char *dst, size_t size, const int *r, int n)
{
    size_t used = 0;
    dst[0] = '\0';
    for (int i = 0; i < n && used + 24 < size; i++) {
        int j = i;
        while (j + 1 < n && r[j + 1] == r[j] + 1) j++;
        int w = j > i ? snprintf(dst + used, size - used, "%s%d-%d", used ? "," : "", r[i], r[j])
                      : snprintf(dst + used, size - used, "%s%d", used ? "," : "", r[i]);
        if (w > 0) used += (size_t)w;
        i = j;
    }
}

void fm_topology_print_table(FILE *out, const fm_topology_plan *plans, int n)
{
    int hostw = 4, cpuw = 6, numaw = 4, gpuw = 3;
    for (int i = 0; i < n; i++) {
        int l = (int)strlen(plans[i].host);
        hostw = l > hostw ? l : hostw;
        l = (int)strlen(plans[i].cpuset);
        cpuw = l > cpuw ? l : cpuw;
        l = (int)strlen(plans[i].numa);
        numaw = l > numaw ? l : numaw;
        l = (int)strlen(plans[i].gpu_name);
        gpuw = l > gpuw ? l : gpuw;
    }
    if (cpuw > 40) cpuw = 40;
    fprintf(out, "%4s  %-*s  %-6s  %-*s  %-*s  %5s  %7s  %-6s  %s\n", "rank", hostw, "host", "bind",
            cpuw, "cpuset", numaw, "numa", "cores", "threads", "pinned", "gpu");
    for (int i = 0; i < n; i++) {
        const fm_topology_plan *p = &plans[i];
        fprintf(out, "%4d  %-*s  %-6s  %-*s  %-*s  %5d  %7d  %-6s  %s\n", p->rank, hostw, p->host,
                fm_topology_bind_name(p->bind), cpuw, p->cpuset, numaw, p->numa, p->cores, p->threads,
                p->bind == FM_BIND_NONE ? "no" : p->pin_threads ? "core" : "set", p->gpu_name);
    }
    /* Launcher bindings that were respected, then warnings, each text once with its ranks. */
    int *r = malloc(sizeof *r * (size_t)(n > 0 ? n : 1));
    char *seen = calloc((size_t)(n > 0 ? n : 1), 1);
    if (!r || !seen) {
        free(r);
        free(seen);
        return;
    }
    char ranks[160];
    int nb = 0;
    for (int i = 0; i < n; i++)
        if (plans[i].launcher_bound) r[nb++] = plans[i].rank;
    if (nb) {
        rank_ranges(ranks, sizeof ranks, r, nb);
        fprintf(out, "launcher binding kept (never widened) for rank%s %s\n", nb == 1 ? "" : "s", ranks);
    }
    for (int i = 0; i < n; i++) {
        if (seen[i] || !plans[i].warning[0]) continue;
        int m = 0;
        for (int j = i; j < n; j++)
            if (!seen[j] && strcmp(plans[j].warning, plans[i].warning) == 0) {
                seen[j] = 1;
                r[m++] = plans[j].rank;
            }
        rank_ranges(ranks, sizeof ranks, r, m);
        fprintf(out, "warning (rank%s %s on %s): %s\n", m == 1 ? "" : "s", ranks, plans[i].host,
                plans[i].warning);
    }
    free(r);
    free(seen);
}

fm_status fm_topology_report(const fm_comm *c, const fm_topology_plan *mine, FILE *out)
{
    fm_topology_plan *all = NULL;
    fm_status st = NULL;
    if (c->rank == 0) {
        all = calloc((size_t)c->size, sizeof *all);
        if (!all) st = FM_ERR(FM_ERR_NOMEM, "out of memory for the placement table of %d ranks", c->size);
    }
    FM_TRY(fm_comm_agree(c->world, st)); /* rank 0 can receive the gather, or no rank sends */
    st = fm_comm_gather(c, mine, sizeof *mine, all);
    if (!st && c->rank == 0) {
        fprintf(out, "placement: %d rank%s on %d node%s\n", c->size, c->size == 1 ? "" : "s", c->nodes,
                c->nodes == 1 ? "" : "s");
        fm_topology_print_table(out, all, c->size);
        fflush(out);
    }
    free(all);
    FM_TRY(st);
    return NULL;
}

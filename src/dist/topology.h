/* topology.h — where each rank and its OpenMP threads run (hwloc), and the placement table.
 *
 * What it is: a planner that splits the cores a node's ranks may use among those ranks, a function
 * that applies one rank's plan (binds the process, sets and pins its OpenMP threads), and the table
 * rank 0 prints at start. See docs/placement.md for the user's view.
 *
 * Planning is pure: fm_topology_plan_node takes an hwloc topology (this machine's, or a saved XML
 * topology in the tests) and each local rank's current binding, and fills one fm_topology_plan per
 * local rank. It never widens a binding: when a launcher (srun --cpu-bind, mpirun --bind-to) already
 * bound a rank, the rank's plan lies inside that binding. Ranks of the node with the same binding
 * share it out among themselves:
 *   auto   spread the ranks evenly over packages, then NUMA domains, then cores; each rank is bound to
 *          the cores of its share and runs one OpenMP thread per core, each pinned to its core.
 *          With GPUs in use (opt.use_gpus), the node's ranks are spread over the GPUs near their
 *          binding (rank i of n takes GPU floor(i*G/n)) and each share is cut from the cores near
 *          its GPU.
 *   core   the same shares as auto (without GPU steering); threads pinned one per core.
 *   numa   the same shares; the rank is bound to the whole NUMA domain(s) its share lies in; its
 *          threads float inside them.
 *   socket the same shares; the rank is bound to the whole package(s) its share lies in.
 *   none   no binding is changed; threads = the cores of the share (so ranks do not oversubscribe).
 * More ranks than cores: cores are shared in blocks (rank j of k on core floor(j*cores/k)) and the
 * plan carries a warning (never an error). A thread count (`threads`, [runtime] threads or
 * OMP_NUM_THREADS) overrides the cores of the share; more threads than cores gives a warning.
 *
 * Ownership: hwloc topologies passed in stay owned by the caller; plans are plain values (fixed-size
 * strings) so that they can be gathered over MPI as bytes.
 */
#ifndef FM_TOPOLOGY_H
#define FM_TOPOLOGY_H

#include <hwloc.h>
#include <stdio.h>

#include "dist/comm.h"
#include "config/config.h" /* fm_bind */
#include "core/status.h"

#define FM_TOPOLOGY_HOST_MAX 64
#define FM_TOPOLOGY_LIST_MAX 512 /* a cpuset as a list string, "0-3,8" */
#define FM_TOPOLOGY_NAME_MAX 96
#define FM_TOPOLOGY_WARN_MAX 512

/* A GPU as the backend sees it (fm_topology_plan_node_gpus, fm_topology_place_gpus). Without such a
 * list the planner uses the CUDA OS devices ("cudaN") that hwloc reports in the topology (the XML
 * fixtures, or an hwloc built with its CUDA plugin). No caller passes a list yet: `fmtrain train`
 * places through fm_topology_place, so its GPUs are hwloc's; the list is exercised by
 * tests/topology and is the way for a backend to pass the devices it sees, with their locality
 * from hwloc's CUDA runtime helper (hwloc_cudart_get_device_cpuset), so that CUDA_VISIBLE_DEVICES
 * and the runtime's device order are respected. At most 64. */
typedef struct fm_topology_gpu {
    int index;                         /* device ordinal (CUDA device number) */
    char name[FM_TOPOLOGY_NAME_MAX];   /* shown in the table, e.g. "cuda0 (NVIDIA H100)" */
    char near[FM_TOPOLOGY_LIST_MAX];   /* PUs close to the GPU as a list ("" = the whole node), e.g.
                                          from hwloc_cudart_get_device_cpuset() */
} fm_topology_gpu;

/* What the user asked for. */
typedef struct fm_topology_options {
    fm_bind bind;  /* [runtime] bind */
    int threads;   /* > 0: OpenMP threads per rank; 0: the cores of the rank's share */
    int use_gpus;  /* non-zero when the run uses a GPU backend: choose the nearest GPU per rank */
} fm_topology_options;

/* One rank's placement. Plain data: may be copied and sent over MPI as bytes. */
typedef struct fm_topology_plan {
    int rank;        /* world rank (the local rank in a simulated plan) */
    int local_rank;  /* 0..local_size-1 on its node */
    int local_size;
    char host[FM_TOPOLOGY_HOST_MAX];
    fm_bind bind;                        /* the mode used */
    char cpuset[FM_TOPOLOGY_LIST_MAX];   /* PUs (OS indexes) the process is bound to, "0-3,8" */
    char share[FM_TOPOLOGY_LIST_MAX];    /* PUs of the cores of this rank's share (threads run here) */
    char binding[FM_TOPOLOGY_LIST_MAX];  /* the binding found before placement */
    int launcher_bound;                  /* binding was narrower than the machine's allowed PUs */
    char numa[FM_TOPOLOGY_NAME_MAX];     /* NUMA node OS indexes of cpuset, "0" / "0-1", "-" if none */
    int cores;       /* cores in the share (a core counts when any of its PUs is in the binding) */
    int threads;     /* OpenMP threads to run */
    int pin_threads; /* 1: OpenMP thread t is pinned to core t % cores of the share;
                        0: threads float inside cpuset */
    int shared;      /* 1 when the share's cores are also used by another rank (oversubscribed) */
    int gpu;         /* GPU index (CUDA device ordinal), -1 for none */
    char gpu_name[FM_TOPOLOGY_NAME_MAX]; /* "cuda0 (NVIDIA H100)" or "no GPU" */
    char warning[FM_TOPOLOGY_WARN_MAX];  /* "" or what looks wrong (placement still works) */
} fm_topology_plan;

/* Loads a topology: this machine's when xml_path is NULL, otherwise the saved XML topology (the
 * tests' fixtures). PCI and OS devices (GPUs) are kept. The caller owns *topo
 * (hwloc_topology_destroy). For an XML topology the binding calls refer to the machine described,
 * not this one: only plan with it. */
fm_status fm_topology_load(hwloc_topology_t *topo, const char *xml_path);

/* The calling process's current binding (the launcher's), into `set` (allocated by the caller).
 * A process without a binding gets the topology's allowed PUs. */
fm_status fm_topology_current_binding(hwloc_topology_t topo, hwloc_bitmap_t set);

/* Plans the placement of the `local_size` ranks of one node. bindings[i] is local rank i's current
 * binding (identical for all ranks when no launcher bound them; for a simulation pass the same set
 * local_size times). Fills plans[0..local_size) with local_rank, local_size, bind, cpuset, share,
 * binding, launcher_bound, numa, cores, threads, pin_threads, shared, gpu, gpu_name, warning; rank
 * is set to the local rank and host to "" (the caller fills them). Errors: an empty binding, a
 * binding with no PU of this topology, an invalid option, a cpuset too long to print. */
fm_status fm_topology_plan_node(hwloc_topology_t topo, const hwloc_const_bitmap_t *bindings,
                                int local_size, const fm_topology_options *opt,
                                fm_topology_plan *plans);

/* The same with an explicit GPU list (gpus NULL or ngpus 0 with use_gpus: hwloc's CUDA OS devices). */
fm_status fm_topology_plan_node_gpus(hwloc_topology_t topo, const hwloc_const_bitmap_t *bindings,
                                     int local_size, const fm_topology_options *opt,
                                     const fm_topology_gpu *gpus, int ngpus, fm_topology_plan *plans);

/* Applies a plan to the calling process of this machine: binds the process to plan->cpuset (unless
 * bind is none), sets the OpenMP thread count to plan->threads (omp_set_num_threads) and, when
 * pin_threads, binds OpenMP thread t of a parallel region of plan->threads threads to core t of the
 * share. Later parallel regions must use at most plan->threads threads to keep the pinning (libgomp
 * and other runtimes reuse the same threads). When OMP_PLACES or OMP_PROC_BIND is set in the
 * environment, threads are left to the OpenMP runtime (not pinned by fmtrain). */
fm_status fm_topology_apply(hwloc_topology_t topo, const fm_topology_plan *plan);

/* All in one, for `fmtrain train`: loads this machine's topology, gathers the node's current
 * bindings over c->node, plans the node, applies this rank's plan and returns it in *mine (rank and
 * host filled in). opt->threads == 0 takes OMP_NUM_THREADS when that is set. Collective over
 * c->node. Warnings are in mine->warning (print them with fm_topology_report). */
fm_status fm_topology_place(const fm_comm *c, const fm_topology_options *opt,
                            fm_topology_plan *mine);

/* The same with an explicit GPU list (see fm_topology_gpu). */
fm_status fm_topology_place_gpus(const fm_comm *c, const fm_topology_options *opt,
                                 const fm_topology_gpu *gpus, int ngpus, fm_topology_plan *mine);

/* Gathers every rank's plan to rank 0, which prints the table (and the warnings) to `out`.
 * Collective over c->world; `out` is only used on rank 0. */
fm_status fm_topology_report(const fm_comm *c, const fm_topology_plan *mine, FILE *out);

/* Prints the placement table of n plans (header, one line per rank, then warnings). */
void fm_topology_print_table(FILE *out, const fm_topology_plan *plans, int n);

/* One line describing a topology: "2 packages, 8 NUMA nodes, 128 cores, 256 PUs, no CUDA GPU" (or the
 * CUDA GPUs by name). NUMA nodes that only hold GPU memory are not counted. */
void fm_topology_describe(hwloc_topology_t topo, char *buf, size_t size);

/* The first value of OMP_NUM_THREADS ("8" or "8,4"), or 0 when it is unset or not a positive number.
 * fm_topology_place uses it when opt->threads is 0. */
int fm_topology_env_threads(void);

/* "auto", "socket", "numa", "core", "none"; and the reverse (error naming the valid modes). */
const char *fm_topology_bind_name(fm_bind bind);
fm_status fm_topology_bind_parse(const char *text, fm_bind *out);

#endif /* FM_TOPOLOGY_H */

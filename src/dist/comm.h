/* comm.h — the MPI process context and the collectives fmtrain's training loop needs.
 *
 * What it is: a thin, error-checked layer over MPI for data-parallel training:
 *   - fm_comm: this process's place in the job (world rank/size, rank and size within its node,
 *     node count and index, host name), built from MPI_COMM_WORLD;
 *   - small collectives: broadcast from rank 0, "did any rank set this flag", sums/maxima of
 *     doubles, a gather to rank 0, and a check that a buffer (the parameters) is identical on every
 *     rank;
 *   - the gradient reduction engine (fm_comm_allreduce): buckets of a flat float buffer are
 *     reduced as soon as the model reports them final during the backward pass, so communication
 *     overlaps compute; fm_comm_allreduce_wait_all completes them and averages (scales by 1/size).
 *     Three modes: ordered all-reduce (fm_comm_allreduce_init_ordered: every rank gets the whole
 *     average, summed in fmtrain's own fixed order by point-to-point messages; what the trainer uses
 *     with [train] zero = 0 and 1), ordered reduce-scatter (fm_comm_reduce_scatter_init: each rank
 *     gets the average of its own shard only, the same order; zero = 2) and MPI's all-reduce
 *     (fm_comm_allreduce_init: non-blocking MPI_Iallreduce per bucket, the order Open MPI's
 *     algorithm takes; kept for comparison, bench/zero measures both);
 *   - node-shared memory (fm_comm_shared_alloc: MPI-3 shared-memory windows over the node's ranks)
 *     and the two ordered modes over it for ranks that all share one node
 *     (fm_comm_reduce_scatter_init_shared, fm_comm_allreduce_init_shared): the same additions in
 *     the same order, read from the other ranks' buffers in place instead of received;
 *   - the all-gather of shards (fm_comm_allgather): each rank sends its shard of a flat buffer (the
 *     weights it updated) to every other rank while it is still updating the rest, and receives
 *     theirs (zero >= 1);
 *   - fm_comm_sum_ordered: a sum of doubles over ranks taken in rank order (the gradient norm over
 *     the shards);
 *   - fmtrain's MPI error convention, used by every module that calls MPI: the FM_MPI_* macros that
 *     check each return code, fm_comm_dup (communicators that return errors instead of aborting)
 *     and fm_comm_agree (one error, the same on every rank, so a rank-local failure still ends
 *     collectively).
 * What it is not: it does not choose cores or GPUs (topology.h) and does not initialise MPI (main.c).
 *
 * Errors: every MPI call goes through communicators that have MPI_ERRORS_RETURN set; a failure
 * becomes an FM_ERR_MPI status carrying MPI_Error_string's text and the call that failed.
 * Collective functions must be called by every rank of the communicator in the same order.
 * Results that all ranks compute identically (flag agreement, checksum mismatch) are returned as
 * collective statuses (fm_status_collective), so `main` may exit without MPI_Abort; an error seen by
 * some ranks only is made collective with fm_comm_agree.
 *
 * Threads: MPI is initialised with MPI_THREAD_FUNNELED; call everything here from the main thread,
 * outside OpenMP parallel regions.
 *
 * Determinism: for a fixed number of ranks and a fixed sequence of fm_comm_allreduce_ready calls the
 * bucket boundaries are the same on every run. In the ordered modes the order in which the ranks'
 * values are added is fmtrain's own, fixed by the shard plan `bounds` alone: the same for every
 * bucket size, message size, MPI library and MCA setting. (Open MPI's reduction algorithms are
 * deterministic for a fixed communicator size and message length, but which one runs depends on
 * both and on the component: its non-blocking collectives come from coll/libnbc, whose algorithms
 * coll_tuned's forced-algorithm parameters — coll_tuned_use_dynamic_rules with
 * coll_tuned_reduce_scatter_block_algorithm and the like — do not pin, and other sites select han,
 * ucc or hcoll. So an MPI_Ireduce_scatter would sum in another order than MPI_Iallreduce, and
 * [train] zero = 2 would not match zero = 0.) Element i of the shard of rank q is
 *     ((...((g_{q+1} + g_{q+2}) + g_{q+3}) + ...) + g_{q-1}) + g_q,   times 1/size
 * (rank indices mod size): a chain in which rank q+1 sends its contribution to q+2, every rank adds
 * its own to the partial sum it received and passes it on, and the owner q adds its own last; in
 * ordered all-reduce mode the owner's result is then passed round the ring (q -> q+1 -> ... ->
 * q-1), unchanged. So the ordered all-reduce and the reduce-scatter over the same bounds give the
 * same bits, and [train] zero = 0, 1 and 2 the same gradients. The chain moves (size-1)/size of the
 * buffer per rank for the reduce-scatter (the ring's volume; each element needs size-1 hops, so a
 * segment's latency grows with size: fine on a node and a few nodes, a tree of the same fixed shape
 * would be the next step beyond). The sum of doubles of fm_comm_sum_ordered adds the ranks' values
 * in rank order 0, 1, ..., size-1 on every rank (an all-gather, then a local loop). The all-gather
 * only moves bytes. With MPI's all-reduce mode the order is Open MPI's (see above).
 */
#ifndef FM_COMM_H
#define FM_COMM_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

#define FM_COMM_HOST_MAX 64 /* host name bytes kept, including the NUL */

/* The process context. Fields are read-only for callers; the communicators are owned by the
 * context and released by fm_comm_free. */
typedef struct fm_comm {
    MPI_Comm world;  /* duplicate of MPI_COMM_WORLD, MPI_ERRORS_RETURN */
    MPI_Comm node;   /* ranks sharing this node's memory (MPI_COMM_TYPE_SHARED), MPI_ERRORS_RETURN */
    int rank;        /* rank in world */
    int size;        /* ranks in world */
    int local_rank;  /* rank within this node, 0..local_size-1 (ordered by world rank) */
    int local_size;  /* ranks on this node */
    int node_index;  /* 0..nodes-1, numbered in the order of each node's lowest world rank */
    int nodes;       /* number of nodes in the job */
    char host[FM_COMM_HOST_MAX]; /* this node's host name (MPI_Get_processor_name) */
} fm_comm;

/* Builds the context from MPI_COMM_WORLD (MPI must be initialised). Collective over MPI_COMM_WORLD.
 * *out is owned by the caller: release it with fm_comm_free (before MPI_Finalize). */
fm_status fm_comm_init(fm_comm **out);

/* Frees the communicators and the context; sets *c to NULL. Safe on NULL. */
void fm_comm_free(fm_comm **c);

/* Converts an MPI return code into a status: NULL for MPI_SUCCESS, otherwise FM_ERR_MPI with
 * "<call> failed: <MPI_Error_string text>". Use through the FM_MPI_* macros below. */
fm_status fm_comm_mpi_status(int rc, const char *call, const char *file, int line, const char *func);

/* The one way fmtrain checks an MPI return code, in three forms that mirror FM_TRY / FM_TRY_GOTO
 * (status.h). The communicator must have MPI_ERRORS_RETURN (fm_comm_dup), else MPI aborts before the
 * code is returned.
 *   FM_MPI_TRY(call)                 returns the FM_ERR_MPI status from the enclosing function;
 *   FM_MPI_TRY_GOTO(st, label, call) stores it in `st` (an fm_status that is NULL) and jumps to
 *                                    `label`, for functions that must release what they hold;
 *   FM_MPI_KEEP(st, call)            always makes the call and keeps its failure in `st` unless `st`
 *                                    already holds an error: for sequences where every step must run
 *                                    even after one failed (collective clean-up that every rank has
 *                                    to reach). */
#define FM_MPI_TRY(call)                                                                    \
    do {                                                                                    \
        int fm_mpi_rc_ = (call);                                                            \
        if (fm_mpi_rc_ != MPI_SUCCESS)                                                      \
            return fm_comm_mpi_status(fm_mpi_rc_, #call, __FILE__, __LINE__, __func__);     \
    } while (0)

#define FM_MPI_TRY_GOTO(st, label, call)                                                    \
    do {                                                                                    \
        int fm_mpi_rc_ = (call);                                                            \
        if (fm_mpi_rc_ != MPI_SUCCESS) {                                                    \
            (st) = fm_comm_mpi_status(fm_mpi_rc_, #call, __FILE__, __LINE__, __func__);     \
            goto label;                                                                     \
        }                                                                                   \
    } while (0)

#define FM_MPI_KEEP(st, call)                                                               \
    do {                                                                                    \
        int fm_mpi_rc_ = (call);                                                            \
        if (fm_mpi_rc_ != MPI_SUCCESS && !(st))                                             \
            (st) = fm_comm_mpi_status(fm_mpi_rc_, #call, __FILE__, __LINE__, __func__);     \
    } while (0)

/* ---- communicators and error agreement (any communicator, also outside fm_comm) ------------ */

/* Duplicates `comm` into *out and sets MPI_ERRORS_RETURN on the copy, so that every later MPI call
 * on it returns its error code instead of aborting. Every module that keeps a communicator (the
 * checkpoint layer, the data reader, fm_comm itself) holds one made here. Collective over comm
 * (the duplication itself fails by comm's own error handler). Release with fm_comm_dup_free. */
fm_status fm_comm_dup(MPI_Comm comm, MPI_Comm *out);

/* Frees a communicator made by fm_comm_dup and sets *comm to MPI_COMM_NULL; safe on MPI_COMM_NULL.
 * Release path: a failure of MPI_Comm_free is not reported (there is nothing left to do about it). */
void fm_comm_dup_free(MPI_Comm *comm);

/* Agrees on one error across the ranks of `comm`. Every rank passes its own status (NULL: no error
 * here) and takes ownership of the result; the argument is consumed.
 *   - no rank failed: NULL on every rank;
 *   - otherwise every rank returns the code and message of the lowest failing rank k (rank in comm),
 *     marked collective (fm_status_collective) when comm holds every rank of the job, so `main`
 *     prints it once (rank 0) and exits without MPI_Abort; over a smaller communicator (c->node)
 *     the ranks of comm share the error but it stays non-collective, because the other ranks of the
 *     job do not know about it. Rank k returns its own status (traceback kept); the others a new
 *     status whose message is k's followed by " (reported by rank k)" when k > 0, so rank 0 names
 *     the rank that saw the error. A rank that cannot allocate room for the message still takes
 *     part in every collective and returns a fixed text instead of k's message.
 * With comm = MPI_COMM_NULL (serial use) `st` is returned unchanged. When an MPI call of the
 * agreement itself fails, the result is not collective: this rank's own error, or the MPI error
 * when it had none. Collective over comm, which should have MPI_ERRORS_RETURN (fm_comm_dup). */
fm_status fm_comm_agree(MPI_Comm comm, fm_status st);

/* ---- small collectives (all ranks of c->world) ---------------------------------------------- */

/* Rank 0's `bytes` bytes of `buf` are copied into `buf` on every rank. Any size (sent in pieces
 * below INT_MAX). */
fm_status fm_comm_bcast(const fm_comm *c, void *buf, size_t bytes);

/* *any = 1 on every rank when `flag` is non-zero on at least one rank, else 0. Used to agree on stop
 * requests (signals, wall time) at a step boundary. */
fm_status fm_comm_any(const fm_comm *c, int flag, int *any);

/* In place, element-wise over n values: sum, maximum or minimum across ranks; every rank receives
 * the same result. */
fm_status fm_comm_sum_doubles(const fm_comm *c, double *vals, int n);
fm_status fm_comm_max_doubles(const fm_comm *c, double *vals, int n);
fm_status fm_comm_min_doubles(const fm_comm *c, double *vals, int n);

/* Gathers `bytes` bytes from every rank into `recv` on rank 0, in world-rank order (`recv` holds
 * size*bytes bytes on rank 0 and is ignored elsewhere, may be NULL there). bytes*size < INT_MAX. */
fm_status fm_comm_gather(const fm_comm *c, const void *send, size_t bytes, void *recv);

/* Gathers `bytes` bytes from every rank of this node into `recv` (local_size*bytes) on every rank of
 * the node, in local-rank order. */
fm_status fm_comm_node_allgather(const fm_comm *c, const void *send, size_t bytes, void *recv);

fm_status fm_comm_barrier(const fm_comm *c);

/* A 64-bit hash of `bytes` bytes (not cryptographic; the same value on every machine for the same
 * bytes). */
uint64_t fm_comm_hash64(const void *data, size_t bytes);

/* Checks that `bytes` bytes of `buf` are identical on every rank: hashes them, compares the
 * minimum and maximum hash across ranks, and when they differ returns a collective FM_ERR_INTERNAL
 * status naming `what` (e.g. "parameters") and the ranks whose hash differs from rank 0's.
 * A differing byte count is reported the same way. */
fm_status fm_comm_check_identical(const fm_comm *c, const void *buf, size_t bytes, const char *what);

/* Element-wise sums of n doubles over ranks, added in rank order 0, 1, ..., size-1 (not in MPI's
 * order), the same result on every rank and run of a layout. Collective. */
fm_status fm_comm_sum_ordered(const fm_comm *c, double *vals, int n);

/* Checks a shard plan over c->size ranks: bounds[0..size] non-decreasing from 0 to count
 * (FM_ERR_INTERNAL otherwise). */
fm_status fm_comm_check_bounds(const fm_comm *c, const size_t *bounds, size_t count);

/* ---- node-shared memory ------------------------------------------------------------------------- */

/* Memory that every rank of one node maps (an MPI-3 shared-memory window over c->node): what lets
 * ranks on one node add each other's gradients and share one copy of the weights without copying
 * them through MPI messages ([runtime] shared_memory, docs/parallelism.md).
 *   per_rank = 1: every rank of the node gets `bytes` of its own (its pages are first touched, so
 *                 placed, by itself), which the other ranks of the node can read and write;
 *   per_rank = 0: one buffer of `bytes` for the whole node, first touched by local rank 0.
 * The memory is zeroed and every part starts on a page boundary. Before allocating, local rank 0
 * checks that the file system that backs Open MPI's windows (/dev/shm, or the directory in
 * OMPI_MCA_osc_sm_backing_directory, which mpirun --mca also sets; an MCA parameter file is not
 * read) has room for the node's total: a window larger than it would be created sparse and its
 * first touch kill the
 * process with SIGBUS; too little room is an FM_ERR_NOMEM error (the same on every rank of the node)
 * that names the directory, the bytes needed and free, and the ways out (runtime.shared_memory =
 * off, or a larger /dev/shm); the trainer then falls back to messages.
 * Collective over c->node; every rank of the node passes the same bytes and per_rank. Release with
 * fm_comm_shared_free (collective too). */
typedef struct fm_comm_shared fm_comm_shared;
fm_status fm_comm_shared_alloc(const fm_comm *c, size_t bytes, int per_rank, fm_comm_shared **out);

/* The address, in this process, of local rank `local_rank`'s part (per_rank = 1) or of the one
 * buffer (per_rank = 0: any local_rank). NULL when out of range or when the part is empty. */
void *fm_comm_shared_ptr(const fm_comm_shared *s, int local_rank);

/* Bytes of each part (per_rank = 1) or of the buffer. */
size_t fm_comm_shared_bytes(const fm_comm_shared *s);

/* A barrier over the node's ranks that also orders memory: every store a rank made to shared
 * memory before it is visible to every rank of the node after it (MPI_Win_sync, MPI_Barrier,
 * MPI_Win_sync). Collective over c->node. */
fm_status fm_comm_shared_barrier(fm_comm_shared *s);

/* Frees the window (collective over the node) and sets *s to NULL; safe on NULL. */
void fm_comm_shared_free(fm_comm_shared **s);

/* 1 when every rank of the job runs on this node (c->nodes == 1): the condition under which the
 * shared-memory modes below apply. */
int fm_comm_single_node(const fm_comm *c);

/* ---- the gradient reduction engine ------------------------------------------------------------- */

#define FM_COMM_BUCKET_MAX_DEFAULT ((size_t)25 << 20) /* 25 MiB: longer ranges are split */
#define FM_COMM_BUCKET_MIN_DEFAULT ((size_t)1 << 20)  /* 1 MiB: shorter neighbours are merged */
#define FM_COMM_RS_SEGMENT_BYTES ((size_t)4 << 20)    /* reduce-scatter chain and all-gather message */
#define FM_COMM_RS_SCRATCH_DEFAULT (2 * FM_COMM_BUCKET_MAX_DEFAULT) /* receive scratch (50 MiB) */

typedef struct fm_comm_allreduce fm_comm_allreduce;

/* What the last completed step did (fm_comm_allreduce_wait_all fills it). */
typedef struct fm_comm_allreduce_stats {
    int buckets;        /* buckets of the step (MPI's mode: MPI_Iallreduce calls) */
    int early_buckets;  /* of those, started from fm_comm_allreduce_ready (overlapping backward) */
    int segments;       /* ordered modes: chain segments of the step (0 in MPI's mode) */
    size_t bytes;       /* bytes reduced (the whole buffer) */
    double wait_s;      /* seconds spent inside fm_comm_allreduce_wait_all (exposed communication) */
} fm_comm_allreduce_stats;

/* Creates an engine in MPI's all-reduce mode (MPI_Iallreduce per bucket, Open MPI's order) over the
 * flat gradient buffer grads[0..count) (owned by the caller, which must keep it alive and at the
 * same address until fm_comm_allreduce_free).
 *   max_bucket_bytes: a reported range longer than this is split into equal pieces no longer than
 *                     it (0 = FM_COMM_BUCKET_MAX_DEFAULT);
 *   min_bucket_bytes: a reported range shorter than this is held back and merged with the next
 *                     adjacent reported range(s) until the merged range reaches it (or would exceed
 *                     max_bucket_bytes) (0 = FM_COMM_BUCKET_MIN_DEFAULT; use 1 to never merge).
 * Not collective, but every rank must create it with the same count and sizes. */
fm_status fm_comm_allreduce_init(fm_comm_allreduce **out, const fm_comm *c, float *grads,
                                 size_t count, size_t max_bucket_bytes, size_t min_bucket_bytes);

/* The same engine in ordered all-reduce mode: the average of every element on every rank, summed
 * in the fixed order above over the shard plan `bounds` (size+1 values, non-decreasing from 0 to
 * count, the same on every rank; copied; any plan works, the trainer passes the model's shard plan
 * so that every zero stage adds in the same order). Each segment is reduced to its owner as in
 * reduce-scatter mode, then the owner's result goes round the ring: per rank and step about
 * 2 (size-1)/size of the buffer is sent and received, what a ring all-reduce moves. Scratch and
 * collectivity as fm_comm_reduce_scatter_init. */
fm_status fm_comm_allreduce_init_ordered(fm_comm_allreduce **out, const fm_comm *c, float *grads,
                                         size_t count, const size_t *bounds,
                                         size_t max_bucket_bytes, size_t min_bucket_bytes,
                                         size_t scratch_bytes);

/* The same engine in reduce-scatter mode, for [train] zero = 2. Rank r keeps the shard
 * [bounds[r], bounds[r+1]) of grads (bounds: size+1 values, non-decreasing from 0 to count, the same
 * on every rank; copied). Buckets form exactly as in all-reduce mode; each bucket's part in each
 * rank's shard is cut into segments of at most FM_COMM_RS_SEGMENT_BYTES and reduced along a chain
 * of point-to-point messages in the fixed order given at the top of this file. After wait_all,
 * grads[bounds[rank], bounds[rank+1]) holds the average over ranks; the rest of the buffer still
 * holds this rank's own contributions (the caller zeroes it before the next accumulation).
 * Per rank and step it sends and receives about (size-1)/size of the buffer, half of what an
 * all-reduce moves. Received partial sums go to a scratch pool of `scratch_bytes`
 * (0 = FM_COMM_RS_SCRATCH_DEFAULT; at least one segment): receives are posted in segment order as
 * slots free up, so the pool bounds the memory whatever the model size, at the price of waiting
 * for slots when the pool is small. Collective over c->world (it duplicates the communicator,
 * whose messages are tagged by segment). */
fm_status fm_comm_reduce_scatter_init(fm_comm_allreduce **out, const fm_comm *c, float *grads,
                                      size_t count, const size_t *bounds, size_t max_bucket_bytes,
                                      size_t min_bucket_bytes, size_t scratch_bytes);

/* The ordered engines over node-shared gradients, for ranks that all run on one node
 * (fm_comm_single_node; FM_ERR_INTERNAL otherwise): `grads` comes from fm_comm_shared_alloc with
 * per_rank = 1 and at least count floats per rank, and this rank's gradient buffer is its own part
 * (fm_comm_shared_ptr(grads, c->local_rank)). The results are bit for bit those of
 * fm_comm_reduce_scatter_init / fm_comm_allreduce_init_ordered over the same bounds (the same
 * fixed order of additions, then the same 1/size), but nothing is sent: as each bucket becomes
 * final on a rank, the rank publishes so in a shared counter; the owner of each shard adds the
 * other ranks' parts of it straight from their buffers, in the chain's order, into its own, and in
 * all-reduce mode every rank then copies the other shards' results from their owners' buffers once
 * the owners publish them. Per rank and step this reads (size-1)/size of the buffer from the other
 * ranks (plus the same again to copy the results in all-reduce mode), where the message modes also
 * write and re-read every received byte in scratch. Waiting for another rank spins on its counter
 * (sched_yield between looks). fm_comm_allreduce_wait_all returns after a barrier of the node's
 * ranks: then no rank reads this rank's buffer any more, and the caller may write it. No scratch
 * (fm_comm_reduce_scatter_scratch_bytes: 0). Collective over c->world. */
fm_status fm_comm_reduce_scatter_init_shared(fm_comm_allreduce **out, const fm_comm *c,
                                             fm_comm_shared *grads, size_t count,
                                             const size_t *bounds, size_t max_bucket_bytes,
                                             size_t min_bucket_bytes);
fm_status fm_comm_allreduce_init_shared(fm_comm_allreduce **out, const fm_comm *c,
                                        fm_comm_shared *grads, size_t count, const size_t *bounds,
                                        size_t max_bucket_bytes, size_t min_bucket_bytes);

/* Bytes of the scratch pool of an ordered engine (0 for MPI's all-reduce mode or one rank). */
size_t fm_comm_reduce_scatter_scratch_bytes(const fm_comm_allreduce *ar);
/* The same figure before creating the engine, for a buffer of `count` floats over `size` ranks and
 * the same sizes (0: the defaults): at most scratch_bytes, less for a buffer smaller than that. */
size_t fm_comm_reduce_scatter_scratch_for(size_t count, int size, size_t max_bucket_bytes,
                                          size_t scratch_bytes);

/* The model's backward callback (ctx = the engine): grads[offset, offset+count) are final for this
 * step and will not be written again until wait_all returns. Starts every bucket that became ready
 * (all-reduce mode: MPI_Iallreduce, in place, MPI_SUM; reduce-scatter mode: the first sends of its
 * chains) and progresses the ones in flight (MPI_Testsome; in reduce-scatter mode also adding the
 * partial sums that arrived and passing them on), because Open MPI only advances non-blocking
 * operations inside MPI calls. Ranges may come in any order
 * (backward order is the usual one) but must not overlap within a step. Errors (a range out of
 * bounds or reported twice, an MPI failure) are kept and returned by wait_all; later calls of the
 * step are then ignored. Every rank must report the same ranges in the same order.
 * Call from the main thread, outside parallel regions. */
void fm_comm_allreduce_ready(void *ctx, size_t offset, size_t count);

/* Completes the step: starts every part of the buffer not reported yet (e.g. tied embeddings that
 * the model leaves to the end, or everything when no callback ran), waits for all buckets, and
 * multiplies the buffer by 1/size, so each element becomes the average over ranks (reduce-scatter
 * mode: the elements of this rank's shard). Collective.
 * Afterwards the engine is ready for the next step. On error, all requests in flight have been
 * completed before returning, so the buffer may be reused or freed. */
fm_status fm_comm_allreduce_wait_all(fm_comm_allreduce *ar);

/* Statistics of the last completed step (zeros before the first). */
fm_comm_allreduce_stats fm_comm_allreduce_last_stats(const fm_comm_allreduce *ar);

/* Completes any request still in flight (without reporting errors; receives of an ordered engine
 * that can no longer match are cancelled), frees the engine, sets *ar to NULL. Safe on NULL. An
 * ordered engine frees its duplicate communicator (MPI_Comm_free, collective): call it on every rank
 * (MPI's all-reduce mode: not collective). */
void fm_comm_allreduce_free(fm_comm_allreduce **ar);

/* ---- the all-gather of shards ------------------------------------------------------------------ */

typedef struct fm_comm_allgather fm_comm_allgather;

typedef struct fm_comm_allgather_stats {
    int messages;  /* sends and receives of the step */
    size_t bytes;  /* bytes received (the other ranks' shards) */
    double wait_s; /* seconds inside fm_comm_allgather_wait_all (exposed) */
    double total_s; /* from fm_comm_allgather_start to the end of wait_all */
} fm_comm_allgather_stats;

/* An all-gather over buf[0..count) (owned by the caller, kept alive and in place until free): rank
 * r owns [bounds[r], bounds[r+1]) (size+1 values as in fm_comm_reduce_scatter_init; copied) and
 * after a step every rank holds every rank's shard. Messages are chunks of at most chunk_bytes
 * (0 = FM_COMM_RS_SEGMENT_BYTES), cut from each shard's start, sent directly to every other rank.
 * Collective over c->world (duplicates it). */
fm_status fm_comm_allgather_init(fm_comm_allgather **out, const fm_comm *c, float *buf, size_t count,
                                 const size_t *bounds, size_t chunk_bytes);

/* Begins a step: posts the receives of every other rank's shard (their ranges of buf must not be
 * read or written until wait_all). */
fm_status fm_comm_allgather_start(fm_comm_allgather *ag);

/* ctx = the engine: this rank's buf[offset, offset+count) is final. Ranges must cover the shard in
 * order, each starting where the previous ended (what fm_optimizer_step_notify reports); every
 * chunk that became whole is sent to every other rank at once, and the messages in flight are
 * progressed. Its signature is fm_optimizer_ready_fn's. Errors: a range out of order
 * (FM_ERR_INTERNAL), MPI. */
fm_status fm_comm_allgather_ready(void *ctx, size_t offset, size_t count);

/* Sends what was not reported yet and waits for every message: then buf is whole on every rank.
 * Collective. */
fm_status fm_comm_allgather_wait_all(fm_comm_allgather *ag);

fm_comm_allgather_stats fm_comm_allgather_last_stats(const fm_comm_allgather *ag);

/* Cancels and completes what is in flight, frees, sets *ag to NULL. Safe on NULL. Collective on
 * several ranks (it frees its duplicate communicator). */
void fm_comm_allgather_free(fm_comm_allgather **ag);

#endif /* FM_COMM_H */

/* comm.h — the MPI process context and the collectives fmtrain's training loop needs.
 *
 * What it is: a thin, error-checked layer over MPI for data-parallel training:
 *   - fm_comm: this process's place in the job (world rank/size, rank and size within its node,
 *     node count and index, host name), built from MPI_COMM_WORLD;
 *   - small collectives: broadcast from rank 0, "did any rank set this flag", sums/maxima of
 *     doubles, a gather to rank 0, and a check that a buffer (the parameters) is identical on every
 *     rank;
 *   - the gradient all-reduce engine (fm_comm_allreduce): buckets of a flat float buffer are
 *     all-reduced with non-blocking MPI_Iallreduce as soon as the model reports them final during
 *     the backward pass, so communication overlaps compute; fm_comm_allreduce_wait_all completes
 *     them and averages (scales by 1/size);
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
 * bucket boundaries, and therefore the MPI reductions performed, are the same on every run; Open
 * MPI's reduction algorithms are deterministic for a fixed communicator size and message length.
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

/* ---- the gradient all-reduce engine ---------------------------------------------------------- */

#define FM_COMM_BUCKET_MAX_DEFAULT ((size_t)25 << 20) /* 25 MiB: longer ranges are split */
#define FM_COMM_BUCKET_MIN_DEFAULT ((size_t)1 << 20)  /* 1 MiB: shorter neighbours are merged */

typedef struct fm_comm_allreduce fm_comm_allreduce;

/* What the last completed step did (fm_comm_allreduce_wait_all fills it). */
typedef struct fm_comm_allreduce_stats {
    int buckets;        /* MPI_Iallreduce calls of the step */
    int early_buckets;  /* of those, started from fm_comm_allreduce_ready (overlapping backward) */
    size_t bytes;       /* bytes reduced (the whole buffer) */
    double wait_s;      /* seconds spent inside fm_comm_allreduce_wait_all (exposed communication) */
} fm_comm_allreduce_stats;

/* Creates an engine over the flat gradient buffer grads[0..count) (owned by the caller, which must
 * keep it alive and at the same address until fm_comm_allreduce_free).
 *   max_bucket_bytes: a reported range longer than this is split into equal pieces no longer than
 *                     it (0 = FM_COMM_BUCKET_MAX_DEFAULT);
 *   min_bucket_bytes: a reported range shorter than this is held back and merged with the next
 *                     adjacent reported range(s) until the merged range reaches it (or would exceed
 *                     max_bucket_bytes) (0 = FM_COMM_BUCKET_MIN_DEFAULT; use 1 to never merge).
 * Not collective, but every rank must create it with the same count and sizes. */
fm_status fm_comm_allreduce_init(fm_comm_allreduce **out, const fm_comm *c, float *grads,
                                 size_t count, size_t max_bucket_bytes, size_t min_bucket_bytes);

/* The model's backward callback (ctx = the engine): grads[offset, offset+count) are final for this
 * step and will not be written again until wait_all returns. Starts (MPI_Iallreduce, in place,
 * MPI_SUM) every bucket that became ready and progresses the ones in flight (MPI_Testsome), because
 * Open MPI only advances non-blocking collectives inside MPI calls. Ranges may come in any order
 * (backward order is the usual one) but must not overlap within a step. Errors (a range out of
 * bounds or reported twice, an MPI failure) are kept and returned by wait_all; later calls of the
 * step are then ignored. Every rank must report the same ranges in the same order.
 * Call from the main thread, outside parallel regions. */
void fm_comm_allreduce_ready(void *ctx, size_t offset, size_t count);

/* Completes the step: starts every part of the buffer not reported yet (e.g. tied embeddings that
 * the model leaves to the end, or everything when no callback ran), waits for all buckets, and
 * multiplies the buffer by 1/size, so each element becomes the average over ranks. Collective.
 * Afterwards the engine is ready for the next step. On error, all requests in flight have been
 * completed before returning, so the buffer may be reused or freed. */
fm_status fm_comm_allreduce_wait_all(fm_comm_allreduce *ar);

/* Statistics of the last completed step (zeros before the first). */
fm_comm_allreduce_stats fm_comm_allreduce_last_stats(const fm_comm_allreduce *ar);

/* Completes any request still in flight (without reporting errors), frees the engine, sets *ar
 * to NULL. Safe on NULL. */
void fm_comm_allreduce_free(fm_comm_allreduce **ar);

#endif /* FM_COMM_H */

/* async.h — the background writer of asynchronous checkpoints ([checkpoint] async = true).
 *
 * What it is: a checkpoint file whose tensor bytes are written by a thread while training goes on.
 * At a step boundary the main thread creates the file and every dataset in it (collective HDF5
 * over MPI-IO, as a synchronous write does), copies THIS RANK'S PART of the tensors (the bytes it
 * would write itself: about 1/ranks of the parameters and AdamW moments) into one host buffer — a
 * memcpy on the CPU backend, downloads into page-locked memory through the backend on a GPU
 * (fm_kernel_ops.host_alloc) — writes the small datasets and attributes, and hands the file to a
 * writer thread (fm_checkpoint_async_stage, then _launch). The thread writes the buffer with
 * pwrite(2) at the datasets' file offsets on its own descriptor, computes the CRC-32 of each part,
 * and fdatasyncs. The main thread later settles the write (fm_checkpoint_async_settle): when every
 * rank's thread is done it combines the CRCs into the datasets' crc32 attributes and publishes the
 * file exactly as a synchronous write does (flush, collective close, fsync, rename, `latest`,
 * keep_last; ckpt/checkpoint_file.h). The file is the same format, byte for byte in its tensors.
 *
 * Threads, MPI and HDF5 (why it is built this way): the writer thread makes NO MPI call and NO HDF5
 * call — only open/pwrite/fdatasync/close and CRC arithmetic — like the data reader's read-ahead
 * thread (data/reader.h). fmtrain initialises MPI with MPI_THREAD_FUNNELED and Debian's parallel
 * HDF5 is not thread-safe (a thread-safe parallel HDF5 is an unsupported build), so a thread that
 * wrote through HDF5 would need MPI_THREAD_MULTIPLE (Open MPI provides it, with a cost on every
 * call) AND a lock around every HDF5 call of the main thread (evaluation and data reads) — and a
 * collective H5Dwrite in the thread holding that lock while the main thread waits in an all-reduce
 * for a rank whose thread waits for the lock deadlocks. Writing raw bytes at offsets that HDF5
 * allocated keeps every HDF5 and MPI call on the main thread, where they are today; the collective
 * parts (creating the datasets; combining the CRCs, closing, renaming) are short and happen at step
 * boundaries that every rank reaches in the same order.
 *
 * Protocol (every function but _abandon, _release and _free is collective over the communicator
 * given to _create, called by every rank in the same order, and returns an agreed status):
 *   stage(f, groups)  create the datasets in f, snapshot this rank's part (the caller then writes
 *                     the rest of the file's content through the file layer);
 *   launch(&f)        take f and start the thread (training continues);
 *   settle(wait = 0)  at each step boundary: one small all-reduce asks whether every rank's thread
 *                     is done; when so, publish (or, when a thread failed, the agreed error);
 *   settle(wait = 1)  wait for this rank's thread, then the same: the next checkpoint, a stop, the
 *                     end of training and an error path wait for the write in flight this way.
 * A failed write (a full disk, an I/O error) is agreed on every rank and returned by settle: the
 * temporary file is removed (fm_checkpoint_file_abort, its close bounded by the watchdog through
 * fm_watchdog_expect) and no checkpoint or `latest` changes. Nothing is published that is not
 * complete on every rank.
 * _abandon (rank-local, no MPI): after an error that the ranks did not agree on, tells the thread to
 * stop after its current piece (at most 16 MiB), joins it and leaves the HDF5 file open (the process
 * ends without MPI_Finalize: src/cli/main.c); the killed writer's temporary file is removed when
 * the run resumes (ckpt/checkpoint_dir.h).
 */
#ifndef FM_CKPT_ASYNC_H
#define FM_CKPT_ASYNC_H

#include <mpi.h>
#include <stdint.h>

#include "ckpt/checkpoint_file.h"
#include "core/status.h"
#include "kernels.h"
#include "train/watchdog.h"

typedef struct fm_checkpoint_async fm_checkpoint_async;

/* What one published background write measured (the same on every rank). */
typedef struct fm_checkpoint_async_result {
    int64_t step;
    char path[4096];       /* the published file */
    uint64_t tensor_bytes; /* tensor data in the file */
    uint64_t file_bytes;   /* the file's size */
    double write_s;        /* from the file's creation to its publication (rank 0's clock) */
    double stall_s;        /* this rank's training time lost to it: stage and launch, every settle
                              call that asked about it, the wait and the publication */
    char warning[1024];    /* rank 0: what failed after publication (as fm_checkpoint_write_stats) */
} fm_checkpoint_async_result;

/* A writer for checkpoints of communicator `comm` (borrowed: it must outlive the writer; the
 * checkpoint context's duplicate). Not collective (allocation only). */
fm_status fm_checkpoint_async_create(MPI_Comm comm, fm_checkpoint_async **out);

/* Creates the datasets of groups[0..ngroups) in `f` (fm_checkpoint_file_define_groups) and copies
 * this rank's part of each from the groups' buffers — backend memory of `be`: read directly when
 * be->ops->caps.host_memory, else downloaded — into the writer's host buffer (grown as needed,
 * kept between checkpoints). `f` stays the caller's; the groups' tables are copied. Nothing may be
 * in flight (settle first). Collective. On error nothing is staged and the caller aborts `f`. */
fm_status fm_checkpoint_async_stage(fm_checkpoint_async *a, fm_checkpoint_file *f,
                                    const fm_checkpoint_group *groups, int ngroups, fm_backend *be);

/* Takes *f (set to NULL: the writer owns it now, whatever the outcome) and starts the writer thread
 * for checkpoint `step`, to be published with `keep_last` (fm_checkpoint_file_commit). Rank 0's
 * thread first reserves `reserve_bytes` for the file (0: no reservation). `stall_s`: the training
 * time already lost to this checkpoint (its stage). Collective. */
fm_status fm_checkpoint_async_launch(fm_checkpoint_async *a, fm_checkpoint_file **f, int64_t step,
                                     int keep_last, uint64_t reserve_bytes, double stall_s);

/* 1 when a write is in flight (launched, not yet settled). The same on every rank. */
int fm_checkpoint_async_in_flight(const fm_checkpoint_async *a);
/* The step of the write in flight (-1: none). */
int64_t fm_checkpoint_async_step(const fm_checkpoint_async *a);

/* Asks every rank whether its writer is done (one small all-reduce; the answer, *ready, is the same
 * on every rank; 0 when nothing is in flight). The time it takes counts as stall. Collective. */
fm_status fm_checkpoint_async_ready(fm_checkpoint_async *a, int *ready);

/* Settles the write in flight (see the protocol above): *published = 1 and *res filled when it was
 * published now; 0 when nothing is in flight or (wait = 0) some rank's thread is still writing.
 * `wd` (may be NULL) bounds the close after an agreed error. Errors: the thread's (FM_ERR_IO naming
 * the file, with the reason), agreed; then nothing is in flight any more. Collective. */
fm_status fm_checkpoint_async_settle(fm_checkpoint_async *a, int wait, fm_watchdog *wd,
                                     int *published, fm_checkpoint_async_result *res);

/* Rank-local: stops and joins the thread of a write in flight (see above); the file is left open and
 * unpublished. A staged write is forgotten (its file is the caller's to abort). Safe when nothing
 * is in flight and on NULL. */
void fm_checkpoint_async_abandon(fm_checkpoint_async *a);

/* Frees the host buffer (through the backend that staged it: call before that backend is freed).
 * Nothing may be in flight (settle or abandon first). Safe on NULL. */
void fm_checkpoint_async_release(fm_checkpoint_async *a);

/* Abandons what is in flight, releases the buffer, frees a; sets *a to NULL. Safe on NULL. */
void fm_checkpoint_async_free(fm_checkpoint_async **a);

/* ---- test hook (test executables only; fmtrain never sets it) ------------------------------------
 * Called on every rank's writer thread before it writes anything (before rank 0's reservation),
 * with the rank, the checkpoint's step and its temporary file: tests/train/fmtrain_faults.c delays
 * the write there (a slow file system: a kill -9 during the write) or fills the disk (a write that
 * fails in the background). A status it returns fails the write like an I/O error. Process-wide;
 * NULL removes it. */
typedef fm_status (*fm_checkpoint_async_test_fn)(void *ctx, int rank, int64_t step,
                                                 const char *tmp_path);
void fm_checkpoint_async_set_test_hook(fm_checkpoint_async_test_fn fn, void *ctx);

#endif /* FM_CKPT_ASYNC_H */

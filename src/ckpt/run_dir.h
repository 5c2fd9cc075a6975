/* run_dir.h — the run directory as a whole: creating it, one trainer at a time (the lock), and the
 * checks a dry run makes before nodes are spent (can it be written, who holds it, is there room for
 * the checkpoints).
 *
 * ---- The lock -----------------------------------------------------------------------------------
 * Two trainers on one run directory (a double submission, a chain submitted twice) delete each
 * other's in-flight checkpoints as "stale" and interleave two trajectories in metrics.jsonl. So
 * `fmtrain train` holds <run dir>/fmtrain.lock from before it touches anything in the directory
 * until it exits. The lock is a file created with open(O_CREAT | O_EXCL), which is atomic on every
 * file system a cluster shares (Lustre, GPFS/Storage Scale, NFSv3 and later, local disks), unlike
 * flock/fcntl locks: Lustre clients honour those across nodes only when mounted with `-o flock`
 * (with `localflock` they are node-local, with the default `noflock` flock() fails with ENOSYS), so
 * a lock built on them would silently protect nothing on many sites. The file records the holder:
 * host, pid and the pid's start time, Slurm job id, restart count and step, user, fmtrain version
 * and since when (UTC). A second trainer refuses to start (FM_ERR_CONFIG: exit 2, which the job
 * scripts do not retry) with a message naming the holder and what to do. A lock whose holder is
 * gone (the process was killed: SIGKILL, a node failure, the time limit) is stale, and is
 * recognised and replaced (said on the console):
 *   - same host: the pid no longer exists, or it is another process (its start time differs);
 *   - the holder's Slurm job is this job at another restart count (a requeue: Slurm ended the old
 *     run before starting this one);
 *   - another host: `squeue -h -j JOB -t all -o %T` says the holder's job is no longer running
 *     (finished, or not known to Slurm any more). A holder whose job is COMPLETING (its processes
 *     are being stopped, perhaps still writing a checkpoint in the kill grace time) is waited for,
 *     up to FM_RUN_DIR_WAIT_S seconds.
 * When none of this can decide (another host, no Slurm) the lock counts as held: the message says
 * how to check and to delete the file by hand. Two trainers that find the same stale lock at the
 * same moment race on O_EXCL after its removal; one wins, the other reports the winner.
 *
 * Collective functions are called by every rank of `comm`; rank 0 does the file work and every rank
 * returns the same (collective) status.
 */
#ifndef FM_RUN_DIR_H
#define FM_RUN_DIR_H

#include <mpi.h>
#include <stdint.h>
#include <stdio.h>

#include "core/status.h"

#define FM_RUN_DIR_LOCK "fmtrain.lock"
#define FM_RUN_DIR_WAIT_S 180.0 /* how long a holder whose Slurm job is COMPLETING is waited for */

typedef struct fm_run_lock fm_run_lock;

/* Creates the run directory (rank 0) and takes its lock. Errors, on every rank: a directory that
 * cannot be created or written (permissions, a read-only file system, a file in the way:
 * FM_ERR_CONFIG naming it and saying to choose another [run] dir), the lock held by another trainer
 * (FM_ERR_CONFIG naming the holder), other I/O failures (FM_ERR_IO). `log`: rank 0's console for
 * the note about a stale lock (may be NULL). Collective. */
fm_status fm_run_dir_lock(MPI_Comm comm, const char *run_dir, FILE *log, fm_run_lock **out);

/* Rank 0 removes the lock file if it is still this process's; every rank frees. Not collective.
 * Safe on NULL; sets *lock to NULL. */
void fm_run_dir_unlock(fm_run_lock **lock);

/* The dry run's checks of the run directory, without creating it: that it can be created (its
 * nearest existing ancestor is a writable directory) or, when it exists, written (a probe file is
 * created and removed); whether another trainer holds its lock (an error naming the holder; a stale
 * lock is only reported); and whether its file system has room for `keep_last` + 1 checkpoints of
 * `ckpt_bytes` bytes each, counting the checkpoints already there (an FM_ERR_IO naming both
 * figures). Rank 0 prints what it found on `log` (may be NULL) as "# " lines. Collective. */
fm_status fm_run_dir_check(MPI_Comm comm, const char *run_dir, uint64_t ckpt_bytes, int keep_last,
                           FILE *log);

/* At the start of a real run (rank 0 checks, all agree): an FM_ERR_IO when the run directory's file
 * system cannot hold even one more checkpoint of `ckpt_bytes`; a warning on `log` (may be NULL)
 * when it cannot hold keep_last + 1 of them counting those already there. Collective. */
fm_status fm_run_dir_check_space(MPI_Comm comm, const char *run_dir, uint64_t ckpt_bytes,
                                 int keep_last, FILE *log);

#endif /* FM_RUN_DIR_H */

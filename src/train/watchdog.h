/* watchdog.h — the hang watchdog: a thread per rank that ends the process when the main thread
 * stops making progress, so that a dead node, a stuck file system or a collective that never
 * completes cannot burn the rest of an allocation.
 *
 * What it is: the main thread announces what it is about to do and how long that may take
 * (fm_watchdog_arm: "step 1234", 12.5 s) and, inside it, where it is (fm_watchdog_where: "waiting
 * for the gradient all-reduce"). A monitor thread wakes twice a second; when the armed work has run
 * past its limit it writes one line to standard error naming this rank, its host, the work, where
 * it was waiting, for how long and the limit (and why that limit), waits FM_WATCHDOG_GRACE_S
 * seconds so that the other ranks, which hit their own limits at about the same time, can write
 * theirs, and then calls the process's exit function with the exit code the work was armed with
 * (75, "stopped, resumable", for a hang: the job script requeues and the run resumes from its
 * newest checkpoint). Every rank runs its own watchdog, so every rank that is still alive reports
 * where it was waiting, whichever rank stalled, without any communication (communication is what is
 * stuck). What it is not: it does not choose the limits (the trainer does: a multiple of the recent
 * median step time, see trainer.h and docs/training.md) and does not exit by itself: the exit
 * function comes from src/cli/main.c, the one place that ends the process
 * (fm_trainer_options.exit_now). Without one it only reports.
 *
 * Threads: fm_watchdog_arm / _where / _expect / _disarm are called by the main thread only and take
 * a mutex for a few copies; the monitor thread never blocks on MPI, HDF5 or stdio (it uses write(2)
 * on file descriptor 2), so it works while the main thread is stuck inside any of them.
 */
#ifndef FM_WATCHDOG_H
#define FM_WATCHDOG_H

#include <stdint.h>

#include "core/status.h"

#define FM_WATCHDOG_GRACE_S 2.0 /* between the report and the exit, for the other ranks' reports   \
                                 */

typedef struct fm_watchdog fm_watchdog;

/* Ends the process with `code` without returning (src/cli/main.c: _exit after its own line). */
typedef void (*fm_watchdog_exit_fn)(int code);

typedef struct fm_watchdog_options {
    int rank;                 /* for the report */
    const char *host;         /* for the report (copied) */
    fm_watchdog_exit_fn exit; /* NULL: report only */
    double poll_s;            /* how often the monitor looks; <= 0: 0.5 s */
} fm_watchdog_options;

/* Starts the monitor thread (disarmed). Errors: the thread cannot be created (FM_ERR_INTERNAL). */
fm_status fm_watchdog_start(const fm_watchdog_options *opts, fm_watchdog **out);

/* Stops and joins the monitor thread, frees, sets *w to NULL. Safe on NULL. */
void fm_watchdog_free(fm_watchdog **w);

/* Arms the watchdog for new work starting now: `what` (e.g. "step", "evaluation after step",
 * "checkpoint write of step") and `step` name it in the report; it may take `limit_s` seconds;
 * `why` says where the limit comes from ("20 x the median step of 0.8 s"). On expiry the process
 * exits with `exit_code`. `where` becomes "" until fm_watchdog_where. Safe on NULL. Strings are
 * copied. limit_s <= 0 disarms. */
void fm_watchdog_arm(fm_watchdog *w, const char *what, int64_t step, double limit_s,
                     const char *why, int exit_code);

/* Where the main thread is inside the armed work ("waiting for the gradient all-reduce"). The clock
 * keeps running from fm_watchdog_arm. Safe on NULL. */
void fm_watchdog_where(fm_watchdog *w, const char *where);

/* After an error that every rank already agreed on, the clean-up that follows (closing a file,
 * which may still need the file system) is re-armed with the clean-up limit
 * (fm_watchdog_set_cleanup), counted from now; `what` and the step stay. On expiry the report
 * carries `error` (the agreed message) and the process exits with `exit_code` (the error's own).
 * Safe on NULL. */
void fm_watchdog_expect(fm_watchdog *w, const char *where, int exit_code, const char *error);

/* The limit fm_watchdog_expect uses, in seconds (default 300; the trainer sets
 * [runtime] hang_min_minutes). Safe on NULL. */
void fm_watchdog_set_cleanup(fm_watchdog *w, double seconds);

/* Nothing is watched until the next fm_watchdog_arm. Safe on NULL. */
void fm_watchdog_disarm(fm_watchdog *w);

/* Formats the report the monitor would write now (one or two lines, each ending in a newline):
 * "fmtrain: hang: rank R on HOST: step S: no progress for X s (limit Y s: WHY); it was WHERE;
 * exiting with code C ...". For tests. Returns the length (snprintf's). Safe on NULL (""). */
int fm_watchdog_report(fm_watchdog *w, char *buf, size_t size);

#endif /* FM_WATCHDOG_H */

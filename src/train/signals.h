/* signals.h — stop requests: SIGUSR1 / SIGTERM and the batch job's wall-time limit.
 *
 * fm_signals_install() installs handlers (sigaction, SA_RESTART) for SIGUSR1 and SIGTERM that only
 * record the signal number in a `volatile sig_atomic_t` — the one piece of process-level state in
 * fmtrain, since a signal handler has nowhere else to write. The training loop polls
 * fm_signals_pending() at each step boundary and agrees across ranks (fm_comm flag all-reduce)
 * before it saves and exits with FM_ERR_STOPPED (exit 75). A second SIGTERM while the flag is set
 * is still only a flag: the run stops at the next boundary (the batch system's grace period is for
 * exactly this).
 *
 * Wall time: fm_signals_job_end_time() finds when the batch job will be killed, so the loop can stop
 * with a checkpoint `[run] stop_margin_minutes` before it. Sources, first found wins:
 *   1. FMTRAIN_END_TIME: seconds since the epoch (for tests and launchers that know better);
 *   2. SLURM_JOB_END_TIME (set by recent Slurm in the job environment): seconds since the epoch;
 *   3. under Slurm (SLURM_JOB_ID set): `squeue -h -j $SLURM_JOB_ID -o %e` (local time
 *      YYYY-MM-DDTHH:MM:SS; "N/A"/"UNLIMITED" mean no limit).
 * None found: *end = 0 (no limit) and *source says "none".
 */
#ifndef FM_SIGNALS_H
#define FM_SIGNALS_H

#include <stddef.h>

#include "core/status.h"

/* Installs the SIGUSR1/SIGTERM handlers and clears the flag. Error when sigaction fails. */
fm_status fm_signals_install(void);

/* Restores the handlers that were in place before fm_signals_install (SIG_DFL if none). */
void fm_signals_restore(void);

/* The number of the first stop signal received since install/clear (SIGUSR1 or SIGTERM), 0 if none. */
int fm_signals_pending(void);

/* Forgets a received signal. */
void fm_signals_clear(void);

/* "SIGUSR1", "SIGTERM", "signal N". */
const char *fm_signals_name(int signum);

/* The job's end time in seconds since the epoch, 0 when there is no known limit. `source`
 * (size srcsize) receives a short description ("FMTRAIN_END_TIME", "squeue", "none").
 * Errors only for malformed values of the environment variables (a config-style error naming them);
 * a failing squeue is not an error (end = 0, source says why). */
fm_status fm_signals_job_end_time(double *end, char *source, size_t srcsize);

/* Parses Slurm's time format "YYYY-MM-DDTHH:MM:SS" (local time) into seconds since the epoch.
 * Returns 0 on success, -1 when `text` is not such a time (e.g. "N/A", "UNLIMITED"). */
int fm_signals_parse_slurm_time(const char *text, double *out);

#endif /* FM_SIGNALS_H */

/* signals.c — see signals.h. */
#define _POSIX_C_SOURCE 200809L
#include "train/signals.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/util.h"

/* The one process-level variable fmtrain allows: a signal handler can only write here. */
static volatile sig_atomic_t fm_signals_received = 0;

/* Previous handlers, restored by fm_signals_restore (written only by install/restore on the main
 * thread, never by the handler). */
static struct sigaction fm_signals_old_usr1, fm_signals_old_term;
static int fm_signals_installed = 0;

static void on_stop_signal(int signum)
{
    if (fm_signals_received == 0) fm_signals_received = signum;
}

fm_status fm_signals_install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    fm_signals_received = 0;
    if (sigaction(SIGUSR1, &sa, fm_signals_installed ? NULL : &fm_signals_old_usr1) != 0)
        return FM_ERR(FM_ERR_INTERNAL, "sigaction(SIGUSR1) failed: %s", strerror(errno));
    if (sigaction(SIGTERM, &sa, fm_signals_installed ? NULL : &fm_signals_old_term) != 0)
        return FM_ERR(FM_ERR_INTERNAL, "sigaction(SIGTERM) failed: %s", strerror(errno));
    fm_signals_installed = 1;
    return NULL;
}

void fm_signals_restore(void)
{
    if (!fm_signals_installed) return;
    sigaction(SIGUSR1, &fm_signals_old_usr1, NULL);
    sigaction(SIGTERM, &fm_signals_old_term, NULL);
    fm_signals_installed = 0;
}

int fm_signals_pending(void) { return (int)fm_signals_received; }

void fm_signals_clear(void) { fm_signals_received = 0; }

const char *fm_signals_name(int signum)
{
    if (signum == SIGUSR1) return "SIGUSR1";
    if (signum == SIGTERM) return "SIGTERM";
    return "a signal";
}

int fm_signals_parse_slurm_time(const char *text, double *out)
{
    int Y, M, D, h, m, s;
    char tail;
    if (sscanf(text, "%4d-%2d-%2dT%2d:%2d:%2d%c", &Y, &M, &D, &h, &m, &s, &tail) != 6) return -1;
    if (M < 1 || M > 12 || D < 1 || D > 31 || h < 0 || h > 23 || m < 0 || m > 59 || s < 0 || s > 60)
        return -1;
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    tm.tm_year = Y - 1900;
    tm.tm_mon = M - 1;
    tm.tm_mday = D;
    tm.tm_hour = h;
    tm.tm_min = m;
    tm.tm_sec = s;
    tm.tm_isdst = -1;
    time_t t = mktime(&tm);
    if (t == (time_t)-1) return -1;
    *out = (double)t;
    return 0;
}

static fm_status env_epoch(const char *name, double *end, int *found)
{
    const char *v = getenv(name);
    *found = 0;
    if (!v || !*v) return NULL;
    char *e = NULL;
    errno = 0;
    double t = strtod(v, &e);
    if (errno || e == v || *fm_util_trim(e) != '\0' || !(t >= 0.0))
        return FM_ERR(FM_ERR_CONFIG, "environment variable %s = '%s': expected the job's end time in "
                                     "seconds since the epoch", name, v);
    *end = t;
    *found = 1;
    return NULL;
}

fm_status fm_signals_job_end_time(double *end, char *source, size_t srcsize)
{
    int found = 0;
    *end = 0.0;
    FM_TRY(env_epoch("FMTRAIN_END_TIME", end, &found));
    if (found) {
        fm_util_strlcpy(source, "FMTRAIN_END_TIME", srcsize);
        return NULL;
    }
    FM_TRY(env_epoch("SLURM_JOB_END_TIME", end, &found));
    if (found) {
        fm_util_strlcpy(source, "SLURM_JOB_END_TIME", srcsize);
        return NULL;
    }
    const char *job = getenv("SLURM_JOB_ID");
    if (!job || !*job) {
        fm_util_strlcpy(source, "none (not a Slurm job)", srcsize);
        return NULL;
    }
    for (const char *p = job; *p; p++)
        if (*p < '0' || *p > '9') {
            fm_util_strlcpy(source, "none (SLURM_JOB_ID is not a number)", srcsize);
            return NULL;
        }
    char cmd[128];
    snprintf(cmd, sizeof cmd, "squeue -h -j %s -o %%e 2>/dev/null", job);
    FILE *p = popen(cmd, "r");
    if (!p) {
        fm_util_strlcpy(source, "none (cannot run squeue)", srcsize);
        return NULL;
    }
    char line[128] = "";
    char *got = fgets(line, sizeof line, p);
    int rc = pclose(p);
    if (!got || rc != 0) {
        fm_util_strlcpy(source, "none (squeue gave no end time)", srcsize);
        return NULL;
    }
    fm_util_trim(line);
    if (fm_signals_parse_slurm_time(line, end) != 0) {
        *end = 0.0;
        snprintf(source, srcsize, "none (squeue says '%.40s')", line);
        return NULL;
    }
    fm_util_strlcpy(source, "squeue", srcsize);
    return NULL;
}

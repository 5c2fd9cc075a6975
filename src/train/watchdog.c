/* watchdog.c — see watchdog.h. */
#define _POSIX_C_SOURCE 200809L
#include "train/watchdog.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/util.h"

struct fm_watchdog {
    pthread_t thread;
    pthread_mutex_t mu; /* guards everything below; held only for copies */
    pthread_cond_t cv;  /* wakes the monitor at shutdown */
    int quit;
    int armed;
    double start; /* fm_util_now() at arm / expect */
    double limit_s;
    int exit_code;
    int64_t step;
    char what[96];
    char where[160];
    char why[160];
    char error[1024]; /* the agreed error of fm_watchdog_expect, "" otherwise */
    double cleanup_s;
    int rank;
    char host[64];
    fm_watchdog_exit_fn exit_fn;
    double poll_s;
};

/* The report for the state in `w` (caller holds the mutex) at time `now`. */
static int format_report(const fm_watchdog *w, double now, char *buf, size_t size)
{
    char what[160];
    if (w->step >= 0)
        snprintf(what, sizeof what, "%s %lld", w->what, (long long)w->step);
    else
        fm_util_strlcpy(what, w->what, sizeof what);
    int n =
        snprintf(buf, size,
                 "fmtrain: hang: rank %d on %s: %s: no progress for %.1f s (limit %.1f s: %s); "
                 "it was %s; exiting with code %d%s\n",
                 w->rank, w->host, what, now - w->start, w->limit_s, w->why,
                 w->where[0] ? w->where : "busy", w->exit_code,
                 w->exit_code == 75 ? " so that the job is requeued and resumes from the newest "
                                      "checkpoint (see docs/troubleshooting.md, \"hang\")"
                                    : "");
    if (w->error[0] && n >= 0 && (size_t)n < size)
        n += snprintf(buf + n, size - (size_t)n, "fmtrain: hang: rank %d: after the error: %s\n",
                      w->rank, w->error);
    return n;
}

/* write(2) of the whole buffer; the monitor must not use stdio, whose locks the stuck main thread
 * may hold. */
static void write_all(const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t k = write(STDERR_FILENO, buf, len);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return;
        buf += k;
        len -= (size_t)k;
    }
}

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static void *monitor(void *arg)
{
    fm_watchdog *w = arg;
    pthread_mutex_lock(&w->mu);
    while (!w->quit) {
        double now = fm_util_now();
        if (w->armed && now - w->start > w->limit_s) {
            char buf[2048];
            int n = format_report(w, now, buf, sizeof buf);
            int code = w->exit_code;
            fm_watchdog_exit_fn fn = w->exit_fn;
            w->armed = 0; /* report once */
            pthread_mutex_unlock(&w->mu);
            if (n > 0) write_all(buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
            if (fn) {
                sleep_s(FM_WATCHDOG_GRACE_S);
                fn(code); /* does not return */
            }
            pthread_mutex_lock(&w->mu);
            continue;
        }
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        double t = (double)until.tv_sec + until.tv_nsec * 1e-9 + w->poll_s;
        until.tv_sec = (time_t)t;
        until.tv_nsec = (long)((t - (double)until.tv_sec) * 1e9);
        pthread_cond_timedwait(&w->cv, &w->mu, &until);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

fm_status fm_watchdog_start(const fm_watchdog_options *o, fm_watchdog **out)
{
    *out = NULL;
    fm_watchdog *w = calloc(1, sizeof *w);
    FM_CHECK_ALLOC(w, sizeof *w);
    w->rank = o->rank;
    fm_util_strlcpy(w->host, o->host ? o->host : "?", sizeof w->host);
    w->exit_fn = o->exit;
    w->poll_s = o->poll_s > 0 ? o->poll_s : 0.5;
    w->cleanup_s = 300.0;
    w->step = -1;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    int rc = pthread_create(&w->thread, NULL, monitor, w);
    if (rc != 0) {
        pthread_cond_destroy(&w->cv);
        pthread_mutex_destroy(&w->mu);
        free(w);
        return FM_ERR(FM_ERR_INTERNAL, "cannot start the hang watchdog's thread: %s", strerror(rc));
    }
    *out = w;
    return NULL;
}

void fm_watchdog_free(fm_watchdog **pw)
{
    if (!pw || !*pw) return;
    fm_watchdog *w = *pw;
    pthread_mutex_lock(&w->mu);
    w->quit = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
    *pw = NULL;
}

void fm_watchdog_arm(fm_watchdog *w, const char *what, int64_t step, double limit_s,
                     const char *why, int exit_code)
{
    if (!w) return;
    pthread_mutex_lock(&w->mu);
    w->armed = limit_s > 0;
    w->start = fm_util_now();
    w->limit_s = limit_s;
    w->exit_code = exit_code;
    w->step = step;
    fm_util_strlcpy(w->what, what ? what : "", sizeof w->what);
    fm_util_strlcpy(w->why, why ? why : "", sizeof w->why);
    w->where[0] = '\0';
    w->error[0] = '\0';
    pthread_mutex_unlock(&w->mu);
}

void fm_watchdog_where(fm_watchdog *w, const char *where)
{
    if (!w) return;
    pthread_mutex_lock(&w->mu);
    fm_util_strlcpy(w->where, where ? where : "", sizeof w->where);
    pthread_mutex_unlock(&w->mu);
}

void fm_watchdog_expect(fm_watchdog *w, const char *where, int exit_code, const char *error)
{
    if (!w) return;
    pthread_mutex_lock(&w->mu);
    w->armed = w->cleanup_s > 0;
    w->start = fm_util_now();
    w->limit_s = w->cleanup_s;
    w->exit_code = exit_code;
    snprintf(w->why, sizeof w->why, "clean-up after an error, [runtime] hang_min_minutes");
    fm_util_strlcpy(w->where, where ? where : "", sizeof w->where);
    fm_util_strlcpy(w->error, error ? error : "", sizeof w->error);
    pthread_mutex_unlock(&w->mu);
}

void fm_watchdog_set_cleanup(fm_watchdog *w, double seconds)
{
    if (!w) return;
    pthread_mutex_lock(&w->mu);
    w->cleanup_s = seconds;
    pthread_mutex_unlock(&w->mu);
}

void fm_watchdog_disarm(fm_watchdog *w)
{
    if (!w) return;
    pthread_mutex_lock(&w->mu);
    w->armed = 0;
    pthread_mutex_unlock(&w->mu);
}

int fm_watchdog_report(fm_watchdog *w, char *buf, size_t size)
{
    if (!w) {
        if (size) buf[0] = '\0';
        return 0;
    }
    pthread_mutex_lock(&w->mu);
    int n = format_report(w, fm_util_now(), buf, size);
    pthread_mutex_unlock(&w->mu);
    return n;
}

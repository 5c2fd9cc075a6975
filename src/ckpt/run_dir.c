/* run_dir.c — the run directory: creation, the lock, the dry run's checks (see run_dir.h). */
#define _POSIX_C_SOURCE 200809L
#include "ckpt/run_dir.h"

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "build_info.h"
#include "ckpt/checkpoint_dir.h"
#include "core/util.h"
#include "dist/comm.h"

#define RD_PATH_MAX 4200

struct fm_run_lock {
    int rank;
    char path[RD_PATH_MAX]; /* rank 0: the lock file */
    char text[1024];        /* rank 0: what it wrote there */
};

/* ---- who holds a lock ------------------------------------------------------------------------ */

typedef struct holder {
    char host[128];
    long long pid;
    unsigned long long pid_start; /* /proc/<pid>/stat field 22; 0 unknown */
    char job[32];                 /* Slurm job id, "" outside Slurm */
    char restart[16];
    char step[32];
    char user[64];
    char since[40]; /* UTC */
    double since_epoch;
    char version[40];
} holder;

/* The start time of process `pid` in clock ticks since boot (/proc/<pid>/stat field 22), 0 when
 * unknown; *state (may be NULL) receives field 3 ('R', 'S', 'Z' for a zombie...; '?' unknown). */
static unsigned long long pid_stat(long long pid, char *state)
{
    if (state) *state = '?';
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%lld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* the command name may hold spaces and parentheses */
    if (!p) return 0;
    if (state && p[1] == ' ' && p[2]) *state = p[2];
    unsigned long long v = 0;
    /* after ") ": field 3 (state) ... field 22 (starttime) */
    int field = 2;
    for (char *tok = strtok(p + 1, " "); tok; tok = strtok(NULL, " ")) {
        field++;
        if (field == 22) {
            v = strtoull(tok, NULL, 10);
            break;
        }
    }
    return v;
}

static void env_or(const char *name, const char *dflt, char *buf, size_t size)
{
    const char *v = getenv(name);
    fm_util_strlcpy(buf, v && *v ? v : dflt, size);
}

/* This process as a lock holder. */
static void me(holder *h)
{
    memset(h, 0, sizeof *h);
    if (gethostname(h->host, sizeof h->host - 1) != 0)
        fm_util_strlcpy(h->host, "?", sizeof h->host);
    h->pid = (long long)getpid();
    h->pid_start = pid_stat(h->pid, NULL);
    env_or("SLURM_JOB_ID", "", h->job, sizeof h->job);
    env_or("SLURM_RESTART_COUNT", "0", h->restart, sizeof h->restart);
    env_or("SLURM_STEP_ID", "", h->step, sizeof h->step);
    env_or("USER", "", h->user, sizeof h->user);
    if (!h->user[0]) {
        struct passwd *pw = getpwuid(getuid());
        fm_util_strlcpy(h->user, pw && pw->pw_name ? pw->pw_name : "?", sizeof h->user);
    }
    h->since_epoch = fm_util_wall_time();
    time_t t = (time_t)h->since_epoch;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(h->since, sizeof h->since, "%Y-%m-%dT%H:%M:%SZ", &tm);
    fm_util_strlcpy(h->version, FM_VERSION, sizeof h->version);
}

static void format_holder(const holder *h, char *buf, size_t size)
{
    snprintf(buf, size,
             "# fmtrain run-directory lock (docs/training.md, \"One trainer per run directory\")\n"
             "host=%s\npid=%lld\npid_start=%llu\njob=%s\nrestart=%s\nstep=%s\nuser=%s\n"
             "since=%s\nsince_epoch=%.0f\nfmtrain=%s\n",
             h->host, h->pid, h->pid_start, h->job, h->restart, h->step, h->user, h->since,
             h->since_epoch, h->version);
}

static void parse_holder(const char *text, holder *h)
{
    memset(h, 0, sizeof *h);
    fm_util_strlcpy(h->host, "?", sizeof h->host);
    for (const char *p = text; p && *p;) {
        const char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        char line[256];
        if (len >= sizeof line) len = sizeof line - 1;
        memcpy(line, p, len);
        line[len] = '\0';
        p = eol ? eol + 1 : NULL;
        char *eq = strchr(line, '=');
        if (line[0] == '#' || !eq) continue;
        *eq = '\0';
        const char *k = line, *v = eq + 1;
        if (!strcmp(k, "host")) fm_util_strlcpy(h->host, v, sizeof h->host);
        else if (!strcmp(k, "pid")) h->pid = atoll(v);
        else if (!strcmp(k, "pid_start")) h->pid_start = strtoull(v, NULL, 10);
        else if (!strcmp(k, "job")) fm_util_strlcpy(h->job, v, sizeof h->job);
        else if (!strcmp(k, "restart")) fm_util_strlcpy(h->restart, v, sizeof h->restart);
        else if (!strcmp(k, "step")) fm_util_strlcpy(h->step, v, sizeof h->step);
        else if (!strcmp(k, "user")) fm_util_strlcpy(h->user, v, sizeof h->user);
        else if (!strcmp(k, "since")) fm_util_strlcpy(h->since, v, sizeof h->since);
        else if (!strcmp(k, "since_epoch")) h->since_epoch = atof(v);
        else if (!strcmp(k, "fmtrain")) fm_util_strlcpy(h->version, v, sizeof h->version);
    }
}

static int all_digits(const char *s)
{
    if (!*s) return 0;
    for (; *s; s++)
        if (*s < '0' || *s > '9') return 0;
    return 1;
}

typedef enum { HOLDER_ALIVE, HOLDER_ENDING, HOLDER_GONE, HOLDER_UNKNOWN } holder_state;

/* Asks Slurm for the state of job `job` (digits): HOLDER_ALIVE (running), HOLDER_ENDING
 * (COMPLETING), HOLDER_GONE (finished, or unknown to Slurm), HOLDER_UNKNOWN (no squeue, no
 * controller). `state` receives Slurm's word. */
static holder_state slurm_job_state(const char *job, char *state, size_t size)
{
    fm_util_strlcpy(state, "?", size);
    if (!all_digits(job)) return HOLDER_UNKNOWN;
    char cmd[160];
    snprintf(cmd, sizeof cmd, "squeue -h -j %s -t all -o %%T 2>&1", job);
    FILE *p = popen(cmd, "r");
    if (!p) return HOLDER_UNKNOWN;
    char out[512] = "";
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    int rc = pclose(p);
    fm_util_trim(out);
    if (rc != 0 || !out[0]) {
        if (strstr(out, "Invalid job id")) {
            fm_util_strlcpy(state, "not known to Slurm any more", size);
            return HOLDER_GONE;
        }
        return HOLDER_UNKNOWN; /* no squeue, no controller */
    }
    char *nl = strchr(out, '\n');
    if (nl) *nl = '\0';
    fm_util_strlcpy(state, out, size);
    if (!strcmp(out, "COMPLETING")) return HOLDER_ENDING;
    const char *running[] = {"RUNNING", "CONFIGURING", "SUSPENDED", "STOPPED", "SIGNALING",
                             "RESIZING", "STAGE_OUT", "REQUEUE_HOLD"};
    for (size_t i = 0; i < sizeof running / sizeof *running; i++)
        if (!strcmp(out, running[i])) return HOLDER_ALIVE;
    return HOLDER_GONE; /* PENDING (not running: a requeued job waits), COMPLETED, FAILED, ... */
}

/* Whether the holder still runs; `why` (size bytes) says how that was decided. */
static holder_state judge(const holder *h, const holder *self, char *why, size_t size)
{
    if (!strcmp(h->host, self->host) && h->pid > 0) {
        if (h->pid == self->pid && h->pid_start == self->pid_start) {
            snprintf(why, size, "it is this process");
            return HOLDER_ALIVE;
        }
        /* Alive: the pid exists, is not a zombie (a killed rank whose parent died may stay one
         * where nothing reaps it) and started when the holder did (not a reused pid). */
        int alive = kill((pid_t)h->pid, 0) == 0 || errno == EPERM;
        char state = '?';
        unsigned long long start = alive ? pid_stat(h->pid, &state) : 0;
        if (alive && (state == 'Z' || state == 'X')) alive = 0;
        if (alive && h->pid_start && start && start != h->pid_start) alive = 0;
        snprintf(why, size, alive ? "pid %lld runs on this host (ps -p %lld)"
                                  : "pid %lld no longer runs on this host",
                 h->pid, h->pid);
        return alive ? HOLDER_ALIVE : HOLDER_GONE;
    }
    if (h->job[0] && self->job[0] && !strcmp(h->job, self->job) &&
        strcmp(h->restart, self->restart) != 0) {
        snprintf(why, size, "it is Slurm job %s's earlier run (restart %s; this is restart %s)",
                 h->job, h->restart, self->restart);
        return HOLDER_GONE;
    }
    if (h->job[0]) {
        char state[128];
        holder_state s = slurm_job_state(h->job, state, sizeof state);
        if (s == HOLDER_UNKNOWN)
            snprintf(why, size, "Slurm could not be asked about job %s from here", h->job);
        else
            snprintf(why, size, "Slurm job %s is %s", h->job, state);
        return s;
    }
    snprintf(why, size,
             "a process on another host (%s), outside Slurm: fmtrain cannot tell whether it still "
             "runs",
             h->host);
    return HOLDER_UNKNOWN;
}

/* "host vm, Slurm job 12 (restart 0), pid 345, user ana, since 2026-...Z (3.2 h ago)" */
static void describe(const holder *h, char *buf, size_t size)
{
    char job[96] = "";
    if (h->job[0]) snprintf(job, sizeof job, ", Slurm job %s (restart %s)", h->job, h->restart);
    double age = h->since_epoch > 0 ? fm_util_wall_time() - h->since_epoch : -1;
    char ago[48] = "";
    if (age >= 0) snprintf(ago, sizeof ago, " (%.1f h ago)", age / 3600.0);
    snprintf(buf, size, "host %s%s, pid %lld, user %s, fmtrain %s, since %s%s", h->host, job,
             h->pid, h->user, h->version[0] ? h->version : "?", h->since[0] ? h->since : "?", ago);
}

/* The error for a lock held by `h`. */
static fm_status held_error(const char *dir, const char *lock, const holder *h, const char *why)
{
    char who[512], what[RD_PATH_MAX + 640];
    describe(h, who, sizeof who);
    if (h->job[0])
        snprintf(what, sizeof what,
                 "wait for that job to end (squeue -j %s), cancel it (scancel %s), or give this "
                 "run another [run] dir; if its processes are gone for good, delete %s and start "
                 "again",
                 h->job, h->job, lock);
    else
        snprintf(what, sizeof what,
                 "wait for it to end, stop it, or give this run another [run] dir; if that process "
                 "no longer runs (on %s: ps -p %lld), delete %s and start again",
                 h->host, h->pid, lock);
    return FM_ERR(FM_ERR_CONFIG,
                  "run directory %s is in use by another fmtrain (%s; %s): two trainers on one run "
                  "directory would overwrite each other's checkpoints and metrics; %s",
                  dir, who, why, what);
}

/* ---- the directory itself ------------------------------------------------------------------- */

/* An error about the run directory for errno `err`: permissions, a read-only file system, something
 * in the way are configuration errors (another [run] dir is the fix; a restart would fail the same
 * way), anything else an I/O error. */
static fm_status dir_error(int err, const char *dir, const char *what, const char *path)
{
    int config = err == EACCES || err == EPERM || err == EROFS || err == ENOTDIR ||
                 err == EEXIST || err == ENAMETOOLONG || err == ELOOP;
    if (config)
        return FM_ERR(FM_ERR_CONFIG,
                      "run directory %s cannot be used: %s %s: %s; set [run] dir (or run.name) to "
                      "a directory you can write, or fix its permissions",
                      dir, what, path, strerror(err));
    return FM_ERR(FM_ERR_IO, "run directory %s: %s %s: %s", dir, what, path, strerror(err));
}

/* mkdir -p that keeps errno: 0, or the errno and the component in `failed`. */
static int make_dirs(const char *path, char *failed, size_t size)
{
    char tmp[RD_PATH_MAX];
    if (fm_util_strlcpy(tmp, path, sizeof tmp)) return ENAMETOOLONG;
    size_t n = strlen(tmp);
    for (size_t i = 1; i <= n; i++) {
        if (tmp[i] != '/' && tmp[i] != '\0') continue;
        char c = tmp[i];
        tmp[i] = '\0';
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST) {
            int err = errno;
            fm_util_strlcpy(failed, tmp, size);
            return err;
        }
        tmp[i] = c;
    }
    struct stat sb;
    if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        fm_util_strlcpy(failed, path, size);
        return ENOTDIR;
    }
    return 0;
}

/* Creates and removes a probe file in directory `dir`: 0 or errno. */
static int probe_write(const char *dir, int as_dir)
{
    char p[RD_PATH_MAX + 64];
    snprintf(p, sizeof p, "%s/.fmtrain-probe-%lld", dir, (long long)getpid());
    if (as_dir) {
        if (mkdir(p, 0755) != 0) return errno;
        rmdir(p);
        return 0;
    }
    int fd = open(p, O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd < 0) return errno;
    close(fd);
    unlink(p);
    return 0;
}

static fm_status read_text(const char *path, char *buf, size_t size, int *missing)
{
    *missing = 0;
    buf[0] = '\0';
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        if (errno == ENOENT) {
            *missing = 1;
            return NULL;
        }
        return FM_ERR(FM_ERR_IO, "cannot read the lock %s: %s", path, strerror(errno));
    }
    ssize_t n = read(fd, buf, size - 1);
    int err = errno;
    close(fd);
    if (n < 0) return FM_ERR(FM_ERR_IO, "cannot read the lock %s: %s", path, strerror(err));
    buf[n] = '\0';
    return NULL;
}

/* ---- taking the lock (rank 0) ---------------------------------------------------------------- */

static int create_lock(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd < 0) return errno;
    size_t len = strlen(text);
    ssize_t w = write(fd, text, len);
    int err = w == (ssize_t)len ? 0 : (w < 0 ? errno : EIO);
    if (!err && fsync(fd) != 0 && errno != EINVAL) err = errno;
    close(fd);
    if (err) unlink(path);
    return err;
}

static fm_status lock_rank0(const char *dir, FILE *log, fm_run_lock *l)
{
    char failed[RD_PATH_MAX];
    int err = make_dirs(dir, failed, sizeof failed);
    if (err) return dir_error(err, dir, "cannot create", failed);
    holder self;
    me(&self);
    format_holder(&self, l->text, sizeof l->text);
    double waited = 0.0;
    for (int attempt = 0; attempt < 100; attempt++) {
        err = create_lock(l->path, l->text);
        if (!err) return NULL;
        if (err != EEXIST) return dir_error(err, dir, "cannot create the lock file", l->path);
        char text[1024];
        int missing = 0;
        FM_TRY(read_text(l->path, text, sizeof text, &missing));
        if (missing) continue; /* released meanwhile */
        holder h;
        parse_holder(text, &h);
        char why[256], who[512];
        holder_state s = judge(&h, &self, why, sizeof why);
        if (s == HOLDER_ENDING && waited < FM_RUN_DIR_WAIT_S) {
            if (log && waited == 0.0) {
                describe(&h, who, sizeof who);
                fprintf(log, "run directory %s is held by an fmtrain that is ending (%s; %s): "
                             "waiting up to %.0f s for it to let go\n",
                        dir, who, why, FM_RUN_DIR_WAIT_S);
                fflush(log);
            }
            sleep(2);
            waited += 2.0;
            continue;
        }
        if (s != HOLDER_GONE) return held_error(dir, l->path, &h, why);
        /* Stale: remove it, unless it changed since we read it (another trainer took it over). */
        char again[1024];
        FM_TRY(read_text(l->path, again, sizeof again, &missing));
        if (!missing && strcmp(again, text) != 0) continue;
        if (!missing && unlink(l->path) != 0 && errno != ENOENT)
            return dir_error(errno, dir, "cannot remove the stale lock", l->path);
        if (log) {
            describe(&h, who, sizeof who);
            fprintf(log, "run directory %s: replaced a stale lock (%s): %s\n", dir, who, why);
            fflush(log);
        }
    }
    return FM_ERR(FM_ERR_IO,
                  "cannot take the lock %s: it keeps changing (several trainers starting at once?); "
                  "start again",
                  l->path);
}

fm_status fm_run_dir_lock(MPI_Comm comm, const char *run_dir, FILE *log, fm_run_lock **out)
{
    *out = NULL;
    int rank = 0;
    FM_MPI_TRY(MPI_Comm_rank(comm, &rank));
    fm_run_lock *l = calloc(1, sizeof *l);
    fm_status st = l ? NULL : FM_ERR(FM_ERR_NOMEM, "out of memory for the run-directory lock");
    if (l) l->rank = rank;
    if (!st && (size_t)snprintf(l->path, sizeof l->path, "%s/%s", run_dir, FM_RUN_DIR_LOCK) >=
                   sizeof l->path)
        st = FM_ERR(FM_ERR_CONFIG, "run directory path too long: %s", run_dir);
    if (!st && rank == 0) st = lock_rank0(run_dir, log, l);
    st = fm_comm_agree(comm, st);
    if (st) {
        free(l); /* rank 0 failed to take it, or took it and another rank failed: see below */
        return st;
    }
    *out = l;
    return NULL;
}

void fm_run_dir_unlock(fm_run_lock **pl)
{
    if (!pl || !*pl) return;
    fm_run_lock *l = *pl;
    if (l->rank == 0 && l->path[0]) {
        char text[1024];
        int missing = 0;
        fm_status st = read_text(l->path, text, sizeof text, &missing);
        if (!st && !missing && strcmp(text, l->text) == 0) unlink(l->path);
        fm_status_free(&st);
    }
    free(l);
    *pl = NULL;
}

/* ---- the dry run's checks -------------------------------------------------------------------- */

/* The nearest existing ancestor of `path` (path itself when it exists) into `out`. */
static void existing_ancestor(const char *path, char *out, size_t size)
{
    fm_util_strlcpy(out, path, size);
    struct stat sb;
    while (stat(out, &sb) != 0) {
        char *slash = strrchr(out, '/');
        if (!slash) {
            fm_util_strlcpy(out, ".", size);
            return;
        }
        if (slash == out) {
            out[1] = '\0';
            return;
        }
        *slash = '\0';
    }
}

/* Room for checkpoints in `dir`'s file system (rank 0): the bytes needed by the next keep_last + 1
 * checkpoints counting those already there, the free bytes, and how many there are. */
static void space_needed(const char *run_dir, uint64_t each, int keep_last, double *need,
                         double *avail, int *existing)
{
    char ckdir[RD_PATH_MAX], anc[RD_PATH_MAX];
    *existing = 0;
    if (fm_checkpoint_dir_of_run(run_dir, ckdir, sizeof ckdir) == NULL) {
        fm_checkpoint_entry *v = NULL;
        fm_status st = fm_checkpoint_dir_list(ckdir, &v, existing);
        fm_status_free(&st);
        free(v);
    }
    int more = keep_last + 1 - *existing;
    if (more < 1) more = 1;
    *need = (double)more * (double)each;
    existing_ancestor(run_dir, anc, sizeof anc);
    struct statvfs sv;
    *avail = statvfs(anc, &sv) == 0 ? (double)sv.f_bavail * (double)sv.f_frsize : -1.0;
}

static fm_status check_rank0(const char *dir, uint64_t ckpt_bytes, int keep_last, FILE *log)
{
    struct stat sb;
    char anc[RD_PATH_MAX];
    if (stat(dir, &sb) == 0) {
        if (!S_ISDIR(sb.st_mode)) return dir_error(ENOTDIR, dir, "it is not a directory:", dir);
        int err = probe_write(dir, 0);
        if (err) return dir_error(err, dir, "cannot write in", dir);
        if (log) fprintf(log, "# run directory %s: exists, writable\n", dir);
    } else {
        existing_ancestor(dir, anc, sizeof anc);
        if (stat(anc, &sb) != 0 || !S_ISDIR(sb.st_mode))
            return dir_error(ENOTDIR, dir, "cannot be created: in the way is", anc);
        int err = probe_write(anc, 1);
        if (err) return dir_error(err, dir, "cannot be created in", anc);
        if (log) fprintf(log, "# run directory %s: will be created (in %s, writable)\n", dir, anc);
    }
    char lock[RD_PATH_MAX], text[1024];
    snprintf(lock, sizeof lock, "%s/%s", dir, FM_RUN_DIR_LOCK);
    int missing = 1;
    FM_TRY(read_text(lock, text, sizeof text, &missing));
    if (!missing) {
        holder h, self;
        parse_holder(text, &h);
        me(&self);
        char why[256], who[512];
        holder_state s = judge(&h, &self, why, sizeof why);
        describe(&h, who, sizeof who);
        if (s == HOLDER_ALIVE || s == HOLDER_UNKNOWN) return held_error(dir, lock, &h, why);
        if (log)
            fprintf(log, "# run directory lock: %s (%s; %s): %s\n",
                    s == HOLDER_GONE ? "stale, will be replaced" : "held by an ending fmtrain, "
                                                                   "which a run waits for",
                    who, why, lock);
    } else if (log) {
        fprintf(log, "# run directory lock: free\n");
    }
    double need = 0, avail = 0;
    int existing = 0;
    space_needed(dir, ckpt_bytes, keep_last, &need, &avail, &existing);
    char each_s[32], need_s[32], free_s[32];
    fm_util_format_bytes((double)ckpt_bytes, each_s, sizeof each_s);
    fm_util_format_bytes(need, need_s, sizeof need_s);
    fm_util_format_bytes(avail, free_s, sizeof free_s);
    if (avail >= 0 && avail < need)
        return FM_ERR(FM_ERR_IO,
                      "run directory %s: not enough free space for its checkpoints: each takes "
                      "about %s, [checkpoint] keep_last = %d (+1 while the next is written) with "
                      "%d already there needs %s more, but only %s is free; free space (or raise "
                      "the quota), lower keep_last, or choose another [run] dir",
                      dir, each_s, keep_last, existing, need_s, free_s);
    if (log)
        fprintf(log, "# checkpoints: about %s each; keep_last + 1 = %d with %d already there need "
                     "%s more; %s free\n",
                each_s, keep_last + 1, existing, need_s,
                avail >= 0 ? free_s : "? (statvfs failed)");
    return NULL;
}

fm_status fm_run_dir_check(MPI_Comm comm, const char *run_dir, uint64_t ckpt_bytes, int keep_last,
                           FILE *log)
{
    int rank = 0;
    FM_MPI_TRY(MPI_Comm_rank(comm, &rank));
    fm_status st = rank == 0 ? check_rank0(run_dir, ckpt_bytes, keep_last, log) : NULL;
    if (rank == 0 && log) fflush(log);
    return fm_comm_agree(comm, st);
}

fm_status fm_run_dir_check_space(MPI_Comm comm, const char *run_dir, uint64_t ckpt_bytes,
                                 int keep_last, FILE *log)
{
    int rank = 0;
    FM_MPI_TRY(MPI_Comm_rank(comm, &rank));
    fm_status st = NULL;
    if (rank == 0) {
        double need = 0, avail = 0;
        int existing = 0;
        space_needed(run_dir, ckpt_bytes, keep_last, &need, &avail, &existing);
        char each_s[32], need_s[32], free_s[32];
        fm_util_format_bytes((double)ckpt_bytes, each_s, sizeof each_s);
        fm_util_format_bytes(need, need_s, sizeof need_s);
        fm_util_format_bytes(avail, free_s, sizeof free_s);
        if (avail >= 0 && avail < (double)ckpt_bytes)
            st = FM_ERR(FM_ERR_IO,
                        "run directory %s: no room for even one checkpoint (about %s each; %s "
                        "free): free space (or raise the quota) or choose another [run] dir, then "
                        "start again",
                        run_dir, each_s, free_s);
        else if (avail >= 0 && avail < need && log) {
            fprintf(log, "warning: run directory %s has %s free, less than the %s that keep_last = "
                         "%d (+1 while the next is written) needs with %d checkpoint%s there: the "
                         "run will stop with an I/O error when the disk fills; free space or lower "
                         "[checkpoint] keep_last\n",
                    run_dir, free_s, need_s, keep_last, existing, existing == 1 ? "" : "s");
            fflush(log);
        }
    }
    return fm_comm_agree(comm, st);
}

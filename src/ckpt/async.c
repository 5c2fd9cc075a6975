/* async.c — the background writer of asynchronous checkpoints (see async.h: why the thread makes no
 * MPI and no HDF5 call, and the stage / launch / settle protocol). */
#define _GNU_SOURCE /* fdatasync */
#include "ckpt/async.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/util.h"
#include "dist/comm.h"

#define ASYNC_MAX_GROUPS 8
#define ASYNC_PIECE_BYTES ((size_t)16 << 20) /* one pwrite; the abandon flag is read between them */

static fm_checkpoint_async_test_fn test_fn;
static void *test_ctx;

void fm_checkpoint_async_set_test_hook(fm_checkpoint_async_test_fn fn, void *ctx)
{
    test_fn = fn;
    test_ctx = ctx;
}

typedef enum { ASYNC_IDLE, ASYNC_STAGED, ASYNC_RUNNING } async_state;

struct fm_checkpoint_async {
    MPI_Comm comm; /* borrowed; main thread only */
    int rank;
    /* The host buffer of this rank's parts (kept between checkpoints). */
    fm_backend *be; /* the backend that allocated buf (host_alloc), or NULL: malloc */
    float *buf;
    size_t cap; /* floats */
    /* The checkpoint being written. */
    async_state state;
    fm_checkpoint_file *f;
    fm_checkpoint_group groups[ASYNC_MAX_GROUPS]; /* tables copied (owned), data NULL */
    int ngroups;
    fm_checkpoint_extent *ext; /* this rank's parts, in buffer order */
    int next, njobs;
    uint64_t *crc_len; /* 2 per tensor, written by the thread */
    int64_t step;
    int keep_last;
    uint64_t reserve_bytes;
    double stall_s;
    /* The thread. */
    pthread_t th;
    int joined;
    atomic_int done;    /* set by the thread as it ends */
    atomic_int abandon; /* set by the main thread: stop after the current piece */
    fm_status thread_st;
};

fm_status fm_checkpoint_async_create(MPI_Comm comm, fm_checkpoint_async **out)
{
    *out = NULL;
    fm_checkpoint_async *a = calloc(1, sizeof *a);
    FM_CHECK_ALLOC(a, sizeof *a);
    a->comm = comm;
    a->step = -1;
    a->joined = 1;
    fm_status st = NULL;
    FM_MPI_KEEP(st, MPI_Comm_rank(comm, &a->rank));
    if (st) {
        free(a);
        return st;
    }
    *out = a;
    return NULL;
}

/* Forgets the checkpoint being written (its file is the caller's business). */
static void reset_job(fm_checkpoint_async *a)
{
    for (int g = 0; g < a->ngroups; g++) free((void *)a->groups[g].tensors);
    memset(a->groups, 0, sizeof a->groups);
    a->ngroups = 0;
    free(a->ext);
    a->ext = NULL;
    a->next = a->njobs = 0;
    free(a->crc_len);
    a->crc_len = NULL;
    fm_status_free(&a->thread_st);
    a->f = NULL;
    a->step = -1;
    a->stall_s = 0.0;
    a->state = ASYNC_IDLE;
}

/* Grows the host buffer to n floats (pinned through the backend where it offers it). */
static fm_status reserve_buffer(fm_checkpoint_async *a, fm_backend *be, size_t n)
{
    if (a->buf && n <= a->cap && a->be == (be->ops->host_alloc ? be : NULL)) return NULL;
    fm_checkpoint_async_release(a);
    size_t bytes = (n > 0 ? n : 1) * sizeof(float);
    void *p = NULL;
    if (be->ops->host_alloc) {
        FM_TRY(be->ops->host_alloc(be, &p, bytes));
        a->be = be;
    } else {
        p = malloc(bytes);
        if (!p)
            return FM_ERR(FM_ERR_NOMEM,
                          "out of memory for the snapshot of an asynchronous checkpoint (%zu "
                          "bytes: this rank's part of the parameters and AdamW moments); set "
                          "[checkpoint] async = false or run more ranks per model",
                          bytes);
    }
    a->buf = p;
    a->cap = n;
    return NULL;
}

/* Copies the groups' tables (the caller's may be freed before the write is settled). */
static fm_status copy_groups(fm_checkpoint_async *a, const fm_checkpoint_group *groups, int ngroups)
{
    if (ngroups > ASYNC_MAX_GROUPS)
        return FM_ERR(FM_ERR_INTERNAL, "asynchronous checkpoint: %d groups, at most %d", ngroups,
                      ASYNC_MAX_GROUPS);
    for (int g = 0; g < ngroups; g++) {
        size_t bytes = (size_t)(groups[g].ntensors > 0 ? groups[g].ntensors : 1) *
                       sizeof(fm_checkpoint_tensor);
        fm_checkpoint_tensor *t = malloc(bytes);
        FM_CHECK_ALLOC(t, bytes);
        memcpy(t, groups[g].tensors, (size_t)groups[g].ntensors * sizeof *t);
        a->groups[g] = groups[g];
        a->groups[g].tensors = t;
        a->groups[g].data = NULL;
        a->ngroups = g + 1;
    }
    return NULL;
}

/* The snapshot: this rank's parts, in extent order, into the host buffer. */
static fm_status snapshot(fm_checkpoint_async *a, const fm_checkpoint_group *groups, fm_backend *be)
{
    size_t total = 0;
    for (int i = 0; i < a->next; i++) total += a->ext[i].count;
    FM_TRY(reserve_buffer(a, be, total));
    if (be->ops->caps.host_memory) {
        size_t *at = malloc((size_t)(a->next > 0 ? a->next : 1) * sizeof *at);
        FM_CHECK_ALLOC(at, (size_t)a->next * sizeof *at);
        for (int i = 0; i < a->next; i++) at[i] = i ? at[i - 1] + a->ext[i - 1].count : 0;
        /* Each part is a memcpy; the trainer's OpenMP threads share them. */
#pragma omp parallel for schedule(dynamic, 1)
        for (int i = 0; i < a->next; i++)
            memcpy(a->buf + at[i],
                   groups[a->ext[i].group].data + (a->ext[i].elem - groups[a->ext[i].group].base),
                   a->ext[i].count * sizeof(float));
        free(at);
        return NULL;
    }
    FM_TRY(be->ops->sync(be));
    size_t at = 0;
    for (int i = 0; i < a->next; i++) {
        const fm_checkpoint_group *gr = &groups[a->ext[i].group];
        FM_TRY(be->ops->download(be, a->buf + at, gr->data + (a->ext[i].elem - gr->base),
                                 a->ext[i].count * sizeof(float)));
        at += a->ext[i].count;
    }
    return NULL;
}

fm_status fm_checkpoint_async_stage(fm_checkpoint_async *a, fm_checkpoint_file *f,
                                    const fm_checkpoint_group *groups, int ngroups, fm_backend *be)
{
    fm_status st = a->state != ASYNC_IDLE
                       ? FM_ERR(FM_ERR_INTERNAL, "asynchronous checkpoint staged while another is "
                                                 "in flight")
                       : NULL;
    st = fm_comm_agree(a->comm, st);
    if (st) return st;
    fm_checkpoint_extent *ext = NULL;
    int n = 0, njobs = 0;
    FM_TRY(fm_checkpoint_file_define_groups(f, groups, ngroups, &ext, &n, &njobs));
    a->ext = ext;
    a->next = n;
    a->njobs = njobs;
    st = copy_groups(a, groups, ngroups);
    if (!st) {
        a->crc_len = calloc((size_t)(njobs > 0 ? njobs : 1) * 2, sizeof *a->crc_len);
        if (!a->crc_len) st = FM_ERR(FM_ERR_NOMEM, "out of memory for checkpoint checksums");
    }
    if (!st) st = snapshot(a, groups, be);
    st = fm_comm_agree(a->comm, st);
    if (st) {
        reset_job(a);
        return st;
    }
    a->f = f;
    a->state = ASYNC_STAGED;
    return NULL;
}

/* ---- the thread ----------------------------------------------------------------------------- */

/* pwrite of all `bytes` at `off` in pieces, stopping early when abandoned. */
static fm_status write_all(fm_checkpoint_async *a, int fd, const char *path, const char *p,
                           size_t bytes, uint64_t off)
{
    size_t done = 0;
    while (done < bytes) {
        if (atomic_load(&a->abandon))
            return FM_ERR(FM_ERR_IO,
                          "the background write of %s was abandoned (the run is ending after an "
                          "error; it resumes from the previous checkpoint)",
                          path);
        size_t piece = bytes - done < ASYNC_PIECE_BYTES ? bytes - done : ASYNC_PIECE_BYTES;
        ssize_t w = pwrite(fd, p + done, piece, (off_t)(off + done));
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0)
            return FM_ERR(FM_ERR_IO,
                          "cannot write %zu bytes of %s at offset %llu in the background: %s; free "
                          "space (or raise the quota) or lower [checkpoint] keep_last, then resume",
                          piece, path, (unsigned long long)(off + done),
                          w < 0 ? strerror(errno) : "nothing written");
        done += (size_t)w;
    }
    return NULL;
}

static fm_status write_parts(fm_checkpoint_async *a)
{
    const char *path = fm_checkpoint_file_tmp_path(a->f);
    if (test_fn) FM_TRY(test_fn(test_ctx, a->rank, a->step, path));
    if (a->rank == 0 && a->reserve_bytes > 0)
        FM_TRY(fm_checkpoint_file_reserve(a->f, a->reserve_bytes));
    int fd = open(path, O_WRONLY);
    if (fd < 0)
        return FM_ERR(FM_ERR_IO,
                      "cannot open %s for the background write: %s; check the run directory's "
                      "file system and permissions, then resume",
                      path, strerror(errno));
    fm_status st = NULL;
    const float *src = a->buf;
    for (int i = 0; i < a->next && !st; i++) {
        const fm_checkpoint_extent *e = &a->ext[i];
        size_t bytes = e->count * sizeof(float);
        st = write_all(a, fd, path, (const char *)src, bytes, e->file_offset);
        if (!st) {
            a->crc_len[2 * (size_t)e->job] = fm_checkpoint_crc32_serial(src, bytes, 1);
            a->crc_len[2 * (size_t)e->job + 1] = bytes;
        }
        src += e->count;
    }
    if (!st && fdatasync(fd) != 0)
        st = FM_ERR(FM_ERR_IO,
                    "fdatasync of %s failed in the background write: %s; check the file system, "
                    "then resume",
                    path, strerror(errno));
    if (close(fd) != 0 && !st)
        st = FM_ERR(FM_ERR_IO,
                    "closing %s after the background write failed: %s; check the file system, "
                    "then resume",
                    path, strerror(errno));
    return st;
}

static void *writer_main(void *arg)
{
    fm_checkpoint_async *a = arg;
    a->thread_st = write_parts(a);
    atomic_store(&a->done, 1);
    return NULL;
}

fm_status fm_checkpoint_async_launch(fm_checkpoint_async *a, fm_checkpoint_file **f, int64_t step,
                                     int keep_last, uint64_t reserve_bytes, double stall_s)
{
    fm_checkpoint_file *file = *f;
    *f = NULL;
    fm_status st = a->state != ASYNC_STAGED || file != a->f
                       ? FM_ERR(FM_ERR_INTERNAL, "asynchronous checkpoint launched unstaged")
                       : NULL;
    if (!st) {
        a->step = step;
        a->keep_last = keep_last;
        a->reserve_bytes = reserve_bytes;
        a->stall_s = stall_s;
        atomic_store(&a->done, 0);
        atomic_store(&a->abandon, 0);
        int rc = pthread_create(&a->th, NULL, writer_main, a);
        if (rc != 0)
            st = FM_ERR(FM_ERR_INTERNAL, "cannot start the checkpoint writer thread: %s; set "
                                         "[checkpoint] async = false",
                        strerror(rc));
        else
            a->joined = 0;
    }
    st = fm_comm_agree(a->comm, st);
    if (st) {
        if (!a->joined) {
            atomic_store(&a->abandon, 1);
            pthread_join(a->th, NULL);
            a->joined = 1;
        }
        fm_checkpoint_file_abort(&file);
        reset_job(a);
        return st;
    }
    a->state = ASYNC_RUNNING;
    return NULL;
}

int fm_checkpoint_async_in_flight(const fm_checkpoint_async *a)
{
    return a && a->state == ASYNC_RUNNING;
}

int64_t fm_checkpoint_async_step(const fm_checkpoint_async *a)
{
    return a && a->state == ASYNC_RUNNING ? a->step : -1;
}

static void join(fm_checkpoint_async *a)
{
    if (a->joined) return;
    pthread_join(a->th, NULL);
    a->joined = 1;
}

fm_status fm_checkpoint_async_ready(fm_checkpoint_async *a, int *ready)
{
    *ready = 0;
    if (!fm_checkpoint_async_in_flight(a)) return NULL;
    double t0 = fm_util_now();
    int busy = !atomic_load(&a->done);
    fm_status st = NULL;
    FM_MPI_KEEP(st, MPI_Allreduce(MPI_IN_PLACE, &busy, 1, MPI_INT, MPI_MAX, a->comm));
    st = fm_comm_agree(a->comm, st);
    a->stall_s += fm_util_now() - t0;
    if (st) {
        /* MPI itself failed: nothing can be agreed or closed collectively. */
        fm_checkpoint_async_abandon(a);
        return st;
    }
    *ready = !busy;
    return NULL;
}

fm_status fm_checkpoint_async_settle(fm_checkpoint_async *a, int wait, fm_watchdog *wd,
                                     int *published, fm_checkpoint_async_result *res)
{
    *published = 0;
    if (!fm_checkpoint_async_in_flight(a)) return NULL;
    double t0 = fm_util_now(), base = a->stall_s; /* this call's time is added once, at the end */
    if (wait) join(a);
    /* Is every rank's thread done? (One all-reduce; the threads make no MPI call.) */
    int ready = 0;
    FM_TRY(fm_checkpoint_async_ready(a, &ready));
    if (!ready) return NULL;
    join(a);
    char path[4096];
    fm_util_strlcpy(path, fm_checkpoint_file_path(a->f), sizeof path);
    fm_status mine = a->thread_st;
    a->thread_st = NULL;
    fm_status st = fm_comm_agree(a->comm, mine);
    if (!st) st = fm_checkpoint_file_finish_groups(a->f, a->groups, a->ngroups, a->crc_len);
    if (st) {
        fm_status_prefix(st, "checkpoint %s not written (the previous checkpoints are intact)",
                         path);
        fm_watchdog_expect(wd, "closing the checkpoint file after an error",
                           fm_status_exit_code(st), fm_status_message(st));
        fm_checkpoint_file_abort(&a->f);
        reset_job(a);
        return st;
    }
    fm_checkpoint_write_stats ws;
    memset(&ws, 0, sizeof ws);
    st = fm_checkpoint_file_commit(&a->f, a->keep_last, &ws); /* frees the file either way */
    int64_t step = a->step;
    double stall = base + (fm_util_now() - t0);
    reset_job(a);
    if (st)
        return fm_status_prefix(st, "checkpoint %s not written (the previous checkpoints are intact)",
                                path);
    memset(res, 0, sizeof *res);
    res->step = step;
    fm_util_strlcpy(res->path, path, sizeof res->path);
    res->tensor_bytes = ws.tensor_bytes;
    res->file_bytes = ws.file_bytes;
    res->write_s = ws.seconds;
    res->stall_s = stall;
    fm_util_strlcpy(res->warning, ws.warning, sizeof res->warning);
    *published = 1;
    return NULL;
}

void fm_checkpoint_async_abandon(fm_checkpoint_async *a)
{
    if (!a || a->state == ASYNC_IDLE) return;
    if (a->state == ASYNC_RUNNING) {
        atomic_store(&a->abandon, 1);
        join(a);
    }
    /* A launched file stays open in HDF5 (closing it is collective): a->f is dropped, not freed;
     * a staged one is its caller's. */
    reset_job(a);
}

void fm_checkpoint_async_release(fm_checkpoint_async *a)
{
    if (!a || !a->buf) return;
    if (a->be && a->be->ops->host_free)
        a->be->ops->host_free(a->be, a->buf);
    else
        free(a->buf);
    a->buf = NULL;
    a->cap = 0;
    a->be = NULL;
}

void fm_checkpoint_async_free(fm_checkpoint_async **ap)
{
    fm_checkpoint_async *a = *ap;
    if (!a) return;
    fm_checkpoint_async_abandon(a);
    fm_checkpoint_async_release(a);
    free(a);
    *ap = NULL;
}

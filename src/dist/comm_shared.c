/* comm_shared.c — node-shared memory: MPI-3 shared-memory windows over the node's ranks (see
 * comm.h, "node-shared memory", for the contract). */
#include "dist/comm.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

#include "core/util.h"

/* Open MPI's windows start a few hundred bytes into a page (its segment header): each part is
 * allocated this much larger and its address rounded up to a page, which is the same place in the
 * segment in every process (mappings are page-aligned). Misaligned by 8 bytes, every tensor the
 * model views in it straddled cache lines: fp32 matmuls reading the shared weights ran 1-3 % slower
 * (bench/zero, 26 Nov 2026). */
#define SHARED_ALIGN ((size_t)4096)

struct fm_comm_shared {
    MPI_Comm comm; /* own duplicate of c->node (MPI_ERRORS_RETURN) */
    MPI_Win win;
    int per_rank;
    int nlocal;
    size_t bytes;
    void **base; /* nlocal addresses (per_rank) or one */
    int locked;  /* inside MPI_Win_lock_all */
};

int fm_comm_single_node(const fm_comm *c)
{
    return c && c->nodes == 1;
}

/* The directory Open MPI's osc/sm component puts its backing files in: its MCA parameter
 * osc_sm_backing_directory when set in the environment, else /dev/shm (its Linux default). */
static const char *backing_directory(void)
{
    const char *d = getenv("OMPI_MCA_osc_sm_backing_directory");
    return d && *d ? d : "/dev/shm";
}

/* Local rank 0's check that the backing file system has room for `need` bytes; the verdict goes to
 * every rank of the node. */
static fm_status check_room(MPI_Comm node, int local_rank, size_t need)
{
    unsigned long long v[2] = {0, 0}; /* free bytes, 1 when known */
    const char *dir = backing_directory();
    if (local_rank == 0) {
        struct statvfs sv;
        if (statvfs(dir, &sv) == 0) {
            v[0] = (unsigned long long)sv.f_bavail * (unsigned long long)sv.f_frsize;
            v[1] = 1;
        }
    }
    FM_MPI_TRY(MPI_Bcast(v, 2, MPI_UNSIGNED_LONG_LONG, 0, node));
    if (!v[1] || v[0] >= need) return NULL; /* not a directory we can look at: let MPI try */
    char a[32], b[32];
    return FM_ERR(
        FM_ERR_NOMEM,
        "node-shared memory: %s (which backs MPI's shared-memory windows) has %s free, and "
        "the ranks of this node need %s more for the gradients and weights they share; set "
        "[runtime] shared_memory = off (the ranks then exchange gradients and weights by MPI "
        "messages and each holds its own copy), or give the node a larger %s (a container's "
        "--shm-size)",
        dir, fm_util_format_bytes((double)v[0], a, sizeof a),
        fm_util_format_bytes((double)need, b, sizeof b), dir);
}

fm_status fm_comm_shared_alloc(const fm_comm *c, size_t bytes, int per_rank, fm_comm_shared **out)
{
    *out = NULL;
    if (!c || bytes > (size_t)(MPI_Aint)(~(size_t)0 >> 1))
        return FM_ERR(FM_ERR_INTERNAL, "fm_comm_shared_alloc: no context or %zu bytes", bytes);
    size_t need =
        (per_rank ? (bytes + SHARED_ALIGN) * (size_t)c->local_size : bytes + SHARED_ALIGN);
    FM_TRY(check_room(c->node, c->local_rank, need));

    fm_comm_shared *s = calloc(1, sizeof *s);
    FM_CHECK_ALLOC(s, sizeof *s);
    s->comm = MPI_COMM_NULL;
    s->win = MPI_WIN_NULL;
    s->per_rank = per_rank;
    s->nlocal = c->local_size;
    s->bytes = bytes;
    fm_status st = fm_comm_dup(c->node, &s->comm);
    if (st) goto fail;
    s->base = calloc((size_t)(per_rank ? c->local_size : 1), sizeof *s->base);
    if (!s->base) {
        st = FM_ERR(FM_ERR_NOMEM, "out of memory for %d addresses", c->local_size);
        goto fail;
    }
    MPI_Info info = MPI_INFO_NULL;
    if (per_rank) {
        /* Each rank's part starts on its own page: placed by its first touch (its NUMA domain). */
        FM_MPI_TRY_GOTO(st, fail, MPI_Info_create(&info));
        FM_MPI_KEEP(st, MPI_Info_set(info, "alloc_shared_noncontig", "true"));
    }
    size_t mine = per_rank || c->local_rank == 0 ? bytes + SHARED_ALIGN : 0;
    void *base = NULL;
    if (!st)
        FM_MPI_KEEP(st, MPI_Win_allocate_shared((MPI_Aint)mine, 1, info, s->comm, &base, &s->win));
    if (info != MPI_INFO_NULL) MPI_Info_free(&info);
    if (st) {
        st = fm_status_prefix(st, "node-shared memory: allocating %zu bytes%s: ", bytes,
                              per_rank ? " per rank" : "");
        goto fail;
    }
    FM_MPI_TRY_GOTO(st, fail, MPI_Win_set_errhandler(s->win, MPI_ERRORS_RETURN));
    for (int r = 0; r < (per_rank ? c->local_size : 1); r++) {
        MPI_Aint size = 0;
        int disp = 0;
        void *p = NULL;
        FM_MPI_TRY_GOTO(st, fail, MPI_Win_shared_query(s->win, r, &size, &disp, &p));
        uintptr_t a = ((uintptr_t)p + SHARED_ALIGN - 1) & ~(uintptr_t)(SHARED_ALIGN - 1);
        s->base[r] = size > 0 ? (void *)a : NULL;
    }
    FM_MPI_TRY_GOTO(st, fail, MPI_Win_lock_all(MPI_MODE_NOCHECK, s->win));
    s->locked = 1;
    /* Zeroed by whoever owns the pages (the first touch places them). */
    void *own = per_rank ? s->base[c->local_rank] : (c->local_rank == 0 ? s->base[0] : NULL);
    if (own && bytes) memset(own, 0, bytes);
    st = fm_comm_shared_barrier(s);
    if (st) goto fail;
    *out = s;
    return NULL;
fail:
    /* Collective clean-up: every rank of the node reaches it (the checks above agree everywhere,
     * and an MPI failure of the window calls is a failure of every rank's call). */
    fm_comm_shared_free(&s);
    return st;
}

void *fm_comm_shared_ptr(const fm_comm_shared *s, int local_rank)
{
    if (!s || local_rank < 0 || local_rank >= s->nlocal) return NULL;
    return s->per_rank ? s->base[local_rank] : s->base[0];
}

size_t fm_comm_shared_bytes(const fm_comm_shared *s)
{
    return s ? s->bytes : 0;
}

fm_status fm_comm_shared_barrier(fm_comm_shared *s)
{
    FM_MPI_TRY(MPI_Win_sync(s->win));
    FM_MPI_TRY(MPI_Barrier(s->comm));
    FM_MPI_TRY(MPI_Win_sync(s->win));
    return NULL;
}

void fm_comm_shared_free(fm_comm_shared **ps)
{
    if (!ps || !*ps) return;
    fm_comm_shared *s = *ps;
    fm_status st = NULL;
    if (s->locked) FM_MPI_KEEP(st, MPI_Win_unlock_all(s->win));
    if (s->win != MPI_WIN_NULL) FM_MPI_KEEP(st, MPI_Win_free(&s->win));
    fm_status_free(&st); /* release path: nothing left to undo */
    fm_comm_dup_free(&s->comm);
    free(s->base);
    free(s);
    *ps = NULL;
}

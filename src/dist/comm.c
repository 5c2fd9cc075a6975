/* comm.c — the MPI process context, small collectives and the bucketed gradient all-reduce
 * (see comm.h for the contract). */
#include "dist/comm.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "core/util.h"

/* Largest piece handed to one MPI call whose count is an int. */
#define FM_COMM_CHUNK_BYTES ((size_t)1 << 30)

fm_status fm_comm_mpi_status(int rc, const char *call, const char *file, int line, const char *func)
{
    if (rc == MPI_SUCCESS) return NULL;
    char text[MPI_MAX_ERROR_STRING + 1];
    int len = 0;
    if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS || len <= 0)
        snprintf(text, sizeof text, "MPI error code %d", rc);
    else
        text[len < MPI_MAX_ERROR_STRING ? len : MPI_MAX_ERROR_STRING] = '\0';
    return fm_status_new(FM_ERR_MPI, file, line, func, "%s failed: %s", call, text);
}

/* ---- communicators and error agreement -------------------------------------------------------- */

fm_status fm_comm_dup(MPI_Comm comm, MPI_Comm *out)
{
    *out = MPI_COMM_NULL;
    MPI_Comm d = MPI_COMM_NULL;
    FM_MPI_TRY(MPI_Comm_dup(comm, &d));
    fm_status st = NULL;
    FM_MPI_TRY_GOTO(st, fail, MPI_Comm_set_errhandler(d, MPI_ERRORS_RETURN));
    *out = d;
    return NULL;
fail:
    fm_comm_dup_free(&d);
    return st;
}

void fm_comm_dup_free(MPI_Comm *comm)
{
    if (!comm || *comm == MPI_COMM_NULL) return;
    fm_status st = NULL;
    FM_MPI_KEEP(st, MPI_Comm_free(comm));
    fm_status_free(&st); /* release path: nothing to report to, nothing left to undo */
    *comm = MPI_COMM_NULL;
}

/* Bytes of the failing rank's message broadcast at once: every rank receives each piece into a buffer
 * on its stack, so a rank whose malloc fails still takes part in the same broadcasts. */
#define FM_COMM_AGREE_PIECE 1024

/* Rank `first`'s message, received piece by piece from it (every rank makes the same calls); on the
 * other ranks *text is a malloc'ed copy, or NULL when that allocation failed. */
static fm_status bcast_message(MPI_Comm comm, int rank, int first, const char *msg, int len, char **text)
{
    *text = NULL;
    char *t = rank == first ? NULL : malloc((size_t)len + 1);
    char piece[FM_COMM_AGREE_PIECE];
    fm_status st = NULL;
    for (int off = 0; off < len; off += FM_COMM_AGREE_PIECE) {
        int n = len - off < FM_COMM_AGREE_PIECE ? len - off : FM_COMM_AGREE_PIECE;
        if (rank == first) memcpy(piece, msg + off, (size_t)n);
        FM_MPI_TRY_GOTO(st, fail, MPI_Bcast(piece, n, MPI_CHAR, first, comm));
        if (t) memcpy(t + off, piece, (size_t)n);
    }
    if (t) t[len] = '\0';
    *text = t;
    return NULL;
fail:
    free(t);
    return st;
}

fm_status fm_comm_agree(MPI_Comm comm, fm_status st)
{
    if (comm == MPI_COMM_NULL) return st;
    fm_status mst = NULL;
    char *text = NULL;
    int rank = 0, size = 1;
    FM_MPI_TRY_GOTO(mst, mpi_failed, MPI_Comm_rank(comm, &rank));
    FM_MPI_TRY_GOTO(mst, mpi_failed, MPI_Comm_size(comm, &size));
    int mine = st ? rank : size, first = size;
    FM_MPI_TRY_GOTO(mst, mpi_failed, MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, comm));
    if (first == size) return NULL; /* no rank failed, so st is NULL here too */

    /* The code and length, then the text, from the lowest failing rank. */
    const char *msg = rank == first ? fm_status_message(st) : "";
    size_t mlen = strlen(msg);
    int hdr[2] = {(int)fm_status_code(st), mlen < (size_t)INT_MAX ? (int)mlen : INT_MAX - 1};
    FM_MPI_TRY_GOTO(mst, mpi_failed, MPI_Bcast(hdr, 2, MPI_INT, first, comm));
    FM_TRY_GOTO(mst, mpi_failed, bcast_message(comm, rank, first, msg, hdr[1], &text));
    /* Collective in status.h's sense only when comm holds every rank of the job (main then exits
     * without MPI_Abort); agreement within a node leaves the other nodes unaware. */
    int cmp = MPI_UNEQUAL;
    FM_MPI_TRY_GOTO(mst, mpi_failed, MPI_Comm_compare(comm, MPI_COMM_WORLD, &cmp));
    int whole_job = cmp == MPI_IDENT || cmp == MPI_CONGRUENT;
    if (rank == first) return whole_job ? fm_status_collective(st) : st;

    fm_status_free(&st);
    fm_code code = hdr[0] > FM_OK && hdr[0] <= FM_ERR_STOPPED ? (fm_code)hdr[0] : FM_ERR_INTERNAL;
    const char *m = text ? text : "an error whose message this rank could not receive (out of memory)";
    fm_status out = first == 0 ? FM_ERR(code, "%s", m) : FM_ERR(code, "%s (reported by rank %d)", m, first);
    free(text);
    return whole_job ? fm_status_collective(out) : out;
mpi_failed:
    free(text);
    if (!st) return mst;
    fm_status_free(&mst);
    return fm_status_trace(st, __FILE__, __LINE__, __func__);
}

/* ---- context ---------------------------------------------------------------------------------- */

static fm_status comm_setup(fm_comm *c)
{
    FM_TRY(fm_comm_dup(MPI_COMM_WORLD, &c->world));
    FM_MPI_TRY(MPI_Comm_rank(c->world, &c->rank));
    FM_MPI_TRY(MPI_Comm_size(c->world, &c->size));
    FM_MPI_TRY(MPI_Comm_split_type(c->world, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &c->node));
    FM_MPI_TRY(MPI_Comm_set_errhandler(c->node, MPI_ERRORS_RETURN));
    FM_MPI_TRY(MPI_Comm_rank(c->node, &c->local_rank));
    FM_MPI_TRY(MPI_Comm_size(c->node, &c->local_size));

    /* Nodes are numbered in the order of their lowest world rank: the leader (local rank 0) of a node
     * has the lowest world rank of it because the split key is the world rank. */
    int leader = c->local_rank == 0;
    FM_MPI_TRY(MPI_Allreduce(&leader, &c->nodes, 1, MPI_INT, MPI_SUM, c->world));
    int before = 0;
    FM_MPI_TRY(MPI_Exscan(&leader, &before, 1, MPI_INT, MPI_SUM, c->world));
    if (c->rank == 0) before = 0; /* MPI_Exscan leaves rank 0's result undefined */
    /* Ranks that are not leaders count their own leader too, which precedes them. */
    int idx = leader ? before : before - 1;
    FM_MPI_TRY(MPI_Bcast(&idx, 1, MPI_INT, 0, c->node)); /* the leader's value is authoritative */
    c->node_index = idx;

    char name[MPI_MAX_PROCESSOR_NAME + 1];
    int len = 0;
    FM_MPI_TRY(MPI_Get_processor_name(name, &len));
    name[len < MPI_MAX_PROCESSOR_NAME ? len : MPI_MAX_PROCESSOR_NAME] = '\0';
    fm_util_strlcpy(c->host, name, sizeof c->host);
    return NULL;
}

fm_status fm_comm_init(fm_comm **out)
{
    *out = NULL;
    int inited = 0, finalized = 0;
    FM_MPI_TRY(MPI_Initialized(&inited));
    FM_MPI_TRY(MPI_Finalized(&finalized));
    if (!inited || finalized)
        return FM_ERR(FM_ERR_INTERNAL, "fm_comm_init: MPI is not initialised (or already finalised)");
    fm_comm *c = calloc(1, sizeof *c);
    FM_CHECK_ALLOC(c, sizeof *c);
    c->world = MPI_COMM_NULL;
    c->node = MPI_COMM_NULL;
    fm_status st = comm_setup(c);
    if (st) {
        fm_comm_free(&c);
        return fm_status_trace(st, __FILE__, __LINE__, __func__);
    }
    *out = c;
    return NULL;
}

void fm_comm_free(fm_comm **c)
{
    if (!c || !*c) return;
    fm_comm_dup_free(&(*c)->node);
    fm_comm_dup_free(&(*c)->world);
    free(*c);
    *c = NULL;
}

/* ---- small collectives ------------------------------------------------------------------------ */

fm_status fm_comm_bcast(const fm_comm *c, void *buf, size_t bytes)
{
    char *p = buf;
    for (size_t off = 0; off < bytes; off += FM_COMM_CHUNK_BYTES) {
        size_t n = bytes - off < FM_COMM_CHUNK_BYTES ? bytes - off : FM_COMM_CHUNK_BYTES;
        FM_MPI_TRY(MPI_Bcast(p + off, (int)n, MPI_BYTE, 0, c->world));
    }
    return NULL;
}

fm_status fm_comm_any(const fm_comm *c, int flag, int *any)
{
    int mine = flag != 0, all = 0;
    FM_MPI_TRY(MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_LOR, c->world));
    *any = all != 0;
    return NULL;
}

static fm_status reduce_doubles(const fm_comm *c, double *vals, int n, MPI_Op op)
{
    if (n < 0) return FM_ERR(FM_ERR_INTERNAL, "fm_comm: negative count %d", n);
    if (n == 0) return NULL;
    FM_MPI_TRY(MPI_Allreduce(MPI_IN_PLACE, vals, n, MPI_DOUBLE, op, c->world));
    return NULL;
}

fm_status fm_comm_sum_doubles(const fm_comm *c, double *vals, int n)
{
    FM_TRY(reduce_doubles(c, vals, n, MPI_SUM));
    return NULL;
}

fm_status fm_comm_max_doubles(const fm_comm *c, double *vals, int n)
{
    FM_TRY(reduce_doubles(c, vals, n, MPI_MAX));
    return NULL;
}

fm_status fm_comm_min_doubles(const fm_comm *c, double *vals, int n)
{
    FM_TRY(reduce_doubles(c, vals, n, MPI_MIN));
    return NULL;
}

fm_status fm_comm_gather(const fm_comm *c, const void *send, size_t bytes, void *recv)
{
    if (bytes * (size_t)c->size >= (size_t)INT_MAX)
        return FM_ERR(FM_ERR_INTERNAL, "fm_comm_gather: %zu bytes from %d ranks is too large", bytes,
                      c->size);
    FM_MPI_TRY(MPI_Gather(send, (int)bytes, MPI_BYTE, c->rank == 0 ? recv : NULL, (int)bytes, MPI_BYTE,
                          0, c->world));
    return NULL;
}

fm_status fm_comm_node_allgather(const fm_comm *c, const void *send, size_t bytes, void *recv)
{
    if (bytes * (size_t)c->local_size >= (size_t)INT_MAX)
        return FM_ERR(FM_ERR_INTERNAL, "fm_comm_node_allgather: %zu bytes from %d ranks is too large",
                      bytes, c->local_size);
    FM_MPI_TRY(MPI_Allgather(send, (int)bytes, MPI_BYTE, recv, (int)bytes, MPI_BYTE, c->node));
    return NULL;
}

fm_status fm_comm_barrier(const fm_comm *c)
{
    FM_MPI_TRY(MPI_Barrier(c->world));
    return NULL;
}

/* ---- checksum --------------------------------------------------------------------------------- */

uint64_t fm_comm_hash64(const void *data, size_t bytes)
{
    /* Four independent lanes over 8-byte little-endian words (memcpy: no alignment assumptions),
     * so the loop runs near memory speed; the tail and the length are folded in at the end. */
    const unsigned char *p = data;
    const uint64_t k = FM_RNG_GOLDEN;
    uint64_t h[4] = {k, k ^ 1, k ^ 2, k ^ 3};
    size_t i = 0;
    for (; i + 32 <= bytes; i += 32) {
        for (int l = 0; l < 4; l++) {
            uint64_t w;
            memcpy(&w, p + i + 8 * (size_t)l, 8);
            h[l] = (h[l] ^ fm_rng_mix64(w)) * k;
            h[l] = (h[l] << 31) | (h[l] >> 33);
        }
    }
    uint64_t r = (uint64_t)bytes * k;
    for (int l = 0; l < 4; l++) r = fm_rng_mix64(r ^ h[l]);
    for (; i < bytes; i++) r = fm_rng_mix64(r ^ ((uint64_t)p[i] + 0x100u * (uint64_t)(i & 31)));
    return r;
}

fm_status fm_comm_check_identical(const fm_comm *c, const void *buf, size_t bytes, const char *what)
{
    /* Two values per rank: the hash and the byte count; min and max must agree. */
    uint64_t mine[2] = {fm_comm_hash64(buf, bytes), (uint64_t)bytes};
    uint64_t lo[2], hi[2];
    FM_MPI_TRY(MPI_Allreduce(mine, lo, 2, MPI_UINT64_T, MPI_MIN, c->world));
    FM_MPI_TRY(MPI_Allreduce(mine, hi, 2, MPI_UINT64_T, MPI_MAX, c->world));
    if (lo[0] == hi[0] && lo[1] == hi[1]) return NULL;

    /* They differ: find out which ranks (every rank does the same, so the error is collective). */
    uint64_t *all = malloc(sizeof *all * 2 * (size_t)c->size);
    fm_status st = all ? NULL : FM_ERR(FM_ERR_NOMEM, "out of memory comparing %s across %d ranks", what,
                                       c->size);
    FM_TRY_GOTO(st, done, fm_comm_agree(c->world, st)); /* every rank can take part, or none does */
    FM_MPI_TRY_GOTO(st, done, MPI_Allgather(mine, 2, MPI_UINT64_T, all, 2, MPI_UINT64_T, c->world));
    char list[512];
    size_t used = 0;
    int ndiff = 0, shown = 0;
    list[0] = '\0';
    for (int r = 1; r < c->size; r++) {
        if (all[2 * r] == all[0] && all[2 * r + 1] == all[1]) continue;
        ndiff++;
        if (shown < 16 && used < sizeof list - 32) {
            int n = snprintf(list + used, sizeof list - used, "%s%d", shown ? ", " : "", r);
            if (n > 0) used += (size_t)n;
            shown++;
        }
    }
    if (ndiff > shown && used < sizeof list - 16) snprintf(list + used, sizeof list - used, ", ...");
    if (lo[1] != hi[1])
        st = FM_ERR(FM_ERR_INTERNAL,
                    "%s differ across ranks: %d rank%s (%s) hold a different number of bytes than "
                    "rank 0 (%llu bytes on rank 0)",
                    what, ndiff, ndiff == 1 ? "" : "s", list, (unsigned long long)all[1]);
    else
        st = FM_ERR(FM_ERR_INTERNAL,
                    "%s differ across ranks: the checksum of %llu bytes on %d rank%s (%s) differs from "
                    "rank 0's (%016llx); every rank must start from identical %s",
                    what, (unsigned long long)all[1], ndiff, ndiff == 1 ? "" : "s", list,
                    (unsigned long long)all[0], what);
    st = fm_status_collective(st);
done:
    free(all);
    return st;
}

/* ---- bucketed all-reduce ------------------------------------------------------------------------ */

typedef struct bucket {
    size_t offset, count; /* elements of the gradient buffer */
    int scaled;           /* already multiplied by 1/size */
} bucket;

struct fm_comm_allreduce {
    const fm_comm *comm;
    float *grads;
    size_t count;
    size_t max_elems; /* longest bucket (elements), <= INT_MAX */
    size_t min_elems; /* shorter ranges wait to be merged */
    float scale;      /* 1/size */

    /* The current step. */
    bucket *buckets;        /* started buckets, in start order */
    MPI_Request *requests;  /* one per bucket; MPI_REQUEST_NULL once complete */
    int *done;              /* scratch for MPI_Testsome indices */
    int nbuckets, cap;
    int early;              /* buckets started by fm_comm_allreduce_ready */
    size_t pend_off, pend_count; /* reported but held back for merging (pend_count 0: none) */
    fm_status err;          /* the first error of the step */
    fm_comm_allreduce_stats last;
};

static void scale_range(fm_comm_allreduce *ar, bucket *b)
{
    if (b->scaled) return;
    b->scaled = 1;
    if (ar->comm->size == 1) return;
    float s = ar->scale;
    float *g = ar->grads + b->offset;
    for (size_t i = 0; i < b->count; i++) g[i] *= s;
}

static fm_status grow(fm_comm_allreduce *ar)
{
    if (ar->nbuckets < ar->cap) return NULL;
    int cap = ar->cap ? 2 * ar->cap : 64;
    bucket *b = realloc(ar->buckets, sizeof *b * (size_t)cap);
    if (b) ar->buckets = b;
    MPI_Request *r = realloc(ar->requests, sizeof *r * (size_t)cap);
    if (r) ar->requests = r;
    int *d = realloc(ar->done, sizeof *d * (size_t)cap);
    if (d) ar->done = d;
    if (!b || !r || !d) return FM_ERR(FM_ERR_NOMEM, "out of memory for %d all-reduce buckets", cap);
    ar->cap = cap;
    return NULL;
}

/* Starts one bucket of at most max_elems elements. */
static fm_status start_one(fm_comm_allreduce *ar, size_t off, size_t n, int early)
{
    FM_TRY(grow(ar));
    int i = ar->nbuckets++;
    ar->buckets[i] = (bucket){off, n, 0};
    ar->requests[i] = MPI_REQUEST_NULL;
    if (early) ar->early++;
    if (ar->comm->size > 1)
        FM_MPI_TRY(MPI_Iallreduce(MPI_IN_PLACE, ar->grads + off, (int)n, MPI_FLOAT, MPI_SUM,
                                  ar->comm->world, &ar->requests[i]));
    return NULL;
}

/* Starts a range, split into equal pieces when longer than max_elems. */
static fm_status start_range(fm_comm_allreduce *ar, size_t off, size_t n, int early)
{
    if (n == 0) return NULL;
    size_t pieces = (n + ar->max_elems - 1) / ar->max_elems;
    size_t base = n / pieces, extra = n % pieces;
    for (size_t p = 0; p < pieces; p++) {
        size_t len = base + (p < extra ? 1 : 0);
        FM_TRY(start_one(ar, off, len, early));
        off += len;
    }
    return NULL;
}

static fm_status flush_pending(fm_comm_allreduce *ar, int early)
{
    if (ar->pend_count == 0) return NULL;
    size_t off = ar->pend_off, n = ar->pend_count;
    ar->pend_count = 0;
    FM_TRY(start_range(ar, off, n, early));
    return NULL;
}

/* Completes what has finished (MPI_Testsome also drives Open MPI's progress engine) and scales the
 * completed buckets while the others are still in flight. */
static fm_status progress(fm_comm_allreduce *ar)
{
    if (ar->comm->size == 1 || ar->nbuckets == 0) return NULL;
    int outcount = 0;
    FM_MPI_TRY(MPI_Testsome(ar->nbuckets, ar->requests, &outcount, ar->done, MPI_STATUSES_IGNORE));
    if (outcount == MPI_UNDEFINED) return NULL;
    for (int k = 0; k < outcount; k++) scale_range(ar, &ar->buckets[ar->done[k]]);
    return NULL;
}

static int overlaps(size_t a, size_t an, size_t b, size_t bn)
{
    return a < b + bn && b < a + an;
}

static fm_status ready(fm_comm_allreduce *ar, size_t offset, size_t count)
{
    if (count == 0) return NULL;
    if (offset > ar->count || count > ar->count - offset)
        return FM_ERR(FM_ERR_INTERNAL,
                      "all-reduce: range [%zu, %zu) reported ready is outside the gradient buffer of "
                      "%zu elements",
                      offset, offset + count, ar->count);
    if (ar->pend_count && overlaps(offset, count, ar->pend_off, ar->pend_count))
        return FM_ERR(FM_ERR_INTERNAL, "all-reduce: range [%zu, %zu) was reported ready twice in one step",
                      offset, offset + count);
    for (int i = 0; i < ar->nbuckets; i++)
        if (overlaps(offset, count, ar->buckets[i].offset, ar->buckets[i].count))
            return FM_ERR(FM_ERR_INTERNAL,
                          "all-reduce: range [%zu, %zu) was reported ready twice in one step",
                          offset, offset + count);

    if (count >= ar->max_elems) {
        /* A large range goes out on its own (split); what was held back goes first. */
        FM_TRY(flush_pending(ar, 1));
        FM_TRY(start_range(ar, offset, count, 1));
    } else if (ar->pend_count && ar->pend_count + count <= ar->max_elems &&
               (offset + count == ar->pend_off || ar->pend_off + ar->pend_count == offset)) {
        /* Adjacent to the held-back range (either direction): merge. */
        if (offset < ar->pend_off) ar->pend_off = offset;
        ar->pend_count += count;
    } else {
        FM_TRY(flush_pending(ar, 1));
        ar->pend_off = offset;
        ar->pend_count = count;
    }
    if (ar->pend_count >= ar->min_elems) FM_TRY(flush_pending(ar, 1));
    FM_TRY(progress(ar));
    return NULL;
}

void fm_comm_allreduce_ready(void *ctx, size_t offset, size_t count)
{
    fm_comm_allreduce *ar = ctx;
    if (!ar || ar->err) return;
    ar->err = ready(ar, offset, count);
}

static int cmp_bucket(const void *a, const void *b)
{
    const bucket *x = a, *y = b;
    return (x->offset > y->offset) - (x->offset < y->offset);
}

/* Starts every part of [0, count) that no bucket covers, in ascending order. */
static fm_status start_gaps(fm_comm_allreduce *ar)
{
    int n = ar->nbuckets;
    if (n == 0) {
        FM_TRY(start_range(ar, 0, ar->count, 0));
        return NULL;
    }
    bucket *sorted = malloc(sizeof *sorted * (size_t)n);
    FM_CHECK_ALLOC(sorted, sizeof *sorted * (size_t)n);
    memcpy(sorted, ar->buckets, sizeof *sorted * (size_t)n);
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_bucket);
    fm_status st = NULL;
    size_t pos = 0;
    for (int i = 0; i <= n && !st; i++) {
        size_t end = i < n ? sorted[i].offset : ar->count;
        if (end > pos) st = start_range(ar, pos, end - pos, 0);
        if (i < n) pos = sorted[i].offset + sorted[i].count;
    }
    free(sorted);
    return st;
}

/* Waits for every request in flight (used on the error path and by free): a failure is not reported,
 * the step has already failed or the engine is being released. */
static void drain(fm_comm_allreduce *ar)
{
    if (ar->comm->size <= 1 || ar->nbuckets == 0) return;
    fm_status st = NULL;
    FM_MPI_KEEP(st, MPI_Waitall(ar->nbuckets, ar->requests, MPI_STATUSES_IGNORE));
    fm_status_free(&st);
}

static void reset_step(fm_comm_allreduce *ar)
{
    ar->nbuckets = 0;
    ar->early = 0;
    ar->pend_count = 0;
}

fm_status fm_comm_allreduce_wait_all(fm_comm_allreduce *ar)
{
    double t0 = fm_util_now();
    fm_status st = ar->err;
    ar->err = NULL;
    if (!st) st = flush_pending(ar, 0);
    if (!st) st = start_gaps(ar);
    if (!st && ar->comm->size > 1)
        FM_MPI_KEEP(st, MPI_Waitall(ar->nbuckets, ar->requests, MPI_STATUSES_IGNORE));
    if (st) {
        drain(ar);
        reset_step(ar);
        return fm_status_trace(st, __FILE__, __LINE__, __func__);
    }
    for (int i = 0; i < ar->nbuckets; i++) scale_range(ar, &ar->buckets[i]);
    ar->last.buckets = ar->nbuckets;
    ar->last.early_buckets = ar->early;
    ar->last.bytes = ar->count * sizeof(float);
    ar->last.wait_s = fm_util_now() - t0;
    reset_step(ar);
    return NULL;
}

fm_comm_allreduce_stats fm_comm_allreduce_last_stats(const fm_comm_allreduce *ar)
{
    return ar->last;
}

fm_status fm_comm_allreduce_init(fm_comm_allreduce **out, const fm_comm *c, float *grads,
                                 size_t count, size_t max_bucket_bytes, size_t min_bucket_bytes)
{
    *out = NULL;
    if (!c || (!grads && count > 0))
        return FM_ERR(FM_ERR_INTERNAL, "fm_comm_allreduce_init: no communicator or no buffer");
    if (max_bucket_bytes == 0) max_bucket_bytes = FM_COMM_BUCKET_MAX_DEFAULT;
    if (min_bucket_bytes == 0) min_bucket_bytes = FM_COMM_BUCKET_MIN_DEFAULT;
    size_t max_elems = max_bucket_bytes / sizeof(float);
    if (max_elems == 0) max_elems = 1;
    if (max_elems > (size_t)INT_MAX) max_elems = (size_t)INT_MAX;
    size_t min_elems = (min_bucket_bytes + sizeof(float) - 1) / sizeof(float);
    if (min_elems == 0) min_elems = 1;
    if (min_elems > max_elems) min_elems = max_elems;

    fm_comm_allreduce *ar = calloc(1, sizeof *ar);
    FM_CHECK_ALLOC(ar, sizeof *ar);
    ar->comm = c;
    ar->grads = grads;
    ar->count = count;
    ar->max_elems = max_elems;
    ar->min_elems = min_elems;
    ar->scale = (float)(1.0 / (double)c->size);
    *out = ar;
    return NULL;
}

void fm_comm_allreduce_free(fm_comm_allreduce **ar)
{
    if (!ar || !*ar) return;
    drain(*ar);
    fm_status_free(&(*ar)->err);
    free((*ar)->buckets);
    free((*ar)->requests);
    free((*ar)->done);
    free(*ar);
    *ar = NULL;
}

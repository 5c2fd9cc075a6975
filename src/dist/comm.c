/* comm.c — the MPI process context, small collectives and the bucketed gradient all-reduce
 * (see comm.h for the contract). */
#include "dist/comm.h"

#include <limits.h>
#include <sched.h>
#include <stdatomic.h>
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
    int scaled;           /* already multiplied by 1/size (all-reduce mode) */
} bucket;

/* Ordered modes (fixed reduction order): one segment of a bucket, the part of it in one rank's (the
 * owner's) shard, at most seg_elems long, reduced along a chain (see comm.h): the rank after the
 * owner sends its contribution, every following rank adds its own to what it received and passes
 * it on, the owner adds its own last and scales. In ordered all-reduce mode the owner's result
 * then travels the same way round (owner -> owner+1 -> ... -> owner-1), each rank receiving it
 * into its buffer once its own contribution has left. Roles of this rank in the chain: */
enum { RS_START, RS_MID, RS_OWNER };
/* Where a segment stands on this rank: at most one request in flight per segment. */
enum {
    RS_WAIT_SLOT, /* MID, OWNER: waiting for a scratch slot to receive the partial sum into */
    RS_RECV,      /* MID, OWNER: receiving the partial sum */
    RS_SEND,      /* START: sending its contribution; MID: passing the partial sum on */
    RS_RES_SEND,  /* OWNER (all-reduce): sending the result to the next rank */
    RS_RES_RECV,  /* START, MID (all-reduce): receiving the result into the buffer */
    RS_RES_FWD,   /* START, MID (all-reduce): passing the result on (not the owner's last) */
    RS_DONE
};

typedef struct rs_seg {
    size_t offset, count; /* elements of the gradient buffer */
    int owner, role, state;
    int pos;              /* this rank's place in the chain owner+1, ..., owner: 0 .. size-1 */
    int slot;             /* scratch slot holding the partial sum (RS_MID, RS_OWNER), or -1 */
} rs_seg;

struct fm_comm_allreduce {
    const fm_comm *comm;
    float *grads;
    size_t count;
    size_t max_elems; /* longest bucket (elements), <= INT_MAX */
    size_t min_elems; /* shorter ranges wait to be merged */
    float scale;      /* 1/size */
    int ordered;      /* 1: fmtrain's fixed reduction order (the chains below), 0: MPI_Iallreduce */
    int scatter;      /* ordered: 1 reduce-scatter (the shard only), 0 all-reduce (everything) */

    /* The current step. */
    bucket *buckets;        /* started buckets, in start order */
    MPI_Request *requests;  /* one per bucket (all-reduce mode); MPI_REQUEST_NULL once complete */
    int *done;              /* scratch for MPI_Testsome indices */
    int nbuckets, cap;
    int early;              /* buckets started by fm_comm_allreduce_ready */
    size_t pend_off, pend_count; /* reported but held back for merging (pend_count 0: none) */
    fm_status err;          /* the first error of the step */
    fm_comm_allreduce_stats last;

    /* Ordered modes. */
    MPI_Comm rs_comm;       /* own duplicate of the world (MPI_ERRORS_RETURN): tags are segments
                               (2i: partial sums, 2i+1: results) */
    size_t *bounds;         /* (size+1): rank r keeps [bounds[r], bounds[r+1]) */
    size_t seg_elems;       /* longest segment */
    int tag_ub;
    float *scratch;         /* nslots x seg_elems: partial sums received */
    int nslots, nfree;
    int *free_slots;        /* stack of free slot indices */
    rs_seg *segs;           /* this step's segments, in start order (the same on every rank) */
    MPI_Request *seg_req;   /* one per segment: its receive or send in flight, or MPI_REQUEST_NULL */
    int *seg_done;          /* scratch for MPI_Testsome indices */
    int nsegs, seg_cap;
    int next_post;          /* segments before it have their receive posted (or need none) */
    int pending;            /* segments not RS_DONE */

    /* Shared-memory modes (fm_comm_*_init_shared): no messages, see the section below. */
    fm_comm_shared *shm;        /* the gradients, a part per rank (the caller's) */
    fm_comm_shared *ctr;        /* per rank: its published counters (the engine's) */
    float **peer;               /* (size) every rank's gradient buffer, mapped in this process */
    _Atomic uint64_t **started; /* (size) buckets each rank has started, over all steps */
    _Atomic uint64_t **reduced; /* (size) buckets whose shard part each rank has reduced */
    uint64_t done_before;       /* buckets of the completed steps (the same on every rank) */
    int next_red;               /* this step's buckets before it: this rank's shard part reduced */
    int next_copy; /* all-reduce: buckets before it: the other shards' results copied in */
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

static fm_status rs_add_bucket(fm_comm_allreduce *ar, size_t off, size_t n);

/* Starts one bucket of at most max_elems elements. */
static fm_status start_one(fm_comm_allreduce *ar, size_t off, size_t n, int early)
{
    FM_TRY(grow(ar));
    int i = ar->nbuckets++;
    ar->buckets[i] = (bucket){off, n, 0};
    ar->requests[i] = MPI_REQUEST_NULL;
    if (early) ar->early++;
    if (ar->comm->size > 1 && ar->shm)
        atomic_store_explicit(ar->started[ar->comm->rank], ar->done_before + (uint64_t)ar->nbuckets,
                              memory_order_release);
    else if (ar->comm->size > 1 && ar->ordered)
        FM_TRY(rs_add_bucket(ar, off, n));
    else if (ar->comm->size > 1)
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

static fm_status rs_progress(fm_comm_allreduce *ar, int block);
static void shm_progress(fm_comm_allreduce *ar, int block);

/* Completes what has finished (MPI_Testsome also drives Open MPI's progress engine) and scales the
 * completed buckets while the others are still in flight; in the ordered modes it moves the
 * chains on. */
static fm_status progress(fm_comm_allreduce *ar)
{
    if (ar->comm->size == 1) return NULL;
    if (ar->shm) {
        shm_progress(ar, 0);
        return NULL;
    }
    if (ar->ordered) return rs_progress(ar, 0);
    if (ar->nbuckets == 0) return NULL;
    int outcount = 0;
    FM_MPI_TRY(MPI_Testsome(ar->nbuckets, ar->requests, &outcount, ar->done, MPI_STATUSES_IGNORE));
    if (outcount == MPI_UNDEFINED) return NULL;
    for (int k = 0; k < outcount; k++) scale_range(ar, &ar->buckets[ar->done[k]]);
    return NULL;
}

/* ---- the ordered modes: fixed-order chains ------------------------------------------------------ */

static fm_status rs_grow(fm_comm_allreduce *ar)
{
    if (ar->nsegs < ar->seg_cap) return NULL;
    int cap = ar->seg_cap ? 2 * ar->seg_cap : 256;
    rs_seg *s = realloc(ar->segs, sizeof *s * (size_t)cap);
    if (s) ar->segs = s;
    MPI_Request *r = realloc(ar->seg_req, sizeof *r * (size_t)cap);
    if (r) ar->seg_req = r;
    int *d = realloc(ar->seg_done, sizeof *d * (size_t)cap);
    if (d) ar->seg_done = d;
    if (!s || !r || !d)
        return FM_ERR(FM_ERR_NOMEM, "out of memory for %d reduce-scatter segments", cap);
    ar->seg_cap = cap;
    return NULL;
}

/* Tags: 2i for segment i's partial sums, 2i+1 for its result; MPI_TAG_UB is at least 32767 (Open
 * MPI's is 2^31-1), and a step would need 16384 segments (64 GiB of gradients) to wrap. */
static int rs_tag(const fm_comm_allreduce *ar, int seg, int result)
{
    return (int)((2 * (int64_t)seg + result) % ((int64_t)ar->tag_ub + 1));
}

/* The part of [off, off+n) in rank q's shard: [*lo, *hi), empty when *hi <= *lo. */
static void shard_part(const fm_comm_allreduce *ar, size_t off, size_t n, int q, size_t *lo,
                       size_t *hi)
{
    *lo = off > ar->bounds[q] ? off : ar->bounds[q];
    *hi = off + n < ar->bounds[q + 1] ? off + n : ar->bounds[q + 1];
}

/* Adds the segments of bucket [off, off+n): its part in each rank's shard, cut into pieces of at
 * most seg_elems, in rank order. The first rank of each chain sends at once; the others wait for a
 * scratch slot (rs_post). */
static fm_status rs_add_bucket(fm_comm_allreduce *ar, size_t off, size_t n)
{
    const int N = ar->comm->size, me = ar->comm->rank;
    for (int q = 0; q < N; q++) {
        size_t a = 0, b = 0;
        shard_part(ar, off, n, q, &a, &b);
        for (; a < b; a += ar->seg_elems) {
            FM_TRY(rs_grow(ar));
            int i = ar->nsegs++;
            rs_seg *sg = &ar->segs[i];
            sg->offset = a;
            sg->count = b - a < ar->seg_elems ? b - a : ar->seg_elems;
            sg->owner = q;
            int k = ((me - q - 1) % N + N) % N; /* this rank's place in the chain q+1, ..., q */
            sg->pos = k;
            sg->role = k == N - 1 ? RS_OWNER : k == 0 ? RS_START : RS_MID;
            sg->slot = -1;
            ar->seg_req[i] = MPI_REQUEST_NULL;
            ar->pending++;
            if (sg->role == RS_START) {
                sg->state = RS_SEND;
                FM_MPI_TRY(MPI_Isend(ar->grads + sg->offset, (int)sg->count, MPI_FLOAT, (me + 1) % N,
                                     rs_tag(ar, i, 0), ar->rs_comm, &ar->seg_req[i]));
            } else {
                sg->state = RS_WAIT_SLOT;
            }
        }
    }
    return NULL;
}

/* Posts the receives of waiting segments, strictly in segment order, while scratch slots are free
 * (the order is what keeps the bounded scratch free of deadlock: the oldest unfinished segment
 * always gets its slot on every rank of its chain). */
static fm_status rs_post(fm_comm_allreduce *ar)
{
    const int N = ar->comm->size, me = ar->comm->rank;
    while (ar->next_post < ar->nsegs) {
        int i = ar->next_post;
        rs_seg *sg = &ar->segs[i];
        if (sg->state == RS_WAIT_SLOT) {
            if (ar->nfree == 0) break;
            sg->slot = ar->free_slots[--ar->nfree];
            sg->state = RS_RECV;
            FM_MPI_TRY(MPI_Irecv(ar->scratch + (size_t)sg->slot * ar->seg_elems, (int)sg->count,
                                 MPI_FLOAT, (me - 1 + N) % N, rs_tag(ar, i, 0), ar->rs_comm,
                                 &ar->seg_req[i]));
        }
        ar->next_post++;
    }
    return NULL;
}

static void rs_done(fm_comm_allreduce *ar, rs_seg *sg)
{
    sg->state = RS_DONE;
    ar->pending--;
}

static void rs_free_slot(fm_comm_allreduce *ar, rs_seg *sg)
{
    ar->free_slots[ar->nfree++] = sg->slot;
    sg->slot = -1;
}

/* This rank's contribution to segment i has left its buffer: in all-reduce mode the buffer now
 * waits for the result (from the previous rank), otherwise the segment is done here. */
static fm_status rs_await_result(fm_comm_allreduce *ar, int i)
{
    const int N = ar->comm->size, me = ar->comm->rank;
    rs_seg *sg = &ar->segs[i];
    if (ar->scatter) {
        rs_done(ar, sg);
        return NULL;
    }
    sg->state = RS_RES_RECV;
    FM_MPI_TRY(MPI_Irecv(ar->grads + sg->offset, (int)sg->count, MPI_FLOAT, (me - 1 + N) % N,
                         rs_tag(ar, i, 1), ar->rs_comm, &ar->seg_req[i]));
    return NULL;
}

/* Segment i's request completed: the next move of its chain on this rank. */
static fm_status rs_advance(fm_comm_allreduce *ar, int i)
{
    const int N = ar->comm->size, me = ar->comm->rank;
    rs_seg *sg = &ar->segs[i];
    float *g = ar->grads + sg->offset;
    const size_t n = sg->count;
    switch (sg->state) {
    case RS_SEND:
        if (sg->role == RS_MID) rs_free_slot(ar, sg); /* the forwarded partial sum has left */
        return rs_await_result(ar, i);
    case RS_RECV: {
        /* The partial sum of the ranks before this one in the chain arrived. */
        float *part = ar->scratch + (size_t)sg->slot * ar->seg_elems;
        if (sg->role == RS_OWNER) {
            const float sc = ar->scale;
            for (size_t j = 0; j < n; j++) g[j] = (part[j] + g[j]) * sc;
            rs_free_slot(ar, sg);
            if (ar->scatter) {
                rs_done(ar, sg);
                return NULL;
            }
            sg->state = RS_RES_SEND;
            FM_MPI_TRY(MPI_Isend(g, (int)n, MPI_FLOAT, (me + 1) % N, rs_tag(ar, i, 1), ar->rs_comm,
                                 &ar->seg_req[i]));
            return NULL;
        }
        for (size_t j = 0; j < n; j++) part[j] = part[j] + g[j];
        sg->state = RS_SEND;
        FM_MPI_TRY(MPI_Isend(part, (int)n, MPI_FLOAT, (me + 1) % N, rs_tag(ar, i, 0), ar->rs_comm,
                             &ar->seg_req[i]));
        return NULL;
    }
    case RS_RES_RECV:
        /* The result arrived; pass it on unless the next rank is the owner. */
        if (sg->pos == N - 2) {
            rs_done(ar, sg);
            return NULL;
        }
        sg->state = RS_RES_FWD;
        FM_MPI_TRY(MPI_Isend(g, (int)n, MPI_FLOAT, (me + 1) % N, rs_tag(ar, i, 1), ar->rs_comm,
                             &ar->seg_req[i]));
        return NULL;
    case RS_RES_SEND:
    case RS_RES_FWD:
        rs_done(ar, sg);
        return NULL;
    default:
        return FM_ERR(FM_ERR_INTERNAL, "reduction chain: segment %d completed a request in state %d",
                      i, sg->state);
    }
}

/* Completes what has finished and moves the chains on; with block, waits until every segment of
 * the step is done. */
static fm_status rs_progress(fm_comm_allreduce *ar, int block)
{
    FM_TRY(rs_post(ar));
    while (ar->pending > 0) {
        int outcount = 0;
        if (block)
            FM_MPI_TRY(MPI_Waitsome(ar->nsegs, ar->seg_req, &outcount, ar->seg_done,
                                    MPI_STATUSES_IGNORE));
        else
            FM_MPI_TRY(MPI_Testsome(ar->nsegs, ar->seg_req, &outcount, ar->seg_done,
                                    MPI_STATUSES_IGNORE));
        if (outcount == MPI_UNDEFINED) {
            if (block)
                return FM_ERR(FM_ERR_INTERNAL, "reduction chain: %d segments pending with no "
                              "request in flight", ar->pending);
            break;
        }
        for (int k = 0; k < outcount; k++) FM_TRY(rs_advance(ar, ar->seg_done[k]));
        FM_TRY(rs_post(ar));
        if (!block && outcount == 0) break;
    }
    return NULL;
}

/* ---- the shared-memory modes: the same order, no messages --------------------------------------

 * Every rank's gradient buffer is mapped in every process of the node (ar->peer). A rank publishes
 * in its `started` counter how many buckets it has started in all (buckets start in the same order
 * everywhere, and only once final); the owner of a shard adds the part of bucket i in its shard as
 * soon as every rank's counter passed i, reading the others' values where they lie, in the chain's
 * order (so the bits are the message modes'), then publishes `reduced`. In all-reduce mode a rank
 * copies bucket i's part in another rank's shard from that owner's buffer once the owner's
 * `reduced` passed i: the owner has then also finished reading this rank's values there, which the
 * copy overwrites. Counters are C11 atomics in the node-shared window: a release store after the
 * writes, an acquire load before the reads. */

/* Floats added per pass over the other ranks in the general (3 or more ranks) case. */
#define SHM_BLOCK 2048

static int shm_all_passed(fm_comm_allreduce *ar, _Atomic uint64_t **ctr, uint64_t want, int skip)
{
    for (int r = 0; r < ar->comm->size; r++)
        if (r != skip && atomic_load_explicit(ctr[r], memory_order_acquire) < want) return 0;
    return 1;
}

/* This rank's shard part of bucket i: ((g_{q+1} + g_{q+2}) + ... + g_{q-1}) + g_q, times 1/size. */
static void shm_reduce(fm_comm_allreduce *ar, int i)
{
    const int N = ar->comm->size, me = ar->comm->rank;
    const bucket *b = &ar->buckets[i];
    size_t lo = 0, hi = 0;
    shard_part(ar, b->offset, b->count, me, &lo, &hi);
    const float sc = ar->scale;
    float *own = ar->grads;
    if (N == 2) {
        const float *p = ar->peer[(me + 1) % N];
        for (size_t j = lo; j < hi; j++) own[j] = (p[j] + own[j]) * sc;
        return;
    }
    float part[SHM_BLOCK];
    for (size_t a = lo; a < hi; a += SHM_BLOCK) {
        size_t n = hi - a < SHM_BLOCK ? hi - a : SHM_BLOCK;
        memcpy(part, ar->peer[(me + 1) % N] + a, n * sizeof(float));
        for (int k = 2; k < N; k++) {
            const float *p = ar->peer[(me + k) % N] + a;
            for (size_t j = 0; j < n; j++) part[j] = part[j] + p[j];
        }
        for (size_t j = 0; j < n; j++) own[a + j] = (part[j] + own[a + j]) * sc;
    }
}

/* All-reduce mode: bucket i's parts in the other ranks' shards, from their owners; 0 when an owner
 * has not reduced it yet (nothing copied then: the parts already copied are copied again later,
 * the same bytes). */
static int shm_copy(fm_comm_allreduce *ar, int i, int block)
{
    const int N = ar->comm->size, me = ar->comm->rank;
    const bucket *b = &ar->buckets[i];
    const uint64_t want = ar->done_before + (uint64_t)i + 1;
    size_t lo = 0, hi = 0;
    for (int q = 0; q < N; q++) {
        shard_part(ar, b->offset, b->count, q, &lo, &hi);
        if (q == me || hi <= lo) continue;
        while (atomic_load_explicit(ar->reduced[q], memory_order_acquire) < want) {
            if (!block) return 0;
            sched_yield();
        }
    }
    for (int q = 0; q < N; q++) {
        shard_part(ar, b->offset, b->count, q, &lo, &hi);
        if (q != me && hi > lo) memcpy(ar->grads + lo, ar->peer[q] + lo, (hi - lo) * sizeof(float));
    }
    return 1;
}

/* Reduces and (all-reduce mode) copies every started bucket whose inputs are there; with block,
 * waits until all of them are done. */
static void shm_progress(fm_comm_allreduce *ar, int block)
{
    const int me = ar->comm->rank;
    while (ar->next_red < ar->nbuckets) {
        uint64_t want = ar->done_before + (uint64_t)ar->next_red + 1;
        if (!shm_all_passed(ar, ar->started, want, me)) {
            if (!block) break;
            sched_yield();
            continue;
        }
        shm_reduce(ar, ar->next_red);
        ar->next_red++;
        atomic_store_explicit(ar->reduced[me], ar->done_before + (uint64_t)ar->next_red,
                              memory_order_release);
    }
    while (!ar->scatter && ar->next_copy < ar->nbuckets && shm_copy(ar, ar->next_copy, block))
        ar->next_copy++;
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
 * the step has already failed or the engine is being released. A reduce-scatter chain broken by an
 * error on another rank may leave receives that can never match: they are cancelled. */
static void drain(fm_comm_allreduce *ar)
{
    if (ar->comm->size <= 1) return;
    fm_status st = NULL;
    if (ar->nbuckets > 0 && !ar->ordered)
        FM_MPI_KEEP(st, MPI_Waitall(ar->nbuckets, ar->requests, MPI_STATUSES_IGNORE));
    for (int i = 0; ar->ordered && i < ar->nsegs; i++) {
        if (ar->seg_req[i] == MPI_REQUEST_NULL) continue;
        if (ar->segs[i].state == RS_RECV || ar->segs[i].state == RS_RES_RECV)
            FM_MPI_KEEP(st, MPI_Cancel(&ar->seg_req[i]));
        FM_MPI_KEEP(st, MPI_Wait(&ar->seg_req[i], MPI_STATUS_IGNORE));
    }
    fm_status_free(&st);
}

static void reset_step(fm_comm_allreduce *ar)
{
    ar->nbuckets = 0;
    ar->early = 0;
    ar->pend_count = 0;
    ar->nsegs = 0;
    ar->next_post = 0;
    ar->pending = 0;
    ar->next_red = 0;
    ar->next_copy = 0;
    ar->nfree = ar->nslots;
    for (int k = 0; k < ar->nslots; k++) ar->free_slots[k] = k;
}

fm_status fm_comm_allreduce_wait_all(fm_comm_allreduce *ar)
{
    double t0 = fm_util_now();
    fm_status st = ar->err;
    ar->err = NULL;
    if (!st) st = flush_pending(ar, 0);
    if (!st) st = start_gaps(ar);
    if (!st && ar->comm->size > 1 && ar->shm) {
        shm_progress(ar, 1);
        /* No rank reads this rank's buffer after this (the caller may write it). */
        st = fm_comm_shared_barrier(ar->shm);
        ar->done_before += (uint64_t)ar->nbuckets;
    } else if (!st && ar->comm->size > 1 && ar->ordered)
        st = rs_progress(ar, 1);
    else if (!st && ar->comm->size > 1)
        FM_MPI_KEEP(st, MPI_Waitall(ar->nbuckets, ar->requests, MPI_STATUSES_IGNORE));
    if (st) {
        drain(ar);
        reset_step(ar);
        return fm_status_trace(st, __FILE__, __LINE__, __func__);
    }
    if (!ar->ordered)
        for (int i = 0; i < ar->nbuckets; i++) scale_range(ar, &ar->buckets[i]);
    ar->last.buckets = ar->nbuckets;
    ar->last.early_buckets = ar->early;
    ar->last.segments = ar->nsegs;
    ar->last.bytes = ar->count * sizeof(float);
    ar->last.wait_s = fm_util_now() - t0;
    reset_step(ar);
    return NULL;
}

fm_comm_allreduce_stats fm_comm_allreduce_last_stats(const fm_comm_allreduce *ar)
{
    return ar->last;
}

/* The fields both modes share. */
static fm_status engine_new(fm_comm_allreduce **out, const fm_comm *c, float *grads, size_t count,
                            size_t max_bucket_bytes, size_t min_bucket_bytes)
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
    ar->rs_comm = MPI_COMM_NULL;
    *out = ar;
    return NULL;
}

fm_status fm_comm_allreduce_init(fm_comm_allreduce **out, const fm_comm *c, float *grads,
                                 size_t count, size_t max_bucket_bytes, size_t min_bucket_bytes)
{
    FM_TRY(engine_new(out, c, grads, count, max_bucket_bytes, min_bucket_bytes));
    return NULL;
}

fm_status fm_comm_check_bounds(const fm_comm *c, const size_t *bounds, size_t count)
{
    if (!bounds) return FM_ERR(FM_ERR_INTERNAL, "fm_comm: no shard bounds");
    if (bounds[0] != 0 || bounds[c->size] != count)
        return FM_ERR(FM_ERR_INTERNAL, "fm_comm: shard bounds run from %zu to %zu, expected 0 to %zu",
                      bounds[0], bounds[c->size], count);
    for (int r = 0; r < c->size; r++)
        if (bounds[r + 1] < bounds[r])
            return FM_ERR(FM_ERR_INTERNAL, "fm_comm: shard bound %d (%zu) is below bound %d (%zu)",
                          r + 1, bounds[r + 1], r, bounds[r]);
    return NULL;
}

/* The reduce-scatter's segment length and scratch slots for a buffer of `count` floats over `size`
 * ranks: segments of FM_COMM_RS_SEGMENT_BYTES (at most a bucket, at most the buffer); as many slots
 * as scratch_bytes holds, at least one, and no more than the buffer's segments plus one per rank
 * (a small model needs no more). */
static void rs_plan(size_t count, int size, size_t max_elems, size_t scratch_bytes, size_t *seg,
                    int *nslots)
{
    if (scratch_bytes == 0) scratch_bytes = FM_COMM_RS_SCRATCH_DEFAULT;
    size_t s = FM_COMM_RS_SEGMENT_BYTES / sizeof(float);
    if (s > max_elems) s = max_elems;
    if (s > count) s = count;
    if (s == 0) s = 1;
    size_t k = scratch_bytes / (s * sizeof(float)), most = (count + s - 1) / s + (size_t)size;
    if (k > most) k = most;
    if (k < 1) k = 1;
    if (k > (size_t)INT_MAX) k = (size_t)INT_MAX;
    *seg = s;
    *nslots = size > 1 ? (int)k : 0;
}

size_t fm_comm_reduce_scatter_scratch_for(size_t count, int size, size_t max_bucket_bytes,
                                          size_t scratch_bytes)
{
    if (max_bucket_bytes == 0) max_bucket_bytes = FM_COMM_BUCKET_MAX_DEFAULT;
    size_t max_elems = max_bucket_bytes / sizeof(float), seg = 0;
    if (max_elems == 0) max_elems = 1;
    if (max_elems > (size_t)INT_MAX) max_elems = (size_t)INT_MAX;
    int nslots = 0;
    rs_plan(count, size, max_elems, scratch_bytes, &seg, &nslots);
    return (size_t)nslots * seg * sizeof(float);
}

/* The shared-memory mode's tables: every rank's buffer and counters as mapped here. Collective
 * over the node (the counters' window). */
static fm_status shm_setup(fm_comm_allreduce *ar)
{
    const int N = ar->comm->size;
    ar->peer = calloc((size_t)N, sizeof *ar->peer);
    ar->started = calloc((size_t)N, sizeof *ar->started);
    ar->reduced = calloc((size_t)N, sizeof *ar->reduced);
    fm_status st = NULL;
    if (!ar->peer || !ar->started || !ar->reduced)
        st = FM_ERR(FM_ERR_NOMEM, "out of memory for the shared-memory reduction's tables");
    /* Two counters per rank, each on its own cache line. */
    fm_status cst = fm_comm_shared_alloc(ar->comm, 128, 1, &ar->ctr);
    if (!st)
        st = cst;
    else
        fm_status_free(&cst);
    FM_TRY(st);
    for (int r = 0; r < N; r++) {
        char *c = fm_comm_shared_ptr(ar->ctr, r);
        ar->peer[r] = fm_comm_shared_ptr(ar->shm, r);
        if (!c || (!ar->peer[r] && ar->count > 0))
            return FM_ERR(FM_ERR_INTERNAL, "shared-memory reduction: rank %d's part is not mapped",
                          r);
        ar->started[r] = (_Atomic uint64_t *)c;
        ar->reduced[r] = (_Atomic uint64_t *)(c + 64);
    }
    return NULL;
}

/* An engine in one of the ordered modes (scatter: reduce-scatter, else all-reduce; shm: over
 * node-shared gradients, else by messages). */
static fm_status ordered_init(fm_comm_allreduce **out, const fm_comm *c, float *grads, size_t count,
                              const size_t *bounds, int scatter, size_t max_bucket_bytes,
                              size_t min_bucket_bytes, size_t scratch_bytes, fm_comm_shared *shm)
{
    *out = NULL;
    FM_TRY(fm_comm_check_bounds(c, bounds, count));
    if (shm && (!fm_comm_single_node(c) || fm_comm_shared_bytes(shm) < count * sizeof(float)))
        return FM_ERR(FM_ERR_INTERNAL,
                      "shared-memory reduction: needs every rank on one node (%d nodes here) and "
                      "%zu bytes per rank (the window has %zu)",
                      c->nodes, count * sizeof(float), fm_comm_shared_bytes(shm));
    fm_comm_allreduce *ar = NULL;
    FM_TRY(engine_new(&ar, c, grads, count, max_bucket_bytes, min_bucket_bytes));
    ar->ordered = 1;
    ar->scatter = scatter;
    fm_status st = NULL;
    ar->bounds = malloc(sizeof *ar->bounds * ((size_t)c->size + 1));
    if (!ar->bounds) {
        st = FM_ERR(FM_ERR_NOMEM, "out of memory for the reduce-scatter plan");
        goto fail;
    }
    memcpy(ar->bounds, bounds, sizeof *ar->bounds * ((size_t)c->size + 1));
    rs_plan(count, c->size, ar->max_elems, scratch_bytes, &ar->seg_elems, &ar->nslots);
    ar->shm = shm;
    if (shm) ar->nslots = 0; /* nothing is received */
    if (c->size > 1 && !shm) {
        ar->scratch = malloc((size_t)ar->nslots * ar->seg_elems * sizeof(float));
        ar->free_slots = malloc(sizeof *ar->free_slots * (size_t)ar->nslots);
        if (!ar->scratch || !ar->free_slots) {
            st = FM_ERR(FM_ERR_NOMEM, "out of memory for %zu bytes of reduce-scatter scratch",
                        (size_t)ar->nslots * ar->seg_elems * sizeof(float));
            goto fail;
        }
    }
    reset_step(ar);
fail:
    /* The duplicate (and the shared counters) are collective: every rank makes them, whatever
     * happened above (the checks before engine_new give the same answer on every rank: same bounds,
     * same count). */
    if (c->size > 1 && shm) {
        fm_status sst = shm_setup(ar);
        if (!st)
            st = sst;
        else
            fm_status_free(&sst);
    }
    if (c->size > 1) {
        fm_status dst = fm_comm_dup(c->world, &ar->rs_comm);
        if (!st) st = dst;
        else fm_status_free(&dst);
        if (!st) {
            void *ub = NULL;
            int flag = 0;
            FM_MPI_KEEP(st, MPI_Comm_get_attr(ar->rs_comm, MPI_TAG_UB, &ub, &flag));
            ar->tag_ub = flag && ub ? *(int *)ub : 32767;
        }
    }
    if (st) {
        fm_comm_allreduce_free(&ar);
        return st;
    }
    *out = ar;
    return NULL;
}

fm_status fm_comm_reduce_scatter_init(fm_comm_allreduce **out, const fm_comm *c, float *grads,
                                      size_t count, const size_t *bounds, size_t max_bucket_bytes,
                                      size_t min_bucket_bytes, size_t scratch_bytes)
{
    FM_TRY(ordered_init(out, c, grads, count, bounds, 1, max_bucket_bytes, min_bucket_bytes,
                        scratch_bytes, NULL));
    return NULL;
}

fm_status fm_comm_reduce_scatter_init_shared(fm_comm_allreduce **out, const fm_comm *c,
                                             fm_comm_shared *grads, size_t count,
                                             const size_t *bounds, size_t max_bucket_bytes,
                                             size_t min_bucket_bytes)
{
    *out = NULL;
    if (!grads) return FM_ERR(FM_ERR_INTERNAL, "fm_comm_reduce_scatter_init_shared: no window");
    FM_TRY(ordered_init(out, c, fm_comm_shared_ptr(grads, c->local_rank), count, bounds, 1,
                        max_bucket_bytes, min_bucket_bytes, 0, grads));
    return NULL;
}

fm_status fm_comm_allreduce_init_shared(fm_comm_allreduce **out, const fm_comm *c,
                                        fm_comm_shared *grads, size_t count, const size_t *bounds,
                                        size_t max_bucket_bytes, size_t min_bucket_bytes)
{
    *out = NULL;
    if (!grads) return FM_ERR(FM_ERR_INTERNAL, "fm_comm_allreduce_init_shared: no window");
    FM_TRY(ordered_init(out, c, fm_comm_shared_ptr(grads, c->local_rank), count, bounds, 0,
                        max_bucket_bytes, min_bucket_bytes, 0, grads));
    return NULL;
}

fm_status fm_comm_allreduce_init_ordered(fm_comm_allreduce **out, const fm_comm *c, float *grads,
                                         size_t count, const size_t *bounds,
                                         size_t max_bucket_bytes, size_t min_bucket_bytes,
                                         size_t scratch_bytes)
{
    FM_TRY(ordered_init(out, c, grads, count, bounds, 0, max_bucket_bytes, min_bucket_bytes,
                        scratch_bytes, NULL));
    return NULL;
}

size_t fm_comm_reduce_scatter_scratch_bytes(const fm_comm_allreduce *ar)
{
    return ar && ar->ordered ? (size_t)ar->nslots * ar->seg_elems * sizeof(float) : 0;
}

void fm_comm_allreduce_free(fm_comm_allreduce **ar)
{
    if (!ar || !*ar) return;
    drain(*ar);
    fm_status_free(&(*ar)->err);
    fm_comm_dup_free(&(*ar)->rs_comm);
    fm_comm_shared_free(&(*ar)->ctr);
    free((*ar)->peer);
    free((*ar)->started);
    free((*ar)->reduced);
    free((*ar)->buckets);
    free((*ar)->requests);
    free((*ar)->done);
    free((*ar)->bounds);
    free((*ar)->scratch);
    free((*ar)->free_slots);
    free((*ar)->segs);
    free((*ar)->seg_req);
    free((*ar)->seg_done);
    free(*ar);
    *ar = NULL;
}

/* ---- the all-gather of the shards -------------------------------------------------------------- */

struct fm_comm_allgather {
    const fm_comm *comm;
    MPI_Comm ag_comm;      /* own duplicate (MPI_ERRORS_RETURN) */
    float *buf;
    size_t count;
    size_t *bounds;        /* (size+1) */
    size_t chunk;          /* elements per message */
    MPI_Request *req;      /* receives of every peer's chunks, then this rank's sends */
    int nreq, cap;
    size_t mark;           /* [bounds[me], mark) reported final */
    size_t sent;           /* [bounds[me], sent) sent to every peer */
    int started;
    fm_comm_allgather_stats last;
    double t_start;
};

static size_t chunks_of(size_t lo, size_t hi, size_t chunk)
{
    return hi > lo ? (hi - lo + chunk - 1) / chunk : 0;
}

fm_status fm_comm_allgather_init(fm_comm_allgather **out, const fm_comm *c, float *buf, size_t count,
                                 const size_t *bounds, size_t chunk_bytes)
{
    *out = NULL;
    FM_TRY(fm_comm_check_bounds(c, bounds, count));
    fm_comm_allgather *ag = calloc(1, sizeof *ag);
    FM_CHECK_ALLOC(ag, sizeof *ag);
    ag->comm = c;
    ag->buf = buf;
    ag->count = count;
    ag->ag_comm = MPI_COMM_NULL;
    if (chunk_bytes == 0) chunk_bytes = FM_COMM_RS_SEGMENT_BYTES;
    ag->chunk = chunk_bytes / sizeof(float);
    if (ag->chunk == 0) ag->chunk = 1;
    if (ag->chunk > (size_t)INT_MAX) ag->chunk = (size_t)INT_MAX;
    fm_status st = NULL;
    ag->bounds = malloc(sizeof *ag->bounds * ((size_t)c->size + 1));
    /* requests: every chunk of the buffer once as a receive or (to each peer) a send */
    size_t most = 0;
    for (int r = 0; r < c->size; r++) most += chunks_of(bounds[r], bounds[r + 1], ag->chunk);
    size_t mine = chunks_of(bounds[c->rank], bounds[c->rank + 1], ag->chunk);
    size_t nreq = most - mine + mine * (size_t)(c->size - 1);
    if (nreq > (size_t)INT_MAX / 2) {
        st = FM_ERR(FM_ERR_INTERNAL, "all-gather: %zu messages per step are too many; use larger "
                    "chunks", nreq);
    } else {
        ag->cap = (int)nreq;
        ag->req = malloc(sizeof *ag->req * (size_t)(ag->cap > 0 ? ag->cap : 1));
    }
    if (!st && (!ag->bounds || !ag->req))
        st = FM_ERR(FM_ERR_NOMEM, "out of memory for the all-gather plan");
    if (ag->bounds) memcpy(ag->bounds, bounds, sizeof *ag->bounds * ((size_t)c->size + 1));
    if (c->size > 1) {
        fm_status dst = fm_comm_dup(c->world, &ag->ag_comm);
        if (!st) st = dst;
        else fm_status_free(&dst);
    }
    if (st) {
        fm_comm_allgather_free(&ag);
        return st;
    }
    *out = ag;
    return NULL;
}

fm_status fm_comm_allgather_start(fm_comm_allgather *ag)
{
    const int N = ag->comm->size, me = ag->comm->rank;
    if (ag->started)
        return FM_ERR(FM_ERR_INTERNAL, "all-gather: started twice without wait_all in between");
    ag->started = 1;
    ag->t_start = fm_util_now();
    ag->nreq = 0;
    ag->mark = ag->sent = ag->bounds[me];
    ag->last.wait_s = 0.0;
    if (N == 1) return NULL;
    /* Every peer's shard, chunk by chunk in order: tag 0, the order of the sends matches. */
    for (int q = 0; q < N; q++) {
        if (q == me) continue;
        for (size_t a = ag->bounds[q]; a < ag->bounds[q + 1]; a += ag->chunk) {
            size_t n = ag->bounds[q + 1] - a < ag->chunk ? ag->bounds[q + 1] - a : ag->chunk;
            FM_MPI_TRY(MPI_Irecv(ag->buf + a, (int)n, MPI_FLOAT, q, 0, ag->ag_comm,
                                 &ag->req[ag->nreq++]));
        }
    }
    return NULL;
}

/* Sends every chunk of this rank's shard that lies wholly below `upto` to every peer, in order. */
static fm_status ag_send(fm_comm_allgather *ag, size_t upto)
{
    const int N = ag->comm->size, me = ag->comm->rank;
    const size_t hi = ag->bounds[me + 1];
    while (ag->sent < hi) {
        /* chunks start at lo + k*chunk: the receivers cut the same way */
        size_t n = hi - ag->sent < ag->chunk ? hi - ag->sent : ag->chunk;
        if (ag->sent + n > upto) break;
        for (int k = 1; k < N; k++) {
            int q = (me + k) % N;
            FM_MPI_TRY(MPI_Isend(ag->buf + ag->sent, (int)n, MPI_FLOAT, q, 0, ag->ag_comm,
                                 &ag->req[ag->nreq++]));
        }
        ag->sent += n;
    }
    return NULL;
}

fm_status fm_comm_allgather_ready(void *ctx, size_t offset, size_t count)
{
    fm_comm_allgather *ag = ctx;
    const int me = ag->comm->rank;
    if (!ag->started)
        return FM_ERR(FM_ERR_INTERNAL, "all-gather: a range was reported before the start");
    if (offset != ag->mark || count > ag->bounds[me + 1] - offset)
        return FM_ERR(FM_ERR_INTERNAL,
                      "all-gather: range [%zu, %zu) reported, expected the next part of this rank's "
                      "shard [%zu, %zu) from %zu on, in order",
                      offset, offset + count, ag->bounds[me], ag->bounds[me + 1], ag->mark);
    ag->mark += count;
    if (ag->comm->size == 1) return NULL;
    FM_TRY(ag_send(ag, ag->mark));
    int flag = 0;
    FM_MPI_TRY(MPI_Testall(ag->nreq, ag->req, &flag, MPI_STATUSES_IGNORE));
    return NULL;
}

fm_status fm_comm_allgather_wait_all(fm_comm_allgather *ag)
{
    double t0 = fm_util_now();
    const int me = ag->comm->rank;
    fm_status st = NULL;
    if (!ag->started) return FM_ERR(FM_ERR_INTERNAL, "all-gather: wait_all without a start");
    ag->started = 0;
    if (ag->comm->size > 1) {
        ag->mark = ag->bounds[me + 1];
        st = ag_send(ag, ag->mark);
        FM_MPI_KEEP(st, MPI_Waitall(ag->nreq, ag->req, MPI_STATUSES_IGNORE));
    }
    ag->last.messages = ag->nreq;
    ag->last.bytes = (ag->count - (ag->bounds[me + 1] - ag->bounds[me])) * sizeof(float);
    ag->last.wait_s = fm_util_now() - t0;
    ag->last.total_s = fm_util_now() - ag->t_start;
    ag->nreq = 0;
    return st;
}

fm_comm_allgather_stats fm_comm_allgather_last_stats(const fm_comm_allgather *ag)
{
    return ag->last;
}

void fm_comm_allgather_free(fm_comm_allgather **ag)
{
    if (!ag || !*ag) return;
    fm_comm_allgather *g = *ag;
    if (g->started && g->comm->size > 1) {
        fm_status st = NULL;
        for (int i = 0; i < g->nreq; i++) {
            int done = 0;
            FM_MPI_KEEP(st, MPI_Test(&g->req[i], &done, MPI_STATUS_IGNORE));
            if (!done) FM_MPI_KEEP(st, MPI_Cancel(&g->req[i]));
            FM_MPI_KEEP(st, MPI_Wait(&g->req[i], MPI_STATUS_IGNORE));
        }
        fm_status_free(&st);
    }
    fm_comm_dup_free(&g->ag_comm);
    free(g->bounds);
    free(g->req);
    free(g);
    *ag = NULL;
}

/* ---- sums in rank order ------------------------------------------------------------------------ */

fm_status fm_comm_sum_ordered(const fm_comm *c, double *vals, int n)
{
    if (n < 0) return FM_ERR(FM_ERR_INTERNAL, "fm_comm: negative count %d", n);
    if (n == 0 || c->size == 1) return NULL;
    double *all = malloc(sizeof *all * (size_t)n * (size_t)c->size);
    fm_status st = all ? NULL : FM_ERR(FM_ERR_NOMEM, "out of memory for %d x %d doubles", n, c->size);
    FM_TRY_GOTO(st, done, fm_comm_agree(c->world, st));
    FM_MPI_TRY_GOTO(st, done, MPI_Allgather(vals, n, MPI_DOUBLE, all, n, MPI_DOUBLE, c->world));
    for (int i = 0; i < n; i++) {
        double sum = 0.0;
        for (int r = 0; r < c->size; r++) sum += all[(size_t)r * (size_t)n + (size_t)i];
        vals[i] = sum;
    }
done:
    free(all);
    return st;
}

/* checkpoint_file.c — the checkpoint file layer: parallel HDF5 tensors with CRC-32, atomic
 * publication (see checkpoint_file.h). Directory housekeeping (latest, pruning) is in
 * checkpoint_dir.c. */
#define _GNU_SOURCE /* fallocate(2): reserving the space of a checkpoint before writing it */
#include "ckpt/checkpoint_file.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include <zlib.h>

#include "ckpt/checkpoint_dir.h"
#include "core/util.h"
#include "data/h5util.h"
#include "dist/comm.h"

#define FM_CKPT_PATH_MAX 4096
/* Largest piece one rank moves in one collective H5Dwrite/H5Dread (bytes): keeps every MPI-IO call
 * below 2 GiB, which some MPI-IO layers cannot express. */
#define FM_CKPT_MAX_PIECE_BYTES ((size_t)1 << 30)
/* Largest piece one rank broadcasts at once when replicating (floats). */
#define FM_CKPT_MAX_BCAST_FLOATS ((size_t)1 << 28)

struct fm_checkpoint_file {
    int parallel; /* 0: serial read-only mode, no MPI calls */
    int writing;
    MPI_Comm comm; /* duplicated; MPI_COMM_NULL in serial mode */
    int rank, nranks;
    hid_t fid;
    hid_t dxpl; /* collective transfer in parallel mode, default otherwise */
    char path[FM_CKPT_PATH_MAX];
    char tmp_path[FM_CKPT_PATH_MAX + 8];
    double t_start;
    uint64_t tensor_bytes;
    int64_t align;     /* align_bytes of the writer */
    int reserved;      /* rank 0: the file's space was reserved (fallocate succeeded) */
};

/* ---- HDF5 error capture --------------------------------------------------------------------- */

/* HDF5's automatic error printing is switched off around each public call (fm_h5_quiet_begin/end,
 * data/h5util.h) and the failures become fm_status messages: h5_status below keeps the innermost
 * descriptions of HDF5's error stack in the message. */

typedef struct h5_errinfo {
    char last[512];
    char before_last[512];
} h5_errinfo;

static herr_t h5_walk(unsigned n, const H5E_error2_t *e, void *user)
{
    (void)n;
    h5_errinfo *ei = user;
    if (e && e->desc && e->desc[0]) {
        memcpy(ei->before_last, ei->last, sizeof ei->last);
        fm_util_strlcpy(ei->last, e->desc, sizeof ei->last);
    }
    return 0;
}

/* A status whose message is "<what>: <the innermost HDF5 error descriptions>". */
static fm_status h5_status(fm_code code, const char *file, int line, const char *func,
                           const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 5, 6)))
#endif
    ;

static fm_status h5_status(fm_code code, const char *file, int line, const char *func,
                           const char *fmt, ...)
{
    char what[1536];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    h5_errinfo ei;
    memset(&ei, 0, sizeof ei);
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, h5_walk, &ei);
    H5Eclear2(H5E_DEFAULT);
    if (ei.last[0] && ei.before_last[0])
        return fm_status_new(code, file, line, func, "%s (HDF5: %s: %s)", what, ei.before_last,
                             ei.last);
    if (ei.last[0]) return fm_status_new(code, file, line, func, "%s (HDF5: %s)", what, ei.last);
    return fm_status_new(code, file, line, func, "%s", what);
}

#define H5ERR(code, ...) h5_status((code), __FILE__, __LINE__, __func__, __VA_ARGS__)

/* ---- small helpers ------------------------------------------------------------------------- */

static void close_id(hid_t *id, herr_t (*fn)(hid_t))
{
    if (*id >= 0) fn(*id);
    *id = -1;
}

static fm_status check_name(const char *what, const char *name)
{
    if (!name || !name[0] || strchr(name, '/') || strlen(name) >= FM_CHECKPOINT_NAME_MAX)
        return FM_ERR(FM_ERR_INTERNAL, "checkpoint: invalid %s name '%s'", what, name ? name : "(null)");
    return NULL;
}

fm_status fm_checkpoint_parse_hints(const char *hints, MPI_Info *info)
{
    *info = MPI_INFO_NULL;
    if (!hints) return NULL;
    size_t n = strlen(hints);
    char *copy = malloc(n + 1);
    FM_CHECK_ALLOC(copy, n + 1);
    memcpy(copy, hints, n + 1);
    fm_status st = NULL;
    char *save = NULL;
    for (char *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        fm_util_trim(item);
        if (!item[0]) continue;
        char *eq = strchr(item, '=');
        if (!eq) {
            st = FM_ERR(FM_ERR_CONFIG, "[checkpoint] mpiio_hints: item '%s' is not key=value "
                                       "(expected e.g. \"striping_factor=16,cb_nodes=8\")", item);
            break;
        }
        *eq = '\0';
        char *key = fm_util_trim(item), *val = fm_util_trim(eq + 1);
        if (!key[0] || !val[0]) {
            st = FM_ERR(FM_ERR_CONFIG, "[checkpoint] mpiio_hints: empty key or value in '%s=%s'",
                        key, val);
            break;
        }
        if (strlen(key) >= MPI_MAX_INFO_KEY || strlen(val) >= MPI_MAX_INFO_VAL) {
            st = FM_ERR(FM_ERR_CONFIG, "[checkpoint] mpiio_hints: key or value too long in '%s'", key);
            break;
        }
        if (*info == MPI_INFO_NULL) FM_MPI_KEEP(st, MPI_Info_create(info));
        if (!st) FM_MPI_KEEP(st, MPI_Info_set(*info, key, val));
        if (st) {
            fm_status_prefix(st, "[checkpoint] mpiio_hints: %s=%s", key, val);
            break;
        }
    }
    free(copy);
    if (st && *info != MPI_INFO_NULL) FM_MPI_KEEP(st, MPI_Info_free(info));
    return st;
}

/* ---- CRC-32 (fm_checkpoint_crc32 is in checkpoint_crc.c) ---------------------------------- */

/* Combines per-rank (crc, bytes) parts in rank order into the CRC of the whole. */
static uint32_t crc_combine_parts(const uint64_t *crc, const uint64_t *len, int nparts, size_t stride)
{
    uLong c = crc32(0L, Z_NULL, 0);
    for (int r = 0; r < nparts; r++) {
        uint64_t l = len[(size_t)r * stride];
        if (l == 0) continue;
        c = crc32_combine(c, (uLong)crc[(size_t)r * stride], (z_off_t)l);
    }
    return (uint32_t)c;
}

/* ---- tables and the partition ------------------------------------------------------------- */

static size_t tensor_numel(const fm_checkpoint_tensor *t)
{
    size_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= (size_t)t->shape[d];
    return n;
}

static size_t tensor_row(const fm_checkpoint_tensor *t)
{
    size_t n = 1;
    for (int d = 1; d < t->ndim; d++) n *= (size_t)t->shape[d];
    return n;
}

static fm_status check_tables(const fm_checkpoint_group *groups, int ngroups)
{
    if (ngroups < 0 || (ngroups > 0 && !groups))
        return FM_ERR(FM_ERR_INTERNAL, "checkpoint: bad group list");
    for (int g = 0; g < ngroups; g++) {
        FM_TRY(check_name("group", groups[g].name));
        if (groups[g].ntensors < 0 || (groups[g].ntensors > 0 && !groups[g].tensors))
            return FM_ERR(FM_ERR_INTERNAL, "checkpoint: group %s has a bad tensor table",
                          groups[g].name);
        for (int i = 0; i < groups[g].ntensors; i++) {
            const fm_checkpoint_tensor *t = &groups[g].tensors[i];
            FM_TRY(check_name("tensor", t->name));
            if (t->ndim < 1 || t->ndim > FM_CHECKPOINT_MAX_DIMS)
                return FM_ERR(FM_ERR_INTERNAL, "checkpoint: tensor %s/%s has %d dimensions",
                              groups[g].name, t->name, t->ndim);
            for (int d = 0; d < t->ndim; d++)
                if (t->shape[d] < 1)
                    return FM_ERR(FM_ERR_INTERNAL, "checkpoint: tensor %s/%s has dimension %d = %lld",
                                  groups[g].name, t->name, d, (long long)t->shape[d]);
            size_t n = tensor_numel(t);
            if (t->offset > groups[g].numel || n > groups[g].numel - t->offset)
                return FM_ERR(FM_ERR_INTERNAL,
                              "checkpoint: tensor %s/%s (offset %zu, %zu elements) does not fit its "
                              "buffer of %zu elements",
                              groups[g].name, t->name, t->offset, n, groups[g].numel);
        }
    }
    return NULL;
}

/* Element index p of the concatenated sequence of total length `total` where rank k's part starts. */
static size_t split_point(size_t total, int nranks, int k)
{
    size_t q = total / (size_t)nranks, r = total % (size_t)nranks;
    return q * (size_t)k + (r * (size_t)k) / (size_t)nranks;
}

/* Position of split point `p` inside a tensor that occupies [start, start+n) of the sequence, clamped
 * to [0, n] and moved to the nearest multiple of `row`. */
static size_t local_split(size_t p, size_t start, size_t n, size_t row)
{
    if (p <= start) return 0;
    size_t x = p - start;
    if (x >= n) return n;
    size_t down = x - x % row;
    size_t up = down + row;
    return (x - down) * 2 < row || up > n ? down : up;
}

static void part_of(size_t start, size_t n, size_t row, size_t total, int nranks, int rank, size_t *lo,
                    size_t *hi)
{
    *lo = local_split(split_point(total, nranks, rank), start, n, row);
    *hi = local_split(split_point(total, nranks, rank + 1), start, n, row);
    if (*hi < *lo) *hi = *lo;
}

/* Elements of the tensors of the groups that use the default partition (no explicit parts). */
static size_t total_elements(const fm_checkpoint_group *groups, int ngroups)
{
    size_t total = 0;
    for (int g = 0; g < ngroups; g++)
        for (int i = 0; groups[g].parts == NULL && i < groups[g].ntensors; i++)
            total += tensor_numel(&groups[g].tensors[i]);
    return total;
}

/* A group's explicit parts against its table: nranks+1 offsets from 0 to numel, non-decreasing,
 * each on a row boundary of the tensor it falls in. The same answer on every rank. */
static fm_status check_parts(const fm_checkpoint_group *g, int nranks)
{
    const size_t *p = g->parts;
    if (p[0] != 0 || p[nranks] != g->numel)
        return FM_ERR(FM_ERR_INTERNAL, "checkpoint: the parts of group %s run from %zu to %zu, "
                      "expected 0 to %zu over %d ranks", g->name, p[0], p[nranks], g->numel, nranks);
    for (int r = 0; r < nranks; r++)
        if (p[r + 1] < p[r])
            return FM_ERR(FM_ERR_INTERNAL, "checkpoint: part %d of group %s ends (%zu) before it "
                          "starts (%zu)", r, g->name, p[r + 1], p[r]);
    for (int r = 1; r < nranks; r++)
        for (int i = 0; i < g->ntensors; i++) {
            const fm_checkpoint_tensor *t = &g->tensors[i];
            size_t a = t->offset, n = tensor_numel(t);
            if (p[r] > a && p[r] < a + n && (p[r] - a) % tensor_row(t) != 0)
                return FM_ERR(FM_ERR_INTERNAL, "checkpoint: part boundary %zu of group %s cuts a "
                              "row of tensor %s (rows of %zu elements from %zu)", p[r], g->name,
                              t->name, tensor_row(t), a);
        }
    return NULL;
}

/* This rank's buffers hold its parts: a buffer that starts at `base` starts no later than the part
 * (checked for the calling rank only: the others' buffers are theirs). */
static fm_status check_bases(const fm_checkpoint_group *groups, int ngroups, int rank)
{
    for (int g = 0; g < ngroups; g++)
        if (groups[g].parts && groups[g].base > groups[g].parts[rank])
            return FM_ERR(FM_ERR_INTERNAL, "checkpoint: group %s's buffer starts at element %zu, "
                          "after this rank's part [%zu, %zu)", groups[g].name, groups[g].base,
                          groups[g].parts[rank], groups[g].parts[rank + 1]);
    return NULL;
}

/* The element range [*lo, *hi) of tensor i of group g that `rank` moves: from the group's explicit
 * parts, or from the default rule (`start`: the tensor's index in the concatenation of the default
 * groups, `total` its length). */
static void tensor_part(const fm_checkpoint_group *g, int i, size_t start, size_t total, int nranks,
                        int rank, size_t *lo, size_t *hi)
{
    const fm_checkpoint_tensor *t = &g->tensors[i];
    size_t n = tensor_numel(t);
    if (!g->parts) {
        part_of(start, n, tensor_row(t), total, nranks, rank, lo, hi);
        return;
    }
    size_t a = g->parts[rank], b = g->parts[rank + 1];
    *lo = a <= t->offset ? 0 : a - t->offset < n ? a - t->offset : n;
    *hi = b <= t->offset ? 0 : b - t->offset < n ? b - t->offset : n;
    if (*hi < *lo) *hi = *lo;
}

fm_status fm_checkpoint_file_part(const fm_checkpoint_group *groups, int ngroups, int nranks,
                                  int rank, int group, int tensor, size_t *lo, size_t *hi)
{
    FM_TRY(check_tables(groups, ngroups));
    if (nranks < 1 || rank < 0 || rank >= nranks || group < 0 || group >= ngroups || tensor < 0 ||
        tensor >= groups[group].ntensors)
        return FM_ERR(FM_ERR_INTERNAL, "checkpoint: bad part query");
    if (groups[group].parts) FM_TRY(check_parts(&groups[group], nranks));
    size_t total = total_elements(groups, ngroups), start = 0;
    for (int g = 0; g < ngroups; g++)
        for (int i = 0; i < groups[g].ntensors; i++) {
            if (g == group && i == tensor) {
                tensor_part(&groups[g], i, start, total, nranks, rank, lo, hi);
                return NULL;
            }
            if (!groups[g].parts) start += tensor_numel(&groups[g].tensors[i]);
        }
    return FM_ERR(FM_ERR_INTERNAL, "checkpoint: tensor not found");
}

/* Element e of group g's layout in its buffer (which holds [base, ...)). */
static float *elem_ptr(const fm_checkpoint_group *g, size_t e)
{
    return g->data + (e - g->base);
}

/* One tensor as seen by the I/O loops. */
typedef struct tensor_job {
    int group, index;
    const fm_checkpoint_tensor *t;
    size_t numel, row, start; /* start: index in the concatenated sequence */
    size_t lo, hi;            /* this rank's part (elements of the tensor) */
    int rounds;               /* collective calls needed: max over ranks of pieces */
} tensor_job;

static fm_status plan_jobs(const fm_checkpoint_group *groups, int ngroups, int nranks, int rank,
                           tensor_job **jobs_out, int *njobs_out)
{
    *jobs_out = NULL;
    *njobs_out = 0;
    FM_TRY(check_tables(groups, ngroups));
    for (int g = 0; g < ngroups; g++)
        if (groups[g].parts) FM_TRY(check_parts(&groups[g], nranks));
        else if (groups[g].base != 0)
            return FM_ERR(FM_ERR_INTERNAL, "checkpoint: group %s has a buffer that starts at "
                          "element %zu but no explicit parts", groups[g].name, groups[g].base);
    int nj = 0;
    for (int g = 0; g < ngroups; g++) nj += groups[g].ntensors;
    tensor_job *jobs = calloc(nj > 0 ? (size_t)nj : 1, sizeof *jobs);
    FM_CHECK_ALLOC(jobs, (size_t)nj * sizeof *jobs);
    size_t total = total_elements(groups, ngroups), start = 0;
    int j = 0;
    for (int g = 0; g < ngroups; g++)
        for (int i = 0; i < groups[g].ntensors; i++, j++) {
            tensor_job *jb = &jobs[j];
            jb->group = g;
            jb->index = i;
            jb->t = &groups[g].tensors[i];
            jb->numel = tensor_numel(jb->t);
            jb->row = tensor_row(jb->t);
            jb->start = start;
            tensor_part(&groups[g], i, start, total, nranks, rank, &jb->lo, &jb->hi);
            /* Rows per collective call, the same on every rank; rounds = max over ranks. */
            size_t rows_per_call = FM_CKPT_MAX_PIECE_BYTES / (jb->row * sizeof(float));
            if (rows_per_call < 1) rows_per_call = 1;
            int rounds = 0;
            for (int r = 0; r < nranks; r++) {
                size_t lo, hi;
                tensor_part(&groups[g], i, start, total, nranks, r, &lo, &hi);
                size_t rows = (hi - lo) / jb->row;
                int c = (int)((rows + rows_per_call - 1) / rows_per_call);
                if (c > rounds) rounds = c;
            }
            jb->rounds = rounds;
            if (!groups[g].parts) start += jb->numel;
        }
    *jobs_out = jobs;
    *njobs_out = nj;
    return NULL;
}

/* Rows [*r0, *r1) of this rank's part moved in collective call `round`. */
static void round_rows(const tensor_job *jb, int round, size_t *r0, size_t *r1)
{
    size_t rows_per_call = FM_CKPT_MAX_PIECE_BYTES / (jb->row * sizeof(float));
    if (rows_per_call < 1) rows_per_call = 1;
    size_t first = jb->lo / jb->row, last = jb->hi / jb->row;
    size_t a = first + (size_t)round * rows_per_call;
    size_t b = a + rows_per_call;
    if (a > last) a = last;
    if (b > last) b = last;
    *r0 = a;
    *r1 = b;
}

/* File and memory dataspaces selecting rows [r0, r1) of a tensor (or nothing when r0 == r1). */
static fm_status select_rows(const fm_checkpoint_tensor *t, size_t row, size_t r0, size_t r1,
                             hid_t *fspace, hid_t *mspace)
{
    hsize_t dims[FM_CHECKPOINT_MAX_DIMS], start[FM_CHECKPOINT_MAX_DIMS] = {0},
                                         count[FM_CHECKPOINT_MAX_DIMS];
    for (int d = 0; d < t->ndim; d++) dims[d] = count[d] = (hsize_t)t->shape[d];
    *fspace = H5Screate_simple(t->ndim, dims, NULL);
    hsize_t mdim = r1 > r0 ? (hsize_t)((r1 - r0) * row) : 1;
    *mspace = H5Screate_simple(1, &mdim, NULL);
    if (*fspace < 0 || *mspace < 0) return H5ERR(FM_ERR_INTERNAL, "cannot create a dataspace");
    if (r1 > r0) {
        start[0] = r0;
        count[0] = r1 - r0;
        if (H5Sselect_hyperslab(*fspace, H5S_SELECT_SET, start, NULL, count, NULL) < 0)
            return H5ERR(FM_ERR_INTERNAL, "cannot select rows of %s", t->name);
    } else if (H5Sselect_none(*fspace) < 0 || H5Sselect_none(*mspace) < 0) {
        return H5ERR(FM_ERR_INTERNAL, "cannot select nothing of %s", t->name);
    }
    return NULL;
}

/* ---- opening files ------------------------------------------------------------------------ */

static void free_file(fm_checkpoint_file **fp)
{
    fm_checkpoint_file *f = *fp;
    if (!f) return;
    close_id(&f->dxpl, H5Pclose);
    fm_comm_dup_free(&f->comm);
    free(f);
    *fp = NULL;
}

/* A file object for `path` with its own communicator (a duplicate of comm that returns errors;
 * MPI_COMM_NULL: serial mode). Collective over comm: every rank takes part in the duplication even
 * when its own checks or allocation failed, then all agree. */
static fm_status new_file(MPI_Comm comm, const char *path, fm_checkpoint_file **out)
{
    *out = NULL;
    fm_status st = NULL;
    if (!path || !path[0]) st = FM_ERR(FM_ERR_INTERNAL, "checkpoint: empty path");
    else if (strlen(path) >= FM_CKPT_PATH_MAX)
        st = FM_ERR(FM_ERR_CONFIG, "checkpoint path too long (%zu bytes, at most %d): %s", strlen(path),
                    FM_CKPT_PATH_MAX - 1, path);
    fm_checkpoint_file *f = st ? NULL : calloc(1, sizeof *f);
    if (!st && !f) st = FM_ERR(FM_ERR_NOMEM, "out of memory opening checkpoint %s", path);
    MPI_Comm dup = MPI_COMM_NULL;
    if (comm != MPI_COMM_NULL) {
        fm_status dst = fm_comm_dup(comm, &dup);
        if (dst) {
            fm_status_free(&st);
            st = dst;
        }
        st = fm_comm_agree(comm, st); /* the caller's communicator: the duplicate may be missing */
    }
    if (st) {
        free(f);
        fm_comm_dup_free(&dup);
        return st;
    }
    f->fid = -1;
    f->dxpl = -1;
    f->comm = dup;
    f->nranks = 1;
    fm_util_strlcpy(f->path, path, sizeof f->path);
    snprintf(f->tmp_path, sizeof f->tmp_path, "%s.tmp", path);
    f->t_start = fm_util_now();
    if (dup != MPI_COMM_NULL) {
        f->parallel = 1;
        fm_status lst = NULL;
        FM_MPI_KEEP(lst, MPI_Comm_rank(f->comm, &f->rank));
        FM_MPI_KEEP(lst, MPI_Comm_size(f->comm, &f->nranks));
        if (lst) {
            free_file(&f);
            return lst;
        }
    }
    *out = f;
    return NULL;
}

/* File access properties: MPI-IO with hints, collective metadata, alignment, v1.8 file format
 * (checksummed object headers, readable by HDF5 >= 1.8). */
static fm_status make_fapl(const fm_checkpoint_file *f, const fm_checkpoint_io_opts *opts, hid_t *fapl)
{
    *fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (*fapl < 0) return H5ERR(FM_ERR_INTERNAL, "H5Pcreate(file access) failed");
    if (H5Pset_libver_bounds(*fapl, H5F_LIBVER_V18, H5F_LIBVER_V18) < 0)
        return H5ERR(FM_ERR_INTERNAL, "H5Pset_libver_bounds failed");
    if (opts && opts->align_bytes > 1) {
        /* Objects of at least one alignment unit start on a boundary; smaller ones are packed. */
        hsize_t thr = (hsize_t)opts->align_bytes;
        if (H5Pset_alignment(*fapl, thr, (hsize_t)opts->align_bytes) < 0)
            return H5ERR(FM_ERR_CONFIG, "[checkpoint] align_bytes = %lld rejected by HDF5",
                         (long long)opts->align_bytes);
    }
    if (!f->parallel) return NULL;
    MPI_Info info = MPI_INFO_NULL;
    FM_TRY(fm_checkpoint_parse_hints(opts ? opts->mpiio_hints : NULL, &info));
    herr_t e = H5Pset_fapl_mpio(*fapl, f->comm, info == MPI_INFO_NULL ? MPI_INFO_NULL : info);
    fm_status st = NULL;
    if (info != MPI_INFO_NULL) FM_MPI_KEEP(st, MPI_Info_free(&info)); /* HDF5 keeps its own copy */
    if (e < 0) {
        fm_status_free(&st);
        return H5ERR(FM_ERR_INTERNAL, "H5Pset_fapl_mpio failed");
    }
    FM_TRY(st);
    if (H5Pset_all_coll_metadata_ops(*fapl, 1) < 0 || H5Pset_coll_metadata_write(*fapl, 1) < 0)
        return H5ERR(FM_ERR_INTERNAL, "cannot enable collective metadata operations");
    return NULL;
}

/* Collective transfers (every rank takes part in each H5Dwrite/H5Dread). Underneath, each rank's
 * part of a tensor is one large contiguous range, which MPI-IO writes best directly
 * (H5FD_MPIO_INDIVIDUAL_IO: collective call, independent I/O); two-phase collective buffering
 * (aggregators gathering the data of several ranks) is used instead when the hints ask for it
 * (romio_cb_write / romio_cb_read / cb_nodes), e.g. for many ranks per node on Lustre. */
static fm_status make_dxpl(fm_checkpoint_file *f, const char *hints)
{
    f->dxpl = H5Pcreate(H5P_DATASET_XFER);
    if (f->dxpl < 0) return H5ERR(FM_ERR_INTERNAL, "H5Pcreate(transfer) failed");
    if (!f->parallel) return NULL;
    if (H5Pset_dxpl_mpio(f->dxpl, H5FD_MPIO_COLLECTIVE) < 0)
        return H5ERR(FM_ERR_INTERNAL, "H5Pset_dxpl_mpio(collective) failed");
    int two_phase = hints && (strstr(hints, "romio_cb_write") || strstr(hints, "romio_cb_read") ||
                              strstr(hints, "cb_nodes"));
    if (H5Pset_dxpl_mpio_collective_opt(f->dxpl, two_phase ? H5FD_MPIO_COLLECTIVE_IO
                                                           : H5FD_MPIO_INDIVIDUAL_IO) < 0)
        return H5ERR(FM_ERR_INTERNAL, "H5Pset_dxpl_mpio_collective_opt failed");
    return NULL;
}

static fm_status dir_of(const char *path, char *dir, size_t size)
{
    if (fm_util_strlcpy(dir, path, size)) return FM_ERR(FM_ERR_CONFIG, "path too long: %s", path);
    char *slash = strrchr(dir, '/');
    if (!slash)
        fm_util_strlcpy(dir, ".", size);
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
    return NULL;
}

static fm_status write_attr(hid_t obj, const char *name, hid_t type, const void *value,
                            const char *where)
{
    if (H5Aexists(obj, name) > 0 && H5Adelete(obj, name) < 0)
        return H5ERR(FM_ERR_IO, "cannot replace attribute %s of %s", name, where);
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    fm_status st = NULL;
    if (a < 0 || H5Awrite(a, type, value) < 0)
        st = H5ERR(FM_ERR_IO, "cannot write attribute %s of %s", name, where);
    if (a >= 0) H5Aclose(a);
    H5Sclose(space);
    return st;
}

static fm_status write_str_attr(hid_t obj, const char *name, const char *value, const char *where)
{
    hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, strlen(value) + 1);
    H5Tset_strpad(type, H5T_STR_NULLTERM);
    fm_status st = write_attr(obj, name, type, value, where);
    H5Tclose(type);
    return st;
}

/* Bytes free in the directory of `path` (statvfs: what an unprivileged user may use), or -1. */
static double free_bytes(const char *path)
{
    char dir[FM_CKPT_PATH_MAX];
    struct statvfs sv;
    if (dir_of(path, dir, sizeof dir) != NULL || statvfs(dir, &sv) != 0) return -1.0;
    return (double)sv.f_bavail * (double)sv.f_frsize;
}

/* Rank 0, before the file is created: the directory exists, the target is not something else (a
 * directory where the file should go), the file system has room for `expected` bytes, and a stale
 * temporary file of a killed writer is gone. */
static fm_status prepare_target(const fm_checkpoint_file *f, uint64_t expected)
{
    char dir[FM_CKPT_PATH_MAX];
    FM_TRY(dir_of(f->path, dir, sizeof dir));
    FM_TRY(fm_util_mkdir_p(dir));
    struct stat sb;
    if (lstat(f->path, &sb) == 0 && !S_ISREG(sb.st_mode))
        return FM_ERR(FM_ERR_CONFIG,
                      "checkpoint %s cannot be written: a %s of that name is in the way; move or "
                      "remove it (it is not a checkpoint fmtrain wrote) and start again",
                      f->path, S_ISDIR(sb.st_mode) ? "directory" : "non-regular file");
    if (lstat(f->tmp_path, &sb) == 0 && S_ISDIR(sb.st_mode))
        return FM_ERR(FM_ERR_CONFIG,
                      "checkpoint %s cannot be written: a directory %s is in the way of its "
                      "temporary file; move or remove it and start again",
                      f->path, f->tmp_path);
    if (unlink(f->tmp_path) != 0 && errno != ENOENT)
        return FM_ERR(FM_ERR_IO, "cannot remove stale %s: %s", f->tmp_path, strerror(errno));
    double avail = free_bytes(f->path);
    if (expected > 0 && avail >= 0 && avail < (double)expected) {
        char need_s[32], free_s[32];
        fm_util_format_bytes((double)expected, need_s, sizeof need_s);
        fm_util_format_bytes(avail, free_s, sizeof free_s);
        return FM_ERR(FM_ERR_IO,
                      "no room for checkpoint %s: it needs about %s but %s has %s free (No space "
                      "left on device): free space (or raise the quota), or lower [checkpoint] "
                      "keep_last, then resume",
                      f->path, need_s, dir, free_s);
    }
    return NULL;
}

uint64_t fm_checkpoint_file_estimate_bytes(const fm_checkpoint_group *groups, int ngroups,
                                           int64_t align_bytes)
{
    uint64_t bytes = (uint64_t)256 << 10; /* superblock, root group, small datasets */
    for (int g = 0; g < ngroups; g++)
        for (int i = 0; i < groups[g].ntensors; i++) {
            uint64_t b = (uint64_t)tensor_numel(&groups[g].tensors[i]) * sizeof(float);
            bytes += b + 2048 + /* the dataset's object header with its attributes */
                     (align_bytes > 1 && b >= (uint64_t)align_bytes ? (uint64_t)align_bytes : 0);
        }
    return bytes;
}

fm_status fm_checkpoint_file_create(MPI_Comm comm, const char *path, const char *format_name,
                                    int format_version, const fm_checkpoint_io_opts *opts,
                                    fm_checkpoint_file **out)
{
    *out = NULL;
    if (comm == MPI_COMM_NULL)
        return FM_ERR(FM_ERR_INTERNAL, "checkpoint files are written in parallel mode only");
    fm_checkpoint_file *f = NULL;
    FM_TRY(new_file(comm, path, &f));
    f->writing = 1;
    f->align = opts ? opts->align_bytes : 0;
    fm_h5_quiet q;
    fm_h5_quiet_begin(&q);
    fm_status st = NULL;
    hid_t fapl = -1;
    /* Rank 0 prepares the directory, checks the target and the free space, and removes a stale
     * temporary file of a killed writer; all of it is agreed before the first HDF5 call, so that a
     * full disk never reaches HDF5 (see the header). */
    if (f->rank == 0) st = prepare_target(f, opts ? opts->expected_bytes : 0);
    st = fm_comm_agree(f->comm, st);
    if (st) {
        fm_h5_quiet_end(&q);
        free_file(&f); /* no HDF5 file exists yet: nothing to close */
        return st;
    }
    if (!st) st = make_fapl(f, opts, &fapl);
    if (!st) st = make_dxpl(f, opts ? opts->mpiio_hints : NULL);
    st = fm_comm_agree(f->comm, st);
    if (!st) {
        f->fid = H5Fcreate(f->tmp_path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
        if (f->fid < 0) st = H5ERR(FM_ERR_IO, "cannot create checkpoint file %s", f->tmp_path);
    }
    st = fm_comm_agree(f->comm, st);
    if (!st) st = write_str_attr(f->fid, "format", format_name, f->tmp_path);
    if (!st) {
        int64_t v = format_version;
        st = write_attr(f->fid, "format_version", H5T_STD_I64LE, &v, f->tmp_path);
    }
    st = fm_comm_agree(f->comm, st);
    close_id(&fapl, H5Pclose);
    fm_h5_quiet_end(&q);
    if (st) {
        fm_checkpoint_file_abort(&f);
        return st;
    }
    *out = f;
    return NULL;
}

/* Opens or creates group `path` (absolute, "/" = root) with intermediate groups. */
static fm_status open_group(fm_checkpoint_file *f, const char *path, int create, hid_t *out)
{
    *out = -1;
    if (strcmp(path, "/") == 0 || !path[0]) {
        *out = H5Gopen2(f->fid, "/", H5P_DEFAULT);
        if (*out < 0) return H5ERR(FM_ERR_INPUT, "cannot open the root group of %s", f->path);
        return NULL;
    }
    htri_t ex = H5Lexists(f->fid, path, H5P_DEFAULT);
    if (ex > 0) {
        *out = H5Oopen(f->fid, path, H5P_DEFAULT);
        if (*out < 0) return H5ERR(FM_ERR_INPUT, "cannot open %s in %s", path, f->path);
        return NULL;
    }
    H5Eclear2(H5E_DEFAULT); /* H5Lexists fails when an intermediate group is missing */
    if (!create) return FM_ERR(FM_ERR_INPUT, "%s has no %s", f->path, path);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    *out = H5Gcreate2(f->fid, path, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    H5Pclose(lcpl);
    if (*out < 0) return H5ERR(FM_ERR_IO, "cannot create group %s in %s", path, f->tmp_path);
    return NULL;
}

/* Creates a contiguous dataset without fill at absolute path `dset`. */
static fm_status create_dataset(fm_checkpoint_file *f, const char *dset, hid_t type, hid_t space,
                                hid_t *out)
{
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    H5Pset_layout(dcpl, H5D_CONTIGUOUS);
    H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER);
    H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_EARLY);
    *out = H5Dcreate2(f->fid, dset, type, space, lcpl, dcpl, H5P_DEFAULT);
    H5Pclose(dcpl);
    H5Pclose(lcpl);
    if (*out < 0) return H5ERR(FM_ERR_IO, "cannot create dataset %s in %s", dset, f->tmp_path);
    return NULL;
}

/* The fp32 dataset /GROUP/NAME of tensor t with its global shape (no data written); its path in dpath
 * (for messages). Used by the synchronous writer and by the asynchronous one's definition pass. */
static fm_status create_tensor_dataset(fm_checkpoint_file *f, const char *group,
                                       const fm_checkpoint_tensor *t, char *dpath, size_t dsize,
                                       hid_t *out)
{
    snprintf(dpath, dsize, "/%s/%s", group, t->name);
    hsize_t dims[FM_CHECKPOINT_MAX_DIMS];
    for (int i = 0; i < t->ndim; i++) dims[i] = (hsize_t)t->shape[i];
    hid_t space = H5Screate_simple(t->ndim, dims, NULL);
    fm_status st = create_dataset(f, dpath, H5T_IEEE_F32LE, space, out);
    H5Sclose(space);
    return st;
}

static fm_status set_crc_attr(hid_t d, uint32_t crc, const char *dset)
{
    return write_attr(d, "crc32", H5T_STD_U32LE, &crc, dset);
}

/* ---- writing ----------------------------------------------------------------------------- */

/* "12.5 GiB free in DIR" for error messages. */
static const char *free_space_note(const char *path, char *buf, size_t size)
{
    char dir[FM_CKPT_PATH_MAX], free_s[32];
    struct statvfs sv;
    if (dir_of(path, dir, sizeof dir) != NULL || statvfs(dir, &sv) != 0) return "free space unknown";
    fm_util_format_bytes((double)sv.f_bavail * (double)sv.f_frsize, free_s, sizeof free_s);
    snprintf(buf, size, "%s free in %s", free_s, dir);
    return buf;
}

/* Allocates the blocks the tensors of `groups` will occupy in the temporary file (fallocate): their
 * bytes, one alignment unit of padding per aligned tensor, and room for metadata. HDF5's close sets
 * the file size back to the end of its data, which frees what was not used. File systems without
 * fallocate skip this (the writes then report a full disk). */
static fm_status reserve_bytes(fm_checkpoint_file *f, uint64_t bytes)
{
    int fd = open(f->tmp_path, O_WRONLY);
    if (fd < 0) return FM_ERR(FM_ERR_IO, "cannot open %s: %s", f->tmp_path, strerror(errno));
    /* The file grows to the reserved size; HDF5 sets it back to the end of its data at close. */
    int rc = fallocate(fd, 0, 0, (off_t)bytes);
    int err = errno;
    close(fd);
    if (rc == 0) f->reserved = 1;
    if (rc == 0 || err == EOPNOTSUPP || err == ENOSYS || err == EINVAL) return NULL;
    char dir[FM_CKPT_PATH_MAX], free_s[32] = "?", need_s[32];
    struct statvfs sv;
    if (dir_of(f->path, dir, sizeof dir) == NULL && statvfs(dir, &sv) == 0)
        fm_util_format_bytes((double)sv.f_bavail * (double)sv.f_frsize, free_s, sizeof free_s);
    fm_util_format_bytes((double)bytes, need_s, sizeof need_s);
    return FM_ERR(FM_ERR_IO,
                  "no room for checkpoint %s: reserving %s failed: %s (%s free in %s); free space "
                  "or lower [checkpoint] keep_last",
                  f->path, need_s, strerror(err), free_s, dir);
}

static fm_status reserve_space(fm_checkpoint_file *f, const fm_checkpoint_group *groups,
                               int ngroups)
{
    return reserve_bytes(f, fm_checkpoint_file_estimate_bytes(groups, ngroups, f->align));
}

fm_status fm_checkpoint_file_reserve(fm_checkpoint_file *f, uint64_t bytes)
{
    if (!f || !f->writing) return FM_ERR(FM_ERR_INTERNAL, "checkpoint file not open for writing");
    return reserve_bytes(f, bytes);
}

const char *fm_checkpoint_file_tmp_path(const fm_checkpoint_file *f) { return f ? f->tmp_path : ""; }

fm_status fm_checkpoint_file_write_groups(fm_checkpoint_file *f, const fm_checkpoint_group *groups,
                                          int ngroups)
{
    if (!f || !f->writing) return FM_ERR(FM_ERR_INTERNAL, "checkpoint file not open for writing");
    tensor_job *jobs = NULL;
    int nj = 0;
    uint64_t *mine = NULL, *all = NULL;
    fm_status st = plan_jobs(groups, ngroups, f->nranks, f->rank, &jobs, &nj);
    if (!st) st = check_bases(groups, ngroups, f->rank);
    st = fm_comm_agree(f->comm, st);
    if (st) return st;
    fm_h5_quiet q;
    fm_h5_quiet_begin(&q);

    /* 0. Reserve the file's space up front (rank 0), so that a full disk or an exhausted quota is a
     * clear error before any tensor is written rather than a failed write in the middle of HDF5. */
    if (f->rank == 0) st = reserve_space(f, groups, ngroups);
    st = fm_comm_agree(f->comm, st);
    if (st) goto done;

    /* 1. CRC-32 of this rank's part of every tensor, then everyone's parts, combined in rank order. */
    size_t per = (size_t)nj * 2;
    mine = calloc(per > 0 ? per : 1, sizeof *mine);
    all = calloc((per > 0 ? per : 1) * (size_t)f->nranks, sizeof *all);
    if (!mine || !all) st = FM_ERR(FM_ERR_NOMEM, "out of memory for checkpoint checksums");
    st = fm_comm_agree(f->comm, st);
    if (st) goto done;
    for (int j = 0; j < nj; j++) {
        size_t bytes = (jobs[j].hi - jobs[j].lo) * sizeof(float);
        mine[2 * j] = bytes ? fm_checkpoint_crc32(elem_ptr(&groups[jobs[j].group],
                                                           jobs[j].t->offset + jobs[j].lo),
                                                  bytes)
                            : 0;
        mine[2 * j + 1] = bytes;
    }
    if (per > 0)
        FM_MPI_TRY_GOTO(st, done, MPI_Allgather(mine, (int)per, MPI_UINT64_T, all, (int)per, MPI_UINT64_T,
                                                f->comm));

    /* 2. One dataset per tensor, each rank writing its rows with collective transfers. */
    for (int g = 0, j = 0; g < ngroups && !st; g++) {
        hid_t grp = -1;
        char gpath[FM_CHECKPOINT_NAME_MAX + 2];
        snprintf(gpath, sizeof gpath, "/%s", groups[g].name);
        st = fm_comm_agree(f->comm, open_group(f, gpath, 1, &grp));
        for (int i = 0; i < groups[g].ntensors && !st; i++, j++) {
            const tensor_job *jb = &jobs[j];
            const fm_checkpoint_tensor *t = jb->t;
            char dpath[2 * FM_CHECKPOINT_NAME_MAX + 4];
            hid_t d = -1;
            fm_status lst = create_tensor_dataset(f, groups[g].name, t, dpath, sizeof dpath, &d);
            uint32_t crc = crc_combine_parts(&all[2 * (size_t)j], &all[2 * (size_t)j + 1], f->nranks, per);
            if (!lst) lst = set_crc_attr(d, crc, dpath);
            lst = fm_comm_agree(f->comm, lst);
            for (int r = 0; r < jb->rounds && !lst; r++) {
                size_t r0, r1;
                round_rows(jb, r, &r0, &r1);
                hid_t fs = -1, ms = -1;
                const float *src = r1 > r0 ? elem_ptr(&groups[g], t->offset + r0 * jb->row)
                                           : groups[g].data;
                lst = select_rows(t, jb->row, r0, r1, &fs, &ms);
                if (!lst && H5Dwrite(d, H5T_NATIVE_FLOAT, ms, fs, f->dxpl, src) < 0) {
                    char note[FM_CKPT_PATH_MAX + 64];
                    lst = H5ERR(FM_ERR_IO, "cannot write %s of %s (%s)", dpath, f->tmp_path,
                                free_space_note(f->path, note, sizeof note));
                }
                close_id(&fs, H5Sclose);
                close_id(&ms, H5Sclose);
                lst = fm_comm_agree(f->comm, lst);
            }
            if (d >= 0) H5Dclose(d);
            f->tensor_bytes += (uint64_t)jb->numel * sizeof(float);
            st = lst;
        }
        if (grp >= 0) H5Gclose(grp);
    }
done:
    free(mine);
    free(all);
    free(jobs);
    fm_h5_quiet_end(&q);
    return st;
}

/* ---- writing the tensors outside HDF5 ------------------------------------------------------ */

fm_status fm_checkpoint_file_define_groups(fm_checkpoint_file *f, const fm_checkpoint_group *groups,
                                           int ngroups, fm_checkpoint_extent **ext, int *n,
                                           int *njobs)
{
    *ext = NULL;
    *n = 0;
    *njobs = 0;
    if (!f || !f->writing) return FM_ERR(FM_ERR_INTERNAL, "checkpoint file not open for writing");
    tensor_job *jobs = NULL;
    int nj = 0;
    fm_status st = plan_jobs(groups, ngroups, f->nranks, f->rank, &jobs, &nj);
    fm_checkpoint_extent *e = NULL;
    if (!st) {
        e = calloc(nj > 0 ? (size_t)nj : 1, sizeof *e);
        if (!e) st = FM_ERR(FM_ERR_NOMEM, "out of memory for checkpoint extents");
    }
    st = fm_comm_agree(f->comm, st);
    if (st) {
        free(jobs);
        free(e);
        return st;
    }
    fm_h5_quiet q;
    fm_h5_quiet_begin(&q);
    int ne = 0;
    for (int g = 0, j = 0; g < ngroups && !st; g++) {
        hid_t grp = -1;
        char gpath[FM_CHECKPOINT_NAME_MAX + 2];
        snprintf(gpath, sizeof gpath, "/%s", groups[g].name);
        st = fm_comm_agree(f->comm, open_group(f, gpath, 1, &grp));
        for (int i = 0; i < groups[g].ntensors && !st; i++, j++) {
            const tensor_job *jb = &jobs[j];
            const fm_checkpoint_tensor *t = jb->t;
            char dpath[2 * FM_CHECKPOINT_NAME_MAX + 4];
            hid_t d = -1;
            fm_status lst = create_tensor_dataset(f, groups[g].name, t, dpath, sizeof dpath, &d);
            haddr_t addr = d >= 0 ? H5Dget_offset(d) : HADDR_UNDEF;
            if (!lst && addr == HADDR_UNDEF)
                lst = H5ERR(FM_ERR_IO, "dataset %s of %s has no storage address", dpath,
                            f->tmp_path);
            if (!lst && jb->hi > jb->lo) {
                e[ne].group = g;
                e[ne].job = j;
                e[ne].elem = t->offset + jb->lo;
                e[ne].count = jb->hi - jb->lo;
                e[ne].file_offset = (uint64_t)addr + (uint64_t)jb->lo * sizeof(float);
                ne++;
            }
            if (d >= 0) H5Dclose(d);
            f->tensor_bytes += (uint64_t)jb->numel * sizeof(float);
            st = fm_comm_agree(f->comm, lst);
        }
        if (grp >= 0) H5Gclose(grp);
    }
    fm_h5_quiet_end(&q);
    free(jobs);
    if (st) {
        free(e);
        return st;
    }
    *ext = e;
    *n = ne;
    *njobs = nj;
    return NULL;
}

fm_status fm_checkpoint_file_finish_groups(fm_checkpoint_file *f, const fm_checkpoint_group *groups,
                                           int ngroups, const uint64_t *crc_len)
{
    if (!f || !f->writing) return FM_ERR(FM_ERR_INTERNAL, "checkpoint file not open for writing");
    int nj = 0;
    for (int g = 0; g < ngroups; g++) nj += groups[g].ntensors;
    size_t per = (size_t)nj * 2;
    uint64_t *all = calloc((per > 0 ? per : 1) * (size_t)f->nranks, sizeof *all);
    fm_status st = all ? NULL : FM_ERR(FM_ERR_NOMEM, "out of memory for checkpoint checksums");
    st = fm_comm_agree(f->comm, st);
    if (st) return st;
    if (per > 0)
        FM_MPI_KEEP(st, MPI_Allgather(crc_len, (int)per, MPI_UINT64_T, all, (int)per, MPI_UINT64_T,
                                      f->comm));
    st = fm_comm_agree(f->comm, st);
    fm_h5_quiet q;
    fm_h5_quiet_begin(&q);
    for (int g = 0, j = 0; g < ngroups && !st; g++)
        for (int i = 0; i < groups[g].ntensors && !st; i++, j++) {
            char dpath[2 * FM_CHECKPOINT_NAME_MAX + 4];
            snprintf(dpath, sizeof dpath, "/%s/%s", groups[g].name, groups[g].tensors[i].name);
            uint32_t crc = crc_combine_parts(&all[2 * (size_t)j], &all[2 * (size_t)j + 1],
                                             f->nranks, per);
            hid_t d = H5Dopen2(f->fid, dpath, H5P_DEFAULT);
            fm_status lst = d < 0 ? H5ERR(FM_ERR_IO, "cannot open %s in %s", dpath, f->tmp_path)
                                  : set_crc_attr(d, crc, dpath);
            if (d >= 0) H5Dclose(d);
            st = fm_comm_agree(f->comm, lst);
        }
    fm_h5_quiet_end(&q);
    free(all);
    return st;
}

fm_status fm_checkpoint_file_write_text(fm_checkpoint_file *f, const char *dset, const char *text)
{
    if (!f || !f->writing) return FM_ERR(FM_ERR_INTERNAL, "checkpoint file not open for writing");
    fm_h5_quiet q;
    fm_h5_quiet_begin(&q);
    size_t len = strlen(text);
    size_t size = len > 0 ? len : 1;
    char zero = '\0';
    const char *bytes = len > 0 ? text : &zero;
    hid_t type = H5Tcopy(H5T_C_S1), space = H5Screate(H5S_SCALAR), d = -1;
    H5Tset_size(type, size);
    H5Tset_strpad(type, H5T_STR_NULLPAD);
    fm_status st = create_dataset(f, dset, type, space, &d);
    if (!st) st = set_crc_attr(d, fm_checkpoint_crc32(bytes, size), dset);
    st = fm_comm_agree(f->comm, st);
    /* Rank 0 writes the bytes with an independent transfer; the others have nothing to do. */
    if (!st && f->rank == 0 && H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, bytes) < 0)
        st = H5ERR(FM_ERR_IO, "cannot write %s of %s", dset, f->tmp_path);
    st = fm_comm_agree(f->comm, st);
    if (d >= 0) H5Dclose(d);
    H5Sclose(space);
    H5Tclose(type);
    fm_h5_quiet_end(&q);
    return st;
}

static fm_status write_u64_2d(fm_checkpoint_file *f, const char *dset, const uint64_t *v, int ndim,
                              const hsize_t *dims, size_t n)
{
    fm_h5_quiet q;
    fm_h5_quiet_begin(&q);
    hid_t space = H5Screate_simple(ndim, dims, NULL), d = -1;
    fm_status st = create_dataset(f, dset, H5T_STD_U64LE, space, &d);
    if (!st) st = set_crc_attr(d, fm_checkpoint_crc32(v, n * sizeof *v), dset);
    st = fm_comm_agree(f->comm, st);
    if (!st && f->rank == 0 && n > 0 &&
        H5Dwrite(d, H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) < 0)
        st = H5ERR(FM_ERR_IO, "cannot write %s of %s", dset, f->tmp_path);
    st = fm_comm_agree(f->comm, st);
    if (d >= 0) H5Dclose(d);
    H5Sclose(space);
    fm_h5_quiet_end(&q);
    return st;
}

fm_status fm_checkpoint_file_write_u64(fm_checkpoint_file *f, const char *dset, const uint64_t *v,
                                       size_t n)
{
    if (!f || !f->writing) return FM_ERR(FM_ERR_INTERNAL, "checkpoint file not open for writing");
    hsize_t dims[1] = {(hsize_t)n};
    return write_u64_2d(f, dset, v, 1, dims, n);
}

fm_status fm_checkpoint_file_write_u64_per_rank(fm_checkpoint_file *f, const char *dset,
                                                const uint64_t *local, size_t n)
{
    if (!f || !f->writing) return FM_ERR(FM_ERR_INTERNAL, "checkpoint file not open for writing");
    if (n > (size_t)INT_MAX / (size_t)f->nranks)
        return FM_ERR(FM_ERR_INTERNAL, "checkpoint: per-rank array too long");
    size_t total = n * (size_t)f->nranks;
    uint64_t *all = malloc((total > 0 ? total : 1) * sizeof *all);
    fm_status st = all ? NULL : FM_ERR(FM_ERR_NOMEM, "out of memory gathering %s", dset);
    st = fm_comm_agree(f->comm, st);
    if (st) {
        free(all);
        return st;
    }
    if (n > 0)
        FM_MPI_TRY_GOTO(st, done, MPI_Allgather(local, (int)n, MPI_UINT64_T, all, (int)n, MPI_UINT64_T,
                                                f->comm));
    hsize_t dims[2] = {(hsize_t)f->nranks, (hsize_t)n};
    st = write_u64_2d(f, dset, all, 2, dims, total);
done:
    free(all);
    return st;
}

static fm_status set_attr_on(fm_checkpoint_file *f, const char *obj, const char *name, hid_t type,
                             const void *value, int is_string)
{
    if (!f || !f->writing) return FM_ERR(FM_ERR_INTERNAL, "checkpoint file not open for writing");
    fm_h5_quiet q;
    fm_h5_quiet_begin(&q);
    hid_t o = -1;
    fm_status st = open_group(f, obj, 1, &o);
    if (!st)
        st = is_string ? write_str_attr(o, name, (const char *)value, obj)
                       : write_attr(o, name, type, value, obj);
    if (o >= 0) H5Oclose(o);
    st = fm_comm_agree(f->comm, st);
    fm_h5_quiet_end(&q);
    return st;
}

fm_status fm_checkpoint_file_attr_i64(fm_checkpoint_file *f, const char *obj, const char *name,
                                      int64_t value)
{
    return set_attr_on(f, obj, name, H5T_STD_I64LE, &value, 0);
}

fm_status fm_checkpoint_file_attr_f64(fm_checkpoint_file *f, const char *obj, const char *name,
                                      double value)
{
    return set_attr_on(f, obj, name, H5T_IEEE_F64LE, &value, 0);
}

fm_status fm_checkpoint_file_attr_str(fm_checkpoint_file *f, const char *obj, const char *name,
                                      const char *value)
{
    return set_attr_on(f, obj, name, -1, value, 1);
}

hid_t fm_checkpoint_file_hid(const fm_checkpoint_file *f) { return f ? f->fid : -1; }
hid_t fm_checkpoint_file_hid_read(const fm_checkpoint_file *f) { return f ? f->fid : -1; }
const char *fm_checkpoint_file_path(const fm_checkpoint_file *f) { return f ? f->path : ""; }
int fm_checkpoint_file_nranks(const fm_checkpoint_file *f) { return f ? f->nranks : 1; }

/* ---- publication ------------------------------------------------------------------------- */

static fm_status fsync_path(const char *path, int is_dir)
{
    int fd = open(path, O_RDONLY | (is_dir ? O_DIRECTORY : 0));
    if (fd < 0) return FM_ERR(FM_ERR_IO, "cannot open %s to sync it: %s", path, strerror(errno));
    int rc = fsync(fd);
    int err = errno;
    close(fd);
    /* Some file systems cannot sync a directory (EINVAL); their renames are durable anyway. */
    if (rc != 0 && !(is_dir && (err == EINVAL || err == EROFS)))
        return FM_ERR(FM_ERR_IO, "fsync of %s failed: %s", path, strerror(err));
    return NULL;
}

/* Appends "; <st's message>" (or the message alone) to warn (size bytes) and frees st. */
static void add_warning(char *warn, size_t size, fm_status st)
{
    if (!st) return;
    size_t used = strlen(warn);
    if (used + 1 < size)
        snprintf(warn + used, size - used, "%s%s", used ? "; " : "", fm_status_message(st));
    fm_status_free(&st);
}

/* Rank 0's part of the commit: everything after the collective close. An error before the rename
 * means the checkpoint was not written; once the rename is done it was, so what fails afterwards
 * (syncing the directory, `latest`, deleting old checkpoints) is a warning in `warn`, never an
 * error that would call a published checkpoint "not written". */
static fm_status publish(const fm_checkpoint_file *f, int keep_last, uint64_t *file_bytes,
                         char *warn, size_t wsize)
{
    char dir[FM_CKPT_PATH_MAX];
    FM_TRY(dir_of(f->path, dir, sizeof dir));
    FM_TRY(fsync_path(f->tmp_path, 0));
    struct stat sb;
    if (stat(f->tmp_path, &sb) != 0)
        return FM_ERR(FM_ERR_IO, "cannot stat %s: %s", f->tmp_path, strerror(errno));
    *file_bytes = (uint64_t)sb.st_size;
    if (rename(f->tmp_path, f->path) != 0) {
        int err = errno;
        if (err == EISDIR || err == ENOTEMPTY || err == EEXIST)
            return FM_ERR(FM_ERR_CONFIG,
                          "cannot rename %s to %s: %s: a directory of that name is in the way; "
                          "move or remove it and start again",
                          f->tmp_path, f->path, strerror(err));
        return FM_ERR(FM_ERR_IO, "cannot rename %s to %s: %s", f->tmp_path, f->path, strerror(err));
    }
    add_warning(warn, wsize, fsync_path(dir, 1));
    const char *base = strrchr(f->path, '/');
    base = base ? base + 1 : f->path;
    if (keep_last < 0) return NULL; /* a file outside a run's checkpoints (fmtrain import) */
    add_warning(warn, wsize, fm_checkpoint_dir_write_latest(dir, base));
    if (keep_last > 0) {
        fm_status pst = fm_checkpoint_dir_prune(dir, keep_last, base);
        if (pst)
            fm_status_prefix(pst, "[checkpoint] keep_last = %d is not enforced", keep_last);
        add_warning(warn, wsize, pst);
    }
    char odd[1024];
    int n = fm_checkpoint_dir_odd_entries(dir, odd, sizeof odd);
    if (n > 0)
        add_warning(warn, wsize,
                    FM_ERR(FM_ERR_IO, "%d entr%s named like a checkpoint or `latest` %s not a "
                                      "regular file and %s ignored (%s); move or remove %s",
                           n, n == 1 ? "y" : "ies", n == 1 ? "is" : "are", n == 1 ? "is" : "are",
                           odd, n == 1 ? "it" : "them"));
    return NULL;
}

fm_status fm_checkpoint_file_commit(fm_checkpoint_file **fp, int keep_last,
                                    fm_checkpoint_write_stats *stats)
{
    fm_checkpoint_file *f = *fp;
    if (!f || !f->writing) return FM_ERR(FM_ERR_INTERNAL, "checkpoint file not open for writing");
    fm_h5_quiet q;
    fm_h5_quiet_begin(&q);
    fm_status st = NULL;
    if (H5Fflush(f->fid, H5F_SCOPE_GLOBAL) < 0)
        st = H5ERR(FM_ERR_IO, "cannot flush checkpoint %s", f->tmp_path);
    st = fm_comm_agree(f->comm, st);
    if (!st) {
        herr_t e = H5Fclose(f->fid);
        f->fid = -1;
        if (e < 0) st = H5ERR(FM_ERR_IO, "cannot close checkpoint %s", f->tmp_path);
        st = fm_comm_agree(f->comm, st);
    }
    uint64_t file_bytes = 0;
    char warn[sizeof stats->warning] = "";
    if (!st && f->rank == 0) st = publish(f, keep_last, &file_bytes, warn, sizeof warn);
    st = fm_comm_agree(f->comm, st);
    fm_h5_quiet_end(&q);
    if (st) {
        /* Remove the temporary file only if it was not yet renamed (a failure after the rename
         * leaves a complete checkpoint in place). */
        fm_checkpoint_file_abort(fp);
        return st;
    }
    /* Published: rank 0's timing and size for every rank's report. */
    fm_checkpoint_write_stats ws = {file_bytes, f->tensor_bytes, fm_util_now() - f->t_start, ""};
    fm_util_strlcpy(ws.warning, warn, sizeof ws.warning);
    FM_MPI_KEEP(st, MPI_Bcast(&ws.seconds, 1, MPI_DOUBLE, 0, f->comm));
    FM_MPI_KEEP(st, MPI_Bcast(&ws.file_bytes, 1, MPI_UINT64_T, 0, f->comm));
    free_file(fp);
    if (st) return st;
    if (stats) *stats = ws;
    return NULL;
}

void fm_checkpoint_file_abort(fm_checkpoint_file **fp)
{
    fm_checkpoint_file *f = *fp;
    if (!f) return;
    fm_h5_quiet q;
    fm_h5_quiet_begin(&q);
    /* The collective close below still writes metadata. After a failed write (a full disk, a quota)
     * that could fail again on some ranks only and leave HDF5's ranks in different states. Where
     * the file's space was reserved the metadata lands in blocks the file already owns, so they are
     * kept; otherwise the temporary file's data blocks are released first (truncated to nothing),
     * which gives the close room for its metadata. The file is deleted right after anyway. */
    fm_status st = NULL; /* every step runs; a failure here cannot be reported (see the header) */
    if (f->fid >= 0 && f->writing) {
        if (f->rank == 0 && !f->reserved && truncate(f->tmp_path, 0) != 0) { /* nothing to do */
        }
        if (f->parallel) FM_MPI_KEEP(st, MPI_Barrier(f->comm));
    }
    if (f->fid >= 0) H5Fclose(f->fid);
    H5Eclear2(H5E_DEFAULT);
    f->fid = -1;
    if (f->parallel) FM_MPI_KEEP(st, MPI_Barrier(f->comm));
    if (f->writing && f->rank == 0) unlink(f->tmp_path);
    if (f->parallel) FM_MPI_KEEP(st, MPI_Barrier(f->comm));
    fm_status_free(&st);
    fm_h5_quiet_end(&q);
    free_file(fp);
}

/* ---- reading ----------------------------------------------------------------------------- */

fm_status fm_checkpoint_file_open(MPI_Comm comm, const char *path, const char *format_name,
                                  int *format_version, const fm_checkpoint_io_opts *opts,
                                  fm_checkpoint_file **out)
{
    *out = NULL;
    fm_checkpoint_file *f = NULL;
    FM_TRY(new_file(comm, path, &f));
    fm_h5_quiet q;
    fm_h5_quiet_begin(&q);
    hid_t fapl = -1;
    fm_status st = NULL;
    /* Every rank checks that the file exists so the error names it rather than HDF5's internals. */
    struct stat sb;
    if (stat(path, &sb) != 0)
        st = FM_ERR(FM_ERR_INPUT, "cannot open checkpoint %s: %s", path, strerror(errno));
    else if (!S_ISREG(sb.st_mode))
        st = FM_ERR(FM_ERR_INPUT, "checkpoint %s is not a regular file", path);
    st = fm_comm_agree(f->comm, st);
    if (!st) {
        fm_checkpoint_io_opts ro = {0, opts ? opts->mpiio_hints : NULL, 0};
        st = make_fapl(f, &ro, &fapl);
    }
    if (!st) st = make_dxpl(f, opts ? opts->mpiio_hints : NULL);
    st = fm_comm_agree(f->comm, st);
    if (!st) {
        f->fid = H5Fopen(path, H5F_ACC_RDONLY, fapl);
        if (f->fid < 0)
            st = H5ERR(FM_ERR_INPUT, "%s is not a readable HDF5 file (truncated or damaged?)", path);
    }
    st = fm_comm_agree(f->comm, st);
    char *fmt = NULL;
    if (!st) {
        st = fm_checkpoint_file_get_attr_str(f, "/", "format", &fmt);
        if (st || strcmp(fmt, format_name) != 0) {
            fm_status_free(&st);
            st = FM_ERR(FM_ERR_INPUT, "%s is not a %s file (root attribute 'format' is %s)", path,
                        format_name, fmt ? fmt : "missing");
        }
    }
    if (!st) {
        int64_t v = 0;
        st = fm_checkpoint_file_get_attr_i64(f, "/", "format_version", &v);
        if (!st && format_version) *format_version = (int)v;
    }
    free(fmt);
    st = fm_comm_agree(f->comm, st);
    close_id(&fapl, H5Pclose);
    fm_h5_quiet_end(&q);
    if (st) {
        fm_checkpoint_file_close(&f);
        return st;
    }
    *out = f;
    return NULL;
}

void fm_checkpoint_file_close(fm_checkpoint_file **fp)
{
    fm_checkpoint_file *f = *fp;
    if (!f) return;
    if (f->writing) {
        fm_checkpoint_file_abort(fp);
        return;
    }
    fm_h5_quiet q;
    fm_h5_quiet_begin(&q);
    if (f->fid >= 0) H5Fclose(f->fid);
    H5Eclear2(H5E_DEFAULT);
    f->fid = -1;
    fm_h5_quiet_end(&q);
    free_file(fp);
}

int fm_checkpoint_file_exists(fm_checkpoint_file *f, const char *obj)
{
    if (!f || f->fid < 0) return 0;
    if (strcmp(obj, "/") == 0) return 1;
    fm_h5_quiet q;
    fm_h5_quiet_begin(&q);
    /* Check each component so a missing parent is "no" rather than an error. */
    char buf[FM_CKPT_PATH_MAX];
    fm_util_strlcpy(buf, obj, sizeof buf);
    int ok = 1;
    for (char *p = buf + 1; ok; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            if (H5Lexists(f->fid, buf, H5P_DEFAULT) <= 0) ok = 0;
            *p = c;
            if (c == '\0') break;
        }
    }
    H5Eclear2(H5E_DEFAULT);
    fm_h5_quiet_end(&q);
    return ok;
}

static fm_status read_stored_crc(hid_t d, const char *dset, const char *path, uint32_t *crc)
{
    if (H5Aexists(d, "crc32") <= 0)
        return FM_ERR(FM_ERR_INPUT, "%s: dataset %s has no crc32 attribute", path, dset);
    hid_t a = H5Aopen(d, "crc32", H5P_DEFAULT);
    fm_status st = NULL;
    if (a < 0 || H5Aread(a, H5T_NATIVE_UINT32, crc) < 0)
        st = H5ERR(FM_ERR_INPUT, "%s: cannot read the crc32 attribute of %s", path, dset);
    if (a >= 0) H5Aclose(a);
    return st;
}

static fm_status crc_mismatch(const char *path, const char *dset, uint32_t stored, uint32_t computed)
{
    return FM_ERR(FM_ERR_INPUT,
                  "%s is damaged: dataset %s fails its CRC-32 check (stored 0x%08x, computed 0x%08x)",
                  path, dset, stored, computed);
}

/* Exchanges the parts read by each rank so every rank holds whole buffers. */
static fm_status replicate_parts(fm_checkpoint_file *f, const fm_checkpoint_group *groups,
                                 int ngroups)
{
    for (int r = 0; r < f->nranks; r++) {
        tensor_job *jobs = NULL;
        int nj = 0;
        FM_TRY(plan_jobs(groups, ngroups, f->nranks, r, &jobs, &nj));
        /* Coalesce rank r's parts into maximal contiguous ranges of each flat buffer. Groups with
         * explicit parts stay where they were read. */
        int j = 0;
        while (j < nj) {
            int g = jobs[j].group;
            if (groups[g].parts) {
                j++;
                continue;
            }
            size_t a = jobs[j].t->offset + jobs[j].lo, b = jobs[j].t->offset + jobs[j].hi;
            int k = j + 1;
            while (k < nj && jobs[k].group == g) {
                size_t a2 = jobs[k].t->offset + jobs[k].lo, b2 = jobs[k].t->offset + jobs[k].hi;
                if (a2 == b2) {
                    k++;
                    continue;
                }
                if (a2 != b && a != b) break;
                if (a == b) a = a2;
                b = b2;
                k++;
            }
            for (size_t p = a; p < b; p += FM_CKPT_MAX_BCAST_FLOATS) {
                size_t cnt = b - p < FM_CKPT_MAX_BCAST_FLOATS ? b - p : FM_CKPT_MAX_BCAST_FLOATS;
                fm_status st = NULL;
                FM_MPI_KEEP(st, MPI_Bcast(groups[g].data + p, (int)cnt, MPI_FLOAT, r, f->comm));
                if (st) {
                    free(jobs);
                    return fm_status_prefix(st, "replicating the tensors read from %s", f->path);
                }
            }
            j = k;
        }
        free(jobs);
    }
    return NULL;
}

fm_status fm_checkpoint_file_read_groups(fm_checkpoint_file *f, const fm_checkpoint_group *groups,
                                         int ngroups, int replicate)
{
    if (!f || f->writing) return FM_ERR(FM_ERR_INTERNAL, "checkpoint file not open for reading");
    tensor_job *jobs = NULL;
    int nj = 0;
    fm_status st = plan_jobs(groups, ngroups, f->nranks, f->rank, &jobs, &nj);
    if (!st) st = check_bases(groups, ngroups, f->rank);
    st = fm_comm_agree(f->comm, st);
    if (st) return st;
    fm_h5_quiet q;
    fm_h5_quiet_begin(&q);
    size_t per = (size_t)nj * 2;
    uint64_t *mine = calloc(per > 0 ? per : 1, sizeof *mine);
    uint64_t *all = calloc((per > 0 ? per : 1) * (size_t)f->nranks, sizeof *all);
    uint32_t *stored = calloc(nj > 0 ? (size_t)nj : 1, sizeof *stored);
    if (!mine || !all || !stored) st = FM_ERR(FM_ERR_NOMEM, "out of memory for checkpoint checksums");
    st = fm_comm_agree(f->comm, st);
    for (int j = 0; j < nj && !st; j++) {
        const tensor_job *jb = &jobs[j];
        const fm_checkpoint_tensor *t = jb->t;
        const char *gname = groups[jb->group].name;
        char dpath[2 * FM_CHECKPOINT_NAME_MAX + 4];
        snprintf(dpath, sizeof dpath, "/%s/%s", gname, t->name);
        fm_status lst = NULL;
        hid_t d = -1;
        if (!fm_checkpoint_file_exists(f, dpath))
            lst = FM_ERR(FM_ERR_INPUT, "%s has no dataset %s", f->path, dpath);
        if (!lst) {
            d = H5Dopen2(f->fid, dpath, H5P_DEFAULT);
            if (d < 0) lst = H5ERR(FM_ERR_INPUT, "%s: cannot open dataset %s", f->path, dpath);
        }
        if (!lst) {
            hid_t sp = H5Dget_space(d);
            hsize_t dims[H5S_MAX_RANK];
            int nd = sp >= 0 ? H5Sget_simple_extent_dims(sp, dims, NULL) : -1;
            if (sp >= 0) H5Sclose(sp);
            hid_t ty = H5Dget_type(d);
            int isf = ty >= 0 && H5Tget_class(ty) == H5T_FLOAT && H5Tget_size(ty) == 4;
            if (ty >= 0) H5Tclose(ty);
            int same = nd == t->ndim;
            for (int k = 0; same && k < nd; k++) same = dims[k] == (hsize_t)t->shape[k];
            if (!same || !isf) {
                char want[128] = "", have[128] = "";
                for (int k = 0; k < t->ndim; k++)
                    snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", k ? "," : "",
                             (long long)t->shape[k]);
                for (int k = 0; k < nd && k < FM_CHECKPOINT_MAX_DIMS; k++)
                    snprintf(have + strlen(have), sizeof have - strlen(have), "%s%llu", k ? "," : "",
                             (unsigned long long)dims[k]);
                lst = FM_ERR(FM_ERR_INPUT, "%s: dataset %s is %s (%s), expected float32 (%s)", f->path,
                             dpath, isf ? "float32" : "not float32", have, want);
            }
        }
        if (!lst) lst = read_stored_crc(d, dpath, f->path, &stored[j]);
        lst = fm_comm_agree(f->comm, lst);
        const fm_checkpoint_group *grp = &groups[jb->group];
        for (int r = 0; r < jb->rounds && !lst; r++) {
            size_t r0, r1;
            round_rows(jb, r, &r0, &r1);
            hid_t fs = -1, ms = -1;
            float *dst = r1 > r0 ? elem_ptr(grp, t->offset + r0 * jb->row) : grp->data;
            lst = select_rows(t, jb->row, r0, r1, &fs, &ms);
            if (!lst && H5Dread(d, H5T_NATIVE_FLOAT, ms, fs, f->dxpl, dst) < 0)
                lst = H5ERR(FM_ERR_INPUT, "%s: cannot read %s (truncated file?)", f->path, dpath);
            close_id(&fs, H5Sclose);
            close_id(&ms, H5Sclose);
            lst = fm_comm_agree(f->comm, lst);
        }
        if (d >= 0) H5Dclose(d);
        if (!lst) {
            size_t bytes = (jb->hi - jb->lo) * sizeof(float);
            mine[2 * j] = bytes ? fm_checkpoint_crc32(elem_ptr(grp, t->offset + jb->lo), bytes) : 0;
            mine[2 * j + 1] = bytes;
        }
        st = lst;
    }
    if (!st) {
        if (f->parallel && per > 0)
            FM_MPI_KEEP(st, MPI_Allgather(mine, (int)per, MPI_UINT64_T, all, (int)per, MPI_UINT64_T,
                                          f->comm));
        else
            memcpy(all, mine, per * sizeof *all);
        for (int j = 0; j < nj && !st; j++) {
            uint32_t c = crc_combine_parts(&all[2 * (size_t)j], &all[2 * (size_t)j + 1], f->nranks, per);
            if (c != stored[j]) {
                char dpath[2 * FM_CHECKPOINT_NAME_MAX + 4];
                snprintf(dpath, sizeof dpath, "/%s/%s", groups[jobs[j].group].name, jobs[j].t->name);
                st = fm_status_collective(crc_mismatch(f->path, dpath, stored[j], c));
            }
        }
    }
    if (!st && replicate && f->parallel) st = fm_comm_agree(f->comm, replicate_parts(f, groups, ngroups));
    free(stored);
    free(mine);
    free(all);
    free(jobs);
    fm_h5_quiet_end(&q);
    return st;
}

/* Opens a small dataset that every rank reads whole; checks its CRC. *buf is malloc'ed with one
 * extra zero byte. */
static fm_status read_small(fm_checkpoint_file *f, const char *dset, hid_t *type_out, hsize_t *npoints,
                            void **buf, size_t *bytes)
{
    *buf = NULL;
    *bytes = 0;
    *type_out = -1;
    if (!fm_checkpoint_file_exists(f, dset))
        return FM_ERR(FM_ERR_INPUT, "%s has no dataset %s", f->path, dset);
    hid_t d = H5Dopen2(f->fid, dset, H5P_DEFAULT);
    if (d < 0) return H5ERR(FM_ERR_INPUT, "%s: cannot open dataset %s", f->path, dset);
    fm_status st = NULL;
    hid_t ty = H5Dget_type(d), sp = H5Dget_space(d);
    hssize_t np = sp >= 0 ? H5Sget_simple_extent_npoints(sp) : -1;
    size_t tsz = ty >= 0 ? H5Tget_size(ty) : 0;
    if (np < 0 || tsz == 0) st = H5ERR(FM_ERR_INPUT, "%s: cannot inspect dataset %s", f->path, dset);
    uint32_t crc = 0;
    if (!st) st = read_stored_crc(d, dset, f->path, &crc);
    if (!st) {
        *bytes = (size_t)np * tsz;
        *buf = calloc(*bytes + 1, 1);
        if (!*buf) st = FM_ERR(FM_ERR_NOMEM, "out of memory reading %s", dset);
    }
    if (!st && np > 0 && H5Dread(d, ty, H5S_ALL, H5S_ALL, H5P_DEFAULT, *buf) < 0)
        st = H5ERR(FM_ERR_INPUT, "%s: cannot read %s (truncated file?)", f->path, dset);
    if (!st) {
        uint32_t c = fm_checkpoint_crc32(*buf, *bytes);
        if (c != crc) st = crc_mismatch(f->path, dset, crc, c);
    }
    if (sp >= 0) H5Sclose(sp);
    H5Dclose(d);
    if (st) {
        if (ty >= 0) H5Tclose(ty);
        free(*buf);
        *buf = NULL;
        return st;
    }
    *type_out = ty;
    *npoints = (hsize_t)np;
    return NULL;
}

fm_status fm_checkpoint_file_read_text(fm_checkpoint_file *f, const char *dset, char **text)
{
    *text = NULL;
    fm_h5_quiet q;
    fm_h5_quiet_begin(&q);
    hid_t ty = -1;
    hsize_t np = 0;
    void *buf = NULL;
    size_t bytes = 0;
    fm_status st = read_small(f, dset, &ty, &np, &buf, &bytes);
    if (!st && (H5Tget_class(ty) != H5T_STRING || np != 1)) {
        st = FM_ERR(FM_ERR_INPUT, "%s: %s is not a text dataset", f->path, dset);
        free(buf);
        buf = NULL;
    }
    if (ty >= 0) H5Tclose(ty);
    st = fm_comm_agree(f->comm, st);
    fm_h5_quiet_end(&q);
    if (st) {
        free(buf);
        return st;
    }
    *text = buf; /* NUL padding ends the string */
    return NULL;
}

fm_status fm_checkpoint_file_read_u64(fm_checkpoint_file *f, const char *dset, uint64_t *v, size_t n)
{
    fm_h5_quiet q;
    fm_h5_quiet_begin(&q);
    hid_t ty = -1;
    hsize_t np = 0;
    void *buf = NULL;
    size_t bytes = 0;
    fm_status st = read_small(f, dset, &ty, &np, &buf, &bytes);
    if (!st && (H5Tget_class(ty) != H5T_INTEGER || H5Tget_size(ty) != 8 || np != n))
        st = FM_ERR(FM_ERR_INPUT, "%s: %s holds %llu values, expected %zu uint64", f->path, dset,
                    (unsigned long long)np, n);
    if (!st) {
        /* The bytes were read in the file's type (little-endian uint64); convert to native. */
        const unsigned char *b = buf;
        for (size_t i = 0; i < n; i++) {
            uint64_t x = 0;
            for (int k = 7; k >= 0; k--) x = (x << 8) | b[8 * i + (size_t)k];
            v[i] = x;
        }
    }
    if (ty >= 0) H5Tclose(ty);
    free(buf);
    st = fm_comm_agree(f->comm, st);
    fm_h5_quiet_end(&q);
    return st;
}

fm_status fm_checkpoint_file_dataset_shape(fm_checkpoint_file *f, const char *dset, int *ndim,
                                           int64_t shape[FM_CHECKPOINT_MAX_DIMS])
{
    fm_h5_quiet q;
    fm_h5_quiet_begin(&q);
    fm_status st = NULL;
    *ndim = 0;
    if (!fm_checkpoint_file_exists(f, dset)) {
        st = FM_ERR(FM_ERR_INPUT, "%s has no dataset %s", f->path, dset);
    } else {
        hid_t d = H5Dopen2(f->fid, dset, H5P_DEFAULT);
        hid_t sp = d >= 0 ? H5Dget_space(d) : -1;
        hsize_t dims[H5S_MAX_RANK];
        int nd = sp >= 0 ? H5Sget_simple_extent_dims(sp, dims, NULL) : -1;
        if (nd < 0 || nd > FM_CHECKPOINT_MAX_DIMS)
            st = H5ERR(FM_ERR_INPUT, "%s: cannot read the shape of %s", f->path, dset);
        else {
            *ndim = nd;
            for (int k = 0; shape && k < nd; k++) shape[k] = (int64_t)dims[k];
        }
        if (sp >= 0) H5Sclose(sp);
        if (d >= 0) H5Dclose(d);
    }
    fm_h5_quiet_end(&q);
    return st;
}

static fm_status get_attr(fm_checkpoint_file *f, const char *obj, const char *name, H5T_class_t cls,
                          hid_t memtype, void *value)
{
    fm_h5_quiet q;
    fm_h5_quiet_begin(&q);
    fm_status st = NULL;
    hid_t o = -1, a = -1, ty = -1;
    if (!fm_checkpoint_file_exists(f, obj)) {
        st = FM_ERR(FM_ERR_INPUT, "%s has no %s", f->path, obj);
        goto done;
    }
    o = H5Oopen(f->fid, obj, H5P_DEFAULT);
    if (o < 0 || H5Aexists(o, name) <= 0) {
        H5Eclear2(H5E_DEFAULT);
        st = FM_ERR(FM_ERR_INPUT, "%s: %s has no attribute %s", f->path, obj, name);
        goto done;
    }
    a = H5Aopen(o, name, H5P_DEFAULT);
    ty = a >= 0 ? H5Aget_type(a) : -1;
    if (ty < 0 || H5Tget_class(ty) != cls) {
        st = FM_ERR(FM_ERR_INPUT, "%s: attribute %s of %s has an unexpected type", f->path, name, obj);
        goto done;
    }
    if (cls == H5T_STRING) {
        if (H5Tis_variable_str(ty) > 0) {
            st = FM_ERR(FM_ERR_INPUT, "%s: attribute %s of %s is a variable-length string; fmtrain "
                                      "writes fixed-length ones", f->path, name, obj);
            goto done;
        }
        size_t n = H5Tget_size(ty);
        char *s = calloc(n + 1, 1);
        if (!s) {
            st = FM_ERR(FM_ERR_NOMEM, "out of memory");
            goto done;
        }
        if (H5Aread(a, ty, s) < 0) {
            free(s);
            st = H5ERR(FM_ERR_INPUT, "%s: cannot read attribute %s of %s", f->path, name, obj);
            goto done;
        }
        *(char **)value = s;
    } else if (H5Aread(a, memtype, value) < 0) {
        st = H5ERR(FM_ERR_INPUT, "%s: cannot read attribute %s of %s", f->path, name, obj);
    }
done:
    if (ty >= 0) H5Tclose(ty);
    if (a >= 0) H5Aclose(a);
    if (o >= 0) H5Oclose(o);
    fm_h5_quiet_end(&q);
    return st;
}

fm_status fm_checkpoint_file_get_attr_i64(fm_checkpoint_file *f, const char *obj, const char *name,
                                          int64_t *value)
{
    return get_attr(f, obj, name, H5T_INTEGER, H5T_NATIVE_INT64, value);
}

fm_status fm_checkpoint_file_get_attr_f64(fm_checkpoint_file *f, const char *obj, const char *name,
                                          double *value)
{
    return get_attr(f, obj, name, H5T_FLOAT, H5T_NATIVE_DOUBLE, value);
}

fm_status fm_checkpoint_file_get_attr_str(fm_checkpoint_file *f, const char *obj, const char *name,
                                          char **value)
{
    *value = NULL;
    return get_attr(f, obj, name, H5T_STRING, -1, value);
}

/* ---- verification of every dataset ---------------------------------------------------------- */

typedef struct name_list {
    char **names;
    int n, cap;
} name_list;

static fm_status name_list_add(name_list *l, const char *s)
{
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        char **nn = realloc(l->names, (size_t)cap * sizeof *nn);
        FM_CHECK_ALLOC(nn, (size_t)cap * sizeof *nn);
        l->names = nn;
        l->cap = cap;
    }
    size_t len = strlen(s) + 1;
    l->names[l->n] = malloc(len);
    FM_CHECK_ALLOC(l->names[l->n], len);
    memcpy(l->names[l->n++], s, len);
    return NULL;
}

static void name_list_free(name_list *l)
{
    for (int i = 0; i < l->n; i++) free(l->names[i]);
    free(l->names);
    memset(l, 0, sizeof *l);
}

/* Collects, depth first in name order, every dataset under group `path` that has a crc32. */
static fm_status collect_datasets(fm_checkpoint_file *f, const char *path, name_list *out, int depth)
{
    if (depth > 16) return FM_ERR(FM_ERR_INPUT, "%s: groups nested too deeply", f->path);
    hid_t g = H5Gopen2(f->fid, path, H5P_DEFAULT);
    if (g < 0) return H5ERR(FM_ERR_INPUT, "%s: cannot open group %s", f->path, path);
    H5G_info_t gi;
    fm_status st = NULL;
    if (H5Gget_info(g, &gi) < 0) st = H5ERR(FM_ERR_INPUT, "%s: cannot list group %s", f->path, path);
    for (hsize_t i = 0; !st && i < gi.nlinks; i++) {
        char name[512];
        ssize_t n = H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, i, name, sizeof name,
                                       H5P_DEFAULT);
        if (n < 0 || (size_t)n >= sizeof name) {
            st = H5ERR(FM_ERR_INPUT, "%s: cannot read link %llu of %s", f->path,
                       (unsigned long long)i, path);
            break;
        }
        char child[FM_CKPT_PATH_MAX];
        snprintf(child, sizeof child, "%s%s%s", path, strcmp(path, "/") == 0 ? "" : "/", name);
        hid_t o = H5Oopen(g, name, H5P_DEFAULT);
        if (o < 0) {
            st = H5ERR(FM_ERR_INPUT, "%s: cannot open %s", f->path, child);
            break;
        }
        H5I_type_t it = H5Iget_type(o);
        int has_crc = it == H5I_DATASET && H5Aexists(o, "crc32") > 0;
        H5Oclose(o);
        if (it == H5I_GROUP)
            st = collect_datasets(f, child, out, depth + 1);
        else if (has_crc)
            st = name_list_add(out, child);
    }
    H5Gclose(g);
    return st;
}

/* CRC of a whole dataset read in row slabs divided among ranks (bytes as stored). */
static fm_status dataset_crc(fm_checkpoint_file *f, const char *dset, uint32_t *stored,
                             uint32_t *computed, uint64_t *nbytes)
{
    hid_t d = H5Dopen2(f->fid, dset, H5P_DEFAULT);
    if (d < 0) return H5ERR(FM_ERR_INPUT, "%s: cannot open %s", f->path, dset);
    fm_status st = read_stored_crc(d, dset, f->path, stored);
    hid_t ty = H5Dget_type(d), sp = H5Dget_space(d);
    size_t tsz = ty >= 0 ? H5Tget_size(ty) : 0;
    int nd = sp >= 0 ? H5Sget_simple_extent_ndims(sp) : -1;
    hsize_t dims[H5S_MAX_RANK];
    if (!st && (tsz == 0 || nd < 0 || H5Sget_simple_extent_dims(sp, dims, NULL) < 0))
        st = H5ERR(FM_ERR_INPUT, "%s: cannot inspect %s", f->path, dset);
    uint64_t mycrc = 0, mylen = 0;
    size_t rows = 1, rowbytes = tsz;
    if (!st) {
        if (nd > 0) {
            rows = (size_t)dims[0];
            for (int k = 1; k < nd; k++) rowbytes *= (size_t)dims[k];
        }
        *nbytes = (uint64_t)rows * rowbytes;
    }
    st = fm_comm_agree(f->comm, st);
    /* Rank r checks rows [rows*r/N, rows*(r+1)/N), in slabs of up to 64 MiB. */
    size_t r_lo = st ? 0 : (size_t)split_point(rows, f->nranks, f->rank);
    size_t r_hi = st ? 0 : (size_t)split_point(rows, f->nranks, f->rank + 1);
    size_t slab_rows = ((size_t)64 << 20) / (rowbytes ? rowbytes : 1);
    if (slab_rows < 1) slab_rows = 1;
    unsigned char *buf = NULL;
    if (!st && r_hi > r_lo) {
        size_t n = (r_hi - r_lo < slab_rows ? r_hi - r_lo : slab_rows) * rowbytes;
        buf = malloc(n);
        if (!buf) st = FM_ERR(FM_ERR_NOMEM, "out of memory verifying %s", dset);
    }
    uLong c = crc32(0L, Z_NULL, 0);
    for (size_t r = r_lo; !st && r < r_hi; r += slab_rows) {
        size_t cnt = r_hi - r < slab_rows ? r_hi - r : slab_rows;
        hid_t fs = H5Scopy(sp), ms = -1;
        if (nd > 0) {
            hsize_t start[H5S_MAX_RANK] = {0}, count[H5S_MAX_RANK];
            for (int k = 0; k < nd; k++) count[k] = dims[k];
            start[0] = r;
            count[0] = cnt;
            H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL);
            hsize_t m = (hsize_t)(cnt * rowbytes / tsz);
            ms = H5Screate_simple(1, &m, NULL);
        } else {
            ms = H5Screate(H5S_SCALAR);
        }
        /* Independent reads: ranks may need different numbers of slabs. */
        if (H5Dread(d, ty, ms, fs, H5P_DEFAULT, buf) < 0)
            st = H5ERR(FM_ERR_INPUT, "%s: cannot read %s (truncated file?)", f->path, dset);
        else
            c = crc32_combine(c, fm_checkpoint_crc32(buf, cnt * rowbytes), (z_off_t)(cnt * rowbytes));
        H5Sclose(ms);
        H5Sclose(fs);
    }
    free(buf);
    mycrc = c;
    mylen = (uint64_t)(r_hi - r_lo) * rowbytes;
    if (ty >= 0) H5Tclose(ty);
    if (sp >= 0) H5Sclose(sp);
    H5Dclose(d);
    st = fm_comm_agree(f->comm, st);
    if (st) return st;
    if (!f->parallel) {
        *computed = (uint32_t)mycrc;
        return NULL;
    }
    uint64_t mine[2] = {mycrc, mylen};
    uint64_t *all = malloc(2 * (size_t)f->nranks * sizeof *all);
    if (!all) st = FM_ERR(FM_ERR_NOMEM, "out of memory verifying %s", dset);
    FM_TRY_GOTO(st, out, fm_comm_agree(f->comm, st)); /* every rank can take part, or none does */
    FM_MPI_TRY_GOTO(st, out, MPI_Allgather(mine, 2, MPI_UINT64_T, all, 2, MPI_UINT64_T, f->comm));
    *computed = crc_combine_parts(all, all + 1, f->nranks, 2);
out:
    free(all);
    return st;
}

fm_status fm_checkpoint_file_verify(fm_checkpoint_file *f, fm_checkpoint_verify_fn report,
                                    void *user, int *checked, int *failed)
{
    if (checked) *checked = 0;
    if (failed) *failed = 0;
    if (!f || f->writing) return FM_ERR(FM_ERR_INTERNAL, "checkpoint file not open for reading");
    fm_h5_quiet q;
    fm_h5_quiet_begin(&q);
    name_list names = {0};
    fm_status st = fm_comm_agree(f->comm, collect_datasets(f, "/", &names, 0));
    fm_status first_bad = NULL;
    int nchecked = 0, nfailed = 0;
    for (int i = 0; !st && i < names.n; i++) {
        uint32_t stored = 0, computed = 0;
        uint64_t bytes = 0;
        st = dataset_crc(f, names.names[i], &stored, &computed, &bytes);
        if (st) break;
        int ok = stored == computed;
        nchecked++;
        if (!ok) {
            nfailed++;
            if (!first_bad) first_bad = crc_mismatch(f->path, names.names[i], stored, computed);
        }
        if (report && f->rank == 0) report(user, names.names[i], bytes, stored, computed, ok);
    }
    name_list_free(&names);
    fm_h5_quiet_end(&q);
    if (checked) *checked = nchecked;
    if (failed) *failed = nfailed;
    if (st) {
        fm_status_free(&first_bad);
        return st;
    }
    if (first_bad && nfailed > 1)
        fm_status_prefix(first_bad, "%d of %d datasets fail their checksum", nfailed, nchecked);
    return f->parallel && first_bad ? fm_status_collective(first_bad) : first_bad;
}

/* ---- resume = auto ----------------------------------------------------------------------- */

fm_status fm_checkpoint_scan_dir(MPI_Comm comm, const char *dir, fm_checkpoint_entry **entries, int *n,
                                 int *removed)
{
    *entries = NULL;
    *n = 0;
    if (removed) *removed = 0;
    int rank = 0, count = 0;
    FM_MPI_TRY(MPI_Comm_rank(comm, &rank));
    fm_checkpoint_entry *v = NULL;
    fm_status st = NULL;
    if (rank == 0) {
        st = fm_checkpoint_dir_remove_stale(dir, removed);
        if (!st) st = fm_checkpoint_dir_list(dir, &v, &count);
    }
    FM_TRY_GOTO(st, fail, fm_comm_agree(comm, st));
    FM_MPI_TRY_GOTO(st, fail, MPI_Bcast(&count, 1, MPI_INT, 0, comm));
    if (rank != 0 && count > 0) {
        v = calloc((size_t)count, sizeof *v);
        if (!v) st = FM_ERR(FM_ERR_NOMEM, "out of memory for the list of %d checkpoints in %s", count, dir);
    }
    /* Agreed before the broadcast: every rank can receive the list, or none waits for it. */
    FM_TRY_GOTO(st, fail, fm_comm_agree(comm, st));
    if (count > 0)
        FM_MPI_TRY_GOTO(st, fail, MPI_Bcast(v, (int)((size_t)count * sizeof *v), MPI_BYTE, 0, comm));
    *entries = v;
    *n = count;
    return NULL;
fail:
    free(v);
    return st;
}

fm_status fm_checkpoint_load_newest(MPI_Comm comm, const char *dir, fm_checkpoint_load_fn load,
                                    void *user, FILE *warn, int64_t *step, char *path, size_t size)
{
    *step = -1;
    if (size) path[0] = '\0';
    int rank = 0, n = 0, removed = 0;
    FM_MPI_TRY(MPI_Comm_rank(comm, &rank));
    fm_checkpoint_entry *v = NULL;
    FM_TRY(fm_checkpoint_scan_dir(comm, dir, &v, &n, &removed));
    if (removed > 0 && warn && rank == 0)
        fprintf(warn, "fmtrain: removed %d incomplete checkpoint file%s in %s (a writer was "
                      "interrupted)\n", removed, removed == 1 ? "" : "s", dir);
    fm_status st = NULL;
    int damaged = 0;
    for (int i = 0; i < n; i++) {
        char full[FM_CKPT_PATH_MAX];
        int len = snprintf(full, sizeof full, "%s/%s", dir, v[i].name);
        if (len < 0 || (size_t)len >= sizeof full) {
            st = FM_ERR(FM_ERR_CONFIG, "checkpoint path too long in %s", dir);
            break;
        }
        fm_status lst = load(user, full);
        if (!lst) {
            *step = v[i].step;
            if (size) fm_util_strlcpy(path, full, size);
            break;
        }
        if (fm_status_code(lst) != FM_ERR_INPUT) {
            st = lst;
            break;
        }
        damaged++;
        if (warn && rank == 0)
            fprintf(warn, "fmtrain: warning: cannot resume from %s: %s; %s\n", full,
                    fm_status_message(lst),
                    i + 1 < n ? "falling back to the previous checkpoint" : "no older checkpoint left");
        fm_status_free(&lst);
    }
    if (!st && *step < 0 && damaged > 0)
        st = fm_status_collective(FM_ERR(FM_ERR_INPUT,
                                         "every checkpoint in %s is damaged (%d tried); resume "
                                         "from a PATH, or start afresh with [checkpoint] resume = "
                                         "never and --overwrite",
                                         dir, damaged));
    free(v);
    return st;
}

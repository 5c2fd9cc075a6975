/* reader.c — the training-data reader: collective parallel-HDF5 open, the global sampling order
 * (seeded Feistel permutation per epoch), this rank's slice of each step, read-ahead on a
 * background thread that uses pread() only, and the evaluation windows of a split. Rules: reader.h. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/rng.h"
#include "core/util.h"
#include "data/reader.h"
#include "data/dataset_h5.h"
#include "data/h5util.h"
#include "dist/comm.h"

/* ---- the permutation ---------------------------------------------------------------------------- */

uint64_t fm_reader_permute(uint64_t seed, uint64_t epoch, uint64_t p, uint64_t n)
{
    if (n <= 1) return 0;
    int bits = 2;
    while (bits < 64 && (1ull << bits) < n) bits++;
    if (bits & 1) bits++;
    int half = bits / 2;
    uint64_t mask = (half >= 64) ? ~0ull : ((1ull << half) - 1);
    uint64_t s = seed ^ (epoch * 0xD1B54A32D192ED03ull);
    uint64_t key[4];
    for (int i = 0; i < 4; i++) key[i] = fm_rng_next(&s);
    uint64_t x = p;
    do {
        uint64_t l = x >> half, r = x & mask;
        for (int i = 0; i < 4; i++) {
            uint64_t f = r ^ key[i];
            f = (f ^ (f >> 31)) * 0x7FB5D329728EA185ull;
            f = (f ^ (f >> 27)) * 0x81DADEF4BC2DD44Dull;
            f ^= f >> 33;
            uint64_t nl = r, nr = (l ^ f) & mask;
            l = nl;
            r = nr;
        }
        x = (l << half) | r;
    } while (x >= n);
    return x;
}

/* ---- the reader object ------------------------------------------------------------------------- */

struct fm_reader {
    char *path, *val_path;
    MPI_Comm comm;
    hid_t file, dtrain, vfile, dval; /* vfile == file when the same file */
    fm_dataset_info info;
    uint64_t val_tokens;
    int T;
    int64_t G, first, count;
    uint64_t N, Nv;
    fm_reader_state state; /* of the next step handed out */
    int32_t *buf;          /* (count, T+1): the read-ahead buffer */
    double wait_s;
    int64_t steps;
    /* read-ahead (pread of unfiltered chunks) */
    int ra;
    int fd;
    int width;
    uint64_t chunk;      /* tokens per chunk */
    uint64_t *chunk_off; /* file offset of each chunk of /train/tokens */
    uint64_t nchunks;
    pthread_t thread;
    int thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int job_pending;   /* a read has been requested and not finished */
    int job_ready;     /* buf holds the windows of job_state */
    int quit;
    fm_reader_state job_state;
    fm_status job_err;
};

/* Moves to the next epoch when the state cannot hold a whole step. */
static void normalize(const fm_reader *r, fm_reader_state *s)
{
    if (s->position + (uint64_t)r->G > r->N) {
        s->epoch++;
        s->position = 0;
    }
}

/* Reads window `w` (T+1 tokens from token w*T) of /train/tokens with pread into out. */
static fm_status pread_window(const fm_reader *r, uint64_t w, int32_t *out)
{
    uint64_t tok = w * (uint64_t)r->T, left = (uint64_t)r->T + 1;
    unsigned char raw[8192];
    while (left > 0) {
        uint64_t c = tok / r->chunk, in = tok % r->chunk;
        uint64_t n = r->chunk - in;
        if (n > left) n = left;
        if (n > sizeof raw / (uint64_t)r->width) n = sizeof raw / (uint64_t)r->width;
        size_t bytes = (size_t)n * (size_t)r->width;
        off_t off = (off_t)(r->chunk_off[c] + in * (uint64_t)r->width);
        size_t got = 0;
        while (got < bytes) {
            ssize_t k = pread(r->fd, raw + got, bytes - got, off + (off_t)got);
            if (k < 0 && errno == EINTR) continue;
            if (k <= 0)
                return FM_ERR(FM_ERR_IO, "cannot read %zu bytes at offset %lld of %s: %s", bytes - got,
                              (long long)(off + (off_t)got), r->path,
                              k < 0 ? strerror(errno) : "unexpected end of file (truncated?)");
            got += (size_t)k;
        }
        if (r->width == 2)
            for (uint64_t i = 0; i < n; i++) out[i] = (int32_t)(raw[2 * i] | (raw[2 * i + 1] << 8));
        else
            for (uint64_t i = 0; i < n; i++)
                out[i] = (int32_t)((uint32_t)raw[4 * i] | ((uint32_t)raw[4 * i + 1] << 8) |
                                   ((uint32_t)raw[4 * i + 2] << 16) | ((uint32_t)raw[4 * i + 3] << 24));
        out += n;
        tok += n;
        left -= n;
    }
    return NULL;
}

/* Reads T+1 tokens starting at token `start` of dataset ds with HDF5 (hyperslab). */
static fm_status h5_window(hid_t ds, uint64_t start, int T, int32_t *out, const char *path,
                           const char *name)
{
    hsize_t st = start, n = (hsize_t)T + 1;
    hid_t fs = H5Dget_space(ds);
    hid_t ms = H5Screate_simple(1, &n, NULL);
    herr_t e = (fs < 0 || ms < 0) ? -1 : H5Sselect_hyperslab(fs, H5S_SELECT_SET, &st, NULL, &n, NULL);
    if (e >= 0) e = H5Dread(ds, H5T_NATIVE_INT32, ms, fs, H5P_DEFAULT, out);
    if (ms >= 0) H5Sclose(ms);
    if (fs >= 0) H5Sclose(fs);
    if (e < 0)
        return FM_ERR(FM_ERR_IO, "cannot read tokens %" PRIu64 "..%" PRIu64 " of %s in %s", start,
                      start + (uint64_t)T, name, path);
    return NULL;
}

static fm_status check_ids(const int32_t *t, size_t n, uint64_t vocab, const char *path, const char *what,
                           uint64_t window)
{
    for (size_t i = 0; i < n; i++)
        if (t[i] < 0 || (uint64_t)t[i] >= vocab)
            return FM_ERR(FM_ERR_INPUT, "%s: token id %" PRId32 " in %s window %" PRIu64 " is >= vocab_size %" PRIu64
                                        " (damaged file)",
                          path, t[i], what, window, vocab);
    return NULL;
}

/* Reads this rank's windows of the step at state s into out, with pread or HDF5. */
static fm_status read_step(const fm_reader *r, const fm_reader_state *s, int32_t *out, int use_pread)
{
    size_t W = (size_t)r->T + 1;
    for (int64_t j = 0; j < r->count; j++) {
        uint64_t w = fm_reader_permute(s->seed, s->epoch, s->position + (uint64_t)(r->first + j), r->N);
        int32_t *dst = out + (size_t)j * W;
        if (use_pread) FM_TRY(pread_window(r, w, dst));
        else FM_TRY(h5_window(r->dtrain, w * (uint64_t)r->T, r->T, dst, r->path, "/train/tokens"));
        FM_TRY(check_ids(dst, W, r->info.vocab_size, r->path, "training", w));
    }
    return NULL;
}

static void *reader_thread(void *arg)
{
    fm_reader *r = arg;
    pthread_mutex_lock(&r->mu);
    for (;;) {
        while (!r->quit && (!r->job_pending || r->job_ready)) pthread_cond_wait(&r->cv, &r->mu);
        if (r->quit) break;
        fm_reader_state s = r->job_state;
        pthread_mutex_unlock(&r->mu);
        fm_status st = read_step(r, &s, r->buf, 1);
        pthread_mutex_lock(&r->mu);
        r->job_err = st;
        r->job_ready = 1;
        pthread_cond_broadcast(&r->cv);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

/* Asks the thread to read the step at r->state (no job may be pending). */
static void start_job(fm_reader *r)
{
    pthread_mutex_lock(&r->mu);
    r->job_state = r->state;
    r->job_pending = 1;
    r->job_ready = 0;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

/* Waits for the pending job; returns its status (the job is then no longer pending). */
static fm_status finish_job(fm_reader *r)
{
    pthread_mutex_lock(&r->mu);
    while (r->job_pending && !r->job_ready) pthread_cond_wait(&r->cv, &r->mu);
    fm_status st = r->job_err;
    r->job_err = NULL;
    r->job_pending = 0;
    r->job_ready = 0;
    pthread_mutex_unlock(&r->mu);
    return st;
}

fm_status fm_reader_sync(fm_reader *r)
{
    if (!r->ra) return NULL;
    pthread_mutex_lock(&r->mu);
    while (r->job_pending && !r->job_ready) pthread_cond_wait(&r->cv, &r->mu);
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

fm_status fm_reader_next(fm_reader *r, int32_t *tokens)
{
    if (r->G == 0)
        return FM_ERR(FM_ERR_INTERNAL, "fm_reader_next on a reader of %s opened without a training "
                      "stream (global_windows 0: evaluation windows only)", r->path);
    size_t n = (size_t)r->count * ((size_t)r->T + 1);
    double t0 = fm_util_now();
    if (r->ra) {
        fm_status st = finish_job(r);
        r->wait_s += fm_util_now() - t0;
        if (st) {
            start_job(r); /* the state did not advance: a retry reads the same step again */
            return fm_status_trace(st, __FILE__, __LINE__, __func__);
        }
        if (n) memcpy(tokens, r->buf, n * sizeof *tokens);
    } else {
        fm_h5_quiet q;
        fm_h5_quiet_begin(&q);
        fm_status st = read_step(r, &r->state, tokens, 0);
        fm_h5_quiet_end(&q);
        if (st) return fm_status_trace(st, __FILE__, __LINE__, __func__);
        r->wait_s += fm_util_now() - t0;
    }
    r->steps++;
    r->state.position += (uint64_t)r->G;
    normalize(r, &r->state);
    if (r->ra) start_job(r);
    return NULL;
}

uint64_t fm_reader_eval_window(uint64_t k, uint64_t K, uint64_t n)
{
    if (K == n) return k;
    /* floor(k*n/K) = k*q + floor(k*rem/K) with n = q*K + rem; k*rem < K^2 fits 64 bits for K < 2^32 */
    uint64_t q = n / K, rem = n % K;
    return k * q + (k * rem) / K;
}

static fm_status read_eval(fm_reader *r, fm_dataset_split split, int64_t K, int64_t first,
                           int64_t count, int32_t *tokens)
{
    const int val = split == FM_SPLIT_VAL;
    const uint64_t n = val ? r->Nv : r->N;
    const char *path = val ? r->val_path : r->path;
    if (n == 0)
        return FM_ERR(FM_ERR_INPUT,
                      "%s has no %s window of seq_len+1 = %d tokens (its /%s/tokens holds %" PRIu64
                      " tokens); make the dataset with %s, or use another file or split",
                      path, val ? "validation" : "training", r->T + 1, val ? "val" : "train",
                      val ? r->val_tokens : r->info.train_tokens,
                      val ? "a larger --val-fraction (fmtrain prepare)" : "more text");
    if (K < 1 || (uint64_t)K > n || ((uint64_t)K > UINT32_MAX && (uint64_t)K != n) || first < 0 ||
        count < 0 || first + count > K)
        return FM_ERR(FM_ERR_USAGE,
                      "evaluation members [%" PRId64 ", %" PRId64 ") of a set of %" PRId64
                      " windows of %s's %s split, which has %" PRIu64
                      " windows: expected 0 <= first <= first+count <= K <= %" PRIu64
                      " (and K < 2^32 unless it is every window)",
                      first, first + count, K, path, val ? "val" : "train", n, n);
    size_t W = (size_t)r->T + 1;
    for (int64_t j = 0; j < count; j++) {
        uint64_t w = fm_reader_eval_window((uint64_t)(first + j), (uint64_t)K, n);
        int32_t *dst = tokens + (size_t)j * W;
        FM_TRY(h5_window(val ? r->dval : r->dtrain, w * (uint64_t)r->T, r->T, dst, path,
                         val ? "/val/tokens" : "/train/tokens"));
        FM_TRY(check_ids(dst, W, r->info.vocab_size, path, val ? "validation" : "training", w));
    }
    return NULL;
}

fm_status fm_reader_read_eval(fm_reader *r, fm_dataset_split split, int64_t K, int64_t first,
                              int64_t count, int32_t *tokens)
{
    fm_h5_quiet q;
    fm_h5_quiet_begin(&q);
    fm_status st = read_eval(r, split, K, first, count, tokens);
    fm_h5_quiet_end(&q);
    return st;
}

void fm_reader_get_state(const fm_reader *r, fm_reader_state *state) { *state = r->state; }

fm_status fm_reader_set_state(fm_reader *r, const fm_reader_state *state)
{
    if (r->ra) {
        fm_status st = finish_job(r); /* the data read ahead is for the old state: drop it */
        fm_status_free(&st);
    }
    r->state = *state;
    normalize(r, &r->state);
    if (r->ra) start_job(r);
    return NULL;
}

const fm_dataset_info *fm_reader_info(const fm_reader *r) { return &r->info; }
int64_t fm_reader_train_windows(const fm_reader *r) { return (int64_t)r->N; }
int64_t fm_reader_val_windows(const fm_reader *r) { return (int64_t)r->Nv; }
int64_t fm_reader_split_windows(const fm_reader *r, fm_dataset_split split)
{
    return split == FM_SPLIT_VAL ? (int64_t)r->Nv : (int64_t)r->N;
}
int fm_reader_seq_len(const fm_reader *r) { return r->T; }
const char *fm_reader_split_path(const fm_reader *r, fm_dataset_split split)
{
    return split == FM_SPLIT_VAL ? r->val_path : r->path;
}
int fm_reader_read_ahead_active(const fm_reader *r) { return r->ra; }
double fm_reader_wait_seconds(const fm_reader *r) { return r->wait_s; }
int64_t fm_reader_steps_read(const fm_reader *r) { return r->steps; }

/* ---- open / free ------------------------------------------------------------------------------- */

/* Locates every chunk of /train/tokens for pread; returns 0 (and leaves ra off) when it cannot. */
static int setup_pread(fm_reader *r)
{
    hid_t dcpl = H5Dget_create_plist(r->dtrain);
    hid_t ft = H5Dget_type(r->dtrain);
    hid_t fcpl = H5Fget_create_plist(r->file);
    int ok = dcpl >= 0 && ft >= 0 && fcpl >= 0 && H5Tget_order(ft) == H5T_ORDER_LE &&
             H5Pget_nfilters(dcpl) == 0;
    hsize_t ub = 1;
    if (ok && (H5Pget_userblock(fcpl, &ub) < 0 || ub != 0)) ok = 0;
    uint64_t ntok = r->info.train_tokens;
    if (ok) {
        H5D_layout_t lay = H5Pget_layout(dcpl);
        if (lay == H5D_CHUNKED) {
            hsize_t cdim = 0;
            if (H5Pget_chunk(dcpl, 1, &cdim) != 1 || cdim == 0) ok = 0;
            else r->chunk = cdim;
        } else if (lay == H5D_CONTIGUOUS) {
            r->chunk = ntok ? ntok : 1;
        } else ok = 0;
    }
    if (ok) {
        r->nchunks = (ntok + r->chunk - 1) / r->chunk;
        r->chunk_off = malloc((r->nchunks ? r->nchunks : 1) * sizeof *r->chunk_off);
        if (!r->chunk_off) ok = 0;
        for (uint64_t c = 0; ok && c < r->nchunks; c++) {
            haddr_t addr = HADDR_UNDEF;
            if (H5Pget_layout(dcpl) == H5D_CONTIGUOUS) addr = H5Dget_offset(r->dtrain);
            else {
                hsize_t off = c * r->chunk, size = 0;
                unsigned fmask = 0;
                if (H5Dget_chunk_info_by_coord(r->dtrain, &off, &fmask, &addr, &size) < 0 || fmask != 0)
                    addr = HADDR_UNDEF;
            }
            if (addr == HADDR_UNDEF) ok = 0;
            else r->chunk_off[c] = (uint64_t)addr;
        }
    }
    if (ok) {
        r->fd = open(r->path, O_RDONLY);
        if (r->fd < 0) ok = 0;
    }
    if (fcpl >= 0) H5Pclose(fcpl);
    if (ft >= 0) H5Tclose(ft);
    if (dcpl >= 0) H5Pclose(dcpl);
    if (!ok) {
        free(r->chunk_off);
        r->chunk_off = NULL;
    }
    return ok;
}

/* Opens `path` on every rank of comm with parallel HDF5. A rank that cannot see the file (node-local
 * path, permissions) makes every rank fail with its message (fm_comm_agree). */
static fm_status open_file(const char *path, MPI_Comm comm, hid_t *file)
{
    FM_TRY(fm_comm_agree(comm, fm_dataset_h5_precheck(path)));
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, fapl); /* collective */
    H5Pclose(fapl);
    fm_status st = NULL;
    if (f < 0) st = FM_ERR(FM_ERR_INPUT, "cannot open %s with parallel HDF5 (damaged file?)", path);
    st = fm_comm_agree(comm, st);
    if (st && f >= 0) H5Fclose(f);
    if (!st) *file = f;
    return st;
}

/* A reader with its buffers and its own communicator (a duplicate of opt->comm that returns errors).
 * Every rank takes part in the duplication even when its allocations failed, then all agree. */
static fm_status reader_new(const char *path, const fm_reader_options *opt, fm_reader **out)
{
    *out = NULL;
    MPI_Comm comm = MPI_COMM_NULL;
    fm_status dup = fm_comm_dup(opt->comm, &comm);
    fm_reader *r = calloc(1, sizeof *r);
    fm_status st = NULL;
    if (r) {
        r->file = r->dtrain = r->vfile = r->dval = -1;
        r->fd = -1;
        r->comm = comm;
        pthread_mutex_init(&r->mu, NULL);
        pthread_cond_init(&r->cv, NULL);
        r->T = opt->seq_len;
        r->G = opt->global_windows;
        r->first = opt->first;
        r->count = opt->count;
        r->path = strdup(path);
        r->val_path = strdup(opt->val_path ? opt->val_path : path);
        r->buf = malloc(((size_t)r->count * ((size_t)r->T + 1) + 1) * sizeof *r->buf);
    }
    if (!r || !r->path || !r->val_path || !r->buf)
        st = FM_ERR(FM_ERR_NOMEM, "out of memory for the reader of %s (%" PRId64 " windows of %d tokens)",
                    path, opt->count, opt->seq_len + 1);
    if (dup) {
        fm_status_free(&st);
        st = dup;
    }
    st = fm_comm_agree(opt->comm, st); /* the caller's communicator: the duplicate may be missing */
    if (st) {
        if (r) fm_reader_free(&r);
        else fm_comm_dup_free(&comm);
        return st;
    }
    *out = r;
    return NULL;
}

static fm_status reader_open(const char *path, const fm_reader_options *opt, fm_reader **out);

fm_status fm_reader_open(const char *path, const fm_reader_options *opt, fm_reader **out)
{
    *out = NULL;
    if (opt->seq_len < 1 || opt->global_windows < 0 || opt->first < 0 || opt->count < 0 ||
        opt->first + opt->count > opt->global_windows)
        return fm_status_collective(
            FM_ERR(FM_ERR_USAGE,
                   "bad reader options for %s: seq_len %d, global_windows %" PRId64 ", slice [%" PRId64
                   ", %" PRId64 ") (need seq_len >= 1, global_windows >= 0, 0 <= first <= first+count <= "
                   "global_windows)",
                   path, opt->seq_len, opt->global_windows, opt->first, opt->first + opt->count));
    fm_h5_quiet q;
    fm_h5_quiet_begin(&q);
    fm_status st = reader_open(path, opt, out);
    fm_h5_quiet_end(&q);
    return st;
}

/* fm_reader_open once the options are checked: open and validate the files, locate the chunks. */
static fm_status reader_open(const char *path, const fm_reader_options *opt, fm_reader **out)
{
    fm_reader *r = NULL;
    FM_TRY(reader_new(path, opt, &r));
    fm_status st = NULL;
    FM_TRY_GOTO(st, fail, open_file(path, r->comm, &r->file));
    st = fm_dataset_h5_read_info(r->file, path, &r->info);
    if (!st && opt->vocab_size && opt->vocab_size != r->info.vocab_size)
        st = FM_ERR(FM_ERR_INPUT,
                    "%s has vocab_size %" PRIu64 " but the model's vocab_size is %" PRIu64
                    " (use a dataset made with the same tokenizer, or set [model] vocab_size = 0 to take "
                    "it from the dataset)",
                    path, r->info.vocab_size, opt->vocab_size);
    if (!st && r->info.vocab_size > (uint64_t)INT32_MAX + 1)
        st = FM_ERR(FM_ERR_INPUT, "%s has vocab_size %" PRIu64 "; training supports at most 2^31 ids", path,
                    r->info.vocab_size);
    if (!st) {
        r->N = r->info.train_tokens > 0 ? (r->info.train_tokens - 1) / (uint64_t)r->T : 0;
        if (r->N < (uint64_t)r->G)
            st = FM_ERR(FM_ERR_INPUT,
                        "%s has %" PRIu64 " training tokens = %" PRIu64 " windows of %d+1 tokens, fewer "
                        "than one global batch of %" PRId64 " windows; use more data or a smaller "
                        "batch/seq_len",
                        path, r->info.train_tokens, r->N, r->T, r->G);
    }
    if (!st) {
        r->dtrain = H5Dopen2(r->file, "/train/tokens", H5P_DEFAULT);
        if (r->dtrain < 0) st = FM_ERR(FM_ERR_INPUT, "cannot open /train/tokens in %s", path);
    }
    FM_TRY_GOTO(st, fail, fm_comm_agree(r->comm, st));
    /* validation file */
    if (strcmp(r->val_path, path) == 0) {
        r->vfile = r->file;
        r->val_tokens = r->info.val_tokens;
    } else {
        FM_TRY_GOTO(st, fail, open_file(r->val_path, r->comm, &r->vfile));
        fm_dataset_info vi;
        st = fm_dataset_h5_read_info(r->vfile, r->val_path, &vi);
        if (!st && vi.vocab_size != r->info.vocab_size)
            st = FM_ERR(FM_ERR_INPUT, "validation file %s has vocab_size %" PRIu64 " but %s has %" PRIu64,
                        r->val_path, vi.vocab_size, path, r->info.vocab_size);
        if (!st) r->val_tokens = vi.val_tokens;
        FM_TRY_GOTO(st, fail, fm_comm_agree(r->comm, st));
    }
    r->dval = H5Dopen2(r->vfile, "/val/tokens", H5P_DEFAULT);
    if (r->dval < 0) st = FM_ERR(FM_ERR_INPUT, "cannot open /val/tokens in %s", r->val_path);
    FM_TRY_GOTO(st, fail, fm_comm_agree(r->comm, st));
    r->Nv = r->val_tokens > 0 ? (r->val_tokens - 1) / (uint64_t)r->T : 0;
    r->width = r->info.token_bytes;
    r->state.seed = opt->seed;
    normalize(r, &r->state);
    if (opt->read_ahead && r->G > 0 && setup_pread(r)) {
        if (pthread_create(&r->thread, NULL, reader_thread, r) == 0) {
            r->thread_started = 1;
            r->ra = 1;
            start_job(r);
        }
    }
    *out = r;
    return NULL;
fail:
    fm_reader_free(&r);
    return st;
}

void fm_reader_free(fm_reader **rp)
{
    if (!rp || !*rp) return;
    fm_reader *r = *rp;
    if (r->thread_started) {
        pthread_mutex_lock(&r->mu);
        r->quit = 1;
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
        pthread_join(r->thread, NULL);
    }
    fm_status_free(&r->job_err);
    if (r->fd >= 0) close(r->fd);
    fm_h5_quiet q;
    fm_h5_quiet_begin(&q);
    if (r->dval >= 0) H5Dclose(r->dval);
    if (r->dtrain >= 0) H5Dclose(r->dtrain);
    if (r->vfile >= 0 && r->vfile != r->file) H5Fclose(r->vfile);
    if (r->file >= 0) H5Fclose(r->file);
    fm_h5_quiet_end(&q);
    fm_comm_dup_free(&r->comm);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r->chunk_off);
    free(r->buf);
    free(r->path);
    free(r->val_path);
    free(r);
    *rp = NULL;
}

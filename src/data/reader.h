/* reader.h — the training-data reader: the sharded, resumable, read-ahead stream of training windows
 * and the validation windows, read from a dataset file (data/dataset.h) by every rank together.
 *
 * ---- Sampling (the reader) ------------------------------------------------------------------
 * T = seq_len. A training window is T+1 consecutive tokens; window i starts at token i*T, so
 * consecutive windows share one token (the last target of one is the first input of the next).
 * N = (train_tokens - 1) / T windows (integer division; the tail is never used).
 * Epoch e is a permutation P_e of 0..N-1: P_e(p) = a keyed Feistel bijection on 2^k >= N
 * (4 rounds, keys from splitmix64(seed, e)), cycle-walked into [0, N). It needs O(1) memory and is
 * evaluated per position, identically on every rank.
 * Step: the state (seed, epoch, position) names the next window; a step takes the G = global_windows
 * windows P_e(position) .. P_e(position+G-1) in that order and this rank reads the contiguous slice
 * [first, first+count) of them; then position += G. Epoch boundary: a step never straddles two
 * epochs — when position + G > N the remaining N - position windows of the epoch are skipped and
 * the step starts epoch e+1 at position 0. So with N divisible by G every window is used exactly
 * once per epoch; otherwise N mod G windows (different ones each epoch) are skipped.
 * The sample sequence therefore depends on (seed, G, T, file) only, never on the number of ranks.
 *
 * ---- Evaluation windows (validation) ---------------------------------------------------------
 * A split's windows in file order, not permuted: the val split has Nv = (val_tokens - 1) / T
 * windows, window v = T+1 tokens of /val/tokens from token v*T (of the val_path file when one is
 * given); the train split's are the N windows above. The evaluation set of K windows of a split with
 * n windows (1 <= K <= n) is members k = 0..K-1, member k being window floor(k*n/K)
 * (fm_reader_eval_window): evenly spaced over the split, window 0 always in it, and K = n is every
 * window in order. It depends on (file, split, T, K) only — not on ranks, micro_batch, grad_accum or
 * the training position — so an evaluation is comparable across runs and resumes on any layout.
 * Which member a rank reads is the caller's choice (train/evaluate.h).
 *
 * ---- Reading and threads --------------------------------------------------------------------
 * fm_reader_open is collective over the communicator: every rank opens the file with parallel HDF5
 * (H5Pset_fapl_mpio), validates it and keeps it open. Evaluation windows, and training windows when
 * read_ahead is 0, are read with H5Dread and a hyperslab selection of just this rank's windows.
 * With read_ahead (the default) the training windows of step s+1 are read by a background thread
 * while step s computes (double buffering). That thread makes NO HDF5 and NO MPI calls (Debian's
 * parallel HDF5 is not thread-safe and main() initialises MPI_THREAD_FUNNELED): at open, HDF5 gives
 * the file offsets of the (unfiltered) chunks of /train/tokens, and the thread reads those bytes
 * with pread(). Other HDF5 use (checkpoints) may therefore run at any time; fm_reader_sync() exists
 * to wait until no read is in flight (e.g. before timing, or before forking) and is cheap.
 * A file whose chunks cannot be located that way (filters, big-endian storage) is read through HDF5
 * synchronously instead (fm_reader_read_ahead_active reports which).
 */
#ifndef FM_READER_H
#define FM_READER_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "data/dataset.h"

/* Serialisable position of the training stream: the NEXT step reads windows
 * P_epoch(position) .. P_epoch(position + G - 1). Checkpoints store these three numbers. */
typedef struct fm_reader_state {
    uint64_t seed;
    uint64_t epoch;
    uint64_t position;
} fm_reader_state;

typedef struct fm_reader_options {
    MPI_Comm comm;           /* ranks that open the file together (collective open/free) */
    int seq_len;             /* T >= 1; windows are T+1 tokens */
    int64_t global_windows;  /* G: windows per step over all ranks (global batch in sequences);
                                0 (with first = count = 0): no training stream, the reader only
                                reads evaluation windows (fmtrain eval) */
    int64_t first;           /* this rank's slice [first, first+count) of each step's G windows */
    int64_t count;           /* count >= 0; first + count <= G */
    uint64_t seed;           /* the initial state is (seed, 0, 0) */
    uint64_t vocab_size;     /* the model's vocabulary; 0 = accept the file's. Mismatch = error */
    const char *val_path;    /* validation windows from this file's /val/tokens; NULL = same file */
    int read_ahead;          /* 1 (recommended): double-buffered background reads; 0: synchronous */
} fm_reader_options;

typedef struct fm_reader fm_reader;

/* Opens the training file `path` (and val_path) on every rank of opt->comm. Errors (FM_ERR_INPUT
 * with the path): missing file, not an fmtrain dataset or wrong version, vocab_size different from
 * opt->vocab_size (when non-zero) or > INT32_MAX, fewer than G training windows (N < G), bad
 * options (FM_ERR_USAGE). Every rank gets the same error (collective status). When read_ahead is
 * set (and G > 0), the read of the first step starts here. */
fm_status fm_reader_open(const char *path, const fm_reader_options *opt, fm_reader **out);

/* Fills tokens (count, T+1) int32 with this rank's windows of the next step and advances the state
 * by one step; starts reading the step after it (read_ahead). Not collective (each rank reads on its
 * own), but all ranks must make the same sequence of next/set_state calls for the global order to
 * hold. FM_ERR_IO on a read failure (naming the path and offset); FM_ERR_INTERNAL on a reader opened
 * without a training stream (G = 0). */
fm_status fm_reader_next(fm_reader *r, int32_t *tokens);

/* Fills tokens (count, T+1) with members first .. first+count-1 of the evaluation set of K windows
 * of `split` (above), in member order. 0 <= first, first + count <= K <= n (the split's windows);
 * K <= 2^32 - 1 unless K == n. Errors: FM_ERR_INPUT when the split has no window (n == 0, naming
 * the file and what to do), FM_ERR_USAGE for a K or a range outside those bounds, FM_ERR_IO /
 * FM_ERR_INPUT for a failed read or an id >= vocab_size. Not collective. */
fm_status fm_reader_read_eval(fm_reader *r, fm_dataset_split split, int64_t K, int64_t first,
                              int64_t count, int32_t *tokens);

/* The window of member k (0 <= k < K) of an evaluation set of K of n windows: floor(k*n/K); k when
 * K == n. Pure; exact for K <= 2^32 - 1 or K == n. */
uint64_t fm_reader_eval_window(uint64_t k, uint64_t K, uint64_t n);

/* The state of the next step (what a checkpoint saves). */
void fm_reader_get_state(const fm_reader *r, fm_reader_state *state);
/* Continues from `state` (e.g. restored from a checkpoint): discards read-ahead data and restarts
 * reading there. position > N or a state that cannot hold a step is normalised by the epoch rule. */
fm_status fm_reader_set_state(fm_reader *r, const fm_reader_state *state);

/* Waits until no background read is in flight (the data of the next step is then in memory). */
fm_status fm_reader_sync(fm_reader *r);

const fm_dataset_info *fm_reader_info(const fm_reader *r);
int64_t fm_reader_train_windows(const fm_reader *r); /* N */
int64_t fm_reader_val_windows(const fm_reader *r);   /* Nv */
int64_t fm_reader_split_windows(const fm_reader *r, fm_dataset_split split); /* N or Nv */
int fm_reader_seq_len(const fm_reader *r);           /* T */
/* The file whose windows `split` reads: path, or val_path for the val split when one was given. */
const char *fm_reader_split_path(const fm_reader *r, fm_dataset_split split);
int fm_reader_read_ahead_active(const fm_reader *r);
/* Seconds fm_reader_next spent waiting for data (blocking reads, or waiting on the background
 * read) since open, and how many next() calls that covers. For "I/O wait < 1 % of step time". */
double fm_reader_wait_seconds(const fm_reader *r);
int64_t fm_reader_steps_read(const fm_reader *r);

/* Collective over opt->comm (closes the parallel HDF5 file). Sets *r to NULL; safe on NULL. */
void fm_reader_free(fm_reader **r);

/* The sampling rule as a pure function (also used by tests): the window index of position p
 * (0 <= p < n_windows) of epoch `epoch` under `seed`. */
uint64_t fm_reader_permute(uint64_t seed, uint64_t epoch, uint64_t p, uint64_t n_windows);

#endif /* FM_READER_H */

/* checkpoint_dir.h — the checkpoint directory of a run: file names, listing, `latest`, pruning,
 * removal of temporary files left by killed writers.
 *
 * Layout: <run dir>/checkpoints/step-<step, at least 8 digits>.h5 (complete checkpoints only),
 * <run dir>/checkpoints/latest (one line: the file name of the newest complete checkpoint), and
 * transiently step-<...>.h5.tmp and latest.tmp while they are written.
 *
 * These functions touch only the local view of the file system and make no MPI call: in a parallel
 * job rank 0 calls them and shares the outcome. Errors name the path (FM_ERR_IO).
 */
#ifndef FM_CHECKPOINT_DIR_H
#define FM_CHECKPOINT_DIR_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

#define FM_CHECKPOINT_SUBDIR "checkpoints"
#define FM_CHECKPOINT_LATEST "latest"

typedef struct fm_checkpoint_entry {
    int64_t step;
    char name[64]; /* "step-00000100.h5" */
} fm_checkpoint_entry;

/* 1 when `name` is "step-<8 or more digits>.h5" (then *step is set), else 0. */
int fm_checkpoint_dir_parse_name(const char *name, int64_t *step);

/* "<run_dir>/checkpoints" and "<run_dir>/checkpoints/step-<8 digits>.h5". Errors: path too long. */
fm_status fm_checkpoint_dir_of_run(const char *run_dir, char *buf, size_t size);
fm_status fm_checkpoint_dir_file_path(const char *run_dir, int64_t step, char *buf, size_t size);

/* Lists the complete checkpoints (regular files, or links to them, named step-*.h5) of directory
 * `dir`, newest (largest step) first, into a malloc'ed array the caller frees. A missing directory
 * gives n = 0. Anything else of such a name (a directory) is not a checkpoint and is never listed,
 * loaded or pruned: fm_checkpoint_dir_odd_entries names it. */
fm_status fm_checkpoint_dir_list(const char *dir, fm_checkpoint_entry **entries, int *n);

/* Reads `latest` into name (empty string when the file does not exist). */
fm_status fm_checkpoint_dir_read_latest(const char *dir, char *name, size_t size);

/* Rewrites `latest` atomically (latest.tmp, fsync, rename, fsync of the directory). A directory
 * named `latest` is an error naming it. */
fm_status fm_checkpoint_dir_write_latest(const char *dir, const char *name);

/* Deletes complete checkpoints beyond the newest `keep_last` (by step), never `keep_name`. */
fm_status fm_checkpoint_dir_prune(const char *dir, int keep_last, const char *keep_name);

/* The entries of `dir` named like a checkpoint or `latest` that are not regular files (someone made
 * a directory of that name): their count, and up to three of their paths, comma-separated, in msg
 * (size bytes). A missing directory gives 0. */
int fm_checkpoint_dir_odd_entries(const char *dir, char *msg, size_t size);

/* Removes step-*.h5.tmp and latest.tmp files (left by a writer that was killed); *removed (may be
 * NULL) receives how many. A missing directory is fine. */
fm_status fm_checkpoint_dir_remove_stale(const char *dir, int *removed);

#endif /* FM_CHECKPOINT_DIR_H */

/* dataset.h — fmtrain token datasets: the HDF5 file format, a writer and a probe. The sharded,
 * resumable, read-ahead reader that `train` uses is data/reader.h.
 *
 * ---- File format (docs/dataset-format.md is the full description) ------------------------------
 * Root attributes: format = "fmtrain-dataset" (string), format_version = 1 (int32),
 *   vocab_size (uint64), eot_id (uint64), train_tokens, val_tokens (uint64), token_bytes (int32, 2 or 4),
 *   tokenizer_kind (string: "byte-bpe" when /tokenizer is stored, "none" otherwise),
 *   source (string: what the tokens were made from), created_by (string: fmtrain version).
 * /train/tokens, /val/tokens: 1-D, H5T_STD_U16LE when vocab_size <= 65536 else H5T_STD_U32LE,
 *   chunked (FM_DATASET_CHUNK tokens, or one chunk of the split's size when it is smaller), no
 *   filters. Documents are separated by eot_id.
 * /tokenizer: optional, see tokenizer.h.
 * Every fmtrain HDF5 file (datasets, checkpoints) carries the root string attribute "format";
 * fm_dataset_file_format reads it so `inspect` can dispatch.
 *
 *
 * What it is not: no sampling and no parallel reading (data/reader.h).
 */
#ifndef FM_DATASET_H
#define FM_DATASET_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "data/tokenizer.h"

#define FM_DATASET_FORMAT "fmtrain-dataset"
#define FM_DATASET_VERSION 1
#define FM_DATASET_CHUNK 1048576 /* tokens per chunk of /train/tokens and /val/tokens (at most) */
#define FM_DATASET_MAX_VOCAB 4294967295ull /* 2^32 - 1 */

typedef enum { FM_SPLIT_TRAIN = 0, FM_SPLIT_VAL = 1 } fm_dataset_split;

/* What a dataset file says about itself (fm_dataset_probe, fm_reader_info). */
typedef struct fm_dataset_info {
    int format_version;
    uint64_t vocab_size;
    uint64_t eot_id;
    uint64_t train_tokens;
    uint64_t val_tokens;
    int token_bytes;          /* 2 (uint16) or 4 (uint32) */
    int has_tokenizer;        /* /tokenizer group present */
    char tokenizer_kind[32];  /* "byte-bpe" or "none" */
    char source[1024];        /* truncated when longer */
    char created_by[128];
} fm_dataset_info;

/* ---- probe (serial, any process) --------------------------------------------------------------- */

/* Reads the root attribute "format" of any HDF5 file into buf ("fmtrain-dataset",
 * "fmtrain-checkpoint", ...). FM_ERR_INPUT naming the path when the file is missing, unreadable,
 * not HDF5, or has no such attribute ("not an fmtrain file"). */
fm_status fm_dataset_file_format(const char *path, char *buf, size_t bufsize);

/* Opens `path` read-only (serial HDF5), validates the root attributes and the two token datasets
 * (existence, rank 1, integer type of the stated width, lengths equal to the stated counts), fills
 * *info and closes. FM_ERR_INPUT with the path for: missing file, not HDF5, not an fmtrain dataset
 * (another format name), a newer/older format_version, missing or inconsistent attributes. */
fm_status fm_dataset_probe(const char *path, fm_dataset_info *info);

/* What fm_dataset_scan_ids found. */
typedef struct fm_dataset_scan {
    uint64_t max_id;  /* the largest token id seen */
    uint64_t bad_pos; /* position (in the split) of the first id >= vocab; UINT64_MAX: none */
    uint64_t bad_id;  /* that id */
    uint64_t scanned; /* tokens read */
} fm_dataset_scan;

/* Reads tokens [first, first + count) of a split of `path` (serial HDF5, FM_DATASET_CHUNK at a
 * time) and looks for ids >= vocab: the check `fmtrain train --dry-run` makes (every rank a share)
 * so that a damaged dataset or one made with another tokenizer is found before nodes are spent,
 * rather than by the reader when training reaches the bad window. The file stores no id range, so
 * this reads the split (about a second per GB per rank). Errors: FM_ERR_INPUT for a file that
 * cannot be read. */
fm_status fm_dataset_scan_ids(const char *path, fm_dataset_split split, uint64_t first,
                              uint64_t count, uint64_t vocab, fm_dataset_scan *out);

/* ---- writer (serial; used by `fmtrain prepare` and by tests) --------------------------------- */

typedef struct fm_dataset_writer fm_dataset_writer;

/* Creates (truncates) `path` and its two empty token datasets; width from vocab_size
 * (256 .. 2^32-1, eot_id < vocab_size). `tok` (may be NULL) is stored as /tokenizer and must have
 * the same vocab_size. Errors: FM_ERR_USAGE for bad sizes, FM_ERR_IO naming the path. */
fm_status fm_dataset_writer_open(const char *path, uint64_t vocab_size, uint64_t eot_id,
                                 const fm_tokenizer *tok, const char *source,
                                 fm_dataset_writer **out);
/* Appends ids (each < vocab_size, else FM_ERR_INPUT naming the id and split offset). Buffered. */
fm_status fm_dataset_writer_append(fm_dataset_writer *w, fm_dataset_split split, const uint32_t *ids,
                                   size_t n);
uint64_t fm_dataset_writer_count(const fm_dataset_writer *w, fm_dataset_split split);
/* Flushes, writes the count attributes and closes the file; frees *w and sets it to NULL (also on
 * error). */
fm_status fm_dataset_writer_close(fm_dataset_writer **w);
/* Closes without finishing (error paths); the file is left incomplete — callers write to a
 * temporary name and remove it. Sets *w to NULL. */
void fm_dataset_writer_free(fm_dataset_writer **w);

#endif /* FM_DATASET_H */

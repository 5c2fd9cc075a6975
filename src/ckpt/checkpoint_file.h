/* checkpoint_file.h — the file layer of checkpoints: one HDF5 file written and read collectively
 * over MPI-IO, tensors stored in their global shape with a CRC-32 per dataset, atomic publication.
 *
 * What it is: the generic machinery under src/ckpt/checkpoint.h. It knows nothing about models or
 * trainers: it writes and reads named fp32 tensors carved out of flat buffers ("groups" such as
 * params, adam_m, adam_v), small datasets (text, uint64 arrays), attributes, and it publishes a
 * finished file atomically (write <path>.tmp, flush, fsync, rename, fsync the directory, update
 * `latest`, prune old checkpoints). src/ckpt/checkpoint.h builds the fmtrain checkpoint on top of it; the
 * benchmark and the tests use it directly with synthetic buffers.
 * What it is not: no knowledge of the checkpoint's content or of configuration keys.
 *
 * Parallel mode (comm != MPI_COMM_NULL): every function taking a file is COLLECTIVE over the file's
 * communicator, must be called by every rank in the same order with the same arguments (except the
 * flat buffers' contents where noted), and returns the same status on every rank: an error seen by
 * one rank (a failed write, a CRC mismatch) is agreed on and returned everywhere, with the message of
 * the lowest failing rank, marked collective (fm_comm_agree in src/dist/comm.h). The file keeps its
 * own duplicate of the communicator with MPI_ERRORS_RETURN, so an MPI failure is an FM_ERR_MPI
 * status rather than an abort; no function here ends the process.
 * Serial mode (comm == MPI_COMM_NULL, for `fmtrain inspect` and tools): only reading; no MPI call is
 * made, so it works before MPI_Init or without it. The file is read with HDF5's default driver.
 *
 * Writing divides the bytes among ranks: the tensors of all groups passed to one
 * fm_checkpoint_file_write_groups call are concatenated (group order, then table order) into one
 * sequence of T floats; rank r writes elements [T*r/N, T*(r+1)/N) of it, each boundary moved to the
 * nearest row (first-dimension index) of the tensor it falls in. Reading uses the same rule for the
 * reading communicator's size, so any rank count reads a file written by any other. A group may
 * instead name its own partition (fm_checkpoint_group.parts: rank r moves elements
 * [parts[r], parts[r+1]) of the group's layout, boundaries on rows) and hold only part of the layout
 * in memory (base): that is how each rank writes exactly its ZeRO shard of the weights and AdamW
 * moments, and reads its shard back on any rank count. The file is the same either way.
 *
 * Integrity: every dataset this layer writes carries a uint32 attribute "crc32", zlib's CRC-32 of
 * the dataset's bytes in C order as stored (little-endian). Ranks compute the CRC of their parts
 * (threads split long parts into 4 MiB chunks) and combine them in rank order with crc32_combine, so
 * the value equals zlib.crc32(array.tobytes()) in Python and does not depend on the rank count.
 * Reading recomputes and compares it for every dataset it reads.
 *
 * Errors: FM_ERR_IO for file system failures (disk full, permission), FM_ERR_INPUT for files that are
 * missing, foreign, truncated or fail a checksum, FM_ERR_CONFIG for bad MPI-IO hints, FM_ERR_MPI,
 * FM_ERR_NOMEM. Messages name the file and the dataset, with the innermost descriptions of HDF5's
 * error stack; HDF5's own printing of that stack is off during each call (data/h5util.h).
 */
#ifndef FM_CHECKPOINT_FILE_H
#define FM_CHECKPOINT_FILE_H

#include <hdf5.h>
#include <mpi.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "ckpt/checkpoint_dir.h"
#include "core/status.h"

#define FM_CHECKPOINT_MAX_DIMS 4
#define FM_CHECKPOINT_NAME_MAX 96

/* How files are written: from [checkpoint] align_bytes and mpiio_hints. */
typedef struct fm_checkpoint_io_opts {
    int64_t align_bytes;     /* H5Pset_alignment(align_bytes, align_bytes): datasets of at least
                                align_bytes start on a multiple of it, smaller ones are packed;
                                <= 1 disables alignment */
    const char *mpiio_hints; /* "key=value,key=value" passed to MPI-IO as an MPI_Info; NULL or "" */
    uint64_t expected_bytes; /* writing: the file's expected size (estimate_bytes below);
                                fm_checkpoint_file_create refuses to start when the file system has
                                less free space, before any HDF5 call. 0: no such check */
} fm_checkpoint_io_opts;

/* One tensor of a flat fp32 buffer, stored as dataset <group>/<name> of shape shape[0..ndim). */
typedef struct fm_checkpoint_tensor {
    char name[FM_CHECKPOINT_NAME_MAX];      /* stable name: "h.3.attn.c_attn.weight" */
    int ndim;                               /* 1 .. FM_CHECKPOINT_MAX_DIMS */
    int64_t shape[FM_CHECKPOINT_MAX_DIMS];  /* global shape, C order */
    size_t offset;                          /* first element in the group's flat buffer */
} fm_checkpoint_tensor;

/* A flat buffer and the tensors carved out of it, stored as HDF5 group `name`. */
typedef struct fm_checkpoint_group {
    const char *name;                     /* "params", "adam_m", "adam_v" */
    const fm_checkpoint_tensor *tensors;  /* table, not owned */
    int ntensors;
    float *data;                          /* host buffer, not owned: element e of the layout is
                                             data[e - base] */
    size_t numel;                         /* elements of the layout (the tables' tensors lie in
                                             [0, numel)) */
    const size_t *parts;                  /* NULL: the default partition above. Otherwise nranks+1
                                             element offsets of the layout, non-decreasing from 0 to
                                             numel, each on a row boundary of the tensor it falls in
                                             (else FM_ERR_INTERNAL): rank r writes or reads exactly
                                             [parts[r], parts[r+1]); the group is never replicated.
                                             Not owned */
    size_t base;                          /* the layout element data[0] holds: 0, or with parts a
                                             buffer of this rank's part only (base <= parts[rank],
                                             room up to parts[rank+1]) */
} fm_checkpoint_group;

/* What one fm_checkpoint_file_commit measured (rank 0's clock; identical on all ranks). */
typedef struct fm_checkpoint_write_stats {
    uint64_t file_bytes;   /* size of the published file */
    uint64_t tensor_bytes; /* bytes of tensor data written */
    double seconds;        /* from fm_checkpoint_file_create to the end of commit */
    char warning[1024];    /* rank 0: what failed after the file was published (syncing the
                              directory, `latest`, keep_last, something in the way), "" if nothing;
                              the checkpoint itself is complete. Empty on the other ranks */
} fm_checkpoint_write_stats;

typedef struct fm_checkpoint_file fm_checkpoint_file; /* opaque: one open checkpoint file */

/* Parses "key=value,key=value" (whitespace around items trimmed; empty items skipped) into a new
 * MPI_Info (*info = MPI_INFO_NULL when there is no hint). The caller frees it with MPI_Info_free.
 * Errors: FM_ERR_CONFIG naming "[checkpoint] mpiio_hints" and the bad item. */
fm_status fm_checkpoint_parse_hints(const char *hints, MPI_Info *info);

/* ---- writing (parallel mode only) ------------------------------------------------------------ */

/* The bytes a file holding groups[0..ngroups) will occupy, written with alignment `align_bytes`:
 * the tensors, one alignment unit of padding per aligned tensor, and room for HDF5's metadata (256
 * KiB plus 2 KiB per tensor). An upper estimate: what fm_checkpoint_file_write_groups reserves. */
uint64_t fm_checkpoint_file_estimate_bytes(const fm_checkpoint_group *groups, int ngroups,
                                           int64_t align_bytes);

/* Creates `<path>.tmp` (removing a stale one left by a killed writer) and writes the root attributes
 * format = `format_name` (string) and format_version. Collective over `comm`. The file is opened with
 * the MPI-IO driver, collective metadata reads and writes, alignment and hints from `opts`.
 * Before any HDF5 call, rank 0 checks that the target is not a directory and that the file system
 * has opts->expected_bytes free (statvfs), and every rank agrees on the outcome: a full disk is
 * then a clear FM_ERR_IO on every rank with no HDF5 file open (a failed write inside HDF5 leaves
 * its ranks in different states, and closing such a file can block). */
fm_status fm_checkpoint_file_create(MPI_Comm comm, const char *path, const char *format_name,
                                    int format_version, const fm_checkpoint_io_opts *opts,
                                    fm_checkpoint_file **out);

/* Writes every tensor of groups[0..ngroups) as <group>/<tensor name> (fp32 little-endian, contiguous,
 * no fill). This rank writes its part of the bytes (see above) from the flat buffers: a rank needs
 * valid data only for the elements it writes, but every rank passes the same tables and sizes.
 * Errors: a table that does not fit its buffer (FM_ERR_INTERNAL), write failures (FM_ERR_IO). */
fm_status fm_checkpoint_file_write_groups(fm_checkpoint_file *f, const fm_checkpoint_group *groups,
                                          int ngroups);

/* ---- writing the tensors outside HDF5 (the background writer, ckpt/async.h) ---------------------
 * The same file as fm_checkpoint_file_write_groups, in three parts, so that the tensor bytes can be
 * written by a thread that makes no HDF5 and no MPI call (HDF5 is not thread-safe here and MPI runs
 * MPI_THREAD_FUNNELED): define_groups creates the datasets (collective, main thread) and says where
 * this rank's part of each lies in the file; the caller writes those bytes with pwrite on its own
 * descriptor of fm_checkpoint_file_tmp_path (any thread; fm_checkpoint_file_reserve on rank 0 first),
 * computing the CRC-32 of each part; finish_groups combines the ranks' CRCs into each dataset's
 * crc32 (collective, main thread). Then fm_checkpoint_file_commit as usual. */

/* This rank's part of one tensor: elements [elem, elem + count) of its group's flat buffer, stored
 * at byte `file_offset` of the file. */
typedef struct fm_checkpoint_extent {
    int group;            /* index into the groups passed */
    int job;              /* the tensor's index across all groups (group order, then table order) */
    size_t elem;          /* first element in the group's flat buffer */
    size_t count;         /* elements (> 0) */
    uint64_t file_offset; /* bytes from the start of the file */
} fm_checkpoint_extent;

/* Creates every tensor dataset of groups[0..ngroups) (contiguous, allocated, no fill: as
 * write_groups) without writing its bytes, and returns this rank's non-empty parts in a malloc'ed
 * array *ext (*n entries; the caller frees it) and the number of tensors in *njobs. The groups'
 * data pointers are not read. Collective. Errors: bad tables (FM_ERR_INTERNAL), HDF5 (FM_ERR_IO). */
fm_status fm_checkpoint_file_define_groups(fm_checkpoint_file *f, const fm_checkpoint_group *groups,
                                           int ngroups, fm_checkpoint_extent **ext, int *n,
                                           int *njobs);

/* Writes every tensor's crc32 attribute from crc_len[2*j], crc_len[2*j+1] = this rank's CRC-32 of
 * its part of tensor j and that part's length in bytes (0, 0 for none), combined over the ranks in
 * rank order. Collective; call once the bytes are written (by every rank). */
fm_status fm_checkpoint_file_finish_groups(fm_checkpoint_file *f, const fm_checkpoint_group *groups,
                                           int ngroups, const uint64_t *crc_len);

/* Rank 0: reserves `bytes` for the temporary file (fallocate, as write_groups does) so that a full
 * disk is one clear error before the bytes are written. No MPI and no HDF5 call: may run on another
 * thread while the main thread leaves `f` alone. File systems without fallocate skip it. */
fm_status fm_checkpoint_file_reserve(fm_checkpoint_file *f, uint64_t bytes);

/* "<path>.tmp": the file being written. */
const char *fm_checkpoint_file_tmp_path(const fm_checkpoint_file *f);

/* Writes text[0..strlen) as a scalar fixed-length string dataset at `dset` (absolute path, parent
 * groups created), with its crc32. Every rank passes the same text; rank 0 writes the bytes. */
fm_status fm_checkpoint_file_write_text(fm_checkpoint_file *f, const char *dset, const char *text);

/* Writes v[0..n) as a uint64 dataset of shape (n) at `dset` (identical on every rank; rank 0 writes). */
fm_status fm_checkpoint_file_write_u64(fm_checkpoint_file *f, const char *dset, const uint64_t *v,
                                       size_t n);

/* Gathers `n` uint64 values from every rank into a dataset of shape (ranks, n) at `dset`, row r from
 * rank r (per-rank state such as a rank's random generator). */
fm_status fm_checkpoint_file_write_u64_per_rank(fm_checkpoint_file *f, const char *dset,
                                                const uint64_t *local, size_t n);

/* Attributes on object `obj` ("/" for the root, or a group/dataset path that exists; groups are
 * created when missing). Every rank passes the same value. */
fm_status fm_checkpoint_file_attr_i64(fm_checkpoint_file *f, const char *obj, const char *name,
                                      int64_t value);
fm_status fm_checkpoint_file_attr_f64(fm_checkpoint_file *f, const char *obj, const char *name,
                                      double value);
fm_status fm_checkpoint_file_attr_str(fm_checkpoint_file *f, const char *obj, const char *name,
                                      const char *value);

/* The HDF5 file id, for modules that store their own group (fm_tokenizer_save), which must then follow
 * this file's collective rules. Owned by `f`. */
hid_t fm_checkpoint_file_hid(const fm_checkpoint_file *f);

/* Publishes the file atomically: H5Fflush (MPI_File_sync), collective close, open()+fsync on rank 0,
 * rename <path>.tmp -> <path>, fsync of the directory, then `latest` in the same directory is rewritten
 * (latest.tmp, fsync, rename, fsync directory) to hold the file name, and, when keep_last > 0, older
 * checkpoints named step-<digits>.h5 beyond the newest keep_last (by step; never `path` itself) are
 * deleted; keep_last < 0 publishes the file alone (no `latest`, no pruning: a file that is not one
 * of a run's checkpoints). Frees *f and sets it to NULL whether or not it succeeds; on failure the temporary file is
 * removed and no existing checkpoint or `latest` is changed. Once the rename is done the checkpoint
 * is written: what fails after it is not an error but stats->warning (rank 0). `stats` may be
 * NULL. */
fm_status fm_checkpoint_file_commit(fm_checkpoint_file **f, int keep_last,
                                    fm_checkpoint_write_stats *stats);

/* Gives up a file being written: collective close, the temporary file removed. Frees *f, sets NULL.
 * Safe on NULL. Used on error paths, so it reports nothing: every rank makes the same calls even when
 * one of them fails. The close still writes HDF5's metadata: where the file's space was reserved
 * (fallocate succeeded) those blocks are kept until the close, so the metadata lands in them; where
 * it was not, the file is first truncated to nothing so that its own data blocks make room. A close
 * that blocks all the same (a file system that fills up under the writer) is bounded by the
 * trainer's watchdog (train/watchdog.h), which the checkpoint module arms before calling this. */
void fm_checkpoint_file_abort(fm_checkpoint_file **f);

/* ---- reading (parallel or serial mode) --------------------------------------------------------- */

/* Opens `path` read-only. `comm` = MPI_COMM_NULL selects serial mode. The root attribute "format"
 * must equal `format_name` (else FM_ERR_INPUT "not a <format_name> file"); *format_version receives
 * the file's version (may be NULL). A missing, truncated or non-HDF5 file is FM_ERR_INPUT. */
fm_status fm_checkpoint_file_open(MPI_Comm comm, const char *path, const char *format_name,
                                  int *format_version, const fm_checkpoint_io_opts *opts,
                                  fm_checkpoint_file **out);

/* Reads every tensor of groups[0..ngroups) into the flat buffers, checking that each dataset exists
 * with the table's shape (else FM_ERR_INPUT naming the dataset and both shapes) and that its CRC-32
 * matches (else FM_ERR_INPUT naming the dataset). Each rank reads its part; with `replicate` the parts
 * of the groups without explicit parts are then exchanged so every rank holds those buffers whole;
 * otherwise (and always for groups with parts) a rank's buffers are valid only in the elements it
 * read (fm_checkpoint_file_part says which). */
fm_status fm_checkpoint_file_read_groups(fm_checkpoint_file *f, const fm_checkpoint_group *groups,
                                         int ngroups, int replicate);

/* Reads a text dataset into a malloc'ed NUL-terminated string the caller frees (CRC checked). */
fm_status fm_checkpoint_file_read_text(fm_checkpoint_file *f, const char *dset, char **text);

/* Reads a uint64 dataset of exactly n elements (any shape; CRC checked). */
fm_status fm_checkpoint_file_read_u64(fm_checkpoint_file *f, const char *dset, uint64_t *v, size_t n);

/* Number of elements of dataset `dset` and its rank/shape (shape may be NULL). */
fm_status fm_checkpoint_file_dataset_shape(fm_checkpoint_file *f, const char *dset, int *ndim,
                                           int64_t shape[FM_CHECKPOINT_MAX_DIMS]);

/* Non-zero when `obj` (a link path) exists. */
int fm_checkpoint_file_exists(fm_checkpoint_file *f, const char *obj);

/* Attribute readers. A missing attribute or one of another type is FM_ERR_INPUT naming it. */
fm_status fm_checkpoint_file_get_attr_i64(fm_checkpoint_file *f, const char *obj, const char *name,
                                          int64_t *value);
fm_status fm_checkpoint_file_get_attr_f64(fm_checkpoint_file *f, const char *obj, const char *name,
                                          double *value);
/* Into a malloc'ed NUL-terminated string the caller frees. */
fm_status fm_checkpoint_file_get_attr_str(fm_checkpoint_file *f, const char *obj, const char *name,
                                          char **value);

/* Called by fm_checkpoint_file_verify for each dataset checked. */
typedef void (*fm_checkpoint_verify_fn)(void *user, const char *dset, uint64_t bytes,
                                        uint32_t stored, uint32_t computed, int ok);

/* Walks every dataset of the file that carries a crc32 attribute, recomputes its CRC-32 and compares
 * (parallel: datasets are read in parts by all ranks). `report` (may be NULL) is called for each, on
 * rank 0 only. *checked and *failed (may be NULL) receive the counts. Returns FM_ERR_INPUT naming the
 * first failing dataset when any fails, and FM_ERR_INPUT when a dataset (other than those stored by
 * other modules, which have no crc32) cannot be read. */
fm_status fm_checkpoint_file_verify(fm_checkpoint_file *f, fm_checkpoint_verify_fn report,
                                    void *user, int *checked, int *failed);

hid_t fm_checkpoint_file_hid_read(const fm_checkpoint_file *f); /* same as _hid, for readers */
const char *fm_checkpoint_file_path(const fm_checkpoint_file *f);
int fm_checkpoint_file_nranks(const fm_checkpoint_file *f); /* communicator size; 1 in serial mode */

/* Closes a file opened for reading (collective in parallel mode). Safe on NULL; sets *f to NULL. */
void fm_checkpoint_file_close(fm_checkpoint_file **f);

/* ---- choosing the checkpoint to resume from ------------------------------------------------ */

/* The complete checkpoints of `dir`, newest first, on every rank of comm: rank 0 removes the
 * temporary files of killed writers and lists the directory (checkpoint_dir.h), then the list is
 * broadcast. *entries is malloc'ed (the caller frees it; NULL when *n = 0); *removed (may be NULL)
 * receives rank 0's count of temporary files removed (0 on the other ranks). A failure on any rank
 * (the listing on rank 0, the copy of the list elsewhere) is returned on every rank, collective.
 * Collective over comm. */
fm_status fm_checkpoint_scan_dir(MPI_Comm comm, const char *dir, fm_checkpoint_entry **entries, int *n,
                                 int *removed);

/* Loads one checkpoint (collective); returns FM_ERR_INPUT when the file is damaged or foreign. */
typedef fm_status (*fm_checkpoint_load_fn)(void *user, const char *path);

/* resume = auto: removes temporary files left by killed writers in `dir` (rank 0), then calls `load`
 * on the complete checkpoints of `dir` newest first until one succeeds. A checkpoint whose load fails
 * with FM_ERR_INPUT (damaged, truncated, failed checksum) is reported on `warn` by rank 0 (may be
 * NULL) and the previous one is tried; any other error is returned at once. *step is the step
 * loaded, or -1 when the directory holds no checkpoint (nothing loaded, no error); `path` (size
 * bytes) receives the file loaded. When every checkpoint is damaged the result is FM_ERR_INPUT
 * naming them. Collective over comm. */
fm_status fm_checkpoint_load_newest(MPI_Comm comm, const char *dir, fm_checkpoint_load_fn load,
                                    void *user, FILE *warn, int64_t *step, char *path, size_t size);

/* ---- partition and checksums (exposed for tests and tools) -------------------------------------- */

/* The element range [*lo, *hi) of tensor `t` (0-based across all groups, group order then table order)
 * that rank `rank` of `nranks` writes or reads; lo == hi when it has none. Errors: bad tables. */
fm_status fm_checkpoint_file_part(const fm_checkpoint_group *groups, int ngroups, int nranks,
                                  int rank, int group, int tensor, size_t *lo, size_t *hi);

/* CRC-32 (zlib's) of n bytes, computed with the calling process's OpenMP threads in 4 MiB chunks
 * combined in order, with carry-less multiplication where the CPU has it: equals crc32(0, p, n). */
uint32_t fm_checkpoint_crc32(const void *p, size_t n);
/* The same on the calling thread only; use_simd = 0 forces zlib's table code (for tests). */
uint32_t fm_checkpoint_crc32_serial(const void *p, size_t n, int use_simd);

#endif /* FM_CHECKPOINT_FILE_H */

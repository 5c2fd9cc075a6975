/* checkpoint.h — fmtrain checkpoints: what a training checkpoint holds, saving it from a trainer,
 * resuming a trainer from one (auto / never / PATH, on any rank count), inspecting and loading one.
 *
 * What it is: the content layer over src/ckpt/checkpoint_file.h (parallel HDF5, CRC-32 per dataset,
 * atomic publication, `latest`, keep_last) and src/ckpt/checkpoint_dir.h (file names). One file per
 * checkpoint, <run dir>/checkpoints/step-<8 digits>.h5; docs/checkpoint-format.md lists every
 * dataset and attribute. Tensors are stored in their global shape under the model's stable names
 * (/params/<name>, /adam_m/<name>, /adam_v/<name>), so a file does not depend on the rank count that
 * wrote it.
 * With [checkpoint] async = true the periodic checkpoints are written by a background thread
 * (src/ckpt/async.h): the save hook snapshots the state and returns; the poll hook publishes the
 * write once every rank's thread is done; the next save, a STOP or FINAL save and the finish hook
 * wait for it first. STOP and FINAL checkpoints are always written at once.
 * What it is not: it does not decide when to save (the trainer's cadence: [checkpoint] every_steps,
 * every_minutes, stop signals, the end of training); it provides the trainer's hooks.
 *
 * Use from `fmtrain train` (collective over MPI_COMM_WORLD, every rank, same arguments):
 *     fm_checkpoint_ctx *ck;
 *     fm_checkpoint_prepare(cfg, MPI_COMM_WORLD, overwrite, stdout, &ck);  // may adjust cfg
 *     fm_trainer_create(cfg, ...);  fm_trainer_hooks h = fm_checkpoint_hooks(ck);
 *     fm_trainer_run(trainer, &h);  fm_checkpoint_ctx_free(&ck);
 * prepare runs BEFORE the trainer exists because resuming on another rank count changes
 * [train] grad_accum (the global batch is kept) and the trainer sizes its reader from it.
 *
 * Resume rules ([checkpoint] resume):
 *   auto  (default) the newest checkpoint of the run directory whose checksums verify; a damaged one
 *         is reported and the previous one used; none: a fresh start.
 *   never a fresh start; refused (FM_ERR_CONFIG) when the run directory already holds checkpoints,
 *         unless `overwrite` is set, which deletes them first.
 *   PATH  that file (may belong to another run: the new run directory starts from it); a model made by
 *         `fmtrain import` (no optimizer or trainer state) is refused with FM_ERR_CONFIG naming
 *         [checkpoint] init_from.
 * [checkpoint] init_from (a fresh start only; ignored, with a line in the log, when the run resumes):
 * the parameters of that checkpoint replace the initial weights; the optimizer starts from zero
 * moments at step 0 and the schedule from its start, the data order from [run] seed. The model's
 * shape must match [model] (FM_ERR_CONFIG naming the setting).
 * The stored configuration is compared with the current one: a change of [model] arch, n_layer,
 * n_head, d_model, seq_len, vocab_size (tensor shapes) or [run] seed (data order) is FM_ERR_CONFIG
 * naming the setting; other changes are allowed and logged (rank 0) one per line. A different rank
 * count keeps the global batch micro_batch x grad_accum x ranks: when the configuration keeps the checkpoint's
 * micro_batch and grad_accum, grad_accum is recomputed (logged); when that is impossible (not a
 * whole number) the error names [train] micro_batch and grad_accum and the value to reach.
 *
 * Errors: as checkpoint_file.h; every status returned by the collective functions is collective
 * (agreed with fm_comm_agree over the context's own duplicate of comm, which returns MPI errors as
 * statuses), so a failure on one rank ends the run on every rank without MPI_Abort.
 */
#ifndef FM_CHECKPOINT_H
#define FM_CHECKPOINT_H

#include <mpi.h>
#include <stdio.h>

#include "ckpt/checkpoint_file.h"
#include "config/config.h"
#include "kernels.h"
#include "model/model.h"
#include "core/status.h"
#include "data/tokenizer.h"
#include "train/trainer.h"

#define FM_CHECKPOINT_FORMAT "fmtrain-checkpoint" /* root attribute "format" */
#define FM_CHECKPOINT_VERSION 1                    /* root attribute "format_version" */

typedef struct fm_checkpoint_ctx fm_checkpoint_ctx;

/* Decides what to resume from and checks the configuration against it (see above); adjusts
 * cfg->train_grad_accum when the rank count changed. `log` is rank 0's console (may be NULL).
 * Collective over comm. */
fm_status fm_checkpoint_prepare(fm_config *cfg, MPI_Comm comm, int overwrite, FILE *log,
                                fm_checkpoint_ctx **out);

/* The trainer hooks bound to ctx (ctx must outlive the trainer's run): resume, save, and for
 * [checkpoint] async poll and finish. */
fm_trainer_hooks fm_checkpoint_hooks(fm_checkpoint_ctx *ctx);

/* The checkpoint prepare chose ("" for a fresh start), and its step (-1 for a fresh start). With
 * resume = auto the hook may still fall back to an older one if this one fails its checksums. */
const char *fm_checkpoint_planned_path(const fm_checkpoint_ctx *ctx);

/* The size of a checkpoint of a model of this shape written with [checkpoint] align_bytes: the
 * parameters and both AdamW moments, HDF5's metadata and alignment padding (GPT-2's tensor count;
 * an upper estimate, as fm_checkpoint_file_estimate_bytes). 0 when the shape is invalid. For the
 * free-space checks of a dry run and of the start of a run (ckpt/run_dir.h). */
uint64_t fm_checkpoint_estimate_size(const fm_model_shape *shape, int64_t align_bytes);

/* Frees ctx; safe on NULL; sets *ctx to NULL. Not collective. */
void fm_checkpoint_ctx_free(fm_checkpoint_ctx **ctx);

/* Writes the trainer's current state as <run dir>/checkpoints/step-<step>.h5 (atomically; keep_last
 * applied). A file of the same step that already exists is replaced (atomically). Rank 0 logs
 * "checkpoint <file>: <size> in <s> s (<GB/s>)" through the trainer's metrics. stats may be NULL.
 * Collective. */
fm_status fm_checkpoint_save(fm_checkpoint_ctx *ctx, fm_trainer *t, fm_trainer_save_reason reason,
                             fm_checkpoint_write_stats *stats);

/* Loads checkpoint `path` into the trainer (parameters, AdamW moments and step, trainer state with
 * the reader position), after checking its configuration against the current one. Collective.
 * Damaged files: FM_ERR_INPUT. */
fm_status fm_checkpoint_load(fm_checkpoint_ctx *ctx, fm_trainer *t, const char *path);

/* `fmtrain inspect CHECKPOINT.h5`: prints step, tokens seen, the model shape and parameter count, the
 * writer's rank count, version, time and host, the stored configuration, then verifies the CRC-32 of
 * every dataset (one line per failure, a count at the end). Serial (no MPI needed). Returns
 * FM_ERR_INPUT when the file is foreign, truncated, or any checksum fails. */
fm_status fm_checkpoint_inspect(const char *path, FILE *out);

/* Reads the model stored in checkpoint `path` — or, when `path` is a directory (a run directory or its
 * checkpoints/ folder), in its newest checkpoint whose parameters verify — into a new DECODE model
 * (FM_MODEL_DECODE: K/V caches for `max_batch` sequences, no gradients; model.h) of the family the
 * checkpoint names (/model arch) on backend `be`, and its tokenizer (*tok = NULL when the checkpoint
 * stores none). Serial (no MPI needed); parameters CRC-checked, then the rest of the file verified
 * too (it is read once more), so that the caller can say whether the file is also good for
 * resuming. `used_path` (may be NULL, size bytes) receives the file read; `note` (may be NULL,
 * note_size bytes) why it was chosen: "the newest checkpoint of DIR whose parameters verify;
 * skipped step-X.h5 (why); all 137 datasets verify", or that its optimizer state fails its
 * checksum ("good for sampling, NOT for resuming training"). Errors: FM_ERR_INPUT for a missing,
 * damaged or foreign file or a model family this fmtrain does not know. */
fm_status fm_checkpoint_load_model(const char *path, fm_backend *be, int max_batch, fm_model **model,
                                   fm_tokenizer **tok, char *used_path, size_t size, char *note,
                                   size_t note_size);

/* The same, into a model of the kind `opts` asks for (fm_model_options: FM_MODEL_DECODE for
 * sampling, FM_MODEL_EVAL for `fmtrain eval`, FM_MODEL_TRAIN; max_batch sequences). Same errors. */
fm_status fm_checkpoint_load_model_opts(const char *path, fm_backend *be, const fm_model_options *opts,
                                        fm_model **model, fm_tokenizer **tok, char *used_path,
                                        size_t size, char *note, size_t note_size);

/* What a checkpoint file says about its run, besides the tensors (docs/checkpoint-format.md). */
typedef struct fm_checkpoint_meta {
    int64_t step;        /* optimizer steps completed */
    fm_config config;    /* the stored effective configuration (/config), parsed */
    int writer_ranks;
    char train[4096];     /* /data train: [data] train as the trainer was given it (relative paths
                             are relative to the trainer's working directory) */
    char val[4096];       /* /data val: the validation file used ([data] val, else [data] train) */
    char train_abs[4096]; /* /data train_abs, val_abs: the same made absolute when the checkpoint was
                             written; "" in checkpoints written before these attributes existed */
    char val_abs[4096];
    int val_separate;     /* /data val_source: 1 "data.val" (a separate validation file), 0
                             "data.train" (the training file's /val split), -1 not recorded */
    char reason[32];      /* root reason ("periodic", ..., "import"); "" when absent */
    char source[4096];    /* root source: where an imported model came from; "" for a trained one */
} fm_checkpoint_meta;

/* Reads the metadata of checkpoint FILE `path` (not a directory: see fm_checkpoint_load_model_opts
 * for the file a directory stands for). Serial. Errors: FM_ERR_INPUT for a missing, foreign or
 * damaged file or a stored configuration that does not parse. */
fm_status fm_checkpoint_read_meta(const char *path, fm_checkpoint_meta *out);

/* Writes `path` (atomically, no `latest`) as a checkpoint that holds a model only: the root attributes
 * (reason = "import", step 0, `source` describing where the model came from), /model, /params (with
 * crc32, hf_name and hf_transposed), /config (config_text: the configuration to train it with), /data
 * and /tokenizer when tok is not NULL — no /optimizer and no /trainer. `fmtrain import` writes such
 * files; `fmtrain sample`, `inspect` and `export` read them like any checkpoint; a run starts from one
 * with [checkpoint] init_from (resume refuses it). Collective over comm (every rank passes the same
 * model and tokenizer). */
fm_status fm_checkpoint_write_model(MPI_Comm comm, const char *path, fm_model *model, const fm_tokenizer *tok,
                                    const char *config_text, const char *source);

#endif /* FM_CHECKPOINT_H */

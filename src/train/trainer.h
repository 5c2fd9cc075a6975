/* trainer.h — data-parallel training of one model over MPI: the loop behind `fmtrain train`.
 *
 * What it is: every rank holds the full model. A step runs grad_accum micro-batches of micro_batch
 * sequences of seq_len tokens on each rank (global batch = micro_batch x grad_accum x ranks x
 * seq_len tokens); the gradients are averaged over ranks by the comm engine's bucketed all-reduce,
 * which adds the ranks' values in a fixed order of fmtrain's own (dist/comm.h, over the model's
 * shard plan), so a layout trains bit-identically in every [train] zero stage.
 * Overlap, where it happens: on the CPU backend, during the backward pass of the LAST micro-batch
 * the model reports each finished layer's gradient range and that bucket's all-reduce starts at
 * once (the earlier micro-batches of a grad_accum > 1 step only accumulate, with nothing in
 * flight). A device backend on several ranks gets no overlap: its gradients are staged through
 * host memory (no CUDA-aware MPI is assumed), downloaded after the whole backward pass,
 * all-reduced on the host and uploaded again. (With one rank there is nothing to reduce.) Then the
 * step waits for all buckets, computes the global gradient norm, clips, checks for NaN/Inf
 * ([train] on_nan), applies AdamW at the schedule's learning rate, and logs (rank 0).
 * Sharding the optimizer ([train] zero, ZeRO stages 1 and 2; docs/training.md): with zero >= 1 the
 * layout is cut into one shard per rank (fm_model_shard_bounds) and each rank's optimizer holds the
 * AdamW moments of its shard only. The step then: the gradients are all-reduced as above (zero = 1)
 * or reduce-scattered (zero = 2: the same buckets, overlapped the same way, but each rank receives
 * only its shard's average, in a fixed reduction order, comm.h); the gradient norm is the ranks'
 * sums of squares over their shards added in rank order; each rank updates the weights of its shard
 * piece by piece and sends each piece to every other rank as soon as it is done (the all-gather
 * overlaps the rest of the update), so every rank ends the step with every updated weight. A device
 * backend stages both through host memory as it does the gradients. With one rank every zero stage
 * computes exactly what zero = 0 does.
 * Around the loop: placement (hwloc), the start banner (placement table, parameter count, memory,
 * global batch, MFU reference), evaluation every eval_every steps (and at the end) on a fixed set of
 * eval_windows windows of the val split with the work shared by all ranks (train/evaluate.h), stop requests (SIGUSR1/SIGTERM, the Slurm wall-time limit)
 * agreed by all ranks at a step boundary, checkpoints through hooks (below).
 * What it is not: it does not write checkpoint files itself (src/ckpt/checkpoint.h does, through the
 * hooks) and does not parse the command line (src/cli/cmd_train.c).
 *
 * Collectives: fm_trainer_create, fm_trainer_run and fm_trainer_free are collective over
 * MPI_COMM_WORLD; every rank calls them with the same configuration.
 *
 * Signals: the caller installs the stop-signal handlers (fm_signals_install) as early as possible,
 * so that a SIGUSR1/SIGTERM during start-up is a request, not a kill; fm_trainer_run polls
 * fm_signals_pending() after the resume hook (stop at once, exit 75) and at every step boundary.
 *
 * Results of fm_trainer_run: NULL when all train.steps are done; FM_ERR_STOPPED (exit 75, resumable)
 * when a signal or the wall-time limit stopped the run at a step boundary (after the save hook ran);
 * FM_ERR_NUMERIC (exit 4) for a NaN/Inf loss or gradient norm with on_nan = stop — in that case the
 * save hook is NOT called (no poisoned checkpoint). Statuses that every rank reaches identically are
 * collective (fm_status_collective).
 *
 * Test hooks: fm_trainer_set_test_hooks (below) lets a test executable change a step between the
 * all-reduce and the loss average (tests/train/fmtrain_faults.c injects NaNs there to exercise
 * [train] on_nan) and delay or stall one rank inside its compute time (the straggler report, the
 * hang watchdog). fmtrain itself installs none and reads no test variable.
 *
 * ---- Checkpoint integration (the ckpt module) ----------------------------------------------------
 * The whole resumable state is: the model parameters (fm_model_get/set_params), the optimizer
 * moments and step (fm_optimizer_get/set_state, _get/set_step: with zero >= 1 each rank's optimizer
 * holds the moments of its shard, fm_trainer_shard_bounds), and fm_trainer_state below (which
 * includes the data reader's position). The hooks are called on EVERY rank, at a step boundary, with
 * gradients zero and no all-reduce in flight:
 *   resume(ctx, t, &resumed): once, after the weights are initialised from [run] seed and before the
 *       first step. It may load a checkpoint into the model and optimizer and call
 *       fm_trainer_set_state (which also repositions the reader); sets *resumed = 1 when it did.
 *       The trainer then checks the parameters are identical on all ranks.
 *   save(ctx, t, reason): to write a checkpoint of the current state. Reasons: PERIODIC
 *       ([checkpoint] every_steps / every_minutes, decided identically on all ranks), STOP (a signal
 *       or the wall-time limit; the run exits 75 afterwards), FINAL (after the last step and its
 *       evaluation). Never called after a non-finite loss/norm with on_nan = stop.
 * Either hook may be NULL (no checkpoints: a stop is still clean and exits 75). A writer that works
 * in the background ([checkpoint] async) also sets poll (every step boundary: publish a finished
 * write) and finish (as fm_trainer_run returns: settle what is in flight); see fm_trainer_hooks.
 *
 * ---- The hang watchdog (train/watchdog.h, [runtime] hang_factor and hang_min_minutes) -----------
 * fm_trainer_run starts a watchdog thread on every rank (unless hang_factor = 0) and arms it for
 * each piece of work with a limit of hang_factor x the work's usual duration, never less than
 * hang_min_minutes:
 *   a step (from reading its data to the agreement at its end): the median of this segment's last
 *       50 step times; the first 3 steps of a segment, which have no median yet (allocation, page
 *       faults, a GPU's warm-up), get 4 x hang_min_minutes;
 *   an evaluation: the median step x eval_batches / grad_accum (it runs that many micro-batches);
 *   a checkpoint write: the previous write of this segment; the first one gets
 *       4 x hang_min_minutes, or its size at 10 MB/s when that is longer;
 *   the resume (reading a checkpoint): as a first checkpoint write.
 * Where the job's end time is known and [run] stop_margin_minutes > 0, no limit reaches past half
 * the stop margin before the end, so a hang still leaves the job script time to requeue. On expiry
 * every rank that is still alive writes where it was ("waiting for the gradient all-reduce") and
 * exits 75 through opts->exit_now; the job script requeues and the run resumes from its newest
 * checkpoint. The checkpoint module re-arms it with hang_min_minutes after an agreed write error,
 * for the close that follows (fm_watchdog_expect: then the exit code is the error's).
 *
 * ---- The straggler report ----------------------------------------------------------------------
 * At every logged step the ranks' compute times (data, forward, backward: before waiting for the
 * others) over the logging window are gathered on rank 0 and logged (metrics.h: fastest, median,
 * slowest, and which rank is slowest).
 */
#ifndef FM_TRAINER_H
#define FM_TRAINER_H

#include <stdint.h>
#include <stdio.h>

#include "dist/comm.h"
#include "config/config.h"
#include "data/reader.h"
#include "train/metrics.h"
#include "model/model.h"
#include "train/optimizer.h"
#include "core/status.h"
#include "dist/topology.h"
#include "train/watchdog.h"

/* The resumable training state besides weights and optimizer moments (what checkpoints store). */
typedef struct fm_trainer_state {
    int64_t step;           /* optimizer steps completed; also the schedule position of the next
                               step (its learning rate is fm_schedule_lr(spec, step)) */
    int64_t tokens_seen;    /* global training tokens consumed (step x global batch tokens) */
    uint64_t seed;          /* [run] seed of the run: weight init and data order derive from it */
    fm_reader_state reader; /* data position of the next step (seed, epoch, position) */
    double train_seconds;   /* wall time spent training, summed over every segment of the run */
    int64_t skipped_steps;  /* updates skipped for non-finite values (on_nan = skip) */
} fm_trainer_state;

typedef struct fm_trainer fm_trainer;

typedef enum fm_trainer_save_reason {
    FM_TRAINER_SAVE_PERIODIC, /* [checkpoint] every_steps / every_minutes */
    FM_TRAINER_SAVE_STOP,     /* signal or wall time: the run exits 75 after this */
    FM_TRAINER_SAVE_FINAL     /* training finished */
} fm_trainer_save_reason;

typedef struct fm_trainer_hooks {
    fm_status (*resume)(void *ctx, fm_trainer *t, int *resumed);
    fm_status (*save)(void *ctx, fm_trainer *t, fm_trainer_save_reason reason);
    void *ctx;
    /* Optional (may be NULL), for a writer that works in the background ([checkpoint] async):
     * poll: at every step boundary on every rank (after the step and its log, before the stop and
     *   checkpoint agreement), to publish a write that has finished; an error ends the run.
     * finish: once as fm_trainer_run returns, with its result `st` (owned; returns the result to
     *   use): settles what is still in flight — collectively when st is NULL or collective, else
     *   rank-locally without MPI. */
    fm_status (*poll)(void *ctx, fm_trainer *t);
    fm_status (*finish)(void *ctx, fm_trainer *t, fm_status st);
} fm_trainer_hooks;

/* How the process presents itself (from main's fm_cmd_env). */
typedef struct fm_trainer_options {
    const char *config_path; /* the parameter file (for messages) */
    FILE *out;               /* rank 0's console, usually stdout */
    int out_is_tty;          /* progress line in place */
    int dry_run;             /* fm_trainer_create stops after the checks and the plan: no model
                                memory, no files; fm_trainer_run must not be called */
    fm_watchdog_exit_fn exit_now; /* how the hang watchdog ends the process (src/cli/main.c);
                                     NULL: a hang is only reported */
} fm_trainer_options;

/* Sets everything up, collectively: MPI context, placement (binds the rank, sets its threads),
 * backend, dataset check (vocabulary, enough windows), model (initialised from [run] seed),
 * optimizer, reader, run directory with config.ini, metrics.jsonl and train.log (rank 0), the MFU
 * reference, and prints the start banner on rank 0. With opts->dry_run it prints the dataset
 * summary, the placement table, the parameter count, the memory estimate and the global batch, and
 * allocates nothing else. `cfg` is copied. Errors: configuration that cannot run (collective), a
 * bad dataset (FM_ERR_INPUT naming it), allocation, MPI. */
fm_status fm_trainer_create(const fm_config *cfg, const fm_trainer_options *opts, fm_trainer **out);

/* Runs the loop until train.steps (see the results above). Calls hooks->resume first. */
fm_status fm_trainer_run(fm_trainer *t, const fm_trainer_hooks *hooks);

/* Collective. Sets *t to NULL; safe on NULL. */
void fm_trainer_free(fm_trainer **t);

/* ---- accessors for the hooks (owned by the trainer) ------------------------------------------- */
const fm_config *fm_trainer_config(const fm_trainer *t);
const fm_comm *fm_trainer_comm(const fm_trainer *t);
fm_model *fm_trainer_model(fm_trainer *t);
fm_optimizer *fm_trainer_optimizer(fm_trainer *t);
fm_reader *fm_trainer_reader(fm_trainer *t);
fm_metrics *fm_trainer_metrics(fm_trainer *t); /* NULL on ranks other than 0 */
const char *fm_trainer_run_dir(const fm_trainer *t);
fm_watchdog *fm_trainer_watchdog(fm_trainer *t); /* NULL outside fm_trainer_run or when disabled */
/* Arms the hang watchdog (when there is one) for work `what` (`step`, or -1) by the trainer's rules
 * (above): hang_factor x `usual` seconds (`usual_what` says what that is), at least
 * hang_min_minutes; when usual is 0, the first-time limit (4 x hang_min_minutes, or `first` seconds
 * when longer); never past half the stop margin before the job's end. A hang exits 75. For the
 * checkpoint module's waits on a background write. */
void fm_trainer_arm(fm_trainer *t, const char *what, int64_t step, double usual,
                    const char *usual_what, double first);
/* The model's shape (known after fm_trainer_create, also in a dry run). */
const fm_model_shape *fm_trainer_shape(const fm_trainer *t);
/* [train] zero >= 1: the shard plan, ranks+1 values (fm_model_shard_bounds; rank r's optimizer owns
 * [b[r], b[r+1]) of the layout); NULL with zero = 0. Owned by the trainer. */
const size_t *fm_trainer_shard_bounds(const fm_trainer *t);

/* Where the last step's time went on this rank (seconds; wall clock). Communication that overlaps
 * compute is inside compute_s and update_s; the *_wait_s fields are what was left exposed. */
typedef struct fm_trainer_timeline {
    double data_s;        /* reading the step's windows (the read-ahead thread's queue) */
    double compute_s;     /* forward and backward of every micro-batch, with the gradient buckets
                             started (and progressed) from the backward's callbacks */
    double grad_wait_s;   /* completing the gradient all-reduce / reduce-scatter (exposed) */
    double norm_s;        /* the gradient norm (zero >= 1: this rank's shard and the sum over ranks) */
    double update_s;      /* AdamW over this rank's range, with the all-gather's sends started from
                             it (zero >= 1), and with bf16 activations the bf16 copy of the
                             gathered weights */
    double gather_wait_s; /* completing the all-gather of the updated weights (exposed; zero >= 1) */
    double step_s;        /* the whole step (the sum of the above, the loss average and small
                             bookkeeping) */
    int buckets, early_buckets; /* gradient buckets, and those started during the backward */
} fm_trainer_timeline;
void fm_trainer_last_timeline(const fm_trainer *t, fm_trainer_timeline *tl);

/* The current state (reader position included). */
void fm_trainer_get_state(const fm_trainer *t, fm_trainer_state *state);
/* Restores a state: step counters and the reader position (fm_reader_set_state). The optimizer's own
 * step counter is set separately (fm_optimizer_set_step). Error when the seed differs from
 * [run] seed (FM_ERR_INPUT: the data order would change) or the reader refuses the position. */
fm_status fm_trainer_set_state(fm_trainer *t, const fm_trainer_state *state);

/* ---- test hooks (test executables only) ------------------------------------------------------- */

/* What a test may do inside a step. Every hook may be NULL. */
typedef struct fm_trainer_test_hooks {
    /* Called on every rank in every step, after the gradients are averaged over ranks (the model's
     * gradients hold the average; with [train] zero = 2 only in this rank's shard, the rest holds
     * this rank's own gradients) and before the loss is averaged over ranks and the gradient norm
     * taken. step: the step being computed, 1-based (the state's step + 1); *loss: this rank's mean
     * loss over its micro-batches, which the hook may change, as it may change the gradients
     * (fm_model_grads of fm_trainer_model). An error fails the step like any other. */
    fm_status (*after_allreduce)(void *ctx, fm_trainer *t, int64_t step, double *loss);
    /* Called on every rank in every step inside its compute time (after the step's data is read,
     * before the forward pass), so that a test can make one rank slow (the straggler report) or
     * stall it (the hang watchdog). step: 1-based, as above. */
    fm_status (*before_compute)(void *ctx, fm_trainer *t, int64_t step);
    void *ctx;
    /* Called on every rank at the end of every step (after the update and, with zero >= 1, the
     * all-gather), with the step's timeline on this rank (bench/zero prints it). step: the step
     * just completed, 1-based. */
    fm_status (*after_step)(void *ctx, fm_trainer *t, int64_t step, const fm_trainer_timeline *tl);
} fm_trainer_test_hooks;

/* Installs test hooks (copied; NULL removes them). For test executables: the fmtrain program never
 * calls it. */
void fm_trainer_set_test_hooks(fm_trainer *t, const fm_trainer_test_hooks *hooks);

/* The validation loss: fm_evaluate (train/evaluate.h) of the model on fm_config_eval_windows()
 * windows of the val split ([train] eval_windows, spread evenly over it), micro_batch windows per
 * forward; the same set and the same value on every rank count and layout. Collective. */
fm_status fm_trainer_evaluate(fm_trainer *t, double *val_loss);

#endif /* FM_TRAINER_H */

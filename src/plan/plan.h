/* plan.h — the arithmetic of `fmtrain plan`: memory per rank for each ZeRO stage and precision,
 * the largest micro-batch that fits, step time from a measured MFU, wall time, node-hours, jobs,
 * and the checkpoint interval.
 *
 * What it is: pure functions of a model shape (model/model.h: the model's own byte counts and FLOPs),
 * the job's layout and the data tables (plan/tables.h: devices from datasheets, fmtrain-bench
 * measurements, sites). Nothing here allocates a model, reads a file or prints.
 * What it is not: no command line (src/cli/cmd_plan.c), no file parsing (tables.h), and no guess: a
 * step time is predicted only from an fmtrain measurement on that device and precision (or, where
 * none exists, as a range from a measurement on a device with the same chip, both ends stated);
 * otherwise the result says so and holds no prediction.
 *
 * The ZeRO arithmetic lives in ONE function, fm_plan_zero_memory, for any code that needs it (the
 * training banner of issue 19 included): give it the model's byte counts (fm_model_memory_estimate)
 * and it says what one rank holds at each stage.
 */
#ifndef FM_PLAN_H
#define FM_PLAN_H

#include <stdint.h>

#include "core/status.h"
#include "model/model.h"
#include "plan/tables.h"

#define FM_PLAN_STAGES 3 /* ZeRO stages 0, 1, 2 */

/* Training precision, [runtime] precision: fp32 everywhere, or bf16 mixed precision (kernels.h,
 * "Precision": bf16 matmul inputs and a bf16 copy of the weights that the matmuls read; fp32 master
 * weights, gradients and AdamW moments). */
typedef enum fm_plan_precision { FM_PLAN_FP32 = 0, FM_PLAN_BF16 = 1 } fm_plan_precision;
#define FM_PLAN_PRECISIONS 2
const char *fm_plan_precision_name(fm_plan_precision p); /* "fp32", "bf16" */

/* What one rank holds, in bytes, under one ZeRO stage. */
typedef struct fm_plan_zero_memory {
    int stage;           /* 0, 1, 2 */
    int ranks;           /* data-parallel ranks the state is sharded over */
    uint64_t weights;    /* the parameters the forward and backward read, whole on every rank:
                            fp32 compute: the model's param_bytes (they are also the master copy);
                            bf16 compute: the model's param_copy_bytes (2 per parameter) */
    uint64_t master;     /* fp32 master weights kept apart from the compute copy (mixed precision
                            only; 0 with fp32 compute); a 1/ranks shard at stage >= 1 */
    uint64_t grads;      /* the model's grad_bytes; a 1/ranks shard at stage 2 */
    uint64_t optim;      /* AdamW m and v, the model's optim_bytes; a 1/ranks shard at stage >= 1 */
    uint64_t activations; /* act_bytes + logits_bytes + scratch_bytes: never sharded */
    uint64_t total;      /* the sum of the five above */
} fm_plan_zero_memory;

/* THE ZeRO arithmetic. `mem` is a training model's breakdown (fm_model_memory_estimate, for the
 * activation element size of the precision); `weight_elem_bytes` the bytes of one parameter as
 * compute reads it: 4 (fp32: the parameters are the master weights, so stage 1 cannot shrink them —
 * each rank updates its range and the ranges are gathered back into every rank's whole copy) or 2
 * (the model's bf16 copy, param_copy_bytes, whole; the fp32 master weights, param_bytes, are a
 * separate buffer that stage 1 shards). `mem` must be of the same precision (param_copy_bytes > 0
 * exactly for 2).
 * A shard is ceil(n_params_padded / ranks) elements of the flat layout (the largest rank's share).
 * Stage 0 holds everything; stage 1 shards the AdamW moments and the master weights; stage 2 also
 * the gradients. Errors: stage outside 0..2, ranks < 1, weight_elem_bytes not 2 or 4 or not `mem`'s
 * precision (FM_ERR_USAGE). */
fm_status fm_plan_zero_memory_of(const fm_model_memory_info *mem, int stage, int ranks,
                                 int weight_elem_bytes, fm_plan_zero_memory *out);

/* The job to plan. */
typedef struct fm_plan_input {
    fm_model_shape shape; /* resolved (fm_model_shape_resolve); T = max_seq_len */
    int micro_batch;      /* [train] micro_batch */
    int grad_accum;       /* [train] grad_accum */
    double tokens;        /* the token budget, > 0 */
    int nodes;            /* >= 1 */
    int ranks_per_node;   /* >= 1 */
    int cores_per_rank;   /* CPU devices: cores each rank computes on (>= 1); GPUs: ignored */
    fm_plan_precision precision; /* the precision the prediction is for */
    int zero_stage;       /* the stage the prediction and the fit are for (0..2) */
    double time_limit_h;  /* one job's wall-time limit (hours); 0: unknown (no job count) */
    double stop_margin_s; /* [run] stop_margin_minutes: a job stops this long before its limit */
    double fs_gbs;        /* checkpoint write bandwidth of the job (GB/s); 0: unknown */
    double node_mtbf_h;   /* mean time between failures of one node (hours); 0: unknown */
    double node_memory_gib; /* CPU: memory of a node; GPU: host memory of a node (0: unknown) */
    uint64_t checkpoint_bytes; /* one checkpoint file (ckpt's fm_checkpoint_estimate_size) */
} fm_plan_input;

/* How the step time was obtained. */
typedef enum fm_plan_basis {
    FM_PLAN_NO_PREDICTION = 0, /* no fmtrain measurement for this device and precision */
    FM_PLAN_MEASURED,          /* a measurement on this device and precision (perhaps of another
                                  model: `same_model` says) */
    FM_PLAN_SIBLING_RANGE      /* no measurement on this device; a range from one on a device with
                                  the same chip (same peak): compute-bound at the high end, memory-
                                  bandwidth-bound at the low end */
} fm_plan_basis;

typedef struct fm_plan_result {
    /* the model */
    uint64_t n_params;      /* real parameters */
    double flops_per_token; /* fm_model_flops_per_token at T */
    /* the layout */
    int ranks;
    double tokens_per_step; /* micro_batch * grad_accum * ranks * T */
    int64_t steps;          /* ceil(tokens / tokens_per_step) */
    double rank_peak_flops; /* the device's datasheet peak in this precision for one rank */
    /* memory per rank: [precision][stage] */
    fm_model_memory_info model_mem[FM_PLAN_PRECISIONS];
    fm_plan_zero_memory zero[FM_PLAN_PRECISIONS][FM_PLAN_STAGES];
    uint64_t overhead_bytes;  /* the device's measured runtime overhead (0: none recorded) */
    uint64_t comm_bytes;      /* more than one rank: MPI's buffers of the gradient all-reduce,
                                 allreduce_buffer_factor x gradient bytes (0: one rank, or unmeasured) */
    uint64_t budget_bytes;    /* memory one rank may use: GPU memory, or node memory / ranks */
    int fits[FM_PLAN_PRECISIONS][FM_PLAN_STAGES];
    int max_micro_batch[FM_PLAN_PRECISIONS][FM_PLAN_STAGES]; /* 0: not even 1 fits */
    uint64_t host_ckpt_bytes; /* GPU: host copies of parameters and moments while writing a checkpoint */
    /* the prediction (for input precision and stage) */
    fm_plan_basis basis;
    const fm_plan_measurement *point; /* the measurement used (NULL without prediction) */
    int same_model;        /* the point measured this very model shape (and T) */
    double point_flops_per_token; /* the measured model's FLOPs per token */
    int points_on_device;  /* fmtrain measurements on this device and precision */
    double mfu_min_on_device, mfu_max_on_device; /* their MFU range */
    double mfu_lo, mfu_hi; /* equal unless a sibling range */
    double bandwidth_ratio; /* sibling range: this device's memory bandwidth / the measured one's */
    double compute_s_lo, compute_s_hi; /* the fmtrain-bench part of a step at mfu_hi, mfu_lo */
    double trainer_s;      /* the device's measured trainer overhead per step (0: unmeasured) */
    double comm_s;         /* the all-reduce between the ranks of one node (0: one rank, or unmeasured) */
    int comm_passes;       /* comm_s's bus-bandwidth term moves comm_passes x (n-1)/n x the gradient
                              bytes with comm_passes - 1 latencies per ring step pair: 2 (zero 0's
                              all-reduce; zero 2's reduce-scatter + all-gather), 3 (zero 1: both) */
    int comm_complete;     /* 1: every cost of the layout is in the step (one rank, or one node whose
                              all-reduce is measured); 0: the step is a lower bound */
    double step_s_lo, step_s_hi;   /* compute + trainer + comm */
    double tokens_per_s_lo, tokens_per_s_hi;
    double compute_h_lo, compute_h_hi; /* steps * step time, hours (the name: the run's
                                          training time before checkpoints and failures) */
    /* checkpoints */
    double ckpt_write_s;   /* checkpoint_bytes / fs_gbs (0: unknown bandwidth) */
    double job_mtbf_h;     /* node_mtbf_h / nodes (0: unknown) */
    double young_interval_s; /* sqrt(2 * write * job MTBF) (0: unknown) */
    double ckpt_overhead;  /* write/interval + interval/(2 * MTBF): the expected fraction added */
    /* wall time, node-hours, jobs (lo/hi from the step-time range; 0 without prediction) */
    double wall_h_lo, wall_h_hi;
    double node_hours_lo, node_hours_hi;
    double job_train_h;    /* training time one job gets: limit - stop margin - resume read -
                              final write (0: no time limit) */
    int64_t jobs_lo, jobs_hi;
} fm_plan_result;

/* Computes the plan of `in` on `dev` (its peak, memory, cores) with the measurements of `tables`.
 * Errors: a shape that fails fm_model_shape_check, bad sizes (FM_ERR_USAGE naming the value), a
 * device without a peak for the precision (FM_ERR_USAGE). */
fm_status fm_plan_compute(const fm_plan_input *in, const fm_plan_device *dev,
                          const fm_plan_tables *tables, fm_plan_result *out);

/* The MFU of a measurement: tokens_per_s * FLOPs per token of its model / (ranks * its rank peak on
 * its device in its precision). 0 when the device or its peak is unknown. */
double fm_plan_measurement_mfu(const fm_plan_measurement *m, const fm_plan_tables *tables);

/* The budget a rank's memory is checked against (bytes): a GPU's memory, or a CPU node's memory
 * divided among its ranks. 0 when the device records no memory. */
uint64_t fm_plan_rank_budget(const fm_plan_device *dev, int ranks_per_node);

/* The default node MTBF for GPU nodes when none is stated: Llama 3's published interruption rate
 * (419 unexpected interruptions in 54 days on 16,384 H100 GPUs, arXiv:2407.21783 section 3.3.4),
 * as GPU-hours between interruptions, divided by the GPUs of a node. */
#define FM_PLAN_LLAMA3_GPU_HOURS_PER_FAILURE (16384.0 * 54.0 * 24.0 / 419.0)

#endif /* FM_PLAN_H */

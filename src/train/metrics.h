/* metrics.h — what rank 0 tells the user about a run: console lines, the human log, metrics.jsonl.
 *
 * One fm_metrics per run, opened by rank 0 only (other ranks pass no metrics object around; every
 * function accepts NULL and then does nothing, so callers need no `if (rank == 0)`).
 *
 * Files in the run directory (created with its parents):
 *   metrics.jsonl  one JSON object per line:
 *                    {"type":"train","step":S,"tokens":N,"loss":L,"lr":R,"grad_norm":G,"step_ms":M,
 *                     "tokens_per_s":X,"mfu":F,"elapsed_s":E,"skipped":0|1}
 *                  with several ranks also the straggler report (fm_metrics_step):
 *                    "compute_ms_min":A,"compute_ms_median":B,"compute_ms_max":C,"slowest_rank":R
 *                    {"type":"eval","step":S,"tokens":N,"val_loss":L,"elapsed_s":E}
 *                    {"type":"checkpoint","step":S,"file":"step-00000100.h5","reason":R,"async":B,
 *                     "tensor_bytes":T,"file_bytes":F,"write_s":W,"write_gb_per_s":G,
 *                     "checkpoint_stall_s":X}  per published checkpoint (fm_metrics_checkpoint)
 *                  Non-finite numbers are written as null (JSON has no NaN). `step` counts completed
 *                  optimizer steps (1 after the first). mfu is a fraction (0.31 = 31 %).
 *   train.log      the human log: every console line and message, each prefixed with the UTC time.
 * Both are appended to, so a resumed run continues the same files.
 *
 * Console: on a terminal the step line is a progress line rewritten in place ("\r...\033[K"); other
 * messages first end that line. Not on a terminal (batch logs): one plain line per logged step.
 * With several ranks the step line ends in "| ranks A-C ms (slowest R)": the spread of the ranks'
 * compute times and the slowest rank.
 */
#ifndef FM_METRICS_H
#define FM_METRICS_H

#include <stdint.h>
#include <stdio.h>

#include "kernels.h"
#include "core/status.h"

typedef struct fm_metrics fm_metrics;

typedef struct fm_metrics_options {
    const char *run_dir; /* directory for metrics.jsonl and train.log; NULL = no files */
    FILE *console;       /* usually stdout; NULL = no console output */
    int console_is_tty;  /* progress line updated in place */
    int64_t total_steps; /* for "step/total" */
} fm_metrics_options;

/* One logged training step. */
typedef struct fm_metrics_step {
    int64_t step;        /* completed steps */
    int64_t tokens;      /* tokens consumed so far (global) */
    double loss;         /* mean training loss of the step */
    double lr;           /* learning rate used by the step */
    double grad_norm;    /* global gradient norm before clipping */
    double step_ms;      /* mean wall time per step over the logging window */
    double tokens_per_s; /* global throughput over the logging window */
    double mfu;          /* model FLOP utilisation, fraction of the peak; < 0 = unknown */
    double elapsed_s;    /* since the run (this process) started */
    double eta_s;        /* estimated seconds to the last step; < 0 = unknown */
    int skipped;         /* the update was skipped (non-finite values, on_nan = skip) */
    /* The straggler report (ranks > 1): each rank's compute time per step over the logging window
     * (reading its data, forward and backward: everything before it waits for the others in the
     * gradient all-reduce), summarised over the ranks. All ranks wait for the slowest, so its
     * compute time is the step's critical path; a rank far above the median is a straggler (a slow
     * node, a noisy neighbour, a slow file system under its data). */
    int ranks;                /* ranks summarised; <= 1: no straggler report */
    double compute_ms_min;    /* fastest rank's compute time per step */
    double compute_ms_median; /* the median over the ranks */
    double compute_ms_max;    /* slowest rank's */
    int slowest_rank;         /* the rank with compute_ms_max (lowest such rank) */
} fm_metrics_step;

/* One published checkpoint (rank 0's measurements). */
typedef struct fm_metrics_checkpoint {
    int64_t step;          /* the step the checkpoint holds */
    const char *file;      /* its file name ("step-00000100.h5") */
    const char *reason;    /* "periodic", "stop", "final" */
    int async;             /* 1: its tensors were written by the background writer (ckpt/async.h) */
    uint64_t tensor_bytes; /* tensor data in the file */
    uint64_t file_bytes;   /* the file's size */
    double write_s;        /* from the file's creation to its publication (rename, `latest`) */
    double stall_s;        /* training time lost to it: the whole write when synchronous; with
                              async the snapshot, the waits for it and its publication */
} fm_metrics_checkpoint;

/* Opens the files (appending) and prepares the console. Errors name the path. */
fm_status fm_metrics_open(const fm_metrics_options *opts, fm_metrics **out);

/* Flushes and closes; ends a pending progress line. Sets *m to NULL. Safe on NULL. */
void fm_metrics_close(fm_metrics **m);

/* Writes a step record (console, log, jsonl). I/O errors are returned (disk full, ...). */
fm_status fm_metrics_log_step(fm_metrics *m, const fm_metrics_step *rec);

/* Writes an evaluation record. */
fm_status fm_metrics_log_eval(fm_metrics *m, int64_t step, int64_t tokens, double val_loss,
                              double elapsed_s);

/* Writes a checkpoint record (metrics.jsonl only: the checkpoint module prints its own line). */
fm_status fm_metrics_log_checkpoint(fm_metrics *m, const fm_metrics_checkpoint *rec);

/* A message for the user: console (ending any progress line) and the human log. printf-style;
 * a trailing newline is added when missing. */
void fm_metrics_printf(fm_metrics *m, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Same, only into the human log (detail not worth the console). */
void fm_metrics_logf(fm_metrics *m, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Formats seconds as "45s", "12m03s", "3h07m" into buf; "?" when negative or not finite. */
const char *fm_metrics_format_duration(double seconds, char *buf, size_t bufsize);

/* Model FLOPs per token, the MFU's numerator, are the model family's: fm_model_flops_per_token
 * (model/model.h). */

/* Measures this rank's achievable fp32 matmul rate (FLOP/s) through the backend's own matmul
 * (be->ops->matmul_forward, n = 1024: the same BLAS, threads and tiling as training), best of 6
 * after a warm-up, about 0.1-1 s. It is the reference for MFU unless [runtime] peak_tflops is
 * given. Errors: backend allocation. */
fm_status fm_metrics_measure_peak_flops(fm_backend *be, double *flops);

#endif /* FM_METRICS_H */

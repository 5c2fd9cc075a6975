/* config.h — parameter files: the schema, the INI parser, --set overrides, validation.
 *
 * A parameter file is INI: `[section]` headers, `key = value` lines, `#` and `;` comments (whole
 * line, or after whitespace following a value). Every key belongs to exactly one entry of the schema
 * table in config.c (section, key, type, default, allowed range or values, one-line help); that one
 * table drives parsing, validation, defaults, the effective-configuration printout and the generated
 * docs/parameters.md. Nothing else in fmtrain knows key names.
 *
 * Errors name the file, the line and what was expected; an unknown key suggests the closest known
 * one; wrong types, out-of-range values, duplicate keys and missing required keys are errors, never
 * silent defaults. `--set section.key=value` overrides are validated the same way and reported as
 * "--set section.key" instead of file:line.
 *
 * This module is pure: no MPI, no I/O beyond reading the named file.
 */
#ifndef FM_CONFIG_H
#define FM_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/status.h"

#define FM_CONFIG_PATH_MAX 4096
#define FM_CONFIG_NAME_MAX 128
#define FM_CONFIG_HINTS_MAX 1024

typedef enum { FM_SCHED_COSINE, FM_SCHED_LINEAR, FM_SCHED_CONSTANT, FM_SCHED_WSD } fm_schedule;
typedef enum { FM_DEVICE_CPU, FM_DEVICE_CUDA, FM_DEVICE_AUTO } fm_device;
/* [runtime] precision: the activation precision of the backend (kernels/kernels.h, "Precision") */
typedef enum { FM_RUNTIME_PRECISION_AUTO, FM_RUNTIME_PRECISION_FP32, FM_RUNTIME_PRECISION_BF16 } fm_runtime_precision;
typedef enum { FM_BIND_AUTO, FM_BIND_SOCKET, FM_BIND_NUMA, FM_BIND_CORE, FM_BIND_NONE } fm_bind;
typedef enum { FM_ON_NAN_STOP, FM_ON_NAN_SKIP } fm_on_nan;
typedef enum { FM_ARCH_GPT2, FM_ARCH_LLAMA } fm_arch;
/* [model] tie_embeddings: auto is the family's choice (gpt2: tied, llama: untied). */
typedef enum { FM_TIE_EMB_AUTO, FM_TIE_EMB_TRUE, FM_TIE_EMB_FALSE } fm_tie_emb;
typedef enum { FM_RESUME_AUTO, FM_RESUME_NEVER, FM_RESUME_PATH } fm_resume;
/* [checkpoint] async: periodic checkpoints written by a background thread (ckpt/async.h). */
typedef enum { FM_CKPT_ASYNC_FALSE, FM_CKPT_ASYNC_TRUE } fm_ckpt_async;
/* [runtime] shared_memory: ranks on one node share their gradients and weights (dist/comm.h). */
typedef enum { FM_SHARED_MEMORY_AUTO, FM_SHARED_MEMORY_OFF } fm_shared_memory;

/* The effective configuration. Field names are `<section>_<key>`, one per schema entry. */
typedef struct fm_config {
    /* [run] */
    char run_name[FM_CONFIG_NAME_MAX];
    char run_dir[FM_CONFIG_PATH_MAX]; /* "" = runs/<run_name>: use fm_config_run_dir() */
    uint64_t run_seed;
    double run_stop_margin_minutes;

    /* [model] */
    fm_arch model_arch;
    int model_n_layer; /* required, like n_head, d_model, seq_len, data_train, train_steps */
    int model_n_head;
    int model_d_model;
    int model_seq_len;
    int64_t model_vocab_size; /* 0 = take it from the dataset */
    int model_n_kv_head;      /* 0 = model_n_head (multi-head attention) */
    int model_ffn_dim;        /* 0 = the family's rule */
    double model_rope_theta;
    double model_norm_eps;
    fm_tie_emb model_tie_embeddings;

    /* [data] */
    char data_train[FM_CONFIG_PATH_MAX];
    char data_val[FM_CONFIG_PATH_MAX]; /* "" = same file as data_train */

    /* [train] */
    int train_micro_batch;
    int train_grad_accum;
    int64_t train_steps;
    double train_lr;
    double train_min_lr;
    int64_t train_warmup_steps;
    fm_schedule train_schedule;
    double train_decay_fraction; /* WSD: fraction of steps in the final decay */
    double train_weight_decay;
    double train_beta1;
    double train_beta2;
    double train_eps;
    double train_clip_grad; /* 0 = no clipping */
    int64_t train_eval_every; /* 0 = never */
    int64_t train_eval_windows; /* the validation set's size: use fm_config_eval_windows() */
    int64_t train_eval_batches; /* old key: > 0 = eval_batches x micro_batch windows; 0 = unused */
    fm_on_nan train_on_nan;
    int train_zero; /* ZeRO stage: 0 replicated optimizer, 1 sharded AdamW state and update,
                       2 also the gradients reduce-scattered (docs/training.md) */

    /* [checkpoint] */
    int64_t checkpoint_every_steps;  /* 0 = not by steps */
    double checkpoint_every_minutes; /* 0 = not by time */
    int checkpoint_keep_last;
    fm_resume checkpoint_resume;
    char checkpoint_resume_path[FM_CONFIG_PATH_MAX]; /* when checkpoint_resume == FM_RESUME_PATH */
    char checkpoint_init_from[FM_CONFIG_PATH_MAX];   /* "" = random initialisation */
    int64_t checkpoint_align_bytes;
    char checkpoint_mpiio_hints[FM_CONFIG_HINTS_MAX]; /* "key=value,key=value" */
    fm_ckpt_async checkpoint_async;

    /* [runtime] */
    fm_device runtime_device;
    fm_runtime_precision runtime_precision;
    int runtime_threads; /* 0 = all cores of the rank's binding */
    fm_bind runtime_bind;
    fm_shared_memory runtime_shared_memory;
    int64_t runtime_log_every;
    double runtime_peak_tflops; /* 0 = measure on CPU at start */
    double runtime_hang_factor;      /* watchdog: multiple of the usual duration; 0 = off */
    double runtime_hang_min_minutes; /* watchdog: never a hang before this */
} fm_config;

/* Fills `cfg` with every schema default. Keys without a default (required ones) are left zeroed. */
void fm_config_defaults(fm_config *cfg);

/* Parses the INI text `text` (length `len`, need not be NUL-terminated), whose origin `source` is used
 * in messages (a path). Values are applied on top of what `cfg` already holds; the caller normally
 * calls fm_config_defaults first. Required keys are not checked here (see fm_config_validate).
 * When run_name is still empty afterwards it becomes `source`'s file name without directory and
 * extension ("inputs/tiny-cpu.ini" -> "tiny-cpu"). Every error found is reported (up to 20), one per
 * line of the message, each as "source:line: what is wrong; what was expected"; `cfg` may then hold
 * part of the file's values. */
fm_status fm_config_parse(fm_config *cfg, const char *source, const char *text, size_t len);

/* Reads and parses the file at `path`. */
fm_status fm_config_load(fm_config *cfg, const char *path);

/* Applies one override "section.key=value" (the argument of --set). The value is taken literally
 * (no comments; surrounding whitespace is trimmed; double quotes work as in a file). Errors read
 * "--set section.key=value: ...". */
fm_status fm_config_set(fm_config *cfg, const char *assignment);

/* Checks required keys, every value against its schema entry (so values set directly in the struct are
 * checked too) and cross-key rules (d_model divisible by n_head, min_lr <= lr, warmup within the run,
 * ...). Errors name the keys and values; every problem found is listed, one per line. */
fm_status fm_config_validate(const fm_config *cfg);

/* The run directory: run_dir, or "runs/<run_name>" (formatted into buf) when run_dir is empty.
 * Returns run_dir or buf. A buffer of FM_CONFIG_PATH_MAX bytes is always large enough. */
const char *fm_config_run_dir(const fm_config *cfg, char *buf, size_t bufsize);

/* [model] arch as its name in the parameter file ("gpt2", "llama"): the model family
 * (src/model/families.c). */
const char *fm_config_arch(const fm_config *cfg);

/* The default of [train] eval_windows (the schema's; fm_config_validate refuses the old key
 * eval_batches together with any other value). */
#define FM_CONFIG_EVAL_WINDOWS 80

/* The number of validation windows of one evaluation: train_eval_windows, or, for a file written
 * with the old key, train_eval_batches x train_micro_batch (what one rank evaluated before
 * eval_windows existed), at most 2^32 - 1. */
int64_t fm_config_eval_windows(const fm_config *cfg);

/* The validation dataset: data_val, or data_train when data_val is empty. */
const char *fm_config_val_path(const fm_config *cfg);

/* Self-check of the schema table (every default parses and is in range, no key twice, help text
 * present). An FM_ERR_INTERNAL status names the broken entry. Used by the tests. */
fm_status fm_config_check_schema(void);

/* Writes the effective configuration as INI text that fm_config_parse accepts and that reproduces
 * `cfg` exactly (every key with its value, except old keys at their default; comments say which
 * differ from the default). Text values
 * are quoted when needed. One exception: a resume path that is literally "auto" or "never" is
 * written as "./auto" / "./never" (the same file). */
void fm_config_write(const fm_config *cfg, FILE *out);

/* Same as fm_config_write into a malloc'ed NUL-terminated string (for checkpoints). */
fm_status fm_config_to_string(const fm_config *cfg, char **text);

/* Writes docs/parameters.md from the schema table (Markdown). */
void fm_config_write_docs(FILE *out);

#endif /* FM_CONFIG_H */

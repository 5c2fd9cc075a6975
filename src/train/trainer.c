/* trainer.c — see trainer.h. The data-parallel training loop and its start-up. */
#define _POSIX_C_SOURCE 200809L
#include "train/trainer.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "train/evaluate.h"
#include "train/schedule.h"
#include "train/signals.h"
#include "core/util.h"
#include "build_info.h"

#define FM_TRAINER_STEP_HIST 50     /* step times the watchdog's median is taken over */
#define FM_TRAINER_FIRST_STEPS 3     /* steps before the median is trusted */
#define FM_TRAINER_SLOW_FS_BPS 10e6  /* bytes/s a first checkpoint write is given at least */

struct fm_trainer {
    fm_config cfg;
    fm_trainer_options opts;
    fm_comm *comm;
    fm_topology_plan plan;
    fm_backend *be;
    fm_model *model;
    fm_optimizer *opt;
    fm_reader *reader;
    fm_comm_allreduce *ar;
    fm_metrics *metrics; /* rank 0 only */
    fm_schedule_spec sched;
    fm_model_shape shape;
    fm_dataset_info data;
    uint64_t val_tokens; /* /val/tokens of the validation file (fm_config_val_path), which is
                            another file than data's when [data] val names one */
    char run_dir[FM_CONFIG_PATH_MAX];
    int B, T, ga;          /* micro-batch, sequence length, gradient accumulation */
    int64_t rank_windows;  /* B * ga: windows this rank reads per step */
    int64_t global_tokens; /* tokens per step over all ranks */
    int32_t *windows;      /* (rank_windows, T+1) */
    int32_t *inp, *tgt;    /* (B, T) each */
    double peak_flops;     /* sum over ranks; 0 = unknown */
    double flops_per_token;
    fm_trainer_state state;
    float *host_grads; /* device backends on several ranks: gradients staged through the host for
                          MPI (no CUDA-aware MPI assumed); NULL otherwise
                          (grads_staged_through_host) */
    /* The shard plan (ranks+1, fm_model_shard_bounds): with zero >= 1 the optimizer's ranges; in
     * every stage the owners of the fixed-order gradient reduction (comm.h), so that all stages add
     * in the same order, and the parts of the gradient norm. */
    size_t *shard;
    fm_comm_allgather *ag;    /* the updated shards to every rank; NULL with zero = 0 */
    float *host_params;       /* device backends on several ranks: the weights staged through the
                                 host for the all-gather; NULL otherwise */
    /* [runtime] shared_memory on one node (use_node_shared): the model's gradients (a part per
     * rank, which the reduction reads in place) and, with zero >= 1, its weights and their bf16
     * copy (one for the node: each rank updates its shard there, nothing is all-gathered); NULL
     * otherwise. Freed after the model. */
    fm_comm_shared *shm_grads, *shm_params, *shm_params_bf16;
    double opt_rss_bytes;     /* this rank's resident memory growth while the optimizer allocated
                                 its state (-1: unknown) */
    fm_trainer_timeline tl;   /* the phases of the last step on this rank */
    fm_trainer_test_hooks test; /* installed by test executables only; all NULL in fmtrain */
    /* The hang watchdog (trainer.h): NULL when hang_factor = 0 or outside fm_trainer_run. */
    fm_watchdog *wd;
    double step_hist[FM_TRAINER_STEP_HIST]; /* this segment's last step times, a ring */
    int64_t ntimed;                          /* steps timed in this segment */
    double last_save_s;                      /* the previous checkpoint write of this segment; 0 */
    double *rank_ms;                         /* rank 0: (2 x ranks) straggler report scratch */
    double end_time;                         /* the job's end (seconds since the epoch); 0: none */
    double stop_margin_s;                    /* [run] stop_margin_minutes in seconds */
};

/* ---- small helpers ------------------------------------------------------------------------------ */

/* Rank 0 prints to the console and the human log (before the metrics exist: the console only). */
static void say(fm_trainer *t, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static void say(fm_trainer *t, const char *fmt, ...)
{
    if (t->comm && t->comm->rank != 0) return;
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (t->metrics)
        fm_metrics_printf(t->metrics, "%s", buf);
    else if (t->opts.out) {
        /* A dry run's stdout must still parse as a parameter file: comment lines only. */
        fprintf(t->opts.out, "%s%s\n", t->opts.dry_run ? "# " : "", buf);
        fflush(t->opts.out);
    }
}

/* The backend that [runtime] device names ("auto": a GPU backend only when compiled in AND a device
 * is visible to this process, fm_backend_auto). */
static const char *device_name(const fm_config *cfg)
{
    switch (cfg->runtime_device) {
    case FM_DEVICE_CPU: return "cpu";
    case FM_DEVICE_CUDA: return "cuda";
    case FM_DEVICE_AUTO: return fm_backend_auto();
    }
    return "cpu";
}

/* [runtime] precision as the backend's FM_PRECISION_* (auto: the backend's choice, kernels.h) */
static unsigned precision_of(const fm_config *cfg)
{
    switch (cfg->runtime_precision) {
    case FM_RUNTIME_PRECISION_FP32: return FM_PRECISION_FP32;
    case FM_RUNTIME_PRECISION_BF16: return FM_PRECISION_BF16;
    case FM_RUNTIME_PRECISION_AUTO: return FM_PRECISION_AUTO;
    }
    return FM_PRECISION_AUTO;
}

/* Whether placement gives each rank a GPU: the run uses a GPU backend. */
static int uses_gpus(const fm_config *cfg)
{
    return fm_backend_uses_gpus(device_name(cfg));
}

/* Whether the MFU reference can be measured with the backend's own matmul at start (caps: a CPU has
 * no datasheet peak for a rank's cores); otherwise it comes from [runtime] peak_tflops or is unknown. */
static int peak_measurable(const fm_trainer *t)
{
    return t->be->ops->caps.peak_from_matmul;
}

/* Whether the gradients are staged through host memory for MPI: memory that is not host memory
 * (caps.host_memory) is not handed to MPI
 * (a CUDA-aware MPI is not assumed), so on several ranks a device backend's gradients are
 * downloaded after the backward pass, all-reduced on the host and uploaded again. The overlap of
 * the all-reduce with the backward pass is then off (accumulate_grads). */
static int grads_staged_through_host(const fm_trainer *t)
{
    return !t->be->ops->caps.host_memory && t->comm->size > 1;
}

/* [runtime] shared_memory = auto, several ranks, all on one node, a backend whose memory is host
 * memory: the ranks share their gradients and (zero >= 1) weights through node-shared memory
 * instead of MPI messages (dist/comm.h; the same bits). */
static int use_node_shared(const fm_trainer *t)
{
    return t->cfg.runtime_shared_memory == FM_SHARED_MEMORY_AUTO && t->comm->size > 1 &&
           fm_comm_single_node(t->comm) && t->be->ops->caps.host_memory;
}

/* Thousands separators for parameter counts: 124439808 -> "124,439,808". */
static const char *group_digits(long long v, char *buf, size_t n)
{
    char tmp[32];
    snprintf(tmp, sizeof tmp, "%lld", v);
    size_t len = strlen(tmp), o = 0;
    for (size_t i = 0; i < len && o + 2 < n; i++) {
        buf[o++] = tmp[i];
        size_t left = len - 1 - i;
        if (left > 0 && left % 3 == 0 && tmp[i] != '-' && o + 2 < n) buf[o++] = ',';
    }
    buf[o] = '\0';
    return buf;
}

/* This process's resident set size in bytes (/proc/self/statm), or -1 where it cannot be read: the
 * measured side of the optimizer's memory (a backend's allocation of host memory is touched when it
 * is zeroed, so it is resident at once). */
static double resident_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return -1.0;
    unsigned long long size = 0, resident = 0;
    int n = fscanf(f, "%llu %llu", &size, &resident);
    fclose(f);
    long page = sysconf(_SC_PAGESIZE);
    return n == 2 && page > 0 ? (double)resident * (double)page : -1.0;
}

/* Prints the model's memory breakdown (fm_model_memory_print) through `say` line by line. */
static void say_memory(fm_trainer *t, const fm_model_memory_info *mem)
{
    if (t->comm->rank != 0) return;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) return;
    fm_model_memory_print(mem, f);
    fclose(f);
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
        say(t, "  %s", line);
    free(text);
}

/* ---- set-up -------------------------------------------------------------------------------------- */

/* Sequences per step over all ranks (the global batch), and windows of seq_len+1 tokens in the
 * training split. */
static int64_t global_windows(const fm_trainer *t)
{
    return t->rank_windows * t->comm->size;
}
static int64_t train_windows(const fm_trainer *t)
{
    return ((int64_t)t->data.train_tokens - 1) / t->T;
}

/* The training data's vocabulary (and the validation data's, which must match) against fmtrain's
 * limit and [model] vocab_size; *V: the model's vocabulary. */
static fm_status check_vocabulary(fm_trainer *t, int64_t *V)
{
    const fm_config *cfg = &t->cfg;
    FM_TRY(fm_dataset_probe(cfg->data_train, &t->data));
    if (t->data.vocab_size > (uint64_t)INT32_MAX)
        return FM_ERR(FM_ERR_INPUT, "%s: vocabulary of %llu tokens is larger than fmtrain supports",
                      cfg->data_train, (unsigned long long)t->data.vocab_size);
    *V = cfg->model_vocab_size ? cfg->model_vocab_size : (int64_t)t->data.vocab_size;
    if ((uint64_t)*V < t->data.vocab_size)
        return FM_ERR(FM_ERR_CONFIG,
                      "[model] vocab_size = %lld is smaller than the vocabulary of "
                      "%s (%llu tokens); use 0 to take the dataset's",
                      (long long)*V, cfg->data_train, (unsigned long long)t->data.vocab_size);
    const char *val = fm_config_val_path(cfg);
    t->val_tokens = t->data.val_tokens;
    if (strcmp(val, cfg->data_train) != 0) {
        fm_dataset_info vi;
        FM_TRY(fm_dataset_probe(val, &vi));
        t->val_tokens = vi.val_tokens;
        if (vi.vocab_size != t->data.vocab_size)
            return FM_ERR(FM_ERR_INPUT, "%s has a vocabulary of %llu tokens but %s has %llu: the "
                                        "validation data must use the training data's tokenizer",
                          val, (unsigned long long)vi.vocab_size, cfg->data_train,
                          (unsigned long long)t->data.vocab_size);
    }
    return NULL;
}

/* The model shape: [model] and the vocabulary V. */
static fm_status set_model_shape(fm_trainer *t, int64_t V)
{
    t->shape.n_layer = t->cfg.model_n_layer;
    t->shape.n_head = t->cfg.model_n_head;
    t->shape.d_model = t->cfg.model_d_model;
    t->shape.max_seq_len = t->cfg.model_seq_len;
    t->shape.vocab_size = (int)V;
    fm_util_strlcpy(t->shape.arch, fm_config_arch(&t->cfg), sizeof t->shape.arch);
    t->shape.n_kv_head = t->cfg.model_n_kv_head;
    t->shape.ffn_dim = t->cfg.model_ffn_dim;
    t->shape.rope_theta = t->cfg.model_rope_theta;
    t->shape.norm_eps = t->cfg.model_norm_eps;
    t->shape.tie_embeddings = t->cfg.model_tie_embeddings == FM_TIE_EMB_TRUE    ? FM_TIE_YES
                              : t->cfg.model_tie_embeddings == FM_TIE_EMB_FALSE ? FM_TIE_NO
                                                                                : FM_TIE_DEFAULT;
    FM_TRY(fm_model_shape_resolve(&t->shape, &t->shape)); /* checked, family defaults filled in */
    return NULL;
}

/* The training split holds at least one global batch. */
static fm_status check_enough_windows(const fm_trainer *t)
{
    int64_t G = global_windows(t), N = train_windows(t);
    if (t->data.train_tokens < 2 || N < G)
        return FM_ERR(FM_ERR_INPUT,
                      "%s: the training split has %llu tokens = %lld windows of seq_len+1 = %d "
                      "tokens, fewer than one global batch of %lld sequences (micro_batch %d x "
                      "grad_accum %d x %d ranks); use a larger dataset or a smaller batch",
                      t->cfg.data_train, (unsigned long long)t->data.train_tokens, (long long)N,
                      t->T + 1, (long long)G, t->B, t->ga, t->comm->size);
    return NULL;
}

/* Checks the dataset and derives the model shape. Same result on every rank (same file), so errors
 * are collective (check_schedule_and_data). */
static fm_status check_dataset(fm_trainer *t)
{
    int64_t V = 0;
    FM_TRY(check_vocabulary(t, &V));
    FM_TRY(set_model_shape(t, V));
    FM_TRY(check_enough_windows(t));
    return NULL;
}

static void say_dataset(fm_trainer *t)
{
    const fm_config *cfg = &t->cfg;
    int64_t G = global_windows(t), N = train_windows(t);
    const char *val = fm_config_val_path(cfg);
    const int same = strcmp(val, cfg->data_train) == 0;
    say(t, "data: %s: %llu train tokens%s, vocabulary %llu (model %d), %s tokenizer",
        cfg->data_train, (unsigned long long)t->data.train_tokens, same ? " (its /val: below)" : "",
        (unsigned long long)t->data.vocab_size, t->shape.vocab_size,
        t->data.has_tokenizer ? t->data.tokenizer_kind : "no");
    int64_t nv = t->val_tokens > 0 ? ((int64_t)t->val_tokens - 1) / t->T : 0;
    int64_t k = fm_config_eval_windows(cfg);
    if (cfg->train_eval_every > 0)
        say(t, "validation: %s%s: %llu val tokens = %lld windows of seq_len+1; every %lld steps "
               "the loss over %lld of them (train.eval_windows; spread evenly, the same set on any "
               "layout)",
            val, same ? "" : " ([data] val)", (unsigned long long)t->val_tokens, (long long)nv,
            (long long)cfg->train_eval_every, (long long)(k < nv ? k : nv));
    else
        say(t, "validation: %s: %llu val tokens; no evaluation (train.eval_every = 0)", val,
            (unsigned long long)t->val_tokens);
    say(t, "global batch: %d micro_batch x %d grad_accum x %d rank%s x %d seq_len = %lld tokens "
           "(%lld sequences) per step; %lld steps = %.2f epochs of %lld windows",
        t->B, t->ga, t->comm->size, t->comm->size == 1 ? "" : "s", t->T, (long long)t->global_tokens,
        (long long)G,
        (long long)cfg->train_steps, (double)cfg->train_steps * (double)G / (double)N, (long long)N);
}

/* Placement (collective) and the table on rank 0. */
static fm_status place(fm_trainer *t)
{
    fm_topology_options o = {t->cfg.runtime_bind, t->cfg.runtime_threads, uses_gpus(&t->cfg)};
    FM_TRY(fm_topology_place(t->comm, &o, &t->plan));
    /* The table goes through `say` line by line (human log; "# " in a dry run). */
    char *text = NULL;
    size_t len = 0;
    FILE *mem = t->comm->rank == 0 ? open_memstream(&text, &len) : NULL;
    if (t->comm->rank == 0 && !mem)
        return FM_ERR(FM_ERR_NOMEM, "out of memory formatting the placement table");
    fm_status st = fm_topology_report(t->comm, &t->plan, mem);
    if (mem) fclose(mem);
    if (!st && text) {
        char *save = NULL;
        for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
            say(t, "%s", line);
    }
    free(text);
    return st;
}

/* The MFU reference: [runtime] peak_tflops per rank, or each rank's measured sgemm rate. */
static fm_status measure_peak(fm_trainer *t)
{
    double peak = 0.0;
    const char *how;
    if (t->cfg.runtime_peak_tflops > 0.0) {
        peak = t->cfg.runtime_peak_tflops * 1e12;
        how = "from [runtime] peak_tflops";
    } else if (peak_measurable(t)) {
        FM_TRY(fm_metrics_measure_peak_flops(t->be, &peak));
        how = t->be->precision == FM_PRECISION_BF16
                  ? "measured at start: the backend's 1024^3 bf16 matmul on this rank's threads"
                  : "measured at start: the backend's 1024^3 fp32 matmul on this rank's threads";
    } else {
        how = "unknown for this backend: set [runtime] peak_tflops";
    }
    double sum = peak;
    FM_TRY(fm_comm_sum_doubles(t->comm, &sum, 1));
    t->peak_flops = peak > 0.0 ? sum : 0.0;
    if (t->peak_flops > 0)
        say(t, "MFU reference: %.3g TFLOP/s over %d rank%s (%.3g per rank, %s); model %.4g GFLOP "
               "per token",
            t->peak_flops / 1e12, t->comm->size, t->comm->size == 1 ? "" : "s",
            sum / t->comm->size / 1e12, how,
            t->flops_per_token / 1e9);
    else
        say(t, "MFU reference: %s", how);
    return NULL;
}

static fm_status open_run_files(fm_trainer *t)
{
    if (t->comm->rank != 0) return NULL;
    FM_TRY(fm_util_mkdir_p(t->run_dir));
    char path[FM_CONFIG_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/config.ini", t->run_dir);
    FILE *f = fopen(path, "w");
    if (!f) return FM_ERR(FM_ERR_IO, "cannot create %s: %s", path, strerror(errno));
    fprintf(f, "# effective configuration of %s (fmtrain %s)\n", t->opts.config_path,
            FM_VERSION);
    fm_config_write(&t->cfg, f);
    if (fclose(f) != 0) return FM_ERR(FM_ERR_IO, "writing %s failed: %s", path, strerror(errno));
    fm_metrics_options mo = {t->run_dir, t->opts.out, t->opts.out_is_tty, t->cfg.train_steps};
    FM_TRY(fm_metrics_open(&mo, &t->metrics));
    fm_metrics_logf(t->metrics, "fmtrain %s: train %s on %d ranks", FM_VERSION,
                    t->opts.config_path, t->comm->size);
    return NULL;
}

/* Copies the configuration and derives what needs no MPI: micro-batch, sequence length, gradient
 * accumulation, windows per rank and step, the run directory. */
static void take_config(fm_trainer *t, const fm_config *cfg, const fm_trainer_options *opts)
{
    t->cfg = *cfg;
    t->opts = *opts;
    t->B = cfg->train_micro_batch;
    t->T = cfg->model_seq_len;
    t->ga = cfg->train_grad_accum;
    t->rank_windows = (int64_t)t->B * t->ga;
    char buf[FM_CONFIG_PATH_MAX];
    fm_util_strlcpy(t->run_dir, fm_config_run_dir(cfg, buf, sizeof buf), sizeof t->run_dir);
}

/* The schedule and the dataset checks. Every rank reads the same configuration and the same file,
 * so an error here is collective. */
static fm_status check_schedule_and_data(fm_trainer *t)
{
    fm_status st = fm_schedule_from_config(&t->sched, &t->cfg);
    if (!st) st = check_dataset(t);
    if (st) return fm_status_collective(fm_status_trace(st, __FILE__, __LINE__, __func__));
    return NULL;
}

/* The first line of the banner. */
static void say_start(fm_trainer *t)
{
    say(t, "fmtrain %s: %s %s on %d rank%s (%d node%s), run directory %s", FM_VERSION,
        t->opts.dry_run ? "dry run of" : "training", t->opts.config_path, t->comm->size,
        t->comm->size == 1 ? "" : "s", t->comm->nodes, t->comm->nodes == 1 ? "" : "s", t->run_dir);
}

/* The model's shape, parameter count and memory per rank (estimated, nothing allocated), for the
 * banner; also the model FLOPs per token of the MFU. */
static fm_status describe_model(fm_trainer *t)
{
    fm_model_memory_info mem;
    FM_TRY(fm_model_memory_estimate(&t->shape, t->B, t->be->ops->act_bytes, &mem));
    /* This rank's AdamW state under [train] zero: a shard of it (the largest rank's). */
    fm_model_zero_bytes zb[3];
    /* On one node with shared memory: no scratch, and with zero >= 1 one copy of the weights (and
     * bf16 copy) for the node, of which each rank is counted its share. */
    const int shared = use_node_shared(t), n = t->comm->size;
    size_t scratch =
        shared ? 0 : fm_comm_reduce_scatter_scratch_for(mem.n_params_padded, n, 0, 0);
    for (int z = 0; z < 3; z++) {
        FM_TRY(fm_model_zero_memory(&t->shape, z, n, scratch, &zb[z]));
        if (shared && z > 0) {
            size_t share = (zb[z].params + (size_t)n - 1) / (size_t)n;
            zb[z].total -= zb[z].params - share;
            zb[z].params = share;
        }
    }
    mem.total_bytes = mem.total_bytes - mem.optim_bytes + zb[t->cfg.train_zero].optim;
    mem.optim_bytes = zb[t->cfg.train_zero].optim;
    double per_rank = (double)(mem.total_bytes + zb[t->cfg.train_zero].comm);
    if (shared && t->cfg.train_zero > 0)
        per_rank -= (double)(mem.param_bytes + mem.param_copy_bytes) * (double)(n - 1) / (double)n;
    char cnt[40], bytes[32];
    say(t, "model: %s, %d layers, %d heads, d_model %d, seq_len %d, vocabulary %d: %s parameters",
        t->shape.arch, t->shape.n_layer, t->shape.n_head, t->shape.d_model, t->shape.max_seq_len,
        t->shape.vocab_size, group_digits((long long)mem.n_params, cnt, sizeof cnt));
    say(t, "memory per rank (backend %s, %d thread%s, [train] zero = %d on %d rank%s): %s (%s)",
        t->be->ops->name, t->plan.threads, t->plan.threads == 1 ? "" : "s", t->cfg.train_zero,
        t->comm->size, t->comm->size == 1 ? "" : "s",
        fm_util_format_bytes(per_rank, bytes, sizeof bytes),
        shared && t->cfg.train_zero > 0
            ? "the model's below, its weights counted as this rank's share of the node's one copy"
            : "the model's below, and the gradient reduction's scratch");
    say_memory(t, &mem);
    char z0[32], z1[32], z2[32], sc[32];
    say(t, "  model state per rank (parameters%s + gradients + AdamW + %s of reduction scratch) on "
           "%d rank%s by [train] zero: 0: %s, 1: %s, 2: %s; activations come on top",
        shared ? " (zero 1, 2: a share of the node's one copy)" : "",
        fm_util_format_bytes((double)zb[2].comm, sc, sizeof sc), t->comm->size,
        t->comm->size == 1 ? "" : "s", fm_util_format_bytes((double)zb[0].total, z0, sizeof z0),
        fm_util_format_bytes((double)zb[1].total, z1, sizeof z1),
        fm_util_format_bytes((double)zb[2].total, z2, sizeof z2));
    if (use_node_shared(t)) {
        char pb[32], cb[32];
        say(t,
            "  the %d ranks share one node ([runtime] shared_memory = auto): they add each "
            "other's gradients in node-shared memory (no messages, no scratch)%s%s%s%s",
            t->comm->size,
            t->cfg.train_zero > 0 ? ", and hold one copy of the weights for the node (" : "",
            t->cfg.train_zero > 0 ? fm_util_format_bytes((double)mem.param_bytes, pb, sizeof pb)
                                  : "",
            t->cfg.train_zero > 0 && mem.param_copy_bytes ? " + bf16 copy " : "",
            t->cfg.train_zero > 0 && mem.param_copy_bytes
                ? fm_util_format_bytes((double)mem.param_copy_bytes, cb, sizeof cb)
                : "");
        if (t->cfg.train_zero > 0)
            say(t, "    in place of one per rank; each rank updates its shard there)");
    }
    t->flops_per_token = fm_model_flops_per_token(&t->shape, t->T); /* the family's real FLOPs */
    return NULL;
}

static void say_schedule(fm_trainer *t)
{
    say(t, "schedule: %s, lr %g -> min_lr %g, warmup %lld of %lld steps%s", fm_schedule_name(t->sched.kind),
        t->sched.lr, t->sched.min_lr, (long long)t->sched.warmup_steps, (long long)t->sched.total_steps,
        t->sched.kind == FM_SCHED_WSD ? " (decay over the last train.decay_fraction)" : "");
}

/* What a dry run does too: MPI context, checks, run files (not in a dry run), placement, backend
 * and the banner. */
static fm_status prepare(fm_trainer *t)
{
    FM_TRY(fm_comm_init(&t->comm));
    t->global_tokens = t->rank_windows * t->comm->size * (int64_t)t->T;
    FM_TRY(check_schedule_and_data(t));
    if (!t->opts.dry_run) FM_TRY(open_run_files(t));
    say_start(t);
    FM_TRY(place(t));
    FM_TRY(fm_backend_create_precision(device_name(&t->cfg), t->plan.threads, t->plan.gpu,
                                       precision_of(&t->cfg), &t->be));
    char dev[256];
    t->be->ops->describe(t->be, dev, sizeof dev);
    say(t, "compute: %s; precision %s ([runtime] precision = %s)", dev,
        fm_precision_name(t->be->precision), fm_precision_name(precision_of(&t->cfg)));
    if (t->cfg.runtime_device == FM_DEVICE_AUTO && !fm_backend_uses_gpus(t->be->ops->name)) {
        /* device = auto fell back to the CPU: say why (no silent fallback) */
        for (int i = 0; i < fm_backend_count(); i++) {
            const char *name = fm_backend_name(i), *why = NULL;
            if (!fm_backend_uses_gpus(name)) continue;
            if (fm_backend_device_count(name, &why) <= 0)
                say(t, "device = auto chose the CPU: backend %s: %s", name,
                    why ? why : "no device");
        }
        if (fm_backend_count() == 1)
            say(t, "device = auto chose the CPU: this fmtrain has no GPU backend (configure with "
                   "-DFMTRAIN_CUDA=ON where nvcc is available)");
    }
    say_dataset(t);
    FM_TRY(describe_model(t));
    say_schedule(t);
    return NULL;
}

/* Frees the windows of alloc_node_shared (after the model that used them). Collective over the
 * node. */
static void free_node_shared(fm_trainer *t)
{
    fm_comm_shared_free(&t->shm_params_bf16);
    fm_comm_shared_free(&t->shm_params);
    fm_comm_shared_free(&t->shm_grads);
}

/* The node-shared memory of use_node_shared, placed in `mo` for the model to use. Collective over
 * the node. */
static fm_status alloc_node_shared(fm_trainer *t, fm_model_options *mo)
{
    fm_model_memory_info mem;
    FM_TRY(fm_model_memory_estimate_opts(&t->shape, mo, t->be->ops->act_bytes, &mem));
    FM_TRY(fm_comm_shared_alloc(t->comm, mem.grad_bytes, 1, &t->shm_grads));
    mo->grads = fm_comm_shared_ptr(t->shm_grads, t->comm->local_rank);
    if (t->cfg.train_zero == 0) return NULL; /* every rank updates every weight: its own copy */
    FM_TRY(fm_comm_shared_alloc(t->comm, mem.param_bytes, 0, &t->shm_params));
    mo->params = fm_comm_shared_ptr(t->shm_params, 0);
    if (mem.param_copy_bytes) {
        FM_TRY(fm_comm_shared_alloc(t->comm, mem.param_copy_bytes, 0, &t->shm_params_bf16));
        mo->params_bf16 = fm_comm_shared_ptr(t->shm_params_bf16, 0);
    }
    return NULL;
}

/* The model (initialised from [run] seed: identical on every rank by construction, which
 * fm_trainer_run checks) and its optimizer. */
static fm_status create_model(fm_trainer *t)
{
    fm_model_options mo = {.mode = FM_MODEL_TRAIN, .max_batch = t->B};
    if (use_node_shared(t)) {
        /* One verdict for all ranks (a node of them: the whole job). A node that cannot give the
         * windows (a small /dev/shm in a container) trains by messages: the same bits. */
        fm_status st = fm_comm_agree(t->comm->world, alloc_node_shared(t, &mo));
        if (st) {
            say(t,
                "warning: %s. The ranks exchange gradients and weights by MPI messages instead, "
                "each with its own copy of the weights (the same results; [runtime] "
                "shared_memory = off does so without trying)",
                fm_status_message(st));
            fm_status_free(&st);
            free_node_shared(t);
            mo = (fm_model_options){.mode = FM_MODEL_TRAIN, .max_batch = t->B};
        }
    }
    FM_TRY(fm_model_create_opts(&t->shape, t->be, &mo, &t->model));
    FM_TRY(fm_model_init_weights(t->model, t->cfg.run_seed));
    /* Shared weights: every rank wrote the same values; none reads them before all have (a
     * checkpoint's weights read later must not meet a late rank's initial ones). */
    if (t->shm_params) FM_TRY(fm_comm_shared_barrier(t->shm_params));
    const int n = t->comm->size, r = t->comm->rank;
    t->shard = malloc(sizeof *t->shard * ((size_t)n + 1));
    FM_CHECK_ALLOC(t->shard, sizeof *t->shard * ((size_t)n + 1));
    FM_TRY(fm_model_shard_bounds(&t->shape, n, t->shard));
    double rss0 = resident_bytes();
    if (t->cfg.train_zero > 0) {
        FM_TRY(fm_optimizer_create_shard(t->model, t->shard[r], t->shard[r + 1], &t->opt));
    } else {
        FM_TRY(fm_optimizer_create(t->model, &t->opt));
    }
    double rss1 = resident_bytes();
    t->opt_rss_bytes = rss0 >= 0 && rss1 >= 0 ? rss1 - rss0 : -1.0;
    /* every backward of accumulate_grads uses 1/grad_accum: the forward makes dlogits in its pass
     * (the same bits; evaluation forwards on this model get dlogits too and never read logits) */
    FM_TRY(fm_model_set_fused_loss_scale(t->model, 1.0f / (float)t->ga));
    return NULL;
}

/* The optimizer state each rank allocated and its measured resident growth, gathered on rank 0 and
 * printed as the smallest and largest over ranks (the start banner; tests read it). */
static fm_status say_optimizer_memory(fm_trainer *t)
{
    const int n = t->comm->size;
    double mine[2] = {(double)fm_optimizer_state_bytes(t->opt), t->opt_rss_bytes};
    double *all = t->comm->rank == 0 ? malloc(sizeof *all * 2 * (size_t)n) : NULL;
    fm_status st = t->comm->rank == 0 && !all ? FM_ERR(FM_ERR_NOMEM, "out of memory") : NULL;
    FM_TRY(fm_comm_agree(t->comm->world, st));
    st = fm_comm_gather(t->comm, mine, sizeof mine, all);
    if (!st && all) {
        double amin = all[0], amax = all[0], rmin = all[1], rmax = all[1];
        for (int r = 1; r < n; r++) {
            if (all[2 * r] < amin) amin = all[2 * r];
            if (all[2 * r] > amax) amax = all[2 * r];
            if (all[2 * r + 1] < rmin) rmin = all[2 * r + 1];
            if (all[2 * r + 1] > rmax) rmax = all[2 * r + 1];
        }
        char a0[32], a1[32], r0[32], r1[32];
        if (rmin >= 0)
            say(t, "optimizer state per rank ([train] zero = %d, %d rank%s): allocated %s .. %s, "
                   "measured resident growth %s .. %s (%.0f .. %.0f bytes)",
                t->cfg.train_zero, n, n == 1 ? "" : "s", fm_util_format_bytes(amin, a0, sizeof a0),
                fm_util_format_bytes(amax, a1, sizeof a1), fm_util_format_bytes(rmin, r0, sizeof r0),
                fm_util_format_bytes(rmax, r1, sizeof r1), rmin, rmax);
        else
            say(t, "optimizer state per rank ([train] zero = %d, %d rank%s): allocated %s .. %s "
                   "(resident growth not measurable here)",
                t->cfg.train_zero, n, n == 1 ? "" : "s", fm_util_format_bytes(amin, a0, sizeof a0),
                fm_util_format_bytes(amax, a1, sizeof a1));
    }
    free(all);
    return st;
}

/* The gradient all-reduce, over the model's gradients or over their host copy
 * (grads_staged_through_host). */
static fm_status create_grad_allreduce(fm_trainer *t)
{
    size_t n = fm_model_num_params(t->model);
    float *buf = fm_model_grads(t->model);
    if (grads_staged_through_host(t)) {
        t->host_grads = malloc(n * sizeof(float));
        if (!t->host_grads)
            return FM_ERR(FM_ERR_NOMEM, "out of memory allocating %zu bytes of host gradients",
                          n * sizeof(float));
        buf = t->host_grads;
    }
    if (t->shm_grads) {
        if (t->cfg.train_zero == 2)
            FM_TRY(fm_comm_reduce_scatter_init_shared(&t->ar, t->comm, t->shm_grads, n, t->shard, 0,
                                                      0));
        else
            FM_TRY(fm_comm_allreduce_init_shared(&t->ar, t->comm, t->shm_grads, n, t->shard, 0, 0));
        return NULL; /* shared weights (zero >= 1): each rank updates its shard in place */
    }
    if (t->cfg.train_zero == 2)
        FM_TRY(fm_comm_reduce_scatter_init(&t->ar, t->comm, buf, n, t->shard, 0, 0, 0));
    else
        FM_TRY(fm_comm_allreduce_init_ordered(&t->ar, t->comm, buf, n, t->shard, 0, 0, 0));
    if (t->cfg.train_zero > 0) {
        /* The weights the shards updated, to every rank: over the model's parameters, or over a
         * host copy of them for a device backend (the same staging as the gradients'). */
        float *pbuf = fm_model_params(t->model);
        if (grads_staged_through_host(t)) {
            t->host_params = malloc(n * sizeof(float));
            if (!t->host_params)
                return FM_ERR(FM_ERR_NOMEM, "out of memory allocating %zu bytes of host weights",
                              n * sizeof(float));
            pbuf = t->host_params;
        }
        FM_TRY(fm_comm_allgather_init(&t->ag, t->comm, pbuf, n, t->shard, 0));
    }
    return NULL;
}

/* This rank's reader (its share of every global batch); a run that evaluates needs validation
 * data, found now rather than at the first evaluation, hours into the run (same on every rank). */
static fm_status open_reader(fm_trainer *t)
{
    const fm_config *cfg = &t->cfg;
    fm_reader_options ro = {t->comm->world, t->T, t->rank_windows * t->comm->size,
                            t->rank_windows * t->comm->rank, t->rank_windows, cfg->run_seed,
                            0, fm_config_val_path(cfg), 1};
    FM_TRY(fm_reader_open(cfg->data_train, &ro, &t->reader));
    if (cfg->train_eval_every > 0 && fm_reader_val_windows(t->reader) < 1)
        return fm_status_collective(
            FM_ERR(FM_ERR_INPUT,
                   "%s: the validation split has fewer than seq_len+1 = %d tokens, so there is "
                   "nothing to evaluate; give [data] val a dataset with a validation split, "
                   "or set [train] eval_every = 0",
                   fm_config_val_path(cfg), t->T + 1));
    return NULL;
}

/* The token buffers of a step: the rank's windows, one micro-batch's inputs and targets. */
static fm_status alloc_token_buffers(fm_trainer *t)
{
    size_t wbytes = (size_t)t->rank_windows * (size_t)(t->T + 1) * sizeof(int32_t);
    size_t bt = (size_t)t->B * (size_t)t->T * sizeof(int32_t);
    t->windows = malloc(wbytes);
    t->inp = malloc(bt);
    t->tgt = malloc(bt);
    if (!t->windows || !t->inp || !t->tgt)
        return FM_ERR(FM_ERR_NOMEM, "out of memory allocating %zu bytes of token buffers",
                      wbytes + 2 * bt);
    if (t->comm->rank == 0) {
        t->rank_ms = malloc(2 * (size_t)t->comm->size * sizeof *t->rank_ms);
        FM_CHECK_ALLOC(t->rank_ms, 2 * (size_t)t->comm->size * sizeof *t->rank_ms);
    }
    return NULL;
}

/* What training needs besides a dry run's checks: model, optimizer, all-reduce, reader, buffers,
 * the initial state and the MFU reference. */
static fm_status allocate(fm_trainer *t)
{
    FM_TRY(create_model(t));
    FM_TRY(say_optimizer_memory(t));
    FM_TRY(create_grad_allreduce(t));
    FM_TRY(open_reader(t));
    FM_TRY(alloc_token_buffers(t));
    t->state.seed = t->cfg.run_seed;
    fm_reader_get_state(t->reader, &t->state.reader);
    FM_TRY(measure_peak(t));
    return NULL;
}

/* Rank `r` of `n`'s share [*a, *b) of `count` items. */
static void share_of(uint64_t count, int r, int n, uint64_t *a, uint64_t *b)
{
    uint64_t q = count / (uint64_t)n, rem = count % (uint64_t)n;
    *a = q * (uint64_t)r + ((uint64_t)r < rem ? (uint64_t)r : rem);
    *b = *a + q + ((uint64_t)r < rem ? 1 : 0);
}

/* The dry run's scan of every token id of the training and validation splits, each rank a share,
 * the result agreed by all: an id >= the dataset's vocabulary would otherwise stop training with
 * exit 3 only when the reader reaches its window, possibly hours in. Collective. */
static fm_status scan_dataset_ids(fm_trainer *t)
{
    uint64_t V = t->data.vocab_size;
    if (t->data.token_bytes == 2 && V >= 65536) {
        say(t, "dataset ids: 16-bit tokens with a vocabulary of %llu cannot be out of range",
            (unsigned long long)V);
        return NULL;
    }
    const char *paths[2] = {t->cfg.data_train, fm_config_val_path(&t->cfg)};
    const char *names[2] = {"training", "validation"};
    double t0 = fm_util_now(), max_id = 0;
    uint64_t counts[2] = {0, 0};
    for (int sp = 0; sp < 2; sp++) {
        fm_dataset_info info;
        fm_status st = fm_dataset_probe(paths[sp], &info);
        counts[sp] = st ? 0 : (sp == 0 ? info.train_tokens : info.val_tokens);
        uint64_t a = 0, b = 0;
        share_of(counts[sp], t->comm->rank, t->comm->size, &a, &b);
        fm_dataset_scan sc = {0, UINT64_MAX, 0, 0};
        if (!st)
            st = fm_dataset_scan_ids(paths[sp], sp == 0 ? FM_SPLIT_TRAIN : FM_SPLIT_VAL, a,
                                     b - a, V, &sc);
        FM_TRY(fm_comm_agree(t->comm->world, st));
        /* The first bad position over all ranks, its id, the largest id. */
        double v[2] = {sc.bad_pos == UINT64_MAX ? 1e300 : (double)sc.bad_pos, (double)sc.max_id};
        FM_TRY(fm_comm_min_doubles(t->comm, v, 1));
        FM_TRY(fm_comm_max_doubles(t->comm, v + 1, 1));
        if (v[1] > max_id) max_id = v[1];
        double bad_id = sc.bad_pos != UINT64_MAX && (double)sc.bad_pos == v[0] ? (double)sc.bad_id
                                                                                 : -1.0;
        FM_TRY(fm_comm_max_doubles(t->comm, &bad_id, 1));
        if (v[0] < 1e300)
            return fm_status_collective(FM_ERR(
                FM_ERR_INPUT,
                "%s: token id %.0f at position %.0f of the %s split is not below the vocabulary "
                "size %llu (largest id %.0f): the file is damaged or was made with another "
                "tokenizer; make it again with `fmtrain prepare` (training would stop with exit 3 "
                "when it reached that window)",
                paths[sp], bad_id, v[0], names[sp], (unsigned long long)V, v[1]));
    }
    say(t, "dataset ids: all %llu training and %llu validation tokens are below %llu (largest "
           "%.0f); scanned in %.1f s on %d rank%s",
        (unsigned long long)counts[0], (unsigned long long)counts[1], (unsigned long long)V, max_id,
        fm_util_now() - t0, t->comm->size, t->comm->size == 1 ? "" : "s");
    return NULL;
}

fm_status fm_trainer_create(const fm_config *cfg, const fm_trainer_options *opts, fm_trainer **out)
{
    *out = NULL;
    fm_trainer *t = calloc(1, sizeof *t);
    FM_CHECK_ALLOC(t, sizeof *t);
    take_config(t, cfg, opts);
    fm_status st = prepare(t);
    if (!st && opts->dry_run) st = scan_dataset_ids(t);
    if (!st && opts->dry_run)
        say(t, "dry run: configuration, dataset and placement are valid; nothing was trained");
    else if (!st)
        st = allocate(t);
    if (st) {
        fm_trainer_free(&t);
        return st;
    }
    *out = t;
    return NULL;
}

void fm_trainer_free(fm_trainer **pt)
{
    if (!pt || !*pt) return;
    fm_trainer *t = *pt;
    fm_watchdog_free(&t->wd);
    fm_metrics_close(&t->metrics);
    fm_reader_free(&t->reader);
    fm_comm_allreduce_free(&t->ar);
    fm_comm_allgather_free(&t->ag);
    fm_optimizer_free(&t->opt);
    fm_model_free(&t->model);
    free_node_shared(t); /* collective over the node, as the frees above */
    fm_backend_free(&t->be);
    fm_comm_free(&t->comm);
    free(t->host_grads);
    free(t->host_params);
    free(t->shard);
    free(t->rank_ms);
    free(t->windows);
    free(t->inp);
    free(t->tgt);
    free(t);
    *pt = NULL;
}

/* ---- accessors ---------------------------------------------------------------------------------- */

const fm_config *fm_trainer_config(const fm_trainer *t) { return &t->cfg; }
const fm_comm *fm_trainer_comm(const fm_trainer *t) { return t->comm; }
fm_model *fm_trainer_model(fm_trainer *t) { return t->model; }
fm_optimizer *fm_trainer_optimizer(fm_trainer *t) { return t->opt; }
fm_reader *fm_trainer_reader(fm_trainer *t) { return t->reader; }
fm_metrics *fm_trainer_metrics(fm_trainer *t) { return t->metrics; }
const char *fm_trainer_run_dir(const fm_trainer *t) { return t->run_dir; }
fm_watchdog *fm_trainer_watchdog(fm_trainer *t) { return t ? t->wd : NULL; }
const fm_model_shape *fm_trainer_shape(const fm_trainer *t) { return &t->shape; }
const size_t *fm_trainer_shard_bounds(const fm_trainer *t)
{
    return t->cfg.train_zero > 0 ? t->shard : NULL;
}
void fm_trainer_last_timeline(const fm_trainer *t, fm_trainer_timeline *tl) { *tl = t->tl; }

void fm_trainer_set_test_hooks(fm_trainer *t, const fm_trainer_test_hooks *hooks)
{
    if (hooks)
        t->test = *hooks;
    else
        memset(&t->test, 0, sizeof t->test);
}

void fm_trainer_get_state(const fm_trainer *t, fm_trainer_state *state)
{
    *state = t->state;
    if (t->reader) fm_reader_get_state(t->reader, &state->reader);
}

fm_status fm_trainer_set_state(fm_trainer *t, const fm_trainer_state *s)
{
    if (s->seed != t->cfg.run_seed)
        return FM_ERR(FM_ERR_INPUT, "the checkpoint was trained with [run] seed = %llu but the "
                                    "configuration says %llu; resuming would change the data order",
                      (unsigned long long)s->seed, (unsigned long long)t->cfg.run_seed);
    if (s->step < 0 || s->tokens_seen < 0)
        return FM_ERR(FM_ERR_INPUT, "invalid training state: step %lld, tokens %lld",
                      (long long)s->step, (long long)s->tokens_seen);
    FM_TRY(fm_reader_set_state(t->reader, &s->reader));
    t->state = *s;
    fm_reader_get_state(t->reader, &t->state.reader);
    return NULL;
}

/* ---- one step ------------------------------------------------------------------------------------ */

/* Splits window rows [a*B, (a+1)*B) of t->windows into inputs and targets (B,T). */
static void split_micro_batch(fm_trainer *t, int a)
{
    const int B = t->B, T = t->T;
    for (int b = 0; b < B; b++) {
        const int32_t *w = t->windows + ((size_t)a * B + b) * (size_t)(T + 1);
        memcpy(t->inp + (size_t)b * T, w, (size_t)T * sizeof(int32_t));
        memcpy(t->tgt + (size_t)b * T, w + 1, (size_t)T * sizeof(int32_t));
    }
}

static fm_status grad_ready(void *ctx, size_t offset, size_t count)
{
    fm_comm_allreduce_ready(ctx, offset, count);
    return NULL;
}

typedef struct step_result {
    double loss;      /* global mean loss */
    double grad_norm; /* global gradient norm (averaged gradients), before clipping */
    double lr;
    int skipped;
    double compute_s; /* this rank's data, forward and backward: before it waits for the others */
} step_result;

/* Forward and backward of this rank's grad_accum micro-batches, the gradients accumulated (each
 * scaled by 1/grad_accum). During the last micro-batch's backward the model hands each finished
 * layer's gradients to the all-reduce at once (overlap), except when they are staged through the
 * host. *loss: the mean loss over the micro-batches. */
static fm_status accumulate_grads(fm_trainer *t, double *loss)
{
    double loss_sum = 0.0;
    for (int a = 0; a < t->ga; a++) {
        split_micro_batch(t, a);
        float l = 0.0f;
        FM_TRY(fm_model_forward(t->model, t->inp, t->tgt, t->B, t->T, &l));
        loss_sum += l;
        int overlap = a == t->ga - 1 && !t->host_grads;
        FM_TRY(fm_model_backward(t->model, 1.0f / (float)t->ga, overlap ? grad_ready : NULL,
                                 overlap ? t->ar : NULL));
    }
    *loss = loss_sum / t->ga;
    return NULL;
}

/* Completes the all-reduce (reduce-scatter with zero = 2): afterwards the model's gradients are the
 * average over ranks (zero = 2: in this rank's shard; staged through host memory: downloaded
 * before, uploaded after, only the shard with zero = 2). */
static fm_status average_grads(fm_trainer *t)
{
    size_t lo = 0, hi = fm_model_num_params(t->model);
    if (t->host_grads) FM_TRY(fm_model_get_grads(t->model, t->host_grads));
    FM_TRY(fm_comm_allreduce_wait_all(t->ar));
    if (t->cfg.train_zero == 2) fm_optimizer_range(t->opt, &lo, &hi);
    if (t->host_grads && hi > lo)
        FM_TRY(t->be->ops->upload(t->be, fm_model_grads(t->model) + lo, t->host_grads + lo,
                                  (hi - lo) * sizeof(float)));
    return NULL;
}

/* The global gradient norm: the sums of squares over the shards of the plan added in rank order,
 * the same on every rank and in every zero stage: with zero >= 1 each rank contributes its own
 * shard's (fm_comm_sum_ordered), with zero = 0 each rank holds every averaged gradient and adds the
 * same parts itself. One rank: the whole buffer's. */
static fm_status global_grad_norm(fm_trainer *t, double *norm)
{
    const int n = t->comm->size;
    double ss = 0.0;
    if (n == 1) {
        FM_TRY(fm_optimizer_grad_norm(t->opt, norm));
        return NULL;
    }
    if (t->cfg.train_zero > 0) {
        FM_TRY(fm_optimizer_grad_sumsq(t->opt, &ss));
        FM_TRY(fm_comm_sum_ordered(t->comm, &ss, 1));
    } else {
        for (int r = 0; r < n; r++) {
            double part = 0.0;
            FM_TRY(fm_optimizer_grad_sumsq_range(t->opt, t->shard[r], t->shard[r + 1], &part));
            ss += part;
        }
    }
    *norm = sqrt(ss);
    return NULL;
}

/* A non-finite loss or gradient norm: an error with on_nan = stop (collective: every rank sees the
 * same averaged loss and gradients, so all decide alike), otherwise the update is dropped. */
static fm_status handle_non_finite(fm_trainer *t, step_result *r)
{
    if (t->cfg.train_on_nan == FM_ON_NAN_STOP)
        return fm_status_collective(FM_ERR(
            FM_ERR_NUMERIC,
            "step %lld: the %s is %s (loss %g, gradient norm %g); stopping without writing "
            "a checkpoint of this state ([train] on_nan = stop). Lower [train] lr, raise "
            "warmup_steps or set clip_grad, and resume from the last checkpoint",
            (long long)t->state.step + 1, isfinite(r->loss) ? "gradient norm" : "loss",
            (isnan(r->loss) || isnan(r->grad_norm)) ? "NaN" : "infinite", r->loss, r->grad_norm));
    fm_model_zero_grads(t->model);
    r->skipped = 1;
    t->state.skipped_steps++;
    return NULL;
}

/* zero >= 1 with bf16 activations: the optimizer's update rewrote the bf16 weight copy of this
 * rank's shard in its pass, the all-gather delivered the other ranks' fp32 masters only; re-make
 * the copy of those from them (to_bf16 is adamw_update's rounding, kernels.h "Precision", so the
 * copy is bit for bit what a zero 0 rank's update writes). Nothing with fp32 activations. */
static fm_status refresh_bf16_outside_shard(fm_trainer *t)
{
    void *pb = NULL;
    float *p = fm_model_params_for_update(t->model, &pb);
    if (!pb) return NULL;
    size_t lo = 0, hi = 0, n = fm_model_num_params(t->model);
    fm_optimizer_range(t->opt, &lo, &hi);
    if (lo > 0) t->be->ops->to_bf16(t->be, pb, p, lo);
    if (n > hi) t->be->ops->to_bf16(t->be, (char *)pb + 2 * hi, p + hi, n - hi);
    FM_TRY(t->be->ops->sync(t->be));
    return NULL;
}

/* zero >= 1 with a device backend on several ranks: this rank's updated shard goes down to the
 * host copy, the all-gather fills in the others', which go up again (no overlap). */
static fm_status gather_staged(fm_trainer *t)
{
    size_t lo = 0, hi = 0, n = fm_model_num_params(t->model);
    fm_optimizer_range(t->opt, &lo, &hi);
    void *pb_unused = NULL; /* the bf16 copy: refresh_bf16_outside_shard, after this */
    float *p = fm_model_params_for_update(t->model, &pb_unused);
    if (hi > lo)
        FM_TRY(t->be->ops->download(t->be, t->host_params + lo, p + lo, (hi - lo) * sizeof(float)));
    FM_TRY(fm_comm_allgather_start(t->ag));
    FM_TRY(fm_comm_allgather_ready(t->ag, lo, hi - lo));
    FM_TRY(fm_comm_allgather_wait_all(t->ag));
    if (lo > 0) FM_TRY(t->be->ops->upload(t->be, p, t->host_params, lo * sizeof(float)));
    if (n > hi)
        FM_TRY(t->be->ops->upload(t->be, p + hi, t->host_params + hi, (n - hi) * sizeof(float)));
    return NULL;
}

/* AdamW at the step's learning rate, the gradients clipped to [train] clip_grad. With zero >= 1 the
 * optimizer updates this rank's shard piece by piece and each piece is sent to the other ranks as
 * soon as it is done (the all-gather overlaps the rest of the update); afterwards every rank holds
 * every updated weight. */
static fm_status apply_update(fm_trainer *t, const step_result *r)
{
    fm_adamw_params hp = {(float)r->lr, (float)t->cfg.train_beta1, (float)t->cfg.train_beta2,
                          (float)t->cfg.train_eps, (float)t->cfg.train_weight_decay};
    float scale = fm_optimizer_clip_scale(r->grad_norm, t->cfg.train_clip_grad);
    double u0 = fm_util_now();
    if (t->shm_params) {
        /* Node-shared weights: the shard's masters and bf16 copy are written where every rank
         * reads them. No rank reads weights now (the reduction's wait ended with a barrier after
         * every backward); none reads them again before every shard is written. */
        FM_TRY(fm_optimizer_step(t->opt, &hp, scale));
        double u1 = fm_util_now();
        t->tl.update_s = u1 - u0;
        FM_TRY(fm_comm_shared_barrier(t->shm_params));
        t->tl.gather_wait_s = fm_util_now() - u1;
        return NULL;
    }
    if (!t->ag) {
        FM_TRY(fm_optimizer_step(t->opt, &hp, scale));
        t->tl.update_s = fm_util_now() - u0;
        return NULL;
    }
    if (t->host_params) {
        FM_TRY(fm_optimizer_step(t->opt, &hp, scale));
        double u1 = fm_util_now();
        t->tl.update_s = u1 - u0;
        FM_TRY(gather_staged(t));
        double u2 = fm_util_now();
        t->tl.gather_wait_s = u2 - u1;
        FM_TRY(refresh_bf16_outside_shard(t));
        t->tl.update_s += fm_util_now() - u2;
        return NULL;
    }
    FM_TRY(fm_comm_allgather_start(t->ag));
    FM_TRY(fm_optimizer_step_notify(t->opt, &hp, scale, FM_COMM_RS_SEGMENT_BYTES / sizeof(float),
                                    fm_comm_allgather_ready, t->ag));
    double u1 = fm_util_now();
    t->tl.update_s = u1 - u0;
    FM_TRY(fm_comm_allgather_wait_all(t->ag));
    double u2 = fm_util_now();
    t->tl.gather_wait_s = u2 - u1;
    FM_TRY(refresh_bf16_outside_shard(t)); /* compute: counted with the update */
    t->tl.update_s += fm_util_now() - u2;
    return NULL;
}

/* One optimizer step on every rank: data, gradients averaged over ranks, the global loss and
 * gradient norm, then the update (or the on_nan rule). A test executable's hook runs between the
 * all-reduce and the loss average (fm_trainer_test_hooks). */
static fm_status train_step(fm_trainer *t, step_result *r)
{
    double c0 = fm_util_now();
    memset(&t->tl, 0, sizeof t->tl);
    fm_watchdog_where(t->wd, "reading the step's data (from the read-ahead thread)");
    FM_TRY(fm_reader_next(t->reader, t->windows));
    if (t->test.before_compute) {
        fm_watchdog_where(t->wd, "in a test executable's hook (before_compute)");
        FM_TRY(t->test.before_compute(t->test.ctx, t, t->state.step + 1));
    }
    double loss = 0.0;
    double c1 = fm_util_now();
    t->tl.data_s = c1 - c0;
    fm_watchdog_where(t->wd, "computing the forward and backward passes");
    FM_TRY(accumulate_grads(t, &loss));
    double c2 = fm_util_now();
    r->compute_s = c2 - c0;
    t->tl.compute_s = c2 - c1;
    fm_watchdog_where(t->wd, t->cfg.train_zero == 2
                                 ? "waiting for the gradient reduce-scatter (all ranks)"
                                 : "waiting for the gradient all-reduce (all ranks)");
    FM_TRY(average_grads(t));
    double c3 = fm_util_now();
    t->tl.grad_wait_s = c3 - c2;
    if (t->test.after_allreduce) {
        fm_watchdog_where(t->wd, "in a test executable's hook (after_allreduce)");
        FM_TRY(t->test.after_allreduce(t->test.ctx, t, t->state.step + 1, &loss));
    }
    fm_watchdog_where(t->wd, "waiting for the loss all-reduce (all ranks)");
    FM_TRY(fm_comm_sum_doubles(t->comm, &loss, 1));
    r->loss = loss / t->comm->size;
    fm_watchdog_where(t->wd, "computing the gradient norm (all ranks with [train] zero >= 1)");
    double c4 = fm_util_now();
    FM_TRY(global_grad_norm(t, &r->grad_norm));
    t->tl.norm_s = fm_util_now() - c4;
    r->lr = fm_schedule_lr(&t->sched, t->state.step);
    r->skipped = 0;
    fm_watchdog_where(t->wd, t->ag ? "updating this rank's shard and all-gathering the weights "
                                     "(all ranks)"
                             : t->shm_params ? "updating this rank's shard of the node-shared "
                                               "weights (all ranks)"
                                             : "computing the update");
    if (!isfinite(r->loss) || !isfinite(r->grad_norm))
        FM_TRY(handle_non_finite(t, r));
    else
        FM_TRY(apply_update(t, r));
    fm_comm_allreduce_stats as = fm_comm_allreduce_last_stats(t->ar);
    t->tl.buckets = as.buckets;
    t->tl.early_buckets = as.early_buckets;
    t->tl.step_s = fm_util_now() - c0;
    t->state.step++;
    t->state.tokens_seen += t->global_tokens;
    if (t->test.after_step) {
        fm_watchdog_where(t->wd, "in a test executable's hook (after_step)");
        FM_TRY(t->test.after_step(t->test.ctx, t, t->state.step, &t->tl));
    }
    return NULL;
}

fm_status fm_trainer_evaluate(fm_trainer *t, double *val_loss)
{
    fm_eval_options o = {FM_SPLIT_VAL, fm_config_eval_windows(&t->cfg), t->B};
    fm_eval_result r;
    FM_TRY(fm_evaluate(t->model, t->reader, t->comm, &o, &r));
    *val_loss = r.loss;
    return NULL;
}

/* ---- the loop ------------------------------------------------------------------------------------ */

static fm_status check_params_identical(fm_trainer *t, const char *when)
{
    if (t->comm->size == 1) return NULL;
    size_t n = fm_model_num_params(t->model);
    float *host = malloc(n * sizeof *host);
    FM_CHECK_ALLOC(host, n * sizeof *host);
    fm_status st = fm_model_get_params(t->model, host);
    if (!st) {
        char what[96];
        snprintf(what, sizeof what, "parameters %s", when);
        st = fm_comm_check_identical(t->comm, host, n * sizeof *host, what);
    }
    free(host);
    return st;
}

/* <run dir>/COMPLETE: written by rank 0 once the run has done all its steps (after the final
 * checkpoint); job scripts test it before starting or requeuing. */
static fm_status write_complete_marker(fm_trainer *t)
{
    if (t->comm->rank != 0) return NULL;
    char path[FM_CONFIG_PATH_MAX + 32], stamp[32];
    snprintf(path, sizeof path, "%s/COMPLETE", t->run_dir);
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
    FILE *f = fopen(path, "w");
    if (!f) return FM_ERR(FM_ERR_IO, "cannot create %s: %s", path, strerror(errno));
    fprintf(f, "step=%lld\ntokens=%lld\nfinished=%s\n", (long long)t->state.step,
            (long long)t->state.tokens_seen, stamp);
    if (fclose(f) != 0) return FM_ERR(FM_ERR_IO, "writing %s failed: %s", path, strerror(errno));
    return NULL;
}

/* A fresh run (nothing resumed) is not complete, whatever an earlier run left behind. */
static fm_status remove_complete_marker(fm_trainer *t)
{
    if (t->comm->rank != 0) return NULL;
    char path[FM_CONFIG_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/COMPLETE", t->run_dir);
    if (remove(path) != 0 && errno != ENOENT)
        return FM_ERR(FM_ERR_IO, "cannot remove the stale %s: %s", path, strerror(errno));
    return NULL;
}

/* ---- the hang watchdog's limits (trainer.h) --------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median of a[0..n) (reorders a). */
static double median_of(double *a, int n)
{
    qsort(a, (size_t)n, sizeof *a, cmp_double);
    return n % 2 ? a[n / 2] : 0.5 * (a[n / 2 - 1] + a[n / 2]);
}

/* The median of this segment's recent step times; 0 before FM_TRAINER_FIRST_STEPS were timed. */
static double median_step(const fm_trainer *t)
{
    int n = t->ntimed < FM_TRAINER_STEP_HIST ? (int)t->ntimed : FM_TRAINER_STEP_HIST;
    if (n < FM_TRAINER_FIRST_STEPS) return 0.0;
    double v[FM_TRAINER_STEP_HIST];
    memcpy(v, t->step_hist, (size_t)n * sizeof *v);
    return median_of(v, n);
}

static void record_step_time(fm_trainer *t, double dt)
{
    t->step_hist[t->ntimed % FM_TRAINER_STEP_HIST] = dt;
    t->ntimed++;
}

/* The limit for work that usually takes `usual` seconds (`usual_what` says what that is):
 * hang_factor x usual, at least hang_min_minutes; when usual is unknown (0: the first time) 4 x
 * hang_min_minutes, or `first` when longer. Where the job's end is known and the stop margin is on,
 * the limit ends half the margin before the end. `why` (n bytes) receives the reason. */
static double work_limit(const fm_trainer *t, double usual, const char *usual_what, double first,
                         char *why, size_t n)
{
    double min_s = t->cfg.runtime_hang_min_minutes * 60.0, f = t->cfg.runtime_hang_factor, lim;
    if (usual > 0 && f * usual >= min_s) {
        lim = f * usual;
        snprintf(why, n, "[runtime] hang_factor = %g x %s of %.3g s", f, usual_what, usual);
    } else if (usual > 0) {
        lim = min_s;
        snprintf(why, n, "[runtime] hang_min_minutes = %g", t->cfg.runtime_hang_min_minutes);
    } else if (first > 4.0 * min_s) {
        lim = first;
        snprintf(why, n, "the first time: its size at %.0f MB/s", FM_TRAINER_SLOW_FS_BPS / 1e6);
    } else {
        lim = 4.0 * min_s;
        snprintf(why, n, "the first time: 4 x [runtime] hang_min_minutes = %g",
                 t->cfg.runtime_hang_min_minutes);
    }
    if (t->end_time > 0 && t->stop_margin_s > 0) {
        double left = t->end_time - 0.5 * t->stop_margin_s - fm_util_wall_time();
        if (left < 1.0) left = 1.0;
        if (lim > left) {
            lim = left;
            snprintf(why, n, "it must end half of [run] stop_margin_minutes before the job's end");
        }
    }
    return lim;
}

/* Arms the watchdog (when there is one) for `what` (`step`: its number, or -1), usually `usual`
 * seconds long; a hang exits 75. */
static void arm(fm_trainer *t, const char *what, int64_t step, double usual, const char *usual_what,
                double first)
{
    if (!t->wd) return;
    char why[200];
    double lim = work_limit(t, usual, usual_what, first, why, sizeof why);
    fm_watchdog_arm(t->wd, what, step, lim, why, FM_EXIT_STOPPED);
}

void fm_trainer_arm(fm_trainer *t, const char *what, int64_t step, double usual,
                    const char *usual_what, double first)
{
    arm(t, what, step, usual, usual_what, first);
}

/* Seconds a checkpoint of this model takes to write or read at FM_TRAINER_SLOW_FS_BPS (parameters
 * and both AdamW moments). */
static double slow_checkpoint_seconds(const fm_trainer *t)
{
    return 3.0 * (double)fm_model_num_params(t->model) * sizeof(float) / FM_TRAINER_SLOW_FS_BPS;
}

/* Starts the watchdog for fm_trainer_run ([runtime] hang_factor > 0). */
static fm_status start_watchdog(fm_trainer *t)
{
    if (t->cfg.runtime_hang_factor <= 0 || t->wd) return NULL;
    fm_watchdog_options wo = {t->comm->rank, t->comm->host, t->opts.exit_now, 0.5};
    FM_TRY(fm_watchdog_start(&wo, &t->wd));
    fm_watchdog_set_cleanup(t->wd, t->cfg.runtime_hang_min_minutes * 60.0);
    return NULL;
}

/* What the loop keeps between steps of this segment of the run (this process's part of it). */
typedef struct segment {
    double start;        /* fm_util_now() when the loop began */
    double base_seconds; /* train_seconds of the earlier segments */
    int64_t first_step;  /* state.step when the loop began */
    double last_save;    /* fm_util_now() after the last checkpoint (or the start) */
    double max_step_s;   /* the longest step: the wall-time stop keeps two of them in hand */
    double win_train;    /* seconds in train_step since the last logged step (the log window) */
    double win_compute;  /* this rank's compute seconds in that window (step_result.compute_s) */
    int64_t win_steps;   /* steps in that window */
    double end_time;     /* the job's end, seconds since the epoch (rank 0's answer); 0: none */
    double margin;       /* [run] stop_margin_minutes in seconds */
} segment;

/* Training seconds of the whole run so far: the earlier segments plus this one until now. */
static double run_seconds(const segment *seg)
{
    return seg->base_seconds + (fm_util_now() - seg->start);
}

/* Calls the save hook (when there is one) and logs how long it took. */
static fm_status save(fm_trainer *t, const fm_trainer_hooks *h, fm_trainer_save_reason why,
                      segment *seg)
{
    seg->last_save = fm_util_now();
    if (!h || !h->save) return NULL;
    arm(t, "checkpoint write of step", t->state.step, t->last_save_s, "the previous write",
        slow_checkpoint_seconds(t));
    double t0 = fm_util_now();
    FM_TRY(h->save(h->ctx, t, why));
    t->last_save_s = fm_util_now() - t0;
    if (t->metrics)
        fm_metrics_logf(t->metrics, "checkpoint at step %lld written in %.2f s",
                        (long long)t->state.step, t->last_save_s);
    seg->last_save = fm_util_now();
    return NULL;
}

/* Evaluates and writes the eval record (elapsed_s: the run's training seconds until now). */
static fm_status run_eval(fm_trainer *t, const segment *seg)
{
    int64_t eb = t->cfg.train_eval_batches > 0 ? t->cfg.train_eval_batches : 1;
    double batches = (double)eb / t->ga;
    arm(t, "evaluation after step", t->state.step, median_step(t) * (batches > 1 ? batches : 1),
        "the median step x eval_batches / grad_accum", 0.0);
    double vl = 0.0;
    FM_TRY(fm_trainer_evaluate(t, &vl));
    double elapsed = run_seconds(seg);
    FM_TRY(fm_metrics_log_eval(t->metrics, t->state.step, t->state.tokens_seen, vl, elapsed));
    return NULL;
}

/* The start of a run: the resume hook, then the check that every rank holds the same parameters;
 * a fresh run removes an old COMPLETE marker. *done = 1 when the run already reached
 * train.steps. */
static fm_status begin(fm_trainer *t, const fm_trainer_hooks *hooks, int *done)
{
    int resumed = 0;
    *done = 0;
    arm(t, "resume", -1, 0.0, "", slow_checkpoint_seconds(t));
    if (hooks && hooks->resume) FM_TRY(hooks->resume(hooks->ctx, t, &resumed));
    FM_TRY(check_params_identical(t, resumed ? "after resuming" : "after initialisation"));
    if (resumed)
        say(t, "resumed at step %lld (%lld tokens seen)", (long long)t->state.step,
            (long long)t->state.tokens_seen);
    else
        FM_TRY(remove_complete_marker(t));
    if (t->state.step >= t->cfg.train_steps) {
        say(t, "nothing to do: the run already reached step %lld of %lld", (long long)t->state.step,
            (long long)t->cfg.train_steps);
        *done = 1;
    }
    return NULL;
}

/* A stop requested during start-up (the caller installs the handlers first thing), agreed by all
 * ranks: FM_ERR_STOPPED (collective). The state is the one just loaded or initialised, so there is
 * nothing new to save. */
static fm_status stop_if_requested_at_start(fm_trainer *t)
{
    double early = fm_signals_pending() ? 1.0 : 0.0;
    FM_TRY(fm_comm_max_doubles(t->comm, &early, 1));
    if (early == 0.0) return NULL;
    say(t, "stop requested during start-up: exiting before step %lld",
        (long long)t->state.step + 1);
    return fm_status_collective(FM_ERR(FM_ERR_STOPPED,
                                       "stopped during start-up, before step %lld "
                                       "(signal received); run the same command "
                                       "again to continue",
                                       (long long)t->state.step + 1));
}

/* The wall-time limit: rank 0 asks for the job's end (Slurm, FMTRAIN_END_TIME), every rank uses
 * its answer; announced when a stop margin applies. */
static fm_status plan_wall_time(fm_trainer *t, segment *seg)
{
    double end_time = 0.0;
    char src[160] = "";
    if (t->comm->rank == 0) FM_TRY(fm_signals_job_end_time(&end_time, src, sizeof src));
    FM_TRY(fm_comm_bcast(t->comm, &end_time, sizeof end_time));
    seg->end_time = end_time;
    seg->margin = t->cfg.run_stop_margin_minutes * 60.0;
    t->end_time = seg->end_time;
    t->stop_margin_s = seg->margin;
    if (seg->end_time > 0 && seg->margin > 0) {
        char d[32];
        say(t, "wall time: the job ends in %s (%s); stopping %.1f min before it",
            fm_metrics_format_duration(seg->end_time - fm_util_wall_time(), d, sizeof d), src,
            t->cfg.run_stop_margin_minutes);
    }
    return NULL;
}

/* The clocks and counters of the loop start now. */
static void start_segment(fm_trainer *t, segment *seg)
{
    seg->start = fm_util_now();
    seg->last_save = seg->start;
    seg->base_seconds = t->state.train_seconds;
    seg->first_step = t->state.step;
    seg->win_train = 0.0;
    seg->win_compute = 0.0;
    seg->win_steps = 0;
    seg->max_step_s = 0.0;
    t->ntimed = 0;
    t->last_save_s = 0.0;
}

/* One step, timed: the log window, the longest step and the run's training seconds. */
static fm_status timed_step(fm_trainer *t, segment *seg, step_result *r)
{
    arm(t, "step", t->state.step + 1, median_step(t), "the median step", 0.0);
    double s0 = fm_util_now();
    FM_TRY(train_step(t, r));
    double dt = fm_util_now() - s0;
    record_step_time(t, dt);
    seg->win_train += dt;
    seg->win_compute += r->compute_s;
    seg->win_steps++;
    if (dt > seg->max_step_s) seg->max_step_s = dt;
    t->state.train_seconds = run_seconds(seg);
    return NULL;
}

/* Logged steps: every log_every steps, the last, the first of the segment and every skipped one. */
static int step_is_logged(const fm_trainer *t, const segment *seg, const step_result *r)
{
    int64_t step = t->state.step;
    return step % t->cfg.runtime_log_every == 0 || step == t->cfg.train_steps ||
           step == seg->first_step + 1 || r->skipped;
}

/* The straggler report of a logged step (every rank takes part): each rank's compute time per step
 * over the log window, gathered on rank 0 into rec (metrics.h). */
static fm_status straggler_report(fm_trainer *t, const segment *seg, fm_metrics_step *rec)
{
    if (t->comm->size < 2) return NULL;
    fm_watchdog_where(t->wd, "gathering the ranks' compute times for the log (all ranks)");
    double mine = 1e3 * seg->win_compute / (double)(seg->win_steps > 0 ? seg->win_steps : 1);
    FM_TRY(fm_comm_gather(t->comm, &mine, sizeof mine, t->rank_ms));
    if (t->comm->rank != 0) return NULL;
    int n = t->comm->size, slow = 0;
    for (int i = 1; i < n; i++)
        if (t->rank_ms[i] > t->rank_ms[slow]) slow = i;
    double *v = t->rank_ms + n;
    memcpy(v, t->rank_ms, (size_t)n * sizeof *v);
    rec->ranks = n;
    rec->slowest_rank = slow;
    rec->compute_ms_max = t->rank_ms[slow];
    rec->compute_ms_median = median_of(v, n);
    rec->compute_ms_min = v[0];
    return NULL;
}

/* The train record of the step just done (logged steps only: step_is_logged; rank 0 writes it,
 * every rank takes part in the straggler report); its rates are over the log window, which then
 * starts again. */
static fm_status log_step(fm_trainer *t, segment *seg, const step_result *r)
{
    if (!step_is_logged(t, seg, r)) return NULL;
    fm_metrics_step rec;
    memset(&rec, 0, sizeof rec);
    FM_TRY(straggler_report(t, seg, &rec));
    if (t->metrics) {
        fm_watchdog_where(t->wd, "writing the step's record (rank 0)");
        int64_t step = t->state.step;
        double tps = (double)t->global_tokens * (double)seg->win_steps /
                     (seg->win_train > 0 ? seg->win_train : 1e-9);
        double per_step = (fm_util_now() - seg->start) / (double)(step - seg->first_step);
        rec.step = step;
        rec.tokens = t->state.tokens_seen;
        rec.loss = r->loss;
        rec.lr = r->lr;
        rec.grad_norm = r->grad_norm;
        rec.step_ms = 1e3 * seg->win_train / (double)seg->win_steps;
        rec.tokens_per_s = tps;
        rec.mfu = t->peak_flops > 0 ? tps * t->flops_per_token / t->peak_flops : -1.0;
        rec.elapsed_s = t->state.train_seconds;
        rec.eta_s = per_step * (double)(t->cfg.train_steps - step);
        rec.skipped = r->skipped;
        FM_TRY(fm_metrics_log_step(t->metrics, &rec));
    }
    seg->win_train = 0.0;
    seg->win_compute = 0.0;
    seg->win_steps = 0;
    return NULL;
}

/* An evaluation every [train] eval_every steps (the one after the last step is finish's). */
static int eval_due(const fm_trainer *t)
{
    return t->cfg.train_eval_every > 0 && t->state.step % t->cfg.train_eval_every == 0;
}

/* What the ranks agreed at a step boundary (agree_at_boundary). */
typedef struct boundary {
    int stop;        /* stop now: a signal on some rank, or the wall-time limit is near */
    int signal;      /* the highest signal number received on any rank; 0: the wall time */
    int checkpoint;  /* a periodic checkpoint is due on some rank */
    double now_wall; /* this rank's wall clock when it asked (for the wall-time message) */
} boundary;

/* This rank's stop request: the signal it received, -1 when the wall-time limit is within the
 * margin plus two of the longest steps, else 0. */
static double local_stop_request(const segment *seg, double now_wall)
{
    int sig = fm_signals_pending();
    if (sig) return (double)sig;
    if (seg->end_time > 0 && seg->margin > 0 &&
        now_wall + seg->margin + 2.0 * seg->max_step_s >= seg->end_time)
        return -1.0;
    return 0.0;
}

/* Whether this rank finds a periodic checkpoint due ([checkpoint] every_steps / every_minutes). */
static int checkpoint_due(const fm_trainer *t, const segment *seg)
{
    const fm_config *cfg = &t->cfg;
    return (cfg->checkpoint_every_steps > 0 && t->state.step % cfg->checkpoint_every_steps == 0) ||
           (cfg->checkpoint_every_minutes > 0 &&
            fm_util_now() - seg->last_save >= cfg->checkpoint_every_minutes * 60.0);
}

/* The stop and periodic-checkpoint decisions, agreed by all ranks in one small all-reduce (the
 * maximum of: stop wanted, checkpoint due, signal number), so that every rank acts alike. */
static fm_status agree_at_boundary(fm_trainer *t, const segment *seg, boundary *b)
{
    fm_watchdog_where(t->wd, "in the agreement at the step's end (all ranks: stop, checkpoint)");
    b->now_wall = fm_util_wall_time();
    double req = local_stop_request(seg, b->now_wall);
    double v[3] = {req != 0.0 ? 1.0 : 0.0, checkpoint_due(t, seg) ? 1.0 : 0.0,
                   req > 0.0 ? req : 0.0};
    FM_TRY(fm_comm_max_doubles(t->comm, v, 3));
    b->stop = v[0] > 0.0;
    b->checkpoint = v[1] > 0.0;
    b->signal = (int)v[2];
    return NULL;
}

/* Stops at this step boundary: says why, saves the state (STOP) and returns FM_ERR_STOPPED
 * (collective: exit 75, resumable). */
static fm_status stop(fm_trainer *t, const fm_trainer_hooks *hooks, segment *seg, const boundary *b)
{
    char reason[96];
    if (b->signal > 0)
        snprintf(reason, sizeof reason, "%s received", fm_signals_name(b->signal));
    else
        snprintf(reason, sizeof reason, "the job's wall-time limit is %.1f min away",
                 (seg->end_time - b->now_wall) / 60.0);
    int64_t step = t->state.step, steps = t->cfg.train_steps;
    say(t, "stopping at step %lld/%lld: %s", (long long)step, (long long)steps, reason);
    FM_TRY(save(t, hooks, FM_TRAINER_SAVE_STOP, seg));
    return fm_status_collective(FM_ERR(
        FM_ERR_STOPPED, "stopped at step %lld of %lld (%s)%s; run the same command again to resume",
        (long long)step, (long long)steps, reason,
        hooks && hooks->save ? ", state saved" : " (no checkpoint writer: state not saved)"));
}

/* After the last step: the final evaluation, the identical-parameters check, the FINAL checkpoint,
 * the COMPLETE marker and the closing line. */
static fm_status finish(fm_trainer *t, const fm_trainer_hooks *hooks, segment *seg)
{
    if (t->cfg.train_eval_every > 0) FM_TRY(run_eval(t, seg));
    arm(t, "end of training after step", t->state.step, median_step(t), "the median step", 0.0);
    fm_watchdog_where(t->wd, "comparing the parameters of all ranks");
    FM_TRY(check_params_identical(t, "at the end of training"));
    t->state.train_seconds = run_seconds(seg);
    FM_TRY(save(t, hooks, FM_TRAINER_SAVE_FINAL, seg));
    FM_TRY(write_complete_marker(t));
    char d[32];
    double secs = fm_util_now() - seg->start;
    say(t,
        "finished %lld steps (%lld tokens) in %s; waiting for data took %.2f%% of this segment%s",
        (long long)t->state.step, (long long)t->state.tokens_seen,
        fm_metrics_format_duration(t->state.train_seconds, d, sizeof d),
        secs > 0 ? 100.0 * fm_reader_wait_seconds(t->reader) / secs : 0.0,
        t->state.skipped_steps ? " (some updates skipped for non-finite values)" : "");
    return NULL;
}

/* fm_trainer_run under its watchdog. */
static fm_status run(fm_trainer *t, const fm_trainer_hooks *hooks)
{
    int done = 0;
    FM_TRY(begin(t, hooks, &done));
    if (done) return NULL;
    FM_TRY(stop_if_requested_at_start(t));
    segment seg = {0};
    FM_TRY(plan_wall_time(t, &seg));
    start_segment(t, &seg);
    while (t->state.step < t->cfg.train_steps) {
        step_result r;
        FM_TRY(timed_step(t, &seg, &r));
        FM_TRY(log_step(t, &seg, &r));
        if (t->state.step >= t->cfg.train_steps) break; /* finish evaluates and saves */
        if (eval_due(t)) FM_TRY(run_eval(t, &seg));
        if (hooks && hooks->poll) FM_TRY(hooks->poll(hooks->ctx, t));
        boundary b = {0};
        FM_TRY(agree_at_boundary(t, &seg, &b));
        if (b.stop) return stop(t, hooks, &seg, &b);
        if (b.checkpoint) FM_TRY(save(t, hooks, FM_TRAINER_SAVE_PERIODIC, &seg));
    }
    return finish(t, hooks, &seg);
}

fm_status fm_trainer_run(fm_trainer *t, const fm_trainer_hooks *hooks)
{
    if (!t->model) return FM_ERR(FM_ERR_INTERNAL, "fm_trainer_run after a dry-run create");
    FM_TRY(start_watchdog(t));
    fm_status st = run(t, hooks);
    if (hooks && hooks->finish) st = hooks->finish(hooks->ctx, t, st);
    fm_watchdog_disarm(t->wd);
    return st;
}

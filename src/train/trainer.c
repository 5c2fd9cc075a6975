/* trainer.c — see trainer.h. The data-parallel training loop and its start-up. */
#define _POSIX_C_SOURCE 200809L
#include "train/trainer.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cuda/cuda_backend.h"
#include "train/schedule.h"
#include "train/signals.h"
#include "core/util.h"
#include "cli/version.h"

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
    char run_dir[FM_CONFIG_PATH_MAX];
    int B, T, ga;          /* micro-batch, sequence length, gradient accumulation */
    int64_t rank_windows;  /* B * ga: windows this rank reads per step */
    int64_t global_tokens; /* tokens per step over all ranks */
    int32_t *windows;      /* (rank_windows, T+1) */
    int32_t *inp, *tgt;    /* (B, T) each */
    double peak_flops;     /* sum over ranks; 0 = unknown */
    double flops_per_token;
    fm_trainer_state state;
    float *host_grads;  /* device backends on several ranks: gradients staged through the host for
                           MPI (no CUDA-aware MPI assumed); NULL on the CPU backend */
    int64_t fault_step; /* FMTRAIN_TEST_NAN_STEP: poison this step (tests of on_nan); 0 = never */
    int fault_grad;     /* 1: poison a gradient after the all-reduce; 0: poison rank 0's loss */
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

static const char *device_name(const fm_config *cfg)
{
    switch (cfg->runtime_device) {
    case FM_DEVICE_CPU: return "cpu";
    case FM_DEVICE_CUDA: return "cuda";
    case FM_DEVICE_AUTO: /* CUDA only when compiled in AND a device is visible to this process */
        return fm_backend_available("cuda") && fm_backend_cuda_device_count() > 0 ? "cuda" : "cpu";
    }
    return "cpu";
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

/* Checks the dataset and derives the model shape. Same result on every rank (same file), so errors
 * are collective. */
static fm_status check_dataset(fm_trainer *t)
{
    const fm_config *cfg = &t->cfg;
    FM_TRY(fm_dataset_probe(cfg->data_train, &t->data));
    if (t->data.vocab_size > (uint64_t)INT32_MAX)
        return FM_ERR(FM_ERR_INPUT, "%s: vocabulary of %llu tokens is larger than fmtrain supports",
                      cfg->data_train, (unsigned long long)t->data.vocab_size);
    int64_t V = cfg->model_vocab_size ? cfg->model_vocab_size : (int64_t)t->data.vocab_size;
    if ((uint64_t)V < t->data.vocab_size)
        return FM_ERR(FM_ERR_CONFIG, "[model] vocab_size = %lld is smaller than the vocabulary of "
                                     "%s (%llu tokens); use 0 to take the dataset's",
                      (long long)V, cfg->data_train, (unsigned long long)t->data.vocab_size);
    const char *val = fm_config_val_path(cfg);
    if (strcmp(val, cfg->data_train) != 0) {
        fm_dataset_info vi;
        FM_TRY(fm_dataset_probe(val, &vi));
        if (vi.vocab_size != t->data.vocab_size)
            return FM_ERR(FM_ERR_INPUT, "%s has a vocabulary of %llu tokens but %s has %llu: the "
                                        "validation data must use the training data's tokenizer",
                          val, (unsigned long long)vi.vocab_size, cfg->data_train,
                          (unsigned long long)t->data.vocab_size);
    }
    t->shape.n_layer = cfg->model_n_layer;
    t->shape.n_head = cfg->model_n_head;
    t->shape.d_model = cfg->model_d_model;
    t->shape.max_seq_len = cfg->model_seq_len;
    t->shape.vocab_size = (int)V;
    snprintf(t->shape.arch, sizeof t->shape.arch, "%s", cfg->model_arch == FM_ARCH_GPT2 ? "gpt2" : "?");
    FM_TRY(fm_model_shape_check(&t->shape));
    int64_t G = t->rank_windows * t->comm->size;
    int64_t N = ((int64_t)t->data.train_tokens - 1) / t->T;
    if (t->data.train_tokens < 2 || N < G)
        return FM_ERR(FM_ERR_INPUT,
                      "%s: the training split has %llu tokens = %lld windows of seq_len+1 = %d "
                      "tokens, fewer than one global batch of %lld sequences (micro_batch %d x "
                      "grad_accum %d x %d ranks); use a larger dataset or a smaller batch",
                      cfg->data_train, (unsigned long long)t->data.train_tokens, (long long)N,
                      t->T + 1, (long long)G, t->B, t->ga, t->comm->size);
    return NULL;
}

static void say_dataset(fm_trainer *t)
{
    const fm_config *cfg = &t->cfg;
    int64_t G = t->rank_windows * t->comm->size;
    int64_t N = ((int64_t)t->data.train_tokens - 1) / t->T;
    say(t, "data: %s: %llu train + %llu val tokens, vocabulary %llu (model %d), %s tokenizer",
        cfg->data_train, (unsigned long long)t->data.train_tokens,
        (unsigned long long)t->data.val_tokens, (unsigned long long)t->data.vocab_size,
        t->shape.vocab_size, t->data.has_tokenizer ? t->data.tokenizer_kind : "no");
    say(t, "global batch: %d micro_batch x %d grad_accum x %d rank%s x %d seq_len = %lld tokens "
           "(%lld sequences) per step; %lld steps = %.2f epochs of %lld windows",
        t->B, t->ga, t->comm->size, t->comm->size == 1 ? "" : "s", t->T, (long long)t->global_tokens,
        (long long)G,
        (long long)cfg->train_steps, (double)cfg->train_steps * (double)G / (double)N, (long long)N);
}

/* Placement (collective) and the table on rank 0. */
static fm_status place(fm_trainer *t)
{
    fm_topology_options o = {t->cfg.runtime_bind, t->cfg.runtime_threads,
                             strcmp(device_name(&t->cfg), "cuda") == 0};
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
    } else if (strcmp(t->be->ops->name, "cpu") == 0) {
        FM_TRY(fm_metrics_measure_peak_flops(t->be, &peak));
        how = "measured at start: the backend's 1024^3 fp32 matmul on this rank's threads";
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
            fm_version_string());
    fm_config_write(&t->cfg, f);
    if (fclose(f) != 0) return FM_ERR(FM_ERR_IO, "writing %s failed: %s", path, strerror(errno));
    fm_metrics_options mo = {t->run_dir, t->opts.out, t->opts.out_is_tty, t->cfg.train_steps};
    FM_TRY(fm_metrics_open(&mo, &t->metrics));
    fm_metrics_logf(t->metrics, "fmtrain %s: train %s on %d ranks", fm_version_string(),
                    t->opts.config_path, t->comm->size);
    return NULL;
}

/* FMTRAIN_TEST_NAN_STEP = "N:loss" or "N:grad": a fault injected at step N (1-based) so that the
 * tests can exercise [train] on_nan: "loss" makes rank 0's loss NaN (the averaged loss becomes NaN
 * on every rank), "grad" sets one gradient to NaN on every rank after the all-reduce (the norm
 * becomes NaN). Unset in normal use. */
static fm_status parse_fault(fm_trainer *t)
{
    const char *v = getenv("FMTRAIN_TEST_NAN_STEP");
    if (!v || !*v) return NULL;
    long long n = 0;
    char kind[8] = "";
    if (sscanf(v, "%lld:%7s", &n, kind) != 2 || n < 1 ||
        (strcmp(kind, "loss") != 0 && strcmp(kind, "grad") != 0))
        return fm_status_collective(FM_ERR(FM_ERR_USAGE, "FMTRAIN_TEST_NAN_STEP = '%s': expected "
                                                         "STEP:loss or STEP:grad (a test hook)", v));
    t->fault_step = n;
    t->fault_grad = strcmp(kind, "grad") == 0;
    return NULL;
}

fm_status fm_trainer_create(const fm_config *cfg, const fm_trainer_options *opts, fm_trainer **out)
{
    *out = NULL;
    fm_trainer *t = calloc(1, sizeof *t);
    FM_CHECK_ALLOC(t, sizeof *t);
    fm_status st = NULL;
    t->cfg = *cfg;
    t->opts = *opts;
    t->B = cfg->train_micro_batch;
    t->T = cfg->model_seq_len;
    t->ga = cfg->train_grad_accum;
    t->rank_windows = (int64_t)t->B * t->ga;
    {
        char buf[FM_CONFIG_PATH_MAX];
        fm_util_strlcpy(t->run_dir, fm_config_run_dir(cfg, buf, sizeof buf), sizeof t->run_dir);
    }
    FM_TRY_GOTO(st, fail, fm_comm_init(&t->comm));
    t->global_tokens = t->rank_windows * t->comm->size * (int64_t)t->T;
    st = fm_schedule_from_config(&t->sched, cfg);
    if (st) goto collective_fail;
    st = check_dataset(t);
    if (st) goto collective_fail;
    if (!opts->dry_run) FM_TRY_GOTO(st, fail, open_run_files(t));

    say(t, "fmtrain %s: %s %s on %d rank%s (%d node%s), run directory %s", fm_version_string(),
        opts->dry_run ? "dry run of" : "training", opts->config_path, t->comm->size,
        t->comm->size == 1 ? "" : "s", t->comm->nodes, t->comm->nodes == 1 ? "" : "s", t->run_dir);
    FM_TRY_GOTO(st, fail, place(t));
    FM_TRY_GOTO(st, fail, fm_backend_create(device_name(cfg), t->plan.threads, t->plan.gpu, &t->be));
    say_dataset(t);

    fm_model_memory_info mem;
    FM_TRY_GOTO(st, fail, fm_model_memory_estimate(&t->shape, t->B, t->be->ops->act_bytes, &mem));
    char cnt[40], bytes[32];
    say(t, "model: GPT-2, %d layers, %d heads, d_model %d, seq_len %d, vocabulary %d: %s parameters",
        t->shape.n_layer, t->shape.n_head, t->shape.d_model, t->shape.max_seq_len,
        t->shape.vocab_size, group_digits((long long)mem.n_params, cnt, sizeof cnt));
    say(t, "memory per rank (backend %s, %d thread%s): %s", t->be->ops->name, t->plan.threads,
        t->plan.threads == 1 ? "" : "s", fm_util_format_bytes((double)mem.total_bytes, bytes, sizeof bytes));
    say_memory(t, &mem);
    t->flops_per_token = fm_metrics_flops_per_token((int64_t)mem.n_params, t->shape.n_layer,
                                                    t->shape.d_model, t->T);
    say(t, "schedule: %s, lr %g -> min_lr %g, warmup %lld of %lld steps%s", fm_schedule_name(t->sched.kind),
        t->sched.lr, t->sched.min_lr, (long long)t->sched.warmup_steps, (long long)t->sched.total_steps,
        t->sched.kind == FM_SCHED_WSD ? " (decay over the last train.decay_fraction)" : "");
    if (opts->dry_run) {
        say(t, "dry run: configuration, dataset and placement are valid; nothing was trained");
        *out = t;
        return NULL;
    }

    /* The model, identical on every rank by construction; checked below. */
    FM_TRY_GOTO(st, fail, fm_model_create(&t->shape, t->be, t->B, &t->model));
    FM_TRY_GOTO(st, fail, fm_model_init_weights(t->model, cfg->run_seed));
    FM_TRY_GOTO(st, fail, fm_optimizer_create(t->model, &t->opt));
    float *ar_buf = fm_model_grads(t->model);
    if (strcmp(t->be->ops->name, "cpu") != 0 && t->comm->size > 1) {
        /* Device memory is not handed to MPI (a CUDA-aware MPI is not assumed): the gradients are
         * downloaded after the backward pass, all-reduced on the host and uploaded again. */
        size_t gb = fm_model_num_params(t->model) * sizeof(float);
        t->host_grads = malloc(gb);
        if (!t->host_grads) {
            st = FM_ERR(FM_ERR_NOMEM, "out of memory allocating %zu bytes of host gradients", gb);
            goto fail;
        }
        ar_buf = t->host_grads;
    }
    FM_TRY_GOTO(st, fail, fm_comm_allreduce_init(&t->ar, t->comm, ar_buf,
                                                  fm_model_num_params(t->model), 0, 0));
    fm_reader_options ro = {t->comm->world, t->T, t->rank_windows * t->comm->size,
                            t->rank_windows * t->comm->rank, t->rank_windows, cfg->run_seed,
                            0, fm_config_val_path(cfg), 1};
    FM_TRY_GOTO(st, fail, fm_reader_open(cfg->data_train, &ro, &t->reader));
    if (cfg->train_eval_every > 0 && fm_reader_val_windows(t->reader) < 1) {
        /* Found now rather than at the first evaluation, hours into the run. Same on every rank. */
        st = fm_status_collective(FM_ERR(
            FM_ERR_INPUT, "%s: the validation split has fewer than seq_len+1 = %d tokens, so there is "
                          "nothing to evaluate; give [data] val a dataset with a validation split, "
                          "or set [train] eval_every = 0",
            fm_config_val_path(cfg), t->T + 1));
        goto fail;
    }
    size_t wbytes = (size_t)t->rank_windows * (size_t)(t->T + 1) * sizeof(int32_t);
    size_t bt = (size_t)t->B * (size_t)t->T * sizeof(int32_t);
    t->windows = malloc(wbytes);
    t->inp = malloc(bt);
    t->tgt = malloc(bt);
    if (!t->windows || !t->inp || !t->tgt) {
        st = FM_ERR(FM_ERR_NOMEM, "out of memory allocating %zu bytes of token buffers", wbytes + 2 * bt);
        goto fail;
    }
    t->state.seed = cfg->run_seed;
    fm_reader_get_state(t->reader, &t->state.reader);
    FM_TRY_GOTO(st, fail, parse_fault(t));
    FM_TRY_GOTO(st, fail, measure_peak(t));
    *out = t;
    return NULL;
collective_fail:
    st = fm_status_collective(fm_status_trace(st, __FILE__, __LINE__, __func__));
fail:
    fm_trainer_free(&t);
    return st;
}

void fm_trainer_free(fm_trainer **pt)
{
    if (!pt || !*pt) return;
    fm_trainer *t = *pt;
    fm_metrics_close(&t->metrics);
    fm_reader_free(&t->reader);
    fm_comm_allreduce_free(&t->ar);
    fm_optimizer_free(&t->opt);
    fm_model_free(&t->model);
    fm_backend_free(&t->be);
    fm_comm_free(&t->comm);
    free(t->host_grads);
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
} step_result;

static fm_status train_step(fm_trainer *t, step_result *r)
{
    FM_TRY(fm_reader_next(t->reader, t->windows));
    double loss_sum = 0.0;
    for (int a = 0; a < t->ga; a++) {
        split_micro_batch(t, a);
        float loss = 0.0f;
        FM_TRY(fm_model_forward(t->model, t->inp, t->tgt, t->B, t->T, &loss));
        loss_sum += loss;
        int overlap = a == t->ga - 1 && !t->host_grads;
        FM_TRY(fm_model_backward(t->model, 1.0f / (float)t->ga, overlap ? grad_ready : NULL,
                                 overlap ? t->ar : NULL));
    }
    size_t gbytes = fm_model_num_params(t->model) * sizeof(float);
    if (t->host_grads) FM_TRY(fm_model_get_grads(t->model, t->host_grads));
    FM_TRY(fm_comm_allreduce_wait_all(t->ar));
    if (t->host_grads)
        FM_TRY(t->be->ops->upload(t->be, fm_model_grads(t->model), t->host_grads, gbytes));
    double loss = loss_sum / t->ga;
    if (t->fault_step == t->state.step + 1) {
        if (!t->fault_grad && t->comm->rank == 0) loss = NAN;
        if (t->fault_grad) {
            const float nan = NAN;
            FM_TRY(t->be->ops->upload(t->be, fm_model_grads(t->model), &nan, sizeof nan));
        }
    }
    FM_TRY(fm_comm_sum_doubles(t->comm, &loss, 1));
    r->loss = loss / t->comm->size;
    FM_TRY(fm_optimizer_grad_norm(t->opt, &r->grad_norm));
    r->lr = fm_schedule_lr(&t->sched, t->state.step);
    r->skipped = 0;
    if (!isfinite(r->loss) || !isfinite(r->grad_norm)) {
        /* Every rank sees the same averaged loss and gradients, so all decide alike. */
        if (t->cfg.train_on_nan == FM_ON_NAN_STOP)
            return fm_status_collective(FM_ERR(
                FM_ERR_NUMERIC,
                "step %lld: the %s is %s (loss %g, gradient norm %g); stopping without writing "
                "a checkpoint of this state ([train] on_nan = stop). Lower [train] lr, raise "
                "warmup_steps or set clip_grad, and resume from the last checkpoint",
                (long long)t->state.step + 1, isfinite(r->loss) ? "gradient norm" : "loss",
                (isnan(r->loss) || isnan(r->grad_norm)) ? "NaN" : "infinite", r->loss,
                r->grad_norm));
        fm_model_zero_grads(t->model);
        r->skipped = 1;
        t->state.skipped_steps++;
    } else {
        fm_adamw_params hp = {(float)r->lr, (float)t->cfg.train_beta1, (float)t->cfg.train_beta2,
                              (float)t->cfg.train_eps, (float)t->cfg.train_weight_decay};
        FM_TRY(fm_optimizer_step(t->opt, &hp, fm_optimizer_clip_scale(r->grad_norm, t->cfg.train_clip_grad)));
    }
    t->state.step++;
    t->state.tokens_seen += t->global_tokens;
    return NULL;
}

fm_status fm_trainer_evaluate(fm_trainer *t, double *val_loss)
{
    int64_t nb = t->cfg.train_eval_batches > 0 ? t->cfg.train_eval_batches : 1;
    double sum = 0.0;
    int64_t loaded = -1;
    for (int64_t k = 0; k < nb; k++) {
        int64_t batch = k / t->ga;
        if (batch != loaded) {
            FM_TRY(fm_reader_read_val(t->reader, batch, t->windows));
            loaded = batch;
        }
        split_micro_batch(t, (int)(k % t->ga));
        float loss = 0.0f;
        FM_TRY(fm_model_forward(t->model, t->inp, t->tgt, t->B, t->T, &loss));
        sum += loss;
    }
    sum /= (double)nb;
    FM_TRY(fm_comm_sum_doubles(t->comm, &sum, 1));
    *val_loss = sum / t->comm->size;
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

static fm_status save(fm_trainer *t, const fm_trainer_hooks *h, fm_trainer_save_reason why,
                      double *last_save)
{
    *last_save = fm_util_now();
    if (!h || !h->save) return NULL;
    double t0 = fm_util_now();
    FM_TRY(h->save(h->ctx, t, why));
    if (t->metrics)
        fm_metrics_logf(t->metrics, "checkpoint at step %lld written in %.2f s",
                        (long long)t->state.step, fm_util_now() - t0);
    *last_save = fm_util_now();
    return NULL;
}

static fm_status run_eval(fm_trainer *t, double seg_start)
{
    double vl = 0.0;
    FM_TRY(fm_trainer_evaluate(t, &vl));
    FM_TRY(fm_metrics_log_eval(t->metrics, t->state.step, t->state.tokens_seen, vl,
                               t->state.train_seconds + (fm_util_now() - seg_start)));
    return NULL;
}

fm_status fm_trainer_run(fm_trainer *t, const fm_trainer_hooks *hooks)
{
    const fm_config *cfg = &t->cfg;
    if (!t->model) return FM_ERR(FM_ERR_INTERNAL, "fm_trainer_run after a dry-run create");
    int resumed = 0;
    if (hooks && hooks->resume) FM_TRY(hooks->resume(hooks->ctx, t, &resumed));
    FM_TRY(check_params_identical(t, resumed ? "after resuming" : "after initialisation"));
    if (resumed)
        say(t, "resumed at step %lld (%lld tokens seen)", (long long)t->state.step,
            (long long)t->state.tokens_seen);
    else
        FM_TRY(remove_complete_marker(t));
    if (t->state.step >= cfg->train_steps) {
        say(t, "nothing to do: the run already reached step %lld of %lld",
            (long long)t->state.step, (long long)cfg->train_steps);
        return NULL;
    }

    /* A stop requested during start-up (the caller installs the handlers first thing): the state is
     * the one just loaded or initialised, so there is nothing new to save. Agreed by all ranks. */
    double early = fm_signals_pending() ? 1.0 : 0.0;
    FM_TRY(fm_comm_max_doubles(t->comm, &early, 1));
    if (early > 0.0) {
        say(t, "stop requested during start-up: exiting before step %lld", (long long)t->state.step + 1);
        return fm_status_collective(FM_ERR(FM_ERR_STOPPED, "stopped during start-up, before step %lld "
                                                           "(signal received); run the same command "
                                                           "again to continue",
                                           (long long)t->state.step + 1));
    }
    double end_time = 0.0;
    char src[160] = "";
    if (t->comm->rank == 0) FM_TRY(fm_signals_job_end_time(&end_time, src, sizeof src));
    FM_TRY(fm_comm_bcast(t->comm, &end_time, sizeof end_time));
    double margin = cfg->run_stop_margin_minutes * 60.0;
    if (end_time > 0 && margin > 0) {
        char d[32];
        say(t, "wall time: the job ends in %s (%s); stopping %.1f min before it",
            fm_metrics_format_duration(end_time - fm_util_wall_time(), d, sizeof d), src,
            cfg->run_stop_margin_minutes);
    }

    double seg_start = fm_util_now(), last_save = seg_start;
    double base_seconds = t->state.train_seconds;
    int64_t first_step = t->state.step;
    double win_train = 0.0;
    int64_t win_steps = 0;
    double max_step_s = 0.0;
    fm_status st = NULL;
    while (t->state.step < cfg->train_steps) {
        step_result r;
        double s0 = fm_util_now();
        FM_TRY(train_step(t, &r));
        double dt = fm_util_now() - s0;
        win_train += dt;
        win_steps++;
        if (dt > max_step_s) max_step_s = dt;
        t->state.train_seconds = base_seconds + (fm_util_now() - seg_start);
        int64_t step = t->state.step;

        if (t->metrics && (step % cfg->runtime_log_every == 0 || step == cfg->train_steps ||
                           step == first_step + 1 || r.skipped)) {
            double tps = (double)t->global_tokens * (double)win_steps / (win_train > 0 ? win_train : 1e-9);
            double per_step = (fm_util_now() - seg_start) / (double)(step - first_step);
            fm_metrics_step rec = {step,
                                   t->state.tokens_seen,
                                   r.loss,
                                   r.lr,
                                   r.grad_norm,
                                   1e3 * win_train / (double)win_steps,
                                   tps,
                                   t->peak_flops > 0 ? tps * t->flops_per_token / t->peak_flops : -1.0,
                                   t->state.train_seconds,
                                   per_step * (double)(cfg->train_steps - step),
                                   r.skipped};
            FM_TRY(fm_metrics_log_step(t->metrics, &rec));
            win_train = 0.0;
            win_steps = 0;
        }
        if (cfg->train_eval_every > 0 && step % cfg->train_eval_every == 0 && step < cfg->train_steps)
            FM_TRY(run_eval(t, seg_start));

        /* Stop and periodic-checkpoint decisions, agreed by all ranks (one small all-reduce). */
        double now_wall = fm_util_wall_time();
        double flags[2] = {0.0, 0.0};
        int sig = fm_signals_pending();
        if (sig) flags[0] = (double)sig;
        else if (end_time > 0 && margin > 0 && now_wall + margin + 2.0 * max_step_s >= end_time)
            flags[0] = -1.0; /* wall time */
        if ((cfg->checkpoint_every_steps > 0 && step % cfg->checkpoint_every_steps == 0) ||
            (cfg->checkpoint_every_minutes > 0 &&
             fm_util_now() - last_save >= cfg->checkpoint_every_minutes * 60.0))
            flags[1] = 1.0;
        double agreed[2] = {flags[0] != 0.0 ? 1.0 : 0.0, flags[1]};
        FM_TRY(fm_comm_max_doubles(t->comm, agreed, 2));
        if (agreed[0] > 0.0 && step < cfg->train_steps) {
            /* Which reason: the signal number when any rank got one, else wall time. */
            double why = flags[0] > 0 ? flags[0] : 0.0;
            FM_TRY(fm_comm_max_doubles(t->comm, &why, 1));
            char reason[96];
            if (why > 0)
                snprintf(reason, sizeof reason, "%s received", fm_signals_name((int)why));
            else
                snprintf(reason, sizeof reason, "the job's wall-time limit is %.1f min away",
                         (end_time - now_wall) / 60.0);
            say(t, "stopping at step %lld/%lld: %s", (long long)step, (long long)cfg->train_steps,
                reason);
            FM_TRY(save(t, hooks, FM_TRAINER_SAVE_STOP, &last_save));
            st = FM_ERR(FM_ERR_STOPPED,
                        "stopped at step %lld of %lld (%s)%s; run the same command again to resume",
                        (long long)step, (long long)cfg->train_steps, reason,
                        hooks && hooks->save ? ", state saved" : " (no checkpoint writer: state not saved)");
            return fm_status_collective(st);
        }
        if (agreed[1] > 0.0 && step < cfg->train_steps)
            FM_TRY(save(t, hooks, FM_TRAINER_SAVE_PERIODIC, &last_save));
    }
    if (cfg->train_eval_every > 0) FM_TRY(run_eval(t, seg_start));
    FM_TRY(check_params_identical(t, "at the end of training"));
    t->state.train_seconds = base_seconds + (fm_util_now() - seg_start);
    FM_TRY(save(t, hooks, FM_TRAINER_SAVE_FINAL, &last_save));
    FM_TRY(write_complete_marker(t));
    char d[32];
    double seg = fm_util_now() - seg_start;
    say(t, "finished %lld steps (%lld tokens) in %s; waiting for data took %.2f%% of this segment%s",
        (long long)t->state.step, (long long)t->state.tokens_seen,
        fm_metrics_format_duration(t->state.train_seconds, d, sizeof d),
        seg > 0 ? 100.0 * fm_reader_wait_seconds(t->reader) / seg : 0.0,
        t->state.skipped_steps ? " (some updates skipped for non-finite values)" : "");
    return NULL;
}

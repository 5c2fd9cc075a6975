/* plan.c — see plan.h. Memory per rank (the model's formula and the ZeRO arithmetic), the largest
 * micro-batch, the step time from a measurement, wall time, jobs, node-hours and Young's interval. */
#include "plan/plan.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

const char *fm_plan_precision_name(fm_plan_precision p)
{
    return p == FM_PLAN_BF16 ? "bf16" : "fp32";
}

/* ---- memory ------------------------------------------------------------------------------------ */

static uint64_t shard(uint64_t elems, int ranks, uint64_t elem_bytes)
{
    return (elems + (uint64_t)ranks - 1) / (uint64_t)ranks * elem_bytes;
}

fm_status fm_plan_zero_memory_of(const fm_model_memory_info *mem, int stage, int ranks,
                                 int weight_elem_bytes, fm_plan_zero_memory *out)
{
    memset(out, 0, sizeof *out);
    if (stage < 0 || stage > 2)
        return FM_ERR(FM_ERR_USAGE, "ZeRO stage %d: expected 0, 1 or 2 (--zero)", stage);
    if (ranks < 1) return FM_ERR(FM_ERR_USAGE, "ZeRO over %d ranks: expected at least 1 (--nodes x --ranks-per-node)", ranks);
    if (weight_elem_bytes != 2 && weight_elem_bytes != 4)
        return FM_ERR(FM_ERR_USAGE, "weights of %d bytes per parameter: expected 2 (bf16) or 4 (fp32)",
                      weight_elem_bytes);
    const uint64_t n = mem->n_params_padded;
    out->stage = stage;
    out->ranks = ranks;
    if ((weight_elem_bytes == 2) != (mem->param_copy_bytes > 0))
        return FM_ERR(FM_ERR_USAGE, "weights of %d bytes per parameter, but the model's breakdown has %s "
                                    "bf16 weight copy: estimate it with act_elem_bytes = %d",
                      weight_elem_bytes, mem->param_copy_bytes ? "a" : "no", weight_elem_bytes);
    if (weight_elem_bytes == 4) {
        /* The parameters are both what compute reads and the master copy: whole on every rank. */
        out->weights = mem->param_bytes;
        out->master = 0;
    } else {
        /* The model's bf16 compute copy (param_copy_bytes), whole; the fp32 master (the model's
         * param_bytes, which AdamW updates) apart, shardable. */
        out->weights = mem->param_copy_bytes;
        out->master = stage >= 1 ? shard(n, ranks, mem->param_bytes / (n ? n : 1)) : mem->param_bytes;
    }
    out->grads = stage >= 2 ? shard(n, ranks, mem->grad_bytes / (n ? n : 1)) : mem->grad_bytes;
    out->optim = stage >= 1 ? shard(n, ranks, mem->optim_bytes / (n ? n : 1)) : mem->optim_bytes;
    out->activations = mem->act_bytes + mem->logits_bytes + mem->scratch_bytes;
    out->total = out->weights + out->master + out->grads + out->optim + out->activations;
    return NULL;
}

uint64_t fm_plan_rank_budget(const fm_plan_device *dev, int ranks_per_node)
{
    const double gib = 1024.0 * 1024.0 * 1024.0;
    if (!dev->memory_gib.entry) return 0;
    if (dev->kind == FM_PLAN_GPU) return (uint64_t)(dev->memory_gib.v * gib);
    return (uint64_t)(dev->memory_gib.v * gib / (ranks_per_node > 0 ? ranks_per_node : 1));
}

/* The rank's total under (precision p, stage s) at micro-batch B: the zero arithmetic plus the
 * device's measured runtime overhead. 0 on a shape error. */
static uint64_t rank_bytes(const fm_model_shape *shape, int B, int p, int s, int ranks, uint64_t overhead)
{
    fm_model_memory_info mem;
    fm_status st = fm_model_memory_estimate(shape, B, p == FM_PLAN_BF16 ? 2 : 4, &mem);
    fm_plan_zero_memory z;
    if (!st) st = fm_plan_zero_memory_of(&mem, s, ranks, p == FM_PLAN_BF16 ? 2 : 4, &z);
    if (st) {
        fm_status_free(&st);
        return 0;
    }
    return z.total + overhead;
}

/* The largest micro-batch whose memory fits `budget` (memory grows with B: bisection). 0 when 1
 * does not fit. */
static int max_micro_batch(const fm_model_shape *shape, int p, int s, int ranks, uint64_t overhead,
                           uint64_t budget)
{
    int64_t hi_limit = INT_MAX / shape->max_seq_len;
    if (hi_limit > (1 << 24)) hi_limit = 1 << 24;
    uint64_t b1 = rank_bytes(shape, 1, p, s, ranks, overhead);
    if (b1 == 0 || b1 > budget) return 0;
    int64_t lo = 1, hi = 2;
    while (hi <= hi_limit) {
        uint64_t b = rank_bytes(shape, (int)hi, p, s, ranks, overhead);
        if (b == 0 || b > budget) break;
        lo = hi;
        hi *= 2;
    }
    if (hi > hi_limit) hi = hi_limit + 1;
    while (hi - lo > 1) { /* lo fits, hi does not (or is past the limit) */
        int64_t mid = lo + (hi - lo) / 2;
        uint64_t b = rank_bytes(shape, (int)mid, p, s, ranks, overhead);
        if (b != 0 && b <= budget)
            lo = mid;
        else
            hi = mid;
    }
    return (int)lo;
}

/* ---- measurements ------------------------------------------------------------------------------ */

/* The model shape of a measurement, resolved; 0 when it is not a valid shape. */
static int point_shape(const fm_plan_measurement *m, fm_model_shape *out)
{
    fm_model_shape s;
    memset(&s, 0, sizeof s);
    s.n_layer = m->n_layer;
    s.n_head = m->n_head;
    s.d_model = m->d_model;
    s.max_seq_len = m->seq_len;
    s.vocab_size = m->vocab_size;
    snprintf(s.arch, sizeof s.arch, "%s", m->arch);
    s.n_kv_head = m->n_kv_head;
    s.ffn_dim = m->ffn_dim;
    s.tie_embeddings = m->tie == 1 ? FM_TIE_YES : m->tie == 2 ? FM_TIE_NO : FM_TIE_DEFAULT;
    fm_status st = fm_model_shape_resolve(&s, out);
    if (st) {
        fm_status_free(&st);
        return 0;
    }
    return 1;
}

static double point_rank_peak(const fm_plan_measurement *m, const fm_plan_device *d)
{
    double peak = d->peak_tflops[m->precision].v * 1e12;
    return d->kind == FM_PLAN_CPU ? peak * m->threads : peak;
}

double fm_plan_measurement_mfu(const fm_plan_measurement *m, const fm_plan_tables *tables)
{
    const fm_plan_device *d = fm_plan_find_device(tables, m->device);
    fm_model_shape s;
    if (!d || !point_shape(m, &s)) return 0.0;
    double peak = point_rank_peak(m, d);
    if (peak <= 0) return 0.0;
    return m->tokens_per_s * fm_model_flops_per_token(&s, m->seq_len) / (peak * m->ranks);
}

static int same_shape(const fm_model_shape *a, const fm_model_shape *b)
{
    return strcmp(a->arch, b->arch) == 0 && a->n_layer == b->n_layer && a->n_head == b->n_head &&
           a->n_kv_head == b->n_kv_head && a->d_model == b->d_model && a->ffn_dim == b->ffn_dim &&
           a->vocab_size == b->vocab_size && a->max_seq_len == b->max_seq_len &&
           a->tie_embeddings == b->tie_embeddings;
}

/* How far a measurement is from the plan, compared lexicographically: another model first, then
 * the FLOPs per token (log ratio), then the cores per rank (CPUs), the micro-batch, and the newer date
 * wins a tie. */
typedef struct distance {
    int other_model;
    double flops, cores, batch;
    const char *date;
} distance;

static int closer(const distance *a, const distance *b)
{
    if (a->other_model != b->other_model) return a->other_model < b->other_model;
    if (fabs(a->flops - b->flops) > 1e-9) return a->flops < b->flops;
    if (fabs(a->cores - b->cores) > 1e-9) return a->cores < b->cores;
    if (fabs(a->batch - b->batch) > 1e-9) return a->batch < b->batch;
    return strcmp(a->date, b->date) > 0;
}

/* The closest fmtrain measurement on a device named `device` (NULL: any device of `chip` other than
 * `exclude`) in precision p. */
static const fm_plan_measurement *select_point(const fm_plan_tables *t, const fm_plan_input *in,
                                               const char *device, const char *chip,
                                               const char *exclude, double fpt, int *same_model)
{
    const fm_plan_measurement *best = NULL;
    distance bd = {0};
    for (int i = 0; i < t->n_points; i++) {
        const fm_plan_measurement *m = &t->points[i];
        if (m->peer || m->precision != (int)in->precision) continue;
        if (device && strcmp(m->device, device) != 0) continue;
        if (!device) {
            const fm_plan_device *d = fm_plan_find_device(t, m->device);
            if (!d || strcmp(d->name, exclude) == 0 || !d->chip[0] || strcmp(d->chip, chip) != 0) continue;
        }
        fm_model_shape s;
        if (!point_shape(m, &s)) continue;
        double f = fm_model_flops_per_token(&s, m->seq_len);
        if (f <= 0) continue;
        distance d = {!same_shape(&s, &in->shape), fabs(log(fpt / f)),
                      fabs(log((double)(in->cores_per_rank > 0 ? in->cores_per_rank : 1) / m->threads)),
                      fabs(log((double)in->micro_batch / m->micro_batch)), m->date};
        if (!best || closer(&d, &bd)) {
            best = m;
            bd = d;
        }
    }
    if (best) *same_model = !bd.other_model;
    return best;
}

/* Fills the prediction part of `r`. */
static void predict(const fm_plan_input *in, const fm_plan_device *dev, const fm_plan_tables *t,
                    fm_plan_result *r)
{
    const int p = (int)in->precision;
    if (!dev->peak_tflops[p].entry) return; /* no peak: no prediction (the caller says why) */
    r->mfu_min_on_device = r->mfu_max_on_device = 0;
    for (int i = 0; i < t->n_points; i++) {
        const fm_plan_measurement *m = &t->points[i];
        if (m->peer || m->precision != p || strcmp(m->device, dev->name) != 0) continue;
        double mfu = fm_plan_measurement_mfu(m, t);
        if (r->points_on_device == 0 || mfu < r->mfu_min_on_device) r->mfu_min_on_device = mfu;
        if (r->points_on_device == 0 || mfu > r->mfu_max_on_device) r->mfu_max_on_device = mfu;
        r->points_on_device++;
    }
    int same = 0;
    const fm_plan_measurement *m =
        select_point(t, in, dev->name, NULL, NULL, r->flops_per_token, &same);
    if (m) {
        r->basis = FM_PLAN_MEASURED;
        r->mfu_lo = r->mfu_hi = fm_plan_measurement_mfu(m, t);
    } else if (dev->chip[0]) {
        m = select_point(t, in, NULL, dev->chip, dev->name, r->flops_per_token, &same);
        const fm_plan_device *md = m ? fm_plan_find_device(t, m->device) : NULL;
        /* Same chip, same peak (within 1 %), both bandwidths known: the range between a compute-bound
         * step (same MFU) and a bandwidth-bound one (MFU scaled by the bandwidth ratio). */
        if (md && md->peak_tflops[p].entry && dev->memory_tbs.entry && md->memory_tbs.entry &&
            fabs(md->peak_tflops[p].v / dev->peak_tflops[p].v - 1.0) < 0.01) {
            double mfu = fm_plan_measurement_mfu(m, t);
            r->bandwidth_ratio = dev->memory_tbs.v / md->memory_tbs.v;
            r->basis = FM_PLAN_SIBLING_RANGE;
            r->mfu_lo = mfu * fmin(1.0, r->bandwidth_ratio);
            r->mfu_hi = mfu * fmax(1.0, r->bandwidth_ratio);
        } else {
            m = NULL;
        }
    }
    if (!m || r->mfu_lo <= 0) {
        r->basis = FM_PLAN_NO_PREDICTION;
        r->point = NULL;
        return;
    }
    r->point = m;
    r->same_model = same;
    fm_model_shape ms;
    if (point_shape(m, &ms)) r->point_flops_per_token = fm_model_flops_per_token(&ms, m->seq_len);
    const double rank_tokens = (double)in->micro_batch * in->grad_accum * in->shape.max_seq_len;
    r->compute_s_lo = rank_tokens * r->flops_per_token / (r->mfu_hi * r->rank_peak_flops);
    r->compute_s_hi = rank_tokens * r->flops_per_token / (r->mfu_lo * r->rank_peak_flops);
    /* What the trainer adds to the benchmark's step, where the device has it measured: its own
     * per-step work, and the gradient reduction between the n ranks of a node: a latency per ring
     * step pair, (n-1) x allreduce_latency_ms, and the bus-bandwidth term 2 (n-1)/n x the gradient
     * bytes / allreduce_busbw_gbs. That term is zero 0's all-reduce and zero 2's reduce-scatter +
     * all-gather of the fp32 weights alike; zero 1 all-reduces AND all-gathers (docs/training.md),
     * (n-1)/n x the weight bytes (= gradient bytes) more, one more latency per step pair, at the
     * same measured bus bandwidth. Between nodes nothing is measured: a lower bound then. */
    r->trainer_s = dev->trainer_overhead_ms.entry ? dev->trainer_overhead_ms.v / 1e3 : 0.0;
    const int n = r->ranks;
    r->comm_complete = n == 1;
    if (n > 1 && in->nodes == 1 && dev->allreduce_busbw_gbs.entry) {
        r->comm_passes = in->zero_stage == 1 ? 3 : 2; /* buffer passes of (n-1)/n each */
        r->comm_s = (r->comm_passes - 1) * (n - 1) * dev->allreduce_latency_ms.v / 1e3 +
                    r->comm_passes * (double)(n - 1) / n * (double)r->model_mem[0].grad_bytes /
                        (dev->allreduce_busbw_gbs.v * 1e9);
        r->comm_complete = 1;
    }
    r->step_s_lo = r->compute_s_lo + r->trainer_s + r->comm_s;
    r->step_s_hi = r->compute_s_hi + r->trainer_s + r->comm_s;
    r->tokens_per_s_hi = r->tokens_per_step / r->step_s_lo;
    r->tokens_per_s_lo = r->tokens_per_step / r->step_s_hi;
    r->compute_h_lo = (double)r->steps * r->step_s_lo / 3600.0;
    r->compute_h_hi = (double)r->steps * r->step_s_hi / 3600.0;
}

/* Checkpoint write, Young's interval, wall time, jobs and node-hours. */
static void schedule(const fm_plan_input *in, fm_plan_result *r)
{
    r->ckpt_write_s = in->fs_gbs > 0 ? (double)in->checkpoint_bytes / (in->fs_gbs * 1e9) : 0.0;
    r->job_mtbf_h = in->node_mtbf_h > 0 ? in->node_mtbf_h / in->nodes : 0.0;
    if (r->ckpt_write_s > 0 && r->job_mtbf_h > 0) {
        const double M = r->job_mtbf_h * 3600.0;
        r->young_interval_s = sqrt(2.0 * r->ckpt_write_s * M);
        r->ckpt_overhead = r->ckpt_write_s / r->young_interval_s + r->young_interval_s / (2.0 * M);
    }
    if (in->time_limit_h > 0) {
        /* A job trains until the stop margin before its limit, after reading the checkpoint it
         * resumes from and before writing the one it stops with. */
        double h = in->time_limit_h - in->stop_margin_s / 3600.0 - 2.0 * r->ckpt_write_s / 3600.0;
        r->job_train_h = h > 0 ? h : 0;
    }
    if (r->basis == FM_PLAN_NO_PREDICTION) return;
    const double f = 1.0 + r->ckpt_overhead;
    r->wall_h_lo = r->compute_h_lo * f;
    r->wall_h_hi = r->compute_h_hi * f;
    if (r->job_train_h > 0) {
        r->jobs_lo = (int64_t)ceil(r->wall_h_lo / r->job_train_h);
        r->jobs_hi = (int64_t)ceil(r->wall_h_hi / r->job_train_h);
    }
    /* every job but the first reads a checkpoint at start, every job writes one at its end */
    const double per_job_h = 2.0 * r->ckpt_write_s / 3600.0;
    r->node_hours_lo = in->nodes * (r->wall_h_lo + (double)r->jobs_lo * per_job_h);
    r->node_hours_hi = in->nodes * (r->wall_h_hi + (double)r->jobs_hi * per_job_h);
}

static fm_status check_input(const fm_plan_input *in)
{
    if (!(in->tokens > 0) || !isfinite(in->tokens))
        return FM_ERR(FM_ERR_USAGE, "token budget %g: expected a positive number (--tokens)", in->tokens);
    if (in->nodes < 1) return FM_ERR(FM_ERR_USAGE, "%d nodes: expected at least 1 (--nodes)", in->nodes);
    if (in->ranks_per_node < 1)
        return FM_ERR(FM_ERR_USAGE, "%d ranks per node: expected at least 1 (--ranks-per-node)",
                      in->ranks_per_node);
    if ((int64_t)in->nodes * in->ranks_per_node > INT_MAX / 2)
        return FM_ERR(FM_ERR_USAGE, "%d nodes x %d ranks per node is too many ranks; lower --nodes or "
                                    "--ranks-per-node", in->nodes, in->ranks_per_node);
    if (in->micro_batch < 1 || in->grad_accum < 1)
        return FM_ERR(FM_ERR_USAGE, "micro_batch %d, grad_accum %d: expected at least 1 each ([train] "
                                    "micro_batch, grad_accum)", in->micro_batch, in->grad_accum);
    if (in->zero_stage < 0 || in->zero_stage > 2)
        return FM_ERR(FM_ERR_USAGE, "ZeRO stage %d: expected 0, 1 or 2 (--zero)", in->zero_stage);
    if (in->time_limit_h < 0 || in->fs_gbs < 0 || in->node_mtbf_h < 0 || in->stop_margin_s < 0)
        return FM_ERR(FM_ERR_USAGE, "time limit %g h, bandwidth %g GB/s, node MTBF %g h, stop margin %g s: "
                                    "none may be negative (--time-limit, --fs-gbs, --node-mtbf, [run] "
                                    "stop_margin_minutes)", in->time_limit_h, in->fs_gbs, in->node_mtbf_h,
                      in->stop_margin_s);
    return NULL;
}

fm_status fm_plan_compute(const fm_plan_input *in, const fm_plan_device *dev,
                          const fm_plan_tables *tables, fm_plan_result *out)
{
    memset(out, 0, sizeof *out);
    FM_TRY(check_input(in));
    FM_TRY(fm_model_shape_check(&in->shape));
    if (dev->kind == FM_PLAN_CPU && in->cores_per_rank < 1)
        return FM_ERR(FM_ERR_USAGE, "%s is a CPU node type: the cores per rank must be at least 1 "
                                    "(--cores-per-rank)", dev->name);
    fm_plan_result *r = out;
    const int T = in->shape.max_seq_len;
    r->ranks = in->nodes * in->ranks_per_node;
    r->tokens_per_step = (double)in->micro_batch * in->grad_accum * r->ranks * T;
    r->steps = (int64_t)ceil(in->tokens / r->tokens_per_step);
    r->flops_per_token = fm_model_flops_per_token(&in->shape, T);
    const int p = (int)in->precision;
    r->rank_peak_flops = dev->peak_tflops[p].v * 1e12 *
                         (dev->kind == FM_PLAN_CPU ? in->cores_per_rank : 1);
    r->overhead_bytes = (uint64_t)(dev->overhead_mib.v * 1024.0 * 1024.0);
    fm_model_memory_info m0;
    FM_TRY(fm_model_memory_estimate(&in->shape, 1, 4, &m0));
    if (r->ranks > 1 && dev->allreduce_buffer_factor.entry)
        r->comm_bytes = (uint64_t)(dev->allreduce_buffer_factor.v * (double)m0.grad_bytes);
    const uint64_t extra = r->overhead_bytes + r->comm_bytes;
    if (dev->kind == FM_PLAN_CPU && in->node_memory_gib > 0)
        r->budget_bytes = (uint64_t)(in->node_memory_gib * 1024.0 * 1024.0 * 1024.0 / in->ranks_per_node);
    else
        r->budget_bytes = fm_plan_rank_budget(dev, in->ranks_per_node);
    for (int q = 0; q < FM_PLAN_PRECISIONS; q++) {
        FM_TRY(fm_model_memory_estimate(&in->shape, in->micro_batch, q == FM_PLAN_BF16 ? 2 : 4,
                                        &r->model_mem[q]));
        for (int s = 0; s < FM_PLAN_STAGES; s++) {
            FM_TRY(fm_plan_zero_memory_of(&r->model_mem[q], s, r->ranks, q == FM_PLAN_BF16 ? 2 : 4,
                                          &r->zero[q][s]));
            r->fits[q][s] = r->budget_bytes > 0 && r->zero[q][s].total + extra <= r->budget_bytes;
            r->max_micro_batch[q][s] =
                r->budget_bytes > 0 ? max_micro_batch(&in->shape, q, s, r->ranks, extra, r->budget_bytes)
                                    : 0;
        }
    }
    r->n_params = r->model_mem[0].n_params;
    if (dev->kind == FM_PLAN_GPU) r->host_ckpt_bytes = r->model_mem[0].param_bytes * 3;
    predict(in, dev, tables, r);
    schedule(in, r);
    return NULL;
}

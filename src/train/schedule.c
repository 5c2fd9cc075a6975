/* schedule.c — see schedule.h. */
#include "train/schedule.h"

#include <math.h>

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

fm_status fm_schedule_check(const fm_schedule_spec *s)
{
    if (s->total_steps < 1)
        return FM_ERR(FM_ERR_CONFIG, "[train] steps = %lld: a schedule needs at least one step",
                      (long long)s->total_steps);
    if (!(s->lr > 0.0) || !isfinite(s->lr))
        return FM_ERR(FM_ERR_CONFIG, "[train] lr = %g: expected a finite value > 0", s->lr);
    if (s->min_lr < 0.0 || s->min_lr > s->lr)
        return FM_ERR(FM_ERR_CONFIG, "[train] min_lr = %g: expected 0 <= min_lr <= lr (%g)", s->min_lr,
                      s->lr);
    if (s->warmup_steps < 0 || s->warmup_steps > s->total_steps)
        return FM_ERR(FM_ERR_CONFIG,
                      "[train] warmup_steps = %lld: expected 0 <= warmup_steps <= steps (%lld)",
                      (long long)s->warmup_steps, (long long)s->total_steps);
    if (s->kind == FM_SCHED_WSD && !(s->decay_fraction >= 0.0 && s->decay_fraction <= 1.0))
        return FM_ERR(FM_ERR_CONFIG, "[train] decay_fraction = %g: expected a value in [0, 1]",
                      s->decay_fraction);
    return NULL;
}

fm_status fm_schedule_from_config(fm_schedule_spec *spec, const fm_config *cfg)
{
    spec->kind = cfg->train_schedule;
    spec->lr = cfg->train_lr;
    spec->min_lr = cfg->train_min_lr;
    spec->warmup_steps = cfg->train_warmup_steps;
    spec->total_steps = cfg->train_steps;
    spec->decay_fraction = cfg->train_decay_fraction;
    return fm_schedule_check(spec);
}

/* Position in [0, 1] of `step` inside the phase [start, total-1]. */
static double phase_position(int64_t step, int64_t start, int64_t total)
{
    int64_t last = total - 1;
    if (step <= start) return 0.0;
    if (step >= last || last <= start) return 1.0;
    return (double)(step - start) / (double)(last - start);
}

double fm_schedule_lr(const fm_schedule_spec *s, int64_t step)
{
    if (step < 0) step = 0;
    if (step < s->warmup_steps) return s->lr * (double)(step + 1) / (double)s->warmup_steps;
    switch (s->kind) {
    case FM_SCHED_CONSTANT:
        return s->lr;
    case FM_SCHED_LINEAR: {
        double p = phase_position(step, s->warmup_steps, s->total_steps);
        return s->lr - (s->lr - s->min_lr) * p;
    }
    case FM_SCHED_WSD: {
        int64_t decay = (int64_t)llround(s->decay_fraction * (double)s->total_steps);
        int64_t start = s->total_steps - decay;
        if (start < s->warmup_steps) start = s->warmup_steps;
        if (decay <= 0 || step < start) return s->lr;
        double p = phase_position(step, start, s->total_steps);
        return s->lr - (s->lr - s->min_lr) * p;
    }
    case FM_SCHED_COSINE:
    default: {
        double p = phase_position(step, s->warmup_steps, s->total_steps);
        return s->min_lr + (s->lr - s->min_lr) * 0.5 * (1.0 + cos(M_PI * p));
    }
    }
}

const char *fm_schedule_name(fm_schedule kind)
{
    switch (kind) {
    case FM_SCHED_COSINE: return "cosine";
    case FM_SCHED_LINEAR: return "linear";
    case FM_SCHED_CONSTANT: return "constant";
    case FM_SCHED_WSD: return "wsd";
    }
    return "unknown";
}

/* schedule.h — learning-rate schedules: linear warmup, then cosine | linear | constant | WSD.
 *
 * Steps are counted from 0: step s is the (s+1)-th optimizer update of a run of `total_steps`.
 *
 *   warmup  (s < warmup_steps):  lr * (s + 1) / warmup_steps          (never 0, reaches lr at the end)
 *   cosine:   min_lr + (lr - min_lr) * 0.5 * (1 + cos(pi * p))
 *   linear:   lr - (lr - min_lr) * p
 *   constant: lr                                                         (min_lr is not used)
 *   wsd:      lr while stable; over the last round(decay_fraction * total_steps) steps
 *             lr - (lr - min_lr) * p  (warmup, stable, decay)
 *
 * where p in [0, 1] is the position inside the decay phase: 0 on its first step, 1 on the last step of
 * the run (so the final update uses exactly min_lr). For cosine and linear the decay phase is every
 * step after the warmup. Steps beyond total_steps keep the final value.
 *
 * Pure functions, no state: the schedule position of a resumed run is just its step number.
 */
#ifndef FM_SCHEDULE_H
#define FM_SCHEDULE_H

#include <stdint.h>

#include "config/config.h"
#include "core/status.h"

typedef struct fm_schedule_spec {
    fm_schedule kind;
    double lr;             /* peak learning rate */
    double min_lr;         /* final learning rate (cosine, linear, wsd) */
    int64_t warmup_steps;  /* >= 0 */
    int64_t total_steps;   /* >= 1 */
    double decay_fraction; /* wsd: fraction of total_steps spent decaying, in [0, 1] */
} fm_schedule_spec;

/* Fills `spec` from the [train] section of `cfg`. Config error when the combination cannot be
 * scheduled (min_lr > lr, warmup longer than the run, decay_fraction outside [0, 1]). */
fm_status fm_schedule_from_config(fm_schedule_spec *spec, const fm_config *cfg);

/* Checks a hand-built spec with the same rules. */
fm_status fm_schedule_check(const fm_schedule_spec *spec);

/* The learning rate of step `step` (0-based). */
double fm_schedule_lr(const fm_schedule_spec *spec, int64_t step);

/* "cosine", "linear", "constant", "wsd". */
const char *fm_schedule_name(fm_schedule kind);

#endif /* FM_SCHEDULE_H */

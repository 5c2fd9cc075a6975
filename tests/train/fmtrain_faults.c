/* fmtrain_faults.c — a test executable: the fmtrain program (fm_main, the same code as fmtrain)
 * with a fault injector installed through the trainer's test hooks, so that the tests can exercise
 * [train] on_nan (tests/train/test_nan.sh). The production fmtrain carries no such code and ignores
 * the variable below.
 *
 * FMTRAIN_TEST_NAN_STEP = "N:loss" or "N:grad" poisons step N (1-based), after the gradient
 * all-reduce: "loss" makes rank 0's loss NaN (the averaged loss becomes NaN on every rank), "grad"
 * sets the first gradient to NaN on every rank (the gradient norm becomes NaN). Unset: no fault. A
 * malformed value exits 2 before anything runs. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "kernels.h"
#include "train/trainer.h"

typedef struct fault {
    long long step; /* the step to poison; 0: none */
    int grad;       /* 1: a gradient, 0: rank 0's loss */
} fault;

/* Parses "N:loss" / "N:grad"; -1 when malformed. */
static int parse_fault(const char *v, fault *f)
{
    char kind[8] = "";
    if (sscanf(v, "%lld:%7s", &f->step, kind) != 2 || f->step < 1) return -1;
    if (strcmp(kind, "grad") == 0)
        f->grad = 1;
    else if (strcmp(kind, "loss") == 0)
        f->grad = 0;
    else
        return -1;
    return 0;
}

/* fm_trainer_test_hooks.after_allreduce: poisons the configured step. */
static fm_status inject(void *ctx, fm_trainer *t, int64_t step, double *loss)
{
    const fault *f = ctx;
    if (step != f->step) return NULL;
    if (!f->grad) {
        if (fm_trainer_comm(t)->rank == 0) *loss = NAN;
        return NULL;
    }
    fm_model *m = fm_trainer_model(t);
    fm_backend *be = fm_model_get_backend(m);
    const float nan = NAN;
    return be->ops->upload(be, fm_model_grads(m), &nan, sizeof nan);
}

int main(int argc, char **argv)
{
    fault f = {0, 0};
    const char *v = getenv("FMTRAIN_TEST_NAN_STEP");
    if (v && *v && parse_fault(v, &f) != 0) {
        fprintf(stderr,
                "fmtrain_faults: FMTRAIN_TEST_NAN_STEP = '%s': expected STEP:loss or STEP:grad\n",
                v);
        return 2;
    }
    fm_trainer_test_hooks trainer_hooks = {f.step > 0 ? inject : NULL, &f};
    fm_main_hooks hooks = {&trainer_hooks};
    return fm_main(argc, argv, &hooks);
}

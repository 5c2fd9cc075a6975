/* evaluate.h — the loss of a model on a fixed set of windows of a dataset split: the validation loss
 * that training logs ([train] eval_every, eval_windows) and what `fmtrain eval` prints.
 *
 * What it is: one procedure shared by the trainer and `fmtrain eval`, so that both give the same
 * number for the same weights and windows.
 *   The set: K windows of the split, member k being window floor(k*n/K) of its n windows
 *     (data/reader.h, "Evaluation windows"); K = min(requested, n).
 *   The work: the members are cut into chunks of B consecutive members (the last one may be
 *     shorter); chunk c is evaluated by rank c mod P, in one forward of its windows (inputs the
 *     first T tokens of each window, targets the last T); each window's loss is the mean of its T
 *     per-position cross-entropies (fm_model_sequence_losses).
 *   The sum: every rank fills the losses of its own members into a vector of K doubles (zero
 *     elsewhere), the vectors are summed over ranks (adding zeros is exact, so every rank then holds
 *     every member's loss exactly) and the K losses are summed in member order in double:
 *     loss = (sum over k of loss_k) / K.
 *   So a chunk holds the same windows whatever the rank count, and the result does not depend on
 *   the rank count at all: the same weights, windows, B, backend and thread count give the same
 *   loss bit for bit on 1 or 8 ranks (tests/eval). A different B (chunk) or thread count may change
 *   the last bits of a window's loss (the kernels' rows are computed independently, but a BLAS may
 *   pick another code path for another matrix size): agreement to ~1e-6 relative, not bits.
 * What it is not: it does not choose the set's size or the split (the trainer: [train]
 * eval_windows of the validation split; fmtrain eval: its options) and it writes no metrics.
 *
 * Collective over comm: every rank calls it with the same options; any rank's error (a read, the
 * model) is agreed, so every rank returns the same (collective) status.
 */
#ifndef FM_EVALUATE_H
#define FM_EVALUATE_H

#include <stdint.h>

#include "core/status.h"
#include "data/reader.h"
#include "dist/comm.h"
#include "model/model.h"

typedef struct fm_eval_options {
    fm_dataset_split split; /* FM_SPLIT_VAL (training's evaluation) or FM_SPLIT_TRAIN */
    int64_t windows;        /* K requested, >= 1; more than the split has means all of them */
    int batch;              /* B: windows per forward, 1 .. the model's max_batch */
} fm_eval_options;

typedef struct fm_eval_result {
    double loss;           /* mean cross-entropy per target token over the set (nats) */
    int64_t windows;       /* K used: min(requested, split_windows) */
    int64_t split_windows; /* n: the split's windows of seq_len+1 tokens */
    int64_t tokens;        /* target positions evaluated: K x seq_len */
} fm_eval_result;

/* The loss of `model` (a training or forward-only model, model.h) on the evaluation set of `o`
 * read through `reader` (whose seq_len must be the model's max_seq_len), computed as above. The
 * model's activations are overwritten (call it at a step boundary). Errors (collective): a split
 * without windows (FM_ERR_INPUT naming the file), a read failure, bad options (FM_ERR_USAGE),
 * allocation, MPI. */
fm_status fm_evaluate(fm_model *model, fm_reader *reader, const fm_comm *comm,
                      const fm_eval_options *o, fm_eval_result *out);

#endif /* FM_EVALUATE_H */

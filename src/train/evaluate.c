/* evaluate.c — see evaluate.h: the loss over a fixed set of windows, split over the ranks in chunks
 * that do not depend on the rank count, summed in member order. */
#include "train/evaluate.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* Elements per all-reduce call (fm_comm_sum_doubles takes an int count). */
#define SUM_PIECE (1 << 20)

/* This rank's chunks: forward of each, the window losses into loss[first member ..]. */
static fm_status eval_chunks(fm_model *model, fm_reader *reader, const fm_comm *comm,
                             const fm_eval_options *o, int64_t K, double *loss)
{
    const int T = fm_reader_seq_len(reader), B = o->batch;
    const size_t W = (size_t)T + 1;
    int32_t *win = malloc((size_t)B * W * sizeof *win);
    int32_t *inp = malloc((size_t)B * (size_t)T * sizeof *inp);
    int32_t *tgt = malloc((size_t)B * (size_t)T * sizeof *tgt);
    fm_status st = NULL;
    if (!win || !inp || !tgt)
        st = FM_ERR(FM_ERR_NOMEM, "out of memory for the evaluation's token buffers (%d windows of "
                                  "%d tokens)", B, T + 1);
    const int64_t chunks = (K + B - 1) / B;
    for (int64_t c = comm->rank; !st && c < chunks; c += comm->size) {
        const int64_t first = c * B;
        const int n = (int)(first + B <= K ? B : K - first);
        st = fm_reader_read_eval(reader, o->split, K, first, n, win);
        for (int b = 0; !st && b < n; b++) {
            memcpy(inp + (size_t)b * T, win + (size_t)b * W, (size_t)T * sizeof *inp);
            memcpy(tgt + (size_t)b * T, win + (size_t)b * W + 1, (size_t)T * sizeof *tgt);
        }
        if (!st) st = fm_model_forward(model, inp, tgt, n, T, NULL);
        if (!st) st = fm_model_sequence_losses(model, loss + first);
    }
    free(win);
    free(inp);
    free(tgt);
    return st;
}

fm_status fm_evaluate(fm_model *model, fm_reader *reader, const fm_comm *comm,
                      const fm_eval_options *o, fm_eval_result *out)
{
    memset(out, 0, sizeof *out);
    const int T = fm_reader_seq_len(reader);
    const int64_t n = fm_reader_split_windows(reader, o->split);
    const char *split = o->split == FM_SPLIT_VAL ? "val" : "train";
    fm_status st = NULL;
    if (o->windows < 1 || o->batch < 1 || o->batch > fm_model_get_max_batch(model))
        st = FM_ERR(FM_ERR_USAGE, "evaluation of %" PRId64 " windows in batches of %d: expected "
                                  "at least 1 window and a batch of 1..%d (the model's max_batch)",
                    o->windows, o->batch, fm_model_get_max_batch(model));
    else if (T != fm_model_get_shape(model)->max_seq_len)
        st = FM_ERR(FM_ERR_INTERNAL, "evaluation reader has seq_len %d, the model %d", T,
                    fm_model_get_shape(model)->max_seq_len);
    else if (n < 1) /* the reader's message names the file and what to do */
        st = fm_reader_read_eval(reader, o->split, 1, 0, 0, NULL);
    if (st) return fm_status_collective(st); /* every rank has the same options and file */

    const int64_t K = o->windows < n ? o->windows : n;
    double *loss = calloc((size_t)K, sizeof *loss);
    if (!loss)
        st = FM_ERR(FM_ERR_NOMEM, "out of memory for the losses of %" PRId64 " %s windows", K,
                    split);
    if (!st) st = eval_chunks(model, reader, comm, o, K, loss);
    FM_TRY_GOTO(st, done, fm_comm_agree(comm->world, st));
    for (int64_t i = 0; i < K; i += SUM_PIECE) {
        int piece = (int)(K - i < SUM_PIECE ? K - i : SUM_PIECE);
        FM_TRY_GOTO(st, done, fm_comm_sum_doubles(comm, loss + i, piece));
    }
    double sum = 0.0;
    for (int64_t k = 0; k < K; k++) sum += loss[k];
    out->loss = sum / (double)K;
    out->windows = K;
    out->split_windows = n;
    out->tokens = K * (int64_t)T;
done:
    free(loss);
    return st;
}

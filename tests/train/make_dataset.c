/* make_dataset.c — writes the synthetic datasets of the training tests (fm_dataset_writer).
 *
 *   train_make_dataset PATH TASK SEQ_LEN TRAIN_DOCS VAL_DOCS SEED
 *
 * TASK "repeat": a stream in which every token repeats the token 3 places before it, except that
 * at each multiple of SEQ_LEN two new random tokens from an alphabet of 8 enter (at offsets 1 and 2;
 * offset 0 still continues the previous cycle). A training window (SEQ_LEN+1 tokens at a multiple of
 * SEQ_LEN) thus has exactly two unpredictable targets: the best possible mean loss is
 * 2 ln(8)/SEQ_LEN (0.13 at SEQ_LEN 32). Predicting the rest needs attention to the token three
 * places back: tests/train/test_learns.c trains the same rule in-process and shows that with the
 * attention or embedding backward broken the loss stays above 1.1 (the unordered set of earlier
 * tokens leaves two candidates). The rule is the same everywhere, so the validation loss falls with
 * the training loss (nothing to memorise).
 * TASK "stride": arithmetic progressions modulo 256 whose stride (1, 3, 5 or 7) changes every
 * SEQ_LEN tokens. Learnable to near zero on the training split, but a small model memorises it
 * rather than learning modular arithmetic (validation loss stays high); kept for loop tests.
 * TASK "random": uniform random tokens (nothing to learn; for runs that only exercise the loop).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/dataset.h"

static uint64_t next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static fm_status write_split(fm_dataset_writer *w, fm_dataset_split split, const char *task, int T,
                             long docs, uint64_t *rng)
{
    uint32_t *buf = malloc((size_t)T * sizeof *buf);
    FM_CHECK_ALLOC(buf, (size_t)T * sizeof *buf);
    uint32_t cur = (uint32_t)(next(rng) % 256), stride = 1;
    uint32_t carry[1] = {(uint32_t)(next(rng) % 8)};
    const uint32_t strides[4] = {1, 3, 5, 7};
    for (long d = 0; d < docs; d++) {
        if (strcmp(task, "stride") == 0) {
            buf[0] = cur = (cur + stride) % 256;
            stride = strides[next(rng) % 4];
            for (int i = 1; i < T; i++) buf[i] = cur = (cur + stride) % 256;
        } else if (strcmp(task, "repeat") == 0) {
            /* carry[0]: the token that continues the previous cycle at offset 0 */
            buf[0] = carry[0];
            for (int i = 1; i < T; i++)
                buf[i] = i <= 2 ? (uint32_t)(next(rng) % 8) : buf[i - 3];
            carry[0] = buf[T - 3]; /* the token 3 places before the next segment's first */
        } else {
            for (int i = 0; i < T; i++) buf[i] = (uint32_t)(next(rng) % 256);
        }
        fm_status st = fm_dataset_writer_append(w, split, buf, (size_t)T);
        if (st) {
            free(buf);
            return st;
        }
    }
    /* one more token so that (tokens - 1) / T == docs windows */
    buf[0] = strcmp(task, "repeat") == 0 ? carry[0] : (cur + stride) % 256;
    fm_status st = fm_dataset_writer_append(w, split, buf, 1);
    free(buf);
    return st;
}

int main(int argc, char **argv)
{
    if (argc != 7 || (strcmp(argv[2], "stride") != 0 && strcmp(argv[2], "random") != 0 &&
                      strcmp(argv[2], "repeat") != 0)) {
        fprintf(stderr, "usage: %s PATH repeat|stride|random SEQ_LEN TRAIN_DOCS VAL_DOCS SEED\n", argv[0]);
        return 2;
    }
    int T = atoi(argv[3]);
    if (T < 4) {
        fprintf(stderr, "SEQ_LEN must be at least 4\n");
        return 2;
    }
    long ntrain = atol(argv[4]), nval = atol(argv[5]);
    uint64_t rng = strtoull(argv[6], NULL, 10);
    fm_dataset_writer *w = NULL;
    fm_status st = fm_dataset_writer_open(argv[1], 256, 255, NULL, argv[2], &w);
    if (!st) st = write_split(w, FM_SPLIT_TRAIN, argv[2], T, ntrain, &rng);
    if (!st) st = write_split(w, FM_SPLIT_VAL, argv[2], T, nval, &rng);
    if (!st) st = fm_dataset_writer_close(&w);
    if (st) {
        fm_dataset_writer_free(&w);
        fm_status_print(st, stderr, 1);
        fm_status_free(&st);
        return 1;
    }
    return 0;
}

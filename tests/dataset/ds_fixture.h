/* ds_fixture.h — helpers for the dataset tests: make small dataset files whose token k of a split is
 * a known function of k, so a window read back names its own position. */
#ifndef FM_TEST_DS_FIXTURE_H
#define FM_TEST_DS_FIXTURE_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "data/dataset.h"

/* Train token k = k % vocab, val token k = (vocab - 1 - k % vocab). */
static inline fm_status fixture_write(const char *path, uint64_t vocab, uint64_t ntrain, uint64_t nval,
                                      const fm_tokenizer *tok)
{
    fm_dataset_writer *w = NULL;
    FM_TRY(fm_dataset_writer_open(path, vocab, vocab - 1, tok, "test fixture", &w));
    uint32_t buf[4096];
    for (int s = 0; s < 2; s++) {
        uint64_t n = s ? nval : ntrain;
        for (uint64_t k = 0; k < n;) {
            size_t m = 0;
            for (; m < 4096 && k < n; m++, k++) buf[m] = (uint32_t)(s ? vocab - 1 - k % vocab : k % vocab);
            fm_status st = fm_dataset_writer_append(w, s ? FM_SPLIT_VAL : FM_SPLIT_TRAIN, buf, m);
            if (st) {
                fm_dataset_writer_free(&w);
                return st;
            }
        }
    }
    return fm_dataset_writer_close(&w);
}

#define FIX_OK(expr)                                              \
    do {                                                          \
        fm_status st_ = (expr);                                   \
        if (st_) fm_status_print(st_, stderr, 1);                 \
        assert_null(st_);                                         \
    } while (0)

#endif

/* fm_test.h — helpers shared by the CMocka tests. Include after <cmocka.h>. */
#ifndef FM_TEST_H
#define FM_TEST_H

#include <stdio.h>

#include "core/status.h"

/* Evaluates a call returning fm_status; on error prints the message and traceback and fails the test. */
#define FM_ASSERT_OK(expr)                                                       \
    do {                                                                         \
        fm_status fm_assert_st_ = (expr);                                        \
        if (fm_assert_st_) {                                                     \
            fm_status_print(fm_assert_st_, stderr, 1);                           \
            fm_status_free(&fm_assert_st_);                                      \
            fail_msg("%s failed", #expr);                                        \
        }                                                                        \
    } while (0)

#endif /* FM_TEST_H */

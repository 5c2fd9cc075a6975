/* cuda_test_util.h — helpers shared by the CUDA tests: the GPU check (exit 77 = skipped, with the
 * registry's reason) and a status check. */
#ifndef FM_CUDA_TEST_UTIL_H
#define FM_CUDA_TEST_UTIL_H

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kernels.h"

/* CTest's SKIP_RETURN_CODE for the CUDA tests */
#define FM_TEST_SKIP 77

/* Returns FM_TEST_SKIP after a message when no GPU is visible, 0 otherwise. */
static inline int cuda_test_need_gpu(const char *test)
{
    if (!fm_backend_available("cuda")) {
        printf("%s: this build has no CUDA backend: skipped\n", test);
        return FM_TEST_SKIP;
    }
    const char *why = NULL;
    int n = fm_backend_device_count("cuda", &why);
    if (n <= 0) {
        printf("%s: no CUDA device visible (%s): skipped\n", test, why ? why : "no reason given");
        return FM_TEST_SKIP;
    }
    printf("%s: %d CUDA device(s) visible, using device 0\n", test, n);
    return 0;
}

static inline void cuda_test_ok(fm_status st)
{
    if (st) {
        fm_status_print(st, stderr, 1);
        fm_status_free(&st);
        fail_msg("unexpected error");
    }
}

#endif /* FM_CUDA_TEST_UTIL_H */

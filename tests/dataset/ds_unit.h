/* ds_unit.h — CMocka helpers shared by the single-process dataset tests (test_dataset.c,
 * test_damage.c). Include after <mpi.h>, <cmocka.h> and "dataset/ds_fixture.h". */
#ifndef FM_TEST_DS_UNIT_H
#define FM_TEST_DS_UNIT_H

#include <stdio.h>
#include <string.h>

#include "data/reader.h"

/* Reader options for this process alone (MPI_COMM_SELF): windows of T tokens, G per global step,
 * this reader's slice [first, first+count), data seed, read-ahead on (1) or off (0). */
static inline fm_reader_options fixture_opts(int T, int64_t G, int64_t first, int64_t count,
                                             uint64_t seed, int ra)
{
    fm_reader_options o;
    memset(&o, 0, sizeof o);
    o.comm = MPI_COMM_SELF;
    o.seq_len = T;
    o.global_windows = G;
    o.first = first;
    o.count = count;
    o.seed = seed;
    o.read_ahead = ra;
    return o;
}

/* Asserts that `st` is an error of class `code` whose message contains `needle` (NULL: any message),
 * printing the message when it is not; frees st. */
static inline void fixture_expect_error(fm_status st, fm_code code, const char *needle)
{
    assert_non_null(st);
    if (fm_status_code(st) != code || (needle && !strstr(fm_status_message(st), needle)))
        fprintf(stderr, "unexpected error (wanted code %d containing '%s'): %s\n", (int)code,
                needle ? needle : "", fm_status_message(st));
    assert_int_equal(fm_status_code(st), code);
    if (needle) assert_non_null(strstr(fm_status_message(st), needle));
    fm_status_free(&st);
}

#endif /* FM_TEST_DS_UNIT_H */

/* test_schedule.c — learning-rate schedules: warmup, cosine, linear, constant, WSD, config checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <cmocka.h>

#include "train/schedule.h"

static fm_schedule_spec spec(fm_schedule kind)
{
    fm_schedule_spec s = {kind, 1e-3, 1e-4, 10, 110, 0.2};
    return s;
}

static void assert_close(double a, double b)
{
    if (fabs(a - b) > 1e-12 * (fabs(b) + 1e-30)) fail_msg("%.17g != %.17g", a, b);
}

static void test_warmup(void **state)
{
    (void)state;
    for (int k = FM_SCHED_COSINE; k <= FM_SCHED_WSD; k++) {
        fm_schedule_spec s = spec((fm_schedule)k);
        assert_close(fm_schedule_lr(&s, 0), 1e-4);  /* (0+1)/10 of the peak: never zero */
        assert_close(fm_schedule_lr(&s, 4), 5e-4);
        assert_close(fm_schedule_lr(&s, 9), 1e-3);  /* the last warmup step reaches the peak */
        for (int i = 1; i < 10; i++) assert_true(fm_schedule_lr(&s, i) > fm_schedule_lr(&s, i - 1));
    }
}

static void test_cosine(void **state)
{
    (void)state;
    fm_schedule_spec s = spec(FM_SCHED_COSINE);
    assert_close(fm_schedule_lr(&s, 10), 1e-3);     /* decay starts at the peak */
    assert_close(fm_schedule_lr(&s, 109), 1e-4);    /* the last step uses min_lr */
    /* midpoint of [10, 109] is 59.5: steps 59 and 60 straddle (lr+min)/2 symmetrically */
    double mid = 0.5 * (1e-3 + 1e-4);
    assert_close(fm_schedule_lr(&s, 59) + fm_schedule_lr(&s, 60), 2 * mid);
    double p = (40.0 - 10.0) / 99.0;
    assert_close(fm_schedule_lr(&s, 40), 1e-4 + 0.9e-3 * 0.5 * (1 + cos(3.14159265358979323846 * p)));
    for (int i = 11; i < 110; i++) assert_true(fm_schedule_lr(&s, i) < fm_schedule_lr(&s, i - 1));
    assert_close(fm_schedule_lr(&s, 500), 1e-4);    /* beyond the end: final value */
}

static void test_linear(void **state)
{
    (void)state;
    fm_schedule_spec s = spec(FM_SCHED_LINEAR);
    assert_close(fm_schedule_lr(&s, 10), 1e-3);
    assert_close(fm_schedule_lr(&s, 109), 1e-4);
    /* equal decrements */
    double d1 = fm_schedule_lr(&s, 20) - fm_schedule_lr(&s, 21);
    double d2 = fm_schedule_lr(&s, 80) - fm_schedule_lr(&s, 81);
    assert_true(fabs(d1 - d2) < 1e-15);
    assert_close(d1, 0.9e-3 / 99.0);
}

static void test_constant(void **state)
{
    (void)state;
    fm_schedule_spec s = spec(FM_SCHED_CONSTANT);
    for (int i = 10; i < 120; i++) assert_close(fm_schedule_lr(&s, i), 1e-3);
}

static void test_wsd(void **state)
{
    (void)state;
    fm_schedule_spec s = spec(FM_SCHED_WSD); /* 110 steps, decay over the last 22: steps 88..109 */
    for (int i = 10; i <= 88; i++) assert_close(fm_schedule_lr(&s, i), 1e-3);
    assert_true(fm_schedule_lr(&s, 89) < 1e-3);
    assert_close(fm_schedule_lr(&s, 109), 1e-4);
    assert_close(fm_schedule_lr(&s, 99), 1e-3 - 0.9e-3 * (11.0 / 21.0));
    for (int i = 89; i < 110; i++) assert_true(fm_schedule_lr(&s, i) < fm_schedule_lr(&s, i - 1));
    s.decay_fraction = 0.0; /* no decay: stays at the peak */
    assert_close(fm_schedule_lr(&s, 109), 1e-3);
}

static void test_no_warmup(void **state)
{
    (void)state;
    fm_schedule_spec s = spec(FM_SCHED_COSINE);
    s.warmup_steps = 0;
    assert_close(fm_schedule_lr(&s, 0), 1e-3);
    assert_close(fm_schedule_lr(&s, 109), 1e-4);
    s.total_steps = 1; /* a single step: warmup-less, decayed to min_lr */
    assert_null(fm_schedule_check(&s));
    assert_true(isfinite(fm_schedule_lr(&s, 0)));
}

static void expect_config_error(fm_schedule_spec s)
{
    fm_status st = fm_schedule_check(&s);
    assert_non_null(st);
    assert_int_equal(fm_status_code(st), FM_ERR_CONFIG);
    fm_status_free(&st);
}

static void test_check(void **state)
{
    (void)state;
    fm_schedule_spec s = spec(FM_SCHED_COSINE);
    assert_null(fm_schedule_check(&s));
    s.min_lr = 2e-3;
    expect_config_error(s);
    s = spec(FM_SCHED_COSINE);
    s.warmup_steps = 200;
    expect_config_error(s);
    s = spec(FM_SCHED_WSD);
    s.decay_fraction = 1.5;
    expect_config_error(s);
    s = spec(FM_SCHED_LINEAR);
    s.total_steps = 0;
    expect_config_error(s);
    assert_string_equal(fm_schedule_name(FM_SCHED_WSD), "wsd");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_warmup),   cmocka_unit_test(test_cosine),
        cmocka_unit_test(test_linear),   cmocka_unit_test(test_constant),
        cmocka_unit_test(test_wsd),      cmocka_unit_test(test_no_warmup),
        cmocka_unit_test(test_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

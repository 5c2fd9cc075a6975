/* test_metrics_signals.c — metrics files and console lines; stop signals; the wall-time sources. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "train/metrics.h"
#include "train/signals.h"
#include "core/util.h"

static char *slurp(const char *path)
{
    char *d = NULL;
    size_t n = 0;
    fm_status st = fm_util_read_file(path, &d, &n);
    if (st) {
        fm_status_print(st, stderr, 0);
        fm_status_free(&st);
        return NULL;
    }
    return d;
}

static void test_metrics_files(void **state)
{
    (void)state;
    char dir[] = "/tmp/fm_metrics_testXXXXXX";
    assert_non_null(mkdtemp(dir));
    char run[256], path[300];
    snprintf(run, sizeof run, "%s/run/sub", dir); /* parents are created */
    char *cbuf = NULL;
    size_t clen = 0;
    FILE *console = open_memstream(&cbuf, &clen);
    fm_metrics_options o = {run, console, 0, 200};
    fm_metrics *m = NULL;
    assert_null(fm_metrics_open(&o, &m));
    fm_metrics_step r = {10,   40960, 3.25, 6e-4, 1.5, 12.5, 32768.0, 0.25,
                         1.25, 95.0,  0,    0,    0,   0,    0,       0};
    assert_null(fm_metrics_log_step(m, &r));
    r.step = 20;
    r.loss = NAN; /* JSON has no NaN: null */
    r.mfu = -1;   /* unknown: null */
    r.skipped = 1;
    assert_null(fm_metrics_log_step(m, &r));
    /* The straggler report: 4 ranks, rank 3 the slowest. */
    r.step = 30;
    r.loss = 3.0;
    r.mfu = 0.25;
    r.skipped = 0;
    r.ranks = 4;
    r.compute_ms_min = 10.25;
    r.compute_ms_median = 10.5;
    r.compute_ms_max = 14.75;
    r.slowest_rank = 3;
    assert_null(fm_metrics_log_step(m, &r));
    r.ranks = 0;
    assert_null(fm_metrics_log_eval(m, 20, 81920, 2.75, 2.5));
    fm_metrics_printf(m, "hello %d", 42);
    fm_metrics_close(&m);
    assert_null(m);
    fclose(console);

    assert_non_null(strstr(cbuf, "step  10/200 | loss 3.2500 | lr 6.00e-04 | norm 1.500 | 12.5 ms/step"));
    assert_non_null(strstr(cbuf, "32.8k tok/s | MFU 25.0% | ETA 1m35s\n"));
    assert_non_null(strstr(cbuf, "SKIPPED\n"));
    assert_non_null(strstr(cbuf, "ETA 1m35s | ranks 10.2-14.8 ms (slowest 3)\n"));
    assert_non_null(strstr(cbuf, "eval at step 20: val loss 2.7500\n"));
    assert_non_null(strstr(cbuf, "hello 42\n"));
    free(cbuf);

    snprintf(path, sizeof path, "%s/metrics.jsonl", run);
    char *j = slurp(path);
    assert_non_null(j);
    assert_string_equal(j,
        "{\"type\":\"train\",\"step\":10,\"tokens\":40960,\"loss\":3.25,\"lr\":0.0006,\"grad_norm\":1.5,"
        "\"step_ms\":12.5,\"tokens_per_s\":32768,\"mfu\":0.25,\"elapsed_s\":1.25,\"skipped\":0}\n"
        "{\"type\":\"train\",\"step\":20,\"tokens\":40960,\"loss\":null,\"lr\":0.0006,\"grad_norm\":1.5,"
        "\"step_ms\":12.5,\"tokens_per_s\":32768,\"mfu\":null,\"elapsed_s\":1.25,\"skipped\":1}\n"
        "{\"type\":\"train\",\"step\":30,\"tokens\":40960,\"loss\":3,\"lr\":0.0006,\"grad_norm\":1.5,"
        "\"step_ms\":12.5,\"tokens_per_s\":32768,\"mfu\":0.25,\"elapsed_s\":1.25,\"skipped\":0,"
        "\"compute_ms_min\":10.25,\"compute_ms_median\":10.5,\"compute_ms_max\":14.75,"
        "\"slowest_rank\":3}\n"
        "{\"type\":\"eval\",\"step\":20,\"tokens\":81920,\"val_loss\":2.75,\"elapsed_s\":2.5}\n");
    free(j);
    snprintf(path, sizeof path, "%s/train.log", run);
    j = slurp(path);
    assert_non_null(j);
    assert_non_null(strstr(j, "Z hello 42\n"));
    assert_non_null(strstr(j, "Z eval at step 20"));
    free(j);

    /* Appending on reopen (a resumed run continues the same files). */
    o.console = NULL; /* the memstream above is closed */
    assert_null(fm_metrics_open(&o, &m));
    assert_null(fm_metrics_log_eval(m, 30, 1, 1.0, 3.0));
    fm_metrics_close(&m);
    snprintf(path, sizeof path, "%s/metrics.jsonl", run);
    j = slurp(path);
    int lines = 0;
    for (char *p = j; *p; p++) lines += *p == '\n';
    assert_int_equal(lines, 5);
    free(j);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static void test_metrics_tty_and_null(void **state)
{
    (void)state;
    char *cbuf = NULL;
    size_t clen = 0;
    FILE *console = open_memstream(&cbuf, &clen);
    fm_metrics_options o = {NULL, console, 1, 5};
    fm_metrics *m = NULL;
    assert_null(fm_metrics_open(&o, &m));
    fm_metrics_step r = {1, 1, 1, 1, 1, 1, 1, 0.5, 1, 1, 0, 0, 0, 0, 0, 0};
    assert_null(fm_metrics_log_step(m, &r));
    r.step = 2;
    assert_null(fm_metrics_log_step(m, &r));
    fm_metrics_printf(m, "done");
    fm_metrics_close(&m);
    fclose(console);
    /* progress lines rewrite in place; the message first ends the line */
    assert_memory_equal(cbuf, "\rstep 1/5 |", 11);
    assert_non_null(strstr(cbuf, "\033[K\rstep 2/5 |"));
    assert_non_null(strstr(cbuf, "\033[K\ndone\n"));
    free(cbuf);
    /* a NULL metrics object (ranks other than 0) is a no-op */
    assert_null(fm_metrics_log_step(NULL, &r));
    assert_null(fm_metrics_log_eval(NULL, 1, 1, 1, 1));
    fm_metrics_printf(NULL, "x");
    fm_metrics_close(NULL);
}

static void test_metrics_open_error(void **state)
{
    (void)state;
    fm_metrics_options o = {"/proc/self/not_a_dir_fmtrain", NULL, 0, 1};
    fm_metrics *m = NULL;
    fm_status st = fm_metrics_open(&o, &m);
    assert_non_null(st);
    assert_null(m);
    assert_non_null(strstr(fm_status_message(st), "/proc/self/not_a_dir_fmtrain"));
    fm_status_free(&st);
}

static void test_durations_and_flops(void **state)
{
    (void)state;
    char b[32];
    assert_string_equal(fm_metrics_format_duration(45.2, b, sizeof b), "45s");
    assert_string_equal(fm_metrics_format_duration(723, b, sizeof b), "12m03s");
    assert_string_equal(fm_metrics_format_duration(3 * 3600 + 7 * 60 + 5, b, sizeof b), "3h07m");
    assert_string_equal(fm_metrics_format_duration(-1, b, sizeof b), "?");
    assert_string_equal(fm_metrics_format_duration(NAN, b, sizeof b), "?");
    /* the FLOPs per token are the model family's: tests/model (fm_model_flops_per_token) */
    double peak = 0;
    fm_backend *be = NULL;
    assert_null(fm_backend_create("cpu", 1, -1, &be));
    assert_null(fm_metrics_measure_peak_flops(be, &peak));
    fm_backend_free(&be);
    assert_true(peak > 1e8 && peak < 1e15); /* any real CPU core does more than 0.1 GFLOP/s */
}

static void test_signals(void **state)
{
    (void)state;
    assert_null(fm_signals_install());
    assert_int_equal(fm_signals_pending(), 0);
    raise(SIGUSR1);
    assert_int_equal(fm_signals_pending(), SIGUSR1);
    raise(SIGTERM); /* the first signal is kept */
    assert_int_equal(fm_signals_pending(), SIGUSR1);
    assert_string_equal(fm_signals_name(SIGUSR1), "SIGUSR1");
    fm_signals_clear();
    assert_int_equal(fm_signals_pending(), 0);
    raise(SIGTERM); /* handled: the process survives */
    assert_int_equal(fm_signals_pending(), SIGTERM);
    assert_string_equal(fm_signals_name(SIGTERM), "SIGTERM");
    fm_signals_restore();
    struct sigaction cur;
    sigaction(SIGUSR1, NULL, &cur);
    assert_true(cur.sa_handler == SIG_DFL);
}

static void test_walltime(void **state)
{
    (void)state;
    double t = 0;
    assert_int_equal(fm_signals_parse_slurm_time("2026-11-22T07:35:00", &t), 0);
    struct tm tm = {0};
    tm.tm_year = 126;
    tm.tm_mon = 10;
    tm.tm_mday = 22;
    tm.tm_hour = 7;
    tm.tm_min = 35;
    tm.tm_isdst = -1;
    assert_true(fabs(t - (double)mktime(&tm)) < 0.5);
    assert_int_equal(fm_signals_parse_slurm_time("N/A", &t), -1);
    assert_int_equal(fm_signals_parse_slurm_time("UNLIMITED", &t), -1);
    assert_int_equal(fm_signals_parse_slurm_time("2026-13-01T00:00:00", &t), -1);

    char src[128];
    double end = -1;
    unsetenv("SLURM_JOB_END_TIME");
    unsetenv("SLURM_JOB_ID");
    unsetenv("FMTRAIN_END_TIME");
    assert_null(fm_signals_job_end_time(&end, src, sizeof src));
    assert_true(end == 0.0);
    assert_non_null(strstr(src, "none"));
    setenv("SLURM_JOB_END_TIME", "1790000000", 1);
    assert_null(fm_signals_job_end_time(&end, src, sizeof src));
    assert_true(end == 1790000000.0);
    assert_string_equal(src, "SLURM_JOB_END_TIME");
    setenv("FMTRAIN_END_TIME", "1790000100", 1); /* takes precedence */
    assert_null(fm_signals_job_end_time(&end, src, sizeof src));
    assert_true(end == 1790000100.0);
    setenv("FMTRAIN_END_TIME", "tomorrow", 1);
    fm_status st = fm_signals_job_end_time(&end, src, sizeof src);
    assert_non_null(st);
    assert_int_equal(fm_status_code(st), FM_ERR_CONFIG);
    assert_non_null(strstr(fm_status_message(st), "FMTRAIN_END_TIME"));
    fm_status_free(&st);
    unsetenv("FMTRAIN_END_TIME");
    unsetenv("SLURM_JOB_END_TIME");
    /* A job id that squeue does not know: no limit, not an error. */
    setenv("SLURM_JOB_ID", "999999999", 1);
    assert_null(fm_signals_job_end_time(&end, src, sizeof src));
    assert_true(end == 0.0);
    assert_non_null(strstr(src, "none"));
    unsetenv("SLURM_JOB_ID");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metrics_files),    cmocka_unit_test(test_metrics_tty_and_null),
        cmocka_unit_test(test_metrics_open_error), cmocka_unit_test(test_durations_and_flops),
        cmocka_unit_test(test_signals),          cmocka_unit_test(test_walltime),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

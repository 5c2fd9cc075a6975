/* test_cpu_threads.c — the CPU backend's "one pool" claim: while the kernels run matrix products,
 * at most `threads` threads of this process are running (OpenMP workers and BLAS threads together).
 * A monitor thread samples the state of every task in /proc/self/task during a stream of GEMMs.
 * A control shows that the monitor does see oversubscription when it happens. */
#define _GNU_SOURCE
#include <dirent.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "cpu/cpu_kernels.h"
#include "kernels.h"

typedef struct monitor {
    atomic_int stop;
    int max_running; /* most tasks in state R at one sample, the monitor excluded */
    int max_tasks;   /* most tasks seen */
} monitor;

static int sample(pid_t self, int *tasks)
{
    DIR *d = opendir("/proc/self/task");
    if (!d) return -1;
    int running = 0, n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        n++;
        if ((pid_t)atoi(e->d_name) == self) continue;
        char path[300], buf[512];
        snprintf(path, sizeof path, "/proc/self/task/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        size_t len = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[len] = '\0';
        char *p = strrchr(buf, ')'); /* "tid (comm) S ..." ; comm may contain spaces */
        if (p && p[1] == ' ' && p[2] == 'R') running++;
    }
    closedir(d);
    *tasks = n;
    return running;
}

static void *monitor_main(void *arg)
{
    monitor *m = arg;
    pid_t self = (pid_t)syscall(SYS_gettid);
    while (!atomic_load(&m->stop)) {
        int tasks = 0, r = sample(self, &tasks);
        if (r > m->max_running) m->max_running = r;
        if (tasks > m->max_tasks) m->max_tasks = tasks;
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

/* Runs GEMM-heavy kernels on `threads` threads for about `seconds` under the monitor. */
static void run_monitored(int threads, double seconds, monitor *m)
{
    const int N = 256, C = 768, OC = 2304;
    float *x = calloc((size_t)N * C, 4), *w = calloc((size_t)OC * C, 4), *o = calloc((size_t)N * OC, 4);
    float *dw = calloc((size_t)OC * C, 4), *dx = calloc((size_t)N * C, 4), *b = calloc(OC, 4);
    float *db = calloc(OC, 4);
    assert_true(x && w && o && dw && dx && b && db);
    for (size_t i = 0; i < (size_t)N * C; i++) x[i] = (float)(i % 7) * 0.1f;
    for (size_t i = 0; i < (size_t)OC * C; i++) w[i] = (float)(i % 5) * 0.1f;
    fm_backend *be = NULL;
    fm_status st = fm_backend_create("cpu", threads, -1, &be);
    assert_null(st);
    assert_int_equal(be->threads, threads);
    memset(m, 0, sizeof *m);
    /* Warm-up first: a pthreads OpenBLAS starts its worker threads when the library is loaded and
     * they spin (yielding) for about 0.15 s before they sleep for good (they never receive work);
     * the claim tested is about the steady state (0.5 s leaves margin on a busy machine). */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    double el = 0.0;
    do {
        be->ops->matmul_forward(be, o, x, w, b, N, C, OC);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        el = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    } while (el < 0.5);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, monitor_main, m), 0);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        be->ops->matmul_forward(be, o, x, w, b, N, C, OC);
        be->ops->matmul_backward(be, dx, dw, db, o, x, w, N, C, OC);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        el = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    } while (el < seconds);
    atomic_store(&m->stop, 1);
    pthread_join(th, NULL);
    fm_backend_free(&be);
    assert_null(be);
    free(x), free(w), free(o), free(dw), free(dx), free(b), free(db);
    print_message("threads=%d: at most %d running threads during GEMMs, %d tasks in the process\n",
                  threads, m->max_running, m->max_tasks);
}

/* Runs first, before any OpenMP team of more than one thread exists in this process. */
static void test_one_thread(void **state)
{
    (void)state;
    monitor m;
    run_monitored(1, 0.5, &m);
    assert_true(m.max_running >= 1);
    assert_true(m.max_running <= 1);
}

static void test_two_threads(void **state)
{
    (void)state;
    monitor m;
    run_monitored(2, 0.5, &m);
    assert_true(m.max_running >= 1);
    assert_true(m.max_running <= 2);
}

static void *spin_main(void *arg)
{
    atomic_int *stop = arg;
    volatile unsigned long x = 0;
    while (!atomic_load(stop)) x++;
    return NULL;
}

/* Control: three busy threads are seen as three running threads, so the checks above can fail. */
static void test_monitor_sees_oversubscription(void **state)
{
    (void)state;
    atomic_int stop = 0;
    pthread_t sp[3];
    for (int i = 0; i < 3; i++) assert_int_equal(pthread_create(&sp[i], NULL, spin_main, &stop), 0);
    monitor m;
    memset(&m, 0, sizeof m);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, monitor_main, &m), 0);
    struct timespec ts = {0, 300000000};
    nanosleep(&ts, NULL);
    atomic_store(&m.stop, 1);
    pthread_join(th, NULL);
    atomic_store(&stop, 1);
    for (int i = 0; i < 3; i++) pthread_join(sp[i], NULL);
    assert_true(m.max_running >= 3);
}

static void test_blas_info(void **state)
{
    (void)state;
    const char *info = fm_backend_blas_info();
    assert_non_null(info);
    print_message("BLAS: %s\n", info);
    assert_true(strstr(info, "one BLAS thread per tile") != NULL || strstr(info, "CBLAS") != NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_thread),
        cmocka_unit_test(test_two_threads),
        cmocka_unit_test(test_monitor_sees_oversubscription),
        cmocka_unit_test(test_blas_info),
    };
    return cmocka_run_group_tests_name("cpu_threads", tests, NULL, NULL);
}

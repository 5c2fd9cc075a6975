/* test_cpu_threads.c — the CPU backend's "one pool" claim: while the kernels run matrix products,
 * at most `threads` threads of this process are running (OpenMP workers, BLAS threads and, in builds
 * with oneDNN, oneDNN's matmul primitives together), in fp32 and in bf16. A monitor thread samples the
 * state of every task in /proc/self/task during a stream of GEMMs and also counts the tasks: the GEMM
 * library creates none beyond those the OpenMP pool and the BLAS library had before it ran. The
 * process maps exactly one OpenMP runtime (oneDNN's libgomp is fmtrain's). A control shows that the
 * monitor does see oversubscription when it happens. */
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

/* Tasks of this process now (/proc/self/task entries). */
static int task_count(void)
{
    int n = 0;
    sample(-1, &n);
    return n;
}

/* Runs GEMM-heavy kernels on `threads` threads in `precision` for about `seconds` under the monitor;
 * *tasks_before: the process's tasks after the warm-up's OpenMP regions and BLAS initialisation but
 * before the first matrix product, the monitor not yet started. */
static void run_monitored(int threads, unsigned precision, double seconds, monitor *m,
                          int *tasks_before)
{
    const int N = 256, C = 768, OC = 2304;
    float *x = calloc((size_t)N * C, 4), *w = calloc((size_t)OC * C, 4), *o = calloc((size_t)N * OC, 4);
    float *dw = calloc((size_t)OC * C, 4), *dx = calloc((size_t)N * C, 4), *b = calloc(OC, 4);
    float *db = calloc(OC, 4);
    assert_true(x && w && o && dw && dx && b && db);
    for (size_t i = 0; i < (size_t)N * C; i++) x[i] = (float)(i % 7) * 0.1f;
    for (size_t i = 0; i < (size_t)OC * C; i++) w[i] = (float)(i % 5) * 0.1f;
    fm_backend *be = NULL;
    fm_status st = fm_backend_create_precision("cpu", threads, -1, precision, &be);
    assert_null(st);
    assert_int_equal(be->threads, threads);
    memset(m, 0, sizeof *m);
    /* the inputs in the instance's precision (bf16: the matmul's act arguments are bf16) */
    float *xa = x, *wa = w;
    if (be->ops->act_bytes == 2) {
        xa = calloc((size_t)N * C, 2), wa = calloc((size_t)OC * C, 2);
        assert_true(xa && wa);
        be->ops->to_bf16(be, xa, x, (size_t)N * C); /* an OpenMP region of `threads` threads */
        be->ops->to_bf16(be, wa, w, (size_t)OC * C);
    }
    be->ops->residual_forward(be, dw, w, w, (size_t)OC * C); /* the pool exists before any GEMM */
    *tasks_before = task_count();
    /* Warm-up first: a pthreads OpenBLAS starts its worker threads when the library is loaded and
     * they spin (yielding) for about 0.15 s before they sleep for good (they never receive work);
     * the claim tested is about the steady state (0.5 s leaves margin on a busy machine). */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    double el = 0.0;
    do {
        be->ops->matmul_forward(be, o, xa, wa, b, N, C, OC);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        el = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    } while (el < 0.5);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, monitor_main, m), 0);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        be->ops->matmul_forward(be, o, xa, wa, b, N, C, OC);
        be->ops->matmul_backward(be, dx, dw, db, o, xa, wa, N, C, OC);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        el = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    } while (el < seconds);
    atomic_store(&m->stop, 1);
    pthread_join(th, NULL);
    assert_null(be->ops->sync(be));
    if (xa != x) free(xa), free(wa);
    print_message("threads=%d, %s: at most %d running threads during GEMMs; %d tasks in the process "
                  "(%d before the first GEMM, then the monitor)\n", threads,
                  fm_precision_name(be->precision), m->max_running, m->max_tasks, *tasks_before);
    fm_backend_free(&be);
    assert_null(be);
    free(x), free(w), free(o), free(dw), free(dx), free(b), free(db);
}

/* `threads` threads in `precision`: at most that many running, no task created by the GEMMs */
static void check_pool(int threads, unsigned precision)
{
    monitor m;
    int before = 0;
    run_monitored(threads, precision, 0.5, &m, &before);
    assert_true(m.max_running >= 1);
    assert_true(m.max_running <= threads);
    assert_true(m.max_tasks <= before + 1); /* + the monitor */
}

/* Runs first, before any OpenMP team of more than one thread exists in this process. */
static void test_one_thread(void **state)
{
    (void)state;
    check_pool(1, FM_PRECISION_FP32);
}

static void test_two_threads(void **state)
{
    (void)state;
    check_pool(2, FM_PRECISION_FP32);
}

/* bf16 (oneDNN's bf16 matmul) on the same pool; skipped in a build whose CPU backend has no bf16 */
static void test_two_threads_bf16(void **state)
{
    (void)state;
    fm_backend *be = NULL;
    assert_null(fm_backend_create("cpu", 1, -1, &be));
    const int has = (be->ops->caps.precisions & FM_PRECISION_BF16) != 0;
    fm_backend_free(&be);
    if (!has) {
        print_message("[ SKIPPED  ] no bf16 in this build (%s)\n", fm_backend_gemm_info());
        return;
    }
    check_pool(1, FM_PRECISION_BF16);
    check_pool(2, FM_PRECISION_BF16);
}

/* One OpenMP runtime in the process: the GEMM library's (oneDNN's libgomp) is fmtrain's, and no
 * other (Intel's libiomp5, LLVM's libomp) is loaded beside it. */
static void test_one_openmp_runtime(void **state)
{
    (void)state;
    FILE *f = fopen("/proc/self/maps", "r");
    assert_non_null(f);
    char line[1024], first[1024] = "";
    int others = 0, gomp_files = 0;
    while (fgets(line, sizeof line, f)) {
        const char *path = strchr(line, '/');
        if (!path) continue;
        if (strstr(path, "libgomp")) {
            if (!first[0]) snprintf(first, sizeof first, "%s", path);
            gomp_files += strcmp(first, path) != 0; /* another libgomp file */
        }
        others += strstr(path, "libiomp") != NULL || strstr(path, "libomp.so") != NULL;
    }
    fclose(f);
    first[strcspn(first, "\n")] = '\0';
    print_message("OpenMP runtime: %s; GEMM: %s\n", first[0] ? first : "(none mapped)",
                  fm_backend_gemm_info());
    assert_true(first[0] != '\0');
    assert_int_equal(gomp_files, 0);
    assert_int_equal(others, 0);
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
    const char *info = fm_backend_blas_info(), *gemm = fm_backend_gemm_info();
    assert_non_null(info);
    assert_non_null(gemm);
    print_message("BLAS: %s\nGEMM: %s\n", info, gemm);
    assert_true(strstr(info, "one BLAS thread") != NULL || strstr(info, "CBLAS") != NULL);
#if FM_HAVE_ONEDNN
    assert_non_null(strstr(gemm, "oneDNN"));
    assert_non_null(strstr(gemm, "OpenMP runtime")); /* the pool it runs on */
#else
    assert_non_null(strstr(gemm, "CBLAS"));
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_thread),
        cmocka_unit_test(test_two_threads),
        cmocka_unit_test(test_two_threads_bf16),
        cmocka_unit_test(test_one_openmp_runtime),
        cmocka_unit_test(test_monitor_sees_oversubscription),
        cmocka_unit_test(test_blas_info),
    };
    return cmocka_run_group_tests_name("cpu_threads", tests, NULL, NULL);
}

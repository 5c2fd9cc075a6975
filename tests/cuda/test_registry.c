/* test_registry.c — the registry's view of the CUDA backend, runs everywhere (with or without a
 * GPU): a build with the backend lists "cuda" after "cpu" and as available; the device count says WHY
 * it is 0 (the CUDA error text, passed on, not dropped); "cuda" is a GPU backend and `device = auto`
 * picks it exactly when a device is visible; with no visible device fm_backend_create("cuda") fails with
 * FM_ERR_DEVICE and a message that says so and gives the reason (never a crash); with a device it
 * succeeds with the CUDA capabilities and a description naming the device, and an out-of-range
 * ordinal fails with FM_ERR_DEVICE. Precisions: caps list fp32 and bf16; precision = auto gives bf16
 * exactly on sm_80 and newer, and the bf16 table has act_bytes 2.
 * sync_check (GPU only, last: it leaves the device context broken on purpose): with
 * FM_CUDA_SYNC_CHECK=1 an op that faults (residual_forward writing through a bad device pointer) is
 * named in the error that the next sync returns. */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include "cuda_test_util.h"

static void test_registry(void **state)
{
    (void)state;
    assert_true(fm_backend_available("cuda"));
    assert_true(fm_backend_count() >= 2);
    assert_string_equal(fm_backend_name(0), "cpu");
    assert_string_equal(fm_backend_name(1), "cuda");
    const char *why = "unset";
    const int n = fm_backend_device_count("cuda", &why);
    assert_true(fm_backend_uses_gpus("cuda"));
    assert_false(fm_backend_uses_gpus("cpu"));
    assert_string_equal(fm_backend_auto(), n > 0 ? "cuda" : "cpu");
    assert_int_equal(n, fm_backend_device_count("cuda", NULL));
    printf("  visible CUDA devices: %d%s%s\n", n, n > 0 ? "" : ": ", n > 0 ? "" : why);
    fm_backend *be = NULL;
    fm_status st = fm_backend_create("cuda", 1, 0, &be);
    if (n <= 0) {
        assert_non_null(why);
        assert_true(strlen(why) > 0);
        assert_non_null(st);
        assert_null(be);
        printf("  without a GPU: %s\n", fm_status_message(st));
        assert_int_equal(fm_status_code(st), FM_ERR_DEVICE);
        assert_non_null(strstr(fm_status_message(st), "no CUDA device"));
        assert_non_null(strstr(fm_status_message(st), why)); /* the reason reaches the user */
        fm_status_free(&st);
    } else {
        assert_null(why);
        cuda_test_ok(st);
        assert_non_null(be);
        assert_string_equal(be->ops->name, "cuda");
        assert_int_equal(be->device, 0);
        assert_int_equal(be->ops->caps.host_memory, 0);
        assert_int_equal(be->ops->caps.async, 1);
        assert_int_equal(be->ops->caps.peak_from_matmul, 0);
        char d[256] = "";
        be->ops->describe(be, d, sizeof d);
        printf("  device: %s\n", d);
        assert_non_null(strstr(d, "device 0"));
        assert_non_null(strstr(d, "sm_"));
        assert_non_null(strstr(d, "SMs"));
        assert_int_equal(be->ops->caps.precisions, FM_PRECISION_FP32 | FM_PRECISION_BF16);
        const char *sm = strstr(d, "sm_");
        const int major = sm ? atoi(sm + 3) / 10 : 0;
        fm_backend_free(&be);
        cuda_test_ok(fm_backend_create_precision("cuda", 1, 0, FM_PRECISION_AUTO, &be));
        printf("  precision = auto on sm_%dx: %s (%s)\n", major, fm_precision_name(be->precision),
               be->ops->name);
        assert_int_equal(be->precision, major >= 8 ? FM_PRECISION_BF16 : FM_PRECISION_FP32);
        assert_int_equal(be->ops->act_bytes, major >= 8 ? 2 : 4);
        fm_backend_free(&be);
        st = fm_backend_create_precision("cuda", 1, 0, FM_PRECISION_BF16, &be);
        if (major >= 8) {
            cuda_test_ok(st);
            assert_int_equal(be->ops->act_bytes, 2);
            fm_backend_free(&be);
        } else {
            assert_int_equal(fm_status_code(st), FM_ERR_CONFIG);
            fm_status_free(&st);
        }
        assert_null(be);
        st = fm_backend_create("cuda", 1, n, &be);
        assert_non_null(st);
        assert_int_equal(fm_status_code(st), FM_ERR_DEVICE);
        fm_status_free(&st);
    }
}

static void test_sync_check(void **state)
{
    (void)state;
    if (fm_backend_device_count("cuda", NULL) <= 0) {
        printf("  no GPU: nothing to check\n");
        return;
    }
    setenv("FM_CUDA_SYNC_CHECK", "1", 1);
    fm_backend *be = NULL;
    cuda_test_ok(fm_backend_create("cuda", 1, 0, &be));
    float *a = NULL;
    cuda_test_ok(be->ops->alloc(be, (void **)&a, 64 * sizeof(float)));
    be->ops->residual_forward(be, (float *)(uintptr_t)0x10, a, a, 64); /* faults on purpose */
    fm_status st = be->ops->sync(be);
    assert_non_null(st);
    printf("  the faulting op reported as: %s\n", fm_status_message(st));
    assert_non_null(strstr(fm_status_message(st), "residual_forward"));
    assert_non_null(strstr(fm_status_message(st), "FM_CUDA_SYNC_CHECK"));
    fm_status_free(&st);
    /* the context is unusable now: teardown's CUDA calls fail quietly; no further device work */
    be->ops->free(be, a);
    fm_backend_free(&be);
    unsetenv("FM_CUDA_SYNC_CHECK");
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_registry),
                                       cmocka_unit_test(test_sync_check)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}

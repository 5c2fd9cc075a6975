/* test_registry.c — the registry's view of the CUDA backend, runs everywhere (with or without a
 * GPU): a build with the backend lists "cuda" after "cpu" and as available; the device count says WHY
 * it is 0 (the CUDA error text, passed on, not dropped); "cuda" is a GPU backend and `device = auto`
 * picks it exactly when a device is visible; with no visible device fm_backend_create("cuda") fails with
 * FM_ERR_DEVICE and a message that says so and gives the reason (never a crash); with a device it
 * succeeds with the CUDA capabilities and a description naming the device, and an out-of-range
 * ordinal fails with FM_ERR_DEVICE. */
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
        fm_backend_free(&be);
        assert_null(be);
        st = fm_backend_create("cuda", 1, n, &be);
        assert_non_null(st);
        assert_int_equal(fm_status_code(st), FM_ERR_DEVICE);
        fm_status_free(&st);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_registry)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}

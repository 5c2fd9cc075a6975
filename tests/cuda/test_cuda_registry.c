/* test_cuda_registry.c — the registry's view of the CUDA backend, runs everywhere (with or without a
 * GPU): a build with the backend lists "cuda" as available; with no visible device
 * fm_backend_create("cuda") fails with FM_ERR_DEVICE and a message that says so (never a crash);
 * with a device it succeeds, and an out-of-range ordinal fails with FM_ERR_DEVICE. */
#include "cuda_test_util.h"

static void test_registry(void **state)
{
    (void)state;
    assert_true(fm_backend_available("cuda"));
    const int n = fm_backend_cuda_device_count();
    printf("  visible CUDA devices: %d\n", n);
    fm_backend *be = NULL;
    fm_status st = fm_backend_create("cuda", 1, 0, &be);
    if (n <= 0) {
        assert_non_null(st);
        assert_null(be);
        printf("  without a GPU: %s\n", fm_status_message(st));
        assert_int_equal(fm_status_code(st), FM_ERR_DEVICE);
        assert_non_null(strstr(fm_status_message(st), "no CUDA device"));
        fm_status_free(&st);
    } else {
        cuda_test_ok(st);
        assert_non_null(be);
        assert_string_equal(be->ops->name, "cuda");
        assert_int_equal(be->device, 0);
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

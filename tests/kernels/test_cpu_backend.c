/* test_cpu_backend.c — the CPU backend behind the registry: creation and errors, the operation table
 * (every entry present and wired to the kernel of the same name), memory operations. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cpu/cpu_kernels.h"
#include "kernels.h"

static void test_create_and_errors(void **state)
{
    (void)state;
    assert_true(fm_backend_available("cpu"));
    assert_false(fm_backend_available("tpu"));
    fm_backend *be = NULL;
    fm_status st = fm_backend_create("tpu", 2, -1, &be);
    assert_non_null(st);
    assert_int_equal(fm_status_code(st), FM_ERR_CONFIG);
    assert_non_null(strstr(fm_status_message(st), "tpu"));
    assert_null(be);
    fm_status_free(&st);
    if (!fm_backend_available("cuda")) {
        st = fm_backend_create("cuda", 2, 0, &be);
        assert_non_null(st);
        assert_non_null(strstr(fm_status_message(st), "CUDA"));
        fm_status_free(&st);
    }
    st = fm_backend_create("cpu", 3, -1, &be);
    assert_null(st);
    assert_non_null(be);
    assert_string_equal(be->ops->name, "cpu");
    assert_int_equal(be->ops->act_bytes, 4);
    assert_int_equal(be->threads, 3);
    assert_int_equal(be->device, -1);
    assert_non_null(be->impl);
    fm_backend_free(&be);
    assert_null(be);
    fm_backend_free(&be); /* safe on NULL */
}

static void test_table_complete(void **state)
{
    (void)state;
    fm_backend *be = NULL;
    assert_null(fm_backend_create("cpu", 1, -1, &be));
    const fm_kernel_ops *o = be->ops;
    const int present[] = {
        o->alloc != NULL,
        o->free != NULL,
        o->upload != NULL,
        o->download != NULL,
        o->zero != NULL,
        o->sync != NULL,
        o->encoder_forward != NULL,
        o->encoder_backward != NULL,
        o->layernorm_forward != NULL,
        o->layernorm_backward != NULL,
        o->residual_forward != NULL,
        o->matmul_forward != NULL,
        o->matmul_backward != NULL,
        o->gelu_forward != NULL,
        o->gelu_backward != NULL,
        o->attention_forward != NULL,
        o->attention_backward != NULL,
        o->attention_decode != NULL,
        o->softmax_xent_forward != NULL,
        o->softmax_xent_backward != NULL,
        o->adamw_update != NULL,
        o->sum_squares != NULL};
    for (size_t i = 0; i < sizeof present / sizeof present[0]; i++) assert_true(present[i]);
    assert_int_equal(sizeof present / sizeof present[0], 22);
    fm_backend_free(&be);
}

static void test_memory(void **state)
{
    (void)state;
    fm_backend *be = NULL;
    assert_null(fm_backend_create("cpu", 2, -1, &be));
    const size_t sizes[] = {0, 1, 100, (size_t)5 << 20}; /* the last one is zeroed in parallel */
    for (size_t k = 0; k < 4; k++) {
        const size_t n = sizes[k];
        unsigned char *p = NULL;
        assert_null(be->ops->alloc(be, (void **)&p, n));
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % 64, 0);
        for (size_t i = 0; i < n; i++)
            if (p[i]) fail_msg("alloc(%zu): byte %zu not zero", n, i);
        unsigned char *h = malloc(n + 1), *back = malloc(n + 1);
        assert_true(h && back);
        for (size_t i = 0; i < n; i++) h[i] = (unsigned char)(i * 31 + 7);
        assert_null(be->ops->upload(be, p, h, n));
        assert_null(be->ops->download(be, back, p, n));
        assert_memory_equal(back, h, n);
        if (n > 2) {
            be->ops->zero(be, p + 1, n - 2); /* a sub-range: the ends keep their values */
            assert_int_equal(p[0], h[0]);
            assert_int_equal(p[n - 1], h[n - 1]);
            for (size_t i = 1; i + 1 < n; i++)
                if (p[i]) fail_msg("zero(%zu): byte %zu not zero", n - 2, i);
        }
        assert_null(be->ops->sync(be));
        be->ops->free(be, p);
        free(h), free(back);
    }
    fm_backend_free(&be);
}

/* The table forwards to the typed kernel with the same name (spot check on three ops whose
 * arguments differ in type and order). */
static void test_table_forwards(void **state)
{
    (void)state;
    fm_backend *be = NULL;
    assert_null(fm_backend_create("cpu", 2, -1, &be));
    enum { N = 6, C = 10, OC = 7, V = 5, Vp = 8 };
    float x[N * C], w[OC * C], b[OC], o1[N * OC], o2[N * OC];
    for (int i = 0; i < N * C; i++) x[i] = (float)((i * 7) % 11) * 0.1f - 0.5f;
    for (int i = 0; i < OC * C; i++) w[i] = (float)((i * 5) % 13) * 0.1f - 0.6f;
    for (int i = 0; i < OC; i++) b[i] = 0.01f * (float)i;
    be->ops->matmul_forward(be, o1, x, w, b, N, C, OC);
    fm_cpu_matmul_forward(be, o2, x, w, b, N, C, OC);
    assert_memory_equal(o1, o2, sizeof o1);
    float lg[N * Vp], ls1[N], ls2[N], lse1[N], lse2[N];
    int32_t tg[N] = {0, 1, 2, 3, 4, 0};
    for (int i = 0; i < N * Vp; i++) lg[i] = (float)(i % 9) * 0.3f;
    be->ops->softmax_xent_forward(be, ls1, lse1, lg, tg, N, V, Vp);
    fm_cpu_softmax_xent_forward(be, ls2, lse2, lg, tg, N, V, Vp);
    assert_memory_equal(ls1, ls2, sizeof ls1);
    assert_memory_equal(lse1, lse2, sizeof lse1);
    double s1 = 0.0, s2 = 0.0;
    be->ops->sum_squares(be, &s1, x, N * C);
    fm_cpu_sum_squares(be, &s2, x, N * C);
    assert_true(s1 == s2 && s1 > 0.0);
    fm_backend_free(&be);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_and_errors),
        cmocka_unit_test(test_table_complete),
        cmocka_unit_test(test_memory),
        cmocka_unit_test(test_table_forwards),
    };
    return cmocka_run_group_tests_name("cpu_backend", tests, NULL, NULL);
}

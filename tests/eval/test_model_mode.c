/* test_model_mode.c — the forward-only model (FM_MODEL_EVAL) that `fmtrain eval` runs: the same
 * losses bit for bit as a training model with the same parameters (its arena keeps two blocks'
 * activations instead of L), per-sequence losses whose mean is the forward's mean loss, no
 * gradients and no backward, a smaller memory figure than training's, and the errors. */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fm_test.h"

#include "kernels.h"
#include "model/model.h"

static const fm_model_shape SHAPE = {3, 2, 32, 16, 100, .arch = "gpt2"}; /* L, NH, C, maxT, V */
enum { B = 4, T = 16 };

static void make_ids(uint64_t seed, int n, int V, int32_t *ids)
{
    uint64_t s = seed;
    for (int i = 0; i < n; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        ids[i] = (int32_t)((s >> 33) % (uint64_t)V);
    }
}

static void test_same_losses_as_training(void **state)
{
    (void)state;
    fm_backend *be = NULL;
    FM_ASSERT_OK(fm_backend_create("cpu", 2, 0, &be));
    fm_model *train = NULL, *eval = NULL;
    FM_ASSERT_OK(fm_model_create(&SHAPE, be, B, &train));
    FM_ASSERT_OK(fm_model_create_opts(
        &SHAPE, be, &(fm_model_options){.mode = FM_MODEL_EVAL, .max_batch = B}, &eval));
    assert_int_equal(fm_model_get_mode(eval), FM_MODEL_EVAL);
    FM_ASSERT_OK(fm_model_init_weights(train, 11));
    FM_ASSERT_OK(fm_model_set_params(eval, fm_model_params(train)));
    assert_null(fm_model_grads(eval));

    int32_t tok[B * T], tgt[B * T];
    make_ids(1, B * T, SHAPE.vocab_size, tok);
    make_ids(2, B * T, SHAPE.vocab_size, tgt);
    for (int b = 1; b <= B; b++) { /* every batch size up to max_batch */
        float lt = 0, le = 0;
        double st[B], se[B];
        FM_ASSERT_OK(fm_model_forward(train, tok, tgt, b, T, &lt));
        FM_ASSERT_OK(fm_model_forward(eval, tok, tgt, b, T, &le));
        assert_memory_equal(&lt, &le, sizeof lt);
        FM_ASSERT_OK(fm_model_sequence_losses(train, st));
        FM_ASSERT_OK(fm_model_sequence_losses(eval, se));
        assert_memory_equal(st, se, (size_t)b * sizeof *st);
        double mean = 0;
        for (int i = 0; i < b; i++) mean += se[i];
        mean /= b;
        assert_true(fabs(mean - (double)le) <= 1e-6 * fabs(mean));
        assert_true(mean > 3.0 && mean < 6.0); /* about ln(100) at init */
        /* the logits too */
        float la[128], lb[128];
        FM_ASSERT_OK(fm_model_logits(train, b - 1, T - 1, la));
        FM_ASSERT_OK(fm_model_logits(eval, b - 1, T - 1, lb));
        assert_memory_equal(la, lb, sizeof la);
    }
    /* a shorter T uses the first rows of every view */
    float lt = 0, le = 0;
    FM_ASSERT_OK(fm_model_forward(train, tok, tgt, 2, 5, &lt));
    FM_ASSERT_OK(fm_model_forward(eval, tok, tgt, 2, 5, &le));
    assert_memory_equal(&lt, &le, sizeof lt);
    fm_model_free(&train);
    fm_model_free(&eval);
    fm_backend_free(&be);
}

static void test_memory_and_errors(void **state)
{
    (void)state;
    fm_model_memory_info tr, ev;
    FM_ASSERT_OK(fm_model_memory_estimate(&SHAPE, B, 4, &tr));
    FM_ASSERT_OK(fm_model_memory_estimate_opts(
        &SHAPE, &(fm_model_options){.mode = FM_MODEL_EVAL, .max_batch = B}, 4, &ev));
    assert_int_equal(ev.param_bytes, tr.param_bytes);
    assert_int_equal(ev.grad_bytes, 0);
    assert_int_equal(ev.optim_bytes, 0);
    assert_int_equal(ev.kv_bytes, 0);
    assert_int_equal(ev.logits_bytes, tr.logits_bytes);
    assert_true(ev.act_bytes < tr.act_bytes); /* 2 of 3 layers' activations */
    assert_true(ev.scratch_bytes < tr.scratch_bytes); /* no dres, no backward scratch */
    assert_true(ev.total_bytes < tr.total_bytes);

    fm_backend *be = NULL;
    FM_ASSERT_OK(fm_backend_create("cpu", 1, 0, &be));
    fm_model *m = NULL;
    FM_ASSERT_OK(fm_model_create_opts(
        &SHAPE, be, &(fm_model_options){.mode = FM_MODEL_EVAL, .max_batch = B}, &m));
    fm_model_memory_info got;
    fm_model_memory(m, &got);
    assert_memory_equal(&got, &ev, sizeof got);
    double s[B];
    fm_status st = fm_model_sequence_losses(m, s); /* nothing yet */
    assert_int_equal(fm_status_code(st), FM_ERR_INTERNAL);
    fm_status_free(&st);
    int32_t tok[B * T];
    make_ids(3, B * T, SHAPE.vocab_size, tok);
    FM_ASSERT_OK(fm_model_forward(m, tok, tok, B, T, NULL));
    st = fm_model_backward(m, 1.0f, NULL, NULL);
    assert_int_equal(fm_status_code(st), FM_ERR_INTERNAL);
    assert_non_null(strstr(fm_status_message(st), "forward-only"));
    fm_status_free(&st);
    FM_ASSERT_OK(fm_model_forward(m, tok, NULL, B, T, NULL)); /* logits only: no losses */
    st = fm_model_sequence_losses(m, s);
    assert_int_equal(fm_status_code(st), FM_ERR_INTERNAL);
    fm_status_free(&st);
    st = fm_model_decode(m, tok, 1, 1, NULL);
    assert_int_equal(fm_status_code(st), FM_ERR_INTERNAL);
    fm_status_free(&st);
    fm_model_free(&m);
    /* a decode model still cannot run a loss */
    FM_ASSERT_OK(fm_model_create_opts(
        &SHAPE, be, &(fm_model_options){.mode = FM_MODEL_DECODE, .max_batch = 1}, &m));
    st = fm_model_forward(m, tok, tok, 1, T, NULL);
    assert_int_equal(fm_status_code(st), FM_ERR_INTERNAL);
    fm_status_free(&st);
    fm_model_free(&m);
    fm_backend_free(&be);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_losses_as_training),
        cmocka_unit_test(test_memory_and_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

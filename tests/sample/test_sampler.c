/* test_sampler.c — the KV-cache sampler against the model's full forward pass. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "fm_test.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "model/model.h"
#include "model/sampler.h"

typedef struct fixture {
    fm_backend *be;
    fm_model *model;
    fm_sampler *s;
} fixture;

static const fm_model_shape shape = {2, 2, 32, 16, 50, "gpt2"}; /* L, NH, C, maxT, V (Vp = 128) */

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    FM_ASSERT_OK(fm_backend_create("cpu", 1, -1, &f->be));
    FM_ASSERT_OK(fm_model_create(&shape, f->be, 1, &f->model));
    FM_ASSERT_OK(fm_model_init_weights(f->model, 7));
    FM_ASSERT_OK(fm_sampler_create(f->model, &f->s));
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    fm_sampler_free(&f->s);
    fm_model_free(&f->model);
    fm_backend_free(&f->be);
    free(f);
    return 0;
}

static void test_logits_match_forward(void **state)
{
    fixture *f = *state;
    int32_t tokens[16];
    for (int t = 0; t < 16; t++) tokens[t] = (int32_t)((t * 37 + 11) % shape.vocab_size);
    FM_ASSERT_OK(fm_model_forward(f->model, tokens, NULL, 1, 16, NULL));
    int Vp = fm_model_get_padded_vocab(f->model);
    float *full = malloc((size_t)Vp * sizeof *full), *inc = malloc((size_t)shape.vocab_size * sizeof *inc);
    fm_sampler_reset(f->s);
    double maxdiff = 0.0, maxabs = 0.0;
    for (int t = 0; t < 16; t++) {
        FM_ASSERT_OK(fm_model_logits(f->model, 0, t, full));
        FM_ASSERT_OK(fm_sampler_feed(f->s, tokens[t], inc));
        assert_int_equal(fm_sampler_position(f->s), t + 1);
        for (int v = 0; v < shape.vocab_size; v++) {
            double d = fabs((double)full[v] - inc[v]);
            if (d > maxdiff) maxdiff = d;
            if (fabs(full[v]) > maxabs) maxabs = fabs(full[v]);
        }
    }
    print_message("max |logit| %.4g, max |KV-cache - full forward| %.3g\n", maxabs, maxdiff);
    assert_true(maxabs > 1e-3);               /* the comparison is not between zeros */
    assert_true(maxdiff <= 1e-5 * (1.0 + maxabs));
    /* full cache: an error, not a write past the end */
    fm_status st = fm_sampler_feed(f->s, 1, inc);
    assert_non_null(st);
    fm_status_free(&st);
    fm_sampler_reset(f->s);
    st = fm_sampler_feed(f->s, shape.vocab_size, inc); /* out of range */
    assert_non_null(st);
    assert_int_equal(fm_status_code(st), FM_ERR_INPUT);
    fm_status_free(&st);
    free(full);
    free(inc);
}

/* Greedy generation with the cache equals argmax of a full forward over the growing prefix. */
static void test_greedy_matches_recompute(void **state)
{
    fixture *f = *state;
    int32_t seq[16] = {3, 14, 15};
    int np = 3, ngen = 10;
    int32_t gen[10];
    fm_sampler_options o = {ngen, 0.0, 0, 1};
    FM_ASSERT_OK(fm_sampler_generate(f->s, seq, np, &o, NULL, NULL, gen));
    int Vp = fm_model_get_padded_vocab(f->model);
    float *full = malloc((size_t)Vp * sizeof *full);
    for (int n = 0; n < ngen; n++) {
        int T = np + n;
        FM_ASSERT_OK(fm_model_forward(f->model, seq, NULL, 1, T, NULL));
        FM_ASSERT_OK(fm_model_logits(f->model, 0, T - 1, full));
        int best = 0;
        for (int v = 1; v < shape.vocab_size; v++)
            if (full[v] > full[best]) best = v;
        assert_int_equal(gen[n], best);
        seq[T] = best;
    }
    free(full);
    /* top_k = 1 at any temperature is greedy */
    int32_t gen2[10];
    fm_sampler_options o2 = {ngen, 1.5, 1, 99};
    FM_ASSERT_OK(fm_sampler_generate(f->s, seq, np, &o2, NULL, NULL, gen2));
    assert_memory_equal(gen, gen2, sizeof gen);
}

static fm_status count_tokens(void *ctx, int32_t tok)
{
    (void)tok;
    (*(int *)ctx)++;
    return NULL;
}

/* Sampling: reproducible per seed, seeds differ, the window slides past maxT. */
static void test_sampling_and_window(void **state)
{
    fixture *f = *state;
    int32_t prompt[20];
    for (int i = 0; i < 20; i++) prompt[i] = i; /* longer than maxT: only the last 16 are used */
    int32_t a[40], b[40], c[40];
    int calls = 0;
    fm_sampler_options o = {40, 1.0, 20, 123};
    FM_ASSERT_OK(fm_sampler_generate(f->s, prompt, 20, &o, count_tokens, &calls, a));
    assert_int_equal(calls, 40);
    FM_ASSERT_OK(fm_sampler_generate(f->s, prompt, 20, &o, NULL, NULL, b));
    assert_memory_equal(a, b, sizeof a);
    o.seed = 124;
    FM_ASSERT_OK(fm_sampler_generate(f->s, prompt, 20, &o, NULL, NULL, c));
    assert_memory_not_equal(a, c, sizeof a);
    for (int i = 0; i < 40; i++) assert_true(a[i] >= 0 && a[i] < shape.vocab_size);
    /* errors */
    fm_status st = fm_sampler_generate(f->s, prompt, 0, &o, NULL, NULL, a);
    assert_non_null(st);
    assert_int_equal(fm_status_code(st), FM_ERR_USAGE);
    fm_status_free(&st);
    o.temperature = -1;
    st = fm_sampler_generate(f->s, prompt, 3, &o, NULL, NULL, a);
    assert_non_null(st);
    fm_status_free(&st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_logits_match_forward),
        cmocka_unit_test(test_greedy_matches_recompute),
        cmocka_unit_test(test_sampling_and_window),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

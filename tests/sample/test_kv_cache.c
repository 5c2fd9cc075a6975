/* test_kv_cache.c — decoding with the KV cache (fm_model_decode) against the model's full forward,
 * and the sampler on top of it: greedy output equals the argmax of a full forward over the same
 * context, step by step and across the window slide; same seed, same text; errors. */
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
    fm_model *train;  /* training model: the full forward */
    fm_model *dec;    /* decode model with the same weights, max_batch 2 */
    fm_sampler *s;
} fixture;

static const fm_model_shape shape = {2, 2, 32, 16, 50, .arch = "gpt2"}; /* L, NH, C, maxT, V (Vp = 128) */

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    FM_ASSERT_OK(fm_backend_create("cpu", 1, -1, &f->be));
    FM_ASSERT_OK(fm_model_create(&shape, f->be, 2, &f->train));
    FM_ASSERT_OK(fm_model_init_weights(f->train, 7));
    const fm_model_options o = {.mode = FM_MODEL_DECODE, .max_batch = 2};
    FM_ASSERT_OK(fm_model_create_opts(&shape, f->be, &o, &f->dec));
    size_t n = fm_model_num_params(f->train);
    float *p = malloc(n * sizeof *p);
    assert_non_null(p);
    FM_ASSERT_OK(fm_model_get_params(f->train, p));
    FM_ASSERT_OK(fm_model_set_params(f->dec, p));
    free(p);
    FM_ASSERT_OK(fm_sampler_create(f->dec, &f->s));
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    fm_sampler_free(&f->s);
    fm_model_free(&f->dec);
    fm_model_free(&f->train);
    fm_backend_free(&f->be);
    free(f);
    return 0;
}

typedef struct diff {
    double maxdiff, maxabs;
} diff;

/* Compares V logits of a decode call with the full forward's logits of (b, t). */
static void compare(fixture *f, const float *dec, int b, int t, diff *d)
{
    float full[128];
    FM_ASSERT_OK(fm_model_logits(f->train, b, t, full));
    for (int v = 0; v < shape.vocab_size; v++) {
        double x = fabs((double)full[v] - dec[v]);
        if (x > d->maxdiff) d->maxdiff = x;
        if (fabs(full[v]) > d->maxabs) d->maxabs = fabs(full[v]);
    }
}

static void assert_close(const diff *d, const char *what)
{
    print_message("%s: max |logit| %.4g, max |decode - full forward| %.3g\n", what, d->maxabs,
                  d->maxdiff);
    assert_true(d->maxabs > 1e-3); /* the comparison is not between zeros */
    assert_true(d->maxdiff <= 1e-5 * (1.0 + d->maxabs));
}

/* Decoded logits equal the full forward's: one token per call, in uneven chunks (a prefill
 * included), and for two sequences at once. */
static void test_decode_matches_forward(void **state)
{
    fixture *f = *state;
    const int T = 16, Vp = 128;
    int32_t tok[2 * 16];
    for (int i = 0; i < 2 * T; i++) tok[i] = (int32_t)((i * 37 + 11) % shape.vocab_size);
    float dec[2 * 128];

    /* one sequence, one token per call */
    FM_ASSERT_OK(fm_model_forward(f->train, tok, NULL, 1, T, NULL));
    diff d1 = {0, 0};
    fm_model_decode_reset(f->dec);
    for (int t = 0; t < T; t++) {
        FM_ASSERT_OK(fm_model_decode(f->dec, &tok[t], 1, 1, dec));
        assert_int_equal(fm_model_decode_position(f->dec), t + 1);
        compare(f, dec, 0, t, &d1);
    }
    assert_close(&d1, "one token per call");

    /* chunks 5 (prefill), 1, 10: the last position of each */
    diff d2 = {0, 0};
    fm_model_decode_reset(f->dec);
    const int chunks[3] = {5, 1, 10};
    int pos = 0;
    for (int k = 0; k < 3; k++) {
        FM_ASSERT_OK(fm_model_decode(f->dec, tok + pos, 1, chunks[k], dec));
        pos += chunks[k];
        compare(f, dec, 0, pos - 1, &d2);
    }
    assert_close(&d2, "chunks 5, 1, 10");

    /* two sequences: (2,7) then (2,1) tokens; logits (2,Vp) of each last position */
    FM_ASSERT_OK(fm_model_forward(f->train, tok, NULL, 2, 8, NULL));
    diff d3 = {0, 0};
    int32_t first[2 * 7], next[2];
    for (int b = 0; b < 2; b++) {
        memcpy(first + b * 7, tok + b * 8, 7 * sizeof *first);
        next[b] = tok[b * 8 + 7];
    }
    fm_model_decode_reset(f->dec);
    FM_ASSERT_OK(fm_model_decode(f->dec, first, 2, 7, dec));
    for (int b = 0; b < 2; b++) compare(f, dec + b * Vp, b, 6, &d3);
    FM_ASSERT_OK(fm_model_decode(f->dec, next, 2, 1, dec));
    for (int b = 0; b < 2; b++) compare(f, dec + b * Vp, b, 7, &d3);
    assert_close(&d3, "two sequences");
    /* a different B before a reset is refused */
    fm_status st = fm_model_decode(f->dec, next, 1, 1, dec);
    assert_int_equal(fm_status_code(st), FM_ERR_INTERNAL);
    fm_status_free(&st);

    /* the same calls give bit-identical logits */
    float again[2 * 128];
    fm_model_decode_reset(f->dec);
    FM_ASSERT_OK(fm_model_decode(f->dec, first, 2, 7, again));
    FM_ASSERT_OK(fm_model_decode(f->dec, next, 2, 1, again));
    assert_memory_equal(dec, again, sizeof again);
}

static void test_decode_errors(void **state)
{
    fixture *f = *state;
    int32_t tok[16] = {0};
    float logits[128];
    fm_model_decode_reset(f->dec);
    FM_ASSERT_OK(fm_model_decode(f->dec, tok, 1, 16, NULL)); /* the cache is full */
    fm_status st = fm_model_decode(f->dec, tok, 1, 1, logits);
    assert_int_equal(fm_status_code(st), FM_ERR_USAGE);
    assert_non_null(strstr(fm_status_message(st), "KV cache is full"));
    fm_status_free(&st);
    assert_int_equal(fm_model_decode_position(f->dec), 16);
    fm_model_decode_reset(f->dec);
    tok[1] = shape.vocab_size; /* out of range: named, nothing appended */
    st = fm_model_decode(f->dec, tok, 1, 2, logits);
    assert_int_equal(fm_status_code(st), FM_ERR_INPUT);
    assert_non_null(strstr(fm_status_message(st), "tokens[0][1]"));
    fm_status_free(&st);
    assert_int_equal(fm_model_decode_position(f->dec), 0);
    tok[1] = 0;
    st = fm_model_decode(f->dec, tok, 3, 1, logits); /* B > max_batch */
    assert_non_null(st);
    fm_status_free(&st);
    /* each kind of model refuses the other's calls */
    st = fm_model_decode(f->train, tok, 1, 1, logits);
    assert_int_equal(fm_status_code(st), FM_ERR_INTERNAL);
    fm_status_free(&st);
    st = fm_model_forward(f->dec, tok, tok, 1, 4, NULL);
    assert_int_equal(fm_status_code(st), FM_ERR_INTERNAL);
    fm_status_free(&st);
    st = fm_model_backward(f->dec, 1.0f, NULL, NULL);
    assert_non_null(st);
    fm_status_free(&st);
    assert_null(fm_model_grads(f->dec));
    st = fm_model_get_grads(f->dec, logits);
    assert_non_null(st);
    fm_status_free(&st);
    fm_model_zero_grads(f->dec); /* nothing to zero, no crash */
    fm_sampler *s = NULL;
    st = fm_sampler_create(f->train, &s);
    assert_int_equal(fm_status_code(st), FM_ERR_INTERNAL);
    assert_null(s);
    fm_status_free(&st);
}

static size_t up64(size_t x) { return (x + 63) / 64 * 64; }

/* A decode model's memory: the estimate equals what create allocated, and the formula of
 * docs/model.md written out independently (GPT-2). Initialisation does not depend on the mode. */
static void test_decode_memory_and_init(void **state)
{
    fixture *f = *state;
    fm_model_memory_info got, want;
    const fm_model_options o = {.mode = FM_MODEL_DECODE, .max_batch = 2};
    fm_model_memory(f->dec, &got);
    FM_ASSERT_OK(fm_model_memory_estimate_opts(&shape, &o, 4, &want));
    assert_memory_equal(&got, &want, sizeof got);
    assert_string_equal(fm_model_arch(f->dec), "gpt2");
    assert_int_equal(fm_model_get_mode(f->dec), FM_MODEL_DECODE);

    const size_t B = 3, T = 17, C = 33, L = 3, NH = 3, Vp = 1024, e = 4, N = B * T; /* fp32: every row e bytes */
    const fm_model_shape odd = {(int)L, (int)NH, (int)C, (int)T, 1001, .arch = "gpt2"};
    const fm_model_options o3 = {.mode = FM_MODEL_DECODE, .max_batch = (int)B};
    FM_ASSERT_OK(fm_model_memory_estimate_opts(&odd, &o3, (int)e, &got));
    const size_t layer = 5 * up64(N * C * e) + up64(3 * N * C * e) + 2 * up64(4 * N * C * e) +
                         4 * up64(N * 4) + up64(NH * N * 4);
    assert_int_equal(got.grad_bytes, 0);
    assert_int_equal(got.optim_bytes, 0);
    assert_int_equal(got.act_bytes, up64(N * 4) /* tokens */ + up64(N * C * e) /* x0 */ +
                                        2 * layer /* two sets */ + up64(C * e) + 2 * 64 /* head */);
    assert_int_equal(got.logits_bytes, up64(B * Vp * e));
    assert_int_equal(got.scratch_bytes, up64(N * C * e)); /* dln; dres, dbig are backward's */
    assert_int_equal(got.kv_bytes, 2 * L * up64(B * T * C * e));
    assert_int_equal(got.total_bytes, got.param_bytes + got.act_bytes + got.logits_bytes +
                                          got.scratch_bytes + got.kv_bytes);

    /* the same seed gives the same weights in either mode */
    size_t n = fm_model_num_params(f->train);
    float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
    assert_non_null(a);
    assert_non_null(b);
    FM_ASSERT_OK(fm_model_init_weights(f->dec, 7));
    FM_ASSERT_OK(fm_model_get_params(f->train, a));
    FM_ASSERT_OK(fm_model_get_params(f->dec, b));
    assert_memory_equal(a, b, n * sizeof *a);
    free(a);
    free(b);
}

static int argmax(const float *x, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* Greedy generation equals argmax of a full forward over the context the sampler documents: the
 * growing prefix, and after the window fills, the last maxT/2 tokens (positions restart at 0). */
static void test_greedy_matches_recompute(void **state)
{
    fixture *f = *state;
    const int maxT = shape.max_seq_len, np = 3, ngen = 40; /* slides twice */
    const int32_t prompt[3] = {3, 14, 15};
    int32_t gen[40];
    fm_sampler_options o = {ngen, 0.0, 0, 1};
    FM_ASSERT_OK(fm_sampler_generate(f->s, prompt, np, &o, NULL, NULL, gen));
    int32_t ctx[16];
    int nctx = np;
    memcpy(ctx, prompt, sizeof prompt);
    float full[128];
    for (int n = 0; n < ngen; n++) {
        FM_ASSERT_OK(fm_model_forward(f->train, ctx, NULL, 1, nctx, NULL));
        FM_ASSERT_OK(fm_model_logits(f->train, 0, nctx - 1, full));
        const int best = argmax(full, shape.vocab_size);
        if (gen[n] != best) fail_msg("token %d: sampler %d, full forward %d", n, gen[n], best);
        if (nctx == maxT) {
            const int keep = maxT / 2;
            memmove(ctx, ctx + nctx - keep + 1, (size_t)(keep - 1) * sizeof *ctx);
            nctx = keep - 1;
        }
        ctx[nctx++] = best;
    }
    /* top_k = 1 at any temperature is greedy */
    int32_t gen2[40];
    fm_sampler_options o2 = {ngen, 1.5, 1, 99};
    FM_ASSERT_OK(fm_sampler_generate(f->s, prompt, np, &o2, NULL, NULL, gen2));
    assert_memory_equal(gen, gen2, sizeof gen);
}

static fm_status count_tokens(void *ctx, int32_t tok)
{
    (void)tok;
    (*(int *)ctx)++;
    return NULL;
}

static fm_status stop_at_third(void *ctx, int32_t tok)
{
    (void)tok;
    if (++*(int *)ctx == 3) return FM_ERR(FM_ERR_STOPPED, "stopped by the test");
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
    /* the callback's error stops generation */
    calls = 0;
    fm_status st = fm_sampler_generate(f->s, prompt, 20, &o, stop_at_third, &calls, c);
    assert_int_equal(fm_status_code(st), FM_ERR_STOPPED);
    assert_int_equal(calls, 3);
    fm_status_free(&st);
    /* errors */
    st = fm_sampler_generate(f->s, prompt, 0, &o, NULL, NULL, a);
    assert_non_null(st);
    assert_int_equal(fm_status_code(st), FM_ERR_USAGE);
    fm_status_free(&st);
    prompt[2] = shape.vocab_size;
    st = fm_sampler_generate(f->s, prompt, 3, &o, NULL, NULL, a);
    assert_int_equal(fm_status_code(st), FM_ERR_INPUT);
    fm_status_free(&st);
    o.temperature = -1;
    st = fm_sampler_generate(f->s, prompt, 3, &o, NULL, NULL, a);
    assert_non_null(st);
    fm_status_free(&st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode_matches_forward),
        cmocka_unit_test(test_decode_errors),
        cmocka_unit_test(test_decode_memory_and_init),
        cmocka_unit_test(test_greedy_matches_recompute),
        cmocka_unit_test(test_sampling_and_window),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

/* test_learns.c — the model, optimizer and kernels together learn a task that needs attention, and
 * the same training with a broken gradient does not: the evidence that the convergence test can fail.
 *
 * Task ("cycle", the same rule as train_make_dataset's "repeat"): each sequence of T+1 tokens starts
 * with three random tokens from an alphabet of 8 and then repeats them (x_i = x_{i-3}). The targets
 * x_1, x_2 are unpredictable (ln 8 each); every later one is the token three places back, so the best
 * mean loss is 2 ln(8)/T = 0.13 at T = 32. Predicting it needs attention that looks at positions:
 * a model whose attention cannot learn (attention backward broken: dqkv zeroed) only sees the
 * unordered set of earlier tokens and the current one, which leaves two candidates (about ln 2 per
 * position), and a model whose embedding gradient is broken stays near ln(V).
 * Trained in-process (no MPI) for 200 AdamW steps on fresh random sequences each step. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "fm_test.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "model/model.h"
#include "train/optimizer.h"

enum { B = 8, T = 32, STEPS = 200 };
static const fm_model_shape shape = {2, 2, 64, T, 16, .arch = "gpt2"}; /* L, NH, C, maxT, V */

/* The backend's attention backward, followed by zeroing its output: attention cannot learn. */
static const fm_kernel_ops *real_ops;
static void broken_attention_backward(fm_backend *be, float *dqkv, const float *dout,
                                      const float *qkv, const float *out, const float *lse, int b,
                                      int t, int c, int nh, int nkv)
{
    real_ops->attention_backward(be, dqkv, dout, qkv, out, lse, b, t, c, nh, nkv);
    real_ops->zero(be, dqkv, (size_t)b * t * 3 * c * sizeof(float));
}
/* The embedding backward does nothing: token and position embeddings never learn. */
static void broken_encoder_backward(fm_backend *be, float *dwte, float *dwpe, const float *dout,
                                    const int32_t *tokens, int b, int t, int c)
{
    (void)be, (void)dwte, (void)dwpe, (void)dout, (void)tokens, (void)b, (void)t, (void)c;
}

static uint64_t next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Mean training loss of the last 20 steps. `breakage`: 0 none, 1 attention, 2 embeddings. */
static double train(int breakage)
{
    fm_backend *be = NULL;
    FM_ASSERT_OK(fm_backend_create("cpu", 1, -1, &be));
    real_ops = be->ops;
    fm_kernel_ops ops = *be->ops;
    if (breakage == 1) ops.attention_backward = broken_attention_backward;
    if (breakage == 2) ops.encoder_backward = broken_encoder_backward;
    be->ops = &ops;
    fm_model *m = NULL;
    fm_optimizer *opt = NULL;
    FM_ASSERT_OK(fm_model_create(&shape, be, B, &m));
    FM_ASSERT_OK(fm_model_init_weights(m, 11));
    FM_ASSERT_OK(fm_optimizer_create(m, &opt));
    int32_t inp[B * T], tgt[B * T], seq[T + 1];
    uint64_t rng = 5;
    double tail = 0.0;
    for (int step = 0; step < STEPS; step++) {
        for (int b = 0; b < B; b++) {
            for (int i = 0; i <= T; i++) seq[i] = i < 3 ? (int32_t)(next(&rng) % 8) : seq[i - 3];
            memcpy(inp + b * T, seq, T * sizeof(int32_t));
            memcpy(tgt + b * T, seq + 1, T * sizeof(int32_t));
        }
        float loss = 0.0f;
        FM_ASSERT_OK(fm_model_forward(m, inp, tgt, B, T, &loss));
        FM_ASSERT_OK(fm_model_backward(m, 1.0f, NULL, NULL));
        double norm = 0.0;
        FM_ASSERT_OK(fm_optimizer_grad_norm(opt, &norm));
        float lr = step < 10 ? 3e-3f * (float)(step + 1) / 10.0f : 3e-3f;
        fm_adamw_params hp = {lr, 0.9f, 0.95f, 1e-8f, 0.0f};
        FM_ASSERT_OK(fm_optimizer_step(opt, &hp, fm_optimizer_clip_scale(norm, 1.0)));
        if (step >= STEPS - 20) tail += loss / 20.0;
    }
    fm_optimizer_free(&opt);
    fm_model_free(&m);
    be->ops = real_ops;
    fm_backend_free(&be);
    return tail;
}

static void test_learns_and_broken_does_not(void **state)
{
    (void)state;
    double floor = 2.0 * log(8.0) / T;
    double ok = train(0), no_attn = train(1), no_emb = train(2);
    print_message("final loss: correct %.3f (floor %.3f), attention backward broken %.3f, "
                  "embedding backward broken %.3f\n", ok, floor, no_attn, no_emb);
    assert_true(ok < floor + 0.12);
    assert_true(no_attn > ok + 0.3);
    assert_true(no_emb > ok + 0.3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_learns_and_broken_does_not)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}

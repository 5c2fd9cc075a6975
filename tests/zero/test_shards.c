/* test_shards.c — ZeRO's pieces that need no MPI: the shard plan of a layout (fm_model_shard_bounds:
 * covers the layout, in order, cuts only between rows, near-equal parts), the memory per stage
 * (fm_model_zero_memory), and shard optimizers: N optimizers each owning one shard, whose updated
 * pieces are copied to the others after each step (what the all-gather does), give bit-identical
 * weights and moments to one optimizer over the whole layout, report their pieces in order, leave
 * the whole gradient buffer zero, and their sums of squares add up to the full norm. */
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

static const fm_model_shape shapes[] = {
    {2, 2, 64, 32, 100, .arch = "gpt2"},
    {3, 4, 96, 20, 300, .arch = "llama", .n_kv_head = 2},
    {1, 1, 8, 4, 5, .arch = "gpt2"},
};

static void test_bounds(void **state)
{
    (void)state;
    fm_backend *be = NULL;
    FM_ASSERT_OK(fm_backend_create("cpu", 1, -1, &be));
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
        fm_model *m = NULL;
        FM_ASSERT_OK(fm_model_create(&shapes[si], be, 1, &m));
        const size_t P = fm_model_num_params(m);
        size_t maxrow = 1;
        for (int i = 0; i < fm_model_num_tensors(m); i++)
            if ((size_t)fm_model_tensor(m, i)->shape[1] > maxrow)
                maxrow = (size_t)fm_model_tensor(m, i)->shape[1];
        for (int n = 1; n <= 9; n++) {
            size_t b[10];
            FM_ASSERT_OK(fm_model_shard_bounds(&shapes[si], n, b));
            assert_int_equal(b[0], 0);
            assert_int_equal(b[n], P);
            for (int r = 0; r < n; r++) {
                assert_true(b[r] <= b[r + 1]);
                /* near-equal: within one row of the ideal split point on each side */
                double ideal = (double)P / n;
                assert_true(fabs((double)(b[r + 1] - b[r]) - ideal) <= (double)maxrow + 1.0);
            }
            for (int r = 1; r < n; r++)
                for (int i = 0; i < fm_model_num_tensors(m); i++) {
                    const fm_model_tensor_info *t = fm_model_tensor(m, i);
                    size_t row = (size_t)t->shape[1];
                    if (b[r] > t->offset && b[r] < t->offset + t->numel)
                        assert_int_equal((b[r] - t->offset) % row, 0);
                }
            /* the memory per stage follows the plan */
            size_t largest = 0;
            for (int r = 0; r < n; r++)
                if (b[r + 1] - b[r] > largest) largest = b[r + 1] - b[r];
            fm_model_zero_bytes z0, z1, z2;
            FM_ASSERT_OK(fm_model_zero_memory(&shapes[si], 0, n, 1000, &z0));
            FM_ASSERT_OK(fm_model_zero_memory(&shapes[si], 1, n, 1000, &z1));
            FM_ASSERT_OK(fm_model_zero_memory(&shapes[si], 2, n, 1000, &z2));
            assert_int_equal(z0.optim, 8 * P);
            assert_int_equal(z1.optim, 8 * largest);
            assert_int_equal(z2.optim, 8 * largest);
            assert_int_equal(z0.params, 4 * P);
            assert_int_equal(z1.grads, 4 * P);
            assert_int_equal(z0.comm, n > 1 ? 1000u : 0u);
            assert_int_equal(z2.comm, n > 1 ? 1000u : 0u);
            assert_int_equal(z2.total, z2.params + z2.grads + z2.optim + z2.comm);
        }
        fm_model_free(&m);
    }
    size_t b[2];
    fm_status st = fm_model_shard_bounds(&shapes[0], 0, b);
    assert_non_null(st);
    fm_status_free(&st);
    fm_model_zero_bytes z;
    st = fm_model_zero_memory(&shapes[0], 3, 2, 0, &z);
    assert_non_null(st);
    fm_status_free(&st);
    fm_backend_free(&be);
}

static float gradient(int step, size_t i)
{
    uint64_t z = ((uint64_t)step << 40) ^ (uint64_t)i;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)((double)(z >> 11) / 9007199254740992.0 - 0.5) * 0.1f;
}

typedef struct pieces {
    size_t next, lo, hi;
    int calls, bad;
} pieces;

static fm_status on_piece(void *ctx, size_t offset, size_t count)
{
    pieces *p = ctx;
    if (offset != p->next || count == 0 || offset + count > p->hi || count > 97) p->bad = 1;
    p->next = offset + count;
    p->calls++;
    return NULL;
}

static void test_shard_optimizers(void **state)
{
    (void)state;
    enum { N = 3, STEPS = 4 };
    const fm_model_shape *shape = &shapes[1];
    fm_backend *be = NULL;
    FM_ASSERT_OK(fm_backend_create("cpu", 1, -1, &be));
    fm_model *full = NULL, *part[N] = {NULL};
    fm_optimizer *ofull = NULL, *opart[N] = {NULL};
    size_t b[N + 1];
    FM_ASSERT_OK(fm_model_shard_bounds(shape, N, b));
    FM_ASSERT_OK(fm_model_create(shape, be, 1, &full));
    FM_ASSERT_OK(fm_model_init_weights(full, 5));
    FM_ASSERT_OK(fm_optimizer_create(full, &ofull));
    for (int r = 0; r < N; r++) {
        FM_ASSERT_OK(fm_model_create(shape, be, 1, &part[r]));
        FM_ASSERT_OK(fm_model_init_weights(part[r], 5));
        FM_ASSERT_OK(fm_optimizer_create_shard(part[r], b[r], b[r + 1], &opart[r]));
        size_t lo, hi;
        fm_optimizer_range(opart[r], &lo, &hi);
        assert_int_equal(lo, b[r]);
        assert_int_equal(hi, b[r + 1]);
        assert_int_equal(fm_optimizer_state_bytes(opart[r]), 8 * (b[r + 1] - b[r]));
        double norm;
        fm_status st = fm_optimizer_grad_norm(opart[r], &norm); /* a shard has no global norm */
        assert_non_null(st);
        fm_status_free(&st);
    }
    const size_t P = fm_model_num_params(full);
    float *mv = malloc(sizeof *mv * 2 * P), *sm = malloc(sizeof *sm * 2 * P);
    assert_true(mv && sm);
    fm_adamw_params hp = {1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f};
    for (int step = 1; step <= STEPS; step++) {
        float *g = fm_model_grads(full);
        for (size_t i = 0; i < P; i++) g[i] = gradient(step, i);
        double norm = 0.0, parts = 0.0;
        FM_ASSERT_OK(fm_optimizer_grad_norm(ofull, &norm));
        for (int r = 0; r < N; r++) {
            memcpy(fm_model_grads(part[r]), g, P * sizeof(float));
            double ss = 0.0;
            FM_ASSERT_OK(fm_optimizer_grad_sumsq(opart[r], &ss));
            parts += ss;
        }
        assert_true(fabs(sqrt(parts) - norm) <= 1e-12 * norm);
        float scale = fm_optimizer_clip_scale(norm, 0.5);
        FM_ASSERT_OK(fm_optimizer_step(ofull, &hp, scale));
        for (int r = 0; r < N; r++) {
            pieces pc = {b[r], b[r], b[r + 1], 0, 0};
            FM_ASSERT_OK(fm_optimizer_step_notify(opart[r], &hp, scale, 97, on_piece, &pc));
            assert_false(pc.bad);
            assert_int_equal(pc.next, b[r + 1] > b[r] ? b[r + 1] : b[r]);
            for (size_t i = 0; i < P; i++) assert_true(fm_model_grads(part[r])[i] == 0.0f);
        }
        /* the all-gather: every model takes every shard's updated weights */
        for (int r = 0; r < N; r++)
            for (int q = 0; q < N; q++)
                if (q != r)
                    memcpy(fm_model_params(part[q]) + b[r], fm_model_params(part[r]) + b[r],
                           (b[r + 1] - b[r]) * sizeof(float));
        for (int r = 0; r < N; r++)
            assert_memory_equal(fm_model_params(part[r]), fm_model_params(full), P * sizeof(float));
        FM_ASSERT_OK(fm_optimizer_get_state(ofull, mv, mv + P));
        for (int r = 0; r < N; r++) {
            size_t n = b[r + 1] - b[r];
            FM_ASSERT_OK(fm_optimizer_get_state(opart[r], sm, sm + n));
            assert_memory_equal(sm, mv + b[r], n * sizeof(float));
            assert_memory_equal(sm + n, mv + P + b[r], n * sizeof(float));
        }
    }
    free(mv);
    free(sm);
    for (int r = 0; r < N; r++) {
        fm_optimizer_free(&opart[r]);
        fm_model_free(&part[r]);
    }
    fm_optimizer_free(&ofull);
    fm_model_free(&full);
    fm_backend_free(&be);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_shard_optimizers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

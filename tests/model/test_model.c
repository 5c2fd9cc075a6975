/* test_model.c — fmtrain's model and optimizer on the CPU backend: layout and tensor table, memory
 * formula, initialisation, determinism of whole training runs, padded vocabulary rows, gradient
 * accumulation, the backward callback, and argument errors. Numerical agreement with PyTorch is in
 * tests/reference; per-kernel finite differences are in tests/kernels. */
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
#include "train/optimizer.h"

static const fm_model_shape TINY = {2, 2, 64, 32, 100, .arch = "gpt2"}; /* L, NH, C, maxT, V (Vp = 128) */

/* Deterministic batch of token ids in [0,V); the target is a fixed function of the token, so the
 * model can learn it and the loss falls. */
static void make_batch(uint64_t seed, int n, int V, int32_t *tokens, int32_t *targets)
{
    uint64_t s = seed;
    for (int i = 0; i < n; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        tokens[i] = (int32_t)((s >> 33) % (uint64_t)V);
        targets[i] = (int32_t)((tokens[i] * 7 + 3) % V);
    }
}

/* ---- layout and memory ------------------------------------------------------------------------ */

static void test_padded_vocab(void **state)
{
    (void)state;
    assert_int_equal(fm_model_padded_vocab(1), 128);
    assert_int_equal(fm_model_padded_vocab(100), 128);
    assert_int_equal(fm_model_padded_vocab(128), 128);
    assert_int_equal(fm_model_padded_vocab(129), 256);
    assert_int_equal(fm_model_padded_vocab(50257), 50304);
}

static void test_shape_errors(void **state)
{
    (void)state;
    fm_model_shape s = TINY;
    s.n_head = 3; /* 64 % 3 != 0 */
    fm_status st = fm_model_shape_check(&s);
    assert_non_null(st);
    assert_int_equal(fm_status_code(st), FM_ERR_CONFIG);
    assert_non_null(strstr(fm_status_message(st), "n_head"));
    fm_status_free(&st);
    s = TINY;
    s.vocab_size = 0;
    st = fm_model_shape_check(&s);
    assert_int_equal(fm_status_code(st), FM_ERR_CONFIG);
    fm_status_free(&st);
    fm_model_memory_info mem;
    st = fm_model_memory_estimate(&TINY, 0, 4, &mem);
    assert_int_equal(fm_status_code(st), FM_ERR_CONFIG);
    fm_status_free(&st);
}

static size_t up64(size_t x) { return (x + 63) / 64 * 64; }

/* The formula of docs/model.md, written out independently of model.c's arena planner. e = bytes of
 * a matmul input (ln1, atty, ln2, fch_gelu, lnf); everything else is fp32 in every precision. */
static size_t formula_act(size_t B, size_t T, size_t C, size_t L, size_t NH, size_t e)
{
    size_t BT = B * T;
    size_t per_layer = up64(BT * C * e) * 3 /* ln1 atty ln2 */ + up64(BT * C * 4) * 2 /* res2 res3 */ +
                       up64(3 * BT * C * 4) /* qkv */ + up64(4 * BT * C * 4) /* fch */ +
                       up64(4 * BT * C * e) /* fch_gelu */ + 4 * up64(BT * 4) /* mean,rstd */ +
                       up64(NH * BT * 4);
    return 2 * up64(BT * 4) /* tokens targets */ + up64(BT * C * 4) /* encoded */ + L * per_layer +
           up64(BT * C * e) /* lnf */ + 4 * up64(BT * 4) /* lnf mean rstd, losses, lse */;
}

static void test_memory_formula(void **state)
{
    (void)state;
    /* GPT-2 124M: the well-known parameter count, and micro_batch 4 x 1024 inside 16 GiB */
    fm_model_shape g = {12, 12, 768, 1024, 50257, .arch = "gpt2"};
    fm_model_memory_info mem;
    FM_ASSERT_OK(fm_model_memory_estimate(&g, 4, 4, &mem));
    assert_int_equal(mem.n_params, 124439808);
    assert_int_equal(mem.n_params_padded, 124439808 + (50304 - 50257) * 768);
    assert_int_equal(mem.param_bytes, 4 * mem.n_params_padded);
    assert_int_equal(mem.param_copy_bytes, 0); /* fp32: no bf16 weight copy */
    assert_int_equal(mem.grad_bytes, 4 * mem.n_params_padded);
    assert_int_equal(mem.optim_bytes, 8 * mem.n_params_padded);
    assert_int_equal(mem.act_bytes, formula_act(4, 1024, 768, 12, 12, 4));
    assert_int_equal(mem.logits_bytes, up64((size_t)4 * 1024 * 50304 * 4));
    assert_int_equal(mem.scratch_bytes, 2 * up64((size_t)4 * 1024 * 768 * 4) +
                                            up64((size_t)4 * 4 * 1024 * 768 * 4));
    assert_int_equal(mem.total_bytes, mem.param_bytes + mem.grad_bytes + mem.optim_bytes +
                                          mem.act_bytes + mem.logits_bytes + mem.scratch_bytes);
    assert_true(mem.total_bytes < ((size_t)16 << 30));
    /* odd sizes exercise the 64-byte rounding; bf16 halves the matmul inputs and adds the bf16
     * weight copy; logits, scratch and the residual stream stay fp32 */
    fm_model_shape odd = {3, 3, 33, 17, 1001, .arch = "gpt2"};
    FM_ASSERT_OK(fm_model_memory_estimate(&odd, 3, 2, &mem));
    assert_int_equal(mem.act_bytes, formula_act(3, 17, 33, 3, 3, 2));
    assert_int_equal(mem.logits_bytes, up64((size_t)3 * 17 * 1024 * 4));
    assert_int_equal(mem.scratch_bytes, up64((size_t)3 * 17 * 33 * 4) * 2 + up64((size_t)3 * 17 * 33 * 4 * 4));
    assert_int_equal(mem.param_copy_bytes, 2 * mem.n_params_padded);
    assert_int_equal(mem.total_bytes, mem.param_bytes + mem.param_copy_bytes + mem.grad_bytes +
                                          mem.optim_bytes + mem.act_bytes + mem.logits_bytes +
                                          mem.scratch_bytes);
    /* a created model reports the estimate, in each precision the CPU backend implements */
    for (int p = 0; p < 2; p++) {
        fm_backend *be = NULL;
        fm_model *m = NULL;
        const unsigned prec = p ? FM_PRECISION_BF16 : FM_PRECISION_FP32;
        FM_ASSERT_OK(fm_backend_create("cpu", 2, -1, &be));
        const int has = (be->ops->caps.precisions & prec) != 0;
        fm_backend_free(&be);
        if (!has) continue; /* bf16 without oneDNN */
        FM_ASSERT_OK(fm_backend_create_precision("cpu", 2, -1, prec, &be));
        FM_ASSERT_OK(fm_model_create(&odd, be, 3, &m));
        fm_model_memory_info got, want;
        fm_model_memory(m, &got);
        FM_ASSERT_OK(fm_model_memory_estimate(&odd, 3, be->ops->act_bytes, &want));
        assert_memory_equal(&got, &want, sizeof got);
        assert_int_equal(got.param_copy_bytes, p ? 2 * got.n_params_padded : 0);
        assert_int_equal(fm_model_num_params(m), want.n_params_padded);
        fm_model_free(&m);
        assert_null(m);
        fm_backend_free(&be);
    }
}

static void test_tensor_table(void **state)
{
    (void)state;
    fm_backend *be = NULL;
    fm_model *m = NULL;
    FM_ASSERT_OK(fm_backend_create("cpu", 1, -1, &be));
    FM_ASSERT_OK(fm_model_create(&TINY, be, 2, &m));
    const int C = 64, L = 2;
    assert_string_equal(fm_model_arch(m), "gpt2");
    assert_int_equal(fm_model_num_tensors(m), 4 + 12 * L);
    size_t off = 0;
    for (int i = 0; i < fm_model_num_tensors(m); i++) {
        const fm_model_tensor_info *t = fm_model_tensor(m, i);
        assert_int_equal(t->offset, off); /* contiguous, in table order */
        assert_int_equal(t->numel, (size_t)(t->shape[0] * t->shape[1]));
        assert_int_equal(t->decay, t->ndim == 2); /* embeddings and matrices only */
        assert_int_equal(strncmp(t->hf_name, "transformer.", 12), 0);
        assert_string_equal(t->hf_name + 12, t->name);
        off += t->numel;
    }
    assert_int_equal(off, fm_model_num_params(m));
    assert_null(fm_model_tensor(m, fm_model_num_tensors(m)));

    const fm_model_tensor_info *wte = fm_model_find_tensor(m, "wte.weight");
    assert_non_null(wte);
    assert_int_equal(wte->offset, 0);
    assert_int_equal(wte->shape[0], 128);
    assert_int_equal(wte->hf_shape[0], 100);
    const fm_model_tensor_info *qkv = fm_model_find_tensor(m, "h.1.attn.c_attn.weight");
    assert_non_null(qkv);
    assert_int_equal(qkv->shape[0], 3 * C);
    assert_int_equal(qkv->shape[1], C);
    assert_int_equal(qkv->hf_shape[0], C); /* HF Conv1D: (in, out) */
    assert_int_equal(qkv->hf_shape[1], 3 * C);
    assert_int_equal(qkv->hf_transposed, 1);
    assert_int_equal(qkv->layer, 1);
    const fm_model_tensor_info *fcp = fm_model_find_tensor(m, "h.0.mlp.c_proj.weight");
    assert_int_equal(fcp->shape[0], C);
    assert_int_equal(fcp->shape[1], 4 * C);
    assert_null(fm_model_find_tensor(m, "h.2.ln_1.weight"));

    /* layer ranges: head range first, then each layer contiguous, covering everything */
    size_t o, n, expect = 0;
    fm_model_layer_range(m, -1, &o, &n);
    assert_int_equal(o, 0);
    assert_int_equal(n, (size_t)(128 * C + 32 * C + 2 * C));
    expect = n;
    for (int l = 0; l < L; l++) {
        fm_model_layer_range(m, l, &o, &n);
        assert_int_equal(o, expect);
        assert_int_equal(n, (size_t)(12 * C * C + 13 * C));
        const fm_model_tensor_info *first = fm_model_tensor(m, 4 + 12 * l);
        assert_int_equal(first->offset, o);
        assert_int_equal(first->layer, l);
        expect += n;
    }
    assert_int_equal(expect, fm_model_num_params(m));
    fm_model_free(&m);
    fm_backend_free(&be);
}

/* ---- initialisation --------------------------------------------------------------------------- */

static void tensor_stats(const float *p, const fm_model_tensor_info *t, double *mean, double *sd)
{
    double s = 0, s2 = 0;
    for (size_t i = 0; i < t->numel; i++) {
        s += p[t->offset + i];
        s2 += (double)p[t->offset + i] * p[t->offset + i];
    }
    *mean = s / (double)t->numel;
    *sd = sqrt(s2 / (double)t->numel - *mean * *mean);
}

static void test_init(void **state)
{
    (void)state;
    fm_model_shape s = {4, 4, 128, 64, 1000, .arch = "gpt2"};
    fm_backend *be1 = NULL, *be2 = NULL;
    fm_model *a = NULL, *b = NULL;
    FM_ASSERT_OK(fm_backend_create("cpu", 1, -1, &be1));
    FM_ASSERT_OK(fm_backend_create("cpu", 2, -1, &be2));
    FM_ASSERT_OK(fm_model_create(&s, be1, 1, &a));
    FM_ASSERT_OK(fm_model_create(&s, be2, 1, &b));
    size_t n = fm_model_num_params(a);
    float *pa = malloc(n * sizeof(float)), *pb = malloc(n * sizeof(float));
    assert_non_null(pa);
    assert_non_null(pb);
    /* same seed, different thread counts: identical */
    FM_ASSERT_OK(fm_model_init_weights(a, 42));
    FM_ASSERT_OK(fm_model_init_weights(b, 42));
    FM_ASSERT_OK(fm_model_get_params(a, pa));
    FM_ASSERT_OK(fm_model_get_params(b, pb));
    assert_memory_equal(pa, pb, n * sizeof(float));
    /* GPT-2 statistics */
    for (int i = 0; i < fm_model_num_tensors(a); i++) {
        const fm_model_tensor_info *t = fm_model_tensor(a, i);
        double mean, sd;
        if (strcmp(t->name, "wte.weight") == 0) {
            for (size_t j = 1000 * 128; j < t->numel; j++) assert_true(pa[j] == 0.0f);
            fm_model_tensor_info real = *t;
            real.numel = 1000 * 128;
            tensor_stats(pa, &real, &mean, &sd);
            assert_true(fabs(sd - 0.02) < 0.0005);
            assert_true(fabs(mean) < 0.0005);
        } else if (t->ndim == 2) {
            tensor_stats(pa, t, &mean, &sd);
            double want = strstr(t->name, "c_proj.weight") ? 0.02 / sqrt(8.0) : 0.02;
            assert_true(fabs(sd - want) < 0.05 * want);
            assert_true(fabs(mean) < 0.05 * want);
        } else {
            float want = strstr(t->name, ".bias") ? 0.0f : 1.0f;
            for (size_t j = 0; j < t->numel; j++) assert_true(pa[t->offset + j] == want);
        }
    }
    /* a different seed gives different weights */
    FM_ASSERT_OK(fm_model_init_weights(b, 43));
    FM_ASSERT_OK(fm_model_get_params(b, pb));
    size_t same = 0;
    for (size_t i = 0; i < n; i++) same += pa[i] == pb[i] && pa[i] != 0.0f && pa[i] != 1.0f;
    assert_true(same < n / 1000);
    free(pa);
    free(pb);
    fm_model_free(&a);
    fm_model_free(&b);
    fm_backend_free(&be1);
    fm_backend_free(&be2);
}

/* ---- training runs ---------------------------------------------------------------------------- */

typedef struct run_result {
    float losses[20];
    float *params; /* final parameters */
    float *m, *v;  /* final AdamW moments */
    size_t n;
} run_result;

/* 20 AdamW steps with clipping on changing batches (B=3 of 2 micro-batches, T=29: odd sizes), in
 * an activation precision (kernels.h). */
static void train_run_p(int threads, uint64_t seed, unsigned precision, run_result *r)
{
    fm_backend *be = NULL;
    fm_model *m = NULL;
    fm_optimizer *opt = NULL;
    FM_ASSERT_OK(fm_backend_create_precision("cpu", threads, -1, precision, &be));
    FM_ASSERT_OK(fm_model_create(&TINY, be, 3, &m));
    FM_ASSERT_OK(fm_model_init_weights(m, seed));
    FM_ASSERT_OK(fm_optimizer_create(m, &opt));
    const int B = 3, T = 29;
    int32_t tok[3 * 29], tgt[3 * 29];
    const fm_adamw_params hp = {3e-3f, 0.9f, 0.95f, 1e-8f, 0.1f};
    for (int s = 0; s < 20; s++) {
        float sum = 0;
        for (int micro = 0; micro < 2; micro++) {
            float loss;
            make_batch((uint64_t)(100 + 2 * s + micro), B * T, TINY.vocab_size, tok, tgt);
            FM_ASSERT_OK(fm_model_forward(m, tok, tgt, B, T, &loss));
            FM_ASSERT_OK(fm_model_backward(m, 0.5f, NULL, NULL));
            sum += loss;
        }
        r->losses[s] = sum / 2;
        double norm;
        FM_ASSERT_OK(fm_optimizer_grad_norm(opt, &norm));
        assert_true(isfinite(norm) && norm > 0);
        FM_ASSERT_OK(fm_optimizer_step(opt, &hp, fm_optimizer_clip_scale(norm, 1.0)));
    }
    assert_int_equal(fm_optimizer_get_step(opt), 20);
    r->n = fm_model_num_params(m);
    r->params = malloc(r->n * sizeof(float));
    r->m = malloc(r->n * sizeof(float));
    r->v = malloc(r->n * sizeof(float));
    assert_non_null(r->params);
    assert_non_null(r->m);
    assert_non_null(r->v);
    FM_ASSERT_OK(fm_model_get_params(m, r->params));
    FM_ASSERT_OK(fm_optimizer_get_state(opt, r->m, r->v));
    /* the update zeroed the gradients */
    float *g = malloc(r->n * sizeof(float));
    assert_non_null(g);
    FM_ASSERT_OK(fm_model_get_grads(m, g));
    for (size_t i = 0; i < r->n; i++) assert_true(g[i] == 0.0f);
    free(g);
    fm_optimizer_free(&opt);
    assert_null(opt);
    fm_model_free(&m);
    fm_backend_free(&be);
}

static void train_run(int threads, uint64_t seed, run_result *r)
{
    train_run_p(threads, seed, FM_PRECISION_FP32, r);
}

static void run_free(run_result *r)
{
    free(r->params);
    free(r->m);
    free(r->v);
}

/* Same seed and thread count: bit-identical losses and parameters after 20 steps. The loss falls. */
static void test_determinism(void **state)
{
    (void)state;
    run_result a, b, c;
    train_run(2, 7, &a);
    train_run(2, 7, &b);
    assert_memory_equal(a.losses, b.losses, sizeof a.losses);
    assert_int_equal(a.n, b.n);
    assert_memory_equal(a.params, b.params, a.n * sizeof(float));
    assert_memory_equal(a.m, b.m, a.n * sizeof(float));
    assert_memory_equal(a.v, b.v, a.n * sizeof(float));
    assert_true(a.losses[19] < a.losses[0] - 0.1f);
    /* a different seed gives a different run (the test can tell runs apart) */
    train_run(2, 8, &c);
    assert_true(memcmp(a.params, c.params, a.n * sizeof(float)) != 0);
    run_free(&a);
    run_free(&b);
    run_free(&c);
}

/* Rows V..Vp-1 of wte (and of its AdamW moments) stay exactly zero through training. */
static void test_padded_rows_stay_zero(void **state)
{
    (void)state;
    run_result r;
    train_run(2, 11, &r);
    const size_t C = 64, V = 100, Vp = 128;
    for (size_t i = V * C; i < Vp * C; i++) {
        assert_true(r.params[i] == 0.0f);
        assert_true(r.m[i] == 0.0f);
        assert_true(r.v[i] == 0.0f);
    }
    /* while the real rows moved */
    size_t moved = 0;
    for (size_t i = 0; i < V * C; i++) moved += r.m[i] != 0.0f;
    assert_true(moved > V * C / 2);
    run_free(&r);
}

/* With zero gradients, one AdamW step only decays: tensors with decay = 1 shrink by (1 - lr*wd), the
 * others (LayerNorm gains 1, biases 0) do not move. */
static void test_weight_decay_mask(void **state)
{
    (void)state;
    fm_backend *be = NULL;
    fm_model *m = NULL;
    fm_optimizer *opt = NULL;
    FM_ASSERT_OK(fm_backend_create("cpu", 2, -1, &be));
    FM_ASSERT_OK(fm_model_create(&TINY, be, 1, &m));
    FM_ASSERT_OK(fm_model_init_weights(m, 21));
    FM_ASSERT_OK(fm_optimizer_create(m, &opt));
    size_t n = fm_model_num_params(m);
    float *before = malloc(n * sizeof(float)), *after = malloc(n * sizeof(float));
    assert_non_null(before);
    assert_non_null(after);
    FM_ASSERT_OK(fm_model_get_params(m, before));
    const fm_adamw_params hp = {0.1f, 0.9f, 0.95f, 1e-8f, 0.5f};
    FM_ASSERT_OK(fm_optimizer_step(opt, &hp, 1.0f));
    FM_ASSERT_OK(fm_model_get_params(m, after));
    for (int i = 0; i < fm_model_num_tensors(m); i++) {
        const fm_model_tensor_info *t = fm_model_tensor(m, i);
        for (size_t j = t->offset; j < t->offset + t->numel; j++) {
            if (t->decay) {
                if (fabs(after[j] - 0.95 * before[j]) > 1e-6 * fabs(before[j]) + 1e-12)
                    fail_msg("%s[%zu]: %g -> %g, expected x0.95", t->name, j - t->offset,
                             (double)before[j], (double)after[j]);
            } else if (after[j] != before[j]) {
                fail_msg("%s[%zu] moved (%g -> %g) although it has no weight decay", t->name,
                         j - t->offset, (double)before[j], (double)after[j]);
            }
        }
    }
    assert_int_equal(fm_optimizer_get_step(opt), 1);
    free(before);
    free(after);
    fm_optimizer_free(&opt);
    fm_model_free(&m);
    fm_backend_free(&be);
}

/* ---- backward ------------------------------------------------------------------------------- */

typedef struct cb_log {
    fm_model *m;
    int calls;
    size_t offsets[16], counts[16];
    float *snapshot; /* gradients as they were when each range was reported */
} cb_log;

static fm_status record_range(void *ctx, size_t offset, size_t count)
{
    cb_log *log = ctx;
    log->offsets[log->calls] = offset;
    log->counts[log->calls] = count;
    log->calls++;
    /* copy the reported range now (CPU backend: device memory is host memory) */
    memcpy(log->snapshot + offset, fm_model_grads(log->m) + offset, count * sizeof(float));
    return NULL;
}

static fm_status fail_range(void *ctx, size_t offset, size_t count)
{
    (void)ctx;
    (void)offset;
    (void)count;
    return FM_ERR(FM_ERR_MPI, "all-reduce failed (test)");
}

static void test_backward_callback(void **state)
{
    (void)state;
    fm_backend *be = NULL;
    fm_model *m = NULL;
    FM_ASSERT_OK(fm_backend_create("cpu", 2, -1, &be));
    assert_string_equal(be->ops->name, "cpu");
    FM_ASSERT_OK(fm_model_create(&TINY, be, 2, &m));
    FM_ASSERT_OK(fm_model_init_weights(m, 3));
    size_t n = fm_model_num_params(m);
    int32_t tok[2 * 32], tgt[2 * 32];
    make_batch(5, 64, 100, tok, tgt);
    cb_log log = {m, 0, {0}, {0}, calloc(n, sizeof(float))};
    assert_non_null(log.snapshot);
    FM_ASSERT_OK(fm_model_forward(m, tok, tgt, 2, 32, NULL));
    FM_ASSERT_OK(fm_model_backward(m, 1.0f, record_range, &log));
    assert_int_equal(log.calls, TINY.n_layer + 1);
    size_t o, c;
    for (int i = 0; i < TINY.n_layer; i++) { /* layers L-1 .. 0 */
        fm_model_layer_range(m, TINY.n_layer - 1 - i, &o, &c);
        assert_int_equal(log.offsets[i], o);
        assert_int_equal(log.counts[i], c);
    }
    fm_model_layer_range(m, -1, &o, &c); /* head range last */
    assert_int_equal(log.offsets[TINY.n_layer], o);
    assert_int_equal(log.counts[TINY.n_layer], c);
    /* every range was final when reported */
    float *g = malloc(n * sizeof(float));
    assert_non_null(g);
    FM_ASSERT_OK(fm_model_get_grads(m, g));
    assert_memory_equal(g, log.snapshot, n * sizeof(float));

    /* an error from the callback stops backward and is returned */
    FM_ASSERT_OK(fm_model_forward(m, tok, tgt, 2, 32, NULL));
    fm_status st = fm_model_backward(m, 1.0f, fail_range, NULL);
    assert_int_equal(fm_status_code(st), FM_ERR_MPI);
    fm_status_free(&st);
    free(g);
    free(log.snapshot);
    fm_model_free(&m);
    fm_backend_free(&be);
}

/* Two backward passes with loss_scale 0.5 accumulate what one pass with scale 1 gives. Not bit-exact:
 * kernels that accumulate into a gradient in several partial sums (tiled GEMM with beta = 1) round the
 * second pass differently; per tensor max|g2-g1| <= 1e-5 * max|g1|. */
static void test_grad_accumulation(void **state)
{
    (void)state;
    fm_backend *be = NULL;
    fm_model *m = NULL;
    FM_ASSERT_OK(fm_backend_create("cpu", 2, -1, &be));
    FM_ASSERT_OK(fm_model_create(&TINY, be, 4, &m));
    FM_ASSERT_OK(fm_model_init_weights(m, 9));
    size_t n = fm_model_num_params(m);
    int32_t tok[4 * 17], tgt[4 * 17];
    make_batch(6, 4 * 17, 100, tok, tgt);
    float *g1 = malloc(n * sizeof(float)), *g2 = malloc(n * sizeof(float));
    assert_non_null(g1);
    assert_non_null(g2);
    float l1, l2;
    FM_ASSERT_OK(fm_model_forward(m, tok, tgt, 4, 17, &l1));
    FM_ASSERT_OK(fm_model_backward(m, 1.0f, NULL, NULL));
    FM_ASSERT_OK(fm_model_get_grads(m, g1));
    fm_model_zero_grads(m);
    for (int k = 0; k < 2; k++) {
        FM_ASSERT_OK(fm_model_forward(m, tok, tgt, 4, 17, &l2));
        FM_ASSERT_OK(fm_model_backward(m, 0.5f, NULL, NULL));
    }
    FM_ASSERT_OK(fm_model_get_grads(m, g2));
    assert_true(l1 == l2);
    for (int i = 0; i < fm_model_num_tensors(m); i++) {
        const fm_model_tensor_info *t = fm_model_tensor(m, i);
        double mx = 0, diff = 0;
        for (size_t j = t->offset; j < t->offset + t->numel; j++) {
            mx = fmax(mx, fabs(g1[j]));
            diff = fmax(diff, fabs((double)g2[j] - g1[j]));
        }
        if (diff > 1e-5 * mx) fail_msg("%s: accumulated gradient differs by %g (max %g)", t->name, diff, mx);
        if (strncmp(t->name, "wpe", 3) != 0) assert_true(mx > 0); /* every tensor got a gradient */
    }
    free(g1);
    free(g2);
    fm_model_free(&m);
    fm_backend_free(&be);
}

/* Inference forward: logits of a position; loss equals -log softmax at the target. */
static void test_logits_and_loss(void **state)
{
    (void)state;
    fm_backend *be = NULL;
    fm_model *m = NULL;
    FM_ASSERT_OK(fm_backend_create("cpu", 2, -1, &be));
    FM_ASSERT_OK(fm_model_create(&TINY, be, 2, &m));
    FM_ASSERT_OK(fm_model_init_weights(m, 4));
    int32_t tok[2 * 8], tgt[2 * 8];
    make_batch(8, 16, 100, tok, tgt);
    float loss;
    FM_ASSERT_OK(fm_model_forward(m, tok, tgt, 2, 8, &loss));
    float logits[128];
    double sum = 0;
    for (int b = 0; b < 2; b++)
        for (int t = 0; t < 8; t++) {
            FM_ASSERT_OK(fm_model_logits(m, b, t, logits));
            double mx = -INFINITY, z = 0;
            for (int v = 0; v < 100; v++) mx = fmax(mx, logits[v]);
            for (int v = 0; v < 100; v++) z += exp(logits[v] - mx);
            sum += -(logits[tgt[b * 8 + t]] - mx - log(z));
        }
    assert_true(fabs(sum / 16 - loss) < 1e-5 * fabs(loss));
    /* inference: no targets, NaN loss, logits available, backward refused */
    FM_ASSERT_OK(fm_model_forward(m, tok, NULL, 2, 8, &loss));
    assert_true(isnan(loss));
    float again[128];
    FM_ASSERT_OK(fm_model_logits(m, 1, 7, again));
    fm_status st = fm_model_backward(m, 1.0f, NULL, NULL);
    assert_int_equal(fm_status_code(st), FM_ERR_INTERNAL);
    fm_status_free(&st);
    st = fm_model_logits(m, 2, 0, again); /* b out of range */
    assert_non_null(st);
    fm_status_free(&st);
    /* after backward, logits are consumed */
    FM_ASSERT_OK(fm_model_forward(m, tok, tgt, 2, 8, NULL));
    FM_ASSERT_OK(fm_model_backward(m, 1.0f, NULL, NULL));
    st = fm_model_logits(m, 0, 0, again);
    assert_non_null(st);
    fm_status_free(&st);
    fm_model_free(&m);
    fm_backend_free(&be);
}

static void test_input_errors(void **state)
{
    (void)state;
    fm_backend *be = NULL;
    fm_model *m = NULL;
    FM_ASSERT_OK(fm_backend_create("cpu", 1, -1, &be));
    FM_ASSERT_OK(fm_model_create(&TINY, be, 2, &m));
    int32_t tok[2 * 4] = {1, 2, 3, 4, 5, 6, 7, 8}, tgt[2 * 4] = {1, 2, 3, 4, 5, 6, 7, 100};
    fm_status st = fm_model_forward(m, tok, tgt, 2, 4, NULL); /* target 100 == V */
    assert_int_equal(fm_status_code(st), FM_ERR_INPUT);
    assert_non_null(strstr(fm_status_message(st), "targets[1][3]"));
    fm_status_free(&st);
    tok[0] = -1;
    st = fm_model_forward(m, tok, NULL, 2, 4, NULL);
    assert_int_equal(fm_status_code(st), FM_ERR_INPUT);
    fm_status_free(&st);
    tok[0] = 0;
    st = fm_model_forward(m, tok, NULL, 3, 4, NULL); /* B > max_batch */
    assert_non_null(st);
    fm_status_free(&st);
    st = fm_model_forward(m, tok, NULL, 1, 33, NULL); /* T > seq_len */
    assert_non_null(st);
    fm_status_free(&st);
    st = fm_model_backward(m, 1.0f, NULL, NULL); /* no forward */
    assert_non_null(st);
    fm_status_free(&st);

    /* optimizer argument errors and the clipping rule */
    fm_optimizer *opt = NULL;
    FM_ASSERT_OK(fm_optimizer_create(m, &opt));
    const fm_adamw_params bad = {1e-3f, 1.0f, 0.95f, 1e-8f, 0.1f};
    st = fm_optimizer_step(opt, &bad, 1.0f);
    assert_int_equal(fm_status_code(st), FM_ERR_CONFIG);
    fm_status_free(&st);
    assert_int_equal(fm_optimizer_get_step(opt), 0);
    assert_true(fm_optimizer_clip_scale(0.5, 1.0) == 1.0f);
    assert_true(fabsf(fm_optimizer_clip_scale(4.0, 1.0) - 0.25f) < 1e-6f);
    assert_true(fm_optimizer_clip_scale(4.0, 0.0) == 1.0f);
    fm_optimizer_free(&opt);
    fm_model_free(&m);
    /* a decode model has no gradients: no optimizer for it */
    FM_ASSERT_OK(fm_model_create_opts(
        &TINY, be, &(fm_model_options){.mode = FM_MODEL_DECODE, .max_batch = 1}, &m));
    st = fm_optimizer_create(m, &opt);
    assert_int_equal(fm_status_code(st), FM_ERR_INTERNAL);
    assert_null(opt);
    fm_status_free(&st);
    fm_model_free(&m);
    fm_backend_free(&be);
}

/* ---- bf16 activations (kernels.h, "Precision") -------------------------------------------------- */

static int have_bf16(void)
{
    fm_backend *be = NULL;
    FM_ASSERT_OK(fm_backend_create("cpu", 1, -1, &be));
    const int has = (be->ops->caps.precisions & FM_PRECISION_BF16) != 0;
    fm_backend_free(&be);
    if (!has) print_message("[ SKIPPED  ] no bf16 in this build (%s)\n", fm_backend_gemm_info());
    return has;
}

/* bf16: the same seed and threads give bit-identical losses, parameters and moments; the losses
 * follow the fp32 run's within 1 % at every step of 20 and fall. */
static void test_bf16_training(void **state)
{
    (void)state;
    if (!have_bf16()) return;
    run_result a, b, f;
    train_run_p(2, 7, FM_PRECISION_BF16, &a);
    train_run_p(2, 7, FM_PRECISION_BF16, &b);
    train_run_p(2, 7, FM_PRECISION_FP32, &f);
    assert_memory_equal(a.losses, b.losses, sizeof a.losses);
    assert_memory_equal(a.params, b.params, a.n * sizeof(float));
    assert_memory_equal(a.m, b.m, a.n * sizeof(float));
    assert_memory_equal(a.v, b.v, a.n * sizeof(float));
    double worst = 0.0;
    for (int s = 0; s < 20; s++) {
        const double d = fabs((double)a.losses[s] - f.losses[s]) / f.losses[s];
        worst = d > worst ? d : worst;
    }
    print_message("bf16 vs fp32 over 20 steps: losses %.4f -> %.4f vs %.4f -> %.4f, worst relative "
                  "difference %.2e\n", a.losses[0], a.losses[19], f.losses[0], f.losses[19], worst);
    assert_true(worst <= 1e-2);
    assert_true(worst > 0.0); /* bf16 does round: the runs are not the fp32 run */
    assert_true(a.losses[19] < a.losses[0] - 0.1f);
    run_free(&a), run_free(&b), run_free(&f);
}

/* The bf16 weight copy follows the masters however they were written: set_params, init, a write
 * through the fm_model_params pointer (a checkpoint reads into it), and the optimizer's step (through
 * adamw_update's copy, checked against a model whose copy is re-made from the same masters). */
static void test_bf16_weight_copy(void **state)
{
    (void)state;
    if (!have_bf16()) return;
    fm_backend *be = NULL;
    FM_ASSERT_OK(fm_backend_create_precision("cpu", 2, -1, FM_PRECISION_BF16, &be));
    fm_model *a = NULL, *b = NULL;
    FM_ASSERT_OK(fm_model_create(&TINY, be, 2, &a));
    FM_ASSERT_OK(fm_model_create(&TINY, be, 2, &b));
    FM_ASSERT_OK(fm_model_init_weights(a, 5));
    const size_t n = fm_model_num_params(a);
    float *p = malloc(n * sizeof *p);
    assert_non_null(p);
    FM_ASSERT_OK(fm_model_get_params(a, p));
    memcpy(fm_model_params(b), p, n * sizeof *p); /* host memory: a direct write, as checkpoints do */
    const int B = 2, T = 29;
    int32_t tok[2 * 29], tgt[2 * 29];
    make_batch(3, B * T, TINY.vocab_size, tok, tgt);
    float la, lb;
    FM_ASSERT_OK(fm_model_forward(a, tok, tgt, B, T, &la));
    FM_ASSERT_OK(fm_model_forward(b, tok, tgt, B, T, &lb));
    assert_true(la == lb); /* a stale (zero) copy in b would give ln(V) = 4.6 */
    /* a step of a's optimizer writes a's copy; b gets a's new masters through set_params */
    fm_optimizer *opt = NULL;
    FM_ASSERT_OK(fm_optimizer_create(a, &opt));
    FM_ASSERT_OK(fm_model_backward(a, 1.0f, NULL, NULL));
    const fm_adamw_params hp = {1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f};
    FM_ASSERT_OK(fm_optimizer_step(opt, &hp, 1.0f));
    FM_ASSERT_OK(fm_model_get_params(a, p));
    FM_ASSERT_OK(fm_model_set_params(b, p));
    FM_ASSERT_OK(fm_model_forward(a, tok, tgt, B, T, &la));
    FM_ASSERT_OK(fm_model_forward(b, tok, tgt, B, T, &lb));
    assert_true(la == lb);
    print_message("bf16 weight copy: losses %.6f, %.6f after one step\n", la, lb);
    fm_optimizer_free(&opt);
    fm_model_free(&a), fm_model_free(&b);
    fm_backend_free(&be);
    free(p);
}

/* The fused classifier (fm_model_set_fused_loss_scale): the same losses and gradients, bit for bit,
 * as forward + backward, in fp32 and bf16, over two accumulated micro-batches (loss_scale 1/2); a
 * backward with another loss_scale and fm_model_logits after a fused forward are refused; 0 turns it
 * off (logits readable again); not on a forward-only model. */
static void test_fused_classifier(void **state)
{
    (void)state;
    for (int pi = 0; pi < 2; pi++) {
        const unsigned prec = pi ? FM_PRECISION_BF16 : FM_PRECISION_FP32;
        if (pi && !have_bf16()) continue;
        fm_backend *be = NULL;
        fm_model *a = NULL, *b = NULL;
        FM_ASSERT_OK(fm_backend_create_precision("cpu", 2, -1, prec, &be));
        FM_ASSERT_OK(fm_model_create(&TINY, be, 3, &a));
        FM_ASSERT_OK(fm_model_create(&TINY, be, 3, &b));
        FM_ASSERT_OK(fm_model_init_weights(a, 21));
        FM_ASSERT_OK(fm_model_init_weights(b, 21));
        FM_ASSERT_OK(fm_model_set_fused_loss_scale(b, 0.5f));
        const size_t n = fm_model_num_params(a);
        int32_t tok[3 * 19], tgt[3 * 19];
        float *ga = malloc(n * sizeof(float)), *gb = malloc(n * sizeof(float));
        assert_non_null(ga);
        assert_non_null(gb);
        for (int k = 0; k < 2; k++) {
            float la, lb;
            make_batch(30 + (uint64_t)k, 3 * 19, 100, tok, tgt);
            FM_ASSERT_OK(fm_model_forward(a, tok, tgt, 3, 19, &la));
            FM_ASSERT_OK(fm_model_forward(b, tok, tgt, 3, 19, &lb));
            assert_true(la == lb);
            FM_ASSERT_OK(fm_model_backward(a, 0.5f, NULL, NULL));
            FM_ASSERT_OK(fm_model_backward(b, 0.5f, NULL, NULL));
        }
        FM_ASSERT_OK(fm_model_get_grads(a, ga));
        FM_ASSERT_OK(fm_model_get_grads(b, gb));
        assert_memory_equal(ga, gb, n * sizeof(float));
        /* refusals */
        float lg[128];
        FM_ASSERT_OK(fm_model_forward(b, tok, tgt, 3, 19, NULL));
        fm_status st = fm_model_logits(b, 0, 0, lg);
        assert_int_equal(fm_status_code(st), FM_ERR_INTERNAL);
        fm_status_free(&st);
        st = fm_model_backward(b, 1.0f, NULL, NULL);
        assert_int_equal(fm_status_code(st), FM_ERR_INTERNAL);
        fm_status_free(&st);
        st = fm_model_set_fused_loss_scale(b, NAN);
        assert_int_equal(fm_status_code(st), FM_ERR_INTERNAL);
        fm_status_free(&st);
        FM_ASSERT_OK(fm_model_set_fused_loss_scale(b, 0.0f)); /* off: logits again */
        FM_ASSERT_OK(fm_model_forward(b, tok, tgt, 3, 19, NULL));
        FM_ASSERT_OK(fm_model_logits(b, 0, 0, lg));
        free(ga), free(gb);
        fm_model_free(&a), fm_model_free(&b);
        FM_ASSERT_OK(fm_model_create_opts(
            &TINY, be, &(fm_model_options){.mode = FM_MODEL_EVAL, .max_batch = 1}, &a));
        st = fm_model_set_fused_loss_scale(a, 1.0f);
        assert_int_equal(fm_status_code(st), FM_ERR_INTERNAL);
        fm_status_free(&st);
        fm_model_free(&a);
        fm_backend_free(&be);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bf16_training),
        cmocka_unit_test(test_bf16_weight_copy),
        cmocka_unit_test(test_padded_vocab),
        cmocka_unit_test(test_shape_errors),
        cmocka_unit_test(test_memory_formula),
        cmocka_unit_test(test_tensor_table),
        cmocka_unit_test(test_init),
        cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_padded_rows_stay_zero),
        cmocka_unit_test(test_weight_decay_mask),
        cmocka_unit_test(test_backward_callback),
        cmocka_unit_test(test_grad_accumulation),
        cmocka_unit_test(test_logits_and_loss),
        cmocka_unit_test(test_fused_classifier),
        cmocka_unit_test(test_input_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

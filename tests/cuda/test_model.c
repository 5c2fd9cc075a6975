/* test_model.c — the whole model on the CUDA backend against the CPU backend.
 *
 * Precision: FM_TEST_PRECISION=fp32 (default) or bf16 picks the instances (kernels.h, "Precision"):
 * the GPU runs in that precision against the CPU in the same precision (cpu/bf16 needs oneDNN; a CPU
 * without it is the fp32 reference, with the same bf16 tolerances). The tolerances below are those
 * of strict fp32 (FM_CUDA_TF32=0); the table `tols` states the TF32 and bf16 ones, and every check
 * prints its measured value.
 *
 *   forward_backward: same weights (fm_model_init_weights, generated on the host), same batch: the
 *     mean loss agrees within rtol 1e-5, and every parameter tensor's gradient within a relative L2
 *     error ||g_gpu - g_cpu|| / ||g_cpu|| <= 1e-4 (both backends are fp32; only summation orders
 *     differ). Two shapes: T = max_seq_len and a shorter T with B = 1.
 *   train_20_steps: 20 AdamW steps (clipping 1.0) on the same batches on both backends: each step's
 *     loss agrees within rtol 1e-3 (the curves drift apart only by fp32 rounding), the final
 *     parameters within a relative L2 error of 1e-3, and the loss falls.
 *   repeat_bit_identical: two runs of 5 steps on the GPU from the same seed give bit-identical losses,
 *     parameters and optimizer moments.
 *   decode: decode models (K/V caches, fm_model_decode) on both backends with the same weights, a
 *     prompt of 10 tokens in one call then 6 single tokens, two sequences: every returned logit row
 *     agrees with the CPU's decode and with the GPU's own full forward within 1e-4 of the largest
 *     logit, and a second pass on the GPU is bit-identical.
 * Without a GPU the test exits 77, which CTest reports as skipped. */
#include "cuda_test_util.h"
#include "model/model.h"
#include "train/optimizer.h"

static const fm_model_shape SHAPE = {2, 2, 64, 32, 100, .arch = "gpt2"}; /* L, NH, C, maxT, V (Vp = 128) */

/* Tolerances of one precision: loss (relative), gradient (relative L2 per tensor), loss of each of
 * the 20 steps (relative), final parameters (relative L2), decode logits (of 1 + max |logit|). */
typedef struct tols {
    const char *what;
    double loss, grad, step, params, decode;
} tols;
static const tols TOL_FP32 = {"fp32", 1e-5, 1e-4, 1e-3, 1e-3, 1e-4};
/* TF32 products (u = 2^-11): 1/8 of bf16's error per product; measured values are printed */
static const tols TOL_TF32 = {"fp32 with TF32 matmuls", 1e-3, 1e-2, 5e-3, 2e-2, 2e-3};
/* bf16 activations on both sides: the two differ where an fp32 value that is rounded to bf16 differs
 * in its last bits (one bf16 step, 2^-8, on a few elements), then through AdamW over 20 steps */
static const tols TOL_BF16 = {"bf16", 1e-2, 5e-2, 2e-2, 1e-1, 2e-2};

static unsigned g_prec = FM_PRECISION_FP32; /* the GPU's precision (FM_TEST_PRECISION) */
static unsigned g_cpu_prec = FM_PRECISION_FP32; /* the CPU reference's */
static tols g_tol;

static void make_batch(uint64_t seed, int n, int V, int32_t *tokens, int32_t *targets)
{
    uint64_t s = seed;
    for (int i = 0; i < n; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        tokens[i] = (int32_t)((s >> 33) % (uint64_t)V);
        targets[i] = (int32_t)((tokens[i] * 7 + 3) % V);
    }
}

typedef struct run {
    fm_backend *be;
    fm_model *m;
    fm_optimizer *opt;
} run;

/* the instance of `backend` under test: the GPU in g_prec, the CPU reference in g_cpu_prec */
static void backend_open(const char *backend, fm_backend **be)
{
    const unsigned p = strcmp(backend, "cpu") == 0 ? g_cpu_prec : g_prec;
    cuda_test_ok(fm_backend_create_precision(backend, 2, 0, p, be));
}

static void run_open(run *r, const char *backend, int max_batch)
{
    backend_open(backend, &r->be);
    cuda_test_ok(fm_model_create(&SHAPE, r->be, max_batch, &r->m));
    cuda_test_ok(fm_model_init_weights(r->m, 1234));
    cuda_test_ok(fm_optimizer_create(r->m, &r->opt));
}

static void run_close(run *r)
{
    fm_optimizer_free(&r->opt);
    fm_model_free(&r->m);
    fm_backend_free(&r->be);
}

static float *host_floats(size_t n)
{
    float *p = malloc(n * sizeof *p);
    assert_non_null(p);
    return p;
}

/* relative L2 difference of a against the reference r */
static double rel_l2(const float *a, const float *r, size_t off, size_t n)
{
    double num = 0.0, den = 0.0;
    for (size_t i = off; i < off + n; i++) {
        const double d = (double)a[i] - (double)r[i];
        num += d * d;
        den += (double)r[i] * (double)r[i];
    }
    if (den == 0.0) return num == 0.0 ? 0.0 : INFINITY;
    return sqrt(num / den);
}

static void forward_backward_case(int B, int T)
{
    printf(" forward/backward B=%d T=%d\n", B, T);
    run r[2];
    run_open(&r[0], "cpu", B);
    run_open(&r[1], "cuda", B);
    int32_t *tok = malloc((size_t)B * T * sizeof *tok), *tgt = malloc((size_t)B * T * sizeof *tgt);
    assert_non_null(tok);
    assert_non_null(tgt);
    make_batch(99, B * T, SHAPE.vocab_size, tok, tgt);
    float loss[2];
    const size_t np = fm_model_num_params(r[0].m);
    float *g[2] = {host_floats(np), host_floats(np)};
    for (int k = 0; k < 2; k++) {
        cuda_test_ok(fm_model_forward(r[k].m, tok, tgt, B, T, &loss[k]));
        cuda_test_ok(fm_model_backward(r[k].m, 1.0f, NULL, NULL));
        cuda_test_ok(fm_model_get_grads(r[k].m, g[k]));
    }
    printf("  loss cpu %.9g gpu %.9g\n", (double)loss[0], (double)loss[1]);
    assert_true(isfinite(loss[1]));
    printf("  loss relative difference %.3g (tolerance %g, %s)\n",
           fabs((double)loss[1] - (double)loss[0]) / fabs((double)loss[0]), g_tol.loss, g_tol.what);
    assert_true(fabs((double)loss[1] - (double)loss[0]) <= g_tol.loss * fabs((double)loss[0]));
    double worst = 0.0;
    const char *worst_name = "";
    for (int i = 0; i < fm_model_num_tensors(r[0].m); i++) {
        const fm_model_tensor_info *t = fm_model_tensor(r[0].m, i);
        const double e = rel_l2(g[1], g[0], t->offset, t->numel);
        if (!(e <= worst)) {
            worst = e;
            worst_name = t->name;
        }
        if (!(e <= g_tol.grad))
            fail_msg("gradient of %s: relative L2 error %.3g > %g (%s)", t->name, e, g_tol.grad,
                     g_tol.what);
    }
    printf("  worst gradient relative L2 error %.3g (%s)\n", worst, worst_name);
    free(g[0]), free(g[1]), free(tok), free(tgt);
    run_close(&r[1]);
    run_close(&r[0]);
}

static void test_forward_backward(void **state)
{
    (void)state;
    forward_backward_case(4, SHAPE.max_seq_len);
    forward_backward_case(1, 19);
}

/* Trains `steps` steps; losses (steps) and, when given, final params/m/v on the host. */
static void train(const char *backend, int steps, float *losses, float *params, float *mom_m,
                  float *mom_v)
{
    const int B = 4, T = SHAPE.max_seq_len, NB = 4;
    run r;
    run_open(&r, backend, B);
    int32_t *tok = malloc((size_t)NB * B * T * sizeof *tok);
    int32_t *tgt = malloc((size_t)NB * B * T * sizeof *tgt);
    assert_non_null(tok);
    assert_non_null(tgt);
    make_batch(7, NB * B * T, SHAPE.vocab_size, tok, tgt);
    const fm_adamw_params hp = {3e-3f, 0.9f, 0.95f, 1e-8f, 0.1f};
    for (int s = 0; s < steps; s++) {
        const size_t off = (size_t)(s % NB) * B * T;
        cuda_test_ok(fm_model_forward(r.m, tok + off, tgt + off, B, T, &losses[s]));
        cuda_test_ok(fm_model_backward(r.m, 1.0f, NULL, NULL));
        double norm = 0.0;
        cuda_test_ok(fm_optimizer_grad_norm(r.opt, &norm));
        cuda_test_ok(fm_optimizer_step(r.opt, &hp, fm_optimizer_clip_scale(norm, 1.0)));
    }
    if (params) cuda_test_ok(fm_model_get_params(r.m, params));
    if (mom_m || mom_v) cuda_test_ok(fm_optimizer_get_state(r.opt, mom_m, mom_v));
    free(tok), free(tgt);
    run_close(&r);
}

static void test_train_20_steps(void **state)
{
    (void)state;
    enum { S = 20 };
    run probe;
    run_open(&probe, "cpu", 1);
    const size_t np = fm_model_num_params(probe.m);
    run_close(&probe);
    float lc[S], lg[S];
    float *pc = host_floats(np), *pg = host_floats(np);
    train("cpu", S, lc, pc, NULL, NULL);
    train("cuda", S, lg, pg, NULL, NULL);
    for (int s = 0; s < S; s++) {
        printf("  step %2d loss cpu %.7f gpu %.7f\n", s + 1, (double)lc[s], (double)lg[s]);
        assert_true(isfinite(lg[s]));
        if (!(fabs((double)lg[s] - (double)lc[s]) <= g_tol.step * fabs((double)lc[s])))
            fail_msg("step %d: gpu loss %.7f vs cpu %.7f (rtol %g, %s)", s + 1, (double)lg[s],
                     (double)lc[s], g_tol.step, g_tol.what);
    }
    const double e = rel_l2(pg, pc, 0, np);
    printf("  final parameters: relative L2 difference %.3g (tolerance %g, %s)\n", e, g_tol.params,
           g_tol.what);
    assert_true(e <= g_tol.params);
    assert_true(lg[S - 1] < lg[0] - 0.1f); /* it learns */
    free(pc), free(pg);
}

static void test_repeat_bit_identical(void **state)
{
    (void)state;
    enum { S = 5 };
    run probe;
    run_open(&probe, "cpu", 1);
    const size_t np = fm_model_num_params(probe.m);
    run_close(&probe);
    float l1[S], l2[S];
    float *p1 = host_floats(np), *p2 = host_floats(np), *m1 = host_floats(np), *m2 = host_floats(np);
    float *v1 = host_floats(np), *v2 = host_floats(np);
    train("cuda", S, l1, p1, m1, v1);
    train("cuda", S, l2, p2, m2, v2);
    assert_memory_equal(l1, l2, sizeof l1);
    assert_memory_equal(p1, p2, np * sizeof(float));
    assert_memory_equal(m1, m2, np * sizeof(float));
    assert_memory_equal(v1, v2, np * sizeof(float));
    printf("  %d GPU steps twice: losses, %zu parameters and both moments bit-identical\n", S, np);
    free(p1), free(p2), free(m1), free(m2), free(v1), free(v2);
}

/* max |a - r| over the V real logits of `rows` rows of Vp, and max |r| */
static void logit_diff(const float *a, const float *r, int rows, int Vp, int V, double *diff, double *mx)
{
    for (int i = 0; i < rows; i++)
        for (int v = 0; v < V; v++) {
            *diff = fmax(*diff, fabs((double)a[(size_t)i * Vp + v] - (double)r[(size_t)i * Vp + v]));
            *mx = fmax(*mx, fabs((double)r[(size_t)i * Vp + v]));
        }
}

static void test_decode(void **state)
{
    (void)state;
    enum { B = 2, T = 16, P = 10, R = T - P + 1 }; /* R decode calls: the prompt, then 6 tokens */
    const int V = SHAPE.vocab_size;
    run full;
    run_open(&full, "cuda", B); /* the GPU's full forward, seed 1234 */
    const int Vp = fm_model_get_padded_vocab(full.m);
    const size_t np = fm_model_num_params(full.m), row = (size_t)B * Vp;
    float *w = host_floats(np);
    cuda_test_ok(fm_model_get_params(full.m, w));
    fm_backend *be[2] = {NULL, NULL};
    fm_model *d[2] = {NULL, NULL};
    const char *names[2] = {"cpu", "cuda"};
    const fm_model_options o = {.mode = FM_MODEL_DECODE, .max_batch = B};
    for (int k = 0; k < 2; k++) {
        backend_open(names[k], &be[k]);
        cuda_test_ok(fm_model_create_opts(&SHAPE, be[k], &o, &d[k]));
        cuda_test_ok(fm_model_set_params(d[k], w));
    }
    int32_t tok[B * T], tgt[B * T], first[B * P], one[B];
    make_batch(31, B * T, V, tok, tgt);
    for (int b = 0; b < B; b++) memcpy(first + b * P, tok + b * T, P * sizeof *first);
    cuda_test_ok(fm_model_forward(full.m, tok, NULL, B, T, NULL));
    float *lg[2] = {host_floats(R * row), host_floats(R * row)}; /* (R, B, Vp) per backend */
    float *ref = host_floats(row), *again = host_floats(row);
    double d_cpu = 0, d_full = 0, mx = 0;
    for (int k = 0; k < 2; k++) {
        fm_model_decode_reset(d[k]);
        cuda_test_ok(fm_model_decode(d[k], first, B, P, lg[k]));
        for (int t = P; t < T; t++) {
            for (int b = 0; b < B; b++) one[b] = tok[b * T + t];
            cuda_test_ok(fm_model_decode(d[k], one, B, 1, lg[k] + (size_t)(t - P + 1) * row));
        }
        assert_int_equal(fm_model_decode_position(d[k]), T);
    }
    for (int r = 0; r < R; r++) { /* call r returned the logits of position P-1+r */
        for (int b = 0; b < B; b++)
            cuda_test_ok(fm_model_logits(full.m, b, P - 1 + r, ref + (size_t)b * Vp));
        logit_diff(lg[1] + (size_t)r * row, lg[0] + (size_t)r * row, B, Vp, V, &d_cpu, &mx);
        logit_diff(lg[1] + (size_t)r * row, ref, B, Vp, V, &d_full, &mx);
    }
    printf("  decode: max |logit| %.4g, gpu vs cpu decode %.3g, gpu decode vs gpu forward %.3g\n", mx,
           d_cpu, d_full);
    assert_true(mx > 1e-3);
    printf("  decode tolerance %g * (1 + max |logit|) (%s)\n", g_tol.decode, g_tol.what);
    assert_true(d_cpu <= g_tol.decode * (1.0 + mx));
    assert_true(d_full <= g_tol.decode * (1.0 + mx));
    /* the same calls again on the GPU: bit-identical */
    fm_model_decode_reset(d[1]);
    cuda_test_ok(fm_model_decode(d[1], first, B, P, again));
    assert_memory_equal(again, lg[1], row * sizeof *again);
    for (int t = P; t < T; t++) {
        for (int b = 0; b < B; b++) one[b] = tok[b * T + t];
        cuda_test_ok(fm_model_decode(d[1], one, B, 1, again));
        assert_memory_equal(again, lg[1] + (size_t)(t - P + 1) * row, row * sizeof *again);
    }
    free(lg[0]), free(lg[1]), free(ref), free(again), free(w);
    for (int k = 0; k < 2; k++) {
        fm_model_free(&d[k]);
        fm_backend_free(&be[k]);
    }
    run_close(&full);
}

int main(void)
{
    int skip = cuda_test_need_gpu("test_cuda_model");
    if (skip) return skip;
    const char *p = getenv("FM_TEST_PRECISION");
    if (p && strcmp(p, "bf16") == 0) {
        g_prec = FM_PRECISION_BF16;
        g_tol = TOL_BF16;
        fm_backend *probe = NULL;
        fm_status st = fm_backend_create_precision("cpu", 1, 0, FM_PRECISION_BF16, &probe);
        if (st) {
            printf("test_cuda_model: the CPU backend has no bf16 here (%s): the reference is cpu "
                   "fp32\n", fm_status_message(st));
            fm_status_free(&st);
        } else {
            g_cpu_prec = FM_PRECISION_BF16;
            fm_backend_free(&probe);
        }
    } else if (p && *p && strcmp(p, "fp32") != 0) {
        fprintf(stderr, "test_cuda_model: FM_TEST_PRECISION=%s: expected fp32 or bf16\n", p);
        return 1;
    } else {
        const char *tf = getenv("FM_CUDA_TF32"); /* the backend's rule (cuda_internal.cuh) */
        g_tol = tf && *tf && strcmp(tf, "0") == 0 ? TOL_FP32 : TOL_TF32;
    }
    printf("test_cuda_model: GPU %s against CPU %s, tolerances of %s\n", fm_precision_name(g_prec),
           fm_precision_name(g_cpu_prec), g_tol.what);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_backward),
        cmocka_unit_test(test_train_20_steps),
        cmocka_unit_test(test_repeat_bit_identical),
        cmocka_unit_test(test_decode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

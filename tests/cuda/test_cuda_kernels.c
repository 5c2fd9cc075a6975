/* test_cuda_kernels.c — every CUDA op against the CPU op (the reference backend, itself tested
 * against double-precision references in tests/kernels) on the same random inputs.
 *
 * Both backends receive identical host inputs; buffers the op accumulates into are pre-filled with the
 * same random values (so "+=" is checked), buffers it overwrites are pre-filled with different garbage
 * on the two backends (so a missed element shows). The CUDA backend is fp32 (act_bytes 4), so the
 * tolerances are fp32 tolerances; element i passes when |gpu - cpu| <= atol + rtol * |cpu|:
 *   encoder fwd/bwd, residual fwd                  exact (same additions in the same order)
 *   layernorm fwd: out, mean, rstd                  rtol 1e-5, atol 1e-5
 *   layernorm bwd: dinp / dweight, dbias            rtol 1e-4, atol 1e-5 / rtol 1e-4, atol 1e-4
 *   matmul fwd/bwd (K <= 200)                       rtol 1e-4, atol 1e-4
 *   gelu fwd/bwd                                    rtol 1e-5, atol 1e-6
 *   attention fwd: out, lse; bwd: dqkv              rtol 1e-4, atol 1e-5; rtol 1e-4, atol 1e-4
 *   softmax_xent fwd: losses, lse; bwd: dlogits     rtol 1e-5, atol 1e-5; rtol 1e-4, atol 1e-8
 *   adamw: params, m, v; grads                      rtol 1e-5, atol 1e-7; exactly 0
 *   sum_squares (double)                            rtol 1e-12
 * matmul and attention are also run twice on the GPU and must be bit-identical (sum_squares too).
 * Without a GPU the test exits 77, which CTest reports as skipped. */
#include "cuda_test_util.h"

static fm_backend *g_be[2]; /* 0: cpu, 1: cuda */

/* ---- buffers on both backends ------------------------------------------------------------------ */

typedef struct dbuf {
    void *d[2];
    size_t bytes;
} dbuf;

/* Allocates `bytes` on both backends; uploads `host` (may be NULL: stays zero) to both. */
static dbuf dbuf_new(const void *host, size_t bytes)
{
    dbuf b = {{NULL, NULL}, bytes};
    for (int k = 0; k < 2; k++) {
        cuda_test_ok(g_be[k]->ops->alloc(g_be[k], &b.d[k], bytes));
        if (host) cuda_test_ok(g_be[k]->ops->upload(g_be[k], b.d[k], host, bytes));
    }
    return b;
}

/* Uploads different garbage to the two copies (for outputs that must be overwritten). */
static void dbuf_garbage(dbuf *b, uint64_t seed)
{
    size_t n = b->bytes / sizeof(float);
    float *h = malloc(n * sizeof *h + 1);
    assert_non_null(h);
    for (int k = 0; k < 2; k++) {
        cuda_test_rng r = {seed + 17u * (uint64_t)k};
        for (size_t i = 0; i < n; i++) h[i] = (float)(1e3 * (cuda_test_uniform(&r) - 0.5));
        cuda_test_ok(g_be[k]->ops->upload(g_be[k], b->d[k], h, n * sizeof *h));
    }
    free(h);
}

static void dbuf_free(dbuf *b)
{
    for (int k = 0; k < 2; k++)
        if (b->d[k]) g_be[k]->ops->free(g_be[k], b->d[k]);
    b->d[0] = b->d[1] = NULL;
}

static float *F(dbuf *b, int k) { return (float *)b->d[k]; }
static const int32_t *I(dbuf *b, int k) { return (const int32_t *)b->d[k]; }

static float *randf(uint64_t seed, size_t n, double lo, double hi)
{
    cuda_test_rng r = {seed};
    float *x = malloc((n ? n : 1) * sizeof *x);
    assert_non_null(x);
    for (size_t i = 0; i < n; i++) x[i] = (float)(lo + (hi - lo) * cuda_test_uniform(&r));
    return x;
}

static int32_t *randi(uint64_t seed, size_t n, int hi)
{
    cuda_test_rng r = {seed};
    int32_t *x = malloc((n ? n : 1) * sizeof *x);
    assert_non_null(x);
    for (size_t i = 0; i < n; i++) x[i] = (int32_t)(cuda_test_uniform(&r) * hi);
    return x;
}

static void sync_both(void)
{
    for (int k = 0; k < 2; k++) cuda_test_ok(g_be[k]->ops->sync(g_be[k]));
}

/* Downloads n floats of both copies and compares them; prints the worst element. */
static void compare(const char *what, dbuf *b, size_t n, double rtol, double atol)
{
    float *h[2];
    for (int k = 0; k < 2; k++) {
        h[k] = malloc((n ? n : 1) * sizeof(float));
        assert_non_null(h[k]);
        cuda_test_ok(g_be[k]->ops->download(g_be[k], h[k], b->d[k], n * sizeof(float)));
    }
    double worst = 0.0, maxabs = 0.0;
    size_t wi = 0;
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        const double c = h[0][i], g = h[1][i];
        const double err = fabs(g - c);
        const double lim = atol + rtol * fabs(c);
        if (!(err <= lim)) bad++; /* NaN fails */
        const double ratio = lim > 0.0 ? err / lim : (err > 0.0 ? INFINITY : 0.0);
        if (!(ratio <= worst) || (i == 0 && ratio == 0.0)) {
            worst = ratio;
            wi = i;
        }
        if (err > maxabs) maxabs = err;
    }
    printf("  %-34s n=%-8zu max|gpu-cpu|=%.3g  worst/limit=%.3g at %zu (cpu %.9g gpu %.9g)%s\n", what,
           n, maxabs, worst, wi, n ? (double)h[0][wi] : 0.0, n ? (double)h[1][wi] : 0.0,
           bad ? "  FAIL" : "");
    free(h[0]);
    free(h[1]);
    if (bad) fail_msg("%s: %d of %zu elements outside rtol %g atol %g", what, bad, n, rtol, atol);
}

/* Bit-wise equality of two CUDA buffers of n floats (the repeat check of an op). */
static void same_bits(const char *what, const void *a, const void *b, size_t n)
{
    fm_backend *be = g_be[1];
    float *ha = malloc((n ? n : 1) * sizeof(float)), *hb = malloc((n ? n : 1) * sizeof(float));
    assert_non_null(ha);
    assert_non_null(hb);
    cuda_test_ok(be->ops->download(be, ha, a, n * sizeof(float)));
    cuda_test_ok(be->ops->download(be, hb, b, n * sizeof(float)));
    const int same = memcmp(ha, hb, n * sizeof(float)) == 0;
    printf("  %-34s repeat on the GPU: %s\n", what, same ? "bit-identical" : "DIFFERENT");
    free(ha);
    free(hb);
    if (!same) fail_msg("%s: two GPU runs on the same inputs differ", what);
}

/* ---- tests ------------------------------------------------------------------------------------ */

static void test_alloc_zero(void **state)
{
    (void)state;
    fm_backend *be = g_be[1];
    const size_t n = 100003;
    void *p = NULL;
    cuda_test_ok(be->ops->alloc(be, &p, n * sizeof(float)));
    float *h = malloc(n * sizeof *h);
    assert_non_null(h);
    cuda_test_ok(be->ops->download(be, h, p, n * sizeof *h));
    for (size_t i = 0; i < n; i++) assert_true(h[i] == 0.0f);
    for (size_t i = 0; i < n; i++) h[i] = (float)i;
    cuda_test_ok(be->ops->upload(be, p, h, n * sizeof *h));
    be->ops->zero(be, (float *)p + 10, 100 * sizeof(float));
    cuda_test_ok(be->ops->sync(be));
    cuda_test_ok(be->ops->download(be, h, p, n * sizeof *h));
    for (size_t i = 0; i < n; i++) assert_true(h[i] == (i >= 10 && i < 110 ? 0.0f : (float)i));
    be->ops->free(be, p);
    free(h);
}

static void test_encoder(void **state)
{
    (void)state;
    const int B = 3, T = 17, C = 40, Vp = 128, maxT = 20;
    int32_t *tok = randi(1, (size_t)B * T, 10); /* many repeated tokens */
    float *wte = randf(2, (size_t)Vp * C, -1, 1), *wpe = randf(3, (size_t)maxT * C, -1, 1);
    float *dout = randf(4, (size_t)B * T * C, -1, 1);
    dbuf dtok = dbuf_new(tok, (size_t)B * T * sizeof(int32_t));
    dbuf dwte_p = dbuf_new(wte, (size_t)Vp * C * sizeof(float));
    dbuf dwpe_p = dbuf_new(wpe, (size_t)maxT * C * sizeof(float));
    dbuf out = dbuf_new(NULL, (size_t)B * T * C * sizeof(float));
    dbuf_garbage(&out, 5);
    dbuf ddout = dbuf_new(dout, (size_t)B * T * C * sizeof(float));
    dbuf dwte = dbuf_new(wte, (size_t)Vp * C * sizeof(float)); /* accumulate onto random values */
    dbuf dwpe = dbuf_new(wpe, (size_t)maxT * C * sizeof(float));
    for (int k = 0; k < 2; k++) {
        g_be[k]->ops->encoder_forward(g_be[k], F(&out, k), I(&dtok, k), F(&dwte_p, k),
                                      F(&dwpe_p, k), B, T, C);
        g_be[k]->ops->encoder_backward(g_be[k], F(&dwte, k), F(&dwpe, k), F(&ddout, k), I(&dtok, k),
                                       B, T, C);
    }
    sync_both();
    compare("encoder_forward out", &out, (size_t)B * T * C, 0, 0);
    compare("encoder_backward dwte", &dwte, (size_t)Vp * C, 0, 0);
    compare("encoder_backward dwpe", &dwpe, (size_t)maxT * C, 0, 0);
    dbuf_free(&dtok), dbuf_free(&dwte_p), dbuf_free(&dwpe_p), dbuf_free(&out), dbuf_free(&ddout);
    dbuf_free(&dwte), dbuf_free(&dwpe);
    free(tok), free(wte), free(wpe), free(dout);
}

static void layernorm_case(int N, int C, uint64_t seed)
{
    printf(" layernorm N=%d C=%d\n", N, C);
    const size_t NC = (size_t)N * C;
    float *x = randf(seed, NC, -2, 3), *w = randf(seed + 1, (size_t)C, 0.5, 1.5);
    float *b = randf(seed + 2, (size_t)C, -0.5, 0.5), *dout = randf(seed + 3, NC, -1, 1);
    float *acc = randf(seed + 4, NC, -1, 1), *pacc = randf(seed + 5, (size_t)C, -1, 1);
    dbuf dx = dbuf_new(x, NC * 4), dw = dbuf_new(w, (size_t)C * 4), db = dbuf_new(b, (size_t)C * 4);
    dbuf out = dbuf_new(NULL, NC * 4), mean = dbuf_new(NULL, (size_t)N * 4);
    dbuf rstd = dbuf_new(NULL, (size_t)N * 4);
    dbuf_garbage(&out, seed + 6), dbuf_garbage(&mean, seed + 7), dbuf_garbage(&rstd, seed + 8);
    dbuf ddout = dbuf_new(dout, NC * 4), dinp = dbuf_new(acc, NC * 4);
    dbuf dwt = dbuf_new(pacc, (size_t)C * 4), dbs = dbuf_new(pacc, (size_t)C * 4);
    for (int k = 0; k < 2; k++) {
        fm_backend *be = g_be[k];
        be->ops->layernorm_forward(be, F(&out, k), F(&mean, k), F(&rstd, k), F(&dx, k), F(&dw, k),
                                   F(&db, k), N, C);
    }
    sync_both();
    compare("layernorm_forward out", &out, NC, 1e-5, 1e-5);
    compare("layernorm_forward mean", &mean, (size_t)N, 1e-5, 1e-5);
    compare("layernorm_forward rstd", &rstd, (size_t)N, 1e-5, 1e-5);
    /* backward from the CPU's mean/rstd on both, so only the backward differs */
    float *hm = malloc((size_t)N * 4), *hr = malloc((size_t)N * 4);
    assert_non_null(hm);
    assert_non_null(hr);
    cuda_test_ok(g_be[0]->ops->download(g_be[0], hm, mean.d[0], (size_t)N * 4));
    cuda_test_ok(g_be[0]->ops->download(g_be[0], hr, rstd.d[0], (size_t)N * 4));
    cuda_test_ok(g_be[1]->ops->upload(g_be[1], mean.d[1], hm, (size_t)N * 4));
    cuda_test_ok(g_be[1]->ops->upload(g_be[1], rstd.d[1], hr, (size_t)N * 4));
    for (int k = 0; k < 2; k++) {
        fm_backend *be = g_be[k];
        be->ops->layernorm_backward(be, F(&dinp, k), F(&dwt, k), F(&dbs, k), F(&ddout, k), F(&dx, k),
                                    F(&dw, k), F(&mean, k), F(&rstd, k), N, C);
    }
    sync_both();
    compare("layernorm_backward dinp (+=)", &dinp, NC, 1e-4, 1e-5);
    compare("layernorm_backward dweight (+=)", &dwt, (size_t)C, 1e-4, 1e-4);
    compare("layernorm_backward dbias (+=)", &dbs, (size_t)C, 1e-4, 1e-4);
    dbuf *all[] = {&dx, &dw, &db, &out, &mean, &rstd, &ddout, &dinp, &dwt, &dbs};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) dbuf_free(all[i]);
    free(x), free(w), free(b), free(dout), free(acc), free(pacc), free(hm), free(hr);
}

static void test_layernorm(void **state)
{
    (void)state;
    layernorm_case(37, 100, 10);
    layernorm_case(64, 768, 20);
    layernorm_case(5, 7, 30);
}

static void test_residual(void **state)
{
    (void)state;
    const size_t n = 10007;
    float *a = randf(40, n, -1, 1), *b = randf(41, n, -1, 1);
    dbuf da = dbuf_new(a, n * 4), db = dbuf_new(b, n * 4);
    dbuf out = dbuf_new(NULL, n * 4);
    dbuf_garbage(&out, 43);
    for (int k = 0; k < 2; k++)
        g_be[k]->ops->residual_forward(g_be[k], F(&out, k), F(&da, k), F(&db, k), n);
    sync_both();
    compare("residual_forward out", &out, n, 0, 0);
    dbuf_free(&da), dbuf_free(&db), dbuf_free(&out);
    free(a), free(b);
}

/* bias_off: the bias starts this many floats into its buffer (1 = only 4-byte aligned) */
static void matmul_case(int N, int C, int OC, int with_bias, int bias_off, int with_dinp,
                        uint64_t seed)
{
    printf(" matmul N=%d C=%d OC=%d bias=%d (offset %d) dinp=%d\n", N, C, OC, with_bias, bias_off,
           with_dinp);
    float *x = randf(seed, (size_t)N * C, -1, 1), *w = randf(seed + 1, (size_t)OC * C, -1, 1);
    float *bias = randf(seed + 2, (size_t)OC + 1, -1, 1);
    float *dout = randf(seed + 3, (size_t)N * OC, -1, 1);
    float *wacc = randf(seed + 4, (size_t)OC * C, -1, 1), *bacc = randf(seed + 5, (size_t)OC + 1, -1, 1);
    dbuf dx = dbuf_new(x, (size_t)N * C * 4), dw = dbuf_new(w, (size_t)OC * C * 4);
    dbuf db = dbuf_new(bias, ((size_t)OC + 1) * 4), ddout = dbuf_new(dout, (size_t)N * OC * 4);
    dbuf out = dbuf_new(NULL, (size_t)N * OC * 4), dinp = dbuf_new(NULL, (size_t)N * C * 4);
    dbuf dwt = dbuf_new(wacc, (size_t)OC * C * 4), dbs = dbuf_new(bacc, ((size_t)OC + 1) * 4);
    dbuf_garbage(&out, seed + 6), dbuf_garbage(&dinp, seed + 7);
    for (int k = 0; k < 2; k++) {
        fm_backend *be = g_be[k];
        be->ops->matmul_forward(be, F(&out, k), F(&dx, k), F(&dw, k),
                                with_bias ? F(&db, k) + bias_off : NULL, N, C, OC);
        be->ops->matmul_backward(be, with_dinp ? F(&dinp, k) : NULL, F(&dwt, k),
                                 with_bias ? F(&dbs, k) + bias_off : NULL, F(&ddout, k), F(&dx, k),
                                 F(&dw, k), N, C, OC);
    }
    sync_both();
    compare("matmul_forward out", &out, (size_t)N * OC, 1e-4, 1e-4);
    if (with_dinp) compare("matmul_backward dinp", &dinp, (size_t)N * C, 1e-4, 1e-4);
    compare("matmul_backward dweight (+=)", &dwt, (size_t)OC * C, 1e-4, 1e-4);
    compare("matmul_backward dbias (+=, or untouched)", &dbs, (size_t)OC + 1, 1e-4, 1e-4);
    { /* the same products again on the GPU: bit-identical */
        fm_backend *be = g_be[1];
        void *o2 = NULL, *w2 = NULL, *i2 = NULL;
        cuda_test_ok(be->ops->alloc(be, &o2, (size_t)N * OC * 4));
        cuda_test_ok(be->ops->alloc(be, &i2, (size_t)N * C * 4));
        cuda_test_ok(be->ops->alloc(be, &w2, (size_t)OC * C * 4));
        cuda_test_ok(be->ops->upload(be, w2, wacc, (size_t)OC * C * 4));
        be->ops->matmul_forward(be, o2, F(&dx, 1), F(&dw, 1), with_bias ? F(&db, 1) + bias_off : NULL,
                                N, C, OC);
        be->ops->matmul_backward(be, with_dinp ? i2 : NULL, w2, NULL, F(&ddout, 1), F(&dx, 1),
                                 F(&dw, 1), N, C, OC);
        cuda_test_ok(be->ops->sync(be));
        same_bits("matmul_forward out", out.d[1], o2, (size_t)N * OC);
        if (with_dinp) same_bits("matmul_backward dinp", dinp.d[1], i2, (size_t)N * C);
        same_bits("matmul_backward dweight", dwt.d[1], w2, (size_t)OC * C);
        be->ops->free(be, o2);
        be->ops->free(be, i2);
        be->ops->free(be, w2);
    }
    dbuf *all[] = {&dx, &dw, &db, &ddout, &out, &dinp, &dwt, &dbs};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) dbuf_free(all[i]);
    free(x), free(w), free(bias), free(dout), free(wacc), free(bacc);
}

static void test_matmul(void **state)
{
    (void)state;
    matmul_case(37, 40, 72, 1, 0, 1, 50);
    matmul_case(64, 96, 288, 1, 0, 1, 60);
    matmul_case(64, 96, 128, 0, 0, 1, 70);   /* no bias (LM head) */
    matmul_case(50, 33, 130, 1, 1, 0, 80);   /* odd sizes, 4-byte aligned bias, no dinp */
    matmul_case(200, 200, 64, 1, 0, 1, 90);
}

static void test_gelu(void **state)
{
    (void)state;
    const size_t n = 10007;
    float *x = randf(100, n, -6, 6), *d = randf(101, n, -1, 1);
    dbuf dx = dbuf_new(x, n * 4), dd = dbuf_new(d, n * 4), out = dbuf_new(NULL, n * 4);
    dbuf din = dbuf_new(NULL, n * 4);
    dbuf_garbage(&out, 102), dbuf_garbage(&din, 103);
    for (int k = 0; k < 2; k++) {
        g_be[k]->ops->gelu_forward(g_be[k], F(&out, k), F(&dx, k), n);
        g_be[k]->ops->gelu_backward(g_be[k], F(&din, k), F(&dx, k), F(&dd, k), n);
        g_be[k]->ops->gelu_backward(g_be[k], F(&dd, k), F(&dx, k), F(&dd, k), n); /* dinp == dout */
    }
    sync_both();
    compare("gelu_forward out", &out, n, 1e-5, 1e-6);
    compare("gelu_backward dinp", &din, n, 1e-5, 1e-6);
    compare("gelu_backward dinp aliasing dout", &dd, n, 1e-5, 1e-6);
    dbuf_free(&dx), dbuf_free(&dd), dbuf_free(&out), dbuf_free(&din);
    free(x), free(d);
}

static void attention_case(int B, int T, int C, int NH, uint64_t seed)
{
    printf(" attention B=%d T=%d C=%d NH=%d (hs %d)\n", B, T, C, NH, C / NH);
    const size_t n3 = (size_t)B * T * 3 * C, n1 = (size_t)B * T * C, nl = (size_t)B * NH * T;
    float *qkv = randf(seed, n3, -2, 2), *dout = randf(seed + 1, n1, -1, 1);
    dbuf dq = dbuf_new(qkv, n3 * 4), dd = dbuf_new(dout, n1 * 4);
    dbuf out = dbuf_new(NULL, n1 * 4), lse = dbuf_new(NULL, nl * 4), dqkv = dbuf_new(NULL, n3 * 4);
    dbuf_garbage(&out, seed + 2), dbuf_garbage(&lse, seed + 3), dbuf_garbage(&dqkv, seed + 4);
    for (int k = 0; k < 2; k++)
        g_be[k]->ops->attention_forward(g_be[k], F(&out, k), F(&lse, k), F(&dq, k), B, T, C, NH);
    sync_both();
    compare("attention_forward out", &out, n1, 1e-4, 1e-5);
    compare("attention_forward lse", &lse, nl, 1e-4, 1e-5);
    /* backward from the CPU's out and lse on both */
    float *h = malloc(n1 * 4);
    assert_non_null(h);
    cuda_test_ok(g_be[0]->ops->download(g_be[0], h, out.d[0], n1 * 4));
    cuda_test_ok(g_be[1]->ops->upload(g_be[1], out.d[1], h, n1 * 4));
    cuda_test_ok(g_be[0]->ops->download(g_be[0], h, lse.d[0], nl * 4));
    cuda_test_ok(g_be[1]->ops->upload(g_be[1], lse.d[1], h, nl * 4));
    for (int k = 0; k < 2; k++)
        g_be[k]->ops->attention_backward(g_be[k], F(&dqkv, k), F(&dd, k), F(&dq, k), F(&out, k),
                                         F(&lse, k), B, T, C, NH);
    sync_both();
    compare("attention_backward dqkv", &dqkv, n3, 1e-4, 1e-4);
    { /* forward and backward again on the GPU (inputs unchanged): bit-identical */
        fm_backend *be = g_be[1];
        void *o2 = NULL, *l2 = NULL, *d2 = NULL;
        cuda_test_ok(be->ops->alloc(be, &o2, n1 * 4));
        cuda_test_ok(be->ops->alloc(be, &l2, nl * 4));
        cuda_test_ok(be->ops->alloc(be, &d2, n3 * 4));
        be->ops->attention_forward(be, o2, l2, F(&dq, 1), B, T, C, NH);
        be->ops->attention_backward(be, d2, F(&dd, 1), F(&dq, 1), F(&out, 1), F(&lse, 1), B, T, C, NH);
        cuda_test_ok(be->ops->sync(be));
        same_bits("attention_backward dqkv", dqkv.d[1], d2, n3);
        be->ops->attention_forward(be, F(&out, 1), F(&lse, 1), F(&dq, 1), B, T, C, NH);
        cuda_test_ok(be->ops->sync(be));
        same_bits("attention_forward out", out.d[1], o2, n1);
        same_bits("attention_forward lse", lse.d[1], l2, nl);
        be->ops->free(be, o2);
        be->ops->free(be, l2);
        be->ops->free(be, d2);
    }
    dbuf_free(&dq), dbuf_free(&dd), dbuf_free(&out), dbuf_free(&lse), dbuf_free(&dqkv);
    free(qkv), free(dout), free(h);
}

static void test_attention(void **state)
{
    (void)state;
    attention_case(2, 37, 32, 2, 110);  /* hs 16, T not a multiple of 32 */
    attention_case(1, 70, 128, 2, 120); /* hs 64 (GPT-2) */
    attention_case(2, 64, 48, 3, 130);
    attention_case(1, 33, 40, 1, 140);  /* hs 40: lanes with no head dimension */
    attention_case(1, 1, 8, 2, 150);    /* T = 1 */
}

/* attention_decode in chunks of Tq = 1, 3 and the rest from pos0 = 0 on both backends: the GPU's
 * decoded rows against the CPU's, and against the GPU's attention_forward on the full sequence. */
static void decode_case(int B, int T, int C, int NH, uint64_t seed)
{
    printf(" attention_decode B=%d T=%d C=%d NH=%d\n", B, T, C, NH);
    const int maxT = T + 3, chunks[3] = {1, 3, T - 4};
    const size_t n3 = (size_t)B * T * 3 * C, n1 = (size_t)B * T * C;
    float *qkv = randf(seed, n3, -2, 2), *q = malloc(n3 * 4), *h = malloc(n1 * 4);
    assert_non_null(q);
    assert_non_null(h);
    dbuf full_in = dbuf_new(qkv, n3 * 4), full = dbuf_new(NULL, n1 * 4);
    dbuf lse = dbuf_new(NULL, (size_t)B * NH * T * 4), dec = dbuf_new(NULL, n1 * 4);
    dbuf kc = dbuf_new(NULL, (size_t)B * maxT * C * 4), vc = dbuf_new(NULL, (size_t)B * maxT * C * 4);
    dbuf qc = dbuf_new(NULL, n3 * 4), oc = dbuf_new(NULL, n1 * 4);
    for (int k = 0; k < 2; k++) {
        fm_backend *be = g_be[k];
        be->ops->attention_forward(be, F(&full, k), F(&lse, k), F(&full_in, k), B, T, C, NH);
        for (int c = 0, pos0 = 0; c < 3; pos0 += chunks[c], c++) {
            const int Tq = chunks[c];
            for (int b = 0; b < B; b++)
                memcpy(q + (size_t)b * Tq * 3 * C, qkv + ((size_t)b * T + pos0) * 3 * C,
                       (size_t)Tq * 3 * C * 4);
            cuda_test_ok(be->ops->upload(be, qc.d[k], q, (size_t)B * Tq * 3 * C * 4));
            be->ops->attention_decode(be, F(&oc, k), F(&kc, k), F(&vc, k), F(&qc, k), B, Tq, pos0,
                                      maxT, C, NH);
            cuda_test_ok(be->ops->download(be, q, oc.d[k], (size_t)B * Tq * C * 4));
            for (int b = 0; b < B; b++) /* scatter the chunk's rows into the (B,T,C) result */
                memcpy(h + ((size_t)b * T + pos0) * C, q + (size_t)b * Tq * C, (size_t)Tq * C * 4);
        }
        cuda_test_ok(be->ops->upload(be, dec.d[k], h, n1 * 4));
    }
    sync_both();
    compare("attention_decode out", &dec, n1, 1e-4, 1e-5);
    { /* the GPU's decoded rows against its own full-sequence forward */
        float *g = malloc(n1 * 4);
        assert_non_null(g);
        cuda_test_ok(g_be[1]->ops->download(g_be[1], g, full.d[1], n1 * 4));
        cuda_test_ok(g_be[1]->ops->download(g_be[1], h, dec.d[1], n1 * 4));
        for (size_t i = 0; i < n1; i++)
            if (!(fabs((double)h[i] - g[i]) <= 1e-5 + 1e-5 * fabs((double)g[i])))
                fail_msg("attention_decode: element %zu is %.9g, attention_forward gives %.9g", i,
                         (double)h[i], (double)g[i]);
        free(g);
    }
    dbuf *all[] = {&full_in, &full, &lse, &dec, &kc, &vc, &qc, &oc};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) dbuf_free(all[i]);
    free(qkv), free(q), free(h);
}

static void test_attention_decode(void **state)
{
    (void)state;
    decode_case(2, 37, 32, 2, 190);  /* hs 16 */
    decode_case(1, 70, 128, 2, 191); /* hs 64 (GPT-2), more than two chunks of 32 keys */
}

static void softmax_case(int N, int V, int Vp, uint64_t seed)
{
    printf(" softmax_xent N=%d V=%d Vp=%d\n", N, V, Vp);
    float *logits = randf(seed, (size_t)N * Vp, -5, 5);
    int32_t *tg = randi(seed + 1, (size_t)N, V);
    tg[0] = V - 1; /* the last real column */
    dbuf dl = dbuf_new(logits, (size_t)N * Vp * 4), dt = dbuf_new(tg, (size_t)N * 4);
    dbuf losses = dbuf_new(NULL, (size_t)N * 4), lse = dbuf_new(NULL, (size_t)N * 4);
    dbuf_garbage(&losses, seed + 2), dbuf_garbage(&lse, seed + 3);
    for (int k = 0; k < 2; k++)
        g_be[k]->ops->softmax_xent_forward(g_be[k], F(&losses, k), F(&lse, k), F(&dl, k), I(&dt, k), N,
                                           V, Vp);
    sync_both();
    compare("softmax_xent_forward losses", &losses, (size_t)N, 1e-5, 1e-5);
    compare("softmax_xent_forward lse", &lse, (size_t)N, 1e-5, 1e-5);
    float *h = malloc((size_t)N * 4);
    assert_non_null(h);
    cuda_test_ok(g_be[0]->ops->download(g_be[0], h, lse.d[0], (size_t)N * 4));
    cuda_test_ok(g_be[1]->ops->upload(g_be[1], lse.d[1], h, (size_t)N * 4));
    const float dloss = 1.0f / (float)N;
    for (int k = 0; k < 2; k++)
        g_be[k]->ops->softmax_xent_backward(g_be[k], F(&dl, k), F(&lse, k), I(&dt, k), dloss, N, V, Vp);
    sync_both();
    compare("softmax_xent_backward dlogits", &dl, (size_t)N * Vp, 1e-4, 1e-8);
    dbuf_free(&dl), dbuf_free(&dt), dbuf_free(&losses), dbuf_free(&lse);
    free(logits), free(tg), free(h);
}

static void test_softmax_xent(void **state)
{
    (void)state;
    softmax_case(13, 1000, 1024, 160);
    softmax_case(7, 100, 128, 170);
    softmax_case(4, 50257, 50304, 180); /* GPT-2's vocabulary */
}

static void test_adamw(void **state)
{
    (void)state;
    const size_t n = 10007;
    float *p = randf(200, n, -1, 1), *g = randf(201, n, -0.1, 0.1);
    float *m = randf(202, n, -0.01, 0.01), *v = randf(203, n, 0, 1e-4);
    dbuf dp = dbuf_new(p, n * 4), dg = dbuf_new(g, n * 4), dm = dbuf_new(m, n * 4);
    dbuf dv = dbuf_new(v, n * 4);
    for (int k = 0; k < 2; k++)
        g_be[k]->ops->adamw_update(g_be[k], F(&dp, k), F(&dg, k), F(&dm, k), F(&dv, k), n, 1e-3f,
                                   0.9f, 0.95f, 1e-8f, 0.1f, 0.7f, 3);
    sync_both();
    compare("adamw_update params", &dp, n, 1e-5, 1e-7);
    compare("adamw_update m", &dm, n, 1e-5, 1e-7);
    compare("adamw_update v", &dv, n, 1e-5, 1e-7);
    compare("adamw_update grads (zeroed)", &dg, n, 0, 0);
    float *h = malloc(n * 4);
    assert_non_null(h);
    cuda_test_ok(g_be[1]->ops->download(g_be[1], h, dg.d[1], n * 4));
    for (size_t i = 0; i < n; i++) assert_true(h[i] == 0.0f);
    dbuf_free(&dp), dbuf_free(&dg), dbuf_free(&dm), dbuf_free(&dv);
    free(p), free(g), free(m), free(v), free(h);
}

static void test_sum_squares(void **state)
{
    (void)state;
    const size_t sizes[] = {1, 255, 257, 1000003, 3000017};
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        const size_t n = sizes[s];
        float *x = randf(300 + s, n, -1, 1);
        dbuf dx = dbuf_new(x, n * 4);
        double r[2], again;
        for (int k = 0; k < 2; k++) g_be[k]->ops->sum_squares(g_be[k], &r[k], F(&dx, k), n);
        g_be[1]->ops->sum_squares(g_be[1], &again, F(&dx, 1), n);
        sync_both();
        printf("  sum_squares n=%-8zu cpu %.17g gpu %.17g\n", n, r[0], r[1]);
        assert_true(fabs(r[1] - r[0]) <= 1e-12 * fabs(r[0]));
        assert_memory_equal(&again, &r[1], sizeof again); /* repeat: bit-identical */
        dbuf_free(&dx);
        free(x);
    }
    double z = -1.0;
    g_be[1]->ops->sum_squares(g_be[1], &z, NULL, 0);
    assert_true(z == 0.0);
}

static int setup(void **state)
{
    (void)state;
    fm_status st = fm_backend_create("cpu", 2, -1, &g_be[0]);
    if (!st) st = fm_backend_create("cuda", 1, 0, &g_be[1]);
    if (st) {
        fm_status_print(st, stderr, 1);
        fm_status_free(&st);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    fm_backend_free(&g_be[1]);
    fm_backend_free(&g_be[0]);
    return 0;
}

int main(void)
{
    int skip = cuda_test_need_gpu("test_cuda_kernels");
    if (skip) return skip;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alloc_zero), cmocka_unit_test(test_encoder),
        cmocka_unit_test(test_layernorm),  cmocka_unit_test(test_residual),
        cmocka_unit_test(test_matmul),     cmocka_unit_test(test_gelu),
        cmocka_unit_test(test_attention),  cmocka_unit_test(test_attention_decode),
        cmocka_unit_test(test_softmax_xent),
        cmocka_unit_test(test_adamw),      cmocka_unit_test(test_sum_squares),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

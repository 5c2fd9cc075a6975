/* test_cpu.c — the CPU kernels against double-precision reference implementations.
 *
 * For every op (GPT-2's and Llama's): the forward is compared with a double reference written here; the backward is
 * compared with central finite differences of that reference (loss L = sum(w * out) with random
 * weights w), so a wrong analytic formula in the kernel cannot hide behind the same wrong formula in
 * the test. Shapes are small and odd (T not a multiple of the attention blocks, V not a multiple of
 * 128, odd C). Also: accumulate vs overwrite semantics as kernels.h documents them, padding columns,
 * AdamW against a scalar reference, and bit-identical results across runs and thread counts. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cpu/cpu_internal.h"
#include "cpu/cpu_kernels.h"

/* ---- helpers ------------------------------------------------------------------------------- */

typedef struct rng {
    uint64_t s;
} rng;

static double rng_uniform(rng *r) /* [0,1) */
{
    r->s = r->s * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(r->s >> 11) * (1.0 / 9007199254740992.0);
}

static float *randf(rng *r, size_t n, double lo, double hi)
{
    float *x = malloc(n * sizeof *x);
    assert_non_null(x);
    for (size_t i = 0; i < n; i++) x[i] = (float)(lo + (hi - lo) * rng_uniform(r));
    return x;
}

static double *to_double(const float *x, size_t n)
{
    double *d = malloc((n ? n : 1) * sizeof *d);
    assert_non_null(d);
    for (size_t i = 0; i < n; i++) d[i] = x[i];
    return d;
}

static float *copyf(const float *x, size_t n)
{
    float *y = malloc((n ? n : 1) * sizeof *y);
    assert_non_null(y);
    memcpy(y, x, n * sizeof *y);
    return y;
}

static double *zerod(size_t n)
{
    double *d = calloc(n ? n : 1, sizeof *d);
    assert_non_null(d);
    return d;
}

/* max |a - ref| / max |ref| (relative error in max norm) */
static double rel_err(const float *a, const double *ref, size_t n)
{
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - ref[i]);
        if (e > num || isnan(e)) num = isnan(e) ? INFINITY : e;
        if (fabs(ref[i]) > den) den = fabs(ref[i]);
    }
    return num / (den > 0.0 ? den : 1.0);
}

#define CHECK_REL(what, a, ref, n, tol)                                                            \
    do {                                                                                           \
        double e_ = rel_err((a), (ref), (n));                                                      \
        if (!(e_ <= (tol))) print_error("%s: relative error %.3g > %.3g\n", (what), e_, (tol));   \
        assert_true(e_ <= (tol));                                                                  \
    } while (0)

/* A reference loss: evaluates L(x) in double with the current contents of the double inputs. */
typedef double (*loss_fn)(void *ctx);

/* Central differences of f with respect to x[idx] for idx in 0..n-1 step `stride`; unvisited
 * entries of grad are NAN. */
static void fd_grad(double *x, size_t n, size_t stride, loss_fn f, void *ctx, double *grad)
{
    const double h = 1e-6;
    for (size_t i = 0; i < n; i++) grad[i] = NAN;
    for (size_t i = 0; i < n; i += stride) {
        double save = x[i];
        x[i] = save + h;
        double lp = f(ctx);
        x[i] = save - h;
        double lm = f(ctx);
        x[i] = save;
        grad[i] = (lp - lm) / (2.0 * h);
    }
}

/* rel_err on the entries where ref is not NaN */
static double rel_err_sampled(const float *a, const double *ref, size_t n)
{
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(ref[i])) continue;
        double e = fabs((double)a[i] - ref[i]);
        if (e > num || isnan(e)) num = isnan(e) ? INFINITY : e;
        if (fabs(ref[i]) > den) den = fabs(ref[i]);
    }
    return num / (den > 0.0 ? den : 1.0);
}

#define CHECK_FD(what, a, fd, n, tol)                                                              \
    do {                                                                                           \
        double e_ = rel_err_sampled((a), (fd), (n));                                               \
        if (!(e_ <= (tol)))                                                                        \
            print_error("%s: backward vs finite differences: relative error %.3g > %.3g\n",       \
                        (what), e_, (tol));                                                        \
        assert_true(e_ <= (tol));                                                                  \
    } while (0)

/* The CPU backend with `threads` threads: the typed kernels take it as their first argument. */
static fm_backend *be_new(int threads)
{
    fm_backend *be = NULL;
    fm_status st = fm_backend_create("cpu", threads, -1, &be);
    if (st) fm_status_print(st, stderr, 1);
    assert_null(st);
    assert_int_equal(be->threads, threads);
    return be;
}

#define GRAD_TOL 2e-4 /* fp32 kernel vs double finite differences */
#define FWD_TOL 2e-6  /* fp32 kernel vs double reference, relative in max norm */

/* ---- the inlined exp used by softmax, attention and GELU ---------------------------------------- */

static void test_expf(void **state)
{
    (void)state;
    double worst = 0.0;
    for (double x = -87.0; x <= 88.0; x += 3e-4) {
        float xf = (float)x;
        double e = exp((double)xf);
        double rel = fabs((double)fm_cpu_expf(xf) - e) / e;
        if (rel > worst) worst = rel;
    }
    print_message("fm_cpu_expf: max relative error %.3g over [-87, 88]\n", worst);
    assert_true(worst <= 2.0 * 1.1920929e-7); /* 2 ulp */
    assert_true(fm_cpu_expf(0.0f) == 1.0f);
    assert_true(fm_cpu_expf(-INFINITY) == 0.0f);
    assert_true(fm_cpu_expf(-100.0f) == 0.0f);
    assert_true(isfinite(fm_cpu_expf(1000.0f)));
    assert_true(isnan(fm_cpu_expf(NAN)));
    /* the vectorised loop of a kernel propagates NaN too */
    float x[40], y[40];
    for (int i = 0; i < 40; i++) x[i] = (float)i * 0.1f;
    x[17] = NAN;
    fm_backend *be = be_new(1);
    fm_cpu_gelu_forward(be, y, x, 40);
    fm_backend_free(&be);
    assert_true(isnan(y[17]));
    assert_true(isfinite(y[16]) && isfinite(y[18]));
}

/* ---- encoder ----------------------------------------------------------------------------------- */

static void encoder_case(int B, int T, int C, int Vp, int maxT, int threads)
{
    rng r = {(uint64_t)(B * T * C)};
    int32_t *tokens = malloc((size_t)B * T * sizeof *tokens);
    assert_non_null(tokens);
    for (int i = 0; i < B * T; i++) tokens[i] = (int32_t)(i * 7 % 4); /* repeated tokens */
    tokens[3] = Vp - 1;
    float *wte = randf(&r, (size_t)Vp * C, -1, 1), *wpe = randf(&r, (size_t)maxT * C, -1, 1);
    float *out = randf(&r, (size_t)B * T * C, -1, 1), *dout = randf(&r, (size_t)B * T * C, -1, 1);
    float *dwte = randf(&r, (size_t)Vp * C, -1, 1), *dwpe = randf(&r, (size_t)maxT * C, -1, 1);
    double *ewte = to_double(dwte, (size_t)Vp * C), *ewpe = to_double(dwpe, (size_t)maxT * C);
    double *eout = zerod((size_t)B * T * C);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int c = 0; c < C; c++) {
                size_t o = ((size_t)b * T + t) * C + c;
                eout[o] = (double)wte[(size_t)tokens[b * T + t] * C + c] + (double)wpe[(size_t)t * C + c];
                ewte[(size_t)tokens[b * T + t] * C + c] += dout[o];
                ewpe[(size_t)t * C + c] += dout[o];
            }
    fm_backend *be = be_new(threads);
    fm_cpu_encoder_forward(be, out, tokens, wte, wpe, B, T, C);
    CHECK_REL("encoder forward", out, eout, (size_t)B * T * C, FWD_TOL);
    fm_cpu_encoder_backward(be, dwte, dwpe, dout, tokens, B, T, C);
    CHECK_REL("encoder dwte (accumulates)", dwte, ewte, (size_t)Vp * C, FWD_TOL);
    CHECK_REL("encoder dwpe (accumulates)", dwpe, ewpe, (size_t)maxT * C, FWD_TOL);
    fm_backend_free(&be);
    assert_null(be);
    free(wte), free(wpe), free(out), free(dout), free(dwte), free(dwpe);
    free(ewte), free(ewpe), free(eout), free(tokens);
}

static void test_encoder(void **state)
{
    (void)state;
    encoder_case(3, 5, 37, 11, 9, 2);
    encoder_case(4, 33, 301, 50, 40, 2); /* above the serial threshold: channel slices per thread */
}

/* ---- layernorm -------------------------------------------------------------------------------- */

typedef struct ln_case {
    int N, C;
    double *x, *w, *b, *dout;
} ln_case;

static void ln_ref(const ln_case *k, double *out, double *mean, double *rstd)
{
    for (int n = 0; n < k->N; n++) {
        const double *x = k->x + (size_t)n * k->C;
        double m = 0.0, v = 0.0;
        for (int c = 0; c < k->C; c++) m += x[c];
        m /= k->C;
        for (int c = 0; c < k->C; c++) v += (x[c] - m) * (x[c] - m);
        v /= k->C;
        double rs = 1.0 / sqrt(v + 1e-5);
        for (int c = 0; c < k->C; c++) out[(size_t)n * k->C + c] = (x[c] - m) * rs * k->w[c] + k->b[c];
        if (mean) mean[n] = m;
        if (rstd) rstd[n] = rs;
    }
}

static double ln_loss(void *p)
{
    ln_case *k = p;
    size_t n = (size_t)k->N * k->C;
    double *out = zerod(n);
    ln_ref(k, out, NULL, NULL);
    double L = 0.0;
    for (size_t i = 0; i < n; i++) L += out[i] * k->dout[i];
    free(out);
    return L;
}

static void layernorm_case(int N, int C, size_t stride, int threads)
{
    rng r = {(uint64_t)(N * 1000 + C)};
    const size_t nc = (size_t)N * C;
    float *x = randf(&r, nc, -2, 3), *w = randf(&r, C, 0.5, 1.5), *b = randf(&r, C, -0.5, 0.5);
    float *dout = randf(&r, nc, -1, 1), *out = randf(&r, nc, -1, 1);
    float *mean = randf(&r, N, 0, 1), *rstd = randf(&r, N, 0, 1);
    float *dinp0 = randf(&r, nc, -1, 1), *dw0 = randf(&r, C, -1, 1), *db0 = randf(&r, C, -1, 1);
    float *dinp = copyf(dinp0, nc), *dw = copyf(dw0, C), *db = copyf(db0, C);
    ln_case k = {N, C, to_double(x, nc), to_double(w, C), to_double(b, C), to_double(dout, nc)};

    double *eout = zerod(nc), *emean = zerod(N), *erstd = zerod(N);
    ln_ref(&k, eout, emean, erstd);
    fm_backend *be = be_new(threads);
    fm_cpu_layernorm_forward(be, out, mean, rstd, x, w, b, N, C);
    CHECK_REL("layernorm out", out, eout, nc, FWD_TOL);
    CHECK_REL("layernorm mean", mean, emean, N, FWD_TOL);
    CHECK_REL("layernorm rstd", rstd, erstd, N, FWD_TOL);

    fm_cpu_layernorm_backward(be, dinp, dw, db, dout, x, w, mean, rstd, N, C);
    /* accumulate semantics: compare the increments */
    for (size_t i = 0; i < nc; i++) dinp[i] -= dinp0[i];
    for (int c = 0; c < C; c++) dw[c] -= dw0[c], db[c] -= db0[c];
    double *g = zerod(nc);
    fd_grad(k.x, nc, stride, ln_loss, &k, g);
    CHECK_FD("layernorm dinp", dinp, g, nc, GRAD_TOL);
    fd_grad(k.w, C, 1, ln_loss, &k, g);
    CHECK_FD("layernorm dweight", dw, g, C, GRAD_TOL);
    fd_grad(k.b, C, 1, ln_loss, &k, g);
    CHECK_FD("layernorm dbias", db, g, C, GRAD_TOL);
    fm_backend_free(&be);
    free(x), free(w), free(b), free(dout), free(out), free(dinp0), free(dw0), free(db0);
    free(dinp), free(dw), free(db), free(eout), free(g), free(mean), free(rstd), free(emean);
    free(erstd), free(k.x), free(k.w), free(k.b), free(k.dout);
}

static void test_layernorm(void **state)
{
    (void)state;
    layernorm_case(13, 67, 1, 2);
    layernorm_case(1, 1, 1, 1);       /* C = 1: output is the bias, gradient to inp is 0 */
    layernorm_case(61, 771, 97, 2);   /* above the serial threshold: threaded paths */
}

/* ---- residual --------------------------------------------------------------------------------- */

static void test_residual(void **state)
{
    (void)state;
    rng r = {3};
    const size_t n = 100003; /* above the serial threshold: runs threaded */
    float *a = randf(&r, n, -1, 1), *b = randf(&r, n, -1, 1), *out = randf(&r, n, -1, 1);
    double *e = zerod(n);
    for (size_t i = 0; i < n; i++) e[i] = (double)(a[i] + b[i]); /* fp32 add is exact-rounded */
    fm_backend *be = be_new(2);
    fm_cpu_residual_forward(be, out, a, b, n);
    CHECK_REL("residual forward", out, e, n, 0.0);
    fm_cpu_residual_forward(be, a, a, b, n); /* out aliases a */
    CHECK_REL("residual forward in place", a, e, n, 0.0);
    fm_backend_free(&be);
    free(a), free(b), free(out), free(e);
}

/* ---- matmul ----------------------------------------------------------------------------------- */

typedef struct mm_case {
    int N, C, OC;
    double *x, *w, *b, *dout;
} mm_case;

static double mm_loss(void *p)
{
    mm_case *k = p;
    double L = 0.0;
    for (int n = 0; n < k->N; n++)
        for (int o = 0; o < k->OC; o++) {
            double s = k->b ? k->b[o] : 0.0;
            for (int c = 0; c < k->C; c++) s += k->x[(size_t)n * k->C + c] * k->w[(size_t)o * k->C + c];
            L += s * k->dout[(size_t)n * k->OC + o];
        }
    return L;
}

/* Runs forward and backward for one shape; FD on every element (small shapes) or on a sample. */
static void matmul_case(int N, int C, int OC, int with_bias, int with_dinp, size_t stride, int threads)
{
    rng r = {(uint64_t)(N * 1000 + C * 10 + OC)};
    const size_t nx = (size_t)N * C, nw = (size_t)OC * C, no = (size_t)N * OC;
    float *x = randf(&r, nx, -1, 1), *w = randf(&r, nw, -1, 1), *b = randf(&r, OC, -1, 1);
    float *dout = randf(&r, no, -1, 1), *out = randf(&r, no, -1, 1);
    float *dinp = randf(&r, nx, 100, 200); /* garbage: must be overwritten */
    float *dw0 = randf(&r, nw, -1, 1), *db0 = randf(&r, OC, -1, 1);
    float *dw = copyf(dw0, nw), *db = copyf(db0, OC);
    mm_case k = {N, C, OC, to_double(x, nx), to_double(w, nw), with_bias ? to_double(b, OC) : NULL,
                 to_double(dout, no)};
    double *eo = zerod(no);
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OC; o++) {
            double s = with_bias ? k.b[o] : 0.0;
            for (int c = 0; c < C; c++) s += k.x[(size_t)n * C + c] * k.w[(size_t)o * C + c];
            eo[(size_t)n * OC + o] = s;
        }
    fm_backend *be = be_new(threads);
    fm_cpu_matmul_forward(be, out, x, w, with_bias ? b : NULL, N, C, OC);
    CHECK_REL("matmul forward", out, eo, no, 1e-5);
    fm_cpu_matmul_backward(be, with_dinp ? dinp : NULL, dw, with_bias ? db : NULL, dout, x, w, N, C,
                           OC);
    for (size_t i = 0; i < nw; i++) dw[i] -= dw0[i];
    double *g = zerod(nx > nw ? nx : nw);
    if (with_dinp) {
        fd_grad(k.x, nx, stride, mm_loss, &k, g);
        CHECK_FD("matmul dinp (overwritten)", dinp, g, nx, GRAD_TOL);
    } else {
        for (size_t i = 0; i < nx; i++) assert_true(dinp[i] >= 100.0f && dinp[i] <= 200.0f);
    }
    fd_grad(k.w, nw, stride, mm_loss, &k, g);
    CHECK_FD("matmul dweight (accumulates)", dw, g, nw, GRAD_TOL);
    if (with_bias) {
        for (int o = 0; o < OC; o++) db[o] -= db0[o];
        fd_grad(k.b, OC, 1, mm_loss, &k, g);
        CHECK_FD("matmul dbias (accumulates)", db, g, OC, GRAD_TOL);
    } else {
        for (int o = 0; o < OC; o++) assert_true(db[o] == db0[o]);
    }
    fm_backend_free(&be);
    free(x), free(w), free(b), free(dout), free(out), free(dinp), free(dw0), free(db0), free(dw);
    free(db), free(eo), free(g), free(k.x), free(k.w), free(k.b), free(k.dout);
}

static void test_matmul(void **state)
{
    (void)state;
    matmul_case(7, 5, 9, 1, 1, 1, 2);
    matmul_case(1, 3, 1, 1, 1, 1, 1);
    matmul_case(6, 11, 4, 0, 0, 1, 2);
    /* large enough to be tiled over threads: along OC (OC >= N) and along N (N > OC) */
    matmul_case(45, 97, 131, 1, 1, 61, 2);
    matmul_case(150, 99, 70, 1, 1, 67, 3);
}

/* ---- gelu ------------------------------------------------------------------------------------- */

static double gelu_ref(double x)
{
    return 0.5 * x * (1.0 + tanh(0.79788456080286535588 * (x + 0.044715 * x * x * x)));
}

static void test_gelu(void **state)
{
    (void)state;
    rng r = {4};
    const size_t n = 40001;
    float *x = randf(&r, n, -6, 6);
    x[0] = -30.0f, x[1] = 30.0f, x[2] = 0.0f, x[3] = -1e-3f, x[4] = 9.5f, x[5] = -9.5f;
    float *out = randf(&r, n, -1, 1), *dout = randf(&r, n, -1, 1);
    float *din = randf(&r, n, 50, 60);
    double *e = zerod(n), *g = zerod(n);
    double max_fwd_abs = 0.0;
    for (size_t i = 0; i < n; i++) {
        double xi = x[i], h = 1e-6;
        e[i] = gelu_ref(xi);
        g[i] = (gelu_ref(xi + h) - gelu_ref(xi - h)) / (2.0 * h) * (double)dout[i];
    }
    fm_backend *be = be_new(2);
    fm_cpu_gelu_forward(be, out, x, n);
    for (size_t i = 0; i < n; i++) {
        double ae = fabs((double)out[i] - e[i]);
        /* per element: 4 ulp relative or 1e-7 absolute (near the zeros of gelu) */
        assert_true(ae <= 4.0 * 1.2e-7 * fabs(e[i]) + 1e-7);
        if (ae > max_fwd_abs) max_fwd_abs = ae;
    }
    fm_cpu_gelu_backward(be, din, x, dout, n);
    CHECK_FD("gelu backward", din, g, n, GRAD_TOL);
    for (size_t i = 0; i < n; i++)
        assert_true(fabs((double)din[i] - g[i]) <= 1e-5 * fabs((double)dout[i]) + 1e-6);
    /* in place: dinp aliases dout */
    float *d2 = copyf(dout, n);
    fm_cpu_gelu_backward(be, d2, x, d2, n);
    assert_memory_equal(d2, din, n * sizeof *din);
    fm_backend_free(&be);
    free(x), free(out), free(dout), free(din), free(d2), free(e), free(g);
}

/* ---- attention -------------------------------------------------------------------------------- */

typedef struct att_case {
    int B, T, C, NH, NKV; /* NKV key/value heads: qkv rows of W = (NH + 2 NKV) hs */
    double *qkv, *dout;
} att_case;

static void att_ref(const att_case *k, double *out, double *lse)
{
    const int B = k->B, T = k->T, C = k->C, NH = k->NH, NKV = k->NKV, hs = C / NH;
    const size_t W = (size_t)(NH + 2 * NKV) * hs;
    const double scale = 1.0 / sqrt((double)hs);
    double *s = zerod((size_t)T);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int i = 0; i < T; i++) {
                const size_t g = (size_t)(h / (NH / NKV));
                const double *q = k->qkv + ((size_t)b * T + i) * W + (size_t)h * hs;
                double m = -INFINITY;
                for (int j = 0; j <= i; j++) {
                    const double *kk = k->qkv + ((size_t)b * T + j) * W + C + g * hs;
                    double d = 0.0;
                    for (int e = 0; e < hs; e++) d += q[e] * kk[e];
                    s[j] = d * scale;
                    if (s[j] > m) m = s[j];
                }
                double z = 0.0;
                for (int j = 0; j <= i; j++) z += exp(s[j] - m);
                double *o = out + ((size_t)b * T + i) * C + (size_t)h * hs;
                for (int e = 0; e < hs; e++) o[e] = 0.0;
                for (int j = 0; j <= i; j++) {
                    const double *v =
                        k->qkv + ((size_t)b * T + j) * W + C + (size_t)NKV * hs + g * hs;
                    double p = exp(s[j] - m) / z;
                    for (int e = 0; e < hs; e++) o[e] += p * v[e];
                }
                if (lse) lse[((size_t)b * NH + h) * T + i] = m + log(z);
            }
    free(s);
}

static double att_loss(void *p)
{
    att_case *k = p;
    size_t n = (size_t)k->B * k->T * k->C;
    double *out = zerod(n);
    att_ref(k, out, NULL);
    double L = 0.0;
    for (size_t i = 0; i < n; i++) L += out[i] * k->dout[i];
    free(out);
    return L;
}

static void attention_case(int B, int T, int C, int NH, int NKV, size_t stride, int threads,
                           double range)
{
    rng r = {(uint64_t)(B * 100000 + T * 100 + C + NKV)};
    const size_t W = (size_t)(NH + 2 * NKV) * (size_t)(C / NH);
    const size_t nq = (size_t)B * T * W, no = (size_t)B * T * C, nl = (size_t)B * NH * T;
    float *qkv = randf(&r, nq, -range, range), *dout = randf(&r, no, -1, 1);
    float *out = randf(&r, no, -1, 1), *lse = randf(&r, nl, -1, 1);
    float *dqkv = randf(&r, nq, 100, 200); /* garbage: must be overwritten */
    att_case k = {B, T, C, NH, NKV, to_double(qkv, nq), to_double(dout, no)};
    double *eo = zerod(no), *el = zerod(nl);
    att_ref(&k, eo, el);
    fm_backend *be = be_new(threads);
    fm_cpu_attention_forward(be, out, lse, qkv, B, T, C, NH, NKV);
    CHECK_REL("attention out", out, eo, no, 1e-5);
    CHECK_REL("attention lse", lse, el, nl, 1e-5);
    fm_cpu_attention_backward(be, dqkv, dout, qkv, out, lse, B, T, C, NH, NKV);
    double *g = zerod(nq);
    fd_grad(k.qkv, nq, stride, att_loss, &k, g);
    CHECK_FD("attention dqkv", dqkv, g, nq, GRAD_TOL);
    fm_backend_free(&be);
    free(qkv), free(dout), free(out), free(lse), free(dqkv), free(k.qkv), free(k.dout), free(eo);
    free(el), free(g);
}

static void test_attention_small(void **state)
{
    (void)state;
    attention_case(2, 7, 12, 3, 3, 1, 2, 1.0); /* hs 4 */
    attention_case(1, 1, 6, 2, 2, 1, 1, 1.0);  /* T = 1 */
    attention_case(3, 5, 5, 1, 1, 1, 2, 2.0);  /* odd C with one head */
    attention_case(2, 7, 24, 4, 2, 1, 2, 1.0); /* grouped-query 2:1 */
    attention_case(1, 9, 24, 4, 1, 1, 2, 1.0); /* grouped-query 4:1 (multi-query) */
}

static void test_attention_blocks(void **state)
{
    (void)state;
    /* T spans several query blocks (64) and key blocks (128), not a multiple of either; scores
     * large enough that the online softmax rescales */
    attention_case(1, 203, 16, 2, 2, 37, 2, 2.0);
    attention_case(2, 130, 24, 3, 3, 53, 2, 1.0);
    attention_case(2, 131, 32, 4, 2, 41, 2, 1.5); /* grouped-query 2:1 over several blocks */
}

/* attention_decode: the full sequence through attention_forward, then the same sequence through the
 * KV cache in chunks of Tq = 1, 3 and the rest from pos0 = 0: every decoded row must match the row of
 * the full sequence (fp32, 1e-5 relative) and the double reference, the caches must hold the k and v
 * rows exactly, and the result must be bit-identical across runs and for 1 and 2 threads. */
static void decode_run(int threads, const float *qkv, float *out, float *kc, float *vc, int B, int T,
                       int maxT, int C, int NH, int NKV)
{
    const int chunks[3] = {1, 3, T - 4};
    const size_t W = (size_t)(NH + 2 * NKV) * (size_t)(C / NH);
    float *q = malloc((size_t)B * T * W * sizeof *q);
    assert_non_null(q);
    fm_backend *be = be_new(threads);
    for (int k = 0, pos0 = 0; k < 3; pos0 += chunks[k], k++) {
        const int Tq = chunks[k];
        for (int b = 0; b < B; b++) /* rows pos0..pos0+Tq-1 of each sequence, contiguous */
            memcpy(q + (size_t)b * Tq * W, qkv + ((size_t)b * T + pos0) * W, (size_t)Tq * W * sizeof *q);
        float *o = malloc((size_t)B * Tq * C * sizeof *o);
        assert_non_null(o);
        fm_cpu_attention_decode(be, o, kc, vc, q, B, Tq, pos0, maxT, C, NH, NKV);
        for (int b = 0; b < B; b++)
            memcpy(out + ((size_t)b * T + pos0) * C, o + (size_t)b * Tq * C,
                   (size_t)Tq * C * sizeof *o);
        free(o);
    }
    fm_backend_free(&be);
    free(q);
}

static void decode_case(int B, int T, int C, int NH, int NKV, double range)
{
    assert_true(T > 4);
    rng r = {(uint64_t)(B * 7000 + T * 13 + C + NKV)};
    const int maxT = T + 5, KW = NKV * (C / NH);
    const size_t W = (size_t)C + 2 * (size_t)KW;
    const size_t nq = (size_t)B * T * W, no = (size_t)B * T * C, nc = (size_t)B * maxT * KW;
    float *qkv = randf(&r, nq, -range, range), *full = malloc(no * 4), *lse = malloc((size_t)B * NH * T * 4);
    float *dec = malloc(no * 4), *dec2 = malloc(no * 4), *dec1 = malloc(no * 4);
    float *kc = randf(&r, nc, 100, 200), *vc = randf(&r, nc, 100, 200); /* garbage beyond T */
    float *kc2 = copyf(kc, nc), *vc2 = copyf(vc, nc);
    assert_true(full && lse && dec && dec2 && dec1);
    fm_backend *be = be_new(2);
    fm_cpu_attention_forward(be, full, lse, qkv, B, T, C, NH, NKV);
    fm_backend_free(&be);
    decode_run(2, qkv, dec, kc, vc, B, T, maxT, C, NH, NKV);
    double *ref = to_double(full, no);
    CHECK_REL("attention_decode vs attention_forward rows", dec, ref, no, 1e-5);
    att_case k = {B, T, C, NH, NKV, to_double(qkv, nq), NULL};
    double *eo = zerod(no);
    att_ref(&k, eo, NULL);
    CHECK_REL("attention_decode vs double reference", dec, eo, no, 1e-5);
    for (int b = 0; b < B; b++) /* the caches: k and v of rows 0..T-1, untouched beyond */
        for (int t = 0; t < maxT; t++)
            for (int c = 0; c < KW; c++) {
                const size_t ci = ((size_t)b * maxT + t) * KW + c, qi = ((size_t)b * T + t) * W + c;
                assert_true(kc[ci] == (t < T ? qkv[qi + C] : kc2[ci]));
                assert_true(vc[ci] == (t < T ? qkv[qi + C + KW] : vc2[ci]));
            }
    decode_run(2, qkv, dec2, kc2, vc2, B, T, maxT, C, NH, NKV);
    assert_memory_equal(dec2, dec, no * 4); /* same threads: same bits */
    decode_run(1, qkv, dec1, kc2, vc2, B, T, maxT, C, NH, NKV);
    assert_memory_equal(dec1, dec, no * 4); /* one thread per row: same bits for any thread count */
    free(qkv), free(full), free(lse), free(dec), free(dec2), free(dec1), free(kc), free(vc);
    free(kc2), free(vc2), free(ref), free(k.qkv), free(eo);
}

static void test_attention_decode(void **state)
{
    (void)state;
    decode_case(2, 9, 12, 3, 3, 1.0);    /* hs 4 */
    decode_case(3, 37, 64, 2, 2, 2.0);   /* hs 32, above the serial threshold: threaded */
    decode_case(1, 203, 16, 2, 2, 2.0);  /* several key blocks of 128: the online softmax rescales */
    decode_case(2, 21, 48, 6, 2, 1.5);   /* grouped-query 3:1: caches of NKV*hs per row */
}

/* ---- Llama's kernels: embedding, RMSNorm, SwiGLU, RoPE -------------------------------------- */

static void test_embedding(void **state)
{
    (void)state;
    rng r = {41};
    const int B = 3, T = 50, C = 700, Vp = 256; /* above the serial threshold: threaded */
    const size_t n = (size_t)B * T * C;
    int32_t tok[150];
    for (int i = 0; i < B * T; i++) tok[i] = (int32_t)(rng_uniform(&r) * 20); /* repeated tokens */
    float *wte = randf(&r, (size_t)Vp * C, -1, 1), *out = randf(&r, n, 100, 200);
    float *dout = randf(&r, n, -1, 1), *dwte = randf(&r, (size_t)Vp * C, -1, 1);
    double *e = zerod(n), *edw = to_double(dwte, (size_t)Vp * C);
    for (int i = 0; i < B * T; i++)
        for (int c = 0; c < C; c++) {
            e[(size_t)i * C + c] = wte[(size_t)tok[i] * C + c];
            edw[(size_t)tok[i] * C + c] += dout[(size_t)i * C + c];
        }
    fm_backend *be = be_new(2);
    fm_cpu_embedding_forward(be, out, tok, wte, B, T, C);
    CHECK_REL("embedding forward", out, e, n, 0.0);
    fm_cpu_embedding_backward(be, dwte, dout, tok, B, T, C); /* accumulates, rows in order */
    CHECK_REL("embedding backward", dwte, edw, (size_t)Vp * C, 1e-6);
    fm_backend_free(&be);
    free(wte), free(out), free(dout), free(dwte), free(e), free(edw);
}

typedef struct rms_case {
    int N, C;
    double eps, *x, *w, *dout;
} rms_case;

static void rms_ref(const rms_case *k, double *out, double *rstd)
{
    for (int n = 0; n < k->N; n++) {
        const double *x = k->x + (size_t)n * k->C;
        double ss = 0.0;
        for (int c = 0; c < k->C; c++) ss += x[c] * x[c];
        const double r = 1.0 / sqrt(ss / k->C + k->eps);
        if (out)
            for (int c = 0; c < k->C; c++) out[(size_t)n * k->C + c] = x[c] * r * k->w[c];
        if (rstd) rstd[n] = r;
    }
}

static double rms_loss(void *p)
{
    rms_case *k = p;
    const size_t n = (size_t)k->N * k->C;
    double *out = zerod(n), L = 0.0;
    rms_ref(k, out, NULL);
    for (size_t i = 0; i < n; i++) L += out[i] * k->dout[i];
    free(out);
    return L;
}

static void rmsnorm_case(int N, int C, size_t stride, int threads, double eps)
{
    rng r = {(uint64_t)(N * 1000 + C + 5)};
    const size_t nc = (size_t)N * C;
    float *x = randf(&r, nc, -2, 3), *w = randf(&r, C, 0.5, 1.5), *dout = randf(&r, nc, -1, 1);
    float *out = randf(&r, nc, 100, 200), *rstd = randf(&r, N, 100, 200);
    float *dinp0 = randf(&r, nc, -1, 1), *dw0 = randf(&r, C, -1, 1);
    float *dinp = copyf(dinp0, nc), *dw = copyf(dw0, C);
    rms_case k = {N, C, (double)(float)eps, to_double(x, nc), to_double(w, C), to_double(dout, nc)};
    double *eout = zerod(nc), *erstd = zerod(N);
    rms_ref(&k, eout, erstd);
    fm_backend *be = be_new(threads);
    fm_cpu_rmsnorm_forward(be, out, rstd, x, w, N, C, (float)eps);
    CHECK_REL("rmsnorm out", out, eout, nc, FWD_TOL);
    CHECK_REL("rmsnorm rstd", rstd, erstd, N, FWD_TOL);
    fm_cpu_rmsnorm_backward(be, dinp, dw, dout, x, w, rstd, N, C);
    for (size_t i = 0; i < nc; i++) dinp[i] -= dinp0[i]; /* accumulates: compare the increments */
    for (int c = 0; c < C; c++) dw[c] -= dw0[c];
    double *g = zerod(nc);
    fd_grad(k.x, nc, stride, rms_loss, &k, g);
    CHECK_FD("rmsnorm dinp", dinp, g, nc, GRAD_TOL);
    fd_grad(k.w, C, 1, rms_loss, &k, g);
    CHECK_FD("rmsnorm dweight", dw, g, C, GRAD_TOL);
    fm_backend_free(&be);
    free(x), free(w), free(dout), free(out), free(rstd), free(dinp0), free(dw0), free(dinp);
    free(dw), free(k.x), free(k.w), free(k.dout), free(eout), free(erstd), free(g);
}

static void test_rmsnorm(void **state)
{
    (void)state;
    rmsnorm_case(13, 67, 1, 2, 1e-5);
    rmsnorm_case(1, 3, 1, 1, 1e-6); /* (C = 1 is degenerate: d out/d x = eps/(x^2+eps)^1.5 cancels) */
    rmsnorm_case(61, 771, 97, 2, 1e-5); /* above the serial threshold: threaded paths */
}

typedef struct swiglu_case {
    int N, F;
    double *x, *dout;
} swiglu_case;

static double swiglu_loss(void *p)
{
    swiglu_case *k = p;
    double L = 0.0;
    for (int n = 0; n < k->N; n++)
        for (int f = 0; f < k->F; f++) {
            const double g = k->x[(size_t)n * 2 * k->F + f], u = k->x[(size_t)n * 2 * k->F + k->F + f];
            L += g / (1.0 + exp(-g)) * u * k->dout[(size_t)n * k->F + f];
        }
    return L;
}

static void test_swiglu(void **state)
{
    (void)state;
    const int sizes[][2] = {{7, 13}, {40, 1031}}; /* the second above the serial threshold */
    for (int s = 0; s < 2; s++) {
        const int N = sizes[s][0], F = sizes[s][1];
        rng r = {(uint64_t)(N + F)};
        const size_t ni = (size_t)N * 2 * F, no = (size_t)N * F;
        float *x = randf(&r, ni, -8, 8), *dout = randf(&r, no, -1, 1);
        float *out = randf(&r, no, 100, 200), *din = randf(&r, ni, 100, 200);
        x[0] = -90.0f, x[1] = 90.0f, x[2] = 0.0f; /* saturated sigmoid both ways */
        swiglu_case k = {N, F, to_double(x, ni), to_double(dout, no)};
        double *e = zerod(no);
        for (int n = 0; n < N; n++)
            for (int f = 0; f < F; f++) {
                const double g = k.x[(size_t)n * 2 * F + f], u = k.x[(size_t)n * 2 * F + F + f];
                e[(size_t)n * F + f] = g / (1.0 + exp(-g)) * u;
            }
        fm_backend *be = be_new(2);
        fm_cpu_swiglu_forward(be, out, x, N, F);
        CHECK_REL("swiglu forward", out, e, no, FWD_TOL);
        fm_cpu_swiglu_backward(be, din, x, dout, N, F);
        double *g = zerod(ni);
        fd_grad(k.x, ni, s ? 7 : 1, swiglu_loss, &k, g);
        CHECK_FD("swiglu backward", din, g, ni, GRAD_TOL);
        float *inplace = copyf(x, ni);
        fm_cpu_swiglu_backward(be, inplace, inplace, dout, N, F); /* dinp aliases inp */
        assert_memory_equal(inplace, din, ni * sizeof *din);
        fm_backend_free(&be);
        free(x), free(dout), free(out), free(din), free(k.x), free(k.dout), free(e), free(g);
        free(inplace);
    }
}

/* RoPE in double: rotates the q and k heads of x (B,T,W) in place at positions pos0.., with the
 * angles rounded as the kernel documents (fp32 inv_j and product; the rotation itself in double) */
static void rope_ref(double *x, int B, int T, int C, int NH, int NKV, int pos0, double theta,
                     int inverse)
{
    const int hs = C / NH, half = hs / 2, W = (NH + 2 * NKV) * hs;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int hh = 0; hh < NH + NKV; hh++)
                for (int j = 0; j < half; j++) {
                    const float inv = 1.0f / (float)pow(theta, (double)((float)(2 * j) / (float)hs));
                    const double a = (double)((float)(pos0 + t) * inv);
                    const double c = cos(a), sn = inverse ? -sin(a) : sin(a);
                    double *lo = x + ((size_t)b * T + t) * W + (size_t)hh * hs + j, *hi = lo + half;
                    const double u = *lo, v = *hi;
                    *lo = u * c - v * sn;
                    *hi = v * c + u * sn;
                }
}

static void test_rope(void **state)
{
    (void)state;
    /* B, T, C, NH, NKV, pos0 (T not a power of two; GQA; a decode offset; hs 2) */
    const int cases[][6] = {{2, 13, 24, 4, 2, 0}, {1, 37, 64, 2, 1, 100}, {3, 5, 6, 3, 3, 7},
                            {2, 100, 256, 4, 4, 0}};
    for (int s = 0; s < 4; s++) {
        const int B = cases[s][0], T = cases[s][1], C = cases[s][2], NH = cases[s][3];
        const int NKV = cases[s][4], pos0 = cases[s][5], hs = C / NH, W = (NH + 2 * NKV) * hs;
        const size_t n = (size_t)B * T * W;
        const double theta = s == 2 ? 10000.0 : 500000.0;
        rng r = {(uint64_t)(s + 99)};
        float *x = randf(&r, n, -2, 2), *y = copyf(x, n);
        double *e = to_double(x, n);
        rope_ref(e, B, T, C, NH, NKV, pos0, theta, 0);
        fm_backend *be = be_new(2);
        fm_cpu_rope_forward(be, y, B, T, C, NH, NKV, pos0, (float)theta);
        CHECK_REL("rope forward", y, e, n, FWD_TOL);
        for (int b = 0; b < B; b++) /* the v heads are untouched */
            for (int t = 0; t < T; t++)
                assert_memory_equal(y + ((size_t)b * T + t) * W + (size_t)(NH + NKV) * hs,
                                    x + ((size_t)b * T + t) * W + (size_t)(NH + NKV) * hs,
                                    (size_t)NKV * hs * sizeof *x);
        /* backward is the transpose: <rope(x), d> = <x, rope_backward(d)> in double */
        float *d = randf(&r, n, -1, 1), *dx = copyf(d, n);
        fm_cpu_rope_backward(be, dx, B, T, C, NH, NKV, pos0, (float)theta);
        double lhs = 0.0, rhs = 0.0, mag = 0.0;
        for (size_t i = 0; i < n; i++) {
            lhs += e[i] * d[i];
            rhs += (double)x[i] * dx[i];
            mag += fabs(e[i] * d[i]);
        }
        if (!(fabs(lhs - rhs) <= 1e-6 * mag))
            print_error("rope backward is not the transpose: %.9g vs %.9g\n", lhs, rhs);
        assert_true(fabs(lhs - rhs) <= 1e-6 * mag);
        /* backward undoes forward */
        fm_cpu_rope_backward(be, y, B, T, C, NH, NKV, pos0, (float)theta);
        double *xd = to_double(x, n);
        CHECK_REL("rope backward(forward(x))", y, xd, n, 1e-6);
        /* position offset: rows t.. of a sequence at pos0 + t equal the full sequence's rows */
        if (T > 3) {
            float *full = copyf(x, n), *tail = malloc((size_t)B * (T - 3) * W * sizeof *tail);
            assert_non_null(tail);
            for (int b = 0; b < B; b++)
                memcpy(tail + (size_t)b * (T - 3) * W, x + ((size_t)b * T + 3) * W,
                       (size_t)(T - 3) * W * sizeof *x);
            fm_cpu_rope_forward(be, full, B, T, C, NH, NKV, pos0, (float)theta);
            fm_cpu_rope_forward(be, tail, B, T - 3, C, NH, NKV, pos0 + 3, (float)theta);
            for (int b = 0; b < B; b++)
                assert_memory_equal(tail + (size_t)b * (T - 3) * W, full + ((size_t)b * T + 3) * W,
                                    (size_t)(T - 3) * W * sizeof *x);
            free(full), free(tail);
        }
        fm_backend_free(&be);
        free(x), free(y), free(e), free(d), free(dx), free(xd);
    }
}

/* ---- softmax + cross-entropy ------------------------------------------------------------------ */

typedef struct xent_case {
    int N, V, Vp;
    double *logits;
    const int32_t *targets;
    double dloss;
} xent_case;

static double xent_loss(void *p) /* sum_n dloss * loss_n */
{
    xent_case *k = p;
    double L = 0.0;
    for (int n = 0; n < k->N; n++) {
        const double *x = k->logits + (size_t)n * k->Vp;
        double m = -INFINITY, z = 0.0;
        for (int c = 0; c < k->V; c++) m = x[c] > m ? x[c] : m;
        for (int c = 0; c < k->V; c++) z += exp(x[c] - m);
        L += k->dloss * (m + log(z) - x[k->targets[n]]);
    }
    return L;
}

static void xent_case_run(int N, int V, int Vp, int threads)
{
    rng r = {(uint64_t)(N + V)};
    const size_t n = (size_t)N * Vp;
    float *logits = randf(&r, n, -4, 4);
    for (int i = 0; i < N; i++) /* padding holds garbage that would dominate if it were counted */
        for (int c = V; c < Vp; c++) logits[(size_t)i * Vp + c] = 1e4f;
    int32_t *tg = malloc((size_t)N * sizeof *tg);
    assert_non_null(tg);
    for (int i = 0; i < N; i++) tg[i] = (int32_t)(rng_uniform(&r) * V);
    tg[0] = V - 1;
    float *losses = randf(&r, N, 0, 1), *lse = randf(&r, N, 0, 1);
    xent_case k = {N, V, Vp, to_double(logits, n), tg, 1.0 / (3.0 * N)};
    double *el = zerod(N), *else_ = zerod(N);
    for (int i = 0; i < N; i++) {
        const double *x = k.logits + (size_t)i * Vp;
        double m = -INFINITY, z = 0.0;
        for (int c = 0; c < V; c++) m = x[c] > m ? x[c] : m;
        for (int c = 0; c < V; c++) z += exp(x[c] - m);
        else_[i] = m + log(z);
        el[i] = else_[i] - x[tg[i]];
    }
    fm_backend *be = be_new(threads);
    fm_cpu_softmax_xent_forward(be, losses, lse, logits, tg, N, V, Vp);
    CHECK_REL("xent losses", losses, el, N, 1e-5);
    CHECK_REL("xent lse", lse, else_, N, 1e-6);
    fm_cpu_softmax_xent_backward(be, logits, lse, tg, (float)k.dloss, N, V, Vp);
    for (int i = 0; i < N; i++)
        for (int c = V; c < Vp; c++) assert_true(logits[(size_t)i * Vp + c] == 0.0f);
    double *g = zerod(n);
    fd_grad(k.logits, n, N * V > 4000 ? 97 : 1, xent_loss, &k, g);
    for (int i = 0; i < N; i++) /* padding is not an input of the loss */
        for (int c = V; c < Vp; c++) g[(size_t)i * Vp + c] = 0.0;
    CHECK_FD("xent dlogits (in place)", logits, g, n, GRAD_TOL);
    /* each row of dlogits sums to 0 (softmax minus one-hot), padding included */
    for (int i = 0; i < N; i++) {
        double s = 0.0;
        for (int c = 0; c < Vp; c++) s += logits[(size_t)i * Vp + c];
        assert_true(fabs(s) < 1e-6 * k.dloss * V);
    }
    fm_backend_free(&be);
    free(logits), free(tg), free(losses), free(lse), free(k.logits), free(el), free(else_), free(g);
}

static void test_softmax_xent(void **state)
{
    (void)state;
    xent_case_run(5, 100, 128, 2);
    xent_case_run(3, 129, 256, 1);
    xent_case_run(67, 1000, 1024, 2); /* threaded */
}

/* ---- AdamW, sum of squares ------------------------------------------------------------------- */

static void test_adamw(void **state)
{
    (void)state;
    rng r = {5};
    const size_t n = 70001;
    float *p = randf(&r, n, -1, 1), *m = calloc(n, sizeof(float)), *v = calloc(n, sizeof(float));
    assert_non_null(m);
    assert_non_null(v);
    double *ep = to_double(p, n), *em = zerod(n), *ev = zerod(n);
    const float lr = 3e-3f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, wd = 0.1f, gs = 0.5f;
    fm_backend *be = be_new(2);
    for (int64_t t = 1; t <= 5; t++) {
        float *g = randf(&r, n, -2, 2);
        g[7] = 0.0f;
        for (size_t i = 0; i < n; i++) {
            double gi = (double)g[i] * gs;
            em[i] = b1 * em[i] + (1.0 - b1) * gi;
            ev[i] = b2 * ev[i] + (1.0 - b2) * gi * gi;
            double mh = em[i] / (1.0 - pow(b1, (double)t)), vh = ev[i] / (1.0 - pow(b2, (double)t));
            ep[i] -= lr * (mh / (sqrt(vh) + eps) + wd * ep[i]);
        }
        fm_cpu_adamw_update(be, p, NULL, g, m, v, n, lr, b1, b2, eps, wd, gs, t);
        for (size_t i = 0; i < n; i++) assert_true(g[i] == 0.0f);
        free(g);
    }
    CHECK_REL("adamw params", p, ep, n, 2e-6);
    CHECK_REL("adamw m", m, em, n, 2e-6);
    CHECK_REL("adamw v", v, ev, n, 2e-6);
    fm_backend_free(&be);
    free(p), free(m), free(v), free(ep), free(em), free(ev);
}

static void test_sum_squares(void **state)
{
    (void)state;
    rng r = {6};
    const size_t n = (size_t)FM_CPU_SUMSQ_BLOCK * 2100 + 12345; /* two groups, ragged tail */
    float *x = randf(&r, n, -1, 1);
    double e = 0.0;
    for (size_t i = 0; i < n; i++) e += (double)x[i] * (double)x[i];
    double res[4];
    for (int t = 1; t <= 4; t++) {
        fm_backend *be = be_new(t);
        fm_cpu_sum_squares(be, &res[t - 1], x, n);
        fm_backend_free(&be);
    }
    assert_true(fabs(res[0] - e) <= 1e-10 * e); /* the sequential reference itself errs ~1e-12 */
    for (int t = 1; t < 4; t++) /* bit-identical for 1, 2, 3, 4 threads */
        assert_memory_equal(&res[t], &res[0], sizeof(double));
    double small;
    fm_backend *be = be_new(2);
    fm_cpu_sum_squares(be, &small, x, 5);
    double es = 0.0;
    for (int i = 0; i < 5; i++) es += (double)x[i] * (double)x[i];
    assert_true(fabs(small - es) <= 1e-15 * es);
    fm_cpu_sum_squares(be, &small, x, 0);
    assert_true(small == 0.0);
    fm_backend_free(&be);
    free(x);
}

/* ---- determinism: same thread count -> same bits; and across thread counts -------------------- */

typedef struct det_out {
    float *enc, *dwte, *ln, *dln, *mm, *dmm_in, *dmm_w, *gelu, *att, *datt, *xent, *adam;
    float *emb, *demb, *rms, *drms, *drmsw, *sw, *dsw, *rope, *gatt, *dgatt; /* Llama's kernels */
} det_out;

/* Runs every kernel with `threads` threads on fixed random inputs; every output into d. The inputs of
 * the non-matmul kernels do not depend on matmul outputs, so the cross-thread comparison of those
 * kernels does not inherit the BLAS's behaviour. */
static void det_run(int threads, det_out *d)
{
    rng r = {77};
    /* N*C above the serial threshold, so LayerNorm and the encoder run threaded too */
    const int B = 2, T = 70, C = 256, NH = 4, V = 300, Vp = 384, N = B * T;
    const size_t nc = (size_t)N * C;
    int32_t tok[140];
    for (int i = 0; i < N; i++) tok[i] = (int32_t)(rng_uniform(&r) * V);
    float *wte = randf(&r, (size_t)Vp * C, -0.1, 0.1), *wpe = randf(&r, (size_t)T * C, -0.1, 0.1);
    float *w = randf(&r, (size_t)3 * C * C, -0.1, 0.1), *bias = randf(&r, 3 * C, -0.1, 0.1);
    float *lw = randf(&r, C, 0.9, 1.1), *lb = randf(&r, C, -0.1, 0.1);
    float *dout = randf(&r, (size_t)N * 3 * C, -1, 1), *act = randf(&r, (size_t)N * 3 * C, -2, 2);
    float *logits = randf(&r, (size_t)N * Vp, -3, 3), *grads = randf(&r, (size_t)3 * C * C, -1, 1);
    fm_backend *be = be_new(threads);
    d->enc = calloc(nc, 4), d->dwte = calloc((size_t)Vp * C, 4), d->ln = calloc(nc, 4);
    d->dln = calloc(nc, 4), d->mm = calloc((size_t)N * 3 * C, 4), d->dmm_in = calloc(nc, 4);
    d->dmm_w = calloc((size_t)3 * C * C, 4), d->gelu = calloc((size_t)N * 3 * C, 4);
    d->att = calloc(nc, 4), d->datt = calloc((size_t)N * 3 * C, 4);
    d->xent = calloc((size_t)N * Vp, 4), d->adam = copyf(w, (size_t)3 * C * C);
    float *dwpe = calloc((size_t)T * C, 4), *mean = calloc(N, 4), *rstd = calloc(N, 4);
    float *dlw = calloc(C, 4), *dlb = calloc(C, 4), *dbias = calloc(3 * C, 4);
    float *lse = calloc((size_t)B * NH * T, 4), *losses = calloc(N, 4), *xl = calloc(N, 4);
    float *m = calloc((size_t)3 * C * C, 4), *v = calloc((size_t)3 * C * C, 4);
    fm_cpu_encoder_forward(be, d->enc, tok, wte, wpe, B, T, C);
    fm_cpu_encoder_backward(be, d->dwte, dwpe, d->enc, tok, B, T, C);
    fm_cpu_layernorm_forward(be, d->ln, mean, rstd, d->enc, lw, lb, N, C);
    fm_cpu_layernorm_backward(be, d->dln, dlw, dlb, d->ln, d->enc, lw, mean, rstd, N, C);
    fm_cpu_matmul_forward(be, d->mm, d->ln, w, bias, N, C, 3 * C);
    fm_cpu_matmul_backward(be, d->dmm_in, d->dmm_w, dbias, dout, d->ln, w, N, C, 3 * C);
    fm_cpu_gelu_forward(be, d->gelu, act, (size_t)N * 3 * C);
    fm_cpu_attention_forward(be, d->att, lse, act, B, T, C, NH, NH);
    fm_cpu_attention_backward(be, d->datt, d->enc, act, d->att, lse, B, T, C, NH, NH);
    memcpy(d->xent, logits, (size_t)N * Vp * 4);
    fm_cpu_softmax_xent_forward(be, losses, xl, d->xent, tok, N, V, Vp);
    fm_cpu_softmax_xent_backward(be, d->xent, xl, tok, 1.0f / N, N, V, Vp);
    fm_cpu_adamw_update(be, d->adam, NULL, grads, m, v, (size_t)3 * C * C, 1e-3f, 0.9f, 0.95f, 1e-8f,
                        0.1f, 1.0f, 1);
    /* Llama's kernels; attention with 4 query heads on 2 key/value heads (W = 2C) */
    d->emb = calloc(nc, 4), d->demb = calloc((size_t)Vp * C, 4), d->rms = calloc(nc, 4);
    d->drms = calloc(nc, 4), d->drmsw = calloc(C, 4), d->sw = calloc((size_t)N * C, 4);
    d->dsw = calloc((size_t)N * 2 * C, 4), d->rope = copyf(act, (size_t)N * 2 * C);
    d->gatt = calloc(nc, 4), d->dgatt = calloc((size_t)N * 2 * C, 4);
    fm_cpu_embedding_forward(be, d->emb, tok, wte, B, T, C);
    fm_cpu_embedding_backward(be, d->demb, d->emb, tok, B, T, C);
    fm_cpu_rmsnorm_forward(be, d->rms, rstd, d->emb, lw, N, C, 1e-5f);
    fm_cpu_rmsnorm_backward(be, d->drms, d->drmsw, d->ln, d->emb, lw, rstd, N, C);
    fm_cpu_swiglu_forward(be, d->sw, act, N, C);
    fm_cpu_swiglu_backward(be, d->dsw, act, d->enc, N, C);
    fm_cpu_rope_forward(be, d->rope, B, T, C, NH, NH / 2, 5, 10000.0f);
    fm_cpu_attention_forward(be, d->gatt, lse, d->rope, B, T, C, NH, NH / 2);
    fm_cpu_attention_backward(be, d->dgatt, d->enc, d->rope, d->gatt, lse, B, T, C, NH, NH / 2);
    fm_cpu_rope_backward(be, d->dgatt, B, T, C, NH, NH / 2, 5, 10000.0f);
    fm_backend_free(&be);
    free(wte), free(wpe), free(w), free(bias), free(lw), free(lb), free(dout), free(dwpe);
    free(mean), free(rstd), free(dlw), free(dlb), free(dbias), free(lse), free(losses), free(xl);
    free(m), free(v), free(act), free(logits), free(grads);
}

static void det_free(det_out *d)
{
    free(d->enc), free(d->dwte), free(d->ln), free(d->dln), free(d->mm), free(d->dmm_in);
    free(d->dmm_w), free(d->gelu), free(d->att), free(d->datt), free(d->xent), free(d->adam);
    free(d->emb), free(d->demb), free(d->rms), free(d->drms), free(d->drmsw), free(d->sw);
    free(d->dsw), free(d->rope), free(d->gatt), free(d->dgatt);
}

/* with_matmul = 0 leaves out the matmul outputs */
static void det_compare(const det_out *a, const det_out *b, int with_matmul)
{
    const size_t N = 140, C = 256, Vp = 384;
    assert_memory_equal(a->enc, b->enc, N * C * 4);
    assert_memory_equal(a->dwte, b->dwte, Vp * C * 4);
    assert_memory_equal(a->ln, b->ln, N * C * 4);
    assert_memory_equal(a->dln, b->dln, N * C * 4);
    if (with_matmul) {
        assert_memory_equal(a->mm, b->mm, N * 3 * C * 4);
        assert_memory_equal(a->dmm_in, b->dmm_in, N * C * 4);
        assert_memory_equal(a->dmm_w, b->dmm_w, 3 * C * C * 4);
    }
    assert_memory_equal(a->gelu, b->gelu, N * 3 * C * 4);
    assert_memory_equal(a->att, b->att, N * C * 4);
    assert_memory_equal(a->datt, b->datt, N * 3 * C * 4);
    assert_memory_equal(a->xent, b->xent, N * Vp * 4);
    assert_memory_equal(a->adam, b->adam, 3 * C * C * 4);
    assert_memory_equal(a->emb, b->emb, N * C * 4);
    assert_memory_equal(a->demb, b->demb, Vp * C * 4);
    assert_memory_equal(a->rms, b->rms, N * C * 4);
    assert_memory_equal(a->drms, b->drms, N * C * 4);
    assert_memory_equal(a->drmsw, b->drmsw, C * 4);
    assert_memory_equal(a->sw, b->sw, N * C * 4);
    assert_memory_equal(a->dsw, b->dsw, N * 2 * C * 4);
    assert_memory_equal(a->rope, b->rope, N * 2 * C * 4);
    assert_memory_equal(a->gatt, b->gatt, N * C * 4);
    assert_memory_equal(a->dgatt, b->dgatt, N * 2 * C * 4);
}

static void test_determinism(void **state)
{
    (void)state;
    det_out a, b, c;
    det_run(2, &a);
    det_run(2, &b);
    det_compare(&a, &b, 1); /* same thread count: every kernel bit-identical */
    det_run(1, &c);
    /* 1 vs 2 threads: every kernel but matmul bit-identical (their reductions are partitioned over
     * thread-independent indices). matmul tiles its products per thread and is identical across
     * thread counts only where the BLAS computes an element independently of the tile shape
     * (docs/performance.md): here it must agree to rounding. */
    det_compare(&a, &c, 0);
    const size_t nm = (size_t)140 * 3 * 256;
    double *ref = to_double(a.mm, nm);
    CHECK_REL("matmul 1 vs 2 threads", c.mm, ref, nm, 1e-6);
    free(ref);
    det_free(&a), det_free(&b), det_free(&c);
}

/* ---- bf16 (kernels.h, "Precision") ------------------------------------------------------------- */

static float bits_f(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* The rounding kernels.h states, computed another way: the two bf16 neighbours (by truncation and
 * one step up in magnitude; 2^128 above the largest bf16) compared in double, ties to the even one;
 * NaN: the quiet NaN with the same sign and top payload bits. Returns the bf16 bits. */
static uint16_t ref_bf16_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if (isnan(x)) return (uint16_t)((u >> 16) | 0x0040u);
    if (isinf(x)) return (uint16_t)(u >> 16);
    const uint32_t lo = u & 0xFFFF0000u, hi = lo + 0x10000u;
    const double dl = fabs((double)x - (double)bits_f(lo));
    const double hv = (hi & 0x7F800000u) == 0x7F800000u ? copysign(ldexp(1.0, 128), (double)x)
                                                        : (double)bits_f(hi);
    const double dh = fabs(hv - (double)x);
    return (uint16_t)((dl < dh || (dl == dh && ((lo >> 16) & 1u) == 0) ? lo : hi) >> 16);
}

/* Every upper half (all exponents, signs, NaN/inf patterns) with the lower halves that matter
 * (0, 1, just below / at / above the tie, the largest, a few others): fm_cpu_round_bf16 and the
 * to_bf16 kernel (2 threads) equal the reference bit for bit; bf16 -> fp32 is exact. */
static void test_bf16_rounding(void **state)
{
    (void)state;
    const uint32_t lows[] = {0x0000u, 0x0001u, 0x3FFFu, 0x7FFFu, 0x8000u, 0x8001u, 0xC000u, 0xFFFFu};
    const size_t nl = sizeof lows / sizeof *lows, n = 65536 * nl;
    float *x = malloc(n * sizeof *x);
    fm_bf16 *y = malloc(n * sizeof *y);
    assert_true(x && y);
    for (uint32_t hi = 0; hi < 65536; hi++)
        for (size_t k = 0; k < nl; k++) x[hi * nl + k] = bits_f(hi << 16 | lows[k]);
    fm_backend *be = be_new(2);
    fm_cpu_to_bf16(be, y, x, n);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        const uint16_t want = ref_bf16_bits(x[i]);
        if (fm_cpu_round_bf16(x[i]) != want || y[i] != want) {
            if (bad++ < 5)
                print_error("bf16 of 0x%08x: scalar 0x%04x, kernel 0x%04x, expected 0x%04x\n",
                            (unsigned)(*(const uint32_t *)(const void *)&x[i]),
                            fm_cpu_round_bf16(x[i]), y[i], want);
        }
        uint32_t back;
        const float f = fm_cpu_bf16_to_f32(want);
        memcpy(&back, &f, sizeof back);
        if (back != (uint32_t)want << 16) bad++;
    }
    assert_int_equal(bad, 0);
    fm_backend_free(&be);
    free(x), free(y);
}

/* adamw_update's bf16 copy: the updated params rounded by fm_cpu_round_bf16, element for element,
 * and the fp32 update identical with and without the copy. */
static void test_adamw_bf16_copy(void **state)
{
    (void)state;
    const size_t n = 100003;
    rng r = {81};
    float *p1 = randf(&r, n, -1, 1), *g1 = randf(&r, n, -0.1, 0.1), *m1 = randf(&r, n, -0.01, 0.01);
    float *v1 = randf(&r, n, 0, 1e-4);
    float *p2 = copyf(p1, n), *g2 = copyf(g1, n), *m2 = copyf(m1, n), *v2 = copyf(v1, n);
    fm_bf16 *pb = malloc(n * sizeof *pb);
    assert_non_null(pb);
    fm_backend *be = be_new(2);
    fm_cpu_adamw_update(be, p1, NULL, g1, m1, v1, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 0.7f, 3);
    fm_cpu_adamw_update(be, p2, pb, g2, m2, v2, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 0.7f, 3);
    assert_memory_equal(p1, p2, n * 4);
    assert_memory_equal(m1, m2, n * 4);
    assert_memory_equal(v1, v2, n * 4);
    for (size_t i = 0; i < n; i++) assert_int_equal(pb[i], fm_cpu_round_bf16(p2[i]));
    fm_backend_free(&be);
    free(p1), free(g1), free(m1), free(v1), free(p2), free(g2), free(m2), free(v2), free(pb);
}

/* Under AddressSanitizer an impossible allocation must return NULL (as the C library's does) instead
 * of aborting, for test_deferred_error; read by the sanitizer's runtime, unused otherwise. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "allocator_may_return_null=1";
}

/* A kernel that cannot get its workspace records the error; sync() returns it once. */
static void test_deferred_error(void **state)
{
    (void)state;
    fm_backend *be = be_new(1);
    assert_null(fm_cpu_work(be, (size_t)1 << 62));
    fm_status st = be->ops->sync(be);
    assert_non_null(st);
    assert_int_equal(fm_status_code(st), FM_ERR_NOMEM);
    assert_non_null(strstr(fm_status_message(st), "workspace"));
    fm_status_free(&st);
    assert_null(be->ops->sync(be)); /* reported once */
    assert_non_null(fm_cpu_work(be, 1000)); /* and the workspace works again */
    assert_null(be->ops->sync(be));
    fm_backend_free(&be);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bf16_rounding),   cmocka_unit_test(test_adamw_bf16_copy),
        cmocka_unit_test(test_deferred_error),
        cmocka_unit_test(test_expf),
        cmocka_unit_test(test_encoder),         cmocka_unit_test(test_layernorm),
        cmocka_unit_test(test_residual),        cmocka_unit_test(test_matmul),
        cmocka_unit_test(test_gelu),            cmocka_unit_test(test_attention_small),
        cmocka_unit_test(test_attention_blocks), cmocka_unit_test(test_attention_decode),
        cmocka_unit_test(test_embedding),       cmocka_unit_test(test_rmsnorm),
        cmocka_unit_test(test_swiglu),          cmocka_unit_test(test_rope),
        cmocka_unit_test(test_softmax_xent),
        cmocka_unit_test(test_adamw),
        cmocka_unit_test(test_sum_squares),     cmocka_unit_test(test_determinism),
    };
    return cmocka_run_group_tests_name("cpu_kernels", tests, NULL, NULL);
}

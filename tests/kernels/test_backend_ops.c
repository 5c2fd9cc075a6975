/* test_backend_ops.c — every compute op of kernels.h on every backend compiled in (the model is ggml's
 * test-backend-ops), so that neither a new op nor a new backend can land without being checked.
 *
 * What it checks:
 *   - The registry: fm_backend_count/fm_backend_name list the compiled-in backends, "cpu" first;
 *     unknown and not-compiled-in names fail with a message that names them; device counts give a
 *     reason for 0; creation and free of every backend with a device.
 *   - Coverage: the compute ops are the function pointers from `encoder_forward` to the end of
 *     fm_kernel_ops (kernels.h). The test counts those slots with offsetof/sizeof and requires that the
 *     byte offsets the cases below cover are exactly those slots: a new op without a case FAILS here.
 *   - Every backend's table: no NULL entry (life cycle, memory and compute), a name equal to the
 *     registry's, sane caps (0/1 flags, known precision bits matching act_bytes), describe() writes a
 *     non-empty NUL-terminated line and truncates safely; memory ops (alloc zeroed, upload/download,
 *     zero of a sub-range, sync, free; host_memory backends: the pointer is readable directly).
 *   - Every op on every backend with a device, on random inputs, against a double-precision reference
 *     written plainly here; outputs an op accumulates into are pre-filled with random values (so "+="
 *     is checked), outputs it overwrites with garbage (so a missed element shows), and every output is
 *     compared. Each op is run twice and must give bit-identical results (determinism). Backends after
 *     the first ("cpu", the reference backend) are also compared with the cpu backend's results.
 *   - Precisions (kernels.h, "Precision"): a backend whose caps.precisions lists bf16 is also run as a
 *     bf16 instance ("cpu/bf16"), on every op: the "act" tensors (ACT below) are then bf16, uploaded
 *     rounded to nearest-even by this test's own rounding (ref_bf16) and widened when downloaded.
 *     Each output of a bf16 instance is checked twice: against the fp32 reference with the stated
 *     bf16 tolerance (the error bf16 adds, "bf16 vs double" below), and, where bf16 inputs change the
 *     result, against a double reference computed from the bf16-rounded inputs with the fp32
 *     tolerance (the contract: exact products, fp32 sums, "bf16 in"). A bf16 instance after the
 *     first (a GPU's, one day) is compared with cpu/bf16 within the bf16 tolerance.
 * A backend with no device (e.g. "cuda" on a machine without a GPU) is reported as SKIPPED with its
 * reason and the other backends' cases still run and must pass. FM_TEST_REQUIRE_BACKENDS="cuda" (names
 * separated by spaces or commas) turns such a skip into a failure (tests/cuda/run-on-gpu.sh sets it).
 *
 * Tolerances, per element: |got - ref| <= atol + rtol * |ref| (NaN fails), with ref the double
 * reference rounded to fp32 (or, vs cpu, the cpu backend's result); "exact" means equal. The column
 * "vs cpu" is the CUDA-vs-CPU tolerance of the former tests/cuda/test_cuda_kernels.c, kept as it was;
 * "vs double" is twice that, except where noted (the reference backend's own error is part of it).
 *   op                     outputs                 vs double (rtol, atol)  vs cpu (rtol, atol)
 *   encoder_forward        out                     exact                   exact
 *   encoder_backward       dwte, dwpe (+=)         1e-6, 2e-6              exact
 *   embedding_forward      out                     exact                   exact
 *   embedding_backward     dwte (+=)               1e-6, 2e-6              exact
 *   layernorm_forward      out, mean, rstd         2e-5, 2e-5              1e-5, 1e-5
 *   layernorm_backward     dinp (+=)               2e-4, 2e-5              1e-4, 1e-5
 *                          dweight, dbias (+=)     2e-4, 2e-4              1e-4, 1e-4
 *   rmsnorm_forward        out, rstd               2e-5, 2e-5              1e-5, 1e-5
 *   rmsnorm_backward       dinp (+=)               2e-4, 2e-5              1e-4, 1e-5
 *                          dweight (+=)            2e-4, 2e-4              1e-4, 1e-4
 *   residual_forward       out (also in place)     exact                   exact
 *   matmul_forward         out (K <= 200)          2e-4, 2e-4              1e-4, 1e-4
 *   matmul_backward        dinp, dweight, dbias    2e-4, 2e-4              1e-4, 1e-4
 *   gelu_forward           out                     2e-5, 2e-6              1e-5, 1e-6
 *   gelu_backward          dinp (also in place)    2e-5, 2e-6              1e-5, 1e-6
 *   swiglu_forward         out                     2e-5, 2e-6              1e-5, 1e-6
 *   swiglu_backward        dinp (also in place)    2e-5, 2e-6              1e-5, 1e-6
 *   rope_forward/backward  qkv, dqkv (in place)    2e-6, 2e-6              1e-6, 1e-6
 *                          (the reference rounds the angles as kernels.h states, rotates in double)
 *   attention_* cases include grouped-query shapes (NKV = NH/2, NH/4, 1)
 *   attention_forward      out, lse                2e-4, 2e-5              1e-4, 1e-5
 *   attention_backward     dqkv                    2e-4, 2e-4              1e-4, 1e-4
 *   attention_decode       out                     2e-4, 2e-5              1e-4, 1e-5
 *                          and within 1e-5 (max-norm relative) of the same backend's attention_forward
 *                          rows on the full sequence, decoded in chunks of 1, 3 and the rest
 *                          kcache, vcache          exact (new rows = k, v; the others untouched)
 *   softmax_xent_forward   losses, lse             2e-5, 2e-5              1e-5, 1e-5
 *   softmax_xent_backward  dlogits (in place)      2e-4, 2e-8              1e-4, 1e-8
 *   adamw_update           params, m, v            2e-5, 2e-7              1e-5, 1e-7
 *                          grads                   exactly 0               exact
 *                          params_bf16 (2nd case)  8e-3, 2e-7              8e-3, 2e-7
 *   sum_squares            the double result       1e-12 relative (long double reference), both
 *   to_bf16                dst                     exact (ref_bf16; NaN: a NaN of the same sign)
 *
 * bf16 instances, where an op has "act" tensors (every other tensor: the fp32 tolerances above):
 *   op                     tensor                  bf16 vs double (rtol, atol)  bf16 in (rtol, atol)
 *   layernorm, rmsnorm,    out (bf16)              8e-3, 2e-5 (u = 2^-8)        -
 *   gelu, swiglu forward,
 *   attention forward/decode
 *   attention_decode       out vs forward          max-norm relative 8e-3 (one bf16 step)
 *   matmul_forward         out                     2e-2, 1e-1                   2e-4, 2e-4
 *   matmul_backward        dinp, dweight           2e-2, 1e-1                   2e-4, 2e-4
 *                          dbias (fp32 dout)       2e-4, 2e-4                   -
 *   attention_backward     dqkv (bf16 out read)    1e-2, 1e-2                   2e-4, 2e-4
 *   adamw_update           params_bf16             8e-3, 2e-7                   -
 *
 * TF32: an fp32 instance after the reference (a GPU: the CUDA backend's fp32 table multiplies on TF32
 * tensor cores unless FM_CUDA_TF32=0) is held to TOL_TF32_MM on the matmul products (matmul_forward
 * out, matmul_backward dinp and dweight), against double and against cpu: TF32 keeps a 10-bit
 * significand (u = 2^-11, 2^-10 if truncated), 1/8 of bf16's error, K <= 288 terms: 1e-2, 3e-2.
 */
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

#include "fm_test.h"
#include "kernels.h"

/* ---- the backends under test ------------------------------------------------------------------- */

#define MAX_BE 8
/* instances under test: every backend with a device, in registry order ("cpu" first), in fp32, each
 * followed by a bf16 instance when its caps.precisions lists bf16 */
static fm_backend *g_be[MAX_BE];
static char g_be_name[MAX_BE][32]; /* "cpu", "cpu/bf16", "cuda" */
static int g_nbe;

static int is_bf16(const fm_backend *be)
{
    return be->precision == FM_PRECISION_BF16;
}

typedef void (*fn_ptr)(void);

/* ---- random inputs --------------------------------------------------------------------------- */

static double uni(uint64_t *s) /* [0,1) */
{
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(*s >> 11) * (1.0 / 9007199254740992.0);
}

static float *rndf(uint64_t seed, size_t n, double lo, double hi)
{
    float *x = malloc((n ? n : 1) * sizeof *x);
    assert_non_null(x);
    for (size_t i = 0; i < n; i++) x[i] = (float)(lo + (hi - lo) * uni(&seed));
    return x;
}

static int32_t *rndi(uint64_t seed, size_t n, int hi)
{
    int32_t *x = malloc((n ? n : 1) * sizeof *x);
    assert_non_null(x);
    for (size_t i = 0; i < n; i++) x[i] = (int32_t)(uni(&seed) * hi);
    return x;
}

static double *zd(size_t n)
{
    double *d = calloc(n ? n : 1, sizeof *d);
    assert_non_null(d);
    return d;
}

static double *dbl(const float *x, size_t n)
{
    double *d = zd(n);
    for (size_t i = 0; i < n; i++) d[i] = x[i];
    return d;
}

static float *flt(const double *x, size_t n) /* the fp32 input an op receives from a double value */
{
    float *f = malloc((n ? n : 1) * sizeof *f);
    assert_non_null(f);
    for (size_t i = 0; i < n; i++) f[i] = (float)x[i];
    return f;
}

/* ---- bf16, written here independently of the backends' bit formula -------------------------------- */

static float bits_f(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* fp32 -> the nearest bf16 value (ties to the even significand), as IEEE 754 rounds with an 8-bit
 * significand: the two neighbours by truncation, compared in double; beyond the largest bf16 the
 * upper neighbour is 2^128, i.e. overflow to infinity. NaN and infinities stay. */
static float ref_bf16(float x)
{
    if (isnan(x) || isinf(x)) return x;
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    const uint32_t lo = u & 0xFFFF0000u, hi = lo + 0x10000u; /* magnitudes below / above */
    const double dl = fabs((double)x - (double)bits_f(lo));
    const int hi_inf = (hi & 0x7F800000u) == 0x7F800000u;
    const double hv = hi_inf ? copysign(ldexp(1.0, 128), (double)x) : (double)bits_f(hi);
    const double dh = fabs(hv - (double)x);
    if (dl < dh || (dl == dh && ((lo >> 16) & 1u) == 0)) return bits_f(lo);
    return bits_f(hi); /* +-inf when hi_inf */
}

static uint16_t bf16_bits(float x) /* x must be a bf16 value (ref_bf16's result or NaN) */
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if (isnan(x)) return (uint16_t)((u >> 16) | 0x0040u);
    return (uint16_t)(u >> 16);
}

/* x rounded to bf16, in double: the input an op of a bf16 instance receives in an "act" argument */
static double *dbl16(const float *x, size_t n)
{
    double *d = zd(n);
    for (size_t i = 0; i < n; i++) d[i] = ref_bf16(x[i]);
    return d;
}

/* ---- a case: tensors, their expected values, and the call ------------------------------------ */

typedef struct tol {
    double rtol, atol;
} tol;
static const tol EXACT = {0.0, 0.0};
/* bf16 instances (see the table at the top). bf16 has an 8-bit significand: rounding to nearest is off
 * by at most u = 2^-8 relative. An output stored in bf16 carries that on top of its fp32 error: */
static const tol TOL_BF16_OUT = {8e-3, 2e-5};
/* a matmul with bf16 inputs in [-1, 1], K <= 200 terms, against the product of the fp32 inputs: each
 * product is off by up to 2u relative, so an element by up to 2^-7 sum|x w| (~0.4 for K = 200,
 * about sqrt(K) times less in practice: 0.044 measured); the tight check is the one against ref16 */
static const tol TOL_BF16_MM = {2e-2, 1e-1};
/* attention_backward reads forward's output rounded to bf16 (D = rowsum(dO * O) is off by up to
 * u sum|dO O|): 5e-3 measured */
static const tol TOL_BF16_ATT_BWD = {1e-2, 1e-2};
/* matmul products on an fp32 instance that uses TF32 tensor cores (see the table at the top) */
static const tol TOL_TF32_MM = {1e-2, 3e-2};

/* element types. ACT: an "act" argument of kernels.h, fp32 on an fp32 instance and bf16 on a bf16
 * one; BF16: bf16 on every instance. Host values of F32, ACT and BF16 tensors are floats (bf16
 * uploads round them with ref_bf16; downloads widen them exactly). */
enum { F32, I32, F64, ACT, BF16 };
enum { IN, INOUT, OUT, TEMP }; /* TEMP: device scratch the call may use, not compared */

typedef struct tensor {
    const char *name;
    int type, role;
    size_t n;      /* elements */
    void *init;    /* IN, INOUT: initial contents (owned) */
    double *ref;   /* INOUT, OUT: expected values from the fp32 inputs (owned) */
    tol vs_ref;    /* against ref, on fp32 instances */
    tol vs_cpu;    /* against the reference backend's result (fp32 instances) */
    tol vs_bf16;   /* against ref on bf16 instances, and bf16 instances against cpu/bf16 (default:
                      vs_ref; the error that bf16 inputs and outputs add, stated per case) */
    double *ref16; /* NULL, or expected values from the inputs rounded to bf16 as a bf16 instance
                      receives them (owned): the contract check, compared within vs_ref16 */
    tol vs_ref16;
    int match; /* >= 0: also within match_tol (max-norm relative) of tensor `match` */
    double match_tol, match_tol16; /* fp32 / bf16 instances */
    int tf32; /* a matmul product: TOL_TF32_MM on fp32 instances after the reference (TF32) */
} tensor;

#define MAX_TENSORS 10
typedef struct op_case op_case;
struct op_case {
    char name[128];
    int nt;
    tensor t[MAX_TENSORS];
    int i[8];   /* integer arguments of the call */
    float f[8]; /* float arguments of the call */
    void (*call)(fm_backend *be, void *const *d, const op_case *c);
};

/* bytes per element of tensor type `type` on instance be (device), and in the host copies */
static int is16(int type, const fm_backend *be)
{
    return type == BF16 || (type == ACT && be->ops->act_bytes == 2);
}
static size_t elem_bytes(int type, const fm_backend *be)
{
    return type == F64 ? 8 : is16(type, be) ? 2 : 4;
}
static size_t host_bytes(int type)
{
    return type == F64 ? 8 : 4;
}

static int add(op_case *c, const char *name, int type, int role, size_t n, void *init, double *ref,
               tol vs_ref, tol vs_cpu)
{
    assert_true(c->nt < MAX_TENSORS);
    tensor *t = &c->t[c->nt];
    *t = (tensor){name, type, role, n, init, ref, vs_ref, vs_cpu, vs_ref, NULL, EXACT, -1, 0.0, 0.0, 0};
    return c->nt++;
}

/* the tolerance of tensor k against the fp32 reference on bf16 instances */
static void bf16_tol(op_case *c, int k, tol t)
{
    c->t[k].vs_bf16 = t;
}

/* the expected values of tensor k from bf16-rounded inputs (owned), within t on bf16 instances */
static void bf16_ref(op_case *c, int k, double *ref16, tol t)
{
    c->t[k].ref16 = ref16;
    c->t[k].vs_ref16 = t;
}
static int add_in(op_case *c, const char *name, int type, size_t n, void *init)
{
    return add(c, name, type, IN, n, init, NULL, EXACT, EXACT);
}

/* Downloads tensor t of backend be (run r) into a new host buffer (bf16 widened to float). */
static void *fetch(fm_backend *be, void *d, const tensor *t)
{
    const size_t bytes = t->n * elem_bytes(t->type, be);
    void *h = malloc(t->n ? t->n * host_bytes(t->type) : 1);
    assert_non_null(h);
    if (!is16(t->type, be)) {
        FM_ASSERT_OK(be->ops->download(be, h, d, bytes));
        return h;
    }
    uint16_t *b = malloc(bytes ? bytes : 1);
    assert_non_null(b);
    FM_ASSERT_OK(be->ops->download(be, b, d, bytes));
    for (size_t i = 0; i < t->n; i++) ((float *)h)[i] = bits_f((uint32_t)b[i] << 16);
    free(b);
    return h;
}

static double val(const tensor *t, const void *h, size_t i)
{
    return t->type == F64 ? ((const double *)h)[i] : (double)((const float *)h)[i];
}

/* Element-wise comparison of got against want (want_is_ref: a double reference, compared after
 * rounding to fp32 for fp32 tensors of an fp32 instance). Prints the worst element; returns the number
 * outside. Two NaNs of the same sign are equal (to_bf16 keeps NaN); any other NaN fails. */
static int compare(const char *be_name, const op_case *c, const tensor *t, const void *got,
                   const void *want, int want_is_ref, int f32, tol tl, const char *against)
{
    double worst = 0.0, maxerr = 0.0;
    size_t wi = 0;
    int bad = 0;
    for (size_t i = 0; i < t->n; i++) {
        double w = want_is_ref ? ((const double *)want)[i] : val(t, want, i);
        if (want_is_ref && f32) w = (double)(float)w;
        const double g = val(t, got, i), err = fabs(g - w), lim = tl.atol + tl.rtol * fabs(w);
        if (g == w || (isnan(g) && isnan(w) && signbit(g) == signbit(w))) continue; /* also inf */
        if (!(err <= lim)) bad++; /* NaN fails */
        const double ratio = lim > 0.0 ? err / lim : (err > 0.0 ? INFINITY : 0.0);
        if (!(ratio <= worst)) worst = ratio, wi = i;
        if (err > maxerr) maxerr = err;
    }
    printf("  %-5s %-10s vs %-6s max|err| %-9.3g worst/limit %-9.3g%s\n", be_name, t->name, against,
           maxerr, worst, bad ? "  FAIL" : "");
    if (bad)
        print_error("%s on %s: %s: %d of %zu elements outside rtol %g atol %g against %s; worst at "
                    "%zu: got %.9g\n",
                    c->name, be_name, t->name, bad, t->n, tl.rtol, tl.atol, against, wi,
                    val(t, got, wi));
    return bad;
}

/* max |a - b| / max |b| <= mtol (a, b: fp32 tensors of the same size) */
static int compare_match(const char *be_name, const op_case *c, const tensor *t, const float *a,
                         const tensor *u, const float *b)
{
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < t->n; i++) {
        const double e = fabs((double)a[i] - (double)b[i]);
        if (e > num || isnan(e)) num = isnan(e) ? INFINITY : e;
        if (fabs((double)b[i]) > den) den = fabs((double)b[i]);
    }
    const double rel = num / (den > 0.0 ? den : 1.0);
    const int bad = !(rel <= t->match_tol);
    printf("  %-5s %-10s vs %-6s max-norm relative %.3g (limit %.3g)%s\n", be_name, t->name,
           u->name, rel, t->match_tol, bad ? "  FAIL" : "");
    if (bad)
        print_error("%s on %s: %s differs from %s by %.3g (max-norm relative) > %.3g\n", c->name,
                    be_name, t->name, u->name, rel, t->match_tol);
    return bad;
}

/* Runs case c on backend be once: fresh buffers, inputs uploaded (bf16 tensors rounded with
 * ref_bf16), overwritten outputs pre-filled with garbage that depends on `run`; returns the downloaded
 * INOUT/OUT tensors (NULL for the others). */
static void run_once(fm_backend *be, const op_case *c, int run, void **host)
{
    void *d[MAX_TENSORS] = {NULL};
    for (int k = 0; k < c->nt; k++) {
        const tensor *t = &c->t[k];
        const size_t bytes = t->n * elem_bytes(t->type, be);
        FM_ASSERT_OK(be->ops->alloc(be, &d[k], bytes));
        const void *src = t->init;
        void *g = NULL;
        if (t->role == OUT) {
            g = malloc(t->n ? t->n * host_bytes(t->type) : 1);
            assert_non_null(g);
            uint64_t s = 1000003u * (uint64_t)(run + 1) + 7919u * (uint64_t)k;
            for (size_t i = 0; i < t->n; i++) {
                const double v = 1e3 * (uni(&s) - 0.5);
                if (t->type == F64)
                    ((double *)g)[i] = v;
                else
                    ((float *)g)[i] = (float)v;
            }
            src = g;
        }
        if (src && (t->role == IN || t->role == INOUT || t->role == OUT)) {
            if (is16(t->type, be)) {
                uint16_t *b = malloc(bytes ? bytes : 1);
                assert_non_null(b);
                for (size_t i = 0; i < t->n; i++) b[i] = bf16_bits(ref_bf16(((const float *)src)[i]));
                FM_ASSERT_OK(be->ops->upload(be, d[k], b, bytes));
                free(b);
            } else {
                FM_ASSERT_OK(be->ops->upload(be, d[k], src, bytes));
            }
        }
        free(g);
    }
    c->call(be, d, c);
    FM_ASSERT_OK(be->ops->sync(be));
    for (int k = 0; k < c->nt; k++) {
        const tensor *t = &c->t[k];
        host[k] = t->role == INOUT || t->role == OUT ? fetch(be, d[k], t) : NULL;
        be->ops->free(be, d[k]);
    }
}

static void free_all(void **host, int n)
{
    for (int k = 0; k < n; k++) free(host[k]), host[k] = NULL;
}

/* Runs case c on every instance: reference(s), determinism, agreement with the cpu instance of the
 * same precision (the first one); frees the case. */
static void run_case(op_case *c)
{
    printf(" %s\n", c->name);
    void *first[2][MAX_TENSORS] = {{NULL}}; /* results of the first fp32 / bf16 instance */
    int have[2] = {0, 0}, bad = 0;
    for (int b = 0; b < g_nbe; b++) {
        fm_backend *be = g_be[b];
        const char *bn = g_be_name[b];
        const int p16 = is_bf16(be);
        void *h0[MAX_TENSORS] = {NULL}, *h1[MAX_TENSORS] = {NULL};
        run_once(be, c, 0, h0);
        run_once(be, c, 1, h1);
        for (int k = 0; k < c->nt; k++) {
            const tensor *t = &c->t[k];
            if (!h0[k]) continue;
            const int f32 = t->type == F32 || (t->type == ACT && !p16);
            const int tf = t->tf32 && !p16 && b > 0; /* a GPU's fp32: TF32 products */
            bad += compare(bn, c, t, h0[k], t->ref, 1, f32,
                           p16 ? t->vs_bf16 : tf ? TOL_TF32_MM : t->vs_ref, "double");
            if (p16 && t->ref16)
                bad += compare(bn, c, t, h0[k], t->ref16, 1, f32, t->vs_ref16, "bf16 in");
            if (memcmp(h0[k], h1[k], t->n * host_bytes(t->type)) != 0) {
                print_error("%s on %s: %s: two runs on the same inputs differ\n", c->name, bn,
                            t->name);
                bad++;
            }
            if (t->match >= 0) {
                tensor tm = *t;
                tm.match_tol = p16 ? t->match_tol16 : t->match_tol;
                bad += compare_match(bn, c, &tm, h0[k], &c->t[t->match], h0[t->match]);
            }
            if (have[p16])
                bad += compare(bn, c, t, h0[k], first[p16][k], 0, f32,
                               p16 ? t->vs_bf16 : tf ? TOL_TF32_MM : t->vs_cpu,
                               p16 ? "cpu/bf16" : "cpu");
        }
        free_all(h1, c->nt);
        if (!have[p16]) {
            memcpy(first[p16], h0, sizeof first[p16]);
            have[p16] = 1;
        } else {
            free_all(h0, c->nt);
        }
    }
    free_all(first[0], c->nt);
    free_all(first[1], c->nt);
    for (int k = 0; k < c->nt; k++) free(c->t[k].init), free(c->t[k].ref), free(c->t[k].ref16);
    if (bad) fail_msg("%s: %d check(s) failed (see above)", c->name, bad);
}

static op_case *new_case(const char *fmt, ...)
{
    static op_case c;
    memset(&c, 0, sizeof c);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c.name, sizeof c.name, fmt, ap);
    va_end(ap);
    return &c;
}

#define F(k) ((float *)d[k])
#define CF(k) ((const float *)d[k])
#define CI(k) ((const int32_t *)d[k])

/* ---- encoder ----------------------------------------------------------------------------------- */

static void call_encoder_forward(fm_backend *be, void *const *d, const op_case *c)
{
    be->ops->encoder_forward(be, F(3), CI(0), CF(1), CF(2), c->i[0], c->i[1], c->i[2]);
}

static void test_encoder_forward(void **state)
{
    (void)state;
    const int B = 3, T = 17, C = 40, Vp = 128, maxT = 20;
    op_case *c = new_case("encoder_forward B=%d T=%d C=%d", B, T, C);
    int32_t *tok = rndi(1, (size_t)B * T, 10);
    tok[2] = Vp - 1;
    float *wte = rndf(2, (size_t)Vp * C, -1, 1), *wpe = rndf(3, (size_t)maxT * C, -1, 1);
    double *ref = zd((size_t)B * T * C);
    for (int bt = 0; bt < B * T; bt++)
        for (int ch = 0; ch < C; ch++)
            ref[(size_t)bt * C + ch] =
                (double)wte[(size_t)tok[bt] * C + ch] + (double)wpe[(size_t)(bt % T) * C + ch];
    add_in(c, "tokens", I32, (size_t)B * T, tok);
    add_in(c, "wte", F32, (size_t)Vp * C, wte);
    add_in(c, "wpe", F32, (size_t)maxT * C, wpe);
    add(c, "out", F32, OUT, (size_t)B * T * C, NULL, ref, EXACT, EXACT);
    c->i[0] = B, c->i[1] = T, c->i[2] = C;
    c->call = call_encoder_forward;
    run_case(c);
}

static void call_encoder_backward(fm_backend *be, void *const *d, const op_case *c)
{
    be->ops->encoder_backward(be, F(0), F(1), CF(2), CI(3), c->i[0], c->i[1], c->i[2]);
}

static void test_encoder_backward(void **state)
{
    (void)state;
    const int B = 3, T = 17, C = 40, Vp = 128, maxT = 20;
    op_case *c = new_case("encoder_backward B=%d T=%d C=%d (repeated tokens)", B, T, C);
    int32_t *tok = rndi(4, (size_t)B * T, 10);
    float *dwte = rndf(5, (size_t)Vp * C, -1, 1), *dwpe = rndf(6, (size_t)maxT * C, -1, 1);
    float *dout = rndf(7, (size_t)B * T * C, -1, 1);
    double *rte = dbl(dwte, (size_t)Vp * C), *rpe = dbl(dwpe, (size_t)maxT * C);
    for (int bt = 0; bt < B * T; bt++)
        for (int ch = 0; ch < C; ch++) {
            rte[(size_t)tok[bt] * C + ch] += dout[(size_t)bt * C + ch];
            rpe[(size_t)(bt % T) * C + ch] += dout[(size_t)bt * C + ch];
        }
    const tol r = {1e-6, 2e-6};
    add(c, "dwte", F32, INOUT, (size_t)Vp * C, dwte, rte, r, EXACT);
    add(c, "dwpe", F32, INOUT, (size_t)maxT * C, dwpe, rpe, r, EXACT);
    add_in(c, "dout", F32, (size_t)B * T * C, dout);
    add_in(c, "tokens", I32, (size_t)B * T, tok);
    c->i[0] = B, c->i[1] = T, c->i[2] = C;
    c->call = call_encoder_backward;
    run_case(c);
}

/* ---- layernorm --------------------------------------------------------------------------------- */

static void ln_ref(const float *x, const float *w, const float *b, int N, int C, double *out,
                   double *mean, double *rstd)
{
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * C;
        double m = 0.0, v = 0.0;
        for (int i = 0; i < C; i++) m += xr[i];
        m /= C;
        for (int i = 0; i < C; i++) v += (xr[i] - m) * (xr[i] - m);
        v /= C;
        const double rs = 1.0 / sqrt(v + 1e-5);
        for (int i = 0; i < C; i++) out[(size_t)n * C + i] = (xr[i] - m) * rs * w[i] + b[i];
        mean[n] = m, rstd[n] = rs;
    }
}

static void call_layernorm_forward(fm_backend *be, void *const *d, const op_case *c)
{
    be->ops->layernorm_forward(be, F(0), F(1), F(2), CF(3), CF(4), CF(5), c->i[0], c->i[1]);
}

static void test_layernorm_forward(void **state)
{
    (void)state;
    const int shapes[][2] = {{37, 100}, {64, 768}, {5, 7}};
    for (int s = 0; s < 3; s++) {
        const int N = shapes[s][0], C = shapes[s][1];
        const size_t NC = (size_t)N * C;
        op_case *c = new_case("layernorm_forward N=%d C=%d", N, C);
        float *x = rndf(10 + s, NC, -2, 3), *w = rndf(20 + s, C, 0.5, 1.5);
        float *b = rndf(30 + s, C, -0.5, 0.5);
        double *out = zd(NC), *mean = zd(N), *rstd = zd(N);
        ln_ref(x, w, b, N, C, out, mean, rstd);
        const tol r = {2e-5, 2e-5}, x1 = {1e-5, 1e-5};
        bf16_tol(c, add(c, "out", ACT, OUT, NC, NULL, out, r, x1), TOL_BF16_OUT);
        add(c, "mean", F32, OUT, N, NULL, mean, r, x1);
        add(c, "rstd", F32, OUT, N, NULL, rstd, r, x1);
        add_in(c, "inp", F32, NC, x);
        add_in(c, "weight", F32, C, w);
        add_in(c, "bias", F32, C, b);
        c->i[0] = N, c->i[1] = C;
        c->call = call_layernorm_forward;
        run_case(c);
    }
}

static void call_layernorm_backward(fm_backend *be, void *const *d, const op_case *c)
{
    be->ops->layernorm_backward(be, F(0), F(1), F(2), CF(3), CF(4), CF(5), CF(6), CF(7), c->i[0],
                                c->i[1]);
}

static void test_layernorm_backward(void **state)
{
    (void)state;
    const int shapes[][2] = {{37, 100}, {64, 768}, {5, 7}};
    for (int s = 0; s < 3; s++) {
        const int N = shapes[s][0], C = shapes[s][1];
        const size_t NC = (size_t)N * C;
        op_case *c = new_case("layernorm_backward N=%d C=%d (accumulates)", N, C);
        float *x = rndf(40 + s, NC, -2, 3), *w = rndf(50 + s, C, 0.5, 1.5);
        float *b = rndf(60 + s, C, -0.5, 0.5), *dout = rndf(70 + s, NC, -1, 1);
        float *dinp = rndf(80 + s, NC, -1, 1), *dw = rndf(90 + s, C, -1, 1);
        float *db = rndf(95 + s, C, -1, 1);
        double *o = zd(NC), *md = zd(N), *rd = zd(N);
        ln_ref(x, w, b, N, C, o, md, rd);
        float *mean = flt(md, N), *rstd = flt(rd, N); /* the op receives forward's fp32 results */
        double *rdi = dbl(dinp, NC), *rdw = dbl(dw, C), *rdb = dbl(db, C);
        for (int n = 0; n < N; n++) {
            double sd = 0.0, sdx = 0.0;
            for (int i = 0; i < C; i++) {
                const size_t k = (size_t)n * C + i;
                const double xh = ((double)x[k] - mean[n]) * rstd[n], dn = (double)dout[k] * w[i];
                sd += dn, sdx += dn * xh;
                rdb[i] += dout[k];
                rdw[i] += dout[k] * xh;
            }
            sd /= C, sdx /= C;
            for (int i = 0; i < C; i++) {
                const size_t k = (size_t)n * C + i;
                const double xh = ((double)x[k] - mean[n]) * rstd[n], dn = (double)dout[k] * w[i];
                rdi[k] += rstd[n] * (dn - sd - xh * sdx);
            }
        }
        add(c, "dinp", F32, INOUT, NC, dinp, rdi, (tol){2e-4, 2e-5}, (tol){1e-4, 1e-5});
        add(c, "dweight", F32, INOUT, C, dw, rdw, (tol){2e-4, 2e-4}, (tol){1e-4, 1e-4});
        add(c, "dbias", F32, INOUT, C, db, rdb, (tol){2e-4, 2e-4}, (tol){1e-4, 1e-4});
        add_in(c, "dout", F32, NC, dout);
        add_in(c, "inp", F32, NC, x);
        add_in(c, "weight", F32, C, w);
        add_in(c, "mean", F32, N, mean);
        add_in(c, "rstd", F32, N, rstd);
        c->i[0] = N, c->i[1] = C;
        c->call = call_layernorm_backward;
        run_case(c);
        free(b), free(o), free(md), free(rd);
    }
}

/* ---- residual ---------------------------------------------------------------------------------- */

static void call_residual_forward(fm_backend *be, void *const *d, const op_case *c)
{
    const size_t n = (size_t)c->i[0];
    be->ops->residual_forward(be, F(2), CF(0), CF(1), n);
    be->ops->residual_forward(be, F(3), CF(3), CF(1), n); /* out aliases a */
}

static void test_residual_forward(void **state)
{
    (void)state;
    const size_t n = 100003; /* above the CPU's serial threshold */
    op_case *c = new_case("residual_forward n=%zu (and in place)", n);
    float *a = rndf(100, n, -1, 1), *b = rndf(101, n, -1, 1), *a2 = rndf(100, n, -1, 1);
    double *ref = zd(n), *ref2 = zd(n);
    for (size_t i = 0; i < n; i++) ref[i] = ref2[i] = (double)a[i] + (double)b[i];
    add_in(c, "a", F32, n, a);
    add_in(c, "b", F32, n, b);
    add(c, "out", F32, OUT, n, NULL, ref, EXACT, EXACT);
    add(c, "a (in place)", F32, INOUT, n, a2, ref2, EXACT, EXACT);
    c->i[0] = (int)n;
    c->call = call_residual_forward;
    run_case(c);
}

/* ---- matmul ------------------------------------------------------------------------------------ */

/* matmul shapes: N, C, OC, bias, bias offset in floats (1: only 4-byte aligned), dinp */
static const int mm_shapes[][6] = {{37, 40, 72, 1, 0, 1},   {64, 96, 288, 1, 0, 1},
                                   {64, 96, 128, 0, 0, 1},  {50, 33, 130, 1, 1, 0},
                                   {200, 200, 64, 1, 0, 1}, {1, 3, 1, 1, 0, 1}};
#define MM_SHAPES ((int)(sizeof mm_shapes / sizeof mm_shapes[0]))

static void call_matmul_forward(fm_backend *be, void *const *d, const op_case *c)
{
    be->ops->matmul_forward(be, F(0), CF(1), CF(2), c->i[3] ? CF(3) + c->i[4] : NULL, c->i[0],
                            c->i[1], c->i[2]);
}

static void test_matmul_forward(void **state)
{
    (void)state;
    for (int s = 0; s < MM_SHAPES; s++) {
        const int N = mm_shapes[s][0], C = mm_shapes[s][1], OC = mm_shapes[s][2];
        const int with_bias = mm_shapes[s][3], off = mm_shapes[s][4];
        op_case *c = new_case("matmul_forward N=%d C=%d OC=%d bias=%d (offset %d)", N, C, OC,
                              with_bias, off);
        float *x = rndf(200 + s, (size_t)N * C, -1, 1), *w = rndf(210 + s, (size_t)OC * C, -1, 1);
        float *bias = rndf(220 + s, (size_t)OC + 1, -1, 1);
        double *ref = zd((size_t)N * OC), *ref16 = zd((size_t)N * OC);
        for (int n = 0; n < N; n++)
            for (int o = 0; o < OC; o++) {
                double acc = with_bias ? bias[off + o] : 0.0, acc16 = acc;
                for (int i = 0; i < C; i++) {
                    const float xv = x[(size_t)n * C + i], wv = w[(size_t)o * C + i];
                    acc += (double)xv * wv;
                    acc16 += (double)ref_bf16(xv) * ref_bf16(wv);
                }
                ref[(size_t)n * OC + o] = acc;
                ref16[(size_t)n * OC + o] = acc16;
            }
        const int k = add(c, "out", F32, OUT, (size_t)N * OC, NULL, ref, (tol){2e-4, 2e-4},
                          (tol){1e-4, 1e-4});
        bf16_tol(c, k, TOL_BF16_MM);
        bf16_ref(c, k, ref16, (tol){2e-4, 2e-4});
        c->t[k].tf32 = 1;
        add_in(c, "inp", ACT, (size_t)N * C, x);
        add_in(c, "weight", ACT, (size_t)OC * C, w);
        add_in(c, "bias", F32, (size_t)OC + 1, bias);
        c->i[0] = N, c->i[1] = C, c->i[2] = OC, c->i[3] = with_bias, c->i[4] = off;
        c->call = call_matmul_forward;
        run_case(c);
    }
}

static void call_matmul_backward(fm_backend *be, void *const *d, const op_case *c)
{
    be->ops->matmul_backward(be, c->i[5] ? F(0) : NULL, F(1), c->i[3] ? F(2) + c->i[4] : NULL,
                             CF(3), CF(4), CF(5), c->i[0], c->i[1], c->i[2]);
}

static void test_matmul_backward(void **state)
{
    (void)state;
    for (int s = 0; s < MM_SHAPES; s++) {
        const int N = mm_shapes[s][0], C = mm_shapes[s][1], OC = mm_shapes[s][2];
        const int with_bias = mm_shapes[s][3], off = mm_shapes[s][4], with_dinp = mm_shapes[s][5];
        op_case *c = new_case("matmul_backward N=%d C=%d OC=%d bias=%d (offset %d) dinp=%d", N, C,
                              OC, with_bias, off, with_dinp);
        float *x = rndf(230 + s, (size_t)N * C, -1, 1), *w = rndf(240 + s, (size_t)OC * C, -1, 1);
        float *dout = rndf(250 + s, (size_t)N * OC, -1, 1);
        float *dw = rndf(260 + s, (size_t)OC * C, -1, 1),
              *db = rndf(270 + s, (size_t)OC + 1, -1, 1);
        float *dinp = rndf(280 + s, (size_t)N * C, 100, 200); /* stays when dinp is NULL */
        double *rdi = dbl(dinp, (size_t)N * C), *rdw = dbl(dw, (size_t)OC * C);
        double *rdb = dbl(db, (size_t)OC + 1);
        /* bf16 instance: dout (fp32) is rounded to bf16 by the op, inp and weight arrive rounded */
        double *si = dbl(dinp, (size_t)N * C), *sw = dbl(dw, (size_t)OC * C);
        double *d16 = dbl16(dout, (size_t)N * OC), *x16 = dbl16(x, (size_t)N * C);
        double *w16 = dbl16(w, (size_t)OC * C);
        for (int n = 0; n < N; n++)
            for (int i = 0; i < C; i++) {
                double acc = 0.0, acc16 = 0.0;
                for (int o = 0; o < OC; o++) {
                    acc += (double)dout[(size_t)n * OC + o] * w[(size_t)o * C + i];
                    acc16 += d16[(size_t)n * OC + o] * w16[(size_t)o * C + i];
                }
                if (with_dinp) rdi[(size_t)n * C + i] = acc, si[(size_t)n * C + i] = acc16;
            }
        for (int o = 0; o < OC; o++) {
            for (int i = 0; i < C; i++) {
                double acc = 0.0, acc16 = 0.0;
                for (int n = 0; n < N; n++) {
                    acc += (double)dout[(size_t)n * OC + o] * x[(size_t)n * C + i];
                    acc16 += d16[(size_t)n * OC + o] * x16[(size_t)n * C + i];
                }
                rdw[(size_t)o * C + i] += acc;
                sw[(size_t)o * C + i] += acc16;
            }
            double acc = 0.0;
            for (int n = 0; n < N; n++) acc += dout[(size_t)n * OC + o];
            if (with_bias) rdb[off + o] += acc;
        }
        const tol r = {2e-4, 2e-4}, x1 = {1e-4, 1e-4};
        int k = add(c, "dinp", F32, INOUT, (size_t)N * C, dinp, rdi, r, x1);
        bf16_tol(c, k, TOL_BF16_MM);
        bf16_ref(c, k, si, r);
        c->t[k].tf32 = 1;
        k = add(c, "dweight", F32, INOUT, (size_t)OC * C, dw, rdw, r, x1);
        bf16_tol(c, k, TOL_BF16_MM);
        bf16_ref(c, k, sw, r);
        c->t[k].tf32 = 1;
        add(c, "dbias", F32, INOUT, (size_t)OC + 1, db, rdb, r, x1); /* fp32 dout in both */
        add_in(c, "dout", F32, (size_t)N * OC, dout);
        add_in(c, "inp", ACT, (size_t)N * C, x);
        add_in(c, "weight", ACT, (size_t)OC * C, w);
        free(d16), free(x16), free(w16);
        c->i[0] = N, c->i[1] = C, c->i[2] = OC, c->i[3] = with_bias, c->i[4] = off;
        c->i[5] = with_dinp;
        c->call = call_matmul_backward;
        run_case(c);
    }
}

/* ---- gelu -------------------------------------------------------------------------------------- */

static double gelu_ref(double x, double *deriv)
{
    const double s = 0.79788456080286535588, k = 0.044715;
    const double th = tanh(s * (x + k * x * x * x));
    *deriv = 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * s * (1.0 + 3.0 * k * x * x);
    return 0.5 * x * (1.0 + th);
}

static void call_gelu_forward(fm_backend *be, void *const *d, const op_case *c)
{
    be->ops->gelu_forward(be, F(1), CF(0), (size_t)c->i[0]);
}

static void test_gelu_forward(void **state)
{
    (void)state;
    const size_t n = 40001;
    op_case *c = new_case("gelu_forward n=%zu", n);
    float *x = rndf(300, n, -6, 6);
    x[0] = -30.0f, x[1] = 30.0f, x[2] = 0.0f, x[3] = -1e-3f;
    double *ref = zd(n), dd;
    for (size_t i = 0; i < n; i++) ref[i] = gelu_ref(x[i], &dd);
    add_in(c, "inp", F32, n, x);
    bf16_tol(c, add(c, "out", ACT, OUT, n, NULL, ref, (tol){2e-5, 2e-6}, (tol){1e-5, 1e-6}),
             TOL_BF16_OUT);
    c->i[0] = (int)n;
    c->call = call_gelu_forward;
    run_case(c);
}

static void call_gelu_backward(fm_backend *be, void *const *d, const op_case *c)
{
    const size_t n = (size_t)c->i[0];
    be->ops->gelu_backward(be, F(2), CF(0), CF(1), n);
    be->ops->gelu_backward(be, F(3), CF(0), CF(3), n); /* dinp aliases dout */
}

static void test_gelu_backward(void **state)
{
    (void)state;
    const size_t n = 40001;
    op_case *c = new_case("gelu_backward n=%zu (and dinp aliasing dout)", n);
    float *x = rndf(310, n, -6, 6), *dout = rndf(311, n, -1, 1), *dout2 = rndf(311, n, -1, 1);
    double *ref = zd(n), *ref2 = zd(n);
    for (size_t i = 0; i < n; i++) {
        double der;
        gelu_ref(x[i], &der);
        ref[i] = ref2[i] = der * dout[i];
    }
    const tol r = {2e-5, 2e-6}, x1 = {1e-5, 1e-6};
    add_in(c, "inp", F32, n, x);
    add_in(c, "dout", F32, n, dout);
    add(c, "dinp", F32, OUT, n, NULL, ref, r, x1);
    add(c, "dinp=dout", F32, INOUT, n, dout2, ref2, r, x1);
    c->i[0] = (int)n;
    c->call = call_gelu_backward;
    run_case(c);
}

/* ---- attention --------------------------------------------------------------------------------- */

/* attention shapes: B, T, C, NH, NKV (qkv rows W = (NH + 2 NKV) C/NH) */
static const int att_shapes[][5] = {
    {2, 37, 32, 2, 2},                     /* hs 16, T not a multiple of 32 */
    {1, 70, 128, 2, 2},                    /* hs 64 (GPT-2) */
    {2, 64, 48, 3, 3},  {1, 33, 40, 1, 1}, /* hs 40: lanes with no head dimension on a GPU */
    {1, 1, 8, 2, 2},                       /* T = 1 */
    {1, 203, 16, 2, 2}, /* several key blocks of 128 on the CPU: the online softmax rescales */
    {2, 45, 64, 4, 2},  /* grouped-query 2:1, T not a power of two */
    {1, 139, 96, 8, 2}, /* grouped-query 4:1, hs 12, several blocks */
    {2, 23, 24, 3, 1},  /* multi-query (one key/value head) */
};
#define ATT_SHAPES ((int)(sizeof att_shapes / sizeof att_shapes[0]))

/* Causal attention in double: out (B,T,C) and lse (B,NH,T) (either may be NULL); qkv (B,T,W). */
static void att_ref(const float *qkv, int B, int T, int C, int NH, int NKV, double *out, double *lse)
{
    const int hs = C / NH;
    const size_t W = (size_t)(NH + 2 * NKV) * hs;
    const double scale = 1.0 / sqrt((double)hs);
    double *s = zd((size_t)T);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int i = 0; i < T; i++) {
                const size_t g = (size_t)(h / (NH / NKV));
                const float *q = qkv + ((size_t)b * T + i) * W + (size_t)h * hs;
                double m = -INFINITY, z = 0.0;
                for (int j = 0; j <= i; j++) {
                    const float *k = qkv + ((size_t)b * T + j) * W + C + g * hs;
                    double dot = 0.0;
                    for (int e = 0; e < hs; e++) dot += (double)q[e] * k[e];
                    s[j] = dot * scale;
                    m = s[j] > m ? s[j] : m;
                }
                for (int j = 0; j <= i; j++) z += exp(s[j] - m);
                if (out) {
                    double *o = out + ((size_t)b * T + i) * C + (size_t)h * hs;
                    for (int e = 0; e < hs; e++) o[e] = 0.0;
                    for (int j = 0; j <= i; j++) {
                        const float *v = qkv + ((size_t)b * T + j) * W + C + (size_t)NKV * hs + g * hs;
                        const double p = exp(s[j] - m) / z;
                        for (int e = 0; e < hs; e++) o[e] += p * v[e];
                    }
                }
                if (lse) lse[((size_t)b * NH + h) * T + i] = m + log(z);
            }
    free(s);
}

static void call_attention_forward(fm_backend *be, void *const *d, const op_case *c)
{
    be->ops->attention_forward(be, F(0), F(1), CF(2), c->i[0], c->i[1], c->i[2], c->i[3], c->i[4]);
}

static void test_attention_forward(void **state)
{
    (void)state;
    for (int s = 0; s < ATT_SHAPES; s++) {
        const int B = att_shapes[s][0], T = att_shapes[s][1], C = att_shapes[s][2];
        const int NH = att_shapes[s][3], NKV = att_shapes[s][4], W = (NH + 2 * NKV) * (C / NH);
        const size_t n3 = (size_t)B * T * W, n1 = (size_t)B * T * C, nl = (size_t)B * NH * T;
        op_case *c = new_case("attention_forward B=%d T=%d C=%d NH=%d NKV=%d", B, T, C, NH, NKV);
        float *qkv = rndf(400 + s, n3, -2, 2);
        double *out = zd(n1), *lse = zd(nl);
        att_ref(qkv, B, T, C, NH, NKV, out, lse);
        bf16_tol(c, add(c, "out", ACT, OUT, n1, NULL, out, (tol){2e-4, 2e-5}, (tol){1e-4, 1e-5}),
                 TOL_BF16_OUT);
        add(c, "lse", F32, OUT, nl, NULL, lse, (tol){2e-4, 2e-5}, (tol){1e-4, 1e-5});
        add_in(c, "qkv", F32, n3, qkv);
        c->i[0] = B, c->i[1] = T, c->i[2] = C, c->i[3] = NH, c->i[4] = NKV;
        c->call = call_attention_forward;
        run_case(c);
    }
}

static void call_attention_backward(fm_backend *be, void *const *d, const op_case *c)
{
    be->ops->attention_backward(be, F(0), CF(1), CF(2), CF(3), CF(4), c->i[0], c->i[1], c->i[2],
                                c->i[3], c->i[4]);
}

static void test_attention_backward(void **state)
{
    (void)state;
    for (int s = 0; s < ATT_SHAPES; s++) {
        const int B = att_shapes[s][0], T = att_shapes[s][1], C = att_shapes[s][2];
        const int NH = att_shapes[s][3], NKV = att_shapes[s][4], hs = C / NH;
        const size_t W = (size_t)(NH + 2 * NKV) * hs;
        const size_t n3 = (size_t)B * T * W, n1 = (size_t)B * T * C, nl = (size_t)B * NH * T;
        op_case *c = new_case("attention_backward B=%d T=%d C=%d NH=%d NKV=%d", B, T, C, NH, NKV);
        float *qkv = rndf(410 + s, n3, -2, 2), *dout = rndf(420 + s, n1, -1, 1);
        double *od = zd(n1), *ld = zd(nl);
        att_ref(qkv, B, T, C, NH, NKV, od, ld);
        float *out = flt(od, n1),
              *lse = flt(ld, nl); /* forward's fp32 results, as the op gets them */
        /* dq: from forward's fp32 out; dq16: from out rounded to bf16 (a bf16 instance's "act" out) */
        double *dq = zd(n3), *dq16 = zd(n3), *o16 = dbl16(out, n1);
        const double scale = 1.0 / sqrt((double)hs);
        for (int pass = 0; pass < 2; pass++)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < NH; h++)
                for (int i = 0; i < T; i++) {
                    const size_t ri = (size_t)b * T + i, hh = (size_t)h * hs;
                    const size_t kk = (size_t)C + (size_t)(h / (NH / NKV)) * hs; /* k column */
                    const size_t vv = kk + (size_t)NKV * hs;                      /* v column */
                    const float *q = qkv + ri * W + hh, *dO = dout + ri * C + hh;
                    double *dqp = pass ? dq16 : dq;
                    double D = 0.0;
                    for (int e = 0; e < hs; e++)
                        D += (double)dO[e] * (pass ? o16[ri * C + hh + e] : out[ri * C + hh + e]);
                    for (int j = 0; j <= i; j++) {
                        const size_t rj = (size_t)b * T + j;
                        const float *k = qkv + rj * W + kk, *v = qkv + rj * W + vv;
                        double sc = 0.0, dp = 0.0;
                        for (int e = 0; e < hs; e++)
                            sc += (double)q[e] * k[e], dp += (double)dO[e] * v[e];
                        const double p = exp(sc * scale - lse[((size_t)b * NH + h) * T + i]);
                        const double ds = p * (dp - D) * scale;
                        for (int e = 0; e < hs; e++) {
                            dqp[ri * W + hh + e] += ds * k[e];
                            dqp[rj * W + kk + e] += ds * q[e];
                            dqp[rj * W + vv + e] += p * dO[e];
                        }
                    }
                }
        const int k = add(c, "dqkv", F32, OUT, n3, NULL, dq, (tol){2e-4, 2e-4}, (tol){1e-4, 1e-4});
        bf16_tol(c, k, TOL_BF16_ATT_BWD);
        bf16_ref(c, k, dq16, (tol){2e-4, 2e-4});
        add_in(c, "dout", F32, n1, dout);
        add_in(c, "qkv", F32, n3, qkv);
        add_in(c, "out", ACT, n1, out);
        add_in(c, "lse", F32, nl, lse);
        c->i[0] = B, c->i[1] = T, c->i[2] = C, c->i[3] = NH, c->i[4] = NKV;
        c->call = call_attention_backward;
        run_case(c);
        free(od), free(ld), free(o16);
    }
}

/* The full sequence through attention_forward (tensor 5 "forward"), then attention_decode in chunks
 * of Tq = 1, 3 and the rest from pos0 = 0; the decoded rows, gathered into (B,T,C) on the host, go to
 * tensor 0 "out". Tensors: 0 out, 1 kcache, 2 vcache, 3 qkv by chunk, 4 qkv (B,T,W), 5 forward,
 * 6 lse, 7 one chunk's out (scratch). */
static void call_attention_decode(fm_backend *be, void *const *d, const op_case *c)
{
    const int B = c->i[0], T = c->i[1], C = c->i[2], NH = c->i[3], maxT = c->i[4], NKV = c->i[5];
    const size_t W = (size_t)(NH + 2 * NKV) * (size_t)(C / NH), e = (size_t)be->ops->act_bytes;
    be->ops->attention_forward(be, F(5), F(6), CF(4), B, T, C, NH, NKV);
    char *all = malloc((size_t)B * T * C * e), *chunk = malloc((size_t)B * T * C * e); /* "act" */
    assert_true(all && chunk);
    const int len[3] = {1, 3, T - 4};
    for (int k = 0, pos0 = 0; k < 3; pos0 += len[k], k++) {
        const int Tq = len[k];
        be->ops->attention_decode(be, F(7), F(1), F(2), CF(3) + (size_t)B * pos0 * W, B, Tq, pos0,
                                  maxT, C, NH, NKV);
        FM_ASSERT_OK(be->ops->download(be, chunk, d[7], (size_t)B * Tq * C * e));
        for (int b = 0; b < B; b++)
            memcpy(all + ((size_t)b * T + pos0) * C * e, chunk + (size_t)b * Tq * C * e,
                   (size_t)Tq * C * e);
    }
    FM_ASSERT_OK(be->ops->upload(be, d[0], all, (size_t)B * T * C * e));
    free(all), free(chunk);
}

static void test_attention_decode(void **state)
{
    (void)state;
    for (int s = 0; s < ATT_SHAPES; s++) {
        const int B = att_shapes[s][0], T = att_shapes[s][1], C = att_shapes[s][2];
        const int NH = att_shapes[s][3], NKV = att_shapes[s][4], maxT = T + 3;
        const size_t KW = (size_t)NKV * (size_t)(C / NH), W = (size_t)C + 2 * KW;
        if (T < 5) continue; /* three chunks: 1, 3, the rest */
        const size_t n3 = (size_t)B * T * W, n1 = (size_t)B * T * C, nl = (size_t)B * NH * T;
        const size_t nc = (size_t)B * maxT * KW;
        op_case *c = new_case("attention_decode B=%d T=%d C=%d NH=%d NKV=%d maxT=%d, chunks 1, 3, %d",
                              B, T, C, NH, NKV, maxT, T - 4);
        float *qkv = rndf(430 + s, n3, -2, 2), *bychunk = malloc(n3 * sizeof *bychunk);
        assert_non_null(bychunk);
        const int len[3] = {1, 3, T - 4};
        for (int k = 0, pos0 = 0; k < 3; pos0 += len[k], k++)
            for (int b = 0; b < B; b++)
                memcpy(bychunk + ((size_t)B * pos0 + (size_t)b * len[k]) * W,
                       qkv + ((size_t)b * T + pos0) * W, (size_t)len[k] * W * sizeof *qkv);
        float *kc = rndf(440 + s, nc, 100, 200), *vc = rndf(450 + s, nc, 100, 200);
        double *rk = dbl(kc, nc), *rv = dbl(vc, nc);
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++)
                for (size_t i = 0; i < KW; i++) {
                    const size_t ci = ((size_t)b * maxT + t) * KW + i, qi = ((size_t)b * T + t) * W;
                    rk[ci] = qkv[qi + C + i];
                    rv[ci] = qkv[qi + C + KW + i];
                }
        double *out = zd(n1), *fwd = zd(n1), *lse = zd(nl);
        att_ref(qkv, B, T, C, NH, NKV, out, lse);
        memcpy(fwd, out, n1 * sizeof *fwd);
        const tol r = {2e-4, 2e-5}, x1 = {1e-4, 1e-5};
        const int o = add(c, "out", ACT, OUT, n1, NULL, out, r, x1);
        bf16_tol(c, o, TOL_BF16_OUT);
        add(c, "kcache", F32, INOUT, nc, kc, rk, EXACT, EXACT);
        add(c, "vcache", F32, INOUT, nc, vc, rv, EXACT, EXACT);
        add_in(c, "qkv chunks", F32, n3, bychunk);
        add_in(c, "qkv", F32, n3, qkv);
        const int f = add(c, "forward", ACT, OUT, n1, NULL, fwd, r, x1);
        bf16_tol(c, f, TOL_BF16_OUT);
        add(c, "lse", F32, OUT, nl, NULL, lse, r, x1);
        add(c, "chunk out", ACT, TEMP, n1, NULL, NULL, EXACT, EXACT);
        /* bf16: both rounded from fp32 values within 1e-5, so at most one bf16 step (2^-8) apart */
        c->t[o].match = f, c->t[o].match_tol = 1e-5, c->t[o].match_tol16 = 8e-3;
        c->i[0] = B, c->i[1] = T, c->i[2] = C, c->i[3] = NH, c->i[4] = maxT, c->i[5] = NKV;
        c->call = call_attention_decode;
        run_case(c);
    }
}

/* ---- embedding without positions (Llama) --------------------------------------------------------- */

static void call_embedding_forward(fm_backend *be, void *const *d, const op_case *c)
{
    be->ops->embedding_forward(be, F(2), CI(0), CF(1), c->i[0], c->i[1], c->i[2]);
}

static void test_embedding_forward(void **state)
{
    (void)state;
    const int B = 3, T = 17, C = 40, Vp = 128;
    op_case *c = new_case("embedding_forward B=%d T=%d C=%d", B, T, C);
    int32_t *tok = rndi(8, (size_t)B * T, 10);
    tok[2] = Vp - 1;
    float *wte = rndf(9, (size_t)Vp * C, -1, 1);
    double *ref = zd((size_t)B * T * C);
    for (int bt = 0; bt < B * T; bt++)
        for (int ch = 0; ch < C; ch++) ref[(size_t)bt * C + ch] = wte[(size_t)tok[bt] * C + ch];
    add_in(c, "tokens", I32, (size_t)B * T, tok);
    add_in(c, "wte", F32, (size_t)Vp * C, wte);
    add(c, "out", F32, OUT, (size_t)B * T * C, NULL, ref, EXACT, EXACT);
    c->i[0] = B, c->i[1] = T, c->i[2] = C;
    c->call = call_embedding_forward;
    run_case(c);
}

static void call_embedding_backward(fm_backend *be, void *const *d, const op_case *c)
{
    be->ops->embedding_backward(be, F(0), CF(1), CI(2), c->i[0], c->i[1], c->i[2]);
}

static void test_embedding_backward(void **state)
{
    (void)state;
    const int B = 3, T = 17, C = 40, Vp = 128;
    op_case *c = new_case("embedding_backward B=%d T=%d C=%d (repeated tokens)", B, T, C);
    int32_t *tok = rndi(11, (size_t)B * T, 10);
    float *dwte = rndf(12, (size_t)Vp * C, -1, 1), *dout = rndf(13, (size_t)B * T * C, -1, 1);
    double *rte = dbl(dwte, (size_t)Vp * C);
    for (int bt = 0; bt < B * T; bt++)
        for (int ch = 0; ch < C; ch++) rte[(size_t)tok[bt] * C + ch] += dout[(size_t)bt * C + ch];
    add(c, "dwte", F32, INOUT, (size_t)Vp * C, dwte, rte, (tol){1e-6, 2e-6}, EXACT);
    add_in(c, "dout", F32, (size_t)B * T * C, dout);
    add_in(c, "tokens", I32, (size_t)B * T, tok);
    c->i[0] = B, c->i[1] = T, c->i[2] = C;
    c->call = call_embedding_backward;
    run_case(c);
}

/* ---- RMSNorm (Llama) ------------------------------------------------------------------------------- */

static void rms_ref(const float *x, const float *w, int N, int C, double eps, double *out,
                    double *rstd)
{
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * C;
        double ss = 0.0;
        for (int i = 0; i < C; i++) ss += (double)xr[i] * xr[i];
        const double rs = 1.0 / sqrt(ss / C + eps);
        for (int i = 0; i < C; i++) out[(size_t)n * C + i] = xr[i] * rs * w[i];
        rstd[n] = rs;
    }
}

static void call_rmsnorm_forward(fm_backend *be, void *const *d, const op_case *c)
{
    be->ops->rmsnorm_forward(be, F(0), F(1), CF(2), CF(3), c->i[0], c->i[1], c->f[0]);
}

static void test_rmsnorm_forward(void **state)
{
    (void)state;
    const int shapes[][2] = {{37, 100}, {64, 768}, {5, 7}};
    for (int s = 0; s < 3; s++) {
        const int N = shapes[s][0], C = shapes[s][1];
        const size_t NC = (size_t)N * C;
        const float eps = s == 2 ? 1e-6f : 1e-5f;
        op_case *c = new_case("rmsnorm_forward N=%d C=%d eps=%g", N, C, (double)eps);
        float *x = rndf(800 + s, NC, -2, 3), *w = rndf(810 + s, C, 0.5, 1.5);
        double *out = zd(NC), *rstd = zd(N);
        rms_ref(x, w, N, C, eps, out, rstd);
        const tol r = {2e-5, 2e-5}, x1 = {1e-5, 1e-5};
        bf16_tol(c, add(c, "out", ACT, OUT, NC, NULL, out, r, x1), TOL_BF16_OUT);
        add(c, "rstd", F32, OUT, N, NULL, rstd, r, x1);
        add_in(c, "inp", F32, NC, x);
        add_in(c, "weight", F32, C, w);
        c->i[0] = N, c->i[1] = C;
        c->f[0] = eps;
        c->call = call_rmsnorm_forward;
        run_case(c);
    }
}

static void call_rmsnorm_backward(fm_backend *be, void *const *d, const op_case *c)
{
    be->ops->rmsnorm_backward(be, F(0), F(1), CF(2), CF(3), CF(4), CF(5), c->i[0], c->i[1]);
}

static void test_rmsnorm_backward(void **state)
{
    (void)state;
    const int shapes[][2] = {{37, 100}, {64, 768}, {5, 7}};
    for (int s = 0; s < 3; s++) {
        const int N = shapes[s][0], C = shapes[s][1];
        const size_t NC = (size_t)N * C;
        op_case *c = new_case("rmsnorm_backward N=%d C=%d (accumulates)", N, C);
        float *x = rndf(820 + s, NC, -2, 3), *w = rndf(830 + s, C, 0.5, 1.5);
        float *dout = rndf(840 + s, NC, -1, 1), *dinp = rndf(850 + s, NC, -1, 1);
        float *dw = rndf(860 + s, C, -1, 1);
        double *o = zd(NC), *rd = zd(N);
        rms_ref(x, w, N, C, 1e-5, o, rd);
        float *rstd = flt(rd, N); /* the op receives forward's fp32 result */
        double *rdi = dbl(dinp, NC), *rdw = dbl(dw, C);
        for (int n = 0; n < N; n++) {
            double sgx = 0.0;
            for (int i = 0; i < C; i++) {
                const size_t k = (size_t)n * C + i;
                const double xh = (double)x[k] * rstd[n];
                sgx += (double)dout[k] * w[i] * xh;
                rdw[i] += dout[k] * xh;
            }
            sgx /= C;
            for (int i = 0; i < C; i++) {
                const size_t k = (size_t)n * C + i;
                const double xh = (double)x[k] * rstd[n];
                rdi[k] += rstd[n] * ((double)dout[k] * w[i] - xh * sgx);
            }
        }
        add(c, "dinp", F32, INOUT, NC, dinp, rdi, (tol){2e-4, 2e-5}, (tol){1e-4, 1e-5});
        add(c, "dweight", F32, INOUT, C, dw, rdw, (tol){2e-4, 2e-4}, (tol){1e-4, 1e-4});
        add_in(c, "dout", F32, NC, dout);
        add_in(c, "inp", F32, NC, x);
        add_in(c, "weight", F32, C, w);
        add_in(c, "rstd", F32, N, rstd);
        c->i[0] = N, c->i[1] = C;
        c->call = call_rmsnorm_backward;
        run_case(c);
        free(o), free(rd);
    }
}

/* ---- SwiGLU (Llama) -------------------------------------------------------------------------------- */

static void call_swiglu_forward(fm_backend *be, void *const *d, const op_case *c)
{
    be->ops->swiglu_forward(be, F(1), CF(0), c->i[0], c->i[1]);
}

static void test_swiglu_forward(void **state)
{
    (void)state;
    const int N = 37, Fd = 1031;
    op_case *c = new_case("swiglu_forward N=%d F=%d", N, Fd);
    const size_t ni = (size_t)N * 2 * Fd, no = (size_t)N * Fd;
    float *x = rndf(900, ni, -8, 8);
    x[0] = -90.0f, x[1] = 90.0f, x[2] = 0.0f;
    double *ref = zd(no);
    for (int n = 0; n < N; n++)
        for (int f = 0; f < Fd; f++) {
            const double g = x[(size_t)n * 2 * Fd + f], u = x[(size_t)n * 2 * Fd + Fd + f];
            ref[(size_t)n * Fd + f] = g / (1.0 + exp(-g)) * u;
        }
    add_in(c, "inp", F32, ni, x);
    bf16_tol(c, add(c, "out", ACT, OUT, no, NULL, ref, (tol){2e-5, 2e-6}, (tol){1e-5, 1e-6}),
             TOL_BF16_OUT);
    c->i[0] = N, c->i[1] = Fd;
    c->call = call_swiglu_forward;
    run_case(c);
}

static void call_swiglu_backward(fm_backend *be, void *const *d, const op_case *c)
{
    be->ops->swiglu_backward(be, F(2), CF(0), CF(1), c->i[0], c->i[1]);
    be->ops->swiglu_backward(be, F(3), CF(3), CF(1), c->i[0], c->i[1]); /* dinp aliases inp */
}

static void test_swiglu_backward(void **state)
{
    (void)state;
    const int N = 37, Fd = 1031;
    op_case *c = new_case("swiglu_backward N=%d F=%d (and dinp aliasing inp)", N, Fd);
    const size_t ni = (size_t)N * 2 * Fd, no = (size_t)N * Fd;
    float *x = rndf(910, ni, -8, 8), *x2 = rndf(910, ni, -8, 8), *dout = rndf(911, no, -1, 1);
    x[0] = x2[0] = -90.0f, x[1] = x2[1] = 90.0f;
    double *ref = zd(ni), *ref2 = zd(ni);
    for (int n = 0; n < N; n++)
        for (int f = 0; f < Fd; f++) {
            const size_t ig = (size_t)n * 2 * Fd + f, iu = ig + Fd;
            const double g = x[ig], u = x[iu], dd = dout[(size_t)n * Fd + f];
            const double sg = 1.0 / (1.0 + exp(-g));
            ref[ig] = ref2[ig] = dd * u * sg * (1.0 + g * (1.0 - sg));
            ref[iu] = ref2[iu] = dd * g * sg;
        }
    const tol r = {2e-5, 2e-6}, x1 = {1e-5, 1e-6};
    add_in(c, "inp", F32, ni, x);
    add_in(c, "dout", F32, no, dout);
    add(c, "dinp", F32, OUT, ni, NULL, ref, r, x1);
    add(c, "dinp=inp", F32, INOUT, ni, x2, ref2, r, x1);
    c->i[0] = N, c->i[1] = Fd;
    c->call = call_swiglu_backward;
    run_case(c);
}

/* ---- RoPE (Llama) ---------------------------------------------------------------------------------- */

/* rope shapes: B, T, C, NH, NKV, pos0 */
static const int rope_shapes[][6] = {{2, 13, 24, 4, 2, 0}, {1, 37, 64, 2, 1, 100},
                                     {3, 5, 6, 3, 3, 7},   {2, 70, 256, 4, 4, 1000}};
#define ROPE_SHAPES ((int)(sizeof rope_shapes / sizeof rope_shapes[0]))

/* x (B,T,W) in double, rotated in place (sign -1: the inverse rotation); angles rounded as kernels.h
 * states (fp32 inv_j and product), the rotation itself in double */
static void rope_ref(double *x, const int *sh, double theta, double sign)
{
    const int B = sh[0], T = sh[1], C = sh[2], NH = sh[3], NKV = sh[4], pos0 = sh[5];
    const int hs = C / NH, half = hs / 2, W = (NH + 2 * NKV) * hs;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int hh = 0; hh < NH + NKV; hh++)
                for (int j = 0; j < half; j++) {
                    const float inv = 1.0f / (float)pow(theta, (double)((float)(2 * j) / (float)hs));
                    const double a = (double)((float)(pos0 + t) * inv);
                    const double cs = cos(a), sn = sign * sin(a);
                    double *lo = x + ((size_t)b * T + t) * W + (size_t)hh * hs + j, *hi = lo + half;
                    const double u = *lo, v = *hi;
                    *lo = u * cs - v * sn;
                    *hi = v * cs + u * sn;
                }
}

static void call_rope(fm_backend *be, void *const *d, const op_case *c)
{
    void (*op)(fm_backend *, float *, int, int, int, int, int, int, float) =
        c->i[6] ? be->ops->rope_backward : be->ops->rope_forward;
    op(be, F(0), c->i[0], c->i[1], c->i[2], c->i[3], c->i[4], c->i[5], c->f[0]);
}

static void rope_cases(int backward)
{
    for (int s = 0; s < ROPE_SHAPES; s++) {
        const int *sh = rope_shapes[s];
        const int W = (sh[3] + 2 * sh[4]) * (sh[2] / sh[3]);
        const size_t n = (size_t)sh[0] * sh[1] * W;
        const double theta = s == 2 ? 10000.0 : 500000.0;
        op_case *c = new_case("rope_%s B=%d T=%d C=%d NH=%d NKV=%d pos0=%d theta=%g (in place)",
                              backward ? "backward" : "forward", sh[0], sh[1], sh[2], sh[3], sh[4],
                              sh[5], theta);
        float *x = rndf(950 + s + 10 * backward, n, -2, 2);
        double *ref = dbl(x, n);
        rope_ref(ref, sh, theta, backward ? -1.0 : 1.0);
        add(c, backward ? "dqkv" : "qkv", F32, INOUT, n, x, ref, (tol){2e-6, 2e-6},
            (tol){1e-6, 1e-6});
        for (int k = 0; k < 6; k++) c->i[k] = sh[k];
        c->i[6] = backward;
        c->f[0] = (float)theta;
        c->call = call_rope;
        run_case(c);
    }
}

static void test_rope_forward(void **state)
{
    (void)state;
    rope_cases(0);
}

static void test_rope_backward(void **state)
{
    (void)state;
    rope_cases(1);
}

/* ---- softmax + cross-entropy ------------------------------------------------------------------- */

static const int xent_shapes[][3] = {{13, 1000, 1024}, {7, 100, 128}, {4, 50257, 50304}};

static void xent_ref(const float *lg, const int32_t *tg, int N, int V, int Vp, double *loss,
                     double *lse)
{
    for (int n = 0; n < N; n++) {
        const float *x = lg + (size_t)n * Vp;
        double m = -INFINITY, z = 0.0;
        for (int v = 0; v < V; v++) m = x[v] > m ? x[v] : m;
        for (int v = 0; v < V; v++) z += exp(x[v] - m);
        lse[n] = m + log(z);
        loss[n] = lse[n] - x[tg[n]];
    }
}

static void call_softmax_xent_forward(fm_backend *be, void *const *d, const op_case *c)
{
    be->ops->softmax_xent_forward(be, F(0), F(1), CF(2), CI(3), c->i[0], c->i[1], c->i[2]);
}

static void test_softmax_xent_forward(void **state)
{
    (void)state;
    for (int s = 0; s < 3; s++) {
        const int N = xent_shapes[s][0], V = xent_shapes[s][1], Vp = xent_shapes[s][2];
        op_case *c = new_case("softmax_xent_forward N=%d V=%d Vp=%d", N, V, Vp);
        float *lg = rndf(500 + s, (size_t)N * Vp, -5, 5);
        for (int n = 0; n < N; n++) /* padding that would dominate if it were counted */
            for (int v = V; v < Vp; v++) lg[(size_t)n * Vp + v] = 1e4f;
        int32_t *tg = rndi(510 + s, (size_t)N, V);
        tg[0] = V - 1;
        double *loss = zd(N), *lse = zd(N);
        xent_ref(lg, tg, N, V, Vp, loss, lse);
        const tol r = {2e-5, 2e-5}, x1 = {1e-5, 1e-5};
        add(c, "losses", F32, OUT, N, NULL, loss, r, x1);
        add(c, "lse", F32, OUT, N, NULL, lse, r, x1);
        add_in(c, "logits", F32, (size_t)N * Vp, lg);
        add_in(c, "targets", I32, N, tg);
        c->i[0] = N, c->i[1] = V, c->i[2] = Vp;
        c->call = call_softmax_xent_forward;
        run_case(c);
    }
}

static void call_softmax_xent_backward(fm_backend *be, void *const *d, const op_case *c)
{
    be->ops->softmax_xent_backward(be, F(0), CF(1), CI(2), c->f[0], c->i[0], c->i[1], c->i[2]);
}

static void test_softmax_xent_backward(void **state)
{
    (void)state;
    for (int s = 0; s < 3; s++) {
        const int N = xent_shapes[s][0], V = xent_shapes[s][1], Vp = xent_shapes[s][2];
        op_case *c = new_case("softmax_xent_backward N=%d V=%d Vp=%d (in place)", N, V, Vp);
        float *lg = rndf(520 + s, (size_t)N * Vp, -5, 5);
        for (int n = 0; n < N; n++)
            for (int v = V; v < Vp; v++) lg[(size_t)n * Vp + v] = 1e4f;
        int32_t *tg = rndi(530 + s, (size_t)N, V);
        tg[0] = V - 1;
        double *loss = zd(N), *ld = zd(N);
        xent_ref(lg, tg, N, V, Vp, loss, ld);
        float *lse = flt(ld, N);
        const float dloss = 1.0f / (float)N;
        double *ref = zd((size_t)N * Vp);
        for (int n = 0; n < N; n++)
            for (int v = 0; v < V; v++)
                ref[(size_t)n * Vp + v] =
                    (exp((double)lg[(size_t)n * Vp + v] - lse[n]) - (v == tg[n])) * dloss;
        add(c, "dlogits", F32, INOUT, (size_t)N * Vp, lg, ref, (tol){2e-4, 2e-8},
            (tol){1e-4, 1e-8});
        add_in(c, "lse", F32, N, lse);
        add_in(c, "targets", I32, N, tg);
        c->i[0] = N, c->i[1] = V, c->i[2] = Vp;
        c->f[0] = dloss;
        c->call = call_softmax_xent_backward;
        run_case(c);
        free(loss), free(ld);
    }
}

/* ---- optimizer --------------------------------------------------------------------------------- */

static void call_adamw_update(fm_backend *be, void *const *d, const op_case *c)
{
    be->ops->adamw_update(be, F(0), c->i[2] ? d[4] : NULL, F(1), F(2), F(3), (size_t)c->i[0],
                          c->f[0], c->f[1], c->f[2], c->f[3], c->f[4], c->f[5], (int64_t)c->i[1]);
}

static void adamw_case(int with_copy)
{
    const size_t n = 10007;
    const float lr = 1e-3f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, wd = 0.1f, gs = 0.7f;
    const int t = 3;
    op_case *c = new_case("adamw_update n=%zu t=%d%s", n, t, with_copy ? ", with the bf16 copy" : "");
    float *p = rndf(600, n, -1, 1), *g = rndf(601, n, -0.1, 0.1), *m = rndf(602, n, -0.01, 0.01);
    float *v = rndf(603, n, 0, 1e-4);
    g[7] = 0.0f;
    double *rp = zd(n), *rg = zd(n), *rm = zd(n), *rv = zd(n);
    for (size_t i = 0; i < n; i++) {
        const double gi = (double)g[i] * gs;
        rm[i] = b1 * (double)m[i] + (1.0 - b1) * gi;
        rv[i] = b2 * (double)v[i] + (1.0 - b2) * gi * gi;
        const double mh = rm[i] / (1.0 - pow(b1, t)), vh = rv[i] / (1.0 - pow(b2, t));
        rp[i] = p[i] - lr * (mh / (sqrt(vh) + eps) + wd * (double)p[i]);
    }
    const tol r = {2e-5, 2e-7}, x1 = {1e-5, 1e-7};
    add(c, "params", F32, INOUT, n, p, rp, r, x1);
    add(c, "grads", F32, INOUT, n, g, rg, EXACT, EXACT);
    add(c, "m", F32, INOUT, n, m, rm, r, x1);
    add(c, "v", F32, INOUT, n, v, rv, r, x1);
    if (with_copy) { /* the updated params, rounded once (u = 2^-8 relative) */
        const tol b = {8e-3, 2e-7};
        float *pf = flt(rp, n);
        bf16_tol(c, add(c, "params_bf16", BF16, OUT, n, NULL, dbl(pf, n), b, b), b);
        free(pf);
    }
    c->i[0] = (int)n, c->i[1] = t, c->i[2] = with_copy;
    c->f[0] = lr, c->f[1] = b1, c->f[2] = b2, c->f[3] = eps, c->f[4] = wd, c->f[5] = gs;
    c->call = call_adamw_update;
    run_case(c);
}

static void test_adamw_update(void **state)
{
    (void)state;
    adamw_case(0);
    adamw_case(1);
}

/* The result is delivered on the host; it is uploaded into tensor 1 (one double) for comparison. */
static void call_sum_squares(fm_backend *be, void *const *d, const op_case *c)
{
    double r = -1.0;
    be->ops->sum_squares(be, &r, CF(0), (size_t)c->i[0]);
    FM_ASSERT_OK(be->ops->upload(be, d[1], &r, sizeof r));
}

static void test_sum_squares(void **state)
{
    (void)state;
    const size_t sizes[] = {1, 255, 257, 1000003, 3000017};
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        const size_t n = sizes[s];
        op_case *c = new_case("sum_squares n=%zu", n);
        float *x = rndf(700 + s, n, -1, 1);
        long double acc = 0.0L;
        for (size_t i = 0; i < n; i++) acc += (long double)x[i] * (long double)x[i];
        double *ref = zd(1);
        ref[0] = (double)acc;
        add_in(c, "grads", F32, n, x);
        add(c, "sum", F64, OUT, 1, NULL, ref, (tol){1e-12, 0.0}, (tol){1e-12, 0.0});
        c->i[0] = (int)n;
        c->call = call_sum_squares;
        run_case(c);
    }
    for (int b = 0; b < g_nbe; b++) { /* n = 0 */
        double z = -1.0;
        g_be[b]->ops->sum_squares(g_be[b], &z, NULL, 0);
        assert_true(z == 0.0);
    }
}

/* ---- precision --------------------------------------------------------------------------------- */

static void call_to_bf16(fm_backend *be, void *const *d, const op_case *c)
{
    be->ops->to_bf16(be, d[1], CF(0), (size_t)c->i[0]);
}

/* Random values of every magnitude, and the special cases: exact ties (to even, up and down), the
 * largest bf16 and the values that overflow to infinity, subnormals (also ties), signed zeros,
 * infinities and NaNs of both signs. The reference is ref_bf16 (neighbours compared in double);
 * every element must be exact. */
static void test_to_bf16(void **state)
{
    (void)state;
    const size_t n = 100003; /* above the CPU's serial threshold */
    op_case *c = new_case("to_bf16 n=%zu (ties, overflow, subnormals, zeros, inf, NaN)", n);
    float *x = malloc(n * sizeof *x);
    assert_non_null(x);
    uint64_t sd = 77;
    for (size_t i = 0; i < n; i++) { /* random bit patterns: all exponents, both signs */
        uint32_t u = (uint32_t)(uni(&sd) * 4294967296.0);
        if ((u & 0x7F800000u) == 0x7F800000u) u &= 0xBFFFFFFFu; /* keep NaN/inf to the list below */
        x[i] = bits_f(u);
    }
    const uint32_t special[] = {
        0x3F808000u, /* 1 + 2^-8: a tie, lower neighbour even -> down */
        0x3F818000u, /* a tie, lower neighbour odd -> up */
        0x3F808001u, /* just above a tie -> up */
        0x3F807FFFu, /* just below a tie -> down */
        0xBF818000u, /* negative tie -> away from zero here (odd lower neighbour) */
        0x7F7F0000u, /* the largest bf16 */
        0x7F7F7FFFu, /* below the overflow tie: stays finite */
        0x7F7F8000u, /* the overflow tie: rounds to the even neighbour, infinity */
        0x7F7FFFFFu, /* FLT_MAX -> infinity */
        0xFF7FFFFFu, /* -FLT_MAX -> -infinity */
        0x00008000u, /* subnormal tie (even -> down to 0) */
        0x00018000u, /* subnormal tie (odd -> up) */
        0x00000001u, /* smallest subnormal -> 0 */
        0x807FFFFFu, /* largest negative subnormal -> -smallest normal */
        0x00000000u, 0x80000000u, /* signed zeros */
        0x7F800000u, 0xFF800000u, /* infinities */
        0x7FC00000u, 0xFFC00001u, /* quiet NaNs */
        0x7F800001u, 0xFF800001u, /* signalling NaNs with payloads only in the low half */
    };
    for (size_t k = 0; k < sizeof special / sizeof *special; k++) x[k] = bits_f(special[k]);
    double *ref = zd(n);
    for (size_t i = 0; i < n; i++) ref[i] = ref_bf16(x[i]);
    add_in(c, "src", F32, n, x);
    add(c, "dst", BF16, OUT, n, NULL, ref, EXACT, EXACT);
    c->i[0] = (int)n;
    c->call = call_to_bf16;
    run_case(c);
}

/* ---- the cases, one per compute op ------------------------------------------------------------- */

typedef struct op_entry {
    const char *op;
    size_t offset; /* offsetof(fm_kernel_ops, op): the slot this case covers */
    void (*test)(void **state);
} op_entry;

#define OP_CASE(op)                                                                                \
    {                                                                                              \
#op, offsetof(fm_kernel_ops, op), test_##op                                                \
    }
static const op_entry g_ops[] = {
    OP_CASE(encoder_forward),      OP_CASE(encoder_backward),      OP_CASE(embedding_forward),
    OP_CASE(embedding_backward),   OP_CASE(layernorm_forward),     OP_CASE(layernorm_backward),
    OP_CASE(rmsnorm_forward),      OP_CASE(rmsnorm_backward),      OP_CASE(residual_forward),
    OP_CASE(matmul_forward),       OP_CASE(matmul_backward),       OP_CASE(gelu_forward),
    OP_CASE(gelu_backward),        OP_CASE(swiglu_forward),        OP_CASE(swiglu_backward),
    OP_CASE(rope_forward),         OP_CASE(rope_backward),         OP_CASE(attention_forward),
    OP_CASE(attention_backward),   OP_CASE(attention_decode),      OP_CASE(softmax_xent_forward),
    OP_CASE(softmax_xent_backward), OP_CASE(adamw_update),         OP_CASE(sum_squares),
    OP_CASE(to_bf16),
};
#define N_OPS ((int)(sizeof g_ops / sizeof g_ops[0]))

/* The compute ops are the function pointers from encoder_forward to the end of the table (kernels.h);
 * the cases must cover exactly those slots, each once. */
static void test_every_op_has_a_case(void **state)
{
    (void)state;
    const size_t first = offsetof(fm_kernel_ops, encoder_forward), slot = sizeof(fn_ptr);
    assert_int_equal((sizeof(fm_kernel_ops) - first) % slot, 0);
    const int nslots = (int)((sizeof(fm_kernel_ops) - first) / slot);
    printf("  kernels.h: %d compute ops; this test: %d cases\n", nslots, N_OPS);
    int bad = 0;
    for (int s = 0; s < nslots; s++) {
        const size_t off = first + (size_t)s * slot;
        int n = 0;
        for (int k = 0; k < N_OPS; k++) n += g_ops[k].offset == off;
        if (n != 1) {
            const char *prev = "no op with a case";
            for (int k = 0; k < N_OPS; k++)
                if (g_ops[k].offset + slot == off) prev = g_ops[k].op;
            print_error(
                "compute op %d of fm_kernel_ops (byte offset %zu, after %s) has %d cases in "
                "tests/kernels/test_backend_ops.c, not 1: give it one (OP_CASE) with a "
                "reference\n",
                s, off, prev, n);
            bad++;
        }
    }
    for (int k = 0; k < N_OPS; k++) {
        const size_t off = g_ops[k].offset;
        if (off < first || (off - first) % slot != 0) {
            print_error("case %s covers no compute op slot (offset %zu)\n", g_ops[k].op, off);
            bad++;
        }
    }
    assert_int_equal(bad, 0);
    assert_int_equal(N_OPS, nslots);
}

/* ---- the registry and the tables --------------------------------------------------------------- */

static void test_registry(void **state)
{
    (void)state;
    const int n = fm_backend_count();
    assert_true(n >= 1);
    assert_string_equal(fm_backend_name(0), "cpu");
    assert_null(fm_backend_name(n));
    assert_null(fm_backend_name(-1));
    for (int i = 0; i < n; i++) {
        const char *name = fm_backend_name(i), *why = "unset";
        assert_true(fm_backend_available(name));
        const int dev = fm_backend_device_count(name, &why);
        printf("  backend %d: %s, %d device(s)%s%s\n", i, name, dev, dev > 0 ? "" : ": ",
               dev > 0 ? "" : why);
        if (dev > 0)
            assert_null(why);
        else
            assert_true(why && why[0]);
    }
    const char *why = NULL;
    assert_int_equal(fm_backend_device_count("cpu", &why), 1);
    assert_null(why);
    assert_int_equal(fm_backend_device_count("tpu", &why), 0);
    assert_true(why && why[0]);
    assert_false(fm_backend_available("tpu"));
    assert_false(fm_backend_uses_gpus("cpu"));
    assert_false(fm_backend_uses_gpus("tpu"));
    if (!fm_backend_available("cuda")) assert_string_equal(fm_backend_auto(), "cpu");
    fm_backend *be = NULL;
    fm_status st = fm_backend_create("tpu", 2, -1, &be);
    assert_non_null(st);
    assert_int_equal(fm_status_code(st), FM_ERR_CONFIG);
    assert_non_null(strstr(fm_status_message(st), "tpu"));
    assert_non_null(strstr(fm_status_message(st), "cpu")); /* lists the known names */
    assert_null(be);
    fm_status_free(&st);
    if (!fm_backend_available("cuda")) { /* known, not compiled in: says how to get it */
        assert_int_equal(fm_backend_device_count("cuda", &why), 0);
        assert_true(why && why[0]);
        st = fm_backend_create("cuda", 2, 0, &be);
        assert_non_null(st);
        assert_int_equal(fm_status_code(st), FM_ERR_CONFIG);
        assert_non_null(strstr(fm_status_message(st), "FMTRAIN_CUDA"));
        assert_null(be);
        fm_status_free(&st);
    }
    FM_ASSERT_OK(fm_backend_create("cpu", 3, -1, &be));
    assert_int_equal(be->threads, 3);
    assert_int_equal(be->device, -1);
    assert_non_null(be->impl);
    assert_int_equal(be->precision, FM_PRECISION_FP32); /* fm_backend_create: fp32 */
    fm_backend_free(&be);
    /* precisions: auto resolves to one the backend lists; bf16 exactly where caps lists it */
    assert_string_equal(fm_precision_name(FM_PRECISION_FP32), "fp32");
    assert_string_equal(fm_precision_name(FM_PRECISION_BF16), "bf16");
    assert_string_equal(fm_precision_name(FM_PRECISION_AUTO), "auto");
    FM_ASSERT_OK(fm_backend_create_precision("cpu", 1, -1, FM_PRECISION_AUTO, &be));
    assert_true(be->precision == FM_PRECISION_FP32 || be->precision == FM_PRECISION_BF16);
    assert_true(be->ops->caps.precisions & be->precision);
    const unsigned cpu_precisions = be->ops->caps.precisions;
    printf("  cpu: precisions 0x%x, auto -> %s; GEMM: %s\n", cpu_precisions,
           fm_precision_name(be->precision), fm_backend_gemm_info());
    fm_backend_free(&be);
    st = fm_backend_create_precision("cpu", 1, -1, FM_PRECISION_BF16, &be);
    if (cpu_precisions & FM_PRECISION_BF16) {
        FM_ASSERT_OK(st);
        assert_int_equal(be->precision, FM_PRECISION_BF16);
        assert_int_equal(be->ops->act_bytes, 2);
        fm_backend_free(&be);
    } else { /* a build without oneDNN: refused, saying what to do */
        assert_non_null(st);
        assert_int_equal(fm_status_code(st), FM_ERR_CONFIG);
        assert_non_null(strstr(fm_status_message(st), "oneDNN"));
        assert_null(be);
        fm_status_free(&st);
    }
    st = fm_backend_create_precision("cpu", 1, -1, 12345u, &be);
    assert_non_null(st);
    assert_int_equal(fm_status_code(st), FM_ERR_CONFIG);
    assert_null(be);
    fm_status_free(&st);
    /* every backend with a device: auto gives a listed precision, an unlisted one is refused */
    for (int i = 0; i < n; i++) {
        const char *name = fm_backend_name(i);
        if (fm_backend_device_count(name, NULL) <= 0) continue;
        FM_ASSERT_OK(fm_backend_create_precision(name, 1, 0, FM_PRECISION_AUTO, &be));
        const unsigned listed = be->ops->caps.precisions;
        assert_true(listed & be->precision);
        fm_backend_free(&be);
        for (unsigned p = FM_PRECISION_FP32; p <= FM_PRECISION_BF16; p <<= 1) {
            st = fm_backend_create_precision(name, 1, 0, p, &be);
            if (listed & p) {
                FM_ASSERT_OK(st);
                assert_int_equal(be->precision, p);
                fm_backend_free(&be);
            } else {
                assert_int_equal(fm_status_code(st), FM_ERR_CONFIG);
                printf("  %s refuses %s: %s\n", name, fm_precision_name(p), fm_status_message(st));
                fm_status_free(&st);
            }
        }
    }
    assert_null(be);
    fm_backend_free(&be); /* safe on NULL */
    fm_backend_free(NULL);
}

static void test_tables(void **state)
{
    (void)state;
    for (int b = 0; b < g_nbe; b++) {
        fm_backend *be = g_be[b];
        const fm_kernel_ops *o = be->ops;
        assert_non_null(o->name);
        int listed = 0;
        for (int i = 0; i < fm_backend_count(); i++)
            listed += strcmp(fm_backend_name(i), o->name) == 0;
        assert_int_equal(listed, 1);
        /* every function pointer, from destroy to the last compute op, is set */
        const size_t first = offsetof(fm_kernel_ops, destroy), slot = sizeof(fn_ptr);
        assert_int_equal((sizeof(fm_kernel_ops) - first) % slot, 0);
        for (size_t off = first; off < sizeof(fm_kernel_ops); off += slot) {
            fn_ptr f;
            memcpy(&f, (const char *)o + off, sizeof f);
            if (!f) fail_msg("backend %s: table entry at byte offset %zu is NULL", o->name, off);
        }
        /* caps */
        const fm_backend_caps *cp = &o->caps;
        assert_true(cp->host_memory == 0 || cp->host_memory == 1);
        assert_true(cp->async == 0 || cp->async == 1);
        assert_true(cp->peak_from_matmul == 0 || cp->peak_from_matmul == 1);
        assert_true(cp->precisions != 0);
        assert_int_equal(cp->precisions & ~(unsigned)(FM_PRECISION_FP32 | FM_PRECISION_BF16), 0);
        assert_true(o->act_bytes == 4 || o->act_bytes == 2);
        assert_true(cp->precisions & (o->act_bytes == 4 ? FM_PRECISION_FP32 : FM_PRECISION_BF16));
        assert_int_equal(be->precision, o->act_bytes == 4 ? FM_PRECISION_FP32 : FM_PRECISION_BF16);
        assert_true(be->threads >= 1);
        assert_true(be->device >= -1);
        /* describe */
        char d[256];
        memset(d, 'x', sizeof d);
        o->describe(be, d, sizeof d);
        assert_non_null(memchr(d, '\0', sizeof d));
        assert_true(strlen(d) > 0);
        printf("  %-8s %s; host_memory %d, async %d, precisions 0x%x, peak_from_matmul %d\n",
               g_be_name[b], d, cp->host_memory, cp->async, cp->precisions, cp->peak_from_matmul);
        char small[6];
        memset(small, 'x', sizeof small);
        o->describe(be, small, sizeof small);
        assert_true(strlen(small) < sizeof small);
        memset(small, 'x', sizeof small);
        o->describe(be, small, 1);
        assert_int_equal(small[0], '\0');
        assert_int_equal(small[1], 'x');
        o->describe(be, small, 0); /* writes nothing */
        assert_int_equal(small[1], 'x');
    }
}

static void test_memory(void **state)
{
    (void)state;
    const size_t sizes[] = {0, 1, 100, 100003 * sizeof(float), (size_t)5 << 20};
    for (int b = 0; b < g_nbe; b++) {
        fm_backend *be = g_be[b];
        for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
            const size_t n = sizes[k];
            unsigned char *p = NULL, *h = malloc(n + 1), *back = malloc(n + 1);
            assert_true(h && back);
            FM_ASSERT_OK(be->ops->alloc(be, (void **)&p, n));
            assert_non_null(p);
            FM_ASSERT_OK(be->ops->download(be, back, p, n));
            for (size_t i = 0; i < n; i++)
                if (back[i]) fail_msg("%s: alloc(%zu): byte %zu not zero", be->ops->name, n, i);
            for (size_t i = 0; i < n; i++) h[i] = (unsigned char)(i * 31 + 7);
            FM_ASSERT_OK(be->ops->upload(be, p, h, n));
            FM_ASSERT_OK(be->ops->download(be, back, p, n));
            assert_memory_equal(back, h, n);
            if (be->ops->caps.host_memory) assert_memory_equal(p, h, n); /* readable directly */
            if (n > 2) {
                be->ops->zero(be, p + 1, n - 2); /* a sub-range: the ends keep their values */
                FM_ASSERT_OK(be->ops->sync(be));
                FM_ASSERT_OK(be->ops->download(be, back, p, n));
                assert_int_equal(back[0], h[0]);
                assert_int_equal(back[n - 1], h[n - 1]);
                for (size_t i = 1; i + 1 < n; i++)
                    if (back[i])
                        fail_msg("%s: zero(%zu): byte %zu not zero", be->ops->name, n - 2, i);
            }
            FM_ASSERT_OK(be->ops->sync(be));
            be->ops->free(be, p);
            free(h), free(back);
        }
        FM_ASSERT_OK(be->ops->sync(be));
    }
}

/* ---- main -------------------------------------------------------------------------------------- */

/* Names in FM_TEST_REQUIRE_BACKENDS must not be skipped. */
static int required(const char *name)
{
    const char *req = getenv("FM_TEST_REQUIRE_BACKENDS");
    if (!req) return 0;
    const size_t len = strlen(name);
    for (const char *p = req; (p = strstr(p, name)) != NULL; p += len) {
        const int starts = p == req || p[-1] == ' ' || p[-1] == ',';
        const int ends = p[len] == '\0' || p[len] == ' ' || p[len] == ',';
        if (starts && ends) return 1;
    }
    return 0;
}

static int setup(void **state)
{
    (void)state;
    int missing = 0;
    for (int i = 0; i < fm_backend_count() && g_nbe < MAX_BE; i++) {
        const char *name = fm_backend_name(i), *why = NULL;
        if (fm_backend_device_count(name, &why) <= 0) {
            printf("[ SKIPPED  ] backend %s: no device (%s)%s\n", name,
                   why ? why : "no reason given",
                   required(name) ? ": but FM_TEST_REQUIRE_BACKENDS requires it" : "");
            missing += required(name);
            continue;
        }
        for (int p = 0; p < 2 && g_nbe < MAX_BE; p++) { /* fp32, then bf16 where listed */
            const unsigned prec = p ? FM_PRECISION_BF16 : FM_PRECISION_FP32;
            if (p && !(g_be[g_nbe - 1]->ops->caps.precisions & FM_PRECISION_BF16)) break;
            fm_status st = fm_backend_create_precision(name, 2, 0, prec, &g_be[g_nbe]);
            if (st) {
                fm_status_print(st, stderr, 1);
                fm_status_free(&st);
                return -1;
            }
            snprintf(g_be_name[g_nbe], sizeof g_be_name[g_nbe], "%s%s", name, p ? "/bf16" : "");
            char d[256];
            g_be[g_nbe]->ops->describe(g_be[g_nbe], d, sizeof d);
            printf("[ BACKEND  ] %s: %s\n", g_be_name[g_nbe], d);
            g_nbe++;
        }
    }
    if (g_nbe == 0 || strcmp(g_be[0]->ops->name, "cpu") != 0) return -1; /* cpu: the reference */
    return missing ? -1 : 0;
}

static int teardown(void **state)
{
    (void)state;
    for (int b = 0; b < g_nbe; b++) fm_backend_free(&g_be[b]);
    g_nbe = 0;
    return 0;
}

int main(void)
{
    struct CMUnitTest tests[4 + N_OPS];
    int n = 0;
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_every_op_has_a_case);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_registry);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_tables);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_memory);
    for (int k = 0; k < N_OPS; k++)
        tests[n++] = (struct CMUnitTest){g_ops[k].op, g_ops[k].test, NULL, NULL, NULL};
    return _cmocka_run_group_tests("backend_ops", tests, (size_t)n, setup, teardown);
}

/* gemm_shapes.c — `fmtrain-gemm-shapes`: the matrix products of one GPT-2 training step, each timed
 * alone through a backend's operation table, against that backend's n = 2048 peak measured in the
 * same run. docs/performance.md ("Results (issue 14's targets)") uses it to split a step's time
 * into what its GEMMs cost at their best and what the rest costs.
 *
 * For N = B*T rows, width C, vocabulary Vp (padded) and L layers it times (best of R, wall clock,
 * after one untimed call that creates the primitive):
 *   fwd      matmul_forward with bias            out (N,OC) = inp (N,C) @ W (OC,C)^T + b
 *   dW       matmul_backward with dinp = NULL    dW (OC,C) += dout (N,OC)^T @ inp (N,C)
 *   bwd      matmul_backward                     the above and dinp (N,C) = dout @ W (2 products)
 * for the four products of a layer, (OC, C) = (3C, C), (C, C), (4C, C), (C, 4C), and the LM head
 * (Vp, C) without bias and without the forward's bias; then the step's sum: L x the layer products +
 * the LM head, forward and backward, and its GFLOP/s against the peak. Inputs are random in [-1, 1]
 * (bf16: the same values rounded, as the backend's own `to_bf16` makes them).
 *
 * Usage: fmtrain-gemm-shapes [threads P=2] [rows N=256] [precision fp32|bf16] [reps R=5]
 *                            [C=768] [Vp=50304] [L=12] */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct bufs {
    float *inp, *w, *bias, *out, *dout, *dinp, *dw; /* inp, w: act tensors (bf16 when precision is) */
} bufs;

static int check(fm_backend *be, fm_status st, const char *what)
{
    if (!st) st = be->ops->sync(be);
    if (!st) return 0;
    fprintf(stderr, "fmtrain-gemm-shapes: %s: %s\n", what, fm_status_message(st));
    fm_status_free(&st);
    return 1;
}

static void fill(float *x, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = (float)(seed >> 8) / 8388608.0f - 1.0f;
    }
}

/* which: 0 fwd, 1 dW, 2 dW+dinp; best of reps seconds, or -1 on error */
static double time_op(fm_backend *be, bufs *b, int which, int N, int C, int OC, int bias, int reps)
{
    double best = 1e30;
    for (int r = 0; r <= reps; r++) { /* r = 0: creates the primitive, untimed */
        const double t0 = now();
        if (which == 0)
            be->ops->matmul_forward(be, b->out, b->inp, b->w, bias ? b->bias : NULL, N, C, OC);
        else
            be->ops->matmul_backward(be, which == 2 ? b->dinp : NULL, b->dw, NULL, b->dout, b->inp,
                                     b->w, N, C, OC);
        if (check(be, NULL, "matmul")) return -1.0;
        const double t = now() - t0;
        if (r > 0 && t < best) best = t;
    }
    return best;
}

/* act tensor of n elements from fp32 values: a copy (fp32) or to_bf16 into a bf16 buffer */
static float *act(fm_backend *be, const float *src, size_t n)
{
    void *p = NULL;
    if (check(be, be->ops->alloc(be, &p, n * sizeof(float)), "alloc")) return NULL;
    if (be->precision == FM_PRECISION_BF16)
        be->ops->to_bf16(be, p, src, n);
    else
        memcpy(p, src, n * sizeof(float));
    return p;
}

int main(int argc, char **argv)
{
    const int P = argc > 1 ? atoi(argv[1]) : 2;
    const int N = argc > 2 ? atoi(argv[2]) : 256;
    const char *prec = argc > 3 ? argv[3] : "fp32";
    const int R = argc > 4 ? atoi(argv[4]) : 5;
    const int C = argc > 5 ? atoi(argv[5]) : 768;
    const int Vp = argc > 6 ? atoi(argv[6]) : 50304;
    const int L = argc > 7 ? atoi(argv[7]) : 12;
    const unsigned precision = strcmp(prec, "bf16") == 0 ? FM_PRECISION_BF16 : FM_PRECISION_FP32;
    if (P < 1 || N < 1 || R < 1 || C < 1 || Vp < 1 || L < 1 ||
        (strcmp(prec, "bf16") != 0 && strcmp(prec, "fp32") != 0)) {
        fprintf(stderr, "usage: fmtrain-gemm-shapes [threads P=2] [rows N=256] [precision fp32|bf16] "
                        "[reps R=5] [C=768] [Vp=50304] [L=12]\n");
        return 2;
    }
    fm_backend *be = NULL;
    fm_status st = fm_backend_create_precision("cpu", P, -1, precision, &be);
    if (st) {
        fprintf(stderr, "fmtrain-gemm-shapes: %s\n", fm_status_message(st));
        fm_status_free(&st);
        return 1;
    }
    printf("fmtrain-gemm-shapes: %d thread(s), N=%d, C=%d, Vp=%d, L=%d, %s, best of %d\n"
           "GEMM library: %s\n",
           P, N, C, Vp, L, fm_precision_name(be->precision), R, fm_backend_gemm_info());
    /* the largest operands: the LM head's (Vp, C) weight and (N, Vp) dout; the peak's n x n */
    const int pk = 2048;
    size_t big = (size_t)Vp * (size_t)C;
    if ((size_t)N * (size_t)Vp > big) big = (size_t)N * (size_t)Vp;
    if ((size_t)pk * pk > big) big = (size_t)pk * pk;
    float *host = malloc(big * sizeof(float));
    bufs b = {0};
    int rc = 1;
    if (!host) goto done;
    fill(host, big, 1u);
    if (!(b.inp = act(be, host, big)) || !(b.w = act(be, host + 1, big - 1))) goto done;
    float **f32[] = {&b.bias, &b.out, &b.dout, &b.dinp, &b.dw};
    for (size_t i = 0; i < sizeof f32 / sizeof f32[0]; i++) {
        void *p = NULL;
        if (check(be, be->ops->alloc(be, &p, big * sizeof(float)), "alloc")) goto done;
        memcpy(p, host, big * sizeof(float));
        *f32[i] = p;
    }
    const double tp = time_op(be, &b, 0, pk, pk, pk, 0, R);
    if (tp < 0) goto done;
    const double peak = 2.0 * pk * pk * pk / tp / 1e9;
    printf("peak: matmul_forward n=%d: %.1f GFLOP/s\n\n", pk, peak);
    printf("%-14s %7s %7s | %9s %7s %5s | %9s %7s %5s | %9s %7s %5s\n", "product (OC,C)", "OC", "C",
           "fwd ms", "GFLOP/s", "frac", "dW ms", "GFLOP/s", "frac", "bwd ms", "GFLOP/s", "frac");
    const struct { const char *name; int OC, C, bias, count; } sh[] = {
        {"qkv", 3 * C, C, 1, L}, {"attn proj", C, C, 1, L}, {"fc", 4 * C, C, 1, L},
        {"fc proj", C, 4 * C, 1, L}, {"LM head", Vp, C, 0, 1}};
    double sum_fwd = 0, sum_bwd = 0, flops = 0;
    for (size_t i = 0; i < sizeof sh / sizeof sh[0]; i++) {
        const double f = 2.0 * N * (double)sh[i].OC * sh[i].C; /* one product's FLOPs */
        const double tf = time_op(be, &b, 0, N, sh[i].C, sh[i].OC, sh[i].bias, R);
        const double tw = time_op(be, &b, 1, N, sh[i].C, sh[i].OC, 0, R);
        const double twd = time_op(be, &b, 2, N, sh[i].C, sh[i].OC, 0, R);
        if (tf < 0 || tw < 0 || twd < 0) goto done;
        printf("%-14s %7d %7d | %9.3f %7.1f %5.3f | %9.3f %7.1f %5.3f | %9.3f %7.1f %5.3f\n",
               sh[i].name, sh[i].OC, sh[i].C, tf * 1e3, f / tf / 1e9, f / tf / 1e9 / peak, tw * 1e3,
               f / tw / 1e9, f / tw / 1e9 / peak, twd * 1e3, 2 * f / twd / 1e9,
               2 * f / twd / 1e9 / peak);
        sum_fwd += sh[i].count * tf;
        sum_bwd += sh[i].count * twd;
        flops += sh[i].count * 3.0 * f;
    }
    printf("\nstep's products: forward %.1f ms + backward %.1f ms = %.1f ms, %.1f GFLOP at %.1f GFLOP/s "
           "= %.3f of the peak\n",
           sum_fwd * 1e3, sum_bwd * 1e3, (sum_fwd + sum_bwd) * 1e3, flops / 1e9,
           flops / (sum_fwd + sum_bwd) / 1e9, flops / (sum_fwd + sum_bwd) / 1e9 / peak);
    rc = 0;
done:
    free(host);
    if (be) {
        float *all[] = {b.inp, b.w, b.bias, b.out, b.dout, b.dinp, b.dw};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
            if (all[i]) be->ops->free(be, all[i]);
        fm_backend_free(&be);
    }
    return rc;
}

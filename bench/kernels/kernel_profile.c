/* kernel_profile.c — where a training step's time goes, kernel by kernel.
 *
 * Builds a GPT-2- or Llama-shaped model (--arch) on the CPU backend (or --device cuda) in the
 * precision asked (--precision fp32|bf16, default fp32), puts an instrumented operation table
 * between the model and the backend (every op is timed, then forwarded), runs warm-up steps and
 * timed steps (forward + backward + grad norm + AdamW) and prints seconds per step by op, with the
 * FLOPs of the matmul and attention ops, and the GEMM peak measured through the backend's
 * matmul_forward (square n = --peak-size, default 2048 on the CPU and 8192 on a GPU; same threads,
 * same precision). On a backend whose memory the host cannot read (a GPU) every op is followed by
 * the backend's sync inside its timing, so each op's time is its own (plus one synchronisation,
 * ~10 us); the step with those syncs is slower than an unprofiled one, which the last lines say
 * ("step (median)" against the sum of the ops). Usage:
 *   fmtrain-kernel-profile [--layers 12] [--heads 12] [--dim 768] [--vocab 50257] [--seq 64]
 *                          [--batch 4] [--threads 2] [--steps 5] [--warmup 2] [--clock wall|cpu]
 *                          [--arch gpt2|llama] [--kv-heads NKV] [--ffn F]   (llama; 0: defaults)
 *                          [--precision fp32|bf16] [--device cpu|cuda] [--gpu N] [--peak-size n]
 * Kernel experiments belong here, not in kernels/cpu. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels.h"
#include "model/model.h"
#include "train/optimizer.h"

enum {
    P_ENC_F, P_ENC_B, P_EMB_F, P_EMB_B, P_LN_F, P_LN_B, P_RMS_F, P_RMS_B, P_RES_F, P_MM_F, P_MM_B,
    P_LMH_F, P_LMH_B, P_GELU_F, P_GELU_B, P_SWIGLU_F, P_SWIGLU_B, P_ROPE_F, P_ROPE_B, P_ATT_F,
    P_ATT_B, P_ATT_D, P_XENT_F, P_XENT_B, P_XENT_FUSED, P_ADAM, P_SUMSQ, P_TO_BF16, P_ZERO, P_OTHER, P_N
};
static const char *const pname[P_N] = {
    "encoder_forward", "encoder_backward", "embedding_forward", "embedding_backward",
    "layernorm_forward", "layernorm_backward", "rmsnorm_forward", "rmsnorm_backward",
    "residual_forward", "matmul_forward", "matmul_backward",
    "lm_head_forward", "lm_head_backward", "gelu_forward", "gelu_backward", "swiglu_forward",
    "swiglu_backward", "rope_forward", "rope_backward",
    "attention_forward", "attention_backward", "attention_decode", "softmax_xent_forward", "softmax_xent_backward",
    "softmax_xent_fused", "adamw_update", "sum_squares", "to_bf16", "zero", "alloc/copy/sync"};

typedef struct prof {
    fm_backend *inner;
    int Vp;
    int sync_each;  /* device memory: sync after every op, inside its timing */
    fm_status err;  /* the first error such a sync returned */
    double t[P_N], flops[P_N];
    long calls[P_N];
} prof;

static void op_done(prof *p)
{
    if (!p->sync_each) return;
    fm_status st = p->inner->ops->sync(p->inner);
    if (st && !p->err) p->err = st;
    else fm_status_free(&st);
}

/* --clock cpu: process CPU time instead of wall time (with --threads 1 on a busy machine this is the
 * time the work itself took; with more threads it adds the threads' times, spin-waits included) */
static clockid_t g_clock = CLOCK_MONOTONIC; /* set once by main before any timing */

static double now(void)
{
    struct timespec ts;
    clock_gettime(g_clock, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#define PR(be) ((prof *)(be)->impl)
#define IN(be) (PR(be)->inner)
#define TIMED(k, fl, call)                                                                         \
    do {                                                                                           \
        double t0_ = now();                                                                        \
        call;                                                                                      \
        op_done(PR(be));                                                                           \
        PR(be)->t[k] += now() - t0_;                                                               \
        PR(be)->flops[k] += (fl);                                                                  \
        PR(be)->calls[k]++;                                                                        \
    } while (0)

static fm_status w_alloc(fm_backend *be, void **p, size_t n) { return IN(be)->ops->alloc(IN(be), p, n); }
static void w_free(fm_backend *be, void *p) { IN(be)->ops->free(IN(be), p); }
static fm_status w_upload(fm_backend *be, void *d, const void *s, size_t n)
{
    fm_status st;
    TIMED(P_OTHER, 0, st = IN(be)->ops->upload(IN(be), d, s, n));
    return st;
}
static fm_status w_download(fm_backend *be, void *d, const void *s, size_t n)
{
    fm_status st;
    TIMED(P_OTHER, 0, st = IN(be)->ops->download(IN(be), d, s, n));
    return st;
}
static void w_zero(fm_backend *be, void *p, size_t n) { TIMED(P_ZERO, 0, IN(be)->ops->zero(IN(be), p, n)); }
static fm_status w_sync(fm_backend *be) { return IN(be)->ops->sync(IN(be)); }
static void w_destroy(fm_backend *be) { (void)be; } /* the wrapper lives on main's stack */
static void w_describe(fm_backend *be, char *buf, size_t n) { IN(be)->ops->describe(IN(be), buf, n); }
static void w_enc_f(fm_backend *be, float *o, const int32_t *tk, const float *wte, const float *wpe,
                    int B, int T, int C)
{
    TIMED(P_ENC_F, 0, IN(be)->ops->encoder_forward(IN(be), o, tk, wte, wpe, B, T, C));
}
static void w_enc_b(fm_backend *be, float *dwte, float *dwpe, const float *d, const int32_t *tk,
                    int B, int T, int C)
{
    TIMED(P_ENC_B, 0, IN(be)->ops->encoder_backward(IN(be), dwte, dwpe, d, tk, B, T, C));
}
static void w_emb_f(fm_backend *be, float *o, const int32_t *tk, const float *wte, int B, int T,
                    int C)
{
    TIMED(P_EMB_F, 0, IN(be)->ops->embedding_forward(IN(be), o, tk, wte, B, T, C));
}
static void w_emb_b(fm_backend *be, float *dwte, const float *d, const int32_t *tk, int B, int T,
                    int C)
{
    TIMED(P_EMB_B, 0, IN(be)->ops->embedding_backward(IN(be), dwte, d, tk, B, T, C));
}
static void w_rms_f(fm_backend *be, float *o, float *r, const float *x, const float *w, int N, int C,
                    float eps)
{
    TIMED(P_RMS_F, 0, IN(be)->ops->rmsnorm_forward(IN(be), o, r, x, w, N, C, eps));
}
static void w_rms_b(fm_backend *be, float *dx, float *dw, const float *d, const float *x,
                    const float *w, const float *r, int N, int C)
{
    TIMED(P_RMS_B, 0, IN(be)->ops->rmsnorm_backward(IN(be), dx, dw, d, x, w, r, N, C));
}
static void w_swiglu_f(fm_backend *be, float *o, const float *x, int N, int F)
{
    TIMED(P_SWIGLU_F, 0, IN(be)->ops->swiglu_forward(IN(be), o, x, N, F));
}
static void w_swiglu_b(fm_backend *be, float *dx, const float *x, const float *d, int N, int F)
{
    TIMED(P_SWIGLU_B, 0, IN(be)->ops->swiglu_backward(IN(be), dx, x, d, N, F));
}
static void w_rope_f(fm_backend *be, float *x, int B, int T, int C, int NH, int NKV, int pos0,
                     float theta)
{
    TIMED(P_ROPE_F, 0, IN(be)->ops->rope_forward(IN(be), x, B, T, C, NH, NKV, pos0, theta));
}
static void w_rope_b(fm_backend *be, float *x, int B, int T, int C, int NH, int NKV, int pos0,
                     float theta)
{
    TIMED(P_ROPE_B, 0, IN(be)->ops->rope_backward(IN(be), x, B, T, C, NH, NKV, pos0, theta));
}
static void w_ln_f(fm_backend *be, float *o, float *m, float *r, const float *x, const float *w,
                   const float *b, int N, int C)
{
    TIMED(P_LN_F, 0, IN(be)->ops->layernorm_forward(IN(be), o, m, r, x, w, b, N, C));
}
static void w_ln_b(fm_backend *be, float *dx, float *dw, float *db, const float *d, const float *x,
                   const float *w, const float *m, const float *r, int N, int C)
{
    TIMED(P_LN_B, 0, IN(be)->ops->layernorm_backward(IN(be), dx, dw, db, d, x, w, m, r, N, C));
}
static void w_res_f(fm_backend *be, float *o, const float *a, const float *b, size_t n)
{
    TIMED(P_RES_F, 0, IN(be)->ops->residual_forward(IN(be), o, a, b, n));
}
static void w_mm_f(fm_backend *be, float *o, const float *x, const float *w, const float *b, int N,
                   int C, int OC)
{
    int k = OC == PR(be)->Vp ? P_LMH_F : P_MM_F;
    TIMED(k, 2.0 * N * C * OC, IN(be)->ops->matmul_forward(IN(be), o, x, w, b, N, C, OC));
}
static void w_mm_b(fm_backend *be, float *dx, float *dw, float *db, const float *d, const float *x,
                   const float *w, int N, int C, int OC)
{
    int k = OC == PR(be)->Vp ? P_LMH_B : P_MM_B;
    TIMED(k, (dx ? 4.0 : 2.0) * N * C * OC,
          IN(be)->ops->matmul_backward(IN(be), dx, dw, db, d, x, w, N, C, OC));
}
static void w_gelu_f(fm_backend *be, float *o, const float *x, size_t n)
{
    TIMED(P_GELU_F, 0, IN(be)->ops->gelu_forward(IN(be), o, x, n));
}
static void w_gelu_b(fm_backend *be, float *dx, const float *x, const float *d, size_t n)
{
    TIMED(P_GELU_B, 0, IN(be)->ops->gelu_backward(IN(be), dx, x, d, n));
}
static void w_att_f(fm_backend *be, float *o, float *l, const float *qkv, int B, int T, int C, int NH,
                    int NKV)
{
    TIMED(P_ATT_F, 2.0 * B * T * T * C,
          IN(be)->ops->attention_forward(IN(be), o, l, qkv, B, T, C, NH, NKV));
}
static void w_att_b(fm_backend *be, float *dqkv, const float *d, const float *qkv, const float *o,
                    const float *l, int B, int T, int C, int NH, int NKV)
{
    TIMED(P_ATT_B, 4.0 * B * T * T * C,
          IN(be)->ops->attention_backward(IN(be), dqkv, d, qkv, o, l, B, T, C, NH, NKV));
}
static void w_att_d(fm_backend *be, float *o, float *kc, float *vc, const float *qkv, int B, int Tq,
                    int pos0, int maxT, int C, int NH, int NKV)
{
    TIMED(P_ATT_D, 2.0 * B * Tq * (pos0 + Tq) * C,
          IN(be)->ops->attention_decode(IN(be), o, kc, vc, qkv, B, Tq, pos0, maxT, C, NH, NKV));
}
static void w_xent_f(fm_backend *be, float *ls, float *lse, const float *lg, const int32_t *tg, int N,
                     int V, int Vp)
{
    TIMED(P_XENT_F, 0, IN(be)->ops->softmax_xent_forward(IN(be), ls, lse, lg, tg, N, V, Vp));
}
static void w_xent_b(fm_backend *be, float *lg, const float *lse, const int32_t *tg, float dl, int N,
                     int V, int Vp)
{
    TIMED(P_XENT_B, 0, IN(be)->ops->softmax_xent_backward(IN(be), lg, lse, tg, dl, N, V, Vp));
}
static void w_xent_fused(fm_backend *be, float *ls, float *lse, float *lg, const int32_t *tg,
                         float dl, int N, int V, int Vp)
{
    TIMED(P_XENT_FUSED, 0, IN(be)->ops->softmax_xent_fused(IN(be), ls, lse, lg, tg, dl, N, V, Vp));
}
static void w_adam(fm_backend *be, float *p, void *pb, float *g, float *m, float *v, size_t n,
                   float lr, float b1, float b2, float eps, float wd, float gs, int64_t t)
{
    TIMED(P_ADAM, 0,
          IN(be)->ops->adamw_update(IN(be), p, pb, g, m, v, n, lr, b1, b2, eps, wd, gs, t));
}
static void w_to_bf16(fm_backend *be, void *d, const float *s, size_t n)
{
    TIMED(P_TO_BF16, 0, IN(be)->ops->to_bf16(IN(be), d, s, n));
}
static void w_sumsq(fm_backend *be, double *o, const float *g, size_t n)
{
    TIMED(P_SUMSQ, 0, IN(be)->ops->sum_squares(IN(be), o, g, n));
}

static fm_kernel_ops prof_ops = { /* .caps, .act_bytes: the inner backend's, set by main */
    .name = "cpu", .act_bytes = 4, .destroy = w_destroy, .describe = w_describe,
    .alloc = w_alloc, .free = w_free, .upload = w_upload, .download = w_download, .zero = w_zero,
    .sync = w_sync, .encoder_forward = w_enc_f, .encoder_backward = w_enc_b,
    .embedding_forward = w_emb_f, .embedding_backward = w_emb_b,
    .layernorm_forward = w_ln_f, .layernorm_backward = w_ln_b, .rmsnorm_forward = w_rms_f,
    .rmsnorm_backward = w_rms_b, .residual_forward = w_res_f,
    .matmul_forward = w_mm_f, .matmul_backward = w_mm_b, .gelu_forward = w_gelu_f,
    .gelu_backward = w_gelu_b, .swiglu_forward = w_swiglu_f, .swiglu_backward = w_swiglu_b,
    .rope_forward = w_rope_f, .rope_backward = w_rope_b,
    .attention_forward = w_att_f, .attention_backward = w_att_b,
    .attention_decode = w_att_d, .softmax_xent_forward = w_xent_f, .softmax_xent_backward = w_xent_b,
    .softmax_xent_fused = w_xent_fused,
    .adamw_update = w_adam, .sum_squares = w_sumsq, .to_bf16 = w_to_bf16};

static int die(fm_status st)
{
    fm_status_print(st, stderr, 1);
    fm_status_free(&st);
    return 1;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    int L = 12, NH = 12, C = 768, V = 50257, T = 64, B = 4, threads = 2, steps = 5, warmup = 2;
    int NKV = 0, F = 0;
    const char *arch = "gpt2", *device = "cpu";
    int gpu = 0, n = 0; /* n: the peak's size (0: 2048 on the CPU, 8192 on a GPU) */
    unsigned precision = FM_PRECISION_FP32;
    for (int i = 1; i + 1 < argc; i += 2) {
        int v = atoi(argv[i + 1]);
        if (!strcmp(argv[i], "--clock")) g_clock = strcmp(argv[i + 1], "cpu") ? CLOCK_MONOTONIC :
                                                   CLOCK_PROCESS_CPUTIME_ID;
        else if (!strcmp(argv[i], "--arch")) arch = argv[i + 1];
        else if (!strcmp(argv[i], "--precision")) {
            if (!strcmp(argv[i + 1], "bf16")) precision = FM_PRECISION_BF16;
            else if (strcmp(argv[i + 1], "fp32") != 0) {
                fprintf(stderr, "fmtrain-kernel-profile: --precision must be fp32 or bf16\n");
                return 2;
            }
        }
        else if (!strcmp(argv[i], "--device")) {
            device = argv[i + 1];
            if (strcmp(device, "cpu") != 0 && strcmp(device, "cuda") != 0) {
                fprintf(stderr, "fmtrain-kernel-profile: --device must be cpu or cuda\n");
                return 2;
            }
        }
        else if (!strcmp(argv[i], "--gpu")) gpu = v;
        else if (!strcmp(argv[i], "--peak-size")) n = v;
        else if (!strcmp(argv[i], "--kv-heads")) NKV = v;
        else if (!strcmp(argv[i], "--ffn")) F = v;
        else if (!strcmp(argv[i], "--layers")) L = v;
        else if (!strcmp(argv[i], "--heads")) NH = v;
        else if (!strcmp(argv[i], "--dim")) C = v;
        else if (!strcmp(argv[i], "--vocab")) V = v;
        else if (!strcmp(argv[i], "--seq")) T = v;
        else if (!strcmp(argv[i], "--batch")) B = v;
        else if (!strcmp(argv[i], "--threads")) threads = v;
        else if (!strcmp(argv[i], "--steps")) steps = v;
        else if (!strcmp(argv[i], "--warmup")) warmup = v;
        else {
            fprintf(stderr, "fmtrain-kernel-profile: unknown option '%s'\n", argv[i]);
            return 2;
        }
    }
    fm_backend *cpu = NULL;
    const int on_cpu = strcmp(device, "cpu") == 0;
    fm_status st = fm_backend_create_precision(device, threads, on_cpu ? -1 : gpu, precision, &cpu);
    if (st) return die(st);
    prof pr;
    memset(&pr, 0, sizeof pr);
    pr.inner = cpu;
    pr.sync_each = !cpu->ops->caps.host_memory;
    if (pr.sync_each) g_clock = CLOCK_MONOTONIC; /* a GPU's time is wall time */
    if (n <= 0) n = on_cpu ? 2048 : 8192;
    pr.Vp = fm_model_padded_vocab(V);
    prof_ops.caps = cpu->ops->caps;
    prof_ops.act_bytes = cpu->ops->act_bytes;
    fm_backend wrap = {&prof_ops, cpu->threads, -1, &pr, cpu->precision};
    fm_backend *be = &wrap;

    /* GEMM peak through the backend (square n, same threads, GEMM library and precision as the
     * model: the inputs converted by to_bf16 for bf16) */
    float *a = NULL, *b = NULL, *c = NULL, *h = malloc((size_t)n * n * 4);
    if (!h) return 1;
    if ((st = cpu->ops->alloc(cpu, (void **)&a, (size_t)n * n * 4)) ||
        (st = cpu->ops->alloc(cpu, (void **)&b, (size_t)n * n * 4)) ||
        (st = cpu->ops->alloc(cpu, (void **)&c, (size_t)n * n * 4)))
        return die(st);
    for (size_t i = 0; i < (size_t)n * n; i++) h[i] = (float)(i % 13) * 0.01f;
    /* the inputs: these values in fp32, or (bf16) their rounding made by the backend's to_bf16 */
    if ((st = cpu->ops->upload(cpu, c, h, (size_t)n * n * 4))) return die(st);
    if (cpu->ops->act_bytes == 2) {
        cpu->ops->to_bf16(cpu, a, c, (size_t)n * n);
        cpu->ops->to_bf16(cpu, b, c, (size_t)n * n);
    } else if ((st = cpu->ops->upload(cpu, a, h, (size_t)n * n * 4)) ||
               (st = cpu->ops->upload(cpu, b, h, (size_t)n * n * 4))) {
        return die(st);
    }
    free(h);
    double best = 1e30;
    for (int r = 0; r < 4; r++) {
        if ((st = cpu->ops->sync(cpu))) return die(st);
        double t0 = now();
        cpu->ops->matmul_forward(cpu, c, a, b, NULL, n, n, n);
        if ((st = cpu->ops->sync(cpu))) return die(st);
        double dt = now() - t0;
        if (r > 0 && dt < best) best = dt;
    }
    const double peak = 2.0 * n * (double)n * n / best;
    cpu->ops->free(cpu, a), cpu->ops->free(cpu, b), cpu->ops->free(cpu, c);

    fm_model_shape shape = {L, NH, C, T, V, "", NKV, F, 0.0, 0.0, FM_TIE_DEFAULT};
    snprintf(shape.arch, sizeof shape.arch, "%s", arch);
    fm_model *model = NULL;
    fm_optimizer *opt = NULL;
    if ((st = fm_model_create(&shape, be, B, &model))) return die(st);
    if ((st = fm_model_init_weights(model, 1234))) return die(st);
    if ((st = fm_optimizer_create(model, &opt))) return die(st);
    if ((st = fm_model_set_fused_loss_scale(model, 1.0f))) return die(st); /* as the trainer */
    int32_t *tok = malloc((size_t)B * T * 4 * 2);
    if (!tok) return 1;
    for (int i = 0; i < 2 * B * T; i++) tok[i] = (int32_t)((i * 2654435761u) % (unsigned)V);
    fm_adamw_params hp = {3e-4f, 0.9f, 0.95f, 1e-8f, 0.1f};
    double *dts = calloc((size_t)steps, sizeof *dts);
    for (int s = 0; s < warmup + steps; s++) {
        if (s == warmup) memset(pr.t, 0, sizeof pr.t), memset(pr.calls, 0, sizeof pr.calls),
                         memset(pr.flops, 0, sizeof pr.flops);
        double t0 = now(), norm = 0.0;
        float loss = 0.0f;
        if ((st = fm_model_forward(model, tok, tok + B * T, B, T, &loss))) return die(st);
        if ((st = fm_model_backward(model, 1.0f, NULL, NULL))) return die(st);
        if ((st = fm_optimizer_grad_norm(opt, &norm))) return die(st);
        if ((st = fm_optimizer_step(opt, &hp, fm_optimizer_clip_scale(norm, 1.0)))) return die(st);
        double dt = now() - t0;
        if (s >= warmup) dts[s - warmup] = dt;
        fprintf(stderr, "step %d: %.3f s loss %.4f\n", s, dt, loss);
    }
    if (pr.err) return die(pr.err); /* an op's error, seen by the sync after it */
    qsort(dts, (size_t)steps, sizeof *dts, cmp_double);
    const double med = dts[steps / 2];
    const double np = (double)fm_model_num_params(model);
    const double fl_tok = fm_model_flops_per_token(&shape, T); /* the family's (model.h) */
    printf("shape: %s L=%d NH=%d NKV=%d C=%d F=%d V=%d (Vp=%d) T=%d B=%d threads=%d params=%.0f "
           "precision=%s\n",
           fm_model_arch(model), L, NH, fm_model_get_shape(model)->n_kv_head, C,
           fm_model_get_shape(model)->ffn_dim, V, pr.Vp, T, B, cpu->threads, np,
           fm_precision_name(cpu->precision));
    char desc[256];
    cpu->ops->describe(cpu, desc, sizeof desc);
    printf("device: %s%s\n", desc, pr.sync_each ? " (synchronised after every op, inside its time)" : "");
    if (on_cpu) printf("GEMM: %s\n", fm_backend_gemm_info());
    printf("GEMM peak: matmul_forward n=%d\n", n);
    printf("%-24s %10s %7s %8s %10s\n", "op", "ms/step", "share", "calls", "GFLOP/s");
    double sum = 0.0;
    for (int k = 0; k < P_N; k++) sum += pr.t[k];
    for (int k = 0; k < P_N; k++) {
        if (!pr.calls[k]) continue;
        double ms = 1e3 * pr.t[k] / steps;
        printf("%-24s %10.2f %6.1f%% %8ld", pname[k], ms, 100.0 * pr.t[k] / (med * steps),
               pr.calls[k] / steps);
        if (pr.flops[k] > 0) printf(" %10.1f", pr.flops[k] / pr.t[k] * 1e-9);
        printf("\n");
    }
    printf("%-24s %10.2f %6.1f%%\n", "kernels total", 1e3 * sum / steps, 100.0 * sum / (med * steps));
    printf("%-24s %10.2f\n", "step (median)", 1e3 * med);
    printf("tokens_per_s=%.1f model_gflops=%.1f gemm_peak_gflops=%.1f fraction_of_peak=%.3f\n",
           B * T / med, fl_tok * B * T / med * 1e-9, peak * 1e-9, fl_tok * B * T / med / peak);
    free(tok), free(dts);
    fm_optimizer_free(&opt);
    fm_model_free(&model);
    fm_backend_free(&cpu);
    return 0;
}

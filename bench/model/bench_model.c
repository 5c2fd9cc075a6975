/* bench_model.c — `fmtrain-bench`: training-step throughput of a model family (GPT-2, Llama, or
 * both in one run) on a backend in one precision, against the machine's fastest GEMM in that
 * precision measured in the same run.
 *
 * Usage: fmtrain-bench --layers L --heads NH --dim C --vocab V --seq T --batch B --threads P
 *                      [--arch gpt2|llama|gpt2,llama] [--kv-heads NKV] [--ffn F] [--tie]
 *                      [--max-seq M] [--steps S] [--warmup W] [--peak-size n]
 *                      [--clock wall|cpu] [--device cpu|cuda] [--gpu N] [--peak-tflops X]
 *                      [--precision fp32|bf16|auto]
 *
 * --precision (default fp32) creates the backend in that activation precision
 * (fm_backend_create_precision; kernels.h, "Precision"); auto is the backend's choice, printed.
 *
 * --arch picks the model family (default gpt2); a comma-separated list ("gpt2,llama") builds each
 * family's model of the same L, NH, C, V, T and B and times their steps ALTERNATELY (step i of each
 * family before step i+1 of any), so that on a shared machine both see the same neighbours. Llama's
 * own sizes: --kv-heads (key/value heads, default NH), --ffn (MLP width, default Llama's rule
 * 256*ceil(floor(8C/3)/256)), --tie (LM head tied to the embedding; default untied).
 *
 * --device picks the backend (fm_backend_create; default cpu) and --gpu its device ordinal. With
 * --peak-tflops X each family's result line is preceded by its model FLOP utilisation against that
 * stated peak: "mfu=<model_gflops / (1000 X)> stated_peak_tflops=X".
 *
 * --clock wall (default) times with the monotonic wall clock. --clock cpu times with the process's CPU
 * time divided by P (for a machine shared with other jobs, where wall time measures the neighbours; CPU
 * time includes the OpenMP workers' spinning at barriers, so it never flatters the model); the
 * peak is timed with the same clock.
 *
 * --max-seq is the model's seq_len (GPT-2: rows of wpe, default T): GPT-2 124M has 1024, and its
 * parameter count includes them.
 *
 * A step is what the trainer does per micro-batch without communication: forward with targets,
 * backward, global gradient norm + clipping factor, AdamW update (which zeroes the gradients). After
 * W warm-up steps, S steps are timed one by one and the median is reported (with the per-phase
 * medians). Model FLOPs per token are the family's (fm_model_flops_per_token, the trainer's MFU
 * numerator): 6 per element of every matrix a token is multiplied with (the LM head's real vocabulary
 * rows included; embedding gathers, norms, biases not) + 6*L*T*C (attention's QK^T and AV, forward +
 * backward, causal).
 *
 * The peak is the fastest n x n x n GEMM (default n = 2048) this machine offers in the run's
 * precision, at the same thread count: the backend's own matmul_forward (the GEMM library and
 * threading the model uses: oneDNN's fp32 or bf16 matmul, or tiles of CBLAS sgemm without oneDNN;
 * bf16 inputs made by to_bf16) and, on host-memory backends, one cblas_sgemm call with the BLAS
 * library's own threads set to P (restored to 1 afterwards): for fp32 the larger of the two is the
 * peak, for bf16 only the backend's counts (the BLAS figure is fp32, printed for reference:
 * OpenBLAS has no bf16 GEMM here). Best of 5 after a warm-up, measured once before and once after
 * the timed steps; the largest figure is the peak (on a shared machine this favours the peak, never
 * the model). The load average is printed before and after, and on the result line.
 *
 * With one family it ends with exactly one line:
 *   tokens_per_s=<x> model_gflops=<y> gemm_peak_gflops=<z> fraction_of_peak=<f>
 *     precision=<p> blas_sgemm_gflops=<b> fraction_of_blas_sgemm=<g> load=<1-min load average>
 * (one line; the fields after fraction_of_peak were added with --precision). With several, one such
 * line per family, prefixed with "arch=<name> ", then a last line
 *   fraction_of_peak <name>=<f> ... ratio=<last family's / first family's>
 * This is a benchmark, not a test: it checks nothing but that the loss is finite.
 */
#define _POSIX_C_SOURCE 200809L

#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>

#include "cli/cli.h"
#include "kernels.h"
#include "model/model.h"
#include "train/optimizer.h"
#include "core/util.h"

/* Seconds: wall clock, or process CPU time per thread (--clock cpu). */
static double bench_clock(int cpu, int threads)
{
    if (!cpu) return fm_util_now();
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ((double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec) / threads;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void print_machine(FILE *out)
{
    char model[256] = "unknown CPU";
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[512];
        while (fgets(line, sizeof line, f))
            if (strncmp(line, "model name", 10) == 0) {
                char *c = strchr(line, ':');
                if (c) {
                    fm_util_strlcpy(model, fm_util_trim(c + 1), sizeof model);
                    break;
                }
            }
        fclose(f);
    }
    struct utsname u;
    if (uname(&u) == 0)
        fprintf(out, "machine: %s, %s %s %s\n", model, u.sysname, u.release, u.machine);
    else
        fprintf(out, "machine: %s\n", model);
}

/* /proc/loadavg's first line into buf ("?" when unreadable) */
static const char *loadavg(char *buf, size_t n)
{
    snprintf(buf, n, "?");
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (!fgets(buf, (int)n, f)) snprintf(buf, n, "?");
        fclose(f);
    }
    buf[strcspn(buf, "\n")] = '\0';
    return buf;
}

static void print_load(FILE *out, const char *when)
{
    char buf[128];
    fprintf(out, "load average (%s): %s\n", when, loadavg(buf, sizeof buf));
}

/* Fills n floats with small deterministic values. */
static void fill(float *x, size_t n, unsigned seed)
{
    unsigned s = seed;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = (float)((int)(s >> 9) % 2001 - 1000) * 1e-3f;
    }
}

/* Best GFLOP/s of an n^3 GEMM: through the backend's matmul_forward (its GEMM library, threads and
 * precision) and through BLAS threads (cblas_sgemm, fp32). */
static fm_status gemm_peak(fm_backend *be, int n, int threads, int cpu_clock,
                           double *backend_gflops, double *blas_gflops)
{
    const size_t nn = (size_t)n * (size_t)n;
    float *host = malloc(nn * sizeof(float));
    FM_CHECK_ALLOC(host, nn * sizeof(float));
    float *a = NULL, *b = NULL, *c = NULL, *a16 = NULL, *b16 = NULL;
    fm_status st = NULL;
    FM_TRY_GOTO(st, done, be->ops->alloc(be, (void **)&a, nn * sizeof(float)));
    FM_TRY_GOTO(st, done, be->ops->alloc(be, (void **)&b, nn * sizeof(float)));
    FM_TRY_GOTO(st, done, be->ops->alloc(be, (void **)&c, nn * sizeof(float)));
    fill(host, nn, 1);
    FM_TRY_GOTO(st, done, be->ops->upload(be, a, host, nn * sizeof(float)));
    fill(host, nn, 2);
    FM_TRY_GOTO(st, done, be->ops->upload(be, b, host, nn * sizeof(float)));
    const float *ma = a, *mb = b; /* the matmul's inputs: fp32, or their bf16 rounding */
    if (be->ops->act_bytes == 2) {
        FM_TRY_GOTO(st, done, be->ops->alloc(be, (void **)&a16, nn * 2));
        FM_TRY_GOTO(st, done, be->ops->alloc(be, (void **)&b16, nn * 2));
        be->ops->to_bf16(be, a16, a, nn);
        be->ops->to_bf16(be, b16, b, nn);
        ma = a16, mb = b16;
    }
    const double flops = 2.0 * (double)n * (double)n * (double)n;

    double best = 0.0;
    for (int r = 0; r < 6; r++) { /* first one is the warm-up */
        double t0 = bench_clock(cpu_clock, threads);
        be->ops->matmul_forward(be, c, ma, mb, NULL, n, n, n);
        FM_TRY_GOTO(st, done, be->ops->sync(be));
        double g = flops / (bench_clock(cpu_clock, threads) - t0) / 1e9;
        if (r > 0 && g > best) best = g;
    }
    *backend_gflops = best;

    *blas_gflops = 0.0;
    if (be->ops->caps.host_memory) { /* host pointers: plain CBLAS on the same buffers */
#ifdef FM_HAVE_OPENBLAS
        openblas_set_num_threads(threads);
#endif
        best = 0.0;
        for (int r = 0; r < 6; r++) {
            double t0 = bench_clock(cpu_clock, threads);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c,
                        n);
            double g = flops / (bench_clock(cpu_clock, threads) - t0) / 1e9;
            if (r > 0 && g > best) best = g;
        }
#ifdef FM_HAVE_OPENBLAS
        openblas_set_num_threads(1); /* the backend's setting: one pool, BLAS single-threaded */
#endif
        *blas_gflops = best;
    }
done:
    if (a) be->ops->free(be, a);
    if (b) be->ops->free(be, b);
    if (c) be->ops->free(be, c);
    if (a16) be->ops->free(be, a16);
    if (b16) be->ops->free(be, b16);
    free(host);
    return st;
}

#define BENCH_MAX_ARCH 4

typedef struct bench_args {
    long long layers, heads, dim, vocab, seq, batch, threads, steps, warmup, peak, max_seq, gpu;
    long long kv_heads, ffn; /* 0: the family's default */
    int tie;                 /* --tie: FM_TIE_YES, else the family's default */
    int cpu_clock;
    unsigned precision; /* FM_PRECISION_* asked (AUTO: the backend's choice) */
    const char *device;
    double peak_tflops; /* 0 = not given */
    int narch;
    char arch[BENCH_MAX_ARCH][FM_MODEL_ARCH_MAX];
} bench_args;

static fm_status parse(int argc, char **argv, bench_args *a)
{
    const char *s[20] = {0};
    int tie = 0;
    const fm_cli_opt opts[] = {
        {"layers", FM_CLI_STRING, &s[0]}, {"heads", FM_CLI_STRING, &s[1]},
        {"dim", FM_CLI_STRING, &s[2]},    {"vocab", FM_CLI_STRING, &s[3]},
        {"seq", FM_CLI_STRING, &s[4]},    {"batch", FM_CLI_STRING, &s[5]},
        {"threads", FM_CLI_STRING, &s[6]}, {"steps", FM_CLI_STRING, &s[7]},
        {"warmup", FM_CLI_STRING, &s[8]}, {"peak-size", FM_CLI_STRING, &s[9]},
        {"max-seq", FM_CLI_STRING, &s[10]}, {"clock", FM_CLI_STRING, &s[11]},
        {"device", FM_CLI_STRING, &s[12]}, {"gpu", FM_CLI_STRING, &s[13]},
        {"peak-tflops", FM_CLI_STRING, &s[14]}, {"arch", FM_CLI_STRING, &s[15]},
        {"kv-heads", FM_CLI_STRING, &s[16]}, {"ffn", FM_CLI_STRING, &s[17]},
        {"tie", FM_CLI_FLAG, &tie}, {"precision", FM_CLI_STRING, &s[19]},
    };
    const char *names[10] = {"layers", "heads", "dim", "vocab", "seq", "batch", "threads", "steps",
                             "warmup", "peak-size"};
    const char *defaults[10] = {NULL, NULL, NULL, NULL, NULL, NULL, NULL, "5", "2", "2048"};
    const long long mins[10] = {1, 1, 1, 1, 1, 1, 1, 1, 0, 64};
    const long long maxs[10] = {1024, 1024, 65536, 1 << 30, 1 << 20, 1 << 20, 4096, 1000, 100, 16384};
    long long *dst[10] = {&a->layers, &a->heads, &a->dim, &a->vocab, &a->seq, &a->batch, &a->threads,
                          &a->steps, &a->warmup, &a->peak};
    fm_cli_list pos = {0};
    FM_TRY(fm_cli_parse("fmtrain-bench", argc, argv, opts, (int)(sizeof opts / sizeof *opts), &pos));
    int npos = pos.n;
    fm_cli_list_free(&pos);
    if (npos)
        return FM_ERR(FM_ERR_USAGE, "fmtrain-bench: unexpected argument; usage: fmtrain-bench --layers L "
                      "--heads NH --dim C --vocab V --seq T --batch B --threads P [--arch gpt2|llama|gpt2,llama] "
                      "[--kv-heads NKV] [--ffn F] [--tie] [--max-seq M] [--steps S] [--warmup W] [--peak-size n]");
    for (int i = 0; i < 10; i++) {
        const char *text = s[i] ? s[i] : defaults[i];
        if (!text)
            return FM_ERR(FM_ERR_USAGE, "fmtrain-bench: --%s is required; usage: fmtrain-bench --layers L "
                          "--heads NH --dim C --vocab V --seq T --batch B --threads P [--max-seq M] [--steps S]",
                          names[i]);
        FM_TRY(fm_cli_int(names[i], text, mins[i], maxs[i], dst[i]));
    }
    a->max_seq = a->seq;
    if (s[10]) FM_TRY(fm_cli_int("max-seq", s[10], a->seq, 1 << 20, &a->max_seq));
    a->cpu_clock = 0;
    if (s[11] && strcmp(s[11], "cpu") == 0)
        a->cpu_clock = 1;
    else if (s[11] && strcmp(s[11], "wall") != 0)
        return FM_ERR(FM_ERR_USAGE, "fmtrain-bench: --clock must be 'wall' or 'cpu', got '%s'", s[11]);
    a->device = s[12] ? s[12] : "cpu";
    if (strcmp(a->device, "cpu") != 0 && strcmp(a->device, "cuda") != 0)
        return FM_ERR(FM_ERR_USAGE, "fmtrain-bench: --device must be 'cpu' or 'cuda', got '%s'", a->device);
    a->gpu = 0;
    if (s[13]) FM_TRY(fm_cli_int("gpu", s[13], 0, 1023, &a->gpu));
    a->peak_tflops = 0.0;
    if (s[14]) FM_TRY(fm_cli_double("peak-tflops", s[14], 1e-3, 1e6, &a->peak_tflops));
    a->kv_heads = a->ffn = 0;
    if (s[16]) FM_TRY(fm_cli_int("kv-heads", s[16], 1, 1024, &a->kv_heads));
    if (s[17]) FM_TRY(fm_cli_int("ffn", s[17], 1, 1 << 30, &a->ffn));
    a->tie = tie ? FM_TIE_YES : FM_TIE_DEFAULT;
    const char *prec = s[19] ? s[19] : "fp32";
    if (strcmp(prec, "fp32") == 0)
        a->precision = FM_PRECISION_FP32;
    else if (strcmp(prec, "bf16") == 0)
        a->precision = FM_PRECISION_BF16;
    else if (strcmp(prec, "auto") == 0)
        a->precision = FM_PRECISION_AUTO;
    else
        return FM_ERR(FM_ERR_USAGE, "fmtrain-bench: --precision must be 'fp32', 'bf16' or 'auto', "
                      "got '%s'", prec);
    /* --arch: one family or a comma-separated list */
    const char *list = s[15] ? s[15] : "gpt2";
    a->narch = 0;
    for (const char *p = list; *p;) {
        const size_t n = strcspn(p, ",");
        if (n == 0 || n >= FM_MODEL_ARCH_MAX || a->narch == BENCH_MAX_ARCH)
            return FM_ERR(FM_ERR_USAGE, "fmtrain-bench: --arch must be one to %d family names "
                          "separated by commas (e.g. gpt2,llama), got '%s'", BENCH_MAX_ARCH, list);
        memcpy(a->arch[a->narch], p, n);
        a->arch[a->narch++][n] = '\0';
        p += n + (p[n] == ',');
    }
    return NULL;
}

/* One family's model, optimizer and step times. */
typedef struct bench_run {
    fm_model_shape shape;
    fm_model *m;
    fm_optimizer *opt;
    double flops_per_token;
    double *t_step, *t_fwd, *t_bwd, *t_opt;
} bench_run;

static void run_free(bench_run *r)
{
    fm_optimizer_free(&r->opt);
    fm_model_free(&r->m);
    free(r->t_step);
    free(r->t_fwd);
    free(r->t_bwd);
    free(r->t_opt);
    r->t_step = r->t_fwd = r->t_bwd = r->t_opt = NULL;
}

/* One training step of run r; step i < 0 is a warm-up step (not recorded). */
static fm_status run_step(const bench_args *ar, bench_run *r, const int32_t *tok,
                          const int32_t *tgt, int i)
{
    const int B = (int)ar->batch, T = (int)ar->seq, P = (int)ar->threads;
    const fm_adamw_params hp = {3e-4f, 0.9f, 0.95f, 1e-8f, 0.1f};
    float loss;
    double t0 = bench_clock(ar->cpu_clock, P);
    FM_TRY(fm_model_forward(r->m, tok, tgt, B, T, &loss));
    double t1 = bench_clock(ar->cpu_clock, P);
    FM_TRY(fm_model_backward(r->m, 1.0f, NULL, NULL));
    double t2 = bench_clock(ar->cpu_clock, P);
    double norm;
    FM_TRY(fm_optimizer_grad_norm(r->opt, &norm));
    FM_TRY(fm_optimizer_step(r->opt, &hp, fm_optimizer_clip_scale(norm, 1.0)));
    double t3 = bench_clock(ar->cpu_clock, P);
    if (!isfinite(loss))
        return FM_ERR(FM_ERR_NUMERIC, "fmtrain-bench: %s: non-finite loss at step %d",
                      fm_model_arch(r->m), i);
    uint32_t bits; /* the loss's exact bits: two runs are compared bit for bit (run-on-gpu.sh) */
    memcpy(&bits, &loss, sizeof bits);
    printf("%s %s %d: %.3f s (forward %.3f, backward %.3f, norm+AdamW %.3f) loss %.4f "
           "loss_bits=%08x\n",
           fm_model_arch(r->m), i < 0 ? "warm-up" : "step", i < 0 ? i + (int)ar->warmup : i,
           t3 - t0, t1 - t0, t2 - t1, t3 - t2, (double)loss, (unsigned)bits);
    fflush(stdout);
    if (i >= 0) {
        r->t_step[i] = t3 - t0;
        r->t_fwd[i] = t1 - t0;
        r->t_bwd[i] = t2 - t1;
        r->t_opt[i] = t3 - t2;
    }
    return NULL;
}

static fm_status bench(const bench_args *ar)
{
    fm_status st = NULL;
    fm_backend *be = NULL;
    bench_run runs[BENCH_MAX_ARCH];
    memset(runs, 0, sizeof runs);
    int32_t *tok = NULL, *tgt = NULL;
    double step_s[BENCH_MAX_ARCH] = {0};
    const int B = (int)ar->batch, T = (int)ar->seq, P = (int)ar->threads, S = (int)ar->steps;
    const int NA = ar->narch;

    for (int a = 0; a < NA; a++) {
        fm_model_shape *sh = &runs[a].shape;
        *sh = (fm_model_shape){(int)ar->layers, (int)ar->heads, (int)ar->dim, (int)ar->max_seq,
                               (int)ar->vocab, .arch = ""};
        fm_util_strlcpy(sh->arch, ar->arch[a], sizeof sh->arch);
        sh->n_kv_head = (int)ar->kv_heads;
        sh->ffn_dim = (int)ar->ffn;
        sh->tie_embeddings = ar->tie;
        if (strcmp(sh->arch, "gpt2") == 0) /* Llama's sizes do not apply to GPT-2 */
            sh->n_kv_head = sh->ffn_dim = sh->tie_embeddings = 0;
        FM_TRY(fm_model_shape_check(sh));
    }
    FM_TRY_GOTO(st, done, fm_backend_create_precision(ar->device, P,
                                                      strcmp(ar->device, "cpu") ? (int)ar->gpu : -1,
                                                      ar->precision, &be));
    const int bf16 = be->precision == FM_PRECISION_BF16;
    char dev[256];
    be->ops->describe(be, dev, sizeof dev);
    printf("fmtrain-bench: training step (forward + backward + grad norm + AdamW), %s, %s backend, "
           "%s clock\n", fm_precision_name(be->precision), be->ops->name,
           ar->cpu_clock ? "CPU-time-per-thread" : "wall");
    printf("device: %s\n", dev);
    print_machine(stdout);
    printf("GEMM: %s\n", fm_backend_gemm_info());
    printf("BLAS: %s\n", fm_backend_blas_info());
    for (int a = 0; a < NA; a++) {
        bench_run *r = &runs[a];
        FM_TRY_GOTO(st, done, fm_model_create(&r->shape, be, B, &r->m));
        FM_TRY_GOTO(st, done, fm_model_init_weights(r->m, 1));
        FM_TRY_GOTO(st, done, fm_optimizer_create(r->m, &r->opt));
        r->t_step = calloc((size_t)S, sizeof(double));
        r->t_fwd = calloc((size_t)S, sizeof(double));
        r->t_bwd = calloc((size_t)S, sizeof(double));
        r->t_opt = calloc((size_t)S, sizeof(double));
        if (!r->t_step || !r->t_fwd || !r->t_bwd || !r->t_opt) {
            st = FM_ERR(FM_ERR_NOMEM, "out of memory");
            goto done;
        }
        const fm_model_shape *rs = fm_model_get_shape(r->m);
        r->flops_per_token = fm_model_flops_per_token(rs, T);
        fm_model_memory_info mem;
        fm_model_memory(r->m, &mem);
        printf("%s shape: layers=%d heads=%d kv_heads=%d dim=%d ffn=%d %s head vocab=%d (padded %d) "
               "seq=%d (max %d) batch=%d threads=%d\n", rs->arch, rs->n_layer, rs->n_head,
               rs->n_kv_head, rs->d_model, rs->ffn_dim,
               rs->tie_embeddings == FM_TIE_YES ? "tied" : "untied", rs->vocab_size,
               fm_model_get_padded_vocab(r->m), T, rs->max_seq_len, B, P);
        fm_model_memory_print(&mem, stdout);
        printf("%s model FLOPs per token (fm_model_flops_per_token: 6 x matmul weights + 6*L*T*C) = "
               "%.4g\n", rs->arch, r->flops_per_token);
    }
    print_load(stdout, "start");
    fflush(stdout);
    double pk_be[2] = {0, 0}, pk_blas[2] = {0, 0};
    FM_TRY_GOTO(st, done, gemm_peak(be, (int)ar->peak, P, ar->cpu_clock, &pk_be[0], &pk_blas[0]));
    printf("GEMM peak before the steps, n=%lld, %d thread(s): backend %s matmul %.1f GFLOP/s, BLAS "
           "sgemm on its threads %.1f GFLOP/s (best of 5)\n", ar->peak, P,
           fm_precision_name(be->precision), pk_be[0], pk_blas[0]);
    fflush(stdout);

    tok = malloc((size_t)B * T * sizeof *tok);
    tgt = malloc((size_t)B * T * sizeof *tgt);
    if (!tok || !tgt) {
        st = FM_ERR(FM_ERR_NOMEM, "out of memory");
        goto done;
    }
    unsigned sd = 12345;
    for (int i = 0; i < B * T; i++) {
        sd = sd * 1664525u + 1013904223u;
        tok[i] = (int32_t)((sd >> 8) % (unsigned)ar->vocab);
        tgt[i] = (int32_t)((tok[i] * 7 + 1) % (int)ar->vocab);
    }
    for (int i = -(int)ar->warmup; i < S; i++) /* the families alternate step by step */
        for (int a = 0; a < NA; a++) FM_TRY_GOTO(st, done, run_step(ar, &runs[a], tok, tgt, i));
    for (int a = 0; a < NA; a++) {
        bench_run *r = &runs[a];
        double fastest = r->t_step[0];
        for (int i = 1; i < S; i++) fastest = r->t_step[i] < fastest ? r->t_step[i] : fastest;
        step_s[a] = median(r->t_step, S);
        printf("%s median of %d steps: %.4f s/step (forward %.4f, backward %.4f, norm+AdamW %.4f); "
               "fastest step %.4f s\n", fm_model_arch(r->m), S, step_s[a], median(r->t_fwd, S),
               median(r->t_bwd, S), median(r->t_opt, S), fastest);
    }

    /* the models' buffers go before the peak measurement, so both see the same free memory */
    for (int a = 0; a < NA; a++) {
        fm_optimizer_free(&runs[a].opt);
        fm_model_free(&runs[a].m);
    }
    FM_TRY_GOTO(st, done, gemm_peak(be, (int)ar->peak, P, ar->cpu_clock, &pk_be[1], &pk_blas[1]));
    printf("GEMM peak after the steps, n=%lld, %d thread(s): backend %s matmul %.1f GFLOP/s, BLAS "
           "sgemm on its threads %.1f GFLOP/s (best of 5)\n", ar->peak, P,
           fm_precision_name(be->precision), pk_be[1], pk_blas[1]);
    /* the fastest GEMM in the run's precision: the backend's, and for fp32 also BLAS's sgemm */
    double peak = 0.0, blas = 0.0;
    for (int i = 0; i < 2; i++) {
        if (pk_be[i] > peak) peak = pk_be[i];
        if (pk_blas[i] > blas) blas = pk_blas[i];
    }
    if (!bf16 && blas > peak) peak = blas;
    printf("GEMM peak (%s): %.1f GFLOP/s (%s); BLAS sgemm for reference: %.1f GFLOP/s\n",
           fm_precision_name(be->precision), peak,
           bf16 ? "the backend's bf16 matmul" : "the faster of the backend's matmul and BLAS sgemm",
           blas);
    print_load(stdout, "end");
    char la[128];
    loadavg(la, sizeof la);
    la[strcspn(la, " ")] = '\0'; /* the 1-minute figure */
    double frac[BENCH_MAX_ARCH];
    for (int a = 0; a < NA; a++) {
        const double tps = (double)B * T / step_s[a];
        const double gflops = tps * runs[a].flops_per_token / 1e9;
        frac[a] = gflops / peak;
        if (ar->peak_tflops > 0)
            printf("%s%s%smfu=%.4f stated_peak_tflops=%g\n", NA > 1 ? "arch=" : "",
                   NA > 1 ? runs[a].shape.arch : "", NA > 1 ? " " : "",
                   gflops / (1000.0 * ar->peak_tflops), ar->peak_tflops);
        printf("%s%s%stokens_per_s=%.1f model_gflops=%.2f gemm_peak_gflops=%.2f fraction_of_peak=%.3f "
               "precision=%s blas_sgemm_gflops=%.2f fraction_of_blas_sgemm=%.3f load=%s\n",
               NA > 1 ? "arch=" : "", NA > 1 ? runs[a].shape.arch : "", NA > 1 ? " " : "", tps,
               gflops, peak, frac[a], fm_precision_name(be->precision), blas,
               blas > 0 ? gflops / blas : 0.0, la);
    }
    if (NA > 1) {
        printf("fraction_of_peak");
        for (int a = 0; a < NA; a++) printf(" %s=%.3f", runs[a].shape.arch, frac[a]);
        printf(" ratio=%.3f\n", frac[NA - 1] / frac[0]);
    }
done:
    free(tok);
    free(tgt);
    for (int a = 0; a < NA; a++) run_free(&runs[a]);
    fm_backend_free(&be);
    return st;
}

int main(int argc, char **argv)
{
    bench_args a;
    fm_status st = parse(argc, argv, &a);
    if (!st) st = bench(&a);
    if (st) {
        fm_status_print(st, stderr, 0);
        int code = fm_status_exit_code(st);
        fm_status_free(&st);
        return code;
    }
    return 0;
}

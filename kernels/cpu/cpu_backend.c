/* cpu_backend.c — the CPU backend: context (thread pool size, per-thread scratch, workspace, deferred
 * error, oneDNN state), the BLAS threading policy, the BLAS and GEMM description strings, memory,
 * capabilities, and the fm_kernel_ops tables (fp32, and bf16 in builds with oneDNN) that point at the
 * typed kernels of kernels/cpu/<op>.c. It computes nothing itself.
 *
 * Threading policy (measured and explained in docs/performance.md, "Threads and GEMMs"): one OpenMP
 * pool of `threads` threads runs every kernel; a matrix product is one oneDNN primitive running on
 * that pool (or, without oneDNN, tiles of single-threaded BLAS calls inside it). The BLAS library's
 * own threading is therefore set to 1 here, whatever its build (pthreads or OpenMP), so that no
 * second pool of threads competes for the rank's cores. */
#define _POSIX_C_SOURCE 200809L

#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "../kernels.h"
#include "cpu_internal.h"
#include "cpu_kernels.h"

#if FM_HAVE_OPENBLAS
/* Declared by OpenBLAS's cblas.h; repeated here for builds whose cblas.h is another vendor's header
 * in front of libopenblas. */
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);
char *openblas_get_config(void);
int openblas_get_parallel(void);
#endif

/* A context (scratch) for `threads` threads; see fm_cpu_backend_init. */
static fm_status ctx_create(int threads, fm_cpu_ctx **out)
{
    *out = NULL;
    fm_cpu_ctx *cx = calloc(1, sizeof *cx);
    FM_CHECK_ALLOC(cx, sizeof *cx);
    /* per thread: S and dP blocks (BQ x BK) and four BQ-long row vectors, rounded to 64 bytes */
    size_t per = 2u * FM_CPU_ATT_BQ * FM_CPU_ATT_BK + 4u * FM_CPU_ATT_BQ;
    per = (per + 15u) / 16u * 16u;
    cx->scratch_floats = per;
    size_t bytes = per * sizeof(float) * (size_t)threads;
    cx->scratch = aligned_alloc(64, bytes);
    if (!cx->scratch) {
        free(cx);
        return FM_ERR(FM_ERR_NOMEM, "CPU backend: out of memory allocating %zu bytes of attention "
                                    "scratch for %d threads", bytes, threads);
    }
    memset(cx->scratch, 0, bytes);
    *out = cx;
    return NULL;
}

static void ctx_free(fm_cpu_ctx **cx)
{
    if (!cx || !*cx) return;
#if FM_HAVE_ONEDNN
    fm_cpu_dnnl_free(&(*cx)->dnnl);
#endif
    fm_status_free(&(*cx)->error);
    free((*cx)->work);
    free((*cx)->scratch);
    free(*cx);
    *cx = NULL;
}

void fm_cpu_fail(fm_backend *be, fm_status st)
{
    fm_cpu_ctx *cx = be->impl;
    if (!cx->error)
        cx->error = st;
    else
        fm_status_free(&st);
}

void *fm_cpu_work(fm_backend *be, size_t bytes)
{
    fm_cpu_ctx *cx = be->impl;
    if (bytes <= cx->work_bytes) return cx->work;
    const size_t rounded = (bytes + 63u) / 64u * 64u;
    void *p = aligned_alloc(64, rounded);
    if (!p) {
        fm_cpu_fail(be, FM_ERR(FM_ERR_NOMEM, "CPU backend: out of memory growing the kernels' "
                               "workspace to %zu bytes", rounded));
        return NULL;
    }
    free(cx->work);
    cx->work = p;
    cx->work_bytes = rounded;
    return p;
}

/* ---- BLAS description ------------------------------------------------------------------------ */

typedef struct blas_info {
    pthread_once_t once;
    char text[384];
} blas_info;

static blas_info g_blas_info = {PTHREAD_ONCE_INIT, {0}}; /* written once, read-only afterwards */

static void blas_info_fill(void)
{
#if FM_HAVE_OPENBLAS
    const char *cfg = openblas_get_config();
    int par = openblas_get_parallel();
    const char *model = par == 0 ? "sequential build" : par == 1 ? "pthreads build" :
                        par == 2 ? "OpenMP build" : "unknown threading";
#if FM_HAVE_ONEDNN
    const char *use = "one BLAS thread per call, for attention's blocks (matmuls: oneDNN)";
#else
    const char *use = "fmtrain tiles GEMMs over its OpenMP pool, one BLAS thread per tile";
#endif
    snprintf(g_blas_info.text, sizeof g_blas_info.text, "%s (%s); %s", cfg ? cfg : "OpenBLAS", model,
             use);
#else
    snprintf(g_blas_info.text, sizeof g_blas_info.text,
             "CBLAS (vendor not identified at run time); fmtrain calls BLAS inside its OpenMP "
             "parallel regions (%s; nested BLAS threading must be off)",
             FM_HAVE_ONEDNN ? "attention's blocks" : "GEMM tiles and attention's blocks");
#endif
}

const char *fm_cpu_blas_info(void)
{
    pthread_once(&g_blas_info.once, blas_info_fill);
    return g_blas_info.text;
}

const char *fm_cpu_gemm_info(void)
{
#if FM_HAVE_ONEDNN
    return fm_cpu_dnnl_info();
#else
    return "CBLAS (built without oneDNN): fp32 only, tiles of single-threaded sgemm on the rank's "
           "OpenMP pool";
#endif
}

/* ---- operation table ------------------------------------------------------------------------- */

/* memset(p, 0, bytes) by `nt` threads, in page-aligned slices */
static void zero_parallel(void *p, size_t bytes, int nt)
{
    unsigned char *c = p;
#pragma omp parallel num_threads(nt)
    {
        size_t lo, hi;
        fm_cpu_split(bytes, omp_get_num_threads(), omp_get_thread_num(), 4096, &lo, &hi);
        if (hi > lo) memset(c + lo, 0, hi - lo);
    }
}

static fm_status cpu_alloc(fm_backend *be, void **ptr, size_t bytes)
{
    *ptr = NULL;
    size_t rounded = (bytes + 63u) / 64u * 64u;
    if (rounded == 0) rounded = 64;
    void *p = aligned_alloc(64, rounded);
    if (!p)
        return FM_ERR(FM_ERR_NOMEM, "CPU backend: out of memory allocating %zu bytes", bytes);
    /* zero in parallel so that pages are first touched by the threads that will use them */
    zero_parallel(p, rounded, rounded < (1u << 22) ? 1 : be->threads);
    *ptr = p;
    return NULL;
}

static void cpu_free(fm_backend *be, void *ptr)
{
    (void)be;
    free(ptr);
}

static fm_status cpu_upload(fm_backend *be, void *dst, const void *src, size_t bytes)
{
    (void)be;
    if (bytes) memcpy(dst, src, bytes);
    return NULL;
}

static fm_status cpu_download(fm_backend *be, void *dst, const void *src, size_t bytes)
{
    (void)be;
    if (bytes) memcpy(dst, src, bytes);
    return NULL;
}

static void cpu_zero(fm_backend *be, void *ptr, size_t bytes)
{
    zero_parallel(ptr, bytes, bytes < (1u << 20) ? 1 : be->threads);
}

/* Every kernel has finished when it returns; sync hands over the first error a kernel recorded. */
static fm_status cpu_sync(fm_backend *be)
{
    fm_cpu_ctx *cx = be->impl;
    fm_status st = cx->error;
    cx->error = NULL;
    return st;
}

/* Staging memory is ordinary host memory here. */
static fm_status cpu_host_alloc(fm_backend *be, void **ptr, size_t bytes)
{
    (void)be;
    *ptr = malloc(bytes > 0 ? bytes : 1);
    if (!*ptr)
        return FM_ERR(FM_ERR_NOMEM, "CPU backend: out of memory for a %zu-byte host buffer; free memory or run fewer ranks per node",
                      bytes);
    return NULL;
}

static void cpu_host_free(fm_backend *be, void *ptr)
{
    (void)be;
    free(ptr);
}

static void cpu_destroy(fm_backend *be)
{
    fm_cpu_ctx *cx = be->impl;
    ctx_free(&cx);
    be->impl = NULL;
}

static void cpu_describe(fm_backend *be, char *buf, size_t n)
{
    if (n == 0) return;
#if FM_HAVE_ONEDNN
    const char *gemm = "oneDNN";
#else
    const char *gemm = "CBLAS";
#endif
    snprintf(buf, n, "CPU, %d OpenMP thread%s, %s, %s GEMMs", be->threads, be->threads == 1 ? "" : "s",
             fm_precision_name(be->precision), gemm);
}

/* bf16 needs oneDNN's bf16 matmul; fp32 runs on either GEMM engine */
#if FM_HAVE_ONEDNN
#define CPU_PRECISIONS (FM_PRECISION_FP32 | FM_PRECISION_BF16)
#else
#define CPU_PRECISIONS FM_PRECISION_FP32
#endif

static const fm_kernel_ops cpu_ops = {
    .name = "cpu",
    .act_bytes = 4,
    /* host memory, synchronous; no datasheet peak for a rank's cores: MFU from its matmul */
    .caps = {.host_memory = 1, .async = 0, .precisions = CPU_PRECISIONS, .peak_from_matmul = 1},
    .destroy = cpu_destroy,
    .describe = cpu_describe,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_upload,
    .download = cpu_download,
    .zero = cpu_zero,
    .sync = cpu_sync,
    .host_alloc = cpu_host_alloc,
    .host_free = cpu_host_free,
    .encoder_forward = fm_cpu_encoder_forward,
    .encoder_backward = fm_cpu_encoder_backward,
    .embedding_forward = fm_cpu_embedding_forward,
    .embedding_backward = fm_cpu_embedding_backward,
    .layernorm_forward = fm_cpu_layernorm_forward,
    .layernorm_backward = fm_cpu_layernorm_backward,
    .rmsnorm_forward = fm_cpu_rmsnorm_forward,
    .rmsnorm_backward = fm_cpu_rmsnorm_backward,
    .residual_forward = fm_cpu_residual_forward,
    .matmul_forward = fm_cpu_matmul_forward,
    .matmul_backward = fm_cpu_matmul_backward,
    .gelu_forward = fm_cpu_gelu_forward,
    .gelu_backward = fm_cpu_gelu_backward,
    .swiglu_forward = fm_cpu_swiglu_forward,
    .swiglu_backward = fm_cpu_swiglu_backward,
    .rope_forward = fm_cpu_rope_forward,
    .rope_backward = fm_cpu_rope_backward,
    .attention_forward = fm_cpu_attention_forward,
    .attention_backward = fm_cpu_attention_backward,
    .attention_decode = fm_cpu_attention_decode,
    .softmax_xent_forward = fm_cpu_softmax_xent_forward,
    .softmax_xent_backward = fm_cpu_softmax_xent_backward,
    .softmax_xent_fused = fm_cpu_softmax_xent_fused,
    .adamw_update = fm_cpu_adamw_update,
    .sum_squares = fm_cpu_sum_squares,
    .to_bf16 = fm_cpu_to_bf16,
};

#if FM_HAVE_ONEDNN
/* The bf16 table (kernels.h, "Precision"): the fp32 table but for the ops with "act" arguments */
static const fm_kernel_ops cpu_ops_bf16 = {
    .name = "cpu",
    .act_bytes = 2,
    .caps = {.host_memory = 1, .async = 0, .precisions = CPU_PRECISIONS, .peak_from_matmul = 1},
    .destroy = cpu_destroy,
    .describe = cpu_describe,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_upload,
    .download = cpu_download,
    .zero = cpu_zero,
    .sync = cpu_sync,
    .host_alloc = cpu_host_alloc,
    .host_free = cpu_host_free,
    .encoder_forward = fm_cpu_encoder_forward,
    .encoder_backward = fm_cpu_encoder_backward,
    .embedding_forward = fm_cpu_embedding_forward,
    .embedding_backward = fm_cpu_embedding_backward,
    .layernorm_forward = fm_cpu_layernorm_forward_bf16,
    .layernorm_backward = fm_cpu_layernorm_backward,
    .rmsnorm_forward = fm_cpu_rmsnorm_forward_bf16,
    .rmsnorm_backward = fm_cpu_rmsnorm_backward,
    .residual_forward = fm_cpu_residual_forward,
    .matmul_forward = fm_cpu_matmul_forward_bf16,
    .matmul_backward = fm_cpu_matmul_backward_bf16,
    .gelu_forward = fm_cpu_gelu_forward_bf16,
    .gelu_backward = fm_cpu_gelu_backward,
    .swiglu_forward = fm_cpu_swiglu_forward_bf16,
    .swiglu_backward = fm_cpu_swiglu_backward,
    .rope_forward = fm_cpu_rope_forward,
    .rope_backward = fm_cpu_rope_backward,
    .attention_forward = fm_cpu_attention_forward_bf16,
    .attention_backward = fm_cpu_attention_backward_bf16,
    .attention_decode = fm_cpu_attention_decode_bf16,
    .softmax_xent_forward = fm_cpu_softmax_xent_forward,
    .softmax_xent_backward = fm_cpu_softmax_xent_backward,
    .softmax_xent_fused = fm_cpu_softmax_xent_fused,
    .adamw_update = fm_cpu_adamw_update,
    .sum_squares = fm_cpu_sum_squares,
    .to_bf16 = fm_cpu_to_bf16,
};
#endif

/* The precision of a new backend: the one asked, or AUTO's choice; errors for one it cannot run. */
static fm_status resolve_precision(unsigned asked, unsigned *out)
{
    *out = FM_PRECISION_FP32;
    if (asked == FM_PRECISION_FP32) return NULL;
    if (asked != FM_PRECISION_AUTO && asked != FM_PRECISION_BF16)
        return FM_ERR(FM_ERR_CONFIG, "CPU backend: unknown precision %u (expected fp32, bf16 or "
                      "auto)", asked);
#if FM_HAVE_ONEDNN
    /* auto: bf16 where oneDNN has bf16 dot products on this CPU (twice the fp32 rate); emulated bf16
     * is slower than fp32 */
    if (asked == FM_PRECISION_BF16 || fm_cpu_dnnl_bf16_native()) *out = FM_PRECISION_BF16;
    return NULL;
#else
    if (asked == FM_PRECISION_AUTO) return NULL;
    return FM_ERR(FM_ERR_CONFIG, "CPU backend: precision = bf16 needs oneDNN's bf16 matmul, but this "
                  "fmtrain was built without oneDNN (%s); install it (Debian: apt-get install "
                  "libdnnl-dev; Spack: onednn; EasyBuild: oneDNN) and configure again, or set "
                  "[runtime] precision = fp32 or auto", fm_cpu_gemm_info());
#endif
}

fm_status fm_cpu_backend_init(fm_backend *be, int threads, int device, unsigned precision)
{
    (void)device;
    if (threads <= 0) threads = omp_get_max_threads();
    if (threads > 4096)
        return FM_ERR(FM_ERR_CONFIG, "CPU backend: %d threads requested, at most 4096 supported",
                      threads);
    unsigned prec = FM_PRECISION_FP32;
    FM_TRY(resolve_precision(precision, &prec));
    fm_cpu_ctx *cx = NULL;
    FM_TRY(ctx_create(threads, &cx));
#if FM_HAVE_OPENBLAS
    openblas_set_num_threads(1);
#endif
    omp_set_num_threads(threads);
    be->ops = &cpu_ops;
    be->threads = threads;
    be->device = -1;
    be->impl = cx;
    be->precision = prec;
#if FM_HAVE_ONEDNN
    fm_status st = fm_cpu_dnnl_create(&cx->dnnl);
    if (!st && prec == FM_PRECISION_BF16) {
        st = fm_cpu_dnnl_probe_bf16(be);
        if (st)
            st = fm_status_prefix(st, "CPU backend: precision = bf16 is not available on this CPU "
                                  "(set [runtime] precision = fp32 or auto): ");
        be->ops = &cpu_ops_bf16;
    }
    if (st) {
        ctx_free(&cx);
        be->impl = NULL;
        return st;
    }
#endif
    return NULL;
}

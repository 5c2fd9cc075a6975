/* cuda_backend.cu — the CUDA backend: context (device, stream, cuBLAS/cuBLASLt handles, workspace),
 * memory (alloc/free/upload/download/zero/sync), error recording, capabilities, teardown, the device
 * description, and the fm_kernel_ops table that points at the typed kernels of
 * kernels/cuda/<op>.cu. It computes nothing itself.
 *
 * Streams: everything (kernels, cuBLAS, copies, memsets) runs in order on ONE non-blocking stream per
 * backend, so no event is needed between kernels. upload/download/sync synchronise that stream.
 * Errors: a failing launch or library call inside a kernel op is recorded (first one wins) and
 * returned as FM_ERR_DEVICE by the next sync, upload or download (kernels.h: "errors of asynchronous
 * devices surface at the next sync()"). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.cuh"

/* ---- error recording ------------------------------------------------------------------------- */

void fm_cuda_fail(fm_cuda_ctx *cx, const char *what, const char *detail)
{
    if (cx->failed) return;
    cx->failed = 1;
    snprintf(cx->err, sizeof cx->err, "%s: %s", what, detail);
}

void fm_cuda_check(fm_cuda_ctx *cx, cudaError_t e, const char *what)
{
    if (e == cudaSuccess) return;
    char d[256];
    snprintf(d, sizeof d, "%s (%s)", cudaGetErrorString(e), cudaGetErrorName(e));
    fm_cuda_fail(cx, what, d);
}

void fm_cuda_check_launch(fm_cuda_ctx *cx, const char *what)
{
    fm_cuda_check(cx, cudaGetLastError(), what);
}

void fm_cuda_check_blas(fm_cuda_ctx *cx, cublasStatus_t s, const char *what)
{
    if (s == CUBLAS_STATUS_SUCCESS) return;
    char d[256];
    snprintf(d, sizeof d, "%s (%s)", cublasGetStatusString(s), cublasGetStatusName(s));
    fm_cuda_fail(cx, what, d);
}

/* The recorded error as a status (NULL when none). The error stays recorded: after a device fault
 * the context is unusable and every later call reports it again. */
static fm_status cuda_status(const fm_cuda_ctx *cx)
{
    if (!cx->failed) return NULL;
    return FM_ERR(FM_ERR_DEVICE, "CUDA backend (device %d): %s", cx->device, cx->err);
}

/* ---- context --------------------------------------------------------------------------------- */

int fm_cuda_device_count(const char **why)
{
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        (void)cudaGetLastError(); /* clear the (non-sticky) error */
        *why = cudaGetErrorString(e); /* static text, e.g. "no CUDA-capable device is detected" */
        return 0;
    }
    *why = n > 0 ? NULL : "cudaGetDeviceCount reports no device (check the job's GPU allocation "
                          "and CUDA_VISIBLE_DEVICES)";
    return n;
}

static void ctx_destroy(fm_cuda_ctx *cx)
{
    if (!cx) return;
    if (cx->stream) (void)cudaStreamSynchronize(cx->stream);
    if (cx->lt) (void)cublasLtDestroy(cx->lt);
    if (cx->blas) (void)cublasDestroy(cx->blas);
    if (cx->workspace) (void)cudaFree(cx->workspace);
    if (cx->sumsq_part) (void)cudaFree(cx->sumsq_part);
    if (cx->sumsq_host) (void)cudaFreeHost(cx->sumsq_host);
    if (cx->stream) (void)cudaStreamDestroy(cx->stream);
    free(cx);
}

#define INIT_CUDA(call)                                                                           \
    do {                                                                                          \
        cudaError_t e_ = (call);                                                                  \
        if (e_ != cudaSuccess) {                                                                  \
            st = FM_ERR(FM_ERR_DEVICE, "CUDA backend: %s failed on device %d: %s", #call, device,  \
                        cudaGetErrorString(e_));                                                  \
            goto fail;                                                                            \
        }                                                                                         \
    } while (0)
#define INIT_BLAS(call)                                                                           \
    do {                                                                                          \
        cublasStatus_t s_ = (call);                                                               \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                        \
            st = FM_ERR(FM_ERR_DEVICE, "CUDA backend: %s failed on device %d: %s", #call, device,  \
                        cublasGetStatusString(s_));                                               \
            goto fail;                                                                            \
        }                                                                                         \
    } while (0)

static const fm_kernel_ops *cuda_ops_table(void);

fm_status fm_cuda_backend_init(fm_backend *be, int threads, int device, unsigned precision)
{
    fm_status st = NULL;
    fm_cuda_ctx *cx = NULL;
    const char *why = NULL;
    if (precision != FM_PRECISION_FP32 && precision != FM_PRECISION_AUTO)
        return FM_ERR(FM_ERR_CONFIG, "CUDA backend: precision = %s is not implemented yet (this "
                                     "backend computes in fp32); set [runtime] precision = fp32 or "
                                     "auto", fm_precision_name(precision));
    int n = fm_cuda_device_count(&why);
    if (device < 0) device = 0;
    if (n <= 0)
        return FM_ERR(FM_ERR_DEVICE, "CUDA backend: no CUDA device is visible to this process (%s; "
                                     "check the driver, the job's GPU allocation and "
                                     "CUDA_VISIBLE_DEVICES)", why);
    if (device >= n)
        return FM_ERR(FM_ERR_DEVICE, "CUDA backend: device %d requested, but only %d device(s) are "
                                     "visible (ordinals 0..%d; CUDA_VISIBLE_DEVICES renumbers them)",
                      device, n, n - 1);
    cx = (fm_cuda_ctx *)calloc(1, sizeof *cx);
    if (!cx) return FM_ERR(FM_ERR_NOMEM, "CUDA backend: out of memory (%zu bytes)", sizeof *cx);
    cx->device = device;
    INIT_CUDA(cudaSetDevice(device));
    INIT_CUDA(cudaDeviceGetAttribute(&cx->sm_count, cudaDevAttrMultiProcessorCount, device));
    {
        cudaDeviceProp prop;
        INIT_CUDA(cudaGetDeviceProperties(&prop, device));
        snprintf(cx->describe, sizeof cx->describe, "%.200s (device %d, sm_%d%d, %d SMs)", prop.name,
                 device, prop.major, prop.minor, prop.multiProcessorCount);
    }
    INIT_CUDA(cudaStreamCreateWithFlags(&cx->stream, cudaStreamNonBlocking));
    cx->workspace_bytes = FM_CUDA_WORKSPACE_BYTES;
    INIT_CUDA(cudaMalloc(&cx->workspace, cx->workspace_bytes));
    INIT_CUDA(cudaMalloc((void **)&cx->sumsq_part, (FM_CUDA_SUMSQ_BLOCKS + 1) * sizeof(double)));
    INIT_CUDA(cudaMallocHost((void **)&cx->sumsq_host, sizeof(double)));
    INIT_BLAS(cublasCreate(&cx->blas));
    INIT_BLAS(cublasSetStream(cx->blas, cx->stream));
    INIT_BLAS(cublasSetWorkspace(cx->blas, cx->workspace, cx->workspace_bytes));
    INIT_BLAS(cublasSetMathMode(cx->blas, CUBLAS_DEFAULT_MATH)); /* fp32, no TF32 */
    INIT_BLAS(cublasLtCreate(&cx->lt));
    be->ops = cuda_ops_table();
    be->threads = threads > 0 ? threads : 1;
    be->device = device;
    be->impl = cx;
    be->precision = FM_PRECISION_FP32; /* auto: the only precision this backend implements */
    return NULL;
fail:
    ctx_destroy(cx);
    return st;
}

static void cuda_destroy(fm_backend *be)
{
    ctx_destroy(FM_CUDA_CX(be));
    be->impl = NULL;
}

static void cuda_describe(fm_backend *be, char *buf, size_t n)
{
    if (n == 0) return;
    snprintf(buf, n, "%s", FM_CUDA_CX(be)->describe);
}

/* ---- memory ---------------------------------------------------------------------------------- */

static fm_status cuda_alloc(fm_backend *be, void **ptr, size_t bytes)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    *ptr = NULL;
    size_t rounded = (bytes + 255u) / 256u * 256u;
    if (rounded == 0) rounded = 256;
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, rounded);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        size_t free_b = 0, total_b = 0;
        (void)cudaMemGetInfo(&free_b, &total_b);
        return FM_ERR(FM_ERR_NOMEM, "CUDA backend: allocating %zu bytes on device %d failed: %s "
                                    "(%zu of %zu bytes free)", bytes, cx->device,
                      cudaGetErrorString(e), free_b, total_b);
    }
    e = cudaMemsetAsync(p, 0, rounded, cx->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(cx->stream);
    if (e != cudaSuccess) {
        (void)cudaFree(p);
        return FM_ERR(FM_ERR_DEVICE, "CUDA backend: zeroing %zu new bytes on device %d failed: %s",
                      bytes, cx->device, cudaGetErrorString(e));
    }
    *ptr = p;
    return NULL;
}

static void cuda_free(fm_backend *be, void *ptr)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    if (!ptr) return;
    (void)cudaStreamSynchronize(cx->stream); /* no kernel may still use it */
    fm_cuda_check(cx, cudaFree(ptr), "free");
}

static fm_status cuda_copy(fm_backend *be, void *dst, const void *src, size_t bytes,
                           cudaMemcpyKind kind, const char *what)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    FM_TRY(cuda_status(cx));
    if (bytes == 0) return NULL;
    cudaError_t e = cudaMemcpyAsync(dst, src, bytes, kind, cx->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(cx->stream);
    if (e != cudaSuccess) {
        fm_cuda_check(cx, e, what);
        return FM_ERR(FM_ERR_DEVICE, "CUDA backend: %s of %zu bytes on device %d failed: %s", what,
                      bytes, cx->device, cx->err);
    }
    return NULL;
}

static fm_status cuda_upload(fm_backend *be, void *dst, const void *src, size_t bytes)
{
    return cuda_copy(be, dst, src, bytes, cudaMemcpyHostToDevice, "upload");
}

static fm_status cuda_download(fm_backend *be, void *dst, const void *src, size_t bytes)
{
    return cuda_copy(be, dst, src, bytes, cudaMemcpyDeviceToHost, "download");
}

static void cuda_zero(fm_backend *be, void *ptr, size_t bytes)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    if (bytes == 0) return;
    fm_cuda_check(cx, cudaMemsetAsync(ptr, 0, bytes, cx->stream), "zero");
}

static fm_status cuda_sync(fm_backend *be)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    fm_cuda_check(cx, cudaStreamSynchronize(cx->stream), "sync");
    fm_cuda_check(cx, cudaGetLastError(), "sync");
    return cuda_status(cx);
}

/* Page-locked host memory: device-to-host copies into it run at the link's full speed. */
static fm_status cuda_host_alloc(fm_backend *be, void **ptr, size_t bytes)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    *ptr = NULL;
    cudaError_t e = cudaMallocHost(ptr, bytes > 0 ? bytes : 1);
    if (e != cudaSuccess) {
        *ptr = NULL;
        (void)cudaGetLastError();
        return FM_ERR(FM_ERR_NOMEM, "CUDA backend: cannot allocate %zu bytes of page-locked host "
                      "memory on device %d: %s; lower the model size or the rank count per node",
                      bytes, cx->device, cudaGetErrorString(e));
    }
    return NULL;
}

static void cuda_host_free(fm_backend *be, void *ptr)
{
    (void)be;
    if (ptr) (void)cudaFreeHost(ptr);
}

/* ---- operation table ------------------------------------------------------------------------- */

/* The table by field name (C++17 has no designated initialisers; assignments keep the names). */
static fm_kernel_ops cuda_ops_make(void)
{
    fm_kernel_ops o;
    memset(&o, 0, sizeof o);
    o.name = "cuda";
    o.act_bytes = 4; /* fp32 activations */
    /* device memory, asynchronous (one stream); fp32 only so far (the bf16 contract of kernels.h is
     * issue 15's work); MFU against [runtime] peak_tflops */
    o.caps.host_memory = 0;
    o.caps.async = 1;
    o.caps.precisions = FM_PRECISION_FP32;
    o.caps.peak_from_matmul = 0;
    o.destroy = cuda_destroy;
    o.describe = cuda_describe;
    o.alloc = cuda_alloc;
    o.free = cuda_free;
    o.upload = cuda_upload;
    o.download = cuda_download;
    o.zero = cuda_zero;
    o.sync = cuda_sync;
    o.host_alloc = cuda_host_alloc;
    o.host_free = cuda_host_free;
    o.encoder_forward = fm_cuda_encoder_forward;
    o.encoder_backward = fm_cuda_encoder_backward;
    o.embedding_forward = fm_cuda_embedding_forward;
    o.embedding_backward = fm_cuda_embedding_backward;
    o.layernorm_forward = fm_cuda_layernorm_forward;
    o.layernorm_backward = fm_cuda_layernorm_backward;
    o.rmsnorm_forward = fm_cuda_rmsnorm_forward;
    o.rmsnorm_backward = fm_cuda_rmsnorm_backward;
    o.residual_forward = fm_cuda_residual_forward;
    o.matmul_forward = fm_cuda_matmul_forward;
    o.matmul_backward = fm_cuda_matmul_backward;
    o.gelu_forward = fm_cuda_gelu_forward;
    o.gelu_backward = fm_cuda_gelu_backward;
    o.swiglu_forward = fm_cuda_swiglu_forward;
    o.swiglu_backward = fm_cuda_swiglu_backward;
    o.rope_forward = fm_cuda_rope_forward;
    o.rope_backward = fm_cuda_rope_backward;
    o.attention_forward = fm_cuda_attention_forward;
    o.attention_backward = fm_cuda_attention_backward;
    o.attention_decode = fm_cuda_attention_decode;
    o.softmax_xent_forward = fm_cuda_softmax_xent_forward;
    o.softmax_xent_backward = fm_cuda_softmax_xent_backward;
    o.adamw_update = fm_cuda_adamw_update;
    o.sum_squares = fm_cuda_sum_squares;
    o.to_bf16 = fm_cuda_to_bf16;
    return o;
}

static const fm_kernel_ops *cuda_ops_table(void)
{
    static const fm_kernel_ops ops = cuda_ops_make(); /* initialised once, thread-safe (C++11) */
    return &ops;
}

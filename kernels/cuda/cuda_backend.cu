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

void fm_cuda_debug_sync(fm_cuda_ctx *cx, const char *what)
{
    if (!cx->sync_check || cx->failed) return;
    const cudaError_t e = cudaStreamSynchronize(cx->stream);
    if (e == cudaSuccess) return;
    char d[320];
    snprintf(d, sizeof d, "%s (%s), found by FM_CUDA_SYNC_CHECK=1 right after this op",
             cudaGetErrorString(e), cudaGetErrorName(e));
    fm_cuda_fail(cx, what, d);
}

void fm_cuda_check_launch(fm_cuda_ctx *cx, const char *what)
{
    fm_cuda_check(cx, cudaGetLastError(), what);
    fm_cuda_debug_sync(cx, what);
}

void fm_cuda_check_blas(fm_cuda_ctx *cx, cublasStatus_t s, const char *what)
{
    if (s != CUBLAS_STATUS_SUCCESS) {
        char d[256];
        snprintf(d, sizeof d, "%s (%s)", cublasGetStatusString(s), cublasGetStatusName(s));
        fm_cuda_fail(cx, what, d);
    }
    fm_cuda_debug_sync(cx, what);
}

void *fm_cuda_scratch(fm_cuda_ctx *cx, size_t bytes, const char *what)
{
    if (bytes <= cx->scratch_bytes && cx->scratch) return cx->scratch;
    const size_t rounded = (bytes + ((size_t)1 << 20) - 1) / ((size_t)1 << 20) * ((size_t)1 << 20);
    (void)cudaStreamSynchronize(cx->stream); /* the old buffer may still be read */
    if (cx->scratch) (void)cudaFree(cx->scratch);
    cx->scratch = NULL;
    cx->scratch_bytes = 0;
    const cudaError_t e = cudaMalloc(&cx->scratch, rounded);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        cx->scratch = NULL;
        char d[256];
        snprintf(d, sizeof d, "allocating %zu bytes of scratch failed: %s (reduce the micro-batch "
                 "size)", rounded, cudaGetErrorString(e));
        fm_cuda_fail(cx, what, d);
        return NULL;
    }
    cx->scratch_bytes = rounded;
    return cx->scratch;
}

/* The recorded error as a status (NULL when none). The error stays recorded: after a device fault
 * the context is unusable and every later call reports it again. */
static fm_status cuda_status(const fm_cuda_ctx *cx)
{
    if (!cx->failed) return NULL;
    return FM_ERR(FM_ERR_DEVICE, "CUDA backend (device %d): %s", cx->device, cx->err);
}

/* ---- context --------------------------------------------------------------------------------- */

/* What a failing cudaGetDeviceCount means and what to do (static text). */
static const char *device_count_advice(cudaError_t e)
{
    switch (e) {
    case cudaErrorNoDevice:
        return "cudaGetDeviceCount: no CUDA-capable device is detected (cudaErrorNoDevice): this "
               "node has no NVIDIA GPU visible to the process; check the job's GPU request "
               "(e.g. --gpus / --gres=gpu:N) and that CUDA_VISIBLE_DEVICES is not empty";
    case cudaErrorInsufficientDriver:
        return "cudaGetDeviceCount: the NVIDIA driver is older than the CUDA runtime fmtrain was "
               "built with (cudaErrorInsufficientDriver): upgrade the driver (nvidia-smi shows its "
               "version and the newest CUDA it supports) or rebuild fmtrain with an older CUDA "
               "toolkit";
    case cudaErrorInitializationError:
        return "cudaGetDeviceCount: the CUDA driver failed to initialise "
               "(cudaErrorInitializationError): check that the nvidia kernel module is loaded "
               "(nvidia-smi) and /dev/nvidia* are accessible in this container or job";
    case cudaErrorSystemDriverMismatch:
        return "cudaGetDeviceCount: the NVIDIA kernel module and the user-space driver library "
               "differ in version (cudaErrorSystemDriverMismatch): reboot the node or reinstall "
               "the driver so both match";
    case cudaErrorCompatNotSupportedOnDevice:
        return "cudaGetDeviceCount: the CUDA forward-compatibility package in use does not support "
               "this GPU (cudaErrorCompatNotSupportedOnDevice): remove the compat libraries from "
               "LD_LIBRARY_PATH or upgrade the driver";
    case cudaErrorDevicesUnavailable:
        return "cudaGetDeviceCount: all CUDA devices are busy or unavailable "
               "(cudaErrorDevicesUnavailable): the GPUs are in exclusive-process mode and used by "
               "another process, or were taken away";
    case cudaErrorOperatingSystem:
        return "cudaGetDeviceCount: an operating-system call failed inside the CUDA driver "
               "(cudaErrorOperatingSystem): check dmesg for NVIDIA driver errors";
    default:
        return NULL;
    }
}

int fm_cuda_device_count(const char **why)
{
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        (void)cudaGetLastError(); /* clear the (non-sticky) error */
        const char *advice = device_count_advice(e);
        /* static text, e.g. "no CUDA-capable device is detected" */
        *why = advice ? advice : cudaGetErrorString(e);
        if (e == cudaErrorInsufficientDriver) {
            /* tell "no driver at all" from "a driver too old", with the versions */
            static char msg[512]; /* written once per failing call; the registry is not threaded */
            int drv = 0, rt = 0;
            (void)cudaDriverGetVersion(&drv);
            (void)cudaRuntimeGetVersion(&rt);
            if (drv == 0)
                snprintf(msg, sizeof msg, "cudaGetDeviceCount: no NVIDIA driver found "
                         "(cudaErrorInsufficientDriver, libcuda.so.1 absent or not loadable): this "
                         "is not a GPU node, or the driver is not visible in this container/job; "
                         "fmtrain's CUDA runtime is %d.%d", rt / 1000, (rt % 1000) / 10);
            else
                snprintf(msg, sizeof msg, "cudaGetDeviceCount: the NVIDIA driver supports CUDA "
                         "%d.%d, older than the CUDA runtime %d.%d fmtrain was built with "
                         "(cudaErrorInsufficientDriver): upgrade the driver, or rebuild fmtrain "
                         "with a CUDA toolkit no newer than %d.%d", drv / 1000, (drv % 1000) / 10,
                         rt / 1000, (rt % 1000) / 10, drv / 1000, (drv % 1000) / 10);
            (void)cudaGetLastError();
            *why = msg;
        }
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
    fm_cuda_attention_release(cx);
    if (cx->lt) (void)cublasLtDestroy(cx->lt);
    if (cx->blas) (void)cublasDestroy(cx->blas);
    if (cx->workspace) (void)cudaFree(cx->workspace);
    if (cx->sumsq_part) (void)cudaFree(cx->sumsq_part);
    if (cx->sumsq_host) (void)cudaFreeHost(cx->sumsq_host);
    if (cx->scratch) (void)cudaFree(cx->scratch);
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

static const fm_kernel_ops *cuda_ops_table(unsigned precision);

/* Non-zero when environment variable `name` is set to something other than "" or "0". */
static int env_flag(const char *name, int dflt)
{
    const char *v = getenv(name);
    if (!v || !*v) return dflt;
    return strcmp(v, "0") != 0;
}

fm_status fm_cuda_backend_init(fm_backend *be, int threads, int device, unsigned precision)
{
    fm_status st = NULL;
    fm_cuda_ctx *cx = NULL;
    const char *why = NULL;
    if (precision != FM_PRECISION_FP32 && precision != FM_PRECISION_BF16 &&
        precision != FM_PRECISION_AUTO)
        return FM_ERR(FM_ERR_CONFIG, "CUDA backend: unknown precision %u (expected fp32, bf16 or "
                                     "auto)", precision);
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
        cx->cc_major = prop.major;
        cx->cc_minor = prop.minor;
        /* auto: bf16 where the tensor cores have bf16 (sm_80, Ampere, and newer) */
        if (precision == FM_PRECISION_AUTO)
            precision = prop.major >= 8 ? FM_PRECISION_BF16 : FM_PRECISION_FP32;
        if (precision == FM_PRECISION_BF16 && prop.major < 8) {
            st = FM_ERR(FM_ERR_CONFIG, "CUDA backend: precision = bf16 needs a GPU of compute "
                                       "capability 8.0 (A100) or newer, but device %d (%.100s) is "
                                       "sm_%d%d; set [runtime] precision = fp32 or auto",
                        device, prop.name, prop.major, prop.minor);
            goto fail;
        }
        cx->precision = precision;
        cx->tf32 = precision == FM_PRECISION_FP32 && env_flag("FM_CUDA_TF32", 1);
        cx->sync_check = env_flag("FM_CUDA_SYNC_CHECK", 0);
        cx->dout16_bytes = FM_CUDA_DOUT16_BYTES;
        const char *chunk = getenv("FM_CUDA_DOUT16_BYTES"); /* a testing knob (cuda_internal.cuh) */
        if (chunk && strtoull(chunk, NULL, 10) > 0) cx->dout16_bytes = strtoull(chunk, NULL, 10);
        snprintf(cx->describe, sizeof cx->describe, "%.160s (device %d, sm_%d%d, %d SMs), %s%s%s",
                 prop.name, device, prop.major, prop.minor, prop.multiProcessorCount,
                 fm_precision_name(precision),
                 precision == FM_PRECISION_FP32 ? (cx->tf32 ? ", TF32 matmuls" : ", fp32 matmuls")
                                                : ", bf16 matmuls",
                 cx->sync_check ? ", FM_CUDA_SYNC_CHECK" : "");
    }
    INIT_CUDA(cudaStreamCreateWithFlags(&cx->stream, cudaStreamNonBlocking));
    cx->workspace_bytes = FM_CUDA_WORKSPACE_BYTES;
    INIT_CUDA(cudaMalloc(&cx->workspace, cx->workspace_bytes));
    INIT_CUDA(cudaMalloc((void **)&cx->sumsq_part, (FM_CUDA_SUMSQ_BLOCKS + 1) * sizeof(double)));
    INIT_CUDA(cudaMallocHost((void **)&cx->sumsq_host, sizeof(double)));
    INIT_BLAS(cublasCreate(&cx->blas));
    INIT_BLAS(cublasSetStream(cx->blas, cx->stream));
    INIT_BLAS(cublasSetWorkspace(cx->blas, cx->workspace, cx->workspace_bytes));
    /* the cuBLAS fallback of the fp32 table follows the cuBLASLt choice (matmul.cu) */
    INIT_BLAS(cublasSetMathMode(cx->blas, cx->tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
    INIT_BLAS(cublasLtCreate(&cx->lt));
    be->ops = cuda_ops_table(cx->precision);
    be->threads = threads > 0 ? threads : 1;
    be->device = device;
    be->impl = cx;
    be->precision = cx->precision;
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
    fm_cuda_check(cx, cudaStreamSynchronize(cx->stream),
                  cx->sync_check ? "sync" : "sync (an asynchronous error of an earlier op; rerun "
                                            "with FM_CUDA_SYNC_CHECK=1 to name the op)");
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
    /* device memory, asynchronous (one stream); fp32 and bf16 (fm_cuda_backend_init refuses bf16 on
     * a GPU older than sm_80); MFU against [runtime] peak_tflops */
    o.caps.host_memory = 0;
    o.caps.async = 1;
    o.caps.precisions = FM_PRECISION_FP32 | FM_PRECISION_BF16;
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
    o.softmax_xent_fused = fm_cuda_softmax_xent_fused;
    o.adamw_update = fm_cuda_adamw_update;
    o.sum_squares = fm_cuda_sum_squares;
    o.to_bf16 = fm_cuda_to_bf16;
    return o;
}

/* The bf16 table (kernels.h, "Precision"): the fp32 table but for the ops with "act" arguments */
static fm_kernel_ops cuda_ops_make_bf16(void)
{
    fm_kernel_ops o = cuda_ops_make();
    o.act_bytes = 2;
    o.layernorm_forward = fm_cuda_layernorm_forward_bf16;
    o.rmsnorm_forward = fm_cuda_rmsnorm_forward_bf16;
    o.matmul_forward = fm_cuda_matmul_forward_bf16;
    o.matmul_backward = fm_cuda_matmul_backward_bf16;
    o.gelu_forward = fm_cuda_gelu_forward_bf16;
    o.swiglu_forward = fm_cuda_swiglu_forward_bf16;
    o.attention_forward = fm_cuda_attention_forward_bf16;
    o.attention_backward = fm_cuda_attention_backward_bf16;
    o.attention_decode = fm_cuda_attention_decode_bf16;
    return o;
}

static const fm_kernel_ops *cuda_ops_table(unsigned precision)
{
    /* initialised once, thread-safe (C++11) */
    static const fm_kernel_ops ops = cuda_ops_make(), ops_bf16 = cuda_ops_make_bf16();
    return precision == FM_PRECISION_BF16 ? &ops_bf16 : &ops;
}

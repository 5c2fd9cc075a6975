/* cuda_backend.h — the CUDA backend's entry points for the registry (kernels/registry.c), in C, without
 * any CUDA header. The rest of fmtrain asks the registry (kernels.h: fm_backend_device_count("cuda",
 * &why), fm_backend_create("cuda", threads, device, &be)), not this header.
 *
 * The backend's buffers are device memory (ops->caps.host_memory = 0): host code moves data only through
 * ops->upload and ops->download. One backend per host thread; the device is selected at creation
 * (cudaSetDevice). */
#ifndef FM_CUDA_BACKEND_H
#define FM_CUDA_BACKEND_H

#include "../kernels.h"

/* Defined in cuda_backend.cu; only compiled (and only referenced by registry.c) when FM_HAVE_CUDA. */
/* Fills be: ops = the CUDA table of the precision, impl = stream, cuBLAS handles and workspace on
 * `device` (< 0: 0); precision FM_PRECISION_FP32, FM_PRECISION_BF16 (sm_80 and newer) or
 * FM_PRECISION_AUTO (bf16 on sm_80 and newer, fp32 before). Environment: FM_CUDA_TF32=0 makes the
 * fp32 table's matmuls full fp32 instead of TF32; FM_CUDA_SYNC_CHECK=1 synchronises and checks after
 * every op, naming the failing one.
 * Errors: FM_ERR_DEVICE (no device, ordinal out of range, initialisation failed), FM_ERR_NOMEM,
 * FM_ERR_CONFIG (bf16 on a GPU older than sm_80, unknown precision). */
fm_status fm_cuda_backend_init(fm_backend *be, int threads, int device, unsigned precision);
/* cudaGetDeviceCount (honours CUDA_VISIBLE_DEVICES). For 0, *why receives a static text naming the
 * CUDA error and what to do (no device, driver older than the runtime, driver not initialised,
 * kernel module / library mismatch, ...) or says that no device is visible; NULL otherwise. `why`
 * must not be NULL. */
int fm_cuda_device_count(const char **why);

#endif /* FM_CUDA_BACKEND_H */

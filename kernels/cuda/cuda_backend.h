/* cuda_backend.h — what the rest of fmtrain may ask about the CUDA backend without including any
 * CUDA header. Always compiled (kernels/registry.c): in a build without the backend the answers say
 * "no GPU".
 *
 * The backend itself is created by name through fm_backend_create("cuda", threads, device, &be)
 * (kernels.h). Its buffers are device memory: host code moves data only through ops->upload and
 * ops->download. One backend per host thread; the device is selected at creation (cudaSetDevice). */
#ifndef FM_CUDA_BACKEND_H
#define FM_CUDA_BACKEND_H

/* Number of CUDA devices this process can use (cudaGetDeviceCount, which honours
 * CUDA_VISIBLE_DEVICES); 0 when the backend is not compiled in, no driver is loaded or no GPU is
 * visible. Never fails. Used by `[runtime] device = auto` and by the CUDA tests to skip. */
int fm_backend_cuda_device_count(void);

#endif /* FM_CUDA_BACKEND_H */

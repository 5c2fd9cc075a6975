/* registry.c — the one place that knows which backends are compiled in (the only backend #ifdefs). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "build_info.h"
#include "cuda/cuda_backend.h"
#include "kernels.h"

/* Each backend provides a constructor that fills `be` (ops, impl) or returns an error. */
fm_status fm_cpu_backend_init(fm_backend *be, int threads);
void fm_cpu_backend_fini(fm_backend *be);
const char *fm_cpu_blas_info(void);
#if FM_HAVE_CUDA
fm_status fm_cuda_backend_init(fm_backend *be, int threads, int device);
void fm_cuda_backend_fini(fm_backend *be);
int fm_cuda_device_count(void);
#endif

int fm_backend_cuda_device_count(void)
{
#if FM_HAVE_CUDA
    return fm_cuda_device_count();
#else
    return 0;
#endif
}

int fm_backend_available(const char *name)
{
    if (strcmp(name, "cpu") == 0) return 1;
#if FM_HAVE_CUDA
    if (strcmp(name, "cuda") == 0) return 1;
#endif
    return 0;
}

fm_status fm_backend_create(const char *name, int threads, int device, fm_backend **out)
{
    *out = NULL;
    fm_backend *be = calloc(1, sizeof *be);
    FM_CHECK_ALLOC(be, sizeof *be);
    be->device = -1;
    fm_status st = NULL;
    if (strcmp(name, "cpu") == 0) {
        st = fm_cpu_backend_init(be, threads);
#if FM_HAVE_CUDA
    } else if (strcmp(name, "cuda") == 0) {
        st = fm_cuda_backend_init(be, threads, device);
#endif
    } else if (strcmp(name, "cuda") == 0) {
        (void)device;
        st = FM_ERR(FM_ERR_CONFIG, "this fmtrain was built without the CUDA backend "
                                   "(configure with -DFMTRAIN_CUDA=ON where nvcc is available)");
    } else {
        st = FM_ERR(FM_ERR_CONFIG, "unknown compute backend '%s' (known: cpu, cuda)", name);
    }
    if (st) {
        free(be);
        return fm_status_trace(st, __FILE__, __LINE__, __func__);
    }
    *out = be;
    return NULL;
}

void fm_backend_free(fm_backend **be)
{
    if (!be || !*be) return;
#if FM_HAVE_CUDA
    if (strcmp((*be)->ops->name, "cuda") == 0)
        fm_cuda_backend_fini(*be);
    else
#endif
        fm_cpu_backend_fini(*be);
    free(*be);
    *be = NULL;
}

const char *fm_backend_blas_info(void) { return fm_cpu_blas_info(); }

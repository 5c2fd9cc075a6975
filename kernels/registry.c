/* registry.c — the one place that knows which backends are compiled in: one table of {name, init,
 * device_count}, and the only backend #if of the tree. Everything else finds a backend by its name
 * here and then asks its operation table (ops->caps, ops->describe), never the name. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "build_info.h"
#include "cpu/cpu_kernels.h"
#include "cuda/cuda_backend.h"
#include "kernels.h"

typedef struct backend_entry {
    const char *name;
    /* Fills be (ops, threads, device, impl, precision) for the precision asked (FM_PRECISION_*, AUTO
     * included) or returns an error; NULL: known, not compiled in. */
    fm_status (*init)(fm_backend *be, int threads, int device, unsigned precision);
    /* Usable devices; *why (never NULL here) receives the reason for a 0. */
    int (*device_count)(const char **why);
    const char *missing; /* when init is NULL: how to build a binary that has it */
    int gpu;             /* 1: runs on GPUs (placement gives each rank one; device = auto prefers it) */
} backend_entry;

static int cpu_device_count(const char **why)
{
    *why = NULL;
    return 1;
}

/* "cpu" first: the reference backend (fm_backend_name(0)). */
static const backend_entry g_backends[] = {
    {"cpu", fm_cpu_backend_init, cpu_device_count, NULL, 0},
#if FM_HAVE_CUDA
    {"cuda", fm_cuda_backend_init, fm_cuda_device_count, NULL, 1},
#else
    {"cuda", NULL, NULL, "configure with -DFMTRAIN_CUDA=ON where nvcc is available", 1},
#endif
};
enum { N_BACKENDS = (int)(sizeof g_backends / sizeof g_backends[0]) };

static const backend_entry *find(const char *name)
{
    for (int i = 0; name && i < N_BACKENDS; i++)
        if (strcmp(g_backends[i].name, name) == 0) return &g_backends[i];
    return NULL;
}

int fm_backend_count(void)
{
    int n = 0;
    for (int i = 0; i < N_BACKENDS; i++) n += g_backends[i].init != NULL;
    return n;
}

const char *fm_backend_name(int i)
{
    for (int k = 0, seen = 0; i >= 0 && k < N_BACKENDS; k++) {
        if (!g_backends[k].init) continue;
        if (seen++ == i) return g_backends[k].name;
    }
    return NULL;
}

int fm_backend_available(const char *name)
{
    const backend_entry *e = find(name);
    return e && e->init;
}

int fm_backend_device_count(const char *name, const char **why)
{
    const char *reason = NULL;
    const backend_entry *e = find(name);
    int n = 0;
    if (!e)
        reason = "unknown compute backend";
    else if (!e->init)
        reason = "this fmtrain was built without this backend";
    else
        n = e->device_count(&reason);
    if (why) *why = n > 0 ? NULL : reason;
    return n;
}

int fm_backend_uses_gpus(const char *name)
{
    const backend_entry *e = find(name);
    return e && e->gpu;
}

const char *fm_backend_auto(void)
{
    for (int i = 0; i < N_BACKENDS; i++) {
        const char *why = NULL;
        if (g_backends[i].init && g_backends[i].gpu && g_backends[i].device_count(&why) > 0)
            return g_backends[i].name;
    }
    return "cpu";
}

/* "cpu, cuda": the names this binary knows, for messages. */
static void known_names(char *buf, size_t n)
{
    buf[0] = '\0';
    for (int i = 0; i < N_BACKENDS; i++) {
        size_t len = strlen(buf);
        snprintf(buf + len, n - len, "%s%s", i ? ", " : "", g_backends[i].name);
    }
}

fm_status fm_backend_create(const char *name, int threads, int device, fm_backend **out)
{
    FM_TRY(fm_backend_create_precision(name, threads, device, FM_PRECISION_FP32, out));
    return NULL;
}

fm_status fm_backend_create_precision(const char *name, int threads, int device, unsigned precision,
                                      fm_backend **out)
{
    *out = NULL;
    const backend_entry *e = find(name);
    if (!e) {
        char known[128];
        known_names(known, sizeof known);
        return FM_ERR(FM_ERR_CONFIG, "unknown compute backend '%s' (known: %s)", name ? name : "",
                      known);
    }
    if (!e->init)
        return FM_ERR(FM_ERR_CONFIG, "this fmtrain was built without the %s backend (%s)", e->name,
                      e->missing);
    fm_backend *be = calloc(1, sizeof *be);
    FM_CHECK_ALLOC(be, sizeof *be);
    be->device = -1;
    fm_status st = e->init(be, threads, device, precision);
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
    if ((*be)->ops && (*be)->ops->destroy) (*be)->ops->destroy(*be);
    free(*be);
    *be = NULL;
}

const char *fm_backend_blas_info(void) { return fm_cpu_blas_info(); }

const char *fm_backend_gemm_info(void) { return fm_cpu_gemm_info(); }

const char *fm_precision_name(unsigned precision)
{
    switch (precision) {
    case FM_PRECISION_AUTO: return "auto";
    case FM_PRECISION_FP32: return "fp32";
    case FM_PRECISION_BF16: return "bf16";
    default: return "?";
    }
}

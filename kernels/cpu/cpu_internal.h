/* cpu_internal.h — what the CPU kernel files share (not a public header): the backend's private
 * state, a vectorisable expf, the split of a range over threads, and the tile split used for matrix
 * products. */
#ifndef FM_CPU_INTERNAL_H
#define FM_CPU_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../kernels.h"

/* The CPU backend's private state (fm_backend.impl), created by fm_cpu_backend_init. The thread count
 * every kernel uses is the handle's: be->threads (>= 1). */
typedef struct fm_cpu_ctx {
    size_t scratch_floats; /* per-thread scratch size in floats */
    float *scratch;        /* be->threads * scratch_floats floats, 64-byte aligned per thread */
} fm_cpu_ctx;

/* The context of a CPU backend (the first line of a kernel that needs its scratch). */
static inline const fm_cpu_ctx *fm_cpu_cx(const fm_backend *be)
{
    return (const fm_cpu_ctx *)be->impl;
}

/* exp(x) in fp32 without a function call, so loops around it vectorise (Cephes expf: range reduction
 * x = k ln2 + r, |r| <= ln2/2, degree-6 polynomial, scale by 2^k through the exponent bits). Relative
 * error <= 2 ulp over [-87, 88]; returns exactly 0 below -87.3 (including -inf), saturates at
 * exp(88) above 88, and returns NaN for NaN (so a diverged model shows up in the loss). The clamps map
 * NaN to a finite value first, so the integer arithmetic never sees it. */
static inline float fm_cpu_expf(float x)
{
    float xc = x > -87.0f ? x : -87.0f; /* NaN -> -87 */
    xc = xc < 88.0f ? xc : 88.0f;
    /* k = round(xc / ln2); xc/ln2 >= -126 after the clamp, so truncating xc/ln2 + 128.5 is floor */
    const int32_t k = (int32_t)(xc * 1.44269504088896341f + 128.5f) - 128;
    const float kf = (float)k;
    float r = xc - kf * 0.693359375f;
    r = r - kf * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float y = p * r * r + r + 1.0f;
    const int32_t bits = (k + 127) * (1 << 23);
    float two_k;
    memcpy(&two_k, &bits, sizeof two_k); /* 2^k; memcpy, not a union, so that the loop vectorises */
    y = y * two_k;
    y = x == x ? y : x; /* NaN stays NaN */
    return x < -87.3f ? 0.0f : y;
}

/* Contiguous part [*lo, *hi) of [0, n) for part `i` of `parts`, in multiples of `align` (except the
 * last part). Parts may be empty. */
static inline void fm_cpu_split(size_t n, int parts, int i, size_t align, size_t *lo, size_t *hi)
{
    size_t per = (n + (size_t)parts - 1) / (size_t)parts;
    per = (per + align - 1) / align * align;
    size_t a = per * (size_t)i, b = a + per;
    *lo = a < n ? a : n;
    *hi = b < n ? b : n;
}

/* Below this many multiply-adds a matrix product runs on one thread (splitting costs more). */
#define FM_CPU_GEMM_SERIAL_MAC (1 << 18)
/* Below this many elements an element-wise kernel runs on one thread. */
#define FM_CPU_ELEMWISE_SERIAL 32768

/* Threads to use for `work` units given the serial threshold. */
static inline int fm_cpu_team(int threads, size_t work, size_t serial_below)
{
    return work < serial_below ? 1 : threads;
}

#endif /* FM_CPU_INTERNAL_H */

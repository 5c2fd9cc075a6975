/* cpu_internal.h — what the CPU kernel files share (not a public header): the backend's private
 * state (scratch, workspace, the deferred error, the oneDNN context), bf16 conversions, a
 * vectorisable expf, the split of a range over threads, and the tile split used for matrix
 * products. */
#ifndef FM_CPU_INTERNAL_H
#define FM_CPU_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../kernels.h"

typedef struct fm_cpu_dnnl fm_cpu_dnnl; /* onednn.c: engine, stream, primitive cache */

/* The CPU backend's private state (fm_backend.impl), created by fm_cpu_backend_init. The thread count
 * every kernel uses is the handle's: be->threads (>= 1). Kernels run one at a time (a backend is used
 * by one thread, kernels.h), so the mutable fields below are only touched outside parallel regions. */
typedef struct fm_cpu_ctx {
    size_t scratch_floats; /* per-thread scratch size in floats */
    float *scratch;        /* be->threads * scratch_floats floats, 64-byte aligned per thread */
    void *work;            /* workspace of fm_cpu_work (grows, never shrinks), 64-byte aligned */
    size_t work_bytes;
    fm_status error;       /* first kernel error since the last sync (returned and cleared there) */
    fm_cpu_dnnl *dnnl;     /* oneDNN state; NULL in a build without oneDNN */
} fm_cpu_ctx;

/* The context of a CPU backend (the first line of a kernel that needs its scratch). */
static inline const fm_cpu_ctx *fm_cpu_cx(const fm_backend *be)
{
    return (const fm_cpu_ctx *)be->impl;
}

/* Records a kernel's error (kernels do not fail, kernels.h: it surfaces at the next sync); the first
 * one is kept, later ones are freed. Takes ownership of st. */
void fm_cpu_fail(fm_backend *be, fm_status st);

/* A workspace of at least `bytes` bytes (64-byte aligned, contents undefined), valid until the next
 * call; NULL after recording FM_ERR_NOMEM (fm_cpu_fail). Call outside parallel regions. */
void *fm_cpu_work(fm_backend *be, size_t bytes);

/* ---- GEMM through oneDNN (onednn.c; builds with FM_HAVE_ONEDNN only) ---------------------------- */

/* One row-major product C (M,N) = op(A) (M,K) @ op(B) (K,N) [+ bias (N)], or C += when accumulate.
 * trans_a 0: A is (M,K) with row stride lda; 1: A is stored as its transpose (K,M), row stride lda.
 * trans_b likewise for B (1: stored (N,K)). bf16 1: A and B are bf16, else fp32; C and bias fp32. */
typedef struct fm_cpu_gemm {
    int M, N, K;
    int trans_a, trans_b;
    int lda, ldb, ldc;
    int bf16;
    int accumulate;
} fm_cpu_gemm;

#if FM_HAVE_ONEDNN
/* Engine, stream, empty primitive cache. Errors: oneDNN's. */
fm_status fm_cpu_dnnl_create(fm_cpu_dnnl **out);
void fm_cpu_dnnl_free(fm_cpu_dnnl **d);
/* The product g through a cached oneDNN matmul primitive on be->threads threads (never call it
 * inside a parallel region); errors are recorded (fm_cpu_fail). bias may be NULL. */
void fm_cpu_dnnl_gemm(fm_backend *be, const fm_cpu_gemm *g, const void *A, const void *B,
                      const float *bias, float *C);
/* Creates a small bf16 matmul primitive: an error when oneDNN has none for this CPU. */
fm_status fm_cpu_dnnl_probe_bf16(fm_backend *be);
/* 1 when the CPU has bf16 dot products that oneDNN uses (AVX512_BF16, AMX). */
int fm_cpu_dnnl_bf16_native(void);
/* oneDNN's implementation name of the cached primitive for g (with or without bias), or NULL. */
const char *fm_cpu_dnnl_impl(fm_backend *be, const fm_cpu_gemm *g, int with_bias);
/* "oneDNN 2.6.3 (OpenMP runtime, CPU ISA ..., bf16 native); ..." */
const char *fm_cpu_dnnl_info(void);
#endif

/* ---- bf16 (kernels.h, "Precision") ------------------------------------------------------------- */

/* bf16 storage: the upper 16 bits of an fp32 */
typedef uint16_t fm_bf16;

/* fp32 -> bf16, round to nearest, ties to even; NaN stays NaN (quiet, same sign). Overflow carries
 * into the exponent and gives infinity; subnormals round like normal numbers (no flush). Branch-free
 * integer arithmetic, so loops around it vectorise. */
static inline fm_bf16 fm_cpu_round_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    const uint32_t nan = (u >> 16) | 0x0040u; /* a quiet NaN keeps the sign and the top payload */
    return (fm_bf16)((u & 0x7FFFFFFFu) > 0x7F800000u ? nan : rounded);
}

/* bf16 -> fp32, exact */
static inline float fm_cpu_bf16_to_f32(fm_bf16 h)
{
    const uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
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

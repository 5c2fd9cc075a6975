/* cpu_kernels.h — the CPU backend's typed kernels (kernels/cpu/<op>.c). Each takes the backend
 * (fm_backend *, created by fm_backend_create("cpu", threads, -1, &be)) as its first argument and reads
 * its context from be->impl, so the operation table of cpu_backend.c points straight at them
 * (.matmul_forward = fm_cpu_matmul_forward); tests and micro-benchmarks may call them by name.
 *
 * Legend as in kernels.h: B batch, T sequence, C channels, NH (query) heads (hs = C/NH), NKV key/value
 * heads, W = (NH + 2 NKV) hs the fused qkv row, V vocabulary, Vp padded vocabulary, N = B*T rows, OC
 * output channels, F SwiGLU hidden size. All tensors are row-major, contiguous unless a stride is
 * named, and fp32 except the "act" arguments of the *_bf16 kernels, which are bf16 (kernels.h,
 * "Precision"). The backend has two tables (cpu_backend.c): fp32 (these kernels) and, in builds with
 * oneDNN, bf16, which differs only in the kernels with a *_bf16 variant below; every other slot points
 * at the same fp32 kernel in both.
 *
 * Threading (docs/performance.md, "Threads and GEMMs"): every kernel runs on ONE OpenMP pool of
 * be->threads threads. With oneDNN a matrix product is one oneDNN matmul primitive, which runs its own
 * parallel region on that pool (same libgomp); without it, products are split into tiles by the
 * kernels themselves and each tile is one single-threaded cblas_sgemm call inside the OpenMP region.
 * Creating the backend sets the BLAS library's own threading to 1, so BLAS threads and OpenMP threads
 * never compete for cores; attention's block products are single-threaded cblas_sgemm calls.
 *
 * Determinism: the same inputs and thread count give bit-identical outputs (every reduction has a
 * fixed order; no atomics). Kernels whose reductions are partitioned over a thread-count independent
 * index (all but matmul) are also identical across thread counts; see docs/performance.md for the
 * matmul statement and tests/kernels/test_cpu.c for the test of it.
 *
 * Memory: beyond its arguments a kernel uses the context's per-thread scratch (attention blocks,
 * RoPE's angles; fixed size: threads * (2*BQ*BK + 4*BQ) floats = 66 KiB per thread) and the
 * backend's workspace (fm_cpu_work: bf16 dout of matmul_backward, N*OC*2 bytes; bf16 attention's fp32
 * output block, threads*BQ*hs floats), which grows to the largest call and is then reused; oneDNN's
 * primitives and their scratchpad are cached per backend (onednn.c). An allocation that fails is
 * reported by the next sync().
 */
#ifndef FM_CPU_KERNELS_H
#define FM_CPU_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "../kernels.h"

/* Attention works on blocks of FM_CPU_ATT_BQ query rows x FM_CPU_ATT_BK key columns. */
#define FM_CPU_ATT_BQ 64
#define FM_CPU_ATT_BK 128

/* ---- cpu_backend.c: the registry's entry points (kernels/registry.c) ------------------------- */
/* Fills be: ops = the CPU table of `precision` (FM_PRECISION_FP32, FM_PRECISION_BF16, or
 * FM_PRECISION_AUTO: bf16 when built with oneDNN and the CPU has native bf16 dot products, else
 * fp32), be->precision, impl = a new context of `threads` threads (<= 0: omp_get_max_threads());
 * sets the BLAS library's own thread count to 1 (OpenBLAS) and the OpenMP default team size to
 * `threads`; `device` is ignored. Errors: too many threads, out of memory, bf16 without oneDNN or on
 * a CPU oneDNN has no bf16 matmul for (FM_ERR_CONFIG, saying what to do). */
fm_status fm_cpu_backend_init(fm_backend *be, int threads, int device, unsigned precision);
/* The BLAS in use (vendor, threading model): fm_backend_blas_info(). */
const char *fm_cpu_blas_info(void);
/* The GEMM library of the matmuls (oneDNN or CBLAS): fm_backend_gemm_info(). */
const char *fm_cpu_gemm_info(void);

/* ---- encoder.c ------------------------------------------------------------------------------ */
/* out (B,T,C) = wte[tokens[b,t]] + wpe[t]; tokens (B,T) in [0,Vp); wte (Vp,C); wpe (>=T,C) */
void fm_cpu_encoder_forward(fm_backend *be, float *out, const int32_t *tokens, const float *wte,
                            const float *wpe, int B, int T, int C);
/* dwte (Vp,C) += scatter of dout by token; dwpe (>=T,C) += sum over b of dout; dout (B,T,C).
 * Parallel over channel slices: each dwte/dwpe element sums in (b,t) order. */
void fm_cpu_encoder_backward(fm_backend *be, float *dwte, float *dwpe, const float *dout,
                             const int32_t *tokens, int B, int T, int C);
/* out (B,T,C) = wte[tokens[b,t]] (no positions); tokens (B,T) in [0,Vp); wte (Vp,C) */
void fm_cpu_embedding_forward(fm_backend *be, float *out, const int32_t *tokens, const float *wte,
                              int B, int T, int C);
/* dwte (Vp,C) += scatter of dout (B,T,C) by token; channel slices, rows in (b,t) order */
void fm_cpu_embedding_backward(fm_backend *be, float *dwte, const float *dout,
                               const int32_t *tokens, int B, int T, int C);

/* ---- layernorm.c ---------------------------------------------------------------------------- */
/* out (N,C), mean (N), rstd (N); inp (N,C), weight (C), bias (C); eps 1e-5, biased variance */
void fm_cpu_layernorm_forward(fm_backend *be, float *out, float *mean, float *rstd,
                              const float *inp, const float *weight, const float *bias, int N,
                              int C);
/* bf16 table: out (N,C) bf16, the statistics and the normalisation fp32 */
void fm_cpu_layernorm_forward_bf16(fm_backend *be, float *out, float *mean, float *rstd,
                                   const float *inp, const float *weight, const float *bias, int N,
                                   int C);
/* dinp (N,C) ACCUMULATES; dweight (C), dbias (C) accumulate; dout (N,C), inp (N,C), weight (C),
 * mean (N), rstd (N) */
void fm_cpu_layernorm_backward(fm_backend *be, float *dinp, float *dweight, float *dbias,
                               const float *dout, const float *inp, const float *weight,
                               const float *mean, const float *rstd, int N, int C);

/* ---- rmsnorm.c ------------------------------------------------------------------------------ */
/* out (N,C) = inp * rstd * weight, rstd (N) = 1/sqrt(mean(inp^2) + eps); inp (N,C), weight (C) */
void fm_cpu_rmsnorm_forward(fm_backend *be, float *out, float *rstd, const float *inp,
                            const float *weight, int N, int C, float eps);
/* bf16 table: out (N,C) bf16 */
void fm_cpu_rmsnorm_forward_bf16(fm_backend *be, float *out, float *rstd, const float *inp,
                                 const float *weight, int N, int C, float eps);
/* dinp (N,C) ACCUMULATES; dweight (C) accumulates; dout (N,C), inp (N,C), weight (C), rstd (N) */
void fm_cpu_rmsnorm_backward(fm_backend *be, float *dinp, float *dweight, const float *dout,
                             const float *inp, const float *weight, const float *rstd, int N,
                             int C);

/* ---- residual.c ----------------------------------------------------------------------------- */
/* out (n) = a (n) + b (n); out may alias a or b */
void fm_cpu_residual_forward(fm_backend *be, float *out, const float *a, const float *b, size_t n);

/* ---- matmul.c ------------------------------------------------------------------------------- */
/* out (N,OC) = inp (N,C) @ weight (OC,C)^T + bias (OC) (bias may be NULL) */
void fm_cpu_matmul_forward(fm_backend *be, float *out, const float *inp, const float *weight,
                           const float *bias, int N, int C, int OC);
/* dinp (N,C) = dout @ weight, OVERWRITTEN (skipped when NULL); dweight (OC,C) += dout^T @ inp;
 * dbias (OC) += column sums of dout (skipped when NULL); dout (N,OC), inp (N,C), weight (OC,C) */
void fm_cpu_matmul_backward(fm_backend *be, float *dinp, float *dweight, float *dbias,
                            const float *dout, const float *inp, const float *weight, int N, int C,
                            int OC);
/* bf16 table (oneDNN builds): inp (N,C) and weight (OC,C) bf16; out (N,OC), bias fp32 */
void fm_cpu_matmul_forward_bf16(fm_backend *be, float *out, const float *inp, const float *weight,
                                const float *bias, int N, int C, int OC);
/* bf16 table (oneDNN builds): inp, weight bf16; dinp, dweight, dbias, dout fp32 (dout rounded to
 * bf16 in the workspace for the two products) */
void fm_cpu_matmul_backward_bf16(fm_backend *be, float *dinp, float *dweight, float *dbias,
                                 const float *dout, const float *inp, const float *weight, int N,
                                 int C, int OC);

/* ---- gelu.c --------------------------------------------------------------------------------- */
/* out (n) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), x = inp (n); out may alias inp */
void fm_cpu_gelu_forward(fm_backend *be, float *out, const float *inp, size_t n);
/* bf16 table: out (n) bf16, inp (n) fp32 (no aliasing) */
void fm_cpu_gelu_forward_bf16(fm_backend *be, float *out, const float *inp, size_t n);
/* dinp (n) = gelu'(inp) * dout; dinp may alias dout */
void fm_cpu_gelu_backward(fm_backend *be, float *dinp, const float *inp, const float *dout,
                          size_t n);

/* ---- swiglu.c ------------------------------------------------------------------------------- */
/* out (N,F) = silu(gate) * up; inp (N,2F) = [gate | up] */
void fm_cpu_swiglu_forward(fm_backend *be, float *out, const float *inp, int N, int F);
/* bf16 table: out (N,F) bf16 */
void fm_cpu_swiglu_forward_bf16(fm_backend *be, float *out, const float *inp, int N, int F);
/* dinp (N,2F) = [dgate | dup] OVERWRITTEN; inp (N,2F), dout (N,F); dinp may alias inp */
void fm_cpu_swiglu_backward(fm_backend *be, float *dinp, const float *inp, const float *dout, int N,
                            int F);

/* ---- rope.c --------------------------------------------------------------------------------- */
/* IN PLACE on the NH q heads and NKV k heads of qkv (B,T,W): pairs (j, j+hs/2) rotated by
 * (pos0+t) / theta^(2j/hs) (kernels.h states the fp32 rounding). hs even. */
void fm_cpu_rope_forward(fm_backend *be, float *qkv, int B, int T, int C, int NH, int NKV, int pos0,
                         float theta);
/* IN PLACE on dqkv (B,T,W): the q and k parts rotated back by the same angles */
void fm_cpu_rope_backward(fm_backend *be, float *dqkv, int B, int T, int C, int NH, int NKV,
                          int pos0, float theta);

/* ---- attention.c ---------------------------------------------------------------------------- */
/* Causal self-attention, scale 1/sqrt(hs), multi-head (NKV = NH) or grouped-query (NKV divides NH).
 * qkv (B,T,W) = [q (NH heads) | k (NKV heads) | v (NKV heads)], query head h uses key/value head
 * h/(NH/NKV); out (B,T,C); lse (B,NH,T) log-sum-exp of each row of scaled scores.
 * Flash-style: blocks of BQ query rows x BK keys with an online softmax; no (T,T) tensor exists.
 * Parallel over (b, h). */
void fm_cpu_attention_forward(fm_backend *be, float *out, float *lse, const float *qkv, int B,
                              int T, int C, int NH, int NKV);
/* bf16 table: out (B,T,C) bf16 */
void fm_cpu_attention_forward_bf16(fm_backend *be, float *out, float *lse, const float *qkv, int B,
                                   int T, int C, int NH, int NKV);
/* dqkv (B,T,W) OVERWRITTEN; dout (B,T,C); qkv (B,T,W); out (B,T,C), lse (B,NH,T) from forward.
 * Recomputes each score block from qkv and lse. Parallel over (b, key/value head): the group's query
 * heads in order, so dk and dv sum over them in a fixed order. */
void fm_cpu_attention_backward(fm_backend *be, float *dqkv, const float *dout, const float *qkv,
                               const float *out, const float *lse, int B, int T, int C, int NH,
                               int NKV);
/* bf16 table: out (B,T,C) from forward bf16 */
void fm_cpu_attention_backward_bf16(fm_backend *be, float *dqkv, const float *dout, const float *qkv,
                                    const float *out, const float *lse, int B, int T, int C, int NH,
                                    int NKV);
/* KV-cache inference: Tq new positions pos0..pos0+Tq-1. qkv (B,Tq,W); kcache, vcache
 * (B,maxT,NKV*hs): rows pos0..pos0+Tq-1 are first overwritten with the new k, v; out (B,Tq,C) =
 * causal attention of each new query over cache rows 0..pos0+i (as attention_forward for those rows).
 * Parallel over (b, h, i); one thread per query row, online softmax over BK-key blocks in key order. */
void fm_cpu_attention_decode(fm_backend *be, float *out, float *kcache, float *vcache,
                             const float *qkv, int B, int Tq, int pos0, int maxT, int C, int NH,
                             int NKV);
/* bf16 table: out (B,Tq,C) bf16 */
void fm_cpu_attention_decode_bf16(fm_backend *be, float *out, float *kcache, float *vcache,
                                  const float *qkv, int B, int Tq, int pos0, int maxT, int C,
                                  int NH, int NKV);

/* ---- softmax_xent.c ------------------------------------------------------------------------- */
/* losses (N) = lse - logits[n,target]; lse (N) = log sum_{c<V} exp(logits[n,c]); logits (N,Vp),
 * columns >= V ignored; targets (N) in [0,V) */
void fm_cpu_softmax_xent_forward(fm_backend *be, float *losses, float *lse, const float *logits,
                                 const int32_t *targets, int N, int V, int Vp);
/* IN PLACE: logits (N,Vp) := (exp(logits - lse) - onehot(target)) * dloss for c < V, 0 for c >= V */
void fm_cpu_softmax_xent_backward(fm_backend *be, float *logits, const float *lse,
                                  const int32_t *targets, float dloss, int N, int V, int Vp);

/* ---- adamw.c -------------------------------------------------------------------------------- */
/* AdamW as torch.optim.AdamW (decoupled decay), then grads := 0. params, grads, m, v: (n) fp32;
 * params_bf16 (n) bf16 or NULL (then set to the updated params rounded to bf16).
 *   g = grads*grad_scale; m += (1-b1)(g - m); v = b2 v + (1-b2) g^2;
 *   p = p (1 - lr wd) - (lr/(1-b1^t)) * m / (sqrt(v)/sqrt(1-b2^t) + eps) */
void fm_cpu_adamw_update(fm_backend *be, float *params, void *params_bf16, float *grads, float *m,
                         float *v, size_t n, float lr, float beta1, float beta2, float eps,
                         float weight_decay, float grad_scale, int64_t t);
/* *out = sum grads[i]^2 (n) in double: fixed blocks of FM_CPU_SUMSQ_BLOCK elements, each summed in 8
 * lanes, blocks added in index order; identical for every thread count. */
#define FM_CPU_SUMSQ_BLOCK 16384
void fm_cpu_sum_squares(fm_backend *be, double *out, const float *grads, size_t n);

/* ---- convert.c ------------------------------------------------------------------------------ */
/* dst (n) bf16 = src (n) rounded to nearest, ties to even (kernels.h, to_bf16) */
void fm_cpu_to_bf16(fm_backend *be, void *dst, const float *src, size_t n);

#endif /* FM_CPU_KERNELS_H */

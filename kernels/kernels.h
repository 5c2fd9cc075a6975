/* kernels.h — the compute-kernel interface shared by every backend (kernels/cpu, kernels/cuda).
 *
 * A backend is an operation table (fm_kernel_ops) plus a context. Common code (src/model, src/train,
 * src/ckpt) computes only through this table and asks the table's capabilities (caps) what it needs
 * to know about a backend; it never compares backend names. Buffers come from the backend's `alloc`
 * and may live on a device; host data enters and leaves through `upload` and `download` (or directly,
 * when caps.host_memory says the buffers are host memory).
 *
 * The table, its conventions and capabilities, and "Adding a compute backend": docs/backends.md.
 *
 * Legend used in every shape comment:
 *   B  micro-batch size          T  sequence length (<= maxT, the model's seq_len)
 *   C  channels (d_model)        NH number of (query) heads, hs = C / NH
 *   NKV key/value heads (grouped-query attention: NKV divides NH; NKV = NH is multi-head attention)
 *   W  = (NH + 2*NKV) * hs, the width of a fused [q | k | v] row (3C when NKV = NH)
 *   V  real vocabulary size      Vp padded vocabulary (multiple of 128), V <= Vp
 *   N  rows = B*T                OC output channels of a matmul     F  SwiGLU hidden size
 *
 * Conventions (all backends):
 *   - Parameters, parameter gradients and optimizer moments are fp32 (master copies).
 *   - Precision (below): arguments marked "act" hold `ops->act_bytes` bytes per element (4 = fp32,
 *     2 = bf16); every other tensor is fp32. Buffers are typed `float *` here as device handles; only
 *     the backend interprets their contents.
 *   - Parameter gradients ACCUMULATE (+=): they are zeroed by adamw_update after it consumes them
 *     (and by zero() once at start), so gradient accumulation over micro-batches needs no extra pass.
 *   - Activation gradients named `dinp` are OVERWRITTEN unless the comment says "accumulates".
 *   - Every kernel is deterministic: the same inputs and thread count give bit-identical outputs
 *     (reductions in a fixed order, no atomics whose order changes results).
 *   - Kernels do not fail; errors of asynchronous devices, and of a CPU kernel that could not get
 *     the workspace or the GEMM primitive it needs, surface at the next sync() (the kernel's outputs
 *     are then undefined).
 *   - The compute ops are the function pointers from `encoder_forward` to the end of the table, and
 *     nothing else is placed there: tests/kernels/test_backend_ops.c counts them and refuses a table
 *     with an op it has no case for, and runs every op of every compiled-in backend against a
 *     reference.
 *
 * Precision (the contract every backend implements; docs/backends.md, "Precision"). A backend
 * instance computes in ONE activation precision, chosen when it is created
 * (fm_backend_create_precision) among those its caps.precisions lists; be->precision names it and
 * ops->act_bytes is its element size.
 *   - fp32 (act_bytes 4): every tensor is fp32.
 *   - bf16 (act_bytes 2), mixed precision as torch.autocast uses it for matrix products:
 *       * bf16 are exactly the MATMUL INPUTS, the arguments marked "act" below: the activations an op
 *         writes for a matmul to read (the outputs of layernorm_forward, rmsnorm_forward,
 *         gelu_forward, swiglu_forward, attention_forward, attention_decode; attention_backward reads
 *         attention_forward's), and the weights matmul_forward/matmul_backward read, which are a bf16
 *         copy of the fp32 master parameters (made by to_bf16, refreshed by adamw_update in its pass).
 *       * fp32 is everything else: the master parameters, their gradients and the AdamW moments;
 *         matmul OUTPUTS (accumulated and stored in fp32: q|k|v, the MLP's pre-activation, the
 *         projections, the logits); the residual stream; every activation gradient (dout, dinp);
 *         biases and norm weights; statistics (mean, rstd, lse); softmax, cross-entropy and losses;
 *         the K/V cache; every reduction (norms, sums of squares, bias gradients). matmul_backward
 *         receives dout in fp32, rounds it to bf16 for its two products and sums dbias from the fp32
 *         dout.
 *       * Rounding fp32 -> bf16 is round-to-nearest-even (to_bf16's rule: NaN stays a NaN of the same
 *         sign, infinities stay, finite values round as IEEE 754 does, subnormals included, overflow
 *         to infinity); bf16 -> fp32 is exact. Products of bf16 inputs are exact in fp32 and are
 *         summed in fp32 (in the backend's order). No stochastic rounding: it pays where a value is
 *         ACCUMULATED in bf16 over many small updates (bf16 master weights or moments, where updates
 *         below half an ulp vanish under nearest rounding), which this contract rules out by keeping
 *         those fp32; every bf16 value here is rounded once from an fp32 value and used as is, where
 *         nearest rounding is the unbiased-enough and deterministic choice.
 *   - Checkpoints hold fp32 state only (masters and moments), so a run may change precision (and
 *     backend) when it resumes; the bf16 copy is re-made from the masters.
 */
#ifndef FM_KERNELS_H
#define FM_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

typedef struct fm_backend fm_backend;

/* Activation precisions, as bits of fm_backend_caps.precisions and values of fm_backend.precision.
 * FM_PRECISION_AUTO (0) is only an argument of fm_backend_create_precision: the backend's choice. */
enum { FM_PRECISION_AUTO = 0, FM_PRECISION_FP32 = 1u << 0, FM_PRECISION_BF16 = 1u << 1 };

/* What common code may ask about a backend instead of testing its name. */
typedef struct fm_backend_caps {
    int host_memory;      /* 1: alloc() returns ordinary host memory that the host may read and
                             write, and hand to MPI, without upload/download */
    int async;            /* 1: ops are queued on a device and complete only at sync(): timings and
                             host reads need a sync first; 0: every op has finished when it returns */
    unsigned precisions;  /* activation precisions the backend implements (FM_PRECISION_* bits);
                             fm_backend_create_precision refuses the others */
    int peak_from_matmul; /* 1: the MFU reference may be measured with this backend's own fp32 matmul
                             (a CPU has no single datasheet peak for a rank's cores); 0: it comes from
                             [runtime] peak_tflops (a GPU's datasheet peak) */
} fm_backend_caps;

typedef struct fm_kernel_ops {
    const char *name;     /* "cpu", "cuda": for messages and --version, never for decisions */
    int act_bytes;        /* bytes per element of the "act" arguments (4 fp32, 2 bf16): the table of
                             the instance's precision (a backend has one table per precision) */
    fm_backend_caps caps; /* see above */

    /* ---- life cycle and reports --------------------------------------------------------------- */
    /* Releases be->impl (streams, handles, scratch) and sets it to NULL; fm_backend_free calls it. */
    void (*destroy)(fm_backend *be);
    /* One line naming the device for reports and the start banner, e.g. "CPU, 2 OpenMP threads" or
     * "NVIDIA H100 80GB HBM3 (device 0, sm_90, 132 SMs)"; always NUL-terminated within n bytes. */
    void (*describe)(fm_backend *be, char *buf, size_t n);

    /* ---- memory -------------------------------------------------------------------------- */
    fm_status (*alloc)(fm_backend *be, void **ptr, size_t bytes); /* zero-initialised */
    void (*free)(fm_backend *be, void *ptr);
    fm_status (*upload)(fm_backend *be, void *dst_dev, const void *src_host, size_t bytes);
    fm_status (*download)(fm_backend *be, void *dst_host, const void *src_dev, size_t bytes);
    void (*zero)(fm_backend *be, void *ptr, size_t bytes);
    fm_status (*sync)(fm_backend *be);
    /* Host memory the device copies to and from at full speed (page-locked on a GPU, malloc on the
     * CPU), for staging buffers such as an asynchronous checkpoint's snapshot (ckpt/async.h). Not
     * zeroed. host_free(be, NULL) does nothing. */
    fm_status (*host_alloc)(fm_backend *be, void **ptr, size_t bytes);
    void (*host_free)(fm_backend *be, void *ptr);

    /* ---- embedding ----------------------------------------------------------------------- */
    /* out (B,T,C) = wte[tokens[b,t]] + wpe[t]; tokens (B,T) int32 in [0,V), wte (Vp,C), wpe (maxT,C) */
    void (*encoder_forward)(fm_backend *be, float *out, const int32_t *tokens, const float *wte,
                            const float *wpe, int B, int T, int C);
    /* dwte (Vp,C) accumulates, dwpe (maxT,C) accumulates; dout (B,T,C), tokens (B,T) */
    void (*encoder_backward)(fm_backend *be, float *dwte, float *dwpe, const float *dout,
                             const int32_t *tokens, int B, int T, int C);
    /* Token embedding without positions (Llama: RoPE rotates q and k inside the block instead).
     * out (B,T,C) = wte[tokens[b,t]]; tokens (B,T) int32 in [0,V), wte (Vp,C) */
    void (*embedding_forward)(fm_backend *be, float *out, const int32_t *tokens, const float *wte,
                              int B, int T, int C);
    /* dwte (Vp,C) accumulates the rows of dout (B,T,C) scattered by tokens (B,T) */
    void (*embedding_backward)(fm_backend *be, float *dwte, const float *dout,
                               const int32_t *tokens, int B, int T, int C);

    /* ---- LayerNorm (eps = 1e-5, biased variance, as torch.nn.LayerNorm) ---------------------- */
    /* out (N,C) act, mean (N), rstd (N) saved for backward; inp (N,C), weight (C), bias (C).
     * Statistics and the normalisation in fp32; only the stored output is rounded (bf16). */
    void (*layernorm_forward)(fm_backend *be, float *out, float *mean, float *rstd, const float *inp,
                              const float *weight, const float *bias, int N, int C);
    /* dinp (N,C) ACCUMULATES (it is the residual stream's gradient); dweight (C), dbias (C) accumulate;
     * dout (N,C), inp (N,C), weight (C), mean (N), rstd (N) */
    void (*layernorm_backward)(fm_backend *be, float *dinp, float *dweight, float *dbias,
                               const float *dout, const float *inp, const float *weight,
                               const float *mean, const float *rstd, int N, int C);

    /* ---- RMSNorm (Llama: torch's LlamaRMSNorm, in fp32) ------------------------------------- */
    /* out (N,C) act = inp * rstd * weight, rstd (N) = 1/sqrt(mean_c(inp^2) + eps) saved for
     * backward; inp (N,C), weight (C) */
    void (*rmsnorm_forward)(fm_backend *be, float *out, float *rstd, const float *inp,
                            const float *weight, int N, int C, float eps);
    /* dinp (N,C) ACCUMULATES (the residual stream's gradient); dweight (C) accumulates;
     * dout (N,C), inp (N,C), weight (C), rstd (N) from forward */
    void (*rmsnorm_backward)(fm_backend *be, float *dinp, float *dweight, const float *dout,
                             const float *inp, const float *weight, const float *rstd, int N,
                             int C);

    /* ---- residual ------------------------------------------------------------------------ */
    /* out (n) = a (n) + b (n); out may alias a. (Its backward is the identity: the model reads the
     * residual stream's gradient directly, so there is no residual_backward op.) */
    void (*residual_forward)(fm_backend *be, float *out, const float *a, const float *b, size_t n);

    /* ---- matmul with bias: out = inp @ weight^T + bias -------------------------------------- */
    /* out (N,OC) fp32; inp (N,C) act; weight (OC,C) act (bf16: the bf16 copy of the master);
     * bias (OC) fp32 or NULL, added to the fp32 accumulator. out does not overlap the inputs. */
    void (*matmul_forward)(fm_backend *be, float *out, const float *inp, const float *weight,
                           const float *bias, int N, int C, int OC);
    /* dinp (N,C) overwritten (skipped when NULL); dweight (OC,C) accumulates; dbias (OC) accumulates
     * (skipped when NULL); dout (N,OC); inp (N,C) act; weight (OC,C) act (as forward). dinp, dweight,
     * dbias and dout are fp32 (bf16: dout is rounded to bf16 for the two products; dbias sums the
     * fp32 dout) */
    void (*matmul_backward)(fm_backend *be, float *dinp, float *dweight, float *dbias,
                            const float *dout, const float *inp, const float *weight, int N, int C,
                            int OC);

    /* ---- GELU, tanh approximation --------------------------------------------------------- */
    /* out (n) act = gelu(inp (n)); out may alias inp only in fp32 */
    void (*gelu_forward)(fm_backend *be, float *out, const float *inp, size_t n);
    /* dinp (n) = gelu'(inp (n)) * dout (n); dinp may alias dout */
    void (*gelu_backward)(fm_backend *be, float *dinp, const float *inp, const float *dout,
                          size_t n);

    /* ---- SwiGLU (Llama's MLP gate: silu(gate) * up) ---------------------------------------- */
    /* out (N,F) act = silu(inp[:, 0:F]) * inp[:, F:2F]; inp (N,2F) holds [gate | up] per row (the
     * output of one fused (2F,C) matmul); silu(g) = g * sigmoid(g) */
    void (*swiglu_forward)(fm_backend *be, float *out, const float *inp, int N, int F);
    /* dinp (N,2F) = [dgate | dup] overwritten, from inp (N,2F) and dout (N,F); dinp may alias inp
     * (in place: each element pair is read before it is written) */
    void (*swiglu_backward)(fm_backend *be, float *dinp, const float *inp, const float *dout, int N,
                            int F);

    /* ---- rotary position embedding (RoPE, Hugging Face's rotate_half convention) -------------- */
    /* IN PLACE on the q and k heads of qkv (B,T,W) (the v heads are untouched): for the token at
     * absolute position p = pos0 + t and each pair (j, j + hs/2), j < hs/2, of every q and k head,
     *   (x_j, x_{j+hs/2}) := (x_j cos a - x_{j+hs/2} sin a, x_{j+hs/2} cos a + x_j sin a),
     *   a = p * inv_j (fp32 product), inv_j = 1 / theta^(2j/hs) (fp32, as Hugging Face computes it).
     * hs even. pos0: the position of each sequence's first row (0 in training; the cache length when
     * decoding). */
    void (*rope_forward)(fm_backend *be, float *qkv, int B, int T, int C, int NH, int NKV, int pos0,
                         float theta);
    /* IN PLACE on dqkv (B,T,W): the gradient with respect to the rotated q and k becomes the gradient
     * with respect to the unrotated ones (the rotation by -a); the v part is untouched. */
    void (*rope_backward)(fm_backend *be, float *dqkv, int B, int T, int C, int NH, int NKV,
                          int pos0, float theta);

    /* ---- causal self-attention, multi-head or grouped-query, scale 1/sqrt(hs) --------------- */
    /* qkv (B,T,W) laid out [q | k | v]: q has NH heads of hs (C columns), k and v NKV heads of hs
     * each; query head h attends with key/value head h / (NH/NKV). out (B,T,C) act, heads
     * concatenated (accumulated in fp32, rounded once when stored); lse (B,NH,T) the log-sum-exp of
     * each row of scaled scores, saved for backward. No (T,T) tensor is kept: backward recomputes
     * scores from qkv and lse. bf16 instances: q, k, v (and dout in backward) stay fp32 arguments,
     * but a backend may round them to bf16 inside the op for tensor cores, as torch's autocast
     * attention does (the CUDA backend: kernels/cuda/attention.cu; the CPU keeps them fp32);
     * tests/kernels/test_backend_ops.c states the tolerances of both. */
    void (*attention_forward)(fm_backend *be, float *out, float *lse, const float *qkv, int B,
                              int T, int C, int NH, int NKV);
    /* dqkv (B,T,W) overwritten (the dk, dv of a key/value head sum over its NH/NKV query heads);
     * dout (B,T,C); qkv (B,T,W); out (B,T,C) act and lse (B,NH,T) from forward */
    void (*attention_backward)(fm_backend *be, float *dqkv, const float *dout, const float *qkv,
                               const float *out, const float *lse, int B, int T, int C, int NH,
                               int NKV);
    /* Inference with a key/value cache: Tq new positions pos0..pos0+Tq-1 of each sequence.
     * qkv (B,Tq,W) the new positions' [q | k | v]; kcache, vcache (B,maxT,NKV*hs) hold k and v of
     * positions 0..pos0-1 from earlier calls. The op first copies the new k and v into rows
     * pos0..pos0+Tq-1 of the caches, then out (B,Tq,C) act = causal attention of query i (position
     * pos0+i) over cache rows 0..pos0+i, scale 1/sqrt(hs): the same numbers attention_forward gives
     * for those rows of a full sequence. 0 <= pos0, pos0 + Tq <= maxT; the caches do not overlap qkv
     * or out. Forward only (no lse). */
    void (*attention_decode)(fm_backend *be, float *out, float *kcache, float *vcache,
                             const float *qkv, int B, int Tq, int pos0, int maxT, int C, int NH,
                             int NKV);

    /* ---- fused softmax + cross-entropy over the vocabulary ------------------------------------ */
    /* losses (N) = -log softmax(logits[n, :V])[targets[n]]; lse (N) saved for backward.
     * logits (N,Vp): columns >= V are padding and receive no probability mass. targets (N) in [0,V). */
    void (*softmax_xent_forward)(fm_backend *be, float *losses, float *lse, const float *logits,
                                 const int32_t *targets, int N, int V, int Vp);
    /* IN PLACE: logits (N,Vp) becomes dlogits = (softmax - onehot(target)) * dloss, padding columns 0.
     * lse (N) from forward; dloss: d(total loss)/d(loss of one position), e.g. 1/(B*T*grad_accum). */
    void (*softmax_xent_backward)(fm_backend *be, float *logits, const float *lse,
                                  const int32_t *targets, float dloss, int N, int V, int Vp);
    /* Training's one-pass classifier: softmax_xent_forward and then softmax_xent_backward on each
     * row while it is at hand (one read of the logits less per step): losses (N) and lse (N) as the
     * forward writes them, and IN PLACE logits (N,Vp) := dlogits as the backward writes them, with
     * the same bits as those two calls (the same arithmetic). targets (N) in [0,V). */
    void (*softmax_xent_fused)(fm_backend *be, float *losses, float *lse, float *logits,
                               const int32_t *targets, float dloss, int N, int V, int Vp);

    /* ---- optimizer ------------------------------------------------------------------------ */
    /* AdamW on n contiguous parameters, then sets grads to 0:
     *   g = grads*grad_scale; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
     *   p -= lr * ( (m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps) + weight_decay * p )
     * params, grads, m, v: (n) fp32; t >= 1 is the step number used for bias correction.
     * params_bf16 (n) bf16 or NULL: when given, set to to_bf16 of the updated params in the same pass
     * (the bf16 copy the matmuls of a bf16 instance read). */
    void (*adamw_update)(fm_backend *be, float *params, void *params_bf16, float *grads, float *m,
                         float *v, size_t n, float lr, float beta1, float beta2, float eps,
                         float weight_decay, float grad_scale, int64_t t);
    /* *out = sum of grads[i]^2 over n elements, accumulated in double in a fixed order that does not
     * depend on the thread count. Result delivered on the host. */
    void (*sum_squares)(fm_backend *be, double *out, const float *grads, size_t n);

    /* ---- precision ------------------------------------------------------------------------ */
    /* dst (n) bf16 = src (n) fp32 rounded to nearest, ties to even (the rule of the contract above:
     * NaN stays a NaN of the same sign, +-inf stay, overflow gives +-inf, subnormals round as IEEE
     * 754). Every backend implements it, whatever its precisions. dst does not overlap src. */
    void (*to_bf16)(fm_backend *be, void *dst, const float *src, size_t n);
} fm_kernel_ops;

struct fm_backend {
    const fm_kernel_ops *ops;
    int threads;        /* CPU threads this backend uses (the rank's binding) */
    int device;         /* device ordinal, -1 on the CPU */
    void *impl;         /* backend-private state (workspaces, handles, streams) */
    unsigned precision; /* FM_PRECISION_FP32 or FM_PRECISION_BF16: this instance's activation
                           precision (ops is the table of that precision) */
};

/* ---- registry (kernels/registry.c): the only place that knows which backends are compiled in ---- */

/* Backends compiled into this binary: names 0..fm_backend_count()-1 ("cpu" first: the reference). */
int fm_backend_count(void);
const char *fm_backend_name(int i); /* NULL when out of range */

/* Non-zero when the named backend is compiled into this binary. */
int fm_backend_available(const char *name);

/* Devices of the named backend this process can use: 1 for "cpu"; for "cuda" the visible GPUs (0 when
 * none, or the backend is not compiled in). *why (may be NULL) receives a static text explaining a 0
 * (e.g. the driver's error: "CUDA driver version is insufficient for CUDA runtime version"), and NULL
 * when the count is positive. Never fails. */
int fm_backend_device_count(const char *name, const char **why);

/* Non-zero when the named backend computes on GPUs: placement then gives each rank one. */
int fm_backend_uses_gpus(const char *name);

/* What `[runtime] device = auto` means: the first compiled-in GPU backend with a usable device, else
 * "cpu". Never fails. */
const char *fm_backend_auto(void);

/* Creates the backend called `name` (one of fm_backend_name(i): "cpu", "cuda") computing in fp32.
 * `threads` > 0 is the number of CPU threads to use (OpenMP and the GEMM library share them, see
 * docs/performance.md); `device` is the GPU ordinal for "cuda".
 * Errors: unknown name, backend not compiled in, device initialisation failed. */
fm_status fm_backend_create(const char *name, int threads, int device, fm_backend **out);
/* The same with an activation precision: FM_PRECISION_FP32, FM_PRECISION_BF16, or FM_PRECISION_AUTO
 * (the backend's choice: the fastest precision it implements natively on this device, e.g. bf16
 * on a CPU whose GEMM library has bf16 dot-product kernels for it, fp32 otherwise). The created
 * instance's be->precision says which. Errors as above, and FM_ERR_CONFIG for a precision the
 * backend does not implement (in this build or on this device), saying what to do. */
fm_status fm_backend_create_precision(const char *name, int threads, int device, unsigned precision,
                                      fm_backend **out);
/* Calls ops->destroy, frees the handle and sets *be to NULL; safe on NULL. */
void fm_backend_free(fm_backend **be);

/* One line describing the BLAS in use (vendor, threading model), for --version and the start banner. */
const char *fm_backend_blas_info(void);
/* One line naming the CPU backend's GEMM library: "oneDNN 2.6.3 (...)" when built with oneDNN, or
 * the CBLAS fallback; for --version, the start banner and benchmarks. */
const char *fm_backend_gemm_info(void);
/* "fp32", "bf16", "auto" (FM_PRECISION_AUTO), or "?" for anything else. */
const char *fm_precision_name(unsigned precision);

#endif /* FM_KERNELS_H */

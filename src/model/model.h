/* model.h — the GPT-2 model: parameter layout, forward, backward, initialisation, memory accounting.
 *
 * What it is: GPT-2 exactly as Hugging Face defines it (token + learned position embeddings,
 * pre-LayerNorm blocks, causal multi-head self-attention with a fused QKV projection, GELU with the
 * tanh approximation, MLP of 4*C, final LayerNorm, LM head tied to the token embedding, LayerNorm
 * eps 1e-5). All compute goes through a backend's kernel table (kernels/kernels.h); this module never
 * dereferences tensor memory, it only carves views out of backend allocations and schedules kernels.
 * What it is not: no optimizer (src/train/optimizer.h), no learning-rate schedule, no communication, no
 * KV-cache sampling.
 *
 * Legend: B micro-batch, T sequence length (T <= max_seq_len), C d_model, NH heads, L layers,
 *         V real vocabulary, Vp = V rounded up to a multiple of 128 (padded vocabulary).
 *
 * Parameter layout (floats; parameters, gradients and the optimizer's m and v all use it, each ONE
 * contiguous backend allocation). Layer-major, so every layer is one contiguous range:
 *     head range:  wte (Vp,C) | wpe (maxT,C) | ln_f.weight (C) | ln_f.bias (C)
 *     layer l:     ln_1.weight (C) | ln_1.bias (C) | attn.c_attn.weight (3C,C) | attn.c_attn.bias (3C)
 *                  | attn.c_proj.weight (C,C) | attn.c_proj.bias (C) | ln_2.weight (C) | ln_2.bias (C)
 *                  | mlp.c_fc.weight (4C,C) | mlp.c_fc.bias (4C) | mlp.c_proj.weight (C,4C)
 *                  | mlp.c_proj.bias (C)
 * Matrix weights are stored (out, in), i.e. the TRANSPOSE of Hugging Face's Conv1D weight (in, out);
 * the tensor table says which tensors are transposed relative to HF. Rows V..Vp-1 of wte are zero
 * after init, receive zero gradient (padded logits get no probability mass and never enter the loss)
 * and therefore stay zero under AdamW.
 *
 * Tensor names (stable, used by checkpoints and tests) are Hugging Face's names without the
 * "transformer." prefix: "wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias",
 * "h.<l>.ln_1.weight", "h.<l>.attn.c_attn.weight", "h.<l>.mlp.c_proj.bias", ...
 *
 * Memory: see fm_model_memory_estimate and docs/model.md for the formula.
 *
 * Threading: a model is used by one thread at a time (the kernels parallelise internally).
 */
#ifndef FM_MODEL_H
#define FM_MODEL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "kernels.h"
#include "core/status.h"

/* The architecture hyper-parameters. */
typedef struct fm_model_shape {
    int n_layer;     /* L  >= 1 */
    int n_head;      /* NH >= 1, divides d_model */
    int d_model;     /* C  >= 1 */
    int max_seq_len; /* maxT >= 1: rows of wpe, the largest T forward accepts */
    int vocab_size;  /* V  >= 1: real vocabulary */
} fm_model_shape;

/* Padded vocabulary: V rounded up to a multiple of 128. */
int fm_model_padded_vocab(int vocab_size);

/* Checks a shape (positive sizes, n_head divides d_model, sizes that fit the index types).
 * Errors are FM_ERR_CONFIG with the offending value. */
fm_status fm_model_shape_check(const fm_model_shape *shape);

/* One named tensor of the parameter layout. */
typedef struct fm_model_tensor_info {
    char name[64];     /* "h.3.attn.c_attn.weight" */
    char hf_name[80];  /* "transformer.h.3.attn.c_attn.weight" (Hugging Face GPT2LMHeadModel) */
    int ndim;          /* 1 or 2 */
    int64_t shape[2];  /* our layout: (rows, cols) or (n, 1); wte is (Vp, C) */
    int64_t hf_shape[2]; /* shape in Hugging Face: Conv1D weights (in, out); wte (V, C) */
    int hf_transposed; /* 1 when HF stores the transpose of our (out, in) matrix (Conv1D weights) */
    size_t offset;     /* first element in the flat layout (floats) */
    size_t numel;      /* elements (shape[0] * shape[1]) */
    int decay;         /* 1: AdamW weight decay applies (embeddings, matrices); 0: LayerNorm, biases */
    int layer;         /* block index, or -1 for the head range (wte, wpe, ln_f) */
} fm_model_tensor_info;

/* Byte breakdown of a model instance (or of a shape, before allocating). */
typedef struct fm_model_memory_info {
    size_t n_params;        /* parameters of the real model (vocabulary V, as GPT-2 counts them) */
    size_t n_params_padded; /* floats in the layout (vocabulary Vp) */
    size_t param_bytes;     /* 4 * n_params_padded */
    size_t grad_bytes;      /* 4 * n_params_padded */
    size_t optim_bytes;     /* 8 * n_params_padded (AdamW m and v, held by the optimizer) */
    size_t act_bytes;       /* activations kept for backward, excluding logits */
    size_t logits_bytes;    /* logits (B,T,Vp), overwritten in place by dlogits */
    size_t scratch_bytes;   /* reused buffers for activation gradients and projection outputs */
    size_t total_bytes;     /* sum of the six above */
} fm_model_memory_info;

/* The byte breakdown for `shape` at micro-batch `max_batch` and sequence length max_seq_len, for a
 * backend whose activations take `act_elem_bytes` bytes per element (ops->act_bytes; 4 on the CPU).
 * Pure arithmetic, the formula of docs/model.md; fm_model_memory() of a created model returns the
 * same figures. */
fm_status fm_model_memory_estimate(const fm_model_shape *shape, int max_batch, int act_elem_bytes,
                                   fm_model_memory_info *out);

typedef struct fm_model fm_model;

/* Creates a model for `shape` on backend `be` (not owned; must outlive the model), able to run
 * forward/backward on up to `max_batch` sequences of up to shape->max_seq_len tokens. Allocates the
 * parameters, the gradients (zeroed) and the activation arena. Parameters are zero until
 * fm_model_init_weights or fm_model_set_params. Errors: bad shape or max_batch (FM_ERR_CONFIG),
 * backend allocation failure (its status, with the byte count). */
fm_status fm_model_create(const fm_model_shape *shape, fm_backend *be, int max_batch,
                          fm_model **out);
void fm_model_free(fm_model **m);

const fm_model_shape *fm_model_get_shape(const fm_model *m);
int fm_model_get_padded_vocab(const fm_model *m);
int fm_model_get_max_batch(const fm_model *m);
fm_backend *fm_model_get_backend(const fm_model *m);

/* The breakdown of this instance (optim_bytes is what an fm_optimizer for it allocates). */
void fm_model_memory(const fm_model *m, fm_model_memory_info *out);

/* Writes the breakdown as a few human-readable lines ("parameters: 124,439,808 (474.7 MiB) ...").
 * The trainer calls it on rank 0 at start. */
void fm_model_memory_print(const fm_model_memory_info *mem, FILE *out);

/* ---- initialisation ----------------------------------------------------------------------------- */

/* GPT-2 initialisation, reproducible from `seed` on every machine: matrices and embeddings
 * N(0, 0.02); attn.c_proj.weight and mlp.c_proj.weight N(0, 0.02/sqrt(2*L)); LayerNorm weights 1;
 * biases 0; wte rows >= V zero. Element i of the flat layout draws from a counter-based generator
 * (splitmix64 of seed and i, Box-Muller), so the values do not depend on thread count or order.
 * Generated on the host tensor by tensor and uploaded. Errors: host allocation, upload. */
fm_status fm_model_init_weights(fm_model *m, uint64_t seed);

/* ---- the parameter layout ---------------------------------------------------------------------- */

size_t fm_model_num_params(const fm_model *m); /* floats in the layout (= n_params_padded) */
int fm_model_num_tensors(const fm_model *m);   /* 4 + 12*L */
const fm_model_tensor_info *fm_model_tensor(const fm_model *m, int i); /* NULL when out of range */
const fm_model_tensor_info *fm_model_find_tensor(const fm_model *m, const char *name); /* or NULL */

/* The contiguous range of `layer` (0..L-1), or of the head range [wte, wpe, ln_f] for layer == -1,
 * in floats of the layout. These are the ranges the backward callback reports. */
void fm_model_layer_range(const fm_model *m, int layer, size_t *offset, size_t *count);

/* Device pointers (backend memory; not to be dereferenced on the host unless the backend is "cpu")
 * to the parameters and gradients, fm_model_num_params floats each. Owned by the model. */
float *fm_model_params(fm_model *m);
float *fm_model_grads(fm_model *m);

/* Host copies of all parameters / gradients: `host` holds fm_model_num_params floats. */
fm_status fm_model_get_params(fm_model *m, float *host);
fm_status fm_model_set_params(fm_model *m, const float *host);
fm_status fm_model_get_grads(fm_model *m, float *host);

/* Sets all gradients to zero (the optimizer's update also zeroes them after use). */
void fm_model_zero_grads(fm_model *m);

/* ---- forward / backward ------------------------------------------------------------------------ */

/* Runs the model on `tokens` (host, int32 (B,T), values in [0,V)), 1 <= B <= max_batch,
 * 1 <= T <= max_seq_len. With `targets` (host int32 (B,T) in [0,V)) it also computes the per-position
 * cross-entropy and stores in *mean_loss (may be NULL) the mean over all B*T positions (summed in
 * double in a fixed order), and keeps what fm_model_backward needs. With targets == NULL only the
 * logits are computed (inference) and *mean_loss, if given, is set to NaN.
 * Errors: bad B/T, a token or target out of range (FM_ERR_INPUT naming the position), upload failure. */
fm_status fm_model_forward(fm_model *m, const int32_t *tokens, const int32_t *targets, int B, int T,
                           float *mean_loss);

/* Copies the logits (Vp floats; columns >= V are padding, not probabilities) of sequence b, position
 * t of the last forward into `host`. Valid between a forward and the next backward (backward turns
 * the logits into their gradient in place). Errors: b or t outside the last forward's B, T; no
 * forward has run; logits already consumed by backward. */
fm_status fm_model_logits(fm_model *m, int b, int t, float *host);

/* Called by fm_model_backward as soon as a contiguous range of gradients [offset, offset+count)
 * (floats of the layout) holds its final value for this backward pass: each layer's range right after
 * that layer's backward (layers L-1 down to 0), then the head range [wte, wpe, ln_f] last. The backend
 * has been synchronised before the call. A non-NULL status stops the backward pass and is returned. */
typedef fm_status (*fm_model_grad_ready_fn)(void *ctx, size_t offset, size_t count);

/* Back-propagates the loss of the last forward (which must have had targets) and ACCUMULATES (+=)
 * the parameter gradients. `loss_scale` is the weight of this micro-batch's mean loss in the objective
 * being differentiated: 1 for one micro-batch, 1/grad_accum when accumulating (each position then
 * gets d/dloss = loss_scale/(B*T)). `ready` may be NULL. The logits are overwritten by dlogits.
 * Errors: no forward with targets since the last backward; an error returned by `ready`. */
fm_status fm_model_backward(fm_model *m, float loss_scale, fm_model_grad_ready_fn ready, void *ctx);

#endif /* FM_MODEL_H */

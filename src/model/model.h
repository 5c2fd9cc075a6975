/* model.h — the model: parameter layout, forward, backward, decoding with a KV cache,
 * initialisation, memory accounting — for every model family (family.h), GPT-2 the first.
 *
 * What it is: the model-independent core. A model is created for a shape whose `arch` names its
 * family ("gpt2": GPT-2 exactly as Hugging Face defines it, see gpt2.c; "llama": LlamaForCausalLM,
 * see llama.c; docs/model.md); the family
 * declares its tensors, activations and per-block arithmetic, the core builds the tensor table and
 * the flat buffers, initialises, validates inputs, runs the layer loop and the loss, reports
 * gradients as they become final and accounts for every byte. All compute goes through a backend's
 * kernel table (kernels/kernels.h); this module never dereferences tensor memory, it only carves
 * views out of backend allocations and schedules kernels.
 * Three kinds of model (fm_model_options.mode):
 *   - training (FM_MODEL_TRAIN, what fm_model_create makes): parameters, gradients and the activation
 *     arena that backward needs; fm_model_forward / fm_model_backward / fm_model_logits.
 *   - forward-only (FM_MODEL_EVAL): parameters and what one forward with a loss needs (the layer
 *     activations of two blocks at a time, the logits, the losses), NO gradients; fm_model_forward
 *     / fm_model_sequence_losses / fm_model_logits, no backward. The same kernels on the same rows
 *     as a training model's forward, so the same losses bit for bit (tested). This is what
 *     `fmtrain eval` runs.
 *   - decode (FM_MODEL_DECODE): parameters, per-layer K/V caches and a small arena, NO gradients;
 *     fm_model_decode appends tokens (a prompt in one call, then one token at a time) and returns
 *     the logits of the last position. Same family forward as training, so the same numbers up to
 *     float rounding (tested). This is what `fmtrain sample` runs (sampler.h).
 * What it is not: no optimizer (src/train/optimizer.h), no learning-rate schedule, no communication,
 * no sampling policy (sampler.h).
 *
 * Legend: B micro-batch, T sequence length (T <= max_seq_len), C d_model, NH heads, L layers,
 *         V real vocabulary, Vp = V rounded up to a multiple of 128 (padded vocabulary).
 *
 * Parameter layout (floats; parameters, gradients and the optimizer's m and v all use it, each ONE
 * contiguous backend allocation). Layer-major: the head range (embedding and head tensors), then
 * every layer as one contiguous range. GPT-2's:
 *     head range:  wte (Vp,C) | wpe (maxT,C) | ln_f.weight (C) | ln_f.bias (C)
 *     layer l:     ln_1.weight (C) | ln_1.bias (C) | attn.c_attn.weight (3C,C) | attn.c_attn.bias (3C)
 *                  | attn.c_proj.weight (C,C) | attn.c_proj.bias (C) | ln_2.weight (C) | ln_2.bias (C)
 *                  | mlp.c_fc.weight (4C,C) | mlp.c_fc.bias (4C) | mlp.c_proj.weight (C,4C)
 *                  | mlp.c_proj.bias (C)
 * Matrix weights are stored (out, in), i.e. the TRANSPOSE of Hugging Face's Conv1D weight (in, out);
 * the tensor table says which tensors are transposed relative to HF. Rows V..Vp-1 of a vocabulary
 * matrix (GPT-2: wte) are zero after init, receive zero gradient (padded logits get no probability
 * mass and never enter the loss) and therefore stay zero under AdamW.
 *
 * Tensor names (stable, used by checkpoints and tests) are the family's; GPT-2's are Hugging Face's
 * without the "transformer." prefix: "wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias",
 * "h.<l>.ln_1.weight", "h.<l>.attn.c_attn.weight", "h.<l>.mlp.c_proj.bias", ...
 *
 * Precision: the backend's (kernels.h, "Precision"). With bf16 activations (ops->act_bytes 2) the
 * model keeps, beside the fp32 parameters, a bf16 copy of them that its matmuls read (refreshed by the
 * optimizer's update, by fm_model_set_params / fm_model_init_weights, and before the next forward or
 * decode after fm_model_params handed out a writable pointer), and stores the matmul inputs its
 * family declares (fm_buffer_spec.fp32 == 0) in bf16; logits, losses, the residual stream, gradients
 * and the K/V caches are fp32 in every precision. Parameters, gradients and checkpoints are the same
 * in both precisions.
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

#define FM_MODEL_ARCH_MAX 16 /* bytes of fm_model_shape.arch, NUL included */

/* The architecture hyper-parameters. The fields after `arch` are 0 for "the family's default"
 * (so a shape that names only the sizes is complete); a created model's shape (fm_model_get_shape) has
 * them resolved (fm_model_shape_resolve). */
typedef struct fm_model_shape {
    int n_layer;     /* L  >= 1 */
    int n_head;      /* NH >= 1, divides d_model */
    int d_model;     /* C  >= 1 */
    int max_seq_len; /* maxT >= 1: the longest sequence (GPT-2: rows of wpe), the K/V cache length */
    int vocab_size;  /* V  >= 1: real vocabulary */
    char arch[FM_MODEL_ARCH_MAX]; /* the model family: "gpt2", "llama" (family.h's table, [model] arch) */
    int n_kv_head;        /* NKV: key/value heads, dividing NH (grouped-query attention); 0: NH.
                             GPT-2: NH only */
    int ffn_dim;          /* F: the MLP's hidden size; 0: the family's rule (GPT-2 4C, which it
                             requires; Llama 256*ceil(floor(8C/3)/256)) */
    double rope_theta;    /* RoPE base (Llama); 0: FM_MODEL_ROPE_THETA_DEFAULT. GPT-2 has no RoPE:
                             it accepts 0 or the default and resolves it to 0 */
    double norm_eps;      /* RMSNorm epsilon (Llama); 0: FM_MODEL_NORM_EPS_DEFAULT. GPT-2's
                             LayerNorm eps is fixed at that default */
    int tie_embeddings;   /* FM_TIE_DEFAULT (0: the family's: GPT-2 tied, which it requires; Llama
                             untied), FM_TIE_YES (the LM head is the token embedding), FM_TIE_NO */
} fm_model_shape;

#define FM_MODEL_ROPE_THETA_DEFAULT 500000.0 /* Llama 3 */
#define FM_MODEL_NORM_EPS_DEFAULT 1e-5
enum { FM_TIE_DEFAULT = 0, FM_TIE_YES = 1, FM_TIE_NO = 2 };

/* Padded vocabulary: V rounded up to a multiple of 128. */
int fm_model_padded_vocab(int vocab_size);

/* Checks a shape: a known family (an unknown or empty arch is refused, naming the known ones),
 * positive sizes, n_head divides d_model, n_kv_head (0 or) dividing n_head, sizes that fit the index
 * types, and the family's own rules (e.g. GPT-2 takes only its own n_kv_head, ffn_dim, eps and tied
 * head; Llama an even head size). Errors are FM_ERR_CONFIG with the offending value. */
fm_status fm_model_shape_check(const fm_model_shape *shape);

/* *out = *shape checked (fm_model_shape_check) with every "0: default" field replaced by the value
 * the family uses: n_kv_head, ffn_dim, rope_theta (0 for a family without RoPE), norm_eps,
 * tie_embeddings (FM_TIE_YES or FM_TIE_NO). Resolving a resolved shape changes nothing. */
fm_status fm_model_shape_resolve(const fm_model_shape *shape, fm_model_shape *out);

/* Model FLOPs per trained token (forward + backward) at sequence length T: 6 per element of every
 * weight a token's row is multiplied with (the real vocabulary's rows of the LM head included; the
 * embedding gathers, norms, biases and element-wise ops not) plus attention's score and value
 * products, 6*L*NH*hs*T (12 L C T halved: causal). The MFU's numerator (train/metrics). The shape
 * must pass fm_model_shape_check; returns 0 otherwise. */
double fm_model_flops_per_token(const fm_model_shape *shape, int T);

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
    int layer;         /* block index, or -1 for the head range (GPT-2: wte, wpe, ln_f) */
} fm_model_tensor_info;

/* What a model is created for. */
typedef enum fm_model_mode {
    FM_MODEL_TRAIN = 0, /* forward with loss and backward: gradients, activations kept for backward */
    FM_MODEL_DECODE,    /* fm_model_decode only: K/V caches, no gradients, no kept activations */
    FM_MODEL_EVAL       /* fm_model_forward (with a loss) only: no gradients, no K/V caches, the
                           activations of two blocks at a time (block l uses set l % 2) */
} fm_model_mode;

typedef struct fm_model_options {
    fm_model_mode mode;
    int max_batch; /* >= 1: sequences per call (training: the micro-batch) */
    /* Memory the caller provides instead of the model allocating it, each NULL (the model
     * allocates) or zeroed, 64-byte aligned host memory of the size fm_model_memory_estimate_opts
     * gives, owned by the
     * caller and kept until fm_model_free; only on a backend whose memory is host memory
     * (caps.host_memory; FM_ERR_INTERNAL otherwise). The trainer puts them in node-shared memory
     * ([runtime] shared_memory, dist/comm.h): then other processes read and write them too, and
     * the caller orders those accesses. */
    float *params;     /* param_bytes: the fp32 masters */
    void *params_bf16; /* param_copy_bytes: the bf16 weight copy (bf16 activations only) */
    float *grads;      /* grad_bytes (training models only) */
} fm_model_options;

/* Byte breakdown of a model instance (or of a shape, before allocating). */
typedef struct fm_model_memory_info {
    size_t n_params;        /* parameters of the real model (vocabulary V, as GPT-2 counts them) */
    size_t n_params_padded; /* floats in the layout (vocabulary Vp) */
    size_t param_bytes;     /* 4 * n_params_padded */
    size_t param_copy_bytes; /* bf16 activations: 2 * n_params_padded (the bf16 weight copy the
                                matmuls read); 0 in fp32 */
    size_t grad_bytes;      /* 4 * n_params_padded (0 for a decode model) */
    size_t optim_bytes;     /* 8 * n_params_padded (AdamW m and v, held by the optimizer; 0 for a
                               decode model, which cannot be trained) */
    size_t act_bytes;       /* activations (training: kept for backward), excluding logits */
    size_t logits_bytes;    /* logits (training (B,T,Vp), overwritten in place by dlogits; decode
                               (B,Vp)) */
    size_t scratch_bytes;   /* reused buffers for activation gradients and projection outputs */
    size_t kv_bytes;        /* K and V caches (decode models; 0 for a training model) */
    size_t total_bytes;     /* sum of the eight above */
} fm_model_memory_info;

/* The byte breakdown for `shape` created with `opts`, on a backend whose matmul-input activations
 * take `act_elem_bytes` bytes per element (ops->act_bytes: 4 fp32, 2 bf16). Pure arithmetic, the
 * formula of docs/model.md; fm_model_memory() of a created model returns the same figures.
 * Errors: bad shape (fm_model_shape_check), mode, max_batch or element size. */
fm_status fm_model_memory_estimate_opts(const fm_model_shape *shape, const fm_model_options *opts,
                                        int act_elem_bytes, fm_model_memory_info *out);
/* The same for a training model of micro-batch `max_batch` (and sequence length max_seq_len). */
fm_status fm_model_memory_estimate(const fm_model_shape *shape, int max_batch, int act_elem_bytes,
                                   fm_model_memory_info *out);

/* ---- ZeRO: the layout cut into per-rank shards, and the model state per rank ([train] zero) ---- */

/* The shard plan of `shape`'s parameter layout over `nranks` ranks: bounds[0..nranks] (nranks+1
 * values) with bounds[0] = 0 and bounds[nranks] = n_params_padded; rank r owns the floats
 * [bounds[r], bounds[r+1]) of the layout (under [train] zero >= 1: its AdamW state, its part of the
 * update, of the gradient norm and of the checkpoint). Rule: the split point
 * floor(P*r/nranks) moved to the nearest row boundary of the tensor it falls in (a matrix
 * (rows, cols) is cut between rows, a vector anywhere; ties go up), never before bounds[r-1]: so every
 * rank's part of every tensor is whole rows, which is what the checkpoint file layer writes
 * (ckpt/checkpoint_file.h). It depends on the shape and nranks only (the same on every rank and run);
 * a shard is empty only when there are more ranks than rows. Errors: a bad shape, nranks < 1. */
fm_status fm_model_shard_bounds(const fm_model_shape *shape, int nranks, size_t *bounds);

/* The model state one rank holds under [train] zero = `stage` on `nranks` ranks, in bytes (P =
 * n_params_padded). Activations are not included: they are the same in every stage
 * (fm_model_memory_estimate). */
typedef struct fm_model_zero_bytes {
    int stage, nranks;
    size_t params; /* 4 P in every stage: the forward reads the whole fp32 weights (the updated
                      shards are all-gathered after each step) */
    size_t grads;  /* 4 P in every stage: the backward accumulates into the model's one gradient
                      buffer; stage 2 reduce-scatters it, but the buffer itself stays whole */
    size_t optim;  /* AdamW m and v: 8 P in stage 0; 8 x the largest shard (about 8 P / nranks) in
                      stages 1 and 2 */
    size_t comm;   /* communication buffers counted here: `comm_bytes` on several ranks (the
                      receive scratch of the fixed-order gradient reduction, dist/comm.h), else 0 */
    size_t total;  /* the sum */
} fm_model_zero_bytes;

/* Fills *out for `stage` (0, 1, 2) on `nranks` ranks (shards from fm_model_shard_bounds). Pure
 * arithmetic: what --dry-run and the start banner print. Errors: bad shape, stage or nranks. */
fm_status fm_model_zero_memory(const fm_model_shape *shape, int stage, int nranks,
                               size_t comm_bytes, fm_model_zero_bytes *out);

typedef struct fm_model fm_model;

/* Creates a model of `shape`'s family on backend `be` (not owned; must outlive the model) as `opts`
 * asks, for up to opts->max_batch sequences of up to shape->max_seq_len tokens. Allocates the
 * parameters and one arena (activations, logits, scratch, and for a decode model the K/V caches);
 * a training model also allocates the gradients (zeroed). Parameters are zero until
 * fm_model_init_weights or fm_model_set_params. Errors: bad shape, mode or max_batch
 * (FM_ERR_CONFIG), backend allocation failure (its status, with the byte count). */
fm_status fm_model_create_opts(const fm_model_shape *shape, fm_backend *be,
                               const fm_model_options *opts, fm_model **out);
/* A training model for micro-batch `max_batch`: fm_model_create_opts with FM_MODEL_TRAIN. */
fm_status fm_model_create(const fm_model_shape *shape, fm_backend *be, int max_batch,
                          fm_model **out);
void fm_model_free(fm_model **m);

const fm_model_shape *fm_model_get_shape(const fm_model *m); /* resolved (fm_model_shape_resolve) */
/* The name of the model's family ("gpt2", "llama"): what a checkpoint records as /model arch. */
const char *fm_model_arch(const fm_model *m);
fm_model_mode fm_model_get_mode(const fm_model *m);
int fm_model_get_padded_vocab(const fm_model *m);
int fm_model_get_max_batch(const fm_model *m);
fm_backend *fm_model_get_backend(const fm_model *m);

/* The breakdown of this instance (optim_bytes is what an fm_optimizer for it allocates). */
void fm_model_memory(const fm_model *m, fm_model_memory_info *out);

/* Writes the breakdown as a few human-readable lines ("parameters: 124,439,808 (474.7 MiB) ...";
 * the K/V caches only when there are any). The trainer calls it on rank 0 at start. */
void fm_model_memory_print(const fm_model_memory_info *mem, FILE *out);

/* ---- initialisation ----------------------------------------------------------------------------- */

/* Initialises every tensor by its rule in the family's layout (family.h: zero, one, or normal with a
 * standard deviation; padding rows of vocabulary matrices zero), reproducibly from `seed` on every
 * machine. GPT-2: matrices and embeddings N(0, 0.02); attn.c_proj.weight and mlp.c_proj.weight
 * N(0, 0.02/sqrt(2*L)); LayerNorm weights 1; biases 0; wte rows >= V zero. Element i of the flat
 * layout is fm_rng_normal_at(key of the seed, i) (core/rng.h: counter-based), so the values depend
 * only on the seed and the layout — not on thread count, order of generation or the model's mode.
 * Generated on the host tensor by tensor and uploaded. Errors: host allocation, upload. */
fm_status fm_model_init_weights(fm_model *m, uint64_t seed);

/* ---- the parameter layout ---------------------------------------------------------------------- */

size_t fm_model_num_params(const fm_model *m); /* floats in the layout (= n_params_padded) */
int fm_model_num_tensors(const fm_model *m);   /* head tensors + L * layer tensors (GPT-2 4 + 12*L) */
const fm_model_tensor_info *fm_model_tensor(const fm_model *m, int i); /* NULL when out of range */
const fm_model_tensor_info *fm_model_find_tensor(const fm_model *m, const char *name); /* or NULL */

/* The contiguous range of `layer` (0..L-1), or of the head range (GPT-2: wte, wpe, ln_f) for
 * layer == -1, in floats of the layout. These are the ranges the backward callback reports. */
void fm_model_layer_range(const fm_model *m, int layer, size_t *offset, size_t *count);

/* Device pointers (backend memory: dereference on the host only where the backend's memory is host
 * memory) to the parameters and gradients, fm_model_num_params floats each. Owned by the model.
 * A decode model has no gradients: fm_model_grads returns NULL. The parameters are writable: with
 * bf16 activations the model therefore re-makes its bf16 weight copy (one to_bf16 pass) before the
 * next forward or decode after each call of fm_model_params. */
float *fm_model_params(fm_model *m);
float *fm_model_grads(fm_model *m);

/* For an update that writes the parameters AND their bf16 copy consistently (the optimizer's
 * adamw_update, which rounds every parameter it writes into the copy): the parameters, as
 * fm_model_params, and in *params_bf16 the bf16 copy (fm_model_num_params bf16 values in the layout;
 * NULL with fp32 activations). Unlike fm_model_params it does not schedule a re-make of the copy: a
 * caller that writes a parameter must write its copy too. */
float *fm_model_params_for_update(fm_model *m, void **params_bf16);

/* Host copies of all parameters / gradients: `host` holds fm_model_num_params floats.
 * fm_model_get_grads of a decode model is an error (FM_ERR_INTERNAL). */
fm_status fm_model_get_params(fm_model *m, float *host);
fm_status fm_model_set_params(fm_model *m, const float *host);
fm_status fm_model_get_grads(fm_model *m, float *host);

/* Sets all gradients to zero (the optimizer's update also zeroes them after use); nothing for a
 * decode model. */
void fm_model_zero_grads(fm_model *m);

/* ---- forward / backward (training models; forward also forward-only models) ---------------------- */

/* Runs the model on `tokens` (host, int32 (B,T), values in [0,V)), 1 <= B <= max_batch,
 * 1 <= T <= max_seq_len. With `targets` (host int32 (B,T) in [0,V)) it also computes the per-position
 * cross-entropy and stores in *mean_loss (may be NULL) the mean over all B*T positions (summed in
 * double in a fixed order), and keeps what fm_model_backward needs. With targets == NULL only the
 * logits are computed (inference) and *mean_loss, if given, is set to NaN.
 * Errors: a decode model, bad B/T (FM_ERR_INTERNAL), a token or target out of range (FM_ERR_INPUT
 * naming the position), upload failure. */
fm_status fm_model_forward(fm_model *m, const int32_t *tokens, const int32_t *targets, int B, int T,
                           float *mean_loss);

/* The mean loss of each sequence of the last forward with targets: out[b] (b < B) = the mean of its
 * T per-position losses, summed in double in position order. The losses of the same tokens and
 * targets do not depend on the other sequences of the call (each row is computed on its own), which
 * is what lets an evaluation split its windows over any number of ranks. Valid until the next
 * forward. Errors: no forward with targets has run (FM_ERR_INTERNAL). */
fm_status fm_model_sequence_losses(const fm_model *m, double *out);

/* Copies the logits (Vp floats; columns >= V are padding, not probabilities) of sequence b, position
 * t of the last forward into `host`. Valid between a forward and the next backward (backward turns
 * the logits into their gradient in place). Errors: b or t outside the last forward's B, T; no
 * forward has run; logits already consumed by backward. (Logits are fp32 in every precision.) */
fm_status fm_model_logits(fm_model *m, int b, int t, float *host);

/* The one-pass classifier of training: with loss_scale > 0, every later forward with targets on this
 * training model also turns the logits into their gradient in the same pass over them (the backend's
 * softmax_xent_fused: one read of the (B*T, Vp) logits less per step), for a backward called with
 * exactly this loss_scale, which then starts from those dlogits; fm_model_logits fails after such a
 * forward (the logits are gone). 0 turns it off (the default): forward keeps the logits, backward
 * computes dlogits. Losses, gradients and everything after are the same bits either way (the fused
 * op's contract, kernels.h). Errors: not a training model, loss_scale not finite or < 0
 * (FM_ERR_INTERNAL). */
fm_status fm_model_set_fused_loss_scale(fm_model *m, float loss_scale);

/* Called by fm_model_backward as soon as a contiguous range of gradients [offset, offset+count)
 * (floats of the layout) holds its final value for this backward pass: each layer's range right after
 * that layer's backward (layers L-1 down to 0), then the head range last (GPT-2: wte, wpe, ln_f).
 * The backend has been synchronised before the call. A non-NULL status stops the backward pass and
 * is returned. */
typedef fm_status (*fm_model_grad_ready_fn)(void *ctx, size_t offset, size_t count);

/* Back-propagates the loss of the last forward (which must have had targets; a training model) and
 * ACCUMULATES (+=) the parameter gradients. `loss_scale` is the weight of this micro-batch's mean loss in the objective
 * being differentiated: 1 for one micro-batch, 1/grad_accum when accumulating (each position then
 * gets d/dloss = loss_scale/(B*T)). `ready` may be NULL. The logits are overwritten by dlogits (or
 * already were, by a fused forward: fm_model_set_fused_loss_scale).
 * Errors: a model that is not a training model, no forward with targets since the last backward,
 * a loss_scale other than the fused forward's (FM_ERR_INTERNAL); an error returned by `ready`. */
fm_status fm_model_backward(fm_model *m, float loss_scale, fm_model_grad_ready_fn ready, void *ctx);

/* ---- decoding with a KV cache (decode models) --------------------------------------------------- */

/* Empties the K/V caches: the next fm_model_decode starts at position 0 (and may use another B). */
void fm_model_decode_reset(fm_model *m);

/* Tokens per sequence in the caches: the position the next token takes. */
int fm_model_decode_position(const fm_model *m);

/* Appends n tokens to each of B sequences: `tokens` host int32 (B,n) in [0,V) take positions
 * pos..pos+n-1, pos = fm_model_decode_position(m). Runs the family's forward (the one training runs)
 * on those B*n rows only, each block appending its K,V to its caches and attending over them (a
 * prompt is one call, then one token per call), and, when `logits` is not NULL, downloads the
 * logits of each sequence's last new token: host (B,Vp), columns >= V padding. They equal
 * fm_model_forward's logits at the same positions up to float rounding (tested).
 * Errors: a training model, B outside 1..max_batch or not the B of the calls since the last reset,
 * n < 1 (FM_ERR_INTERNAL); pos + n >
 * max_seq_len (FM_ERR_USAGE: the cache is full; reset and feed a shorter context, as
 * fm_sampler_generate does); a token out of range (FM_ERR_INPUT naming it); upload/download. */
fm_status fm_model_decode(fm_model *m, const int32_t *tokens, int B, int n, float *logits);

#endif /* FM_MODEL_H */

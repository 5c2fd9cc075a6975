/* optimizer.h — AdamW with decoupled weight decay and global gradient-norm clipping for an fm_model.
 *
 * What it is: the optimizer state (first and second moments m and v, each ONE contiguous backend
 * allocation in the model's parameter layout, see model.h; the step counter t) and the
 * update, which runs through ops->adamw_update (that kernel also zeroes the gradients it consumed and,
 * when the model has a bf16 weight copy (bf16 activations, model.h), rewrites the copy from the
 * updated fp32 parameters in the same pass: the state is fp32 in every precision).
 * Weight decay applies to the tensors whose fm_model_tensor_info.decay is 1 (embeddings and matrices),
 * never to LayerNorm parameters and biases; the update is issued once per maximal run of contiguous
 * tensors with the same decay flag.
 * An optimizer covers either the whole layout (fm_optimizer_create: [train] zero = 0) or one rank's
 * SHARD of it (fm_optimizer_create_shard: zero >= 1, the range [lo, hi) of fm_model_shard_bounds):
 * then m and v hold only hi-lo floats (element i of them is element lo+i of the layout), the update
 * touches only the parameters of the shard (and of the bf16 copy, if any), and the other ranks'
 * shards reach this rank through the trainer's all-gather (dist/comm.h; the all-gather moves the
 * fp32 masters only, and the trainer re-makes the bf16 copy of the others' ranges from them). The arithmetic of every element is the same in both, so
 * a shard's parameters after a step equal the full optimizer's bit for bit (tested).
 * What it is not: no learning-rate schedule (the trainer computes lr for each step), no communication
 * (gradients are reduced by the caller before the step, the shards' results gathered after it).
 *
 * Update of step t (t counts from 1), for each parameter p with gradient g (after scaling by
 * grad_scale, e.g. a clipping factor):
 *     m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2
 *     p -= lr * ( (m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps) + wd*p )       (wd = 0 where decay is 0)
 * which is torch.optim.AdamW's update.
 */
#ifndef FM_OPTIMIZER_H
#define FM_OPTIMIZER_H

#include <stddef.h>
#include <stdint.h>

#include "model/model.h"
#include "core/status.h"

typedef struct fm_optimizer fm_optimizer;

/* Hyper-parameters of one step. */
typedef struct fm_adamw_params {
    float lr;           /* learning rate of this step (from the trainer's schedule) */
    float beta1;        /* e.g. 0.9 */
    float beta2;        /* e.g. 0.95 or 0.999 */
    float eps;          /* e.g. 1e-8 */
    float weight_decay; /* e.g. 0.1; applied only to tensors with decay = 1 */
} fm_adamw_params;

/* Creates the AdamW state for `model` (not owned; must outlive the optimizer): m and v zeroed, t = 0.
 * Errors: a decode model (FM_MODEL_DECODE has no gradients: FM_ERR_INTERNAL), backend allocation
 * failure. */
fm_status fm_optimizer_create(fm_model *model, fm_optimizer **out);

/* The same for the floats [lo, hi) of the layout only (a ZeRO shard; lo <= hi <= the layout's size,
 * hi - lo may be 0): m and v hold hi-lo floats each. Errors as above, and a range outside the layout
 * (FM_ERR_INTERNAL). */
fm_status fm_optimizer_create_shard(fm_model *model, size_t lo, size_t hi, fm_optimizer **out);
void fm_optimizer_free(fm_optimizer **opt);

/* The range of the layout this optimizer owns: [0, n) for fm_optimizer_create. */
void fm_optimizer_range(const fm_optimizer *opt, size_t *lo, size_t *hi);
/* Bytes of backend memory the optimizer allocated (m and v): what the start banner reports as
 * measured. */
size_t fm_optimizer_state_bytes(const fm_optimizer *opt);

/* Global L2 norm of all gradients, sqrt(sum g^2), from ops->sum_squares (double accumulation whose
 * order does not depend on the thread count). Call it after the gradients are complete (all-reduced)
 * and before fm_optimizer_step. A shard optimizer has only its part of the sum: FM_ERR_INTERNAL (use
 * fm_optimizer_grad_sumsq and combine the ranks' parts, as the trainer does). */
fm_status fm_optimizer_grad_norm(fm_optimizer *opt, double *norm);

/* sum g^2 over the optimizer's range (ops->sum_squares on [lo, hi), in double): one rank's part of
 * the global norm under ZeRO. The trainer adds the ranks' parts in rank order
 * (fm_comm_sum_ordered), so the norm is the same on every rank and every run of a layout. */
fm_status fm_optimizer_grad_sumsq(fm_optimizer *opt, double *sumsq);
/* sum g^2 over any range [lo, hi) of the layout (lo <= hi <= the layout's size): with zero = 0 each
 * rank computes every shard's part itself and adds them in rank order, so that every zero stage
 * takes the same norm. Errors: a range outside the layout (FM_ERR_INTERNAL). */
fm_status fm_optimizer_grad_sumsq_range(fm_optimizer *opt, size_t lo, size_t hi, double *sumsq);

/* The factor that clips a gradient of norm `norm` to `max_norm`, as torch.nn.utils.clip_grad_norm_:
 * min(1, max_norm / (norm + 1e-6)); 1 when max_norm <= 0 (no clipping). Pass it as grad_scale. */
float fm_optimizer_clip_scale(double norm, double max_norm);

/* Increments t and applies the update above to every parameter of the optimizer's range with
 * g = grads * grad_scale; then the WHOLE gradient buffer is zero (a shard optimizer zeroes the
 * gradients outside its range too, ops->zero, ready for the next accumulation). Errors: non-finite
 * or negative lr, betas outside [0,1), eps <= 0 (FM_ERR_CONFIG); a backend error surfacing at sync. */
fm_status fm_optimizer_step(fm_optimizer *opt, const fm_adamw_params *hp, float grad_scale);

/* Called by fm_optimizer_step_notify as soon as parameters [offset, offset+count) of the layout hold
 * their updated values (the backend synchronised): the trainer starts sending them to the other
 * ranks there (the all-gather overlaps the rest of the update). A non-NULL status stops the step
 * and is returned. */
typedef fm_status (*fm_optimizer_ready_fn)(void *ctx, size_t offset, size_t count);

/* fm_optimizer_step, the update issued in pieces of at most `piece` floats (0: one per decay run) in
 * layout order, `ready` (may be NULL) called after each. The arithmetic is the same as
 * fm_optimizer_step's (element-wise), so the results are bit-identical. */
fm_status fm_optimizer_step_notify(fm_optimizer *opt, const fm_adamw_params *hp, float grad_scale,
                                   size_t piece, fm_optimizer_ready_fn ready, void *ctx);

/* Steps taken (t of the last update; 0 before the first). Set it when restoring a checkpoint. */
int64_t fm_optimizer_get_step(const fm_optimizer *opt);
void fm_optimizer_set_step(fm_optimizer *opt, int64_t t);

/* Device pointers to m and v, hi-lo floats each (fm_optimizer_range; fm_model_num_params for a full
 * optimizer), element i being element lo+i of the model's layout. Owned by the optimizer. */
float *fm_optimizer_m(fm_optimizer *opt);
float *fm_optimizer_v(fm_optimizer *opt);

/* Host copies of m / v (hi-lo floats each, as above); either pointer may be NULL to skip it. */
fm_status fm_optimizer_get_state(fm_optimizer *opt, float *m_host, float *v_host);
fm_status fm_optimizer_set_state(fm_optimizer *opt, const float *m_host, const float *v_host);

#endif /* FM_OPTIMIZER_H */

/* optimizer.h — AdamW with decoupled weight decay and global gradient-norm clipping for an fm_model.
 *
 * What it is: the optimizer state (first and second moments m and v, each ONE contiguous backend
 * allocation with exactly the model's parameter layout, see model.h; the step counter t) and the
 * update, which runs through ops->adamw_update (that kernel also zeroes the gradients it consumed and,
 * when the model has a bf16 weight copy (bf16 activations, model.h), rewrites the copy from the
 * updated fp32 parameters in the same pass: the state is fp32 in every precision).
 * Weight decay applies to the tensors whose fm_model_tensor_info.decay is 1 (embeddings and matrices),
 * never to LayerNorm parameters and biases; the update is issued once per maximal run of contiguous
 * tensors with the same decay flag.
 * What it is not: no learning-rate schedule (the trainer computes lr for each step), no communication
 * (gradients are all-reduced by the caller before the step).
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
void fm_optimizer_free(fm_optimizer **opt);

/* Global L2 norm of all gradients, sqrt(sum g^2), from ops->sum_squares (double accumulation whose
 * order does not depend on the thread count). Call it after the gradients are complete (all-reduced)
 * and before fm_optimizer_step. */
fm_status fm_optimizer_grad_norm(fm_optimizer *opt, double *norm);

/* The factor that clips a gradient of norm `norm` to `max_norm`, as torch.nn.utils.clip_grad_norm_:
 * min(1, max_norm / (norm + 1e-6)); 1 when max_norm <= 0 (no clipping). Pass it as grad_scale. */
float fm_optimizer_clip_scale(double norm, double max_norm);

/* Increments t and applies the update above to every parameter with g = grads * grad_scale, then
 * the gradients are zero. Errors: non-finite or negative lr, betas outside [0,1), eps <= 0
 * (FM_ERR_CONFIG); a backend error surfacing at sync. */
fm_status fm_optimizer_step(fm_optimizer *opt, const fm_adamw_params *hp, float grad_scale);

/* Steps taken (t of the last update; 0 before the first). Set it when restoring a checkpoint. */
int64_t fm_optimizer_get_step(const fm_optimizer *opt);
void fm_optimizer_set_step(fm_optimizer *opt, int64_t t);

/* Device pointers to m and v, fm_model_num_params floats each, in the model's layout. Owned by the
 * optimizer. */
float *fm_optimizer_m(fm_optimizer *opt);
float *fm_optimizer_v(fm_optimizer *opt);

/* Host copies of m / v (fm_model_num_params floats each); either pointer may be NULL to skip it. */
fm_status fm_optimizer_get_state(fm_optimizer *opt, float *m_host, float *v_host);
fm_status fm_optimizer_set_state(fm_optimizer *opt, const float *m_host, const float *v_host);

#endif /* FM_OPTIMIZER_H */

/* optimizer.c — AdamW state and update for an fm_model, whole or one ZeRO shard (see optimizer.h).
 * All tensor work goes through the backend: adamw_update (which also zeroes the gradients and, with
 * bf16 activations, refreshes the model's bf16 weight copy in the same pass), sum_squares, and zero
 * (a shard's step clears the gradients outside its range). */
#define _POSIX_C_SOURCE 200809L

#include "train/optimizer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

/* A maximal run of contiguous tensors that share a weight-decay flag. */
typedef struct decay_run {
    size_t offset, count;
    int decay;
} decay_run;

struct fm_optimizer {
    fm_model *model;
    fm_backend *be;
    size_t n;      /* floats in the layout */
    size_t lo, hi; /* the range owned: [0, n) or a ZeRO shard */
    float *m, *v;  /* (hi-lo) each: element i is element lo+i of the layout */
    int64_t t;
    int nruns;
    decay_run *runs; /* over the whole layout; the step intersects them with [lo, hi) */
};

fm_status fm_optimizer_create(fm_model *model, fm_optimizer **out)
{
    return fm_optimizer_create_shard(model, 0, fm_model_num_params(model), out);
}

fm_status fm_optimizer_create_shard(fm_model *model, size_t lo, size_t hi, fm_optimizer **out)
{
    *out = NULL;
    if (fm_model_get_mode(model) != FM_MODEL_TRAIN)
        return FM_ERR(FM_ERR_INTERNAL, "optimizer: the model was created for decoding, it has no "
                                       "gradients to optimise (create it with FM_MODEL_TRAIN)");
    if (lo > hi || hi > fm_model_num_params(model))
        return FM_ERR(FM_ERR_INTERNAL, "optimizer: shard [%zu, %zu) is not inside the layout of %zu "
                      "floats", lo, hi, fm_model_num_params(model));
    fm_optimizer *o = calloc(1, sizeof *o);
    FM_CHECK_ALLOC(o, sizeof *o);
    fm_status st = NULL;
    o->model = model;
    o->be = fm_model_get_backend(model);
    o->n = fm_model_num_params(model);
    o->lo = lo;
    o->hi = hi;
    const int nt = fm_model_num_tensors(model);
    o->runs = calloc((size_t)nt, sizeof *o->runs);
    if (!o->runs) {
        st = FM_ERR(FM_ERR_NOMEM, "optimizer: out of memory");
        goto fail;
    }
    size_t expect = 0;
    for (int i = 0; i < nt; i++) {
        const fm_model_tensor_info *t = fm_model_tensor(model, i);
        if (t->offset != expect) {
            st = FM_ERR(FM_ERR_INTERNAL, "optimizer: tensor %s starts at %zu, expected %zu", t->name,
                        t->offset, expect);
            goto fail;
        }
        expect += t->numel;
        if (o->nruns > 0 && o->runs[o->nruns - 1].decay == t->decay) {
            o->runs[o->nruns - 1].count += t->numel;
        } else {
            o->runs[o->nruns].offset = t->offset;
            o->runs[o->nruns].count = t->numel;
            o->runs[o->nruns].decay = t->decay;
            o->nruns++;
        }
    }
    /* An empty shard still gets a (one-float) allocation, so m and v are never NULL. */
    const size_t bytes = (hi > lo ? hi - lo : 1) * sizeof(float);
    char buf[32];
    st = o->be->ops->alloc(o->be, (void **)&o->m, bytes);
    if (!st) st = o->be->ops->alloc(o->be, (void **)&o->v, bytes);
    if (st) {
        st = fm_status_prefix(st, "optimizer: allocating 2 x %s of AdamW state: ",
                              fm_util_format_bytes((double)bytes, buf, sizeof buf));
        goto fail;
    }
    *out = o;
    return NULL;
fail:
    fm_optimizer_free(&o);
    return fm_status_trace(st, __FILE__, __LINE__, __func__);
}

void fm_optimizer_free(fm_optimizer **po)
{
    if (!po || !*po) return;
    fm_optimizer *o = *po;
    if (o->m) o->be->ops->free(o->be, o->m);
    if (o->v) o->be->ops->free(o->be, o->v);
    free(o->runs);
    free(o);
    *po = NULL;
}

void fm_optimizer_range(const fm_optimizer *o, size_t *lo, size_t *hi)
{
    *lo = o->lo;
    *hi = o->hi;
}

size_t fm_optimizer_state_bytes(const fm_optimizer *o)
{
    return 2 * (o->hi > o->lo ? o->hi - o->lo : 1) * sizeof(float);
}

fm_status fm_optimizer_grad_sumsq_range(fm_optimizer *o, size_t lo, size_t hi, double *sumsq)
{
    if (lo > hi || hi > o->n)
        return FM_ERR(FM_ERR_INTERNAL, "optimizer: range [%zu, %zu) is not inside the layout of %zu "
                      "floats", lo, hi, o->n);
    double ss = 0.0;
    if (hi > lo) o->be->ops->sum_squares(o->be, &ss, fm_model_grads(o->model) + lo, hi - lo);
    FM_TRY(o->be->ops->sync(o->be));
    *sumsq = ss;
    return NULL;
}

fm_status fm_optimizer_grad_sumsq(fm_optimizer *o, double *sumsq)
{
    FM_TRY(fm_optimizer_grad_sumsq_range(o, o->lo, o->hi, sumsq));
    return NULL;
}

fm_status fm_optimizer_grad_norm(fm_optimizer *o, double *norm)
{
    if (o->lo != 0 || o->hi != o->n)
        return FM_ERR(FM_ERR_INTERNAL, "optimizer: the global gradient norm of a shard optimizer "
                      "([%zu, %zu) of %zu) needs the other ranks' parts: use "
                      "fm_optimizer_grad_sumsq", o->lo, o->hi, o->n);
    double ss = 0.0;
    FM_TRY(fm_optimizer_grad_sumsq(o, &ss));
    *norm = sqrt(ss);
    return NULL;
}

float fm_optimizer_clip_scale(double norm, double max_norm)
{
    if (max_norm <= 0.0) return 1.0f;
    double s = max_norm / (norm + 1e-6);
    return s < 1.0 ? (float)s : 1.0f;
}

static fm_status check_hyper(const fm_adamw_params *hp)
{
    if (!isfinite(hp->lr) || hp->lr < 0.0f)
        return FM_ERR(FM_ERR_CONFIG, "optimizer: learning rate %g (expected finite and >= 0)",
                      (double)hp->lr);
    if (!(hp->beta1 >= 0.0f && hp->beta1 < 1.0f) || !(hp->beta2 >= 0.0f && hp->beta2 < 1.0f))
        return FM_ERR(FM_ERR_CONFIG, "optimizer: betas (%g, %g) must lie in [0, 1)",
                      (double)hp->beta1, (double)hp->beta2);
    if (!(hp->eps > 0.0f))
        return FM_ERR(FM_ERR_CONFIG, "optimizer: eps %g (expected > 0)", (double)hp->eps);
    if (!isfinite(hp->weight_decay) || hp->weight_decay < 0.0f)
        return FM_ERR(FM_ERR_CONFIG, "optimizer: weight_decay %g (expected finite and >= 0)",
                      (double)hp->weight_decay);
    return NULL;
}

fm_status fm_optimizer_step_notify(fm_optimizer *o, const fm_adamw_params *hp, float grad_scale,
                                   size_t piece, fm_optimizer_ready_fn ready, void *ctx)
{
    FM_TRY(check_hyper(hp));
    o->t++;
    /* the masters and, with bf16 activations, their bf16 copy: the update writes both in one pass */
    void *pb = NULL;
    float *p = fm_model_params_for_update(o->model, &pb), *g = fm_model_grads(o->model);
    /* Each decay run's part inside [lo, hi), in pieces; m and v are indexed from lo. */
    for (int r = 0; r < o->nruns; r++) {
        const decay_run *run = &o->runs[r];
        size_t a = run->offset > o->lo ? run->offset : o->lo;
        size_t b = run->offset + run->count < o->hi ? run->offset + run->count : o->hi;
        while (a < b) {
            size_t n = piece > 0 && b - a > piece ? piece : b - a;
            void *pb_a = pb ? (char *)pb + 2 * a : NULL; /* bf16: 2 bytes per parameter */
            o->be->ops->adamw_update(o->be, p + a, pb_a, g + a, o->m + (a - o->lo),
                                     o->v + (a - o->lo), n, hp->lr, hp->beta1, hp->beta2, hp->eps,
                                     run->decay ? hp->weight_decay : 0.0f, grad_scale, o->t);
            if (ready) {
                FM_TRY(o->be->ops->sync(o->be));
                FM_TRY(ready(ctx, a, n));
            }
            a += n;
        }
    }
    /* A shard's update consumed (and zeroed) only its own gradients: clear the rest. */
    if (o->lo > 0) o->be->ops->zero(o->be, g, o->lo * sizeof(float));
    if (o->hi < o->n) o->be->ops->zero(o->be, g + o->hi, (o->n - o->hi) * sizeof(float));
    FM_TRY(o->be->ops->sync(o->be));
    return NULL;
}

fm_status fm_optimizer_step(fm_optimizer *o, const fm_adamw_params *hp, float grad_scale)
{
    FM_TRY(fm_optimizer_step_notify(o, hp, grad_scale, 0, NULL, NULL));
    return NULL;
}

int64_t fm_optimizer_get_step(const fm_optimizer *o) { return o->t; }
void fm_optimizer_set_step(fm_optimizer *o, int64_t t) { o->t = t; }
float *fm_optimizer_m(fm_optimizer *o) { return o->m; }
float *fm_optimizer_v(fm_optimizer *o) { return o->v; }

fm_status fm_optimizer_get_state(fm_optimizer *o, float *m_host, float *v_host)
{
    const size_t bytes = (o->hi - o->lo) * sizeof(float);
    if (m_host) FM_TRY(o->be->ops->download(o->be, m_host, o->m, bytes));
    if (v_host) FM_TRY(o->be->ops->download(o->be, v_host, o->v, bytes));
    return NULL;
}

fm_status fm_optimizer_set_state(fm_optimizer *o, const float *m_host, const float *v_host)
{
    const size_t bytes = (o->hi - o->lo) * sizeof(float);
    if (m_host) FM_TRY(o->be->ops->upload(o->be, o->m, m_host, bytes));
    if (v_host) FM_TRY(o->be->ops->upload(o->be, o->v, v_host, bytes));
    return NULL;
}

/* optimizer.c — AdamW state and update for an fm_model (see optimizer.h). All tensor work goes
 * through the backend: adamw_update (which also zeroes the gradients and, with bf16 activations,
 * refreshes the model's bf16 weight copy in the same pass) and sum_squares. */
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
    size_t n;     /* floats in the layout */
    float *m, *v; /* (n) each, the model's layout */
    int64_t t;
    int nruns;
    decay_run *runs;
};

fm_status fm_optimizer_create(fm_model *model, fm_optimizer **out)
{
    *out = NULL;
    if (fm_model_get_mode(model) != FM_MODEL_TRAIN)
        return FM_ERR(FM_ERR_INTERNAL, "optimizer: the model was created for decoding, it has no "
                                       "gradients to optimise (create it with FM_MODEL_TRAIN)");
    fm_optimizer *o = calloc(1, sizeof *o);
    FM_CHECK_ALLOC(o, sizeof *o);
    fm_status st = NULL;
    o->model = model;
    o->be = fm_model_get_backend(model);
    o->n = fm_model_num_params(model);
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
    const size_t bytes = o->n * sizeof(float);
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

fm_status fm_optimizer_grad_norm(fm_optimizer *o, double *norm)
{
    double ss = 0.0;
    o->be->ops->sum_squares(o->be, &ss, fm_model_grads(o->model), o->n);
    FM_TRY(o->be->ops->sync(o->be));
    *norm = sqrt(ss);
    return NULL;
}

float fm_optimizer_clip_scale(double norm, double max_norm)
{
    if (max_norm <= 0.0) return 1.0f;
    double s = max_norm / (norm + 1e-6);
    return s < 1.0 ? (float)s : 1.0f;
}

fm_status fm_optimizer_step(fm_optimizer *o, const fm_adamw_params *hp, float grad_scale)
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
    o->t++;
    /* the masters and, with bf16 activations, their bf16 copy: the update writes both in one pass */
    void *pb = NULL;
    float *p = fm_model_params_for_update(o->model, &pb), *g = fm_model_grads(o->model);
    for (int r = 0; r < o->nruns; r++) {
        const decay_run *run = &o->runs[r];
        void *pb_run = pb ? (char *)pb + 2 * run->offset : NULL; /* bf16: 2 bytes per parameter */
        o->be->ops->adamw_update(o->be, p + run->offset, pb_run, g + run->offset, o->m + run->offset,
                                 o->v + run->offset, run->count, hp->lr, hp->beta1, hp->beta2,
                                 hp->eps, run->decay ? hp->weight_decay : 0.0f, grad_scale, o->t);
    }
    FM_TRY(o->be->ops->sync(o->be));
    return NULL;
}

int64_t fm_optimizer_get_step(const fm_optimizer *o) { return o->t; }
void fm_optimizer_set_step(fm_optimizer *o, int64_t t) { o->t = t; }
float *fm_optimizer_m(fm_optimizer *o) { return o->m; }
float *fm_optimizer_v(fm_optimizer *o) { return o->v; }

fm_status fm_optimizer_get_state(fm_optimizer *o, float *m_host, float *v_host)
{
    const size_t bytes = o->n * sizeof(float);
    if (m_host) FM_TRY(o->be->ops->download(o->be, m_host, o->m, bytes));
    if (v_host) FM_TRY(o->be->ops->download(o->be, v_host, o->v, bytes));
    return NULL;
}

fm_status fm_optimizer_set_state(fm_optimizer *o, const float *m_host, const float *v_host)
{
    const size_t bytes = o->n * sizeof(float);
    if (m_host) FM_TRY(o->be->ops->upload(o->be, o->m, m_host, bytes));
    if (v_host) FM_TRY(o->be->ops->upload(o->be, o->v, v_host, bytes));
    return NULL;
}

/* sampler.c — see sampler.h. Token choice and the context window over fm_model_decode. */
#include "model/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"

typedef struct pick_pair {
    float v;
    int32_t i;
} pick_pair;

struct fm_sampler {
    fm_model *model; /* a decode model, not owned */
    int V, Vp, maxT;
    float *logits;    /* (Vp) the last decode's logits */
    pick_pair *pairs; /* (V) */
    int32_t *context; /* (maxT) the tokens in the model's cache */
};

void fm_sampler_free(fm_sampler **ps)
{
    if (!ps || !*ps) return;
    fm_sampler *s = *ps;
    free(s->logits);
    free(s->pairs);
    free(s->context);
    free(s);
    *ps = NULL;
}

fm_status fm_sampler_create(fm_model *model, fm_sampler **out)
{
    *out = NULL;
    if (fm_model_get_mode(model) != FM_MODEL_DECODE)
        return FM_ERR(FM_ERR_INTERNAL, "sampler: the model is a training model; sampling needs a "
                                       "decode model (FM_MODEL_DECODE: K/V caches)");
    const fm_backend *be = fm_model_get_backend(model);
    if (be->ops->act_bytes != 4)
        return FM_ERR(FM_ERR_INTERNAL, "sampler: backend '%s' keeps activations in %d bytes; "
                                       "sampling reads fp32 logits", be->ops->name, be->ops->act_bytes);
    fm_sampler *s = calloc(1, sizeof *s);
    FM_CHECK_ALLOC(s, sizeof *s);
    const fm_model_shape *shape = fm_model_get_shape(model);
    s->model = model;
    s->V = shape->vocab_size;
    s->Vp = fm_model_get_padded_vocab(model);
    s->maxT = shape->max_seq_len;
    s->logits = malloc((size_t)s->Vp * sizeof *s->logits);
    s->pairs = malloc((size_t)s->V * sizeof *s->pairs);
    s->context = malloc((size_t)s->maxT * sizeof *s->context);
    if (!s->logits || !s->pairs || !s->context) {
        size_t bytes = (size_t)s->Vp * sizeof *s->logits + (size_t)s->V * sizeof *s->pairs +
                       (size_t)s->maxT * sizeof *s->context;
        fm_sampler_free(&s);
        return FM_ERR(FM_ERR_NOMEM, "out of memory allocating the sampler (%zu bytes)", bytes);
    }
    *out = s;
    return NULL;
}

/* Descending by value, ties by ascending index: a total order, so qsort's result is unique. */
static int pair_desc(const void *a, const void *b)
{
    const pick_pair *x = a, *y = b;
    if (x->v > y->v) return -1;
    if (x->v < y->v) return 1;
    return (x->i > y->i) - (x->i < y->i);
}

/* The next token from logits[0..V): argmax, or one draw of *rng over softmax(logits/T) restricted to
 * the top_k largest (in double; the draw is r = u * sum, u uniform in [0,1)). */
static int32_t pick(fm_sampler *s, const float *logits, const fm_sampler_options *o, uint64_t *rng)
{
    const int V = s->V;
    if (o->temperature <= 0.0) {
        int32_t best = 0;
        for (int i = 1; i < V; i++)
            if (logits[i] > logits[best]) best = i;
        return best;
    }
    int k = (o->top_k > 0 && o->top_k < V) ? o->top_k : V;
    for (int i = 0; i < V; i++) {
        s->pairs[i].v = logits[i];
        s->pairs[i].i = i;
    }
    if (k < V) qsort(s->pairs, (size_t)V, sizeof *s->pairs, pair_desc);
    float maxv = -INFINITY;
    for (int i = 0; i < k; i++)
        if (s->pairs[i].v > maxv) maxv = s->pairs[i].v;
    double sum = 0.0;
    for (int i = 0; i < k; i++) {
        double p = exp(((double)s->pairs[i].v - maxv) / o->temperature);
        s->pairs[i].v = (float)p;
        sum += p;
    }
    double r = fm_rng_uniform(rng) * sum;
    double acc = 0.0;
    for (int i = 0; i < k; i++) {
        acc += s->pairs[i].v;
        if (r < acc) return s->pairs[i].i;
    }
    return s->pairs[k - 1].i;
}

/* Empties the cache and feeds context[0..n) in one call, keeping the last position's logits. */
static fm_status refill(fm_sampler *s, int n)
{
    fm_model_decode_reset(s->model);
    FM_TRY(fm_model_decode(s->model, s->context, 1, n, s->logits));
    return NULL;
}

fm_status fm_sampler_generate(fm_sampler *s, const int32_t *prompt, int n_prompt,
                              const fm_sampler_options *opts, fm_sampler_token_fn on_token,
                              void *ctx, int32_t *out)
{
    const int maxT = s->maxT;
    if (n_prompt < 1 || !prompt)
        return FM_ERR(FM_ERR_USAGE, "the prompt is empty: give at least one token to start from");
    if (opts->n_tokens < 0 || !(opts->temperature >= 0.0) || opts->top_k < 0)
        return FM_ERR(FM_ERR_USAGE, "bad sampling options: tokens %d (>= 0), temperature %g (>= 0), "
                                    "top-k %d (>= 0)", opts->n_tokens, opts->temperature, opts->top_k);
    /* The context: the last maxT tokens of prompt + generated so far, all in the model's cache. */
    const int first = n_prompt > maxT ? n_prompt - maxT : 0;
    int nctx = n_prompt - first;
    memcpy(s->context, prompt + first, (size_t)nctx * sizeof *s->context);
    uint64_t rng = opts->seed;
    FM_TRY(refill(s, nctx));
    for (int n = 0; n < opts->n_tokens; n++) {
        const int32_t tok = pick(s, s->logits, opts, &rng);
        if (out) out[n] = tok;
        if (on_token) FM_TRY(on_token(ctx, tok));
        if (n == opts->n_tokens - 1) break;
        if (nctx == maxT) {
            /* Window full: keep the last maxT/2 tokens (the new one included), rebuild the cache. */
            const int keep = maxT / 2 > 0 ? maxT / 2 : 1;
            memmove(s->context, s->context + (nctx - keep + 1), (size_t)(keep - 1) * sizeof *s->context);
            s->context[keep - 1] = tok;
            nctx = keep;
            FM_TRY(refill(s, nctx));
        } else {
            s->context[nctx++] = tok;
            FM_TRY(fm_model_decode(s->model, &tok, 1, 1, s->logits));
        }
    }
    return NULL;
}

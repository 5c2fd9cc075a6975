/* sampler.c — see sampler.h. Single-token GPT-2 forward over a host copy of the weights. */
#include "model/sampler.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct layer_views {
    const float *ln1w, *ln1b;     /* (C) */
    const float *attnw, *attnb;   /* (3C,C), (3C) */
    const float *projw, *projb;   /* (C,C), (C) */
    const float *ln2w, *ln2b;     /* (C) */
    const float *fcw, *fcb;       /* (4C,C), (4C) */
    const float *fcprojw, *fcprojb; /* (C,4C), (C) */
} layer_views;

typedef struct pick_pair {
    float v;
    int32_t i;
} pick_pair;

struct fm_sampler {
    fm_model_shape shape;
    int Vp;
    float *params; /* host copy, the model's layout */
    const float *wte, *wpe, *lnfw, *lnfb; /* (Vp,C), (maxT,C), (C), (C) */
    layer_views *layers; /* (L) */
    float *kcache, *vcache; /* (L, maxT, C) each */
    int pos;
    /* scratch rows */
    float *x, *h, *qkv, *att, *tmp, *fc, *scores, *logits; /* C, C, 3C, C, C, 4C, maxT, Vp */
    pick_pair *pairs; /* (V) */
};

static fm_status view(fm_model *m, const char *name, size_t numel, const float *base,
                      const float **out)
{
    const fm_model_tensor_info *t = fm_model_find_tensor(m, name);
    if (!t) return FM_ERR(FM_ERR_INTERNAL, "model has no tensor '%s'", name);
    if (t->numel != numel)
        return FM_ERR(FM_ERR_INTERNAL, "tensor '%s' has %zu elements, sampler expects %zu", name,
                      t->numel, numel);
    *out = base + t->offset;
    return NULL;
}

void fm_sampler_free(fm_sampler **ps)
{
    if (!ps || !*ps) return;
    fm_sampler *s = *ps;
    free(s->params);
    free(s->layers);
    free(s->kcache);
    free(s->vcache);
    free(s->x);
    free(s->pairs);
    free(s);
    *ps = NULL;
}

fm_status fm_sampler_create(fm_model *model, fm_sampler **out)
{
    *out = NULL;
    fm_sampler *s = calloc(1, sizeof *s);
    FM_CHECK_ALLOC(s, sizeof *s);
    fm_status st = NULL;
    s->shape = *fm_model_get_shape(model);
    s->Vp = fm_model_get_padded_vocab(model);
    const int L = s->shape.n_layer, C = s->shape.d_model, maxT = s->shape.max_seq_len;
    const int V = s->shape.vocab_size;
    size_t np = fm_model_num_params(model);
    size_t kv = (size_t)L * (size_t)maxT * (size_t)C;
    size_t rows = (size_t)C * 8 + (size_t)C * 4 + (size_t)maxT + (size_t)s->Vp;
    s->params = malloc(np * sizeof(float));
    s->layers = calloc((size_t)L, sizeof *s->layers);
    s->kcache = malloc(kv * sizeof(float));
    s->vcache = malloc(kv * sizeof(float));
    s->x = malloc(rows * sizeof(float));
    s->pairs = malloc((size_t)V * sizeof *s->pairs);
    if (!s->params || !s->layers || !s->kcache || !s->vcache || !s->x || !s->pairs) {
        st = FM_ERR(FM_ERR_NOMEM, "out of memory allocating the sampler (%zu bytes)",
                    (np + 2 * kv + rows) * sizeof(float) + (size_t)V * sizeof *s->pairs);
        goto fail;
    }
    s->h = s->x + C;
    s->qkv = s->h + C;
    s->att = s->qkv + 3 * (size_t)C;
    s->tmp = s->att + C;
    s->fc = s->tmp + C;
    s->scores = s->fc + 4 * (size_t)C;
    s->logits = s->scores + maxT;
    FM_TRY_GOTO(st, fail, fm_model_get_params(model, s->params));
    const size_t c = (size_t)C;
    FM_TRY_GOTO(st, fail, view(model, "wte.weight", (size_t)s->Vp * c, s->params, &s->wte));
    FM_TRY_GOTO(st, fail, view(model, "wpe.weight", (size_t)maxT * c, s->params, &s->wpe));
    FM_TRY_GOTO(st, fail, view(model, "ln_f.weight", c, s->params, &s->lnfw));
    FM_TRY_GOTO(st, fail, view(model, "ln_f.bias", c, s->params, &s->lnfb));
    for (int l = 0; l < L; l++) {
        layer_views *v = &s->layers[l];
        char n[96];
#define FM_SAMPLER_VIEW(field, suffix, numel)                                            \
    snprintf(n, sizeof n, "h.%d.%s", l, suffix);                                          \
    FM_TRY_GOTO(st, fail, view(model, n, (numel), s->params, &v->field))
        FM_SAMPLER_VIEW(ln1w, "ln_1.weight", c);
        FM_SAMPLER_VIEW(ln1b, "ln_1.bias", c);
        FM_SAMPLER_VIEW(attnw, "attn.c_attn.weight", 3 * c * c);
        FM_SAMPLER_VIEW(attnb, "attn.c_attn.bias", 3 * c);
        FM_SAMPLER_VIEW(projw, "attn.c_proj.weight", c * c);
        FM_SAMPLER_VIEW(projb, "attn.c_proj.bias", c);
        FM_SAMPLER_VIEW(ln2w, "ln_2.weight", c);
        FM_SAMPLER_VIEW(ln2b, "ln_2.bias", c);
        FM_SAMPLER_VIEW(fcw, "mlp.c_fc.weight", 4 * c * c);
        FM_SAMPLER_VIEW(fcb, "mlp.c_fc.bias", 4 * c);
        FM_SAMPLER_VIEW(fcprojw, "mlp.c_proj.weight", 4 * c * c);
        FM_SAMPLER_VIEW(fcprojb, "mlp.c_proj.bias", c);
#undef FM_SAMPLER_VIEW
    }
    *out = s;
    return NULL;
fail:
    fm_sampler_free(&s);
    return st;
}

void fm_sampler_reset(fm_sampler *s) { s->pos = 0; }
int fm_sampler_position(const fm_sampler *s) { return s->pos; }
int fm_sampler_max_seq_len(const fm_sampler *s) { return s->shape.max_seq_len; }
int fm_sampler_vocab_size(const fm_sampler *s) { return s->shape.vocab_size; }

/* out (C) = LayerNorm(inp (C)) with eps 1e-5, biased variance. */
static void layernorm(float *out, const float *inp, const float *w, const float *b, int C)
{
    double mean = 0.0, var = 0.0;
    for (int i = 0; i < C; i++) mean += inp[i];
    mean /= C;
    for (int i = 0; i < C; i++) {
        double d = inp[i] - mean;
        var += d * d;
    }
    var /= C;
    float rstd = (float)(1.0 / sqrt(var + 1e-5));
    for (int i = 0; i < C; i++) out[i] = ((inp[i] - (float)mean) * rstd) * w[i] + b[i];
}

/* y (OC) = W (OC,IN) @ x (IN) + b (OC) */
static void matvec(float *y, const float *W, const float *x, const float *b, int OC, int IN)
{
    if (b)
        memcpy(y, b, (size_t)OC * sizeof(float));
    cblas_sgemv(CblasRowMajor, CblasNoTrans, OC, IN, 1.0f, W, IN, x, 1, b ? 1.0f : 0.0f, y, 1);
}

static float gelu(float x)
{
    const float k = 0.7978845608028654f; /* sqrt(2/pi) */
    return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
}

fm_status fm_sampler_feed(fm_sampler *s, int32_t token, float *logits)
{
    const int L = s->shape.n_layer, C = s->shape.d_model, NH = s->shape.n_head;
    const int maxT = s->shape.max_seq_len, V = s->shape.vocab_size, hs = C / NH;
    if (token < 0 || token >= V)
        return FM_ERR(FM_ERR_INPUT, "token id %d is outside the model's vocabulary [0, %d)",
                      (int)token, V);
    if (s->pos >= maxT)
        return FM_ERR(FM_ERR_USAGE, "the KV cache is full (%d tokens = the model's seq_len)", maxT);
    const int t = s->pos;
    const size_t c = (size_t)C;
    for (int i = 0; i < C; i++) s->x[i] = s->wte[(size_t)token * c + i] + s->wpe[(size_t)t * c + i];
    const float scale = 1.0f / sqrtf((float)hs);
    for (int l = 0; l < L; l++) {
        const layer_views *w = &s->layers[l];
        float *kc = s->kcache + (size_t)l * (size_t)maxT * c;
        float *vc = s->vcache + (size_t)l * (size_t)maxT * c;
        layernorm(s->h, s->x, w->ln1w, w->ln1b, C);
        matvec(s->qkv, w->attnw, s->h, w->attnb, 3 * C, C);
        memcpy(kc + (size_t)t * c, s->qkv + c, c * sizeof(float));
        memcpy(vc + (size_t)t * c, s->qkv + 2 * c, c * sizeof(float));
        for (int hd = 0; hd < NH; hd++) {
            const float *q = s->qkv + (size_t)hd * hs;
            float maxv = -INFINITY;
            for (int u = 0; u <= t; u++) {
                const float *k = kc + (size_t)u * c + (size_t)hd * hs;
                float dot = 0.0f;
                for (int i = 0; i < hs; i++) dot += q[i] * k[i];
                s->scores[u] = dot * scale;
                if (s->scores[u] > maxv) maxv = s->scores[u];
            }
            double sum = 0.0;
            for (int u = 0; u <= t; u++) {
                s->scores[u] = expf(s->scores[u] - maxv);
                sum += s->scores[u];
            }
            float inv = (float)(1.0 / sum);
            float *o = s->att + (size_t)hd * hs;
            for (int i = 0; i < hs; i++) o[i] = 0.0f;
            for (int u = 0; u <= t; u++) {
                const float *v = vc + (size_t)u * c + (size_t)hd * hs;
                float p = s->scores[u] * inv;
                for (int i = 0; i < hs; i++) o[i] += p * v[i];
            }
        }
        matvec(s->tmp, w->projw, s->att, w->projb, C, C);
        for (int i = 0; i < C; i++) s->x[i] += s->tmp[i];
        layernorm(s->h, s->x, w->ln2w, w->ln2b, C);
        matvec(s->fc, w->fcw, s->h, w->fcb, 4 * C, C);
        for (int i = 0; i < 4 * C; i++) s->fc[i] = gelu(s->fc[i]);
        matvec(s->tmp, w->fcprojw, s->fc, w->fcprojb, C, 4 * C);
        for (int i = 0; i < C; i++) s->x[i] += s->tmp[i];
    }
    s->pos++;
    if (logits) {
        layernorm(s->h, s->x, s->lnfw, s->lnfb, C);
        matvec(logits, s->wte, s->h, NULL, V, C); /* only the V real rows of wte */
    }
    return NULL;
}

/* splitmix64: the next 64 random bits of the stream *state. */
static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int pair_desc(const void *a, const void *b)
{
    const pick_pair *x = a, *y = b;
    if (x->v > y->v) return -1;
    if (x->v < y->v) return 1;
    return (x->i > y->i) - (x->i < y->i);
}

static int32_t pick(fm_sampler *s, const float *logits, const fm_sampler_options *o, uint64_t *rng)
{
    const int V = s->shape.vocab_size;
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
    double r = (double)(splitmix64(rng) >> 11) * (1.0 / 9007199254740992.0) * sum;
    double acc = 0.0;
    for (int i = 0; i < k; i++) {
        acc += s->pairs[i].v;
        if (r < acc) return s->pairs[i].i;
    }
    return s->pairs[k - 1].i;
}

fm_status fm_sampler_generate(fm_sampler *s, const int32_t *prompt, int n_prompt,
                              const fm_sampler_options *opts, fm_sampler_token_fn on_token,
                              void *ctx, int32_t *out)
{
    const int maxT = s->shape.max_seq_len;
    if (n_prompt < 1 || !prompt)
        return FM_ERR(FM_ERR_USAGE, "the prompt is empty: give at least one token to start from");
    if (opts->n_tokens < 0 || !(opts->temperature >= 0.0) || opts->top_k < 0)
        return FM_ERR(FM_ERR_USAGE, "bad sampling options: tokens %d (>= 0), temperature %g (>= 0), "
                                    "top-k %d (>= 0)", opts->n_tokens, opts->temperature, opts->top_k);
    /* The context: the last maxT tokens of prompt + generated so far. */
    int32_t *ctxbuf = malloc((size_t)maxT * sizeof *ctxbuf);
    float *logits = s->logits;
    FM_CHECK_ALLOC(ctxbuf, (size_t)maxT * sizeof *ctxbuf);
    fm_status st = NULL;
    int first = n_prompt > maxT ? n_prompt - maxT : 0;
    int nctx = n_prompt - first;
    memcpy(ctxbuf, prompt + first, (size_t)nctx * sizeof *ctxbuf);
    uint64_t rng = opts->seed;
    fm_sampler_reset(s);
    for (int i = 0; i < nctx; i++)
        FM_TRY_GOTO(st, done, fm_sampler_feed(s, ctxbuf[i], i == nctx - 1 ? logits : NULL));
    for (int n = 0; n < opts->n_tokens; n++) {
        int32_t tok = pick(s, logits, opts, &rng);
        if (out) out[n] = tok;
        if (on_token) FM_TRY_GOTO(st, done, on_token(ctx, tok));
        if (n == opts->n_tokens - 1) break;
        if (nctx == maxT) {
            /* Window full: keep the last maxT/2 tokens and rebuild the cache from them. */
            int keep = maxT / 2 > 0 ? maxT / 2 : 1;
            memmove(ctxbuf, ctxbuf + (nctx - keep + 1), (size_t)(keep - 1) * sizeof *ctxbuf);
            nctx = keep - 1;
            fm_sampler_reset(s);
            for (int i = 0; i < nctx; i++) FM_TRY_GOTO(st, done, fm_sampler_feed(s, ctxbuf[i], NULL));
        }
        ctxbuf[nctx++] = tok;
        FM_TRY_GOTO(st, done, fm_sampler_feed(s, tok, logits));
    }
done:
    free(ctxbuf);
    return st;
}

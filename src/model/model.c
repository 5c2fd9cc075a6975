/* model.c — GPT-2 forward/backward scheduled over the backend's kernel table (see model.h).
 *
 * Everything that touches tensor memory is a call through be->ops; this file computes layouts,
 * validates inputs, initialises weights on the host and schedules kernels. Shapes are written on
 * every view: B micro-batch, T sequence, C channels, NH heads, L layers, V vocabulary, Vp padded
 * vocabulary, N = B*T rows. Views of the arena are sized for (max_batch, max_seq_len); a call with
 * smaller B, T uses the first B*T rows of each view, so each stays a contiguous (B,T,...) array.
 *
 * Memory plan (why the arena is what it is):
 *   - kept for backward, per layer: ln1, qkv, atty, res2, ln2, fch, fch_gelu, res3 (16*N*C elements),
 *     LayerNorm mean/rstd (4*N fp32) and the attention log-sum-exp (NH*N fp32). No (T,T) tensor.
 *   - the outputs of attn.c_proj and mlp.c_proj are not kept: they only feed a residual add, whose
 *     backward does not need them, so they go to a scratch buffer.
 *   - backward needs no residual_backward: the residual stream's gradient `dres` is one (N,C) buffer
 *     that the LayerNorm backward kernels accumulate into while the projections' gradients read it
 *     directly (d(res + x) = dres for both). Activation gradients live in three scratch buffers reused
 *     by every layer: dres (N,C), dln (N,C) and dbig (N,4C) (also dqkv (N,3C)).
 *   - dlogits overwrite the logits in place (no second (N,Vp) buffer).
 */
#define _POSIX_C_SOURCE 200809L

#include "model/model.h"

#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

#define FM_MODEL_ALIGN 64 /* bytes: every view of the arena starts on a cache line */

/* Order of the tensors inside one layer (model.h) and inside the head range. */
enum {
    LT_LN1W, LT_LN1B, LT_QKVW, LT_QKVB, LT_ATTPROJW, LT_ATTPROJB,
    LT_LN2W, LT_LN2B, LT_FCW, LT_FCB, LT_FCPROJW, LT_FCPROJB, LT_COUNT
};
enum { HT_WTE, HT_WPE, HT_LNFW, HT_LNFB, HT_COUNT };

/* Activations of one block kept for backward. */
typedef struct layer_acts {
    float *ln1;      /* (B,T,C) */
    float *ln1_mean; /* (B,T) fp32 */
    float *ln1_rstd; /* (B,T) fp32 */
    float *qkv;      /* (B,T,3C) */
    float *atty;     /* (B,T,C) */
    float *att_lse;  /* (B,NH,T) fp32 */
    float *res2;     /* (B,T,C) residual after attention */
    float *ln2;      /* (B,T,C) */
    float *ln2_mean; /* (B,T) fp32 */
    float *ln2_rstd; /* (B,T) fp32 */
    float *fch;      /* (B,T,4C) */
    float *fch_gelu; /* (B,T,4C) */
    float *res3;     /* (B,T,C) residual after the MLP = the block's output */
} layer_acts;

typedef struct acts {
    int32_t *tokens;  /* (B,T) device copy */
    int32_t *targets; /* (B,T) device copy */
    float *encoded;   /* (B,T,C) */
    float *lnf;       /* (B,T,C) */
    float *lnf_mean;  /* (B,T) fp32 */
    float *lnf_rstd;  /* (B,T) fp32 */
    float *losses;    /* (B,T) fp32 */
    float *loss_lse;  /* (B,T) fp32 */
    float *logits;    /* (B,T,Vp), dlogits after backward */
    float *dres;      /* (B,T,C) scratch: gradient of the residual stream */
    float *dln;       /* (B,T,C) scratch: gradient into a LayerNorm output / attention output;
                         forward: output of the c_proj matmuls */
    float *dbig;      /* (B,T,4C) scratch: dfch, dqkv */
} acts;

struct fm_model {
    fm_model_shape shape;
    int Vp;
    int max_batch;
    fm_backend *be;
    const fm_kernel_ops *ops;

    int ntensors;
    fm_model_tensor_info *tensors; /* head range, then layer 0, 1, ... (offset order) */
    size_t nparams;                /* floats in the layout */
    size_t layer_offset0;          /* offset of layer 0 = size of the head range */
    size_t layer_numel;            /* floats per layer */

    float *params; /* (nparams) */
    float *grads;  /* (nparams) */

    void *arena;
    size_t arena_bytes;
    acts a;
    layer_acts *layers; /* (L) */

    float *losses_host; /* (max_batch * maxT) */
    fm_model_memory_info mem;

    /* state of the last forward */
    int B, T;
    int have_forward;  /* logits of the last forward are valid */
    int have_targets;  /* the last forward had targets and backward has not consumed it */
};

/* ---- shapes and layout ----------------------------------------------------------------------- */

int fm_model_padded_vocab(int vocab_size)
{
    return (int)(((int64_t)vocab_size + 127) / 128 * 128);
}

fm_status fm_model_shape_check(const fm_model_shape *s)
{
    if (s->n_layer < 1) return FM_ERR(FM_ERR_CONFIG, "model: n_layer must be >= 1, got %d", s->n_layer);
    if (s->n_head < 1) return FM_ERR(FM_ERR_CONFIG, "model: n_head must be >= 1, got %d", s->n_head);
    if (s->d_model < 1) return FM_ERR(FM_ERR_CONFIG, "model: d_model must be >= 1, got %d", s->d_model);
    if (s->d_model % s->n_head != 0)
        return FM_ERR(FM_ERR_CONFIG, "model: d_model (%d) must be a multiple of n_head (%d)",
                      s->d_model, s->n_head);
    if (s->d_model > INT_MAX / 4)
        return FM_ERR(FM_ERR_CONFIG, "model: d_model %d is too large (4*d_model must fit an int)",
                      s->d_model);
    if (s->max_seq_len < 1)
        return FM_ERR(FM_ERR_CONFIG, "model: seq_len must be >= 1, got %d", s->max_seq_len);
    if (s->vocab_size < 1 || s->vocab_size > INT_MAX - 128)
        return FM_ERR(FM_ERR_CONFIG, "model: vocab_size must be in [1, %d], got %d", INT_MAX - 128,
                      s->vocab_size);
    return NULL;
}

static size_t round_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

/* Fills the tensor table; returns the number of tensors written (table may be NULL to count). */
static int build_table(const fm_model_shape *s, int Vp, fm_model_tensor_info *tab, size_t *nparams,
                       size_t *layer0, size_t *layer_numel)
{
    const int64_t C = s->d_model, L = s->n_layer;
    size_t off = 0;
    int n = 0;
    /* name suffix, rows, cols (0 = 1-D), decay, HF-transposed, is 2-D weight */
    struct spec {
        const char *name;
        int64_t rows, cols;
        int decay, hf_t;
    };
    const struct spec head[HT_COUNT] = {
        {"wte.weight", Vp, C, 1, 0},
        {"wpe.weight", s->max_seq_len, C, 1, 0},
        {"ln_f.weight", C, 0, 0, 0},
        {"ln_f.bias", C, 0, 0, 0},
    };
    const struct spec layer[LT_COUNT] = {
        {"ln_1.weight", C, 0, 0, 0},
        {"ln_1.bias", C, 0, 0, 0},
        {"attn.c_attn.weight", 3 * C, C, 1, 1},
        {"attn.c_attn.bias", 3 * C, 0, 0, 0},
        {"attn.c_proj.weight", C, C, 1, 1},
        {"attn.c_proj.bias", C, 0, 0, 0},
        {"ln_2.weight", C, 0, 0, 0},
        {"ln_2.bias", C, 0, 0, 0},
        {"mlp.c_fc.weight", 4 * C, C, 1, 1},
        {"mlp.c_fc.bias", 4 * C, 0, 0, 0},
        {"mlp.c_proj.weight", C, 4 * C, 1, 1},
        {"mlp.c_proj.bias", C, 0, 0, 0},
    };
    for (int64_t l = -1; l < L; l++) {
        const struct spec *sp = l < 0 ? head : layer;
        int count = l < 0 ? HT_COUNT : LT_COUNT;
        if (l == 0 && layer0) *layer0 = off;
        size_t start = off;
        for (int i = 0; i < count; i++) {
            size_t numel = (size_t)sp[i].rows * (size_t)(sp[i].cols ? sp[i].cols : 1);
            if (tab) {
                fm_model_tensor_info *t = &tab[n];
                memset(t, 0, sizeof *t);
                if (l < 0)
                    snprintf(t->name, sizeof t->name, "%s", sp[i].name);
                else
                    snprintf(t->name, sizeof t->name, "h.%d.%s", (int)l, sp[i].name);
                snprintf(t->hf_name, sizeof t->hf_name, "transformer.%s", t->name);
                t->ndim = sp[i].cols ? 2 : 1;
                t->shape[0] = sp[i].rows;
                t->shape[1] = sp[i].cols ? sp[i].cols : 1;
                if (sp[i].hf_t) {
                    t->hf_shape[0] = t->shape[1];
                    t->hf_shape[1] = t->shape[0];
                } else {
                    t->hf_shape[0] = t->shape[0];
                    t->hf_shape[1] = t->shape[1];
                }
                if (l < 0 && i == HT_WTE) t->hf_shape[0] = s->vocab_size;
                t->hf_transposed = sp[i].hf_t;
                t->offset = off;
                t->numel = numel;
                t->decay = sp[i].decay;
                t->layer = (int)l;
            }
            off += numel;
            n++;
        }
        if (l == 0 && layer_numel) *layer_numel = off - start;
    }
    if (nparams) *nparams = off;
    return n;
}

/* Carves views out of an arena in a fixed order; with base == NULL it only measures. */
typedef struct carver {
    char *base;
    size_t off;
} carver;

static void *carve(carver *c, size_t bytes)
{
    size_t o = c->off;
    c->off += round_up(bytes, FM_MODEL_ALIGN);
    return c->base ? (void *)(c->base + o) : NULL;
}

/* The arena plan. Returns bytes by category; fills `a` and `layers` when base != NULL. This single
 * function is both the allocator and the formula of fm_model_memory_estimate. */
static void plan_arena(const fm_model_shape *s, int Vp, int maxB, int ab, char *base, acts *a,
                       layer_acts *layers, size_t *act_bytes, size_t *logits_bytes,
                       size_t *scratch_bytes)
{
    const size_t BT = (size_t)maxB * (size_t)s->max_seq_len;
    const size_t C = (size_t)s->d_model, NH = (size_t)s->n_head;
    const size_t e = (size_t)ab; /* activation element bytes */
    carver c = {base, 0};
    acts dummy;
    if (!a) a = &dummy;

    a->tokens = carve(&c, BT * sizeof(int32_t));
    a->targets = carve(&c, BT * sizeof(int32_t));
    a->encoded = carve(&c, BT * C * e);
    for (int l = 0; l < s->n_layer; l++) {
        layer_acts la;
        la.ln1 = carve(&c, BT * C * e);
        la.ln1_mean = carve(&c, BT * 4);
        la.ln1_rstd = carve(&c, BT * 4);
        la.qkv = carve(&c, 3 * BT * C * e);
        la.atty = carve(&c, BT * C * e);
        la.att_lse = carve(&c, NH * BT * 4);
        la.res2 = carve(&c, BT * C * e);
        la.ln2 = carve(&c, BT * C * e);
        la.ln2_mean = carve(&c, BT * 4);
        la.ln2_rstd = carve(&c, BT * 4);
        la.fch = carve(&c, 4 * BT * C * e);
        la.fch_gelu = carve(&c, 4 * BT * C * e);
        la.res3 = carve(&c, BT * C * e);
        if (layers) layers[l] = la;
    }
    a->lnf = carve(&c, BT * C * e);
    a->lnf_mean = carve(&c, BT * 4);
    a->lnf_rstd = carve(&c, BT * 4);
    a->losses = carve(&c, BT * 4);
    a->loss_lse = carve(&c, BT * 4);
    size_t act_end = c.off;
    a->logits = carve(&c, BT * (size_t)Vp * e);
    size_t logits_end = c.off;
    a->dres = carve(&c, BT * C * e);
    a->dln = carve(&c, BT * C * e);
    a->dbig = carve(&c, 4 * BT * C * e);
    *act_bytes = act_end;
    *logits_bytes = logits_end - act_end;
    *scratch_bytes = c.off - logits_end;
}

fm_status fm_model_memory_estimate(const fm_model_shape *shape, int max_batch, int act_elem_bytes,
                                   fm_model_memory_info *out)
{
    memset(out, 0, sizeof *out);
    FM_TRY(fm_model_shape_check(shape));
    if (max_batch < 1)
        return FM_ERR(FM_ERR_CONFIG, "model: micro_batch must be >= 1, got %d", max_batch);
    if ((int64_t)max_batch * shape->max_seq_len > INT_MAX)
        return FM_ERR(FM_ERR_CONFIG, "model: micro_batch*seq_len = %" PRId64 " exceeds %d",
                      (int64_t)max_batch * shape->max_seq_len, INT_MAX);
    if (act_elem_bytes != 2 && act_elem_bytes != 4)
        return FM_ERR(FM_ERR_INTERNAL, "model: activation element size %d (expected 2 or 4)",
                      act_elem_bytes);
    const int Vp = fm_model_padded_vocab(shape->vocab_size);
    size_t np = 0;
    build_table(shape, Vp, NULL, &np, NULL, NULL);
    out->n_params_padded = np;
    out->n_params = np - (size_t)(Vp - shape->vocab_size) * (size_t)shape->d_model;
    out->param_bytes = 4 * np;
    out->grad_bytes = 4 * np;
    out->optim_bytes = 8 * np;
    plan_arena(shape, Vp, max_batch, act_elem_bytes, NULL, NULL, NULL, &out->act_bytes,
               &out->logits_bytes, &out->scratch_bytes);
    out->total_bytes = out->param_bytes + out->grad_bytes + out->optim_bytes + out->act_bytes +
                       out->logits_bytes + out->scratch_bytes;
    return NULL;
}

/* "124,439,808" */
static const char *group_digits(size_t v, char *buf, size_t n)
{
    char tmp[32];
    int len = snprintf(tmp, sizeof tmp, "%zu", v);
    size_t j = 0;
    for (int i = 0; i < len && j + 1 < n; i++) {
        if (i > 0 && (len - i) % 3 == 0 && j + 2 < n) buf[j++] = ',';
        buf[j++] = tmp[i];
    }
    buf[j] = '\0';
    return buf;
}

void fm_model_memory_print(const fm_model_memory_info *mem, FILE *out)
{
    char a[32], b[32], p[32], g[32], o[32], act[32], lg[32], sc[32], tot[32];
    fprintf(out, "model: %s parameters (%s in the layout with the padded vocabulary)\n",
            group_digits(mem->n_params, a, sizeof a),
            group_digits(mem->n_params_padded, b, sizeof b));
    fprintf(out,
            "model memory: parameters %s, gradients %s, AdamW state %s, activations %s, "
            "logits %s, scratch %s, total %s\n",
            fm_util_format_bytes((double)mem->param_bytes, p, sizeof p),
            fm_util_format_bytes((double)mem->grad_bytes, g, sizeof g),
            fm_util_format_bytes((double)mem->optim_bytes, o, sizeof o),
            fm_util_format_bytes((double)mem->act_bytes, act, sizeof act),
            fm_util_format_bytes((double)mem->logits_bytes, lg, sizeof lg),
            fm_util_format_bytes((double)mem->scratch_bytes, sc, sizeof sc),
            fm_util_format_bytes((double)mem->total_bytes, tot, sizeof tot));
}

/* ---- create / free --------------------------------------------------------------------------- */

fm_status fm_model_create(const fm_model_shape *shape, fm_backend *be, int max_batch,
                          fm_model **out)
{
    *out = NULL;
    fm_model_memory_info mem;
    FM_TRY(fm_model_memory_estimate(shape, max_batch, be->ops->act_bytes, &mem));

    fm_status st = NULL;
    fm_model *m = calloc(1, sizeof *m);
    FM_CHECK_ALLOC(m, sizeof *m);
    m->shape = *shape;
    m->Vp = fm_model_padded_vocab(shape->vocab_size);
    m->max_batch = max_batch;
    m->be = be;
    m->ops = be->ops;
    m->mem = mem;

    m->ntensors = build_table(shape, m->Vp, NULL, NULL, NULL, NULL);
    m->tensors = calloc((size_t)m->ntensors, sizeof *m->tensors);
    m->layers = calloc((size_t)shape->n_layer, sizeof *m->layers);
    size_t BTmax = (size_t)max_batch * (size_t)shape->max_seq_len;
    m->losses_host = malloc(BTmax * sizeof(float));
    if (!m->tensors || !m->layers || !m->losses_host) {
        st = FM_ERR(FM_ERR_NOMEM, "model: out of memory for the tensor table");
        goto fail;
    }
    build_table(shape, m->Vp, m->tensors, &m->nparams, &m->layer_offset0, &m->layer_numel);

    const size_t pbytes = m->nparams * sizeof(float);
    char buf[32];
    st = m->ops->alloc(be, (void **)&m->params, pbytes);
    if (st) {
        st = fm_status_prefix(st, "model: allocating %s of parameters: ",
                              fm_util_format_bytes((double)pbytes, buf, sizeof buf));
        goto fail;
    }
    st = m->ops->alloc(be, (void **)&m->grads, pbytes);
    if (st) {
        st = fm_status_prefix(st, "model: allocating %s of gradients: ",
                              fm_util_format_bytes((double)pbytes, buf, sizeof buf));
        goto fail;
    }
    m->arena_bytes = mem.act_bytes + mem.logits_bytes + mem.scratch_bytes;
    st = m->ops->alloc(be, &m->arena, m->arena_bytes);
    if (st) {
        st = fm_status_prefix(st, "model: allocating the %s activation arena: ",
                              fm_util_format_bytes((double)m->arena_bytes, buf, sizeof buf));
        goto fail;
    }
    size_t ab, lb, sb;
    plan_arena(shape, m->Vp, max_batch, m->ops->act_bytes, m->arena, &m->a, m->layers, &ab, &lb, &sb);
    *out = m;
    return NULL;
fail:
    fm_model_free(&m);
    return fm_status_trace(st, __FILE__, __LINE__, __func__);
}

void fm_model_free(fm_model **pm)
{
    if (!pm || !*pm) return;
    fm_model *m = *pm;
    if (m->params) m->ops->free(m->be, m->params);
    if (m->grads) m->ops->free(m->be, m->grads);
    if (m->arena) m->ops->free(m->be, m->arena);
    free(m->tensors);
    free(m->layers);
    free(m->losses_host);
    free(m);
    *pm = NULL;
}

const fm_model_shape *fm_model_get_shape(const fm_model *m) { return &m->shape; }
int fm_model_get_padded_vocab(const fm_model *m) { return m->Vp; }
int fm_model_get_max_batch(const fm_model *m) { return m->max_batch; }
fm_backend *fm_model_get_backend(const fm_model *m) { return m->be; }
void fm_model_memory(const fm_model *m, fm_model_memory_info *out) { *out = m->mem; }
size_t fm_model_num_params(const fm_model *m) { return m->nparams; }
int fm_model_num_tensors(const fm_model *m) { return m->ntensors; }
float *fm_model_params(fm_model *m) { return m->params; }
float *fm_model_grads(fm_model *m) { return m->grads; }

const fm_model_tensor_info *fm_model_tensor(const fm_model *m, int i)
{
    return (i >= 0 && i < m->ntensors) ? &m->tensors[i] : NULL;
}

const fm_model_tensor_info *fm_model_find_tensor(const fm_model *m, const char *name)
{
    for (int i = 0; i < m->ntensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0) return &m->tensors[i];
    return NULL;
}

void fm_model_layer_range(const fm_model *m, int layer, size_t *offset, size_t *count)
{
    if (layer < 0) {
        *offset = 0;
        *count = m->layer_offset0;
    } else {
        *offset = m->layer_offset0 + (size_t)layer * m->layer_numel;
        *count = m->layer_numel;
    }
}

fm_status fm_model_get_params(fm_model *m, float *host)
{
    FM_TRY(m->ops->download(m->be, host, m->params, m->nparams * sizeof(float)));
    return NULL;
}

fm_status fm_model_set_params(fm_model *m, const float *host)
{
    FM_TRY(m->ops->upload(m->be, m->params, host, m->nparams * sizeof(float)));
    return NULL;
}

fm_status fm_model_get_grads(fm_model *m, float *host)
{
    FM_TRY(m->ops->download(m->be, host, m->grads, m->nparams * sizeof(float)));
    return NULL;
}

void fm_model_zero_grads(fm_model *m) { m->ops->zero(m->be, m->grads, m->nparams * sizeof(float)); }

/* ---- initialisation -------------------------------------------------------------------------- */

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

#define FM_GOLDEN UINT64_C(0x9E3779B97F4A7C15)

/* Standard normal number for element i of the layout: Box-Muller on draws 2i and 2i+1 of the
 * splitmix64 stream whose state starts at key (counter-based: any element is computed alone). */
static double normal_at(uint64_t key, uint64_t i)
{
    uint64_t a = mix64(key + (2 * i + 1) * FM_GOLDEN);
    uint64_t b = mix64(key + (2 * i + 2) * FM_GOLDEN);
    double u1 = ((double)(a >> 11) + 1.0) * 0x1.0p-53; /* (0, 1] */
    double u2 = (double)(b >> 11) * 0x1.0p-53;         /* [0, 1) */
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586476925286766559 * u2);
}

fm_status fm_model_init_weights(fm_model *m, uint64_t seed)
{
    size_t maxn = 0;
    for (int i = 0; i < m->ntensors; i++)
        if (m->tensors[i].numel > maxn) maxn = m->tensors[i].numel;
    float *host = malloc(maxn * sizeof(float));
    FM_CHECK_ALLOC(host, maxn * sizeof(float));
    const uint64_t key = mix64(seed ^ UINT64_C(0x6D6F64656C696E74)); /* "modelint" */
    const double std_resid = 0.02 / sqrt(2.0 * m->shape.n_layer);
    const int threads = m->be->threads > 0 ? m->be->threads : 1;
    fm_status st = NULL;
    for (int i = 0; i < m->ntensors; i++) {
        const fm_model_tensor_info *t = &m->tensors[i];
        const char *dot = strrchr(t->name, '.');
        const int is_bias = dot && strcmp(dot, ".bias") == 0;
        const int is_ln = !is_bias && t->ndim == 1; /* the only 1-D weights are LayerNorm gains */
        if (is_bias) {
            memset(host, 0, t->numel * sizeof(float));
        } else if (is_ln) {
            for (size_t j = 0; j < t->numel; j++) host[j] = 1.0f;
        } else {
            const int resid = strstr(t->name, "c_proj.weight") != NULL;
            const double sd = resid ? std_resid : 0.02;
            /* wte rows >= V are padding: zero */
            size_t n_real = t->numel;
            if (t->layer < 0 && strcmp(t->name, "wte.weight") == 0)
                n_real = (size_t)m->shape.vocab_size * (size_t)m->shape.d_model;
            const size_t base = t->offset;
            const long long nr = (long long)n_real;
#pragma omp parallel for num_threads(threads) schedule(static)
            for (long long j = 0; j < nr; j++)
                host[j] = (float)(sd * normal_at(key, (uint64_t)(base + (size_t)j)));
            for (size_t j = n_real; j < t->numel; j++) host[j] = 0.0f;
        }
        FM_TRY_GOTO(st, done,
                    m->ops->upload(m->be, m->params + t->offset, host, t->numel * sizeof(float)));
    }
    FM_TRY_GOTO(st, done, m->ops->sync(m->be));
done:
    free(host);
    return st;
}

/* ---- forward --------------------------------------------------------------------------------- */

/* Views of one layer's parameters (or gradients) inside a flat buffer. */
typedef struct layer_params {
    float *ln1w, *ln1b, *qkvw, *qkvb, *attprojw, *attprojb, *ln2w, *ln2b, *fcw, *fcb, *fcprojw,
        *fcprojb;
} layer_params;

static layer_params layer_view(const fm_model *m, float *flat, int l)
{
    const fm_model_tensor_info *t = &m->tensors[HT_COUNT + l * LT_COUNT];
    layer_params p;
    p.ln1w = flat + t[LT_LN1W].offset;
    p.ln1b = flat + t[LT_LN1B].offset;
    p.qkvw = flat + t[LT_QKVW].offset;
    p.qkvb = flat + t[LT_QKVB].offset;
    p.attprojw = flat + t[LT_ATTPROJW].offset;
    p.attprojb = flat + t[LT_ATTPROJB].offset;
    p.ln2w = flat + t[LT_LN2W].offset;
    p.ln2b = flat + t[LT_LN2B].offset;
    p.fcw = flat + t[LT_FCW].offset;
    p.fcb = flat + t[LT_FCB].offset;
    p.fcprojw = flat + t[LT_FCPROJW].offset;
    p.fcprojb = flat + t[LT_FCPROJB].offset;
    return p;
}

static fm_status check_ids(const int32_t *ids, const char *what, int B, int T, int V)
{
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            int32_t v = ids[(size_t)b * (size_t)T + (size_t)t];
            if (v < 0 || v >= V)
                return FM_ERR(FM_ERR_INPUT,
                              "model: %s[%d][%d] = %" PRId32 " is outside the vocabulary [0, %d)",
                              what, b, t, v, V);
        }
    return NULL;
}

fm_status fm_model_forward(fm_model *m, const int32_t *tokens, const int32_t *targets, int B, int T,
                           float *mean_loss)
{
    const fm_kernel_ops *ops = m->ops;
    fm_backend *be = m->be;
    const int C = m->shape.d_model, NH = m->shape.n_head, L = m->shape.n_layer;
    const int V = m->shape.vocab_size, Vp = m->Vp;
    if (mean_loss) *mean_loss = NAN;
    if (B < 1 || B > m->max_batch)
        return FM_ERR(FM_ERR_INTERNAL, "model: forward with B = %d, expected 1..%d (the max_batch "
                      "the model was created with)", B, m->max_batch);
    if (T < 1 || T > m->shape.max_seq_len)
        return FM_ERR(FM_ERR_INTERNAL, "model: forward with T = %d, expected 1..%d (seq_len)", T,
                      m->shape.max_seq_len);
    FM_TRY(check_ids(tokens, "tokens", B, T, V));
    if (targets) FM_TRY(check_ids(targets, "targets", B, T, V));

    m->have_forward = 0;
    m->have_targets = 0;
    const int N = B * T;
    const size_t NC = (size_t)N * (size_t)C;
    acts *a = &m->a;
    FM_TRY(ops->upload(be, a->tokens, tokens, (size_t)N * sizeof(int32_t)));
    if (targets) FM_TRY(ops->upload(be, a->targets, targets, (size_t)N * sizeof(int32_t)));

    const fm_model_tensor_info *h = m->tensors;
    float *wte = m->params + h[HT_WTE].offset, *wpe = m->params + h[HT_WPE].offset;
    ops->encoder_forward(be, a->encoded, a->tokens, wte, wpe, B, T, C);
    const float *residual = a->encoded; /* (B,T,C) */
    for (int l = 0; l < L; l++) {
        layer_params p = layer_view(m, m->params, l);
        layer_acts *la = &m->layers[l];
        ops->layernorm_forward(be, la->ln1, la->ln1_mean, la->ln1_rstd, residual, p.ln1w, p.ln1b, N, C);
        ops->matmul_forward(be, la->qkv, la->ln1, p.qkvw, p.qkvb, N, C, 3 * C);
        ops->attention_forward(be, la->atty, la->att_lse, la->qkv, B, T, C, NH);
        ops->matmul_forward(be, a->dln, la->atty, p.attprojw, p.attprojb, N, C, C);
        ops->residual_forward(be, la->res2, residual, a->dln, NC);
        ops->layernorm_forward(be, la->ln2, la->ln2_mean, la->ln2_rstd, la->res2, p.ln2w, p.ln2b, N, C);
        ops->matmul_forward(be, la->fch, la->ln2, p.fcw, p.fcb, N, C, 4 * C);
        ops->gelu_forward(be, la->fch_gelu, la->fch, 4 * NC);
        ops->matmul_forward(be, a->dln, la->fch_gelu, p.fcprojw, p.fcprojb, N, 4 * C, C);
        ops->residual_forward(be, la->res3, la->res2, a->dln, NC);
        residual = la->res3;
    }
    ops->layernorm_forward(be, a->lnf, a->lnf_mean, a->lnf_rstd, residual,
                           m->params + h[HT_LNFW].offset, m->params + h[HT_LNFB].offset, N, C);
    ops->matmul_forward(be, a->logits, a->lnf, wte, NULL, N, C, Vp);
    m->B = B;
    m->T = T;
    if (targets) {
        ops->softmax_xent_forward(be, a->losses, a->loss_lse, a->logits, a->targets, N, V, Vp);
        FM_TRY(ops->download(be, m->losses_host, a->losses, (size_t)N * sizeof(float)));
        double sum = 0.0;
        for (int i = 0; i < N; i++) sum += (double)m->losses_host[i];
        if (mean_loss) *mean_loss = (float)(sum / N);
        m->have_targets = 1;
    }
    FM_TRY(ops->sync(be));
    m->have_forward = 1;
    return NULL;
}

fm_status fm_model_logits(fm_model *m, int b, int t, float *host)
{
    if (!m->have_forward)
        return FM_ERR(FM_ERR_INTERNAL, "model: no logits (no forward since the last backward)");
    if (b < 0 || b >= m->B || t < 0 || t >= m->T)
        return FM_ERR(FM_ERR_INTERNAL, "model: logits of (%d, %d) requested, the last forward had "
                      "B = %d, T = %d", b, t, m->B, m->T);
    if (m->ops->act_bytes != 4)
        return FM_ERR(FM_ERR_INTERNAL, "model: logits download needs fp32 activations (backend "
                      "'%s' uses %d bytes)", m->ops->name, m->ops->act_bytes);
    size_t row = (size_t)b * (size_t)m->T + (size_t)t;
    FM_TRY(m->ops->download(m->be, host, m->a.logits + row * (size_t)m->Vp,
                            (size_t)m->Vp * sizeof(float)));
    return NULL;
}

/* ---- backward -------------------------------------------------------------------------------- */

fm_status fm_model_backward(fm_model *m, float loss_scale, fm_model_grad_ready_fn ready, void *ctx)
{
    if (!m->have_targets)
        return FM_ERR(FM_ERR_INTERNAL, "model: backward without a forward with targets");
    const fm_kernel_ops *ops = m->ops;
    fm_backend *be = m->be;
    const int C = m->shape.d_model, NH = m->shape.n_head, L = m->shape.n_layer;
    const int V = m->shape.vocab_size, Vp = m->Vp;
    const int B = m->B, T = m->T, N = B * T;
    acts *a = &m->a;
    const fm_model_tensor_info *h = m->tensors;
    float *wte = m->params + h[HT_WTE].offset, *dwte = m->grads + h[HT_WTE].offset;
    m->have_targets = 0;
    m->have_forward = 0;

    /* head: dlogits in place, then dlnf (into dln) and dwte from the tied LM head */
    ops->softmax_xent_backward(be, a->logits, a->loss_lse, a->targets, loss_scale / (float)N, N, V, Vp);
    ops->matmul_backward(be, a->dln, dwte, NULL, a->logits, a->lnf, wte, N, C, Vp);
    ops->zero(be, a->dres, (size_t)N * (size_t)C * (size_t)ops->act_bytes);
    const float *last = L > 0 ? m->layers[L - 1].res3 : a->encoded;
    ops->layernorm_backward(be, a->dres, m->grads + h[HT_LNFW].offset, m->grads + h[HT_LNFB].offset,
                            a->dln, last, m->params + h[HT_LNFW].offset, a->lnf_mean, a->lnf_rstd, N, C);

    for (int l = L - 1; l >= 0; l--) {
        layer_params p = layer_view(m, m->params, l);
        layer_params g = layer_view(m, m->grads, l);
        layer_acts *la = &m->layers[l];
        const float *residual = l == 0 ? a->encoded : m->layers[l - 1].res3;
        /* MLP: res3 = res2 + c_proj(gelu(c_fc(ln2(res2)))); dres is d res3 and, after ln_2's
         * backward accumulates into it, d res2 */
        ops->matmul_backward(be, a->dbig, g.fcprojw, g.fcprojb, a->dres, la->fch_gelu, p.fcprojw, N,
                             4 * C, C);
        ops->gelu_backward(be, a->dbig, la->fch, a->dbig, (size_t)N * 4 * (size_t)C);
        ops->matmul_backward(be, a->dln, g.fcw, g.fcb, a->dbig, la->ln2, p.fcw, N, C, 4 * C);
        ops->layernorm_backward(be, a->dres, g.ln2w, g.ln2b, a->dln, la->res2, p.ln2w, la->ln2_mean,
                                la->ln2_rstd, N, C);
        /* attention: res2 = residual + c_proj(attn(c_attn(ln1(residual)))) */
        ops->matmul_backward(be, a->dln, g.attprojw, g.attprojb, a->dres, la->atty, p.attprojw, N, C, C);
        ops->attention_backward(be, a->dbig, a->dln, la->qkv, la->atty, la->att_lse, B, T, C, NH);
        ops->matmul_backward(be, a->dln, g.qkvw, g.qkvb, a->dbig, la->ln1, p.qkvw, N, C, 3 * C);
        ops->layernorm_backward(be, a->dres, g.ln1w, g.ln1b, a->dln, residual, p.ln1w, la->ln1_mean,
                                la->ln1_rstd, N, C);
        if (ready) {
            size_t off, cnt;
            fm_model_layer_range(m, l, &off, &cnt);
            FM_TRY(ops->sync(be));
            FM_TRY(ready(ctx, off, cnt));
        }
    }
    ops->encoder_backward(be, dwte, m->grads + h[HT_WPE].offset, a->dres, a->tokens, B, T, C);
    FM_TRY(ops->sync(be));
    if (ready) {
        size_t off, cnt;
        fm_model_layer_range(m, -1, &off, &cnt);
        FM_TRY(ready(ctx, off, cnt));
    }
    return NULL;
}

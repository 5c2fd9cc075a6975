/* model.c — the model core (see model.h): shapes and their defaults, the tensor table and flat
 * buffers built from a family's layout (family.h), initialisation, the activation arena, the FLOPs
 * count, and the forward / backward / decode drivers that validate inputs, upload tokens, run the
 * family's embedding, blocks and head, compute the loss and report gradients as they become final.
 *
 * Everything that touches tensor memory is a call through be->ops, made here (loss, zeroing,
 * transfers) or by the family; this file computes layouts, validates inputs, initialises weights on
 * the host and schedules. Nothing here knows a tensor's name or what a block computes. Shapes: B
 * sequences, T tokens, C channels, L layers, V vocabulary, Vp padded vocabulary, N = B*T rows.
 *
 * Precision (kernels.h, "Precision"): on a backend whose activations are bf16 (act_bytes 2) the model
 * also holds a bf16 copy of the parameters, the weights its matmuls read (fm_family_call.w); the
 * buffers a family declares as matmul inputs (fm_buffer_spec.fp32 == 0) take act_bytes per element,
 * everything else in the arena (x0, the residual stream, logits, losses, dres, the K/V caches, the
 * scratch of gradients and matmul outputs) is fp32 in every precision. The copy is re-made with one
 * to_bf16 pass whenever the masters may have changed behind it (fm_model_params handed out a
 * writable pointer), at the next forward or decode; the optimizer's AdamW pass keeps it current.
 *
 * The arena (one backend allocation; every view 64-byte aligned, sized for the largest call; a
 * smaller call uses the first rows of each view, so each stays a contiguous (B,T,...) array):
 *   training:  tokens (N) | targets (N) | x0 (N,C) | L x the family's layer activations (N rows) |
 *              head activations (N rows) | losses (N) | loss lse (N) || logits (N,Vp) ||
 *              dres (N,C) | the family's scratch (N rows)
 *   decode:    tokens (N) | x0 (N,C) | min(L,2) x the layer activations (N rows; block l uses set
 *              l%2, so its input, the previous block's output, is never overwritten) | head
 *              activations (1 row) || logits (B,Vp) || forward scratch (N rows) ||
 *              L x (K cache, V cache) (B,maxT,kv_per_row) each
 *   forward-only (FM_MODEL_EVAL): the training arena with min(L,2) sets of layer activations (as
 *              decode) and without dres and the backward-only scratch:
 *              tokens (N) | targets (N) | x0 (N,C) | min(L,2) x the layer activations (N rows) |
 *              head activations (N rows) | losses (N) | loss lse (N) || logits (N,Vp) ||
 *              forward scratch (N rows)
 *   with N = max_batch * max_seq_len. dres is the residual stream's gradient (N,C): zeroed before
 *   the head's backward, accumulated into by the head, then carried down through the blocks (each
 *   block's backward turns d(output) into d(input) in place) into the embedding's backward. The
 *   logits are overwritten in place by dlogits (no second (N,Vp) buffer). One planner, plan_arena,
 *   both carves the arena and is the formula of fm_model_memory_estimate.
 */
#define _POSIX_C_SOURCE 200809L

#include "model/model.h"

#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "core/util.h"
#include "model/family.h"

#define FM_MODEL_ALIGN 64 /* bytes: every view of the arena starts on a cache line */

/* Views of the arena (see the top of this file). */
typedef struct views {
    int32_t *tokens;                 /* (N) device copy */
    int32_t *targets;                /* (N) device copy; training */
    float *x0;                       /* (N,C) the embedding's output */
    float **layer_acts;              /* (nsets * n_layer_acts): set s, activation i at s*n + i */
    float *head_acts[FM_FAMILY_MAX]; /* training N rows, decode 1 row */
    float *losses;                   /* (N) fp32; training */
    float *loss_lse;                 /* (N) fp32; training */
    float *logits;                   /* training (N,Vp) (dlogits after backward); decode (B,Vp) */
    float *dres;                     /* (N,C) d residual stream; training */
    float *scratch[FM_FAMILY_MAX];   /* the family's scratch (train_only ones NULL in decode) */
    float **kcache, **vcache;        /* (L) each (B,maxT,kv_per_row); decode */
} views;

struct fm_model {
    fm_model_shape shape;
    const fm_family *fam;
    fm_family_layout lay;
    fm_model_mode mode;
    int Vp;
    int max_batch;
    fm_backend *be;
    const fm_kernel_ops *ops;

    int ntensors;
    fm_model_tensor_info *tensors; /* head range, then layer 0, 1, ... (offset order) */
    size_t nparams;                /* floats in the layout */
    size_t layer_offset0;          /* offset of layer 0 = size of the head range */
    size_t layer_numel;            /* floats per layer */

    float *params;       /* (nparams) fp32 masters */
    void *params_bf16;   /* (nparams) bf16 copy the matmuls read; NULL in fp32 */
    int bf16_stale;      /* 1: params may have changed since params_bf16 was made */
    float *grads;        /* (nparams); NULL in decode */
    int given;           /* bits: params (1), params_bf16 (2), grads (4) are the caller's
                            (fm_model_options), not freed here */
    float **pview;       /* (ntensors) parameter tensor i = params + tensors[i].offset */
    float **wview;       /* (ntensors) tensor i as matmuls read it: in params_bf16 (bf16) or pview */
    float **gview;       /* (ntensors) the same in grads; NULL in decode */

    void *arena;
    size_t arena_bytes;
    int nsets; /* layer activation sets: L (training), min(L, 2) (decode) */
    views v;

    float *losses_host; /* (max_batch * maxT); training */
    fm_model_memory_info mem;

    /* state of the last forward (training) */
    int B, T;
    int have_forward; /* logits of the last forward are valid */
    int have_targets; /* the last forward had targets and backward has not consumed it */
    int have_loss;    /* losses_host holds the per-position losses of the last forward */
    float fused_scale; /* > 0: forwards with targets run the fused classifier for this loss_scale */
    int have_dlogits;  /* the last forward's fused classifier left dlogits in place of the logits */
    /* decode state */
    int dec_pos; /* tokens per sequence in the caches */
    int dec_B;   /* sequences since the last reset (0: none yet) */
};

/* ---- shapes and layout ----------------------------------------------------------------------- */

int fm_model_padded_vocab(int vocab_size)
{
    return (int)(((int64_t)vocab_size + 127) / 128 * 128);
}

/* The family of s->arch, or an FM_ERR_CONFIG naming the known ones. */
static fm_status find_family(const fm_model_shape *s, const fm_family **out)
{
    char known[128];
    *out = NULL;
    if (!memchr(s->arch, '\0', sizeof s->arch))
        return FM_ERR(FM_ERR_CONFIG, "model: arch is not a NUL-terminated name of at most %d "
                      "characters (known: %s)", FM_MODEL_ARCH_MAX - 1,
                      fm_family_names(known, sizeof known));
    const fm_family *f = fm_family_find(s->arch);
    if (!f)
        return FM_ERR(FM_ERR_CONFIG, "model: unknown model family arch = '%s' (known: %s)", s->arch,
                      fm_family_names(known, sizeof known));
    *out = f;
    return NULL;
}

fm_status fm_model_shape_check(const fm_model_shape *s)
{
    const fm_family *fam = NULL;
    FM_TRY(find_family(s, &fam));
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
    if (s->n_kv_head < 0 || (s->n_kv_head > 0 && s->n_head % s->n_kv_head != 0))
        return FM_ERR(FM_ERR_CONFIG, "model: n_kv_head = %d must divide n_head = %d (or be 0: n_head)",
                      s->n_kv_head, s->n_head);
    if (s->ffn_dim < 0 || s->ffn_dim > INT_MAX / 2)
        return FM_ERR(FM_ERR_CONFIG, "model: ffn_dim must be in [0, %d] (0: the family's rule), got %d",
                      INT_MAX / 2, s->ffn_dim);
    if (!(s->rope_theta >= 0.0 && s->rope_theta <= 1e30))
        return FM_ERR(FM_ERR_CONFIG, "model: rope_theta must be a positive number (0: the default "
                      "%g), got %g", FM_MODEL_ROPE_THETA_DEFAULT, s->rope_theta);
    if (!(s->norm_eps >= 0.0 && s->norm_eps <= 1.0))
        return FM_ERR(FM_ERR_CONFIG, "model: norm_eps must be in (0, 1] (0: the default %g), got %g",
                      FM_MODEL_NORM_EPS_DEFAULT, s->norm_eps);
    if (s->tie_embeddings != FM_TIE_DEFAULT && s->tie_embeddings != FM_TIE_YES &&
        s->tie_embeddings != FM_TIE_NO)
        return FM_ERR(FM_ERR_CONFIG, "model: tie_embeddings = %d is not FM_TIE_DEFAULT, FM_TIE_YES or "
                      "FM_TIE_NO", s->tie_embeddings);
    if (fam->check) FM_TRY(fam->check(s));
    return NULL;
}

fm_status fm_model_shape_resolve(const fm_model_shape *shape, fm_model_shape *out)
{
    FM_TRY(fm_model_shape_check(shape));
    fm_model_shape s = *shape;
    if (s.n_kv_head == 0) s.n_kv_head = s.n_head;
    if (s.norm_eps == 0.0) s.norm_eps = FM_MODEL_NORM_EPS_DEFAULT;
    if (s.rope_theta == 0.0) s.rope_theta = FM_MODEL_ROPE_THETA_DEFAULT;
    const fm_family *fam = fm_family_find(s.arch);
    if (fam->resolve) fam->resolve(&s);
    FM_TRY(fm_model_shape_check(&s));
    *out = s;
    return NULL;
}

static size_t round_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

static size_t spec_numel(const fm_tensor_spec *sp)
{
    return (size_t)sp->rows * (size_t)(sp->cols ? sp->cols : 1);
}

/* The spec of tensor i of the table (head tensors, then the layers' tensors in turn). */
static const fm_tensor_spec *spec_of(const fm_family_layout *lay, int i)
{
    return i < lay->n_head_tensors ? &lay->head_tensors[i]
                                   : &lay->layer_tensors[(i - lay->n_head_tensors) % lay->n_layer_tensors];
}

/* Sizes of the layout: floats, real parameters, head range, one layer. */
static void layout_sizes(const fm_family_layout *lay, int L, size_t *nparams, size_t *nreal,
                         size_t *layer0, size_t *layer_numel)
{
    size_t head = 0, layer = 0, real = 0;
    for (int i = 0; i < lay->n_head_tensors; i++) {
        const fm_tensor_spec *sp = &lay->head_tensors[i];
        head += spec_numel(sp);
        real += (size_t)sp->real_rows * (size_t)(sp->cols ? sp->cols : 1);
    }
    for (int i = 0; i < lay->n_layer_tensors; i++) {
        const fm_tensor_spec *sp = &lay->layer_tensors[i];
        layer += spec_numel(sp);
        real += (size_t)L * (size_t)sp->real_rows * (size_t)(sp->cols ? sp->cols : 1);
    }
    if (nparams) *nparams = head + (size_t)L * layer;
    if (nreal) *nreal = real;
    if (layer0) *layer0 = head;
    if (layer_numel) *layer_numel = layer;
}

/* Fills the tensor table (head range, then layer 0, 1, ...), contiguous in table order. */
static void build_table(const fm_family *fam, const fm_family_layout *lay, int L,
                        fm_model_tensor_info *tab)
{
    size_t off = 0;
    int n = 0;
    for (int l = -1; l < L; l++) {
        const int count = l < 0 ? lay->n_head_tensors : lay->n_layer_tensors;
        for (int i = 0; i < count; i++, n++) {
            const fm_tensor_spec *sp = spec_of(lay, n);
            fm_model_tensor_info *t = &tab[n];
            memset(t, 0, sizeof *t);
            if (l < 0) {
                snprintf(t->name, sizeof t->name, "%s", sp->name);
                snprintf(t->hf_name, sizeof t->hf_name, "%s", sp->hf_name);
            } else {
                snprintf(t->name, sizeof t->name, "%s%d.%s", fam->layer_prefix, l, sp->name);
                snprintf(t->hf_name, sizeof t->hf_name, "%s%d.%s", fam->hf_layer_prefix, l,
                         sp->hf_name);
            }
            t->ndim = sp->cols ? 2 : 1;
            t->shape[0] = sp->rows;
            t->shape[1] = sp->cols ? sp->cols : 1;
            if (sp->hf_transposed) {
                t->hf_shape[0] = t->shape[1];
                t->hf_shape[1] = sp->real_rows;
            } else {
                t->hf_shape[0] = sp->real_rows;
                t->hf_shape[1] = t->shape[1];
            }
            t->hf_transposed = sp->hf_transposed;
            t->offset = off;
            t->numel = spec_numel(sp);
            t->decay = sp->decay;
            t->layer = l;
            off += t->numel;
        }
    }
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

static size_t buffer_bytes(const fm_buffer_spec *b, size_t rows, size_t e)
{
    return rows * (size_t)b->per_row * (b->fp32 ? 4 : e);
}

typedef struct arena_sizes {
    size_t act, logits, scratch, kv;
} arena_sizes;

/* The arena plan (the top of this file). Returns bytes by category; fills *v when base != NULL
 * (v->layer_acts, v->kcache, v->vcache must then have room for nsets*n_layer_acts and L entries).
 * This single function is both the allocator and the formula of fm_model_memory_estimate. */
static void plan_arena(const fm_family_layout *lay, const fm_model_shape *s, int Vp,
                       const fm_model_options *o, int ab, char *base, views *v, arena_sizes *out)
{
    const int decode = o->mode == FM_MODEL_DECODE, train = o->mode == FM_MODEL_TRAIN;
    const size_t N = (size_t)o->max_batch * (size_t)s->max_seq_len;
    const size_t C = (size_t)s->d_model, e = (size_t)ab;
    const size_t head_rows = decode ? 1 : N, logit_rows = decode ? (size_t)o->max_batch : N;
    const int nsets = train ? s->n_layer : (s->n_layer < 2 ? s->n_layer : 2);
    carver c = {base, 0};
    views dummy;
    if (!base) v = &dummy;
    const int fill = base != NULL;

    v->tokens = carve(&c, N * sizeof(int32_t));
    v->targets = decode ? NULL : carve(&c, N * sizeof(int32_t));
    v->x0 = carve(&c, N * C * 4); /* the residual stream: fp32 */
    for (int set = 0; set < nsets; set++)
        for (int i = 0; i < lay->n_layer_acts; i++) {
            float *p = carve(&c, buffer_bytes(&lay->layer_acts[i], N, e));
            if (fill) v->layer_acts[set * lay->n_layer_acts + i] = p;
        }
    for (int i = 0; i < lay->n_head_acts; i++)
        v->head_acts[i] = carve(&c, buffer_bytes(&lay->head_acts[i], head_rows, e));
    v->losses = decode ? NULL : carve(&c, N * 4);
    v->loss_lse = decode ? NULL : carve(&c, N * 4);
    const size_t act_end = c.off;
    v->logits = carve(&c, logit_rows * (size_t)Vp * 4); /* a matmul output: fp32 */
    const size_t logits_end = c.off;
    v->dres = train ? carve(&c, N * C * 4) : NULL; /* a gradient: fp32 */
    for (int i = 0; i < lay->n_scratch; i++)
        v->scratch[i] = !train && lay->scratch[i].train_only
                            ? NULL
                            : carve(&c, buffer_bytes(&lay->scratch[i], N, e));
    const size_t scratch_end = c.off;
    if (decode) {
        /* k and v come from the fp32 q|k|v matmul output; the caches are fp32 in every precision */
        const size_t cache = (size_t)o->max_batch * (size_t)s->max_seq_len * (size_t)lay->kv_per_row * 4;
        for (int l = 0; l < s->n_layer; l++) {
            float *k = carve(&c, cache), *vv = carve(&c, cache);
            if (fill) {
                v->kcache[l] = k;
                v->vcache[l] = vv;
            }
        }
    }
    out->act = act_end;
    out->logits = logits_end - act_end;
    out->scratch = scratch_end - logits_end;
    out->kv = c.off - scratch_end;
}

/* Checks the options against the shape. */
static fm_status check_options(const fm_model_shape *shape, const fm_model_options *o)
{
    if (o->mode != FM_MODEL_TRAIN && o->mode != FM_MODEL_DECODE && o->mode != FM_MODEL_EVAL)
        return FM_ERR(FM_ERR_INTERNAL, "model: unknown mode %d", (int)o->mode);
    if (o->max_batch < 1)
        return FM_ERR(FM_ERR_CONFIG, "model: micro_batch must be >= 1, got %d", o->max_batch);
    if ((int64_t)o->max_batch * shape->max_seq_len > INT_MAX)
        return FM_ERR(FM_ERR_CONFIG, "model: micro_batch*seq_len = %" PRId64 " exceeds %d",
                      (int64_t)o->max_batch * shape->max_seq_len, INT_MAX);
    if (o->grads && o->mode != FM_MODEL_TRAIN)
        return FM_ERR(FM_ERR_INTERNAL, "model: gradient memory given to a model that has none");
    return NULL;
}

fm_status fm_model_memory_estimate_opts(const fm_model_shape *shape, const fm_model_options *opts,
                                        int act_elem_bytes, fm_model_memory_info *out)
{
    memset(out, 0, sizeof *out);
    fm_model_shape rs;
    FM_TRY(fm_model_shape_resolve(shape, &rs));
    shape = &rs;
    FM_TRY(check_options(shape, opts));
    if (act_elem_bytes != 2 && act_elem_bytes != 4)
        return FM_ERR(FM_ERR_INTERNAL, "model: activation element size %d (expected 2 or 4)",
                      act_elem_bytes);
    const fm_family *fam = fm_family_find(shape->arch);
    fm_family_layout lay;
    const int Vp = fm_model_padded_vocab(shape->vocab_size);
    fam->layout(shape, Vp, &lay);
    size_t np = 0, nreal = 0;
    layout_sizes(&lay, shape->n_layer, &np, &nreal, NULL, NULL);
    const int train = opts->mode == FM_MODEL_TRAIN;
    out->n_params_padded = np;
    out->n_params = nreal;
    out->param_bytes = 4 * np;
    out->param_copy_bytes = act_elem_bytes == 2 ? 2 * np : 0;
    out->grad_bytes = train ? 4 * np : 0;
    out->optim_bytes = train ? 8 * np : 0;
    arena_sizes as;
    plan_arena(&lay, shape, Vp, opts, act_elem_bytes, NULL, NULL, &as);
    out->act_bytes = as.act;
    out->logits_bytes = as.logits;
    out->scratch_bytes = as.scratch;
    out->kv_bytes = as.kv;
    out->total_bytes = out->param_bytes + out->param_copy_bytes + out->grad_bytes +
                       out->optim_bytes + out->act_bytes + out->logits_bytes + out->scratch_bytes +
                       out->kv_bytes;
    return NULL;
}

double fm_model_flops_per_token(const fm_model_shape *shape, int T)
{
    fm_model_shape s;
    fm_status st = fm_model_shape_resolve(shape, &s);
    if (st) {
        fm_status_free(&st);
        return 0.0;
    }
    const fm_family *fam = fm_family_find(s.arch);
    fm_family_layout lay;
    fam->layout(&s, fm_model_padded_vocab(s.vocab_size), &lay);
    double mm = 0.0; /* matmul weights (real rows) */
    for (int i = 0; i < lay.n_head_tensors; i++)
        if (lay.head_tensors[i].matmul)
            mm += (double)lay.head_tensors[i].real_rows * (double)lay.head_tensors[i].cols;
    for (int i = 0; i < lay.n_layer_tensors; i++)
        if (lay.layer_tensors[i].matmul)
            mm += (double)s.n_layer * (double)lay.layer_tensors[i].real_rows *
                  (double)lay.layer_tensors[i].cols;
    /* attention: per query token and head, 2*hs per key for q.k and as much for p.v over (on
     * average) T/2 keys, times 3 for forward + backward: 6*hs*T/2*2 = 6*hs*T, summed over NH heads */
    const double hs = (double)s.d_model / s.n_head;
    return 6.0 * mm + 6.0 * (double)s.n_layer * (double)s.n_head * hs * (double)T;
}

fm_status fm_model_memory_estimate(const fm_model_shape *shape, int max_batch, int act_elem_bytes,
                                   fm_model_memory_info *out)
{
    const fm_model_options o = {.mode = FM_MODEL_TRAIN, .max_batch = max_batch};
    FM_TRY(fm_model_memory_estimate_opts(shape, &o, act_elem_bytes, out));
    return NULL;
}

/* ---- ZeRO shards of the layout and the model state per rank ([train] zero) ---------------- */

/* Where split point p (a float of the layout) lands when moved to the nearest row boundary of the
 * tensor [start, start+n) with rows of `row` floats that holds it (ties go up, past the end never):
 * the checkpoint file layer's rule, so a rank's part of every tensor is whole rows. */
static size_t snap_to_row(size_t p, size_t start, size_t n, size_t row)
{
    size_t x = p - start, down = x - x % row, up = down + row;
    return start + ((x - down) * 2 < row || up > n ? down : up);
}

fm_status fm_model_shard_bounds(const fm_model_shape *shape, int nranks, size_t *bounds)
{
    if (nranks < 1)
        return FM_ERR(FM_ERR_INTERNAL, "model: shard plan over %d ranks (expected >= 1)", nranks);
    fm_model_shape s;
    FM_TRY(fm_model_shape_resolve(shape, &s));
    const fm_family *fam = fm_family_find(s.arch);
    fm_family_layout lay;
    fam->layout(&s, fm_model_padded_vocab(s.vocab_size), &lay);
    size_t P = 0;
    layout_sizes(&lay, s.n_layer, &P, NULL, NULL, NULL);
    const size_t q = P / (size_t)nranks, rem = P % (size_t)nranks;
    bounds[0] = 0;
    bounds[nranks] = P;
    /* Walk the tensors once; split points increase with r. */
    const int ntensors = lay.n_head_tensors + s.n_layer * lay.n_layer_tensors;
    size_t start = 0;
    int i = 0;
    for (int r = 1; r < nranks; r++) {
        size_t p = q * (size_t)r + (rem * (size_t)r) / (size_t)nranks;
        const fm_tensor_spec *sp = spec_of(&lay, i);
        while (i < ntensors - 1 && p >= start + spec_numel(sp)) {
            start += spec_numel(sp);
            sp = spec_of(&lay, ++i);
        }
        size_t b = snap_to_row(p, start, spec_numel(sp), (size_t)(sp->cols ? sp->cols : 1));
        bounds[r] = b < bounds[r - 1] ? bounds[r - 1] : b;
    }
    return NULL;
}

fm_status fm_model_zero_memory(const fm_model_shape *shape, int stage, int nranks,
                               size_t comm_bytes, fm_model_zero_bytes *out)
{
    memset(out, 0, sizeof *out);
    if (stage < 0 || stage > 2)
        return FM_ERR(FM_ERR_INTERNAL, "model: ZeRO stage %d (expected 0, 1 or 2)", stage);
    size_t *b = malloc(((size_t)(nranks > 0 ? nranks : 1) + 1) * sizeof *b);
    FM_CHECK_ALLOC(b, ((size_t)(nranks > 0 ? nranks : 1) + 1) * sizeof *b);
    fm_status st = fm_model_shard_bounds(shape, nranks, b);
    if (st) {
        free(b);
        return st;
    }
    size_t P = b[nranks], largest = 0;
    for (int r = 0; r < nranks; r++)
        if (b[r + 1] - b[r] > largest) largest = b[r + 1] - b[r];
    free(b);
    out->stage = stage;
    out->nranks = nranks;
    out->params = 4 * P;
    out->grads = 4 * P;
    out->optim = 8 * (stage == 0 ? P : largest);
    out->comm = nranks > 1 ? comm_bytes : 0;
    out->total = out->params + out->grads + out->optim + out->comm;
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
    char a[32], b[32], p[32], g[32], o[32], act[32], lg[32], sc[32], kv[32], tot[32], cp[64];
    fprintf(out, "model: %s parameters (%s in the layout with the padded vocabulary)\n",
            group_digits(mem->n_params, a, sizeof a),
            group_digits(mem->n_params_padded, b, sizeof b));
    kv[0] = '\0';
    if (mem->kv_bytes) {
        char k[32];
        snprintf(kv, sizeof kv, "K/V cache %s, ",
                 fm_util_format_bytes((double)mem->kv_bytes, k, sizeof k));
    }
    cp[0] = '\0';
    if (mem->param_copy_bytes) {
        char k[32];
        snprintf(cp, sizeof cp, "bf16 weight copy %s, ",
                 fm_util_format_bytes((double)mem->param_copy_bytes, k, sizeof k));
    }
    fprintf(out,
            "model memory: parameters %s, %sgradients %s, AdamW state %s, activations %s, "
            "logits %s, scratch %s, %stotal %s\n",
            fm_util_format_bytes((double)mem->param_bytes, p, sizeof p), cp,
            fm_util_format_bytes((double)mem->grad_bytes, g, sizeof g),
            fm_util_format_bytes((double)mem->optim_bytes, o, sizeof o),
            fm_util_format_bytes((double)mem->act_bytes, act, sizeof act),
            fm_util_format_bytes((double)mem->logits_bytes, lg, sizeof lg),
            fm_util_format_bytes((double)mem->scratch_bytes, sc, sizeof sc), kv,
            fm_util_format_bytes((double)mem->total_bytes, tot, sizeof tot));
}

/* ---- create / free --------------------------------------------------------------------------- */

/* Backend allocation of `bytes` into *ptr; on failure the status says what it was for. */
static fm_status alloc_named(fm_model *m, void **ptr, size_t bytes, const char *what)
{
    fm_status st = m->ops->alloc(m->be, ptr, bytes);
    if (st) {
        char buf[32];
        return fm_status_prefix(st, "model: allocating %s of %s: ",
                                fm_util_format_bytes((double)bytes, buf, sizeof buf), what);
    }
    return NULL;
}

fm_status fm_model_create_opts(const fm_model_shape *shape, fm_backend *be,
                               const fm_model_options *opts, fm_model **out)
{
    *out = NULL;
    fm_model_memory_info mem;
    FM_TRY(fm_model_memory_estimate_opts(shape, opts, be->ops->act_bytes, &mem));

    fm_model_shape resolved;
    FM_TRY(fm_model_shape_resolve(shape, &resolved));
    shape = &resolved;

    fm_status st = NULL;
    fm_model *m = calloc(1, sizeof *m);
    FM_CHECK_ALLOC(m, sizeof *m);
    m->shape = *shape;
    m->fam = fm_family_find(shape->arch);
    m->mode = opts->mode;
    m->Vp = fm_model_padded_vocab(shape->vocab_size);
    m->max_batch = opts->max_batch;
    m->be = be;
    m->ops = be->ops;
    m->mem = mem;
    m->fam->layout(shape, m->Vp, &m->lay);
    const int L = shape->n_layer, train = opts->mode == FM_MODEL_TRAIN;
    const int decode = opts->mode == FM_MODEL_DECODE, losses = !decode; /* train and eval */
    m->nsets = train ? L : (L < 2 ? L : 2);

    m->ntensors = m->lay.n_head_tensors + L * m->lay.n_layer_tensors;
    layout_sizes(&m->lay, L, &m->nparams, NULL, &m->layer_offset0, &m->layer_numel);
    m->tensors = calloc((size_t)m->ntensors, sizeof *m->tensors);
    m->pview = calloc((size_t)m->ntensors, sizeof *m->pview);
    m->wview = calloc((size_t)m->ntensors, sizeof *m->wview);
    m->gview = train ? calloc((size_t)m->ntensors, sizeof *m->gview) : NULL;
    m->v.layer_acts = calloc((size_t)m->nsets * (size_t)m->lay.n_layer_acts, sizeof(float *));
    m->v.kcache = decode ? calloc((size_t)L, sizeof(float *)) : NULL;
    m->v.vcache = decode ? calloc((size_t)L, sizeof(float *)) : NULL;
    const size_t BTmax = (size_t)opts->max_batch * (size_t)shape->max_seq_len;
    m->losses_host = losses ? malloc(BTmax * sizeof(float)) : NULL;
    if (!m->tensors || !m->pview || !m->wview || (train && !m->gview) || (losses && !m->losses_host) ||
        !m->v.layer_acts || (decode && (!m->v.kcache || !m->v.vcache))) {
        st = FM_ERR(FM_ERR_NOMEM, "model: out of memory for the tensor table");
        goto fail;
    }
    build_table(m->fam, &m->lay, L, m->tensors);

    const size_t pbytes = m->nparams * sizeof(float);
    if ((opts->params || opts->params_bf16 || opts->grads) && !m->ops->caps.host_memory) {
        st = FM_ERR(FM_ERR_INTERNAL, "model: backend %s cannot use host memory given by the caller",
                    m->ops->name);
        goto fail;
    }
    if ((uintptr_t)opts->params % 64 || (uintptr_t)opts->params_bf16 % 64 ||
        (uintptr_t)opts->grads % 64) {
        st =
            FM_ERR(FM_ERR_INTERNAL, "model: memory given by the caller must be 64-byte aligned, as "
                                    "the backend's own allocations are (the views' alignment)");
        goto fail;
    }
    if (opts->params_bf16 && !mem.param_copy_bytes) {
        st = FM_ERR(FM_ERR_INTERNAL, "model: a bf16 weight copy given to a model without one");
        goto fail;
    }
    m->given = (opts->params ? 1 : 0) | (opts->params_bf16 ? 2 : 0) | (opts->grads ? 4 : 0);
    m->params = opts->params;
    m->params_bf16 = opts->params_bf16;
    m->grads = opts->grads;
    if (!m->params)
        FM_TRY_GOTO(st, fail, alloc_named(m, (void **)&m->params, pbytes, "parameters"));
    if (mem.param_copy_bytes && !m->params_bf16)
        FM_TRY_GOTO(st, fail, alloc_named(m, &m->params_bf16, mem.param_copy_bytes,
                                          "the bf16 weight copy"));
    if (train && !m->grads)
        FM_TRY_GOTO(st, fail, alloc_named(m, (void **)&m->grads, pbytes, "gradients"));
    m->arena_bytes = mem.act_bytes + mem.logits_bytes + mem.scratch_bytes + mem.kv_bytes;
    FM_TRY_GOTO(st, fail, alloc_named(m, &m->arena, m->arena_bytes,
                                      decode ? "the decode arena" : "the activation arena"));
    arena_sizes as;
    plan_arena(&m->lay, shape, m->Vp, opts, m->ops->act_bytes, m->arena, &m->v, &as);
    for (int i = 0; i < m->ntensors; i++) {
        m->pview[i] = m->params + m->tensors[i].offset;
        m->wview[i] = m->params_bf16 ? (float *)((char *)m->params_bf16 + 2 * m->tensors[i].offset)
                                     : m->pview[i];
        if (train) m->gview[i] = m->grads + m->tensors[i].offset;
    }
    m->bf16_stale = m->params_bf16 != NULL; /* zero masters, zero copy: consistent, but made once */
    *out = m;
    return NULL;
fail:
    fm_model_free(&m);
    return fm_status_trace(st, __FILE__, __LINE__, __func__);
}

fm_status fm_model_create(const fm_model_shape *shape, fm_backend *be, int max_batch,
                          fm_model **out)
{
    const fm_model_options o = {.mode = FM_MODEL_TRAIN, .max_batch = max_batch};
    FM_TRY(fm_model_create_opts(shape, be, &o, out));
    return NULL;
}

void fm_model_free(fm_model **pm)
{
    if (!pm || !*pm) return;
    fm_model *m = *pm;
    if (m->params && !(m->given & 1)) m->ops->free(m->be, m->params);
    if (m->params_bf16 && !(m->given & 2)) m->ops->free(m->be, m->params_bf16);
    if (m->grads && !(m->given & 4)) m->ops->free(m->be, m->grads);
    if (m->arena) m->ops->free(m->be, m->arena);
    free(m->tensors);
    free(m->pview);
    free(m->wview);
    free(m->gview);
    free(m->v.layer_acts);
    free(m->v.kcache);
    free(m->v.vcache);
    free(m->losses_host);
    free(m);
    *pm = NULL;
}

const fm_model_shape *fm_model_get_shape(const fm_model *m) { return &m->shape; }
const char *fm_model_arch(const fm_model *m) { return m->fam->name; }
fm_model_mode fm_model_get_mode(const fm_model *m) { return m->mode; }
int fm_model_get_padded_vocab(const fm_model *m) { return m->Vp; }
int fm_model_get_max_batch(const fm_model *m) { return m->max_batch; }
fm_backend *fm_model_get_backend(const fm_model *m) { return m->be; }
void fm_model_memory(const fm_model *m, fm_model_memory_info *out) { *out = m->mem; }
size_t fm_model_num_params(const fm_model *m) { return m->nparams; }
int fm_model_num_tensors(const fm_model *m) { return m->ntensors; }
float *fm_model_params(fm_model *m)
{
    m->bf16_stale = m->params_bf16 != NULL; /* the caller may write the masters */
    return m->params;
}

float *fm_model_params_for_update(fm_model *m, void **params_bf16)
{
    *params_bf16 = m->params_bf16;
    return m->params;
}

/* Re-makes the bf16 copy from the masters when they may have changed (no-op in fp32). */
static fm_status refresh_bf16(fm_model *m)
{
    if (!m->params_bf16 || !m->bf16_stale) return NULL;
    m->ops->to_bf16(m->be, m->params_bf16, m->params, m->nparams);
    FM_TRY(m->ops->sync(m->be));
    m->bf16_stale = 0;
    return NULL;
}
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
    m->bf16_stale = m->params_bf16 != NULL;
    FM_TRY(refresh_bf16(m));
    return NULL;
}

fm_status fm_model_get_grads(fm_model *m, float *host)
{
    if (!m->grads) return FM_ERR(FM_ERR_INTERNAL, "model: a decode model has no gradients");
    FM_TRY(m->ops->download(m->be, host, m->grads, m->nparams * sizeof(float)));
    return NULL;
}

void fm_model_zero_grads(fm_model *m)
{
    if (m->grads) m->ops->zero(m->be, m->grads, m->nparams * sizeof(float));
}

/* ---- initialisation -------------------------------------------------------------------------- */

fm_status fm_model_init_weights(fm_model *m, uint64_t seed)
{
    size_t maxn = 0;
    for (int i = 0; i < m->ntensors; i++)
        if (m->tensors[i].numel > maxn) maxn = m->tensors[i].numel;
    float *host = malloc(maxn * sizeof(float));
    FM_CHECK_ALLOC(host, maxn * sizeof(float));
    const uint64_t key = fm_rng_mix64(seed ^ UINT64_C(0x6D6F64656C696E74)); /* "modelint" */
    const int threads = m->be->threads > 0 ? m->be->threads : 1;
    fm_status st = NULL;
    for (int i = 0; i < m->ntensors; i++) {
        const fm_model_tensor_info *t = &m->tensors[i];
        const fm_tensor_spec *sp = spec_of(&m->lay, i);
        switch (sp->init) {
        case FM_INIT_ZERO:
            memset(host, 0, t->numel * sizeof(float));
            break;
        case FM_INIT_ONE:
            for (size_t j = 0; j < t->numel; j++) host[j] = 1.0f;
            break;
        case FM_INIT_NORMAL: {
            const size_t n_real = (size_t)sp->real_rows * (size_t)t->shape[1]; /* rest: padding */
            const double sd = sp->init_std;
            const size_t base = t->offset;
            const long long nr = (long long)n_real;
#pragma omp parallel for num_threads(threads) schedule(static)
            for (long long j = 0; j < nr; j++)
                host[j] = (float)(sd * fm_rng_normal_at(key, (uint64_t)(base + (size_t)j)));
            for (size_t j = n_real; j < t->numel; j++) host[j] = 0.0f;
            break;
        }
        }
        FM_TRY_GOTO(st, done,
                    m->ops->upload(m->be, m->params + t->offset, host, t->numel * sizeof(float)));
    }
    FM_TRY_GOTO(st, done, m->ops->sync(m->be));
    m->bf16_stale = m->params_bf16 != NULL;
    FM_TRY_GOTO(st, done, refresh_bf16(m));
done:
    free(host);
    return st;
}

/* ---- the family calls ------------------------------------------------------------------------ */

/* A call on B sequences of T tokens for the embedding and head (layer -1) or block `layer`; its
 * activations are `acts` (NULL for the embedding). */
static fm_family_call family_call(const fm_model *m, int B, int T, int layer, float *const *acts,
                                  int pos0)
{
    const size_t first = layer < 0 ? 0
                                   : (size_t)m->lay.n_head_tensors +
                                         (size_t)layer * (size_t)m->lay.n_layer_tensors;
    fm_family_call c = {
        .be = m->be,
        .shape = &m->shape,
        .Vp = m->Vp,
        .B = B,
        .T = T,
        .layer = layer,
        .p = m->pview + first,
        .w = m->wview + first,
        .g = m->gview ? m->gview + first : NULL,
        .a = acts,
        .s = m->v.scratch,
        .tokens = m->v.tokens,
        .pos0 = pos0,
        .kcache = NULL,
        .vcache = NULL,
    };
    return c;
}

/* Activations of block l (training: its own set; decode: set l % 2). */
static float *const *layer_acts(const fm_model *m, int l)
{
    return m->v.layer_acts + (size_t)(l % m->nsets) * (size_t)m->lay.n_layer_acts;
}

/* The block output (N,C) of block l, i.e. the input of block l+1 (x0 for l == -1). */
static const float *block_out(const fm_model *m, int l)
{
    return l < 0 ? m->v.x0 : layer_acts(m, l)[m->lay.layer_out];
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

/* ---- forward (training models) -------------------------------------------------------------- */

fm_status fm_model_forward(fm_model *m, const int32_t *tokens, const int32_t *targets, int B, int T,
                           float *mean_loss)
{
    const fm_kernel_ops *ops = m->ops;
    fm_backend *be = m->be;
    const int L = m->shape.n_layer, V = m->shape.vocab_size;
    if (mean_loss) *mean_loss = NAN;
    if (m->mode == FM_MODEL_DECODE)
        return FM_ERR(FM_ERR_INTERNAL, "model: forward on a decode model (it runs fm_model_decode "
                      "only; create a training or forward-only model for forward)");
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
    m->have_loss = 0;
    m->have_dlogits = 0;
    FM_TRY(refresh_bf16(m));
    const int N = B * T;
    views *a = &m->v;
    FM_TRY(ops->upload(be, a->tokens, tokens, (size_t)N * sizeof(int32_t)));
    if (targets) FM_TRY(ops->upload(be, a->targets, targets, (size_t)N * sizeof(int32_t)));

    fm_family_call c = family_call(m, B, T, -1, NULL, 0);
    m->fam->embed_forward(&c, a->x0);
    for (int l = 0; l < L; l++) {
        c = family_call(m, B, T, l, layer_acts(m, l), 0);
        m->fam->layer_forward(&c, block_out(m, l - 1));
    }
    c = family_call(m, B, T, -1, a->head_acts, 0);
    m->fam->head_forward(&c, block_out(m, L - 1), a->logits);
    m->B = B;
    m->T = T;
    const int fused = targets && m->mode == FM_MODEL_TRAIN && m->fused_scale > 0.0f;
    if (fused) /* the dloss fm_model_backward would pass */
        ops->softmax_xent_fused(be, a->losses, a->loss_lse, a->logits, a->targets,
                                m->fused_scale / (float)N, N, V, m->Vp);
    else if (targets)
        ops->softmax_xent_forward(be, a->losses, a->loss_lse, a->logits, a->targets, N, V, m->Vp);
    if (targets) {
        FM_TRY(ops->download(be, m->losses_host, a->losses, (size_t)N * sizeof(float)));
        double sum = 0.0;
        for (int i = 0; i < N; i++) sum += (double)m->losses_host[i];
        if (mean_loss) *mean_loss = (float)(sum / N);
        m->have_targets = 1;
        m->have_loss = 1;
    }
    FM_TRY(ops->sync(be));
    m->have_forward = !fused;
    m->have_dlogits = fused;
    return NULL;
}

fm_status fm_model_set_fused_loss_scale(fm_model *m, float loss_scale)
{
    if (m->mode != FM_MODEL_TRAIN)
        return FM_ERR(FM_ERR_INTERNAL, "model: the fused classifier is for training models (this one "
                      "has no backward)");
    if (!isfinite(loss_scale) || loss_scale < 0.0f)
        return FM_ERR(FM_ERR_INTERNAL, "model: fused classifier loss_scale %g (expected finite and "
                      ">= 0; 0 turns it off)", (double)loss_scale);
    m->fused_scale = loss_scale;
    return NULL;
}

fm_status fm_model_sequence_losses(const fm_model *m, double *out)
{
    if (!m->have_loss)
        return FM_ERR(FM_ERR_INTERNAL, "model: no per-sequence losses (the last forward had no "
                      "targets, or none has run)");
    for (int b = 0; b < m->B; b++) {
        const float *l = m->losses_host + (size_t)b * (size_t)m->T;
        double sum = 0.0;
        for (int t = 0; t < m->T; t++) sum += (double)l[t];
        out[b] = sum / m->T;
    }
    return NULL;
}

fm_status fm_model_logits(fm_model *m, int b, int t, float *host)
{
    if (m->have_dlogits)
        return FM_ERR(FM_ERR_INTERNAL, "model: no logits (the last forward's fused classifier turned "
                      "them into their gradient; turn it off with fm_model_set_fused_loss_scale(m, 0) "
                      "to read logits)");
    if (!m->have_forward)
        return FM_ERR(FM_ERR_INTERNAL, "model: no logits (no forward since the last backward)");
    if (b < 0 || b >= m->B || t < 0 || t >= m->T)
        return FM_ERR(FM_ERR_INTERNAL, "model: logits of (%d, %d) requested, the last forward had "
                      "B = %d, T = %d", b, t, m->B, m->T);
    size_t row = (size_t)b * (size_t)m->T + (size_t)t;
    FM_TRY(m->ops->download(m->be, host, m->v.logits + row * (size_t)m->Vp,
                            (size_t)m->Vp * sizeof(float)));
    return NULL;
}

/* ---- backward (training models) -------------------------------------------------------------- */

fm_status fm_model_backward(fm_model *m, float loss_scale, fm_model_grad_ready_fn ready, void *ctx)
{
    if (m->mode != FM_MODEL_TRAIN)
        return FM_ERR(FM_ERR_INTERNAL, "model: backward on a %s model (no gradients; create it "
                      "with FM_MODEL_TRAIN)", m->mode == FM_MODEL_DECODE ? "decode" : "forward-only");
    if (!m->have_targets)
        return FM_ERR(FM_ERR_INTERNAL, "model: backward without a forward with targets");
    const fm_kernel_ops *ops = m->ops;
    fm_backend *be = m->be;
    const int C = m->shape.d_model, L = m->shape.n_layer;
    const int V = m->shape.vocab_size, Vp = m->Vp;
    const int B = m->B, T = m->T, N = B * T;
    views *a = &m->v;
    if (m->have_dlogits && loss_scale != m->fused_scale)
        return FM_ERR(FM_ERR_INTERNAL, "model: backward with loss_scale %g after a fused forward for "
                      "loss_scale %g (fm_model_set_fused_loss_scale: they must be equal)",
                      (double)loss_scale, (double)m->fused_scale);
    m->have_targets = 0;
    m->have_forward = 0;

    /* head: dlogits in place (unless the fused forward made them), then d x_L into dres and the
     * head tensors' gradients */
    if (!m->have_dlogits)
        ops->softmax_xent_backward(be, a->logits, a->loss_lse, a->targets, loss_scale / (float)N, N,
                                   V, Vp);
    m->have_dlogits = 0;
    ops->zero(be, a->dres, (size_t)N * (size_t)C * sizeof(float));
    fm_family_call c = family_call(m, B, T, -1, a->head_acts, 0);
    m->fam->head_backward(&c, block_out(m, L - 1), a->logits, a->dres);

    for (int l = L - 1; l >= 0; l--) {
        c = family_call(m, B, T, l, layer_acts(m, l), 0);
        m->fam->layer_backward(&c, block_out(m, l - 1), a->dres);
        if (ready) {
            size_t off, cnt;
            fm_model_layer_range(m, l, &off, &cnt);
            FM_TRY(ops->sync(be));
            FM_TRY(ready(ctx, off, cnt));
        }
    }
    c = family_call(m, B, T, -1, NULL, 0);
    m->fam->embed_backward(&c, a->dres);
    FM_TRY(ops->sync(be));
    if (ready) {
        size_t off, cnt;
        fm_model_layer_range(m, -1, &off, &cnt);
        FM_TRY(ready(ctx, off, cnt));
    }
    return NULL;
}

/* ---- decode (decode models) ------------------------------------------------------------------ */

void fm_model_decode_reset(fm_model *m)
{
    m->dec_pos = 0;
    m->dec_B = 0;
}

int fm_model_decode_position(const fm_model *m) { return m->dec_pos; }

/* Row `row` of an activation view with `per_row` elements of `e` bytes each. */
static float *act_row(float *view, size_t row, size_t per_row, size_t e)
{
    return (float *)((char *)view + row * per_row * e);
}

fm_status fm_model_decode(fm_model *m, const int32_t *tokens, int B, int n, float *logits)
{
    const fm_kernel_ops *ops = m->ops;
    fm_backend *be = m->be;
    const int L = m->shape.n_layer, maxT = m->shape.max_seq_len;
    if (m->mode != FM_MODEL_DECODE)
        return FM_ERR(FM_ERR_INTERNAL, "model: decode on a training model (create it with "
                      "FM_MODEL_DECODE, which allocates the K/V caches)");
    if (B < 1 || B > m->max_batch || (m->dec_B && B != m->dec_B))
        return FM_ERR(FM_ERR_INTERNAL, "model: decode with B = %d, expected %s%d", B,
                      m->dec_B ? "the B since the last reset, " : "1..", m->dec_B ? m->dec_B : m->max_batch);
    if (n < 1) return FM_ERR(FM_ERR_INTERNAL, "model: decode of %d tokens (expected >= 1)", n);
    if (n > maxT - m->dec_pos)
        return FM_ERR(FM_ERR_USAGE, "model: the KV cache is full: %d tokens + %d new exceed the "
                      "model's seq_len %d (reset and feed a shorter context)", m->dec_pos, n, maxT);
    FM_TRY(check_ids(tokens, "tokens", B, n, m->shape.vocab_size));

    const int pos0 = m->dec_pos;
    FM_TRY(refresh_bf16(m));
    FM_TRY(ops->upload(be, m->v.tokens, tokens, (size_t)B * (size_t)n * sizeof(int32_t)));
    fm_family_call c = family_call(m, B, n, -1, NULL, pos0);
    m->fam->embed_forward(&c, m->v.x0);
    for (int l = 0; l < L; l++) {
        c = family_call(m, B, n, l, layer_acts(m, l), pos0);
        c.kcache = m->v.kcache[l];
        c.vcache = m->v.vcache[l];
        m->fam->layer_forward(&c, block_out(m, l - 1));
    }
    m->dec_pos = pos0 + n; /* the caches now hold the new rows */
    m->dec_B = B;
    if (logits) {
        /* the head on each sequence's last new row only: (1,C) -> (1,Vp), logits row b */
        const size_t e = sizeof(float), C = (size_t)m->shape.d_model; /* block outputs, logits: fp32 */
        float *x = (float *)block_out(m, L - 1);
        for (int b = 0; b < B; b++) {
            c = family_call(m, 1, 1, -1, m->v.head_acts, pos0 + n - 1);
            m->fam->head_forward(&c, act_row(x, (size_t)b * (size_t)n + (size_t)n - 1, C, e),
                                 act_row(m->v.logits, (size_t)b, (size_t)m->Vp, e));
        }
        FM_TRY(ops->download(be, logits, m->v.logits, (size_t)B * (size_t)m->Vp * sizeof(float)));
    }
    FM_TRY(ops->sync(be));
    return NULL;
}

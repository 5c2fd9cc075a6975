/* family.h — what a model family (GPT-2, Llama, ...) gives the model core (model.c), and the family table.
 *
 * What it is: the seam between the model-independent core and one architecture. The core owns
 * everything every decoder-only transformer of this code base shares: the tensor table and the flat
 * parameter/gradient buffers built from the family's tensor specs, initialisation by the per-tensor
 * rule, the activation arena carved from the family's buffer specs, input validation and token
 * upload, the loss (fused softmax + cross-entropy over the padded vocabulary), the layer loop, the
 * gradient-ready callbacks, the K/V caches of decode models, and memory accounting. A family owns
 * the arithmetic: which tensors a block has, which activations its forward keeps, and the kernel
 * calls of its embedding, its block and its head, forward and backward. A family never allocates
 * and never sees another family; the core never names a tensor.
 *
 * What it is not: no kernels (a family calls kernels/kernels.h like any other client) and no
 * configuration keys ([model] arch is resolved by name through fm_family_find).
 *
 * The structure every family shares (what the core's loop assumes):
 *     x_0 = embed(tokens)                    (N,C) residual stream, N = B*T rows
 *     x_{l+1} = block_l(x_l), l = 0..L-1     (N,C), block_l's output is its activation `layer_out`
 *     logits = head(x_L)                     (N,Vp)
 * The parameter layout is the head range (the family's head tensors, in spec order) followed by L
 * layer ranges (its layer tensors, in spec order), each one contiguous range (a gradient bucket).
 *
 * Legend: B sequences, T new tokens per sequence, N = B*T rows, C d_model, NH heads, NKV key/value
 *         heads, hs = C/NH, F MLP hidden size, L layers, V vocabulary, Vp padded vocabulary, maxT the
 *         model's max_seq_len.
 *
 * Adding a family: docs/model.md, "Adding a model family".
 */
#ifndef FM_MODEL_FAMILY_H
#define FM_MODEL_FAMILY_H

#include <stddef.h>
#include <stdint.h>

#include "kernels.h"
#include "model/model.h"
#include "core/status.h"

/* How fm_model_init_weights fills a tensor. The core draws element i of the flat layout from the
 * counter-based normal stream of the seed (core/rng.h), so values depend on the seed and the layout
 * only, never on the order of generation or the thread count. */
typedef enum fm_init_kind {
    FM_INIT_ZERO,   /* 0 (biases) */
    FM_INIT_ONE,    /* 1 (normalisation gains) */
    FM_INIT_NORMAL  /* N(0, init_std); rows from real_rows on are padding and stay 0 */
} fm_init_kind;

/* One tensor of the parameter layout, as the family declares it for a given shape. */
typedef struct fm_tensor_spec {
    const char *name;    /* head tensor: the full name ("wte.weight"); layer tensor: the name after
                            "<layer_prefix><l>." ("ln_1.weight") */
    const char *hf_name; /* Hugging Face's name; head: full ("transformer.wte.weight"), layer: the
                            name after "<hf_layer_prefix><l>." */
    int64_t rows, cols;  /* our layout, matrices (out, in); cols == 0: a vector of `rows` */
    int64_t real_rows;   /* rows of the real model (V for a matrix padded to Vp rows, else rows):
                            rows real_rows..rows-1 are zero at init, absent from Hugging Face's
                            tensor and not counted in n_params */
    int hf_transposed;   /* 1: Hugging Face stores the (cols, real_rows) transpose (GPT-2's Conv1D) */
    int decay;           /* 1: AdamW weight decay applies */
    fm_init_kind init;
    double init_std;     /* FM_INIT_NORMAL only: the standard deviation, computed by the family
                            for this shape (e.g. GPT-2's residual projections 0.02/sqrt(2L)) */
    int matmul;          /* 1: every token's row is multiplied with this matrix (its real rows), so
                            it costs 6 FLOPs per element and token in training (the projections, the
                            LM head); 0: gathered (embeddings) or element-wise (norms, biases) */
} fm_tensor_spec;

/* One activation or scratch buffer, sized per row (token) of a call. */
typedef struct fm_buffer_spec {
    const char *name;   /* for messages and docs ("qkv") */
    int64_t per_row;    /* elements per row: C, 3C, NH, 1 */
    int fp32;           /* 1: always 4-byte floats (statistics, the residual stream, matmul outputs,
                           anything an op reads or writes as fp32 in every precision); 0: a matmul
                           input, in the activation precision (ops->act_bytes; kernels.h,
                           "Precision": the "act" arguments) */
    int train_only;     /* scratch only: used by backward alone, so a decode model has none (its
                           view is NULL) */
} fm_buffer_spec;

#define FM_FAMILY_MAX 16 /* tensors per range, buffers per list */

/* A family's layout for one shape (filled by fm_family.layout). */
typedef struct fm_family_layout {
    int n_head_tensors;                      /* embedding and head: the head range */
    fm_tensor_spec head_tensors[FM_FAMILY_MAX];
    int n_layer_tensors;                     /* one block: a layer range */
    fm_tensor_spec layer_tensors[FM_FAMILY_MAX];
    int n_layer_acts;                        /* one block's activations kept for backward */
    fm_buffer_spec layer_acts[FM_FAMILY_MAX];
    int layer_out;                           /* which layer_acts entry is the block output (N,C):
                                                the residual stream, fp32 in every precision */
    int n_head_acts;                         /* the head's activations kept for backward */
    fm_buffer_spec head_acts[FM_FAMILY_MAX];
    int n_scratch;                           /* buffers reused by every block, forward or backward */
    fm_buffer_spec scratch[FM_FAMILY_MAX];
    int64_t kv_per_row;                      /* K cache elements per token and block (V the same):
                                                C, or n_kv_head*hs with grouped-query attention */
} fm_family_layout;

/* What one family call sees. Pointers are backend memory (kernels.h): never dereferenced here. */
typedef struct fm_family_call {
    fm_backend *be;
    const fm_model_shape *shape;
    int Vp;
    int B, T;               /* B sequences of T new tokens each (N = B*T rows of every view) */
    int layer;              /* block index; -1 for embed_* and head_* */
    float *const *p;        /* the range's parameter tensors, spec order (head range for embed_* and
                               head_*, layer `layer`'s range for layer_*): the fp32 masters */
    float *const *w;        /* the same tensors as the matmuls read them: the bf16 weight copy with
                               bf16 activations, else the same pointers as p. Pass w[i] as a
                               matmul's weight, p[i] everywhere else (biases, norms, embeddings) */
    float *const *g;        /* their gradients, same order; NULL in a decode model */
    float *const *a;        /* activations, spec order: layer_acts (layer_*) or head_acts (head_*);
                               NULL for embed_* */
    float *const *s;        /* scratch, spec order (train_only entries NULL in a decode model) */
    const int32_t *tokens;  /* (B,T) int32 device copy of the token ids */
    int pos0;               /* position of each sequence's first new token: 0 in training */
    float *kcache, *vcache; /* decode: this block's caches (B, maxT, kv_per_row), rows 0..pos0-1
                               filled; NULL in training (then pos0 == 0 and T is the whole sequence) */
} fm_family_call;

/* A model family: a name, its layout, and the forward/backward of its three pieces. Kernels never
 * fail (kernels.h), so neither do these; the core checks sizes before calling. */
typedef struct fm_family {
    const char *name;            /* "gpt2": [model] arch, the checkpoint's /model arch */
    const char *summary;         /* one line for messages and docs */
    const char *layer_prefix;    /* our block tensor names: "<layer_prefix><l>.<spec name>" ("h.") */
    const char *hf_layer_prefix; /* Hugging Face's: "<hf_layer_prefix><l>.<spec hf_name>" */

    /* Rules of this family beyond fm_model_shape_check's common ones (FM_ERR_CONFIG), on a shape
     * whose "0: default" fields may still be 0; NULL: none. */
    fm_status (*check)(const fm_model_shape *s);
    /* Replaces the family-specific defaults of a checked shape: ffn_dim 0 by the family's rule,
     * tie_embeddings FM_TIE_DEFAULT by its choice, rope_theta by 0 where there is no RoPE. The core
     * has already resolved n_kv_head (NH), norm_eps and rope_theta (their defaults). Pure. */
    void (*resolve)(fm_model_shape *s);
    /* Fills *out for the resolved shape `s` with padded vocabulary Vp. Pure. */
    void (*layout)(const fm_model_shape *s, int Vp, fm_family_layout *out);

    /* x0 (N,C) = embedding of c->tokens at positions pos0..pos0+T-1 */
    void (*embed_forward)(const fm_family_call *c, float *x0);
    /* the embedding tensors' gradients (in c->g) ACCUMULATE from dx0 (N,C) */
    void (*embed_backward)(const fm_family_call *c, const float *dx0);

    /* c->a[layer_out] (N,C) = block(x (N,C)). Training keeps c->a for backward. Decode (c->kcache
     * set): appends this block's K,V of the T new tokens at cache rows pos0.. and attends over cache
     * rows 0..pos0+t (same arithmetic as training's rows; c->a is overwritten by the next block but
     * one). */
    void (*layer_forward)(const fm_family_call *c, const float *x);
    /* dx (N,C): d(block output) on entry, d(block input) on return (in place); x (N,C) the block
     * input of the forward; the block's parameter gradients (c->g) accumulate. */
    void (*layer_backward)(const fm_family_call *c, const float *x, float *dx);

    /* logits (N,Vp) = head(x (N,C)); padding columns V..Vp-1 are whatever the weights give (zero
     * rows: 0) and are ignored by the loss and by sampling. */
    void (*head_forward)(const fm_family_call *c, const float *x, float *logits);
    /* dx (N,C) ACCUMULATES d(loss)/dx from dlogits (N,Vp); head tensor gradients accumulate. */
    void (*head_backward)(const fm_family_call *c, const float *x, const float *dlogits, float *dx);
} fm_family;

/* ---- the family table (families.c) --------------------------------------------------------- */

/* The families, one file each, listed in families.c. */
extern const fm_family fm_family_gpt2;  /* gpt2.c */
extern const fm_family fm_family_llama; /* llama.c */

/* The family called `name` ("gpt2", "llama"), or NULL. */
const fm_family *fm_family_find(const char *name);

/* Family i of the table (0..), or NULL past the end. */
const fm_family *fm_family_at(int i);

/* Writes the known names as "gpt2" / "gpt2, llama" into buf (size n) and returns buf. */
const char *fm_family_names(char *buf, size_t n);

#endif /* FM_MODEL_FAMILY_H */

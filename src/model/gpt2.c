/* gpt2.c — the GPT-2 model family (family.h): Hugging Face's GPT2LMHeadModel.
 *
 * What it is: token + learned position embeddings, pre-LayerNorm blocks (causal multi-head
 * self-attention with a fused QKV projection, MLP C -> 4C -> C with tanh GELU), a final LayerNorm and
 * an LM head tied to the token embedding; LayerNorm eps 1e-5, biases everywhere. Its tensors, the
 * activations its forward keeps, and the kernel calls of its embedding, block and head, forward and
 * backward — written once: training and decoding (KV cache) run the same functions.
 * What it is not: no allocation, no loop over layers, no loss (the model core, model.c, does those).
 *
 * Shapes: B sequences, T tokens, N = B*T rows, C channels, NH heads, L layers, V vocabulary,
 * Vp padded vocabulary, maxT max_seq_len (rows of wpe).
 *
 * Memory plan (why the buffers are what they are):
 *   - kept for backward, per layer: ln1, qkv, atty, res2, ln2, fch, fch_gelu, res3 (16*N*C elements),
 *     LayerNorm mean/rstd (4*N fp32) and the attention log-sum-exp (NH*N fp32). No (T,T) tensor.
 *     With bf16 activations the matmul inputs ln1, atty, ln2, fch_gelu (7*N*C) are bf16, the rest fp32.
 *   - the outputs of attn.c_proj and mlp.c_proj are not kept: they only feed a residual add, whose
 *     backward does not need them, so they go to the scratch buffer dln.
 *   - backward needs no residual_backward: the residual stream's gradient dx (the core's (N,C)
 *     buffer) is accumulated into by the LayerNorm backward kernels while the projections' gradients
 *     read it directly (d(res + x) = dres for both). Activation gradients live in two scratch
 *     buffers reused by every layer: dln (N,C) and dbig (N,4C) (also dqkv (N,3C)).
 */
#include <math.h>

#include "model/family.h"

/* Head range, in layout order. */
enum { WTE, WPE, LNFW, LNFB, N_HEAD_TENSORS };
/* One block's tensors, in layout order. */
enum {
    LN1W, LN1B, QKVW, QKVB, ATTPROJW, ATTPROJB, LN2W, LN2B, FCW, FCB, FCPROJW, FCPROJB,
    N_LAYER_TENSORS
};
/* One block's activations kept for backward, in arena order. */
enum {
    A_LN1,      /* (N,C) */
    A_LN1_MEAN, /* (N) fp32 */
    A_LN1_RSTD, /* (N) fp32 */
    A_QKV,      /* (N,3C) */
    A_ATTY,     /* (N,C) */
    A_ATT_LSE,  /* (B,NH,T) fp32 */
    A_RES2,     /* (N,C) residual after attention */
    A_LN2,      /* (N,C) */
    A_LN2_MEAN, /* (N) fp32 */
    A_LN2_RSTD, /* (N) fp32 */
    A_FCH,      /* (N,4C) */
    A_FCH_GELU, /* (N,4C) */
    A_RES3,     /* (N,C) residual after the MLP = the block's output */
    N_LAYER_ACTS
};
enum { H_LNF, H_LNF_MEAN, H_LNF_RSTD, N_HEAD_ACTS }; /* (N,C), (N) fp32, (N) fp32 */
enum {
    S_DLN,  /* (N,C): gradient into a LayerNorm output / attention output; forward: c_proj outputs */
    S_DBIG, /* (N,4C): dfch, dqkv (backward only) */
    N_SCRATCH
};

static void gpt2_layout(const fm_model_shape *s, int Vp, fm_family_layout *o)
{
    const int64_t C = s->d_model, V = s->vocab_size, T = s->max_seq_len;
    const double sd = 0.02, sd_resid = 0.02 / sqrt(2.0 * s->n_layer);
    /* name, hf_name, rows, cols, real_rows, hf_transposed, decay, init, init_std, matmul */
    const fm_tensor_spec head[N_HEAD_TENSORS] = {
        [WTE] = {"wte.weight", "transformer.wte.weight", Vp, C, V, 0, 1, FM_INIT_NORMAL, sd, 1},
        [WPE] = {"wpe.weight", "transformer.wpe.weight", T, C, T, 0, 1, FM_INIT_NORMAL, sd},
        [LNFW] = {"ln_f.weight", "transformer.ln_f.weight", C, 0, C, 0, 0, FM_INIT_ONE, 0},
        [LNFB] = {"ln_f.bias", "transformer.ln_f.bias", C, 0, C, 0, 0, FM_INIT_ZERO, 0},
    };
    const fm_tensor_spec layer[N_LAYER_TENSORS] = {
        [LN1W] = {"ln_1.weight", "ln_1.weight", C, 0, C, 0, 0, FM_INIT_ONE, 0},
        [LN1B] = {"ln_1.bias", "ln_1.bias", C, 0, C, 0, 0, FM_INIT_ZERO, 0},
        [QKVW] = {"attn.c_attn.weight", "attn.c_attn.weight", 3 * C, C, 3 * C, 1, 1, FM_INIT_NORMAL, sd,
                  1},
        [QKVB] = {"attn.c_attn.bias", "attn.c_attn.bias", 3 * C, 0, 3 * C, 0, 0, FM_INIT_ZERO, 0},
        [ATTPROJW] = {"attn.c_proj.weight", "attn.c_proj.weight", C, C, C, 1, 1, FM_INIT_NORMAL,
                      sd_resid, 1},
        [ATTPROJB] = {"attn.c_proj.bias", "attn.c_proj.bias", C, 0, C, 0, 0, FM_INIT_ZERO, 0},
        [LN2W] = {"ln_2.weight", "ln_2.weight", C, 0, C, 0, 0, FM_INIT_ONE, 0},
        [LN2B] = {"ln_2.bias", "ln_2.bias", C, 0, C, 0, 0, FM_INIT_ZERO, 0},
        [FCW] = {"mlp.c_fc.weight", "mlp.c_fc.weight", 4 * C, C, 4 * C, 1, 1, FM_INIT_NORMAL, sd, 1},
        [FCB] = {"mlp.c_fc.bias", "mlp.c_fc.bias", 4 * C, 0, 4 * C, 0, 0, FM_INIT_ZERO, 0},
        [FCPROJW] = {"mlp.c_proj.weight", "mlp.c_proj.weight", C, 4 * C, C, 1, 1, FM_INIT_NORMAL,
                     sd_resid, 1},
        [FCPROJB] = {"mlp.c_proj.bias", "mlp.c_proj.bias", C, 0, C, 0, 0, FM_INIT_ZERO, 0},
    };
    /* name, per_row, fp32, train_only. fp32 0 (the activation precision) are the matmul inputs ln1,
     * atty, ln2, fch_gelu, lnf; qkv, fch (matmul outputs), the residuals and the scratch (matmul
     * outputs and gradients) are fp32 in every precision (kernels.h, "Precision") */
    const fm_buffer_spec acts[N_LAYER_ACTS] = {
        [A_LN1] = {"ln1", C, 0, 0},           [A_LN1_MEAN] = {"ln1_mean", 1, 1, 0},
        [A_LN1_RSTD] = {"ln1_rstd", 1, 1, 0}, [A_QKV] = {"qkv", 3 * C, 1, 0},
        [A_ATTY] = {"atty", C, 0, 0},         [A_ATT_LSE] = {"att_lse", s->n_head, 1, 0},
        [A_RES2] = {"res2", C, 1, 0},         [A_LN2] = {"ln2", C, 0, 0},
        [A_LN2_MEAN] = {"ln2_mean", 1, 1, 0}, [A_LN2_RSTD] = {"ln2_rstd", 1, 1, 0},
        [A_FCH] = {"fch", 4 * C, 1, 0},       [A_FCH_GELU] = {"fch_gelu", 4 * C, 0, 0},
        [A_RES3] = {"res3", C, 1, 0},
    };
    const fm_buffer_spec hacts[N_HEAD_ACTS] = {
        [H_LNF] = {"lnf", C, 0, 0},
        [H_LNF_MEAN] = {"lnf_mean", 1, 1, 0},
        [H_LNF_RSTD] = {"lnf_rstd", 1, 1, 0},
    };
    const fm_buffer_spec scratch[N_SCRATCH] = {
        [S_DLN] = {"dln", C, 1, 0},
        [S_DBIG] = {"dbig", 4 * C, 1, 1},
    };
    *o = (fm_family_layout){0};
    o->n_head_tensors = N_HEAD_TENSORS;
    o->n_layer_tensors = N_LAYER_TENSORS;
    o->n_layer_acts = N_LAYER_ACTS;
    o->n_head_acts = N_HEAD_ACTS;
    o->n_scratch = N_SCRATCH;
    for (int i = 0; i < N_HEAD_TENSORS; i++) o->head_tensors[i] = head[i];
    for (int i = 0; i < N_LAYER_TENSORS; i++) o->layer_tensors[i] = layer[i];
    for (int i = 0; i < N_LAYER_ACTS; i++) o->layer_acts[i] = acts[i];
    for (int i = 0; i < N_HEAD_ACTS; i++) o->head_acts[i] = hacts[i];
    for (int i = 0; i < N_SCRATCH; i++) o->scratch[i] = scratch[i];
    o->layer_out = A_RES3;
    o->kv_per_row = C;
}

/* x0 (B,T,C) = wte[tokens] + wpe[pos0 + t] */
static void gpt2_embed_forward(const fm_family_call *c, float *x0)
{
    const int C = c->shape->d_model;
    const float *wpe = c->p[WPE] + (size_t)c->pos0 * (size_t)C; /* rows pos0.. (fp32 parameters) */
    c->be->ops->encoder_forward(c->be, x0, c->tokens, c->p[WTE], wpe, c->B, c->T, C);
}

/* dwte (Vp,C), dwpe (maxT,C) accumulate from dx0 (B,T,C) (training: pos0 == 0) */
static void gpt2_embed_backward(const fm_family_call *c, const float *dx0)
{
    c->be->ops->encoder_backward(c->be, c->g[WTE], c->g[WPE], dx0, c->tokens, c->B, c->T,
                                 c->shape->d_model);
}

/* res3 = res2 + c_proj(gelu(c_fc(ln_2(res2)))), res2 = x + c_proj(attn(c_attn(ln_1(x)))) */
static void gpt2_layer_forward(const fm_family_call *c, const float *x)
{
    const fm_kernel_ops *ops = c->be->ops;
    fm_backend *be = c->be;
    const int C = c->shape->d_model, NH = c->shape->n_head, N = c->B * c->T;
    const size_t NC = (size_t)N * (size_t)C;
    float *const *p = c->p, *const *w = c->w, *const *a = c->a;
    float *proj = c->s[S_DLN]; /* (N,C) c_proj outputs, not kept */
    ops->layernorm_forward(be, a[A_LN1], a[A_LN1_MEAN], a[A_LN1_RSTD], x, p[LN1W], p[LN1B], N, C);
    ops->matmul_forward(be, a[A_QKV], a[A_LN1], w[QKVW], p[QKVB], N, C, 3 * C);
    if (c->kcache)
        ops->attention_decode(be, a[A_ATTY], c->kcache, c->vcache, a[A_QKV], c->B, c->T, c->pos0,
                              c->shape->max_seq_len, C, NH, NH);
    else
        ops->attention_forward(be, a[A_ATTY], a[A_ATT_LSE], a[A_QKV], c->B, c->T, C, NH, NH);
    ops->matmul_forward(be, proj, a[A_ATTY], w[ATTPROJW], p[ATTPROJB], N, C, C);
    ops->residual_forward(be, a[A_RES2], x, proj, NC);
    ops->layernorm_forward(be, a[A_LN2], a[A_LN2_MEAN], a[A_LN2_RSTD], a[A_RES2], p[LN2W], p[LN2B],
                           N, C);
    ops->matmul_forward(be, a[A_FCH], a[A_LN2], w[FCW], p[FCB], N, C, 4 * C);
    ops->gelu_forward(be, a[A_FCH_GELU], a[A_FCH], 4 * NC);
    ops->matmul_forward(be, proj, a[A_FCH_GELU], w[FCPROJW], p[FCPROJB], N, 4 * C, C);
    ops->residual_forward(be, a[A_RES3], a[A_RES2], proj, NC);
}

/* dx (N,C): d res3 on entry; after ln_2's backward accumulates into it, d res2; after ln_1's,
 * d x. Gradients of the block's tensors accumulate. */
static void gpt2_layer_backward(const fm_family_call *c, const float *x, float *dx)
{
    const fm_kernel_ops *ops = c->be->ops;
    fm_backend *be = c->be;
    const int C = c->shape->d_model, NH = c->shape->n_head, B = c->B, T = c->T, N = B * T;
    float *const *p = c->p, *const *w = c->w, *const *g = c->g, *const *a = c->a;
    float *dln = c->s[S_DLN], *dbig = c->s[S_DBIG];
    /* MLP */
    ops->matmul_backward(be, dbig, g[FCPROJW], g[FCPROJB], dx, a[A_FCH_GELU], w[FCPROJW], N, 4 * C, C);
    ops->gelu_backward(be, dbig, a[A_FCH], dbig, (size_t)N * 4 * (size_t)C);
    ops->matmul_backward(be, dln, g[FCW], g[FCB], dbig, a[A_LN2], w[FCW], N, C, 4 * C);
    ops->layernorm_backward(be, dx, g[LN2W], g[LN2B], dln, a[A_RES2], p[LN2W], a[A_LN2_MEAN],
                            a[A_LN2_RSTD], N, C);
    /* attention */
    ops->matmul_backward(be, dln, g[ATTPROJW], g[ATTPROJB], dx, a[A_ATTY], w[ATTPROJW], N, C, C);
    ops->attention_backward(be, dbig, dln, a[A_QKV], a[A_ATTY], a[A_ATT_LSE], B, T, C, NH, NH);
    ops->matmul_backward(be, dln, g[QKVW], g[QKVB], dbig, a[A_LN1], w[QKVW], N, C, 3 * C);
    ops->layernorm_backward(be, dx, g[LN1W], g[LN1B], dln, x, p[LN1W], a[A_LN1_MEAN],
                            a[A_LN1_RSTD], N, C);
}

/* logits (N,Vp) = ln_f(x) @ wte^T (tied head, no bias) */
static void gpt2_head_forward(const fm_family_call *c, const float *x, float *logits)
{
    const fm_kernel_ops *ops = c->be->ops;
    const int C = c->shape->d_model, N = c->B * c->T;
    float *const *p = c->p, *const *a = c->a;
    ops->layernorm_forward(c->be, a[H_LNF], a[H_LNF_MEAN], a[H_LNF_RSTD], x, p[LNFW], p[LNFB], N, C);
    ops->matmul_forward(c->be, logits, a[H_LNF], c->w[WTE], NULL, N, C, c->Vp);
}

/* dwte accumulates the tied head's gradient (the embedding's comes at the very end of backward);
 * dx (N,C) accumulates ln_f's input gradient. */
static void gpt2_head_backward(const fm_family_call *c, const float *x, const float *dlogits, float *dx)
{
    const fm_kernel_ops *ops = c->be->ops;
    const int C = c->shape->d_model, N = c->B * c->T;
    float *const *p = c->p, *const *g = c->g, *const *a = c->a;
    float *dln = c->s[S_DLN];
    ops->matmul_backward(c->be, dln, g[WTE], NULL, dlogits, a[H_LNF], c->w[WTE], N, C, c->Vp);
    ops->layernorm_backward(c->be, dx, g[LNFW], g[LNFB], dln, x, p[LNFW], a[H_LNF_MEAN],
                            a[H_LNF_RSTD], N, C);
}

/* GPT-2's shape is fixed beyond its sizes: multi-head attention, a 4C MLP, LayerNorm eps 1e-5, the
 * tied head, learned positions. The Llama keys must be 0 or their default. */
static fm_status gpt2_check(const fm_model_shape *s)
{
    if (s->n_kv_head != 0 && s->n_kv_head != s->n_head)
        return FM_ERR(FM_ERR_CONFIG, "model: arch = gpt2 has multi-head attention: n_kv_head = %d "
                      "must be 0 or n_head (%d); grouped-query attention needs arch = llama",
                      s->n_kv_head, s->n_head);
    if (s->ffn_dim != 0 && (int64_t)s->ffn_dim != 4 * (int64_t)s->d_model)
        return FM_ERR(FM_ERR_CONFIG, "model: arch = gpt2 has an MLP of 4*d_model = %lld: ffn_dim = %d "
                      "must be 0 or %lld", 4 * (long long)s->d_model, s->ffn_dim,
                      4 * (long long)s->d_model);
    if (s->norm_eps != 0.0 && s->norm_eps != FM_MODEL_NORM_EPS_DEFAULT)
        return FM_ERR(FM_ERR_CONFIG, "model: arch = gpt2 has LayerNorm eps 1e-5: norm_eps = %g must be "
                      "left at its default", s->norm_eps);
    if (s->rope_theta != 0.0 && s->rope_theta != FM_MODEL_ROPE_THETA_DEFAULT)
        return FM_ERR(FM_ERR_CONFIG, "model: arch = gpt2 has learned positions, no rotary embedding: "
                      "rope_theta = %g must be left at its default", s->rope_theta);
    if (s->tie_embeddings == FM_TIE_NO)
        return FM_ERR(FM_ERR_CONFIG, "model: arch = gpt2 ties its LM head to the token embedding: "
                      "tie_embeddings must be true or left at its default");
    return NULL;
}

static void gpt2_resolve(fm_model_shape *s)
{
    s->ffn_dim = 4 * s->d_model;
    s->tie_embeddings = FM_TIE_YES;
    s->rope_theta = 0.0; /* no RoPE */
}

const fm_family fm_family_gpt2 = {
    .name = "gpt2",
    .summary = "GPT-2 (Hugging Face GPT2LMHeadModel): learned positions, LayerNorm, GELU MLP, tied head",
    .layer_prefix = "h.",
    .hf_layer_prefix = "transformer.h.",
    .check = gpt2_check,
    .resolve = gpt2_resolve,
    .layout = gpt2_layout,
    .embed_forward = gpt2_embed_forward,
    .embed_backward = gpt2_embed_backward,
    .layer_forward = gpt2_layer_forward,
    .layer_backward = gpt2_layer_backward,
    .head_forward = gpt2_head_forward,
    .head_backward = gpt2_head_backward,
};

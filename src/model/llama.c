/* llama.c — the Llama model family (family.h): Hugging Face's LlamaForCausalLM (Llama 2/3, and the
 * Mistral/Qwen/OLMo-style models that share its shape).
 *
 * What it is: a token embedding without positions, pre-RMSNorm blocks (causal self-attention with
 * grouped-query attention — NKV key/value heads shared by groups of NH/NKV query heads — and rotary
 * position embeddings on q and k; a SwiGLU MLP C -> F -> C), a final RMSNorm and an LM head that is a
 * separate matrix (untied, Llama's default) or the token embedding (tied, as Llama 3.2 1B). No
 * biases. Its tensors, the activations its forward keeps, and the kernel calls of its embedding,
 * block and head, forward and backward — written once: training and decoding (KV cache) run the same
 * functions. Tensor names are Hugging Face's without the "model." prefix, so export is a mapping.
 * What it is not: no allocation, no loop over layers, no loss (the model core, model.c, does those).
 *
 * Shapes: B sequences, T tokens, N = B*T rows, C channels, NH query heads, NKV key/value heads,
 * hs = C/NH (even: RoPE rotates pairs), W = (NH + 2 NKV) hs the fused q|k|v width, F the MLP hidden
 * size, L layers, V vocabulary, Vp padded vocabulary.
 *
 * Block (as LlamaDecoderLayer):
 *   h   = x + o_proj(attention(rope(q_proj(n1)), rope(k_proj(n1)), v_proj(n1))),  n1 = rms_1(x)
 *   out = h + down_proj(silu(gate_proj(n2)) * up_proj(n2)),                     n2 = rms_2(h)
 * q_proj, k_proj, v_proj are consecutive in the layout, so they are one fused (W, C) matrix and one
 * matmul; gate_proj and up_proj likewise one (2F, C) matmul whose output rows are [gate | up].
 *
 * Memory plan (why the buffers are what they are):
 *   - kept for backward, per layer: rms1, qkv (after RoPE: attention's backward needs the rotated q
 *     and k, and RoPE's backward needs no input), atty, res2, rms2, gate|up, swiglu, res3
 *     ((5C + W + 3F) elements per row), the two RMSNorm rstd and the attention log-sum-exp ((2 + NH)
 *     fp32 per row). No (T,T) tensor.
 *   - the outputs of o_proj and down_proj are not kept (they only feed a residual add): they go to the
 *     scratch buffer dln.
 *   - backward: the residual stream's gradient dx is accumulated into by the RMSNorm backward kernels;
 *     the activation gradients live in two scratch buffers reused by every layer: dln (N,C) and dbig
 *     (N, max(W, F)): dswiglu, then dqkv. The gate|up gradient overwrites the kept gate|up activation
 *     (swiglu_backward runs in place), so no (N,2F) scratch is needed.
 */
#include <math.h>

#include "model/family.h"

/* Head range, in layout order (LMHEAD only when untied). */
enum { EMB, NORM, LMHEAD, N_HEAD_TENSORS_MAX };
/* One block's tensors, in layout order. */
enum { LN1W, QW, KW, VW, OW, LN2W, GATEW, UPW, DOWNW, N_LAYER_TENSORS };
/* One block's activations kept for backward, in arena order. */
enum {
    A_RMS1,      /* (N,C) */
    A_RMS1_RSTD, /* (N) fp32 */
    A_QKV,       /* (N,W) after RoPE */
    A_ATTY,      /* (N,C) */
    A_ATT_LSE,   /* (B,NH,T) fp32 */
    A_RES2,      /* (N,C) residual after attention */
    A_RMS2,      /* (N,C) */
    A_RMS2_RSTD, /* (N) fp32 */
    A_GU,        /* (N,2F) [gate | up]; backward: [dgate | dup] in place */
    A_SW,        /* (N,F) silu(gate) * up */
    A_RES3,      /* (N,C) residual after the MLP = the block's output */
    N_LAYER_ACTS
};
enum { H_RMSF, H_RMSF_RSTD, N_HEAD_ACTS }; /* (N,C), (N) fp32 */
enum {
    S_DLN,  /* (N,C): gradient into an RMSNorm output / attention output; forward: projection outputs */
    S_DBIG, /* (N,max(W,F)): dswiglu, dqkv (backward only) */
    N_SCRATCH
};

static int64_t qkv_width(const fm_model_shape *s)
{
    return (int64_t)(s->n_head + 2 * s->n_kv_head) * (s->d_model / s->n_head);
}

static int tied(const fm_model_shape *s) { return s->tie_embeddings == FM_TIE_YES; }

static void llama_layout(const fm_model_shape *s, int Vp, fm_family_layout *o)
{
    const int64_t C = s->d_model, V = s->vocab_size, F = s->ffn_dim;
    const int64_t hs = C / s->n_head, KVW = (int64_t)s->n_kv_head * hs, W = qkv_width(s);
    const double sd = 0.02; /* LlamaConfig.initializer_range */
    const int tie = tied(s);
    /* name, hf_name, rows, cols, real_rows, hf_transposed, decay, init, init_std, matmul */
    const fm_tensor_spec head[N_HEAD_TENSORS_MAX] = {
        [EMB] = {"embed_tokens.weight", "model.embed_tokens.weight", Vp, C, V, 0, 1, FM_INIT_NORMAL,
                 sd, tie},
        [NORM] = {"norm.weight", "model.norm.weight", C, 0, C, 0, 0, FM_INIT_ONE, 0, 0},
        [LMHEAD] = {"lm_head.weight", "lm_head.weight", Vp, C, V, 0, 1, FM_INIT_NORMAL, sd, 1},
    };
    const fm_tensor_spec layer[N_LAYER_TENSORS] = {
        [LN1W] = {"input_layernorm.weight", "input_layernorm.weight", C, 0, C, 0, 0, FM_INIT_ONE, 0,
                  0},
        [QW] = {"self_attn.q_proj.weight", "self_attn.q_proj.weight", C, C, C, 0, 1, FM_INIT_NORMAL,
                sd, 1},
        [KW] = {"self_attn.k_proj.weight", "self_attn.k_proj.weight", KVW, C, KVW, 0, 1,
                FM_INIT_NORMAL, sd, 1},
        [VW] = {"self_attn.v_proj.weight", "self_attn.v_proj.weight", KVW, C, KVW, 0, 1,
                FM_INIT_NORMAL, sd, 1},
        [OW] = {"self_attn.o_proj.weight", "self_attn.o_proj.weight", C, C, C, 0, 1, FM_INIT_NORMAL,
                sd, 1},
        [LN2W] = {"post_attention_layernorm.weight", "post_attention_layernorm.weight", C, 0, C, 0, 0,
                  FM_INIT_ONE, 0, 0},
        [GATEW] = {"mlp.gate_proj.weight", "mlp.gate_proj.weight", F, C, F, 0, 1, FM_INIT_NORMAL, sd,
                   1},
        [UPW] = {"mlp.up_proj.weight", "mlp.up_proj.weight", F, C, F, 0, 1, FM_INIT_NORMAL, sd, 1},
        [DOWNW] = {"mlp.down_proj.weight", "mlp.down_proj.weight", C, F, C, 0, 1, FM_INIT_NORMAL, sd,
                   1},
    };
    /* name, per_row, fp32, train_only. fp32 0 (the activation precision) are the matmul inputs rms1,
     * atty, rms2, swiglu, rmsf; qkv and gate_up (matmul outputs, rotated / differentiated in place in
     * fp32), the residuals and the scratch are fp32 in every precision (kernels.h, "Precision") */
    const fm_buffer_spec acts[N_LAYER_ACTS] = {
        [A_RMS1] = {"rms1", C, 0, 0},
        [A_RMS1_RSTD] = {"rms1_rstd", 1, 1, 0},
        [A_QKV] = {"qkv", W, 1, 0},
        [A_ATTY] = {"atty", C, 0, 0},
        [A_ATT_LSE] = {"att_lse", s->n_head, 1, 0},
        [A_RES2] = {"res2", C, 1, 0},
        [A_RMS2] = {"rms2", C, 0, 0},
        [A_RMS2_RSTD] = {"rms2_rstd", 1, 1, 0},
        [A_GU] = {"gate_up", 2 * F, 1, 0},
        [A_SW] = {"swiglu", F, 0, 0},
        [A_RES3] = {"res3", C, 1, 0},
    };
    const fm_buffer_spec hacts[N_HEAD_ACTS] = {
        [H_RMSF] = {"rmsf", C, 0, 0},
        [H_RMSF_RSTD] = {"rmsf_rstd", 1, 1, 0},
    };
    const fm_buffer_spec scratch[N_SCRATCH] = {
        [S_DLN] = {"dln", C, 1, 0},
        [S_DBIG] = {"dbig", W > F ? W : F, 1, 1},
    };
    *o = (fm_family_layout){0};
    o->n_head_tensors = tie ? LMHEAD : N_HEAD_TENSORS_MAX;
    o->n_layer_tensors = N_LAYER_TENSORS;
    o->n_layer_acts = N_LAYER_ACTS;
    o->n_head_acts = N_HEAD_ACTS;
    o->n_scratch = N_SCRATCH;
    for (int i = 0; i < o->n_head_tensors; i++) o->head_tensors[i] = head[i];
    for (int i = 0; i < N_LAYER_TENSORS; i++) o->layer_tensors[i] = layer[i];
    for (int i = 0; i < N_LAYER_ACTS; i++) o->layer_acts[i] = acts[i];
    for (int i = 0; i < N_HEAD_ACTS; i++) o->head_acts[i] = hacts[i];
    for (int i = 0; i < N_SCRATCH; i++) o->scratch[i] = scratch[i];
    o->layer_out = A_RES3;
    o->kv_per_row = KVW;
}

/* x0 (B,T,C) = embed_tokens[tokens]: no positions (RoPE rotates q and k in every block) */
static void llama_embed_forward(const fm_family_call *c, float *x0)
{
    c->be->ops->embedding_forward(c->be, x0, c->tokens, c->p[EMB], c->B, c->T, c->shape->d_model);
}

/* dembed_tokens (Vp,C) accumulates from dx0 (B,T,C); when tied it already holds the head's part */
static void llama_embed_backward(const fm_family_call *c, const float *dx0)
{
    c->be->ops->embedding_backward(c->be, c->g[EMB], dx0, c->tokens, c->B, c->T, c->shape->d_model);
}

/* res3 = res2 + down(swiglu(gate|up(rms_2(res2)))), res2 = x + o(attn(rope(qkv(rms_1(x))))) */
static void llama_layer_forward(const fm_family_call *c, const float *x)
{
    const fm_kernel_ops *ops = c->be->ops;
    fm_backend *be = c->be;
    const fm_model_shape *s = c->shape;
    const int C = s->d_model, NH = s->n_head, NKV = s->n_kv_head, F = s->ffn_dim;
    const int W = (int)qkv_width(s), N = c->B * c->T;
    const size_t NC = (size_t)N * (size_t)C;
    const float eps = (float)s->norm_eps, theta = (float)s->rope_theta;
    float *const *p = c->p, *const *w = c->w, *const *a = c->a;
    float *proj = c->s[S_DLN]; /* (N,C) o_proj and down_proj outputs, not kept */
    ops->rmsnorm_forward(be, a[A_RMS1], a[A_RMS1_RSTD], x, p[LN1W], N, C, eps);
    ops->matmul_forward(be, a[A_QKV], a[A_RMS1], w[QW], NULL, N, C, W); /* q|k|v: one matmul */
    ops->rope_forward(be, a[A_QKV], c->B, c->T, C, NH, NKV, c->pos0, theta);
    if (c->kcache)
        ops->attention_decode(be, a[A_ATTY], c->kcache, c->vcache, a[A_QKV], c->B, c->T, c->pos0,
                              s->max_seq_len, C, NH, NKV);
    else
        ops->attention_forward(be, a[A_ATTY], a[A_ATT_LSE], a[A_QKV], c->B, c->T, C, NH, NKV);
    ops->matmul_forward(be, proj, a[A_ATTY], w[OW], NULL, N, C, C);
    ops->residual_forward(be, a[A_RES2], x, proj, NC);
    ops->rmsnorm_forward(be, a[A_RMS2], a[A_RMS2_RSTD], a[A_RES2], p[LN2W], N, C, eps);
    ops->matmul_forward(be, a[A_GU], a[A_RMS2], w[GATEW], NULL, N, C, 2 * F); /* gate|up */
    ops->swiglu_forward(be, a[A_SW], a[A_GU], N, F);
    ops->matmul_forward(be, proj, a[A_SW], w[DOWNW], NULL, N, F, C);
    ops->residual_forward(be, a[A_RES3], a[A_RES2], proj, NC);
}

/* dx (N,C): d res3 on entry; after rms_2's backward accumulates into it, d res2; after rms_1's, d x.
 * Gradients of the block's tensors accumulate. */
static void llama_layer_backward(const fm_family_call *c, const float *x, float *dx)
{
    const fm_kernel_ops *ops = c->be->ops;
    fm_backend *be = c->be;
    const fm_model_shape *s = c->shape;
    const int C = s->d_model, NH = s->n_head, NKV = s->n_kv_head, F = s->ffn_dim;
    const int W = (int)qkv_width(s), B = c->B, T = c->T, N = B * T;
    const float theta = (float)s->rope_theta;
    float *const *p = c->p, *const *w = c->w, *const *g = c->g, *const *a = c->a;
    float *dln = c->s[S_DLN], *dbig = c->s[S_DBIG];
    /* MLP */
    ops->matmul_backward(be, dbig, g[DOWNW], NULL, dx, a[A_SW], w[DOWNW], N, F, C); /* dswiglu */
    ops->swiglu_backward(be, a[A_GU], a[A_GU], dbig, N, F); /* in place: d gate|up */
    ops->matmul_backward(be, dln, g[GATEW], NULL, a[A_GU], a[A_RMS2], w[GATEW], N, C, 2 * F);
    ops->rmsnorm_backward(be, dx, g[LN2W], dln, a[A_RES2], p[LN2W], a[A_RMS2_RSTD], N, C);
    /* attention */
    ops->matmul_backward(be, dln, g[OW], NULL, dx, a[A_ATTY], w[OW], N, C, C);
    ops->attention_backward(be, dbig, dln, a[A_QKV], a[A_ATTY], a[A_ATT_LSE], B, T, C, NH, NKV);
    ops->rope_backward(be, dbig, B, T, C, NH, NKV, 0, theta);
    ops->matmul_backward(be, dln, g[QW], NULL, dbig, a[A_RMS1], w[QW], N, C, W);
    ops->rmsnorm_backward(be, dx, g[LN1W], dln, x, p[LN1W], a[A_RMS1_RSTD], N, C);
}

/* logits (N,Vp) = norm(x) @ lm_head^T (or embed_tokens^T when tied), no bias */
static void llama_head_forward(const fm_family_call *c, const float *x, float *logits)
{
    const fm_kernel_ops *ops = c->be->ops;
    const fm_model_shape *s = c->shape;
    const int C = s->d_model, N = c->B * c->T;
    float *const *p = c->p, *const *a = c->a;
    ops->rmsnorm_forward(c->be, a[H_RMSF], a[H_RMSF_RSTD], x, p[NORM], N, C, (float)s->norm_eps);
    ops->matmul_forward(c->be, logits, a[H_RMSF], tied(s) ? c->w[EMB] : c->w[LMHEAD], NULL, N, C,
                        c->Vp);
}

/* dlm_head (or, tied, dembed_tokens, before the embedding's part) accumulates; dx (N,C) accumulates
 * the final norm's input gradient. */
static void llama_head_backward(const fm_family_call *c, const float *x, const float *dlogits,
                                float *dx)
{
    const fm_kernel_ops *ops = c->be->ops;
    const fm_model_shape *s = c->shape;
    const int C = s->d_model, N = c->B * c->T, t = tied(s);
    float *const *p = c->p, *const *g = c->g, *const *a = c->a;
    float *dln = c->s[S_DLN];
    ops->matmul_backward(c->be, dln, t ? g[EMB] : g[LMHEAD], NULL, dlogits, a[H_RMSF],
                         t ? c->w[EMB] : c->w[LMHEAD], N, C, c->Vp);
    ops->rmsnorm_backward(c->be, dx, g[NORM], dln, x, p[NORM], a[H_RMSF_RSTD], N, C);
}

/* Llama's own rule: RoPE rotates pairs of a head, so the head size is even. */
static fm_status llama_check(const fm_model_shape *s)
{
    const int hs = s->d_model / s->n_head;
    if (hs % 2 != 0)
        return FM_ERR(FM_ERR_CONFIG, "model: arch = llama needs an even head size for the rotary "
                      "embedding, but d_model / n_head = %d / %d = %d; change d_model or n_head",
                      s->d_model, s->n_head, hs);
    return NULL;
}

/* ffn_dim 0: Llama's rule, 2/3 of 4C rounded up to a multiple of 256 (Llama 2 7B: C 4096 -> 11008);
 * the head is untied unless asked. */
static void llama_resolve(fm_model_shape *s)
{
    if (s->ffn_dim == 0) {
        const int64_t f = 8 * (int64_t)s->d_model / 3;
        s->ffn_dim = (int)((f + 255) / 256 * 256);
    }
    if (s->tie_embeddings == FM_TIE_DEFAULT) s->tie_embeddings = FM_TIE_NO;
}

const fm_family fm_family_llama = {
    .name = "llama",
    .summary = "Llama (Hugging Face LlamaForCausalLM): RoPE, RMSNorm, SwiGLU MLP, grouped-query "
               "attention, no biases, untied head (tying optional)",
    .layer_prefix = "layers.",
    .hf_layer_prefix = "model.layers.",
    .check = llama_check,
    .resolve = llama_resolve,
    .layout = llama_layout,
    .embed_forward = llama_embed_forward,
    .embed_backward = llama_embed_backward,
    .layer_forward = llama_layer_forward,
    .layer_backward = llama_layer_backward,
    .head_forward = llama_head_forward,
    .head_backward = llama_head_backward,
};

/* test_llama.c — the Llama family's own rules, sizes and names (family-independent checks are in
 * test_families.c; numbers against Hugging Face's LlamaForCausalLM in tests/reference):
 *   - shapes: the defaults resolved (n_kv_head, ffn_dim by Llama's rule, rope_theta, norm_eps, untied
 *     head), errors (odd head size, n_kv_head not dividing n_head) naming the values; GPT-2 refusing
 *     Llama's keys and accepting their defaults;
 *   - parameter counts of published models: Llama 2 7B (default MLP rule), Llama 3 8B, Llama 3.2 1B
 *     (tied), computed from the tensor table;
 *   - the tensor table: Hugging Face's names and shapes, q|k|v and gate|up consecutive (one matmul
 *     each), no lm_head when tied, weight decay on matrices only;
 *   - FLOPs per token (the MFU numerator) for GPT-2 124M and a GQA Llama, written out here;
 *   - the training and decode memory of a Llama, re-derived independently of model.c's planner (the
 *     figures of inputs/llama3-1b.ini and docs/model.md are printed here). */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fm_test.h"

#include "kernels.h"
#include "model/model.h"

static fm_model_shape llama(int L, int NH, int NKV, int C, int F, int T, int V, int tie)
{
    fm_model_shape s = {L, NH, C, T, V, "llama", NKV, F, 0.0, 0.0, tie};
    return s;
}

static void expect_error(const fm_model_shape *s, const char *what)
{
    fm_status st = fm_model_shape_check(s);
    assert_non_null(st);
    assert_int_equal(fm_status_code(st), FM_ERR_CONFIG);
    if (!strstr(fm_status_message(st), what))
        fail_msg("'%s' does not name '%s'", fm_status_message(st), what);
    fm_status_free(&st);
}

static void test_shapes(void **state)
{
    (void)state;
    fm_model_shape r;
    /* defaults: MHA, Llama's MLP rule, RoPE 500000, eps 1e-5, untied */
    const int C[][2] = {{4096, 11008}, {2048, 5632}, {128, 512}, {5120, 13824}, {96, 256}};
    for (int i = 0; i < 5; i++) {
        fm_model_shape s = llama(2, 4, 0, C[i][0], 0, 16, 100, FM_TIE_DEFAULT);
        FM_ASSERT_OK(fm_model_shape_resolve(&s, &r));
        assert_int_equal(r.ffn_dim, C[i][1]);
        assert_int_equal(r.n_kv_head, 4);
        assert_true(r.rope_theta == 500000.0 && r.norm_eps == 1e-5);
        assert_int_equal(r.tie_embeddings, FM_TIE_NO);
        fm_model_shape again;
        FM_ASSERT_OK(fm_model_shape_resolve(&r, &again)); /* idempotent */
        assert_memory_equal(&again, &r, sizeof r);
    }
    fm_model_shape s = llama(2, 8, 2, 64, 100, 16, 100, FM_TIE_YES);
    s.rope_theta = 10000.0, s.norm_eps = 1e-6;
    FM_ASSERT_OK(fm_model_shape_resolve(&s, &r));
    assert_true(r.n_kv_head == 2 && r.ffn_dim == 100 && r.tie_embeddings == FM_TIE_YES);
    assert_true(r.rope_theta == 10000.0 && r.norm_eps == 1e-6);
    /* errors */
    s = llama(2, 4, 3, 64, 0, 16, 100, 0);
    expect_error(&s, "n_kv_head = 3 must divide n_head = 4");
    s = llama(2, 4, 0, 36, 0, 16, 100, 0); /* hs 9 */
    expect_error(&s, "even head size");
    s = llama(2, 4, 0, 64, -1, 16, 100, 0);
    expect_error(&s, "ffn_dim");
    s = llama(2, 4, 0, 64, 0, 16, 100, 0);
    s.norm_eps = -1;
    expect_error(&s, "norm_eps");
    s.norm_eps = 0, s.tie_embeddings = 7;
    expect_error(&s, "tie_embeddings");
    /* GPT-2: only its own values, the config's defaults accepted */
    fm_model_shape g = {2, 4, 64, 16, 100, .arch = "gpt2"};
    g.n_kv_head = 4, g.ffn_dim = 256, g.rope_theta = FM_MODEL_ROPE_THETA_DEFAULT, g.norm_eps = 1e-5;
    g.tie_embeddings = FM_TIE_YES;
    FM_ASSERT_OK(fm_model_shape_resolve(&g, &r));
    assert_true(r.n_kv_head == 4 && r.ffn_dim == 256 && r.rope_theta == 0.0 &&
                r.tie_embeddings == FM_TIE_YES);
    fm_model_shape bad = g;
    bad.n_kv_head = 2;
    expect_error(&bad, "grouped-query attention needs arch = llama");
    bad = g, bad.ffn_dim = 200;
    expect_error(&bad, "ffn_dim = 200");
    bad = g, bad.rope_theta = 10000.0;
    expect_error(&bad, "no rotary embedding");
    bad = g, bad.norm_eps = 1e-6;
    expect_error(&bad, "norm_eps");
    bad = g, bad.tie_embeddings = FM_TIE_NO;
    expect_error(&bad, "ties its LM head");
}

/* Parameters of the real model (vocabulary V), from the tensor table of a decode model (B 1, T 1:
 * no gradients, small arena): the count published models state. */
static size_t count_params(const fm_model_shape *s)
{
    fm_model_memory_info mem;
    FM_ASSERT_OK(fm_model_memory_estimate(s, 1, 4, &mem));
    return mem.n_params;
}

static void test_published_sizes(void **state)
{
    (void)state;
    /* Llama 2 7B: ffn 11008 by the default rule, untied; 6,738,415,616 parameters */
    fm_model_shape s = llama(32, 32, 0, 4096, 0, 4096, 32000, FM_TIE_DEFAULT);
    assert_int_equal(count_params(&s), 6738415616ull);
    /* Llama 3 8B: GQA 32:8, ffn 14336, V 128256, untied; 8,030,261,248 */
    s = llama(32, 32, 8, 4096, 14336, 8192, 128256, FM_TIE_NO);
    assert_int_equal(count_params(&s), 8030261248ull);
    /* Llama 3.2 1B (inputs/llama3-1b.ini with Llama 3's vocabulary): tied; 1,235,814,400 */
    s = llama(16, 32, 8, 2048, 8192, 2048, 128256, FM_TIE_YES);
    assert_int_equal(count_params(&s), 1235814400ull);
}

static void test_tensor_table(void **state)
{
    (void)state;
    fm_backend *be = NULL;
    FM_ASSERT_OK(fm_backend_create("cpu", 1, -1, &be));
    for (int tie = FM_TIE_YES; tie <= FM_TIE_NO; tie++) {
        const fm_model_shape s = llama(2, 6, 2, 48, 70, 16, 300, tie); /* hs 8, KV width 16 */
        fm_model *m = NULL;
        const fm_model_options o = {.mode = FM_MODEL_DECODE, .max_batch = 1};
        FM_ASSERT_OK(fm_model_create_opts(&s, be, &o, &m));
        assert_string_equal(fm_model_arch(m), "llama");
        struct {
            const char *name, *hf;
            int64_t rows, cols, hf_rows;
            int decay;
        } want[] = {
            {"embed_tokens.weight", "model.embed_tokens.weight", 384, 48, 300, 1},
            {"norm.weight", "model.norm.weight", 48, 1, 48, 0},
            {"lm_head.weight", "lm_head.weight", 384, 48, 300, 1},
            {"layers.1.input_layernorm.weight", "model.layers.1.input_layernorm.weight", 48, 1, 48, 0},
            {"layers.1.self_attn.q_proj.weight", "model.layers.1.self_attn.q_proj.weight", 48, 48, 48, 1},
            {"layers.1.self_attn.k_proj.weight", "model.layers.1.self_attn.k_proj.weight", 16, 48, 16, 1},
            {"layers.1.self_attn.v_proj.weight", "model.layers.1.self_attn.v_proj.weight", 16, 48, 16, 1},
            {"layers.1.self_attn.o_proj.weight", "model.layers.1.self_attn.o_proj.weight", 48, 48, 48, 1},
            {"layers.1.post_attention_layernorm.weight",
             "model.layers.1.post_attention_layernorm.weight", 48, 1, 48, 0},
            {"layers.1.mlp.gate_proj.weight", "model.layers.1.mlp.gate_proj.weight", 70, 48, 70, 1},
            {"layers.1.mlp.up_proj.weight", "model.layers.1.mlp.up_proj.weight", 70, 48, 70, 1},
            {"layers.1.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight", 48, 70, 48, 1},
        };
        const int nhead = tie == FM_TIE_YES ? 2 : 3;
        assert_int_equal(fm_model_num_tensors(m), nhead + 2 * 9);
        assert_true((tie == FM_TIE_YES) == (fm_model_find_tensor(m, "lm_head.weight") == NULL));
        for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
            if (tie == FM_TIE_YES && i == 2) continue;
            const fm_model_tensor_info *t = fm_model_find_tensor(m, want[i].name);
            if (!t) fail_msg("no tensor %s", want[i].name);
            assert_string_equal(t->hf_name, want[i].hf);
            assert_int_equal(t->shape[0], want[i].rows);
            assert_int_equal(t->shape[1], want[i].cols);
            assert_int_equal(t->hf_shape[0], want[i].hf_rows);
            assert_int_equal(t->hf_transposed, 0); /* nn.Linear's (out, in), as ours */
            assert_int_equal(t->decay, want[i].decay);
        }
        /* q|k|v and gate|up are consecutive: one fused matmul each */
        const fm_model_tensor_info *q = fm_model_find_tensor(m, "layers.0.self_attn.q_proj.weight");
        const fm_model_tensor_info *k = fm_model_find_tensor(m, "layers.0.self_attn.k_proj.weight");
        const fm_model_tensor_info *v = fm_model_find_tensor(m, "layers.0.self_attn.v_proj.weight");
        const fm_model_tensor_info *g = fm_model_find_tensor(m, "layers.0.mlp.gate_proj.weight");
        const fm_model_tensor_info *u = fm_model_find_tensor(m, "layers.0.mlp.up_proj.weight");
        assert_int_equal(k->offset, q->offset + q->numel);
        assert_int_equal(v->offset, k->offset + k->numel);
        assert_int_equal(u->offset, g->offset + g->numel);
        /* K/V caches: NKV*hs = 16 per row, not C */
        fm_model_memory_info mem;
        fm_model_memory(m, &mem);
        assert_int_equal(mem.kv_bytes, 2 * 2 * 16 * 16 * 4); /* L x (K, V) x T x 16 x 4 bytes */
        fm_model_free(&m);
    }
    fm_backend_free(&be);
}

static void test_flops(void **state)
{
    (void)state;
    /* GPT-2 124M at T 1024: wte (the tied head, real vocabulary) + 12 C^2 per layer, + 6 L C T */
    const fm_model_shape g = {12, 12, 768, 1024, 50257, .arch = "gpt2"};
    const double L = 12, C = 768, T = 1024, V = 50257;
    const double want_g = 6.0 * (V * C + L * 12.0 * C * C) + 6.0 * L * C * T;
    assert_true(fabs(fm_model_flops_per_token(&g, 1024) - want_g) <= 1e-9 * want_g);
    /* a GQA Llama, untied: q, o (C^2 each), k, v (C x NKV hs), gate, up, down (C F), the head */
    const fm_model_shape s = llama(3, 8, 2, 256, 700, 128, 1000, FM_TIE_NO);
    const double Cl = 256, KVW = 2 * 32, F = 700, Ll = 3, Vl = 1000, Tl = 100;
    const double want_l =
        6.0 * (Ll * (2 * Cl * Cl + 2 * KVW * Cl + 3 * Cl * F) + Vl * Cl) + 6.0 * Ll * Cl * Tl;
    assert_true(fabs(fm_model_flops_per_token(&s, 100) - want_l) <= 1e-9 * want_l);
    fm_model_shape tied = s;
    tied.tie_embeddings = FM_TIE_YES; /* the same FLOPs: the head is still a matmul */
    assert_true(fm_model_flops_per_token(&tied, 100) == fm_model_flops_per_token(&s, 100));
    fm_model_shape bad = s;
    bad.n_kv_head = 3;
    assert_true(fm_model_flops_per_token(&bad, 100) == 0.0); /* an invalid shape */
}

static size_t up64(size_t x) { return (x + 63) / 64 * 64; }

/* Llama's training memory, written out from docs/model.md independently of model.c: parameters,
 * gradients, AdamW; per layer rms1, atty, res2, rms2, res3 (C), qkv (W), gate|up (2F), swiglu (F),
 * two rstd and the lse (NH) in fp32; x0, the final norm (C) and its rstd, tokens, targets, losses,
 * loss lse; logits (Vp); scratch dres, dln (C) and dbig (max(W, F)). */
static void llama_memory(const fm_model_shape *s, size_t P, size_t B, size_t e, size_t *total,
                         size_t *act, size_t *logits, size_t *scratch)
{
    const size_t N = B * (size_t)s->max_seq_len, C = (size_t)s->d_model, F = (size_t)s->ffn_dim;
    const size_t hs = C / (size_t)s->n_head, W = ((size_t)s->n_head + 2 * (size_t)s->n_kv_head) * hs;
    const size_t Vp = (size_t)fm_model_padded_vocab(s->vocab_size);
    const size_t layer = 5 * up64(N * C * e) + up64(N * W * e) + up64(2 * N * F * e) +
                         up64(N * F * e) + 2 * up64(N * 4) + up64(N * (size_t)s->n_head * 4);
    *act = 2 * up64(N * 4) + up64(N * C * e) + (size_t)s->n_layer * layer + up64(N * C * e) +
           up64(N * 4) + 2 * up64(N * 4);
    *logits = up64(N * Vp * e);
    *scratch = 2 * up64(N * C * e) + up64(N * (W > F ? W : F) * e);
    *total = 16 * P + *act + *logits + *scratch;
}

static void test_memory(void **state)
{
    (void)state;
    const fm_model_shape shapes[] = {
        llama(3, 6, 2, 48, 70, 29, 300, FM_TIE_NO),             /* odd sizes, rounding */
        llama(2, 4, 4, 128, 0, 64, 1024, FM_TIE_YES),           /* MHA, the rule's ffn 512 */
        llama(16, 32, 8, 2048, 8192, 2048, 128256, FM_TIE_YES), /* inputs/llama3-1b.ini */
    };
    for (int i = 0; i < 3; i++) {
        fm_model_shape r;
        FM_ASSERT_OK(fm_model_shape_resolve(&shapes[i], &r));
        const size_t Bs[] = {1, 2, 4, 8, 16};
        for (int k = 0; k < (i == 2 ? 5 : 2); k++) {
            fm_model_memory_info mem;
            FM_ASSERT_OK(fm_model_memory_estimate(&shapes[i], (int)Bs[k], 4, &mem));
            size_t total, act, lg, sc;
            llama_memory(&r, mem.n_params_padded, Bs[k], 4, &total, &act, &lg, &sc);
            assert_int_equal(mem.act_bytes, act);
            assert_int_equal(mem.logits_bytes, lg);
            assert_int_equal(mem.scratch_bytes, sc);
            assert_int_equal(mem.total_bytes, total);
            if (i == 2) {
                const double G = 1024.0 * 1024.0 * 1024.0;
                print_message("llama3-1b (V 128256), B %zu x T 2048, fp32: parameters %.2f GiB + "
                              "gradients %.2f + AdamW %.2f, activations %.2f, logits %.2f, scratch "
                              "%.3f: total %.2f GiB\n", Bs[k], mem.param_bytes / G,
                              mem.grad_bytes / G, mem.optim_bytes / G, mem.act_bytes / G,
                              mem.logits_bytes / G, mem.scratch_bytes / G, mem.total_bytes / G);
            }
        }
    }
    /* decode: parameters only, K/V caches of NKV*hs per row (4x smaller than MHA's for 32:8) */
    const fm_model_shape s = llama(16, 32, 8, 2048, 8192, 2048, 128256, FM_TIE_YES);
    const fm_model_options o = {.mode = FM_MODEL_DECODE, .max_batch = 1};
    fm_model_memory_info mem;
    FM_ASSERT_OK(fm_model_memory_estimate_opts(&s, &o, 4, &mem));
    assert_int_equal(mem.grad_bytes, 0);
    assert_int_equal(mem.kv_bytes, (size_t)16 * 2 * up64((size_t)2048 * 512 * 4));
    print_message("llama3-1b decode, B 1, T 2048, fp32: parameters %.2f GiB, K/V caches %.0f MiB, "
                  "total %.2f GiB\n", mem.param_bytes / 1073741824.0, mem.kv_bytes / 1048576.0,
                  mem.total_bytes / 1073741824.0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shapes),       cmocka_unit_test(test_published_sizes),
        cmocka_unit_test(test_tensor_table), cmocka_unit_test(test_flops),
        cmocka_unit_test(test_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

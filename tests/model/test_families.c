/* test_families.c — every model family of the table (src/model/families.c) against the core's
 * contract (family.h), on the CPU backend. A new family is tested here without adding a case:
 *   - the table: names unique and found by fm_family_find; an unknown arch is refused naming them;
 *   - the layout: a contiguous tensor table whose ranges are the gradient buckets, unique names,
 *     sane buffer specs (the block output is an (N,C) activation);
 *   - initialisation by the spec's rule (zeros, ones, N(0, std) with zero padding rows);
 *   - a training step: finite loss near log(V) at init, finite gradients reported range by range;
 *   - decoding: logits of one token per call equal the full forward's;
 *   - memory: both modes report what the estimate says;
 *   - every other compiled-in backend with a device (CUDA on a GPU machine; reported as skipped
 *     without one): the same weights and batch give the CPU's loss, logits and gradients, and decoding
 *     there gives its own forward's logits (FM_TEST_REQUIRE_BACKENDS=cuda makes a missing device a
 *     failure, as in tests/kernels).
 * Each family runs on its default shape and on the variants it accepts (fm_model_shape_check):
 * grouped-query attention 2:1 and 4:1, a tied and an untied head, an explicit MLP width; a variant a
 * family refuses (GPT-2 has only its own) is reported and skipped.
 * Family-specific numbers (GPT-2 and Llama against PyTorch) are in tests/reference; GPT-2's layout
 * and memory formula in detail in test_model.c, Llama's rules and sizes in test_llama.c. */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fm_test.h"

#include "kernels.h"
#include "model/family.h"
#include "model/model.h"

enum { L = 2, NH = 4, C = 32, MAXT = 16, V = 50, B = 2 };

/* variants of the shape: n_kv_head, ffn_dim, tie_embeddings (0: the family's defaults) */
static const int variants[][3] = {
    {0, 0, FM_TIE_DEFAULT}, {2, 0, FM_TIE_DEFAULT}, {1, 0, FM_TIE_YES}, {4, 45, FM_TIE_NO},
};
enum { N_VARIANTS = sizeof variants / sizeof variants[0] };

static fm_model_shape family_shape(const fm_family *fam)
{
    fm_model_shape s = {L, NH, C, MAXT, V, .arch = ""};
    snprintf(s.arch, sizeof s.arch, "%s", fam->name);
    return s;
}

static void test_table(void **state)
{
    (void)state;
    int n = 0;
    char names[256];
    fm_family_names(names, sizeof names);
    for (const fm_family *f; (f = fm_family_at(n)); n++) {
        assert_ptr_equal(fm_family_find(f->name), f);
        assert_true(strlen(f->name) < FM_MODEL_ARCH_MAX);
        assert_non_null(strstr(names, f->name));
        for (int j = 0; j < n; j++) assert_string_not_equal(fm_family_at(j)->name, f->name);
    }
    assert_true(n >= 2);
    assert_ptr_equal(fm_family_find("gpt2"), &fm_family_gpt2);
    assert_ptr_equal(fm_family_find("llama"), &fm_family_llama);
    assert_null(fm_family_find("gpt3"));
    assert_null(fm_family_at(n));
    assert_null(fm_family_at(-1));

    /* unknown, empty and unterminated arch: refused, naming the known families */
    fm_model_shape s = family_shape(&fm_family_gpt2);
    const char *bad[2] = {"gpt3", ""};
    for (int i = 0; i < 3; i++) {
        if (i < 2)
            snprintf(s.arch, sizeof s.arch, "%s", bad[i]);
        else
            memset(s.arch, 'x', sizeof s.arch);
        fm_status st = fm_model_shape_check(&s);
        assert_int_equal(fm_status_code(st), FM_ERR_CONFIG);
        assert_non_null(strstr(fm_status_message(st), names));
        if (i == 0) assert_non_null(strstr(fm_status_message(st), "'gpt3'"));
        fm_status_free(&st);
    }
}

/* The layout's internal consistency and the tensor table built from it. */
static void check_layout(const fm_family *fam, const fm_model *m)
{
    fm_family_layout lay;
    const int Vp = fm_model_get_padded_vocab(m);
    fam->layout(fm_model_get_shape(m), Vp, &lay);
    assert_true(lay.n_head_tensors >= 1 && lay.n_head_tensors <= FM_FAMILY_MAX);
    assert_true(lay.n_layer_tensors >= 1 && lay.n_layer_tensors <= FM_FAMILY_MAX);
    assert_true(lay.layer_out >= 0 && lay.layer_out < lay.n_layer_acts);
    assert_int_equal(lay.layer_acts[lay.layer_out].per_row, C);
    assert_int_equal(lay.layer_acts[lay.layer_out].fp32, 1); /* the residual stream: fp32 */
    assert_true(lay.kv_per_row >= 1);
    for (int i = 0; i < lay.n_layer_acts; i++) assert_true(lay.layer_acts[i].per_row >= 1);
    for (int i = 0; i < lay.n_head_acts; i++) assert_true(lay.head_acts[i].per_row >= 1);
    for (int i = 0; i < lay.n_scratch; i++) assert_true(lay.scratch[i].per_row >= 1);

    const int nt = fm_model_num_tensors(m);
    assert_int_equal(nt, lay.n_head_tensors + L * lay.n_layer_tensors);
    size_t off = 0, o, cnt;
    for (int i = 0; i < nt; i++) {
        const fm_model_tensor_info *t = fm_model_tensor(m, i);
        const int layer = i < lay.n_head_tensors ? -1 : (i - lay.n_head_tensors) / lay.n_layer_tensors;
        assert_int_equal(t->layer, layer);
        assert_int_equal(t->offset, off);
        assert_int_equal(t->numel, (size_t)(t->shape[0] * t->shape[1]));
        assert_ptr_equal(fm_model_find_tensor(m, t->name), t); /* unique names */
        if (t->decay) assert_int_equal(t->ndim, 2);
        off += t->numel;
        if (i + 1 == lay.n_head_tensors) {
            fm_model_layer_range(m, -1, &o, &cnt);
            assert_int_equal(o + cnt, off);
        }
    }
    assert_int_equal(off, fm_model_num_params(m));
    fm_model_layer_range(m, L - 1, &o, &cnt);
    assert_int_equal(o + cnt, off);
}

/* Every tensor as its rule says: zeros, ones, or N(0, std) on the real rows and zero padding. */
static void check_init(const fm_family *fam, fm_model *m, const float *p)
{
    fm_family_layout lay;
    fam->layout(fm_model_get_shape(m), fm_model_get_padded_vocab(m), &lay);
    for (int i = 0; i < fm_model_num_tensors(m); i++) {
        const fm_model_tensor_info *t = fm_model_tensor(m, i);
        const fm_tensor_spec *sp = i < lay.n_head_tensors
                                       ? &lay.head_tensors[i]
                                       : &lay.layer_tensors[(i - lay.n_head_tensors) % lay.n_layer_tensors];
        const float *x = p + t->offset;
        if (sp->init != FM_INIT_NORMAL) {
            const float want = sp->init == FM_INIT_ONE ? 1.0f : 0.0f;
            for (size_t j = 0; j < t->numel; j++)
                if (x[j] != want) fail_msg("%s[%zu] = %g, its rule gives %g", t->name, j, x[j], want);
            continue;
        }
        const size_t real = (size_t)sp->real_rows * (size_t)t->shape[1];
        double s = 0, s2 = 0;
        for (size_t j = 0; j < real; j++) {
            s += x[j];
            s2 += (double)x[j] * x[j];
        }
        const double mean = s / (double)real, sd = sqrt(s2 / (double)real - mean * mean);
        if (fabs(sd - sp->init_std) > 0.15 * sp->init_std || fabs(mean) > 0.15 * sp->init_std)
            fail_msg("%s: mean %g sd %g, its rule gives N(0, %g)", t->name, mean, sd, sp->init_std);
        for (size_t j = real; j < t->numel; j++) assert_true(x[j] == 0.0f); /* padding rows */
    }
}

typedef struct ranges {
    int calls;
    size_t offset[L + 1];
} ranges;

static fm_status note_range(void *ctx, size_t offset, size_t count)
{
    (void)count;
    ranges *r = ctx;
    if (r->calls <= L) r->offset[r->calls] = offset;
    r->calls++;
    return NULL;
}

static void check_family(const fm_family *fam, int variant)
{
    fm_model_shape s = family_shape(fam);
    s.n_kv_head = variants[variant][0];
    s.ffn_dim = variants[variant][1];
    s.tie_embeddings = variants[variant][2];
    fm_status refused = fm_model_shape_check(&s);
    if (refused) {
        assert_true(variant > 0); /* every family takes its default shape */
        assert_int_equal(fm_status_code(refused), FM_ERR_CONFIG);
        print_message("family %s, n_kv_head %d, ffn_dim %d, tie %d: refused (%s)\n", fam->name,
                      s.n_kv_head, s.ffn_dim, s.tie_embeddings, fm_status_message(refused));
        fm_status_free(&refused);
        return;
    }
    print_message("family %s, n_kv_head %d, ffn_dim %d, tie %d: %s\n", fam->name, s.n_kv_head,
                  s.ffn_dim, s.tie_embeddings, fam->summary);
    fm_backend *be = NULL;
    fm_model *m = NULL, *d = NULL;
    FM_ASSERT_OK(fm_backend_create("cpu", 2, -1, &be));
    FM_ASSERT_OK(fm_model_create(&s, be, B, &m));
    const fm_model_options dopt = {.mode = FM_MODEL_DECODE, .max_batch = 1};
    FM_ASSERT_OK(fm_model_create_opts(&s, be, &dopt, &d));
    assert_string_equal(fm_model_arch(m), fam->name);
    check_layout(fam, m);

    fm_model_memory_info got, want;
    fm_model_memory(m, &got);
    FM_ASSERT_OK(fm_model_memory_estimate(&s, B, be->ops->act_bytes, &want));
    assert_memory_equal(&got, &want, sizeof got);
    fm_model_memory(d, &got);
    FM_ASSERT_OK(fm_model_memory_estimate_opts(&s, &dopt, be->ops->act_bytes, &want));
    assert_memory_equal(&got, &want, sizeof got);
    assert_true(got.kv_bytes > 0 && got.grad_bytes == 0);

    const size_t n = fm_model_num_params(m);
    float *p = malloc(n * sizeof *p), *g = malloc(n * sizeof *g);
    assert_non_null(p);
    assert_non_null(g);
    FM_ASSERT_OK(fm_model_init_weights(m, 5));
    FM_ASSERT_OK(fm_model_get_params(m, p));
    check_init(fam, m, p);
    FM_ASSERT_OK(fm_model_set_params(d, p));

    /* a training step */
    int32_t tok[B * MAXT], tgt[B * MAXT];
    for (int i = 0; i < B * MAXT; i++) {
        tok[i] = (int32_t)((i * 29 + 7) % V);
        tgt[i] = (int32_t)((i * 13 + 3) % V);
    }
    float loss;
    FM_ASSERT_OK(fm_model_forward(m, tok, tgt, B, MAXT, &loss));
    print_message("  loss at init %.4f (log V = %.4f)\n", loss, log((double)V));
    assert_true(isfinite(loss) && fabs(loss - log((double)V)) < 0.5);
    float full[MAXT][128];
    for (int t = 0; t < MAXT; t++) FM_ASSERT_OK(fm_model_logits(m, 0, t, full[t]));
    ranges r = {0, {0}};
    FM_ASSERT_OK(fm_model_backward(m, 1.0f, note_range, &r));
    assert_int_equal(r.calls, L + 1);
    for (int i = 0; i <= L; i++) {
        size_t o, cnt;
        fm_model_layer_range(m, i < L ? L - 1 - i : -1, &o, &cnt);
        assert_int_equal(r.offset[i], o);
    }
    FM_ASSERT_OK(fm_model_get_grads(m, g));
    double gn = 0;
    for (size_t i = 0; i < n; i++) gn += (double)g[i] * g[i];
    assert_true(isfinite(gn) && gn > 0);

    /* decoding one token per call gives the full forward's logits */
    double maxdiff = 0, maxabs = 0;
    float dec[128];
    fm_model_decode_reset(d);
    for (int t = 0; t < MAXT; t++) {
        FM_ASSERT_OK(fm_model_decode(d, &tok[t], 1, 1, dec));
        for (int v = 0; v < V; v++) {
            maxdiff = fmax(maxdiff, fabs((double)dec[v] - full[t][v]));
            maxabs = fmax(maxabs, fabs(full[t][v]));
        }
    }
    print_message("  decode vs forward: max |logit| %.4g, max diff %.3g\n", maxabs, maxdiff);
    assert_true(maxabs > 1e-3);
    assert_true(maxdiff <= 1e-5 * (1.0 + maxabs));

    free(p);
    free(g);
    fm_model_free(&d);
    fm_model_free(&m);
    fm_backend_free(&be);
}

/* max|a - b| / max|b| over n floats */
static double rel_max(const float *a, const float *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        const double e = fabs((double)a[i] - (double)b[i]);
        if (!(e <= num)) num = isnan(e) ? INFINITY : e;
        den = fmax(den, fabs((double)b[i]));
    }
    return num / (den > 0 ? den : 1.0);
}

/* One training step and a decode of MAXT tokens of family `fam` (shape variant v) on backend `be`,
 * from the weights `p`: loss, logits of every position (B*MAXT rows of 128), gradients (host). */
static void run_on(fm_backend *be, const fm_model_shape *s, const float *p, float *loss,
                   float *logits, float *grads, float *dec)
{
    fm_model *m = NULL, *d = NULL;
    FM_ASSERT_OK(fm_model_create(s, be, B, &m));
    const fm_model_options dopt = {.mode = FM_MODEL_DECODE, .max_batch = B};
    FM_ASSERT_OK(fm_model_create_opts(s, be, &dopt, &d));
    FM_ASSERT_OK(fm_model_set_params(m, p));
    FM_ASSERT_OK(fm_model_set_params(d, p));
    int32_t tok[B * MAXT], tgt[B * MAXT];
    for (int i = 0; i < B * MAXT; i++) {
        tok[i] = (int32_t)((i * 29 + 7) % V);
        tgt[i] = (int32_t)((i * 13 + 3) % V);
    }
    FM_ASSERT_OK(fm_model_forward(m, tok, tgt, B, MAXT, loss));
    for (int b = 0; b < B; b++)
        for (int t = 0; t < MAXT; t++)
            FM_ASSERT_OK(fm_model_logits(m, b, t, logits + ((size_t)b * MAXT + t) * 128));
    FM_ASSERT_OK(fm_model_backward(m, 1.0f, NULL, NULL));
    FM_ASSERT_OK(fm_model_get_grads(m, grads));
    /* decode: a prefill of 5 tokens, then one token per call; logits (B,128) of each call's last */
    int32_t step[B * MAXT];
    for (int t = 0, n = 5; t < MAXT; t += n, n = 1) {
        for (int b = 0; b < B; b++)
            for (int i = 0; i < n; i++) step[b * n + i] = tok[b * MAXT + t + i];
        FM_ASSERT_OK(fm_model_decode(d, step, B, n, dec + (size_t)(t + n - 1) * B * 128));
    }
    fm_model_free(&d);
    fm_model_free(&m);
}

/* Names in FM_TEST_REQUIRE_BACKENDS must have a device. */
static int required(const char *name)
{
    const char *req = getenv("FM_TEST_REQUIRE_BACKENDS");
    return req && strstr(req, name) != NULL;
}

static void test_backends_agree(void **state)
{
    (void)state;
    int compared = 0;
    for (int bi = 1; bi < fm_backend_count(); bi++) {
        const char *name = fm_backend_name(bi), *why = NULL;
        if (fm_backend_device_count(name, &why) <= 0) {
            print_message("[ SKIPPED  ] backend %s: no device (%s)\n", name, why ? why : "?");
            if (required(name)) fail_msg("FM_TEST_REQUIRE_BACKENDS requires %s", name);
            continue;
        }
        fm_backend *cpu = NULL, *be = NULL;
        FM_ASSERT_OK(fm_backend_create("cpu", 2, -1, &cpu));
        FM_ASSERT_OK(fm_backend_create(name, 2, 0, &be));
        if (be->ops->act_bytes != 4) { /* logits and decode need fp32 activations */
            print_message("[ SKIPPED  ] backend %s: activations of %d bytes\n", name,
                          be->ops->act_bytes);
            fm_backend_free(&be);
            fm_backend_free(&cpu);
            continue;
        }
        for (int i = 0; fm_family_at(i); i++)
            for (int v = 0; v < N_VARIANTS; v++) {
                const fm_family *fam = fm_family_at(i);
                fm_model_shape s = family_shape(fam);
                s.n_kv_head = variants[v][0];
                s.ffn_dim = variants[v][1];
                s.tie_embeddings = variants[v][2];
                fm_status refused = fm_model_shape_check(&s);
                if (refused) {
                    fm_status_free(&refused);
                    continue;
                }
                fm_model *m = NULL;
                FM_ASSERT_OK(fm_model_create(&s, cpu, B, &m));
                FM_ASSERT_OK(fm_model_init_weights(m, 11));
                const size_t n = fm_model_num_params(m), nl = (size_t)B * MAXT * 128;
                float *p = malloc(n * 4), *g0 = malloc(n * 4), *g1 = malloc(n * 4);
                float *l0 = malloc(nl * 4), *l1 = malloc(nl * 4), *d0 = malloc(nl * 4);
                float *d1 = malloc(nl * 4);
                assert_true(p && g0 && g1 && l0 && l1 && d0 && d1);
                FM_ASSERT_OK(fm_model_get_params(m, p));
                fm_model_free(&m);
                float loss0, loss1;
                run_on(cpu, &s, p, &loss0, l0, g0, d0);
                run_on(be, &s, p, &loss1, l1, g1, d1);
                const double el = fabs((double)loss1 - loss0) / fabs((double)loss0);
                const double elog = rel_max(l1, l0, nl), eg = rel_max(g1, g0, n);
                double ed = 0; /* decode on the device vs its own forward, valid vocabulary */
                for (int t = 0; t < MAXT; t++) {
                    if (t < 4) continue; /* rows 0..3: inside the prefill, no logits */
                    for (int b = 0; b < B; b++) {
                        const float *dl = d1 + ((size_t)t * B + b) * 128;
                        const float *fl = l1 + ((size_t)b * MAXT + t) * 128;
                        ed = fmax(ed, rel_max(dl, fl, V));
                    }
                }
                print_message("%s vs cpu, %s (n_kv_head %d, ffn_dim %d, tie %d): loss %.2e, logits "
                              "%.2e, gradients %.2e; decode vs own forward %.2e\n", name, fam->name,
                              s.n_kv_head, s.ffn_dim, s.tie_embeddings, el, elog, eg, ed);
                assert_true(el <= 1e-5 && elog <= 1e-4 && eg <= 1e-4 && ed <= 1e-4);
                compared++;
                free(p), free(g0), free(g1), free(l0), free(l1), free(d0), free(d1);
            }
        fm_backend_free(&be);
        fm_backend_free(&cpu);
    }
    print_message("%d model(s) compared across backends\n", compared);
}

static void test_every_family(void **state)
{
    (void)state;
    for (int i = 0; fm_family_at(i); i++)
        for (int v = 0; v < N_VARIANTS; v++) check_family(fm_family_at(i), v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_every_family),
        cmocka_unit_test(test_backends_agree),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

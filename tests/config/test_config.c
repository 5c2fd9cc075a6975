/* test_config.c — unit tests of the parameter-file layer (src/config/config.c): valid files, every error
 * class with its exact file:line message, suggestions, --set, defaults, cross-key rules and the
 * exact round trip of the effective configuration. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config/config.h"

/* A required-keys-complete body that validates. */
static const char minimal[] = "[model]\n"
                              "n_layer = 2\n"
                              "n_head = 4\n"
                              "d_model = 64\n"
                              "seq_len = 32\n"
                              "[data]\n"
                              "train = data/x.h5\n"
                              "[train]\n"
                              "steps = 100\n";

static fm_status parse(fm_config *cfg, const char *text)
{
    fm_config_defaults(cfg);
    return fm_config_parse(cfg, "t.ini", text, strlen(text));
}

/* Parses `text` (on top of defaults), expects a config error whose message is exactly `expected`.
 */
static void expect_error(const char *text, const char *expected)
{
    fm_config cfg;
    fm_status st = parse(&cfg, text);
    assert_non_null(st);
    assert_int_equal(fm_status_code(st), FM_ERR_CONFIG);
    assert_int_equal(fm_status_exit_code(st), 2);
    if (strcmp(fm_status_message(st), expected) != 0)
        fail_msg("message\n  got:      %s\n  expected: %s", fm_status_message(st), expected);
    fm_status_free(&st);
}

/* Expects fm_config_validate of `cfg` to fail with a message containing `part`. */
static void expect_invalid(const fm_config *cfg, const char *part)
{
    fm_status st = fm_config_validate(cfg);
    assert_non_null(st);
    assert_int_equal(fm_status_code(st), FM_ERR_CONFIG);
    if (!strstr(fm_status_message(st), part))
        fail_msg("message `%s` lacks `%s`", fm_status_message(st), part);
    fm_status_free(&st);
}

static void valid_config(fm_config *cfg)
{
    fm_status st = parse(cfg, minimal);
    if (st) fail_msg("%s", fm_status_message(st));
}

/* ---- schema and defaults ----------------------------------------------------------------------
 */

static void test_schema_self_check(void **state)
{
    (void)state;
    fm_status st = fm_config_check_schema();
    if (st) fail_msg("%s", fm_status_message(st));
}

static void test_defaults(void **state)
{
    (void)state;
    fm_config cfg;
    fm_config_defaults(&cfg);
    assert_true(cfg.train_lr == 6e-4);
    assert_true(cfg.train_min_lr == 6e-5);
    assert_true(cfg.train_beta1 == 0.9 && cfg.train_beta2 == 0.95 && cfg.train_eps == 1e-8);
    assert_true(cfg.train_weight_decay == 0.1 && cfg.train_clip_grad == 1.0);
    assert_int_equal(cfg.train_schedule, FM_SCHED_COSINE);
    assert_int_equal(cfg.train_on_nan, FM_ON_NAN_STOP);
    assert_int_equal(cfg.checkpoint_resume, FM_RESUME_AUTO);
    assert_int_equal(cfg.checkpoint_align_bytes, 1048576);
    assert_int_equal(cfg.runtime_device, FM_DEVICE_AUTO);
    assert_int_equal(cfg.runtime_bind, FM_BIND_AUTO);
    assert_int_equal(cfg.model_arch, FM_ARCH_GPT2);
    assert_int_equal(cfg.model_vocab_size, 0);
    assert_true(cfg.run_seed == 1234);
    assert_int_equal(cfg.train_micro_batch, 4);
    assert_int_equal(cfg.train_grad_accum, 1);
    assert_string_equal(cfg.run_dir, "");
    assert_string_equal(cfg.data_val, "");
    /* required keys stay unset */
    assert_int_equal(cfg.model_n_layer, 0);
    assert_int_equal(cfg.train_steps, 0);
    assert_string_equal(cfg.data_train, "");
}

static void test_missing_required(void **state)
{
    (void)state;
    fm_config cfg;
    fm_config_defaults(&cfg);
    snprintf(cfg.run_name, sizeof cfg.run_name, "x");
    fm_status st = fm_config_validate(&cfg);
    assert_non_null(st);
    const char *m = fm_status_message(st);
    const char *keys[] = {"model.n_layer", "model.n_head", "model.d_model",
                          "model.seq_len", "data.train",   "train.steps"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        char want[64];
        snprintf(want, sizeof want, "missing required key `%s`", keys[i]);
        if (!strstr(m, want)) fail_msg("`%s` lacks `%s`", m, want);
    }
    assert_non_null(strstr(m, "add `train = ...` under [data] or pass --set data.train=..."));
    fm_status_free(&st);

    /* one missing key among valid ones */
    fm_status pst = parse(&cfg, "[model]\nn_layer = 2\nn_head = 4\nd_model = 64\nseq_len = 32\n"
                                "[train]\nsteps = 5\n");
    assert_null(pst);
    expect_invalid(&cfg, "missing required key `data.train`");
}

/* ---- valid files ----------------------------------------------------------------------------- */

static void test_minimal_valid(void **state)
{
    (void)state;
    fm_config cfg;
    valid_config(&cfg);
    assert_int_equal(cfg.model_n_layer, 2);
    assert_int_equal(cfg.model_n_head, 4);
    assert_int_equal(cfg.model_d_model, 64);
    assert_int_equal(cfg.model_seq_len, 32);
    assert_string_equal(cfg.data_train, "data/x.h5");
    assert_int_equal(cfg.train_steps, 100);
    assert_string_equal(cfg.run_name, "t"); /* from the source name "t.ini" */
    assert_null(fm_config_validate(&cfg));
    char buf[FM_CONFIG_PATH_MAX];
    assert_string_equal(fm_config_run_dir(&cfg, buf, sizeof buf), "runs/t");
    assert_string_equal(fm_config_val_path(&cfg), "data/x.h5");
    snprintf(cfg.run_dir, sizeof cfg.run_dir, "/scratch/r1");
    snprintf(cfg.data_val, sizeof cfg.data_val, "v.h5");
    assert_string_equal(fm_config_run_dir(&cfg, buf, sizeof buf), "/scratch/r1");
    assert_string_equal(fm_config_val_path(&cfg), "v.h5");
}

static void test_comments_quotes_whitespace(void **state)
{
    (void)state;
    fm_config cfg;
    const char *text = "\xEF\xBB\xBF# comment\r\n"
                       "; another comment\r\n"
                       "   # indented comment\n"
                       "\n"
                       "  [ run ]   # header comment\n"
                       "name=alpha-1.b_c   ; inline\n"
                       "dir = \"/scratch/my run # 1\"  # quoted keeps # and spaces\n"
                       "seed = 18446744073709551615\n"
                       "[data]\n"
                       "train = data/a#b;c.h5\n"
                       "val = \"with \\\"quote\\\" and \\\\ backslash\"\n"
                       "[train]\n"
                       "\tlr\t=\t3e-4\t# tabs\n"
                       "schedule = wsd\n"
                       "[checkpoint]\n"
                       "resume = runs/old/ckpt_100.h5\n"
                       "mpiio_hints = striping_factor=8,cb_nodes=4\n"
                       "[run]\n" /* a section may appear again */
                       "stop_margin_minutes = 0\n";
    fm_status st = parse(&cfg, text);
    if (st) fail_msg("%s", fm_status_message(st));
    assert_string_equal(cfg.run_name, "alpha-1.b_c");
    assert_string_equal(cfg.run_dir, "/scratch/my run # 1");
    assert_true(cfg.run_seed == UINT64_MAX);
    assert_string_equal(cfg.data_train, "data/a#b;c.h5");
    assert_string_equal(cfg.data_val, "with \"quote\" and \\ backslash");
    assert_true(cfg.train_lr == 3e-4);
    assert_int_equal(cfg.train_schedule, FM_SCHED_WSD);
    assert_int_equal(cfg.checkpoint_resume, FM_RESUME_PATH);
    assert_string_equal(cfg.checkpoint_resume_path, "runs/old/ckpt_100.h5");
    assert_string_equal(cfg.checkpoint_mpiio_hints, "striping_factor=8,cb_nodes=4");
    assert_true(cfg.run_stop_margin_minutes == 0.0);

    /* resume keywords */
    const char *nv = "[checkpoint]\nresume = never\n";
    assert_null(fm_config_parse(&cfg, "t.ini", nv, strlen(nv)));
    assert_int_equal(cfg.checkpoint_resume, FM_RESUME_NEVER);
    assert_string_equal(cfg.checkpoint_resume_path, "");
}

static void load_input(const char *name, fm_config *cfg)
{
    const char *src = getenv("FMTRAIN_SOURCE_DIR");
    assert_non_null(src);
    char path[4096];
    snprintf(path, sizeof path, "%s/inputs/%s", src, name);
    fm_config_defaults(cfg);
    fm_status st = fm_config_load(cfg, path);
    if (!st) st = fm_config_validate(cfg);
    if (st) fail_msg("%s: %s", path, fm_status_message(st));
}

static void test_inputs_load(void **state)
{
    (void)state;
    fm_config cfg;
    load_input("tiny-cpu.ini", &cfg);
    assert_string_equal(cfg.run_name, "tiny-cpu");
    assert_int_equal(cfg.runtime_device, FM_DEVICE_CPU);
    assert_string_equal(cfg.data_train, "data/kjv.h5");
    load_input("gpt2-124m.ini", &cfg);
    assert_string_equal(cfg.run_name, "gpt2-124m");
    assert_int_equal(cfg.model_n_layer, 12);
    assert_int_equal(cfg.model_n_head, 12);
    assert_int_equal(cfg.model_d_model, 768);
    assert_int_equal(cfg.model_seq_len, 1024);
    assert_int_equal(cfg.model_vocab_size, 50304);
}

static void test_load_missing_file(void **state)
{
    (void)state;
    fm_config cfg;
    fm_config_defaults(&cfg);
    fm_status st = fm_config_load(&cfg, "/nonexistent/dir/p.ini");
    assert_non_null(st);
    assert_int_equal(fm_status_code(st), FM_ERR_CONFIG);
    assert_non_null(strstr(fm_status_message(st), "/nonexistent/dir/p.ini"));
    fm_status_free(&st);
}

/* ---- errors: one per class, exact text
 * ------------------------------------------------------------ */

static void test_unknown_key_suggestion(void **state)
{
    (void)state;
    expect_error("[train]\nlr = 1e-3\nwarmup_step = 10\n",
                 "t.ini:3: unknown key `train.warmup_step` (did you mean `train.warmup_steps`?)");
    /* a key of another section is suggested there */
    expect_error("[model]\nlr = 1e-3\n",
                 "t.ini:2: unknown key `model.lr` (did you mean `train.lr`?)");
    /* nothing close: no suggestion */
    expect_error("[train]\nzzzzzzzz = 1\n", "t.ini:2: unknown key `train.zzzzzzzz`");
    expect_error("[model]\nnlayers = 3\n",
                 "t.ini:2: unknown key `model.nlayers` (did you mean `model.n_layer`?)");
}

/* Every key of the schema (read from the effective configuration, which lists them all): a typo
 * (a letter added or, for a plural, removed) suggests that key, in the file and with --set. */
static void test_every_key_suggested(void **state)
{
    (void)state;
    fm_config cfg;
    valid_config(&cfg);
    char *text = NULL;
    assert_null(fm_config_to_string(&cfg, &text));
    char section[64] = "";
    int nkeys = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] == '[') {
            int len = (int)(strchr(line, ']') - line - 1);
            snprintf(section, sizeof section, "%.*s", len, line + 1);
            continue;
        }
        if (line[0] == '#') line += 2; /* a required key that is not set */
        char *eq = strstr(line, " =");
        if (!eq) continue;
        char key[64], typo[72];
        snprintf(key, sizeof key, "%.*s", (int)(eq - line), line);
        size_t n = strlen(key);
        if (key[n - 1] == 's')
            snprintf(typo, sizeof typo, "%.*s", (int)(n - 1), key);
        else
            snprintf(typo, sizeof typo, "%sx", key);
        char ini[256], want[256], set[256];
        snprintf(ini, sizeof ini, "[%s]\n%s = 1\n", section, typo);
        snprintf(want, sizeof want, "t.ini:2: unknown key `%s.%s` (did you mean `%s.%s`?)", section,
                 typo, section, key);
        expect_error(ini, want);
        snprintf(set, sizeof set, "%s.%s=1", section, typo);
        fm_config c2;
        valid_config(&c2);
        fm_status st = fm_config_set(&c2, set);
        assert_non_null(st);
        snprintf(want, sizeof want, "(did you mean `%s.%s`?)", section, key);
        if (!strstr(fm_status_message(st), want))
            fail_msg("--set %s: `%s` lacks `%s`", set, fm_status_message(st), want);
        fm_status_free(&st);
        nkeys++;
    }
    assert_true(nkeys >= 39); /* the keys defined by the foundation issue, and any added later */
    free(text);
}

static void test_unknown_section_suggestion(void **state)
{
    (void)state;
    expect_error("[trian]\nlr = 1\nsteps = 3\n",
                 "t.ini:1: unknown section `[trian]` (did you mean `[train]`?); sections are [run] "
                 "[model] [data] [train] [checkpoint] [runtime]");
    expect_error(
        "# x\n[optimizer]\nlr = 1\n",
        "t.ini:2: unknown section `[optimizer]`; sections are [run] [model] [data] [train] "
        "[checkpoint] [runtime]");
}

static void test_wrong_types(void **state)
{
    (void)state;
    expect_error(
        "[model]\nn_layer = abc\n",
        "t.ini:2: model.n_layer = `abc`: not an integer; expected an integer in [1, 1024]");
    expect_error("[train]\nsteps = 1e5\n",
                 "t.ini:2: train.steps = `1e5`: not an integer; expected an integer in [1, "
                 "1000000000000000] (write integers without a decimal point or exponent)");
    expect_error("[train]\nlr = fast\n",
                 "t.ini:2: train.lr = `fast`: not a number; expected a real number in (0, 10]");
    expect_error("[train]\nlr = nan\n",
                 "t.ini:2: train.lr = `nan`: not finite; expected a real number in (0, 10]");
    expect_error("[train]\nlr =\n",
                 "t.ini:2: train.lr = ``: empty value; expected a real number in (0, 10]");
    expect_error("[run]\nseed = -1\n",
                 "t.ini:2: run.seed = `-1`: not a non-negative integer; expected an integer in [0, "
                 "18446744073709551615]");
    expect_error("[run]\nname = my run\n",
                 "t.ini:2: run.name = `my run`: character ' ' is not allowed; expected a name of "
                 "letters, digits, '.', '_' and '-' (at most 127 bytes)");
    expect_error(
        "[data]\ntrain =\n",
        "t.ini:2: data.train = ``: empty; expected a path (at most 4095 bytes), not empty");
    expect_error(
        "[checkpoint]\nmpiio_hints = striping_factor\n",
        "t.ini:2: checkpoint.mpiio_hints = `striping_factor`: hint `striping_factor` is not "
        "key=value; expected MPI-IO hints as key=value,key=value (at most 1023 bytes)");
}

static void test_enum_values(void **state)
{
    (void)state;
    expect_error("[train]\nschedule = cosin\n",
                 "t.ini:2: train.schedule = `cosin`: expected one of cosine, linear, constant, wsd "
                 "(did you mean `cosine`?)");
    expect_error("[runtime]\ndevice = tpu\n",
                 "t.ini:2: runtime.device = `tpu`: expected one of cpu, cuda, auto (did you mean "
                 "`cpu`?)");
    expect_error("[train]\non_nan = ignore\n",
                 "t.ini:2: train.on_nan = `ignore`: expected one of stop, skip");
}

static void test_out_of_range(void **state)
{
    (void)state;
    expect_error("[model]\nn_layer = 0\n",
                 "t.ini:2: model.n_layer = `0`: out of range; expected an integer in [1, 1024]");
    expect_error(
        "[model]\nn_layer = 99999999999999999999\n",
        "t.ini:2: model.n_layer = `99999999999999999999`: out of range; expected an integer "
        "in [1, 1024]");
    expect_error("[train]\nbeta1 = 1\n",
                 "t.ini:2: train.beta1 = `1`: out of range; expected a real number in [0, 1)");
    expect_error("[train]\nlr = 0\n",
                 "t.ini:2: train.lr = `0`: out of range; expected a real number in (0, 10]");
    expect_error(
        "[train]\ndecay_fraction = 0\n",
        "t.ini:2: train.decay_fraction = `0`: out of range; expected a real number in (0, 1]");
    expect_error("[checkpoint]\nkeep_last = 0\n",
                 "t.ini:2: checkpoint.keep_last = `0`: out of range; expected an integer in [1, "
                 "1000000]");
    expect_error(
        "[checkpoint]\nalign_bytes = 1000\n",
        "t.ini:2: checkpoint.align_bytes = `1000`: not a power of two; expected a power of "
        "two in [1, 1073741824]");
}

static void test_duplicate_key(void **state)
{
    (void)state;
    expect_error("[train]\nlr = 1e-3\n# again\n\nlr = 2e-3\n",
                 "t.ini:5: duplicate key `train.lr` (first set on line 2)");
    /* also across two headers of the same section */
    expect_error("[train]\nsteps = 3\n[model]\nn_layer = 1\n[train]\nsteps = 4\n",
                 "t.ini:6: duplicate key `train.steps` (first set on line 2)");
}

static void test_malformed_lines(void **state)
{
    (void)state;
    expect_error("lr = 1e-3\n", "t.ini:1: key `lr` is outside any section; put it under [train]");
    expect_error("foo = 1\n",
                 "t.ini:1: key `foo` is outside any section; expected a `[section]` header first");
    expect_error(
        "train.lr = 1\n",
        "t.ini:1: key `train.lr` is written as section.key; in a file write `lr = ...` under "
        "[train]");
    expect_error(
        "[model]\ntrain.lr = 1\n",
        "t.ini:2: key `train.lr` is written as section.key; in a file write `lr = ...` under "
        "[train]");
    expect_error("[model]\nn_layer\n", "t.ini:2: `n_layer` has no value; expected `key = value`");
    expect_error(
        "[model]\nthis is not ini\n",
        "t.ini:2: malformed line `this is not ini`; expected `[section]`, `key = value` or a "
        "comment starting with # or ;");
    expect_error("[model\nn_layer = 2\n",
                 "t.ini:1: malformed section header `[model`; expected `[section]`");
    expect_error("[model] n_layer = 2\n",
                 "t.ini:1: unexpected text `n_layer = 2` after section header `[model]`");
    expect_error(
        "[model]\n = 3\n",
        "t.ini:2: malformed key ``; expected `key = value` with a key of letters, digits and "
        "`_`");
    expect_error("[data]\ntrain = \"unterminated\n",
                 "t.ini:2: data.train: unterminated quoted value (missing closing \")");
    expect_error("[data]\ntrain = \"a\" b\n",
                 "t.ini:2: data.train: unexpected text after the closing quote");
    expect_error("[run]\nname = a\x01"
                 "b\n",
                 "t.ini:2: run.name = `a\x01"
                 "b`: contains a control character; expected a name of "
                 "letters, digits, '.', '_' and '-' (at most 127 bytes)");
    fm_config cfg;
    fm_config_defaults(&cfg);
    const char nul[] = "[model]\nn_layer = 2\0\n";
    fm_status st = fm_config_parse(&cfg, "t.ini", nul, sizeof nul - 1);
    assert_non_null(st);
    assert_string_equal(fm_status_message(st),
                        "t.ini:2: unexpected NUL byte (is this a text file?)");
    fm_status_free(&st);
}

static void test_several_errors_listed(void **state)
{
    (void)state;
    expect_error("[model]\nn_layer = x\nn_head = 4\n[train]\nwarmup_step = 1\n",
                 "t.ini:2: model.n_layer = `x`: not an integer; expected an integer in [1, 1024]\n"
                 "t.ini:5: unknown key `train.warmup_step` (did you mean `train.warmup_steps`?)");
    /* keys under an unknown section are not reported one by one */
    expect_error(
        "[trainn]\nlr = 1\nsteps = 2\n[model]\nd_model = -3\n",
        "t.ini:1: unknown section `[trainn]` (did you mean `[train]`?); sections are [run] "
        "[model] [data] [train] [checkpoint] [runtime]\n"
        "t.ini:5: model.d_model = `-3`: out of range; expected an integer in [1, 1048576]");
    /* many errors: the first 20 and a count */
    char big[4096] = "[train]\n";
    for (int i = 0; i < 25; i++) strcat(big, "bogus = 1\n");
    fm_config cfg;
    fm_status st = parse(&cfg, big);
    assert_non_null(st);
    assert_non_null(strstr(fm_status_message(st), "t.ini:21: unknown key `train.bogus`"));
    assert_null(strstr(fm_status_message(st), "t.ini:22:"));
    assert_non_null(strstr(fm_status_message(st), "t.ini: 5 more errors not shown"));
    fm_status_free(&st);
}

/* ---- --set ----------------------------------------------------------------------------------- */

static void expect_set_error(const char *assignment, const char *expected)
{
    fm_config cfg;
    valid_config(&cfg);
    fm_status st = fm_config_set(&cfg, assignment);
    assert_non_null(st);
    assert_int_equal(fm_status_code(st), FM_ERR_CONFIG);
    if (strcmp(fm_status_message(st), expected) != 0)
        fail_msg("message\n  got:      %s\n  expected: %s", fm_status_message(st), expected);
    fm_status_free(&st);
}

static void test_set(void **state)
{
    (void)state;
    fm_config cfg;
    valid_config(&cfg);
    assert_null(fm_config_set(&cfg, "train.lr=3e-4"));
    assert_true(cfg.train_lr == 3e-4);
    assert_null(fm_config_set(&cfg, "train.lr=1e-3")); /* the last one wins */
    assert_true(cfg.train_lr == 1e-3);
    assert_null(fm_config_set(&cfg, "run.dir= /scratch/a b "));
    assert_string_equal(cfg.run_dir, "/scratch/a b");
    assert_null(fm_config_set(&cfg, "data.train=x #not a comment.h5"));
    assert_string_equal(cfg.data_train, "x #not a comment.h5");
    assert_null(fm_config_set(&cfg, "checkpoint.resume=never"));
    assert_int_equal(cfg.checkpoint_resume, FM_RESUME_NEVER);
    assert_null(fm_config_set(&cfg, "runtime.device=cuda"));
    assert_int_equal(cfg.runtime_device, FM_DEVICE_CUDA);
    assert_null(fm_config_validate(&cfg));

    expect_set_error("train.warmup_step=10",
                     "--set train.warmup_step: unknown key `train.warmup_step` (did you mean "
                     "`train.warmup_steps`?)");
    expect_set_error("train.lr=abc",
                     "--set train.lr=abc: not a number; expected a real number in (0, 10]");
    expect_set_error("model.n_head=0",
                     "--set model.n_head=0: out of range; expected an integer in [1, 1024]");
    expect_set_error("lr=1", "--set lr=1: expected section.key=value (e.g. --set train.lr=3e-4)");
    expect_set_error("train.lr",
                     "--set train.lr: expected section.key=value (e.g. --set train.lr=3e-4)");
    expect_set_error("trian.lr=1",
                     "--set trian.lr: unknown section `[trian]` (did you mean `train.lr`?)");
    expect_set_error("optimizer.betas=1", "--set optimizer.betas: unknown section `[optimizer]`");
    expect_set_error(
        "train.schedule=cosin",
        "--set train.schedule=cosin: expected one of cosine, linear, constant, wsd (did "
        "you mean `cosine`?)");
}

/* ---- cross-key rules ------------------------------------------------------------------------- */

static void test_cross_key_rules(void **state)
{
    (void)state;
    fm_config cfg;
    valid_config(&cfg);
    cfg.model_d_model = 66;
    expect_invalid(&cfg, "model.d_model = 66 is not a multiple of model.n_head = 4");

    valid_config(&cfg);
    cfg.train_min_lr = 1e-2;
    expect_invalid(&cfg, "train.min_lr = 0.01 is larger than train.lr = 0.0006");

    valid_config(&cfg);
    cfg.train_warmup_steps = 101;
    expect_invalid(&cfg, "train.warmup_steps = 101 is larger than train.steps = 100");
    cfg.train_warmup_steps = 100;
    assert_null(fm_config_validate(&cfg));

    valid_config(&cfg);
    cfg.train_schedule = FM_SCHED_WSD;
    cfg.train_warmup_steps = 90;
    cfg.train_decay_fraction = 0.2;
    expect_invalid(&cfg, "train.warmup_steps = 90 plus the wsd decay of 20 steps");
    cfg.train_warmup_steps = 80;
    assert_null(fm_config_validate(&cfg));

    /* the old key eval_batches: still read (eval_batches x micro_batch windows), but not together
     * with a non-default eval_windows */
    valid_config(&cfg);
    assert_int_equal(fm_config_eval_windows(&cfg), FM_CONFIG_EVAL_WINDOWS);
    cfg.train_micro_batch = 3;
    cfg.train_eval_batches = 5;
    assert_null(fm_config_validate(&cfg));
    assert_int_equal(fm_config_eval_windows(&cfg), 15);
    cfg.train_eval_windows = 64;
    expect_invalid(&cfg, "train.eval_batches = 5 (the old form) and train.eval_windows = 64 are "
                         "both set; expected only train.eval_windows (eval_batches 5 x micro_batch "
                         "3 = 15 windows)");
    cfg.train_eval_batches = 0;
    assert_null(fm_config_validate(&cfg));
    assert_int_equal(fm_config_eval_windows(&cfg), 64);
    cfg.train_eval_windows = 0;
    expect_invalid(&cfg, "train.eval_windows = `0`: out of range");

    valid_config(&cfg);
    cfg.model_vocab_size = 1;
    expect_invalid(&cfg, "model.vocab_size = 1; expected 0 (from the dataset) or at least 2");

    /* values set directly in the struct are checked against the schema too */
    valid_config(&cfg);
    cfg.train_beta2 = 1.0;
    expect_invalid(&cfg, "train.beta2 = `1`: out of range; expected a real number in [0, 1)");
    valid_config(&cfg);
    cfg.checkpoint_keep_last = 0;
    expect_invalid(&cfg, "checkpoint.keep_last = `0`: out of range");
    valid_config(&cfg);
    cfg.train_schedule = (fm_schedule)17;
    expect_invalid(&cfg, "train.schedule = `17`");
    valid_config(&cfg);
    cfg.checkpoint_resume = FM_RESUME_PATH;
    expect_invalid(&cfg, "resume from a path, but the path is empty");
    valid_config(&cfg);
    cfg.run_name[0] = '\0';
    expect_invalid(&cfg, "run.name and run.dir are both empty");
    snprintf(cfg.run_dir, sizeof cfg.run_dir, "out");
    assert_null(fm_config_validate(&cfg));
}

/* ---- the effective configuration round-trips exactly --------------------------------------------
 */

static void roundtrip(const fm_config *a)
{
    char *text = NULL;
    assert_null(fm_config_to_string(a, &text));
    fm_config *b = malloc(sizeof *b);
    assert_non_null(b);
    fm_config_defaults(b);
    fm_status st = fm_config_parse(b, "effective.ini", text, strlen(text));
    if (st) {
        print_message("parse error: %.300s\n", fm_status_message(st));
        fail_msg("%.3000s", text);
    }
    if (memcmp(a, b, sizeof *a) != 0) {
        size_t at = 0;
        while (((const unsigned char *)a)[at] == ((const unsigned char *)b)[at]) at++;
        fail_msg("round trip differs at byte %zu of fm_config; text:\n%s", at, text);
    }

    /* fm_config_write prints the same text */
    char *mem = NULL;
    size_t memlen = 0;
    FILE *f = open_memstream(&mem, &memlen);
    assert_non_null(f);
    fm_config_write(a, f);
    fclose(f);
    assert_string_equal(mem, text);
    free(mem);
    free(text);
    free(b);
}

static void test_roundtrip(void **state)
{
    (void)state;
    fm_config *cfg = malloc(sizeof *cfg);
    assert_non_null(cfg);
    valid_config(cfg);
    roundtrip(cfg);

    /* every key away from its default, with awkward values */
    const char *sets[] = {
        "run.name=r-1.x_y",
        "run.dir= lead and trail # ; \"q\" \\ ",
        "run.seed=18446744073709551615",
        "run.stop_margin_minutes=0.1",
        "model.n_layer=1024",
        "model.n_head=3",
        "model.d_model=999",
        "model.seq_len=7",
        "model.vocab_size=2147483647",
        "data.train=\"#starts with hash\"",
        "data.val=;semicolon",
        "train.micro_batch=3",
        "train.grad_accum=5",
        "train.steps=1000000000000000",
        "train.lr=3.0000000000000004",
        "train.min_lr=1e-300",
        "train.warmup_steps=3",
        "train.schedule=wsd",
        "train.decay_fraction=0.3333333333333333",
        "train.weight_decay=0",
        "train.beta1=0.99999999999999989",
        "train.beta2=0",
        "train.eps=4.9406564584124654e-324",
        "train.clip_grad=0",
        "train.eval_every=0",
        "train.eval_windows=4294967295",
        "train.on_nan=skip",
        "checkpoint.every_steps=0",
        "checkpoint.every_minutes=525600",
        "checkpoint.keep_last=1000000",
        "checkpoint.resume=auto",
        "checkpoint.align_bytes=1",
        "checkpoint.mpiio_hints=a=1,b=x y",
        "runtime.device=cuda",
        "runtime.threads=65536",
        "runtime.bind=none",
        "runtime.log_every=1",
        "runtime.peak_tflops=989.5",
    };
    valid_config(cfg);
    memset(cfg->run_dir, 0, sizeof cfg->run_dir); /* every text field written once from zero */
    memset(cfg->data_train, 0, sizeof cfg->data_train);
    memset(cfg->run_name, 0, sizeof cfg->run_name);
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++) {
        fm_status st = fm_config_set(cfg, sets[i]);
        if (st) fail_msg("%s: %s", sets[i], fm_status_message(st));
    }
    assert_string_equal(cfg->run_dir, "lead and trail # ; \"q\" \\");
    assert_string_equal(cfg->data_train, "#starts with hash");
    roundtrip(cfg);

    /* resume from a path, including one literally named "auto" */
    assert_null(fm_config_set(cfg, "checkpoint.resume=ckpt dir/step 10.h5"));
    roundtrip(cfg);
    memset(cfg->checkpoint_resume_path, 0, sizeof cfg->checkpoint_resume_path);
    cfg->checkpoint_resume = FM_RESUME_PATH;
    snprintf(cfg->checkpoint_resume_path, sizeof cfg->checkpoint_resume_path, "auto");
    char *text = NULL;
    assert_null(fm_config_to_string(cfg, &text));
    assert_non_null(strstr(text, "\nresume = ./auto  # default: auto\n"));
    free(text);
    assert_null(fm_config_set(cfg, "checkpoint.resume=./auto")); /* what that text reads back as */
    roundtrip(cfg);

    /* the longest path fits and survives */
    memset(cfg->data_val, 'p', sizeof cfg->data_val - 1);
    cfg->data_val[sizeof cfg->data_val - 1] = '\0';
    roundtrip(cfg);
    free(cfg);

    /* the example inputs */
    fm_config in;
    load_input("tiny-cpu.ini", &in);
    roundtrip(&in);
    load_input("gpt2-124m.ini", &in);
    roundtrip(&in);
}

static void test_write_marks_non_defaults(void **state)
{
    (void)state;
    fm_config cfg;
    valid_config(&cfg);
    assert_null(fm_config_set(&cfg, "train.lr=1e-3"));
    char *text = NULL;
    assert_null(fm_config_to_string(&cfg, &text));
    assert_non_null(strstr(text, "[train]\n"));
    assert_non_null(strstr(text, "\nlr = 0.001  # default: 0.0006\n"));
    assert_non_null(strstr(text, "\nmin_lr = 6e-05\n"));
    assert_non_null(strstr(text, "\nsteps = 100  # required\n"));
    assert_non_null(strstr(text, "\ndir = \"\"\n"));
    /* an old key is written only when it is not at its default (and then reads back) */
    assert_null(strstr(text, "eval_batches"));
    assert_non_null(strstr(text, "\neval_windows = 80\n"));
    free(text);
    assert_null(fm_config_set(&cfg, "train.eval_batches=7"));
    assert_null(fm_config_to_string(&cfg, &text));
    assert_non_null(strstr(text, "\neval_batches = 7  # default: 0\n"));
    free(text);
    roundtrip(&cfg);
}

static void test_write_unset_required(void **state)
{
    (void)state;
    /* A configuration without its required keys still writes loadable text (the keys commented
     * out), which reads back to the same configuration and fails validation the same way. */
    fm_config a, b;
    fm_config_defaults(&a);
    snprintf(a.run_name, sizeof a.run_name, "x");
    char *text = NULL;
    assert_null(fm_config_to_string(&a, &text));
    assert_non_null(strstr(text, "\n# n_layer =  (required, not set)\n"));
    assert_non_null(strstr(text, "\n# train =  (required, not set)\n"));
    fm_config_defaults(&b);
    assert_null(fm_config_parse(&b, "x.ini", text, strlen(text)));
    assert_memory_equal(&a, &b, sizeof a);
    free(text);
}

static void test_too_long_values(void **state)
{
    (void)state;
    size_t n = FM_CONFIG_PATH_MAX + 64;
    char *text = malloc(n + 32);
    assert_non_null(text);
    strcpy(text, "[data]\ntrain = ");
    size_t off = strlen(text);
    memset(text + off, 'a', FM_CONFIG_PATH_MAX);
    strcpy(text + off + FM_CONFIG_PATH_MAX, "\n");
    fm_config cfg;
    fm_status st = parse(&cfg, text);
    assert_non_null(st);
    /* the value is quoted shortened to 80 bytes */
    char want[128];
    snprintf(want, sizeof want, "t.ini:2: data.train = `%.77s...`: too long (4096 bytes)",
             text + off);
    assert_non_null(strstr(fm_status_message(st), want));
    assert_non_null(strstr(fm_status_message(st),
                           "`: too long (4096 bytes); expected a path (at most 4095 bytes)"));
    fm_status_free(&st);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schema_self_check),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_missing_required),
        cmocka_unit_test(test_minimal_valid),
        cmocka_unit_test(test_comments_quotes_whitespace),
        cmocka_unit_test(test_inputs_load),
        cmocka_unit_test(test_load_missing_file),
        cmocka_unit_test(test_unknown_key_suggestion),
        cmocka_unit_test(test_every_key_suggested),
        cmocka_unit_test(test_unknown_section_suggestion),
        cmocka_unit_test(test_wrong_types),
        cmocka_unit_test(test_enum_values),
        cmocka_unit_test(test_out_of_range),
        cmocka_unit_test(test_duplicate_key),
        cmocka_unit_test(test_malformed_lines),
        cmocka_unit_test(test_several_errors_listed),
        cmocka_unit_test(test_set),
        cmocka_unit_test(test_cross_key_rules),
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_write_marks_non_defaults),
        cmocka_unit_test(test_write_unset_required),
        cmocka_unit_test(test_too_long_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

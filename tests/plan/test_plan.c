/* test_plan.c — the arithmetic of `fmtrain plan` (src/plan/plan.c) and its table reader
 * (src/plan/tables.c), on tables written by the test:
 *   - fm_plan_zero_memory_of: every component of stages 0, 1, 2 for fp32 and bf16, the ceil of a
 *     shard, the errors;
 *   - the largest micro-batch: it fits and one more does not, by the model's own formula;
 *   - the prediction: MFU and step time from a measurement of the same model (reproduces the measured
 *     tokens/s), the nearest of several, the same-chip range, no prediction without one;
 *   - steps, Young's interval, jobs, node-hours against hand arithmetic;
 *   - the table reader's errors: a value without provenance, an unknown key, a bad number, a
 *     duplicate, an unknown device, a missing key, CPU sites that overfill a node. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fm_test.h"
#include "model/model.h"
#include "plan/plan.h"
#include "plan/tables.h"

/* ---- helpers ------------------------------------------------------------------------------------ */

static char tmpdir[256];

static void write_file(const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void clear_dir(void)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -f %s/*.plan", tmpdir);
    assert_int_equal(system(cmd), 0);
}

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/fm_test_plan_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    clear_dir();
    rmdir(tmpdir);
    return 0;
}

/* A table load that must fail with a message containing `want`. */
static void expect_load_error(const char *want)
{
    fm_plan_tables t;
    fm_status st = fm_plan_tables_load(tmpdir, &t);
    if (!st) {
        fm_plan_tables_free(&t);
        fail_msg("expected an error containing '%s', but the tables loaded", want);
    }
    if (!strstr(fm_status_message(st), want))
        fail_msg("expected an error containing '%s', got '%s'", want, fm_status_message(st));
    fm_status_free(&st);
}

static const char gpu_table[] =
    "[device G1]\n"
    "description = a test GPU\n"
    "kind = gpu\n"
    "memory_gib = 16 ; verified: the test\n"
    "peak_tflops_fp32 = 50 ; verified: the test\n"
    "peak_tflops_bf16 = 400 ; unverified: the test\n"
    "memory_tbs = 2 ; verified: the test\n"
    "chip = CHIP-A ; verified: the test\n"
    "runtime_overhead_mib = 512 ; verified: the test\n"
    "\n"
    "[device G2]\n"
    "description = the same chip, more bandwidth\n"
    "kind = gpu\n"
    "memory_gib = 32 ; verified: the test\n"
    "peak_tflops_fp32 = 50 ; verified: the test\n"
    "memory_tbs = 3 ; verified: the test\n"
    "chip = CHIP-A ; verified: the test\n"
    "\n"
    "[device G3]\n"
    "description = another chip, no measurement\n"
    "kind = gpu\n"
    "memory_gib = 40 ; verified: the test\n"
    "peak_tflops_fp32 = 20 ; verified: the test\n"
    "chip = CHIP-B ; verified: the test\n"
    "\n"
    "[device C1]\n"
    "description = a CPU node\n"
    "kind = cpu\n"
    "cores = 8 ; verified: the test\n"
    "memory_gib = 64 ; verified: the test\n"
    "peak_tflops_fp32 = 0.1 ; unverified: the test\n"
    "trainer_overhead_ms = 3 ; verified: the test\n"
    "allreduce_busbw_gbs = 2 ; verified: the test\n"
    "allreduce_latency_ms = 0.5 ; verified: the test\n"
    "allreduce_buffer_factor = 1.5 ; verified: the test\n";

/* GPT-2-like small model, and the same with 2 layers */
static const char points[] =
    "[measured p-small]\n"
    "device = G2\n"
    "precision = fp32\n"
    "date = 2026-01-02\n"
    "program = fmtrain-bench\n"
    "command = fmtrain-bench --the-test\n"
    "    --continued\n"
    "arch = gpt2\n"
    "n_layer = 4\n"
    "n_head = 4\n"
    "d_model = 256\n"
    "vocab_size = 1000\n"
    "seq_len = 128\n"
    "micro_batch = 8\n"
    "threads = 1\n"
    "ranks = 1\n"
    "tokens_per_s = 100000\n"
    "\n"
    "[measured p-big]\n"
    "device = G2\n"
    "precision = fp32\n"
    "date = 2026-01-03\n"
    "program = fmtrain-bench\n"
    "command = fmtrain-bench --other\n"
    "arch = gpt2\n"
    "n_layer = 12\n"
    "n_head = 12\n"
    "d_model = 768\n"
    "vocab_size = 50257\n"
    "seq_len = 1024\n"
    "micro_batch = 8\n"
    "threads = 1\n"
    "ranks = 1\n"
    "tokens_per_s = 20000\n"
    "\n"
    "[measured p-cpu]\n"
    "device = C1\n"
    "precision = fp32\n"
    "date = 2026-01-03\n"
    "program = fmtrain-bench\n"
    "command = fmtrain-bench --cpu\n"
    "arch = gpt2\n"
    "n_layer = 4\n"
    "n_head = 4\n"
    "d_model = 256\n"
    "vocab_size = 1000\n"
    "seq_len = 128\n"
    "micro_batch = 8\n"
    "threads = 2\n"
    "ranks = 1\n"
    "tokens_per_s = 5000\n"
    "\n"
    "[peer p-peer]\n"
    "device = G1\n"
    "precision = fp32\n"
    "date = 2026-01-03\n"
    "program = someone else\n"
    "command = python3 x.py\n"
    "arch = gpt2\n"
    "n_layer = 4\n"
    "n_head = 4\n"
    "d_model = 256\n"
    "vocab_size = 1000\n"
    "seq_len = 128\n"
    "micro_batch = 8\n"
    "threads = 1\n"
    "ranks = 1\n"
    "tokens_per_s = 9e9\n";

static const char site[] =
    "[site S1]\n"
    "description = a test site\n"
    "job_script = s1.sbatch\n"
    "device = G1 ; verified: the test\n"
    "ranks_per_node = 4 ; verified: the test\n"
    "time_limit_hours = 24 ; unverified: the test\n"
    "fs_write_gbs = 100 ; verified: the test\n";

static void load_tables(fm_plan_tables *t)
{
    clear_dir();
    write_file("devices.plan", gpu_table);
    write_file("measured.plan", points);
    write_file("s1.plan", site);
    FM_ASSERT_OK(fm_plan_tables_load(tmpdir, t));
}

static fm_model_shape small_shape(void)
{
    fm_model_shape s;
    memset(&s, 0, sizeof s);
    s.n_layer = 4;
    s.n_head = 4;
    s.d_model = 256;
    s.max_seq_len = 128;
    s.vocab_size = 1000;
    snprintf(s.arch, sizeof s.arch, "gpt2");
    fm_model_shape r;
    FM_ASSERT_OK(fm_model_shape_resolve(&s, &r));
    return r;
}

static fm_plan_input small_input(void)
{
    fm_plan_input in;
    memset(&in, 0, sizeof in);
    in.shape = small_shape();
    in.micro_batch = 8;
    in.grad_accum = 2;
    in.tokens = 1e9;
    in.nodes = 2;
    in.ranks_per_node = 4;
    in.cores_per_rank = 1;
    in.stop_margin_s = 600;
    in.checkpoint_bytes = 2000000000ULL; /* 2 GB */
    return in;
}

/* ---- ZeRO arithmetic ---------------------------------------------------------------------------- */

static void test_zero_memory(void **state)
{
    (void)state;
    fm_model_memory_info mem;
    fm_model_shape s = small_shape();
    FM_ASSERT_OK(fm_model_memory_estimate(&s, 4, 4, &mem));
    const uint64_t n = mem.n_params_padded;
    const int R = 7; /* does not divide n: the shard is the ceiling */
    const uint64_t sh = (n + R - 1) / R;
    fm_plan_zero_memory z;
    /* fp32 */
    FM_ASSERT_OK(fm_plan_zero_memory_of(&mem, 0, R, 4, &z));
    assert_int_equal(z.weights, 4 * n);
    assert_int_equal(z.master, 0);
    assert_int_equal(z.grads, 4 * n);
    assert_int_equal(z.optim, 8 * n);
    assert_int_equal(z.activations, mem.act_bytes + mem.logits_bytes + mem.scratch_bytes);
    assert_int_equal(z.total, mem.total_bytes); /* stage 0 is the model's own total */
    FM_ASSERT_OK(fm_plan_zero_memory_of(&mem, 1, R, 4, &z));
    assert_int_equal(z.weights, 4 * n);
    assert_int_equal(z.grads, 4 * n);
    assert_int_equal(z.optim, 8 * sh);
    FM_ASSERT_OK(fm_plan_zero_memory_of(&mem, 2, R, 4, &z));
    assert_int_equal(z.grads, 4 * sh);
    assert_int_equal(z.optim, 8 * sh);
    assert_int_equal(z.total, 4 * n + 4 * sh + 8 * sh + z.activations);
    /* bf16: 2-byte compute copy whole, fp32 master sharded from stage 1 */
    fm_model_memory_info m2;
    FM_ASSERT_OK(fm_model_memory_estimate(&s, 4, 2, &m2));
    FM_ASSERT_OK(fm_plan_zero_memory_of(&m2, 0, R, 2, &z));
    assert_int_equal(m2.param_copy_bytes, 2 * n); /* the model's own bf16 copy */
    assert_int_equal(z.weights, m2.param_copy_bytes);
    assert_int_equal(z.master, 4 * n);
    assert_int_equal(z.total, m2.total_bytes); /* stage 0 is the model's own total in bf16 too */
    assert_true(m2.act_bytes < mem.act_bytes);  /* 2-byte matmul inputs */
    FM_ASSERT_OK(fm_plan_zero_memory_of(&m2, 1, R, 2, &z));
    assert_int_equal(z.weights, 2 * n);
    assert_int_equal(z.master, 4 * sh);
    assert_int_equal(z.grads, 4 * n);
    assert_int_equal(z.optim, 8 * sh);
    FM_ASSERT_OK(fm_plan_zero_memory_of(&m2, 2, R, 2, &z));
    assert_int_equal(z.grads, 4 * sh);
    /* one rank: every stage holds everything */
    FM_ASSERT_OK(fm_plan_zero_memory_of(&mem, 2, 1, 4, &z));
    assert_int_equal(z.total, mem.total_bytes);
    /* errors */
    fm_status st = fm_plan_zero_memory_of(&mem, 3, R, 4, &z);
    assert_int_equal(fm_status_code(st), FM_ERR_USAGE);
    fm_status_free(&st);
    st = fm_plan_zero_memory_of(&mem, 1, 0, 4, &z);
    assert_int_equal(fm_status_code(st), FM_ERR_USAGE);
    fm_status_free(&st);
    st = fm_plan_zero_memory_of(&mem, 1, 2, 3, &z);
    assert_int_equal(fm_status_code(st), FM_ERR_USAGE);
    fm_status_free(&st);
    /* a breakdown of the other precision */
    st = fm_plan_zero_memory_of(&mem, 0, 2, 2, &z);
    assert_int_equal(fm_status_code(st), FM_ERR_USAGE);
    fm_status_free(&st);
    st = fm_plan_zero_memory_of(&m2, 0, 2, 4, &z);
    assert_int_equal(fm_status_code(st), FM_ERR_USAGE);
    fm_status_free(&st);
}

/* ---- the plan ---------------------------------------------------------------------------------- */

static void test_fit_and_max_batch(void **state)
{
    (void)state;
    fm_plan_tables t;
    load_tables(&t);
    const fm_plan_device *g1 = fm_plan_find_device(&t, "G1");
    assert_non_null(g1);
    fm_plan_input in = small_input();
    fm_plan_result r;
    FM_ASSERT_OK(fm_plan_compute(&in, g1, &t, &r));
    const uint64_t budget = (uint64_t)(16.0 * 1024 * 1024 * 1024), over = 512ULL << 20;
    assert_int_equal(r.budget_bytes, budget);
    assert_int_equal(r.overhead_bytes, over);
    for (int q = 0; q < FM_PLAN_PRECISIONS; q++)
        for (int s = 0; s < FM_PLAN_STAGES; s++) {
            int B = r.max_micro_batch[q][s];
            assert_true(B > 8);
            fm_model_memory_info m;
            fm_plan_zero_memory z;
            FM_ASSERT_OK(fm_model_memory_estimate(&in.shape, B, q ? 2 : 4, &m));
            FM_ASSERT_OK(fm_plan_zero_memory_of(&m, s, r.ranks, q ? 2 : 4, &z));
            assert_true(z.total + over <= budget);
            FM_ASSERT_OK(fm_model_memory_estimate(&in.shape, B + 1, q ? 2 : 4, &m));
            FM_ASSERT_OK(fm_plan_zero_memory_of(&m, s, r.ranks, q ? 2 : 4, &z));
            assert_true(z.total + over > budget);
            assert_true(r.fits[q][s]);
        }
    /* a larger stage never fits fewer sequences */
    assert_true(r.max_micro_batch[0][2] >= r.max_micro_batch[0][1]);
    assert_true(r.max_micro_batch[0][1] >= r.max_micro_batch[0][0]);
    /* GPU: host copies of parameters and moments while a checkpoint is written */
    assert_int_equal(r.host_ckpt_bytes, 3 * r.model_mem[0].param_bytes);
    /* a micro-batch that does not fit */
    in.micro_batch = r.max_micro_batch[0][0] + 1;
    FM_ASSERT_OK(fm_plan_compute(&in, g1, &t, &r));
    assert_false(r.fits[0][0]);
    fm_plan_tables_free(&t);
}

static void test_prediction_measured(void **state)
{
    (void)state;
    fm_plan_tables t;
    load_tables(&t);
    const fm_plan_device *g2 = fm_plan_find_device(&t, "G2");
    fm_plan_input in = small_input();
    fm_plan_result r;
    FM_ASSERT_OK(fm_plan_compute(&in, g2, &t, &r));
    assert_int_equal(r.basis, FM_PLAN_MEASURED);
    assert_non_null(r.point);
    assert_string_equal(r.point->id, "p-small"); /* same model, not p-big */
    assert_true(r.same_model);
    const double fpt = fm_model_flops_per_token(&in.shape, 128);
    assert_true(fabs(r.flops_per_token - fpt) < 1e-6 * fpt);
    const double mfu = 100000.0 * fpt / 50e12;
    assert_true(fabs(r.mfu_lo - mfu) < 1e-12 && fabs(r.mfu_hi - mfu) < 1e-12);
    assert_int_equal(r.points_on_device, 2);
    /* the same model on one rank of the measured device runs at the measured tokens/s per rank */
    const double rank_tokens = 8.0 * 2 * 128;
    assert_true(fabs(r.step_s_lo - rank_tokens / 100000.0) < 1e-9);
    assert_int_equal(r.ranks, 8);
    assert_true(fabs(r.tokens_per_s_hi - 8 * 100000.0) < 1e-6);
    /* steps, compute time */
    const double tps = 8.0 * 2 * 8 * 128;
    assert_int_equal(r.steps, (int64_t)ceil(1e9 / tps));
    assert_true(fabs(r.compute_h_lo - r.steps * r.step_s_lo / 3600.0) < 1e-9);
    /* a bigger model takes the big measurement */
    fm_model_shape big;
    memset(&big, 0, sizeof big);
    big.n_layer = 12;
    big.n_head = 12;
    big.d_model = 768;
    big.max_seq_len = 1024;
    big.vocab_size = 50257;
    snprintf(big.arch, sizeof big.arch, "gpt2");
    FM_ASSERT_OK(fm_model_shape_resolve(&big, &in.shape));
    in.micro_batch = 1;
    FM_ASSERT_OK(fm_plan_compute(&in, g2, &t, &r));
    assert_string_equal(r.point->id, "p-big");
    /* a model close to neither: the nearest in FLOPs per token, labelled another model */
    in.shape.n_layer = 5;
    FM_ASSERT_OK(fm_plan_compute(&in, g2, &t, &r));
    assert_false(r.same_model);
    fm_plan_tables_free(&t);
}

static void test_prediction_range_and_none(void **state)
{
    (void)state;
    fm_plan_tables t;
    load_tables(&t);
    fm_plan_input in = small_input();
    fm_plan_result r;
    /* G1: no fmtrain measurement (only a peer); G2 has the same chip and peak: a range */
    FM_ASSERT_OK(fm_plan_compute(&in, fm_plan_find_device(&t, "G1"), &t, &r));
    assert_int_equal(r.basis, FM_PLAN_SIBLING_RANGE);
    assert_string_equal(r.point->id, "p-small");
    const double mfu = 100000.0 * fm_model_flops_per_token(&in.shape, 128) / 50e12;
    assert_true(fabs(r.bandwidth_ratio - 2.0 / 3.0) < 1e-12);
    assert_true(fabs(r.mfu_hi - mfu) < 1e-12);
    assert_true(fabs(r.mfu_lo - mfu * 2.0 / 3.0) < 1e-12);
    assert_true(r.step_s_hi > r.step_s_lo);
    assert_true(fabs(r.step_s_hi / r.step_s_lo - 1.5) < 1e-9);
    /* bf16 on G1: a peak, but no measurement anywhere: no prediction */
    in.precision = FM_PLAN_BF16;
    FM_ASSERT_OK(fm_plan_compute(&in, fm_plan_find_device(&t, "G1"), &t, &r));
    assert_int_equal(r.basis, FM_PLAN_NO_PREDICTION);
    assert_null(r.point);
    assert_true(r.wall_h_lo == 0 && r.node_hours_lo == 0 && r.jobs_lo == 0);
    /* G3: another chip, nothing measured */
    in.precision = FM_PLAN_FP32;
    FM_ASSERT_OK(fm_plan_compute(&in, fm_plan_find_device(&t, "G3"), &t, &r));
    assert_int_equal(r.basis, FM_PLAN_NO_PREDICTION);
    /* a CPU node: the rank's peak is cores x the per-core peak */
    in.cores_per_rank = 2;
    in.ranks_per_node = 4;
    FM_ASSERT_OK(fm_plan_compute(&in, fm_plan_find_device(&t, "C1"), &t, &r));
    assert_int_equal(r.basis, FM_PLAN_MEASURED);
    assert_true(fabs(r.rank_peak_flops - 2 * 0.1e12) < 1);
    /* compute as measured, + the trainer's 3 ms; on 2 nodes the all-reduce between nodes is not
     * measured: a lower bound without it */
    assert_true(fabs(r.compute_s_lo - 8.0 * 2 * 128 / 5000.0) < 1e-9);
    assert_true(fabs(r.trainer_s - 0.003) < 1e-12);
    assert_true(r.comm_s == 0 && !r.comm_complete);
    assert_true(fabs(r.step_s_lo - (r.compute_s_lo + 0.003)) < 1e-12);
    const uint64_t G = r.model_mem[0].grad_bytes;
    assert_int_equal(r.comm_bytes, (uint64_t)(1.5 * (double)G));
    /* one node of 4 ranks: the measured intra-node all-reduce, 2 (n-1)/n G / busbw */
    in.nodes = 1;
    FM_ASSERT_OK(fm_plan_compute(&in, fm_plan_find_device(&t, "C1"), &t, &r));
    assert_true(r.comm_complete);
    assert_true(fabs(r.comm_s - (3 * 0.5e-3 + 2.0 * 3 / 4 * (double)G / 2e9)) < 1e-12);
    assert_true(fabs(r.step_s_lo - (r.compute_s_lo + 0.003 + r.comm_s)) < 1e-12);
    assert_true(fabs(r.tokens_per_s_hi - r.tokens_per_step / r.step_s_lo) < 1e-6);
    /* zero 2 moves the same bytes (reduce-scatter + all-gather); zero 1 all-reduces and all-gathers:
     * (n-1)/n G and one latency per step pair more */
    const double comm0 = r.comm_s;
    in.zero_stage = 2;
    FM_ASSERT_OK(fm_plan_compute(&in, fm_plan_find_device(&t, "C1"), &t, &r));
    assert_true(fabs(r.comm_s - comm0) < 1e-12);
    assert_int_equal(r.comm_passes, 2);
    in.zero_stage = 1;
    FM_ASSERT_OK(fm_plan_compute(&in, fm_plan_find_device(&t, "C1"), &t, &r));
    assert_true(fabs(r.comm_s - (2 * 3 * 0.5e-3 + 3.0 * 3 / 4 * (double)G / 2e9)) < 1e-12);
    assert_int_equal(r.comm_passes, 3);
    assert_true(fabs(r.step_s_lo - (r.compute_s_lo + 0.003 + r.comm_s)) < 1e-12);
    in.zero_stage = 0;
    FM_ASSERT_OK(fm_plan_compute(&in, fm_plan_find_device(&t, "C1"), &t, &r));
    /* the buffers count against the budget */
    assert_true(r.fits[0][0] == (r.zero[0][0].total + r.comm_bytes <= r.budget_bytes));
    /* one rank: no all-reduce, no buffers, complete */
    in.ranks_per_node = 1;
    in.cores_per_rank = 2;
    FM_ASSERT_OK(fm_plan_compute(&in, fm_plan_find_device(&t, "C1"), &t, &r));
    assert_true(r.comm_complete && r.comm_s == 0 && r.comm_bytes == 0);
    in.ranks_per_node = 4;
    in.nodes = 2;
    FM_ASSERT_OK(fm_plan_compute(&in, fm_plan_find_device(&t, "C1"), &t, &r));
    assert_int_equal(r.budget_bytes, (uint64_t)(64.0 * 1024 * 1024 * 1024 / 4));
    assert_int_equal(r.host_ckpt_bytes, 0);
    in.cores_per_rank = 0;
    fm_status st = fm_plan_compute(&in, fm_plan_find_device(&t, "C1"), &t, &r);
    assert_int_equal(fm_status_code(st), FM_ERR_USAGE);
    fm_status_free(&st);
    fm_plan_tables_free(&t);
}

static void test_schedule(void **state)
{
    (void)state;
    fm_plan_tables t;
    load_tables(&t);
    fm_plan_input in = small_input();
    in.fs_gbs = 10;        /* 2 GB in 0.2 s */
    in.node_mtbf_h = 1000; /* job MTBF 500 h on 2 nodes */
    in.time_limit_h = 1;
    in.tokens = 5e10;
    fm_plan_result r;
    FM_ASSERT_OK(fm_plan_compute(&in, fm_plan_find_device(&t, "G2"), &t, &r));
    assert_true(fabs(r.ckpt_write_s - 0.2) < 1e-12);
    assert_true(fabs(r.job_mtbf_h - 500) < 1e-12);
    const double M = 500 * 3600.0, tau = sqrt(2 * 0.2 * M);
    assert_true(fabs(r.young_interval_s - tau) < 1e-9);
    assert_true(fabs(r.ckpt_overhead - (0.2 / tau + tau / (2 * M))) < 1e-12);
    assert_true(fabs(r.wall_h_lo - r.compute_h_lo * (1 + r.ckpt_overhead)) < 1e-9);
    const double job_h = 1 - 600 / 3600.0 - 0.4 / 3600.0;
    assert_true(fabs(r.job_train_h - job_h) < 1e-12);
    assert_int_equal(r.jobs_lo, (int64_t)ceil(r.wall_h_lo / job_h));
    assert_true(r.jobs_lo > 1);
    assert_true(fabs(r.node_hours_lo - 2 * (r.wall_h_lo + r.jobs_lo * 0.4 / 3600.0)) < 1e-9);
    /* no bandwidth: no interval, nothing added */
    in.fs_gbs = 0;
    FM_ASSERT_OK(fm_plan_compute(&in, fm_plan_find_device(&t, "G2"), &t, &r));
    assert_true(r.young_interval_s == 0 && r.ckpt_overhead == 0);
    assert_true(fabs(r.wall_h_lo - r.compute_h_lo) < 1e-12);
    /* a time limit shorter than the stop margin leaves no job time */
    in.time_limit_h = 0.1;
    FM_ASSERT_OK(fm_plan_compute(&in, fm_plan_find_device(&t, "G2"), &t, &r));
    assert_true(r.job_train_h == 0 && r.jobs_lo == 0);
    /* bad input */
    in.time_limit_h = 1;
    in.nodes = 0;
    fm_status st = fm_plan_compute(&in, fm_plan_find_device(&t, "G2"), &t, &r);
    assert_int_equal(fm_status_code(st), FM_ERR_USAGE);
    fm_status_free(&st);
    in.nodes = 1;
    in.tokens = -1;
    st = fm_plan_compute(&in, fm_plan_find_device(&t, "G2"), &t, &r);
    assert_int_equal(fm_status_code(st), FM_ERR_USAGE);
    fm_status_free(&st);
    fm_plan_tables_free(&t);
}

/* ---- the table reader -------------------------------------------------------------------------- */

static void test_tables_read(void **state)
{
    (void)state;
    fm_plan_tables t;
    load_tables(&t);
    assert_int_equal(t.n_devices, 4);
    assert_int_equal(t.n_points, 4);
    assert_int_equal(t.n_sites, 1);
    const fm_plan_device *g1 = fm_plan_find_device(&t, "G1");
    assert_int_equal(g1->kind, FM_PLAN_GPU);
    assert_true(g1->memory_gib.v == 16);
    assert_int_equal(g1->memory_gib.entry->verified, 1);
    assert_string_equal(g1->memory_gib.entry->note, "the test");
    assert_int_equal(g1->peak_tflops[1].entry->verified, 0);
    assert_string_equal(fm_plan_provenance(g1->peak_tflops[1].entry), "unverified");
    const fm_plan_site *s = fm_plan_find_site(&t, "S1");
    assert_non_null(s);
    assert_string_equal(s->device, "G1");
    assert_true(s->ranks_per_node.v == 4 && s->fs_write_gbs.v == 100);
    assert_null(fm_plan_find_site(&t, "S2"));
    assert_string_equal(fm_plan_closest_site(&t, "S2"), "S1");
    assert_string_equal(fm_plan_closest_device(&t, "G4", FM_PLAN_GPU), "G1");
    assert_string_equal(t.points[0].command, "fmtrain-bench --the-test --continued");
    assert_true(t.points[3].peer);
    fm_plan_tables_free(&t);
}

static void test_tables_errors(void **state)
{
    (void)state;
    clear_dir();
    write_file("a.plan", "[device X]\ndescription = x\nkind = gpu\nmemory_gib = 8\npeak_tflops_fp32 = 1 ; verified: t\n");
    expect_load_error("a.plan:4: 'memory_gib = 8' in [device X] does not say where it comes from");
    write_file("a.plan", "[device X]\ndescription = x\nkind = gpu\nmemory_gb = 8 ; verified: t\n");
    expect_load_error("unknown key 'memory_gb' in [device X] (did you mean 'memory_gib'?)");
    write_file("a.plan", "[device X]\ndescription = x\nkind = gpu\nmemory_gib = lots ; verified: t\n"
                         "peak_tflops_fp32 = 1 ; verified: t\n");
    expect_load_error("a.plan:4: 'memory_gib' in [device X] must be a positive number, got 'lots'");
    write_file("a.plan", "[device X]\ndescription = x\nkind = gpu\nmemory_gib = 8 ; verified: t\n"
                         "memory_gib = 9 ; verified: t\n");
    expect_load_error("a.plan:5: key 'memory_gib' appears twice in [device X] (first on line 4)");
    write_file("a.plan", "[device X]\ndescription = x\nkind = gpu\nmemory_gib = 8 ; verified: t\n");
    expect_load_error("[device X] has no peak");
    write_file("a.plan", "[device X]\ndescription = x\nkind = tpu\nmemory_gib = 8 ; verified: t\n"
                         "peak_tflops_fp32 = 1 ; verified: t\n");
    expect_load_error("kind of [device X] must be gpu or cpu, got 'tpu'");
    write_file("a.plan", "[device X]\nkind = gpu\nmemory_gib = 8 ; verified: t\npeak_tflops_fp32 = 1 ; verified: t\n");
    expect_load_error("[device X] has no 'description' (required)");
    write_file("a.plan", "[gadget X]\n");
    expect_load_error("a.plan:1: unknown section kind 'gadget'");
    write_file("a.plan", "memory_gib = 8\n");
    expect_load_error("comes before any section header");
    write_file("a.plan", "[device]\n");
    expect_load_error("has no name");
    write_file("a.plan", "  stray continuation\n");
    expect_load_error("an indented line continues the previous");
    write_file("a.plan", gpu_table);
    write_file("b.plan", "[site S]\ndescription = s\ndevice = NOPE ; verified: t\nranks_per_node = 4 ; verified: t\n");
    expect_load_error("[site S] names device 'NOPE', which no [device] section defines");
    write_file("b.plan", "[site S]\ndescription = s\ndevice = C1 ; verified: t\nranks_per_node = 4 ; verified: t\n");
    expect_load_error("needs 'cores_per_rank'");
    write_file("b.plan", "[site S]\ndescription = s\ndevice = C1 ; verified: t\nranks_per_node = 4 ; verified: t\n"
                         "cores_per_rank = 4 ; verified: t\n");
    expect_load_error("ranks_per_node x cores_per_rank = 4 x 4 is more than the 8 cores");
    write_file("b.plan", "[device G1]\ndescription = again\nkind = gpu\nmemory_gib = 8 ; verified: t\n"
                         "peak_tflops_fp32 = 1 ; verified: t\n");
    expect_load_error("[device G1] is defined twice");
    clear_dir();
    write_file("a.plan", gpu_table);
    write_file("b.plan", "[measured m]\ndevice = G3\nprecision = bf16\ndate = 2026-01-01\nprogram = p\ncommand = c\n"
                         "arch = gpt2\nn_layer = 1\nn_head = 1\nd_model = 8\nvocab_size = 10\nseq_len = 8\n"
                         "micro_batch = 1\nthreads = 1\nranks = 1\ntokens_per_s = 1\n");
    expect_load_error("is a bf16 measurement on G3, whose [device] section has no peak_tflops_bf16");
    write_file("b.plan", "[measured m]\ndevice = G3\nprecision = fp32\ndate = 26-1-1\nprogram = p\ncommand = c\n"
                         "arch = gpt2\nn_layer = 1\nn_head = 1\nd_model = 8\nvocab_size = 10\nseq_len = 8\n"
                         "micro_batch = 1\nthreads = 1\nranks = 1\ntokens_per_s = 1\n");
    expect_load_error("date of [measured m] must be YYYY-MM-DD, got '26-1-1'");
    write_file("b.plan", "[measured m]\ndevice = G3\nprecision = fp32\ndate = 2026-01-01\nprogram = p\ncommand = c\n"
                         "arch = gpt2\nn_layer = 1.5\nn_head = 1\nd_model = 8\nvocab_size = 10\nseq_len = 8\n"
                         "micro_batch = 1\nthreads = 1\nranks = 1\ntokens_per_s = 1\n");
    expect_load_error("'n_layer' in [measured m] must be a positive whole number, got '1.5'");
    clear_dir();
    expect_load_error("holds no .plan files");
    fm_plan_tables t;
    fm_status st = fm_plan_tables_load("/nonexistent/fm-plan", &t);
    assert_int_equal(fm_status_code(st), FM_ERR_USAGE);
    assert_non_null(strstr(fm_status_message(st), "give --data DIR"));
    fm_status_free(&st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_zero_memory),
        cmocka_unit_test(test_fit_and_max_batch),
        cmocka_unit_test(test_prediction_measured),
        cmocka_unit_test(test_prediction_range_and_none),
        cmocka_unit_test(test_schedule),
        cmocka_unit_test(test_tables_read),
        cmocka_unit_test(test_tables_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

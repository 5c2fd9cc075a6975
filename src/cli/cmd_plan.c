/* cmd_plan.c — `fmtrain plan PARAMS.ini --tokens N (--system SITE | --gpu NAME | --cpu NAME)`:
 * memory per rank for each ZeRO stage and precision, the largest micro-batch that fits, the step time
 * predicted from a measured MFU, wall time, node-hours and jobs, the checkpoint size, write time and
 * Young's interval — before the proposal is written.
 *
 * This file reads the command line and the parameter file, finds the data tables (plan/tables.h),
 * asks the checkpoint layer for the file size, and prints what plan/plan.h computes as text or JSON.
 * Nothing here is arithmetic beyond formatting. No MPI: it runs on a login node. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckpt/checkpoint.h"
#include "cli/cli.h"
#include "config/config.h"
#include "core/util.h"
#include "data/dataset.h"
#include "model/model.h"
#include "plan/plan.h"
#include "plan/tables.h"

#ifndef FM_PLAN_SOURCE_TABLES
#define FM_PLAN_SOURCE_TABLES ""
#endif

static const char plan_help[] =
    "Usage: fmtrain plan PARAMS.ini --tokens N (--system SITE | --gpu NAME | --cpu NAME)\n"
    "                    [--nodes N] [--ranks-per-node R] [--cores-per-rank C]\n"
    "                    [--precision fp32|bf16] [--zero 0|1|2] [--time-limit HOURS]\n"
    "                    [--fs-gbs X] [--node-mtbf HOURS] [--set section.key=value]...\n"
    "                    [--data DIR] [--json]\n"
    "\n"
    "Sizes a training run of the model in PARAMS.ini for a budget of N tokens before it is\n"
    "submitted (no MPI, nothing allocated; run it on a login node). Prints: parameters and model\n"
    "FLOPs per token; memory per rank by component for ZeRO stages 0, 1, 2 in fp32 and bf16, whether\n"
    "it fits the device and the largest micro_batch that does; the step time and tokens/s predicted\n"
    "from the device's datasheet peak and an MFU measured with fmtrain-bench on that device and\n"
    "precision (the measurement is named, with its date and command; without one no step time is\n"
    "predicted, or a range from a device with the same chip, both ends stated); wall time, jobs at\n"
    "the site's time limit and node-hours; the checkpoint size, its write time at the site's\n"
    "file-system bandwidth and the checkpoint interval from Young's formula sqrt(2 x write x MTBF).\n"
    "Every table value says whether it was verified, and against what. See docs/plan.md.\n"
    "\n"
    "Options:\n"
    "  --tokens N          the token budget (e.g. 10e9)\n"
    "  --system SITE       a site of the tables (jobscripts/sites/SITE.plan): its device, ranks\n"
    "                      per node, time limit and file-system bandwidth\n"
    "  --gpu NAME          plan for one GPU type of the device table (H100-80, A100-64, ...)\n"
    "  --cpu NAME          plan for one CPU node type of the device table\n"
    "  --nodes N           nodes (default 1)\n"
    "  --ranks-per-node R  default: the site's; without a site 1\n"
    "  --cores-per-rank C  CPU nodes: cores each rank computes on (default: the site's, or the\n"
    "                      node's cores divided by the ranks per node)\n"
    "  --precision P       the precision of the prediction: fp32 or bf16 (default: PARAMS.ini's\n"
    "                      [runtime] precision; auto plans bf16 on GPUs (sm_80 and newer: every\n"
    "                      GPU of the tables) and fp32 on CPU nodes)\n"
    "  --zero S            the ZeRO stage of the prediction and the fit summary (default 0)\n"
    "  --time-limit HOURS  one job's wall-time limit (default: the site's)\n"
    "  --fs-gbs X          the checkpoint write bandwidth of the job in GB/s (default: the site's\n"
    "                      file system, at most nodes x the node's network bandwidth); measure it\n"
    "                      with bench_checkpoint (docs/performance.md)\n"
    "  --node-mtbf HOURS   mean time between failures of one node (default on GPU nodes: Llama 3's\n"
    "                      published rate, 16384 x 54 x 24 / 419 GPU-hours per interruption,\n"
    "                      divided by the GPUs of a node; none on CPU nodes)\n"
    "  --set s.key=value   override one parameter of PARAMS.ini (repeatable)\n"
    "  --data DIR          the directory of the .plan tables (default: $FMTRAIN_JOBSCRIPTS/sites,\n"
    "                      then share/fmtrain/jobscripts/sites beside the executable, then the\n"
    "                      source tree's jobscripts/sites)\n"
    "  --json              one JSON object on stdout instead of the text\n";

/* ---- options ----------------------------------------------------------------------------------- */

typedef struct plan_args {
    const char *params, *tokens, *system, *gpu, *cpu, *nodes, *rpn, *cpr, *precision, *zero;
    const char *time_limit, *fs_gbs, *mtbf, *data;
    int json;
    fm_cli_list sets;
} plan_args;

/* The directory of the tables: --data, $FMTRAIN_JOBSCRIPTS/sites, <exe>/../share/fmtrain/jobscripts/
 * sites, the source tree's. The first that can be opened wins; *how says which rule chose it. */
static fm_status find_tables(const char *given, char *dir, size_t n, const char **how)
{
    if (given) {
        fm_util_strlcpy(dir, given, n);
        *how = "--data";
        return NULL;
    }
    char cand[3][4200];
    const char *why[3] = {"$FMTRAIN_JOBSCRIPTS/sites", "beside the executable", "the source tree"};
    int nc = 0;
    const char *js = getenv("FMTRAIN_JOBSCRIPTS");
    cand[0][0] = cand[1][0] = cand[2][0] = '\0';
    if (js && js[0]) snprintf(cand[0], sizeof cand[0], "%s/sites", js);
    char exe[4096];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len > 0) {
        exe[len] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            snprintf(cand[1], sizeof cand[1], "%s/../share/fmtrain/jobscripts/sites", exe);
        }
    }
    fm_util_strlcpy(cand[2], FM_PLAN_SOURCE_TABLES, sizeof cand[2]);
    for (nc = 0; nc < 3; nc++) {
        if (!cand[nc][0]) continue;
        DIR *d = opendir(cand[nc]);
        if (!d) continue;
        closedir(d);
        fm_util_strlcpy(dir, cand[nc], n);
        *how = why[nc];
        return NULL;
    }
    return FM_ERR(FM_ERR_USAGE, "fmtrain plan: no plan tables found (looked in $FMTRAIN_JOBSCRIPTS/sites, "
                                "%s and %s); give --data DIR with the directory of the .plan files "
                                "(jobscripts/sites in the source tree)",
                  cand[1][0] ? cand[1] : "share/fmtrain/jobscripts/sites beside the executable",
                  cand[2][0] ? cand[2] : "the source tree");
}

/* The parameter file with the overrides, validated. */
static fm_status load_config(const plan_args *a, fm_config *cfg)
{
    fm_config_defaults(cfg);
    FM_TRY(fm_config_load(cfg, a->params));
    for (int i = 0; i < a->sets.n; i++) FM_TRY(fm_config_set(cfg, a->sets.items[i]));
    FM_TRY(fm_config_validate(cfg));
    return NULL;
}

/* The model shape of the parameter file; vocab_size = 0 takes the dataset's, which must then be
 * readable. */
static fm_status config_shape(const fm_config *cfg, const char *params, fm_model_shape *out)
{
    fm_model_shape s;
    memset(&s, 0, sizeof s);
    s.n_layer = cfg->model_n_layer;
    s.n_head = cfg->model_n_head;
    s.d_model = cfg->model_d_model;
    s.max_seq_len = cfg->model_seq_len;
    int64_t V = cfg->model_vocab_size;
    if (V == 0) {
        fm_dataset_info info;
        fm_status st = fm_dataset_probe(cfg->data_train, &info);
        if (st) {
            fm_status e = FM_ERR(FM_ERR_USAGE,
                                 "%s: [model] vocab_size = 0 takes the vocabulary from the dataset, "
                                 "and %s cannot be read (%s); give it with --set model.vocab_size=N",
                                 params, cfg->data_train, fm_status_message(st));
            fm_status_free(&st);
            return e;
        }
        V = (int64_t)info.vocab_size;
    }
    if (V > INT_MAX)
        return FM_ERR(FM_ERR_USAGE, "%s: vocabulary of %" PRId64 " tokens is larger than fmtrain supports",
                      params, V);
    s.vocab_size = (int)V;
    fm_util_strlcpy(s.arch, fm_config_arch(cfg), sizeof s.arch);
    s.n_kv_head = cfg->model_n_kv_head;
    s.ffn_dim = cfg->model_ffn_dim;
    s.rope_theta = cfg->model_rope_theta;
    s.norm_eps = cfg->model_norm_eps;
    s.tie_embeddings = cfg->model_tie_embeddings == FM_TIE_EMB_TRUE    ? FM_TIE_YES
                       : cfg->model_tie_embeddings == FM_TIE_EMB_FALSE ? FM_TIE_NO
                                                                       : FM_TIE_DEFAULT;
    return fm_status_prefix(fm_model_shape_resolve(&s, out), "%s: ", params);
}

static fm_status parse_int(const char *opt, const char *text, long long lo, long long hi, int *out)
{
    long long v;
    FM_TRY(fm_cli_int(opt, text, lo, hi, &v));
    *out = (int)v;
    return NULL;
}

/* Everything plan_run needs besides the results. */
typedef struct plan_ctx {
    fm_plan_tables tables;
    char tables_dir[4096];
    const char *tables_how;
    const fm_plan_site *site;
    const fm_plan_device *dev;
    fm_plan_input in;
    fm_config cfg;
    const char *params;
    /* where the job facts came from, for the text */
    const char *rpn_from, *cpr_from, *limit_from, *fs_from, *mtbf_from, *prec_from;
    const fm_plan_entry *limit_entry, *fs_entry, *net_entry, *mem_entry;
    double fs_site_gbs, net_gbs;   /* the site's file system and node network (0: unknown) */
    int json;
} plan_ctx;

/* The device and the job's layout from --system / --gpu / --cpu and the layout options. */
static fm_status choose_device(plan_ctx *c, const plan_args *a)
{
    const fm_plan_tables *t = &c->tables;
    int given = (a->system != NULL) + (a->gpu != NULL) + (a->cpu != NULL);
    if (given != 1)
        return FM_ERR(FM_ERR_USAGE, "fmtrain plan: give exactly one of --system SITE, --gpu NAME, "
                                    "--cpu NAME (got %d); sites: see 'fmtrain plan --help' and %s",
                      given, c->tables_dir);
    if (a->system) {
        c->site = fm_plan_find_site(t, a->system);
        if (!c->site) {
            const char *best = fm_plan_closest_site(t, a->system);
            char names[1024] = "";
            for (int i = 0; i < t->n_sites; i++) {
                if (i) fm_util_strlcpy(names + strlen(names), ", ", sizeof names - strlen(names));
                fm_util_strlcpy(names + strlen(names), t->sites[i].name, sizeof names - strlen(names));
            }
            return FM_ERR(FM_ERR_USAGE, "fmtrain plan: no site '%s' in %s%s%s%s; the sites are: %s",
                          a->system, c->tables_dir, best ? " (did you mean '" : "", best ? best : "",
                          best ? "'?)" : "", names);
        }
        c->dev = fm_plan_find_device(t, c->site->device);
        return NULL;
    }
    const char *name = a->gpu ? a->gpu : a->cpu;
    const int kind = a->gpu ? FM_PLAN_GPU : FM_PLAN_CPU;
    c->dev = fm_plan_find_device(t, name);
    if (!c->dev || (int)c->dev->kind != kind) {
        const char *best = fm_plan_closest_device(t, name, kind);
        char names[1024] = "";
        for (int i = 0; i < t->n_devices; i++) {
            if ((int)t->devices[i].kind != kind) continue;
            if (names[0]) fm_util_strlcpy(names + strlen(names), ", ", sizeof names - strlen(names));
            fm_util_strlcpy(names + strlen(names), t->devices[i].name, sizeof names - strlen(names));
        }
        if (c->dev)
            return FM_ERR(FM_ERR_USAGE, "fmtrain plan: %s is a %s in %s/devices.plan: use --%s %s",
                          name, c->dev->kind == FM_PLAN_GPU ? "GPU" : "CPU node type", c->tables_dir,
                          c->dev->kind == FM_PLAN_GPU ? "gpu" : "cpu", name);
        return FM_ERR(FM_ERR_USAGE, "fmtrain plan: no %s '%s' in the device table of %s%s%s%s; the %ss "
                                    "are: %s", a->gpu ? "GPU" : "CPU node type", name, c->tables_dir,
                      best ? " (did you mean '" : "", best ? best : "", best ? "'?)" : "",
                      a->gpu ? "GPU" : "CPU node type", names);
    }
    return NULL;
}

static fm_status fill_input(plan_ctx *c, const plan_args *a)
{
    fm_plan_input *in = &c->in;
    memset(in, 0, sizeof *in);
    FM_TRY(config_shape(&c->cfg, a->params, &in->shape));
    in->micro_batch = c->cfg.train_micro_batch;
    in->grad_accum = c->cfg.train_grad_accum;
    in->stop_margin_s = c->cfg.run_stop_margin_minutes * 60.0;
    if (!a->tokens) return FM_ERR(FM_ERR_USAGE, "fmtrain plan: --tokens N (the token budget) is required");
    FM_TRY(fm_cli_double("--tokens", a->tokens, 1, 1e18, &in->tokens));
    in->nodes = 1;
    if (a->nodes) FM_TRY(parse_int("--nodes", a->nodes, 1, 1000000, &in->nodes));
    const fm_plan_site *s = c->site;
    const fm_plan_device *d = c->dev;
    if (s && s->max_nodes.entry && in->nodes > s->max_nodes.v)
        return FM_ERR(FM_ERR_USAGE, "fmtrain plan: --nodes %d is more than %s's %g nodes per job (%s: "
                                    "%s); plan at most that, or ask the site for more",
                      in->nodes, s->name, s->max_nodes.v, fm_plan_provenance(s->max_nodes.entry),
                      s->max_nodes.entry->note);
    in->ranks_per_node = s ? (int)s->ranks_per_node.v : 1;
    c->rpn_from = s ? "the site" : "default";
    if (a->rpn) {
        FM_TRY(parse_int("--ranks-per-node", a->rpn, 1, 4096, &in->ranks_per_node));
        c->rpn_from = "--ranks-per-node";
    }
    if (d->kind == FM_PLAN_CPU) {
        if (s && !a->rpn) {
            in->cores_per_rank = (int)s->cores_per_rank.v;
            c->cpr_from = "the site";
        } else {
            in->cores_per_rank = (int)d->cores.v / in->ranks_per_node;
            c->cpr_from = "the node's cores / ranks per node";
        }
        if (a->cpr) {
            FM_TRY(parse_int("--cores-per-rank", a->cpr, 1, 1 << 20, &in->cores_per_rank));
            c->cpr_from = "--cores-per-rank";
        }
        if (in->cores_per_rank < 1 || (double)in->cores_per_rank * in->ranks_per_node > d->cores.v)
            return FM_ERR(FM_ERR_USAGE, "fmtrain plan: %d ranks per node x %d cores per rank do not fit "
                                        "the %g cores of a %s node; lower --ranks-per-node or "
                                        "--cores-per-rank", in->ranks_per_node, in->cores_per_rank,
                          d->cores.v, d->name);
    } else if (a->cpr) {
        return FM_ERR(FM_ERR_USAGE, "fmtrain plan: --cores-per-rank is for CPU nodes; %s is a GPU (one "
                                    "rank per GPU)", d->name);
    }
    /* The parameter file's precision. auto is bf16 on GPUs of compute capability 8.0 and newer (the
     * CUDA backend's rule; every GPU of the tables is one) and on CPUs with native bf16 GEMMs (a
     * oneDNN build on AVX512_BF16 or AMX), fp32 on other CPUs: the device table does not say which
     * CPU it is, so auto plans fp32 there and says how to plan bf16. */
    switch (c->cfg.runtime_precision) {
    case FM_RUNTIME_PRECISION_BF16:
        in->precision = FM_PLAN_BF16;
        c->prec_from = "[runtime] precision";
        break;
    case FM_RUNTIME_PRECISION_FP32:
        in->precision = FM_PLAN_FP32;
        c->prec_from = "[runtime] precision";
        break;
    default:
        in->precision = d->kind == FM_PLAN_GPU ? FM_PLAN_BF16 : FM_PLAN_FP32;
        c->prec_from = d->kind == FM_PLAN_GPU
                           ? "[runtime] precision = auto: bf16 on GPUs of compute capability 8.0 and newer"
                           : "[runtime] precision = auto: fp32 without native bf16 GEMMs; on CPUs with "
                             "AVX512_BF16 or AMX in a oneDNN build auto is bf16: plan it with --precision bf16";
        break;
    }
    if (a->precision) {
        c->prec_from = "--precision";
        if (strcmp(a->precision, "fp32") == 0)
            in->precision = FM_PLAN_FP32;
        else if (strcmp(a->precision, "bf16") == 0)
            in->precision = FM_PLAN_BF16;
        else
            return FM_ERR(FM_ERR_USAGE, "--precision: expected fp32 or bf16, got '%s'", a->precision);
    }
    if (a->zero) FM_TRY(parse_int("--zero", a->zero, 0, 2, &in->zero_stage));
    /* time limit */
    if (s && s->time_limit_hours.entry) {
        in->time_limit_h = s->time_limit_hours.v;
        c->limit_from = "the site";
        c->limit_entry = s->time_limit_hours.entry;
    }
    if (a->time_limit) {
        FM_TRY(fm_cli_double("--time-limit", a->time_limit, 0.01, 1e6, &in->time_limit_h));
        c->limit_from = "--time-limit";
        c->limit_entry = NULL;
    }
    /* checkpoint bandwidth: the file system, at most the nodes' network */
    if (s && s->fs_write_gbs.entry) {
        c->fs_site_gbs = s->fs_write_gbs.v;
        c->fs_entry = s->fs_write_gbs.entry;
        in->fs_gbs = c->fs_site_gbs;
        c->fs_from = "the site's file system";
        if (s->node_network_gbs.entry) {
            c->net_gbs = s->node_network_gbs.v;
            c->net_entry = s->node_network_gbs.entry;
            if (in->nodes * c->net_gbs < in->fs_gbs) {
                in->fs_gbs = in->nodes * c->net_gbs;
                c->fs_from = "the nodes' network";
            }
        }
    }
    if (a->fs_gbs) {
        FM_TRY(fm_cli_double("--fs-gbs", a->fs_gbs, 1e-6, 1e9, &in->fs_gbs));
        c->fs_from = "--fs-gbs";
    }
    /* node MTBF */
    if (a->mtbf) {
        FM_TRY(fm_cli_double("--node-mtbf", a->mtbf, 1e-3, 1e12, &in->node_mtbf_h));
        c->mtbf_from = "--node-mtbf";
    } else if (d->kind == FM_PLAN_GPU) {
        in->node_mtbf_h = FM_PLAN_LLAMA3_GPU_HOURS_PER_FAILURE / in->ranks_per_node;
        c->mtbf_from = "llama3";
    }
    if (s && s->node_memory_gib.entry) {
        in->node_memory_gib = s->node_memory_gib.v;
        c->mem_entry = s->node_memory_gib.entry;
    }
    in->checkpoint_bytes = fm_checkpoint_estimate_size(&in->shape, c->cfg.checkpoint_align_bytes);
    return NULL;
}

/* ---- text output ------------------------------------------------------------------------------- */

static const char *digits(double v, char *buf, size_t n)
{
    char tmp[64];
    int len = snprintf(tmp, sizeof tmp, "%.0f", v);
    size_t j = 0;
    for (int i = 0; i < len && j + 2 < n; i++) {
        if (i > 0 && tmp[i - 1] != '-' && (len - i) % 3 == 0) buf[j++] = ',';
        buf[j++] = tmp[i];
    }
    buf[j] = '\0';
    return buf;
}

static double gib(uint64_t b)
{
    return (double)b / (1024.0 * 1024.0 * 1024.0);
}

/* " (verified: SOURCE)" / " (unverified: WHY)" */
static void print_prov(const fm_plan_entry *e)
{
    if (e && e->verified >= 0) printf(" (%s: %s)", fm_plan_provenance(e), e->note);
}

static void print_model(const plan_ctx *c, const fm_plan_result *r)
{
    const fm_model_shape *s = &c->in.shape;
    char n1[40], n2[40], n3[40];
    printf("model        %s: %d layers, %d heads (%d key/value), d_model %d, ffn %d, seq_len %d, "
           "vocabulary %d, %s head: %s parameters\n",
           s->arch, s->n_layer, s->n_head, s->n_kv_head, s->d_model, s->ffn_dim, s->max_seq_len,
           s->vocab_size, s->tie_embeddings == FM_TIE_YES ? "tied" : "untied",
           digits((double)r->n_params, n1, sizeof n1));
    printf("FLOPs        %.4g per token, forward + backward (the family's count, "
           "fm_model_flops_per_token: 6 x matmul weights + attention at seq_len %d)\n",
           r->flops_per_token, s->max_seq_len);
    printf("batch        micro_batch %d x grad_accum %d x %d rank%s x seq_len %d = %s tokens per step; "
           "%s steps for %.4g tokens\n",
           c->in.micro_batch, c->in.grad_accum, r->ranks, r->ranks == 1 ? "" : "s", s->max_seq_len,
           digits(r->tokens_per_step, n2, sizeof n2), digits((double)r->steps, n3, sizeof n3),
           c->in.tokens);
}

static void print_memory(const plan_ctx *c, const fm_plan_result *r)
{
    const fm_plan_device *d = c->dev;
    printf("\nmemory per rank, GiB (the model's formula, fm_model_memory_estimate; ZeRO over %d rank%s: "
           "fm_plan_zero_memory_of, src/plan/plan.h)\n", r->ranks, r->ranks == 1 ? "" : "s");
    printf("                       %-29s %s\n", "fp32", "bf16 ([runtime] precision = bf16)");
    printf("                       zero 0   zero 1   zero 2    zero 0   zero 1   zero 2\n");
    struct row {
        const char *name;
        int field;
    } rows[] = {{"weights (compute)", 0}, {"master weights", 1}, {"gradients", 2}, {"AdamW m, v", 3},
                {"activations", 4},       {"logits", 5},         {"scratch", 6}};
    for (size_t i = 0; i < sizeof rows / sizeof *rows; i++) {
        printf("  %-19s", rows[i].name);
        for (int q = 0; q < FM_PLAN_PRECISIONS; q++) {
            for (int s = 0; s < FM_PLAN_STAGES; s++) {
                const fm_plan_zero_memory *z = &r->zero[q][s];
                const fm_model_memory_info *m = &r->model_mem[q];
                uint64_t v = rows[i].field == 0   ? z->weights
                             : rows[i].field == 1 ? z->master
                             : rows[i].field == 2 ? z->grads
                             : rows[i].field == 3 ? z->optim
                             : rows[i].field == 4 ? m->act_bytes
                             : rows[i].field == 5 ? m->logits_bytes
                                                  : m->scratch_bytes;
                if (rows[i].field == 1 && v == 0)
                    printf(" %8s", "-");
                else
                    printf(" %8.3f", gib(v));
            }
            if (q + 1 < FM_PLAN_PRECISIONS) printf(" ");
        }
        printf("\n");
    }
    printf("  %-19s", "runtime (measured)");
    for (int q = 0; q < FM_PLAN_PRECISIONS; q++) {
        for (int s = 0; s < FM_PLAN_STAGES; s++)
            if (d->overhead_mib.entry)
                printf(" %8.3f", gib(r->overhead_bytes));
            else
                printf(" %8s", "?");
        if (q + 1 < FM_PLAN_PRECISIONS) printf(" ");
    }
    if (r->ranks > 1) {
        printf("\n  %-19s", "all-reduce buffers");
        for (int q = 0; q < FM_PLAN_PRECISIONS; q++) {
            for (int s = 0; s < FM_PLAN_STAGES; s++)
                if (d->allreduce_buffer_factor.entry)
                    printf(" %8.3f", gib(r->comm_bytes));
                else
                    printf(" %8s", "?");
            if (q + 1 < FM_PLAN_PRECISIONS) printf(" ");
        }
    }
    printf("\n  %-19s", "total");
    for (int q = 0; q < FM_PLAN_PRECISIONS; q++) {
        for (int s = 0; s < FM_PLAN_STAGES; s++)
            printf(" %8.3f", gib(r->zero[q][s].total + r->overhead_bytes + r->comm_bytes));
        if (q + 1 < FM_PLAN_PRECISIONS) printf(" ");
    }
    if (r->budget_bytes > 0) {
        printf("\n  %-19s", "fits");
        for (int q = 0; q < FM_PLAN_PRECISIONS; q++) {
            for (int s = 0; s < FM_PLAN_STAGES; s++) printf(" %8s", r->fits[q][s] ? "yes" : "NO");
            if (q + 1 < FM_PLAN_PRECISIONS) printf(" ");
        }
        printf("\n  %-19s", "largest micro_batch");
        for (int q = 0; q < FM_PLAN_PRECISIONS; q++) {
            for (int s = 0; s < FM_PLAN_STAGES; s++) printf(" %8d", r->max_micro_batch[q][s]);
            if (q + 1 < FM_PLAN_PRECISIONS) printf(" ");
        }
    }
    printf("\n");
    if (d->kind == FM_PLAN_GPU) {
        printf("  budget: one %s: %.4g GiB", d->name, d->memory_gib.v);
        print_prov(d->memory_gib.entry);
    } else {
        double node = c->in.node_memory_gib > 0 ? c->in.node_memory_gib : d->memory_gib.v;
        printf("  budget: a %s node's %.4g GiB / %d ranks per node = %.4g GiB", d->name, node,
               c->in.ranks_per_node, gib(r->budget_bytes));
        print_prov(c->in.node_memory_gib > 0 ? c->mem_entry : d->memory_gib.entry);
    }
    printf("\n");
    if (d->overhead_mib.entry) {
        printf("  runtime: %.4g MiB per rank beyond the model's formula", d->overhead_mib.v);
        print_prov(d->overhead_mib.entry);
        printf("\n");
    } else {
        printf("  runtime: ? = no measured overhead for %s: the totals hold the model's buffers only (the "
               "process, MPI and, on GPUs, the CUDA context add to them", d->name);
        for (int i = 0; i < c->tables.n_devices; i++) {
            const fm_plan_device *o = &c->tables.devices[i];
            if (o->kind == d->kind && o->overhead_mib.entry) {
                printf("; measured on %s: %.4g MiB", o->name, o->overhead_mib.v);
                break;
            }
        }
        printf(")\n");
    }
    if (r->ranks > 1) {
        if (d->allreduce_buffer_factor.entry) {
            printf("  all-reduce: MPI's buffers of the gradient buckets in flight, %.3g x the gradient bytes",
                   d->allreduce_buffer_factor.v);
            print_prov(d->allreduce_buffer_factor.entry);
            printf("\n");
        } else {
            printf("  all-reduce: ? = not measured on %s: MPI's buffers of the gradient buckets in flight "
                   "come on top (up to about the gradient bytes)\n", d->name);
        }
    }
    printf("  bf16: matmul inputs at 2 bytes and the model's 2-byte copy of the weights that the matmuls read, "
           "beside the fp32 master (the model's formula with act_elem_bytes = 2, docs/model.md)\n");
    printf("  zero 1 shards the AdamW moments (and a separate master copy), zero 2 also the gradients; "
           "fp32 weights stay whole on every rank (compute reads them)\n");
    if (r->host_ckpt_bytes) {
        printf("  host memory per rank while a checkpoint is written (the state is copied from the GPU, "
               "src/ckpt/checkpoint.c): %.3g GiB, x %d ranks per node = %.3g GiB",
               gib(r->host_ckpt_bytes), c->in.ranks_per_node, gib(r->host_ckpt_bytes) * c->in.ranks_per_node);
        if (c->in.node_memory_gib > 0) {
            printf(" of a node's %.4g GiB", c->in.node_memory_gib);
            print_prov(c->mem_entry);
        }
        printf("\n");
    }
}

static void print_point(const fm_plan_measurement *m, const fm_plan_tables *t)
{
    char n1[40];
    printf("  measured   %s, %s, %s: %s %s (%d layers, %d heads, d_model %d, vocabulary %d, seq_len %d), "
           "micro_batch %d, %d thread%s, %d rank%s: %s tokens/s = MFU %.3g %%\n",
           m->device, m->precision ? "bf16" : "fp32", m->date, m->program, m->arch, m->n_layer,
           m->n_head, m->d_model, m->vocab_size, m->seq_len, m->micro_batch, m->threads,
           m->threads == 1 ? "" : "s", m->ranks, m->ranks == 1 ? "" : "s",
           digits(m->tokens_per_s, n1, sizeof n1), 100.0 * fm_plan_measurement_mfu(m, t));
    printf("             command: %s\n", m->command);
    if (m->note[0]) printf("             %s\n", m->note);
    printf("             [%s %s] in %s\n", m->sec->kind, m->id, m->sec->file);
}

static void print_prediction(const plan_ctx *c, const fm_plan_result *r)
{
    const fm_plan_device *d = c->dev;
    const int p = (int)c->in.precision;
    char n1[40], n2[40], n3[40];
    printf("\nstep time (%s, zero %d)\n", fm_plan_precision_name(c->in.precision), c->in.zero_stage);
    printf("  precision  %s (%s)\n", fm_plan_precision_name(c->in.precision), c->prec_from);
    if (!d->peak_tflops[p].entry) {
        printf("  no prediction: the device table has no %s peak for %s\n", fm_plan_precision_name(c->in.precision),
               d->name);
        return;
    }
    printf("  peak       %.4g TFLOP/s per rank: %s %s %.4g TFLOP/s", r->rank_peak_flops / 1e12, d->name,
           fm_plan_precision_name(c->in.precision), d->peak_tflops[p].v);
    if (d->kind == FM_PLAN_CPU) printf(" per core x %d cores", c->in.cores_per_rank);
    print_prov(d->peak_tflops[p].entry);
    printf("\n");
    if (r->basis == FM_PLAN_NO_PREDICTION) {
        const fm_model_shape *sh = &c->in.shape;
        char extra[160] = "";
        if (strcmp(sh->arch, "gpt2") != 0)
            snprintf(extra, sizeof extra, " --arch %s --kv-heads %d --ffn %d%s", sh->arch, sh->n_kv_head,
                     sh->ffn_dim, sh->tie_embeddings == FM_TIE_YES ? " --tie" : "");
        printf("  no prediction: no fmtrain measurement in %s on %s%s%s. Measure one on that device, e.g.\n"
               "             fmtrain-bench --device %s%s --layers %d --heads %d --dim %d --vocab %d --seq %d "
               "--batch %d --threads %d --steps 5 --warmup 1%s\n"
               "             and add it as a [measured] section to %s/measured.plan (docs/plan.md)\n",
               fm_plan_precision_name(c->in.precision), d->name,
               d->chip[0] ? " or a device with its chip, " : "", d->chip[0] ? d->chip : "",
               d->kind == FM_PLAN_GPU ? "cuda" : "cpu", extra, sh->n_layer, sh->n_head, sh->d_model,
               sh->vocab_size, sh->max_seq_len, c->in.micro_batch,
               d->kind == FM_PLAN_GPU ? 4 : c->in.cores_per_rank,
               c->in.precision == FM_PLAN_BF16 ? " --precision bf16" : "", c->tables_dir);
    } else {
        print_point(r->point, &c->tables);
        if (r->basis == FM_PLAN_SIBLING_RANGE) {
            const fm_plan_device *md = fm_plan_find_device(&c->tables, r->point->device);
            printf("  range      no fmtrain measurement on %s in %s; %s has the same chip (%s) and peak: "
                   "MFU %.3g %% if the step is compute-bound, %.3g %% if it is bound by memory bandwidth "
                   "(%.3g vs %.3g TB/s)\n",
                   d->name, fm_plan_precision_name(c->in.precision), md->name, d->chip,
                   100.0 * r->mfu_hi, 100.0 * r->mfu_lo, d->memory_tbs.v, md->memory_tbs.v);
        }
        if (!r->same_model)
            printf("  model      the measurement is of another model (%.4g FLOPs per token, this one x%.4g of "
                   "it): MFU changes with the model's size and shape, so this is an estimate\n",
                   r->point_flops_per_token, r->flops_per_token / r->point_flops_per_token);
        if (r->points_on_device > 1)
            printf("  spread     %d fmtrain measurements on %s in %s: MFU %.3g to %.3g %%\n",
                   r->points_on_device, d->name, fm_plan_precision_name(c->in.precision),
                   100.0 * r->mfu_min_on_device, 100.0 * r->mfu_max_on_device);
        printf("  compute    %.4g", r->compute_s_lo);
        if (r->compute_s_hi > r->compute_s_lo * 1.0000001) printf(" to %.4g", r->compute_s_hi);
        printf(" s per step at MFU %.3g", 100.0 * r->mfu_hi);
        if (r->mfu_lo < r->mfu_hi) printf(" to %.3g", 100.0 * r->mfu_lo);
        printf(" %%\n");
        if (d->trainer_overhead_ms.entry) {
            printf("  trainer    + %.4g s per step: what fmtrain train adds to the benchmark's step on %s",
                   r->trainer_s, d->name);
            print_prov(d->trainer_overhead_ms.entry);
            printf("\n");
        }
        if (r->comm_s > 0) {
            /* zero 0 all-reduces the gradients, zero 2 reduce-scatters them and all-gathers the
             * weights (the same bytes), zero 1 does both an all-reduce and the all-gather (plan.c) */
            const int z = c->in.zero_stage;
            printf("  %s + %.4g s per step: ",
                   z == 0 ? "all-reduce" : z == 1 ? "all-reduce + all-gather" : "reduce-scatter + all-gather",
                   r->comm_s);
            if (d->allreduce_latency_ms.entry) {
                if (r->comm_passes > 2) printf("%d x ", r->comm_passes - 1);
                printf("(%d-1) x %.4g ms + ", r->ranks, d->allreduce_latency_ms.v);
            }
            printf("%d x (%d-1)/%d x %.3g GiB of gradients%s at %.4g GB/s", r->comm_passes, r->ranks,
                   r->ranks, gib(r->model_mem[0].grad_bytes), z ? " and weights" : "",
                   d->allreduce_busbw_gbs.v);
            print_prov(d->allreduce_busbw_gbs.entry);
            printf("\n");
        }
        if (r->step_s_hi > r->step_s_lo * 1.0000001)
            printf("  step       %.4g to %.4g s; %s to %s tokens/s over %d rank%s\n", r->step_s_lo,
                   r->step_s_hi, digits(r->tokens_per_s_lo, n1, sizeof n1),
                   digits(r->tokens_per_s_hi, n2, sizeof n2), r->ranks, r->ranks == 1 ? "" : "s");
        else
            printf("  step       %.4g s; %s tokens/s over %d rank%s\n", r->step_s_lo,
                   digits(r->tokens_per_s_hi, n1, sizeof n1), r->ranks, r->ranks == 1 ? "" : "s");
        printf("  training   %s steps: %.4g", digits((double)r->steps, n3, sizeof n3), r->compute_h_lo);
        if (r->compute_h_hi > r->compute_h_lo * 1.0000001) printf(" to %.4g", r->compute_h_hi);
        printf(" h\n");
    }
    /* peers: for comparison only */
    for (int i = 0; i < c->tables.n_points; i++) {
        const fm_plan_measurement *m = &c->tables.points[i];
        if (!m->peer) continue;
        const fm_plan_device *md = fm_plan_find_device(&c->tables, m->device);
        if (strcmp(m->device, d->name) != 0 && !(md && d->chip[0] && strcmp(md->chip, d->chip) == 0))
            continue;
        printf("  compare    not fmtrain: %s on %s, %s, %s, micro_batch %d, seq_len %d: MFU %.3g %% of the "
               "%s peak ([peer %s])\n",
               m->program, m->device, m->date, m->arch, m->micro_batch, m->seq_len,
               100.0 * fm_plan_measurement_mfu(m, &c->tables), m->precision ? "bf16" : "fp32", m->id);
    }
    if (r->point && !r->comm_complete) {
        printf("  not in it  %scommunication: every step all-reduces %.3g GiB of gradients per rank (a ring "
               "moves 2 x (ranks-1)/ranks of it), and no fmtrain all-reduce is measured %s: the step is a "
               "lower bound\n",
               c->in.nodes > 1 ? "inter-node " : "", gib(r->model_mem[0].grad_bytes),
               c->in.nodes > 1 ? "between nodes" : "on this device");
    }
    if (r->point && !d->trainer_overhead_ms.entry)
        printf("  not in it  the trainer's own work per step beyond the benchmark's (reader, loss, metrics): "
               "not measured on %s\n", d->name);
}

static void print_schedule(const plan_ctx *c, const fm_plan_result *r)
{
    char n1[40];
    const fm_plan_input *in = &c->in;
    printf("\ncheckpoints  %.4g GB per checkpoint (parameters and AdamW m, v in fp32 with HDF5's metadata: "
           "fm_checkpoint_estimate_size)\n", (double)in->checkpoint_bytes / 1e9);
    if (r->ckpt_write_s > 0) {
        printf("  write      %.4g s at %.4g GB/s (%s", r->ckpt_write_s, in->fs_gbs, c->fs_from);
        if (c->fs_entry && strcmp(c->fs_from, "--fs-gbs")) {
            printf(": file system %.4g GB/s", c->fs_site_gbs);
            print_prov(c->fs_entry);
            if (c->net_entry) {
                printf(", at most %d node%s x %.4g GB/s of network", in->nodes, in->nodes == 1 ? "" : "s",
                       c->net_gbs);
                print_prov(c->net_entry);
            }
            printf("; a published aggregate: one job gets less, measure with bench_checkpoint and give "
                   "--fs-gbs");
        }
        printf(")\n");
    } else {
        if (c->site)
            printf("  write      unknown: %s.plan has no file-system bandwidth; give --fs-gbs X (measure it "
                   "with bench_checkpoint, docs/performance.md)\n", c->site->name);
        else
            printf("  write      unknown without --system or --fs-gbs X (measure it with bench_checkpoint, "
                   "docs/performance.md)\n");
    }
    if (in->node_mtbf_h > 0) {
        printf("  failures   node MTBF %.4g h (%s), job MTBF %.4g h on %d node%s\n", in->node_mtbf_h,
               strcmp(c->mtbf_from, "llama3") == 0
                   ? "Llama 3's rate: 419 interruptions in 54 days on 16,384 H100 GPUs, arXiv:2407.21783; per "
                     "GPU-node of this layout"
                   : "--node-mtbf",
               r->job_mtbf_h, in->nodes, in->nodes == 1 ? "" : "s");
    } else {
        printf("  failures   no failure rate for CPU nodes: give --node-mtbf HOURS for Young's interval\n");
    }
    if (r->young_interval_s > 0)
        printf("  interval   Young: sqrt(2 x %.4g s x %.4g h) = %.4g min of training between checkpoints; "
               "expected cost of writes and lost work %.3g %%\n",
               r->ckpt_write_s, r->job_mtbf_h, r->young_interval_s / 60.0, 100.0 * r->ckpt_overhead);
    if (r->basis == FM_PLAN_NO_PREDICTION) {
        printf("\nwall time    no prediction (no step time), so no wall time, jobs or node-hours\n");
        if (r->job_train_h > 0)
            printf("jobs         %.4g h of training per job at the time limit of %.4g h", r->job_train_h,
                   in->time_limit_h);
        if (r->job_train_h > 0) {
            print_prov(c->limit_entry);
            printf("\n");
        }
        return;
    }
    printf("\nwall time    %.4g", r->wall_h_lo);
    if (r->wall_h_hi > r->wall_h_lo * 1.0000001) printf(" to %.4g", r->wall_h_hi);
    if (r->young_interval_s > 0)
        printf(" h (compute + %.3g %% for checkpoints and failures)\n", 100.0 * r->ckpt_overhead);
    else
        printf(" h (compute only: checkpoints and failures need the write time and a failure rate)\n");
    if (r->job_train_h > 0) {
        printf("jobs         %s", digits((double)r->jobs_lo, n1, sizeof n1));
        if (r->jobs_hi != r->jobs_lo) printf(" to %" PRId64, r->jobs_hi);
        printf(" at %.4g h of training per job: time limit %.4g h (%s", r->job_train_h, in->time_limit_h,
               c->limit_from);
        print_prov(c->limit_entry);
        printf(") - stop margin %.4g min ([run] stop_margin_minutes) - resume read and final write\n",
               in->stop_margin_s / 60.0);
    } else if (in->time_limit_h > 0) {
        printf("jobs         the time limit of %.4g h leaves no training time after the stop margin and "
               "the checkpoint writes\n", in->time_limit_h);
    } else {
        printf("jobs         no time limit known: give --time-limit HOURS\n");
    }
    printf("node-hours   %.4g", r->node_hours_lo);
    if (r->node_hours_hi > r->node_hours_lo * 1.0000001) printf(" to %.4g", r->node_hours_hi);
    printf(" (%d node%s; not included: queue waits, start-up, evaluation%s)\n", in->nodes,
           in->nodes == 1 ? "" : "s", r->comm_complete ? "" : ", communication");
}

static void print_text(const plan_ctx *c, const fm_plan_result *r)
{
    const fm_plan_device *d = c->dev;
    printf("fmtrain plan: %s for %.4g tokens on ", c->params, c->in.tokens);
    if (c->site)
        printf("%s (%s): ", c->site->name, c->site->description);
    printf("%d node%s x %d rank%s", c->in.nodes, c->in.nodes == 1 ? "" : "s", c->in.ranks_per_node,
           c->in.ranks_per_node == 1 ? "" : "s");
    if (d->kind == FM_PLAN_CPU) printf(" x %d cores", c->in.cores_per_rank);
    printf(" of %s (%s)\n", d->name, d->description);
    printf("tables       %s (%s)\n", c->tables_dir, c->tables_how);
    if (c->site) {
        printf("site         ranks per node %g", c->site->ranks_per_node.v);
        print_prov(c->site->ranks_per_node.entry);
        printf("; device");
        print_prov(c->site->device_entry);
        printf("\n");
    }
    print_model(c, r);
    print_memory(c, r);
    print_prediction(c, r);
    print_schedule(c, r);
}

/* ---- JSON output ------------------------------------------------------------------------------- */

static void json_str(const char *s)
{
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') printf("\\%c", *p);
        else if (*p == '\n') fputs("\\n", stdout);
        else if (*p < 0x20) printf("\\u%04x", *p);
        else putchar(*p);
    }
    putchar('"');
}

static void json_num(double v)
{
    if (isfinite(v))
        printf("%.17g", v);
    else
        fputs("null", stdout);
}

static void json_prov(const char *key, double v, const fm_plan_entry *e)
{
    printf("\"%s\":{\"value\":", key);
    json_num(v);
    printf(",\"verified\":%s,\"source\":", e && e->verified == 1 ? "true" : "false");
    json_str(e ? e->note : "");
    printf("}");
}

static void print_json(const plan_ctx *c, const fm_plan_result *r)
{
    const fm_plan_input *in = &c->in;
    const fm_plan_device *d = c->dev;
    const fm_model_shape *s = &in->shape;
    printf("{\"params\":");
    json_str(c->params);
    printf(",\"tables\":");
    json_str(c->tables_dir);
    printf(",\"site\":");
    if (c->site) json_str(c->site->name); else fputs("null", stdout);
    printf(",\"device\":{\"name\":");
    json_str(d->name);
    printf(",\"kind\":\"%s\",", d->kind == FM_PLAN_GPU ? "gpu" : "cpu");
    json_prov("memory_gib", d->memory_gib.v, d->memory_gib.entry);
    printf(",");
    json_prov("peak_tflops", d->peak_tflops[in->precision].v, d->peak_tflops[in->precision].entry);
    printf("},\"model\":{\"arch\":");
    json_str(s->arch);
    printf(",\"n_layer\":%d,\"n_head\":%d,\"n_kv_head\":%d,\"d_model\":%d,\"ffn_dim\":%d,\"seq_len\":%d,"
           "\"vocab_size\":%d,\"n_params\":%" PRIu64 ",\"flops_per_token\":",
           s->n_layer, s->n_head, s->n_kv_head, s->d_model, s->ffn_dim, s->max_seq_len, s->vocab_size,
           r->n_params);
    json_num(r->flops_per_token);
    printf("},\"layout\":{\"nodes\":%d,\"ranks_per_node\":%d,\"ranks\":%d,\"cores_per_rank\":%d,"
           "\"micro_batch\":%d,\"grad_accum\":%d,\"tokens_per_step\":",
           in->nodes, in->ranks_per_node, r->ranks, d->kind == FM_PLAN_CPU ? in->cores_per_rank : 0,
           in->micro_batch, in->grad_accum);
    json_num(r->tokens_per_step);
    printf(",\"tokens\":");
    json_num(in->tokens);
    printf(",\"steps\":%" PRId64 "},\"memory\":{\"budget_bytes\":%" PRIu64 ",\"runtime_overhead_bytes\":%" PRIu64
           ",\"allreduce_buffer_bytes\":%" PRIu64 ",\"per_rank\":[",
           r->steps, r->budget_bytes, r->overhead_bytes, r->comm_bytes);
    for (int q = 0; q < FM_PLAN_PRECISIONS; q++)
        for (int st = 0; st < FM_PLAN_STAGES; st++) {
            const fm_plan_zero_memory *z = &r->zero[q][st];
            const fm_model_memory_info *m = &r->model_mem[q];
            printf("%s{\"precision\":\"%s\",\"zero\":%d,\"weights\":%" PRIu64 ",\"master\":%" PRIu64
                   ",\"grads\":%" PRIu64 ",\"optim\":%" PRIu64 ",\"activations\":%" PRIu64
                   ",\"logits\":%" PRIu64 ",\"scratch\":%" PRIu64 ",\"total\":%" PRIu64
                   ",\"fits\":%s,\"max_micro_batch\":%d}",
                   q || st ? "," : "", fm_plan_precision_name((fm_plan_precision)q), st, z->weights,
                   z->master, z->grads, z->optim, (uint64_t)m->act_bytes, (uint64_t)m->logits_bytes,
                   (uint64_t)m->scratch_bytes, z->total + r->overhead_bytes + r->comm_bytes,
                   r->budget_bytes ? (r->fits[q][st] ? "true" : "false") : "null",
                   r->max_micro_batch[q][st]);
        }
    printf("]},\"prediction\":{\"precision\":\"%s\",\"precision_from\":",
           fm_plan_precision_name(in->precision));
    json_str(c->prec_from);
    printf(",\"zero\":%d,\"basis\":\"%s\"", in->zero_stage,
           r->basis == FM_PLAN_MEASURED ? "measured" : r->basis == FM_PLAN_SIBLING_RANGE ? "same-chip range"
                                                                                     : "none");
    if (r->basis != FM_PLAN_NO_PREDICTION) {
        printf(",\"measurement\":");
        json_str(r->point->id);
        printf(",\"measurement_device\":");
        json_str(r->point->device);
        printf(",\"measurement_date\":");
        json_str(r->point->date);
        printf(",\"measurement_command\":");
        json_str(r->point->command);
        printf(",\"same_model\":%s,\"rank_peak_flops\":", r->same_model ? "true" : "false");
        json_num(r->rank_peak_flops);
        printf(",\"mfu_low\":");
        json_num(r->mfu_lo);
        printf(",\"mfu_high\":");
        json_num(r->mfu_hi);
        printf(",\"step_s_low\":");
        json_num(r->step_s_lo);
        printf(",\"step_s_high\":");
        json_num(r->step_s_hi);
        printf(",\"tokens_per_s_low\":");
        json_num(r->tokens_per_s_lo);
        printf(",\"tokens_per_s_high\":");
        json_num(r->tokens_per_s_hi);
        printf(",\"compute_s_low\":");
        json_num(r->compute_s_lo);
        printf(",\"trainer_s\":");
        json_num(r->trainer_s);
        printf(",\"allreduce_s\":");
        json_num(r->comm_s);
        printf(",\"communication_included\":%s", r->comm_complete ? "true" : "false");
    }
    printf("},\"checkpoint\":{\"bytes\":%" PRIu64 ",\"write_gbs\":", in->checkpoint_bytes);
    json_num(in->fs_gbs);
    printf(",\"write_s\":");
    json_num(r->ckpt_write_s);
    printf(",\"node_mtbf_h\":");
    json_num(in->node_mtbf_h);
    printf(",\"job_mtbf_h\":");
    json_num(r->job_mtbf_h);
    printf(",\"young_interval_s\":");
    json_num(r->young_interval_s);
    printf(",\"overhead_fraction\":");
    json_num(r->ckpt_overhead);
    printf(",\"host_bytes_per_rank\":%" PRIu64 "},\"schedule\":{\"time_limit_h\":", r->host_ckpt_bytes);
    json_num(in->time_limit_h);
    printf(",\"job_train_h\":");
    json_num(r->job_train_h);
    if (r->basis != FM_PLAN_NO_PREDICTION) {
        printf(",\"wall_h_low\":");
        json_num(r->wall_h_lo);
        printf(",\"wall_h_high\":");
        json_num(r->wall_h_hi);
        printf(",\"node_hours_low\":");
        json_num(r->node_hours_lo);
        printf(",\"node_hours_high\":");
        json_num(r->node_hours_hi);
        if (r->job_train_h > 0) printf(",\"jobs_low\":%" PRId64 ",\"jobs_high\":%" PRId64, r->jobs_lo, r->jobs_hi);
    }
    printf("}}\n");
}

/* ---- the command ------------------------------------------------------------------------------- */

static fm_status plan_run(int argc, char **argv, const fm_cmd_env *env)
{
    (void)env;
    plan_args a;
    memset(&a, 0, sizeof a);
    fm_cli_list pos = {0};
    const fm_cli_opt opts[] = {
        {"tokens", FM_CLI_STRING, &a.tokens},        {"system", FM_CLI_STRING, &a.system},
        {"gpu", FM_CLI_STRING, &a.gpu},              {"cpu", FM_CLI_STRING, &a.cpu},
        {"nodes", FM_CLI_STRING, &a.nodes},          {"ranks-per-node", FM_CLI_STRING, &a.rpn},
        {"cores-per-rank", FM_CLI_STRING, &a.cpr},   {"precision", FM_CLI_STRING, &a.precision},
        {"zero", FM_CLI_STRING, &a.zero},            {"time-limit", FM_CLI_STRING, &a.time_limit},
        {"fs-gbs", FM_CLI_STRING, &a.fs_gbs},        {"node-mtbf", FM_CLI_STRING, &a.mtbf},
        {"set", FM_CLI_LIST, &a.sets},               {"data", FM_CLI_STRING, &a.data},
        {"json", FM_CLI_FLAG, &a.json},
    };
    fm_status st = NULL;
    plan_ctx *c = calloc(1, sizeof *c);
    if (!c) return FM_ERR(FM_ERR_NOMEM, "out of memory");
    fm_plan_result *r = calloc(1, sizeof *r);
    if (!r) {
        free(c);
        return FM_ERR(FM_ERR_NOMEM, "out of memory");
    }
    FM_TRY_GOTO(st, done, fm_cli_parse("plan", argc, argv, opts, (int)(sizeof opts / sizeof *opts), &pos));
    if (pos.n != 1) {
        st = FM_ERR(FM_ERR_USAGE, "fmtrain plan: expected one parameter file, got %d argument%s; usage: "
                                  "fmtrain plan PARAMS.ini --tokens N (--system SITE | --gpu NAME | --cpu NAME)",
                    pos.n, pos.n == 1 ? "" : "s");
        goto done;
    }
    a.params = c->params = pos.items[0];
    FM_TRY_GOTO(st, done, load_config(&a, &c->cfg));
    FM_TRY_GOTO(st, done, find_tables(a.data, c->tables_dir, sizeof c->tables_dir, &c->tables_how));
    FM_TRY_GOTO(st, done, fm_plan_tables_load(c->tables_dir, &c->tables));
    FM_TRY_GOTO(st, done, choose_device(c, &a));
    FM_TRY_GOTO(st, done, fill_input(c, &a));
    FM_TRY_GOTO(st, done, fm_plan_compute(&c->in, c->dev, &c->tables, r));
    if (a.json)
        print_json(c, r);
    else
        print_text(c, r);
    fflush(stdout);
done:
    fm_plan_tables_free(&c->tables);
    fm_cli_list_free(&a.sets);
    fm_cli_list_free(&pos);
    free(r);
    free(c);
    return st;
}

const fm_command fm_cmd_plan = {
    .name = "plan",
    .summary = "size a run before it is submitted: memory, step time, node-hours",
    .help = plan_help,
    .needs_mpi = 0,
    .run = plan_run,
};

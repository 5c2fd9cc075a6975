/* cmd_eval.c — `fmtrain eval --checkpoint PATH [--data FILE] [--split val|train]
 * [--windows N | --all] [--batch B] [--json] [--device D] [--threads N]`: the loss of a checkpoint
 * on a dataset split.
 *
 * Collective over MPI_COMM_WORLD (any rank count, `mpiexec -n P fmtrain eval ...`). Rank 0 picks the
 * checkpoint file (a file, or a run directory's newest checkpoint whose checksums verify) and every
 * rank loads that file into a forward-only model (FM_MODEL_EVAL) on its backend; the dataset is
 * opened by all ranks with the reader (no training stream) and the loss is train/evaluate.h's: the
 * same windows, chunks, per-window losses and member-order sum as the trainer's evaluation, so by
 * default (the checkpoint's own validation data, [train] eval_windows windows, micro_batch windows
 * per forward) it reproduces the val loss the trainer logged at that step. Rank 0 prints the result
 * (a line, or one JSON object with --json) on stdout and a banner on stderr. */
#define _POSIX_C_SOURCE 200809L
#include <hdf5.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ckpt/checkpoint.h"
#include "cli/cli.h"
#include "data/dataset.h"
#include "data/h5util.h"
#include "data/reader.h"
#include "data/tokenizer.h"
#include "dist/comm.h"
#include "dist/topology.h"
#include "kernels.h"
#include "model/model.h"
#include "train/evaluate.h"

static const char eval_help[] =
    "Usage: fmtrain eval --checkpoint PATH [--data FILE] [--split val|train] [--windows N | --all]\n"
    "                    [--batch B] [--json] [--device cpu|cuda|auto] [--threads N]\n"
    "\n"
    "Prints the loss (mean cross-entropy per token, in nats) and the perplexity of a checkpoint on a\n"
    "dataset split. PATH is a checkpoint file, or a run directory (its newest checkpoint whose\n"
    "checksums verify); the file used is named on stderr. Runs on any number of ranks\n"
    "(mpiexec -n P fmtrain eval ...): the windows are shared out and the result does not depend on P.\n"
    "\n"
    "By default it evaluates what training evaluated: the checkpoint's own validation data ([data]\n"
    "val, else the /val split of [data] train, found through the absolute path the checkpoint stores),\n"
    "the same set of [train] eval_windows windows, micro_batch windows per forward, so on the same\n"
    "device and thread count per rank it prints the val loss that training logged in metrics.jsonl\n"
    "at the checkpoint's step (another --batch or --threads changes the last digits only: ~1e-9).\n"
    "The set is spread evenly over the split (docs/dataset-format.md, Validation). A checkpoint of\n"
    "`fmtrain import` records no dataset: give one with --data.\n"
    "\n"
    "Options:\n"
    "  --checkpoint PATH   checkpoint file or run directory (required)\n"
    "  --data FILE         evaluate on this dataset file (fmtrain prepare; made with the checkpoint's\n"
    "                      tokenizer) instead of the checkpoint's own data\n"
    "  --split val|train   which split of the dataset (default val); train: the training split, its\n"
    "                      windows in file order\n"
    "  --windows N         evaluate N windows spread evenly over the split (default: the checkpoint's\n"
    "                      [train] eval_windows); more than the split has means all of them\n"
    "  --all               every window of the split\n"
    "  --batch B           windows per forward (default: the checkpoint's [train] micro_batch); only\n"
    "                      memory and speed depend on it, the loss up to float rounding\n"
    "  --json              print one JSON object on one line instead of the sentence\n"
    "  --device D          cpu, cuda, or auto: cuda when built in and a GPU is visible, else cpu\n"
    "                      (default auto, as [runtime] device)\n"
    "  --threads N         CPU threads per rank (default: the checkpoint's [runtime] threads; 0: the\n"
    "                      cores of this rank's share of the node, as in training)\n"
    "  --help              show this help\n"
    "\n"
    "Output (stdout, rank 0), e.g. after inputs/tiny-cpu.ini's 600 steps:\n"
    "  val loss 3.977709 (perplexity 53.39) on 32 of 207 windows of /home/me/data/kjv.h5 (2,048 tokens)\n"
    "with --json one object: checkpoint, step, data, split, windows, split_windows, tokens, loss,\n"
    "perplexity (17 significant digits), batch, ranks, device.\n";

typedef struct eval_args {
    const char *ckpt, *data, *split_s, *windows_s, *batch_s, *threads_s, *device_s;
    int all, json;
    fm_dataset_split split;
    long long windows, batch, threads;
} eval_args;

/* The command line (the same on every rank, so its errors are collective). */
static fm_status parse_args(int argc, char **argv, eval_args *a)
{
    fm_cli_list pos = {0};
    const fm_cli_opt opts[] = {
        {"checkpoint", FM_CLI_STRING, &a->ckpt}, {"data", FM_CLI_STRING, &a->data},
        {"split", FM_CLI_STRING, &a->split_s},   {"windows", FM_CLI_STRING, &a->windows_s},
        {"all", FM_CLI_FLAG, &a->all},           {"batch", FM_CLI_STRING, &a->batch_s},
        {"json", FM_CLI_FLAG, &a->json},         {"threads", FM_CLI_STRING, &a->threads_s},
        {"device", FM_CLI_STRING, &a->device_s},
    };
    fm_status st = fm_cli_parse("eval", argc, argv, opts, (int)(sizeof opts / sizeof *opts), &pos);
    if (!st && (pos.n != 0 || !a->ckpt))
        st = FM_ERR(FM_ERR_USAGE, "fmtrain eval: %s%s; usage: fmtrain eval --checkpoint PATH "
                                  "[--data FILE] [--split val|train] [--windows N | --all] (see "
                                  "'fmtrain help eval')",
                    !a->ckpt ? "--checkpoint PATH is required" : "unexpected argument ",
                    !a->ckpt ? "" : pos.items[0]);
    fm_cli_list_free(&pos);
    FM_TRY(st);
    a->split = FM_SPLIT_VAL;
    if (a->split_s && strcmp(a->split_s, "train") == 0)
        a->split = FM_SPLIT_TRAIN;
    else if (a->split_s && strcmp(a->split_s, "val") != 0)
        return FM_ERR(FM_ERR_USAGE, "--split %s: expected val or train", a->split_s);
    if (a->all && a->windows_s)
        return FM_ERR(FM_ERR_USAGE, "fmtrain eval: --windows %s and --all both given; give one "
                                    "(--all: every window of the split)", a->windows_s);
    a->windows = a->batch = 0;
    a->threads = 1;
    if (a->windows_s) FM_TRY(fm_cli_int("--windows", a->windows_s, 1, 4294967295LL, &a->windows));
    if (a->batch_s) FM_TRY(fm_cli_int("--batch", a->batch_s, 1, 1048576, &a->batch));
    if (a->threads_s) FM_TRY(fm_cli_int("--threads", a->threads_s, 0, 4096, &a->threads));
    return NULL;
}

/* Every rank loads the same checkpoint file into a forward-only model of max_batch 1 on `hb`, a
 * one-thread CPU backend (host memory): rank 0 resolves PATH (a directory: its newest checkpoint
 * whose checksums verify) and the others load the file it chose. The parameters are then copied
 * to the real device (place_model) once the stored configuration has said which batch and thread
 * count training used. */
static fm_status load_checkpoint(const eval_args *a, const fm_comm *comm, fm_backend *hb,
                                 fm_model **model, fm_tokenizer **tok, char used[4096])
{
    const fm_model_options mo = {.mode = FM_MODEL_EVAL, .max_batch = 1};
    fm_status st = NULL;
    used[0] = '\0';
    if (comm->rank == 0)
        st = fm_checkpoint_load_model_opts(a->ckpt, hb, &mo, model, tok, used, 4096, NULL, 0);
    FM_TRY(fm_comm_agree(comm->world, st));
    FM_TRY(fm_comm_bcast(comm, used, 4096));
    used[4095] = '\0';
    if (comm->rank != 0)
        st = fm_checkpoint_load_model_opts(used, hb, &mo, model, tok, NULL, 0, NULL, 0);
    FM_TRY(fm_comm_agree(comm->world, st));
    return NULL;
}

/* The compute backend as training would place it: --device (default auto), --threads or the
 * checkpoint's [runtime] threads (0: the cores of this rank's share of the node, as in training;
 * placement does not pin: bind = none), a GPU backend on the rank's nearest GPU. Collective over
 * the node. */
static fm_status create_backend(const eval_args *a, const fm_comm *comm, const fm_config *saved,
                                fm_backend **be)
{
    const char *device = a->device_s ? a->device_s : "auto";
    if (strcmp(device, "auto") == 0) device = fm_backend_auto();
    const int threads = a->threads_s ? (int)a->threads : saved->runtime_threads;
    fm_topology_options to = {FM_BIND_NONE, threads, fm_backend_uses_gpus(device)};
    fm_topology_plan plan;
    FM_TRY(fm_topology_place(comm, &to, &plan));
    fm_status st = fm_backend_create(device, plan.threads, plan.gpu >= 0 ? plan.gpu : 0, be);
    FM_TRY(fm_comm_agree(comm->world, st));
    return NULL;
}

/* The model on the real backend with room for `batch` windows per forward, with the parameters of
 * `host_model` (on the host backend), which is freed. */
static fm_status place_model(fm_backend *be, int batch, fm_model **host_model, fm_model **model)
{
    const fm_model_options mo = {.mode = FM_MODEL_EVAL, .max_batch = batch};
    FM_TRY(fm_model_create_opts(fm_model_get_shape(*host_model), be, &mo, model));
    FM_TRY(fm_model_set_params(*model, fm_model_params(*host_model)));
    fm_model_free(host_model);
    return NULL;
}

static int file_exists(const char *path)
{
    struct stat sb;
    return path[0] && stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* The dataset to read: --data, or the checkpoint's own file of the split (its absolute path when it
 * is there, else the path as the trainer was given it, relative to this working directory). A
 * checkpoint that records no dataset (`fmtrain import` writes none) needs --data. */
static fm_status choose_data(const eval_args *a, const fm_checkpoint_meta *meta, const char *used,
                             const fm_tokenizer *tok, const char **path, char *why, size_t whyn)
{
    if (a->data) {
        *path = a->data;
        snprintf(why, whyn, "--data");
        return NULL;
    }
    const int val = a->split == FM_SPLIT_VAL;
    const char *abs = val ? meta->val_abs : meta->train_abs, *rel = val ? meta->val : meta->train;
    if (!rel[0] && !abs[0]) {
        char from[4400] = " ([data] train is empty)", how[4400];
        if (strcmp(meta->reason, "import") == 0)
            snprintf(from, sizeof from, " (it was made by `fmtrain import` from %s)",
                     meta->source[0] ? meta->source : "a Hugging Face model");
        if (tok)
            snprintf(how, sizeof how, "a dataset made with the tokenizer it stores: fmtrain prepare --input "
                     "TEXT... --output FILE.h5 --tokenizer-from %s", used);
        else
            snprintf(how, sizeof how, "a dataset made with the model's tokenizer, which this checkpoint does "
                     "not store: fmtrain prepare --input TEXT... --output FILE.h5 --tokenizer-from "
                     "TOKENIZER.json");
        return FM_ERR(FM_ERR_USAGE, "%s records no dataset%s, so it has no %s split to evaluate by default; "
                      "give one with --data FILE.h5 (%s)", used, from, val ? "val" : "train", how);
    }
    const char *what = !val ? "the checkpoint's [data] train"
                       : meta->val_separate == 1 ? "the checkpoint's [data] val"
                       : meta->val_separate == 0 ? "the checkpoint's [data] train: no [data] val"
                                                 : "the checkpoint's validation data";
    snprintf(why, whyn, "%s", what);
    if (file_exists(abs)) *path = abs;
    else if (file_exists(rel)) *path = rel;
    else
        return FM_ERR(FM_ERR_INPUT,
                      "the %s split of %s's data is %s (%s; %s%s), which is not found from here; "
                      "give the dataset with --data FILE (a file made with the checkpoint's "
                      "tokenizer)",
                      val ? "val" : "train", used, rel, what,
                      abs[0] ? "absolute path " : "the checkpoint stores no absolute path: the path "
                                                  "is relative to the trainer's working directory",
                      abs);
    return NULL;
}

/* The dataset must use the checkpoint's vocabulary: ids below the model's vocab_size, and, where
 * both store a tokenizer, the same token strings (another tokenizer of the same size would give a
 * meaningless loss without any error). */
static fm_status check_data_tokenizer(const char *path, const fm_dataset_info *info,
                                      const fm_tokenizer *tok, const fm_model *model,
                                      const char *used)
{
    const int V = fm_model_get_shape(model)->vocab_size;
    if (info->vocab_size > (uint64_t)V)
        return FM_ERR(FM_ERR_INPUT, "%s has vocab_size %" PRIu64 " but the model of %s has %d: the "
                                    "dataset was made with another tokenizer; use a dataset made "
                                    "with the checkpoint's (fmtrain prepare --tokenizer-from %s)",
                      path, info->vocab_size, used, V, used);
    if (!tok || !info->has_tokenizer) return NULL;
    fm_h5_quiet q;
    fm_h5_quiet_begin(&q);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    fm_tokenizer *dt = NULL;
    fm_status st = f < 0 ? FM_ERR(FM_ERR_INPUT, "cannot open %s with HDF5 (damaged?)", path)
                         : fm_tokenizer_load(f, "tokenizer", &dt);
    if (f >= 0) H5Fclose(f);
    fm_h5_quiet_end(&q);
    FM_TRY(st);
    int same = fm_tokenizer_vocab_size(dt) == fm_tokenizer_vocab_size(tok);
    for (uint32_t i = 0; same && i < fm_tokenizer_vocab_size(tok); i++) {
        size_t la = 0, lb = 0;
        const uint8_t *x = fm_tokenizer_token(tok, i, &la), *y = fm_tokenizer_token(dt, i, &lb);
        same = la == lb && memcmp(x, y, la) == 0;
    }
    fm_tokenizer_free(&dt);
    if (!same)
        return FM_ERR(FM_ERR_INPUT, "%s was made with another tokenizer than %s (their token strings "
                                    "differ), so its ids mean other text to this model; use a "
                                    "dataset made with the checkpoint's tokenizer (fmtrain prepare "
                                    "--tokenizer-from %s)",
                      path, used, used);
    return NULL;
}

/* A JSON string (quotes, backslashes and control characters escaped). */
static void json_string(FILE *out, const char *s)
{
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(out, "\\%c", *p);
        else if (*p < 0x20) fprintf(out, "\\u%04x", *p);
        else fputc(*p, out);
    }
    fputc('"', out);
}

static const char *group_digits(long long v, char *buf, size_t n)
{
    char tmp[32];
    int len = snprintf(tmp, sizeof tmp, "%lld", v);
    size_t j = 0;
    for (int i = 0; i < len && j + 2 < n; i++) {
        if (i > 0 && (len - i) % 3 == 0) buf[j++] = ',';
        buf[j++] = tmp[i];
    }
    buf[j] = '\0';
    return buf;
}

typedef struct eval_report {
    const char *used, *data, *data_why, *device;
    int64_t step;
    int batch, ranks;
    fm_dataset_split split;
    fm_eval_result r;
} eval_report;

static void print_result(const eval_args *a, const eval_report *e)
{
    const char *split = e->split == FM_SPLIT_VAL ? "val" : "train";
    double ppl = exp(e->r.loss);
    if (a->json) {
        fputs("{\"checkpoint\":", stdout);
        json_string(stdout, e->used);
        printf(",\"step\":%" PRId64 ",\"data\":", e->step);
        json_string(stdout, e->data);
        printf(",\"split\":\"%s\",\"windows\":%" PRId64 ",\"split_windows\":%" PRId64
               ",\"tokens\":%" PRId64 ",\"loss\":%.17g,\"perplexity\":%.17g,\"batch\":%d,"
               "\"ranks\":%d,\"device\":",
               split, e->r.windows, e->r.split_windows, e->r.tokens, e->r.loss, ppl, e->batch,
               e->ranks);
        json_string(stdout, e->device);
        fputs("}\n", stdout);
    } else {
        char tk[40];
        printf("%s loss %.6f (perplexity %.4g) on %" PRId64 " of %" PRId64 " windows of %s (%s "
               "tokens)\n",
               split, e->r.loss, ppl, e->r.windows, e->r.split_windows, e->data,
               group_digits(e->r.tokens, tk, sizeof tk));
    }
    fflush(stdout);
}

/* Everything after the command line, on every rank. */
static fm_status run_eval(const eval_args *a, const fm_comm *comm)
{
    fm_backend *hb = NULL, *be = NULL;
    fm_model *host_model = NULL, *model = NULL;
    fm_tokenizer *tok = NULL;
    fm_reader *reader = NULL;
    fm_checkpoint_meta *meta = calloc(1, sizeof *meta);
    char used[4096], why[160];
    fm_status st = meta ? NULL
                        : FM_ERR(FM_ERR_NOMEM, "out of memory for a checkpoint's metadata (%zu bytes)",
                                 sizeof *meta);
    if (!st) st = fm_backend_create("cpu", 1, 0, &hb);
    FM_TRY_GOTO(st, done, fm_comm_agree(comm->world, st));
    FM_TRY_GOTO(st, done, load_checkpoint(a, comm, hb, &host_model, &tok, used));
    st = fm_checkpoint_read_meta(used, meta);
    FM_TRY_GOTO(st, done, fm_comm_agree(comm->world, st));
    const int batch = a->batch ? (int)a->batch : meta->config.train_micro_batch;
    FM_TRY_GOTO(st, done, create_backend(a, comm, &meta->config, &be));
    st = place_model(be, batch, &host_model, &model);
    FM_TRY_GOTO(st, done, fm_comm_agree(comm->world, st));
    fm_backend_free(&hb);
    /* rank 0 chooses the file (every rank then opens the very name it chose) */
    char data[4096] = "";
    why[0] = '\0';
    if (comm->rank == 0) {
        const char *chosen = NULL;
        st = choose_data(a, meta, used, tok, &chosen, why, sizeof why);
        if (!st && strlen(chosen) >= sizeof data)
            st = FM_ERR(FM_ERR_USAGE, "dataset path of %zu bytes: at most %zu are supported",
                        strlen(chosen), sizeof data - 1);
        if (!st) memcpy(data, chosen, strlen(chosen) + 1);
    }
    FM_TRY_GOTO(st, done, fm_comm_agree(comm->world, st));
    FM_TRY_GOTO(st, done, fm_comm_bcast(comm, data, sizeof data));
    FM_TRY_GOTO(st, done, fm_comm_bcast(comm, why, sizeof why));
    fm_dataset_info info;
    st = fm_dataset_probe(data, &info);
    if (!st) st = check_data_tokenizer(data, &info, tok, model, used);
    FM_TRY_GOTO(st, done, fm_comm_agree(comm->world, st));

    const fm_model_shape *shape = fm_model_get_shape(model);
    fm_reader_options ro = {comm->world, shape->max_seq_len, 0, 0, 0, 0, 0, NULL, 0};
    FM_TRY_GOTO(st, done, fm_reader_open(data, &ro, &reader));
    const int64_t k = a->all ? INT64_MAX : a->windows ? a->windows : fm_config_eval_windows(&meta->config);
    char dev[256];
    be->ops->describe(be, dev, sizeof dev);
    if (comm->rank == 0)
        fprintf(stderr, "fmtrain eval: checkpoint %s (step %" PRId64 ", %s, %d layers, d_model %d, "
                        "seq_len %d) on %d rank%s, %s; data %s (%s), %s split, %s windows, %d per "
                        "forward\n",
                used, meta->step, fm_model_arch(model), shape->n_layer, shape->d_model,
                shape->max_seq_len, comm->size, comm->size == 1 ? "" : "s", dev, data, why,
                a->split == FM_SPLIT_VAL ? "val" : "train",
                a->all ? "all" : a->windows ? a->windows_s : "[train] eval_windows", batch);
    eval_report e = {used, data, why, be->ops->name, meta->step, batch, comm->size, a->split,
                     {0, 0, 0, 0}};
    const fm_eval_options eo = {a->split, k, batch};
    FM_TRY_GOTO(st, done, fm_evaluate(model, reader, comm, &eo, &e.r));
    if (comm->rank == 0) print_result(a, &e);
done:
    fm_reader_free(&reader);
    fm_model_free(&model);
    fm_model_free(&host_model);
    fm_tokenizer_free(&tok);
    fm_backend_free(&be);
    fm_backend_free(&hb);
    free(meta);
    return st;
}

static fm_status eval_run(int argc, char **argv, const fm_cmd_env *env)
{
    (void)env;
    eval_args a;
    memset(&a, 0, sizeof a);
    FM_TRY(fm_status_collective(parse_args(argc, argv, &a))); /* same argv on every rank */
    fm_comm *comm = NULL;
    FM_TRY(fm_comm_init(&comm));
    fm_status st = run_eval(&a, comm);
    fm_comm_free(&comm);
    return st;
}

const fm_command fm_cmd_eval = {"eval", "loss and perplexity of a checkpoint on a dataset split (any rank count)",
                                eval_help, 1, eval_run};

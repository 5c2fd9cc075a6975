/* checkpoint.c — fmtrain checkpoints: content, save/resume hooks, configuration checks, inspect,
 * loading a model (see checkpoint.h; the file layout is docs/checkpoint-format.md). */
#define _POSIX_C_SOURCE 200809L
#include "ckpt/checkpoint.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "build_info.h"
#include "ckpt/async.h"
#include "ckpt/checkpoint_dir.h"
#include "core/util.h"
#include "data/h5util.h"
#include "dist/comm.h"
#include "train/optimizer.h"

#define CK_PATH_MAX 4096

struct fm_checkpoint_ctx {
    MPI_Comm comm;
    int rank, size;
    FILE *log;                   /* rank 0's console (NULL elsewhere) */
    fm_resume mode;
    char run_dir[CK_PATH_MAX];
    char dir[CK_PATH_MAX];       /* <run dir>/checkpoints */
    char plan_path[CK_PATH_MAX]; /* the checkpoint prepare chose, "" for a fresh start */
    int64_t plan_step;
    fm_checkpoint_io_opts io;
    char hints[FM_CONFIG_HINTS_MAX];
    int keep_last;
    fm_tokenizer *tok; /* the training dataset's tokenizer, or NULL */
    fm_trainer *trainer;
    fm_checkpoint_async *bg; /* [checkpoint] async = true: the background writer; else NULL */
    double bg_write_s;       /* the last background write's duration (the watchdog's "usual") */
};

/* ---- small helpers ------------------------------------------------------------------------- */

/* Host views of the model's parameters (all n of the layout) and the optimizer's moments (its range
 * [lo, hi): the whole layout, or this rank's ZeRO shard): the backend's buffers on the CPU backend,
 * host copies otherwise. */
typedef struct host_state {
    float *p, *m, *v;
    int owned;
    size_t n, lo, hi;
} host_state;

static fm_status host_state_get(fm_model *model, fm_optimizer *opt, int fill, host_state *h)
{
    memset(h, 0, sizeof *h);
    h->n = fm_model_num_params(model);
    fm_optimizer_range(opt, &h->lo, &h->hi);
    fm_backend *be = fm_model_get_backend(model);
    if (be->ops->caps.host_memory) {
        h->p = fm_model_params(model);
        h->m = fm_optimizer_m(opt);
        h->v = fm_optimizer_v(opt);
        return NULL;
    }
    h->owned = 1;
    const size_t ms = h->hi > h->lo ? h->hi - h->lo : 1;
    h->p = malloc(h->n * sizeof(float));
    h->m = malloc(ms * sizeof(float));
    h->v = malloc(ms * sizeof(float));
    if (!h->p || !h->m || !h->v) {
        free(h->p);
        free(h->m);
        free(h->v);
        memset(h, 0, sizeof *h);
        return FM_ERR(FM_ERR_NOMEM, "out of memory for host copies of the model state (%zu bytes)",
                      (h->n + 2 * ms) * sizeof(float));
    }
    if (fill) {
        FM_TRY(fm_model_get_params(model, h->p));
        FM_TRY(fm_optimizer_get_state(opt, h->m, h->v));
    }
    return NULL;
}

static void host_state_free(host_state *h)
{
    if (h->owned) {
        free(h->p);
        free(h->m);
        free(h->v);
    }
    memset(h, 0, sizeof *h);
}

/* The model's tensor table in the file layer's terms. */
static fm_status model_table(const fm_model *model, fm_checkpoint_tensor **out, int *n)
{
    int nt = fm_model_num_tensors(model);
    fm_checkpoint_tensor *t = calloc((size_t)nt, sizeof *t);
    FM_CHECK_ALLOC(t, (size_t)nt * sizeof *t);
    for (int i = 0; i < nt; i++) {
        const fm_model_tensor_info *ti = fm_model_tensor(model, i);
        fm_util_strlcpy(t[i].name, ti->name, sizeof t[i].name);
        t[i].ndim = ti->ndim;
        t[i].shape[0] = ti->shape[0];
        t[i].shape[1] = ti->ndim > 1 ? ti->shape[1] : 0;
        t[i].offset = ti->offset;
    }
    *out = t;
    *n = nt;
    return NULL;
}

/* The three tensor groups. With `shards` (the trainer's ZeRO shard plan, [train] zero >= 1) each
 * rank moves exactly its shard of the moments (held from element h->lo on) and, when
 * `params_sharded`, of the weights (writing; reading needs every weight on every rank, so the
 * weights then use the default partition and are replicated). */
static void make_groups(fm_checkpoint_group g[3], const fm_checkpoint_tensor *table, int nt,
                        const host_state *h, const size_t *shards, int params_sharded)
{
    g[0] = (fm_checkpoint_group){"params", table, nt, h->p, h->n, params_sharded ? shards : NULL, 0};
    g[1] = (fm_checkpoint_group){"adam_m", table, nt, h->m, h->n, shards, shards ? h->lo : 0};
    g[2] = (fm_checkpoint_group){"adam_v", table, nt, h->v, h->n, shards, shards ? h->lo : 0};
}

/* Prints on rank 0: into the trainer's metrics (console + train.log) when there is a trainer,
 * else on ctx->log. */
static void say(fm_checkpoint_ctx *c, fm_trainer *t, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static void say(fm_checkpoint_ctx *c, fm_trainer *t, const char *fmt, ...)
{
    if (c->rank != 0) return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fm_metrics *m = t ? fm_trainer_metrics(t) : NULL;
    if (m)
        fm_metrics_printf(m, "%s", msg);
    else if (c->log) {
        fprintf(c->log, "%s\n", msg);
        fflush(c->log);
    }
}

/* ---- the configuration check --------------------------------------------------------------- */

/* One "section.key = value" line of an effective-configuration text, or NULL at the end. */
static const char *next_kv(const char *p, char *key, size_t ksize, char *val, size_t vsize,
                           char *section, size_t ssize)
{
    while (p && *p) {
        const char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        char line[1200];
        if (len >= sizeof line) len = sizeof line - 1;
        memcpy(line, p, len);
        line[len] = '\0';
        p = eol ? eol + 1 : p + strlen(p);
        fm_util_trim(line);
        if (!line[0] || line[0] == '#' || line[0] == ';') continue;
        if (line[0] == '[') {
            char *e = strchr(line, ']');
            if (e) *e = '\0';
            fm_util_strlcpy(section, line + 1, ssize);
            continue;
        }
        char *eq = strchr(line, '=');
        if (!eq) continue;
        *eq = '\0';
        char *v = eq + 1;
        /* drop a trailing comment ("  # default ...") */
        for (char *q = v; *q; q++)
            if ((*q == '#' || *q == ';') && q > v && (q[-1] == ' ' || q[-1] == '\t')) {
                *q = '\0';
                break;
            }
        snprintf(key, ksize, "%s.%s", section, fm_util_trim(line));
        fm_util_strlcpy(val, fm_util_trim(v), vsize);
        return p;
    }
    return NULL;
}

/* Value of `key` in an effective-configuration text ("" when absent). */
static void lookup_kv(const char *text, const char *key, char *val, size_t vsize)
{
    char k[256], v[1024], sec[128] = "";
    val[0] = '\0';
    for (const char *p = text; (p = next_kv(p, k, sizeof k, v, sizeof v, sec, sizeof sec));)
        if (strcmp(k, key) == 0) {
            fm_util_strlcpy(val, v, vsize);
            return;
        }
}

/* Compares the checkpoint's configuration `saved` (written by `saved_ranks` ranks) with `cur` for
 * `ranks` ranks. Shape and seed changes are errors; a changed rank count adjusts grad_accum when
 * `adjust` (else it must already match); other differences are logged. */
static fm_status check_config(fm_checkpoint_ctx *c, fm_trainer *t, const char *path,
                              const fm_config *saved, int saved_ranks, fm_config *cur, int ranks,
                              int adjust)
{
    struct {
        const char *key;
        long long was, now;
    } shape[] = {
        {"[model] arch", (long long)saved->model_arch, (long long)cur->model_arch},
        {"[model] n_layer", saved->model_n_layer, cur->model_n_layer},
        {"[model] n_head", saved->model_n_head, cur->model_n_head},
        {"[model] d_model", saved->model_d_model, cur->model_d_model},
        {"[model] seq_len", saved->model_seq_len, cur->model_seq_len},
        {"[model] vocab_size", (long long)saved->model_vocab_size, (long long)cur->model_vocab_size},
        {"[model] n_kv_head", saved->model_n_kv_head, cur->model_n_kv_head},
        {"[model] ffn_dim", saved->model_ffn_dim, cur->model_ffn_dim},
        {"[model] tie_embeddings", (long long)saved->model_tie_embeddings,
         (long long)cur->model_tie_embeddings},
    };
    for (size_t i = 0; i < sizeof shape / sizeof *shape; i++)
        if (shape[i].was != shape[i].now)
            return FM_ERR(FM_ERR_CONFIG,
                          "%s = %lld, but checkpoint %s was trained with %s = %lld: the model's tensor "
                          "shapes would not match; set it back to %lld, or start a new run "
                          "([checkpoint] resume = never, or another [run] dir)",
                          shape[i].key, shape[i].now, path, shape[i].key, shape[i].was, shape[i].was);
    if (saved->run_seed != cur->run_seed)
        return FM_ERR(FM_ERR_CONFIG,
                      "[run] seed = %llu, but checkpoint %s was trained with seed %llu, which fixes "
                      "the data order: set [run] seed = %llu to resume",
                      (unsigned long long)cur->run_seed, path, (unsigned long long)saved->run_seed,
                      (unsigned long long)saved->run_seed);
    /* The global batch in sequences must not change. */
    long long g_was = (long long)saved->train_micro_batch * saved->train_grad_accum * saved_ranks;
    long long g_now = (long long)cur->train_micro_batch * cur->train_grad_accum * ranks;
    if (g_was != g_now) {
        long long per = (long long)cur->train_micro_batch * ranks;
        if (adjust && cur->train_micro_batch == saved->train_micro_batch &&
            cur->train_grad_accum == saved->train_grad_accum && g_was % per == 0) {
            int ga = (int)(g_was / per);
            say(c, t,
                "checkpoint written by %d rank%s, resuming on %d: [train] grad_accum %d -> %d keeps "
                "the global batch of %lld sequences (micro_batch %d x grad_accum %d x %d ranks)",
                saved_ranks, saved_ranks == 1 ? "" : "s", ranks, cur->train_grad_accum, ga, g_was,
                cur->train_micro_batch, ga, ranks);
            cur->train_grad_accum = ga;
        } else if (g_was % ranks != 0) {
            return FM_ERR(FM_ERR_CONFIG,
                          "checkpoint %s was trained with a global batch of %lld sequences "
                          "([train] micro_batch %d x grad_accum %d x %d ranks), which %d ranks cannot "
                          "divide: resume on a rank count that divides %lld",
                          path, g_was, saved->train_micro_batch, saved->train_grad_accum, saved_ranks,
                          ranks, g_was);
        } else {
            long long need = g_was / ranks;
            char hint[160];
            if (need % cur->train_micro_batch == 0)
                snprintf(hint, sizeof hint, "set [train] grad_accum = %lld (with micro_batch %d)",
                         need / cur->train_micro_batch, cur->train_micro_batch);
            else
                snprintf(hint, sizeof hint,
                         "set [train] micro_batch and grad_accum so that micro_batch x grad_accum = "
                         "%lld",
                         need);
            return FM_ERR(FM_ERR_CONFIG,
                          "checkpoint %s was trained with a global batch of %lld sequences "
                          "([train] micro_batch %d x grad_accum %d x %d ranks); now it would be %lld "
                          "(%d x %d x %d ranks): %s to keep it",
                          path, g_was, saved->train_micro_batch, saved->train_grad_accum, saved_ranks,
                          g_now, cur->train_micro_batch, cur->train_grad_accum, ranks, hint);
        }
    }
    /* Everything else may change; say what did. */
    char *a = NULL, *b = NULL;
    FM_TRY(fm_config_to_string(saved, &a));
    fm_status st = fm_config_to_string(cur, &b);
    if (st) {
        free(a);
        return st;
    }
    char k[256], v[1024], w[1024], sec[128] = "";
    for (const char *p = b; (p = next_kv(p, k, sizeof k, v, sizeof v, sec, sizeof sec));) {
        lookup_kv(a, k, w, sizeof w);
        if (strcmp(v, w) == 0) continue;
        say(c, t, "configuration changed since %s: %s = %s (was %s)", path, k, v, w[0] ? w : "unset");
    }
    free(a);
    free(b);
    return NULL;
}

/* Reads the stored configuration and writer rank count of an open checkpoint. */
static fm_status read_saved_config(fm_checkpoint_file *f, const char *path, fm_config *saved,
                                   int *saved_ranks)
{
    char *text = NULL;
    FM_TRY(fm_checkpoint_file_read_text(f, "/config", &text));
    fm_config_defaults(saved);
    fm_status st = fm_config_parse(saved, path, text, strlen(text));
    free(text);
    if (st)
        return fm_status_collective(fm_status_prefix(
            FM_ERR(FM_ERR_INPUT, "%s", fm_status_message(st)), "the configuration stored in %s", path));
    int64_t r = 0;
    FM_TRY(fm_checkpoint_file_get_attr_i64(f, "/", "writer_ranks", &r));
    if (r < 1 || r > INT32_MAX)
        return FM_ERR(FM_ERR_INPUT, "%s: writer_ranks = %lld is not a rank count", path, (long long)r);
    *saved_ranks = (int)r;
    return NULL;
}

/* Opens a checkpoint file of this format and refuses one written in a newer format version than this
 * fmtrain reads. Every rank of `comm` reads the same version, so that refusal is collective. */
static fm_status open_checkpoint(MPI_Comm comm, const char *path, const fm_checkpoint_io_opts *io,
                                 int *version, fm_checkpoint_file **out)
{
    int v = 0;
    FM_TRY(fm_checkpoint_file_open(comm, path, FM_CHECKPOINT_FORMAT, &v, io, out));
    if (v > FM_CHECKPOINT_VERSION) {
        fm_checkpoint_file_close(out);
        return fm_status_collective(FM_ERR(FM_ERR_INPUT,
                                           "%s has checkpoint format version %d; this fmtrain reads up to %d",
                                           path, v, FM_CHECKPOINT_VERSION));
    }
    if (version) *version = v;
    return NULL;
}

/* A file that holds a model only (written by `fmtrain import`: root attribute reason = "import", no
 * optimizer or trainer state) cannot be resumed; it starts a run through [checkpoint] init_from. */
static fm_status refuse_model_only(fm_checkpoint_file *f, const char *path)
{
    if (fm_checkpoint_file_exists(f, "/trainer")) return NULL;
    return fm_status_collective(FM_ERR(
        FM_ERR_CONFIG,
        "%s holds a model without optimizer or trainer state (made by `fmtrain import`): it cannot be "
        "resumed; start a run from it with [checkpoint] init_from = %s (fresh optimizer, step 0, the "
        "schedule from its start) and resume = auto or never",
        path, path));
}

/* ---- prepare ------------------------------------------------------------------------------- */

/* fm_checkpoint_prepare in named steps: ctx_new (settings, communicator), load_dataset_tokenizer,
 * scan_run_dir, then by [checkpoint] resume one of start_fresh (never), plan_newest (auto) or
 * plan_path (PATH). Each step returns a status that every rank shares. */

/* The context: the settings prepare needs from cfg and a duplicate of comm that returns errors.
 * Every rank takes part in the duplication even when its allocation failed, then all agree. */
static fm_status ctx_new(const fm_config *cfg, MPI_Comm comm, FILE *log, fm_checkpoint_ctx **out)
{
    *out = NULL;
    MPI_Comm dup = MPI_COMM_NULL;
    fm_status st = fm_comm_dup(comm, &dup);
    fm_checkpoint_ctx *c = calloc(1, sizeof *c);
    if (!st && !c) st = FM_ERR(FM_ERR_NOMEM, "out of memory for the checkpoint context");
    if (c) {
        c->comm = dup;
        dup = MPI_COMM_NULL; /* owned by c now */
    }
    if (!st) {
        FM_MPI_KEEP(st, MPI_Comm_rank(c->comm, &c->rank));
        FM_MPI_KEEP(st, MPI_Comm_size(c->comm, &c->size));
    }
    if (!st) {
        c->log = c->rank == 0 ? log : NULL;
        c->mode = cfg->checkpoint_resume;
        c->plan_step = -1;
        c->keep_last = cfg->checkpoint_keep_last;
        fm_util_strlcpy(c->hints, cfg->checkpoint_mpiio_hints, sizeof c->hints);
        c->io.align_bytes = cfg->checkpoint_align_bytes;
        c->io.mpiio_hints = c->hints;
        char buf[CK_PATH_MAX];
        fm_util_strlcpy(c->run_dir, fm_config_run_dir(cfg, buf, sizeof buf), sizeof c->run_dir);
        st = fm_checkpoint_dir_of_run(c->run_dir, c->dir, sizeof c->dir);
    }
    if (!st && cfg->checkpoint_async == FM_CKPT_ASYNC_TRUE)
        st = fm_checkpoint_async_create(c->comm, &c->bg);
    st = fm_comm_agree(comm, st); /* the caller's communicator: the duplicate may be missing */
    if (st) {
        fm_checkpoint_ctx_free(&c);
        fm_comm_dup_free(&dup);
        return st;
    }
    *out = c;
    return NULL;
}

/* The training dataset's tokenizer, which every checkpoint stores (c->tok stays NULL when the dataset
 * has none). An unreadable dataset is not an error here: the trainer's own checks report it. A
 * damaged tokenizer is, on every rank. */
static fm_status load_dataset_tokenizer(fm_checkpoint_ctx *c, const char *path)
{
    fm_h5_quiet q;
    fm_h5_quiet_begin(&q);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    fm_status st = NULL;
    if (f >= 0) {
        if (fm_tokenizer_exists(f, "tokenizer")) st = fm_tokenizer_load(f, "tokenizer", &c->tok);
        H5Fclose(f);
    }
    H5Eclear2(H5E_DEFAULT);
    fm_h5_quiet_end(&q);
    return fm_comm_agree(c->comm, st);
}

/* The complete checkpoints of the run directory, newest first, on every rank (rank 0 also removes
 * the temporary files of killed writers and says so). */
static fm_status scan_run_dir(fm_checkpoint_ctx *c, fm_checkpoint_entry **v, int *n)
{
    int removed = 0;
    FM_TRY(fm_checkpoint_scan_dir(c->comm, c->dir, v, n, &removed));
    if (removed > 0 && c->log)
        fprintf(c->log, "removed %d incomplete checkpoint file%s in %s (a writer was interrupted)\n",
                removed, removed == 1 ? "" : "s", c->dir);
    char odd[1024];
    int nodd = c->log ? fm_checkpoint_dir_odd_entries(c->dir, odd, sizeof odd) : 0;
    if (nodd > 0)
        fprintf(c->log, "warning: %d entr%s of %s named like a checkpoint or `latest` %s not a "
                        "regular file and %s ignored (%s): not a checkpoint fmtrain wrote; move or "
                        "remove %s\n",
                nodd, nodd == 1 ? "y" : "ies", c->dir, nodd == 1 ? "is" : "are",
                nodd == 1 ? "is" : "are", odd, nodd == 1 ? "it" : "them");
    return NULL;
}

/* Rank 0 deletes the run's checkpoints and `latest` (--overwrite). */
static fm_status delete_checkpoints(const fm_checkpoint_ctx *c, const fm_checkpoint_entry *v, int n)
{
    for (int i = 0; i < n; i++) {
        char p[CK_PATH_MAX + 80];
        snprintf(p, sizeof p, "%s/%s", c->dir, v[i].name);
        if (unlink(p) != 0 && errno != ENOENT)
            return FM_ERR(FM_ERR_IO, "cannot delete %s: %s", p, strerror(errno));
    }
    char p[CK_PATH_MAX + 16];
    snprintf(p, sizeof p, "%s/%s", c->dir, FM_CHECKPOINT_LATEST);
    if (unlink(p) != 0 && errno != ENOENT)
        return FM_ERR(FM_ERR_IO, "cannot delete %s: %s", p, strerror(errno));
    if (c->log)
        fprintf(c->log, "--overwrite: deleted %d checkpoint%s of %s\n", n, n == 1 ? "" : "s", c->run_dir);
    return NULL;
}

/* resume = never: a fresh start, refused when the run directory holds checkpoints unless
 * `overwrite`, which deletes them first. */
static fm_status start_fresh(fm_checkpoint_ctx *c, const fm_checkpoint_entry *v, int n, int overwrite)
{
    if (n == 0) return NULL;
    if (!overwrite)
        return fm_status_collective(FM_ERR(
            FM_ERR_CONFIG,
            "run directory %s already holds checkpoints (newest: %s); [checkpoint] resume = never "
            "will not overwrite them: use resume = auto to continue that run, another [run] dir "
            "(or name), or 'fmtrain train --overwrite' to delete them and start afresh",
            c->run_dir, v[0].name));
    return fm_comm_agree(c->comm, c->rank == 0 ? delete_checkpoints(c, v, n) : NULL);
}

/* Opens `path` and checks its configuration (with grad_accum adjustment). */
static fm_status plan_from(fm_checkpoint_ctx *c, const char *path, fm_config *cfg)
{
    fm_checkpoint_file *f = NULL;
    FM_TRY(open_checkpoint(c->comm, path, &c->io, NULL, &f));
    fm_status st = refuse_model_only(f, path);
    fm_config *saved = malloc(sizeof *saved);
    if (!st && !saved) st = FM_ERR(FM_ERR_NOMEM, "out of memory");
    int saved_ranks = 0;
    if (!st) st = read_saved_config(f, path, saved, &saved_ranks);
    if (!st) st = check_config(c, NULL, path, saved, saved_ranks, cfg, c->size, 1);
    free(saved);
    fm_checkpoint_file_close(&f);
    return fm_comm_agree(c->comm, st);
}

/* resume = auto: the newest checkpoint that opens decides the configuration check (a damaged one is
 * skipped with a warning); its checksums are verified when the trainer's resume hook loads it
 * (falling back if they fail). No checkpoint: a fresh start. */
static fm_status plan_newest(fm_checkpoint_ctx *c, fm_config *cfg, const fm_checkpoint_entry *v, int n)
{
    for (int i = 0; i < n; i++) {
        char p[CK_PATH_MAX + 80];
        snprintf(p, sizeof p, "%s/%s", c->dir, v[i].name);
        fm_status st = plan_from(c, p, cfg);
        if (!st) {
            fm_util_strlcpy(c->plan_path, p, sizeof c->plan_path);
            c->plan_step = v[i].step;
            return NULL;
        }
        if (fm_status_code(st) != FM_ERR_INPUT) return st;
        if (c->log) fprintf(c->log, "warning: skipping checkpoint %s: %s\n", p, fm_status_message(st));
        fm_status_free(&st);
    }
    if (n == 0) {
        /* Loud: a mistyped [run] dir (or run.name) lands here, and would silently start over. */
        if (c->log)
            fprintf(c->log,
                    "warning: no checkpoint found in %s: starting a NEW run in %s ([checkpoint] "
                    "resume = auto). If you meant to continue an earlier run, stop now and check "
                    "[run] dir and run.name: a run continues only from its own run directory\n",
                    c->dir, c->run_dir);
        return NULL;
    }
    return fm_status_collective(FM_ERR(FM_ERR_INPUT,
                                       "every checkpoint in %s is damaged or unreadable (%d found); resume "
                                       "from a PATH, or start afresh with [checkpoint] resume = never and "
                                       "--overwrite",
                                       c->dir, n));
}

/* resume = PATH: that file, whose step is taken from its name (0 when the name has none). */
static fm_status plan_path(fm_checkpoint_ctx *c, fm_config *cfg)
{
    fm_status st = plan_from(c, cfg->checkpoint_resume_path, cfg);
    if (st) return fm_status_prefix(st, "[checkpoint] resume = %s", cfg->checkpoint_resume_path);
    fm_util_strlcpy(c->plan_path, cfg->checkpoint_resume_path, sizeof c->plan_path);
    int64_t s = -1;
    const char *base = strrchr(c->plan_path, '/');
    c->plan_step = fm_checkpoint_dir_parse_name(base ? base + 1 : c->plan_path, &s) ? s : 0;
    return NULL;
}

fm_status fm_checkpoint_prepare(fm_config *cfg, MPI_Comm comm, int overwrite, FILE *log,
                                fm_checkpoint_ctx **out)
{
    *out = NULL;
    fm_checkpoint_ctx *c = NULL;
    FM_TRY(ctx_new(cfg, comm, log, &c));
    fm_checkpoint_entry *v = NULL;
    int n = 0;
    fm_status st = load_dataset_tokenizer(c, cfg->data_train);
    if (!st) st = scan_run_dir(c, &v, &n);
    if (!st) {
        switch (c->mode) {
        case FM_RESUME_NEVER: st = start_fresh(c, v, n, overwrite); break;
        case FM_RESUME_AUTO: st = plan_newest(c, cfg, v, n); break;
        case FM_RESUME_PATH: st = plan_path(c, cfg); break;
        }
    }
    free(v);
    if (st) {
        fm_checkpoint_ctx_free(&c);
        return fm_status_trace(st, __FILE__, __LINE__, __func__);
    }
    *out = c;
    return NULL;
}

const char *fm_checkpoint_planned_path(const fm_checkpoint_ctx *c) { return c ? c->plan_path : ""; }

void fm_checkpoint_ctx_free(fm_checkpoint_ctx **cp)
{
    fm_checkpoint_ctx *c = *cp;
    if (!c) return;
    fm_tokenizer_free(&c->tok);
    fm_checkpoint_async_free(&c->bg); /* before the communicator it borrows */
    fm_comm_dup_free(&c->comm);
    free(c);
    *cp = NULL;
}

uint64_t fm_checkpoint_estimate_size(const fm_model_shape *shape, int64_t align_bytes)
{
    fm_model_memory_info mem;
    fm_status st = fm_model_memory_estimate(shape, 1, (int)sizeof(float), &mem);
    if (st) {
        fm_status_free(&st);
        return 0;
    }
    uint64_t tensors = 3 * (4 + 12 * (uint64_t)shape->n_layer); /* GPT-2's layout, three groups */
    uint64_t data = 3 * (uint64_t)mem.param_bytes;
    /* Tensors of at least align_bytes start on a multiple of it: GPT-2's matrices (4 per layer,
     * the two embeddings) once d_model^2 floats reach it; the vectors are packed. */
    uint64_t matrix = (uint64_t)shape->d_model * (uint64_t)shape->d_model * sizeof(float);
    uint64_t pad = align_bytes > 1 && matrix >= (uint64_t)align_bytes
                       ? 3 * (4 * (uint64_t)shape->n_layer + 2) * (uint64_t)align_bytes
                       : 0;
    return data + ((uint64_t)256 << 10) + tensors * 2048 + pad;
}

/* ---- save ------------------------------------------------------------------------------------ */

static const char *reason_name(fm_trainer_save_reason r)
{
    switch (r) {
    case FM_TRAINER_SAVE_PERIODIC: return "periodic";
    case FM_TRAINER_SAVE_STOP: return "stop";
    case FM_TRAINER_SAVE_FINAL: return "final";
    }
    return "unknown";
}

/* /model: the family and shape (what fm_checkpoint_load_model reads back). */
static fm_status write_model_attrs(fm_checkpoint_file *f, fm_model *model)
{
    const fm_model_shape *shape = fm_model_get_shape(model);
    fm_model_memory_info mem;
    fm_model_memory(model, &mem);
    FM_TRY(fm_checkpoint_file_attr_str(f, "/model", "arch", fm_model_arch(model)));
    FM_TRY(fm_checkpoint_file_attr_i64(f, "/model", "n_layer", shape->n_layer));
    FM_TRY(fm_checkpoint_file_attr_i64(f, "/model", "n_head", shape->n_head));
    FM_TRY(fm_checkpoint_file_attr_i64(f, "/model", "d_model", shape->d_model));
    FM_TRY(fm_checkpoint_file_attr_i64(f, "/model", "max_seq_len", shape->max_seq_len));
    FM_TRY(fm_checkpoint_file_attr_i64(f, "/model", "vocab_size", shape->vocab_size));
    FM_TRY(fm_checkpoint_file_attr_i64(f, "/model", "n_kv_head", shape->n_kv_head));
    FM_TRY(fm_checkpoint_file_attr_i64(f, "/model", "ffn_dim", shape->ffn_dim));
    FM_TRY(fm_checkpoint_file_attr_f64(f, "/model", "rope_theta", shape->rope_theta));
    FM_TRY(fm_checkpoint_file_attr_f64(f, "/model", "norm_eps", shape->norm_eps));
    FM_TRY(fm_checkpoint_file_attr_i64(f, "/model", "tie_embeddings",
                                       shape->tie_embeddings == FM_TIE_YES));
    FM_TRY(fm_checkpoint_file_attr_i64(f, "/model", "padded_vocab", fm_model_get_padded_vocab(model)));
    FM_TRY(fm_checkpoint_file_attr_i64(f, "/model", "n_params", (int64_t)mem.n_params));
    FM_TRY(fm_checkpoint_file_attr_i64(f, "/model", "n_params_stored", (int64_t)mem.n_params_padded));
    return NULL;
}

/* The Hugging Face name and layout of every /params dataset. */
static fm_status write_hf_attrs(fm_checkpoint_file *f, fm_model *model)
{
    for (int i = 0; i < fm_model_num_tensors(model); i++) {
        const fm_model_tensor_info *ti = fm_model_tensor(model, i);
        char d[FM_CHECKPOINT_NAME_MAX + 16];
        snprintf(d, sizeof d, "/params/%s", ti->name);
        FM_TRY(fm_checkpoint_file_attr_str(f, d, "hf_name", ti->hf_name));
        FM_TRY(fm_checkpoint_file_attr_i64(f, d, "hf_transposed", ti->hf_transposed));
    }
    return NULL;
}

/* `path` made absolute as rank 0 sees it: a relative path is joined to rank 0's working directory
 * (leading "./" dropped); an absolute one, or one too long to join, is kept. The same text on every
 * rank (attributes are written collectively), so that a checkpoint names its data in a way that can
 * be found again from another working directory. */
static fm_status absolute_path(fm_checkpoint_ctx *c, const char *path, char out[CK_PATH_MAX])
{
    memset(out, 0, CK_PATH_MAX);
    if (c->rank == 0) {
        char cwd[CK_PATH_MAX];
        const char *rel = path;
        while (rel[0] == '.' && rel[1] == '/') rel += 2;
        if (path[0] == '/' || !getcwd(cwd, sizeof cwd) ||
            strlen(cwd) + 1 + strlen(rel) + 1 > CK_PATH_MAX) {
            fm_util_strlcpy(out, path, CK_PATH_MAX);
        } else {
            size_t lc = strlen(cwd); /* the join fits: checked above */
            memcpy(out, cwd, lc);
            out[lc] = '/';
            memcpy(out + lc + 1, rel, strlen(rel) + 1);
        }
    }
    FM_MPI_TRY(MPI_Bcast(out, CK_PATH_MAX, MPI_CHAR, 0, c->comm));
    out[CK_PATH_MAX - 1] = '\0';
    return NULL;
}

/* The parameters and both moments, each rank writing its share: now (stage = 0) or, with stage,
 * datasets created and this rank's share copied for the background writer (ckpt/async.h). */
static fm_status write_tensors(fm_checkpoint_ctx *c, fm_trainer *t, fm_model *model,
                               fm_optimizer *opt, fm_checkpoint_file *f,
                               const fm_checkpoint_tensor *table, int nt, int stage)
{
    const size_t *shards = fm_trainer_shard_bounds(t);
    if (stage) {
        /* Backend memory, read only (so not fm_model_params, which would re-make a bf16 copy); the
         * moments of a ZeRO shard optimizer hold [lo, hi) only (make_groups' base). */
        void *bf16 = NULL;
        host_state live = {fm_model_params_for_update(model, &bf16), fm_optimizer_m(opt),
                           fm_optimizer_v(opt), 0, fm_model_num_params(model), 0, 0};
        fm_optimizer_range(opt, &live.lo, &live.hi);
        fm_checkpoint_group g[3];
        make_groups(g, table, nt, &live, shards, 1);
        return fm_checkpoint_async_stage(c->bg, f, g, 3, fm_model_get_backend(model));
    }
    host_state h;
    fm_status st = host_state_get(model, opt, 1, &h);
    st = fm_comm_agree(c->comm, st);
    if (!st) {
        fm_checkpoint_group g[3];
        make_groups(g, table, nt, &h, shards, 1);
        st = fm_checkpoint_file_write_groups(f, g, 3);
    }
    host_state_free(&h);
    return st;
}

static fm_status write_content(fm_checkpoint_ctx *c, fm_trainer *t, fm_checkpoint_file *f,
                               fm_trainer_save_reason reason, int stage)
{
    const fm_config *cfg = fm_trainer_config(t);
    fm_model *model = fm_trainer_model(t);
    fm_optimizer *opt = fm_trainer_optimizer(t);
    fm_trainer_state ts;
    fm_trainer_get_state(t, &ts);

    /* Root metadata. Host and time are rank 0's. */
    char host[256] = "";
    if (c->rank == 0 && gethostname(host, sizeof host - 1) != 0) fm_util_strlcpy(host, "?", sizeof host);
    double wall = fm_util_wall_time();
    FM_MPI_TRY(MPI_Bcast(host, sizeof host, MPI_CHAR, 0, c->comm));
    FM_MPI_TRY(MPI_Bcast(&wall, 1, MPI_DOUBLE, 0, c->comm));
    time_t secs = (time_t)wall;
    struct tm tmv;
    char iso[64];
    gmtime_r(&secs, &tmv);
    strftime(iso, sizeof iso, "%Y-%m-%dT%H:%M:%SZ", &tmv);
    FM_TRY(fm_checkpoint_file_attr_str(f, "/", "fmtrain_version", FM_VERSION));
    FM_TRY(fm_checkpoint_file_attr_i64(f, "/", "writer_ranks", c->size));
    FM_TRY(fm_checkpoint_file_attr_f64(f, "/", "wall_time", wall));
    FM_TRY(fm_checkpoint_file_attr_str(f, "/", "wall_time_utc", iso));
    FM_TRY(fm_checkpoint_file_attr_str(f, "/", "hostname", host));
    FM_TRY(fm_checkpoint_file_attr_str(f, "/", "reason", reason_name(reason)));
    FM_TRY(fm_checkpoint_file_attr_i64(f, "/", "step", ts.step));
    FM_TRY(fm_checkpoint_file_attr_i64(f, "/", "tokens_seen", ts.tokens_seen));

    /* The model's shape. */
    FM_TRY(write_model_attrs(f, model));

    /* Parameters and moments, each rank writing its share. */
    fm_checkpoint_tensor *table = NULL;
    int nt = 0;
    FM_TRY(model_table(model, &table, &nt));
    fm_status st = write_tensors(c, t, model, opt, f, table, nt, stage);
    /* Hugging Face names and layouts, on the parameter datasets. */
    if (!st) st = write_hf_attrs(f, model);
    free(table);
    if (st) return st;

    /* Optimizer. */
    FM_TRY(fm_checkpoint_file_attr_str(f, "/optimizer", "algorithm", "adamw"));
    FM_TRY(fm_checkpoint_file_attr_i64(f, "/optimizer", "step", fm_optimizer_get_step(opt)));
    FM_TRY(fm_checkpoint_file_attr_f64(f, "/optimizer", "beta1", cfg->train_beta1));
    FM_TRY(fm_checkpoint_file_attr_f64(f, "/optimizer", "beta2", cfg->train_beta2));
    FM_TRY(fm_checkpoint_file_attr_f64(f, "/optimizer", "eps", cfg->train_eps));
    FM_TRY(fm_checkpoint_file_attr_f64(f, "/optimizer", "weight_decay", cfg->train_weight_decay));

    /* Trainer state: counters, schedule position, the random state (seed and data-order position). */
    FM_TRY(fm_checkpoint_file_attr_i64(f, "/trainer", "step", ts.step));
    FM_TRY(fm_checkpoint_file_attr_i64(f, "/trainer", "schedule_position", ts.step));
    FM_TRY(fm_checkpoint_file_attr_i64(f, "/trainer", "tokens_seen", ts.tokens_seen));
    FM_TRY(fm_checkpoint_file_attr_f64(f, "/trainer", "train_seconds", ts.train_seconds));
    FM_TRY(fm_checkpoint_file_attr_i64(f, "/trainer", "skipped_steps", ts.skipped_steps));
    uint64_t seed = ts.seed;
    FM_TRY(fm_checkpoint_file_write_u64(f, "/trainer/seed", &seed, 1));
    uint64_t rs[3] = {ts.reader.seed, ts.reader.epoch, ts.reader.position};
    FM_TRY(fm_checkpoint_file_write_u64(f, "/trainer/reader_state", rs, 3));

    /* The effective configuration, the data and the tokenizer. */
    char *text = NULL;
    FM_TRY(fm_config_to_string(cfg, &text));
    st = fm_checkpoint_file_write_text(f, "/config", text);
    free(text);
    if (st) return st;
    FM_TRY(fm_checkpoint_file_attr_str(f, "/data", "train", cfg->data_train));
    FM_TRY(fm_checkpoint_file_attr_str(f, "/data", "val", fm_config_val_path(cfg)));
    char abs_path[CK_PATH_MAX];
    FM_TRY(absolute_path(c, cfg->data_train, abs_path));
    FM_TRY(fm_checkpoint_file_attr_str(f, "/data", "train_abs", abs_path));
    FM_TRY(absolute_path(c, fm_config_val_path(cfg), abs_path));
    FM_TRY(fm_checkpoint_file_attr_str(f, "/data", "val_abs", abs_path));
    FM_TRY(fm_checkpoint_file_attr_str(f, "/data", "val_source",
                                       cfg->data_val[0] ? "data.val" : "data.train"));
    if (c->tok) {
        st = fm_tokenizer_save(c->tok, fm_checkpoint_file_hid(f), "tokenizer");
        st = fm_comm_agree(c->comm, st);
        if (st) return st;
        FM_TRY(fm_checkpoint_file_attr_str(f, "/data", "tokenizer", "stored in /tokenizer"));
    } else {
        FM_TRY(fm_checkpoint_file_attr_str(f, "/data", "tokenizer",
                                           "none stored: the training dataset has no tokenizer"));
    }
    return NULL;
}

/* The expected size of a checkpoint of `model`: parameters and both AdamW moments in the file
 * layer's estimate (fm_checkpoint_file_estimate_bytes, which has room for the small datasets), plus
 * the tokenizer (64 bytes per token: its vocabulary and merges are far smaller). */
static fm_status expected_size(const fm_checkpoint_ctx *c, const fm_model *model, uint64_t *bytes)
{
    fm_checkpoint_tensor *table = NULL;
    int nt = 0;
    FM_TRY(model_table(model, &table, &nt));
    host_state h = {NULL, NULL, NULL, 0, fm_model_num_params(model), 0, fm_model_num_params(model)};
    fm_checkpoint_group g[3];
    make_groups(g, table, nt, &h, NULL, 0);
    *bytes = fm_checkpoint_file_estimate_bytes(g, 3, c->io.align_bytes);
    if (c->tok) *bytes += (uint64_t)fm_tokenizer_vocab_size(c->tok) * 64; /* vocabulary, merges */
    free(table);
    return NULL;
}

/* The checkpoint's record in metrics.jsonl (rank 0). */
static void log_record(fm_checkpoint_ctx *c, fm_trainer *t, int64_t step, const char *base,
                       const char *reason, int async, uint64_t tensor_bytes, uint64_t file_bytes,
                       double write_s, double stall_s)
{
    fm_metrics_checkpoint rec = {step,         base,       reason,  async,
                                 tensor_bytes, file_bytes, write_s, stall_s};
    fm_status st = fm_metrics_log_checkpoint(t ? fm_trainer_metrics(t) : NULL, &rec);
    if (st) {
        /* The checkpoint is published; a metrics file that cannot be written is reported. */
        say(c, t, "warning: the record of checkpoint %s was not written: %s", base,
            fm_status_message(st));
        fm_status_free(&st);
    }
}

/* st, prefixed with what a failed save means for the user: this checkpoint is not written, the
 * previous ones are intact. */
static fm_status not_written(fm_status st, const char *path)
{
    return fm_status_prefix(st, "checkpoint %s not written (the previous checkpoints are intact)",
                            path);
}

/* Creates the checkpoint file of the trainer's step in the run directory (path: its name, at least
 * CK_PATH_MAX bytes), with the expected size set so that a full disk is refused before HDF5 starts
 * (checkpoint_file.h); *io gets the options used. An existing file of the same step (a damaged one
 * that resume skipped, or a checkpoint of an abandoned continuation) is replaced atomically by the
 * rename at commit. Collective. */
static fm_status create_step_file(fm_checkpoint_ctx *c, fm_trainer *t, int64_t step, char *path,
                                  fm_checkpoint_io_opts *io, fm_checkpoint_file **f)
{
    FM_TRY(fm_checkpoint_dir_file_path(c->run_dir, step, path, CK_PATH_MAX));
    *io = c->io;
    FM_TRY(expected_size(c, fm_trainer_model(t), &io->expected_bytes));
    fm_status st = fm_checkpoint_file_create(c->comm, path, FM_CHECKPOINT_FORMAT,
                                             FM_CHECKPOINT_VERSION, io, f);
    return st ? not_written(st, path) : NULL;
}

/* After writing the content failed (st, agreed on every rank): what remains is closing the HDF5
 * file, which writes metadata and could block on a file system that keeps failing: the watchdog
 * bounds it and exits with this error's code and message (train/watchdog.h). Returns st, prefixed. */
static fm_status abort_step_file(fm_trainer *t, fm_checkpoint_file **f, fm_status st,
                                 const char *path)
{
    st = not_written(st, path);
    fm_watchdog_expect(fm_trainer_watchdog(t), "closing the checkpoint file after an error",
                       fm_status_exit_code(st), fm_status_message(st));
    fm_checkpoint_file_abort(f);
    return st;
}

fm_status fm_checkpoint_save(fm_checkpoint_ctx *c, fm_trainer *t, fm_trainer_save_reason reason,
                             fm_checkpoint_write_stats *stats)
{
    double t0 = fm_util_now();
    fm_trainer_state ts;
    fm_trainer_get_state(t, &ts);
    char path[CK_PATH_MAX];
    fm_checkpoint_io_opts io;
    fm_checkpoint_file *f = NULL;
    FM_TRY(create_step_file(c, t, ts.step, path, &io, &f));
    const char *base = strrchr(path, '/') + 1;
    fm_status st = write_content(c, t, f, reason, 0);
    if (st) return abort_step_file(t, &f, st, path);
    fm_checkpoint_write_stats ws;
    st = fm_checkpoint_file_commit(&f, c->keep_last, &ws);
    if (st) return not_written(st, path);
    char sz[32], fsz[32];
    say(c, t, "checkpoint %s: %s of tensors (file %s) in %.2f s, %.2f GB/s", base,
        fm_util_format_bytes((double)ws.tensor_bytes, sz, sizeof sz),
        fm_util_format_bytes((double)ws.file_bytes, fsz, sizeof fsz), ws.seconds,
        ws.seconds > 0 ? (double)ws.tensor_bytes / ws.seconds / 1e9 : 0.0);
    if (ws.warning[0])
        say(c, t, "warning: checkpoint %s is written and complete, but: %s", base, ws.warning);
    log_record(c, t, ts.step, base, reason_name(reason), 0, ws.tensor_bytes, ws.file_bytes,
               ws.seconds, fm_util_now() - t0);
    if (stats) *stats = ws;
    return NULL;
}

/* ---- asynchronous save ([checkpoint] async = true, ckpt/async.h) ------------------------------ */

/* Settles the background write in flight, if any: with `wait` the caller needs it published now
 * (the next checkpoint, a stop, the end), under the watchdog's limit for a checkpoint write;
 * otherwise it is published only when every rank's writer is done. Collective. */
static fm_status settle(fm_checkpoint_ctx *c, fm_trainer *t, int wait)
{
    if (!fm_checkpoint_async_in_flight(c->bg)) return NULL;
    int64_t step = fm_checkpoint_async_step(c->bg);
    fm_watchdog *wd = fm_trainer_watchdog(t);
    if (!wait) {
        /* Under the step's limit; the publication, once every rank is done, under a write's. */
        fm_watchdog_where(wd, "asking whether every rank's background checkpoint write is done "
                              "(all ranks)");
        int ready = 0;
        FM_TRY(fm_checkpoint_async_ready(c->bg, &ready));
        if (!ready) return NULL;
    }
    fm_model *model = fm_trainer_model(t);
    double slow = 3.0 * (double)fm_model_num_params(model) * sizeof(float) / 10e6;
    fm_trainer_arm(t, wait ? "waiting for the background write of the checkpoint of step"
                           : "publishing the checkpoint of step",
                   step, c->bg_write_s, "the previous background write", slow);
    fm_watchdog_where(wd, wait ? "waiting for this rank's checkpoint writer thread, then for all "
                                 "ranks to publish the checkpoint"
                               : "publishing the checkpoint written in the background (all ranks)");
    fm_checkpoint_async_result r;
    int published = 0;
    FM_TRY(fm_checkpoint_async_settle(c->bg, 1, wd, &published, &r));
    if (!published) return NULL;
    c->bg_write_s = r.write_s;
    const char *base = strrchr(r.path, '/') ? strrchr(r.path, '/') + 1 : r.path;
    char sz[32], fsz[32];
    say(c, t,
        "checkpoint %s: %s of tensors (file %s) written in the background in %.2f s, %.2f GB/s; "
        "training stalled %.3f s",
        base, fm_util_format_bytes((double)r.tensor_bytes, sz, sizeof sz),
        fm_util_format_bytes((double)r.file_bytes, fsz, sizeof fsz), r.write_s,
        r.write_s > 0 ? (double)r.tensor_bytes / r.write_s / 1e9 : 0.0, r.stall_s);
    if (r.warning[0])
        say(c, t, "warning: checkpoint %s is written and complete, but: %s", base, r.warning);
    log_record(c, t, r.step, base, "periodic", 1, r.tensor_bytes, r.file_bytes, r.write_s,
               r.stall_s);
    return NULL;
}

/* A periodic checkpoint written in the background: the file and its datasets are created, this
 * rank's part of the state copied, the rest of the content written, and the writer thread started;
 * training goes on. Collective. */
static fm_status save_async(fm_checkpoint_ctx *c, fm_trainer *t)
{
    double t0 = fm_util_now();
    fm_trainer_state ts;
    fm_trainer_get_state(t, &ts);
    char path[CK_PATH_MAX];
    fm_checkpoint_io_opts io;
    fm_checkpoint_file *f = NULL;
    FM_TRY(create_step_file(c, t, ts.step, path, &io, &f));
    fm_status st = write_content(c, t, f, FM_TRAINER_SAVE_PERIODIC, 1);
    if (st) {
        fm_checkpoint_async_abandon(c->bg); /* forgets what was staged; the file is closed here */
        return abort_step_file(t, &f, st, path);
    }
    st = fm_checkpoint_async_launch(c->bg, &f, ts.step, c->keep_last, io.expected_bytes,
                                    fm_util_now() - t0);
    if (st) return not_written(st, path);
    if (t && fm_trainer_metrics(t))
        fm_metrics_logf(fm_trainer_metrics(t),
                        "checkpoint %s: state copied in %.3f s, written in the background",
                        strrchr(path, '/') + 1, fm_util_now() - t0);
    return NULL;
}

/* ---- load ------------------------------------------------------------------------------------ */

/* The family attributes of /model into s (n_kv_head, ffn_dim, rope_theta, norm_eps,
 * tie_embeddings); a checkpoint written before they existed (GPT-2) lacks them: 0, the defaults. */
static void read_family_attrs(fm_checkpoint_file *f, fm_model_shape *s)
{
    int64_t v = 0;
    double d = 0.0;
    fm_status st = NULL;
    if (!(st = fm_checkpoint_file_get_attr_i64(f, "/model", "n_kv_head", &v))) s->n_kv_head = (int)v;
    fm_status_free(&st);
    if (!(st = fm_checkpoint_file_get_attr_i64(f, "/model", "ffn_dim", &v))) s->ffn_dim = (int)v;
    fm_status_free(&st);
    if (!(st = fm_checkpoint_file_get_attr_i64(f, "/model", "tie_embeddings", &v)))
        s->tie_embeddings = v ? FM_TIE_YES : FM_TIE_NO;
    fm_status_free(&st);
    if (!(st = fm_checkpoint_file_get_attr_f64(f, "/model", "rope_theta", &d))) s->rope_theta = d;
    fm_status_free(&st);
    if (!(st = fm_checkpoint_file_get_attr_f64(f, "/model", "norm_eps", &d))) s->norm_eps = d;
    fm_status_free(&st);
}

static fm_status check_model_attrs(fm_checkpoint_file *f, const char *path, const fm_model *model)
{
    const fm_model_shape *s = fm_model_get_shape(model);
    struct {
        const char *attr, *key;
        long long now;
    } k[] = {{"n_layer", "[model] n_layer", s->n_layer},
             {"n_head", "[model] n_head", s->n_head},
             {"d_model", "[model] d_model", s->d_model},
             {"max_seq_len", "[model] seq_len", s->max_seq_len},
             {"vocab_size", "[model] vocab_size (or the dataset's vocabulary)", s->vocab_size}};
    char *arch = NULL;
    FM_TRY(fm_checkpoint_file_get_attr_str(f, "/model", "arch", &arch));
    fm_status st = strcmp(arch, s->arch) == 0
                       ? NULL
                       : FM_ERR(FM_ERR_CONFIG, "checkpoint %s holds a model of family '%s', the "
                                               "configured model is '%s': [model] arch must match "
                                               "to resume", path, arch, s->arch);
    free(arch);
    FM_TRY(st);
    for (size_t i = 0; i < sizeof k / sizeof *k; i++) {
        int64_t v = 0;
        FM_TRY(fm_checkpoint_file_get_attr_i64(f, "/model", k[i].attr, &v));
        if (v != k[i].now)
            return FM_ERR(FM_ERR_CONFIG,
                          "checkpoint %s holds a model with %s = %lld, the configured model has %lld: "
                          "%s must match to resume or start from it",
                          path, k[i].attr, (long long)v, k[i].now, k[i].key);
    }
    fm_model_shape saved = *s; /* the family's attributes, resolved as the model's were */
    saved.n_kv_head = saved.ffn_dim = saved.tie_embeddings = 0;
    saved.rope_theta = saved.norm_eps = 0.0;
    read_family_attrs(f, &saved);
    fm_status bad = fm_model_shape_resolve(&saved, &saved);
    if (bad)
        return fm_status_prefix(bad, "checkpoint %s holds an invalid model shape: ", path);
    if (saved.n_kv_head != s->n_kv_head || saved.ffn_dim != s->ffn_dim ||
        saved.tie_embeddings != s->tie_embeddings || saved.rope_theta != s->rope_theta ||
        saved.norm_eps != s->norm_eps)
        return FM_ERR(FM_ERR_CONFIG,
                      "checkpoint %s holds a model with n_kv_head %d, ffn_dim %d, rope_theta %g, "
                      "norm_eps %g, %s head; the configured model has %d, %d, %g, %g, %s: [model] "
                      "n_kv_head, ffn_dim, rope_theta, norm_eps and tie_embeddings must match to "
                      "resume", path, saved.n_kv_head, saved.ffn_dim, saved.rope_theta,
                      saved.norm_eps, saved.tie_embeddings == FM_TIE_YES ? "a tied" : "an untied",
                      s->n_kv_head, s->ffn_dim, s->rope_theta, s->norm_eps,
                      s->tie_embeddings == FM_TIE_YES ? "tied" : "untied");
    return NULL;
}

fm_status fm_checkpoint_load(fm_checkpoint_ctx *c, fm_trainer *t, const char *path)
{
    double t0 = fm_util_now();
    fm_checkpoint_file *f = NULL;
    FM_TRY(open_checkpoint(c->comm, path, &c->io, NULL, &f));
    fm_status st = NULL;
    fm_model *model = fm_trainer_model(t);
    fm_optimizer *opt = fm_trainer_optimizer(t);
    fm_config *saved = malloc(sizeof *saved), *cur = malloc(sizeof *cur);
    if (!st && (!saved || !cur)) st = FM_ERR(FM_ERR_NOMEM, "out of memory");
    int saved_ranks = 0;
    if (!st) st = read_saved_config(f, path, saved, &saved_ranks);
    if (!st) {
        *cur = *fm_trainer_config(t);
        /* prepare compared the configurations (logging the changes, adjusting grad_accum) for the
         * planned checkpoint; here they are checked again without adjusting or logging, which
         * matters for an older checkpoint that resume = auto falls back to. */
        fm_checkpoint_ctx quiet = *c;
        quiet.log = NULL;
        quiet.rank = -1; /* say() prints nothing */
        st = check_config(&quiet, NULL, path, saved, saved_ranks, cur, c->size, 0);
    }
    free(saved);
    free(cur);
    if (!st) st = check_model_attrs(f, path, model);
    st = fm_comm_agree(c->comm, st);

    fm_checkpoint_tensor *table = NULL;
    int nt = 0;
    host_state h;
    memset(&h, 0, sizeof h);
    if (!st) st = model_table(model, &table, &nt);
    if (!st) st = host_state_get(model, opt, 0, &h);
    st = fm_comm_agree(c->comm, st);
    if (!st) {
        fm_checkpoint_group g[3];
        make_groups(g, table, nt, &h, fm_trainer_shard_bounds(t), 0);
        st = fm_checkpoint_file_read_groups(f, g, 3, 1);
    }
    fm_trainer_state ts;
    fm_trainer_get_state(t, &ts);
    int64_t opt_step = 0;
    if (!st) st = fm_checkpoint_file_get_attr_i64(f, "/optimizer", "step", &opt_step);
    if (!st) st = fm_checkpoint_file_get_attr_i64(f, "/trainer", "step", &ts.step);
    if (!st) st = fm_checkpoint_file_get_attr_i64(f, "/trainer", "tokens_seen", &ts.tokens_seen);
    if (!st) st = fm_checkpoint_file_get_attr_f64(f, "/trainer", "train_seconds", &ts.train_seconds);
    if (!st) st = fm_checkpoint_file_get_attr_i64(f, "/trainer", "skipped_steps", &ts.skipped_steps);
    uint64_t seed = 0, rs[3] = {0, 0, 0};
    if (!st) st = fm_checkpoint_file_read_u64(f, "/trainer/seed", &seed, 1);
    if (!st) st = fm_checkpoint_file_read_u64(f, "/trainer/reader_state", rs, 3);
    fm_checkpoint_file_close(&f);
    if (!st && h.owned) {
        st = fm_model_set_params(model, h.p);
        if (!st) st = fm_optimizer_set_state(opt, h.m, h.v);
    }
    host_state_free(&h);
    free(table);
    if (!st) {
        ts.seed = seed;
        ts.reader.seed = rs[0];
        ts.reader.epoch = rs[1];
        ts.reader.position = rs[2];
        fm_optimizer_set_step(opt, opt_step);
        st = fm_trainer_set_state(t, &ts);
    }
    st = fm_comm_agree(c->comm, st);
    if (st) return st;
    double secs = fm_util_now() - t0;
    double bytes = 3.0 * (double)fm_model_num_params(model) * sizeof(float);
    say(c, t, "resuming from %s (step %lld, written by %d rank%s): read and verified in %.2f s (%.2f GB/s)",
        path, (long long)ts.step, saved_ranks, saved_ranks == 1 ? "" : "s", secs,
        secs > 0 ? bytes / secs / 1e9 : 0.0);
    return NULL;
}

/* ---- hooks ---------------------------------------------------------------------------------- */

static fm_status resume_planned(fm_checkpoint_ctx *c, fm_trainer *t, int *resumed);

static fm_status load_cb(void *user, const char *path)
{
    fm_checkpoint_ctx *c = user;
    return fm_checkpoint_load(c, c->trainer, path);
}

/* [checkpoint] init_from: the parameters of checkpoint `path` (any fmtrain checkpoint, or a model made
 * by `fmtrain import`) replace the initial weights of a fresh run; the optimizer's moments stay zero,
 * the step 0. Collective. */
static fm_status init_params_from(fm_checkpoint_ctx *c, fm_trainer *t, const char *path)
{
    double t0 = fm_util_now();
    fm_checkpoint_file *f = NULL;
    FM_TRY(fm_status_prefix(open_checkpoint(c->comm, path, &c->io, NULL, &f), "[checkpoint] init_from = %s: ",
                            path));
    fm_model *model = fm_trainer_model(t);
    fm_status st = check_model_attrs(f, path, model);
    if (st) st = fm_status_prefix(st, "[checkpoint] init_from: ");
    st = fm_comm_agree(c->comm, st);
    fm_checkpoint_tensor *table = NULL;
    int nt = 0;
    float *host = NULL;
    int on_host = fm_model_get_backend(model)->ops->caps.host_memory;
    if (!st) st = model_table(model, &table, &nt);
    if (!st) {
        host = on_host ? fm_model_params(model) : malloc(fm_model_num_params(model) * sizeof(float));
        if (!host) st = FM_ERR(FM_ERR_NOMEM, "out of memory reading %s", path);
    }
    st = fm_comm_agree(c->comm, st);
    if (!st) {
        fm_checkpoint_group g = {"params", table, nt, host, fm_model_num_params(model), NULL, 0};
        st = fm_checkpoint_file_read_groups(f, &g, 1, 1);
    }
    fm_checkpoint_file_close(&f);
    if (!st && !on_host) st = fm_model_set_params(model, host);
    if (!on_host) free(host);
    free(table);
    st = fm_comm_agree(c->comm, st);
    if (st) return st;
    say(c, t, "initialised the parameters from %s (read and verified in %.2f s); fresh optimizer, step 0, "
        "schedule from its start", path, fm_util_now() - t0);
    return NULL;
}

static fm_status hook_resume(void *ctx, fm_trainer *t, int *resumed)
{
    fm_checkpoint_ctx *c = ctx;
    c->trainer = t;
    *resumed = 0;
    FM_TRY(resume_planned(c, t, resumed));
    const char *init = fm_trainer_config(t)->checkpoint_init_from;
    if (!init[0]) return NULL;
    if (*resumed) {
        say(c, t, "[checkpoint] init_from = %s is ignored: the run resumed from a checkpoint", init);
        return NULL;
    }
    return init_params_from(c, t, init);
}

/* Resumes as prepare planned (nothing for a fresh start). */
static fm_status resume_planned(fm_checkpoint_ctx *c, fm_trainer *t, int *resumed)
{
    if (c->mode == FM_RESUME_NEVER || (c->mode == FM_RESUME_AUTO && !c->plan_path[0])) return NULL;
    if (c->mode == FM_RESUME_PATH) {
        FM_TRY(fm_checkpoint_load(c, t, c->plan_path));
        *resumed = 1;
        return NULL;
    }
    int64_t step = -1;
    char path[CK_PATH_MAX];
    FM_TRY(fm_checkpoint_load_newest(c->comm, c->dir, load_cb, c, c->log, &step, path, sizeof path));
    *resumed = step >= 0;
    return NULL;
}

/* With [checkpoint] async the checkpoint before this one is published first (the next checkpoint
 * waits for the previous); a periodic one is then written in the background, a stop's and the
 * final one at once (the run exits after them). */
static fm_status hook_save(void *ctx, fm_trainer *t, fm_trainer_save_reason reason)
{
    fm_checkpoint_ctx *c = ctx;
    c->trainer = t;
    if (!c->bg) return fm_checkpoint_save(c, t, reason, NULL);
    FM_TRY(settle(c, t, 1));
    if (reason != FM_TRAINER_SAVE_PERIODIC) return fm_checkpoint_save(c, t, reason, NULL);
    return save_async(c, t);
}

/* At every step boundary: publishes a background write that every rank has finished. */
static fm_status hook_poll(void *ctx, fm_trainer *t)
{
    fm_checkpoint_ctx *c = ctx;
    return c->bg ? settle(c, t, 0) : NULL;
}

/* As the run returns: a write still in flight is waited for and published when the ranks agree on
 * the run's outcome (st NULL or collective); after a rank-local error it is abandoned (no MPI).
 * Then the snapshot buffer is released while the backend that allocated it still exists. */
static fm_status hook_finish(void *ctx, fm_trainer *t, fm_status st)
{
    fm_checkpoint_ctx *c = ctx;
    if (!c->bg) return st;
    if (fm_checkpoint_async_in_flight(c->bg)) {
        if (!st || fm_status_is_collective(st)) {
            fm_status s2 = settle(c, t, 1);
            if (s2 && !st) {
                st = s2;
            } else if (s2) {
                say(c, t, "also: %s", fm_status_message(s2));
                fm_status_free(&s2);
            }
        } else {
            fm_checkpoint_async_abandon(c->bg);
        }
    }
    if (!fm_checkpoint_async_in_flight(c->bg)) fm_checkpoint_async_release(c->bg);
    return st;
}

fm_trainer_hooks fm_checkpoint_hooks(fm_checkpoint_ctx *ctx)
{
    fm_trainer_hooks h = {hook_resume, hook_save, ctx, hook_poll, hook_finish};
    return h;
}

/* ---- inspect --------------------------------------------------------------------------------- */

typedef struct verify_print {
    FILE *out;
} verify_print;

static void report_failure(void *user, const char *dset, uint64_t bytes, uint32_t stored,
                           uint32_t computed, int ok)
{
    verify_print *vp = user;
    if (!ok)
        fprintf(vp->out, "  FAILED  %s (%" PRIu64 " bytes): stored crc32 0x%08x, computed 0x%08x\n",
                dset, bytes, stored, computed);
}

static long long attr_i64_or(fm_checkpoint_file *f, const char *obj, const char *name, long long dflt)
{
    int64_t v = 0;
    fm_status st = fm_checkpoint_file_get_attr_i64(f, obj, name, &v);
    if (st) {
        fm_status_free(&st);
        return dflt;
    }
    return (long long)v;
}

static void print_str_attr(FILE *out, fm_checkpoint_file *f, const char *label, const char *obj,
                           const char *name)
{
    char *s = NULL;
    fm_status st = fm_checkpoint_file_get_attr_str(f, obj, name, &s);
    fprintf(out, "%-16s%s\n", label, st ? "(missing)" : s);
    fm_status_free(&st);
    free(s);
}

fm_status fm_checkpoint_inspect(const char *path, FILE *out)
{
    fm_checkpoint_file *f = NULL;
    int version = 0;
    FM_TRY(open_checkpoint(MPI_COMM_NULL, path, NULL, &version, &f));
    fprintf(out, "file            %s\n", path);
    fprintf(out, "format          %s version %d\n", FM_CHECKPOINT_FORMAT, version);
    print_str_attr(out, f, "written by", "/", "fmtrain_version");
    print_str_attr(out, f, "written at", "/", "wall_time_utc");
    print_str_attr(out, f, "host (rank 0)", "/", "hostname");
    fprintf(out, "writer ranks    %lld\n", attr_i64_or(f, "/", "writer_ranks", -1));
    print_str_attr(out, f, "reason", "/", "reason");
    fprintf(out, "step            %lld\n", attr_i64_or(f, "/", "step", -1));
    fprintf(out, "tokens seen     %lld\n", attr_i64_or(f, "/", "tokens_seen", -1));
    char *arch = NULL;
    fm_status ast = fm_checkpoint_file_get_attr_str(f, "/model", "arch", &arch);
    fm_status_free(&ast);
    fprintf(out, "model           %s: %lld layers, %lld heads, d_model %lld, seq_len %lld, vocab %lld "
                 "(padded %lld)\n", arch ? arch : "?",
            attr_i64_or(f, "/model", "n_layer", -1), attr_i64_or(f, "/model", "n_head", -1),
            attr_i64_or(f, "/model", "d_model", -1), attr_i64_or(f, "/model", "max_seq_len", -1),
            attr_i64_or(f, "/model", "vocab_size", -1), attr_i64_or(f, "/model", "padded_vocab", -1));
    free(arch);
    if (attr_i64_or(f, "/model", "n_kv_head", -1) >= 0) { /* written since Llama was added */
        double th = 0.0, eps = 0.0;
        fm_status dst = fm_checkpoint_file_get_attr_f64(f, "/model", "rope_theta", &th);
        fm_status_free(&dst);
        dst = fm_checkpoint_file_get_attr_f64(f, "/model", "norm_eps", &eps);
        fm_status_free(&dst);
        fprintf(out, "                %lld key/value heads, ffn_dim %lld, rope_theta %g, norm_eps %g, "
                     "%s head\n", attr_i64_or(f, "/model", "n_kv_head", -1),
                attr_i64_or(f, "/model", "ffn_dim", -1), th, eps,
                attr_i64_or(f, "/model", "tie_embeddings", 1) ? "tied" : "untied");
    }
    fprintf(out, "parameters      %lld (%lld stored with the padded vocabulary)\n",
            attr_i64_or(f, "/model", "n_params", -1), attr_i64_or(f, "/model", "n_params_stored", -1));
    if (fm_checkpoint_file_exists(f, "/optimizer"))
        fprintf(out, "optimizer       AdamW, step %lld\n", attr_i64_or(f, "/optimizer", "step", -1));
    else
        fprintf(out, "optimizer       none stored (a model alone, e.g. from `fmtrain import`: a run starts "
                     "from it with [checkpoint] init_from)\n");
    uint64_t rs[3] = {0, 0, 0};
    fm_status st = fm_checkpoint_file_read_u64(f, "/trainer/reader_state", rs, 3);
    if (!st)
        fprintf(out, "data position   epoch %" PRIu64 ", window %" PRIu64 " (data seed %" PRIu64 ")\n",
                rs[1], rs[2], rs[0]);
    fm_status_free(&st);
    print_str_attr(out, f, "dataset", "/data", "train");
    fm_status bad = NULL;
    if (fm_checkpoint_file_exists(f, "/tokenizer")) {
        fm_tokenizer *tok = NULL;
        fm_status ts = fm_tokenizer_load(fm_checkpoint_file_hid_read(f), "tokenizer", &tok);
        if (ts) {
            fprintf(out, "tokenizer       DAMAGED: %s\n", fm_status_message(ts));
            bad = ts;
        } else {
            fprintf(out, "tokenizer       byte-bpe, %u tokens (validated)\n", fm_tokenizer_vocab_size(tok));
        }
        fm_tokenizer_free(&tok);
    } else {
        fprintf(out, "tokenizer       none stored\n");
    }
    char *cfg = NULL;
    st = fm_checkpoint_file_read_text(f, "/config", &cfg);
    if (st) {
        fprintf(out, "configuration   UNREADABLE: %s\n", fm_status_message(st));
        fm_status_free(&st);
    } else {
        fprintf(out, "configuration:\n");
        for (const char *p = cfg; *p;) {
            const char *e = strchr(p, '\n');
            size_t n = e ? (size_t)(e - p) : strlen(p);
            fprintf(out, "    %.*s\n", (int)n, p);
            p += n + (e ? 1 : 0);
        }
        free(cfg);
    }
    verify_print vp = {out};
    int checked = 0, failed = 0;
    st = fm_checkpoint_file_verify(f, report_failure, &vp, &checked, &failed);
    fprintf(out, "checksums       %d dataset%s checked, %d failed\n", checked, checked == 1 ? "" : "s",
            failed);
    fm_checkpoint_file_close(&f);
    if (st) {
        fm_status_free(&bad);
        return st;
    }
    if (bad) return fm_status_prefix(FM_ERR(FM_ERR_INPUT, "%s", fm_status_message(bad)), "%s", path);
    return NULL;
}

/* ---- loading a model without MPI ------------------------------------------------------------- */

/* The model shape a checkpoint stores under /model: its family (arch) and sizes, checked. */
static fm_status read_model_shape(fm_checkpoint_file *f, const char *path, fm_model_shape *s)
{
    memset(s, 0, sizeof *s);
    char *arch = NULL;
    FM_TRY(fm_checkpoint_file_get_attr_str(f, "/model", "arch", &arch));
    int too_long = fm_util_strlcpy(s->arch, arch, sizeof s->arch);
    fm_status st = too_long ? FM_ERR(FM_ERR_INPUT, "%s: /model arch = '%s' is not a model family "
                                     "this fmtrain knows", path, arch)
                            : NULL;
    free(arch);
    FM_TRY(st);
    int64_t v[5] = {0, 0, 0, 0, 0};
    const char *names[5] = {"n_layer", "n_head", "d_model", "max_seq_len", "vocab_size"};
    for (int i = 0; i < 5; i++) {
        FM_TRY(fm_checkpoint_file_get_attr_i64(f, "/model", names[i], &v[i]));
        if (v[i] < 1 || v[i] > INT32_MAX)
            return FM_ERR(FM_ERR_INPUT, "%s: /model %s = %lld is not a valid size", path, names[i],
                          (long long)v[i]);
    }
    s->n_layer = (int)v[0];
    s->n_head = (int)v[1];
    s->d_model = (int)v[2];
    s->max_seq_len = (int)v[3];
    s->vocab_size = (int)v[4];
    read_family_attrs(f, s);
    st = fm_model_shape_check(s);
    if (!st) return NULL;
    fm_status in = FM_ERR(FM_ERR_INPUT, "%s holds an invalid model shape: %s", path,
                          fm_status_message(st));
    fm_status_free(&st);
    return in;
}

/* fm_checkpoint_file_verify's report: the first failing dataset and the count. */
typedef struct verify_note {
    int failed;
    char first[256];
} verify_note;

static void note_failure(void *user, const char *dset, uint64_t bytes, uint32_t stored,
                         uint32_t computed, int ok)
{
    (void)bytes;
    (void)stored;
    (void)computed;
    verify_note *vn = user;
    if (ok) return;
    if (vn->failed++ == 0) fm_util_strlcpy(vn->first, dset, sizeof vn->first);
}

/* Appends printf-style text to note (size bytes; may be NULL). */
static void add_note(char *note, size_t size, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static void add_note(char *note, size_t size, const char *fmt, ...)
{
    if (!note || !size) return;
    size_t used = strlen(note);
    if (used + 1 >= size) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(note + used, size - used, fmt, ap);
    va_end(ap);
}

/* Loads the model of one checkpoint file (its parameters CRC-checked), then verifies the rest of
 * the file (optimizer state, trainer state, configuration) so that `note` can say whether it is
 * also good for resuming: a file whose parameters verify is used for sampling either way. */
static fm_status load_model_file(const char *path, fm_backend *be, const fm_model_options *mo,
                                 fm_model **model, fm_tokenizer **tok, char *note, size_t note_size)
{
    fm_checkpoint_file *f = NULL;
    FM_TRY(open_checkpoint(MPI_COMM_NULL, path, NULL, NULL, &f));
    fm_model_shape s;
    fm_model *m = NULL;
    fm_status st = read_model_shape(f, path, &s);
    if (!st) st = fm_model_create_opts(&s, be, mo, &m);
    fm_checkpoint_tensor *table = NULL;
    int nt = 0;
    if (!st) st = model_table(m, &table, &nt);
    float *host = NULL;
    if (!st) {
        int on_host = be->ops->caps.host_memory;
        host = on_host ? fm_model_params(m) : malloc(fm_model_num_params(m) * sizeof(float));
        if (!host) st = FM_ERR(FM_ERR_NOMEM, "out of memory loading %s", path);
        if (!st) {
            fm_checkpoint_group g = {"params", table, nt, host, fm_model_num_params(m), NULL, 0};
            st = fm_checkpoint_file_read_groups(f, &g, 1, 1);
        }
        if (!st && !on_host) st = fm_model_set_params(m, host);
        if (!on_host) free(host);
    }
    free(table);
    if (!st && fm_checkpoint_file_exists(f, "/tokenizer"))
        st = fm_tokenizer_load(fm_checkpoint_file_hid_read(f), "tokenizer", tok);
    if (!st) {
        verify_note vn = {0, ""};
        int checked = 0;
        fm_status vst = fm_checkpoint_file_verify(f, note_failure, &vn, &checked, NULL);
        if (vn.failed)
            add_note(note, note_size,
                     "; its parameters verify, but %d of its %d datasets fail their checksum "
                     "(first: %s): good for sampling, NOT for resuming training",
                     vn.failed, checked, vn.first);
        else if (vst)
            add_note(note, note_size, "; its parameters verify, but the rest of it cannot be read "
                                      "(%s): good for sampling, NOT for resuming training",
                     fm_status_message(vst));
        else
            add_note(note, note_size, "; all %d datasets verify", checked);
        fm_status_free(&vst);
    }
    fm_checkpoint_file_close(&f);
    if (st) {
        fm_model_free(&m);
        fm_tokenizer_free(tok);
        return st;
    }
    *model = m;
    return NULL;
}

fm_status fm_checkpoint_load_model(const char *path, fm_backend *be, int max_batch, fm_model **model,
                                   fm_tokenizer **tok, char *used_path, size_t size, char *note,
                                   size_t note_size)
{
    const fm_model_options mo = {.mode = FM_MODEL_DECODE, .max_batch = max_batch};
    FM_TRY(fm_checkpoint_load_model_opts(path, be, &mo, model, tok, used_path, size, note, note_size));
    return NULL;
}

fm_status fm_checkpoint_load_model_opts(const char *path, fm_backend *be, const fm_model_options *mo,
                                        fm_model **model, fm_tokenizer **tok, char *used_path,
                                        size_t size, char *note, size_t note_size)
{
    *model = NULL;
    *tok = NULL;
    if (used_path && size) used_path[0] = '\0';
    if (note && note_size) note[0] = '\0';
    struct stat sb;
    if (stat(path, &sb) != 0)
        return FM_ERR(FM_ERR_INPUT, "cannot open checkpoint %s: %s", path, strerror(errno));
    if (!S_ISDIR(sb.st_mode)) {
        add_note(note, note_size, "the file named");
        FM_TRY(load_model_file(path, be, mo, model, tok, note, note_size));
        if (used_path) fm_util_strlcpy(used_path, path, size);
        return NULL;
    }
    /* A directory: a run directory (its checkpoints/ folder) or the folder itself. */
    char dir[CK_PATH_MAX];
    snprintf(dir, sizeof dir, "%s/%s", path, FM_CHECKPOINT_SUBDIR);
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) fm_util_strlcpy(dir, path, sizeof dir);
    fm_checkpoint_entry *v = NULL;
    int n = 0;
    FM_TRY(fm_checkpoint_dir_list(dir, &v, &n));
    fm_status last = NULL;
    char skipped[2048] = "";
    for (int i = 0; i < n; i++) {
        char p[CK_PATH_MAX + 80];
        snprintf(p, sizeof p, "%s/%s", dir, v[i].name);
        fm_status_free(&last);
        char fnote[1024] = "";
        last = load_model_file(p, be, mo, model, tok, fnote, sizeof fnote);
        if (!last) {
            if (used_path) fm_util_strlcpy(used_path, p, size);
            add_note(note, note_size, "the newest checkpoint of %s whose parameters verify%s%s",
                     dir, skipped, fnote);
            break;
        }
        if (fm_status_code(last) != FM_ERR_INPUT) break;
        add_note(skipped, sizeof skipped, "%s %s (%s)", skipped[0] ? ";" : "; skipped",
                 v[i].name, fm_status_message(last));
    }
    free(v);
    if (n == 0) return FM_ERR(FM_ERR_INPUT, "%s holds no checkpoint (step-*.h5)", dir);
    if (last && fm_status_code(last) == FM_ERR_INPUT && n > 1)
        fm_status_prefix(last, "no checkpoint of %s has parameters that verify (%d tried); the "
                               "oldest",
                         dir, n);
    return last;
}

/* ---- a model alone (fmtrain import) ------------------------------------------------------------ */

fm_status fm_checkpoint_write_model(MPI_Comm comm, const char *path, fm_model *model, const fm_tokenizer *tok,
                                    const char *config_text, const char *source)
{
    int rank = 0, size = 1;
    FM_MPI_TRY(MPI_Comm_rank(comm, &rank));
    FM_MPI_TRY(MPI_Comm_size(comm, &size));
    fm_checkpoint_tensor *table = NULL;
    float *host = NULL;
    int nt = 0;
    FM_TRY(model_table(model, &table, &nt));
    fm_checkpoint_group est = {"params", table, nt, NULL, fm_model_num_params(model), NULL, 0};
    fm_checkpoint_io_opts io = {(int64_t)1 << 20, NULL, 0};
    io.expected_bytes = fm_checkpoint_file_estimate_bytes(&est, 1, io.align_bytes); /* a full disk: refused first */
    fm_checkpoint_file *f = NULL;
    fm_status st = fm_checkpoint_file_create(comm, path, FM_CHECKPOINT_FORMAT, FM_CHECKPOINT_VERSION, &io, &f);
    if (st) {
        free(table);
        return fm_status_trace(st, __FILE__, __LINE__, __func__);
    }
    char host_name[256] = "";
    if (rank == 0 && gethostname(host_name, sizeof host_name - 1) != 0) fm_util_strlcpy(host_name, "?", sizeof host_name);
    double wall = fm_util_wall_time();
    FM_MPI_KEEP(st, MPI_Bcast(host_name, sizeof host_name, MPI_CHAR, 0, comm));
    FM_MPI_KEEP(st, MPI_Bcast(&wall, 1, MPI_DOUBLE, 0, comm));
    time_t secs = (time_t)wall;
    struct tm tmv;
    char iso[64];
    gmtime_r(&secs, &tmv);
    strftime(iso, sizeof iso, "%Y-%m-%dT%H:%M:%SZ", &tmv);
    if (!st) st = fm_checkpoint_file_attr_str(f, "/", "fmtrain_version", FM_VERSION);
    if (!st) st = fm_checkpoint_file_attr_i64(f, "/", "writer_ranks", size);
    if (!st) st = fm_checkpoint_file_attr_f64(f, "/", "wall_time", wall);
    if (!st) st = fm_checkpoint_file_attr_str(f, "/", "wall_time_utc", iso);
    if (!st) st = fm_checkpoint_file_attr_str(f, "/", "hostname", host_name);
    if (!st) st = fm_checkpoint_file_attr_str(f, "/", "reason", "import");
    if (!st) st = fm_checkpoint_file_attr_str(f, "/", "source", source);
    if (!st) st = fm_checkpoint_file_attr_i64(f, "/", "step", 0);
    if (!st) st = fm_checkpoint_file_attr_i64(f, "/", "tokens_seen", 0);
    if (!st) st = write_model_attrs(f, model);
    if (!st) {
        host = malloc(fm_model_num_params(model) * sizeof *host);
        if (!host) st = FM_ERR(FM_ERR_NOMEM, "out of memory writing %s", path);
    }
    if (!st) st = fm_model_get_params(model, host);
    st = fm_comm_agree(comm, st);
    if (!st) {
        fm_checkpoint_group g = {"params", table, nt, host, fm_model_num_params(model), NULL, 0};
        st = fm_checkpoint_file_write_groups(f, &g, 1);
    }
    if (!st) st = write_hf_attrs(f, model);
    if (!st) st = fm_checkpoint_file_write_text(f, "/config", config_text);
    if (!st) st = fm_checkpoint_file_attr_str(f, "/data", "train", "");
    if (!st) st = fm_checkpoint_file_attr_str(f, "/data", "val", "");
    if (!st && tok) {
        st = fm_comm_agree(comm, fm_tokenizer_save(tok, fm_checkpoint_file_hid(f), "tokenizer"));
        if (!st) st = fm_checkpoint_file_attr_str(f, "/data", "tokenizer", "stored in /tokenizer");
    } else if (!st) {
        st = fm_checkpoint_file_attr_str(f, "/data", "tokenizer", "none stored");
    }
    free(host);
    free(table);
    if (st) {
        fm_checkpoint_file_abort(&f);
        return fm_status_prefix(st, "%s not written", path);
    }
    return fm_checkpoint_file_commit(&f, -1, NULL);
}

/* ---- what a checkpoint says about its run ----------------------------------------------------- */

/* A string attribute of `group` into out ("" when the file has none: written before it existed). */
static void str_attr(fm_checkpoint_file *f, const char *group, const char *name, char *out, size_t n)
{
    char *v = NULL;
    out[0] = '\0';
    fm_status st = fm_checkpoint_file_get_attr_str(f, group, name, &v);
    if (!st && v) fm_util_strlcpy(out, v, n);
    fm_status_free(&st);
    free(v);
}

fm_status fm_checkpoint_read_meta(const char *path, fm_checkpoint_meta *out)
{
    memset(out, 0, sizeof *out);
    out->val_separate = -1;
    fm_checkpoint_file *f = NULL;
    FM_TRY(open_checkpoint(MPI_COMM_NULL, path, NULL, NULL, &f));
    fm_status st = fm_checkpoint_file_get_attr_i64(f, "/", "step", &out->step);
    if (!st) st = read_saved_config(f, path, &out->config, &out->writer_ranks);
    if (!st) {
        str_attr(f, "/", "reason", out->reason, sizeof out->reason);
        str_attr(f, "/", "source", out->source, sizeof out->source);
        str_attr(f, "/data", "train", out->train, sizeof out->train);
        str_attr(f, "/data", "val", out->val, sizeof out->val);
        str_attr(f, "/data", "train_abs", out->train_abs, sizeof out->train_abs);
        str_attr(f, "/data", "val_abs", out->val_abs, sizeof out->val_abs);
        char src[32];
        str_attr(f, "/data", "val_source", src, sizeof src);
        if (strcmp(src, "data.val") == 0) out->val_separate = 1;
        else if (strcmp(src, "data.train") == 0) out->val_separate = 0;
        if (!out->train[0]) fm_util_strlcpy(out->train, out->config.data_train, sizeof out->train);
        if (!out->val[0])
            fm_util_strlcpy(out->val, fm_config_val_path(&out->config), sizeof out->val);
    }
    fm_checkpoint_file_close(&f);
    return st;
}

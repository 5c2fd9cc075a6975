/* config.c — see config.h. The schema table below is the single source of truth for every key:
 * its section and name, its type, its default (written as it would be in a file), its allowed range
 * or values and a one-line help text. Parsing, defaults, validation of single values, the
 * effective-configuration printout and docs/parameters.md are all driven by it.
 *
 * What this file is not: it knows nothing about MPI, datasets or checkpoints; cross-key rules that
 * need more than the configuration itself (does the dataset exist, is CUDA built in) belong to the
 * modules that own those things.
 */
#define _POSIX_C_SOURCE 200809L
#include "config/config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

/* ---- the schema -------------------------------------------------------------------------------
 */

typedef enum {
    T_INT,   /* int field, decimal integer */
    T_INT64, /* int64_t field, decimal integer */
    T_REAL,  /* double field, finite real number */
    T_NAME,  /* char[] field: a name made of [A-Za-z0-9._-] (used in paths) */
    T_PATH,  /* char[] field: a file system path (any printable text) */
    T_HINTS, /* char[] field: "key=value,key=value" (MPI-IO hints) */
    T_ENUM,  /* enum field (int-sized), one of `values` */
    T_SEED,  /* uint64_t field, decimal 0 .. 2^64-1 */
    T_RESUME /* checkpoint_resume + checkpoint_resume_path: auto | never | a path */
} kind;

enum {
    LO_OPEN = 1u, /* real: the lower bound is excluded */
    HI_OPEN = 2u, /* real: the upper bound is excluded */
    POW2 = 4u,    /* integer: must be a power of two */
    EMPTY_OK = 8u, /* text: the empty string is allowed */
    OLD_KEY = 16u  /* a key kept so that older parameter files (and the configurations stored in
                      older checkpoints) still load: written out only when it is not at its
                      default, marked as old in docs/parameters.md */
};

typedef struct entry {
    const char *section;
    const char *key;
    kind type;
    size_t offset;      /* of the field in fm_config */
    size_t size;        /* of the field (text: buffer size including the NUL) */
    const char *def;    /* the default, written as in a file; NULL: required key */
    int64_t imin, imax; /* T_INT, T_INT64 */
    double rmin, rmax;  /* T_REAL */
    unsigned flags;
    const char *const *values; /* T_ENUM: names in the enum's order, NULL-terminated */
    const char *help;
} entry;

/* Offset of a field, with a compile-time check that the field has type T (a mismatch between the
 * table and the struct is a build error, not a memory corruption). */
#define FLD(f, T) (offsetof(fm_config, f) + 0 * sizeof(char[_Generic(((fm_config *)0)->f, T : 1)]))
#define SZ(f) sizeof(((fm_config *)0)->f)

#define E_INT(sec, k, f, def, lo, hi, fl, help)                                                    \
    {                                                                                              \
        sec, k, T_INT, FLD(f, int), SZ(f), def, lo, hi, 0, 0, fl, NULL, help                       \
    }
#define E_INT64(sec, k, f, def, lo, hi, fl, help)                                                  \
    {                                                                                              \
        sec, k, T_INT64, FLD(f, int64_t), SZ(f), def, lo, hi, 0, 0, fl, NULL, help                 \
    }
#define E_REAL(sec, k, f, def, lo, hi, fl, help)                                                   \
    {                                                                                              \
        sec, k, T_REAL, FLD(f, double), SZ(f), def, 0, 0, lo, hi, fl, NULL, help                   \
    }
#define E_TEXT(sec, k, t, f, def, fl, help)                                                        \
    {                                                                                              \
        sec, k, t, FLD(f, char *), SZ(f), def, 0, 0, 0, 0, fl, NULL, help                          \
    }
#define E_ENUM(sec, k, f, T, def, vals, help)                                                      \
    {                                                                                              \
        sec, k, T_ENUM, FLD(f, T), SZ(f), def, 0, 0, 0, 0, 0, vals, help                           \
    }

_Static_assert(sizeof(fm_schedule) == sizeof(int) && sizeof(fm_device) == sizeof(int) &&
                   sizeof(fm_bind) == sizeof(int) && sizeof(fm_on_nan) == sizeof(int) &&
                   sizeof(fm_arch) == sizeof(int) && sizeof(fm_resume) == sizeof(int) &&
                   sizeof(fm_tie_emb) == sizeof(int) &&
                   sizeof(fm_runtime_precision) == sizeof(int) &&
                   sizeof(fm_ckpt_async) == sizeof(int) && sizeof(fm_shared_memory) == sizeof(int),
               "enum fields are stored through int");

static const char *const arch_values[] = {"gpt2", "llama", NULL};
static const char *const tie_values[] = {"auto", "true", "false", NULL};
static const char *const schedule_values[] = {"cosine", "linear", "constant", "wsd", NULL};
static const char *const on_nan_values[] = {"stop", "skip", NULL};
static const char *const device_values[] = {"cpu", "cuda", "auto", NULL};
static const char *const precision_values[] = {"auto", "fp32", "bf16", NULL};
static const char *const async_values[] = {"false", "true", NULL};
static const char *const shared_memory_values[] = {"auto", "off", NULL};
static const char *const bind_values[] = {"auto", "socket", "numa", "core", "none", NULL};

#define FM_STR_(x) #x
#define FM_STR(x) FM_STR_(x) /* a macro's value as a string: schema defaults shared with config.h */

#define BIG INT64_C(1000000000000000) /* 1e15: "practically unbounded" for step counts */

/* To add a key: add the field `<section>_<key>` to fm_config (config.h), add its entry below (the
 * FLD macro checks the field's type at compile time; fm_config_check_schema checks the defaults
 * and that no struct field is left without a key), and regenerate the docs:
 *   build/<preset>/tests/config/fm_paramdoc > docs/parameters.md
 * A new section also goes into sections[] below. */
static const entry schema[] = {
    /* [run] */
    E_TEXT("run", "name", T_NAME, run_name, "", EMPTY_OK,
           "name of the run (letters, digits, `.`, `_`, `-`); empty: the parameter file's name "
           "without directory and `.ini`"),
    E_TEXT("run", "dir", T_PATH, run_dir, "", EMPTY_OK,
           "run directory for checkpoints, logs and the effective configuration; empty: "
           "`runs/<run.name>`"),
    {"run", "seed", T_SEED, FLD(run_seed, uint64_t), SZ(run_seed), "1234", 0, 0, 0, 0, 0, NULL,
     "seed of every random choice (initialisation, data order, sampling)"},
    E_REAL("run", "stop_margin_minutes", run_stop_margin_minutes, "5", 0, 1440, 0,
           "stop with a checkpoint this many minutes before the job's wall-time limit (from the "
           "batch system); 0: do not watch the limit"),

    /* [model] */
    E_ENUM("model", "arch", model_arch, fm_arch, "gpt2", arch_values,
           "model family: gpt2 (GPT-2: learned positions, LayerNorm, GELU MLP, tied head) or llama "
           "(Llama: RoPE, RMSNorm, SwiGLU MLP, grouped-query attention, no biases); docs/model.md"),
    E_INT("model", "n_layer", model_n_layer, NULL, 1, 1024, 0, "number of transformer blocks"),
    E_INT("model", "n_head", model_n_head, NULL, 1, 1024, 0,
          "attention heads per block; must divide model.d_model"),
    E_INT("model", "d_model", model_d_model, NULL, 1, 1048576, 0, "width of the residual stream"),
    E_INT("model", "seq_len", model_seq_len, NULL, 1, 1048576, 0,
          "context length in tokens (training sequence length)"),
    E_INT64("model", "vocab_size", model_vocab_size, "0", 0, INT32_MAX, 0,
            "vocabulary size; 0: take it from the dataset (padded sizes larger than the dataset's "
            "are allowed)"),
    E_INT("model", "n_kv_head", model_n_kv_head, "0", 0, 1024, 0,
          "key/value heads of grouped-query attention (llama), dividing model.n_head; 0: n_head "
          "(multi-head attention; gpt2 takes only this)"),
    E_INT(
        "model", "ffn_dim", model_ffn_dim, "0", 0, 1073741823, 0,
        "hidden size of the MLP; 0: the family's rule (gpt2: 4 x d_model, the only value it takes; "
        "llama: 8 x d_model / 3 rounded up to a multiple of 256)"),
    E_REAL(
        "model", "rope_theta", model_rope_theta, "500000", 0, 1e12, LO_OPEN,
        "base of the rotary position embedding (llama; Llama 3 uses 500000, Llama 2 10000); gpt2 "
        "has learned positions and takes only the default"),
    E_REAL("model", "norm_eps", model_norm_eps, "1e-5", 0, 1, LO_OPEN,
           "epsilon of the RMSNorm (llama); gpt2's LayerNorm uses 1e-5, the only value it takes"),
    E_ENUM("model", "tie_embeddings", model_tie_embeddings, fm_tie_emb, "auto", tie_values,
           "the LM head is the token embedding matrix (true) or its own matrix (false); auto: the "
           "family's choice (gpt2: true, the only value it takes; llama: false)"),

    /* [data] */
    E_TEXT("data", "train", T_PATH, data_train, NULL, 0,
           "dataset file (HDF5, made by `fmtrain prepare`) whose training split is used"),
    E_TEXT("data", "val", T_PATH, data_val, "", EMPTY_OK,
           "dataset file whose validation split is used; empty: the same file as data.train"),

    /* [train] */
    E_INT("train", "micro_batch", train_micro_batch, "4", 1, 1048576, 0,
          "sequences per rank per forward/backward pass"),
    E_INT("train", "grad_accum", train_grad_accum, "1", 1, 1048576, 0,
          "micro-batches accumulated per optimizer step (global batch = micro_batch × grad_accum × "
          "data-parallel ranks)"),
    E_INT64("train", "steps", train_steps, NULL, 1, BIG, 0, "number of optimizer steps of the run"),
    E_REAL("train", "lr", train_lr, "6e-4", 0, 10, LO_OPEN,
           "peak learning rate (reached after warmup)"),
    E_REAL("train", "min_lr", train_min_lr, "6e-5", 0, 10, 0,
           "final learning rate of the decay (cosine, linear, wsd); at most train.lr"),
    E_INT64("train", "warmup_steps", train_warmup_steps, "0", 0, BIG, 0,
            "steps of linear warmup from lr/warmup_steps to lr; at most train.steps"),
    E_ENUM("train", "schedule", train_schedule, fm_schedule, "cosine", schedule_values,
           "learning-rate decay after warmup (wsd: warmup, stable, decay)"),
    E_REAL("train", "decay_fraction", train_decay_fraction, "0.2", 0, 1, LO_OPEN,
           "wsd only: fraction of train.steps spent in the final decay"),
    E_REAL("train", "weight_decay", train_weight_decay, "0.1", 0, 10, 0,
           "AdamW decoupled weight decay"),
    E_REAL("train", "beta1", train_beta1, "0.9", 0, 1, HI_OPEN, "AdamW first-moment decay"),
    E_REAL("train", "beta2", train_beta2, "0.95", 0, 1, HI_OPEN, "AdamW second-moment decay"),
    E_REAL("train", "eps", train_eps, "1e-8", 0, 1, LO_OPEN, "AdamW epsilon"),
    E_REAL("train", "clip_grad", train_clip_grad, "1", 0, 1e6, 0,
           "clip the global gradient norm to this value; 0: no clipping"),
    E_INT64("train", "eval_every", train_eval_every, "250", 0, BIG, 0,
            "evaluate the validation loss every this many steps; 0: never"),
    E_INT64(
        "train", "eval_windows", train_eval_windows, FM_STR(FM_CONFIG_EVAL_WINDOWS), 1, UINT32_MAX,
        0,
        "validation windows (seq_len+1 tokens each) in one evaluation: a fixed set spread evenly "
        "over the validation split (all of it when it has fewer), the same for every rank "
        "count, micro_batch and grad_accum"),
    E_INT64("train", "eval_batches", train_eval_batches, "0", 0, BIG, OLD_KEY,
            "old form of train.eval_windows, still read: > 0 means eval_windows = eval_batches × "
            "micro_batch (the windows one rank evaluated before eval_windows existed); 0: unused. "
            "Cannot be combined with an eval_windows other than the default"),
    E_ENUM("train", "on_nan", train_on_nan, fm_on_nan, "stop", on_nan_values,
           "on a NaN/Inf loss or gradient norm: stop (exit code 4) or skip the step"),
    E_INT("train", "zero", train_zero, "0", 0, 2, 0,
          "ZeRO stage of data parallelism: 0 every rank holds the AdamW state; 1 each rank holds "
          "and updates only its shard of the AdamW state and weights (the updated weights are "
          "all-gathered); 2 as 1, and the gradients are reduce-scattered instead of all-reduced "
          "(docs/training.md, \"Sharding the optimizer\")"),

    /* [checkpoint] */
    E_INT64("checkpoint", "every_steps", checkpoint_every_steps, "1000", 0, BIG, 0,
            "write a checkpoint every this many steps; 0: not by step count"),
    E_REAL("checkpoint", "every_minutes", checkpoint_every_minutes, "30", 0, 525600, 0,
           "write a checkpoint when this many minutes passed since the last one; 0: not by time"),
    E_INT("checkpoint", "keep_last", checkpoint_keep_last, "2", 1, 1000000, 0,
          "number of newest complete checkpoints kept in the run directory"),
    {"checkpoint", "resume", T_RESUME, FLD(checkpoint_resume, fm_resume), SZ(checkpoint_resume),
     "auto", 0, 0, 0, 0, 0, NULL,
     "auto: continue from the newest complete checkpoint in the run directory, if any; never: "
     "start fresh; otherwise the path of a checkpoint to start from"},
    E_TEXT(
        "checkpoint", "init_from", T_PATH, checkpoint_init_from, "", EMPTY_OK,
        "a checkpoint whose parameters a fresh run starts from (a model made by `fmtrain import`, "
        "or any fmtrain checkpoint), with a fresh optimizer, step 0 and the schedule from its "
        "start; ignored when the run resumes from a checkpoint; empty: random initialisation"),
    E_INT64("checkpoint", "align_bytes", checkpoint_align_bytes, "1048576", 1, INT64_C(1) << 30,
            POW2,
            "alignment of large datasets in checkpoint files (a power of two; match the file "
            "system's stripe size)"),
    E_TEXT("checkpoint", "mpiio_hints", T_HINTS, checkpoint_mpiio_hints, "", EMPTY_OK,
           "MPI-IO hints for checkpoint files, `key=value,key=value` (e.g. `striping_factor=8`); "
           "empty: none"),
    E_ENUM("checkpoint", "async", checkpoint_async, fm_ckpt_async, "false", async_values,
           "true: a periodic checkpoint copies this rank's part of the state to host memory at the "
           "step boundary and a background thread writes it while training goes on (the next "
           "checkpoint, a stop and the end of the run wait for it to be published); false: "
           "training waits for the whole write. docs/checkpoint-format.md"),

    /* [runtime] */
    E_ENUM("runtime", "device", runtime_device, fm_device, "auto", device_values,
           "compute backend; auto: CUDA when built in and a GPU is visible, else CPU"),
    E_ENUM("runtime", "precision", runtime_precision, fm_runtime_precision, "auto",
           precision_values,
           "precision of the matrix products: fp32, or bf16 (mixed precision: bf16 matmul inputs "
           "and a bf16 copy of the weights; master weights, gradients, AdamW state, norms, softmax "
           "and loss stay fp32; docs/backends.md); auto: bf16 where the backend has native bf16 "
           "GEMMs (CPU: a build with oneDNN on a CPU with AVX512_BF16 or AMX), else fp32. "
           "Checkpoints are fp32 in every precision, so a run may change it when it resumes"),
    E_INT("runtime", "threads", runtime_threads, "0", 0, 65536, 0,
          "OpenMP threads per rank; 0: all cores of the rank's binding"),
    E_ENUM("runtime", "bind", runtime_bind, fm_bind, "auto", bind_values,
           "where each rank's threads are pinned; auto: chosen from the launcher's binding and the "
           "node's topology; none: do not pin"),
    E_ENUM("runtime", "shared_memory", runtime_shared_memory, fm_shared_memory, "auto",
           shared_memory_values,
           "auto: when every rank of the job runs on one node with the CPU backend, the ranks add "
           "each other's gradients straight from node-shared memory instead of exchanging MPI "
           "messages, and with train.zero >= 1 they share one copy of the weights, each rank "
           "updating its shard in place (no all-gather); the same bits as off; a node whose "
           "/dev/shm is too small gets a warning and messages. off: MPI messages always, each rank "
           "its own copy (docs/parallelism.md, \"Ranks on one node\")"),
    E_INT64("runtime", "log_every", runtime_log_every, "10", 1, BIG, 0,
            "print a progress line every this many steps (rank 0)"),
    E_REAL(
        "runtime", "peak_tflops", runtime_peak_tflops, "0", 0, 1e6, 0,
        "peak TFLOP/s per rank used for the model FLOPs utilisation figure; 0: measure at start"),
    E_REAL("runtime", "hang_factor", runtime_hang_factor, "20", 0, 1e6, 0,
           "hang watchdog: a step, evaluation or checkpoint write that takes this many times "
           "longer than usual (the median of the recent steps; the last write) is a hang, after "
           "which every rank reports where it waits and exits with code 75 (requeue); 0: no "
           "watchdog"),
    E_REAL("runtime", "hang_min_minutes", runtime_hang_min_minutes, "5", 0, 10080, LO_OPEN,
           "hang watchdog: never call a hang before this many minutes (the first steps, the first "
           "checkpoint write and the resume get four times as long)"),
};

#define NKEYS ((int)(sizeof schema / sizeof schema[0]))

static const char *const sections[] = {"run", "model", "data", "train", "checkpoint", "runtime"};
#define NSECTIONS ((int)(sizeof sections / sizeof sections[0]))

static void *field(fm_config *cfg, const entry *e)
{
    return (char *)cfg + e->offset;
}
static const void *cfield(const fm_config *cfg, const entry *e)
{
    return (const char *)cfg + e->offset;
}

/* ---- small text helpers ------------------------------------------------------------------------
 */

/* A growable string; on allocation failure it stops growing and remembers that it failed. */
typedef struct sbuf {
    char *s;
    size_t len, cap;
    int failed;
} sbuf;

static void sb_vadd(sbuf *b, const char *fmt, va_list ap)
{
    if (b->failed) return;
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0) {
        b->failed = 1;
        return;
    }
    if (b->len + (size_t)n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (b->len + (size_t)n + 1 > cap) cap *= 2;
        char *s = realloc(b->s, cap);
        if (!s) {
            b->failed = 1;
            return;
        }
        b->s = s;
        b->cap = cap;
    }
    vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
    b->len += (size_t)n;
}

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void
sb_add(sbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sb_vadd(b, fmt, ap);
    va_end(ap);
}

/* Shortest "%.*g" text that reads back as exactly `v`. */
static void format_real(double v, char *buf, size_t n)
{
    if (v == floor(v) && fabs(v) < 1e15) { /* whole numbers without an exponent: 10, not 1e+01 */
        snprintf(buf, n, "%.0f", v);
        return;
    }
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, n, "%.*g", p, v);
        if (strtod(buf, NULL) == v) return;
    }
}

/* "an integer in [1, 1024]", "a real number in (0, 10]", "one of cosine, linear, ..." */
static void describe_expected(const entry *e, char *buf, size_t n)
{
    char lo[40], hi[40];
    switch (e->type) {
    case T_INT:
    case T_INT64:
        if (e->flags & POW2)
            snprintf(buf, n, "a power of two in [%" PRId64 ", %" PRId64 "]", e->imin, e->imax);
        else
            snprintf(buf, n, "an integer in [%" PRId64 ", %" PRId64 "]", e->imin, e->imax);
        return;
    case T_REAL:
        format_real(e->rmin, lo, sizeof lo);
        format_real(e->rmax, hi, sizeof hi);
        snprintf(buf, n, "a real number in %c%s, %s%c", (e->flags & LO_OPEN) ? '(' : '[', lo, hi,
                 (e->flags & HI_OPEN) ? ')' : ']');
        return;
    case T_ENUM: {
        size_t off = (size_t)snprintf(buf, n, "one of ");
        for (int i = 0; e->values[i] && off < n; i++)
            off += (size_t)snprintf(buf + off, n - off, "%s%s", i ? ", " : "", e->values[i]);
        return;
    }
    case T_NAME:
        snprintf(buf, n, "a name of letters, digits, '.', '_' and '-' (at most %zu bytes)",
                 e->size - 1);
        return;
    case T_PATH:
        snprintf(buf, n, "a path (at most %zu bytes)%s", e->size - 1,
                 (e->flags & EMPTY_OK) ? "" : ", not empty");
        return;
    case T_HINTS:
        snprintf(buf, n, "MPI-IO hints as key=value,key=value (at most %zu bytes)", e->size - 1);
        return;
    case T_SEED:
        snprintf(buf, n, "an integer in [0, 18446744073709551615]");
        return;
    case T_RESUME:
        snprintf(buf, n, "auto, never or the path of a checkpoint");
        return;
    }
}

/* ---- parsing one value ---------------------------------------------------------------------- */

static int is_name_char(int c)
{
    return isalnum(c) || c == '.' || c == '_' || c == '-';
}

/* One value being parsed: the entry, its text (already trimmed, unquoted), what the entry expects
 * (describe_expected, for the messages) and where the reason of a refusal goes. */
typedef struct value_in {
    const entry *e;
    const char *text;
    const char *expected;
    char *why;
    size_t whyn;
} value_in;

/* Writes the reason into v->why; returns 1 (refused), so that parsers can `return refuse(...)`. */
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static int
refuse(const value_in *v, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v->why, v->whyn, fmt, ap);
    va_end(ap);
    return 1;
}

/* T_INT, T_INT64: a whole decimal number in [imin, imax], a power of two with POW2. */
static int parse_integer(fm_config *cfg, const value_in *v)
{
    const entry *e = v->e;
    const char *text = v->text;
    if (!*text) return refuse(v, "empty value; expected %s", v->expected);
    char *end = NULL;
    errno = 0;
    long long n = strtoll(text, &end, 10);
    if (*end != '\0' || end == text || isspace((unsigned char)text[0])) {
        const char *hint = strpbrk(text, ".eE") ? " (write integers without a decimal point or "
                                                  "exponent)"
                                                : "";
        return refuse(v, "not an integer; expected %s%s", v->expected, hint);
    }
    if (errno == ERANGE || n < e->imin || n > e->imax)
        return refuse(v, "out of range; expected %s", v->expected);
    if ((e->flags & POW2) && (n & (n - 1)) != 0)
        return refuse(v, "not a power of two; expected %s", v->expected);
    if (e->type == T_INT)
        *(int *)field(cfg, e) = (int)n;
    else
        *(int64_t *)field(cfg, e) = (int64_t)n;
    return 0;
}

/* T_SEED: 0 .. 2^64-1 in decimal. */
static int parse_seed(fm_config *cfg, const value_in *v)
{
    char *end = NULL;
    errno = 0;
    if (!isdigit((unsigned char)v->text[0]))
        return refuse(v, "not a non-negative integer; expected %s", v->expected);
    unsigned long long n = strtoull(v->text, &end, 10);
    if (*end != '\0') return refuse(v, "not an integer; expected %s", v->expected);
    if (errno == ERANGE) return refuse(v, "out of range; expected %s", v->expected);
    *(uint64_t *)field(cfg, v->e) = (uint64_t)n;
    return 0;
}

/* T_REAL: a finite number inside [rmin, rmax] (either end open with LO_OPEN / HI_OPEN). */
static int parse_real(fm_config *cfg, const value_in *v)
{
    const entry *e = v->e;
    const char *text = v->text;
    if (!*text) return refuse(v, "empty value; expected %s", v->expected);
    char *end = NULL;
    errno = 0;
    double x = strtod(text, &end);
    if (*end != '\0' || end == text || isspace((unsigned char)text[0]))
        return refuse(v, "not a number; expected %s", v->expected);
    if (!isfinite(x)) return refuse(v, "not finite; expected %s", v->expected);
    int below = (e->flags & LO_OPEN) ? !(x > e->rmin) : !(x >= e->rmin);
    int above = (e->flags & HI_OPEN) ? !(x < e->rmax) : !(x <= e->rmax);
    if (below || above) return refuse(v, "out of range; expected %s", v->expected);
    *(double *)field(cfg, e) = x;
    return 0;
}

/* T_ENUM: one of e->values (stored as its index); a near miss is suggested. */
static int parse_enum(fm_config *cfg, const value_in *v)
{
    const entry *e = v->e;
    int best = -1, bestd = 3;
    for (int i = 0; e->values[i]; i++) {
        if (strcmp(v->text, e->values[i]) == 0) {
            *(int *)field(cfg, e) = i;
            return 0;
        }
        int d = fm_util_edit_distance(v->text, e->values[i], 3);
        if (d < bestd) {
            bestd = d;
            best = i;
        }
    }
    if (best >= 0 && (size_t)bestd < strlen(v->text))
        return refuse(v, "expected %s (did you mean `%s`?)", v->expected, e->values[best]);
    return refuse(v, "expected %s", v->expected);
}

/* What every text value must be: shorter than `cap` bytes, no control character, not empty unless
 * the entry allows it. */
static int check_text(const value_in *v, size_t cap)
{
    size_t n = strlen(v->text);
    if (n >= cap) return refuse(v, "too long (%zu bytes); expected %s", n, v->expected);
    for (size_t i = 0; i < n; i++)
        if (iscntrl((unsigned char)v->text[i]))
            return refuse(v, "contains a control character; expected %s", v->expected);
    if (n == 0 && !(v->e->flags & EMPTY_OK)) return refuse(v, "empty; expected %s", v->expected);
    return 0;
}

/* Stores a text value that passed its checks into its char[] field. */
static int store_text(fm_config *cfg, const value_in *v)
{
    memcpy(field(cfg, v->e), v->text, strlen(v->text) + 1);
    return 0;
}

/* T_PATH: any printable text. */
static int parse_path(fm_config *cfg, const value_in *v)
{
    if (check_text(v, v->e->size)) return 1;
    return store_text(cfg, v);
}

/* T_NAME: letters, digits, '.', '_' and '-', and neither "." nor "..". */
static int parse_name(fm_config *cfg, const value_in *v)
{
    if (check_text(v, v->e->size)) return 1;
    for (const char *c = v->text; *c; c++)
        if (!is_name_char((unsigned char)*c))
            return refuse(v, "character '%c' is not allowed; expected %s", *c, v->expected);
    if (strcmp(v->text, ".") == 0 || strcmp(v->text, "..") == 0)
        return refuse(v, "`%s` is not a usable name; expected %s", v->text, v->expected);
    return store_text(cfg, v);
}

/* T_HINTS: key=value pairs separated by commas; keys non-empty without spaces, values non-empty. */
static int parse_hints(fm_config *cfg, const value_in *v)
{
    if (check_text(v, v->e->size)) return 1;
    const char *p = v->text;
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        int bad = !eq || eq == p || eq + 1 == p + len;
        for (const char *q = p; !bad && q < (eq ? eq : p + len); q++)
            if (isspace((unsigned char)*q)) bad = 1;
        if (bad)
            return refuse(v, "hint `%.*s` is not key=value; expected %s", (int)len, p, v->expected);
        p = comma ? comma + 1 : p + len;
        if (comma && !*p) return refuse(v, "trailing comma; expected %s", v->expected);
    }
    return store_text(cfg, v);
}

/* T_RESUME: auto | never | a checkpoint's path (checkpoint_resume + checkpoint_resume_path). */
static int parse_resume(fm_config *cfg, const value_in *v)
{
    if (check_text(v, sizeof cfg->checkpoint_resume_path)) return 1;
    if (strcmp(v->text, "auto") == 0) {
        cfg->checkpoint_resume = FM_RESUME_AUTO;
        cfg->checkpoint_resume_path[0] = '\0';
    } else if (strcmp(v->text, "never") == 0) {
        cfg->checkpoint_resume = FM_RESUME_NEVER;
        cfg->checkpoint_resume_path[0] = '\0';
    } else if (!*v->text) {
        return refuse(v, "empty; expected %s", v->expected);
    } else {
        cfg->checkpoint_resume = FM_RESUME_PATH;
        memcpy(cfg->checkpoint_resume_path, v->text, strlen(v->text) + 1);
    }
    return 0;
}

typedef int (*value_parser)(fm_config *cfg, const value_in *v);

/* One parser per value type (the schema's `kind`). */
static const value_parser parsers[] = {
    [T_INT] = parse_integer, [T_INT64] = parse_integer, [T_REAL] = parse_real,
    [T_NAME] = parse_name,   [T_PATH] = parse_path,     [T_HINTS] = parse_hints,
    [T_ENUM] = parse_enum,   [T_SEED] = parse_seed,     [T_RESUME] = parse_resume,
};

/* Parses `text` (already trimmed, unquoted) for entry `e` into `cfg`. On failure writes the reason
 * ("expected ...") into why and returns non-zero. */
static int parse_value(fm_config *cfg, const entry *e, const char *text, char *why, size_t whyn)
{
    char expected[256];
    describe_expected(e, expected, sizeof expected);
    value_in v = {e, text, expected, why, whyn};
    if ((size_t)e->type >= sizeof parsers / sizeof parsers[0] || !parsers[e->type])
        return refuse(&v, "internal error: unknown type");
    return parsers[e->type](cfg, &v);
}

/* ---- looking up keys
 * ----------------------------------------------------------------------------- */

static int find_section(const char *name)
{
    for (int i = 0; i < NSECTIONS; i++)
        if (strcmp(sections[i], name) == 0) return i;
    return -1;
}

static int find_key(const char *section, const char *key)
{
    for (int i = 0; i < NKEYS; i++)
        if (strcmp(schema[i].section, section) == 0 && strcmp(schema[i].key, key) == 0) return i;
    return -1;
}

/* Writes " (did you mean `train.warmup_steps`?)" into buf when a known key is close to
 * section.key, or "" otherwise. A key that exists in another section is always suggested. */
static void suggest_key(const char *section, const char *key, char *buf, size_t n)
{
    buf[0] = '\0';
    int best = -1, bestd = INT_MAX;
    for (int i = 0; i < NKEYS; i++) {
        if (strcmp(schema[i].key, key) == 0) {
            best = i;
            bestd = 0;
            break;
        }
    }
    if (best < 0) {
        char full[2 * FM_CONFIG_NAME_MAX + 2], cand[2 * FM_CONFIG_NAME_MAX + 2];
        snprintf(full, sizeof full, "%s.%s", section, key);
        for (int i = 0; i < NKEYS; i++) {
            snprintf(cand, sizeof cand, "%s.%s", schema[i].section, schema[i].key);
            int d = fm_util_edit_distance(full, cand, 4);
            /* a typo in the key name alone, within the section the user meant */
            if (strcmp(schema[i].section, section) == 0) {
                int dk = fm_util_edit_distance(key, schema[i].key, 4);
                if (dk < d) d = dk;
            }
            if (d < bestd) {
                bestd = d;
                best = i;
            }
        }
        size_t klen = strlen(key);
        if (bestd > 3 || (size_t)bestd * 2 > klen + 1) best = -1;
    }
    if (best >= 0)
        snprintf(buf, n, " (did you mean `%s.%s`?)", schema[best].section, schema[best].key);
}

static void suggest_section(const char *section, char *buf, size_t n)
{
    buf[0] = '\0';
    int best = -1, bestd = 4;
    for (int i = 0; i < NSECTIONS; i++) {
        int d = fm_util_edit_distance(section, sections[i], 4);
        if (d < bestd) {
            bestd = d;
            best = i;
        }
    }
    if (best >= 0 && (size_t)bestd * 2 <= strlen(section) + 1)
        snprintf(buf, n, " (did you mean `[%s]`?)", sections[best]);
}

/* ---- the INI parser
 * ------------------------------------------------------------------------------- */

#define MAX_REPORTED 20 /* errors listed per file; the rest are counted */

typedef struct errlist {
    sbuf msg;
    int n;
    const char *source;
} errlist;

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static void
err_at(errlist *el, int line, const char *fmt, ...)
{
    el->n++;
    if (el->n > MAX_REPORTED) return;
    if (el->n > 1) sb_add(&el->msg, "\n");
    sb_add(&el->msg, "%s:%d: ", el->source, line);
    va_list ap;
    va_start(ap, fmt);
    sb_vadd(&el->msg, fmt, ap);
    va_end(ap);
}

/* Splits a value off its trailing comment and quotes. `v` points at the text after '=' (modified in
 * place). Returns the value or NULL with *why set. A value in double quotes may contain anything
 * printable; inside quotes \" and \\ stand for " and \. Unquoted, `#` or `;` after whitespace
 * starts a comment. When `comments` is zero (--set), the whole text is the value. */
static char *split_value(char *v, int comments, const char **why)
{
    while (*v == ' ' || *v == '\t') v++;
    if (*v == '"') {
        char *out = v, *p = v + 1;
        for (;;) {
            if (*p == '\0') {
                *why = "unterminated quoted value (missing closing \")";
                return NULL;
            }
            if (*p == '\\' && (p[1] == '"' || p[1] == '\\')) {
                *out++ = p[1];
                p += 2;
                continue;
            }
            if (*p == '"') break;
            *out++ = *p++;
        }
        *out = '\0';
        p++;
        while (*p == ' ' || *p == '\t') p++;
        if (*p != '\0' && !(comments && (*p == '#' || *p == ';'))) {
            *why = "unexpected text after the closing quote";
            return NULL;
        }
        return v;
    }
    if (comments) {
        for (char *p = v; *p; p++) {
            if ((*p == '#' || *p == ';') && (p == v || p[-1] == ' ' || p[-1] == '\t')) {
                *p = '\0';
                break;
            }
        }
    }
    return fm_util_trim(v);
}

/* Shortens a user's text quoted in a message to at most 80 bytes ("..." at the end), in place, at a
 * UTF-8 character boundary. Returns s. */
static char *clip(char *s)
{
    if (strlen(s) <= 80) return s;
    size_t cut = 77;
    while (cut > 0 && ((unsigned char)s[cut] & 0xC0) == 0x80) cut--;
    memcpy(s + cut, "...", 4);
    return s;
}

static int is_key_text(const char *s)
{
    if (!*s) return 0;
    for (; *s; s++)
        if (!(isalnum((unsigned char)*s) || *s == '_' || *s == '-' || *s == '.')) return 0;
    return 1;
}

/* The file's name without directory and extension, made into a valid run name. */
static void name_from_path(const char *path, char *out, size_t n)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t len = strlen(base);
    const char *dot = strrchr(base, '.');
    if (dot && dot != base) len = (size_t)(dot - base);
    if (len >= n) len = n - 1;
    for (size_t i = 0; i < len; i++) out[i] = is_name_char((unsigned char)base[i]) ? base[i] : '_';
    out[len] = '\0';
    if (len == 0 || strcmp(out, ".") == 0 || strcmp(out, "..") == 0) fm_util_strlcpy(out, "run", n);
}

fm_status fm_config_parse(fm_config *cfg, const char *source, const char *text, size_t len)
{
    char *buf = malloc(len + 1);
    FM_CHECK_ALLOC(buf, len + 1);
    memcpy(buf, text, len);
    buf[len] = '\0';

    int first_line[NKEYS]; /* line where each key was set in this file; 0 = not yet */
    memset(first_line, 0, sizeof first_line);
    errlist el = {{NULL, 0, 0, 0}, 0, source};
    int section = -1;    /* index in sections[]; -1 = none yet */
    int section_bad = 0; /* the current section header was wrong: skip its keys silently */
    int lineno = 0;
    char sugg[300], why[512];

    size_t pos = 0;
    if (len >= 3 && memcmp(buf, "\xEF\xBB\xBF", 3) == 0) pos = 3; /* UTF-8 byte-order mark */
    while (pos < len) {
        lineno++;
        char *line = buf + pos;
        char *nl = memchr(line, '\n', len - pos);
        size_t linelen = nl ? (size_t)(nl - line) : len - pos;
        pos += linelen + (nl ? 1 : 0);
        line[linelen] = '\0';
        if (strlen(line) != linelen) {
            err_at(&el, lineno, "unexpected NUL byte (is this a text file?)");
            continue;
        }
        if (linelen > 0 && line[linelen - 1] == '\r') line[linelen - 1] = '\0'; /* CRLF files */
        char *s = line;
        while (*s == ' ' || *s == '\t') s++;
        if (*s == '\0' || *s == '#' || *s == ';') continue;

        if (*s == '[') {
            char *close = strchr(s, ']');
            if (!close) {
                err_at(&el, lineno, "malformed section header `%s`; expected `[section]`", clip(s));
                section = -1;
                section_bad = 1;
                continue;
            }
            char *why_tail = NULL;
            char *rest = close + 1;
            while (*rest == ' ' || *rest == '\t') rest++;
            if (*rest != '\0' && *rest != '#' && *rest != ';') why_tail = rest;
            *close = '\0';
            char *name = fm_util_trim(s + 1);
            if (why_tail) {
                err_at(&el, lineno, "unexpected text `%s` after section header `[%s]`",
                       clip(why_tail), clip(name));
                section = -1;
                section_bad = 1;
                continue;
            }
            section = find_section(name);
            section_bad = section < 0;
            if (section < 0) {
                suggest_section(name, sugg, sizeof sugg);
                char known[128] = "";
                size_t off = 0;
                for (int i = 0; i < NSECTIONS; i++)
                    off += (size_t)snprintf(known + off, sizeof known - off, "%s[%s]", i ? " " : "",
                                            sections[i]);
                err_at(&el, lineno, "unknown section `[%s]`%s; sections are %s", clip(name), sugg,
                       known);
            }
            continue;
        }

        char *eq = strchr(s, '=');
        if (!eq) {
            char *t = fm_util_trim(s);
            if (is_key_text(t))
                err_at(&el, lineno, "`%s` has no value; expected `key = value`", clip(t));
            else
                err_at(&el, lineno,
                       "malformed line `%s`; expected `[section]`, `key = value` or a comment "
                       "starting with # or ;",
                       clip(t));
            continue;
        }
        *eq = '\0';
        char *key = fm_util_trim(s);
        if (!is_key_text(key)) {
            err_at(&el, lineno,
                   "malformed key `%s`; expected `key = value` with a key of letters, digits and "
                   "`_`",
                   clip(key));
            continue;
        }
        if (section_bad) continue; /* already reported the section */
        /* `train.lr = ...`: the --set spelling used inside a file */
        const char *kdot = strchr(key, '.');
        if (kdot) {
            char sec[FM_CONFIG_NAME_MAX];
            size_t sl = (size_t)(kdot - key);
            int dk = -1;
            if (sl < sizeof sec) {
                memcpy(sec, key, sl);
                sec[sl] = '\0';
                dk = find_key(sec, kdot + 1);
            }
            if (dk >= 0) {
                err_at(&el, lineno,
                       "key `%s` is written as section.key; in a file write `%s = ...` under [%s]",
                       key, schema[dk].key, schema[dk].section);
                continue;
            }
        }
        if (section < 0) {
            int k = -1;
            for (int i = 0; i < NKEYS && k < 0; i++)
                if (strcmp(schema[i].key, key) == 0) k = i;
            if (k >= 0)
                err_at(&el, lineno, "key `%s` is outside any section; put it under [%s]", key,
                       schema[k].section); /* a known key: short */
            else
                err_at(&el, lineno,
                       "key `%s` is outside any section; expected a `[section]` header first",
                       clip(key));
            continue;
        }
        int k = find_key(sections[section], key);
        if (k < 0) {
            suggest_key(sections[section], key, sugg, sizeof sugg);
            err_at(&el, lineno, "unknown key `%s.%s`%s", sections[section], clip(key), sugg);
            continue;
        }
        const entry *e = &schema[k];
        if (first_line[k]) {
            err_at(&el, lineno, "duplicate key `%s.%s` (first set on line %d)", e->section, e->key,
                   first_line[k]);
            continue;
        }
        first_line[k] = lineno;
        const char *serr = NULL;
        char *value = split_value(eq + 1, 1, &serr);
        if (!value) {
            err_at(&el, lineno, "%s.%s: %s", e->section, e->key, serr);
            continue;
        }
        if (parse_value(cfg, e, value, why, sizeof why))
            err_at(&el, lineno, "%s.%s = `%s`: %s", e->section, e->key, clip(value), why);
    }
    free(buf);

    if (el.n == 0) {
        free(el.msg.s);
        if (cfg->run_name[0] == '\0') name_from_path(source, cfg->run_name, sizeof cfg->run_name);
        return NULL;
    }
    if (el.n > MAX_REPORTED)
        sb_add(&el.msg, "\n%s: %d more errors not shown", source, el.n - MAX_REPORTED);
    fm_status st = el.msg.failed ? FM_ERR(FM_ERR_CONFIG, "%s: invalid parameter file", source)
                                 : FM_ERR(FM_ERR_CONFIG, "%s", el.msg.s);
    free(el.msg.s);
    return st;
}

fm_status fm_config_load(fm_config *cfg, const char *path)
{
    char *text = NULL;
    size_t len = 0;
    fm_status st = fm_util_read_file(path, &text, &len);
    if (st) {
        if (fm_status_code(st) == FM_ERR_NOMEM)
            return fm_status_trace(st, __FILE__, __LINE__, __func__);
        fm_status cst = FM_ERR(FM_ERR_CONFIG, "parameter file: %s", fm_status_message(st));
        fm_status_free(&st);
        return cst;
    }
    st = fm_config_parse(cfg, path, text, len);
    free(text);
    FM_TRY(st);
    return NULL;
}

fm_status fm_config_set(fm_config *cfg, const char *assignment)
{
    const char *eq = strchr(assignment, '=');
    const char *dot = strchr(assignment, '.');
    if (!eq || !dot || dot > eq)
        return FM_ERR(FM_ERR_CONFIG,
                      "--set %s: expected section.key=value (e.g. --set train.lr=3e-4)",
                      assignment);
    char section[FM_CONFIG_NAME_MAX], key[FM_CONFIG_NAME_MAX];
    size_t slen = (size_t)(dot - assignment), klen = (size_t)(eq - dot - 1);
    if (slen >= sizeof section || klen >= sizeof key)
        return FM_ERR(FM_ERR_CONFIG, "--set %.60s...: the key name is too long", assignment);
    memcpy(section, assignment, slen);
    section[slen] = '\0';
    memcpy(key, dot + 1, klen);
    key[klen] = '\0';
    fm_util_trim(section);
    fm_util_trim(key);
    char sugg[300], why[512];
    if (find_section(section) < 0) {
        suggest_key(section, key, sugg, sizeof sugg);
        if (!sugg[0]) suggest_section(section, sugg, sizeof sugg);
        return FM_ERR(FM_ERR_CONFIG, "--set %s.%s: unknown section `[%s]`%s", section, key, section,
                      sugg);
    }
    int k = find_key(section, key);
    if (k < 0) {
        suggest_key(section, key, sugg, sizeof sugg);
        return FM_ERR(FM_ERR_CONFIG, "--set %s.%s: unknown key `%s.%s`%s", section, key, section,
                      key, sugg);
    }
    size_t vlen = strlen(eq + 1);
    char *value = malloc(vlen + 1);
    FM_CHECK_ALLOC(value, vlen + 1);
    memcpy(value, eq + 1, vlen + 1);
    const char *serr = NULL;
    char *v = split_value(value, 0, &serr);
    fm_status st = NULL;
    if (!v)
        st = FM_ERR(FM_ERR_CONFIG, "--set %s.%s: %s", section, key, serr);
    else if (parse_value(cfg, &schema[k], v, why, sizeof why))
        st = FM_ERR(FM_ERR_CONFIG, "--set %s.%s=%s: %s", section, key, clip(v), why);
    free(value);
    return st;
}

void fm_config_defaults(fm_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    char why[512];
    for (int i = 0; i < NKEYS; i++)
        if (schema[i].def) (void)parse_value(cfg, &schema[i], schema[i].def, why, sizeof why);
}

fm_status fm_config_check_schema(void)
{
    fm_config *cfg = calloc(1, sizeof *cfg);
    FM_CHECK_ALLOC(cfg, sizeof *cfg);
    char why[512];
    fm_status st = NULL;
    for (int i = 0; i < NKEYS && !st; i++) {
        const entry *e = &schema[i];
        if (find_section(e->section) < 0)
            st = FM_ERR(FM_ERR_INTERNAL, "schema: %s.%s: section not listed", e->section, e->key);
        else if (find_key(e->section, e->key) != i)
            st = FM_ERR(FM_ERR_INTERNAL, "schema: %s.%s listed twice", e->section, e->key);
        else if (e->def && parse_value(cfg, e, e->def, why, sizeof why))
            st = FM_ERR(FM_ERR_INTERNAL, "schema: default `%s` of %s.%s: %s", e->def, e->section,
                        e->key, why);
        else if (!e->help || !e->help[0])
            st = FM_ERR(FM_ERR_INTERNAL, "schema: %s.%s has no help text", e->section, e->key);
    }
    free(cfg);
    if (st) return st;

    /* Every field of fm_config belongs to an entry: sorted by offset, the entries leave no gap
     * larger than alignment padding (a field added to the struct without a schema entry would). */
    size_t lo[NKEYS], hi[NKEYS];
    for (int i = 0; i < NKEYS; i++) {
        lo[i] = schema[i].offset;
        hi[i] = schema[i].offset + schema[i].size;
        if (schema[i].type == T_RESUME) /* also holds checkpoint_resume_path */
            hi[i] = offsetof(fm_config, checkpoint_resume_path) + SZ(checkpoint_resume_path);
        for (int j = i; j > 0 && lo[j - 1] > lo[j]; j--) { /* insertion sort by offset */
            size_t t = lo[j];
            lo[j] = lo[j - 1];
            lo[j - 1] = t;
            t = hi[j];
            hi[j] = hi[j - 1];
            hi[j - 1] = t;
        }
    }
    size_t end = 0;
    for (int i = 0; i < NKEYS; i++) {
        if (lo[i] < end)
            return FM_ERR(FM_ERR_INTERNAL, "schema: two entries share bytes %zu..%zu of fm_config",
                          lo[i], end);
        if (lo[i] - end >= sizeof(int64_t))
            return FM_ERR(FM_ERR_INTERNAL, "schema: bytes %zu..%zu of fm_config belong to no key",
                          end, lo[i]);
        end = hi[i];
    }
    if (sizeof(fm_config) - end >= sizeof(int64_t))
        return FM_ERR(FM_ERR_INTERNAL,
                      "schema: the fields after byte %zu of fm_config belong to no key", end);
    return NULL;
}

/* ---- validation --------------------------------------------------------------------------------
 */

/* Non-zero when the required key `e` holds its "never set" value. Required keys have ranges or
 * rules that exclude zero / the empty string, so zero means missing. */
static int is_unset(const fm_config *cfg, const entry *e)
{
    const void *p = cfield(cfg, e);
    switch (e->type) {
    case T_INT:
        return *(const int *)p == 0;
    case T_INT64:
        return *(const int64_t *)p == 0;
    case T_REAL:
        return *(const double *)p == 0.0;
    case T_NAME:
    case T_PATH:
    case T_HINTS:
        return ((const char *)p)[0] == '\0';
    default:
        return 0;
    }
}

/* Checks every single value against its entry (catches values set directly in the struct). */
static void check_value(const fm_config *cfg, const entry *e, sbuf *msg, int *n)
{
    char text[FM_CONFIG_PATH_MAX + 64], why[512];
    const void *p = cfield(cfg, e);
    switch (e->type) {
    case T_INT:
        snprintf(text, sizeof text, "%d", *(const int *)p);
        break;
    case T_INT64:
        snprintf(text, sizeof text, "%" PRId64, *(const int64_t *)p);
        break;
    case T_REAL:
        format_real(*(const double *)p, text, sizeof text);
        break;
    case T_ENUM: {
        int v = *(const int *)p, nv = 0;
        while (e->values[nv]) nv++;
        if (v >= 0 && v < nv) return;
        snprintf(text, sizeof text, "%d", v);
        break;
    }
    case T_NAME:
    case T_PATH:
    case T_HINTS:
        if (memchr(p, '\0', e->size) == NULL) {
            snprintf(why, sizeof why, "not NUL-terminated");
            goto bad;
        }
        fm_util_strlcpy(text, p, sizeof text);
        break;
    case T_RESUME:
        if (cfg->checkpoint_resume == FM_RESUME_AUTO || cfg->checkpoint_resume == FM_RESUME_NEVER)
            return;
        if (cfg->checkpoint_resume != FM_RESUME_PATH) {
            snprintf(text, sizeof text, "%d", (int)cfg->checkpoint_resume);
            break;
        }
        if (cfg->checkpoint_resume_path[0] == '\0') {
            snprintf(why, sizeof why, "resume from a path, but the path is empty");
            goto bad;
        }
        return;
    case T_SEED:
        return;
    }
    {
        fm_config *scratch = malloc(sizeof *scratch);
        if (!scratch) return;
        int bad = parse_value(scratch, e, text, why, sizeof why);
        free(scratch);
        if (!bad) return;
    }
bad:
    (*n)++;
    sb_add(msg, "%s%s.%s = `%s`: %s", *n > 1 ? "\n" : "", e->section, e->key,
           e->type == T_RESUME ? "?" : text, why);
}

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static void
rule(sbuf *msg, int *n, const char *fmt, ...)
{
    (*n)++;
    if (*n > 1) sb_add(msg, "\n");
    va_list ap;
    va_start(ap, fmt);
    sb_vadd(msg, fmt, ap);
    va_end(ap);
}

fm_status fm_config_validate(const fm_config *cfg)
{
    sbuf msg = {NULL, 0, 0, 0};
    int n = 0;
    for (int i = 0; i < NKEYS; i++) {
        const entry *e = &schema[i];
        if (!e->def && is_unset(cfg, e)) {
            char expected[256];
            describe_expected(e, expected, sizeof expected);
            rule(&msg, &n,
                 "missing required key `%s.%s` (%s; %s): add `%s = ...` under [%s] or pass --set "
                 "%s.%s=...",
                 e->section, e->key, e->help, expected, e->key, e->section, e->section, e->key);
            continue;
        }
        check_value(cfg, e, &msg, &n);
    }
    if (n == 0) {
        /* cross-key rules, checked once every single value is known to be valid */
        if (cfg->model_d_model % cfg->model_n_head != 0)
            rule(&msg, &n,
                 "model.d_model = %d is not a multiple of model.n_head = %d; expected d_model = "
                 "n_head x head size",
                 cfg->model_d_model, cfg->model_n_head);
        if (cfg->model_n_kv_head > 0 && cfg->model_n_head % cfg->model_n_kv_head != 0)
            rule(&msg, &n,
                 "model.n_kv_head = %d does not divide model.n_head = %d; expected a divisor of "
                 "n_head (each key/value head serves n_head / n_kv_head query heads), or 0",
                 cfg->model_n_kv_head, cfg->model_n_head);
        if (cfg->train_min_lr > cfg->train_lr) {
            char a[40], b[40];
            format_real(cfg->train_min_lr, a, sizeof a);
            format_real(cfg->train_lr, b, sizeof b);
            rule(&msg, &n, "train.min_lr = %s is larger than train.lr = %s; expected min_lr <= lr",
                 a, b);
        }
        if (cfg->train_warmup_steps > cfg->train_steps)
            rule(&msg, &n,
                 "train.warmup_steps = %" PRId64 " is larger than train.steps = %" PRId64
                 "; expected warmup_steps <= steps",
                 cfg->train_warmup_steps, cfg->train_steps);
        else if (cfg->train_schedule == FM_SCHED_WSD) {
            int64_t decay = (int64_t)llround(cfg->train_decay_fraction * (double)cfg->train_steps);
            if (cfg->train_warmup_steps + decay > cfg->train_steps) {
                char a[40];
                format_real(cfg->train_decay_fraction, a, sizeof a);
                rule(&msg, &n,
                     "train.warmup_steps = %" PRId64 " plus the wsd decay of %" PRId64
                     " steps (train.decay_fraction = %s of train.steps = %" PRId64
                     ") exceeds the run; expected warmup_steps + decay <= steps",
                     cfg->train_warmup_steps, decay, a, cfg->train_steps);
            }
        }
        if (cfg->train_eval_batches > 0 && cfg->train_eval_windows != FM_CONFIG_EVAL_WINDOWS)
            rule(&msg, &n,
                 "train.eval_batches = %" PRId64 " (the old form) and train.eval_windows = %" PRId64
                 " are both set; expected only train.eval_windows (eval_batches %" PRId64
                 " x micro_batch %d = %" PRId64 " windows)",
                 cfg->train_eval_batches, cfg->train_eval_windows, cfg->train_eval_batches,
                 cfg->train_micro_batch, fm_config_eval_windows(cfg));
        if (cfg->model_vocab_size == 1)
            rule(&msg, &n, "model.vocab_size = 1; expected 0 (from the dataset) or at least 2");
        if (cfg->run_name[0] == '\0' && cfg->run_dir[0] == '\0')
            rule(&msg, &n,
                 "run.name and run.dir are both empty; expected a run name (it defaults to the "
                 "parameter file's name) or an explicit run.dir");
    }
    if (n == 0) {
        free(msg.s);
        return NULL;
    }
    fm_status st = msg.failed ? FM_ERR(FM_ERR_CONFIG, "invalid configuration")
                              : FM_ERR(FM_ERR_CONFIG, "%s", msg.s);
    free(msg.s);
    return st;
}

const char *fm_config_run_dir(const fm_config *cfg, char *buf, size_t bufsize)
{
    if (cfg->run_dir[0]) return cfg->run_dir;
    snprintf(buf, bufsize, "runs/%s", cfg->run_name);
    return buf;
}

const char *fm_config_arch(const fm_config *cfg)
{
    return arch_values[cfg->model_arch];
}

int64_t fm_config_eval_windows(const fm_config *cfg)
{
    int64_t b = cfg->train_eval_batches, mb = cfg->train_micro_batch > 0 ? cfg->train_micro_batch : 1;
    if (b <= 0) return cfg->train_eval_windows;
    return b > (int64_t)UINT32_MAX / mb ? (int64_t)UINT32_MAX : b * mb;
}

const char *fm_config_val_path(const fm_config *cfg)
{
    return cfg->data_val[0] ? cfg->data_val : cfg->data_train;
}

/* ---- writing
 * ------------------------------------------------------------------------------------- */

/* Does a text value need quotes to read back unchanged? */
static int needs_quotes(const char *s)
{
    if (!*s) return 1;
    if (s[0] == '"' || isspace((unsigned char)s[0]) || isspace((unsigned char)s[strlen(s) - 1]))
        return 1;
    for (const char *p = s; *p; p++)
        if ((*p == '#' || *p == ';') && (p == s || p[-1] == ' ' || p[-1] == '\t')) return 1;
    return 0;
}

static void write_text(sbuf *b, const char *s)
{
    if (!needs_quotes(s)) {
        sb_add(b, "%s", s);
        return;
    }
    sb_add(b, "\"");
    for (const char *p = s; *p; p++) {
        if (*p == '"' || *p == '\\')
            sb_add(b, "\\%c", *p);
        else
            sb_add(b, "%c", *p);
    }
    sb_add(b, "\"");
}

/* The value of entry `e` in `cfg`, as it is written in a file. */
static void value_text(const fm_config *cfg, const entry *e, sbuf *b)
{
    const void *p = cfield(cfg, e);
    char num[64];
    switch (e->type) {
    case T_INT:
        sb_add(b, "%d", *(const int *)p);
        return;
    case T_INT64:
        sb_add(b, "%" PRId64, *(const int64_t *)p);
        return;
    case T_SEED:
        sb_add(b, "%" PRIu64, *(const uint64_t *)p);
        return;
    case T_REAL:
        format_real(*(const double *)p, num, sizeof num);
        sb_add(b, "%s", num);
        return;
    case T_ENUM: {
        int v = *(const int *)p, nv = 0;
        while (e->values[nv]) nv++;
        sb_add(b, "%s", (v >= 0 && v < nv) ? e->values[v] : "?");
        return;
    }
    case T_NAME:
    case T_PATH:
    case T_HINTS:
        write_text(b, (const char *)p);
        return;
    case T_RESUME:
        if (cfg->checkpoint_resume == FM_RESUME_AUTO)
            sb_add(b, "auto");
        else if (cfg->checkpoint_resume == FM_RESUME_NEVER)
            sb_add(b, "never");
        else if (strcmp(cfg->checkpoint_resume_path, "auto") == 0 ||
                 strcmp(cfg->checkpoint_resume_path, "never") == 0)
            sb_add(b, "./%s", cfg->checkpoint_resume_path); /* a file literally named auto/never */
        else
            write_text(b, cfg->checkpoint_resume_path);
        return;
    }
}

static void write_config(const fm_config *cfg, sbuf *b)
{
    fm_config *def = malloc(sizeof *def);
    if (def) fm_config_defaults(def);
    sb_add(b, "# every key with its effective value; see docs/parameters.md\n");
    const char *prev = NULL;
    for (int i = 0; i < NKEYS; i++) {
        const entry *e = &schema[i];
        if (!prev || strcmp(prev, e->section) != 0) {
            sb_add(b, "%s[%s]\n", prev ? "\n" : "", e->section);
            prev = e->section;
        }
        if (!e->def && is_unset(cfg, e)) { /* keeps the text loadable; validation reports it */
            sb_add(b, "# %s =  (required, not set)\n", e->key);
            continue;
        }
        sbuf v = {NULL, 0, 0, 0}, d = {NULL, 0, 0, 0};
        value_text(cfg, e, &v);
        if ((e->flags & OLD_KEY) && def) {
            value_text(def, e, &d);
            int at_default = v.s && d.s && strcmp(v.s, d.s) == 0;
            if (v.failed || d.failed) b->failed = 1;
            free(d.s);
            d = (sbuf){NULL, 0, 0, 0};
            if (at_default) { /* an old key at its default is not written */
                free(v.s);
                continue;
            }
        }
        sb_add(b, "%s = %s", e->key, v.s ? v.s : "");
        if (!e->def) {
            sb_add(b, "  # required");
        } else if (def) {
            value_text(def, e, &d);
            if (v.s && d.s && strcmp(v.s, d.s) != 0) sb_add(b, "  # default: %s", d.s);
        }
        sb_add(b, "\n");
        if (v.failed || d.failed) b->failed = 1;
        free(v.s);
        free(d.s);
    }
    free(def);
}

void fm_config_write(const fm_config *cfg, FILE *out)
{
    sbuf b = {NULL, 0, 0, 0};
    write_config(cfg, &b);
    if (b.s) fputs(b.s, out);
    free(b.s);
}

fm_status fm_config_to_string(const fm_config *cfg, char **text)
{
    *text = NULL;
    sbuf b = {NULL, 0, 0, 0};
    write_config(cfg, &b);
    if (b.failed || !b.s) {
        free(b.s);
        return FM_ERR(FM_ERR_NOMEM, "out of memory writing the effective configuration");
    }
    *text = b.s;
    return NULL;
}

/* ---- docs/parameters.md ---------------------------------------------------------------------- */

static void doc_allowed(const entry *e, char *buf, size_t n)
{
    char lo[40], hi[40];
    switch (e->type) {
    case T_INT:
    case T_INT64:
        snprintf(buf, n, "%s%" PRId64 " … %" PRId64, (e->flags & POW2) ? "power of two, " : "",
                 e->imin, e->imax);
        return;
    case T_REAL:
        format_real(e->rmin, lo, sizeof lo);
        format_real(e->rmax, hi, sizeof hi);
        snprintf(buf, n, "%c%s, %s%c", (e->flags & LO_OPEN) ? '(' : '[', lo, hi,
                 (e->flags & HI_OPEN) ? ')' : ']');
        return;
    case T_ENUM: {
        size_t off = 0;
        buf[0] = '\0';
        for (int i = 0; e->values[i] && off < n; i++)
            off += (size_t)snprintf(buf + off, n - off, "%s`%s`", i ? ", " : "", e->values[i]);
        return;
    }
    case T_NAME:
        snprintf(buf, n, "`A-Z a-z 0-9 . _ -`, ≤ %zu bytes", e->size - 1);
        return;
    case T_PATH:
        snprintf(buf, n, "path, ≤ %zu bytes", e->size - 1);
        return;
    case T_HINTS:
        snprintf(buf, n, "`key=value,...`, ≤ %zu bytes", e->size - 1);
        return;
    case T_SEED:
        snprintf(buf, n, "0 … 2^64−1");
        return;
    case T_RESUME:
        snprintf(buf, n, "`auto`, `never`, path");
        return;
    }
}

static const char *doc_type(const entry *e)
{
    switch (e->type) {
    case T_INT:
        return "int";
    case T_INT64:
        return "int64";
    case T_REAL:
        return "real";
    case T_NAME:
        return "name";
    case T_PATH:
        return "path";
    case T_HINTS:
        return "hints";
    case T_ENUM:
        return "enum";
    case T_SEED:
        return "uint64";
    case T_RESUME:
        return "resume";
    }
    return "?";
}

void fm_config_write_docs(FILE *out)
{
    fputs(
        "<!-- Generated by fm_paramdoc from the schema table in src/config/config.c; do not edit.\n"
        "     Regenerate: build/<preset>/tests/config/fm_paramdoc > docs/parameters.md -->\n"
        "# Parameter files\n"
        "\n"
        "`fmtrain train PARAMS.ini` reads a parameter file in INI syntax:\n"
        "\n"
        "```ini\n"
        "# a comment; `; comments` work too\n"
        "[train]\n"
        "lr = 6e-4          # an inline comment starts with # or ; after whitespace\n"
        "[data]\n"
        "train = \"data/my file.h5\"   # quotes keep spaces, `#` and `;` "
        "(write \\\" and \\\\ inside)\n"
        "```\n"
        "\n"
        "Every key belongs to one section; sections may appear in any order (and more than once), "
        "but a key may be set only once per file. Unknown sections or keys, values of the wrong "
        "type or outside the allowed range, duplicate keys and missing required keys are errors "
        "that name the file and line (and the closest known key for a misspelt one); fmtrain never "
        "falls back to a default silently.\n"
        "\n"
        "`--set section.key=value` on the command line overrides one value after the file is read "
        "(repeatable; the last one wins) and is checked the same way. `fmtrain train PARAMS.ini "
        "--dry-run` validates everything and prints the effective configuration: every key with "
        "its value, marking the ones that differ from the default. The same text is written into "
        "the run directory, and it reads back as exactly the same configuration.\n"
        "\n",
        out);
    fputs("Required keys (no default): ", out);
    int first = 1;
    for (int i = 0; i < NKEYS; i++) {
        if (schema[i].def) continue;
        fprintf(out, "%s`%s.%s`", first ? "" : ", ", schema[i].section, schema[i].key);
        first = 0;
    }
    fputs(
        ".\n\n"
        "Types: `int` and `int64` are decimal integers (no exponent); `real` is a decimal or "
        "exponent number (`6e-4`); `uint64` is 0 … 18446744073709551615; `enum` is one of the "
        "listed words; `name` is a file-name-safe word; `path` is any text (relative paths are "
        "relative to the working directory of the launch); `hints` is a comma-separated list of "
        "`key=value`; `resume` is `auto`, `never` or a checkpoint path (write `./auto` for a file "
        "named `auto`). Ranges: `[a, b]` includes both ends, `(a, b]` excludes `a`.\n",
        out);
    char allowed[256];
    const char *prev = NULL;
    for (int i = 0; i < NKEYS; i++) {
        const entry *e = &schema[i];
        if (!prev || strcmp(prev, e->section) != 0) {
            fprintf(out, "\n## [%s]\n\n", e->section);
            fputs("| key | type | default | allowed | meaning |\n", out);
            fputs("|-----|------|---------|---------|---------|\n", out);
            prev = e->section;
        }
        doc_allowed(e, allowed, sizeof allowed);
        char def[64];
        if (!e->def)
            snprintf(def, sizeof def, "*required*");
        else if (!e->def[0])
            snprintf(def, sizeof def, "(empty)");
        else
            snprintf(def, sizeof def, "`%s`", e->def);
        fprintf(out, "| `%s.%s` | %s | %s | %s | %s |\n", e->section, e->key, doc_type(e), def,
                allowed, e->help);
    }
    fputs(
        "\n## Rules across keys\n\n"
        "Checked after the file and every `--set` are applied:\n\n"
        "- `model.d_model` is a multiple of `model.n_head`.\n"
        "- `model.n_kv_head` is 0 or divides `model.n_head`.\n"
        "- The model family's own rules, checked when the model is built (also by `--dry-run`): "
        "`arch = gpt2` takes only the defaults of `n_kv_head`, `ffn_dim`, `rope_theta`, `norm_eps` "
        "and `tie_embeddings` (docs/model.md); `arch = llama` needs an even head size "
        "`d_model / n_head` (RoPE rotates pairs).\n"
        "- `train.min_lr` ≤ `train.lr`.\n"
        "- `train.warmup_steps` ≤ `train.steps`; with `schedule = wsd`, warmup plus the decay "
        "(`round(decay_fraction × steps)` steps) fit in `train.steps`.\n"
        "- `train.eval_batches` (old key) > 0 only with `train.eval_windows` at its default.\n"
        "- `model.vocab_size` is 0 (take it from the dataset) or at least 2.\n"
        "\n"
        "## Derived values\n\n"
        "- Run directory: `run.dir`, or `runs/<run.name>` (relative to the working directory) when "
        "`run.dir` is empty (`fm_config_run_dir`).\n"
        "- Run name: `run.name`, or the parameter file's name without directory and extension "
        "(`inputs/tiny-cpu.ini` → `tiny-cpu`) when it is empty.\n"
        "- Validation data: `data.val`, or `data.train` when empty (`fm_config_val_path`).\n"
        "- Validation set: `train.eval_windows` windows, or `train.eval_batches × train.micro_batch` "
        "when the old key `train.eval_batches` is > 0 (`fm_config_eval_windows`); docs/dataset-format.md "
        "says which windows.\n",
        out);
}

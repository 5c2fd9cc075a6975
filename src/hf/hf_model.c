/* hf_model.c — Hugging Face weights and configuration files <-> fmtrain's parameter layout
 * (hf_model.h). The per-family part is the table `families` below: config.json's fields, the model
 * prefix older files omit, buffers to ignore and tied tensors. Everything else reads the model's
 * tensor table.
 *
 * Adding a family: its tensor specs already carry the Hugging Face names and hf_transposed; add a row
 * with write_config (every config.json field that changes the computation), read_config refusing what
 * the family does not compute (each refusal names the field), is_buffer for the non-parameter tensors
 * older files hold, and the tied copies. If a family's arithmetic differed from transformers' in a
 * layout (e.g. RoPE on interleaved pairs instead of rotate_half), a per-tensor permutation hook in
 * the row would be applied in export_fill and after reading in fm_hf_import_model; GPT-2 and Llama
 * need none.
 */
#define _POSIX_C_SOURCE 200809L
#include "hf/hf_model.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/util.h"
#include "hf/json.h"

#define PATH_MAX_ 4096
#define CONFIG_MAX_BYTES ((size_t)1 << 20)
#define INDEX_MAX_BYTES ((size_t)64 << 20)

/* ---- the per-family rows ---------------------------------------------------------------------- */

typedef struct hf_family {
    const char *arch;         /* fmtrain's family ([model] arch) */
    const char *model_type;   /* config.json "model_type" */
    const char *architecture; /* config.json "architectures"[0] */
    const char *prefix;       /* the prefix of every parameter name that files of the base model omit */
    /* config.json for shape s */
    void (*write_config)(FILE *out, const fm_model_shape *s, const fm_hf_export_opts *o, const char *dtype);
    /* config.json -> shape (arch, sizes), refusing what the family does not compute */
    fm_status (*read_config)(const fm_json *root, const char *path, fm_model_shape *s);
    /* 1 for a name (without the prefix) that is a buffer, not a parameter */
    int (*is_buffer)(const char *name);
    /* tied tensors: {copy, parameter} pairs (full names), NULL-terminated */
    const char *const *tied;
} hf_family;

static void put_ids(FILE *out, const fm_hf_export_opts *o)
{
    if (o->bos_id >= 0) fprintf(out, "  \"bos_token_id\": %" PRId64 ",\n", o->bos_id);
    if (o->eos_id >= 0) fprintf(out, "  \"eos_token_id\": %" PRId64 ",\n", o->eos_id);
}

/* GPT-2: every field of GPT2Config that changes the computation, with the values fmtrain computes. */
static void gpt2_write_config(FILE *out, const fm_model_shape *s, const fm_hf_export_opts *o, const char *dtype)
{
    fprintf(out, "{\n  \"architectures\": [\"GPT2LMHeadModel\"],\n  \"model_type\": \"gpt2\",\n");
    fprintf(out, "  \"activation_function\": \"gelu_new\",\n");
    fprintf(out, "  \"attn_pdrop\": 0.0,\n  \"embd_pdrop\": 0.0,\n  \"resid_pdrop\": 0.0,\n");
    fprintf(out, "  \"summary_first_dropout\": 0.0,\n");
    put_ids(out, o);
    fprintf(out, "  \"initializer_range\": 0.02,\n  \"layer_norm_epsilon\": 1e-05,\n");
    fprintf(out, "  \"n_ctx\": %d,\n  \"n_embd\": %d,\n  \"n_head\": %d,\n  \"n_inner\": null,\n", s->max_seq_len,
            s->d_model, s->n_head);
    fprintf(out, "  \"n_layer\": %d,\n  \"n_positions\": %d,\n", s->n_layer, s->max_seq_len);
    fprintf(out, "  \"reorder_and_upcast_attn\": false,\n  \"scale_attn_by_inverse_layer_idx\": false,\n");
    fprintf(out, "  \"scale_attn_weights\": true,\n  \"tie_word_embeddings\": true,\n");
    fprintf(out, "  \"torch_dtype\": \"%s\",\n  \"use_cache\": true,\n  \"vocab_size\": %d\n}\n", dtype,
            s->vocab_size);
}

/* An optional member with a required value: absent is fine (the default is what fmtrain computes). */
static fm_status want_bool_if(const fm_json *root, const char *path, const char *key, int want)
{
    const fm_json *v = fm_json_get(root, key);
    if (!v) return NULL;
    char w[600];
    snprintf(w, sizeof w, "%s: %s", path, key);
    int b;
    FM_TRY(fm_json_want_bool(v, w, &b));
    if (b != want)
        return FM_ERR(FM_ERR_INPUT, "%s = %s: fmtrain's model computes %s = %s only; this model cannot be imported",
                      w, b ? "true" : "false", key, want ? "true" : "false");
    return NULL;
}

static fm_status want_size(const fm_json *root, const char *path, const char *key, int *out)
{
    char w[600];
    snprintf(w, sizeof w, "%s: %s", path, key);
    int64_t v;
    FM_TRY(fm_json_want_int(fm_json_get(root, key), 1, INT32_MAX, w, &v));
    *out = (int)v;
    return NULL;
}

static fm_status gpt2_read_config(const fm_json *root, const char *path, fm_model_shape *s)
{
    fm_util_strlcpy(s->arch, "gpt2", sizeof s->arch);
    FM_TRY(want_size(root, path, "n_layer", &s->n_layer));
    FM_TRY(want_size(root, path, "n_head", &s->n_head));
    FM_TRY(want_size(root, path, "n_embd", &s->d_model));
    FM_TRY(want_size(root, path, "n_positions", &s->max_seq_len));
    FM_TRY(want_size(root, path, "vocab_size", &s->vocab_size));
    char w[600];
    const fm_json *v = fm_json_get(root, "activation_function");
    if (v) {
        snprintf(w, sizeof w, "%s: activation_function", path);
        FM_TRY(fm_json_want(v, FM_JSON_STRING, w));
        if (strcmp(v->str, "gelu_new") && strcmp(v->str, "gelu_pytorch_tanh"))
            return FM_ERR(FM_ERR_INPUT, "%s = \"%.40s\": fmtrain's GPT-2 computes the tanh GELU (\"gelu_new\" or "
                          "\"gelu_pytorch_tanh\") only; this model cannot be imported exactly", w, v->str);
    }
    v = fm_json_get(root, "layer_norm_epsilon");
    if (v) {
        double eps;
        snprintf(w, sizeof w, "%s: layer_norm_epsilon", path);
        FM_TRY(fm_json_want_num(v, w, &eps));
        if (fabs(eps - 1e-5) > 1e-12)
            return FM_ERR(FM_ERR_INPUT, "%s = %g: fmtrain's GPT-2 uses LayerNorm eps 1e-5 only", w, eps);
    }
    v = fm_json_get(root, "n_inner");
    if (v && v->type != FM_JSON_NULL) {
        int64_t inner;
        snprintf(w, sizeof w, "%s: n_inner", path);
        FM_TRY(fm_json_want_int(v, 0, INT64_MAX, w, &inner));
        if (inner != 4 * (int64_t)s->d_model)
            return FM_ERR(FM_ERR_INPUT, "%s = %" PRId64 ": fmtrain's GPT-2 has an MLP of 4 x n_embd = %" PRId64
                          " (n_inner null or that value)", w, inner, 4 * (int64_t)s->d_model);
    }
    FM_TRY(want_bool_if(root, path, "scale_attn_weights", 1));
    FM_TRY(want_bool_if(root, path, "scale_attn_by_inverse_layer_idx", 0));
    FM_TRY(want_bool_if(root, path, "add_cross_attention", 0));
    FM_TRY(want_bool_if(root, path, "tie_word_embeddings", 1));
    return NULL;
}

/* GPT-2's causal-mask buffers: "h.<l>.attn.bias" and "h.<l>.attn.masked_bias" in older files. */
static int gpt2_is_buffer(const char *name)
{
    if (strncmp(name, "h.", 2) != 0) return 0;
    const char *p = name + 2;
    if (!(*p >= '0' && *p <= '9')) return 0;
    while (*p >= '0' && *p <= '9') p++;
    return strcmp(p, ".attn.bias") == 0 || strcmp(p, ".attn.masked_bias") == 0;
}

static const char *const gpt2_tied[] = {"lm_head.weight", "transformer.wte.weight", NULL};

/* A double as JSON: the shortest of %.15g / %.17g that reads back exactly. */
static void put_double(FILE *out, double v)
{
    char b[40];
    snprintf(b, sizeof b, "%.15g", v);
    if (strtod(b, NULL) != v) snprintf(b, sizeof b, "%.17g", v);
    if (!strpbrk(b, ".eEn")) strcat(b, ".0"); /* a float in Python's json, as transformers writes it */
    fputs(b, out);
}

/* Llama: LlamaConfig's fields (transformers 4.40) with the values fmtrain computes. */
static void llama_write_config(FILE *out, const fm_model_shape *s, const fm_hf_export_opts *o, const char *dtype)
{
    fprintf(out, "{\n  \"architectures\": [\"LlamaForCausalLM\"],\n  \"model_type\": \"llama\",\n");
    fprintf(out, "  \"attention_bias\": false,\n  \"attention_dropout\": 0.0,\n");
    put_ids(out, o);
    fprintf(out, "  \"hidden_act\": \"silu\",\n  \"hidden_size\": %d,\n  \"initializer_range\": 0.02,\n", s->d_model);
    fprintf(out, "  \"intermediate_size\": %d,\n  \"max_position_embeddings\": %d,\n", s->ffn_dim, s->max_seq_len);
    fprintf(out, "  \"num_attention_heads\": %d,\n  \"num_hidden_layers\": %d,\n  \"num_key_value_heads\": %d,\n",
            s->n_head, s->n_layer, s->n_kv_head);
    fprintf(out, "  \"pretraining_tp\": 1,\n  \"rms_norm_eps\": ");
    put_double(out, s->norm_eps);
    fprintf(out, ",\n  \"rope_scaling\": null,\n  \"rope_theta\": ");
    put_double(out, s->rope_theta);
    fprintf(out, ",\n  \"tie_word_embeddings\": %s,\n", s->tie_embeddings == FM_TIE_YES ? "true" : "false");
    fprintf(out, "  \"torch_dtype\": \"%s\",\n  \"use_cache\": true,\n  \"vocab_size\": %d\n}\n", dtype,
            s->vocab_size);
}

/* An optional number, `dflt` when absent. */
static fm_status num_or(const fm_json *root, const char *path, const char *key, double dflt, double *out)
{
    const fm_json *v = fm_json_get(root, key);
    if (!v) {
        *out = dflt;
        return NULL;
    }
    char w[600];
    snprintf(w, sizeof w, "%s: %s", path, key);
    return fm_json_want_num(v, w, out);
}

static fm_status llama_read_config(const fm_json *root, const char *path, fm_model_shape *s)
{
    fm_util_strlcpy(s->arch, "llama", sizeof s->arch);
    FM_TRY(want_size(root, path, "num_hidden_layers", &s->n_layer));
    FM_TRY(want_size(root, path, "num_attention_heads", &s->n_head));
    FM_TRY(want_size(root, path, "hidden_size", &s->d_model));
    FM_TRY(want_size(root, path, "max_position_embeddings", &s->max_seq_len));
    FM_TRY(want_size(root, path, "vocab_size", &s->vocab_size));
    FM_TRY(want_size(root, path, "intermediate_size", &s->ffn_dim));
    s->n_kv_head = s->n_head; /* LlamaConfig's default */
    if (fm_json_get(root, "num_key_value_heads")) FM_TRY(want_size(root, path, "num_key_value_heads", &s->n_kv_head));
    FM_TRY(num_or(root, path, "rms_norm_eps", 1e-6, &s->norm_eps)); /* LlamaConfig's defaults */
    FM_TRY(num_or(root, path, "rope_theta", 10000.0, &s->rope_theta));
    if (s->norm_eps <= 0 || s->rope_theta <= 0)
        return FM_ERR(FM_ERR_INPUT, "%s: rms_norm_eps = %g and rope_theta = %g must be positive", path, s->norm_eps,
                      s->rope_theta);
    int tied = 0;
    const fm_json *t = fm_json_get(root, "tie_word_embeddings");
    if (t) {
        char w[600];
        snprintf(w, sizeof w, "%s: tie_word_embeddings", path);
        FM_TRY(fm_json_want_bool(t, w, &tied));
    }
    s->tie_embeddings = tied ? FM_TIE_YES : FM_TIE_NO;
    char w[600];
    const fm_json *v = fm_json_get(root, "hidden_act");
    if (v) {
        snprintf(w, sizeof w, "%s: hidden_act", path);
        FM_TRY(fm_json_want(v, FM_JSON_STRING, w));
        if (strcmp(v->str, "silu") != 0)
            return FM_ERR(FM_ERR_INPUT, "%s = \"%.40s\": fmtrain's Llama computes the SwiGLU MLP with silu only; this "
                          "model cannot be imported exactly", w, v->str);
    }
    v = fm_json_get(root, "rope_scaling");
    if (v && v->type != FM_JSON_NULL)
        return FM_ERR(FM_ERR_INPUT, "%s: rope_scaling is set (byte %zu); fmtrain's Llama computes plain RoPE (theta "
                      "%g) only, so this model (e.g. Llama 3.1's scaled RoPE) cannot be imported exactly", path,
                      v->offset, s->rope_theta);
    v = fm_json_get(root, "head_dim");
    if (v && v->type != FM_JSON_NULL) {
        int64_t hd;
        snprintf(w, sizeof w, "%s: head_dim", path);
        FM_TRY(fm_json_want_int(v, 1, INT32_MAX, w, &hd));
        if (hd * s->n_head != s->d_model)
            return FM_ERR(FM_ERR_INPUT, "%s = %" PRId64 ": fmtrain's Llama has head_dim = hidden_size / "
                          "num_attention_heads = %d", w, hd, s->d_model / s->n_head);
    }
    FM_TRY(want_bool_if(root, path, "attention_bias", 0));
    FM_TRY(want_bool_if(root, path, "mlp_bias", 0));
    return NULL;
}

/* Older Llama files store the rotary inverse frequencies: "layers.<l>.self_attn.rotary_emb.inv_freq". */
static int llama_is_buffer(const char *name)
{
    if (strncmp(name, "layers.", 7) != 0) return 0;
    const char *p = name + 7;
    if (!(*p >= '0' && *p <= '9')) return 0;
    while (*p >= '0' && *p <= '9') p++;
    return strcmp(p, ".self_attn.rotary_emb.inv_freq") == 0;
}

static const char *const llama_tied[] = {"lm_head.weight", "model.embed_tokens.weight", NULL};

static const hf_family families[] = {
    {"gpt2", "gpt2", "GPT2LMHeadModel", "transformer.", gpt2_write_config, gpt2_read_config, gpt2_is_buffer,
     gpt2_tied},
    {"llama", "llama", "LlamaForCausalLM", "model.", llama_write_config, llama_read_config, llama_is_buffer,
     llama_tied},
};
#define N_FAMILIES ((int)(sizeof families / sizeof *families))

const char *fm_hf_model_families(char *buf, size_t n)
{
    size_t o = 0;
    buf[0] = 0;
    for (int i = 0; i < N_FAMILIES && o < n; i++)
        o += (size_t)snprintf(buf + o, n - o, "%s%s", i ? ", " : "", families[i].arch);
    return buf;
}

static const hf_family *family_by_arch(const char *arch)
{
    for (int i = 0; i < N_FAMILIES; i++)
        if (strcmp(families[i].arch, arch) == 0) return &families[i];
    return NULL;
}

/* ---- small file helpers ----------------------------------------------------------------------- */

static fm_status ensure_dir(const char *dir)
{
    struct stat sb;
    if (stat(dir, &sb) == 0) {
        if (!S_ISDIR(sb.st_mode)) return FM_ERR(FM_ERR_USAGE, "--output %s exists and is not a directory", dir);
        return NULL;
    }
    if (mkdir(dir, 0777) != 0) return FM_ERR(FM_ERR_IO, "cannot create directory %s: %s", dir, strerror(errno));
    return NULL;
}

/* Writes text[0..len) to path atomically (path.tmp, fsync, rename). */
static fm_status write_text_file(const char *path, const char *text, size_t len)
{
    char tmp[PATH_MAX_ + 8];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *fp = fopen(tmp, "wb");
    if (!fp) return FM_ERR(FM_ERR_IO, "cannot create %s: %s", tmp, strerror(errno));
    size_t w = fwrite(text, 1, len, fp);
    int bad = w != len || fflush(fp) != 0 || fsync(fileno(fp)) != 0;
    if (fclose(fp) != 0) bad = 1;
    if (bad || rename(tmp, path) != 0) {
        fm_status st = FM_ERR(FM_ERR_IO, "cannot write %s: %s", path, strerror(errno));
        unlink(tmp);
        return st;
    }
    return NULL;
}

/* ---- export ----------------------------------------------------------------------------------- */

typedef struct export_ctx {
    const float *params;
    const fm_model_tensor_info **info; /* per output tensor */
} export_ctx;

/* Tensor i in Hugging Face's layout: real rows only, transposed where HF stores the transpose. */
static fm_status export_fill(void *user, int i, float *dst, size_t numel)
{
    const export_ctx *c = user;
    const fm_model_tensor_info *t = c->info[i];
    const float *src = c->params + t->offset;
    const size_t cols = (size_t)t->shape[1];
    if (!t->hf_transposed) {
        memcpy(dst, src, numel * sizeof *dst); /* the first real rows, row-major */
        return NULL;
    }
    const size_t rows = (size_t)t->hf_shape[1]; /* real rows of ours = columns of HF's */
    for (size_t r = 0; r < rows; r++)
        for (size_t k = 0; k < cols; k++) dst[k * rows + r] = src[r * cols + k];
    return NULL;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

fm_status fm_hf_export_model(fm_model *m, const char *dir, const fm_hf_export_opts *o, FILE *log)
{
    const fm_model_shape *s = fm_model_get_shape(m);
    const hf_family *fam = family_by_arch(fm_model_arch(m));
    if (!fam) {
        char names[128];
        return FM_ERR(FM_ERR_USAGE, "model family '%s' has no Hugging Face mapping in this fmtrain; export "
                      "supports %s", fm_model_arch(m), fm_hf_model_families(names, sizeof names));
    }
    if (o->max_shard_bytes == 0) return FM_ERR(FM_ERR_USAGE, "the shard size must be positive");
    FM_TRY(ensure_dir(dir));
    const int nt = fm_model_num_tensors(m);
    size_t np = fm_model_num_params(m);
    float *params = malloc(np * sizeof *params);
    fm_st_out *out = calloc((size_t)nt, sizeof *out);
    const fm_model_tensor_info **info = calloc((size_t)nt, sizeof *info);
    int *shard_of = calloc((size_t)nt, sizeof *shard_of);
    char *cfg = NULL, *idx = NULL;
    size_t cfg_len = 0, idx_len = 0;
    fm_status st = NULL;
    if (!params || !out || !info || !shard_of) {
        st = FM_ERR(FM_ERR_NOMEM, "out of memory exporting %zu parameters", np);
        goto done;
    }
    FM_TRY_GOTO(st, done, fm_model_get_params(m, params));
    for (int i = 0; i < nt; i++) {
        const fm_model_tensor_info *t = fm_model_tensor(m, i);
        info[i] = t;
        out[i].name = t->hf_name;
        out[i].dtype = o->dtype;
        out[i].ndim = t->ndim;
        out[i].shape[0] = t->hf_shape[0];
        out[i].shape[1] = t->hf_shape[1];
    }
    /* Shards: tensors in table order, a new shard when the next tensor would pass the limit. */
    int nshards = 1;
    uint64_t in_shard = 0, total = 0;
    for (int i = 0; i < nt; i++) {
        uint64_t b = fm_safetensors_data_bytes(&out[i], 1);
        if (in_shard > 0 && in_shard + b > o->max_shard_bytes) {
            nshards++;
            in_shard = 0;
        }
        shard_of[i] = nshards - 1;
        in_shard += b;
        total += b;
    }
    int first = 0;
    for (int sh = 0; sh < nshards; sh++) {
        int last = first;
        while (last < nt && shard_of[last] == sh) last++;
        char path[PATH_MAX_ + 64];
        if (nshards == 1) snprintf(path, sizeof path, "%s/model.safetensors", dir);
        else snprintf(path, sizeof path, "%s/model-%05d-of-%05d.safetensors", dir, sh + 1, nshards);
        export_ctx sub = {params, info + first};
        FM_TRY_GOTO(st, done, fm_safetensors_write(path, out + first, last - first, export_fill, &sub));
        if (log) fprintf(log, "wrote %s (%d tensors, %s)\n", path, last - first, fm_st_dtype_name(o->dtype));
        first = last;
    }
    if (nshards > 1) {
        FILE *ms = open_memstream(&idx, &idx_len);
        if (!ms) {
            st = FM_ERR(FM_ERR_NOMEM, "out of memory");
            goto done;
        }
        /* weight_map sorted by name, as transformers writes it */
        const char **names = malloc((size_t)nt * sizeof *names);
        if (!names) {
            fclose(ms);
            st = FM_ERR(FM_ERR_NOMEM, "out of memory");
            goto done;
        }
        for (int i = 0; i < nt; i++) names[i] = info[i]->hf_name;
        qsort(names, (size_t)nt, sizeof *names, cmp_str);
        fprintf(ms, "{\n  \"metadata\": {\n    \"total_size\": %" PRIu64 "\n  },\n  \"weight_map\": {\n", total);
        for (int k = 0; k < nt; k++) {
            int i = 0;
            while (strcmp(info[i]->hf_name, names[k]) != 0) i++;
            fprintf(ms, "    ");
            fm_json_put_string(ms, names[k], strlen(names[k]));
            fprintf(ms, ": \"model-%05d-of-%05d.safetensors\"%s\n", shard_of[i] + 1, nshards, k + 1 < nt ? "," : "");
        }
        fprintf(ms, "  }\n}\n");
        free(names);
        if (fclose(ms) != 0) {
            st = FM_ERR(FM_ERR_NOMEM, "out of memory");
            goto done;
        }
        char path[PATH_MAX_ + 64];
        snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
        FM_TRY_GOTO(st, done, write_text_file(path, idx, idx_len));
        if (log) fprintf(log, "wrote %s (%d shards)\n", path, nshards);
    }
    /* config.json and generation_config.json */
    const char *dtype = o->dtype == FM_ST_F32 ? "float32" : o->dtype == FM_ST_BF16 ? "bfloat16" : "float16";
    FILE *ms = open_memstream(&cfg, &cfg_len);
    if (!ms) {
        st = FM_ERR(FM_ERR_NOMEM, "out of memory");
        goto done;
    }
    fam->write_config(ms, s, o, dtype);
    fclose(ms);
    char path[PATH_MAX_ + 64];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FM_TRY_GOTO(st, done, write_text_file(path, cfg, cfg_len));
    if (log) fprintf(log, "wrote %s (%s, %d layers, d_model %d, vocabulary %d)\n", path, fam->architecture,
                     s->n_layer, s->d_model, s->vocab_size);
    free(cfg);
    cfg = NULL;
    ms = open_memstream(&cfg, &cfg_len);
    if (!ms) {
        st = FM_ERR(FM_ERR_NOMEM, "out of memory");
        goto done;
    }
    fprintf(ms, "{\n");
    fm_hf_export_opts ids = *o;
    put_ids(ms, &ids);
    fprintf(ms, "  \"max_length\": %d\n}\n", s->max_seq_len);
    fclose(ms);
    snprintf(path, sizeof path, "%s/generation_config.json", dir);
    FM_TRY_GOTO(st, done, write_text_file(path, cfg, cfg_len));
    if (log) fprintf(log, "wrote %s\n", path);
done:
    free(params);
    free(out);
    free(info);
    free(shard_of);
    free(cfg);
    free(idx);
    return st;
}

/* ---- import ----------------------------------------------------------------------------------- */

static fm_status read_config_root(const char *dir, fm_json_doc **doc, const hf_family **fam, char *path, size_t size)
{
    snprintf(path, size, "%s/config.json", dir);
    FM_TRY(fm_json_parse_file(path, CONFIG_MAX_BYTES, doc));
    const fm_json *root = fm_json_root(*doc);
    fm_status st = fm_json_want(root, FM_JSON_OBJECT, path);
    const fm_json *mt = fm_json_get(root, "model_type");
    char w[PATH_MAX_ + 96];
    snprintf(w, sizeof w, "%s: model_type", path);
    if (!st) st = fm_json_want(mt, FM_JSON_STRING, w);
    *fam = NULL;
    for (int i = 0; !st && i < N_FAMILIES; i++)
        if (strcmp(families[i].model_type, mt->str) == 0) *fam = &families[i];
    if (!st && !*fam) {
        char names[128] = "";
        size_t o = 0;
        for (int i = 0; i < N_FAMILIES; i++)
            o += (size_t)snprintf(names + o, sizeof names - o, "%s\"%s\"", i ? ", " : "", families[i].model_type);
        st = FM_ERR(FM_ERR_INPUT, "%s = \"%.60s\": fmtrain imports the model types %s", w, mt->str, names);
    }
    if (st) fm_json_doc_free(doc);
    return st;
}

static void read_ids(const fm_json *root, int64_t *bos, int64_t *eos)
{
    const fm_json *b = fm_json_get(root, "bos_token_id"), *e = fm_json_get(root, "eos_token_id");
    *bos = b && b->type == FM_JSON_NUMBER && b->is_int ? b->i : -1;
    *eos = e && e->type == FM_JSON_NUMBER && e->is_int ? e->i : -1;
    if (e && e->type == FM_JSON_ARRAY && e->len > 0 && e->items[0]->type == FM_JSON_NUMBER && e->items[0]->is_int)
        *eos = e->items[0]->i; /* a list of end ids: the first */
}

/* The safetensors files of dir: model.safetensors, or the shards the index lists. */
static fm_status open_weights(const char *dir, fm_safetensors ***files, int *nfiles)
{
    char path[PATH_MAX_ + 64];
    *files = NULL;
    *nfiles = 0;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    struct stat sb;
    if (stat(path, &sb) == 0) {
        fm_safetensors **f = calloc(1, sizeof *f);
        FM_CHECK_ALLOC(f, sizeof *f);
        fm_status st = fm_safetensors_open(path, &f[0]);
        if (st) {
            free(f);
            return st;
        }
        *files = f;
        *nfiles = 1;
        return NULL;
    }
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    if (stat(path, &sb) != 0)
        return FM_ERR(FM_ERR_INPUT, "%s has neither model.safetensors nor model.safetensors.index.json (only "
                      "safetensors weights are imported; convert pytorch_model.bin with transformers' "
                      "save_pretrained(safe_serialization=True))", dir);
    fm_json_doc *doc = NULL;
    FM_TRY(fm_json_parse_file(path, INDEX_MAX_BYTES, &doc));
    const fm_json *wm = fm_json_get(fm_json_root(doc), "weight_map");
    char w[PATH_MAX_ + 80];
    snprintf(w, sizeof w, "%s: weight_map", path);
    fm_status st = fm_json_want(wm, FM_JSON_OBJECT, w);
    /* distinct file names, in order of first appearance */
    const char **names = NULL;
    int n = 0;
    if (!st) {
        names = calloc(wm->len ? wm->len : 1, sizeof *names);
        if (!names) st = FM_ERR(FM_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; !st && i < wm->len; i++) {
        st = fm_json_want(wm->items[i], FM_JSON_STRING, w);
        if (st) break;
        const char *fn = wm->items[i]->str;
        if (strchr(fn, '/') || strcmp(fn, "..") == 0 || fn[0] == 0) {
            st = FM_ERR(FM_ERR_INPUT, "%s: shard name \"%.80s\" (byte %zu) is not a plain file name", w, fn,
                        wm->items[i]->offset);
            break;
        }
        int seen = 0;
        for (int k = 0; k < n; k++) seen |= strcmp(names[k], fn) == 0;
        if (!seen) names[n++] = fn;
    }
    fm_safetensors **f = NULL;
    if (!st) {
        f = calloc((size_t)(n ? n : 1), sizeof *f);
        if (!f) st = FM_ERR(FM_ERR_NOMEM, "out of memory");
    }
    for (int k = 0; !st && k < n; k++) {
        char p[PATH_MAX_ + 300];
        snprintf(p, sizeof p, "%s/%s", dir, names[k]);
        st = fm_safetensors_open(p, &f[k]);
    }
    if (st) {
        for (int k = 0; f && k < n; k++) fm_safetensors_free(&f[k]);
        free(f);
        f = NULL;
        n = 0;
    }
    free(names);
    fm_json_doc_free(&doc);
    *files = f;
    *nfiles = n;
    return st;
}

typedef struct found {
    fm_safetensors *file;
    const fm_st_tensor *t;
} found;

static int find_tensor(fm_safetensors **files, int nfiles, const char *name, found *out)
{
    for (int k = 0; k < nfiles; k++) {
        const fm_st_tensor *t = fm_safetensors_find(files[k], name);
        if (t) {
            out->file = files[k];
            out->t = t;
            return 1;
        }
    }
    return 0;
}

/* The file's tensor for model tensor hf_name, under its full name or without the family prefix. */
static int find_param(fm_safetensors **files, int nfiles, const hf_family *fam, const char *hf_name, found *out)
{
    if (find_tensor(files, nfiles, hf_name, out)) return 1;
    size_t pl = fam->prefix ? strlen(fam->prefix) : 0;
    return pl && strncmp(hf_name, fam->prefix, pl) == 0 && find_tensor(files, nfiles, hf_name + pl, out);
}

static void shape_str(const fm_st_tensor *t, char *buf, size_t n)
{
    size_t o = (size_t)snprintf(buf, n, "(");
    for (int d = 0; d < t->ndim && o < n; d++) o += (size_t)snprintf(buf + o, n - o, "%s%" PRId64, d ? ", " : "", t->shape[d]);
    if (o < n) snprintf(buf + o, n - o, ")");
}

fm_status fm_hf_import_model(const char *dir, fm_backend *be, fm_model **out, fm_hf_import_info *info)
{
    *out = NULL;
    memset(info, 0, sizeof *info);
    fm_json_doc *doc = NULL;
    const hf_family *fam = NULL;
    char cpath[PATH_MAX_ + 32];
    FM_TRY(read_config_root(dir, &doc, &fam, cpath, sizeof cpath));
    fm_model_shape shape;
    memset(&shape, 0, sizeof shape);
    fm_status st = fam->read_config(fm_json_root(doc), cpath, &shape);
    read_ids(fm_json_root(doc), &info->bos_id, &info->eos_id);
    fm_json_doc_free(&doc);
    if (st) return st;
    fm_model *m = NULL;
    fm_status chk = fm_model_create_opts(
        &shape, be, &(fm_model_options){.mode = FM_MODEL_DECODE, .max_batch = 1}, &m);
    if (chk) {
        st = FM_ERR(fm_status_code(chk) == FM_ERR_CONFIG ? FM_ERR_INPUT : fm_status_code(chk),
                    "%s describes a model fmtrain cannot build: %s", cpath, fm_status_message(chk));
        fm_status_free(&chk);
        return st;
    }
    fm_safetensors **files = NULL;
    int nfiles = 0;
    float *host = NULL, *tmp = NULL, *tmp2 = NULL;
    char **claimed = NULL; /* per file: which tensors a parameter took */
    FM_TRY_GOTO(st, done, open_weights(dir, &files, &nfiles));
    info->n_files = nfiles;
    claimed = calloc((size_t)nfiles, sizeof *claimed);
    size_t np = fm_model_num_params(m);
    host = calloc(np, sizeof *host);
    if (!claimed || !host) {
        st = FM_ERR(FM_ERR_NOMEM, "out of memory importing %zu parameters", np);
        goto done;
    }
    for (int k = 0; k < nfiles; k++) {
        claimed[k] = calloc((size_t)fm_safetensors_count(files[k]) + 1, 1);
        if (!claimed[k]) {
            st = FM_ERR(FM_ERR_NOMEM, "out of memory");
            goto done;
        }
    }
    const int nt = fm_model_num_tensors(m);
    const char *dtype_seen = NULL;
    int mixed = 0;
    for (int i = 0; i < nt; i++) {
        const fm_model_tensor_info *ti = fm_model_tensor(m, i);
        found fd;
        if (!find_param(files, nfiles, fam, ti->hf_name, &fd)) {
            st = FM_ERR(FM_ERR_INPUT, "%s: the weights have no tensor \"%s\" (parameter %s of %s; %d layers in "
                        "config.json)", dir, ti->hf_name, ti->name, fam->architecture, shape.n_layer);
            goto done;
        }
        int want_ndim = ti->ndim;
        int64_t want0 = ti->hf_shape[0], want1 = ti->ndim == 2 ? ti->hf_shape[1] : 0;
        if (fd.t->ndim != want_ndim || fd.t->shape[0] != want0 || (want_ndim == 2 && fd.t->shape[1] != want1)) {
            char got[96];
            shape_str(fd.t, got, sizeof got);
            char want[64];
            if (want_ndim == 2) snprintf(want, sizeof want, "(%" PRId64 ", %" PRId64 ")", want0, want1);
            else snprintf(want, sizeof want, "(%" PRId64 ")", want0);
            st = FM_ERR(FM_ERR_INPUT, "%s: tensor \"%s\" has shape %s in %s; config.json implies %s", dir,
                        fd.t->name, got, fm_safetensors_path(fd.file), want);
            goto done;
        }
        if (!dtype_seen) dtype_seen = fd.t->dtype_name;
        else if (strcmp(dtype_seen, fd.t->dtype_name)) mixed = 1;
        float *dst = host + ti->offset;
        if (!ti->hf_transposed) {
            FM_TRY_GOTO(st, done, fm_safetensors_read_f32(fd.file, fd.t, dst)); /* real rows; padding stays 0 */
        } else {
            float *t2 = realloc(tmp, (size_t)fd.t->numel * sizeof *t2);
            if (!t2) {
                st = FM_ERR(FM_ERR_NOMEM, "out of memory reading %s", fd.t->name);
                goto done;
            }
            tmp = t2;
            FM_TRY_GOTO(st, done, fm_safetensors_read_f32(fd.file, fd.t, tmp));
            const size_t hr = (size_t)fd.t->shape[0], hc = (size_t)fd.t->shape[1]; /* HF (cols, real rows) */
            for (size_t a = 0; a < hr; a++)
                for (size_t b = 0; b < hc; b++) dst[b * hr + a] = tmp[a * hc + b];
        }
        for (int k = 0; k < nfiles; k++)
            if (files[k] == fd.file) claimed[k][fd.t - fm_safetensors_at(fd.file, 0)] = 1;
    }
    /* Whatever else the files hold must be a buffer or a tied copy equal to its parameter. */
    size_t pl = fam->prefix ? strlen(fam->prefix) : 0;
    for (int k = 0; k < nfiles; k++)
        for (int j = 0; j < fm_safetensors_count(files[k]); j++) {
            if (claimed[k][j]) continue;
            const fm_st_tensor *t = fm_safetensors_at(files[k], j);
            const char *bare = pl && strncmp(t->name, fam->prefix, pl) == 0 ? t->name + pl : t->name;
            if (fam->is_buffer && fam->is_buffer(bare)) {
                info->n_ignored++;
                continue;
            }
            const char *param = NULL;
            for (int q = 0; fam->tied && fam->tied[q]; q += 2)
                if (strcmp(t->name, fam->tied[q]) == 0) param = fam->tied[q + 1];
            if (!param) {
                st = FM_ERR(FM_ERR_INPUT, "%s: tensor \"%s\" of %s is not a parameter of fmtrain's %s (%s) nor a "
                            "buffer it knows; the model has parts fmtrain does not compute", dir, t->name,
                            fm_safetensors_path(files[k]), fam->arch, fam->architecture);
                goto done;
            }
            found pf;
            if (!find_param(files, nfiles, fam, param, &pf) || pf.t->numel != t->numel) {
                st = FM_ERR(FM_ERR_INPUT, "%s: tensor \"%s\" should be tied to \"%s\" but its shape differs", dir,
                            t->name, param);
                goto done;
            }
            float *a = realloc(tmp, (size_t)t->numel * sizeof *a);
            if (a) tmp = a;
            float *b = realloc(tmp2, (size_t)t->numel * sizeof *b);
            if (b) tmp2 = b;
            if (!a || !b) {
                st = FM_ERR(FM_ERR_NOMEM, "out of memory");
                goto done;
            }
            FM_TRY_GOTO(st, done, fm_safetensors_read_f32(files[k], t, tmp));
            FM_TRY_GOTO(st, done, fm_safetensors_read_f32(pf.file, pf.t, tmp2));
            if (memcmp(tmp, tmp2, (size_t)t->numel * sizeof *tmp) != 0) {
                st = FM_ERR(FM_ERR_INPUT, "%s: tensor \"%s\" differs from \"%s\": fmtrain's %s ties them "
                            "(tie_word_embeddings), so this untied model cannot be imported", dir, t->name, param,
                            fam->arch);
                goto done;
            }
            info->n_ignored++;
        }
    fm_util_strlcpy(info->source_dtype, mixed ? "mixed" : dtype_seen ? dtype_seen : "?", sizeof info->source_dtype);
    FM_TRY_GOTO(st, done, fm_model_set_params(m, host));
    *out = m;
    m = NULL;
done:
    for (int k = 0; k < nfiles; k++) {
        fm_safetensors_free(&files[k]);
        if (claimed) free(claimed[k]);
    }
    free(files);
    free(claimed);
    free(host);
    free(tmp);
    free(tmp2);
    fm_model_free(&m);
    return st;
}

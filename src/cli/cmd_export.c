/* cmd_export.c — `fmtrain export CHECKPOINT|RUNDIR --format hf --output DIR`: a trained model in
 * Hugging Face's layout (safetensors weights, config.json, generation_config.json, tokenizer.json).
 *
 * Serial: no MPI. Loads the model and its tokenizer from a checkpoint (fm_checkpoint_load_model: a
 * file, or a run directory meaning its newest good checkpoint) on the CPU backend, then writes the
 * files with src/hf (hf_model.h for the weights and configuration, hf_tokenizer.h for the tokenizer).
 * transformers' from_pretrained(DIR) and AutoTokenizer read the result (tests/hf/test_export.py). */
#define _POSIX_C_SOURCE 200809L
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt/checkpoint.h"
#include "cli/cli.h"
#include "data/tokenizer.h"
#include "hf/hf_model.h"
#include "hf/hf_tokenizer.h"
#include "kernels.h"
#include "model/model.h"

static const char export_help[] =
    "Usage: fmtrain export CHECKPOINT|RUNDIR --format hf --output DIR [--dtype fp32|bf16|fp16]\n"
    "                      [--max-shard-size SIZE] [--no-tokenizer]\n"
    "\n"
    "Writes a trained model in Hugging Face's layout, which transformers, inference servers (vLLM,\n"
    "TGI), evaluation harnesses and converters read: model.safetensors (or model-0000i-of-0000N\n"
    "shards with model.safetensors.index.json above --max-shard-size), config.json (GPT2LMHeadModel\n"
    "or LlamaForCausalLM), generation_config.json, and the tokenizer as tokenizer.json +\n"
    "tokenizer_config.json, which\n"
    "encodes any text to the ids `fmtrain prepare` gives it. CHECKPOINT is a checkpoint file, or a\n"
    "run directory (its newest checkpoint whose checksums verify). Files in DIR with these names are\n"
    "replaced; DIR is created when missing.\n"
    "\n"
    "Options:\n"
    "  --format hf          the layout (hf, the only one)\n"
    "  --output DIR         the directory to write (required)\n"
    "  --dtype D            fp32 (default: fmtrain's weights exactly), bf16 or fp16 (rounded to\n"
    "                       nearest even; half the size)\n"
    "  --max-shard-size S   largest weights file, bytes or with a unit: 5GB (default), 500MB, 2GiB\n"
    "  --no-tokenizer       write the model only (for a checkpoint whose tokenizer is a version-1\n"
    "                       fmtrain tokenizer, which tokenizer.json cannot express)\n"
    "  --help               show this help\n"
    "\n"
    "Exit status: 2 for usage errors, 3 for a missing or damaged checkpoint, 1 for I/O failures.\n";

/* "5GB", "500MB", "2GiB", "123" -> bytes. */
static fm_status parse_size(const char *opt, const char *text, uint64_t *out)
{
    char *end = NULL;
    double v = strtod(text, &end);
    if (end == text || v <= 0) goto bad;
    while (*end == ' ') end++;
    struct {
        const char *unit;
        double mult;
    } units[] = {{"", 1},       {"B", 1},          {"KB", 1e3},        {"MB", 1e6},         {"GB", 1e9},
                 {"TB", 1e12},  {"KiB", 1024.0},   {"MiB", 1048576.0}, {"GiB", 1073741824.0}};
    for (size_t i = 0; i < sizeof units / sizeof *units; i++)
        if (strcmp(end, units[i].unit) == 0) {
            double b = v * units[i].mult;
            if (b < 1 || b > 1e18) goto bad;
            *out = (uint64_t)b;
            return NULL;
        }
bad:
    return FM_ERR(FM_ERR_USAGE, "%s: expected a size such as 5GB, 500MB, 2GiB or a number of bytes, got '%s'", opt,
                  text);
}

static fm_status export_run(int argc, char **argv, const fm_cmd_env *env)
{
    (void)env;
    const char *format = NULL, *output = NULL, *dtype_s = NULL, *shard_s = NULL;
    int no_tok = 0;
    fm_cli_list pos = {0};
    const fm_cli_opt opts[] = {
        {"format", FM_CLI_STRING, &format},         {"output", FM_CLI_STRING, &output},
        {"dtype", FM_CLI_STRING, &dtype_s},         {"max-shard-size", FM_CLI_STRING, &shard_s},
        {"no-tokenizer", FM_CLI_FLAG, &no_tok},
    };
    fm_status st = NULL;
    fm_backend *be = NULL;
    fm_model *model = NULL;
    fm_tokenizer *tok = NULL;
    FM_TRY_GOTO(st, done, fm_cli_parse("export", argc, argv, opts, (int)(sizeof opts / sizeof *opts), &pos));
    if (pos.n != 1) {
        st = FM_ERR(FM_ERR_USAGE, "fmtrain export: %s; usage: fmtrain export CHECKPOINT|RUNDIR --format hf "
                    "--output DIR", pos.n == 0 ? "name the checkpoint (or run directory) to export" :
                    "give one checkpoint");
        goto done;
    }
    if (!format || strcmp(format, "hf") != 0) {
        st = FM_ERR(FM_ERR_USAGE, "fmtrain export: --format %s: the supported layout is hf (Hugging Face); "
                    "give --format hf", format ? format : "is required");
        goto done;
    }
    if (!output) {
        st = FM_ERR(FM_ERR_USAGE, "fmtrain export: --output DIR is required");
        goto done;
    }
    fm_hf_export_opts o = {FM_ST_F32, FM_HF_DEFAULT_SHARD, -1, -1};
    if (dtype_s) {
        if (strcmp(dtype_s, "fp32") == 0) o.dtype = FM_ST_F32;
        else if (strcmp(dtype_s, "bf16") == 0) o.dtype = FM_ST_BF16;
        else if (strcmp(dtype_s, "fp16") == 0) o.dtype = FM_ST_F16;
        else {
            st = FM_ERR(FM_ERR_USAGE, "--dtype: expected fp32, bf16 or fp16, got '%s'", dtype_s);
            goto done;
        }
    }
    if (shard_s) FM_TRY_GOTO(st, done, parse_size("--max-shard-size", shard_s, &o.max_shard_bytes));
    FM_TRY_GOTO(st, done, fm_backend_create("cpu", 1, 0, &be));
    char used[4096] = "", note[1024] = "";
    FM_TRY_GOTO(st, done, fm_checkpoint_load_model(pos.items[0], be, 1, &model, &tok, used, sizeof used, note,
                                                   sizeof note));
    const fm_model_shape *s = fm_model_get_shape(model);
    printf("exporting %s (%s: %d layers, %d heads, d_model %d, seq_len %d, vocabulary %d) to %s\n", used,
           fm_model_arch(model), s->n_layer, s->n_head, s->d_model, s->max_seq_len, s->vocab_size, output);
    if (note[0]) printf("  %s\n", note);
    if (tok && !no_tok) {
        if (fm_tokenizer_vocab_size(tok) > (uint32_t)s->vocab_size) {
            st = FM_ERR(FM_ERR_INPUT, "%s: its tokenizer has %u tokens but the model only %d", used,
                        fm_tokenizer_vocab_size(tok), s->vocab_size);
            goto done;
        }
        /* Llama 3's begin-of-text token when the tokenizer has one (tokenizer.json's template prepends it) */
        o.eos_id = fm_tokenizer_eot_id(tok);
        o.bos_id = fm_tokenizer_bos_id(tok) >= 0 ? fm_tokenizer_bos_id(tok) : o.eos_id;
    }
    FM_TRY_GOTO(st, done, fm_hf_export_model(model, output, &o, stdout));
    if (no_tok) printf("tokenizer not written (--no-tokenizer)\n");
    else if (!tok) printf("tokenizer not written: %s stores none (its dataset was imported as token ids)\n", used);
    else FM_TRY_GOTO(st, done, fm_hf_export_tokenizer(tok, output, s->max_seq_len, stdout));
done:
    fm_model_free(&model);
    fm_tokenizer_free(&tok);
    fm_backend_free(&be);
    fm_cli_list_free(&pos);
    return st;
}

const fm_command fm_cmd_export = {"export", "write a checkpoint's model in Hugging Face's layout (safetensors, "
                                            "config.json, tokenizer.json)",
                                  export_help, 0, export_run};

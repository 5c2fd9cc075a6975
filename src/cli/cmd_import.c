/* cmd_import.c — `fmtrain import --from-hf DIR --output CHECKPOINT.h5`: a Hugging Face model (GPT-2 family)
 * (or Llama) becomes an fmtrain checkpoint that `fmtrain train` starts from ([checkpoint] init_from), `sample`
 * generates with and `export` writes back (bit-identically).
 *
 * Reads config.json and the safetensors weights with src/hf/hf_model.h (refusing, with the field named,
 * what fmtrain's family does not compute exactly), tokenizer.json with src/hf/hf_tokenizer.h when it is
 * there, and writes the checkpoint with fm_checkpoint_write_model (src/ckpt/checkpoint.h): parameters,
 * tokenizer and a configuration to start from, no optimizer state. Runs under MPI (the checkpoint
 * writer is collective); one rank is enough. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <inttypes.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ckpt/checkpoint.h"
#include "cli/cli.h"
#include "data/tokenizer.h"
#include "hf/hf_model.h"
#include "hf/hf_tokenizer.h"
#include "kernels.h"
#include "model/model.h"

static const char import_help[] =
    "Usage: fmtrain import --from-hf DIR --output CHECKPOINT.h5 [--eot ID] [--no-tokenizer] [--force]\n"
    "\n"
    "Makes an fmtrain checkpoint from a Hugging Face model directory (what save_pretrained writes, or\n"
    "`fmtrain export`): config.json, model.safetensors or model.safetensors.index.json with its\n"
    "shards (F32, BF16, F16 or F64 weights, read as float32), and tokenizer.json when present (a\n"
    "byte-level BPE of GPT-2's or Llama 3's kind; see docs/checkpoint-format.md). Model families:\n"
    "GPT-2 (GPT2LMHeadModel) and Llama (LlamaForCausalLM). A configuration fmtrain does not compute\n"
    "exactly (another activation or LayerNorm eps, an untied GPT-2 head, Llama's rope_scaling or biases,\n"
    "...) is refused with the field named.\n"
    "The checkpoint holds the parameters, the tokenizer and a configuration; no optimizer state. Start\n"
    "training from it (continued pre-training, fine-tuning) with [checkpoint] init_from = CHECKPOINT.h5:\n"
    "a fresh optimizer, step 0, the learning-rate schedule from its start (import prints the [model]\n"
    "keys to use). `fmtrain sample --checkpoint` and `fmtrain export` read it directly; exporting it\n"
    "again in the dtype of its weights gives the same tensors bit for bit.\n"
    "\n"
    "Options:\n"
    "  --from-hf DIR        the Hugging Face model directory (required)\n"
    "  --output FILE        the checkpoint to write (refused if it exists, unless --force)\n"
    "  --eot ID             the tokenizer's end-of-text id (default: config.json's eos_token_id, else\n"
    "                       the special token <|endoftext|> or <|end_of_text|>)\n"
    "  --no-tokenizer       ignore tokenizer.json\n"
    "  --force              overwrite an existing output\n"
    "  --help               show this help\n"
    "\n"
    "Exit status: 2 for usage errors, 3 for a missing, damaged or unsupported model, 1 for I/O failures.\n";

/* v as the shortest of %.15g / %.17g that reads back exactly (1e-05, not 1.0000000000000001e-05). */
static const char *shortest(double v, char *buf, size_t n)
{
    snprintf(buf, n, "%.15g", v);
    if (strtod(buf, NULL) != v) snprintf(buf, n, "%.17g", v);
    return buf;
}

static fm_status import_run(int argc, char **argv, const fm_cmd_env *env)
{
    const char *from = NULL, *output = NULL, *eot_s = NULL;
    int force = 0, no_tok = 0;
    fm_cli_list pos = {0};
    const fm_cli_opt opts[] = {
        {"from-hf", FM_CLI_STRING, &from},   {"output", FM_CLI_STRING, &output}, {"eot", FM_CLI_STRING, &eot_s},
        {"no-tokenizer", FM_CLI_FLAG, &no_tok}, {"force", FM_CLI_FLAG, &force},
    };
    fm_status st = NULL;
    fm_backend *be = NULL;
    fm_model *model = NULL;
    fm_tokenizer *tok = NULL;
    char *cfg = NULL;
    size_t cfg_len = 0;
    FILE *log = env->world_rank == 0 ? stdout : NULL;
    FM_TRY_GOTO(st, done, fm_cli_parse("import", argc, argv, opts, (int)(sizeof opts / sizeof *opts), &pos));
    if (pos.n != 0 || !from || !output) {
        st = FM_ERR(FM_ERR_USAGE, "fmtrain import: %s; usage: fmtrain import --from-hf DIR --output CHECKPOINT.h5",
                    pos.n ? "unexpected argument" : !from ? "--from-hf DIR is required" : "--output FILE is required");
        goto done;
    }
    long long eot = -1;
    if (eot_s) FM_TRY_GOTO(st, done, fm_cli_int("--eot", eot_s, 0, FM_TOKENIZER_MAX_VOCAB - 1, &eot));
    struct stat sb;
    if (stat(output, &sb) == 0 && !force) {
        st = FM_ERR(FM_ERR_USAGE, "%s exists; use --force to overwrite it", output);
        goto done;
    }
    FM_TRY_GOTO(st, done, fm_backend_create("cpu", 1, 0, &be));
    fm_hf_import_info info;
    FM_TRY_GOTO(st, done, fm_hf_import_model(from, be, &model, &info));
    const fm_model_shape *s = fm_model_get_shape(model);
    char tjson[4200];
    snprintf(tjson, sizeof tjson, "%s/tokenizer.json", from);
    if (!no_tok && stat(tjson, &sb) == 0) {
        FM_TRY_GOTO(st, done, fm_hf_read_tokenizer(tjson, eot >= 0 ? eot : info.eos_id, &tok));
        if (fm_tokenizer_vocab_size(tok) > (uint32_t)s->vocab_size) {
            st = FM_ERR(FM_ERR_INPUT, "%s has %u tokens but config.json's vocab_size is %d", tjson,
                        fm_tokenizer_vocab_size(tok), s->vocab_size);
            goto done;
        }
    }
    FILE *m = open_memstream(&cfg, &cfg_len);
    if (!m) {
        st = FM_ERR(FM_ERR_NOMEM, "out of memory");
        goto done;
    }
    fprintf(m, "# made by `fmtrain import --from-hf %s`: train from this model with these keys (and\n"
               "# [data] train, [train] and [run] of your own)\n"
               "[model]\narch = %s\nn_layer = %d\nn_head = %d\nd_model = %d\nseq_len = %d\nvocab_size = %d\n",
            from, fm_model_arch(model), s->n_layer, s->n_head, s->d_model, s->max_seq_len, s->vocab_size);
    if (s->rope_theta > 0) /* the keys of a family with RoPE (Llama); GPT-2 takes only its defaults */
    {
        char theta[40], eps[40];
        fprintf(m, "n_kv_head = %d\nffn_dim = %d\nrope_theta = %s\nnorm_eps = %s\ntie_embeddings = %s\n",
                s->n_kv_head, s->ffn_dim, shortest(s->rope_theta, theta, sizeof theta),
                shortest(s->norm_eps, eps, sizeof eps), s->tie_embeddings == FM_TIE_YES ? "true" : "false");
    }
    fprintf(m, "\n[checkpoint]\ninit_from = %s\n", output);
    fclose(m);
    char source[4400];
    snprintf(source, sizeof source, "Hugging Face model %s (weights %s, %d file%s)", from, info.source_dtype,
             info.n_files, info.n_files == 1 ? "" : "s");
    FM_TRY_GOTO(st, done, fm_checkpoint_write_model(MPI_COMM_WORLD, output, model, tok, cfg, source));
    if (log) {
        fm_model_memory_info mem;
        fm_model_memory(model, &mem);
        fprintf(log, "wrote %s: %s, %zu parameters (weights %s", output, fm_model_arch(model), mem.n_params,
                info.source_dtype);
        if (info.n_ignored) fprintf(log, "; %d buffer%s or tied cop%s not stored", info.n_ignored,
                                    info.n_ignored == 1 ? "" : "s", info.n_ignored == 1 ? "y" : "ies");
        fprintf(log, "), tokenizer %s\n", tok ? "from tokenizer.json" : no_tok ? "not read (--no-tokenizer)" :
                                                                       "none (no tokenizer.json)");
        if (tok) {
            fprintf(log, "tokenizer: %u tokens, %u merges, pre-split %s, end-of-text id %u",
                    fm_tokenizer_vocab_size(tok), fm_tokenizer_n_merges(tok),
                    fm_presplit_name(fm_tokenizer_presplit(tok)), fm_tokenizer_eot_id(tok));
            if (fm_tokenizer_bos_id(tok) >= 0)
                fprintf(log, ", begin-of-text id %" PRId64 " (its post-processor prepends it; kept for export)",
                        fm_tokenizer_bos_id(tok));
            fputc('\n', log);
        }
        fprintf(log, "start a run from it with (fresh optimizer, step 0, schedule from its start):\n%s", cfg);
    }
done:
    free(cfg);
    fm_model_free(&model);
    fm_tokenizer_free(&tok);
    fm_backend_free(&be);
    fm_cli_list_free(&pos);
    return st;
}

const fm_command fm_cmd_import = {"import", "make a checkpoint from a Hugging Face model (safetensors, config.json, "
                                            "tokenizer.json)",
                                  import_help, 1, import_run};

/* cmd_sample.c — `fmtrain sample --checkpoint PATH [--prompt TEXT] [--eot-prefix yes|no]
 * [--tokens N] [--temperature T] [--top-k K] [--seed S] [--device D] [--threads N]`: text from a
 * trained model.
 *
 * Serial: no MPI. Creates the backend (--device), loads the model as a decode model with its K/V
 * caches and its tokenizer from a checkpoint (fm_checkpoint_load_model: a file, or a run directory
 * meaning its newest good checkpoint), encodes the prompt (after an end-of-text token unless
 * --eot-prefix no), generates with src/model/sampler.h (the
 * model's own forward through the backend, one decode call per token), and prints the prompt
 * followed by the generated text as it is produced. The banner on stderr names the checkpoint
 * file used, the model and the device. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt/checkpoint.h"
#include "cli/cli.h"
#include "kernels.h"
#include "model/model.h"
#include "model/sampler.h"
#include "data/tokenizer.h"

static const char sample_help[] =
    "Usage: fmtrain sample --checkpoint PATH [--prompt TEXT] [--eot-prefix yes|no] [--tokens N]\n"
    "                      [--temperature T] [--top-k K] [--seed S] [--device cpu|cuda|auto]\n"
    "                      [--threads N]\n"
    "\n"
    "Generates text from a trained model. PATH is a checkpoint file, or a run directory (its newest\n"
    "checkpoint whose checksums verify); the file used is named on stderr. The prompt is encoded with\n"
    "the tokenizer stored in the checkpoint; the model runs its own forward on the chosen device and\n"
    "keeps a KV cache, so each new token costs one single-token pass. When the text reaches the\n"
    "model's seq_len, the context slides (the last seq_len/2 tokens are kept).\n"
    "\n"
    "Options:\n"
    "  --checkpoint PATH   checkpoint file or run directory (required)\n"
    "  --prompt TEXT       text to continue (default: the end-of-text token, i.e. a fresh document)\n"
    "  --eot-prefix yes|no yes (default): the prompt follows an end-of-text token, so the model reads\n"
    "                      it as the start of a document, as every document of its training data\n"
    "                      began (fmtrain prepare writes the token before each one); no: the prompt\n"
    "                      alone, e.g. to continue text from the middle of a document\n"
    "  --tokens N          tokens to generate (default 200)\n"
    "  --temperature T     0 = greedy; otherwise sample from softmax(logits/T) (default 0.8)\n"
    "  --top-k K           sample only among the K most likely tokens; 0 = all (default 40)\n"
    "  --seed S            random seed of the sampling (default 1); same seed, same text on the\n"
    "                      same device and thread count\n"
    "  --device D          cpu, cuda, or auto: cuda when built in and a GPU is visible, else cpu\n"
    "                      (default auto, as [runtime] device)\n"
    "  --threads N         CPU threads of the cpu device (default 1)\n"
    "  --help              show this help\n";

typedef struct print_ctx {
    const fm_tokenizer *tok;
    FILE *out;
} print_ctx;

/* Prints one generated token's bytes as soon as it exists (text streams out as it is produced). */
static fm_status print_token(void *ctx, int32_t token)
{
    print_ctx *p = ctx;
    size_t len = 0;
    const uint8_t *bytes = fm_tokenizer_token(p->tok, (uint32_t)token, &len);
    if (bytes && (uint32_t)token != fm_tokenizer_eot_id(p->tok)) {
        fwrite(bytes, 1, len, p->out);
    } else {
        fputs("\n" FM_TOKENIZER_EOT_TEXT "\n", p->out);
    }
    fflush(p->out);
    return NULL;
}

static fm_status sample_run(int argc, char **argv, const fm_cmd_env *env)
{
    (void)env;
    const char *ckpt = NULL, *prompt = NULL, *ntok_s = NULL, *temp_s = NULL, *topk_s = NULL,
               *seed_s = NULL, *threads_s = NULL, *device_s = NULL, *eot_s = NULL;
    fm_cli_list pos = {0};
    const fm_cli_opt opts[] = {
        {"checkpoint", FM_CLI_STRING, &ckpt},     {"prompt", FM_CLI_STRING, &prompt},
        {"tokens", FM_CLI_STRING, &ntok_s},       {"temperature", FM_CLI_STRING, &temp_s},
        {"top-k", FM_CLI_STRING, &topk_s},        {"seed", FM_CLI_STRING, &seed_s},
        {"threads", FM_CLI_STRING, &threads_s},   {"device", FM_CLI_STRING, &device_s},
        {"eot-prefix", FM_CLI_STRING, &eot_s},
    };
    fm_status st = NULL;
    fm_backend *be = NULL;
    fm_model *model = NULL;
    fm_tokenizer *tok = NULL;
    fm_sampler *s = NULL;
    fm_tokenizer_ids ids = {0};
    int32_t *prompt_ids = NULL;
    FM_TRY_GOTO(st, done, fm_cli_parse("sample", argc, argv, opts, (int)(sizeof opts / sizeof *opts), &pos));
    if (pos.n != 0 || !ckpt) {
        st = FM_ERR(FM_ERR_USAGE, "fmtrain sample: %s; usage: fmtrain sample --checkpoint PATH "
                                  "[--prompt TEXT] [--tokens N] [--temperature T] [--top-k K] [--seed S]",
                    !ckpt ? "--checkpoint PATH is required" : "unexpected argument");
        goto done;
    }
    int eot_prefix = 1;
    if (eot_s && (strcmp(eot_s, "yes") == 0 || strcmp(eot_s, "no") == 0)) {
        eot_prefix = strcmp(eot_s, "yes") == 0;
    } else if (eot_s) {
        st = FM_ERR(FM_ERR_USAGE, "--eot-prefix %s: expected yes (the prompt starts a document: an "
                                  "end-of-text token before it) or no (the prompt alone)", eot_s);
        goto done;
    }
    long long ntok = 200, topk = 40, seed = 1, threads = 1;
    double temperature = 0.8;
    if (ntok_s) FM_TRY_GOTO(st, done, fm_cli_int("--tokens", ntok_s, 0, 100000000, &ntok));
    if (topk_s) FM_TRY_GOTO(st, done, fm_cli_int("--top-k", topk_s, 0, 2147483647, &topk));
    if (seed_s) FM_TRY_GOTO(st, done, fm_cli_int("--seed", seed_s, 0, 9223372036854775807LL, &seed));
    if (threads_s) FM_TRY_GOTO(st, done, fm_cli_int("--threads", threads_s, 1, 4096, &threads));
    if (temp_s) FM_TRY_GOTO(st, done, fm_cli_double("--temperature", temp_s, 0.0, 100.0, &temperature));

    /* auto: as [runtime] device; any other name is the registry's to accept or refuse */
    const char *device = device_s ? device_s : "auto";
    if (strcmp(device, "auto") == 0) device = fm_backend_auto();
    FM_TRY_GOTO(st, done, fm_backend_create(device, (int)threads, 0, &be));
    char used[4096] = "", why[4096] = "";
    FM_TRY_GOTO(st, done, fm_checkpoint_load_model(ckpt, be, 1, &model, &tok, used, sizeof used,
                                                   why, sizeof why));
    fprintf(stderr, "fmtrain sample: using %s: %s\n", used, why); /* which file, and why */
    if (!tok) {
        st = FM_ERR(FM_ERR_INPUT, "%s stores no tokenizer (its dataset was imported as token ids "
                                  "without one), so text cannot be encoded or decoded; prepare the "
                                  "dataset with a tokenizer (fmtrain prepare --input, or "
                                  "--tokenizer-from) and train again", used);
        goto done;
    }
    const fm_model_shape *shape = fm_model_get_shape(model);
    if (fm_tokenizer_vocab_size(tok) > (uint32_t)shape->vocab_size) {
        st = FM_ERR(FM_ERR_INPUT, "%s: the tokenizer has %u tokens but the model only %d", used,
                    fm_tokenizer_vocab_size(tok), shape->vocab_size);
        goto done;
    }
    int n_prompt = 0;
    if (prompt) {
        FM_TRY_GOTO(st, done, fm_tokenizer_encode(tok, (const uint8_t *)prompt, strlen(prompt), &ids));
        if (ids.n == 0) {
            st = FM_ERR(FM_ERR_USAGE, "fmtrain sample: the prompt is empty: give some text with "
                                      "--prompt, or leave --prompt out to start a fresh document");
            goto done;
        }
        n_prompt = (int)ids.n + eot_prefix;
    } else {
        n_prompt = 1; /* the end-of-text token: the model starts a new document */
    }
    prompt_ids = malloc((size_t)n_prompt * sizeof *prompt_ids);
    if (!prompt_ids) {
        st = FM_ERR(FM_ERR_NOMEM, "out of memory encoding the prompt");
        goto done;
    }
    /* the end-of-text token first: alone without a prompt, before it with --eot-prefix yes */
    const int first = !prompt || eot_prefix;
    if (first) prompt_ids[0] = (int32_t)fm_tokenizer_eot_id(tok);
    if (prompt)
        for (size_t i = 0; i < ids.n; i++) prompt_ids[(size_t)first + i] = (int32_t)ids.ids[i];
    if (n_prompt > shape->max_seq_len)
        fprintf(stderr, "fmtrain sample: the prompt has %d tokens%s, more than the model's seq_len "
                        "%d: only its last %d tokens are used as context\n",
                n_prompt, prompt && first ? " with the end-of-text token before it" : "",
                shape->max_seq_len, shape->max_seq_len);
    FM_TRY_GOTO(st, done, fm_sampler_create(model, &s));
    char dev[256];
    be->ops->describe(be, dev, sizeof dev);
    fprintf(stderr, "fmtrain sample: checkpoint %s (%s, %d layers, d_model %d, seq_len %d, "
                    "vocabulary %d) on %s; %s; %lld tokens, temperature %g, top-k %lld, seed %lld\n",
            used, fm_model_arch(model), shape->n_layer, shape->d_model, shape->max_seq_len,
            shape->vocab_size, dev,
            !prompt       ? "a fresh document (end-of-text token, no prompt)"
            : eot_prefix ? "the prompt starts a document (end-of-text token before it)"
                         : "the prompt alone (--eot-prefix no)",
            ntok, temperature, topk, seed);
    if (prompt) fputs(prompt, stdout);
    fflush(stdout);
    print_ctx pc = {tok, stdout};
    fm_sampler_options so = {(int)ntok, temperature, (int)topk, (uint64_t)seed};
    FM_TRY_GOTO(st, done, fm_sampler_generate(s, prompt_ids, n_prompt, &so, print_token, &pc, NULL));
    fputc('\n', stdout);
done:
    free(prompt_ids);
    fm_tokenizer_ids_free(&ids);
    fm_sampler_free(&s);
    fm_model_free(&model);
    fm_tokenizer_free(&tok);
    fm_backend_free(&be);
    fm_cli_list_free(&pos);
    return st;
}

const fm_command fm_cmd_sample = {"sample", "generate text from a checkpoint (the model's forward with a KV cache)",
                                  sample_help, 0, sample_run};

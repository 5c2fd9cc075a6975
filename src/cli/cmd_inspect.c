/* cmd_inspect.c — `fmtrain inspect FILE`: describe and verify an fmtrain HDF5 file.
 *
 * Dispatches on the root attribute "format" that every fmtrain file carries:
 *   "fmtrain-dataset"    -> inspect_dataset (below)
 *   "fmtrain-checkpoint" -> the checkpoint module's inspector (marked place in inspect_run)
 * Anything else (foreign HDF5, not HDF5, missing) is an input error (exit 3). */
#define _POSIX_C_SOURCE 200809L
#include <hdf5.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt/checkpoint.h"
#include "cli/cli.h"
#include "data/dataset.h"
#include "data/h5util.h"
#include "data/tokenizer.h"

static const char inspect_help[] =
    "Usage: fmtrain inspect FILE [--tokens N]\n"
    "\n"
    "Describes an fmtrain HDF5 file and verifies what it can; exits 3 with a message on a damaged or\n"
    "foreign file.\n"
    "For a dataset: format version, vocabulary size and token width, end-of-text id, token counts per\n"
    "split, the tokenizer kind, the first tokens of /train (ids and decoded text when a tokenizer is\n"
    "stored), then checks: dataset shapes and types, ids < vocab_size on a sample (the first and last\n"
    "64 Ki tokens and 32 evenly spaced 4 Ki-token blocks of each split), and the stored tokenizer\n"
    "(merges consistent with the token strings).\n"
    "\n"
    "Options:\n"
    "  --tokens N   how many leading tokens to show (default 32)\n";

/* Reads n tokens from `start` of dataset `name` into out (uint32). */
static fm_status read_tokens(hid_t f, const char *name, uint64_t start, size_t n, uint32_t *out,
                             const char *path)
{
    if (n == 0) return NULL;
    hid_t ds = H5Dopen2(f, name, H5P_DEFAULT);
    if (ds < 0) return FM_ERR(FM_ERR_INPUT, "%s: cannot open %s", path, name);
    hsize_t st = start, cnt = n;
    hid_t fs = H5Dget_space(ds), ms = H5Screate_simple(1, &cnt, NULL);
    herr_t e = H5Sselect_hyperslab(fs, H5S_SELECT_SET, &st, NULL, &cnt, NULL);
    if (e >= 0) e = H5Dread(ds, H5T_NATIVE_UINT32, ms, fs, H5P_DEFAULT, out);
    H5Sclose(ms);
    H5Sclose(fs);
    H5Dclose(ds);
    if (e < 0)
        return FM_ERR(FM_ERR_INPUT, "%s: cannot read tokens %" PRIu64 "..%" PRIu64 " of %s (damaged file)", path,
                      start, start + n, name);
    return NULL;
}

/* Checks ids < vocab on the sample described in the help text. Returns tokens checked in *checked. */
static fm_status verify_split(hid_t f, const char *name, uint64_t count, uint64_t vocab, const char *path,
                              uint64_t *checked)
{
    const size_t edge = 65536, block = 4096;
    uint32_t *buf = malloc(edge * sizeof *buf);
    FM_CHECK_ALLOC(buf, edge * sizeof *buf);
    fm_status st = NULL;
    uint64_t starts[34];
    size_t lens[34];
    int n = 0;
    starts[n] = 0;
    lens[n++] = (size_t)(count < edge ? count : edge);
    starts[n] = count > edge ? count - edge : 0;
    lens[n++] = (size_t)(count < edge ? count : edge);
    if (count > block)
        for (int k = 0; k < 32; k++) {
            starts[n] = (count - block) / 31 * (uint64_t)k;
            lens[n++] = block;
        }
    for (int k = 0; k < n && !st; k++) {
        st = read_tokens(f, name, starts[k], lens[k], buf, path);
        for (size_t i = 0; !st && i < lens[k]; i++)
            if (buf[i] >= vocab)
                st = FM_ERR(FM_ERR_INPUT, "%s: token %" PRIu64 " of %s is %u, not below vocab_size %" PRIu64
                                          " (damaged file)",
                            path, starts[k] + i, name, buf[i], vocab);
        *checked += lens[k];
    }
    free(buf);
    return st;
}

static void print_escaped(const uint8_t *s, size_t n)
{
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (c == '\n') fputs("\\n", stdout);
        else if (c == '\t') fputs("\\t", stdout);
        else if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20 || c == 0x7f) printf("\\x%02x", c);
        else putchar(c);
    }
    putchar('"');
}

/* The summary of a probed dataset, its first tokens, and the checks the help text lists. */
static fm_status inspect_dataset_file(const char *path, const fm_dataset_info *info, long long ntok)
{
    printf("file            %s\n", path);
    printf("format          %s version %d%s%s%s\n", FM_DATASET_FORMAT, info->format_version,
           info->created_by[0] ? " (written by " : "", info->created_by, info->created_by[0] ? ")" : "");
    printf("source          %s\n", info->source);
    printf("vocab_size      %" PRIu64 " (%s tokens)\n", info->vocab_size,
           info->token_bytes == 2 ? "uint16" : "uint32");
    printf("eot_id          %" PRIu64 "\n", info->eot_id);
    printf("train tokens    %" PRIu64 "\n", info->train_tokens);
    printf("val tokens      %" PRIu64 "\n", info->val_tokens);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return FM_ERR(FM_ERR_INPUT, "cannot open %s", path);
    fm_status st = NULL;
    fm_tokenizer *tok = NULL;
    uint32_t *ids = NULL;
    if (info->has_tokenizer) {
        st = fm_status_prefix(fm_tokenizer_load(f, "tokenizer", &tok), "%s: ", path);
        if (st) goto done;
        if (fm_tokenizer_vocab_size(tok) != info->vocab_size || fm_tokenizer_eot_id(tok) != info->eot_id) {
            st = FM_ERR(FM_ERR_INPUT, "%s: the stored tokenizer has %u ids (eot %u) but the dataset says vocab_size %"
                                      PRIu64 ", eot_id %" PRIu64,
                        path, fm_tokenizer_vocab_size(tok), fm_tokenizer_eot_id(tok), info->vocab_size,
                        info->eot_id);
            goto done;
        }
        printf("tokenizer       %s, stored in /tokenizer (%u merges)\n", info->tokenizer_kind,
               fm_tokenizer_vocab_size(tok) - FM_TOKENIZER_MIN_VOCAB);
    } else {
        printf("tokenizer       none stored (imported token ids; decoding needs the tokenizer that made them, "
               "or re-import with --tokenizer-from)\n");
    }
    size_t n = (size_t)((uint64_t)ntok < info->train_tokens ? (uint64_t)ntok : info->train_tokens);
    ids = malloc((n ? n : 1) * sizeof *ids);
    if (!ids) {
        st = FM_ERR(FM_ERR_NOMEM, "out of memory");
        goto done;
    }
    FM_TRY_GOTO(st, done, read_tokens(f, "/train/tokens", 0, n, ids, path));
    printf("first tokens   ");
    for (size_t i = 0; i < n; i++) printf(" %u", ids[i]);
    printf("\n");
    uint64_t checked = 0;
    st = verify_split(f, "/train/tokens", info->train_tokens, info->vocab_size, path, &checked);
    if (!st) st = verify_split(f, "/val/tokens", info->val_tokens, info->vocab_size, path, &checked);
    if (st) goto done;
    if (tok) {
        uint8_t *text = NULL;
        size_t len = 0;
        FM_TRY_GOTO(st, done, fm_tokenizer_decode(tok, ids, n, &text, &len));
        printf("decoded         ");
        print_escaped(text, len);
        printf("\n");
        free(text);
    }
    printf("verified        shapes and types; %" PRIu64 " sampled ids < vocab_size%s\n", checked,
           tok ? "; tokenizer merges and token strings consistent" : "");
done:
    free(ids);
    fm_tokenizer_free(&tok);
    H5Fclose(f);
    return st;
}

/* `inspect` of a dataset: probe it, then read it with HDF5's error printing off (errors are reported
 * as messages). */
static fm_status inspect_dataset(const char *path, long long ntok)
{
    fm_dataset_info info;
    FM_TRY(fm_dataset_probe(path, &info));
    fm_h5_quiet q;
    fm_h5_quiet_begin(&q);
    fm_status st = inspect_dataset_file(path, &info, ntok);
    fm_h5_quiet_end(&q);
    return st;
}

static fm_status inspect_run(int argc, char **argv, const fm_cmd_env *env)
{
    (void)env;
    fm_cli_list pos = {0};
    const char *ntok_s = NULL;
    const fm_cli_opt opts[] = {{"tokens", FM_CLI_STRING, &ntok_s}};
    fm_status st = NULL;
    FM_TRY_GOTO(st, done, fm_cli_parse("inspect", argc, argv, opts, 1, &pos));
    if (pos.n != 1) {
        st = FM_ERR(FM_ERR_USAGE, "fmtrain inspect: expected one file, got %d; usage: fmtrain inspect FILE [--tokens N]",
                    pos.n);
        goto done;
    }
    long long ntok = 32;
    if (ntok_s) FM_TRY_GOTO(st, done, fm_cli_int("--tokens", ntok_s, 0, 1 << 20, &ntok));
    const char *path = pos.items[0];
    char fmt[128];
    FM_TRY_GOTO(st, done, fm_dataset_file_format(path, fmt, sizeof fmt));
    if (strcmp(fmt, FM_DATASET_FORMAT) == 0) {
        st = inspect_dataset(path, ntok);
    } else if (strcmp(fmt, "fmtrain-checkpoint") == 0) {
        /* ==== CHECKPOINT INSPECTION (owned by the checkpoint helper) =====================================
         * Summary, stored configuration, and the CRC-32 of every dataset (src/ckpt/checkpoint.h). */
        st = fm_checkpoint_inspect(path, stdout);
        /* ==== END CHECKPOINT INSPECTION ================================================================= */
    } else {
        st = FM_ERR(FM_ERR_INPUT, "%s is an HDF5 file of format '%s', which fmtrain does not know", path, fmt);
    }
done:
    fm_cli_list_free(&pos);
    return st;
}

const fm_command fm_cmd_inspect = {
    .name = "inspect",
    .summary = "describe and verify a dataset or checkpoint file",
    .help = inspect_help,
    .needs_mpi = 0,
    .run = inspect_run,
};

/* cmd_prepare.c — `fmtrain prepare`: text (or pre-tokenized ids) -> one fmtrain dataset file.
 *
 * Text mode trains a byte-level BPE tokenizer on the input (or reuses one with --tokenizer-from),
 * then encodes the input; tokens mode imports uint16/uint32 token files (raw, or llm.c-style .bin
 * shards with a 1024-byte header). Both stream their input and share the train/val split rule
 * (docs/dataset-format.md, "How prepare splits"). The output is written to OUTPUT.tmp.<pid> and
 * renamed at the end, so a killed run never leaves a half file under the final name.
 *
 * Memory bound (stated in `fmtrain help prepare` and the docs): encoding and importing hold a
 * 1 MiB read block, its ids (4 MiB), the writer's two 1 Mi-token buffers (<= 8 MiB), the tokenizer and
 * its word cache (~4 MiB + about 12 bytes x vocab): under 32 MiB + the tokenizer, whatever the input
 * size. Training adds the table of distinct words of the training text, which stops growing at
 * --tokenizer-train-bytes of text or FM_PREPARE_MAX_WORDS distinct words (about 0.5 GiB at worst).
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/rng.h"
#include "data/dataset.h"
#include "data/h5util.h"
#include "data/tokenizer.h"
#include "core/util.h"
#include "hf/hf_tokenizer.h"

#define FM_PREPARE_BLOCK ((size_t)1 << 20)
#define FM_PREPARE_MAX_WORDS 4000000u
#define FM_LLMC_MAGIC 20240520

static const char prepare_help[] =
    "Usage: fmtrain prepare --input FILE... --output DATA.h5 --vocab-size N [options]\n"
    "       fmtrain prepare --input FILE... --output DATA.h5 --tokenizer-from OTHER.h5|tokenizer.json [options]\n"
    "       fmtrain prepare --tokens FILE.bin... --vocab-size N --eot ID --output DATA.h5 [options]\n"
    "\n"
    "Makes one self-describing HDF5 dataset (docs/dataset-format.md) for `fmtrain train`.\n"
    "Text mode trains a byte-level BPE tokenizer with N ids (N-1 is the end-of-text token) on the\n"
    "input, encodes it and stores tokens and tokenizer. Each input file is a document.\n"
    "Tokens mode imports token ids made elsewhere (e.g. tiktoken): raw little-endian uint16/uint32\n"
    "files, or the .bin shards of llm.c-style scripts (1024-byte header: magic 20240520, version 1 =\n"
    "uint16, 2 = uint32, token count). Such a dataset has no tokenizer unless --tokenizer-from gives one.\n"
    "\n"
    "Options:\n"
    "  --input FILE            a text file (repeatable; further plain arguments are more inputs)\n"
    "  --tokens FILE           a token file (repeatable; further plain arguments are more inputs)\n"
    "  --output DATA.h5        the dataset to write (refused if it exists, unless --force)\n"
    "  --vocab-size N          text: 257..16777216; tokens: 256..4294967295\n"
    "  --eot ID                tokens mode: the end-of-text id of the imported tokens (< N)\n"
    "  --dtype uint16|uint32   tokens mode, raw files: the id width (default: uint16 if N <= 65536)\n"
    "  --val-fraction F        fraction of the input for /val (0..0.5, default 0.01)\n"
    "  --seed S                chooses which segments go to /val (default 1)\n"
    "  --tokenizer-from FILE   reuse the tokenizer stored in FILE (a dataset or checkpoint), or a Hugging\n"
    "                          Face tokenizer.json (byte-level BPE of GPT-2's or Llama 3's kind; its\n"
    "                          end-of-text token: eos_token of tokenizer_config.json beside it, else\n"
    "                          <|endoftext|> or <|end_of_text|>)\n"
    "  --tokenizer-train-bytes B  train the tokenizer on at most the first B bytes (default 1073741824)\n"
    "  --force                 overwrite an existing output\n"
    "  --quiet                 no progress lines\n"
    "\n"
    "Memory stays under ~32 MiB plus the tokenizer while encoding or importing, for any input size;\n"
    "tokenizer training adds its distinct-word table (at most 4 million words, ~0.5 GiB at worst).\n"
    "Progress (rate, ETA) is shown on a terminal, or as a line every 5 s otherwise.\n"
    "Exit status: 2 for usage errors, 3 for bad input files, 1 for I/O failures.\n";

/* ---- progress ------------------------------------------------------------------------------------ */

typedef struct progress {
    const char *phase;
    double total; /* bytes (or merges) expected; 0 = unknown */
    double done;
    double t0, last;
    int tty, quiet;
    const char *unit; /* "MB" or "merges" */
    double scale;     /* divide by this for display */
} progress;

static void progress_start(progress *p, const char *phase, double total, const char *unit, double scale,
                           int tty, int quiet)
{
    p->phase = phase;
    p->total = total;
    p->done = 0;
    p->t0 = p->last = fm_util_now();
    p->tty = tty;
    p->quiet = quiet;
    p->unit = unit;
    p->scale = scale;
}

static void progress_show(progress *p, int final)
{
    if (p->quiet) return;
    double now = fm_util_now();
    if (!final && now - p->last < (p->tty ? 0.25 : 5.0)) return;
    p->last = now;
    double el = now - p->t0, rate = el > 0 ? p->done / el : 0;
    char eta[32] = "";
    if (!final && p->total > 0 && rate > 0)
        snprintf(eta, sizeof eta, "  ETA %.0f s", (p->total - p->done) / rate);
    fprintf(stderr, "%s%s: %.1f/%.1f %s  %.1f %s/s%s%s%s", p->tty ? "\r" : "", p->phase,
            p->done / p->scale, p->total / p->scale, p->unit, rate / p->scale, p->unit,
            final ? "  done in " : "", "", eta);
    if (final) fprintf(stderr, "%.1f s", el);
    fprintf(stderr, p->tty ? (final ? "\033[K\n" : "\033[K") : "\n");
    fflush(stderr);
}

static void merge_progress(uint64_t done, uint64_t total, void *user)
{
    progress *p = user;
    p->done = (double)done;
    p->total = (double)total;
    progress_show(p, 0);
}

/* ---- input files ----------------------------------------------------------------------------------- */

static fm_status input_size(const char *path, uint64_t *size)
{
    struct stat sb;
    if (stat(path, &sb) != 0)
        return FM_ERR(FM_ERR_INPUT, "cannot read input %s: %s", path, strerror(errno));
    if (S_ISDIR(sb.st_mode)) return FM_ERR(FM_ERR_INPUT, "input %s is a directory, not a file", path);
    if (access(path, R_OK) != 0)
        return FM_ERR(FM_ERR_INPUT, "cannot read input %s: %s", path, strerror(errno));
    *size = (uint64_t)sb.st_size;
    return NULL;
}

/* ---- the train/val splitter ------------------------------------------------------------------------ */

/* Segment k (numbered over all inputs) goes to /val when floor((k+1) f + u) > floor(k f + u): exactly
 * a fraction f of segments, evenly spread, with the phase u in [0,1) drawn from the seed. An eot is
 * written before every piece that does not continue the previous piece of the same split (a new
 * document, or a jump over segments that went to the other split). */
typedef struct splitter {
    fm_dataset_writer *w;
    double f, u;
    uint32_t eot;
    uint64_t seg;          /* index of the next segment */
    int64_t last_seg[2];   /* last segment written to each split, -1 none */
    int last_doc[2];       /* document of that segment */
} splitter;

static void splitter_init(splitter *s, fm_dataset_writer *w, double f, uint64_t seed, uint32_t eot)
{
    memset(s, 0, sizeof *s);
    s->w = w;
    s->f = f;
    uint64_t state = seed;
    s->u = fm_rng_uniform(&state); /* the first draw of the seed's stream */
    s->eot = eot;
    s->last_seg[0] = s->last_seg[1] = -1;
    s->last_doc[0] = s->last_doc[1] = -1;
}

static fm_status splitter_emit(splitter *s, int doc, const uint32_t *ids, size_t n)
{
    uint64_t k = s->seg++;
    int val = s->f > 0 && floor((double)(k + 1) * s->f + s->u) > floor((double)k * s->f + s->u);
    int sp = val ? 1 : 0;
    if (s->last_seg[sp] >= 0 && (s->last_seg[sp] != (int64_t)k - 1 || s->last_doc[sp] != doc))
        FM_TRY(fm_dataset_writer_append(s->w, sp ? FM_SPLIT_VAL : FM_SPLIT_TRAIN, &s->eot, 1));
    FM_TRY(fm_dataset_writer_append(s->w, sp ? FM_SPLIT_VAL : FM_SPLIT_TRAIN, ids, n));
    s->last_seg[sp] = (int64_t)k;
    s->last_doc[sp] = doc;
    return NULL;
}

/* ---- options ----------------------------------------------------------------------------------------- */

typedef struct prep {
    fm_cli_list inputs, tokens, pos;
    const char *output, *vocab_s, *eot_s, *dtype_s, *valf_s, *seed_s, *tokfrom, *trainbytes_s;
    int force, quiet;
    int text_mode;
    uint64_t vocab;
    uint64_t eot;
    int dtype_bytes;
    double valf;
    uint64_t seed;
    uint64_t train_bytes;
    const char **files;
    int nfiles;
    uint64_t *sizes;
    uint64_t total;
    int tty;
} prep;

/* ---- text mode --------------------------------------------------------------------------------------- */

/* Streams a file through `fn` in pieces that end at safe cuts of the pre-split rule of `tok` (fmtrain's
 * rule when tok is NULL): at most `piece` bytes each, except that a piece with no safe cut (one word
 * longer than the piece, possible only with the unbounded rules of tokenizers read from tokenizer.json)
 * is cut at `piece` and counted in *forced. Reads FM_PREPARE_BLOCK at a time. Stops early when fn sets
 * *stop. */
typedef fm_status (*piece_fn)(void *user, int doc, const uint8_t *text, size_t n, int *stop);

static fm_status stream_text(const char *path, int doc, size_t piece, uint8_t *buf, const fm_tokenizer *tok,
                             piece_fn fn, void *user, progress *pg, int *stop, uint64_t *forced)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return FM_ERR(FM_ERR_INPUT, "cannot read input %s: %s", path, strerror(errno));
    fm_status st = NULL;
    size_t have = 0; /* bytes in buf */
    int eof = 0;
    while (!*stop) {
        if (!eof && have < FM_PREPARE_BLOCK) {
            size_t got = fread(buf + have, 1, 2 * FM_PREPARE_BLOCK - have, fp);
            if (ferror(fp)) {
                st = FM_ERR(FM_ERR_IO, "error reading %s: %s", path, strerror(errno));
                break;
            }
            if (got == 0) eof = 1;
            have += got;
            pg->done += (double)got;
            progress_show(pg, 0);
        }
        if (have == 0) break;
        size_t pos = 0;
        /* hand out pieces while a full piece (plus lookahead) is buffered, or everything at eof */
        while (!*stop && (have - pos > piece + 1 || (eof && pos < have))) {
            size_t n = have - pos;
            if (n > piece) {
                /* the words that end in the first `piece` bytes whatever follows */
                size_t c = tok ? fm_tokenizer_cut(tok, buf + pos, piece) : fm_tokenizer_safe_cut(buf + pos, piece);
                if (!c) ++*forced;
                n = c ? c : piece;
            }
            FM_TRY_GOTO(st, done, fn(user, doc, buf + pos, n, stop));
            pos += n;
        }
        memmove(buf, buf + pos, have - pos);
        have -= pos;
        if (eof && have == 0) break;
    }
done:
    fclose(fp);
    return st;
}

typedef struct train_ctx {
    fm_tokenizer_trainer *tr;
    uint64_t fed, limit;
} train_ctx;

static fm_status train_piece(void *user, int doc, const uint8_t *text, size_t n, int *stop)
{
    (void)doc;
    train_ctx *c = user;
    FM_TRY(fm_tokenizer_trainer_feed(c->tr, text, n));
    c->fed += n;
    if (c->fed >= c->limit || fm_tokenizer_trainer_distinct_words(c->tr) >= FM_PREPARE_MAX_WORDS) *stop = 1;
    return NULL;
}

typedef struct encode_ctx {
    fm_tokenizer *tok;
    fm_tokenizer_ids ids;
    splitter sp;
} encode_ctx;

static fm_status encode_piece(void *user, int doc, const uint8_t *text, size_t n, int *stop)
{
    (void)stop;
    encode_ctx *c = user;
    c->ids.n = 0;
    FM_TRY(fm_tokenizer_encode(c->tok, text, n, &c->ids));
    return splitter_emit(&c->sp, doc, c->ids.ids, c->ids.n);
}

/* Segment length: about 1/16 of the val share, within [lo, hi]. */
static uint64_t segment_len(uint64_t total, double f, uint64_t lo, uint64_t hi)
{
    double s = (double)total * f / 16.0;
    if (s < (double)lo) return lo;
    if (s > (double)hi) return hi;
    return (uint64_t)s;
}

/* 1 when `path` looks like JSON (its first non-blank byte is '{'): a Hugging Face tokenizer.json. */
static int is_json_file(const char *path)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return 0;
    int c;
    while ((c = fgetc(fp)) == ' ' || c == '\n' || c == '\r' || c == '\t') {
    }
    fclose(fp);
    return c == '{';
}

static fm_status load_tokenizer_from(const char *path, fm_tokenizer **tok)
{
    if (is_json_file(path))
        return fm_status_prefix(fm_hf_read_tokenizer(path, -1, tok), "--tokenizer-from %s: ", path);
    char fmt[64];
    FM_TRY(fm_dataset_file_format(path, fmt, sizeof fmt));
    fm_h5_quiet q;
    fm_h5_quiet_begin(&q);
    fm_status st = NULL;
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0)
        st = FM_ERR(FM_ERR_INPUT, "--tokenizer-from %s: cannot open the file with HDF5 (damaged?)", path);
    else if (!fm_tokenizer_exists(f, "tokenizer"))
        st = FM_ERR(FM_ERR_INPUT, "--tokenizer-from %s: the file (%s) stores no tokenizer", path, fmt);
    else st = fm_status_prefix(fm_tokenizer_load(f, "tokenizer", tok), "--tokenizer-from %s: ", path);
    if (f >= 0) H5Fclose(f);
    fm_h5_quiet_end(&q);
    return st;
}

static void describe_source(const prep *p, char *buf, size_t size)
{
    size_t o = (size_t)snprintf(buf, size, "%s: ", p->text_mode ? "text" : "tokens");
    for (int i = 0; i < p->nfiles && o < size; i++)
        o += (size_t)snprintf(buf + o, size - o, "%s%s", i ? ", " : "", p->files[i]);
    if (o < size) {
        char b[32];
        snprintf(buf + o, size - o, " (%s)", fm_util_format_bytes((double)p->total, b, sizeof b));
    }
}

static fm_status run_text(prep *p, const char *tmp, const char *source)
{
    fm_status st = NULL;
    fm_tokenizer *tok = NULL;
    uint8_t *buf = malloc(2 * FM_PREPARE_BLOCK + 16);
    encode_ctx ec = {0};
    fm_dataset_writer *w = NULL;
    train_ctx tc = {0};
    uint64_t forced = 0;
    if (!buf) return FM_ERR(FM_ERR_NOMEM, "out of memory for the read buffer");
    progress pg;
    if (p->tokfrom) {
        FM_TRY_GOTO(st, done, load_tokenizer_from(p->tokfrom, &tok));
        if (p->vocab_s && fm_tokenizer_vocab_size(tok) != p->vocab) {
            st = FM_ERR(FM_ERR_USAGE, "--vocab-size %" PRIu64 " differs from the %u ids of the tokenizer in %s",
                        p->vocab, fm_tokenizer_vocab_size(tok), p->tokfrom);
            goto done;
        }
        p->vocab = fm_tokenizer_vocab_size(tok);
    } else {
        FM_TRY_GOTO(st, done, fm_tokenizer_trainer_new(&tc.tr));
        tc.limit = p->train_bytes;
        double tb = (double)(p->total < p->train_bytes ? p->total : p->train_bytes);
        progress_start(&pg, "tokenizer: counting words", tb, "MB", 1e6, p->tty, p->quiet);
        int stop = 0;
        for (int i = 0; i < p->nfiles && !stop; i++)
            FM_TRY_GOTO(st, done, stream_text(p->files[i], i, FM_PREPARE_BLOCK - 4096, buf, NULL, train_piece, &tc,
                                              &pg, &stop, &forced));
        progress_show(&pg, 1);
        if (!p->quiet && tc.fed < p->total)
            fprintf(stderr, "tokenizer: trained on the first %" PRIu64 " bytes (%zu distinct words)\n", tc.fed,
                    fm_tokenizer_trainer_distinct_words(tc.tr));
        progress_start(&pg, "tokenizer: merging", (double)(p->vocab - FM_TOKENIZER_MIN_VOCAB), "merges", 1,
                       p->tty, p->quiet);
        FM_TRY_GOTO(st, done, fm_tokenizer_trainer_finish(tc.tr, (uint32_t)p->vocab, merge_progress, &pg, &tok));
        progress_show(&pg, 1);
    }
    uint32_t eot = fm_tokenizer_eot_id(tok);
    FM_TRY_GOTO(st, done, fm_dataset_writer_open(tmp, p->vocab, eot, tok, source, &w));
    ec.tok = tok;
    splitter_init(&ec.sp, w, p->valf, p->seed, eot);
    size_t seg = (size_t)segment_len(p->total, p->valf, 4096, FM_PREPARE_BLOCK - 4096);
    progress_start(&pg, "encoding", (double)p->total, "MB", 1e6, p->tty, p->quiet);
    int stop = 0;
    forced = 0;
    for (int i = 0; i < p->nfiles; i++)
        FM_TRY_GOTO(st, done, stream_text(p->files[i], i, seg, buf, tok, encode_piece, &ec, &pg, &stop, &forced));
    progress_show(&pg, 1);
    if (forced && !p->quiet)
        fprintf(stderr, "warning: %" PRIu64 " word%s of the pre-split rule (%s) longer than %zu bytes %s cut there; "
                        "Hugging Face's tokenizers would encode %s whole, so the ids differ inside %s\n",
                forced, forced == 1 ? "" : "s", fm_presplit_name(fm_tokenizer_presplit(tok)), seg,
                forced == 1 ? "was" : "were", forced == 1 ? "it" : "each", forced == 1 ? "it" : "them");
    FM_TRY_GOTO(st, done, fm_dataset_writer_close(&w));
done:
    fm_dataset_writer_free(&w);
    fm_tokenizer_ids_free(&ec.ids);
    fm_tokenizer_trainer_free(&tc.tr);
    fm_tokenizer_free(&tok);
    free(buf);
    return st;
}

/* ---- tokens mode ------------------------------------------------------------------------------------ */

typedef struct token_file {
    uint64_t offset; /* bytes before the first token (0 raw, 1024 with a header) */
    uint64_t count;  /* tokens */
    int width;       /* 2 or 4 */
} token_file;

static fm_status token_file_open(const char *path, uint64_t size, int raw_width, token_file *tf)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return FM_ERR(FM_ERR_INPUT, "cannot read %s: %s", path, strerror(errno));
    unsigned char h[12];
    size_t got = fread(h, 1, sizeof h, fp);
    fclose(fp);
    int32_t magic = 0, version = 0, count = 0;
    if (got == sizeof h) {
        magic = (int32_t)((uint32_t)h[0] | (uint32_t)h[1] << 8 | (uint32_t)h[2] << 16 | (uint32_t)h[3] << 24);
        version = (int32_t)((uint32_t)h[4] | (uint32_t)h[5] << 8 | (uint32_t)h[6] << 16 | (uint32_t)h[7] << 24);
        count = (int32_t)((uint32_t)h[8] | (uint32_t)h[9] << 8 | (uint32_t)h[10] << 16 | (uint32_t)h[11] << 24);
    }
    if (size >= 1024 && magic == FM_LLMC_MAGIC) {
        if (version != 1 && version != 2)
            return FM_ERR(FM_ERR_INPUT, "%s has the llm.c token-file magic but version %d (expected 1 = uint16 "
                                        "or 2 = uint32)",
                          path, version);
        tf->width = version == 1 ? 2 : 4;
        tf->offset = 1024;
        if (count < 0) return FM_ERR(FM_ERR_INPUT, "%s: header token count %d is negative", path, count);
        tf->count = (uint64_t)count;
        uint64_t want = 1024 + tf->count * (uint64_t)tf->width;
        if (size != want)
            return FM_ERR(FM_ERR_INPUT,
                          "%s: its header says %" PRIu64 " tokens (%" PRIu64 " bytes with the header) but the file "
                          "has %" PRIu64 " bytes (truncated or not a token file)",
                          path, tf->count, want, size);
        return NULL;
    }
    tf->width = raw_width;
    tf->offset = 0;
    if (size % (uint64_t)raw_width != 0)
        return FM_ERR(FM_ERR_INPUT, "%s has %" PRIu64 " bytes, not a whole number of %d-byte tokens (wrong --dtype?)",
                      path, size, raw_width);
    tf->count = size / (uint64_t)raw_width;
    return NULL;
}

static fm_status run_tokens(prep *p, const char *tmp, const char *source)
{
    fm_status st = NULL;
    fm_tokenizer *tok = NULL;
    fm_dataset_writer *w = NULL;
    token_file *tf = calloc((size_t)p->nfiles, sizeof *tf);
    uint32_t *ids = NULL;
    unsigned char *raw = NULL;
    FILE *fp = NULL;
    if (!tf) return FM_ERR(FM_ERR_NOMEM, "out of memory");
    uint64_t total_tokens = 0;
    for (int i = 0; i < p->nfiles; i++) {
        FM_TRY_GOTO(st, done, token_file_open(p->files[i], p->sizes[i], p->dtype_bytes, &tf[i]));
        total_tokens += tf[i].count;
    }
    if (total_tokens == 0) {
        st = FM_ERR(FM_ERR_INPUT, "the token files hold no tokens");
        goto done;
    }
    if (p->tokfrom) {
        FM_TRY_GOTO(st, done, load_tokenizer_from(p->tokfrom, &tok));
        if (fm_tokenizer_vocab_size(tok) != p->vocab) {
            st = FM_ERR(FM_ERR_USAGE, "--vocab-size %" PRIu64 " differs from the %u ids of the tokenizer in %s",
                        p->vocab, fm_tokenizer_vocab_size(tok), p->tokfrom);
            goto done;
        }
    }
    FM_TRY_GOTO(st, done, fm_dataset_writer_open(tmp, p->vocab, p->eot, tok, source, &w));
    splitter sp;
    splitter_init(&sp, w, p->valf, p->seed, (uint32_t)p->eot);
    size_t seg = (size_t)segment_len(total_tokens, p->valf, 1024, (uint64_t)1 << 20);
    ids = malloc(seg * sizeof *ids);
    raw = malloc(seg * 4);
    if (!ids || !raw) {
        st = FM_ERR(FM_ERR_NOMEM, "out of memory for the import buffers");
        goto done;
    }
    progress pg;
    progress_start(&pg, "importing", (double)p->total, "MB", 1e6, p->tty, p->quiet);
    for (int i = 0; i < p->nfiles; i++) {
        fp = fopen(p->files[i], "rb");
        if (!fp || fseek(fp, (long)tf[i].offset, SEEK_SET) != 0) {
            st = FM_ERR(FM_ERR_INPUT, "cannot read %s: %s", p->files[i], strerror(errno));
            goto done;
        }
        uint64_t at = 0;
        while (at < tf[i].count) {
            size_t n = tf[i].count - at < seg ? (size_t)(tf[i].count - at) : seg;
            size_t bytes = n * (size_t)tf[i].width;
            if (fread(raw, 1, bytes, fp) != bytes) {
                st = FM_ERR(FM_ERR_IO, "error reading %s at token %" PRIu64 ": %s", p->files[i], at,
                            ferror(fp) ? strerror(errno) : "unexpected end of file");
                goto done;
            }
            for (size_t k = 0; k < n; k++) {
                const unsigned char *b = raw + k * (size_t)tf[i].width;
                uint32_t v = tf[i].width == 2 ? (uint32_t)(b[0] | b[1] << 8)
                                              : ((uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
                                                 (uint32_t)b[3] << 24);
                if (v >= p->vocab) {
                    st = FM_ERR(FM_ERR_INPUT,
                                "%s: token id %u at token offset %" PRIu64 " (byte offset %" PRIu64
                                ") is >= --vocab-size %" PRIu64,
                                p->files[i], v, at + k, tf[i].offset + (at + k) * (uint64_t)tf[i].width, p->vocab);
                    goto done;
                }
                ids[k] = v;
            }
            FM_TRY_GOTO(st, done, splitter_emit(&sp, i, ids, n));
            at += n;
            pg.done += (double)bytes;
            progress_show(&pg, 0);
        }
        fclose(fp);
        fp = NULL;
    }
    progress_show(&pg, 1);
    FM_TRY_GOTO(st, done, fm_dataset_writer_close(&w));
done:
    if (fp) fclose(fp);
    fm_dataset_writer_free(&w);
    fm_tokenizer_free(&tok);
    free(ids);
    free(raw);
    free(tf);
    return st;
}

/* ---- the command ------------------------------------------------------------------------------------ */

static fm_status parse_options(prep *p)
{
    if (p->inputs.n && p->tokens.n)
        return FM_ERR(FM_ERR_USAGE, "fmtrain prepare: give either --input (text) or --tokens (token files), not both");
    if (!p->inputs.n && !p->tokens.n)
        return FM_ERR(FM_ERR_USAGE, "fmtrain prepare: no input; give --input FILE... (text) or --tokens FILE... "
                                    "(token ids); see 'fmtrain help prepare'");
    p->text_mode = p->inputs.n > 0;
    const fm_cli_list *l = p->text_mode ? &p->inputs : &p->tokens;
    p->nfiles = l->n + p->pos.n;
    p->files = malloc((size_t)p->nfiles * sizeof *p->files);
    p->sizes = calloc((size_t)p->nfiles, sizeof *p->sizes);
    if (!p->files || !p->sizes) return FM_ERR(FM_ERR_NOMEM, "out of memory");
    for (int i = 0; i < l->n; i++) p->files[i] = l->items[i];
    for (int i = 0; i < p->pos.n; i++) p->files[l->n + i] = p->pos.items[i];
    if (!p->output) return FM_ERR(FM_ERR_USAGE, "fmtrain prepare: --output DATA.h5 is required");
    long long v;
    if (p->text_mode) {
        if (!p->vocab_s && !p->tokfrom)
            return FM_ERR(FM_ERR_USAGE, "fmtrain prepare: --vocab-size N is required (or --tokenizer-from FILE)");
        if (p->eot_s) return FM_ERR(FM_ERR_USAGE, "fmtrain prepare: --eot is for --tokens mode; text mode uses id N-1");
        if (p->dtype_s) return FM_ERR(FM_ERR_USAGE, "fmtrain prepare: --dtype is for --tokens mode");
        if (p->vocab_s) {
            FM_TRY(fm_cli_int("--vocab-size", p->vocab_s, FM_TOKENIZER_MIN_VOCAB, FM_TOKENIZER_MAX_VOCAB, &v));
            p->vocab = (uint64_t)v;
        }
    } else {
        if (!p->vocab_s) return FM_ERR(FM_ERR_USAGE, "fmtrain prepare: --tokens needs --vocab-size N");
        if (!p->eot_s) return FM_ERR(FM_ERR_USAGE, "fmtrain prepare: --tokens needs --eot ID (the end-of-text id)");
        FM_TRY(fm_cli_int("--vocab-size", p->vocab_s, 256, (long long)FM_DATASET_MAX_VOCAB, &v));
        p->vocab = (uint64_t)v;
        FM_TRY(fm_cli_int("--eot", p->eot_s, 0, (long long)p->vocab - 1, &v));
        p->eot = (uint64_t)v;
        p->dtype_bytes = p->vocab <= 65536 ? 2 : 4;
        if (p->dtype_s) {
            if (strcmp(p->dtype_s, "uint16") == 0) p->dtype_bytes = 2;
            else if (strcmp(p->dtype_s, "uint32") == 0) p->dtype_bytes = 4;
            else return FM_ERR(FM_ERR_USAGE, "--dtype: expected uint16 or uint32, got '%s'", p->dtype_s);
        }
    }
    p->valf = 0.01;
    if (p->valf_s) FM_TRY(fm_cli_double("--val-fraction", p->valf_s, 0.0, 0.5, &p->valf));
    p->seed = 1;
    if (p->seed_s) {
        FM_TRY(fm_cli_int("--seed", p->seed_s, 0, INT64_MAX, &v));
        p->seed = (uint64_t)v;
    }
    p->train_bytes = (uint64_t)1 << 30;
    if (p->trainbytes_s) {
        FM_TRY(fm_cli_int("--tokenizer-train-bytes", p->trainbytes_s, 1, INT64_MAX, &v));
        p->train_bytes = (uint64_t)v;
    }
    for (int i = 0; i < p->nfiles; i++) {
        FM_TRY(input_size(p->files[i], &p->sizes[i]));
        p->total += p->sizes[i];
    }
    if (p->total == 0)
        return FM_ERR(FM_ERR_INPUT, "the input is empty (%d file%s, 0 bytes)", p->nfiles, p->nfiles == 1 ? "" : "s");
    /* output checks */
    struct stat sb;
    if (stat(p->output, &sb) == 0) {
        if (S_ISDIR(sb.st_mode)) return FM_ERR(FM_ERR_USAGE, "--output %s is a directory", p->output);
        if (!p->force)
            return FM_ERR(FM_ERR_USAGE, "%s exists; use --force to overwrite it", p->output);
    }
    char dir[4096];
    fm_util_strlcpy(dir, p->output, sizeof dir);
    char *slash = strrchr(dir, '/');
    if (!slash) strcpy(dir, ".");
    else if (slash == dir) dir[1] = 0;
    else *slash = 0;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return FM_ERR(FM_ERR_IO, "the output directory %s does not exist", dir);
    if (access(dir, W_OK) != 0)
        return FM_ERR(FM_ERR_IO, "the output directory %s is not writable: %s", dir, strerror(errno));
    if (stat(p->output, &sb) == 0)
        for (int i = 0; i < p->nfiles; i++) {
            struct stat si;
            if (stat(p->files[i], &si) == 0 && si.st_ino == sb.st_ino && si.st_dev == sb.st_dev)
                return FM_ERR(FM_ERR_USAGE, "--output %s is also an input", p->output);
        }
    return NULL;
}

static fm_status prepare_run(int argc, char **argv, const fm_cmd_env *env)
{
    prep p;
    memset(&p, 0, sizeof p);
    const fm_cli_opt opts[] = {
        {"input", FM_CLI_LIST, &p.inputs},
        {"tokens", FM_CLI_LIST, &p.tokens},
        {"output", FM_CLI_STRING, &p.output},
        {"vocab-size", FM_CLI_STRING, &p.vocab_s},
        {"eot", FM_CLI_STRING, &p.eot_s},
        {"dtype", FM_CLI_STRING, &p.dtype_s},
        {"val-fraction", FM_CLI_STRING, &p.valf_s},
        {"seed", FM_CLI_STRING, &p.seed_s},
        {"tokenizer-from", FM_CLI_STRING, &p.tokfrom},
        {"tokenizer-train-bytes", FM_CLI_STRING, &p.trainbytes_s},
        {"force", FM_CLI_FLAG, &p.force},
        {"quiet", FM_CLI_FLAG, &p.quiet},
    };
    fm_status st = NULL;
    char *tmp = NULL;
    FM_TRY_GOTO(st, done, fm_cli_parse("prepare", argc, argv, opts, (int)(sizeof opts / sizeof opts[0]), &p.pos));
    FM_TRY_GOTO(st, done, parse_options(&p));
    p.tty = env->stderr_is_tty;
    size_t tl = strlen(p.output) + 32;
    tmp = malloc(tl);
    if (!tmp) {
        st = FM_ERR(FM_ERR_NOMEM, "out of memory");
        goto done;
    }
    snprintf(tmp, tl, "%s.tmp.%ld", p.output, (long)getpid());
    char source[1024];
    describe_source(&p, source, sizeof source);
    double t0 = fm_util_now();
    st = p.text_mode ? run_text(&p, tmp, source) : run_tokens(&p, tmp, source);
    if (st) {
        unlink(tmp);
        st = fm_status_trace(st, __FILE__, __LINE__, __func__);
        goto done;
    }
    if (rename(tmp, p.output) != 0) {
        st = FM_ERR(FM_ERR_IO, "cannot rename %s to %s: %s", tmp, p.output, strerror(errno));
        unlink(tmp);
        goto done;
    }
    fm_dataset_info info;
    FM_TRY_GOTO(st, done, fm_dataset_probe(p.output, &info));
    if (!p.quiet)
        printf("wrote %s: %" PRIu64 " train + %" PRIu64 " val tokens, vocab %" PRIu64 " (%s), tokenizer %s, in %.1f s\n",
               p.output, info.train_tokens, info.val_tokens, info.vocab_size,
               info.token_bytes == 2 ? "uint16" : "uint32", info.tokenizer_kind, fm_util_now() - t0);
done:
    free(tmp);
    free(p.files);
    free(p.sizes);
    fm_cli_list_free(&p.inputs);
    fm_cli_list_free(&p.tokens);
    fm_cli_list_free(&p.pos);
    return st;
}

const fm_command fm_cmd_prepare = {
    .name = "prepare",
    .summary = "make a token dataset (HDF5) from text or token files",
    .help = prepare_help,
    .needs_mpi = 0,
    .run = prepare_run,
};

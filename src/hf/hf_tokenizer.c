/* hf_tokenizer.c — tokenizer.json writer and reader (hf_tokenizer.h). */
#define _POSIX_C_SOURCE 200809L
#include "hf/hf_tokenizer.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hf/json.h"

/* ---- GPT-2's byte <-> character table ---------------------------------------------------------- */

/* Byte b is written as code point byte_cp[b]: printable Latin-1 bytes as themselves, the others as
 * 256, 257, ... in byte order (GPT-2's bytes_to_unicode). */
static void byte_table(uint32_t byte_cp[256])
{
    uint32_t next = 256;
    for (uint32_t b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        byte_cp[b] = printable ? b : next++;
    }
}

/* The code point -> byte inverse (cp < 324), -1 elsewhere. */
static void char_table(int cp_byte[324])
{
    uint32_t byte_cp[256];
    byte_table(byte_cp);
    for (int i = 0; i < 324; i++) cp_byte[i] = -1;
    for (int b = 0; b < 256; b++) cp_byte[byte_cp[b]] = b;
}

static void put_mapped(FILE *out, const uint8_t *b, size_t n, const uint32_t byte_cp[256])
{
    fputc('"', out);
    for (size_t i = 0; i < n; i++) {
        uint32_t cp = byte_cp[b[i]];
        if (cp == '"' || cp == '\\') {
            fputc('\\', out);
            fputc((int)cp, out);
        } else if (cp < 0x80) fputc((int)cp, out);
        else if (cp < 0x800) {
            fputc((int)(0xC0 | (cp >> 6)), out);
            fputc((int)(0x80 | (cp & 0x3F)), out);
        }
    }
    fputc('"', out);
}

/* ---- export ------------------------------------------------------------------------------------ */

static fm_status write_file(const char *path, const char *text, size_t len)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *fp = fopen(tmp, "wb");
    if (!fp) return FM_ERR(FM_ERR_IO, "cannot create %s: %s", tmp, strerror(errno));
    int bad = fwrite(text, 1, len, fp) != len || fflush(fp) != 0 || fsync(fileno(fp)) != 0;
    if (fclose(fp) != 0) bad = 1;
    if (bad || rename(tmp, path) != 0) {
        fm_status st = FM_ERR(FM_ERR_IO, "cannot write %s: %s", path, strerror(errno));
        unlink(tmp);
        return st;
    }
    return NULL;
}

static void put_pre_tokenizer(FILE *m, fm_presplit rule)
{
    if (rule == FM_PRESPLIT_GPT2) {
        fprintf(m, "  \"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": "
                   "true, \"use_regex\": true},\n");
        return;
    }
    const char *re = fm_presplit_regex(rule);
    fprintf(m, "  \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [\n");
    fprintf(m, "    {\"type\": \"Split\", \"pattern\": {\"Regex\": ");
    fm_json_put_string(m, re, strlen(re));
    fprintf(m, "}, \"behavior\": \"Isolated\", \"invert\": false},\n");
    fprintf(m, "    {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": true, \"use_regex\": "
               "false}]},\n");
}

static void put_special(FILE *m, const fm_tokenizer *tok, uint32_t id)
{
    size_t l;
    const uint8_t *b = fm_tokenizer_token(tok, id, &l);
    fm_json_put_string(m, (const char *)b, l);
}

/* A ByteLevel post-processor (offsets only); with a begin-of-text id, a Sequence of it and the
 * TemplateProcessing that prepends that token (Llama 3's: "BOS $A" and "BOS $A BOS:1 $B:1"). */
static void put_post_processor(FILE *m, const fm_tokenizer *tok)
{
    const char *byte_level = "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": false, "
                             "\"use_regex\": false}";
    const int64_t bos = fm_tokenizer_bos_id(tok);
    if (bos < 0) {
        fprintf(m, "  \"post_processor\": %s,\n", byte_level);
        return;
    }
    const uint32_t b = (uint32_t)bos;
    fprintf(m, "  \"post_processor\": {\"type\": \"Sequence\", \"processors\": [\n    %s,\n", byte_level);
    fprintf(m, "    {\"type\": \"TemplateProcessing\",\n     \"single\": [{\"SpecialToken\": {\"id\": ");
    put_special(m, tok, b);
    fprintf(m, ", \"type_id\": 0}}, {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}],\n"
               "     \"pair\": [{\"SpecialToken\": {\"id\": ");
    put_special(m, tok, b);
    fprintf(m, ", \"type_id\": 0}}, {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}, {\"SpecialToken\": {\"id\": ");
    put_special(m, tok, b);
    fprintf(m, ", \"type_id\": 1}}, {\"Sequence\": {\"id\": \"B\", \"type_id\": 1}}],\n     \"special_tokens\": {");
    put_special(m, tok, b);
    fprintf(m, ": {\"id\": ");
    put_special(m, tok, b);
    fprintf(m, ", \"ids\": [%u], \"tokens\": [", b);
    put_special(m, tok, b);
    fprintf(m, "]}}}]},\n");
}

fm_status fm_hf_export_tokenizer(const fm_tokenizer *tok, const char *dir, int model_max_length, FILE *log)
{
    if (fm_tokenizer_version(tok) < 2)
        return FM_ERR(FM_ERR_USAGE,
                      "the tokenizer is a version-1 fmtrain tokenizer, whose pre-split cuts words at 256 bytes "
                      "(possibly inside a UTF-8 character): no tokenizer.json encodes text exactly like it. "
                      "Re-run `fmtrain prepare` with this fmtrain to make a version-2 tokenizer (and train on "
                      "that dataset), or export the model alone with --no-tokenizer");
    const uint32_t V = fm_tokenizer_vocab_size(tok);
    for (uint32_t id = 0; id < V; id++)
        if (fm_tokenizer_is_special(tok, id)) {
            size_t l;
            const uint8_t *b = fm_tokenizer_token(tok, id, &l);
            if (!fm_json_utf8_valid(b, l))
                return FM_ERR(FM_ERR_INPUT, "special token %u is not valid UTF-8 text; tokenizer.json cannot "
                              "hold it", id);
        }
    uint32_t byte_cp[256];
    byte_table(byte_cp);
    char *text = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&text, &len);
    if (!m) return FM_ERR(FM_ERR_NOMEM, "out of memory writing tokenizer.json");
    fprintf(m, "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n  \"added_tokens\": [");
    int first = 1;
    for (uint32_t id = 0; id < V; id++) {
        if (!fm_tokenizer_is_special(tok, id)) continue;
        fprintf(m, "%s\n    {\"id\": %u, \"content\": ", first ? "" : ",", id);
        put_special(m, tok, id);
        fprintf(m, ", \"single_word\": false, \"lstrip\": false, \"rstrip\": false, \"normalized\": false, "
                   "\"special\": true}");
        first = 0;
    }
    fprintf(m, "\n  ],\n  \"normalizer\": null,\n");
    put_pre_tokenizer(m, fm_tokenizer_presplit(tok));
    put_post_processor(m, tok);
    fprintf(m, "  \"decoder\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": true, "
               "\"use_regex\": true},\n");
    fprintf(m, "  \"model\": {\n    \"type\": \"BPE\",\n    \"dropout\": null,\n    \"unk_token\": null,\n"
               "    \"continuing_subword_prefix\": null,\n    \"end_of_word_suffix\": null,\n"
               "    \"fuse_unk\": false,\n    \"byte_fallback\": false,\n");
    if (fm_tokenizer_ignore_merges(tok)) fprintf(m, "    \"ignore_merges\": true,\n");
    fprintf(m, "    \"vocab\": {");
    /* tokenizers gives an added token the id it has in the model's vocabulary, else the next id after
     * the vocabulary (ignoring the id written in added_tokens): special tokens that are exactly the last
     * ids (fmtrain's end-of-text, Llama 3's) stay out of the vocabulary; otherwise (GPT-2's layout, a
     * special token among the ordinary ones) each is also a vocabulary entry under its text. */
    uint32_t n_ordinary = 0;
    for (uint32_t id = 0; id < V; id++) n_ordinary += !fm_tokenizer_is_special(tok, id);
    int specials_last = 1;
    for (uint32_t id = n_ordinary; id < V; id++) specials_last &= fm_tokenizer_is_special(tok, id);
    first = 1;
    for (uint32_t id = 0; id < V; id++) {
        size_t l;
        const uint8_t *b = fm_tokenizer_token(tok, id, &l);
        if (fm_tokenizer_is_special(tok, id)) {
            if (specials_last) continue;
            fprintf(m, "%s\n      ", first ? "" : ",");
            fm_json_put_string(m, (const char *)b, l);
        } else {
            fprintf(m, "%s\n      ", first ? "" : ",");
            put_mapped(m, b, l, byte_cp);
        }
        fprintf(m, ": %u", id);
        first = 0;
    }
    fprintf(m, "\n    },\n    \"merges\": [");
    uint32_t nm = fm_tokenizer_n_merges(tok);
    for (uint32_t k = 0; k < nm; k++) {
        uint32_t a, b, c;
        fm_tokenizer_merge(tok, k, &a, &b, &c);
        size_t la, lb;
        const uint8_t *pa = fm_tokenizer_token(tok, a, &la), *pb = fm_tokenizer_token(tok, b, &lb);
        /* "left right": byte-level strings never hold a space (byte 0x20 is written as U+0120) */
        fprintf(m, "%s\n      \"", k ? "," : "");
        for (int half = 0; half < 2; half++) {
            const uint8_t *p = half ? pb : pa;
            size_t l = half ? lb : la;
            if (half) fputc(' ', m);
            for (size_t i = 0; i < l; i++) {
                uint32_t cp = byte_cp[p[i]];
                if (cp == '"' || cp == '\\') {
                    fputc('\\', m);
                    fputc((int)cp, m);
                } else if (cp < 0x80) fputc((int)cp, m);
                else {
                    fputc((int)(0xC0 | (cp >> 6)), m);
                    fputc((int)(0x80 | (cp & 0x3F)), m);
                }
            }
        }
        fputc('"', m);
    }
    fprintf(m, "\n    ]\n  }\n}\n");
    if (fclose(m) != 0) {
        free(text);
        return FM_ERR(FM_ERR_NOMEM, "out of memory writing tokenizer.json");
    }
    char path[4200];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    fm_status st = write_file(path, text, len);
    free(text);
    FM_TRY(st);
    if (log) fprintf(log, "wrote %s (%u tokens, %u merges, pre-split %s)\n", path, V, nm,
                     fm_presplit_name(fm_tokenizer_presplit(tok)));
    /* tokenizer_config.json: what transformers' AutoTokenizer needs besides tokenizer.json */
    text = NULL;
    m = open_memstream(&text, &len);
    if (!m) return FM_ERR(FM_ERR_NOMEM, "out of memory");
    uint32_t eot = fm_tokenizer_eot_id(tok);
    fprintf(m, "{\n  \"added_tokens_decoder\": {");
    first = 1;
    for (uint32_t id = 0; id < V; id++) {
        if (!fm_tokenizer_is_special(tok, id)) continue;
        fprintf(m, "%s\n    \"%u\": {\"content\": ", first ? "" : ",", id);
        put_special(m, tok, id);
        fprintf(m, ", \"lstrip\": false, \"normalized\": false, \"rstrip\": false, \"single_word\": false, "
                   "\"special\": true}");
        first = 0;
    }
    fprintf(m, "\n  },\n  \"bos_token\": ");
    put_special(m, tok, fm_tokenizer_bos_id(tok) >= 0 ? (uint32_t)fm_tokenizer_bos_id(tok) : eot);
    fprintf(m, ",\n  \"eos_token\": ");
    put_special(m, tok, eot);
    fprintf(m, ",\n  \"clean_up_tokenization_spaces\": false,\n  \"model_max_length\": %d,\n"
               "  \"tokenizer_class\": \"PreTrainedTokenizerFast\"\n}\n", model_max_length);
    fclose(m);
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    st = write_file(path, text, len);
    free(text);
    FM_TRY(st);
    if (log) fprintf(log, "wrote %s\n", path);
    return NULL;
}

/* ---- import ------------------------------------------------------------------------------------ */

/* A table from byte strings to ids (open addressing over FNV-1a hashes). */
typedef struct str_map {
    uint32_t *slot; /* id + 1, 0 empty */
    size_t cap;
    const uint64_t *off;
    const uint8_t *bytes;
} str_map;

static uint64_t fnv(const uint8_t *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static int64_t map_get(const str_map *m, const uint8_t *b, size_t n)
{
    size_t i = (size_t)fnv(b, n) & (m->cap - 1);
    while (m->slot[i]) {
        uint32_t id = m->slot[i] - 1;
        size_t l = (size_t)(m->off[id + 1] - m->off[id]);
        if (l == n && memcmp(m->bytes + m->off[id], b, n) == 0) return id;
        i = (i + 1) & (m->cap - 1);
    }
    return -1;
}

static void map_put(str_map *m, uint32_t id)
{
    size_t n = (size_t)(m->off[id + 1] - m->off[id]);
    size_t i = (size_t)fnv(m->bytes + m->off[id], n) & (m->cap - 1);
    while (m->slot[i]) i = (i + 1) & (m->cap - 1);
    m->slot[i] = id + 1;
}

/* Decodes a byte-level string (UTF-8 of code points < 324) into bytes; 0 when a character is not one
 * of the byte table's. */
static int unmap(const char *s, size_t n, const int cp_byte[324], uint8_t *out, size_t *outn)
{
    const uint8_t *u = (const uint8_t *)s;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        if (u[i] < 0x80) cp = u[i++];
        else if ((u[i] & 0xE0) == 0xC0 && i + 1 < n) {
            cp = (uint32_t)(u[i] & 0x1F) << 6 | (u[i + 1] & 0x3F);
            i += 2;
        } else return 0;
        if (cp >= 324 || cp_byte[cp] < 0) return 0;
        out[o++] = (uint8_t)cp_byte[cp];
    }
    *outn = o;
    return 1;
}

typedef struct tj {
    const char *what;
    uint32_t V;
    uint64_t *off;
    uint8_t *bytes;
    uint8_t *special;
    uint8_t *have; /* id seen */
    uint32_t *merges;
    uint32_t nm;
} tj;

static fm_status want_null_or(const fm_json *v, const char *what, const char *key, const char *empty_ok)
{
    if (!v || v->type == FM_JSON_NULL) return NULL;
    if (empty_ok && v->type == FM_JSON_STRING && v->len == 0) return NULL;
    if (v->type == FM_JSON_FALSE) return NULL;
    return FM_ERR(FM_ERR_INPUT, "%s: model.%s is set (byte %zu); fmtrain's byte-level BPE has none, so it would "
                  "not encode like this tokenizer", what, key, v->offset);
}

static fm_status want_flag(const fm_json *obj, const char *key, int want, const char *what, const char *ctx)
{
    const fm_json *v = fm_json_get(obj, key);
    if (!v) return NULL;
    char w[400];
    snprintf(w, sizeof w, "%s: %s.%s", what, ctx, key);
    int b;
    FM_TRY(fm_json_want_bool(v, w, &b));
    if (b != want)
        return FM_ERR(FM_ERR_INPUT, "%s is %s; fmtrain encodes like tokenizers only with %s = %s", w,
                      b ? "true" : "false", key, want ? "true" : "false");
    return NULL;
}

static int is_type(const fm_json *v, const char *t)
{
    const fm_json *ty = fm_json_get(v, "type");
    return ty && ty->type == FM_JSON_STRING && strcmp(ty->str, t) == 0;
}

/* One piece of a template: {"SpecialToken": {"id": S, "type_id": n}} (*special = 1, *id = S) or
 * {"Sequence": {"id": "A"|"B", "type_id": n}} (*special = 0); 0 when it is neither. */
static int template_piece(const fm_json *p, int *special, const fm_json **id, int64_t *type_id)
{
    if (!p || p->type != FM_JSON_OBJECT || p->len != 1) return 0;
    *special = strcmp(p->keys[0], "SpecialToken") == 0;
    if (!*special && strcmp(p->keys[0], "Sequence") != 0) return 0;
    const fm_json *body = p->items[0], *ty = fm_json_get(body, "type_id");
    *id = fm_json_get(body, "id");
    if (!*id || (*id)->type != FM_JSON_STRING || !ty || ty->type != FM_JSON_NUMBER || !ty->is_int) return 0;
    *type_id = ty->i;
    return 1;
}

/* 1 when template `tl` is, piece by piece, the special token `bos` (text) or a sequence as `want` spells
 * it: "S0 A0" or "S0 A0 S1 B1" (S: the special token, its type_id after it). */
static int template_is(const fm_json *tl, const char *want, const fm_json **bos)
{
    size_t n = strlen(want) / 3 + 1;
    if (!tl || tl->type != FM_JSON_ARRAY || tl->len != n) return 0;
    for (size_t k = 0; k < n; k++) {
        int special;
        const fm_json *id;
        int64_t type_id;
        const char *w = want + 3 * k;
        if (!template_piece(tl->items[k], &special, &id, &type_id) || type_id != w[1] - '0') return 0;
        if (w[0] == 'S') {
            if (!special) return 0;
            if (!*bos) *bos = id;
            if (id->len != (*bos)->len || memcmp(id->str, (*bos)->str, id->len) != 0) return 0;
        } else if (special || id->len != 1 || id->str[0] != w[0]) return 0;
    }
    return 1;
}

/* The begin-of-text id of the post_processor (-1: none). Understood: none (null or absent), ByteLevel
 * (offsets only), a TemplateProcessing that prepends one special token (Llama 3's: single "S $A", pair
 * "S $A S:1 $B:1", special_tokens {S: {id S, ids [its id], tokens [S]}}), or a Sequence of these with at
 * most one TemplateProcessing. */
static fm_status read_post_processor(const fm_json *pp, const tj *t, const char *what, int depth, int64_t *bos)
{
    if (!pp || pp->type == FM_JSON_NULL || is_type(pp, "ByteLevel")) return NULL;
    if (is_type(pp, "Sequence") && depth == 0) {
        const fm_json *l = fm_json_get(pp, "processors");
        if (!l || l->type != FM_JSON_ARRAY)
            return FM_ERR(FM_ERR_INPUT, "%s: the post_processor Sequence (byte %zu) has no \"processors\" list", what,
                          pp->offset);
        for (size_t i = 0; i < l->len; i++) {
            int64_t b = -1;
            FM_TRY(read_post_processor(l->items[i], t, what, depth + 1, &b));
            if (b >= 0 && *bos >= 0)
                return FM_ERR(FM_ERR_INPUT, "%s: the post_processor Sequence has two templates that add tokens "
                              "(byte %zu); fmtrain understands one that prepends a begin-of-text token", what,
                              l->items[i]->offset);
            if (b >= 0) *bos = b;
        }
        return NULL;
    }
    const char *fix = "fmtrain understands none, ByteLevel, and a TemplateProcessing that prepends one special "
                      "token (Llama 3's: single \"<|begin_of_text|> $A\", pair \"<|begin_of_text|> $A "
                      "<|begin_of_text|>:1 $B:1\"), or a Sequence of these; to use this tokenizer, remove the "
                      "post_processor from a copy of the file (it acts only when encoding with "
                      "add_special_tokens = True) and know that `fmtrain export` will not write it back";
    if (!is_type(pp, "TemplateProcessing")) {
        const fm_json *ty = fm_json_get(pp, "type");
        return FM_ERR(FM_ERR_INPUT, "%s: the post_processor (byte %zu) is of type %.60s; %s", what, pp->offset,
                      ty && ty->type == FM_JSON_STRING ? ty->str : "(none)", fix);
    }
    const fm_json *s = NULL, *sp = fm_json_get(pp, "special_tokens");
    if (!template_is(fm_json_get(pp, "single"), "S0 A0", &s) ||
        !template_is(fm_json_get(pp, "pair"), "S0 A0 S1 B1", &s))
        return FM_ERR(FM_ERR_INPUT, "%s: the post_processor's TemplateProcessing (byte %zu) has templates other than "
                      "\"S $A\" and \"S $A S:1 $B:1\" of one special token S; %s", what, pp->offset, fix);
    const fm_json *e = sp && sp->type == FM_JSON_OBJECT && sp->len == 1 ? fm_json_get(sp, s->str) : NULL;
    const fm_json *eid = fm_json_get(e, "id"), *ids = fm_json_get(e, "ids"), *toks = fm_json_get(e, "tokens");
    if (!eid || eid->type != FM_JSON_STRING || strcmp(eid->str, s->str) != 0 || !ids || ids->type != FM_JSON_ARRAY ||
        ids->len != 1 || !toks || toks->type != FM_JSON_ARRAY || toks->len != 1 ||
        toks->items[0]->type != FM_JSON_STRING || strcmp(toks->items[0]->str, s->str) != 0)
        return FM_ERR(FM_ERR_INPUT, "%s: the post_processor's special_tokens (byte %zu) are not exactly {\"%.60s\": "
                      "{\"id\": \"%.60s\", \"ids\": [its id], \"tokens\": [\"%.60s\"]}}; %s", what,
                      sp ? sp->offset : pp->offset, s->str, s->str, s->str, fix);
    int64_t id;
    char w[300];
    snprintf(w, sizeof w, "%s: post_processor special_tokens[\"%.60s\"].ids[0]", what, s->str);
    FM_TRY(fm_json_want_int(ids->items[0], 0, (int64_t)t->V - 1, w, &id));
    size_t l = (size_t)(t->off[id + 1] - t->off[id]);
    if (!t->special[id] || l != s->len || memcmp(t->bytes + t->off[id], s->str, l) != 0)
        return FM_ERR(FM_ERR_INPUT, "%s: the post_processor prepends \"%.60s\" as id %" PRId64 ", which is not the "
                      "special token of that text (added_tokens)", what, s->str, id);
    *bos = id;
    return NULL;
}

/* The pre-split rule of the pre_tokenizer. */
static fm_status read_pre_tokenizer(const fm_json *pt, const char *what, fm_presplit *rule)
{
    if (pt && is_type(pt, "ByteLevel")) {
        FM_TRY(want_flag(pt, "add_prefix_space", 0, what, "pre_tokenizer"));
        int use_regex = 1;
        const fm_json *ur = fm_json_get(pt, "use_regex");
        if (ur) FM_TRY(fm_json_want_bool(ur, "pre_tokenizer.use_regex", &use_regex));
        if (!use_regex)
            return FM_ERR(FM_ERR_INPUT, "%s: a ByteLevel pre_tokenizer without its regular expression does not "
                          "split words; fmtrain needs a pre-split rule", what);
        *rule = FM_PRESPLIT_GPT2;
        return NULL;
    }
    if (pt && is_type(pt, "Sequence")) {
        const fm_json *l = fm_json_get(pt, "pretokenizers");
        if (l && l->type == FM_JSON_ARRAY && l->len == 2 && is_type(l->items[0], "Split") &&
            is_type(l->items[1], "ByteLevel")) {
            const fm_json *sp = l->items[0], *bl = l->items[1];
            const fm_json *pat = fm_json_get(fm_json_get(sp, "pattern"), "Regex");
            const fm_json *beh = fm_json_get(sp, "behavior");
            FM_TRY(want_flag(sp, "invert", 0, what, "pre_tokenizer Split"));
            FM_TRY(want_flag(bl, "add_prefix_space", 0, what, "pre_tokenizer ByteLevel"));
            FM_TRY(want_flag(bl, "use_regex", 0, what, "pre_tokenizer ByteLevel"));
            if (!pat || pat->type != FM_JSON_STRING)
                return FM_ERR(FM_ERR_INPUT, "%s: the Split pre-tokenizer has no {\"Regex\": ...} pattern", what);
            if (!beh || beh->type != FM_JSON_STRING || strcmp(beh->str, "Isolated") != 0)
                return FM_ERR(FM_ERR_INPUT, "%s: the Split pre-tokenizer's behavior is not \"Isolated\"", what);
            if (!fm_presplit_from_regex(pat->str, rule))
                return FM_ERR(FM_ERR_INPUT, "%s: the Split regular expression (byte %zu) is not one fmtrain "
                              "implements (fmtrain's, GPT-2's or Llama 3's pre-split; data/presplit.h): %.200s",
                              what, pat->offset, pat->str);
            return NULL;
        }
    }
    return FM_ERR(FM_ERR_INPUT, "%s: pre_tokenizer (byte %zu) is not one fmtrain reads: expected ByteLevel with "
                  "use_regex (GPT-2) or a Sequence of Split (a known regular expression) and ByteLevel",
                  what, pt ? pt->offset : 0);
}

/* fm_hf_parse_tokenizer, with the end-of-text token also nameable by its text (eot_text, may be NULL). */
static fm_status parse_tokenizer(const char *json, size_t len, const char *what, int64_t eot_id, const char *eot_text,
                                 size_t eot_text_len, fm_tokenizer **out)
{
    *out = NULL;
    fm_json_doc *doc = NULL;
    FM_TRY(fm_json_parse(json, len, what, 0, &doc));
    const fm_json *root = fm_json_root(doc);
    fm_status st = NULL;
    tj t = {what, 0, NULL, NULL, NULL, NULL, NULL, 0};
    str_map map = {0};
    uint8_t *scratch = NULL;
    int cp_byte[324];
    char_table(cp_byte);
    FM_TRY_GOTO(st, done, fm_json_want(root, FM_JSON_OBJECT, what));
    const fm_json *model = fm_json_get(root, "model");
    char w[600];
    snprintf(w, sizeof w, "%s: model", what);
    FM_TRY_GOTO(st, done, fm_json_want(model, FM_JSON_OBJECT, w));
    const fm_json *ty = fm_json_get(model, "type");
    if (ty && (ty->type != FM_JSON_STRING || strcmp(ty->str, "BPE") != 0)) {
        st = FM_ERR(FM_ERR_INPUT, "%s: model.type is not \"BPE\" (byte %zu); fmtrain reads byte-level BPE "
                    "tokenizers only", what, ty->offset);
        goto done;
    }
    const fm_json *norm = fm_json_get(root, "normalizer");
    if (norm && norm->type != FM_JSON_NULL) {
        st = FM_ERR(FM_ERR_INPUT, "%s: there is a normalizer (byte %zu); fmtrain encodes raw bytes, so it would not "
                    "encode like this tokenizer", what, norm->offset);
        goto done;
    }
    fm_presplit rule;
    FM_TRY_GOTO(st, done, read_pre_tokenizer(fm_json_get(root, "pre_tokenizer"), what, &rule));
    FM_TRY_GOTO(st, done, want_null_or(fm_json_get(model, "dropout"), what, "dropout", NULL));
    FM_TRY_GOTO(st, done, want_null_or(fm_json_get(model, "unk_token"), what, "unk_token", NULL));
    FM_TRY_GOTO(st, done, want_null_or(fm_json_get(model, "continuing_subword_prefix"), what,
                                       "continuing_subword_prefix", ""));
    FM_TRY_GOTO(st, done, want_null_or(fm_json_get(model, "end_of_word_suffix"), what, "end_of_word_suffix", ""));
    FM_TRY_GOTO(st, done, want_flag(model, "byte_fallback", 0, what, "model"));
    int ignore_merges = 0;
    const fm_json *im = fm_json_get(model, "ignore_merges");
    if (im) FM_TRY_GOTO(st, done, fm_json_want_bool(im, "model.ignore_merges", &ignore_merges));
    const fm_json *vocab = fm_json_get(model, "vocab"), *merges = fm_json_get(model, "merges");
    const fm_json *added = fm_json_get(root, "added_tokens");
    snprintf(w, sizeof w, "%s: model.vocab", what);
    FM_TRY_GOTO(st, done, fm_json_want(vocab, FM_JSON_OBJECT, w));
    snprintf(w, sizeof w, "%s: model.merges", what);
    FM_TRY_GOTO(st, done, fm_json_want(merges, FM_JSON_ARRAY, w));
    size_t n_added = 0;
    if (added && added->type != FM_JSON_NULL) {
        snprintf(w, sizeof w, "%s: added_tokens", what);
        FM_TRY_GOTO(st, done, fm_json_want(added, FM_JSON_ARRAY, w));
        n_added = added->len;
    }
    /* ids: the vocabulary's and the added tokens' together must be 0..V-1 */
    int64_t max_id = -1;
    for (size_t i = 0; i < vocab->len; i++) {
        int64_t id;
        snprintf(w, sizeof w, "%s: model.vocab[\"%.60s\"]", what, vocab->keys[i]);
        FM_TRY_GOTO(st, done, fm_json_want_int(vocab->items[i], 0, FM_TOKENIZER_MAX_VOCAB - 1, w, &id));
        if (id > max_id) max_id = id;
    }
    for (size_t i = 0; i < n_added; i++) {
        int64_t id;
        snprintf(w, sizeof w, "%s: added_tokens[%zu].id", what, i);
        FM_TRY_GOTO(st, done, fm_json_want_int(fm_json_get(added->items[i], "id"), 0, FM_TOKENIZER_MAX_VOCAB - 1, w, &id));
        if (id > max_id) max_id = id;
    }
    t.V = (uint32_t)(max_id + 1);
    if ((uint64_t)t.V > (uint64_t)vocab->len + n_added) {
        st = FM_ERR(FM_ERR_INPUT, "%s: the largest id is %" PRId64 " but there are only %zu tokens (ids must be "
                    "0..%" PRId64 " without gaps)", what, max_id, vocab->len + n_added, max_id);
        goto done;
    }
    if (max_id < 256) {
        st = FM_ERR(FM_ERR_INPUT, "%s: %" PRId64 " ids; a byte-level BPE vocabulary has more than 256", what, max_id + 1);
        goto done;
    }
    /* token bytes by id: first lengths */
    uint64_t *len_of = calloc(t.V, sizeof *len_of);
    const char **src = calloc(t.V, sizeof *src);
    size_t *src_len = calloc(t.V, sizeof *src_len);
    t.special = calloc(t.V, 1);
    t.have = calloc(t.V, 1);
    t.off = malloc(((size_t)t.V + 1) * sizeof *t.off);
    if (!len_of || !src || !src_len || !t.special || !t.have || !t.off) {
        free(len_of);
        free(src);
        free(src_len);
        st = FM_ERR(FM_ERR_NOMEM, "out of memory reading %s", what);
        goto done;
    }
    for (size_t i = 0; i < vocab->len && !st; i++) {
        uint32_t id = (uint32_t)vocab->items[i]->i;
        if (t.have[id]) {
            st = FM_ERR(FM_ERR_INPUT, "%s: id %u appears twice in model.vocab (byte %zu)", what, id, vocab->items[i]->offset);
            break;
        }
        t.have[id] = 1;
        src[id] = vocab->keys[i];
        src_len[id] = vocab->key_lens[i];
    }
    for (size_t i = 0; i < n_added && !st; i++) {
        const fm_json *a = added->items[i];
        uint32_t id = (uint32_t)fm_json_get(a, "id")->i;
        const fm_json *content = fm_json_get(a, "content"), *special = fm_json_get(a, "special");
        snprintf(w, sizeof w, "%s: added_tokens[%zu].content", what, i);
        if ((st = fm_json_want(content, FM_JSON_STRING, w))) break;
        if (content->len == 0) {
            st = FM_ERR(FM_ERR_INPUT, "%s is empty", w);
            break;
        }
        if (!special || special->type != FM_JSON_TRUE) {
            st = FM_ERR(FM_ERR_INPUT, "%s: added token %u \"%.60s\" is not special; fmtrain does not split text on "
                        "added tokens, so it would not encode like this tokenizer", what, id, content->str);
            break;
        }
        t.special[id] = 1;
        if (t.have[id]) {
            /* also in the model's vocabulary (GPT-2's <|endoftext|>) under its text, as is or mapped */
            uint8_t tmp[1024];
            size_t n = 0;
            int same = src_len[id] == content->len && memcmp(src[id], content->str, content->len) == 0;
            if (!same && (src_len[id] > sizeof tmp || !unmap(src[id], src_len[id], cp_byte, tmp, &n) ||
                          n != content->len || memcmp(tmp, content->str, n) != 0)) {
                st = FM_ERR(FM_ERR_INPUT, "%s: added token %u \"%.60s\" is also model.vocab entry \"%.60s\"", what, id,
                            content->str, src[id]);
                break;
            }
        }
        t.have[id] = 2;
        src[id] = content->str;
        src_len[id] = content->len;
    }
    for (uint32_t id = 0; id < t.V && !st; id++)
        if (!t.have[id]) st = FM_ERR(FM_ERR_INPUT, "%s: no token has id %u (ids must be 0..%u without gaps)", what, id,
                                     t.V - 1);
    /* bytes */
    uint64_t total = 0;
    for (uint32_t id = 0; id < t.V && !st; id++) {
        t.off[id] = total;
        total += src_len[id]; /* a mapped string is never shorter than its bytes */
    }
    t.off[t.V] = total;
    t.bytes = malloc(total ? (size_t)total : 1);
    if (!st && !t.bytes) st = FM_ERR(FM_ERR_NOMEM, "out of memory reading %s", what);
    uint64_t o = 0;
    for (uint32_t id = 0; id < t.V && !st; id++) {
        size_t n = 0;
        t.off[id] = o;
        if (t.have[id] == 2) {
            memcpy(t.bytes + o, src[id], src_len[id]);
            n = src_len[id];
        } else if (!unmap(src[id], src_len[id], cp_byte, t.bytes + o, &n)) {
            st = FM_ERR(FM_ERR_INPUT, "%s: model.vocab entry \"%.60s\" (id %u) is not a byte-level BPE string (each "
                        "character one of the 256 of GPT-2's byte table)", what, src[id], id);
            break;
        }
        o += n;
    }
    t.off[t.V] = o;
    free(len_of);
    free(src);
    free(src_len);
    if (st) goto done;
    /* string -> id over ordinary tokens, for the merges */
    map.cap = 16;
    while (map.cap < 2 * (size_t)t.V) map.cap *= 2;
    map.slot = calloc(map.cap, sizeof *map.slot);
    map.off = t.off;
    map.bytes = t.bytes;
    if (!map.slot) {
        st = FM_ERR(FM_ERR_NOMEM, "out of memory reading %s", what);
        goto done;
    }
    for (uint32_t id = 0; id < t.V; id++)
        if (!t.special[id] && map_get(&map, t.bytes + t.off[id], (size_t)(t.off[id + 1] - t.off[id])) < 0)
            map_put(&map, id);
    t.nm = (uint32_t)merges->len;
    if (merges->len > (size_t)64 * FM_TOKENIZER_MAX_VOCAB) {
        st = FM_ERR(FM_ERR_INPUT, "%s: %zu merges are more than fmtrain reads", what, merges->len);
        goto done;
    }
    t.merges = malloc(((size_t)t.nm + 1) * 3 * sizeof *t.merges);
    scratch = malloc(8192);
    if (!t.merges || !scratch) {
        st = FM_ERR(FM_ERR_NOMEM, "out of memory reading %s", what);
        goto done;
    }
    for (uint32_t k = 0; k < t.nm; k++) {
        const fm_json *e = merges->items[k];
        const char *a, *b;
        size_t la, lb;
        if (e->type == FM_JSON_STRING) {
            const char *sp = memchr(e->str, ' ', e->len);
            if (!sp || memchr(sp + 1, ' ', e->len - (size_t)(sp + 1 - e->str))) {
                st = FM_ERR(FM_ERR_INPUT, "%s: merge %u (byte %zu) is not \"left right\"", what, k, e->offset);
                goto done;
            }
            a = e->str;
            la = (size_t)(sp - e->str);
            b = sp + 1;
            lb = e->len - la - 1;
        } else if (e->type == FM_JSON_ARRAY && e->len == 2 && e->items[0]->type == FM_JSON_STRING &&
                   e->items[1]->type == FM_JSON_STRING) {
            a = e->items[0]->str;
            la = e->items[0]->len;
            b = e->items[1]->str;
            lb = e->items[1]->len;
        } else {
            st = FM_ERR(FM_ERR_INPUT, "%s: merge %u (byte %zu) is neither \"left right\" nor [left, right]", what, k,
                        e->offset);
            goto done;
        }
        size_t na = 0, nb = 0;
        if (la > 4096 || lb > 4096 || !unmap(a, la, cp_byte, scratch, &na) ||
            !unmap(b, lb, cp_byte, scratch + na, &nb)) {
            st = FM_ERR(FM_ERR_INPUT, "%s: merge %u (byte %zu) is not of byte-level BPE strings", what, k, e->offset);
            goto done;
        }
        int64_t ia = map_get(&map, scratch, na), ib = map_get(&map, scratch + na, nb),
                ic = map_get(&map, scratch, na + nb);
        if (ia < 0 || ib < 0 || ic < 0) {
            st = FM_ERR(FM_ERR_INPUT, "%s: merge %u (byte %zu) names %s not in model.vocab", what, k, e->offset,
                        ia < 0 || ib < 0 ? "a token" : "a result");
            goto done;
        }
        t.merges[3 * k] = (uint32_t)ia;
        t.merges[3 * k + 1] = (uint32_t)ib;
        t.merges[3 * k + 2] = (uint32_t)ic;
    }
    int64_t bos = -1;
    FM_TRY_GOTO(st, done, read_post_processor(fm_json_get(root, "post_processor"), &t, what, 0, &bos));
    /* the end-of-text id */
    if (eot_id < 0 && eot_text)
        for (uint32_t id = 0; id < t.V; id++)
            if (t.special[id] && t.off[id + 1] - t.off[id] == eot_text_len &&
                memcmp(t.bytes + t.off[id], eot_text, eot_text_len) == 0)
                eot_id = id;
    if (eot_id >= 0) {
        if (eot_id >= (int64_t)t.V || !t.special[eot_id]) {
            st = FM_ERR(FM_ERR_INPUT, "%s: the end-of-text id %" PRId64 " is not a special token of it", what, eot_id);
            goto done;
        }
    } else {
        int64_t only = -1;
        int n_special = 0;
        for (uint32_t id = 0; id < t.V; id++) {
            if (!t.special[id]) continue;
            n_special++;
            only = id;
            size_t l = (size_t)(t.off[id + 1] - t.off[id]);
            const char *s = (const char *)t.bytes + t.off[id];
            if ((l == 13 && memcmp(s, "<|endoftext|>", 13) == 0) || (l == 15 && memcmp(s, "<|end_of_text|>", 15) == 0)) {
                eot_id = id;
                break;
            }
        }
        if (eot_id < 0 && n_special == 1) eot_id = only;
        if (eot_id < 0) {
            st = FM_ERR(FM_ERR_INPUT, "%s: which of its %d special tokens ends a document? none is <|endoftext|> or "
                        "<|end_of_text|>; name it with tokenizer_config.json's eos_token beside it, or --eot ID",
                        what, n_special);
            goto done;
        }
    }
    fm_tokenizer_spec spec = {t.V, t.off, t.bytes, t.special, t.nm, t.merges, (uint32_t)eot_id, rule, ignore_merges,
                              bos >= 0, (uint32_t)(bos >= 0 ? bos : 0)};
    st = fm_tokenizer_from_spec(&spec, what, out);
done:
    free(map.slot);
    free(scratch);
    free(t.off);
    free(t.bytes);
    free(t.special);
    free(t.have);
    free(t.merges);
    fm_json_doc_free(&doc);
    return st;
}

fm_status fm_hf_parse_tokenizer(const char *json, size_t len, const char *what, int64_t eot_id, fm_tokenizer **out)
{
    return parse_tokenizer(json, len, what, eot_id, NULL, 0, out);
}

fm_status fm_hf_read_tokenizer(const char *path, int64_t eot_id, fm_tokenizer **out)
{
    *out = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp) return FM_ERR(FM_ERR_INPUT, "cannot read %s: %s", path, strerror(errno));
    char *buf = NULL;
    size_t n = 0, cap = 0;
    fm_status st = NULL;
    for (;;) {
        if (n == cap) {
            size_t nc = cap ? 2 * cap : ((size_t)1 << 20);
            if (nc > FM_HF_TOKENIZER_MAX_BYTES + 1) nc = FM_HF_TOKENIZER_MAX_BYTES + 1;
            if (nc == cap) {
                st = FM_ERR(FM_ERR_INPUT, "%s is larger than %zu bytes, more than a tokenizer.json this reader accepts",
                            path, FM_HF_TOKENIZER_MAX_BYTES);
                break;
            }
            char *g = realloc(buf, nc);
            if (!g) {
                st = FM_ERR(FM_ERR_NOMEM, "out of memory reading %s", path);
                break;
            }
            buf = g;
            cap = nc;
        }
        size_t got = fread(buf + n, 1, cap - n, fp);
        n += got;
        if (got == 0) {
            if (ferror(fp)) st = FM_ERR(FM_ERR_INPUT, "cannot read %s: %s", path, strerror(errno));
            break;
        }
    }
    fclose(fp);
    fm_json_doc *cd = NULL;
    const fm_json *eos = NULL;
    if (!st && eot_id < 0) {
        /* tokenizer_config.json beside it may name the end-of-text token */
        char cfg[4200];
        const char *slash = strrchr(path, '/');
        if (slash) snprintf(cfg, sizeof cfg, "%.*s/tokenizer_config.json", (int)(slash - path), path);
        else snprintf(cfg, sizeof cfg, "tokenizer_config.json");
        fm_status cs = fm_json_parse_file(cfg, (size_t)16 << 20, &cd);
        if (!cs) {
            eos = fm_json_get(fm_json_root(cd), "eos_token");
            if (eos && eos->type == FM_JSON_OBJECT) eos = fm_json_get(eos, "content");
            if (eos && eos->type != FM_JSON_STRING) eos = NULL;
        }
        fm_status_free(&cs);
    }
    if (!st) st = parse_tokenizer(buf, n, path, eot_id, eos ? eos->str : NULL, eos ? eos->len : 0, out);
    fm_json_doc_free(&cd);
    free(buf);
    return st;
}

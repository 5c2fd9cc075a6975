/* json.h — a small, strict, bounds-checked JSON reader (RFC 8259) and the few writing helpers the
 * Hugging Face files need.
 *
 * What it is: the parser behind everything fmtrain reads in JSON — the safetensors header, config.json,
 * tokenizer.json, model.safetensors.index.json, tokenizer_config.json — which are untrusted files.
 * The whole text is parsed into a tree held in one arena (one free releases it). Every error names the
 * file (the `what` given to the parser), the byte offset and what was expected, as FM_ERR_INPUT.
 * Refused: anything not RFC 8259 (comments, trailing commas, NaN, single quotes, bare control
 * characters in strings), invalid UTF-8, lone surrogates in \u escapes, duplicate keys in an object,
 * nesting deeper than FM_JSON_MAX_DEPTH, and trailing text other than whitespace.
 * What it is not: no streaming, no modification of a parsed tree, no general writer (writers print
 * with fm_json_put_string and fprintf).
 *
 * Why not jansson or cJSON (both packaged by Debian, Spack and EasyBuild): one more library for every
 * site's module stack for about 500 lines of code; cJSON keeps numbers as double (safetensors offsets
 * are uint64 and must be exact) and neither reports the byte offset of an error in a way that names
 * what was expected; this parser is fuzzed with the rest of fmtrain's readers (tests/hf).
 *
 * Numbers: every number keeps its double value; one written as an integer (no fraction, no exponent)
 * that fits int64 also has is_int = 1 and its exact value in `i`.
 * Strings: decoded to UTF-8 (escapes resolved), NUL-terminated, with their length (a "\u0000" escape
 * gives an embedded NUL byte, counted in len).
 */
#ifndef FM_HF_JSON_H
#define FM_HF_JSON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/status.h"

#define FM_JSON_MAX_DEPTH 64

typedef enum fm_json_type {
    FM_JSON_NULL,
    FM_JSON_FALSE,
    FM_JSON_TRUE,
    FM_JSON_NUMBER,
    FM_JSON_STRING,
    FM_JSON_ARRAY,
    FM_JSON_OBJECT
} fm_json_type;

typedef struct fm_json fm_json;

/* One value of a parsed tree; owned by its document. */
struct fm_json {
    fm_json_type type;
    size_t offset;      /* byte offset of the value in the text (plus the parser's base offset) */
    const char *str;    /* STRING: the decoded bytes, NUL-terminated */
    size_t len;         /* STRING: bytes; ARRAY/OBJECT: members */
    double num;         /* NUMBER */
    int64_t i;          /* NUMBER with is_int */
    int is_int;         /* NUMBER: written as an integer that fits int64 */
    fm_json **items;    /* ARRAY/OBJECT: the members, in text order */
    const char **keys;  /* OBJECT: the key of each member (decoded, NUL-terminated) */
    size_t *key_lens;   /* OBJECT: the byte length of each key */
};

typedef struct fm_json_doc fm_json_doc;

/* Parses text[0..len) (need not be NUL-terminated). `what` names the text in messages ("tokenizer.json",
 * "the safetensors header of x.safetensors"); `base` is added to every offset reported (the header's
 * position in its file). Errors: FM_ERR_INPUT "<what>: at byte <offset>: expected ..., found ...",
 * FM_ERR_NOMEM. */
fm_status fm_json_parse(const char *text, size_t len, const char *what, size_t base, fm_json_doc **out);

/* Reads the whole file `path` (at most max_bytes; larger is FM_ERR_INPUT) and parses it. Errors:
 * FM_ERR_INPUT for a missing or unreadable file or bad JSON. */
fm_status fm_json_parse_file(const char *path, size_t max_bytes, fm_json_doc **out);

const fm_json *fm_json_root(const fm_json_doc *doc);
void fm_json_doc_free(fm_json_doc **doc);

/* Member `key` of an object (NULL when absent or when `obj` is not an object). Linear in the members. */
const fm_json *fm_json_get(const fm_json *obj, const char *key);

/* The name of a type ("object", "string", ...) for messages. */
const char *fm_json_type_name(fm_json_type t);

/* Typed access with messages: `where` names the value ("config.json: n_embd"). Absent (v == NULL) or of
 * another type is FM_ERR_INPUT "<where>: expected <type>, found <type or 'nothing'> (byte <offset>)". */
fm_status fm_json_want(const fm_json *v, fm_json_type t, const char *where);
/* An integer in [lo, hi]. */
fm_status fm_json_want_int(const fm_json *v, int64_t lo, int64_t hi, const char *where, int64_t *out);
/* A number (integer or not). */
fm_status fm_json_want_num(const fm_json *v, const char *where, double *out);
/* true or false. */
fm_status fm_json_want_bool(const fm_json *v, const char *where, int *out);

/* Writes s[0..len) as a JSON string literal (quotes, escapes for '"', '\\' and control characters;
 * other bytes as they are, so valid UTF-8 stays valid UTF-8). */
void fm_json_put_string(FILE *out, const char *s, size_t len);

/* 1 when s[0..len) is valid UTF-8 (no overlong forms, no surrogates, at most U+10FFFF). */
int fm_json_utf8_valid(const uint8_t *s, size_t len);

#endif /* FM_HF_JSON_H */

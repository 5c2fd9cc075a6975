/* json.c — strict RFC 8259 parser into an arena-held tree, and string output (json.h). */
#define _POSIX_C_SOURCE 200809L
#include "hf/json.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- arena ---------------------------------------------------------------------------------- */

typedef struct arena_block {
    struct arena_block *next;
    size_t used, cap;
    max_align_t data[]; /* cap bytes */
} arena_block;

struct fm_json_doc {
    arena_block *blocks;
    fm_json *root;
};

static void *arena_alloc(fm_json_doc *d, size_t n)
{
    n = (n + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    if (n == 0) n = sizeof(max_align_t);
    arena_block *b = d->blocks;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > ((size_t)1 << 16) ? n : ((size_t)1 << 16);
        b = malloc(sizeof *b + cap);
        if (!b) return NULL;
        b->cap = cap;
        b->used = 0;
        b->next = d->blocks;
        d->blocks = b;
    }
    void *p = (char *)b->data + b->used;
    b->used += n;
    return p;
}

void fm_json_doc_free(fm_json_doc **dp)
{
    if (!dp || !*dp) return;
    arena_block *b = (*dp)->blocks;
    while (b) {
        arena_block *n = b->next;
        free(b);
        b = n;
    }
    free(*dp);
    *dp = NULL;
}

const fm_json *fm_json_root(const fm_json_doc *d) { return d ? d->root : NULL; }

/* ---- UTF-8 ---------------------------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s[0..n), or 0 when it is not valid. */
static size_t utf8_seq(const uint8_t *s, size_t n)
{
    uint8_t c = s[0];
    if (c < 0x80) return 1;
    size_t len;
    uint32_t cp, min;
    if (c >= 0xC2 && c <= 0xDF) len = 2, cp = c & 0x1F, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, cp = c & 0x0F, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, cp = c & 0x07, min = 0x10000;
    else return 0;
    if (n < len) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

int fm_json_utf8_valid(const uint8_t *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        size_t l = utf8_seq(s + i, len - i);
        if (!l) return 0;
        i += l;
    }
    return 1;
}

static size_t utf8_put(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* ---- parser --------------------------------------------------------------------------------- */

typedef struct parser {
    const uint8_t *s;
    size_t n, pos, base;
    const char *what;
    fm_json_doc *doc;
} parser;

static void describe_at(const parser *p, size_t at, char *buf, size_t size)
{
    if (at >= p->n) {
        snprintf(buf, size, "the end of the text");
        return;
    }
    uint8_t c = p->s[at];
    if (c >= 0x20 && c < 0x7F) snprintf(buf, size, "'%c'", c);
    else snprintf(buf, size, "byte 0x%02x", c);
}

static fm_status perr(const parser *p, size_t at, const char *expected)
{
    char found[32];
    describe_at(p, at, found, sizeof found);
    return FM_ERR(FM_ERR_INPUT, "%s: at byte %zu: expected %s, found %s (not valid JSON)", p->what,
                  p->base + at, expected, found);
}

static fm_status nomem(const parser *p)
{
    return FM_ERR(FM_ERR_NOMEM, "out of memory parsing %s", p->what);
}

static void skip_ws(parser *p)
{
    while (p->pos < p->n) {
        uint8_t c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->pos++;
    }
}

static int hexval(uint8_t c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static fm_status read_hex4(parser *p, uint32_t *v)
{
    if (p->n - p->pos < 4) return perr(p, p->n, "four hexadecimal digits after \\u");
    uint32_t x = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(p->s[p->pos + (size_t)i]);
        if (h < 0) return perr(p, p->pos + (size_t)i, "a hexadecimal digit in a \\u escape");
        x = x << 4 | (uint32_t)h;
    }
    p->pos += 4;
    *v = x;
    return NULL;
}

/* Parses a string at p->pos (which is '"') into arena memory. */
static fm_status parse_string(parser *p, const char **out, size_t *out_len)
{
    size_t start = ++p->pos; /* after the quote */
    /* First pass: find the end and validate; the decoded text is never longer than the raw text. */
    size_t i = start;
    for (;;) {
        if (i >= p->n) return perr(p, p->n, "'\"' closing a string");
        uint8_t c = p->s[i];
        if (c == '"') break;
        if (c == '\\') {
            i += 2;
            continue;
        }
        i++;
    }
    char *buf = arena_alloc(p->doc, i - start + 1);
    if (!buf) return nomem(p);
    size_t o = 0;
    while (p->s[p->pos] != '"') {
        uint8_t c = p->s[p->pos];
        if (c < 0x20) return perr(p, p->pos, "a character of a string (control characters must be escaped)");
        if (c == '\\') {
            if (p->pos + 1 >= p->n) return perr(p, p->n, "an escape after '\\'");
            uint8_t e = p->s[p->pos + 1];
            p->pos += 2;
            switch (e) {
            case '"': buf[o++] = '"'; break;
            case '\\': buf[o++] = '\\'; break;
            case '/': buf[o++] = '/'; break;
            case 'b': buf[o++] = '\b'; break;
            case 'f': buf[o++] = '\f'; break;
            case 'n': buf[o++] = '\n'; break;
            case 'r': buf[o++] = '\r'; break;
            case 't': buf[o++] = '\t'; break;
            case 'u': {
                uint32_t cp;
                size_t at = p->pos - 2;
                FM_TRY(read_hex4(p, &cp));
                if (cp >= 0xDC00 && cp <= 0xDFFF) return perr(p, at, "a \\u escape that is not a lone low surrogate");
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    uint32_t lo;
                    if (p->n - p->pos < 2 || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u')
                        return perr(p, p->pos, "a \\u low surrogate after a high surrogate");
                    p->pos += 2;
                    FM_TRY(read_hex4(p, &lo));
                    if (lo < 0xDC00 || lo > 0xDFFF)
                        return perr(p, p->pos - 6, "a \\u low surrogate (DC00..DFFF) after a high surrogate");
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                }
                o += utf8_put(cp, buf + o);
                break;
            }
            default: return perr(p, p->pos - 1, "one of \" \\ / b f n r t u after '\\'");
            }
            continue;
        }
        size_t l = utf8_seq(p->s + p->pos, p->n - p->pos);
        if (!l) return perr(p, p->pos, "valid UTF-8 in a string");
        memcpy(buf + o, p->s + p->pos, l);
        o += l;
        p->pos += l;
    }
    p->pos++; /* closing quote */
    buf[o] = 0;
    *out = buf;
    *out_len = o;
    return NULL;
}

static fm_status parse_number(parser *p, fm_json *v)
{
    size_t st = p->pos, i = p->pos;
    int integral = 1;
    if (i < p->n && p->s[i] == '-') i++;
    if (i >= p->n || !(p->s[i] >= '0' && p->s[i] <= '9')) return perr(p, i, "a digit");
    if (p->s[i] == '0') i++;
    else
        while (i < p->n && p->s[i] >= '0' && p->s[i] <= '9') i++;
    if (i < p->n && p->s[i] == '.') {
        integral = 0;
        i++;
        if (i >= p->n || !(p->s[i] >= '0' && p->s[i] <= '9')) return perr(p, i, "a digit after '.'");
        while (i < p->n && p->s[i] >= '0' && p->s[i] <= '9') i++;
    }
    if (i < p->n && (p->s[i] == 'e' || p->s[i] == 'E')) {
        integral = 0;
        i++;
        if (i < p->n && (p->s[i] == '+' || p->s[i] == '-')) i++;
        if (i >= p->n || !(p->s[i] >= '0' && p->s[i] <= '9')) return perr(p, i, "a digit of the exponent");
        while (i < p->n && p->s[i] >= '0' && p->s[i] <= '9') i++;
    }
    size_t len = i - st;
    char tmp[64];
    char *txt = len < sizeof tmp ? tmp : malloc(len + 1);
    if (!txt) return nomem(p);
    memcpy(txt, p->s + st, len);
    txt[len] = 0;
    v->num = strtod(txt, NULL);
    v->is_int = 0;
    if (integral) {
        errno = 0;
        long long x = strtoll(txt, NULL, 10);
        if (errno == 0) {
            v->is_int = 1;
            v->i = (int64_t)x;
        }
    }
    if (txt != tmp) free(txt);
    p->pos = i;
    return NULL;
}

static uint64_t hash_key(const char *k, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)k[i]) * 1099511628211ull;
    return h;
}

/* Refuses an object with a repeated key (the members' keys in keys/lens[0..n)). */
static fm_status check_duplicates(parser *p, const fm_json *obj)
{
    size_t n = obj->len;
    if (n < 2) return NULL;
    if (n <= 16) {
        for (size_t a = 0; a < n; a++)
            for (size_t b = a + 1; b < n; b++)
                if (obj->key_lens[a] == obj->key_lens[b] && memcmp(obj->keys[a], obj->keys[b], obj->key_lens[a]) == 0)
                    return FM_ERR(FM_ERR_INPUT, "%s: at byte %zu: the key \"%.80s\" appears twice in one object",
                                  p->what, obj->items[b]->offset, obj->keys[b]);
        return NULL;
    }
    size_t cap = 32;
    while (cap < 2 * n) cap *= 2;
    size_t *slot = malloc(cap * sizeof *slot); /* member index + 1, 0 empty */
    if (!slot) return nomem(p);
    memset(slot, 0, cap * sizeof *slot);
    fm_status st = NULL;
    for (size_t m = 0; m < n && !st; m++) {
        size_t h = (size_t)hash_key(obj->keys[m], obj->key_lens[m]) & (cap - 1);
        while (slot[h]) {
            size_t o = slot[h] - 1;
            if (obj->key_lens[o] == obj->key_lens[m] && memcmp(obj->keys[o], obj->keys[m], obj->key_lens[m]) == 0) {
                st = FM_ERR(FM_ERR_INPUT, "%s: at byte %zu: the key \"%.80s\" appears twice in one object",
                            p->what, obj->items[m]->offset, obj->keys[m]);
                break;
            }
            h = (h + 1) & (cap - 1);
        }
        slot[h] = m + 1;
    }
    free(slot);
    return st;
}

/* A growable list of members while a container is parsed (moved into the arena at its end). */
typedef struct members {
    fm_json **items;
    const char **keys;
    size_t *lens;
    size_t n, cap;
} members;

static fm_status members_push(parser *p, members *m, fm_json *v, const char *key, size_t klen)
{
    if (m->n == m->cap) {
        size_t cap = m->cap ? 2 * m->cap : 8;
        fm_json **it = realloc(m->items, cap * sizeof *it);
        if (it) m->items = it;
        const char **k = realloc(m->keys, cap * sizeof *k);
        if (k) m->keys = k;
        size_t *l = realloc(m->lens, cap * sizeof *l);
        if (l) m->lens = l;
        if (!it || !k || !l) return nomem(p);
        m->cap = cap;
    }
    m->items[m->n] = v;
    m->keys[m->n] = key;
    m->lens[m->n] = klen;
    m->n++;
    return NULL;
}

static void members_free(members *m)
{
    free(m->items);
    free(m->keys);
    free(m->lens);
}

static fm_status parse_value(parser *p, int depth, fm_json **out);

static fm_status parse_container(parser *p, int depth, fm_json *v)
{
    int obj = v->type == FM_JSON_OBJECT;
    uint8_t close = obj ? '}' : ']';
    members m = {0};
    fm_status st = NULL;
    p->pos++; /* '{' or '[' */
    skip_ws(p);
    if (p->pos < p->n && p->s[p->pos] == close) {
        p->pos++;
    } else {
        for (;;) {
            const char *key = NULL;
            size_t klen = 0;
            skip_ws(p);
            if (obj) {
                if (p->pos >= p->n || p->s[p->pos] != '"') {
                    st = perr(p, p->pos, "'\"' starting a key");
                    break;
                }
                if ((st = parse_string(p, &key, &klen))) break;
                skip_ws(p);
                if (p->pos >= p->n || p->s[p->pos] != ':') {
                    st = perr(p, p->pos, "':' after a key");
                    break;
                }
                p->pos++;
            }
            fm_json *item = NULL;
            if ((st = parse_value(p, depth + 1, &item))) break;
            if ((st = members_push(p, &m, item, key, klen))) break;
            skip_ws(p);
            if (p->pos < p->n && p->s[p->pos] == ',') {
                p->pos++;
                continue;
            }
            if (p->pos < p->n && p->s[p->pos] == close) {
                p->pos++;
                break;
            }
            st = perr(p, p->pos, obj ? "',' or '}'" : "',' or ']'");
            break;
        }
    }
    if (!st && m.n) {
        v->items = arena_alloc(p->doc, m.n * sizeof *v->items);
        if (!v->items) st = nomem(p);
        else memcpy(v->items, m.items, m.n * sizeof *v->items);
        if (!st && obj) {
            v->keys = arena_alloc(p->doc, m.n * sizeof *v->keys);
            v->key_lens = arena_alloc(p->doc, m.n * sizeof *v->key_lens);
            if (!v->keys || !v->key_lens) st = nomem(p);
            else {
                memcpy(v->keys, m.keys, m.n * sizeof *v->keys);
                memcpy(v->key_lens, m.lens, m.n * sizeof *v->key_lens);
            }
        }
        v->len = m.n;
        if (!st && obj) st = check_duplicates(p, v);
    }
    members_free(&m);
    return st;
}

static int match_word(parser *p, const char *w)
{
    size_t l = strlen(w);
    if (p->n - p->pos < l || memcmp(p->s + p->pos, w, l) != 0) return 0;
    p->pos += l;
    return 1;
}

static fm_status parse_value(parser *p, int depth, fm_json **out)
{
    if (depth > FM_JSON_MAX_DEPTH)
        return FM_ERR(FM_ERR_INPUT, "%s: at byte %zu: values nested more than %d deep (refused)", p->what,
                      p->base + p->pos, FM_JSON_MAX_DEPTH);
    skip_ws(p);
    fm_json *v = arena_alloc(p->doc, sizeof *v);
    if (!v) return nomem(p);
    memset(v, 0, sizeof *v);
    v->offset = p->base + p->pos;
    *out = v;
    if (p->pos >= p->n) return perr(p, p->pos, "a value");
    uint8_t c = p->s[p->pos];
    switch (c) {
    case '{': v->type = FM_JSON_OBJECT; return parse_container(p, depth, v);
    case '[': v->type = FM_JSON_ARRAY; return parse_container(p, depth, v);
    case '"': v->type = FM_JSON_STRING; return parse_string(p, &v->str, &v->len);
    case 't':
        v->type = FM_JSON_TRUE;
        return match_word(p, "true") ? NULL : perr(p, p->pos, "a value (true)");
    case 'f':
        v->type = FM_JSON_FALSE;
        return match_word(p, "false") ? NULL : perr(p, p->pos, "a value (false)");
    case 'n':
        v->type = FM_JSON_NULL;
        return match_word(p, "null") ? NULL : perr(p, p->pos, "a value (null)");
    default:
        if (c == '-' || (c >= '0' && c <= '9')) {
            v->type = FM_JSON_NUMBER;
            return parse_number(p, v);
        }
        return perr(p, p->pos, "a value (object, array, string, number, true, false or null)");
    }
}

fm_status fm_json_parse(const char *text, size_t len, const char *what, size_t base, fm_json_doc **out)
{
    *out = NULL;
    fm_json_doc *d = calloc(1, sizeof *d);
    if (!d) return FM_ERR(FM_ERR_NOMEM, "out of memory parsing %s", what);
    parser p = {(const uint8_t *)text, len, 0, base, what, d};
    fm_status st = parse_value(&p, 0, &d->root);
    if (!st) {
        skip_ws(&p);
        if (p.pos != p.n) st = perr(&p, p.pos, "the end of the text after the value");
    }
    if (st) {
        fm_json_doc_free(&d);
        return st;
    }
    *out = d;
    return NULL;
}

fm_status fm_json_parse_file(const char *path, size_t max_bytes, fm_json_doc **out)
{
    *out = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp) return FM_ERR(FM_ERR_INPUT, "cannot read %s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(fp), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fclose(fp);
        return FM_ERR(FM_ERR_INPUT, "%s is not a regular file", path);
    }
    if ((uint64_t)sb.st_size > max_bytes) {
        fclose(fp);
        return FM_ERR(FM_ERR_INPUT, "%s has %lld bytes, more than the %zu this reader accepts for such a file",
                      path, (long long)sb.st_size, max_bytes);
    }
    size_t n = (size_t)sb.st_size;
    char *buf = malloc(n ? n : 1);
    if (!buf) {
        fclose(fp);
        return FM_ERR(FM_ERR_NOMEM, "out of memory reading %s (%zu bytes)", path, n);
    }
    size_t got = fread(buf, 1, n, fp);
    int err = ferror(fp);
    fclose(fp);
    if (got != n || err) {
        free(buf);
        return FM_ERR(FM_ERR_INPUT, "cannot read %s: %s", path, err ? strerror(errno) : "short read");
    }
    fm_status st = fm_json_parse(buf, n, path, 0, out);
    free(buf);
    return st;
}

/* ---- access --------------------------------------------------------------------------------- */

const fm_json *fm_json_get(const fm_json *obj, const char *key)
{
    if (!obj || obj->type != FM_JSON_OBJECT) return NULL;
    size_t kl = strlen(key);
    for (size_t i = 0; i < obj->len; i++)
        if (obj->key_lens[i] == kl && memcmp(obj->keys[i], key, kl) == 0) return obj->items[i];
    return NULL;
}

const char *fm_json_type_name(fm_json_type t)
{
    switch (t) {
    case FM_JSON_NULL: return "null";
    case FM_JSON_FALSE: return "false";
    case FM_JSON_TRUE: return "true";
    case FM_JSON_NUMBER: return "a number";
    case FM_JSON_STRING: return "a string";
    case FM_JSON_ARRAY: return "an array";
    case FM_JSON_OBJECT: return "an object";
    }
    return "?";
}

fm_status fm_json_want(const fm_json *v, fm_json_type t, const char *where)
{
    if (v && v->type == t) return NULL;
    if (!v) return FM_ERR(FM_ERR_INPUT, "%s: expected %s, found nothing (the key is missing)", where, fm_json_type_name(t));
    return FM_ERR(FM_ERR_INPUT, "%s: expected %s, found %s (byte %zu)", where, fm_json_type_name(t),
                  fm_json_type_name(v->type), v->offset);
}

fm_status fm_json_want_int(const fm_json *v, int64_t lo, int64_t hi, const char *where, int64_t *out)
{
    FM_TRY(fm_json_want(v, FM_JSON_NUMBER, where));
    if (!v->is_int)
        return FM_ERR(FM_ERR_INPUT, "%s: expected a whole number, found %g (byte %zu)", where, v->num, v->offset);
    if (v->i < lo || v->i > hi)
        return FM_ERR(FM_ERR_INPUT, "%s: expected a whole number in %" PRId64 "..%" PRId64 ", found %" PRId64
                      " (byte %zu)", where, lo, hi, v->i, v->offset);
    *out = v->i;
    return NULL;
}

fm_status fm_json_want_num(const fm_json *v, const char *where, double *out)
{
    FM_TRY(fm_json_want(v, FM_JSON_NUMBER, where));
    *out = v->num;
    return NULL;
}

fm_status fm_json_want_bool(const fm_json *v, const char *where, int *out)
{
    if (v && (v->type == FM_JSON_TRUE || v->type == FM_JSON_FALSE)) {
        *out = v->type == FM_JSON_TRUE;
        return NULL;
    }
    if (!v) return FM_ERR(FM_ERR_INPUT, "%s: expected true or false, found nothing (the key is missing)", where);
    return FM_ERR(FM_ERR_INPUT, "%s: expected true or false, found %s (byte %zu)", where,
                  fm_json_type_name(v->type), v->offset);
}

/* ---- output --------------------------------------------------------------------------------- */

void fm_json_put_string(FILE *out, const char *s, size_t len)
{
    fputc('"', out);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"': fputs("\\\"", out); break;
        case '\\': fputs("\\\\", out); break;
        case '\n': fputs("\\n", out); break;
        case '\r': fputs("\\r", out); break;
        case '\t': fputs("\\t", out); break;
        default:
            if (c < 0x20 || c == 0x7F) fprintf(out, "\\u%04x", c);
            else fputc(c, out);
        }
    }
    fputc('"', out);
}

/* presplit.c — the pre-split rules (presplit.h), each written out from its regular expression. */
#include "data/presplit.h"

#include <string.h>

#include "data/unicode_tables.h"

#define CP_INVALID 0x110000u /* a byte that starts no valid UTF-8 character */

enum { C_L, C_N, C_S, C_O }; /* letter, number, space, other */

/* A scan of one word: the text, whether it ends at len, and whether the scan needed more. */
typedef struct scan {
    const uint8_t *t;
    size_t len;
    int at_end;
    int hit; /* looked at or past len while more text may follow */
    fm_presplit rule;
} scan;

/* The character at byte offset i: 1 and *cp, *n when there is one; 0 at the end of the buffer or when
 * a character is cut by the end of the buffer (then s->hit when more text may follow). */
static int get(scan *s, size_t i, uint32_t *cp, size_t *n)
{
    if (i >= s->len) {
        if (!s->at_end) s->hit = 1;
        return 0;
    }
    const uint8_t *t = s->t + i;
    size_t avail = s->len - i;
    uint8_t c = t[0];
    if (c < 0x80) {
        *cp = c;
        *n = 1;
        return 1;
    }
    size_t L;
    uint32_t v, min;
    if (c >= 0xC2 && c <= 0xDF) L = 2, v = c & 0x1F, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF) L = 3, v = c & 0x0F, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4) L = 4, v = c & 0x07, min = 0x10000;
    else goto invalid;
    for (size_t k = 1; k < L; k++) {
        if (k >= avail) {
            if (!s->at_end) { /* a character cut by the buffer's end */
                s->hit = 1;
                return 0;
            }
            goto invalid;
        }
        if ((t[k] & 0xC0) != 0x80) goto invalid;
        v = v << 6 | (t[k] & 0x3Fu);
        /* refuse overlong and out-of-range prefixes early, as a decoder would */
        if (k == 1 && ((c == 0xE0 && t[1] < 0xA0) || (c == 0xED && t[1] > 0x9F) || (c == 0xF0 && t[1] < 0x90) ||
                       (c == 0xF4 && t[1] > 0x8F)))
            goto invalid;
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) goto invalid;
    *cp = v;
    *n = L;
    return 1;
invalid:
    *cp = CP_INVALID;
    *n = 1;
    return 1;
}

static int in_table(const uint32_t (*tab)[2], size_t n, uint32_t cp)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < tab[mid][0]) hi = mid;
        else if (cp > tab[mid][1]) lo = mid + 1;
        else return 1;
    }
    return 0;
}

#define TABLE(t) (t), (sizeof(t) / sizeof((t)[0]))

static int uclass(uint32_t cp)
{
    if (cp < 0x80) {
        if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z')) return C_L;
        if (cp >= '0' && cp <= '9') return C_N;
        if (cp == ' ' || (cp >= 0x09 && cp <= 0x0D)) return C_S;
        return C_O;
    }
    if (cp == CP_INVALID) return C_O;
    if (in_table(TABLE(fm_uc_letter), cp)) return C_L;
    if (in_table(TABLE(fm_uc_number), cp)) return C_N;
    if (in_table(TABLE(fm_uc_space), cp)) return C_S;
    return C_O;
}

static int fclass(uint32_t cp) /* fmtrain's: ASCII classes, every non-ASCII character a letter */
{
    if (cp >= 0x80) return C_L;
    return uclass(cp);
}

static int cls(const scan *s, uint32_t cp) { return s->rule == FM_PRESPLIT_FMTRAIN ? fclass(cp) : uclass(cp); }

/* Bytes of the run of class k starting at byte i, at most max characters. */
static size_t run(scan *s, size_t i, int k, size_t max)
{
    size_t at = i, count = 0;
    uint32_t cp;
    size_t n;
    while (count < max && get(s, at, &cp, &n) && cls(s, cp) == k) {
        at += n;
        count++;
    }
    return at - i;
}

/* Bytes of the run of \r and \n starting at byte i. */
static size_t run_crlf(scan *s, size_t i)
{
    size_t at = i;
    uint32_t cp;
    size_t n;
    while (get(s, at, &cp, &n) && (cp == '\r' || cp == '\n')) at += n;
    return at - i;
}

static int fold_eq(uint32_t cp, char lower, int icase)
{
    if (cp == (uint32_t)lower) return 1;
    if (!icase) return 0;
    if (cp == (uint32_t)(lower - 'a' + 'A')) return 1;
    return lower == 's' && cp == FM_UC_FOLD_S;
}

/* 's 't 'm 'd 're 've 'll at byte 0 (which holds '\''): its length in bytes, or 0. */
static size_t contraction(scan *s, int icase)
{
    uint32_t c1, c2;
    size_t n1, n2;
    if (!get(s, 1, &c1, &n1)) return 0;
    if (fold_eq(c1, 's', icase) || fold_eq(c1, 't', icase) || fold_eq(c1, 'm', icase) || fold_eq(c1, 'd', icase))
        return 1 + n1;
    int r = fold_eq(c1, 'r', icase), v = fold_eq(c1, 'v', icase), l = fold_eq(c1, 'l', icase);
    if (!(r || v || l) || !get(s, 1 + n1, &c2, &n2)) return 0;
    if (((r || v) && fold_eq(c2, 'e', icase)) || (l && fold_eq(c2, 'l', icase))) return 1 + n1 + n2;
    return 0;
}

/* A run of white space at byte 0, by \s+(?!\S)|\s+ (and before them, for Llama 3, \s*[\r\n]+; for
 * fmtrain's rule the bounded form with its first alternative, see presplit.h). */
static size_t spaces(scan *s)
{
    const size_t max = s->rule == FM_PRESPLIT_FMTRAIN ? FM_PRESPLIT_MAX_RUN : (size_t)-1;
    size_t at = 0, count = 0, last = 0, crlf_end = 0;
    uint32_t cp = 0, last_cp = 0;
    size_t n;
    while (count < max && get(s, at, &cp, &n) && cls(s, cp) == C_S) {
        last = at;
        last_cp = cp;
        at += n;
        count++;
        if (cp == '\r' || cp == '\n') crlf_end = at;
    }
    if (s->rule == FM_PRESPLIT_FMTRAIN) {
        if (count == max) {
            /* a longer run: W{1,256}(?![^W]) takes 256 when the run goes on; a run of exactly 256 is
             * decided like a short one */
            uint32_t nx;
            size_t nn;
            if (get(s, at, &nx, &nn) && cls(s, nx) == C_S) return at;
            if (s->hit) return at;
        }
        if (last_cp != ' ') return at; /* ends in a space other than ' ' */
    }
    if (s->rule == FM_PRESPLIT_LLAMA3) {
        /* \s*[\r\n]+ : up to the last \r or \n of the run, once the whole run is known */
        uint32_t nx;
        size_t nn;
        if (!get(s, at, &nx, &nn) && !s->at_end) return at; /* the run may go on: uncertain */
        if (crlf_end) return crlf_end;
    }
    /* \s+(?!\S): the run, less its last character when a non-space follows; \s+ for a single one */
    uint32_t nx;
    size_t nn;
    if (!get(s, at, &nx, &nn)) return at; /* end of the text (or uncertain) */
    return count >= 2 ? last : at;
}

static size_t next_fmtrain(scan *s)
{
    uint32_t c0, c1;
    size_t n0, n1;
    if (!get(s, 0, &c0, &n0)) return s->len;
    if (c0 == '\'') {
        size_t c = contraction(s, 0);
        if (c) return c;
    }
    if (c0 == ' ' && get(s, 1, &c1, &n1) && cls(s, c1) != C_S) return 1 + run(s, 1, cls(s, c1), FM_PRESPLIT_MAX_RUN);
    int k0 = cls(s, c0);
    if (k0 != C_S) return run(s, 0, k0, FM_PRESPLIT_MAX_RUN);
    return spaces(s);
}

static size_t next_gpt2(scan *s)
{
    uint32_t c0, c1;
    size_t n0, n1;
    if (!get(s, 0, &c0, &n0)) return s->len;
    if (c0 == '\'') {
        size_t c = contraction(s, 0);
        if (c) return c;
    }
    if (c0 == ' ' && get(s, 1, &c1, &n1) && cls(s, c1) != C_S) return 1 + run(s, 1, cls(s, c1), (size_t)-1);
    int k0 = cls(s, c0);
    if (k0 != C_S) return run(s, 0, k0, (size_t)-1);
    return spaces(s);
}

static size_t next_llama3(scan *s)
{
    uint32_t c0, c1;
    size_t n0, n1;
    if (!get(s, 0, &c0, &n0)) return s->len;
    if (c0 == '\'') {
        size_t c = contraction(s, 1);
        if (c) return c;
    }
    int k0 = cls(s, c0);
    /* [^\r\n\p{L}\p{N}]?\p{L}+ */
    if (k0 == C_L) return run(s, 0, C_L, (size_t)-1);
    if (k0 != C_N && c0 != '\r' && c0 != '\n' && get(s, n0, &c1, &n1) && cls(s, c1) == C_L)
        return n0 + run(s, n0, C_L, (size_t)-1);
    /* \p{N}{1,3} */
    if (k0 == C_N) return run(s, 0, C_N, 3);
    /*  ?[^\s\p{L}\p{N}]+[\r\n]* */
    if (c0 == ' ' && get(s, 1, &c1, &n1) && cls(s, c1) == C_O) {
        size_t o = 1 + run(s, 1, C_O, (size_t)-1);
        return o + run_crlf(s, o);
    }
    if (k0 == C_O) {
        size_t o = run(s, 0, C_O, (size_t)-1);
        return o + run_crlf(s, o);
    }
    return spaces(s);
}

/* fmtrain's rule on bytes, for speed: a byte >= 0x80 is part of a non-ASCII character or an invalid
 * byte, a letter either way, so runs end at the same bytes as runs of characters; only the cap at 256
 * characters needs characters, and only a run of more than 256 bytes can reach it. Returns 0 when the
 * exact scan must decide (a long run, a contraction cut by the end of the buffer). */
static const uint8_t ascii_class[128] = {
    C_O, C_O, C_O, C_O, C_O, C_O, C_O, C_O, C_O, C_S, C_S, C_S, C_S, C_S, C_O, C_O, /* \t \n \v \f \r */
    C_O, C_O, C_O, C_O, C_O, C_O, C_O, C_O, C_O, C_O, C_O, C_O, C_O, C_O, C_O, C_O,
    C_S, C_O, C_O, C_O, C_O, C_O, C_O, C_O, C_O, C_O, C_O, C_O, C_O, C_O, C_O, C_O, /* ' ' */
    C_N, C_N, C_N, C_N, C_N, C_N, C_N, C_N, C_N, C_N, C_O, C_O, C_O, C_O, C_O, C_O, /* 0-9 */
    C_O, C_L, C_L, C_L, C_L, C_L, C_L, C_L, C_L, C_L, C_L, C_L, C_L, C_L, C_L, C_L, /* A- */
    C_L, C_L, C_L, C_L, C_L, C_L, C_L, C_L, C_L, C_L, C_L, C_O, C_O, C_O, C_O, C_O, /* -Z */
    C_O, C_L, C_L, C_L, C_L, C_L, C_L, C_L, C_L, C_L, C_L, C_L, C_L, C_L, C_L, C_L, /* a- */
    C_L, C_L, C_L, C_L, C_L, C_L, C_L, C_L, C_L, C_L, C_L, C_O, C_O, C_O, C_O, C_O, /* -z */
};

static inline int byte_class(uint8_t b) { return b >= 0x80 ? C_L : ascii_class[b]; }

static size_t fast_fmtrain(const uint8_t *t, size_t len, int at_end, int *certain)
{
    const size_t max = FM_PRESPLIT_MAX_RUN;
    uint8_t c = t[0];
    if (c == '\'') {
        if (len < 3 && !at_end) return 0;
        if (len >= 2) {
            uint8_t d = t[1];
            if (d == 's' || d == 't' || d == 'm' || d == 'd') return 2;
            if (len >= 3 && ((d == 'r' && t[2] == 'e') || (d == 'v' && t[2] == 'e') || (d == 'l' && t[2] == 'l')))
                return 3;
        }
    }
    size_t n;
    if (c == ' ' && len >= 2 && byte_class(t[1]) != C_S) {
        int k1 = byte_class(t[1]);
        n = 2;
        while (n < len && byte_class(t[n]) == k1) n++;
        if (n - 1 > max) return 0;
    } else if (byte_class(c) != C_S) {
        int k = byte_class(c);
        n = 1;
        while (n < len && byte_class(t[n]) == k) n++;
        if (n > max) return 0;
    } else {
        n = 1;
        while (n < len && byte_class(t[n]) == C_S) n++;
        if (n > max) return 0;
        if (n < len && t[n - 1] == ' ' && n >= 2) {
            *certain = 1;
            return n - 1; /* leave " " for the next word */
        }
    }
    *certain = n < len || at_end;
    return n;
}

/* ---- version 1 (bytes; kept for old tokenizers) ---------------------------------------------- */

static int byte_class_v1(uint8_t c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80) return C_L;
    if (c >= '0' && c <= '9') return C_N;
    if (c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r') return C_S;
    return C_O;
}

static size_t next_v1(const uint8_t *t, size_t len)
{
    if (len == 0) return 0;
    size_t n;
    uint8_t c = t[0];
    if (c == '\'' && len >= 2) {
        uint8_t d = t[1];
        if (d == 's' || d == 't' || d == 'm' || d == 'd') return 2;
        if (len >= 3 && ((d == 'r' && t[2] == 'e') || (d == 'v' && t[2] == 'e') || (d == 'l' && t[2] == 'l')))
            return 3;
    }
    int cl = byte_class_v1(c);
    if (c == ' ' && len >= 2 && byte_class_v1(t[1]) != C_S) {
        int cl1 = byte_class_v1(t[1]);
        n = 2;
        while (n < len && byte_class_v1(t[n]) == cl1) n++;
    } else if (cl == C_S) {
        n = 1;
        while (n < len && byte_class_v1(t[n]) == C_S) n++;
        if (n < len && n >= 2 && t[n - 1] == ' ') n--; /* leave " " for the next word */
    } else {
        n = 1;
        while (n < len && byte_class_v1(t[n]) == cl) n++;
    }
    return n < FM_PRESPLIT_MAX_RUN ? n : FM_PRESPLIT_MAX_RUN;
}

/* Version 1's streaming cut (its rule has no look-ahead beyond two bytes). */
static size_t cut_v1(const uint8_t *t, size_t len)
{
    if (len < 3) return 0;
    for (size_t c = len - 2; c >= 1; c--) {
        int prev = byte_class_v1(t[c - 1]);
        if (t[c] == ' ' && prev != C_S && byte_class_v1(t[c + 1]) != C_S) return c;
        if (prev == C_S && t[c - 1] != ' ' && byte_class_v1(t[c]) != C_S) return c;
    }
    return 0;
}

/* ---- the interface ---------------------------------------------------------------------------- */

size_t fm_presplit_next(fm_presplit rule, const uint8_t *text, size_t len, int at_end, int *certain)
{
    if (certain) *certain = 1;
    if (len == 0) {
        if (certain) *certain = at_end;
        return 0;
    }
    if (rule == FM_PRESPLIT_FMTRAIN_V1) {
        size_t n = next_v1(text, len);
        if (certain && !at_end) *certain = n + 2 < len; /* what cut_v1 guarantees */
        return n;
    }
    if (rule == FM_PRESPLIT_FMTRAIN) {
        int c = 1;
        size_t n = fast_fmtrain(text, len, at_end, &c);
        if (n) {
            if (certain) *certain = c;
            return n;
        }
    }
    scan s = {text, len, at_end, 0, rule};
    size_t n;
    switch (rule) {
    case FM_PRESPLIT_GPT2: n = next_gpt2(&s); break;
    case FM_PRESPLIT_LLAMA3: n = next_llama3(&s); break;
    default: n = next_fmtrain(&s); break;
    }
    if (n == 0) n = 1; /* never happens for a non-empty text; keeps callers' loops finite */
    if (n > len) n = len;
    if (certain) *certain = !s.hit || at_end;
    return n;
}

/* 1 when splitting text[s..c) as a whole text (ending at c) gives the word starts b[0..k] (b[0] = s,
 * b[k] = c). */
static int resplit_same(fm_presplit rule, const uint8_t *text, const size_t *b, int k)
{
    size_t p = b[0], c = b[k];
    for (int i = 1; p < c; i++) {
        p += fm_presplit_next(rule, text + p, c - p, 1, NULL);
        if (i > k || p != b[i]) return 0;
    }
    return 1;
}

#define CUT_RING 64 /* word starts remembered by fm_presplit_cut */
#define CUT_BACK 8  /* words re-split to check a cut: a word depends on at most 3 characters after it */

/* The cut of text[0..len) searched from `start`, a known word boundary of the whole text: the last
 * boundary c > start such that the words up to c are certain and text[0..c) alone splits the same way;
 * 0 when there is none. */
static size_t cut_from(fm_presplit rule, const uint8_t *text, size_t len, size_t start)
{
    /* The words whose extent nothing after len can change ... */
    size_t ring[CUT_RING];
    uint64_t nb = 0; /* boundaries seen; ring[i % CUT_RING] */
    size_t pos = start;
    ring[nb++ % CUT_RING] = start;
    while (pos < len) {
        int certain = 0;
        size_t n = fm_presplit_next(rule, text + pos, len - pos, 0, &certain);
        if (!certain) break;
        pos += n;
        ring[nb++ % CUT_RING] = pos;
    }
    /* ... and of those boundaries the last c such that text[0..c) alone splits the same way: the end
     * of a text changes how a run of spaces just before it splits ("  \n" + "x"). */
    uint64_t oldest = nb > CUT_RING ? nb - CUT_RING : 0;
    for (uint64_t j = nb - 1; j > oldest; j--) {
        uint64_t s = j - CUT_BACK > oldest && j > CUT_BACK ? j - CUT_BACK : oldest;
        size_t b[CUT_BACK + 2];
        int k = (int)(j - s);
        for (int i = 0; i <= k; i++) b[i] = ring[(s + (uint64_t)i) % CUT_RING];
        if (resplit_same(rule, text, b, k)) return b[k];
    }
    return 0;
}

/* Searching from the start of a long buffer would pre-split all of it once more; instead the search
 * starts at a position that is a word boundary by every rule here, whatever precedes it: a printable
 * ASCII character after a '\n' (the white space before it ends there: fmtrain's rule keeps a run that
 * ends in '\n' whole, GPT-2's leaves the '\n' alone (\s+(?!\S), then \s+), Llama 3's ends its
 * \s*[\r\n]+ there; and no rule lets a word start with a '\n' and go on with a non-space). */
#define CUT_RESYNC_TRIES 16

size_t fm_presplit_cut(fm_presplit rule, const uint8_t *text, size_t len)
{
    if (rule == FM_PRESPLIT_FMTRAIN_V1) return cut_v1(text, len);
    size_t i = len, tries = 0;
    while (i > 1 && tries < CUT_RESYNC_TRIES) {
        i--;
        if (text[i - 1] == '\n' && text[i] > 0x20 && text[i] < 0x7F) {
            size_t c = cut_from(rule, text, len, i);
            if (c) return c;
            tries++;
        }
    }
    return cut_from(rule, text, len, 0);
}

/* The expressions, as `tokenizers` (Oniguruma) reads them. */
#define W "\\t\\n\\x0B\\f\\r "
static const char re_fmtrain[] =
    "'(?:[sdmt]|ll|ve|re)"
    "| ?[A-Za-z\\x{80}-\\x{10FFFF}]{1,256}"
    "| ?[0-9]{1,256}"
    "| ?[^" W "A-Za-z0-9\\x{80}-\\x{10FFFF}]{1,256}"
    "|[" W "]{0,255}[\\t\\n\\x0B\\f\\r](?![" W "])"
    "|[" W "]{1,256}(?![^" W "])"
    "|[" W "]{1,256}";
#undef W
static const char re_gpt2[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
static const char re_llama3[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
                                "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

const char *fm_presplit_regex(fm_presplit rule)
{
    switch (rule) {
    case FM_PRESPLIT_FMTRAIN: return re_fmtrain;
    case FM_PRESPLIT_GPT2: return re_gpt2;
    case FM_PRESPLIT_LLAMA3: return re_llama3;
    default: return NULL;
    }
}

int fm_presplit_from_regex(const char *regex, fm_presplit *rule)
{
    static const fm_presplit all[] = {FM_PRESPLIT_FMTRAIN, FM_PRESPLIT_GPT2, FM_PRESPLIT_LLAMA3};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        if (strcmp(regex, fm_presplit_regex(all[i])) == 0) {
            *rule = all[i];
            return 1;
        }
    return 0;
}

const char *fm_presplit_name(fm_presplit rule)
{
    switch (rule) {
    case FM_PRESPLIT_FMTRAIN_V1: return "fmtrain-v1";
    case FM_PRESPLIT_FMTRAIN: return "fmtrain";
    case FM_PRESPLIT_GPT2: return "gpt2";
    case FM_PRESPLIT_LLAMA3: return "llama3";
    }
    return "?";
}

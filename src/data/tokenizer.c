/* tokenizer.c — byte-level BPE: pre-split, incremental trainer, cached encoder, decoder, HDF5 storage.
 * The rules (vocabulary layout, pre-split, tie-breaking, HDF5 layout) are stated in tokenizer.h.
 * Not here: reading input files or dataset files (cmd_prepare.c, dataset.c). */
#include "data/tokenizer.h"
#include "data/h5util.h"
#include "data/presplit.h"
#include "dist/comm.h"

#include <inttypes.h>
#include <mpi.h>
#include <stdlib.h>
#include <string.h>

/* ---- small growable arrays and hashing ---------------------------------------------------------- */

static uint64_t hash_bytes(const uint8_t *p, size_t n)
{
    /* FNV-1a variant over 8-byte words, then a final mix: fast for short words. */
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (uint64_t)n;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 0x100000001B3ull;
        h ^= h >> 29;
    }
    uint64_t w = 0;
    for (size_t k = 0; i < n; i++, k++) w |= (uint64_t)p[i] << (8 * k);
    h = (h ^ w) * 0x100000001B3ull;
    h ^= h >> 32;
    h *= 0xD6E8FEB86659FD93ull;
    h ^= h >> 32;
    return h;
}

static uint64_t hash_u64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

/* Open-addressing map uint64 key -> uint32 value (value 0 is "empty"; callers store v+1). */
typedef struct u64map {
    uint64_t *keys;
    uint32_t *vals;
    size_t cap; /* power of two */
    size_t n;
} u64map;

static fm_status u64map_init(u64map *m, size_t want)
{
    size_t cap = 16;
    while (cap < want * 2) cap *= 2;
    m->keys = calloc(cap, sizeof *m->keys);
    m->vals = calloc(cap, sizeof *m->vals);
    m->cap = cap;
    m->n = 0;
    if (!m->keys || !m->vals) {
        free(m->keys);
        free(m->vals);
        m->keys = NULL;
        m->vals = NULL;
        return FM_ERR(FM_ERR_NOMEM, "out of memory allocating a hash table of %zu entries", cap);
    }
    return NULL;
}

static void u64map_free(u64map *m)
{
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

static inline uint32_t u64map_get(const u64map *m, uint64_t key)
{
    size_t mask = m->cap - 1, i = hash_u64(key) & mask;
    for (;;) {
        uint32_t v = m->vals[i];
        if (v == 0) return 0;
        if (m->keys[i] == key) return v;
        i = (i + 1) & mask;
    }
}

static fm_status u64map_put(u64map *m, uint64_t key, uint32_t val);

static fm_status u64map_grow(u64map *m)
{
    u64map bigger;
    FM_TRY(u64map_init(&bigger, m->cap));
    for (size_t i = 0; i < m->cap; i++)
        if (m->vals[i]) {
            fm_status st = u64map_put(&bigger, m->keys[i], m->vals[i]);
            if (st) {
                u64map_free(&bigger);
                return st;
            }
        }
    u64map_free(m);
    *m = bigger;
    return NULL;
}

/* Inserts or overwrites (val != 0). */
static fm_status u64map_put(u64map *m, uint64_t key, uint32_t val)
{
    if ((m->n + 1) * 2 > m->cap) FM_TRY(u64map_grow(m));
    size_t mask = m->cap - 1, i = hash_u64(key) & mask;
    while (m->vals[i] && m->keys[i] != key) i = (i + 1) & mask;
    if (!m->vals[i]) m->n++;
    m->keys[i] = key;
    m->vals[i] = val;
    return NULL;
}

void fm_tokenizer_ids_free(fm_tokenizer_ids *v)
{
    if (!v) return;
    free(v->ids);
    v->ids = NULL;
    v->n = v->cap = 0;
}

static fm_status ids_reserve(fm_tokenizer_ids *v, size_t extra)
{
    if (v->n + extra <= v->cap) return NULL;
    size_t cap = v->cap ? v->cap : 1024;
    while (cap < v->n + extra) cap *= 2;
    uint32_t *p = realloc(v->ids, cap * sizeof *p);
    FM_CHECK_ALLOC(p, cap * sizeof *p);
    v->ids = p;
    v->cap = cap;
    return NULL;
}

/* ---- pre-split (data/presplit.h) ---------------------------------------------------------------- */

size_t fm_tokenizer_word_length(const uint8_t *t, size_t len)
{
    return fm_presplit_next(FM_PRESPLIT_FMTRAIN, t, len, 1, NULL);
}

size_t fm_tokenizer_safe_cut(const uint8_t *t, size_t len) { return fm_presplit_cut(FM_PRESPLIT_FMTRAIN, t, len); }

/* ---- the tokenizer object ----------------------------------------------------------------------- */

#define CACHE_BITS 16 /* 65536 cached words at most; the cache is cleared when half full */
#define CACHE_MAX_WORD 1024 /* longer words are not cached */
#define SHORT_WORD 256 /* BPE of words up to this many bytes scans; longer ones use a heap */

struct fm_tokenizer {
    uint32_t vocab;
    uint32_t n_merges;
    int version;           /* HDF5 layout: 1 or 2 */
    fm_presplit rule;
    int ignore_merges;
    uint32_t eot;
    int64_t bos;           /* begin-of-text id, -1 none */
    uint32_t byte_id[256];
    uint32_t *merges;      /* (n_merges, 2) */
    uint32_t *merge_res;   /* (n_merges) the id merge k makes */
    uint8_t *special;      /* (vocab) */
    uint64_t *off;         /* (vocab+1) */
    uint8_t *bytes;        /* token strings concatenated */
    u64map merge_rank;     /* (a<<32|b) -> rank+1 */
    u64map word_id;        /* ignore_merges: hash of a non-special token's bytes -> id+1 */
    /* encode cache: word bytes -> ids, in arenas; cleared when full */
    uint64_t *c_hash;   /* (1<<CACHE_BITS) 0 = empty */
    uint32_t *c_key;    /* offset into c_kbytes */
    uint16_t *c_klen;
    uint32_t *c_val;    /* offset into c_ids */
    uint16_t *c_vlen;
    uint8_t *c_kbytes;
    uint32_t *c_ids;
    size_t c_kused, c_iused, c_n;
    /* scratch of the heap BPE for long words */
    uint32_t *h_sym;
    int64_t *h_prev, *h_next;
    uint64_t *h_heap;
    size_t h_cap, h_heap_cap;
};

#define CACHE_KBYTES ((size_t)(1u << CACHE_BITS) * 16u)
#define CACHE_IDS ((size_t)(1u << CACHE_BITS) * 8u)

uint32_t fm_tokenizer_vocab_size(const fm_tokenizer *tok) { return tok->vocab; }
uint32_t fm_tokenizer_eot_id(const fm_tokenizer *tok) { return tok->eot; }
fm_presplit fm_tokenizer_presplit(const fm_tokenizer *tok) { return tok->rule; }
int fm_tokenizer_version(const fm_tokenizer *tok) { return tok->version; }
int fm_tokenizer_ignore_merges(const fm_tokenizer *tok) { return tok->ignore_merges; }
int64_t fm_tokenizer_bos_id(const fm_tokenizer *tok) { return tok->bos; }
int fm_tokenizer_is_special(const fm_tokenizer *tok, uint32_t id) { return id < tok->vocab && tok->special[id]; }
uint32_t fm_tokenizer_byte_id(const fm_tokenizer *tok, uint8_t b) { return tok->byte_id[b]; }
uint32_t fm_tokenizer_n_merges(const fm_tokenizer *tok) { return tok->n_merges; }

void fm_tokenizer_merge(const fm_tokenizer *tok, uint32_t k, uint32_t *a, uint32_t *b, uint32_t *c)
{
    *a = tok->merges[2 * k];
    *b = tok->merges[2 * k + 1];
    *c = tok->merge_res[k];
}

size_t fm_tokenizer_cut(const fm_tokenizer *tok, const uint8_t *text, size_t len)
{
    return fm_presplit_cut(tok->rule, text, len);
}

void fm_tokenizer_free(fm_tokenizer **tokp)
{
    if (!tokp || !*tokp) return;
    fm_tokenizer *t = *tokp;
    free(t->merges);
    free(t->merge_res);
    free(t->special);
    free(t->off);
    free(t->bytes);
    u64map_free(&t->merge_rank);
    u64map_free(&t->word_id);
    free(t->c_hash);
    free(t->c_key);
    free(t->c_klen);
    free(t->c_val);
    free(t->c_vlen);
    free(t->c_kbytes);
    free(t->c_ids);
    free(t->h_sym);
    free(t->h_prev);
    free(t->h_next);
    free(t->h_heap);
    free(t);
    *tokp = NULL;
}

static const uint8_t *tok_bytes(const fm_tokenizer *t, uint32_t id, size_t *len)
{
    *len = (size_t)(t->off[id + 1] - t->off[id]);
    return t->bytes + t->off[id];
}

/* The merge table and, with ignore_merges, the word table; `what` names the source in messages. */
static fm_status build_maps(fm_tokenizer *t, const char *what)
{
    FM_TRY(u64map_init(&t->merge_rank, (size_t)t->n_merges + 16));
    for (uint32_t k = 0; k < t->n_merges; k++) {
        uint64_t key = ((uint64_t)t->merges[2 * k] << 32) | t->merges[2 * k + 1];
        if (u64map_get(&t->merge_rank, key))
            return FM_ERR(FM_ERR_INPUT, "%s: merge %u repeats the pair of ids (%u, %u)", what, k, t->merges[2 * k],
                          t->merges[2 * k + 1]);
        FM_TRY(u64map_put(&t->merge_rank, key, k + 1));
    }
    if (t->ignore_merges) {
        FM_TRY(u64map_init(&t->word_id, (size_t)t->vocab + 16));
        for (uint32_t id = 0; id < t->vocab; id++) {
            if (t->special[id]) continue;
            size_t l;
            const uint8_t *b = tok_bytes(t, id, &l);
            uint64_t h = hash_bytes(b, l);
            /* distinct bytes were checked; equal hashes of different bytes: the first id keeps the slot and
             * the other is found by merging, which reaches the same token */
            if (!u64map_get(&t->word_id, h)) FM_TRY(u64map_put(&t->word_id, h, id + 1));
        }
    }
    return NULL;
}

/* Builds a trained-layout tokenizer (bytes = ids 0..255, merge k -> 256+k, last id special eot) from a
 * merge list (already validated: each merge refers to ids < 256+k). Takes ownership of `merges`. */
static fm_status tokenizer_from_merges(uint32_t vocab, uint32_t n_merges, uint32_t *merges, int version,
                                       fm_tokenizer **out)
{
    fm_status st = NULL;
    fm_tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        free(merges);
        return FM_ERR(FM_ERR_NOMEM, "out of memory allocating a tokenizer");
    }
    t->vocab = vocab;
    t->n_merges = n_merges;
    t->merges = merges;
    t->version = version;
    t->rule = version == 1 ? FM_PRESPLIT_FMTRAIN_V1 : FM_PRESPLIT_FMTRAIN;
    t->eot = vocab - 1;
    t->bos = -1;
    for (int b = 0; b < 256; b++) t->byte_id[b] = (uint32_t)b;
    t->off = malloc(((size_t)vocab + 1) * sizeof *t->off);
    t->merge_res = malloc(((size_t)n_merges + 1) * sizeof *t->merge_res);
    t->special = calloc(vocab, 1);
    if (!t->off || !t->merge_res || !t->special) {
        st = FM_ERR(FM_ERR_NOMEM, "out of memory for a tokenizer of %u ids", vocab);
        goto fail;
    }
    t->special[vocab - 1] = 1;
    for (uint32_t k = 0; k < n_merges; k++) t->merge_res[k] = 256 + k;
    /* lengths first */
    uint64_t total = 0;
    const uint64_t max_len = version == 1 ? FM_PRESPLIT_MAX_RUN : 4 * (FM_PRESPLIT_MAX_RUN + 1);
    t->off[0] = 0;
    for (uint32_t id = 0; id < vocab; id++) {
        uint64_t l;
        if (id < 256) l = 1;
        else if (id - 256 < n_merges) {
            uint32_t a = merges[2 * (id - 256)], b = merges[2 * (id - 256) + 1];
            l = (t->off[a + 1] - t->off[a]) + (t->off[b + 1] - t->off[b]);
        } else l = strlen(FM_TOKENIZER_EOT_TEXT);
        if (l > max_len) {
            /* merges never cross words, so no trained token is longer than a word */
            st = FM_ERR(FM_ERR_INPUT, "tokenizer token %u would be %" PRIu64 " bytes long, more than a word "
                                      "(%" PRIu64 " bytes): the merges are damaged",
                        id, l, max_len);
            goto fail;
        }
        total += l;
        t->off[id + 1] = total;
    }
    t->bytes = malloc(total ? total : 1);
    if (!t->bytes) {
        st = FM_ERR(FM_ERR_NOMEM, "out of memory for %" PRIu64 " bytes of token strings", total);
        goto fail;
    }
    for (uint32_t id = 0; id < vocab; id++) {
        uint8_t *dst = t->bytes + t->off[id];
        if (id < 256) dst[0] = (uint8_t)id;
        else if (id - 256 < n_merges) {
            uint32_t a = merges[2 * (id - 256)], b = merges[2 * (id - 256) + 1];
            size_t la = t->off[a + 1] - t->off[a], lb = t->off[b + 1] - t->off[b];
            memcpy(dst, t->bytes + t->off[a], la);
            memcpy(dst + la, t->bytes + t->off[b], lb);
        } else memcpy(dst, FM_TOKENIZER_EOT_TEXT, strlen(FM_TOKENIZER_EOT_TEXT));
    }
    FM_TRY_GOTO(st, fail, build_maps(t, "tokenizer"));
    *out = t;
    return NULL;
fail:
    fm_tokenizer_free(&t);
    return st;
}

fm_status fm_tokenizer_from_spec(const fm_tokenizer_spec *sp, const char *what, fm_tokenizer **out)
{
    *out = NULL;
    const uint32_t V = sp->vocab_size;
    if (V < 257 || V > FM_TOKENIZER_MAX_VOCAB)
        return FM_ERR(FM_ERR_INPUT, "%s: %u tokens; a byte-level BPE vocabulary has 257..%u (256 bytes, merges, "
                      "special tokens)", what, V, FM_TOKENIZER_MAX_VOCAB);
    if (sp->presplit == FM_PRESPLIT_FMTRAIN_V1)
        return FM_ERR(FM_ERR_INTERNAL, "%s: a described tokenizer cannot use the version-1 pre-split", what);
    if (sp->eot_id >= V || !sp->special[sp->eot_id])
        return FM_ERR(FM_ERR_INPUT, "%s: the end-of-text id %u is not a special token of the vocabulary", what,
                      sp->eot_id);
    if (sp->has_bos && (sp->bos_id >= V || !sp->special[sp->bos_id]))
        return FM_ERR(FM_ERR_INPUT, "%s: the begin-of-text id %u is not a special token of the vocabulary", what,
                      sp->bos_id);
    fm_status st = NULL;
    fm_tokenizer *t = calloc(1, sizeof *t);
    u64map seen = {0};
    if (!t) return FM_ERR(FM_ERR_NOMEM, "out of memory allocating a tokenizer");
    t->vocab = V;
    t->n_merges = sp->n_merges;
    t->version = 2;
    t->rule = sp->presplit;
    t->ignore_merges = sp->ignore_merges;
    t->eot = sp->eot_id;
    t->bos = sp->has_bos ? (int64_t)sp->bos_id : -1;
    uint64_t total = sp->offsets[V];
    t->off = malloc(((size_t)V + 1) * sizeof *t->off);
    t->bytes = malloc(total ? (size_t)total : 1);
    t->special = malloc(V);
    t->merges = malloc(((size_t)sp->n_merges + 1) * 2 * sizeof *t->merges);
    t->merge_res = malloc(((size_t)sp->n_merges + 1) * sizeof *t->merge_res);
    if (!t->off || !t->bytes || !t->special || !t->merges || !t->merge_res) {
        st = FM_ERR(FM_ERR_NOMEM, "out of memory for a tokenizer of %u ids", V);
        goto fail;
    }
    memcpy(t->off, sp->offsets, ((size_t)V + 1) * sizeof *t->off);
    memcpy(t->bytes, sp->bytes, (size_t)total);
    memcpy(t->special, sp->special, V);
    for (int b = 0; b < 256; b++) t->byte_id[b] = UINT32_MAX;
    FM_TRY_GOTO(st, fail, u64map_init(&seen, (size_t)V + 16));
    for (uint32_t id = 0; id < V; id++) {
        if (t->off[id + 1] < t->off[id] || t->off[id + 1] > total) {
            st = FM_ERR(FM_ERR_INPUT, "%s: the byte offsets of token %u are out of order", what, id);
            goto fail;
        }
        size_t l;
        const uint8_t *b = tok_bytes(t, id, &l);
        if (l == 0) {
            st = FM_ERR(FM_ERR_INPUT, "%s: token %u is empty", what, id);
            goto fail;
        }
        if (t->special[id]) continue;
        if (l == 1) t->byte_id[b[0]] = id;
        uint64_t h = hash_bytes(b, l);
        uint32_t prev = u64map_get(&seen, h);
        if (prev) {
            size_t pl;
            const uint8_t *pb = tok_bytes(t, prev - 1, &pl);
            if (pl == l && memcmp(pb, b, l) == 0) {
                st = FM_ERR(FM_ERR_INPUT, "%s: tokens %u and %u have the same bytes; a vocabulary maps each string "
                            "to one id", what, prev - 1, id);
                goto fail;
            }
        } else FM_TRY_GOTO(st, fail, u64map_put(&seen, h, id + 1));
    }
    for (int b = 0; b < 256; b++)
        if (t->byte_id[b] == UINT32_MAX) {
            st = FM_ERR(FM_ERR_INPUT, "%s: no token is the single byte 0x%02x, so some text cannot be encoded (a "
                        "byte-level BPE vocabulary has all 256 bytes)", what, b);
            goto fail;
        }
    for (uint32_t k = 0; k < sp->n_merges; k++) {
        uint32_t a = sp->merges[3 * k], b = sp->merges[3 * k + 1], c = sp->merges[3 * k + 2];
        if (a >= V || b >= V || c >= V || t->special[a] || t->special[b] || t->special[c]) {
            st = FM_ERR(FM_ERR_INPUT, "%s: merge %u (%u, %u -> %u) names an id that is not an ordinary token", what,
                        k, a, b, c);
            goto fail;
        }
        size_t la, lb, lc;
        const uint8_t *pa = tok_bytes(t, a, &la), *pb = tok_bytes(t, b, &lb), *pc = tok_bytes(t, c, &lc);
        if (lc != la + lb || memcmp(pc, pa, la) != 0 || memcmp(pc + la, pb, lb) != 0) {
            st = FM_ERR(FM_ERR_INPUT, "%s: merge %u joins tokens %u and %u, but token %u is not their bytes joined",
                        what, k, a, b, c);
            goto fail;
        }
        t->merges[2 * k] = a;
        t->merges[2 * k + 1] = b;
        t->merge_res[k] = c;
    }
    FM_TRY_GOTO(st, fail, build_maps(t, what));
    u64map_free(&seen);
    *out = t;
    return NULL;
fail:
    u64map_free(&seen);
    fm_tokenizer_free(&t);
    return st;
}

const uint8_t *fm_tokenizer_token(const fm_tokenizer *tok, uint32_t id, size_t *len)
{
    if (id >= tok->vocab) return NULL;
    *len = (size_t)(tok->off[id + 1] - tok->off[id]);
    return tok->bytes + tok->off[id];
}

/* ---- encoding ----------------------------------------------------------------------------------- */

static inline uint32_t rank_of(const fm_tokenizer *tok, uint32_t a, uint32_t b)
{
    return u64map_get(&tok->merge_rank, ((uint64_t)a << 32) | b);
}

/* BPE on one short word (n <= SHORT_WORD bytes): repeatedly merge the adjacent pair with the lowest
 * merge rank (leftmost first among equal ranks). rank[i] caches the rank of (s[i], s[i+1]). */
static size_t bpe_short(const fm_tokenizer *tok, const uint8_t *w, size_t n, uint32_t *s)
{
    uint32_t rank[SHORT_WORD];
    for (size_t i = 0; i < n; i++) s[i] = tok->byte_id[w[i]];
    if (n < 2 || tok->n_merges == 0) return n;
    for (size_t i = 0; i + 1 < n; i++) rank[i] = rank_of(tok, s[i], s[i + 1]);
    for (;;) {
        uint32_t best = 0;
        size_t bi = 0;
        for (size_t i = 0; i + 1 < n; i++)
            if (rank[i] && (best == 0 || rank[i] < best)) {
                best = rank[i];
                bi = i;
            }
        if (!best) break;
        s[bi] = tok->merge_res[best - 1];
        memmove(s + bi + 1, s + bi + 2, (n - bi - 2) * sizeof *s);
        memmove(rank + bi + 1, rank + bi + 2, (n > bi + 3 ? n - bi - 3 : 0) * sizeof *rank);
        n--;
        if (bi > 0) rank[bi - 1] = rank_of(tok, s[bi - 1], s[bi]);
        if (bi + 1 < n) rank[bi] = rank_of(tok, s[bi], s[bi + 1]);
    }
    return n;
}

/* The same for a long word, in O(n log n): symbols in a linked list, candidate merges in a binary
 * min-heap keyed by (rank, position of the left symbol) — the order Hugging Face's BPE model uses;
 * entries whose symbols have changed since they were pushed are skipped when popped. */
static void heap_up(uint64_t *h, size_t i)
{
    uint64_t x = h[i];
    while (i > 0 && h[(i - 1) / 2] > x) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = x;
}

static uint64_t heap_take(uint64_t *h, size_t *n)
{
    uint64_t top = h[0], x = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        uint64_t best = x;
        if (l < *n && h[l] < best) m = l, best = h[l];
        if (l + 1 < *n && h[l + 1] < best) m = l + 1;
        if (m == i) break;
        h[i] = h[m];
        i = m;
    }
    if (*n) h[i] = x;
    return top;
}

static fm_status bpe_long(fm_tokenizer *tok, const uint8_t *w, size_t n, uint32_t *out, size_t *nout)
{
    if ((uint64_t)n >= ((uint64_t)1 << 32))
        return FM_ERR(FM_ERR_INPUT, "a word of %zu bytes is too long to encode (at most 4 GiB)", n);
    if (n > tok->h_cap) {
        free(tok->h_sym);
        free(tok->h_prev);
        free(tok->h_next);
        free(tok->h_heap);
        tok->h_sym = malloc(n * sizeof *tok->h_sym);
        tok->h_prev = malloc(n * sizeof *tok->h_prev);
        tok->h_next = malloc(n * sizeof *tok->h_next);
        tok->h_heap = malloc(3 * n * sizeof *tok->h_heap);
        tok->h_cap = n;
        if (!tok->h_sym || !tok->h_prev || !tok->h_next || !tok->h_heap) {
            tok->h_cap = 0;
            return FM_ERR(FM_ERR_NOMEM, "out of memory encoding a word of %zu bytes", n);
        }
    }
    uint32_t *sym = tok->h_sym;
    int64_t *prev = tok->h_prev, *next = tok->h_next;
    uint64_t *hp = tok->h_heap;
    size_t nh = 0; /* at most n-1 initial pairs + 2 per merge (<= n-1 merges) < 3n entries */
    for (size_t i = 0; i < n; i++) {
        sym[i] = tok->byte_id[w[i]];
        prev[i] = (int64_t)i - 1;
        next[i] = i + 1 < n ? (int64_t)i + 1 : -1;
    }
    /* heap key: rank (high 32 bits, 1-based) | position (low 32 bits); words < 2^32 bytes */
    for (size_t i = 0; i + 1 < n; i++) {
        uint32_t r = rank_of(tok, sym[i], sym[i + 1]);
        if (r) {
            hp[nh] = (uint64_t)r << 32 | i;
            heap_up(hp, nh++);
        }
    }
    while (nh) {
        uint64_t e = heap_take(hp, &nh);
        uint32_t r = (uint32_t)(e >> 32);
        size_t i = (size_t)(uint32_t)e;
        if (sym[i] == UINT32_MAX || next[i] < 0) continue; /* merged away, or now last */
        size_t j = (size_t)next[i];
        if (rank_of(tok, sym[i], sym[j]) != r) continue; /* stale */
        sym[i] = tok->merge_res[r - 1];
        sym[j] = UINT32_MAX;
        next[i] = next[j];
        if (next[j] >= 0) prev[next[j]] = (int64_t)i;
        /* the new pairs (prev, i) and (i, next) */
        if (prev[i] >= 0) {
            uint32_t r2 = rank_of(tok, sym[prev[i]], sym[i]);
            if (r2) {
                hp[nh] = (uint64_t)r2 << 32 | (uint64_t)prev[i];
                heap_up(hp, nh++);
            }
        }
        if (next[i] >= 0) {
            uint32_t r2 = rank_of(tok, sym[i], sym[next[i]]);
            if (r2) {
                hp[nh] = (uint64_t)r2 << 32 | i;
                heap_up(hp, nh++);
            }
        }
    }
    size_t k = 0;
    for (int64_t i = 0; i >= 0; i = next[i]) out[k++] = sym[i];
    *nout = k;
    return NULL;
}

/* The ids of one word into s (at most n). */
static fm_status encode_word(fm_tokenizer *tok, const uint8_t *w, size_t n, uint32_t *s, size_t *ns)
{
    if (tok->ignore_merges) {
        uint32_t v = u64map_get(&tok->word_id, hash_bytes(w, n));
        if (v) {
            size_t l;
            const uint8_t *b = tok_bytes(tok, v - 1, &l);
            if (l == n && memcmp(b, w, n) == 0) {
                s[0] = v - 1;
                *ns = 1;
                return NULL;
            }
        }
    }
    if (n <= SHORT_WORD) {
        *ns = bpe_short(tok, w, n, s);
        return NULL;
    }
    return bpe_long(tok, w, n, s, ns);
}

/* The encode cache is allocated on first use (decode-only users never pay for it). */
static fm_status cache_alloc(fm_tokenizer *t)
{
    size_t cn = (size_t)1 << CACHE_BITS;
    t->c_hash = calloc(cn, sizeof *t->c_hash);
    t->c_key = malloc(cn * sizeof *t->c_key);
    t->c_klen = malloc(cn * sizeof *t->c_klen);
    t->c_val = malloc(cn * sizeof *t->c_val);
    t->c_vlen = malloc(cn * sizeof *t->c_vlen);
    t->c_kbytes = malloc(CACHE_KBYTES);
    t->c_ids = malloc(CACHE_IDS * sizeof *t->c_ids);
    if (!t->c_hash || !t->c_key || !t->c_klen || !t->c_val || !t->c_vlen || !t->c_kbytes || !t->c_ids) {
        free(t->c_hash);
        t->c_hash = NULL;
        return FM_ERR(FM_ERR_NOMEM, "out of memory for the tokenizer's word cache");
    }
    t->c_kused = t->c_iused = t->c_n = 0;
    return NULL;
}

static void cache_clear(fm_tokenizer *t)
{
    memset(t->c_hash, 0, ((size_t)1 << CACHE_BITS) * sizeof *t->c_hash);
    t->c_kused = t->c_iused = t->c_n = 0;
}

fm_status fm_tokenizer_encode(fm_tokenizer *tok, const uint8_t *text, size_t len, fm_tokenizer_ids *out)
{
    if (len == 0) return NULL;
    if (!tok->c_hash) FM_TRY(cache_alloc(tok));
    /* Every word yields at most as many ids as bytes: reserve once. */
    FM_TRY(ids_reserve(out, len));
    uint32_t *dst = out->ids + out->n;
    const size_t mask = ((size_t)1 << CACHE_BITS) - 1;
    size_t pos = 0;
    while (pos < len) {
        size_t wl = fm_presplit_next(tok->rule, text + pos, len - pos, 1, NULL);
        const uint8_t *w = text + pos;
        pos += wl;
        if (wl == 1) {
            *dst++ = tok->byte_id[w[0]];
            continue;
        }
        if (wl > CACHE_MAX_WORD) {
            size_t nv = 0;
            fm_status st = encode_word(tok, w, wl, dst, &nv);
            if (st) {
                out->n = (size_t)(dst - out->ids);
                return fm_status_trace(st, __FILE__, __LINE__, __func__);
            }
            dst += nv;
            continue;
        }
        uint64_t h = hash_bytes(w, wl) | 1;
        size_t i = h & mask;
        for (;;) {
            uint64_t ch = tok->c_hash[i];
            if (ch == 0) break;
            if (ch == h && tok->c_klen[i] == wl && memcmp(tok->c_kbytes + tok->c_key[i], w, wl) == 0)
                break;
            i = (i + 1) & mask;
        }
        if (tok->c_hash[i]) {
            size_t nv = tok->c_vlen[i];
            memcpy(dst, tok->c_ids + tok->c_val[i], nv * sizeof *dst);
            dst += nv;
            continue;
        }
        size_t nv = 0;
        fm_status st = encode_word(tok, w, wl, dst, &nv);
        if (st) {
            out->n = (size_t)(dst - out->ids);
            return fm_status_trace(st, __FILE__, __LINE__, __func__);
        }
        if (tok->c_n * 2 >= mask || tok->c_kused + wl > CACHE_KBYTES || tok->c_iused + nv > CACHE_IDS) {
            cache_clear(tok);
            i = h & mask;
            while (tok->c_hash[i]) i = (i + 1) & mask;
        }
        tok->c_hash[i] = h;
        tok->c_key[i] = (uint32_t)tok->c_kused;
        tok->c_klen[i] = (uint16_t)wl;
        memcpy(tok->c_kbytes + tok->c_kused, w, wl);
        tok->c_kused += wl;
        tok->c_val[i] = (uint32_t)tok->c_iused;
        tok->c_vlen[i] = (uint16_t)nv;
        memcpy(tok->c_ids + tok->c_iused, dst, nv * sizeof *dst);
        tok->c_iused += nv;
        tok->c_n++;
        dst += nv;
    }
    out->n = (size_t)(dst - out->ids);
    return NULL;
}

fm_status fm_tokenizer_decode(const fm_tokenizer *tok, const uint32_t *ids, size_t n, uint8_t **text,
                              size_t *len)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] >= tok->vocab)
            return FM_ERR(FM_ERR_INPUT, "token id %u at position %zu is not in the vocabulary (size %u)",
                          ids[i], i, tok->vocab);
        total += (size_t)(tok->off[ids[i] + 1] - tok->off[ids[i]]);
    }
    uint8_t *buf = malloc(total + 1);
    FM_CHECK_ALLOC(buf, total + 1);
    size_t p = 0;
    for (size_t i = 0; i < n; i++) {
        size_t l = (size_t)(tok->off[ids[i] + 1] - tok->off[ids[i]]);
        memcpy(buf + p, tok->bytes + tok->off[ids[i]], l);
        p += l;
    }
    buf[p] = 0;
    *text = buf;
    *len = p;
    return NULL;
}

/* ---- training ----------------------------------------------------------------------------------- */

/* Distinct words with counts: an open-addressing table over word records in an arena. */
struct fm_tokenizer_trainer {
    uint64_t *w_hash; /* (cap) 0 = empty */
    uint32_t *w_idx;  /* (cap) word index */
    size_t cap;
    uint8_t *arena; /* word bytes */
    size_t arena_used, arena_cap;
    uint64_t *w_off;  /* (n) offset into arena */
    uint16_t *w_len;  /* (n) */
    uint64_t *w_count;
    size_t n, ncap;
    int finished;
};

fm_status fm_tokenizer_trainer_new(fm_tokenizer_trainer **out)
{
    fm_tokenizer_trainer *tr = calloc(1, sizeof *tr);
    FM_CHECK_ALLOC(tr, sizeof *tr);
    tr->cap = 1 << 12;
    tr->w_hash = calloc(tr->cap, sizeof *tr->w_hash);
    tr->w_idx = calloc(tr->cap, sizeof *tr->w_idx);
    if (!tr->w_hash || !tr->w_idx) {
        fm_tokenizer_trainer_free(&tr);
        return FM_ERR(FM_ERR_NOMEM, "out of memory for the tokenizer trainer's word table");
    }
    *out = tr;
    return NULL;
}

void fm_tokenizer_trainer_free(fm_tokenizer_trainer **trp)
{
    if (!trp || !*trp) return;
    fm_tokenizer_trainer *tr = *trp;
    free(tr->w_hash);
    free(tr->w_idx);
    free(tr->arena);
    free(tr->w_off);
    free(tr->w_len);
    free(tr->w_count);
    free(tr);
    *trp = NULL;
}

size_t fm_tokenizer_trainer_distinct_words(const fm_tokenizer_trainer *tr) { return tr->n; }

static fm_status trainer_grow_table(fm_tokenizer_trainer *tr)
{
    size_t cap = tr->cap * 2;
    uint64_t *h = calloc(cap, sizeof *h);
    uint32_t *ix = calloc(cap, sizeof *ix);
    if (!h || !ix) {
        free(h);
        free(ix);
        return FM_ERR(FM_ERR_NOMEM, "out of memory growing the word table to %zu entries", cap);
    }
    for (size_t i = 0; i < tr->cap; i++)
        if (tr->w_hash[i]) {
            size_t j = tr->w_hash[i] & (cap - 1);
            while (h[j]) j = (j + 1) & (cap - 1);
            h[j] = tr->w_hash[i];
            ix[j] = tr->w_idx[i];
        }
    free(tr->w_hash);
    free(tr->w_idx);
    tr->w_hash = h;
    tr->w_idx = ix;
    tr->cap = cap;
    return NULL;
}

static fm_status trainer_add(fm_tokenizer_trainer *tr, const uint8_t *w, size_t wl)
{
    uint64_t h = hash_bytes(w, wl) | 1;
    size_t mask = tr->cap - 1, i = h & mask;
    while (tr->w_hash[i]) {
        if (tr->w_hash[i] == h) {
            uint32_t k = tr->w_idx[i];
            if (tr->w_len[k] == wl && memcmp(tr->arena + tr->w_off[k], w, wl) == 0) {
                tr->w_count[k]++;
                return NULL;
            }
        }
        i = (i + 1) & mask;
    }
    if (tr->n >= UINT32_MAX - 1)
        return FM_ERR(FM_ERR_INPUT, "more than 2^32 distinct words in the tokenizer's training text");
    if (tr->n == tr->ncap) {
        size_t nc = tr->ncap ? tr->ncap * 2 : 4096;
        uint64_t *o = realloc(tr->w_off, nc * sizeof *o);
        if (o) tr->w_off = o;
        uint16_t *l = realloc(tr->w_len, nc * sizeof *l);
        if (l) tr->w_len = l;
        uint64_t *c = realloc(tr->w_count, nc * sizeof *c);
        if (c) tr->w_count = c;
        if (!o || !l || !c) return FM_ERR(FM_ERR_NOMEM, "out of memory for %zu words", nc);
        tr->ncap = nc;
    }
    if (tr->arena_used + wl > tr->arena_cap) {
        size_t nc = tr->arena_cap ? tr->arena_cap * 2 : (1 << 20);
        while (nc < tr->arena_used + wl) nc *= 2;
        uint8_t *a = realloc(tr->arena, nc);
        FM_CHECK_ALLOC(a, nc);
        tr->arena = a;
        tr->arena_cap = nc;
    }
    memcpy(tr->arena + tr->arena_used, w, wl);
    tr->w_off[tr->n] = tr->arena_used;
    tr->w_len[tr->n] = (uint16_t)wl;
    tr->w_count[tr->n] = 1;
    tr->arena_used += wl;
    tr->w_hash[i] = h;
    tr->w_idx[i] = (uint32_t)tr->n;
    tr->n++;
    if (tr->n * 2 > tr->cap) FM_TRY(trainer_grow_table(tr));
    return NULL;
}

fm_status fm_tokenizer_trainer_feed(fm_tokenizer_trainer *tr, const uint8_t *text, size_t len)
{
    if (tr->finished) return FM_ERR(FM_ERR_INTERNAL, "tokenizer trainer fed after finish");
    size_t pos = 0;
    while (pos < len) {
        size_t wl = fm_tokenizer_word_length(text + pos, len - pos);
        FM_TRY(trainer_add(tr, text + pos, wl));
        pos += wl;
    }
    return NULL;
}

/* Merge state. Pairs are numbered; pair p has key (a<<32|b), a count over words x word counts, and
 * a list of words that contained it when it was created (may hold words that no longer do). */
typedef struct pair_tab {
    u64map map;      /* key -> pair index + 1 */
    uint64_t *key;   /* (n) */
    int64_t *count;  /* (n) */
    uint32_t **words; /* (n) lists */
    uint32_t *nw, *cw;
    size_t n, cap;
} pair_tab;

typedef struct heap_ent {
    int64_t count;
    uint64_t key;
} heap_ent;

typedef struct heap {
    heap_ent *e;
    size_t n, cap;
} heap;

/* a before b in the heap: larger count, then smaller key (smaller left id, then right id) */
static inline int heap_before(const heap_ent *a, const heap_ent *b)
{
    return a->count > b->count || (a->count == b->count && a->key < b->key);
}

static fm_status heap_push(heap *h, int64_t count, uint64_t key)
{
    if (h->n == h->cap) {
        size_t nc = h->cap ? h->cap * 2 : 4096;
        heap_ent *e = realloc(h->e, nc * sizeof *e);
        FM_CHECK_ALLOC(e, nc * sizeof *e);
        h->e = e;
        h->cap = nc;
    }
    size_t i = h->n++;
    heap_ent x = {count, key};
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_before(&x, &h->e[p])) break;
        h->e[i] = h->e[p];
        i = p;
    }
    h->e[i] = x;
    return NULL;
}

static heap_ent heap_pop(heap *h)
{
    heap_ent top = h->e[0];
    heap_ent x = h->e[--h->n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const heap_ent *best = &x;
        if (l < h->n && heap_before(&h->e[l], best)) {
            m = l;
            best = &h->e[l];
        }
        if (r < h->n && heap_before(&h->e[r], best)) m = r;
        if (m == i) break;
        h->e[i] = h->e[m];
        i = m;
    }
    if (h->n) h->e[i] = x;
    return top;
}

static void pairs_free(pair_tab *pt)
{
    u64map_free(&pt->map);
    for (size_t i = 0; i < pt->n; i++) free(pt->words[i]);
    free(pt->key);
    free(pt->count);
    free(pt->words);
    free(pt->nw);
    free(pt->cw);
    memset(pt, 0, sizeof *pt);
}

/* Pair index for key, creating it (count 0) when absent. */
static fm_status pairs_get(pair_tab *pt, uint64_t key, size_t *idx)
{
    uint32_t v = u64map_get(&pt->map, key);
    if (v) {
        *idx = v - 1;
        return NULL;
    }
    if (pt->n == pt->cap) {
        size_t nc = pt->cap ? pt->cap * 2 : 4096;
        uint64_t *k = realloc(pt->key, nc * sizeof *k);
        if (k) pt->key = k;
        int64_t *c = realloc(pt->count, nc * sizeof *c);
        if (c) pt->count = c;
        uint32_t **w = realloc(pt->words, nc * sizeof *w);
        if (w) pt->words = w;
        uint32_t *nw = realloc(pt->nw, nc * sizeof *nw);
        if (nw) pt->nw = nw;
        uint32_t *cw = realloc(pt->cw, nc * sizeof *cw);
        if (cw) pt->cw = cw;
        if (!k || !c || !w || !nw || !cw) return FM_ERR(FM_ERR_NOMEM, "out of memory for %zu pairs", nc);
        pt->cap = nc;
    }
    size_t i = pt->n++;
    pt->key[i] = key;
    pt->count[i] = 0;
    pt->words[i] = NULL;
    pt->nw[i] = pt->cw[i] = 0;
    FM_TRY(u64map_put(&pt->map, key, (uint32_t)(i + 1)));
    *idx = i;
    return NULL;
}

static fm_status pairs_add_word(pair_tab *pt, size_t p, uint32_t w)
{
    if (pt->nw[p] && pt->words[p][pt->nw[p] - 1] == w) return NULL;
    if (pt->nw[p] == pt->cw[p]) {
        uint32_t nc = pt->cw[p] ? pt->cw[p] * 2 : 4;
        uint32_t *l = realloc(pt->words[p], (size_t)nc * sizeof *l);
        FM_CHECK_ALLOC(l, (size_t)nc * sizeof *l);
        pt->words[p] = l;
        pt->cw[p] = nc;
    }
    pt->words[p][pt->nw[p]++] = w;
    return NULL;
}

#define PAIR_KEY(a, b) (((uint64_t)(a) << 32) | (uint64_t)(b))

fm_status fm_tokenizer_trainer_finish(fm_tokenizer_trainer *tr, uint32_t vocab_size,
                                      void (*progress)(uint64_t done, uint64_t total, void *user),
                                      void *user, fm_tokenizer **out)
{
    if (tr->finished) return FM_ERR(FM_ERR_INTERNAL, "tokenizer trainer finished twice");
    if (vocab_size < FM_TOKENIZER_MIN_VOCAB || vocab_size > FM_TOKENIZER_MAX_VOCAB)
        return FM_ERR(FM_ERR_USAGE,
                      "tokenizer vocabulary size %u is out of range: a byte-level BPE vocabulary needs "
                      "%u..%u ids (256 bytes + merges + end-of-text)",
                      vocab_size, FM_TOKENIZER_MIN_VOCAB, FM_TOKENIZER_MAX_VOCAB);
    tr->finished = 1;
    fm_status st = NULL;
    uint32_t want = vocab_size - FM_TOKENIZER_MIN_VOCAB;
    uint32_t *merges = malloc(((size_t)want + 1) * 2 * sizeof *merges);
    uint32_t *sym = malloc((tr->arena_used + 1) * sizeof *sym); /* symbols of every word */
    pair_tab pt = {0};
    heap hp = {0};
    uint32_t done = 0;
    /* every token's bytes (tb_off/tb_len into tb) and a map from their hash to id+1: a pair whose bytes
     * joined are already a token is never merged, so that each token's bytes are unique */
    const size_t max_tok = 4 * (FM_PRESPLIT_MAX_RUN + 1);
    uint64_t *tb_off = malloc(((size_t)want + 256) * sizeof *tb_off);
    uint32_t *tb_len = malloc(((size_t)want + 256) * sizeof *tb_len);
    uint8_t *tb = NULL, joined[2 * 4 * (FM_PRESPLIT_MAX_RUN + 1)];
    size_t tb_used = 0, tb_cap = 0;
    u64map strings = {0};
    if (!merges || !sym || !tb_off || !tb_len) {
        st = FM_ERR(FM_ERR_NOMEM, "out of memory for the tokenizer trainer (%zu words)", tr->n);
        goto out;
    }
    for (size_t i = 0; i < tr->arena_used; i++) sym[i] = tr->arena[i];
    FM_TRY_GOTO(st, out, u64map_init(&pt.map, 1 << 12));
    FM_TRY_GOTO(st, out, u64map_init(&strings, (size_t)want + 256));
    tb_cap = 4096;
    tb = malloc(tb_cap);
    if (!tb) {
        st = FM_ERR(FM_ERR_NOMEM, "out of memory for the tokenizer trainer");
        goto out;
    }
    for (uint32_t b = 0; b < 256; b++) {
        tb[b] = (uint8_t)b;
        tb_off[b] = b;
        tb_len[b] = 1;
        FM_TRY_GOTO(st, out, u64map_put(&strings, hash_bytes(tb + b, 1), b + 1));
    }
    tb_used = 256;
    /* initial pair counts */
    for (size_t w = 0; w < tr->n; w++) {
        const uint32_t *s = sym + tr->w_off[w];
        for (size_t i = 0; i + 1 < tr->w_len[w]; i++) {
            size_t p;
            FM_TRY_GOTO(st, out, pairs_get(&pt, PAIR_KEY(s[i], s[i + 1]), &p));
            pt.count[p] += (int64_t)tr->w_count[w];
            FM_TRY_GOTO(st, out, pairs_add_word(&pt, p, (uint32_t)w));
        }
    }
    for (size_t p = 0; p < pt.n; p++) FM_TRY_GOTO(st, out, heap_push(&hp, pt.count[p], pt.key[p]));

    while (done < want) {
        if (hp.n == 0) break;
        heap_ent top = heap_pop(&hp);
        uint32_t pv = u64map_get(&pt.map, top.key);
        size_t p = pv - 1;
        if (pt.count[p] <= 0) continue;
        if (pt.count[p] != top.count) { /* stale: counts only fall for existing pairs */
            FM_TRY_GOTO(st, out, heap_push(&hp, pt.count[p], top.key));
            continue;
        }
        uint32_t a = (uint32_t)(top.key >> 32), b = (uint32_t)top.key, c = 256 + done;
        size_t jl = (size_t)tb_len[a] + tb_len[b];
        if (jl > max_tok) continue; /* cannot happen: merges stay inside words */
        memcpy(joined, tb + tb_off[a], tb_len[a]);
        memcpy(joined + tb_len[a], tb + tb_off[b], tb_len[b]);
        uint64_t jh = hash_bytes(joined, jl);
        if (u64map_get(&strings, jh)) continue; /* already a token (or a 64-bit hash twin): never merged */
        if (tb_used + jl > tb_cap) {
            size_t nc = 2 * tb_cap + jl;
            uint8_t *g = realloc(tb, nc);
            if (!g) {
                st = FM_ERR(FM_ERR_NOMEM, "out of memory for the tokenizer trainer's token strings");
                goto out;
            }
            tb = g;
            tb_cap = nc;
        }
        memcpy(tb + tb_used, joined, jl);
        tb_off[c] = tb_used;
        tb_len[c] = (uint32_t)jl;
        tb_used += jl;
        FM_TRY_GOTO(st, out, u64map_put(&strings, jh, c + 1));
        merges[2 * done] = a;
        merges[2 * done + 1] = b;
        done++;
        size_t first_new = pt.n;
        /* Take the word list: (a,b) never gains words again (its ids already exist). */
        uint32_t *wl = pt.words[p];
        uint32_t nwl = pt.nw[p];
        pt.words[p] = NULL;
        pt.nw[p] = pt.cw[p] = 0;
        for (uint32_t k = 0; k < nwl && !st; k++) {
            uint32_t w = wl[k];
            uint32_t *s = sym + tr->w_off[w];
            size_t n = tr->w_len[w];
            int has = 0;
            for (size_t i = 0; i + 1 < n; i++)
                if (s[i] == a && s[i + 1] == b) {
                    has = 1;
                    break;
                }
            if (!has) continue;
            int64_t wc = (int64_t)tr->w_count[w];
            for (size_t i = 0; i + 1 < n; i++) {
                size_t q;
                st = pairs_get(&pt, PAIR_KEY(s[i], s[i + 1]), &q);
                if (st) break;
                pt.count[q] -= wc;
            }
            if (st) break;
            size_t j = 0;
            for (size_t i = 0; i < n; i++) {
                if (i + 1 < n && s[i] == a && s[i + 1] == b) {
                    s[j++] = c;
                    i++;
                } else s[j++] = s[i];
            }
            tr->w_len[w] = (uint16_t)j;
            for (size_t i = 0; i + 1 < j; i++) {
                size_t q;
                st = pairs_get(&pt, PAIR_KEY(s[i], s[i + 1]), &q);
                if (st) break;
                pt.count[q] += wc;
                if (s[i] == c || s[i + 1] == c) {
                    st = pairs_add_word(&pt, q, w);
                    if (st) break;
                }
            }
        }
        free(wl);
        if (st) {
            st = fm_status_trace(st, __FILE__, __LINE__, __func__);
            goto out;
        }
        for (size_t q = first_new; q < pt.n; q++)
            if (pt.count[q] > 0) FM_TRY_GOTO(st, out, heap_push(&hp, pt.count[q], pt.key[q]));
        if (progress && (done % 64 == 0 || done == want)) progress(done, want, user);
    }
    if (done < want) {
        st = FM_ERR(FM_ERR_INPUT,
                    "the training text supports at most %u tokens (%u merges + 257) but %u were asked "
                    "for: every word is a single token by then; use a smaller --vocab-size or more text",
                    done + FM_TOKENIZER_MIN_VOCAB, done, vocab_size);
        goto out;
    }
    st = tokenizer_from_merges(vocab_size, done, merges, FM_TOKENIZER_VERSION, out);
    merges = NULL;
out:
    free(tb_off);
    free(tb_len);
    free(tb);
    u64map_free(&strings);
    free(merges);
    free(sym);
    pairs_free(&pt);
    free(hp.e);
    return st;
}

fm_status fm_tokenizer_train(const uint8_t *text, size_t len, uint32_t vocab_size, fm_tokenizer **out)
{
    fm_tokenizer_trainer *tr = NULL;
    fm_status st = NULL;
    FM_TRY(fm_tokenizer_trainer_new(&tr));
    size_t pos = 0;
    const size_t block = (size_t)1 << 20;
    while (pos < len) {
        size_t n = len - pos;
        if (n > block) {
            size_t c = fm_tokenizer_safe_cut(text + pos, block);
            n = c ? c : block;
        }
        FM_TRY_GOTO(st, done, fm_tokenizer_trainer_feed(tr, text + pos, n));
        pos += n;
    }
    FM_TRY_GOTO(st, done, fm_tokenizer_trainer_finish(tr, vocab_size, NULL, NULL, out));
done:
    fm_tokenizer_trainer_free(&tr);
    return st;
}

/* ---- HDF5 storage ------------------------------------------------------------------------------- */

/* Is the file of `loc` opened with the MPI-IO driver? Then *par = 1 and *rank is this process's rank
 * in the file's communicator; else both are 0. */
static fm_status h5_parallel_rank(hid_t loc, int *par, int *rank)
{
    *par = 0;
    *rank = 0;
    hid_t f = H5Iget_file_id(loc);
    if (f < 0) return NULL;
    hid_t fapl = H5Fget_access_plist(f);
    MPI_Comm comm = MPI_COMM_NULL;
    MPI_Info info = MPI_INFO_NULL;
    fm_status st = NULL;
    if (fapl >= 0 && H5Pget_driver(fapl) == H5FD_MPIO && H5Pget_fapl_mpio(fapl, &comm, &info) >= 0) {
        *par = 1;
        FM_MPI_KEEP(st, MPI_Comm_rank(comm, rank)); /* HDF5 hands out a copy: free it either way */
        FM_MPI_KEEP(st, MPI_Comm_free(&comm));
        if (info != MPI_INFO_NULL) FM_MPI_KEEP(st, MPI_Info_free(&info));
    }
    if (fapl >= 0) H5Pclose(fapl);
    H5Fclose(f);
    return st;
}

/* Writes a 1-D or 2-D contiguous dataset; in a parallel file rank 0 writes, others select none. */
static fm_status h5_write_array(hid_t grp, const char *name, hid_t ftype, hid_t mtype, int rank,
                                const hsize_t *dims, const void *data, int par, int myrank,
                                const char *where)
{
    hid_t sp = H5Screate_simple(rank, dims, NULL);
    hid_t ds = sp < 0 ? -1 : H5Dcreate2(grp, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hid_t dxpl = H5Pcreate(H5P_DATASET_XFER);
    herr_t e = ds < 0 ? -1 : 0;
    if (e >= 0 && par) {
        H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE);
        if (myrank != 0) {
            hid_t ms = H5Screate_simple(rank, dims, NULL);
            H5Sselect_none(ms);
            H5Sselect_none(sp);
            e = H5Dwrite(ds, mtype, ms, sp, dxpl, data);
            H5Sclose(ms);
        } else e = H5Dwrite(ds, mtype, H5S_ALL, H5S_ALL, dxpl, data);
    } else if (e >= 0) {
        e = H5Dwrite(ds, mtype, H5S_ALL, H5S_ALL, dxpl, data);
    }
    if (dxpl >= 0) H5Pclose(dxpl);
    if (ds >= 0) H5Dclose(ds);
    if (sp >= 0) H5Sclose(sp);
    if (e < 0) return FM_ERR(FM_ERR_IO, "cannot write dataset '%s' of %s", name, where);
    return NULL;
}

static fm_status tokenizer_save(const fm_tokenizer *tok, hid_t loc, const char *name)
{
    char where[300];
    snprintf(where, sizeof where, "tokenizer group '%s'", name);
    int par = 0, myrank = 0;
    FM_TRY(fm_status_prefix(h5_parallel_rank(loc, &par, &myrank), "saving the %s", where));
    uint32_t *special_ids = malloc(((size_t)tok->vocab + 1) * sizeof *special_ids);
    FM_CHECK_ALLOC(special_ids, ((size_t)tok->vocab + 1) * sizeof *special_ids);
    uint64_t n_special = 0;
    for (uint32_t id = 0; id < tok->vocab; id++)
        if (tok->special[id]) special_ids[n_special++] = id;
    hid_t g = H5Gcreate2(loc, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) {
        free(special_ids);
        return FM_ERR(FM_ERR_IO, "cannot create the %s (does it exist already?)", where);
    }
    fm_status st = NULL;
    uint64_t vocab = tok->vocab, eot = tok->eot, nm = tok->n_merges;
    int32_t version = tok->version;
    FM_TRY_GOTO(st, done, fm_h5_attr_write_str(g, "kind", FM_TOKENIZER_KIND, where));
    FM_TRY_GOTO(st, done, fm_h5_attr_write(g, "version", H5T_NATIVE_INT32, H5T_STD_I32LE, &version, where));
    FM_TRY_GOTO(st, done, fm_h5_attr_write(g, "vocab_size", H5T_NATIVE_UINT64, H5T_STD_U64LE, &vocab, where));
    FM_TRY_GOTO(st, done, fm_h5_attr_write(g, "eot_id", H5T_NATIVE_UINT64, H5T_STD_U64LE, &eot, where));
    FM_TRY_GOTO(st, done, fm_h5_attr_write(g, "n_merges", H5T_NATIVE_UINT64, H5T_STD_U64LE, &nm, where));
    hsize_t dm[2] = {tok->n_merges, 2};
    FM_TRY_GOTO(st, done, h5_write_array(g, "merges", H5T_STD_U32LE, H5T_NATIVE_UINT32, 2, dm,
                                         tok->merges, par, myrank, where));
    if (tok->version >= 2) {
        int32_t im = tok->ignore_merges;
        FM_TRY_GOTO(st, done, fm_h5_attr_write_str(g, "pre_split", fm_presplit_name(tok->rule), where));
        FM_TRY_GOTO(st, done, fm_h5_attr_write_str(g, "pre_split_regex", fm_presplit_regex(tok->rule), where));
        FM_TRY_GOTO(st, done, fm_h5_attr_write(g, "ignore_merges", H5T_NATIVE_INT32, H5T_STD_I32LE, &im, where));
        if (tok->bos >= 0) {
            uint64_t bos = (uint64_t)tok->bos;
            FM_TRY_GOTO(st, done, fm_h5_attr_write(g, "bos_id", H5T_NATIVE_UINT64, H5T_STD_U64LE, &bos, where));
        }
        hsize_t dn = tok->n_merges, d256 = 256, ds = n_special;
        FM_TRY_GOTO(st, done, h5_write_array(g, "merge_ids", H5T_STD_U32LE, H5T_NATIVE_UINT32, 1, &dn,
                                             tok->merge_res, par, myrank, where));
        FM_TRY_GOTO(st, done, h5_write_array(g, "byte_ids", H5T_STD_U32LE, H5T_NATIVE_UINT32, 1, &d256,
                                             tok->byte_id, par, myrank, where));
        FM_TRY_GOTO(st, done, h5_write_array(g, "special_ids", H5T_STD_U32LE, H5T_NATIVE_UINT32, 1, &ds,
                                             special_ids, par, myrank, where));
    }
    hsize_t doff = (hsize_t)tok->vocab + 1;
    FM_TRY_GOTO(st, done, h5_write_array(g, "token_offsets", H5T_STD_U64LE, H5T_NATIVE_UINT64, 1, &doff,
                                         tok->off, par, myrank, where));
    hsize_t db = tok->off[tok->vocab];
    FM_TRY_GOTO(st, done, h5_write_array(g, "token_bytes", H5T_STD_U8LE, H5T_NATIVE_UINT8, 1, &db,
                                         tok->bytes, par, myrank, where));
done:
    free(special_ids);
    H5Gclose(g);
    return st;
}

fm_status fm_tokenizer_save(const fm_tokenizer *tok, hid_t loc, const char *name)
{
    fm_h5_quiet q;
    fm_h5_quiet_begin(&q);
    fm_status st = tokenizer_save(tok, loc, name);
    fm_h5_quiet_end(&q);
    return st;
}

static int tokenizer_exists(hid_t loc, const char *name)
{
    htri_t e = H5Lexists(loc, name, H5P_DEFAULT);
    if (e <= 0) return 0;
    H5O_info_t oi;
    if (H5Oget_info_by_name(loc, name, &oi, H5P_DEFAULT) < 0) return 0;
    return oi.type == H5O_TYPE_GROUP;
}

int fm_tokenizer_exists(hid_t loc, const char *name)
{
    fm_h5_quiet q;
    fm_h5_quiet_begin(&q);
    int e = tokenizer_exists(loc, name);
    fm_h5_quiet_end(&q);
    return e;
}

/* Reads a whole dataset of `expect_rank` dims into a malloc'ed buffer of native mtype. */
static fm_status h5_read_array(hid_t g, const char *name, hid_t mtype, int expect_rank, hsize_t *dims,
                               uint64_t max_elems, void **data, const char *where)
{
    *data = NULL;
    if (H5Lexists(g, name, H5P_DEFAULT) <= 0)
        return FM_ERR(FM_ERR_INPUT, "%s has no dataset '%s'", where, name);
    hid_t ds = H5Dopen2(g, name, H5P_DEFAULT);
    hid_t sp = ds < 0 ? -1 : H5Dget_space(ds);
    hid_t ft = ds < 0 ? -1 : H5Dget_type(ds);
    fm_status st = NULL;
    if (sp < 0 || ft < 0 || H5Tget_class(ft) != H5T_INTEGER ||
        H5Sget_simple_extent_ndims(sp) != expect_rank) {
        st = FM_ERR(FM_ERR_INPUT, "dataset '%s' of %s is not a %d-D integer array", name, where,
                    expect_rank);
        goto done;
    }
    H5Sget_simple_extent_dims(sp, dims, NULL);
    size_t n = 1;
    for (int i = 0; i < expect_rank; i++) {
        if (dims[i] > max_elems) {
            st = FM_ERR(FM_ERR_INPUT, "dataset '%s' of %s is larger than its attributes allow (damaged)",
                        name, where);
            goto done;
        }
        n *= (size_t)dims[i];
    }
    if (n > max_elems) {
        st = FM_ERR(FM_ERR_INPUT, "dataset '%s' of %s is larger than its attributes allow (damaged)", name,
                    where);
        goto done;
    }
    size_t bytes = n * H5Tget_size(mtype);
    *data = malloc(bytes ? bytes : 1);
    if (!*data) {
        st = FM_ERR(FM_ERR_NOMEM, "out of memory reading %zu bytes of '%s' in %s", bytes, name, where);
        goto done;
    }
    if (n && H5Dread(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, *data) < 0) {
        st = FM_ERR(FM_ERR_INPUT, "cannot read dataset '%s' of %s (damaged file?)", name, where);
        free(*data);
        *data = NULL;
    }
done:
    if (ft >= 0) H5Tclose(ft);
    if (sp >= 0) H5Sclose(sp);
    if (ds >= 0) H5Dclose(ds);
    return st;
}

/* Version 1: the trained layout, checked against its merges. */
static fm_status load_v1(hid_t g, const char *where, uint64_t vocab, uint64_t eot, uint64_t nm, fm_tokenizer **out)
{
    fm_status st = NULL;
    uint32_t *merges = NULL;
    uint64_t *off = NULL;
    uint8_t *bytes = NULL;
    fm_tokenizer *t = NULL;
    hsize_t dm[2] = {0, 0}, doff[1] = {0}, db[1] = {0};
    if (vocab < FM_TOKENIZER_MIN_VOCAB || vocab > FM_TOKENIZER_MAX_VOCAB || nm != vocab - FM_TOKENIZER_MIN_VOCAB ||
        eot != vocab - 1) {
        return FM_ERR(FM_ERR_INPUT,
                      "the %s is inconsistent: vocab_size %" PRIu64 ", n_merges %" PRIu64 ", eot_id %" PRIu64
                      " (expected n_merges = vocab_size - 257, eot_id = vocab_size - 1)",
                      where, vocab, nm, eot);
    }
    FM_TRY_GOTO(st, done, h5_read_array(g, "merges", H5T_NATIVE_UINT32, 2, dm, 2 * nm + 2, (void **)&merges,
                                        where));
    if (dm[0] != nm || dm[1] != 2) {
        st = FM_ERR(FM_ERR_INPUT, "the %s's merges have shape (%llu, %llu), expected (%" PRIu64 ", 2)",
                    where, (unsigned long long)dm[0], (unsigned long long)dm[1], nm);
        goto done;
    }
    for (uint64_t k = 0; k < nm; k++)
        if (merges[2 * k] >= 256 + k || merges[2 * k + 1] >= 256 + k) {
            st = FM_ERR(FM_ERR_INPUT, "the %s is damaged: merge %" PRIu64 " refers to id %u, not made yet",
                        where, k, merges[2 * k] >= 256 + k ? merges[2 * k] : merges[2 * k + 1]);
            goto done;
        }
    uint32_t *owned = merges; /* tokenizer_from_merges takes ownership, also on failure */
    merges = NULL;
    FM_TRY_GOTO(st, done, tokenizer_from_merges((uint32_t)vocab, (uint32_t)nm, owned, 1, &t));
    FM_TRY_GOTO(st, done, h5_read_array(g, "token_offsets", H5T_NATIVE_UINT64, 1, doff, vocab + 1,
                                        (void **)&off, where));
    FM_TRY_GOTO(st, done, h5_read_array(g, "token_bytes", H5T_NATIVE_UINT8, 1, db, t->off[vocab],
                                        (void **)&bytes, where));
    if (doff[0] != vocab + 1 || db[0] != t->off[vocab] || memcmp(off, t->off, (vocab + 1) * sizeof *off) ||
        memcmp(bytes, t->bytes, db[0])) {
        st = FM_ERR(FM_ERR_INPUT,
                    "the %s is damaged: its token_offsets/token_bytes do not match what its merges make",
                    where);
        goto done;
    }
    *out = t;
    t = NULL;
done:
    free(merges);
    free(off);
    free(bytes);
    fm_tokenizer_free(&t);
    return st;
}

/* Version 2: a tokenizer spec, checked by fm_tokenizer_from_spec. */
static fm_status load_v2(hid_t g, const char *where, uint64_t vocab, uint64_t eot, uint64_t nm, fm_tokenizer **out)
{
    if (vocab < 257 || vocab > FM_TOKENIZER_MAX_VOCAB || nm > 64 * (uint64_t)FM_TOKENIZER_MAX_VOCAB || eot >= vocab)
        return FM_ERR(FM_ERR_INPUT, "the %s is inconsistent: vocab_size %" PRIu64 ", n_merges %" PRIu64
                      ", eot_id %" PRIu64, where, vocab, nm, eot);
    fm_status st = NULL;
    char rule_name[32], regex[1024];
    uint64_t im = 0;
    uint32_t *pairs = NULL, *res = NULL, *byte_ids = NULL, *special_ids = NULL, *merges = NULL;
    uint64_t *off = NULL;
    uint8_t *bytes = NULL, *special = NULL;
    hsize_t dm[2] = {0, 0}, dn[1] = {0}, d256[1] = {0}, ds[1] = {0}, doff[1] = {0}, db[1] = {0};
    FM_TRY_GOTO(st, done, fm_h5_attr_read_str(g, "pre_split", rule_name, sizeof rule_name, where));
    FM_TRY_GOTO(st, done, fm_h5_attr_read_str(g, "pre_split_regex", regex, sizeof regex, where));
    FM_TRY_GOTO(st, done, fm_h5_attr_read_u64(g, "ignore_merges", &im, where));
    uint64_t bos = 0;
    const int has_bos = H5Aexists(g, "bos_id") > 0;
    if (has_bos) {
        FM_TRY_GOTO(st, done, fm_h5_attr_read_u64(g, "bos_id", &bos, where));
        if (bos >= vocab) {
            st = FM_ERR(FM_ERR_INPUT, "the %s is damaged: bos_id %" PRIu64 " is not below vocab_size %" PRIu64,
                        where, bos, vocab);
            goto done;
        }
    }
    fm_presplit rule;
    if (!fm_presplit_from_regex(regex, &rule) || strcmp(fm_presplit_name(rule), rule_name) != 0) {
        st = FM_ERR(FM_ERR_INPUT, "the %s has pre_split '%s' with a regular expression this fmtrain does not "
                    "know; it knows fmtrain, gpt2 and llama3", where, rule_name);
        goto done;
    }
    FM_TRY_GOTO(st, done, h5_read_array(g, "merges", H5T_NATIVE_UINT32, 2, dm, 2 * nm + 2, (void **)&pairs, where));
    FM_TRY_GOTO(st, done, h5_read_array(g, "merge_ids", H5T_NATIVE_UINT32, 1, dn, nm + 1, (void **)&res, where));
    FM_TRY_GOTO(st, done, h5_read_array(g, "byte_ids", H5T_NATIVE_UINT32, 1, d256, 256, (void **)&byte_ids, where));
    FM_TRY_GOTO(st, done, h5_read_array(g, "special_ids", H5T_NATIVE_UINT32, 1, ds, vocab, (void **)&special_ids,
                                        where));
    FM_TRY_GOTO(st, done, h5_read_array(g, "token_offsets", H5T_NATIVE_UINT64, 1, doff, vocab + 1, (void **)&off,
                                        where));
    if (dm[0] != nm || dm[1] != 2 || dn[0] != nm || d256[0] != 256 || doff[0] != vocab + 1 || off[0] != 0) {
        st = FM_ERR(FM_ERR_INPUT, "the %s is damaged: its merges, merge_ids, byte_ids or token_offsets do not have "
                    "the shapes its attributes imply", where);
        goto done;
    }
    for (uint64_t i = 0; i < vocab; i++)
        if (off[i + 1] < off[i] || off[i + 1] - off[i] > ((uint64_t)1 << 20)) {
            st = FM_ERR(FM_ERR_INPUT, "the %s is damaged: token_offsets are not increasing at id %" PRIu64, where, i);
            goto done;
        }
    FM_TRY_GOTO(st, done, h5_read_array(g, "token_bytes", H5T_NATIVE_UINT8, 1, db, off[vocab], (void **)&bytes,
                                        where));
    if (db[0] != off[vocab]) {
        st = FM_ERR(FM_ERR_INPUT, "the %s is damaged: token_bytes has %llu bytes, token_offsets say %" PRIu64, where,
                    (unsigned long long)db[0], off[vocab]);
        goto done;
    }
    special = calloc(vocab, 1);
    merges = malloc((nm + 1) * 3 * sizeof *merges);
    if (!special || !merges) {
        st = FM_ERR(FM_ERR_NOMEM, "out of memory reading the %s", where);
        goto done;
    }
    for (hsize_t i = 0; i < ds[0]; i++) {
        if (special_ids[i] >= vocab) {
            st = FM_ERR(FM_ERR_INPUT, "the %s is damaged: special id %u is not in the vocabulary", where, special_ids[i]);
            goto done;
        }
        special[special_ids[i]] = 1;
    }
    for (uint64_t k = 0; k < nm; k++) {
        merges[3 * k] = pairs[2 * k];
        merges[3 * k + 1] = pairs[2 * k + 1];
        merges[3 * k + 2] = res[k];
    }
    fm_tokenizer_spec sp = {(uint32_t)vocab, off, bytes, special, (uint32_t)nm, merges, (uint32_t)eot, rule, (int)im,
                            has_bos, (uint32_t)bos};
    FM_TRY_GOTO(st, done, fm_tokenizer_from_spec(&sp, where, out));
    for (int b = 0; b < 256; b++)
        if ((*out)->byte_id[b] != byte_ids[b]) {
            st = FM_ERR(FM_ERR_INPUT, "the %s is damaged: byte_ids[%d] = %u, but token %u is that byte", where, b,
                        byte_ids[b], (*out)->byte_id[b]);
            fm_tokenizer_free(out);
            goto done;
        }
done:
    free(pairs);
    free(res);
    free(byte_ids);
    free(special_ids);
    free(merges);
    free(off);
    free(bytes);
    free(special);
    return st;
}

static fm_status tokenizer_load(hid_t loc, const char *name, fm_tokenizer **out)
{
    char where[300];
    snprintf(where, sizeof where, "tokenizer group '%s'", name);
    if (!tokenizer_exists(loc, name)) return FM_ERR(FM_ERR_INPUT, "there is no %s", where);
    hid_t g = H5Gopen2(loc, name, H5P_DEFAULT);
    if (g < 0) return FM_ERR(FM_ERR_INPUT, "cannot open the %s", where);
    fm_status st = NULL;
    char kind[64];
    uint64_t version, vocab, eot, nm;
    FM_TRY_GOTO(st, done, fm_h5_attr_read_str(g, "kind", kind, sizeof kind, where));
    if (strcmp(kind, FM_TOKENIZER_KIND) != 0) {
        st = FM_ERR(FM_ERR_INPUT, "the %s is of kind '%s'; this fmtrain reads '%s' tokenizers", where,
                    kind, FM_TOKENIZER_KIND);
        goto done;
    }
    FM_TRY_GOTO(st, done, fm_h5_attr_read_u64(g, "version", &version, where));
    if (version != 1 && version != 2) {
        st = FM_ERR(FM_ERR_INPUT, "the %s has version %" PRIu64 "; this fmtrain reads versions 1 and 2 (a newer "
                    "fmtrain wrote it)", where, version);
        goto done;
    }
    FM_TRY_GOTO(st, done, fm_h5_attr_read_u64(g, "vocab_size", &vocab, where));
    FM_TRY_GOTO(st, done, fm_h5_attr_read_u64(g, "eot_id", &eot, where));
    FM_TRY_GOTO(st, done, fm_h5_attr_read_u64(g, "n_merges", &nm, where));
    st = version == 1 ? load_v1(g, where, vocab, eot, nm, out) : load_v2(g, where, vocab, eot, nm, out);
done:
    H5Gclose(g);
    return st;
}

fm_status fm_tokenizer_load(hid_t loc, const char *name, fm_tokenizer **out)
{
    fm_h5_quiet q;
    fm_h5_quiet_begin(&q);
    fm_status st = tokenizer_load(loc, name, out);
    fm_h5_quiet_end(&q);
    return st;
}

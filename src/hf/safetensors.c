/* safetensors.c — header validation, reading with dtype conversion, writing (safetensors.h). */
#define _POSIX_C_SOURCE 200809L
#include "hf/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hf/json.h"

struct fm_safetensors {
    char *path;
    int fd;              /* -1: header only */
    uint64_t data_start; /* 8 + N */
    fm_json_doc *doc;    /* owns the names */
    fm_st_tensor *t;
    int n;
    const fm_json *meta; /* "__metadata__" or NULL */
};

/* ---- dtypes and conversions ----------------------------------------------------------------- */

static const struct {
    const char *name;
    int bytes;
    fm_st_dtype d;
} dtypes[] = {
    {"F32", 4, FM_ST_F32},       {"BF16", 2, FM_ST_BF16},     {"F16", 2, FM_ST_F16},
    {"F64", 8, FM_ST_F64},       {"I8", 1, FM_ST_OTHER},      {"U8", 1, FM_ST_OTHER},
    {"I16", 2, FM_ST_OTHER},     {"U16", 2, FM_ST_OTHER},     {"I32", 4, FM_ST_OTHER},
    {"U32", 4, FM_ST_OTHER},     {"I64", 8, FM_ST_OTHER},     {"U64", 8, FM_ST_OTHER},
    {"BOOL", 1, FM_ST_OTHER},    {"F8_E4M3", 1, FM_ST_OTHER}, {"F8_E5M2", 1, FM_ST_OTHER},
};

int fm_st_dtype_bytes(fm_st_dtype d)
{
    switch (d) {
    case FM_ST_F32: return 4;
    case FM_ST_BF16: return 2;
    case FM_ST_F16: return 2;
    case FM_ST_F64: return 8;
    default: return 0;
    }
}

const char *fm_st_dtype_name(fm_st_dtype d)
{
    switch (d) {
    case FM_ST_F32: return "F32";
    case FM_ST_BF16: return "BF16";
    case FM_ST_F16: return "F16";
    case FM_ST_F64: return "F64";
    default: return "?";
    }
}

static uint32_t f32_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}

static float bits_f32(uint32_t u)
{
    float x;
    memcpy(&x, &u, 4);
    return x;
}

uint16_t fm_st_f32_to_bf16(float x)
{
    uint32_t u = f32_bits(x);
    if ((u & 0x7F800000u) == 0x7F800000u && (u & 0x007FFFFFu)) return (uint16_t)((u >> 16) | 0x40); /* NaN stays NaN */
    u += 0x7FFFu + ((u >> 16) & 1u); /* round to nearest, ties to even */
    return (uint16_t)(u >> 16);
}

float fm_st_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

uint16_t fm_st_f32_to_f16(float x)
{
    uint32_t u = f32_bits(x);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t e = (u >> 23) & 0xFF, m = u & 0x7FFFFFu;
    if (e == 0xFF) return (uint16_t)(sign | 0x7C00u | (m ? 0x200u : 0)); /* Inf, NaN */
    int32_t ee = (int32_t)e - 127 + 15;
    if (ee >= 31) return (uint16_t)(sign | 0x7C00u); /* overflow -> Inf */
    if (ee <= 0) {
        if (ee < -10) return (uint16_t)sign; /* underflow -> 0 */
        m |= 0x800000u;
        uint32_t shift = (uint32_t)(14 - ee);
        uint32_t half = 1u << (shift - 1);
        uint32_t r = m >> shift, rem = m & ((1u << shift) - 1);
        if (rem > half || (rem == half && (r & 1u))) r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = m >> 13, rem = m & 0x1FFFu;
    uint32_t out = sign | ((uint32_t)ee << 10) | r;
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) out++; /* carries into the exponent correctly */
    return (uint16_t)out;
}

float fm_st_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1F, m = h & 0x3FFu;
    if (e == 0) {
        if (m == 0) return bits_f32(sign);
        float v = ldexpf((float)m, -24);
        return sign ? -v : v;
    }
    if (e == 31) return bits_f32(sign | 0x7F800000u | (m << 13));
    return bits_f32(sign | ((e - 15 + 127) << 23) | (m << 13));
}

/* ---- header --------------------------------------------------------------------------------- */

void fm_safetensors_free(fm_safetensors **fp)
{
    if (!fp || !*fp) return;
    fm_safetensors *f = *fp;
    if (f->fd >= 0) close(f->fd);
    fm_json_doc_free(&f->doc);
    free(f->t);
    free(f->path);
    free(f);
    *fp = NULL;
}

static int cmp_begin(const void *a, const void *b)
{
    const fm_st_tensor *x = *(const fm_st_tensor *const *)a, *y = *(const fm_st_tensor *const *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end < y->end ? -1 : x->end > y->end);
}

/* Checks one tensor entry "name": {...} and fills *t. */
static fm_status parse_entry(const char *path, const char *name, const fm_json *e, fm_st_tensor *t)
{
    char where[400];
    snprintf(where, sizeof where, "%s: the header's entry for tensor \"%.200s\"", path, name);
    FM_TRY(fm_json_want(e, FM_JSON_OBJECT, where));
    for (size_t k = 0; k < e->len; k++)
        if (strcmp(e->keys[k], "dtype") && strcmp(e->keys[k], "shape") && strcmp(e->keys[k], "data_offsets"))
            return FM_ERR(FM_ERR_INPUT, "%s has an unknown key \"%.80s\" (byte %zu); expected only dtype, shape "
                          "and data_offsets", where, e->keys[k], e->items[k]->offset);
    char w2[440];
    const fm_json *dt = fm_json_get(e, "dtype"), *sh = fm_json_get(e, "shape"), *off = fm_json_get(e, "data_offsets");
    snprintf(w2, sizeof w2, "%s, dtype", where);
    FM_TRY(fm_json_want(dt, FM_JSON_STRING, w2));
    t->elem_bytes = 0;
    for (size_t i = 0; i < sizeof dtypes / sizeof *dtypes; i++)
        if (strcmp(dt->str, dtypes[i].name) == 0) {
            t->dtype = dtypes[i].d;
            t->dtype_name = dtypes[i].name;
            t->elem_bytes = dtypes[i].bytes;
        }
    if (!t->elem_bytes)
        return FM_ERR(FM_ERR_INPUT, "%s: dtype \"%.40s\" (byte %zu) is not a safetensors dtype (F32, BF16, F16, "
                      "F64, I8..U64, BOOL, F8_E4M3, F8_E5M2)", where, dt->str, dt->offset);
    snprintf(w2, sizeof w2, "%s, shape", where);
    FM_TRY(fm_json_want(sh, FM_JSON_ARRAY, w2));
    if (sh->len > FM_SAFETENSORS_MAX_DIMS)
        return FM_ERR(FM_ERR_INPUT, "%s: the shape has %zu dimensions (byte %zu); at most %d are accepted", where,
                      sh->len, sh->offset, FM_SAFETENSORS_MAX_DIMS);
    t->ndim = (int)sh->len;
    uint64_t numel = 1;
    int overflow = 0;
    for (size_t i = 0; i < sh->len; i++) {
        int64_t d;
        FM_TRY(fm_json_want_int(sh->items[i], 0, INT64_MAX, w2, &d));
        t->shape[i] = d;
        if (d && numel > UINT64_MAX / (uint64_t)d) overflow = 1;
        else numel *= (uint64_t)d;
    }
    if (overflow || numel > UINT64_MAX / (uint64_t)t->elem_bytes)
        return FM_ERR(FM_ERR_INPUT, "%s: the shape (byte %zu) holds more elements than any file can", where, sh->offset);
    t->numel = numel;
    snprintf(w2, sizeof w2, "%s, data_offsets", where);
    FM_TRY(fm_json_want(off, FM_JSON_ARRAY, w2));
    if (off->len != 2)
        return FM_ERR(FM_ERR_INPUT, "%s: expected [begin, end], found %zu numbers (byte %zu)", w2, off->len, off->offset);
    int64_t b, en;
    FM_TRY(fm_json_want_int(off->items[0], 0, INT64_MAX, w2, &b));
    FM_TRY(fm_json_want_int(off->items[1], 0, INT64_MAX, w2, &en));
    if (en < b)
        return FM_ERR(FM_ERR_INPUT, "%s: end %" PRId64 " is before begin %" PRId64 " (byte %zu)", w2, en, b, off->offset);
    if ((uint64_t)(en - b) != numel * (uint64_t)t->elem_bytes)
        return FM_ERR(FM_ERR_INPUT, "%s: [%" PRId64 ", %" PRId64 "] is %" PRId64 " bytes, but the shape and dtype "
                      "make %" PRIu64 " (byte %zu)", w2, b, en, en - b, numel * (uint64_t)t->elem_bytes, off->offset);
    t->begin = (uint64_t)b;
    t->end = (uint64_t)en;
    t->name = name;
    return NULL;
}

fm_status fm_safetensors_parse_header(const char *path, const uint8_t *header, uint64_t n, uint64_t file_size,
                                      fm_safetensors **out)
{
    *out = NULL;
    if (n > FM_SAFETENSORS_MAX_HEADER)
        return FM_ERR(FM_ERR_INPUT, "%s: the header length (bytes 0..7) is %" PRIu64 ", more than the %" PRIu64
                      " bytes a safetensors header may have (not a safetensors file, or damaged)",
                      path, n, FM_SAFETENSORS_MAX_HEADER);
    if (file_size < 8 || n > file_size - 8)
        return FM_ERR(FM_ERR_INPUT, "%s: the header length (bytes 0..7) is %" PRIu64 " but the file has only %" PRIu64
                      " bytes (truncated, or not a safetensors file)", path, n, file_size);
    fm_safetensors *f = calloc(1, sizeof *f);
    if (!f) return FM_ERR(FM_ERR_NOMEM, "out of memory reading %s", path);
    f->fd = -1;
    f->path = strdup(path);
    f->data_start = 8 + n;
    fm_status st = NULL;
    char what[600];
    snprintf(what, sizeof what, "%s: the safetensors header", path);
    fm_st_tensor **order = NULL;
    if (!f->path) {
        st = FM_ERR(FM_ERR_NOMEM, "out of memory reading %s", path);
        goto fail;
    }
    FM_TRY_GOTO(st, fail, fm_json_parse((const char *)header, (size_t)n, what, 8, &f->doc));
    const fm_json *root = fm_json_root(f->doc);
    FM_TRY_GOTO(st, fail, fm_json_want(root, FM_JSON_OBJECT, what));
    if (root->len > (size_t)INT32_MAX) {
        st = FM_ERR(FM_ERR_INPUT, "%s has too many entries", what);
        goto fail;
    }
    f->t = calloc(root->len ? root->len : 1, sizeof *f->t);
    order = calloc(root->len ? root->len : 1, sizeof *order);
    if (!f->t || !order) {
        st = FM_ERR(FM_ERR_NOMEM, "out of memory reading %s", path);
        goto fail;
    }
    for (size_t i = 0; i < root->len; i++) {
        if (strcmp(root->keys[i], "__metadata__") == 0) {
            const fm_json *m = root->items[i];
            char w[700];
            snprintf(w, sizeof w, "%s, __metadata__", what);
            FM_TRY_GOTO(st, fail, fm_json_want(m, FM_JSON_OBJECT, w));
            for (size_t k = 0; k < m->len; k++) FM_TRY_GOTO(st, fail, fm_json_want(m->items[k], FM_JSON_STRING, w));
            f->meta = m;
            continue;
        }
        if (root->key_lens[i] != strlen(root->keys[i]) || root->key_lens[i] == 0) {
            st = FM_ERR(FM_ERR_INPUT, "%s: a tensor name (byte %zu) is empty or holds a NUL character", what,
                        root->items[i]->offset);
            goto fail;
        }
        FM_TRY_GOTO(st, fail, parse_entry(path, root->keys[i], root->items[i], &f->t[f->n]));
        order[f->n] = &f->t[f->n];
        f->n++;
    }
    /* The data: tensors back to back from offset 0, ending where the file ends. */
    qsort(order, (size_t)f->n, sizeof *order, cmp_begin);
    uint64_t at = 0;
    for (int i = 0; i < f->n; i++) {
        if (order[i]->begin != at) {
            st = FM_ERR(FM_ERR_INPUT, "%s: tensor \"%.200s\" starts at data byte %" PRIu64 ", expected %" PRIu64
                        " (tensors must follow each other without %s)", what, order[i]->name, order[i]->begin, at,
                        order[i]->begin < at ? "overlapping" : "holes");
            goto fail;
        }
        at = order[i]->end;
    }
    if (at != file_size - f->data_start) {
        st = FM_ERR(FM_ERR_INPUT, "%s: the tensors end at data byte %" PRIu64 " but the file has %" PRIu64
                    " data bytes after the header (%s)", what, at, file_size - f->data_start,
                    at > file_size - f->data_start ? "truncated file" : "trailing bytes");
        goto fail;
    }
    free(order);
    *out = f;
    return NULL;
fail:
    free(order);
    fm_safetensors_free(&f);
    return st;
}

fm_status fm_safetensors_open(const char *path, fm_safetensors **out)
{
    *out = NULL;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return FM_ERR(FM_ERR_INPUT, "cannot open %s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return FM_ERR(FM_ERR_INPUT, "%s is not a regular file", path);
    }
    uint64_t size = (uint64_t)sb.st_size;
    uint8_t len8[8];
    if (size < 8 || pread(fd, len8, 8, 0) != 8) {
        close(fd);
        return FM_ERR(FM_ERR_INPUT, "%s: %" PRIu64 " bytes, too short for a safetensors file (8-byte header "
                      "length first)", path, size);
    }
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | len8[i];
    if (n > FM_SAFETENSORS_MAX_HEADER || n > size - 8) {
        close(fd);
        fm_safetensors *dummy = NULL;
        return fm_safetensors_parse_header(path, NULL, n, size, &dummy); /* the length error */
    }
    uint8_t *h = malloc(n ? (size_t)n : 1);
    if (!h) {
        close(fd);
        return FM_ERR(FM_ERR_NOMEM, "out of memory for the %" PRIu64 "-byte header of %s", n, path);
    }
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, h + got, (size_t)n - got, (off_t)(8 + got));
        if (r <= 0) break;
        got += (size_t)r;
    }
    if (got != n) {
        free(h);
        close(fd);
        return FM_ERR(FM_ERR_INPUT, "%s: cannot read its %" PRIu64 "-byte header", path, n);
    }
    fm_status st = fm_safetensors_parse_header(path, h, n, size, out);
    free(h);
    if (st) {
        close(fd);
        return st;
    }
    (*out)->fd = fd;
    return NULL;
}

int fm_safetensors_count(const fm_safetensors *f) { return f->n; }
const fm_st_tensor *fm_safetensors_at(const fm_safetensors *f, int i) { return i >= 0 && i < f->n ? &f->t[i] : NULL; }
const char *fm_safetensors_path(const fm_safetensors *f) { return f->path; }

const fm_st_tensor *fm_safetensors_find(const fm_safetensors *f, const char *name)
{
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->t[i].name, name) == 0) return &f->t[i];
    return NULL;
}

const char *fm_safetensors_metadata(const fm_safetensors *f, const char *key)
{
    const fm_json *v = fm_json_get(f->meta, key);
    return v ? v->str : NULL;
}

/* ---- reading tensors ------------------------------------------------------------------------ */

static fm_status read_at(fm_safetensors *f, void *dst, uint64_t n, uint64_t off, const char *name)
{
    if (f->fd < 0) return FM_ERR(FM_ERR_INTERNAL, "safetensors %s: no file attached", f->path);
    uint8_t *p = dst;
    uint64_t got = 0;
    while (got < n) {
        size_t want = n - got > ((uint64_t)1 << 30) ? ((size_t)1 << 30) : (size_t)(n - got);
        ssize_t r = pread(f->fd, p + got, want, (off_t)(off + got));
        if (r < 0) return FM_ERR(FM_ERR_IO, "error reading tensor \"%s\" of %s: %s", name, f->path, strerror(errno));
        if (r == 0)
            return FM_ERR(FM_ERR_INPUT, "%s ends inside tensor \"%s\" (truncated while being read?)", f->path, name);
        got += (uint64_t)r;
    }
    return NULL;
}

fm_status fm_safetensors_read_raw(fm_safetensors *f, const fm_st_tensor *t, void *dst)
{
    return read_at(f, dst, t->end - t->begin, f->data_start + t->begin, t->name);
}

fm_status fm_safetensors_read_f32(fm_safetensors *f, const fm_st_tensor *t, float *dst)
{
    if (t->dtype == FM_ST_OTHER)
        return FM_ERR(FM_ERR_INPUT, "%s: tensor \"%s\" has dtype %s; fmtrain reads floating-point weights (F32, "
                      "BF16, F16, F64)", f->path, t->name, t->dtype_name);
    if (t->dtype == FM_ST_F32) {
        FM_TRY(fm_safetensors_read_raw(f, t, dst));
        uint8_t *b = (uint8_t *)dst;
        for (uint64_t i = 0; i < t->numel; i++) { /* little-endian to host */
            uint32_t u = (uint32_t)b[4 * i] | (uint32_t)b[4 * i + 1] << 8 | (uint32_t)b[4 * i + 2] << 16 |
                         (uint32_t)b[4 * i + 3] << 24;
            dst[i] = bits_f32(u);
        }
        return NULL;
    }
    /* Convert in blocks through a bounce buffer. */
    const uint64_t block = (uint64_t)1 << 20;
    uint8_t *buf = malloc((size_t)(block * (uint64_t)t->elem_bytes));
    FM_CHECK_ALLOC(buf, block * (uint64_t)t->elem_bytes);
    fm_status st = NULL;
    for (uint64_t i0 = 0; i0 < t->numel && !st; i0 += block) {
        uint64_t n = t->numel - i0 < block ? t->numel - i0 : block;
        st = read_at(f, buf, n * (uint64_t)t->elem_bytes, f->data_start + t->begin + i0 * (uint64_t)t->elem_bytes,
                     t->name);
        for (uint64_t i = 0; i < n && !st; i++) {
            const uint8_t *b = buf + i * (uint64_t)t->elem_bytes;
            switch (t->dtype) {
            case FM_ST_BF16: dst[i0 + i] = fm_st_bf16_to_f32((uint16_t)(b[0] | b[1] << 8)); break;
            case FM_ST_F16: dst[i0 + i] = fm_st_f16_to_f32((uint16_t)(b[0] | b[1] << 8)); break;
            case FM_ST_F64: {
                uint64_t u = 0;
                for (int k = 7; k >= 0; k--) u = u << 8 | b[k];
                double d;
                memcpy(&d, &u, 8);
                dst[i0 + i] = (float)d;
                break;
            }
            default: break;
            }
        }
    }
    free(buf);
    return st;
}

/* ---- writing -------------------------------------------------------------------------------- */

uint64_t fm_safetensors_data_bytes(const fm_st_out *t, int n)
{
    uint64_t total = 0;
    for (int i = 0; i < n; i++) {
        uint64_t e = 1;
        for (int d = 0; d < t[i].ndim; d++) e *= (uint64_t)t[i].shape[d];
        total += e * (uint64_t)fm_st_dtype_bytes(t[i].dtype);
    }
    return total;
}

/* The header JSON (unpadded) into a malloc'ed buffer. */
static fm_status make_header(const fm_st_out *t, int n, char **out, size_t *len)
{
    char *buf = NULL;
    size_t size = 0;
    FILE *m = open_memstream(&buf, &size);
    if (!m) return FM_ERR(FM_ERR_NOMEM, "out of memory for a safetensors header");
    fputs("{\"__metadata__\":{\"format\":\"pt\"}", m);
    uint64_t at = 0;
    for (int i = 0; i < n; i++) {
        uint64_t e = 1;
        for (int d = 0; d < t[i].ndim; d++) e *= (uint64_t)t[i].shape[d];
        uint64_t bytes = e * (uint64_t)fm_st_dtype_bytes(t[i].dtype);
        fputc(',', m);
        fm_json_put_string(m, t[i].name, strlen(t[i].name));
        fprintf(m, ":{\"dtype\":\"%s\",\"shape\":[", fm_st_dtype_name(t[i].dtype));
        for (int d = 0; d < t[i].ndim; d++) fprintf(m, "%s%" PRId64, d ? "," : "", t[i].shape[d]);
        fprintf(m, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", at, at + bytes);
        at += bytes;
    }
    fputc('}', m);
    if (fclose(m) != 0 || !buf) {
        free(buf);
        return FM_ERR(FM_ERR_NOMEM, "out of memory for a safetensors header");
    }
    *out = buf;
    *len = size;
    return NULL;
}

fm_status fm_safetensors_write(const char *path, const fm_st_out *t, int n, fm_st_fill_fn fill, void *user)
{
    for (int i = 0; i < n; i++)
        if (t[i].dtype != FM_ST_F32 && t[i].dtype != FM_ST_BF16 && t[i].dtype != FM_ST_F16)
            return FM_ERR(FM_ERR_INTERNAL, "safetensors writer: tensor %s has a dtype it does not write", t[i].name);
    char *hdr = NULL;
    size_t hlen = 0;
    FM_TRY(make_header(t, n, &hdr, &hlen));
    size_t padded = (hlen + 7) / 8 * 8;
    size_t tl = strlen(path) + 8;
    char *tmp = malloc(tl);
    if (!tmp) {
        free(hdr);
        return FM_ERR(FM_ERR_NOMEM, "out of memory");
    }
    snprintf(tmp, tl, "%s.tmp", path);
    fm_status st = NULL;
    float *vals = NULL;
    uint8_t *bytes = NULL;
    FILE *fp = fopen(tmp, "wb");
    if (!fp) {
        st = FM_ERR(FM_ERR_IO, "cannot create %s: %s", tmp, strerror(errno));
        goto done;
    }
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    fwrite(len8, 1, 8, fp);
    fwrite(hdr, 1, hlen, fp);
    for (size_t i = hlen; i < padded; i++) fputc(' ', fp);
    for (int i = 0; i < n && !st; i++) {
        uint64_t e = 1;
        for (int d = 0; d < t[i].ndim; d++) e *= (uint64_t)t[i].shape[d];
        float *v = realloc(vals, (size_t)(e ? e : 1) * sizeof *v);
        uint8_t *b = realloc(bytes, (size_t)(e ? e : 1) * 4);
        if (v) vals = v;
        if (b) bytes = b;
        if (!v || !b) {
            st = FM_ERR(FM_ERR_NOMEM, "out of memory converting tensor %s (%" PRIu64 " elements)", t[i].name, e);
            break;
        }
        FM_TRY_GOTO(st, done, fill(user, i, vals, (size_t)e));
        size_t nb = 0;
        for (uint64_t k = 0; k < e; k++) {
            if (t[i].dtype == FM_ST_F32) {
                uint32_t u = f32_bits(vals[k]);
                for (int j = 0; j < 4; j++) bytes[nb++] = (uint8_t)(u >> (8 * j));
            } else {
                uint16_t h = t[i].dtype == FM_ST_BF16 ? fm_st_f32_to_bf16(vals[k]) : fm_st_f32_to_f16(vals[k]);
                bytes[nb++] = (uint8_t)h;
                bytes[nb++] = (uint8_t)(h >> 8);
            }
        }
        if (fwrite(bytes, 1, nb, fp) != nb)
            st = FM_ERR(FM_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
    }
    if (fflush(fp) != 0 || ferror(fp) || fsync(fileno(fp)) != 0)
        if (!st) st = FM_ERR(FM_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
    if (fclose(fp) != 0 && !st) st = FM_ERR(FM_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
    fp = NULL;
    if (!st && rename(tmp, path) != 0) st = FM_ERR(FM_ERR_IO, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
done:
    if (fp) fclose(fp);
    if (st) unlink(tmp);
    free(vals);
    free(bytes);
    free(hdr);
    free(tmp);
    return st;
}

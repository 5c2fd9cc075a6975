/* dataset.c — the dataset file format: writer (serial, used by `prepare`), probe and format check.
 * The reader (collective, read-ahead) is in reader.c; the format is stated in dataset.h and
 * docs/dataset-format.md. */
#define _POSIX_C_SOURCE 200809L
#include "data/dataset.h"

#include <errno.h>
#include <hdf5.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "build_info.h"
#include "data/dataset_h5.h"
#include "data/h5util.h"

/* ---- small HDF5 helpers shared with reader.c (dataset_h5.h) ------------------------------------- */

fm_status fm_dataset_h5_attr_u64(hid_t obj, const char *name, uint64_t *v, const char *where)
{
    if (H5Aexists(obj, name) <= 0)
        return FM_ERR(FM_ERR_INPUT, "%s has no attribute '%s' (not a complete fmtrain dataset)", where,
                      name);
    return fm_h5_attr_read_u64(obj, name, v, where);
}

fm_status fm_dataset_h5_attr_str(hid_t obj, const char *name, char *buf, size_t size, const char *where)
{
    return fm_h5_attr_read_str(obj, name, buf, size, where);
}

static fm_status attr_write_u64(hid_t obj, const char *name, uint64_t v, const char *path)
{
    return fm_h5_attr_write(obj, name, H5T_NATIVE_UINT64, H5T_STD_U64LE, &v, path);
}

static fm_status attr_write_i32(hid_t obj, const char *name, int32_t v, const char *path)
{
    return fm_h5_attr_write(obj, name, H5T_NATIVE_INT32, H5T_STD_I32LE, &v, path);
}

static fm_status attr_write_str(hid_t obj, const char *name, const char *v, const char *path)
{
    return fm_h5_attr_write_str(obj, name, v, path);
}

fm_status fm_dataset_h5_precheck(const char *path)
{
    struct stat sb;
    if (stat(path, &sb) != 0)
        return FM_ERR(FM_ERR_INPUT, "cannot open dataset %s: %s", path, strerror(errno));
    if (!S_ISREG(sb.st_mode)) return FM_ERR(FM_ERR_INPUT, "%s is not a regular file", path);
    if (access(path, R_OK) != 0)
        return FM_ERR(FM_ERR_INPUT, "cannot read %s: %s", path, strerror(errno));
    if (H5Fis_hdf5(path) <= 0)
        return FM_ERR(FM_ERR_INPUT, "%s is not an HDF5 file (or its HDF5 superblock is damaged)", path);
    return NULL;
}

fm_status fm_dataset_h5_open(const char *path, hid_t fapl, hid_t *file)
{
    FM_TRY(fm_dataset_h5_precheck(path));
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    if (f < 0) return FM_ERR(FM_ERR_INPUT, "cannot open %s with HDF5 (damaged file?)", path);
    *file = f;
    return NULL;
}

fm_status fm_dataset_file_format(const char *path, char *buf, size_t bufsize)
{
    fm_h5_quiet q;
    fm_h5_quiet_begin(&q);
    hid_t f = -1;
    fm_status st = fm_dataset_h5_open(path, H5P_DEFAULT, &f);
    if (!st && H5Aexists(f, "format") <= 0)
        st = FM_ERR(FM_ERR_INPUT, "%s is an HDF5 file but not an fmtrain file (no root attribute 'format')",
                    path);
    else if (!st) st = fm_dataset_h5_attr_str(f, "format", buf, bufsize, path);
    if (f >= 0) H5Fclose(f);
    fm_h5_quiet_end(&q);
    return st;
}

/* Checks one token dataset: 1-D unsigned integer of `width` bytes and `expect` elements. */
static fm_status check_tokens(hid_t f, const char *name, int width, uint64_t expect, const char *path)
{
    if (H5Lexists(f, name[0] == '/' && name[1] == 't' ? "/train" : "/val", H5P_DEFAULT) <= 0 ||
        H5Lexists(f, name, H5P_DEFAULT) <= 0)
        return FM_ERR(FM_ERR_INPUT, "%s has no dataset %s", path, name);
    hid_t ds = H5Dopen2(f, name, H5P_DEFAULT);
    if (ds < 0) return FM_ERR(FM_ERR_INPUT, "cannot open %s in %s (damaged file?)", name, path);
    hid_t sp = H5Dget_space(ds), ft = H5Dget_type(ds);
    fm_status st = NULL;
    hsize_t n = 0;
    if (sp < 0 || ft < 0 || H5Sget_simple_extent_ndims(sp) != 1 || H5Tget_class(ft) != H5T_INTEGER ||
        H5Tget_sign(ft) != H5T_SGN_NONE || (int)H5Tget_size(ft) != width) {
        st = FM_ERR(FM_ERR_INPUT, "%s in %s is not a 1-D array of %d-byte unsigned integers", name, path,
                    width);
    } else {
        H5Sget_simple_extent_dims(sp, &n, NULL);
        if ((uint64_t)n != expect)
            st = FM_ERR(FM_ERR_INPUT,
                        "%s in %s holds %llu tokens but the file says %" PRIu64 " (truncated or damaged)",
                        name, path, (unsigned long long)n, expect);
    }
    if (ft >= 0) H5Tclose(ft);
    if (sp >= 0) H5Sclose(sp);
    H5Dclose(ds);
    return st;
}

fm_status fm_dataset_h5_read_info(hid_t f, const char *path, fm_dataset_info *info)
{
    memset(info, 0, sizeof *info);
    char fmt[64];
    if (H5Aexists(f, "format") <= 0)
        return FM_ERR(FM_ERR_INPUT, "%s is an HDF5 file but not an fmtrain dataset (no root attribute "
                                    "'format'; make one with 'fmtrain prepare')",
                      path);
    FM_TRY(fm_dataset_h5_attr_str(f, "format", fmt, sizeof fmt, path));
    if (strcmp(fmt, FM_DATASET_FORMAT) != 0)
        return FM_ERR(FM_ERR_INPUT, "%s is a '%s' file, not a dataset ('%s')", path, fmt, FM_DATASET_FORMAT);
    uint64_t v;
    FM_TRY(fm_dataset_h5_attr_u64(f, "format_version", &v, path));
    if (v != FM_DATASET_VERSION)
        return FM_ERR(FM_ERR_INPUT,
                      "%s has dataset format version %" PRIu64 "; this fmtrain reads version %d "
                      "(re-create it with this fmtrain's 'prepare')",
                      path, v, FM_DATASET_VERSION);
    info->format_version = (int)v;
    FM_TRY(fm_dataset_h5_attr_u64(f, "vocab_size", &info->vocab_size, path));
    FM_TRY(fm_dataset_h5_attr_u64(f, "eot_id", &info->eot_id, path));
    FM_TRY(fm_dataset_h5_attr_u64(f, "token_bytes", &v, path));
    if (H5Aexists(f, "train_tokens") <= 0)
        return FM_ERR(FM_ERR_INPUT, "%s is incomplete: no 'train_tokens' attribute (was 'fmtrain prepare' "
                                    "interrupted?)",
                      path);
    FM_TRY(fm_dataset_h5_attr_u64(f, "train_tokens", &info->train_tokens, path));
    FM_TRY(fm_dataset_h5_attr_u64(f, "val_tokens", &info->val_tokens, path));
    FM_TRY(fm_dataset_h5_attr_str(f, "tokenizer_kind", info->tokenizer_kind, sizeof info->tokenizer_kind,
                                  path));
    FM_TRY(fm_dataset_h5_attr_str(f, "source", info->source, sizeof info->source, path));
    if (H5Aexists(f, "created_by") > 0)
        FM_TRY(fm_dataset_h5_attr_str(f, "created_by", info->created_by, sizeof info->created_by, path));
    if (info->vocab_size < 256 || info->vocab_size > FM_DATASET_MAX_VOCAB)
        return FM_ERR(FM_ERR_INPUT, "%s has vocab_size %" PRIu64 ", outside 256..2^32-1", path,
                      info->vocab_size);
    if (info->eot_id >= info->vocab_size)
        return FM_ERR(FM_ERR_INPUT, "%s has eot_id %" PRIu64 " >= vocab_size %" PRIu64, path, info->eot_id,
                      info->vocab_size);
    int want = info->vocab_size <= 65536 ? 2 : 4;
    if ((int)v != want)
        return FM_ERR(FM_ERR_INPUT, "%s has token_bytes %" PRIu64 "; vocab_size %" PRIu64 " needs %d", path,
                      v, info->vocab_size, want);
    info->token_bytes = want;
    FM_TRY(check_tokens(f, "/train/tokens", want, info->train_tokens, path));
    FM_TRY(check_tokens(f, "/val/tokens", want, info->val_tokens, path));
    info->has_tokenizer = fm_tokenizer_exists(f, "tokenizer");
    if (info->has_tokenizer && strcmp(info->tokenizer_kind, FM_TOKENIZER_KIND) != 0)
        return FM_ERR(FM_ERR_INPUT, "%s has a /tokenizer group but tokenizer_kind '%s'", path,
                      info->tokenizer_kind);
    if (!info->has_tokenizer && strcmp(info->tokenizer_kind, "none") != 0)
        return FM_ERR(FM_ERR_INPUT, "%s says tokenizer_kind '%s' but has no /tokenizer group", path,
                      info->tokenizer_kind);
    return NULL;
}

fm_status fm_dataset_probe(const char *path, fm_dataset_info *info)
{
    fm_h5_quiet q;
    fm_h5_quiet_begin(&q);
    hid_t f = -1;
    fm_status st = fm_dataset_h5_open(path, H5P_DEFAULT, &f);
    if (!st) st = fm_dataset_h5_read_info(f, path, info);
    if (f >= 0) H5Fclose(f);
    fm_h5_quiet_end(&q);
    return st;
}

fm_status fm_dataset_scan_ids(const char *path, fm_dataset_split split, uint64_t first,
                              uint64_t count, uint64_t vocab, fm_dataset_scan *out)
{
    out->max_id = 0;
    out->bad_pos = UINT64_MAX;
    out->bad_id = 0;
    out->scanned = 0;
    if (count == 0) return NULL;
    fm_h5_quiet q;
    fm_h5_quiet_begin(&q);
    hid_t f = -1, d = -1, fs = -1, ms = -1;
    uint32_t *buf = NULL;
    const char *name = split == FM_SPLIT_VAL ? "/val/tokens" : "/train/tokens";
    fm_status st = fm_dataset_h5_open(path, H5P_DEFAULT, &f);
    if (!st) {
        d = H5Dopen2(f, name, H5P_DEFAULT);
        fs = d >= 0 ? H5Dget_space(d) : -1;
        if (fs < 0) st = FM_ERR(FM_ERR_INPUT, "%s: cannot open %s", path, name);
    }
    hssize_t n = st ? 0 : H5Sget_simple_extent_npoints(fs);
    if (!st && (n < 0 || first + count > (uint64_t)n))
        st = FM_ERR(FM_ERR_INTERNAL, "%s: scanning tokens %" PRIu64 "..%" PRIu64 " of %s (%lld)",
                    path, first, first + count, name, (long long)n);
    const uint64_t piece = FM_DATASET_CHUNK;
    if (!st) {
        buf = malloc(piece * sizeof *buf);
        if (!buf) st = FM_ERR(FM_ERR_NOMEM, "out of memory scanning %s", path);
    }
    for (uint64_t off = first; !st && off < first + count; off += piece) {
        hsize_t start = off, len = first + count - off < piece ? first + count - off : piece;
        ms = H5Screate_simple(1, &len, NULL);
        if (ms < 0 || H5Sselect_hyperslab(fs, H5S_SELECT_SET, &start, NULL, &len, NULL) < 0 ||
            H5Dread(d, H5T_NATIVE_UINT32, ms, fs, H5P_DEFAULT, buf) < 0)
            st = FM_ERR(FM_ERR_INPUT, "%s: cannot read tokens %" PRIu64 "..%" PRIu64 " of %s "
                                      "(truncated or damaged file?)",
                        path, off, (uint64_t)(off + len), name);
        if (ms >= 0) H5Sclose(ms);
        ms = -1;
        for (hsize_t i = 0; !st && i < len; i++) {
            if (buf[i] > out->max_id) out->max_id = buf[i];
            if (buf[i] >= vocab && out->bad_pos == UINT64_MAX) {
                out->bad_pos = off + i;
                out->bad_id = buf[i];
            }
        }
        if (!st) out->scanned += len;
    }
    free(buf);
    if (fs >= 0) H5Sclose(fs);
    if (d >= 0) H5Dclose(d);
    if (f >= 0) H5Fclose(f);
    H5Eclear2(H5E_DEFAULT);
    fm_h5_quiet_end(&q);
    return st;
}

/* ---- writer ------------------------------------------------------------------------------------- */

struct fm_dataset_writer {
    char *path;
    hid_t file;
    hid_t ds[2];
    hid_t mtype; /* native uint16 or uint32 */
    int width;
    uint64_t vocab;
    uint64_t count[2]; /* tokens written to the file */
    void *buf[2];      /* FM_DATASET_CHUNK tokens each, in the file width */
    size_t nbuf[2];
};

static const char *split_name[2] = {"/train/tokens", "/val/tokens"};

void fm_dataset_writer_free(fm_dataset_writer **wp)
{
    if (!wp || !*wp) return;
    fm_dataset_writer *w = *wp;
    fm_h5_quiet q;
    fm_h5_quiet_begin(&q);
    for (int s = 0; s < 2; s++) {
        if (w->ds[s] >= 0) H5Dclose(w->ds[s]);
        free(w->buf[s]);
    }
    if (w->file >= 0) H5Fclose(w->file);
    fm_h5_quiet_end(&q);
    free(w->path);
    free(w);
    *wp = NULL;
}

static fm_status writer_create_file(const char *path, uint64_t vocab_size, uint64_t eot_id,
                                    const fm_tokenizer *tok, const char *source, fm_dataset_writer **out);

fm_status fm_dataset_writer_open(const char *path, uint64_t vocab_size, uint64_t eot_id,
                                 const fm_tokenizer *tok, const char *source, fm_dataset_writer **out)
{
    if (vocab_size < 256 || vocab_size > FM_DATASET_MAX_VOCAB)
        return FM_ERR(FM_ERR_USAGE, "vocabulary size %" PRIu64 " is out of range 256..4294967295", vocab_size);
    if (eot_id >= vocab_size)
        return FM_ERR(FM_ERR_USAGE, "end-of-text id %" PRIu64 " must be below the vocabulary size %" PRIu64,
                      eot_id, vocab_size);
    if (tok && fm_tokenizer_vocab_size(tok) != vocab_size)
        return FM_ERR(FM_ERR_USAGE, "the tokenizer has %u ids but the dataset's vocabulary size is %" PRIu64,
                      fm_tokenizer_vocab_size(tok), vocab_size);
    fm_h5_quiet q;
    fm_h5_quiet_begin(&q);
    fm_status st = writer_create_file(path, vocab_size, eot_id, tok, source, out);
    fm_h5_quiet_end(&q);
    return st;
}

/* fm_dataset_writer_open once its arguments are checked: the file, its attributes and groups. */
static fm_status writer_create_file(const char *path, uint64_t vocab_size, uint64_t eot_id,
                                    const fm_tokenizer *tok, const char *source, fm_dataset_writer **out)
{
    fm_status st = NULL;
    fm_dataset_writer *w = calloc(1, sizeof *w);
    FM_CHECK_ALLOC(w, sizeof *w);
    w->file = w->ds[0] = w->ds[1] = -1;
    w->vocab = vocab_size;
    w->width = vocab_size <= 65536 ? 2 : 4;
    w->mtype = w->width == 2 ? H5T_NATIVE_UINT16 : H5T_NATIVE_UINT32;
    w->path = strdup(path);
    w->buf[0] = malloc((size_t)FM_DATASET_CHUNK * w->width);
    w->buf[1] = malloc((size_t)FM_DATASET_CHUNK * w->width);
    if (!w->path || !w->buf[0] || !w->buf[1]) {
        st = FM_ERR(FM_ERR_NOMEM, "out of memory for the dataset writer's buffers");
        goto fail;
    }
    /* The 1.8+ file format checksums every piece of metadata (superblock, object headers, chunk
     * indexes), so a damaged file is reported by HDF5 as a checksum error instead of being parsed. */
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_LATEST);
    w->file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (w->file < 0) {
        st = FM_ERR(FM_ERR_IO, "cannot create %s (is its directory writable?)", path);
        goto fail;
    }
    FM_TRY_GOTO(st, fail, attr_write_str(w->file, "format", FM_DATASET_FORMAT, path));
    FM_TRY_GOTO(st, fail, attr_write_i32(w->file, "format_version", FM_DATASET_VERSION, path));
    FM_TRY_GOTO(st, fail, attr_write_u64(w->file, "vocab_size", vocab_size, path));
    FM_TRY_GOTO(st, fail, attr_write_u64(w->file, "eot_id", eot_id, path));
    FM_TRY_GOTO(st, fail, attr_write_i32(w->file, "token_bytes", w->width, path));
    FM_TRY_GOTO(st, fail, attr_write_str(w->file, "tokenizer_kind", tok ? FM_TOKENIZER_KIND : "none", path));
    FM_TRY_GOTO(st, fail, attr_write_str(w->file, "source", source ? source : "", path));
    FM_TRY_GOTO(st, fail, attr_write_str(w->file, "created_by", "fmtrain " FM_VERSION, path));
    for (int s = 0; s < 2; s++) {
        hid_t g = H5Gcreate2(w->file, s == 0 ? "/train" : "/val", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (g < 0) {
            st = FM_ERR(FM_ERR_IO, "cannot create a group in %s", path);
            goto fail;
        }
        H5Gclose(g);
    }
    if (tok) FM_TRY_GOTO(st, fail, fm_tokenizer_save(tok, w->file, "tokenizer"));
    *out = w;
    return NULL;
fail:
    fm_dataset_writer_free(&w);
    return fm_status_prefix(st, "while creating %s: ", path);
}

/* Creates split s's token dataset at its first flush: chunks of FM_DATASET_CHUNK tokens, or, when the
 * whole split is smaller (its first flush is the final one), one chunk of exactly its size, so small
 * datasets stay small on disk. */
static fm_status writer_create(fm_dataset_writer *w, int s, int final)
{
    hid_t ftype = w->width == 2 ? H5T_STD_U16LE : H5T_STD_U32LE;
    hsize_t zero = 0, unlimited = H5S_UNLIMITED, chunk = FM_DATASET_CHUNK;
    if (final && w->nbuf[s] < FM_DATASET_CHUNK) chunk = w->nbuf[s] ? w->nbuf[s] : 1;
    hid_t sp = H5Screate_simple(1, &zero, &unlimited);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 1, &chunk);
    w->ds[s] = H5Dcreate2(w->file, split_name[s], ftype, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5Pclose(dcpl);
    H5Sclose(sp);
    if (w->ds[s] < 0) return FM_ERR(FM_ERR_IO, "cannot create %s in %s", split_name[s], w->path);
    return NULL;
}

static fm_status write_buffer(fm_dataset_writer *w, int s, int final)
{
    if (w->ds[s] < 0) FM_TRY(writer_create(w, s, final));
    if (w->nbuf[s] == 0) return NULL;
    hsize_t start = w->count[s], n = w->nbuf[s], newsize = start + n;
    if (H5Dset_extent(w->ds[s], &newsize) < 0)
        return FM_ERR(FM_ERR_IO, "cannot extend %s in %s (disk full?)", split_name[s], w->path);
    hid_t fs = H5Dget_space(w->ds[s]);
    hid_t ms = H5Screate_simple(1, &n, NULL);
    herr_t e = H5Sselect_hyperslab(fs, H5S_SELECT_SET, &start, NULL, &n, NULL);
    if (e >= 0) e = H5Dwrite(w->ds[s], w->mtype, ms, fs, H5P_DEFAULT, w->buf[s]);
    H5Sclose(ms);
    H5Sclose(fs);
    if (e < 0)
        return FM_ERR(FM_ERR_IO, "cannot write %llu tokens to %s in %s (disk full?)", (unsigned long long)n,
                      split_name[s], w->path);
    w->count[s] += n;
    w->nbuf[s] = 0;
    return NULL;
}

/* Writes split s's buffer to the file (the HDF5 calls of append and close happen here). */
static fm_status writer_flush(fm_dataset_writer *w, int s, int final)
{
    fm_h5_quiet q;
    fm_h5_quiet_begin(&q);
    fm_status st = write_buffer(w, s, final);
    fm_h5_quiet_end(&q);
    return st;
}

fm_status fm_dataset_writer_append(fm_dataset_writer *w, fm_dataset_split split, const uint32_t *ids,
                                   size_t n)
{
    int s = split == FM_SPLIT_VAL ? 1 : 0;
    for (size_t i = 0; i < n; i++)
        if (ids[i] >= w->vocab)
            return FM_ERR(FM_ERR_INPUT, "token id %u at offset %" PRIu64 " of %s is >= vocab_size %" PRIu64,
                          ids[i], w->count[s] + w->nbuf[s] + i, split_name[s], w->vocab);
    size_t i = 0;
    while (i < n) {
        size_t room = FM_DATASET_CHUNK - w->nbuf[s], k = n - i < room ? n - i : room;
        if (w->width == 2) {
            uint16_t *b = (uint16_t *)w->buf[s] + w->nbuf[s];
            for (size_t j = 0; j < k; j++) b[j] = (uint16_t)ids[i + j];
        } else memcpy((uint32_t *)w->buf[s] + w->nbuf[s], ids + i, k * sizeof *ids);
        w->nbuf[s] += k;
        i += k;
        if (w->nbuf[s] == FM_DATASET_CHUNK) FM_TRY(writer_flush(w, s, 0));
    }
    return NULL;
}

uint64_t fm_dataset_writer_count(const fm_dataset_writer *w, fm_dataset_split split)
{
    int s = split == FM_SPLIT_VAL ? 1 : 0;
    return w->count[s] + w->nbuf[s];
}

fm_status fm_dataset_writer_close(fm_dataset_writer **wp)
{
    fm_dataset_writer *w = *wp;
    fm_status st = NULL;
    fm_h5_quiet q;
    fm_h5_quiet_begin(&q);
    FM_TRY_GOTO(st, done, writer_flush(w, 0, 1));
    FM_TRY_GOTO(st, done, writer_flush(w, 1, 1));
    FM_TRY_GOTO(st, done, attr_write_u64(w->file, "train_tokens", w->count[0], w->path));
    FM_TRY_GOTO(st, done, attr_write_u64(w->file, "val_tokens", w->count[1], w->path));
    for (int s = 0; s < 2; s++) {
        herr_t e = H5Dclose(w->ds[s]);
        w->ds[s] = -1;
        if (e < 0) {
            st = FM_ERR(FM_ERR_IO, "cannot close %s in %s", split_name[s], w->path);
            goto done;
        }
    }
    if (H5Fclose(w->file) < 0) {
        w->file = -1;
        st = FM_ERR(FM_ERR_IO, "cannot finish writing %s (disk full?)", w->path);
        goto done;
    }
    w->file = -1;
done:
    fm_dataset_writer_free(wp);
    fm_h5_quiet_end(&q);
    return st;
}

/* fuzz_dataset.c — libFuzzer harness for the dataset open path: fm_dataset_file_format,
 * fm_dataset_probe and fm_tokenizer_load on files built from the fuzzer's bytes.
 *
 * Two modes, chosen by the first byte:
 *  - structured: the bytes choose the file's content through the HDF5 API (which root attributes
 *    exist, their types and values, the token datasets' types, ranks and lengths, and a /tokenizer
 *    group with arbitrary merges, offsets and token bytes). This reaches every check in fmtrain's
 *    validation code with well-formed HDF5 around it.
 *  - raw: the bytes are XORed over a small valid dataset file, which exercises damaged HDF5
 *    structures (HDF5's own parser is not instrumented; fmtrain must turn its failures into errors).
 * An error status is fine; a crash, leak, sanitizer report or an accepted file that violates the
 * format's invariants is a failure. */
#define _POSIX_C_SOURCE 200809L
#include <hdf5.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/dataset.h"
#include "data/tokenizer.h"

typedef struct src {
    const uint8_t *p;
    size_t n;
} src;

static uint8_t take(src *s)
{
    if (!s->n) return 0;
    s->n--;
    return *s->p++;
}

static uint32_t take32(src *s)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v = v << 8 | take(s);
    return v;
}

static void die(const char *m)
{
    fprintf(stderr, "fuzz_dataset: %s\n", m);
    abort();
}

static void attr_u64(hid_t o, const char *name, uint64_t v, int asstring)
{
    hid_t sp = H5Screate(H5S_SCALAR);
    if (asstring) {
        char buf[32];
        snprintf(buf, sizeof buf, "%llu", (unsigned long long)v);
        hid_t t = H5Tcopy(H5T_C_S1);
        H5Tset_size(t, strlen(buf) + 1);
        hid_t a = H5Acreate2(o, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
        H5Awrite(a, t, buf);
        H5Aclose(a);
        H5Tclose(t);
    } else {
        hid_t a = H5Acreate2(o, name, H5T_STD_U64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
        H5Awrite(a, H5T_NATIVE_UINT64, &v);
        H5Aclose(a);
    }
    H5Sclose(sp);
}

static void attr_str(hid_t o, const char *name, const char *v, int fixed)
{
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t t = H5Tcopy(H5T_C_S1);
    if (fixed) {
        H5Tset_size(t, strlen(v) + 1);
        hid_t a = H5Acreate2(o, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
        H5Awrite(a, t, v);
        H5Aclose(a);
    } else {
        H5Tset_size(t, H5T_VARIABLE);
        hid_t a = H5Acreate2(o, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
        H5Awrite(a, t, &v);
        H5Aclose(a);
    }
    H5Tclose(t);
    H5Sclose(sp);
}

/* A 1-D (or 2-D) dataset of n elements of type ftype filled from the source. */
static void dset(hid_t loc, const char *name, hid_t ftype, int rank, hsize_t n0, hsize_t n1, src *s,
                 uint32_t modulo, int chunked)
{
    hsize_t dims[2] = {n0, n1};
    hid_t sp = H5Screate_simple(rank, dims, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (chunked && n0 > 0) {
        hsize_t ch[2] = {n0 < 16 ? n0 : 16, n1 ? n1 : 1};
        H5Pset_chunk(dcpl, rank, ch);
    }
    hid_t d = H5Dcreate2(loc, name, ftype, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    size_t total = (size_t)n0 * (rank == 2 ? (size_t)n1 : 1);
    uint32_t *v = malloc((total ? total : 1) * sizeof *v);
    for (size_t i = 0; i < total; i++) v[i] = modulo ? take32(s) % modulo : take32(s);
    if (d >= 0 && total) H5Dwrite(d, H5T_NATIVE_UINT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
    free(v);
    if (d >= 0) H5Dclose(d);
    H5Pclose(dcpl);
    H5Sclose(sp);
}

static char path[64];

static void build(src *s)
{
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_LATEST); /* as fmtrain's writer */
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (f < 0) die("cannot create the scratch file");
    uint8_t flags = take(s), flags2 = take(s);
    uint64_t vocab = 256 + take(s) % 64;
    if (flags2 & 0x40) vocab = take32(s);
    uint64_t ntrain = take(s) % 64, nval = take(s) % 16;
    static const char *fmts[] = {FM_DATASET_FORMAT, "fmtrain-checkpoint", "", "fmtrain-datasetX"};
    if (!(flags & 1)) attr_str(f, "format", fmts[take(s) % 4], flags & 2);
    if (!(flags & 4)) attr_u64(f, "format_version", take(s) % 3, flags2 & 1);
    if (!(flags & 8)) attr_u64(f, "vocab_size", vocab, flags2 & 2);
    attr_u64(f, "eot_id", (flags2 & 4) ? take32(s) : vocab - 1, 0);
    attr_u64(f, "token_bytes", (flags2 & 8) ? take(s) % 6 : (vocab <= 65536 ? 2 : 4), 0);
    if (!(flags & 16)) attr_u64(f, "train_tokens", (flags2 & 16) ? take(s) : ntrain, 0);
    attr_u64(f, "val_tokens", (flags2 & 32) ? take(s) : nval, 0);
    int has_tok = (flags & 32) != 0;
    attr_str(f, "tokenizer_kind", (flags & 64) ? (has_tok ? "none" : FM_TOKENIZER_KIND)
                                                : (has_tok ? FM_TOKENIZER_KIND : "none"),
             0);
    attr_str(f, "source", "fuzz", take(s) & 1);
    hid_t types[] = {H5T_STD_U16LE, H5T_STD_U32LE, H5T_STD_I32LE, H5T_STD_U16BE, H5T_STD_U8LE};
    for (int sp = 0; sp < 2; sp++) {
        hid_t g = H5Gcreate2(f, sp ? "val" : "train", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        uint8_t c = take(s);
        hid_t t = (c & 0x80) ? types[c % 5] : (vocab <= 65536 ? H5T_STD_U16LE : H5T_STD_U32LE);
        uint64_t n = sp ? nval : ntrain;
        if (!(c & 0x40)) dset(g, "tokens", t, (c & 0x20) ? 2 : 1, n, 1, s, (uint32_t)(vocab + (c & 1)), c & 2);
        H5Gclose(g);
    }
    if (has_tok) {
        hid_t g = H5Gcreate2(f, "tokenizer", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        uint8_t c = take(s);
        uint64_t tv = (c & 1) ? 257 + take(s) % 16 : vocab;
        uint64_t nm = (c & 2) ? take(s) % 20 : (tv >= 257 ? tv - 257 : 0);
        if (!(c & 4)) attr_str(g, "kind", (c & 8) ? "bpe" : FM_TOKENIZER_KIND, c & 16);
        attr_u64(g, "version", (c & 32) ? take(s) : 1, 0);
        attr_u64(g, "vocab_size", tv, 0);
        attr_u64(g, "eot_id", tv ? tv - 1 : 0, 0);
        attr_u64(g, "n_merges", nm, 0);
        if (nm > 64) nm = 64;
        uint8_t d = take(s);
        dset(g, "merges", H5T_STD_U32LE, (d & 1) ? 1 : 2, nm, (d & 2) ? 3 : 2, s, 256 + (uint32_t)nm, 0);
        uint64_t no = (d & 4) ? take(s) % 300 : tv + 1;
        if (no > 400) no = 400;
        dset(g, "token_offsets", H5T_STD_U64LE, 1, no, 0, s, 1024, 0);
        dset(g, "token_bytes", H5T_STD_U8LE, 1, take(s) % 200 + ((d & 8) ? 0 : 300), 0, s, 256, 0);
        H5Gclose(g);
    }
    H5Fclose(f);
}

static void check(void)
{
    char fmt[64];
    fm_status st = fm_dataset_file_format(path, fmt, sizeof fmt);
    fm_status_free(&st);
    fm_dataset_info info;
    st = fm_dataset_probe(path, &info);
    if (st) {
        fm_status_free(&st);
        return;
    }
    /* accepted: the invariants the reader relies on must hold */
    if (info.format_version != FM_DATASET_VERSION || info.eot_id >= info.vocab_size ||
        (info.token_bytes != 2 && info.token_bytes != 4) || (info.vocab_size <= 65536) != (info.token_bytes == 2))
        die("probe accepted a file that breaks the format's invariants");
    if (info.has_tokenizer) {
        hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
        fm_tokenizer *tok = NULL;
        st = fm_tokenizer_load(f, "tokenizer", &tok);
        if (!st) {
            if (fm_tokenizer_vocab_size(tok) < FM_TOKENIZER_MIN_VOCAB) die("loaded a tokenizer too small");
            uint8_t *text = NULL;
            size_t len = 0;
            uint32_t ids[4] = {0, 255, fm_tokenizer_vocab_size(tok) - 1, fm_tokenizer_vocab_size(tok) - 2};
            fm_status d = fm_tokenizer_decode(tok, ids, 4, &text, &len);
            if (d) die("decode of valid ids failed");
            free(text);
            fm_tokenizer_ids out = {0};
            d = fm_tokenizer_encode(tok, (const uint8_t *)"hello fuzz", 10, &out);
            if (d) die("encode failed");
            fm_tokenizer_ids_free(&out);
        }
        fm_status_free(&st);
        fm_tokenizer_free(&tok);
        H5Fclose(f);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!path[0]) {
        snprintf(path, sizeof path, "/tmp/fm_fuzz_dataset_%ld.h5", (long)getpid());
        H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    }
    if (size == 0) return 0;
    src s = {data + 1, size - 1};
    if (!(data[0] & 1)) {
        build(&s);
    } else {
        /* a valid base file, then the input XORed over it at an offset */
        static const uint8_t base_spec[] = {0, 0x20, 10, 0, 0, 40, 5};
        src b = {base_spec, sizeof base_spec};
        build(&b);
        FILE *fp = fopen(path, "r+b");
        if (!fp) die("cannot reopen the scratch file");
        fseek(fp, 0, SEEK_END);
        long flen = ftell(fp);
        uint8_t *buf = malloc((size_t)flen);
        fseek(fp, 0, SEEK_SET);
        if (fread(buf, 1, (size_t)flen, fp) != (size_t)flen) die("short read");
        size_t at = (size_t)take(&s) << 8 | take(&s);
        for (size_t i = 0; s.n; i++) buf[(at + i) % (size_t)flen] ^= take(&s);
        if (data[0] & 2) flen = (long)(at % (size_t)flen); /* and truncate */
        fclose(fp);
        fp = fopen(path, "wb");
        fwrite(buf, 1, (size_t)flen, fp);
        fclose(fp);
        free(buf);
    }
    check();
    /* every HDF5 object fmtrain opened must be closed again (also on error paths) */
    if (H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL) != 0) die("an HDF5 object was left open");
    return 0;
}

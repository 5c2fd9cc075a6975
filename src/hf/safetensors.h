/* safetensors.h — reading and writing the safetensors format (Hugging Face's weight files).
 *
 * The format: an 8-byte little-endian uint64 N, then N bytes of JSON (the header), then the data.
 * The header is an object: "__metadata__" (optional, string to string) and, for each tensor,
 *   "<name>": {"dtype": "F32"|"BF16"|"F16"|..., "shape": [d0, d1, ...], "data_offsets": [begin, end]}
 * with offsets relative to the first byte after the header, tensors stored little-endian in C order,
 * packed one after the other with no holes. Writers pad the header with spaces to a multiple of 8.
 *
 * What it is: a reader that validates the header of an untrusted file completely before any tensor
 * is read — the header size (at most FM_SAFETENSORS_MAX_HEADER), the JSON (hf/json.h), every entry's
 * dtype, shape and offsets (bytes = product of the shape x the dtype's size, no overflow, inside the
 * file, tensors contiguous from offset 0 without overlap or holes, the data ending where the file
 * ends) — with FM_ERR_INPUT messages that name the file, the byte offset and what was expected; and a
 * writer of one file (tensors in the order given). Reading converts F32, BF16, F16 and F64 to float32
 * (BF16 and F16 exactly; F64 rounded to nearest); the writer converts float32 to F32, BF16 or F16 with
 * round-to-nearest-even.
 * What it is not: no model knowledge (hf/hf_model.h maps tensors to a model), no mmap (tensors are
 * read with pread into the caller's buffer, one at a time).
 */
#ifndef FM_HF_SAFETENSORS_H
#define FM_HF_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

#define FM_SAFETENSORS_MAX_HEADER ((uint64_t)100 << 20) /* 100 MB, the limit of Hugging Face's reader */
#define FM_SAFETENSORS_MAX_DIMS 8

typedef enum fm_st_dtype {
    FM_ST_F32,
    FM_ST_BF16,
    FM_ST_F16,
    FM_ST_F64,
    FM_ST_OTHER /* a dtype the format knows (I8, U8, I64, BOOL, F8_E4M3, ...) that fmtrain does not read */
} fm_st_dtype;

typedef struct fm_st_tensor {
    const char *name;     /* owned by the file object */
    fm_st_dtype dtype;
    const char *dtype_name; /* "F32", "BF16", ... as in the header */
    int elem_bytes;
    int ndim;             /* 0 (a scalar) .. FM_SAFETENSORS_MAX_DIMS */
    int64_t shape[FM_SAFETENSORS_MAX_DIMS];
    uint64_t numel;
    uint64_t begin, end;  /* byte range relative to the data start */
} fm_st_tensor;

typedef struct fm_safetensors fm_safetensors;

/* Validates a header: `header` holds the N bytes after the length prefix, `file_size` is the size of
 * the whole file (8 + N + data). `path` names the file in messages. On success *out holds the tensors
 * (no file attached: fm_safetensors_read fails on it). Used by fm_safetensors_open and the fuzzer. */
fm_status fm_safetensors_parse_header(const char *path, const uint8_t *header, uint64_t n,
                                      uint64_t file_size, fm_safetensors **out);

/* Opens `path`, reads and validates its header (above). The file stays open until free. */
fm_status fm_safetensors_open(const char *path, fm_safetensors **out);
void fm_safetensors_free(fm_safetensors **f);

int fm_safetensors_count(const fm_safetensors *f);
const fm_st_tensor *fm_safetensors_at(const fm_safetensors *f, int i); /* header order */
const fm_st_tensor *fm_safetensors_find(const fm_safetensors *f, const char *name); /* or NULL */
/* The "__metadata__" value of `key`, or NULL. */
const char *fm_safetensors_metadata(const fm_safetensors *f, const char *key);
const char *fm_safetensors_path(const fm_safetensors *f);

/* Reads tensor t (of this file) as float32 into dst (t->numel floats). Errors: a dtype it cannot
 * convert (FM_ERR_INPUT naming it), a short read (FM_ERR_INPUT: truncated file), I/O errors. */
fm_status fm_safetensors_read_f32(fm_safetensors *f, const fm_st_tensor *t, float *dst);
/* Reads tensor t's raw bytes (t->end - t->begin) into dst. */
fm_status fm_safetensors_read_raw(fm_safetensors *f, const fm_st_tensor *t, void *dst);

/* ---- writing -------------------------------------------------------------------------------- */

/* One tensor to write: name, dtype (F32, BF16 or F16) and shape; its float32 values come from the
 * fill callback. */
typedef struct fm_st_out {
    const char *name;
    fm_st_dtype dtype;
    int ndim;
    int64_t shape[FM_SAFETENSORS_MAX_DIMS];
} fm_st_out;

/* Fills dst with the numel float32 values of tensor i (C order). */
typedef fm_status (*fm_st_fill_fn)(void *user, int i, float *dst, size_t numel);

/* Writes `path` (via <path>.tmp and a rename) with tensors[0..n) in that order and the metadata
 * {"format": "pt"}. Values are converted from float32 with round-to-nearest-even. Errors: FM_ERR_IO
 * naming the file, FM_ERR_NOMEM, the callback's status. */
fm_status fm_safetensors_write(const char *path, const fm_st_out *tensors, int n, fm_st_fill_fn fill,
                               void *user);

/* Bytes the tensors take in a file (the data part: sum of numel x element size). */
uint64_t fm_safetensors_data_bytes(const fm_st_out *tensors, int n);

/* Element conversions (exposed for tests). */
uint16_t fm_st_f32_to_bf16(float x);
uint16_t fm_st_f32_to_f16(float x);
float fm_st_bf16_to_f32(uint16_t h);
float fm_st_f16_to_f32(uint16_t h);
int fm_st_dtype_bytes(fm_st_dtype d);
const char *fm_st_dtype_name(fm_st_dtype d);

#endif /* FM_HF_SAFETENSORS_H */

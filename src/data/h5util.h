/* h5util.h — small HDF5 attribute helpers shared by the tokenizer, dataset and checkpoint code.
 * Each returns an fm_status naming the attribute and `where` (a path or object description):
 * FM_ERR_INPUT when an attribute to read is missing or of the wrong kind, FM_ERR_IO when a write fails.
 * Strings are written fixed-length, NUL-terminated UTF-8, so a reader can bound their size before
 * HDF5 allocates; reading accepts fixed- and variable-length strings (at most 64 KiB). */
#ifndef FM_H5UTIL_H
#define FM_H5UTIL_H

#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

/* Creates scalar attribute `name` on `obj` of file type `ftype` from `val` in memory type `mtype`. */
fm_status fm_h5_attr_write(hid_t obj, const char *name, hid_t mtype, hid_t ftype, const void *val,
                           const char *where);
fm_status fm_h5_attr_write_str(hid_t obj, const char *name, const char *val, const char *where);
/* Reads a scalar integer attribute (any integer file type) as uint64. */
fm_status fm_h5_attr_read_u64(hid_t obj, const char *name, uint64_t *v, const char *where);
/* Reads a scalar string attribute into buf (size bytes, always NUL-terminated, truncated to fit). */
fm_status fm_h5_attr_read_str(hid_t obj, const char *name, char *buf, size_t size, const char *where);

#endif /* FM_H5UTIL_H */

/* h5util.h — what the tokenizer, dataset and checkpoint code share about HDF5: the one way fmtrain
 * handles HDF5's error stack, and small attribute helpers.
 *
 * HDF5's error stack: by default HDF5 prints its whole error stack to stderr whenever an API call
 * fails. fmtrain reports every failure itself, as an fm_status naming the file and what was
 * expected, so users must never see that raw stack. Every entry point of fmtrain that calls HDF5
 * (the public functions of tokenizer.h, dataset.h, checkpoint_file.h and checkpoint.h, and the
 * commands that open files themselves) brackets its HDF5 calls with fm_h5_quiet_begin /
 * fm_h5_quiet_end: the current automatic-printing handler is saved and switched off, then restored.
 * Nothing switches printing off for the whole process, so a program (or test) embedding these
 * modules keeps its own choice. Brackets nest. The attribute helpers below are building blocks of
 * those entry points and run inside their caller's bracket. The setting is per thread in a
 * thread-safe HDF5 build and process-wide otherwise; fmtrain calls HDF5 from the main thread only
 * (the reader's read-ahead thread uses pread).
 *
 * Attribute helpers: each returns an fm_status naming the attribute and `where` (a path or object
 * description): FM_ERR_INPUT when an attribute to read is missing or of the wrong kind, FM_ERR_IO
 * when a write fails. Strings are written fixed-length, NUL-terminated UTF-8, so a reader can bound
 * their size before HDF5 allocates; reading accepts fixed- and variable-length strings (at most
 * 64 KiB). */
#ifndef FM_H5UTIL_H
#define FM_H5UTIL_H

#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

/* The automatic error printing saved by fm_h5_quiet_begin. */
typedef struct fm_h5_quiet {
    H5E_auto2_t func;
    void *data;
    int saved; /* 0 when HDF5 could not report the handler: nothing is changed or restored */
} fm_h5_quiet;

/* Saves HDF5's automatic error printing into *q and switches it off. */
void fm_h5_quiet_begin(fm_h5_quiet *q);
/* Restores what fm_h5_quiet_begin(q) saved. */
void fm_h5_quiet_end(const fm_h5_quiet *q);

/* Creates scalar attribute `name` on `obj` of file type `ftype` from `val` in memory type `mtype`. */
fm_status fm_h5_attr_write(hid_t obj, const char *name, hid_t mtype, hid_t ftype, const void *val,
                           const char *where);
fm_status fm_h5_attr_write_str(hid_t obj, const char *name, const char *val, const char *where);
/* Reads a scalar integer attribute (any integer file type) as uint64. */
fm_status fm_h5_attr_read_u64(hid_t obj, const char *name, uint64_t *v, const char *where);
/* Reads a scalar string attribute into buf (size bytes, always NUL-terminated, truncated to fit). */
fm_status fm_h5_attr_read_str(hid_t obj, const char *name, char *buf, size_t size, const char *where);

#endif /* FM_H5UTIL_H */

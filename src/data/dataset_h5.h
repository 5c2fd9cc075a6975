/* dataset_h5.h — private HDF5 helpers shared by dataset.c and reader.c (not part of the public
 * contract in dataset.h). They run inside their caller's fm_h5_quiet bracket (data/h5util.h). */
#ifndef FM_DATASET_H5_H
#define FM_DATASET_H5_H

#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

#include "data/dataset.h"
#include "core/status.h"

/* Checks that `path` exists, is a readable regular file and starts like HDF5 (no HDF5 open, so it is
 * safe to run on each rank before a collective open). FM_ERR_INPUT naming the path. */
fm_status fm_dataset_h5_precheck(const char *path);
/* Opens `path` read-only with access list `fapl` after checking it exists, is readable and is HDF5.
 * FM_ERR_INPUT naming the path. With an MPI-IO fapl this is collective. */
fm_status fm_dataset_h5_open(const char *path, hid_t fapl, hid_t *file);
/* Reads a scalar integer / string attribute; FM_ERR_INPUT naming `where` when missing or mistyped. */
fm_status fm_dataset_h5_attr_u64(hid_t obj, const char *name, uint64_t *v, const char *where);
fm_status fm_dataset_h5_attr_str(hid_t obj, const char *name, char *buf, size_t size, const char *where);
/* Validates an open file as a dataset (format, version, attributes, token datasets) into *info. */
fm_status fm_dataset_h5_read_info(hid_t f, const char *path, fm_dataset_info *info);

#endif

/* version.h — what `fmtrain --version` prints: the version and the real build configuration, read from
 * the libraries at run time where they can tell (MPI, HDF5, hwloc, OpenBLAS) and from the build
 * otherwise. Safe to call before MPI_Init. */
#ifndef FM_VERSION_H
#define FM_VERSION_H

#include <stdio.h>

void fm_version_print(FILE *out);
const char *fm_version_string(void);

#endif

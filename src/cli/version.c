/* version.c — see version.h. */
#include "cli/version.h"

#include <hdf5.h>
#include <hwloc.h>
#include <mpi.h>
#include <omp.h>
#include <string.h>

#include "build_info.h"
#include "dist/comm.h"
#include "kernels.h"

const char *fm_version_string(void) { return FM_VERSION; }

static const char *openmp_spec(int v)
{
    switch (v) {
    case 201107: return "3.1";
    case 201307: return "4.0";
    case 201511: return "4.5";
    case 201811: return "5.0";
    case 202011: return "5.1";
    case 202111: return "5.2";
    default: return "?";
    }
}

/* The MPI library's first version line and the MPI standard it implements (both allowed before
 * MPI_Init, MPI-3). */
static fm_status mpi_version(char *lib, size_t size, int *major, int *minor)
{
    char text[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0;
    FM_MPI_TRY(MPI_Get_library_version(text, &len));
    if (len < 0) len = 0;
    if (len >= MPI_MAX_LIBRARY_VERSION_STRING) len = MPI_MAX_LIBRARY_VERSION_STRING - 1;
    text[len] = '\0';
    char *nl = strchr(text, '\n');
    if (nl) *nl = '\0';
    snprintf(lib, size, "%s", text);
    FM_MPI_TRY(MPI_Get_version(major, minor));
    return NULL;
}

void fm_version_print(FILE *out)
{
    fprintf(out, "fmtrain %s\n", FM_VERSION);
    fprintf(out, "  build:   %s, %s\n", FM_BUILD_TYPE, FM_C_COMPILER);

    char mpi[MPI_MAX_LIBRARY_VERSION_STRING];
    int mv = 0, msub = 0;
    fm_status st = mpi_version(mpi, sizeof mpi, &mv, &msub);
    if (st)
        fprintf(out, "  MPI:     unknown (%s)\n", fm_status_message(st));
    else
        fprintf(out, "  MPI:     %s (standard %d.%d)\n", mpi, mv, msub);
    fm_status_free(&st);

    unsigned hmaj = 0, hmin = 0, hrel = 0;
    H5get_libversion(&hmaj, &hmin, &hrel);
#ifdef H5_HAVE_PARALLEL
    const char *par = "parallel";
#else
    const char *par = "SERIAL (not supported)";
#endif
    fprintf(out, "  HDF5:    %u.%u.%u, %s\n", hmaj, hmin, hrel, par);

    unsigned hw = hwloc_get_api_version();
    fprintf(out, "  hwloc:   %u.%u.%u (API)\n", hw >> 16, (hw >> 8) & 0xff, hw & 0xff);
    fprintf(out, "  GEMM:    %s\n", fm_backend_gemm_info());
    fprintf(out, "  BLAS:    %s\n", fm_backend_blas_info());
    fprintf(out, "  OpenMP:  %s (%d), %d threads available\n", openmp_spec(_OPENMP), _OPENMP,
            omp_get_max_threads());
    fprintf(out, "  CUDA:    %s\n", FM_CUDA_DESC);
    if (strcmp(FM_SANITIZE, "ON") == 0) fprintf(out, "  sanitizers: address, undefined\n");
}

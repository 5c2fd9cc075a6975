# shellcheck shell=bash
# marenostrum5-acc.sh — the modules that build fmtrain on MareNostrum 5 ACC (BSC, Spain).
#   4x NVIDIA H100 64 GB per node, 2x Intel Xeon 8460Y+ (80 cores)
# Build on an accelerated-partition login node (alogin; the ACC modules, e.g. the `-gcc-ompi` HDF5,
# are the ones found there):
#   modules/sites/build.sh marenostrum5-acc          (or `source` this file, then cmake: docs/onboarding.md)
# A module that does not load is named, with the `module spider` command that finds its current name.
#
# Verified 2026-11-25 against public sources (none of this was run on MareNostrum 5):
#   - gcc, openmpi/4.1.5-gcc, cuda, cmake, and hdf5/1.14.1-2-gcc-ompi on the accelerated (alogin)
#     nodes / hdf5/1.14.1-2-gcc-openmpi on the general-purpose ones: users' MN5 build scripts on
#     GitHub (BSC_MACHINE=mn5 branches that load `cuda` and the `-gcc-ompi` HDF5 on alogin); the
#     name hdf5/1.14.1-gcc-openmpi (without -2) appears in none of them.
#   - node layout (GPUs 0-1 on NUMA domain 0, 2-3 on domain 1; 80 cores): POP CoE GPU-affinity
#     experiment (co-design.pop-coe.eu/experiments/gpu-affinity/mare-nostrum-5.html).
# Unverified: the CUDA version (issue 20's check saw 12.8; `cuda` loads the default), an openblas
#   module (MN5 scripts use mkl; fmtrain needs cblas.h, which OpenBLAS provides), an hwloc module.

# shellcheck source=fm-site.sh
. "$(dirname "${BASH_SOURCE[0]}")/fm-site.sh" || return 1
fm_site_begin marenostrum5-acc || return 1
module purge
fm_site_load gcc
fm_site_load cuda
fm_site_load openmpi/4.1.5-gcc
fm_site_load hdf5/1.14.1-2-gcc-ompi hdf5/1.14.1-2-gcc-openmpi
fm_site_load openblas
fm_site_try hwloc
fm_site_load cmake
fm_site_end || return 1

# Extra CMake arguments for this system (H100: compute capability 9.0).
FM_SITE_CMAKE_ARGS="-DFMTRAIN_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90"
export FM_SITE_CMAKE_ARGS

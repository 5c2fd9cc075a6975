# shellcheck shell=bash
# jupiter-booster.sh — the modules that build fmtrain on JUPITER Booster (JSC, Germany).
#   4x NVIDIA GH200 per node (4x Grace, 72 Arm Neoverse V2 cores each, aarch64)
# Build on an aarch64 (Grace) node: an x86 build does not run here.
#   modules/sites/build.sh jupiter-booster           (or `source` this file, then cmake: docs/onboarding.md)
# A module that does not load is named, with the `module spider` command that finds its current name.
# As on JUWELS the names are unversioned and resolve inside the default Stage (pin Stages/<year>
# for a reproducible build). Each GH200 superchip is one NUMA domain for its Grace CPU, so one rank
# per GPU with 72 cores each matches the hardware.
#
# Verified 2026-11-25 against public sources (none of this was run on JUPITER):
#   - Slurm with psslurm on the compute nodes: apps.fz-juelich.de/jsc/hps/jupiter/batchsystem.html.
#   - the JSC module names GCC, OpenMPI, CUDA, HDF5, CMake: as on JUWELS Booster (HiPACE++
#     documentation); not found for JUPITER itself.
# Unverified: all module names on JUPITER, OpenBLAS and hwloc in particular.

# shellcheck source=fm-site.sh
. "$(dirname "${BASH_SOURCE[0]}")/fm-site.sh" || return 1
fm_site_begin jupiter-booster || return 1
module purge
fm_site_load Stages
fm_site_load GCC
fm_site_load OpenMPI
fm_site_load HDF5
fm_site_load CUDA
fm_site_load OpenBLAS
fm_site_try hwloc
fm_site_load CMake
fm_site_end || return 1

# Extra CMake arguments for this system (GH200: compute capability 9.0; -march for Grace).
FM_SITE_CMAKE_ARGS="-DFMTRAIN_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DFMTRAIN_NATIVE=ON"
export FM_SITE_CMAKE_ARGS

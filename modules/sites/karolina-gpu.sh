# shellcheck shell=bash
# karolina-gpu.sh — the modules that build fmtrain on Karolina accelerated nodes (IT4I, Czech Republic).
#   8x NVIDIA A100 40 GB per node, 2x AMD EPYC 7763 (128 cores)
# Build on a login node:
#   modules/sites/build.sh karolina-gpu              (or `source` this file, then cmake: docs/onboarding.md)
# A module that does not load is named, with the `module spider` command that finds its current name.
# IT4I's stack is EasyBuild-built; the one pin is the toolchain generation (foss/2023a and the HDF5
# built with it), since unversioned EasyBuild names may resolve to different toolchains.
# Karolina's CPU nodes (qcpu, 2x AMD EPYC 7H12, 128 cores) take generic/cpu.sbatch.
#
# Verified 2026-11-25 against public sources (none of this was run on Karolina):
#   - EasyBuild names (CUDA/12.4.0, GCC/11.3.0, CUDA/11.7, Anaconda3/2024.02-1) in Karolina users'
#     qgpu job scripts on GitHub; the naming scheme, not the versions below.
# Unverified: foss/2023a and HDF5/1.14.0-gompi-2023a on Karolina, the CUDA and CMake defaults,
#   an hwloc module (EasyBuild's OpenMPI loads hwloc as a dependency).

# shellcheck source=fm-site.sh
. "$(dirname "${BASH_SOURCE[0]}")/fm-site.sh" || return 1
fm_site_begin karolina-gpu || return 1
module purge
fm_site_load foss/2023a
fm_site_load HDF5/1.14.0-gompi-2023a
fm_site_load CUDA
fm_site_try hwloc
fm_site_load CMake
fm_site_end || return 1

# Extra CMake arguments for this system (A100: compute capability 8.0).
FM_SITE_CMAKE_ARGS="-DFMTRAIN_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=80"
export FM_SITE_CMAKE_ARGS

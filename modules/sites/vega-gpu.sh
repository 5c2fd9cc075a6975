# shellcheck shell=bash
# vega-gpu.sh — the modules that build fmtrain on Vega GPU partition (IZUM, Slovenia).
#   4x NVIDIA A100 40 GB per node, 2x AMD EPYC 7H12 (128 cores)
# Build on a login node (Vega has GPU login nodes):
#   modules/sites/build.sh vega-gpu                  (or `source` this file, then cmake: docs/onboarding.md)
# A module that does not load is named, with the `module spider` command that finds its current name.
# Vega's stack is EasyBuild-built; the one pin is the toolchain generation (foss/2023a and the HDF5
# built with it), since unversioned EasyBuild names may resolve to different toolchains.
#
# Verified 2026-11-25 against public sources (none of this was run on Vega):
#   - GPU partition: 60 nodes, 2 CPUs x 64 cores, 240 GPUs (4 per node); GPU login nodes:
#     doc.vega.izum.si/shares/.
# Unverified: every module name below (EasyBuild's 2023a names), an hwloc module (EasyBuild's
#   OpenMPI loads hwloc as a dependency).

# shellcheck source=fm-site.sh
. "$(dirname "${BASH_SOURCE[0]}")/fm-site.sh" || return 1
fm_site_begin vega-gpu || return 1
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

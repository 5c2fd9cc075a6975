# shellcheck shell=bash
# leonardo-booster.sh — the modules that build fmtrain on Leonardo Booster (CINECA, Italy).
#   4x NVIDIA A100 64 GB per node, 1x Intel Xeon Platinum 8358 (32 cores, 2 sub-NUMA domains)
# Build on a login node (CINECA allows compiling there):
#   modules/sites/build.sh leonardo-booster          (or `source` this file, then cmake: docs/onboarding.md)
# A module that does not load is named, with the `module spider` command that finds its current name.
# Versions are named only where the variant matters: the CUDA-aware Open MPI and the parallel HDF5
# built with it (their names carry the compiler and MPI, Spack style); the rest is the site default.
#
# Verified 2026-11-25 against public sources (none of this was run on Leonardo):
#   - gcc/12.2.0, cuda/12.2 (default; 12.3 and 12.6 also listed), openmpi/4.1.6--gcc--12.2.0-cuda-12.2
#     (default), hdf5/1.14.3--openmpi--4.1.6--gcc--12.2.0-spack0.22 (default),
#     openblas/0.3.26--gcc--12.2.0 (default), cmake/3.27.9 (default), and the module system
#     (Environment Modules: "Loading requirement:", "Key: (symbolic-version)"): a Leonardo Booster
#     `module avail` capture in a public EuroHPC training course ("Software installation on HPC
#     systems"), and users' Leonardo job scripts on GitHub (DomenicoZaza/CONVFLOW postcom.leo.sh,
#     computationalrelativity/batchtools templates/athenak/leonardo-booster/environment.sh).
#   - Open MPI is the Booster's CUDA-aware MPI: CINECA "Booster Section"
#     (wiki.u-gov.it/confluence/display/SCAIUS/Booster+Section, last modified 2025-03-20).
# Unverified: an hwloc module (none in the capture; CMake then looks for the system's hwloc >= 2,
#   and says so if there is none: install one with the site's `spack` module).

# shellcheck source=fm-site.sh
. "$(dirname "${BASH_SOURCE[0]}")/fm-site.sh" || return 1
fm_site_begin leonardo-booster || return 1
module purge
fm_site_load gcc/12.2.0 gcc
fm_site_load cuda
fm_site_load openmpi/4.1.6--gcc--12.2.0-cuda-12.2
fm_site_load hdf5/1.14.3--openmpi--4.1.6--gcc--12.2.0-spack0.22
fm_site_load openblas/0.3.26--gcc--12.2.0 openblas
fm_site_try hwloc
fm_site_load cmake
fm_site_end || return 1

# Extra CMake arguments for this system (A100: compute capability 8.0).
FM_SITE_CMAKE_ARGS="-DFMTRAIN_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=80"
export FM_SITE_CMAKE_ARGS

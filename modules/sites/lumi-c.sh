# shellcheck shell=bash
# lumi-c.sh — the modules that build fmtrain on LUMI-C (CSC, Finland).
#   2x AMD EPYC 7763 (128 cores, 8 NUMA domains with NPS4, SMT on) per node
# Source it on a login node, then configure, build and install:
#   source modules/sites/lumi-c.sh
#   cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$HOME/fmtrain/install" $FM_SITE_CMAKE_ARGS
#   cmake --build build -j 8 && cmake --install build
# `cmake --install` writes an Lmod modulefile that loads these same modules again (LOADEDMODULES at
# configure time), so batch scripts need only `module use "$HOME/fmtrain/install/share/modulefiles"`
# and `module load fmtrain`.
#
# What is verified: Checked with this session's search tool (a third-party LUMI guide): the `module load LUMI/<version> partition/<C|G>` pattern. Partition standard (whole nodes; small for partial nodes), the NUMA layout and the Cray module names: as recalled from the site's public user documentation (2024-2025), not fetched or run in this session; unverified here.
# Module versions change with the site's software stack: when a `module load` below fails, take the
# nearest version `module avail <name>` (or `module spider <name>`) lists, and keep MPI, parallel HDF5
# and the compiler from the same toolchain.
# On Cray systems compile with the `cc` wrapper (it adds MPI, HDF5 and LibSci). hwloc: use the system's libhwloc (or load it from the LUMI stack, e.g. via EasyBuild) if pkg-config does not find hwloc >= 2. LUMI-G is AMD MI250X and is not supported by the CUDA backend.

module purge
module load LUMI/24.03 partition/C
module load PrgEnv-gnu
module load cray-mpich
module load cray-hdf5-parallel
module load cray-libsci
module load buildtools

# Extra CMake arguments for this system.
FM_SITE_CMAKE_ARGS="-DFMTRAIN_CUDA=OFF -DBLA_VENDOR=All -DCMAKE_C_COMPILER=cc"
export FM_SITE_CMAKE_ARGS

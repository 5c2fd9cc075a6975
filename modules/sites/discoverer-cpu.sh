# shellcheck shell=bash
# discoverer-cpu.sh — the modules that build fmtrain on Discoverer CPU partition (Sofia Tech Park, Bulgaria).
#   2x AMD EPYC 7H12 (128 cores, 8 NUMA domains with NPS4) per node
# Source it on a login node, then configure, build and install:
#   source modules/sites/discoverer-cpu.sh
#   cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$HOME/fmtrain/install" $FM_SITE_CMAKE_ARGS
#   cmake --build build -j 8 && cmake --install build
# `cmake --install` writes an Lmod modulefile that loads these same modules again (LOADEDMODULES at
# configure time), so batch scripts need only `module use "$HOME/fmtrain/install/share/modulefiles"`
# and `module load fmtrain`.
#
# What is verified: Nothing verified here. Partition cn, the per-project QoS, NUMA layout and module names: as recalled from the site's public user documentation (2024-2025), not fetched or run in this session; unverified here.
# Module versions change with the site's software stack: when a `module load` below fails, take the
# nearest version `module avail <name>` (or `module spider <name>`) lists, and keep MPI, parallel HDF5
# and the compiler from the same toolchain.
# Discoverer names its modules by family and toolchain (openmpi/4/gcc/...): `module avail openmpi hdf5` lists them.

module purge
module load gcc/latest
module load openmpi/4/gcc/latest
module load hdf5/1/latest-gcc-openmpi
module load openblas/latest-gcc
module load hwloc/latest
module load cmake/latest

# Extra CMake arguments for this system.
FM_SITE_CMAKE_ARGS="-DFMTRAIN_CUDA=OFF"
export FM_SITE_CMAKE_ARGS

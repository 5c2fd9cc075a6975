# shellcheck shell=bash
# marenostrum5-acc.sh — the modules that build fmtrain on MareNostrum 5 ACC (BSC, Spain).
#   4x NVIDIA H100 64 GB per node, 2x Intel Xeon 8460Y+ (80 cores)
# Source it on a login node, then configure, build and install:
#   source modules/sites/marenostrum5-acc.sh
#   cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$HOME/fmtrain/install" $FM_SITE_CMAKE_ARGS
#   cmake --build build -j 8 && cmake --install build
# `cmake --install` writes an Lmod modulefile that loads these same modules again (LOADEDMODULES at
# configure time), so batch scripts need only `module use "$HOME/fmtrain/install/share/modulefiles"`
# and `module load fmtrain`.
#
# What is verified: Nothing verified here. The QoS-based selection (acc_ehpc for EuroHPC projects, acc_bscls etc. for others; no --partition), node layout and module names: as recalled from the site's public user documentation (2024-2025), not fetched or run in this session; unverified here.
# Module versions change with the site's software stack: when a `module load` below fails, take the
# nearest version `module avail <name>` (or `module spider <name>`) lists, and keep MPI, parallel HDF5
# and the compiler from the same toolchain.
# MareNostrum 5 selects the node type with --qos (acc_*) rather than --partition; the login nodes have no internet access.

module purge
module load gcc/12.3.0
module load openmpi/4.1.5-gcc
module load hdf5/1.14.1-gcc-openmpi
module load cuda/12.2
module load openblas
module load hwloc
module load cmake

# Extra CMake arguments for this system.
FM_SITE_CMAKE_ARGS="-DFMTRAIN_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90"
export FM_SITE_CMAKE_ARGS

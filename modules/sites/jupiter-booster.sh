# shellcheck shell=bash
# jupiter-booster.sh — the modules that build fmtrain on JUPITER Booster (JSC, Germany).
#   4x NVIDIA GH200 per node (4x Grace, 72 Arm Neoverse V2 cores each, aarch64)
# Source it on a login node, then configure, build and install:
#   source modules/sites/jupiter-booster.sh
#   cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$HOME/fmtrain/install" $FM_SITE_CMAKE_ARGS
#   cmake --build build -j 8 && cmake --install build
# `cmake --install` writes an Lmod modulefile that loads these same modules again (LOADEDMODULES at
# configure time), so batch scripts need only `module use "$HOME/fmtrain/install/share/modulefiles"`
# and `module load fmtrain`.
#
# What is verified: Checked with this session's search tool (apps.fz-juelich.de/jsc/hps/jupiter/batchsystem.html): JUPITER runs Slurm with psslurm on the compute nodes. The partition name, node layout and module names: as recalled from the site's public user documentation (2024-2025), not fetched or run in this session; unverified here.
# Module versions change with the site's software stack: when a `module load` below fails, take the
# nearest version `module avail <name>` (or `module spider <name>`) lists, and keep MPI, parallel HDF5
# and the compiler from the same toolchain.
# aarch64: build fmtrain on an aarch64 (Grace) login or compute node; an x86 build does not run here. Each GH200 superchip is one NUMA domain for its Grace CPU, so one rank per GPU with 72 cores each matches the hardware.

module purge
module load Stages/2025
module load GCC
module load OpenMPI
module load HDF5
module load CUDA
module load OpenBLAS
module load hwloc
module load CMake

# Extra CMake arguments for this system.
FM_SITE_CMAKE_ARGS="-DFMTRAIN_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DFMTRAIN_NATIVE=ON"
export FM_SITE_CMAKE_ARGS

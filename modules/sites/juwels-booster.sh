# shellcheck shell=bash
# juwels-booster.sh — the modules that build fmtrain on JUWELS Booster (JSC, Germany).
#   4x NVIDIA A100 40 GB per node, 2x AMD EPYC 7402 (48 cores)
# Source it on a login node, then configure, build and install:
#   source modules/sites/juwels-booster.sh
#   cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$HOME/fmtrain/install" $FM_SITE_CMAKE_ARGS
#   cmake --build build -j 8 && cmake --install build
# `cmake --install` writes an Lmod modulefile that loads these same modules again (LOADEDMODULES at
# configure time), so batch scripts need only `module use "$HOME/fmtrain/install/share/modulefiles"`
# and `module load fmtrain`.
#
# What is verified: Checked with this session's search tool (apps.fz-juelich.de/jsc/hps/juwels/batchsystem.html): JUWELS runs Slurm with psslurm (ParaStation) on the compute nodes. Partition names booster/develbooster, the node layout and the Stages module names: as recalled from the site's public user documentation (2024-2025), not fetched or run in this session; unverified here.
# Module versions change with the site's software stack: when a `module load` below fails, take the
# nearest version `module avail <name>` (or `module spider <name>`) lists, and keep MPI, parallel HDF5
# and the compiler from the same toolchain.
# Use --partition=develbooster for short tests. JSC's stacks are hierarchical (Stages -> compiler -> MPI): load them in this order. --cpus-per-task below counts physical cores (SMT threads are not used).

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
FM_SITE_CMAKE_ARGS="-DFMTRAIN_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=80"
export FM_SITE_CMAKE_ARGS

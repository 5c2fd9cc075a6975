# shellcheck shell=bash
# karolina-gpu.sh — the modules that build fmtrain on Karolina accelerated nodes (IT4I, Czech Republic).
#   8x NVIDIA A100 40 GB per node, 2x AMD EPYC 7763 (128 cores)
# Source it on a login node, then configure, build and install:
#   source modules/sites/karolina-gpu.sh
#   cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$HOME/fmtrain/install" $FM_SITE_CMAKE_ARGS
#   cmake --build build -j 8 && cmake --install build
# `cmake --install` writes an Lmod modulefile that loads these same modules again (LOADEDMODULES at
# configure time), so batch scripts need only `module use "$HOME/fmtrain/install/share/modulefiles"`
# and `module load fmtrain`.
#
# What is verified: Nothing verified here. Partition qgpu (qcpu for the CPU nodes), 8 GPUs per node, the account format (OPEN-xx-yy, DD-xx-yy) and module names: as recalled from the site's public user documentation (2024-2025), not fetched or run in this session; unverified here.
# Module versions change with the site's software stack: when a `module load` below fails, take the
# nearest version `module avail <name>` (or `module spider <name>`) lists, and keep MPI, parallel HDF5
# and the compiler from the same toolchain.
# Karolina's CPU nodes (qcpu, 2x AMD EPYC 7H12, 128 cores) take generic/cpu.sbatch with 8 ranks x 16 cores if the nodes run NPS4 (check `lscpu | grep NUMA`).

module purge
module load GCC/12.2.0
module load OpenMPI/4.1.4-GCC-12.2.0
module load HDF5/1.14.0-gompi-2022b
module load CUDA/12.2.0
module load OpenBLAS/0.3.21-GCC-12.2.0
module load hwloc/2.8.0-GCCcore-12.2.0
module load CMake/3.24.3-GCCcore-12.2.0

# Extra CMake arguments for this system.
FM_SITE_CMAKE_ARGS="-DFMTRAIN_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=80"
export FM_SITE_CMAKE_ARGS

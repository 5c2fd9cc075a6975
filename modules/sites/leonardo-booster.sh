# shellcheck shell=bash
# leonardo-booster.sh — the modules that build fmtrain on Leonardo Booster (CINECA, Italy).
#   4x NVIDIA A100 64 GB per node, 1x Intel Xeon 8358 (32 cores)
# Source it on a login node, then configure, build and install:
#   source modules/sites/leonardo-booster.sh
#   cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$HOME/fmtrain/install" $FM_SITE_CMAKE_ARGS
#   cmake --build build -j 8 && cmake --install build
# `cmake --install` writes an Lmod modulefile that loads these same modules again (LOADEDMODULES at
# configure time), so batch scripts need only `module use "$HOME/fmtrain/install/share/modulefiles"`
# and `module load fmtrain`.
#
# What is verified: Checked with this session's search tool (docs.hpc.cineca.it/hpc/leonardo.html): the Booster partition's nodes have 4x A100-64 and 32 cores. Partition name boost_usr_prod, QoS and module names: as recalled from the site's public user documentation (2024-2025), not fetched or run in this session; unverified here.
# Module versions change with the site's software stack: when a `module load` below fails, take the
# nearest version `module avail <name>` (or `module spider <name>`) lists, and keep MPI, parallel HDF5
# and the compiler from the same toolchain.
# Leonardo's module names carry the compiler and MPI (Spack naming): `module avail openmpi hdf5` lists them.

module purge
module load gcc/12.2.0
module load openmpi/4.1.6--gcc--12.2.0
module load hdf5/1.14.3--openmpi--4.1.6--gcc--12.2.0
module load cuda/12.1
module load openblas/0.3.24--gcc--12.2.0
module load hwloc/2.9.1--gcc--12.2.0
module load cmake

# Extra CMake arguments for this system.
FM_SITE_CMAKE_ARGS="-DFMTRAIN_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=80"
export FM_SITE_CMAKE_ARGS

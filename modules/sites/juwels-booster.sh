# shellcheck shell=bash
# juwels-booster.sh — the modules that build fmtrain on JUWELS Booster (JSC, Germany).
#   4x NVIDIA A100 40 GB per node, 2x AMD EPYC 7402 (48 cores)
# Build on a JUWELS Booster login node:
#   modules/sites/build.sh juwels-booster            (or `source` this file, then cmake: docs/onboarding.md)
# A module that does not load is named, with the `module spider` command that finds its current name.
# JSC's stacks are hierarchical (Stages -> compiler -> MPI): the names below are unversioned and
# resolve inside the default Stage; pin one (module load Stages/<year>) for a reproducible build.
# `module purge` keeps the sticky Stages module.
#
# Verified 2026-11-25 against public sources (none of this was run on JUWELS):
#   - GCC, OpenMPI, CUDA, HDF5, CMake (unversioned, on JUWELS Booster): HiPACE++ documentation,
#     "Juwels Booster @ JSC" profile;
#   - Slurm with psslurm: apps.fz-juelich.de/jsc/hps/juwels/batchsystem.html.
# Unverified: OpenBLAS and hwloc module names in the current Stage.

# shellcheck source=fm-site.sh
. "$(dirname "${BASH_SOURCE[0]}")/fm-site.sh" || return 1
fm_site_begin juwels-booster || return 1
module purge
fm_site_load Stages
fm_site_load GCC
fm_site_load OpenMPI
fm_site_load HDF5
fm_site_load CUDA
fm_site_load OpenBLAS
fm_site_try hwloc
fm_site_load CMake
fm_site_end || return 1

# Extra CMake arguments for this system (A100: compute capability 8.0).
FM_SITE_CMAKE_ARGS="-DFMTRAIN_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=80"
export FM_SITE_CMAKE_ARGS

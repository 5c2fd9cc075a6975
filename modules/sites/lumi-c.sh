# shellcheck shell=bash
# lumi-c.sh — the modules that build fmtrain on LUMI-C (CSC, Finland).
#   2x AMD EPYC 7763 (128 cores, 8 NUMA domains with NPS4, SMT on) per node
# Build on a login node:
#   modules/sites/build.sh lumi-c                    (or `source` this file, then cmake: docs/onboarding.md)
# A module that does not load is named, with the `module spider` command that finds its current name.
# On Cray systems compile with the `cc` wrapper (it adds MPI, HDF5 and LibSci). `LUMI` loads the
# default software stack; pin one (LUMI/25.03) for a reproducible build. LUMI-G is AMD MI250X and is
# not supported by the CUDA backend.
#
# Verified 2026-11-25 against public sources (none of this was run on LUMI):
#   - `module load LUMI/<version> partition/C PrgEnv-gnu` then `cc` (LUMI/25.03 in a 2025 EuroHPC
#     training course's LUMI example; LUMI/24.03 earlier) and cray-hdf5-parallel: course material
#     and users' LUMI scripts on GitHub.
# Unverified: cray-mpich/cray-libsci as separate loads (PrgEnv-gnu normally loads them), buildtools
#   as the CMake provider, an hwloc module (use the system's libhwloc if pkg-config finds hwloc >= 2).

# shellcheck source=fm-site.sh
. "$(dirname "${BASH_SOURCE[0]}")/fm-site.sh" || return 1
fm_site_begin lumi-c || return 1
module purge
fm_site_load LUMI
fm_site_load partition/C
fm_site_load PrgEnv-gnu
fm_site_load cray-mpich
fm_site_load cray-hdf5-parallel
fm_site_load cray-libsci
fm_site_try hwloc
fm_site_load buildtools
fm_site_end || return 1

# Extra CMake arguments for this system.
FM_SITE_CMAKE_ARGS="-DFMTRAIN_CUDA=OFF -DBLA_VENDOR=All -DCMAKE_C_COMPILER=cc"
export FM_SITE_CMAKE_ARGS

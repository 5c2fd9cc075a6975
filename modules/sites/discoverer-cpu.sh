# shellcheck shell=bash
# discoverer-cpu.sh — the modules that build fmtrain on Discoverer CPU partition (Sofia Tech Park, Bulgaria).
#   2x AMD EPYC 7H12 (128 cores, 8 NUMA domains with NPS4) per node
# Build on a login node:
#   modules/sites/build.sh discoverer-cpu            (or `source` this file, then cmake: docs/onboarding.md)
# A module that does not load is named, with the `module spider` command that finds its current name.
# Discoverer's module names are paths by family and toolchain (gcc/11/11.1.0,
# hdf5/1/1.14/1.14.0-gcc-openmpi); `latest` exists for some families (openmpi/4/gcc/latest,
# openblas/latest-gcc) but not as gcc/latest, hdf5/1/latest-gcc-openmpi, hwloc/latest or cmake/latest.
#
# Verified 2026-11-25 against public sources (none of this was run on Discoverer):
#   - hdf5/1/1.14/1.14.0-gcc-openmpi with partition cn and srun: a Discoverer user's job script on
#     GitHub (AFiD-MuRPhFi run, 8 nodes x 128 tasks);
#   - gcc/11/11.1.0 and openmpi/4/gcc/4.1.1, gcc/10/10.2.0 and openmpi/4/gcc/4.1.5: Discoverer users'
#     scripts on GitHub (Basilisk install script; an ehpc-reg project job script);
#   - openmpi/4/gcc/latest, openblas/latest-gcc, cmake (unversioned): a GROMACS build tutorial for
#     Discoverer and ReFrame configurations for discoverer:cn on GitHub.
# Unverified: which gcc openmpi/4/gcc/latest was built with (gcc/11/11.1.0 is loaded first; the
#   site default when that one is gone), an hwloc module name, and which module system runs there
#   (a ReFrame configuration sources /etc/profile.d/modules.sh, which both Lmod and Environment
#   Modules install; fmtrain's installed modulefiles serve either).

# shellcheck source=fm-site.sh
. "$(dirname "${BASH_SOURCE[0]}")/fm-site.sh" || return 1
fm_site_begin discoverer-cpu || return 1
module purge
fm_site_load gcc/11/11.1.0 gcc
fm_site_load openmpi/4/gcc/latest
fm_site_load hdf5/1/1.14/1.14.0-gcc-openmpi
fm_site_load openblas/latest-gcc
fm_site_try hwloc
fm_site_load cmake
fm_site_end || return 1

# Extra CMake arguments for this system.
FM_SITE_CMAKE_ARGS="-DFMTRAIN_CUDA=OFF"
export FM_SITE_CMAKE_ARGS

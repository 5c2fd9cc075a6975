# shellcheck shell=bash
# meluxina-gpu.sh — the modules that build fmtrain on MeluXina GPU (LuxProvide, Luxembourg).
#   4x NVIDIA A100 40 GB per node, 2x AMD EPYC 7452 (64 cores)
# MeluXina's login nodes have no user software environment (no `module` there): build INSIDE a job.
# From a login node, in the source tree:
#   srun -A YOURPROJECT -p gpu -q default -N 1 -t 01:00:00 --hint=nomultithread modules/sites/build.sh meluxina-gpu
# or interactively: salloc -A YOURPROJECT --res gpudev -q dev -N 1 -t 01:00:00, then the same
# modules/sites/build.sh meluxina-gpu on the node. Outside a job this file stops and prints that line.
# The one pin is the EasyBuild toolchain generation (foss/2023a and the HDF5 built with it):
# unversioned EasyBuild names may resolve to different toolchains.
#
# Verified 2026-11-25 against public sources (none of this was run on MeluXina):
#   - login nodes without the software environment; compilation on compute nodes; salloc/srun/sbatch
#     with -A and -q always; `--res gpudev -q dev` for interactive development; full-node jobs;
#     Lmod + EasyBuild; env/release and env/staging stack modules: MeluXina quick start and
#     software-environment pages (docs.lxp.lu/first-steps/quick_start/, .../software_env/, as
#     copied in steve3535/crawl4ai_docs lxp_docs/ on GitHub).
#   - `salloc -A PROJECT -p gpu --qos default -N 1 -t 1:00:00` then `module load env/release/...`:
#     users' MeluXina READMEs and course material on GitHub.
#   - env/release/2023.1 goes with GCCcore-12.3.0 (foss/2023a): a MeluXina user's script
#     (Apptainer/1.2.4-GCCcore-12.3.0 under env/release/2023.1).
# Unverified: HDF5/1.14.0-gompi-2023a and foss/2023a on MeluXina (EasyBuild's 2023a names),
#   the CUDA and CMake defaults.

# shellcheck source=fm-site.sh
. "$(dirname "${BASH_SOURCE[0]}")/fm-site.sh" || return 1
fm_site_begin meluxina-gpu --in-job \
  "srun -A YOURPROJECT -p gpu -q default -N 1 -t 01:00:00 --hint=nomultithread modules/sites/build.sh meluxina-gpu" ||
  return 1
module purge
fm_site_load env/release/2023.1
fm_site_load foss/2023a
fm_site_load HDF5/1.14.0-gompi-2023a
fm_site_load CUDA
fm_site_try hwloc
fm_site_load CMake
fm_site_end || return 1

# Extra CMake arguments for this system (A100: compute capability 8.0).
FM_SITE_CMAKE_ARGS="-DFMTRAIN_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=80"
export FM_SITE_CMAKE_ARGS

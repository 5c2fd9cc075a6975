#!/usr/bin/env bash
# setup-debian.sh — installs the Debian packages that stand for the module stack a supercomputer
# provides (MPI, parallel HDF5, hwloc, BLAS, CMake), plus what the tests and examples use.
#
#   modules/setup-debian.sh            build + test packages (what tests/run.sh needs)
#   modules/setup-debian.sh --build    only what building fmtrain needs
#   modules/setup-debian.sh --list     print the package names and exit (--list-build, --list-test:
#                                      only the build or the test packages)
#
# Installs only what is missing; needs root (or sudo) when something is missing.
set -euo pipefail

build_pkgs=(build-essential cmake pkg-config
            openmpi-bin libopenmpi-dev          # module load openmpi
            libhdf5-openmpi-dev hdf5-tools      # module load hdf5/parallel
            libhwloc-dev hwloc                  # module load hwloc
            libopenblas-dev                     # module load openblas (or the vendor BLAS)
            libdnnl-dev)                        # module load oneDNN: the CPU matmuls, fp32 and bf16
test_pkgs=(libcmocka-dev                        # unit tests
           python3-torch python3-h5py python3-numpy  # PyTorch reference comparison
           python3-pip                          # tests/reference/install_transformers.sh (HF comparison, --target)
           bible-kjv                            # the King James corpus for examples and tests
           clang libclang-rt-dev                # libFuzzer harnesses (the fuzzer runtime is only a Recommends of clang)
           shellcheck gnuplot-nox
           slurmctld slurmd slurm-client munge  # tests/slurm: a one-node Slurm cluster on localhost
           lmod                                 # tests/lmod: the installed modulefiles, loaded for real
           debootstrap)                         # tests/fresh-root: the quickstart on a bare Debian root

mode=${1:-all}
case "$mode" in
  --build) pkgs=("${build_pkgs[@]}") ;;
  all|--all) pkgs=("${build_pkgs[@]}" "${test_pkgs[@]}") ;;
  --list) printf '%s\n' "${build_pkgs[@]}" "${test_pkgs[@]}"; exit 0 ;;
  --list-build) printf '%s\n' "${build_pkgs[@]}"; exit 0 ;;
  --list-test) printf '%s\n' "${test_pkgs[@]}"; exit 0 ;;
  -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
  *) echo "setup-debian.sh: unknown option '$mode' (use --build, --all or --list)" >&2; exit 2 ;;
esac

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup-debian.sh: all ${#pkgs[@]} packages present"
  exit 0
fi
echo "setup-debian.sh: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup-debian.sh: need root or sudo to install ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# With recommends: that is how this list was tested (e.g. Open MPI recommends the ssh client its
# launcher looks for, clang recommends its sanitizer and fuzzer runtimes).
$SUDO apt-get install -y -q "${missing[@]}"

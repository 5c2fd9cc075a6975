# shellcheck shell=bash
# debian.sh — a generic Debian or Ubuntu system (a workstation, a lab server, a small cluster whose
# nodes share one Debian/Ubuntu installation): its "modules" are the distribution's packages.
# Build and install:
#   modules/sites/build.sh debian                    (or `source` this file, then cmake: docs/onboarding.md)
# Loads no module (there usually is no module system; a loaded one is left as it is) and instead
# checks that the build packages of modules/setup-debian.sh --build are installed and that CMake is
# at least 3.24. When something is missing it names the packages and the command that installs them
# (`sudo modules/setup-debian.sh --build`, or the apt-get line) and returns 1.
#
# Tested on Debian 12 (bookworm: CMake 3.25), also in a fresh root by tests/fresh-root. Ubuntu 24.04 has
# the same package names and CMake 3.28. Ubuntu 22.04 and Debian 11 ship CMake 3.22 and 3.18: install a
# newer one (Debian 11: bullseye-backports; either: `pip install --user cmake`, or Kitware's APT
# repository) and this file accepts it when it comes first on PATH.
# Batch jobs: srun needs the MPI plugin of Debian's Open MPI (pmix); generic/cpu.sbatch picks it
# itself. Without a module system (`apt-get install lmod` provides one) set FMTRAIN_EXE in the job
# script to the installed fmtrain instead of loading the module.

fm_debian_site() {
  local setup pkgs=() missing=() p v
  setup="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/setup-debian.sh"
  FM_SITE_MISSING=()
  if ! command -v dpkg-query >/dev/null 2>&1; then
    printf 'fmtrain (debian): this is not a Debian or Ubuntu system (no dpkg-query); pick the\n' >&2
    printf '  file for your site in modules/sites/, or load the build modules by hand (docs/onboarding.md).\n' >&2
    FM_SITE_MISSING+=("(dpkg)")
    return 1
  fi
  mapfile -t pkgs < <(bash "$setup" --list-build)
  if [ "${#pkgs[@]}" -eq 0 ]; then
    printf 'fmtrain (debian): %s --list-build printed no packages\n' "$setup" >&2
    return 1
  fi
  v=$(cmake --version 2>/dev/null | sed -n '1s/^cmake version \([0-9][0-9.]*\).*/\1/p')
  for p in "${pkgs[@]}"; do
    # a CMake on PATH that is new enough (pip, Kitware) stands in for the package
    if [ "$p" = cmake ] && [ -n "$v" ]; then continue; fi
    # shellcheck disable=SC2016 # ${Status} is dpkg-query's field
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    FM_SITE_MISSING+=("${missing[@]}")
    printf 'fmtrain (debian): packages not installed: %s\n' "${missing[*]}" >&2
    printf '  Install them with\n    sudo %s --build\n  (or: sudo apt-get install %s)\n' "$setup" "${missing[*]}" >&2
  fi
  if [ -n "$v" ] && [ "$(printf '%s\n3.24\n' "$v" | sort -V | head -n 1)" != 3.24 ]; then
    FM_SITE_MISSING+=("cmake>=3.24")
    printf 'fmtrain (debian): CMake %s is older than 3.24, which fmtrain needs. Install a newer one\n' "$v" >&2
    printf '  (Debian 11: bullseye-backports; anywhere: pip install --user cmake, or Kitware'"'"'s APT\n' >&2
    printf '  repository) and put it first on PATH.\n' >&2
  fi
  if [ "${#FM_SITE_MISSING[@]}" -gt 0 ]; then
    printf 'fmtrain (debian): not ready to build: missing %s\n' "${FM_SITE_MISSING[*]}" >&2
    return 1
  fi
  printf 'fmtrain (debian): the %s build packages are installed; CMake %s\n' "${#pkgs[@]}" "$v" >&2
  return 0
}
fm_debian_site || return 1

# Extra CMake arguments for this system: Debian's OpenBLAS; the CUDA backend when nvcc is found.
FM_SITE_CMAKE_ARGS="-DBLA_VENDOR=OpenBLAS -DFMTRAIN_CUDA=AUTO"
export FM_SITE_CMAKE_ARGS

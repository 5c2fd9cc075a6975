# shellcheck shell=bash
# fm-site.sh — the helpers every modules/sites/<site>.sh uses to load its modules. Sourced by those
# files (not on its own); works with Lmod and with Environment Modules (Tcl), and needs only the
# `module` command and LOADEDMODULES, which both maintain.
#
#   fm_site_begin SITE [--in-job HINT]
#        starts SITE's module list. --in-job: the site's software environment exists only inside a
#        job (MeluXina): outside one (no SLURM_JOB_ID) stop at once and print HINT, the salloc/srun
#        line that runs the build on a compute node.
#   fm_site_load NAME [OTHER_NAME...]
#        `module load` the first of the names that loads. A name carries a version only where the
#        site's choice must be pinned (a variant: the CUDA-aware Open MPI, the parallel HDF5 built
#        with it); otherwise the site's default version is loaded. When none of the names loads,
#        says which module is missing and how to find its current name (`module spider NAME`),
#        and the list fails at fm_site_end.
#   fm_site_try NAME [OTHER_NAME...]
#        the same for a module the build can do without (the system may provide the library):
#        a note, not a failure.
#   fm_site_end
#        returns 1 when a required module did not load (the site file then returns 1 itself).
# A site file reads:
#   . "$(dirname "${BASH_SOURCE[0]}")/fm-site.sh" || return 1
#   fm_site_begin SITE || return 1
#   module purge
#   fm_site_load ...; fm_site_try ...
#   fm_site_end || return 1
#   FM_SITE_CMAKE_ARGS="..."; export FM_SITE_CMAKE_ARGS
#
# A load counts only when `module load` succeeds AND the module then appears in LOADEDMODULES
# (some module versions return 0 after an error).

fm_site_begin() {
  FM_SITE=$1
  FM_SITE_MISSING=()
  shift
  if [ "${1:-}" = --in-job ] && [ -z "${SLURM_JOB_ID:-}" ]; then
    printf 'fmtrain (%s): the software environment exists only on compute nodes here, so the\n' "$FM_SITE" >&2
    printf '  build must run inside a job. From a login node:\n    %s\n' "$2" >&2
    FM_SITE_MISSING+=("(a compute node)")
    return 1
  fi
  if ! type module >/dev/null 2>&1; then
    printf 'fmtrain (%s): there is no "module" command in this shell (log in again, or run\n' "$FM_SITE" >&2
    printf '  "source /etc/profile"; on some systems it exists only on compute nodes).\n' >&2
    FM_SITE_MISSING+=("(the module command)")
    return 1
  fi
  return 0
}

# True when module $1 (exactly, or any version of it when $1 names none) is in LOADEDMODULES.
fm_site_loaded() {
  case ":${LOADEDMODULES:-}:" in
    *":$1:"* | *":$1/"*) return 0 ;;
  esac
  return 1
}

# Loads the first of "$@" that loads; prints nothing on success. Returns 1 when none did.
fm_site_load_any() {
  local name err rc
  err=$(mktemp "${TMPDIR:-/tmp}/fm-site.XXXXXX") || return 1
  for name in "$@"; do
    rc=0
    module load "$name" 2>"$err" || rc=$?
    if [ "$rc" -eq 0 ] && fm_site_loaded "$name"; then
      rm -f "$err"
      return 0
    fi
  done
  sed 's/^/    | /' "$err" >&2
  rm -f "$err"
  return 1
}

fm_site_spider_hint() {
  local name stems="" n
  for name in "$@"; do
    n=${name%%/*}
    case " $stems " in *" $n "*) ;; *) stems="$stems $n" ;; esac
  done
  for n in $stems; do
    printf '    module spider %s      (Environment Modules: module avail %s)\n' "$n" "$n" >&2
  done
}

fm_site_load() {
  fm_site_load_any "$@" && return 0
  FM_SITE_MISSING+=("$1")
  printf 'fmtrain (%s): module %s did not load (tried: %s).\n' "$FM_SITE" "$1" "$*" >&2
  printf '  Find its current name with\n' >&2
  fm_site_spider_hint "$@"
  printf '  and correct the name in modules/sites/%s.sh.\n' "$FM_SITE" >&2
  return 1
}

fm_site_try() {
  fm_site_load_any "$@" 2>/dev/null && return 0
  printf 'fmtrain (%s): note: optional module %s is not available (tried: %s); the build uses\n' \
    "$FM_SITE" "$1" "$*" >&2
  printf '  the system library if CMake finds one. To look for it:\n' >&2
  fm_site_spider_hint "$@"
  return 0
}

fm_site_end() {
  if [ "${#FM_SITE_MISSING[@]}" -gt 0 ]; then
    printf 'fmtrain (%s): not ready to build: missing %s\n' "$FM_SITE" "${FM_SITE_MISSING[*]}" >&2
    return 1
  fi
  printf 'fmtrain (%s): modules loaded: %s\n' "$FM_SITE" "${LOADEDMODULES:-}" >&2
  return 0
}

#!/usr/bin/env bash
# test_stubs.sh — every site file of modules/sites/ and jobscripts/sites/ run on this machine against
# stubs: a fake `module` command (a bash function, exported as Lmod's is) that records what was asked
# and keeps LOADEDMODULES, and can be told to fail for chosen modules (FAKE_MODULE_FAIL, a regular
# expression: an error and status 1 as Lmod gives; FAKE_MODULE_SILENT: status 0 but nothing loaded);
# a fake `sbatch` that reads a script's #SBATCH lines, exports the SLURM_* variables a job would see
# and runs the script under `bash -u`; a fake `srun` that records its arguments; a fake `cmake`.
#
#  1. modules/sites/<site>.sh, sourced under `bash -u`: loads its modules (the names issue 20 found
#     wrong are gone, the corrected ones asked for), sets FM_SITE_CMAKE_ARGS; when a required
#     module is missing (loudly or silently) it fails naming the module and the `module spider`
#     command that finds its current name; an alternative name is taken when the first is gone;
#     MeluXina refuses to build outside a job and prints the srun line.
#  2. modules/sites/build.sh: configures, builds and installs with the site's CMake arguments
#     (fake cmake); stops before cmake when a module is missing or outside a job on MeluXina.
#  3. jobscripts/sites/<site>.sbatch through the fake sbatch: its partition/QoS/GPU directives, the
#     installed modulefile loaded, srun given the site's launcher flag (--mpi=pspmix on JSC,
#     --mpi=pmix_v3 on Vega, none elsewhere) and binding, then fmtrain; a failed `module load
#     fmtrain` stops the job with a message; Karolina's --gpus must be 8 per node.
#  4. modules/sites/debian.sh (a generic Debian/Ubuntu system: packages, not modules) against a fake
#     dpkg-query and cmake: ready when the build packages are there, otherwise names the missing ones
#     and setup-debian.sh --build; refuses CMake < 3.24; build.sh debian configures with its arguments.
#  5. jobscripts/generic/cpu.sbatch and gpu.sbatch: module use/load fmtrain (a failure, or no module
#     command, stops the job with a message), FMTRAIN_EXE instead of the module; and the srun MPI
#     plugin that fmtrain-job.sh chooses from `fmtrain --version`'s MPI library, `srun --mpi=list` and
#     MpiDefault (fake fmtrain, srun and scontrol), or that FM_SRUN_MPI / SLURM_MPI_TYPE / a site's
#     FM_SRUN_ARGS choose.
# A site file with a syntax error, an unset variable or a missing launcher flag fails here.
set -uo pipefail
src=${FMTRAIN_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
passes=0
ok() { passes=$((passes + 1)); }
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }
check() { # description, command...
  local what=$1
  shift
  if "$@"; then ok; else bad "$what"; fi
}
has() { grep -qF -- "$2" "$1"; }    # file, fixed string
hasx() { grep -qxF -- "$2" "$1"; }  # file, whole line

# Nothing of an outer job or of the test environment may leak in.
while IFS='=' read -r name _; do
  case "$name" in SLURM_* | SBATCH_* | SRUN_*) unset "$name" ;; esac
done < <(env)
unset FMTRAIN_EXE FMTRAIN_JOBSCRIPTS FMTRAIN_PREFIX LOADEDMODULES MODULEPATH FAKE_MODULE_FAIL FAKE_MODULE_SILENT \
  FM_SRUN_MPI FAKE_MPI_LIB FAKE_MPI_DEFAULT FAKE_SRUN_MPI_LIST FAKE_CMAKE_VERSION FAKE_DPKG_MISSING

# ---- stubs ---------------------------------------------------------------------------------------
stub=$tmp/bin
mkdir -p "$stub" "$tmp/prefix/bin" "$tmp/log"
export FAKE_LOG=$tmp/log FAKE_PREFIX=$tmp/prefix FAKE_SRC=$src
cat >"$tmp/prefix/bin/fmtrain" <<'EOF'
#!/bin/sh
# fake fmtrain: --version names the MPI library FAKE_MPI_LIB (nothing when unset)
if [ "${1:-}" = --version ] && [ -n "${FAKE_MPI_LIB:-}" ]; then
  printf 'fmtrain 0.1.0\n  build:   Release, GNU 12.2.0\n  MPI:     %s\n' "$FAKE_MPI_LIB"
fi
exit 0
EOF
cat >"$stub/srun" <<'EOF'
#!/usr/bin/env bash
# fake srun: --mpi=list prints FAKE_SRUN_MPI_LIST as Slurm 22.05 does; otherwise records its
# arguments (one per line) and what a task would inherit
if [ "${1:-}" = --mpi=list ]; then
  echo "srun: MPI types are..." >&2
  for t in ${FAKE_SRUN_MPI_LIST:-none}; do echo "srun: $t" >&2; done
  exit 0
fi
printf '%s\n' "$@" >"$FAKE_LOG/srun.args"
printf 'SRUN_CPUS_PER_TASK=%s OMP_NUM_THREADS=%s\n' "${SRUN_CPUS_PER_TASK:-}" "${OMP_NUM_THREADS:-}" >"$FAKE_LOG/srun.env"
[ -n "${FAKE_RUN_DIR:-}" ] && touch "$FAKE_RUN_DIR/COMPLETE"
exit 0
EOF
cat >"$stub/sbatch" <<'EOF'
#!/usr/bin/env bash
# fake sbatch [OPTION=VALUE...] SCRIPT: the script's #SBATCH lines (before its first command), then
# the command line's options (which win), recorded in $FAKE_LOG/sbatch.opts; exports the SLURM_*
# variables a batch job sees and runs SCRIPT with `bash -u` in the current directory.
set -u
cli=()
while [ $# -gt 1 ]; do cli+=("$1"); shift; done
script=$1
: >"$FAKE_LOG/sbatch.opts"
while IFS= read -r line; do
  case "$line" in
    '#SBATCH '*) printf '%s\n' "${line#\#SBATCH }" >>"$FAKE_LOG/sbatch.opts" ;;
    '#'* | '') ;;
    *) break ;;
  esac
done <"$script"
[ ${#cli[@]} -gt 0 ] && printf '%s\n' "${cli[@]}" >>"$FAKE_LOG/sbatch.opts"
opt() { sed -n "s/^--$1=//p" "$FAKE_LOG/sbatch.opts" | tail -n 1; }
nodes=$(opt nodes); tpn=$(opt ntasks-per-node)
export SLURM_JOB_ID=4242 SLURM_SUBMIT_DIR=$PWD SLURM_JOB_NUM_NODES=${nodes:-1}
export SLURM_CPUS_PER_TASK=$(opt cpus-per-task) SLURM_NTASKS=$(( ${nodes:-1} * ${tpn:-1} ))
gpus=$(opt gpus)
if [ -n "$gpus" ]; then export SLURM_GPUS=$gpus; fi
exec bash -u "$script"
EOF
# shellcheck disable=SC2016 # the stubs expand $* and $FAKE_LOG when they run
for t in scontrol squeue scancel; do printf '#!/bin/sh\necho "%s $*" >>"$FAKE_LOG/slurm.calls"\n' "$t" >"$stub/$t"; done
cat >>"$stub/scontrol" <<'EOF'
# `scontrol show config` has the MpiDefault line when FAKE_MPI_DEFAULT is set
if [ "$*" = "show config" ] && [ -n "${FAKE_MPI_DEFAULT:-}" ]; then
  printf 'MpiDefault              = %s\nMpiParams               = (null)\n' "$FAKE_MPI_DEFAULT"
fi
EOF
cat >"$stub/cmake" <<'EOF'
#!/bin/sh
# fake cmake: --version prints FAKE_CMAKE_VERSION (default 3.25.1); records every other call
if [ "$1" = --version ]; then echo "cmake version ${FAKE_CMAKE_VERSION:-3.25.1}"; exit 0; fi
echo "cmake $*" >>"$FAKE_LOG/cmake.calls"
EOF
cat >"$stub/dpkg-query" <<'EOF'
#!/bin/sh
# fake dpkg-query -W -f=... PACKAGE: installed unless PACKAGE matches FAKE_DPKG_MISSING (a regex)
for p; do :; done
if [ -n "${FAKE_DPKG_MISSING:-}" ] && printf '%s\n' "$p" | grep -Eq "$FAKE_DPKG_MISSING"; then
  echo "dpkg-query: no packages found matching $p" >&2
  exit 1
fi
printf 'install ok installed'
EOF
chmod +x "$stub"/* "$tmp/prefix/bin/fmtrain"
export PATH="$stub:$PATH"

# The fake module command. Unversioned names load as NAME/default (the site's default version).
module() {
  printf 'module %s\n' "$*" >>"$FAKE_LOG/module.calls"
  local cmd=${1:-} m
  shift
  case "$cmd" in
    purge) LOADEDMODULES="" ;;
    load | add)
      for m in "$@"; do
        if [ -n "${FAKE_MODULE_FAIL:-}" ] && [[ "$m" =~ $FAKE_MODULE_FAIL ]]; then
          echo "Lmod has detected the following error:  The following module(s) are unknown: \"$m\"" >&2
          return 1
        fi
        if [ -n "${FAKE_MODULE_SILENT:-}" ] && [[ "$m" =~ $FAKE_MODULE_SILENT ]]; then
          continue
        fi
        case "$m" in */*) ;; *) m="$m/default" ;; esac
        LOADEDMODULES=${LOADEDMODULES:+$LOADEDMODULES:}$m
        if [ "${m%%/*}" = fmtrain ]; then
          export PATH="$FAKE_PREFIX/bin:$PATH" FMTRAIN_JOBSCRIPTS="$FAKE_SRC/jobscripts"
        fi
      done ;;
  esac
  export LOADEDMODULES
  return 0
}
export -f module

sites=()
for f in "$src"/modules/sites/*.sh; do
  n=${f##*/}
  case "$n" in fm-site.sh | build.sh | debian.sh) ;; *) sites+=("${n%.sh}") ;; esac
done
check "nine site module files (found ${#sites[@]}: ${sites[*]})" test "${#sites[@]}" -eq 9
check "modules/sites/debian.sh (a generic Debian/Ubuntu system)" test -f "$src/modules/sites/debian.sh"

# ---- 1. modules/sites/<site>.sh ---------------------------------------------------------------------
# Sources a site file under bash -u; stdout/stderr/status in $tmp/out, $tmp/err, $rc.
source_site() { # site, then VAR=VALUE... for the environment
  local site=$1
  shift
  : >"$FAKE_LOG/module.calls"
  rc=0
  # shellcheck disable=SC2016 # expanded by the inner bash
  env "$@" bash -u -c '. "$1" || exit 3; printf "ARGS=%s\nLOADED=%s\n" "$FM_SITE_CMAKE_ARGS" "$LOADEDMODULES"' \
    _ "$src/modules/sites/$site.sh" >"$tmp/out" 2>"$tmp/err" || rc=$?
}
job_env() { [ "$1" = meluxina-gpu ] && echo SLURM_JOB_ID=77 || echo FM_NOTHING=1; }
hdf5_re='^(hdf5|HDF5|cray-hdf5-parallel)(/|$)'
for site in "${sites[@]}"; do
  f="$src/modules/sites/$site.sh"
  check "$site.sh: bash -n" bash -n "$f"
  source_site "$site" "$(job_env "$site")"
  if [ "$rc" -ne 0 ]; then
    bad "$site.sh: sourcing with every module present failed ($rc)"
    cat "$tmp/err"
    continue
  fi
  check "$site.sh: sets FM_SITE_CMAKE_ARGS" grep -q '^ARGS=-D' "$tmp/out"
  check "$site.sh: starts with module purge" test "$(grep -m1 -v '^module use' "$FAKE_LOG/module.calls")" = "module purge"
  check "$site.sh: loads an HDF5" grep -Eq '^module load (hdf5|HDF5|cray-hdf5-parallel)' "$FAKE_LOG/module.calls"
  check "$site.sh: loads a CMake" grep -Eq '^module load (cmake|CMake|buildtools)' "$FAKE_LOG/module.calls"
  # a required module missing: the build stops, naming it and how to find its current name
  source_site "$site" "$(job_env "$site")" FAKE_MODULE_FAIL="$hdf5_re"
  stem=$(grep -Eo '^module load (hdf5|HDF5|cray-hdf5-parallel)' "$FAKE_LOG/module.calls" | head -n 1 | cut -d' ' -f3)
  check "$site.sh: fails when HDF5 is missing" test "$rc" -ne 0
  check "$site.sh: the message says 'module spider $stem'" has "$tmp/err" "module spider $stem"
  check "$site.sh: the message names the file to correct" has "$tmp/err" "modules/sites/$site.sh"
  check "$site.sh: the message names the missing module" grep -q "module $stem.* did not load" "$tmp/err"
  # a module system that returns 0 without loading (old Environment Modules) is caught too
  source_site "$site" "$(job_env "$site")" FAKE_MODULE_SILENT="$hdf5_re"
  check "$site.sh: fails when HDF5 silently did not load" test "$rc" -ne 0
  # no module command at all
  rc=0
  # shellcheck disable=SC2016 # expanded by the inner bash
  env "$(job_env "$site")" bash -u -c 'unset -f module; . "$1"' _ "$f" >"$tmp/out" 2>"$tmp/err" || rc=$?
  check "$site.sh: fails without a module command" test "$rc" -ne 0
done

# The values issue 20 found wrong are gone; the corrected ones are asked for.
source_site leonardo-booster
calls=$FAKE_LOG/module.calls
check "leonardo: CUDA-aware Open MPI 4.1.6" hasx "$calls" "module load openmpi/4.1.6--gcc--12.2.0-cuda-12.2"
check "leonardo: HDF5 1.14.3 (spack0.22)" hasx "$calls" "module load hdf5/1.14.3--openmpi--4.1.6--gcc--12.2.0-spack0.22"
check "leonardo: no cuda/12.1" bash -c "! grep -q 'cuda/12.1' '$calls'"
check "leonardo: OpenBLAS 0.3.26, not 0.3.24" bash -c "grep -qx 'module load openblas/0.3.26--gcc--12.2.0' '$calls' && ! grep -q '0.3.24' '$calls'"
source_site marenostrum5-acc
check "mn5: hdf5/1.14.1-2-gcc-ompi (accelerated nodes)" hasx "$calls" "module load hdf5/1.14.1-2-gcc-ompi"
check "mn5: no hdf5/1.14.1-gcc-openmpi" bash -c "! grep -q 'hdf5/1.14.1-gcc-openmpi' '$calls'"
source_site marenostrum5-acc FAKE_MODULE_FAIL='^hdf5/1.14.1-2-gcc-ompi$'
check "mn5: falls back to hdf5/1.14.1-2-gcc-openmpi" grep -q 'LOADED=.*hdf5/1.14.1-2-gcc-openmpi' "$tmp/out"
source_site discoverer-cpu
check "discoverer: hdf5/1/1.14/1.14.0-gcc-openmpi" hasx "$calls" "module load hdf5/1/1.14/1.14.0-gcc-openmpi"
check "discoverer: gcc/11/11.1.0" hasx "$calls" "module load gcc/11/11.1.0"
check "discoverer: none of gcc/latest, hdf5/1/latest-gcc-openmpi, hwloc/latest, cmake/latest" \
  bash -c "! grep -Eq '^module load (gcc/latest|hdf5/1/latest|hwloc/latest|cmake/latest)' '$calls'"
# MeluXina: login nodes have no software environment: outside a job, stop with the srun line
source_site meluxina-gpu
check "meluxina: refuses to build outside a job" test "$rc" -ne 0
check "meluxina: prints the srun line that builds inside a job" \
  has "$tmp/err" "srun -A YOURPROJECT -p gpu -q default -N 1"
check "meluxina: loads nothing outside a job" bash -c "! grep -q '^module load' '$calls'"
# an optional module (hwloc) missing: a note, not a failure
source_site leonardo-booster FAKE_MODULE_FAIL='^hwloc'
check "leonardo: a missing hwloc module is only a note" test "$rc" -eq 0
check "leonardo: the note says module spider hwloc" has "$tmp/err" "module spider hwloc"

# ---- 2. modules/sites/build.sh ------------------------------------------------------------------------
build() { # site, then VAR=VALUE...
  local site=$1
  shift
  : >"$FAKE_LOG/cmake.calls"
  rc=0
  env "$@" "$src/modules/sites/build.sh" "$site" "$tmp/pfx" >"$tmp/out" 2>"$tmp/err" || rc=$?
}
build leonardo-booster
check "build.sh leonardo-booster: succeeds" test "$rc" -eq 0
check "build.sh: configures with the site's CMake arguments" \
  has "$FAKE_LOG/cmake.calls" "cmake -S $src -B $src/build-leonardo-booster -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=$tmp/pfx -DFMTRAIN_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=80"
check "build.sh: builds and installs" bash -c "grep -q -- '--build $src/build-leonardo-booster' '$FAKE_LOG/cmake.calls' && grep -q -- '--install $src/build-leonardo-booster' '$FAKE_LOG/cmake.calls'"
check "build.sh: says how to load the installed module" has "$tmp/out" "module use \"$tmp/pfx/share/modulefiles\""
build leonardo-booster FAKE_MODULE_FAIL='^openmpi/'
check "build.sh: a missing module stops it (status 2)" test "$rc" -eq 2
check "build.sh: ... before cmake" test ! -s "$FAKE_LOG/cmake.calls"
check "build.sh: ... saying module spider openmpi" has "$tmp/err" "module spider openmpi"
build meluxina-gpu
check "build.sh meluxina-gpu on a login node: status 2 with the srun line" \
  bash -c "[ $rc -eq 2 ] && grep -q 'srun -A YOURPROJECT -p gpu' '$tmp/err' && [ ! -s '$FAKE_LOG/cmake.calls' ]"
build meluxina-gpu SLURM_JOB_ID=77
check "build.sh meluxina-gpu inside a job: builds" bash -c "[ $rc -eq 0 ] && grep -q 'build-meluxina-gpu' '$FAKE_LOG/cmake.calls'"
build no-such-site
check "build.sh: an unknown site is a usage error" bash -c "[ $rc -eq 2 ] && grep -q 'sites:.*lumi-c' '$tmp/err'"

# ---- 3. jobscripts/sites/<site>.sbatch ------------------------------------------------------------
# site | directives that must be there (space-separated) | launcher flag (or -) | --cpu-bind value
expect=(
  "leonardo-booster|--partition=boost_usr_prod --qos=normal --gres=gpu:4 --ntasks-per-node=4 --cpus-per-task=8|-|none"
  "marenostrum5-acc|--qos=acc_ehpc --gres=gpu:4 --ntasks-per-node=4 --cpus-per-task=20|-|none"
  "meluxina-gpu|--partition=gpu --qos=default --gres=gpu:4 --ntasks-per-node=4 --cpus-per-task=16|-|none"
  "juwels-booster|--partition=booster --gres=gpu:4 --ntasks-per-node=4 --cpus-per-task=12|--mpi=pspmix|none"
  "jupiter-booster|--partition=booster --gres=gpu:4 --ntasks-per-node=4 --cpus-per-task=72|--mpi=pspmix|none"
  "karolina-gpu|--partition=qgpu --gpus=8 --ntasks-per-node=8 --cpus-per-task=16|-|none"
  "vega-gpu|--partition=gpu --gres=gpu:4 --ntasks-per-node=4 --cpus-per-task=32|--mpi=pmix_v3|none"
  "discoverer-cpu|--partition=cn --ntasks-per-node=8 --cpus-per-task=16|-|cores"
  "lumi-c|--partition=standard --ntasks-per-node=8 --cpus-per-task=16|-|cores"
)
sbatch_files=("$src"/jobscripts/sites/*.sbatch)
check "one expectation per site script" test "${#sbatch_files[@]}" -eq "${#expect[@]}"
job=$tmp/job
mkdir -p "$job"
submit() { # site, then extra sbatch options; VAR=VALUE... may be given in the environment
  : >"$FAKE_LOG/module.calls"
  rm -f "$FAKE_LOG/srun.args" "$FAKE_LOG/srun.env"
  rm -rf "$tmp/run"
  printf '[run]\ndir = %s\n' "$tmp/run" >"$job/params.ini"
  rc=0
  (cd "$job" && FM_PARAMS=params.ini FMTRAIN_PREFIX="$tmp/prefix" FAKE_RUN_DIR="$tmp/run" \
     sbatch "${@:2}" "$src/jobscripts/sites/$1.sbatch") >"$tmp/out" 2>"$tmp/err" || rc=$?
}
for e in "${expect[@]}"; do
  IFS='|' read -r site directives flag bind <<<"$e"
  script="$src/jobscripts/sites/$site.sbatch"
  check "$site.sbatch: bash -n" bash -n "$script"
  submit "$site"
  if [ "$rc" -ne 0 ] || [ ! -f "$FAKE_LOG/srun.args" ]; then
    bad "$site.sbatch: the job did not reach srun (status $rc)"
    cat "$tmp/out" "$tmp/err"
    continue
  fi
  check "$site.sbatch: training complete" has "$tmp/out" "training complete"
  for d in $directives; do check "$site.sbatch: #SBATCH $d" hasx "$FAKE_LOG/sbatch.opts" "$d"; done
  check "$site.sbatch: an account line to edit" hasx "$FAKE_LOG/sbatch.opts" "--account=CHANGE_ME"
  check "$site.sbatch: --signal=B:USR1@600 and --requeue" \
    bash -c "grep -qx -- '--signal=B:USR1@600' '$FAKE_LOG/sbatch.opts' && grep -qx -- '--requeue' '$FAKE_LOG/sbatch.opts'"
  check "$site.sbatch: module use of the install prefix" hasx "$FAKE_LOG/module.calls" "module use $tmp/prefix/share/modulefiles"
  check "$site.sbatch: module load fmtrain" hasx "$FAKE_LOG/module.calls" "module load fmtrain"
  check "$site.sbatch: srun --cpu-bind=$bind" test "$(head -n 1 "$FAKE_LOG/srun.args")" = "--cpu-bind=$bind"
  if [ "$flag" = - ]; then
    check "$site.sbatch: no --mpi flag" bash -c "! grep -q -- '^--mpi' '$FAKE_LOG/srun.args'"
  else
    check "$site.sbatch: srun $flag" hasx "$FAKE_LOG/srun.args" "$flag"
  fi
  check "$site.sbatch: srun runs the module's fmtrain train params.ini" \
    bash -c "grep -A2 -x -- '$tmp/prefix/bin/fmtrain' '$FAKE_LOG/srun.args' | tr '\n' ' ' | grep -q 'fmtrain train params.ini'"
  cpt=$(sed -n 's/^--cpus-per-task=//p' "$FAKE_LOG/sbatch.opts")
  check "$site.sbatch: SRUN_CPUS_PER_TASK=$cpt reaches srun" has "$FAKE_LOG/srun.env" "SRUN_CPUS_PER_TASK=$cpt OMP_NUM_THREADS=$cpt"
  # the fmtrain module does not load: stop with a message, before srun
  FAKE_MODULE_FAIL='^fmtrain$' submit "$site"
  check "$site.sbatch: a failed module load fmtrain stops the job (exit 2)" test "$rc" -eq 2
  check "$site.sbatch: ... saying how to install it" has "$tmp/err" "modules/sites/build.sh $site"
  check "$site.sbatch: ... before srun" test ! -f "$FAKE_LOG/srun.args"
done
submit karolina-gpu --nodes=2
check "karolina-gpu.sbatch: --gpus=8 on 2 nodes is refused with the right count" \
  bash -c "[ $rc -eq 2 ] && grep -q 'use --gpus=16' '$tmp/err' && [ ! -f '$FAKE_LOG/srun.args' ]"
submit karolina-gpu --nodes=2 --gpus=16
check "karolina-gpu.sbatch: --gpus=16 on 2 nodes runs" bash -c "[ $rc -eq 0 ] && [ -f '$FAKE_LOG/srun.args' ]"

# ---- 4. modules/sites/debian.sh: packages instead of modules -----------------------------------------
# source_site prints LOADEDMODULES, which debian.sh leaves alone: start from an empty one
source_site debian LOADEDMODULES=
check "debian.sh: ready when the build packages are installed" test "$rc" -eq 0
check "debian.sh: sets FM_SITE_CMAKE_ARGS" grep -qx 'ARGS=-DBLA_VENDOR=OpenBLAS -DFMTRAIN_CUDA=AUTO' "$tmp/out"
check "debian.sh: loads or purges no module" test ! -s "$FAKE_LOG/module.calls"
source_site debian LOADEDMODULES= FAKE_DPKG_MISSING='^(libhdf5-openmpi-dev|libhwloc-dev)$'
check "debian.sh: fails when packages are missing" test "$rc" -ne 0
check "debian.sh: ... naming them" has "$tmp/err" "packages not installed: libhdf5-openmpi-dev libhwloc-dev"
check "debian.sh: ... and the command that installs them" has "$tmp/err" "modules/setup-debian.sh --build"
source_site debian LOADEDMODULES= FAKE_CMAKE_VERSION=3.22.1
check "debian.sh: refuses CMake 3.22 (Ubuntu 22.04)" bash -c "[ $rc -ne 0 ] && grep -q 'CMake 3.22.1 is older than 3.24' '$tmp/err'"
source_site debian LOADEDMODULES= FAKE_DPKG_MISSING='^cmake$' FAKE_CMAKE_VERSION=3.28.3
check "debian.sh: a newer CMake on PATH stands in for the cmake package" test "$rc" -eq 0
build debian
check "build.sh debian: configures with its CMake arguments" \
  has "$FAKE_LOG/cmake.calls" "cmake -S $src -B $src/build-debian -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=$tmp/pfx -DBLA_VENDOR=OpenBLAS -DFMTRAIN_CUDA=AUTO"
build debian FAKE_DPKG_MISSING='^libopenblas-dev$'
check "build.sh debian: a missing package stops it before cmake (status 2)" \
  bash -c "[ $rc -eq 2 ] && [ ! -s '$FAKE_LOG/cmake.calls' ] && grep -q 'libopenblas-dev' '$tmp/err'"

# ---- 5. generic/cpu.sbatch and gpu.sbatch: the fmtrain module, and srun's MPI plugin ------------------
gsubmit() { # generic script (cpu|gpu), then extra sbatch options; VAR=VALUE... in the environment
  : >"$FAKE_LOG/module.calls"
  rm -f "$FAKE_LOG/srun.args" "$FAKE_LOG/srun.env"
  rm -rf "$tmp/run"
  printf '[run]\ndir = %s\n' "$tmp/run" >"$job/params.ini"
  rc=0
  (cd "$job" && FM_PARAMS=params.ini FMTRAIN_PREFIX="$tmp/prefix" FAKE_RUN_DIR="$tmp/run" \
     sbatch "${@:2}" "$src/jobscripts/generic/$1.sbatch") >"$tmp/out" 2>"$tmp/err" || rc=$?
}
for g in cpu gpu; do
  bind=cores
  [ "$g" = gpu ] && bind=none
  gsubmit "$g"
  check "generic/$g.sbatch: runs to completion" bash -c "[ $rc -eq 0 ] && grep -q 'training complete' '$tmp/out'"
  check "generic/$g.sbatch: module use of the install prefix" hasx "$FAKE_LOG/module.calls" "module use $tmp/prefix/share/modulefiles"
  check "generic/$g.sbatch: module load fmtrain" hasx "$FAKE_LOG/module.calls" "module load fmtrain"
  check "generic/$g.sbatch: srun --cpu-bind=$bind" test "$(head -n 1 "$FAKE_LOG/srun.args" 2>/dev/null)" = "--cpu-bind=$bind"
  check "generic/$g.sbatch: srun runs the module's fmtrain" hasx "$FAKE_LOG/srun.args" "$tmp/prefix/bin/fmtrain"
  FAKE_MODULE_FAIL='^fmtrain$' gsubmit "$g"
  check "generic/$g.sbatch: a failed module load fmtrain stops the job (exit 2) before srun" \
    bash -c "[ $rc -eq 2 ] && grep -q 'module load fmtrain failed' '$tmp/err' && [ ! -f '$FAKE_LOG/srun.args' ]"
  # no module command in the job's shell (the exported function removed)
  (unset -f module; gsubmit "$g"; echo "$rc" >"$tmp/rc")
  check "generic/$g.sbatch: no module command stops the job (exit 2) saying so" \
    bash -c "[ \$(cat '$tmp/rc') -eq 2 ] && grep -q \"no 'module' command\" '$tmp/err'"
  FMTRAIN_EXE="$tmp/prefix/bin/fmtrain" FMTRAIN_JOBSCRIPTS="$src/jobscripts" gsubmit "$g"
  check "generic/$g.sbatch: FMTRAIN_EXE instead of the module" \
    bash -c "[ $rc -eq 0 ] && [ ! -s '$FAKE_LOG/module.calls' ] && grep -qx -- '$tmp/prefix/bin/fmtrain' '$FAKE_LOG/srun.args'"
done

# srun's MPI plugin: MPI library | MpiDefault | srun --mpi=list | extra environment | expected --mpi (- none)
ompi="Open MPI v4.1.4, package: Debian OpenMPI, ident: 4.1.4, repo rev: v4.1.4, May 26, 2022 (standard 3.1)"
plugin_cases=(
  "$ompi|none|none cray_shasta pmi2 pmix pmix_v4||--mpi=pmix"
  "$ompi||none pmi2 pmix_v3 pmix_v4||--mpi=pmix_v4"
  "$ompi|none|none pmi2||--mpi=pmi2"
  "$ompi|none|none cray_shasta||-"
  "$ompi|pmix_v4|none pmi2 pmix||-"
  "$ompi|none|none pmi2 pmix|SLURM_MPI_TYPE=pmix|-"
  "$ompi|none|none pmi2 pmix|FM_SRUN_MPI=pmi2|--mpi=pmi2"
  "$ompi|none|none pmi2 pmix|FM_SRUN_MPI=default|-"
  "MPICH Version: 4.0.2 MPICH Release date: Thu Apr 7 2022|none|none pmi2 pmix||--mpi=pmi2"
  "MPI VERSION    : CRAY MPICH version 8.1.28.2 (ANL base 3.4a2)|none|none cray_shasta pmi2 pmix||--mpi=cray_shasta"
  "Intel(R) MPI Library 2021.10 for Linux* OS|none|none pmi2 pmix||--mpi=pmi2"
  "ParaStation MPI 5.9.2-1 (MPICH 4.1.2)|none|none pmi2 pspmix||--mpi=pspmix"
  "|none|none pmi2 pmix||-"
)
for c in "${plugin_cases[@]}"; do
  IFS='|' read -r lib def list extra want <<<"$c"
  what="launcher: MPI '${lib%%,*}', MpiDefault '$def', plugins '$list'${extra:+, $extra}"
  # shellcheck disable=SC2030 # the variables are meant for this subshell's job only
  (
    export FAKE_MPI_LIB="$lib" FAKE_MPI_DEFAULT="$def" FAKE_SRUN_MPI_LIST="$list"
    if [ -n "$extra" ]; then export "${extra?}"; fi
    gsubmit cpu
    echo "$rc" >"$tmp/rc"
  )
  if [ "$(cat "$tmp/rc")" -ne 0 ] || [ ! -f "$FAKE_LOG/srun.args" ]; then
    bad "$what: the job did not reach srun (status $(cat "$tmp/rc"))"
    cat "$tmp/out" "$tmp/err"
    continue
  fi
  got=$(grep -- '^--mpi' "$FAKE_LOG/srun.args" | tr '\n' ' ')
  [ "$want" = - ] && want=""
  check "$what: srun gets '${want}' (got '${got% }')" test "${got% }" = "$want"
  check "$what: the job output says why" grep -q "fmtrain-job: launcher: " "$tmp/out"
done
FAKE_MPI_LIB=$ompi FAKE_MPI_DEFAULT=none FAKE_SRUN_MPI_LIST="none cray_shasta" gsubmit cpu
check "launcher: no fitting plugin: the note says to set FM_SRUN_MPI" grep -q "set FM_SRUN_MPI=<plugin>" "$tmp/out"
FAKE_MPI_LIB=$ompi FAKE_MPI_DEFAULT=none FAKE_SRUN_MPI_LIST="none pmi2 pmix pspmix" submit juwels-booster
check "launcher: a site's FM_SRUN_ARGS flag is kept and not doubled (juwels-booster)" \
  test "$(grep -- '^--mpi' "$FAKE_LOG/srun.args" | tr '\n' ' ')" = "--mpi=pspmix "

echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]

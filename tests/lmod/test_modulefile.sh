#!/usr/bin/env bash
# test_modulefile.sh — installs the build into a temporary prefix (cmake --install --prefix), loads
# the installed modulefiles with Lmod for real and runs fmtrain from the loaded environment:
#   1. the Lmod modulefile (share/modulefiles/fmtrain/<version>.lua): `module load fmtrain` puts
#      fmtrain on PATH (`fmtrain --version` prints the build's version), the man page on MANPATH,
#      FMTRAIN_JOBSCRIPTS at the installed batch scripts; `module unload` takes it all away again;
#   2. depends_on: installed with FMTRAIN_MODULE_DEPENDS=fmtestmpi/1.0 (a module of a private tree),
#      loading fmtrain loads fmtestmpi, unloading fmtrain unloads it;
#   3. the Tcl modulefile, installed beside the .lua one (share/modulefiles/fmtrain/<version>) so that
#      one `module use` serves Lmod and Environment Modules sites alike: Lmod picks the .lua file
#      of the two; the Tcl file alone loads with Lmod's Tcl support; tclsh reads it with stand-ins
#      for the modulefile commands (it parses, and sets PATH, FMTRAIN_JOBSCRIPTS, the dependency);
#      and where Environment Modules' modulecmd.tcl is found (FM_ENVMODULES_CMD, or the Debian
#      package's path) `module avail`/`module load fmtrain` run with it on the installed tree:
#      one fmtrain version listed, the Tcl file loaded, fmtrain on PATH.
# Skips (77) when Lmod is not installed (apt-get install lmod). Environment Modules conflicts with
# Lmod as a Debian package; to run part 3's last check here, unpack it instead:
#   apt-get download environment-modules && dpkg-deb -x environment-modules_*.deb /tmp/envmod
#   FM_ENVMODULES_CMD=/tmp/envmod/usr/lib/x86_64-linux-gnu/modulecmd.tcl ctest -R lmod
set -uo pipefail
: "${FMTRAIN_BINARY_DIR:?}" "${FMTRAIN_SOURCE_DIR:?}"
LMOD_INIT=${LMOD_INIT:-/usr/share/lmod/lmod/init/bash}
if [ ! -r "$LMOD_INIT" ]; then
  echo "SKIP: Lmod is not installed ($LMOD_INIT missing; apt-get install lmod)"
  exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
check() { # $1 description, then the command
  local what=$1; shift
  if "$@"; then echo "ok: $what"; else echo "FAIL: $what"; fail=1; fi
}

version=$(sed -n 's/^#define FM_VERSION "\(.*\)"$/\1/p' "$FMTRAIN_BINARY_DIR/generated/build_info.h")
[ -n "$version" ] || { echo "FAIL: no FM_VERSION in $FMTRAIN_BINARY_DIR/generated/build_info.h"; exit 1; }

if ! cmake --install "$FMTRAIN_BINARY_DIR" --prefix "$tmp/pfx" >"$tmp/install.log" 2>&1; then
  cat "$tmp/install.log"; echo "FAIL: cmake --install"; exit 1
fi
lua="$tmp/pfx/share/modulefiles/fmtrain/$version.lua"
tcl="$tmp/pfx/share/modulefiles/fmtrain/$version"
check "Lmod modulefile installed at $lua" test -f "$lua"
check "Tcl modulefile installed at $tcl" test -f "$tcl"
check "man page installed" test -f "$tmp/pfx/share/man/man1/fmtrain.1"

# A clean module environment: no site MODULEPATH, a private Lmod cache location.
unset MODULEPATH LOADEDMODULES _LMFILES_ MODULEPATH_ROOT
export HOME="$tmp/home" LMOD_IGNORE_CACHE=1
mkdir -p "$HOME"
# shellcheck source=/dev/null
. "$LMOD_INIT"
command -v module >/dev/null 2>&1 || type module >/dev/null 2>&1 || { echo "FAIL: no module command after $LMOD_INIT"; exit 1; }

# 1. load the Lmod modulefile and run fmtrain from the loaded environment
module use "$tmp/pfx/share/modulefiles"
check "module avail lists fmtrain/$version" bash -c "$(declare -f module); module -t avail fmtrain 2>&1 | grep -q 'fmtrain/$version'"
module load fmtrain
out=$(fmtrain --version 2>&1)
echo "$out" | head -n 1
check "fmtrain on PATH is the installed one" test "$(command -v fmtrain)" = "$tmp/pfx/bin/fmtrain"
check "fmtrain --version prints 'fmtrain $version'" test "$(echo "$out" | head -n 1)" = "fmtrain $version"
check "MANPATH has the installed man pages" bash -c "case ':$MANPATH:' in *':$tmp/pfx/share/man:'*) exit 0;; *) exit 1;; esac"
if command -v man >/dev/null 2>&1; then
  check "man -w fmtrain finds the installed page" test "$(man -w fmtrain 2>/dev/null)" = "$tmp/pfx/share/man/man1/fmtrain.1"
fi
check "FMTRAIN_JOBSCRIPTS points at the installed cpu.sbatch" test -f "${FMTRAIN_JOBSCRIPTS:-}/generic/cpu.sbatch"
check "module help mentions fmtrain" bash -c "$(declare -f module); module help fmtrain 2>&1 | grep -q 'fmtrain $version trains'"
module unload fmtrain
check "module unload removes fmtrain from PATH" bash -c "! command -v fmtrain"
check "module unload unsets FMTRAIN_ROOT" test -z "${FMTRAIN_ROOT:-}"
module unuse "$tmp/pfx/share/modulefiles"

# 2. depends_on: a private module tree with a stand-in for the MPI module fmtrain was built with
mkdir -p "$tmp/site/fmtestmpi"
cat >"$tmp/site/fmtestmpi/1.0.lua" <<'LUA'
whatis("stand-in for the site's MPI module (fmtrain's modulefile test)")
setenv("FMTESTMPI_LOADED", "yes")
LUA
if ! FMTRAIN_MODULE_DEPENDS="fmtestmpi/1.0" cmake --install "$FMTRAIN_BINARY_DIR" --prefix "$tmp/pfx2" \
    >"$tmp/install2.log" 2>&1; then
  cat "$tmp/install2.log"; echo "FAIL: cmake --install with FMTRAIN_MODULE_DEPENDS"; exit 1
fi
check "the modulefile has depends_on(\"fmtestmpi/1.0\")" \
  grep -q 'depends_on("fmtestmpi/1.0")' "$tmp/pfx2/share/modulefiles/fmtrain/$version.lua"
module use "$tmp/site"
module use "$tmp/pfx2/share/modulefiles"
module load fmtrain
check "loading fmtrain loaded its dependency fmtestmpi/1.0" test "${FMTESTMPI_LOADED:-}" = yes
check "fmtrain runs with the dependency loaded" bash -c "fmtrain --version | head -n 1 | grep -qx 'fmtrain $version'"
module unload fmtrain
check "unloading fmtrain unloaded fmtestmpi" test -z "${FMTESTMPI_LOADED:-}"
module unuse "$tmp/pfx2/share/modulefiles"
module unuse "$tmp/site"

# 3. the Tcl modulefile beside the .lua one
check "Tcl modulefile starts with the #%Module cookie" bash -c "head -n 1 '$tcl' | grep -q '^#%Module'"
module use "$tmp/pfx/share/modulefiles"
check "Lmod lists one fmtrain version for the two files" \
  bash -c "$(declare -f module); test \"\$(module -t avail fmtrain 2>&1 | grep -c '^fmtrain/')\" = 1"
check "Lmod loads the .lua file of the two" \
  bash -c "$(declare -f module); module --location show fmtrain 2>&1 | grep -qx '$lua'"
module unuse "$tmp/pfx/share/modulefiles"
if command -v tclsh >/dev/null 2>&1; then
  # the Tcl file alone, through Lmod's Tcl support
  mkdir -p "$tmp/tclonly/fmtrain"
  cp "$tcl" "$tmp/tclonly/fmtrain/"
  module use "$tmp/tclonly"
  module load fmtrain
  check "Tcl modulefile (Lmod): fmtrain --version from the loaded environment" \
    bash -c "fmtrain --version | head -n 1 | grep -qx 'fmtrain $version'"
  check "Tcl modulefile (Lmod): FMTRAIN_JOBSCRIPTS set" test -f "${FMTRAIN_JOBSCRIPTS:-}/chain.sh"
  module unload fmtrain
  check "Tcl modulefile (Lmod): unload removes fmtrain" bash -c "! command -v fmtrain"
  module unuse "$tmp/tclonly"
  # tclsh reads the file with stand-ins for the modulefile commands: what would it set?
  cat >"$tmp/read.tcl" <<'TCL'
proc prepend-path {var val args} { puts "prepend-path $var $val" }
proc append-path {var val args} { puts "append-path $var $val" }
proc setenv {var val} { puts "setenv $var $val" }
proc module-whatis {args} {}
proc module {args} { puts "module $args" }
proc is-loaded {args} { return 0 }
source [lindex $argv 0]
if {[info procs ModulesHelp] eq ""} { puts "no ModulesHelp"; exit 1 }
TCL
  if read_out=$(tclsh "$tmp/read.tcl" "$tmp/pfx2/share/modulefiles/fmtrain/$version" 2>&1); then
    check "tclsh: the Tcl modulefile puts the installed bin on PATH" \
      grep -qx "prepend-path PATH $tmp/pfx2/bin" <<<"$read_out"
    check "tclsh: the Tcl modulefile sets FMTRAIN_JOBSCRIPTS" \
      grep -qx "setenv FMTRAIN_JOBSCRIPTS $tmp/pfx2/share/fmtrain/jobscripts" <<<"$read_out"
    check "tclsh: the Tcl modulefile loads its dependency fmtestmpi/1.0" \
      grep -qx "module load fmtestmpi/1.0" <<<"$read_out"
  else
    echo "$read_out"
    check "tclsh reads the Tcl modulefile" false
  fi
  # Environment Modules itself, where its modulecmd.tcl can be found
  envmod_cmd=${FM_ENVMODULES_CMD:-}
  for c in /usr/lib/x86_64-linux-gnu/modulecmd.tcl /usr/share/modules/libexec/modulecmd.tcl; do
    [ -z "$envmod_cmd" ] && [ -r "$c" ] && envmod_cmd=$c
  done
  if [ -n "$envmod_cmd" ] && [ -r "$envmod_cmd" ]; then
    envmod_out=$(
      unset MODULEPATH LOADEDMODULES _LMFILES_
      envmod() { eval "$(tclsh "$envmod_cmd" bash "$@")"; }
      envmod use "$tmp/pfx/share/modulefiles"
      echo "avail: $(envmod avail -t fmtrain 2>&1 | grep -c '^fmtrain/')"
      envmod load fmtrain
      echo "files: $_LMFILES_"
      echo "version: $(fmtrain --version 2>&1 | head -n 1)"
    )
    echo "$envmod_out"
    check "Environment Modules ($envmod_cmd): one fmtrain version listed" grep -qx "avail: 1" <<<"$envmod_out"
    check "Environment Modules: module load fmtrain loads the Tcl file" grep -qx "files: $tcl" <<<"$envmod_out"
    check "Environment Modules: fmtrain --version from the loaded environment" \
      grep -qx "version: fmtrain $version" <<<"$envmod_out"
  else
    echo "note: Environment Modules (modulecmd.tcl) not found; FM_ENVMODULES_CMD=<path> checks it"
  fi
else
  echo "note: tclsh not installed; the Tcl modulefile is not loaded here"
fi

exit $fail

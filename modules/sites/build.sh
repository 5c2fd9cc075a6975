#!/usr/bin/env bash
# build.sh — builds and installs fmtrain on a supported system with that system's modules:
#     modules/sites/build.sh SITE [INSTALL_PREFIX]
# SITE is a file name of modules/sites/ without .sh (leonardo-booster, lumi-c, ...); INSTALL_PREFIX
# defaults to $HOME/fmtrain/install. Loads the site's modules (modules/sites/SITE.sh: a module that
# does not load is named, with the `module spider` command that finds its current name), then
# configures in build-SITE/ of the source tree, builds with FM_BUILD_JOBS (default 8) processes and
# installs. The installed modulefiles load the same modules again:
#     module use INSTALL_PREFIX/share/modulefiles && module load fmtrain
# Exit status: 0 built and installed; 2 usage or a module missing; otherwise cmake's.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$(cd "$here/../.." && pwd)
site=${1:-}
prefix=${2:-$HOME/fmtrain/install}
if [ -z "$site" ] || [ "$site" = -h ] || [ "$site" = --help ] || [ ! -f "$here/$site.sh" ] ||
   [ "$site" = fm-site ] || [ "$site" = build ]; then
  sed -n '2,10p' "$0" >&2
  sites=""
  for f in "$here"/*.sh; do
    f=${f##*/}
    case "$f" in fm-site.sh | build.sh) ;; *) sites="$sites ${f%.sh}" ;; esac
  done
  echo "sites:$sites" >&2
  exit 2
fi
# shellcheck source=leonardo-booster.sh
if ! . "$here/$site.sh"; then
  echo "build.sh: what $site needs to build fmtrain is not all there (see above); nothing was built" >&2
  exit 2
fi
read -ra site_args <<<"${FM_SITE_CMAKE_ARGS:-}"
build="$src/build-$site"
echo "build.sh: $site: configuring $build (install prefix $prefix)"
cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$prefix" "${site_args[@]}" || exit
cmake --build "$build" -j "${FM_BUILD_JOBS:-8}" || exit
cmake --install "$build" || exit
echo "build.sh: installed; in batch scripts and shells:"
echo "    module use \"$prefix/share/modulefiles\" && module load fmtrain"

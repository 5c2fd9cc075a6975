#!/usr/bin/env bash
# tests/fresh-root/run.sh — the README's first command on a machine with nothing installed.
#
# Builds a minimal Debian root (debootstrap --variant=minbase: apt, dpkg, bash, coreutils; no
# compiler, no CMake, no MPI), copies a clean checkout of this tree into it (`git archive`: the
# committed files plus uncommitted changes to tracked files, never untracked files or a build), and
# inside it (chroot with /proc, /sys and /dev; as root, as on a freshly installed machine):
#
#   1. runs jobscripts/local/quickstart.sh end to end: it installs what it needs
#      (modules/setup-debian.sh --build, bible-kjv, gnuplot-nox), builds the release preset, prepares
#      the King James dataset, trains on 2 MPI ranks and samples; the test passes only when the
#      quickstart exits 0 and printed its final validation loss and a sample;
#   2. checks that the release preset configures with only those packages, without CMocka or any
#      other test package: in a second fresh copy of the checkout `cmake --preset release` succeeds
#      and says "tests not built (CMocka not found ...)", and `-DFMTRAIN_TESTS=ON` stops with the
#      message that names CMocka.
#
# Usage: tests/fresh-root/run.sh          (as root; exits 0 passed, 1 failed, 77 cannot run here)
# Needs: root, debootstrap, wget, mount/chroot rights (a privileged container or a real machine),
# and Debian's mirror. Skips (77) with a message saying which is missing.
#
# What is cached between runs on the same machine, under FM_FRESH_CACHE (default
# ${XDG_CACHE_HOME:-$HOME/.cache}/fmtrain/fresh-root):
#   base-<suite>-<arch>-<key>.tar.gz  the debootstrapped base root, keyed by Debian release,
#        architecture and the recipe below (variant, extra packages, apt sources); rebuilt when the
#        recipe changes or the tarball is older than FM_FRESH_MAX_AGE_DAYS (default 30);
#   apt-archives-<suite>-<arch>/  the .deb files apt downloaded (bind-mounted over the root's
#        /var/cache/apt/archives): a warm run installs the same packages from nothing, without
#        downloading them again. `apt-get autoclean` drops versions the mirror no longer has.
# Never cached: the installed packages, the checkout, the build, the dataset, the run.
#
# Environment: FM_FRESH_SUITE (default bookworm), FM_FRESH_MIRROR (default http://deb.debian.org/debian),
# FM_FRESH_CACHE, FM_FRESH_WORK (where the root is unpacked; default ${TMPDIR:-/var/tmp}; needs ~3 GB),
# FM_FRESH_QS_STEPS (passed to the quickstart as FM_QS_STEPS; default: the quickstart's own default),
# FM_FRESH_TIMEOUT (seconds for the quickstart, default 3600), FM_FRESH_KEEP=1 (keep the root, unmounted,
# for inspection), FM_FRESH_LOG (also write the quickstart's output to this file).
#
# Time (2 cores): see tests/fresh-root/README.md for the measured cold (no cache) and warm runs.
set -uo pipefail
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
suite=${FM_FRESH_SUITE:-bookworm}
mirror=${FM_FRESH_MIRROR:-http://deb.debian.org/debian}
cache=${FM_FRESH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fmtrain/fresh-root}
max_age=${FM_FRESH_MAX_AGE_DAYS:-30}
t_start=$(date +%s)

say() { printf '%s fresh-root: %s\n' "$(date +%H:%M:%S)" "$*"; }
skip() { say "SKIP: $*"; exit 77; }
die() { say "FAIL: $*"; exit 1; }
elapsed() { echo $(($(date +%s) - $1)); }

# ---- can it run here? -----------------------------------------------------------------------------
[ "$(uname -s)" = Linux ] || skip "needs Linux (chroot, mount)"
[ "$(id -u)" -eq 0 ] || skip "needs root (debootstrap, mount, chroot); run it as root or with sudo"
for tool in debootstrap wget chroot mount umount tar git flock; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] ||
    skip "$tool is not installed (Debian: apt-get install debootstrap; modules/setup-debian.sh installs it)"
done
export PATH="$PATH:/usr/sbin:/sbin"
arch=$(dpkg --print-architecture 2>/dev/null) || skip "dpkg is not installed: debootstrap needs a Debian-like host"
git -C "$src" rev-parse --verify -q HEAD >/dev/null || skip "$src is not a git checkout (the test copies one with git archive)"
wget -q -T 20 -t 2 -O /dev/null "$mirror/dists/$suite/InRelease" ||
  skip "Debian's mirror $mirror (suite $suite) is not reachable from here"

# ---- the base root, from the cache or made with debootstrap --------------------------------------
# The recipe: everything that decides the base root's contents. Changing it changes the cache key.
include=""    # nothing beyond minbase: the quickstart must install everything it needs itself
sources="deb $mirror $suite main
deb $mirror $suite-updates main
deb http://deb.debian.org/debian-security $suite-security main"
recipe="suite=$suite arch=$arch variant=minbase include=$include policy-rc.d=101
$sources"
key=$(printf '%s' "$recipe" | sha256sum | cut -c1-12)
mkdir -p "$cache" || die "cannot create the cache directory $cache"
exec 9>"$cache/lock"
flock -w 7200 9 || die "another fresh-root run holds $cache/lock"
base="$cache/base-$suite-$arch-$key.tar.gz"
debs="$cache/apt-archives-$suite-$arch"
mkdir -p "$debs"

t0=$(date +%s)
if [ -s "$base" ] && [ -n "$(find "$base" -mtime -"$max_age" 2>/dev/null)" ]; then
  say "base root: cached $base"
  base_how=cached
else
  say "base root: debootstrap --variant=minbase $suite ($arch) from $mirror (cache key $key)"
  rm -f "$cache"/base-"$suite"-"$arch"-*.tar.gz
  tmpbase=$(mktemp -d "${FM_FRESH_WORK:-${TMPDIR:-/var/tmp}}/fmtrain-base.XXXXXX") || die "mktemp"
  if ! debootstrap --variant=minbase ${include:+--include="$include"} "$suite" "$tmpbase" "$mirror" \
       >"$cache/debootstrap.log" 2>&1; then
    tail -n 30 "$cache/debootstrap.log"
    if grep -qiE "mknod|mount|permission denied|operation not permitted" "$cache/debootstrap.log"; then
      rm -rf --one-file-system "$tmpbase"
      skip "debootstrap cannot make a root here (an unprivileged container?); log: $cache/debootstrap.log"
    fi
    rm -rf --one-file-system "$tmpbase"
    die "debootstrap failed (log: $cache/debootstrap.log)"
  fi
  printf '%s\n' "$sources" >"$tmpbase/etc/apt/sources.list"
  # No daemon of a package installed in the test root starts (it would outlive the root on the host).
  printf '#!/bin/sh\nexit 101\n' >"$tmpbase/usr/sbin/policy-rc.d"
  chmod 0755 "$tmpbase/usr/sbin/policy-rc.d"
  rm -rf "$tmpbase"/var/cache/apt/archives/*.deb "$tmpbase"/var/lib/apt/lists/*
  chmod 0755 "$tmpbase" # mktemp made it 0700; the root directory of a machine is 0755
  tar -C "$tmpbase" -czf "$base.tmp" . || die "writing $base"
  mv "$base.tmp" "$base"
  rm -rf --one-file-system "$tmpbase"
  base_how=debootstrap
fi
t_base=$(elapsed "$t0")
say "base root ready ($base_how, ${t_base} s): $(du -h "$base" | cut -f1)"

# ---- a fresh root: unpack, copy the checkout, mount ----------------------------------------------
work=$(mktemp -d "${FM_FRESH_WORK:-${TMPDIR:-/var/tmp}}/fmtrain-fresh-root.XXXXXX") || die "mktemp"
root="$work/root"
mounted=()
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
  local i m
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
    m=${mounted[i]}
    umount -R "$m" 2>/dev/null || umount -R -l "$m" 2>/dev/null || true
  done
  mounted=()
  # Never delete through a mount point (that would delete the host's /dev or /sys contents).
  if grep -qF " $root/" /proc/self/mountinfo; then
    say "warning: something is still mounted under $root; leaving $work in place"
    return
  fi
  if [ "${FM_FRESH_KEEP:-0}" = 1 ]; then
    say "kept the root in $root (FM_FRESH_KEEP=1): chroot $root /bin/bash"
  else
    rm -rf --one-file-system "$work"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

t0=$(date +%s)
mkdir -p "$root"
tar -C "$root" -xzf "$base" || die "unpacking $base"
chmod 0755 "$root" # as / is on a machine (apt's _apt user must reach /var/lib/apt and /var/cache/apt)
rev=$(git -C "$src" stash create 2>/dev/null)
desc="HEAD $(git -C "$src" rev-parse --short HEAD)"
[ -n "$rev" ] && desc="$desc plus uncommitted changes to tracked files" || rev=HEAD
git -C "$src" archive --format=tar --prefix=fmtrain/ "$rev" >"$root/root/fmtrain.tar" ||
  die "git archive $rev"
tar -C "$root/root" -xf "$root/root/fmtrain.tar" || die "unpacking the checkout"
say "root unpacked in $root; checkout: $desc (git archive: no untracked files, no build)"
# What the machine's network configuration gives a fresh install.
cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
cp /etc/hosts "$root/etc/hosts" 2>/dev/null || true

mountpoint_in() { # SOURCE TARGET [mount options...]: mount and remember it (make-rslave: no propagation)
  local source=$1 target=$2
  shift 2
  mount "$@" "$source" "$target" || return 1
  mounted+=("$target")
  mount --make-rslave "$target" 2>/dev/null || true
}
mountpoint_in proc "$root/proc" -t proc || skip "cannot mount /proc in the root (an unprivileged container?)"
mountpoint_in /sys "$root/sys" --rbind || skip "cannot bind-mount /sys into the root"
mountpoint_in /dev "$root/dev" --rbind || skip "cannot bind-mount /dev into the root"
mountpoint_in "$debs" "$root/var/cache/apt/archives" --bind || die "cannot bind the apt cache"
chroot "$root" /bin/true || skip "chroot does not work here"
t_setup=$(elapsed "$t0")

# in_root CMD...: runs CMD in the root as a new login would: root, HOME=/root, a plain PATH, no
# variables from this shell (no DEBIAN_FRONTEND, no OMPI_*), stdin from /dev/null.
in_root() {
  chroot "$root" /usr/bin/env -i HOME=/root USER=root LOGNAME=root TERM=dumb LANG=C.UTF-8 \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    ${http_proxy:+http_proxy=$http_proxy} ${https_proxy:+https_proxy=$https_proxy} "$@" </dev/null
}
# shellcheck disable=SC2016 # ${Status} is dpkg-query's field, not a shell variable
pre=$(in_root dpkg-query -W -f='${Status}\n' 2>/dev/null | grep -c "install ok installed")
for t in cc gcc cmake mpicc mpiexec h5pcc; do
  in_root sh -c "command -v $t" >/dev/null && die "the base root already has $t"
done
say "the root has $pre packages (minbase) and no compiler, CMake or MPI"

# ---- 1. the quickstart, end to end -------------------------------------------------------------------
log="$work/quickstart.log"
steps_env=()
[ -n "${FM_FRESH_QS_STEPS:-}" ] && steps_env=("FM_QS_STEPS=$FM_FRESH_QS_STEPS")
say "1/2 quickstart: chroot, cd /root/fmtrain && ${steps_env[*]:+${steps_env[*]} }jobscripts/local/quickstart.sh"
echo "----------------------------------------------------------------------------------------------"
t0=$(date +%s)
rc=0
in_root "${steps_env[@]}" timeout "${FM_FRESH_TIMEOUT:-3600}" bash -c 'cd /root/fmtrain && jobscripts/local/quickstart.sh' \
  2>&1 | tee "$log" || rc=$?
t_qs=$(elapsed "$t0")
echo "----------------------------------------------------------------------------------------------"
[ -n "${FM_FRESH_LOG:-}" ] && cp "$log" "$FM_FRESH_LOG"
[ "$rc" -eq 0 ] || die "the quickstart exited $rc after ${t_qs} s (output above)"
val=$(sed -n 's/^final validation loss *= *\([0-9.]*\).*/\1/p' "$log" | tail -n 1)
[ -n "$val" ] || die "the quickstart printed no final validation loss"
grep -q "^sample from the final model" "$log" || die "the quickstart printed no sample"
sample=$(awk '/^sample from the final model/ { on = 1; next } on && /^$/ { exit } on' "$log")
[ -n "$sample" ] || die "the quickstart's sample is empty"
in_root test -e /root/fmtrain/runs/quickstart/COMPLETE || die "runs/quickstart/COMPLETE is missing"
say "quickstart passed in ${t_qs} s: final validation loss $val"

# ---- 2. the release preset configures with the build packages only -----------------------------------
t0=$(date +%s)
say "2/2 configure without the test packages"
mapfile -t build_pkgs < <(in_root /root/fmtrain/modules/setup-debian.sh --list-build)
mapfile -t test_pkgs < <(in_root /root/fmtrain/modules/setup-debian.sh --list-test)
if [ "${#build_pkgs[@]}" -eq 0 ] || [ "${#test_pkgs[@]}" -eq 0 ]; then
  die "setup-debian.sh --list-build/--list-test printed nothing"
fi
installed=()
for p in "${test_pkgs[@]}"; do
  case "$p" in bible-kjv | gnuplot-nox) continue ;; esac # the quickstart's corpus and plotter
  # shellcheck disable=SC2016 # dpkg-query's field
  in_root dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" && installed+=("$p")
done
[ "${#installed[@]}" -eq 0 ] || die "test packages are installed in the root: ${installed[*]}"
in_root pkg-config --exists cmocka && die "pkg-config finds cmocka in the root"
in_root /root/fmtrain/modules/setup-debian.sh --build | grep -q "all ${#build_pkgs[@]} packages present" ||
  die "modules/setup-debian.sh --build does not find all its packages installed"
in_root sh -c 'mkdir -p /root/configure && tar -C /root/configure -xf /root/fmtrain.tar'
cfg="$work/configure.log"
in_root sh -c 'cd /root/configure/fmtrain && cmake --preset release' >"$cfg" 2>&1 ||
  { cat "$cfg"; die "cmake --preset release failed without the test packages"; }
grep -E '^-- fmtrain: ' "$cfg" | sed 's/^/    /'
grep -q '^-- fmtrain: tests not built (CMocka not found' "$cfg" ||
  { cat "$cfg"; die "configuration did not say that the tests are not built"; }
in_root sh -c 'cd /root/configure/fmtrain && cmake --preset release -DFMTRAIN_TESTS=ON' >"$cfg" 2>&1 &&
  { cat "$cfg"; die "-DFMTRAIN_TESTS=ON configured without CMocka"; }
grep -q "FMTRAIN_TESTS=ON, but CMocka" "$cfg" || { cat "$cfg"; die "-DFMTRAIN_TESTS=ON failed without naming CMocka"; }
say "    -DFMTRAIN_TESTS=ON stops: $(grep -m1 -o 'FMTRAIN_TESTS=ON, but CMocka[^.]*' "$cfg")"
t_cfg=$(elapsed "$t0")
in_root apt-get autoclean -q >/dev/null 2>&1 || true

say "passed: base root ${t_base} s ($base_how), root ready ${t_setup} s, quickstart ${t_qs} s," \
    "configure check ${t_cfg} s; total $(elapsed "$t_start") s"
say "quickstart inside the fresh root: final validation loss $val; sample:"
printf '%s\n' "$sample" | sed 's/^/    /'
exit 0

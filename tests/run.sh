#!/usr/bin/env bash
# tests/run.sh — the test command: installs what is missing (modules/setup-debian.sh), configures and
# builds the `release` and `asan` presets, and runs the whole CTest suite on release and, on asan,
# the C unit and MPI tests plus the end-to-end scripts labelled asan-e2e (tests/CMakeLists.txt).
# Then runs the README's quickstart on a bare Debian root (tests/fresh-root/run.sh; 1.5-3.5 min with
# a warm cache, 2-5.5 min cold on 2 cores; a clear SKIP where debootstrap or chroot cannot work).
# Exits non-zero on any failure. Environment: FM_TEST_PRESETS="release asan" to choose presets,
# FM_TEST_JOBS (default: number of cores) for build and test parallelism, FM_TEST_FRESH_ROOT=0 to
# skip the fresh-root step, FM_FRESH_QS_STEPS (default 200) training steps of its quickstart,
# FM_TEST_HF=0 not to install transformers for the Hugging Face comparison.
set -euo pipefail
cd "$(dirname "$0")/.."

modules/setup-debian.sh
# transformers 4.40.2 for the comparisons with Hugging Face (tests/reference: Llama; tests/hf:
# export, import, tokenizer.json): quiet, cached in
# ~/.cache/fmtrain, optional (FM_TEST_HF=0 skips it; without it those tests report SKIPPED)
if [ "${FM_TEST_HF:-1}" != 0 ]; then tests/reference/install_transformers.sh || true; fi

jobs=${FM_TEST_JOBS:-$(nproc)}
presets=${FM_TEST_PRESETS:-"release asan"}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
status=0
for p in $presets; do
  echo "=== preset $p: configure and build ==="
  log=$(mktemp)
  # FMTRAIN_TESTS=ON: the suite must be built here; a missing CMocka is an error, not an empty suite
  cmake --preset "$p" -DFMTRAIN_TESTS=ON >"$log" 2>&1 || { cat "$log"; rm -f "$log"; exit 1; }
  grep -E "^-- (fmtrain|Found (MPI|HDF5|BLAS|OpenMP))" "$log" || true
  rm -f "$log"
  cmake --build --preset "$p" -j "$jobs"
  echo "=== preset $p: test ==="
  if ! ctest --preset "$p" -j "$jobs" --timeout 900; then
    status=1
  fi
  # the asan preset's test filter leaves out the shell-driven end-to-end scripts but a few (label
  # asan-e2e, tests/CMakeLists.txt): run those too
  if [ "$p" = asan ] && ! ctest --preset asan-e2e -j "$jobs" --timeout 900; then
    status=1
  fi
done

# The README's first command on a machine with nothing installed (tests/fresh-root/README.md): the
# quickstart end to end in a debootstrapped root, then the release preset without the test packages.
# Its own step, after the suites: it builds fmtrain once more from a clean checkout. 200 training
# steps instead of the quickstart's default keep its time independent of the default's length.
if [ "${FM_TEST_FRESH_ROOT:-1}" = 0 ]; then
  echo "=== fresh root: skipped (FM_TEST_FRESH_ROOT=0) ==="
else
  echo "=== fresh root: jobscripts/local/quickstart.sh on a bare Debian root ==="
  rc=0
  FM_FRESH_QS_STEPS=${FM_FRESH_QS_STEPS:-200} tests/fresh-root/run.sh || rc=$?
  case "$rc" in
    0) echo "=== fresh root: passed ===" ;;
    77) echo "=== fresh root: SKIPPED (reason above; FM_TEST_FRESH_ROOT=0 skips it quietly) ===" ;;
    *) echo "=== fresh root: FAILED (exit $rc) ==="; status=1 ;;
  esac
fi
exit $status

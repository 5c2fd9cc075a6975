#!/usr/bin/env bash
# tests/run.sh — the test command: installs what is missing (modules/setup-debian.sh), configures and
# builds the `release` and `asan` presets, and runs the whole CTest suite for both.
# Exits non-zero on any failure. Environment: FM_TEST_PRESETS="release asan" to choose presets,
# FM_TEST_JOBS (default: number of cores) for build and test parallelism.
set -euo pipefail
cd "$(dirname "$0")/.."

modules/setup-debian.sh

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
done
exit $status

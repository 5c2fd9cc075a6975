#!/usr/bin/env bash
# Every example parameter file in inputs/ loads and validates: `fmtrain train X.ini --dry-run` exits 0
# (with data.train pointed at a small generated dataset) and prints the effective configuration,
# which itself dry-runs to the identical configuration.
set -uo pipefail
: "${FMTRAIN_EXE:?}" "${FMTRAIN_SOURCE_DIR:?}"
# In the sanitizer build: full stack unwinding on malloc, so that the LeakSanitizer suppressions for
# MPI's own allocations (tests/lsan.supp) match; the fast unwinder stops inside the MPI libraries.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}fast_unwind_on_malloc=0"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fail=0
n=0
# The dry run checks the dataset too: make a small one (enough tokens for one global batch of the
# largest example, 8 x 1025 tokens) and point data.train at it; every other key is the file's own.
for i in $(seq 1 3000); do echo "In the beginning was the word, and the word was with the model number $i."; done >"$tmp/text.txt"
"$FMTRAIN_EXE" prepare --input "$tmp/text.txt" --output "$tmp/data.h5" --vocab-size 300 --quiet ||
  { echo "FAIL: fmtrain prepare could not make the test dataset" >&2; exit 1; }
for f in "$FMTRAIN_SOURCE_DIR"/inputs/*.ini; do
  n=$((n + 1))
  name=$(basename "$f" .ini)
  if ! "$FMTRAIN_EXE" train "$f" --dry-run --set "data.train=$tmp/data.h5" >"$tmp/$name.out" 2>"$tmp/$name.err"; then
    echo "FAIL: fmtrain train $f --dry-run exited non-zero:" >&2
    cat "$tmp/$name.err" >&2
    fail=1
    continue
  fi
  grep -q "^# dry run: configuration is valid" "$tmp/$name.out" || {
    echo "FAIL: $f: no 'configuration is valid' line" >&2
    fail=1
  }
  grep -qE "^name = $name( |$)" "$tmp/$name.out" || {
    echo "FAIL: $f: run.name is not '$name' in the effective configuration" >&2
    fail=1
  }
  # The printed configuration is a parameter file that gives the same configuration again.
  mkdir -p "$tmp/again"
  cp "$tmp/$name.out" "$tmp/again/$name.ini"
  if ! "$FMTRAIN_EXE" train "$tmp/again/$name.ini" --dry-run >"$tmp/$name.out2" 2>"$tmp/$name.err2"; then
    echo "FAIL: the effective configuration of $f does not load again:" >&2
    cat "$tmp/$name.err2" >&2
    fail=1
  elif ! diff <(grep -v '^#' "$tmp/$name.out") <(grep -v '^#' "$tmp/$name.out2") >&2; then
    echo "FAIL: the effective configuration of $f changes when loaded again" >&2
    fail=1
  fi
  [ $fail -eq 0 ] && echo "ok: $f"
done
if [ "$n" -lt 2 ]; then
  echo "FAIL: expected at least 2 example inputs in inputs/, found $n" >&2
  fail=1
fi
exit $fail

#!/usr/bin/env bash
# Runs the parameter-file fuzzer for a bounded time with a seed corpus made of inputs/*.ini and the
# hand-written cases in tests/config/fuzz_seeds/. Fails when libFuzzer reports a crash, a leak, a
# sanitizer error or a timeout (libFuzzer exits non-zero and writes the crashing input).
# Usage: run_fuzz.sh FUZZ_EXE SECONDS
set -euo pipefail
exe=$1 secs=$2
: "${FMTRAIN_SOURCE_DIR:?}" "${FMTRAIN_BINARY_DIR:?}"
work="$FMTRAIN_BINARY_DIR/tests/config/fuzz_work"
rm -rf "$work"
mkdir -p "$work/corpus" "$work/artifacts"
cp "$FMTRAIN_SOURCE_DIR"/inputs/*.ini "$FMTRAIN_SOURCE_DIR"/tests/config/fuzz_seeds/* "$work/corpus/"
n=$(find "$work/corpus" -type f | wc -l)
echo "fuzzing for ${secs}s with $n seed inputs"
# One worker: CI has 2 cores and other tests run beside this one.
status=0
"$exe" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
  -dict="$FMTRAIN_SOURCE_DIR/tests/config/fuzz_config.dict" \
  -artifact_prefix="$work/artifacts/" "$work/corpus" >"$work/log" 2>&1 || status=$?
tail -n 5 "$work/log"
found=$(find "$work/artifacts" -type f | wc -l)
if [ "$status" -ne 0 ] || [ "$found" -ne 0 ]; then
  echo "FAIL: the fuzzer found a problem (exit $status); log: $work/log; inputs:" >&2
  ls -l "$work/artifacts" >&2
  grep -E "ERROR|SUMMARY|runtime error" "$work/log" | head -n 20 >&2 || true
  exit 1
fi
grep -E "^Done [0-9]+ runs" "$work/log" || { echo "FAIL: the fuzzer did not report its runs" >&2; exit 1; }

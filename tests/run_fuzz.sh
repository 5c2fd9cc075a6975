#!/usr/bin/env bash
# Runs a libFuzzer harness for a bounded time with a seed corpus and a fixed random seed
# (FM_FUZZ_SEED, default 1) so that a CI run explores the same inputs every time. Fails when libFuzzer reports a
# crash, a leak, a sanitizer error or a timeout (libFuzzer exits non-zero and writes the input).
# Usage: run_fuzz.sh FUZZ_EXE SECONDS NAME [SEED_FILE...]
# LeakSanitizer suppressions for third-party leaks: tests/<area>/fuzz_NAME.lsan when present;
# a libFuzzer dictionary: tests/<area>/fuzz_NAME.dict when present.
set -euo pipefail
exe=$1 secs=$2 name=$3
shift 3
: "${FMTRAIN_SOURCE_DIR:?}" "${FMTRAIN_BINARY_DIR:?}"
work="$FMTRAIN_BINARY_DIR/tests/fuzz_work_$name"
rm -rf "$work"
mkdir -p "$work/corpus" "$work/artifacts"
for f in "$@"; do [ -f "$f" ] && cp "$f" "$work/corpus/"; done
printf 'Hello world, it'"'"'s 2024!\n\n  tabs\tand  spaces' > "$work/corpus/text1"
head -c 3000 "$FMTRAIN_SOURCE_DIR/docs/dataset-format.md" > "$work/corpus/text2" 2>/dev/null || true
echo "fuzzing $name for ${secs}s with $(find "$work/corpus" -type f | wc -l) seed inputs"
for supp in "$FMTRAIN_SOURCE_DIR"/tests/*/"fuzz_$name.lsan"; do
  if [ -f "$supp" ]; then export LSAN_OPTIONS="suppressions=$supp:print_suppressions=0"; fi
done
dict=()
for d in "$FMTRAIN_SOURCE_DIR"/tests/*/"fuzz_$name.dict"; do
  if [ -f "$d" ]; then dict=(-dict="$d"); fi
done
status=0
# One worker: CI has 2 cores and other tests run beside this one.
"$exe" -seed="${FM_FUZZ_SEED:-1}" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=16384 "${dict[@]}" \
  -artifact_prefix="$work/artifacts/" "$work/corpus" >"$work/log" 2>&1 || status=$?
tail -n 5 "$work/log"
if [ "$status" -ne 0 ] || compgen -G "$work/artifacts/*" >/dev/null; then
  echo "FAIL: the fuzzer found a problem (exit $status); log: $work/log; inputs:" >&2
  ls -l "$work/artifacts" >&2
  grep -E "ERROR|SUMMARY|runtime error|fuzz_" "$work/log" | head -n 20 >&2 || true
  exit 1
fi
grep -E "^Done [0-9]+ runs" "$work/log" || { echo "FAIL: the fuzzer did not report its runs" >&2; exit 1; }

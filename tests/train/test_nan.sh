#!/usr/bin/env bash
# test_nan.sh FMTRAIN_FAULTS — [train] on_nan: a NaN gradient (injected after the all-reduce) stops a
# 2-rank run with exit 4 and a clear message, before the update and before any checkpoint of the
# poisoned state; with on_nan = skip a NaN loss skips that update and the run finishes.
# The NaNs come from FMTRAIN_FAULTS (tests/train/fmtrain_faults.c: the fmtrain program with a
# test-only fault injector, driven by FMTRAIN_TEST_NAN_STEP = "N:loss" or "N:grad"). The production
# fmtrain does not read FMTRAIN_TEST_NAN_STEP: checked at the end.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
faults=${1:?usage: test_nan.sh FMTRAIN_FAULTS_EXE}
fmtrain=$FMTRAIN_EXE
FMTRAIN_EXE=$faults # mpirun_n runs the fault-injecting program
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$MAKE_DATASET" "$dir/r.h5" random 32 512 16 5
write_ini "$dir/p.ini" "$dir/r.h5" "$dir/run"

set +e
FMTRAIN_TEST_NAN_STEP=5:grad mpirun_n 2 train "$dir/p.ini" --set train.steps=10 \
  --set train.warmup_steps=0 --set runtime.log_every=1 --set checkpoint.every_steps=1 \
  --set checkpoint.keep_last=10 --set run.dir="$dir/stop" >"$dir/stop.txt" 2>&1
rc=$?
set -e
cat "$dir/stop.txt"
[ "$rc" -eq 4 ] || { echo "expected exit 4 for a NaN gradient with on_nan = stop, got $rc"; exit 1; }
grep -q "step 5: the gradient norm is NaN" "$dir/stop.txt"
grep -q "without writing" "$dir/stop.txt"
[ ! -e "$dir/stop/COMPLETE" ]
# steps 1-4 were logged, step 5 was not applied
"$PY" - "$dir/stop/metrics.jsonl" <<'PYEOF'
import json, sys
steps = [r["step"] for r in map(json.loads, open(sys.argv[1])) if r["type"] == "train"]
assert steps == [1, 2, 3, 4], steps
PYEOF
# checkpoints every step: steps 1-4 are there, the poisoned step 5 is not
[ -e "$dir/stop/checkpoints/step-00000004.h5" ] || { ls "$dir/stop/checkpoints"; exit 1; }
if compgen -G "$dir/stop/checkpoints/step-*5.h5" >/dev/null; then
  echo "a checkpoint of the poisoned step 5 was written"; exit 1
fi

FMTRAIN_TEST_NAN_STEP=3:loss mpirun_n 2 train "$dir/p.ini" --set train.steps=6 \
  --set train.warmup_steps=0 --set train.on_nan=skip --set runtime.log_every=1 \
  --set run.dir="$dir/skip" >"$dir/skip.txt" 2>&1 || { cat "$dir/skip.txt"; exit 1; }
grep -q "SKIPPED" "$dir/skip.txt"
grep -q "finished 6 steps" "$dir/skip.txt"
jsonl_check "$dir/skip"
"$PY" - "$dir/skip/metrics.jsonl" <<'PYEOF'
import json, sys
recs = {r["step"]: r for r in map(json.loads, open(sys.argv[1])) if r["type"] == "train"}
assert recs[3]["skipped"] == 1 and recs[3]["loss"] is None, recs[3]
assert all(recs[s]["skipped"] == 0 for s in (1, 2, 4, 5, 6))
PYEOF

# a malformed fault is refused before anything runs
set +e
FMTRAIN_TEST_NAN_STEP=5:gradient "$faults" train "$dir/p.ini" --set run.dir="$dir/bad" >"$dir/bad.txt" 2>&1
rc=$?
set -e
[ "$rc" -eq 2 ] || { cat "$dir/bad.txt"; echo "expected exit 2 for a malformed FMTRAIN_TEST_NAN_STEP, got $rc"; exit 1; }
grep -q "expected STEP:loss or STEP:grad" "$dir/bad.txt"

# the production executable ignores the variable: the same poisoned run trains normally (exit 0,
# no NaN stop, every loss finite)
FMTRAIN_TEST_NAN_STEP=5:grad "$fmtrain" train "$dir/p.ini" --set train.steps=6 \
  --set train.warmup_steps=0 --set runtime.log_every=1 --set run.dir="$dir/prod" >"$dir/prod.txt" 2>&1 ||
  { cat "$dir/prod.txt"; echo "fmtrain reacted to FMTRAIN_TEST_NAN_STEP (a test-only variable)"; exit 1; }
grep -q "finished 6 steps" "$dir/prod.txt"
"$PY" - "$dir/prod/metrics.jsonl" <<'PYEOF'
import json, math, sys
recs = [r for r in map(json.loads, open(sys.argv[1])) if r["type"] == "train"]
assert [r["step"] for r in recs] == [1, 2, 3, 4, 5, 6], recs
assert all(r["skipped"] == 0 and r["loss"] is not None and math.isfinite(r["loss"]) for r in recs), recs
PYEOF
echo "nan ok"

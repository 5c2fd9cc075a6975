#!/usr/bin/env bash
# test_watchdog.sh FMTRAIN_FAULTS — the hang watchdog (issue 13), through the test executable
# tests/train/fmtrain_faults (fmtrain plus test hooks; FMTRAIN_TEST_STALL stalls one rank inside its
# compute time, as a dead node or a stuck file system would):
#  1. rank 1 of 2 stalls for ever in step 20: both ranks report where they were (rank 0 waiting for
#     the gradient all-reduce, rank 1 in the stalled hook) and the run exits 75 (requeue) a few
#     seconds after the limit ([runtime] hang_min_minutes = 0.05: 3 s) instead of hanging until the
#     batch system kills it; the time from the stall to the exit is printed;
#  2. the same command without the fault then resumes from the newest checkpoint and finishes;
#  3. no false alarm on a long first step: a 6 s stall of step 1 (under 4 x 3 s) is not a hang;
#  4. no false alarm on a long evaluation: 3000 validation micro-batches (several seconds, far above
#     3 s and 20 x a step) stay under the evaluation's own limit (20 x median step x 3000);
#  5. [runtime] hang_factor = 0 turns it off: a 5 s stall with a 3 s minimum passes.
set -euo pipefail
FAULTS=${1:?usage: test_watchdog.sh FMTRAIN_FAULTS}
source "$(dirname "$0")/lib.sh"
dir=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT
"$MAKE_DATASET" "$dir/r.h5" random 32 4096 16 3 >/dev/null
write_ini "$dir/p.ini" "$dir/r.h5" "$dir/run"
quick=(--set runtime.hang_min_minutes=0.05 --set runtime.log_every=1)

# 1. a stalled rank
set +e
FMTRAIN_TEST_STALL=20:1 timeout -s KILL 120 mpiexec -n 2 --oversubscribe "$FAULTS" train "$dir/p.ini" \
  --set train.steps=1000 --set checkpoint.every_steps=10 --set checkpoint.resume=auto "${quick[@]}" \
  >"$dir/out1.txt" 2>&1
rc=$?
set -e
t_exit=$(date +%s.%N)
grep -v '^step' "$dir/out1.txt"
[ "$rc" -ne 137 ] || { echo "FAIL: the stalled run was still running after 120 s (killed)"; exit 1; }
[ "$rc" -eq 75 ] || { echo "FAIL: expected exit 75 (requeue) after a hang, got $rc"; exit 1; }
grep -q "fmtrain: hang: rank 0 on .*: step 20: no progress for .* s (limit 3.0 s: \[runtime\] hang_min_minutes = 0.05); it was waiting for the gradient all-reduce (all ranks); exiting with code 75" "$dir/out1.txt" ||
  { echo "FAIL: rank 0 did not report where it waited"; exit 1; }
grep -q "fmtrain: hang: rank 1 on .*: step 20: .*it was in a test executable's hook (before_compute)" "$dir/out1.txt" ||
  { echo "FAIL: rank 1 did not report where it was"; exit 1; }
t_stall=$(sed -n 's/^fmtrain_faults: rank 1 stalls in step 20 at \([0-9.]*\)$/\1/p' "$dir/out1.txt")
[ -n "$t_stall" ] || { echo "FAIL: the stall was not announced"; exit 1; }
secs=$(awk -v a="$t_stall" -v b="$t_exit" 'BEGIN { printf "%.2f", b - a }')
echo "fault-to-exit (rank 1 of 2 stalled in step 20, limit 3 s): $secs s"
awk -v s="$secs" 'BEGIN { exit !(s < 30) }' || { echo "FAIL: $secs s from the stall to the exit"; exit 1; }

# 2. requeued: the same command resumes from the step-10 checkpoint and finishes
mpirun_n 2 train "$dir/p.ini" --set train.steps=30 --set checkpoint.every_steps=10 \
  --set checkpoint.resume=auto "${quick[@]}" >"$dir/out2.txt" 2>&1 ||
  { cat "$dir/out2.txt"; echo "FAIL: resuming after the hang failed"; exit 1; }
grep -q "resumed at step 10 " "$dir/out2.txt" || { cat "$dir/out2.txt"; echo "FAIL: did not resume at step 10"; exit 1; }
[ -e "$dir/run/COMPLETE" ]

# 3. a long first step is not a hang (first steps: 4 x hang_min_minutes = 12 s)
FMTRAIN_TEST_STALL=1:0:6 timeout -s KILL 120 mpiexec -n 2 --oversubscribe "$FAULTS" train "$dir/p.ini" \
  --set train.steps=20 --set run.dir="$dir/run3" "${quick[@]}" >"$dir/out3.txt" 2>&1 ||
  { cat "$dir/out3.txt"; echo "FAIL: a 6 s first step was taken for a hang"; exit 1; }
grep -q "rank 0 stalls in step 1" "$dir/out3.txt"
if grep -q "fmtrain: hang" "$dir/out3.txt"; then echo "FAIL: unexpected fmtrain: hang"; exit 1; fi

# 4. a long evaluation is not a hang
timeout -s KILL 200 mpiexec -n 2 --oversubscribe "$FAULTS" train "$dir/p.ini" --set train.steps=12 \
  --set train.eval_every=10 --set train.eval_batches=3000 --set run.dir="$dir/run4" "${quick[@]}" \
  >"$dir/out4.txt" 2>&1 || { cat "$dir/out4.txt"; echo "FAIL: a long evaluation was taken for a hang"; exit 1; }
if grep -q "fmtrain: hang" "$dir/out4.txt"; then echo "FAIL: unexpected fmtrain: hang"; exit 1; fi
eval_s=$("$PY" - "$dir/run4/metrics.jsonl" <<'PYEOF'
import json, sys
e = {r["step"]: r["elapsed_s"] for r in map(json.loads, open(sys.argv[1])) if r["type"] == "train"}
print(f"{e[11] - e[10]:.2f}")
PYEOF
)
echo "evaluation at step 10 took about $eval_s s (the minimum limit is 3 s)"
awk -v s="$eval_s" 'BEGIN { exit !(s > 3) }' || echo "note: the evaluation was faster than 3 s here; part 4 proved less"

# 5. hang_factor = 0: no watchdog
FMTRAIN_TEST_STALL=5:1:5 timeout -s KILL 120 mpiexec -n 2 --oversubscribe "$FAULTS" train "$dir/p.ini" \
  --set train.steps=10 --set run.dir="$dir/run5" --set runtime.hang_factor=0 "${quick[@]}" \
  >"$dir/out5.txt" 2>&1 || { cat "$dir/out5.txt"; echo "FAIL: hang_factor = 0 still stopped the run"; exit 1; }
if grep -q "fmtrain: hang" "$dir/out5.txt"; then echo "FAIL: unexpected fmtrain: hang"; exit 1; fi
echo "watchdog ok"

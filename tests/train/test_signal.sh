#!/usr/bin/env bash
# test_signal.sh — stopping cleanly: SIGUSR1 to ONE rank of two during training stops both at the same
# step boundary with exit 75 ("stopped, resumable"); SIGTERM does the same for a single rank, and the
# rerun resumes to COMPLETE; the wall-time limit (FMTRAIN_END_TIME within [run] stop_margin_minutes)
# stops with 75 as well; a SIGUSR1 during start-up is a stop request too (75), not a kill.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
dir=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT
"$MAKE_DATASET" "$dir/r.h5" random 32 4096 16 3
write_ini "$dir/p.ini" "$dir/r.h5" "$dir/run"

# wait_steps RUN_DIR N: until metrics.jsonl has N train records (at most 60 s)
wait_steps() {
  for _ in $(seq 1 600); do
    if [ -f "$1/metrics.jsonl" ] && [ "$(grep -c '"type":"train"' "$1/metrics.jsonl")" -ge "$2" ]; then
      return 0
    fi
    sleep 0.1
  done
  echo "training did not log $2 steps in time"; return 1
}

# 1. two ranks, USR1 to rank 1 only: both agree and stop
mpiexec -n 2 --oversubscribe "$FMTRAIN_EXE" train "$dir/p.ini" --set train.steps=100000 \
  --set runtime.log_every=1 --set run.dir="$dir/run2" >"$dir/out2.txt" 2>&1 &
mpi=$!
pids+=("$mpi")
wait_steps "$dir/run2" 3
ranks=$(pgrep -P "$mpi" -f "train $dir/p.ini" || true)
[ "$(wc -w <<<"$ranks")" -eq 2 ] || { echo "expected 2 rank processes under mpiexec, got: $ranks"; exit 1; }
kill -USR1 "$(tr ' ' '\n' <<<"$ranks" | sort -n | tail -1)"
set +e
wait "$mpi"
rc=$?
set -e
cat "$dir/out2.txt"
[ "$rc" -eq 75 ] || { echo "expected exit 75 after SIGUSR1, got $rc"; exit 1; }
grep -q "SIGUSR1 received" "$dir/out2.txt"
grep -q "resumable\|resume" "$dir/out2.txt"
[ ! -e "$dir/run2/COMPLETE" ]
jsonl_check "$dir/run2"

# 2. one rank, SIGTERM
"$FMTRAIN_EXE" train "$dir/p.ini" --set train.steps=100000 --set train.warmup_steps=0 \
  --set runtime.log_every=1 --set run.dir="$dir/run1" >"$dir/out1.txt" 2>&1 &
p=$!
pids+=("$p")
wait_steps "$dir/run1" 2
kill -TERM "$p"
set +e
wait "$p"
rc=$?
set -e
[ "$rc" -eq 75 ] || { cat "$dir/out1.txt"; echo "expected exit 75 after SIGTERM, got $rc"; exit 1; }
grep -q "SIGTERM received" "$dir/out1.txt"
# the stop wrote a checkpoint; running again (resume = auto) continues from its step to the end
stopped=$(sed -n 's/.*stopping at step \([0-9]*\)\/.*/\1/p' "$dir/out1.txt" | head -1)
[ -n "$stopped" ] || { cat "$dir/out1.txt"; echo "no 'stopping at step' line"; exit 1; }
"$FMTRAIN_EXE" train "$dir/p.ini" --set train.steps=$((stopped + 3)) --set train.warmup_steps=0 \
  --set runtime.log_every=1 \
  --set run.dir="$dir/run1" --set checkpoint.resume=auto >"$dir/resume1.txt" 2>&1 ||
  { cat "$dir/resume1.txt"; echo "resuming after the stop failed"; exit 1; }
grep -q "resumed at step $stopped" "$dir/resume1.txt" || { cat "$dir/resume1.txt"; exit 1; }
grep -q "finished $((stopped + 3)) steps" "$dir/resume1.txt"
[ -e "$dir/run1/COMPLETE" ]

# 3. wall time: the job "ends" in 90 s and the margin is 2 minutes: stop after the first step
set +e
FMTRAIN_END_TIME=$(( $(date +%s) + 90 )) "$FMTRAIN_EXE" train "$dir/p.ini" --set train.steps=100000 \
  --set run.stop_margin_minutes=2 --set run.dir="$dir/runw" >"$dir/outw.txt" 2>&1
rc=$?
set -e
cat "$dir/outw.txt"
[ "$rc" -eq 75 ] || { echo "expected exit 75 before the wall-time limit, got $rc"; exit 1; }
grep -q "wall-time limit" "$dir/outw.txt"

# 4. a stop requested during start-up (handlers are installed first thing): exit 75 before step 1
"$FMTRAIN_EXE" train "$dir/p.ini" --set run.dir="$dir/runs" >"$dir/outs.txt" 2>&1 &
p=$!
pids+=("$p")
for _ in $(seq 1 500); do # until the process catches SIGUSR1 (bit 10 of SigCgt)
  mask=$(awk '/^SigCgt/ { print $2 }' "/proc/$p/status" 2>/dev/null || true)
  if [ -n "$mask" ] && [ $((0x$mask & 0x200)) -ne 0 ]; then break; fi
  sleep 0.01
done
kill -USR1 "$p"
set +e
wait "$p"
rc=$?
set -e
[ "$rc" -eq 75 ] || { cat "$dir/outs.txt"; echo "expected exit 75 for a stop during start-up, got $rc"; exit 1; }
grep -q "stop requested during start-up\|SIGUSR1 received" "$dir/outs.txt"
echo "signal ok"

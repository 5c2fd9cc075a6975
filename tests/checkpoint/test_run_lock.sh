#!/usr/bin/env bash
# test_run_lock.sh — one trainer per run directory (issue 13, case 3). Before the fix a second trainer
# on the same run directory deleted the first one's in-flight checkpoint as "stale" and both wrote
# step records into one metrics.jsonl.
#  1. trainer A (2 ranks) trains; trainer B on the same run directory, with another learning rate,
#     refuses at start with exit 2, naming A's host, pid and start time, without touching anything;
#     A finishes, and metrics.jsonl holds each step once;
#  2. a holder killed with SIGKILL leaves a stale lock: the next start says so, replaces it and
#     resumes;
#  3. a lock of another host outside Slurm cannot be judged: refused with what to do; deleting the
#     file lets the run start;
#  4. a lock of this Slurm job's earlier run (another restart count: a requeue) is stale.
# Prints the time from B's start to its refusal.
set -euo pipefail
: "${FMTRAIN_EXE:?}" "${FMTRAIN_BINARY_DIR:?}"
source "$(dirname "$0")/../train/lib.sh"
dir=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do
    pkill -KILL -P "$p" 2>/dev/null || true
    kill -KILL "$p" 2>/dev/null || true
  done
  rm -rf "$dir"
}
trap cleanup EXIT
"$MAKE_DATASET" "$dir/r.h5" random 32 4096 16 3 >/dev/null
write_ini "$dir/p.ini" "$dir/r.h5" "$dir/run"
sed -i 's/^every_steps = 0/every_steps = 20/; s/^resume = never/resume = auto/; s/^log_every = 10/log_every = 1/' "$dir/p.ini"
lock="$dir/run/fmtrain.lock"

# wait_steps N: until run/metrics.jsonl has N train records (60 s at most)
wait_steps() {
  for _ in $(seq 1 600); do
    if [ -f "$dir/run/metrics.jsonl" ] && [ "$(grep -c '"type":"train"' "$dir/run/metrics.jsonl")" -ge "$1" ]; then
      return 0
    fi
    sleep 0.1
  done
  echo "FAIL: training did not log $1 steps in time"; exit 1
}

# 1. two trainers
mpiexec -n 2 --oversubscribe "$FMTRAIN_EXE" train "$dir/p.ini" --set train.steps=400 >"$dir/a.txt" 2>&1 &
a=$!
pids+=("$a")
wait_steps 3
[ -f "$lock" ] || { echo "FAIL: no lock file while A trains"; exit 1; }
cat "$lock"
t0=$(date +%s.%N)
set +e
mpiexec -n 2 --oversubscribe "$FMTRAIN_EXE" train "$dir/p.ini" --set train.steps=400 --set train.lr=1e-3 \
  >"$dir/b.txt" 2>&1
rc=$?
set -e
t1=$(date +%s.%N)
cat "$dir/b.txt"
[ "$rc" -eq 2 ] || { echo "FAIL: the second trainer exited $rc, expected 2 (refused)"; exit 1; }
host=$(hostname)
grep -q "fmtrain: configuration error: run directory $dir/run is in use by another fmtrain (host $host, pid [0-9]*, user .*, since 20[0-9-]*T[0-9:]*Z .*pid [0-9]* runs on this host" "$dir/b.txt" ||
  { echo "FAIL: the refusal does not name the holder"; exit 1; }
grep -q "give this run another \[run\] dir" "$dir/b.txt"
echo "refusal: $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') s from the second trainer's start to its exit"
wait "$a" || { cat "$dir/a.txt"; echo "FAIL: trainer A did not finish"; exit 1; }
[ -e "$dir/run/COMPLETE" ]
[ ! -e "$lock" ] || { echo "FAIL: the lock outlived its trainer"; exit 1; }
"$PY" - "$dir/run/metrics.jsonl" <<'PYEOF'
import json, sys
steps = [r["step"] for r in map(json.loads, open(sys.argv[1])) if r["type"] == "train"]
assert len(steps) == len(set(steps)), "duplicate step records"
assert steps == list(range(1, 401)), (steps[:5], steps[-5:])
print(f"metrics.jsonl: {len(steps)} step records, each once")
PYEOF

# 2. a stale lock: the holder killed with SIGKILL
rm -f "$dir/run/COMPLETE"
mpiexec -n 2 --oversubscribe "$FMTRAIN_EXE" train "$dir/p.ini" --set train.steps=1000 >"$dir/c.txt" 2>&1 &
c=$!
pids+=("$c")
for _ in $(seq 1 600); do grep -q "resumed at step 400" "$dir/c.txt" && break; sleep 0.1; done
sleep 1
pkill -KILL -P "$c" || true
kill -KILL "$c" 2>/dev/null || true
wait "$c" 2>/dev/null || true
[ -f "$lock" ] || { echo "FAIL: the killed trainer left no lock (nothing to test)"; exit 1; }
mpirun_n 2 train "$dir/p.ini" --set train.steps=1000 --set train.eval_every=0 >"$dir/d.txt" 2>&1 ||
  { cat "$dir/d.txt"; echo "FAIL: could not start after a stale lock"; exit 1; }
grep -q "run directory $dir/run: replaced a stale lock (host $host, pid .*): pid [0-9]* no longer runs on this host" "$dir/d.txt" ||
  { cat "$dir/d.txt"; echo "FAIL: the stale lock was not reported"; exit 1; }
grep -q "resumed at step" "$dir/d.txt"

# 3. another host, outside Slurm: cannot be judged
mkdir -p "$dir/run3"
printf 'host=elsewhere-node17\npid=4242\njob=\nrestart=0\nuser=ana\nsince=2026-01-02T03:04:05Z\nsince_epoch=0\n' >"$dir/run3/fmtrain.lock"
set +e
mpirun_n 1 train "$dir/p.ini" --set run.dir="$dir/run3" --set train.steps=5 --set train.warmup_steps=0 >"$dir/e.txt" 2>&1
rc=$?
set -e
cat "$dir/e.txt"
[ "$rc" -eq 2 ] || { echo "FAIL: an undecidable lock was not refused (exit $rc)"; exit 1; }
grep -q "in use by another fmtrain (host elsewhere-node17, pid 4242, user ana, .*since 2026-01-02T03:04:05Z.*if that process no longer runs (on elsewhere-node17: ps -p 4242), delete $dir/run3/fmtrain.lock and start again" "$dir/e.txt"
rm "$dir/run3/fmtrain.lock"
mpirun_n 1 train "$dir/p.ini" --set run.dir="$dir/run3" --set train.steps=5 --set train.warmup_steps=0 >"$dir/f.txt" 2>&1

# 4. this Slurm job's earlier run (a requeue)
mkdir -p "$dir/run4"
printf 'host=elsewhere-node17\npid=4242\njob=777\nrestart=0\nuser=ana\nsince=2026-01-02T03:04:05Z\n' >"$dir/run4/fmtrain.lock"
SLURM_JOB_ID=777 SLURM_RESTART_COUNT=1 mpirun_n 1 train "$dir/p.ini" --set run.dir="$dir/run4" \
  --set train.steps=5 --set train.warmup_steps=0 >"$dir/g.txt" 2>&1 || { cat "$dir/g.txt"; echo "FAIL: a requeued job's own old lock was refused"; exit 1; }
grep -q "replaced a stale lock .*it is Slurm job 777's earlier run (restart 0; this is restart 1)" "$dir/g.txt"
echo "run lock ok"

#!/usr/bin/env bash
# test_placement.sh — more ranks than cores: placement warns and training still runs; the dry run
# prints the placement table, the parameter count, the memory estimate and the global batch; a run
# that would evaluate without validation data fails at start.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$MAKE_DATASET" "$dir/r.h5" random 32 512 16 4
write_ini "$dir/p.ini" "$dir/r.h5" "$dir/run"
cores=$(hwloc-calc --number-of core machine:0 2>/dev/null || nproc)
n=$((cores + 1))
mpirun_n 2 train "$dir/p.ini" --dry-run >"$dir/dry.txt"
cat "$dir/dry.txt"
grep -q "parameters" "$dir/dry.txt"
grep -q "global batch: 8 micro_batch x 1 grad_accum x 2 ranks x 32 seq_len = 512 tokens" "$dir/dry.txt"
grep -q "memory per rank" "$dir/dry.txt"
grep -qi "rank" "$dir/dry.txt"
grep -q "dry run: configuration is valid" "$dir/dry.txt"
[ ! -e "$dir/run" ] || { echo "a dry run must not create the run directory"; exit 1; }

mpirun_n "$n" train "$dir/p.ini" --set train.steps=3 --set train.warmup_steps=0 --set runtime.threads=0 --set runtime.bind=auto \
  >"$dir/out.txt" 2>&1 || { cat "$dir/out.txt"; echo "training with $n ranks on $cores cores failed"; exit 1; }
cat "$dir/out.txt"
grep -qi "warning" "$dir/out.txt" || { echo "expected a placement warning for $n ranks on $cores cores"; exit 1; }
grep -q "finished 3 steps" "$dir/out.txt"

# start-up checks: evaluation without a validation split fails at once (exit 3), not hours later
"$MAKE_DATASET" "$dir/noval.h5" random 32 64 0 1
set +e
out=$(mpirun_n 2 train "$dir/p.ini" --set data.train="$dir/noval.h5" --set train.eval_every=10 \
  --set run.dir="$dir/noval" 2>&1)
rc=$?
set -e
if [ "$rc" -ne 3 ] || ! grep -q "validation split has fewer than" <<<"$out"; then
  echo "expected exit 3 for eval_every without validation data, got $rc: $out"; exit 1
fi
echo "placement ok"

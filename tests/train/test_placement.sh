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
# the parameter count of this shape (2 layers, d_model 64, seq_len 32, 256 tokens): 118,528
grep -qE "^# model: .*: 118,528 parameters$" "$dir/dry.txt" || { echo "no or a wrong parameter count"; exit 1; }
grep -q "global batch: 8 micro_batch x 1 grad_accum x 2 ranks x 32 seq_len = 512 tokens" "$dir/dry.txt"
grep -qE "^# memory per rank \(backend cpu, 1 thread, \[train\] zero = 0 on 2 ranks\): [0-9.]+ [KMG]?i?B \(" "$dir/dry.txt" ||
  { echo "no memory estimate line"; exit 1; }
# the placement table: one row per rank, ranks 0 and 1 in order, both without a GPU (device = cpu)
grep -q "^# placement: 2 ranks on 1 node" "$dir/dry.txt"
ranks=$(placement_ranks "$dir/dry.txt")
[ "$ranks" = "0 1 " ] || { echo "placement table rows are for ranks '$ranks', expected '0 1 '"; exit 1; }
[ "$(grep -cE '^# +[0-9]+ .* no GPU$' "$dir/dry.txt")" -eq 2 ] || { echo "expected 2 rows with 'no GPU'"; exit 1; }
grep -q "dry run: configuration is valid" "$dir/dry.txt"
[ ! -e "$dir/run" ] || { echo "a dry run must not create the run directory"; exit 1; }

mpirun_n "$n" train "$dir/p.ini" --set train.steps=3 --set train.warmup_steps=0 --set runtime.threads=0 --set runtime.bind=auto \
  >"$dir/out.txt" 2>&1 || { cat "$dir/out.txt"; echo "training with $n ranks on $cores cores failed"; exit 1; }
cat "$dir/out.txt"
grep -q "^warning .*: $n ranks share $cores core" "$dir/out.txt" ||
  { echo "expected a placement warning for $n ranks on $cores cores"; exit 1; }
ranks=$(placement_ranks "$dir/out.txt")
[ "$ranks" = "$(seq 0 $((n - 1)) | tr '\n' ' ')" ] || { echo "placement table rows are for ranks '$ranks' with $n ranks"; exit 1; }
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

#!/usr/bin/env bash
# test_converge.sh — 2 ranks learn the synthetic "repeat" task (tests/train/make_dataset.c: every
# token repeats the one three places back, two new random tokens every 32) to near its floor: the
# best possible mean loss is 2 ln(8)/32 = 0.13; with the attention or embedding gradient broken the
# same rule stays above 1.1 (shown in-process by tests/train/test_learns.c). Also checks
# metrics.jsonl (valid JSON Lines with the documented fields), config.ini (parses back) and
# train.log, the evaluation records (their elapsed_s on the train records' clock) and the COMPLETE
# marker.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$MAKE_DATASET" "$dir/repeat.h5" repeat 32 2048 64 1
write_ini "$dir/p.ini" "$dir/repeat.h5" "$dir/run"
mpirun_n 2 train "$dir/p.ini" --set train.steps=200 --set train.eval_every=100 \
  --set train.eval_batches=4 --set runtime.log_every=25 | tee "$dir/out.txt"
grep -q "global batch: 8 micro_batch x 1 grad_accum x 2 ranks x 32 seq_len = 512 tokens" "$dir/out.txt"
jsonl_check "$dir/run"
[ -s "$dir/run/train.log" ]
[ -e "$dir/run/COMPLETE" ]
"$FMTRAIN_EXE" train "$dir/run/config.ini" --dry-run >/dev/null
"$PY" - "$dir/run/metrics.jsonl" <<'PYEOF'
import json, math, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
train = [r for r in recs if r["type"] == "train"]
evals = [r for r in recs if r["type"] == "eval"]
first, last = train[0]["loss"], train[-1]["loss"]
print(f"loss: first {first:.4f} (ln 256 = {math.log(256):.4f}), last {last:.4f}; "
      f"val: {[round(e['val_loss'], 4) for e in evals]}")
assert train[-1]["step"] == 200
assert abs(first - math.log(256)) < 0.5, "the initial loss should be about ln(vocab)"
assert last < 0.2, f"did not learn the repeat task (floor 0.13): final loss {last}"
assert [e["step"] for e in evals] == [100, 200], evals
assert evals[-1]["val_loss"] < 0.2, evals[-1]
# elapsed_s is one clock for both record types: the evaluation at step 100 comes after the train
# record of step 100 and before the one of step 125 (it once counted this segment's time twice)
at = {r["step"]: r["elapsed_s"] for r in train}
assert at[100] <= evals[0]["elapsed_s"] <= at[125], (at[100], evals[0], at[125])
PYEOF
echo "converge ok"

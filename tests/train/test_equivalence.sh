#!/usr/bin/env bash
# test_equivalence.sh — the same global batch on 1 rank (micro_batch 4 x grad_accum 2) and on 2 ranks
# (micro_batch 4 x grad_accum 1) gives the same loss curve over 50 steps to 1e-5 relative and the same
# gradient norms to 1e-4: the all-reduce averages exactly what gradient accumulation sums, and the
# data order does not depend on the rank count.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$MAKE_DATASET" "$dir/repeat.h5" repeat 32 1024 16 2
write_ini "$dir/p.ini" "$dir/repeat.h5" "$dir/run1"
mpirun_n 1 train "$dir/p.ini" --set train.micro_batch=4 --set train.grad_accum=2 \
  --set runtime.log_every=1 --set run.dir="$dir/run1" >/dev/null
mpirun_n 2 train "$dir/p.ini" --set train.micro_batch=4 --set train.grad_accum=1 \
  --set runtime.log_every=1 --set run.dir="$dir/run2" >/dev/null
"$PY" - "$dir/run1/metrics.jsonl" "$dir/run2/metrics.jsonl" <<'PYEOF'
import json, sys
def losses(p):
    return [(r["step"], r["loss"], r["grad_norm"]) for r in map(json.loads, open(p)) if r["type"] == "train"]
a, b = losses(sys.argv[1]), losses(sys.argv[2])
assert [s for s, _, _ in a] == list(range(1, 51)), a
assert [s for s, _, _ in a] == [s for s, _, _ in b]
worst = max(abs(x - y) / abs(x) for (_, x, _), (_, y, _) in zip(a, b))
worst_gn = max(abs(x - y) / abs(x) for (_, _, x), (_, _, y) in zip(a, b))
print(f"1 vs 2 ranks over 50 steps: max relative loss difference {worst:.3g}, "
      f"grad norm {worst_gn:.3g}; loss {a[0][1]:.4f} -> {a[-1][1]:.4f}")
assert a[-1][1] < a[0][1] - 1.0, "the runs should learn something"
assert worst <= 1e-5, worst
# The gradient norm is checked too, 10x looser: it is a derivative and the norm of ~10^5 summed
# squares, so the fp32 rounding of the two reduction orders (the 1/2 of grad_accum inside the
# backward vs the average after the all-reduce) shows more in it than in the loss (measured: 3e-7).
# 1e-4 is still far below what a real fault gives: an all-reduce that sums instead of averaging
# doubles the norm, and a bucket left out of the all-reduce changes it by percent.
assert worst_gn <= 1e-4, worst_gn
PYEOF
echo "equivalence ok"

#!/usr/bin/env bash
# test_bf16.sh — [train] zero 1 and 2 with [runtime] precision = bf16 (issue 19 after the bf16
# merge). With bf16 activations the model's matmuls read a bf16 copy of the weights; a shard's
# update rewrites the copy of its own range, the all-gather brings the other ranks' fp32 masters and
# the trainer re-makes their copy (trainer.c, refresh_bf16_outside_shard). If any rank's copy lagged
# behind its masters the forward would use stale weights and the losses part at step 2.
#  1. 2 ranks, 30 steps, bf16: zero 1 and zero 2 against zero 0 — losses and final checkpoints
#     bit-identical (the stages sum in the same order; to_bf16 is adamw_update's rounding);
#  2. the runs really were bf16: the banner says so and the losses differ from an fp32 zero-1 run.
# Needs a build whose CPU backend has bf16 (oneDNN); skipped (77) otherwise.
set -euo pipefail
source "$(dirname "$0")/../train/lib.sh"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$MAKE_DATASET" "$dir/d.h5" repeat 32 1024 16 2 >/dev/null
write_ini "$dir/p.ini" "$dir/d.h5" "$dir/unused"
model=(--set model.n_layer=3 --set model.n_head=4 --set model.d_model=128 --set train.micro_batch=4
       --set train.steps=30 --set runtime.log_every=1)

if ! "$FMTRAIN_EXE" train "$dir/p.ini" "${model[@]}" --set runtime.precision=bf16 \
     --set run.dir="$dir/dry" --dry-run >"$dir/dry.txt" 2>&1; then
  grep -q "precision = bf16 needs oneDNN" "$dir/dry.txt" || { cat "$dir/dry.txt"; exit 1; }
  echo "SKIPPED: this build's CPU backend has no bf16 (built without oneDNN)"
  exit 77
fi

train() { # train ZERO PRECISION NAME [--set ...]: 2 ranks into $dir/NAME
  local z=$1 p=$2 name=$3
  shift 3
  mpirun_n 2 train "$dir/p.ini" "${model[@]}" --set train.zero="$z" --set runtime.precision="$p" \
    --set run.dir="$dir/$name" "$@" >"$dir/$name.txt" 2>&1 ||
    { cat "$dir/$name.txt"; echo "run $name failed" >&2; exit 1; }
}
train 0 bf16 z0
train 1 bf16 z1
train 2 bf16 z2
train 1 fp32 z1-fp32
# the shared bf16 weight copy (each rank writes its shard's) against messages and all-gathered
# masters whose copy each rank re-makes (refresh_bf16_outside_shard)
train 1 bf16 z1-msg --set runtime.shared_memory=off
grep -q "share one node" "$dir/z1.txt" || { cat "$dir/z1.txt"; echo "FAIL: zero 1 did not share node memory"; exit 1; }
grep -qi "bf16" "$dir/z1.txt" || { cat "$dir/z1.txt"; echo "FAIL: no bf16 in the zero-1 banner"; exit 1; }

"$PY" - "$dir" <<'PYEOF'
import glob, json, sys, h5py, numpy as np
d = sys.argv[1]
def losses(run):
    return [r["loss"] for r in map(json.loads, open(f"{d}/{run}/metrics.jsonl")) if r["type"] == "train"]
def ckpt(run):
    return h5py.File(sorted(glob.glob(f"{d}/{run}/checkpoints/step-*.h5"))[-1], "r")
l0 = losses("z0")
assert len(l0) == 30, len(l0)
for run in ("z1", "z2", "z1-msg"):
    l = losses(run)
    diff = [i + 1 for i, (a, b) in enumerate(zip(l0, l)) if a != b]
    assert not diff and len(l) == len(l0), f"{run} bf16: losses differ from zero 0 bf16 from step {diff[:1]}"
    fa, fb, n = ckpt("z0"), ckpt(run), 0
    for g in ("params", "adam_m", "adam_v"):
        for name in fa[g]:
            assert np.array_equal(fa[g][name][()].view(np.uint32), fb[g][name][()].view(np.uint32)), f"{run}: {g}/{name} differs"
            n += 1
    print(f"  {run} bf16 vs zero 0 bf16: 30 losses and {n} checkpoint datasets bit-identical")
lf = losses("z1-fp32")
worst = max(abs(a - b) / abs(a) for a, b in zip(l0, lf))
print(f"  bf16 vs fp32 (zero 1): max relative loss difference {worst:.3g} (must be > 0: bf16 was used)")
assert worst > 0, "the bf16 runs computed exactly what fp32 computes: was bf16 used?"
print(f"  final losses: bf16 {l0[-1]:.6f}, fp32 {lf[-1]:.6f}")
PYEOF
echo "zero bf16 ok"

#!/usr/bin/env bash
# test_bf16.sh — [runtime] precision = bf16 end to end (kernels/kernels.h, "Precision"):
#  1. the tiny KJV model of inputs/tiny-cpu.ini (2 layers, 4 heads, d_model 128, seq_len 64, the King
#     James Bible with 4096 token ids) trained 200 steps in fp32 and in bf16 from the same seed: the
#     bf16 run's final validation loss is within 1 % of the fp32 run's (and the run learned);
#  2. determinism: 100 steps + a resume to 200 in bf16 ends bit-identical to the straight bf16 run
#     (losses and every checkpoint dataset);
#  3. checkpoints do not depend on the precision: the fp32 run's step-100 checkpoint resumed in bf16
#     (and the bf16 one in fp32) continues (same datasets, same names, fp32), and its losses stay
#     within 1 % of the run it left;
#  4. the banner says the precision and the GEMM library; precision = bf16 in a build without
#     oneDNN is refused with exit 2 (configuration error) naming oneDNN.
# Needs a build whose CPU backend lists bf16 (oneDNN); without it only (4) runs and the test reports
# itself skipped (exit 77) after checking the refusal. Without bible-kjv it uses the repository's
# docs as corpus (the 1 % holds for it too).
set -euo pipefail
: "${FMTRAIN_EXE:?}" "${FMTRAIN_SOURCE_DIR:?}"
source "$(dirname "$0")/lib.sh"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

if command -v bible >/dev/null; then
  bible -f Gen1:1-Rev22:21 >"$dir/corpus.txt"
  corpus="the King James Bible"
else
  cat "$FMTRAIN_SOURCE_DIR"/docs/*.md >"$dir/corpus.txt"
  corpus="fmtrain's docs (no bible-kjv installed)"
fi
"$FMTRAIN_EXE" prepare --input "$dir/corpus.txt" --output "$dir/kjv.h5" --vocab-size 4096 --quiet
# inputs/tiny-cpu.ini's model and schedule, 2 threads, on this dataset
sed -e "s|^train = .*|train = $dir/kjv.h5|" -e 's|^dir = .*|dir = unused|' \
  -e 's|^threads = 0|threads = 2|' -e 's|^bind = auto|bind = none|' \
  -e 's|^eval_windows = 32|eval_windows = 200|' \
  "$FMTRAIN_SOURCE_DIR/inputs/tiny-cpu.ini" >"$dir/p.ini"
grep -q "^threads = 2" "$dir/p.ini" && grep -q "^eval_windows = 200" "$dir/p.ini"

echo "== the banner; bf16 where the build has it"
set +e
"$FMTRAIN_EXE" train "$dir/p.ini" --set run.dir="$dir/dry" --set runtime.precision=bf16 --dry-run \
  >"$dir/dry.txt" 2>&1
rc=$?
set -e
if ! grep -q "oneDNN GEMMs" "$dir/dry.txt"; then
  if [ "$rc" -ne 2 ] || ! grep -q "precision = bf16 needs oneDNN" "$dir/dry.txt"; then
    cat "$dir/dry.txt"; echo "a build without oneDNN must refuse bf16 (exit 2), got $rc"; exit 1
  fi
  echo "refused without oneDNN: $(grep -o 'precision = bf16 needs oneDNN[^;]*' "$dir/dry.txt")"
  echo "SKIPPED: this build's CPU backend has no bf16 (built without oneDNN)"
  exit 77
fi
[ "$rc" -eq 0 ] || { cat "$dir/dry.txt"; exit 1; }
grep -q "compute: CPU, 2 OpenMP threads, bf16, oneDNN GEMMs; precision bf16" "$dir/dry.txt" ||
  { cat "$dir/dry.txt"; echo "no compute line naming bf16 and oneDNN"; exit 1; }
grep -q "bf16 weight copy" "$dir/dry.txt" || { cat "$dir/dry.txt"; echo "no bf16 copy in the memory line"; exit 1; }
grep "compute:" "$dir/dry.txt"

run() { # run NAME PRECISION [--set ...] : 200 steps (or as set), checkpoints every 100
  local name=$1 prec=$2
  shift 2
  "$FMTRAIN_EXE" train "$dir/p.ini" --set run.dir="$dir/$name" --set runtime.precision="$prec" \
    --set train.eval_every=100 --set checkpoint.every_steps=100 --set checkpoint.keep_last=5 "$@" \
    >"$dir/$name.txt" 2>&1 || { cat "$dir/$name.txt"; exit 1; }
}
echo "== 200 steps of $corpus in fp32 and in bf16"
run fp32 fp32
run bf16 bf16
grep -q "precision fp32" "$dir/fp32.txt" && grep -q "precision bf16" "$dir/bf16.txt"
echo "== bf16: 100 steps, then a new process resumes to 200"
run bf16r bf16 --set checkpoint.resume="$dir/bf16/checkpoints/step-00000100.h5"
echo "== the fp32 checkpoint of step 100 continued in bf16, the bf16 one in fp32"
run f2b bf16 --set checkpoint.resume="$dir/fp32/checkpoints/step-00000100.h5"
run b2f fp32 --set checkpoint.resume="$dir/bf16/checkpoints/step-00000100.h5"

"$PY" - "$dir" <<'PYEOF'
import json, sys, h5py, numpy as np
d = sys.argv[1]
def recs(run, kind):
    return {r["step"]: r for r in map(json.loads, open(f"{d}/{run}/metrics.jsonl")) if r["type"] == kind}
tr = {r: recs(r, "train") for r in ("fp32", "bf16", "bf16r", "f2b", "b2f")}
ev = {r: recs(r, "eval") for r in ("fp32", "bf16", "bf16r", "f2b", "b2f")}
v32, v16 = ev["fp32"][200]["val_loss"], ev["bf16"][200]["val_loss"]
rel = abs(v16 - v32) / v32
first = tr["fp32"][min(tr["fp32"])]["loss"]
print(f"1. val loss after 200 steps: fp32 {v32:.5f}, bf16 {v16:.5f}: {100 * rel:.3f} % apart "
      f"(first train loss {first:.3f})")
assert rel <= 0.01, f"bf16 val loss {v16} is not within 1 % of fp32's {v32}"
assert v32 < first - 1.0 and v16 < first - 1.0, "the runs did not learn"
assert v16 != v32, "bf16 gave exactly fp32's loss: was it bf16?"

# 2. the resumed bf16 run is the straight bf16 run, bit for bit
steps = [s for s in tr["bf16r"] if s > 100 and s in tr["bf16"]]  # the logged steps of both
assert steps and all(tr["bf16r"][s]["loss"] == tr["bf16"][s]["loss"] for s in steps), "losses differ"
assert ev["bf16r"][200]["val_loss"] == v16
fa = h5py.File(f"{d}/bf16/checkpoints/step-00000200.h5", "r")
fb = h5py.File(f"{d}/bf16r/checkpoints/step-00000200.h5", "r")
n = 0
for g in ("params", "adam_m", "adam_v"):
    for name in fa[g]:
        x, y = fa[g][name][()], fb[g][name][()]
        assert x.dtype == np.float32, (g, name, x.dtype)  # checkpoints are fp32 in bf16 runs
        assert np.array_equal(x.view(np.uint32), y.view(np.uint32)), (g, name)
        n += 1
print(f"2. bf16 resumed at 100: losses of steps 101..200 and {n} datasets bit-identical")

# 3. the checkpoints of both precisions have the same datasets, names and types; a run moves
fc = h5py.File(f"{d}/fp32/checkpoints/step-00000100.h5", "r")
fd = h5py.File(f"{d}/bf16/checkpoints/step-00000100.h5", "r")
for g in ("params", "adam_m", "adam_v"):
    assert sorted(fc[g]) == sorted(fd[g]), g
    for name in fc[g]:
        assert fc[g][name].dtype == fd[g][name].dtype == np.float32 and fc[g][name].shape == fd[g][name].shape
for run, base in (("f2b", "fp32"), ("b2f", "bf16")):
    worst = max(abs(tr[run][s]["loss"] - tr[base][s]["loss"]) / tr[base][s]["loss"]
                for s in tr[run] if s > 100 and s in tr[base])
    vrel = abs(ev[run][200]["val_loss"] - ev[base][200]["val_loss"]) / ev[base][200]["val_loss"]
    print(f"3. {run}: resumed at 100 in the other precision; losses within {100 * worst:.3f} %, val loss "
          f"within {100 * vrel:.3f} % of the run it left")
    assert worst <= 0.01 and vrel <= 0.01, (run, worst, vrel)
PYEOF
grep -q "resuming from .*step-00000100.h5" "$dir/f2b.txt"
echo "bf16 ok"

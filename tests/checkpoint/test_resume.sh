#!/usr/bin/env bash
# test_resume.sh — checkpoints through `fmtrain train`:
#  1. bit-exact resume at 1 and 2 ranks: 60 steps straight vs 30 steps + a new process resuming from
#     the step-30 checkpoint + 30 steps: identical losses (every step) and bit-identical parameters and
#     AdamW moments in the final checkpoints;
#  2. a real stop: SIGUSR1 in the middle of a 2-rank run (exit 75, checkpoint at the stop), the same
#     command again resumes (resume = auto) and ends bit-identical to the straight run;
#  3. another rank count: a 2-rank checkpoint resumed on 1 rank and a 1-rank one on 2 ranks (grad_accum
#     adjusted, global batch kept): losses agree with the straight run to 1e-5 relative;
#  4. a damaged newest checkpoint: resume = auto warns and falls back to the previous one;
#  5. refusals: a changed [model] d_model (exit 2 naming it), resume = never in a run directory
#     with checkpoints (exit 2) and --overwrite (starts afresh), every checkpoint damaged (exit 3);
#  6. `fmtrain inspect`: exit 0 on a good file, 3 on a bit flip or a truncated file.
set -euo pipefail
: "${FMTRAIN_EXE:?}" "${FMTRAIN_BINARY_DIR:?}"
source "$(dirname "$0")/../train/lib.sh"
dir=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT
"$MAKE_DATASET" "$dir/d.h5" repeat 32 1024 16 2 >/dev/null
write_ini "$dir/p.ini" "$dir/d.h5" "$dir/unused"
common=(--set train.steps=60 --set runtime.log_every=1 --set checkpoint.every_steps=30
        --set checkpoint.keep_last=5 --set checkpoint.resume=auto)

# compare RUN_A RUN_B FIRST_STEP TOLERANCE EXACT_PARAMS : losses from FIRST_STEP on, final checkpoints
compare() {
  "$PY" - "$@" <<'PYEOF'
import json, sys, h5py, numpy as np
a, b, first, tol, exact = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5] == "1"
def losses(run):
    d = {}
    for r in map(json.loads, open(run + "/metrics.jsonl")):
        if r["type"] == "train":
            d[r["step"]] = r["loss"]
    return d
la, lb = losses(a), losses(b)
steps = [s for s in sorted(la) if s >= first]
assert steps and all(s in lb for s in steps), (sorted(lb)[:5], steps[:5])
worst = max(abs(la[s] - lb[s]) / abs(la[s]) for s in steps)
fa, fb = (h5py.File(r + "/checkpoints/step-00000060.h5", "r") for r in (a, b))
nd = 0
for g in ("params", "adam_m", "adam_v"):
    for name in fa[g]:
        x, y = fa[g][name][()], fb[g][name][()]
        if exact:
            assert np.array_equal(x.view(np.uint32), y.view(np.uint32)), f"{g}/{name} differs"
        nd += 1
assert int(fa.attrs["step"]) == int(fb.attrs["step"]) == 60
print(f"  steps {first}..60: max relative loss difference {worst:.3g}; {nd} datasets "
      f"{'bit-identical' if exact else 'compared'}")
assert worst <= tol, worst
PYEOF
}

# flip FILE : flips one bit inside the data of /params/h.1.mlp.c_fc.weight
flip() {
  "$PY" - "$1" <<'PYEOF'
import sys, h5py
p = sys.argv[1]
with h5py.File(p, "r") as f:
    off = f["params/h.1.mlp.c_fc.weight"].id.get_offset()
with open(p, "r+b") as fh:
    fh.seek(off + 100); b = fh.read(1); fh.seek(off + 100); fh.write(bytes([b[0] ^ 0x01]))
PYEOF
}

for n in 1 2; do
  echo "== $n rank(s): 60 straight vs 30 + resume + 30"
  mpirun_n "$n" train "$dir/p.ini" "${common[@]}" --set run.dir="$dir/a$n" >/dev/null
  mpirun_n "$n" train "$dir/p.ini" "${common[@]}" --set run.dir="$dir/b$n" \
    --set checkpoint.resume="$dir/a$n/checkpoints/step-00000030.h5" >"$dir/b$n.txt"
  grep -q "resuming from .*step-00000030.h5 (step 30, written by $n rank" "$dir/b$n.txt"
  # safe changes are allowed and logged, one line per key
  grep -q "configuration changed since .*step-00000030.h5: run.dir = $dir/b$n (was $dir/a$n)" "$dir/b$n.txt"
  compare "$dir/a$n" "$dir/b$n" 31 0 1
done

echo "== 2 ranks: SIGUSR1 mid-run, then the same command resumes"
long=(--set train.steps=60 --set runtime.log_every=1 --set checkpoint.every_steps=1000
      --set checkpoint.resume=auto --set run.dir="$dir/c")
# A slow first segment (threads=1, 2 ranks) so that the signal lands before step 60.
mpiexec -n 2 --oversubscribe "$FMTRAIN_EXE" train "$dir/p.ini" "${long[@]}" >"$dir/c1.txt" 2>&1 &
mpi=$!
pids+=("$mpi")
for _ in $(seq 1 600); do
  if [ -f "$dir/c/metrics.jsonl" ] && [ "$(grep -c '"type":"train"' "$dir/c/metrics.jsonl")" -ge 3 ]; then break; fi
  sleep 0.02
done
kill -USR1 $(pgrep -P "$mpi" -f "train $dir/p.ini") 2>/dev/null || true
set +e
wait "$mpi"
rc=$?
set -e
if [ "$rc" -eq 75 ]; then
  grep -q "checkpoint step-000000[0-9][0-9].h5" "$dir/c1.txt"
  stopped=$(find "$dir/c/checkpoints" -name 'step-*.h5' | wc -l)
  mpirun_n 2 train "$dir/p.ini" "${long[@]}" >"$dir/c2.txt"
  grep -q "resuming from" "$dir/c2.txt"
  echo "  stopped with exit 75 ($stopped checkpoint), resumed:"
  compare "$dir/a2" "$dir/c" 1 0 1
else
  cat "$dir/c1.txt"
  echo "the run ended (exit $rc) before the signal was handled"
  exit 1
fi

echo "== another rank count (global batch kept)"
mpirun_n 1 train "$dir/p.ini" "${common[@]}" --set run.dir="$dir/x21" \
  --set checkpoint.resume="$dir/a2/checkpoints/step-00000030.h5" >"$dir/x21.txt"
grep -q "grad_accum 1 -> 2" "$dir/x21.txt"
compare "$dir/a2" "$dir/x21" 31 1e-5 0
mpirun_n 1 train "$dir/p.ini" "${common[@]}" --set train.micro_batch=4 --set train.grad_accum=4 \
  --set run.dir="$dir/a1g" >/dev/null
mpirun_n 2 train "$dir/p.ini" "${common[@]}" --set train.micro_batch=4 --set train.grad_accum=4 \
  --set run.dir="$dir/x12" --set checkpoint.resume="$dir/a1g/checkpoints/step-00000030.h5" >"$dir/x12.txt"
grep -q "grad_accum 4 -> 2" "$dir/x12.txt"
compare "$dir/a1g" "$dir/x12" 31 1e-5 0

echo "== a damaged newest checkpoint: resume = auto falls back"
mkdir -p "$dir/d/checkpoints"
cp "$dir/a2/checkpoints/step-00000030.h5" "$dir/a2/checkpoints/step-00000060.h5" "$dir/d/checkpoints/"
cp "$dir/a2/config.ini" "$dir/d/" 2>/dev/null || true
flip "$dir/d/checkpoints/step-00000060.h5"
mpirun_n 2 train "$dir/p.ini" "${common[@]}" --set run.dir="$dir/d" >"$dir/d.txt" 2>&1
grep -q "warning: cannot resume from .*step-00000060.h5.*CRC-32.*falling back" "$dir/d.txt"
grep -q "resuming from .*step-00000030.h5" "$dir/d.txt"
compare "$dir/a2" "$dir/d" 31 0 1

echo "== refusals"
set +e
mpirun_n 1 train "$dir/p.ini" "${common[@]}" --set run.dir="$dir/e" --set model.d_model=32 \
  --set checkpoint.resume="$dir/a1/checkpoints/step-00000030.h5" >"$dir/e.txt" 2>&1
rc=$?
set -e
if ! { [ "$rc" -eq 2 ] && grep -q "\[model\] d_model = 32, but checkpoint" "$dir/e.txt"; }; then
  cat "$dir/e.txt"; echo "expected exit 2 naming [model] d_model"; exit 1;
fi
set +e
mpirun_n 1 train "$dir/p.ini" "${common[@]}" --set run.dir="$dir/a1" --set checkpoint.resume=never \
  >"$dir/f.txt" 2>&1
rc=$?
set -e
if ! { [ "$rc" -eq 2 ] && grep -q "already holds checkpoints" "$dir/f.txt"; }; then
  cat "$dir/f.txt"; echo "expected resume = never to refuse"; exit 1;
fi
mpirun_n 1 train "$dir/p.ini" "${common[@]}" --set run.dir="$dir/a1" --set checkpoint.resume=never \
  --set train.steps=12 --overwrite >"$dir/g.txt" 2>&1
grep -q "deleted 2 checkpoints" "$dir/g.txt"
[ "$(find "$dir/a1/checkpoints" -name 'step-*.h5' | wc -l)" -eq 1 ]

mkdir -p "$dir/h/checkpoints"
cp "$dir/a2/checkpoints/step-00000060.h5" "$dir/h/checkpoints/"
truncate -s 50000 "$dir/h/checkpoints/step-00000060.h5"
set +e
mpirun_n 2 train "$dir/p.ini" "${common[@]}" --set run.dir="$dir/h" >"$dir/h.txt" 2>&1
rc=$?
set -e
if ! { [ "$rc" -eq 3 ] && grep -q "every checkpoint in .* is damaged" "$dir/h.txt"; }; then
  cat "$dir/h.txt"; echo "expected exit 3 when every checkpoint is damaged"; exit 1;
fi

echo "== inspect"
"$FMTRAIN_EXE" inspect "$dir/a2/checkpoints/step-00000060.h5" >"$dir/i.txt"
grep -q "^step            60" "$dir/i.txt"
grep -q "^writer ranks    2" "$dir/i.txt"
grep -q "checksums       .* checked, 0 failed" "$dir/i.txt"
cp "$dir/a2/checkpoints/step-00000060.h5" "$dir/bad.h5"
flip "$dir/bad.h5"
set +e
"$FMTRAIN_EXE" inspect "$dir/bad.h5" >"$dir/j.txt" 2>&1
rc=$?
set -e
if ! { [ "$rc" -eq 3 ] && grep -q "FAILED  /params/h.1.mlp.c_fc.weight" "$dir/j.txt"; }; then
  cat "$dir/j.txt"; echo "expected inspect to fail (3) on the bit flip"; exit 1;
fi
cp "$dir/a2/checkpoints/step-00000060.h5" "$dir/t.h5"
truncate -s 100000 "$dir/t.h5"
set +e
"$FMTRAIN_EXE" inspect "$dir/t.h5" >"$dir/k.txt" 2>&1
rc=$?
set -e
[ "$rc" -eq 3 ] || { cat "$dir/k.txt"; echo "expected inspect to fail (3) on a truncated file"; exit 1; }
echo "resume ok"

#!/usr/bin/env bash
# quickstart.sh — fmtrain end to end on one machine (a fresh Debian box with 2 cores is enough):
#   1. installs the missing Debian packages (modules/setup-debian.sh; asks for sudo when needed),
#   2. builds the release preset (build/release/fmtrain),
#   3. turns the King James Bible (package bible-kjv) into a token dataset with `fmtrain prepare`
#      (byte-level BPE, 1024 tokens) at data/kjv.h5,
#   4. trains the tiny GPT of inputs/tiny-cpu.ini on 2 MPI ranks (`mpiexec -n 2`) for a few minutes,
#      writing checkpoints, metrics and logs to runs/quickstart,
#   5. prints a sample from the final model, the loss against ln(vocab) and the corpus's unigram
#      entropy (the loss of the best model that ignores context), and where the metrics and plot are.
#
# Environment: FM_QS_STEPS (default 600) training steps; FM_QS_RANKS (default 2); FM_QS_SKIP_SETUP=1
# skips step 1 (packages); FM_QS_EXE=/path/to/fmtrain uses that build instead of step 2.
# Re-running starts the run afresh (runs/quickstart is replaced).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
steps=${FM_QS_STEPS:-600}
ranks=${FM_QS_RANKS:-2}
run=runs/quickstart
say() { printf '\n=== %s\n' "$*"; }

if [ "${FM_QS_SKIP_SETUP:-0}" != 1 ]; then
  say "1/5 packages (modules/setup-debian.sh)"
  modules/setup-debian.sh
fi

if [ -n "${FM_QS_EXE:-}" ]; then
  exe=$FM_QS_EXE
else
  say "2/5 build (cmake --preset release)"
  log=$(mktemp)
  if ! { cmake --preset release && cmake --build --preset release -j "$(nproc)"; } >"$log" 2>&1; then
    cat "$log"
    rm -f "$log"
    echo "quickstart: the build failed (log above)" >&2
    exit 1
  fi
  rm -f "$log"
  exe=$root/build/release/fmtrain
fi
"$exe" --version | head -3

say "3/5 dataset: the King James Bible -> data/kjv.h5"
mkdir -p data
if [ ! -s data/kjv.h5 ]; then
  # one verse per line; drop the "Ge1:1" references so the model learns the text itself
  bible -f Gen1:1-Rev22:21 | sed 's/^[^ ]* //' >data/kjv.txt
  "$exe" prepare --input data/kjv.txt --output data/kjv.h5 --vocab-size 1024
else
  echo "data/kjv.h5 exists: reusing it (delete it to rebuild)"
fi
read -r vocab unigram < <(/usr/bin/python3 - data/kjv.h5 <<'PY'
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "r") as f:
    t = f["train/tokens"][:]
    v = int(f.attrs["vocab_size"])
c = np.bincount(t, minlength=v).astype(np.float64)
p = c[c > 0] / c.sum()
print(v, float(-(p * np.log(p)).sum()))
PY
)

say "4/5 training: mpiexec -n $ranks fmtrain train inputs/tiny-cpu.ini ($steps steps)"
rm -rf "$run"
export OMPI_MCA_rmaps_base_oversubscribe=1
if [ "$(id -u)" -eq 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
mpiexec -n "$ranks" "$exe" train inputs/tiny-cpu.ini --set run.dir="$run" \
  --set train.steps="$steps" --set train.eval_every=100 --set checkpoint.every_steps=200 \
  --set checkpoint.resume=never

say "5/5 results"
if "$exe" help sample >/dev/null 2>&1; then
  echo "sample from the final model (fmtrain sample --checkpoint $run --prompt 'And God said'):"
  "$exe" sample --checkpoint "$run" --prompt "And God said" --tokens 120 --temperature 0.8 \
    --top-k 40 --seed 1
  echo
fi
/usr/bin/python3 - "$run/metrics.jsonl" "$vocab" "$unigram" <<'PY'
import json, math, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
vocab, unigram = int(sys.argv[2]), float(sys.argv[3])
train = [r for r in recs if r["type"] == "train"]
evals = [r for r in recs if r["type"] == "eval"]
last = sum(r["loss"] for r in train[-3:]) / len(train[-3:])
print(f"ln(vocab = {vocab})              = {math.log(vocab):.3f} nats  (a model that knows nothing)")
print(f"unigram entropy of the corpus  = {unigram:.3f} nats  (best model that ignores context)")
print(f"first training loss            = {train[0]['loss']:.3f}")
print(f"final training loss            = {last:.3f}  (mean of the last 3 logged steps)")
if evals:
    print(f"final validation loss          = {evals[-1]['val_loss']:.3f}")
gap = unigram - last
verdict = "well below" if gap > 0.5 else ("below" if gap > 0 else "NOT below")
print(f"the loss is {verdict} the unigram entropy by {gap:.2f} nats: the model uses context")
PY
if command -v gnuplot >/dev/null; then
  "$exe" plot "$run"
fi
echo
echo "run directory: $run"
echo "  metrics:     $run/metrics.jsonl (one JSON object per logged step and evaluation)"
echo "  human log:   $run/train.log;  effective configuration: $run/config.ini"
[ -e "$run/loss.png" ] && echo "  loss plot:   $run/loss.png"
[ -d "$run/checkpoints" ] && echo "  checkpoints: $run/checkpoints/"
echo "next: docs/training.md (running on a cluster: jobscripts/generic/)"

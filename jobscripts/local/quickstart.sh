#!/usr/bin/env bash
# quickstart.sh — fmtrain end to end on one machine (a fresh Debian box with 2 cores is enough):
#   1. installs the missing Debian packages (modules/setup-debian.sh --build, bible-kjv and
#      gnuplot-nox; sudo when needed),
#   2. builds fmtrain with the release preset (build/release/fmtrain; not the test suite),
#   3. turns the King James Bible (package bible-kjv) into a token dataset with `fmtrain prepare`
#      (byte-level BPE, 2048 tokens) at data/kjv.h5,
#   4. trains the small GPT of inputs/kjv-small.ini on 2 MPI ranks (`mpiexec -n 2`) for 3-5 minutes,
#      writing checkpoints, metrics and logs to runs/quickstart,
#   5. prints a sample from the final model, the loss against ln(vocab) and the corpus's unigram
#      entropy (the loss of the best model that ignores context), and where the metrics and plot are.
#
# Environment: FM_QS_STEPS (default 1500) training steps; FM_QS_RANKS (default 2); FM_QS_SKIP_SETUP=1
# skips step 1 (packages); FM_QS_EXE=/path/to/fmtrain uses that build instead of step 2.
# Re-running starts the run afresh (runs/quickstart is replaced).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
steps=${FM_QS_STEPS:-1500}
vocab_size=2048
ranks=${FM_QS_RANKS:-2}
run=runs/quickstart
say() { printf '\n=== %s\n' "$*"; }

if [ "${FM_QS_SKIP_SETUP:-0}" != 1 ]; then
  say "1/5 packages (modules/setup-debian.sh --build, plus the corpus and gnuplot)"
  modules/setup-debian.sh --build
  extra=()
  for p in bible-kjv gnuplot-nox; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || extra+=("$p")
  done
  if [ ${#extra[@]} -gt 0 ]; then
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd=sudo
    $sudo_cmd apt-get install -y -q --no-install-recommends "${extra[@]}" ||
      { $sudo_cmd apt-get update -q && $sudo_cmd apt-get install -y -q --no-install-recommends "${extra[@]}"; }
  fi
fi

if [ -n "${FM_QS_EXE:-}" ]; then
  exe=$FM_QS_EXE
else
  say "2/5 build (cmake --preset release)"
  log=$(mktemp)
  # only the fmtrain executable: where CMocka is installed the preset also configures the test
  # suite (FMTRAIN_TESTS=AUTO), which the quickstart does not need to build
  if ! { cmake --preset release && cmake --build --preset release -j "$(nproc)" --target fmtrain; } >"$log" 2>&1; then
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
have_vocab=""
if [ -s data/kjv.h5 ]; then
  have_vocab=$(h5dump -a /vocab_size data/kjv.h5 2>/dev/null | awk '/\(0\)/ { print $2 }') || true
  [ "$have_vocab" = "$vocab_size" ] ||
    echo "data/kjv.h5 has a vocabulary of ${have_vocab:-?}, not $vocab_size: rebuilding it"
fi
if [ "$have_vocab" != "$vocab_size" ]; then
  # one verse per line; drop the "Ge1:1" references so the model learns the text itself
  bible -f Gen1:1-Rev22:21 | sed 's/^[^ ]* //' >data/kjv.txt
  "$exe" prepare --input data/kjv.txt --output data/kjv.h5 --vocab-size "$vocab_size" --force
else
  echo "data/kjv.h5 exists with vocabulary $vocab_size: reusing it (delete it to rebuild)"
fi
# the unigram entropy of the training tokens (nats): h5dump lists them, awk counts
read -r vocab unigram < <(
  v=$(h5dump -a /vocab_size data/kjv.h5 | awk '/\(0\)/ { print $2 }')
  h5dump -d /train/tokens -y -w 1 data/kjv.h5 |
    awk -v v="$v" '{ gsub(/[ ,]/, "") } /^[0-9]+$/ { c[$0]++; n++ }
      END { for (k in c) { p = c[k] / n; h -= p * log(p) }; printf "%d %.6f\n", v, h }')

say "4/5 training: mpiexec -n $ranks fmtrain train inputs/kjv-small.ini ($steps steps)"
rm -rf "$run"
export OMPI_MCA_rmaps_base_oversubscribe=1
if [ "$(id -u)" -eq 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
mpiexec -n "$ranks" "$exe" train inputs/kjv-small.ini --set run.dir="$run" \
  --set train.steps="$steps" --set train.eval_every=250 --set checkpoint.every_steps=500 \
  --set checkpoint.resume=never

say "5/5 results"
if "$exe" help sample >/dev/null 2>&1; then
  echo "sample from the final model (fmtrain sample --checkpoint $run --prompt 'And God said'):"
  "$exe" sample --checkpoint "$run" --prompt "And God said" --tokens 120 --temperature 0.8 \
    --top-k 40 --seed 1
  echo
fi
# the loss figures from metrics.jsonl (JSON Lines; fields as docs/training.md lists them)
awk -v vocab="$vocab" -v unigram="$unigram" '
  function num(key,   m) { if (match($0, "\"" key "\":[-0-9.eE+]+")) return substr($0, RSTART + length(key) + 3, RLENGTH - length(key) - 3); return "" }
  /"type":"train"/ { l = num("loss"); if (l != "") { if (first == "") first = l; last3[n3++ % 3] = l } }
  /"type":"eval"/  { v = num("val_loss"); if (v != "") val = v }
  END {
    k = n3 < 3 ? n3 : 3; s = 0; for (i = 0; i < k; i++) s += last3[i]; last = s / k
    printf "ln(vocab = %d)              = %.3f nats  (a model that knows nothing)\n", vocab, log(vocab)
    printf "unigram entropy of the corpus  = %.3f nats  (best model that ignores context)\n", unigram
    printf "first training loss            = %.3f\n", first
    printf "final training loss            = %.3f  (mean of the last 3 logged steps)\n", last
    if (val != "") printf "final validation loss          = %.3f\n", val
    gap = unigram - last
    verdict = gap > 0.5 ? "well below" : (gap > 0 ? "below" : "NOT below")
    printf "the loss is %s the unigram entropy by %.2f nats: the model uses context\n", verdict, gap
  }' "$run/metrics.jsonl"
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

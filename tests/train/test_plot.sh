#!/usr/bin/env bash
# test_plot.sh — `fmtrain plot`: draws loss.png from metrics.jsonl with gnuplot; without gnuplot on
# PATH it fails with exit 2 and says how to install it.
set -euo pipefail
: "${FMTRAIN_EXE:?}"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
run="$dir/run"
mkdir -p "$run"
for i in $(seq 1 20); do
  printf '{"type":"train","step":%d,"tokens":%d,"loss":%s,"lr":0.001,"grad_norm":1,"step_ms":5,"tokens_per_s":1000,"mfu":null,"elapsed_s":%d,"skipped":0}\n' \
    "$i" $((i * 4096)) "$(awk -v i="$i" 'BEGIN{printf "%.4f", 5.5/(1+0.1*i)}')" "$i" >>"$run/metrics.jsonl"
  if [ $((i % 5)) -eq 0 ]; then
    printf '{"type":"eval","step":%d,"tokens":%d,"val_loss":%s,"elapsed_s":%d}\n' \
      "$i" $((i * 4096)) "$(awk -v i="$i" 'BEGIN{printf "%.4f", 5.7/(1+0.1*i)}')" "$i" >>"$run/metrics.jsonl"
  fi
done

# without gnuplot: exit 2 and an install hint (PATH holds no gnuplot)
set +e
out=$(PATH=/nonexistent "$FMTRAIN_EXE" plot "$run" 2>&1)
rc=$?
set -e
[ "$rc" -eq 2 ] || { echo "expected exit 2 without gnuplot, got $rc: $out"; exit 1; }
grep -q "apt-get install gnuplot" <<<"$out" || { echo "no install hint: $out"; exit 1; }

# a directory without metrics: a clear error naming it
set +e
out=$("$FMTRAIN_EXE" plot "$dir/nothing" 2>&1)
rc=$?
set -e
if [ "$rc" -eq 0 ] || ! grep -q "$dir/nothing" <<<"$out"; then
  echo "bad error for a missing run: $rc $out"
  exit 1
fi

if ! command -v gnuplot >/dev/null; then
  echo "gnuplot not installed: the drawing part is skipped"
  exit 77
fi
out=$("$FMTRAIN_EXE" plot "$run")
echo "$out"
grep -q "(20 train and 4 val points)" <<<"$out" || { echo "wrong point counts"; exit 1; }
[ -s "$run/loss.png" ] || { echo "no loss.png"; exit 1; }
# a PNG starts with \x89PNG
[ "$(head -c 4 "$run/loss.png" | od -An -tx1 | tr -d ' \n')" = "89504e47" ] || { echo "loss.png is not a PNG"; exit 1; }
"$FMTRAIN_EXE" plot "$run" --output "$dir/other.png"
[ -s "$dir/other.png" ]
echo "plot ok"

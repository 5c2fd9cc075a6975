#!/usr/bin/env bash
# bench_precision.sh — GPT-2 124M training steps in fp32 and bf16, interleaved, several rounds: the
# series behind docs/performance.md's table ("Benchmark"). One fmtrain-bench run per (round, seq,
# precision), in the order round 1: seq 64 fp32, seq 64 bf16, seq 256 fp32, seq 256 bf16; round 2:
# ...; each run measures its own GEMM peak in its precision (before and after its steps) and prints
# the load average, so every ratio comes from one run.
#
# Usage: bench/model/bench_precision.sh BENCH_EXE ROUNDS CLOCK [MIN_PEAK_GFLOPS DEADLINE_SECONDS]
#   CLOCK: wall or cpu (fmtrain-bench --clock). With MIN_PEAK_GFLOPS, each run waits (through
#   bench_when_idle.sh, at most DEADLINE_SECONDS) until an fp32 GEMM probe reaches that rate, i.e.
#   until the shared machine's cores are free; a run that finds no free moment is reported as such.
# Prints one summary line per run (to stdout; the runs' full output goes to stderr):
#   <UTC time> seq=<T> precision=<p> s/step=<median> (fwd/bwd/opt) steps=<min-max> peak=<4 figures>
#   load=<start> -> <end> <the result line>
# It judges nothing: docs/performance.md says which runs were accepted and why.
set -euo pipefail
if [ $# -lt 3 ]; then
  sed -n '2,17p' "$0" >&2
  exit 2
fi
exe=$1 rounds=$2 clock=$3 min_peak=${4:-} deadline=${5:-600}
here=$(dirname "$0")
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
args=(--layers 12 --heads 12 --dim 768 --vocab 50257 --max-seq 1024 --batch 4 --threads 2
      --steps 5 --warmup 1 --clock "$clock")
for r in $(seq 1 "$rounds"); do
  for seq in 64 256; do
    for p in fp32 bf16; do
      out=$(mktemp)
      if [ -n "$min_peak" ]; then
        "$here/bench_when_idle.sh" "$exe" "$min_peak" "$deadline" -- "${args[@]}" --seq "$seq" \
          --precision "$p" >"$out" 2>&1 || true
      else
        "$exe" "${args[@]}" --seq "$seq" --precision "$p" >"$out" 2>&1 || true
      fi
      cat "$out" >&2
      if ! grep -q "^tokens_per_s=" "$out"; then
        echo "$(date -u +%T) round=$r seq=$seq precision=$p: no result ($(tail -1 "$out"))"
        rm -f "$out"
        continue
      fi
      med=$(grep "median of" "$out" | sed 's/.*steps: \([0-9.]*\) s\/step (forward \([0-9.]*\), backward \([0-9.]*\), norm+AdamW \([0-9.]*\)).*/\1 (\2 \/ \3 \/ \4)/')
      range=$(grep "^gpt2 step " "$out" | sed 's/.*: \([0-9.]*\) s (.*/\1/' | sort -g | sed -n '1p;$p' | paste -sd-)
      peaks=$(grep "^GEMM peak \(before\|after\)" "$out" |
                sed 's/.*matmul \([0-9.]*\) GFLOP\/s, BLAS sgemm on its threads \([0-9.]*\).*/\1, \2/' | paste -sd/)
      l0=$(grep "load average (start)" "$out" | awk '{print $4}')
      l1=$(grep "load average (end)" "$out" | awk '{print $4}')
      echo "$(date -u +%T) round=$r seq=$seq precision=$p s/step=$med steps=$range" \
        "peak(backend, blas)=$peaks load=$l0->$l1 $(tail -1 "$out")"
      rm -f "$out"
    done
  done
done

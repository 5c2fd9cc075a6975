#!/usr/bin/env bash
# bench_when_idle.sh — runs fmtrain-bench on a shared machine only when the cores are free.
#
# Usage: bench/model/bench_when_idle.sh BENCH_EXE MIN_PEAK_GFLOPS DEADLINE_SECONDS -- FMTRAIN_BENCH_ARGS...
#
# Every ~10 s it probes the sgemm peak for about a second (a one-layer fmtrain-bench with --peak-size
# 1024 at the same --threads); as soon as the probe reaches MIN_PEAK_GFLOPS it runs fmtrain-bench with
# the given arguments, prints its output and exits with its status. Exits 75 when the deadline passes
# without a free moment. The accepted run still has to be checked: its four peak figures and its step
# times must agree (docs/performance.md, "Benchmark").
set -euo pipefail
if [ $# -lt 4 ] || [ "$4" != "--" ]; then
  echo "usage: $0 BENCH_EXE MIN_PEAK_GFLOPS DEADLINE_SECONDS -- FMTRAIN_BENCH_ARGS..." >&2
  exit 2
fi
exe=$1 min_peak=$2 deadline=$(( $(date +%s) + $3 ))
shift 4
threads=1
prev=""
for a in "$@"; do
  [ "$prev" = "--threads" ] && threads=$a
  prev=$a
done
while [ "$(date +%s)" -lt "$deadline" ]; do
  peak=$("$exe" --layers 1 --heads 1 --dim 64 --vocab 128 --seq 16 --batch 1 --threads "$threads" \
           --steps 1 --warmup 0 --peak-size 1024 | tail -1 | sed 's/.*gemm_peak_gflops=\([0-9.]*\).*/\1/')
  echo "probe $(date -u +%T): peak ${peak} GFLOP/s, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  if awk -v p="$peak" -v m="$min_peak" 'BEGIN { exit !(p >= m) }'; then
    date -u
    exec "$exe" "$@"
  fi
  sleep 10
done
echo "no free moment before the deadline" >&2
exit 75

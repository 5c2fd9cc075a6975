#!/usr/bin/env bash
# validate_gpu.sh — the GPU half of docs/plan.md's validation (a helper, not a CTest test: it needs a
# GPU): the CUDA backend's step for the device table (jobscripts/sites/measured.plan) and the GPU
# memory fmtrain-bench's model + optimizer take (nvidia-smi memory.used sampled every 50 ms), to
# compare with the model's formula. Run on the GPU node; files go to $OUT (default /tmp).
#
# FM_PRECISION=bf16 (or fp32) adds --precision to every run.
# Usage: FM_BENCH=build/release/bench/model/fmtrain-bench tests/plan/validate_gpu.sh
set -u
bench=${FM_BENCH:-bin/fmtrain-bench}
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:/usr/local/cuda/lib:${LD_LIBRARY_PATH:-}"
out=${OUT:-/tmp}
exec > >(tee "$out/plan-gpu.txt") 2>&1
echo "=== $(date -u) $(hostname)"
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,clocks.max.sm,clocks.max.mem --format=csv
nproc; uptime
b() { # name, then fmtrain-bench arguments
  local name=$1; shift
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 50 > "$out/mem-$name.txt" 2>&1 &
  local sp=$!
  sleep 0.3
  local s
  s=$(date +%s.%N)
  echo "=== $name: fmtrain-bench --device cuda $*"
  timeout 100 "$bench" --device cuda --threads 4 --peak-size 2048 "$@" ${FM_PRECISION:+--precision "$FM_PRECISION"}
  local rc=$?
  sleep 0.3; kill $sp; wait $sp 2>/dev/null
  echo "=== $name exit $rc in $(awk -v a="$s" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s; memory.used MiB min/max: $(sort -n "$out/mem-$name.txt" | head -1) / $(sort -n "$out/mem-$name.txt" | tail -1)"
}
G=(--layers 12 --heads 12 --dim 768 --vocab 50257 --seq 1024 --max-seq 1024)
b gpt2-b8 "${G[@]}" --batch 8 --steps 7 --warmup 2
b gpt2-b16 "${G[@]}" --batch 16 --steps 5 --warmup 1
b llama-b8 --arch llama --kv-heads 4 "${G[@]}" --batch 8 --steps 7 --warmup 2
b tiny --arch llama --layers 2 --heads 4 --kv-heads 2 --dim 128 --ffn 398 --vocab 1024 --tie --seq 64 --batch 8 --steps 30 --warmup 5
b gpt2-b8-again "${G[@]}" --batch 8 --steps 7 --warmup 2
echo "=== done $(date -u)"

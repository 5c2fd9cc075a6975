#!/usr/bin/env bash
# validate_cpu.sh — the measurements behind docs/plan.md's validation table (a helper, not a CTest
# test: it runs for many minutes and its numbers depend on the machine). For GPT-2 124M (seq_len 64,
# micro_batch 4, vocabulary 50257) and inputs/llama-tiny.ini it runs, REPS rounds, interleaved:
#   - fmtrain-bench with 2 threads and with 1 thread (the [measured] points of measured.plan), with
#     --clock cpu: process CPU time / threads, so that other jobs on a shared machine do not count;
#   - real `fmtrain train` runs on 1 rank x 2 threads and 2 ranks x 1 thread, each twice, with S1 and
#     S2 steps, under /usr/bin/time -v: the CPU time per step of the training loop is
#     (CPU(S2) - CPU(S1)) / (S2 - S1) / threads per rank, per rank — start-up, data loading and the final
#     checkpoint cancel out. Open MPI yields while it waits (mpi_yield_when_idle), so a rank waiting
#     for the other in the all-reduce is charged little. Also printed: the wall-clock median step_ms of
#     metrics.jsonl (the logged windows after the first) and every rank's peak RSS.
# Every run prints the load average before and after it, and a one-second sgemm probe on 2 threads
# (free cores: 200-210 GFLOP/s) taken just before it.
#
# FM_CASES (default "gpt2 tiny") picks the models; "mid" is the calibration model of the device table's
# trainer_overhead_ms, allreduce_gbs and allreduce_buffer_factor (a GPT-2 of 4 layers, d_model 256,
# vocabulary 8192: neither of the validated models).
#
# FM_TRAIN_CASES (default: FM_CASES) picks the models of the training runs, e.g. "tiny" to have
# fmtrain-bench points of GPT-2 without its long training runs.
# FM_PRECISION (default fp32) is the precision of every run: fmtrain-bench --precision and
# [runtime] precision (set explicitly: `auto` would be bf16 on a oneDNN build with AVX512_BF16).
# FM_SHARED_MEMORY (default off: the MPI messages the device table's all-reduce entries were
# calibrated with) is [runtime] shared_memory of the training runs; auto: node-shared memory.
#
# Usage: tests/plan/validate_cpu.sh BUILD_DIR WORK_DIR [REPS]      (e.g. build/release /tmp/fm-plan 3)
set -euo pipefail
build=$(cd "$1" && pwd)
work=$2
reps=${3:-3}
prec=${FM_PRECISION:-fp32}
shm=${FM_SHARED_MEMORY:-off}
src=${FMTRAIN_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
fm=${FM_FMTRAIN:-$build/fmtrain}
bench=${FM_BENCH:-$build/bench/model/fmtrain-bench}
export OMP_WAIT_POLICY=passive OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_mpi_yield_when_idle=1
mkdir -p "$work"
[ -f "$work/kjv1k.h5" ] || "$fm" prepare --input "$build/kjv.txt" --output "$work/kjv1k.h5" --vocab-size 1024 >/dev/null
[ -f "$work/kjv8k.h5" ] || "$fm" prepare --input "$build/kjv.txt" --output "$work/kjv8k.h5" --vocab-size 8192 >/dev/null
load() { cut -d' ' -f1-3 /proc/loadavg; }
probe() {
  "$bench" --layers 1 --heads 1 --dim 64 --vocab 128 --seq 16 --batch 1 --threads 2 --steps 1 \
    --warmup 0 --peak-size 1024 | tail -1 | sed 's/.*gemm_peak_gflops=\([0-9.]*\).*/\1/'
}

# The two models as parameter-file overrides (evaluation off; no periodic checkpoint: the final one
# is written after the last step and cancels in the difference).
gpt2=("$src/inputs/gpt2-124m.ini" --set data.train="$work/kjv8k.h5" --set model.vocab_size=50257
      --set model.seq_len=64 --set train.micro_batch=4 --set train.grad_accum=1
      --set train.warmup_steps=2 --set train.eval_every=0 --set checkpoint.every_steps=0
      --set checkpoint.every_minutes=0 --set checkpoint.keep_last=1 --set runtime.log_every=5
      --set runtime.device=cpu)
tiny=("$src/inputs/llama-tiny.ini" --set data.train="$work/kjv1k.h5" --set train.eval_every=0
      --set checkpoint.every_steps=0 --set checkpoint.keep_last=1 --set runtime.log_every=50)
mid=("$src/inputs/tiny-cpu.ini" --set data.train="$work/kjv8k.h5" --set model.vocab_size=8192
     --set model.n_layer=4 --set model.n_head=4 --set model.d_model=256 --set model.seq_len=64
     --set train.micro_batch=8 --set train.grad_accum=1 --set train.eval_every=0
     --set checkpoint.every_steps=0 --set checkpoint.every_minutes=0 --set checkpoint.keep_last=1
     --set runtime.log_every=20 --set runtime.device=cpu)
gtiny=("$src/inputs/tiny-cpu.ini" --set data.train="$work/kjv1k.h5" --set train.eval_every=0
       --set checkpoint.every_steps=0 --set checkpoint.keep_last=1 --set runtime.log_every=50)

# median step_ms of the logged windows after the first
median_ms() {
  /usr/bin/python3 - "$1" <<'PY'
import json, sys, statistics
ms = [json.loads(l)["step_ms"] for l in open(sys.argv[1]) if '"step_ms"' in l]
print("%.2f" % statistics.median(ms[1:]) if len(ms) > 1 else "nan")
PY
}

# one training run: name ranks threads steps args... -> "cpu_s_rank0 cpu_s_rank1 ..." in $cpu, RSS in $rss
train_once() {
  local name=$1 np=$2 th=$3 steps=$4; shift 4
  local dir=$work/run-$name-$np-$steps
  rm -rf "$dir"
  mpirun -n "$np" --oversubscribe --bind-to none bash -c \
    "/usr/bin/time -v -o $work/time-$name-$np-$steps.\$OMPI_COMM_WORLD_RANK $fm train $* --set train.steps=$steps --set run.dir=$dir --set runtime.threads=$th --set runtime.bind=none --set runtime.precision=$prec --set runtime.shared_memory=$shm" \
    >"$work/out-$name-$np-$steps.txt" 2>&1 || { echo "FAILED: $name on $np ranks (see $work/out-$name-$np-$steps.txt)"; exit 1; }
  cpu="" rss=""
  for r in $(seq 0 $((np - 1))); do
    local f=$work/time-$name-$np-$steps.$r
    cpu="$cpu $(awk -F': ' '/User time/ {u=$2} /System time/ {s=$2} END {printf "%.3f", u+s}' "$f")"
    rss="$rss $(awk '/Maximum resident set size/ {print $6}' "$f")"
  done
  wall_ms=$(median_ms "$dir/metrics.jsonl")
}

train() { # name ranks threads S1 S2 args...
  local name=$1 np=$2 th=$3 s1=$4 s2=$5; shift 5
  local p l0; p=$(probe); l0=$(load)
  train_once "$name" "$np" "$th" "$s1" "$@"; local cpu1=$cpu
  train_once "$name" "$np" "$th" "$s2" "$@"; local cpu2=$cpu
  local per
  per=$(/usr/bin/python3 -c 'import sys; a=[float(x) for x in sys.argv[1].split()]; b=[float(x) for x in sys.argv[2].split()]; n=int(sys.argv[3]); t=int(sys.argv[4]); print(" ".join("%.4f" % ((y-x)/n/t) for x, y in zip(a, b)))' "$cpu1" "$cpu2" "$((s2 - s1))" "$th")
  echo "train $name $prec ranks=$np threads=$th probe $p load $l0 -> $(load) cpu_s_per_step(per rank): $per wall_step_ms_median($s2 steps): $wall_ms maxrss_kb($s2 steps):$rss"
}

bench_run() { # name threads args...
  local name=$1 th=$2; shift 2
  local p l0 line; p=$(probe); l0=$(load)
  line=$("$bench" "$@" --threads "$th" --clock cpu --precision "$prec" | grep -E '^(tokens_per_s|.*median of)' | tr '\n' ' ')
  echo "bench $name $prec threads=$th probe $p load $l0 -> $(load) $line"
}

G=(--layers 12 --heads 12 --dim 768 --vocab 50257 --seq 64 --max-seq 64 --batch 4 --steps 5 --warmup 1)
T=(--arch llama --layers 2 --heads 4 --kv-heads 2 --dim 128 --ffn 398 --vocab 1024 --tie --seq 64 --batch 8
   --steps 60 --warmup 10)
M=(--layers 4 --heads 4 --dim 256 --vocab 8192 --seq 64 --max-seq 64 --batch 8 --steps 20 --warmup 3)
GT=(--layers 2 --heads 4 --dim 128 --vocab 1024 --seq 64 --max-seq 64 --batch 8 --steps 60 --warmup 10)
cases=${FM_CASES:-gpt2 tiny}
train_cases=${FM_TRAIN_CASES:-$cases}
echo "validate_cpu.sh: $(date -u) $(uname -n), $(nproc) cores, reps $reps, precision $prec, $(git -C "$src" rev-parse --short HEAD 2>/dev/null)"
for rep in $(seq 1 "$reps"); do
  echo "--- round $rep $(date -u +%T)"
  for c in $cases; do
    case $c in
      gpt2) bench_run gpt2 2 "${G[@]}"; bench_run gpt2 1 "${G[@]}" ;;
      tiny) bench_run tiny 2 "${T[@]}"; bench_run tiny 1 "${T[@]}" ;;
      mid) bench_run mid 2 "${M[@]}"; bench_run mid 1 "${M[@]}" ;;
      gtiny) bench_run gtiny 2 "${GT[@]}"; bench_run gtiny 1 "${GT[@]}" ;;
      *) echo "unknown case $c (gpt2, tiny, mid, gtiny)"; exit 2 ;;
    esac
  done
  for c in $train_cases; do
    case $c in
      gpt2) train gpt2 1 2 5 25 "${gpt2[@]}"; train gpt2 2 1 5 25 "${gpt2[@]}" ;;
      tiny) train tiny 1 2 100 600 "${tiny[@]}"; train tiny 2 1 100 600 "${tiny[@]}" ;;
      mid) train mid 1 2 20 120 "${mid[@]}"; train mid 2 1 20 120 "${mid[@]}" ;;
      gtiny) train gtiny 1 2 100 600 "${gtiny[@]}"; train gtiny 2 1 100 600 "${gtiny[@]}" ;;
    esac
  done
done
echo "--- done $(date -u +%T)"

#!/usr/bin/env bash
# bench_zero.sh — ZeRO stages and data-parallel efficiency on one machine, measured interleaved.
#
# Usage: bench/zero/bench_zero.sh BUILD_DIR [ROUNDS] [STEPS]   (defaults: 3 rounds of 12 steps)
#
# Model: GPT-2 124M shape (12 layers, 12 heads, 768) with vocabulary 8192, seq_len 64, global batch
# 8 sequences, on a synthetic dataset (uniform random tokens: the speed does not depend on them).
# Each round runs, one after the other, so that they share the machine's neighbours alike:
#   1 rank  x 2 threads, micro_batch 4 x grad_accum 2, zero 0  (the data-parallel reference)
#   2 ranks x 1 thread,  micro_batch 4 x grad_accum 1, zero 0, 1, 2 ([runtime] shared_memory = auto:
#                        one node, so the gradients are added in node-shared memory and with zero >= 1
#                        the weights are one node-shared copy), and zero 2 with shared_memory = off
#                        (MPI messages and an all-gather: "zero2-msg")
# Every run prints its per-step timeline (fmtrain-bench-zero: max over ranks of compute, exposed
# gradient wait, norm, update, exposed all-gather wait) and a summary; this script prints one table
# row per run (medians in ms: step = the slowest rank's, phases = means over ranks, "slowest" = the
# slowest rank's compute, comm% = exposed gradient and all-gather waits / step) with the 1-minute
# load average before and after it, then per round the step-time
# ratios zero 1 / zero 0 and zero 2 / zero 0 (ratios of the runs' throughput: >= 1 means not
# slower) and the data-parallel efficiency = tokens/s of 2 ranks x 1 thread / tokens/s of
# 1 rank x 2 threads, for each zero stage. The step times are medians over the steps after the
# first two. The machine is shared: read the load column before the numbers.
# cpu_ms is the CPU time all the run's processes used per step (median), the column to read when
# the machine is loaded by others.
# BENCH_ZERO_PRECISION (default auto: bf16 with oneDNN on a CPU with bf16 dot products, else fp32)
# sets [runtime] precision; the first run's compute line (precision, GEMM library) is printed.
# BENCH_ZERO_RUNS (default: all five) names the runs to make per round, e.g. "2ranks-zero2
# 2ranks-zero2-msg" for an A/B of shared memory against messages; the summary then gives the ratios
# whose runs were made.
# BENCH_ZERO_BIND (default none) sets [runtime] bind for every run (auto: fmtrain pins each rank's
# threads to its cores with hwloc; Open MPI itself never binds here, --bind-to none below).
set -euo pipefail
build=${1:?usage: bench_zero.sh BUILD_DIR [ROUNDS] [STEPS]}
rounds=${2:-3}
steps=${3:-12}
precision=${BENCH_ZERO_PRECISION:-auto}
bind=${BENCH_ZERO_BIND:-none}
runs=${BENCH_ZERO_RUNS:-1rank-2thr 2ranks-zero0 2ranks-zero1 2ranks-zero2 2ranks-zero2-msg}
exe=$build/bench/zero/fmtrain-bench-zero
mkds=$build/tests/train/train_make_dataset
if [ ! -x "$exe" ] || [ ! -x "$mkds" ]; then
  echo "build $build first (fmtrain-bench-zero, train_make_dataset)" >&2
  exit 2
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive} # the environment's choice wins (active: idle, exclusive cores)
unset OMP_NUM_THREADS SLURM_JOB_ID SLURM_JOB_END_TIME FMTRAIN_END_TIME
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$mkds" "$dir/d.h5" random 64 400 8 1 >/dev/null
cat >"$dir/p.ini" <<INI
[run]
dir = $dir/run
seed = 1
stop_margin_minutes = 0
[model]
n_layer = 12
n_head = 12
d_model = 768
seq_len = 64
vocab_size = 8192
[data]
train = $dir/d.h5
[train]
steps = $steps
lr = 6e-4
warmup_steps = 2
eval_every = 0
[checkpoint]
every_steps = 0
every_minutes = 0
resume = never
[runtime]
device = cpu
precision = $precision
bind = $bind
log_every = 1000
hang_factor = 0
INI
load() { cut -d' ' -f1 /proc/loadavg; }
declare -A tps cpus
printf '%-5s %-16s %8s %7s %8s %9s %6s %7s %7s %6s %8s %6s %7s  %s\n' round run step_ms tok/s compute \
  grad_wait norm update gather other slowest comm% cpu_ms "load before -> after"
run() { # run ROUND NAME NP THREADS GA ZERO [SHARED_MEMORY]
  local r=$1 name=$2 np=$3 th=$4 ga=$5 z=$6 shm=${7:-auto} l0 l1 line
  case " $runs " in *" $name "*) ;; *) return 0 ;; esac
  l0=$(load)
  # --bind-to none: Open MPI binds each rank to one core by default when np <= 2, which would run the
  # 1 rank x 2 threads reference on ONE core (fmtrain warns "2 threads on 1 core"); bind = none above
  mpiexec -n "$np" --oversubscribe --bind-to none "$exe" train "$dir/p.ini" --set run.dir="$dir/run-$name-$r" \
    --set runtime.threads="$th" --set train.micro_batch=4 --set train.grad_accum="$ga" \
    --set train.zero="$z" --set runtime.shared_memory="$shm" >"$dir/$name-$r.out" 2>"$dir/$name-$r.err" ||
    { cat "$dir/$name-$r.err" >&2; exit 1; }
  l1=$(load)
  if [ -z "${shown:-}" ]; then grep -m1 'compute:' "$dir/$name-$r.out" "$dir/$name-$r.err" | sed 's/^[^:]*://'; shown=1; fi
  line=$(grep '^zero-summary' "$dir/$name-$r.err")
  get() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" <<<"$line"; }
  local st tp c gw n u gt other
  st=$(get median_step_ms) tp=$(get tokens_per_s) c=$(get compute) gw=$(get grad_wait)
  n=$(get norm) u=$(get update) gt=$(get gather_wait)
  other=$(get other)
  printf '%-5s %-16s %8s %7s %8s %9s %6s %7s %7s %6s %8s %6s %7s  %s -> %s\n' "$r" "$name" "$st" "$tp" \
    "$c" "$gw" "$n" "$u" "$gt" "$other" "$(get slowest_compute)" "$(get comm_exposed_pct)" \
    "$(get cpu)" "$l0" "$l1"
  tps[$name-$r]=$tp
  cpus[$name-$r]=$(get cpu)
  if [ -n "${BENCH_ZERO_TIMELINE:-}" ]; then grep '^zero-step' "$dir/$name-$r.err" | sed 's/^/      /'; fi
}
for r in $(seq 1 "$rounds"); do
  run "$r" "1rank-2thr" 1 2 2 0
  run "$r" "2ranks-zero0" 2 1 1 0
  run "$r" "2ranks-zero1" 2 1 1 1
  run "$r" "2ranks-zero2" 2 1 1 2
  run "$r" "2ranks-zero2-msg" 2 1 1 2 off
done
echo
# wall: ratios of tokens/s; cpu: ratios of CPU time per step (the reference's over the run's), the
# same figures counted in CPU time spent by the runs themselves
ratios='function q(a, b) { return (a == "" || b == "" || b == 0) ? "-" : sprintf("%.3f", a / b) } '
# zero2 shm/msg: zero 2 in node-shared memory against zero 2 by messages (> 1: shared is faster)
printf '%-5s %-5s %18s %18s %14s %14s %14s %14s %14s\n' round clock "zero1/zero0 speed" \
  "zero2/zero0 speed" "DP eff zero0" "DP eff zero1" "DP eff zero2" "DP eff z2 msg" "z2 shm/msg"
for r in $(seq 1 "$rounds"); do
  awk -v one="${tps[1rank-2thr-$r]:-}" -v z0="${tps[2ranks-zero0-$r]:-}" \
      -v z1="${tps[2ranks-zero1-$r]:-}" -v z2="${tps[2ranks-zero2-$r]:-}" \
      -v zm="${tps[2ranks-zero2-msg-$r]:-}" -v r="$r" \
    "$ratios"'BEGIN { printf "%-5s %-5s %18s %18s %14s %14s %14s %14s %14s\n", r, "wall", q(z1,z0), q(z2,z0), q(z0,one), q(z1,one), q(z2,one), q(zm,one), q(z2,zm) }'
  awk -v one="${cpus[1rank-2thr-$r]:-}" -v z0="${cpus[2ranks-zero0-$r]:-}" \
      -v z1="${cpus[2ranks-zero1-$r]:-}" -v z2="${cpus[2ranks-zero2-$r]:-}" \
      -v zm="${cpus[2ranks-zero2-msg-$r]:-}" -v r="$r" \
    "$ratios"'BEGIN { printf "%-5s %-5s %18s %18s %14s %14s %14s %14s %14s\n", r, "cpu", q(z0,z1), q(z0,z2), q(one,z0), q(one,z1), q(one,z2), q(one,zm), q(zm,z2) }'
done

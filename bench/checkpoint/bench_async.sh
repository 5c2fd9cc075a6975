#!/usr/bin/env bash
# bench_async.sh — the training time a checkpoint costs, synchronous vs asynchronous
# ([checkpoint] async), with `fmtrain train` itself: GPT-2 124M (12 layers, 12 heads, d_model 768,
# vocabulary 50257; seq_len 16 and micro_batch 1 to keep a step short on a CPU) on RANKS ranks, a
# checkpoint every 10 steps (1.49 GB of parameters and AdamW moments each).
#
# Usage: bench/checkpoint/bench_async.sh BUILD_DIR [WORK_DIR] [PAIRS] [RANKS]
#   BUILD_DIR  a release build (fmtrain, tests/train/train_make_dataset)
#   WORK_DIR   where the run directories go (default: a new directory under /tmp); its file system
#              is the one measured
#   PAIRS      sync/async pairs, run alternately (default 2)
# Each run trains 25 steps: periodic checkpoints at steps 10 and 20, the final one at 25 (always
# synchronous: the run exits after it, waiting first for the step-20 write if it is still in flight:
# with fewer steps after it that wait would count as the step-20 checkpoint's stall). From metrics.jsonl's checkpoint records (rank 0):
#   sync:  write_s of the periodic checkpoints = the training time they stall (checkpoint_stall_s);
#   async: checkpoint_stall_s of the periodic checkpoints (state copy + dataset creation + the
#          publication at a step boundary + any wait) and write_s (creation to publication);
# and the median step time of steps 12..19 (after the first checkpoint, between the two) in each
# mode, which shows what the background writer costs the steps it overlaps. The ratio printed is
# mean async stall / mean sync write over all pairs. The load average is printed before each run:
# on a shared machine every figure moves with it.
# FMTRAIN_BENCH_SET: more `--set section.key=value` arguments for every run (e.g. "--set
# runtime.threads=8", "--set runtime.device=cuda").
set -euo pipefail
build=${1:?usage: bench_async.sh BUILD_DIR [WORK_DIR] [PAIRS] [RANKS]}
work=${2:-$(mktemp -d /tmp/fm_bench_async.XXXXXX)}
pairs=${3:-2}
ranks=${4:-2}
exe="$build/fmtrain"
mk="$build/tests/train/train_make_dataset"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OMPI_MCA_btl=self,vader OMPI_MCA_btl_vader_single_copy_mechanism=none
unset SLURM_JOB_ID SLURM_JOB_END_TIME FMTRAIN_END_TIME OMP_NUM_THREADS
mkdir -p "$work"
"$mk" "$work/d.h5" random 16 4000 16 5 >/dev/null
cat >"$work/p.ini" <<INI
[run]
dir = $work/run
seed = 7
stop_margin_minutes = 0
[model]
n_layer = 12
n_head = 12
d_model = 768
seq_len = 16
vocab_size = 50257
[data]
train = $work/d.h5
[train]
micro_batch = 1
grad_accum = 1
steps = 25
lr = 3e-4
warmup_steps = 2
eval_every = 0
[checkpoint]
every_steps = 10
every_minutes = 0
keep_last = 2
resume = never
[runtime]
device = cpu
precision = fp32
threads = 1
bind = none
log_every = 1
INI
results="$work/results.txt"
: >"$results"
for p in $(seq 1 "$pairs"); do
  for mode in false true; do
    rm -rf "$work/run"
    echo "pair $p, async = $mode: load average $(cut -d' ' -f1-3 /proc/loadavg) at $(date -u +%T)"
    # shellcheck disable=SC2086
    mpiexec -n "$ranks" "$exe" train "$work/p.ini" --set checkpoint.async=$mode ${FMTRAIN_BENCH_SET:-} \
      >"$work/out.txt" 2>&1 ||
      { cat "$work/out.txt"; exit 1; }
    /usr/bin/python3 - "$work/run/metrics.jsonl" "$mode" "$p" >>"$results" <<'PY'
import json, sys, statistics
recs = [json.loads(l) for l in open(sys.argv[1])]
ck = [r for r in recs if r["type"] == "checkpoint" and r["reason"] == "periodic"]
steps = {r["step"]: r["step_ms"] for r in recs if r["type"] == "train"}
mid = statistics.median(steps[s] for s in range(12, 20))
for r in ck:
    print(sys.argv[3], sys.argv[2], r["step"], r["write_s"], r["checkpoint_stall_s"], r["tensor_bytes"], mid)
PY
    tail -n 2 "$results"
  done
done
rm -rf "$work/run"
/usr/bin/python3 - "$results" <<'PY'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1])]
sync = [r for r in rows if r[1] == "false"]; asy = [r for r in rows if r[1] == "true"]
sw = [float(r[3]) for r in sync]; aw = [float(r[3]) for r in asy]; st = [float(r[4]) for r in asy]
gb = float(rows[0][5]) / 1e9
print(f"checkpoint: {gb:.2f} GB of tensors; {len(sw)} synchronous and {len(st)} asynchronous periodic checkpoints")
print(f"synchronous write (= stall): mean {statistics.mean(sw):.2f} s ({', '.join(f'{x:.2f}' for x in sw)}), {gb / statistics.mean(sw):.2f} GB/s")
print(f"asynchronous stall:          mean {statistics.mean(st):.3f} s ({', '.join(f'{x:.3f}' for x in st)})")
print(f"asynchronous write (background, creation to publication): mean {statistics.mean(aw):.2f} s")
print(f"stall ratio async/sync: {statistics.mean(st) / statistics.mean(sw):.3f} (target <= 0.10)")
ms = {m: statistics.mean(float(r[6]) for r in rows if r[1] == m) for m in ("false", "true")}
print(f"median step 12..19: sync {ms['false']:.0f} ms, async {ms['true']:.0f} ms (the background writer shares the cores)")
print(f"load average at the end: {open('/proc/loadavg').read().split()[:3]}, cores: {__import__('os').cpu_count()}")
PY

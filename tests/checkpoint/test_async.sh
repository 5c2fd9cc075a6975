#!/usr/bin/env bash
# test_async.sh FMTRAIN_FAULTS — asynchronous checkpoints ([checkpoint] async = true, ckpt/async.h)
# through `fmtrain train` on 2 ranks:
#  1. an async run and a sync run of 30 steps (a checkpoint every 10): identical losses at every
#     step, and the tensors of every checkpoint (steps 10, 20: written in the background; 30: the
#     final one) bit-identical to the sync run's; `fmtrain inspect` verifies every async file;
#     metrics.jsonl has a checkpoint record per checkpoint with checkpoint_stall_s; the same with
#     [train] zero = 1 and 2 (each rank stages its shard) gives the sync zero-0 files bit for bit;
#  2. kill -9 while a background write is in flight: fmtrain_faults delays every background write by
#     3 s (a slow file system), so training runs on past step 20 while the step-20 checkpoint is
#     still being written; both ranks are killed once step 23 is logged with it still in flight
#     (training did not wait for it). The step-20 file is not published, `latest`
#     names step 10, and the same command resumes from step 10 and ends bit-identical to the sync
#     run (losses of steps 11..30 and the final checkpoint's tensors): a resumed async run equals a
#     sync run;
#  3. a stop signal (SIGUSR1) while a background write is in flight: the run waits for it, publishes
#     it, writes the stop checkpoint and exits 75; resuming ends bit-identical to the sync run.
set -euo pipefail
: "${FMTRAIN_EXE:?}" "${FMTRAIN_BINARY_DIR:?}"
FAULTS=${1:?usage: test_async.sh FMTRAIN_FAULTS}
source "$(dirname "$0")/../train/lib.sh"
dir=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do
    # shellcheck disable=SC2046
    kill -KILL $(pgrep -P "$p" 2>/dev/null) "$p" 2>/dev/null || true
  done
  rm -rf "$dir"
}
trap cleanup EXIT
"$MAKE_DATASET" "$dir/d.h5" repeat 32 1024 16 2 >/dev/null
write_ini "$dir/p.ini" "$dir/d.h5" "$dir/unused"
common=(--set train.steps=30 --set runtime.log_every=1 --set checkpoint.every_steps=10
        --set checkpoint.keep_last=5 --set checkpoint.resume=auto)

# same RUN_A RUN_B FIRST_STEP STEPS... : losses from FIRST_STEP on identical; tensors of the
# checkpoints of STEPS bit-identical
same() {
  "$PY" - "$@" <<'PYEOF'
import json, sys, h5py, numpy as np
a, b, first, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), [int(s) for s in sys.argv[4:]]
def losses(run):
    return {r["step"]: r["loss"] for r in map(json.loads, open(run + "/metrics.jsonl")) if r["type"] == "train"}
la, lb = losses(a), losses(b)
want = [s for s in sorted(la) if s >= first]
assert want and all(s in lb and la[s] == lb[s] for s in want), "losses differ"
nd = 0
for s in steps:
    fa, fb = (h5py.File(f"{r}/checkpoints/step-{s:08d}.h5", "r") for r in (a, b))
    for g in ("params", "adam_m", "adam_v"):
        for name in fa[g]:
            x, y = fa[g][name][()], fb[g][name][()]
            assert np.array_equal(x.view(np.uint32), y.view(np.uint32)), f"step {s}: {g}/{name} differs"
            assert fa[g][name].attrs["crc32"] == fb[g][name].attrs["crc32"]
            nd += 1
    for k in ("step", "tokens_seen"):
        assert fa.attrs[k] == fb.attrs[k], k
print(f"  losses of steps {first}..{max(want)} identical; {nd} datasets of steps {steps} bit-identical")
PYEOF
}

# 1. async vs sync, straight
mpirun_n 2 train "$dir/p.ini" "${common[@]}" --set run.dir="$dir/sync" >"$dir/sync.txt" 2>&1 ||
  { cat "$dir/sync.txt"; exit 1; }
mpirun_n 2 train "$dir/p.ini" "${common[@]}" --set run.dir="$dir/async" --set checkpoint.async=true \
  >"$dir/async.txt" 2>&1 || { cat "$dir/async.txt"; exit 1; }
grep -q "checkpoint step-00000010.h5: .* written in the background in .* training stalled" "$dir/async.txt" ||
  { cat "$dir/async.txt"; echo "FAIL: no background-write line for step 10"; exit 1; }
echo "1. async vs sync (2 ranks, 30 steps, checkpoints at 10, 20 in the background, 30 final):"
same "$dir/sync" "$dir/async" 1 10 20 30
for s in 10 20 30; do
  "$FMTRAIN_EXE" inspect "$dir/async/checkpoints/step-000000$s.h5" >"$dir/inspect.txt" 2>&1 ||
    { cat "$dir/inspect.txt"; echo "FAIL: inspect of the async step-$s checkpoint"; exit 1; }
done
"$PY" - "$dir/async/metrics.jsonl" "$dir/sync/metrics.jsonl" <<'PYEOF'
import json, sys
for path, want in ((sys.argv[1], [(10, True), (20, True), (30, False)]), (sys.argv[2], [(10, False), (20, False), (30, False)])):
    ck = [r for r in map(json.loads, open(path)) if r["type"] == "checkpoint"]
    assert [(r["step"], r["async"]) for r in ck] == want, ck
    for r in ck:
        assert r["checkpoint_stall_s"] >= 0 and r["write_s"] > 0 and r["tensor_bytes"] > 0 and r["file"].endswith(".h5"), r
        if not r["async"]:
            assert r["checkpoint_stall_s"] >= r["write_s"], r
print("  metrics.jsonl: checkpoint records with write_s, write_gb_per_s, checkpoint_stall_s")
PYEOF

# 1b. with ZeRO: each rank stages only its shard of the moments (and of the weights it writes); zero 1
#     and 2 train bit-identically to zero 0 (tests/zero), so the files must equal the sync zero-0 run's
for z in 1 2; do
  mpirun_n 2 train "$dir/p.ini" "${common[@]}" --set run.dir="$dir/async-zero$z" --set train.zero=$z \
    --set checkpoint.async=true >"$dir/async-zero$z.txt" 2>&1 || { cat "$dir/async-zero$z.txt"; exit 1; }
  echo "1b. async with zero $z vs sync zero 0:"
  same "$dir/sync" "$dir/async-zero$z" 1 10 20 30
done

# 2. kill -9 during a background write
run="$dir/killed"
FMTRAIN_TEST_CKPT_WRITE=delay:3 mpiexec -n 2 --oversubscribe "$FAULTS" train "$dir/p.ini" "${common[@]}" \
  --set run.dir="$run" --set checkpoint.async=true >"$dir/k.txt" 2>&1 &
mpi=$!
pids+=("$mpi")
killed=0
for _ in $(seq 1 1200); do
  # Three steps past 20 with the step-20 write still in flight: training did not wait for it.
  if [ -f "$run/checkpoints/step-00000020.h5.tmp" ] && grep -q '"step":2[3-9],' "$run/metrics.jsonl" 2>/dev/null; then
    # shellcheck disable=SC2046
    kill -KILL $(pgrep -P "$mpi" -f fmtrain_faults) 2>/dev/null || true
    killed=1
    break
  fi
  kill -0 "$mpi" 2>/dev/null || break
  sleep 0.05
done
wait "$mpi" 2>/dev/null || true
[ "$killed" = 1 ] || { cat "$dir/k.txt"; echo "FAIL: never saw training 3 steps past step 20 with the step-20 write in flight"; exit 1; }
sleep 0.2
last=$("$PY" -c "import json,sys; print(max(r['step'] for r in map(json.loads, open(sys.argv[1])) if r['type']=='train'))" "$run/metrics.jsonl")
[ ! -e "$run/checkpoints/step-00000020.h5" ] || { echo "FAIL: the step-20 checkpoint was published before the kill"; exit 1; }
[ "$(cat "$run/checkpoints/latest")" = "step-00000010.h5" ] || { echo "FAIL: latest is not step 10"; exit 1; }
echo "2. killed (kill -9, both ranks) at step $last while step 20 was being written in the background"
mpirun_n 2 train "$dir/p.ini" "${common[@]}" --set run.dir="$run" --set checkpoint.async=true \
  >"$dir/k2.txt" 2>&1 || { cat "$dir/k2.txt"; exit 1; }
grep -q "resumed at step 10" "$dir/k2.txt" || { cat "$dir/k2.txt"; echo "FAIL: did not resume from step 10"; exit 1; }
[ -z "$(find "$run/checkpoints" -name '*.tmp')" ] || { echo "FAIL: a temporary file was left"; exit 1; }
same "$dir/sync" "$run" 11 20 30

# 3. a stop signal with a background write in flight
run="$dir/stopped"
FMTRAIN_TEST_CKPT_WRITE=delay:2 mpiexec -n 2 --oversubscribe "$FAULTS" train "$dir/p.ini" "${common[@]}" \
  --set run.dir="$run" --set checkpoint.async=true >"$dir/s.txt" 2>&1 &
mpi=$!
pids+=("$mpi")
for _ in $(seq 1 1200); do
  if [ -f "$run/checkpoints/step-00000010.h5.tmp" ] && grep -q '"step":1[3-9],' "$run/metrics.jsonl" 2>/dev/null; then
    # shellcheck disable=SC2046
    kill -USR1 $(pgrep -P "$mpi" -f fmtrain_faults) 2>/dev/null || true
    break
  fi
  sleep 0.05
done
set +e
wait "$mpi"
rc=$?
set -e
[ "$rc" -eq 75 ] || { cat "$dir/s.txt"; echo "FAIL: a stop with a write in flight: exit $rc, expected 75"; exit 1; }
grep -q "checkpoint step-00000010.h5: .* written in the background" "$dir/s.txt" ||
  { cat "$dir/s.txt"; echo "FAIL: the write in flight was not published before the exit"; exit 1; }
stop_step=$(sed -n 's/.*stopping at step \([0-9]*\)\/.*/\1/p' "$dir/s.txt")
if [ ! -e "$run/checkpoints/step-00000010.h5" ] || [ ! -e "$run/checkpoints/$(printf 'step-%08d.h5' "$stop_step")" ]; then
  ls "$run/checkpoints"; echo "FAIL: missing checkpoints after the stop"; exit 1
fi
echo "3. SIGUSR1 at step $stop_step with step 10 in flight: published, stop checkpoint written, exit 75"
mpirun_n 2 train "$dir/p.ini" "${common[@]}" --set run.dir="$run" --set checkpoint.async=true \
  >"$dir/s2.txt" 2>&1 || { cat "$dir/s2.txt"; exit 1; }
same "$dir/sync" "$run" 1 10 30
echo "async checkpoints ok"

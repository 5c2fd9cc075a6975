#!/usr/bin/env bash
# test_kill.sh — SIGKILL of both ranks at random moments while checkpoints are being written
# (several trials): afterwards resume = auto (fm_checkpoint_load_newest) finds the newest complete
# checkpoint, its checksums verify and its tensors are exactly the content written for its step;
# temporary files of the killed writer are removed. Each checkpoint is about 25 MB, written in a loop
# with keep_last 2, so most kills land in the middle of a write.
set -euo pipefail
: "${FMTRAIN_BINARY_DIR:?}"
DRIVER="$FMTRAIN_BINARY_DIR/tests/checkpoint/ckpt_driver"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OMPI_MCA_btl=self,vader OMPI_MCA_btl_vader_single_copy_mechanism=none
dir=$(mktemp -d)
mpi=""
cleanup() {
  if [ -n "$mpi" ]; then
    # shellcheck disable=SC2046
    kill -KILL $(pgrep -P "$mpi") "$mpi" 2>/dev/null || true
    wait "$mpi" 2>/dev/null || true
  fi
  rm -rf "$dir"
}
trap cleanup EXIT
run="$dir/run"
mpiexec -n 2 "$DRIVER" write "$run" 1 1 2 >/dev/null
trials=${FM_KILL_TRIALS:-6}
next=2
mid_write=0
for trial in $(seq 1 "$trials"); do
  mpiexec -n 2 "$DRIVER" write "$run" "$next" 100000 2 >"$dir/w.txt" 2>&1 &
  mpi=$!
  # Wait until the writer is in its write loop (a temporary file has appeared; start-up takes
  # longer under sanitizers and on a loaded machine), then a random moment of up to 0.6 s more.
  for _ in $(seq 1 600); do
    [ -z "$(find "$run/checkpoints" -name '*.tmp' -print -quit)" ] || break
    sleep 0.1
  done
  sleep "$(awk -v s="$RANDOM" 'BEGIN { srand(s); printf "%.2f", 0.6 * rand() }')"
  ranks=$(pgrep -P "$mpi" -f ckpt_driver || true)
  tmp_before=$(find "$run/checkpoints" -name '*.tmp' | wc -l)
  # shellcheck disable=SC2086
  kill -KILL $ranks 2>/dev/null || true
  wait "$mpi" 2>/dev/null || true
  mpi=""
  sleep 0.2 # let the killed ranks' file descriptors close
  if [ "$tmp_before" -gt 0 ]; then mid_write=$((mid_write + 1)); fi
  last=$(grep -c "wrote step" "$dir/w.txt" || true)
  mpiexec -n 2 "$DRIVER" check "$run" 2 >"$dir/c.txt" 2>&1 || { cat "$dir/c.txt"; exit 1; }
  loaded=$(sed -n 's/^loaded step \([0-9]*\) .*/\1/p' "$dir/c.txt")
  newest=$(find "$run/checkpoints" -name 'step-*.h5' -printf '%f\n' \
    | sed -n 's/^step-0*\([0-9][0-9]*\)\.h5$/\1/p' | sort -n | tail -1)
  echo "trial $trial: killed after $last completed write(s) (temporary file present: $tmp_before); resumed from step $loaded"
  if [ -z "$loaded" ] || [ "$loaded" != "$newest" ]; then
    cat "$dir/c.txt"; echo "expected the newest complete step $newest"; exit 1
  fi
  if [ "$(find "$run/checkpoints" -name '*.tmp' | wc -l)" -ne 0 ]; then
    echo "temporary files were not removed"; exit 1
  fi
  next=$((loaded + 1))
done
echo "kill ok ($mid_write of $trials kills hit a checkpoint being written)"
[ "$mid_write" -ge 1 ] || { echo "no kill landed during a write"; exit 1; }

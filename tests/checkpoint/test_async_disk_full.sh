#!/usr/bin/env bash
# test_async_disk_full.sh FMTRAIN_FAULTS — a background checkpoint write that fails ([checkpoint]
# async = true): the disk fills up while the checkpoint of step 10 is written in the background
# (fmtrain_faults fills a 6 MiB tmpfs from the writer thread, before it writes: FMTRAIN_TEST_CKPT_WRITE
# = fill:10:FILE, leaving 64 KiB for the logs). Training has gone on; at the next step boundary every
# rank learns of the failure and the run stops with exit 1 and one clear message naming the file
# and "No space left on device", in bounded time, on 2 ranks and on 1; no temporary file is left, the
# step-5 checkpoint (written in the background before) is intact and `latest` names it. Once space
# is freed the same command resumes from step 5 and finishes. Skips (77) where a tmpfs cannot be
# mounted (not root): there is no honest way to fill a shared disk.
set -euo pipefail
: "${FMTRAIN_EXE:?}" "${FMTRAIN_BINARY_DIR:?}"
FAULTS=${1:?usage: test_async_disk_full.sh FMTRAIN_FAULTS}
source "$(dirname "$0")/../train/lib.sh"
dir=$(mktemp -d)
cleanup() {
  tmpfs_cleanup
  rm -rf "$dir"
}
trap cleanup EXIT
tmpfs_mount_or_skip "$dir/mnt" 6m
"$MAKE_DATASET" "$dir/r.h5" random 32 4096 16 3 >/dev/null
write_ini "$dir/p.ini" "$dir/r.h5" "$dir/mnt/run"
sed -i 's/^steps = 50/steps = 20/; s/^every_steps = 0/every_steps = 5/; s/^log_every = 10/log_every = 1/;
        s/^resume = never/resume = auto/' "$dir/p.ini"
for np in 2 1; do
  rm -rf "$dir/mnt/run" "$dir/mnt/fill"
  set +e
  FMTRAIN_TEST_CKPT_WRITE="fill:10:$dir/mnt/fill" timeout -s KILL 120 \
    mpiexec -n "$np" --oversubscribe "$FAULTS" train "$dir/p.ini" --set checkpoint.async=true \
    --set runtime.hang_min_minutes=0.05 >"$dir/out.txt" 2>&1
  rc=$?
  set -e
  t_exit=$(date +%s.%N)
  grep -v '^step' "$dir/out.txt" | grep -a 'fmtrain' || true
  [ "$rc" -ne 137 ] || { echo "FAIL: $np rank(s) still running 120 s after the disk filled (killed)"; exit 1; }
  [ "$rc" -eq 1 ] || { cat "$dir/out.txt"; echo "FAIL: $np rank(s): exit $rc, expected 1"; exit 1; }
  grep -q "fmtrain: I/O error: checkpoint .*step-00000010.h5 not written (the previous checkpoints are intact): .*No space left on device" "$dir/out.txt" ||
    { cat "$dir/out.txt"; echo "FAIL: $np rank(s): not the full-disk message of the background write"; exit 1; }
  [ "$(grep -c 'fmtrain: I/O error' "$dir/out.txt")" -eq 1 ] || { echo "FAIL: the error is not printed exactly once"; exit 1; }
  if grep -q "Segmentation fault\|signal 11\|MPI_ABORT" "$dir/out.txt"; then echo "FAIL: crash or abort"; exit 1; fi
  [ -z "$(find "$dir/mnt/run" -name '*.tmp')" ] || { echo "FAIL: a temporary file was left"; exit 1; }
  [ "$(cat "$dir/mnt/run/checkpoints/latest")" = "step-00000005.h5" ] || { echo "FAIL: latest is not step 5"; exit 1; }
  "$FMTRAIN_EXE" inspect "$dir/mnt/run/checkpoints/step-00000005.h5" >/dev/null ||
    { echo "FAIL: the step-5 checkpoint does not verify"; exit 1; }
  t_fill=$(sed -n 's/^fmtrain_faults: disk filled at \([0-9.]*\)$/\1/p' "$dir/out.txt" | head -n 1)
  echo "$np rank(s): background write of step 10 failed (disk full); every rank exited 1, $(awk -v a="$t_fill" -v b="$t_exit" 'BEGIN { printf "%.2f", b - a }') s after the fill"
  rm -f "$dir/mnt/fill"
  mpiexec -n "$np" --oversubscribe "$FMTRAIN_EXE" train "$dir/p.ini" --set checkpoint.async=true >"$dir/again.txt" 2>&1 ||
    { cat "$dir/again.txt"; echo "FAIL: the run did not finish once space was freed"; exit 1; }
  grep -q "resumed at step 5" "$dir/again.txt" || { cat "$dir/again.txt"; echo "FAIL: did not resume from step 5"; exit 1; }
  [ -e "$dir/mnt/run/COMPLETE" ] || { echo "FAIL: no COMPLETE after freeing space"; exit 1; }
done
echo "async disk full ok"

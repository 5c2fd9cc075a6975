#!/usr/bin/env bash
# test_disk_full_train.sh — `fmtrain train` when the disk is already full as a checkpoint starts
# (issue 13, case 1). Before the fix both ranks of a 2-rank run hung forever inside
# fm_checkpoint_file_abort -> H5Fclose (rank 0 in MPI_File_close's barrier, rank 1 in a metadata-cache
# sync) and a 1-rank run crashed in MPI_Finalize (exit 139). Now the free space is checked before any
# HDF5 call and agreed by all ranks: every rank exits 1 in bounded time with one clear message, no
# temporary file is left, and once space is freed the same command resumes and finishes.
#
# The full disk is a real one: a 6 MiB tmpfs (we run as root in CI containers) filled with a file
# until 16 KiB are left after the run's first files are written. Where mounting is not permitted the
# test skips (77): there is no honest way to fill a shared disk.
# Prints, for each rank count, the time from the start of the failing checkpoint (the step record
# written just before it) to the exit of every rank.
set -euo pipefail
: "${FMTRAIN_EXE:?}" "${FMTRAIN_BINARY_DIR:?}"
source "$(dirname "$0")/../train/lib.sh"
dir=$(mktemp -d)
mounted=0
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  if [ "$mounted" = 1 ]; then umount "$dir/mnt" 2>/dev/null || umount -l "$dir/mnt" || true; fi
  rm -rf "$dir"
}
trap cleanup EXIT
mkdir -p "$dir/mnt"
if ! mount -t tmpfs -o size=6m tmpfs "$dir/mnt" 2>/dev/null; then
  echo "SKIP: cannot mount a tmpfs here (not root, or no CAP_SYS_ADMIN): no small file system to fill"
  exit 77
fi
mounted=1
"$MAKE_DATASET" "$dir/r.h5" random 32 4096 16 3 >/dev/null
# log_every 1: the record of step 5 appears just before its checkpoint starts.
write_ini "$dir/p.ini" "$dir/r.h5" "$dir/mnt/run"
sed -i 's/^steps = 50/steps = 12/; s/^every_steps = 0/every_steps = 5/; s/^log_every = 10/log_every = 1/;
        s/^resume = never/resume = auto/' "$dir/p.ini"

# fill FREE_KIB: fills the tmpfs until FREE_KIB KiB are left
fill() {
  rm -f "$dir/mnt/fill"
  local avail
  avail=$(df -k --output=avail "$dir/mnt" | tail -n 1)
  dd if=/dev/zero of="$dir/mnt/fill" bs=1K count=$((avail - $1)) status=none
}

# run_full NP: trains on NP ranks with 16 KiB free (the run's config.ini, train.log and
# metrics.jsonl fit, a checkpoint does not); checks the exit and the message; prints the time from
# the step-5 record to the exit.
run_full() {
  local np=$1 out="$dir/out$1.txt" rc t_fault="" t_exit
  rm -rf "$dir/mnt/run"
  fill 16
  timeout -s KILL 120 mpiexec -n "$np" --oversubscribe "$FMTRAIN_EXE" train "$dir/p.ini" >"$out" 2>&1 &
  local p=$!
  pids+=("$p")
  while kill -0 "$p" 2>/dev/null; do
    if [ -z "$t_fault" ] && [ -f "$dir/mnt/run/metrics.jsonl" ] &&
       grep -q '"step":5,' "$dir/mnt/run/metrics.jsonl"; then
      t_fault=$(date +%s.%N)
    fi
    sleep 0.01
  done
  t_exit=$(date +%s.%N)
  set +e
  wait "$p"
  rc=$?
  set -e
  cat "$out"
  [ "$rc" -ne 137 ] || { echo "FAIL: $np rank(s) still running after 120 s on a full disk (killed)"; exit 1; }
  [ "$rc" -eq 1 ] || { echo "FAIL: $np rank(s): expected exit 1 (I/O error), got $rc"; exit 1; }
  grep -q "fmtrain: I/O error: checkpoint .*step-00000005.h5 not written (the previous checkpoints are intact): no room for checkpoint .*: it needs about .* free (No space left on device): free space" "$out" ||
    { echo "FAIL: $np rank(s): not the documented full-disk message"; exit 1; }
  [ "$(grep -c 'fmtrain: I/O error' "$out")" -eq 1 ] || { echo "FAIL: the error is not printed exactly once"; exit 1; }
  if grep -q "Segmentation fault\|signal 11\|MPI_ABORT" "$out"; then echo "FAIL: crash or abort"; exit 1; fi
  [ "$(find "$dir/mnt/run" -name '*.tmp' | wc -l)" -eq 0 ] || { echo "FAIL: a temporary file was left"; exit 1; }
  [ -n "$t_fault" ] || { echo "FAIL: no step-5 record before the exit"; exit 1; }
  echo "fault-to-exit ($np rank(s), disk full as the step-5 checkpoint starts): $(awk -v a="$t_fault" -v b="$t_exit" 'BEGIN { printf "%.2f", b - a }') s"
}

run_full 2
run_full 1

# Space freed: the same command resumes (no checkpoint was written, so from the start) and finishes.
rm -f "$dir/mnt/fill"
mpiexec -n 2 --oversubscribe "$FMTRAIN_EXE" train "$dir/p.ini" >"$dir/again.txt" 2>&1 ||
  { cat "$dir/again.txt"; echo "FAIL: the run did not finish once space was freed"; exit 1; }
[ -e "$dir/mnt/run/COMPLETE" ] || { echo "FAIL: no COMPLETE after freeing space"; exit 1; }
echo "disk full (train) ok"

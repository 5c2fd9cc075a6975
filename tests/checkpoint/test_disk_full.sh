#!/usr/bin/env bash
# test_disk_full.sh — a checkpoint that does not fit: a clear error (exit 1, "No space left on
# device"), no temporary file left, the previous checkpoint and `latest` intact and loadable.
# The small file system is a 20 MiB tmpfs (we run as root in CI containers); where mounting is not
# permitted, a file-size limit (RLIMIT_FSIZE, "File too large") plays the full disk instead.
set -euo pipefail
: "${FMTRAIN_BINARY_DIR:?}"
DRIVER="$FMTRAIN_BINARY_DIR/tests/checkpoint/ckpt_driver"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OMPI_MCA_btl=self,vader OMPI_MCA_btl_vader_single_copy_mechanism=none
dir=$(mktemp -d)
mounted=0
cleanup() {
  if [ "$mounted" = 1 ]; then umount "$dir/mnt" || true; fi
  rm -rf "$dir"
}
trap cleanup EXIT
mkdir -p "$dir/mnt"
limit=()
if mount -t tmpfs -o size=20m tmpfs "$dir/mnt" 2>/dev/null; then
  mounted=1
  expect="No space left on device"
  echo "full disk: a 20 MiB tmpfs"
else
  limit=(--fsize-limit 20000000)
  expect="File too large"
  echo "full disk: mounting is not permitted here; RLIMIT_FSIZE of 20 MB instead"
fi
run="$dir/mnt/run"
# Step 1: 8.4 MB, fits. Step 2: 2 layers more (about 27 MB), does not.
mpiexec -n 2 "$DRIVER" write "$run" 1 1 0 "${limit[@]}"
set +e
mpiexec -n 2 "$DRIVER" write "$run" 2 2 2 "${limit[@]}" >"$dir/out.txt" 2>&1
rc=$?
set -e
cat "$dir/out.txt"
[ "$rc" -eq 1 ] || { echo "expected exit 1 (I/O error), got $rc"; exit 1; }
grep -q "fmtrain: I/O error: .*step-00000002.h5.*$expect" "$dir/out.txt" \
  || { echo "the error does not say '$expect' for step 2"; exit 1; }
ls -la "$run/checkpoints"
if [ "$(find "$run/checkpoints" -name '*.tmp' | wc -l)" -ne 0 ]; then
  echo "a temporary file was left behind"; exit 1
fi
[ ! -e "$run/checkpoints/step-00000002.h5" ] || { echo "step 2 must not exist"; exit 1; }
[ "$(cat "$run/checkpoints/latest")" = "step-00000001.h5" ] || { echo "latest changed"; exit 1; }
mpiexec -n 2 "$DRIVER" check "$run" 0 | tee "$dir/check.txt"
grep -q "loaded step 1 " "$dir/check.txt"
# The file system is usable again: a checkpoint that fits is written after the failure.
mpiexec -n 2 "$DRIVER" write "$run" 3 3 0 "${limit[@]}"
mpiexec -n 1 "$DRIVER" check "$run" 0 | grep -q "loaded step 3 "
echo "disk full ok"

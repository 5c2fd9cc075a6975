#!/usr/bin/env bash
# test_shm_room.sh — [runtime] shared_memory = auto when the file system behind MPI's shared-memory
# windows is too small: before allocating, fmtrain compares the node's need with the free space and
# stops with an error that names the directory, the bytes needed and free, and the two ways out
# (instead of a window created sparse whose first touch kills the ranks with SIGBUS). Then the same
# run with shared_memory = off trains (MPI messages, no window). The directory is a 1 MiB tmpfs,
# handed to Open MPI by its osc_sm_backing_directory parameter; skipped (77) where tmpfs cannot be
# mounted.
set -euo pipefail
source "$(dirname "$0")/../train/lib.sh"
dir=$(mktemp -d)
cleanup() {
  tmpfs_cleanup
  rm -rf "$dir"
}
trap cleanup EXIT
tmpfs_mount_or_skip "$dir/shm" 1m
"$MAKE_DATASET" "$dir/d.h5" repeat 32 1024 16 2 >/dev/null
write_ini "$dir/p.ini" "$dir/d.h5" "$dir/unused"
# 0.63 M parameters: 2.5 MB of gradients per rank, more than the 1 MiB tmpfs holds
model=(--set model.n_layer=3 --set model.n_head=4 --set model.d_model=128 --set train.micro_batch=4
       --set train.steps=3 --set train.warmup_steps=1 --set train.zero=2)
rc=0
OMPI_MCA_osc_sm_backing_directory="$dir/shm" mpirun_n 2 train "$dir/p.ini" "${model[@]}" \
  --set run.dir="$dir/a" >"$dir/a.txt" 2>&1 || rc=$?
[ "$rc" -eq 1 ] || { cat "$dir/a.txt"; echo "FAIL: expected exit 1 for a full /dev/shm, got $rc"; exit 1; }
for want in "node-shared memory: $dir/shm" "free, and the ranks of this node need" \
            "shared_memory = off" "--shm-size"; do
  grep -qF -- "$want" "$dir/a.txt" || { cat "$dir/a.txt"; echo "FAIL: the message lacks '$want'"; exit 1; }
done
if grep -q "SIGBUS\|Bus error\|signal 7\|MPI_ABORT" "$dir/a.txt"; then cat "$dir/a.txt"; echo "FAIL: a rank died or aborted"; exit 1; fi
[ "$(grep -c "fmtrain: out of memory: node-shared" "$dir/a.txt")" -eq 1 ] || { cat "$dir/a.txt"; echo "FAIL: the error is not printed once"; exit 1; }
echo "  too little room: exit 1, $(grep -o 'node-shared memory: [^;]*' "$dir/a.txt" | head -1)"
OMPI_MCA_osc_sm_backing_directory="$dir/shm" mpirun_n 2 train "$dir/p.ini" "${model[@]}" \
  --set runtime.shared_memory=off --set run.dir="$dir/b" >"$dir/b.txt" 2>&1 ||
  { cat "$dir/b.txt"; echo "FAIL: shared_memory = off did not train"; exit 1; }
grep -q "finished 3 steps\|step 3" "$dir/b.txt" || { cat "$dir/b.txt"; echo "FAIL: no step 3"; exit 1; }
echo "  shared_memory = off: trained 3 steps"
echo "shm room ok"

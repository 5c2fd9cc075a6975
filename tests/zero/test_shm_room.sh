#!/usr/bin/env bash
# test_shm_room.sh — [runtime] shared_memory = auto when the file system behind MPI's shared-memory
# windows is too small: before allocating, fmtrain compares the node's need with the free space
# (a window created sparse would kill the ranks with SIGBUS at its first touch), prints one warning
# that names the directory, the bytes needed and free, and trains by MPI messages instead; its losses
# are those of shared_memory = off, which does not try (and does not warn). The directory is a 1 MiB
# tmpfs, handed to Open MPI by its osc_sm_backing_directory parameter; skipped (77) where tmpfs
# cannot be mounted.
set -euo pipefail
source "$(dirname "$0")/../train/lib.sh"
dir=$(mktemp -d)
trap 'tmpfs_cleanup; rm -rf "$dir"' EXIT
tmpfs_mount_or_skip "$dir/shm" 1m
"$MAKE_DATASET" "$dir/d.h5" repeat 32 1024 16 2 >/dev/null
write_ini "$dir/p.ini" "$dir/d.h5" "$dir/unused"
# 0.63 M parameters: 2.5 MB of gradients per rank, more than the 1 MiB tmpfs holds
model=(--set model.n_layer=3 --set model.n_head=4 --set model.d_model=128 --set train.micro_batch=4
       --set train.steps=3 --set train.warmup_steps=1 --set train.zero=2 --set runtime.log_every=1)
OMPI_MCA_osc_sm_backing_directory="$dir/shm" mpirun_n 2 train "$dir/p.ini" "${model[@]}" \
  --set run.dir="$dir/a" >"$dir/a.txt" 2>&1 ||
  { cat "$dir/a.txt"; echo "FAIL: a node without room for the windows did not train by messages"; exit 1; }
for want in "warning: node-shared memory: $dir/shm" "free, and the ranks of this node need" \
            "by MPI messages instead" "shared_memory = off"; do
  grep -qF -- "$want" "$dir/a.txt" || { cat "$dir/a.txt"; echo "FAIL: the warning lacks '$want'"; exit 1; }
done
[ "$(grep -c "warning: node-shared" "$dir/a.txt")" -eq 1 ] ||
  { cat "$dir/a.txt"; echo "FAIL: the warning is not printed once"; exit 1; }
echo "  too little room: $(grep -o 'node-shared memory: [^;]*' "$dir/a.txt" | head -1)"
# the same run asked to use messages: the same losses, bit for bit, and no warning
OMPI_MCA_osc_sm_backing_directory="$dir/shm" mpirun_n 2 train "$dir/p.ini" "${model[@]}" \
  --set runtime.shared_memory=off --set run.dir="$dir/b" >"$dir/b.txt" 2>&1 ||
  { cat "$dir/b.txt"; echo "FAIL: shared_memory = off did not train"; exit 1; }
if grep -q "warning: node-shared" "$dir/b.txt"; then echo "FAIL: off still tried"; exit 1; fi
cmp <(grep '"type": *"train"' "$dir/a/metrics.jsonl" | grep -o '"loss": *[^,]*') \
    <(grep '"type": *"train"' "$dir/b/metrics.jsonl" | grep -o '"loss": *[^,]*') ||
  { echo "FAIL: the fallback's losses differ from shared_memory = off's"; exit 1; }
[ "$(grep -c '"type": *"train"' "$dir/a/metrics.jsonl")" -eq 3 ] || { echo "FAIL: not 3 steps"; exit 1; }
echo "  the fallback and shared_memory = off: 3 steps, the same losses"
echo "shm room ok"

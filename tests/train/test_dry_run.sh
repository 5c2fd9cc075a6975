#!/usr/bin/env bash
# test_dry_run.sh — what `fmtrain train --dry-run` checks before nodes are spent (issue 13, case 5).
# Before the fix a dry run passed all of these, and the real run then failed late or with the wrong
# exit code:
#  1. a dataset with one token id >= its vocabulary: exit 3 naming the split and position (the real
#     run trained until the reader met it);
#  2. a run directory that cannot be created (a file in its path): exit 2;
#  3. a read-only run directory: exit 2 in the dry run and in a real run (which exited 1, a code the
#     job scripts retry);
#  4. a file system without room for keep_last + 1 checkpoints: exit 1 naming both figures;
#  5. a run directory locked by another trainer: exit 2 naming it;
#  6. a good one: exit 0, and the output is still a parameter file ("# " lines) that says what it
#     checked, with the memory per rank of each [train] zero stage.
# Parts 3 and 4 need a small tmpfs (root in CI containers) and are skipped without one.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
dir=$(mktemp -d)
cleanup() {
  tmpfs_cleanup
  rm -rf "$dir"
}
trap cleanup EXIT
"$MAKE_DATASET" "$dir/r.h5" random 32 4096 16 3 >/dev/null
write_ini "$dir/p.ini" "$dir/r.h5" "$dir/run"

# expect CODE NAME ARGS...: the dry run exits CODE; its output goes to $dir/NAME.txt
expect() {
  local code=$1 name=$2 rc
  shift 2
  set +e
  mpirun_n 2 train "$dir/p.ini" --dry-run "$@" >"$dir/$name.txt" 2>&1
  rc=$?
  set -e
  if [ "$rc" -ne "$code" ]; then cat "$dir/$name.txt"; echo "FAIL: $name: exit $rc, expected $code"; exit 1; fi
}

# 1. one bad token id (written behind the writer's back, as a damaged or foreign file would be)
cp "$dir/r.h5" "$dir/bad.h5"
"$PY" - "$dir/bad.h5" <<'PYEOF'
import sys, h5py
with h5py.File(sys.argv[1], "r+") as f:
    f["train/tokens"][100000] = 300  # vocabulary 256
PYEOF
expect 3 bad --set data.train="$dir/bad.h5"
grep -q "fmtrain: input error: $dir/bad.h5: token id 300 at position 100000 of the training split is not below the vocabulary size 256 (largest id 300): the file is damaged or was made with another tokenizer" "$dir/bad.txt" ||
  { cat "$dir/bad.txt"; echo "FAIL: the bad id was not named"; exit 1; }

# 2. a run directory under a file
touch "$dir/afile"
expect 2 nodir --set run.dir="$dir/afile/run"
grep -q "fmtrain: configuration error: run directory $dir/afile/run cannot be used" "$dir/nodir.txt"

# 5. locked by another trainer (another host outside Slurm: cannot be judged, so held)
mkdir -p "$dir/locked"
printf 'host=node-b\npid=77\njob=\nrestart=0\nuser=ana\nsince=2026-01-02T03:04:05Z\n' >"$dir/locked/fmtrain.lock"
expect 2 locked --set run.dir="$dir/locked"
grep -q "run directory $dir/locked is in use by another fmtrain (host node-b, pid 77" "$dir/locked.txt"

# 6. a good dry run
expect 0 good
grep -q "^# dataset ids: all 131073 training and 513 validation tokens are below 256" "$dir/good.txt"
grep -q "^# run directory $dir/run: will be created" "$dir/good.txt"
grep -q "^# run directory lock: free" "$dir/good.txt"
grep -q "^# checkpoints: about .* each; keep_last + 1 = 3 with 0 already there need .* more; .* free" "$dir/good.txt"
# the model state per rank for each [train] zero stage (issue 19)
grep -q "^#   model state per rank (parameters\( (zero 1, 2: a share of the node.s one copy)\)\? + gradients + AdamW + .* of reduction scratch) on 2 ranks by \[train\] zero: 0: .*, 1: .*, 2: .*; activations come on top" "$dir/good.txt"
grep -q "^# memory per rank (backend cpu, 1 thread, \[train\] zero = 0 on 2 ranks)" "$dir/good.txt"
# zero 2 on one node: node-shared weights (a 1/2 share each) and no scratch against messages; the
# difference is the half of the weights and the scratch the off run prints
expect 0 z2shm --set train.zero=2
expect 0 z2msg --set train.zero=2 --set runtime.shared_memory=off
grep -q "share one node" "$dir/z2shm.txt" && ! grep -q "share one node" "$dir/z2msg.txt"
"$PY" - "$dir/z2shm.txt" "$dir/z2msg.txt" <<'PYEOF'
import re, sys
units = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
def grab(path, pattern):
    m = re.search(pattern, open(path).read(), re.M)
    assert m, (path, pattern)
    return m
def per_rank(path):
    m = grab(path, r"^# memory per rank \(.*\): ([0-9.]+) (\w+) \(")
    return float(m[1]) * units[m[2]]
shm, msg = per_rank(sys.argv[1]), per_rank(sys.argv[2])
line = grab(sys.argv[2], r"^#\s+model memory: .*$")[0]
weights = sum(float(v) * units[u] for v, u in
              re.findall(r"(?:parameters|bf16 weight copy) ([0-9.]+) (\w+)", line))
sc = grab(sys.argv[2], r"AdamW \+ ([0-9.]+) (\w+) of reduction scratch")
want = msg - weights / 2 - float(sc[1]) * units[sc[2]]
print(f"  zero 2, 2 ranks per rank: {shm:.0f} bytes shared, {msg:.0f} by messages (expected {want:.0f})")
assert abs(shm - want) <= 0.01 * msg, (shm, want)
PYEOF
[ ! -e "$dir/run" ] || { echo "FAIL: the dry run created the run directory"; exit 1; }
grep -v '^#' "$dir/good.txt" | grep -v '^\[' | grep -v '^[a-z_0-9]* = ' | grep -v '^$' &&
  { echo "FAIL: the dry run printed lines that are not a parameter file"; exit 1; }

if ! tmpfs_mount "$dir/mnt" 4m; then
  echo "SKIP parts 3 and 4: cannot mount a tmpfs here"
  echo "dry run ok (parts 3 and 4 skipped)"
  exit 0
fi
# 4. no room for keep_last + 1 = 3 checkpoints of about 1.8 MiB in 4 MiB (2 fit)
expect 1 full --set run.dir="$dir/mnt/run"
grep -q "fmtrain: I/O error: run directory $dir/mnt/run: not enough free space for its checkpoints: each takes about .*, \[checkpoint\] keep_last = 2 (+1 while the next is written) with 0 already there needs .* more, but only .* is free" "$dir/full.txt"
expect 0 fits --set run.dir="$dir/mnt/run" --set checkpoint.keep_last=1

# 3. read-only
mkdir -p "$dir/mnt/ro"
mount -o remount,ro "$dir/mnt"
expect 2 ro --set run.dir="$dir/mnt/ro"
grep -q "fmtrain: configuration error: run directory $dir/mnt/ro cannot be used: cannot write in $dir/mnt/ro: Read-only file system" "$dir/ro.txt"
set +e
mpirun_n 2 train "$dir/p.ini" --set run.dir="$dir/mnt/ro" >"$dir/ro-run.txt" 2>&1
rc=$?
set -e
cat "$dir/ro-run.txt"
[ "$rc" -eq 2 ] || { echo "FAIL: a real run in a read-only run directory exited $rc, expected 2"; exit 1; }
grep -q "Read-only file system; set \[run\] dir" "$dir/ro-run.txt"
echo "dry run ok"

#!/usr/bin/env bash
# test_run_dir_faults.sh — run directories that are not as fmtrain left them (issue 13, cases 4 and 7).
#  4a. a directory named like an old checkpoint (step-00000010.h5/): before the fix every start
#      exited 1 with "checkpoint step-00000030.h5 not written ...: cannot delete old checkpoint
#      step-00000010.h5: Is a directory" although step 30 was written, and keep_last stopped being
#      enforced. Now: the start warns, every checkpoint is written and said so with a warning naming
#      the directory, keep_last is enforced on the real checkpoints, the run finishes (exit 0);
#  4b. a directory named `latest`: the checkpoints are written, the warning says `latest` is not
#      updated and why; exit 0;
#  4c. a directory where the next checkpoint must go: exit 2 before anything is written, naming it and
#      what to do;
#  7.  resume = auto and no checkpoint (a mistyped [run] dir): a loud warning that a NEW run starts,
#      and where.
set -euo pipefail
: "${FMTRAIN_EXE:?}" "${FMTRAIN_BINARY_DIR:?}"
source "$(dirname "$0")/../train/lib.sh"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$MAKE_DATASET" "$dir/r.h5" random 32 4096 16 3 >/dev/null
write_ini "$dir/p.ini" "$dir/r.h5" "$dir/run"
sed -i 's/^every_steps = 0/every_steps = 10/; s/^resume = never/resume = auto/; s/^steps = 50/steps = 40/' "$dir/p.ini"
ck="$dir/run/checkpoints"

# 4a. an old checkpoint's name taken by a directory
mkdir -p "$ck/step-00000005.h5"
echo "not a checkpoint" >"$ck/step-00000005.h5/readme.txt"
mpirun_n 2 train "$dir/p.ini" >"$dir/a.txt" 2>&1 || { cat "$dir/a.txt"; echo "FAIL: the run failed with a directory named like a checkpoint"; exit 1; }
grep -v '^step' "$dir/a.txt"
grep -q "warning: 1 entry of $ck named like a checkpoint or \`latest\` is not a regular file and is ignored ($ck/step-00000005.h5)" "$dir/a.txt" ||
  { echo "FAIL: the start did not warn about the directory"; exit 1; }
grep -q "warning: checkpoint step-00000030.h5 is written and complete, but: 1 entry named like a checkpoint" "$dir/a.txt" ||
  { echo "FAIL: no warning after writing step 30"; exit 1; }
if grep -q "not written" "$dir/a.txt"; then echo "FAIL: a written checkpoint was reported as not written"; exit 1; fi
[ "$(cd "$ck" && find . -maxdepth 1 -type f -name 'step-*.h5' | sort | tr '\n' ' ')" = "./step-00000030.h5 ./step-00000040.h5 " ] ||
  { ls -la "$ck"; echo "FAIL: keep_last = 2 not enforced"; exit 1; }
[ -d "$ck/step-00000005.h5" ] || { echo "FAIL: the user's directory was touched"; exit 1; }
[ -e "$dir/run/COMPLETE" ]
rm -rf "$ck/step-00000005.h5"

# 4b. `latest` is a directory
rm -rf "$dir/run"
mkdir -p "$ck/latest"
mpirun_n 2 train "$dir/p.ini" >"$dir/b.txt" 2>&1 || { cat "$dir/b.txt"; echo "FAIL: exit with a directory named latest"; exit 1; }
grep -q "warning: checkpoint step-00000010.h5 is written and complete, but: cannot update $ck/latest: it is a directory, not the file fmtrain writes there; move or remove it" "$dir/b.txt" ||
  { cat "$dir/b.txt"; echo "FAIL: no warning about latest"; exit 1; }
[ -f "$ck/step-00000040.h5" ]
rm -rf "$dir/run"

# 4c. a directory where the next checkpoint goes
mkdir -p "$ck/step-00000010.h5"
set +e
mpirun_n 2 train "$dir/p.ini" >"$dir/c.txt" 2>&1
rc=$?
set -e
grep -v '^step' "$dir/c.txt"
[ "$rc" -eq 2 ] || { echo "FAIL: expected exit 2 for a directory in the way of a checkpoint, got $rc"; exit 1; }
grep -q "fmtrain: configuration error: checkpoint $ck/step-00000010.h5 not written (the previous checkpoints are intact): checkpoint $ck/step-00000010.h5 cannot be written: a directory of that name is in the way; move or remove it" "$dir/c.txt"
rm -rf "$dir/run"

# 7. resume = auto, nothing to resume from (a typo in [run] dir)
mpirun_n 1 train "$dir/p.ini" --set run.dir="$dir/rnu" --set train.steps=12 >"$dir/d.txt" 2>&1
grep -q "warning: no checkpoint found in $dir/rnu/checkpoints: starting a NEW run in $dir/rnu (\[checkpoint\] resume = auto). If you meant to continue an earlier run, stop now and check \[run\] dir and run.name" "$dir/d.txt" ||
  { cat "$dir/d.txt"; echo "FAIL: no loud warning for a fresh start with resume = auto"; exit 1; }
echo "run directory faults ok"

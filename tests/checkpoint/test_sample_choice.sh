#!/usr/bin/env bash
# test_sample_choice.sh — `fmtrain sample --checkpoint RUNDIR` says which file it used and why
# (issue 13, case 6). Before the fix it silently sampled from a checkpoint whose optimizer state
# failed its checksum, and silently fell back to an older one when the parameters failed theirs.
#  1. all good: "using .../step-00000015.h5: the newest checkpoint of ... whose parameters verify;
#     all N datasets verify";
#  2. /adam_m damaged in the newest: it is still used (its parameters verify), and the line says its
#     datasets fail their checksum, naming the first, "good for sampling, NOT for resuming training";
#  3. /params damaged in the newest: step 10 is used and the line says step 15 was skipped, and why.
set -euo pipefail
: "${FMTRAIN_EXE:?}" "${FMTRAIN_BINARY_DIR:?}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
unset SLURM_JOB_ID SLURM_JOB_END_TIME FMTRAIN_END_TIME
PY=/usr/bin/python3
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
for i in $(seq 1 300); do
  echo "In the beginning was the word $i, and the word was with the people of the land."
done >"$dir/text.txt"
"$FMTRAIN_EXE" prepare --input "$dir/text.txt" --output "$dir/text.h5" --vocab-size 300 --quiet
cat >"$dir/p.ini" <<INI
[run]
dir = $dir/run
stop_margin_minutes = 0
[model]
n_layer = 1
n_head = 2
d_model = 32
seq_len = 16
[data]
train = $dir/text.h5
[train]
micro_batch = 4
steps = 15
warmup_steps = 0
eval_every = 0
[checkpoint]
every_steps = 5
every_minutes = 0
keep_last = 3
[runtime]
device = cpu
threads = 1
bind = none
INI
"$FMTRAIN_EXE" train "$dir/p.ini" >"$dir/train.txt" 2>&1 || { cat "$dir/train.txt"; exit 1; }
ck="$dir/run/checkpoints"

sample() { "$FMTRAIN_EXE" sample --checkpoint "$dir/run" --tokens 5 --seed 1 2>"$dir/err.txt" >/dev/null; cat "$dir/err.txt"; }

# damage GROUP: changes one value of the first dataset of GROUP in step 15 (its crc32 stays)
damage() {
  "$PY" - "$ck/step-00000015.h5" "$1" <<'PYEOF'
import sys, h5py
with h5py.File(sys.argv[1], "r+") as f:
    g = f[sys.argv[2]]
    name = sorted(g.keys())[0]
    d = g[name]
    v = d[()]
    v.flat[0] += 1.0
    d[...] = v
    print(f"damaged /{sys.argv[2]}/{name}")
PYEOF
}

# 1. all good
sample
grep -q "^fmtrain sample: using $ck/step-00000015.h5: the newest checkpoint of $ck whose parameters verify; all [0-9]* datasets verify$" "$dir/err.txt" ||
  { echo "FAIL: the choice of a good checkpoint is not explained"; exit 1; }

# 2. the optimizer state of the newest is damaged
cp "$ck/step-00000015.h5" "$dir/good15.h5"
damage adam_m
sample
grep -q "^fmtrain sample: using $ck/step-00000015.h5: the newest checkpoint of $ck whose parameters verify; its parameters verify, but 1 of its [0-9]* datasets fail their checksum (first: /adam_m/.*): good for sampling, NOT for resuming training$" "$dir/err.txt" ||
  { echo "FAIL: a damaged optimizer state was not reported"; exit 1; }

# 3. the parameters of the newest are damaged
cp "$dir/good15.h5" "$ck/step-00000015.h5"
damage params
sample
grep -q "^fmtrain sample: using $ck/step-00000010.h5: the newest checkpoint of $ck whose parameters verify; skipped step-00000015.h5 (.*fails its CRC-32 check.*); all [0-9]* datasets verify$" "$dir/err.txt" ||
  { echo "FAIL: the fallback to step 10 was not explained"; exit 1; }
echo "sample choice ok"

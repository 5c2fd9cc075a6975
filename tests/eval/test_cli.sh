#!/usr/bin/env bash
# test_cli.sh — `fmtrain eval` end to end, and the validation set that does not depend on the layout.
#  1. A 2-rank run evaluates every 10 steps and keeps each checkpoint. `fmtrain eval` of each
#     checkpoint, on 1 and on 2 ranks, prints exactly the val_loss the trainer logged at that step
#     (metrics.jsonl writes 9 significant digits; eval's JSON has 17: compared at the logged
#     precision), and the 1- and 2-rank results are bit-identical (same batch and threads). Another
#     --batch and --threads agree to 1e-6 relative (the kernels' rounding; measured ~1e-9).
#  2. The same global batch on 1 rank (grad_accum 2) logs val losses within 1e-5 relative of the
#     2-rank run (only the weights' rounding differs; the windows are the same). The 2-rank run's
#     step-20 checkpoint resumed on 1 rank logs at step 30 what the 2-rank run logged, to the same
#     1e-5 (the windows once changed with the rank count, and the val loss jumped).
#  3. Evaluation records' elapsed_s on 2 ranks lie on the train records' clock (between the train
#     records of the step and of the next logged step).
#  4. The banner: `data:` names the training file, `validation:` the validation file with ITS val
#     token count when [data] val names another file; eval then uses that file by default.
#  5. --all, --windows, --split train, --data, a run directory, the old key eval_batches, a
#     checkpoint's data found from another working directory through /data val_abs, --json, and
#     clear errors (usage, missing files, a dataset of another tokenizer, a split without windows).
set -euo pipefail
: "${FMTRAIN_EXE:?}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OMPI_MCA_btl=self,vader OMPI_MCA_btl_vader_single_copy_mechanism=none
unset SLURM_JOB_ID SLURM_JOB_END_TIME FMTRAIN_END_TIME OMP_NUM_THREADS
PY=/usr/bin/python3
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cd "$dir"
fm() { "$FMTRAIN_EXE" "$@"; }
mpi2() { mpiexec -n 2 --oversubscribe "$FMTRAIN_EXE" "$@"; }

for i in $(seq 1 600); do
  echo "In the beginning was the word $i, and the word was with the people of the land $((i * 7 % 13))."
done >text.txt
fm prepare --input text.txt --output text.h5 --vocab-size 300 --val-fraction 0.1 --quiet
cat >p.ini <<INI
[run]
dir = run
stop_margin_minutes = 0
[model]
n_layer = 2
n_head = 2
d_model = 32
seq_len = 16
[data]
train = text.h5
[train]
micro_batch = 4
grad_accum = 1
steps = 30
warmup_steps = 0
eval_every = 10
eval_windows = 23
[checkpoint]
every_steps = 10
every_minutes = 0
keep_last = 5
[runtime]
device = cpu
precision = fp32  # fmtrain eval computes in fp32: the logged val loss must be fp32 too
threads = 1
bind = none
log_every = 1
INI
mpi2 train p.ini >train2.txt 2>&1 || { cat train2.txt; exit 1; }

# ---- 1. eval reproduces the logged val loss, on 1 and 2 ranks -----------------------------------
for s in 10 20 30; do
  c=run/checkpoints/step-000000$s.h5
  fm eval --checkpoint "$c" --json >"e1_$s.json" 2>/dev/null
  mpi2 eval --checkpoint "$c" --json >"e2_$s.json" 2>/dev/null
  fm eval --checkpoint "$c" --json --batch 3 --threads 2 >"e3_$s.json" 2>/dev/null
done
"$PY" - <<'PYEOF'
import json
logged = {r["step"]: r["val_loss"] for r in map(json.loads, open("run/metrics.jsonl")) if r["type"] == "eval"}
assert sorted(logged) == [10, 20, 30], logged
for s in (10, 20, 30):
    e1, e2, e3 = (json.load(open(f"e{k}_{s}.json")) for k in (1, 2, 3))
    assert e1["step"] == s and e1["windows"] == 23 and e1["split"] == "val" and e1["batch"] == 4, e1
    assert e1["ranks"] == 1 and e2["ranks"] == 2 and e1["tokens"] == 23 * 16, (e1, e2)
    # metrics.jsonl prints %.9g: eval's value printed the same way is the logged text, exactly
    assert float(f"{e1['loss']:.9g}") == logged[s], (s, e1["loss"], logged[s])
    assert e1["loss"] == e2["loss"], ("1 and 2 ranks differ", s, e1["loss"], e2["loss"])
    assert abs(e3["loss"] - e1["loss"]) <= 1e-6 * e1["loss"], ("batch 3, threads 2", e3, e1)
    assert abs(e1["perplexity"] - 2.718281828459045 ** e1["loss"]) <= 1e-9 * e1["perplexity"]
print("eval == logged val loss at steps", sorted(logged), "on 1 and 2 ranks")
PYEOF
# a run directory means its newest checkpoint; the sentence names the split, windows and file
out=$(fm eval --checkpoint run 2>err.txt)
grep -q "^val loss [0-9.]* (perplexity [0-9.]*) on 23 of [0-9]* windows of $dir/text.h5 (368 tokens)$" <<<"$out" ||
  { echo "unexpected output: $out"; exit 1; }
grep -q "checkpoint run/checkpoints/step-00000030.h5 (step 30" err.txt || { cat err.txt; exit 1; }
grep -q "the checkpoint's \[data\] train: no \[data\] val" err.txt || { cat err.txt; exit 1; }

# ---- 2. the same windows on another layout and after a resume on another rank count -----------
fm train p.ini --set run.dir=run1 --set train.grad_accum=2 >train1.txt 2>&1 || { cat train1.txt; exit 1; }
fm train p.ini --set run.dir=runr --set checkpoint.resume=run/checkpoints/step-00000020.h5 \
  >trainr1.txt 2>&1 || { cat trainr1.txt; exit 1; }
grep -q "grad_accum 1 -> 2" trainr1.txt || { echo "the resume did not adjust grad_accum"; cat trainr1.txt; exit 1; }
"$PY" - <<'PYEOF'
import json
def evals(d):
    return {r["step"]: r["val_loss"] for r in map(json.loads, open(f"{d}/metrics.jsonl")) if r["type"] == "eval"}
two, one, resumed = evals("run"), evals("run1"), evals("runr")
for s in (10, 20, 30):
    assert abs(one[s] - two[s]) <= 1e-5 * two[s], ("1 rank x grad_accum 2 vs 2 ranks", s, one[s], two[s])
assert sorted(resumed) == [30], resumed
assert abs(resumed[30] - two[30]) <= 1e-5 * two[30], ("resumed on 1 rank", resumed[30], two[30])
print("val loss, 2 ranks:", two, "1 rank x grad_accum 2:", one, "resumed on 1 rank:", resumed)
PYEOF

# ---- 3. elapsed_s of evaluation records on 2 ranks ----------------------------------------------
"$PY" - <<'PYEOF'
import json
recs = [json.loads(l) for l in open("run/metrics.jsonl")]
train = {r["step"]: r["elapsed_s"] for r in recs if r["type"] == "train"}
for r in recs:
    if r["type"] == "eval" and r["step"] + 1 in train:
        assert train[r["step"]] <= r["elapsed_s"] <= train[r["step"] + 1], (r, train[r["step"]], train[r["step"] + 1])
last = [r for r in recs if r["type"] == "eval"][-1]
assert train[30] <= last["elapsed_s"] <= train[30] + 5, (last, train[30])
print("eval elapsed_s on the train records' clock at 2 ranks")
PYEOF

# ---- 4. [data] val names another file -----------------------------------------------------------
head -300 text.txt | sed 's/word/verse/' >val.txt
fm prepare --input val.txt --output val.h5 --tokenizer-from text.h5 --val-fraction 0.5 --quiet
vt=$(fm inspect val.h5 | awk '/^val tokens/ { print $3 }')
tt=$(fm inspect text.h5 | awk '/^val tokens/ { print $3 }')
[ "$vt" != "$tt" ] || { echo "the two files should have different val token counts"; exit 1; }
fm train p.ini --set run.dir=runv --set data.val=val.h5 --set train.steps=10 >trainv.txt 2>&1 ||
  { cat trainv.txt; exit 1; }
grep -q "^data: text.h5: [0-9]* train tokens, vocabulary" trainv.txt || { grep data: trainv.txt; exit 1; }
grep -q "^validation: val.h5 (\[data\] val): $vt val tokens = $(((vt - 1) / 16)) windows" trainv.txt ||
  { grep -E "data:|validation:" trainv.txt; echo "expected $vt val tokens of val.h5"; exit 1; }
if grep -q "$tt val tokens" trainv.txt; then echo "the banner shows text.h5's val count"; exit 1; fi
fm eval --checkpoint runv --json >ev.json 2>ev.err
grep -q "data $dir/val.h5 (the checkpoint's \[data\] val)" ev.err || { cat ev.err; exit 1; }
"$PY" - <<'PYEOF'
import json
e = json.load(open("ev.json"))
logged = [r for r in map(json.loads, open("runv/metrics.jsonl")) if r["type"] == "eval"][-1]
assert e["data"].endswith("/val.h5") and float(f"{e['loss']:.9g}") == logged["val_loss"], (e, logged)
PYEOF

# ---- 5. options, old parameter files, moved data, errors -----------------------------------------
nv=$(((tt - 1) / 16))
fm eval --checkpoint run --all 2>/dev/null | grep -q "on $nv of $nv windows" || { echo "--all"; exit 1; }
fm eval --checkpoint run --windows 100000 2>/dev/null | grep -q "on $nv of $nv windows" ||
  { echo "--windows beyond the split"; exit 1; }
fm eval --checkpoint run --windows 5 2>/dev/null | grep -q "on 5 of $nv windows" || { echo "--windows 5"; exit 1; }
fm eval --checkpoint run --split train --windows 7 2>/dev/null | grep -q "^train loss .* on 7 of " ||
  { echo "--split train"; exit 1; }
fm eval --checkpoint run --data val.h5 2>/dev/null | grep -q "windows of val.h5" || { echo "--data"; exit 1; }
# the old key: eval_batches = 2 with micro_batch 4 evaluates 8 windows, in training and in eval
sed 's/^eval_windows = 23$/eval_batches = 2/' p.ini >old.ini
fm train old.ini --set run.dir=runo --set train.steps=10 >traino.txt 2>&1 || { cat traino.txt; exit 1; }
grep -q "the loss over 8 of them" traino.txt || { grep validation: traino.txt; exit 1; }
fm eval --checkpoint runo --json 2>/dev/null | grep -q '"windows":8,' || { echo "old key in eval"; exit 1; }
# the checkpoint stores where its data is: found from another working directory
mkdir elsewhere
(cd elsewhere && fm eval --checkpoint ../run --json 2>/dev/null) | grep -q "\"data\":\"$dir/text.h5\"" ||
  { echo "data not found through /data val_abs"; exit 1; }
if "$PY" -c 'import h5py' 2>/dev/null; then
  "$PY" - "$dir" <<'PYEOF'
import sys, h5py
d = sys.argv[1]
with h5py.File("run/checkpoints/step-00000030.h5", "r") as f:
    a = f["data"].attrs
    assert a["train"] == b"text.h5" and a["val"] == b"text.h5", dict(a)
    assert a["train_abs"].decode() == d + "/text.h5" and a["val_abs"].decode() == d + "/text.h5", dict(a)
    assert a["val_source"] == b"data.train", dict(a)
with h5py.File("runv/checkpoints/step-00000010.h5", "r") as f:
    assert f["data"].attrs["val_source"] == b"data.val" and f["data"].attrs["val"] == b"val.h5"
print("/data train_abs, val_abs, val_source")
PYEOF
fi

expect_fail() { # expect_fail CODE PATTERN ARGS...
  local code=$1 pattern=$2 out rc
  shift 2
  set +e
  out=$("$@" 2>&1)
  rc=$?
  set -e
  if [ "$rc" -ne "$code" ] || ! grep -qF -- "$pattern" <<<"$out"; then
    echo "$*: expected exit $code and '$pattern', got $rc: $out"
    exit 1
  fi
}
expect_fail 2 "--checkpoint PATH is required" fm eval --all
expect_fail 2 "--split test: expected val or train" fm eval --checkpoint run --split test
expect_fail 2 "--windows 3 and --all both given" fm eval --checkpoint run --windows 3 --all
expect_fail 2 "--windows: 0 is out of range" fm eval --checkpoint run --windows 0
expect_fail 2 "unknown option --window (did you mean --windows?)" fm eval --checkpoint run --window 3
expect_fail 2 "--split test: expected val or train" mpi2 eval --checkpoint run --split test
expect_fail 3 "cannot open checkpoint nothing" fm eval --checkpoint nothing
expect_fail 3 "nothing.h5" fm eval --checkpoint run --data nothing.h5
sed 's/word/verse/g' text.txt >other.txt
fm prepare --input other.txt --output other.h5 --vocab-size 300 --quiet
expect_fail 3 "other.h5 was made with another tokenizer than" fm eval --checkpoint run --data other.h5
expect_fail 3 "other.h5 was made with another tokenizer than" mpi2 eval --checkpoint run --data other.h5
fm prepare --input other.txt --output big.h5 --vocab-size 400 --quiet
expect_fail 3 "big.h5 has vocab_size 400 but the model of" fm eval --checkpoint run --data big.h5
fm prepare --input val.txt --output noval.h5 --tokenizer-from text.h5 --val-fraction 0 --quiet
expect_fail 3 "noval.h5 has no validation window of seq_len+1 = 17 tokens" fm eval --checkpoint run --data noval.h5
mv text.h5 moved.h5
expect_fail 3 "which is not found from here; give the dataset with --data FILE" fm eval --checkpoint run
expect_fail 3 "which is not found from here" mpi2 eval --checkpoint run
mv moved.h5 text.h5
echo "eval cli ok"

#!/usr/bin/env bash
# test_cli.sh — `fmtrain sample` end to end: a tiny model trained for a few steps on a text
# dataset (with its tokenizer) is sampled from a run directory and from a checkpoint file; the same
# seed gives the same text, generation runs past seq_len (the window slides); the banner names the
# checkpoint file used, the family and the device; --eot-prefix (default yes) puts the end-of-text
# token before the prompt: greedy text from a prompt P then continues exactly as a fresh document
# that began with P does, which the prompt alone (--eot-prefix no) need not; clear errors for a
# missing checkpoint, a missing --checkpoint, an empty prompt, a bad --eot-prefix, an unknown
# --device, and a checkpoint without tokenizer.
set -euo pipefail
: "${FMTRAIN_EXE:?}" "${FMTRAIN_BINARY_DIR:?}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
unset SLURM_JOB_ID SLURM_JOB_END_TIME FMTRAIN_END_TIME
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
steps = 20
warmup_steps = 0
eval_every = 0
[checkpoint]
every_steps = 0
every_minutes = 0
[runtime]
device = cpu
threads = 1
bind = none
INI
"$FMTRAIN_EXE" train "$dir/p.ini" >"$dir/train.txt" 2>&1 || { cat "$dir/train.txt"; exit 1; }

a=$("$FMTRAIN_EXE" sample --checkpoint "$dir/run" --prompt "In the beginning" --tokens 60 --seed 5 2>/dev/null)
b=$("$FMTRAIN_EXE" sample --checkpoint "$dir/run" --prompt "In the beginning" --tokens 60 --seed 5 2>/dev/null)
[ "$a" = "$b" ] || { echo "same seed, different text"; exit 1; }
case "$a" in "In the beginning"*) ;; *) echo "output does not start with the prompt: $a"; exit 1 ;; esac
[ "${#a}" -gt 40 ] || { echo "too little text generated: '$a'"; exit 1; }
ckpt=$(find "$dir/run/checkpoints" -name 'step-*.h5' | head -1)
g1=$("$FMTRAIN_EXE" sample --checkpoint "$ckpt" --tokens 40 --temperature 0 2>/dev/null)
g2=$("$FMTRAIN_EXE" sample --checkpoint "$ckpt" --tokens 40 --temperature 0 --seed 9 2>/dev/null)
[ "$g1" = "$g2" ] || { echo "greedy output depends on the seed"; exit 1; }
echo "sample: $a"
"$FMTRAIN_EXE" sample --checkpoint "$dir/run" --tokens 5 --device cpu --threads 2 >/dev/null 2>"$dir/banner.txt"
grep -q "checkpoint $dir/run/checkpoints/step-[0-9]*\.h5 (gpt2, 1 layers" "$dir/banner.txt" ||
  { echo "the banner does not name the checkpoint used and the family: $(cat "$dir/banner.txt")"; exit 1; }
grep -q ") on CPU" "$dir/banner.txt" || { echo "the banner does not name the device: $(cat "$dir/banner.txt")"; exit 1; }

expect_fail() { # expect_fail CODE PATTERN ARGS...
  local code=$1 pattern=$2 out rc
  shift 2
  set +e
  out=$("$FMTRAIN_EXE" sample "$@" 2>&1)
  rc=$?
  set -e
  if [ "$rc" -ne "$code" ] || ! grep -q "$pattern" <<<"$out"; then
    echo "sample $*: expected exit $code and '$pattern', got $rc: $out"
    exit 1
  fi
}
expect_fail 2 "checkpoint PATH is required" --prompt hello
expect_fail 3 "$dir/nothing" --checkpoint "$dir/nothing"
expect_fail 2 "prompt is empty" --checkpoint "$dir/run" --prompt ""
expect_fail 2 "unknown compute backend 'gpu' (known: cpu, cuda)" --checkpoint "$dir/run" --device gpu
expect_fail 2 "eot-prefix maybe: expected yes" --checkpoint "$dir/run" --prompt hi --eot-prefix maybe

# --eot-prefix: a model of short documents (one per input file) that begin "Lo alpha" and go on
# "<n> Lo beta ...". Its fresh document (end-of-text token, then greedy tokens) starts with some
# token P; prompting P with the end-of-text token before it is the very same context, so the greedy
# continuation must be the fresh document's, token for token. Without the token the model sees P at
# position 0 with nothing before it, a context it was never trained on (here it then writes
# another number: checked below, as what shows that the option changes the context at all).
mkdir "$dir/docs"
for d in $(seq 1 60); do
  { printf "Lo alpha"; for i in $(seq 1 12); do printf " %d Lo beta" $((i * d % 17)); done; echo; } \
    >"$dir/docs/doc$d.txt"
done
"$FMTRAIN_EXE" prepare --input "$dir"/docs/doc*.txt --output "$dir/docs.h5" --vocab-size 280 --quiet
"$FMTRAIN_EXE" train "$dir/p.ini" --set data.train="$dir/docs.h5" --set run.dir="$dir/docrun" \
  --set model.n_layer=2 --set train.micro_batch=8 --set train.steps=300 --set train.lr=3e-3 \
  --set train.warmup_steps=10 >"$dir/train3.txt" 2>&1 || { cat "$dir/train3.txt"; exit 1; }
greedy() { "$FMTRAIN_EXE" sample --checkpoint "$dir/docrun" --temperature 0 --device cpu "$@" 2>/dev/null; }
p=$(greedy --tokens 1)
fresh=$(greedy --tokens 6)
with=$(greedy --prompt "$p" --tokens 5 --eot-prefix yes)
default=$(greedy --prompt "$p" --tokens 5)
alone=$(greedy --prompt "$p" --tokens 5 --eot-prefix no)
if [ -z "$p" ] || [ "$with" != "$fresh" ]; then
  echo "--eot-prefix yes: prompt '$p' continued as '$with', the fresh document as '$fresh'"
  exit 1
fi
[ "$default" = "$with" ] || { echo "the default is not --eot-prefix yes: '$default' vs '$with'"; exit 1; }
[ "$alone" != "$with" ] ||
  { echo "--eot-prefix no gave the same text as yes ('$alone'): the option changed nothing"; exit 1; }
"$FMTRAIN_EXE" sample --checkpoint "$dir/docrun" --prompt "$p" --tokens 1 2>&1 >/dev/null |
  grep -q "the prompt starts a document (end-of-text token before it)" ||
  { echo "the banner does not say that the prompt starts a document"; exit 1; }
echo "eot-prefix: fresh '$fresh', after the token '$with', alone '$alone'"

# the family comes from the checkpoint's /model arch: one this fmtrain does not know is refused
if /usr/bin/python3 -c 'import h5py' 2>/dev/null; then
  cp "$ckpt" "$dir/foreign.h5"
  /usr/bin/python3 -c 'import sys, h5py, numpy; f = h5py.File(sys.argv[1], "r+"); f["model"].attrs["arch"] = numpy.bytes_("nosuch")' \
    "$dir/foreign.h5"
  expect_fail 3 "unknown model family arch = 'nosuch'" --checkpoint "$dir/foreign.h5"
fi

# a dataset without tokenizer -> a checkpoint without tokenizer
"$FMTRAIN_BINARY_DIR/tests/train/train_make_dataset" "$dir/ids.h5" random 16 256 8 1
"$FMTRAIN_EXE" train "$dir/p.ini" --set data.train="$dir/ids.h5" --set run.dir="$dir/run2" \
  --set train.steps=2 >/dev/null 2>&1
expect_fail 3 "no tokenizer" --checkpoint "$dir/run2"
echo "sample cli ok"

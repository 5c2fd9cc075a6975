#!/usr/bin/env bash
# test_cli.sh — `fmtrain plan` end to end on the shipped tables (jobscripts/sites/*.plan):
#   - every site and every device of the tables plans the example inputs (exit 0), and every site job
#     script has its .plan beside it;
#   - GPT-2 124M on an H100: the predicted step is the measured fmtrain-bench step of measured.plan
#     (same model up to the padded vocabulary), the memory table holds the model's formula, the JSON
#     carries the same numbers;
#   - A100-64 (Leonardo): no fmtrain measurement on that chip, so no step time, wall time or node-hours
#     are printed, and the output says how to measure one;
#   - H100-64 (no bandwidth known) and GH200 (same chip as H100/H200): no prediction / a stated range;
#     H100-80 in bf16 from the H200 bf16 measurement: a stated range; A100-64 in bf16: no prediction;
#   - every bad input is a usage error (exit 2) with a message that names it.
set -euo pipefail
fm=${FMTRAIN_EXE:?FMTRAIN_EXE is not set}
src=${FMTRAIN_SOURCE_DIR:?FMTRAIN_SOURCE_DIR is not set}
py=/usr/bin/python3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
# run EXPECTED_CODE ARGS...: output in $tmp/out and $tmp/err
run() {
  local want=$1; shift
  local rc=0
  "$fm" "$@" >"$tmp/out" 2>"$tmp/err" || rc=$?
  if [ "$rc" != "$want" ]; then
    cat "$tmp/out" "$tmp/err" >&2
    fail "fmtrain $* exited $rc, expected $want"
  fi
}
has() { grep -qF -- "$2" "$tmp/$1" || { cat "$tmp/$1" >&2; fail "$1 of the last command lacks: $2"; }; }
hasnt() { ! grep -qF -- "$2" "$tmp/$1" || { cat "$tmp/$1" >&2; fail "$1 of the last command has: $2"; }; }
export FMTRAIN_JOBSCRIPTS="$src/jobscripts"
# fp32: the precision of the GPU measurements (auto would be bf16 on the GPUs; tested below)
gpt2=("$src/inputs/gpt2-124m.ini" --set runtime.precision=fp32)
tiny=("$src/inputs/llama-tiny.ini" --set model.vocab_size=1024)

# ---- every site and device plans; every site script has its table ---------------------------------
for sb in "$src"/jobscripts/sites/*.sbatch; do
  site=$(basename "$sb" .sbatch)
  [ -f "$src/jobscripts/sites/$site.plan" ] || fail "jobscripts/sites/$site.sbatch has no $site.plan beside it"
  run 0 plan "${gpt2[@]}" --tokens 1e9 --system "$site" --nodes 2
  has out "fmtrain plan: "
  has out "memory per rank"
  run 0 plan "${tiny[@]}" --tokens 1e7 --system "$site" --json
  "$py" -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["site"]==sys.argv[2]' "$tmp/out" "$site" ||
    fail "--json of $site is not one JSON object naming the site"
done
for dev in H100-80 H200 H100-64 GH200-96 A100-40 A100-64; do
  run 0 plan "${gpt2[@]}" --tokens 1e9 --gpu "$dev"
done
for dev in epyc-7763-2s epyc-7h12-2s devvm-zen4-2c; do
  run 0 plan "${tiny[@]}" --tokens 1e7 --cpu "$dev"
done

# ---- GPT-2 124M on H100s: the prediction is the measurement --------------------------------------
run 0 plan "${gpt2[@]}" --tokens 10e9 --gpu H100-80 --nodes 4 --ranks-per-node 4 --json
cp "$tmp/out" "$tmp/h100.json"
"$py" - "$tmp/h100.json" "$src/jobscripts/sites/measured.plan" <<'PY'
import json, sys, re
d = json.load(open(sys.argv[1]))
p = d["prediction"]
assert p["basis"] == "measured", p
assert p["measurement"] == "h100-gpt2-124m-b8", p["measurement"]
# measured.plan: 7930.6 tokens/s at micro_batch 8, seq 1024 on one rank; the plan's model has the
# padded vocabulary 50304 (inputs/gpt2-124m.ini), whose real rows add FLOPs to the LM head only
meas_step = 8 * 1024 / 7930.6
fpt_ratio = d["model"]["flops_per_token"] / (6 * (12 * 12 * 768 * 768 + 50257 * 768) + 6 * 12 * 768 * 1024)
assert abs(p["step_s_low"] / (meas_step * fpt_ratio) - 1) < 1e-4, (p["step_s_low"], meas_step, fpt_ratio)
assert p["step_s_low"] == p["step_s_high"]
assert abs(p["tokens_per_s_low"] - 16 * 8 * 1024 / p["step_s_low"]) < 1e-6 * p["tokens_per_s_low"]
assert abs(p["mfu_low"] - 7930.6 * 797.8e6 / 66.9e12) < 2e-3 * p["mfu_low"], p["mfu_low"]
assert p["communication_included"] is False
m = d["model"]
assert m["n_params"] == 124475904 and m["vocab_size"] == 50304, m
assert d["layout"]["ranks"] == 16 and d["layout"]["steps"] == -(-10**10 // (16 * 8 * 1024))
mem = {(r["precision"], r["zero"]): r for r in d["memory"]["per_rank"]}
n = 124475904 + 1024 * 768 * 0  # padded layout: wpe 1024 rows, wte 50304 rows: the model's count
z0, z1, z2 = mem[("fp32", 0)], mem[("fp32", 1)], mem[("fp32", 2)]
assert z0["weights"] == z0["grads"] == z0["optim"] // 2 == 4 * 124475904, z0
assert z1["optim"] == 8 * -(-124475904 // 16) and z1["grads"] == z0["grads"], z1
assert z2["grads"] == 4 * -(-124475904 // 16), z2
assert z0["total"] - z2["total"] == (z0["grads"] - z2["grads"]) + (z0["optim"] - z2["optim"])
assert d["memory"]["runtime_overhead_bytes"] == 683 * 2**20
assert all(r["fits"] for r in d["memory"]["per_rank"])
b16 = mem[("bf16", 1)]
assert b16["weights"] == 2 * 124475904 and b16["master"] == 4 * -(-124475904 // 16), b16
assert d["device"]["memory_gib"]["verified"] is True
assert d["checkpoint"]["write_s"] == 0 and d["checkpoint"]["young_interval_s"] == 0
print("h100 json ok: step %.4f s, MFU %.4f" % (p["step_s_low"], p["mfu_low"]))
PY
run 0 plan "${gpt2[@]}" --tokens 10e9 --gpu H100-80 --nodes 4 --ranks-per-node 4 --fs-gbs 20 --time-limit 24
has out "measured   H100-80, fp32, 2026-11-26"
has out "command: fmtrain-bench --device cuda --layers 12"
has out "step       1.03"
has out "communication: every step all-reduces"
has out "interval   Young: sqrt(2 x"
has out "jobs         1 at"
has out "node-hours   "
has out "compare    not fmtrain: PyTorch"
hasnt out "no prediction"

# ---- no measurement on the A100s: no prediction and no node-hours --------------------------------
run 0 plan "${gpt2[@]}" --tokens 10e9 --system leonardo-booster --nodes 8
has out "leonardo-booster (Leonardo Booster"
has out "no prediction: no fmtrain measurement in fp32 on A100-64"
has out "fmtrain-bench --device cuda --layers 12 --heads 12 --dim 768 --vocab 50304 --seq 1024"
has out "wall time    no prediction"
hasnt out "node-hours   "
has out "(verified: CINECA"
has out "write      "
run 0 plan "${gpt2[@]}" --tokens 10e9 --system leonardo-booster --nodes 8 --json
"$py" -c 'import json,sys; d=json.load(open(sys.argv[1])); p=d["prediction"]; assert p["basis"]=="none" and "step_s_low" not in p and "node_hours_low" not in d["schedule"], d' "$tmp/out" ||
  fail "the JSON of a plan without a measurement has a step time or node-hours"

# ---- the same chip: a stated range (GH200); no bandwidth known (H100-64): none ----------------------
run 0 plan "${gpt2[@]}" --tokens 1e9 --gpu GH200-96
has out "range      no fmtrain measurement on GH200-96 in fp32"
has out "step       "
run 0 plan "${gpt2[@]}" --tokens 1e9 --system marenostrum5-acc
has out "no prediction: no fmtrain measurement in fp32 on H100-64"
run 0 plan "${gpt2[@]}" --tokens 1e9 --gpu H100-80 --precision bf16
has out "range      no fmtrain measurement on H100-80 in bf16; H200 has the same chip"
has out "compare    not fmtrain: PyTorch 2.11"
run 0 plan "${gpt2[@]}" --tokens 1e9 --gpu A100-64 --precision bf16
has out "no prediction: no fmtrain measurement in bf16 on A100-64"
has out "fmtrain-bench --device cuda --layers 12 --heads 12 --dim 768 --vocab 50304 --seq 1024 --batch 8 --threads 4 --steps 5 --warmup 1 --precision bf16"
has out "precision  bf16 (--precision)"
# the precision defaults to the parameter file's; auto plans fp32 and says why
run 0 plan "${gpt2[@]}" --set runtime.precision=bf16 --tokens 1e9 --gpu H100-80 --json
"$py" -c 'import json,sys; p=json.load(open(sys.argv[1]))["prediction"]; assert p["precision"]=="bf16" and p["precision_from"]=="[runtime] precision", p' "$tmp/out" ||
  fail "[runtime] precision = bf16 is not the plan's precision"
run 0 plan "${gpt2[@]}" --set runtime.precision=auto --tokens 1e9 --gpu H100-80
has out "precision  bf16 ([runtime] precision = auto: bf16 on GPUs of compute capability 8.0 and newer)"
run 0 plan "${tiny[@]}" --set runtime.precision=auto --tokens 1e7 --cpu devvm-zen4-2c
has out "plan it with --precision bf16"

# ---- CPU nodes -------------------------------------------------------------------------------------
run 0 plan "${tiny[@]}" --tokens 1e7 --system lumi-c --nodes 2 --node-mtbf 5000
has out "x 16 cores of epyc-7763-2s"
has out "write      "
has out "240"
has out "interval   Young"
run 0 plan "${tiny[@]}" --tokens 1e7 --cpu devvm-zen4-2c --ranks-per-node 2
has out "2 ranks x 1 cores of devvm-zen4-2c"

# ---- bad input: exit 2, a message that names it ------------------------------------------------------
run 2 plan "${gpt2[@]}" --gpu H100-80
has err "--tokens N (the token budget) is required"
run 2 plan "${gpt2[@]}" --tokens lots --gpu H100-80
has err "--tokens: expected a number, got 'lots'"
run 2 plan "${gpt2[@]}" --tokens 0 --gpu H100-80
has err "--tokens: 0 is out of range"
run 2 plan "${gpt2[@]}" --tokens 1e9
has err "give exactly one of --system SITE, --gpu NAME, --cpu NAME (got 0)"
run 2 plan "${gpt2[@]}" --tokens 1e9 --system lumi-c --gpu H100-80
has err "give exactly one of --system SITE, --gpu NAME, --cpu NAME (got 2)"
run 2 plan "${gpt2[@]}" --tokens 1e9 --system leonardo
has err "no site 'leonardo'"
has err "the sites are: "
run 2 plan "${gpt2[@]}" --tokens 1e9 --gpu H100
has err "no GPU 'H100' in the device table"
has err "did you mean 'H100-80'?"
run 2 plan "${gpt2[@]}" --tokens 1e9 --gpu epyc-7763-2s
has err "epyc-7763-2s is a CPU node type"
run 2 plan "${gpt2[@]}" --tokens 1e9 --gpu H100-80 --precision fp16
has err "--precision: expected fp32 or bf16, got 'fp16'"
run 2 plan "${gpt2[@]}" --tokens 1e9 --gpu H100-80 --zero 3
has err "--zero: 3 is out of range [0, 2]"
run 2 plan "${gpt2[@]}" --tokens 1e9 --system leonardo-booster --nodes 65
has err "--nodes 65 is more than leonardo-booster's 64 nodes per job"
run 2 plan "${gpt2[@]}" --tokens 1e9 --gpu H100-80 --cores-per-rank 4
has err "--cores-per-rank is for CPU nodes"
run 2 plan "${tiny[@]}" --tokens 1e9 --system lumi-c --ranks-per-node 8 --cores-per-rank 32
has err "8 ranks per node x 32 cores per rank do not fit the 128 cores"
run 2 plan "${gpt2[@]}" --tokens 1e9 --gpu H100-80 --nodes 0
has err "--nodes: 0 is out of range"
run 2 plan "${gpt2[@]}" --tokens 1e9 --gpu H100-80 --time-limit -1
has err "--time-limit: -1 is out of range"
run 2 plan "${gpt2[@]}" --tokens 1e9 --gpu H100-80 --data "$tmp/none"
has err "cannot read the plan tables in $tmp/none"
run 2 plan "$src/inputs/llama-tiny.ini" --set data.train="$tmp/missing.h5" --tokens 1e9 --gpu H100-80
has err "[model] vocab_size = 0 takes the vocabulary from the dataset, and $tmp/missing.h5 cannot be read"
has err "--set model.vocab_size=N"
run 2 plan "${gpt2[@]}" --set model.n_head=7 --tokens 1e9 --gpu H100-80
has err "n_head"
run 2 plan --tokens 1e9 --gpu H100-80
has err "expected one parameter file, got 0 arguments"
run 2 plan "${gpt2[@]}" --tokens 1e9 --gpu H100-80 --nodez 2
has err "unknown option --nodez (did you mean --nodes?)"
# a table without provenance is refused where it is read
mkdir "$tmp/tables"
cp "$src"/jobscripts/sites/*.plan "$tmp/tables/"
sed -i 's/^memory_gib = 40 .*/memory_gib = 40/' "$tmp/tables/devices.plan"
run 2 plan "${gpt2[@]}" --tokens 1e9 --gpu A100-40 --data "$tmp/tables"
has err "devices.plan"
has err "does not say where it comes from"

# ---- help ----------------------------------------------------------------------------------------
run 0 help plan
has out "Usage: fmtrain plan PARAMS.ini --tokens N"
run 0 help
has out "  plan "
# every option of `fmtrain help plan` is in docs/cli.md's plan section and in docs/fmtrain.1's, and the
# other way round for cli.md's option table
run 0 help plan
"$py" - "$tmp/out" "$src/docs/cli.md" "$src/docs/fmtrain.1" <<'PY' || fail "fmtrain help plan, docs/cli.md and docs/fmtrain.1 disagree"
import re, sys
helptext = open(sys.argv[1]).read()
opts = set(re.findall(r"^  (--[a-z-]+)", helptext, re.M))
assert len(opts) >= 12, opts
md = open(sys.argv[2]).read()
sec = md[md.index("## `fmtrain plan"):]
sec = sec[:sec.index("\n## ", 1)]
md_opts = set(re.findall(r"^\| `(--[a-z-]+)", sec, re.M)) | set(re.findall(r"`(--[a-z-]+)[ `]", sec))
man = open(sys.argv[3]).read().replace("\\-", "-")
msec = man[man.index('.BI "plan '):]
msec = msec[:msec.index(".TP")]
bad = [o for o in sorted(opts) if o not in md_opts] + [o + " (fmtrain.1)" for o in sorted(opts) if o not in msec]
bad += [o + " (only in cli.md)" for o in sorted(md_opts) if o.startswith("--") and o not in opts and o != "--set"]
assert not bad, bad
print("help plan agrees with cli.md and fmtrain.1:", " ".join(sorted(opts)))
PY
echo "plan cli ok"

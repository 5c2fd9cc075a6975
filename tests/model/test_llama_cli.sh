#!/usr/bin/env bash
# test_llama_cli.sh — a Llama (arch = llama: GQA 2:1, untied head, RoPE 10000) through every command,
# as GPT-2 goes through them in tests/train, tests/checkpoint and tests/sample:
#  1. `fmtrain train --dry-run`: the family, its parameter count and the memory estimate;
#  2. data parallel: 2 ranks, 40 steps with checkpoints at 20 and 40; 20 steps + a new process
#     resuming from step 20 on 2 ranks gives bit-identical losses, parameters and AdamW moments;
#  3. another rank count: the 2-rank step-20 checkpoint resumed on 1 rank (grad_accum 1 -> 2, global
#     batch kept) agrees with the straight run to 1e-5 relative;
#  4. refusals: resuming with another n_kv_head (configuration: exit 2 naming it) or another
#     rope_theta (the checkpoint's /model attributes: exit 2);
#  5. `fmtrain inspect` names the family and its attributes; `fmtrain eval` of the step-40
#     checkpoint prints the val loss training logged at step 40;
#  6. `fmtrain sample` (KV-cache decoding): the same seed gives the same text, past seq_len (the
#     window slides), greedy output independent of the seed; the banner names the family;
#  7. `fmtrain export` writes Hugging Face LlamaForCausalLM's names, shapes and config.json (tied and
#     untied), and, where transformers is installed (test_llama.py's lookup), the directory loads into
#     LlamaForCausalLM with no missing or unexpected key (tests/hf/test_llama.py compares the numbers).
set -euo pipefail
: "${FMTRAIN_EXE:?}" "${FMTRAIN_BINARY_DIR:?}" "${FMTRAIN_SOURCE_DIR:?}"
source "$(dirname "$0")/../train/lib.sh"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
for i in $(seq 1 400); do
  echo "In the beginning was the word $i, and the word was with the people of the land."
done >"$dir/text.txt"
"$FMTRAIN_EXE" prepare --input "$dir/text.txt" --output "$dir/text.h5" --vocab-size 300 --val-fraction 0.1 \
  --quiet
write_ini "$dir/p.ini" "$dir/text.h5" "$dir/unused"
# the Llama keys go into [model] (write_ini's section holds the sizes)
sed -i 's/^\[model\]$/[model]\narch = llama\nn_head = 4\nn_kv_head = 2\nffn_dim = 90\nrope_theta = 10000\ntie_embeddings = false/; /^n_head = 2$/d' "$dir/p.ini"
common=(--set train.steps=40 --set runtime.log_every=1 --set checkpoint.every_steps=20
        --set checkpoint.keep_last=5 --set checkpoint.resume=auto --set model.seq_len=16
        --set train.eval_every=20)

echo "== dry run"
mpirun_n 1 train "$dir/p.ini" "${common[@]}" --set run.dir="$dir/dry" --dry-run >"$dir/dry.txt" 2>&1
grep -q "model: llama, 2 layers, 4 heads, d_model 64" "$dir/dry.txt"
grep -q "model memory: parameters" "$dir/dry.txt"
grep "model: llama" "$dir/dry.txt"

# compare RUN_A RUN_B FIRST_STEP TOLERANCE EXACT : losses from FIRST_STEP on; final checkpoints
compare() {
  "$PY" - "$@" <<'PYEOF'
import json, sys, h5py, numpy as np
a, b, first, tol, exact = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5] == "1"
def losses(run):
    return {r["step"]: r["loss"] for r in map(json.loads, open(run + "/metrics.jsonl")) if r["type"] == "train"}
la, lb = losses(a), losses(b)
steps = [s for s in sorted(la) if s >= first]
assert steps and all(s in lb for s in steps), (sorted(lb)[:5], steps[:5])
worst = max(abs(la[s] - lb[s]) / abs(la[s]) for s in steps)
fa, fb = (h5py.File(r + "/checkpoints/step-00000040.h5", "r") for r in (a, b))
assert fa["model"].attrs["arch"] == b"llama"
n = 0
for g in ("params", "adam_m", "adam_v"):
    for name in fa[g]:
        if exact:
            assert np.array_equal(fa[g][name][()].view(np.uint32), fb[g][name][()].view(np.uint32)), name
        n += 1
print(f"  steps {first}..40: max relative loss difference {worst:.3g}; {n} datasets "
      f"{'bit-identical' if exact else 'compared'}")
assert worst <= tol, worst
PYEOF
}

echo "== 2 ranks: 40 straight vs 20 + resume + 20"
mpirun_n 2 train "$dir/p.ini" "${common[@]}" --set run.dir="$dir/a" >"$dir/a.txt"
grep -q "train.*on 2 ranks" "$dir/a.txt"
mpirun_n 2 train "$dir/p.ini" "${common[@]}" --set run.dir="$dir/b" \
  --set checkpoint.resume="$dir/a/checkpoints/step-00000020.h5" >"$dir/b.txt"
grep -q "resuming from .*step-00000020.h5 (step 20, written by 2 rank" "$dir/b.txt"
compare "$dir/a" "$dir/b" 21 0 1

echo "== another rank count: the 2-rank checkpoint on 1 rank"
mpirun_n 1 train "$dir/p.ini" "${common[@]}" --set run.dir="$dir/c" \
  --set checkpoint.resume="$dir/a/checkpoints/step-00000020.h5" >"$dir/c.txt"
grep -q "grad_accum 1 -> 2" "$dir/c.txt"
compare "$dir/a" "$dir/c" 21 1e-5 0

echo "== refusals"
expect_refusal() { # expect_refusal PATTERN ARGS...
  local pattern=$1 rc
  shift
  set +e
  mpirun_n 1 train "$dir/p.ini" "${common[@]}" --set run.dir="$dir/r" \
    --set checkpoint.resume="$dir/a/checkpoints/step-00000020.h5" "$@" >"$dir/r.txt" 2>&1
  rc=$?
  set -e
  if ! { [ "$rc" -eq 2 ] && grep -q "$pattern" "$dir/r.txt"; }; then
    cat "$dir/r.txt"; echo "expected exit 2 and '$pattern' for $*, got $rc"; exit 1
  fi
  echo "  $* refused: $(grep -o "$pattern.*" "$dir/r.txt" | head -1 | cut -c1-100)"
}
expect_refusal "\[model\] n_kv_head = 1, but checkpoint" --set model.n_kv_head=1
expect_refusal "rope_theta 10000, norm_eps 1e-05, an untied head; the configured model has 2, 90, 500000" --set model.rope_theta=500000

echo "== inspect"
"$FMTRAIN_EXE" inspect "$dir/a/checkpoints/step-00000040.h5" >"$dir/i.txt"
grep -q "model           llama: 2 layers, 4 heads, d_model 64, seq_len 16" "$dir/i.txt"
grep -q "2 key/value heads, ffn_dim 90, rope_theta 10000, norm_eps 1e-05, untied head" "$dir/i.txt"

"$FMTRAIN_EXE" eval --checkpoint "$dir/a/checkpoints/step-00000040.h5" --json >"$dir/e.json" 2>/dev/null
"$PY" - "$dir/a/metrics.jsonl" "$dir/e.json" <<'PYEOF'
import json, sys
logged = {r["step"]: r["val_loss"] for r in map(json.loads, open(sys.argv[1])) if r["type"] == "eval"}
e = json.load(open(sys.argv[2]))
assert e["step"] == 40 and 40 in logged, (e, logged)
assert abs(e["loss"] - logged[40]) <= 1e-6 * logged[40], (e["loss"], logged[40])
print("  eval of step 40: %.9g, logged %.9g" % (e["loss"], logged[40]))
PYEOF

echo "== sample (KV cache)"
s1=$("$FMTRAIN_EXE" sample --checkpoint "$dir/a" --prompt "In the beginning" --tokens 50 --seed 3 2>"$dir/banner.txt")
s2=$("$FMTRAIN_EXE" sample --checkpoint "$dir/a" --prompt "In the beginning" --tokens 50 --seed 3 2>/dev/null)
[ "$s1" = "$s2" ] || { echo "same seed, different text"; exit 1; }
case "$s1" in "In the beginning"*) ;; *) echo "output does not start with the prompt: $s1"; exit 1 ;; esac
[ "${#s1}" -gt 40 ] || { echo "too little text generated: '$s1'"; exit 1; }
grep -q "(llama, 2 layers" "$dir/banner.txt" || { echo "banner: $(cat "$dir/banner.txt")"; exit 1; }
g1=$("$FMTRAIN_EXE" sample --checkpoint "$dir/a" --tokens 30 --temperature 0 2>/dev/null)
g2=$("$FMTRAIN_EXE" sample --checkpoint "$dir/a" --tokens 30 --temperature 0 --seed 9 2>/dev/null)
[ "$g1" = "$g2" ] || { echo "greedy output depends on the seed"; exit 1; }
echo "  sample: $s1"

echo "== fmtrain export of a Llama (docs/checkpoint-format.md)"
mpirun_n 1 train "$dir/p.ini" "${common[@]}" --set run.dir="$dir/t" --set train.steps=2 --set train.warmup_steps=0 \
  --set model.tie_embeddings=true --set checkpoint.every_steps=2 >/dev/null
"$FMTRAIN_EXE" export "$dir/a/checkpoints/step-00000040.h5" --format hf --output "$dir/hf_untied" >/dev/null
"$FMTRAIN_EXE" export "$dir/t/checkpoints/step-00000002.h5" --format hf --output "$dir/hf_tied" >/dev/null
"$PY" - "$dir/hf_untied" "$dir/hf_tied" <<'PYEOF'
import json, os, struct, sys
cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
hf = os.environ.get("FM_HF_PYTHONPATH") or os.path.join(cache, "fmtrain", "pydeps-transformers-4.40.2")
try:
    sys.path.insert(0, hf)
    import torch
    from transformers import LlamaForCausalLM
except Exception as e:  # noqa: BLE001
    LlamaForCausalLM = None
    print("  (transformers not found in %s: names and shapes only; %s)" % (hf, e))
for d, tied in zip(sys.argv[1:], (False, True)):
    cfg = json.load(open(os.path.join(d, "config.json")))
    raw = open(os.path.join(d, "model.safetensors"), "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    hdr = {k: v for k, v in json.loads(raw[8:8 + n]).items() if k != "__metadata__"}
    L, C, V, F = cfg["num_hidden_layers"], cfg["hidden_size"], cfg["vocab_size"], cfg["intermediate_size"]
    NKV, hs = cfg["num_key_value_heads"], C // cfg["num_attention_heads"]
    assert cfg["architectures"] == ["LlamaForCausalLM"], cfg
    assert (L, C, F, NKV, cfg["tie_word_embeddings"]) == (2, 64, 90, 2, tied), cfg
    assert cfg["rope_theta"] == 10000.0 and cfg["rms_norm_eps"] == 1e-5, cfg
    want = {"model.embed_tokens.weight": (V, C), "model.norm.weight": (C,)}
    if not tied:
        want["lm_head.weight"] = (V, C)
    for l in range(L):
        p = "model.layers.%d." % l
        want.update({p + "input_layernorm.weight": (C,), p + "post_attention_layernorm.weight": (C,),
                     p + "self_attn.q_proj.weight": (C, C), p + "self_attn.k_proj.weight": (NKV * hs, C),
                     p + "self_attn.v_proj.weight": (NKV * hs, C), p + "self_attn.o_proj.weight": (C, C),
                     p + "mlp.gate_proj.weight": (F, C), p + "mlp.up_proj.weight": (F, C),
                     p + "mlp.down_proj.weight": (C, F)})
    assert set(hdr) == set(want), sorted(set(hdr) ^ set(want))
    for k, shape in want.items():
        assert tuple(hdr[k]["shape"]) == shape, (k, hdr[k]["shape"], shape)
    msg = "%d tensors with LlamaForCausalLM's names and shapes (%s head)" % (len(hdr), "tied" if tied else "untied")
    if LlamaForCausalLM is not None:
        model, info = LlamaForCausalLM.from_pretrained(d, output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"], info
        with torch.no_grad():
            out = model(input_ids=torch.arange(10).view(1, 10) % V).logits
        assert torch.isfinite(out).all()
        msg += "; loaded into LlamaForCausalLM with no missing or unexpected key"
    print("  " + msg)
PYEOF
echo "llama cli ok"

#!/usr/bin/env bash
# test_hf_snippet.sh — the h5py + PyTorch snippet of docs/checkpoint-format.md, run on a checkpoint
# written by `fmtrain train`: it yields exactly the tensor names of Hugging Face's GPT2LMHeadModel with
# HF shapes (Conv1D weights transposed, wte without the padded rows, lm_head tied), and the values
# are the stored ones. Also checks every crc32 attribute with Python's zlib.
set -euo pipefail
: "${FMTRAIN_EXE:?}" "${FMTRAIN_BINARY_DIR:?}" "${FMTRAIN_SOURCE_DIR:?}"
source "$(dirname "$0")/../train/lib.sh"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
# vocabulary 300 (padded to 384) so that the padded rows are exercised
"$MAKE_DATASET" "$dir/d.h5" random 32 256 16 5 >/dev/null
write_ini "$dir/p.ini" "$dir/d.h5" "$dir/run"
mpirun_n 1 train "$dir/p.ini" --set train.steps=12 --set model.vocab_size=300 \
  --set checkpoint.resume=auto >/dev/null
"$PY" - "$FMTRAIN_SOURCE_DIR/docs/checkpoint-format.md" "$dir/run/checkpoints/step-00000012.h5" <<'PYEOF'
import re, sys, zlib, h5py, numpy as np
doc, path = sys.argv[1], sys.argv[2]
text = open(doc).read()
m = re.search(r"<!-- snippet:hf-load -->\s*```python\n(.*?)```", text, re.S)
assert m, "snippet not found in the document"
ns = {}
exec(m.group(1), ns)
sd, cfg = ns["load_gpt2_state_dict"](path)
L, C, V, T = cfg["n_layer"], cfg["n_embd"], cfg["vocab_size"], cfg["n_positions"]
assert V == 300 and C == 64 and L == 2 and T == 32, cfg
want = {"transformer.wte.weight": (V, C), "transformer.wpe.weight": (T, C),
        "transformer.ln_f.weight": (C,), "transformer.ln_f.bias": (C,), "lm_head.weight": (V, C)}
for l in range(L):
    p = f"transformer.h.{l}."
    want.update({p + "ln_1.weight": (C,), p + "ln_1.bias": (C,), p + "ln_2.weight": (C,), p + "ln_2.bias": (C,),
                 p + "attn.c_attn.weight": (C, 3 * C), p + "attn.c_attn.bias": (3 * C,),
                 p + "attn.c_proj.weight": (C, C), p + "attn.c_proj.bias": (C,),
                 p + "mlp.c_fc.weight": (C, 4 * C), p + "mlp.c_fc.bias": (4 * C,),
                 p + "mlp.c_proj.weight": (4 * C, C), p + "mlp.c_proj.bias": (C,)})
assert set(sd) == set(want), sorted(set(sd) ^ set(want))
for k, shape in want.items():
    assert tuple(sd[k].shape) == shape, (k, tuple(sd[k].shape), shape)
with h5py.File(path, "r") as f:
    raw = f["params/h.1.mlp.c_fc.weight"][()]
    assert raw.shape == (4 * C, C)
    assert np.array_equal(sd["transformer.h.1.mlp.c_fc.weight"].numpy(), raw.T)
    wte = f["params/wte.weight"][()]
    assert wte.shape == (384, C) and not wte[V:].any(), "padded rows must be zero"
    assert np.array_equal(sd["lm_head.weight"].numpy(), wte[:V])
    n = 0
    def check(name, obj):
        global n
        if isinstance(obj, h5py.Dataset) and "crc32" in obj.attrs:
            assert zlib.crc32(obj[()].tobytes()) == int(obj.attrs["crc32"]), name
            n += 1
    f.visititems(check)
print(f"snippet: {len(sd)} tensors with HF names and shapes; {n} crc32 attributes match zlib.crc32")
PYEOF
echo "hf snippet ok"

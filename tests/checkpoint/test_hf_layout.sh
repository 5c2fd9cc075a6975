#!/usr/bin/env bash
# test_hf_layout.sh — docs/checkpoint-format.md's table of Hugging Face names and layouts is what
# `fmtrain export` applies, read without transformers: the exported model.safetensors holds exactly
# GPT2LMHeadModel's parameter names with HF shapes (Conv1D weights transposed, wte without the padded
# rows, lm_head left to tie_word_embeddings), and the values are the checkpoint's /params datasets.
# Also checks every crc32 attribute of the checkpoint with Python's zlib. Needs only numpy and h5py.
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
"$FMTRAIN_EXE" export "$dir/run" --format hf --output "$dir/hf" >/dev/null
"$PY" - "$dir/run/checkpoints/step-00000012.h5" "$dir/hf/model.safetensors" <<'PYEOF'
import json, struct, sys, zlib
import h5py, numpy as np
path, st = sys.argv[1], sys.argv[2]
raw = open(st, "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
hdr = json.loads(raw[8:8 + n])
def tensor(name):
    e = hdr[name]
    a, b = e["data_offsets"]
    assert e["dtype"] == "F32", e
    return np.frombuffer(raw[8 + n + a:8 + n + b], dtype="<f4").reshape(e["shape"])
with h5py.File(path, "r") as f:
    m = f["model"].attrs
    L, C, V, T = int(m["n_layer"]), int(m["d_model"]), int(m["vocab_size"]), int(m["max_seq_len"])
    assert (L, C, V, T) == (2, 64, 300, 32), (L, C, V, T)
    want = {"transformer.wte.weight": (V, C), "transformer.wpe.weight": (T, C),
            "transformer.ln_f.weight": (C,), "transformer.ln_f.bias": (C,)}
    for l in range(L):
        p = f"transformer.h.{l}."
        want.update({p + "ln_1.weight": (C,), p + "ln_1.bias": (C,), p + "ln_2.weight": (C,), p + "ln_2.bias": (C,),
                     p + "attn.c_attn.weight": (C, 3 * C), p + "attn.c_attn.bias": (3 * C,),
                     p + "attn.c_proj.weight": (C, C), p + "attn.c_proj.bias": (C,),
                     p + "mlp.c_fc.weight": (C, 4 * C), p + "mlp.c_fc.bias": (4 * C,),
                     p + "mlp.c_proj.weight": (4 * C, C), p + "mlp.c_proj.bias": (C,)})
    got = {k for k in hdr if k != "__metadata__"}
    assert got == set(want), sorted(got ^ set(want))
    for k, shape in want.items():
        assert tuple(hdr[k]["shape"]) == shape, (k, hdr[k]["shape"], shape)
    for name, ds in f["params"].items():
        v = ds[()]
        hf = ds.attrs["hf_name"].decode()
        if int(ds.attrs["hf_transposed"]):
            v = v.T
        if name == "wte.weight":
            assert v.shape == (384, C) and not v[V:].any(), "padded rows must be zero"
            v = v[:V]
        assert np.array_equal(tensor(hf), v), name
    n_crc = 0
    def check(name, obj):
        global n_crc
        if isinstance(obj, h5py.Dataset) and "crc32" in obj.attrs:
            assert zlib.crc32(obj[()].tobytes()) == int(obj.attrs["crc32"]), name
            n_crc += 1
    f.visititems(check)
print(f"export: {len(want)} tensors with HF names, shapes and the checkpoint's values; {n_crc} crc32 attributes match zlib.crc32")
PYEOF
echo "hf layout ok"
